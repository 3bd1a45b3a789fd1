"""``inv rollback``: put a component back on an earlier commit, without building anything.

- The app goes back by registering a **fresh** task-definition revision (the service's current one with only the
  image changed to ``<repository>:<tag of that commit>``), then roll → wait-healthy → smoke, the app chain's own
  steps. An old revision number is never re-pointed at: it may be deregistered, and it would bring back that
  revision's old environment and settings. (RegisterTaskDef skips registering only when the service's current
  revision or the family's newest ACTIVE revision already is exactly that registration.)
- A Lambda function goes back by moving its ``live`` alias to the newest published version whose description
  names that commit (``code s3://<bucket>/<key> git <sha12>``).
- A stack goes back by deploying its template as that commit's ``cdk/`` synthesizes it (the folder taken from git
  into ``cdk.out/``, never the work tree), through a change set with the guards of ``deploy.stack``. What runs stays:
  the image tag and the Lambda code keys the template asks for are those live now, so only the infrastructure goes
  back. A template that needs what nothing live gives, or that would delete a function deployed since, is refused.

**Automatic rollback** (:func:`undo_plan`): when a step fails in a deploy that rolled the service or moved a Lambda
alias (wait-healthy, smoke, watch-errors, a canary: the release is bad; another step beside them: what they made live
was never smoke-tested), the same steps put back what that run replaced — read from what its own steps recorded
(roll-service's ``previous_image``, move-alias's ``<fn>.previous_version``), never guessed. A failure ECS's circuit
breaker already rolled back is only waited for, not repeated.

The target is ``--to <sha>`` (a 7-64 hex prefix, or a whole ``<sha12>-dirty-<hash>`` tag), else the previous
successful deploy of that component in the environment's history: the newest ok record whose SHA for the
component differs from what is live now. Resolution only reads; every step input is written into the plan.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache, partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from botocore.exceptions import ClientError

from deploykit import (
    auto,
    changes,
    git,
    history,
    image_cleanup,
    lambda_chain,
    local_lock,
    packaging,
    planner,
    registry,
    synth,
)
from deploykit.app_chain import PromoteImage, PushImage, RegisterTaskDef, RollService, WaitHealthy
from deploykit.aws import at_once
from deploykit.canary import FAILED_FUNCTION
from deploykit.ecs import split_image
from deploykit.errors import RolledBackByEcs, ServiceBeingDeleted, StepFailed, Superseded, UsageError
from deploykit.git import DIRTY
from deploykit.plan import Context, Outcome, Parallel, Plan, RunReport, Step, StepRecord, all_records, walk
from deploykit.plan import Sequence as StepSequence
from deploykit.smoke import Smoke
from deploykit.stack_chain import DeployStack, action_key, kept_template_key, was_key
from deploykit.stacks import StackOutputs, is_not_there

if TYPE_CHECKING:
    from deploykit.aws import AwsFactory
    from deploykit.config import Config, EnvConfig

_TO_RE = re.compile(f"^[0-9a-f]{{7,{git.SHA_DIGITS}}}(?:-dirty-[0-9a-z]+)?$")
SHOWN = 10  # tags / SHAs named when the target is not there
HISTORY_DEPTH = history.ROLLBACK_DEPTH  # the newest records read for the deploy before the live one


@dataclass(frozen=True)
class Component:
    """What goes back: the app, one Lambda function (``lambda:<folder of lambda/>``) or one stack
    (``stack:<role>``: registry, data, auth, fargate, api)."""

    kind: str  # "app", "lambda" or "stack"
    function: str = ""
    role: str = ""

    @property
    def key(self) -> str:
        """The component as the history names it: ``app``, ``lambda:<fn>`` or ``stack:<role>``."""
        if self.kind == "stack":
            return f"stack:{self.role}"
        return "app" if self.kind == "app" else f"lambda:{self.function}"


def parse_component(text: str, config: Config, purpose: str = "rollback", env: EnvConfig | None = None) -> Component:
    """``app``, ``lambda:<fn>`` (``fn`` a function of lambda/), or, given ``env``, ``stack:<role or stack name>``;
    UsageError (naming ``purpose``) otherwise."""
    kind, _, name = text.strip().partition(":")
    if kind == "app" and not name:
        return Component("app")
    if kind == "lambda" and name:
        lambda_chain.function_folder(config, name)  # refuses an unknown function, naming the known ones
        return Component("lambda", name)
    if kind == "stack" and name and env is not None:
        return Component("stack", role=planner.role_of(env, name))  # refuses an unknown stack, naming the known ones
    raise UsageError(
        f"unknown component {text!r} for {purpose}",
        next_step=f"use --component with one of: {', '.join(known_components(config, env))}",
    )


def known_components(config: Config, env: EnvConfig | None) -> list[str]:
    """The components ``--component`` may name: app, lambda:<fn> for each function of lambda/, and, given ``env``,
    stack:<role> for each of its stacks."""
    known = ["app", *(f"lambda:{fn}" for fn in lambda_chain.function_names(config))]
    if env is not None:
        known += [f"stack:{role}" for role in planner.stack_roles(env)]
    return known


def normalize_to(to: str) -> str:
    """The ``--to`` value, lower-cased; UsageError unless a 7-64 hex prefix (or a whole dirty tag)."""
    value = to.strip().lower()
    if not _TO_RE.match(value):
        raise UsageError(
            f"--to {to!r} is not a commit: expected 7 to 40 hex digits, up to 64 in a repository of SHA-256 objects "
            "(or a <sha12>-dirty-<hash> tag)",
            next_step="pass a commit SHA or its prefix, e.g. --to 3e2532e (inv history lists them)",
        )
    return value


def ran_at(records: Iterable[history.Record], component: str, sha: str) -> bool:
    """Whether ``component`` ran at ``sha`` (an image tag or a commit, as short as 7) in the environment whose history
    ``records`` are: live after a run that worked (deployed or carried), or live before any run. A dirty build is
    only itself; a clean one matches a longer or shorter form of its commit."""

    def same(found: str | None) -> bool:
        if not found:
            return False
        if DIRTY in found or DIRTY in sha:
            return found == sha
        return found.startswith(sha) or sha.startswith(found)

    return any((r.ok and same(r.components.get(component))) or same(r.base.get(component)) for r in records)


def sha_of(tag: str) -> str:
    """``<sha12>-dirty-<hash>`` → ``<sha12>``; a clean tag as it is."""
    return tag.split(DIRTY, 1)[0]


def matches(to: str, tag: str) -> bool:
    """Whether the tag (or ``git <sha>`` of a version) is the commit ``to`` names."""
    if DIRTY in to:
        return tag == to
    return sha_of(tag).startswith(to[:12])


def pick(to: str, candidates: Iterable[str], *, what: str, exact: bool = False) -> str | None:
    """The candidate (tag / SHA) that ``to`` names: None when none does; UsageError when it names several commits
    or several dirty builds of one (a clean build is preferred over dirty ones). ``exact``: the candidate ``to`` is
    alone (a record's SHA: a build of uncommitted changes of that commit is another release)."""
    found = list(dict.fromkeys(c for c in candidates if (c == to if exact else matches(to, c))))
    if not found:
        return None
    commits = sorted({sha_of(c) for c in found})
    if len(commits) > 1:
        raise UsageError(
            f"--to {to} is ambiguous: it names {len(commits)} commits in {what} ({', '.join(commits)})",
            next_step="pass more digits of the SHA",
        )
    clean = [c for c in found if DIRTY not in c]
    if clean:
        return clean[0]
    if len(found) > 1:
        raise UsageError(
            f"--to {to} names {len(found)} uncommitted builds of one commit in {what}: {', '.join(found)}",
            next_step="pass the whole tag, e.g. --to " + found[0],
        )
    return found[0]


def previous_deploy(
    records: Sequence[history.Record],
    component: str,
    live: str | None,
    usable: Callable[[str], bool] = bool,
    runs_now: Callable[[str], bool] = lambda _sha: False,
    failed_live: Callable[[history.Record], bool] | None = None,
) -> history.Record | None:
    """The newest successful record that deployed ``component`` at a SHA other than ``live`` (newest first in).

    A record that only carried the component to its commit (deploy.auto, no change since) did not deploy it: its
    SHA names no image or version. Nor is a commit a person's rollback took off since a target: that release was
    put back as bad (``--to`` still names it), also by a rollback that failed after it put the release it went
    back to live (its smoke failed: nothing undid it), which ``failed_live`` tells (a stack's is given; else
    :meth:`history.Record.failed_live`). Of the rest, the first whose SHA is ``usable`` (a Lambda: one that
    has a published version); else the first whose SHA ``runs_now`` does not count (a Lambda: its code is not what
    the version served runs), which a Lambda's rollback publishes again from its commit's code; else the first, so
    that what follows says there is nothing to roll back, or names what is missing."""
    found: list[history.Record] = []
    taken_off: set[str] = set()  # the commits a person's rollback newer than the record at hand took off
    for record in records:
        if record.deployed_it(component) and record.components[component] not in (live, *taken_off):
            found.append(record)
        off = history.took_off(record, component, failed_live)
        if off:
            taken_off.add(off)
    other = next((r for r in found if not runs_now(r.components[component])), found[0] if found else None)
    return next((r for r in found if usable(r.components[component])), other)


@dataclass(frozen=True)
class Target:
    """What a rollback resolved: the component, what is live, what it goes back to, and why that."""

    component: Component
    live: str | None
    sha: str  # image tag (app) or the ``git <sha>`` of the versions (Lambda)
    source: str  # "--to 3e2532e" or "history: <record id> (<when>, <command>)"
    version: str = ""  # the Lambda version the alias moves to
    # a stack's: the commit whose deploy left the stack as it was at ``sha`` (runs since only counted it unchanged,
    # see deployed_from), when not ``sha`` itself: its kept template is the stack's at ``sha``
    deployed_from: str = ""
    # a Lambda alias's weighted routing (version → share): a canary cut short, cleared by the rollback's move even
    # when the alias's own version is the target
    routed: Mapping[str, float] = dataclasses.field(default_factory=dict)
    # a Lambda's: no version of the function runs that commit's code (a function made anew: moved to another stack,
    # or replaced), so it is published again from it, as the fast path would have (:func:`lambda_plan`)
    republish: bool = False

    @property
    def title(self) -> str:
        """The plan's title, as the history lists the run: ``rollback app → 3e2532eaf7e5``."""
        return f"rollback {self.component.key} → {self.sha}"


def _history_target(
    aws: AwsFactory,
    env: EnvConfig,
    component: Component,
    live: str | None,
    usable: Callable[[str], bool] = bool,
    *,
    records: Sequence[history.Record] | None = None,
    deeper: Callable[[str, int], Sequence[history.Record]] | None = None,
    runs_now: Callable[[str], bool] = lambda _sha: False,
    failed_live: Callable[[history.Record], bool] | None = None,
) -> tuple[str, str, str | None]:
    """(sha, source, live) of the previous successful deploy (:func:`previous_deploy`); UsageError when there is
    none. ``records``: the newest records when the caller has read them already; ``deeper``: History.records_of, for
    the records of the component past them."""
    found = history.History.of(aws, env) if records is None else None
    if records is None and found is None:
        raise UsageError(
            f"environment {env.name!r} has no history (its registry stack is not deployed): nothing to go back to",
            next_step=f"name the commit: inv rollback --env {env.name} --to <sha>",
        )
    if found is not None:
        if live is None:  # the environment does not say: the live record does
            live = _recorded_live(found, component)
        records = found.records(HISTORY_DEPTH)
        deeper = found.records_of
    record = previous_deploy(records or [], component.key, live, usable, runs_now, failed_live)
    if (record is None or not usable(record.components[component.key])) and deeper is not None:
        # the newest records hold no deploy to go back to (runs of other components since): the component's own,
        # further back
        records = deeper(component.key, HISTORY_DEPTH)
        record = previous_deploy(records, component.key, live, usable, runs_now, failed_live)
    passed = [sha for sha in _passed_over(records or [], component.key, live, record) if not runs_now(sha)]
    if record is None:
        off = sorted({sha for r in records or [] if (sha := history.took_off(r, component.key, failed_live))})
        raise UsageError(
            f"nothing to go back to: no successful deploy of {component.key} in {env.name}'s history "
            f"at another commit than the live {live or '(unknown)'}"
            + (f" but those a rollback took off as bad ({', '.join(off)}: --to names one)" if off else ""),
            next_step=f"see the history (inv history --env {env.name}), or name a commit: inv rollback --to <sha>",
        )
    sha = record.components[component.key]
    source = f"history: {record.command} at {record.when} by {record.who} ({record.id})"
    if passed:  # said before the change, in the plan: it goes back further than the deploy before
        source += f"; passed over, as they cannot be put back: {', '.join(passed)}"
    return sha, source, live


def _recorded_live(found: history.History | None, component: Component) -> str | None:
    """The commit the live record names for ``component`` (what the last successful deploy of it left)."""
    return found.live().get(component.key, {}).get("sha") if found is not None else None


def _passed_over(
    records: Sequence[history.Record], component: str, live: str | None, chosen: history.Record | None
) -> list[str]:
    """The commits of the successful deploys of ``component`` newer than ``chosen`` (not live) that
    :func:`previous_deploy` passed over, as nothing of them is left to put back (a build of uncommitted changes, a
    version since deleted, a commit this clone lacks with no template kept), newest first."""
    if chosen is None:
        return []
    found = [r.deployed[component] for r in records[: records.index(chosen)] if r.ok and component in r.deployed]
    return list(dict.fromkeys(sha for sha in found if sha != live and sha != chosen.components[component]))


# -- the app ----------------------------------------------------------------------------------------------------


def repository_tags(aws: AwsFactory) -> list[str]:
    """The tags of the environment's ECR repository, newest push first."""

    def pushed(detail: dict[str, Any]) -> float:
        when = detail.get("imagePushedAt")
        return when.timestamp() if isinstance(when, datetime) else float(when or 0)

    details = sorted(image_cleanup.repository_images(aws), key=pushed, reverse=True)
    return [str(tag) for d in details for tag in d.get("imageTags") or ()]


def _missing_image(env: EnvConfig, wanted: str, tags: Sequence[str]) -> UsageError:
    listed = ", ".join(tags[:SHOWN]) + (f" and {len(tags) - SHOWN} more" if len(tags) > SHOWN else "")
    return UsageError(
        f"image {env.repository}:{wanted} is not in the registry of {env.name!r} (never pushed there, or deleted by "
        f"inv images.cleanup), nothing was changed; it holds: {listed or 'no tagged image'}",
        next_step=f"roll back to one of those: inv rollback --env {env.name} --to <sha>; or deploy that commit: git "
        f"checkout <sha> && inv deploy.app --env {env.name} (promoted from another environment, it copies that "
        "one's image)",
    )


def check_app(env: EnvConfig) -> None:
    """UsageError when the app of ``env`` cannot be rolled back by deploykit (told before anything is read)."""
    if env.registry:
        raise UsageError(
            f"environment {env.name!r} pushes to a plain registry ({env.registry}): rollback lists images with ECR",
            next_step="roll back by deploying the old commit: git checkout <sha> && inv deploy.app",
        )


def check_stack_to(root: Path, to: str) -> str:
    """A stack's ``--to`` as far as this clone can tell without the environment: not a build of uncommitted changes,
    and a revision of this clone (a SHA, a tag, a branch, HEAD~1) or a SHA (of a commit whose template the environment
    may have kept); stripped. UsageError otherwise."""
    wanted = to.strip()
    if DIRTY in wanted:
        raise UsageError(
            f"--to {to} is a build of uncommitted changes: a stack goes back to a commit's cdk/ as committed",
            next_step="pass a commit SHA (inv history lists them)",
        )
    hexadecimal = re.fullmatch(r"[0-9a-fA-F]+", wanted) is not None
    if not hexadecimal and git.resolve_commit(root, wanted) is None:  # hex: kept, maybe
        raise UsageError(
            f"--to {to}: no commit, tag or branch of that name in this clone, nothing was changed",
            next_step="pass a commit SHA (inv history lists them), or fetch it first (git fetch origin <its branch>)",
        )
    if hexadecimal and len(wanted) < 7 and git.resolve_commit(root, wanted) is None:  # not a tag or branch either
        raise UsageError(
            f"--to {to}: too few digits to name a commit (7 at least), nothing was changed",
            next_step="pass 7 hex digits of the commit's SHA or more (inv history lists them)",
        )
    if hexadecimal and git.is_ambiguous(root, wanted):
        raise UsageError(
            f"--to {to} is ambiguous: more than one commit of this clone starts with it, nothing was changed",
            next_step="pass more digits of the SHA (inv history lists them)",
        )
    return wanted


def resolve_app(aws: AwsFactory, env: EnvConfig, to: str | None, *, exact: bool = False) -> Target:
    """The app's target: ``--to``'s image (``exact``: the tag ``to`` is, what was live before a run being undone,
    never another build of its commit), else the previous deploy's."""
    check_app(env)
    live = auto.live_image_tag_or_empty(aws, env) or None
    tags = repository_tags(aws)
    if to is not None:
        wanted = normalize_to(to)
        tag = pick(wanted, tags, what=f"the images of {env.repository}", exact=exact)
        if tag is None:
            raise _missing_image(env, wanted, tags)
        return Target(Component("app"), live, tag, f"--to {to}")
    tag, source, live = _history_target(aws, env, Component("app"), live)
    if tag not in tags:
        raise _missing_image(env, tag, tags)
    return Target(Component("app"), live, tag, source)


def app_plan(env: EnvConfig, repository_uri: str, tag: str, *, smoke: bool = True, base: str = "") -> Plan:
    """register a fresh revision with ``repository_uri:tag`` (from ``base``, else from the one the service runs) →
    roll → wait-healthy → smoke."""
    image = f"{repository_uri}:{tag}"
    steps: list[Step] = [
        RegisterTaskDef(env.cluster, env.service, env.container, repository_uri, tag, tag, from_stack=False, base=base),
        RollService(env.cluster, env.service, env.container, image),
        WaitHealthy(env.cluster, env.service, env.container, image, env.wait_timeout, env.poll_seconds),
    ]
    if smoke:
        steps.append(Smoke(refuses_first=False))
    return Plan(env.name, tuple(steps), Target(Component("app"), None, tag, "").title, (("app", tag),))


# -- a Lambda function ------------------------------------------------------------------------------------------


def version_for(versions: Sequence[dict[str, Any]], sha: str) -> str | None:
    """The newest version (of ``versions``, newest first) whose description says ``git <sha>``."""
    return next((str(v["Version"]) for v in versions if lambda_chain.git_sha_of(v.get("Description")) == sha), None)


def _missing_version(
    env: EnvConfig, function: str, function_name: str, wanted: str, shas: Sequence[str], code: str
) -> UsageError:
    listed = ", ".join(shas[:SHOWN]) + (f" and {len(shas) - SHOWN} more" if len(shas) > SHOWN else "")
    return UsageError(
        f"no published version of {function_name} ({function}) is tagged git {wanted}, nor runs its code ({code}), "
        f"nothing was changed; its versions name: {listed or 'no commit (published by CloudFormation only)'}",
        next_step=(
            f"roll back to one of those: inv rollback --env {env.name} --component lambda:{function} --to <sha>"
            if listed
            else "without --to, the rollback publishes the previous deploy's code again: "
            f"inv rollback --env {env.name} --component lambda:{function}"
        ),
    )


CodeAt = Callable[[str], "tuple[str, str] | None"]  # commit → (its SHA12, the function's CodeSha256 in it)


def _no_code(_commit: str) -> tuple[str, str] | None:
    return None


def resolve_lambda(
    aws: AwsFactory,
    env: EnvConfig,
    component: Component,
    to: str | None,
    code_at: CodeAt = _no_code,
    *,
    ran: bool = False,
) -> tuple[Target, str]:
    """The target and the Lambda function name.

    A commit's version is the newest tagged ``git <sha12>`` (the fast path publishes those), else the newest whose
    CodeSha256 is that of the function packaged as in the commit (``code_at``): the versions CloudFormation
    publishes name their code only. With none, the previous deploy's code, or the commit ``to`` names when it ``ran``
    (what was live before a run being undone), is published again (``republish``); not another commit ``to`` names,
    which may never have run."""
    function_name = lambda_chain.deployed_function(StackOutputs.of(aws), env, component.function)
    client = aws.client("lambda")
    reads: dict[str, Callable[[], Any]] = {
        "serving": partial(lambda_chain.live_configuration, client, function_name),
        "alias": partial(lambda_chain.alias_if_there, client, function_name),
    }
    read = at_once(reads)
    serving, routed = read["serving"], lambda_chain.routed_versions(read["alias"])
    live = lambda_chain.git_sha_of(serving.get("Description")) if serving else None
    live_version = str(serving.get("Version")) if serving else None
    versions = lambda_chain.published_versions(client, function_name)
    shas = list(dict.fromkeys(s for v in versions if (s := lambda_chain.git_sha_of(v.get("Description")))))
    by_code: dict[str, tuple[str, str | None, str | None]] = {}  # commit → (its SHA12, its CodeSha256, version)

    def version_of(commit: str) -> tuple[str, str | None, str | None]:
        if commit in shas:
            return commit, None, version_for(versions, commit)
        if commit not in by_code:
            sha12, code = (None if DIRTY in commit else code_at(commit)) or (commit, None)
            running = next((str(v["Version"]) for v in versions if code and v.get("CodeSha256") == code), None)
            by_code[commit] = (sha12, code, running)
        return by_code[commit]

    # the code the alias serves: a version of the very same code (CloudFormation publishes one anew when a stack's
    # deploy carries the function unchanged) is no other release
    live_code = serving.get("CodeSha256") if serving else None
    code_of = {str(v.get("Version")): v.get("CodeSha256") for v in versions}

    def serves(version: str | None) -> bool:
        return version is not None and (
            version == live_version or bool(live_code and code_of.get(version) == live_code)
        )

    def usable(commit: str) -> bool:  # a version to go back to: not one of the code the alias serves
        return version_of(commit)[2] is not None and not serves(version_of(commit)[2])

    def runs_now(commit: str) -> bool:  # its code is what the alias serves (a commit the stack carried it to since)
        return live_version is not None and serves(version_of(commit)[2])

    if to is not None:
        wanted = normalize_to(to)
        sha = pick(wanted, shas, what=f"the versions of {function_name}", exact=ran) or wanted
        source = f"--to {to}"
        if live is None:  # a version CloudFormation published names its zip, not its commit: the live record does
            live = _recorded_live(history.History.of(aws, env), component)
    else:
        # records written before they told carried components apart name SHAs with no version: passed over
        wanted, source, live = _history_target(aws, env, component, live, usable=usable, runs_now=runs_now)
        sha = wanted
    sha, code, version = version_of(sha)
    if version is None and code and (to is None or ran):  # code that ran, which no version runs: published again
        return Target(component, live, sha, source, routed=routed, republish=True), function_name
    if version is None:
        compared = f"CodeSha256 {code}" if code else "commit not in this clone to compare"
        raise _missing_version(env, component.function, function_name, wanted, shas, compared)
    if serves(version):  # its code is what runs: nothing to roll back (a version the stack published)
        live = sha
    return Target(component, live, sha, source, version, routed=routed), function_name


@dataclass(frozen=True)
class PointAlias(Step):
    """Point the alias at one published version (no weighted routing), skipped when it already does; and ``$LATEST``
    back on that version's code, when it runs another (:func:`deploykit.lambda_chain.latest_as_served`): a later
    deploy of the stack holding the function would publish it."""

    name: ClassVar[str] = "move-alias"
    function: str
    function_name: str
    alias: str
    version: str
    git_sha: str

    def describe(self) -> str:
        return f"point {self.function_name}:{self.alias} at version {self.version} (git {self.git_sha})"

    def run(self, ctx: Context) -> Outcome:
        client = ctx.aws.client("lambda")
        rerun = f"inv rollback --env {ctx.env.name} --component lambda:{self.function} --to {self.git_sha}"
        moved = lambda_chain.point_alias(
            client, self.function, self.function_name, self.alias, self.version, note=f"git {self.git_sha}"
        )
        moved = lambda_chain.provisioned_ready(ctx, client, moved, rerun=rerun)
        back = lambda_chain.latest_as_served(ctx, self.function, self.function_name, self.version, rerun=rerun)
        if not back:
            return moved
        return dataclasses.replace(moved, status="done", detail=moved.detail + back)


@dataclass(frozen=True)
class LatestBack(Step):
    """Put the function's ``$LATEST`` back on the code its alias serves, after a run that updated it and failed
    before the alias moved (a publish that failed or timed out, a canary Lambda refused): a later deploy of the stack
    holding the function that changes its settings would publish that untried code and serve it."""

    name: ClassVar[str] = "latest-back"
    changes_what_runs: ClassVar[bool] = False  # $LATEST's code: the alias serves a published version
    function: str
    function_name: str
    alias: str

    def describe(self) -> str:
        return f"put {self.function_name} $LATEST back on the code {self.alias} serves"

    def run(self, ctx: Context) -> Outcome:
        client = ctx.aws.client("lambda")
        version = str(lambda_chain.get_alias(client, self.function_name, self.alias)["FunctionVersion"])
        rerun = f"inv deploy.lambda {self.function} --env {ctx.env.name}"
        back = lambda_chain.latest_as_served(ctx, self.function, self.function_name, version, rerun=rerun)
        serves = f"{self.function}: {self.alias} serves version {version}"
        return Outcome.done(serves + back) if back else Outcome.skipped(serves + ", whose code $LATEST runs")


PackageAt = Callable[[str], "tuple[Path, packaging.Package]"]  # commit → the function's folder and package in it


def lambda_plan(
    env: EnvConfig, target: Target, function_name: str, *, smoke: bool = True, package: PackageAt | None = None
) -> Plan:
    """Point the alias at the target's version; or, with none to point at (``republish``), the fast path's steps with
    the commit's code (``package``: :func:`package_at`): upload (skipped when the zip is there), update-code,
    publish-version tagged with that commit, move-alias. Then smoke."""
    fn = target.component.function
    if not target.republish:
        steps: list[Step] = [PointAlias(fn, function_name, lambda_chain.ALIAS, target.version, target.sha)]
    elif package is None:
        raise ValueError("a function published again needs its commit's package")
    else:
        folder, made = package(target.sha)
        steps = lambda_chain.code_steps(env, fn, function_name, folder, made, target.sha)
        steps.append(lambda_chain.MoveAlias(fn, function_name, lambda_chain.ALIAS, made.key, made.code_sha256))
    if smoke:
        steps.append(Smoke(refuses_first=False))
    return Plan(env.name, tuple(steps), target.title, ((target.component.key, target.sha),))


# -- a stack ----------------------------------------------------------------------------------------------------


def _missing_commit(root: Path, env: EnvConfig, component: Component, sha: str) -> UsageError:
    return UsageError(
        f"commit {sha} is not in this clone, and {env.name} kept no template of {component.key} deployed from it: "
        "there is nothing to deploy it from, nothing was changed",
        next_step=f"{changes.fetch_more(git.is_shallow(root), 'it is on')}, then rerun; "
        f"inv history --env {env.name} lists the commits deployed",
    )


def kept_commits(aws: AwsFactory, env: EnvConfig, stack: str) -> frozenset[str]:
    """The commits (sha12) whose template of ``stack`` the environment kept (:func:`kept_template`): a rollback to
    one needs no commit in this clone (a shallow CI checkout). One listing; none without an artifacts bucket."""
    bucket = history.find_artifacts_bucket(aws, env)
    if not bucket:
        return frozenset()
    prefix = kept_template_key(env.name, stack, "")[: -len(".json")]
    found: set[str] = set()
    for page in aws.client("s3").get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", []):
            name = item["Key"][len(prefix) :]
            if name.endswith(".json") and "/" not in name:
                found.add(name[: -len(".json")])
    return frozenset(found)


def deployed_from(records: Sequence[history.Record], component: str, sha: str) -> str | None:
    """The commit whose deploy left ``component`` live as it was at ``sha``: ``sha`` itself when a successful run
    deployed it there; when successful runs only counted it unchanged at ``sha`` (deploy.auto carries a component
    none of whose paths changed to its commit, without deploying it), the commit they carried it from, followed back
    (``records``: newest first). None when the records do not reach a deploy of it."""
    seen: set[str] = set()
    while sha and sha not in seen:
        seen.add(sha)
        ok = [r for r in records if r.ok and r.components.get(component) == sha]
        if any(component in r.deployed for r in ok):
            return sha
        carried = next((r for r in ok if component in r.unchanged and r.base.get(component)), None)
        if carried is None:
            return None
        sha = str(carried.base[component])
    return None


def may_have_changed(record: history.Record, stack: str, stacks: Collection[str] = ()) -> bool:
    """Whether ``record``, a run that did not succeed, may have left ``stack`` at its commit: a deploy-stack step of
    that stack went through (a later step failed), or one failed naming it or naming none of the environment's
    ``stacks`` (its change set may have been executed first), or a deploy-stack step or a group of steps was
    interrupted (CloudFormation goes on by itself; which steps of a group ran is not recorded). A refused run changed
    nothing; one that failed before its stack step (a build), or at another stack, left this one as it was."""
    if record.refused:
        return False
    for step in record.steps:
        name, status, detail = step.get("step"), step.get("status"), str(step.get("detail") or "")
        if status == "failed" and detail == "interrupted" and name in ("deploy-stack", "parallel", "sequence"):
            return True
        if name != "deploy-stack":
            continue
        if status == "done" and history.step_name(step) == f"deploy-stack:{stack}":
            return True
        if status == "failed" and (stack in detail or not any(other in detail for other in stacks)):
            return True
    return False


def resolve_stack(
    aws: AwsFactory,
    config: Config,
    env: EnvConfig,
    component: Component,
    to: str | None,
    *,
    known: tuple[Sequence[history.Record], Mapping[str, Mapping[str, str]]] | None = None,
) -> Target:
    """The commit a stack goes back to: ``--to`` (any revision of this clone: a SHA, a tag, a branch; or the SHA of
    a commit whose template the environment kept), else the previous successful deploy of the stack in the history
    whose template was kept or whose commit this clone has (a build of uncommitted changes cannot be synthesized
    again: its cdk/ is not in git). A commit this clone lacks (a shallow checkout) does, when its template was kept.

    What is live is the live record's SHA for the stack, unless the newest run that deployed the stack failed: its
    change set may have gone through before a later step (smoke, a watch) failed, and a failed run never moves the live
    record. Then what runs may be that run's commit, and without ``--to`` the stack goes back to the live record's, the
    last that deployed it successfully; unless that run was a person's rollback, which took the stack off the live
    record's release: then to the deploy before what it went back to, as after one that worked. ``known``: the newest
    :data:`HISTORY_DEPTH` records and the live record, when the caller read them already (a whole run's rollback)."""
    root = config.root
    key = component.key
    found = history.History.of(aws, env) if known is None else None
    if found is not None:
        reads: dict[str, Callable[[], Any]] = {"records": partial(found.records, HISTORY_DEPTH), "live": found.live}
        read = at_once(reads)
        known = read["records"], read["live"]
    records: Sequence[history.Record] = known[0] if known else []
    recorded: str | None = known[1].get(key, {}).get("sha") if known else None
    roles = planner.stack_roles(env)
    stack = roles[component.role]
    # the newest run that deployed the stack or may have changed it (refused runs, failures before it, passed over)
    attempt = next(
        (r for r in records if key in r.deployed and (r.ok or may_have_changed(r, stack, roles.values()))), None
    )
    failed = attempt is not None and not attempt.ok and attempt.deployed[key] != recorded
    live = attempt.deployed[key] if failed and attempt is not None else recorded
    kept = cache(partial(kept_commits, aws, env, stack))
    if to is not None:
        wanted = check_stack_to(root, to)
        full = git.resolve_commit(root, wanted)  # any revision: a SHA, a tag, a branch, HEAD~1
        if full is None:
            full = _kept_commit(wanted, kept())
        if full is None and git.is_sha(wanted.lower(), least=12):  # carried there from a kept one
            origin = deployed_from(records, key, wanted.lower()[:12])
            full = wanted.lower() if origin and origin[:12] in kept() else None
        if full is None:
            raise _missing_commit(root, env, component, wanted)
        return _stack_target(component, live, full[:12], f"--to {to}", records)

    def usable(sha: str) -> bool:
        if DIRTY in sha:
            return False
        origin = deployed_from(records, key, sha) or sha
        return git.is_known_commit(root, sha) or sha[:12] in kept() or origin[:12] in kept()

    # a person's rollback that failed after its change set went through went back from the recorded release: going
    # there again would be going forward, to a release put back as bad (previous_deploy passes it over)
    if failed and attempt is not None and not attempt.rollback_by_hand and recorded and usable(recorded):
        why = f"the last successful deploy; {attempt.command} at {attempt.when} failed after it ({attempt.id})"
        return _stack_target(component, live, recorded, why, records)
    sha, source, live = _history_target(
        aws,
        env,
        component,
        live,
        usable,
        records=records if known else None,
        deeper=found.records_of if found is not None else None,
        failed_live=partial(may_have_changed, stack=stack, stacks=roles.values()),
    )
    if DIRTY in sha:
        raise UsageError(
            f"the previous deploy of {key} ({sha}) was of uncommitted changes: its cdk/ is not in git, "
            "nothing was changed",
            next_step="name a commit: inv rollback --component " + key + " --to <sha>",
        )
    if not usable(sha):
        raise _missing_commit(root, env, component, sha)
    return _stack_target(component, live, sha, source, records)


def _stack_target(
    component: Component, live: str | None, sha: str, source: str, records: Sequence[history.Record]
) -> Target:
    origin = deployed_from(records, component.key, sha)
    return Target(component, live, sha, source, deployed_from=origin if origin and origin != sha else "")


def _kept_commit(wanted: str, kept: Collection[str]) -> str | None:
    """The kept commit (sha12) ``wanted`` names: a SHA of at least 7 hex digits, full or abbreviated; None when
    none or more than one matches."""
    sha = wanted.lower()
    if not git.is_sha(sha):
        return None
    found = [commit for commit in kept if commit.startswith(sha[:12])]
    return found[0] if len(found) == 1 else None


def kept_template(config: Config, aws: AwsFactory, env: EnvConfig, stack: str, sha: str) -> synth.Synthesis | None:
    """The template ``stack`` was deployed with from commit ``sha``, as its deploy kept it in the artifacts bucket
    (:func:`deploykit.stack_chain.keep_template`): written as a cloud assembly of that one stack, its template, its
    stack tags and the notification topics its app named, in ``cdk.out/<env>@<sha>.kept/`` (beside the other stacks
    kept from that commit: the manifest names each). None when none was kept (a
    deploy before templates were kept, a commit never deployed here) or the environment has no bucket: the commit's CDK
    app is synthesized then."""
    bucket = history.find_artifacts_bucket(aws, env)
    if not bucket:
        return None
    try:
        answer = aws.client("s3").get_object(Bucket=bucket, Key=kept_template_key(env.name, stack, sha))
    except ClientError as exc:
        if is_not_there(exc):
            return None
        raise
    try:
        kept = json.loads(answer["Body"].read())
        template, tags, topics = kept["template"], kept.get("tags") or {}, kept.get("notification_arns")
        if kept.get("stack") != stack or not isinstance(template, dict) or not isinstance(tags, dict):
            return None
        if topics is not None and not isinstance(topics, list):
            return None
    except (ValueError, KeyError, TypeError, AttributeError):
        return None  # not what keep_template writes: the commit is synthesized instead
    out = config.root / synth.OUT_ROOT / f"{env.name}@{sha}.kept"
    path = out / f"{stack}.template.json"
    stack_tags = {str(k): str(v) for k, v in tags.items()}
    properties: dict[str, object] = {"stackName": stack, "templateFile": path.name, "tags": stack_tags}
    if topics is not None:  # the topics its app named: a deploy of it names them again (deploy.toml's besides)
        properties["notificationArns"] = topics
    # the stacks of a run's undo most often go back to one commit, all kept in this folder: each its own entry, added
    # one command at a time (two at once lost one's entry: "the CDK app makes no stack")
    with local_lock.held(local_lock.lock_file(out.parent, out.name), what=str(out.relative_to(config.root))):
        out.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(template, indent=1))
        artifacts = _kept_artifacts(out / synth.MANIFEST)
        artifacts[stack] = {"type": "aws:cloudformation:stack", "properties": properties}
        (out / synth.MANIFEST).write_text(json.dumps({"artifacts": artifacts}, indent=1))
    return synth.Synthesis(out, {stack: path}, skipped=True, seconds=0.0, stack_tags={stack: stack_tags})


def _kept_artifacts(manifest: Path) -> dict[str, Any]:
    """The stacks a folder of kept templates' manifest names already (:func:`kept_template`); {} for none."""
    try:
        artifacts = json.loads(manifest.read_text()).get("artifacts")
    except (OSError, ValueError, AttributeError):
        return {}
    return dict(artifacts) if isinstance(artifacts, dict) else {}


def synthesize_at(
    config: Config, env: EnvConfig, sha: str, *, account: str, ecr: Any, say: Callable[[str], None] | None = None
) -> synth.Synthesis:
    """The CDK app of commit ``sha`` synthesized for ``env``: its cdk/ taken from git into a folder of its own,
    ``cdk.out/.source-<sha>-*/``, for the while (the work tree is never touched), the assembly in
    ``cdk.out/<env>@<sha>/`` (skipped when it is already there, as any synthesis)."""
    if not git.is_known_commit(config.root, sha):  # a kept template named it, but is gone (or unreadable) now
        raise UsageError(
            f"commit {sha} is not in this clone, and the template deployed from it could not be read from "
            f"{env.name}: there is nothing to deploy it from, nothing was changed",
            next_step=f"{changes.fetch_more(git.is_shallow(config.root), 'it is on')}, then rerun",
        )
    # a folder of this call's own: two rollbacks to one commit (two environments', a dry run beside a rollback)
    # removed each other's source mid-synthesis, refused as the app failing or deploy.toml's settings
    out_root = config.root / synth.OUT_ROOT
    out_root.mkdir(parents=True, exist_ok=True)
    for left in out_root.glob(".source-*"):  # one a killed command left: older than any synthesis lasts
        with contextlib.suppress(OSError):
            if time.time() - left.stat().st_mtime > 2 * synth.SYNTH_TIMEOUT:
                shutil.rmtree(left, ignore_errors=True)
    source = Path(tempfile.mkdtemp(prefix=f".source-{sha}-", dir=out_root))
    try:
        if (
            not git.export(config.root, sha, synth.CDK_DIR, source)
            or not (source / synth.CDK_DIR / synth.APP).is_file()
        ):
            raise UsageError(
                f"commit {sha} has no {synth.CDK_DIR}/{synth.APP}: there is no stack to go back to there",
                next_step="name a later commit: inv rollback --component stack:<role> --to <sha>",
            )
        return synth.synthesize(
            dataclasses.replace(config, path=source / config.path.name),
            env,
            account=account,
            ecr=ecr,
            out_dir=config.root / synth.OUT_ROOT / f"{env.name}@{sha}",
            say=say,
            check=False,  # its stacks may be others than deploy.toml names now; only the one asked for is deployed
        )
    except StepFailed as exc:
        raise StepFailed(
            f"the CDK app of commit {sha} does not synthesize here: {exc.message}",
            next_step=f"deploy that commit from a checkout of it: git checkout {sha} && inv deploy.stack <stack>",
        ) from None
    finally:
        shutil.rmtree(source, ignore_errors=True)


def template_parameters(
    template: Mapping[str, Any],
    live: Mapping[str, str],
    *,
    stack: str,
    sha: str,
    removing: Collection[str] = (),
    restoring: Collection[str] = (),
) -> tuple[tuple[str, str], ...]:
    """The parameters to deploy ``template`` (``stack`` at commit ``sha``) with: each one it declares that ``live``
    gives (the image tag, the Lambda code keys live now); one it declares without a default and ``live`` lacks
    is a UsageError. The functions of ``removing`` (those a run being undone added: taking them out is the point)
    it must not declare, those of ``restoring`` (those that run took out, their code packaged again in ``live``) it
    must. Whether it deletes or takes over a function running now is :func:`stack_moves`' to say."""
    declared: Mapping[str, Any] = template.get("Parameters") or {}
    missing = sorted(fn for fn in restoring if planner.code_parameter(fn) not in declared)
    if missing:
        raise UsageError(
            f"{stack} at {sha} has no function {', '.join(missing)}, though it ran before the run being undone took "
            f"{'it' if len(missing) == 1 else 'them'} out; nothing was changed",
            next_step="roll back the run's components one by one: inv rollback --component COMPONENT --to SHA",
        )
    kept = sorted(fn for fn in removing if planner.code_parameter(fn) in declared)
    if kept:
        raise UsageError(
            f"{stack} at {sha} has function {', '.join(kept)} too: going back to it would keep "
            f"{'it' if len(kept) == 1 else 'them'}, though the run being undone deployed "
            f"{'it' if len(kept) == 1 else 'them'} first; nothing was changed",
            next_step="roll back the run's components one by one: inv rollback --component COMPONENT --to SHA",
        )
    unmet = sorted(name for name, spec in declared.items() if name not in live and "Default" not in (spec or {}))
    if unmet:
        raise UsageError(
            f"{stack} at {sha} asks for {', '.join(unmet)}, which nothing live gives (a function not deployed now?), "
            "nothing was changed",
            next_step=f"deploy that commit from a checkout of it: git checkout {sha} && inv deploy.stack {stack}",
        )
    return tuple(sorted((name, live[name]) for name in declared if name in live))


@dataclass(frozen=True)
class StackMoves:
    """What a stack going back to its template at ``sha`` does to the functions running now, besides those a run
    being undone added or took out: it ``deletes`` those it holds now and that template does not, and ``takes`` those
    that template holds and another stack holds now (function → that stack)."""

    stack: str
    sha: str
    deletes: frozenset[str]
    takes: Mapping[str, str]


def stack_moves(
    template: Mapping[str, Any], hosts: Mapping[str, str], *, stack: str, sha: str, removing: Collection[str] = ()
) -> StackMoves:
    """``stack``'s :class:`StackMoves` going back to ``template`` (its template at ``sha``); ``hosts``: each function
    running now → the stack holding it."""
    held = set(planner.code_parameters(template))
    return StackMoves(
        stack,
        sha,
        frozenset(fn for fn, host in hosts.items() if host == stack and fn not in held and fn not in removing),
        {fn: host for fn, host in hosts.items() if host != stack and fn in held},
    )


@dataclass(frozen=True)
class RunUndo:
    """One run's undo (``inv rollback --run``), as each of its components' rollbacks needs it: the run's ``record``;
    ``known``, the history's records and the live record, read once; the functions a stack going back takes out
    (``removing``: those the run added) or brings back (``restoring``: those it took out, function → the commit each
    ran); then, once the functions' rollbacks are resolved (the stacks are given what the functions go back to),
    ``going_back``, function → the code key of the version its alias goes back to, and ``republishing``, function →
    the commit whose code no version runs (the run made the function anew), which the stack going back that holds it
    deploys. ``moves`` gathers what each stack going back does to the functions running now, to be checked together
    (:func:`refuse_moves`)."""

    record: history.Record
    known: tuple[Sequence[history.Record], Mapping[str, Mapping[str, str]]]
    removing: tuple[str, ...] = ()
    restoring: Mapping[str, str] = field(default_factory=dict)
    going_back: Mapping[str, str] = field(default_factory=dict)
    republishing: Mapping[str, str] = field(default_factory=dict)
    moves: list[StackMoves] = field(default_factory=list)

    @property
    def why(self) -> str:
        """Where each component's target comes from, as its rollback says it."""
        return f"live before run {self.record.id}"


def refuse_moves(moves: Sequence[StackMoves]) -> None:
    """A UsageError, before anything changes, when the stacks going back together (one, or those of a run being
    undone) would delete a function running now that none of them takes, or take one that none of them deletes: the
    stack holding it now would keep it, so it would run twice, in two stacks. One that a stack deletes and another
    takes moves back between them: the undo of a run that moved it from one stack to the other."""
    deleted = {fn for m in moves for fn in m.deletes}
    taken = [fn for m in moves for fn in m.takes]
    for m in moves:
        gone = sorted(m.deletes - set(taken))
        if gone:
            raise UsageError(
                f"{m.stack} at {m.sha} has no function {', '.join(gone)}, deployed since: going back would delete "
                f"{'it' if len(gone) == 1 else 'them'}, nothing was changed",
                next_step=(
                    "roll back to a later commit that has it, or remove it in a commit and run inv deploy.auto; if it "
                    "moved here from another stack, undo the run that moved it (inv rollback --run ID)"
                ),
            )
        twice = sorted(fn for fn in m.takes if fn not in deleted or taken.count(fn) > 1)
        if twice:
            holders = ", ".join(sorted({m.takes[fn] for fn in twice}))
            raise UsageError(
                f"{m.stack} at {m.sha} has function {', '.join(twice)}, which {holders} holds now: going back "
                f"would run {'it' if len(twice) == 1 else 'them'} twice, in two stacks, nothing was changed",
                next_step=(
                    f"undo the run that moved {'it' if len(twice) == 1 else 'them'} (inv history names it: inv "
                    f"rollback --run ID), which takes {'it' if len(twice) == 1 else 'them'} out of {holders} too"
                ),
            )


def stack_plan(
    env: EnvConfig,
    target: Target,
    template: Path,
    parameters: tuple[tuple[str, str], ...],
    *,
    allow_replace: bool = False,
    approve_access: bool = False,
    smoke: bool = True,
    rerun: str = "",
) -> Plan:
    """The stack's change set from ``template`` with ``parameters`` (deploy.stack's step and guards) → smoke.
    ``rerun``: the command a guard's refusal names to run this rollback again (with --allow-replace...)."""
    stack = planner.stack_roles(env)[target.component.role]
    deploy = DeployStack(
        stack,
        str(template),
        parameters,
        allow_replace,
        approve_access=approve_access,
        rerun=rerun,
        commit=target.sha if DIRTY not in target.sha else "",
        registry_stack=env.stacks.registry,
        express=env.stack_mode == "express",
    )
    steps: list[Step] = [deploy]
    if smoke:
        steps.append(Smoke(refuses_first=False))
    return Plan(env.name, tuple(steps), target.title, ((target.component.key, target.sha),))


# -- a whole run ------------------------------------------------------------------------------------------------


# A run's time as inv history shows it (an offset instead of Z too); anything else is an id or the start of one, never
# read as a time (an id's -1234... suffix reads as a UTC offset).
_SHOWN_TIME = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(?:Z|[+-][0-9]{2}:[0-9]{2})?")


def _changed(record: history.Record) -> bool:
    """Whether a run deployed a component at another commit than ran there before, and changed what runs (its
    record says so: a deploy of a comment in cdk/app.py finds every stack with nothing to change)."""
    moved = any(sha != record.base.get(component) for component, sha in record.deployed.items())
    return moved and record.changed is not False


def run_prefix(run: str, env: EnvConfig) -> str:
    """What the id of the run ``--run`` names starts with (``last`` as it is): its time as ``inv history`` shows it
    (``2026-11-29T15:23:55Z``) as an id writes it, else the id or its start as given. UsageError for a time the
    calendar does not have: checked before the environment is read."""
    prefix = run.strip()
    if not _SHOWN_TIME.fullmatch(prefix):
        return prefix
    try:
        moment = datetime.fromisoformat(prefix.replace("Z", "+00:00"))
    except ValueError:  # 2026-02-30: no time there is, nor a run
        raise UsageError(
            f"--run {run}: there is no such time (a day or an hour the calendar does not have)",
            next_step=f"pass a run's time as inv history --env {env.name} shows it, its id, or --run last",
        ) from None
    return (moment.astimezone(UTC) if moment.tzinfo else moment).strftime("%Y%m%dT%H%M%S")


def run_moment(run: str, env: EnvConfig) -> datetime | None:
    """The second the run ``run`` names started in (UTC), when it names one (its id, or its time, whole or with
    its seconds at least): the history since then holds it. None for ``last`` and for a shorter start of an id."""
    if run == "last":
        return None
    prefix = run_prefix(run, env)
    try:
        return datetime.strptime(prefix[:15], "%Y%m%dT%H%M%S").replace(tzinfo=UTC)
    except ValueError:
        return None


def find_run(
    records: Sequence[history.Record], run: str, env: EnvConfig, *, since: datetime | None = None
) -> history.Record:
    """The record ``run`` names among ``records`` (newest first): ``last``, the newest successful run that changed
    something (a component it deployed at another commit than ran before, and a step that changes what runs done: a
    rerun whose every step was skipped changed nothing, nor did stacks' deploys that found nothing to change) and was
    not itself a rollback (undoing a rollback would deploy again what it took away: after an automatic rollback, the
    failed release); else a record's id or the start of one (``inv history --json`` lists them), or its time as ``inv
    history`` shows it (``2026-11-29T15:23:55Z``). UsageError otherwise. ``since``: ``records`` are the history
    since then (a run older than the newest records), not its newest."""
    if run == "last":
        found = next((r for r in records if r.ok and _changed(r) and not r.rollback), None)
        if found is None:
            raise UsageError(
                f"no successful deploy (other than a rollback) among {env.name}'s newest {len(records)} records",
                next_step=f"see the history: inv history --env {env.name}; a rollback is undone by naming it: --run ID",
            )
        return found
    prefix = run_prefix(run, env)
    named = [r for r in records if r.id.startswith(prefix)] if prefix else []
    if len(named) != 1:
        problem = f"no run {run!r}" if not named else f"{run!r} names {len(named)} runs"
        among = f"newest {len(records)} records" if since is None else f"{len(records)} records since {since:%FT%TZ}"
        raise UsageError(
            f"{problem} among {env.name}'s {among}",
            next_step=f"pass a whole record id (inv history --env {env.name} --json lists them), or --run last",
        )
    return named[0]


def undo_order(component: str, env: EnvConfig) -> tuple[int, int, str]:
    """In which order a run's components go back: a deploy's own (stacks in dependency order, then the Lambda
    functions and the app, side by side). A stack goes back while what runs is still the run's, so its template gets
    the image and the code that run now (read when the plan is made) and changes neither; then the code goes back."""
    kind, _, name = component.partition(":")
    if kind == "stack":
        level = next((n for n, roles in enumerate(planner.stack_levels(env)) if name in roles), 0)
        return 0, level, name
    return (1, 1, name) if kind == "app" else (1, 0, name)  # one group (run_plan_of), the functions listed first


def undo_targets(
    record: history.Record, newer: Sequence[history.Record], live: Mapping[str, Mapping[str, str]], env: EnvConfig
) -> list[tuple[str, str]]:
    """(component, SHA) for each component ``record``'s run deployed, the SHA live before it, in :func:`undo_order`.

    Refused (UsageError, nothing changed): a run that failed (its automatic rollback already put back what it
    replaced), one that deployed nothing, a component the run deployed first (nothing before it to go back to), and
    one that a ``newer`` successful run deployed again or took out, or that is not live any more (undo the newer run
    first); a stack the run deployed over a build of uncommitted changes (no commit's cdk/ to go back to). A newer
    run that only carried a component unchanged did not deploy it. A newer rollback that put back what ran before
    this run has undone it already (refused, said so); one that put back this run's own release (the automatic
    rollback of a later deploy that failed) leaves it to be undone."""
    where = f"run {record.id} ({record.command} at {record.when})"
    if not record.ok:
        raise UsageError(
            f"{where} did not succeed: what it replaced was put back by its automatic rollback, or stays as it failed",
            next_step="roll back a component on its own: inv rollback --component COMPONENT [--to SHA]",
        )
    if not record.deployed:
        raise UsageError(f"{where} deployed nothing", next_step="pick another run: inv history --env " + env.name)
    added = taken_out(record)
    first = sorted(c for c in record.deployed if not record.base.get(c) and c not in added)
    if first:
        raise UsageError(
            f"{where} deployed {', '.join(first)} for the first time: there is nothing before it to go back to, "
            "nothing was changed",
            next_step="roll back the others one by one: inv rollback --component COMPONENT --to SHA",
        )
    moved: list[str] = []
    back = restored(record)  # functions the run took out: not live, unless a newer run brought them back
    for component in [*sorted(record.deployed), *back]:
        since = _since(newer, component)
        if component in back:
            if since is not None:
                moved.append(f"{component} (by {since.command} at {since.when}, {since.id})")
            continue
        runs = (live.get(component) or {}).get("sha")
        if since is not None and since.rollback and runs in (record.deployed[component], record.base.get(component)):
            continue  # this run's release put back (after a newer deploy failed): it can be undone; or undone
        if since is not None:
            moved.append(f"{component} (by {since.command} at {since.when}, {since.id})")
        elif component not in live:
            moved.append(f"{component} (not live any more)")
    undone = put_back_since(record, newer, live)
    if moved:
        raise UsageError(
            f"{where}: deployed again since, or taken out: {'; '.join(moved + list(undone.values()))}; "
            "nothing was changed",
            next_step="undo the newer runs first (inv history lists them), or roll back one component: "
            "inv rollback --component COMPONENT --to SHA",
        )
    if undone.keys() >= record.deployed.keys() - taken_out(record):
        raise UsageError(
            f"{where} is undone already: {'; '.join(undone.values())}; nothing was changed",
            next_step=f"see what runs: inv history --env {env.name}; to undo an earlier run, name it: --run ID",
        )
    dirty = sorted(c for c in record.deployed if c.startswith("stack:") and DIRTY in str(record.base.get(c)))
    if dirty:  # said as --run's, not as the --to it is resolved with (check_stack_to)
        stack = dirty[0]
        raise UsageError(
            f"{where} deployed {stack} over a build of uncommitted changes ({record.base[stack]}): a stack goes back "
            "to a commit's cdk/ as committed, and that build's is not in git; nothing was changed",
            next_step=f"roll back the run's components one by one, {stack} to a commit: inv rollback --env {env.name} "
            f"--component {stack} --to SHA (inv history --env {env.name} --component {stack} lists them)",
        )
    return sorted(
        ((c, str(record.base[c])) for c in record.deployed if c not in added and c not in undone),
        key=lambda pair: undo_order(pair[0], env),
    )


def _since(newer: Sequence[history.Record], component: str) -> history.Record | None:
    """The newest of ``newer`` (newest first) that deployed ``component`` again or took it out, successfully; None
    when none did."""
    return next((r for r in newer if r.ok and (component in r.deployed or component in r.removed)), None)


def put_back_since(
    record: history.Record, newer: Sequence[history.Record], live: Mapping[str, Mapping[str, str]]
) -> dict[str, str]:
    """component → how, for each component ``record``'s run deployed that a ``newer`` rollback put back on what ran
    before the run (and runs so): undone already, the rest of the run is still to undo (:func:`undo_targets`)."""
    found: dict[str, str] = {}
    for component in sorted(record.deployed):
        since = _since(newer, component)
        runs = (live.get(component) or {}).get("sha")
        if since is not None and since.rollback and runs == record.base.get(component) != record.deployed[component]:
            found[component] = f"{component} (put back by {since.command} at {since.when}, {since.id})"
    return found


def unchanged_by(record: history.Record, stacks: Mapping[str, str]) -> frozenset[str]:
    """The stack components (``stack:ROLE``; ``stacks``: role → the environment's stack name) ``record``'s run
    deployed and changed nothing in: each of its deploy steps of the stack found nothing to change (``STACK: no
    changes``, skipped), as every stack of a run that changed cdk/app.py may. Going back from that run, each is as it
    was before it already: nothing to put back, no change set to make; the undo carries it to what was live before."""
    quiet: dict[str, bool] = {}
    for step in record.steps:
        name = history.step_name(step)
        if name.startswith("deploy-stack:"):
            stack = name.partition(":")[2]
            quiet[stack] = quiet.get(stack, True) and step.get("status") == "skipped"
    return frozenset(
        component
        for role, stack in stacks.items()
        if quiet.get(stack) and (component := f"stack:{role}") in record.deployed
    )


def restored(record: history.Record) -> dict[str, str]:
    """``lambda:<fn>`` → the commit it ran before ``record``'s run took it out (its folder deleted, the stack that held
    it deployed without it, over an earlier commit): undoing the run brings it back, packaged as in that commit
    (:func:`package_at`), as the stack that held it goes back to its template before the run."""
    if not _held_functions_redeployed(record):
        return {}
    return {c: str(record.base[c]) for c in sorted(record.removed) if c.startswith("lambda:") and record.base.get(c)}


def package_at(config: Config, env: EnvConfig, function: str, commit: str) -> tuple[Path, packaging.Package]:
    """The function's folder as in ``commit`` (written to ``cdk.out/<env>@<sha>.lambda/``, where the upload step
    packages it again) and its package: packaging is reproducible, so this is the zip that commit deployed. A
    UsageError when this clone lacks the commit, or the commit lacks the function."""
    full = git.resolve_commit(config.root, commit)
    out = config.root / synth.OUT_ROOT / f"{env.name}@{commit}.lambda"
    folder = out / lambda_chain.LAMBDA_FOLDER / function
    if full is None or not _exported(config.root, full, function, out):
        raise UsageError(
            f"lambda:{function} would come back as in commit {commit}, but "
            + ("this clone does not have that commit" if full is None else "that commit has no such function")
            + ": it cannot be packaged again; nothing was changed",
            next_step=(
                f"{changes.fetch_more(git.is_shallow(config.root), 'it is on')}, then rerun"
                if full is None
                else "add the function back in a commit and run inv deploy.auto"
            ),
        )
    return folder, packaging.package_function(folder, **config.lambda_target(env))


# What an export that finished writes last beside the function's folder (:func:`_exported`). A new one whenever the
# export writes a commit's folder otherwise: what an older deploykit wrote (before a submodule's files were
# exported) is then written again, never packaged.
EXPORTED = "exported by deploykit: the commit's files, its submodules' included\n"


def _exported(root: Path, commit: str, function: str, out: Path) -> bool:
    """``function``'s folder as in ``commit`` under ``out`` (``out/lambda/<fn>``); False when that commit has no such
    function. An earlier export there is reused only when it finished and was written as this one would be (its mark,
    written last, says :data:`EXPORTED`): one that an interrupt cut short, or that an older deploykit wrote, would be
    packaged without some of its files, so its folder is removed and written again."""
    folder = out / lambda_chain.LAMBDA_FOLDER / function
    mark = out / f".{function}.exported"
    # one command at a time: two rollbacks exporting one function at once removed each other's files mid-export
    with local_lock.held(local_lock.lock_file(out.parent, f"{out.name}-{function}"), what=f"{out.name}/{function}"):
        if folder.is_dir() and mark.is_file() and mark.read_text() == EXPORTED:
            return True
        mark.unlink(missing_ok=True)
        shutil.rmtree(folder, ignore_errors=True)
        if not git.export(root, commit, f"{lambda_chain.LAMBDA_FOLDER}/{function}", out):
            return False
        mark.write_text(EXPORTED)
        return True


def taken_out(record: history.Record) -> tuple[str, ...]:
    """The Lambda functions ``record``'s run added (deployed for the first time) with the stack holding them, which
    it deployed over an earlier commit: undoing the run takes them out, as that stack goes back to its template
    before the run (which has no function for them; :func:`template_parameters` checks it)."""
    if not _held_functions_redeployed(record):
        return ()
    return tuple(sorted(c for c in record.deployed if c.startswith("lambda:") and not record.base.get(c)))


def _held_functions_redeployed(record: history.Record) -> bool:
    """Whether ``record``'s run deployed, over an earlier commit, a stack that may hold functions (the API stack, one
    of the team's own): the functions it added or took out came and went with it."""
    return any(planner.is_function_stack(c) and record.base.get(c) for c in record.deployed)


def component_of(key: str) -> Component:
    """``app``, ``lambda:<fn>``, ``stack:<role>`` as the history names them → the Component."""
    kind, _, name = key.partition(":")
    if kind == "stack":
        return Component("stack", role=name)
    return Component("lambda", name) if kind == "lambda" else Component("app")


def run_plan_of(
    env: EnvConfig,
    record: history.Record,
    plans: Sequence[tuple[str, Plan]],
    *,
    smoke: bool = True,
    carried: Sequence[tuple[str, str]] = (),
) -> Plan:
    """One plan of the components' plans (component → its plan, without its smoke), one smoke at the end, in
    :func:`undo_order` and side by side as ``deploy.auto`` runs a deploy: the stacks of one dependency level
    together, then the functions and the app together. The functions the run added (:func:`taken_out`) leave the
    live record with it, when a stack that may hold them goes back. ``carried``: (component, SHA) recorded live
    without a step (:func:`unchanged_by`)."""
    groups: dict[tuple[int, int], list[tuple[str, Plan]]] = {}
    for component, plan in plans:
        rank, level, _ = undo_order(component, env)
        groups.setdefault((rank, level if rank == 0 else 0), []).append((component, plan))  # the code: one group
    steps: list[Step] = []
    for _, members in sorted(groups.items()):
        if len(members) == 1:
            steps += members[0][1].steps
            continue
        steps.append(
            Parallel(
                tuple(
                    plan.steps[0] if len(plan.steps) == 1 else StepSequence(component.replace(":", " "), plan.steps)
                    for component, plan in members
                )
            )
        )
    deploys = tuple(pair for _, plan in plans for pair in plan.deploys)
    removes = taken_out(record) if any(planner.is_function_stack(component) for component, _ in plans) else ()
    found = tuple(pair for _, plan in plans for pair in plan.found)
    return Plan(
        env.name,
        (*steps, *((Smoke(refuses_first=False),) if smoke else ())),
        f"rollback run {record.id}",
        deploys,
        carried=tuple(carried),
        removes=removes,
        found=found,
    )


# -- both -------------------------------------------------------------------------------------------------------


def rollback_plan(
    aws: AwsFactory,
    env: EnvConfig,
    component: Component,
    *,
    to: str | None,
    smoke: bool = True,
    repository_uri: Callable[[AwsFactory], str] = registry.repository_uri,
    code_at: CodeAt = _no_code,
    package_at: PackageAt | None = None,
    ran: bool = False,
) -> tuple[Target, Plan]:
    """Resolve the target (refusing what cannot be rolled back to), then the plan that goes back to it.
    ``package_at``: a function's package as in a commit, for a target no version runs (:func:`lambda_plan`);
    ``ran``: ``to`` is what was live before a run being undone, that very build (:func:`resolve_lambda`)."""
    if component.kind == "app":
        target = resolve_app(aws, env, to, exact=ran)
        return target, app_plan(env, repository_uri(aws), target.sha, smoke=smoke)
    target, function_name = resolve_lambda(aws, env, component, to, code_at, ran=ran)
    return target, lambda_plan(env, target, function_name, smoke=smoke, package=package_at)


# -- automatic rollback -----------------------------------------------------------------------------------------

# the failures that say the release itself is bad (a failed canary of one function of deploy.auto's: its own version
# is taken back already), after which a stack this run changed may be to blame too
TRIGGERS = ("wait-healthy", "smoke", "watch-errors", "watch-alarms", "canary")


@dataclass(frozen=True)
class Undo:
    """What an automatic rollback runs (``plan``) and what it says besides (``notes``)."""

    plan: Plan
    notes: tuple[str, ...] = ()
    # what the failed run replaced, for the messages: "app (was 3e2532eaf7e5)", "lambda:fn (was version 4)"
    replaced: tuple[str, ...] = ()
    components: tuple[str, ...] = ()  # the same, as components: "app", "lambda:fn"


def failed_step(report: RunReport) -> StepRecord | None:
    """The step whose failure ended the run: the step of a group that failed it, when a group did (of a group's
    group too: the first in the group's order that failed, else that refused, whose error the group raised; not one
    a failure beside it held back)."""
    failed = next((record for record in report.records if record.status == "failed"), None)
    while failed is not None and (inner := [c for c in failed.children if c.status == "failed" and not c.held_back]):
        # as the group sorts them: a failure before a refusal, and deploykit's verdict before an AWS call's failure
        failed = min(inner, key=lambda child: (child.refused, child.raw))
    return failed


def changed_stacks(report: RunReport, env: EnvConfig) -> list[str]:
    """The roles of the stacks a failed run updated (a stack it created has nothing before it) when it failed after
    them, in a step a rollback answers (:data:`TRIGGERS`): the automatic rollback puts back code,
    never a stack."""
    failed = failed_step(report)
    if not isinstance(report.error, StepFailed) or failed is None or failed.step not in TRIGGERS:
        return []
    roles: list[str] = []
    for step in all_records(report.records):
        if step.step == DeployStack.name and step.status == "done":
            roles += [
                role
                for role, stack in planner.stack_roles(env).items()
                if step.outputs.get(action_key(stack)) == "updated"
            ]
    return roles


def _replaced_by_the_stack(
    env: EnvConfig, report: RunReport, before: Mapping[str, str | None]
) -> tuple[str, str] | None:
    """(repository, tag) of the app the run's update of the Fargate stack replaced, when it changed the image
    parameter (deploy.auto of a commit that changes the app and that stack rolls the new image through the stack's
    update: roll-service has nothing left to do, and says nothing of what ran before); None otherwise. The tag is
    the app's as the live record had it before the run (``before``: what the last successful deploy verified; the
    stack's former parameter may name an image that was never verified, or was taken back since); the repository
    is the plan's, as its wait-healthy (or push, or copy) names it."""
    stack = planner.stack_roles(env)[planner.HOSTED_BY["app"]]
    outputs = report.outputs()
    tag = before.get("app")
    if (
        not tag
        or not outputs.get(was_key(stack, planner.IMAGE_PARAMETER))
        or outputs.get(action_key(stack)) != "updated"
    ):
        return None
    repository = next((r for _depth, step in walk(report.plan.steps) if (r := _repository_of(step))), "")
    return (repository, tag) if repository else None


def _found_rolled_out(report: RunReport, before: Mapping[str, str | None]) -> tuple[str, str] | None:
    """(repository, tag) of the app the live record verified (``before``), when the run found the service rolled
    out already on the release it deploys (its roll-service skipped), which is not that one: an earlier run's, never
    verified. None otherwise (the run rolled it itself: ``previous_image`` says what ran before)."""
    verified, deployed = before.get("app"), dict(report.plan.deploys).get("app")
    rolled = any(r.step == RollService.name and r.status == "skipped" for r in all_records(report.records))
    if not verified or not deployed or verified == deployed or not rolled:
        return None
    repository = next((r for _depth, step in walk(report.plan.steps) if (r := _repository_of(step))), "")
    return (repository, verified) if repository else None


def _repository_of(step: Step) -> str:
    """The app's repository a step names (registry/repository, no tag), or ""."""
    if isinstance(step, WaitHealthy):
        return (split_image(step.image) or ("", ""))[0]
    return step.repository if isinstance(step, PushImage | PromoteImage) else ""


def undo_plan(
    env: EnvConfig,
    report: RunReport,
    lambda_client: Any,
    *,
    smoke: bool = True,
    before: Mapping[str, str | None] | None = None,
    entries: Mapping[str, Mapping[str, str]] | None = None,
) -> Undo | None:
    """The automatic rollback of a failed run; None when its failure is not one a rollback answers (an interrupt,
    bad input) or the run replaced nothing of the app or a Lambda. A step failure of any kind counts: one of
    :data:`TRIGGERS` says the release is bad, and another one, beside a rollout or an alias's move (deploy.auto runs
    them side by side), leaves what they made live never smoke-tested, nor recorded live.
    ``before``: component → SHA live before the run (the live record): the app goes back to the release it names, the
    last that passed, when the service ran another before the run (or the Fargate stack's update rolled it out).
    ``entries``: the live record's entries (what each deploy left: a function's alias on its version).

    What an earlier run left in place, never verified (it failed after moving it, kept with --no-rollback, or was
    interrupted), and this run found there (its move-alias, its roll-service skipped: nothing to put back of its
    own) goes back all the same, to what the live record verified: this run was to verify it, and it failed."""
    error = report.error
    # a step that refused after others changed what runs (a smoke with no check to run, a plugin's review of a later
    # stack) fails the run as one that failed (exit 1): what changed beside it was not verified either
    refused_late = isinstance(error, UsageError) and not isinstance(error, Superseded) and report.changed_live
    if not (isinstance(error, StepFailed) or refused_late) or failed_step(report) is None:
        return None
    outputs = report.outputs()
    steps: list[Step] = []
    notes: list[str] = []
    replaced: list[tuple[str, str]] = []  # (what, what it was): the title names the first, the report both
    deploys: list[tuple[str, str]] = []
    for fn in sorted(k.removesuffix(".alias") for k in outputs if k.endswith(".alias")):
        version = outputs.get(f"{fn}.previous_version")
        verified = (entries or {}).get(f"lambda:{fn}", {}).get("version")
        if version is None and verified and verified != outputs.get(f"{fn}.version"):
            version = verified  # found in place: an earlier run's, never verified
            notes.append(
                f"{fn}'s alias served version {outputs.get(f'{fn}.version')} before this run, which no deploy "
                f"verified (an earlier run moved it and failed, or was interrupted): version {verified}, the last "
                "that passed, goes back"
            )
        if version is None:
            continue
        function_name, alias = outputs[f"{fn}.function_name"], outputs[f"{fn}.alias"]
        description = lambda_client.get_function_configuration(FunctionName=function_name, Qualifier=version)
        # a version CloudFormation published names no commit: the live record's, what the last deploy that passed
        # verified (the run deployed it from there), so that the rollback's record says what serves again
        sha = lambda_chain.git_sha_of(description.get("Description")) or (before or {}).get(f"lambda:{fn}") or ""
        steps.append(PointAlias(fn, function_name, alias, version, sha or "unknown"))
        replaced.append((f"lambda:{fn}", f"was version {version}"))
        if sha:
            deploys.append((f"lambda:{fn}", sha))
    for fn in sorted(k.removesuffix(".latest_updated") for k in outputs if k.endswith(".latest_updated")):
        # the run failed before its alias moved: $LATEST holds its untried code (a canary that took itself back put
        # it back already)
        if f"{fn}.alias" not in outputs and outputs.get(FAILED_FUNCTION) != fn:
            steps.append(LatestBack(fn, outputs[f"{fn}.latest_updated"], lambda_chain.ALIAS))
            replaced.append((f"lambda:{fn}", f"$LATEST on the code {lambda_chain.ALIAS} serves"))
    previous = split_image(outputs.get("previous_image", ""))
    if previous is None and (previous := _replaced_by_the_stack(env, report, before or {})) is not None:
        stack = planner.stack_roles(env)[planner.HOSTED_BY["app"]]
        notes.append(
            f"{stack}'s update rolled the new image out: the image goes back on a fresh revision, the stack's own "
            f"changes stay (inv rollback --env {env.name} --component stack:{planner.HOSTED_BY['app']} for those)"
        )
    # after the stack's: a stack's update that rolled the image out leaves roll-service nothing to do either
    if previous is None and (previous := _found_rolled_out(report, before or {})) is not None:
        notes.append(
            f"{env.service} ran {dict(report.plan.deploys).get('app')} before this run, which no deploy verified (an "
            f"earlier run rolled it out and failed, or was interrupted): {previous[1]}, the last that passed, goes back"
        )
    # ECS is deleting the service (the wait found it so, or roll-service): nothing can be rolled out on it, a
    # rollback's register-taskdef would be refused; the app is left as it is, and no smoke follows (its checks of the
    # app fail on a service being deleted)
    deleting = isinstance(error, ServiceBeingDeleted)
    if previous is not None and deleting:
        notes.append(
            f"ECS is deleting {env.service} or has deleted it: the app is not put back (nothing can be rolled out on "
            "it), and no smoke follows"
        )
        previous = None
    if previous is not None:
        repository, tag = previous
        image = f"{repository}:{tag}"
        verified = (before or {}).get("app")
        # ECS's circuit breaker puts back the last deployment it saw complete: one that never passed (kept with
        # --no-rollback after its smoke failed) is not waited for, the last release that passed goes back (below)
        if isinstance(error, RolledBackByEcs) and not (verified and verified != tag):
            replaced.append(("app", f"was {tag}, which ECS put back"))
            notes.append(
                f"ECS's circuit breaker already rolled {env.service} back to {tag}: not repeated, only waited for"
            )
            steps.append(
                WaitHealthy(env.cluster, env.service, env.container, image, env.wait_timeout, env.poll_seconds)
            )
        else:
            if verified and verified != tag:  # what ran had never passed: the last release that did goes back
                notes.append(
                    f"{env.service} ran {tag} before this run, which no deploy verified (a failed release kept with "
                    f"--no-rollback, or a change by other means): {verified}, the last that passed, goes back"
                )
                tag = verified
            replaced.append(("app", f"was {tag}"))
            # from what ran before the run: the failed revision may carry a template the stack holds (express mode)
            ran = outputs.get("previous_task_definition", "")
            steps += app_plan(env, repository, tag, smoke=False, base=ran).steps
        deploys.append(("app", tag))
    if not replaced:
        return None
    if smoke and not deleting and any(isinstance(s, Smoke) for s in report.plan.steps):
        steps.append(Smoke(refuses_first=False))
    title = "automatic rollback: " + ", ".join(name for name, _ in replaced)
    report_lines = tuple(f"{name} ({was})" for name, was in replaced)
    components = tuple(name for name, _ in replaced)
    return Undo(Plan(env.name, tuple(steps), title, tuple(deploys)), tuple(notes), report_lines, components)
