"""CloudWatch alarms that change state as their metric does, which moto's never do (an alarm stays as it was put:
``OK``, "Unchecked: Initial alarm creation").

Every :data:`EVERY` seconds each metric alarm on one metric (Namespace, MetricName, its Dimensions, and a Statistic:
SampleCount, Average, Sum, Minimum, Maximum) is evaluated as CloudWatch evaluates it, from the data points moto holds
(those the sandbox's ALB and Lambda put, and any PutMetricData):

- its last ``EvaluationPeriods`` periods of ``Period`` seconds, ending now (CloudWatch's end at the last whole
  period, and its data arrive a minute late: the sandbox's alarms answer sooner than AWS's);
- a period breaches when its statistic compares with ``Threshold`` as ``ComparisonOperator`` says;
- ``ALARM`` when at least ``DatapointsToAlarm`` of them (all, by default) breach, else ``OK``; a period with no data
  as ``TreatMissingData`` says: ``missing`` (the default: not counted, and no data at all is
  ``INSUFFICIENT_DATA``), ``ignore`` (no data at all keeps the state), ``breaching``, ``notBreaching``.

A change of state is made as CloudWatch makes it (its reason, its time, the alarm's history); nothing is written when
the state stays. An alarm of metric math, of a percentile, of anomaly detection, and a composite alarm (moto cannot
make one) are left as they are.
"""

from __future__ import annotations

import json
import logging
import operator
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from moto.core.utils import utcnow

from sandbox.server import PartStatus
from sandbox.settings import Settings

if TYPE_CHECKING:
    from sandbox.server import Sandbox

log = logging.getLogger("sandbox.alarms")

EVERY = 1.0  # seconds between two evaluations of every alarm
UNCHECKED = "Unchecked"  # the reason moto gives a new alarm (OK, where AWS's is INSUFFICIENT_DATA): not evaluated yet

# a comparison operator: whether a value breaches the threshold, and how the reason says it
COMPARISONS: dict[str, tuple[Callable[[float, float], bool], str]] = {
    "GreaterThanOrEqualToThreshold": (operator.ge, "greater than or equal to"),
    "GreaterThanThreshold": (operator.gt, "greater than"),
    "LessThanThreshold": (operator.lt, "less than"),
    "LessThanOrEqualToThreshold": (operator.le, "less than or equal to"),
}
STATISTICS = ("SampleCount", "Average", "Sum", "Minimum", "Maximum")


@dataclass(frozen=True)
class Point:
    """One data point of a metric, as moto keeps it: a single value, or a set of statistic values."""

    when: datetime  # naive UTC
    count: float
    total: float
    low: float
    high: float


def evaluable(alarm: Any) -> bool:
    """Whether the sandbox evaluates ``alarm`` (moto's Alarm): on one metric, a statistic of :data:`STATISTICS`, a
    threshold comparison, periods."""
    return (
        not getattr(alarm, "rule", None)
        and not getattr(alarm, "metric_data_queries", None)
        and bool(alarm.metric_name)
        and alarm.statistic in STATISTICS
        and alarm.comparison_operator in COMPARISONS
        and int(alarm.period or 0) > 0
        and int(alarm.evaluation_periods or 0) > 0
    )


def statistic(name: str, points: Sequence[Point]) -> float:
    count = sum(p.count for p in points)
    if name == "SampleCount":
        return count
    if name == "Sum":
        return sum(p.total for p in points)
    if name == "Average":
        return sum(p.total for p in points) / count if count else 0.0
    if name == "Minimum":
        return min(p.low for p in points)
    return max(p.high for p in points)


def evaluate(alarm: Any, points: Sequence[Point], now: datetime) -> tuple[str, str] | None:
    """(state, reason) of ``alarm`` (moto's Alarm) from its metric's ``points`` at ``now`` (naive UTC); None when its
    state stays as it is."""
    period, periods = timedelta(seconds=int(alarm.period)), int(alarm.evaluation_periods)
    needed = int(alarm.datapoints_to_alarm or periods)
    missing = alarm.treat_missing_data or "missing"
    values: list[tuple[datetime, float]] = []  # the periods with data, newest first
    breaching = evaluated = 0
    check, words = COMPARISONS[alarm.comparison_operator]
    threshold = float(alarm.threshold)
    for index in range(periods):
        end = now - index * period
        inside = [p for p in points if end - period <= p.when < end]
        if not inside:
            if missing in ("breaching", "notBreaching"):
                evaluated += 1
                breaching += missing == "breaching"
            continue
        value = statistic(alarm.statistic, inside)
        values.append((end - period, value))
        evaluated += 1
        breaching += bool(check(value, threshold))
    if not values and missing in ("missing", "ignore"):
        if missing == "ignore":
            return None
        state = "INSUFFICIENT_DATA"
        reason = f"Insufficient Data: {periods} datapoint{'s' if periods != 1 else ''} were unknown."
    else:
        state = "ALARM" if breaching >= needed else "OK"
        shown = ", ".join(f"{value:g} ({when:%d/%m/%y %H:%M:%S})" for when, value in values) or "no data"
        crossed = "Threshold Crossed" if state == "ALARM" else "Threshold not crossed"
        reason = (
            f"{crossed}: {breaching} out of the last {evaluated} datapoints [{shown}] "
            f"{'was' if breaching == 1 else 'were'} {words} the threshold ({threshold:g}) "
            f"(minimum {needed} datapoint{'s' if needed != 1 else ''} for OK -> ALARM transition)."
        )
    if state == alarm.state_value and not str(alarm.state_reason).startswith(UNCHECKED):
        return None
    return state, reason


def points_of(alarm: Any, data: Iterable[Any], since: datetime) -> list[Point]:
    """The data points (moto's MetricDatum and MetricAggregatedDatum) of ``alarm``'s metric from ``since`` on: its
    namespace, its name and exactly its dimensions."""
    dimensions = sorted((d.name, d.value) for d in alarm.dimensions)
    found: list[Point] = []
    for datum in data:
        if datum.namespace != alarm.namespace or datum.name != alarm.metric_name:
            continue
        when = naive_utc(datum.timestamp)
        if when is None or when < since:
            continue
        if sorted((d.name, d.value) for d in datum.dimensions) != dimensions:
            continue
        if hasattr(datum, "value"):
            value = float(datum.value)
            found.append(Point(when, 1.0, value, value, value))
        else:
            found.append(Point(when, float(datum.sample_count), float(datum.sum), float(datum.min), float(datum.max)))
    return found


def naive_utc(moment: Any) -> datetime | None:
    """A data point's time as naive UTC (moto keeps datetimes, aware or not, and may keep a time as it came)."""
    if isinstance(moment, str):
        try:
            moment = datetime.fromisoformat(moment)
        except ValueError:
            return None
    if not isinstance(moment, datetime):
        return None
    return moment.astimezone(UTC).replace(tzinfo=None) if moment.tzinfo else moment


def recent_data(data: Sequence[Any], since: datetime) -> list[Any]:
    """The data points from ``since`` on, read from the newest back to the first older one (moto appends them as they
    are put, and a point put without a time is given the time of its put): the sandbox's six hours of points are not
    read each second. A point put later with a time of its own before that one's is not seen."""
    found: list[Any] = []
    for datum in reversed(data):
        when = naive_utc(datum.timestamp)
        if when is not None and when < since:
            break
        found.append(datum)
    return found


def evaluate_all(cloudwatch: Any, now: datetime | None = None) -> list[tuple[str, str]]:
    """Evaluate every alarm of moto's CloudWatch backend at ``now`` (naive UTC), changing the state of those whose
    state changes; (name, new state) of each. Call with the sandbox lock held."""
    now = now or utcnow()
    alarms = [alarm for alarm in list(cloudwatch.alarms.values()) if evaluable(alarm)]
    if not alarms:
        return []
    longest = max(int(a.period) * int(a.evaluation_periods) for a in alarms)
    since = now - timedelta(seconds=longest)
    recent = recent_data(cloudwatch.metric_data, since)
    changed: list[tuple[str, str]] = []
    for alarm in alarms:
        outcome = evaluate(alarm, points_of(alarm, recent, since), now)
        if outcome is None:
            continue
        state, reason = outcome
        data = {"version": "1.0", "queryDate": now.strftime("%Y-%m-%dT%H:%M:%S.000+0000"), "threshold": alarm.threshold}
        alarm.update_state(reason, json.dumps(data), state)
        changed.append((alarm.name, state))
    return changed


class AlarmEvaluator:
    """The sandbox's extension: :func:`evaluate_all` every :data:`EVERY` seconds, in a thread of its own."""

    name = "cloudwatch alarms"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._sandbox: Sandbox | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def install(self, sandbox: Sandbox) -> None:
        self._sandbox = sandbox

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="alarms", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _loop(self) -> None:
        assert self._sandbox is not None
        while not self._stop.wait(EVERY):
            try:
                with self._sandbox.lock:
                    changed = evaluate_all(self._sandbox.backend("cloudwatch"))
                for name, state in changed:
                    log.info("alarm %s: %s", name, state)
            except Exception:  # one bad alarm or datum must not end the evaluations
                log.exception("evaluating the alarms failed")

    def status(self) -> list[PartStatus]:
        alarms = len(self._sandbox.backend("cloudwatch").alarms) if self._sandbox else 0
        running = self._thread is not None and self._thread.is_alive()
        detail = f"{alarms} alarm{'s' if alarms != 1 else ''}, evaluated every {EVERY:g}s"
        return [PartStatus(self.name, self.settings.endpoint_url, running, detail if running else "not evaluating")]
