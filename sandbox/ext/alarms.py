"""CloudWatch alarms that change state as their metric does, which moto's never do (an alarm stays as it was put:
``OK``, "Unchecked: Initial alarm creation").

Every :data:`EVERY` seconds each metric alarm on one metric (Namespace, MetricName, its Dimensions, and a Statistic:
SampleCount, Average, Sum, Minimum, Maximum, or a percentile) is evaluated as CloudWatch evaluates it, from the data
points moto holds (those the sandbox's ALB and Lambda put, and any PutMetricData):

- its last ``EvaluationPeriods`` periods of ``Period`` seconds, ending now (CloudWatch's end at the last whole
  period, and its data arrive a minute late: the sandbox's alarms answer sooner than AWS's);
- a period breaches when its statistic compares with ``Threshold`` as ``ComparisonOperator`` says;
- ``ALARM`` when at least ``DatapointsToAlarm`` of them (all, by default) breach, else ``OK``; a period with no data
  as ``TreatMissingData`` says: ``missing`` (the default: not counted, and no data at all is
  ``INSUFFICIENT_DATA``), ``ignore`` (no data at all keeps the state), ``breaching``, ``notBreaching``.

A change of state is made as CloudWatch makes it (its reason, its time, the alarm's history); nothing is written when
the state stays. A percentile alarm (``ExtendedStatistic``: p99) is evaluated so too, from the single values put (a
period of sets of statistic values alone, other than sets whose minimum is their maximum, has none: no data);
``EvaluateLowSampleCountPercentile`` is not read (its periods are evaluated whatever their count). An alarm of metric
math or of anomaly detection is left as it is.

Composite alarms: moto had no ``PutCompositeAlarm`` (NotImplementedError); :func:`routes` gives it one, its rule
checked. After the metric alarms, each composite alarm is evaluated from its ``AlarmRule`` (``ALARM("name")``,
``OK(...)``, ``INSUFFICIENT_DATA(...)`` of an alarm's name or ARN, ``TRUE``, ``FALSE``, ``AND``, ``OR``, ``NOT``,
parentheses): ``ALARM`` when it holds, else ``OK``; an alarm the rule names that is not there is
``INSUFFICIENT_DATA`` to it.

moto had no ``DescribeAlarmHistory`` either: :func:`routes` gives it one, of the changes of state moto keeps (the
alarm watch reads it for an alarm that went to ALARM and back between two of its reads).
"""

from __future__ import annotations

import contextlib
import json
import logging
import operator
import re
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from moto.cloudwatch.exceptions import ValidationError
from moto.cloudwatch.responses import CloudWatchResponse
from moto.core.responses import ActionResult, EmptyResult
from moto.core.utils import utcnow

from sandbox.ext.service_metrics import PERCENTILE, allow_percentiles, percentile
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
    values: tuple[float, ...] = ()  # for a percentile: a single value's; a set of statistic values holds none, unless
    # its minimum is its maximum


def evaluable(alarm: Any) -> bool:
    """Whether the sandbox evaluates ``alarm`` (moto's Alarm): on one metric, a statistic of :data:`STATISTICS` or a
    percentile (``ExtendedStatistic`` p99), a threshold comparison, periods."""
    return (
        not getattr(alarm, "rule", None)
        and not getattr(alarm, "metric_data_queries", None)
        and bool(alarm.metric_name)
        and (alarm.statistic in STATISTICS or PERCENTILE.fullmatch(alarm.extended_statistic or "") is not None)
        and alarm.comparison_operator in COMPARISONS
        and int(alarm.period or 0) > 0
        and int(alarm.evaluation_periods or 0) > 0
    )


def statistic(name: str, points: Sequence[Point]) -> float | None:
    """The statistic ``name`` of a period's ``points``; None for a percentile of points without single values."""
    match = PERCENTILE.fullmatch(name)
    if match is not None:
        values = [value for p in points for value in p.values]
        return percentile(values, float(match.group(1))) if values else None
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
        # no data, or no single value to take a percentile of: a period without data to CloudWatch too
        value = statistic(alarm.statistic or alarm.extended_statistic, inside) if inside else None
        if value is None:
            if missing in ("breaching", "notBreaching"):
                evaluated += 1
                breaching += missing == "breaching"
            continue
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
            found.append(Point(when, 1.0, value, value, value, (value,)))
        else:
            low, high, count = float(datum.min), float(datum.max), float(datum.sample_count)
            # a set whose minimum is its maximum holds its distribution: its percentiles are that value
            values = (low,) * int(count) if low == high else ()
            found.append(Point(when, count, float(datum.sum), low, high, values))
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
        return evaluate_composites(cloudwatch)
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
    return changed + evaluate_composites(cloudwatch)


# -- composite alarms -------------------------------------------------------------------------------------------

_TOKEN = re.compile(
    r'\s*(?:(?P<state>ALARM|OK|INSUFFICIENT_DATA)\s*\(\s*(?:"(?P<quoted>[^"]*)"|(?P<bare>[^()\s"]+))\s*\)'
    r"|(?P<word>AND|OR|NOT|TRUE|FALSE)\b|(?P<open>\()|(?P<close>\)))"
)
Rule = Callable[[Callable[[str], str]], bool]  # an alarm rule, parsed: true or not, given each named alarm's state


def parse_rule(text: str) -> Rule:
    """A composite alarm's ``AlarmRule`` as a function of the named alarms' states (ValueError: not a rule)."""
    tokens: list[tuple[str, str]] = []
    position = 0
    while position < len(text.rstrip()):
        found = _TOKEN.match(text, position)
        if found is None:
            raise ValueError(f"the rule cannot be read at {text[position : position + 20]!r}")
        position = found.end()
        if found["state"]:
            tokens.append((found["state"], found["quoted"] if found["quoted"] is not None else found["bare"]))
        else:
            tokens.append((found["word"] or found["open"] or found["close"], ""))

    def joined(at: int, word: str, operand: Callable[[int], tuple[Rule, int]]) -> tuple[list[Rule], int]:
        """The operands from ``at`` joined by ``word`` (AND, OR), and where they end."""
        part, at = operand(at)
        parts = [part]
        while at < len(tokens) and tokens[at][0] == word:
            part, at = operand(at + 1)
            parts.append(part)
        return parts, at

    def expression(at: int) -> tuple[Rule, int]:
        parts, at = joined(at, "OR", term)
        return (lambda state: any(part(state) for part in parts)), at

    def term(at: int) -> tuple[Rule, int]:
        parts, at = joined(at, "AND", factor)
        return (lambda state: all(part(state) for part in parts)), at

    def factor(at: int) -> tuple[Rule, int]:
        if at >= len(tokens):
            raise ValueError("the rule ends where an alarm's state or TRUE, FALSE, NOT or ( was due")
        kind, name = tokens[at]
        if kind == "NOT":
            inner, at = factor(at + 1)
            return (lambda state: not inner(state)), at
        if kind == "(":
            inner, at = expression(at + 1)
            if at >= len(tokens) or tokens[at][0] != ")":
                raise ValueError("a ( is not closed")
            return inner, at + 1
        if kind in ("TRUE", "FALSE"):
            return (lambda _state: kind == "TRUE"), at + 1
        if kind in ("ALARM", "OK", "INSUFFICIENT_DATA"):
            return (lambda state: state(name) == kind), at + 1
        raise ValueError(f"{kind} where an alarm's state or TRUE, FALSE, NOT or ( was due")

    rule, at = expression(0)
    if at != len(tokens):
        raise ValueError(f"{tokens[at][0]} where AND, OR or the end was due")
    return rule


def _alarm_name(name_or_arn: str) -> str:
    """An alarm's name from its name or its ARN (arn:aws:cloudwatch:REGION:ACCOUNT:alarm:NAME)."""
    return name_or_arn.split(":alarm:", 1)[1] if ":alarm:" in name_or_arn else name_or_arn


def evaluate_composites(cloudwatch: Any) -> list[tuple[str, str]]:
    """Evaluate each composite alarm from its rule, again while one changes (a composite alarm of composite alarms),
    three rounds at most; (name, new state) of each change. Call with the sandbox lock held."""
    changed: list[tuple[str, str]] = []
    for _ in range(3):
        changed_now = []
        for alarm in [a for a in list(cloudwatch.alarms.values()) if getattr(a, "rule", None)]:
            try:
                rule = parse_rule(alarm.rule)
            except ValueError:
                continue

            def state(name: str) -> str:
                found = cloudwatch.alarms.get(_alarm_name(name))
                return str(found.state_value) if found is not None else "INSUFFICIENT_DATA"

            new = "ALARM" if rule(state) else "OK"
            if new == alarm.state_value and not str(alarm.state_reason).startswith(UNCHECKED):
                continue
            reason = f"the rule {alarm.rule} is {'true' if new == 'ALARM' else 'false'}"
            alarm.update_state(reason, json.dumps({"triggeringAlarms": []}), new)
            changed_now.append((alarm.name, new))
        changed += changed_now
        if not changed_now:
            break
    return changed


def keep_state(before: Any, alarm: Any) -> None:
    """``alarm`` (moto's, put again) in the state ``before`` had: PutMetricAlarm and PutCompositeAlarm overwrite an
    alarm's configuration and leave its state."""
    alarm.state_value, alarm.state_reason = before.state_value, before.state_reason
    alarm.state_reason_data, alarm.state_updated_timestamp = before.state_reason_data, before.state_updated_timestamp
    alarm.history = before.history


def routes() -> None:
    """Give moto's CloudWatch PutCompositeAlarm (:func:`put_composite_alarm`) and DescribeAlarmHistory
    (:func:`describe_alarm_history`); once per process."""
    CloudWatchResponse.put_composite_alarm = put_composite_alarm  # type: ignore[attr-defined]
    CloudWatchResponse.describe_alarm_history = describe_alarm_history  # type: ignore[attr-defined]


def put_composite_alarm(self: CloudWatchResponse) -> EmptyResult:
    """PutCompositeAlarm: the alarm made (or its configuration replaced, its state kept), its rule checked first."""
    name, rule = self._get_param("AlarmName"), self._get_param("AlarmRule")
    try:
        parse_rule(str(rule or ""))
    except ValueError as exc:
        raise ValidationError(f"AlarmRule is not valid: {exc}") from None
    backend = self.cloudwatch_backend
    before = backend.alarms.get(name)
    alarm = backend.put_metric_alarm(
        name=name,
        namespace="",
        metric_name="",
        comparison_operator="",
        evaluation_periods=0,
        period=0,
        threshold=0.0,
        statistic="",
        description=self._get_param("AlarmDescription") or "",
        dimensions=[],
        alarm_actions=self._get_param("AlarmActions", []),
        ok_actions=self._get_param("OKActions", []),
        insufficient_data_actions=self._get_param("InsufficientDataActions", []),
        actions_enabled=self._get_param("ActionsEnabled", True),
        rule=rule,
        tags=self._get_param("Tags", []),
    )
    if before is not None:  # as PutCompositeAlarm on AWS: its configuration overwritten, its state as it was
        keep_state(before, alarm)
    return EmptyResult()


def state_updates(alarm: Any) -> list[dict[str, Any]]:
    """An alarm's changes of state as DescribeAlarmHistory says them, oldest first. moto keeps, at each change, the
    state the alarm left (its value, reason, reason data and since when): the state it went to is the next one
    kept, or the alarm's own for the last change."""
    kept = [entry[1:] for entry in alarm.history if entry and entry[0] == "StateUpdate"]
    now = (alarm.state_reason, alarm.state_reason_data, alarm.state_value, alarm.state_updated_timestamp)
    updates = []
    for old, new in zip(kept, [*kept[1:], now], strict=False):  # none kept: no change
        old_state = {"stateValue": old[2], "stateReason": old[0]}
        new_state = {"stateValue": new[2], "stateReason": new[0]}
        for state, data in ((old_state, old[1]), (new_state, new[1])):
            with contextlib.suppress(ValueError):
                state["stateReasonData"] = json.loads(data or "{}")
        updates.append(
            {
                "AlarmName": alarm.name,
                "AlarmType": "CompositeAlarm" if getattr(alarm, "rule", None) else "MetricAlarm",
                "Timestamp": new[3],
                "HistoryItemType": "StateUpdate",
                "HistorySummary": f"Alarm updated from {old[2]} to {new[2]}",
                "HistoryData": json.dumps({"version": "1.0", "oldState": old_state, "newState": new_state}),
            }
        )
    return updates


HISTORY_PAGE = 100  # DescribeAlarmHistory's MaxRecords, at most and by default


def _when(item: dict[str, Any]) -> datetime:
    """A history item's time, naive UTC."""
    return naive_utc(item["Timestamp"]) or datetime.min


def describe_alarm_history(self: CloudWatchResponse) -> ActionResult:
    """DescribeAlarmHistory: the alarms' changes of state (the only history moto keeps), of one alarm or all, of the
    types asked (metric alarms alone by default, as on AWS), between StartDate and EndDate, newest first unless
    ScanBy says TimestampAscending, MaxRecords a page (NextToken: where the next begins)."""
    name, kind = self._get_param("AlarmName"), self._get_param("HistoryItemType")
    types = self._get_param("AlarmTypes", []) or ["MetricAlarm"]
    start, end = (naive_utc(self._get_param(key)) for key in ("StartDate", "EndDate"))
    alarms = [a for a in list(self.cloudwatch_backend.alarms.values()) if name is None or a.name == name]
    items = [
        item
        for alarm in alarms
        for item in state_updates(alarm)
        if item["AlarmType"] in types
        and kind in (None, "StateUpdate")
        and (start or datetime.min) <= _when(item) <= (end or datetime.max)
    ]
    items.sort(
        key=_when,
        reverse=self._get_param("ScanBy") != "TimestampAscending",
    )
    size = min(int(self._get_param("MaxRecords") or HISTORY_PAGE), HISTORY_PAGE)
    first = int(self._get_param("NextToken") or 0)
    result: dict[str, Any] = {"AlarmHistoryItems": items[first : first + size]}
    if first + size < len(items):
        result["NextToken"] = str(first + size)
    return ActionResult(result)


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
        routes()
        allow_percentiles()  # CloudWatch's too: GetMetricData's p90 (inv perf)

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
