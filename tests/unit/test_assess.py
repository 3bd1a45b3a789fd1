"""wait-healthy's verdict on one snapshot of a service (pure logic, no AWS)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from deploykit.ecs import (
    REGISTER_FIELDS,
    Snapshot,
    TargetState,
    assess,
    derive_registration,
    our_deployments,
    same_registration,
    task_endpoints,
)

OLD, NEW = "arn:aws:ecs:us-east-1:1:task-definition/app:4", "arn:aws:ecs:us-east-1:1:task-definition/app:5"
IMAGE = "repo/app:new"
IMAGES = {OLD: "repo/app:old", NEW: IMAGE}


def dep(arn: str, status: str, rollout: str, running: int = 2, desired: int = 2, **extra: Any) -> dict[str, Any]:
    return {
        "id": f"ecs-svc/{arn[-1]}",
        "taskDefinition": arn,
        "status": status,
        "rolloutState": rollout,
        "runningCount": running,
        "desiredCount": desired,
        **extra,
    }


def snap(
    *deployments: dict[str, Any],
    running: int = 2,
    targets: list[TargetState] | None = None,
    expected: int = 0,
    stopped: list[dict[str, Any]] | None = None,
    events: list[Any] | None = None,
) -> Snapshot:
    service = {
        "desiredCount": 2,
        "runningCount": running,
        "deployments": list(deployments),
        "events": events or [],
    }
    return Snapshot(service, IMAGES, [], stopped or [], targets or [], expected)


def test_in_progress_is_waiting() -> None:
    verdict = assess(
        snap(dep(NEW, "PRIMARY", "IN_PROGRESS", 1), dep(OLD, "ACTIVE", "COMPLETED")),
        IMAGE,
        seen_ours_primary=False,
    )
    assert verdict.state == "waiting" and "IN_PROGRESS" in verdict.reason


def test_completed_with_healthy_targets_is_healthy() -> None:
    targets = [TargetState("10.0.0.1:8000", "healthy"), TargetState("10.0.0.2:8000", "healthy")]
    verdict = assess(snap(dep(NEW, "PRIMARY", "COMPLETED"), targets=targets, expected=2), IMAGE, seen_ours_primary=True)
    assert verdict.state == "healthy"
    assert "targets 2/2 healthy" in verdict.summary


def test_completed_but_targets_not_healthy_keeps_waiting_and_says_why() -> None:
    targets = [TargetState("10.0.0.1:8000", "healthy"), TargetState("10.0.0.2:8000", "unhealthy", "HTTP 500")]
    verdict = assess(snap(dep(NEW, "PRIMARY", "COMPLETED"), targets=targets, expected=2), IMAGE, seen_ours_primary=True)
    assert verdict.state == "waiting" and "10.0.0.2:8000 unhealthy: HTTP 500" in verdict.reason
    verdict = assess(
        snap(dep(NEW, "PRIMARY", "COMPLETED"), targets=targets[:1], expected=2), IMAGE, seen_ours_primary=True
    )
    assert verdict.state == "waiting" and "1 target(s) not registered yet" in verdict.reason


def test_a_service_that_wants_no_task_is_never_healthy() -> None:
    """Rolled, 0 of 0 running: every check passes with nothing run (scaled to 0 by hand or its autoscaling)."""
    found = snap(dep(NEW, "PRIMARY", "COMPLETED", 0, 0), running=0)
    found.service["desiredCount"] = 0
    verdict = assess(found, IMAGE, seen_ours_primary=True)
    assert verdict.state == "failed" and not verdict.not_asked
    assert verdict.reason == f"the service wants 0 tasks: no task runs {IMAGE}, nothing to verify it by"


def test_a_rollback_event_older_than_the_primary_deployment_is_not_of_this_rollout() -> None:
    """inv wait-healthy before any roll-service: the service runs the old image. ECS keeps days of events: a circuit
    breaker's rollback three days ago, before the PRIMARY deployment was made, does not make it a failed rollout
    (exit 1), it is bad input (exit 2); one as the PRIMARY was made, is."""
    made = datetime(2026, 12, 1, tzinfo=UTC)
    message = "(service s) (deployment ecs-svc/3) deployment failed: tasks failed to start, rolling back to ecs-svc/2."
    for when, asked in ((made - timedelta(days=3), False), (made + timedelta(seconds=2), True), (None, True)):
        found = snap(dep(OLD, "PRIMARY", "COMPLETED", createdAt=made), events=[{"message": message, "createdAt": when}])
        verdict = assess(found, IMAGE, seen_ours_primary=False)
        assert verdict.state == "failed" and "not rolling out" in verdict.reason
        assert verdict.not_asked is not asked, when


def test_running_below_desired_keeps_waiting() -> None:
    verdict = assess(snap(dep(NEW, "PRIMARY", "COMPLETED", 1), running=1), IMAGE, seen_ours_primary=True)
    assert verdict.state == "waiting" and "running 1 of 2" in verdict.reason


def test_failed_rollout_fails_with_its_reason() -> None:
    verdict = assess(
        snap(dep(NEW, "PRIMARY", "FAILED", rolloutStateReason="tasks failed to start")),
        IMAGE,
        seen_ours_primary=True,
    )
    assert verdict.state == "failed" and "tasks failed to start" in verdict.reason


def test_circuit_breaker_rollback_is_a_failure_never_a_success() -> None:
    # ECS rolled back: the old revision is PRIMARY again (and COMPLETED, healthy) — still a failure.
    events = [
        {
            "id": "e1",
            "message": "(service app) (deployment ecs-svc/5) deployment failed: tasks failed to start.",
        }
    ]
    verdict = assess(snap(dep(OLD, "PRIMARY", "COMPLETED"), events=events), IMAGE, seen_ours_primary=True)
    assert verdict.state == "failed"
    assert "circuit breaker rolled the service back to app:4 (old)" in verdict.reason
    assert "tasks failed to start" in verdict.reason
    verdict = assess(
        snap(
            dep(OLD, "PRIMARY", "IN_PROGRESS"),
            dep(NEW, "ACTIVE", "FAILED", rolloutStateReason="circuit breaker"),
        ),
        IMAGE,
        seen_ours_primary=False,
    )
    assert verdict.state == "failed" and "rolled the service back" in verdict.reason


def test_an_accepted_update_whose_deployment_is_not_listed_yet_is_waited_for() -> None:
    snapshot = snap(dep(OLD, "PRIMARY", "COMPLETED"))
    snapshot.service["taskDefinition"] = NEW
    verdict = assess(snapshot, IMAGE, seen_ours_primary=False)
    assert verdict.state == "waiting" and "has not started" in verdict.reason


def test_a_service_that_never_rolled_to_us_is_reported() -> None:
    verdict = assess(snap(dep(OLD, "PRIMARY", "COMPLETED")), IMAGE, seen_ours_primary=False)
    assert verdict.state == "failed" and "not rolling out" in verdict.reason


def test_stopped_new_task_fails_with_its_reason() -> None:
    stopped = [
        {
            "taskArn": "arn:task/abc",
            "stoppedReason": "Essential container in task exited",
            "containers": [{"name": "backend", "exitCode": 3, "reason": "CannotStartContainerError"}],
        }
    ]
    verdict = assess(snap(dep(NEW, "PRIMARY", "IN_PROGRESS", 0), stopped=stopped), IMAGE, seen_ours_primary=True)
    assert verdict.state == "failed"
    assert "abc: Essential container in task exited" in verdict.reason and "exit code 3" in verdict.reason


def test_task_endpoints_cover_awsvpc_and_host_bindings() -> None:
    awsvpc = {
        "attachments": [{"details": [{"name": "privateIPv4Address", "value": "10.0.1.7"}]}],
        "containers": [],
    }
    assert task_endpoints(awsvpc, 8000) == {("10.0.1.7", 8000)}
    host = {"containers": [{"networkBindings": [{"bindIP": "127.0.0.1", "hostPort": 20001, "containerPort": 20001}]}]}
    assert task_endpoints(host, 8000) == {("127.0.0.1", 20001)}


def test_registration_changes_only_the_image_and_tags_the_sha() -> None:
    current = {
        "family": "app",
        "revision": 4,
        "taskDefinitionArn": OLD,
        "status": "ACTIVE",
        "cpu": "256",
        "memory": "512",
        "networkMode": "awsvpc",
        "requiresCompatibilities": ["FARGATE"],
        "executionRoleArn": "arn:role/x",
        "containerDefinitions": [
            {
                "name": "backend",
                "image": "repo/app:old",
                "environment": [{"name": "A", "value": "1"}],
                "secrets": [{"name": "S", "valueFrom": "arn:ssm"}],
                "healthCheck": {"command": ["CMD", "true"]},
                "logConfiguration": {"logDriver": "awslogs", "options": {"awslogs-group": "g"}},
            },
            {"name": "sidecar", "image": "envoy:1"},
        ],
    }
    kwargs = derive_registration(current, [{"key": "team", "value": "cars"}], "backend", IMAGE, "f" * 40)
    assert kwargs["containerDefinitions"][0]["image"] == IMAGE
    assert kwargs["containerDefinitions"][0]["secrets"] == current["containerDefinitions"][0]["secrets"]
    assert kwargs["containerDefinitions"][1]["image"] == "envoy:1"
    assert current["containerDefinitions"][0]["image"] == "repo/app:old"  # not mutated
    assert "revision" not in kwargs and "status" not in kwargs and "taskDefinitionArn" not in kwargs
    assert {"key": "deploykit:git-sha", "value": "f" * 40} in kwargs["tags"]
    assert {"key": "team", "value": "cars"} in kwargs["tags"]
    same = derive_registration(current, [], "backend", IMAGE, "other")
    assert same_registration(kwargs, same)
    assert not same_registration(kwargs, derive_registration(current, [], "backend", "repo/app:other", "x"))


def test_a_circuit_breaker_rollback_is_flagged_as_done_by_ecs() -> None:
    verdict = assess(
        snap(dep(OLD, "PRIMARY", "IN_PROGRESS"), dep(NEW, "ACTIVE", "FAILED", 0, rolloutStateReason="tasks failed")),
        IMAGE,
        seen_ours_primary=True,
    )
    assert verdict.state == "failed" and verdict.rolled_back_by_ecs
    assert "circuit breaker rolled the service back" in verdict.reason
    # a release that failed on its own (still PRIMARY) is not one ECS put back
    verdict = assess(snap(dep(NEW, "PRIMARY", "FAILED", 0)), IMAGE, seen_ours_primary=True)
    assert verdict.state == "failed" and not verdict.rolled_back_by_ecs


def test_rolling_back_to_an_image_an_older_deployment_still_runs() -> None:
    """A rollback's fresh revision runs the image of the COMPLETED deployment it replaces: that one draining (and
    its tasks stopping) is not our release failing."""
    back = "arn:aws:ecs:us-east-1:1:task-definition/app:6"
    images = {**IMAGES, back: "repo/app:old"}
    service = {
        "desiredCount": 2,
        "runningCount": 4,
        "deployments": [dep(back, "PRIMARY", "IN_PROGRESS"), dep(OLD, "ACTIVE", "COMPLETED")],
        "events": [],
    }
    verdict = assess(Snapshot(service, images, [], [], [], 0), "repo/app:old", seen_ours_primary=True)
    assert verdict.state == "waiting" and "IN_PROGRESS" in verdict.reason
    assert [d["taskDefinition"] for d in our_deployments(service, images, "repo/app:old")] == [back]


# -- a restart: the deployment waited for by its id (the one it replaces runs the same revision) ------------------

OLD_IMAGE = IMAGES[OLD]


def test_a_restart_waits_for_its_own_deployment_though_the_old_one_runs_the_same_revision_completed() -> None:
    old = dep(OLD, "ACTIVE", "COMPLETED")
    fresh = dep(OLD, "PRIMARY", "IN_PROGRESS", 0, id="ecs-svc/fresh")
    verdict = assess(snap(fresh, old), OLD_IMAGE, seen_ours_primary=False, deployment="ecs-svc/fresh")
    assert verdict.state == "waiting" and "IN_PROGRESS" in verdict.reason
    # by the image alone the COMPLETED old deployment is no one's, and the new one is just "a rollout"
    assert our_deployments(snap(fresh, old).service, IMAGES, OLD_IMAGE, "ecs-svc/fresh") == [fresh]
    done = dep(OLD, "PRIMARY", "COMPLETED", id="ecs-svc/fresh")
    assert assess(snap(done), OLD_IMAGE, seen_ours_primary=True, deployment="ecs-svc/fresh").state == "healthy"


def test_a_restart_whose_deployment_is_not_listed_yet_waits_and_one_replaced_after_it_was_seen_fails() -> None:
    steady = dep(OLD, "PRIMARY", "COMPLETED")  # the same revision, PRIMARY: by the image it would be done
    waiting = assess(snap(steady), OLD_IMAGE, seen_ours_primary=False, deployment="ecs-svc/fresh")
    assert waiting.state == "waiting" and "ecs-svc/fresh" in waiting.reason and "not listed yet" in waiting.reason
    replaced = assess(snap(steady), OLD_IMAGE, seen_ours_primary=True, deployment="ecs-svc/fresh")
    assert replaced.state == "failed" and replaced.rolled_back_by_ecs
    assert replaced.reason.startswith("deployment ecs-svc/fresh was replaced by ecs-svc/4 of app:4 (old)")


def test_every_setting_a_task_definition_gives_back_to_registertaskdefinition_is_carried() -> None:
    """The new revision is the old one with one image changed: a setting DescribeTaskDefinition gives and
    RegisterTaskDefinition takes that is not carried is dropped from the service at the next deploy (the trusted
    execution of ECS Managed Instances: its isolation mode and attestation policy)."""
    import botocore.session

    model = botocore.session.get_session().get_service_model("ecs")
    given = set(model.shape_for("TaskDefinition").members)
    taken = set(model.operation_model("RegisterTaskDefinition").input_shape.members) - {"tags"}
    current = {
        "family": "app",
        "taskDefinitionArn": OLD,
        "containerDefinitions": [{"name": "backend", "image": "repo/app:old"}],
        "trustedExecutionConfiguration": {"isolationMode": "ISOLATED_SANDBOX"},
    }
    kwargs = derive_registration(current, [], "backend", IMAGE, "f" * 40)
    assert kwargs["trustedExecutionConfiguration"] == {"isolationMode": "ISOLATED_SANDBOX"}
    assert (given & taken) - set(REGISTER_FIELDS) == set()
