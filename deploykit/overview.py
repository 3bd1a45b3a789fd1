"""``inv envs``: every environment of deploy.toml at a glance, and every one a pattern of it made that is deployed.

For each environment: what it runs, per component (the app, each Lambda function, each stack), at which commit and
how far that commit is from this checkout's HEAD; its last recorded run; who holds its deploy lock, or that the lock
expired (its lease ran out, judged as ``inv health`` and a deploy judge it: by S3's clock, the ``Date`` of the lock
read's own answer, no call more): an expired lock blocks no deploy, the next one takes it over; and, where
``[environments.NAME.alarm_watch]`` names alarms, those in ALARM (one DescribeAlarms, with the other reads). "Is my
change in staging yet?" and "what would prod get from main?" become one command. What runs is the environment's live
record (what ``inv history`` lists under "live now"), written by every successful deploy; the position against HEAD
comes from this clone's git history; a freeze and a pause are said. Per environment that is one stack read, four S3
reads and one of its service, every environment read at once; an environment whose AWS cannot be read (another
account, no credentials, an endpoint down) is shown with the reason and the others are still read.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from deploykit import changes, freeze, git, pause
from deploykit.auto import NEWEST_RUNS, deploying_again, with_deciding_runs
from deploykit.aws import AwsFactory, at_once
from deploykit.clock import Clock
from deploykit.config import Config, EnvConfig, made_by
from deploykit.errors import ConfigError, DeployKitError
from deploykit.freeze import Freeze
from deploykit.history import RESULTS, UNSMOKED, History, Record, when_utc
from deploykit.lock import EnvLock, Found, LockInfo
from deploykit.output import tabulate
from deploykit.stacks import error_code
from deploykit.watch import in_alarm, read_alarms, state_changed


@dataclass(frozen=True)
class Position:
    """Where a live commit stands against HEAD."""

    known: bool  # the commit is in this clone
    behind: int = 0  # commits HEAD has that it lacks
    ahead: int = 0  # commits it has that HEAD lacks
    dirty: bool = False  # deployed with uncommitted changes on top (--allow-dirty)

    def text(self) -> str:
        if not self.known:
            where = "not in this clone (fetch, or another branch's)"
        elif self.behind and self.ahead:
            where = f"on another line: {self.behind} behind, {self.ahead} ahead of HEAD"
        elif self.behind:
            where = f"{self.behind} behind HEAD"
        elif self.ahead:
            where = f"{self.ahead} ahead of HEAD"
        else:
            where = "at HEAD"
        return where + (" (+ uncommitted changes)" if self.dirty else "")

    def to_json(self) -> dict[str, Any]:
        return {"known": self.known, "behind": self.behind, "ahead": self.ahead, "dirty": self.dirty}


def position(root: Path, sha: str, head: str) -> Position:
    """``sha`` (a live SHA12, or ``<sha12>-dirty-<hash>``) against ``head`` (a full SHA)."""
    commit, dirty, _ = sha.partition(git.DIRTY)
    full = git.resolve_commit(root, commit) if commit else None
    if full is None:
        return Position(known=False, dirty=bool(dirty))
    ahead, behind = git.divergence(root, full, head)
    return Position(known=True, behind=behind, ahead=ahead, dirty=bool(dirty))


@dataclass(frozen=True)
class Live:
    component: str
    sha: str  # "" when the component was never deployed there
    since: str  # ISO 8601
    position: Position
    changed: int | None = None  # paths of the component changed from its live commit to HEAD; None: cannot tell
    # HEAD has it as a person's rollback took the environment off it: why deploy.auto refuses it; "": it does not
    rolled_back: str = ""
    unsmoked: bool = False  # a run without its smoke deployed it, and no smoke passed there since (history.UNSMOKED)

    @property
    def to_deploy(self) -> str:
        """What a deploy of HEAD would do to it."""
        if self.rolled_back:
            return "⛔ refused: HEAD has it as a rollback took it off"
        if not self.sha:
            return "new: never deployed here"
        if self.changed is None:
            return "?"
        return f"{self.changed} changed path(s)" if self.changed else "nothing"


@dataclass(frozen=True)
class EnvView:
    """One environment as read: what it runs, its last run, its lock; or why it could not be read."""

    env: str
    region: str
    error: str | None = None  # its AWS could not be read
    next_step: str | None = None  # what to run about that
    has_history: bool = True  # False: its registry stack (the artifacts bucket) is not deployed
    live: tuple[Live, ...] = ()
    last_run: Record | None = None
    lock: LockInfo | None = None
    lock_expired: bool = False  # the lock's lease ran out (Read.lock_expired): it blocks no deploy
    frozen: Freeze | None = None  # its freeze, while it holds
    paused: pause.Pause | None = None  # its pause, while it holds
    # when someone last worked on it: its newest run that is no pause or resume (a schedule's), or, when its newest
    # runs are all those, the oldest of them (it has been idle at least since); "": no run
    worked: str = ""
    tasks: int | None = None  # the tasks its service wants (what it pays Fargate for); None: no service
    # its alarm watch's alarms in ALARM (name → since when, ISO 8601), None: none named, or not read (``alarms_unread``
    # says why)
    in_alarm: dict[str, str] | None = None
    alarms_unread: str = ""
    # promote_from: the environment it takes releases from, and what that one runs that this one does not yet
    # (component → "N changed path(s)", "new" or "?"); None: not compared (no promote_from, or either not read)
    promoted_from: str = ""
    waiting: dict[str, str] | None = None
    made_from: str = ""  # the pattern of deploy.toml that made it ("dev-*"); "": deploy.toml names it
    idle_days: int | None = None  # made from a pattern, and no run for this many days (IDLE_DAYS or more)
    # made from a pattern, its registry stack gone (no history) but these of its stacks still there (a destroy that
    # failed part way, stacks deleted by hand): they still cost
    stacks_left: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "env": self.env,
            "region": self.region,
            "error": self.error,
            "next_step": self.next_step,
            "has_history": self.has_history,
            "live": [
                {
                    "component": v.component,
                    "sha": v.sha or None,
                    "since": v.since or None,
                    **v.position.to_json(),
                    "changed_paths": v.changed,
                    "rolled_back": v.rolled_back or None,
                    "unsmoked": v.unsmoked,
                }
                for v in self.live
            ],
            "last_run": self.last_run.to_json() if self.last_run else None,
            "lock": {**self.lock.to_json(), "expired": self.lock_expired} if self.lock else None,
            "freeze": self.frozen.to_json() if self.frozen else None,
            "pause": self.paused.to_json() if self.paused else None,
            "tasks": self.tasks,
            "in_alarm": self.in_alarm,
            "promotion": {"from": self.promoted_from, "waiting": self.waiting} if self.promoted_from else None,
            "made_from": self.made_from or None,
            "idle_days": self.idle_days,
            "stacks_left": list(self.stacks_left),
        }


@dataclass(frozen=True)
class Read:
    """What one environment's AWS said: its live record, its newest records (newest first), its lock (None: no
    history)."""

    live: dict[str, dict[str, str]]
    records: list[Record]
    lock: LockInfo | None
    # its lease ran out, judged by S3's clock when the read's answer gave its times (lock.Found.expired), else by
    # this machine's: it blocks no deploy, the next one takes it over
    lock_expired: bool = False
    frozen: Freeze | None = None  # its freeze, while it holds
    paused: pause.Pause | None = None  # its pause, while it holds
    tasks: int | None = None  # the tasks its service wants; None: no service
    in_alarm: dict[str, str] | None = None  # its alarm watch's alarms in ALARM, by name: since when; None: not read
    alarms_unread: str = ""  # why they were not read, when they could not be
    # reads the runs of these ids (History.records_by_id): the older runs that left a changed component live, for
    # the rollback guard (auto.deciding_runs); None: none are read
    older: Callable[[Sequence[str]], list[Record]] | None = field(default=None, compare=False, repr=False)

    @property
    def newest(self) -> Record | None:
        return self.records[0] if self.records else None


# the newest runs read, as deploy.auto reads them: a component a rollback took off, which it refuses, shows
RECORDS = NEWEST_RUNS


def made_from(aws: AwsFactory, config: Config, pattern: str) -> dict[str, tuple[str, ...]]:
    """The environments ``pattern`` made that have a stack, each with its stacks there, found by their names (any of
    the five, so that one whose registry stack is gone but not the others is found too: ListStacks in the account and
    region the pattern's environments live in), sorted."""
    names = [made_by(pattern, str(template)) for template in config.patterns[pattern]["stacks"].values()]
    cfn = aws.client("cloudformation")
    # every status but DELETE_COMPLETE, as the API knows them: the stacks there (deleted ones are listed for 90 days)
    there = [s for s in cfn.meta.service_model.shape_for("StackStatus").enum if s != "DELETE_COMPLETE"]
    found: dict[str, set[str]] = {}
    for page in cfn.get_paginator("list_stacks").paginate(StackStatusFilter=there):
        for stack in page.get("StackSummaries") or ():
            name = str(stack.get("StackName", ""))
            match = next((m for named in names if (m := named.fullmatch(name))), None)
            if match:
                found.setdefault(match["env"], set()).add(name)
    return {env: tuple(sorted(stacks)) for env, stacks in sorted(found.items())}


def read_environment(aws: AwsFactory, env: EnvConfig, clock: Clock) -> Read | None:
    """The live record, the newest records, the lock, the freeze and the pause of ``env`` (the pause: its service's
    desired count too), at once; None without a history."""
    store = History.of(aws, env)
    if store is None:
        return None
    env_lock = EnvLock(aws.client("s3"), store.bucket, env.name, clock=clock)
    reads: dict[str, Callable[[], Any]] = {
        "live": store.live,
        "records": partial(store.records, RECORDS),
        "lock": env_lock.read,
        "freeze": partial(freeze.read, aws, env, store.bucket),
        "pause": partial(pause.read_state, aws, env, store.bucket),
        "alarms": partial(_alarms, aws, env),
    }
    found = at_once(reads)
    held: Found | None = found["lock"]
    lock = held.info if held else None
    expired = held is not None and held.expired(clock.now())  # by the Date of the same answer: no call more
    frozen = freeze.in_force(found["freeze"], env, clock.now())
    kept, tasks = found["pause"]
    paused = pause.in_force(kept, tasks)
    in_alarm, unread = found["alarms"]
    return Read(
        found["live"], found["records"], lock, expired, frozen, paused, tasks, in_alarm, unread, store.records_by_id
    )


def _alarms(aws: AwsFactory, env: EnvConfig) -> tuple[dict[str, str] | None, str]:
    """``env``'s alarm watch's alarms in ALARM, by name: since when (ISO 8601 UTC); None when it names none, or when
    they cannot be read (then why: the rest of the view is still shown)."""
    if not env.alarm_watch.on:
        return None, ""
    try:
        found = read_alarms(aws.client("cloudwatch"), env.alarm_watch.alarms)
    except (BotoCoreError, ClientError) as exc:
        return None, (error_code(exc) or "refused") if isinstance(exc, ClientError) else str(exc)
    return {
        name: when.isoformat(timespec="seconds") if (when := state_changed(found[name])) else ""
        for name in in_alarm(found)
    }, ""


def view(config: Config, head: str, env: EnvConfig, read: Read | None) -> EnvView:
    """An environment's view from what was read (None: it has no history yet): each component's position against
    ``head`` and what changed for it since (the rules of deploy.toml's [changes], as ``inv diff`` finds them), and
    this checkout's components it never had. Reads the older runs a changed component's rollback guard needs
    (:attr:`Read.older`)."""
    if read is None:
        return EnvView(env.name, env.region, has_history=False)
    shas = {component: str(value.get("sha") or "") for component, value in read.live.items()}
    positions = {sha: position(config.root, sha, head) for sha in set(shas.values())}
    missing = [c for c in changes.components_of(config) if c not in shas]
    counted = _changed(config, {c: sha for c, sha in shas.items() if positions[sha].known}, missing, env.name)
    live = [
        Live(
            component,
            sha,
            str(read.live[component].get("when") or ""),
            positions[sha],
            counted.get(component),
            unsmoked=UNSMOKED in read.live[component],
        )
        for component, sha in shas.items()
    ]
    live += [Live(component, "", "", Position(known=False), counted.get(component)) for component in missing]
    changed = [x.component for x in live if x.changed]
    records = read.records
    if read.older:  # a rollback however long ago, as deploy.auto finds it
        records = with_deciding_runs(read.live, records, changed, read.older)
    again = deploying_again(config, records, changed)
    live = [replace(x, rolled_back=again.get(x.component, "")) for x in live]
    live.sort(key=lambda x: _order(x.component))
    return EnvView(
        env.name,
        env.region,
        live=tuple(live),
        last_run=read.newest,
        lock=read.lock,
        lock_expired=read.lock_expired,
        frozen=read.frozen,
        paused=read.paused,
        tasks=read.tasks,
        in_alarm=read.in_alarm,
        alarms_unread=read.alarms_unread,
        worked=_worked(read.records),
    )


def _worked(records: Sequence[Record]) -> str:
    """When someone last worked on an environment, from its newest runs (newest first): see EnvView.worked."""
    scheduled = (pause.PAUSE_TITLE, pause.RESUME_TITLE)
    worked = next((r for r in records if not r.command.startswith(scheduled)), None)
    found = worked or (records[-1] if records else None)
    return found.when if found else ""


def with_promotion(config: Config, views: Sequence[EnvView]) -> list[EnvView]:
    """Each environment with ``promote_from``, told what its source runs that it does not yet: per component the
    source runs, the paths that changed (by the [changes] rules) from the commit it runs here to the one it runs
    there; "new" when it never ran here (:func:`_waiting`). Compared only when both were read."""
    by_name = {v.env: v for v in views}
    out = []
    for v in views:
        source = _source(config, v.env)
        there = by_name.get(source) if source else None
        if not source or there is None or v.error or there.error:
            out.append(replace(v, promoted_from=source))
            continue
        here = {x.component: x.sha for x in v.live if x.sha}
        differ = [x for x in there.live if x.sha and here.get(x.component) != x.sha]
        # a few git calls each, side by side (40 functions at 40 commits took 5 s one after the other)
        waiting = at_once(
            {x.component: partial(_waiting, config, x.component, here.get(x.component), x.sha, v.env) for x in differ}
        )
        for x in differ:
            if waiting[x.component] and x.unsmoked:  # the promotion refuses it unless an earlier run proved the code
                waiting[x.component] += f", deployed in {source} without its smoke"
        out.append(replace(v, promoted_from=source, waiting={c: w for c, w in waiting.items() if w}))
    return out


IDLE_DAYS = 7  # an environment a pattern made, not deployed for this long, is said to be idle (it still costs)


def with_patterns(
    views: Sequence[EnvView], made: Mapping[str, str], now: datetime, stacks: Mapping[str, Sequence[str]]
) -> list[EnvView]:
    """Each view of an environment a pattern made (``made``: name → pattern) told so, and how many days it has gone
    without a run when that is :data:`IDLE_DAYS` or more (pauses and resumes, a schedule's, do not count: see
    EnvView.worked): one's own environment left behind still costs; so do its stacks (``stacks``: name → its stacks
    there) when its registry stack is gone."""
    out = []
    for v in views:
        if v.env not in made:
            out.append(v)
            continue
        last = datetime.fromisoformat(v.worked) if v.worked else None
        days = (now - last).days if last else None
        left = () if v.has_history or v.error else tuple(stacks.get(v.env, ()))
        out.append(
            replace(
                v,
                made_from=made[v.env],
                idle_days=days if days is not None and days >= IDLE_DAYS else None,
                stacks_left=left,
            )
        )
    return out


def _source(config: Config, name: str) -> str:
    """The promote_from of environment ``name`` (one deploy.toml defines, or a pattern made); "" for a pattern's
    own row (its environments could not be found)."""
    try:
        return config.environment(name).promote_from
    except ConfigError:
        return ""


def _waiting(config: Config, component: str, here: str | None, there: str, env: str) -> str:
    """What the source runs of ``component`` (at ``there``) that this environment ``env`` (at ``here``) does not: ""
    when it is the same by its paths (``env``'s settings included), or this environment runs a newer commit of its
    line (promoting it would take that back); "new" when it never ran here; "?" when the source runs a dirty build
    (never promoted) or a commit this clone does not have."""
    commit, dirty, _ = there.partition(git.DIRTY)
    if dirty:
        return "?"
    if here is None:
        return "new"
    if git.resolve_commit(config.root, commit) is None:
        return "?"
    if changes.live_ahead(config.root, here, commit):
        return ""
    try:
        found = changes.detect(config, {component: here}, head=commit, env=env)
    except DeployKitError:
        return "?"
    paths = len(found.for_component(component))
    return f"{paths} changed path(s)" if paths else ""


def _changed(config: Config, live: Mapping[str, str], missing: Sequence[str], env: str) -> dict[str, int]:
    """component → how many of its paths changed from its live commit to HEAD in ``env``; {} when that cannot be
    told."""
    try:
        found = changes.detect(config, {**live, **dict.fromkeys(missing)}, env=env)
    except DeployKitError:  # a live value no commit explains: the rows say so ("?")
        return {}
    return {component: len(found.for_component(component)) for component in [*live, *missing]}


def _order(component: str) -> tuple[int, str]:
    """The app first, then the Lambda functions, then the stacks."""
    kind = component.partition(":")[0]
    return ({"app": 0, "lambda": 1, "stack": 2}.get(kind, 3), component)


# -- output -----------------------------------------------------------------------------------------------------


def render(views: Sequence[EnvView], head: str) -> str:
    lines = [f"HEAD is {head[: git.SHORT_SHA]}"]
    for v in views:
        lines.append("")
        if v.error:
            lines.append(f"▸ {v.env} ({v.region}): ⚠️  not read: {v.error}")
            if v.next_step:
                lines.append(f"  → next: {v.next_step}")
            continue
        if not v.has_history and v.stacks_left:
            lines.append(
                f"▸ {v.env} ({v.region}, from {v.made_from!r}): no registry stack (no history), but "
                f"{', '.join(v.stacks_left)} still there, and costing; to take "
                f"{'it' if len(v.stacks_left) == 1 else 'them'} down: inv destroy --env {v.env} --include-data"
            )
            continue
        if not v.has_history:
            lines.append(
                f"▸ {v.env} ({v.region}): nothing deployed yet (no registry stack: no history, no live record)"
            )
            continue
        where = f"{v.region}, from {v.made_from!r}" if v.made_from else v.region
        lines.append(f"▸ {v.env} ({where}): {_last_run(v.last_run)}; {_lock(v.lock, v.lock_expired)}{_tasks(v.tasks)}")
        if v.frozen is not None:
            ends = "the window is deploy.toml's" if v.frozen.window else f"inv unfreeze --env {v.env} ends it"
            lines.append(f"  ❄️  {v.frozen.describe(v.env)} (deploys refused; {ends})")
        if v.paused is not None:
            lines.append(
                f"  ⏸  {v.paused.describe(v.env)} ({v.paused.tasks} when it wakes: inv resume --env {v.env}, or any "
                "deploy)"
            )
        if v.in_alarm:
            alarming = ", ".join(f"{n} (since {when_utc(w)})" if w else n for n, w in v.in_alarm.items())
            lines.append(f"  🔔 in ALARM: {alarming}; inv alarms --env {v.env} shows why, --wait until they leave it")
        elif v.alarms_unread:
            lines.append(f"  🔔 its alarms could not be read ({v.alarms_unread})")
        if v.idle_days is not None:
            lines.append(
                f"  💤 no run for {v.idle_days} days (made from {v.made_from!r}: {_costs(v)}); when done with it: inv "
                f"destroy --env {v.env} --include-data"
            )
        if not v.live:
            lines.append("  no component recorded as live yet")
            continue
        rows = [
            [
                x.component,
                x.sha or "-",
                x.position.text() if x.sha else "-",
                when_utc(x.since) if x.since else "-",
                x.to_deploy,
            ]
            for x in v.live
        ]
        headers = ["component", "live", "against HEAD", "since", "a deploy of HEAD changes"]
        table = tabulate(rows, headers=headers, disable_numparse=True)  # a SHA of digits is no number
        lines += [f"  {line}" for line in table.splitlines()]
        if unsmoked := [x.component for x in v.live if x.unsmoked]:
            lines.append(
                f"  ⚠️  deployed without its smoke (--no-smoke), no smoke passed since: {', '.join(unsmoked)} (an "
                f"environment promoted from {v.env} does not take it; inv smoke --env {v.env} proves it)"
            )
        if v.waiting is not None:
            waiting = ", ".join(f"{c} ({w})" for c, w in sorted(v.waiting.items(), key=lambda i: _order(i[0])))
            lines.append(
                f"  🚦 waiting in {v.promoted_from} to be promoted here: {waiting}"
                if waiting
                else f"  🚦 runs all that {v.promoted_from} runs"
            )
    return "\n".join(lines)


def _last_run(record: Record | None) -> str:
    if record is None:
        return "no run recorded"
    mark = RESULTS[record.result].split()[0]  # the history table's mark: ✅ ❌ 🛑
    return f"last run {mark} {record.command} by {record.who} at {when_utc(record.when)}"


def _costs(v: EnvView) -> str:
    if v.paused is not None:
        return "paused, its load balancer and storage still cost"
    return "it still costs while it runs"


def _tasks(count: int | None) -> str:
    """What the service runs, for what it costs: "; 2 tasks" ("" without a service)."""
    return "" if count is None else f"; {pause.tasks(count)}"


def _lock(holder: LockInfo | None, expired: bool) -> str:
    if holder is None:
        return "lock free"
    since = f"{holder.owner} ({holder.command}) since {when_utc(holder.started)}"
    if expired:
        return f"⌛ expired lock of {since}: it blocks no deploy, the next one takes it over"
    return f"🔒 held by {since}"


def to_json(views: Sequence[EnvView], head: str) -> dict[str, Any]:
    return {"head": head[: git.SHORT_SHA], "environments": [v.to_json() for v in views]}
