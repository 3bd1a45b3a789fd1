"""`inv perf` against moto: the releases from the history in the artifacts bucket, what each served from CloudWatch
(the ALB's and Lambda's metrics, put here as they would put them), the percentiles computed as the sandbox's
CloudWatch computes them (moto alone has none: sandbox.ext.service_metrics.allow_percentiles)."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from unittest.mock import Mock

import boto3
import pytest

from deploykit import commands, history, perf
from deploykit.aws import AwsFactory
from deploykit.clock import FakeClock
from deploykit.config import EnvConfig
from deploykit.errors import UsageError
from deploykit.plan import Plan, RunReport, StepRecord
from tests.functional.conftest import moto_runtime
from tests.functional.test_endpoints import create_stack
from tests.functional.test_watch_errors_moto import service_behind_an_alb

NOW = datetime.now(UTC).replace(second=30, microsecond=0)
SLOW_FROM = NOW - timedelta(hours=2)


@pytest.fixture(autouse=True)
def with_percentiles(percentiles: None) -> None:
    """moto's statistics with the sandbox's percentiles, for these tests alone."""


def deployed(store: history.History, moment: datetime, component: str, sha: str, before: str, title: str) -> None:
    steps = [StepRecord("roll-service", "update the service", "done", 0.1, "rolled")]
    report = RunReport(Plan("dev", (), title), steps, 4.0, None)
    store.write(history.record_of(report, components={component: sha}, base={component: before}, head=sha, now=moment))


def put(factory: AwsFactory, namespace: str, moment: datetime, data: list[dict[str, Any]]) -> None:
    for start in range(0, len(data), 500):
        chunk = [datum | {"Timestamp": moment} for datum in data[start : start + 500]]
        factory.client("cloudwatch").put_metric_data(Namespace=namespace, MetricData=chunk)


def requests(dims: tuple[str, str], count: int, seconds: float, errors: int = 0) -> list[dict[str, Any]]:
    """What the ALB puts for ``count`` requests answered in ``seconds`` each, ``errors`` of them 5xx from the tasks."""
    both = [{"Name": "LoadBalancer", "Value": dims[0]}, {"Name": "TargetGroup", "Value": dims[1]}]
    return [
        {"MetricName": "RequestCount", "Dimensions": both, "Value": count},
        {"MetricName": "HTTPCode_Target_5XX_Count", "Dimensions": both, "Value": errors},
        *({"MetricName": "TargetResponseTime", "Dimensions": both, "Value": seconds} for _ in range(count)),
    ]


def invocations(name: str, count: int, ms: float, errors: int = 0) -> list[dict[str, Any]]:
    dims = [{"Name": "FunctionName", "Value": name}]
    return [
        {"MetricName": "Invocations", "Dimensions": dims, "Value": count},
        {"MetricName": "Errors", "Dimensions": dims, "Value": errors},
        *({"MetricName": "Duration", "Dimensions": dims, "Value": ms} for _ in range(count)),
    ]


def api_stack(function_name: str) -> None:
    """The API stack, its outputs naming login_handler's function."""
    cfn = boto3.client("cloudformation", region_name="eu-west-1")
    create_stack(cfn, "CarRentalApiStack", {"LoginHandlerFunctionName": function_name})


@pytest.fixture
def store(bucket: str, dev_env: EnvConfig) -> history.History:
    found = history.History.of(AwsFactory(dev_env), dev_env)
    assert found is not None
    return found


def perf_of(project: Path, factory: AwsFactory, **kwargs: Any) -> tuple[dict[str, list[perf.Row]], str, dict[str, Any]]:
    stdout = io.StringIO()
    runtime = moto_runtime(project, factory, stdout=stdout, clock=FakeClock(NOW))
    rows = commands.perf_report(env="dev", as_json=True, runtime=runtime, **kwargs)
    return rows, runtime.stderr.getvalue(), json.loads(stdout.getvalue())


def test_a_release_slower_than_the_one_before_is_marked_with_the_rollback_that_puts_that_one_back(
    project: Path, factory: AwsFactory, store: history.History
) -> None:
    dims = service_behind_an_alb(factory)
    deployed(store, NOW - timedelta(hours=5), "app", "bbbbbbbbbbbb", "aaaaaaaaaaaa", "deploy.auto")
    deployed(store, SLOW_FROM, "app", "cccccccccccc", "bbbbbbbbbbbb", "deploy.auto")
    put(factory, "AWS/ApplicationELB", NOW - timedelta(hours=7), requests(dims, 50, 0.5))  # before the window
    put(factory, "AWS/ApplicationELB", NOW - timedelta(hours=5, minutes=30), requests(dims, 80, 0.03))
    put(factory, "AWS/ApplicationELB", NOW - timedelta(hours=3), requests(dims, 120, 0.04, errors=1))
    put(factory, "AWS/ApplicationELB", NOW - timedelta(minutes=30), requests(dims, 200, 0.25, errors=2))

    rows, text, document = perf_of(project, factory, since="6h")

    app = rows["app"]
    assert [(r.release.sha[0], r.served and r.served.counts.requests) for r in app] == [
        ("a", 80),
        ("b", 120),
        ("c", 200),
    ]
    assert app[1].served is not None and app[1].served.latency == {"p50": 0.04, "p90": 0.04, "p99": 0.04}
    assert app[1].slower is None and not app[1].more_errors
    assert app[2].slower == pytest.approx(6.25) and not app[2].more_errors
    assert "🐢 p90 6.2× the release before's (40 ms)" in text or "🐢 p90 6.3× the release before's (40 ms)" in text
    assert (
        "❗ the live release of app (cccccccccccc) answers slower (p90 250 ms, was 40 ms) than bbbbbbbbbbbb: to put "
        "that one back, inv rollback --env dev --component app --to bbbbbbbbbbbb" in text
    )
    releases = document["components"][0]["releases"]
    assert document["components"][0]["component"] == "app" and len(releases) == 3
    assert releases[2] | {"from": None} == {
        "sha": "cccccccccccc",
        "from": None,
        "to": None,
        "live": True,
        "went_live": releases[2]["from"],
        "rollback": False,
        "failed": False,
        "who": releases[2]["who"],
        "requests": 200,
        "errors": 2,
        "error_rate": 0.01,
        "p50": 0.25,
        "p90": 0.25,
        "p99": 0.25,
        "judged_against": "bbbbbbbbbbbb",
        "slower": 6.25,
        "more_errors": False,
    }


def test_a_function_failing_more_than_the_release_before_is_marked(
    project: Path, factory: AwsFactory, store: history.History
) -> None:
    api_stack("car-rental-dev-login")
    deployed(store, SLOW_FROM, "lambda:login_handler", "dddddddddddd", "aaaaaaaaaaaa", "deploy.lambda login_handler")
    put(factory, "AWS/Lambda", NOW - timedelta(hours=3), invocations("car-rental-dev-login", 100, 120.0, errors=1))
    put(factory, "AWS/Lambda", NOW - timedelta(minutes=20), invocations("car-rental-dev-login", 60, 130.0, errors=9))

    rows, text, document = perf_of(project, factory, since="6h", component="lambda:login_handler")

    assert list(rows) == ["lambda:login_handler"]  # the one asked for; the app is not read
    first, live = rows["lambda:login_handler"]
    assert first.served is not None and first.served.latency["p90"] == pytest.approx(0.12)
    assert live.more_errors and live.slower is None
    assert "invocations" in text and "❗ more errors than the release before (1.0%)" in text
    assert "fails more (15.0%, was 1.0%)" in text
    assert "--component lambda:login_handler" in text
    assert document["notes"] == []


def test_releases_under_a_whole_minute_and_with_no_request_are_said_not_judged(
    project: Path, factory: AwsFactory, store: history.History
) -> None:
    service_behind_an_alb(factory)
    deployed(store, NOW - timedelta(seconds=20), "app", "bbbbbbbbbbbb", "aaaaaaaaaaaa", "deploy.auto")
    deployed(store, NOW - timedelta(seconds=10), "app", "aaaaaaaaaaaa", "bbbbbbbbbbbb", "rollback app")

    rows, text, _ = perf_of(project, factory, since="1h")

    # a: the window's start until 20 s ago; b: 10 s; a again: the last 10 s, within this minute
    assert [(r.release.sha[0], r.served is None) for r in rows["app"]] == [("a", False), ("b", True), ("a", True)]
    assert "no request reached it" in text and "live under a whole minute: nothing to read" in text
    assert "↩️  put back" in text and "❗" not in text


def test_limit_shows_the_newest_releases_each_judged_against_the_one_before_it(
    project: Path, factory: AwsFactory, store: history.History
) -> None:
    dims = service_behind_an_alb(factory)
    shas = ["a", "b", "c", "d"]
    for index, (sha, before) in enumerate(zip(shas[1:], shas, strict=False)):
        deployed(store, NOW - timedelta(hours=3 - index), "app", sha * 12, before * 12, "deploy.auto")
    put(factory, "AWS/ApplicationELB", NOW - timedelta(minutes=150), requests(dims, 50, 0.5))  # b's
    put(factory, "AWS/ApplicationELB", NOW - timedelta(minutes=90), requests(dims, 50, 0.03))  # c's
    put(factory, "AWS/ApplicationELB", NOW - timedelta(minutes=30), requests(dims, 50, 0.3))  # d's

    rows, text, _ = perf_of(project, factory, since="6h", limit=1)

    (live,) = rows["app"]
    assert live.release.sha == "d" * 12 and live.before is not None  # judged against c, which is not shown
    assert live.before.sha == "c" * 12 and live.before_served is not None
    assert live.before_served.latency["p90"] == 0.03 and live.slower == pytest.approx(10.0)
    assert "bbbbbbbbbbbb" not in text  # not shown; c only in the rollback's words:
    assert text.count("cccccccccccc") == 2 and "--to cccccccccccc" in text


def test_bad_input_is_refused(project: Path, factory: AwsFactory, store: history.History) -> None:
    for kwargs, said in (
        ({"since": "16d"}, "further than CloudWatch keeps"),
        ({"limit": 0}, "--limit must be at least 1"),
        ({"since": "15d"}, "pass 14d or less"),
        ({"since": "0s"}, "is not in the past"),
        ({"component": "lambda:nope"}, "lambda:nope has nothing to read in dev"),
        ({"component": "stack:data"}, "a stack serves no request of its own"),
        ({"component": "ecs"}, "unknown component 'ecs' for perf"),
        ({"component": "lambda:login_handler"}, "lambda:login_handler has nothing to read in dev"),
    ):
        with pytest.raises(UsageError, match=said):
            perf_of(project, factory, **kwargs)


def test_a_service_not_deployed_is_said_and_the_functions_still_shown(
    project: Path, factory: AwsFactory, store: history.History
) -> None:
    api_stack("car-rental-dev-login")
    deployed(store, NOW - timedelta(hours=1), "lambda:login_handler", "bbbbbbbbbbbb", "aaaaaaaaaaaa", "deploy.auto")
    put(factory, "AWS/Lambda", NOW - timedelta(minutes=20), invocations("car-rental-dev-login", 30, 20.0))
    rows, text, document = perf_of(project, factory)
    assert list(rows) == ["lambda:login_handler"] and rows["lambda:login_handler"][-1].served is not None
    assert document["notes"] and document["notes"][0].startswith("app: ")
    assert "⚠️  app: " in text and "lambda:login_handler\n" in text


def test_a_read_cloudwatch_still_throttles_is_said_and_the_others_shown(
    project: Path, factory: AwsFactory, store: history.History
) -> None:
    dims = service_behind_an_alb(factory)
    deployed(store, NOW - timedelta(hours=1), "app", "bbbbbbbbbbbb", "aaaaaaaaaaaa", "deploy.auto")
    put(factory, "AWS/ApplicationELB", NOW - timedelta(minutes=20), requests(dims, 30, 0.02))
    throttled = {
        "Error": {"Code": "Throttling", "Message": "Rate exceeded"},
        "ResponseMetadata": {"HTTPStatusCode": 400},
    }
    refused = iter([True, False])  # the first read is throttled (after botocore's retries, as AWS may), not the other

    def answer(params: dict[str, Any], **_: Any) -> Any:
        return (Mock(status_code=400), throttled) if next(refused) else None

    factory.client("cloudwatch").meta.events.register("before-call.cloudwatch.GetMetricData", answer)
    rows, text, document = perf_of(project, factory, since="3h")
    assert sorted(row.served is None for row in rows["app"]) == [False, True]
    assert "not read" in text and "CloudWatch throttled the reads of 1 release" in text
    assert document["notes"][-1].startswith("CloudWatch throttled the reads of 1 release")


def test_cloudwatch_refusing_the_read_is_an_error_naming_the_permission(
    project: Path, factory: AwsFactory, store: history.History
) -> None:
    service_behind_an_alb(factory)
    deployed(store, NOW - timedelta(hours=1), "app", "bbbbbbbbbbbb", "aaaaaaaaaaaa", "deploy.auto")
    denied = {
        "Error": {"Code": "AccessDenied", "Message": "not authorized to perform: cloudwatch:GetMetricData"},
        "ResponseMetadata": {"HTTPStatusCode": 403},
    }
    # each release's read is refused, as AWS refuses it (the reads run at once: a Stubber's queue is not for threads)
    factory.client("cloudwatch").meta.events.register(
        "before-call.cloudwatch.GetMetricData", lambda **_: (Mock(status_code=403), denied)
    )
    with pytest.raises(UsageError, match="cloudwatch:GetMetricData"):
        perf_of(project, factory, since="3h")
