"""One deploy at a time per environment: a lock held in the environment itself (so laptops and CI see it).

The lock is an S3 object in the environment's artifacts bucket (the registry stack's ``ArtifactsBucketName``,
found as :meth:`deploykit.history.History.of` finds it): ``deploykit/lock/<env>.json``, holding who holds it
(``owner``, ``host``, ``pid``), the ``command``, when it ``started``, how long its ``lease`` is (seconds), when it
``expires`` (by the holder's clock: for people, and stores that give no time) and a random ``token`` that says "this
one is mine".

- **Acquire** is a conditional create (``PutObject`` with ``If-None-Match: *``): of two deploys starting at the
  same moment, S3 lets exactly one create it. The other is refused with a :class:`~deploykit.errors.UsageError`
  (exit 2, nothing changed) that says who holds it, since when, which command, on which host, when the lease
  expires, and what to do.
- **A lease**: a lock left by a killed process (no ``finally`` ran) expires ``lease`` seconds after its last
  write, the create or a renewal (:data:`LEASE_SECONDS` by default). An expired lock is taken over with a write
  conditional on the ETag read (``If-Match``), so of two deploys taking over the same stale lock exactly one wins.
- **Renewal**: while a deploy runs, a daemon thread rewrites the lock every ``lease / 3`` seconds with a new
  ``expires``, again conditional on the ETag it last wrote, so a long deploy never loses its lock and a renewal
  never overwrites a lock someone else now holds (it stops and the lease is marked lost instead). A renewal that
  fails (throttling, the network) is tried again :data:`RENEW_RETRY` seconds later. A deploy whose lease is lost
  (broken, taken over, or run out unrenewed) stops before its next step that changes what is live
  (:meth:`Lease.check`, :class:`LockLost`).
- **Lost answers**: a conditional write whose answer is lost goes through, and the SDK's retry of it is refused
  (its condition no longer holds): acquire, renewal and release then read the lock back, and one holding this
  deploy's ``token`` is its own.
- **Release** deletes the object only if it is still ours: the delete is conditional on the ETag we last wrote
  (``DeleteObject`` with ``If-Match``; S3 refuses it when anyone wrote the lock since).
- Each is one call in the common case: acquire tries the conditional create before reading anything, and release
  does not read the lock first (on AWS 100-300 ms saved each).
- ``inv unlock --env ENV`` (:meth:`EnvLock.break_`) breaks it on purpose, for a deploy known to be dead.
- **Waiting**: the refusal is a :class:`LockHeld`; a command allowed to wait (:func:`wait_seconds`: the
  environment's ``lock_wait``, ``$DEPLOYKIT_LOCK_WAIT``) looks at the lock until it is free or its lease ran out
  (:meth:`EnvLock.wait_until_free`), then starts again from the beginning
  (:func:`deploykit.commands.until_unlocked`), reading what is live anew.

**Expiry is judged by S3's clock alone** (:meth:`Found.expired`), so deploying machines whose clocks disagree (a
laptop 15 minutes ahead, one behind) neither take over a lock that is being renewed nor wait for a dead one past its
lease: the lock's ``LastModified`` (set by S3 at each write) against S3's time of the read, the ``Date`` of the same
answer, with the ``lease`` the lock says (a lock an older deploykit wrote says none: every one held it
:data:`LEASE_SECONDS`, so a teammate's laptop not pulled for a month and CI on main still see each other's lock). Only
when S3 gives no such times (an S3-compatible store without ``Date``) is it judged with this machine's injectable
:class:`~deploykit.clock.Clock` against the ``expires`` the holder wrote with its own: clocks must then agree within a
small part of the lease (NTP does). The holder itself counts its lease on its monotonic clock from before its last
write that went through (:meth:`Lease.check`): it never thinks it holds the lock after others may take it.

An environment with no artifacts bucket yet (a first ``deploy.full``: the registry stack does not exist) has
nowhere to hold a lock: :func:`held` then proceeds without one and yields ``None``. Two first deploys of the same
fresh environment are therefore not kept apart; every later one is.
"""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from deploykit.aws import AwsFactory, maybe_applied, served, utc
from deploykit.clock import Clock, SystemClock, backoff, seconds_of, shielded
from deploykit.config import EnvConfig
from deploykit.errors import StepFailed, UsageError
from deploykit.history import actor, find_artifacts_bucket
from deploykit.stacks import NOT_THERE

LEASE_SECONDS = 600.0
"""How long a lock outlives its last renewal: a killed deploy's lock is free again this long after it died."""
RENEW_RETRY = 10.0  # seconds before a renewal that failed (a network blip, throttling) is tried again
# seconds the holder counts its lease short by: others judge it from S3's Date and Last-Modified headers, each to the
# whole second, so they may find it run out up to a second before the holder's own count (from before its write) does
LEASE_MARGIN = 2.0
VERIFY_EVERY = 15.0
"""Seconds between two reads of the lock while a deploy holds it, between renewals: a lock broken by ``inv unlock``
(the deploy was thought dead) or taken over is noticed within them, not at the next renewal, a third of the lease
later (200 s), during which the deploy went on beside the new holder. One small read now and then, off the deploy's
path (the renewing thread's): a deploy of a few seconds makes none."""

PREFIX = "deploykit/lock/"
WAIT_ENV = "DEPLOYKIT_LOCK_WAIT"
"""How long a command waits for another deploy's lock (``600``, ``90s``, ``15m``, ``1h``); over ``lock_wait``."""
_ATTEMPTS = 3
# what S3 answers when a conditional write or delete loses: the ETag no longer matches (412), the object is gone
# (404 on If-Match), or another conditional write on the same key is in flight (409)
_LOST_RACE = {"PreconditionFailed", "412", *NOT_THERE, "ConditionalRequestConflict", "409"}


def wait_seconds(env: EnvConfig, environ: Mapping[str, str] | None = None) -> float:
    """How long a command may wait for another deploy's lock of ``env``: ``$DEPLOYKIT_LOCK_WAIT`` when set, else
    the environment's ``lock_wait`` (0: refused at once). A malformed value is a UsageError."""
    text = (os.environ if environ is None else environ).get(WAIT_ENV, "").strip()
    if not text:
        return env.lock_wait
    seconds = seconds_of(text)
    if seconds is None:
        raise UsageError(
            f"{WAIT_ENV}={text!r} is not a duration (of a year at most)",
            next_step="set it to seconds, minutes or hours: 600, 90s, 15m, 1h",
        )
    return seconds


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="seconds")


def _parse(value: object) -> datetime | None:
    try:
        return datetime.fromisoformat(str(value))
    except ValueError:
        return None


def _human(moment: datetime) -> str:
    return _iso(moment).replace("+00:00", "Z")


def _lease_of(value: object) -> float | None:
    """The lease the lock document says (seconds); None when it says none, or nothing usable (an older deploykit
    wrote none)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if 0 < value < float("inf") else None


def duration(seconds: float) -> str:
    """``4s``, ``1m37s``, ``2h05m``."""
    seconds = max(0, round(seconds))
    minutes, secs = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


@dataclass(frozen=True)
class LockInfo:
    """What the lock object says: who holds it, doing what, since when, until when."""

    owner: str
    host: str
    pid: int
    command: str
    started: str  # ISO 8601, UTC
    expires: str  # ISO 8601, UTC, by the holder's clock: the holder renews it while it runs
    token: str
    lease: float | None = None  # seconds the lock outlives its last write (None: an older deploykit's, 600 s)

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "owner": self.owner,
            "host": self.host,
            "pid": self.pid,
            "command": self.command,
            "started": self.started,
            "expires": self.expires,
            "token": self.token,
        }
        if self.lease is not None:
            data["lease"] = self.lease
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> LockInfo:
        return cls(
            owner=str(data.get("owner", "unknown")),
            host=str(data.get("host", "unknown")),
            pid=int(data.get("pid") or 0),
            command=str(data.get("command", "unknown")),
            started=str(data.get("started", "")),
            expires=str(data.get("expires", "")),
            token=str(data.get("token", "")),
            lease=_lease_of(data.get("lease")),
        )

    def expired(self, now: datetime) -> bool:
        """True once the lease ran out by ``now`` against ``expires`` (two clocks: :meth:`Found.expired` uses S3's
        one when it can); a lock whose ``expires`` cannot be read counts as expired."""
        until = _parse(self.expires)
        return until is None or now >= until

    def describe(self, now: datetime, *, left: float | None = None) -> str:
        """Who holds it, since when, which command, on which host, when the lease expires: against ``expires`` by
        ``now``, or, given ``left`` (seconds the lease has left by S3's clock, ``now`` being S3's time), that long
        after ``now`` by S3's clock."""
        started, until = _parse(self.started), _parse(self.expires)
        since = f"since {_human(started)} ({duration((now - started).total_seconds())} ago)" if started else ""
        if left is not None:
            end = _human(now + timedelta(seconds=left))
            lease = (
                f"its lease expires in {duration(left)} unless renewed (at {end} by S3's clock)"
                if left > 0
                else f"its lease expired {duration(-left)} ago (at {end} by S3's clock)"
            )
        elif until is None:
            lease = "its lease cannot be read"
        elif now >= until:
            lease = f"its lease expired at {_human(until)}"
        else:
            lease = (
                f"its lease expires at {_human(until)} (in {duration((until - now).total_seconds())}) unless renewed"
            )
        return f"{self.owner} has been running {self.command!r} on {self.host} (pid {self.pid}) {since}; {lease}"


@dataclass(frozen=True)
class Found:
    """The lock object as read: its content, the ETag a conditional write or delete must match, and S3's two times
    that say how old it is by S3's one clock: its ``LastModified`` (``written``, set by S3 at each write: the create,
    each renewal) and the ``Date`` of the read's answer (``served``). None when S3 gave none."""

    info: LockInfo
    etag: str
    written: datetime | None = None
    served: datetime | None = None

    @property
    def left(self) -> float | None:
        """Seconds its lease has left by S3's clock (negative: it ran out that long ago): the lease the lock says
        (:data:`LEASE_SECONDS` when it says none: an older deploykit's, whose lease that was) less the time since its
        last write; None without S3's two times."""
        if self.written is None or self.served is None:
            return None
        lease = LEASE_SECONDS if self.info.lease is None else self.info.lease
        return lease - max(0.0, (self.served - self.written).total_seconds())

    def expired(self, now: datetime) -> bool:
        """True once the lease ran out: by S3's clock alone when S3 gave its times (the deploying machines' clocks
        may disagree by any amount), else by ``now`` (this machine's clock) against the ``expires`` the holder wrote
        with its own (:meth:`LockInfo.expired`)."""
        left = self.left
        return self.info.expired(now) if left is None else left <= 0

    def describe(self, now: datetime) -> str:
        """:meth:`LockInfo.describe`, its times from S3's clock when S3 gave them: "since" measured to the read's
        ``Date``, the lease's end as the last write's ``LastModified`` plus the lease."""
        left = self.left
        if left is None or self.served is None:
            return self.info.describe(now)
        return self.info.describe(self.served, left=left)


class LockLost(StepFailed):
    """The lock of a running deploy was broken, taken over, or ran out unrenewed: the deploy stops before its next
    step (exit 1: the steps before it may have changed what is live), and puts nothing back (another deploy may be
    running now)."""


# a row's reason for what a cleanup did not get to once its lease was lost (lost_lease)
STOPPED = "not done: the deploy lock was lost, and the run stopped before it"


def lost_lease(holding: Callable[[], None] | None) -> LockLost | None:
    """What ``holding`` (a lease's :meth:`Lease.check`; None: no lock held, a dry run) raises when the lock is no
    longer ours, else None: for a cleanup's deletions, checked before each call, so that it stops, reports what it did
    and then raises it (exit 1)."""
    if holding is None:
        return None
    try:
        holding()
    except LockLost as exc:
        return exc
    return None


class LockHeld(UsageError):
    """Another deploy holds the environment's lock: refused before anything changed (exit 2). ``lock`` can wait
    for it to be free (:meth:`EnvLock.wait_until_free`), ``wait`` is how long this command may (seconds); ``found``
    the lock as read (S3's times with it), when it was."""

    def __init__(
        self, message: str, *, next_step: str, lock: EnvLock, info: LockInfo, wait: float, found: Found | None = None
    ) -> None:
        super().__init__(message, next_step=next_step)
        self.lock, self.info, self.wait, self.found = lock, info, wait, found

    def holder(self, now: datetime) -> str:
        """Who holds it and until when (:meth:`Found.describe`), ``now`` being this machine's time."""
        return (self.found if self.found is not None else self.info).describe(now)


class EnvLock:
    """The lock object of one environment in its artifacts bucket."""

    def __init__(
        self,
        s3: Any,
        bucket: str,
        env: str,
        *,
        clock: Clock | None = None,
        lease: float = LEASE_SECONDS,
        wait: Callable[[], float] = lambda: 0.0,
        poll: float = 5.0,
        environment: EnvConfig | None = None,
        aws_offset: Callable[[], float] = lambda: 0.0,
    ) -> None:
        if lease <= 0:
            raise ValueError("lease must be positive")
        # how far AWS's clock is ahead of this machine's (AwsFactory.offset): the lock says since when it is held in
        # S3's time, as the others read it against S3's (a holder 20 minutes behind read "20m ago" a moment after)
        self.aws_offset = aws_offset
        self.s3 = s3
        self.bucket = bucket
        self.env = env
        self.clock = clock or SystemClock()
        self.lease = lease
        self.wait = wait  # how long a command may wait for another deploy's lock (wait_seconds), asked when refused
        self.poll = poll  # the longest pause between two looks at a lock being waited for
        self.environment = environment  # its settings: the AWS errors of a wait said as for the environment

    @classmethod
    def of(
        cls, aws: AwsFactory, env: EnvConfig, *, clock: Clock | None = None, lease: float = LEASE_SECONDS
    ) -> EnvLock | None:
        """The environment's lock; None when its registry stack (the artifacts bucket) is not deployed."""
        bucket = find_artifacts_bucket(aws, env)
        if not bucket:
            return None
        wait = partial(wait_seconds, env)
        s3 = aws.client("s3")
        return cls(
            s3,
            bucket,
            env.name,
            clock=clock,
            lease=lease,
            wait=wait,
            poll=env.poll_seconds,
            environment=env,
            aws_offset=lambda: aws.offset,
        )

    @property
    def key(self) -> str:
        return f"{PREFIX}{self.env}.json"

    def read(self) -> Found | None:
        """The lock as it is now; None when nobody holds it."""
        try:
            answer = self.s3.get_object(Bucket=self.bucket, Key=self.key)
        except ClientError as exc:
            if _code(exc) in NOT_THERE:
                return None
            raise
        body = answer["Body"].read()
        try:
            data = json.loads(body)
        except ValueError:
            data = {}
        info = LockInfo.from_json(data if isinstance(data, dict) else {})
        return Found(info, str(answer["ETag"]), written=utc(answer.get("LastModified")), served=served(answer))

    def acquire(self, command: str) -> Lease:
        """Take the lock for ``command``, or take over an expired one; refuse (UsageError) when it is held. One token
        for every attempt: a lock found holding it is ours (a write whose answer was lost went through, and the
        SDK's retry of it was refused)."""
        token = uuid.uuid4().hex
        info = self._new_info(command, token)
        first = self.clock.monotonic()  # before any write: a lock found ours was written no earlier
        try:  # the common case first, one call: nobody holds it (the condition fails when someone does)
            return Lease(self, info, self._write(info, IfNoneMatch="*"), written=first)
        except ClientError as exc:
            self._refuse_missing_bucket(exc)
            if _code(exc) not in _LOST_RACE:
                if held := self._written_all_the_same(exc, token, first):
                    return held
                raise
        except BaseException as exc:
            if held := self._written_all_the_same(exc, token, first):
                return held
            raise
        for _attempt in range(_ATTEMPTS):
            current = self.read()
            if current is not None and current.info.token == token:
                return Lease(self, current.info, current.etag, written=first)
            if current is not None and not current.expired(self.clock.now()):
                raise self.refusal(current)
            info = self._new_info(command, token)
            condition = {"IfNoneMatch": "*"} if current is None else {"IfMatch": current.etag}
            sent = self.clock.monotonic()
            previous = None if current is None else current.info
            try:
                etag = self._write(info, **condition)
            except ClientError as exc:
                if _code(exc) in _LOST_RACE:
                    continue  # someone else created, renewed or took it between our read and write: look again
                if held := self._written_all_the_same(exc, token, sent, previous):
                    return held
                raise
            except BaseException as exc:
                if held := self._written_all_the_same(exc, token, sent, previous):
                    return held
                raise
            return Lease(self, info, etag, previous=previous, written=sent)
        current = self.read()
        if current is not None and current.info.token == token:
            return Lease(self, current.info, current.etag, written=first)
        if current is not None:
            raise self.refusal(current)
        raise UsageError(  # pragma: no cover - needs three lost races in a row, each to a lock released at once
            f"the deploy lock of {self.env!r} keeps changing hands; nothing was changed",
            next_step="rerun in a moment",
        )

    def _written_all_the_same(
        self, exc: BaseException, token: str, written: float, previous: LockInfo | None = None
    ) -> Lease | None:
        """After a write of the lock that ended in ``exc``: when S3 may have taken it all the same (its answer lost,
        a server error after the retries: :func:`~deploykit.aws.maybe_applied`) and the lock is ours (``token``),
        the lease, or, after an interrupt, the lock deleted; None otherwise (the error stands). Without this, a
        lock written by a run that failed on its answer held the environment until its lease ran out."""
        if not maybe_applied(exc):
            return None
        try:
            current = self.read()
            if current is None or current.info.token != token:
                return None
            if not isinstance(exc, Exception):  # Ctrl-C: the command ends, and holds nothing
                self.s3.delete_object(Bucket=self.bucket, Key=self.key, IfMatch=current.etag)
                return None
        except (BotoCoreError, ClientError):  # cannot tell: the write's own error is what the command says
            return None
        return Lease(self, current.info, current.etag, previous=previous, written=written)

    def _refuse_missing_bucket(self, exc: ClientError) -> None:
        if _code(exc) == "NoSuchBucket":
            raise UsageError(
                f"the artifacts bucket {self.bucket} of {self.env!r}, where its deploy lock and history live, does not "
                "exist: the registry stack names a bucket that was deleted; nothing was changed",
                next_step=f"see the stacks: inv health --env {self.env}; make the bucket again under that name "
                f"(aws s3 mb s3://{self.bucket}), or delete and deploy the registry stack anew",
            ) from None

    def refusal(self, found: Found, waited: float = 0.0) -> LockHeld:
        still = f" (still, after waiting {duration(waited)})" if waited else ""
        wait = "" if waited else f" (or let the command wait for it: {WAIT_ENV}=10m)"
        return LockHeld(
            f"another deploy holds the lock of environment {self.env!r}{still}: {found.describe(self.clock.now())}",
            next_step=f"wait for it to finish, then rerun{wait}; if that deploy is dead (killed, its machine gone), "
            f"break the lock: inv unlock --env {self.env}",
            lock=self,
            info=found.info,
            wait=self.wait(),
            found=found,
        )

    def wait_until_free(
        self,
        deadline: float,
        say: Callable[[str], object],
        status: Callable[[str], object] = lambda _text: None,
        *,
        since: float | None = None,
    ) -> None:
        """Look at the lock until nobody holds it or its lease ran out (its holder died): then a command may start
        again and take it. Looks after 0.5 s, then ever less often, at most every :attr:`poll` seconds; says when
        another deploy took it meanwhile, and gives ``status`` who holds it at each look. At ``deadline`` (the
        clock's monotonic time) still held: :class:`LockHeld` naming the wait, counted from ``since`` (the command's
        first refusal: a command started again may be refused again), else from now."""
        started = self.clock.monotonic() if since is None else since
        holder = ""
        for pause in backoff(0.5, self.poll):
            found = self.read()
            if found is None or found.expired(self.clock.now()):
                return
            if holder and found.info.token != holder:
                now = self.clock.now()
                say(f"⏳ another deploy took the lock of {self.env!r} meanwhile: {found.describe(now)}")
            holder = found.info.token
            status(f"held by {found.info.owner} ({found.info.command!r})")
            left = deadline - self.clock.monotonic()
            if left <= 0:
                raise self.refusal(found, waited=self.clock.monotonic() - started)
            self.clock.sleep(min(pause, left))

    def _new_info(self, command: str, token: str) -> LockInfo:
        now = self.clock.now() + timedelta(seconds=self.aws_offset())
        return LockInfo(
            owner=actor(),
            host=socket.gethostname(),
            pid=os.getpid(),
            command=command,
            started=_iso(now),
            expires=_iso(now + timedelta(seconds=self.lease)),
            token=token,
            lease=self.lease,
        )

    def _write(self, info: LockInfo, **condition: str) -> str:
        answer = self.s3.put_object(
            Bucket=self.bucket,
            Key=self.key,
            Body=json.dumps(info.to_json(), indent=2).encode(),
            ContentType="application/json",
            **condition,
        )
        return str(answer["ETag"])

    def break_(self, found: Found) -> bool:
        """Delete the lock ``found`` (whoever holds it); False when it changed or went away since it was read."""
        try:
            self.s3.delete_object(Bucket=self.bucket, Key=self.key, IfMatch=found.etag)
        except ClientError as exc:
            if _code(exc) in _LOST_RACE:
                return False
            raise
        return True


class Lease:
    """A lock we hold: renew it while the deploy runs, release it at the end."""

    def __init__(
        self, lock: EnvLock, info: LockInfo, etag: str, *, previous: LockInfo | None = None, written: float
    ) -> None:
        self.lock = lock
        self.info = info
        self.etag = etag
        self.previous = previous  # the expired lock this one took over, if any
        # the clock's monotonic time before our last write of the lock that went through: S3 set its LastModified
        # later, so the lease runs out for others no sooner than ``lease`` seconds after it (check)
        self.written = written
        self.lost: str | None = None  # why the lock is no longer ours, once it is not
        self._mutex = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def renew(self) -> bool:
        """Push ``expires`` one lease ahead, if the lock is still ours; False (and ``lost`` set) when it is not."""
        with self._mutex:
            if self.lost:
                return False
            until = self.lock.clock.now() + timedelta(seconds=self.lock.lease + self.lock.aws_offset())
            info = dataclasses.replace(self.info, expires=_iso(until), lease=self.lock.lease)
            sent = self.lock.clock.monotonic()
            try:
                self.etag = self.lock._write(info, IfMatch=self.etag)
            except ClientError as exc:
                if _code(exc) not in _LOST_RACE:
                    raise
                found = self.lock.read()
                if found is not None and found.info.token == self.info.token:  # ours: the write went through, and
                    self.info, self.etag = found.info, found.etag  # the SDK's retry of it was refused (or an
                    return True  # earlier one's did: ``written`` is left as it was, the earlier time)
                return self._lost_to(found)
            self.info, self.written = info, sent
            return True

    def verify(self) -> bool:
        """Read the lock back: True while it is still ours; False (and ``lost`` set) once it was broken (``inv
        unlock``) or taken over. A read that fails raises, as a renewal's write does."""
        with self._mutex:
            if self.lost:
                return False
            found = self.lock.read()
            if found is not None and found.info.token == self.info.token:
                return True
            return self._lost_to(found)

    def _lost_to(self, found: Found | None) -> bool:
        """Note that the lock is no longer ours (``found``: who holds it now, if anyone); False."""
        holder = found.describe(self.lock.clock.now()) if found else "nobody holds it"
        self.lost = f"the lock of {self.lock.env!r} was broken or taken over while this deploy ran ({holder})"
        return False

    def check(self) -> None:
        """Between two steps of a deploy: :class:`LockLost` when the lock is no longer ours (broken, taken over), or
        its lease ran out unrenewed (renewals failing): another deploy may hold it now, and this one must stop. What
        the renewals last knew, read without waiting for one under way (a stalled S3 call holds the state's mutex);
        a lease that ran out is still released (the delete is conditional on what we wrote). The lease is counted on
        the clock's monotonic time from before our last write that went through, so that no change of this machine's
        wall clock, nor its disagreeing with others', lets the deploy run on once others may take the lock."""
        lost = self.lost
        if lost is None and self.lock.clock.monotonic() - self.written >= self.lock.lease - LEASE_MARGIN:
            lost = (
                f"the lease of the lock of {self.lock.env!r} ran out unrenewed (its renewals failed, or none could "
                "run: this machine asleep, an AWS call stalled)"
            )
        if lost is not None:
            raise LockLost(
                f"{lost}: the deploy stops here, another may be running",
                next_step=f"see who holds it and what is live: inv history --env {self.lock.env}; rerun once it is "
                "free",
            )

    def start_renewing(
        self,
        every: float | None = None,
        on_error: Callable[[str], None] | None = None,
        *,
        verify_every: float = VERIFY_EVERY,
    ) -> None:
        """Renew every ``every`` seconds (default lease / 3) on a daemon thread until :meth:`release`, and read the
        lock back every ``verify_every`` seconds between renewals (:meth:`verify`)."""
        interval = every if every is not None else self.lock.lease / 3

        def loop() -> None:
            renew_at = time.monotonic() + interval
            pause = min(interval, verify_every)
            while not self._stop.wait(pause):
                due = time.monotonic() >= renew_at
                try:
                    if not (self.renew() if due else self.verify()):
                        if on_error and self.lost:
                            on_error(self.lost)
                        return
                except Exception as exc:  # a network blip: tried again soon, well before the lease runs out
                    if not due:  # a read back that failed: the next one, in turn
                        pause = max(0.0, min(verify_every, renew_at - time.monotonic()))
                        continue
                    pause = min(interval, RENEW_RETRY)
                    if on_error:
                        on_error(f"renewing the deploy lock failed (retrying in {pause:g}s): {exc}")
                    continue
                if due:
                    renew_at = time.monotonic() + interval
                pause = max(0.0, min(verify_every, renew_at - time.monotonic()))

        self._thread = threading.Thread(target=loop, name=f"deploykit-lock-{self.lock.env}", daemon=True)
        self._thread.start()

    def stop_renewing(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()
        self._thread = None

    def release(self) -> bool:
        """Stop renewing; delete the lock if it is still what we last wrote (its ETag). False when it no longer was."""
        self.stop_renewing()
        with self._mutex:
            if self.lost:
                return False
            try:  # one call: the delete is conditional on the ETag of what we last wrote
                released = self.lock.break_(Found(self.info, self.etag))
                if not released:  # the lock changed since we wrote it, or is gone (by another; or by us, when the
                    found = self.lock.read()  # answer to our delete was lost: the two cannot be told apart)
                    if found is not None and found.info.token == self.info.token:  # ours still: a renewal went
                        released = self.lock.break_(found)  # through whose answer was lost
            except ClientError as exc:
                if _code(exc) == "NoSuchBucket":
                    return False
                raise
            if not released:
                self.lost = "the lock was broken or taken over while this deploy ran"
            return released


@contextmanager
def held(
    aws: AwsFactory,
    env: EnvConfig,
    command: str,
    *,
    clock: Clock | None = None,
    lease: float = LEASE_SECONDS,
    renew_every: float | None = None,
    warn: Callable[[str], None] | None = None,
) -> Iterator[Lease | None]:
    """Hold the environment's lock while the block runs (renewed every lease / 3), released however it ends.

    Refuses with a UsageError when another deploy holds it. Yields None, holding nothing, when the environment
    has no artifacts bucket yet (its registry stack is not deployed: there is nowhere to hold a lock)."""
    lock = EnvLock.of(aws, env, clock=clock, lease=lease)
    if lock is None:
        yield None
        return
    lease_ = lock.acquire(command)
    try:
        lease_.start_renewing(renew_every, on_error=warn)
        yield lease_
    finally:
        with shielded():  # a Ctrl-C now stops the command once the lock is let go (or said), never with it held
            lost_while_running = lease_.lost  # already reported by the renewing thread
            try:
                lease_.release()
            except (BotoCoreError, ClientError) as exc:  # never hide the deploy's own outcome behind a failed release
                if warn:
                    warn(
                        f"the deploy lock of {env.name!r} could not be released ({exc}); it expires with its lease "
                        f"(within {duration(lease)}): to free it now, inv unlock --env {env.name}"
                    )
            if warn and lease_.lost and not lost_while_running:
                warn(lease_.lost)
