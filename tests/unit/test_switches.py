"""The DEPLOYKIT_* switches (deploykit.switches)."""

from __future__ import annotations

import pytest

from deploykit import switches
from deploykit.errors import UsageError
from deploykit.switches import switched_on


def test_a_switch_variable_is_on_for_the_words_a_ci_file_writes_and_refused_for_another() -> None:
    """A CI file's `DEPLOYKIT_YES: true` reaches the process as "true": read as off, its run was refused, the
    message asking for DEPLOYKIT_YES=1 without a word of the value it had."""
    for value in ("1", "true", "True", "YES", "on", " 1 "):
        assert switched_on("DEPLOYKIT_YES", {"DEPLOYKIT_YES": value}), value
    for value in ("", "0", "false", "No", "OFF"):
        assert not switched_on("DEPLOYKIT_YES", {"DEPLOYKIT_YES": value}), value
    assert not switched_on("DEPLOYKIT_YES", {})
    with pytest.raises(UsageError) as refused:
        switched_on("DEPLOYKIT_YES", {"DEPLOYKIT_YES": "maybe"})
    assert (
        refused.value.message
        == "$DEPLOYKIT_YES is 'maybe': neither on (1, true, yes, on) nor off (0, false, no, off, or unset)"
    )
    assert refused.value.exit_code == 2


def test_every_switch_is_read_before_a_command_starts() -> None:
    """$DEPLOYKIT_SKIP_RELEASE=y was refused by the release step, after the Fargate stack had rolled the new image
    out: the release command never ran, and the next deploy took it as run. Every switch deploykit reads is known
    (declared where it is read), and read once before a command starts."""
    import tasks  # noqa: F401 - every module that declares one

    assert {
        "DEPLOYKIT_YES",
        "DEPLOYKIT_ALLOW_FROZEN",
        "DEPLOYKIT_ALLOW_UNPUSHED",
        "DEPLOYKIT_SKIP_RELEASE",
        "DEPLOYKIT_SKIP_SCAN",
        "DEPLOYKIT_SKIP_COMPILE_CHECK",
        "DEPLOYKIT_SKIP_IMPORT_CHECK",
        "DEPLOYKIT_NO_CACHE",
    } <= set(switches.KNOWN)
    switches.check_all({"DEPLOYKIT_SKIP_RELEASE": "1", "DEPLOYKIT_NO_CACHE": "off"})
    with pytest.raises(UsageError, match=r"^\$DEPLOYKIT_SKIP_RELEASE is 'y': "):
        switches.check_all({"DEPLOYKIT_SKIP_RELEASE": "y"})
