"""inv tasks: the service's tasks as rows (pure logic, no AWS)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from unittest.mock import Mock

import pytest

from deploykit import commands, ecs
from deploykit.errors import UsageError
from deploykit.task_list import _image_or_none, rows, table, why_stopped
from deploykit.testing import sample_env

T0 = datetime(2026, 12, 1, 6, 0, tzinfo=UTC)
TD = "arn:aws:ecs:eu-west-1:1:task-definition/app:{}"
IMAGES = {TD.format(4): "repo/app:old000000000", TD.format(5): "repo/app:new000000000"}
SERVICE = {
    "deployments": [
        {"id": "ecs-svc/5", "status": "PRIMARY", "taskDefinition": TD.format(5)},
        {"id": "ecs-svc/4", "status": "ACTIVE", "taskDefinition": TD.format(4)},
    ]
}


def task(
    n: int, revision: int, by: str, last: str = "RUNNING", desired: str = "RUNNING", **more: Any
) -> dict[str, Any]:
    return {
        "taskArn": f"arn:aws:ecs:eu-west-1:1:task/c/{n:032x}",
        "taskDefinitionArn": TD.format(revision),
        "startedBy": by,
        "lastStatus": last,
        "desiredStatus": desired,
        "startedAt": T0 + timedelta(minutes=n),
        **more,
    }


def test_running_tasks_come_first_newest_first_each_saying_who_started_it() -> None:
    tasks = [
        task(1, 4, "ecs-svc/4", desired="STOPPED", healthStatus="HEALTHY"),
        task(3, 5, "ecs-svc/5", healthStatus="HEALTHY"),
        task(2, 5, "deploykit-run", last="PENDING"),
        task(
            4,
            5,
            "ecs-svc/3",
            last="STOPPED",
            desired="STOPPED",
            stoppedAt=T0 + timedelta(minutes=9),
            stoppedReason="Essential container in task exited",
            containers=[{"name": "backend", "exitCode": 3}],
        ),
    ]
    targets = {tasks[1]["taskArn"]: "10.0.0.3:8000 healthy"}
    found = rows(SERVICE, tasks, IMAGES, targets)
    assert [(r.id[-1], r.started_by, r.status) for r in found] == [
        ("3", "PRIMARY deployment", "RUNNING"),
        ("2", "deploykit-run", "PENDING → RUNNING"),  # on its way
        ("1", "ACTIVE deployment", "RUNNING → STOPPED"),  # ECS is stopping it
        ("4", "an older deployment", "STOPPED"),
    ]
    assert (found[0].revision, found[0].image_tag, found[0].target, found[0].health) == (
        "app:5",
        "new000000000",
        "10.0.0.3:8000 healthy",
        "HEALTHY",
    )
    assert found[0].since == "2026-12-01T06:03:00Z" and found[3].since == "2026-12-01T06:09:00Z"
    assert found[3].detail == "backend exit 3; Essential container in task exited"
    assert rows(SERVICE, tasks, IMAGES, targets, stopped_shown=0)[-1].status == "RUNNING → STOPPED"
    assert "backend exit 3; Essential container" in table(found)


def test_why_a_task_stopped_puts_the_exit_codes_first() -> None:
    stopped = {
        "stoppedReason": "Task failed container health checks",
        "containers": [{"name": "backend", "exitCode": 137, "reason": "OutOfMemoryError"}, {"name": "sidecar"}],
    }
    assert why_stopped(stopped) == "backend exit 137, OutOfMemoryError; Task failed container health checks"
    assert why_stopped({}) == "no reason given"


def test_a_negative_count_of_stopped_tasks_is_refused_before_anything_is_read() -> None:
    with pytest.raises(UsageError, match="--stopped must be 0 or more") as refused:
        commands.tasks_list(stopped=-1, runtime=commands.Runtime(aws_factory=None))  # type: ignore[arg-type]
    assert refused.value.exit_code == 2


def test_a_stop_without_a_reason_says_its_code() -> None:
    """ECS gives a stopCode (SpotInterruption, TaskFailedToStart) where it gives no reason."""
    assert why_stopped({"stopCode": "SpotInterruption"}) == "SpotInterruption"


def test_a_revision_without_the_container_goes_without_an_image_not_the_whole_list() -> None:
    """A stopped task of a revision of before the container was renamed: its row has no image; the list was
    refused, telling to fix deploy.toml, which was right."""
    taskdefs = Mock(spec=ecs.TaskDefinitions)
    taskdefs.image.side_effect = UsageError("task definition app:2 has no container 'backend'")
    assert _image_or_none(taskdefs, TD.format(2), sample_env(container="backend")) is None


def test_a_task_of_another_service_of_the_family_is_named_by_its_service() -> None:
    service = {**SERVICE, "serviceName": "car-rental"}
    worker = task(1, 5, "ecs-svc/9", group="service:car-rental-worker")
    older = task(2, 4, "ecs-svc/3", group="service:car-rental")
    assert [r.started_by for r in rows(service, [worker, older], IMAGES, {})] == [
        "an older deployment",
        "service car-rental-worker",
    ]
