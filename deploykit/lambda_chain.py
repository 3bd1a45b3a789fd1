"""The Lambda fast path: upload → update function code → publish a version → move the ``live`` alias → smoke.

With a canary (deploykit.canary), the new version first takes a share of the alias's requests, watched, before
move-alias gives it all of them.

``inv deploy.lambda NAME`` ships one function of ``lambda/`` without CloudFormation. Its zip is reproducible
and named by its content (``lambda/<fn>/<sha256>.zip``, :mod:`deploykit.packaging`), so every step can tell
whether its result already exists and skip:

- ``upload-lambda`` (:class:`~deploykit.stack_chain.UploadLambdaCode`): the zip is already in the artifacts bucket;
- ``update-code``: the function's ``$LATEST`` already has that ``CodeSha256``;
- ``publish-version``: a published version already has that code, the function's current configuration, and a
  description naming the key;
- ``move-alias``: ``live`` already points at that version (with no weighted routing).

A version published here is described ``code s3://<bucket>/<key> git <sha12>``: the prefix is what the API
stack writes on the versions CloudFormation publishes (cdk/stacks/api_stack.py), so one reader serves both.
:func:`live_code_keys` reads the key back from the version ``live`` points at: ``inv deploy.stack api`` then
passes the code that is live as the stack's ``<Function>CodeKey`` parameter, instead of reverting it, and
:func:`live_git_sha` tells which commit a function runs.
"""

from __future__ import annotations

import re
import tempfile
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from botocore.exceptions import ClientError

from deploykit import git, lambda_imports, packaging
from deploykit.aws import DENIED, HandedOn, at_once, maybe_applied
from deploykit.clock import Clock, backoff
from deploykit.endpoints import function_id, resolve_endpoints, stacks_functions
from deploykit.errors import ConfigError, StepFailed, UsageError
from deploykit.plan import Context, Outcome, Plan, Step, StepRecord, all_records, carry, walk
from deploykit.plan import Sequence as StepSequence
from deploykit.smoke import Smoke
from deploykit.stack_chain import UploadLambdaCode, artifacts_bucket
from deploykit.stacks import LAMBDA_FUNCTION, StackOutputs, error_code
from deploykit.watch import alarm_watch

if TYPE_CHECKING:
    from deploykit.aws import AwsFactory
    from deploykit.config import Config, EnvConfig
    from deploykit.git import Revision

ALIAS = "live"
LAMBDA_FOLDER = "lambda"
NOT_FOUND = "ResourceNotFoundException"
# Version descriptions: CloudFormation's versions say "code s3://<bucket>/<key>", the fast path's add " git <sha12>".
_CODE_RE = re.compile(r"(?:^|\s)code s3://(?P<bucket>[^/\s]+)/(?P<key>\S+)")
_PACKAGED_KEY_RE = re.compile(rf"{packaging.KEY_PREFIX}/[^/]+/(?P<sha256>[0-9a-f]{{64}})\.zip")  # packaging's keys
_GIT_RE = re.compile(r"(?:^|\s)git (?P<sha>[0-9A-Za-z][0-9A-Za-z-]*)(?:\s|$)")
# What a published version runs besides its code: a version is reused only when these equal $LATEST's, so a
# rollback to old code never brings an old configuration (environment, memory, role...) back with it.
BEHAVIOUR_FIELDS = (
    "PackageType",
    "Runtime",
    "Handler",
    "Role",
    "MemorySize",
    "Timeout",
    "Environment",
    "Layers",
    "VpcConfig",
    "Architectures",
    "EphemeralStorage",
    "TracingConfig",
    "DeadLetterConfig",
    "KMSKeyArn",
    "FileSystemConfigs",
    "ImageConfigResponse",
    "LoggingConfig",
)
UPDATING = ("InProgress", "Pending")
# Polls of an update Lambda is applying (usually done in 1-3 s on AWS): 0.25 s after it, then twice as long each
# time, never longer than 1 s (botocore's own function_updated waiter polls each second) nor than the environment's
# poll_interval, which against AWS (5 s) is for ECS and CloudFormation, whose operations take minutes.
UPDATE_FIRST_POLL = 0.25
UPDATE_MAX_POLL = 1.0


# -- descriptions ---------------------------------------------------------------------------------------------


def version_description(bucket: str, key: str, git_sha: str) -> str:
    """What the fast path writes on a version: CloudFormation's ``code s3://bucket/key`` plus `` git <sha12>``."""
    return f"code s3://{bucket}/{key} git {git_sha}"


def code_location(description: str | None) -> tuple[str, str] | None:
    """(bucket, key) named by a version's description (CloudFormation's or the fast path's); None otherwise."""
    found = _CODE_RE.search(description or "")
    return (found["bucket"], found["key"]) if found else None


def code_key(description: str | None) -> str | None:
    location = code_location(description)
    return location[1] if location else None


def git_sha_of(description: str | None) -> str | None:
    """The ``git <sha12>`` of a fast-path description (``<sha12>-dirty-<hash>`` for a dirty deploy); None otherwise."""
    found = _GIT_RE.search(description or "")
    return found["sha"] if found else None


def runs_named_code(configuration: Mapping[str, Any]) -> bool | None:
    """Whether a version runs the zip its description names: the fast path and the API stack name the zip by its
    SHA-256 (``lambda/<fn>/<sha256>.zip``), which Lambda reports as CodeSha256. None when the description names no
    such zip: neither deploykit nor its stack published the version (a person's publish names none)."""
    named = _PACKAGED_KEY_RE.fullmatch(code_key(configuration.get("Description")) or "")
    return packaging.code_sha256_of(named["sha256"]) == configuration.get("CodeSha256") if named else None


# -- what is live ---------------------------------------------------------------------------------------------


def live_configuration(lambda_client: Any, function_name: str, alias: str = ALIAS) -> dict[str, Any] | None:
    """The configuration of the version ``alias`` points at (its ``Version`` the version's number); None when the
    function or the alias does not exist. One call: Lambda answers an alias as the version it points at."""
    try:
        return dict(lambda_client.get_function_configuration(FunctionName=function_name, Qualifier=alias))
    except ClientError as exc:
        if error_code(exc) == NOT_FOUND:
            return None
        raise


def alias_if_there(lambda_client: Any, function_name: str, alias: str = ALIAS) -> dict[str, Any] | None:
    """The function's ``alias`` (its version, its routing); None when the function or the alias does not exist."""
    try:
        return dict(lambda_client.get_alias(FunctionName=function_name, Name=alias))
    except ClientError as exc:
        if error_code(exc) == NOT_FOUND:
            return None
        raise


def live_code_keys(
    lambda_client: Any, functions: Mapping[str, str], stored: Callable[[str], bool] | None = None
) -> dict[str, str]:
    """fn → the S3 key of the code its ``live`` alias serves, read from that version's description.

    ``functions`` maps each function's folder name to its Lambda function name (``Endpoints.functions``). A
    function without the alias is left out; so is one whose live version's description names no ``code
    s3://bucket/key`` (a person published it), unless ``stored`` says the zip its code would be uploaded as is in the
    bucket (``lambda/<fn>/<sha256>.zip``, named by the content Lambda reports as CodeSha256): a version published by
    hand runs code deploykit uploaded, which a later stack deploy must keep, not revert to its parameter's.
    """
    keys: dict[str, str] = {}
    for fn, function_name in functions.items():
        config = live_configuration(lambda_client, function_name)
        key = code_key(config.get("Description")) if config else None
        if key is None and config and config.get("CodeSha256") and stored is not None:
            named = packaging.zip_key(fn, packaging.sha256_of(str(config["CodeSha256"])))
            key = named if stored(named) else None
        if key:
            keys[fn] = key
    return keys


def live_git_sha(lambda_client: Any, function_name: str) -> str | None:
    """The commit the ``live`` alias's version was deployed from by the fast path (``<sha12>``, or
    ``<sha12>-dirty-<hash>`` for a dirty deploy); None when unknown (no alias, or a version CloudFormation
    published: its description names the code only)."""
    config = live_configuration(lambda_client, function_name)
    return git_sha_of(config.get("Description")) if config else None


def serving_unverified(entry: Mapping[str, str] | None, serving: Mapping[str, Any]) -> bool:
    """Whether the version ``serving`` (the alias's, its configuration) is not the one the live record's ``entry``
    for the function (what the last successful run left and smoked) verified: another version than the one that run
    left the alias on, or, when the record keeps none (a stack deploy), one the fast path published at another commit
    (a run that failed after it moved the alias: kept with --no-rollback, or interrupted)."""
    entry = entry or {}
    if entry.get("version"):
        return str(serving.get("Version", "")) != entry["version"]
    described = git_sha_of(serving.get("Description"))
    return described is not None and described != entry.get("sha")


def deployed_functions(outputs: StackOutputs, env: EnvConfig, *, required: bool = True) -> dict[str, str]:
    """fn (folder name) → Lambda function name, from the environment's endpoints (the outputs of the stacks that
    hold functions: the API stack's, the team's own).

    When other stacks are missing, the outputs of those deployed are enough. When none holds a function and the API
    stack is not deployed: UsageError if ``required``, else an empty mapping.
    """
    return _deployed(outputs, env, required=required)["functions"]


def function_hosts(outputs: StackOutputs, env: EnvConfig) -> dict[str, str]:
    """fn (folder name) → the role of the stack that holds its function now (its outputs name it); a function not
    deployed is not there."""
    roles = {name: role for role, name in env.stacks.roles().items()}
    return {fn: roles[stack] for fn, stack in _deployed(outputs, env, required=False)["hosts"].items()}


def _deployed(outputs: StackOutputs, env: EnvConfig, *, required: bool) -> dict[str, dict[str, str]]:
    try:
        endpoints = resolve_endpoints(outputs, env, env.endpoints)
    except ConfigError:
        raise
    except UsageError:
        pass
    else:
        return {"functions": dict(endpoints.functions), "hosts": dict(endpoints.hosts)}
    names = list(env.stacks.roles().values())
    read = at_once({name: partial(outputs, name) for name in names})  # answered from memory: resolved just now
    held = stacks_functions({name: dict(found) for name in names if (found := read[name]) is not None})
    if required and not held["functions"] and read[env.stacks.api] is None:
        raise UsageError(
            f"the API stack {env.stacks.api} is not deployed in environment {env.name!r}",
            next_step=f"deploy the API stack first: inv deploy.stack api --env {env.name}",
        )
    return held


def deployed_function(outputs: StackOutputs, env: EnvConfig, function: str) -> str:
    """The Lambda function name of folder ``function`` in the environment; UsageError when no stack deployed has a
    function for it."""
    functions = deployed_functions(outputs, env)
    if not functions.get(function):
        raise UsageError(
            f"no stack of environment {env.name!r} has a Lambda function for {function!r} "
            f"(they have: {', '.join(sorted(functions)) or 'none'})",
            next_step=f"deploy the stack that holds it first (its deployed_function in cdk/stacks/, the API stack's "
            f"FUNCTIONS for a route): inv deploy.auto --env {env.name}",
        )
    return functions[function]


# -- published versions ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class VersionMatch:
    """A published version that runs the wanted code with the function's current configuration."""

    version: str
    description: str
    names_key: bool  # its description names the wanted key (so live_code_keys reads it back)


def all_versions(lambda_client: Any, function_name: str) -> list[dict[str, Any]]:
    """Every version of the function as ListVersionsByFunction lists it, ``$LATEST`` first."""
    versions: list[dict[str, Any]] = []
    for page in lambda_client.get_paginator("list_versions_by_function").paginate(FunctionName=function_name):
        versions += page.get("Versions", [])
    return versions


class Versions:
    """Each function's versions as this command listed them (ListVersionsByFunction), kept up to date with what it
    changed since: ``$LATEST`` as update-code left it, the version publish-version published. One per command
    (:meth:`of`), for the fast path's steps, which run under the environment's lock: update-code lists them while
    it reads ``$LATEST`` (one round trip for both), so publish-version need not list them again, nor move-alias
    find the version it points at. A published version never changes; one published by another hand since the
    listing is not seen (under the lock only CloudFormation, in a stack deploy of the same run, publishes, and
    stacks are deployed before the fast path). Safe from any thread."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self._known: dict[str, list[dict[str, Any]]] = {}
        self._guard = threading.Lock()

    @classmethod
    def of(cls, aws: AwsFactory) -> Versions:
        return aws.shared(_versions_of)

    def listed(self, function_name: str) -> list[dict[str, Any]]:
        """The versions (``$LATEST`` among them), listed now; remembered."""
        versions = all_versions(self.client, function_name)
        with self._guard:
            self._known[function_name] = versions
        return list(versions)

    def known(self, function_name: str) -> list[dict[str, Any]]:
        """The versions as last listed and changed by this command; listed now when they never were."""
        with self._guard:
            versions = self._known.get(function_name)
        return list(versions) if versions is not None else self.listed(function_name)

    def latest_is(self, function_name: str, configuration: Mapping[str, Any]) -> None:
        """``$LATEST`` is now ``configuration`` (as UpdateFunctionCode, or a read of it, gave it)."""
        self._replace(function_name, "$LATEST", configuration)

    def published(self, function_name: str, answer: Mapping[str, Any]) -> None:
        """PublishVersion answered ``answer`` (a new version, or the last one when nothing changed)."""
        self._replace(function_name, str(answer["Version"]), answer)

    def _replace(self, function_name: str, version: str, configuration: Mapping[str, Any]) -> None:
        with self._guard:
            known = self._known.get(function_name)
            if known is not None:
                entry = {**configuration, "Version": version}
                self._known[function_name] = [v for v in known if v.get("Version") != version] + [entry]


def _versions_of(aws: AwsFactory) -> Versions:
    return Versions(aws.client("lambda"))


def published_versions(lambda_client: Any, function_name: str) -> list[dict[str, Any]]:
    """The published versions (not ``$LATEST``), newest first."""
    versions = [v for v in all_versions(lambda_client, function_name) if str(v.get("Version")) != "$LATEST"]
    return sorted(versions, key=lambda v: int(v["Version"]), reverse=True)


def _behaviour(config: Mapping[str, Any]) -> dict[str, Any]:
    return {field: config.get(field) for field in BEHAVIOUR_FIELDS}


def settings_note(latest: Mapping[str, Any], versions: Sequence[Mapping[str, Any]], alias: Mapping[str, Any]) -> str:
    """What update-code says when ``$LATEST``'s settings (``latest``) differ from those of the version ``alias``
    serves (found among ``versions``, as listed): the publish takes them live. After any deploy the two agree (a
    stack deploy publishes what it sets; the fast path publishes ``$LATEST``), so a difference is most often a
    setting changed by hand on ``$LATEST``. "" when they agree, or the version is not listed."""
    serving = str(alias.get("FunctionVersion", ""))
    live = next((v for v in versions if str(v.get("Version")) == serving), None)
    if live is None or serving == "$LATEST":
        return ""
    there, here = _behaviour(live), _behaviour(latest)
    differ = [field for field in BEHAVIOUR_FIELDS if there[field] != here[field]]
    if not differ:
        return ""
    shown = ", ".join(
        f"{field} {here[field]!r} (live {there[field]!r})" if not isinstance(here[field], (dict, list)) else field
        for field in differ
    )
    return (
        f"; ⚠️ $LATEST's settings differ from version {serving}'s, which the alias serves: {shown}; the publish takes "
        "them live (if they should not be, put them back on $LATEST and rerun; inv diff --verify names what differs "
        "from the template)"
    )


def match_version(versions: Sequence[Mapping[str, Any]], code_sha256: str, key: str) -> VersionMatch | None:
    """The newest published version of ``versions`` (as ListVersionsByFunction lists them, ``$LATEST`` among them)
    with ``code_sha256`` and ``$LATEST``'s configuration, preferring those whose description names ``key``; None when
    there is none."""
    latest = next((v for v in versions if v.get("Version") == "$LATEST"), None)
    if latest is None:
        return None
    wanted = _behaviour(latest)
    same = [
        v
        for v in versions
        if v.get("Version") != "$LATEST" and v.get("CodeSha256") == code_sha256 and _behaviour(v) == wanted
    ]
    keyed = [v for v in same if code_key(v.get("Description")) == key]
    best = max(keyed or same, key=lambda v: int(v["Version"]), default=None)
    if best is None:
        return None
    return VersionMatch(str(best["Version"]), str(best.get("Description", "")), bool(keyed))


MANY_VERSIONS = 100  # published versions of one function past which each deploy says how to delete old ones


def many_versions(function: str, published: int, env: str) -> str | None:
    """What a deploy says when a function has many published versions: listing them (this step, rollback) costs a
    page per 50, and their code counts against the region's code storage."""
    if published < MANY_VERSIONS:
        return None
    return f"{published} versions published, old ones can go: inv lambda.cleanup --env {env} --function {function}"


def _origin(description: str) -> str:
    """Who published a version, from its description: the fast path names the commit, CloudFormation does not."""
    sha = git_sha_of(description)
    if sha:
        return f"git {sha}"
    return "published by CloudFormation" if code_location(description) else f"described {description!r}"


# -- steps ----------------------------------------------------------------------------------------------------


def deleted_behind_the_stack(stack: str | None = None, env: str | None = None) -> str:
    """What to do about a function (or its alias) a stack (``stack``, its name when known: the API stack's, one of
    the team's) holds that Lambda has not: it was deleted outside CloudFormation, which still counts it as there, so
    a deploy of the unchanged stack changes nothing and one that updates it fails on it."""
    deploy = f"inv deploy.stack {stack or 'api'}" + (f" --env {env}" if env else "")
    return (
        f"it was deleted outside CloudFormation, which still counts it as there: a deploy of its stack as it is "
        f"does not bring it back (aws cloudformation detect-stack-drift --stack-name {stack or '<the API stack>'} "
        "shows it). Have CloudFormation create it again: take it out of its stack (its route out of FUNCTIONS in "
        f"cdk/stacks/api_stack.py, its deployed_function out of a stack of yours) and {deploy}, then put it back and "
        f"{deploy} again"
    )


def _configuration(lambda_client: Any, function_name: str, function: str) -> dict[str, Any]:
    try:
        return dict(lambda_client.get_function_configuration(FunctionName=function_name))
    except ClientError as exc:
        if error_code(exc) == NOT_FOUND:
            raise UsageError(
                f"Lambda function {function_name} ({function}) does not exist, though its stack's outputs name it",
                next_step=deleted_behind_the_stack(),
            ) from None
        raise


def _short(code_sha256: str) -> str:
    return code_sha256[:12] + "…"


@dataclass(frozen=True)
class UpdateFunctionCode(Step):
    """Point the function's ``$LATEST`` at the zip and wait until Lambda reports the update Successful."""

    name: ClassVar[str] = "update-code"
    changes_what_runs: ClassVar[bool] = False  # $LATEST's code: the alias serves a published version
    function: str
    function_name: str
    registry_stack: str
    key: str
    code_sha256: str
    timeout: float
    poll: float
    compiled_for: str = ""  # the architecture the zip's vendored compiled code runs on; "": any
    # the alias the chain moves after publishing: read with $LATEST, kept for move-alias (or the canary), "": not read
    alias: str = ""
    # the CPython the zip's vendored compiled code imports on (3.12); "": any (none compiled, or the sandbox's)
    python: str = ""

    def describe(self) -> str:
        return (
            f"{self.function_name} $LATEST ← {packaging.short_key(self.key)} "
            f"(skipped when it already runs CodeSha256 {_short(self.code_sha256)})"
        )

    def early(self, ctx: Context) -> Callable[[], Any] | None:
        return partial(self._live, ctx)

    def _live(self, ctx: Context) -> dict[str, Any]:
        """$LATEST, the versions (for publish-version) and the alias (for move-alias, or the canary): one round trip."""
        reads: dict[str, Callable[[], Any]] = {
            "current": partial(_configuration, ctx.aws.client("lambda"), self.function_name, self.function),
            "versions": partial(Versions.of(ctx.aws).listed, self.function_name),
        }
        if self.alias:
            reads["alias"] = partial(aliases(ctx.aws).read, (self.function_name, self.alias))
            # whether the alias has provisioned concurrency, for move-alias: none (most), and it reads nothing more
            reads["provisioned"] = partial(provisioned_configs(ctx.aws).read, (self.function_name, self.alias))
        return at_once(reads)

    def run(self, ctx: Context) -> Outcome:
        client = ctx.aws.client("lambda")
        versions = Versions.of(ctx.aws)
        deadline = ctx.clock.monotonic() + self.timeout
        read = ctx.early_reads(self) or self._live(ctx)  # read while the zip was uploaded, else now
        current = read["current"]
        # $LATEST's settings, which the publish takes live, against those of the version the alias serves
        note = settings_note(current, read["versions"], read["alias"]) if "alias" in read else ""
        runs_on = current.get("Architectures") or ["x86_64"]
        if self.compiled_for and runs_on != [self.compiled_for]:
            raise UsageError(
                f"{self.function_name} runs on {', '.join(runs_on)}, but the compiled code vendored from "
                f"lambda/{self.function}/requirements.txt is for {self.compiled_for}: it would not import there",
                next_step=f"deploy.toml's [build] lambda_architecture is {self.compiled_for} and its stack puts "
                f"the functions on it: deploy that stack (inv deploy.auto, after a commit changing the setting), or "
                f"set lambda_architecture = {runs_on[0]!r} if the function is to stay on {runs_on[0]}",
            )
        runtime = current.get("Runtime") or ""
        if self.python and runtime.startswith("python") and runtime != f"python{self.python}":
            raise UsageError(
                f"{self.function_name} runs on {runtime}, but the compiled code vendored from "
                f"lambda/{self.function}/requirements.txt is for CPython {self.python}: it would not import there",
                next_step=f"deploy.toml's [build] lambda_runtime is python{self.python} and its stack puts the "
                f"functions on it: deploy that stack (inv deploy.auto, after a commit changing the setting), or set "
                f"lambda_runtime = {runtime!r} if the function is to stay on it",
            )
        if current.get("LastUpdateStatus") in UPDATING or current.get("State") in UPDATING:
            current = self._wait(ctx, client, deadline, "a previous update")
        versions.latest_is(self.function_name, current)
        if current.get("CodeSha256") == self.code_sha256 and current.get("LastUpdateStatus") != "Failed":
            return Outcome.skipped(f"{self.function}: $LATEST already runs {_short(self.code_sha256)}{note}")
        bucket = artifacts_bucket(ctx, self.registry_stack)
        try:
            answer = client.update_function_code(FunctionName=self.function_name, S3Bucket=bucket, S3Key=self.key)
        except ClientError as exc:
            if error_code(exc) != "ResourceConflictException":
                raise
            # an update began since $LATEST was read (a stack deploy, a person): waited for, as one seen at the read
            self._wait(ctx, client, deadline, "an update begun meanwhile")
            answer = client.update_function_code(FunctionName=self.function_name, S3Bucket=bucket, S3Key=self.key)
        final = self._wait(ctx, client, deadline, "the update", dict(answer))
        versions.latest_is(self.function_name, final)
        if final.get("CodeSha256") != self.code_sha256:
            raise StepFailed(
                f"{self.function_name} runs code {final.get('CodeSha256')} after the update, not {self.code_sha256} "
                f"(s3://{bucket}/{self.key} does not hold the zip that was planned)",
                next_step=f"rerun: inv deploy.lambda {self.function} (it uploads the zip again if missing)",
            )
        was = current.get("CodeSha256") or "none"
        return Outcome.done(
            f"{self.function}: $LATEST runs {_short(self.code_sha256)} (was {_short(was)}){note}",
            # a run that fails before its alias moves puts $LATEST back (deploykit.rollback.undo_plan): untried code
            # there is what a deploy of the function's stack would publish
            **{f"{self.function}.latest_updated": self.function_name},
        )

    def _wait(
        self, ctx: Context, client: Any, deadline: float, what: str, seen: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        rerun = f"inv deploy.lambda {self.function}"
        name = self.function_name
        return await_update(
            ctx, client, self.function, name, deadline, what, seen, rerun=rerun, timeout=self.timeout, poll=self.poll
        )


def await_update(
    ctx: Context,
    client: Any,
    function: str,
    function_name: str,
    deadline: float,
    what: str,
    seen: dict[str, Any] | None = None,
    *,
    rerun: str,
    timeout: float,
    poll: float,
) -> dict[str, Any]:
    """Poll until the function is Active and its last update Successful; StepFailed on Failed or the ``deadline``
    (``timeout`` seconds, said; ``rerun``: the command its next step names). ``seen``: the configuration as an answer
    just gave it (UpdateFunctionCode's), looked at before any read. The polls come soon, then less often
    (:data:`UPDATE_FIRST_POLL`, :func:`~deploykit.clock.backoff`)."""
    started = ctx.clock.monotonic()
    pauses = backoff(UPDATE_FIRST_POLL, min(poll, UPDATE_MAX_POLL))
    while True:
        config = seen if seen is not None else _configuration(client, function_name, function)
        seen = None
        state, update = config.get("State"), config.get("LastUpdateStatus")
        if update == "Failed" or state == "Failed":
            reason = config.get("LastUpdateStatusReason") or config.get("StateReason") or "no reason given"
            code = config.get("LastUpdateStatusReasonCode") or config.get("StateReasonCode") or ""
            raise StepFailed(
                f"Lambda failed {what} of {function_name}: {reason}" + (f" ({code})" if code else ""),
                next_step=f"aws lambda get-function-configuration --function-name {function_name}; "
                f"fix the cause, then rerun: {rerun}",
            )
        if update not in UPDATING and state not in UPDATING:
            return config
        now = ctx.clock.monotonic()
        if now >= deadline:
            raise StepFailed(
                f"deadline of {timeout:.0f}s passed waiting for {what} of {function_name} "
                f"(State {state}, LastUpdateStatus {update})",
                next_step=f"look at the function in the console or with aws lambda get-function-configuration, "
                f"then rerun: {rerun}",
            )
        ctx.reporter.status(f"{function}: State {state}, LastUpdateStatus {update} ({now - started:.0f}s)")
        ctx.clock.sleep(min(next(pauses), max(deadline - now, 0.0)))


def latest_as_served(ctx: Context, function: str, function_name: str, version: str, *, rerun: str) -> str:
    """Put ``$LATEST`` back on the code ``version`` runs (the version an alias was just pointed back at: a rollback,
    a canary taken back), when it runs other code; what was done, for the step's detail ("" when nothing was).

    CloudFormation publishes ``$LATEST`` whenever a deploy of the stack holding the function changes its settings
    (the version's logical id hashes them), keeping ``$LATEST``'s code while the code key the stack is given (the code
    the alias serves) is unchanged: left on the code rolled back, that deploy would serve it again, smoke-tested only
    by luck. The zip is the one the version's description names (``code s3://bucket/key``: deploykit's versions and
    CloudFormation's); one that names none is said, not touched."""
    client = ctx.aws.client("lambda")
    read = at_once(
        {
            "latest": partial(_configuration, client, function_name, function),
            "served": partial(client.get_function_configuration, FunctionName=function_name, Qualifier=version),
        }
    )
    latest, served = read["latest"], dict(read["served"])
    runs, wanted = str(latest.get("CodeSha256") or ""), str(served.get("CodeSha256") or "")
    if runs == wanted:
        return ""
    location = code_location(served.get("Description"))
    if location is None:
        return (
            f"; $LATEST still runs {_short(runs)}, not version {version}'s {_short(wanted)} (which names no zip to put "
            "back): a stack deploy that publishes a version of it would serve that code"
        )
    bucket, key = location
    timeout, poll = ctx.env.wait_timeout, ctx.env.poll_seconds
    wait = partial(await_update, ctx, client, function, function_name, rerun=rerun, timeout=timeout, poll=poll)
    deadline = ctx.clock.monotonic() + timeout
    try:  # the alias is where it should be: a $LATEST left as it was is said, not a failure of the step
        if latest.get("LastUpdateStatus") in UPDATING or latest.get("State") in UPDATING:
            wait(deadline, "a previous update")
        answer = client.update_function_code(FunctionName=function_name, S3Bucket=bucket, S3Key=key)
        final = wait(deadline, "putting $LATEST back", dict(answer))
    except (ClientError, StepFailed) as exc:
        why = exc.message if isinstance(exc, StepFailed) else f"{error_code(exc)}: s3://{bucket}/{key}"
        return (
            f"; $LATEST still runs {_short(runs)}, not version {version}'s {_short(wanted)} ({why}): a stack deploy "
            f"that publishes a version of it would serve that code; put it back: aws lambda update-function-code "
            f"--function-name {function_name} --s3-bucket {bucket} --s3-key {key}"
        )
    Versions.of(ctx.aws).latest_is(function_name, final)
    return f"; $LATEST back on its code {_short(wanted)} (was {_short(runs)})"


def version_ready(
    client: Any,
    function_name: str,
    published: dict[str, Any],
    clock: Clock,
    status: Callable[[str], None],
    *,
    timeout: float,
    poll: float,
    rerun: str,
) -> dict[str, Any]:
    """The version PublishVersion gave (``published``: its answer) once Lambda has it Active: one published Pending
    (SnapStart takes the snapshot first) is polled (GetFunctionConfiguration of the version) until it is, as no
    invoke reaches a Pending version, so an alias moved to it would fail every request meanwhile. StepFailed when it
    fails or the deadline (``timeout`` seconds) passes; no read for one Active at once (the usual answer)."""
    config, version = published, str(published.get("Version"))
    started = clock.monotonic()
    pauses = backoff(UPDATE_FIRST_POLL, min(poll, UPDATE_MAX_POLL))
    while config.get("State") == "Pending":
        now = clock.monotonic()
        if now - started >= timeout:
            raise StepFailed(
                f"deadline of {timeout:.0f}s passed waiting for version {version} of {function_name} to be Active "
                f"(it is Pending: {config.get('StateReason') or 'no reason given'}); the alias was not moved",
                next_step=f"aws lambda get-function-configuration --function-name {function_name} --qualifier "
                f"{version}; once it is Active, rerun: {rerun} (it reuses the version)",
            )
        status(f"{function_name} version {version}: Pending ({now - started:.0f}s)")
        clock.sleep(min(next(pauses), max(timeout - (now - started), 0.0)))
        config = dict(client.get_function_configuration(FunctionName=function_name, Qualifier=version))
    if config.get("State") == "Failed":
        code = config.get("StateReasonCode") or ""
        raise StepFailed(
            f"Lambda failed version {version} of {function_name}: {config.get('StateReason') or 'no reason given'}"
            + (f" ({code})" if code else "")
            + "; the alias was not moved",
            next_step=f"aws lambda get-function-configuration --function-name {function_name} --qualifier {version};"
            f" fix the cause, then rerun: {rerun}",
        )
    return config


@dataclass(frozen=True)
class PublishVersion(Step):
    """Publish ``$LATEST`` as a version described ``code s3://<bucket>/<key> git <sha12>`` (skipped when a
    version with this code, this configuration and this key exists: it is reused)."""

    name: ClassVar[str] = "publish-version"
    changes_what_runs: ClassVar[bool] = False  # a version no alias serves yet
    function: str
    function_name: str
    registry_stack: str
    key: str
    code_sha256: str
    git_sha: str

    def describe(self) -> str:
        return (
            f"publish $LATEST as a version (git {self.git_sha}), or reuse one that runs {packaging.short_key(self.key)}"
        )

    def run(self, ctx: Context) -> Outcome:
        client = ctx.aws.client("lambda")
        known = Versions.of(ctx.aws)
        versions = known.known(self.function_name)  # as update-code listed them, with $LATEST as it left it
        found = match_version(versions, self.code_sha256, self.key)
        too_many = many_versions(self.function, len(versions) - 1, ctx.env.name)  # all but $LATEST
        many = f"; {too_many}" if too_many else ""
        if found is not None and found.names_key:
            listed = next((v for v in versions if str(v.get("Version")) == found.version), {})
            if listed.get("State") != "Active":
                # a run that gave up waiting for it published it (Pending), or Lambda failed it (a SnapStart snapshot):
                # read as it is now, waited for or refused. ListVersionsByFunction leaves State out on AWS, as it
                # does for ListFunctions: a version listed without it is read too
                read = client.get_function_configuration(FunctionName=self.function_name, Qualifier=found.version)
                version_ready(
                    client,
                    self.function_name,
                    dict(read),
                    ctx.clock,
                    ctx.reporter.status,
                    timeout=ctx.env.wait_timeout,
                    poll=ctx.env.poll_seconds,
                    rerun=f"inv deploy.lambda {self.function}",
                )
            return Outcome.skipped(
                f"{self.function}: version {found.version} already runs this code ({_origin(found.description)})"
                + many,
                **{f"{self.function}.version": found.version},
            )
        description = version_description(artifacts_bucket(ctx, self.registry_stack), self.key, self.git_sha)
        try:
            answer = client.publish_version(
                FunctionName=self.function_name, CodeSha256=self.code_sha256, Description=description
            )
        except ClientError as exc:
            if error_code(exc) not in ("PreconditionFailedException", "InvalidParameterValueException"):
                raise
            raise StepFailed(
                f"Lambda refused to publish {self.function_name} with code {_short(self.code_sha256)}…: "
                f"{exc.response.get('Error', {}).get('Message', exc)} ($LATEST changed since it was updated?)",
                next_step=f"rerun: inv deploy.lambda {self.function}",
            ) from None
        version = str(answer["Version"])
        answer = version_ready(
            client,
            self.function_name,
            dict(answer),
            ctx.clock,
            ctx.reporter.status,
            timeout=ctx.env.wait_timeout,
            poll=ctx.env.poll_seconds,
            rerun=f"inv deploy.lambda {self.function}",
        )
        known.published(self.function_name, answer)
        if answer.get("CodeSha256") != self.code_sha256:
            raise StepFailed(
                f"Lambda published version {version} of {self.function_name} with code {answer.get('CodeSha256')}, "
                f"not {self.code_sha256}",
                next_step=f"rerun: inv deploy.lambda {self.function}",
            )
        detail = f"{self.function}: version {version} (git {self.git_sha})"
        if answer.get("Description") != description:
            # Lambda hands back the last version when nothing changed since it was published.
            detail = f"{self.function}: Lambda reused version {version}, unchanged since it was published"
        return Outcome.done(detail + many, **{f"{self.function}.version": version})


@dataclass(frozen=True)
class MoveAlias(Step):
    """Point the alias at the published version with this code (found at run time, as PublishVersion left it)."""

    name: ClassVar[str] = "move-alias"
    function: str
    function_name: str
    alias: str
    key: str
    code_sha256: str

    def describe(self) -> str:
        return f"point {self.function_name}:{self.alias} at the version that runs {_short(self.code_sha256)}"

    def run(self, ctx: Context) -> Outcome:
        client = ctx.aws.client("lambda")
        version, current = read_version_and_alias(
            ctx.aws, self.function, self.function_name, self.alias, self.code_sha256, self.key
        )
        moved = point_alias(client, self.function, self.function_name, self.alias, version, current=current)
        return provisioned_ready(ctx, client, moved, rerun=f"inv deploy.lambda {self.function} --env {ctx.env.name}")


def read_version_and_alias(
    aws: AwsFactory, function: str, function_name: str, alias: str, code_sha256: str, key: str
) -> tuple[str, dict[str, Any]]:
    """The version publish-version left for this code (:func:`published_version`) and the alias as it is
    (:func:`get_alias`), read at once: one round trip, not two; none when this command's publish-version left the
    version in :class:`Versions` and its update-code the alias (:func:`aliases`)."""
    reads: dict[str, Callable[[], Any]] = {
        "version": partial(published_version, aws, function, function_name, code_sha256, key),
        "alias": partial(aliases(aws).take, (function_name, alias)),
    }
    found = at_once(reads)
    return str(found["version"]), dict(found["alias"])


def aliases(aws: AwsFactory) -> HandedOn[tuple[str, str], dict[str, Any]]:
    """The command's reads of an alias by (function name, alias) (:func:`get_alias`): update-code reads it with
    ``$LATEST``, and the step that moves it next (move-alias, or the canary before it) takes it instead of reading it
    again: nothing changes the alias in between (updating and publishing do not touch it), and its RevisionId still
    guards the move. The step after a canary, which moved it, reads it anew."""
    return aws.shared(_aliases)


def _aliases(aws: AwsFactory) -> HandedOn[tuple[str, str], dict[str, Any]]:
    client = aws.client("lambda")
    return HandedOn(lambda key: get_alias(client, key[0], key[1]))


NOT_READABLE = "not readable"  # a provisioned concurrency configuration the credentials may not read
UNREAD = "unread"  # not read before the move (no update-code ran: a rollback's move)


def provisioned_configs(aws: AwsFactory) -> HandedOn[tuple[str, str], dict[str, Any] | str | None]:
    """The command's reads of an alias's provisioned concurrency by (function name, alias)
    (:func:`provisioned_concurrency`; :data:`NOT_READABLE` when access is denied): update-code reads it with the
    alias, and move-alias takes it to know whether there is any to wait for, without a call of its own."""
    return aws.shared(_provisioned_configs)


def _provisioned_configs(aws: AwsFactory) -> HandedOn[tuple[str, str], dict[str, Any] | str | None]:
    client = aws.client("lambda")
    return HandedOn(lambda key: readable_provisioned(client, key[0], key[1]))


def readable_provisioned(client: Any, function_name: str, qualifier: str) -> dict[str, Any] | str | None:
    """:func:`provisioned_concurrency`, or :data:`NOT_READABLE` when the credentials may not read it."""
    try:
        return provisioned_concurrency(client, function_name, qualifier)
    except ClientError as exc:
        if error_code(exc) not in DENIED:
            raise
        return NOT_READABLE


def published_version(aws: AwsFactory, function: str, function_name: str, code_sha256: str, key: str) -> str:
    """The newest published version with ``code_sha256`` and ``$LATEST``'s configuration, preferring those whose
    description names ``key``: the one publish-version left for this code (from :class:`Versions`: listed when
    this command did not); StepFailed when there is none."""
    found = match_version(Versions.of(aws).known(function_name), code_sha256, key)
    if found is None:
        raise StepFailed(
            f"no published version of {function_name} runs code {_short(code_sha256)} with its current configuration",
            next_step=f"publish it: inv deploy.lambda {function}",
        )
    return found.version


def alias_outputs(function: str, function_name: str, alias: str, version: str, previous: str = "") -> dict[str, str]:
    """What a step that points ``alias`` at ``version`` leaves for an automatic rollback to read
    (deploykit.rollback.undo_plan): the function, its alias and the version, and (``previous``) the one before."""
    outputs = {f"{function}.version": version, f"{function}.function_name": function_name, f"{function}.alias": alias}
    return outputs | ({f"{function}.previous_version": previous} if previous else {})


def get_alias(client: Any, function_name: str, alias: str) -> dict[str, Any]:
    """The alias (its version, routing and RevisionId); UsageError when the function has none."""
    try:
        return dict(client.get_alias(FunctionName=function_name, Name=alias))
    except ClientError as exc:
        if error_code(exc) != NOT_FOUND:
            raise
        raise UsageError(
            f"{function_name} has no alias {alias!r} (or no function of that name), though its stack makes it",
            next_step=deleted_behind_the_stack(),
        ) from None


def point_alias(
    client: Any,
    function: str,
    function_name: str,
    alias: str,
    version: str,
    note: str = "",
    current: Mapping[str, Any] | None = None,
) -> Outcome:
    """Point ``alias`` at ``version`` alone (weighted routing cleared, guarded by the alias's RevisionId); skipped
    when it already does. ``note`` (e.g. ``git <sha>``) goes into the detail; ``current``: the alias as just read
    (:func:`get_alias`), else it is read here."""
    current = current if current is not None else get_alias(client, function_name, alias)
    previous = str(current["FunctionVersion"])
    weights = routed_versions(current)
    # the alias and its function even when it was in place: an automatic rollback reads them (a version left there by
    # an earlier run that did not pass goes back to what the live record verified: deploykit.rollback.undo_plan)
    outputs = alias_outputs(function, function_name, alias, version)
    if previous == version and not weights:
        return Outcome.skipped(f"{function}: {alias} already points at version {version}", **outputs)
    # what the alias pointed at before, for an automatic rollback (deploykit.rollback.undo_plan): also when the
    # move's answer was lost, as Lambda may have taken it (pointing it back where it points moves nothing)
    outputs[f"{function}.previous_version"] = previous
    try:
        client.update_alias(
            FunctionName=function_name,
            Name=alias,
            FunctionVersion=version,
            RoutingConfig={"AdditionalVersionWeights": {}},
            RevisionId=current["RevisionId"],
        )
    except ClientError as exc:
        # the alias's RevisionId moved on since it was read: botocore sent the call again after its answer was lost
        # (a read timeout), the first attempt having moved it; or someone else changed it. In place is in place
        if error_code(exc) != "PreconditionFailedException":
            if maybe_applied(exc):
                carry(exc, [], outputs)
            raise
        now = get_alias(client, function_name, alias)
        if str(now["FunctionVersion"]) != version or routed_versions(now):
            raise
    except BaseException as exc:
        if maybe_applied(exc):
            carry(exc, [], outputs)
        raise
    return Outcome.done(
        f"{function}: {alias} → version {version} ({note + ', ' if note else ''}was {previous})", **outputs
    )


PROVISIONED_NOT_FOUND = "ProvisionedConcurrencyConfigNotFoundException"
PROVISIONED_MAX_POLL = 5.0  # seconds: an allocation takes a minute or more on AWS


def provisioned_concurrency(client: Any, function_name: str, qualifier: str) -> dict[str, Any] | None:
    """The provisioned concurrency configuration of an alias or version (its Status, Requested/Available/Allocated
    ProvisionedConcurrentExecutions, StatusReason); None when it has none."""
    try:
        return dict(client.get_provisioned_concurrency_config(FunctionName=function_name, Qualifier=qualifier))
    except ClientError as exc:
        if error_code(exc) != PROVISIONED_NOT_FOUND:
            raise
        return None


def provisioned_ready(ctx: Context, client: Any, moved: Outcome, *, rerun: str) -> Outcome:
    """``moved``, the outcome of :func:`point_alias`, once the alias it moved serves its new version with the
    provisioned concurrency the alias asks for, if it asks for any: Lambda allocates it to the new version
    asynchronously (its Status IN_PROGRESS, then READY or FAILED), running each environment's init, and routes the
    alias's requests to the version it served before meanwhile (AWS adds a weight of 1 for it on the alias until the
    allocation is done; terraform-provider-aws's PR #48116 reports it). Smoke, a canary's counts and the error watch
    would judge the old version until then. Waited for up to ``wait_timeout``, polled soon and then less often; the
    detail says how long it took. A FAILED allocation (an init that raises: ``FUNCTION_ERROR_INIT_FAILURE``) or the
    deadline fails the step with what moved in its outputs, so that the automatic rollback moves the alias back."""
    if moved.status != "done":
        return moved
    function = next(k.removesuffix(".alias") for k in moved.outputs if k.endswith(".alias"))
    function_name, alias = moved.outputs[f"{function}.function_name"], moved.outputs[f"{function}.alias"]
    version = moved.outputs[f"{function}.version"]
    # as update-code read it before the move, beside the alias: whether there is any (most have none, and nothing
    # more is read); how it stands is read after the move
    before = provisioned_configs(ctx.aws).take_kept((function_name, alias), UNREAD)
    config = before if before is None or before == NOT_READABLE else readable_provisioned(client, function_name, alias)
    if config == NOT_READABLE:  # a role that may move the alias but not read this: the move stands, said
        return replace(
            moved,
            detail=f"{moved.detail}; its provisioned concurrency not read (lambda:GetProvisionedConcurrencyConfig "
            "denied), not waited for",
        )
    if not isinstance(config, dict):
        return moved
    started = ctx.clock.monotonic()
    deadline = started + ctx.env.wait_timeout
    pauses = backoff(UPDATE_FIRST_POLL, min(ctx.env.poll_seconds, PROVISIONED_MAX_POLL))
    while True:
        status = str(config.get("Status", ""))
        requested = int(config.get("RequestedProvisionedConcurrentExecutions") or 0)
        available = int(config.get("AvailableProvisionedConcurrentExecutions") or 0)
        if status == "FAILED":
            raise carry(
                StepFailed(
                    f"Lambda could not make the provisioned concurrency of {function_name}:{alias} ready on version "
                    f"{version}: {config.get('StatusReason') or 'no reason given'}; the version it served before "
                    "serves meanwhile",
                    next_step=f"see what its init wrote: inv logs --env {ctx.env.name} --component lambda:{function} "
                    f"--since 15m; fix it, commit, then: {rerun}",
                ),
                [],
                moved.outputs,
            )
        now = ctx.clock.monotonic()
        if status == "READY" and available >= requested:
            current = get_alias(client, function_name, alias)
            if str(current["FunctionVersion"]) == version and not routed_versions(current):
                detail = f"{moved.detail}; provisioned concurrency {available} ready on it ({now - started:.1f}s)"
                return replace(moved, detail=detail)
        if now >= deadline:
            raise carry(
                StepFailed(
                    f"deadline of {ctx.env.wait_timeout:.0f}s passed waiting for the provisioned concurrency of "
                    f"{function_name}:{alias} on version {version} ({status}, {available} of {requested} ready)",
                    next_step=f"aws lambda get-provisioned-concurrency-config --function-name {function_name} "
                    f"--qualifier {alias}; then rerun: {rerun}",
                ),
                [],
                moved.outputs,
            )
        ctx.reporter.status(
            f"{function}: provisioned concurrency {status}, {available} of {requested} ready ({now - started:.0f}s)"
        )
        ctx.clock.sleep(min(next(pauses), max(deadline - now, 0.0)))
        config = provisioned_concurrency(client, function_name, alias)
        if config is None:  # taken off the alias meanwhile: nothing to wait for
            return moved


def routed_versions(alias: Mapping[str, Any] | None) -> dict[str, float]:
    """version → the share of ``alias``'s requests it takes beside the alias's own version (a canary's weighted
    routing); {} when the alias routes to its version alone."""
    weights = ((alias or {}).get("RoutingConfig") or {}).get("AdditionalVersionWeights") or {}
    return {str(version): float(weight) for version, weight in weights.items()}


def shift_cause(routed: Mapping[str, float]) -> str:
    """What an alias's weighted routing (:func:`routed_versions`) comes from: all of its requests to another version
    is Lambda's own, while it readies the alias's provisioned concurrency on the version the alias moved to (a canary
    takes less than 100%); a share is a canary's, cut short when no deploy runs."""
    if list(routed.values()) == [1.0]:
        return "Lambda readying its provisioned concurrency: a deploy stopped while it waited"
    return "a canary cut short"


def routing_shares(routed: Mapping[str, float]) -> str:
    """An alias's weighted routing for people: ``{"3": 0.1}`` as ``10% to version 3`` (0.005: ``0.5%``)."""
    return ", ".join(f"{round(weight * 100, 4):g}% to version {version}" for version, weight in sorted(routed.items()))


def lambda_left(records: Iterable[StepRecord]) -> dict[str, dict[str, str]]:
    """``lambda:<fn>`` → ``{"version": N}``: the version a run's move-alias steps (among ``records``, groups' steps
    too; a rollback's too) left each function's alias on, for its history record: the live record keeps it, so a
    later read that finds the alias on another version knows the version serving was never verified (a run that
    moved it and then failed, kept with --no-rollback or interrupted) and deploys it again."""
    left: dict[str, dict[str, str]] = {}
    for record in all_records(records):
        if record.step != MoveAlias.name or record.status == "failed":
            continue
        for fn in (key.removesuffix(".alias") for key in record.outputs if key.endswith(".alias")):
            if version := record.outputs.get(f"{fn}.version"):
                left[f"lambda:{fn}"] = {"version": version}
    return left


# -- the plan -------------------------------------------------------------------------------------------------


def function_names(config: Config) -> list[str]:
    """The functions of lambda/: its folders holding a handler.py."""
    return packaging.function_folders(config.root / LAMBDA_FOLDER)


# What a function's template sets that Lambda reports back as it was set: what ``inv diff --verify`` compares
# (with each environment variable the template gives a plain value).
CONFIGURED = ("Runtime", "Handler", "MemorySize", "Timeout", "Architectures")
ENVIRONMENT = "Environment."  # prefix of an environment variable among the settings compared


def configured(template: Mapping[str, Any], function: str) -> dict[str, Any]:
    """What ``template`` (a synthesized stack holding it) sets for ``function`` (a folder of lambda/) that Lambda
    reports back: each of :data:`CONFIGURED` it gives a plain value, and each environment variable with a plain value
    (as ``Environment.<NAME>``); a value CloudFormation resolves (a reference, an import) is left out. The function's
    resource is the one named by its construct (``LoginHandler`` and CDK's 8-digit hash); {} when there is none."""
    name = re.compile(re.escape(function_id(function)) + "[0-9A-F]{8}")
    for logical, resource in (template.get("Resources") or {}).items():
        if resource.get("Type") != LAMBDA_FUNCTION or not name.fullmatch(logical):
            continue
        properties = resource.get("Properties") or {}
        found = {key: properties[key] for key in CONFIGURED if key in properties and _plain(properties[key])}
        variables = (properties.get("Environment") or {}).get("Variables") or {}
        return found | {f"{ENVIRONMENT}{key}": value for key, value in variables.items() if _plain(value)}
    return {}


def _plain(value: Any) -> bool:
    """A value as the template gives it, not one CloudFormation works out (``Ref``, ``Fn::...``)."""
    if isinstance(value, dict):
        return False
    if isinstance(value, list):
        return all(_plain(item) for item in value)
    return True


def configuration_differs(wanted: Mapping[str, Any], live: Mapping[str, Any]) -> dict[str, tuple[Any, Any]]:
    """setting → (what the template sets, what ``live``, a version's configuration, has), for each of ``wanted``
    (:func:`configured`) that differs."""
    variables = (live.get("Environment") or {}).get("Variables") or {}
    differs = {}
    for key, value in wanted.items():
        has = variables.get(key.removeprefix(ENVIRONMENT)) if key.startswith(ENVIRONMENT) else live.get(key)
        if has != value:
            differs[key] = (value, has)
    return differs


# What settings_drift says of a version whose settings $LATEST no longer has (it has the stack's): a deploy of the
# function, which publishes $LATEST, serves the stack's settings again
LATEST_HAS_THEM = "which $LATEST has"


def drift_remedy(env: str, stack: str | None) -> str:
    """What puts back the settings of a function changed by hand and published behind its alias
    (:func:`settings_drift`): a drift-aware deploy of the stack holding it, which puts them back on $LATEST and its
    alias on a version that has them (a version the stack publishes, or the one it deployed)."""
    return (
        f"inv deploy.stack {stack or 'STACK'} --env {env} --revert-drift puts them back, and its alias on a version "
        "that has them"
    )


def settings_drift(
    template: Mapping[str, Any] | None,
    function: str,
    serving: Mapping[str, Any],
    stack: str,
    latest: Mapping[str, Any] | None = None,
) -> str | None:
    """What says that the version ``serving`` (its configuration) of ``function`` has settings other than those
    ``template`` (``stack``'s, as deployed) gives it; None when they agree (or there is no template). When
    ``latest`` ($LATEST's configuration) has the stack's settings, the version keeps those it was published with (an
    older one put back by inv rollback, or one published by hand): the next deploy of the function publishes the
    stack's (:data:`LATEST_HAS_THEM`). Else they were changed by hand and published behind the alias, which no
    change set shows and no deploy puts back."""
    wanted = configured(template or {}, function)
    differs = configuration_differs(wanted, serving)
    if not differs:
        return None
    said = ", ".join(f"{setting} {live} (the stack's: {wanted})" for setting, (wanted, live) in differs.items())
    version = serving.get("Version", "?")
    if latest is not None and not configuration_differs(wanted, latest):
        return (
            f"version {version}, which the alias serves, has settings other than those {stack} deployed, "
            f"{LATEST_HAS_THEM}: {said}; a version keeps the settings it was published with (an older one put back "
            "by inv rollback, or one published by hand)"
        )
    return (
        f"version {version}, which the alias serves, has settings other than those {stack} deployed: {said}; "
        "changed by hand, and published"
    )


def code_at(
    root: Path, function: str, commit: str, architecture: str, python: str = packaging.DEFAULT_PYTHON
) -> tuple[str, str] | None:
    """(the commit's SHA12, the CodeSha256 Lambda reports for ``function`` packaged as in that commit, for
    ``architecture`` and CPython ``python``): packaging is reproducible, so the digest names the version that runs
    that commit's code, whoever published it. None when this clone does not have the commit or the function did not
    exist in it."""
    full = git.resolve_commit(root, commit)
    if full is None:
        return None
    with tempfile.TemporaryDirectory(prefix="deploykit-code-") as tmp:
        if not git.export(root, full, f"{LAMBDA_FOLDER}/{function}", Path(tmp)):
            return None
        try:
            folder = Path(tmp) / LAMBDA_FOLDER / function
            made = packaging.package_function(folder, architecture=architecture, python=python)
        except UsageError as exc:  # said of the commit's files (SHA12:lambda/fn/x), not of a folder gone since
            said = exc.message.replace(f"{tmp}/", f"{full[: git.SHORT_SHA]}:")
            raise UsageError(said, next_step=exc.next_step) from None
        return full[: git.SHORT_SHA], made.code_sha256


def code_known_at(
    root: Path, function: str, commit: str, architecture: str, python: str = packaging.DEFAULT_PYTHON
) -> tuple[str, str] | None:
    """:func:`code_at`, None too when this clone cannot package the commit (a submodule's commit it lacks: the
    UsageError :func:`code_at` raises for a rollback): for the reads that judge what is live, which take it as not
    known (as a commit not in this clone) rather than stop a deploy."""
    try:
        return code_at(root, function, commit, architecture, python)
    except UsageError:
        return None


def unimportable(
    config: Config, plan: Plan, handlers: Mapping[str, str] | None = None
) -> dict[str, list[lambda_imports.Problem]]:
    """Each function whose zip ``plan`` uploads that would not import on Lambda, and why (deploykit.lambda_imports):
    the zips as the plan's upload steps make them (from the folder, for the architecture and the Python, it planned;
    in a group of steps too). ``handlers``: function → its Handler as Lambda has it, where it was read (one not
    deployed yet has none)."""
    found = {}
    for _depth, step in walk(plan.steps):
        if isinstance(step, UploadLambdaCode):
            target = packaging.Target(architecture=step.architecture, python=step.python)
            problems = import_problems(config, Path(step.folder), target, (handlers or {}).get(step.function))
            if problems:
                found[step.function] = problems
    return found


def import_problems(
    config: Config, folder: Path, target: packaging.Target, handler: str | None
) -> list[lambda_imports.Problem]:
    """What would keep the function of ``folder``, packaged for ``target``, from importing on Lambda with ``handler``
    (None: not known); judged once per zip, settings and handler."""
    made = packaging.package_function(folder, **target)
    key = (made.sha256, config.build.lambda_runtime_modules, target["architecture"], target["python"], handler)
    with _JUDGED_LOCK:
        problems = _JUDGED.get(key)
    if problems is None:
        problems = lambda_imports.problems(
            made.zip_bytes, provided=key[1], architecture=key[2], python=key[3], handler=handler
        )
        with _JUDGED_LOCK:
            _JUDGED[key] = problems
            while len(_JUDGED) > JUDGED_KEPT:  # deploy.auto --watch judges each save's
                del _JUDGED[next(iter(_JUDGED))]
    return problems


# what a zip was found to lack, by (its SHA-256, the modules deploy.toml gives, the architecture, the Python, the
# handler): deploy.auto judges its plan before showing it, and the run judges it again
_JUDGED: dict[tuple[str, tuple[str, ...], str, str, str | None], list[lambda_imports.Problem]] = {}
JUDGED_KEPT = 64
_JUDGED_LOCK = threading.Lock()


def package(config: Config, env: EnvConfig, function: str) -> packaging.Package:
    """lambda/<function> packaged as this checkout holds it, for the architecture and the Python ``env``'s functions
    run on (:meth:`Config.lambda_target`); UsageError listing the functions when there is no such function."""
    folder = function_folder(config, function)
    return packaging.package_function(folder, **config.lambda_target(env))


def function_folder(config: Config, function: str) -> Path:
    """lambda/<function>; UsageError listing the functions when there is no such function."""
    known = function_names(config)
    if function not in known:
        listed = ", ".join(known) if known else f"none: {config.root / LAMBDA_FOLDER} holds no function folder"
        raise UsageError(
            f"unknown Lambda function {function!r}", next_step=f"use one of the functions of lambda/: {listed}"
        )
    return config.root / LAMBDA_FOLDER / function


def code_steps(
    env: EnvConfig, function: str, function_name: str, folder: Path, made: packaging.Package, git_sha: str
) -> list[Step]:
    """The fast path's steps up to the version, for the code ``made`` (packaged from ``folder``): upload (skipped when
    the zip is there), update-code, publish-version tagged ``git_sha``. The alias moves after them (:class:`MoveAlias`,
    a canary first when there is one)."""
    registry_stack = env.stacks.registry
    return [
        UploadLambdaCode.of(function, folder, made, registry_stack),
        UpdateFunctionCode(
            function,
            function_name,
            registry_stack,
            made.key,
            made.code_sha256,
            env.wait_timeout,
            env.poll_seconds,
            made.compiled_for,
            ALIAS,
            made.python if made.compiled_for and not env.is_local else "",  # the sandbox runs it on its own Python
        ),
        PublishVersion(function, function_name, registry_stack, made.key, made.code_sha256, git_sha),
    ]


def left_by_stacks(wanted: Mapping[str, str], given: Mapping[str, str], served: Mapping[str, str]) -> list[str]:
    """The functions a deploy of their stacks would leave on other code than ``wanted`` (fn → the key of the code the
    deploy gives it): those whose stack was last deployed with that very key (``given``: fn → its stack's code
    parameter), so CloudFormation finds nothing to change in them, while their ``live`` alias serves other code
    (``served``: fn → its key; the fast path shipped other code since, and the commit deployed went back to the
    stack's: a revert, a failed run's release kept by --no-rollback). Their fast path runs after the stacks."""
    return sorted(fn for fn, key in wanted.items() if given.get(fn) == key and served.get(fn, key) != key)


def fast_path(config: Config, env: EnvConfig, revision: Revision, function: str, function_name: str) -> Step:
    """``function``'s fast path as one step of a run that deploys more: from update-code on (its zip is uploaded with
    the others'), no smoke or alarm watch of its own (the run's)."""
    plan = lambda_plan(config, env, revision, function, function_name=function_name, smoke=False, watch=False)
    return StepSequence(f"lambda {function}", plan.steps[1:])


def lambda_plan(
    config: Config,
    env: EnvConfig,
    revision: Revision,
    function: str,
    *,
    function_name: str,
    smoke: bool = True,
    watch: bool = True,
) -> Plan:
    """upload → update-code → publish-version → [canary →] move-alias → smoke [→ watch-alarms], for ``function`` (a
    folder of lambda/) whose Lambda function is ``function_name``; a canary when the environment has one
    (deploykit.canary); with ``watch``, the watch of the environment's own alarms when it names some
    (deploykit.watch)."""
    from deploykit.canary import CanaryRelease  # it reads the versions as this module does

    canary = env.lambda_canary
    revision = revision.of(f"lambda:{function}")
    made = package(config, env, function)
    steps = code_steps(env, function, function_name, function_folder(config, function), made, revision.tag)
    if canary.on:
        steps.append(
            CanaryRelease(
                function,
                function_name,
                ALIAS,
                made.key,
                made.code_sha256,
                canary.percent,
                canary.seconds,
                canary.max_error_rate,
                env.poll_seconds,
                canary.compare,
                env.alarm_watch.alarms,
            )
        )
    steps.append(MoveAlias(function, function_name, ALIAS, made.key, made.code_sha256))
    if smoke:
        steps.append(Smoke())
    if watch:
        steps += alarm_watch(env)
    return Plan(env.name, tuple(steps), f"deploy.lambda {function}", ((f"lambda:{function}", revision.tag),))
