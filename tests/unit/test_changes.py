"""Change detection: git diff from each component's live SHA to HEAD, through deploy.toml's [changes] rules."""

from __future__ import annotations

import ast
import dataclasses
import hashlib
import io
import json
import shutil
import subprocess
import sys
import threading
import tomllib
import zipfile
from collections.abc import Collection
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from deploykit import auto, changes, git, packaging, syntax
from deploykit.aws import at_once
from deploykit.changes import ChangeSet, StackUsage, classify, commits_behind, components_of, detect, stack_usage
from deploykit.config import STACK_ROLES, ChangeRule, ChangeRules, Config, compile_glob, load_config, parse_config
from deploykit.errors import ConfigError, UsageError
from deploykit.history import Record
from deploykit.planner import STACK_DEPENDENCIES
from tests.conftest import REPO, SANDBOX_TOML
from tests.conftest import git as run_git

ALL_STACKS = {f"stack:{role}" for role in STACK_ROLES}

LAYOUT = {
    "backend/Dockerfile": "FROM python:3.11-slim\n",
    "backend/requirements.txt": "fastapi==0.115.0\n",
    "backend/README.md": "# backend\n",
    "backend/app/__init__.py": "",
    "backend/app/main.py": "app = None\n",
    "backend/tests/test_main.py": "def test_x():\n    pass\n",
    "lambda/README.md": "# functions\n",
    "lambda/conftest.py": "",
    "lambda/login_handler/handler.py": "def handler(event, context):\n    return {}\n",
    "lambda/login_handler/util.py": "X = 1\n",
    "lambda/login_handler/notes.txt": "notes\n",
    "lambda/login_handler/tests/test_handler.py": "def test_x():\n    pass\n",
    "lambda/health_handler/handler.py": "def handler(event, context):\n    return {}\n",
    "lambda/health_handler/extra.py": "Y = 2\n",
    # imported by storage.py only, so used by the registry and data stacks through it
    "cdk/stacks/common/naming.py": "PREFIX = 'car-rental'\n",
    "cdk/stacks/common/unused.py": "Z = 3\n",
    "cdk/tests/test_cdk_app.py": "def test_x():\n    pass\n",
    "cdk/README.md": "# cdk\n",
    "README.md": "# project\n",
    "docs/guide.md": "guide\n",
    "tasks.py": "# invoke tasks\n",
    "deploykit/__init__.py": "",
}


def commit(root: Path, message: str = "change") -> str:
    run_git(root, "add", "-A")
    run_git(root, "commit", "-q", "--allow-empty", "-m", message)
    return run_git(root, "rev-parse", "HEAD").strip()


def write(root: Path, path: str, text: str) -> None:
    (root / path).parent.mkdir(parents=True, exist_ok=True)
    (root / path).write_text(text)


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A git repository laid out like this one: backend/, lambda/, the real cdk/ app, docs; one commit."""
    root = tmp_path / "repo"
    root.mkdir()
    (root / "deploy.toml").write_text(SANDBOX_TOML.format(registry="127.0.0.1:5000", repository="r", ca_dir=""))
    shutil.copytree(REPO / "cdk" / "stacks", root / "cdk" / "stacks", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "cdk" / "app.py", root / "cdk" / "app.py")
    for path, text in LAYOUT.items():
        write(root, path, text)
    storage = root / "cdk" / "stacks" / "common" / "storage.py"
    storage.write_text(storage.read_text() + "\nfrom stacks.common.naming import PREFIX  # noqa: E402,F401\n")
    (root / ".gitignore").write_text("__pycache__/\n")
    run_git(root, "init", "-q", "-b", "main")
    commit(root, "initial")
    return root


def config_of(root: Path) -> Config:
    return load_config(root / "deploy.toml")


def everything(config: Config, sha: str | None) -> dict[str, str | None]:
    return {component: sha for component in components_of(config)}


def components_by_path(change_set: ChangeSet) -> dict[str, set[str | None]]:
    out: dict[str, set[str | None]] = {}
    for change in change_set.changes:
        out.setdefault(change.path, set()).add(change.component)
    return out


# -- rules -------------------------------------------------------------------------------------------------------


def test_the_repository_deploy_toml_states_the_defaults() -> None:
    config = load_config(REPO / "deploy.toml")
    assert config.changes == ChangeRules()
    assert "changes" in tomllib.loads((REPO / "deploy.toml").read_text())  # written out, not only implied
    assert tuple(STACK_DEPENDENCIES) == STACK_ROLES
    for role in STACK_ROLES:  # the stack rule names the real files
        assert (REPO / "cdk" / "stacks" / f"{role}_stack.py").is_file()


def test_a_config_without_changes_gets_the_defaults() -> None:
    config = parse_config(tomllib.loads(SANDBOX_TOML.format(registry="r", repository="r", ca_dir="")), Path("x"))
    assert config.changes.rules == ChangeRules().rules


NO_USAGE = StackUsage()  # classify purely: no import graph, so nothing is read from disk


@pytest.mark.parametrize(
    ("path", "component", "kind", "reason"),
    [
        ("backend/app/main.py", "app", "app", 'rule "backend/**" → app'),
        ("backend/Dockerfile", "app", "app", "backend/**"),
        ("backend/requirements.txt", "app", "app", "backend/**"),
        ("backend/.dockerignore", "app", "app", "backend/**"),
        ("backend/tests/test_main.py", None, "none", 'rule "backend/tests/**" → none'),
        ("backend/README.md", None, "none", "backend/*.md"),
        ("lambda/login_handler/handler.py", "lambda:login_handler", "lambda", 'lambda/{fn}/**" → lambda:login_handler'),
        ("lambda/health_handler/requirements.txt", "lambda:health_handler", "lambda", "lambda/{fn}/**"),
        ("lambda/login_handler/pkg/deep/module.py", "lambda:login_handler", "lambda", "lambda/{fn}/**"),
        ("lambda/login_handler/tests/test_handler.py", None, "none", "lambda/*/tests/**"),
        ("lambda/login_handler/conftest.py", None, "none", "lambda/*/conftest.py"),
        ("lambda/README.md", None, "none", "lambda/README.md"),
        ("lambda/conftest.py", None, "none", "lambda/conftest.py"),
        ("cdk/stacks/fargate_stack.py", "stack:fargate", "stack", 'cdk/stacks/{role}_stack.py" → stack:fargate'),
        ("cdk/stacks/api_stack.py", "stack:api", "stack", "stack:api"),
        ("cdk/stacks/data_stack.py", "stack:data", "stack", "stack:data"),
        ("cdk/stacks/auth_stack.py", "stack:auth", "stack", "stack:auth"),
        ("cdk/stacks/registry_stack.py", "stack:registry", "stack", "stack:registry"),
        ("cdk/tests/test_cdk_app.py", None, "none", "cdk/tests/**"),
        ("cdk/README.md", None, "none", "cdk/**/*.md"),
        ("cdk/stacks/common/README.md", None, "none", "cdk/**/*.md"),  # not every stack
        ("README.md", None, "none", "**/*.md"),
        ("docs/guide.md", None, "none", "**/*.md"),
        ("docs/diagram.png", None, "none", "docs/**"),
        ("tests/unit/test_changes.py", None, "none", "tests/**"),
        ("bench/run.py", None, "none", "bench/**"),
        (".ci/pipeline.yml", None, "none", ".ci/**"),
        ("deploykit/changes.py", None, "none", "no rule"),
        ("tasks.py", None, "none", "no rule"),
        ("deploy.toml", None, "none", "no rule"),
        ("pyproject.toml", None, "none", "no rule"),
        ("sandbox/server.py", None, "none", "no rule"),
        ("lambda/handler.py", None, "none", "no rule"),  # directly in lambda/: no function folder
    ],
)
def test_each_default_rule(path: str, component: str | None, kind: str, reason: str) -> None:
    config = load_config(REPO / "deploy.toml")
    (target,) = classify(config, path, usage=NO_USAGE)
    assert (target.component, target.kind) == (component, kind)
    assert reason in target.reason


@pytest.mark.parametrize("path", ["cdk/app.py", "cdk/cdk.json", "cdk/requirements.txt"])
def test_the_cdk_app_and_its_settings_change_every_stack(path: str) -> None:
    targets = classify(load_config(REPO / "deploy.toml"), path, usage=NO_USAGE)
    assert {t.component for t in targets} == ALL_STACKS
    assert {t.kind for t in targets} == {"stack"}


def test_shared_cdk_modules_belong_to_the_stacks_importing_them_transitively(repo: Path) -> None:
    config = config_of(repo)  # the real cdk/stacks, plus naming.py imported by storage.py
    storage = classify(config, "cdk/stacks/common/storage.py")
    assert {t.component for t in storage} == {"stack:registry", "stack:data"}
    naming = classify(config, "cdk/stacks/common/naming.py")
    assert {t.component for t in naming} == {"stack:registry", "stack:data"}
    data = next(t for t in naming if t.component == "stack:data")
    assert "cdk/stacks/data_stack.py → cdk/stacks/common/storage.py → cdk/stacks/common/naming.py" in data.reason
    assert {t.component for t in classify(config, "cdk/stacks/common/settings.py")} == ALL_STACKS
    assert {t.component for t in classify(config, "cdk/stacks/__init__.py")} == ALL_STACKS  # every import loads it
    (unused,) = classify(config, "cdk/stacks/common/unused.py")
    assert (unused.component, unused.kind) == (None, "none") and "no stack imports it" in unused.reason


def test_the_cdk_modules_followed_are_those_git_sees_not_what_it_ignores(repo: Path) -> None:
    """A virtual environment in cdk/ (cdk/venv, gitignored) holds thousands of modules: reading them all took a
    minute. What git ignores is in no commit, so no change to it is ever seen: it is not read."""
    write(repo, "cdk/.gitignore", "venv/\ngenerated.py\n")
    write(repo, "cdk/venv/lib/helpers.py", "X = 1\n")
    write(repo, "cdk/stacks/common/generated.py", "X = 1\n")
    write(repo, "cdk/stacks/common/untracked.py", "X = 1\n")
    data = repo / "cdk" / "stacks" / "data_stack.py"
    data.write_text(
        data.read_text()
        + "\nimport venv.lib.helpers  # noqa: E402,F401\nfrom stacks.common import generated, untracked  # noqa\n"
    )
    users = changes.stack_usage_in_worktree(config_of(repo)).users
    assert "cdk/stacks/common/untracked.py" in users  # untracked but not ignored: an uncommitted change to deploy
    assert "cdk/venv/lib/helpers.py" not in users
    assert "cdk/stacks/common/generated.py" not in users


def test_a_cdk_file_that_is_not_python_counts_for_every_stack() -> None:
    targets = classify(load_config(REPO / "deploy.toml"), "cdk/stacks/common/policy.json", usage=NO_USAGE)
    assert {t.component for t in targets} == ALL_STACKS


def test_import_styles_of_the_cdk_app() -> None:
    files = {
        "cdk/stacks/__init__.py": b"",
        "cdk/stacks/common/__init__.py": b"",
        "cdk/stacks/common/a.py": b"from .b import B\n",  # relative, within the package
        "cdk/stacks/common/b.py": b"B = 1\n",
        "cdk/stacks/common/c.py": b"C = 1\n",
        "cdk/stacks/common/d.py": b"D = 1\n",
        "cdk/stacks/common/e.py": b"E = 1\n",
        "cdk/stacks/common/lazy.py": b"L = 1\n",
        "cdk/stacks/registry_stack.py": b"from .common import a\n",  # a submodule named in from-import
        "cdk/stacks/data_stack.py": b"import stacks.common.c\n",
        "cdk/stacks/auth_stack.py": b"from stacks.common.d import D\n",
        "cdk/stacks/fargate_stack.py": b"from stacks.api_stack import ROUTES\n",  # one stack imports another
        "cdk/stacks/api_stack.py": b"from . import common\ndef f():\n    from stacks.common import lazy\nROUTES = 1\n",
        "cdk/stacks/broken_stack.py": b"def (\n",  # not a stack role: no root, never read as one
    }
    usage = stack_usage(load_config(REPO / "deploy.toml"), files)

    def users(path: str) -> set[str]:
        return set(usage.users.get(path, {}))

    assert users("cdk/stacks/common/a.py") == {"registry"}
    assert users("cdk/stacks/common/b.py") == {"registry"}
    assert users("cdk/stacks/common/c.py") == {"data"}
    assert users("cdk/stacks/common/d.py") == {"auth"}
    assert users("cdk/stacks/common/lazy.py") == {"api", "fargate"}  # an import inside a function counts too
    assert users("cdk/stacks/common/e.py") == set()
    assert users("cdk/stacks/common/__init__.py") == set(STACK_ROLES)
    assert users("cdk/stacks/api_stack.py") == {"api", "fargate"}
    # a stack module that another stack imports changes both
    targets = classify(load_config(REPO / "deploy.toml"), "cdk/stacks/api_stack.py", usage=usage)
    assert [t.component for t in targets] == ["stack:api", "stack:fargate"]


def test_what_the_cdk_app_itself_imports_counts_for_every_stack() -> None:
    """A module cdk/app.py imports besides the stack modules (tags, feature flags) builds every stack; what only the
    stack modules import keeps to those stacks (the app imports each stack module: not followed from it)."""
    files = {
        "cdk/app.py": b"from tagging import T\nfrom stacks.data_stack import DataStack\n",
        "cdk/tagging.py": b"from flags import F\n",
        "cdk/flags.py": b"F = 1\n",
        "cdk/stacks/__init__.py": b"",
        "cdk/stacks/data_stack.py": b"from stacks.storage import S\n",
        "cdk/stacks/storage.py": b"S = 1\n",
    }
    config = load_config(REPO / "deploy.toml")
    usage = stack_usage(config, files)
    assert set(usage.users["cdk/flags.py"]) == set(STACK_ROLES)
    assert set(usage.users["cdk/stacks/storage.py"]) == {"data"}
    targets = classify(config, "cdk/flags.py", usage=usage)
    assert {t.component for t in targets} == ALL_STACKS
    assert "imported by the CDK app, which builds every stack (cdk/app.py → cdk/tagging.py → cdk/flags.py)" in (
        targets[0].reason
    )


def test_a_link_to_nothing_or_a_folder_named_like_a_module_in_cdk_is_passed_over(repo: Path) -> None:
    """Read from the work tree (inv diff, a dirty deploy): they are no module to read (a traceback before)."""
    (repo / "cdk" / "stacks" / "common" / "dangling.py").symlink_to("missing_target.py")
    (repo / "cdk" / "stacks" / "common" / "folder.py").mkdir()
    storage = classify(config_of(repo), "cdk/stacks/common/storage.py")
    assert {t.component for t in storage} == {"stack:registry", "stack:data"}


def test_a_stack_module_that_does_not_parse_is_assumed_to_use_everything() -> None:
    files = {"cdk/stacks/data_stack.py": b"def (\n", "cdk/stacks/common/x.py": b"X = 1\n"}
    usage = stack_usage(load_config(REPO / "deploy.toml"), files)
    assert set(usage.users["cdk/stacks/common/x.py"]) == {"data"}


def test_stack_modules_are_parsed_one_at_a_time_whatever_the_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    """inv envs finds each environment's changes in a thread of its own; CPython 3.11's ast.parse fails now and then
    when two threads parse at once (python/cpython#106905): each parse holds changes._PARSING."""
    parse = ast.parse
    held: list[bool] = []

    def parse_watched(*args: Any, **kwargs: Any) -> ast.AST:  # ast.parse is everyone's: pytest's own too
        held.append(changes._PARSING.locked())
        return parse(*args, **kwargs)

    monkeypatch.setattr(changes.ast, "parse", parse_watched)
    files = {"cdk/stacks/data_stack.py": b"from stacks.common import x\n", "cdk/stacks/common/x.py": b"X = 1\n"}
    with ThreadPoolExecutor(4) as pool:
        usages = list(pool.map(lambda _: stack_usage(load_config(REPO / "deploy.toml"), files), range(8)))
    assert held and all(held), held
    assert all(set(u.users["cdk/stacks/common/x.py"]) == {"data"} for u in usages)


def test_each_cdk_file_is_parsed_once_and_its_imports_kept_for_the_next_command(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """deploy.auto reads cdk/ at two commits on each run whose live commits differ by a CDK module: each file's
    imports are kept in the cache by its path and content, so the next command (a new process: a new ImportsCache
    over the same folder) parses only what changed, and finds the same usage. A file that does not parse is kept as
    such; a corrupt or unwritable cache is passed over."""
    parsed: list[str] = []
    parse = ast.parse

    def counted(source: Any, filename: str = "<unknown>", *args: Any, **kwargs: Any) -> ast.AST:
        parsed.append(filename)
        return parse(source, filename, *args, **kwargs)

    monkeypatch.setattr(changes.ast, "parse", counted)
    config = load_config(REPO / "deploy.toml")
    files = {
        "cdk/stacks/data_stack.py": b"from stacks.common import x\n",
        "cdk/stacks/common/x.py": b"X = 1\n",
        "cdk/stacks/api_stack.py": b"def (\n",  # does not parse: uses everything
    }
    first = stack_usage(config, files, changes.ImportsCache(tmp_path))
    assert sorted(parsed) == sorted(files)
    parsed.clear()
    again = stack_usage(config, files, changes.ImportsCache(tmp_path))
    assert parsed == [] and again == first
    assert set(again.users["cdk/stacks/common/x.py"]) == {"data", "api"}
    changed = {**files, "cdk/stacks/data_stack.py": b"X = 2\n"}
    assert set(stack_usage(config, changed, changes.ImportsCache(tmp_path)).users["cdk/stacks/common/x.py"]) == {"api"}
    assert parsed == ["cdk/stacks/data_stack.py"]

    (tmp_path / changes.ImportsCache.FILE).write_text("{not json")
    parsed.clear()
    assert stack_usage(config, files, changes.ImportsCache(tmp_path)) == first
    assert len(parsed) == 3
    blocked = tmp_path / "a-file"
    blocked.write_text("")
    assert stack_usage(config, files, changes.ImportsCache(blocked / "cache")) == first  # cannot be written


def test_two_commands_that_read_the_imports_cache_at_once_keep_both_their_files_when_they_write_it(
    tmp_path: Path,
) -> None:
    """Two commands (two ImportsCache over one folder) read the cache, each parses a file the other does not, and
    both write: the file keeps both files' imports, so neither is parsed again by the next command."""
    one, other = changes.ImportsCache(tmp_path), changes.ImportsCache(tmp_path)
    assert other.imported("cdk/stacks/api_stack.py", b"import os\n") == {"os"}  # read the cache: nothing there yet
    assert one.imported("cdk/stacks/data_stack.py", b"import json\n") == {"json"}
    one.save()
    other.save()
    kept = json.loads((tmp_path / changes.ImportsCache.FILE).read_text())["imports"]
    assert sorted(key.partition(":")[2] for key in kept) == ["cdk/stacks/api_stack.py", "cdk/stacks/data_stack.py"]


def test_glob_syntax() -> None:
    def matches(glob: str, path: str) -> bool:
        return compile_glob(glob)[0].fullmatch(path) is not None

    assert matches("*.md", "README.md") and not matches("*.md", "docs/a.md")  # * stays within a segment
    assert matches("**/*.md", "README.md") and matches("**/*.md", "a/b/c.md")  # ** is zero or more segments
    assert matches("backend/**", "backend/a/b.py") and not matches("backend/**", "backend")
    assert matches("backend/**", "backend/app/new\nline.py")  # a file name may hold a newline: still backend's
    assert not matches("backend/**", "backendx/a.py")
    assert matches("a/?.py", "a/b.py") and not matches("a/?.py", "a/bc.py")
    assert matches("a.b", "a.b") and not matches("a.b", "axb")  # regex characters are literal
    pattern, names = compile_glob("cdk/stacks/{role}_stack.py")
    assert names == ("role",)
    found = pattern.fullmatch("cdk/stacks/fargate_stack.py")
    assert found is not None and found["role"] == "fargate"
    assert pattern.fullmatch("cdk/stacks/x/fargate_stack.py") is None  # a placeholder is within one segment


def test_a_filled_in_target_that_is_no_component_lets_later_rules_match() -> None:
    # base_stack.py is not a stack role's module: stack:{role} does not match, the shared rule does
    rules = ChangeRules()
    found = rules.match("cdk/stacks/base_stack.py")
    assert found is not None and found[2] == "stacks:shared"


def test_configured_rules_replace_the_defaults() -> None:
    data = tomllib.loads(SANDBOX_TOML.format(registry="r", repository="r", ca_dir=""))
    data["changes"] = {
        "rules": [
            {"paths": ["shared/auth/**"], "to": "lambda:login_handler"},
            {"paths": ["services/{svc}/**"], "to": "lambda:{svc}"},
            {"paths": ["infra/{role}.py"], "to": "stack:{role}"},
        ]
    }
    config = parse_config(data, Path("deploy.toml"))
    assert config.changes.rules[0] == ChangeRule(paths=("shared/auth/**",), to="lambda:login_handler")
    assert classify(config, "shared/auth/jwt.py", usage=NO_USAGE)[0].component == "lambda:login_handler"
    assert classify(config, "services/billing/x.py", usage=NO_USAGE)[0].component == "lambda:billing"
    assert classify(config, "infra/api.py", usage=NO_USAGE)[0].component == "stack:api"
    assert classify(config, "infra/other.py", usage=NO_USAGE)[0].reason == "no rule"
    assert classify(config, "backend/app/main.py", usage=NO_USAGE)[0].reason == "no rule"  # defaults are gone


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        ({"paths": ["x/**"], "to": "database"}, "unknown target 'database'"),
        ({"paths": ["x/**"], "to": "stack:database"}, "'database' is not a stack role"),
        ({"paths": ["x/**"], "to": "stacks:some"}, "unknown target 'stacks:some'"),
        ({"paths": ["x/**"], "to": "lambda:"}, "unknown target 'lambda:'"),
        ({"paths": ["x/**"], "to": "lambda:a/b"}, "'a/b' is not a Lambda function folder name"),
        ({"paths": ["lambda/{name}/**"], "to": "lambda:{fn}"}, "uses {fn}, which 'lambda/{name}/**' does not define"),
        ({"paths": ["a/{fn}/**", "b/**"], "to": "lambda:{fn}"}, "uses {fn}, which 'b/**' does not define"),
        ({"paths": ["cdk/{r}.py"], "to": "stack:x{r}"}, "the role must be a whole placeholder"),
        ({"paths": ["backend/**x"], "to": "app"}, "** must be a whole path segment"),
        ({"paths": ["backend/[ab].py"], "to": "app"}, "character classes"),
        ({"paths": ["backend/{1x}.py"], "to": "app"}, "braces must form a {name} placeholder"),
        ({"paths": ["a/{x}/{x}"], "to": "app"}, "placeholder {x} twice"),
        ({"paths": ["/abs/**"], "to": "app"}, "must be a relative path"),
        ({"paths": ["a//b"], "to": "app"}, "empty, '.' or '..' path segment"),
        ({"paths": [], "to": "app"}, "paths is empty"),
    ],
)
def test_malformed_rules_are_config_errors_naming_the_rule(rule: dict[str, object], message: str) -> None:
    data = tomllib.loads(SANDBOX_TOML.format(registry="r", repository="r", ca_dir=""))
    data["changes"] = {"rules": [{"paths": ["ok/**"], "to": "none"}, rule]}
    with pytest.raises(ConfigError) as err:
        parse_config(data, Path("deploy.toml"))
    assert "changes.rules[1]" in err.value.message
    assert message in err.value.message
    assert err.value.exit_code == 2


@pytest.mark.parametrize(
    ("changes_table", "message"),
    [
        ({"rules": [{"path": ["x"], "to": "app"}]}, "unknown key 'changes.rules[0].path' (did you mean 'paths'?)"),
        ({"rules": [{"paths": ["x"]}]}, "missing required key 'changes.rules[0].to'"),
        ({"rules": [{"paths": "x/**", "to": "app"}]}, "'changes.rules[0].paths' must be a list of strings"),
        ({"rules": [["x/**", "app"]]}, "'changes.rules' must be a list of tables"),
        ({"rule": []}, "unknown key 'changes.rule'"),
        ({"rules": [{"paths": ["x"], "to": 1}]}, "'changes.rules[0].to' must be str"),
    ],
)
def test_malformed_changes_tables(changes_table: dict[str, object], message: str) -> None:
    data = tomllib.loads(SANDBOX_TOML.format(registry="r", repository="r", ca_dir=""))
    data["changes"] = changes_table
    with pytest.raises(ConfigError) as err:
        parse_config(data, Path("deploy.toml"))
    assert message in err.value.message


# -- components --------------------------------------------------------------------------------------------------


def test_components_of_the_checkout(repo: Path) -> None:
    (repo / "lambda" / "not_a_function").mkdir()  # no handler.py
    assert components_of(config_of(repo)) == [
        "app",
        "lambda:health_handler",
        "lambda:login_handler",
        "stack:registry",
        "stack:data",
        "stack:auth",
        "stack:fargate",
        "stack:api",
    ]
    real = components_of(load_config(REPO / "deploy.toml"))
    assert "lambda:login_handler" in real and "lambda:health_handler" in real


# -- git ---------------------------------------------------------------------------------------------------------


def test_known_commits_and_option_like_revisions(repo: Path) -> None:
    head = run_git(repo, "rev-parse", "HEAD").strip()
    assert git.is_known_commit(repo, head) and git.is_known_commit(repo, head[:12])
    assert not git.is_known_commit(repo, "0123456789ab")
    assert git.resolve_commit(repo, head[:12]) == head
    assert git.resolve_commit(repo, "0123456789ab") is None
    with pytest.raises(UsageError):
        git.is_known_commit(repo, "--all")
    # all at once, in one git process: as resolve_commit has them one by one
    first = run_git(repo, "rev-list", "--max-parents=0", "HEAD").strip()
    asked = [head[:12], "0123456789ab", "HEAD", "HEAD~0", first, head[:12], "a\nb", "HEAD:backend"]
    assert git.resolve_commits(repo, asked) == {
        head[:12]: head,
        "0123456789ab": None,
        "HEAD": head,
        "HEAD~0": head,
        first: first,
        "a\nb": None,
        "HEAD:backend": None,  # a tree, not a commit
    }
    with pytest.raises(UsageError):
        git.resolve_commits(repo, ["HEAD", "--all"])


def test_changed_paths_lists_renames_with_their_old_path_and_deletions(repo: Path) -> None:
    base = run_git(repo, "rev-parse", "HEAD").strip()
    run_git(repo, "mv", "lambda/login_handler/util.py", "lambda/health_handler/util.py")
    (repo / "lambda" / "health_handler" / "extra.py").unlink()
    write(repo, "backend/app/new.py", "N = 1\n")
    commit(repo)
    assert git.changed_paths(repo, base) == [
        git.PathChange("A", "backend/app/new.py"),
        git.PathChange("D", "lambda/health_handler/extra.py"),
        git.PathChange("R", "lambda/health_handler/util.py", "lambda/login_handler/util.py"),
    ]


def test_changed_paths_are_relative_to_a_project_in_a_subfolder(tmp_path: Path) -> None:
    top = tmp_path / "mono"
    write(top, "other/x.py", "1\n")
    write(top, "project/backend/app/main.py", "1\n")
    run_git(top, "init", "-q", "-b", "main")
    base = commit(top, "initial")
    write(top, "other/x.py", "2\n")
    write(top, "project/backend/app/main.py", "2\n")
    commit(top)
    assert git.changed_paths(top / "project", base) == [git.PathChange("M", "backend/app/main.py")]


def _subfolder_project(tmp_path: Path) -> tuple[Path, Path]:
    """A repository (its top folder, first) with a project in its subfolder project/ and a file elsewhere."""
    top = tmp_path / "mono"
    write(top, "other/x.py", "1\n")
    write(top, "project/backend/app/main.py", "1\n")
    run_git(top, "init", "-q", "-b", "main")
    commit(top, "initial")
    return top, top / "project"


def test_the_file_the_command_writes_its_output_to_is_no_uncommitted_change(tmp_path: Path) -> None:
    """`inv deploy.auto --json > deploy.json` in the checkout: the shell made deploy.json before deploykit started,
    and the deploy was refused for it ("the work tree has uncommitted changes: deploy.json"). The process's own
    stdout or stderr is passed over; another untracked file, or a tracked file written over, is still a change."""
    top, project = _subfolder_project(tmp_path)
    script = "import sys, pathlib; from deploykit import git; print(list(git.dirty_paths(pathlib.Path(sys.argv[1]))))"

    def dirty(out: str, err: str = "err.txt") -> list[str]:
        with (project / out).open("w") as stdout, (project / err).open("w") as stderr:
            subprocess.run([sys.executable, "-c", script, str(project)], stdout=stdout, stderr=stderr, check=True)
        return list(ast.literal_eval((project / out).read_text()))

    assert dirty("deploy.json", "deploy.err") == []
    write(top, "project/notes.txt", "x\n")
    assert dirty("deploy.json", "deploy.err") == ["notes.txt"]
    # what deploy.auto --watch compares: the state of the tree, the same however much the command has written
    states = (
        "import sys, pathlib; from deploykit import git; root = pathlib.Path(sys.argv[1]); "
        "a = git.worktree_state(root); print('x' * 5000, flush=True); print(a == git.worktree_state(root), flush=True)"
    )
    with (project / "watch.log").open("w") as stdout:
        subprocess.run([sys.executable, "-c", states, str(project)], stdout=stdout, check=True)
    assert (project / "watch.log").read_text().splitlines()[-1] == "True"
    (project / "watch.log").unlink()
    assert dirty("backend/app/main.py") == ["backend/app/main.py", "deploy.err", "deploy.json", "notes.txt"]


def test_uncommitted_changes_are_those_of_a_project_in_a_subfolder_relative_to_it(tmp_path: Path) -> None:
    """As its committed changes: an edit elsewhere in the repository is no uncommitted change of the project (its
    deploy is not refused for it), and the project's own are named as the Change Analysis names its paths, so that
    it marks them (uncommitted)."""
    top, project = _subfolder_project(tmp_path)
    write(top, "other/x.py", "2\n")
    write(top, "other/new.py", "N = 1\n")
    assert git.dirty_paths(project) == ()
    assert not git.current_revision(project).dirty
    write(top, "project/backend/app/main.py", "2\n")
    write(top, "project/backend/app/new.py", "N = 1\n")
    assert git.dirty_paths(project) == ("backend/app/main.py", "backend/app/new.py")
    assert git.changed_paths(project, "HEAD", None) == [
        git.PathChange("M", "backend/app/main.py"),
        git.PathChange("A", "backend/app/new.py"),
    ]


def test_the_dirty_hash_of_a_project_in_a_subfolder_is_of_its_own_changes(tmp_path: Path) -> None:
    """As its uncommitted paths: an edit elsewhere in the repository leaves the dirty build's tag (and what deploy.auto
    --watch sees) as it is; one of the project's own changes it."""
    top, project = _subfolder_project(tmp_path)
    write(top, "project/backend/app/main.py", "2\n")
    first = git.current_revision(project, allow_dirty=True)
    state = git.worktree_state(project)
    write(top, "other/x.py", "2\n")
    write(top, "other/new.py", "N = 1\n")
    assert git.current_revision(project, allow_dirty=True).tag == first.tag
    assert git.worktree_state(project) == state
    write(top, "project/backend/app/main.py", "3\n")
    assert git.current_revision(project, allow_dirty=True).tag != first.tag
    assert git.worktree_state(project) != state


# -- detect ------------------------------------------------------------------------------------------------------


def test_detect_maps_each_changed_path_to_its_component(repo: Path) -> None:
    config = config_of(repo)
    base = run_git(repo, "rev-parse", "HEAD").strip()
    write(repo, "backend/app/main.py", "app = 1\n")
    write(repo, "backend/tests/test_main.py", "# more tests\n")
    write(repo, "lambda/login_handler/handler.py", "# new login\n")
    write(repo, "README.md", "# docs\n")
    write(repo, "tasks.py", "# toolkit\n")
    head = commit(repo)

    result = detect(config, everything(config, base[:12]))
    assert result.head == head
    assert result.base == everything(config, base)  # full SHAs
    assert result.components() == {"app", "lambda:login_handler"}
    assert [(c.path, c.status) for c in result.for_component("app")] == [("backend/app/main.py", "M")]
    assert [c.path for c in result.for_component("lambda:login_handler")] == ["lambda/login_handler/handler.py"]
    unassigned = {c.path: c.reason for c in result.unassigned()}
    assert unassigned == {
        "README.md": 'rule "**/*.md" → none',
        "backend/tests/test_main.py": 'rule "backend/tests/**" → none',
        "tasks.py": "no rule",  # reported, never dropped
    }
    assert result.to_dict()["components"] == ["app", "lambda:login_handler"]


def test_detect_finds_the_stacks_of_a_shared_module_transitively(repo: Path) -> None:
    config = config_of(repo)
    base = run_git(repo, "rev-parse", "HEAD").strip()
    write(repo, "cdk/stacks/common/naming.py", "PREFIX = 'car-rental-2'\n")
    commit(repo)
    result = detect(config, everything(config, base))
    assert result.components() == {"stack:registry", "stack:data"}
    assert "storage.py" in result.for_component("stack:data")[0].reason


def test_detect_cdk_app_changes_every_stack(repo: Path) -> None:
    config = config_of(repo)
    base = run_git(repo, "rev-parse", "HEAD").strip()
    write(repo, "cdk/app.py", (repo / "cdk" / "app.py").read_text() + "\n# touched\n")
    commit(repo)
    assert detect(config, everything(config, base)).components() == ALL_STACKS


def test_a_deleted_shared_module_counts_for_the_stacks_that_imported_it(repo: Path) -> None:
    config = config_of(repo)
    base = run_git(repo, "rev-parse", "HEAD").strip()
    storage = repo / "cdk" / "stacks" / "common" / "storage.py"
    storage.write_text(storage.read_text().replace("from stacks.common.naming import PREFIX", "PREFIX = 'x'"))
    (repo / "cdk" / "stacks" / "common" / "naming.py").unlink()
    commit(repo)
    result = detect(config, everything(config, base))
    deleted = [c for c in result.changes if c.path == "cdk/stacks/common/naming.py"]
    assert {c.component for c in deleted} == {"stack:registry", "stack:data"}  # from the base commit's imports
    assert {c.status for c in deleted} == {"D"}


def test_renames_count_for_both_the_old_and_the_new_path(repo: Path) -> None:
    config = config_of(repo)
    base = run_git(repo, "rev-parse", "HEAD").strip()
    run_git(repo, "mv", "lambda/login_handler/util.py", "lambda/health_handler/util.py")  # between functions
    run_git(repo, "mv", "lambda/login_handler/notes.txt", "docs/notes.txt")  # out of a function
    write(repo, "backend/app/moved.py", "")
    commit(repo)
    run_git(repo, "mv", "backend/app/moved.py", "backend/app/renamed.py")  # within one component
    commit(repo)

    result = detect(config, everything(config, base))
    by_path = components_by_path(result)
    assert by_path["lambda/health_handler/util.py"] == {"lambda:health_handler", "lambda:login_handler"}
    assert by_path["docs/notes.txt"] == {"lambda:login_handler"}
    moved = [c for c in result.changes if c.path == "docs/notes.txt"]
    assert [(c.status, c.old_path) for c in moved] == [("R", "lambda/login_handler/notes.txt")]
    assert "(the old path)" in moved[0].reason
    assert result.components() == {"lambda:health_handler", "lambda:login_handler", "app"}


def test_a_rename_within_one_component_is_one_change(repo: Path) -> None:
    config = config_of(repo)
    base = run_git(repo, "rev-parse", "HEAD").strip()
    run_git(repo, "mv", "backend/app/main.py", "backend/app/server.py")
    commit(repo)
    result = detect(config, {"app": base})
    assert [(c.path, c.old_path, c.status, c.component) for c in result.changes] == [
        ("backend/app/server.py", "backend/app/main.py", "R", "app")
    ]


def test_deletions_count(repo: Path) -> None:
    config = config_of(repo)
    base = run_git(repo, "rev-parse", "HEAD").strip()
    (repo / "lambda" / "health_handler" / "extra.py").unlink()
    commit(repo)
    result = detect(config, everything(config, base))
    assert [(c.path, c.status) for c in result.for_component("lambda:health_handler")] == [
        ("lambda/health_handler/extra.py", "D")
    ]
    assert result.components() == {"lambda:health_handler"}


def test_each_component_is_compared_with_its_own_live_commit(repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = config_of(repo)
    first = run_git(repo, "rev-parse", "HEAD").strip()
    write(repo, "backend/app/main.py", "app = 2\n")
    write(repo, "lambda/login_handler/handler.py", "# v2\n")
    second = commit(repo)
    write(repo, "README.md", "# later\n")
    commit(repo)

    calls: list[str] = []
    real = git.changed_paths

    def counting(root: Path, base: str, head: str | None = "HEAD") -> list[git.PathChange]:
        calls.append(base)
        return real(root, base, head)

    monkeypatch.setattr(git, "changed_paths", counting)
    live: dict[str, str | None] = {
        "app": first[:12],  # older: the backend change is not live yet
        "lambda:login_handler": second[:12],  # already has its change
        "lambda:health_handler": second[:12],
    }
    result = detect(config, live)
    assert result.base == {"app": first, "lambda:login_handler": second, "lambda:health_handler": second}
    assert result.components() == {"app"}
    assert sorted(calls) == sorted([first, second])  # one diff per distinct base
    assert [c.path for c in result.unassigned()] == ["README.md"]


def test_a_since_that_names_two_commits_says_so(repo: Path) -> None:
    """Two commits whose SHAs start alike (made so: their bodies differ until the first 5 digits agree): "no such
    commit, fetch more history" would send the user the wrong way."""
    tree = run_git(repo, "rev-parse", "HEAD^{tree}").strip()
    seen: dict[str, bytes] = {}
    for n in range(200_000):
        body = f"tree {tree}\nauthor a <a@b> 0 +0000\ncommitter a <a@b> 0 +0000\n\n{n}\n".encode()
        sha = hashlib.sha1(b"commit %d\0" % len(body) + body).hexdigest()
        if sha[:5] in seen and seen[sha[:5]] != body:
            for made in (seen[sha[:5]], body):
                write = ["git", "hash-object", "-t", "commit", "-w", "--stdin"]
                subprocess.run(write, cwd=repo, input=made, check=True, capture_output=True)
            break
        seen[sha[:5]] = body
    prefix = sha[:5]
    with pytest.raises(UsageError, match=f"--since {prefix} names more than one commit of this clone") as err:
        detect(config_of(repo), {"app": None}, since=prefix)
    assert "give more of its digits" in (err.value.next_step or "")


def test_a_since_that_two_files_start_with_but_no_commit_is_no_such_commit(repo: Path) -> None:
    """Objects of other kinds sharing a prefix do not make it name two commits (git tells a commit from them)."""
    seen: dict[str, bytes] = {}
    for n in range(200_000):
        body = f"{n}\n".encode()
        sha = hashlib.sha1(b"blob %d\0" % len(body) + body).hexdigest()
        if sha[:5] in seen:
            for made in (seen[sha[:5]], body):
                write = ["git", "hash-object", "-w", "--stdin"]
                subprocess.run(write, cwd=repo, input=made, check=True, capture_output=True)
            break
        seen[sha[:5]] = body
    with pytest.raises(UsageError, match=f"--since {sha[:5]}: no such commit in this clone's history"):
        detect(config_of(repo), {"app": None}, since=sha[:5])


def test_a_live_sha_unknown_to_git_says_how_to_fix_it(repo: Path) -> None:
    config = config_of(repo)
    with pytest.raises(UsageError) as err:
        detect(config, {"app": None, "lambda:login_handler": "0123456789ab"})
    assert "lambda:login_handler" in err.value.message and "0123456789ab" in err.value.message
    assert "shallow" not in err.value.message
    # a complete clone: git refuses --unshallow there ("does not make sense"); the commit's branch is what to fetch
    assert "git fetch --unshallow" not in (err.value.next_step or "")
    assert "git fetch origin <branch>" in (err.value.next_step or "")
    assert "--since SHA" in (err.value.next_step or "")
    assert err.value.exit_code == 2
    with pytest.raises(UsageError, match="--since 0123456789ab: no such commit") as err:
        detect(config, {"app": None}, since="0123456789ab")
    assert "--unshallow" not in (err.value.next_step or "") and "git fetch origin" in (err.value.next_step or "")


def test_a_live_sha_a_shallow_clone_lacks_says_to_fetch_more_history(repo: Path, tmp_path: Path) -> None:
    """A CI checkout (git clone --depth 1) lacks the live commit: it is told to deepen or unshallow, and once it has
    (git fetch --deepen), the same detect finds the changes since that commit."""
    live = run_git(repo, "rev-parse", "HEAD").strip()
    write(repo, "backend/app/main.py", "app = 'newer'\n")
    commit(repo, "an app change")
    clone = tmp_path / "ci"
    run_git(tmp_path, "clone", "-q", "--depth", "1", f"file://{repo}", str(clone))
    with pytest.raises(UsageError, match=r"app is live at \w+, .* \(this clone is shallow\)") as err:
        detect(config_of(clone), {"app": live[:12]})
    assert "git fetch --unshallow, or git fetch --deepen=<commits>" in (err.value.next_step or "")
    with pytest.raises(UsageError, match="no such commit") as err:
        detect(config_of(clone), {"app": None}, since=live)
    assert "git fetch --deepen=<commits>" in (err.value.next_step or "")
    run_git(clone, "fetch", "-q", "--deepen=1")
    found = detect(config_of(clone), {"app": live[:12]})
    assert found.base == {"app": live} and [c.path for c in found.for_component("app")] == ["backend/app/main.py"]


def test_a_live_commit_of_another_branch_is_said_replaced_not_taken_back(repo: Path) -> None:
    """Another branch deployed (its live commit neither an ancestor of HEAD nor a descendant): deploying HEAD
    replaces what that branch has and HEAD lacks; the analysis and inv diff --json say so, nothing refused."""
    run_git(repo, "checkout", "-q", "-b", "feature")
    write(repo, "backend/app/main.py", "app = 'feature'\n")
    live = commit(repo, "feature: an app change")
    run_git(repo, "checkout", "-q", "main")
    write(repo, "README.md", "# docs\n")
    commit(repo, "main: docs")
    config = config_of(repo)
    found = detect(config, {"app": live[:12]})
    assert found.components() == {"app"} and found.ahead == {} and found.apart == {"app": 1}
    env = config.environment()
    lines = auto.analysis_lines(found, env, commits=commits_behind(repo, found))
    assert (
        f"🔀 app: live at {live[:12]}, on another line of history (1 commit HEAD ({found.head[:12]}) lacks, "
        "another branch's): deploying HEAD replaces it" in lines
    )
    assert auto.diff_json(env, found)["replaced"] == {"app": {"live": live, "commits": 1}}
    assert auto.taken_back(found) == {}  # not refused: replacing another branch is what a deploy of HEAD asks
    run_git(repo, "merge", "-q", "--no-edit", "feature")  # HEAD has it now: on the same line, nothing replaced
    assert detect(config, {"app": live[:12]}).apart == {}
    assert detect(config, {"app": live[:12]}, since=live).apart == {}


# -- submodules --------------------------------------------------------------------------------------------------


def submodule(repo: Path, folder: str, files: dict[str, str]) -> Path:
    """``folder`` of ``repo`` replaced by a real submodule holding ``files`` (its own repository beside ``repo``);
    committed. The submodule's work tree."""
    source = repo.parent / folder.replace("/", "-")
    for path, text in files.items():
        write(source, path, text)
    run_git(source, "init", "-q", "-b", "main")
    commit(source, "submodule: initial")
    if (repo / folder).exists():
        run_git(repo, "rm", "-r", "-q", folder)
    run_git(repo, "-c", "protocol.file.allow=always", "submodule", "add", "-q", str(source), folder)
    commit(repo, f"{folder} as a submodule")
    return repo / folder


def test_a_submodule_taken_up_counts_as_a_change_of_its_folder(repo: Path) -> None:
    """backend, or lambda/<fn>, as a submodule: taking up its new commit is one changed path, the folder's, which
    git's diff names without the files under it; it belongs where the rules put a file under it (backend/** → the
    app), not to nothing."""
    backend = submodule(repo, "backend", {"Dockerfile": "FROM python:3.11-slim\n", "app/main.py": "app = None\n"})
    function = submodule(repo, "lambda/fleet_handler", {"handler.py": "def handler(event, context):\n    return {}\n"})
    config = config_of(repo)
    assert "lambda:fleet_handler" in components_of(config)
    base = run_git(repo, "rev-parse", "HEAD").strip()
    assert git.changed_paths(repo, "HEAD~2", base)[-1] == git.PathChange("A", "lambda/fleet_handler", submodule=True)
    for folder in (backend, function):
        write(folder, "new.py", "N = 1\n")
        commit(folder, "submodule: a change")
    run_git(repo, "add", "backend", "lambda/fleet_handler")
    head = commit(repo, "take up the submodules' changes")

    found = detect(config, everything(config, base))
    assert found.components() == {"app", "lambda:fleet_handler"}
    assert [(c.path, c.component, c.status, c.submodule) for c in found.changes] == [
        ("backend", "app", "M", True),
        ("lambda/fleet_handler", "lambda:fleet_handler", "M", True),
    ]
    assert found.for_component("app")[0].reason == 'rule "backend/**" → app (a submodule: its folder\'s files)'
    lines = auto.analysis_lines(found, config.environment("sandbox"), commits=commits_behind(repo, found))
    assert lines[:2] == [
        "📱 App code: backend (submodule) → inv deploy.app",
        "🔧 Lambda:   lambda/fleet_handler (submodule) → inv deploy.lambda fleet_handler",
    ]
    assert [c.sha for c in commits_behind(repo, found)] == [head]
    # a narrower rule of the folder (backend/tests/** → none) is not the submodule's: it holds more than tests
    assert classify(config, "backend/tests", submodule=True)[0].component is None
    assert classify(config, "backend/tests")[0].component == "app"


def test_a_lambda_folder_submodule_taken_up_counts_for_each_function_it_holds(repo: Path) -> None:
    """lambda/ as one submodule: git's diff names lambda alone, which no rule matched (lambda/{fn}/** needs a
    function's folder), so taking up its new commit deployed nothing, said as docs or tests. Each function it holds
    now counts, as if every file under lambda/ changed; one not checked out is said so, with the command."""
    held = {p.removeprefix("lambda/"): text for p, text in LAYOUT.items() if p.startswith("lambda/")}
    functions = submodule(repo, "lambda", held)
    base = run_git(repo, "rev-parse", "HEAD").strip()
    write(functions, "login_handler/util.py", "X = 2\n")
    commit(functions, "submodule: a change")
    run_git(repo, "add", "lambda")
    commit(repo, "take up lambda")
    config = config_of(repo)

    found = detect(config, everything(config, base))
    assert found.components() == {"lambda:health_handler", "lambda:login_handler"}
    assert {(c.path, c.status, c.submodule) for c in found.changes} == {("lambda", "M", True)}
    reason = 'rule "lambda/{fn}/**" → lambda:health_handler (a submodule holding lambda/health_handler/extra.py'
    assert found.for_component("lambda:health_handler")[0].reason.startswith(reason)
    lines = auto.analysis_lines(found, config.environment("sandbox"))
    assert lines[:2] == [
        "🔧 Lambda:   lambda (submodule) → inv deploy.lambda health_handler",
        "🔧 Lambda:   lambda (submodule) → inv deploy.lambda login_handler",
    ]
    code = syntax.changed_code(config, found)
    assert {"lambda/login_handler/handler.py", "lambda/health_handler/extra.py"} <= set(code)
    assert "lambda/login_handler/tests/test_handler.py" not in code and "lambda/conftest.py" not in code

    write(functions, "health_handler/extra.py", "Y = 3\n")  # uncommitted in the submodule
    dirty = changes.scope(config, git.current_revision(repo, allow_dirty=True))
    assert dirty.touches == {"lambda:health_handler", "lambda:login_handler"}
    run_git(functions, "checkout", "-q", "--", ".")

    run_git(repo, "submodule", "deinit", "-q", "-f", "lambda")  # not checked out: nothing known, said so
    found = detect(config, everything(config, base))
    assert found.components() == set() and [c.path for c in found.changes] == ["lambda"]
    assert auto.analysis_lines(found, config.environment("sandbox")) == [
        "📄 No deploy: lambda (submodule: no rule; no file of it is checked out here, so what it changes is not known: "
        "git submodule update --init lambda)"
    ]


def test_a_lambda_folder_submodule_removed_is_said_removed_not_as_one_to_check_out(repo: Path) -> None:
    """lambda/ as one submodule, removed in a commit (git rm lambda): it holds no file here because it is gone, not
    because it is not checked out; saying to run git submodule update --init lambda sent the user after a submodule
    the commit no longer has."""
    held = {p.removeprefix("lambda/"): text for p, text in LAYOUT.items() if p.startswith("lambda/")}
    submodule(repo, "lambda", held)
    base = run_git(repo, "rev-parse", "HEAD").strip()
    config = config_of(repo)
    live = everything(config, base)
    run_git(repo, "rm", "-q", "lambda")
    commit(repo, "drop the functions")

    found = detect(config, live)
    assert found.components() == set()
    [gone] = [c for c in found.changes if c.path == "lambda"]
    assert (gone.status, gone.submodule, gone.component) == ("D", True, None)
    lines = auto.analysis_lines(found, config.environment("sandbox"))
    said = (
        "📄 No deploy: lambda (submodule: no rule; removed here, so it holds nothing to deploy: a function it held "
        "stays until the stack that holds it is deployed without it)"
    )
    assert said in lines
    assert not any("not checked out" in line or "submodule update" in line for line in lines)


def test_another_submodule_removed_is_said_removed_without_functions(repo: Path) -> None:
    """A removed submodule that held no function (docs/ as one): said removed, and nothing of a function."""
    submodule(repo, "docs", {"guide.md": "# guide\n"})
    base = run_git(repo, "rev-parse", "HEAD").strip()
    config = config_of(repo)
    live = everything(config, base)
    run_git(repo, "rm", "-q", "docs")
    commit(repo, "drop the docs")
    lines = auto.analysis_lines(detect(config, live), config.environment("sandbox"))
    assert any(
        line.startswith("📄 No deploy: docs (submodule: ")
        and line.endswith("removed here, so it holds nothing to deploy)")
        for line in lines
    ), lines


def test_a_submodule_inside_a_function_taken_up_counts_for_it_and_changes_its_zip(repo: Path) -> None:
    """lambda/<fn>/vendor/lib as a submodule: taking up its new commit is a change of the function, and its zip holds
    the submodule's files as checked out, so the zip changes with it (it held none of them: the same zip, so the
    deploy of the change published nothing new, and the function could not import them)."""
    lib = submodule(repo, "lambda/login_handler/vendor/lib", {"util.py": "X = 1\n"})
    base = run_git(repo, "rev-parse", "HEAD").strip()
    config = config_of(repo)
    before = packaging.package_function(repo / "lambda" / "login_handler")
    assert "vendor/lib/util.py" in before.files
    write(lib, "util.py", "X = 2\n")
    commit(lib, "submodule: a change")
    run_git(repo, "add", "lambda/login_handler/vendor/lib")
    commit(repo, "take up the library")

    found = detect(config, everything(config, base))
    assert found.components() == {"lambda:login_handler"}
    assert [(c.path, c.status, c.submodule) for c in found.changes] == [("lambda/login_handler/vendor/lib", "M", True)]
    lines = auto.analysis_lines(found, config.environment("sandbox"))
    assert lines[0] == "🔧 Lambda:   lambda/login_handler/vendor/lib (submodule) → inv deploy.lambda login_handler"
    after = packaging.package_function(repo / "lambda" / "login_handler")
    assert after.sha256 != before.sha256
    with zipfile.ZipFile(io.BytesIO(after.zip_bytes)) as zf:
        assert zf.read("vendor/lib/util.py") == b"X = 2\n"


def test_a_cdk_submodule_taken_up_counts_for_every_stack_and_its_modules_are_compiled(repo: Path) -> None:
    """cdk/ as a submodule: its folder matches cdk/** (stacks:shared), and which modules changed is not told, so
    every stack; the compile check before the deploy judges the stacks' modules the submodule holds."""
    files = {p.relative_to(repo / "cdk").as_posix(): p.read_text() for p in (repo / "cdk").rglob("*") if p.is_file()}
    cdk = submodule(repo, "cdk", files)
    base = run_git(repo, "rev-parse", "HEAD").strip()
    write(cdk, "stacks/common/naming.py", "PREFIX = 'renamed'\n")
    commit(cdk, "submodule: a change")
    run_git(repo, "add", "cdk")
    commit(repo, "take up cdk")
    config = config_of(repo)
    found = detect(config, everything(config, base))
    assert found.components() == ALL_STACKS
    assert {c.path for c in found.changes} == {"cdk"} and all(c.submodule for c in found.changes)
    code = syntax.changed_code(config, found)
    assert {"cdk/app.py", "cdk/stacks/api_stack.py", "cdk/stacks/common/naming.py"} <= set(code)
    assert "cdk/tests/test_cdk_app.py" not in code


def test_a_submodule_s_uncommitted_changes_are_its_folder_s(repo: Path) -> None:
    """An edit in a submodule's work tree (a file changed, or a new one git does not ignore) makes its folder an
    uncommitted change of the project: refused, or counted with --allow-dirty for the component it belongs to, the
    dirty build named by what the submodule's work tree holds (not only that it is dirty)."""
    backend = submodule(repo, "backend", {"Dockerfile": "FROM python:3.11-slim\n", "app/main.py": "app = None\n"})
    config = config_of(repo)
    clean = git.current_revision(repo)
    write(backend, "app/new.py", "N = 1\n")  # untracked in the submodule
    assert git.dirty_paths(repo) == ("backend",)
    untracked = changes.scope(config, git.current_revision(repo, allow_dirty=True))
    assert untracked.touches == {"app"} and untracked.of("stack:api") == clean
    found = detect(config, everything(config, clean.sha), include_uncommitted=True)
    assert found.components() == {"app"} and found.changes[0].submodule
    lines = auto.analysis_lines(found, config.environment("sandbox"), uncommitted=untracked.dirty_paths)
    assert lines[0] == "📱 App code: backend (submodule) (uncommitted) → inv deploy.app"

    write(backend, "app/new.py", "N = 2\n")
    edited = changes.scope(config, git.current_revision(repo, allow_dirty=True))
    write(backend, "app/main.py", "app = 1\n")  # tracked in the submodule
    both = changes.scope(config, git.current_revision(repo, allow_dirty=True))
    tags = {r.of("app").tag for r in (untracked, edited, both)} | {r.tag for r in (untracked, edited, both)}
    assert len(tags) == 3 and all(t.startswith(f"{clean.short}{git.DIRTY}") for t in tags)
    assert git.worktree_state(repo) == git.worktree_state(repo) != (clean.sha, "")
    # the submodule's .git file is none of what is built: the same edits with it saying where its repository is
    # another way (an absolute path, as older git wrote it, or another clone's place) are the same dirty build
    gitfile = backend / ".git"
    assert gitfile.read_text().startswith("gitdir: ../.git/modules/backend")
    gitfile.write_text(f"gitdir: {(repo / '.git' / 'modules' / 'backend').resolve()}\n")
    again = changes.scope(config, git.current_revision(repo, allow_dirty=True))
    assert again.dirty_paths == ("backend",) and (again.tag, again.of("app").tag) == (both.tag, both.of("app").tag)


@pytest.mark.parametrize(
    ("where", "key", "value"),
    [
        (".gitmodules", "submodule.backend.ignore", "untracked"),
        (".gitmodules", "submodule.backend.ignore", "dirty"),
        (".git/config", "submodule.backend.ignore", "all"),
        (".git/config", "diff.ignoreSubmodules", "all"),
    ],
)
def test_a_submodule_s_ignore_setting_hides_nothing_from_a_deploy(repo: Path, where: str, key: str, value: str) -> None:
    """A submodule's ignore setting quiets the user's own git status; a deploy builds the submodule's work tree, so
    it hid what would ship: the dirty check let a new or edited file in it go out as HEAD's clean build (the diff and
    the hash, which did not heed the setting, saw it), and with "all" a commit of it taken up deployed nothing. The
    dirty check, the changed paths and the dirty hash now all see every change of it, whatever the setting."""
    backend = submodule(repo, "backend", {"Dockerfile": "FROM python:3.11-slim\n", "app/main.py": "app = None\n"})
    if where == ".gitmodules":
        run_git(repo, "config", "-f", ".gitmodules", key, value)
        commit(repo, f"{key} = {value}")
    else:
        run_git(repo, "config", key, value)
    config = config_of(repo)
    clean = git.current_revision(repo)
    assert run_git(repo, "status", "--porcelain") == ""

    write(backend, "app/new.py", "N = 1\n")  # untracked in the submodule (hidden by every setting here)
    if value != "untracked":
        write(backend, "app/main.py", "app = 1\n")  # and an edit of a tracked file (hidden by dirty and all)
    assert run_git(repo, "status", "--porcelain") == ""  # the user's git status: nothing
    assert git.dirty_paths(repo) == ("backend",)
    with pytest.raises(UsageError, match="uncommitted changes: backend"):
        git.current_revision(repo)
    dirty = changes.scope(config, git.current_revision(repo, allow_dirty=True))
    assert dirty.touches == {"app"} and dirty.of("app").tag.startswith(f"{clean.short}{git.DIRTY}")
    found = detect(config, everything(config, clean.sha), include_uncommitted=True)
    assert found.components() == {"app"} and found.changes[0].submodule

    commit(backend, "submodule: a change")
    run_git(repo, "add", "backend")
    commit(repo, "take up backend")
    assert git.dirty_paths(repo) == ()
    taken_up = detect(config, everything(config, clean.sha))
    assert taken_up.components() == {"app"} and [c.path for c in taken_up.changes] == ["backend"]


def test_a_live_value_that_is_no_sha_is_refused(repo: Path) -> None:
    with pytest.raises(UsageError, match="app is live at 'latest'"):
        detect(config_of(repo), {"app": "latest"})


def test_since_replaces_every_live_commit(repo: Path) -> None:
    config = config_of(repo)
    first = run_git(repo, "rev-parse", "HEAD").strip()
    write(repo, "lambda/health_handler/handler.py", "# v2\n")
    commit(repo)
    live: dict[str, str | None] = {"app": "0123456789ab", "lambda:health_handler": "fedcba987654"}  # unknown here
    result = detect(config, live, since=first[:8])
    assert result.base == {"app": first, "lambda:health_handler": first}
    assert result.components() == {"lambda:health_handler"}
    assert detect(config, live, since="HEAD").components() == set()
    with pytest.raises(UsageError, match="--since 0123456789ab"):
        detect(config, live, since="0123456789ab")


def test_a_dirty_live_build_is_compared_from_its_commit_and_reported(repo: Path) -> None:
    config = config_of(repo)
    head = run_git(repo, "rev-parse", "HEAD").strip()
    tag = f"{head[:12]}-dirty-0123456789ab"
    result = detect(config, {"app": tag, "lambda:login_handler": head[:12]})
    assert result.base == {"app": head, "lambda:login_handler": head}
    assert result.dirty == {"app"}
    # what is live is in no commit: redeploying makes it one
    assert result.components() == {"app"}
    (note,) = result.for_component("app")
    assert note.path == "" and tag in note.reason and "uncommitted" in note.reason


def test_never_deployed_components_count_as_changed(repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = config_of(repo)
    monkeypatch.setattr(git, "changed_paths", lambda *a, **k: pytest.fail("no base: nothing to diff"))
    result = detect(config, {"app": None, "stack:api": None})
    assert result.base == {"app": None, "stack:api": None}
    assert result.components() == {"app", "stack:api"}
    assert [(c.path, c.status, c.reason) for c in result.for_component("stack:api")] == [("", "A", "not deployed yet")]


def test_a_lambda_folder_without_handler_is_not_a_component(repo: Path) -> None:
    config = config_of(repo)
    base = run_git(repo, "rev-parse", "HEAD").strip()
    write(repo, "lambda/shared_lib/auth.py", "A = 1\n")
    commit(repo)
    result = detect(config, everything(config, base))
    assert result.components() == set()
    (change,) = result.unassigned()
    assert change.path == "lambda/shared_lib/auth.py"
    assert "lambda:shared_lib is not a deployable component" in change.reason


def test_a_removed_function_s_files_are_said_as_such_not_as_docs(repo: Path) -> None:
    """lambda/<fn>/ removed: its files deploy nothing as such (the stack that holds the function removes it), and
    the Change Analysis says why, apart from the docs and tests."""
    config = config_of(repo)
    base = run_git(repo, "rev-parse", "HEAD").strip()
    live = everything(config, base)
    run_git(repo, "rm", "-q", "-r", "lambda/health_handler")
    write(repo, "README.md", "# changed\n")
    commit(repo)
    result = detect(config_of(repo), {c: s for c, s in live.items() if c != "lambda:health_handler"})
    gone = [c for c in result.unassigned() if c.path.startswith("lambda/health_handler/")]
    assert gone and all(changes.not_deployable(c) == "lambda:health_handler" for c in gone)
    assert [changes.not_deployable(c) for c in result.unassigned() if c.path == "README.md"] == [None]
    lines = auto.analysis_lines(result, config.environment("sandbox"))
    assert lines[0] == "📄 No deploy: README.md (docs, tests, the toolkit: nothing to deploy)"
    assert lines[1].startswith("📄 No deploy: lambda/health_handler/")
    assert lines[1].endswith(
        " (lambda/health_handler/ has no handler.py in this checkout: no function lambda:health_handler to deploy; "
        "one deployed stays until the stack that holds it is deployed without it)"
    )


def test_a_renamed_function_s_files_are_said_by_their_old_path(repo: Path) -> None:
    """lambda/health_handler/ renamed lambda/status_handler/: the old function's files are said by their old paths
    (the folder this checkout has not), the new path beside each."""
    config = config_of(repo)
    base = run_git(repo, "rev-parse", "HEAD").strip()
    live = everything(config, base)
    run_git(repo, "mv", "lambda/health_handler", "lambda/status_handler")
    commit(repo)
    result = detect(config_of(repo), {c: s for c, s in live.items() if c != "lambda:health_handler"})
    lines = auto.analysis_lines(result, config.environment("sandbox"))
    [said] = [line for line in lines if "has no handler.py in this checkout" in line]
    assert said.startswith(
        "📄 No deploy: lambda/health_handler/extra.py (now lambda/status_handler/extra.py), "
        "lambda/health_handler/handler.py (now lambda/status_handler/handler.py) (lambda/health_handler/ has no "
    )


def test_uncommitted_changes_count_only_when_asked(repo: Path) -> None:
    config = config_of(repo)
    base = run_git(repo, "rev-parse", "HEAD").strip()
    write(repo, "backend/app/main.py", "app = 'dirty'\n")
    write(repo, "lambda/health_handler/new.py", "untracked = True\n")
    live = everything(config, base)
    assert detect(config, live).components() == set()
    result = detect(config, live, include_uncommitted=True)
    assert result.uncommitted
    assert result.components() == {"app", "lambda:health_handler"}
    assert [c.status for c in result.for_component("lambda:health_handler")] == ["A"]
    with pytest.raises(ValueError, match="head must be HEAD"):
        detect(config, live, head=base, include_uncommitted=True)


def test_scope_names_the_components_the_uncommitted_changes_touch(repo: Path) -> None:
    config = config_of(repo)
    clean = git.current_revision(repo)
    assert changes.scope(config, clean) is clean  # a clean tree: nothing to work out
    write(repo, "lambda/health_handler/new.py", "untracked = True\n")  # untracked files count
    write(repo, "cdk/stacks/common/naming.py", "PREFIX = 'dirty'\n")  # a shared module: the stacks importing it
    write(repo, "backend/tests/test_main.py", "# not in the image\n")  # a rule to none: touches nothing
    run_git(repo, "mv", "lambda/login_handler/notes.txt", "docs/notes.txt")  # a rename: its old side too
    revision = changes.scope(config, git.current_revision(repo, allow_dirty=True))
    assert revision.touches == {"lambda:health_handler", "lambda:login_handler", "stack:registry", "stack:data"}
    assert revision.tag.startswith(f"{clean.short}{git.DIRTY}")

    # what they touch is a dirty build named by its own changes; the rest is HEAD's commit, as if the tree were clean
    health = revision.of("lambda:health_handler")
    assert health.dirty_paths == ("lambda/health_handler/new.py",) and health.tag.startswith(
        f"{clean.short}{git.DIRTY}"
    )
    data, registry = revision.of("stack:data"), revision.of("stack:registry")
    assert data.dirty_paths == ("cdk/stacks/common/naming.py",) and data.tag == registry.tag != health.tag
    assert revision.of("lambda:login_handler").dirty_paths == ("docs/notes.txt", "lambda/login_handler/notes.txt")
    assert revision.of("app") == clean and revision.of("stack:api").tag == clean.short
    # an edit elsewhere leaves a component's build name as it is; an edit of its own changes it
    write(repo, "docs/guide.md", "more guide\n")
    again = changes.scope(config, git.current_revision(repo, allow_dirty=True))
    assert again.tag != revision.tag and again.of("lambda:health_handler").tag == health.tag
    write(repo, "lambda/health_handler/new.py", "untracked = False\n")
    edited = changes.scope(config, git.current_revision(repo, allow_dirty=True))
    assert edited.of("lambda:health_handler").tag != health.tag and edited.of("stack:data").tag == data.tag
    # a revision whose touches were not worked out is dirty for every component
    unscoped = git.current_revision(repo, allow_dirty=True)
    assert unscoped.touches is None and unscoped.of("app") is unscoped


def test_a_live_dirty_build_of_what_the_work_tree_holds_is_no_change(repo: Path) -> None:
    config = config_of(repo)
    write(repo, "lambda/health_handler/new.py", "untracked = True\n")
    revision = changes.scope(config, git.current_revision(repo, allow_dirty=True))
    built = revision.of("lambda:health_handler").tag  # what a deploy of the work tree gave the function
    live = {**everything(config, revision.sha), "lambda:health_handler": built}
    tags = {component: revision.of(component).tag for component in live}
    same = detect(config, live, include_uncommitted=True, worktree_tags=tags)
    assert same.components() == set() and "lambda:health_handler" in same.dirty
    # another edit of the function: what is live is no longer what the work tree holds
    write(repo, "lambda/health_handler/new.py", "untracked = False\n")
    edited = changes.scope(config, git.current_revision(repo, allow_dirty=True))
    tags = {component: edited.of(component).tag for component in live}
    changed = detect(config, live, include_uncommitted=True, worktree_tags=tags)
    assert changed.components() == {"lambda:health_handler"}
    assert any("live build" in c.reason and "in no commit" in c.reason for c in changed.changes)
    # with --since, the live build is not compared: the commit named is the base
    assert detect(config, live, since=revision.sha, include_uncommitted=True, worktree_tags=tags).components()


def test_scope_of_docs_only_edits_touches_nothing(repo: Path) -> None:
    write(repo, "docs/guide.md", "more guide\n")
    revision = changes.scope(config_of(repo), git.current_revision(repo, allow_dirty=True))
    assert revision.dirty and revision.touches == frozenset()
    assert all(not revision.of(c).dirty for c in components_of(config_of(repo)))


def test_an_edit_git_is_told_to_pass_over_is_deployed_with_allow_dirty_and_tagged_by_its_content(repo: Path) -> None:
    """A skip-worktree file's edit: refused as uncommitted (dirty_paths), and the image reads it; with --allow-dirty
    it counts for its component, whose tag follows its content (the same tag for two contents would be taken for a
    build there already)."""
    config = config_of(repo)
    head = run_git(repo, "rev-parse", "HEAD").strip()
    run_git(repo, "update-index", "--skip-worktree", "backend/app/main.py")
    tags = []
    for content in ("# local\n", "# local, again\n"):
        (repo / "backend" / "app" / "main.py").write_text(content)
        assert detect(config, everything(config, head), include_uncommitted=True).components() == {"app"}
        revision = changes.scope(config, git.current_revision(repo, allow_dirty=True))
        assert revision.touches == {"app"}
        tags.append(revision.of("app").tag)
    assert tags[0] != tags[1] and all("-dirty-" in tag for tag in tags)


def test_deploy_toml_counts_for_the_app_only_when_its_build_table_changes(repo: Path) -> None:
    config = config_of(repo)
    toml = repo / "deploy.toml"
    base = run_git(repo, "rev-parse", "HEAD").strip()
    toml.write_text(toml.read_text().replace('default_env = "sandbox"', '# a comment\ndefault_env = "dev"'))
    commit(repo, "toolkit settings")
    result = detect(config, everything(config, base))
    assert result.components() == set() and [c.kind for c in result.for_component(None)] == ["none"]

    toml.write_text(toml.read_text().replace('[build.base]\nname = "', '[build.base]\npackages = ["curl"]\nname = "'))
    assert changes.scope(config, git.current_revision(repo, allow_dirty=True)).touches == {"app"}  # uncommitted
    assert detect(config, everything(config, base), include_uncommitted=True).components() == {"app"}
    commit(repo, "the base image gets curl")
    result = detect(config, everything(config, base))
    assert result.components() == {"app"}
    [change] = result.for_component("app")
    assert change.path == "deploy.toml" and "the [build] table of deploy.toml changed" in change.reason
    # from the commit with only the toolkit settings changed, too
    assert detect(config, everything(config, run_git(repo, "rev-parse", "HEAD~1").strip())).components() == {"app"}


def test_a_default_of_the_build_table_written_out_is_no_change_of_the_image(repo: Path) -> None:
    """[build] and [build.base] keys said at their defaults build the same image: nothing to deploy; another value of
    one of them is a change."""
    config = config_of(repo)
    toml = repo / "deploy.toml"
    base = run_git(repo, "rev-parse", "HEAD").strip()
    said = '[build]\nplatform = "linux/amd64"\npull_after_days = 7\n'
    toml.write_text(
        toml.read_text().replace("[build]\n", said).replace("[build.base]\n", "[build.base]\nupdates = true\n")
    )
    commit(repo, "the defaults, said")
    assert detect(config, everything(config, base)).components() == set()
    toml.write_text(toml.read_text().replace("pull_after_days = 7\n", "pull_after_days = 3\n"))
    commit(repo, "the base pulled more often")
    assert detect(config, everything(config, base)).components() == {"app"}


@pytest.mark.parametrize(
    ("key", "default", "other", "what"),
    [
        ("lambda_architecture", "x86_64", "arm64", "the functions run on another architecture"),
        ("lambda_runtime", "python3.11", "python3.12", "the functions run on another Python"),
    ],
)
def test_the_functions_architecture_in_deploy_toml_counts_for_the_api_stack_and_every_function(
    repo: Path, key: str, default: str, other: str, what: str
) -> None:
    """[build] lambda_architecture and lambda_runtime are no part of how the image is built: the API stack puts every
    function on them, and every function's requirements are vendored for them."""
    config = config_of(repo)
    toml = repo / "deploy.toml"
    base = run_git(repo, "rev-parse", "HEAD").strip()
    toml.write_text(toml.read_text().replace("[build]\n", f'[build]\n{key} = "{default}"\n'))
    commit(repo, "the default, said")
    assert detect(config, everything(config, base)).components() == set()

    toml.write_text(toml.read_text().replace(f'{key} = "{default}"', f'{key} = "{other}"'))
    commit(repo, "Graviton, or a newer Python")
    result = detect(config, everything(config, base))
    functions = {c for c in components_of(config) if c.startswith("lambda:")}
    assert functions and result.components() == {"stack:api", *functions}
    assert all(
        f"[build] {key} of deploy.toml changed: {what}" in c.reason and c.setting == f"[build] {key}"
        for c in result.changes
    )
    if key != "lambda_architecture":
        return
    toml.write_text(
        toml.read_text().replace(
            'lambda_architecture = "arm64"\n', 'lambda_architecture = "arm64"\nplatform = "linux/arm64"\n'
        )
    )
    commit(repo, "and the image")
    result = detect(config, everything(config, base))
    assert result.components() == {"app", "stack:fargate", "stack:api", *functions}
    # the image is built for the platform, and the Fargate stack puts the tasks on its architecture
    assert {c.setting for c in result.for_component("app")} == {"[build] platform"}
    [fargate] = result.for_component("stack:fargate")
    assert fargate.setting == "[build] platform" and "the service's tasks run on another architecture" in fargate.reason
    toml.write_text(
        toml.read_text().replace('platform = "linux/arm64"\n', 'platform = "linux/arm64"\npull_after_days = 3\n')
    )
    commit(repo, "the base pulled more often")
    later = detect(config, everything(config, run_git(repo, "rev-parse", "HEAD~1").strip()))
    assert later.components() == {"app"} and {c.setting for c in later.changes} == {"[build]"}


# an environment per developer (dev-alice...), each with stacks of its own
DEV_PATTERN = (
    '\n[environments."dev-*"]\nregion = "eu-west-1"\ncluster = "c-{env}"\nservice = "s-{env}"\n'
    'container = "backend"\nrepository = "r-{env}"\n'
    '[environments."dev-*".stacks]\n' + "".join(f'{role} = "CarRental-{{env}}-{role}"\n' for role in STACK_ROLES)
)


def test_an_environment_s_service_size_counts_for_its_fargate_stack_there(repo: Path) -> None:
    """[environments.NAME] desired_count, task_cpu and task_memory (the Fargate stack sizes the service from them): a
    change deploys that environment's Fargate stack, said like the platform's, and nothing of another environment; a
    pattern's counts for the environments it makes; another key of the table, or a default said, counts for nothing."""
    config = config_of(repo)
    toml = repo / "deploy.toml"
    base = run_git(repo, "rev-parse", "HEAD").strip()
    text = toml.read_text()
    dev, sandbox = "[environments.dev.stacks]", "[environments.sandbox.stacks]"
    sized = text.replace(dev, f"desired_count = 3\ntask_cpu = 1024\ntask_memory = 2048\n\n{dev}")
    toml.write_text(sized)
    commit(repo, "dev: 3 tasks of 1 vCPU, 2 GiB")
    found = detect(config, everything(config, base), env="dev")
    assert found.components() == {"stack:fargate"}
    (change,) = found.for_component("stack:fargate")
    assert change.path == "deploy.toml" and change.kind == "stack"
    assert change.setting == "[environments.dev] desired_count, task_cpu, task_memory"
    assert "the service runs another count or size of tasks" in change.reason
    assert auto.analysis_lines(found, config.environment("dev"))[0] == (
        "🐳 Stack:    deploy.toml ([environments.dev] desired_count, task_cpu, task_memory changed) → "
        "inv deploy.stack CarRentalFargateStack"
    )
    assert detect(config, everything(config, base), env="sandbox").components() == set()  # not sandbox's
    assert detect(config, everything(config, base)).components() == {"stack:fargate"}  # unnamed: any environment's
    middle = commit(repo, "nothing")
    toml.write_text(sized.replace("desired_count = 3", "desired_count = 4"))
    commit(repo, "dev: one more")
    (change,) = detect(config, everything(config, middle), env="dev").changes
    assert (change.component, change.setting) == ("stack:fargate", "[environments.dev] desired_count")
    # the defaults said, or another key of the table: the same service, nothing to deploy
    later = commit(repo, "nothing")
    toml.write_text(toml.read_text().replace(sandbox, f"desired_count = 1\ntask_cpu = 256\n\n{sandbox}"))
    toml.write_text(toml.read_text().replace("poll_interval = 0.5\n", "poll_interval = 1\n", 1))
    commit(repo, "sandbox: the defaults said")
    assert detect(config, everything(config, later), env="sandbox").components() == set()
    assert detect(config, everything(config, later)).components() == set()
    # a pattern's size counts for the environments it makes
    toml.write_text(toml.read_text() + DEV_PATTERN)
    before = commit(repo, "dev-*: environments of their own")
    more = 'repository = "r-{env}"\ntask_memory = 1024\n'
    toml.write_text(toml.read_text().replace('repository = "r-{env}"\n', more))
    commit(repo, "dev-*: more memory")
    (change,) = detect(config, everything(config, before), env="dev-alice").changes
    assert (change.component, change.setting) == ("stack:fargate", '[environments."dev-*"] task_memory')
    assert detect(config, everything(config, before), env="dev").components() == set()
    assert detect(config, everything(config, before), env="sandbox").components() == set()


def test_the_names_an_environment_gives_its_platform_count_for_the_stacks_that_make_them(repo: Path) -> None:
    """cluster, service, container and registry are the Fargate stack's (it makes the cluster, the service, its task
    definitions' family and container, by those names, and pulls from the registry); repository is the registry
    stack's too (it makes the repository): each counted for nothing, and deployed nowhere."""
    config = config_of(repo)
    toml = repo / "deploy.toml"
    text = toml.read_text()
    dev = text.index("[environments.dev]")
    base = run_git(repo, "rev-parse", "HEAD").strip()
    toml.write_text(text[:dev] + text[dev:].replace('cluster = "', 'cluster = "renamed-', 1))
    commit(repo, "dev: another cluster")
    (change,) = detect(config, everything(config, base), env="dev").changes
    assert (change.component, change.setting) == ("stack:fargate", "[environments.dev] cluster")
    assert "the service runs in a cluster of another name" in change.reason
    assert detect(config, everything(config, base), env="sandbox").components() == set()
    middle = commit(repo, "nothing")
    text = toml.read_text()
    toml.write_text(text[:dev] + text[dev:].replace('repository = "', 'repository = "renamed-', 1))
    commit(repo, "dev: another repository")
    found = detect(config, everything(config, middle), env="dev")
    assert found.components() == {"stack:registry", "stack:fargate"}


def test_an_environment_s_stack_event_topics_count_for_every_stack_there(repo: Path) -> None:
    """[environments.NAME] notification_arns (where CloudFormation sends the stacks' events, not in any template): a
    change deploys every stack of that environment, and nothing of another; the key taken out, nothing (each stack
    keeps the topics it has); a pattern's counts for the environments it makes."""
    config = config_of(repo)
    toml = repo / "deploy.toml"
    base = run_git(repo, "rev-parse", "HEAD").strip()
    topic = "arn:aws:sns:eu-west-1:123456789012:deploy-events"
    dev = "[environments.dev.stacks]"
    toml.write_text(toml.read_text().replace(dev, f'notification_arns = ["{topic}"]\n\n{dev}'))
    commit(repo, "dev: the stacks' events to the team's topic")
    found = detect(config, everything(config, base), env="dev")
    assert found.components() == {f"stack:{role}" for role in STACK_ROLES}
    for change in found.changes:
        assert (change.path, change.kind) == ("deploy.toml", "stack")
        assert change.setting == "[environments.dev] notification_arns"
        assert "CloudFormation sends the stacks' events to other SNS topics" in change.reason
    assert auto.analysis_lines(found, config.environment("dev"))[0] == (
        "🐳 Stack:    deploy.toml ([environments.dev] notification_arns changed) → inv deploy.stack CarRentalApiStack"
    )
    assert detect(config, everything(config, base), env="sandbox").components() == set()  # not sandbox's
    middle = commit(repo, "nothing")
    toml.write_text(toml.read_text().replace(f'notification_arns = ["{topic}"]', "notification_arns = []"))
    commit(repo, "dev: no topic")
    assert len(detect(config, everything(config, middle), env="dev").changes) == len(STACK_ROLES)
    said = commit(repo, "nothing")
    toml.write_text(toml.read_text().replace("notification_arns = []\n", ""))
    commit(repo, "dev: the key taken out")  # the stacks keep the topics they have: nothing to deploy
    assert detect(config, everything(config, said), env="dev").components() == set()
    toml.write_text(toml.read_text() + DEV_PATTERN)
    before = commit(repo, "dev-*: environments of their own")
    toml.write_text(
        toml.read_text().replace(
            'repository = "r-{env}"\n', f'repository = "r-{{env}}"\nnotification_arns = ["{topic}"]\n'
        )
    )
    commit(repo, "dev-*: the team's topic")
    found = detect(config, everything(config, before), env="dev-alice")
    assert {c.setting for c in found.changes} == {'[environments."dev-*"] notification_arns'}
    assert found.components() == {f"stack:{role}" for role in STACK_ROLES}
    assert detect(config, everything(config, before), env="dev").components() == set()


def test_an_environment_s_context_counts_for_every_stack_there(repo: Path) -> None:
    """[environments.NAME.context] (values the CDK app may read in any stack): a change, taking a value out too,
    deploys every stack of that environment, each by its own deploy.stack, and nothing of another."""
    config = config_of(repo)
    toml = repo / "deploy.toml"
    base = run_git(repo, "rev-parse", "HEAD").strip()
    dev = "[environments.dev.stacks]"
    toml.write_text(toml.read_text().replace(dev, f"[environments.dev.context]\naudit_retention_days = 30\n\n{dev}"))
    commit(repo, "dev: audit kept a month")
    found = detect(config, everything(config, base), env="dev")
    assert found.components() == {f"stack:{role}" for role in STACK_ROLES}
    assert {c.setting for c in found.changes} == {"[environments.dev] context"}
    assert "the CDK app is given other values" in found.changes[0].reason
    assert auto.analysis_lines(found, config.environment("dev"))[0] == (
        "🐳 Stack:    deploy.toml ([environments.dev] context changed) → inv deploy.stack CarRentalApiStack"
    )
    assert detect(config, everything(config, base), env="sandbox").components() == set()
    said = commit(repo, "nothing")
    toml.write_text(toml.read_text().replace("[environments.dev.context]\naudit_retention_days = 30\n\n", ""))
    commit(repo, "dev: the default again")
    assert len(detect(config, everything(config, said), env="dev").changes) == len(STACK_ROLES)


def test_a_live_commit_ahead_of_head_is_counted(repo: Path) -> None:
    config = config_of(repo)
    old = run_git(repo, "rev-parse", "HEAD").strip()
    write(repo, "backend/app/main.py", "app = 'new'\n")
    commit(repo, "backend")
    write(repo, "docs/guide.md", "more\n")
    live = commit(repo, "docs")
    # a checkout at the old commit, the environment two commits on: deploying it would take the backend change back
    result = detect(config, everything(config, live), head=old)
    assert result.components() == {"app"}
    assert result.ahead == dict.fromkeys(components_of(config), 2)
    assert git.commits_ahead(repo, live, old) == 2 and git.commits_ahead(repo, old, live) == 0
    assert git.commits_ahead(repo, live, live) == 0
    # deploy.app and deploy.lambda ask the same of one live image tag or version description
    assert changes.live_ahead(repo, f"{live[:12]}-dirty-{'0' * 12}", old) == (live, 2)
    assert changes.live_ahead(repo, old[:12], live) is None  # live is older: going forward
    assert changes.live_ahead(repo, None, old) is None and changes.live_ahead(repo, "latest", old) is None
    assert changes.live_ahead(repo, "0123456789ab", old) is None  # a commit this clone lacks: cannot tell
    # ... which deploy.app and deploy.lambda say before they go on (deploy.auto refuses it), as a commit on another
    # line of history; not one of HEAD's line
    assert (
        changes.live_elsewhere(repo, "0123456789ab", old)
        == "0123456789ab, a commit that is not in this clone's history"
    )
    assert changes.live_elsewhere(repo, old[:12], live) is None and changes.live_elsewhere(repo, live, old) is None
    assert changes.live_elsewhere(repo, None, old) is None and changes.live_elsewhere(repo, "latest", old) is None
    run_git(repo, "checkout", "-q", "-b", "other", old)
    write(repo, "backend/app/main.py", "app = 'other'\n")
    other = commit(repo, "another line")
    run_git(repo, "checkout", "-q", "-")
    assert changes.live_elsewhere(repo, other[:12], live) == (
        f"{other[:12]}, on another line of history (1 commit(s) HEAD lacks)"
    )
    # with --since the user names the base: nothing is counted
    assert detect(config, everything(config, live), head=old, since=live).ahead == {}
    # a head on another branch is not behind, whatever it lacks
    run_git(repo, "checkout", "-q", "-b", "feature", old)
    write(repo, "lambda/login_handler/util.py", "X = 2\n")
    feature = commit(repo, "feature")
    assert git.commits_ahead(repo, live, feature) == 0
    assert detect(config, everything(config, live), head=feature).ahead == {}


def test_head_may_be_any_commit(repo: Path) -> None:
    config = config_of(repo)
    first = run_git(repo, "rev-parse", "HEAD").strip()
    write(repo, "backend/app/main.py", "app = 2\n")
    second = commit(repo)
    write(repo, "lambda/login_handler/handler.py", "# v2\n")
    commit(repo)
    result = detect(config, everything(config, first), head=second)
    assert result.head == second and result.components() == {"app"}
    with pytest.raises(UsageError, match="names no commit"):
        detect(config, everything(config, first), head="no-such-branch")


def test_unknown_components_are_refused(repo: Path) -> None:
    with pytest.raises(ValueError, match="'stack:database' is not a component"):
        detect(config_of(repo), {"stack:database": None})


def test_changes_module_constants_match_the_repository() -> None:
    assert (REPO / changes.CDK_APP).is_file()
    assert (REPO / changes.LAMBDA_DIR).is_dir()


# -- promotion (promote_from): does the source environment run each component as this checkout has it? ------------


def test_a_component_is_promoted_when_the_source_runs_what_this_checkout_has(repo: Path) -> None:
    """A component is what its paths hold: a later commit that changed only docs, or another component, is still
    what the source environment runs; one that changed the component's own paths is not."""
    config = config_of(repo)
    tested = git.head_sha(repo)
    source = {"app": tested[:12], "lambda:login_handler": tested, "stack:data": None}
    revision = git.current_revision(repo)
    assert auto.unpromoted(config, "dev", source, ["app", "lambda:login_handler"], revision) == {}

    write(repo, "docs/guide.md", "more guide\n")
    write(repo, "lambda/health_handler/handler.py", "def handler(event, context):\n    return {'ok': 1}\n")
    commit(repo, "docs and the other function")
    revision = git.current_revision(repo)
    assert auto.unpromoted(config, "dev", source, ["app", "lambda:login_handler"], revision) == {}
    assert auto.unpromoted(config, "dev", source, ["lambda:health_handler"], revision) == {
        "lambda:health_handler": "dev does not run it"
    }
    assert auto.unpromoted(config, "dev", source, ["stack:data"], revision) == {"stack:data": "dev does not run it"}

    write(repo, "backend/app/main.py", "app = 'new'\n")
    commit(repo, "an app change dev has not had")
    why = auto.unpromoted(config, "dev", source, ["app", "lambda:login_handler"], git.current_revision(repo))
    assert why == {"app": f"dev runs it at {tested[:12]}; changed since: backend/app/main.py"}


def test_uncommitted_changes_and_a_dirty_build_in_the_source_are_never_promoted(repo: Path) -> None:
    config = config_of(repo)
    tested = git.head_sha(repo)
    write(repo, "backend/app/main.py", "app = 'on my laptop'\n")
    revision = git.current_revision(repo, allow_dirty=True)
    why = auto.unpromoted(config, "dev", {"app": tested[:12]}, ["app"], revision)
    assert why == {"app": f"dev runs it at {tested[:12]}; changed since: backend/app/main.py"}
    run_git(repo, "checkout", "--", "backend/app/main.py")
    dirty = f"{tested[:12]}-dirty-0123456789ab"
    why = auto.unpromoted(config, "dev", {"app": dirty}, ["app"], git.current_revision(repo))
    assert why == {"app": f"dev runs a build of it with uncommitted changes ({dirty})"}


def test_a_source_commit_this_clone_lacks_says_to_fetch(repo: Path) -> None:
    with pytest.raises(UsageError, match="cannot tell whether dev runs what this checkout would deploy") as err:
        auto.unpromoted(config_of(repo), "dev", {"app": "ab" * 20}, ["app"], git.current_revision(repo))
    # a complete clone: git refuses --unshallow there; the branch deployed there is what to fetch
    assert err.value.next_step == "fetch the branch deployed there (git fetch origin <branch>), then rerun"
    shallow = repo.parent / "shallow"
    run_git(repo.parent, "clone", "-q", "--depth", "1", f"file://{repo}", str(shallow))
    with pytest.raises(UsageError, match="cannot tell whether dev runs") as err:
        auto.unpromoted(config_of(shallow), "dev", {"app": "ab" * 20}, ["app"], git.current_revision(shallow))
    assert "git fetch --unshallow, or git fetch --deepen=<commits>" in (err.value.next_step or "")


SMOKED = [{"step": "roll-service", "status": "done"}, {"step": "smoke", "status": "done"}]


def _run(
    command: str,
    components: dict[str, str],
    base: dict[str, str | None] | None = None,
    ok: bool = True,
    steps: list[dict[str, Any]] = SMOKED,
) -> Record:
    return Record(
        "id", "dev", "2026-11-29T10:00:00+00:00", "ci", command, "h" * 12, ok, 1.0, components, base or {}, steps
    )


def test_what_the_source_verified_is_each_commit_a_run_that_passed_deployed_there() -> None:
    """Newest first; failed runs, runs without their smoke (--no-smoke), dirty builds and what a later rollback took a
    component off do not count, unless a run after that rollback deployed it again."""
    in_group = [{"step": "parallel", "status": "done", "children": SMOKED}]
    records = [  # newest first
        _run("deploy.lambda login_handler", {"lambda:login_handler": "f" * 12}, steps=SMOKED[:1]),  # --no-smoke
        _run("deploy.auto", {"app": "e" * 12}, steps=in_group),
        _run("rollback app", {"app": "c" * 12}, {"app": "d" * 12}),  # d was found wanting
        _run("deploy.auto", {"app": "d" * 12, "lambda:login_handler": "d" * 12}),
        _run("deploy.auto", {"app": "x" * 12}, ok=False),
        _run("deploy.auto", {"app": "b" * 12 + "-dirty-0123456789ab"}),
        _run("deploy.app", {"app": "c" * 12}),
        _run("rollback app", {"app": "a" * 12}, {"app": "e" * 12}),  # e, before it was deployed again (newest)
    ]
    assert auto.verified_in(records, ["app", "lambda:login_handler"]) == {
        "app": ["e" * 12, "c" * 12, "a" * 12],
        "lambda:login_handler": ["d" * 12],
    }
    assert auto.verified_in(records, ["stack:data"]) == {}


def test_a_component_the_source_ran_before_is_promoted_at_the_newest_such_commit(repo: Path) -> None:
    """dev moved on since it ran what this checkout holds (the release waited for approval): the commit it ran it
    at is found among what it verified; one whose app differs from this checkout's is not."""
    config = config_of(repo)
    first = commit(repo, "released to dev")[:12]
    write(repo, "backend/app/main.py", "app = 'next'\n")
    later = commit(repo, "dev moved on")[:12]
    run_git(repo, "checkout", "-q", first)  # the release, checked out for prod
    revision = git.current_revision(repo)
    assert auto.unpromoted(config, "dev", {"app": later}, ["app"], revision) == {
        "app": f"dev runs it at {later}; changed since: backend/app/main.py"
    }
    assert auto.promoted_earlier(config, {"app": [later, first]}, revision) == {"app": first}
    assert auto.promoted_earlier(config, {"app": [later]}, revision) == {}
    assert auto.promoted_earlier(config, {"app": ["ab" * 6, first]}, revision) == {"app": first}  # one not here


# -- what a requirements file's change changes ------------------------------------------------------------------


def test_requirements_are_read_by_normalised_name_without_hashes_options_or_comments() -> None:
    text = (
        "# pinned by pip-compile\n"
        "--index-url https://pypi.example/simple\n"
        "FastAPI==0.110.0  # the web framework\n"
        "uvicorn[standard] == 0.30.0 \\\n"
        "    --hash=sha256:abc\n"
        "typing_extensions==4.12.2 ; python_version < '3.12'\n"
        "\n"
    )
    assert changes.requirements_of(text) == {
        "fastapi": "==0.110.0",
        "uvicorn": "[standard]==0.30.0",
        "typing-extensions": "==4.12.2;python_version<'3.12'",
    }


def test_requirement_changes_name_each_package_added_removed_or_changed() -> None:
    before = "fastapi==0.110.0\nrequests==2.31.0\nidna==3.7\n"
    after = "fastapi==0.111.0\nhttpx==0.27.0\nidna==3.7\n"
    found = changes.requirement_changes(before, after)
    assert [p.describe() for p in found] == [
        "fastapi 0.110.0 → 0.111.0",
        "httpx==0.27.0 added",
        "requests==2.31.0 removed",
    ]
    assert changes.requirement_changes(before, before) == ()
    assert [p.describe() for p in changes.requirement_changes(None, "numpy==2.1.3\n")] == ["numpy==2.1.3 added"]
    # not a plain pin: shown as written
    assert [p.describe() for p in changes.requirement_changes("a==1\n", "a[x]==1\n")] == ["a ==1 → [x]==1"]


def test_the_requirements_a_commit_changes_are_read_from_what_is_live_to_head(repo: Path) -> None:
    config = config_of(repo)
    write(repo, "backend/requirements.txt", "fastapi==0.110.0\nrequests==2.31.0\n")
    pinned = "".join(f"dep{i}==1.0.{i}\n" for i in range(8))
    write(repo, "lambda/login_handler/requirements.txt", pinned + "pyjwt==2.8.0\n")
    base = commit(repo)
    write(repo, "backend/requirements.txt", "fastapi==0.111.0\nrequests==2.31.0\n")
    run_git(repo, "mv", "lambda/login_handler/requirements.txt", "lambda/login_handler/requirements-prod.txt")
    write(repo, "lambda/login_handler/requirements-prod.txt", pinned + "pyjwt==2.9.0\n")
    write(repo, "backend/app/main.py", "app = 2\n")
    commit(repo)

    found = detect(config, everything(config, base))
    assert {
        path: [p.describe() for p in packages] for path, packages in changes.requirements_changed(repo, found).items()
    } == {
        "backend/requirements.txt": ["fastapi 0.110.0 → 0.111.0"],
        "lambda/login_handler/requirements-prod.txt": ["pyjwt 2.8.0 → 2.9.0"],  # renamed: compared with the old name
    }
    # the work tree, when it was compared (inv diff, --allow-dirty)
    write(repo, "backend/requirements.txt", "fastapi==0.111.0\n")
    dirty = detect(config, everything(config, base), include_uncommitted=True)
    assert [p.describe() for p in changes.requirements_changed(repo, dirty)["backend/requirements.txt"]] == [
        "fastapi 0.110.0 → 0.111.0",
        "requests==2.31.0 removed",
    ]
    # never deployed: the whole file is new, nothing to compare with
    never = detect(config, dict.fromkeys(everything(config, base)))
    assert changes.requirements_changed(repo, never) == {}


def test_the_cdk_apps_requirements_count_for_every_stack_and_are_read_once(
    repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = config_of(repo)
    write(repo, "cdk/requirements.txt", "aws-cdk-lib==2.150.0\nconstructs==10.3.0\n")
    base = commit(repo)
    write(repo, "cdk/requirements.txt", "aws-cdk-lib==2.160.0\nconstructs==10.3.0\n")
    commit(repo)
    found = detect(config, everything(config, base))
    assert {c.component for c in found.changes if c.path == "cdk/requirements.txt"} == {
        f"stack:{role}" for role in STACK_ROLES
    }
    reads: list[tuple[str, tuple[str, ...]]] = []
    files_at = git.files_at

    def counted(root: Path, rev: str, folder: str, suffix: str = "") -> dict[str, bytes]:
        reads.append((rev, (folder,)))
        return files_at(root, rev, folder, suffix)

    monkeypatch.setattr(git, "files_at", counted)
    packages = changes.requirements_changed(repo, found)
    assert {path: [p.describe() for p in found] for path, found in packages.items()} == {
        "cdk/requirements.txt": ["aws-cdk-lib 2.150.0 → 2.160.0"]
    }
    assert [paths for _, paths in reads] == [("cdk/requirements.txt",)] * 2  # as it was and is: once, five stacks
    lines = auto.analysis_lines(found, config.environment("sandbox"), requirements=packages)
    assert [line for line in lines if "📦" in line] == ["             📦 aws-cdk-lib 2.150.0 → 2.160.0"]  # once
    assert lines.index("             📦 aws-cdk-lib 2.150.0 → 2.160.0") == 1  # under the first stack's line


# -- the commits behind the changes ------------------------------------------------------------------------------


def test_the_commits_behind_the_changes_each_name_the_components_they_change_newest_first(repo: Path) -> None:
    """Per component, the commits of its own range touching its changed paths (a rename's old side too); the
    docs-only commit brings nothing live and is not listed. The commits are made within a second: git's order."""
    config = config_of(repo)
    base = run_git(repo, "rev-parse", "HEAD").strip()
    write(repo, "lambda/login_handler/handler.py", "# login v2\n")
    login = commit(repo, "Login: v2")
    write(repo, "README.md", "# docs only\n")
    commit(repo, "Docs: say more")
    app_base = run_git(repo, "rev-parse", "HEAD").strip()  # the app went live here, the functions did not
    run_git(repo, "mv", "backend/app/main.py", "backend/app/server.py")
    write(repo, "lambda/login_handler/handler.py", "# login v3\n")
    both = commit(repo, "Move the server; login v3")
    write(repo, "lambda/health_handler/handler.py", "# health\n")
    health = commit(repo, "Health: more detail")
    live = {**everything(config, base[:12]), "app": app_base[:12]}
    found = detect(config, live)
    listed = commits_behind(repo, found)
    assert [(c.sha, c.subject, c.components) for c in listed] == [
        (health, "Health: more detail", ("lambda:health_handler",)),
        (both, "Move the server; login v3", ("app", "lambda:login_handler")),
        (login, "Login: v2", ("lambda:login_handler",)),
    ]  # the app's range starts after "Login: v2"; the docs commit changed nothing deployable
    assert listed[0].author == "t" and listed[0].to_json()["components"] == ["lambda:health_handler"]
    assert commits_behind(repo, detect(config, everything(config, None))) == []  # never deployed: all of it is new
    assert commits_behind(repo, detect(config, everything(config, health[:12]))) == []  # nothing changed


def test_the_commits_behind_a_path_with_glob_characters_are_those_that_change_it(repo: Path) -> None:
    """A changed path is a path, not a pattern: ``backend/app/[id].py`` is no character class matching ``i.py``, and
    the commits that changed (and reverted) only ``i.py`` bring nothing live."""
    config = config_of(repo)
    write(repo, "backend/app/[id].py", "ID = 1\n")
    write(repo, "backend/app/i.py", "I = 1\n")
    base = commit(repo, "Routes")
    write(repo, "backend/app/i.py", "I = 2\n")
    commit(repo, "I: two")
    write(repo, "backend/app/i.py", "I = 1\n")
    commit(repo, "I: back to one")
    write(repo, "backend/app/[id].py", "ID = 2\n")
    route = commit(repo, "Route by id")
    found = detect(config, everything(config, base[:12]))
    assert [c.path for c in found.for_component("app")] == ["backend/app/[id].py"]
    assert [(c.sha, c.subject) for c in commits_behind(repo, found)] == [(route, "Route by id")]


@pytest.mark.parametrize("setting", ["keep_local_images = 3", 'lambda_runtime_modules = ["yaml"]'])
def test_how_many_old_builds_this_machine_keeps_is_no_change_of_the_image(repo: Path, setting: str) -> None:
    """[build] keep_local_images only says which older builds a build removes from this machine's engine afterwards,
    and lambda_runtime_modules which modules the import check takes a layer to give: the image is built the same, so
    the app is not deployed for it, committed or not."""
    config = config_of(repo)
    toml = repo / "deploy.toml"
    base = run_git(repo, "rev-parse", "HEAD").strip()
    toml.write_text(toml.read_text().replace("[build]\n", f"[build]\n{setting}\n", 1))
    assert changes.scope(config, git.current_revision(repo, allow_dirty=True)).touches == frozenset()
    assert detect(config, everything(config, base), include_uncommitted=True).components() == set()
    commit(repo, "keep fewer builds here")
    result = detect(config, everything(config, base))
    assert result.components() == set() and [c.path for c in result.unassigned()] == ["deploy.toml"]
    # beside a change of how the image is built, the app counts as before
    toml.write_text(toml.read_text().replace(f"{setting}\n", f"{setting}\npull_after_days = 1\n"))
    commit(repo, "and pull the base daily")
    assert detect(config, everything(config, base)).components() == {"app"}


def test_the_commits_behind_many_changed_paths_are_still_those_that_change_them(repo: Path) -> None:
    """More changed paths than a command line is given (git.LOG_PATHS): a docs-only commit, or one of another
    component, is still no commit behind the app's changes."""
    config = config_of(repo)
    base = run_git(repo, "rev-parse", "HEAD").strip()
    for n in range(git.LOG_PATHS + 1):
        write(repo, f"backend/app/assets/a{n}.txt", f"{n}\n")
    assets = commit(repo, "Assets")
    write(repo, "README.md", "# docs only\n")
    commit(repo, "Docs: say more")
    write(repo, "lambda/login_handler/handler.py", "# login v2\n")
    login = commit(repo, "Login: v2")
    found = detect(config, {"app": base[:12], "lambda:login_handler": base[:12]})
    assert len(found.for_component("app")) > git.LOG_PATHS
    assert [(c.sha, c.components) for c in commits_behind(repo, found)] == [
        (login, ("lambda:login_handler",)),
        (assets, ("app",)),
    ]


def test_an_environment_s_own_base_image_counts_for_the_app_there(repo: Path) -> None:
    """[environments.NAME] base_image (the image is built FROM it there): a new one rebuilds the app in that
    environment, not in another; a change of the environment's other settings is the toolkit's."""
    config = config_of(repo)
    toml = repo / "deploy.toml"
    base = run_git(repo, "rev-parse", "HEAD").strip()
    old = 'base_image = "deploykit/python-base:3.11-bookworm"'
    assert old in toml.read_text()
    toml.write_text(toml.read_text().replace(old, 'base_image = "deploykit/python-base:3.11-bookworm-2"', 1))
    commit(repo, "sandbox: a new base")
    found = detect(config, everything(config, base), env="sandbox")
    assert found.components() == {"app"}
    (change,) = found.for_component("app")
    assert change.path == "deploy.toml" and change.setting == "[environments.sandbox] base_image"
    assert "the image is built on another base" in change.reason
    assert auto.analysis_lines(found, config.environment("sandbox"))[0] == (
        "📱 App code: deploy.toml ([environments.sandbox] base_image changed) → inv deploy.app"
    )
    assert detect(config, everything(config, base), env="dev").components() == set()  # dev's base is [build]'s
    assert detect(config, everything(config, base)).components() == {"app"}  # unnamed: any environment's counts
    # a pattern's base_image counts for the environments it makes
    toml.write_text(
        toml.read_text() + '\n[environments."dev-*"]\nregion = "eu-west-1"\nbase_image = "python:3.11-bookworm"\n'
    )
    commit(repo, "dev-*: environments of their own")
    middle = run_git(repo, "rev-parse", "HEAD").strip()
    toml.write_text(toml.read_text().replace('"python:3.11-bookworm"\n', '"python:3.12-bookworm"\n'))
    commit(repo, "dev-*: a new base")
    assert detect(config, everything(config, middle), env="dev-alice").components() == {"app"}
    assert detect(config, everything(config, middle), env="sandbox").components() == set()
    # another setting of the environment: no change of the image
    toml.write_text(toml.read_text().replace("poll_interval = 0.5\n", "poll_interval = 1\n", 1))
    assert detect(config, everything(config, middle), env="sandbox", include_uncommitted=True).components() == set()


def test_what_an_environment_s_image_is_not_built_on_deploys_nothing_there(repo: Path) -> None:
    """The sandbox builds on the local base image (its own base_image), dev on [build]'s: a new [build] base_image
    rebuilds dev's app alone, a new [build.base] spec (how inv base-image builds the local one) the sandbox's alone;
    unnamed, any environment's counts."""
    config = config_of(repo)
    toml = repo / "deploy.toml"
    base = run_git(repo, "rev-parse", "HEAD").strip()
    toml.write_text(toml.read_text().replace('base_image = "python:3.11-slim"', 'base_image = "python:3.12-slim"', 1))
    commit(repo, "dev: a new base")
    assert detect(config, everything(config, base), env="sandbox").components() == set()
    (change,) = detect(config, everything(config, base), env="dev").for_component("app")
    assert change.setting == "[build] base_image" and "dev's image is built on it" in change.reason
    assert detect(config, everything(config, base)).components() == {"app"}
    middle = run_git(repo, "rev-parse", "HEAD").strip()
    toml.write_text(toml.read_text().replace("[build.base]\n", "[build.base]\nmax_age_days = 3\n", 1))
    commit(repo, "the local base rebuilt every three days")
    assert detect(config, everything(config, middle), env="dev").components() == set()
    (change,) = detect(config, everything(config, middle), env="sandbox").for_component("app")
    assert change.setting == "[build.base]"
    assert detect(config, everything(config, middle)).components() == {"app"}
    # the rest of [build] builds every environment's image otherwise
    toml.write_text(toml.read_text().replace('context = "backend"', 'context = "backend"\ndockerfile = "Dockerfile.x"'))
    assert detect(config, everything(config, middle), env="dev", include_uncommitted=True).components() == {"app"}


def test_a_pattern_s_base_image_does_not_count_for_an_environment_with_a_table_of_its_own(repo: Path) -> None:
    """An environment's own table is the whole of it (the pattern that would make it is not read): a new base_image
    of the pattern builds nothing of it, as its size does not (the app was deployed there again, said built on
    another base)."""
    config = config_of(repo)
    toml = repo / "deploy.toml"
    pattern = (
        '\n[environments."de*"]\nregion = "eu-west-1"\ncluster = "c-{env}"\nservice = "s-{env}"\n'
        'container = "backend"\nrepository = "r-{env}"\nbase_image = "python:3.11"\n'
        '[environments."de*".stacks]\n' + "".join(f'{role} = "CarRental-{{env}}-{role}"\n' for role in STACK_ROLES)
    )
    toml.write_text(toml.read_text() + pattern)
    base = commit(repo, "de*: environments of their own")
    toml.write_text(toml.read_text().replace('base_image = "python:3.11"\n', 'base_image = "python:3.12"\n'))
    commit(repo, "de*: a new base")
    assert config_of(repo).environment("dev").base_image is None  # dev's own table: [build]'s base
    assert detect(config, everything(config, base), env="dev").components() == set()
    assert detect(config, everything(config, base), env="dex").components() == {"app"}  # one the pattern makes


def test_a_path_is_matched_against_the_rules_once_per_command() -> None:
    """An analysis matches a path again for each live commit it diffs from: a helper's 20,000 paths from 101 live
    commits under 200 globs made 7.8 million rule matches (20 s). Each path's answer is kept."""
    calls: list[str] = []

    @dataclasses.dataclass(frozen=True)
    class Counted(ChangeRule):
        def match(self, path: str, roles: Collection[str] = STACK_ROLES) -> tuple[str, str] | None:
            calls.append(path)
            return super().match(path, roles)

    rules = ChangeRules((Counted(paths=("docs/**",), to="none"), Counted(paths=("backend/**",), to="app")))
    for _ in range(3):
        assert rules.match("backend/app/main.py") == (rules.rules[1], "backend/**", "app")
        assert rules.match("README.md") is None
    assert calls == ["backend/app/main.py", "backend/app/main.py", "README.md", "README.md"]
    assert rules == ChangeRules(rules.rules) and hash(rules) == hash(ChangeRules(rules.rules))  # kept apart


def test_git_processes_of_an_analysis_run_side_by_side_and_the_first_failure_is_raised() -> None:
    """One git log per changed component, one git diff per distinct live commit: one after the other, a helper's
    100 functions over 10,000 commits took 6.3 s of commits_behind, 3.4 s side by side on two cores."""
    both = threading.Barrier(2, timeout=5)  # each call waits for the other: one after the other, it would time out

    def call(answer: str) -> str:
        both.wait()
        return answer

    side_by_side = partial(at_once, width=changes.GIT_PROCESSES)  # as the analysis runs them
    assert side_by_side({"a": lambda: call("A"), "b": lambda: call("B")}) == {"a": "A", "b": "B"}

    def fails(message: str) -> str:
        raise UsageError(message)

    with pytest.raises(UsageError, match="first"):
        side_by_side({"ok": lambda: "fine", "x": lambda: fails("first"), "y": lambda: fails("second")})
