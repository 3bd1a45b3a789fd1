"""deploy.toml: named environments and build settings, validated on load.

The file is read once per command into frozen dataclasses. Validation is strict, because a typo in a
deploy file should never deploy to the wrong place: an unknown key, a missing field, a value of the
wrong type or an unknown environment is a :class:`~deploykit.errors.ConfigError` (exit 2) naming the
key and the file.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import platform
import re
import sys
import threading
import tomllib
import types
import typing
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import cached_property
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from deploykit.clock import LONGEST
from deploykit.errors import ConfigError
from deploykit.packaging import ARCHITECTURES, DEFAULT_ARCHITECTURE, LAMBDA_RUNTIMES, Target, python_of

# this machine's CPU, as `uname -m` says it → the Lambda architecture that runs its compiled code
HOST_ARCHITECTURES = {"x86_64": "x86_64", "amd64": "x86_64", "aarch64": "arm64", "arm64": "arm64"}
# a Lambda architecture → the CPU an ECS task definition names for it
ECS_CPU = {"x86_64": "X86_64", "arm64": "ARM64"}

CONFIG_NAME = "deploy.toml"
ENV_VAR_CONFIG = "DEPLOYKIT_CONFIG"
ENV_VAR_ENV = "DEPLOYKIT_ENV"


@dataclass(frozen=True)
class Stacks:
    """CloudFormation stack names of one environment: the platform's five roles, and the team's own stacks."""

    registry: str
    data: str
    auth: str
    fargate: str
    api: str
    # The team's own stacks, (role, name) in deploy.toml's order: any other key of [environments.NAME.stacks]. They
    # deploy after the platform's five, one after the other in that order (see levels()).
    own: tuple[tuple[str, str], ...] = ()

    def roles(self) -> dict[str, str]:
        """Role → stack name: the platform's five in dependency order, then the team's own."""
        return {**{role: getattr(self, role) for role in STACK_ROLES}, **dict(self.own)}

    def function_stacks(self) -> list[str]:
        """The names of the stacks that may hold Lambda functions: the API stack, then the team's own
        (:data:`NO_FUNCTIONS` hold none)."""
        return [name for role, name in self.roles().items() if role not in NO_FUNCTIONS]

    def levels(self) -> list[tuple[str, ...]]:
        """The roles in dependency levels: each level needs only the levels before it (its stacks are independent).

        The platform's five by :data:`STACK_DEPENDENCIES`; then each stack of the team's own, in deploy.toml's
        order, a level of its own: what it imports is known only once the app is synthesized, and so it may import
        from any stack before it (:func:`deploykit.synth.check_stacks` refuses an app whose stacks need another
        order). A deploy runs them side by side as far as the synthesized app's dependencies let it
        (:class:`deploykit.stack_chain.StacksByDependencies`); without them, and for destroy, in these levels."""
        return platform_levels() + [(role,) for role, _ in self.own]

    def dependencies(self) -> dict[str, tuple[str, ...]]:
        """Role → the roles it may import from: the platform's by :data:`STACK_DEPENDENCIES`; a stack of the team's
        own, every stack before it (:meth:`levels`)."""
        found = dict(STACK_DEPENDENCIES)
        for index, (role, _) in enumerate(self.own):
            found[role] = (*STACK_DEPENDENCIES, *(before for before, _ in self.own[:index]))
        return found


# The platform's stack roles, in dependency order; an environment may name more (Stacks.own).
STACK_ROLES: tuple[str, ...] = ("registry", "data", "auth", "fargate", "api")
# The platform's stacks that hold no Lambda function: a function goes in the API stack or in one of the team's own
# (deploykit.synth.check_stacks refuses one elsewhere), so only those are given the functions' code.
NO_FUNCTIONS: tuple[str, ...] = ("registry", "data", "auth", "fargate")
# Which stacks each platform stack imports from (cross-stack references): the order of deploy.full and destroy.
STACK_DEPENDENCIES: dict[str, tuple[str, ...]] = {
    "registry": (),
    "data": (),
    "auth": (),
    "fargate": ("registry", "data", "auth"),
    "api": ("registry", "auth"),
}


def platform_levels() -> list[tuple[str, ...]]:
    """The platform's stack roles in dependency levels, by :data:`STACK_DEPENDENCIES`."""
    levels: list[tuple[str, ...]] = []
    placed: set[str] = set()
    while len(placed) < len(STACK_DEPENDENCIES):
        level = tuple(r for r, deps in STACK_DEPENDENCIES.items() if r not in placed and set(deps) <= placed)
        if not level:
            raise ValueError(f"a cycle in STACK_DEPENDENCIES among {set(STACK_DEPENDENCIES) - placed}")
        levels.append(level)
        placed.update(level)
    return levels


# A role of the team's own: what cdk/stacks/{role}_stack.py and the component stack:{role} can hold.
OWN_ROLE = re.compile(r"^[a-z][a-z0-9_]{0,39}$")

_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
_GLOB_TOKEN = re.compile(r"\{[A-Za-z_][A-Za-z0-9_]*\}|\*|\?|[^*?{]+|\{")
_LAMBDA_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
# What the CDK app takes (cdk/stacks/common/settings.py, which deploykit does not import): checked as deploy.toml is
# read, so that a name it would refuse is not found out only when a stack is synthesized.
_REGION = re.compile(r"^[a-z]{2}(-[a-z]+)+-[0-9]+$")
# an ECS cluster's, service's or container's name (ECS: letters, digits, '_' and '-'; lower-case here, as before)
_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,254}$")
# an ECR repository's name: parts of lower-case letters and digits joined by one '.', '_' or '-', '/' between
# namespaces, at most 256 characters (ECR wants 2 at least: a one-letter name is left to it)
_REPOSITORY = re.compile(r"^(?=.{1,256}$)(?:[a-z0-9]+(?:[._-][a-z0-9]+)*/)*[a-z0-9]+(?:[._-][a-z0-9]+)*$")
_STACK_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9-]{0,127}$")
MAX_DAYS = 3650  # the most days a setting counts (ten years): a longer one is a typo, and no date is that far
_REGISTRY = re.compile(r"^[A-Za-z0-9.-]+(:[0-9]+)?(/[a-z0-9._/-]+)?/?$")  # a trailing / is dropped (synth)
_ENV_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
# Targets without an argument. stacks:shared: every stack whose module imports the changed CDK module,
# transitively; stacks:all: every stack.
PLAIN_TARGETS = ("app", "none", "stacks:shared", "stacks:all")
TARGET_FORMS = "app, lambda:<name>, stack:<role>, stacks:shared, stacks:all or none"


def compile_glob(glob: str) -> tuple[re.Pattern[str], tuple[str, ...]]:
    """A path glob of deploy.toml's [changes] rules → (regex, placeholder names); ValueError if malformed.

    Paths are relative to the project root with forward slashes. ``*`` and ``?`` match within one path
    segment, a whole segment ``**`` matches any number of segments (``backend/**``: every file under
    backend/, ``**/*.md``: every .md file), and ``{name}`` matches a non-empty part of one segment
    (``lambda/{fn}/**``, ``cdk/stacks/{role}_stack.py``) whose text the rule's target may use.
    """
    if glob != glob.strip():
        raise ValueError(f"{glob!r} begins or ends with a space, which no path of the repository does")
    if not glob or glob.startswith("/") or glob.endswith("/") or "\\" in glob:
        raise ValueError(f"{glob!r} must be a relative path with forward slashes, not starting or ending with /")
    segments = glob.split("/")
    pattern = ""
    names: list[str] = []
    for index, segment in enumerate(segments):
        last = index == len(segments) - 1
        if segment == "**":
            pattern += ".+" if last else "(?:[^/]+/)*"
            continue
        if segment in ("", ".", ".."):
            raise ValueError(f"{glob!r} has an empty, '.' or '..' path segment")
        if "**" in segment:
            raise ValueError(f"{glob!r}: ** must be a whole path segment (like backend/** or **/*.md)")
        if "[" in segment or "]" in segment:
            raise ValueError(f"{glob!r}: character classes ([...]) are not supported")
        for token in _GLOB_TOKEN.findall(segment):
            if token == "*":
                pattern += "[^/]*"
            elif token == "?":
                pattern += "[^/]"
            elif _PLACEHOLDER.fullmatch(token):
                name = token[1:-1]
                if name in names:
                    raise ValueError(f"{glob!r} uses the placeholder {{{name}}} twice")
                names.append(name)
                pattern += f"(?P<{name}>[^/]+)"
            elif "{" in token or "}" in token:
                raise ValueError(f"{glob!r}: braces must form a {{name}} placeholder (letters, digits, _)")
            else:
                pattern += re.escape(token)
        if not last:
            pattern += "/"
    return re.compile(pattern, re.DOTALL), tuple(names)  # DOTALL: a file name may hold a newline


@dataclass(frozen=True)
class ChangeRule:
    """One rule of [changes]: paths matching any of ``paths`` belong to ``to``.

    ``to`` is ``app``, ``lambda:<name>``, ``stack:<role>``, ``stacks:shared``, ``stacks:all`` or ``none``;
    it may use the globs' ``{name}`` placeholders (``lambda:{fn}``). A placeholder substituted into a target
    that is not valid (``stack:{role}`` with a role that is not a stack role) means the rule does not match.
    """

    paths: tuple[str, ...]
    to: str

    def __str__(self) -> str:
        globs = ", ".join(f'"{p}"' for p in self.paths)
        return f'{{ paths = [{globs}], to = "{self.to}" }}'

    @cached_property
    def _compiled(self) -> tuple[tuple[str, re.Pattern[str], tuple[str, ...]], ...]:
        return tuple((glob, *compile_glob(glob)) for glob in self.paths)

    def check(self, roles: Collection[str] = STACK_ROLES) -> None:
        """ValueError naming the problem if a glob or the target is malformed; ``roles``: the stack roles there are."""
        if not self.paths:
            raise ValueError("paths is empty")
        target_names = set(_PLACEHOLDER.findall(self.to))
        if self.to not in PLAIN_TARGETS:
            kind, _, arg = self.to.partition(":")
            rest = _PLACEHOLDER.sub("", arg)
            if kind not in ("lambda", "stack") or not arg:
                raise ValueError(f"unknown target {self.to!r} (a target is {TARGET_FORMS})")
            if "{" in rest or "}" in rest:
                raise ValueError(f"{self.to!r}: braces must form a {{name}} placeholder (letters, digits, _)")
            if kind == "stack" and target_names and rest:
                raise ValueError(f"{self.to!r}: the role must be a whole placeholder (stack:{{role}}) or a role name")
            if kind == "stack" and not target_names and arg not in roles:
                raise ValueError(f"{arg!r} is not a stack role ({', '.join(roles)})")
            if kind == "lambda" and not target_names and not _LAMBDA_NAME.match(arg):
                raise ValueError(f"{arg!r} is not a Lambda function folder name (letters, digits, _ and -)")
        for glob, _pattern, names in self._compiled:
            missing = sorted(target_names - set(names))
            if missing:
                raise ValueError(f"the target {self.to!r} uses {{{missing[0]}}}, which {glob!r} does not define")

    def match(self, path: str, roles: Collection[str] = STACK_ROLES) -> tuple[str, str] | None:
        """(the matching glob, the target with its placeholders filled in), or None; ``roles``: the stack roles."""
        for glob, pattern, _names in self._compiled:
            found = pattern.fullmatch(path)
            if not found:
                continue
            target = _fill(self.to, found.groupdict())
            kind, _, arg = target.partition(":")
            if (kind == "stack" and arg not in roles) or (kind == "lambda" and not _LAMBDA_NAME.match(arg)):
                continue  # lambda/{fn}/** or cdk/stacks/{role}_stack.py with a name that cannot be one
            return glob, target
        return None


def _fill(template: str, values: dict[str, str]) -> str:
    return _PLACEHOLDER.sub(lambda m: values[m.group(1)], template)


def _rule(to: str, *paths: str) -> ChangeRule:
    return ChangeRule(paths=paths, to=to)


# The rules for this repository's layout; deploy.toml's [changes] repeats them (and replaces them when set).
DEFAULT_CHANGE_RULES: tuple[ChangeRule, ...] = (
    _rule("none", "backend/tests/**", "backend/*.md"),
    _rule("app", "backend/**"),
    _rule("none", "lambda/*/tests/**", "lambda/*/conftest.py", "lambda/README.md", "lambda/conftest.py"),
    _rule("lambda:{fn}", "lambda/{fn}/**"),
    _rule("none", "cdk/tests/**", "cdk/**/*.md"),
    _rule("stack:{role}", "cdk/stacks/{role}_stack.py"),
    _rule("stacks:all", "cdk/app.py", "cdk/cdk.json", "cdk/requirements.txt"),
    _rule("stacks:shared", "cdk/**"),
    _rule("none", "**/*.md", "docs/**", "tests/**", "bench/**", ".ci/**"),
)


@dataclass(frozen=True)
class ChangeRules:
    """[changes]: which deployable component each changed path belongs to. Ordered; the first match wins.

    A path no rule matches belongs to nothing (it is reported as such, reason "no rule").
    """

    rules: tuple[ChangeRule, ...] = DEFAULT_CHANGE_RULES
    # each path's answer, once: a change analysis matches a path again for each live commit it diffs from (a helper's
    # 20,000 paths from 101 live commits, 200 globs: 7.8 million rule matches, 20 s)
    _matched: dict[tuple[str, tuple[str, ...]], tuple[ChangeRule, str, str] | None] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def match(self, path: str, roles: Collection[str] = STACK_ROLES) -> tuple[ChangeRule, str, str] | None:
        """(the first rule matching ``path``, its matching glob, the target), or None; ``roles``: the stack roles
        (:attr:`Config.stack_roles`)."""
        key = (path, tuple(roles))
        if key not in self._matched:
            self._matched[key] = next(
                ((rule, *found) for rule in self.rules if (found := rule.match(path, roles))), None
            )
        return self._matched[key]


# The platforms the backend image may be built for ([build] platform): Docker's name → the CPU architecture as an ECS
# task definition's runtimePlatform names it (Fargate's default, when a task definition names none, is X86_64).
PLATFORMS = {"linux/amd64": "X86_64", "linux/arm64": "ARM64"}

# How CloudFormation applies a stack update ([environments.NAME] stack_mode): its deployment modes.
STACK_MODES = ("standard", "express")

# The sizes a Fargate task may have ([environments.NAME] task_cpu, task_memory): CPU units (1024 a vCPU) → the memory
# (MiB) each takes, as AWS's task definition reference lists them. The CDK app (cdk/stacks/common/settings.py, which
# cannot import deploykit) holds the same table; unset, the service's tasks are the smallest.
FARGATE_SIZES: dict[int, tuple[int, ...]] = {
    256: (512, 1024, 2048),
    512: tuple(range(1024, 4096 + 1, 1024)),
    1024: tuple(range(2048, 8192 + 1, 1024)),
    2048: tuple(range(4096, 16384 + 1, 1024)),
    4096: tuple(range(8192, 30720 + 1, 1024)),
    8192: tuple(range(16384, 61440 + 1, 4096)),
    16384: tuple(range(32768, 122880 + 1, 8192)),
}
DEFAULT_DESIRED_COUNT = 1
DEFAULT_TASK_CPU = 256
DEFAULT_TASK_MEMORY = 512
# The keys of an environment's table that size its service, which the Fargate stack deploys (deploykit.changes).
SIZE_KEYS = ("desired_count", "task_cpu", "task_memory")


def memory_choices(cpu: int) -> str:
    """The memory a task of ``cpu`` units may have, said for a person: ``512, 1024 or 2048`` or ``2048 to 8192 in
    steps of 1024``."""
    memory = FARGATE_SIZES[cpu]
    if len(memory) <= 3:
        return f"{', '.join(map(str, memory[:-1]))} or {memory[-1]}"
    return f"{memory[0]} to {memory[-1]} in steps of {memory[1] - memory[0]}"


def size_problem(desired_count: int | None, task_cpu: int | None, task_memory: int | None) -> tuple[str, str] | None:
    """What is wrong with a service's size, as (the key and what is wrong, the valid choices), or None; an unset value
    is its default (1 task of 256 CPU units and 512 MiB)."""
    if desired_count is not None and desired_count < 1:
        return (
            f"desired_count must be 1 or more tasks, not {desired_count}",
            "a whole number of tasks, 1 or more (inv pause scales a service to 0 for a while)",
        )
    cpu = DEFAULT_TASK_CPU if task_cpu is None else task_cpu
    memory = DEFAULT_TASK_MEMORY if task_memory is None else task_memory
    if cpu not in FARGATE_SIZES:
        units = ", ".join(map(str, FARGATE_SIZES))
        return (
            f"task_cpu = {cpu} is not a Fargate task's CPU",
            f"task_cpu is one of {units} CPU units (1024 = 1 vCPU)",
        )
    if memory not in FARGATE_SIZES[cpu]:
        unset = " (the default)" if task_memory is None else ""
        with_cpu = f"task_cpu = {cpu}" + (" (the default)" if task_cpu is None else "")
        return (
            f"task_memory = {memory}{unset} does not go with {with_cpu} on Fargate",
            f"with task_cpu = {cpu}, task_memory is {memory_choices(cpu)} (MiB)",
        )
    return None


@dataclass(frozen=True)
class BaseImageSpec:
    """How ``inv base-image`` builds the local Debian/Python base image (no Docker Hub needed)."""

    name: str = "deploykit/python-base:3.11-bookworm"
    suite: str = "bookworm"
    mirror: str = "http://deb.debian.org/debian"
    # python3-venv brings pip into each venv (ensurepip); the system needs no pip of its own
    packages: tuple[str, ...] = ("python3", "python3-venv", "ca-certificates", "curl")
    # The suite's stable updates (<suite>-updates, from mirror) and security updates (<suite>-security, from
    # security_mirror) go in too; false for a suite that has neither (sid) or a mirror that serves only the suite.
    updates: bool = True
    security_mirror: str = "http://deb.debian.org/debian-security"
    # Rebuilt once it is older than this, with the security updates published since; 0: only when the spec changes.
    max_age_days: float = 7

    def sources(self) -> tuple[str, ...]:
        """The APT sources the image is built from, as sources.list lines."""
        lines = [f"deb {self.mirror} {self.suite} main"]
        if self.updates:
            lines.append(f"deb {self.mirror} {self.suite}-updates main")
            if self.security_mirror:
                lines.append(f"deb {self.security_mirror} {self.suite}-security main")
        return tuple(lines)


@dataclass(frozen=True)
class BuildConfig:
    """How the backend image is built; the same for every environment unless one overrides it."""

    context: str = "backend"
    dockerfile: str = "Dockerfile"
    base_image: str = "python:3.11-slim"
    # Extra CA certificates (a corporate TLS proxy, this machine's egress CA) copied into the build
    # context so the image, and pip inside `docker build`, trust them. Empty string: none.
    extra_ca_dir: str = "/usr/local/share/ca-certificates"
    # A base image pulled from a registry (python:3.11-slim) is pulled again once this machine's copy is older
    # than this many days: the security updates its publisher built since go in. 0: only when it is missing.
    pull_after_days: float = 7
    # The platform the backend image is built for, whatever machine builds it, and that the CDK app puts the service's
    # tasks on (their task definition's runtimePlatform: X86_64, ARM64). linux/amd64 or linux/arm64.
    platform: str = "linux/amd64"
    # The architecture the Lambda functions run on, x86_64 or arm64 (Graviton): the CDK app gives it to every function
    # (stacks/common/functions.py), and a function's requirements are vendored as wheels for it. Not part of how the
    # image is built: a change to it deploys the stacks holding functions with every function's zip made anew.
    lambda_architecture: str = DEFAULT_ARCHITECTURE
    # The Lambda runtime the functions run on (python3.11, python3.12...): the CDK app gives it to every function
    # (stacks/common/functions.py), and a function's requirements are vendored as wheels for its CPython. A change to
    # it deploys the stacks holding functions with every function's zip made anew, as lambda_architecture's does.
    lambda_runtime: str = "python3.11"
    # Modules the functions find on Lambda beside their zip, Python's standard library and the AWS SDK the runtime has:
    # a layer's. The check that each function's zip would import there (deploykit.lambda_imports) takes them as there.
    # Not part of how anything is built: a change to it deploys nothing.
    lambda_runtime_modules: tuple[str, ...] = ()
    # The builds of the backend image kept on this machine's Docker engine, newest first (their local tags and the
    # registry's): after a build, once a day, the older ones' tags are removed. 0: never.
    keep_local_images: int = 10
    base: BaseImageSpec = field(default_factory=BaseImageSpec)


@dataclass(frozen=True)
class ReleaseCommand:
    """A command run once in a new image before it takes any traffic (``[release]``): its data migrations, a
    backfill, a check that it reaches what it needs. A one-off ECS task of the new task definition, beside the
    service (its network, its capacity), with this command instead of the image's; exit code 0 lets the rollout go
    on, anything else stops the deploy with the service untouched. See deploykit.release."""

    command: tuple[str, ...] = ()  # exec form, as a task definition's command; empty: none
    timeout: float = 600.0  # seconds before the task is stopped and the deploy fails

    @property
    def on(self) -> bool:
        return bool(self.command)


@dataclass(frozen=True)
class LambdaCanary:
    """How the Lambda fast path lets a new version in (``[environments.NAME.lambda_canary]``): first a share of the
    ``live`` alias's requests, for a while, its errors watched (deploykit.canary). ``percent = 0``: no canary, the
    alias moves at once."""

    percent: float = 0.0  # the share of the alias's requests the new version takes first (0 < percent < 100)
    seconds: float = 300.0  # how long it serves that share while its errors are watched
    max_error_rate: float = 0.0  # the share of its invocations that may fail (0: one error takes it back)
    # judged against the version it replaces, in the same time: more than that one's error rate, plus max_error_rate
    # (once it has answered enough requests for its rate to mean something: deploykit.watch.BASELINE)
    compare: bool = True

    @property
    def on(self) -> bool:
        return self.percent > 0


@dataclass(frozen=True)
class ErrorWatch:
    """After the app's rollout and smoke, its answers through the ALB watched for a while
    (``[environments.NAME.app_error_watch]``, deploykit.watch); too many 5xx fail the release, which the automatic
    rollback then takes back. ``seconds = 0``: not watched."""

    seconds: float = 0.0  # how long (0, the default: no watch)
    max_error_rate: float = 0.01  # the share of requests that may fail: real traffic has the odd 5xx
    # judged against the release before: its rate in the minutes before the rollout, plus max_error_rate (once it
    # answered enough requests for its rate to mean something: deploykit.watch.BASELINE)
    compare: bool = True
    # the p90 of its response times may be at most this many times the release before's in the minutes before the
    # rollout (and 20 ms more): more fails the release; 0, the default: not judged
    max_slowdown: float = 0.0

    @property
    def on(self) -> bool:
        return self.seconds > 0


@dataclass(frozen=True)
class AlarmWatch:
    """The team's own CloudWatch alarms as judges of a release (``[environments.NAME.alarm_watch]``, deploykit.watch):
    after a deploy's smoke, an alarm that went to ALARM since the deploy began changing what runs fails the release,
    which the automatic rollback then takes back. No ``alarms`` (the default): none watched."""

    # metric or composite alarms, by name, in the environment's account and region; a name ending in ``*``: every
    # alarm whose name starts with what comes before it (deploykit.watch.read_alarms)
    alarms: tuple[str, ...] = ()
    seconds: float = 0.0  # how long they are watched after smoke (0: read once, after it)

    @property
    def on(self) -> bool:
        return bool(self.alarms)


MAX_ALARMS = 100  # DescribeAlarms takes up to 100 names in one call
MAX_ALARM_WATCH = 10800.0  # seconds: 3 hours, the longest CloudFormation's rollback triggers watch for


SEVERITIES = ("INFORMATIONAL", "LOW", "MEDIUM", "HIGH", "CRITICAL")  # ECR's, from least to most severe


@dataclass(frozen=True)
class ImageScan:
    """The gate on the registry's scan of a new image (``[environments.NAME.image_scan]``, deploykit.scan_gate):
    before the image runs anywhere in the environment, the scan ECR made of it is read (waited for, up to
    ``timeout`` seconds), and findings of ``severity`` or worse that ``ignore`` does not name stop the deploy.
    ``severity = ""`` (the default): no gate."""

    severity: str = ""  # the least severe finding that stops a deploy: CRITICAL, HIGH, MEDIUM, LOW or INFORMATIONAL
    # findings accepted (CVE-2023-4911, ...): each one reviewed, as deploy.toml's commits are
    ignore: tuple[str, ...] = ()
    timeout: float = 600.0  # seconds a scan still in progress is waited for (ECR's basic scans: seconds to minutes)
    # a basic scan older than this many days is made again before it is judged (0: judged at any age): an image
    # scanned weeks ago and deployed now is judged on what is known now (ECR scans an image once a day at most)
    rescan_after_days: float = 0.0

    @property
    def on(self) -> bool:
        return bool(self.severity)


def scan_problem(scan: ImageScan) -> str | None:
    """What is wrong with an image scan gate's settings, or None."""
    if scan.severity and scan.severity not in SEVERITIES:
        return f'severity must be one of {", ".join(reversed(SEVERITIES))} (or "": no gate), not {scan.severity!r}'
    if scan.timeout <= 0:
        return f"timeout must be more than 0 seconds, not {scan.timeout:g}"
    if scan.timeout > LONGEST:
        return f"timeout must be at most {LONGEST:g} seconds (a year), not {scan.timeout:g}"
    if not 0 <= scan.rescan_after_days <= MAX_DAYS:
        return f"rescan_after_days must be from 0 (judged at any age) to {MAX_DAYS}, not {scan.rescan_after_days:g}"
    blank = [name for name in scan.ignore if not name.strip()]
    if blank:
        return 'ignore holds an empty name: list findings by name, e.g. ["CVE-2023-4911"]'
    return None


_DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_DAY_NAMES = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")


def _is_day(word: str) -> bool:
    """A day of the week, whole or cut short to three letters or more (Fri, Thurs, Tues), or Weds."""
    return word == "weds" or (len(word) >= 3 and any(name.startswith(word) for name in _DAY_NAMES))


_WHEN = re.compile(r"(?:(?P<day>[A-Za-z]+)\s+)?(?P<hour>[0-9]{1,2}):(?P<minute>[0-9]{2})")


@dataclass(frozen=True)
class FreezeWindow:
    """A time that comes back, when deploys to the environment are refused, as during ``inv freeze``
    (``[[environments.NAME.freeze_windows]]``): weekly (``start = "Fri 15:00"``, ``end = "Mon 08:00"``) or daily
    (``start = "18:00"``, ``end = "08:00"``), in ``timezone``. See deploykit.freeze."""

    start: str
    end: str
    timezone: str = "UTC"
    reason: str = "a freeze window of deploy.toml"

    def _minute(self, text: str) -> tuple[int | None, int]:
        """(day of the week, 0 Monday, or None every day; minute of the day) of ``start`` or ``end``."""
        found = _WHEN.fullmatch(text.strip())
        if not found or int(found["hour"]) > 23 or int(found["minute"]) > 59:
            raise ValueError(f"{text!r} is not a day and a time (Fri 15:00) or a time (18:00)")
        day = None if found["day"] is None else found["day"].lower()
        if day is not None and not _is_day(day):
            raise ValueError(f"{text!r} does not start with a day of the week (Mon ... Sun, Monday ... Sunday)")
        minute = int(found["hour"]) * 60 + int(found["minute"])
        return (None if day is None else _DAYS.index(day[:3]), minute)

    def check(self) -> None:
        """ValueError naming what is wrong with the window."""
        (start_day, start), (end_day, end) = self._minute(self.start), self._minute(self.end)
        if (start_day is None) != (end_day is None):
            raise ValueError("start and end must both name a day (weekly) or neither (daily)")
        if (start_day, start) == (end_day, end):
            raise ValueError("start and end are the same time")
        zone(self.timezone)

    def around(self, now: datetime) -> tuple[datetime, datetime] | None:
        """(when the window began, when it ends) if ``now`` is in it, else None."""
        (start_day, start), (end_day, end) = self._minute(self.start), self._minute(self.end)
        local = now.astimezone(zone(self.timezone))
        period = 7 * 1440 if start_day is not None else 1440
        begin = (start_day or 0) * 1440 + start
        finish = (end_day or 0) * 1440 + end
        minute = (local.weekday() * 1440 if start_day is not None else 0) + local.hour * 60 + local.minute
        into = (minute - begin) % period
        if into >= (finish - begin) % period:
            return None
        top = local.replace(second=0, microsecond=0)
        return top - timedelta(minutes=into), top + timedelta(minutes=(finish - minute) % period)

    def __str__(self) -> str:
        return f"{self.start} – {self.end} {self.timezone}"


def zone(name: str) -> ZoneInfo:
    """The time zone ``name`` (``Europe/Berlin``, ``UTC``); ValueError when this machine does not know it."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"timezone {name!r} is not a time zone this machine knows (Europe/Berlin, UTC)") from None


@dataclass(frozen=True)
class EnvConfig:
    """One deploy target: an AWS account and region, or the local sandbox."""

    name: str
    region: str
    cluster: str
    service: str
    container: str
    repository: str
    stacks: Stacks
    profile: str | None = None
    # The AWS account (12 digits) this environment lives in: commands that change it first check that the
    # credentials act there (STS GetCallerIdentity), and refuse otherwise. Unset: not checked.
    account: str | None = None
    endpoint_url: str | None = None
    # Push to this registry host instead of the one ECR names (for a local registry); no ECR token then.
    registry: str | None = None
    base_image: str | None = None
    poll_interval: float | None = None
    wait_timeout: float = 600.0
    # How long a command waits for the lock another deploy holds (seconds; 0: refused at once, the default);
    # $DEPLOYKIT_LOCK_WAIT (600, 90s, 15m) overrides it. See deploykit.lock.
    lock_wait: float = 0.0
    protected: bool = False
    # Deploy only commits a remote branch holds (as this clone last fetched them): a shared environment running a
    # commit only one laptop has stops every teammate's deploy.auto there (its live SHA not in their history).
    # $DEPLOYKIT_ALLOW_UNPUSHED=1 overrides it (an emergency). See commands.core.
    require_pushed: bool = False
    # Ask before a command changes it (a deploy, a rollback, a restart): the plan, then "[y/N]" on the terminal;
    # --yes or $DEPLOYKIT_YES=1 answer for a script (CI, whose job's approval is the confirmation). See commands.
    confirm: bool = False
    # Another environment whose tested state this one takes (dev for prod): a deploy here of a component (the app,
    # a function, a stack) is refused unless that environment runs it as this checkout has it; see deploykit.auto.
    promote_from: str = ""
    # Put each deploy run's figures in CloudWatch (namespace deploykit) for the deploy dashboard; see deploykit.metrics.
    metrics: bool = True
    # How CloudFormation applies a stack update: "standard" (each resource waited for until it is ready) or "express"
    # (done once each resource's configuration is applied; deploykit then waits for the app's service itself, and the
    # smoke checks follow). Not for a protected environment; see deploykit.stacks.
    stack_mode: str = "standard"
    # The SNS topics CloudFormation sends every stack's events to (``cdk deploy --notification-arns``), with those a
    # stack of the CDK app names itself (``Stack(notification_arns=...)``). Unset, and the app naming none: each
    # stack keeps the topics it has; [] takes them off. See deploykit.stack_chain.notification_arns.
    notification_arns: tuple[str, ...] | None = None
    # The IAM role CloudFormation acts with for every stack operation (a service role, as ``cdk deploy --role-arn`` and
    # ``sam deploy --role-arn`` give it): the deploying credentials then need iam:PassRole on it rather than the
    # rights of the stacks' resources. Unset: each stack keeps the role it has (CloudFormation's rule), or acts with
    # the deploying credentials.
    cloudformation_role_arn: str | None = None
    # The app's service: how many tasks it runs, and each one's size on Fargate (CPU units, 1024 a vCPU; memory in
    # MiB, a combination FARGATE_SIZES takes). Unset: 1 task of 256 and 512, the CDK app's defaults. The CDK app
    # puts them in the Fargate stack (deploykit.synth.cdk_context), so a change deploys that stack.
    desired_count: int | None = None
    task_cpu: int | None = None
    task_memory: int | None = None
    lambda_canary: LambdaCanary = field(default_factory=LambdaCanary)
    app_error_watch: ErrorWatch = field(default_factory=ErrorWatch)
    # The team's own CloudWatch alarms, watched after each deploy's smoke; see deploykit.watch.WatchAlarms.
    alarm_watch: AlarmWatch = field(default_factory=AlarmWatch)
    # The gate on ECR's scan of each new image before it runs here (off unless set); see deploykit.scan_gate.
    image_scan: ImageScan = field(default_factory=ImageScan)
    # Times that come back when deploys are refused (Fridays from 15:00 to Monday 08:00); see deploykit.freeze.
    freeze_windows: tuple[FreezeWindow, ...] = ()
    # Values the CDK app reads with ``node.try_get_context(KEY)`` when it is synthesized for this environment, as
    # ``cdk deploy --context KEY=VALUE`` gives them: the settings of the team's own stacks (a retention, a size, an
    # address), per environment. Over cdk/cdk.json's context; deploykit's own keys (CONTEXT_KEYS) are not taken here.
    context: dict[str, Any] = field(default_factory=dict)
    # Overrides of the endpoints read from the stacks' outputs (alb_url, api_url, jwks_url, ...); a value
    # may use the outputs as {OutputKey} fields, e.g. "http://127.0.0.1:4567/restapis/{ApiId}/{ApiStageName}/".
    endpoints: dict[str, str] = field(default_factory=dict)
    retry_mode: str = "standard"
    max_attempts: int = 5
    connect_timeout: float = 5.0
    read_timeout: float = 60.0

    @property
    def is_local(self) -> bool:
        """True when the environment's AWS endpoint is on this machine (the sandbox)."""
        return bool(self.endpoint_url) and any(
            host in (self.endpoint_url or "") for host in ("127.0.0.1", "localhost", "[::1]")
        )

    @property
    def poll_seconds(self) -> float:
        """Polling interval: configured, or 1 s against the sandbox and 5 s against AWS."""
        if self.poll_interval is not None:
            return self.poll_interval
        return 1.0 if self.is_local else 5.0


@dataclass(frozen=True)
class Config:
    """The whole deploy.toml."""

    path: Path
    environments: dict[str, EnvConfig]
    default_env: str = "sandbox"
    build: BuildConfig = field(default_factory=BuildConfig)
    # The app's release command, run in each new image before it takes traffic; see deploykit.release.
    release: ReleaseCommand = field(default_factory=ReleaseCommand)
    # Settings of the local sandbox (ports...). deploykit does not use them; the sandbox package
    # validates this table itself.
    sandbox: dict[str, Any] = field(default_factory=dict)
    # Settings of plugins, by plugin name ([plugins.team_checks]); each plugin reads its own table in its
    # deploykit_configure hook. deploykit checks only that each names a plugin (deploykit.plugins.check_tables).
    plugins: dict[str, Any] = field(default_factory=dict)
    # How changed paths map to deployable components (inv deploy.auto, inv diff); see deploykit.changes.
    changes: ChangeRules = field(default_factory=ChangeRules)
    # Environments made on demand from a pattern ([environments."dev-*"]: --env dev-alice), by pattern: its table as
    # written, {env} standing for the name; see :meth:`environment`.
    patterns: dict[str, Any] = field(default_factory=dict)
    _made: dict[str, EnvConfig] = field(default_factory=dict, compare=False, repr=False)

    @property
    def root(self) -> Path:
        """The project root: the folder that holds deploy.toml."""
        return self.path.parent

    def table_of(self, env: str) -> str:
        """The table of deploy.toml that makes the environment ``env``: ``environments.dev``, or its pattern's
        (``environments."dev-*"``)."""
        if env not in self.environments:
            made = next((pattern for pattern in self.patterns if pattern_matches(pattern, env)), None)
            if made is not None:
                return _table("environments", made)
        return _table("environments", env)

    @cached_property
    def stack_roles(self) -> tuple[str, ...]:
        """The stack roles of every environment (each names the same): the platform's five, then the team's own."""
        envs = list(self.environments.values())
        return (*STACK_ROLES, *(role for role, _ in envs[0].stacks.own)) if envs else STACK_ROLES

    def plugin_settings(self, name: str, keys: Collection[str]) -> tuple[Mapping[str, Any], str]:
        """The plugin ``name``'s table of deploy.toml (``[plugins.NAME]``; empty when there is none) and how an error
        names it (``<deploy.toml>: [plugins.NAME]``); ConfigError for a value that is not a table (``[plugins] NAME =
        5``), or a key not among ``keys`` (a misspelt setting is refused, not left unread). For a plugin's
        ``deploykit_configure``."""
        settings = self.plugins.get(name, {})
        where = f"{self.path}: [plugins.{name}]"
        if not isinstance(settings, Mapping):
            raise ConfigError(f"{where} must be a table", next_step=f"write it as a table: [plugins.{name}]")
        unknown = sorted(set(settings) - set(keys))
        if unknown:
            raise ConfigError(f"{where} has unknown keys {unknown}", next_step=f"use only {', '.join(sorted(keys))}")
        return settings, where

    def env_flag(self, name: str) -> str:
        """`` --env NAME`` for a command shown for a person to run, unless one without ``--env`` takes that environment
        already (``$DEPLOYKIT_ENV``, else ``default_env``): copied as shown, it deploys where it was meant to."""
        bare = (os.environ.get(ENV_VAR_ENV) or "").strip() or self.default_env
        return "" if name == bare else f" --env {name}"

    def environment(self, name: str | None = None) -> EnvConfig:
        """The named environment, else ``$DEPLOYKIT_ENV``, else ``default_env``: one deploy.toml defines, or one a
        pattern makes (``dev-alice`` from ``[environments."dev-*"]``, ``{env}`` in its values standing for the name)."""
        chosen = self.default_env
        for said, value in (("--env", name), (f"${ENV_VAR_ENV}", os.environ.get(ENV_VAR_ENV))):
            if value is not None and not value.strip():  # `--env "$TARGET"`, TARGET unset: not the default
                raise ConfigError(
                    f"the environment's name is empty ({said} is ''): an unset variable?",
                    next_step=f"name one: {', '.join(sorted(self.environments))}; or leave {said} out for "
                    f"{self.default_env!r}, deploy.toml's default_env",
                )
            if value:
                chosen = value
                break
        if chosen in self.environments:
            return self.environments[chosen]
        if chosen in self._made:
            return self._made[chosen]
        matching = [pattern for pattern in self.patterns if pattern_matches(pattern, chosen)]
        if len(matching) > 1:
            raise ConfigError(
                f"environment {chosen!r} matches more than one pattern of deploy.toml: {', '.join(matching)}",
                next_step="pick a name only one of them matches, or make the patterns part ways",
            )
        if not matching:
            patterns = [f"{p.replace('*', '<name>')} (from {p!r})" for p in self.patterns]
            known = ", ".join([*sorted(self.environments), *patterns]) or "none"
            raise ConfigError(
                f"unknown environment {chosen!r} (deploy.toml defines: {known})",
                next_step=f"pass --env with one of: {known}, or add [{_table('environments', chosen)}] to {self.path}",
            )
        made = pattern_environment(matching[0], self.patterns[matching[0]], chosen, str(self.path))
        _check_promotion(self, made, str(self.path), _table("environments", matching[0]))
        return self._made.setdefault(chosen, made)

    def base_image_for(self, env: EnvConfig) -> str:
        return env.base_image or self.build.base_image

    def lambda_architecture_for(self, env: EnvConfig | None) -> str:
        """What ``env``'s Lambda functions run on, and their requirements are vendored for: ``[build]
        lambda_architecture``; on an environment on this machine (the sandbox, which runs functions here), this
        machine's own, as its images are built for this engine's platform."""
        return _on_this_machine(env) or self.build.lambda_architecture

    def lambda_python_for(self, env: EnvConfig | None) -> str:
        """The CPython ``env``'s functions run on, and their requirements are vendored for (``3.12``): ``[build]
        lambda_runtime``'s; on an environment on this machine (the sandbox, which runs functions on its own Python),
        this Python's, whatever the runtime says."""
        if env is not None and env.is_local:
            return f"{sys.version_info.major}.{sys.version_info.minor}"
        return python_of(self.build.lambda_runtime)

    def lambda_target(self, env: EnvConfig | None) -> Target:
        """What ``env``'s functions' zips are made for (``packaging.package_function(folder, **target)``): their
        architecture (:meth:`lambda_architecture_for`) and their CPython (:meth:`lambda_python_for`). None: no
        environment read, as ``[build]`` says the functions run on AWS (inv lambda.check)."""
        return Target(architecture=self.lambda_architecture_for(env), python=self.lambda_python_for(env))

    def cpu_architecture_for(self, env: EnvConfig) -> str:
        """What ``env``'s Fargate tasks run on, as ECS names it (``X86_64``, ``ARM64``): ``[build] platform``'s, which
        the image is built for; on an environment on this machine (the sandbox), this machine's own, as its images
        are built for this engine's platform."""
        here = _on_this_machine(env)
        return ECS_CPU[here] if here else PLATFORMS[self.build.platform]


def _on_this_machine(env: EnvConfig | None) -> str | None:
    """This machine's CPU as Lambda names it (x86_64, arm64), for an environment that runs here (the sandbox); None
    for another environment (or none), or a CPU neither names."""
    return HOST_ARCHITECTURES.get(platform.machine().lower()) if env is not None and env.is_local else None


def find_config(start: Path | None = None) -> Path:
    """``$DEPLOYKIT_CONFIG``, else the nearest deploy.toml from ``start`` (default: cwd) upwards."""
    if os.environ.get(ENV_VAR_CONFIG):
        return Path(os.environ[ENV_VAR_CONFIG])
    here = (start or Path.cwd()).resolve()
    passed: list[Path] = []  # of that name, but no file: a folder, a broken link
    for folder in (here, *here.parents):
        candidate = folder / CONFIG_NAME
        if candidate.is_file():
            return candidate
        if os.path.lexists(candidate):
            passed.append(candidate)
    others = f" (passed over: {', '.join(map(str, passed))}, no file)" if passed else ""
    raise ConfigError(
        f"no {CONFIG_NAME} found in {here} or any folder above it{others}",
        next_step=f"run from the project checkout, or set {ENV_VAR_CONFIG}=/path/to/{CONFIG_NAME}",
    )


def _resolved(path: Path) -> Path:
    """``path`` resolved (links followed); ConfigError for a loop of links, where resolve() raised RuntimeError."""
    try:
        resolved = path.resolve()
    except (RuntimeError, OSError) as exc:  # a loop: RuntimeError on Python 3.11 and 3.12
        why = str(exc)
    else:
        if not resolved.is_symlink():
            return resolved
        why = f"Symlink loop from {str(path)!r}"  # Python 3.13's resolve() of a loop: the link itself, no error
    raise ConfigError(
        f"{path} cannot be read: {why}", next_step=f"point {path} (or {ENV_VAR_CONFIG}) at the file itself"
    )


def load_config(path: Path | None = None) -> Config:
    """Read and validate deploy.toml; every problem is a ConfigError naming the key. A command reads it through its
    :class:`ConfigCache` (``Runtime.configs``), which does this once however many of its parts ask."""
    path = _resolved(path or find_config())
    return _validated(_parsed(_read(path), path), path)


def _read(path: Path) -> bytes:
    """deploy.toml's bytes; ConfigError when it cannot be read."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{path} does not exist", next_step="create it (see README, 'deploy.toml')") from None
    except IsADirectoryError:
        raise ConfigError(
            f"{path} is a folder, not a file",
            next_step=f"point {ENV_VAR_CONFIG} at the {CONFIG_NAME} file itself, or unset it",
        ) from None
    except OSError as exc:
        raise ConfigError(
            f"{path} cannot be read: {exc.strerror or exc}", next_step="check the file's permissions"
        ) from None


def _parsed(data: bytes, path: Path) -> dict[str, Any]:
    """deploy.toml's ``data`` as TOML: UTF-8, as TOML is, a byte order mark at the start left out (some Windows editors
    write one, and tomllib refuses it as an invalid statement); ConfigError when it is not UTF-8 or not TOML."""
    try:
        return tomllib.loads(data.decode("utf-8-sig"))
    except UnicodeDecodeError as exc:
        line = exc.object[: exc.start].count(b"\n") + 1
        raise ConfigError(
            f"{path} is not UTF-8 text: byte {exc.object[exc.start]:#04x} on line {line} ({exc.reason})",
            next_step=f"save {path.name} as UTF-8 (TOML files are UTF-8); the editor's encoding setting does it",
        ) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(
            f"{path} is not valid TOML: {exc}", next_step=f"fix the syntax at the place named in {path}"
        ) from None
    except (ValueError, RecursionError) as exc:  # TOML, yet past what Python reads: an integer of thousands of digits,
        # arrays or tables nested a thousand deep
        what = "nested too deep" if isinstance(exc, RecursionError) else str(exc).split(";")[0]
        raise ConfigError(
            f"{path} could not be read: {what}", next_step=f"no setting takes such a value: fix it in {path}"
        ) from None


def _validated(raw: dict[str, Any], path: Path) -> Config:
    try:
        return parse_config(raw, path)
    except ConfigError as exc:  # a key of the wrong kind or value: where it is said, how to fix it
        exc.next_step = exc.next_step or f"fix it in {path} (README, 'deploy.toml', says what each key takes)"
        raise


class ConfigCache:
    """deploy.toml as one command reads it: parsed and validated once however many of its parts ask for it (the
    task's check of the whole file before it runs, the sandbox's settings, the command's environment, the parts that
    look up an environment again), where each of them read, parsed and validated it anew.

    Each ask still reads the file (a few kB, microseconds), and the TOML is parsed and validated again only when its
    bytes changed: an edit while the command waited for another deploy's lock (:func:`commands.until_unlocked` runs
    it again from the start) is read, as it was before. A file's size and modification time would not tell an edit of
    the same length within one tick of the file system's clock. One per command (``commands.Runtime.configs``), never
    module-wide: a test's or another command's deploy.toml is never taken for this one's."""

    def __init__(self) -> None:
        self._lock = threading.Lock()  # a command asks from several threads at times (one AWS factory per thread)
        self._files: dict[Path, tuple[bytes, dict[str, Any], Config | None]] = {}

    def load(self, path: Path | None = None) -> Config:
        """:func:`load_config` of ``path`` (default: :func:`find_config`): the same Config while the file is
        unchanged."""
        path = _resolved(path or find_config())
        with self._lock:
            data, raw, config = self._entry(path)
            if config is None:
                config = _validated(raw, path)  # a ConfigError is raised again at the next ask, the file read again
                self._files[path] = (data, raw, config)
            return config

    def toml(self, path: Path | None = None) -> dict[str, Any]:
        """``path`` (default: :func:`find_config`) parsed, not validated: for a reader of a table of its own (the
        sandbox's [sandbox]). Shared with the other askers: read, never changed."""
        path = _resolved(path or find_config())
        with self._lock:
            return self._entry(path)[1]

    def _entry(self, path: Path) -> tuple[bytes, dict[str, Any], Config | None]:
        data = _read(path)
        entry = self._files.get(path)
        if entry is None or entry[0] != data:
            entry = self._files[path] = (data, _parsed(data, path), None)
        return entry


# -- environments made from a pattern -----------------------------------------------------------------------------

# What the * of a pattern's name stands for: a short lowercase name (a person's, a ticket's), so that every AWS name
# made from it stays valid and within its limits.
PATTERN_PART = r"[a-z0-9]{1,20}"
_PATTERN_NAME = re.compile(r"^[a-z][a-z0-9-]*\*[a-z0-9-]*$|^\*[a-z0-9-]+$")
PLACEHOLDER = "{env}"
# Each environment a pattern makes is a whole platform of its own: these of its names must hold {env}, so that no
# two share a cluster, a service, a repository or a stack (nor, through the registry stack, a bucket, a lock or a
# history).
OWN_NAMES = ("cluster", "service", "repository")
SAMPLE_PART = "x"  # the name a pattern is checked with as deploy.toml is read


def pattern_matches(pattern: str, name: str) -> bool:
    """Whether ``pattern`` (``dev-*``) makes the environment ``name`` (``dev-alice``)."""
    before, _, after = pattern.partition("*")
    return re.fullmatch(re.escape(before) + PATTERN_PART + re.escape(after), name) is not None


def made_by(pattern: str, registry: str) -> re.Pattern[str]:
    """What the registry stack of each environment ``pattern`` makes is named: its ``registry`` stack name as
    written, ``{env}`` standing for the name (a group); how the environments it made are found by their stacks."""
    before, _, after = pattern.partition("*")
    parts = re.split("({env})", registry)
    first = parts.index(PLACEHOLDER) if PLACEHOLDER in parts else -1
    name = f"(?P<env>{re.escape(before)}{PATTERN_PART}{re.escape(after)})"
    return re.compile(
        "".join(
            (name if n == first else "(?P=env)") if part == PLACEHOLDER else re.escape(part)
            for n, part in enumerate(parts)
        )
    )


def pattern_environment(pattern: str, body: dict[str, Any], name: str, where: str) -> EnvConfig:
    """The environment ``name`` as the table of ``pattern`` makes it: each ``{env}`` in its values replaced by the
    name; validated as any environment (ConfigError naming the pattern otherwise)."""
    table = _table("environments", pattern)
    env = _build(EnvConfig, {**_filled(body, name), "name": name}, table, where)
    _check_env_values(env, where, table)
    return env


def _filled(value: Any, name: str) -> Any:
    if isinstance(value, str):
        return value.replace(PLACEHOLDER, name)
    if isinstance(value, dict):
        return {key: _filled(item, name) for key, item in value.items()}
    if isinstance(value, list):
        return [_filled(item, name) for item in value]
    return value


def _check_pattern(pattern: str, body: dict[str, Any], where: str) -> None:
    """A pattern's name has one * and its table makes valid environments, none of whose names it shares."""
    key = f'environments."{pattern}"'
    if not _PATTERN_NAME.match(pattern):
        raise ConfigError(
            f"{where}: {key}: a pattern's name has one * (standing for a short lowercase name) and lowercase letters, "
            "digits and hyphens around it",
            next_step='name it like "dev-*" (then --env dev-alice), or give the environment a plain name',
        )
    pattern_environment(pattern, body, pattern.replace("*", SAMPLE_PART), where)  # valid as any environment
    shared = [name for name in OWN_NAMES if PLACEHOLDER not in str(body.get(name, ""))]
    roles = [*STACK_ROLES, *(r for r in (body.get("stacks") or {}) if r not in STACK_ROLES)]
    shared += [f"stacks.{role}" for role in roles if PLACEHOLDER not in _stack_of(body, role)]
    if shared:
        raise ConfigError(
            f"{where}: {key}: each environment it makes is a whole platform of its own, but these names would be the "
            f"same for all of them: {', '.join(shared)}",
            next_step=f'put {PLACEHOLDER} in each, e.g. cluster = "car-rental-{PLACEHOLDER}" and, in [environments.'
            f'"{pattern}".stacks], registry = "CarRental-{PLACEHOLDER}-Registry"',
        )


def _stack_of(body: dict[str, Any], role: str) -> str:
    stacks = body.get("stacks")
    return str(stacks.get(role, "")) if isinstance(stacks, dict) else ""


def parse_config(raw: dict[str, Any], path: Path) -> Config:
    """Validate an already-parsed TOML document (also used by tests)."""
    where = str(path)
    envs_raw = raw.get("environments")
    if not isinstance(envs_raw, dict) or not envs_raw:
        raise ConfigError(
            f"{where}: missing [environments.<name>] tables",
            next_step="define at least [environments.sandbox] (see README, 'deploy.toml')",
        )
    environments = {}
    patterns: dict[str, Any] = {}
    for name, body in envs_raw.items():
        table = _table("environments", name)
        if not isinstance(body, dict):
            raise ConfigError(f"{where}: {table} must be a table")
        if "name" in body:
            raise ConfigError(f"{where}: unknown key '{table}.name' (the table's name is the name)")
        if "*" not in name and not _ENV_NAME.match(name):
            raise ConfigError(
                f"{where}: [{table}]: an environment's name is letters, digits, '.', '_' and '-', starting with a "
                "letter or digit, at most 63 (it names folders and appears in commands)",
                next_step=f"rename it in {where}, e.g. [environments.staging]",
            )
        if "*" in name:
            _check_pattern(name, body, where)
            patterns[name] = body
        else:
            environments[name] = _build(EnvConfig, {**body, "name": name}, f"environments.{name}", where)
    top = {k: v for k, v in raw.items() if k != "environments"}
    for key in ("path", "patterns", "_made"):
        if key in top:
            raise ConfigError(f"{where}: unknown key {key!r}")
    config = _build(Config, {**top, "environments": environments, "path": path, "patterns": patterns}, "", where)
    if config.default_env not in config.environments:
        raise ConfigError(
            f"{where}: default_env = {config.default_env!r} names no environment "
            f"(defined: {', '.join(sorted(config.environments))})",
            next_step="set default_env to one of the [environments.*] names",
        )
    for key, days in (("build.base.max_age_days", config.build.base.max_age_days),
                      ("build.pull_after_days", config.build.pull_after_days)):  # fmt: skip
        if not 0 <= days <= MAX_DAYS:  # 1e10 days: no date is that far, and a build crashed on it
            table, _, name = key.rpartition(".")
            raise ConfigError(
                f"{where}: {key} must be from 0 (never by age) to {MAX_DAYS}, not {days:g}",
                next_step=f"fix [{table}] {name} in deploy.toml",
            )
    ca = config.build.extra_ca_dir
    if ca and not Path(ca).is_absolute():  # deploy.toml's folder's, as [build] context: not the shell's
        config = dataclasses.replace(
            config, build=dataclasses.replace(config.build, extra_ca_dir=str(path.parent / ca))
        )
    if config.build.keep_local_images < 0:
        raise ConfigError(
            f"{where}: build.keep_local_images must be 0 (never remove) or more, not {config.build.keep_local_images}",
            next_step="fix [build] keep_local_images in deploy.toml",
        )
    if config.build.platform not in PLATFORMS:
        raise ConfigError(
            f"{where}: build.platform = {config.build.platform!r} is not a platform images are built for",
            next_step=f"set [build] platform to one of: {', '.join(PLATFORMS)} (what the task definition runs)",
        )
    if config.build.lambda_architecture not in ARCHITECTURES:
        raise ConfigError(
            f"{where}: build.lambda_architecture = {config.build.lambda_architecture!r} is not an architecture "
            "Lambda runs functions on",
            next_step=f"set [build] lambda_architecture to one of: {', '.join(ARCHITECTURES)}",
        )
    if config.build.lambda_runtime not in LAMBDA_RUNTIMES:
        raise ConfigError(
            f"{where}: build.lambda_runtime = {config.build.lambda_runtime!r} is not a Python runtime of Lambda's",
            next_step=f"set [build] lambda_runtime to one of: {', '.join(LAMBDA_RUNTIMES)}",
        )
    unnamed = [m for m in config.build.lambda_runtime_modules if not _MODULE_NAME.fullmatch(m)]
    if unnamed:
        raise ConfigError(
            f"{where}: build.lambda_runtime_modules holds {unnamed[0]!r}, which is not a module's name",
            next_step="list top-level module names there (yaml, not PyYAML; a layer's modules), or remove the key",
        )
    if config.release.timeout <= 0:
        raise ConfigError(
            f"{where}: release.timeout must be more than 0 seconds, not {config.release.timeout:g}",
            next_step="fix [release] timeout in deploy.toml (how long the release command may run)",
        )
    _check_build(config.build, where)
    if config.release.command and not all(part.strip() for part in config.release.command[:1]):
        raise ConfigError(
            f"{where}: release.command starts with an empty string: it names no program",
            next_step='write it in exec form, e.g. command = ["python", "-m", "app.release"], or [] for none',
        )
    for env in config.environments.values():
        _check_env_values(env, where)
        _check_promotion(config, env, where)
    _check_apart(config, where)
    _check_same_stacks(config, where)
    for pattern, body in config.patterns.items():  # its promote_from, checked on the environment a sample name makes
        sample = pattern_environment(pattern, body, pattern.replace("*", SAMPLE_PART), where)
        _check_promotion(config, sample, where, _table("environments", pattern))
    _check_rules(config.changes.rules, where, config.stack_roles)
    return config


def _check_rules(rules: tuple[ChangeRule, ...], where: str, roles: Collection[str]) -> None:
    """Each rule of [changes] well formed; at least one; none after a rule that takes every path (``**``), which
    they would never get."""
    if not rules:
        raise ConfigError(
            f"{where}: changes.rules is empty: no change would deploy anything",
            next_step=f"remove [changes] from {where} for the rules of this repository's layout, or list yours",
        )
    for index, rule in enumerate(rules):
        try:
            rule.check(roles)
        except ValueError as exc:
            raise ConfigError(
                f"{where}: changes.rules[{index}] {rule}: {exc}",
                next_step=f"fix that rule of [changes] in {where} (README, 'deploy.toml')",
            ) from None
        if "**" in rule.paths and index < len(rules) - 1:
            raise ConfigError(
                f'{where}: changes.rules[{index}] {rule} takes every path ("**"), so the {len(rules) - index - 1} '
                "rule(s) after it never match (the first rule that matches a path wins)",
                next_step=f"make it the last rule of [changes] in {where}, or narrow its paths",
            )


def _check_build(build: BuildConfig, where: str) -> None:
    """The strings of [build] and [build.base] that name something (a folder, a file, an image, a suite, a mirror)
    are not empty, nor are the packages."""
    named = {
        "build.context": build.context,
        "build.dockerfile": build.dockerfile,
        "build.base_image": build.base_image,
        "build.base.name": build.base.name,
        "build.base.suite": build.base.suite,
        "build.base.mirror": build.base.mirror,
    }
    for key, value in named.items():
        if not value.strip() or value != value.strip():
            table, _, name = key.rpartition(".")
            raise ConfigError(
                f"{where}: {key} = {value!r} is {'empty' if not value.strip() else 'padded with spaces'}",
                next_step=f"fix [{table}] {name} in {where}, or remove it for its default (README, 'deploy.toml')",
            )
    if not build.base.packages or not all(package.strip() for package in build.base.packages):
        raise ConfigError(
            f"{where}: build.base.packages must list the Debian packages the base image needs, none empty",
            next_step=f"fix [build.base] packages in {where}, or remove it for its default",
        )


def _check_same_stacks(config: Config, where: str) -> None:
    """Every environment, and every one a pattern makes, names the same stacks of the team's own: each runs the one
    CDK app, and a path of cdk/ is the same component in all of them."""
    named = {_table("environments", name): env.stacks.own for name, env in config.environments.items()}
    for pattern, body in config.patterns.items():
        named[_table("environments", pattern)] = pattern_environment(pattern, body, pattern.replace("*", SAMPLE_PART),
                                                                     where).stacks.own  # fmt: skip
    first, *others = named.items()
    for table, own in others:
        missing = sorted({r for r, _ in first[1]} ^ {r for r, _ in own})
        if missing:
            role = missing[0]
            lacking, having = (table, first[0]) if role in dict(first[1]) else (first[0], table)
            raise ConfigError(
                f"{where}: [{having}.stacks] names the stack role {role!r} and [{lacking}.stacks] does not: every "
                "environment runs the same CDK app, so each names the same stacks",
                next_step=f'add {role} = "<its stack name there>" to [{lacking}.stacks] (or remove it from both)',
            )


def endpoint_address(url: str) -> tuple[str, int | None]:
    """The host (every name of this machine's loopback as one: the sandbox listens on IPv4 alone) and port (the
    scheme's when unsaid) of an endpoint URL: ``http://localhost:4566/`` is ``http://127.0.0.1:4566``."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port or {"http": 80, "https": 443}.get(parts.scheme)
    except ValueError:  # a port out of range: deploy.toml's check says so
        return url, None
    host = (parts.hostname or "").lower()
    return ("loopback" if host in ("127.0.0.1", "localhost") else host), port


def may_be_together(one: EnvConfig, other: EnvConfig) -> bool:
    """Whether two environments may live in one account and region: the same region and endpoint, and no two
    accounts deploy.toml pins apart (their credentials' accounts then tell)."""
    same = one.region == other.region and _place(one.endpoint_url) == _place(other.endpoint_url)
    return same and (not (one.account and other.account) or one.account == other.account)


def _place(url: str | None) -> str:
    """An endpoint URL as the place it names (:func:`endpoint_address`; "" for none: AWS's own)."""
    if not url:
        return ""
    host, port = endpoint_address(url)
    return f"endpoint {host}:{port}"


def _check_apart(config: Config, where: str) -> None:
    """No two environments on the same AWS (one endpoint, or one account, or one profile's, and one region) share a
    stack: they would be one platform under two names, each deploy replacing the other's, with one lock and one
    history, which the registry stack keeps. Environments that name none of the three (the credentials of the shell
    or the CI job: dev's and prod's may be two accounts) are not compared."""
    seen: dict[tuple[str, str, str], str] = {}
    for env in config.environments.values():
        named = (  # (the place compared, as said): an endpoint by its host and port, however its URL is written
            (_place(env.endpoint_url), env.endpoint_url or ""),
            (f"account {env.account}" if env.account else "",) * 2,
            (f"profile {env.profile}" if env.profile else "",) * 2,
        )
        for where_it_runs, said in (n for n in named if n[0]):  # none: the credentials of the shell or the CI job
            for stack in env.stacks.roles().values():
                other = seen.setdefault((where_it_runs, env.region, stack), env.name)
                if other != env.name:
                    raise ConfigError(
                        f"{where}: environments {other} and {env.name} both have the stack {stack} in the same place "
                        f"({said}, {env.region}): they would be one platform, each deploy replacing the other's",
                        next_step=f"give [environments.{env.name}.stacks] names of its own (or another account, "
                        "region or endpoint), or remove one of the two environments",
                    )


def _check_env_values(env: EnvConfig, where: str, table: str = "") -> None:
    """``env``'s values, each within what it takes; ``table``: the table it came from as deploy.toml names it
    (``environments."dev-*"`` for one a pattern made; default: its own)."""
    table = table or _table("environments", env.name)
    prefix = f"{where}: {table}"
    if env.retry_mode not in ("legacy", "standard", "adaptive"):
        raise ConfigError(f"{prefix}.retry_mode must be legacy, standard or adaptive, not {env.retry_mode!r}")
    if env.stack_mode not in STACK_MODES:
        raise ConfigError(
            f"{prefix}.stack_mode must be standard or express, not {env.stack_mode!r}",
            next_step=f'set stack_mode = "express" (faster stack updates) or "standard" in [{table}]',
        )
    if env.stack_mode == "express" and env.protected:
        raise ConfigError(
            f"{prefix}: a protected environment updates its stacks in standard mode (CloudFormation waits until each "
            "resource is ready), not express",
            next_step=f'remove stack_mode = "express" from [{table}] (express is for development environments)',
        )
    for key, value in env.context.items():
        if key in CONTEXT_KEYS:
            raise ConfigError(
                f"{prefix}.context.{key} is a key deploykit gives the CDK app itself, from {CONTEXT_KEYS[key]}",
                next_step=f"set it there, or give your value another key in [{table}.context]",
            )
        if problem := _context_problem(value):
            raise ConfigError(
                f"{prefix}.context.{key} holds {problem}, which the CDK app's context (JSON) cannot carry",
                next_step=f"give it as a string, a number, a boolean, a list or a table in [{table}.context]",
            )
    for arn in env.notification_arns or ():
        if not is_topic_arn(arn):
            raise ConfigError(
                f"{prefix}.notification_arns: {arn!r} is not the ARN of an SNS topic ({TOPIC_ARN_FORM})",
                next_step=f'name SNS topics there, like "arn:aws:sns:{env.region}:123456789012:deploy-events", in '
                f"[{table}] (or remove the key: each stack keeps the topics it has)",
            )
    role = env.cloudformation_role_arn
    if role is not None and not IAM_ROLE_ARN.fullmatch(role):
        raise ConfigError(
            f"{prefix}.cloudformation_role_arn: {role!r} is not the ARN of an IAM role "
            "(arn:aws:iam::ACCOUNT:role/NAME)",
            next_step=f"name the role CloudFormation acts with in [{table}], or remove the key",
        )
    for key in ("wait_timeout", "connect_timeout", "read_timeout"):
        if getattr(env, key) <= 0:
            raise ConfigError(f"{prefix}.{key} must be greater than 0")
    for key in ("wait_timeout", "connect_timeout", "read_timeout", "lock_wait"):  # 1e20: every AWS call then failed
        if getattr(env, key) > LONGEST:
            raise ConfigError(
                f"{prefix}.{key} must be at most {LONGEST:g} seconds (a year), not {getattr(env, key):g}",
                next_step=f"fix {key} in [{table}]",
            )
    if not 0 <= env.max_attempts <= MAX_ATTEMPTS:
        raise ConfigError(
            f"{prefix}.max_attempts must be from 0 (no retry) to {MAX_ATTEMPTS} retries, not {env.max_attempts}"
        )
    if env.lock_wait < 0:
        raise ConfigError(f"{prefix}.lock_wait must be 0 (refused at once) or more seconds, not {env.lock_wait:g}")
    if env.poll_interval is not None and not 0 < env.poll_interval <= 60:
        raise ConfigError(f"{prefix}.poll_interval must be between 0 and 60 seconds")
    if not all(isinstance(v, str) for v in env.endpoints.values()):
        raise ConfigError(f"{prefix}.endpoints: every value must be a string")
    if env.account is not None and not re.fullmatch(r"[0-9]{12}", env.account):
        raise ConfigError(f"{prefix}.account must be an AWS account id, 12 digits in quotes, not {env.account!r}")
    if env.endpoint_url is not None and not _is_url(env.endpoint_url):
        raise ConfigError(
            f"{prefix}.endpoint_url must be an http:// or https:// address with a host, not {env.endpoint_url!r}",
            next_step='set it like "http://127.0.0.1:4566" (the sandbox), or remove it for AWS itself',
        )
    _check_names(env, prefix, table)
    size = size_problem(env.desired_count, env.task_cpu, env.task_memory)
    if size:
        raise ConfigError(f"{prefix}.{size[0]}", next_step=f"in [{table}]: {size[1]}")
    problem = canary_problem(env.lambda_canary)
    if problem:
        raise ConfigError(f"{prefix}.lambda_canary.{problem}", next_step=f"fix [{table}.lambda_canary]")
    for index, window in enumerate(env.freeze_windows):
        try:
            window.check()
        except ValueError as exc:
            raise ConfigError(
                f"{prefix}.freeze_windows[{index}]: {exc}",
                next_step=f'fix it in {where}: start = "Fri 15:00", end = "Mon 08:00", timezone = "Europe/Berlin"',
            ) from None
    problem = watch_problem(env.app_error_watch)
    if problem:
        raise ConfigError(f"{prefix}.app_error_watch.{problem}", next_step=f"fix [{table}.app_error_watch]")
    problem = alarm_problem(env.alarm_watch)
    if problem:
        raise ConfigError(f"{prefix}.alarm_watch.{problem}", next_step=f"fix [{table}.alarm_watch]")
    problem = scan_problem(env.image_scan)
    if problem:
        raise ConfigError(f"{prefix}.image_scan.{problem}", next_step=f"fix [{table}.image_scan]")


def _is_url(text: str) -> bool:
    try:
        parts = urlsplit(text)
        parts.port  # noqa: B018 (a port that is not a number raises)
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname) and text == text.strip()


def _check_names(env: EnvConfig, prefix: str, table: str) -> None:
    """The region, the names of the cluster, service, container, repository and stacks, and the registry: what the
    CDK app and AWS take (checked here as the file is read, not found out when a stack is synthesized); no two stack
    roles on one stack."""
    if not _REGION.match(env.region):
        raise ConfigError(
            f"{prefix}.region = {env.region!r} is not an AWS region", next_step=f'set it like "eu-west-1" in [{table}]'
        )
    for key in ("cluster", "service", "container", "repository"):
        value = getattr(env, key)
        if key == "repository" and not _REPOSITORY.match(value):
            raise ConfigError(
                f"{prefix}.repository = {value!r} is not a name ECR takes: lower-case letters and digits, one '.', "
                "'_' or '-' between them, '/' between namespaces, at most 256 characters",
                next_step=f"fix repository in [{table}]",
            )
        if key != "repository" and not _NAME.match(value):  # ECS refuses '.' and '/' (CloudFormation, mid-deploy)
            raise ConfigError(
                f"{prefix}.{key} = {value!r} is not a name it can have: lower-case letters, digits, '_' or '-', "
                "starting with a letter or digit, at most 255",
                next_step=f"fix {key} in [{table}]",
            )
    names: dict[str, str] = {}
    for role, value in env.stacks.roles().items():
        if not _STACK_NAME.match(value):
            raise ConfigError(
                f"{prefix}.stacks.{role} = {value!r} is not a CloudFormation stack name: letters, digits and '-', "
                "starting with a letter, at most 128",
                next_step=f"fix {role} in [{table}.stacks]",
            )
        if value in names:
            raise ConfigError(
                f"{prefix}.stacks: {names[value]} and {role} both name the stack {value!r}: one would replace the "
                "other",
                next_step=f"give each role its own stack name in [{table}.stacks]",
            )
        names[value] = role
    if env.registry and not _REGISTRY.match(env.registry):  # "": the one ECR names
        raise ConfigError(
            f"{prefix}.registry = {env.registry!r} is not a registry host: host[:port], no scheme",
            next_step=f'set it like "127.0.0.1:5000" in [{table}], or remove it (the registry ECR names)',
        )
    if env.base_image is not None and not env.base_image.strip():
        raise ConfigError(
            f"{prefix}.base_image is empty",
            next_step=f"name an image in [{table}], or remove the key for [build] base_image",
        )


def _check_promotion(config: Config, env: EnvConfig, where: str, table: str = "") -> None:
    """promote_from names another environment, and following it never comes back to ``env``; ``table``: the table
    ``env`` came from (a pattern's, for one it made)."""
    seen = [env.name]
    current = env
    while current.promote_from:
        source = current.promote_from
        label = table if current is env and table else _table("environments", current.name)
        if source in seen:
            raise ConfigError(
                f"{where}: {label}.promote_from goes round in a circle: {' → '.join([*seen, source])}",
                next_step="an environment takes its releases from another that comes before it: break the circle",
            )
        if source not in config.environments:
            raise ConfigError(
                f"{where}: {label}.promote_from = {source!r} names no environment "
                f"(defined: {', '.join(sorted(config.environments))})",
                next_step=f"set it to the environment {current.name} takes its releases from, or remove it",
            )
        seen.append(source)
        current = config.environments[source]


MIN_SLOWDOWN_WATCH = 120.0  # seconds of error watch a slowdown is judged in, at least


def watch_problem(watch: ErrorWatch) -> str | None:
    """What is wrong with an error watch's settings, or None."""
    if watch.seconds < 0:
        return f"seconds must be at least 0 (no watch), not {watch.seconds:g}"
    if watch.max_slowdown != 0 and not watch.max_slowdown > 1:  # nan too
        return (
            f"max_slowdown must be 0 (not judged) or more than 1 (1.5: half again as slow), not {watch.max_slowdown:g}"
        )
    if watch.max_slowdown and not watch.compare:
        return "max_slowdown judges a release against the release before: it needs compare = true"
    if watch.max_slowdown and watch.on and watch.seconds < MIN_SLOWDOWN_WATCH:
        return (
            f"max_slowdown needs seconds = {MIN_SLOWDOWN_WATCH:g} at least (not {watch.seconds:g}): it judges the "
            "watch's minutes after the one it began in, of which a shorter watch has too few"
        )
    return _rate_problem(watch.max_error_rate)


def alarm_problem(watch: AlarmWatch) -> str | None:
    """What is wrong with an alarm watch's settings, or None."""
    if not 0 <= watch.seconds <= MAX_ALARM_WATCH:
        return (
            f"seconds must be from 0 (read once, after smoke) to {MAX_ALARM_WATCH:g} (3 hours), not {watch.seconds:g}"
        )
    if len(watch.alarms) > MAX_ALARMS:
        return f"alarms names {len(watch.alarms)} alarms; at most {MAX_ALARMS} are watched (one DescribeAlarms call)"
    for name in watch.alarms:
        if not 1 <= len(name) <= 255 or name != name.strip():
            return f"alarms: {name!r} is no CloudWatch alarm's name (1 to 255 characters, no space around them)"
        if "*" in name[:-1] or name == "*":
            return (
                f"alarms: {name!r}: a * stands only at the end of a name, after the start the alarms' names share "
                '("car-rental-prod-*": every alarm whose name starts with car-rental-prod-)'
            )
    twice = sorted({name for name in watch.alarms if watch.alarms.count(name) > 1})
    if twice:
        return f"alarms names {twice[0]!r} twice"
    return None


CANARY_STEP = 0.01  # the smallest share of requests a canary takes, in percent (a weight of 0.0001)


def canary_problem(canary: LambdaCanary) -> str | None:
    """What is wrong with a canary's settings (``"percent must ..."``), or None."""
    if not 0 <= canary.percent < 100:
        return f"percent must be at least 0 (no canary) and under 100, not {canary.percent:g}"
    if canary.percent and not CANARY_STEP <= canary.percent <= 100 - CANARY_STEP:
        # Lambda's weights are sent to 4 decimals: 0.004 would route nothing, 99.995 every request
        return f"percent must be 0 (no canary) or from {CANARY_STEP:g} to {100 - CANARY_STEP:g}, not {canary.percent:g}"
    if canary.seconds <= 0:
        return f"seconds must be greater than 0, not {canary.seconds:g}"
    return _rate_problem(canary.max_error_rate)


def _rate_problem(rate: float) -> str | None:
    """What is wrong with a max_error_rate, or None."""
    if not 0 <= rate < 1:
        return f"max_error_rate must be at least 0 and under 1 (a share, 0.01 for 1%), not {rate:g}"
    return None


# A top-level module's name, as deploy.toml's [build] lambda_runtime_modules lists them
_MODULE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


# The CDK context keys deploykit gives the app itself (deploykit.synth.cdk_context) → where deploy.toml sets each: an
# environment's [context] table cannot set them
CONTEXT_KEYS: dict[str, str] = {
    "environment": "the environment's name",
    "account": "account",
    "region": "region",
    "cluster": "cluster",
    "service": "service",
    "container": "container",
    "repository": "repository",
    "registry": "registry",
    "lambda_architecture": "[build] lambda_architecture",
    "lambda_runtime": "[build] lambda_runtime",
    "cpu_architecture": "[build] platform",
    "desired_count": "desired_count",
    "task_cpu": "task_cpu",
    "task_memory": "task_memory",
    "stacks": "the [stacks] table",
}


def _context_problem(value: object) -> str | None:
    """What JSON cannot carry of a context value (a TOML date or time; nan or inf, which Python writes as NaN and
    Infinity and the CDK's node JSON.parse refuses), or None."""
    if isinstance(value, dict):
        return next((found for item in value.values() if (found := _context_problem(item))), None)
    if isinstance(value, list):
        return next((found for item in value if (found := _context_problem(item))), None)
    if isinstance(value, float) and not math.isfinite(value):
        return f"a number JSON has no such value for ({value!r})"
    if value is None or isinstance(value, str | int | float | bool):
        return None
    return f"a {type(value).__name__} ({value!r})"


# An SNS topic's ARN, as CloudFormation takes it for a stack's notifications (the CDK CLI checks --notification-arns
# so too: a change set naming anything else may leave the stack in a state only its deletion ends)
SNS_TOPIC_ARN = re.compile(r"arn:aws(-[a-z]+)*:sns:[a-z]{2}(-[a-z]+)+-[0-9]+:[0-9]{12}:[A-Za-z0-9_-]{1,256}")


# An IAM role's ARN (a path allowed), as CloudFormation takes a service role (RoleARN)
IAM_ROLE_ARN = re.compile(r"arn:aws(-[a-z]+)*:iam::[0-9]{12}:role/[\w+=,.@/-]{1,512}")


def is_topic_arn(arn: object) -> bool:
    """Whether ``arn`` is an SNS topic's ARN, as a stack's notifications take it (:data:`SNS_TOPIC_ARN`)."""
    return isinstance(arn, str) and SNS_TOPIC_ARN.fullmatch(arn) is not None


TOPIC_ARN_FORM = "arn:aws:sns:REGION:ACCOUNT:NAME"


MAX_ATTEMPTS = 20  # [environments.NAME] max_attempts: botocore's retries after the first try

T = TypeVar("T")
_INTERNAL = {"name", "path", "environments", "patterns", "_made"}


def _table(prefix: str, name: str) -> str:
    """A table's name as TOML takes it: ``environments.dev``, ``environments."zz-*"`` (a bare key holds no ``*``)."""
    return f"{prefix}.{name}" if re.fullmatch(r"[A-Za-z0-9_-]+", name) else f'{prefix}."{name}"'


def _build(cls: type[T], data: dict[str, Any], key_path: str, where: str) -> T:
    """Make dataclass ``cls`` from ``data``, checking keys and value types."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    public = [n for n in fields if n not in _INTERNAL]
    if cls is Config:  # read apart, but a key of the file all the same
        public.append("environments")
    for key in data:
        if key not in fields:
            close = difflib.get_close_matches(key, public, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else f" (known keys: {', '.join(public)})"
            raise ConfigError(
                f"{where}: unknown key {_join(key_path, key)!r}{hint}",
                next_step=f"remove or rename it in {where}",
            )
    values: dict[str, Any] = {}
    for name, f in fields.items():
        full = _join(key_path, name)
        if name not in data:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ConfigError(
                    f"{where}: missing required key {full!r}",
                    next_step=f"add {name} = ... to [{key_path or 'top level'}] in {where}",
                )
            continue
        values[name] = _coerce(hints[name], data[name], full, where)
    return cls(**values)


def _coerce(hint: Any, value: Any, key_path: str, where: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (types.UnionType, typing.Union):
        non_none = [a for a in args if a is not type(None)]
        return _coerce(non_none[0], value, key_path, where)
    if dataclasses.is_dataclass(hint) and isinstance(hint, type):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: {key_path!r} must be a table")
        if hint is Stacks:
            return _stacks(value, key_path, where)
        return _build(hint, value, key_path, where)
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: {key_path!r} must be a table")
        return value  # Config.environments (already built) or Config.sandbox (the sandbox validates it)
    if origin is tuple and dataclasses.is_dataclass(args[0]) and isinstance(args[0], type):
        if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
            raise ConfigError(f"{where}: {key_path!r} must be a list of tables ({{ key = value, ... }})")
        return tuple(_build(args[0], v, f"{key_path}[{i}]", where) for i, v in enumerate(value))
    if origin is tuple:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{where}: {key_path!r} must be a list of strings")
        return tuple(value)
    if hint is Path:
        return value
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint is float and isinstance(value, float) and not math.isfinite(value):  # TOML's nan and inf
        raise ConfigError(
            f"{where}: {key_path!r} must be a number, not {value!r}",
            next_step=f"give {key_path} a number in {where}",
        )
    if hint in (str, int, float, bool) and (not isinstance(value, hint) or (hint is int and isinstance(value, bool))):
        raise ConfigError(
            f"{where}: {key_path!r} must be {hint.__name__}, not {type(value).__name__} ({value!r})",
            next_step=f"fix the value of {key_path} in {where}",
        )
    return value


def _stacks(data: dict[str, Any], key_path: str, where: str) -> Stacks:
    """[environments.NAME.stacks]: the platform's five roles, and any other key a stack of the team's own."""
    own: list[tuple[str, str]] = []
    for role, name in data.items():
        if role in STACK_ROLES:
            continue
        close = difflib.get_close_matches(role, STACK_ROLES, n=1, cutoff=0.75)  # a platform role mistyped
        if close or not OWN_ROLE.match(role):
            hint = f"did you mean {close[0]!r}?" if close else "a role is lower-case letters, digits and _"
            raise ConfigError(
                f"{where}: {_join(key_path, role)!r} is no stack role it can take ({hint}; the platform's are "
                f"{', '.join(STACK_ROLES)}, and a stack of your own is named as its file: cdk/stacks/<role>_stack.py)",
                next_step=f"rename it in {where}",
            )
        if not isinstance(name, str):
            raise ConfigError(
                f"{where}: {_join(key_path, role)!r} must be str, not {type(name).__name__} ({name!r})",
                next_step=f"give it the stack's CloudFormation name in {where}",
            )
        own.append((role, name))
    platform = _build(Stacks, {k: v for k, v in data.items() if k in STACK_ROLES}, key_path, where)
    return dataclasses.replace(platform, own=tuple(own))


def _join(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else key
