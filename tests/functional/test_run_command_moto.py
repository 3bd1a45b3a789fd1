"""inv run: a command once in a one-off task of the revision the service runs, its output followed from CloudWatch
Logs, its exit code the command's. moto holds the service, its revisions and the log; :class:`Agent` answers for the
one-off task (moto cannot run one of an awsvpc task definition)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from deploykit import commands
from deploykit.aws import AwsFactory
from deploykit.clock import FakeClock
from deploykit.errors import StepFailed, UsageError
from tests.conftest import git
from tests.functional.conftest import create_service, moto_runtime, put_image
from tests.functional.test_release_moto import RUNS, Agent

NOW = datetime.now(UTC)
GROUP = "/ecs/car-rental"  # the functional CONTAINER's awslogs group, streams backend/backend/<task id>


class Writing(Agent):
    """An agent whose task writes ``lines`` to its awslogs stream as it starts."""

    def __init__(self, factory: AwsFactory, lines: list[str], code: int | None = 0, **kwargs: Any) -> None:
        super().__init__(factory, code, **kwargs)
        self.logs = factory.client("logs")
        self.lines = lines

    def _ran(self, params: dict[str, Any], **kwargs: Any) -> None:
        super()._ran(params, **kwargs)
        stream = f"backend/backend/{list(self.tasks)[-1].rsplit('/', 1)[-1]}"
        self.logs.create_log_stream(logGroupName=GROUP, logStreamName=stream)
        start = int(NOW.timestamp() * 1000)  # CloudWatch Logs takes no event older than 14 days
        events = [{"timestamp": start + i, "message": line} for i, line in enumerate(self.lines)]
        if events:
            self.logs.put_log_events(logGroupName=GROUP, logStreamName=stream, logEvents=events)


def runtime(project: Path, factory: AwsFactory) -> commands.Runtime:
    return moto_runtime(project, factory, clock=FakeClock(start=NOW))


@pytest.fixture
def service(factory: AwsFactory) -> dict[str, Any]:
    taskdef = create_service(factory, RUNS)
    factory.client("logs").create_log_group(logGroupName=GROUP)
    return taskdef


def test_the_command_runs_in_the_revision_the_service_runs_and_its_output_is_shown(
    project: Path, factory: AwsFactory, service: dict[str, Any]
) -> None:
    agent = Writing(factory, ["reindexing 42 cars", "done"])
    rt = runtime(project, factory)
    result = commands.run_command("python -m app.admin reindex --all", env="dev", runtime=rt)
    (ran,) = agent.run
    assert ran["taskDefinition"] == service["taskDefinitionArn"]  # what the service runs, not a new revision
    assert ran["overrides"]["containerOverrides"] == [
        {"name": "backend", "command": ["python", "-m", "app.admin", "reindex", "--all"]}
    ]
    assert ran["startedBy"] == "deploykit-run" and ran["networkConfiguration"]["awsvpcConfiguration"]["subnets"]
    assert rt.stdout.getvalue() == "reindexing 42 cars\ndone\n"  # type: ignore[attr-defined]
    said = rt.stderr.getvalue()  # type: ignore[attr-defined]
    assert "🏃 python -m app.admin reindex --all in dev: task " in said and "(old), beside car-rental-service" in said
    assert "✅ exited 0 after 2.0s" in said
    assert result["exit_code"] == 0 and result["ok"] and result["image_tag"] == "old"


def test_a_log_that_cannot_be_read_leaves_the_command_running(project: Path, factory: AwsFactory) -> None:
    """Its log group missing (or CloudWatch Logs unreachable): said once, and the command runs to its end; the
    task was stopped, the run exit 2 (1), a backfill killed over its output."""
    create_service(factory, RUNS)  # no log group
    agent = Agent(factory, 0)
    rt = runtime(project, factory)
    result = commands.run_command("python -m app.admin reindex", env="dev", runtime=rt)
    said = rt.stderr.getvalue()  # type: ignore[attr-defined]
    assert result["exit_code"] == 0 and result["ok"] and not agent.stopped
    assert said.count("(its output cannot be read now: log group /ecs/car-rental") == 1
    assert "✅ exited 0" in said


def test_a_failing_command_fails_the_run_with_its_exit_code_and_json_says_it(
    project: Path, factory: AwsFactory, service: dict[str, Any]
) -> None:
    Writing(factory, ["boom"], 2)
    rt = runtime(project, factory)
    with pytest.raises(StepFailed, match=r"^python -m app\.admin exited with code 2 after 2\.0s in task \w+ of dev\n"):
        commands.run_command("python -m app.admin", env="dev", as_json=True, runtime=rt)
    document = json.loads(rt.stdout.getvalue())  # type: ignore[attr-defined]
    assert (document["exit_code"], document["ok"], document["command"]) == (2, False, ["python", "-m", "app.admin"])
    assert "boom\n" in rt.stderr.getvalue()  # type: ignore[attr-defined]  # its output on stderr, stdout is JSON


def test_a_command_past_its_timeout_is_stopped(project: Path, factory: AwsFactory, service: dict[str, Any]) -> None:
    agent = Writing(factory, [], ends=False)
    with pytest.raises(StepFailed, match="did not end within 90s and was stopped"):
        commands.run_command("sleep 600", env="dev", timeout="90s", runtime=runtime(project, factory))
    assert agent.stopped == list(agent.tasks)


def test_a_command_stopped_from_outside_that_exits_0_is_no_success(
    project: Path, factory: AwsFactory, service: dict[str, Any]
) -> None:
    """Fargate Spot took its capacity back; the command caught SIGTERM and exited 0, half done: not ✅ (a backfill,
    a migration in a release step, said done)."""
    agent = Agent(factory, 0)
    original = agent._end

    def by_spot(task: dict[str, Any], code: int | None, reason: str) -> None:
        original(task, code, reason)
        task.update(stopCode="SpotInterruption", stoppedReason="Your Spot Task was interrupted.")

    agent._end = by_spot  # type: ignore[method-assign]
    with pytest.raises(StepFailed) as failed:
        commands.run_command("python -m app.admin backfill", env="dev", runtime=runtime(project, factory))
    assert "was stopped from outside, by Fargate Spot taking its capacity back" in failed.value.message
    assert "(it exited with code 0)" in failed.value.message


def denied(operation: str) -> Any:
    """A handler AWS's refusal of ``operation`` comes from."""
    from botocore.exceptions import ClientError

    def refuse(**_: Any) -> None:
        error = {"Error": {"Code": "AccessDeniedException", "Message": f"not allowed: {operation}"}}
        raise ClientError(error, operation)  # type: ignore[arg-type]

    return refuse


def test_a_log_read_refused_is_said(project: Path, factory: AwsFactory, service: dict[str, Any]) -> None:
    """FilterLogEvents denied (no logs:FilterLogEvents, a KMS-encrypted group): said once, where the run showed
    nothing and said nothing of why."""
    logs = factory.client("logs")
    logs.meta.events.register_first("before-call.logs.FilterLogEvents", denied("FilterLogEvents"))
    Writing(factory, ["never seen"])
    rt = runtime(project, factory)
    commands.run_command("python -m app.admin reindex", env="dev", runtime=rt)
    said = rt.stderr.getvalue()  # type: ignore[attr-defined]
    assert said.count("(its output cannot be read now: AccessDeniedException: not allowed: FilterLogEvents") == 1


def test_a_stop_that_failed_is_not_said_done(project: Path, factory: AwsFactory, service: dict[str, Any]) -> None:
    """On Ctrl-C, StopTask denied: the task runs on, said with the command that stops it, where it was said
    stopped."""
    agent = Agent(factory, ends=False)
    ecs = factory.client("ecs")
    ecs.meta.events.register_first("before-call.ecs.StopTask", denied("StopTask"))

    def interrupt(**_: Any) -> None:
        raise KeyboardInterrupt

    ecs.meta.events.register_first("before-call.ecs.DescribeTasks", interrupt)
    rt = runtime(project, factory)
    with pytest.raises(KeyboardInterrupt):
        commands.run_command("sleep 600", env="dev", runtime=rt)
    said = rt.stderr.getvalue()  # type: ignore[attr-defined]
    task = list(agent.tasks)[-1]
    assert (
        "could not be stopped: AccessDeniedException: not allowed: StopTask; it may still run: aws ecs stop-task "
        in said
    )
    assert f"--cluster car-rental-cluster --task {task}" in said and "⏹" not in said


@pytest.mark.parametrize(
    ("command", "timeout", "message"),
    [
        ("", "10m", "name the command to run"),
        ("  ", "10m", "name the command"),
        ("x", "soon", "is not a duration"),
        ("echo 'unbalanced", "10m", "cannot be split into its words: No closing quotation"),
    ],
)
def test_bad_input_runs_nothing(
    project: Path, factory: AwsFactory, service: dict[str, Any], command: str, timeout: str, message: str
) -> None:
    agent = Agent(factory)
    with pytest.raises(UsageError, match=message):
        commands.run_command(command, env="dev", timeout=timeout, runtime=runtime(project, factory))
    assert agent.run == []


def test_an_interrupt_stops_the_task(project: Path, factory: AwsFactory, service: dict[str, Any]) -> None:
    agent = Agent(factory, ends=False)

    def interrupt(**_: Any) -> None:
        raise KeyboardInterrupt

    factory.client("ecs").meta.events.register_first("before-call.ecs.DescribeTasks", interrupt)
    rt = runtime(project, factory)
    with pytest.raises(KeyboardInterrupt):
        commands.run_command("sleep 600", env="dev", runtime=rt)
    assert agent.stopped == list(agent.tasks)
    assert "⏹  task " in rt.stderr.getvalue()  # type: ignore[attr-defined]


def test_another_image_runs_in_a_revision_of_the_services_own_registered_once(
    project: Path, factory: AwsFactory, service: dict[str, Any]
) -> None:
    """--image-tag: an image pushed, not deployed (a migration tried first), in the service's revision with only the
    image changed; registered the first time, found the next; the service itself untouched."""
    put_image(factory, "abc123abc123")
    agent = Writing(factory, ["dry run: 3 bookings to migrate"])
    first = runtime(project, factory)
    result = commands.run_command("python -m app.release --dry-run", env="dev", image_tag="abc123abc123", runtime=first)
    assert result["ok"] and result["image_tag"] == "abc123abc123"
    ecs = factory.client("ecs")
    ran = ecs.describe_task_definition(taskDefinition=agent.run[0]["taskDefinition"])["taskDefinition"]
    assert ran["containerDefinitions"][0]["image"].endswith("/car-rental-backend:abc123abc123")
    assert ran["taskDefinitionArn"] != service["taskDefinitionArn"]
    assert ran["containerDefinitions"][0]["environment"] == service["containerDefinitions"][0]["environment"]
    assert (
        "   registered car-rental-backend:2 to run abc123abc123 (from car-rental-backend:1)" in first.stderr.getvalue()
    )  # type: ignore[attr-defined]
    again = runtime(project, factory)
    commands.run_command("python -m app.release --dry-run", env="dev", image_tag="abc123abc123", runtime=again)
    assert agent.run[1]["taskDefinition"] == ran["taskDefinitionArn"] and "registered" not in again.stderr.getvalue()  # type: ignore[attr-defined]
    svc = ecs.describe_services(cluster="car-rental-cluster", services=["car-rental-service"])["services"][0]
    assert svc["taskDefinition"] == service["taskDefinitionArn"]


def test_an_image_the_registry_does_not_have_is_refused_and_nothing_runs(
    project: Path, factory: AwsFactory, service: dict[str, Any]
) -> None:
    agent = Agent(factory)
    with pytest.raises(UsageError, match="car-rental-backend:nope00000000 is not in the registry of dev") as refused:
        commands.run_command("true", env="dev", image_tag="nope00000000", runtime=runtime(project, factory))
    assert refused.value.exit_code == 2 and "inv push" in (refused.value.next_step or "")
    assert agent.run == []
    listed = factory.client("ecs").list_task_definitions(familyPrefix="car-rental-backend")["taskDefinitionArns"]
    assert listed == [service["taskDefinitionArn"]]  # nothing registered either


def test_behind_a_scan_gate_an_image_the_scan_refuses_is_not_run(
    project: Path, factory: AwsFactory, service: dict[str, Any]
) -> None:
    """[image_scan]: an image the service does not run is judged as a deploy would judge it before anything runs it
    (moto's scan finds CVE-9999-9999, HIGH); accepted in deploy.toml, it runs."""
    with (project / "deploy.toml").open("a") as toml:
        toml.write('\n[environments.dev.image_scan]\nseverity = "HIGH"\n')
    git(project, "commit", "-qam", "a scan gate")
    put_image(factory, "abc123abc123")
    agent = Writing(factory, ["migrated"])
    with pytest.raises(UsageError, match=r"has 1 finding\(s\) of HIGH or worse") as refused:
        commands.run_command("true", env="dev", image_tag="abc123abc123", runtime=runtime(project, factory))
    assert refused.value.exit_code == 2 and "DEPLOYKIT_SKIP_SCAN=1 runs it without the gate" in str(
        refused.value.next_step
    )
    assert agent.run == []
    listed = factory.client("ecs").list_task_definitions(familyPrefix="car-rental-backend")["taskDefinitionArns"]
    assert listed == [service["taskDefinitionArn"]]  # nothing registered either

    with (project / "deploy.toml").open("a") as toml:
        toml.write('ignore = ["CVE-9999-9999"]\n')
    git(project, "commit", "-qam", "CVE-9999-9999 accepted")
    rt = runtime(project, factory)
    assert commands.run_command("true", env="dev", image_tag="abc123abc123", runtime=rt)["ok"]
    assert "   ECR's scan of abc123abc123: passed: 1 HIGH; accepted by deploy.toml: CVE-9999-9999" in (
        rt.stderr.getvalue()  # type: ignore[attr-defined]
    )


def test_a_revision_that_names_a_missing_secret_is_refused_and_nothing_runs(
    project: Path, factory: AwsFactory, service: dict[str, Any]
) -> None:
    """What the service's revision names (its secret /api-key, read by register-taskdef when it was registered) went
    since: the task would fail to start, which ECS says only as it fails (a minute on AWS). Refused before RunTask
    (exit 2), naming it; nothing runs."""
    agent = Agent(factory)
    factory.client("ssm").delete_parameter(Name="/api-key")
    with pytest.raises(UsageError) as refused:
        commands.run_command("true", env="dev", runtime=runtime(project, factory))
    assert refused.value.exit_code == 2
    assert refused.value.message.startswith("car-rental-backend:1, which the task would run, names what does not ")
    assert (
        refused.value.message.endswith(":parameter/api-key): not found. Nothing was started")
        and "secret API_KEY of container backend (SSM parameter arn:aws:ssm:" in refused.value.message
    )
    assert "change CarRentalFargateStack to name what exists" in (refused.value.next_step or "")
    assert agent.run == []
