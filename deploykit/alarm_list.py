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
from datetime import UTC, datetime
from typing import Any

from deploykit.clock import Clock
from deploykit.lock import duration
from deploykit.output import tabulate
from deploykit.stored import utc
from deploykit.watch import PREFIX, missing_alarms, named

ALARM = "ALARM"
MISSING = "MISSING"  # the state of a name no alarm in CloudWatch answers
METRICS_LATE = 60  # seconds: on AWS, services put their metrics about a minute late, and alarms judge them as late
REASON_SHOWN = 90  # characters of an alarm's reason the table shows (--json has it whole)


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


def changed_at(alarm: Mapping[str, Any]) -> datetime | None:
    """When an alarm last changed state (aware UTC), None when CloudWatch does not say."""
    return utc(alarm.get("StateUpdatedTimestamp"))


def _iso(when: datetime | None) -> str:
    return when.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z") if when else ""


def rows(names: Sequence[str], found: Mapping[str, Mapping[str, Any]]) -> list[AlarmRow]:
    """A row for each alarm ``found`` (by name) in the order of ``names`` (a start's alarms by their names), and one
    for each name no alarm answers, where deploy.toml has it."""
    missing = set(missing_alarms(names, found))
    said: list[AlarmRow] = []
    for name in names:
        if name in missing:
            what = "no alarm in CloudWatch starts with it" if name.endswith(PREFIX) else "not in CloudWatch"
            said.append(AlarmRow(name, MISSING, "", what, ""))
            continue
        for each in named([name], found):
            if any(row.name == each for row in said):
                continue
            alarm = found[each]
            said.append(
                AlarmRow(
                    each,
                    str(alarm.get("StateValue", "?")),
                    _iso(changed_at(alarm)),
                    " ".join(str(alarm.get("StateReason", "")).split()),
                    "composite" if "AlarmRule" in alarm else "metric",
                )
            )
    return said


def _ago(since: str, now: datetime) -> str:
    if not since:
        return ""
    when = datetime.fromisoformat(since.replace("Z", "+00:00"))
    return f"{when.strftime('%H:%M:%S UTC')} ({duration((now - when).total_seconds())} ago)"


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


def in_alarm(found: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """The names of the alarms ``found`` that are in ALARM, in name order."""
    return sorted(name for name, alarm in found.items() if alarm.get("StateValue") == ALARM)


def clears_within(alarm: Mapping[str, Any], *, local: bool) -> float | None:
    """How long a metric alarm in ALARM takes to leave it at the most once its metric is good again: its
    ``EvaluationPeriods`` periods (and, on AWS, the minute its metrics come late); None for a composite alarm, which
    follows its alarms."""
    period, periods = alarm.get("Period"), alarm.get("EvaluationPeriods")
    if not isinstance(period, int) or not isinstance(periods, int) or period <= 0 or periods <= 0:
        return None
    return float(period * periods + (0 if local else METRICS_LATE))


def suggested_wait(found: Mapping[str, Mapping[str, Any]], names: Sequence[str], *, local: bool) -> str:
    """The ``--wait`` to give for the alarms ``names`` (in ALARM): twice the longest of their :func:`clears_within`,
    in whole minutes, at least one (``10m``)."""
    longest = max((clears_within(found[n], local=local) or 0.0 for n in names), default=0.0)
    return f"{max(1, math.ceil(2 * longest / 60))}m"


@dataclass(frozen=True)
class Waited:
    """How :func:`until_clear` ended: the alarms as last read, how long it waited (0: not at all, none was in ALARM
    at the first read), whether none was in ALARM."""

    found: Mapping[str, Mapping[str, Any]]
    seconds: float
    clear: bool


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
    while True:
        elapsed = clock.monotonic() - started
        if not alarming or elapsed >= seconds:
            return Waited(found, elapsed, not alarming)
        status(f"{len(alarming)} in ALARM: {', '.join(sorted(alarming))} ({duration(elapsed)} of {duration(seconds)})")
        clock.sleep(min(poll, seconds - elapsed))
        found = read()
        now = set(in_alarm(found))
        for name in sorted(alarming - now):
            alarm = found.get(name)
            state = str(alarm.get("StateValue", "?")) if alarm is not None else "gone from CloudWatch"
            when = changed_at(alarm) if alarm is not None else None
            say(f"✅ {name}: {state}" + (f" at {when.strftime('%H:%M:%S UTC')}" if when else ""))
        for name in sorted(now - alarming):
            when = changed_at(found[name])
            reason = " ".join(str(found[name].get("StateReason", "")).split())
            say(f"🔔 {name}: went to ALARM" + (f" at {when.strftime('%H:%M:%S UTC')}" if when else "") + f": {reason}")
        alarming = now
