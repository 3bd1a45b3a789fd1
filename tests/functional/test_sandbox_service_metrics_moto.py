"""The sandbox keeps the metrics its ALB and Lambda put for a bounded time (sandbox.ext.service_metrics)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from moto.cloudwatch.models import CloudWatchBackend, Statistics

from sandbox.ext import service_metrics
from sandbox.ext.service_metrics import RETENTION, ServiceMetrics, trim

NOW = datetime(2026, 11, 29, 12, 0)  # naive UTC, as moto keeps its own times


def backend() -> CloudWatchBackend:
    return CloudWatchBackend("us-east-1", "123456789012")


def datum(name: str, when: datetime | None) -> dict[str, object]:
    found: dict[str, object] = {"MetricName": name, "Value": 1, "Unit": "Count", "Dimensions": []}
    return found | ({"Timestamp": when} if when else {})


def test_data_points_older_than_the_retention_are_dropped_whatever_their_zone() -> None:
    cloudwatch = backend()
    cloudwatch.put_metric_data("AWS/Lambda", [datum("old", NOW - RETENTION - timedelta(seconds=1))])
    cloudwatch.put_metric_data("deploykit", [datum("old-aware", (NOW - RETENTION).replace(tzinfo=UTC) - timedelta(1))])
    cloudwatch.put_metric_data("AWS/Lambda", [datum("recent", NOW - timedelta(minutes=5))])
    cloudwatch.put_metric_data("deploykit", [datum("recent-aware", NOW.replace(tzinfo=UTC))])
    assert trim(cloudwatch, now=NOW) == 2
    assert [d.name for d in cloudwatch.metric_data] == ["recent", "recent-aware"]


def test_puts_trim_now_and_then(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(service_metrics, "TRIM_EVERY", 3)
    cloudwatch, metrics = backend(), ServiceMetrics()
    cloudwatch.put_metric_data("AWS/Lambda", [datum("old", datetime.now(UTC) - RETENTION - timedelta(hours=1))])
    metrics.put(cloudwatch, "AWS/Lambda", [datum("a", None)])
    metrics.put(cloudwatch, "AWS/Lambda", [datum("b", None)])
    assert len(cloudwatch.metric_data) == 3  # not yet
    metrics.put(cloudwatch, "AWS/Lambda", [datum("c", None)])
    assert [d.name for d in cloudwatch.metric_data] == ["a", "b", "c"]


def test_get_metric_data_answers_percentiles_of_the_values_put(monkeypatch: pytest.MonkeyPatch) -> None:
    current = Statistics.get_statistics_for_type  # moto's own (a sandbox in this process may have patched it)
    monkeypatch.setattr(Statistics, "get_statistics_for_type", getattr(current, "unpatched", current))
    cloudwatch = backend()
    for value in range(1, 101):  # 1 to 100
        cloudwatch.put_metric_data("AWS/ApplicationELB", [datum("TargetResponseTime", NOW) | {"Value": value / 1000}])
    queries = [
        {"Id": stat.replace(".", "_"), "MetricStat": {"Metric": metric(), "Period": 60, "Stat": stat}}
        for stat in ("p50", "p90", "p99.9", "p100", "Average")
    ]

    def answered() -> dict[str, list[float]]:
        found = cloudwatch.get_metric_data(queries, NOW - timedelta(minutes=1), NOW + timedelta(minutes=1))
        return {result["id"]: result["values"] for result in found}

    assert answered()["p90"] == [None]  # moto alone has no percentile
    service_metrics.allow_percentiles()
    service_metrics.allow_percentiles()  # once is enough: a second call patches nothing again
    found = answered()
    assert found == {"p50": [0.05], "p90": [0.09], "p99_9": [0.1], "p100": [0.1], "Average": [pytest.approx(0.0505)]}
    assert service_metrics.percentile([3.0], 50) == 3.0 and service_metrics.percentile([1.0, 2.0], 0) == 1.0


def metric() -> dict[str, object]:
    return {"Namespace": "AWS/ApplicationELB", "MetricName": "TargetResponseTime", "Dimensions": []}
