"""watch-errors (deploykit.watch) against moto's ECS, ELBv2 and CloudWatch: after the rollout, the service's answers
through its ALB are counted from CloudWatch; too many 5xx fail the release (the automatic rollback's cue).

The load balancer is played by the clock: while the step sleeps between two polls, the ALB "answers" requests and
the clock puts the metrics an ALB puts (AWS/ApplicationELB RequestCount, HTTPCode_Target_5XX_Count by LoadBalancer
and TargetGroup; HTTPCode_ELB_5XX_Count by LoadBalancer).
"""

from __future__ import annotations

import io
import re
from datetime import UTC, datetime, timedelta
from unittest.mock import Mock

import pytest
from botocore.stub import Stubber

from deploykit import rollback
from deploykit.aws import AwsFactory
from deploykit.clock import FakeClock
from deploykit.commands.core import _translator
from deploykit.config import Config, EnvConfig
from deploykit.errors import StepFailed, UsageError
from deploykit.output import Reporter
from deploykit.plan import Context, Executor, Plan, StepRecord
from deploykit.watch import P90, Counts, WatchErrors, before_minutes, before_rollout, p90_over
from tests.functional.conftest import new_session

CLUSTER, SERVICE = "car-rental-cluster", "car-rental-service"


def service_behind_an_alb(factory: AwsFactory, *, behind: bool = True, listener: bool = True) -> tuple[str, str]:
    """The service, its target group and the ALB whose listener forwards to it; the metrics' dimension values."""
    ec2, elbv2, ecs = factory.client("ec2"), factory.client("elbv2"), factory.client("ecs")
    vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    subnets = [
        ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.0.{i}.0/24", AvailabilityZone=f"eu-west-1{zone}")["Subnet"][
            "SubnetId"
        ]
        for i, zone in ((1, "a"), (2, "b"))
    ]
    lb = elbv2.create_load_balancer(Name="car-rental-alb", Subnets=subnets)["LoadBalancers"][0]["LoadBalancerArn"]
    tg = elbv2.create_target_group(Name="car-rental-tg", Protocol="HTTP", Port=8000, VpcId=vpc, TargetType="ip")[
        "TargetGroups"
    ][0]["TargetGroupArn"]
    if listener:
        elbv2.create_listener(
            LoadBalancerArn=lb, Protocol="HTTP", Port=80, DefaultActions=[{"Type": "forward", "TargetGroupArn": tg}]
        )
    ecs.create_cluster(clusterName=CLUSTER)
    td = ecs.register_task_definition(
        family="car-rental-backend",
        containerDefinitions=[
            {"name": "backend", "image": "backend:1", "memory": 512, "portMappings": [{"containerPort": 8000}]}
        ],
    )["taskDefinition"]["taskDefinitionArn"]
    balancers = [{"targetGroupArn": tg, "containerName": "backend", "containerPort": 8000}] if behind else []
    ecs.create_service(cluster=CLUSTER, serviceName=SERVICE, taskDefinition=td, desiredCount=1, loadBalancers=balancers)
    return lb.split(":loadbalancer/")[1], tg.rsplit(":", 1)[1]


class Traffic(FakeClock):
    """Each sleep, the ALB answers ``requests``: ``target_5xx`` of them failed by the tasks, ``elb_5xx`` by itself."""

    def __init__(
        self, factory: AwsFactory, dims: tuple[str, str], requests: int, target_5xx: int = 0, elb_5xx: int = 0
    ):
        super().__init__(start=datetime.now(UTC))
        self.cloudwatch, self.dims = factory.client("cloudwatch"), dims
        self.requests, self.target_5xx, self.elb_5xx = requests, target_5xx, elb_5xx

    def sleep(self, seconds: float) -> None:
        super().sleep(seconds)
        balancer = {"Name": "LoadBalancer", "Value": self.dims[0]}
        both = [balancer, {"Name": "TargetGroup", "Value": self.dims[1]}]
        data = [
            {"MetricName": "RequestCount", "Dimensions": both, "Value": self.requests},
            {"MetricName": "HTTPCode_Target_5XX_Count", "Dimensions": both, "Value": self.target_5xx},
            {"MetricName": "HTTPCode_ELB_5XX_Count", "Dimensions": [balancer], "Value": self.elb_5xx},
        ]
        for datum in data:
            datum["Timestamp"] = self.stamp()
        self.cloudwatch.put_metric_data(Namespace="AWS/ApplicationELB", MetricData=data)

    def stamp(self) -> datetime:
        """When the ALB puts the counts: now, by AWS's clock (this clock's, here)."""
        return self.now()


class SkewedTraffic(Traffic):
    """The same, on a machine whose clock is ``skew`` seconds ahead of AWS's (which stamps the ALB's counts)."""

    def __init__(self, factory: AwsFactory, dims: tuple[str, str], requests: int, target_5xx: int, skew: float):
        super().__init__(factory, dims, requests, target_5xx)
        self.skew = skew
        self._start += timedelta(seconds=skew)

    def stamp(self) -> datetime:
        return self.now() - timedelta(seconds=self.skew)


def run(
    factory: AwsFactory,
    dev_env: EnvConfig,
    clock: FakeClock,
    seconds: float = 30,
    rate: float = 0.01,
    *,
    compare: bool = True,
    max_slowdown: float = 0.0,
) -> str:
    out = io.StringIO()
    ctx = Context(
        Mock(spec=Config),
        dev_env,
        factory,
        clock,
        Reporter(out, tty=False, clock=clock),
        Mock(side_effect=AssertionError),
    )
    return WatchErrors(CLUSTER, SERVICE, seconds, rate, 5.0, compare, (), max_slowdown).run(ctx).detail


def test_a_release_that_answers_well_is_watched_for_its_time(factory: AwsFactory, dev_env: EnvConfig) -> None:
    dims = service_behind_an_alb(factory)
    clock = Traffic(factory, dims, requests=200, target_5xx=1)  # 0.5% of 5xx: the odd one is no failure
    assert run(factory, dev_env, clock) == "1200 requests, 6 errors in 30s (0.5%)"
    assert sum(clock.sleeps) == 30.0


def test_a_clock_ahead_of_awss_still_counts_the_releases_answers(factory: AwsFactory, dev_env: EnvConfig) -> None:
    """This machine's clock two minutes ahead: counted from its now, the watch would read minutes AWS has not
    reached, find no request, and pass a release failing half of them. It counts from AWS's now (the Date of its
    first answer)."""
    dims = service_behind_an_alb(factory)
    clock = SkewedTraffic(factory, dims, requests=10, target_5xx=5, skew=120)
    with pytest.raises(StepFailed, match=r"answered 5 of 10 requests with a 5xx"):
        run(factory, dev_env, clock, seconds=60)


def test_too_many_5xx_fail_the_release_at_the_first_poll_that_sees_them(
    factory: AwsFactory, dev_env: EnvConfig
) -> None:
    dims = service_behind_an_alb(factory)
    clock = Traffic(factory, dims, requests=10, target_5xx=2, elb_5xx=1)
    with pytest.raises(StepFailed) as failed:
        run(factory, dev_env, clock, seconds=300)
    assert failed.value.message == (
        "car-rental-service answered 3 of 10 requests with a 5xx (30.0%: 2 from its tasks, 1 from the ALB) in the "
        "5s after its rollout; more than 1.0% failing fails the release"
    )
    assert failed.value.next_step == "see what it wrote: inv logs --env dev --since 15m"
    assert clock.sleeps == [5.0]


def test_no_request_is_said_and_a_service_with_no_alb_has_nothing_to_watch(
    factory: AwsFactory, dev_env: EnvConfig
) -> None:
    dims = service_behind_an_alb(factory)
    assert run(factory, dev_env, Traffic(factory, dims, requests=0), seconds=10) == (
        "0 requests, 0 errors in 10s (0.0%); no request came, nothing to judge it by"
    )


def test_a_service_with_no_load_balancer_skips_the_watch(factory: AwsFactory, dev_env: EnvConfig) -> None:
    service_behind_an_alb(factory, behind=False, listener=False)
    assert (
        run(factory, dev_env, FakeClock()) == "car-rental-service has no load balancer in front of it: nothing to watch"
    )


def test_a_target_group_no_load_balancer_routes_to_skips_the_watch(factory: AwsFactory, dev_env: EnvConfig) -> None:
    service_behind_an_alb(factory, listener=False)
    assert run(factory, dev_env, FakeClock()) == (
        "no load balancer routes to car-rental-service's target groups: nothing to watch"
    )


def test_a_watch_cloudwatch_refuses_is_a_refusal_that_rolls_nothing_back(
    factory: AwsFactory, dev_env: EnvConfig
) -> None:
    """Without cloudwatch:GetMetricData (botocore's Stubber plays the refusal): exit 2, and no automatic rollback."""
    service_behind_an_alb(factory)
    cloudwatch = new_session().client("cloudwatch", region_name="eu-west-1")
    aws = Mock(spec=AwsFactory)
    aws.client.side_effect = lambda service: cloudwatch if service == "cloudwatch" else factory.client(service)
    clock, out = FakeClock(), io.StringIO()
    ctx = Context(Mock(spec=Config), dev_env, aws, clock, Reporter(out, tty=False, clock=clock), Mock())
    with Stubber(cloudwatch) as stub:
        stub.add_client_error("get_metric_data", "AccessDenied", "not authorized to perform cloudwatch:GetMetricData")
        report = Executor(ctx, _translator(dev_env)).execute(
            Plan("dev", (WatchErrors(CLUSTER, SERVICE, 60, 0.01, 5.0),), "deploy.app")
        )
    assert isinstance(report.error, UsageError) and report.error.exit_code == 2
    assert "AWS refused GetMetricData" in report.error.message
    rolled = StepRecord("roll-service", "", "done", outputs={"previous_image": "repo:aaaaaaaaaaaa"})
    report.records.insert(0, rolled)
    assert rollback.undo_plan(dev_env, report, None) is None  # the release stays


def answered_before(factory: AwsFactory, dims: tuple[str, str], minutes: int, requests: int, errors: int) -> datetime:
    """The release before answered ``requests`` a minute, ``errors`` of them 5xx from its tasks, for ``minutes``
    before the rollout (the service's PRIMARY deployment); and, in the rollout's own minute, 100 failed requests that
    must not count for it. Returns when the rollout began."""
    deployment = factory.client("ecs").describe_services(cluster=CLUSTER, services=[SERVICE])["services"][0]
    began: datetime = deployment["deployments"][0]["createdAt"]
    balancer = {"Name": "LoadBalancer", "Value": dims[0]}
    both = [balancer, {"Name": "TargetGroup", "Value": dims[1]}]
    minute = began.replace(second=0, microsecond=0)
    data = []
    for n in range(1, minutes + 1):
        at = minute - timedelta(minutes=n) + timedelta(seconds=30)
        data += [
            {"MetricName": "RequestCount", "Dimensions": both, "Value": requests, "Timestamp": at},
            {"MetricName": "HTTPCode_Target_5XX_Count", "Dimensions": both, "Value": errors, "Timestamp": at},
        ]
    data += [
        {"MetricName": "RequestCount", "Dimensions": both, "Value": 100, "Timestamp": minute},
        {"MetricName": "HTTPCode_Target_5XX_Count", "Dimensions": both, "Value": 100, "Timestamp": minute},
    ]
    factory.client("cloudwatch").put_metric_data(Namespace="AWS/ApplicationELB", MetricData=data)
    return began


def test_a_release_failing_no_more_than_the_one_before_passes_when_compared(
    factory: AwsFactory, dev_env: EnvConfig
) -> None:
    """A dependency failing 20% of requests for the old release and the new one alike does not fail the new one
    (nor roll back to a release that fails as much); judged alone, it fails at once."""
    dims = service_behind_an_alb(factory)
    answered_before(factory, dims, minutes=10, requests=100, errors=20)
    clock = Traffic(factory, dims, requests=200, target_5xx=40)
    assert run(factory, dev_env, clock) == (
        "1200 requests, 240 errors in 30s (20.0%); no more than the release before (20.0% before its rollout) explains"
    )
    with pytest.raises(StepFailed, match=r"answered 40 of 200 requests with a 5xx \(20.0%"):
        run(factory, dev_env, Traffic(factory, dims, requests=200, target_5xx=40), compare=False)


def test_a_release_failing_more_than_the_one_before_fails_naming_that_rate(
    factory: AwsFactory, dev_env: EnvConfig
) -> None:
    dims = service_behind_an_alb(factory)
    answered_before(factory, dims, minutes=10, requests=100, errors=1)  # 1%; its rollout minute's 100% not counted
    clock = Traffic(factory, dims, requests=20, target_5xx=6)
    with pytest.raises(StepFailed) as failed:
        run(factory, dev_env, clock, seconds=300)
    assert failed.value.message == (
        "car-rental-service answered 6 of 20 requests with a 5xx (30.0%: 6 from its tasks, 0 from the ALB) in the "
        "5s after its rollout (the release before: 1000 requests, 10 errors, 1.0%, in the minutes before the "
        "rollout); more than 1.0% failing beyond that rate fails the release"
    )
    assert clock.sleeps == [5.0]


def test_a_longer_watch_asks_more_of_each_look(factory: AwsFactory, dev_env: EnvConfig) -> None:
    """60 errors of 200 beside the release before's 20% (and 1% more allowed): chance does that 0.17% of the time.
    A watch that looks twice fails it at its first look (under 0.5% each); one that looks 61 times (300 s, a poll
    every 5 s) asks each look for under 0.016%, and lets that first look pass: each look is one more chance."""
    dims = service_behind_an_alb(factory)
    answered_before(factory, dims, minutes=10, requests=100, errors=20)
    with pytest.raises(StepFailed, match=r"answered 60 of 200 requests with a 5xx .* in the 5s after its rollout"):
        run(factory, dev_env, Traffic(factory, dims, requests=200, target_5xx=60), seconds=5)
    clock = Traffic(factory, dims, requests=200, target_5xx=60)
    with pytest.raises(StepFailed) as failed:  # as the same rate goes on, the evidence grows: it fails later
        run(factory, dev_env, clock, seconds=300)
    assert " in the 5s after" not in failed.value.message and len(clock.sleeps) > 1


def test_the_release_before_is_read_in_whole_minutes_before_the_rollouts_own() -> None:
    cloudwatch = Mock(spec=["get_metric_data"])
    cloudwatch.get_metric_data.return_value = {"MetricDataResults": []}
    began = datetime(2026, 11, 29, 12, 30, 40, tzinfo=UTC)
    queries = {"requests0x0": ("AWS/ApplicationELB", "RequestCount", [])}
    assert before_rollout(cloudwatch, queries, began, 600) == Counts(0, 0)
    asked = cloudwatch.get_metric_data.call_args.kwargs
    assert (asked["StartTime"], asked["EndTime"]) == (
        datetime(2026, 11, 29, 12, 19, tzinfo=UTC),
        datetime(2026, 11, 29, 12, 30, tzinfo=UTC),  # the rollout's minute, 12:30, is left out
    )
    assert before_minutes(began, 600) == (asked["StartTime"], asked["EndTime"])  # its p90's minutes: the same


def test_a_p90_is_read_from_the_first_whole_minute_to_the_current_ones_end_with_its_count() -> None:
    cloudwatch = Mock(spec=["get_metric_data"])
    start, now = datetime(2026, 11, 29, 12, 30, 40, tzinfo=UTC), datetime(2026, 11, 29, 12, 32, 5, tzinfo=UTC)
    answer = [
        {"Id": key, "Timestamps": [start.replace(second=0) + timedelta(minutes=1)], "Values": [value]}
        for key, value in (("p90", 0.25), ("answers", 44.0))
    ]
    cloudwatch.get_metric_data.return_value = {"MetricDataResults": answer}
    assert p90_over(cloudwatch, ("AWS/ApplicationELB", "TargetResponseTime", []), start, now) == P90(0.25, 44)
    asked = cloudwatch.get_metric_data.call_args.kwargs
    assert (asked["StartTime"], asked["EndTime"]) == (  # 12:30 holds the rollout's answers; 12:32 so far counts
        datetime(2026, 11, 29, 12, 31, tzinfo=UTC),
        datetime(2026, 11, 29, 12, 33, tzinfo=UTC),
    )
    assert p90_over(cloudwatch, ("AWS/ApplicationELB", "TargetResponseTime", []), start, start) is None


class TimedTraffic(Traffic):
    """The same, each request answered in ``seconds_each`` (the ALB's TargetResponseTime, one a request)."""

    def __init__(self, factory: AwsFactory, dims: tuple[str, str], requests: int, seconds_each: float) -> None:
        super().__init__(factory, dims, requests)
        self.seconds_each = seconds_each

    def sleep(self, seconds: float) -> None:
        super().sleep(seconds)
        both = [{"Name": "LoadBalancer", "Value": self.dims[0]}, {"Name": "TargetGroup", "Value": self.dims[1]}]
        datum = {"MetricName": "TargetResponseTime", "Dimensions": both, "Value": self.seconds_each}
        self.cloudwatch.put_metric_data(
            Namespace="AWS/ApplicationELB", MetricData=[datum | {"Timestamp": self.stamp()}] * self.requests
        )


def answered_in(factory: AwsFactory, dims: tuple[str, str], began: datetime, seconds_each: float) -> None:
    """The release before answered its requests of :func:`answered_before` in ``seconds_each`` (20 a minute put; the
    minutes read are :func:`before_rollout`'s, which leave the rollout's own minute out)."""
    both = [{"Name": "LoadBalancer", "Value": dims[0]}, {"Name": "TargetGroup", "Value": dims[1]}]
    minute = began.replace(second=0, microsecond=0)
    data = [
        {"MetricName": "TargetResponseTime", "Dimensions": both, "Value": seconds_each, "Timestamp": at}
        for n in range(1, 11)
        for at in [minute - timedelta(minutes=n) + timedelta(seconds=30)] * 20
    ]
    for start in range(0, len(data), 500):
        factory.client("cloudwatch").put_metric_data(
            Namespace="AWS/ApplicationELB", MetricData=data[start : start + 500]
        )


@pytest.fixture
def answering_in_30ms(factory: AwsFactory, percentiles: None) -> tuple[str, str]:
    """The service behind its ALB, the release before answering 100 requests a minute in 30 ms for ten minutes
    (the sandbox's percentiles in moto); the metrics' dimension values."""
    dims = service_behind_an_alb(factory)
    answered_in(factory, dims, answered_before(factory, dims, minutes=10, requests=100, errors=0), 0.03)
    return dims


def test_a_release_answering_slower_than_max_slowdown_allows_fails_naming_both_p90s(
    factory: AwsFactory, dev_env: EnvConfig, answering_in_30ms: tuple[str, str]
) -> None:
    dims = answering_in_30ms
    clock = TimedTraffic(factory, dims, requests=30, seconds_each=0.2)
    with pytest.raises(StepFailed) as failed:
        run(factory, dev_env, clock, seconds=120, max_slowdown=1.5)
    # judged once, at the end, over the watch's whole minutes (the one it began in holds the rollout's answers too)
    assert sum(clock.sleeps) == 120
    assert re.fullmatch(
        r"car-rental-service answered slower: p90 200 ms over \d+ requests in the whole minutes of its 120s watch, "
        r"30 ms before its rollout \(200 requests in the minutes before it\); a p90 over 1.5× the release before's "
        r"fails the release",
        failed.value.message,
    )
    assert "inv perf --env dev" in failed.value.next_step


def test_without_enough_answers_before_the_rollout_response_times_are_not_judged(
    factory: AwsFactory, dev_env: EnvConfig, percentiles: None
) -> None:
    dims = service_behind_an_alb(factory)
    answered_before(factory, dims, minutes=10, requests=100, errors=0)  # its counts, but no response time put
    slow = TimedTraffic(factory, dims, requests=30, seconds_each=0.5)
    assert run(factory, dev_env, slow, seconds=10, max_slowdown=1.5).endswith(
        "; its response times not judged: too few answers before the rollout to judge them by"
    )


def test_a_watch_with_too_few_answers_in_its_whole_minutes_does_not_judge_its_response_times(
    factory: AwsFactory, dev_env: EnvConfig, answering_in_30ms: tuple[str, str]
) -> None:
    short = TimedTraffic(factory, answering_in_30ms, requests=5, seconds_each=0.2)
    assert run(factory, dev_env, short, seconds=10, max_slowdown=1.5) == (
        "10 requests, 0 errors in 10s (0.0%); too few answers in its whole minutes to judge its response times by"
    )


def test_a_release_within_max_slowdown_passes_saying_both_p90s(
    factory: AwsFactory, dev_env: EnvConfig, answering_in_30ms: tuple[str, str]
) -> None:
    dims = answering_in_30ms
    clock = TimedTraffic(factory, dims, requests=30, seconds_each=0.04)  # 1.33×
    assert run(factory, dev_env, clock, seconds=70, max_slowdown=1.5) == (
        "420 requests, 0 errors in 70s (0.0%); p90 40 ms (the release before: 30 ms)"
    )


def test_without_max_slowdown_response_times_are_neither_read_nor_judged(
    factory: AwsFactory, dev_env: EnvConfig, answering_in_30ms: tuple[str, str]
) -> None:
    dims = answering_in_30ms
    slow = TimedTraffic(factory, dims, requests=30, seconds_each=0.2)
    asked: list[str] = []
    factory.client("cloudwatch").meta.events.register(
        "before-parameter-build.cloudwatch.GetMetricData",
        lambda params, **_: asked.extend(q["MetricStat"]["Metric"]["MetricName"] for q in params["MetricDataQueries"]),
    )
    # max_slowdown 0: a release five times slower over 70 s is not judged by its response times, nor are they read
    assert run(factory, dev_env, slow, seconds=70) == "420 requests, 0 errors in 70s (0.0%)"
    assert asked and "TargetResponseTime" not in asked


def test_slower_is_over_max_slowdown_times_the_p90_before_and_20_ms_more_of_20_answers_each() -> None:
    watch = WatchErrors(CLUSTER, SERVICE, 180, 0.01, 5.0, max_slowdown=1.5)
    assert watch._slower(P90(0.16, 100), P90(0.1, 100))  # 1.6×, 60 ms more
    assert not watch._slower(P90(0.14, 100), P90(0.1, 100))  # 1.4×, though 40 ms more
    assert not watch._slower(P90(0.01, 100), P90(0.004, 100))  # 2.5×, but 6 ms more
    assert not watch._slower(P90(0.5, 19), P90(0.1, 100))  # too few answers to judge by
    assert not watch._slower(None, P90(0.1, 100))
    assert watch.describe() == (
        "watch car-rental-service's answers through its ALB for 180s: more than 1.0% failing beyond the release "
        "before's rate, or a p90 over 1.5× the release before's and 20 ms more, fails the release (and rolls it back)"
    )
    both = WatchErrors(CLUSTER, SERVICE, 180, 0.01, 5.0, alarms=("car-rental-5xx",), max_slowdown=1.5)
    assert "and 20 ms more, or one of its alarms going to ALARM, fails the release" in both.describe()


def test_an_alarm_of_the_alarm_watch_going_off_ends_the_watch_at_that_poll(
    factory: AwsFactory, dev_env: EnvConfig
) -> None:
    """The ALB sees no 5xx, yet the team's own alarm (the p99 latency) goes off at the second poll: the release
    fails there, not once the watch's three minutes are over."""
    dims = service_behind_an_alb(factory)
    cloudwatch = factory.client("cloudwatch")
    cloudwatch.put_metric_alarm(
        AlarmName="p99-latency",
        Namespace="AWS/ApplicationELB",
        MetricName="TargetResponseTime",
        ExtendedStatistic="p99",
        Period=60,
        EvaluationPeriods=1,
        Threshold=1.5,
        ComparisonOperator="GreaterThanThreshold",
    )

    class Slow(Traffic):
        def sleep(self, seconds: float) -> None:
            super().sleep(seconds)
            if len(self.sleeps) == 2:
                cloudwatch.set_alarm_state(AlarmName="p99-latency", StateValue="ALARM", StateReason="p99 2.1 s")

    clock = Slow(factory, dims, requests=100)
    ctx = Context(Mock(spec=Config), dev_env, factory, clock, Reporter(io.StringIO(), tty=False, clock=clock), Mock())
    ctx.changing_since = datetime.now(UTC) - timedelta(seconds=1)
    step = WatchErrors(CLUSTER, SERVICE, 180, 0.01, 5.0, alarms=("p99-latency",))
    assert "more than 1.0% failing beyond the release before's rate, or one of its alarms going to ALARM, fails" in (
        step.describe()
    )
    with pytest.raises(StepFailed, match=r"^alarm p99-latency went to ALARM \d+s after .*: p99 2\.1 s; it fails"):
        step.run(ctx)
    assert sum(clock.sleeps) == 10.0
