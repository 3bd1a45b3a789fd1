"""The sandbox's CloudWatch alarms (sandbox.ext.alarms), on in-process moto: each metric alarm evaluated from the data
points moto holds, as CloudWatch evaluates it, its state changed only when it changes."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from moto import mock_aws
from moto.cloudwatch.models import cloudwatch_backends
from moto.core import DEFAULT_ACCOUNT_ID

from sandbox.ext.alarms import evaluate_all, parse_rule, recent_data

REGION = "eu-west-1"
LB = [{"Name": "LoadBalancer", "Value": "app/car-rental/1"}]


@pytest.fixture
def cloudwatch() -> Iterator[Any]:
    with mock_aws():
        yield boto3.client("cloudwatch", region_name=REGION)


def backend() -> Any:
    return cloudwatch_backends[DEFAULT_ACCOUNT_ID][REGION]


def alarm(cloudwatch: Any, name: str = "5xx", **settings: Any) -> None:
    """An alarm on the ALB's 5xx (``settings``: others; one set to None: left out)."""
    given = {
        "AlarmName": name,
        "Namespace": "AWS/ApplicationELB",
        "MetricName": "HTTPCode_Target_5XX_Count",
        "Dimensions": LB,
        "Statistic": "Sum",
        "Period": 10,
        "EvaluationPeriods": 1,
        "Threshold": 5,
        "ComparisonOperator": "GreaterThanOrEqualToThreshold",
        **settings,
    }
    cloudwatch.put_metric_alarm(**{key: value for key, value in given.items() if value is not None})


def put(cloudwatch: Any, value: float, ago: float = 0, dimensions: list[dict[str, str]] | None = None) -> None:
    when = datetime.now(UTC) - timedelta(seconds=ago)
    datum = {"MetricName": "HTTPCode_Target_5XX_Count", "Dimensions": LB, "Value": value, "Timestamp": when}
    if dimensions is not None:
        datum["Dimensions"] = dimensions
    cloudwatch.put_metric_data(Namespace="AWS/ApplicationELB", MetricData=[datum])


def state(cloudwatch: Any, name: str = "5xx") -> dict[str, Any]:
    return dict(cloudwatch.describe_alarms(AlarmNames=[name])["MetricAlarms"][0])


def now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def test_an_alarm_goes_to_alarm_when_its_period_crosses_the_threshold_and_back_to_ok(cloudwatch: Any) -> None:
    alarm(cloudwatch)
    put(cloudwatch, 2, ago=3)
    assert evaluate_all(backend()) == [("5xx", "OK")]  # moto's alarm starts OK, "Unchecked": said as evaluated
    assert state(cloudwatch)["StateReason"].startswith("Threshold not crossed: 0 out of the last 1 datapoints [2 (")
    assert evaluate_all(backend()) == []  # no change, nothing written
    put(cloudwatch, 4, ago=1)
    assert evaluate_all(backend()) == [("5xx", "ALARM")]
    found = state(cloudwatch)
    assert found["StateValue"] == "ALARM" and found["StateReason"].startswith("Threshold Crossed: 1 out of the last 1")
    assert "was greater than or equal to the threshold (5)" in found["StateReason"]
    assert evaluate_all(backend(), now() + timedelta(seconds=30)) == [("5xx", "INSUFFICIENT_DATA")]  # data gone


def test_only_the_alarms_metric_with_exactly_its_dimensions_counts(cloudwatch: Any) -> None:
    alarm(cloudwatch)
    group = [*LB, {"Name": "TargetGroup", "Value": "targetgroup/tg/1"}]
    put(cloudwatch, 50, dimensions=group)  # the same metric of a target group: another metric
    put(cloudwatch, 50, dimensions=[{"Name": "LoadBalancer", "Value": "app/other/2"}])
    assert evaluate_all(backend()) == [("5xx", "INSUFFICIENT_DATA")]


def test_datapoints_to_alarm_and_missing_data(cloudwatch: Any) -> None:
    """3 periods of 10 s, 2 breaching ones to alarm; a period with no data as TreatMissingData says."""
    alarm(cloudwatch, "two-of-three", EvaluationPeriods=3, DatapointsToAlarm=2)
    alarm(cloudwatch, "breaching", EvaluationPeriods=3, DatapointsToAlarm=2, TreatMissingData="breaching")
    alarm(cloudwatch, "ignore", EvaluationPeriods=3, TreatMissingData="ignore")
    put(cloudwatch, 9, ago=1)  # one breaching period; the two before have no data
    changed = dict(evaluate_all(backend()))
    # 1 breaching period of the 1 with data (of the 3 with data, as missing ones count as breaching) for 2, and
    # 3 for "ignore": OK (moto's new alarms are "Unchecked": evaluated, they say so)
    assert changed == {"two-of-three": "OK", "breaching": "ALARM", "ignore": "OK"}
    put(cloudwatch, 9, ago=12)
    assert dict(evaluate_all(backend())) == {"two-of-three": "ALARM"}  # "ignore" needs all 3
    # no data at all: "missing" knows nothing, "breaching" stays in ALARM, "ignore" keeps its state
    assert evaluate_all(backend(), now() + timedelta(seconds=60)) == [("two-of-three", "INSUFFICIENT_DATA")]


def test_each_statistic_and_comparison(cloudwatch: Any) -> None:
    alarm(cloudwatch, "average", Statistic="Average", Threshold=3, ComparisonOperator="GreaterThanThreshold")
    alarm(cloudwatch, "count", Statistic="SampleCount", Threshold=3, ComparisonOperator="LessThanThreshold")
    alarm(cloudwatch, "minimum", Statistic="Minimum", Threshold=1, ComparisonOperator="LessThanOrEqualToThreshold")
    alarm(cloudwatch, "maximum", Statistic="Maximum", Threshold=8, ComparisonOperator="GreaterThanOrEqualToThreshold")
    for value in (1, 2, 9):  # average 4, 3 samples, minimum 1, maximum 9
        put(cloudwatch, value, ago=1)
    assert dict(evaluate_all(backend())) == {"average": "ALARM", "count": "OK", "minimum": "ALARM", "maximum": "ALARM"}


def test_a_percentile_alarm_goes_by_the_values_put(cloudwatch: Any) -> None:
    settings = {"Statistic": None, "Threshold": 4, "ComparisonOperator": "GreaterThanThreshold"}
    alarm(cloudwatch, "p90", **settings | {"ExtendedStatistic": "p90"})
    alarm(cloudwatch, "p50", **settings | {"ExtendedStatistic": "p50"})
    for value in range(1, 11):  # 1 to 10: p90 is 9, p50 is 5
        put(cloudwatch, value, ago=1)
    assert dict(evaluate_all(backend())) == {"p90": "ALARM", "p50": "ALARM"}
    assert "[9 (" in state(cloudwatch, "p90")["StateReason"] and "[5 (" in state(cloudwatch, "p50")["StateReason"]
    cloudwatch.put_metric_data(  # a set of statistic values holds no distribution: no percentile, as no data
        Namespace="AWS/ApplicationELB",
        MetricData=[
            {
                "MetricName": "HTTPCode_Target_5XX_Count",
                "Dimensions": LB,
                "StatisticValues": {"SampleCount": 2, "Sum": 12, "Minimum": 2, "Maximum": 10},
            }
        ],
    )
    assert dict(evaluate_all(backend(), now() + timedelta(seconds=15))) == {
        "p90": "INSUFFICIENT_DATA",
        "p50": "INSUFFICIENT_DATA",
    }


def test_an_alarm_it_cannot_evaluate_is_left_as_it_is(cloudwatch: Any) -> None:
    metric = {"Namespace": "AWS/ApplicationELB", "MetricName": "RequestCount", "Dimensions": LB}
    cloudwatch.put_metric_alarm(
        AlarmName="math",
        Metrics=[
            {"Id": "m1", "MetricStat": {"Metric": metric, "Period": 10, "Stat": "Sum"}, "ReturnData": False},
            {"Id": "e1", "Expression": "m1 * 2", "ReturnData": True},
        ],
        EvaluationPeriods=1,
        Threshold=1,
        ComparisonOperator="GreaterThanThreshold",
    )
    put(cloudwatch, 9, ago=1)
    assert evaluate_all(backend()) == [] and state(cloudwatch, "math")["StateValue"] == "OK"


def test_the_recent_points_are_read_from_the_newest_back() -> None:
    class Datum:
        def __init__(self, seconds_ago: float) -> None:
            self.timestamp = now() - timedelta(seconds=seconds_ago)

    data = [Datum(600), Datum(30), Datum(5), Datum(1)]
    assert recent_data(data, now() - timedelta(seconds=60)) == [data[3], data[2], data[1]]


def test_a_composite_alarm_is_made_and_follows_its_rule(cloudwatch: Any) -> None:
    """moto had no PutCompositeAlarm: the sandbox's, its rule checked, then evaluated after the metric alarms."""
    alarm(cloudwatch, "5xx")
    alarm(cloudwatch, "latency", MetricName="TargetResponseTime")
    rule = 'ALARM("5xx") OR (ALARM(arn:aws:cloudwatch:eu-west-1:123456789012:alarm:latency) AND NOT OK(gone))'
    cloudwatch.put_composite_alarm(AlarmName="release-bad", AlarmRule=rule)
    [made] = cloudwatch.describe_alarms(AlarmNames=["release-bad"], AlarmTypes=["CompositeAlarm"])["CompositeAlarms"]
    assert made["AlarmRule"] == rule
    put(cloudwatch, 1, ago=1)
    assert dict(evaluate_all(backend())) == {"5xx": "OK", "latency": "INSUFFICIENT_DATA", "release-bad": "OK"}
    put(cloudwatch, 9, ago=1)
    assert dict(evaluate_all(backend())) == {"5xx": "ALARM", "release-bad": "ALARM"}
    assert parse_rule("TRUE AND NOT FALSE")(lambda _name: "OK") and not parse_rule('OK("a")')(lambda _name: "ALARM")
    for bad in ('ALARM("a") AND', "(TRUE", "MAYBE(a)", 'ALARM("a") ALARM("b")'):
        with pytest.raises(ClientError, match="AlarmRule is not valid"):
            cloudwatch.put_composite_alarm(AlarmName="bad", AlarmRule=bad)


def test_an_alarms_changes_of_state_are_its_history(cloudwatch: Any) -> None:
    """moto had no DescribeAlarmHistory: the sandbox's says each change of state as AWS does (from what to what, why,
    when), of the types asked (metric alarms alone unless asked), between the dates asked, newest first unless asked
    otherwise, a page at a time."""
    alarm(cloudwatch, "5xx")
    cloudwatch.put_composite_alarm(AlarmName="release-bad", AlarmRule='ALARM("5xx")')
    began = datetime.now(UTC)
    put(cloudwatch, 9, ago=1)
    evaluate_all(backend())  # 5xx and release-bad: OK (unchecked) → ALARM
    backend().metric_data.clear()
    put(cloudwatch, 1, ago=1)
    evaluate_all(backend())  # → OK
    items = cloudwatch.describe_alarm_history(AlarmName="5xx", StartDate=began)["AlarmHistoryItems"]
    assert [item["HistorySummary"] for item in items] == [
        "Alarm updated from ALARM to OK",
        "Alarm updated from OK to ALARM",
    ]
    went = json.loads(items[1]["HistoryData"])
    assert went["oldState"]["stateValue"] == "OK" and went["oldState"]["stateReason"].startswith("Unchecked")
    assert went["newState"]["stateValue"] == "ALARM" and went["newState"]["stateReason"].startswith("Threshold Crossed")
    assert went["newState"]["stateReasonData"]["threshold"] == 5.0
    assert items[1]["AlarmType"] == "MetricAlarm" and items[1]["HistoryItemType"] == "StateUpdate"
    assert items[0]["Timestamp"] == state(cloudwatch)["StateUpdatedTimestamp"]  # the last change is the state's now
    ascending = cloudwatch.describe_alarm_history(AlarmName="5xx", ScanBy="TimestampAscending")["AlarmHistoryItems"]
    assert ascending == items[::-1]
    assert not cloudwatch.describe_alarm_history(AlarmName="5xx", EndDate=began)["AlarmHistoryItems"]
    assert not cloudwatch.describe_alarm_history(AlarmName="5xx", HistoryItemType="Action")["AlarmHistoryItems"]
    assert not cloudwatch.describe_alarm_history(AlarmName="release-bad")["AlarmHistoryItems"]  # metric alarms only
    composite = cloudwatch.describe_alarm_history(AlarmName="release-bad", AlarmTypes=["CompositeAlarm"])
    assert [item["AlarmType"] for item in composite["AlarmHistoryItems"]] == ["CompositeAlarm"] * 2
    both = {"AlarmTypes": ["CompositeAlarm", "MetricAlarm"], "MaxRecords": 3}
    first = cloudwatch.describe_alarm_history(**both)
    rest = cloudwatch.describe_alarm_history(**both, NextToken=first["NextToken"])
    assert len(first["AlarmHistoryItems"]) == 3 and len(rest["AlarmHistoryItems"]) == 1 and "NextToken" not in rest
