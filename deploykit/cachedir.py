"""Where deploykit keeps what it may read again instead of fetching or building it (each part its own folder).

The root is ``$DEPLOYKIT_CACHE_DIR``, else ``$XDG_CACHE_HOME/deploykit``, else ``~/.cache/deploykit``; with
``DEPLOYKIT_NO_CACHE=1``, or for a user with no home directory at all (a container's arbitrary user), there is none
and everything is fetched or built anew. Everything kept is safe to delete at any time.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from deploykit.switches import switch, switched_on

CACHE_DIR_ENV = "DEPLOYKIT_CACHE_DIR"
DAY = 86400.0
PRUNE_STAMP = ".pruned"  # in a folder of the cache: when what it keeps was last pruned
NO_CACHE_ENV = switch("DEPLOYKIT_NO_CACHE")


def cache_root(environ: Mapping[str, str] | None = None) -> Path | None:
    """The cache's root folder (not created here), or None when there is to be no cache."""
    environ = os.environ if environ is None else environ
    if switched_on(NO_CACHE_ENV, environ):
        return None
    if environ.get(CACHE_DIR_ENV):
        return Path(environ[CACHE_DIR_ENV])
    if environ.get("XDG_CACHE_HOME"):
        return Path(environ["XDG_CACHE_HOME"]) / "deploykit"
    try:
        return Path.home() / ".cache" / "deploykit"
    except (RuntimeError, KeyError):  # no $HOME and no passwd entry: no cache
        return None


def prune_due(folder: Path, now: float, every: float = DAY) -> bool:
    """Whether what ``folder`` keeps is to be pruned now: its stamp (``.pruned``) is ``every`` seconds old, or there
    is none; when so, the stamp is set to ``now`` (when it can be: a folder that cannot take it is pruned each time,
    never a failure)."""
    stamp = folder / PRUNE_STAMP
    try:
        if now - stamp.stat().st_mtime < every:
            return False
    except OSError:
        pass  # never pruned here
    try:
        stamp.touch()
        os.utime(stamp, (now, now))
    except OSError:
        pass
    return True
