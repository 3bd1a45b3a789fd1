"""`inv --list` shows each task's first docstring line: it must be a whole sentence, not one cut at the wrap."""

from __future__ import annotations

import re
import shlex

import pytest
from invoke.exceptions import ParseError
from invoke.parser import Parser
from invoke.program import Program
from invoke.util import helpline

import tasks
from tests.conftest import REPO


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
            "did you mean inv rollback --component app? (inv --help rollback lists its options)",
        ),
        (
            ["rollback", "lambda:login_handler"],
            "'lambda:login_handler' after inv rollback is neither a task nor the value of one of its options",
            "did you mean inv rollback --component lambda:login_handler?",
        ),
        (
            ["rollback", "prod"],
            "'prod' after inv rollback is neither a task nor the value of one of its options",
            "inv --help rollback lists its options, each value after its option (--name VALUE)",
        ),
        (
            ["history", "app"],  # history takes --component too (the runs that deployed it)
            "'app' after inv history is neither a task nor the value of one of its options",
            "did you mean inv history --component app?",
        ),
        (["deploy.auto", "--env"], "inv deploy.auto: --env needs a value", "--env VALUE"),
        (["deploy.stack"], "inv deploy.stack needs its NAME", "inv deploy.stack NAME"),
        (["--nope"], "inv has no option --nope", ""),
        (["images"], "'images' is a group of tasks, not one", "name one: inv images.cleanup"),
        (
            ["-e", "sandbox", "deploy.auto", "--dry-run"],
            "no task 'sandbox': -e before a task is invoke's own --echo, not --env",
            "the environment after the task: inv deploy.auto --env sandbox",
        ),
        (
            ["--echo", "prod"],
            "no task 'prod': -e before a task is invoke's own --echo, not --env",
            "the environment after the task: inv TASK --env prod",
        ),
        (["-e", "helth"], "no task 'helth'", "did you mean inv health?"),
        # a word given to a number option: invoke's own int() of it, a traceback before
        (["history", "--limit", "abc"], "inv history: --limit takes a whole number, not 'abc'", "--limit N (inv"),
        (["history", "--limit=1e3"], "inv history: --limit takes a whole number, not '1e3'", "--limit N"),
        (["images.cleanup", "--keep"], "inv images.cleanup: --keep needs a value", "--keep VALUE"),
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


def readme_command_lines() -> list[tuple[int, list[str], str]]:
    """(line number, the words of an `inv ...` command, the README line after it) for each command the README shows:
    after `$ ` in its transcripts, or in backquotes in its text; `./dev` dropped, one per part of `a && b`, `a | b`;
    [optional] parts' brackets dropped, a <placeholder> one word."""
    lines = (REPO / "README.md").read_text().splitlines()
    found = []
    for number, line in enumerate(lines, 1):
        after = lines[number] if number < len(lines) else ""
        shown = re.match(r"\s*\$ (.*)", line)
        texts = [shown.group(1)] if shown else []
        texts += [span for span in re.findall(r"`([^`]*)`", line) if re.match(r"(\./dev )?inv [a-z]", span)]
        for text in texts:
            text = re.sub(r"<\w[^<>]*>", "PLACEHOLDER", re.sub(r"(?<!\S)\[|\](?!\S)", " ", text))
            words = shlex.shlex(text, posix=True, punctuation_chars=";&|<>")
            words.whitespace_split, words.commenters = True, "#"
            try:
                tokens = list(words)
            except ValueError:  # a quote the text opens and leaves for the reader: words as they are
                tokens = text.split()
            part: list[str] = []
            for token in [*tokens, ";"]:
                if token.strip(";&|<>"):
                    part.append(token)
                    continue
                if part[:2] == ["./dev", "inv"]:
                    part = part[1:]
                if part[:1] == ["inv"]:
                    found.append((number, [w for w in part[1:] if w not in ("...", "…")], after))
                part = []
    return found


def test_every_command_the_readme_shows_parses_with_the_tasks_options() -> None:
    """Each `inv TASK --option` of the manual names a task and options it has (placeholders and [optional] parts as
    they are written: only an unknown task or option fails); a transcript of a command line refused as bad input
    (`❌ inv ... has no option ...`) is refused."""
    commands = readme_command_lines()
    assert len(commands) > 400
    contexts = tasks.ns.to_contexts()
    wrong = []
    for number, words, after in commands:
        refused = after.startswith("❌ ") and any(
            said in after for said in ("has no option", "neither a task", "no task")
        )
        named = [c for c in contexts if {c.name, *c.aliases} & set(words)]  # the tasks it names: parsed faster
        try:
            Parser(contexts=named).parse_argv(words)
        except ValueError:  # a placeholder (N) given to a numeric option
            parsed = True
        except ParseError as exc:
            parsed = not str(exc).startswith("No idea what")  # a value or argument left out in the text: fine
        else:
            parsed = True
        if parsed == refused:
            shown = "inv " + " ".join(words)
            wrong.append(f"README line {number}: {shown}" + (" (shown refused, but it parses)" if refused else ""))
    assert not wrong, "\n".join(wrong)
