"""inv restart's step against scripted ECS answers: a forced deployment of the revision the service runs.

The tasks it replaces run the very revision of the fresh ones, so the wait follows the new deployment by its id:
the old tasks stopping as they drain are not fresh ones failing, and the old running ones are not counted as the
fresh ones serving. The answers are played by the script of test_wait_healthy_scripted (moto keeps one deployment
per service and starts no task)."""

from __future__ import annotations

import io
from typing import Any

from deploykit.aws import AwsFactory
from deploykit.clock import FakeClock
from deploykit.config import EnvConfig
from deploykit.errors import RolledBackByEcs, StepFailed, UsageError
from deploykit.output import Reporter
from deploykit.plan import Context, Executor, Plan, RunReport
from deploykit.restart import RestartService
from tests.functional.test_wait_healthy_scripted import (
    CLUSTER,
    CONTAINER,
    OLD,
    SERVICE,
    T0,
    Rollout,
    deployment,
    health,
    service,
    task,
)

FRESH = "ecs-svc/fresh"
LIVE = "ecs-svc/4"  # deployment(OLD, ...)'s id


def ran(arn: str, n: int, by: str, **more: Any) -> dict[str, Any]:
    """A task of revision ``arn`` started by deployment ``by``."""
    return {**task(n, arn, **more), "startedBy": by}


class Restart(Rollout):
    """The script's answers for a restart: the service read first, then UpdateService, then the polls of the fresh
    deployment (its running tasks and targets once it is PRIMARY, its stopped tasks while it is listed)."""

    def __init__(self) -> None:
        super().__init__()
        self.updates: list[dict[str, Any]] = []
        self.ecs.meta.events.register("before-parameter-build.ecs.UpdateService", self._keep_update)

    def _keep_update(self, params: dict[str, Any], **_: Any) -> None:
        self.updates.append(dict(params))

    def before(self, svc: dict[str, Any]) -> Restart:
        self.add("DescribeServices", svc)
        return self

    def update(self, svc: dict[str, Any]) -> Restart:
        self.add("UpdateService", {"service": svc["services"][0]})
        return self

    def poll(  # type: ignore[override]
        self,
        svc: dict[str, Any],
        running: list[dict[str, Any]] | None = None,
        stopped: list[dict[str, Any]] | None = None,
        targets: dict[str, Any] | None = None,
    ) -> Restart:
        self.add("DescribeServices", svc)
        deployments = svc["services"][0]["deployments"]
        primary = next(d for d in deployments if d["status"] == "PRIMARY")
        if primary["id"] == FRESH:
            self._tasks("RUNNING", running or [])
            for lb in svc["services"][0]["loadBalancers"]:
                empty: dict[str, Any] = {"TargetHealthDescriptions": []}
                self.add("DescribeTargetHealth", targets or empty, TargetGroupArn=lb["targetGroupArn"])
        if any(d["id"] == FRESH for d in deployments):
            self._tasks("STOPPED", stopped or [])
        return self

    def run(self, env: EnvConfig, timeout: float = 60) -> tuple[RunReport, str]:
        factory = AwsFactory(env)
        factory._clients.update(ecs=self.ecs, elbv2=self.elbv2)
        out = io.StringIO()
        clock = FakeClock(T0)
        ctx = Context(None, env, factory, clock, Reporter(out, tty=False, clock=clock), lambda: None)  # type: ignore[arg-type]
        step = RestartService(CLUSTER, SERVICE, CONTAINER, timeout, 1.0)
        report = Executor(ctx).execute(Plan(env.name, (step,)))
        self.assert_all_answered()
        return report, out.getvalue()


STEADY = service(deployment(OLD, "PRIMARY", "COMPLETED", 2))
STARTED = service(
    deployment(OLD, "PRIMARY", "IN_PROGRESS", 0, id=FRESH), deployment(OLD, "ACTIVE", "COMPLETED", 2), running=2
)
OLD_TASKS = [ran(OLD, 1, LIVE), ran(OLD, 2, LIVE)]
FRESH_TASKS = [ran(OLD, 3, FRESH), ran(OLD, 4, FRESH)]


def test_a_restart_forces_a_deployment_of_the_same_revision_and_waits_for_its_own_tasks(dev_env: EnvConfig) -> None:
    script = (
        Restart()
        .before(STEADY)
        .update(STARTED)
        # the old tasks still run beside the fresh ones: only the fresh ones' targets count
        .poll(
            service(
                deployment(OLD, "PRIMARY", "IN_PROGRESS", 2, id=FRESH),
                deployment(OLD, "ACTIVE", "COMPLETED", 2),
                running=4,
            ),
            running=OLD_TASKS + FRESH_TASKS,
            targets=health((1, "healthy"), (2, "healthy"), (3, "initial"), (4, "healthy")),
        )
        # the old ones stop as they drain: same revision, started by the old deployment; not a failure
        .poll(
            service(deployment(OLD, "PRIMARY", "COMPLETED", 2, id=FRESH)),
            running=FRESH_TASKS,
            stopped=[ran(OLD, 1, LIVE, stopped="Task stopped by deployment"), ran(OLD, 2, LIVE, stopped="drained")],
            targets=health((3, "healthy"), (4, "healthy")),
        )
    )
    report, printed = script.run(dev_env)
    assert report.ok, report.error
    assert script.updates == [{"cluster": CLUSTER, "service": SERVICE, "forceNewDeployment": True}]
    record = report.records[0]
    assert record.status == "done" and record.outputs == {"deployment": FRESH}
    assert record.detail == f"2 fresh task(s) of car-rental-backend:4 serve (deployment {FRESH})"
    assert "targets 1/2 healthy (initial)" in printed  # tasks 1 and 2 (old, healthy) were not counted


def test_a_fresh_task_that_stops_fails_the_restart_with_its_reason(dev_env: EnvConfig) -> None:
    script = (
        Restart()
        .before(STEADY)
        .update(STARTED)
        .poll(STARTED, stopped=[ran(OLD, 3, FRESH, stopped="ResourceInitializationError: unable to pull secrets")])
    )
    report, _ = script.run(dev_env)
    assert isinstance(report.error, StepFailed) and not isinstance(report.error, RolledBackByEcs)
    assert report.error.message.startswith("the fresh tasks of car-rental-service (car-rental-backend:4) did not")
    assert "unable to pull secrets" in report.error.message
    assert "the old tasks keep serving" in (report.error.next_step or "")


def test_the_circuit_breaker_ending_the_restart_is_a_failure_though_the_revision_is_the_same(
    dev_env: EnvConfig,
) -> None:
    event = {
        "id": "e1",
        "createdAt": T0,
        "message": f"(service car-rental-service) (deployment {FRESH}) deployment failed: tasks failed to start, "
        "rolling back to deployment ecs-svc/back.",
    }
    back = service(deployment(OLD, "PRIMARY", "COMPLETED", 2, id="ecs-svc/back"), events=[event])
    script = Restart().before(STEADY).update(STARTED).poll(STARTED).poll(back)
    report, _ = script.run(dev_env)
    assert isinstance(report.error, RolledBackByEcs)
    assert f"deployment {FRESH} was replaced by ecs-svc/back of car-rental-backend:4" in report.error.message
    assert "tasks failed to start" in report.error.message


def test_a_service_in_the_middle_of_a_rollout_is_refused_and_not_touched(dev_env: EnvConfig) -> None:
    rolling = service(
        deployment(OLD, "PRIMARY", "IN_PROGRESS", 1, id="ecs-svc/9"), deployment(OLD, "ACTIVE", "COMPLETED", 2)
    )
    script = Restart().before(rolling)
    report, _ = script.run(dev_env)
    assert isinstance(report.error, UsageError)
    assert "refusing to restart car-rental-service while it rolls out: its deployment ecs-svc/9" in report.error.message
    assert "inv wait-healthy" in (report.error.next_step or "")
    assert script.updates == []


def test_a_service_with_no_task_has_nothing_to_restart(moto_aws: None, dev_env: EnvConfig) -> None:
    """Not paused by inv pause (moto's AWS: no artifacts bucket, no pause object), its count is someone's."""
    idle = service(deployment(OLD, "PRIMARY", "COMPLETED", 0, desired=0), running=0)
    idle["services"][0]["desiredCount"] = 0
    script = Restart().before(idle)
    report, _ = script.run(dev_env)
    assert report.ok and report.records[0].status == "skipped"
    assert "desired count 0" in report.records[0].detail
    assert script.updates == []
