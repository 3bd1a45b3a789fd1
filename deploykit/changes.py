"""What changed for each deployable component since the commit live for it, through deploy.toml's [changes] rules.

The deployable components of this repository are ``app`` (the backend image and its service), one
``lambda:<fn>`` per folder of ``lambda/`` holding a ``handler.py``, and ``stack:<role>`` for the five stacks
(registry, data, auth, fargate, api). Each may be live at a different commit, so each is compared with its own
base: the commit live for it (an image tag ``<sha12>``, or ``<sha12>-dirty-<hash>`` whose base commit counts),
or ``since`` when given. Git is asked once per distinct base.

Each changed path is classified by the first [changes] rule whose glob matches it (see
:class:`deploykit.config.ChangeRule`). ``stacks:shared`` (a CDK module that is not a stack's own) is resolved by
reading the imports of ``cdk/``'s Python files with :mod:`ast`: the path belongs to every stack whose module
imports it, transitively, in the base or the head commit. A path no rule matches, or a rule maps to ``none``, is
kept with kind ``none`` and the reason: nothing is dropped silently.

A rename counts for both its old and its new path (moving a file out of ``lambda/x`` changes ``lambda:x``);
a deletion counts like any change.
"""

from __future__ import annotations

import ast
import contextlib
import dataclasses
import hashlib
import json
import os
import re
import tempfile
import threading
import tomllib
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any, Literal, NamedTuple, NoReturn

from deploykit import cachedir, git, packaging
from deploykit.aws import at_once
from deploykit.config import (
    DEFAULT_DESIRED_COUNT,
    DEFAULT_TASK_CPU,
    DEFAULT_TASK_MEMORY,
    NO_FUNCTIONS,
    OWN_ROLE,
    SIZE_KEYS,
    STACK_ROLES,
    BuildConfig,
    Config,
    pattern_matches,
)
from deploykit.errors import UsageError

Kind = Literal["app", "lambda", "stack", "none"]

LAMBDA_DIR = "lambda"  # one folder per function (deploykit.packaging)
CDK_DIR = "cdk"  # the CDK app; on sys.path when it runs, so its modules are named from here (stacks.common.nag)
CDK_APP = f"{CDK_DIR}/app.py"  # the entry point: it builds every stack
HANDLER = "handler.py"

_LIVE_TAG = re.compile(f"^(?P<sha>[0-9a-f]{{7,{git.SHA_DIGITS}}})(?:-dirty-(?P<dirty>[0-9a-f]+))?$")
NOT_DEPLOYED = "not deployed yet"  # the reason of a component never deployed (no live SHA)
LAMBDA_ARCHITECTURE = "lambda_architecture"  # the key of deploy.toml's [build] that the functions' deploys follow
LAMBDA_RUNTIME = "lambda_runtime"  # and the one naming their runtime, which they follow too
# the key of an environment's table that names the SNS topics of its stacks' events: every stack deploys again
NOTIFICATION_ARNS = "notification_arns"
# the table of an environment that gives the CDK app values of the team's (its context): every stack deploys again
CONTEXT = "context"
PLATFORM = "platform"  # the key of deploy.toml's [build] that the image and the Fargate stack's tasks follow
KEEP_LOCAL_IMAGES = "keep_local_images"  # the key of deploy.toml's [build] for this machine's old builds: no input
# the key of deploy.toml's [build] naming the modules a layer gives the functions: read by a check, no input either
LAMBDA_RUNTIME_MODULES = "lambda_runtime_modules"


# said of a path a rule gives a component this checkout has not (a lambda/ folder with no handler.py: a function
# removed, or a folder of shared code)
NOT_DEPLOYABLE = "is not a deployable component of this checkout"
_NOT_DEPLOYABLE = re.compile(rf", but (?P<component>\S+) {NOT_DEPLOYABLE}$")


class Target(NamedTuple):
    """Where one path belongs: a component (None for nothing deployable), its kind, and why."""

    component: str | None
    kind: Kind
    reason: str


@dataclass(frozen=True)
class Change:
    """One changed path as it affects one component.

    ``status`` is git's: A (added), M (modified), D (deleted), T (type changed) or R (renamed; ``path`` is the new
    path and ``old_path`` the old one, and the component is the one either side belongs to). A component that was
    never deployed has one Change with path "" (status A); one whose live build was made from a dirty tree has one
    with path "" (status M).
    """

    path: str
    component: str | None
    kind: Kind
    status: str
    reason: str
    old_path: str | None = None
    # the setting of deploy.toml whose change made ``path`` (deploy.toml) count for the component: "[build]" (how
    # the image is built), "[build] platform", "[build] lambda_architecture", "[build] lambda_runtime",
    # "[environments.NAME] base_image",
    # "[environments.NAME] desired_count, task_cpu" (the service's size); None for a change of the component's own
    # files
    setting: str | None = None
    # ``path`` is a submodule's folder (git.PathChange.submodule): classified as a file under it would be
    submodule: bool = False


@dataclass(frozen=True)
class ChangeSet:
    """The changes of each component between its base and ``head``."""

    base: dict[str, str | None]  # component → the commit compared with (full SHA); None: never deployed
    head: str  # the full SHA of the head commit
    changes: tuple[Change, ...]
    dirty: frozenset[str] = frozenset()  # components whose live build had uncommitted changes
    uncommitted: bool = False  # head's uncommitted changes (untracked files included) were counted too
    since: str | None = None  # the commit --since named: every base is that commit, not what is live
    # component → how many commits its live commit is ahead of head (head is behind it: deploying head takes those
    # commits back); without --since only
    ahead: dict[str, int] = field(default_factory=dict)
    # component → how many commits its live commit has that head lacks, when that commit is on another line of
    # history (neither an ancestor of head nor a descendant: another branch deployed): deploying head replaces them
    apart: dict[str, int] = field(default_factory=dict)
    # changed components held back (deploy.auto --only/--skip): their changes are left out of ``changes``, and they
    # are not live at head (not carried there)
    held: frozenset[str] = frozenset()

    def components(self) -> set[str]:
        """The components with at least one change (kind other than none)."""
        return {c.component for c in self.changes if c.kind != "none" and c.component is not None}

    def for_component(self, component: str) -> list[Change]:
        return [c for c in self.changes if c.component == component]

    def holding(self, held: Collection[str]) -> ChangeSet:
        """This change set with the changes of ``held`` components left out, and those that changed kept in
        :attr:`held`."""
        back = self.components() & set(held)
        kept = tuple(c for c in self.changes if c.component not in back)
        return replace(self, changes=kept, held=self.held | back)

    def unassigned(self) -> list[Change]:
        """The changed paths that belong to no component (docs, tests, the toolkit, paths no rule matches)."""
        return [c for c in self.changes if c.kind == "none"]

    def to_dict(self) -> dict[str, Any]:
        return {
            "base": dict(self.base),
            "head": self.head,
            "dirty": sorted(self.dirty),
            "uncommitted": self.uncommitted,
            "components": sorted(self.components()),
            "changes": [asdict(c) for c in self.changes],
        }


# -- components --------------------------------------------------------------------------------------------------


def components_of(config: Config) -> list[str]:
    """Every deployable component of the checkout: app, lambda:<fn> for each lambda/<fn>/handler.py, the stacks."""
    functions = packaging.function_folders(config.root / LAMBDA_DIR)
    return ["app", *(f"lambda:{fn}" for fn in functions), *(f"stack:{role}" for role in config.stack_roles)]


def kind_of(component: str, roles: Collection[str] | None = None) -> Kind:
    """app → app, lambda:x → lambda, stack:x → stack; ValueError for anything else. ``roles``: the stack roles there
    are (:attr:`Config.stack_roles`); None: any a role can be."""
    if component == "app":
        return "app"
    prefix, _, name = component.partition(":")
    if prefix == "lambda" and name:
        return "lambda"
    if prefix == "stack" and (name in roles if roles is not None else name in STACK_ROLES or OWN_ROLE.match(name)):
        return "stack"
    shown = "|".join(roles if roles is not None else (*STACK_ROLES, "..."))
    raise ValueError(f"{component!r} is not a component (app, lambda:<fn> or stack:<{shown}>)")


# -- which stacks use which CDK module ---------------------------------------------------------------------------


@dataclass(frozen=True)
class StackUsage:
    """For each Python file of cdk/, the stack roles whose module imports it (transitively), with the chain."""

    # path → role → the import chain from the role's stack module to the path (both included)
    users: dict[str, dict[str, tuple[str, ...]]] = field(default_factory=dict)

    def __or__(self, other: StackUsage) -> StackUsage:
        merged = {path: dict(roles) for path, roles in self.users.items()}
        for path, roles in other.users.items():
            for role, chain in roles.items():
                merged.setdefault(path, {}).setdefault(role, chain)
        return StackUsage(merged)


# CPython 3.11's ast.parse is not safe from two threads at once: its AST constructor keeps one recursion count per
# interpreter, and two parses under way together fail with "SystemError: AST constructor recursion depth mismatch"
# (python/cpython#106905). inv envs finds each environment's changes in threads of its own: one parse at a time.
_PARSING = threading.Lock()


class ImportsCache:
    """The module names each file of cdk/ imports (:func:`_imported_modules`), by its path and content, kept in the
    cache (:func:`deploykit.cachedir.cache_root`, ``cdk-imports.json``): a file is parsed once, where deploy.auto
    parsed each file of cdk/ in two commits on every run whose live commits differ by a CDK module (about 0.1 s a
    commit, of a run of about 1.3 s that finds nothing to deploy). None for a file that does not parse. Safe from
    threads (inv envs). The file is replaced whole, with what it holds when it is written merged in (each name is
    named by its file's content, so any two agree): what another command wrote since this one read it is kept."""

    FILE = "cdk-imports.json"
    VERSION = 1
    LIMIT = 2000  # names kept at most (a file of about 200 KB, read in a few ms): past it, the cache starts again

    def __init__(self, folder: Path | None) -> None:
        self.path = None if folder is None else folder / self.FILE
        self._known: dict[str, list[str] | None] | None = None
        self._added = False
        self._guard = threading.Lock()

    @staticmethod
    def key(path: str, source: bytes) -> str:
        return f"{hashlib.sha256(source).hexdigest()}:{path}"

    def imported(self, path: str, source: bytes) -> set[str] | None:
        """What ``path``, holding ``source``, imports: from the cache, else parsed (and kept)."""
        key = self.key(path, source)
        with self._guard:
            known = self._load()
            if key in known:
                found = known[key]
                return None if found is None else set(found)
        try:
            with _PARSING:
                tree = ast.parse(source, filename=path)
        except (SyntaxError, ValueError):
            parsed: set[str] | None = None
        else:
            parsed = _imported_modules(_module_name(path), path.endswith("/__init__.py"), tree)
        with self._guard:
            self._load()[key] = None if parsed is None else sorted(parsed)
            self._added = True
        return parsed

    def save(self) -> None:
        """Write what was parsed since the cache was read (never a failure: an unwritable cache is passed over)."""
        with self._guard:
            if not self._added or self.path is None or self._known is None:
                return
            known = {**self._read(), **self._known}  # another command's, written since this one read the file
            if len(known) > self.LIMIT:
                known = self._known if len(self._known) <= self.LIMIT else {}
            written: str | None = None
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                with tempfile.NamedTemporaryFile("w", dir=self.path.parent, delete=False, suffix=".tmp") as out:
                    written = out.name
                    json.dump({"version": self.VERSION, "imports": known}, out)
                os.replace(written, self.path)
                self._added = False
            except OSError:
                if written is not None:
                    with contextlib.suppress(OSError):
                        os.unlink(written)

    def _load(self) -> dict[str, list[str] | None]:
        if self._known is None:
            self._known = self._read()
        return self._known

    def _read(self) -> dict[str, list[str] | None]:
        """What the file holds now; {} when there is none yet, or it is unreadable (made again)."""
        if self.path is not None:
            try:
                kept = json.loads(self.path.read_text())
                if kept.get("version") == self.VERSION and isinstance(kept.get("imports"), dict):
                    return dict(kept["imports"])
            except (OSError, ValueError, AttributeError):
                pass
        return {}


_IMPORTS: dict[Path | None, ImportsCache] = {}  # the process's, by the cache's place (read at each use)
_MAKING = threading.Lock()


def imports_cache() -> ImportsCache:
    """The process's :class:`ImportsCache` of the cache's place now."""
    root = cachedir.cache_root()
    with _MAKING:
        return _IMPORTS.setdefault(root, ImportsCache(root))


def stack_usage(config: Config, files: Mapping[str, bytes], cache: ImportsCache | None = None) -> StackUsage:
    """Read the imports of ``files`` (path under cdk/ → Python source); the stack modules are the files the rules
    map to ``stack:<role>``. ``cache``: where each file's imports are kept (default: the process's)."""
    cache = imports_cache() if cache is None else cache
    modules = {_module_name(path): path for path in files}
    imports: dict[str, set[str]] = {}
    for path, source in files.items():
        imported = cache.imported(path, source)
        if imported is None:
            imports[path] = set(files) - {path}  # cannot tell: assume it uses everything
            continue
        imports[path] = {modules[m] for m in imported if m in modules and modules[m] != path}
    cache.save()
    users: dict[str, dict[str, tuple[str, ...]]] = {}
    stack_modules: dict[str, str] = {}  # path → role
    for path in sorted(files):
        found = config.changes.match(path, config.stack_roles)
        if found and found[2].startswith("stack:"):
            stack_modules[path] = found[2].partition(":")[2]
    for path, role in stack_modules.items():
        for reached, chain in _reached(path, imports).items():
            users.setdefault(reached, {}).setdefault(role, chain)
    if CDK_APP in files:  # what the app itself imports (tags, flags: besides the stack modules) builds every stack
        for reached, chain in _reached(CDK_APP, imports, stop=stack_modules.keys()).items():
            if reached != CDK_APP:
                for role in config.stack_roles:
                    users.setdefault(reached, {}).setdefault(role, chain)
    return StackUsage(users)


def _reached(start: str, imports: Mapping[str, set[str]], stop: Collection[str] = ()) -> dict[str, tuple[str, ...]]:
    """Each module ``start`` imports, transitively (the modules of ``stop`` neither counted nor followed), with the
    chain of imports to it; ``start`` included."""
    chains: dict[str, tuple[str, ...]] = {start: (start,)}
    queue = [start]
    while queue:
        current = queue.pop(0)
        for dependency in sorted(imports.get(current, ())):
            if dependency not in chains and dependency not in stop:
                chains[dependency] = (*chains[current], dependency)
                queue.append(dependency)
    return chains


def stack_usage_at(config: Config, rev: str) -> StackUsage:
    """:func:`stack_usage` of cdk/ as it is in commit ``rev``."""
    return stack_usage(config, git.files_at(config.root, rev, CDK_DIR, ".py"))


def stack_usage_in_worktree(config: Config) -> StackUsage:
    """:func:`stack_usage` of cdk/ as it is on disk: the modules git tracks or would track there (a folder it ignores,
    a virtual environment as cdk/venv, holds none of the app's: reading its thousands took a minute, then seconds)."""
    files = {}
    for relative in git.worktree_files(config.root, CDK_DIR) if (config.root / CDK_DIR).is_dir() else ():
        if not relative.endswith(".py") or any(p.startswith(".") or p == "__pycache__" for p in relative.split("/")):
            continue
        try:  # a link to nothing, or a folder named x.py: no module to read
            files[relative] = (config.root / relative).read_bytes()
        except OSError:
            continue
    return stack_usage(config, files)


def _module_name(path: str) -> str:
    """cdk/stacks/common/nag.py → stacks.common.nag; cdk/stacks/__init__.py → stacks."""
    relative = path[len(CDK_DIR) + 1 :] if path.startswith(f"{CDK_DIR}/") else path
    parts = relative.removesuffix(".py").split("/")
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _prefixes(module: str) -> list[str]:
    """a.b.c → a, a.b, a.b.c: importing a submodule imports its packages."""
    parts = module.split(".")
    return [".".join(parts[: i + 1]) for i in range(len(parts))]


def _imported_modules(module: str, is_package: bool, tree: ast.AST) -> set[str]:
    """Every module name an import statement of ``tree`` may load (names that are not modules included)."""
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                found.update(_prefixes(alias.name))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                package = (module if is_package else module.rpartition(".")[0]).split(".")
                package = [p for p in package if p]
                if node.level - 1 > len(package):
                    continue
                parts = package[: len(package) - (node.level - 1)]
                base = ".".join([*parts, node.module] if node.module else parts)
            else:
                base = node.module or ""
            if base:
                found.update(_prefixes(base))
            for alias in node.names:
                if alias.name != "*":
                    found.add(f"{base}.{alias.name}" if base else alias.name)
    return found


# -- classifying one path ----------------------------------------------------------------------------------------


# the name of "a file" in a submodule's folder, which a rule's glob is matched against for the folder: a * or ** of
# the glob matches it, no literal part does (no path git knows holds a NUL), so backend/** and lambda/{fn}/** match
# the submodule backend or lambda/x, and backend/*.md or backend/tests/** do not match the submodule backend
_ANY_FILE = "\0"


def classify(
    config: Config, path: str, *, usage: StackUsage | None = None, submodule: bool = False, removed: bool = False
) -> tuple[Target, ...]:
    """Where ``path`` belongs, by the first matching rule: one Target, or one per stack for shared CDK code.

    ``submodule``: ``path`` is a submodule's folder, whose files git's diff does not name: it belongs where the
    first rule matching any file under it puts that file (``backend/**`` for the submodule ``backend``); when no rule
    puts any file under it anywhere deployable (the submodule ``lambda``, whose ``lambda/{fn}/**`` needs a function's
    folder), where the rules put each file it holds in the work tree, as if every one changed (each function of it).
    ``removed``: the submodule is gone from the commit compared with (git's status D, or the old path of a rename):
    said so when it holds no file here, not as one to check out.

    Pure but for CDK modules: a ``stacks:shared`` path, or a stack module that other stacks import, needs the
    import graph, read from the work tree unless ``usage`` is given.
    """
    if submodule:
        inside = classify(config, f"{path}/{_ANY_FILE}", usage=usage)
        if any(t.kind != "none" for t in inside):
            return tuple(t._replace(reason=f"{t.reason} (a submodule: its folder's files)") for t in inside)
        return _submodule_files(config, path, usage, inside[0], removed)
    found = config.changes.match(path, config.stack_roles)
    if found is None:
        return (Target(None, "none", "no rule"),)
    _rule, glob, target = found
    why = f'rule "{glob}" → {target}'
    if target == "none":
        return (Target(None, "none", why),)
    if target == "app":
        return (Target("app", "app", why),)
    if target.startswith("lambda:"):
        return (Target(target, "lambda", why),)
    if target == "stacks:all":
        return tuple(Target(f"stack:{role}", "stack", f"{why}: every stack") for role in config.stack_roles)
    if target.startswith("stack:"):
        own = Target(target, "stack", why)
        if not _is_cdk_module(path):
            return (own,)
        users = _users(config, path, usage)
        return (own, *(_used_by(role, chain, why) for role, chain in users.items() if f"stack:{role}" != target))
    # stacks:shared
    every = config.stack_roles
    if not path.endswith(".py"):
        return tuple(Target(f"stack:{r}", "stack", f"{why}: not a Python module, so every stack") for r in every)
    if path == CDK_APP:
        return tuple(Target(f"stack:{r}", "stack", f"{why}: the CDK app builds every stack") for r in every)
    users = _users(config, path, usage)
    if not users:
        return (Target(None, "none", f"{why}: no stack imports it"),)
    return tuple(_used_by(role, users[role], why) for role in config.stack_roles if role in users)


def _submodule_files(
    config: Config, path: str, usage: StackUsage | None, folder: Target, removed: bool
) -> tuple[Target, ...]:
    """Where the files the submodule at ``path`` holds in the work tree belong, as if each changed: one Target for
    each component they go to (the first file's rule); ``folder`` (what the folder as a whole is, nothing) when none
    goes anywhere deployable, said so when the submodule holds no file here (``removed``, or not checked out)."""
    found: dict[str | None, Target] = {}
    held = git.worktree_files(config.root, path)
    for file in held:
        for t in classify(config, file, usage=usage):
            if t.kind != "none" and t.component not in found:
                found[t.component] = t._replace(reason=f"{t.reason} (a submodule holding {file}: its every file)")
    if found:
        return tuple(found.values())
    if not held and removed:
        why = "removed here, so it holds nothing to deploy"
        # a folder whose folders the rules make functions (lambda/, its folder f a function f): what it held stays
        # live until its stack goes
        if any(t.kind == "lambda" for t in classify(config, f"{path}/f/{_ANY_FILE}", usage=usage)):
            why += ": a function it held stays until the stack that holds it is deployed without it"
        return (folder._replace(reason=f"{folder.reason}; {why}"),)
    if not held:
        why = f"no file of it is checked out here, so what it changes is not known: git submodule update --init {path}"
        return (folder._replace(reason=f"{folder.reason}; {why}"),)
    return (folder._replace(reason=f"{folder.reason} (a submodule: no file it holds is deployed)"),)


def _is_cdk_module(path: str) -> bool:
    return path.startswith(f"{CDK_DIR}/") and path.endswith(".py")


def _users(config: Config, path: str, usage: StackUsage | None) -> dict[str, tuple[str, ...]]:
    if usage is None:
        usage = stack_usage_in_worktree(config)
    return usage.users.get(path, {})


def _used_by(role: str, chain: tuple[str, ...], why: str) -> Target:
    if chain[0] == CDK_APP:
        return Target(
            f"stack:{role}", "stack", f"{why}: imported by the CDK app, which builds every stack ({' → '.join(chain)})"
        )
    return Target(f"stack:{role}", "stack", f"{why}: imported by the {role} stack ({' → '.join(chain)})")


# -- live SHAs ---------------------------------------------------------------------------------------------------


def parse_live(component: str, live: str) -> tuple[str, bool]:
    """A live image tag or SHA → (its commit, whether the build was dirty): ``<sha>`` or ``<sha>-dirty-<hash>``."""
    found = _LIVE_TAG.match(live.strip().lower())
    if not found:
        raise UsageError(
            f"{component} is live at {live!r}, which is neither a commit SHA nor an image tag <sha12>[-dirty-<hash>]",
            next_step="pass --since SHA to compare with a commit of your choice",
        )
    return found["sha"], found["dirty"] is not None


def live_ahead(root: Path, live: str | None, head: str) -> tuple[str, int] | None:
    """(the live commit, how many commits it is ahead of ``head``) when ``head`` is behind it, for a live SHA or
    image tag; None when it is not (the same, older, another branch) or cannot be told (None, not a tag, a commit
    this clone does not have)."""
    found = _LIVE_TAG.match((live or "").strip().lower())
    sha = git.resolve_commit(root, found["sha"]) if found else None
    ahead = git.commits_ahead(root, sha, head) if sha else 0
    return (sha, ahead) if sha and ahead else None


def live_elsewhere(root: Path, live: str | None, head: str) -> str | None:
    """What to say of ``live`` (a live SHA or image tag) that is neither ``head``'s commit nor one of its line of
    history: a commit this clone does not have, or one on another line (commits ``head`` lacks, another branch's).
    None when it is on ``head``'s line (before or after it), or names no commit."""
    found = _LIVE_TAG.match((live or "").strip().lower())
    if not found:
        return None
    sha = git.resolve_commit(root, found["sha"])
    if sha is None:
        return f"{found['sha']}, a commit that is not in this clone's history"
    apart = _apart(root, sha, head)
    return f"{sha[: git.SHORT_SHA]}, on another line of history ({apart} commit(s) HEAD lacks)" if apart else None


def _resolve_live(root: Path, component: str, sha: str, full: str | None) -> str:
    """``full``, the commit live ``sha`` resolved to (None: none): refused when it is not in this clone's history."""
    if full is not None:
        return full
    shallow = git.is_shallow(root)
    raise UsageError(
        f"{component} is live at {sha}, a commit that is not in this clone's history"
        + (" (this clone is shallow)" if shallow else ""),
        next_step=(
            f"{fetch_more(shallow, 'it was deployed from')}, or pass --since SHA to compare with a commit you "
            "have; a commit never pushed is for whoever deployed it (inv history names them) to push "
            "(require_pushed = true in deploy.toml keeps it from happening); one a rebase or a force-push rewrote is "
            "in no clone: --since names where to start"
        ),
    )


def fetch_more(shallow: bool, branch: str) -> str:
    """How to get a commit this clone lacks: more of the history of a shallow clone (``git fetch --unshallow``
    refuses a complete one), the branch it is on otherwise."""
    if shallow:
        return "fetch more history (git fetch --unshallow, or git fetch --deepen=<commits>)"
    return f"fetch the branch {branch} (git fetch origin <branch>)"


# -- the commits behind the changes ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ChangedBy:
    """A commit that brings changes of ``components`` (what a deploy of them takes live)."""

    sha: str
    author: str
    when: str  # ISO 8601, the author's time in UTC
    subject: str
    components: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "components": list(self.components)}


def as_taken(commits: Sequence[ChangedBy]) -> tuple[tuple[str, str, str], ...]:
    """The commits as a plan keeps those it takes live (:attr:`deploykit.plan.Plan.commits`): SHA, author, subject."""
    return tuple((c.sha, c.author, c.subject) for c in commits)


# git processes run side by side (each thread waits on its own): a change analysis runs one per changed component or
# per distinct live commit, each walking the range (a helper's 100 functions, 10,000 commits: 101 logs, 7.6 s)
GIT_PROCESSES = min(8, max(2, os.cpu_count() or 2))


def commits_behind(root: Path, found: ChangeSet) -> list[ChangedBy]:
    """The commits behind ``found``'s changes, newest first: for each changed component with a base, the commits of
    base..head that touch its changed paths (both sides of a rename), each with every component it brings changes
    of. Left out: components never deployed (everything of them is new) and changes of the work tree (no commit)."""
    by_sha: dict[str, tuple[git.Commit, set[str]]] = {}
    bases: list[str] = []
    logs: dict[str, Callable[[], list[git.Commit]]] = {}
    for component in sorted(found.components()):
        base = found.base.get(component)
        paths = {p for c in found.for_component(component) for p in (c.path, c.old_path) if p}
        if not base or not paths or base == found.head:
            continue
        bases.append(base)
        logs[component] = partial(git.log, root, base, found.head, sorted(paths))
    for component, commits in at_once(logs, width=GIT_PROCESSES).items():
        for commit in commits:
            by_sha.setdefault(commit.sha, (commit, set()))[1].add(component)
    if not by_sha:
        return []
    place = git.newest_first(root, found.head, bases)  # one order for the commits of every component's range
    ordered = sorted(by_sha.values(), key=lambda pair: (place.get(pair[0].sha, len(place)), -pair[0].when.timestamp()))
    return [
        ChangedBy(c.sha, c.author, c.when.isoformat(timespec="seconds"), c.subject, tuple(sorted(components)))
        for c, components in ordered
    ]


# -- detecting ---------------------------------------------------------------------------------------------------


def _order(change: Change) -> tuple[bool, str, str, str, str]:
    """How a change set lists its changes: by component (those that deploy nothing last), then path."""
    return change.kind == "none", change.component or "", change.path, change.old_path or "", change.status


def with_notes(found: ChangeSet, notes: Mapping[str, str]) -> ChangeSet:
    """``found`` with each component of ``notes`` (component → why) counted as changed, as a change of no path
    (status M), unless a path of it changed already."""
    changed = found.components()
    added = [Change("", c, kind_of(c), "M", why) for c, why in sorted(notes.items()) if c not in changed]
    if not added:
        return found
    return dataclasses.replace(found, changes=tuple(sorted((*found.changes, *added), key=_order)))


def check_since(root: Path, since: str) -> str:
    """The full SHA of the commit ``--since`` names in the clone at ``root``; UsageError when it names none (checked
    before the environment is read)."""
    return git.resolve_commits(root, [since])[since] or _no_such_since(root, since)


def _no_such_since(root: Path, since: str) -> NoReturn:
    if git.is_ambiguous(root, since):
        raise UsageError(
            f"--since {since} names more than one commit of this clone",
            next_step="give more of its digits (git log --oneline --abbrev=12 shows them)",
        )
    raise UsageError(
        f"--since {since}: no such commit in this clone's history",
        next_step=f"pass a commit you have (git log --oneline), or {fetch_more(git.is_shallow(root), 'it is on')}",
    )


def detect(
    config: Config,
    live: Mapping[str, str | None],
    *,
    head: str = "HEAD",
    since: str | None = None,
    include_uncommitted: bool = False,
    worktree_tags: Mapping[str, str] | None = None,
    env: str | None = None,
) -> ChangeSet:
    """The changes of each component of ``live`` (component → its live SHA or image tag, None: never deployed).

    Each component is compared from its live commit (``since`` instead, when given) to ``head``, keeping the
    changes that belong to it; paths that belong to no component are kept once, with kind none. A component never
    deployed, or whose live build was dirty, counts as changed (``since`` replaces only the live commit), unless
    that build is the one ``worktree_tags`` (component → the tag a deploy of the work tree gives it) names: then
    what is live is what the work tree holds for it. With ``include_uncommitted`` (``head`` must be HEAD) the work
    tree is compared instead of HEAD's commit, untracked files included. Changes that belong to a deployable
    component missing from ``live`` are left out. ``env``: the environment deployed to, whose own ``base_image``
    in deploy.toml counts for the app (None: any environment's does).
    """
    root = config.root
    for component in live:
        kind_of(component, config.stack_roles)
    if include_uncommitted and head != "HEAD":
        raise ValueError("include_uncommitted compares the work tree: head must be HEAD")
    # each live commit as the image tag or SHA has it, then every revision resolved at once (one git process)
    parsed = {c: parse_live(c, tag) for c, tag in live.items() if tag is not None} if since is None else {}
    asked = [head, *([since] if since is not None else []), *(sha for sha, _ in parsed.values())]
    resolved = git.resolve_commits(root, asked)
    head_sha = resolved[head]
    if head_sha is None:
        raise UsageError(f"{head!r} names no commit in {root}", next_step="pass a commit SHA, a tag or a branch")
    since_sha: str | None = None
    if since is not None:
        since_sha = resolved[since] or _no_such_since(root, since)

    bases: dict[str, str | None] = {}
    notes: list[Change] = []
    dirty: set[str] = set()
    as_built: set[str] = set()  # live is a dirty build of exactly what the work tree holds for the component
    for component, tag in live.items():
        kind = kind_of(component)
        if tag is None:
            bases[component] = None
            notes.append(Change("", component, kind, "A", NOT_DEPLOYED))
            continue
        if since_sha is not None:
            bases[component] = since_sha
            found = _LIVE_TAG.match(tag.strip().lower())
            was_dirty = bool(found and found["dirty"])
            sha = found["sha"] if found else tag
        else:
            sha, was_dirty = parsed[component]
            bases[component] = _resolve_live(root, component, sha, resolved[sha])
        if was_dirty:
            dirty.add(component)
            if since_sha is None and (worktree_tags or {}).get(component, "").lower() == tag.strip().lower():
                as_built.add(component)
                continue
            notes.append(
                Change(
                    "",
                    component,
                    kind,
                    "M",
                    f"live build {tag} had uncommitted changes on top of {sha[:12]}: what is live is in no commit",
                )
            )

    deployable = set(components_of(config))
    head_usage: list[StackUsage] = []  # computed once, when a CDK module first needs it

    def usage_for(base: str) -> StackUsage:
        if not head_usage:
            head_usage.append(
                stack_usage_in_worktree(config) if include_uncommitted else stack_usage_at(config, head_sha)
            )
        return stack_usage_at(config, base) | head_usage[0]

    distinct = list(dict.fromkeys(b for b in bases.values() if b is not None))
    newer = {} if since_sha else {base: n for base in distinct if (n := git.commits_ahead(root, base, head_sha))}
    # a live commit on another line: what it has that head lacks is replaced (said, never refused)
    aside: dict[str, int] = {}
    if since_sha is None:
        aside = {b: n for b in distinct if b not in newer and b != head_sha and (n := _apart(root, b, head_sha))}
    by_base: dict[str, list[Change]] = {}
    diffs = at_once(
        {base: partial(git.changed_paths, root, base, None if include_uncommitted else head_sha) for base in distinct},
        width=GIT_PROCESSES,
    )
    for base, diff in diffs.items():
        usage = usage_for(base) if any(_is_cdk_module(p) for c in diff for p in (c.path, c.old_path) if p) else None
        classified = _classify_changes(config, diff, usage or StackUsage())
        by_base[base] = _build_settings(config, classified, base, None if include_uncommitted else head_sha, env)

    changes: list[Change] = list(notes)
    for component, commit in bases.items():
        if commit is not None and component not in as_built:
            changes.extend(c for c in by_base[commit] if c.component == component)
    for classified in by_base.values():
        for change in classified:
            if change.kind == "none":
                changes.append(change)
            elif change.component not in live and change.component not in deployable:
                why = f"{change.reason}, but {change.component} {NOT_DEPLOYABLE}"
                changes.append(replace(change, component=None, kind="none", reason=why))
    unique = list(dict.fromkeys(changes))
    unique.sort(key=_order)
    return ChangeSet(
        base=bases,
        head=head_sha,
        changes=tuple(unique),
        dirty=frozenset(dirty),
        uncommitted=include_uncommitted,
        since=since_sha,
        ahead={component: newer[base] for component, base in bases.items() if base in newer},
        apart={component: aside[base] for component, base in bases.items() if base in aside},
    )


def not_deployable(change: Change) -> str | None:
    """The component a rule gives ``change``'s path that this checkout has not (``lambda:<fn>`` of a folder with no
    handler.py); None for any other change."""
    found = _NOT_DEPLOYABLE.search(change.reason) if change.kind == "none" else None
    return found["component"] if found else None


def _apart(root: Path, live: str, head: str) -> int:
    """How many commits ``live`` has that ``head`` lacks when it is on another line (both have commits the other
    lacks); 0 otherwise (the same line of history)."""
    theirs, ours = git.divergence(root, live, head)
    return theirs if theirs and ours else 0


def scope(config: Config, revision: git.Revision) -> git.Revision:
    """``revision`` knowing which components its uncommitted changes touch, through the same rules as committed
    changes (a rename counts for both sides): what they do not touch is built as HEAD's commit and named so
    (:meth:`deploykit.git.Revision.of`), and a later deploy.auto does not count it changed."""
    if not revision.dirty:
        return revision
    diff = git.changed_paths(config.root, revision.sha, None)
    cdk = any(_is_cdk_module(p) for c in diff for p in (c.path, c.old_path) if p)
    usage = (stack_usage_in_worktree(config) | stack_usage_at(config, revision.sha)) if cdk else StackUsage()
    classified = _build_settings(config, _classify_changes(config, diff, usage), revision.sha, None)
    paths: dict[str, set[str]] = {}
    for c in classified:
        if c.kind != "none" and c.component:
            paths.setdefault(c.component, set()).update(p for p in (c.path, c.old_path) if p)
    parts = tuple(
        (component, tuple(sorted(found)), git.paths_hash(config.root, tuple(sorted(found))))
        for component, found in sorted(paths.items())
    )
    return dataclasses.replace(revision, touches=frozenset(paths), parts=parts)


def _build_settings(
    config: Config, classified: list[Change], base: str, head: str | None, env: str | None = None
) -> list[Change]:
    """``classified`` with deploy.toml counted for what its ``[build]`` table says how to build, when that differs
    between ``base`` and ``head`` (None: the work tree): for the app, how the image is built (context, Dockerfile, base
    image, extra CAs, platform), and the base image an environment sets for itself (``env``'s, from its table or the
    pattern that makes it; None: any environment's); for the Fargate stack too, ``platform`` (its tasks run on that
    architecture), and the service's size an environment sets (``desired_count``, ``task_cpu``, ``task_memory`` of
    ``env``'s table or the pattern that makes it; None: any environment's); for the stacks that may hold functions
    and every function, ``lambda_architecture`` and ``lambda_runtime`` (a stack puts its functions on them, and their
    requirements are vendored for them: each zip is made anew); for every stack, the SNS topics an environment sends
    their events to (``notification_arns``, of ``env``'s table or the pattern that makes it), and the values it gives
    the CDK app (its ``context`` table). The rest of deploy.toml is the toolkit's own settings, and stays as the rules
    classify it."""
    name = config.path.relative_to(config.root).as_posix()
    if not any(c.path == name and c.kind == "none" for c in classified):
        return classified

    def document(text: bytes | None) -> dict[str, Any] | str:
        try:
            return tomllib.loads(text.decode()) if text is not None else {}
        except (tomllib.TOMLDecodeError, UnicodeDecodeError):
            return "unreadable"  # unknown: counted as changed

    def section(doc: dict[str, Any] | str, key: str) -> dict[str, Any] | str:
        found = doc.get(key) if isinstance(doc, dict) else doc
        return found if isinstance(found, dict | str) else {}

    old_doc = document(git.files_at(config.root, base, name).get(name))
    new_doc = document(config.path.read_bytes() if head is None else git.files_at(config.root, head, name).get(name))
    before, after = section(old_doc, "build"), section(new_doc, "build")

    def part(table: dict[str, Any] | str, key: str | None) -> object:
        """The image's part of the table (``key`` None: all but lambda_architecture and lambda_runtime, which the
        functions follow, keep_local_images, which only says which older builds this machine's engine keeps, and
        lambda_runtime_modules, which a check reads), or one key's value; each key its default when unset, so that a
        default written out is no change."""
        if isinstance(table, str):
            return table
        if key is not None:
            return table.get(key, getattr(BuildConfig(), key))
        full = {**BUILD_DEFAULTS, **table}
        if isinstance(table.get("base"), dict):  # [build.base]: each of its keys its default when unset too
            full["base"] = {**BUILD_DEFAULTS["base"], **table["base"]}
        return {
            k: v
            for k, v in full.items()
            if k not in (LAMBDA_ARCHITECTURE, LAMBDA_RUNTIME, KEEP_LOCAL_IMAGES, LAMBDA_RUNTIME_MODULES)
        }

    def per_env(doc: dict[str, Any] | str, setting: str) -> dict[str, object] | str:
        """Each environment's own ``setting`` (base_image, notification_arns: ``env``'s own table, else the patterns
        that make it; None: every one)."""
        tables = section(doc, "environments")
        if isinstance(tables, str):
            return tables
        return {
            key: t.get(setting)
            for key, t in tables.items()
            if isinstance(t, dict) and _sizes_env(key, env, old_doc, new_doc)
        }

    def changed_tables(old: dict[str, object] | str, new: dict[str, object] | str) -> str:
        """The environments' tables whose setting differs between ``old`` and ``new`` of :func:`per_env`, as
        deploy.toml names them (``[environments.dev], [environments."dev-*"]``)."""
        changed = [env or "*"]  # one side unreadable
        if isinstance(old, dict) and isinstance(new, dict):
            changed = sorted(k for k in {*old, *new} if old.get(k) != new.get(k))
        return ", ".join(f"[environments.{k}]" if "*" not in k else f'[environments."{k}"]' for k in changed)

    def sizes(doc: dict[str, Any] | str) -> dict[str, dict[str, object]] | str:
        """The service's size (desired_count, task_cpu, task_memory, each its default when unset) each environment's
        table gives it (``env``'s own table, else the patterns that make it; None: every table)."""
        tables = section(doc, "environments")
        if isinstance(tables, str):
            return tables
        return {
            key: {k: t.get(k, SIZE_DEFAULTS[k]) for k in SIZE_KEYS}
            for key, t in tables.items()
            if isinstance(t, dict) and _sizes_env(key, env, old_doc, new_doc)
        }

    def built_on(doc: dict[str, Any] | str, table: dict[str, Any] | str) -> object:
        """What ``env``'s image is built on: its own base_image (its table's, or the pattern's that makes it), else
        [build]'s; with [build.base] (each key its default when unset) when that is the image inv base-image builds,
        which the environment's image is built on then alone."""
        bases = per_env(doc, "base_image")
        if isinstance(bases, str) or isinstance(table, str):
            return "unreadable"
        named = sorted({str(v) for v in bases.values() if v})
        image = named[0] if len(named) == 1 else tuple(named) if named else part(table, "base_image")
        spec = table.get("base")
        local = {**BUILD_DEFAULTS["base"], **(spec if isinstance(spec, dict) else {})}
        return image, local if image == local["name"] else None

    def own(whole: object) -> object:
        """``whole`` (:func:`part` of a table) without what the image is built on, which :func:`built_on` judges
        for ``env`` (another environment's base image, or the local one it does not use, builds not its image)."""
        return {k: v for k, v in whole.items() if k not in ("base_image", "base")} if isinstance(whole, dict) else whole

    targets: list[tuple[Target, str]] = []  # each with the setting that made it
    platform = part(before, PLATFORM) != part(after, PLATFORM)
    old_bases, new_bases = per_env(old_doc, "base_image"), per_env(new_doc, "base_image")
    whole_before, whole_after = part(before, None), part(after, None)
    if env is not None:
        whole_before, whole_after = own(whole_before), own(whole_after)
    if whole_before != whole_after:
        why = f"the [build] table of {name} changed: the image is built otherwise"
        targets.append((Target("app", "app", why), f"[build] {PLATFORM}" if platform else "[build]"))
    elif old_bases != new_bases and (env is None or built_on(old_doc, before) != built_on(new_doc, after)):
        tables = changed_tables(old_bases, new_bases)
        why = f"base_image of {tables} in {name} changed: the image is built on another base"
        targets.append((Target("app", "app", why), f"{tables} base_image"))
    elif env is not None and built_on(old_doc, before) != built_on(new_doc, after):
        setting = "[build] base_image" if part(before, "base_image") != part(after, "base_image") else "[build.base]"
        why = f"{setting} of {name} changed: {env}'s image is built on it, and so on another base"
        targets.append((Target("app", "app", why), setting))
    if platform:
        why = f"[build] {PLATFORM} of {name} changed: the service's tasks run on another architecture"
        targets.append((Target("stack:fargate", "stack", why), f"[build] {PLATFORM}"))
    old_sizes, new_sizes = sizes(old_doc), sizes(new_doc)
    if old_sizes != new_sizes:
        said = [f"[environments.{env}]" if env else "[environments]"]  # one side unreadable
        if isinstance(old_sizes, dict) and isinstance(new_sizes, dict):
            unset = dict(SIZE_DEFAULTS)
            said = []
            for key in sorted({*old_sizes, *new_sizes}):
                was, now = old_sizes.get(key, unset), new_sizes.get(key, unset)
                keys = [k for k in SIZE_KEYS if was[k] != now[k]]
                if keys:
                    table = f"[environments.{key}]" if "*" not in key else f'[environments."{key}"]'
                    said.append(f"{table} {', '.join(keys)}")
        if said:
            setting = "; ".join(said)
            why = f"{setting} of {name} changed: the service runs another count or size of tasks"
            targets.append((Target("stack:fargate", "stack", why), setting))
    for key, what in (
        (LAMBDA_ARCHITECTURE, "the functions run on another architecture"),
        (LAMBDA_RUNTIME, "the functions run on another Python"),
    ):
        if part(before, key) == part(after, key):
            continue
        why = f"[build] {key} of {name} changed: {what}"
        functions = [c for c in components_of(config) if c.startswith("lambda:")]
        setting = f"[build] {key}"
        # every stack that may hold functions: the API stack, the team's own (one holding none has nothing to change)
        holders = [f"stack:{role}" for role in config.stack_roles if role not in NO_FUNCTIONS]
        targets += [(Target(stack, "stack", why), setting) for stack in holders]
        targets += [(Target(fn, "lambda", why), setting) for fn in functions]
    # what the platform's stacks make by deploy.toml's names: the Fargate stack the cluster, the service (and its
    # task definitions' family), the container and where its image comes from; the registry stack the repository
    for key, roles, what in (
        ("cluster", ("fargate",), "the service runs in a cluster of another name"),
        ("service", ("fargate",), "the service (and its task definitions' family) has another name"),
        ("container", ("fargate",), "the task definition's container has another name"),
        ("registry", ("fargate",), "the service's image comes from another registry"),
        ("repository", ("registry", "fargate"), "the image's repository has another name"),
    ):
        before_env, after_env = per_env(old_doc, key), per_env(new_doc, key)
        if before_env != after_env:
            setting = f"{changed_tables(before_env, after_env)} {key}"
            why = f"{setting} of {name} changed: {what}"
            targets += [(Target(f"stack:{role}", "stack", why), setting) for role in roles]
    # what every stack of an environment takes: where its events go (a key taken out: the stacks keep their topics),
    # and the values the app is given (it reads them where it likes: every stack is synthesized otherwise)
    for key, what, kept_when_out in (
        (NOTIFICATION_ARNS, "CloudFormation sends the stacks' events to other SNS topics", True),
        (CONTEXT, "the CDK app is given other values", False),
    ):
        before_env, after_env = per_env(old_doc, key), per_env(new_doc, key)
        if kept_when_out and isinstance(before_env, dict) and isinstance(after_env, dict):
            before_env = {k: before_env.get(k) for k, v in after_env.items() if v is not None}
            after_env = {k: v for k, v in after_env.items() if v is not None}
        if before_env != after_env:
            setting = f"{changed_tables(before_env, after_env)} {key}"
            why = f"{setting} of {name} changed: {what}"
            targets += [(Target(f"stack:{role}", "stack", why), setting) for role in config.stack_roles]
    if not targets:
        return classified
    out: list[Change] = []
    for c in classified:
        if c.path == name and c.kind == "none":
            out += [Change(c.path, t.component, t.kind, c.status, t.reason, setting=s) for t, s in targets]
        else:
            out.append(c)
    return out


def _plain(value: Any) -> Any:
    """A default as deploy.toml would write it: tuples as lists, tables as dicts."""
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    return value


# [build] as deploy.toml would write it with every key at its default ([build.base] a table of its own)
BUILD_DEFAULTS: dict[str, Any] = _plain(dataclasses.asdict(BuildConfig()))

# what an environment's service is when its table does not size it: the CDK app's defaults
SIZE_DEFAULTS: dict[str, object] = {
    "desired_count": DEFAULT_DESIRED_COUNT,
    "task_cpu": DEFAULT_TASK_CPU,
    "task_memory": DEFAULT_TASK_MEMORY,
}


def _sizes_env(key: str, env: str | None, *docs: dict[str, Any] | str) -> bool:
    """Whether the table ``key`` of deploy.toml's environments sizes ``env``'s service, and gives its base_image (None:
    any environment's): its own table, or a pattern that makes it when it has no table of its own in either version
    (``docs``)."""
    if env is None or key == env:
        return True
    if "*" not in key or not pattern_matches(key, env):
        return False
    return not any(
        isinstance(doc, dict) and isinstance(doc.get("environments"), dict) and env in doc["environments"]
        for doc in docs
    )


def _classify_changes(config: Config, diff: Iterable[git.PathChange], usage: StackUsage) -> list[Change]:
    out: list[Change] = []
    for item in diff:
        removed = item.status == "D"
        targets = list(classify(config, item.path, usage=usage, submodule=item.submodule, removed=removed))
        if item.old_path is not None:
            seen = {t.component for t in targets}
            for old in classify(config, item.old_path, usage=usage, submodule=item.submodule, removed=True):
                if old.component not in seen:
                    targets.append(old._replace(reason=f"{old.reason} (the old path)"))
                    seen.add(old.component)
            deployable = [t for t in targets if t.kind != "none"]
            targets = deployable or targets[:1]
        for target in targets:
            out.append(
                Change(
                    item.path,
                    target.component,
                    target.kind,
                    item.status,
                    target.reason,
                    item.old_path,
                    submodule=item.submodule,
                )
            )
    return out


# -- what a requirements file's change changes -------------------------------------------------------------------

REQUIREMENTS_RE = re.compile(r"(^|/)requirements[^/]*\.txt$")
_REQUIREMENT_NAME = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(.*)$")


@dataclass(frozen=True)
class RequirementChange:
    """One package whose requirement a requirements file's change changes: added (``before`` None), removed
    (``after`` None), or asked for another way (another version)."""

    name: str
    before: str | None  # what follows the name: "==2.1.3", "[standard]==0.30.0"
    after: str | None

    def describe(self) -> str:
        if self.before is None:
            return f"{self.name}{self.after} added"
        if self.after is None:
            return f"{self.name}{self.before} removed"
        if _PLAIN_PIN.match(self.before) and _PLAIN_PIN.match(self.after):
            return f"{self.name} {self.before[2:]} → {self.after[2:]}"
        return f"{self.name} {self.before} → {self.after}"


_PLAIN_PIN = re.compile(r"^==[^=;,@\[]+$")  # ==2.1.3: the version alone says it


def requirements_of(text: str) -> dict[str, str]:
    """A requirements file's requirements, by normalised package name (PEP 503): what follows the name, spaces
    and hashes left out; options (``--index-url``...), comments and blank lines are not requirements."""
    found: dict[str, str] = {}
    for raw in text.replace("\\\n", " ").splitlines():
        line = re.sub(r"(^|\s)#.*$", "", raw).strip()
        if not line or line.startswith("-"):
            continue
        line = re.split(r"\s--hash[=\s]", line, maxsplit=1)[0]
        match = _REQUIREMENT_NAME.match(line)
        if match:
            name = re.sub(r"[-_.]+", "-", match.group(1)).lower()
            found[name] = re.sub(r"\s+", "", match.group(2))
    return found


def requirement_changes(before: str | None, after: str | None) -> tuple[RequirementChange, ...]:
    """What changes between two versions of a requirements file (None: there is no such file), by package name."""
    old, new = requirements_of(before or ""), requirements_of(after or "")
    return tuple(
        RequirementChange(name, old.get(name), new.get(name))
        for name in sorted({*old, *new})
        if old.get(name) != new.get(name)
    )


def requirements_changed(root: Path, found: ChangeSet) -> dict[str, tuple[RequirementChange, ...]]:
    """For each changed requirements file of the app, a function or the CDK app (``cdk/requirements.txt``, which
    every stack counts): what it changes, from the file as it was at its component's base (what is live; for a file
    several components count, the first one's) to head (the work tree's when it was compared). A component never
    deployed, or a base this clone lacks, has none (its whole file is new)."""
    out: dict[str, tuple[RequirementChange, ...]] = {}
    for change in found.changes:
        if change.kind == "none" or not REQUIREMENTS_RE.search(change.path) or change.setting or change.path in out:
            continue
        base = found.base.get(change.component or "")
        if not base:
            continue
        before = _text_at(root, base, change.old_path or change.path)
        if found.uncommitted:
            file = root / change.path
            after = file.read_text(encoding="utf-8", errors="replace") if file.is_file() else None
        else:
            after = _text_at(root, found.head, change.path)
        diff = requirement_changes(before, after)
        if diff:
            out[change.path] = diff
    return out


def _text_at(root: Path, rev: str, path: str) -> str | None:
    try:
        content = git.files_at(root, rev, path).get(path)
    except UsageError:  # a commit this clone lacks
        return None
    return None if content is None else content.decode("utf-8", errors="replace")
