"""The metrics AWS services put on their own (an ALB per request, Lambda per invocation), into moto's CloudWatch.

Every request the sandbox serves adds a few data points; moto keeps them all in one list, which each GetMetricData
reads whole (about 0.3 s for 100,000 points here, with the sandbox's lock held). So the sandbox keeps the data
points of the last :data:`RETENTION` only, where CloudWatch keeps 15 days: enough for a canary or an error watch,
and for the dashboards of a working day. Call with the sandbox lock held.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from moto.cloudwatch.models import Statistics
from moto.core.utils import utcnow

RETENTION = timedelta(hours=6)
TRIM_EVERY = 5000  # puts between two trims


class ServiceMetrics:
    def __init__(self) -> None:
        self._puts = 0

    def put(self, cloudwatch: Any, namespace: str, data: list[dict[str, Any]]) -> None:
        """Put ``data`` (PutMetricData's MetricData, as moto's backend takes it), now and then trimming what is older
        than :data:`RETENTION`."""
        cloudwatch.put_metric_data(namespace, data)
        self._puts += 1
        if self._puts % TRIM_EVERY == 0:
            trim(cloudwatch)


def trim(cloudwatch: Any, now: datetime | None = None) -> int:
    """Drop the data points older than :data:`RETENTION`; how many were dropped."""
    oldest = (now or utcnow()) - RETENTION
    kept = [datum for datum in cloudwatch.metric_data if not _older(datum.timestamp, oldest)]
    dropped = len(cloudwatch.metric_data) - len(kept)
    cloudwatch.metric_data[:] = kept
    return dropped


def _older(moment: Any, oldest: datetime) -> bool:
    """Whether a data point's time is before ``oldest`` (naive UTC, as moto keeps its own times)."""
    if not isinstance(moment, datetime):
        return False  # a time moto kept as it came: left alone
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC).replace(tzinfo=None)
    return bool(moment < oldest)


# CloudWatch's percentile statistics: p0 to p100, with decimals (p99.9)
PERCENTILE = re.compile(r"p(100(?:\.0+)?|\d{1,2}(?:\.\d+)?)")


def percentile(values: Sequence[float], p: float) -> float:
    """The ``p``th percentile of ``values`` (not empty) by nearest rank: the smallest value that at least ``p`` % of
    them are at or under."""
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def allow_percentiles() -> None:
    """moto's GetMetricData answers Sum, Average, Minimum, Maximum and SampleCount, and nothing for a percentile
    (``p90``, ``p99.9``), which CloudWatch computes from the values put: ``inv perf`` reads the app's and the
    functions' response times so. This gives moto's statistics the percentiles of the single values put (the sandbox's
    ALB and Lambda put one a request), and of sets of statistic values whose minimum is their maximum; a period of
    other sets alone (StatisticValues, which hold no distribution) has none. Idempotent: moto's class is patched
    once."""
    original = Statistics.get_statistics_for_type
    if getattr(original, "sandbox_patched", False):
        return

    def get_statistics_for_type(self: Statistics, stat: str) -> Any:
        match = PERCENTILE.fullmatch(stat)
        if match is None:
            return original(self, stat)
        # a set of statistic values whose minimum is its maximum holds its distribution too (CloudWatch says its
        # percentiles then: SampleCount 1, or Minimum = Maximum)
        values = self.metric_single_values_list + [
            float(s.min) for s in self.metric_aggregated_list if s.min == s.max for _ in range(int(s.sample_count))
        ]
        return percentile(values, float(match.group(1))) if values else None

    get_statistics_for_type.sandbox_patched = True  # type: ignore[attr-defined]
    get_statistics_for_type.unpatched = original  # type: ignore[attr-defined]
    Statistics.get_statistics_for_type = get_statistics_for_type  # type: ignore[method-assign]
