"""Deploy metrics: each recorded run's figures in CloudWatch (moto), beside its history record."""

from __future__ import annotations

import dataclasses
import io
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber

from deploykit import commands, history, metrics
from deploykit.aws import AwsFactory
from deploykit.config import EnvConfig, load_config
from deploykit.errors import DeployKitError, StepFailed, UsageError
from deploykit.plan import Plan, RunReport, StepRecord
from tests.functional.conftest import Deploy


def sums(env: str, name: str, *extra: dict[str, str]) -> float:
    """The sum of metric ``name`` over the last hour (moto keeps what was put)."""
    now = datetime.now(UTC)
    found = boto3.client("cloudwatch", region_name="eu-west-1").get_metric_statistics(
        Namespace=metrics.NAMESPACE,
        MetricName=name,
        Dimensions=[{"Name": "Environment", "Value": env}, *extra],
        StartTime=now - timedelta(hours=1),
        EndTime=now + timedelta(minutes=1),
        Period=3600,
        Statistics=["Sum"],
    )
    return float(sum(p["Sum"] for p in found["Datapoints"]))


def run(project: Path, env: EnvConfig, plan: Plan) -> str:
    runtime = commands.Runtime(config_path=project / "deploy.toml", stdout=io.StringIO(), stderr=io.StringIO())
    config = dataclasses.replace(load_config(project / "deploy.toml"), environments={env.name: env})
    commands.run_plan(runtime, config, env, plan, dry_run=False, as_json=False)
    return str(runtime.stderr.getvalue())  # type: ignore[attr-defined]


def test_a_run_puts_its_counts_its_chain_time_and_its_step_times(
    bucket: str, dev_env: EnvConfig, project: Path
) -> None:
    plan = Plan("dev", (Deploy(),), "deploy.auto", deploys=(("app", "aaaaaaaaaaaa"),))
    run(project, dev_env, plan)
    assert sums("dev", "Deployments") == 1 and sums("dev", "FailedRuns") == 0
    store = history.History.of(AwsFactory(dev_env), dev_env)
    assert store is not None
    [record] = store.records()
    assert sums("dev", "DeploySeconds", {"Name": "Chain", "Value": "app"}) == pytest.approx(record.seconds)  # its time
    found = boto3.client("cloudwatch", region_name="eu-west-1").list_metrics(Namespace=metrics.NAMESPACE)
    names = {(m["MetricName"], tuple((d["Name"], d["Value"]) for d in m["Dimensions"])) for m in found["Metrics"]}
    assert ("DeploySeconds", (("Environment", "dev"), ("Chain", "app"))) in names
    assert ("StepSeconds", (("Environment", "dev"), ("Step", "deploy"))) in names


def test_metrics_off_puts_nothing_and_the_record_is_written_all_the_same(
    bucket: str, dev_env: EnvConfig, project: Path
) -> None:
    quiet = dataclasses.replace(dev_env, metrics=False)
    run(project, quiet, Plan("dev", (Deploy(),), "deploy.auto", deploys=(("app", "aaaaaaaaaaaa"),)))
    assert (
        boto3.client("cloudwatch", region_name="eu-west-1").list_metrics(Namespace=metrics.NAMESPACE)["Metrics"] == []
    )
    store = history.History.of(AwsFactory(quiet), quiet)
    assert store is not None and len(store.records()) == 1


def test_cloudwatch_refusing_the_metrics_is_said_and_fails_nothing(
    bucket: str, dev_env: EnvConfig, project: Path
) -> None:
    factory = AwsFactory(dev_env)
    cloudwatch = factory.client("cloudwatch")
    stubber = Stubber(cloudwatch)
    stubber.add_client_error("put_metric_data", "AccessDenied", "not allowed to cloudwatch:PutMetricData", 403)
    stubber.activate()
    runtime = commands.Runtime(
        config_path=project / "deploy.toml",
        stdout=io.StringIO(),
        stderr=io.StringIO(),
        aws_factory=lambda env: factory,
    )
    config = load_config(project / "deploy.toml")
    plan = Plan("dev", (Deploy(),), "deploy.auto", deploys=(("app", "aaaaaaaaaaaa"),))
    report = commands.run_plan(runtime, config, dev_env, plan, dry_run=False, as_json=False)
    assert report is not None and report.ok
    said = runtime.stderr.getvalue()  # type: ignore[attr-defined]
    assert "the deployment worked but its metrics were not put in CloudWatch" in said
    assert "AccessDenied" in said and "metrics = false in [environments.dev]" in said
    store = history.History.of(factory, dev_env)
    assert store is not None and len(store.records()) == 1  # the record went in all the same
    stubber.assert_no_pending_responses()


def record(
    command: str, ok: bool = True, steps: list[dict[str, Any]] | None = None, error: DeployKitError | None = None
) -> history.Record:
    plan = Plan("dev", (), command)
    records = [
        StepRecord(str(s["step"]), "x", s["status"], float(s["seconds"]), str(s.get("detail", "")))
        for s in (steps or [])
    ]
    report = RunReport(plan, records, 3.5, None if ok else error or StepFailed("it broke"))
    return history.record_of(report, components={"app": "a" * 12}, base={}, head="a" * 12, who="ci")


def test_what_each_kind_of_run_contributes() -> None:
    steps = [
        {"step": "build", "status": "done", "seconds": 0.5},
        {"step": "deploy-stack", "status": "done", "seconds": 2.0, "detail": "CarRentalApiStack: updated in 2.0s"},
        {"step": "push", "status": "skipped", "seconds": 0.1},
        {"step": "wait-healthy", "status": "failed", "seconds": 1.0},
    ]

    def short(found: list[dict[str, Any]]) -> list[tuple[str, float, str]]:
        return [(d["MetricName"], d["Value"], d["Dimensions"][-1]["Value"]) for d in found]

    assert short(metrics.data(record("deploy.auto", steps=steps))) == [
        ("Deployments", 1, "dev"),
        ("FailedRuns", 0, "dev"),
        ("DeploySeconds", 3.5, "app"),
        ("StepSeconds", 0.5, "build"),
        ("StepSeconds", 2.0, "deploy-stack:CarRentalApiStack"),
    ]
    assert short(metrics.data(record("deploy.app", ok=False, steps=steps[-1:]))) == [
        ("Deployments", 0, "dev"),
        ("FailedRuns", 1, "dev"),
    ]
    assert short(metrics.data(record("automatic rollback: app"))) == [("Rollbacks", 1, "dev")]
    no_change = [{"step": "deploy-stack", "status": "skipped", "seconds": 0.1, "detail": "X: no changes"}]
    assert short(metrics.data(record("deploy.stack X", steps=no_change))) == [
        ("Deployments", 0, "dev"),
        ("FailedRuns", 0, "dev"),
    ]
    assert metrics.data(record("destroy")) == []
    # a guard refused it (exit 2): no deployment, no failure; only what its steps did before
    refusal = UsageError("refusing to deploy X to a protected environment unapproved")
    assert record("deploy.stack X", ok=False, steps=steps[:1], error=refusal).refused
    assert short(metrics.data(record("deploy.stack X", ok=False, steps=steps[:1], error=refusal))) == [
        ("StepSeconds", 0.5, "build")
    ]
    [datum] = metrics.data(record("rollback app → aaaaaaaaaaaa"))
    assert datum["Timestamp"].tzinfo is not None and datum["Unit"] == "Count"


def test_the_dashboard_link_is_the_console_on_aws_and_the_name_on_the_sandbox(dev_env: EnvConfig) -> None:
    assert metrics.dashboard_link(dev_env, "car-rental-dev-deploys") == (
        "https://eu-west-1.console.aws.amazon.com/cloudwatch/home?region=eu-west-1"
        "#dashboards/dashboard/car-rental-dev-deploys"
    )
    local = dataclasses.replace(dev_env, endpoint_url="http://127.0.0.1:4566")
    assert "--endpoint-url http://127.0.0.1:4566 cloudwatch get-dashboard" in metrics.dashboard_link(local, "x")
