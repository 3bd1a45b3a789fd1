"""The state of one environment at a glance (``inv health``): what is live, what is broken, what to tune.

:func:`gather` reads the five stacks, the ECS service (deployments, events, rollout settings, live image),
the ALB target groups (target health, health-check settings), the API Gateway stage and the ``live`` alias
of each Lambda into a :class:`HealthReport`: one table of rows, findings (each with the command to run
next) and recommendations for rollout settings that cost time or safety on every deploy. A part that does
not exist is a row with status ``missing`` and a finding, never an exception; other AWS errors propagate
(the caller translates them). The judging is done by small functions on plain dicts as boto3 returns them,
so it is tested without AWS. :func:`render` makes the text for people, :meth:`HealthReport.to_json` the
data for machines.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from functools import partial
from typing import TYPE_CHECKING, Any, Literal

from botocore.exceptions import BotoCoreError, ClientError

from deploykit import lambda_chain, packaging, references
from deploykit.aws import DENIED, at_once
from deploykit.ecs import (
    TaskDefinitions,
    being_deleted,
    cpu_architecture,
    describe_service,
    image_tag,
    is_older,
    primary_deployment,
    rolling,
)
from deploykit.errors import NoCluster, UsageError
from deploykit.git import SHORT_SHA
from deploykit.output import tabulate
from deploykit.scan_gate import JUDGED, Scan, judge, read_scan
from deploykit.stacks import StackOutputs, deployed_template, error_code, held_task_definition
from deploykit.watch import (
    METRICS_LATE,
    SET_THE_CLOCK,
    alarm_period,
    clock_offset,
    listed,
    named,
    not_there,
    read_alarms,
    skew_said,
    skew_to_say,
    state_changed,
    times_in_alarm,
)

if TYPE_CHECKING:
    from deploykit.aws import AwsFactory
    from deploykit.clock import Clock
    from deploykit.config import EnvConfig
    from deploykit.endpoints import Endpoints
    from deploykit.history import Record
    from deploykit.lock import Found

Severity = Literal["broken", "warning"]

MISSING = "missing"
LIVE_ALIAS = "live"
EVENTS_SHOWN = 3  # newest service events in the table
DETAIL_WIDTH = 100  # the detail column wraps beyond this
FARGATE_STACK_FILE = "cdk/stacks/fargate_stack.py"
DEREGISTRATION_DELAY_KEY = "deregistration_delay.timeout_seconds"

# Rollout settings beyond these cost time (or safety) on every deploy; the AWS defaults are all beyond them.
MAX_DEREGISTRATION_DELAY = 30  # seconds (AWS default 300)
MIN_DEREGISTRATION_DELAY = 5  # the low end of the suggestion
MAX_HEALTH_CHECK_INTERVAL = 10  # seconds (AWS default 30)
MIN_HEALTH_CHECK_INTERVAL = 5  # the smallest the ALB accepts
MAX_HEALTHY_THRESHOLD = 3  # (AWS default 5)
SUGGESTED_HEALTHY_THRESHOLD = 2  # the smallest the ALB accepts
MAX_UNHEALTHY_THRESHOLD = 3
SUGGESTED_UNHEALTHY_THRESHOLD = 2
MIN_MINIMUM_HEALTHY_PERCENT = 100
MIN_MAXIMUM_PERCENT = 200
MAX_GRACE_PERIOD = 60  # seconds

# Image tags are git SHAs: <sha12>, or <sha12>-dirty-<hash of the uncommitted diff>.
SHA_TAG = re.compile(rf"^(?P<sha>[0-9a-f]{{{SHORT_SHA}}})(?:-dirty-(?P<dirty>[0-9a-f]+))?$")
STABLE_STACK_STATUSES = frozenset({"CREATE_COMPLETE", "UPDATE_COMPLETE", "IMPORT_COMPLETE"})


@dataclass(frozen=True)
class Row:
    """One line of the environment's table."""

    part: str
    name: str
    status: str
    detail: str = ""


@dataclass(frozen=True)
class Finding:
    """Something broken or needing attention, with the command to run next."""

    severity: Severity
    what: str
    next_step: str
    # what it comes from, when something else may explain it: NO_TASKS (a paused service wants none)
    cause: str = field(default="", compare=False)

    def to_json(self) -> dict[str, str]:
        return {"severity": self.severity, "what": self.what, "next_step": self.next_step}


NO_TASKS = "no tasks"


@dataclass(frozen=True)
class Recommendation:
    """A live rollout setting that is not tuned for fast, safe deploys, and where to change it."""

    setting: str
    current: str
    suggested: str
    why: str
    where: str


@dataclass
class HealthReport:
    """Everything :func:`gather` found about one environment."""

    env: str
    rows: list[Row] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    recommendations: list[Recommendation] = field(default_factory=list)
    live_image: str | None = None
    live_sha: str | None = None
    desired: int | None = None  # the service's desired count; None: no service read
    # function (its folder name) → (its Lambda function name, the versions its live alias routes a share to beside
    # its own): a canary running, or one cut short
    shifting: dict[str, tuple[str, dict[str, float]]] = field(default_factory=dict)
    # function (its folder name) → (the runtime its live version runs, the stack holding it): for runtime_findings
    runtimes: dict[str, tuple[str, str]] = field(default_factory=dict)

    @property
    def broken(self) -> bool:
        """Whether any finding is broken (``inv health`` exits 1 then)."""
        return any(f.severity == "broken" for f in self.findings)

    def to_json(self) -> dict[str, Any]:
        return {
            "env": self.env,
            "broken": self.broken,
            "live_image": self.live_image,
            "live_sha": self.live_sha,
            "rows": [asdict(r) for r in self.rows],
            "findings": [f.to_json() for f in self.findings],
            "recommendations": [asdict(r) for r in self.recommendations],
        }


# -- pure logic: stacks ------------------------------------------------------------------------------


def stack_row(name: str, stack: Mapping[str, Any] | None) -> Row:
    """The table row of one stack (``None``: it does not exist)."""
    if stack is None or stack.get("StackStatus") == "DELETE_COMPLETE":
        return Row("stack", name, MISSING, "not deployed")
    updated = stack.get("LastUpdatedTime") or stack.get("CreationTime")
    detail = f"updated {when(updated)}" if updated else ""
    if stack.get("StackStatusReason"):
        detail += f" ({stack['StackStatusReason']})" if detail else str(stack["StackStatusReason"])
    return Row("stack", name, str(stack.get("StackStatus", "?")), detail)


def stack_finding(name: str, status: str | None, env_name: str) -> Finding | None:
    """What a stack status means for the environment, or None when the stack is fine."""
    deploy = f"inv deploy.stack {name} --env {env_name}"
    events = f"aws cloudformation describe-stack-events --stack-name {name}"
    if status is None or status == "DELETE_COMPLETE":
        return Finding("broken", f"stack {name} is not deployed", deploy)
    if status in STABLE_STACK_STATUSES:
        return None
    if status == "REVIEW_IN_PROGRESS":
        return Finding("broken", f"stack {name} is only a change set that was never executed ({status})", deploy)
    if status.endswith("_IN_PROGRESS"):
        return Finding(
            "warning",
            f"stack {name} is busy ({status})",
            f"wait for it to finish (follow it: {events}), then inv health --env {env_name}",
        )
    if status in ("UPDATE_ROLLBACK_COMPLETE", "IMPORT_ROLLBACK_COMPLETE"):
        return Finding(
            "warning",
            f"stack {name}: last update rolled back ({status}); the previous version is serving",
            f"see why: {events}; fix it, then {deploy}",
        )
    if status == "UPDATE_ROLLBACK_FAILED":
        return Finding(
            "broken",
            f"stack {name} is {status}: an update failed and so did its rollback; CloudFormation cannot update it",
            f"{deploy} (deploykit continues the rollback first, then deploys)",
        )
    if status in ("ROLLBACK_COMPLETE", "ROLLBACK_FAILED"):
        return Finding(
            "broken",
            f"stack {name} is {status}: its first create failed; nothing of it is in use",
            f"{deploy} (deploykit deletes it and creates it again)",
        )
    if status == "DELETE_FAILED":
        return Finding(
            "broken",
            f"stack {name} is {status}: a delete failed and left it half deleted",
            f"fix what blocked the delete ({events}), then inv destroy --env {env_name} and {deploy}",
        )
    if status.endswith("_FAILED"):
        return Finding("broken", f"stack {name} is {status}", f"see why: {events}; then {deploy}")
    return None


# -- pure logic: the ECS service ---------------------------------------------------------------------


def revision(task_definition_arn: str) -> str:
    """``family:revision`` of a task-definition ARN."""
    return task_definition_arn.rsplit("/", 1)[-1]


def sha_of_tag(tag: str | None) -> str | None:
    """The 12-hex git SHA an image tag names (also of a ``<sha12>-dirty-<hash>`` tag); None otherwise."""
    match = SHA_TAG.match(tag or "")
    return match.group("sha") if match else None


def service_rows(service: Mapping[str, Any], cluster: str, images: Mapping[str, str]) -> list[Row]:
    """Rows of the service: itself, each deployment, its rollout settings and its newest events."""
    running, desired, pending = _counts(service)
    rows = [
        Row(
            "service",
            f"{cluster}/{service.get('serviceName', '?')}",
            str(service.get("status", "?")),
            f"running {running}/{desired}, pending {pending}",
        )
    ]
    for d in service.get("deployments") or []:
        arn = str(d.get("taskDefinition", ""))
        tag = image_tag(images.get(arn, ""))
        r, want, p = _counts(d)
        detail = f"{revision(arn)}" + (f" ({tag})" if tag else "") + f", running {r}/{want}, pending {p}"
        if d.get("failedTasks"):
            detail += f", failed {d['failedTasks']}"
        if d.get("rolloutState") == "FAILED" and d.get("rolloutStateReason"):
            detail += f": {d['rolloutStateReason']}"
        rows.append(Row("deployment", str(d.get("status", "?")), str(d.get("rolloutState") or "-"), detail))
    tuned = "tuned" if not service_recommendations(service) else "untuned"
    rows.append(
        Row(
            "rollout settings",
            str(service.get("serviceName", "?")),
            tuned if "deploymentConfiguration" in service else "unknown",
            rollout_settings_text(service),
        )
    )
    for event in newest_events(service):
        rows.append(Row("event", when(event.get("createdAt")), "", str(event.get("message", ""))))
    return rows


def rollout_settings_text(service: Mapping[str, Any]) -> str:
    """The service's deployment configuration in one line."""
    config = service.get("deploymentConfiguration")
    if not isinstance(config, Mapping):
        return "deploymentConfiguration not reported"
    parts = [
        f"min healthy {config.get('minimumHealthyPercent', '?')} %",
        f"max {config.get('maximumPercent', '?')} %",
    ]
    breaker = config.get("deploymentCircuitBreaker")
    if isinstance(breaker, Mapping):
        if breaker.get("enable"):
            parts.append("circuit breaker on" + (" with rollback" if breaker.get("rollback") else ", no rollback"))
        else:
            parts.append("circuit breaker off")
    if service.get("healthCheckGracePeriodSeconds") is not None:
        parts.append(f"grace period {service['healthCheckGracePeriodSeconds']} s")
    return ", ".join(parts)


def newest_events(service: Mapping[str, Any], limit: int = EVENTS_SHOWN) -> list[Mapping[str, Any]]:
    """The service's ``limit`` newest events, newest first."""
    events = list(service.get("events") or [])
    stamped = [e for e in events if isinstance(e.get("createdAt"), datetime)]
    if len(stamped) == len(events):
        events = sorted(stamped, key=lambda e: e["createdAt"], reverse=True)
    return events[:limit]


def service_findings(service: Mapping[str, Any], cluster: str, env_name: str) -> list[Finding]:
    """What is wrong with a service that exists and is not being deleted (:func:`deleting_finding` says that one):
    missing tasks, failed or unfinished rollouts."""
    name = str(service.get("serviceName", "?"))
    describe = f"aws ecs describe-services --cluster {cluster} --services {name}"
    stopped = f"aws ecs list-tasks --cluster {cluster} --service-name {name} --desired-status STOPPED"
    findings: list[Finding] = []
    running, desired, pending = _counts(service)
    if desired == 0:
        findings.append(
            Finding(
                "warning", f"service {name} wants 0 tasks: nothing serves the ALB", f"look at it: {describe}", NO_TASKS
            )
        )
    deployments = list(service.get("deployments") or [])
    if desired and running < desired:
        waiting = f"{pending} pending tasks" if pending else "no pending tasks"
        busy = rolling(dict(service))  # restart refuses a service still rolling out (it would fight it)
        restart = f"fresh tasks of the same release: inv restart --env {env_name}"
        fresh = f"; once it stops rolling out ({busy}), {restart}" if busy else f"; {restart}"
        findings.append(
            Finding(
                "broken" if running == 0 else "warning",
                f"service {name} runs {running} of {desired} desired tasks ({waiting})",
                f"why tasks stopped: inv tasks --env {env_name}; what they wrote: inv logs --env {env_name} "
                f"--since 15m{fresh}; the release before: inv rollback --env {env_name} (the service events are "
                f"above; or: {describe}; {stopped})",
            )
        )
    for d in deployments:
        if d.get("rolloutState") == "FAILED":
            reason = d.get("rolloutStateReason") or "no reason given"
            findings.append(
                Finding(
                    "broken",
                    f"deployment of {revision(str(d.get('taskDefinition', '?')))} ({d.get('status')}) FAILED: {reason}",
                    f"why its tasks stopped: inv tasks --env {env_name}; fix the cause and redeploy: inv deploy.app "
                    f"--env {env_name}, or put the release before back: inv rollback --env {env_name}",
                )
            )
    if len(deployments) > 1:
        labels = ", ".join(f"{d.get('status')} {revision(str(d.get('taskDefinition', '?')))}" for d in deployments)
        findings.append(
            Finding(
                "warning",
                f"a rollout is in progress: {len(deployments)} deployments ({labels})",
                f"wait for it to finish, then inv health --env {env_name}; follow it: {describe}",
            )
        )
    return findings


def deleting_finding(env: EnvConfig) -> Finding:
    """The service is being deleted (DRAINING: ECS stops its tasks, then lists it INACTIVE): nothing can be rolled
    out on it, nor restarted or rolled back, so its tasks and rollouts are not judged; the next step is
    :func:`being_deleted`'s, as every command that reads it says it (the Fargate stack, once ECS has finished)."""
    return Finding(
        "broken",
        f"service {env.service} is being deleted (DRAINING): nothing can be rolled out on it",
        being_deleted(env.service, env.cluster, env, "DRAINING").next_step or "",
    )


def service_recommendations(service: Mapping[str, Any]) -> list[Recommendation]:
    """Rollout settings of the service that slow deploys down or make them unsafe.

    A setting the answer does not carry (moto drops deploymentConfiguration) is not judged.
    """
    recs: list[Recommendation] = []
    config = service.get("deploymentConfiguration")
    config = config if isinstance(config, Mapping) else {}
    minimum = _int(config.get("minimumHealthyPercent"))
    if minimum is not None and minimum < MIN_MINIMUM_HEALTHY_PERCENT:
        recs.append(
            Recommendation(
                "minimum healthy percent",
                f"{minimum} %",
                f"{MIN_MINIMUM_HEALTHY_PERCENT} %",
                "below 100 % ECS stops old tasks before their replacements are healthy, so capacity drops during "
                "every deploy (with a single task: downtime)",
                f"{FARGATE_STACK_FILE}: MIN_HEALTHY_PERCENT",
            )
        )
    maximum = _int(config.get("maximumPercent"))
    if maximum is not None and maximum < MIN_MAXIMUM_PERCENT:
        recs.append(
            Recommendation(
                "maximum percent",
                f"{maximum} %",
                f"{MIN_MAXIMUM_PERCENT} %",
                f"at {maximum} % a rolling deploy cannot start all new tasks at once, so it replaces them in several "
                "rounds, each costing a start, a health check and a drain",
                f"{FARGATE_STACK_FILE}: MAX_HEALTHY_PERCENT",
            )
        )
    breaker = config.get("deploymentCircuitBreaker")
    where = (
        f"{FARGATE_STACK_FILE}: circuit_breaker=ecs.DeploymentCircuitBreaker(enable=True, rollback=True) of the service"
    )
    if isinstance(breaker, Mapping) and not breaker.get("enable"):
        recs.append(
            Recommendation(
                "deployment circuit breaker",
                "disabled",
                "enabled, with rollback",
                "without it a release whose tasks never become healthy keeps starting failing tasks forever "
                "instead of failing the deploy and going back to the last working revision",
                where,
            )
        )
    elif isinstance(breaker, Mapping) and not breaker.get("rollback"):
        recs.append(
            Recommendation(
                "deployment circuit breaker",
                "enabled, no rollback",
                "enabled, with rollback",
                "a failed deploy leaves the broken revision in place; with rollback ECS returns to the last working "
                "revision by itself",
                where,
            )
        )
    grace = _int(service.get("healthCheckGracePeriodSeconds"))
    if grace is not None and grace > MAX_GRACE_PERIOD:
        recs.append(
            Recommendation(
                "health-check grace period",
                f"{grace} s",
                f"10–{MAX_GRACE_PERIOD} s",
                f"ECS ignores failing health checks of a new task for {grace} s, so a task that never becomes "
                f"healthy holds the deploy (and the circuit breaker) that long",
                f"{FARGATE_STACK_FILE}: HEALTH_CHECK_GRACE_PERIOD",
            )
        )
    return recs


# -- pure logic: target groups ------------------------------------------------------------------------


def target_counts(descriptions: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    """DescribeTargetHealth's descriptions counted by state (healthy, unhealthy, draining, initial...)."""
    counts: dict[str, int] = {}
    for d in descriptions:
        state = str((d.get("TargetHealth") or {}).get("State", "unknown"))
        counts[state] = counts.get(state, 0) + 1
    return counts


def target_reasons(descriptions: Iterable[Mapping[str, Any]]) -> list[str]:
    """``ip:port state: reason`` of each target that is not healthy."""
    reasons = []
    for d in descriptions:
        health = d.get("TargetHealth") or {}
        if health.get("State") == "healthy":
            continue
        target = d.get("Target") or {}
        why = health.get("Description") or health.get("Reason") or ""
        reasons.append(
            f"{target.get('Id', '?')}:{target.get('Port', '?')} {health.get('State')}" + (f": {why}" if why else "")
        )
    return reasons


def targets_row(name: str, descriptions: list[Mapping[str, Any]]) -> Row:
    counts = target_counts(descriptions)
    total = sum(counts.values())
    detail = ", ".join(f"{state} {n}" for state, n in sorted(counts.items())) or "no targets registered"
    reasons = target_reasons(descriptions)
    if reasons:
        detail += "; " + "; ".join(reasons)
    return Row("targets", name, f"{counts.get('healthy', 0)}/{total} healthy", detail)


def target_findings(name: str, arn: str, descriptions: list[Mapping[str, Any]], env_name: str) -> list[Finding]:
    """No healthy target is broken; some unhealthy ones are a warning."""
    counts = target_counts(descriptions)
    next_step = (
        "look at /health of the tasks and the service events above; "
        f"details: aws elbv2 describe-target-health --target-group-arn {arn}"
    )
    reasons = "; ".join(target_reasons(descriptions))
    if not descriptions:
        return [
            Finding(
                "broken", f"target group {name} has no registered targets: the ALB serves nothing", next_step, NO_TASKS
            )
        ]
    if not counts.get("healthy"):
        return [Finding("broken", f"no healthy target in target group {name} ({reasons})", next_step)]
    if counts.get("unhealthy"):
        return [
            Finding(
                "warning",
                f"{counts['unhealthy']} of {sum(counts.values())} targets in target group {name} are unhealthy "
                f"({reasons})",
                next_step,
            )
        ]
    return []


def attributes_of(raw: Iterable[Mapping[str, Any]]) -> dict[str, str]:
    """DescribeTargetGroupAttributes' ``Attributes`` list as a dict."""
    return {str(a.get("Key")): str(a.get("Value")) for a in raw}


def health_check_text(target_group: Mapping[str, Any], attributes: Mapping[str, str]) -> str:
    return (
        f"interval {target_group.get('HealthCheckIntervalSeconds', '?')} s, "
        f"timeout {target_group.get('HealthCheckTimeoutSeconds', '?')} s, "
        f"healthy threshold {target_group.get('HealthyThresholdCount', '?')}, "
        f"unhealthy threshold {target_group.get('UnhealthyThresholdCount', '?')}, "
        f"deregistration delay {attributes.get(DEREGISTRATION_DELAY_KEY, '?')} s"
    )


def target_group_recommendations(
    target_group: Mapping[str, Any], attributes: Mapping[str, str]
) -> list[Recommendation]:
    """Health-check and draining settings of a target group that slow every deploy down."""
    recs: list[Recommendation] = []
    delay = _int(attributes.get(DEREGISTRATION_DELAY_KEY))
    if delay is not None and delay > MAX_DEREGISTRATION_DELAY:
        recs.append(
            Recommendation(
                "deregistration delay",
                f"{delay} s",
                f"{MIN_DEREGISTRATION_DELAY}–{MAX_DEREGISTRATION_DELAY} s",
                f"every deploy waits up to {delay} s while the ALB drains each old task before ECS stops it "
                "(AWS default 300 s); the API's requests finish in seconds",
                f"{FARGATE_STACK_FILE}: DEREGISTRATION_DELAY",
            )
        )
    interval = _int(target_group.get("HealthCheckIntervalSeconds"))
    healthy = _int(target_group.get("HealthyThresholdCount"))
    unhealthy = _int(target_group.get("UnhealthyThresholdCount"))
    if interval is not None and interval > MAX_HEALTH_CHECK_INTERVAL:
        recs.append(
            Recommendation(
                "health-check interval",
                f"{interval} s",
                f"{MIN_HEALTH_CHECK_INTERVAL}–{MAX_HEALTH_CHECK_INTERVAL} s",
                f"a new target that is not ready at its first check waits a whole interval for the next: up to "
                f"{interval} s more per deploy (up to {MIN_HEALTH_CHECK_INTERVAL} s at {MIN_HEALTH_CHECK_INTERVAL} s), "
                f"and a target back from unhealthy needs threshold × interval",
                f"{FARGATE_STACK_FILE}: HEALTH_CHECK_INTERVAL (keep HEALTH_CHECK_TIMEOUT below it)",
            )
        )
    period = interval or MIN_HEALTH_CHECK_INTERVAL
    if healthy is not None and healthy > MAX_HEALTHY_THRESHOLD:
        recs.append(
            Recommendation(
                "healthy threshold",
                str(healthy),
                str(SUGGESTED_HEALTHY_THRESHOLD),
                f"a target back from unhealthy takes threshold × interval = {healthy} × {period} s = "
                f"{healthy * period} s to get traffic again; {SUGGESTED_HEALTHY_THRESHOLD} × {period} s = "
                f"{SUGGESTED_HEALTHY_THRESHOLD * period} s saves {(healthy - SUGGESTED_HEALTHY_THRESHOLD) * period} s "
                "(a new target needs one passing check)",
                f"{FARGATE_STACK_FILE}: HEALTHY_THRESHOLD",
            )
        )
    if unhealthy is not None and unhealthy > MAX_UNHEALTHY_THRESHOLD:
        recs.append(
            Recommendation(
                "unhealthy threshold",
                str(unhealthy),
                f"{SUGGESTED_UNHEALTHY_THRESHOLD}–{MAX_UNHEALTHY_THRESHOLD}",
                f"a failing target is taken out only after {unhealthy} × {period} s = {unhealthy * period} s, "
                "which delays noticing a bad release (and the circuit breaker) by as much",
                f"{FARGATE_STACK_FILE}: UNHEALTHY_THRESHOLD",
            )
        )
    return recs


# -- gathering ---------------------------------------------------------------------------------------


def gather(aws: AwsFactory, env: EnvConfig, endpoints: Endpoints | None) -> HealthReport:
    """Read every part of ``env``; ``endpoints`` is None when its stacks are not (all) deployed. The parts are read
    at once (the stacks, the service and then its target groups, the API stage, the functions), each into a report
    of its own, joined in that order: the round trips of the slowest part, not of them all one after the other."""
    parts: dict[str, Callable[[HealthReport], object]] = {
        "stacks": partial(_gather_stacks, StackOutputs.of(aws).described, env, endpoints),
        "service": partial(_gather_service_and_targets, aws, env, endpoints),
    }
    if endpoints is not None:
        parts["api stage"] = partial(_gather_api_stage, aws.client("apigateway"), env, endpoints)
        parts["lambda"] = partial(_gather_lambdas, aws.client("lambda"), aws.client("cloudformation"), env, endpoints)
    if env.alarm_watch.on:
        parts["alarms"] = partial(_gather_alarms, aws.client("cloudwatch"), env)

    def part(fill: Callable[[HealthReport], object]) -> HealthReport:
        piece = HealthReport(env=env.name)
        fill(piece)
        return piece

    found = at_once({name: partial(part, fill) for name, fill in parts.items()})
    report = HealthReport(env=env.name)
    for piece in found.values():  # in the order of ``parts``
        report.rows += piece.rows
        report.findings += piece.findings
        report.recommendations += piece.recommendations
        report.shifting.update(piece.shifting)
        report.runtimes.update(piece.runtimes)
        report.live_image = report.live_image or piece.live_image
        report.live_sha = report.live_sha or piece.live_sha
        report.desired = piece.desired if report.desired is None else report.desired
    if endpoints is None:
        report.rows.append(Row("api stage", "-", MISSING, "unknown: the stacks' outputs cannot be resolved"))
        report.rows.append(Row("lambda", "-", MISSING, "unknown: the stacks' outputs cannot be resolved"))
    return report


def _gather_service_and_targets(
    aws: AwsFactory, env: EnvConfig, endpoints: Endpoints | None, report: HealthReport
) -> None:
    """The service, and the target group its stack names read at the same time (the one the service is behind, as a
    rule: read again only if the service names others)."""
    elbv2 = aws.client("elbv2")
    reads: dict[str, Callable[[], Any]] = {
        "service": partial(_gather_service, aws.client("ecs"), env, report, aws.client("ecr"), aws)
    }
    named = endpoints.target_group_arn if endpoints is not None else ""
    if named:
        reads[named] = partial(_read_target_group, elbv2, named)
    if env.stack_mode == "express":
        reads[HELD] = partial(_held, aws.client("cloudformation"), env.stacks.fargate)
    read = at_once(reads)
    service, held = read.pop("service"), read.pop(HELD, "")
    if isinstance(held, ClientError):  # a diagnosis goes on without it
        denied = error_code(held) in DENIED
        report.findings.append(
            Finding(
                "warning",
                f"the task definition {env.stacks.fargate} holds could not be read: {held}",
                (
                    "give the role cloudformation:DescribeStackResources on the Fargate stack (express mode reads it), "
                    if denied
                    else "try again: "
                )
                + f"inv health --env {env.name}",
            )
        )
    elif service is not None and held:
        report.findings.extend(held_findings(service, held, env))
    _gather_target_groups(elbv2, env, service, endpoints, report, known=read)
    if service is not None and service.get("status") == "DRAINING":  # its deletion says why the ALB serves nothing
        report.findings = [f for f in report.findings if f.cause != NO_TASKS]


HELD = "held"  # the read of the task definition the Fargate stack holds (express mode)


def _held(cfn: Any, stack: str) -> str | ClientError:
    """stacks.held_task_definition, or the AWS error that kept it from being read."""
    try:
        return held_task_definition(cfn, stack)
    except ClientError as exc:
        return exc


def held_findings(service: Mapping[str, Any], held: str, env: EnvConfig) -> list[Finding]:
    """Express mode: the Fargate stack holds a newer revision than the service runs. An express update whose rollout
    failed leaves that (CloudFormation kept its new template; ECS put the older revision back), until a deploy rolls
    it out again (the stack's deploy-stack step, or the app's, which makes its revision from the stack's)."""
    running = str(service.get("taskDefinition") or "")  # the PRIMARY deployment's: ECS's rollback makes it the older
    if not is_older(running, held):
        return []
    stack = env.stacks.fargate
    return [
        Finding(
            "warning",
            f"{stack} holds {revision(held)}, which {env.service} does not run ({revision(running)}): an express "
            "update's rollout failed and ECS put the older revision back",
            f"see why its tasks stopped: inv tasks --env {env.name}; fix the cause, then inv deploy.auto --env "
            f"{env.name} rolls it out again; or go back: inv rollback --component stack:fargate --env {env.name}",
        )
    ]


def _gather_stacks(
    describe: Callable[[str], dict[str, Any] | None], env: EnvConfig, endpoints: Endpoints | None, report: HealthReport
) -> None:
    """``describe``: StackOutputs.described, which answers the stacks read for the endpoints from memory."""
    absent = []
    names = list(env.stacks.roles().values())  # the team's own stacks too
    described = at_once({name: partial(describe, name) for name in names})  # one round trip, or none
    for name in names:
        stack = described[name]
        report.rows.append(stack_row(name, stack))
        status = None if stack is None else str(stack.get("StackStatus", ""))
        if status is None or status == "DELETE_COMPLETE":
            absent.append(name)
            if endpoints is None:
                continue  # one "not deployed" finding below covers it
        finding = stack_finding(name, status, env.name)
        if finding is not None:
            report.findings.append(finding)
    if endpoints is None:
        why = f"no stack {', '.join(absent)}" if absent else "its stacks' outputs are incomplete"
        report.findings.append(
            Finding("broken", f"environment {env.name} is not deployed ({why})", f"inv deploy.full --env {env.name}")
        )


def _gather_service(
    ecs: Any, env: EnvConfig, report: HealthReport, ecr: Any = None, aws: AwsFactory | None = None
) -> dict[str, Any] | None:
    """The service's rows and findings; the service, or None when there is none to judge further (none of its name,
    or one ECS deleted: INACTIVE, which ECS lists a while longer). ``aws``: what the revision it runs names is read
    too (:func:`_references_finding`)."""
    service = _describe_service(ecs, env.cluster, env.service, env)
    if isinstance(service, UsageError):
        report.rows.append(Row("service", f"{env.cluster}/{env.service}", MISSING, _missing_detail(service, env)))
        report.findings.append(missing_finding(service, env))
        return None
    if service.get("status") == "INACTIVE":
        report.rows.append(Row("service", f"{env.cluster}/{env.service}", "INACTIVE", "deleted; ECS lists it a while"))
        report.findings.append(
            Finding(
                "broken",
                f"service {env.service} was deleted (INACTIVE): nothing runs on it",
                being_deleted(env.service, env.cluster, env, "INACTIVE").next_step or "",
            )
        )
        return None
    task_definitions = TaskDefinitions(ecs)
    arns = list(dict.fromkeys(str(d.get("taskDefinition", "")) for d in service.get("deployments") or []))
    described = at_once({arn: partial(_image_of, task_definitions, arn, env.container) for arn in arns})  # a rollout's
    images = {arn: found for arn, found in described.items() if isinstance(found, str)}  # two at once
    problems = [found.message for found in described.values() if isinstance(found, UsageError)]
    report.desired = int(service.get("desiredCount") or 0)
    report.rows.extend(service_rows(service, env.cluster, images))
    if service.get("status") == "DRAINING":
        report.findings.append(deleting_finding(env))
    else:
        report.findings.extend(service_findings(service, env.cluster, env.name))
    report.recommendations.extend(service_recommendations(service))
    _live_image(service, images, problems, env, report, task_definitions)
    if ecr is not None and report.live_image:
        _live_scan(ecr, report.live_image, env, report)
    current = str(service.get("taskDefinition") or "")
    if aws is not None and current in images and service.get("status") != "DRAINING":
        report.findings += _references_finding(aws, env, task_definitions, current)
    return service


def _references_finding(aws: AwsFactory, env: EnvConfig, task_definitions: TaskDefinitions, arn: str) -> list[Finding]:
    """What the revision the service runs names that does not exist (a secret, an environment file, its log group,
    a role: :mod:`deploykit.references`, read at once), as one finding: the tasks running now started with it, but
    the next one ECS starts (a replacement, a scale-out) fails to start, and a deploy of the app is refused. [] when
    all is there, or when it cannot be told (said by the reads' own findings, or not at all: a diagnosis goes on)."""
    try:
        found = references.check_revision(aws, arn, task_definitions.get(arn))
    except (ClientError, IndexError):
        return []
    if not found.missing:
        return []
    return [
        Finding(
            "broken",
            f"{revision(arn)}, which {env.service} runs, names what does not exist: {'; '.join(found.missing)}; its "
            "running tasks started before, but the next task ECS starts (a replacement, a scale-out) fails to start",
            f"create what is missing (or change {env.stacks.fargate} to name what exists and deploy it: inv "
            f"deploy.auto --env {env.name})",
        )
    ]


def _image_of(task_definitions: TaskDefinitions, arn: str, container: str) -> str | UsageError:
    """The image of ``container`` in task definition ``arn``; what says why not, when it has no such container or
    cannot be read."""
    try:
        return task_definitions.image(arn, container)
    except UsageError as exc:  # no such container in it
        return exc
    except ClientError as exc:
        if error_code(exc) != "ClientException":  # how ECS says "no such task definition"
            raise
        return UsageError(f"task definition {revision(arn)} cannot be read: {exc}")


def _describe_service(ecs: Any, cluster: str, name: str, env: EnvConfig) -> dict[str, Any] | UsageError:
    """The service, one ECS deleted (INACTIVE) included; else what says which is missing: the cluster (NoCluster), or
    the service in it."""
    try:
        return describe_service(ecs, cluster, name, env, deleted=True)
    except UsageError as exc:
        return exc


def _missing_detail(missing: UsageError, env: EnvConfig) -> str:
    return f"no cluster {env.cluster}" if isinstance(missing, NoCluster) else f"no such service in {env.cluster}"


def missing_finding(missing: UsageError, env: EnvConfig) -> Finding:
    """No service to judge, and which is missing: its cluster (``missing`` a NoCluster: the Fargate stack that makes
    both is not deployed, or deploy.toml names another cluster), or the service in the cluster (never made there, ECS
    no longer lists the one it deleted, or deploy.toml names another); the next step is ``missing``'s, as every
    command that reads the service gives it."""
    if isinstance(missing, NoCluster):
        return Finding(
            "broken",
            f"ECS cluster {env.cluster} does not exist, nor service {env.service} in it: the cluster is not deployed "
            f"(the Fargate stack {env.stacks.fargate} makes both)",
            f"{missing.next_step} (or fix 'cluster' in deploy.toml, if it names another)",
        )
    return Finding("broken", f"ECS service {env.service} not found in cluster {env.cluster}", missing.next_step or "")


def _live_image(
    service: Mapping[str, Any],
    images: Mapping[str, str],
    problems: list[str],
    env: EnvConfig,
    report: HealthReport,
    task_definitions: TaskDefinitions,
) -> None:
    primary = primary_deployment(dict(service))
    arn = str(primary.get("taskDefinition", "")) if primary else ""
    image = images.get(arn)
    if primary is None or image is None:
        why = "; ".join(problems) or "the service has no PRIMARY deployment"
        report.rows.append(Row("image", env.container, MISSING, why))
        report.findings.append(
            Finding(
                "warning",
                f"cannot tell which image is live: {why}",
                "fix 'container' in deploy.toml" if problems else f"inv deploy.app --env {env.name}",
            )
        )
        return
    tag = image_tag(image)
    report.live_image, report.live_sha = image, sha_of_tag(tag)
    match = SHA_TAG.match(tag or "")
    status = (tag or "untagged") + (" (dirty)" if match and match.group("dirty") else "")
    cpu = cpu_architecture(task_definitions.get(arn))  # read already, with its image
    on = f", on {cpu}" if cpu else ""  # the CPU its tasks run on ([build] platform's, through the Fargate stack)
    report.rows.append(Row("image", env.container, status, f"{image} ({revision(arn)}{on})"))
    if report.live_sha is None:
        report.findings.append(
            Finding(
                "warning",
                f"the live image tag {tag or '(none)'!r} is not a git SHA: deploykit cannot tell which commit is live",
                f"deploy a commit: inv deploy.app --env {env.name}",
            )
        )


def _live_scan(ecr: Any, image: str, env: EnvConfig, report: HealthReport) -> None:
    """ECR's scan of the live image: a row, and a finding when it found something of the scan gate's severity (HIGH
    without a gate) that deploy.toml does not accept. A scan that cannot be read (no right to, the image gone from
    the registry) is a row saying so: the rest of the report stands."""
    tag = image_tag(image) or ""
    try:
        scan = read_scan(ecr, env.repository, tag) if tag else None
    except (UsageError, ClientError) as exc:
        why = exc.message if isinstance(exc, UsageError) else f"{error_code(exc)}: {exc}"
        report.rows.append(Row("scan", tag or "-", "unknown", f"ECR's scan cannot be read: {why}"))
        return
    row, finding = scan_health(scan, tag, env)
    report.rows.append(row)
    if finding is not None:
        report.findings.append(finding)


def scan_health(scan: Scan | None, tag: str, env: EnvConfig) -> tuple[Row, Finding | None]:
    """The row of the live image's scan, and the finding when it holds something of the gate's severity (HIGH
    without a gate) that deploy.toml does not accept."""
    if scan is None:
        how = f"aws ecr start-image-scan --repository-name {env.repository} --image-id imageTag={tag}"
        return Row("scan", tag or "-", "not scanned", f"ECR has no scan of it ({how})"), None
    if scan.status not in JUDGED:
        return Row("scan", tag, scan.status, scan.description), None
    severity = env.image_scan.severity or "HIGH"
    verdict = judge(scan.findings, scan.tally, severity, env.image_scan.ignore)
    accepted = f"; accepted by deploy.toml: {', '.join(f.name for f in verdict.accepted)}" if verdict.accepted else ""
    row = Row("scan", tag, scan.status, verdict.counted() + accepted)
    if verdict.passed:
        return row, None
    named = ", ".join(str(f) for f in verdict.blocking[:3]) + (" ..." if len(verdict.blocking) > 3 else "")
    return row, Finding(
        "warning",
        f"the live image {tag} has {len(verdict.blocking)} finding(s) of {severity} or worse in ECR's scan: {named}",
        f"update what they are in and deploy it (inv base-image --force, then inv deploy.app --env {env.name}), or, "
        f"once reviewed, accept them in [environments.{env.name}.image_scan] ignore",
    )


def _target_group_arns(service: Mapping[str, Any] | None, endpoints: Endpoints | None) -> list[str]:
    arns: list[str] = []
    for lb in (service or {}).get("loadBalancers") or []:
        arn = lb.get("targetGroupArn")
        if arn and arn not in arns:
            arns.append(str(arn))
    if not arns and endpoints is not None and endpoints.target_group_arn:
        arns.append(endpoints.target_group_arn)
    return arns


TargetGroupRead = tuple[dict[str, Any], dict[str, str], list[Mapping[str, Any]]] | None


def _gather_target_groups(
    elbv2: Any,
    env: EnvConfig,
    service: Mapping[str, Any] | None,
    endpoints: Endpoints | None,
    report: HealthReport,
    known: Mapping[str, TargetGroupRead] | None = None,
) -> None:
    """The rows of the target groups the service is behind (``known``: those read already, by ARN)."""
    arns = _target_group_arns(service, endpoints)
    if not arns:
        report.rows.append(Row("targets", "-", MISSING, "the service has no load balancer and no stack names one"))
        if service is not None:  # otherwise the missing service (or stacks) already says it
            report.findings.append(
                Finding(
                    "broken",
                    f"service {env.service} is behind no ALB target group",
                    f"inv deploy.stack {env.stacks.fargate} --env {env.name}",
                )
            )
        return
    known = known or {}
    unread = [arn for arn in arns if arn not in known]
    read = {**known, **at_once({arn: partial(_read_target_group, elbv2, arn) for arn in unread})}
    for arn in arns:
        _target_group_rows(env, arn, read[arn], report)


def _read_target_group(elbv2: Any, arn: str) -> TargetGroupRead:
    """The target group, its attributes and its targets' health, read at once; None when it does not exist."""
    reads: dict[str, Callable[[], Any]] = {
        "group": partial(elbv2.describe_target_groups, TargetGroupArns=[arn]),
        "attributes": partial(_attributes_unless_denied, elbv2, arn),
        "health": partial(elbv2.describe_target_health, TargetGroupArn=arn),
    }
    try:
        read = at_once(reads)
    except ClientError as exc:
        if error_code(exc) != "TargetGroupNotFound":
            raise
        return None
    return (
        dict(read["group"]["TargetGroups"][0]),
        attributes_of(read["attributes"]),
        list(read["health"]["TargetHealthDescriptions"]),
    )


def _attributes_unless_denied(elbv2: Any, arn: str) -> list[Mapping[str, Any]]:
    """The target group's attributes; none when the credentials may not read them (the deregistration delay is then
    shown as ``?`` and not judged, where the whole report was refused)."""
    try:
        return list(elbv2.describe_target_group_attributes(TargetGroupArn=arn)["Attributes"])
    except ClientError as exc:
        if error_code(exc) not in DENIED:
            raise
        return []


def _target_group_rows(env: EnvConfig, arn: str, read: TargetGroupRead, report: HealthReport) -> None:
    name = arn.split("/")[1] if arn.count("/") >= 2 else arn
    if read is None:
        report.rows.append(Row("targets", name, MISSING, f"no target group {arn}"))
        report.findings.append(
            Finding(
                "broken",
                f"target group {name} does not exist",
                f"inv deploy.stack {env.stacks.fargate} --env {env.name}",
            )
        )
        return
    target_group, attributes, descriptions = read
    name = str(target_group.get("TargetGroupName") or name)
    recs = target_group_recommendations(target_group, attributes)
    report.rows.append(targets_row(name, descriptions))
    report.rows.append(
        Row("health check", name, "untuned" if recs else "tuned", health_check_text(target_group, attributes))
    )
    report.findings.extend(target_findings(name, arn, descriptions, env.name))
    report.recommendations.extend(recs)


def _gather_alarms(cloudwatch: Any, env: EnvConfig, report: HealthReport) -> None:
    """The alarms [environments.NAME.alarm_watch] names, each in a row (deploykit.watch.WatchAlarms judges deploys
    by them)."""
    try:
        found = read_alarms(cloudwatch, env.alarm_watch.alarms)
    except ClientError as exc:
        if error_code(exc) not in DENIED:
            raise
        report.rows.append(Row("alarms", ", ".join(env.alarm_watch.alarms), "unknown", "may not be read"))
        report.findings.append(
            Finding(
                "warning",
                f"the alarms [environments.{env.name}.alarm_watch] names may not be read ({error_code(exc)}): every "
                "deploy is refused until they can be",
                "allow cloudwatch:DescribeAlarms to the deploying role (see Permissions in the README)",
            )
        )
        return
    rows, findings = alarm_health(env, found, _times_in_alarm(cloudwatch, list(found), datetime.now(UTC)))
    report.rows += rows
    report.findings += findings
    report.recommendations += alarm_watch_advice(env, found)


NOISY_TIMES = 3  # an alarm that went to ALARM this often in NOISY_HOURS goes off without a deploy: noise
NOISY_HOURS = 24


def _times_in_alarm(cloudwatch: Any, names: list[str], now: datetime) -> dict[str, int]:
    """How many times each alarm went to ALARM in the last :data:`NOISY_HOURS` (its history, the alarms at once);
    none said when the history may not be read."""
    since = now - timedelta(hours=NOISY_HOURS)
    try:
        return at_once({name: partial(times_in_alarm, cloudwatch, name, since) for name in names}) if names else {}
    except ClientError as exc:
        if error_code(exc) not in DENIED:
            raise
        return {}


def alarm_watch_advice(env: EnvConfig, found: Mapping[str, Mapping[str, Any]]) -> list[Recommendation]:
    """A recommendation when the alarm watch ends before one of its metric alarms could have gone to ALARM over a
    release failing from its first second: ``DatapointsToAlarm`` periods of its ``Period`` (and, on AWS, the minute
    its metrics come late)."""
    needed: list[tuple[float, str]] = []
    for name in named(env.alarm_watch.alarms, found):  # the first of the slowest, in deploy.toml's order
        alarm = found[name]
        period, periods = (
            alarm_period(alarm),  # a metric math alarm's: its metrics' longest
            _int(alarm.get("DatapointsToAlarm") or alarm.get("EvaluationPeriods")),
        )
        if period and periods:
            needed.append((float(period * periods + (0 if env.is_local else METRICS_LATE)), name))
    seconds, name = max(needed, key=lambda n: n[0], default=(0.0, ""))
    if seconds <= env.alarm_watch.seconds:
        return []
    return [
        Recommendation(
            "alarm_watch seconds",
            f"{env.alarm_watch.seconds:g} s",
            f"{seconds:g} s",
            f"alarm {name} goes to ALARM after {seconds:g} s of a failing release at the soonest"
            + ("" if env.is_local else " (its breaching periods, and the minute AWS's metrics come late)")
            + ": a watch that ends sooner passes a release it would have failed, and nothing rolls that back",
            f"deploy.toml, [environments.{env.name}.alarm_watch]: seconds = {seconds:g}",
        )
    ]


def alarm_health(
    env: EnvConfig, found: Mapping[str, Mapping[str, Any]], times: Mapping[str, int] | None = None
) -> tuple[list[Row], list[Finding]]:
    """A row for each alarm ``env``'s alarm watch names (``found``: those CloudWatch has, by name), and a finding for
    one in ALARM (a deploy now is not judged by it), missing (every deploy is refused) or noisy: gone to ALARM
    :data:`NOISY_TIMES` times or more in the last :data:`NOISY_HOURS` (``times``, by name), which fails deploys that
    did nothing wrong."""
    rows: list[Row] = []
    findings: list[Finding] = []
    table = f"[environments.{env.name}.alarm_watch]"
    for name, alarm in listed(env.alarm_watch.alarms, found):  # in deploy.toml's order; a prefix's by their names
        if alarm is None:
            rows.append(Row("alarm", name, MISSING, not_there(name, env.region)))
            findings.append(
                Finding(
                    "warning",
                    f"alarm {name}, which {table} names, is not in CloudWatch ({env.region}): every deploy is refused "
                    "until it is",
                    "create it there, or take it out of alarms in deploy.toml",
                )
            )
            continue
        row, more = _alarm_row(env, name, alarm, (times or {}).get(name, 0))
        rows.append(row)
        findings += more
    return rows, findings


def _alarm_row(env: EnvConfig, name: str, alarm: Mapping[str, Any], went: int) -> tuple[Row, list[Finding]]:
    """:func:`alarm_health`'s row of alarm ``name`` (as CloudWatch has it: ``alarm``), and its findings: in ALARM, or
    ``went`` to ALARM :data:`NOISY_TIMES` times or more in the last :data:`NOISY_HOURS`."""
    findings: list[Finding] = []
    state = str(alarm.get("StateValue", "?"))
    since = state_changed(alarm)
    reason = str(alarm.get("StateReason", "")).strip()
    row = Row("alarm", name, state, (f"since {when(since)}: " if since else "") + reason)
    if went >= NOISY_TIMES:
        findings.append(
            Finding(
                "warning",
                f"alarm {name} went to ALARM {went} times in the last {NOISY_HOURS} hours: unless deploys set it "
                "off, it is noisy, and a noisy alarm fails deploys that did nothing wrong whenever it goes off "
                "while one is watched (and rolls them back)",
                f"read when and why: aws cloudwatch describe-alarm-history --alarm-name {name} --history-item-type "
                "StateUpdate; then raise its threshold or DatapointsToAlarm, or take it out of alarms in deploy.toml",
            )
        )
    if state == "ALARM":
        findings.append(
            Finding(
                "warning",
                f"alarm {name} is in ALARM" + (f" since {when(since)}" if since else "") + f": {reason}; a deploy "
                "now is not judged by it (it cannot tell the release from the one before)",
                f"see what it watches: aws cloudwatch describe-alarms --alarm-names {name}; what the app and the "
                f"functions wrote: inv logs --env {env.name} --component all --since 1h",
            )
        )
    return row, findings


def _gather_api_stage(apigateway: Any, env: EnvConfig, endpoints: Endpoints, report: HealthReport) -> None:
    name = f"{endpoints.api_id}/{endpoints.api_stage}"
    try:
        stage = apigateway.get_stage(restApiId=endpoints.api_id, stageName=endpoints.api_stage)
    except ClientError as exc:
        if error_code(exc) in DENIED:  # the rest is reported: the whole report was refused
            report.rows.append(
                Row("api stage", name, "unknown", f"may not be read ({error_code(exc)}): apigateway:GET")
            )
            return
        if error_code(exc) != "NotFoundException":
            raise
        report.rows.append(Row("api stage", name, MISSING, "no such REST API or stage"))
        report.findings.append(
            Finding(
                "broken",
                f"API Gateway stage {endpoints.api_stage!r} of REST API {endpoints.api_id} does not exist",
                f"inv deploy.stack {env.stacks.api} --env {env.name}",
            )
        )
        return
    updated = stage.get("lastUpdatedDate") or stage.get("createdDate")
    detail = f"deployment {stage.get('deploymentId', '?')}" + (f", updated {when(updated)}" if updated else "")
    report.rows.append(Row("api stage", name, "deployed", detail))


def _gather_lambdas(lam: Any, cfn: Any, env: EnvConfig, endpoints: Endpoints, report: HealthReport) -> None:
    if not endpoints.functions:
        what = f"no stack of {env.name} names a function ({env.stacks.api} included)"
        report.rows.append(Row("lambda", "-", MISSING, what))
    reads: dict[str, Callable[[], Any]] = {
        key: partial(_alias_and_version, lam, function) for key, function in endpoints.functions.items()
    }
    # what the functions' settings should be: the templates of the stacks holding them
    hosts = {key: endpoints.hosts.get(key, env.stacks.api) for key in endpoints.functions}
    reads |= {f"{_TEMPLATE}{stack}": partial(deployed_template, cfn, stack) for stack in set(hosts.values())}
    read = at_once(reads)  # every function's alias and the version it serves, and its stack's template: one trip
    templates = {stack: read.pop(f"{_TEMPLATE}{stack}") for stack in set(hosts.values())}
    for key, function in sorted(endpoints.functions.items()):
        label = f"{key} ({function})" if key != function else key
        found = read[key]
        host = hosts[key]
        if found is None:
            report.rows.append(Row("lambda", label, MISSING, f"no function {function} or no alias {LIVE_ALIAS!r}"))
            report.findings.append(
                Finding(
                    "broken",
                    f"Lambda {function}: the function or its {LIVE_ALIAS!r} alias does not exist",
                    lambda_chain.deleted_behind_the_stack(host, env.name),
                )
            )
            continue
        alias, config, provisioned = found
        version = str(alias["FunctionVersion"])
        runs_on = f"on {', '.join(config.get('Architectures') or ['x86_64'])}"
        parts = [_code(config), f"{config['Runtime']} {runs_on}" if config.get("Runtime") else runs_on]
        if config.get("Runtime"):
            report.runtimes[key] = (str(config["Runtime"]), host)
        if config.get("LastModified"):
            parts.append(f"modified {when(config['LastModified'])}")
        weights = lambda_chain.routed_versions(alias)
        if provisioned is not None:
            parts.append(provisioned_text(provisioned))
            status = provisioned.get("Status")
            if weights and status == "IN_PROGRESS":  # Lambda's own while it readies the version the alias moved to
                parts.append(
                    f"version {version}'s environments being readied, {lambda_chain.routing_shares(weights)} meanwhile"
                )
                weights = {}
            elif status == "FAILED":
                report.findings.append(
                    Finding(
                        "warning",
                        f"Lambda {key}: the provisioned concurrency of its alias {LIVE_ALIAS!r} failed on version "
                        f"{version}: {provisioned.get('StatusReason') or 'no reason given'}",
                        f"see what its init wrote: inv logs --component lambda:{key} --env {env.name} --since 1h; "
                        f"deploy a release whose init passes (inv deploy.lambda {key} --env {env.name}), or go back: "
                        f"inv rollback --env {env.name} --component lambda:{key}",
                    )
                )
        if weights:
            report.shifting[key] = (function, weights)
            parts.append(f"traffic shift in progress: {lambda_chain.routing_shares(report.shifting[key][1])}")
        report.rows.append(Row("lambda", label, f"{LIVE_ALIAS} → version {version}", ", ".join(parts)))
        drift = lambda_chain.settings_drift(templates.get(host), key, config, host)
        if drift:  # $LATEST read only then: whether the next deploy of it serves the stack's settings again
            latest = lambda_chain.live_configuration(lam, function, "$LATEST")
            drift = lambda_chain.settings_drift(templates.get(host), key, config, host, latest)
        if drift and lambda_chain.LATEST_HAS_THEM in drift:  # a version that keeps its own: $LATEST has the stack's
            report.findings.append(
                Finding(
                    "warning",
                    f"Lambda {key}: {drift}",
                    f"the next deploy of it publishes the stack's: inv deploy.lambda {key} --env {env.name}",
                )
            )
        elif drift:
            report.findings.append(
                Finding(
                    "warning",
                    f"Lambda {key}: {drift}",
                    f"{lambda_chain.drift_remedy(env.name, host)} (inv diff --drift --env {env.name} shows it "
                    f"first); inv diff --verify --env {env.name} compares them with this checkout's",
                )
            )


def runtime_findings(
    runtimes: Mapping[str, tuple[str, str]], setting: str, today: date, env_name: str
) -> list[Finding]:
    """A warning for each runtime the functions run (``runtimes``: HealthReport.runtimes) that AWS deprecated, or
    deprecates within 180 days (packaging.runtime_deprecation), naming its functions and the way off it: deploy.toml's
    ``[build] lambda_runtime`` (``setting``) moved, or, where the setting is a later runtime already, their stacks
    deployed with it."""
    by_runtime: dict[str, list[str]] = {}
    for key, (runs, _) in sorted(runtimes.items()):
        by_runtime.setdefault(runs, []).append(key)
    findings = []
    for runs, keys in sorted(by_runtime.items()):
        said = packaging.runtime_deprecation(runs, today)
        if said is None:
            continue
        if runs != setting and packaging.runtime_deprecation(setting, today) is None:
            stacks = sorted({runtimes[key][1] for key in keys})
            deploys = " and ".join(f"inv deploy.stack {stack} --env {env_name}" for stack in stacks)
            next_step = (
                f"deploy.toml's [build] lambda_runtime is {setting}: {deploys} puts them on it, unless their stack "
                "gives them a runtime of its own"
            )
        else:
            later = packaging.runtimes_to_move_to(today)
            next_step = (
                f'set [build] lambda_runtime = "{later[0]}" in deploy.toml (or {", ".join(later[1:]) or "later"}), '
                f"commit, inv deploy.auto --env {env_name}; run the functions' tests on that Python first"
                if later
                else "no runtime deploykit knows is supported longer: see AWS's table of Lambda runtimes"
            )
        many = len(keys) > 1
        findings.append(
            Finding(
                "warning", f"Lambda{'s' if many else ''} {', '.join(keys)} run{'' if many else 's'} {said}", next_step
            )
        )
    return findings


_TEMPLATE = "\0template:"  # the template of a stack holding functions, among the functions' reads


def _code(config: Mapping[str, Any]) -> str:
    """What a version runs, for people: its CodeSha256, the zip its description names (CloudFormation's ``code
    s3://...`` or the fast path's), the commit (the fast path's ``git <sha>``); another description as it is."""
    description = str(config.get("Description") or "")
    location, sha = lambda_chain.code_location(description), lambda_chain.git_sha_of(description)
    said = f"code {str(config.get('CodeSha256', '?'))[:SHORT_SHA]}"
    if location:
        said += f" from {packaging.short_key(location[1])}"
    if sha:
        said += f", git {sha}"
    if description and not location and not sha:
        said += f", {description}"
    return said


def with_live_commit(row: Row, live: Mapping[str, str | None]) -> Row:
    """A function's row with the commit it runs as deploy.auto reads it (``live``: component → SHA), where its
    version names none: a version CloudFormation publishes (a stack deploy that changed the function) names its zip,
    and the live record the commit. Any other row as it is."""
    if row.part != "lambda" or ", git " in row.detail:
        return row
    sha = live.get(f"lambda:{row.name.split(' ', 1)[0]}")
    return replace(row, detail=f"{row.detail}, git {sha} (the live record)") if sha else row


def _alias_and_version(lam: Any, function: str) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any] | None] | None:
    """The function's live alias, the configuration of the version it serves and the alias's provisioned concurrency
    (None: none, or not readable), read at once; None when the function or its alias does not exist."""
    reads: dict[str, Callable[[], Any]] = {
        "alias": partial(lam.get_alias, FunctionName=function, Name=LIVE_ALIAS),
        "version": partial(lam.get_function_configuration, FunctionName=function, Qualifier=LIVE_ALIAS),
        "provisioned": partial(lambda_chain.readable_provisioned, lam, function, LIVE_ALIAS),
    }
    try:
        found = at_once(reads)
    except ClientError as exc:
        if error_code(exc) != "ResourceNotFoundException":
            raise
        return None
    provisioned = found["provisioned"]  # one the credentials may not read: the row goes without
    return dict(found["alias"]), dict(found["version"]), provisioned if isinstance(provisioned, dict) else None


def provisioned_text(provisioned: Mapping[str, Any]) -> str:
    """An alias's provisioned concurrency for its row: ``provisioned concurrency 2 of 2 READY``."""
    available = provisioned.get("AvailableProvisionedConcurrentExecutions", 0)
    requested = provisioned.get("RequestedProvisionedConcurrentExecutions", 0)
    return f"provisioned concurrency {available} of {requested} {provisioned.get('Status', '?')}"


# -- output ------------------------------------------------------------------------------------------


def render(report: HealthReport) -> str:
    """The report for people: the table, then findings with their next steps, then recommendations."""
    lines = [f"Health of {report.env}"]
    if report.live_image:
        lines.append(f"live image: {report.live_image}" + (f" (git {report.live_sha})" if report.live_sha else ""))
    lines.append("")
    table = [[r.part, r.name, r.status, r.detail] for r in report.rows]
    lines.append(
        tabulate(
            table,
            headers=["part", "name", "status", "detail"],
            tablefmt="simple",
            maxcolwidths=[None, None, None, DETAIL_WIDTH],
        )
    )
    lines.append("")
    if report.findings:
        lines.append("Findings")
        for f in sorted(report.findings, key=lambda f: f.severity != "broken"):
            lines.append(f"  {'❌' if f.severity == 'broken' else '⚠️ '} {f.what}")
            lines.append(f"     → next: {f.next_step}")
    if not report.broken:
        lines.append("✅ nothing broken")
    if report.recommendations:
        lines.append("")
        lines.append("Recommendations")
        for r in report.recommendations:
            lines.append(f"  💡 {r.setting}: {r.current} → {r.suggested}: {r.why}")
            lines.append(f"     change it in {r.where}")
    return "\n".join(lines)


# -- pure logic: deploys ------------------------------------------------------------------------------


def deploy_rows(
    env_name: str,
    newest: Record | None,
    holder: Found | None,
    now: datetime,
    shifting: Mapping[str, tuple[str, Mapping[str, float]]] | None = None,
) -> tuple[list[Row], list[Finding]]:
    """The environment's last recorded run and its deploy lock (as read: expired or not by S3's clock when it gave
    its times, else by ``now``), as rows; a warning when that run failed, and one
    for each function whose live alias still splits its requests (``shifting``) while no deploy is running: a
    canary cut short, its process killed before it could take itself back."""
    rows: list[Row] = []
    findings: list[Finding] = []
    if newest is None:
        rows.append(Row("last run", "-", "none", "no run recorded yet"))
    else:
        error = (newest.error or "").splitlines()[0] if newest.error else ""
        detail = f"{when(datetime.fromisoformat(newest.when))} by {newest.who}, {newest.head}, "
        detail += f"{newest.seconds:.1f}s" + (f": {error}" if error else "")
        rows.append(Row("last run", newest.command, newest.result, detail))  # ok, failed, or refused
        if not newest.ok:
            did = "was refused" if newest.refused else "failed"  # refused: it changed nothing live
            findings.append(
                Finding(
                    "warning",
                    f"the last run in {env_name} {did}: {newest.command} by {newest.who} ({error or 'no message'})",
                    f"what it did: inv history --env {env_name}; once fixed: inv deploy.auto --env {env_name}",
                )
            )
    if holder is None:
        rows.append(Row("deploy lock", "-", "free", "no deploy is running"))
        for function, (name, weights) in sorted((shifting or {}).items()):
            findings.append(
                Finding(
                    "warning",
                    f"Lambda {function}: its live alias routes {lambda_chain.routing_shares(weights)}, and no deploy "
                    "is running (a canary cut short: its process was killed before it could take itself back)",
                    f"finish it: inv deploy.lambda {function} --env {env_name}; or take it back: aws lambda "
                    f"update-alias --function-name {name} --name {LIVE_ALIAS} --routing-config "
                    "AdditionalVersionWeights={}",
                )
            )
    else:
        status = "expired" if holder.expired(now) else "held"
        rows.append(Row("deploy lock", holder.info.owner, status, holder.describe(now)))
    return rows, findings


def read_clock(aws: AwsFactory, clock: Clock) -> float | None:
    """How far AWS's clock is from this machine's, in seconds (deploykit.watch.clock_offset's estimate), from the
    Date of one STS GetCallerIdentity (which any credentials may call), when it is worth saying
    (deploykit.watch.skew_to_say); None otherwise, and when it cannot be read."""
    sent = clock.now()
    try:
        answer = aws.client("sts").get_caller_identity()
    except (BotoCoreError, ClientError):
        return None  # the other parts say what the credentials cannot do
    return skew_to_say(clock_offset(answer, sent, clock.now()))


def clock_findings(estimate: float | None) -> list[Finding]:
    """A warning when this machine's clock is :data:`~deploykit.watch.SKEW_SAID` or more from AWS's
    (:func:`read_clock`): the watches count in AWS's time, the times this machine says do not."""
    if estimate is None:
        return []
    return [
        Finding(
            "warning",
            f"{skew_said(estimate)} (the Date of its answers): deploykit's watches count in AWS's time, but what this "
            "machine's clock sets (inv logs --since, the history's times, the deploy lock's lease) and other tools "
            "are off by as much",
            f"set the clock right: {SET_THE_CLOCK}",
        )
    ]


def account_advice(env: EnvConfig, account: str) -> tuple[list[Finding], list[Recommendation]]:
    """The credentials' ``account`` against the one deploy.toml pins for ``env``: another one is broken (every
    change would be refused); none pinned, on AWS, is a recommendation to pin this one."""
    if env.account and env.account != account:
        return [
            Finding(
                "broken",
                f"these credentials act in AWS account {account}, but deploy.toml pins {env.account} for "
                f"{env.name}: every deploy would be refused",
                "log in to the right account (aws sso login --profile ...), or fix 'account' in deploy.toml",
            )
        ], []
    if env.account or env.is_local:
        return [], []
    return [], [
        Recommendation(
            "account",
            "not pinned",
            f'"{account}"',
            "with no account named, credentials of another account (a wrong profile, a CI role) would deploy "
            "there without a word; pinned, every change checks it first",
            f'deploy.toml, [environments.{env.name}]: account = "{account}"',
        )
    ]


# -- helpers ----------------------------------------------------------------------------------------


def when(value: Any) -> str:
    """A timestamp for people: datetimes in UTC to the second, and ISO 8601 strings (Lambda's LastModified,
    ``2026-11-30T18:43:20.000+0000``) alike; other strings as given."""
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            return str(value)
    if isinstance(value, datetime):
        moment = value.astimezone(UTC) if value.tzinfo else value
        return moment.strftime("%Y-%m-%d %H:%M:%S") + (" UTC" if value.tzinfo else "")
    return "" if value is None else str(value)


def _counts(item: Mapping[str, Any]) -> tuple[int, int, int]:
    """(running, desired, pending) of a service or deployment."""
    return (
        _int(item.get("runningCount")) or 0,
        _int(item.get("desiredCount")) or 0,
        _int(item.get("pendingCount")) or 0,
    )


def _int(value: Any) -> int | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None
