"""How each release served (``inv perf``): for the app (its answers through the ALB) and each Lambda function, every
release that was live in a window, with its requests, its error rate and its response times (p50, p90, p99), and
each one that answers slower, or fails more, than the release before it marked.

Where a release begins and ends comes from the history (deploykit.history): a run that changed a component put its
release live from when it began changing what runs (its record's ``changing``; a record of before it was kept: its
end, or a failed run's start), until the next one that changed it (a deploy, a rollback, the automatic rollback of a
failed deploy); the release live at the window's start is the first run's ``base``, or the live record's when no run
changed the component in the window. What each served comes from the metrics AWS's services put on their own, in one
``GetMetricData`` per release, over the whole minutes it was live (CloudWatch counts per minute; the minute a release
went live in holds the one before's answers too):

- the app: ``AWS/ApplicationELB`` ``RequestCount``, ``HTTPCode_Target_5XX_Count`` and ``TargetResponseTime`` by
  ``LoadBalancer`` and ``TargetGroup`` (the service's target groups), and the ALB's own ``HTTPCode_ELB_5XX_Count``,
  as the error watch reads them (deploykit.watch);
- a function: ``AWS/Lambda`` ``Invocations``, ``Errors`` and ``Duration`` by ``FunctionName``.

A release is judged against the newest release before it that answered :data:`deploykit.watch.BASELINE` requests
(and whose deploy did not fail): slower when its p90 is :data:`SLOWER` times that one's and :data:`SLOWER_BY` more
at least, both having answered that many; failing more as the error watch and the canary judge a release
(:func:`deploykit.watch.failing`, with the environment's ``max_error_rate``). Nothing here decides or changes
anything: the command (deploykit.commands.views.perf_report) reads and says.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from deploykit import stored
from deploykit.history import Record
from deploykit.output import tabulate
from deploykit.report import changed, duration
from deploykit.watch import (
    PERIOD,
    SLOWER_BY,
    Counts,
    Query,
    alb_queries,
    baseline,
    failing,
    latency_query,
    minute_up,
    ms,
    over,
)

PERCENTILES = ("p50", "p90", "p99")
SLOWER = 1.5  # a release whose p90 is this many times the release before's answers slower ...
# ... when that is deploykit.watch.SLOWER_BY more too (the error watch's max_slowdown judges so)
# CloudWatch keeps per-minute data 15 days (then per 5 minutes, then per hour): a day less leaves the reads, and a
# clock a little off, on the right side of it
MAX_WINDOW = timedelta(days=14)
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
    return Source(requests, errors, latency_query(queries))


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
        start = minute_up(self.begin)
        end = minute_up(self.end) if self.live else self.end.replace(second=0, microsecond=0)
        return (start, end) if end - start >= timedelta(seconds=PERIOD) else None


def timeline(
    component: str,
    records: Sequence[Record],
    live: Mapping[str, str] | None,
    start: datetime,
    until: datetime,
) -> list[Release]:
    """The releases of ``component`` live from ``start`` to ``until``, oldest first, from the records of the runs
    in that time (oldest first) and the live record's entry for it.

    A run that worked and deployed it begins a release when it changed what runs, or left it on another commit than
    the release live (the automatic rollback after ECS's circuit breaker put the old one back: it waited only), or
    on the same commit after a failed deploy of it; a run that failed begins one when its release went live (the
    service rolled to it, a function's alias moved to it) before the failure. A run that took it out (destroy)
    leaves nothing live after it."""
    named = [r for r in records if component in r.deployed or (component in r.removed and r.ok)]
    if named:
        sha, went_live = named[0].base.get(component), None
    elif live:
        sha, went_live = live.get("sha"), stored.moment(live.get("when"))
    else:
        return []
    releases: list[Release] = []
    begin, by = start, None
    for record in named:
        if component in record.removed:
            next_sha: str | None = None
        else:
            next_sha = record.deployed[component]
            failed_before = by is not None and not by.ok
            if record.ok and not (changed(record) or next_sha != sha or failed_before):
                continue
            if not record.ok and not record.failed_live(component):
                continue
        when = max(_began(record), begin)
        if sha and when > begin:
            releases.append(_release(component, sha, begin, when, went_live, by))
        sha, begin, went_live, by = next_sha, when, when, record
    if sha:
        releases.append(_release(component, sha, begin, until, went_live, by, live=True))
    return releases


def _began(record: Record) -> datetime:
    """When a run's release went live: when it began changing what runs; a record of before that was kept: when it
    ended (a run that worked: the minutes before count for the release before), or began (one that failed: it
    served during the run)."""
    end = stored.moment(record.when) or datetime.now(UTC)
    changing = stored.moment(record.changing)
    if changing is not None:
        return changing
    return end if record.ok else end - timedelta(seconds=record.seconds)


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
    """The release the run ``by`` put live (None: before the window)."""
    rollback, failed, who = (False, False, "") if by is None else (by.rollback, not by.ok, by.who)
    return Release(component, sha, begin, end, live, went_live, rollback, who, failed)


@dataclass(frozen=True)
class Served:
    """What a release answered in its whole minutes: its requests and errors, and its response times in seconds
    (a percentile CloudWatch had no data for is not there)."""

    counts: Counts
    latency: dict[str, float] = field(default_factory=dict)


def read_served(cloudwatch: Any, source: Source, start: datetime, end: datetime) -> Served:
    """One ``GetMetricData`` over ``start`` to ``end`` (whole minutes) as one period (:func:`deploykit.watch.over`):
    the sums and the percentiles."""
    keyed = {f"requests{index}": (query, "Sum") for index, query in enumerate(source.requests)}
    keyed |= {f"errors{index}": (query, "Sum") for index, query in enumerate(source.errors)}
    if source.latency is not None:
        keyed |= {stat: (source.latency, stat) for stat in PERCENTILES}
    values = over(cloudwatch, keyed, start, end)
    requests = round(sum(sum(v) for k, v in values.items() if k.startswith("requests")))
    errors = round(sum(sum(v) for k, v in values.items() if k.startswith("errors")))
    latency = {stat: values[stat][0] * source.scale for stat in PERCENTILES if values.get(stat)}
    return Served(Counts(requests, errors), latency)


@dataclass(frozen=True)
class Row:
    """A release, what it served (None: live under a whole minute, or not read) and how it compares with the release
    it is judged against (``before``, and what that one served): ``slower``, its p90 as a multiple of that one's when
    it answers slower; ``more_errors``."""

    release: Release
    served: Served | None
    slower: float | None = None
    more_errors: bool = False
    before: Release | None = None
    before_served: Served | None = None

    @property
    def flagged(self) -> bool:
        return self.slower is not None or self.more_errors

    def to_json(self) -> dict[str, Any]:
        release, served = self.release, self.served
        return {
            "sha": release.sha,
            "from": stored.shown(release.begin),
            "to": None if release.live else stored.shown(release.end),
            "live": release.live,
            "went_live": None if release.went_live is None else stored.shown(release.went_live),
            "rollback": release.rollback,
            "failed": release.failed,
            "who": release.who,
            "requests": None if served is None else served.counts.requests,
            "errors": None if served is None else served.counts.errors,
            "error_rate": None if served is None or not served.counts.requests else round(served.counts.rate, 6),
            **{stat: None if served is None else _rounded(served.latency.get(stat)) for stat in PERCENTILES},
            "judged_against": None if self.before is None else self.before.sha,
            "slower": None if self.slower is None else round(self.slower, 2),
            "more_errors": self.more_errors,
        }


def _rounded(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds, 6)


def judged(releases: Sequence[Release], served: Sequence[Served | None], max_error_rate: float) -> list[Row]:
    """Each release with what it served, judged against the newest release before it that answered
    :data:`deploykit.watch.BASELINE` requests and whose deploy did not fail (:func:`slower`, and
    :func:`deploykit.watch.failing`: errors beyond that one's rate, plus ``max_error_rate``, by more than chance)."""
    rows: list[Row] = []
    for index, (release, figures) in enumerate(zip(releases, served, strict=True)):
        earlier = (
            (releases[at], found)
            for at in range(index - 1, -1, -1)
            if (found := served[at]) is not None and not releases[at].failed and baseline(found.counts) is not None
        )
        before = next(earlier, None)
        if figures is None or before is None or not figures.counts.requests:
            rows.append(Row(release, figures))
            continue
        then = before[1]
        more = failing(figures.counts, then.counts, max_error_rate)
        rows.append(Row(release, figures, slower(figures, then), more, *before))
    return rows


def slower(new: Served, old: Served) -> float | None:
    """``new``'s p90 as a multiple of ``old``'s when it answers slower (:data:`SLOWER` times and :data:`SLOWER_BY`
    more), both having answered :data:`deploykit.watch.BASELINE` requests; else None."""
    if baseline(new.counts) is None or baseline(old.counts) is None:
        return None
    now, was = new.latency.get("p90"), old.latency.get("p90")
    if now is None or was is None or was <= 0 or now - was < SLOWER_BY:
        return None
    return now / was if now / was >= SLOWER else None


def lasted(release: Release) -> str:
    """How long a release was live, for people: ``3h 02m``, ``14m 05s``, ``40.0s``; ``live`` for the live one."""
    return "live" if release.live else duration((release.end - release.begin).total_seconds())


def mark(row: Row) -> str:
    """What the table says of a release beside the one before it."""
    said = []
    then = row.before_served
    if then is not None and row.before is not None and row.slower is not None:
        said.append(f"🐢 p90 {row.slower:.1f}× {_theirs(row)} ({ms(then.latency.get('p90'))})")
    if then is not None and row.more_errors:
        said.append(f"❗ more errors than {_theirs(row, '')} ({then.counts.rate:.1%})")
    if row.served is None:
        said.append("live under a whole minute: nothing to read" if row.release.minutes() is None else "not read")
    elif not row.served.counts.requests:
        said.append("no request reached it")
    if row.release.failed:
        said.insert(0, "❌ its deploy failed")
    if row.release.rollback:
        said.insert(0, "↩️  put back")
    return "; ".join(said)


def _theirs(row: Row, suffix: str = "'s") -> str:
    """``the release before's``, or the commit judged against where it is not the row just before."""
    assert row.before is not None
    return f"the release before{suffix}" if row.before.end == row.release.begin else f"{row.before.sha[:12]}{suffix}"


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
