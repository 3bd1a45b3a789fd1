"""The sandbox's ECS and ALB observed from outside: rolling updates, the circuit breaker, scaling, lifecycle."""

from __future__ import annotations

import dataclasses
import json
import os
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest

from sandbox import lifecycle
from sandbox.settings import Settings, load_settings
from tests.integration.sandbox_support import (
    App,
    LoopingClient,
    aws_client,
    build_test_image,
    create_app,
    private_sandbox_files,
    version_of,
)

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("base_image")]


def _stat(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1].split()
    except (OSError, IndexError):
        return []


def start_time(pid: int) -> str:
    fields = _stat(pid)
    return fields[19] if len(fields) > 19 else ""


def process_state(pid: int) -> str:
    fields = _stat(pid)
    return fields[0] if fields else ""


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory, docker_engine: docker.DockerClient) -> Iterator[Settings]:
    path = private_sandbox_files(tmp_path_factory.mktemp("sandbox"))
    settings = load_settings(path)
    lifecycle.up(settings, path)
    yield settings
    lifecycle.down(settings)


@pytest.fixture(scope="module")
def images(docker_engine: docker.DockerClient, base_image: str) -> dict[str, str]:
    tag = f"sandbox-test/app:{os.getpid()}"
    build_test_image(docker_engine, tag)
    return {"app": tag}


def primary(service: dict[str, Any]) -> dict[str, Any]:
    return next(d for d in service["deployments"] if d["status"] == "PRIMARY")


def completed_on(arn: str) -> Any:
    def check(service: dict[str, Any]) -> bool:
        return (
            len(service["deployments"]) == 1
            and primary(service)["taskDefinition"] == arn
            and primary(service)["rolloutState"] == "COMPLETED"
        )

    return check


@pytest.fixture
def app(request: pytest.FixtureRequest, sandbox: Settings, images: dict[str, str]) -> Iterator[App]:
    name = request.node.name.replace("_", "-")[5:25].strip("-")
    app = create_app(sandbox, name, images["app"])
    first = app.describe()["taskDefinition"]
    app.wait(completed_on(first))
    assert version_of(app.listener_url) == "v1"
    yield app
    app.delete()


def test_a_rolling_update_overlaps_then_only_the_new_version_answers(app: App, images: dict[str, str]) -> None:
    client = LoopingClient(app.listener_url).start()
    v2 = app.task_definition(images["app"], VERSION="v2")
    answer = app.ecs.update_service(cluster=app.cluster, service=app.service, taskDefinition=v2)
    # the new PRIMARY deployment is there at once, beside the ACTIVE old one
    deployments = {d["status"]: d["taskDefinition"] for d in answer["service"]["deployments"]}
    assert deployments["PRIMARY"] == v2 and "ACTIVE" in deployments
    seen_both_deployments = False

    def done(service: dict[str, Any]) -> bool:
        nonlocal seen_both_deployments
        seen_both_deployments |= (
            len(service["deployments"]) == 2 and sum(d["runningCount"] for d in service["deployments"]) > 2
        )
        return completed_on(v2)(service)

    service = app.wait(done)
    client.stop()
    assert not client.failures, client.failures
    assert seen_both_deployments  # old and new tasks ran side by side (maximumPercent 200)
    first_v2 = client.answers.index("v2")
    assert "v1" in client.answers[first_v2:], "old and new versions overlapped behind the listener"
    assert {version_of(app.listener_url) for _ in range(20)} == {"v2"}
    assert service["runningCount"] == 2
    messages = [e["message"] for e in service["events"]]
    assert any("has reached a steady state" in m for m in messages)
    assert any("has begun draining connections" in m for m in messages)
    # the tasks of the old revision are stopped, the new ones run on their own ports
    running = app.ecs.list_tasks(cluster=app.cluster, serviceName=app.service, desiredStatus="RUNNING")["taskArns"]
    tasks = app.ecs.describe_tasks(cluster=app.cluster, tasks=running)["tasks"]
    assert {t["taskDefinitionArn"] for t in tasks} == {v2} and len(tasks) == 2
    assert len({t["containers"][0]["networkBindings"][0]["hostPort"] for t in tasks}) == 2
    health = app.elbv2.describe_target_health(TargetGroupArn=app.target_group)["TargetHealthDescriptions"]
    assert sorted(h["TargetHealth"]["State"] for h in health) == ["healthy", "healthy"]


def test_a_drain_ends_when_nothing_is_in_flight_and_lasts_as_long_as_a_request_that_is(
    app: App, images: dict[str, str]
) -> None:
    """AWS: a deregistering target with no request in flight is done at once, not after the delay."""
    app.elbv2.modify_target_group_attributes(
        TargetGroupArn=app.target_group, Attributes=[{"Key": "deregistration_delay.timeout_seconds", "Value": "60"}]
    )
    v1 = app.describe()["taskDefinition"]
    old_tasks = app.ecs.list_tasks(cluster=app.cluster, serviceName=app.service)["taskArns"]
    slow: dict[str, Any] = {}

    def slow_request() -> None:  # lands on one of the two old tasks, the only targets yet
        with urllib.request.urlopen(f"{app.listener_url}/slow/10", timeout=30) as answer:
            slow.update(status=answer.status, version=json.load(answer)["version"], done=time.time())

    thread = threading.Thread(target=slow_request, daemon=True)
    thread.start()
    time.sleep(0.5)
    started = time.monotonic()
    v2 = app.task_definition(images["app"], VERSION="v2")
    app.ecs.update_service(cluster=app.cluster, service=app.service, taskDefinition=v2)
    app.wait(completed_on(v2))
    took = time.monotonic() - started
    thread.join(timeout=30)
    assert slow == {"status": 200, "version": "v1", "done": slow["done"]}, "the request in flight was cut"
    stopped = sorted(
        t["stoppedAt"].timestamp() for t in app.ecs.describe_tasks(cluster=app.cluster, tasks=old_tasks)["tasks"]
    )
    assert len(stopped) == 2 and v1 != v2
    # the idle old task stopped as soon as it was deregistered, seconds before the slow request ended ...
    assert stopped[0] < slow["done"] - 2, (stopped, slow["done"])
    # ... the busy one only once its request was answered, and neither waited for the 60 s delay
    assert stopped[1] >= slow["done"] - 0.5, (stopped, slow["done"])
    assert took < 30, f"the rollout took {took:.1f}s: a drain waited for its delay"


def test_a_crashing_release_trips_the_circuit_breaker_and_the_old_one_keeps_serving(
    app: App, images: dict[str, str]
) -> None:
    v1 = app.describe()["taskDefinition"]
    client = LoopingClient(app.listener_url).start()
    logs = aws_client(app.settings, "logs")
    group = f"/ecs/{app.family}"
    logs.create_log_group(logGroupName=group)
    crash = app.task_definition(images["app"], log_group=group, VERSION="crash", MODE="crash")
    app.ecs.update_service(cluster=app.cluster, service=app.service, taskDefinition=crash)
    failed = app.wait(lambda s: any(d["rolloutState"] == "FAILED" for d in s["deployments"]))
    bad = next(d for d in failed["deployments"] if d["rolloutState"] == "FAILED")
    assert bad["taskDefinition"] == crash and "circuit breaker" in bad["rolloutStateReason"]
    assert bad["failedTasks"] >= 3
    service = app.wait(completed_on(v1))
    client.stop()
    assert not client.failures, client.failures
    assert set(client.answers) == {"v1"}
    assert service["taskDefinition"] == v1
    messages = [e["message"] for e in service["events"]]
    assert any("deployment failed: tasks failed to start" in m for m in messages)
    assert any("rolling back to deployment" in m for m in messages)
    stopped = app.ecs.list_tasks(cluster=app.cluster, serviceName=app.service, desiredStatus="STOPPED")["taskArns"]
    reasons = {
        (t["stoppedReason"], t["containers"][0].get("exitCode"))
        for t in app.ecs.describe_tasks(cluster=app.cluster, tasks=stopped)["tasks"]
        if t["taskDefinitionArn"] == crash
    }
    assert ("Essential container in task exited", 3) in reasons
    # awslogs: each crashed task's output is in its own stream, <prefix>/<container>/<task id>
    crashed = [
        t
        for t in app.ecs.describe_tasks(cluster=app.cluster, tasks=stopped)["tasks"]
        if t["taskDefinitionArn"] == crash
    ]
    for task in crashed:
        stream = f"app/backend/{task['taskArn'].rsplit('/', 1)[-1]}"
        events = logs.get_log_events(logGroupName=group, logStreamName=stream)["events"]
        assert [e["message"] for e in events] == ["crashing on purpose"], (stream, events)


def test_a_task_that_exits_after_it_was_registered_leaves_no_target_behind(app: App, images: dict[str, str]) -> None:
    """As ECS deregisters a stopped task's targets: a release whose tasks exit once registered leaves none of their
    targets registered (draining, then gone), so the next task given the port starts as a new target."""
    v1 = app.describe()["taskDefinition"]
    later = app.task_definition(images["app"], VERSION="crash-later", MODE="crash-later")
    app.ecs.update_service(cluster=app.cluster, service=app.service, taskDefinition=later)
    app.wait(lambda s: any(d["rolloutState"] == "FAILED" for d in s["deployments"]), timeout=120)
    service = app.wait(completed_on(v1))
    messages = [e["message"] for e in service["events"]]
    assert any("registered 1 targets" in m for m in messages)
    health = app.elbv2.describe_target_health(TargetGroupArn=app.target_group)["TargetHealthDescriptions"]
    states = sorted(h["TargetHealth"]["State"] for h in health)
    assert set(states) <= {"healthy", "draining"} and states.count("healthy") == service["desiredCount"], health


def test_a_release_whose_log_group_does_not_exist_never_starts(app: App, images: dict[str, str]) -> None:
    v1 = app.describe()["taskDefinition"]
    lost = app.task_definition(images["app"], log_group="/ecs/never-created", VERSION="lost")
    app.ecs.update_service(cluster=app.cluster, service=app.service, taskDefinition=lost)
    app.wait(lambda s: any(d["rolloutState"] == "FAILED" for d in s["deployments"]))
    app.wait(lambda s: primary(s)["taskDefinition"] == v1 and primary(s)["rolloutState"] == "COMPLETED")
    stopped = app.ecs.list_tasks(cluster=app.cluster, serviceName=app.service, desiredStatus="STOPPED")["taskArns"]
    reasons = {
        (t["stopCode"], t["stoppedReason"])
        for t in app.ecs.describe_tasks(cluster=app.cluster, tasks=stopped)["tasks"]
        if t["taskDefinitionArn"] == lost
    }
    assert reasons and all(code == "TaskFailedToStart" for code, _ in reasons), reasons
    assert all(r.startswith("ResourceInitializationError") and "/ecs/never-created" in r for _, r in reasons)


def test_a_release_that_never_becomes_healthy_is_rolled_back(app: App, images: dict[str, str]) -> None:
    v1 = app.describe()["taskDefinition"]
    client = LoopingClient(app.listener_url).start()
    sick = app.task_definition(images["app"], VERSION="sick", MODE="sick")
    app.ecs.update_service(cluster=app.cluster, service=app.service, taskDefinition=sick)
    app.wait(lambda s: any(d["rolloutState"] == "FAILED" for d in s["deployments"]), timeout=120)
    app.wait(completed_on(v1))
    client.stop()
    assert not client.failures, client.failures
    assert "sick" not in client.answers  # never routed to: it never passed a health check
    stopped = app.ecs.list_tasks(cluster=app.cluster, serviceName=app.service, desiredStatus="STOPPED")["taskArns"]
    reasons = {t["stoppedReason"] for t in app.ecs.describe_tasks(cluster=app.cluster, tasks=stopped)["tasks"]}
    assert any(r.startswith("Task failed ELB health checks") for r in reasons), reasons


def test_desired_count_changes_scale(app: App) -> None:
    app.ecs.update_service(cluster=app.cluster, service=app.service, desiredCount=3)
    service = app.wait(lambda s: s["runningCount"] == 3 and primary(s)["rolloutState"] == "COMPLETED")
    assert primary(service)["desiredCount"] == 3
    health = app.elbv2.describe_target_health(TargetGroupArn=app.target_group)["TargetHealthDescriptions"]
    assert [h["TargetHealth"]["State"] for h in health].count("healthy") == 3
    app.ecs.update_service(cluster=app.cluster, service=app.service, desiredCount=1)
    app.wait(
        lambda s: (
            s["runningCount"] == 1
            and len(
                app.ecs.list_tasks(cluster=app.cluster, serviceName=app.service, desiredStatus="RUNNING")["taskArns"]
            )
            == 1
        )
    )


def test_status_lists_every_part_healthy_and_down_leaves_nothing_behind(
    tmp_path: Path, docker_engine: docker.DockerClient, images: dict[str, str]
) -> None:
    path = private_sandbox_files(tmp_path / "own")
    settings = load_settings(path)
    assert lifecycle.up(settings, path) == ["registry", "sandbox"]
    assert lifecycle.up(settings, path) == []  # idempotent
    # a second checkout of the project on the same ports (another clone, a worktree) uses this one's sandbox: it
    # starts nothing (its server would only find the port taken), says whose it is, and its down stops nothing
    other = dataclasses.replace(settings, root=tmp_path / "other")
    assert lifecycle.started_elsewhere(settings) == [] and lifecycle.is_up(other)
    assert lifecycle.up(other, path) == [] and lifecycle.started_elsewhere(other) == ["registry", "sandbox"]
    details = {r["part"]: r["detail"] for r in lifecycle.status(other)}
    assert details["registry (distribution)"] == "started by another checkout"
    assert details["aws endpoint"].endswith(", started by another checkout")
    assert lifecycle.down(other) == [] and lifecycle.is_up(settings)
    with pytest.raises(lifecycle.SandboxError, match="started by another checkout"):
        lifecycle.reset(other, path)  # not its state to forget
    assert lifecycle.is_up(settings) and lifecycle.started_elsewhere(settings) == []
    assert not (tmp_path / "other" / ".sandbox" / "sandbox.pid").exists()
    rows = lifecycle.status(settings)
    assert {r["part"] for r in rows} >= {"docker engine", "registry (distribution)", "aws endpoint", "ecs runtime"}
    assert all(r["healthy"] for r in rows), rows
    app = create_app(settings, "life", images["app"], desired=1)
    app.wait(lambda s: s["runningCount"] == 1)
    pids = [p.pid() for p in lifecycle.processes(settings)]
    assert all(pids)
    started = {pid: start_time(pid) for pid in pids if pid is not None}
    assert sorted(lifecycle.down(settings)) == ["registry", "sandbox"]
    for pid, start in started.items():
        # gone, or a zombie, or its pid already taken by another process (pid_max can be 32768 here)
        assert start_time(pid) != start or process_state(pid) == "Z", f"process {pid} is still running"
    label = f"io.deploykit.sandbox={settings.state_dir}"
    assert docker_engine.containers.list(all=True, sparse=True, filters={"label": label}) == []
    assert not lifecycle.is_up(settings)


def _stopped_task(app: App, arn: str, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        task = app.ecs.describe_tasks(cluster=app.cluster, tasks=[arn])["tasks"][0]
        if task["lastStatus"] == "STOPPED":
            return dict(task)
        assert time.monotonic() < deadline, task
        time.sleep(0.2)


def test_a_task_of_its_own_runs_its_command_and_stops_with_its_exit_code(app: App, images: dict[str, str]) -> None:
    logs = aws_client(app.settings, "logs")
    group = "/ecs/run-task-test"
    logs.create_log_group(logGroupName=group)
    definition = app.task_definition(images["app"], log_group=group, GREETING="from the task definition")
    command = ["python3", "-c", "import os, sys; print(os.environ['GREETING'], os.environ['EXTRA']); sys.exit(3)"]
    answer = app.ecs.run_task(
        cluster=app.cluster,
        taskDefinition=definition,
        launchType="FARGATE",
        startedBy="deploykit-release",
        networkConfiguration={"awsvpcConfiguration": {"subnets": [app.subnet], "securityGroups": [app.security_group]}},
        overrides={
            "containerOverrides": [
                {"name": "backend", "command": command, "environment": [{"name": "EXTRA", "value": "overridden"}]}
            ]
        },
    )
    assert answer["failures"] == []
    (started,) = answer["tasks"]
    assert started["group"] == f"family:{app.family}" and started["startedBy"] == "deploykit-release"
    task = _stopped_task(app, started["taskArn"])
    assert task["stopCode"] == "EssentialContainerExited"
    assert task["containers"][0]["exitCode"] == 3
    assert task["overrides"]["containerOverrides"][0]["command"] == command
    # not one of the service's tasks; listed by its family and by who started it
    service_tasks = app.ecs.list_tasks(cluster=app.cluster, serviceName=app.service, desiredStatus="STOPPED")
    assert started["taskArn"] not in service_tasks["taskArns"]
    listed = app.ecs.list_tasks(cluster=app.cluster, startedBy="deploykit-release", desiredStatus="STOPPED")
    assert listed["taskArns"] == [started["taskArn"]]
    stream = f"app/backend/{started['taskArn'].rsplit('/', 1)[-1]}"
    events = logs.get_log_events(logGroupName=group, logStreamName=stream)["events"]
    assert [e["message"] for e in events] == ["from the task definition overridden"]
    assert app.describe()["runningCount"] == 2  # the service did not notice


def test_a_tasks_secrets_reach_its_container_and_a_missing_one_keeps_it_from_starting(
    app: App, images: dict[str, str]
) -> None:
    """The container gets its secrets as environment variables (an SSM parameter, one JSON key of a Secrets
    Manager secret), fetched as it starts; a task whose secret is missing does not start, stopped with ECS's
    ResourceInitializationError, as on Fargate."""
    logs, ssm = aws_client(app.settings, "logs"), aws_client(app.settings, "ssm")
    group = "/ecs/secrets-test"
    logs.create_log_group(logGroupName=group)
    ssm.put_parameter(Name="/car-rental/partner-key", Value="pk-1", Type="SecureString")
    secret = aws_client(app.settings, "secretsmanager").create_secret(
        Name="car-rental-db", SecretString=json.dumps({"password": "pw-1"})
    )["ARN"]
    command = ["python3", "-c", "import os; print(os.environ['PARTNER_KEY'], os.environ['DB_PASSWORD'])"]
    network = {"awsvpcConfiguration": {"subnets": [app.subnet], "securityGroups": [app.security_group]}}

    def run(secrets: dict[str, str]) -> dict[str, Any]:
        definition = app.task_definition(images["app"], log_group=group, secrets=secrets)
        overrides = {"containerOverrides": [{"name": "backend", "command": command}]}
        answer = app.ecs.run_task(
            cluster=app.cluster, taskDefinition=definition, networkConfiguration=network, overrides=overrides
        )
        return _stopped_task(app, answer["tasks"][0]["taskArn"])

    task = run({"PARTNER_KEY": "/car-rental/partner-key", "DB_PASSWORD": f"{secret}:password::"})
    assert task["stopCode"] == "EssentialContainerExited" and task["containers"][0]["exitCode"] == 0
    stream = f"app/backend/{task['taskArn'].rsplit('/', 1)[-1]}"
    events = logs.get_log_events(logGroupName=group, logStreamName=stream)["events"]
    assert [e["message"] for e in events] == ["pk-1 pw-1"]

    task = run({"PARTNER_KEY": "/car-rental/no-such-key", "DB_PASSWORD": f"{secret}:password::"})
    assert task["stopCode"] == "TaskFailedToStart"
    assert task["stoppedReason"].startswith("ResourceInitializationError: unable to pull secrets or registry auth")
    assert "/car-rental/no-such-key" in task["stoppedReason"]


def test_a_task_of_its_own_is_stopped_by_stop_task(
    app: App, images: dict[str, str], docker_engine: docker.DockerClient
) -> None:
    definition = app.task_definition(images["app"])
    answer = app.ecs.run_task(
        cluster=app.cluster,
        taskDefinition=definition,
        overrides={"containerOverrides": [{"name": "backend", "command": ["sleep", "600"]}]},
    )
    arn = answer["tasks"][0]["taskArn"]
    deadline = time.monotonic() + 30
    while app.ecs.describe_tasks(cluster=app.cluster, tasks=[arn])["tasks"][0]["lastStatus"] != "RUNNING":
        assert time.monotonic() < deadline
        time.sleep(0.2)
    app.ecs.stop_task(cluster=app.cluster, task=arn, reason="deadline passed")
    task = _stopped_task(app, arn)
    assert task["stopCode"] == "UserInitiated"
    assert task["stoppedReason"] == "Task stopped by user: deadline passed"
    deadline = time.monotonic() + 20  # its container is stopped (SIGTERM, then SIGKILL after 5 s) and removed
    # sparse: the SDK's full listing inspects each container after listing it, and one removed in between is a 404
    while docker_engine.containers.list(all=True, sparse=True, filters={"label": f"io.deploykit.task-arn={arn}"}):
        assert time.monotonic() < deadline, "the stopped task's container is still there"
        time.sleep(0.3)
