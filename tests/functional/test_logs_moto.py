"""inv logs against moto: where each component logs (read from ECS and Lambda), reading a window, following."""

from __future__ import annotations

import errno
import io
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TextIO, cast

import pytest
from botocore.awsrequest import AWSResponse
from botocore.stub import Stubber

from deploykit import commands
from deploykit.aws import AwsFactory
from deploykit.clock import FakeClock
from deploykit.config import EnvConfig
from deploykit.errors import UsageError
from deploykit.logs import Followed, LogLine, LogSource, app_source, lambda_source, read, version_lines
from deploykit.output import GuardedStream
from tests.functional.conftest import CONTAINER, create_service, new_session

GROUP = "/ecs/car-rental"  # conftest's CONTAINER logs there, prefix "backend"
NOW = datetime.now(UTC).replace(microsecond=0)  # CloudWatch Logs takes no events older than 14 days


def ms(seconds: float) -> int:
    """The time ``seconds`` after NOW, in ms."""
    return int((NOW + timedelta(seconds=seconds)).timestamp() * 1000)


def put(logs: Any, stream: str, *lines: tuple[float, str], group: str = GROUP) -> None:
    existing = {s["logStreamName"] for s in logs.describe_log_streams(logGroupName=group)["logStreams"]}
    if stream not in existing:
        logs.create_log_stream(logGroupName=group, logStreamName=stream)
    events = [{"timestamp": ms(at), "message": text} for at, text in lines]
    logs.put_log_events(logGroupName=group, logStreamName=stream, logEvents=events)


@pytest.fixture
def logs(factory: AwsFactory) -> Any:
    client = factory.client("logs")
    client.create_log_group(logGroupName=GROUP)
    put(client, "backend/backend/aaaa1111", (1, "task a starts"), (3, "task a serves"))
    put(client, "backend/backend/bbbb2222", (2, "task b starts"), (4, "task b serves"))
    put(client, "other/sidecar/aaaa1111", (2.5, "not the app's container"))
    return client


# -- where ---------------------------------------------------------------------------------------------------------


def test_the_app_logs_where_the_service_s_task_definition_sends_its_container(
    factory: AwsFactory, dev_env: EnvConfig
) -> None:
    create_service(factory)
    assert app_source(factory.client("ecs"), dev_env) == LogSource("app", GROUP, "backend/backend/")
    assert app_source(factory.client("ecs"), dev_env, "bbbb").stream_prefix == "backend/backend/bbbb"


def test_an_app_container_without_awslogs_is_refused_with_where_to_add_it(
    factory: AwsFactory, dev_env: EnvConfig
) -> None:
    ecs = factory.client("ecs")
    create_service(factory)
    bare = {k: v for k, v in CONTAINER.items() if k != "logConfiguration"}
    arn = ecs.register_task_definition(family="car-rental-backend", containerDefinitions=[bare], memory="512")[
        "taskDefinition"
    ]
    ecs.update_service(cluster=dev_env.cluster, service=dev_env.service, taskDefinition=arn["taskDefinitionArn"])
    with pytest.raises(UsageError) as err:
        app_source(ecs, dev_env)
    assert "does not log to CloudWatch Logs (log driver: none)" in err.value.message
    assert "fargate_stack.py" in (err.value.next_step or "")


def test_a_function_logs_to_its_logging_config_group_else_to_aws_lambda() -> None:
    client = new_session().client("lambda")
    stub = Stubber(client)
    stub.add_response(
        "get_function_configuration",
        {"FunctionName": "Api-Login-1", "LoggingConfig": {"LogFormat": "Text", "LogGroup": "Api-LoginLogs-2"}},
        {"FunctionName": "Api-Login-1"},
    )
    stub.add_response("get_function_configuration", {"FunctionName": "Api-Health-1"}, {"FunctionName": "Api-Health-1"})
    with stub:
        assert lambda_source(client, "login_handler", "Api-Login-1") == LogSource(
            "lambda:login_handler", "Api-LoginLogs-2"
        )
        assert lambda_source(client, "health_handler", "Api-Health-1").group == "/aws/lambda/Api-Health-1"


# -- reading -------------------------------------------------------------------------------------------------------


def test_a_window_gives_the_newest_lines_of_the_app_s_streams_oldest_first(logs: Any) -> None:
    source = LogSource("app", GROUP, "backend/backend/")
    lines = read(logs, source, NOW, limit=3)
    assert [line.message for line in lines] == ["task b starts", "task a serves", "task b serves"]
    assert [source.label(line.stream) for line in lines] == ["bbbb2222", "aaaa1111", "bbbb2222"]
    later = read(logs, source, NOW + timedelta(seconds=2.5), limit=10)
    assert [line.message for line in later] == ["task a serves", "task b serves"]
    one_task = read(logs, LogSource("app", GROUP, "backend/backend/aaaa"), NOW, limit=10)
    assert [line.message for line in one_task] == ["task a starts", "task a serves"]


def test_a_window_of_more_pages_than_it_reads_is_refused_rather_than_cut(
    logs: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("deploykit.logs.PAGES", 1)
    pages: list[Any] = []
    logs.meta.events.register("after-call.logs.FilterLogEvents", lambda parsed, **_: pages.append(parsed))
    logs.meta.events.register(  # as if more pages followed
        "after-call.logs.FilterLogEvents", lambda parsed, **_: parsed.update(nextToken="more")
    )
    with pytest.raises(UsageError) as err:
        read(logs, LogSource("app", GROUP, "backend/backend/"), NOW, limit=5)
    assert err.value.message == f"{GROUP} has more than 1 pages of lines in the window asked for"
    assert len(pages) == 1


def test_a_group_that_does_not_exist_is_a_usage_error(factory: AwsFactory) -> None:
    with pytest.raises(UsageError) as err:
        read(factory.client("logs"), LogSource("lambda:login_handler", "/aws/lambda/gone"), NOW, limit=5)
    assert err.value.message == "log group /aws/lambda/gone of lambda:login_handler does not exist"


class WritingClock(FakeClock):
    """A clock whose n-th sleep first lets ``writes[n]`` happen (lines reaching CloudWatch Logs meanwhile)."""

    def __init__(self, writes: list[Any]) -> None:
        super().__init__(NOW)
        self.writes = writes

    def sleep(self, seconds: float) -> None:
        if len(self.sleeps) < len(self.writes):
            self.writes[len(self.sleeps)]()
        super().sleep(seconds)


def test_follow_shows_the_newest_lines_then_each_new_one_once_late_ones_included(logs: Any) -> None:
    source = LogSource("app", GROUP, "backend/backend/")
    clock = WritingClock(
        [
            lambda: put(logs, "backend/backend/aaaa1111", (5, "task a: a request")),
            # task b's line is stamped before task a's newest, but reaches CloudWatch Logs after it
            lambda: put(logs, "backend/backend/bbbb2222", (4.5, "task b: sent late"), (6, "task b: a request")),
            lambda: None,
        ]
    )
    followed = Followed(logs, NOW, limit=2)
    followed.follow([source])
    shown: list[LogLine] = []
    while len(clock.sleeps) < 3:
        lines, failed = followed.new()
        assert failed == [] and {s for s, _ in lines} <= {source}
        shown += [line for _, line in lines]
        clock.sleep(2.0)
    shown += [line for _, line in followed.new()[0]]
    assert [line.message for line in shown] == [
        "task a serves",  # the newest two at the start; the two before them stay out
        "task b serves",
        "task a: a request",
        "task b: sent late",
        "task b: a request",
    ]
    assert clock.sleeps == [2.0, 2.0, 2.0]


# -- the command ---------------------------------------------------------------------------------------------------


def run_logs(project: Path, factory: AwsFactory, **kwargs: Any) -> tuple[list[LogLine], str, str]:
    runtime = commands.Runtime(
        config_path=project / "deploy.toml",
        stdout=io.StringIO(),
        stderr=io.StringIO(),
        clock=FakeClock(NOW + timedelta(minutes=1)),
        aws_factory=lambda _env: factory,
    )
    lines = commands.logs(env="dev", **kwargs, runtime=runtime)
    return lines, runtime.stdout.getvalue(), runtime.stderr.getvalue()  # type: ignore[attr-defined]


def test_inv_logs_prints_the_lines_on_stdout_and_where_they_come_from_on_stderr(
    project: Path, factory: AwsFactory, logs: Any
) -> None:
    create_service(factory)
    lines, out, err = run_logs(project, factory, since="5m")
    assert len(lines) == 4
    assert out.splitlines()[0].endswith("aaaa1111  task a starts")
    assert f"📜 app in dev: CloudWatch Logs {GROUP}, streams backend/backend/*" in err
    _, out, _ = run_logs(project, factory, since="5m", task="bbbb", as_json=True)
    document = json.loads(out)
    assert document["component"] == "app" and document["group"] == GROUP and document["deleted"] is False
    assert [line["message"] for line in document["lines"]] == ["task b starts", "task b serves"]
    assert document["lines"][0]["source"] == "bbbb2222"


def test_follow_ends_when_no_one_reads_its_lines_any_more(project: Path, factory: AwsFactory, logs: Any) -> None:
    """inv logs --follow | grep -m1 X: once grep has its line and goes, following ends (it followed for ever,
    writing to a closed pipe, with the shell waiting on it)."""
    create_service(factory)

    class ClosedPipe(io.StringIO):
        def write(self, text: str) -> int:
            raise BrokenPipeError(errno.EPIPE, "Broken pipe")

    class Impatient(FakeClock):
        def sleep(self, seconds: float) -> None:
            super().sleep(seconds)
            assert len(self.sleeps) < 3, "still following with no one reading"

    runtime = commands.Runtime(
        config_path=project / "deploy.toml",
        stdout=cast(TextIO, GuardedStream(ClosedPipe())),
        stderr=io.StringIO(),
        clock=Impatient(NOW + timedelta(minutes=1)),
        aws_factory=lambda _env: factory,
    )
    assert commands.logs(env="dev", since="5m", follow=True, runtime=runtime) == []
    assert len(runtime.clock.sleeps) == 1  # type: ignore[attr-defined]  # the first lines were not taken: it ended


def test_a_since_in_another_zone_is_said_in_utc(project: Path, factory: AwsFactory, logs: Any) -> None:
    """--since 2026-12-02T09:00:00+02:00 starts at 07:00 UTC: the heading said 09:00 UTC."""
    create_service(factory)
    _, _, err = run_logs(project, factory, since="2026-12-02T09:00:00+02:00", pattern="nothing-like-it")
    assert "written since 2026-12-02 07:00:00 UTC" in err


def test_the_limit_is_said_as_a_cut_only_when_there_were_more_lines(
    project: Path, factory: AwsFactory, logs: Any
) -> None:
    create_service(factory)
    lines, _, err = run_logs(project, factory, since="5m", limit=4)  # all four there are
    assert len(lines) == 4 and "(the newest 4" not in err
    lines, _, err = run_logs(project, factory, since="5m", limit=3)
    assert [line.message for line in lines][-1] == "task b serves" and len(lines) == 3
    assert "(the newest 3; --limit N for more)" in err


def test_filter_reads_only_the_lines_matching_a_cloudwatch_logs_pattern(
    project: Path, factory: AwsFactory, logs: Any
) -> None:
    create_service(factory)
    asked: list[str] = []
    factory.client("logs").meta.events.register(
        "before-parameter-build.logs.FilterLogEvents", lambda params, **_: asked.append(params.get("filterPattern", ""))
    )
    lines, _, err = run_logs(project, factory, since="5m", pattern="serves")
    assert [line.message for line in lines] == ["task a serves", "task b serves"]
    assert asked == ["serves"]  # CloudWatch Logs filters: only the matching lines come over the wire
    assert json.loads(run_logs(project, factory, since="5m", pattern="serves", as_json=True)[1])["filter"] == "serves"
    assert f"📜 app in dev: CloudWatch Logs {GROUP}, streams backend/backend/*, lines matching serves; since " in err
    _, _, err = run_logs(project, factory, since="5m", pattern="nothing-like-it")
    assert "no lines matching nothing-like-it written since " in err


def test_a_filter_pattern_cloudwatch_logs_refuses_is_bad_input_naming_the_syntax(
    project: Path, factory: AwsFactory, logs: Any
) -> None:
    create_service(factory)
    stub = Stubber(factory.client("logs"))
    stub.add_client_error("filter_log_events", "InvalidParameterException", "Invalid filter pattern", 400)
    with stub, pytest.raises(UsageError) as refused:
        run_logs(project, factory, since="5m", pattern='{ $.level = "ERROR"')
    assert (
        refused.value.message
        == "--filter '{ $.level = \"ERROR\"' is refused by CloudWatch Logs: Invalid filter pattern"
    )
    assert '"GET /cars"' in (refused.value.next_step or "")

    def refuse(**_: Any) -> Any:  # the follower's own client, made from the session
        return AWSResponse("https://logs", 400, {}, None), {
            "Error": {"Code": "InvalidParameterException", "Message": "Invalid filter pattern"}
        }

    factory.session.events.register("before-call.logs.FilterLogEvents", refuse)
    with pytest.raises(UsageError, match="is refused by CloudWatch Logs: Invalid filter pattern"):
        run_logs(project, factory, since="5m", pattern="{ $.x", follow=True)  # exit 2, never read again for ever


def test_a_task_id_no_stream_starts_with_is_bad_input_not_a_quiet_window(
    project: Path, factory: AwsFactory, logs: Any
) -> None:
    """--task of an id no task of the service ever had (mistyped): exit 2 naming it and where the ids are, where it
    said "no lines written ... (try a longer --since)"; a task that wrote, only not in the window: said so, exit 0."""
    create_service(factory)
    with pytest.raises(UsageError) as refused:
        run_logs(project, factory, since="5m", task="cccc")
    assert refused.value.exit_code == 2
    assert refused.value.message == f"no task of car-rental-service whose id starts with 'cccc' ever wrote to {GROUP}"
    assert "inv tasks --env dev lists the service's tasks" in refused.value.next_step
    lines, _, err = run_logs(project, factory, since="10s", task="aaaa")
    assert lines == [] and "no lines written since" in err


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"follow": True, "as_json": True}, "--follow and --json do not go together"),
        ({"component": "db"}, "unknown component 'db' for logs"),
        ({"component": "lambda:login_handler", "task": "ab"}, "--task names one of the app's tasks"),
        ({"limit": 0}, "--limit must be at least 1 (got 0)"),
        ({"since": "soon"}, "--since 'soon' is neither a duration nor a time (since 1970, as AWS counts)"),
    ],
)
def test_inv_logs_refuses_bad_input_before_asking_aws(
    project: Path, kwargs: dict[str, Any], message: str, dev_env: EnvConfig
) -> None:
    handler = project / "lambda" / "login_handler" / "handler.py"
    handler.parent.mkdir(parents=True)
    handler.write_text("def handler(event, context):\n    return {}\n")
    factory = AwsFactory(dev_env)
    for service in ("ecs", "lambda", "logs", "cloudformation"):  # any call fails: nothing is stubbed
        stubber = Stubber(new_session().client(service))
        stubber.activate()
        factory._clients[service] = stubber.client
    with pytest.raises(UsageError) as err:
        run_logs(project, factory, **kwargs)
    assert err.value.message == message and err.value.exit_code == 2


def test_the_lines_of_one_version_of_a_function(factory: AwsFactory) -> None:
    logs = factory.client("logs")
    group = "/aws/lambda/Api-Health-1"
    logs.create_log_group(logGroupName=group)
    day = NOW.strftime("%Y/%m/%d")
    put(logs, f"{day}/[1]aaaa", (1, "START v1"), (1.5, "END v1"), group=group)
    put(logs, f"{day}/[2]bbbb", (2, "START v2"), (2.1, "[ERROR] KeyError: 'REGION'"), (2.2, "END v2"), group=group)
    put(logs, f"{day}/[12]cccc", (3, "START v12"), group=group)  # [12] is not [2]
    source = LogSource("lambda:health_handler", group)
    lines = version_lines(logs, source, "2", NOW, limit=2)
    assert [line.message for line in lines] == ["[ERROR] KeyError: 'REGION'", "END v2"]
    assert version_lines(logs, source, "3", NOW, limit=5) == []
