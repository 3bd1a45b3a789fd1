"""The logs of several components, against moto: ``inv logs --component all`` (or a list), and ``inv deploy.auto
--watch`` between deploys: which components are followed, their lines each once in time order across them, what
cannot be followed or read said once."""

from __future__ import annotations

import json
import shutil
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from botocore.awsrequest import AWSResponse

from deploykit import commands
from deploykit.aws import AwsFactory
from deploykit.clock import FakeClock
from deploykit.errors import UsageError
from tests.conftest import REPO, git
from tests.functional.conftest import create_service, moto_runtime
from tests.functional.test_logs_moto import NOW, WritingClock  # the lines stamped from NOW

GROUP = "/ecs/car-rental"  # conftest's CONTAINER logs there, prefix "backend"
HEALTH = "Api-Health-1"  # the API stack's health_handler; login_handler is not deployed


def put(logs: Any, group: str, stream: str, *lines: tuple[float, str]) -> None:
    """Lines stamped ``at`` seconds after NOW (the group and stream made when missing)."""
    if not logs.describe_log_groups(logGroupNamePrefix=group)["logGroups"]:
        logs.create_log_group(logGroupName=group)
    if not logs.describe_log_streams(logGroupName=group, logStreamNamePrefix=stream)["logStreams"]:
        logs.create_log_stream(logGroupName=group, logStreamName=stream)
    events = [{"timestamp": int((NOW + timedelta(seconds=at)).timestamp() * 1000), "message": m} for at, m in lines]
    logs.put_log_events(logGroupName=group, logStreamName=stream, logEvents=events)


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
    runtime = moto_runtime(project, factory, clock=clock)
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
    said = "📜 not following lambda:login_handler's logs: no stack of environment 'dev' has a Lambda function for "
    assert err.count(said + "'login_handler' (they have: health_handler)\n") == 1
    assert "could not read" not in err  # the function's group missing at first is no failure, said once
    said = (
        f"📜 log group /aws/lambda/{HEALTH} of lambda:health_handler does not exist yet: following it from when it does"
    )
    assert err.count(said) == 1
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
    # on the clients made from now on (the followers'), and on the one the test writes with
    factory.session.events.register("before-call.logs", lambda model, **_: calls.append(model.name))
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

    factory.session.events.register("before-call.logs.FilterLogEvents", throttled)  # the follower's own client
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


# -- inv logs of several components --------------------------------------------------------------------------------


def run_logs(project: Path, factory: AwsFactory, clock: FakeClock | None = None, **kwargs: Any) -> tuple[str, str]:
    runtime = moto_runtime(project, factory, clock=clock or FakeClock(NOW + timedelta(minutes=1)))
    commands.logs(env="dev", **kwargs, runtime=runtime)
    return runtime.stdout.getvalue(), runtime.stderr.getvalue()  # type: ignore[attr-defined]


@pytest.fixture
def written(deployed: Any) -> Any:
    put(deployed, GROUP, "backend/backend/aaaa1111", (1.5, "GET /cars 200"), (3, "GET /health 200"))
    put(deployed, f"/aws/lambda/{HEALTH}", "2026/12/02/[3]abcdef", (1.2, "START health"), (2, "END health"))
    return deployed


def test_all_merges_the_app_s_and_the_functions_newest_lines_in_time_order_named(
    project: Path, factory: AwsFactory, written: Any
) -> None:
    """login_handler is not deployed: named, it is refused; of all, it is left out and said."""
    with pytest.raises(UsageError, match="has a Lambda function for 'login_handler'"):
        run_logs(project, factory, component="app,lambda:login_handler", since="1m")
    out, err = run_logs(project, factory, component="all", since="1m", limit=3)
    assert "📜 lambda:login_handler left out: no stack of environment 'dev' has a Lambda function for " in err
    assert out == run_logs(project, factory, component="app,all", since="1m", limit=3)[0]
    assert out.splitlines() == [
        f"{NOW + timedelta(seconds=1.5):%H:%M:%S}.500  app aaaa1111  GET /cars 200",
        f"{NOW + timedelta(seconds=2):%H:%M:%S}.000  lambda:health_handler [3]  END health",
        f"{NOW + timedelta(seconds=3):%H:%M:%S}.000  app aaaa1111  GET /health 200",
    ]
    assert f"📜 app in dev: CloudWatch Logs {GROUP}, streams backend/backend/*; since " in err
    assert f"📜 lambda:health_handler in dev: CloudWatch Logs /aws/lambda/{HEALTH}; since " in err
    assert err.endswith("(the newest 3; --limit N for more)\n")


def test_json_of_several_names_each_line_s_component_and_each_component_s_group(
    project: Path, factory: AwsFactory, written: Any
) -> None:
    out, _ = run_logs(project, factory, component="lambda:health_handler,app", since="1m", as_json=True)
    document = json.loads(out)
    assert document["components"] == [
        {"component": "lambda:health_handler", "group": f"/aws/lambda/{HEALTH}", "deleted": False},
        {"component": "app", "group": GROUP, "deleted": False},
    ]
    assert "component" not in document and "group" not in document
    assert [(line["component"], line["message"]) for line in document["lines"]] == [
        ("lambda:health_handler", "START health"),
        ("app", "GET /cars 200"),
        ("lambda:health_handler", "END health"),
        ("app", "GET /health 200"),
    ]
    out, _ = run_logs(project, factory, component="app", since="1m", as_json=True)
    one = json.loads(out)  # one component: the shape scripts read, each line naming its component too
    assert one["component"] == "app" and one["group"] == GROUP and "components" not in one
    assert {line["component"] for line in one["lines"]} == {"app"}


def test_json_of_several_marks_the_app_of_a_service_ecs_deleted(
    project: Path, factory: AwsFactory, written: Any
) -> None:
    """Deleted by hand (its group stays): its last lines are read, and the JSON says whose they are, as stderr does,
    for a script that reads stdout alone; the function beside it is not deleted."""
    factory.client("ecs").delete_service(cluster="car-rental-cluster", service="car-rental-service", force=True)
    out, err = run_logs(project, factory, component="app,lambda:health_handler", since="1m", as_json=True)
    document = json.loads(out)
    assert document["components"] == [
        {"component": "app", "group": GROUP, "deleted": True},
        {"component": "lambda:health_handler", "group": f"/aws/lambda/{HEALTH}", "deleted": False},
    ]
    assert [line["message"] for line in document["lines"] if line["component"] == "app"] == [
        "GET /cars 200",
        "GET /health 200",
    ]
    assert err.startswith("⚠️  ECS deleted service car-rental-service (INACTIVE")


def test_of_several_a_function_that_never_ran_is_said_and_passed_over(
    project: Path, factory: AwsFactory, deployed: Any
) -> None:
    put(deployed, GROUP, "backend/backend/aaaa1111", (1.5, "GET /cars 200"))
    out, err = run_logs(project, factory, component="app,lambda:health_handler", since="1m")
    assert out.splitlines() == [f"{NOW + timedelta(seconds=1.5):%H:%M:%S}.500  app aaaa1111  GET /cars 200"]
    assert f"📜 log group /aws/lambda/{HEALTH} of lambda:health_handler does not exist: nothing written yet\n" in err
    with pytest.raises(UsageError, match=f"log group /aws/lambda/{HEALTH} of lambda:health_handler does not exist"):
        run_logs(project, factory, component="lambda:health_handler", since="1m")  # alone: as before


def test_task_goes_with_the_app_alone(project: Path, factory: AwsFactory, deployed: Any) -> None:
    with pytest.raises(UsageError) as refused:
        run_logs(project, factory, component="app,lambda:health_handler", task="aaaa")
    assert refused.value.message == "--task names one of the app's tasks"
    with pytest.raises(UsageError, match="unknown Lambda function 'nope'"):
        run_logs(project, factory, component="app,lambda:nope")


def test_follow_of_several_prints_each_new_line_once_named_until_ctrl_c(
    project: Path, factory: AwsFactory, written: Any
) -> None:
    def interrupt() -> None:
        raise KeyboardInterrupt

    clock = WritingClock(
        [
            lambda: put(written, GROUP, "backend/backend/aaaa1111", (5, "GET /bookings 200")),
            lambda: put(written, f"/aws/lambda/{HEALTH}", "2026/12/02/[3]abcdef", (4.5, "START again")),
            interrupt,
        ]
    )
    out, err = run_logs(
        project, factory, clock, component="app,lambda:health_handler", since="1m", limit=2, follow=True
    )
    assert [line.split("  ", 1)[1] for line in out.splitlines()] == [
        "lambda:health_handler [3]  END health",  # the newest 2 at the start
        "app aaaa1111  GET /health 200",
        "app aaaa1111  GET /bookings 200",
        "lambda:health_handler [3]  START again",
    ]
    assert err.endswith("\nstopped following\n")
    assert clock.sleeps == [2.0, 2.0]


def test_a_lookup_that_fails_for_a_moment_keeps_the_component_followed_and_no_line_comes_twice(
    project: Path, factory: AwsFactory, deployed: Any
) -> None:
    fleet = project / "backend" / "app" / "fleet.py"
    lookups: list[str] = []

    def describe(**_: Any) -> Any:  # the second deploy's look at the service is refused
        lookups.append("DescribeServices")
        if len(lookups) == 2:
            return AWSResponse("https://ecs", 400, {}, None), {
                "Error": {"Code": "AccessDeniedException", "Message": "x"}
            }
        return None

    factory.client("ecs").meta.events.register("before-call.ecs.DescribeServices", describe)
    clock = WritingClock(
        [
            lambda: put(deployed, GROUP, "backend/backend/aaaa1111", (1, "before the save")),
            lambda: fleet.write_text(fleet.read_text() + "\n# a save\n"),
            lambda: None,  # settled: deployed again, the service's lookup refused
            lambda: put(deployed, GROUP, "backend/backend/aaaa1111", (4, "after the save")),
            lambda: None,
            lambda: None,
        ]
    )
    runs, out, err = watch(project, factory, clock, only="app")
    assert runs == 2 and len(lookups) == 2
    assert [line.split("  ")[-1] for line in out.splitlines()] == ["before the save", "after the save"]
    assert err.count("📜 following the logs of app between deploys") == 1 and "not following app" not in err


def test_a_stack_the_watch_deploys_has_the_logs_of_what_it_runs_followed(
    project: Path, factory: AwsFactory, deployed: Any
) -> None:
    """--only stack:fargate: a Fargate stack deploy replaces the app's tasks; --skip app still leaves the app out."""
    _, _, err = watch(project, factory, WritingClock([lambda: None]), only="stack:fargate")
    assert "📜 following the logs of app between deploys" in err and "lambda:" not in err
    _, _, err = watch(project, factory, WritingClock([lambda: None]), only="stack", skip="app")
    assert "📜 following the logs of lambda:health_handler between deploys" in err and " app" not in err


def test_inv_logs_follow_of_a_group_that_does_not_exist_yet_says_so_and_waits_for_it(
    project: Path, factory: AwsFactory, deployed: Any
) -> None:
    def interrupt() -> None:
        raise KeyboardInterrupt

    clock = WritingClock(
        [lambda: put(deployed, f"/aws/lambda/{HEALTH}", "2026/12/02/[3]abcdef", (1, "START health")), interrupt]
    )
    out, err = run_logs(project, factory, clock, component="lambda:health_handler", since="1m", follow=True)
    assert out.splitlines() == [f"{NOW + timedelta(seconds=1):%H:%M:%S}.000  [3]       START health"]
    assert f"📜 log group /aws/lambda/{HEALTH} of lambda:health_handler does not exist yet: following it from " in err
