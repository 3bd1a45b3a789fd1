"""The ``DEPLOYKIT_*`` switches: environment variables that turn one thing on or off for a run (``DEPLOYKIT_YES``,
``DEPLOYKIT_ALLOW_FROZEN``, ``DEPLOYKIT_SKIP_RELEASE``...). Each is declared where it is read (:func:`switch`), read
by :func:`switched_on`, and every one is read once before a command starts (:func:`check_all`): a value neither on
nor off is refused then, not when a step first reads it, after others changed what runs."""

from __future__ import annotations

import os
from collections.abc import Mapping

from deploykit.errors import UsageError

ON_WORDS = ("1", "true", "yes", "on")  # what a switch takes for on, in any case
OFF_WORDS = ("", "0", "false", "no", "off")
KNOWN: list[str] = []  # every switch declared (switch()), for check_all


def switch(name: str) -> str:
    """``name``, a switch variable read where it is declared, made known to :func:`check_all`."""
    if name not in KNOWN:
        KNOWN.append(name)
    return name


def switched_on(name: str, environ: Mapping[str, str] | None = None) -> bool:
    """Whether the switch variable ``name`` is on: ``1``, ``true``, ``yes`` or ``on``, in any case; off when unset,
    empty, ``0``, ``false``, ``no`` or ``off``. Another value is refused (exit 2): a CI file's ``DEPLOYKIT_YES:
    true`` reaches the process as ``true``, which was read as off, and the run refused without a word of the
    variable."""
    value = (os.environ if environ is None else environ).get(name, "").strip()
    if value.lower() in ON_WORDS:
        return True
    if value.lower() in OFF_WORDS:
        return False
    raise UsageError(
        f"${name} is {value!r}: neither on (1, true, yes, on) nor off (0, false, no, off, or unset)",
        next_step=f"set {name}=1 to turn it on, or unset it",
    )


def check_all(environ: Mapping[str, str] | None = None) -> None:
    """Every declared switch read once: one set to neither on nor off is refused before the command starts."""
    for name in KNOWN:
        switched_on(name, environ)
