"""Unit tests of deploykit.perf: which release was live when, from the history, and how each is judged against the
one before it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from unittest.mock import Mock

import pytest

from deploykit import perf, watch
from deploykit.history import Record
from deploykit.perf import Release, Served
from deploykit.watch import Counts

T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
END = T0 + timedelta(hours=6)


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def record(
    minutes: float,
    components: dict[str, str],
    base: dict[str, str | None],
    *,
    command: str = "deploy.auto",
    ok: bool = True,
    changed: bool | None = True,
    removed: list[str] | None = None,
    who: str = "ana@laptop",
    rolled: bool = False,
    moved: tuple[str, ...] = (),
    changing: float | None = None,
) -> Record:
    """A run's record written ``minutes`` after T0 (5 s long); ``rolled``: its roll-service step was done; ``moved``:
    the functions whose alias its move-alias steps moved; ``changing``: the minute it began changing what runs."""
    moment = at(minutes)
    steps = [{"step": "roll-service", "status": "done" if rolled else "not run", "seconds": 0.1, "detail": ""}]
    return Record(
        id=f"{moment:%Y%m%dT%H%M%S}-x",
        env="dev",
        when=moment.isoformat(timespec="seconds"),
        who=who,
        command=command,
        head=next(iter(components.values()), "aaaaaaaaaaaa"),
        ok=ok,
        seconds=5.0,
        components=components,
        base=base,
        changed=changed,
        removed=removed or [],
        steps=steps,
        left={f"lambda:{fn}": {"version": "7"} for fn in moved},
        changing=None if changing is None else at(changing).isoformat(),
    )


def served(requests: int, errors: int = 0, p90: float | None = 0.05) -> Served:
    latency = {} if p90 is None else {"p50": p90 / 2, "p90": p90, "p99": p90 * 2}
    return Served(Counts(requests, errors), latency)


def test_each_run_that_changed_a_component_begins_a_release_the_first_one_from_its_base() -> None:
    records = [
        record(30, {"app": "bbbbbbbbbbbb"}, {"app": "aaaaaaaaaaaa"}, who="ana@laptop"),
        record(60, {"lambda:login": "cccccccccccc"}, {"lambda:login": None}),  # another component
        record(90, {"app": "dddddddddddd"}, {"app": "bbbbbbbbbbbb"}, ok=False, rolled=True),  # live during its 5 s
        record(91, {"app": "bbbbbbbbbbbb"}, {"app": "bbbbbbbbbbbb"}, command="automatic rollback: app"),
        record(120, {"app": "bbbbbbbbbbbb"}, {"app": "bbbbbbbbbbbb"}, changed=False),  # found it running
        record(130, {"app": "ffffffffffff"}, {"app": "bbbbbbbbbbbb"}, ok=False, changed=False),  # its build failed
        record(150, {"app": "eeeeeeeeeeee"}, {"app": "bbbbbbbbbbbb"}, command="rollback app", who="bo@ci"),
    ]
    found = perf.timeline("app", records, {"sha": "eeeeeeeeeeee", "when": at(150).isoformat()}, T0, END)
    failed_from = at(90) - timedelta(seconds=5)
    assert [(r.sha[:1], r.begin, r.end, r.live, r.rollback, r.failed) for r in found] == [
        ("a", T0, at(30), False, False, False),
        ("b", at(30), failed_from, False, False, False),
        ("d", failed_from, at(91), False, False, True),
        ("b", at(91), at(150), False, True, False),
        ("e", at(150), END, True, True, False),
    ]
    assert found[0].went_live is None  # before the window: not read
    assert found[1].went_live == at(30) and found[1].who == "ana@laptop"
    assert found[4].who == "bo@ci"
    assert perf.mark(perf.Row(found[2], None)).startswith("❌ its deploy failed")


def test_a_release_is_live_from_when_its_run_began_changing_what_runs() -> None:
    records = [
        record(30, {"app": "bbbbbbbbbbbb"}, {"app": "aaaaaaaaaaaa"}, changing=28),  # a 2-minute watch after it
        record(60, {"app": "cccccccccccc"}, {"app": "bbbbbbbbbbbb"}, ok=False, rolled=True, changing=59.5),
        record(61, {"app": "bbbbbbbbbbbb"}, {"app": "bbbbbbbbbbbb"}, command="automatic rollback: app", changing=60.5),
    ]
    found = perf.timeline("app", records, None, T0, END)
    assert [(r.sha[0], r.begin, r.end) for r in found] == [
        ("a", T0, at(28)),
        ("b", at(28), at(59.5)),
        ("c", at(59.5), at(60.5)),
        ("b", at(60.5), END),
    ]


def test_a_failed_run_begins_a_release_only_of_what_it_put_live() -> None:
    both = {"app": "bbbbbbbbbbbb", "lambda:login": "bbbbbbbbbbbb"}
    before = {"app": "aaaaaaaaaaaa", "lambda:login": "aaaaaaaaaaaa"}
    # the service rolled to it; the function's canary took itself back, its alias never moved
    records = [record(30, both, before, ok=False, rolled=True)]
    assert [r.sha[0] for r in perf.timeline("app", records, None, T0, END)] == ["a", "b"]
    assert [r.sha[0] for r in perf.timeline("lambda:login", records, None, T0, END)] == ["a"]
    # the function's alias moved, the app failed at its build
    records = [record(30, both, before, ok=False, moved=("login",))]
    assert [r.sha[0] for r in perf.timeline("app", records, None, T0, END)] == ["a"]
    assert [r.sha[0] for r in perf.timeline("lambda:login", records, None, T0, END)] == ["a", "b"]


def test_a_run_that_only_waited_still_ends_a_failed_release() -> None:
    records = [
        record(30, {"app": "bbbbbbbbbbbb"}, {"app": "aaaaaaaaaaaa"}, ok=False, rolled=True),
        # ECS's circuit breaker had put the old revision back: the automatic rollback only waited and smoked
        record(31, {"app": "aaaaaaaaaaaa"}, {"app": "aaaaaaaaaaaa"}, command="automatic rollback: app", changed=False),
        record(40, {"app": "cccccccccccc"}, {"app": "aaaaaaaaaaaa"}, ok=False, rolled=True),
        record(50, {"app": "cccccccccccc"}, {"app": "cccccccccccc"}, changed=False),  # a rerun found it running
    ]
    found = perf.timeline("app", records, None, T0, END)
    assert [(r.sha[0], r.failed, r.live) for r in found] == [
        ("a", False, False),
        ("b", True, False),
        ("a", False, False),
        ("c", True, False),
        ("c", False, True),  # the rerun that worked vouches for it
    ]


def test_without_a_run_in_the_window_the_live_record_says_what_served_all_of_it() -> None:
    found = perf.timeline("app", [], {"sha": "aaaaaaaaaaaa", "when": "2026-11-20T08:00:00+00:00"}, T0, END)
    assert found == [Release("app", "aaaaaaaaaaaa", T0, END, True, datetime(2026, 11, 20, 8, tzinfo=UTC))]
    assert perf.timeline("app", [], None, T0, END) == []


def test_a_component_taken_out_has_no_release_after_it_and_one_first_deployed_none_before() -> None:
    records = [
        record(30, {"lambda:fn": "bbbbbbbbbbbb"}, {"lambda:fn": None}),
        record(60, {}, {"lambda:fn": "bbbbbbbbbbbb"}, command="destroy", removed=["lambda:fn"]),
    ]
    found = perf.timeline("lambda:fn", records, None, T0, END)
    assert [(r.sha[:1], r.begin, r.end, r.live) for r in found] == [("b", at(30), at(60), False)]


def test_a_release_is_read_over_its_whole_minutes_the_live_ones_current_minute_too() -> None:
    closed = Release("app", "a" * 12, at(10.5), at(14.25))
    assert closed.minutes() == (at(11), at(14))
    assert Release("app", "a" * 12, at(10.5), at(14.25), live=True).minutes() == (at(11), at(15))
    assert Release("app", "a" * 12, at(10), at(11)).minutes() == (at(10), at(11))
    assert Release("app", "a" * 12, at(10.2), at(11.5)).minutes() is None  # no whole minute


def test_a_release_is_slower_at_half_again_the_p90_before_and_twenty_ms_more() -> None:
    assert perf.slower(served(100, p90=0.15), served(100, p90=0.05)) == pytest.approx(3.0)
    assert perf.slower(served(100, p90=0.07), served(100, p90=0.05)) is None  # 1.4×
    assert perf.slower(served(100, p90=0.004), served(100, p90=0.002)) is None  # 2×, but 2 ms
    assert perf.slower(served(100, p90=0.15), served(19, p90=0.05)) is None  # too few before to judge by
    assert perf.slower(served(19, p90=0.15), served(100, p90=0.05)) is None  # too few to judge
    assert perf.slower(served(100, p90=None), served(100, p90=0.05)) is None  # no percentile read
    assert perf.slower(served(100, p90=0.15), served(100, p90=0.0)) is None  # nothing to be a multiple of


def test_each_release_is_judged_against_the_newest_one_before_it_with_enough_requests() -> None:
    releases = [Release("app", c * 12, at(i * 10), at(i * 10 + 10)) for i, c in enumerate("abcd")]
    figures = [served(500, 0, 0.05), served(500, 0, 0.2), None, served(500, 40, 0.2)]
    rows = perf.judged(releases, figures, 0.01)
    assert [(r.slower, r.more_errors) for r in rows] == [
        (None, False),
        (pytest.approx(4.0), False),
        (None, False),
        (None, True),  # against b, past c which has nothing read
    ]
    assert rows[3].before == releases[1] and "❗ more errors than bbbbbbbbbbbb (0.0%)" in perf.mark(rows[3])
    assert "🐢 p90 4.0× the release before's (50 ms)" in perf.mark(rows[1])
    # a release with too few requests, or whose deploy failed, is passed over for the one before it
    failed = Release("app", "f" * 12, at(20), at(30), failed=True)
    rows = perf.judged(
        [releases[0], releases[1], failed, releases[3]],
        [served(500, 0, 0.05), served(10, 0, 0.01), served(500, 0, 0.01), served(500, 0, 0.2)],
        0.01,
    )
    assert rows[3].before == releases[0] and rows[3].slower == pytest.approx(4.0)
    # errors no more than the release before's own rate explains are not marked
    rows = perf.judged(releases[:2], [served(500, 100, 0.05), served(500, 105, 0.05)], 0.01)
    assert not rows[1].flagged


def test_the_table_says_each_release_its_figures_and_what_marks_it() -> None:
    releases = [
        Release("app", "a" * 12, T0, at(182)),
        Release("app", "b" * 12, at(182), END, live=True, went_live=at(182), rollback=False),
    ]
    rows = perf.judged(releases, [served(1204, 1, 0.04), served(2310, 3, 0.13)], 0.01)
    text = perf.table(rows)
    assert "before  " in text and "3h 02m" in text and "12-01 12:02" in text and "live" in text
    assert "1,204" in text and "0.1%" in text and "40 ms" in text and "130 ms" in text
    assert "🐢 p90 3.2× the release before's (40 ms)" in text
    assert rows[1].to_json() | {"p50": None, "p99": None} == {
        "sha": "b" * 12,
        "from": "2026-12-01T12:02:00Z",
        "to": None,
        "live": True,
        "went_live": "2026-12-01T12:02:00Z",
        "rollback": False,
        "failed": False,
        "who": "",
        "requests": 2310,
        "errors": 3,
        "error_rate": round(3 / 2310, 6),
        "p50": None,
        "p90": 0.13,
        "p99": None,
        "judged_against": "a" * 12,
        "slower": 3.25,
        "more_errors": False,
    }


def test_response_times_and_how_long_are_said_for_people() -> None:
    assert [watch.ms(s) for s in (None, 0.0042, 0.04, 1.4)] == ["-", "4.2 ms", "40 ms", "1.40 s"]
    assert perf.lasted(Release("app", "a", T0, at(0.5))) == "30.0s"
    assert perf.lasted(Release("app", "a", T0, at(14))) == "14m 00s"
    assert perf.lasted(Release("app", "a", T0, at(60 * 50))) == "2d 2h"
    row = perf.Row(Release("app", "a", T0, at(0.5), rollback=True), None)
    assert perf.mark(row) == "↩️  put back; live under a whole minute: nothing to read"
    assert perf.mark(perf.Row(Release("app", "a", T0, at(5)), served(0, p90=None))) == "no request reached it"
    plain = perf.table([perf.Row(Release("app", "a" * 12, T0, END, live=True), served(5))])
    assert plain.splitlines()[0].split() == [
        "live",
        "since",
        "(UTC)",
        "commit",
        "for",
        "requests",
        "errors",
        "p50",
        "p90",
        "p99",
    ]


def test_read_served_reads_every_page_and_only_the_period_that_begins_at_its_start() -> None:
    cloudwatch = Mock(spec=["get_metric_data"])
    cloudwatch.get_metric_data.side_effect = [
        {"MetricDataResults": [{"Id": "requests0", "Timestamps": [at(10)], "Values": [40.0]}], "NextToken": "t"},
        {
            "MetricDataResults": [
                {"Id": "requests0", "Timestamps": [at(20)], "Values": [99.0]},  # a period after it (moto gives one)
                {"Id": "p90", "Timestamps": [at(10)], "Values": [120.0]},  # Lambda's Duration: milliseconds
                {"Id": "errors0", "Timestamps": [at(10).replace(tzinfo=None)], "Values": [2.0]},
                {"Id": "p50", "Timestamps": [at(10)], "Values": [None]},  # a percentile with nothing to take it of
            ]
        },
    ]
    found = perf.read_served(cloudwatch, perf.function_source("fn"), at(10), at(20))
    assert found == Served(Counts(40, 2), {"p90": pytest.approx(0.12)})
    first, second = (call.kwargs for call in cloudwatch.get_metric_data.call_args_list)
    assert second["NextToken"] == "t" and first["StartTime"] == at(10) and first["EndTime"] == at(20)
    assert {query["MetricStat"]["Period"] for query in first["MetricDataQueries"]} == {600}
