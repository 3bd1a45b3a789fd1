"""``inv alarms``: the alarms ``[environments.NAME.alarm_watch]`` names, as CloudWatch has them now, and the wait
until none of them is in ALARM.

The alarm watch (deploykit.watch.WatchAlarms) judges a release by them. After a rollback (``inv rollback``, or the
automatic one of a failed deploy) they say whether it worked: an alarm the bad release set off stays in ALARM until
its metric has been within its threshold for enough of its periods. ``inv alarms --wait 10m`` reads them every
poll until none is in ALARM (exit 0) or the time is up with one still there (exit 1, its reason said): what an
on-call person watches after putting a release back, without a console.

What is read: one DescribeAlarms for the names and one for each name's start (``prefix*``), at once
(deploykit.watch.read_alarms); the first answer's ``Date`` puts "how long ago" in AWS's time. :func:`rows`,
:func:`table` and :func:`in_alarm` decide and read nothing.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from deploykit.clock import Clock
from deploykit.config import MAX_ALARM_WATCH
from deploykit.lock import duration
from deploykit.output import tabulate
from deploykit.stored import shown
from deploykit.watch import METRICS_LATE, alarm_period, in_alarm, listed, moment, not_there, state_changed

ALARM = "ALARM"
MISSING = "MISSING"  # the state of a name no alarm in CloudWatch answers
REASON_SHOWN = 90  # characters of an alarm's reason the table shows (--json has it whole)
# seconds an alarm whose periods cannot be read (a composite alarm follows its alarms) is taken to need to leave
# ALARM: five one-minute periods on AWS, a minute on the sandbox (whose alarms' periods are seconds)
UNKNOWN_CLEARS = 300
UNKNOWN_CLEARS_LOCAL = 60


@dataclass(frozen=True)
class AlarmRow:
    """One alarm, as the table and ``--json`` show it."""

    name: str
    state: str  # ALARM, OK, INSUFFICIENT_DATA; MISSING: named in deploy.toml, not in CloudWatch
    since: str  # its last change of state, ISO 8601 UTC ("" when missing)
    reason: str  # CloudWatch's StateReason; for a missing one, what is missing
    kind: str  # "metric", "composite" ("" when missing)

    def to_json(self) -> dict[str, str]:
        return asdict(self)


def rows(names: Sequence[str], found: Mapping[str, Mapping[str, Any]], region: str) -> list[AlarmRow]:
    """A row for each alarm ``found`` (by name) in the order of ``names`` (a start's alarms by their names), and one
    for each name no alarm answers in ``region``, where deploy.toml has it (deploykit.watch.listed)."""
    return [
        AlarmRow(name, MISSING, "", not_there(name, region), "")
        if alarm is None
        else AlarmRow(
            name,
            str(alarm.get("StateValue", "?")),
            shown(when) if (when := state_changed(alarm)) else "",
            reason(alarm),
            "composite" if "AlarmRule" in alarm else "metric",
        )
        for name, alarm in listed(names, found)
    ]


def reason(alarm: Mapping[str, Any]) -> str:
    """Why an alarm is in its state (its ``StateReason``), on one line."""
    return " ".join(str(alarm.get("StateReason", "")).split())


def since(alarm: Mapping[str, Any]) -> str:
    """`` (since 18:20:04 UTC)``: when an alarm went to its state; "" when CloudWatch does not say."""
    when = state_changed(alarm)
    return f" (since {moment(when)})" if when else ""


def _ago(since: str, now: datetime) -> str:
    if not since:
        return ""
    when = datetime.fromisoformat(since.replace("Z", "+00:00"))
    return f"{moment(when)} ({duration((now - when).total_seconds())} ago)"


def table(found: Sequence[AlarmRow], now: datetime) -> str:
    """The rows as a table, each change of state with how long before ``now`` (AWS's time) it was."""
    lines = [
        [
            ("🔔 " if r.state == ALARM else "") + r.name,
            r.state,
            _ago(r.since, now),
            r.reason[:REASON_SHOWN] + ("…" if len(r.reason) > REASON_SHOWN else ""),
        ]
        for r in found
    ]
    return tabulate(lines, headers=["alarm", "state", "since", "why"])


def clears_within(alarm: Mapping[str, Any], *, local: bool) -> float | None:
    """How long an alarm in ALARM takes to leave it at the most once its metric is good again: its
    ``EvaluationPeriods`` periods (a metric math alarm's longest period among its metrics), and on AWS the minute its
    metrics come late; None when its periods are not said (a composite alarm, which follows its alarms)."""
    period, periods = alarm_period(alarm), alarm.get("EvaluationPeriods")
    if not period or not isinstance(periods, int) or periods <= 0:
        return None
    return float(period * periods + (0 if local else METRICS_LATE))


def suggested_wait(
    found: Mapping[str, Mapping[str, Any]], names: Sequence[str], *, local: bool, waited: float = 0.0
) -> str:
    """The ``--wait`` to give for the alarms ``names`` (in ALARM): twice the longest of their :func:`clears_within`
    (one whose periods are not said: :data:`UNKNOWN_CLEARS`), and at least twice what was ``waited`` already, in
    whole minutes, one at least and 3 hours at most (the longest wait taken: ``10m``)."""
    unknown = float(UNKNOWN_CLEARS_LOCAL if local else UNKNOWN_CLEARS + METRICS_LATE)
    longest = max((clears_within(found[n], local=local) or unknown for n in names if n in found), default=unknown)
    return f"{min(max(1, math.ceil(2 * max(longest, waited) / 60)), int(MAX_ALARM_WATCH // 60))}m"


@dataclass(frozen=True)
class Waited:
    """How :func:`until_clear` ended: the alarms as last read, how long it waited (0: not at all, none was in ALARM
    at the first read), whether none was in ALARM; ``gone``: the alarms read before that CloudWatch no longer has
    (deleted during the wait: they cannot say they left ALARM, so the wait is not clear)."""

    found: Mapping[str, Mapping[str, Any]]
    seconds: float
    clear: bool
    gone: tuple[str, ...] = ()


def until_clear(
    read: Callable[[], Mapping[str, Mapping[str, Any]]],
    found: Mapping[str, Mapping[str, Any]],
    *,
    seconds: float,
    poll: float,
    clock: Clock,
    say: Callable[[str], None],
    status: Callable[[str], None],
) -> Waited:
    """Read the alarms (``read``) every ``poll`` seconds from ``found`` (read already) until none is in ALARM, or
    ``seconds`` have passed with one still there. Each alarm that leaves ALARM, or goes to it, meanwhile is said
    (``say``), when CloudWatch says it did; ``status``: how many are in ALARM, how long it has waited."""
    started = clock.monotonic()
    alarming = set(in_alarm(found))
    if not alarming:
        return Waited(found, 0.0, True)
    seen = set(found)
    while True:
        elapsed = clock.monotonic() - started
        if not alarming or elapsed >= seconds:
            return Waited(found, elapsed, not alarming)
        status(f"{len(alarming)} in ALARM: {', '.join(sorted(alarming))} ({duration(elapsed)} of {duration(seconds)})")
        clock.sleep(min(poll, seconds - elapsed))
        found = read()
        gone = sorted(seen - set(found))
        if gone:
            return Waited(found, clock.monotonic() - started, False, tuple(gone))
        now = set(in_alarm(found))
        for name in sorted(alarming - now):
            say(f"✅ {name}: {found[name].get('StateValue', '?')}{_at(found[name])}")
        for name in sorted(now - alarming):
            say(f"🔔 {name}: went to ALARM{_at(found[name])}: {reason(found[name])}")
        alarming = now
        seen |= set(found)


def _at(alarm: Mapping[str, Any]) -> str:
    """`` at 18:20:04 UTC``: when an alarm went to its state; "" when CloudWatch does not say."""
    when = state_changed(alarm)
    return f" at {moment(when)}" if when else ""


def without_data(found: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """The alarms ``found`` in INSUFFICIENT_DATA, in name order: left ALARM for want of data, which is also what a
    service taking no request says."""
    return sorted(name for name, alarm in found.items() if alarm.get("StateValue") == "INSUFFICIENT_DATA")


def cleared(waited: Waited) -> str:
    """``none in ALARM after 2m10s`` (a wait that found none in ALARM at once: ``none in ALARM``), and the alarms
    in INSUFFICIENT_DATA then, which say no more than that their metric has no data."""
    said = "none in ALARM" + (f" after {duration(waited.seconds)}" if waited.seconds else "")
    blind = without_data(waited.found)
    if blind:
        said += (
            f" ({', '.join(blind)} in INSUFFICIENT_DATA: no data to judge by, which a service taking no request "
            "says too)"
        )
    return said
