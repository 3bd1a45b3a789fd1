"""``inv taskdefs.cleanup``: deregister the old revisions of the service's task-definition family, never one in use.

Every deploy of the app registers a revision (``register-taskdef``; a release command before a Fargate stack's update
one more; the stack its own): a team deploying many times a day leaves thousands, each an ACTIVE entry of the
console's and ``ListTaskDefinitions``' lists. A revision is kept when any of these holds (every kept one says which):

- it is one of the ``keep`` newest ACTIVE revisions (by revision number);
- the service uses it: its ``taskDefinition``, or the revision of any deployment it lists (PRIMARY, ACTIVE: what the
  circuit breaker rolls back to must stay usable, as ECS cannot update a service to an INACTIVE revision);
- a task of the cluster runs it (RUNNING or PENDING, the service's or a one-off: ``inv run``, a release command);
- the Fargate stack holds it as its ``AWS::ECS::TaskDefinition`` (a stack rollback puts the service back on it);
- the environment's live record names it (the revision the last app deploy left the service on).

Everything else ACTIVE in the family is deregistered: INACTIVE, out of the lists, still described by its ARN (AWS
keeps INACTIVE revisions discoverable); tasks and services on it would keep running. A rollback does not need old
revisions: it registers a fresh one with the old image. Deleting INACTIVE revisions for good (DeleteTaskDefinitions)
is left to the person: nothing is gained but a shorter INACTIVE list. :func:`plan_cleanup` decides and reads nothing;
the readers and :func:`deregister` talk to AWS.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import botocore.exceptions
from botocore.exceptions import ClientError

from deploykit import ecs
from deploykit.aws import AwsFactory, at_once, translate_error
from deploykit.config import Config, EnvConfig, may_be_together
from deploykit.errors import DeployKitError, StepFailed, UsageError
from deploykit.lock import STOPPED, LockLost, lost_lease
from deploykit.output import tabulate
from deploykit.stacks import is_missing_stack, is_transient

DEFAULT_KEEP = 10
TASKDEF_RESOURCE = "AWS::ECS::TaskDefinition"


@dataclass(frozen=True)
class Choice:
    """What happens to one revision, and why."""

    arn: str
    deregister: bool
    reasons: tuple[str, ...]

    @property
    def revision(self) -> int:
        return ecs.revision_number(self.arn)


@dataclass(frozen=True)
class Decision:
    """Every ACTIVE revision of the family, newest first, each kept or deregistered with its reasons."""

    family: str
    choices: tuple[Choice, ...]
    keep: int

    @property
    def to_deregister(self) -> tuple[str, ...]:
        return tuple(c.arn for c in self.choices if c.deregister)

    @property
    def kept(self) -> tuple[Choice, ...]:
        return tuple(c for c in self.choices if not c.deregister)


@dataclass(frozen=True)
class Deregistration:
    done: tuple[str, ...]
    failed: Mapping[str, str]  # ARN → why
    stopped: LockLost | None = None  # the lock was lost: the revisions from the one it was found lost are not done


def plan_cleanup(family: str, active: Iterable[str], *, keep: int, needed: Mapping[str, Sequence[str]]) -> Decision:
    """Decide which ACTIVE revisions of ``family`` to deregister. ``needed``: revision ARN (or ``family:revision``)
    → why it must stay (in use, held by the stack, recorded)."""
    if keep < 1:
        raise ValueError("keep must be at least 1")
    why_by_name = {ecs.revision_name(arn): list(reasons) for arn, reasons in needed.items()}
    ordered = sorted(set(active), key=ecs.revision_number, reverse=True)
    choices = []
    for index, arn in enumerate(ordered):
        reasons = [f"newest {keep}"] if index < keep else []
        reasons += why_by_name.get(ecs.revision_name(arn), [])
        if reasons:
            choices.append(Choice(arn, False, tuple(reasons)))
        else:
            choices.append(Choice(arn, True, (f"older than the newest {keep}, not in use, not held, not recorded",)))
    return Decision(family, tuple(choices), keep)


# -- the readers ------------------------------------------------------------------------------------------------


def needed_revisions(aws: AwsFactory, service: Mapping[str, Any], live_taskdef: str | None) -> dict[str, list[str]]:
    """Revision ARN → why it must stay: the service's, its deployments', those its cluster's tasks run, the Fargate
    stack's and the live record's (the tasks and the stack read at once). A read that fails raises: without it,
    nothing is known to be safe."""
    env = aws.env
    needed: dict[str, list[str]] = {}

    def add(arn: str, why: str) -> None:
        if arn and why not in needed.setdefault(arn, []):
            needed[arn].append(why)

    for deployment in service.get("deployments") or ():
        add(str(deployment.get("taskDefinition") or ""), f"the service's {deployment.get('status', '')} deployment")
    add(str(service.get("taskDefinition") or ""), "the service runs it")
    if live_taskdef:
        add(live_taskdef, "the live record's (the last app deploy left the service on it)")
    reads: dict[str, Callable[[], Any]] = {
        "tasks": partial(cluster_task_revisions, aws.client("ecs"), env.cluster),
        "stack": partial(stack_revisions, aws, env.stacks.fargate),
    }
    found = at_once(reads)
    for arn, count in found["tasks"].items():
        add(arn, f"{count} task(s) run it")
    for arn in found["stack"]:
        add(arn, f"held by {env.stacks.fargate}")
    return needed


@dataclass(frozen=True)
class Others:
    """What the other environments of deploy.toml whose services run revisions of the family need."""

    needed: dict[str, list[str]]  # revision ARN → why (its environment named)
    skipped: dict[str, str]  # environment → why its AWS could not be read


def others_needing(
    config: Config, target_aws: AwsFactory, family: str, aws_factory: Callable[[EnvConfig], AwsFactory]
) -> Others:
    """The revisions of ``family`` other environments need (:func:`needed_revisions`, theirs): those in the target's
    account and region (:func:`~deploykit.config.may_be_together`, then their credentials' account) whose service
    runs a revision of it. The CDK names a family after its service, so two environments in one account whose
    services have one name, in two clusters, register one family. One whose AWS cannot be read is ``skipped``
    (another account's credentials); one AWS only failed for now (throttled, a 5xx), or one seen in the target's
    account whose service runs the family and whose other reads fail (its tasks, its stack refused): StepFailed,
    nothing deregistered. One whose service is not there needs nothing."""
    target = target_aws.env
    needed: dict[str, list[str]] = {}
    skipped: dict[str, str] = {}
    for name in sorted(config.environments):
        env = config.environments[name]
        if name == target.name or not may_be_together(target, env):
            continue
        try:
            for arn, reasons in _needed_by(aws_factory(env), target_aws, family).items():
                needed.setdefault(arn, []).extend(f"{name}: {why}" for why in reasons)
        except _Unreadable:
            raise
        except (botocore.exceptions.BotoCoreError, ClientError, DeployKitError) as exc:
            said = translate_error(exc, env).message
            if is_transient(exc):
                raise StepFailed(
                    f"what {name}, in the same account and region as {target.name}, needs of {family} could not be "
                    f"read ({said}): nothing was deregistered",
                    next_step=f"rerun in a while: inv taskdefs.cleanup --env {target.name}",
                ) from None
            skipped[name] = said
    return Others(needed, skipped)


class _Unreadable(StepFailed):
    """What an environment whose service runs the family needs could not be read: the cleanup stops."""


def _needed_by(aws: AwsFactory, target_aws: AwsFactory, family: str) -> dict[str, list[str]]:
    """What the environment of ``aws`` needs of ``family`` (:func:`needed_revisions`): nothing when it is in another
    account than the target's, or its service is not there or runs another family."""
    env = aws.env
    if aws.account() != target_aws.account():
        return {}
    try:
        service = ecs.describe_service(aws.client("ecs"), env.cluster, env.service, env)
    except UsageError:  # no such cluster or service (or one ECS deleted): nothing of it runs
        return {}
    if ecs.family_of(str(service.get("taskDefinition") or "")) != family:
        return {}
    try:  # its service runs this family: what else it needs must be known, or nothing may go
        return needed_revisions(aws, service, None)
    except (botocore.exceptions.BotoCoreError, ClientError, DeployKitError) as exc:
        if is_transient(exc):
            raise  # others_needing says it: rerun in a while
        said = translate_error(exc, env)
        rerun = f"inv taskdefs.cleanup --env {target_aws.env.name}"
        raise _Unreadable(
            f"what {env.name}, whose service runs {family} in the same account and region as {target_aws.env.name}, "
            f"needs of it could not be read ({said.message}): nothing was deregistered",
            next_step=f"{said.next_step}; then rerun: {rerun}"
            if said.next_step
            else f"let these credentials read {env.name}'s tasks and Fargate stack, then rerun: {rerun}",
        ) from None


def cluster_task_revisions(client: Any, cluster: str) -> dict[str, int]:
    """Task-definition ARN → how many of the cluster's tasks (RUNNING and PENDING: desired RUNNING) run it."""
    counts: dict[str, int] = {}
    for task in ecs.cluster_tasks(client, cluster, "RUNNING"):
        arn = str(task.get("taskDefinitionArn") or "")
        counts[arn] = counts.get(arn, 0) + 1
    return counts


def stack_revisions(aws: AwsFactory, stack: str) -> list[str]:
    """The task definitions the stack holds as resources (none when it does not exist)."""
    held: list[str] = []
    paginator = aws.client("cloudformation").get_paginator("list_stack_resources")
    try:
        for page in paginator.paginate(StackName=stack):
            for resource in page.get("StackResourceSummaries") or ():
                if resource.get("ResourceType") == TASKDEF_RESOURCE and resource.get("PhysicalResourceId"):
                    held.append(str(resource["PhysicalResourceId"]))
    except ClientError as exc:
        if is_missing_stack(exc):
            return []
        raise
    return held


def kept_images(aws: AwsFactory, decision: Decision, container: str) -> dict[str, str]:
    """ARN → the image ``container`` runs in each kept revision, for the table: "" in a revision that has no such
    container (registered before it was renamed): an older revision is no error of deploy.toml's."""
    taskdefs = ecs.TaskDefinitions.of(aws)

    def image(arn: str) -> str:
        try:
            return taskdefs.image(arn, container)
        except UsageError:  # no such container in it
            return ""

    return at_once({c.arn: partial(image, c.arn) for c in decision.kept}, width=8)


def deregister(client: Any, arns: Sequence[str], holding: Callable[[], None] | None = None) -> Deregistration:
    """DeregisterTaskDefinition, one revision per call (there is no batch); each failure kept, the rest go on.
    ``holding`` (the lease's check) is asked before each: once the lock is lost, the rest is not done
    (``stopped``)."""
    done: list[str] = []
    failed: dict[str, str] = {}
    for index, arn in enumerate(arns):
        if (stopped := lost_lease(holding)) is not None:
            failed.update(dict.fromkeys(arns[index:], STOPPED))
            return Deregistration(tuple(done), failed, stopped)
        try:
            client.deregister_task_definition(taskDefinition=arn)
        except ClientError as exc:
            error = exc.response.get("Error", {})
            failed[arn] = f"{error.get('Code', 'Error')}: {error.get('Message', '')}"
        except botocore.exceptions.BotoCoreError as exc:  # no answer (a timeout, the connection lost): the next goes on
            failed[arn] = f"{type(exc).__name__}: {exc}"
        else:
            done.append(arn)
    return Deregistration(tuple(done), failed)


# -- output -----------------------------------------------------------------------------------------------------


def spans(numbers: Iterable[int]) -> str:
    """Revision numbers as runs: ``1-12, 14, 16-40``."""
    parts: list[str] = []
    ordered = sorted(set(numbers))
    start = previous = None
    for n in [*ordered, None]:
        if start is not None and (n is None or previous is None or n != previous + 1):
            parts.append(str(start) if start == previous else f"{start}-{previous}")
            start = None
        if n is not None and start is None:
            start = n
        previous = n
    return ", ".join(parts)


def action_of(choice: Choice, *, dry_run: bool, done: Deregistration | None) -> str:
    if not choice.deregister:
        return "keep"
    if dry_run or done is None:
        return "would deregister"
    return "deregistered" if choice.arn in done.done else "FAILED"


def table(decision: Decision, images: Mapping[str, str]) -> str:
    """The kept revisions, newest first, with the image tag each runs (``images``: ARN → tag) and why."""
    rows = [[ecs.revision_name(c.arn), images.get(c.arn, ""), "keep", "; ".join(c.reasons)] for c in decision.kept]
    return tabulate(rows, headers=["revision", "image", "action", "why"])


def summary(decision: Decision, *, dry_run: bool, done: Deregistration | None) -> str:
    total, going = len(decision.choices), decision.to_deregister
    if not total:
        return f"no ACTIVE revision of {decision.family}: nothing to deregister"
    if not going:
        return f"nothing to deregister: all {total} ACTIVE revision(s) of {decision.family} are kept"
    which = spans(ecs.revision_number(arn) for arn in going)
    if dry_run or done is None:
        return (
            f"dry run: would deregister {len(going)} of {total} ACTIVE revision(s) of {decision.family} ({which}); "
            "nothing was changed"
        )
    line = f"deregistered {len(done.done)} of {total} ACTIVE revision(s) of {decision.family}"
    line += f" ({spans(ecs.revision_number(arn) for arn in done.done)})" if done.done else ""
    if done.failed:
        line += f"; {len(done.failed)} could not be"
    return line


def to_json(
    decision: Decision, *, env: str, dry_run: bool, done: Deregistration | None, images: Mapping[str, str]
) -> dict[str, Any]:
    return {
        "env": env,
        "family": decision.family,
        "keep": decision.keep,
        "dry_run": dry_run,
        "revisions": [
            {
                "arn": c.arn,
                "revision": c.revision,
                "image_tag": images.get(c.arn, ""),
                "action": action_of(c, dry_run=dry_run, done=done),
                "why": list(c.reasons),
            }
            for c in decision.choices
        ],
        "to_deregister": len(decision.to_deregister),
        "deregistered": len(done.done) if done else 0,
        "failures": dict(done.failed) if done else {},
    }
