"""The house plan's import directions (DESIGN.md), read from the source: deploykit never imports the sandbox, the
plugins, the app, the CDK app, the Lambda functions or the tests, and speaks to the world through its few libraries;
the plugins use deploykit's plugin API; the sandbox never imports deploykit; tasks.py and noxfile.py stay thin;
inside deploykit.commands, each module imports only the modules below it (core at the bottom, autodeploy at the
top). README, "Where the code departs from DESIGN.md", says why each exception here is one."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

DEPLOYKIT = REPO / "deploykit"
# deploykit loads plugins through the plugin manager, runs the CDK app as a process and reaches the sandbox through
# its endpoints only
# (``stacks``: the CDK app's package, as cdk/app.py imports it; ``app``: the backend's; each Lambda function's folder)
NEVER_IMPORTED_BY_DEPLOYKIT = (
    "sandbox",
    "plugins",
    "backend",
    "cdk",
    "stacks",
    "app",
    "lambda",
    "tests",
    *sorted(p.name for p in (REPO / "lambda").iterdir() if p.is_dir() and not p.name.startswith((".", "_"))),
)
# the libraries deploykit speaks through (DESIGN.md: boto3 and the docker SDK; pluggy and tabulate are the plan's
# own dependencies; requests: the registries' HTTP API, oci.py; packaging: the vendored packages' requirements,
# lambda_imports.py); pytest only in deploykit.testing, the pytest plugin
# for plugin authors (pytest loads it; nothing else imports it)
DEPLOYKIT_LIBRARIES = {"boto3", "botocore", "docker", "pluggy", "tabulate", "requests", "packaging"}
ONLY_IN = {"pytest": "deploykit/testing.py"}
# deploykit's API for plugins: what "Writing check plugins" names (checks, hooks, the settings, the errors, who
# deploys, the endpoints, the testing helpers)
PLUGIN_API = {
    "deploykit.checks",
    "deploykit.hookspecs",
    "deploykit.config",
    "deploykit.errors",
    "deploykit.history",
    "deploykit.endpoints",
    "deploykit.testing",
}
# the built-in observers ship with deploykit and render a run as it does: they may use these parts of it too
OBSERVERS_ALSO = {
    # deploykit.output: its annotation's control characters escaped as everything deploykit prints
    "summary": {"deploykit.git", "deploykit.markdown", "deploykit.output", "deploykit.plan", "deploykit.smoke"},
    "notify": set(),
}
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


def imported(path: Path, root: Path = REPO) -> set[str]:
    """Every module ``path`` imports, at its top or inside a function (``from a.b import c``: ``a.b`` and ``a.b.c``),
    relative imports made absolute (``path`` as a module under ``root``), and ``importlib.import_module("x")`` or
    ``__import__("x")`` of a constant name."""
    package = list(path.relative_to(root).with_suffix("").parts[:-1])
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = ".".join(package[: len(package) - node.level + 1] if node.level else [])
            module = ".".join(part for part in (base, node.module or "") if part)
            names.add(module)
            names.update(f"{module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            called = ast.unparse(node.func)
            if called in ("importlib.import_module", "import_module", "__import__"):
                names.add(str(node.args[0].value))
    return names - {""}


def test_imported_reads_imports_at_the_top_inside_functions_relative_and_dynamic(tmp_path: Path) -> None:
    source = tmp_path / "deploykit" / "commands" / "m.py"
    source.parent.mkdir(parents=True)
    source.write_text(
        "import os\nfrom deploykit.commands import core\nfrom . import views\nfrom ..git import x\n\n"
        "def f():\n    import sandbox.lifecycle\n    importlib.import_module('stacks.common')\n"
    )
    assert imported(source, tmp_path) == {
        "os",
        "deploykit.commands",
        "deploykit.commands.core",
        "deploykit.commands.views",
        "deploykit.git",
        "deploykit.git.x",
        "sandbox.lifecycle",
        "stacks.common",
    }


def third_party(names: set[str]) -> set[str]:
    return {n.split(".")[0] for n in names} - set(sys.stdlib_module_names) - {"__future__"}


@pytest.mark.parametrize("path", sorted(DEPLOYKIT.rglob("*.py")), ids=lambda p: str(p.relative_to(REPO)))
def test_deploykit_speaks_through_its_libraries_only(path: Path) -> None:
    libraries = third_party(imported(path)) - {"deploykit"}
    allowed = DEPLOYKIT_LIBRARIES | {lib for lib, only in ONLY_IN.items() if path == REPO / only}
    assert libraries <= allowed, f"{path.relative_to(REPO)} imports {sorted(libraries - allowed)}"


@pytest.mark.parametrize("path", sorted((REPO / "plugins").glob("*.py")), ids=lambda p: p.name)
def test_plugins_use_the_plugin_api_of_deploykit(path: Path) -> None:
    used = {n for n in imported(path) if n == "deploykit" or n.startswith("deploykit.")}
    modules = {".".join(n.split(".")[:2]) for n in used}
    allowed = PLUGIN_API | OBSERVERS_ALSO.get(path.stem, set())
    assert modules <= allowed, f"plugins/{path.name} imports {sorted(modules - allowed)} of deploykit"
    assert "sandbox" not in third_party(imported(path))


@pytest.mark.parametrize("path", sorted((REPO / "sandbox").rglob("*.py")), ids=lambda p: str(p.relative_to(REPO)))
def test_the_sandbox_never_imports_deploykit_or_the_plugins(path: Path) -> None:
    assert not third_party(imported(path)) & {"deploykit", "plugins", "tasks"}


def test_tasks_and_noxfile_stay_thin() -> None:
    """tasks.py parses options and calls deploykit (and the sandbox's lifecycle, for `inv sandbox.*` and the
    tasks that start it); noxfile.py runs nox sessions."""
    assert third_party(imported(REPO / "tasks.py")) <= {"invoke", "deploykit", "sandbox", "tabulate"}
    assert third_party(imported(REPO / "noxfile.py")) <= {"nox"}


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
