"""deploykit.alarm_list's decisions, which read nothing: the rows of ``inv alarms``, how long an alarm takes to
leave ALARM, the wait it suggests."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from deploykit.alarm_list import clears_within, rows, suggested_wait, table
from deploykit.watch import in_alarm, state_changed

WHEN = datetime(2026, 12, 6, 18, 20, 4, tzinfo=UTC)


def metric(state: str = "OK", period: int = 60, periods: int = 3, reason: str = "fine") -> dict[str, Any]:
    return {
        "StateValue": state,
        "StateUpdatedTimestamp": WHEN,
        "StateReason": reason,
        "Period": period,
        "EvaluationPeriods": periods,
    }


def test_a_start_s_alarms_are_each_shown_once_and_a_name_none_answers_is_missing() -> None:
    found = {"app-5xx": metric("ALARM", reason="Threshold\n  Crossed"), "app-p99": metric(), "db": metric()}
    found["app-all"] = {"StateValue": "OK", "AlarmRule": 'ALARM("app-5xx")', "StateUpdatedTimestamp": WHEN}
    said = rows(["app-5xx", "app-*", "gone", "nope-*"], found, "eu-west-1")
    assert [(r.name, r.state, r.kind) for r in said] == [
        ("app-5xx", "ALARM", "metric"),
        ("app-all", "OK", "composite"),
        ("app-p99", "OK", "metric"),
        ("gone", "MISSING", ""),
        ("nope-*", "MISSING", ""),
    ]
    assert said[0].reason == "Threshold Crossed" and said[0].since == "2026-12-06T18:20:04Z"
    assert said[4].reason == "no alarm in CloudWatch starts with it (eu-west-1)"
    shown = table(said, datetime(2026, 12, 6, 18, 23, 14, tzinfo=UTC)).splitlines()
    assert shown[2].startswith("🔔 app-5xx") and "18:20:04 UTC (3m10s ago)" in shown[2]
    assert in_alarm(found) == ["app-5xx"]


def test_an_alarm_leaves_alarm_within_its_periods_and_on_aws_the_minute_its_metrics_come_late() -> None:
    assert clears_within(metric(period=60, periods=3), local=False) == 240.0
    assert clears_within(metric(period=10, periods=1), local=True) == 10.0
    composite = {"StateValue": "ALARM", "AlarmRule": "ALARM(a)"}
    assert clears_within(composite, local=False) is None  # it follows its alarms
    math = {"EvaluationPeriods": 2, "Metrics": [{"Id": "e", "Expression": "m/n"}, {"MetricStat": {"Period": 300}}]}
    assert clears_within(math, local=False) == 660.0  # a metric math alarm: its metrics' longest period
    found = {"a": metric("ALARM", period=60, periods=3), "b": metric("ALARM", period=300, periods=2)}
    assert suggested_wait(found, ["a", "b"], local=False) == "22m"  # (600 + 60) s, twice
    assert suggested_wait(found, ["a"], local=False) == "8m"
    assert suggested_wait({"c": metric("ALARM", period=2, periods=1)}, ["c"], local=True) == "1m"  # a minute at least
    # periods not said: five minutes (and AWS's late minute), twice; on the sandbox a minute, twice
    assert suggested_wait({"c": composite}, ["c"], local=False) == "12m"
    assert suggested_wait({"c": composite}, ["c"], local=True) == "2m"
    assert suggested_wait(found, ["a"], local=False, waited=1800) == "60m"  # twice what was waited, at least
    assert suggested_wait(found, ["a"], local=False, waited=10800) == "180m"  # and 3 hours at most, the longest wait


def test_an_alarm_s_state_changed_when_it_went_to_its_state_not_at_each_update_of_its_reason() -> None:
    """AWS moves a composite alarm's StateUpdatedTimestamp at any change of its reason: the time it went to its
    state is StateTransitionedTimestamp, where AWS says it (moto does not)."""
    later = datetime(2026, 12, 6, 18, 40, tzinfo=UTC)
    assert state_changed({"StateUpdatedTimestamp": later, "StateTransitionedTimestamp": WHEN}) == WHEN
    assert state_changed({"StateUpdatedTimestamp": later}) == later
    assert state_changed({}) is None
