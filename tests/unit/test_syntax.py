"""deploykit.syntax: which changed files are compiled, and what a file that does not compile says."""

from __future__ import annotations

from pathlib import Path

from deploykit.changes import Change, ChangeSet
from deploykit.syntax import changed_code, python_errors


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


def test_the_changed_code_is_that_of_the_app_the_functions_and_the_stacks_not_deleted() -> None:
    found = ChangeSet(
        base={},
        head="h",
        changes=(
            Change("backend/app/a.py", "app", "app", "M", ""),
            Change("backend/app/old.py", "app", "app", "D", ""),
            Change("lambda/fn/handler.py", "lambda:fn", "lambda", "A", ""),
            Change("cdk/stacks/api_stack.py", "stack:api", "stack", "M", ""),
            Change("backend/tests/test_a.py", None, "none", "M", ""),
            Change("", "app", "app", "A", "never deployed"),
        ),
    )
    assert changed_code(found) == ["backend/app/a.py", "lambda/fn/handler.py", "cdk/stacks/api_stack.py"]
