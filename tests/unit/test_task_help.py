"""`inv --list` shows each task's first docstring line: it must be a whole sentence, not one cut at the wrap."""

from __future__ import annotations

import pytest
from invoke.program import Program
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


@pytest.mark.parametrize(
    ("argv", "said", "next_step"),
    [
        (
            ["deploy.auto", "--dryrun"],
            "inv deploy.auto has no option --dryrun",
            "did you mean --dry-run? (inv --help deploy.auto lists its options)",
        ),
        (["deploy.auto", "--no-smoek"], "inv deploy.auto has no option --no-smoek", "did you mean --no-smoke?"),
        (["smoke", "--check", "alb"], "inv smoke has no option --check", "inv --help smoke lists its options"),
        (["build", "push", "--nope"], "inv push has no option --nope", "inv --help push lists its options"),
        (["helth"], "no task 'helth'", "did you mean inv health? (inv --list lists the tasks)"),
        (["--help", "deploy.aut"], "no task 'deploy.aut'", "did you mean inv deploy.auto?"),
        (
            ["rollback", "app"],
            "'app' after inv rollback is neither a task nor the value of one of its options",
            "inv --help rollback lists its options, each value after its option (--name VALUE)",
        ),
        (["deploy.auto", "--env"], "inv deploy.auto: --env needs a value", "--env VALUE"),
        (["deploy.stack"], "inv deploy.stack needs its NAME", "inv deploy.stack NAME"),
    ],
)
def test_a_command_line_invoke_cannot_parse_is_bad_input(
    argv: list[str], said: str, next_step: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """invoke's own "No idea what '--dryrun' is!" (exit 1, the code of a failed deploy) becomes deploykit's bad input:
    what is wrong, the next step (the option or task meant, when one is close), exit 2; nothing runs."""
    with pytest.raises(SystemExit) as ended:
        Program(namespace=tasks.ns).run(["inv", *argv])
    assert ended.value.code == 2
    lines = capsys.readouterr().err.splitlines()
    assert lines[0] == f"❌ {said}", lines
    assert lines[1].startswith(f"  → next: {next_step}"), lines
