"""The sandbox keeps the metrics its ALB and Lambda put for a bounded time (sandbox.ext.service_metrics)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from moto.cloudwatch.models import CloudWatchBackend

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
