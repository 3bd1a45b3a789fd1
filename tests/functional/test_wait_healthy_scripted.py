"""wait-healthy against the rollout shapes moto cannot produce, played by a script of answers.

Each poll asks DescribeServices and DescribeTaskDefinition (each new ARN once), then at once: ListTasks and
DescribeTasks for the running tasks of our PRIMARY with DescribeTargetHealth per target group, and the same for
stopped tasks of our deployment. Those go out together, so the script answers each call by what it asks for
(operation, desired status, task ARNs, target group), in the order of the polls, rather than by arrival as
botocore's Stubber does; every answer is checked against the service model as the Stubber would.
"""

from __future__ import annotations

import copy
import io
import threading
import time
from collections import defaultdict, deque
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from botocore.awsrequest import AWSResponse
from botocore.config import Config
from botocore.stub import Stubber
from botocore.validate import validate_parameters
from moto import mock_aws

from deploykit.app_chain import WaitHealthy
from deploykit.aws import AwsFactory
from deploykit.clock import FakeClock
from deploykit.config import EnvConfig
from deploykit.ecs import RolloutWaiter
from deploykit.errors import ServiceBeingDeleted, StepFailed, UsageError
from deploykit.output import Reporter
from deploykit.plan import Context, Executor, Plan
from tests.functional.conftest import held_across, new_session

CLUSTER, SERVICE, CONTAINER = "car-rental-cluster", "car-rental-service", "backend"
ACCOUNT = "123456789012"
OLD = f"arn:aws:ecs:eu-west-1:{ACCOUNT}:task-definition/car-rental-backend:4"
NEW = f"arn:aws:ecs:eu-west-1:{ACCOUNT}:task-definition/car-rental-backend:5"
REPO = f"{ACCOUNT}.dkr.ecr.eu-west-1.amazonaws.com/car-rental-backend"
IMAGE = f"{REPO}:new0000000000"
TG = f"arn:aws:elasticloadbalancing:eu-west-1:{ACCOUNT}:targetgroup/app/0123456789abcdef"
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def deployment(arn: str, status: str, rollout: str, running: int, desired: int = 2, **extra: Any) -> dict[str, Any]:
    return {
        "id": f"ecs-svc/{arn[-1]}",
        "status": status,
        "taskDefinition": arn,
        "desiredCount": desired,
        "pendingCount": desired - running if status == "PRIMARY" else 0,
        "runningCount": running,
        "rolloutState": rollout,
        "createdAt": T0,
        **extra,
    }


def service(
    *deployments: dict[str, Any], running: int = 2, events: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    primary = next(d for d in deployments if d["status"] == "PRIMARY")
    return {
        "services": [
            {
                "serviceName": SERVICE,
                "status": "ACTIVE",
                "desiredCount": 2,
                "runningCount": running,
                "pendingCount": 0,
                "taskDefinition": primary["taskDefinition"],
                "deployments": list(deployments),
                "events": events or [],
                "loadBalancers": [{"targetGroupArn": TG, "containerName": CONTAINER, "containerPort": 8000}],
            }
        ]
    }


def taskdef(arn: str, image: str, **container: Any) -> dict[str, Any]:
    return {
        "taskDefinition": {
            "taskDefinitionArn": arn,
            "family": "car-rental-backend",
            "revision": int(arn[-1]),
            "containerDefinitions": [{"name": CONTAINER, "image": image, **container}],
        },
        "tags": [],
    }


def task(n: int, arn: str = NEW, *, stopped: str | None = None) -> dict[str, Any]:
    data: dict[str, Any] = {
        "taskArn": f"arn:aws:ecs:eu-west-1:{ACCOUNT}:task/{CLUSTER}/task{n}",
        "taskDefinitionArn": arn,
        "lastStatus": "STOPPED" if stopped else "RUNNING",
        "startedBy": f"ecs-svc/{arn[-1]}",
        "attachments": [
            {
                "type": "ElasticNetworkInterface",
                "details": [{"name": "privateIPv4Address", "value": f"10.0.1.{n}"}],
            }
        ],
        "containers": [{"name": CONTAINER, "exitCode": 1, "reason": "OutOfMemoryError"}] if stopped else [],
    }
    if stopped:
        data.update(stoppedReason=stopped, stoppedAt=T0 + timedelta(seconds=5))
    return data


def health(*states: tuple[int, str]) -> dict[str, Any]:
    return {
        "TargetHealthDescriptions": [
            {
                "Target": {"Id": f"10.0.1.{n}", "Port": 8000},
                "TargetHealth": {
                    "State": s,
                    **(
                        {
                            "Reason": "Target.ResponseCodeMismatch",
                            "Description": "Health checks failed with these codes: [500]",
                        }
                        if s == "unhealthy"
                        else {}
                    ),
                },
            }
            for n, s in states
        ]
    }


class Rollout:
    """Scripts the answers of successive polls on ECS and ELBv2 clients: each call is answered by what it asks for,
    in poll order; a call with no answer left fails, and so does :meth:`wait` when answers are left over."""

    def __init__(self) -> None:
        session = new_session()
        self.ecs = session.client("ecs")
        self.elbv2 = session.client("elbv2")
        self.answers: dict[tuple[str, ...], deque[dict[str, Any]]] = defaultdict(deque)
        self.taskdefs = {OLD: taskdef(OLD, f"{REPO}:old0000000000"), NEW: taskdef(NEW, IMAGE)}
        self.described: list[str] = []  # task definitions asked for
        self._lock = threading.Lock()
        for client in (self.ecs, self.elbv2):
            client.meta.events.register("before-parameter-build", self._keep_params)
            client.meta.events.register("before-call", self._answer)

    @staticmethod
    def key(operation: str, params: dict[str, Any]) -> tuple[str, ...]:
        if operation == "ListTasks":
            return (operation, params["desiredStatus"])
        if operation == "DescribeTasks":
            return (operation, *sorted(params["tasks"]))
        if operation == "DescribeTargetHealth":
            return (operation, params["TargetGroupArn"])
        return (operation,)

    def add(self, operation: str, answer: dict[str, Any], **params: Any) -> Rollout:
        client = self.elbv2 if operation == "DescribeTargetHealth" else self.ecs
        if "Error" not in answer:
            validate_parameters(answer, client.meta.service_model.operation_model(operation).output_shape)
        self.answers[self.key(operation, params)].append(answer)
        return self

    def fail(self, operation: str, code: str, message: str) -> Rollout:
        error = {"Error": {"Code": code, "Message": message}, "ResponseMetadata": {"HTTPStatusCode": 400}}
        return self.add(operation, error)

    def poll(
        self,
        svc: dict[str, Any],
        running: list[dict[str, Any]] | None = None,
        stopped: list[dict[str, Any]] | None = None,
        targets: dict[str, Any] | None = None,
    ) -> Rollout:
        self.add("DescribeServices", svc)
        deployments = svc["services"][0]["deployments"]
        primary = next(d for d in deployments if d["status"] == "PRIMARY")
        if primary["taskDefinition"] == NEW:
            self._tasks("RUNNING", running or [])
            for lb in svc["services"][0]["loadBalancers"]:
                empty: dict[str, Any] = {"TargetHealthDescriptions": []}
                self.add("DescribeTargetHealth", targets or empty, TargetGroupArn=lb["targetGroupArn"])
        if any(d["taskDefinition"] == NEW for d in deployments):
            self._tasks("STOPPED", stopped or [])
        return self

    def _tasks(self, desired: str, tasks: list[dict[str, Any]]) -> None:
        arns = [t["taskArn"] for t in tasks]
        self.add("ListTasks", {"taskArns": arns}, desiredStatus=desired)
        if tasks:
            self.add("DescribeTasks", {"tasks": tasks, "failures": []}, tasks=arns)

    def _keep_params(self, params: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
        context["script_params"] = dict(params)

    def _answer(self, model: Any, context: dict[str, Any], **_: Any) -> tuple[AWSResponse, dict[str, Any]]:
        params = context["script_params"]
        if model.name == "DescribeTaskDefinition":
            self.described.append(params["taskDefinition"])
            return AWSResponse(None, 200, {}, None), copy.deepcopy(self.taskdefs[params["taskDefinition"]])
        key = self.key(model.name, params)
        with self._lock:
            if not self.answers[key]:
                raise AssertionError(f"no answer left for {key}")
            answer = self.answers[key].popleft()
        status = answer.get("ResponseMetadata", {}).get("HTTPStatusCode", 200)
        return AWSResponse(None, status, {}, None), copy.deepcopy(answer)

    def assert_all_answered(self) -> None:
        left = {key: len(queue) for key, queue in self.answers.items() if queue}
        assert not left, f"answers never asked for: {left}"
        assert len(self.described) == len(set(self.described)), f"a task definition read twice: {self.described}"

    def wait(
        self, timeout: float = 60, poll: float = 1.0, clock: FakeClock | None = None
    ) -> tuple[Any, list[str], FakeClock]:
        said: list[str] = []
        clock = clock or FakeClock(T0)
        verdict = RolloutWaiter(self.ecs, self.elbv2, clock, say=said.append).wait(
            cluster=CLUSTER, service=SERVICE, container=CONTAINER, image=IMAGE, timeout=timeout, poll=poll
        )
        self.assert_all_answered()
        return verdict, said, clock


def test_in_progress_then_completed_with_healthy_targets_succeeds() -> None:
    event = {
        "id": "e1",
        "createdAt": T0 + timedelta(seconds=1),
        "message": "(service car-rental-service) has started 2 tasks",
    }
    rollout = (
        Rollout()
        .poll(service(deployment(NEW, "PRIMARY", "IN_PROGRESS", 0), deployment(OLD, "ACTIVE", "COMPLETED", 2)))
        .poll(
            service(
                deployment(NEW, "PRIMARY", "IN_PROGRESS", 2),
                deployment(OLD, "ACTIVE", "COMPLETED", 2),
                events=[event],
            ),
            running=[task(1), task(2)],
            targets=health((1, "initial"), (2, "healthy")),
        )
        .poll(
            service(deployment(NEW, "PRIMARY", "COMPLETED", 2), events=[event]),
            running=[task(1), task(2)],
            targets=health((1, "healthy"), (2, "healthy")),
        )
    )
    verdict, said, clock = rollout.wait(poll=1.0)
    assert verdict.state == "healthy"
    assert clock.sleeps == [1.0, 1.0]  # polled every second, no more
    assert any("event: (service car-rental-service) has started 2 tasks" in line for line in said)
    assert any("targets 1/2 healthy (initial)" in line for line in said)
    assert said[-1].startswith("[   2.0s] PRIMARY car-rental-backend:5 (new0000000000) COMPLETED running 2/2")


def test_a_poll_comes_every_interval_however_long_its_reads_take() -> None:
    """On AWS a poll's calls take ~0.6 s one after the other: sleeping the whole interval after them would poll
    every 5.6 s instead of 5."""
    rollout = (
        Rollout()
        .poll(service(deployment(NEW, "PRIMARY", "IN_PROGRESS", 0), deployment(OLD, "ACTIVE", "COMPLETED", 2)))
        .poll(
            service(deployment(NEW, "PRIMARY", "COMPLETED", 2)),
            running=[task(1), task(2)],
            targets=health((1, "healthy"), (2, "healthy")),
        )
    )
    clock = FakeClock(T0)
    rollout.ecs.meta.events.register("before-call.ecs.DescribeServices", lambda **_: clock.advance(0.25))
    verdict, _, _ = rollout.wait(poll=1.0, clock=clock)
    assert verdict.state == "healthy"
    assert clock.sleeps == [0.75] and clock.monotonic() == 1.25  # the second poll started 1 s after the first


def test_the_tasks_and_the_targets_are_read_at_once() -> None:
    """After DescribeServices, one round trip for the rest: both ListTasks and DescribeTargetHealth wait until all
    three are in flight (made one after the other, the first would wait alone and break the barrier)."""
    both = service(deployment(NEW, "PRIMARY", "COMPLETED", 2), deployment(OLD, "ACTIVE", "COMPLETED", 2))
    healthy = health((1, "healthy"), (2, "healthy"))
    rollout = (
        Rollout()
        .poll(both, running=[task(1), task(2)], targets=healthy)
        .poll(service(deployment(NEW, "PRIMARY", "COMPLETED", 2)), running=[task(1), task(2)], targets=healthy)
    )
    held_across(3, (rollout.ecs, "ListTasks"), (rollout.elbv2, "DescribeTargetHealth"))
    verdict, _, _ = rollout.wait()
    assert verdict.state == "healthy"


def test_rollout_failed_fails_with_the_reason() -> None:
    rollout = Rollout().poll(
        service(
            deployment(
                NEW,
                "PRIMARY",
                "FAILED",
                0,
                rolloutStateReason="ECS deployment circuit breaker: tasks failed to start.",
            ),
            deployment(OLD, "ACTIVE", "COMPLETED", 2),
        )
    )
    verdict, _, _ = rollout.wait()
    assert verdict.state == "failed" and "tasks failed to start" in verdict.reason


def test_circuit_breaker_rollback_fails_even_though_the_service_is_stable() -> None:
    rolled_back = {
        "id": "e2",
        "createdAt": T0 + timedelta(seconds=30),
        "message": "(service car-rental-service) (deployment ecs-svc/5) deployment failed: "
        "tasks failed to start, rolling back to deployment ecs-svc/4.",
    }
    rollout = (
        Rollout()
        .poll(service(deployment(NEW, "PRIMARY", "IN_PROGRESS", 0), deployment(OLD, "ACTIVE", "COMPLETED", 2)))
        # the old revision is PRIMARY, COMPLETED and fully running again: ECS calls that stable
        .poll(service(deployment(OLD, "PRIMARY", "COMPLETED", 2), events=[rolled_back]))
    )
    verdict, said, _ = rollout.wait()
    assert verdict.state == "failed"
    assert "circuit breaker rolled the service back to car-rental-backend:4 (old0000000000)" in verdict.reason
    assert "rolling back to deployment ecs-svc/4" in verdict.reason
    assert any("deployment failed" in line for line in said)


def test_deadline_fails_with_the_last_state() -> None:
    in_progress = service(deployment(NEW, "PRIMARY", "IN_PROGRESS", 1), deployment(OLD, "ACTIVE", "COMPLETED", 2))
    rollout = Rollout()
    for _ in range(4):  # polls at 0, 1, 2, 3 s; the next would pass the 3.5 s deadline
        rollout.poll(in_progress, running=[task(1)], targets=health((1, "healthy")))
    verdict, _, clock = rollout.wait(timeout=3.5, poll=1.0)
    assert verdict.state == "failed"
    assert verdict.reason.startswith("deadline of 3.5s passed while waiting: rollout IN_PROGRESS")
    assert clock.monotonic() == 3.0


def test_unhealthy_targets_until_the_deadline_say_which_and_why() -> None:
    done = service(deployment(NEW, "PRIMARY", "COMPLETED", 2))
    rollout = Rollout()
    for _ in range(2):
        rollout.poll(done, running=[task(1), task(2)], targets=health((1, "healthy"), (2, "unhealthy")))
    verdict, _, _ = rollout.wait(timeout=1.5, poll=1.0)
    assert verdict.state == "failed"
    assert "10.0.1.2:8000 unhealthy: Health checks failed with these codes: [500]" in verdict.reason


def test_a_stopped_new_task_fails_fast_with_its_reason() -> None:
    rollout = Rollout().poll(
        service(deployment(NEW, "PRIMARY", "IN_PROGRESS", 0), deployment(OLD, "ACTIVE", "COMPLETED", 2)),
        stopped=[task(3, stopped="Essential container in task exited")],
    )
    verdict, _, _ = rollout.wait()
    assert verdict.state == "failed"
    assert "Essential container in task exited" in verdict.reason and "OutOfMemoryError" in verdict.reason


def stopped_as(n: int, code: str, reason: str, exit_code: int) -> dict[str, Any]:
    """A task of the new deployment that stopped with ``code`` (ECS's stopCode) and ``reason``."""
    data = task(n, stopped=reason)
    data.update(stopCode=code, containers=[{"name": CONTAINER, "exitCode": exit_code}])
    return data


@pytest.mark.parametrize(
    ("code", "reason", "told"),
    [
        (  # the person's reason, however it reads, is theirs
            "UserInitiated",
            "Task failed to answer me, so I stopped it",
            "a person (StopTask: Task failed to answer me, so I stopped it)",
        ),
        (
            "SpotInterruption",
            "Your Spot Task was interrupted.",
            "Fargate Spot taking its capacity back (SpotInterruption: Your Spot Task was interrupted.)",
        ),
        (
            "TerminationNotice",
            "Task stopped due to task retirement",
            "Fargate retiring it for maintenance (TerminationNotice: Task stopped due to task retirement)",
        ),
        (
            "InfrastructureHealth",
            "Task stopped due to an infrastructure health issue",
            "AWS, for a fault of the infrastructure it ran on (InfrastructureHealth: Task stopped due to an "
            "infrastructure health issue)",
        ),
    ],
)
def test_a_new_task_stopped_from_outside_is_no_failure_and_the_rollout_goes_on(
    code: str, reason: str, told: str
) -> None:
    """A person's StopTask during the rollout, Fargate Spot taking the capacity back, or Fargate retiring the task (its
    SIGTERM's exit code, 143): the stop says nothing of the release, ECS starts another, and the release is judged by
    it. Said once, not counted."""
    taken = stopped_as(3, code, reason, 143)
    rollout = (
        Rollout()
        .poll(
            service(deployment(NEW, "PRIMARY", "IN_PROGRESS", 1), deployment(OLD, "ACTIVE", "COMPLETED", 2)),
            running=[task(1)],
            stopped=[taken],
            targets=health((1, "healthy")),
        )
        .poll(
            service(deployment(NEW, "PRIMARY", "COMPLETED", 2)),
            running=[task(1), task(2)],
            stopped=[taken],
            targets=health((1, "healthy"), (2, "healthy")),
        )
    )
    verdict, said, _ = rollout.wait()
    assert verdict.state == "healthy"
    assert [line for line in said if "task task3" in line] == [
        f"[   0.0s] task task3 was stopped by {told}: no failure of the release; ECS starts another"
    ]


def test_a_new_task_that_failed_before_a_person_stopped_it_still_fails_the_rollout() -> None:
    """Its essential container exited first: ECS keeps that stop code (EssentialContainerExited), whatever stop reason
    a later StopTask left (the sandbox shows it so). A failure, and the task that explains it."""
    crashed = stopped_as(3, "EssentialContainerExited", "Task stopped by user", 1)
    rollout = Rollout().poll(
        service(deployment(NEW, "PRIMARY", "IN_PROGRESS", 0), deployment(OLD, "ACTIVE", "COMPLETED", 2)),
        stopped=[crashed, stopped_as(4, "UserInitiated", "Task stopped by user", 143)],
    )
    verdict, said, _ = rollout.wait()
    assert verdict.state == "failed"
    assert verdict.reason == "a new task stopped: task3: Task stopped by user; container backend: exit code 1"
    assert not any("task task3 was stopped by a person" in line for line in said)


def test_a_service_ecs_is_deleting_ends_the_wait_at_once(dev_env: EnvConfig) -> None:
    """DRAINING (inv destroy, its stack or the service deleted while the wait waits): it never comes back, and
    the wait stops at that poll, saying so, instead of polling until its deadline. Alone, exit 2: a state to fix."""
    rollout = Rollout().poll(
        service(deployment(NEW, "PRIMARY", "IN_PROGRESS", 0), deployment(OLD, "ACTIVE", "COMPLETED", 2))
    )
    draining = service(deployment(NEW, "PRIMARY", "IN_PROGRESS", 0), deployment(OLD, "ACTIVE", "COMPLETED", 2))
    draining["services"][0]["status"] = "DRAINING"
    rollout.add("DescribeServices", draining)  # and nothing after it
    clock = FakeClock(T0)
    waiter = RolloutWaiter(rollout.ecs, rollout.elbv2, clock, say=lambda _line: None, env=dev_env)
    with pytest.raises(ServiceBeingDeleted) as err:
        waiter.wait(cluster=CLUSTER, service=SERVICE, container=CONTAINER, image=IMAGE, timeout=600, poll=5.0)
    rollout.assert_all_answered()
    assert clock.monotonic() == 5.0  # the second poll, not the deadline's
    assert err.value.exit_code == 2
    assert err.value.message == (
        f"ECS service '{SERVICE}' in cluster '{CLUSTER}' is being deleted (status DRAINING): its rollout cannot "
        "finish; nothing was changed"
    )
    assert f"inv deploy.stack {dev_env.stacks.fargate} --env dev" in (err.value.next_step or "")


def test_throttling_is_retried_with_backoff() -> None:
    rollout = Rollout().fail("DescribeServices", "ThrottlingException", "Rate exceeded")
    rollout.poll(
        service(deployment(NEW, "PRIMARY", "COMPLETED", 2)),
        running=[task(1), task(2)],
        targets=health((1, "healthy"), (2, "healthy")),
    )
    verdict, said, clock = rollout.wait(poll=1.0)
    assert verdict.state == "healthy"
    assert clock.sleeps == [2.0]  # backed off
    assert any("throttling (ThrottlingException)" in line for line in said)


def test_wait_healthy_step_reports_failure_with_the_next_command(dev_env: EnvConfig) -> None:
    rollout = Rollout().poll(service(deployment(OLD, "PRIMARY", "COMPLETED", 2)))
    factory = AwsFactory(dev_env)
    factory._clients.update(ecs=rollout.ecs, elbv2=rollout.elbv2)
    out = io.StringIO()
    clock = FakeClock(T0)
    ctx = Context(None, dev_env, factory, clock, Reporter(out, tty=False, clock=clock), lambda: None)  # type: ignore[arg-type]
    report = Executor(ctx).execute(Plan("dev", (WaitHealthy(CLUSTER, SERVICE, CONTAINER, IMAGE, 60, 1.0),)))
    rollout.assert_all_answered()
    assert isinstance(report.error, UsageError)  # never asked to run it: bad input (exit 2), not a failed rollout
    assert report.error.exit_code == 2 and "is not rolling out" in report.error.message
    assert report.error.next_step == "roll it first: inv roll-service"
    assert report.records[0].status == "failed"


AWSLOGS = {
    "logDriver": "awslogs",
    "options": {"awslogs-group": "/ecs/car-rental", "awslogs-stream-prefix": "backend", "awslogs-region": "eu-west-1"},
}
CRASH = [f'  File "/app/app/fleet.py", line {n}, in <module>' for n in range(30)] + ["RuntimeError: boom at import"]


def run_wait_healthy(rollout: Rollout, env: EnvConfig, logs: Any) -> tuple[Any, str]:
    """The wait-healthy step on the script's ECS and ELBv2 answers and the given CloudWatch Logs client."""
    factory = AwsFactory(env)
    factory._clients.update(ecs=rollout.ecs, elbv2=rollout.elbv2, logs=logs)
    out = io.StringIO()
    clock = FakeClock(T0)
    ctx = Context(None, env, factory, clock, Reporter(out, tty=False, clock=clock), lambda: None)  # type: ignore[arg-type]
    report = Executor(ctx).execute(Plan("dev", (WaitHealthy(CLUSTER, SERVICE, CONTAINER, IMAGE, 60, 1.0),)))
    rollout.assert_all_answered()
    return report, out.getvalue()


def crashed_rollout(**container: Any) -> Rollout:
    rollout = Rollout().poll(
        service(deployment(NEW, "PRIMARY", "IN_PROGRESS", 0), deployment(OLD, "ACTIVE", "COMPLETED", 2)),
        stopped=[task(3, stopped="Essential container in task exited")],
    )
    rollout.taskdefs[NEW] = taskdef(NEW, IMAGE, **container)
    return rollout


def test_a_crashed_task_s_last_log_lines_come_with_the_failure(dev_env: EnvConfig, aws_credentials: None) -> None:
    with mock_aws():
        logs = new_session().client("logs")
        logs.create_log_group(logGroupName="/ecs/car-rental")
        for stream in ("backend/backend/task3", "backend/backend/task9"):  # task9: another task's stream
            logs.create_log_stream(logGroupName="/ecs/car-rental", logStreamName=stream)
        now = int(time.time() * 1000)  # CloudWatch Logs takes no events older than 14 days
        events = [{"timestamp": now + n, "message": line} for n, line in enumerate(CRASH)]
        logs.put_log_events(logGroupName="/ecs/car-rental", logStreamName="backend/backend/task3", logEvents=events)
        logs.put_log_events(
            logGroupName="/ecs/car-rental",
            logStreamName="backend/backend/task9",
            logEvents=[{"timestamp": now, "message": "not this one"}],
        )
        report, printed = run_wait_healthy(crashed_rollout(logConfiguration=AWSLOGS), dev_env, logs)
    assert isinstance(report.error, StepFailed)
    assert report.error.message.endswith("; its last log line: RuntimeError: boom at import"), report.error.message
    assert "Essential container in task exited" in report.error.message
    where = "CloudWatch Logs /ecs/car-rental, stream backend/backend/task3"
    assert f"📜 the last 20 lines backend wrote in task task3 ({where}):" in printed
    shown = [line[4:] for line in printed.splitlines() if line.startswith("    ")]
    assert shown == CRASH[-20:]
    assert "not this one" not in printed


def test_a_task_that_wrote_nothing_says_so_and_the_failure_is_unchanged(
    dev_env: EnvConfig, aws_credentials: None
) -> None:
    with mock_aws():
        logs = new_session().client("logs")
        logs.create_log_group(logGroupName="/ecs/car-rental")
        report, printed = run_wait_healthy(crashed_rollout(logConfiguration=AWSLOGS), dev_env, logs)
    assert isinstance(report.error, StepFailed)
    assert "last log line" not in report.error.message
    assert "📜 no log of task task3: no such stream" in printed and "backend/backend/task3" in printed


def test_a_log_that_cannot_be_read_does_not_hide_the_failure(dev_env: EnvConfig) -> None:
    logs = new_session().client("logs")
    stubber = Stubber(logs)
    stubber.add_client_error("get_log_events", "AccessDeniedException", "not authorized to perform logs:GetLogEvents")
    with stubber:
        report, printed = run_wait_healthy(crashed_rollout(logConfiguration=AWSLOGS), dev_env, logs)
    assert isinstance(report.error, StepFailed)
    assert "Essential container in task exited" in report.error.message
    assert "could not read it (AccessDeniedException: not authorized to perform logs:GetLogEvents)" in printed


def test_a_log_endpoint_that_does_not_answer_does_not_hide_the_failure(dev_env: EnvConfig) -> None:
    logs = new_session().client("logs", endpoint_url="http://127.0.0.1:9", config=Config(retries={"max_attempts": 1}))
    report, printed = run_wait_healthy(crashed_rollout(logConfiguration=AWSLOGS), dev_env, logs)
    assert isinstance(report.error, StepFailed)
    assert "Essential container in task exited" in report.error.message
    assert "📜 no log of task task3: could not read it (Could not connect to the endpoint URL" in printed


def test_a_container_that_does_not_log_to_cloudwatch_reads_no_log(dev_env: EnvConfig) -> None:
    logs = new_session().client("logs")
    with Stubber(logs):  # any call would fail: none is expected
        report, printed = run_wait_healthy(crashed_rollout(), dev_env, logs)
    assert isinstance(report.error, StepFailed)
    assert "📜" not in printed and "last log line" not in report.error.message


@pytest.fixture
def dev_env() -> EnvConfig:  # no moto needed: all answers come from the script
    from deploykit.config import Stacks

    return EnvConfig(
        "dev",
        "eu-west-1",
        CLUSTER,
        SERVICE,
        CONTAINER,
        "car-rental-backend",
        Stacks("r", "d", "a", "f", "api"),
    )


def test_the_tasks_a_pause_stopped_are_no_failures_of_the_wake_nor_of_a_wait_for_the_deployment() -> None:
    """A paused service scaled back up: its deployment is the old one (made at T0), whose tasks the pause stopped
    (started by it, stopped before the wake, 'Scaling activity initiated by'). Waited for from the wake on
    (``since``), they are not failures; nor from the deployment's making on, as wait-healthy waits when roll-service
    had nothing to do (deploy.app of the commit the paused service runs): that wait failed a healthy service. A
    scale-in is never a failure."""
    paused_by = "Scaling activity initiated by (deployment ecs-svc/5)"
    stopped = [task(1, stopped=paused_by), task(2, stopped=paused_by)]  # stopped at T0 + 5 s
    woken_at = T0 + timedelta(hours=9)

    def script() -> Rollout:
        return (
            Rollout()
            .poll(service(deployment(NEW, "PRIMARY", "COMPLETED", 0), running=0), stopped=stopped)
            .poll(
                service(deployment(NEW, "PRIMARY", "COMPLETED", 2)),
                running=[task(3), task(4)],
                stopped=stopped,
                targets=health((3, "healthy"), (4, "healthy")),
            )
        )

    def wait(rollout: Rollout, since: datetime | None) -> Any:
        waiter = RolloutWaiter(rollout.ecs, rollout.elbv2, FakeClock(woken_at), say=lambda _line: None)
        return waiter.wait(
            cluster=CLUSTER, service=SERVICE, container=CONTAINER, image=IMAGE, timeout=60, poll=1.0, since=since
        )

    assert wait(script(), woken_at).state == "healthy"
    assert wait(script(), None).state == "healthy"


class PagedRollout(Rollout):
    """A Rollout whose ListTasks answers come in pages (AWS's hold at most 100 task ARNs, then a nextToken)."""

    @staticmethod
    def key(operation: str, params: dict[str, Any]) -> tuple[str, ...]:
        if operation == "ListTasks":
            return (operation, params["desiredStatus"], params.get("nextToken", ""))
        return Rollout.key(operation, params)


def test_a_new_task_that_stopped_on_the_second_page_of_stopped_tasks_fails_fast() -> None:
    """A service whose earlier deployments stopped 100 tasks within the hour (ECS still lists them): ListTasks
    gives the stopped tasks a page of 100 at a time, and the new task that stopped may be on the second page. Read
    from the first page only, it was not seen, and the wait went on to the deadline."""
    old = [task(n, OLD, stopped="Scaling activity initiated by (deployment ecs-svc/4)") for n in range(10, 110)]
    crashed = task(3, stopped="Essential container in task exited")
    rollout = PagedRollout()
    rollout.add(
        "DescribeServices",
        service(deployment(NEW, "PRIMARY", "IN_PROGRESS", 0), deployment(OLD, "ACTIVE", "COMPLETED", 2)),
    )
    rollout.add("ListTasks", {"taskArns": []}, desiredStatus="RUNNING")
    rollout.add("DescribeTargetHealth", {"TargetHealthDescriptions": []}, TargetGroupArn=TG)
    rollout.add("ListTasks", {"taskArns": [t["taskArn"] for t in old], "nextToken": "page2"}, desiredStatus="STOPPED")
    rollout.add("ListTasks", {"taskArns": [crashed["taskArn"]]}, desiredStatus="STOPPED", nextToken="page2")
    rollout.add("DescribeTasks", {"tasks": old, "failures": []}, tasks=[t["taskArn"] for t in old])
    rollout.add("DescribeTasks", {"tasks": [crashed], "failures": []}, tasks=[crashed["taskArn"]])
    verdict, _, clock = rollout.wait(timeout=0.5, poll=1.0)  # one poll: the failure is seen in it, or never
    assert verdict.state == "failed" and clock.monotonic() == 0.0
    assert verdict.reason.startswith("a new task stopped: task3: Essential container in task exited")
