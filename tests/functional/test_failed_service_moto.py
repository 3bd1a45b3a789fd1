"""Why a service failed in a stack deploy (deploykit.ecs.explain_failed_service): ECS's stopped tasks as the
Stubber plays them (moto keeps no stop codes), their log in moto's CloudWatch Logs."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from botocore.stub import ANY, Stubber
from moto import mock_aws

from deploykit.ecs import explain_failed_service
from tests.functional.conftest import new_session

ACCOUNT = "123456789012"
CLUSTER, SERVICE = "car-rental-cluster", "car-rental-service"
SERVICE_ARN = f"arn:aws:ecs:eu-west-1:{ACCOUNT}:service/{CLUSTER}/{SERVICE}"
TASKDEF = f"arn:aws:ecs:eu-west-1:{ACCOUNT}:task-definition/car-rental-backend:7"
GROUP = "CarRentalFargateStack-BackendLogGroup-1"
SINCE = datetime(2026, 11, 29, 6, 0, tzinfo=UTC)


def stopped(task_id: str, seconds: int, code: str, reason: str, exit_code: int | None = None) -> dict[str, Any]:
    container: dict[str, Any] = {"name": "backend"}
    if exit_code is not None:
        container["exitCode"] = exit_code
    return {
        "taskArn": f"arn:aws:ecs:eu-west-1:{ACCOUNT}:task/{CLUSTER}/{task_id}",
        "taskDefinitionArn": TASKDEF,
        "lastStatus": "STOPPED",
        "stopCode": code,
        "stoppedReason": reason,
        "stoppedAt": SINCE + timedelta(seconds=seconds),
        "containers": [container],
    }


TASKS = [
    stopped("old1", 2, "ServiceSchedulerInitiated", "Task stopped by deployment ecs-svc/1"),  # not a failure
    stopped("before", -60, "EssentialContainerExited", "Essential container in task exited", 1),  # another deploy
    stopped("crash1", 5, "EssentialContainerExited", "Essential container in task exited", 1),
    stopped("crash2", 9, "EssentialContainerExited", "Essential container in task exited", 1),
]


@pytest.fixture
def logs() -> Iterator[Any]:
    with mock_aws():
        client = new_session().client("logs")
        client.create_log_group(logGroupName=GROUP)
        now = int(time.time() * 1000)  # CloudWatch Logs takes no events older than 14 days
        for task_id, last in (("crash1", "first crash"), ("crash2", "RuntimeError: boom at import")):
            stream = f"backend/backend/{task_id}"
            client.create_log_stream(logGroupName=GROUP, logStreamName=stream)
            events = [{"timestamp": now, "message": "Traceback (most recent call last):"}]
            events.append({"timestamp": now + 1, "message": last})
            client.put_log_events(logGroupName=GROUP, logStreamName=stream, logEvents=events)
        yield client


def ecs_with(tasks: list[dict[str, Any]], *, logging: bool = True, read: bool = True) -> tuple[Any, Stubber]:
    """ECS answering ListTasks and DescribeTasks with ``tasks``, then (``read``) DescribeTaskDefinition."""
    ecs = new_session().client("ecs")
    stub = Stubber(ecs)
    arns = [t["taskArn"] for t in tasks]
    stub.add_response(
        "list_tasks",
        {"taskArns": arns},
        {"cluster": CLUSTER, "serviceName": SERVICE, "desiredStatus": "STOPPED"},
    )
    if not tasks:
        return ecs, stub
    stub.add_response("describe_tasks", {"tasks": tasks, "failures": []}, {"cluster": CLUSTER, "tasks": arns})
    if not read:
        return ecs, stub
    container: dict[str, Any] = {"name": "backend", "image": "repo:abc", "essential": True}
    if logging:
        options = {"awslogs-group": GROUP, "awslogs-stream-prefix": "backend", "awslogs-region": "eu-west-1"}
        container["logConfiguration"] = {"logDriver": "awslogs", "options": options}
    definition = {"taskDefinitionArn": TASKDEF, "family": "car-rental-backend", "containerDefinitions": [container]}
    stub.add_response(
        "describe_task_definition",
        {"taskDefinition": definition, "tags": []},
        {"taskDefinition": TASKDEF, "include": ["TAGS"]},
    )
    return ecs, stub


def test_the_last_task_to_fail_since_the_deploy_began_is_named_with_its_log(logs: Any) -> None:
    ecs, stub = ecs_with(TASKS)
    said: list[str] = []
    with stub:
        found = explain_failed_service(ecs, logs, SERVICE_ARN, SINCE, container="backend", say=said.append)
        stub.assert_no_pending_responses()
    assert found == [
        "  2 tasks of car-rental-service failed, the last: crash2: Essential container in task exited; "
        "container backend: exit code 1; its last log line: RuntimeError: boom at import"
    ]
    assert said == [
        f"📜 the last 2 lines backend wrote in task crash2 (CloudWatch Logs {GROUP}, stream backend/backend/crash2):",
        "    Traceback (most recent call last):",
        "    RuntimeError: boom at import",
    ]


def test_a_task_that_failed_its_health_checks_counts_as_failed(logs: Any) -> None:
    sick = stopped("sick1", 4, "ServiceSchedulerInitiated", "Task failed ELB health checks in (target-group tg)")
    ecs, stub = ecs_with([TASKS[0], sick])
    said: list[str] = []
    with stub:
        found = explain_failed_service(ecs, logs, SERVICE_ARN, SINCE, container="backend", say=said.append)
    assert found == [
        "  1 task of car-rental-service failed, the last: sick1: Task failed ELB health checks in (target-group tg)"
    ]
    assert said[0].startswith("📜 no log of task sick1: no such stream")


def test_tasks_stopped_by_the_deployment_only_explain_nothing_and_read_no_log(logs: Any) -> None:
    # one stopped by a deployment, one that failed before this deploy: no task definition is read
    ecs, stub = ecs_with([TASKS[0], TASKS[1]], read=False)
    said: list[str] = []
    with stub:
        found = explain_failed_service(ecs, logs, SERVICE_ARN, SINCE, container="backend", say=said.append)
        stub.assert_no_pending_responses()
    assert found == [] and said == []


def test_a_container_without_awslogs_gets_its_stop_reason_only(logs: Any) -> None:
    ecs, stub = ecs_with(TASKS, logging=False)
    said: list[str] = []
    with stub:
        found = explain_failed_service(ecs, logs, SERVICE_ARN, SINCE, container="backend", say=said.append)
    assert found == [
        "  2 tasks of car-rental-service failed, the last: crash2: Essential container in task exited; "
        "container backend: exit code 1"
    ]
    assert said == []


def test_a_service_arn_without_its_cluster_asks_nothing() -> None:
    ecs = new_session().client("ecs")
    with Stubber(ecs):  # any call would fail
        found = explain_failed_service(
            ecs, None, f"arn:aws:ecs:eu-west-1:{ACCOUNT}:service/{SERVICE}", SINCE, container="backend", say=print
        )
    assert found == []


def test_a_log_group_the_rollback_deleted_is_named_as_gone() -> None:
    with mock_aws():
        logs = new_session().client("logs")  # no group at all
        ecs, stub = ecs_with(TASKS)
        said: list[str] = []
        with stub:
            found = explain_failed_service(ecs, logs, SERVICE_ARN, SINCE, container="backend", say=said.append)
    assert found and said == [
        "📜 no log of task crash2: its log group is gone (a stack's rollback deletes the group it created) "
        f"(CloudWatch Logs {GROUP}, stream backend/backend/crash2)"
    ]


def test_a_task_that_failed_past_the_first_page_of_stopped_tasks_is_found(logs: Any) -> None:
    """ECS lists the stopped tasks of about an hour: 100 stopped by earlier deployments fill the first page, and the
    task that failed is on the second. Only the first page was read: the failure was explained by nothing."""
    old = [
        stopped(f"old{n}", 1, "ServiceSchedulerInitiated", "Task stopped by deployment ecs-svc/1") for n in range(100)
    ]
    crash = TASKS[3]
    ecs = new_session().client("ecs")
    stub = Stubber(ecs)
    listing = {"cluster": CLUSTER, "serviceName": SERVICE, "desiredStatus": "STOPPED"}
    stub.add_response("list_tasks", {"taskArns": [t["taskArn"] for t in old], "nextToken": "page2"}, listing)
    stub.add_response("list_tasks", {"taskArns": [crash["taskArn"]]}, {**listing, "nextToken": "page2"})
    stub.add_response("describe_tasks", {"tasks": old, "failures": []}, {"cluster": CLUSTER, "tasks": ANY})
    stub.add_response("describe_tasks", {"tasks": [crash], "failures": []}, {"cluster": CLUSTER, "tasks": ANY})
    options = {"awslogs-group": GROUP, "awslogs-stream-prefix": "backend", "awslogs-region": "eu-west-1"}
    container = {
        "name": "backend",
        "image": "repo:abc",
        "logConfiguration": {"logDriver": "awslogs", "options": options},
    }
    definition = {"taskDefinitionArn": TASKDEF, "family": "car-rental-backend", "containerDefinitions": [container]}
    stub.add_response("describe_task_definition", {"taskDefinition": definition, "tags": []}, None)
    with stub:
        found = explain_failed_service(ecs, logs, SERVICE_ARN, SINCE, container="backend", say=lambda _line: None)
        stub.assert_no_pending_responses()
    assert found == [
        "  1 task of car-rental-service failed, the last: crash2: Essential container in task exited; "
        "container backend: exit code 1; its last log line: RuntimeError: boom at import"
    ]


@pytest.mark.parametrize(
    ("code", "reason"),
    [
        ("SpotInterruption", "Your Spot Task was interrupted."),
        ("TerminationNotice", "Task stopped for maintenance"),
        ("InfrastructureHealth", "Task stopped due to an infrastructure health issue"),
    ],
)
def test_a_task_fargate_took_back_explains_nothing(logs: Any, code: str, reason: str) -> None:
    """Fargate Spot took its capacity back, or Fargate retired the task (SIGTERM's exit code): no failure of the
    service, as a person's stop; a task that crashed beside it is the one named."""
    taken = stopped("taken", 12, code, reason, 143)
    ecs, stub = ecs_with([TASKS[0], taken], read=False)
    with stub:
        found = explain_failed_service(ecs, logs, SERVICE_ARN, SINCE, container="backend", say=lambda _line: None)
        stub.assert_no_pending_responses()
    assert found == []

    ecs, stub = ecs_with([taken, TASKS[2]])
    with stub:
        found = explain_failed_service(ecs, logs, SERVICE_ARN, SINCE, container="backend", say=lambda _line: None)
    assert found == [
        "  1 task of car-rental-service failed, the last: crash1: Essential container in task exited; container "
        "backend: exit code 1; its last log line: first crash"
    ]


def test_a_task_a_person_stopped_explains_nothing_whatever_its_reason_says(logs: Any) -> None:
    """StopTask (stopCode UserInitiated) with the person's own reason, even one reading like ECS's failures, and the
    SIGTERM's exit code: no failure of the service. One whose essential container exited before someone stopped it
    keeps its stop code, EssentialContainerExited: it failed, and is the one named."""
    by_hand = stopped("byhand", 12, "UserInitiated", "Task failed to answer, stopped by alice", 143)
    ecs, stub = ecs_with([TASKS[0], by_hand], read=False)
    with stub:
        found = explain_failed_service(ecs, logs, SERVICE_ARN, SINCE, container="backend", say=lambda _line: None)
        stub.assert_no_pending_responses()
    assert found == []

    crashed_then_stopped = stopped("crash1", 5, "EssentialContainerExited", "Task stopped by user", 1)
    ecs, stub = ecs_with([by_hand, crashed_then_stopped])
    with stub:
        found = explain_failed_service(ecs, logs, SERVICE_ARN, SINCE, container="backend", say=lambda _line: None)
    assert found == [
        "  1 task of car-rental-service failed, the last: crash1: Task stopped by user; container backend: exit code "
        "1; its last log line: first crash"
    ]
