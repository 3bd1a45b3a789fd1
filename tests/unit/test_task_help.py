"""`inv --list` shows each task's first docstring line: it must be a whole sentence, not one cut at the wrap."""

from __future__ import annotations

import pytest
from invoke.util import helpline

import tasks


def _tasks() -> list[str]:
    return sorted(tasks.ns.task_names)


@pytest.mark.parametrize("name", _tasks())
def test_each_task_says_what_it_does_in_one_whole_line(name: str) -> None:
    line = helpline(tasks.ns[name])
    assert line, f"inv {name} has no help"
    assert line.rstrip().endswith("."), f"inv --list cuts {name}'s help mid-sentence: {line!r}"
    assert line.count("(") == line.count(")"), f"{name}'s help line leaves a parenthesis open: {line!r}"


def test_the_list_names_every_task_once() -> None:
    assert len(_tasks()) == len(set(_tasks())) >= 30
