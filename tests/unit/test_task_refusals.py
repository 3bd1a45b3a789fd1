"""A task refused with --json: the reason on stdout too, once, when nothing else is there."""

from __future__ import annotations

import io
import json
import sys
from typing import Any

import pytest

import tasks
from deploykit.errors import UsageError
from deploykit.output import GuardedStream


def refused_task(printed: str = "") -> Any:
    @tasks.reports_errors
    def task(c: Any, json_: bool = False) -> None:
        if printed:  # a run's report, printed before the error that ended it
            print(printed)
        raise UsageError("no environment 'nosuch'", next_step="pass --env sandbox")

    return task


def guarded_stdout(monkeypatch: pytest.MonkeyPatch) -> io.StringIO:
    """stdout as inv has it: guarded (deploykit.output). Set in the test itself: pytest's capture sets sys.stdout
    again as the test's call begins."""
    seen = io.StringIO()
    monkeypatch.setattr(sys, "stdout", GuardedStream(seen))
    return seen


def test_a_json_command_refused_before_its_plan_prints_the_reason_on_stdout(monkeypatch: pytest.MonkeyPatch) -> None:
    """A CI script's `inv deploy.auto --json | jq` got nothing to read (a parse error of its own) for a refusal."""
    stdout = guarded_stdout(monkeypatch)
    with pytest.raises(tasks.Exit) as refused:
        refused_task()(None, json_=True)
    assert refused.value.code == 2
    assert json.loads(stdout.getvalue()) == {
        "ok": False,
        "error": {"message": "no environment 'nosuch'", "next_step": "pass --env sandbox", "exit_code": 2},
    }


def test_without_json_or_after_a_report_nothing_more_is_printed_on_stdout(monkeypatch: pytest.MonkeyPatch) -> None:
    stdout = guarded_stdout(monkeypatch)
    with pytest.raises(tasks.Exit):
        refused_task()(None, json_=False)
    assert stdout.getvalue() == ""
    with pytest.raises(tasks.Exit):
        refused_task(printed='{"ok": false}')(None, json_=True)
    assert stdout.getvalue() == '{"ok": false}\n'  # one document: the run's own


def test_a_json_command_interrupted_outside_a_plan_says_so_on_stdout(monkeypatch: pytest.MonkeyPatch) -> None:
    """A CI job cancelled (SIGTERM) while a command read or waited: exit 130, and its jq read nothing."""
    monkeypatch.setattr(tasks, "EXIT_GRACE", 0.0)  # its watch of the way out ends at once: this caller goes on

    @tasks.reports_errors
    def task(c: Any, json_: bool = False) -> None:
        raise KeyboardInterrupt

    stdout = guarded_stdout(monkeypatch)
    with pytest.raises(tasks.Exit) as stopped:
        task(None, json_=True)
    assert stopped.value.code == 130
    assert json.loads(stdout.getvalue()) == {
        "ok": False,
        "error": {"message": "interrupted", "next_step": "run the same command again", "exit_code": 130},
    }
