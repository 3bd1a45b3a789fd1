"""deploykit.syntax: which changed files are compiled, and what a file that does not compile says."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

from deploykit.changes import NOT_DEPLOYED, Change, ChangeSet
from deploykit.config import load_config
from deploykit.syntax import changed_code, python_errors
from tests.conftest import git


def test_each_python_file_that_does_not_compile_is_named_with_its_line(tmp_path: Path) -> None:
    (tmp_path / "good.py").write_text("def fine():\n    return 1\n")
    (tmp_path / "bad.py").write_text("x = 1\nif x\n    pass\n")
    (tmp_path / "indent.py").write_text("def f():\nreturn 1\n")
    (tmp_path / "nul.py").write_bytes(b"x = 1\x00\n")
    (tmp_path / "notes.txt").write_text("def (:\n")  # not Python
    paths = ["good.py", "bad.py", "indent.py", "nul.py", "notes.txt", "gone.py", "bad.py"]
    errors = python_errors(tmp_path, paths)
    assert errors[:2] == [
        "bad.py:2: expected ':'",
        "indent.py:2: expected an indented block after function definition on line 1",
    ]
    assert len(errors) == 3 and errors[2].startswith("nul.py")


def test_the_changed_code_is_that_of_the_app_the_functions_and_the_stacks_still_theirs_and_there(
    project: Path,
) -> None:
    """Deleted: not judged; renamed out of a component (the old path's change names the new one): not deployed, not
    judged; a function never deployed: every file of it."""
    (project / "lambda" / "newfn").mkdir(parents=True)
    (project / "lambda" / "newfn" / "handler.py").write_text("def handler(event, context):\n    return 1\n")
    (project / "lambda" / "newfn" / "util.py").write_text("X = 1\n")
    git(project, "add", "-A")
    git(project, "commit", "-qm", "newfn")
    config = load_config(project / "deploy.toml")
    found = ChangeSet(
        base={},
        head="h",
        changes=(
            Change("backend/app/a.py", "app", "app", "M", ""),
            Change("backend/app/old.py", "app", "app", "D", ""),
            Change("cdk/stacks/api_stack.py", "stack:api", "stack", "M", ""),
            Change("backend/tests/test_a.py", None, "none", "M", ""),
            Change("scratch.py", "app", "app", "R", "renamed out (the old path)", old_path="backend/app/s.py"),
            Change("", "lambda:newfn", "lambda", "A", NOT_DEPLOYED),
        ),
    )
    assert changed_code(config, found) == [
        "backend/app/a.py",
        "cdk/stacks/api_stack.py",
        "lambda/newfn/handler.py",
        "lambda/newfn/util.py",
    ]


def test_what_this_python_cannot_judge_is_passed_over_and_its_warnings_are_not_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "deep.py").write_text("X = " + "+".join(["1"] * 100_000) + "\n")  # too deep for the compiler
    (tmp_path / "warns.py").write_text('import re\nPATTERN = re.compile("\\d+")\nOK = 1 is 1\n')
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # as under python -W error: each SyntaxWarning a SyntaxError
        assert python_errors(tmp_path, ["deep.py", "warns.py"]) == []
    (tmp_path / "bad.py").write_text("def (:\n")
    monkeypatch.setenv("DEPLOYKIT_SKIP_COMPILE_CHECK", "1")
    assert python_errors(tmp_path, ["bad.py"]) == []


def test_a_submodule_taken_up_has_every_python_file_of_its_folder_judged(project: Path, tmp_path: Path) -> None:
    """git names a submodule's folder alone (backend, not its files): what is compiled is what the folder holds in the
    work tree that the rules give the component (its tests are not the app's)."""
    source = tmp_path / "backend-src"
    for path, text in {
        "Dockerfile": "FROM python:3.11-slim\n",
        "app/main.py": "app = None\n",
        "app/broken.py": "if True\n    pass\n",
        "tests/test_main.py": "def test_x(:\n",
    }.items():
        (source / path).parent.mkdir(parents=True, exist_ok=True)
        (source / path).write_text(text)
    git(source, "init", "-q", "-b", "main")
    git(source, "add", "-A")
    git(source, "commit", "-qm", "backend")
    git(project, "rm", "-r", "-q", "backend")
    git(project, "-c", "protocol.file.allow=always", "submodule", "add", "-q", str(source), "backend")
    git(project, "commit", "-qm", "backend as a submodule")
    config = load_config(project / "deploy.toml")
    found = ChangeSet(base={}, head="h", changes=(Change("backend", "app", "app", "M", "", submodule=True),))
    assert changed_code(config, found) == ["backend/app/broken.py", "backend/app/main.py"]
    assert python_errors(project, changed_code(config, found)) == ["backend/app/broken.py:1: expected ':'"]
