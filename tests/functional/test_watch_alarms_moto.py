"""watch-alarms (deploykit.watch.WatchAlarms) against moto's CloudWatch: the team's own alarms, read after smoke; one
that went to ALARM since the deploy began changing what runs fails the release.

CloudWatch's evaluation is played by the clock: on a given sleep it sets an alarm's state (SetAlarmState, the call
AWS offers to try an alarm), as CloudWatch would on the metric crossing the threshold.
"""

from __future__ import annotations

import io
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar
from unittest.mock import Mock

import pytest
from botocore.stub import Stubber

from deploykit.aws import AwsFactory
from deploykit.clock import FakeClock, SystemClock
from deploykit.commands.core import Runtime, _translator, say_missing_alarms
from deploykit.config import Config, EnvConfig
from deploykit.errors import StepFailed, UsageError
from deploykit.output import Reporter
from deploykit.plan import Context, Executor, Outcome, Plan, Step
from deploykit.references import Earlier
from deploykit.stack_chain import DeployStack
from deploykit.watch import WatchAlarms
from tests.functional.conftest import new_session

NAMES = ("car-rental-5xx", "car-rental-latency")


def put_alarm(factory: AwsFactory, name: str) -> None:
    factory.client("cloudwatch").put_metric_alarm(
        AlarmName=name,
        Namespace="AWS/ApplicationELB",
        MetricName="HTTPCode_Target_5XX_Count",
        Statistic="Sum",
        Period=60,
        EvaluationPeriods=1,
        Threshold=5,
        ComparisonOperator="GreaterThanOrEqualToThreshold",
    )


def set_state(factory: AwsFactory, name: str, state: str, reason: str = "Threshold Crossed: 1 datapoint [9.0]") -> None:
    factory.client("cloudwatch").set_alarm_state(AlarmName=name, StateValue=state, StateReason=reason)


class Evaluating(FakeClock):
    """On its n-th sleep, ``changes[n]`` happens first (CloudWatch evaluating an alarm meanwhile)."""

    def __init__(self, changes: list[Callable[[], Any]] | None = None) -> None:
        super().__init__(start=datetime.now(UTC))
        self.changes = changes or []

    def sleep(self, seconds: float) -> None:
        if len(self.sleeps) < len(self.changes):
            self.changes[len(self.sleeps)]()
        super().sleep(seconds)


def context(factory: AwsFactory, dev_env: EnvConfig, clock: FakeClock, aws: Any = None) -> Context:
    out = io.StringIO()
    return Context(Mock(spec=Config), dev_env, aws or factory, clock, Reporter(out, tty=False, clock=clock), Mock())


def watched(factory: AwsFactory, dev_env: EnvConfig, clock: FakeClock, seconds: float = 30) -> str:
    ctx = context(factory, dev_env, clock)
    ctx.changing_since = datetime.now(UTC) - timedelta(seconds=1)  # the deploy began changing what runs
    return WatchAlarms(NAMES, seconds, 5.0).run(ctx).detail


def test_alarms_that_stay_ok_are_watched_for_their_time(factory: AwsFactory, dev_env: EnvConfig) -> None:
    for name in NAMES:
        put_alarm(factory, name)
    clock = Evaluating()
    assert watched(factory, dev_env, clock) == "2 OK: none went to ALARM in 30s after smoke"
    assert sum(clock.sleeps) == 30.0


def test_an_alarm_going_to_alarm_fails_the_release_at_the_next_read(factory: AwsFactory, dev_env: EnvConfig) -> None:
    for name in NAMES:
        put_alarm(factory, name)
    clock = Evaluating([lambda: None, lambda: set_state(factory, "car-rental-latency", "ALARM")])
    with pytest.raises(StepFailed) as failed:
        watched(factory, dev_env, clock, seconds=300)
    assert failed.value.message.startswith("alarm car-rental-latency went to ALARM ")
    assert "after the deploy began changing what runs" in failed.value.message
    assert failed.value.message.endswith("Threshold Crossed: 1 datapoint [9.0]; it fails the release")
    assert "aws cloudwatch describe-alarms --alarm-names car-rental-latency" in str(failed.value.next_step)
    assert sum(clock.sleeps) == 10.0  # the read after the second sleep saw it


def test_an_alarm_in_alarm_since_before_the_deploy_is_said_and_not_judged_by(
    factory: AwsFactory, dev_env: EnvConfig
) -> None:
    for name in NAMES:
        put_alarm(factory, name)
    set_state(factory, "car-rental-5xx", "ALARM")  # before the deploy: it cannot tell this release from the last
    ctx = context(factory, dev_env, Evaluating())
    ctx.changing_since = datetime.now(UTC) + timedelta(seconds=1)
    detail = WatchAlarms(NAMES, 0, 5.0).run(ctx).detail
    assert detail.startswith("1 ALARM, 1 OK: none went to ALARM since the deploy began (read once, after smoke); ")
    assert "car-rental-5xx in ALARM since before the deploy (" in detail and detail.endswith(": not judged by it")


def test_an_alarm_back_in_alarm_after_the_deploy_began_fails_it(factory: AwsFactory, dev_env: EnvConfig) -> None:
    put_alarm(factory, NAMES[0])
    set_state(factory, NAMES[0], "ALARM")
    since = datetime.now(UTC)
    set_state(factory, NAMES[0], "OK")
    clock = Evaluating([lambda: set_state(factory, NAMES[0], "ALARM")])
    ctx = context(factory, dev_env, clock)
    ctx.changing_since = since
    with pytest.raises(StepFailed, match=r"^alarm car-rental-5xx went to ALARM"):
        WatchAlarms(NAMES[:1], 60, 5.0).run(ctx)


def test_an_alarm_deleted_while_the_deploy_ran_vouches_for_nothing(factory: AwsFactory, dev_env: EnvConfig) -> None:
    for name in NAMES:
        put_alarm(factory, name)
    clock = Evaluating([lambda: factory.client("cloudwatch").delete_alarms(AlarmNames=["car-rental-5xx"])])
    with pytest.raises(StepFailed, match="alarm car-rental-5xx is gone from CloudWatch"):
        watched(factory, dev_env, clock, seconds=60)


@dataclass(frozen=True)
class Changes(Step):
    """A step that changes what runs (a rollout), during which ``meanwhile`` happens."""

    name: ClassVar[str] = "roll-service"
    meanwhile: Callable[[], Any]
    artifacts: bool = False

    def describe(self) -> str:
        return "change what runs"

    def run(self, ctx: Context) -> Outcome:
        time.sleep(0.02)  # CloudWatch says its times to the millisecond: what happens in the step is apart from
        self.meanwhile()  # the step's start, and from what comes after it
        time.sleep(0.02)
        return Outcome.done("changed")


@dataclass(frozen=True)
class Builds(Changes):
    """A step that only makes an artifact (a build), during which ``meanwhile`` happens."""

    name: ClassVar[str] = "build"
    artifacts_only: ClassVar[bool] = True


def executed(factory: AwsFactory, dev_env: EnvConfig, *steps: Step, aws: Any = None) -> Any:
    ctx = context(factory, dev_env, SystemClock(), aws)  # the times the executor marks are CloudWatch's
    return Executor(ctx, _translator(dev_env)).execute(Plan("dev", steps, "deploy.app"))


def test_what_went_to_alarm_before_the_run_changed_anything_is_not_the_releases(
    factory: AwsFactory, dev_env: EnvConfig
) -> None:
    """The run's first change starts the watch's time (the executor sets it): an alarm that fired while the image
    was built is not this release's doing; one that fired while it rolled out is."""
    put_alarm(factory, NAMES[0])
    to_alarm = lambda: set_state(factory, NAMES[0], "ALARM")  # noqa: E731
    report = executed(factory, dev_env, Builds(to_alarm), Changes(lambda: None), WatchAlarms(NAMES[:1], 0, 5.0))
    assert report.ok and report.records[2].detail.endswith(": not judged by it")
    set_state(factory, NAMES[0], "OK")
    report = executed(factory, dev_env, Builds(lambda: None), Changes(to_alarm), WatchAlarms(NAMES[:1], 0, 5.0))
    assert isinstance(report.error, StepFailed) and report.records[2].status == "failed"
    assert report.error.message.startswith("alarm car-rental-5xx went to ALARM")


def test_an_alarm_cloudwatch_does_not_have_refuses_the_run_before_it_changes_anything(
    factory: AwsFactory, dev_env: EnvConfig
) -> None:
    """Before the build even: the names need nothing the run makes (Step.preflight_at_start)."""
    put_alarm(factory, NAMES[0])
    built: list[str] = []
    rolled: list[str] = []
    report = executed(
        factory,
        dev_env,
        Builds(lambda: built.append("built")),
        Changes(lambda: rolled.append("rolled")),
        WatchAlarms(("car-rental-5xx", "car-rental-typo"), 60, 5.0),
    )
    assert isinstance(report.error, UsageError) and report.error.exit_code == 2 and not built and not rolled
    assert report.error.message.startswith("CloudWatch has no alarm named car-rental-typo in eu-west-1")
    assert "[environments.dev.alarm_watch] alarms" in report.error.message
    assert "take it out of alarms" in str(report.error.next_step)


def test_alarms_the_role_may_not_read_refuse_the_run_before_it_changes_anything(
    factory: AwsFactory, dev_env: EnvConfig
) -> None:
    """Without cloudwatch:DescribeAlarms (botocore's Stubber plays the refusal): exit 2, the rollout not started."""
    cloudwatch = new_session().client("cloudwatch", region_name="eu-west-1")
    aws = Mock(spec=AwsFactory)
    aws.client.side_effect = lambda service: cloudwatch if service == "cloudwatch" else factory.client(service)
    rolled: list[str] = []
    with Stubber(cloudwatch) as stub:
        stub.add_client_error("describe_alarms", "AccessDenied", "not authorized to perform cloudwatch:DescribeAlarms")
        report = executed(
            factory, dev_env, Changes(lambda: rolled.append("rolled")), WatchAlarms(NAMES, 60, 5.0), aws=aws
        )
    assert isinstance(report.error, UsageError) and report.error.exit_code == 2 and not rolled
    assert report.error.message.startswith("may not read the CloudWatch alarms [environments.dev.alarm_watch] names")
    assert "cloudwatch:DescribeAlarms" in str(report.error.next_step)


@dataclass(frozen=True)
class MakesAlarm(Changes):
    """A stack deploy whose template makes the alarm ``alarm`` (the team's alarms in the CDK app)."""

    name: ClassVar[str] = "deploy-stack"
    alarm: str = ""

    def as_earlier(self) -> Earlier:
        made = {"Type": "AWS::CloudWatch::Alarm", "Properties": {"AlarmName": {"Fn::Sub": "${AWS::StackName}-5xx"}}}
        return Earlier(json.dumps({"Resources": {"Errors": made}}), "car-rental-team", {})


def test_an_alarm_a_stack_of_the_run_makes_first_is_not_refused(factory: AwsFactory, dev_env: EnvConfig) -> None:
    """The commit that adds an alarm to a stack and names it in alarm_watch: the stack deploys it before the watch
    reads it. A name no stack of the run makes is refused as before."""
    made = "car-rental-team-5xx"
    report = executed(factory, dev_env, MakesAlarm(lambda: put_alarm(factory, made)), WatchAlarms((made,), 0, 5.0))
    assert report.ok and report.records[1].detail.startswith("1 OK: none went to ALARM")
    other = "car-rental-other-5xx"
    report = executed(factory, dev_env, MakesAlarm(lambda: None), WatchAlarms((other,), 0, 5.0))
    assert isinstance(report.error, UsageError) and f"no alarm named {other} in" in report.error.message


def test_in_a_plan_without_an_automatic_rollback_the_failure_names_the_command_that_puts_it_back(
    factory: AwsFactory, dev_env: EnvConfig
) -> None:
    put_alarm(factory, NAMES[0])
    clock = Evaluating([lambda: set_state(factory, NAMES[0], "ALARM")])
    ctx = context(factory, dev_env, clock)
    ctx.changing_since = datetime.now(UTC) - timedelta(seconds=1)
    undo = "inv rollback --env dev --component stack:api puts the stack back"
    with pytest.raises(StepFailed) as failed:
        WatchAlarms(NAMES[:1], 30, 5.0, undo).run(ctx)
    assert str(failed.value.next_step).startswith(f"{undo}; see what it watches: aws cloudwatch describe-alarms ")


def test_a_composite_alarm_is_read_and_judges_as_a_metric_alarm(factory: AwsFactory, dev_env: EnvConfig) -> None:
    """A composite alarm (the sandbox's PutCompositeAlarm makes one in moto) judges a release as a metric alarm
    does."""
    put_alarm(factory, NAMES[0])
    factory.client("cloudwatch").put_composite_alarm(AlarmName="release-bad", AlarmRule=f'ALARM("{NAMES[0]}")')
    clock = Evaluating([lambda: set_state(factory, "release-bad", "ALARM")])
    ctx = context(factory, dev_env, clock)
    ctx.changing_since = datetime.now(UTC) - timedelta(seconds=1)
    with pytest.raises(StepFailed, match=r"^alarm release-bad went to ALARM"):
        WatchAlarms(("release-bad",), 30, 5.0).run(ctx)


def history_reads(factory: AwsFactory) -> list[str]:
    """The alarms whose history the watch reads (DescribeAlarmHistory), one entry a call, as it makes them."""
    read: list[str] = []
    factory.client("cloudwatch").meta.events.register(
        "before-parameter-build.cloudwatch.DescribeAlarmHistory", lambda params, **_: read.append(params["AlarmName"])
    )
    return read


def test_an_alarm_that_went_to_alarm_and_back_between_two_reads_fails_the_release(
    factory: AwsFactory, dev_env: EnvConfig
) -> None:
    """Between two reads (or before the one read of a watch that reads once) an alarm went to ALARM and back to OK:
    its history says so, and it fails the release as if the read had caught it in ALARM."""
    for name in NAMES:
        put_alarm(factory, name)
    read = history_reads(factory)

    def flap() -> None:
        set_state(factory, "car-rental-latency", "ALARM", "Threshold Crossed: 1 datapoint [7.5]")
        set_state(factory, "car-rental-latency", "OK", "Threshold Crossed: 1 datapoint [0.0]")

    clock = Evaluating([lambda: None, flap])
    with pytest.raises(StepFailed) as failed:
        watched(factory, dev_env, clock, seconds=300)
    message = failed.value.message
    assert message.startswith("alarm car-rental-latency went to ALARM ")
    assert re.search(r"\(at \d\d:\d\d:\d\d UTC\), and was OK again at \d\d:\d\d:\d\d UTC: ", message)
    assert message.endswith("Threshold Crossed: 1 datapoint [7.5]; it fails the release")
    assert sum(clock.sleeps) == 10.0
    # both alarms made since the run began (a creation is a change of state, of which the history holds nothing):
    # each history read twice (once more at the next poll), then only the one that changed state again
    assert read == [*NAMES, *NAMES, "car-rental-latency"]


def test_a_watch_that_reads_once_sees_an_alarm_that_went_to_alarm_and_back_during_the_rollout(
    factory: AwsFactory, dev_env: EnvConfig
) -> None:
    put_alarm(factory, NAMES[0])
    ctx = context(factory, dev_env, Evaluating())
    ctx.changing_since = datetime.now(UTC) - timedelta(seconds=1)
    set_state(factory, NAMES[0], "ALARM")  # during the rollout
    set_state(factory, NAMES[0], "OK")  # before smoke ended
    with pytest.raises(StepFailed, match=r"^alarm car-rental-5xx went to ALARM .*, and was OK again at "):
        WatchAlarms(NAMES[:1], 0, 5.0).run(ctx)


def test_an_alarm_whose_state_changed_but_not_to_alarm_has_its_history_read_once_for_each_change(
    factory: AwsFactory, dev_env: EnvConfig
) -> None:
    """An alarm that went from ALARM before the run to OK, then INSUFFICIENT_DATA: never ALARM since the run began.
    Its history is read when its state changed, not at each poll; an alarm in ALARM since before is not judged."""
    for name in NAMES:
        put_alarm(factory, name)
    set_state(factory, NAMES[0], "ALARM")
    read = history_reads(factory)
    clock = Evaluating(
        [
            lambda: set_state(factory, NAMES[0], "OK"),
            lambda: None,
            lambda: set_state(factory, NAMES[0], "INSUFFICIENT_DATA"),
            lambda: None,
        ]
    )
    ctx = context(factory, dev_env, clock)
    time.sleep(0.01)  # CloudWatch says its times to the millisecond: the run began after what came before it
    ctx.changing_since = datetime.now(UTC)
    detail = WatchAlarms(NAMES, 25, 5.0).run(ctx).detail
    assert detail == "1 INSUFFICIENT_DATA, 1 OK: none went to ALARM in 25s after smoke"
    assert read == [NAMES[0], NAMES[0]]  # after the first change, and after the second


def changed_during_the_run(factory: AwsFactory, dev_env: EnvConfig) -> tuple[Context, Any, dict[str, Any]]:
    """A run begun 5 s ago whose CloudWatch calls a Stubber answers, and the alarm (OK) as DescribeAlarms says it
    once it changed state during the run."""
    put_alarm(factory, NAMES[0])
    cloudwatch = new_session().client("cloudwatch", region_name="eu-west-1")
    aws = Mock(spec=AwsFactory)
    aws.client.side_effect = lambda service: cloudwatch if service == "cloudwatch" else factory.client(service)
    ctx = context(factory, dev_env, Evaluating(), aws)
    ctx.changing_since = datetime.now(UTC) - timedelta(seconds=5)
    [alarm] = factory.client("cloudwatch").describe_alarms(AlarmNames=[NAMES[0]])["MetricAlarms"]
    alarm["StateUpdatedTimestamp"] = datetime.now(UTC)
    return ctx, cloudwatch, alarm


def test_history_the_role_may_not_read_is_said_and_the_states_still_judge(
    factory: AwsFactory, dev_env: EnvConfig
) -> None:
    """Without cloudwatch:DescribeAlarmHistory (the Stubber plays the refusal): said once, the alarms judged by their
    states alone, as before the history was read."""
    ctx, cloudwatch, alarm = changed_during_the_run(factory, dev_env)
    with Stubber(cloudwatch) as stub:
        stub.add_response("describe_alarms", {"MetricAlarms": [alarm], "CompositeAlarms": []})
        stub.add_client_error("describe_alarm_history", "AccessDenied", "not authorized")
        for _ in range(2):  # not asked again
            stub.add_response("describe_alarms", {"MetricAlarms": [alarm], "CompositeAlarms": []})
        detail = WatchAlarms(NAMES[:1], 10, 5.0).run(ctx).detail
    assert detail == "1 OK: none went to ALARM in 10s after smoke"
    said = ctx.reporter.stream.getvalue()  # type: ignore[attr-defined]
    assert said.count("the alarms' history may not be read (AccessDenied)") == 1
    assert "cloudwatch:DescribeAlarmHistory" in said


def test_a_history_that_does_not_hold_the_alarms_last_change_yet_is_read_again(
    factory: AwsFactory, dev_env: EnvConfig
) -> None:
    """DescribeAlarms shows the alarm back to OK, its history does not hold that yet (the Stubber plays a history
    written after the state): read again at the next poll, which finds the visit to ALARM."""
    ctx, cloudwatch, alarm = changed_during_the_run(factory, dev_env)
    back = alarm["StateUpdatedTimestamp"]
    went = {"newState": {"stateValue": "ALARM", "stateReason": "Threshold Crossed: 1 datapoint [8.0]"}}
    visit = {"AlarmName": NAMES[0], "Timestamp": back - timedelta(seconds=2), "HistoryData": json.dumps(went)}
    with Stubber(cloudwatch) as stub:
        stub.add_response("describe_alarms", {"MetricAlarms": [alarm], "CompositeAlarms": []})
        stub.add_response("describe_alarm_history", {"AlarmHistoryItems": []})
        stub.add_response("describe_alarms", {"MetricAlarms": [alarm], "CompositeAlarms": []})
        stub.add_response("describe_alarm_history", {"AlarmHistoryItems": [visit]})
        with pytest.raises(StepFailed, match=r"^alarm car-rental-5xx went to ALARM .*: Threshold Crossed: 1 datapoint"):
            WatchAlarms(NAMES[:1], 10, 5.0).run(ctx)


def test_an_alarm_in_alarm_since_before_the_run_whose_reason_changed_during_it_is_not_judged_by(
    factory: AwsFactory, dev_env: EnvConfig
) -> None:
    """AWS moves StateUpdatedTimestamp at updates that are no change of state (a composite alarm's reason, as another
    of its alarms goes off): the watch goes by StateTransitionedTimestamp, when the alarm went to its state, where AWS
    says it (the Stubber plays it: moto does not)."""
    ctx, cloudwatch, alarm = changed_during_the_run(factory, dev_env)
    alarm |= {"StateValue": "ALARM", "StateTransitionedTimestamp": datetime.now(UTC) - timedelta(minutes=30)}
    with Stubber(cloudwatch) as stub:
        stub.add_response("describe_alarms", {"MetricAlarms": [alarm], "CompositeAlarms": []})
        detail = WatchAlarms(NAMES[:1], 0, 5.0).run(ctx).detail
    assert detail.startswith("1 ALARM: none went to ALARM since the deploy began (read once, after smoke); ")
    assert detail.endswith(": not judged by it")


def skewed(factory: AwsFactory, dev_env: EnvConfig, seconds: float, changes: list[Callable[[], Any]]) -> Context:
    """A run on a machine whose clock is ``seconds`` ahead of AWS's (behind, below 0), begun now (its clock's now)."""
    clock = Evaluating(changes)
    clock._start = datetime.now(UTC) + timedelta(seconds=seconds)
    ctx = context(factory, dev_env, clock)
    ctx.changing_since = clock.now()
    return ctx


def test_a_clock_ahead_of_awss_does_not_hide_an_alarm_the_release_set_off(
    factory: AwsFactory, dev_env: EnvConfig
) -> None:
    """This machine's clock a minute ahead: the run's first change, by it, is a minute after the alarm went to ALARM
    (by AWS's), which would make the alarm one 'in ALARM since before the deploy', not judged. The watch counts in
    AWS's time (the Date of its answers), and says the clock is off."""
    put_alarm(factory, NAMES[0])
    time.sleep(0.01)
    ctx = skewed(factory, dev_env, 60, [lambda: set_state(factory, NAMES[0], "ALARM")])
    with pytest.raises(StepFailed, match=r"^alarm car-rental-5xx went to ALARM "):
        WatchAlarms(NAMES[:1], 30, 5.0).run(ctx)
    assert ctx.aws_offset is not None and -61.1 < ctx.aws_offset < -59.9
    said = ctx.reporter.stream.getvalue()  # type: ignore[attr-defined]
    assert (
        len(re.findall(r"this machine's clock is about [56]\ds ahead of AWS's: the watches count in AWS's time", said))
        == 1
    )


def test_a_clock_behind_awss_does_not_blame_the_release_for_an_alarm_before_it(
    factory: AwsFactory, dev_env: EnvConfig
) -> None:
    """This machine's clock a minute behind: an alarm that went to ALARM just before the run began would be after
    the run's first change by this clock, and fail the release; in AWS's time it is one from before, not judged."""
    put_alarm(factory, NAMES[0])
    set_state(factory, NAMES[0], "ALARM")
    time.sleep(1.1)  # AWS says its time to the second: the run's beginning in it may be a second early, never late
    ctx = skewed(factory, dev_env, -60, [])
    detail = WatchAlarms(NAMES[:1], 0, 5.0).run(ctx).detail
    assert detail.endswith(": not judged by it")
    said = ctx.reporter.stream.getvalue()  # type: ignore[attr-defined]
    assert re.search(r"this machine's clock is about [56]\ds behind AWS's: the watches count in AWS's time", said)


def test_a_clock_within_a_second_of_awss_is_taken_as_it(factory: AwsFactory, dev_env: EnvConfig) -> None:
    put_alarm(factory, NAMES[0])
    ctx = context(factory, dev_env, SystemClock())
    ctx.changing_since = datetime.now(UTC)
    WatchAlarms(NAMES[:1], 0, 5.0).run(ctx)
    assert ctx.aws_offset == 0.0 and "clock" not in ctx.reporter.stream.getvalue()  # type: ignore[attr-defined]


def test_a_dry_run_says_an_alarm_cloudwatch_does_not_have(factory: AwsFactory, dev_env: EnvConfig) -> None:
    """A dry run does not start the run that would refuse it: it says so, and whether a stack the plan deploys may
    make the alarm; nothing when every alarm is there."""
    put_alarm(factory, NAMES[0])
    runtime = Mock(spec=Runtime)
    runtime.stderr = io.StringIO()
    watch = WatchAlarms((NAMES[0], "car-rental-typo"), 60, 5.0)
    say_missing_alarms(runtime, dev_env, Plan("dev", (Builds(lambda: None), watch)), factory)
    said = runtime.stderr.getvalue()
    assert said == (
        "⚠️  CloudWatch has no alarm named car-rental-typo in eu-west-1 ([environments.dev.alarm_watch] alarms): the "
        "deploy would be refused\n"
    )
    runtime.stderr = io.StringIO()
    say_missing_alarms(runtime, dev_env, Plan("dev", (DeployStack("CarRentalApiStack", "api.json"), watch)), factory)
    assert runtime.stderr.getvalue().endswith("the deploy would be refused, unless a stack it deploys makes it\n")
    runtime.stderr = io.StringIO()
    say_missing_alarms(runtime, dev_env, Plan("dev", (Builds(lambda: None), WatchAlarms(NAMES[:1], 60, 5.0))), factory)
    assert runtime.stderr.getvalue() == ""


def test_a_name_ending_in_a_star_watches_every_alarm_whose_name_starts_so(
    factory: AwsFactory, dev_env: EnvConfig
) -> None:
    """``car-rental-*``: the alarms the team adds in the CDK app under that start, without naming each in deploy.toml.
    They are read in one call of their own (AlarmNamePrefix) beside the names', judge as named ones do, one deleted
    while watched vouches for nothing, and a start no alarm has is refused as a name CloudWatch does not have."""
    for name in (*NAMES, "other-5xx"):
        put_alarm(factory, name)
    asked: list[dict[str, Any]] = []
    factory.client("cloudwatch").meta.events.register(
        "before-parameter-build.cloudwatch.DescribeAlarms", lambda params, **_: asked.append(dict(params))
    )
    clock = Evaluating([lambda: set_state(factory, "car-rental-latency", "ALARM")])
    ctx = context(factory, dev_env, clock)
    ctx.changing_since = datetime.now(UTC) - timedelta(seconds=1)
    with pytest.raises(StepFailed, match=r"^alarm car-rental-latency went to ALARM"):
        WatchAlarms(("other-5xx", "car-rental-*"), 30, 5.0).run(ctx)
    first = sorted(asked[:2], key=lambda params: "AlarmNamePrefix" in params)  # at once: in either order
    assert [sorted(params) for params in first] == [["AlarmNames", "AlarmTypes"], ["AlarmNamePrefix", "AlarmTypes"]]
    assert first[1]["AlarmNamePrefix"] == "car-rental-"

    set_state(factory, "car-rental-latency", "OK")
    clock = Evaluating([lambda: factory.client("cloudwatch").delete_alarms(AlarmNames=["car-rental-5xx"])])
    ctx = context(factory, dev_env, clock)
    ctx.changing_since = datetime.now(UTC)
    with pytest.raises(StepFailed, match=r"^alarm car-rental-5xx is gone from CloudWatch"):
        WatchAlarms(("car-rental-*",), 30, 5.0).run(ctx)

    assert WatchAlarms(("car-rental-*",), 3, 5.0).describe().startswith("read CloudWatch alarms car-rental-* for 3s")
    report = executed(factory, dev_env, Builds(lambda: None), Changes(lambda: None), WatchAlarms(("nope-*",), 0, 5.0))
    assert isinstance(report.error, UsageError) and "CloudWatch has no alarm named nope-* in" in report.error.message
    report = executed(factory, dev_env, MakesAlarm(lambda: None), WatchAlarms(("nope-*",), 0, 5.0))
    assert isinstance(report.error, StepFailed)  # not refused: a stack of the run could make one; none did
    assert report.error.message.startswith(
        "CloudWatch has no alarm named nope-* ([environments.dev.alarm_watch] alarms): deleted since the deploy began, "
        "or not made by the stack of the run that was to make it"
    )
