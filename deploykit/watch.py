"""Watching a release meet real traffic: error counts from CloudWatch, the app's error watch, the team's alarms.

Smoke checks a release with a handful of requests; users send every kind. Two steps watch what they meet:

- the Lambda canary (deploykit.canary), before the new version takes every request;
- ``watch-errors`` (:class:`WatchErrors`), after the app's rollout and smoke, with ``[environments.NAME.
  app_error_watch] seconds`` above 0 (or ``--watch-errors DURATION``): for that long, every poll reads the
  ALB's counts for the service's target groups since the watch began (one GetMetricData: namespace
  ``AWS/ApplicationELB``; ``RequestCount`` and ``HTTPCode_Target_5XX_Count`` by LoadBalancer and TargetGroup,
  ``HTTPCode_ELB_5XX_Count`` by LoadBalancer, the ALB's own 502/503/504). As soon as more than ``max_error_rate``
  of the requests failed (and, with ``compare``, more than the release before explains: its rate in the minutes
  before the rollout, :func:`before_rollout`, judged by :func:`failing` as the canary judges a version), the step
  fails, and the automatic rollback puts the previous release back, as after a failed smoke.

A third watches what the team watches already: ``watch-alarms`` (:class:`WatchAlarms`), after a deploy's smoke,
with ``[environments.NAME.alarm_watch] alarms`` named: those CloudWatch alarms (metric or composite) are read
(DescribeAlarms) for ``seconds`` (0: once), and one that went to ALARM since the run began changing what runs fails
the release, as CloudFormation's rollback triggers fail a stack update: in ALARM when read, or back from it by then
(its history, :class:`AlarmJudge`).

The first two share :func:`sums` (GetMetricData, paged, summed per query), :class:`Since` (counts from the moment a
watch begins) and :class:`Counts`. On AWS, load balancers and Lambda put their metrics about a minute late: a watch of a
few minutes judges all but its last minute.
"""

from __future__ import annotations

import dataclasses
import json
import math
import threading
from collections import Counter
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any, ClassVar

from botocore.exceptions import ClientError

from deploykit import ecs, references
from deploykit.aws import DENIED, at_once, served, utc
from deploykit.clock import EPOCH, seconds_of
from deploykit.config import EnvConfig
from deploykit.errors import StepFailed, UsageError
from deploykit.plan import Context, Outcome, Step
from deploykit.stacks import error_code

PERIOD = 60  # seconds: the metrics watched here are per minute
ELB = "AWS/ApplicationELB"

# a query: (namespace, metric name, dimensions as CloudWatch takes them, in name order)
Query = tuple[str, str, list[dict[str, str]]]


def parse_duration(text: str, flag: str) -> float:
    """``300``, ``90s`` or ``5m`` (or ``1h``) → seconds; UsageError naming ``flag`` otherwise."""
    seconds = seconds_of(text)
    if seconds is None:
        raise UsageError(
            f"{flag} {text!r} is not a duration (of a year at most)",
            next_step=f"pass seconds or minutes: {flag} 90s, 5m",
        )
    return seconds


@dataclass(frozen=True)
class Counts:
    """Requests (invocations) and errors counted since a watch began."""

    requests: int = 0
    errors: int = 0

    @property
    def rate(self) -> float:
        """errors / requests; errors counted before their requests (the metrics arrive apart) are all there is."""
        return self.errors / max(self.requests, self.errors) if self.errors else 0.0

    def __add__(self, other: Counts) -> Counts:
        return Counts(self.requests + other.requests, self.errors + other.errors)

    def __str__(self) -> str:
        noun = "request" if self.requests == 1 else "requests"
        return f"{self.requests} {noun}, {self.errors} error{'' if self.errors == 1 else 's'}"


def too_many_errors(counts: Counts, max_error_rate: float) -> bool:
    """Any error at a rate of 0; else more than the rate."""
    return counts.errors > 0 and counts.rate > max_error_rate


BASELINE = 20  # requests the release before must have answered before a new one is judged against its rate
# the chance below which the new release's errors are more than a release failing at the old one's rate would have
SIGNIFICANCE = 0.01


def chance_of_as_many(errors: int, requests: int, rate: float) -> float:
    """The chance that ``requests`` invocations failing each with chance ``rate`` fail ``errors`` times or more
    (the binomial upper tail, summed in log space from ``errors`` until the terms no longer count)."""
    requests = max(requests, errors)
    if errors <= 0 or rate >= 1:
        return 1.0
    if rate <= 0:
        return 0.0
    if errors <= requests * rate:  # at or below what is expected: at least about even odds
        return 1.0
    log_p, log_q = math.log(rate), math.log1p(-rate)
    total = 0.0
    for k in range(errors, requests + 1):
        term = math.exp(
            math.lgamma(requests + 1)
            - math.lgamma(k + 1)
            - math.lgamma(requests - k + 1)
            + k * log_p
            + (requests - k) * log_q
        )
        total += term
        if term < total * 1e-12:  # past the mean the terms only shrink
            break
    return min(total, 1.0)


def baseline(old: Counts | None) -> Counts | None:
    """``old`` when it holds :data:`BASELINE` requests or more (a rate to judge a new release against), else None."""
    return old if old is not None and old.requests >= BASELINE else None


def failing(new: Counts, old: Counts | None, max_error_rate: float, looks: int = 1) -> bool:
    """Whether ``new``'s errors fail a release: too many (:func:`too_many_errors`) and, given ``old`` (the counts of
    what it replaces, once they hold :data:`BASELINE` requests), more than a release failing at ``old``'s own rate
    plus ``max_error_rate`` would have by chance (:func:`chance_of_as_many` under :data:`SIGNIFICANCE`, shared out
    among the ``looks`` a watch takes at the counts as they grow: each look is a chance for chance alone to pass
    it). So a dependency failing for both does not fail a release no worse than the one before, while one that
    fails more still fails within a few requests; beside a release with no error, one over the rate is still
    enough."""
    if not too_many_errors(new, max_error_rate):
        return False
    old = baseline(old)
    if old is not None:
        expected = min(old.rate + max_error_rate, 1.0)
        return chance_of_as_many(new.errors, new.requests, expected) < SIGNIFICANCE / max(looks, 1)
    return True


def looks_of(seconds: float, poll: float) -> int:
    """How many times a watch of ``seconds`` polled every ``poll`` seconds looks at its counts: one a poll, the
    first at once and the last at the end."""
    return math.ceil(seconds / poll) + 1 if poll > 0 else 1


def allowed(max_error_rate: float) -> str:
    """What fails a watch, for people."""
    return "any error" if max_error_rate == 0 else f"more than {max_error_rate:.1%} failing"


def sums(
    cloudwatch: Any,
    queries: Mapping[str, Query],
    start: datetime,
    end: datetime,
    answered: Callable[[Mapping[str, Any]], None] | None = None,
) -> dict[str, float]:
    """Each query's Sum from ``start`` (its minute: CloudWatch rounds down to it) to ``end``; one call a page.
    ``answered`` is given the first answer as it came (its ``ResponseMetadata``)."""
    found = dict.fromkeys(queries, 0.0)
    kwargs: dict[str, Any] = {
        "MetricDataQueries": [metric_query(key, query, PERIOD, "Sum") for key, query in queries.items()],
        "StartTime": start.replace(second=0, microsecond=0),
        "EndTime": end + timedelta(seconds=PERIOD),
    }
    for page, answer in enumerate(metric_pages(cloudwatch, kwargs)):
        if answered is not None and page == 0:
            answered(answer)
        for result in answer.get("MetricDataResults", []):
            found[result["Id"]] += sum(float(v) for v in result.get("Values", []))
    return found


def metric_query(key: str, query: Query, period: int, stat: str) -> dict[str, Any]:
    """One of GetMetricData's ``MetricDataQueries``: ``query``'s metric, its ``stat`` each ``period`` seconds."""
    namespace, name, dimensions = query
    return {
        "Id": key,
        "MetricStat": {
            "Metric": {"Namespace": namespace, "MetricName": name, "Dimensions": dimensions},
            "Period": period,
            "Stat": stat,
        },
        "ReturnData": True,
    }


def metric_pages(cloudwatch: Any, kwargs: Mapping[str, Any]) -> Iterator[Mapping[str, Any]]:
    """GetMetricData's answers to ``kwargs``, page after page."""
    asked = dict(kwargs)
    while True:
        answer = cloudwatch.get_metric_data(**asked)
        yield answer
        if not answer.get("NextToken"):
            return
        asked["NextToken"] = answer["NextToken"]


class Since:
    """The queries' sums from the moment this is made, in AWS's time (:func:`aws_now`). CloudWatch counts per
    minute: what that minute held before is read first and taken off each later reading (on AWS, where metrics come
    about a minute late, a little of it may still arrive after). The first read of a run notes AWS's time
    (:func:`note_aws_time`); when it finds this machine's clock apart from it, the minute is read again, in AWS's."""

    def __init__(self, ctx: Context, queries: Mapping[str, Query]) -> None:
        self.cloudwatch, self.queries, self.ctx = ctx.aws.client("cloudwatch"), queries, ctx
        unknown, sent = ctx.aws_offset is None, ctx.clock.now()
        self.start = aws_now(ctx)
        self.before = sums(self.cloudwatch, queries, self.start, self.start, lambda a: note_aws_time(ctx, a, sent))
        if unknown and ctx.aws_offset:
            self.start = aws_now(ctx)
            self.before = sums(self.cloudwatch, queries, self.start, self.start)

    def read(self) -> dict[str, float]:
        now = sums(self.cloudwatch, self.queries, self.start, aws_now(self.ctx))
        return {key: max(0.0, value - self.before[key]) for key, value in now.items()}


def aws_now(ctx: Context) -> datetime:
    """Now in AWS's time: this machine's clock, and the offset a run's first answer measured (:func:`note_aws_time`;
    none yet: this machine's)."""
    return ctx.clock.now() + timedelta(seconds=ctx.aws_offset or 0.0)


def balancer_dimension(arn: str) -> str:
    """A load balancer's ``LoadBalancer`` dimension: its ARN after ``:loadbalancer/`` (``app/<name>/<id>``)."""
    return arn.split(":loadbalancer/", 1)[-1]


def group_dimension(arn: str) -> str:
    """A target group's ``TargetGroup`` dimension: its ARN's resource (``targetgroup/<name>/<id>``)."""
    return arn.rsplit(":", 1)[-1]


def alb_queries(elbv2: Any, target_groups: list[str]) -> dict[str, Query]:
    """The requests and 5xx of the service's target groups and of their load balancers' own answers."""
    queries: dict[str, Query] = {}
    balancers: set[str] = set()
    described = elbv2.describe_target_groups(TargetGroupArns=target_groups).get("TargetGroups", [])
    for index, group in enumerate(described):
        for lb_index, lb_arn in enumerate(group.get("LoadBalancerArns") or ()):
            balancer = {"Name": "LoadBalancer", "Value": balancer_dimension(str(lb_arn))}
            dims = [balancer, {"Name": "TargetGroup", "Value": group_dimension(str(group["TargetGroupArn"]))}]
            queries[f"requests{index}x{lb_index}"] = (ELB, "RequestCount", dims)
            queries[f"target{index}x{lb_index}"] = (ELB, "HTTPCode_Target_5XX_Count", dims)
            balancers.add(balancer["Value"])
    for index, name in enumerate(sorted(balancers)):
        queries[f"elb{index}"] = (ELB, "HTTPCode_ELB_5XX_Count", [{"Name": "LoadBalancer", "Value": name}])
    return queries


def alb_counts(found: Mapping[str, float]) -> tuple[Counts, int, int]:
    """(requests and errors, of which the targets' 5xx, of which the ALB's own) from :func:`alb_queries`' sums."""
    requests = round(sum(v for k, v in found.items() if k.startswith("requests")))
    target = round(sum(v for k, v in found.items() if k.startswith("target")))
    elb = round(sum(v for k, v in found.items() if k.startswith("elb")))
    return Counts(requests, target + elb), target, elb


# The release before is judged by its answers in this long (or the watch's own length, if longer) before the rollout.
BEFORE_SECONDS = 600.0


def before_rollout(cloudwatch: Any, queries: Mapping[str, Query], began: datetime, seconds: float) -> Counts:
    """The ALB's counts in the whole minutes of the ``seconds`` before the rollout ``began``, its own minute left out
    (the new tasks may have answered in it): what the release before answered, for :func:`failing`."""
    return alb_counts(sums_before(cloudwatch, queries, began, seconds))[0]


def sums_before(cloudwatch: Any, queries: Mapping[str, Query], began: datetime, seconds: float) -> dict[str, float]:
    """Each query's Sum in the whole minutes of :func:`before_minutes`: before what ``began``, its own minute left
    out."""
    start, end = before_minutes(began, seconds)
    return sums(cloudwatch, queries, start, end - timedelta(seconds=PERIOD))  # sums reads a minute on


def before_minutes(began: datetime, seconds: float) -> tuple[datetime, datetime]:
    """The whole minutes :func:`before_rollout` counts (the release before's p90 too): from the minute ``seconds``
    before the rollout's own minute to that minute."""
    end = began.replace(second=0, microsecond=0)
    return (end - timedelta(seconds=PERIOD + seconds)).replace(second=0, microsecond=0), end


# a release answers slower when its p90 is this many seconds more than the release before's too (beside a multiple):
# 2 ms to 4 ms is no slowdown anyone feels
SLOWER_BY = 0.02


def ms(seconds: float | None) -> str:
    """A response time for people: ``12 ms``, ``4.2 ms``, ``1.40 s``; ``-`` without one."""
    if seconds is None:
        return "-"
    if seconds >= 1:
        return f"{seconds:.2f} s"
    return f"{seconds * 1000:.0f} ms" if seconds >= 0.01 else f"{seconds * 1000:.1f} ms"


def latency_query(queries: Mapping[str, Query]) -> Query | None:
    """The response times (``TargetResponseTime``) of the first target group behind a load balancer among
    :func:`alb_queries`' queries; None when there is none."""
    requests = [query for key, query in queries.items() if key.startswith("requests")]
    return (ELB, "TargetResponseTime", requests[0][2]) if requests else None


def over(
    cloudwatch: Any, queries: Mapping[str, tuple[Query, str]], start: datetime, end: datetime
) -> dict[str, list[float]]:
    """Each query's statistic (``key → (query, stat)``) over ``start`` to ``end`` (whole minutes) as one period, in one
    GetMetricData (paged): the values of the period that begins at ``start`` (CloudWatch may round a start long ago
    down: that one still), none of one after it; a statistic with no data has none."""
    period = int((end - start).total_seconds())
    asked = {
        "MetricDataQueries": [metric_query(key, query, period, stat) for key, (query, stat) in queries.items()],
        "StartTime": start,
        "EndTime": end,
    }
    values: dict[str, list[float]] = {key: [] for key in queries}
    for answer in metric_pages(cloudwatch, asked):
        for result in answer.get("MetricDataResults", []):
            for moment, value in zip(result.get("Timestamps", []), result.get("Values", []), strict=False):
                at = utc(moment)
                if value is not None and at is not None and at < end:  # not a period after it (moto gives one)
                    values[result["Id"]].append(float(value))
    return values


@dataclass(frozen=True)
class P90:
    """A p90 of response times, and how many answers it is of."""

    seconds: float
    answers: int


def p90_over(cloudwatch: Any, latency: Query, start: datetime, end: datetime) -> P90 | None:
    """The p90 of ``latency`` over the whole minutes from ``start`` to ``end``, both rounded up (a minute begun before
    ``start`` holds answers from before it; the one ``end`` is in counts with what it has so far); None without
    data."""
    start, end = minute_up(start), minute_up(end)
    if end <= start:
        return None
    found = over(cloudwatch, {"p90": (latency, "p90"), "answers": (latency, "SampleCount")}, start, end)
    if not found["p90"]:
        return None
    return P90(found["p90"][0], round(sum(found["answers"])))


def minute_up(moment: datetime) -> datetime:
    """``moment`` if it begins a minute, else the minute after it begins."""
    floor = moment.replace(second=0, microsecond=0)
    return floor if floor == moment else floor + timedelta(seconds=PERIOD)


@dataclass(frozen=True)
class WatchErrors(Step):
    """After the rollout, watch the service's answers through its ALB for ``seconds``; fail (and so roll back) when
    more than ``max_error_rate`` of them are 5xx and, with ``compare``, more than the release before explains (its
    rate in the minutes before the rollout: :func:`failing`)."""

    name: ClassVar[str] = "watch-errors"
    changes_what_runs: ClassVar[bool] = False  # a watch
    cluster: str
    service: str
    seconds: float
    max_error_rate: float
    poll: float
    compare: bool = True
    # the team's own alarms ([environments.NAME.alarm_watch]), read at each poll too: one going to ALARM ends the
    # watch there, rather than after it (deploykit.watch.WatchAlarms)
    alarms: tuple[str, ...] = ()
    # the p90 of its response times may be at most this many times the release before's (and SLOWER_BY more): more
    # fails the release; 0: not judged (the default)
    max_slowdown: float = 0.0

    def describe(self) -> str:
        also = [f"a p90 over {self.max_slowdown:g}× the release before's and 20 ms more"] if self.max_slowdown else []
        also += ["one of its alarms going to ALARM"] if self.alarms else []
        said = self._allowed() + "".join(f", or {one}" for one in also) + ("," if also else "")
        return (
            f"watch {self.service}'s answers through its ALB for {self.seconds:g}s: {said} fails the release (and "
            "rolls it back)"
        )

    def _allowed(self) -> str:
        return allowed(self.max_error_rate) + (" beyond the release before's rate" if self.compare else "")

    def _slower(self, now: P90 | None, was: P90) -> bool:
        """Whether ``now`` (of :data:`BASELINE` answers at least) is over ``max_slowdown`` times ``was`` and
        :data:`SLOWER_BY` more."""
        if now is None or now.answers < BASELINE:
            return False
        return now.seconds > was.seconds * self.max_slowdown and now.seconds - was.seconds >= SLOWER_BY

    def _began(self, service: Mapping[str, Any]) -> datetime | None:
        """When the rollout began (its PRIMARY deployment's creation), for the release before's figures; None without
        ``compare`` or that time."""
        primary = ecs.primary_deployment(dict(service))
        began = primary.get("createdAt") if primary else None
        return utc(began) if self.compare and isinstance(began, datetime) else None

    def fixed_seconds(self) -> float:
        return self.seconds

    def interrupted(self) -> str:
        return f"only the watching stopped: the release of {self.service} stays live"

    def run(self, ctx: Context) -> Outcome:
        service = ecs.describe_service(ctx.aws.client("ecs"), self.cluster, self.service, ctx.env)
        groups = ecs.target_groups(service)
        if not groups:
            return Outcome.skipped(f"{self.service} has no load balancer in front of it: nothing to watch")
        queries = alb_queries(ctx.aws.client("elbv2"), groups)
        if not queries:
            return Outcome.skipped(f"no load balancer routes to {self.service}'s target groups: nothing to watch")
        since, cloudwatch = Since(ctx, queries), ctx.aws.client("cloudwatch")
        began, window = self._began(service), max(self.seconds, BEFORE_SECONDS)
        # the release before's counts, when they hold a rate that means much; and its p90, when it is judged by
        judged_by = baseline(before_rollout(cloudwatch, queries, began, window)) if began else None
        latency = latency_query(queries) if self.max_slowdown else None
        was = None
        if latency is not None and judged_by is not None and began is not None:
            was = p90_over(cloudwatch, latency, *before_minutes(began, window))
            was = was if was is not None and was.answers >= BASELINE else None
        beside = ""
        if judged_by is not None:
            beside = f" (the release before: {judged_by}, {judged_by.rate:.1%}, in the minutes before the rollout)"
        alarms, started, now = AlarmJudge(ctx, self.alarms), ctx.clock.monotonic(), None
        while True:
            counts, target, elb = alb_counts(since.read())
            elapsed = ctx.clock.monotonic() - started
            ctx.reporter.status(f"{self.service}: {counts} in {elapsed:.0f}s of {self.seconds:g}s")
            if failing(counts, judged_by, self.max_error_rate, looks_of(self.seconds, self.poll)):
                raise StepFailed(
                    f"{self.service} answered {counts.errors} of {counts.requests} requests with a 5xx "
                    f"({counts.rate:.1%}: {target} from its tasks, {elb} from the ALB) in the {elapsed:.0f}s after its "
                    f"rollout{beside}; {allowed(self.max_error_rate)}"
                    + (" beyond that rate" if judged_by else "")
                    + " fails the release",
                    next_step=f"see what it wrote: inv logs --env {ctx.env.name} --since 15m",
                )
            failure = alarms.check()
            if failure is not None:
                raise failure
            if elapsed >= self.seconds:
                break
            ctx.clock.sleep(min(self.poll, self.seconds - elapsed))
        if latency is not None and was is not None:
            # once, at the end: over the watch's whole minutes (the one it began in holds the rollout's answers and
            # the release before's too), so that a fresh task's first slow seconds weigh as little as they last
            now = p90_over(cloudwatch, latency, since.start, aws_now(ctx))
            if self._slower(now, was):
                assert now is not None
                raise StepFailed(
                    f"{self.service} answered slower: p90 {ms(now.seconds)} over {now.answers} requests in the whole "
                    f"minutes of its {self.seconds:g}s watch, {ms(was.seconds)} before its rollout ({was.answers} "
                    f"requests in the minutes before it); a p90 over {self.max_slowdown:g}× the release before's fails "
                    "the release",
                    next_step=f"see what it wrote: inv logs --env {ctx.env.name} --since 15m; how each release "
                    f"served: inv perf --env {ctx.env.name}",
                )
        detail = f"{counts} in {self.seconds:g}s ({counts.rate:.1%})"
        if latency is not None and was is not None:
            if now is not None and now.answers >= BASELINE:
                detail += f"; p90 {ms(now.seconds)} (the release before: {ms(was.seconds)})"
            else:
                detail += "; too few answers in its whole minutes to judge its response times by"
        elif latency is not None:
            detail += "; its response times not judged: too few answers before the rollout to judge them by"
        if counts.requests == 0:
            detail += "; no request came, nothing to judge it by"
        elif too_many_errors(counts, self.max_error_rate) and judged_by is not None:
            detail += f"; no more than the release before ({judged_by.rate:.1%} before its rollout) explains"
        return Outcome.done(detail)


# -- the team's own alarms ----------------------------------------------------------------------------------------

# DescribeAlarms returns metric alarms alone unless asked for composite ones too
ALARM_TYPES = ("CompositeAlarm", "MetricAlarm")


PREFIX = "*"  # a name of [environments.NAME.alarm_watch] alarms ending in it: every alarm whose name starts so
METRICS_LATE = 60  # seconds: AWS's services put their metrics about a minute late, so alarms judge them that late


def read_alarms(
    cloudwatch: Any, names: Sequence[str], answered: Callable[[Mapping[str, Any]], None] | None = None
) -> dict[str, Mapping[str, Any]]:
    """The alarms of ``names`` that exist (metric or composite), by name, as DescribeAlarms says them: the names in
    one call, and for each name ending in ``*`` (:data:`PREFIX`) every alarm whose name starts with what comes
    before it, one call each (AlarmNamePrefix), all at once. ``answered`` is given the first call's first answer as
    it came (its ``ResponseMetadata``)."""
    exact = [name for name in names if not name.endswith(PREFIX)]
    asks: list[dict[str, Any]] = [{"AlarmNames": exact}] if exact else []
    asks += [{"AlarmNamePrefix": name[: -len(PREFIX)]} for name in names if name.endswith(PREFIX)]
    reads = {n: partial(_described, cloudwatch, ask, answered if n == 0 else None) for n, ask in enumerate(asks)}
    return {name: alarm for read in at_once(reads).values() for name, alarm in read.items()}


def _described(
    cloudwatch: Any, ask: Mapping[str, Any], answered: Callable[[Mapping[str, Any]], None] | None
) -> dict[str, Mapping[str, Any]]:
    """The alarms one DescribeAlarms ``ask`` (its names, or a start of them) finds, paged, by name."""
    found: dict[str, Mapping[str, Any]] = {}
    kwargs: dict[str, Any] = {**ask, "AlarmTypes": list(ALARM_TYPES)}
    while True:
        answer = cloudwatch.describe_alarms(**kwargs)
        if answered is not None and "NextToken" not in kwargs:
            answered(answer)
        for alarm in [*answer.get("MetricAlarms", []), *answer.get("CompositeAlarms", [])]:
            found[str(alarm["AlarmName"])] = alarm
        if not answer.get("NextToken"):
            return found
        kwargs["NextToken"] = answer["NextToken"]


def missing_alarms(names: Sequence[str], found: Collection[str]) -> list[str]:
    """The names of ``names`` no alarm ``found`` (by name) answers: a name not there, a ``prefix*`` no alarm's name
    starts with."""
    return [
        name
        for name in names
        if not (
            any(alarm.startswith(name[: -len(PREFIX)]) for alarm in found) if name.endswith(PREFIX) else name in found
        )
    ]


def in_alarm(found: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """The names of the alarms ``found`` that are in ALARM, in name order."""
    return sorted(name for name, alarm in found.items() if alarm.get("StateValue") == "ALARM")


def named(names: Sequence[str], found: Mapping[str, Any]) -> list[str]:
    """The alarms ``found`` in the order of ``names``: a name's, then a prefix's in the order of their names; each
    once."""
    said: dict[str, None] = {}
    for name in names:
        if name.endswith(PREFIX):
            said.update(dict.fromkeys(sorted(a for a in found if a.startswith(name[: -len(PREFIX)]))))
        elif name in found:
            said[name] = None
    return list(said)


def listed(names: Sequence[str], found: Mapping[str, Mapping[str, Any]]) -> list[tuple[str, Mapping[str, Any] | None]]:
    """The alarms ``found`` (each with itself) and the names of ``names`` no alarm answers (each with None), in the
    order of ``names`` (a start's alarms by their names), each once: the rows of ``inv alarms`` and ``inv health``."""
    missing = set(missing_alarms(names, found))
    said: dict[str, Mapping[str, Any] | None] = {}
    for name in names:
        if name in missing:
            said[name] = None
        said.update((each, found[each]) for each in named([name], found) if each not in said)
    return list(said.items())


def not_there(name: str, region: str) -> str:
    """What a name of the alarm watch no alarm answers is: ``not in CloudWatch (us-east-1)``, or, for a start of
    names, that no alarm starts with it."""
    what = "no alarm in CloudWatch starts with it" if name.endswith(PREFIX) else "not in CloudWatch"
    return f"{what} ({region})"


def moment(when: datetime) -> str:
    """``18:20:04 UTC``: a time an alarm's change is said with."""
    return when.astimezone(UTC).strftime("%H:%M:%S UTC")


SKEW_SEEN = 1.0  # seconds: a clock apart from AWS's by more than its Date's second (and the call's time) is seen
SKEW_SAID = 5.0  # seconds: a clock this far from AWS's is said (the watch counts in AWS's time either way)


def clock_offset(answer: Mapping[str, Any], sent: datetime, received: datetime) -> tuple[float, float] | None:
    """How far AWS's clock is from this machine's (AWS's time = this machine's + it, in seconds), from ``answer``'s
    ``Date`` (AWS's time, to the second) read between ``sent`` and ``received`` by this machine's clock: the offset
    lies between ``Date - received`` and ``Date + 1 - sent``. (the offset to count with, the estimate): unless those
    bounds put it more than :data:`SKEW_SEEN` from 0, 0; beyond, the lower bound, so that a moment counted with it is
    a second early at most, never late (an alarm the release set off is never taken for one from before it). The
    estimate is the bounds' middle. None when the answer says no time."""
    date = served(answer)
    if date is None:
        return None
    low, high = (date - received).total_seconds(), (date - sent).total_seconds() + 1
    return (low if low > SKEW_SEEN or high < -SKEW_SEEN else 0.0), (low + high) / 2


def skew_said(estimate: float) -> str:
    """``this machine's clock is about 61s ahead of AWS's``: a clock :func:`clock_offset` found apart."""
    return f"this machine's clock is about {abs(estimate):.0f}s {'behind' if estimate > 0 else 'ahead of'} AWS's"


def skew_to_say(found: tuple[float, float] | None) -> float | None:
    """The estimate of what :func:`clock_offset` ``found`` when it is worth saying: a clock seen apart from AWS's (an
    offset counted) by :data:`SKEW_SAID` or more; None otherwise."""
    return found[1] if found is not None and found[0] and abs(found[1]) >= SKEW_SAID else None


SET_THE_CLOCK = "timedatectl set-ntp true; on WSL: wsl --shutdown; in a VM, its time sync"


_NOTING = threading.Lock()


def note_aws_time(ctx: Context, answer: Mapping[str, Any], sent: datetime) -> None:
    """Set :attr:`Context.aws_offset` from ``answer`` (:func:`clock_offset`), read since ``sent``, once a run: when it
    is not set. A clock :data:`SKEW_SAID` or more apart (a laptop's that drifted: WSL, a VM after sleep) is said."""
    found = clock_offset(answer, sent, ctx.clock.now())
    if found is None:
        return
    with _NOTING:  # the canaries of a run's functions watch side by side: one sets it, and says it
        if ctx.aws_offset is not None:
            return
        ctx.aws_offset = found[0]
    if (estimate := skew_to_say(found)) is not None:
        ctx.reporter.line(
            f"⚠️  {skew_said(estimate)}: the watches count in AWS's time; set the clock right ({SET_THE_CLOCK})"
        )


def read_alarms_of(ctx: Context, names: Sequence[str]) -> dict[str, Mapping[str, Any]]:
    """:func:`read_alarms` with the run's credentials, the first answer noting AWS's time (:func:`note_aws_time`);
    refused (UsageError) when they may not read alarms."""
    sent = ctx.clock.now()
    try:
        return read_alarms(ctx.aws.client("cloudwatch"), names, lambda answer: note_aws_time(ctx, answer, sent))
    except ClientError as exc:
        if error_code(exc) not in DENIED:
            raise
        raise UsageError(
            f"may not read the CloudWatch alarms [environments.{ctx.env.name}.alarm_watch] names: "
            f"{error_code(exc)} ({exc})",
            next_step="allow cloudwatch:DescribeAlarms to the deploying role (see Permissions in the README), or take "
            "alarm_watch out of deploy.toml",
        ) from exc


def run_began(ctx: Context) -> datetime:
    """Since when what goes wrong may be the run's doing: its first change of what runs (now, before one), in AWS's
    time (:attr:`Context.aws_offset`), to the millisecond CloudWatch says its times in."""
    since = ctx.changing_since + timedelta(seconds=ctx.aws_offset or 0.0) if ctx.changing_since else aws_now(ctx)
    return since.replace(microsecond=since.microsecond // 1000 * 1000)


@dataclass(frozen=True)
class Fired:
    """An alarm that went to ALARM during the run: when, why, and when it left ALARM again (None: it is in ALARM)."""

    name: str
    at: datetime
    reason: str
    left: datetime | None = None
    state: str = "ALARM"  # its state now


def state_updates(cloudwatch: Any, name: str, since: datetime) -> Iterator[tuple[datetime, Mapping[str, Any], str]]:
    """Alarm ``name``'s changes of state from ``since`` on, oldest first (DescribeAlarmHistory, paged): each one's
    time, the state it went to (``HistoryData``'s ``newState``: ``stateValue``, ``stateReason``) and its summary."""
    kwargs: dict[str, Any] = {
        "AlarmName": name,
        "AlarmTypes": list(ALARM_TYPES),
        "HistoryItemType": "StateUpdate",
        "StartDate": since,
        "ScanBy": "TimestampAscending",
    }
    while True:
        answer = cloudwatch.describe_alarm_history(**kwargs)
        for item in answer.get("AlarmHistoryItems", []):
            try:
                new = json.loads(item.get("HistoryData") or "{}").get("newState") or {}
            except (ValueError, AttributeError):
                new = {}
            yield _aware(item.get("Timestamp")), new, str(item.get("HistorySummary") or "")
        if not answer.get("NextToken"):
            return
        kwargs["NextToken"] = answer["NextToken"]


def went_to_alarm(cloudwatch: Any, name: str, since: datetime) -> tuple[Fired | None, datetime | None]:
    """The first time alarm ``name`` went to ALARM at ``since`` or later, from its history (:func:`state_updates`),
    None when it did not; and the time of the newest change the history holds (None: none since then), which tells
    whether it holds the alarm's last change yet."""
    newest: datetime | None = None
    for at, new, summary in state_updates(cloudwatch, name, since):
        newest = max(newest or at, at)
        if new.get("stateValue") == "ALARM" and at >= since:
            return Fired(name, at, str(new.get("stateReason") or summary)), newest
    return None, newest


def times_in_alarm(cloudwatch: Any, name: str, since: datetime) -> int:
    """How many times alarm ``name`` went to ALARM from ``since`` on (:func:`state_updates`)."""
    return sum(1 for _, new, _ in state_updates(cloudwatch, name, since) if new.get("stateValue") == "ALARM")


ALARMED = " went to ALARM "  # in the failure of a release an alarm judged (AlarmJudge), whatever step read it


class AlarmJudge:
    """The team's alarms (``names``) judging a release, read at each poll of a watch (:meth:`read`): one that went to
    ALARM at ``since`` or later (the run's first change of what runs) fails it (:meth:`failure`). One in ALARM now
    says so itself. One that is not, but changed state since then, may have gone to ALARM and back between two reads
    (or before the one read of a watch that reads once, after smoke): its history says whether it did, read only
    then, and once for each change of its state."""

    def __init__(self, ctx: Context, names: Sequence[str]) -> None:
        self.ctx, self.names = ctx, tuple(names)
        self._since: datetime | None = None
        self._cleared: dict[str, datetime] = {}  # alarm → its last change whose history since ``since`` had no ALARM
        self._read_once: set[tuple[str, datetime]] = set()  # (alarm, its last change) whose history was read once
        self._blind = False  # the history may not be read: said once

    @property
    def since(self) -> datetime:
        """When the run began changing what runs (:func:`run_began`), known once an answer said AWS's time."""
        if self._since is None:
            self._since = run_began(self.ctx)
        return self._since

    def read(self) -> dict[str, Mapping[str, Any]]:
        return read_alarms_of(self.ctx, self.names) if self.names else {}

    def failure(self, found: Mapping[str, Mapping[str, Any]]) -> StepFailed | None:
        """The failure of the release that the alarms ``found`` (:meth:`read`) judge bad; None when none does."""
        fired = [
            Fired(name, _updated(alarm), str(alarm.get("StateReason", "")))
            for name, alarm in found.items()
            if alarm.get("StateValue") == "ALARM" and _updated(alarm) >= self.since
        ]
        if not fired:
            fired = [
                dataclasses.replace(went, left=_updated(alarm), state=str(alarm.get("StateValue", "?")))
                for name, alarm in found.items()
                if (went := self._in_history(name, alarm)) is not None
            ]
        if not fired:
            return None
        first = fired[0]
        after = (first.at - self.since).total_seconds()
        also = f" (and {', '.join(f.name for f in fired[1:])})" if fired[1:] else ""
        back = f", and was {first.state} again at {moment(first.left)}" if first.left is not None else ""
        reason = first.reason.strip().rstrip(".")
        return StepFailed(
            f"alarm {first.name}{also}{ALARMED}{after:.0f}s after the deploy began changing what runs (at "
            f"{moment(first.at)}){back}: {reason}; it fails the release",
            next_step=f"see what it watches: aws cloudwatch describe-alarms --alarm-names {first.name}; what the "
            f"release wrote: inv logs --env {self.ctx.env.name} --since 15m",
        )

    def check(self) -> StepFailed | None:
        """:meth:`failure` of the alarms read now."""
        return self.failure(self.read()) if self.names else None

    def _in_history(self, name: str, alarm: Mapping[str, Any]) -> Fired | None:
        """When alarm ``name``, not in ALARM now, went to ALARM since the run began (its history): read when it
        changed state since then, and not again until it changes once more. A history that does not hold that change
        yet (written after the alarm's state, or none: a new alarm's first state) is read once more, at the next
        poll."""
        updated = _updated(alarm)
        if self._blind or updated < self.since or self._cleared.get(name) == updated:
            return None
        try:
            went, newest = went_to_alarm(self.ctx.aws.client("cloudwatch"), name, self.since)
        except ClientError as exc:
            if error_code(exc) not in DENIED:
                raise
            self._blind = True
            self.ctx.reporter.line(
                f"⚠️  the alarms' history may not be read ({error_code(exc)}): an alarm that goes to ALARM and back "
                "between two reads is not seen (allow cloudwatch:DescribeAlarmHistory)"
            )
            return None
        if went is None:
            if (newest is not None and newest >= updated) or (name, updated) in self._read_once:
                self._cleared[name] = updated
            self._read_once.add((name, updated))
        return went


def states(found: Mapping[str, Mapping[str, Any]]) -> str:
    """``2 OK, 1 INSUFFICIENT_DATA``: how many alarms are in each state."""
    counted = Counter(str(alarm.get("StateValue", "?")) for alarm in found.values())
    return ", ".join(f"{count} {state}" for state, count in sorted(counted.items()))


@dataclass(frozen=True)
class WatchAlarms(Step):
    """After smoke, read the team's own CloudWatch alarms (``[environments.NAME.alarm_watch]``) for ``seconds`` (0:
    once): one that went to ALARM since the run began changing what runs (:attr:`Context.changing_since`) fails the
    release, and so rolls it back. One in ALARM since before cannot tell this release from the one before: it is
    said, not judged by. Its alarms, named in deploy.toml, are checked before the run changes anything
    (:meth:`preflight`): one CloudWatch does not have, and no stack the run deploys before it could make
    (deploykit.references.could_make), refuses the run."""

    name: ClassVar[str] = "watch-alarms"
    verifies: ClassVar[bool] = True  # nothing changed before it: nothing of the run's to judge
    changes_what_runs: ClassVar[bool] = False  # a watch
    preflight_at_start: ClassVar[bool] = True  # its names are read before a build, not after it and the push
    alarms: tuple[str, ...]
    seconds: float
    poll: float
    # in a plan without an automatic rollback (deploy.stack, deploy.full): the command that puts back what it deployed,
    # said first in the failure's next step
    undo: str = ""

    def describe(self) -> str:
        how_long = f"for {self.seconds:g}s" if self.seconds else "once"
        then = "its failure names the rollback" if self.undo else "and rolls it back"
        return (
            f"read CloudWatch alarm{'' if len(self.alarms) == 1 and not self.alarms[0].endswith(PREFIX) else 's'} "
            f"{', '.join(self.alarms)} {how_long}: one "
            f"going to ALARM since the deploy began fails the release ({then})"
        )

    def fixed_seconds(self) -> float:
        return self.seconds

    def interrupted(self) -> str:
        return "only the watching stopped: what the run deployed stays live"

    def preflight(self, ctx: Context, before: tuple[Step, ...]) -> None:
        missing = missing_alarms(self.alarms, read_alarms_of(ctx, self.alarms))
        earlier = references.earlier_stacks(before)
        if missing and earlier:  # a stack the run deploys first may make it (the team's alarms in the CDK app)
            made = references.could_make(earlier, region=ctx.env.region, account=ctx.aws.account())
            missing = [
                name
                for name in missing
                if not (name.endswith(PREFIX) or made("alarm", name) or made("composite_alarm", name))
            ]
        if missing:
            raise UsageError(
                f"CloudWatch has no alarm named {', '.join(missing)} in {ctx.env.region} (deploy.toml's "
                f"[environments.{ctx.env.name}.alarm_watch] alarms); a deploy it cannot judge is not started",
                next_step="create it there (aws cloudwatch put-metric-alarm --alarm-name ...; a composite alarm is "
                "found too), or take it out of alarms",
            )

    def run(self, ctx: Context) -> Outcome:
        judge, started = AlarmJudge(ctx, self.alarms), ctx.clock.monotonic()
        seen: set[str] = set()  # the alarms read so far: a prefix's too
        while True:
            found = judge.read()
            elapsed = ctx.clock.monotonic() - started
            gone = sorted(seen - set(found))  # read before, not now
            absent = missing_alarms(missing_alarms(self.alarms, found), seen)  # nor ever
            seen |= set(found)
            table = f"[environments.{ctx.env.name}.alarm_watch] alarms"
            if gone:  # as CloudFormation's rollback triggers: a missing alarm vouches for nothing
                raise StepFailed(
                    f"alarm {', '.join(gone)} is gone from CloudWatch (deleted while the deploy ran): it cannot vouch "
                    "for the release",
                    next_step=f"put it back, or take it out of {table}",
                )
            if absent:
                raise StepFailed(
                    f"CloudWatch has no alarm named {', '.join(absent)} ({table}): deleted since the deploy began, or "
                    "not made by the stack of the run that was to make it: it cannot vouch for the release",
                    next_step=f"put it back, or make it (in the CDK app, as its name), or take it out of {table}",
                )
            failure = judge.failure(found)
            if failure is not None:
                if self.undo:
                    failure.next_step = f"{self.undo}; {failure.next_step}"
                raise failure
            ctx.reporter.status(f"alarms: {states(found)} ({elapsed:.0f}s of {self.seconds:g}s)")
            if elapsed >= self.seconds:
                break
            ctx.clock.sleep(min(self.poll, self.seconds - elapsed))
        detail = f"{states(found)}: none went to ALARM " + (
            f"in {self.seconds:g}s after smoke" if self.seconds else "since the deploy began (read once, after smoke)"
        )
        before = in_alarm(found)
        if before:
            detail += "; " + ", ".join(
                f"{name} in ALARM since before the deploy ({moment(_updated(found[name]))})" for name in before
            )
            detail += f": not judged by {'it' if len(before) == 1 else 'them'}"
        return Outcome.done(detail)


def alarm_period(alarm: Mapping[str, Any]) -> int:
    """An alarm's period in seconds: its ``Period``, a metric math alarm's the longest of its metrics' (each
    ``MetricStat``'s); 0 when it has none (a composite alarm follows its alarms)."""
    period = alarm.get("Period")
    if isinstance(period, int) and period > 0:
        return period
    periods = [
        m.get("MetricStat", {}).get("Period") or m.get("Period")
        for m in alarm.get("Metrics") or []
        if isinstance(m, Mapping)
    ]
    return max((p for p in periods if isinstance(p, int) and p > 0), default=0)


def state_changed(alarm: Mapping[str, Any]) -> datetime | None:
    """When an alarm's state (``StateValue``) last changed, aware: its ``StateTransitionedTimestamp`` (AWS says it),
    else its ``StateUpdatedTimestamp`` (moto says that alone; AWS moves it at other updates too: a composite alarm's
    at any change of its reason, a metric alarm's at one of its evaluation state); None when neither is said."""
    return utc(alarm.get("StateTransitionedTimestamp")) or utc(alarm.get("StateUpdatedTimestamp"))


def _updated(alarm: Mapping[str, Any]) -> datetime:
    """:func:`state_changed`, the epoch when not said."""
    return state_changed(alarm) or EPOCH


def _aware(when: Any) -> datetime:
    """A time CloudWatch says, in UTC (naive: taken as UTC); the epoch when it is not a time."""
    return utc(when) or EPOCH


def alarm_watch(env: EnvConfig, undo: str = "", *, after_errors: bool = False) -> list[Step]:
    """The watch of the team's own alarms after a deploy's smoke, when the environment names some; ``undo``: in a
    plan without an automatic rollback, the command that puts back what it deployed. ``after_errors``: it follows the
    app's error watch, which read the alarms at each of its polls: it watches only for the rest of its time (at
    least once), not for all of it again."""
    watch = env.alarm_watch
    if not watch.on:
        return []
    seconds = watch.seconds
    if after_errors and env.app_error_watch.on:
        seconds = max(0.0, seconds - env.app_error_watch.seconds)
    return [WatchAlarms(watch.alarms, seconds, env.poll_seconds, undo)]
