"""inv deploy.auto --watch's logs between deploys, against moto: which components are followed, their lines each once
in time order across them, what cannot be followed or read said once."""

from __future__ import annotations

import io
import json
import shutil
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from botocore.awsrequest import AWSResponse

from deploykit import commands
from deploykit.aws import AwsFactory
from deploykit.clock import FakeClock
from tests.conftest import REPO, git
from tests.functional.conftest import create_service

GROUP = "/ecs/car-rental"  # conftest's CONTAINER logs there, prefix "backend"
HEALTH = "Api-Health-1"  # the API stack's health_handler; login_handler is not deployed
NOW = datetime.now(UTC).replace(microsecond=0)  # CloudWatch Logs takes no events older than 14 days


def put(logs: Any, group: str, stream: str, *lines: tuple[float, str]) -> None:
    """Lines stamped ``at`` seconds after NOW (the group and stream made when missing)."""
    if not logs.describe_log_groups(logGroupNamePrefix=group)["logGroups"]:
        logs.create_log_group(logGroupName=group)
    if not logs.describe_log_streams(logGroupName=group, logStreamNamePrefix=stream)["logStreams"]:
        logs.create_log_stream(logGroupName=group, logStreamName=stream)
    events = [{"timestamp": int((NOW + timedelta(seconds=at)).timestamp() * 1000), "message": m} for at, m in lines]
    logs.put_log_events(logGroupName=group, logStreamName=stream, logEvents=events)


class WritingClock(FakeClock):
    """A clock whose n-th sleep first lets ``writes[n]`` happen (lines reaching CloudWatch Logs meanwhile)."""

    def __init__(self, writes: list[Callable[[], Any]]) -> None:
        super().__init__(NOW)
        self.writes = writes

    def sleep(self, seconds: float) -> None:
        if len(self.sleeps) < len(self.writes):
            self.writes[len(self.sleeps)]()
        super().sleep(seconds)


@pytest.fixture
def deployed(project: Path, factory: AwsFactory) -> Any:
    """The app's service (logging to GROUP) and the API stack with health_handler's function: the logs client."""
    shutil.copytree(REPO / "lambda", project / "lambda", ignore=shutil.ignore_patterns("__pycache__", "tests"))
    git(project, "add", "-A")
    git(project, "commit", "-qm", "lambdas")
    create_service(factory)
    role = factory.client("iam").create_role(RoleName="fn-role", AssumeRolePolicyDocument="{}")["Role"]["Arn"]
    factory.client("lambda").create_function(
        FunctionName=HEALTH, Runtime="python3.11", Role=role, Handler="handler.handler", Code={"ZipFile": b"PK"}
    )
    template = {
        "Resources": {
            "Marker": {"Type": "AWS::SSM::Parameter", "Properties": {"Name": "/t/api", "Type": "String", "Value": "a"}}
        },
        "Outputs": {"HealthHandlerFunctionName": {"Value": HEALTH}},
    }
    factory.client("cloudformation").create_stack(StackName="CarRentalApiStack", TemplateBody=json.dumps(template))
    logs = factory.client("logs")
    put(logs, GROUP, "backend/backend/aaaa1111", (-30, "written before the watch began"))
    return logs


def watch(project: Path, factory: AwsFactory, clock: WritingClock, **options: Any) -> tuple[int, str, str]:
    """The watch (its deploy a no-op) until the clock's writes are done: (deploys, stdout, stderr)."""
    runtime = commands.Runtime(
        config_path=project / "deploy.toml",
        stdout=io.StringIO(),
        stderr=io.StringIO(),
        clock=clock,
        aws_factory=lambda _env: factory,
    )
    runs = commands.deploy_watch(
        env="dev",
        runtime=runtime,
        deploy=lambda: None,
        until=lambda: len(clock.sleeps) > len(clock.writes),
        **options,
    )
    return runs, runtime.stdout.getvalue(), runtime.stderr.getvalue()  # type: ignore[attr-defined]


def test_between_deploys_each_component_s_new_lines_come_once_in_time_order(
    project: Path, factory: AwsFactory, deployed: Any
) -> None:
    clock = WritingClock(
        [
            lambda: put(deployed, GROUP, "backend/backend/aaaa1111", (1.5, "GET /cars 200")),
            # the function's group is made at its first run; its line, read with the app's, is the older one
            lambda: put(deployed, f"/aws/lambda/{HEALTH}", "2026/12/02/[3]abcdef", (1.2, "START health")),
            lambda: put(deployed, GROUP, "backend/backend/bbbb2222", (3, "GET /health 200")),
            lambda: None,
            lambda: None,
        ]
    )
    runs, out, err = watch(project, factory, clock)
    assert runs == 1
    assert out.splitlines() == [
        f"{NOW + timedelta(seconds=1):%H:%M:%S}.200  lambda:health_handler [3]  START health",
        f"{NOW + timedelta(seconds=1):%H:%M:%S}.500  app aaaa1111  GET /cars 200",
        f"{NOW + timedelta(seconds=3):%H:%M:%S}.000  app bbbb2222  GET /health 200",
    ]
    assert "📜 following the logs of app, lambda:health_handler between deploys (--no-logs: not)\n" in err
    assert err.count("📜 not following lambda:login_handler's logs: not deployed\n") == 1
    assert "could not read" not in err  # the function's group missing at first is no failure
    # the tree read every second, the logs every other (LOGS_POLL)
    assert clock.sleeps == [1.0] * 6


def test_only_the_components_the_watch_deploys_are_followed_and_said_once_across_deploys(
    project: Path, factory: AwsFactory, deployed: Any
) -> None:
    fleet = project / "backend" / "app" / "fleet.py"
    clock = WritingClock(
        [
            lambda: fleet.write_text(fleet.read_text() + "\n# a save\n"),
            lambda: None,  # settled: deployed again, the sources looked up again
            lambda: put(deployed, GROUP, "backend/backend/aaaa1111", (1, "GET /cars 200")),
            lambda: None,
            lambda: None,
        ]
    )
    runs, out, err = watch(project, factory, clock, skip="lambda")
    assert runs == 2
    assert out.splitlines() == [f"{NOW + timedelta(seconds=1):%H:%M:%S}.000  app aaaa1111  GET /cars 200"]
    assert err.count("📜 following the logs of app between deploys") == 1
    assert "lambda:" not in err


def test_no_logs_reads_none(project: Path, factory: AwsFactory, deployed: Any) -> None:
    calls: list[str] = []
    deployed.meta.events.register("before-call.logs", lambda model, **_: calls.append(model.name))
    clock = WritingClock([lambda: put(deployed, GROUP, "backend/backend/aaaa1111", (1, "GET /cars 200"))] * 3)
    _, out, err = watch(project, factory, clock, logs=False)
    assert out == "" and "📜" not in err
    assert calls == ["DescribeLogGroups", "DescribeLogStreams", "PutLogEvents"] * 3  # the test's own writes


def test_a_read_that_fails_is_said_once_and_the_lines_come_once_it_reads_again(
    project: Path, factory: AwsFactory, deployed: Any
) -> None:
    """A read refused past botocore's retries (throttled: FilterLogEvents is shared by the account) does not end the
    watch: said once while it fails, and the lines come at the next read that passes."""
    refusals = [3]

    def throttled(**_: Any) -> Any:
        if refusals[0] == 0:
            return None  # sent
        refusals[0] -= 1
        error = {"Error": {"Code": "AccessDeniedException", "Message": "not allowed"}}
        return AWSResponse("https://logs", 400, {}, None), error

    deployed.meta.events.register("before-call.logs.FilterLogEvents", throttled)
    clock = WritingClock(
        [lambda: put(deployed, GROUP, "backend/backend/aaaa1111", (1, "GET /cars 200"))] + [lambda: None] * 5
    )
    _, out, err = watch(project, factory, clock, skip="lambda")
    assert out.splitlines() == [f"{NOW + timedelta(seconds=1):%H:%M:%S}.000  app aaaa1111  GET /cars 200"]
    said = [line for line in err.splitlines() if "could not read" in line]
    assert said == [
        "📜 could not read app's logs (An error occurred (AccessDeniedException) when calling the FilterLogEvents "
        "operation: not allowed): reading again in 2 s"
    ]
