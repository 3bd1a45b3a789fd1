"""How each release served (``inv perf``): for the app (its answers through the ALB) and each Lambda function, every
release that was live in a window, with its requests, its error rate and its response times (p50, p90, p99), and
each one that answers slower, or fails more, than the release before it marked.

Where a release begins and ends comes from the history (deploykit.history): a run that changed a component put its
release live when its record was written (the end of the run), until the next one that changed it (a deploy, a
rollback, the automatic rollback of a failed deploy); the release live at the window's start is the first run's
``base``, or the live record's when no run changed the component in the window. What each served comes from the
metrics AWS's services put on their own, in one ``GetMetricData`` per release, over the whole minutes it was live
(CloudWatch counts per minute; the minute a release went live in holds the one before's answers too):

- the app: ``AWS/ApplicationELB`` ``RequestCount``, ``HTTPCode_Target_5XX_Count`` and ``TargetResponseTime`` by
  ``LoadBalancer`` and ``TargetGroup`` (the service's target groups), and the ALB's own ``HTTPCode_ELB_5XX_Count``,
  as the error watch reads them (deploykit.watch);
- a function: ``AWS/Lambda`` ``Invocations``, ``Errors`` and ``Duration`` by ``FunctionName``.

A release is judged against the one before it once both answered :data:`deploykit.watch.BASELINE` requests: slower
when its p90 is :data:`SLOWER` times the one before's and :data:`SLOWER_BY` more at least; failing more as the error
watch and the canary judge a release (:func:`deploykit.watch.failing`, with the environment's ``max_error_rate``).
Nothing here decides or changes anything: the command (deploykit.commands.views.perf) reads and says.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from deploykit.history import Record
from deploykit.output import tabulate
from deploykit.report import changed
from deploykit.stored import shown
from deploykit.watch import ELB, PERIOD, Counts, Query, alb_queries, baseline, failing

PERCENTILES = ("p50", "p90", "p99")
SLOWER = 1.5  # a release whose p90 is this many times the release before's answers slower ...
SLOWER_BY = 0.02  # ... when that is this many seconds more too: 2 ms to 4 ms is no slowdown anyone feels
MAX_WINDOW = timedelta(days=15)  # CloudWatch keeps per-minute data this long (then per 5 minutes, then per hour)
LAMBDA = "AWS/Lambda"


@dataclass(frozen=True)
class Source:
    """Where one component's figures are: the metrics summed for its requests and its errors, the one whose
    percentiles are its response times, and what that one's unit is in seconds (Lambda's Duration: milliseconds)."""

    requests: tuple[Query, ...]
    errors: tuple[Query, ...]
    latency: Query | None
    scale: float = 1.0


def app_source(elbv2: Any, target_groups: list[str]) -> Source | None:
    """The app's answers through its ALB (the error watch's counts, and the response times of its first target
    group behind a load balancer); None when no load balancer routes to its target groups."""
    queries = alb_queries(elbv2, target_groups)
    requests = tuple(q for key, q in queries.items() if key.startswith("requests"))
    if not requests:
        return None
    errors = tuple(q for key, q in queries.items() if key.startswith(("target", "elb")))
    return Source(requests, errors, (ELB, "TargetResponseTime", requests[0][2]))


def function_source(function_name: str) -> Source:
    """A Lambda function's invocations, errors and durations (every version's, by its name)."""
    dims = [{"Name": "FunctionName", "Value": function_name}]
    return Source(((LAMBDA, "Invocations", dims),), ((LAMBDA, "Errors", dims),), (LAMBDA, "Duration", dims), 0.001)


@dataclass(frozen=True)
class Release:
    """One release of a component live in the window: from ``begin`` (when it went live, or the window's start) to
    ``end`` (when the next went live, or the window's end while it is ``live``)."""

    component: str
    sha: str
    begin: datetime
    end: datetime
    live: bool = False
    went_live: datetime | None = None  # None: before the window, where the history was not read
    rollback: bool = False  # a rollback put it back
    who: str = ""
    failed: bool = False  # the run that put it live failed (its release served during it, until taken back)

    def minutes(self) -> tuple[datetime, datetime] | None:
        """The whole minutes it was live (the live one's current minute counts: what has come of it so far); None
        when it was live less than one whole minute."""
        start = _minute(self.begin, up=True)
        end = _minute(self.end, up=self.live)
        return (start, end) if end - start >= timedelta(seconds=PERIOD) else None


def _minute(moment: datetime, *, up: bool) -> datetime:
    floor = moment.astimezone(UTC).replace(second=0, microsecond=0)
    return floor + timedelta(seconds=PERIOD) if up and floor != moment.astimezone(UTC) else floor


def timeline(
    component: str,
    records: Sequence[Record],
    live: Mapping[str, str] | None,
    start: datetime,
    until: datetime,
) -> list[Release]:
    """The releases of ``component`` live from ``start`` to ``until``, oldest first, from the records of the runs
    in that time (oldest first) and the live record's entry for it. A run changed it when it changed what runs and
    deployed it (a rollback too): its release went live when it ended; a run that failed so (its release live until
    its automatic rollback, or on with ``--no-rollback``) from when it began, as its release served during it. A run
    that took it out (destroy) leaves nothing live after it."""
    changes: list[tuple[datetime, str | None, Record]] = []
    for record in records:
        if component in record.removed and record.ok:
            changes.append((_when(record), None, record))
        elif component in record.deployed and changed(record):
            began = _when(record) - timedelta(seconds=0 if record.ok else record.seconds)
            changes.append((max(began, changes[-1][0]) if changes else began, record.deployed[component], record))
    if changes:
        sha, went_live = changes[0][2].base.get(component), None
    elif live:
        sha, went_live = live.get("sha"), _parsed(live.get("when"))
    else:
        return []
    releases: list[Release] = []
    begin, by = start, None
    for when, next_sha, record in changes:
        if sha and when > begin:
            releases.append(_release(component, sha, begin, when, went_live, by))
        sha, begin, went_live, by = next_sha, max(when, start), when, record
    if sha:
        releases.append(_release(component, sha, begin, until, went_live, by, live=True))
    return releases


def _release(
    component: str,
    sha: str,
    begin: datetime,
    end: datetime,
    went_live: datetime | None,
    by: Record | None,
    *,
    live: bool = False,
) -> Release:
    """The release ``by`` (the run that put it live; None: before the window) put live."""
    rollback, failed, who = (False, False, "") if by is None else (by.rollback, not by.ok, by.who)
    return Release(component, sha, begin, end, live, went_live, rollback, who, failed)


def _when(record: Record) -> datetime:
    return datetime.fromisoformat(record.when).astimezone(UTC)


def _parsed(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    return moment.astimezone(UTC) if moment.tzinfo else None


@dataclass(frozen=True)
class Served:
    """What a release answered in its whole minutes: its requests and errors, and its response times in seconds
    (a percentile CloudWatch had no data for is not there)."""

    counts: Counts
    latency: dict[str, float] = field(default_factory=dict)


def read_served(cloudwatch: Any, source: Source, start: datetime, end: datetime) -> Served:
    """One ``GetMetricData`` over ``start`` to ``end`` (whole minutes), one period: the sums and the percentiles."""
    period = int((end - start).total_seconds())
    keyed: dict[str, tuple[Query, str]] = {}
    for index, query in enumerate(source.requests):
        keyed[f"requests{index}"] = (query, "Sum")
    for index, query in enumerate(source.errors):
        keyed[f"errors{index}"] = (query, "Sum")
    if source.latency is not None:
        keyed |= {stat: (source.latency, stat) for stat in PERCENTILES}
    metric_queries = [
        {
            "Id": key,
            "MetricStat": {
                "Metric": {"Namespace": namespace, "MetricName": name, "Dimensions": dimensions},
                "Period": period,
                "Stat": stat,
            },
            "ReturnData": True,
        }
        for key, ((namespace, name, dimensions), stat) in keyed.items()
    ]
    values: dict[str, list[float]] = {key: [] for key in keyed}
    kwargs: dict[str, Any] = {"MetricDataQueries": metric_queries, "StartTime": start, "EndTime": end}
    while True:
        answer = cloudwatch.get_metric_data(**kwargs)
        for result in answer.get("MetricDataResults", []):
            for moment, value in zip(result.get("Timestamps", []), result.get("Values", []), strict=False):
                if _in(moment, start, end):  # the period that begins at start: none after it
                    values[result["Id"]].append(float(value))
        if not answer.get("NextToken"):
            break
        kwargs["NextToken"] = answer["NextToken"]
    requests = round(sum(sum(v) for k, v in values.items() if k.startswith("requests")))
    errors = round(sum(sum(v) for k, v in values.items() if k.startswith("errors")))
    latency = {stat: values[stat][0] * source.scale for stat in PERCENTILES if values.get(stat)}
    return Served(Counts(requests, errors), latency)


def _in(moment: object, start: datetime, end: datetime) -> bool:
    if not isinstance(moment, datetime):
        return False
    aware = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment
    return start <= aware < end


@dataclass(frozen=True)
class Row:
    """A release, what it served (None: live under a whole minute, nothing to read) and how it compares with the
    release before it: ``slower``, its p90 as a multiple of that one's when it answers slower; ``more_errors``."""

    release: Release
    served: Served | None
    slower: float | None = None
    more_errors: bool = False
    before: Served | None = None  # what the release before served, when it was judged against it

    @property
    def flagged(self) -> bool:
        return self.slower is not None or self.more_errors

    def to_json(self) -> dict[str, Any]:
        release, served = self.release, self.served
        return {
            "sha": release.sha,
            "from": shown(release.begin),
            "to": None if release.live else shown(release.end),
            "live": release.live,
            "went_live": None if release.went_live is None else shown(release.went_live),
            "rollback": release.rollback,
            "failed": release.failed,
            "who": release.who,
            "requests": None if served is None else served.counts.requests,
            "errors": None if served is None else served.counts.errors,
            "error_rate": None if served is None or not served.counts.requests else round(served.counts.rate, 6),
            **{stat: None if served is None else _rounded(served.latency.get(stat)) for stat in PERCENTILES},
            "slower": None if self.slower is None else round(self.slower, 2),
            "more_errors": self.more_errors,
        }


def _rounded(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds, 6)


def judged(releases: Sequence[Release], served: Sequence[Served | None], max_error_rate: float) -> list[Row]:
    """Each release with what it served, judged against the one before it (:func:`slower`, and
    :func:`deploykit.watch.failing`: errors beyond that one's rate, plus ``max_error_rate``, by more than chance)."""
    rows: list[Row] = []
    for index, (release, figures) in enumerate(zip(releases, served, strict=True)):
        before = served[index - 1] if index else None
        if figures is None or before is None or baseline(before.counts) is None or not figures.counts.requests:
            rows.append(Row(release, figures))
            continue
        rows.append(
            Row(
                release,
                figures,
                slower(figures, before),
                failing(figures.counts, before.counts, max_error_rate),
                before,
            )
        )
    return rows


def slower(new: Served, old: Served) -> float | None:
    """``new``'s p90 as a multiple of ``old``'s when it answers slower (:data:`SLOWER` times and :data:`SLOWER_BY`
    more), both having answered :data:`deploykit.watch.BASELINE` requests; else None."""
    if baseline(new.counts) is None or baseline(old.counts) is None:
        return None
    now, was = new.latency.get("p90"), old.latency.get("p90")
    if now is None or was is None or now - was < SLOWER_BY:
        return None
    if was <= 0:
        return math.inf
    return now / was if now / was >= SLOWER else None


def ms(seconds: float | None) -> str:
    """A response time as the table says it: ``12 ms``, ``1.40 s``; ``-`` without one."""
    if seconds is None:
        return "-"
    if seconds >= 1:
        return f"{seconds:.2f} s"
    return f"{seconds * 1000:.0f} ms" if seconds >= 0.01 else f"{seconds * 1000:.1f} ms"


def lasted(release: Release) -> str:
    """How long a release was live: ``3h 02m``, ``14m``, ``40s``, ``live``."""
    if release.live:
        return "live"
    seconds = int((release.end - release.begin).total_seconds())
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    if days:
        return f"{days}d {hours:02d}h"
    if hours:
        return f"{hours}h {minutes:02d}m"
    return f"{minutes}m" if minutes else f"{seconds}s"


def mark(row: Row) -> str:
    """What the table says of a release beside the one before it."""
    said = []
    if row.slower is not None and row.before is not None:
        times = "∞" if math.isinf(row.slower) else f"{row.slower:.1f}"
        said.append(f"🐢 p90 {times}× the release before's ({ms(row.before.latency.get('p90'))})")
    if row.more_errors and row.before is not None:
        said.append(f"❗ more errors than the release before ({row.before.counts.rate:.1%})")
    if row.served is None:
        said.append("live under a whole minute: nothing to read")
    elif not row.served.counts.requests:
        said.append("no request reached it")
    if row.release.failed:
        said.insert(0, "❌ its deploy failed")
    if row.release.rollback:
        said.insert(0, "↩️  put back")
    return "; ".join(said)


def table(rows: Iterable[Row], noun: str = "requests") -> str:
    """The releases of one component, oldest first."""
    body = []
    marks = False
    for row in rows:
        release, served = row.release, row.served
        went = "before" if release.went_live is None else release.went_live.strftime("%m-%d %H:%M")
        figures = ["-", "-"] if served is None else [f"{served.counts.requests:,}", _rate(served.counts)]
        latency = [ms(None if served is None else served.latency.get(stat)) for stat in PERCENTILES]
        said = mark(row)
        marks = marks or bool(said)
        body.append([went, release.sha[:12], lasted(release), *figures, *latency, said])
    headers = ["live since (UTC)", "commit", "for", noun, "errors", *PERCENTILES, ""]
    if not marks:  # no empty column at the end
        headers.pop()
        body = [line[:-1] for line in body]
    return tabulate(body, headers=headers, disable_numparse=True)


def _rate(counts: Counts) -> str:
    return f"{counts.rate:.1%}" if counts.requests else "-"
