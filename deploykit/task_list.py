"""``inv tasks``: the tasks of the service's task-definition family in its cluster, as ECS and the ALB see them.

Each task's revision and the image tag our container runs in it, who started it (the service's PRIMARY or an older
deployment, by the deployment's id, or ``inv run`` and the release command by their ``startedBy``), its status and
health, its ALB target's state, since when, and for one that stopped why (the stop reason, the exit codes). The
running tasks first (desired RUNNING: PENDING and RUNNING), then the newest stopped ones (ECS keeps a stopped task
about an hour). What is read, at once: the tasks both ways (each listed, then described: ecs.cluster_tasks), then
the revisions' images and the target groups' health. :func:`rows` decides and reads nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from functools import partial
from typing import Any

from deploykit import ecs
from deploykit.aws import AwsFactory, at_once
from deploykit.config import EnvConfig
from deploykit.errors import UsageError
from deploykit.output import tabulate

STOPPED_SHOWN = 10


@dataclass(frozen=True)
class TaskRow:
    """One task, as the table and ``--json`` show it."""

    id: str
    arn: str
    revision: str
    image_tag: str
    started_by: str  # "PRIMARY deployment", "ACTIVE deployment", "an older deployment", or its startedBy
    status: str  # lastStatus, and "→ STOPPED" when ECS is stopping it
    health: str  # the task's healthStatus (its containers' health checks)
    target: str  # "ip:port state" in the service's target groups, "" when not registered
    since: str  # started (running) or stopped (stopped), ISO 8601 UTC
    detail: str  # why it stopped

    def to_json(self) -> dict[str, str]:
        return asdict(self)


def _iso(value: Any) -> str:
    return value.isoformat(timespec="seconds").replace("+00:00", "Z") if isinstance(value, datetime) else ""


def rows(
    service: Mapping[str, Any],
    tasks: Sequence[Mapping[str, Any]],
    images: Mapping[str, str],
    targets: Mapping[str, str],
    *,
    stopped_shown: int = STOPPED_SHOWN,
) -> list[TaskRow]:
    """The tasks as rows: the running ones (desired RUNNING) by start, newest first, then the ``stopped_shown``
    newest stopped ones. ``images``: revision ARN → our container's image; ``targets``: task ARN → its target."""
    deployments = {str(d.get("id")): str(d.get("status", "")) for d in service.get("deployments") or ()}

    ours = f"service:{service.get('serviceName')}" if service.get("serviceName") else ""

    def who(task: Mapping[str, Any]) -> str:
        by = str(task.get("startedBy") or "")
        if by in deployments:
            return f"{deployments[by]} deployment"
        group = str(task.get("group") or "")
        if ours and group.startswith("service:") and group != ours:  # another service of the same family
            return f"service {group.removeprefix('service:')}"
        if by.startswith("ecs-svc/"):
            return "an older deployment"
        return by or "-"

    def row(task: Mapping[str, Any]) -> TaskRow:
        arn = str(task.get("taskArn", ""))
        revision = str(task.get("taskDefinitionArn", ""))
        last, desired = str(task.get("lastStatus", "")), str(task.get("desiredStatus", ""))
        stopped = last == "STOPPED"
        return TaskRow(
            id=arn.rsplit("/", 1)[-1],
            arn=arn,
            revision=ecs.revision_name(revision),
            image_tag=ecs.image_tag(images.get(revision, "")) or images.get(revision, ""),
            started_by=who(task),
            status=last if desired in ("", last) else f"{last} → {desired}",
            health=str(task.get("healthStatus", "")),
            target=targets.get(arn, ""),
            since=_iso(task.get("stoppedAt") if stopped else task.get("startedAt") or task.get("createdAt")),
            detail=why_stopped(task) if stopped else "",
        )

    def started(task: Mapping[str, Any]) -> float:
        moment = task.get("startedAt") or task.get("createdAt")
        return moment.timestamp() if isinstance(moment, datetime) else 0.0

    def ended(task: Mapping[str, Any]) -> float:
        moment = task.get("stoppedAt")
        return moment.timestamp() if isinstance(moment, datetime) else 0.0

    running = [t for t in tasks if t.get("lastStatus") != "STOPPED"]
    stopped = [t for t in tasks if t.get("lastStatus") == "STOPPED"]
    running.sort(key=started, reverse=True)
    stopped.sort(key=ended, reverse=True)
    return [row(t) for t in running] + [row(t) for t in stopped[:stopped_shown]]


def why_stopped(task: Mapping[str, Any]) -> str:
    """A stopped task's containers' exit codes (and reasons) first, then its stop reason: ``backend exit 3; Essential
    container in task exited``."""
    codes = []
    for container in task.get("containers") or ():
        bits = [f"exit {container['exitCode']}"] if container.get("exitCode") is not None else []
        bits += [str(container["reason"])] if container.get("reason") else []
        if bits:
            codes.append(f"{container.get('name', '?')} {', '.join(bits)}")
    return "; ".join([*codes, str(task.get("stoppedReason") or task.get("stopCode") or "no reason given")])


# -- the reads --------------------------------------------------------------------------------------------------


def _image_or_none(taskdefs: ecs.TaskDefinitions, revision: str, env: EnvConfig) -> str | None:
    """The image of our container in ``revision``; None for a revision without it (one of before the container was
    renamed, a task of it stopped within the hour): its row, not the whole list, goes without an image."""
    try:
        return taskdefs.image(revision, env.container)
    except UsageError:
        return None


def read(aws: AwsFactory, env: EnvConfig, *, stopped_shown: int = STOPPED_SHOWN) -> list[TaskRow]:
    """The service's family's tasks as rows (:func:`rows`)."""
    client = aws.client("ecs")
    service = ecs.describe_service(client, env.cluster, env.service, env)
    family = ecs.family_of(str(service["taskDefinition"]))
    listed = at_once(
        {status: partial(ecs.cluster_tasks, client, env.cluster, status, family) for status in ("RUNNING", "STOPPED")}
    )
    # a task that stopped between the two listings is in both: once, as stopped (a task never runs again)
    tasks = list({str(t.get("taskArn")): t for t in [*listed["RUNNING"], *listed["STOPPED"]]}.values())
    taskdefs = ecs.TaskDefinitions.of(aws)
    revisions = sorted({str(t.get("taskDefinitionArn", "")) for t in tasks if t.get("taskDefinitionArn")})
    groups = {
        str(lb["targetGroupArn"]): lb.get("containerPort")
        for lb in service.get("loadBalancers") or ()
        if lb.get("targetGroupArn")
    }
    reads: dict[str, Callable[[], Any]] = {f"image {r}": partial(_image_or_none, taskdefs, r, env) for r in revisions}
    for group in groups:
        reads[f"group {group}"] = partial(aws.client("elbv2").describe_target_health, TargetGroupArn=group)
    found = at_once(reads, width=8)
    images = {r: str(found[f"image {r}"] or "-") for r in revisions}
    targets: dict[str, str] = {}
    running = [t for t in tasks if t.get("lastStatus") != "STOPPED"]
    for group in groups:
        answer = {group: found[f"group {group}"]}
        for task in running:
            for state in ecs.target_states(answer, groups, [task]):
                targets.setdefault(str(task.get("taskArn")), f"{state.target} {state.state}")
    return rows(service, tasks, images, targets, stopped_shown=stopped_shown)


# -- output -----------------------------------------------------------------------------------------------------


def table(found: Sequence[TaskRow]) -> str:
    lines = [
        [
            r.id[:12],
            r.revision,
            r.image_tag,
            r.started_by,
            r.status,
            r.health,
            r.target,
            r.since,
            r.detail[:70] + ("…" if len(r.detail) > 70 else ""),
        ]
        for r in found
    ]
    return tabulate(
        lines,
        headers=["task", "revision", "image", "started by", "status", "health", "target", "since", "why it stopped"],
    )
