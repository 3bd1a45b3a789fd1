"""Deployment history and the live record, kept in the environment itself (so two laptops and CI agree).

Both live in the environment's artifacts bucket (the registry stack's ``ArtifactsBucketName``):

- ``deploykit/history/<env>/<UTC time>-<id>.json``: one record per deployment — who, when, the command, the
  SHAs live before (``base``) and deployed (``head``, and per component), each step with its status and
  duration, the result. ``inv history`` lists them; step durations feed the estimates of a plan.
- ``deploykit/live/<env>.json``: component → the SHA last deployed successfully, with when and which record.
  The app's image tag and the Lambda versions' descriptions say the same for those components; stacks have
  no better place (a stack-level tag would propagate to, and update, every resource of the stack).

A record never changes once written, so the records read are kept on this machine (:class:`RecordCache`) and
read from there the next time, while the S3 listing still names them with the same ETag.
"""

from __future__ import annotations

import contextlib
import getpass
import json
import os
import re
import socket
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from deploykit.aws import CONNECTIONS, AwsFactory, at_once, maybe_applied
from deploykit.cachedir import DAY, PRUNE_STAMP, cache_root, prune_due
from deploykit.config import EnvConfig
from deploykit.errors import UsageError
from deploykit.git import DIRTY
from deploykit.output import tabulate
from deploykit.plan import NOT_RUN_NOTHING_CHANGED, RunReport, StepRecord, commits_json
from deploykit.stack_chain import ARTIFACTS_OUTPUT
from deploykit.stacks import StackOutputs, error_code, is_not_there

ACTOR_ENV = "DEPLOYKIT_ACTOR"
# A kept record body goes once it is this old (a busy team's 90 days: ~5,000 records, ~10 MB); checked once a day.
CACHE_KEEP_DAYS = 90
RESULTS = {"ok": "✅ ok", "failed": "❌ failed", "refused": "🛑 refused"}


def actor() -> str:
    """Who deploys: ``$DEPLOYKIT_ACTOR`` (CI sets it to the pipeline), else user@host."""
    if os.environ.get(ACTOR_ENV):
        return os.environ[ACTOR_ENV]
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


class Live(dict[str, dict[str, str]]):
    """The live record as read (component → {sha, when, record, ...}) and the ETag S3 gave it (None: there was
    none), for a write on condition that it is still so (:meth:`History._put_live`)."""

    def __init__(self, entries: Mapping[str, dict[str, str]], etag: str | None) -> None:
        super().__init__(entries)
        self.etag = etag


def _smoked(live: Mapping[str, Mapping[str, str]]) -> dict[str, dict[str, str]]:
    """The live record ``live`` with no entry marked :data:`UNSMOKED` (a smoke of what the environment runs passed)."""
    return {component: {k: v for k, v in entry.items() if k != UNSMOKED} for component, entry in live.items()}


# S3's answers to a conditional write whose condition another write broke: it changed the object since (412), or
# is changing it as this one is made (409)
WRITTEN_MEANWHILE = ("PreconditionFailed", "ConditionalRequestConflict")


@dataclass(frozen=True)
class Record:
    """One deployment as the history keeps it."""

    id: str
    env: str
    when: str  # ISO 8601, UTC
    who: str
    command: str
    head: str  # the commit deployed (image-tag form: sha12, or sha12-dirty-hash)
    ok: bool
    seconds: float
    components: dict[str, str] = field(default_factory=dict)  # component → SHA live after the run
    base: dict[str, str | None] = field(default_factory=dict)  # component → SHA live before
    steps: list[dict[str, Any]] = field(default_factory=list)  # step, status, seconds, detail
    error: str | None = None
    # whether a step that changes what the environment runs was done (RunReport.changed_live); None: a record of
    # before it was kept, judged from its steps (deploykit.report.changed)
    changed: bool | None = None
    # components in ``components`` the run did not deploy: no change since their live SHA, so live at ``head`` too
    unchanged: list[str] = field(default_factory=list)
    # components the run took out of the environment (destroy); ``base`` says what each ran
    removed: list[str] = field(default_factory=list)
    # not ok because a guard or bad input stopped it (exit 2): the step that refused changed nothing, and nothing
    # that was live broke; ``inv report`` counts these apart from failed runs
    refused: bool = False
    # components the run deployed though the environment it is promoted from did not run them (--unpromoted)
    unpromoted: list[str] = field(default_factory=list)
    # component → what the run left it as besides its commit, for a later read to tell whether anything else changed
    # it since (a stack: when CloudFormation last changed it and its template's fingerprint); the live record keeps it
    left: dict[str, dict[str, str]] = field(default_factory=dict)
    # seconds the command waited for another deploy's lock before this run ($DEPLOYKIT_LOCK_WAIT, lock_wait)
    waited: float = 0.0
    # changed components the run held back (deploy.auto --only/--skip): not deployed, live as before
    held: list[str] = field(default_factory=list)
    # the commits the run took live, newest first, at most RECORDED_COMMITS: {"sha" (12), "author", "subject"}
    commits: list[dict[str, str]] = field(default_factory=list)
    # the committer time of ``head``'s commit (ISO 8601, UTC) as the clone that deployed it read it: inv report's
    # commit to live reads it here, so a shallow CI clone that lacks the commit agrees with a laptop; None: a build
    # of uncommitted changes, a run that deployed no commit, a record of before it was kept
    committed: str | None = None
    # when the run began changing what runs (ISO 8601, UTC: its first step that does so began; a release it put live
    # served from then on, inv perf reads); None: no such step began, or a record of before it was kept
    changing: str | None = None

    @property
    def result(self) -> str:
        """ok, failed or refused."""
        return "ok" if self.ok else "refused" if self.refused else "failed"

    @property
    def deployed(self) -> dict[str, str]:
        """component → SHA for what the run itself deployed."""
        return {c: sha for c, sha in self.components.items() if c not in self.unchanged}

    @property
    def rollback(self) -> bool:
        """Whether the run put back what ran before (``inv rollback``, or the automatic rollback of a failed
        deploy) rather than deploying a release."""
        return self.rollback_by_hand or self.command.startswith("automatic rollback")

    @property
    def rollback_by_hand(self) -> bool:
        """Whether a person's ``inv rollback`` ran it (it found what it took the environment off wanting)."""
        return self.command.startswith("rollback ")

    @property
    def smoked(self) -> bool:
        """Whether its smoke ran and passed (a step "smoke" done, at any depth)."""
        return any(step.get("status") == "done" for step in self._smokes(self.steps))

    @property
    def without_smoke(self) -> bool:
        """Whether its plan had no smoke (``--no-smoke``; a stack deployed before the environment is whole): not
        one whose smoke was skipped, everything it deploys found in place."""
        return not any(True for _ in self._smokes(self.steps))

    @classmethod
    def _smokes(cls, steps: Iterable[Mapping[str, Any]]) -> Iterator[Mapping[str, Any]]:
        for step in steps:
            if step.get("step") == "smoke":
                yield step
            yield from cls._smokes(step.get("children") or ())

    def deployed_it(self, component: str) -> bool:
        """Whether the run worked and deployed ``component`` (not only carried it to its commit)."""
        return self.ok and bool(self.deployed.get(component))

    def failed_live(self, component: str) -> bool:
        """Whether the run failed after it put its release of ``component`` live: the service rolled to it, or a
        function's alias was moved to it (the versions its move-alias steps left are in its ``left``). A stack's
        is not told by its record alone (deploykit.rollback.may_have_changed reads it, given the stack's name)."""
        if self.ok or component not in self.deployed:
            return False
        if component == "app":
            return any(step.get("step") == "roll-service" and step.get("status") == "done" for step in self.steps)
        return component.startswith("lambda:") and component in self.left

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "env": self.env,
            "when": self.when,
            "who": self.who,
            "command": self.command,
            "head": self.head,
            "ok": self.ok,
            "refused": self.refused,
            "result": self.result,
            "seconds": self.seconds,
            "waited": self.waited,
            "components": self.components,
            "unchanged": self.unchanged,
            "removed": self.removed,
            "unpromoted": self.unpromoted,
            "held": self.held,
            "commits": self.commits,
            "left": self.left,
            "base": self.base,
            "steps": self.steps,
            "error": self.error,
            **({"changed": self.changed} if self.changed is not None else {}),
            **({"committed": self.committed} if self.committed is not None else {}),
            **({"changing": self.changing} if self.changing is not None else {}),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Record:
        """The record a history object holds; one of NOT_A_RECORD for what no deploykit wrote (a hand edit): a time
        without its zone, an error that is not text, a step without its seconds, a component's SHA that is not one."""
        when = datetime.fromisoformat(str(data["when"]))
        if when.tzinfo is None:
            raise ValueError(f"when {data['when']!r} names no time zone")
        error = data.get("error")
        if error is not None and not isinstance(error, str):
            raise TypeError("error is not text")
        steps = list(data.get("steps") or [])
        if not all(_is_step(step) for step in steps):
            raise TypeError("a step is not a step deploykit records")
        components = dict(data.get("components") or {})
        if not all(isinstance(sha, str) for sha in components.values()):
            raise TypeError("a component's SHA is not text")
        committed, changing = data.get("committed"), data.get("changing")
        for key, moment in (("committed", committed), ("changing", changing)):
            if moment is not None and datetime.fromisoformat(str(moment)).tzinfo is None:
                raise ValueError(f"{key} {moment!r} names no time zone")
        return cls(
            id=str(data["id"]),
            env=str(data["env"]),
            when=str(data["when"]),
            who=str(data.get("who") or ""),
            command=str(data.get("command", "")),
            head=str(data.get("head", "")),
            ok=bool(data.get("ok")),
            refused=bool(data.get("refused")),
            seconds=float(data.get("seconds", 0.0)),
            waited=float(data.get("waited") or 0.0),
            components=components,
            unchanged=[str(c) for c in data.get("unchanged") or ()],
            removed=[str(c) for c in data.get("removed") or ()],
            unpromoted=[str(c) for c in data.get("unpromoted") or ()],
            held=[str(c) for c in data.get("held") or ()],
            commits=[{str(k): str(v) for k, v in dict(c).items()} for c in data.get("commits") or ()],
            left={
                str(c): {str(k): str(v) for k, v in dict(state).items()}
                for c, state in (data.get("left") or {}).items()
            },
            base=dict(data.get("base") or {}),
            steps=steps,
            error=error,
            changed=bool(data["changed"]) if isinstance(data.get("changed"), bool) else None,
            committed=None if committed is None else str(committed),
            changing=None if changing is None else str(changing),
        )


def _is_step(step: object) -> bool:
    """A step as a record holds it: a table with its name and its seconds (a number), its children steps too."""
    if not isinstance(step, Mapping) or not isinstance(step.get("step"), str):
        return False
    seconds = step.get("seconds", 0.0)
    if isinstance(seconds, bool) or not isinstance(seconds, int | float):
        return False
    return all(_is_step(child) for child in step.get("children") or ())


class LiveRecordUnreadable(UsageError):
    """The live record is not one deploykit wrote (edited by hand): nothing reads it as what is live."""


class LiveRecordNotWritten(Exception):
    """A run's history record was written, its live record not (S3 refused it, or its answer was lost)."""


# what reading a body that is no record raises (not JSON, or JSON of another shape)
NOT_A_RECORD = (ValueError, TypeError, AttributeError, KeyError)
_RECORD_KEY = re.compile(r"[0-9]{8}T[0-9]{6}[^/]*\.json")  # a record's key after the history's prefix: <id>.json

RECORDED_COMMITS = 50  # the commits a record names at most (a first deploy after months brings hundreds)
LIVE_KEYS = ("sha", "when", "record")  # every live record entry's: the commit, since when, the run that deployed it
# a live record entry's mark of a component deployed by a run without its smoke (--no-smoke), until a run's smoke
# passes, or an inv smoke of every check: not verified there (a promotion does not count it)
UNSMOKED = "unsmoked"


def record_of(
    report: RunReport,
    *,
    components: Mapping[str, str],
    base: Mapping[str, str | None],
    head: str,
    unchanged: Sequence[str] = (),
    removed: Sequence[str] = (),
    who: str | None = None,
    now: datetime | None = None,
    unpromoted: Sequence[str] = (),
    left: Mapping[str, Mapping[str, str]] | None = None,
    waited: float = 0.0,
    held: Sequence[str] = (),
    committed: datetime | None = None,
) -> Record:
    """The history record of a finished run; ``waited``: the seconds its command waited for the lock first;
    ``committed``: the committer time of ``head``'s commit."""
    moment = now or datetime.now(UTC)
    steps: list[dict[str, Any]] = []

    def add(r: StepRecord, parent: StepRecord | None) -> None:  # a group, then its steps (a group's groups too)
        detail = r.description if r.status == "not run" else r.detail  # what it would have done (which stack)
        step = {"step": r.step, "status": r.status, "seconds": round(r.seconds, 3), "detail": detail}
        step |= {"changes": list(r.changes)} if r.changes else {}  # what it changed (a stack: each value)
        step |= {"refused": True} if r.refused else {}  # failed as a guard stopped it, changing nothing
        step |= {"held_back": True} if r.held_back else {}  # stopped short as a step beside it failed
        steps.append(step | ({"in": parent.step} if parent is not None else {}))
        for child in r.children:
            add(child, r)

    for r in report.records:
        add(r, None)
    return Record(
        # microseconds: a run and the automatic rollback right after it sort in the order they ran
        id=f"{moment.strftime('%Y%m%dT%H%M%S.%f')}-{uuid.uuid4().hex[:8]}",
        env=report.plan.env,
        when=moment.isoformat(timespec="seconds"),
        who=who or actor(),
        command=report.plan.title,
        head=head,
        ok=report.ok,
        refused=isinstance(report.error, UsageError) and report.error.exit_code == UsageError.exit_code,
        seconds=round(report.seconds, 3),
        components=dict(components),
        base=dict(base),
        steps=steps,
        error=None if report.error is None else report.error.message,
        unchanged=list(unchanged),
        removed=list(removed),
        unpromoted=list(unpromoted),
        left={component: dict(state) for component, state in (left or {}).items()},
        waited=round(waited, 3),
        held=list(held),
        commits=commits_json(report.plan.commits[:RECORDED_COMMITS]),
        changed=report.changed_live if report.plan.steps else None,
        committed=None if committed is None else committed.astimezone(UTC).isoformat(timespec="seconds"),
        changing=None if report.changing_since is None else report.changing_since.astimezone(UTC).isoformat(),
    )


LIVE_PREFIX = "deploykit/live/"  # each environment's live record: <prefix><env>.json (one bucket may hold several)


def find_artifacts_bucket(aws: AwsFactory, env: EnvConfig) -> str | None:
    """The environment's artifacts bucket (history, live record, lock); None when its registry stack is not
    deployed."""
    outputs = StackOutputs.of(aws)(env.stacks.registry) or {}
    return outputs.get(ARTIFACTS_OUTPUT) or None


class RecordCache:
    """History records as this machine read them before, under ``<root>/history/<bucket>/<key>.<ETag>``.

    A record is written once and never changed, so its body is read from S3 once; a listing names each key with
    its ETag, and a body is taken from here only under the ETag the listing gives now (an object written again, or
    another bucket of the same name, is fetched anew). The root is ``$DEPLOYKIT_CACHE_DIR``, else
    ``$XDG_CACHE_HOME/deploykit``, else ``~/.cache/deploykit``; ``DEPLOYKIT_NO_CACHE=1`` reads everything from S3.
    A cache that cannot be read or written is passed over: it never fails a command. A body kept for
    :data:`CACHE_KEEP_DAYS` days goes (:meth:`prune`, once a day, after a read that fetched something)."""

    def __init__(self, root: Path | None) -> None:
        self.root = root

    @classmethod
    def default(cls, environ: Mapping[str, str] | None = None) -> RecordCache:
        return cls(cache_root(environ))

    def path(self, bucket: str, key: str, etag: str | None) -> Path | None:
        """Where the body of ``key`` at ``etag`` is kept; None when it is not kept (no cache, an unusual name)."""
        tag = (etag or "").strip('"')
        if self.root is None or not _SAFE_TAG.fullmatch(tag) or not _SAFE_NAME.fullmatch(bucket):
            return None
        parts = key.split("/")
        if any(part in ("", ".", "..") for part in parts):
            return None
        return self.root.joinpath("history", bucket, *parts[:-1], f"{parts[-1]}.{tag}")

    def get(self, bucket: str, key: str, etag: str | None) -> bytes | None:
        path = self.path(bucket, key, etag)
        try:
            return path.read_bytes() if path else None
        except OSError:
            return None

    def prune(self, bucket: str, now: float | None = None) -> int:
        """Delete the bodies of ``bucket`` kept more than :data:`CACHE_KEEP_DAYS` days (by when they were written:
        one read again is fetched once more and kept anew), at most once a day (a stamp file says when it last
        ran). Returns how many went; never fails (a body another command deletes first is passed over)."""
        if self.root is None:
            return 0
        now = time.time() if now is None else now
        folder = self.root / "history" / bucket
        if not prune_due(folder, now):
            return 0
        removed = 0
        oldest = now - CACHE_KEEP_DAYS * DAY
        for path in _files(folder):
            with contextlib.suppress(OSError):
                if path.name != PRUNE_STAMP and path.stat().st_mtime < oldest:
                    path.unlink()
                    removed += 1
        return removed

    def put(self, bucket: str, key: str, etag: str | None, body: bytes) -> None:
        path = self.path(bucket, key, etag)
        if path is None:
            return
        try:  # written whole or not at all: a reader never sees half a record
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=".part-")
            with os.fdopen(fd, "wb") as out:
                out.write(body)
            os.replace(temporary, path)
        except OSError:
            return


def _files(folder: Path) -> Iterable[Path]:
    """Every file under ``folder`` (none when it cannot be read)."""
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return
    for entry in entries:
        with contextlib.suppress(OSError):
            if entry.is_dir(follow_symlinks=False):
                yield from _files(Path(entry.path))
            elif entry.is_file(follow_symlinks=False):
                yield Path(entry.path)


_SAFE_TAG = re.compile(r"[0-9A-Za-z-]{1,100}")
_SAFE_NAME = re.compile(r"[0-9A-Za-z._-]{1,255}")


# How far back `History.records` looks first, then next; past the last, the whole history is listed.
RECENT_WINDOWS = (timedelta(days=7), timedelta(days=90))
# The newest records `inv rollback` reads for the deploy before the live one (deploykit.rollback); a cleanup keeps
# what it would go back to within as many (History.recorded).
ROLLBACK_DEPTH = 100
# (component, SHA) → whether what the SHA deployed is still there to go back to (a Lambda: a version names it)
Usable = Callable[[str, str], bool]


def deploys_of(records: Iterable[Record], component: str) -> list[Record]:
    """The records (newest first in, newest first out) of runs that deployed ``component`` successfully. A run that
    only carried it to its commit (deploy.auto, no change since) did not deploy it: its SHA names no image or
    version."""
    return [record for record in records if record.deployed_it(component)]


def took_off(record: Record, component: str, failed_live: Callable[[Record], bool] | None = None) -> str | None:
    """The commit a person's rollback took ``component`` off: one that worked, or failed after it put the release it
    went back to live (:func:`previous_deploy`'s ``failed_live``)."""
    off = record.base.get(component) if record.rollback_by_hand and component in record.deployed else None
    if not off or not (record.ok or (failed_live(record) if failed_live else record.failed_live(component))):
        return None
    return str(off)


def rollback_targets(records: Iterable[Record], component: str, usable: Usable | None = None) -> list[Record]:
    """The successful deploys of ``component`` (``records`` newest first) that ``inv rollback`` may go back to,
    whatever is live: those of the newest two commits ``usable`` says are there to go back to (default: every commit)
    that no newer rollback of a person's took off, and those of the commits passed over before the second. ``inv
    rollback`` takes the newest such deploy at a commit other than the live one
    (:func:`deploykit.rollback.previous_deploy`), which is among them."""
    return _targets(records, component, usable)[0]


def _targets(records: Iterable[Record], component: str, usable: Usable | None) -> tuple[list[Record], set[str]]:
    """:func:`rollback_targets`, and the commits it found there to go back to (two at most)."""
    chosen: list[Record] = []
    there: set[str] = set()
    taken_off: set[str] = set()  # not gone back to, as rollback's previous_deploy passes them over: not counted
    for record in records:
        sha = record.components.get(component, "")
        if record.deployed_it(component):
            chosen.append(record)
            if sha not in taken_off and (usable is None or usable(component, sha)):
                there.add(sha)
                if len(there) == 2:
                    break
        off = took_off(record, component)
        if off:
            taken_off.add(off)
    return chosen, there


@dataclass(frozen=True)
class Recent:
    """An environment's live record and its newest records (newest first), as one read found them."""

    env: str
    live: Mapping[str, Mapping[str, str]]
    records: Sequence[Record]
    # component, limit → its newest records past these too (History.records_of); None: these are the whole history
    further: Callable[[str, int], Sequence[Record]] | None = None

    def recorded(
        self, components: Iterable[str], newest: int, usable: Usable | None = None
    ) -> dict[str, list[tuple[str, str]]]:
        """component → (SHA, why) named for it, newest first: what is live now, then, run by run of the newest
        ``newest`` records, what the run deployed (or failed to) and what was live before it (a run that carried a
        component unchanged, nothing built or published at it, is passed over for that component); then, of all
        the records read, the deploys :func:`rollback_targets` finds (``usable``: its test), and when those hold
        fewer than the two it looks for, of the component's own records further back (:attr:`further`, as ``inv
        rollback`` reads them then), so that a cleanup keeps what ``inv rollback`` goes back to however many runs of
        other components came since."""
        found: dict[str, list[tuple[str, str]]] = {component: [] for component in components}
        where = self.env
        for component, named in found.items():
            entry = self.live.get(component, {})
            if entry.get("sha"):
                named.append((str(entry["sha"]), f"live in {where} since {when_utc(entry.get('when', ''))}"))
        for record in self.records[:newest]:
            for component, named in found.items():
                if component in record.unchanged:
                    continue
                deployed, before = record.components.get(component), record.base.get(component)
                if deployed:
                    result = "deployed" if record.ok else "deploy failed"
                    named.append((deployed, f"{result} in {where} at {when_utc(record.when)}"))
                if before:
                    named.append((before, f"live in {where} before {when_utc(record.when)}"))
        for component, named in found.items():
            seen = {sha for sha, _ in named}
            targets, there = _targets(self.records, component, usable)
            if len(there) < 2 and self.further is not None:
                targets += rollback_targets(self.further(component, ROLLBACK_DEPTH), component, usable)
            for record in targets:
                sha = record.components[component]
                if sha not in seen:
                    seen.add(sha)
                    when = when_utc(record.when)
                    named.append((sha, f"deployed in {where} at {when}, what inv rollback may go back to"))
        return found


def _live_written(put: Callable[[], object]) -> LiveRecordNotWritten | None:
    """``put()``, a write of the live record: None, or the AWS error it raised as :class:`LiveRecordNotWritten`
    (the record's own write, beside it, raises first if it failed)."""
    try:
        put()
    except (BotoCoreError, ClientError) as exc:
        if maybe_applied(exc):  # S3 may have taken it: its answer was lost
            return LiveRecordNotWritten(f"the live record's write got no answer, so S3 may or may not have it: {exc}")
        return LiveRecordNotWritten(f"the live record was not written: {exc}")
    return None


class History:
    """The records and the live record of one environment, in its artifacts bucket."""

    # keys in the first page asked for beside the last week: a history this short is read in one round trip, and a
    # page this size is quick to answer and to parse (moto and botocore in one process: 0.06 s for 100 keys, 0.45 s
    # for 1000)
    first_page = 100

    def __init__(
        self,
        aws: AwsFactory,
        env: EnvConfig,
        bucket: str,
        cache: RecordCache | None = None,
        warn: Callable[[str], object] | None = None,
    ) -> None:
        self.s3 = aws.client("s3")
        self.env = env
        self.bucket = bucket
        self.cache = RecordCache.default() if cache is None else cache
        self._etags: dict[str, str] = {}  # key → its ETag, as the listings named it
        self._warn = warn  # told once of each record that cannot be read (passed over); None: passed over unsaid
        self.unreadable: dict[str, str] = {}  # key → why, for each record passed over

    @classmethod
    def of(cls, aws: AwsFactory, env: EnvConfig, warn: Callable[[str], object] | None = None) -> History | None:
        """The environment's history; None when its registry stack (the bucket) is not deployed. ``warn`` is told
        of a record that cannot be read (it is passed over)."""
        bucket = find_artifacts_bucket(aws, env)
        return cls(aws, env, bucket, warn=warn) if bucket else None

    @property
    def prefix(self) -> str:
        return f"deploykit/history/{self.env.name}/"

    @property
    def live_key(self) -> str:
        return f"{LIVE_PREFIX}{self.env.name}.json"

    def write(self, record: Record, *, live: Mapping[str, Mapping[str, str]] | None = None) -> str:
        """Put ``record`` in the history; a successful run's components go into the live record too. ``live``: the
        live record as the writer read it while holding the environment's lock (so it is still so): it is written
        once the record is; None: it is read first, at the same time as the record is written. The record is always
        written before the live record."""
        key = f"{self.prefix}{record.id}.json"
        body = json.dumps(record.to_json(), indent=2).encode()
        put = partial(self._put_record, key, body)
        if not (record.ok and (record.components or record.removed)):
            put()
            return key
        if live is None:
            reads: dict[str, Callable[[], Any]] = {"record": put, "live": self.live_or_why}
            read = at_once(reads)["live"]  # the record written while the live one is read
            if isinstance(read, LiveRecordUnreadable):
                raise read  # the record is written; the live record is left as it is, for a person to look into
            if (failed := _live_written(partial(self._put_live, record, read))) is not None:
                raise failed
        else:  # the record first: a live record naming a run is never read before that run's record can be
            put()  # (a rollback reads the live record, then the history it goes back by: deploykit.commands.rollback)
            if (failed := _live_written(partial(self._put_live, record, live))) is not None:
                raise failed
        return key

    def _put_record(self, key: str, body: bytes) -> None:
        """Put a record, and keep it in this machine's cache under the ETag S3 gives it: the next command that lists
        it (this developer's next deploy.auto, for its estimates) reads it from there instead of fetching it."""
        answer = self.s3.put_object(Bucket=self.bucket, Key=key, Body=body, ContentType="application/json")
        self.cache.put(self.bucket, key, answer.get("ETag"), body)

    def _put_live(self, record: Record, before: Mapping[str, Mapping[str, str]], tries: int = 3) -> None:
        """The live record ``before`` was, with what ``record`` deployed and removed. Written on condition that it is
        still as ``before`` was read (a :class:`Live`: its ETag; none: that there is none): only a deploy holding the
        environment's lock writes it, but one whose lock was broken or taken over may not know it yet (it reads the
        lock back every 15 s), and writing what it read before would wipe the other deploy's entries. Found changed,
        it is read again and this run's entries are put over the other's, said (``warn``)."""
        live = {component: dict(value) for component, value in before.items()}
        for component, sha in record.components.items():
            entry = was_entry = live.get(component, {})
            if entry.get("sha") != sha:  # "since" stays when the same SHA is redeployed
                was = entry
                entry = {"sha": sha, "when": record.when, "record": record.id}
                if component in record.unchanged:  # carried, not deployed: what it was left as still holds
                    entry |= {k: v for k, v in was.items() if k not in entry}
            if component in record.left:  # deployed again: what it was left as before no longer holds
                entry = {k: entry[k] for k in LIVE_KEYS if k in entry} | record.left[component]
            unsmoked = UNSMOKED in was_entry  # until a smoke passes (below)
            if component in record.deployed and was_entry.get("sha") != sha:  # another commit: its own run says
                # (a rollback's went before); a smoke skipped is no smoke passed: only one that passed clears it
                unsmoked = (unsmoked or record.without_smoke) and not record.rollback
            entry = {k: v for k, v in entry.items() if k != UNSMOKED} | ({UNSMOKED: "true"} if unsmoked else {})
            live[component] = entry
        for component in record.removed:
            live.pop(component, None)
        if record.smoked:  # a smoke checks what the environment runs, whatever the run deployed
            live = _smoked(live)
        try:
            self._write_live(live, before)
        except ClientError as exc:
            if not isinstance(before, Live) or tries <= 1 or error_code(exc) not in WRITTEN_MEANWHILE:
                raise
            if self._warn is not None:
                self._warn(
                    f"the live record of {self.env.name} changed since this run read it under its lock (another "
                    "deploy wrote it: this one's lock was broken or taken over meanwhile): read again, its entries "
                    "kept, this run's put over them"
                )
            self._put_live(record, self.live(), tries - 1)

    def clear_unsmoked(self, before: Live) -> bool:
        """The live record as ``before`` was read, every entry's unsmoked mark taken off (a smoke of everything the
        environment runs passed since: ``inv smoke``), on condition that it is still so; False, nothing written, when
        it was written since (a deploy: what the smoke checked may not be what it names now)."""
        try:
            self._write_live(_smoked(before), before)
        except ClientError as exc:
            if error_code(exc) in WRITTEN_MEANWHILE:
                return False
            raise
        return True

    def _write_live(self, live: Mapping[str, Mapping[str, str]], before: Mapping[str, Mapping[str, str]]) -> None:
        """Put the live record ``live``; on condition that it is still as ``before`` was read when that is a
        :class:`Live` (its ETag; none: that there is none)."""
        condition: dict[str, str] = {}
        if isinstance(before, Live):
            condition = {"IfMatch": before.etag} if before.etag else {"IfNoneMatch": "*"}
        self.s3.put_object(
            Bucket=self.bucket,
            Key=self.live_key,
            Body=json.dumps(live, indent=2, sort_keys=True).encode(),
            ContentType="application/json",
            **condition,
        )

    def live(self) -> Live:
        """component → {sha, when, record, ...}: what the last successful deploys left (with what the run that
        deployed it left it as, :attr:`Record.left`), and its ETag."""
        try:
            answer = self.s3.get_object(Bucket=self.bucket, Key=self.live_key)
            body = answer["Body"].read()
        except ClientError as exc:
            if is_not_there(exc):
                return Live({}, None)
            raise
        try:
            data = json.loads(body)
        except ValueError as exc:
            raise self._bad_live_record(f"not JSON: {exc}") from None
        if not isinstance(data, dict):
            raise self._bad_live_record(f"a JSON {type(data).__name__}, not an object")
        bad = next((k for k, v in data.items() if not (isinstance(v, dict) and isinstance(v.get("sha"), str))), None)
        if bad is not None:
            raise self._bad_live_record(f'its entry {bad!r} is {json.dumps(data[bad])[:60]}, not {{"sha": ...}}')
        return Live({str(k): {str(a): str(b) for a, b in v.items()} for k, v in data.items()}, answer.get("ETag"))

    def live_or_why(self) -> dict[str, dict[str, str]] | LiveRecordUnreadable:
        """:meth:`live`, or why it cannot be read (for a caller that can go on without it)."""
        try:
            return self.live()
        except LiveRecordUnreadable as exc:
            return exc

    def _bad_live_record(self, why: str) -> LiveRecordUnreadable:
        where = f"s3://{self.bucket}/{self.live_key}"
        return LiveRecordUnreadable(
            f"the live record of {self.env.name}, {where}, is not one deploykit wrote ({why})",
            next_step=f"put back a good copy of it, or delete it (aws s3 rm {where}): what is live is then read from "
            "the environment alone, every stack counts as changed, and the next deploy.auto deploys each again (a "
            "stack that holds that already gets an empty change set) and writes the record anew",
        )

    def records_by_id(self, ids: Sequence[str]) -> list[Record]:
        """The records of these run ids (in their order), read at once; one that is not there is left out."""
        keys = [f"{self.prefix}{record_id}.json" for record_id in ids]
        reads = {key: partial(self._record_if_there, key) for key in keys}
        found = at_once(reads, width=CONNECTIONS) if reads else {}
        return [record for key in keys if (record := found[key]) is not None]

    def _record_if_there(self, key: str) -> Record | None:
        """The record at ``key``, fetched (one round trip: with no listing, no ETag says a cached body holds);
        None when it is not there or is not a record (passed over, said)."""
        try:
            body = self._fetch(key)
        except ClientError as exc:
            if is_not_there(exc):
                return None
            raise
        return self._parsed(key, body)

    def records(self, limit: int = 20) -> list[Record]:
        """The newest ``limit`` records, newest first. An object among the newest that is no record (passed over,
        said) takes no place: the keys are listed again, twice as many, until ``limit`` records are read or the
        history has no more (the records read before come from this machine's cache)."""
        want = limit
        while True:
            keys = self.newest_keys(want)
            found = self._load(keys)
            if len(found) >= limit or len(keys) < want:
                return found[:limit]
            want *= 2

    def newest_keys(self, limit: int) -> list[str]:
        """The keys of the newest ``limit`` records, newest first. S3 lists keys oldest first, a page of 1000 at a
        time, so a history of a year of deploys is many pages. The oldest :attr:`first_page` keys and the last
        week's (keys start with their UTC time: ``StartAfter``) are asked for at once: a history that short is all
        there, in that one round trip. A longer one is read from its recent windows, each only when the one before
        held fewer than ``limit``, the whole history last. Whatever a window holds is newer than all it leaves out,
        so its newest ``limit`` are the history's."""
        if limit <= 0:
            return []
        now = datetime.now(UTC)
        starts = [self._key_at(now - window) for window in RECENT_WINDOWS]
        reads: dict[str, Callable[[], Any]] = {
            "window": partial(self._keys, start_after=starts[0]),
            "page": self._first_page,
        }
        found = at_once(reads)
        page, more = found["page"]
        if not more:  # the whole history
            return sorted(page, reverse=True)[:limit]
        keys: list[str] = found["window"]
        for n, start in enumerate(starts):
            if n:
                keys = self._keys(start_after=start)
            if len(keys) >= limit:
                return sorted(keys, reverse=True)[:limit]
        return sorted(self._keys(), reverse=True)[:limit]

    def _first_page(self) -> tuple[list[str], bool]:
        """The oldest :attr:`first_page` keys, and whether there are more."""
        page = self.s3.list_objects_v2(Bucket=self.bucket, Prefix=self.prefix, MaxKeys=self.first_page)
        return self._listed(page), bool(page.get("IsTruncated"))

    def records_of(self, component: str, limit: int, *, first: int = 100) -> list[Record]:
        """The newest ``limit`` records of runs that deployed ``component`` (or failed to, or took it out), newest
        first: the newest ``first`` records are read, then four times as many each time fewer matched, the whole
        history at most (records read before come from this machine's cache)."""
        batch = max(first, limit)
        while True:
            keys = self.newest_keys(batch)
            found = [r for r in self._load(keys) if component in r.deployed or component in r.removed]
            if len(found) >= limit or len(keys) < batch:
                return found[:limit]
            batch *= 4

    def recorded(
        self, components: Iterable[str], records: int, usable: Usable | None = None
    ) -> dict[str, list[tuple[str, str]]]:
        """:meth:`Recent.recorded` of :meth:`recent`: what the live record and the newest ``records`` records name
        for each component, and what ``inv rollback`` may go back to (read as deep as it reads: when the newest
        records hold fewer than two deploys of a component to go back to, and the history is longer, its own records
        further back, :meth:`records_of`, as ``inv rollback`` reads them then)."""
        return self.recent(max(records, ROLLBACK_DEPTH)).recorded(components, records, usable)

    def recent(self, depth: int = ROLLBACK_DEPTH) -> Recent:
        """The live record and the newest ``depth`` records, read at once (and, when there are more, a component's
        own records further back, when :meth:`Recent.recorded` needs them)."""
        reads: dict[str, Callable[[], Any]] = {"live": self.live, "records": partial(self.records, depth)}
        read = at_once(reads)
        records = tuple(read["records"])
        return Recent(self.env.name, read["live"], records, self.records_of if len(records) >= depth else None)

    def records_since(self, moment: datetime) -> list[Record]:
        """Every record written at ``moment`` or later, oldest first. Keys start with their UTC time, so S3 lists
        only those (``StartAfter``), however long the history."""
        return self._load(sorted(self._keys(start_after=self._key_at(moment))))

    def _key_at(self, moment: datetime) -> str:
        return f"{self.prefix}{moment.astimezone(UTC).strftime('%Y%m%dT%H%M%S')}"

    def _keys(self, start_after: str = "") -> list[str]:
        keys: list[str] = []
        paginator = self.s3.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=self.prefix, StartAfter=start_after):
            keys += self._listed(page)
        return keys

    def _listed(self, page: Mapping[str, Any]) -> list[str]:
        """The keys of records in a ListObjectsV2 answer (an object put there by hand, notes.txt, is none: it would
        take a place among the newest); their ETags are kept for :meth:`_load`."""
        keys = []
        for found in page.get("Contents") or ():
            if not _RECORD_KEY.fullmatch(str(found["Key"])[len(self.prefix) :]):
                continue
            keys.append(str(found["Key"]))
            self._etags[keys[-1]] = str(found.get("ETag") or "")
        return keys

    def _load(self, keys: Sequence[str]) -> list[Record]:
        """The records of ``keys``: those read before from this machine's cache, under the ETag listed now; the
        others from S3, a round trip for every 32 (deploy.auto's 30 estimates: one), and into the cache."""
        loaded: dict[str, Record] = {}
        for key in keys:
            kept = self.cache.get(self.bucket, key, self._etags.get(key))
            if kept is not None:
                with contextlib.suppress(*NOT_A_RECORD):  # fetched again
                    loaded[key] = Record.from_json(json.loads(kept))
        missing = [key for key in keys if key not in loaded]
        bodies = at_once({key: partial(self._fetch, key) for key in missing}, width=CONNECTIONS)
        for key in missing:
            if (record := self._parsed(key, bodies[key])) is not None:
                loaded[key] = record
        if missing:  # the cache grew: what it kept long ago goes (once a day)
            self.cache.prune(self.bucket)
        return [loaded[key] for key in keys if key in loaded]

    def _parsed(self, key: str, body: bytes) -> Record | None:
        """The record ``body`` holds; None when it is not one (passed over, said once)."""
        try:
            return Record.from_json(json.loads(body))
        except NOT_A_RECORD as exc:
            self._pass_over(key, f"{type(exc).__name__}: {exc}")
            return None

    def _pass_over(self, key: str, why: str) -> None:
        if key in self.unreadable:
            return
        self.unreadable[key] = why
        if self._warn is not None:
            where = f"s3://{self.bucket}/{key}"
            self._warn(
                f"⚠️  passed over {where}: not a history record deploykit can read ({why}); delete it to quiet this"
            )

    def _fetch(self, key: str) -> bytes:
        answer = self.s3.get_object(Bucket=self.bucket, Key=key)
        body = bytes(answer["Body"].read())
        self.cache.put(self.bucket, key, answer.get("ETag"), body)
        return body


def when_utc(iso: str) -> str:
    """An ISO 8601 moment as ``2026-11-28 12:00 UTC`` (as it is when it has no zone)."""
    try:
        moment = datetime.fromisoformat(iso)
    except ValueError:
        return iso or "?"
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%d %H:%M") + (" UTC" if moment.tzinfo is not None else "")


def estimates(records: Sequence[Record]) -> dict[str, float]:
    """Step name → the median seconds it took when it ran (done, or skipped: its result was there), over ``records``.

    Skips count (not a verifying step the executor did not run, nothing having changed before it): a step that
    usually finds its result in place (the base image current, the synthesis unchanged, a
    build cached) takes that time. Counting only what did something, the base image's one build (about a minute) was
    every later app deploy's estimate for a check of a few milliseconds.

    A stack's creation counts only while it is all there is: a plan updates a stack that is there, and creating one
    (every stack of the first ``deploy.full``: on AWS minutes more than an update, a database, a load balancer) was
    the estimate of the updates after it."""
    seen: dict[str, list[float]] = {}
    created: dict[str, list[float]] = {}
    for record in records:
        for step in record.steps:
            if step.get("detail") == NOT_RUN_NOTHING_CHANGED:  # not run at all: no time of its own (smoke's ~0 s)
                continue
            if step.get("status") in ("done", "skipped"):
                name = step_name(step)
                made = name.startswith("deploy-stack:") and str(step.get("detail", "")).startswith(
                    f"{name.partition(':')[2]}: created in "
                )
                (created if made else seen).setdefault(name, []).append(float(step.get("seconds", 0.0)))
    for name, values in created.items():
        seen.setdefault(name, values)
    return {name: round(statistics.median(values), 1) for name, values in seen.items()}


def stack_changes(records: Sequence[Record], stack: str) -> list[tuple[Record, list[str]]]:
    """What each run changed in ``stack`` (the lines its deploy-stack step recorded: each value before and after),
    for the runs that recorded some, in the order given."""
    found = []
    for record in records:
        lines = [
            str(line)
            for step in record.steps
            if step_name(step) == f"deploy-stack:{stack}"
            for line in step.get("changes") or ()
        ]
        if lines:
            found.append((record, lines))
    return found


def step_name(step: Mapping[str, Any]) -> str:
    """A recorded step's name, a stack's named by the stack ("deploy-stack:CarRentalApiStack"): each stack takes
    its own time."""
    name = str(step.get("step"))
    detail = str(step.get("detail", ""))
    stack = detail.split(":", 1)[0] if ":" in detail else ""  # not "interrupted"
    if name == "deploy-stack" and stack and " " not in stack:  # not a failure's message
        return f"{name}:{stack}"
    return name


def shipped(records: Sequence[Record]) -> str:
    """Under ``inv history --commits``' table: for each successful run that took commits live, newest first, the run
    and its commits; a line for the runs that kept none (older records, other commands) counted together."""
    parts: list[str] = []
    none = 0
    for r in records:
        if not r.ok or not r.commits:
            none += 1
            continue
        took = f"{len(r.commits)} commit{'s' if len(r.commits) > 1 else ''}"
        parts.append(f"\n{r.when.replace('+00:00', 'Z')} {r.command} by {r.who} took {took} live:\n")
        parts += [f"  {c.get('sha', '?')} {c.get('subject', '')} · {c.get('author', '')}\n" for c in r.commits]
    if none:
        parts.append(f"\n({none} of the runs above took no commit live that their record names)\n")
    return "".join(parts)


def table(records: Sequence[Record]) -> str:
    rows = []
    for r in records:
        # a dirty build's whole tag: its commit alone would read as a deploy of that commit
        listed = ", ".join(f"{c}@{sha if DIRTY in sha else sha[:12]}" for c, sha in sorted(r.deployed.items()))
        if r.removed:
            listed = ", ".join(filter(None, (listed, "removed " + ", ".join(sorted(r.removed)))))
        if r.unpromoted:
            listed = f"⚠️ unpromoted {', '.join(sorted(r.unpromoted))}; {listed}"
        listed = listed or "-"
        aside = [f"+{len(r.unchanged)} unchanged"] if r.unchanged else []
        aside += [f"{len(r.held)} held back"] if r.held else []
        noted = f" ({', '.join(aside)})" if aside else ""
        room = 70 - len(noted)
        deployed = (listed if len(listed) <= room else listed[: room - 3] + "...") + noted
        rows.append(
            [
                r.when.replace("+00:00", "Z"),
                r.who,
                r.command,
                r.head,
                RESULTS[r.result],
                f"{r.seconds:.1f}s" + (f" (+{r.waited:.0f}s lock)" if r.waited >= 0.5 else ""),
                deployed,
            ]
        )
    # disable_numparse: a SHA of digits and one e (123456789e12) is not a number to print as 1.23457e+20
    return tabulate(
        rows, headers=["when", "who", "command", "head", "result", "time", "deployed"], disable_numparse=True
    )
