"""Deploy freezes: an environment closed to deploys for a while (a sales weekend, an audit, an incident).

A freeze lives in the environment itself, beside its lock, so every laptop and CI job sees it: the S3 object
``deploykit/freeze/<env>.json`` in the artifacts bucket, saying who froze it, why, since when and (optionally)
until when. ``inv freeze`` writes it, ``inv unfreeze`` deletes it; one whose ``until`` has passed is over by itself.

While it holds, every command that deploys a component (``deploy.auto``, ``deploy.app``, ``deploy.stack``,
``deploy.lambda``, ``deploy.full``, ``roll-service``) and ``destroy`` is refused once it holds the lock, before any
step runs (exit 2, nothing changed). The freeze is read while the lock is taken, so a deploy pays no round trip
for it. What puts things back is never refused: ``inv rollback`` and the automatic rollback after a failed deploy
(a freeze keeps releases out, not fixes of a release that broke), nor the cleanups. ``$DEPLOYKIT_ALLOW_FROZEN=1``
deploys anyway, for one run (the fix the freeze's owner agreed to), saying so.

A freeze that comes back (no deploys over the weekend) is a window of deploy.toml
(:class:`deploykit.config.FreezeWindow`): :func:`in_force` makes it a :class:`Freeze` while it lasts, so it is refused,
said and overridden the same way; ``inv unfreeze`` does not end it.

**A freeze's end is judged by S3's clock** when S3 gives its time, so machines whose clocks disagree (a laptop 15
minutes ahead, one behind) agree on it: ``inv freeze`` counts ``since`` and ``--until 2h`` from S3's time, the
``Date`` of the answer to its read of the freeze it replaces (there or not: no extra call), and a freeze read is judged
at the ``Date`` of that read's answer (:attr:`Freeze.served`), as the lock's lease is (deploykit.lock). A store that
sends no ``Date`` is judged, and written, by this machine's clock as before. The windows of deploy.toml are wall times
of a time zone, judged by this machine's clock.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from deploykit import stored
from deploykit.aws import AwsFactory
from deploykit.config import EnvConfig
from deploykit.errors import UsageError
from deploykit.switches import switch, switched_on

PREFIX = "deploykit/freeze/"
OVERRIDE_ENV = switch("DEPLOYKIT_ALLOW_FROZEN")


@dataclass(frozen=True)
class Freeze:
    """What a freeze object says."""

    owner: str
    reason: str
    since: datetime
    until: datetime | None = None  # None: until inv unfreeze
    window: str = ""  # a freeze window of deploy.toml ("Fri 15:00 – Mon 08:00 Europe/Berlin"); "": inv freeze's
    # S3's time when the freeze was read (the Date of the GetObject answer): what holds() judges by; None when S3 sent
    # none (this machine's clock then), or the freeze was not read (made, or a window)
    served: datetime | None = field(default=None, compare=False)

    def to_json(self) -> dict[str, Any]:
        return {
            "owner": self.owner,
            "reason": self.reason,
            "since": self.since.isoformat(timespec="seconds"),
            "until": self.until.isoformat(timespec="seconds") if self.until else None,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Freeze:
        since = stored.moment(data.get("since")) or datetime.fromtimestamp(0).astimezone()
        until = stored.moment(data.get("until"))
        return cls(str(data.get("owner") or "?"), str(data.get("reason") or "?"), since, until)

    def holds(self, now: datetime) -> bool:
        """Whether the environment is frozen (a freeze with an ``until`` in the past is over): judged at S3's time of
        its read (:attr:`served`) when S3 gave it, whatever this machine's clock says, else at ``now`` (this
        machine's)."""
        return self.until is None or (self.served or now) < self.until

    def describe(self, env: str) -> str:
        return f"{env} is frozen {self.said()}"

    def said(self) -> str:
        """By whom, since and until when, and why: ``by lead since ... until ...: the reason``."""
        until = f" until {stored.shown(self.until)}" if self.until else " until inv unfreeze"
        by = f"deploy.toml's freeze window {self.window}" if self.window else self.owner
        return f"by {by} since {stored.shown(self.since)}{until}: {self.reason}"


def in_force(kept: Freeze | None, env: EnvConfig, now: datetime) -> Freeze | None:
    """What freezes ``env`` at ``now`` (this machine's time): ``kept`` (inv freeze's, as read) while it holds (by
    S3's clock when its read gave it: :meth:`Freeze.holds`), else the first of its freeze windows that ``now`` is in
    (deploy.toml), else None."""
    if kept is not None and kept.holds(now):
        return kept
    for window in env.freeze_windows:
        around = window.around(now)
        if around is not None:
            return Freeze("deploy.toml", window.reason, around[0], around[1], window=str(window))
    return None


def key(env: str) -> str:
    return f"{PREFIX}{env}.json"


def read(aws: AwsFactory, env: EnvConfig, bucket: str | None = None) -> Freeze | None:
    """The environment's freeze as stored (over or not), with S3's time of the read; None when there is none, or no
    artifacts bucket yet."""
    return read_served(aws, env, bucket)[0]


def read_served(aws: AwsFactory, env: EnvConfig, bucket: str | None = None) -> tuple[Freeze | None, datetime | None]:
    """:func:`read`, and S3's time when it answered, the freeze there or not (None: S3 sent none, or there is no
    artifacts bucket): the time a freeze made now counts from."""
    data, served = stored.read_served(aws, env, key(env.name), bucket)
    return (None if data is None else replace(Freeze.from_json(data), served=served)), served


def write(aws: AwsFactory, env: EnvConfig, freeze: Freeze) -> None:
    """Freeze the environment (a freeze already there is replaced). UsageError when it has no artifacts bucket."""
    stored.write_json(aws, env, key(env.name), freeze.to_json(), nothing_to="freeze")


def delete(aws: AwsFactory, env: EnvConfig) -> None:
    stored.delete(aws, env, key(env.name), nothing_to="freeze")


def overridden(environ: Mapping[str, str] | None = None) -> bool:
    """Whether this run deploys in spite of a freeze (``$DEPLOYKIT_ALLOW_FROZEN=1``)."""
    return switched_on(OVERRIDE_ENV, environ)


def refusal(freeze: Freeze, env: EnvConfig, command: str) -> UsageError:
    """The refusal of ``command`` (a plan's title) while ``freeze`` holds."""
    what = f"destroy {env.name}" if command.startswith("destroy") else f"deploy to {env.name}"
    ask = (
        f"change the window (freeze_windows of [environments.{env.name}] in deploy.toml)"
        if freeze.window
        else f"ask {freeze.owner} (inv unfreeze --env {env.name} ends it)"
    )
    return UsageError(
        f"refusing to {what}: {freeze.describe(env.name)}. Nothing was changed",
        next_step=f"wait until it is over, or {ask}; a fix agreed for the freeze deploys anyway with {OVERRIDE_ENV}=1; "
        f"inv rollback --env {env.name} is never refused",
    )
