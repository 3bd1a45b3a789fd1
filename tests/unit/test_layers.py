"""The house plan's import directions (DESIGN.md), read from the source: deploykit never imports the sandbox, the
plugins, the app, the CDK app or the tests; inside deploykit.commands, each module imports only the modules below
it (core at the bottom, autodeploy at the top)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.conftest import REPO

DEPLOYKIT = REPO / "deploykit"
# deploykit loads plugins through the plugin manager, runs the CDK app as a process and reaches the sandbox through
# its endpoints only
NEVER_IMPORTED_BY_DEPLOYKIT = ("sandbox", "plugins", "backend", "cdk", "app", "tests")
# deploykit.commands, bottom to top: a module may import those of a lower rank only
COMMAND_RANKS = {
    "core": 0,
    "views": 1,
    "freezing": 1,
    "cleanup": 1,
    "previews": 1,
    "promotion": 2,
    "service": 2,
    "deploys": 3,
    "autodeploy": 4,
}


def imported(path: Path) -> set[str]:
    """Every module ``path`` imports, at its top or inside a function (``from a.b import c``: ``a.b``)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def test_imported_reads_imports_at_the_top_and_inside_functions(tmp_path: Path) -> None:
    source = tmp_path / "m.py"
    source.write_text("import os\nfrom deploykit.commands import core\n\ndef f():\n    import sandbox.lifecycle\n")
    assert imported(source) == {"os", "deploykit.commands", "deploykit.commands.core", "sandbox.lifecycle"}


@pytest.mark.parametrize("path", sorted(DEPLOYKIT.rglob("*.py")), ids=lambda p: str(p.relative_to(REPO)))
def test_deploykit_imports_none_of_the_parts_it_drives(path: Path) -> None:
    wrong = sorted(n for n in imported(path) if n.split(".")[0] in NEVER_IMPORTED_BY_DEPLOYKIT)
    assert not wrong, f"{path.relative_to(REPO)} imports {wrong}"


def test_every_command_module_has_a_rank() -> None:
    modules = {p.stem for p in (DEPLOYKIT / "commands").glob("*.py")} - {"__init__"}
    assert modules == set(COMMAND_RANKS)


@pytest.mark.parametrize("module", sorted(COMMAND_RANKS))
def test_a_command_module_imports_only_the_modules_below_it(module: str) -> None:
    prefix = "deploykit.commands."
    names = imported(DEPLOYKIT / "commands" / f"{module}.py")
    siblings = {n.removeprefix(prefix).split(".")[0] for n in names if n.startswith(prefix)}
    upward = sorted(s for s in siblings & set(COMMAND_RANKS) if COMMAND_RANKS[s] >= COMMAND_RANKS[module])
    assert not upward, f"deploykit.commands.{module} imports {upward}, not below it"
    assert "deploykit.commands" not in names, "through the package, which imports every module: a cycle"
