"""The deployment report (``inv report``): what an environment's history says about its deploys over a window.

From the records alone (plus, for lead time, the commit times git knows), four figures in the spirit of DORA's
four keys: how often a change was deployed, how many runs failed, how long the environment took to be on a good
deploy again after one did, and how long a commit took to go live; then each chain's wall times beside the goals
of DESIGN.md, where the time goes step by step, and the newest failures. Pure: it reads nothing itself.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from deploykit.canary import TAKEN_BACK
from deploykit.git import DIRTY
from deploykit.history import RESULTS, Record, step_name
from deploykit.output import tabulate

# Wall-time goals on AWS per chain, in seconds (DESIGN.md); stacks take what CloudFormation needs.
GOALS: Mapping[str, float] = {"app": 75.0, "lambda": 15.0}
ROLLBACKS = ("rollback", "automatic rollback")
# restart: new tasks, pause and resume: tasks stopped or started; nothing deployed
NOT_DEPLOYS = (*ROLLBACKS, "destroy", "base-image", "restart", "pause", "resume")
GROUPS = ("sequence", "parallel")  # a group's time is its children's
_NOT_FIXES = ("destroy", "base-image", "restart", "pause", "resume")  # a deploy run or a rollback restores
CHAINS = ("app", "lambda", "stack", "mixed", "full", "nothing")
FAILURES_SHOWN = 5
STEPS_SHOWN = 10  # in the text; --json has them all


def verb(record: Record) -> str:
    """The command a record ran, without its arguments: deploy.stack, rollback, automatic rollback..."""
    for name in ROLLBACKS[::-1]:  # "rollback app → <sha>", "automatic rollback: app"
        if record.command.startswith(name):
            return name
    # one stage or a few, as `inv build`, `inv push`... name them: "build → push"
    return record.command if " → " in record.command else record.command.split(" ", 1)[0]


# steps that change nothing the environment runs (they make or check what a later step rolls out), and groups (their
# steps are recorded each): a record kept before records said whether a run changed what runs is judged without them
_CHANGES_NOTHING = frozenset(
    {
        "synth",
        "build",
        "base-image",
        "push",
        "upload-lambda",
        "register-taskdef",
        "smoke",
        "wait-healthy",
        "watch-errors",
        "scan-gate",
        "promote-image",
        "update-code",
        "publish-version",
        "parallel",
        "sequence",
    }
)


def changed(record: Record) -> bool:
    """Whether a run deployed something: it names components and changed what the environment runs (its record
    says so; one kept before records said it: one of its steps that change what runs was done). A ``deploy.stack``
    whose change set was empty synthesized and smoked, and changed nothing; nor did an app chain that found its
    revision running."""
    if not record.deployed:
        return False
    if record.changed is not None:
        return record.changed
    return not record.steps or any(
        s.get("status") == "done" and s.get("step") not in _CHANGES_NOTHING for s in record.steps
    )


def chain(record: Record) -> str:
    """Which chain a run was: the kind of component it deployed (app, lambda, stack), mixed for more than one
    kind, full for deploy.full, nothing when it changed nothing."""
    if not changed(record):
        return "nothing"
    if verb(record) == "deploy.full":
        return "full"
    kinds = {component.split(":", 1)[0] for component in record.deployed}
    if len(kinds) > 1:
        return "mixed"
    return kinds.pop()


def percentile(values: Sequence[float], p: float) -> float:
    """The nearest-rank percentile (p in 0-100) of a non-empty sequence."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def _moment(record: Record) -> datetime:
    return datetime.fromisoformat(record.when)


def _committed(record: Record, commit_times: Mapping[str, datetime]) -> datetime | None:
    """The committer time of the commit ``record`` deployed: the one it keeps, else the one this clone's git knows
    (a record of before it was kept); None for a build of uncommitted changes."""
    if DIRTY in record.head:
        return None
    if record.committed is not None:
        return datetime.fromisoformat(record.committed)
    return commit_times.get(record.head)


def _spread(values: Sequence[float]) -> dict[str, float]:
    return {
        "median": round(statistics.median(values), 3),
        "p90": round(percentile(values, 90), 3),
        "max": round(max(values), 3),
    }


def _took_itself_back(record: Record) -> bool:
    """A run that failed at a canary which took itself back (deploykit.canary)."""
    return _failing_step(record) == "canary" and TAKEN_BACK in (record.error or "")


def _failing_step(record: Record) -> str:
    failed = [str(s.get("step")) for s in record.steps if s.get("status") == "failed" and not s.get("held_back")]
    # a group fails with its child: the child is the one to name (not one a failure beside it held back)
    return failed[-1] if failed else "-"


@dataclass(frozen=True)
class Report:
    env: str
    since: datetime
    until: datetime
    records: tuple[Record, ...]  # oldest first
    commit_times: Mapping[str, datetime] = field(default_factory=dict)  # a record's head → its committer time

    @property
    def days(self) -> float:
        return (self.until - self.since) / timedelta(days=1)

    @property
    def deploy_runs(self) -> list[Record]:
        """The runs of a deploy command that a guard or bad input did not stop (those are ``refused``)."""
        return [r for r in self.records if verb(r) not in NOT_DEPLOYS and not r.refused]

    @property
    def refused(self) -> list[Record]:
        """Deploy runs and rollbacks a guard (data, access, account) or bad input stopped: they broke nothing live,
        so they are neither failures, deployments nor rollbacks."""
        return [r for r in self.records if (verb(r) not in NOT_DEPLOYS or verb(r) in ROLLBACKS) and r.refused]

    @property
    def deployments(self) -> list[Record]:
        """Successful runs that changed something."""
        return [r for r in self.deploy_runs if r.ok and changed(r)]

    @property
    def failed(self) -> list[Record]:
        return [r for r in self.deploy_runs if not r.ok]

    @property
    def rollbacks(self) -> list[Record]:
        """Rollbacks that ran (one a guard refused put nothing back: :attr:`refused`)."""
        return [r for r in self.records if verb(r) in ROLLBACKS and not r.refused]

    def restores(self) -> tuple[list[float], list[Record]]:
        """Seconds from each failed run's end to the next successful run that left something live (a fix, a
        rollback, an automatic rollback; none for a canary that took itself back); and the failed runs nothing
        successful has followed yet."""
        seconds: list[float] = []
        open_: list[Record] = []
        for failed in self.failed:
            if _took_itself_back(failed):  # a canary that failed left what was live as it was: restored at once
                seconds.append(0.0)
                continue
            after = _moment(failed)
            later = self.records[self.records.index(failed) + 1 :]  # in the ids' order, to the microsecond: an
            # automatic rollback ends within the second its failed run did; a successful rerun that found the
            # release in place (nothing to change) restores it too
            fix = next((r for r in later if r.ok and not r.refused and verb(r) not in _NOT_FIXES), None)
            if fix is None:
                open_.append(failed)
            else:
                seconds.append((_moment(fix) - after).total_seconds())
        return seconds, open_

    def lead_times(self) -> list[float]:
        """Seconds from the deployed commit's commit time to the end of its deploy, for each deployment of a
        commit (not of uncommitted changes) that git knows."""
        found = []
        for r in self.deployments:
            committed = _committed(r, self.commit_times)
            if committed is not None:
                found.append(max(0.0, (_moment(r) - committed).total_seconds()))
        return found

    def chains(self) -> list[dict[str, Any]]:
        seen: dict[str, list[float]] = {}
        for r in self.deploy_runs:
            if r.ok:
                seen.setdefault(chain(r), []).append(r.seconds)
        rows = []
        for name in CHAINS:
            if name in seen:
                rows.append({"chain": name, "runs": len(seen[name]), **_spread(seen[name]), "goal": GOALS.get(name)})
        return rows

    def steps(self) -> list[dict[str, Any]]:
        """Each step's times where it did something, how often it failed, and how often it refused (a guard stopped
        it: it changed nothing); the most time spent first. A refused run's failed step, recorded before steps said
        they refused, refused."""
        done: dict[str, list[float]] = {}
        failed: dict[str, int] = {}
        refused: dict[str, int] = {}
        for r in self.records:
            for step in r.steps:
                name = step_name(step)
                if name in GROUPS or step.get("status") not in ("done", "failed") or step.get("held_back"):
                    continue  # held back: stopped by another step's failure, not one of its own
                if step.get("status") == "done":
                    done.setdefault(name, []).append(float(step.get("seconds", 0.0)))
                elif step.get("refused") or r.refused:
                    refused[name] = refused.get(name, 0) + 1
                else:
                    failed[name] = failed.get(name, 0) + 1
        rows = []
        for name in set(done) | set(failed) | set(refused):
            values = done.get(name, [])
            spread = _spread(values) if values else {"median": None, "p90": None, "max": None}
            rows.append(
                {
                    "step": name,
                    "done": len(values),
                    "failed": failed.get(name, 0),
                    "refused": refused.get(name, 0),
                    **spread,
                    "total": round(sum(values), 3),
                }
            )
        return sorted(rows, key=lambda row: (-row["total"], row["step"]))

    def failures(self) -> list[dict[str, Any]]:
        """The newest runs that failed or were refused (rollbacks and destroys included), newest first."""
        failed = [r for r in self.records if not r.ok][::-1][:FAILURES_SHOWN]
        return [
            {
                "when": r.when,
                "result": r.result,
                "who": r.who,
                "command": r.command,
                "head": r.head,
                "step": _failing_step(r),
                "error": (r.error or "").splitlines()[0] if r.error else "",
            }
            for r in failed
        ]

    def lock_waits(self) -> dict[str, Any]:
        """How often and how long runs waited for another deploy's lock first (DEPLOYKIT_LOCK_WAIT): the time a team
        loses to deploying one at a time."""
        waited = [r.waited for r in self.records if r.waited > 0]
        return {"runs": len(waited), "seconds": round(sum(waited), 3), "max_seconds": round(max(waited, default=0), 3)}

    def to_json(self) -> dict[str, Any]:
        restored, still_failing = self.restores()
        leads = self.lead_times()
        runs = self.deploy_runs
        return {
            "env": self.env,
            "since": self.since.isoformat(timespec="seconds"),
            "until": self.until.isoformat(timespec="seconds"),
            "days": round(self.days, 3),
            "records": len(self.records),
            "deploy_runs": len(runs),
            "deployments": len(self.deployments),
            "deployments_per_day": round(len(self.deployments) / self.days, 3) if self.days else None,
            "failed": len(self.failed),
            "change_failure_rate": round(len(self.failed) / len(runs), 4) if runs else None,
            "refused": len(self.refused),
            "rollbacks": len(self.rollbacks),
            "restore": {
                "restored": len(restored),
                "still_failing": [r.id for r in still_failing],
                "median_seconds": round(statistics.median(restored), 3) if restored else None,
            },
            "lead_time": {
                "deployments": len(leads),
                "median_seconds": round(statistics.median(leads), 3) if leads else None,
            },
            "lock_waits": self.lock_waits(),
            "chains": self.chains(),
            "steps": self.steps(),
            "failures": self.failures(),
        }


def duration(seconds: float | None) -> str:
    """1.2s, 3m 05s, 2h 10m, 3d 4h: short, for people."""
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes}m {secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours}h {minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d {hours}h"


def _n(count: int, noun: str) -> str:
    return f"{count} {noun}" + ("" if count == 1 else "s")


def _rate(count: int, days: float) -> str:
    """How often, in the first unit it comes to once in at least: a day, a week, a month (30 days); an hour for a
    window shorter than a day. A prod deploying monthly is not "0.0 a day"."""
    if days < 1:
        return f"{count / (days * 24):.1f} an hour"
    rate, unit = count / days, "a day"
    if 0 < rate < 1:
        rate, unit = rate * 7, "a week"
    if 0 < rate < 1:
        rate, unit = rate * 30 / 7, "a month"
    return f"{rate:.1f} {unit}"


def text(report: Report) -> str:
    """The report for people: the figures, the chains, the steps, the newest failures."""
    data = report.to_json()
    since, until = report.since.astimezone(UTC), report.until.astimezone(UTC)  # --since may name another zone
    span = f"{since:%Y-%m-%d %H:%M} → {until:%Y-%m-%d %H:%M} UTC"
    if not report.records:
        return f"{report.env}: no deployment recorded from {span}\n"
    runs, failed = data["deploy_runs"], data["failed"]
    rate = data["change_failure_rate"]
    restore, lead = data["restore"], data["lead_time"]
    still = len(restore["still_failing"])
    figures = [
        ["deployments", f"{data['deployments']} ({_rate(data['deployments'], report.days)})"],
        ["failed runs", f"{failed} of {_n(runs, 'deploy run')}" + (f" ({rate:.0%})" if rate is not None else "")],
        [
            "time to restore",
            f"median {duration(restore['median_seconds'])} ({restore['restored']} restored"
            + (f", {still} not yet followed by a successful run" if still else "")
            + ")",
        ],
        ["commit to live", f"median {duration(lead['median_seconds'])} ({_n(lead['deployments'], 'deployment')})"],
        ["rollbacks", str(data["rollbacks"])],
    ]
    if data["refused"]:
        figures.insert(
            2, ["refused runs", f"{data['refused']} (a guard or bad input stopped them: counted nowhere else)"]
        )
    waits = data["lock_waits"]
    if waits["runs"]:
        total, longest = duration(waits["seconds"]), duration(waits["max_seconds"])
        figures.append(["waited for the lock", f"{_n(waits['runs'], 'run')}, {total} in all (longest {longest})"])
    out = [f"{report.env}, {span}: {_n(len(report.records), 'recorded run')}", tabulate(figures, tablefmt="plain")]
    if data["chains"]:
        rows = [
            [
                c["chain"],
                c["runs"],
                duration(c["median"]),
                duration(c["p90"]),
                duration(c["max"]),
                f"≤ {c['goal']:g}s" if c["goal"] else "-",
            ]
            for c in data["chains"]
        ]
        out += ["", tabulate(rows, headers=["chain", "ok runs", "median", "p90", "max", "goal on AWS"])]
    if data["steps"]:
        rows = [
            [
                s["step"],
                s["done"],
                s["failed"],
                s["refused"],
                duration(s["median"]),
                duration(s["p90"]),
                duration(s["max"]),
                duration(s["total"]),
            ]
            for s in data["steps"][:STEPS_SHOWN]
        ]
        out += ["", tabulate(rows, headers=["step", "done", "failed", "refused", "median", "p90", "max", "total"])]
        if len(data["steps"]) > STEPS_SHOWN:
            out.append(f"(and {len(data['steps']) - STEPS_SHOWN} steps that took less in all: --json has them)")
    if data["failures"]:
        rows = [
            [f["when"].replace("+00:00", "Z"), f["command"], RESULTS[f["result"]], f["step"], f["error"][:80]]
            for f in data["failures"]
        ]
        headers = ["when", "command", "result", "at step", "error"]
        out += ["", "newest failed or refused runs:", tabulate(rows, headers=headers)]
    return "\n".join(out) + "\n"
