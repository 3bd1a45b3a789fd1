"""One deploy at a time: the environment's lock in its artifacts bucket (moto's S3 and CloudFormation)."""

from __future__ import annotations

import dataclasses
import io
import json
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any, ClassVar
from unittest.mock import Mock

import boto3
import botocore.exceptions
import pytest
from botocore.exceptions import ClientError
from botocore.response import StreamingBody
from botocore.stub import ANY, Stubber
from invoke.context import Context as InvokeContext
from invoke.exceptions import Exit
from moto.server import ThreadedMotoServer

from deploykit import commands, history, lock
from deploykit.aws import AwsFactory
from deploykit.clock import FakeClock, SystemClock
from deploykit.config import EnvConfig, load_config
from deploykit.errors import DeployKitError, Interrupted, StepFailed, Superseded, UsageError
from deploykit.hookspecs import hookimpl
from deploykit.plan import Context, Outcome, Parallel, Plan, RunReport, Step
from deploykit.plugins import get_plugin_manager
from tests.conftest import REPO, git
from tests.functional.conftest import ARTIFACTS_BUCKET as BUCKET
from tests.functional.test_cli import inv as cli_inv
from tests.functional.test_endpoints import create_stack

KEY = "deploykit/lock/dev.json"
T0 = datetime(2026, 11, 28, 9, 0, tzinfo=UTC)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(start=T0)


def s3() -> Any:
    return boto3.client("s3", region_name="eu-west-1")


def stored() -> tuple[dict[str, Any], str] | None:
    """The lock object as S3 holds it (content, ETag); None when there is none."""
    try:
        answer = s3().get_object(Bucket=BUCKET, Key=KEY)
    except ClientError:
        return None
    return json.loads(answer["Body"].read()), str(answer["ETag"])


def env_lock(dev_env: EnvConfig, clock: FakeClock, lease: float = 600.0) -> lock.EnvLock:
    found = lock.EnvLock.of(AwsFactory(dev_env), dev_env, clock=clock, lease=lease)
    assert found is not None
    return found


def as_actor(monkeypatch: pytest.MonkeyPatch, who: str) -> None:
    monkeypatch.setenv(history.ACTOR_ENV, who)


# -- the lock itself -------------------------------------------------------------------------------------------


def test_moto_supports_the_conditional_writes_the_lock_relies_on(bucket: str) -> None:
    """If-None-Match: * on create, If-Match on overwrite and on delete: a stale condition is refused (412)."""
    client = s3()
    first = client.put_object(Bucket=BUCKET, Key=KEY, Body=b"1", IfNoneMatch="*")["ETag"]
    with pytest.raises(ClientError) as created_twice:
        client.put_object(Bucket=BUCKET, Key=KEY, Body=b"2", IfNoneMatch="*")
    assert created_twice.value.response["Error"]["Code"] == "PreconditionFailed"
    second = client.put_object(Bucket=BUCKET, Key=KEY, Body=b"2", IfMatch=first)["ETag"]
    with pytest.raises(ClientError) as stale_write:
        client.put_object(Bucket=BUCKET, Key=KEY, Body=b"3", IfMatch=first)
    assert stale_write.value.response["Error"]["Code"] == "PreconditionFailed"
    with pytest.raises(ClientError) as stale_delete:
        client.delete_object(Bucket=BUCKET, Key=KEY, IfMatch=first)
    assert stale_delete.value.response["Error"]["Code"] == "PreconditionFailed"
    client.delete_object(Bucket=BUCKET, Key=KEY, IfMatch=second)
    assert stored() is None


def test_acquire_writes_who_holds_it_and_release_deletes_it(
    bucket: str, dev_env: EnvConfig, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    as_actor(monkeypatch, "ana@laptop")
    lease = env_lock(dev_env, clock).acquire("deploy.app")
    found = stored()
    assert found is not None
    data, etag = found
    assert data == {
        "owner": "ana@laptop",
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "command": "deploy.app",
        "started": "2026-11-28T09:00:00+00:00",
        "expires": "2026-11-28T09:10:00+00:00",
        "token": lease.info.token,
        "lease": 600.0,
    }
    assert etag == lease.etag and lease.previous is None and len(lease.info.token) == 32
    assert lease.release() is True
    assert stored() is None
    assert env_lock(dev_env, clock).acquire("deploy.app").release() is True  # free again


def written_then(held: lock.EnvLock, exc: BaseException) -> None:
    """S3 takes the lock's first write, and its answer is lost: ``exc`` is raised in its place."""
    lost: list[bool] = []

    def after(model: Any, **_: Any) -> None:
        if model.name == "PutObject" and not lost:
            lost.append(True)
            raise exc

    held.s3.meta.events.register("after-call.s3.PutObject", after)


def test_a_lock_written_whose_answer_was_lost_is_held_or_after_an_interrupt_deleted(
    bucket: str, dev_env: EnvConfig, clock: FakeClock
) -> None:
    """The run failed on the write's lost answer, and its lock, written all the same, held the environment for its
    lease (the plain rerun refused, naming a pid that was gone): the lock is read back, and when it is this run's,
    the run holds it; after Ctrl-C it is deleted. A refusal (4xx) was not written, and stands."""
    held = env_lock(dev_env, clock)
    written_then(held, botocore.exceptions.ReadTimeoutError(endpoint_url="https://s3.eu-west-1.amazonaws.com"))
    lease = held.acquire("deploy.app")
    found = stored()
    assert found is not None and found[0]["token"] == lease.info.token and found[1] == lease.etag
    assert lease.release() is True and stored() is None

    held = env_lock(dev_env, clock)
    written_then(held, KeyboardInterrupt())
    with pytest.raises(KeyboardInterrupt):
        held.acquire("deploy.app")
    assert stored() is None

    held = env_lock(dev_env, clock)
    refused = ClientError({"Error": {"Code": "AccessDenied"}, "ResponseMetadata": {"HTTPStatusCode": 403}}, "PutObject")
    written_then(held, refused)
    with pytest.raises(ClientError):
        held.acquire("deploy.app")
    assert stored() is not None  # moto took it; S3 would not have: what a 4xx says is believed, the lock not read


def test_acquire_and_release_are_one_call_each_when_nobody_holds_the_lock(
    bucket: str, dev_env: EnvConfig, clock: FakeClock
) -> None:
    """What every deploy pays: the conditional create, then the conditional delete; no reads first."""
    lock = env_lock(dev_env, clock)
    calls: list[str] = []
    lock.s3.meta.events.register(
        "before-parameter-build.s3", lambda event_name, **_: calls.append(event_name.rsplit(".", 1)[-1])
    )
    assert lock.acquire("deploy.app").release() is True
    assert calls == ["PutObject", "DeleteObject"] and stored() is None


def test_a_second_deploy_is_refused_with_who_holds_it_and_the_lock_is_untouched(
    bucket: str, dev_env: EnvConfig, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    as_actor(monkeypatch, "ana@laptop")
    env_lock(dev_env, clock).acquire("deploy.app")
    before = stored()
    clock.sleep(90)
    as_actor(monkeypatch, "ci")
    with pytest.raises(UsageError) as refused:
        env_lock(dev_env, clock).acquire("deploy.lambda login_handler")
    assert refused.value.exit_code == 2
    assert refused.value.message == (
        "another deploy holds the lock of environment 'dev': ana@laptop has been running 'deploy.app' on "
        f"{socket.gethostname()} (pid {os.getpid()}) since 2026-11-28T09:00:00Z (1m30s ago); "
        "its lease expires at 2026-11-28T09:10:00Z (in 8m30s) unless renewed"
    )
    assert refused.value.next_step is not None
    assert "wait for it to finish" in refused.value.next_step
    assert refused.value.next_step.endswith("break the lock: inv unlock --env dev")
    assert stored() == before


def test_an_expired_lock_is_taken_over_and_its_old_holder_cannot_release_the_new_one(
    bucket: str, dev_env: EnvConfig, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    as_actor(monkeypatch, "killed@laptop")
    dead = env_lock(dev_env, clock).acquire("deploy.full")  # its process was killed: no release, no renewal
    clock.sleep(599)
    with pytest.raises(UsageError, match="killed@laptop"):
        env_lock(dev_env, clock).acquire("deploy.app")  # one second before the lease runs out: still held
    clock.sleep(1)
    as_actor(monkeypatch, "ci")
    taker = env_lock(dev_env, clock).acquire("deploy.app")
    assert taker.previous == dead.info
    found = stored()
    assert found is not None
    assert found[0]["owner"] == "ci" and found[0]["token"] == taker.info.token
    assert found[0]["expires"] == "2026-11-28T09:20:00+00:00"

    assert dead.release() is False  # not ours any more: the new holder's lock stays
    assert dead.lost is not None and "broken or taken over" in dead.lost
    assert stored() == found
    assert dead.renew() is False and stored() == found
    assert taker.release() is True and stored() is None


def test_two_takers_of_the_same_expired_lock_exactly_one_wins(
    bucket: str, dev_env: EnvConfig, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both read the stale lock before either writes: the write conditional on its ETag lets one through."""
    env_lock(dev_env, clock).acquire("deploy.full")
    clock.sleep(3600)
    first, second = env_lock(dev_env, clock), env_lock(dev_env, clock)
    stale = second.read()
    assert stale is not None and stale.info.expired(clock.now())
    reads = iter([stale])
    real_read = second.read
    monkeypatch.setattr(second, "read", lambda: next(reads, None) or real_read())  # its first read is the stale one

    as_actor(monkeypatch, "ana@laptop")
    winner = first.acquire("deploy.app")
    as_actor(monkeypatch, "bob@desktop")
    with pytest.raises(UsageError) as refused:
        second.acquire("deploy.stack api")
    # the loser's write on the stale ETag failed; it looked again and found the winner's live lock
    assert "ana@laptop has been running 'deploy.app'" in refused.value.message
    found = stored()
    assert found is not None and found[0]["token"] == winner.info.token and found[1] == winner.etag


def test_renewal_pushes_expires_one_lease_ahead_and_keeps_the_lock(
    bucket: str, dev_env: EnvConfig, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    as_actor(monkeypatch, "ana@laptop")
    lease = env_lock(dev_env, clock).acquire("deploy.full")
    clock.sleep(200)
    assert lease.renew() is True
    found = stored()
    assert found is not None
    data, etag = found
    assert data["expires"] == "2026-11-28T09:13:20+00:00"  # 09:03:20 + 10 minutes
    assert data["started"] == "2026-11-28T09:00:00+00:00" and data["token"] == lease.info.token
    assert etag == lease.etag
    clock.sleep(500)  # 09:11:40: past the first lease, within the renewed one
    with pytest.raises(UsageError, match=r"expires at 2026-11-28T09:13:20Z \(in 1m40s\)"):
        env_lock(dev_env, clock).acquire("deploy.app")
    assert lease.release() is True


def test_the_holder_renews_on_a_thread_while_it_runs(
    bucket: str, dev_env: EnvConfig, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    lease = env_lock(dev_env, clock).acquire("deploy.full")
    lease.start_renewing(every=0.02)
    clock.sleep(1000)
    deadline = time.monotonic() + 10
    while (found := stored()) is not None and found[0]["expires"] != "2026-11-28T09:26:40+00:00":
        assert time.monotonic() < deadline, f"never renewed: {found}"
        time.sleep(0.01)
    assert lease.release() is True and stored() is None
    assert lease._thread is None  # the renewing thread has ended


def test_a_holder_reads_its_lock_back_between_renewals_and_stops_once_it_was_broken(
    bucket: str, dev_env: EnvConfig, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """inv unlock of a deploy thought dead, which was not: it went on beside the next holder until its next renewal,
    a third of the lease later (200 s). It reads the lock back between renewals (every 15 s; here 0.02 s)."""
    mine = env_lock(dev_env, clock).acquire("deploy.auto")
    said: list[str] = []
    mine.start_renewing(every=1000, on_error=said.append, verify_every=0.02)
    time.sleep(0.2)  # several reads back, each finding its own lock
    mine.check()
    assert mine.lost is None and said == []
    broken = env_lock(dev_env, clock).read()
    assert broken is not None and env_lock(dev_env, clock).break_(broken) is True
    as_actor(monkeypatch, "bob@desktop")
    theirs = env_lock(dev_env, clock).acquire("deploy.app")
    deadline = time.monotonic() + 10
    while mine.lost is None:
        assert time.monotonic() < deadline, "the broken lock was never noticed"
        time.sleep(0.01)
    with pytest.raises(lock.LockLost, match="was broken or taken over while this deploy ran"):
        mine.check()
    assert said == [mine.lost]
    found = stored()
    assert mine.release() is False and stored() == found  # bob's lock stays
    assert theirs.release() is True


def test_a_renewal_never_overwrites_a_lock_someone_else_now_holds(
    bucket: str, dev_env: EnvConfig, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    mine = env_lock(dev_env, clock).acquire("deploy.full")
    broken = env_lock(dev_env, clock).read()
    assert broken is not None and env_lock(dev_env, clock).break_(broken) is True  # inv unlock, by mistake
    as_actor(monkeypatch, "bob@desktop")
    theirs = env_lock(dev_env, clock).acquire("deploy.app")
    found = stored()
    assert mine.renew() is False
    assert mine.lost is not None and "bob@desktop has been running 'deploy.app'" in mine.lost
    assert stored() == found
    assert mine.release() is False and stored() == found
    assert theirs.release() is True


class AnswerLost:
    """An S3 client whose next ``operation`` goes through, and whose answer is lost: the SDK's retry of it is what
    answers (a 412 for a conditional write that already happened, a 404 for a delete), as a read timeout makes it."""

    def __init__(self, client: Any, operation: str) -> None:
        self.client, self.operation, self.armed = client, operation, True

    def __getattr__(self, name: str) -> Any:
        real = getattr(self.client, name)
        if name != self.operation or not self.armed:
            return real

        def through_then_refused(**kwargs: Any) -> Any:
            self.armed = False
            real(**kwargs)
            return real(**kwargs)  # the retry: refused by the condition the first attempt already met

        return through_then_refused


def test_a_write_whose_answer_was_lost_is_ours_not_another_deploys(
    bucket: str, dev_env: EnvConfig, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A conditional write retried after its answer was lost is refused (412): the lock then holds our token.
    Taking and renewing it read it back and see that it is ours (the deploy refused itself, or lost its own lock
    and left it behind for the lease); a release after such a renewal deletes it."""
    as_actor(monkeypatch, "ana@laptop")
    taking = env_lock(dev_env, clock)
    taking.s3 = AnswerLost(taking.s3, "put_object")  # the first write of acquire
    lease = taking.acquire("deploy.full")
    assert stored() is not None and stored()[0]["token"] == lease.info.token  # type: ignore[index]
    lease.lock.s3 = AnswerLost(s3(), "put_object")
    clock.sleep(200)
    assert lease.renew() is True and lease.lost is None  # a put_object answer lost: still ours, renewed
    assert stored()[0]["expires"] == "2026-11-28T09:13:20+00:00"  # type: ignore[index]
    lease.etag = '"an-etag-of-before"'  # a renewal whose answer was lost: the ETag we hold is not the lock's
    assert lease.release() is True and lease.lost is None and stored() is None


def test_a_deploy_whose_lock_ran_out_stops_before_its_next_step_and_puts_nothing_back(
    bucket: str, project: Path, clock: FakeClock
) -> None:
    """Renewals failing until the lease ran out (another deploy may have taken the lock since): the run stops before
    its next step that changes what is live (exit 1: what ran before may have changed it), with no automatic
    rollback (it would change what runs without the lock)."""

    @dataclass(frozen=True)
    class Slow(Probe):
        def run(self, ctx: Context) -> Outcome:
            clock.sleep(601)  # no renewal got through meanwhile
            return super().run(ctx)

    first, second = Slow(), Probe()
    plan = Plan("dev", (first, second), "deploy.demo", deploys=(("lambda:login_handler", "dddddddddddd"),))
    runtime = commands.Runtime(
        config_path=project / "deploy.toml", stdout=io.StringIO(), stderr=io.StringIO(), clock=clock
    )
    config = load_config(project / "deploy.toml")
    with pytest.raises(lock.LockLost) as lost:
        commands.run_plan(runtime, config, config.environment("dev"), plan, dry_run=False, as_json=False, rollback=True)
    assert lost.value.exit_code == 1
    assert lost.value.message == (
        "the lease of the lock of 'dev' ran out unrenewed (its renewals failed, or none could run: this machine "
        "asleep, an AWS call stalled): the deploy stops here, another may be running"
    )
    assert len(first.seen) == 1 and second.seen == []
    assert "⏹  the lease of the lock" in runtime.stderr.getvalue()  # type: ignore[attr-defined]
    assert stored() is None  # released all the same: nobody else took it (the delete is conditional on ours)


def test_a_lock_lost_during_the_last_step_fails_the_run_and_leaves_the_live_record(
    bucket: str, project: Path, clock: FakeClock
) -> None:
    """The last step ran on after the lease ran out: what it left may not be what is live (another deploy may have
    taken the lock and deployed), so the run fails and the live record is left as it was."""

    @dataclass(frozen=True)
    class Slow(Probe):
        def run(self, ctx: Context) -> Outcome:
            clock.sleep(601)
            return super().run(ctx)

    runtime = commands.Runtime(
        config_path=project / "deploy.toml", stdout=io.StringIO(), stderr=io.StringIO(), clock=clock
    )
    config = load_config(project / "deploy.toml")
    with pytest.raises(lock.LockLost):
        commands.run_plan(runtime, config, config.environment("dev"), deploying(Slow()), dry_run=False, as_json=False)
    store = history.History.of(AwsFactory(config.environment("dev")), config.environment("dev"))
    assert store is not None
    [record] = store.records()
    assert not record.ok and "lambda:login_handler" not in store.live()


def test_a_lease_lost_to_another_deploy_stops_the_next_step(
    bucket: str, dev_env: EnvConfig, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    mine = env_lock(dev_env, clock).acquire("deploy.full")
    mine.check()  # ours: nothing said
    broken = env_lock(dev_env, clock).read()
    assert broken is not None and env_lock(dev_env, clock).break_(broken) is True  # inv unlock, by mistake
    as_actor(monkeypatch, "bob@ci")
    env_lock(dev_env, clock).acquire("deploy.auto")
    assert mine.renew() is False  # the renewing thread finds it
    with pytest.raises(lock.LockLost, match=r"bob@ci has been running 'deploy\.auto'.*: the deploy stops here"):
        mine.check()


def test_held_does_without_a_lock_when_the_environment_has_no_artifacts_bucket(
    moto_aws: None, dev_env: EnvConfig, clock: FakeClock
) -> None:
    with lock.held(AwsFactory(dev_env), dev_env, "deploy.full", clock=clock) as lease:
        assert lease is None


def test_held_releases_when_the_block_raises(bucket: str, dev_env: EnvConfig, clock: FakeClock) -> None:
    with pytest.raises(KeyboardInterrupt), lock.held(AwsFactory(dev_env), dev_env, "deploy.app", clock=clock) as lease:
        assert lease is not None and stored() is not None
        raise KeyboardInterrupt
    assert stored() is None


# -- run_plan holds it -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Probe(Step):
    """A step that notes what the lock object held while it ran (so: whether it ran); then raises ``then``."""

    name: ClassVar[str] = "probe"
    then: BaseException | None = None
    seen: list[dict[str, Any] | None] = field(default_factory=list, compare=False)

    def describe(self) -> str:
        return "probe"

    def inputs(self) -> dict[str, object]:
        return {}

    def run(self, ctx: Context) -> Outcome:
        found = stored()
        self.seen.append(None if found is None else found[0])
        if self.then is not None:
            raise self.then
        return Outcome.done("probed")


def run(project: Path, plan: Plan, clock: FakeClock, *, dry_run: bool = False) -> commands.Runtime:
    runtime = commands.Runtime(
        config_path=project / "deploy.toml", stdout=io.StringIO(), stderr=io.StringIO(), clock=clock
    )
    config = load_config(project / "deploy.toml")
    commands.run_plan(runtime, config, config.environment("dev"), plan, dry_run=dry_run, as_json=False)
    return runtime


def deploying(step: Step, title: str = "deploy.demo") -> Plan:
    return Plan("dev", (step,), title, deploys=(("lambda:login_handler", "dddddddddddd"),))


def test_a_plan_that_builds_is_refused_before_its_first_step_when_the_docker_engine_is_not_running(
    bucket: str, project: Path, clock: FakeClock
) -> None:
    """A first deploy's stacks deploy beside its build: with no engine, the registry stack was created, then the
    build found none (exit 1). The engine is asked for before the first step: exit 2, nothing run, no lock taken."""
    from deploykit.app_chain import BuildImage
    from deploykit.errors import EnvironmentNotReady

    probe = Probe()
    build = BuildImage("backend", "Dockerfile", "car-rental-backend:abc", "base:1", "abc", "")
    engine = Mock(side_effect=EnvironmentNotReady("the Docker engine is not answering", next_step="start it"))
    runtime = commands.Runtime(
        config_path=project / "deploy.toml",
        stdout=io.StringIO(),
        stderr=io.StringIO(),
        clock=clock,
        docker_factory=engine,
    )
    config = load_config(project / "deploy.toml")
    plan = Plan("dev", (Parallel((probe, build)),), "deploy.full", deploys=(("app", "abc"),))
    with pytest.raises(EnvironmentNotReady) as refused:
        commands.run_plan(runtime, config, config.environment("dev"), plan, dry_run=False, as_json=False)
    assert refused.value.exit_code == 2
    assert probe.seen == [] and stored() is None and engine.call_count == 1

    engine = Mock(side_effect=AssertionError("no step of it uses the engine"))
    runtime = dataclasses.replace(runtime, docker_factory=engine)
    commands.run_plan(runtime, config, config.environment("dev"), deploying(probe), dry_run=False, as_json=False)
    assert probe.seen and engine.call_count == 0


def test_run_plan_holds_the_lock_while_it_executes_and_releases_it(
    bucket: str, project: Path, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    as_actor(monkeypatch, "ana@laptop")
    probe = Probe()
    run(project, deploying(probe), clock)
    [seen] = probe.seen
    assert seen is not None and (seen["owner"], seen["command"]) == ("ana@laptop", "deploy.demo")
    assert stored() is None


def test_run_plan_is_refused_while_another_deploy_holds_the_lock_and_leaves_it_untouched(
    bucket: str, dev_env: EnvConfig, project: Path, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    as_actor(monkeypatch, "ci")
    env_lock(dev_env, clock).acquire("deploy.auto")
    before = stored()
    as_actor(monkeypatch, "ana@laptop")
    for plan in (deploying(Probe()), Plan("dev", (Probe(),), "destroy")):
        with pytest.raises(UsageError, match=r"ci has been running 'deploy\.auto'") as refused:
            run(project, plan, clock)
        assert refused.value.next_step is not None and "inv unlock --env dev" in refused.value.next_step
        assert isinstance(plan.steps[0], Probe) and plan.steps[0].seen == []  # nothing ran
    assert stored() == before
    store = history.History.of(AwsFactory(dev_env), dev_env)
    assert store is not None and store.records() == []  # nothing recorded either


class Meanwhile(FakeClock):
    """A clock whose sleeps are where other deploys act: ``then[n]`` runs at the n-th sleep (1 the first)."""

    def __init__(self, then: dict[int, Any]) -> None:
        super().__init__(start=T0)
        self.then = then

    def sleep(self, seconds: float) -> None:
        super().sleep(seconds)
        if len(self.sleeps) in self.then:
            self.then[len(self.sleeps)]()


def waiting(project: Path, plan: Plan, clock: FakeClock) -> tuple[commands.Runtime, int]:
    """run_plan under commands.until_unlocked, as every inv task runs; the runtime and how often it started."""
    runtime = commands.Runtime(
        config_path=project / "deploy.toml", stdout=io.StringIO(), stderr=io.StringIO(), clock=clock
    )
    config = load_config(project / "deploy.toml")
    starts = 0

    def call() -> None:
        nonlocal starts
        starts += 1
        commands.run_plan(runtime, config, config.environment("dev"), plan, dry_run=False, as_json=False)

    commands.until_unlocked(call, runtime)
    return runtime, starts


def test_a_deploy_allowed_to_wait_starts_again_once_the_other_lets_the_lock_go(
    bucket: str, dev_env: EnvConfig, project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """$DEPLOYKIT_LOCK_WAIT: refused at first, the command looks at the lock (0.5 s, then ever less often) until
    the other deploy releases it, then starts again from the beginning, takes the lock and runs."""
    as_actor(monkeypatch, "ci")
    held = env_lock(dev_env, FakeClock(start=T0)).acquire("deploy.auto")
    monkeypatch.setenv(lock.WAIT_ENV, "2m")
    as_actor(monkeypatch, "ana@laptop")
    clock = Meanwhile({3: held.release})
    probe = Probe()
    runtime, starts = waiting(project, deploying(probe), clock)
    said = runtime.stderr.getvalue()  # type: ignore[attr-defined]
    assert "⏳ waiting up to 2m00s for the lock of 'dev': ci has been running 'deploy.auto'" in said
    assert "🔓 the lock of 'dev' is free after 4s: starting again, what is live read anew" in said
    assert clock.sleeps == [0.5, 1.0, 2.0]  # looked at four times: held, held, held, free
    assert starts == 2 and len(probe.seen) == 1 and probe.seen[0] is not None
    assert probe.seen[0]["owner"] == "ana@laptop" and stored() is None  # ran under its own lock, released
    store = history.History.of(AwsFactory(dev_env), dev_env)
    assert store is not None and store.records(1)[0].waited == 3.5  # the history keeps the wait (inv report)
    assert "(+4s lock)" in history.table(store.records(1))


def test_a_lock_still_held_when_the_wait_is_over_is_refused_saying_so(
    bucket: str, dev_env: EnvConfig, project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    as_actor(monkeypatch, "ci")
    env_lock(dev_env, FakeClock(start=T0)).acquire("deploy.auto")
    before = stored()
    monkeypatch.setenv(lock.WAIT_ENV, "20")
    clock = Meanwhile({})
    probe = Probe()
    with pytest.raises(
        lock.LockHeld, match=r"the lock of environment 'dev' \(still, after waiting 20s\): ci has"
    ) as refused:
        waiting(project, deploying(probe), clock)
    assert refused.value.exit_code == 2 and "inv unlock --env dev" in (refused.value.next_step or "")
    assert sum(clock.sleeps) == 20 and max(clock.sleeps) <= 5.0  # AWS's poll: at most every 5 s
    assert probe.seen == [] and stored() == before


def test_a_refusal_after_starting_again_counts_the_wait_from_the_first_refusal(
    bucket: str, dev_env: EnvConfig, project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Free at the 3rd look, the command starts again; another deploy took the lock meanwhile, and the wait is over:
    refused saying how long it waited in all (it said nothing of a wait, and to set the variable already set)."""
    as_actor(monkeypatch, "ci")
    held = env_lock(dev_env, FakeClock(start=T0)).acquire("deploy.auto")
    monkeypatch.setenv(lock.WAIT_ENV, "4")

    def release_then_taken() -> None:
        held.release()
        as_actor(monkeypatch, "ci#3")
        env_lock(dev_env, FakeClock(start=T0)).acquire("deploy.auto")
        as_actor(monkeypatch, "ana@laptop")

    clock = Meanwhile({3: release_then_taken})
    with pytest.raises(lock.LockHeld, match=r"\(still, after waiting 4s\): ci#3 has been running") as refused:
        waiting(project, deploying(Probe()), clock)
    assert "DEPLOYKIT_LOCK_WAIT=10m" not in (refused.value.next_step or "")


def test_an_aws_error_while_waiting_is_said_as_for_the_environment(
    bucket: str, dev_env: EnvConfig, project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A look at the lock that AWS refuses (access, throttling) while waiting: deploykit's message (exit 2 for a
    refusal), not botocore's exception and a traceback."""
    as_actor(monkeypatch, "ci")
    env_lock(dev_env, FakeClock(start=T0)).acquire("deploy.auto")
    monkeypatch.setenv(lock.WAIT_ENV, "2m")
    original = lock.EnvLock.read

    def denied(self: lock.EnvLock) -> Any:
        if self.clock.monotonic() > 0:  # the looks of the wait, after the first refusal
            error = {"Error": {"Code": "AccessDenied", "Message": "no"}}
            raise ClientError(error, "GetObject")  # type: ignore[arg-type]
        return original(self)

    monkeypatch.setattr(lock.EnvLock, "read", denied)
    with pytest.raises(DeployKitError) as refused:
        waiting(project, deploying(Probe()), Meanwhile({}))
    assert refused.value.exit_code == 2 and "AWS refused GetObject in 'dev'" in refused.value.message


def test_a_deleted_artifacts_bucket_is_a_refusal_naming_it(bucket: str, dev_env: EnvConfig, clock: FakeClock) -> None:
    """The registry stack still names the bucket, which was deleted: nothing changed, and a rerun cannot help."""
    s3().delete_bucket(Bucket=BUCKET)
    with pytest.raises(UsageError, match=f"the artifacts bucket {BUCKET} of 'dev', where its deploy lock") as refused:
        env_lock(dev_env, clock).acquire("deploy.full")
    assert refused.value.exit_code == 2 and f"aws s3 mb s3://{BUCKET}" in (refused.value.next_step or "")


def test_a_deploy_not_allowed_to_wait_is_refused_at_once_and_told_how_to_wait(
    bucket: str, dev_env: EnvConfig, project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    as_actor(monkeypatch, "ci")
    env_lock(dev_env, FakeClock(start=T0)).acquire("deploy.auto")
    clock = Meanwhile({})
    with pytest.raises(lock.LockHeld) as refused:
        waiting(project, deploying(Probe()), clock)
    assert "(or let the command wait for it: DEPLOYKIT_LOCK_WAIT=10m)" in (refused.value.next_step or "")
    assert clock.sleeps == []


def test_the_wait_ends_when_the_holders_lease_runs_out_and_says_who_took_it_meanwhile(
    bucket: str, dev_env: EnvConfig, project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first holder lets go and another deploy takes the lock (said); that one dies, its lease (30 s) runs out:
    the waiting command takes it over."""
    as_actor(monkeypatch, "ci")
    first = env_lock(dev_env, FakeClock(start=T0)).acquire("deploy.auto")
    monkeypatch.setenv(lock.WAIT_ENV, "5m")

    def another() -> None:
        first.release()
        as_actor(monkeypatch, "bo@laptop")
        env_lock(dev_env, clock, lease=30).acquire("deploy.lambda health_handler")  # then killed: never released
        as_actor(monkeypatch, "ana@laptop")

    clock = Meanwhile({2: another})
    probe = Probe()
    runtime, starts = waiting(project, deploying(probe), clock)
    said = runtime.stderr.getvalue()  # type: ignore[attr-defined]
    assert "⏳ another deploy took the lock of 'dev' meanwhile: bo@laptop has been running 'deploy.lambda" in said
    assert starts == 2 and probe.seen[0] is not None and probe.seen[0]["owner"] == "ana@laptop"
    assert 30 <= sum(clock.sleeps) <= 40


def test_each_look_at_a_held_lock_gives_the_progress_line_its_holder(
    bucket: str, dev_env: EnvConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    as_actor(monkeypatch, "ci")
    held = env_lock(dev_env, FakeClock(start=T0)).acquire("deploy.auto")
    clock = Meanwhile({2: held.release})
    looks: list[str] = []
    env_lock(dev_env, clock).wait_until_free(deadline=60.0, say=looks.append, status=looks.append)
    assert looks == ["held by ci ('deploy.auto')", "held by ci ('deploy.auto')"] and clock.sleeps == [0.5, 1.0]


def test_a_malformed_wait_is_bad_input_and_changes_nothing(
    bucket: str, dev_env: EnvConfig, project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env_lock(dev_env, FakeClock(start=T0)).acquire("deploy.auto")
    before = stored()
    monkeypatch.setenv(lock.WAIT_ENV, "soon")
    with pytest.raises(UsageError, match="DEPLOYKIT_LOCK_WAIT='soon' is not a duration") as refused:
        waiting(project, deploying(Probe()), Meanwhile({}))
    assert refused.value.exit_code == 2 and stored() == before


@dataclass(frozen=True)
class Artifact(Probe):
    """A step that only makes an artifact (a build, an upload): nothing live changes while it runs."""

    name: ClassVar[str] = "artifact"
    artifacts_only: ClassVar[bool] = True


def a_deploy_finished(dev_env: EnvConfig) -> dict[str, dict[str, str]]:
    """Another deploy's successful run, recorded (the live record written): the live record now."""
    store = history.History.of(AwsFactory(dev_env), dev_env)
    assert store is not None
    store.write(
        history.record_of(
            RunReport(Plan("dev", (), "deploy.lambda login_handler"), [], 1.0),
            components={"lambda:login_handler": "c" * 12},
            base={"lambda:login_handler": None},
            head="c" * 12,
            who="ci",
        )
    )
    return store.live()


def planned(project: Path, plan: Plan, clock: FakeClock, planned_from: dict[str, Any]) -> commands.Runtime:
    runtime = commands.Runtime(
        config_path=project / "deploy.toml", stdout=io.StringIO(), stderr=io.StringIO(), clock=clock
    )
    config = load_config(project / "deploy.toml")
    commands.run_plan(
        runtime, config, config.environment("dev"), plan, dry_run=False, as_json=False, planned_from=planned_from
    )
    return runtime


def test_a_plan_made_before_another_deploy_finished_stops_before_it_changes_anything(
    bucket: str, dev_env: EnvConfig, project: Path, clock: FakeClock
) -> None:
    """deploy.auto reads what is live, then takes the lock: another deploy that finished in between changed the
    live record, and the plan, made from the record before, is stale. Under the lock the record is read again; the
    run's artifacts are made meanwhile (named by content, they are of use again), and it stops before its first
    step that changes what is live: nothing recorded, the lock released."""
    now = a_deploy_finished(dev_env)
    artifact, change = Artifact(), Probe()
    plan = Plan("dev", (artifact, change), "deploy.auto", deploys=(("lambda:login_handler", "d" * 12),))
    with pytest.raises(Superseded, match=r"what is live in 'dev' changed since this command read it") as stale:
        planned(project, plan, clock, planned_from={})
    assert "another deploy finished meanwhile (lambda:login_handler - → cccccccccccc)" in stale.value.message
    assert stale.value.exit_code == 2 and len(artifact.seen) == 1 and change.seen == []
    store = history.History.of(AwsFactory(dev_env), dev_env)
    assert store is not None and [r.command for r in store.records()] == ["deploy.lambda login_handler"]
    assert store.live() == now and stored() is None

    runtime = planned(project, plan, clock, planned_from=now)  # made from the record as it is: runs
    assert len(change.seen) == 1 and "⏹" not in runtime.stderr.getvalue()  # type: ignore[attr-defined]


def test_a_superseded_command_starts_again_at_once_a_few_times_at_most() -> None:
    runtime = commands.Runtime(stdout=io.StringIO(), stderr=io.StringIO())
    calls: list[int] = []

    def stale_twice() -> str:
        calls.append(1)
        if len(calls) <= 2:
            raise Superseded("what is live in 'dev' changed since this command read it", next_step="rerun")
        return "deployed"

    assert commands.until_unlocked(stale_twice, runtime) == "deployed" and len(calls) == 3
    assert runtime.stderr.getvalue().count("🔁 what is live in 'dev' changed") == 2  # type: ignore[attr-defined]

    calls.clear()

    def always_stale() -> str:
        calls.append(1)
        raise Superseded("changed", next_step="rerun")

    with pytest.raises(Superseded):
        commands.until_unlocked(always_stale, runtime)
    assert len(calls) == 1 + commands.SUPERSEDED_RESTARTS


@pytest.mark.parametrize(
    "failure", [StepFailed("the rollout failed", next_step="look"), KeyboardInterrupt(), RuntimeError("a bug")]
)
def test_run_plan_releases_the_lock_when_a_step_fails_or_is_interrupted(
    bucket: str, project: Path, clock: FakeClock, failure: BaseException
) -> None:
    probe = Probe(then=failure)
    # an interrupt stops the plan cleanly: it ends as an Interrupted error (exit 130) once the lock is released
    with pytest.raises(Interrupted if isinstance(failure, KeyboardInterrupt) else type(failure)):
        run(project, deploying(probe), clock)
    assert probe.seen and probe.seen[0] is not None  # it was held while the step ran
    assert stored() is None


def test_dry_runs_and_plans_that_change_nothing_never_take_the_lock(
    bucket: str, dev_env: EnvConfig, project: Path, clock: FakeClock
) -> None:
    env_lock(dev_env, clock).acquire("deploy.auto")
    before = stored()
    run(project, deploying(Probe()), clock, dry_run=True)  # held by someone else, and still described
    run(project, Plan("dev", (Probe(),), "destroy"), clock, dry_run=True)
    probe = Probe()
    run(project, Plan("dev", (probe,), "build"), clock)  # builds deploy nothing: no lock needed
    assert len(probe.seen) == 1
    assert stored() == before


def test_run_plan_runs_without_a_lock_on_an_environment_with_no_registry_stack(
    moto_aws: None, project: Path, clock: FakeClock
) -> None:
    probe = Probe()
    run(project, deploying(probe, "deploy.full"), clock)
    assert probe.seen == [None]


# -- inv unlock ------------------------------------------------------------------------------------------------


def test_commands_unlock_says_who_held_it_and_deletes_it_once_confirmed(
    bucket: str, dev_env: EnvConfig, project: Path, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    as_actor(monkeypatch, "ci")
    held = env_lock(dev_env, clock).acquire("deploy.auto")
    before = stored()
    runtime = commands.Runtime(
        config_path=project / "deploy.toml", stdout=io.StringIO(), stderr=io.StringIO(), clock=clock
    )
    asked: list[lock.LockInfo] = []

    def refuse(info: lock.LockInfo) -> bool:
        asked.append(info)
        return False

    assert commands.unlock(env="dev", confirm=refuse, runtime=runtime) is None
    assert asked == [held.info] and stored() == before
    assert commands.unlock(env="dev", confirm=lambda _info: True, runtime=runtime) == held.info
    assert stored() is None
    assert commands.unlock(env="dev", runtime=runtime) is None
    printed = runtime.stderr.getvalue()  # type: ignore[attr-defined]
    assert "🔒 ci has been running 'deploy.auto'" in printed and "Nothing changed: the lock is still held." in printed
    assert "🔓 lock of dev broken: ci's 'deploy.auto' no longer holds it" in printed
    assert printed.rstrip().endswith("🔓 no deploy holds the lock of dev: nothing to unlock")


class FakeStdin(io.StringIO):
    def __init__(self, tty: bool) -> None:
        super().__init__()
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


def test_the_unlock_task_asks_first_and_needs_yes_without_a_terminal(
    bucket: str, dev_env: EnvConfig, project: Path, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(REPO))
    import tasks

    monkeypatch.chdir(project)
    env_lock(dev_env, clock).acquire("deploy.auto")
    before = stored()
    monkeypatch.setattr(sys, "stdin", FakeStdin(tty=False))
    with pytest.raises(Exit) as no_terminal:
        tasks.unlock(InvokeContext(), env="dev")
    assert no_terminal.value.code == 2 and stored() == before

    monkeypatch.setattr(sys, "stdin", FakeStdin(tty=True))
    answers = iter(["n", "y"])
    monkeypatch.setattr("builtins.input", lambda _prompt: next(answers))
    tasks.unlock(InvokeContext(), env="dev")
    assert stored() == before  # "n" keeps it
    tasks.unlock(InvokeContext(), env="dev")
    assert stored() is None

    env_lock(dev_env, clock).acquire("deploy.auto")
    monkeypatch.setattr(sys, "stdin", FakeStdin(tty=False))
    tasks.unlock(InvokeContext(), env="dev", yes=True)
    assert stored() is None


# -- the commands as a person runs them, against a moto server ---------------------------------------------------


@pytest.fixture
def moto_server() -> Iterator[str]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


STAGING = """
[environments.staging]
region = "us-east-1"
endpoint_url = "{url}"
cluster = "car-rental-cluster"
service = "car-rental-service"
container = "backend"
repository = "car-rental-backend"

[environments.staging.stacks]
registry = "CarRentalRegistryStack"
data = "CarRentalDataStack"
auth = "CarRentalAuthStack"
fargate = "CarRentalFargateStack"
api = "CarRentalApiStack"
"""


def inv(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The CLI against the staging environment of deploy.toml alone (this process's moto credentials left out)."""
    return cli_inv(cwd, *args, drop=("DEPLOYKIT_", "AWS_"), timeout=120)


@pytest.mark.slow
def test_inv_refuses_a_second_deploy_and_inv_unlock_breaks_the_lock(
    moto_server: str, project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with (project / "deploy.toml").open("a") as toml:
        toml.write(STAGING.format(url=moto_server))
    git(project, "commit", "-qam", "staging")
    env = load_config(project / "deploy.toml").environment("staging")
    aws = AwsFactory(env)
    aws.client("s3").create_bucket(Bucket=BUCKET)
    create_stack(aws.client("cloudformation"), env.stacks.registry, {"ArtifactsBucketName": BUCKET})
    as_actor(monkeypatch, "ci-pipeline#4812")
    found = lock.EnvLock.of(aws, env)
    assert found is not None
    holder = found.acquire("deploy.auto")  # a deploy running elsewhere

    refused = inv(project, "destroy", "--env", "staging", "--yes")
    assert refused.returncode == 2, refused.stderr
    assert "❌ another deploy holds the lock of environment 'staging': ci-pipeline#4812 has been running " in (
        refused.stderr
    )
    assert "'deploy.auto'" in refused.stderr and f"(pid {os.getpid()})" in refused.stderr
    assert "  → next: wait for it to finish, then rerun (or let the command wait for it: DEPLOYKIT_LOCK_WAIT=10m);" in (
        refused.stderr
    )
    assert "inv unlock --env staging" in refused.stderr

    asks = inv(project, "unlock", "--env", "staging")
    assert asks.returncode == 2 and "pass --yes" in asks.stderr
    assert found.read() is not None

    broken = inv(project, "unlock", "--env", "staging", "--yes")
    assert broken.returncode == 0, broken.stderr
    assert "🔒 ci-pipeline#4812 has been running 'deploy.auto'" in broken.stderr
    assert "🔓 lock of staging broken" in broken.stderr
    assert found.read() is None
    assert holder.release() is False  # the dead deploy, were it to come back, cannot remove someone else's


# -- expiry by S3's clock, whatever the deploying machines' clocks say --------------------------------------------


def test_a_machine_whose_clock_runs_ahead_leaves_a_live_lock_alone(
    moto_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """moto's server answers as S3 does, with the lock's LastModified and its own time (Date): a laptop whose clock
    runs 15 minutes ahead finds the lock just written by a running deploy, whose ``expires`` (by the holder's clock)
    is already past by its own, and is refused all the same, told the lease's time left by S3's clock."""
    client = boto3.client(
        "s3", region_name="us-east-1", endpoint_url=moto_server, aws_access_key_id="x", aws_secret_access_key="x"
    )
    client.create_bucket(Bucket=BUCKET)
    as_actor(monkeypatch, "ci")
    running = lock.EnvLock(client, BUCKET, "dev", clock=SystemClock()).acquire("deploy.auto")
    ahead = FakeClock(start=datetime.now(UTC) + timedelta(minutes=15))
    laptop = lock.EnvLock(client, BUCKET, "dev", clock=ahead)
    found = laptop.read()
    assert found is not None and found.written is not None and found.served is not None  # S3's two times
    assert found.info.expired(ahead.now())  # by the holder's expires against this clock it would be taken over
    as_actor(monkeypatch, "ana@laptop")
    with pytest.raises(lock.LockHeld) as refused:
        laptop.acquire("deploy.app")
    assert re.search(
        r"; its lease expires in (10m00s|9m5\ds) unless renewed \(at \S+Z by S3's clock\)$", refused.value.message
    ), refused.value.message
    again = laptop.read()
    assert again is not None and again.info == running.info and again.etag == running.etag  # untouched
    assert running.release() is True


S3_NOW = T0  # S3's time when it answers the read


def stubbed(clock: FakeClock) -> tuple[lock.EnvLock, Stubber]:
    client = boto3.client("s3", region_name="eu-west-1", aws_access_key_id="x", aws_secret_access_key="x")
    return lock.EnvLock(client, BUCKET, "dev", clock=clock), Stubber(client)


def held_by(
    owner: str, *, started: datetime, written: datetime | None, served: datetime | None = S3_NOW, lease: bool = True
) -> dict[str, Any]:
    """GetObject's answer for a lock written at ``written`` (S3's LastModified) by a holder whose clock agrees with
    S3's, read at ``served`` (the answer's Date header; None: a store that sends none); ``lease``: the document
    says its lease (600 s), as an older deploykit's does not."""
    data = {
        "owner": owner,
        "host": "box",
        "pid": 7,
        "command": "deploy.full",
        "started": started.isoformat(),
        "expires": ((written or started) + timedelta(seconds=600)).isoformat(),
        "token": "theirs",
        **({"lease": 600.0} if lease else {}),
    }
    body = json.dumps(data).encode()
    return {
        "Body": StreamingBody(io.BytesIO(body), len(body)),
        "ETag": '"theirs"',
        **({"LastModified": written} if written else {}),
        "ResponseMetadata": {
            "HTTPStatusCode": 200,
            "HTTPHeaders": {"date": format_datetime(served, usegmt=True)} if served else {},
        },
    }


def refuses_the_create(stub: Stubber) -> None:
    stub.add_client_error("put_object", "PreconditionFailed", http_status_code=412)


def test_a_machine_whose_clock_runs_behind_takes_over_a_lock_dead_for_its_lease_by_s3s_clock(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Last written 601 s ago by S3's clock: expired, though by this machine's clock (15 minutes behind) its holder's
    ``expires`` is 14 minutes ahead."""
    behind = FakeClock(start=S3_NOW - timedelta(minutes=15))
    env_lock, stub = stubbed(behind)
    as_actor(monkeypatch, "ana@laptop")
    with stub:
        refuses_the_create(stub)
        written = S3_NOW - timedelta(seconds=601)
        stub.add_response(
            "get_object", held_by("killed@box", started=written, written=written), {"Bucket": BUCKET, "Key": KEY}
        )
        stub.add_response(
            "put_object",
            {"ETag": '"mine"'},
            {"Bucket": BUCKET, "Key": KEY, "Body": ANY, "ContentType": "application/json", "IfMatch": '"theirs"'},
        )
        taken = env_lock.acquire("deploy.app")
        stub.assert_no_pending_responses()
    assert taken.previous is not None and taken.previous.owner == "killed@box" and taken.etag == '"mine"'


def test_a_refusal_tells_the_lease_left_and_since_when_by_s3s_clock() -> None:
    """Renewed 100 s ago by S3's clock, taken 5 minutes ago: this machine's clock 15 minutes ahead changes neither."""
    ahead = FakeClock(start=S3_NOW + timedelta(minutes=15))
    env_lock, stub = stubbed(ahead)
    with stub:
        refuses_the_create(stub)
        answer = held_by("ci", started=S3_NOW - timedelta(minutes=5), written=S3_NOW - timedelta(seconds=100))
        stub.add_response("get_object", answer, {"Bucket": BUCKET, "Key": KEY})
        with pytest.raises(lock.LockHeld) as refused:
            env_lock.acquire("deploy.app")
    assert refused.value.message == (
        "another deploy holds the lock of environment 'dev': ci has been running 'deploy.full' on box (pid 7) since "
        "2026-11-28T08:55:00Z (5m00s ago); its lease expires in 8m20s unless renewed (at 2026-11-28T09:08:20Z by "
        "S3's clock)"
    )
    assert refused.value.holder(ahead.now()) == refused.value.message.split(": ", 1)[1]


def test_a_holder_whose_clock_runs_behind_says_since_when_in_s3s_time() -> None:
    """A holder 20 minutes behind AWS wrote ``started`` by its own clock; read against S3's, a lock taken a moment
    before said "20m ago" (and a teammate, reading a deploy stuck for 20 minutes, might break it). Written in AWS's
    time (the offset the command's AWS answers measured), it says when it was taken."""
    behind = FakeClock(start=S3_NOW - timedelta(minutes=20))
    client = boto3.client("s3", region_name="eu-west-1", aws_access_key_id="x", aws_secret_access_key="x")
    env_lock, stub = lock.EnvLock(client, BUCKET, "dev", clock=behind, aws_offset=lambda: 1200.0), Stubber(client)
    with stub:
        stub.add_response("put_object", {"ETag": '"mine"'})
        held = env_lock.acquire("deploy.app")
    assert (held.info.started, held.info.expires) == (
        S3_NOW.isoformat(),
        (S3_NOW + timedelta(minutes=10)).isoformat(),
    )


def test_the_lock_of_an_environment_takes_the_offset_its_commands_aws_answers_measured(
    bucket: str, dev_env: EnvConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """EnvLock.of gives the lock its factory's offset (the Date of its answers), and each renewal keeps it."""
    factory = AwsFactory(dev_env)
    monkeypatch.setattr(AwsFactory, "offset", property(lambda _self: 1200.0))  # AWS 20 minutes ahead of us
    clock = FakeClock(start=S3_NOW - timedelta(minutes=20))
    env_lock = lock.EnvLock.of(factory, dev_env, clock=clock)
    assert env_lock is not None
    held = env_lock.acquire("deploy.app")
    assert held.info.started == S3_NOW.isoformat()
    clock.advance(60)
    assert held.renew() and held.info.expires == (S3_NOW + timedelta(minutes=11)).isoformat()
    assert held.release()


def test_without_s3s_times_expiry_is_judged_by_this_clock_as_before() -> None:
    """By S3's clock it would have expired a second ago; judged by this clock (15 minutes behind) against the
    holder's ``expires``, it has 14m59s left."""
    behind = FakeClock(start=S3_NOW - timedelta(minutes=15))
    env_lock, stub = stubbed(behind)
    answer = held_by(
        "ci", started=S3_NOW - timedelta(seconds=601), written=S3_NOW - timedelta(seconds=601), served=None
    )
    with stub:
        refuses_the_create(stub)
        stub.add_response("get_object", answer, {"Bucket": BUCKET, "Key": KEY})
        with pytest.raises(lock.LockHeld) as refused:
            env_lock.acquire("deploy.app")
    assert refused.value.message.endswith("its lease expires at 2026-11-28T08:59:59Z (in 14m59s) unless renewed")


@pytest.mark.parametrize("skew", [timedelta(minutes=15), -timedelta(minutes=15)], ids=["ahead", "behind"])
def test_a_lock_an_older_deploykit_wrote_saying_no_lease_is_judged_by_s3s_clock_with_its_600_s(
    skew: timedelta,
) -> None:
    """A teammate's deploykit from before the lease was written down holds the lock, renewed 100 s ago by S3's clock:
    judged by this machine's clock against the ``expires`` the holder wrote with its own, a holder 15 minutes behind
    this machine was taken over mid-deploy (two deploys at once, seen across versions) and one ahead waited for
    long after its death. By S3's clock, with the 600 s lease every deploykit held, neither clock matters."""
    clock = FakeClock(start=S3_NOW + skew)
    env_lock, stub = stubbed(clock)
    answer = held_by("ci", started=S3_NOW - timedelta(minutes=5), written=S3_NOW - timedelta(seconds=100), lease=False)
    with stub:
        refuses_the_create(stub)
        stub.add_response("get_object", answer, {"Bucket": BUCKET, "Key": KEY})
        with pytest.raises(lock.LockHeld) as refused:
            env_lock.acquire("deploy.app")
    assert refused.value.message.endswith(
        "its lease expires in 8m20s unless renewed (at 2026-11-28T09:08:20Z by S3's clock)"
    )


class SteppedClock(FakeClock):
    """A fake clock whose wall clock is set back or forward (NTP stepping it, a person fixing it) while its
    monotonic time goes on."""

    def __init__(self, start: datetime) -> None:
        super().__init__(start=start)
        self.step = timedelta(0)

    def now(self) -> datetime:
        return super().now() + self.step


def test_a_holder_whose_clock_is_set_back_still_stops_once_its_lease_ran_out_unrenewed(
    bucket: str, dev_env: EnvConfig
) -> None:
    """Its lease is counted from its last write on its monotonic clock: set 15 minutes back, its wall clock would
    keep the ``expires`` it wrote ahead long after others (judging by S3's clock) may take the lock."""
    clock = SteppedClock(T0)
    mine = env_lock(dev_env, clock).acquire("deploy.full")
    clock.sleep(200)
    assert mine.renew() is True  # the last renewal that went through: the lease counts from it
    clock.step = -timedelta(minutes=15)
    clock.sleep(597)
    mine.check()  # three seconds left
    clock.sleep(1)  # two: others judge the lease from S3's headers, to the whole second, and may find it out a
    with pytest.raises(lock.LockLost, match="ran out unrenewed"):  # second early: it stops
        mine.check()
    assert mine.release() is True


def test_a_lock_that_could_not_be_released_says_how_to_free_it_now(bucket: str, dev_env: EnvConfig) -> None:
    """The next deploy was refused for the lease's ten minutes by a lock the warning said nothing more of."""
    said: list[str] = []
    aws = AwsFactory(dev_env)

    def refuse(**_: Any) -> None:
        raise ClientError({"Error": {"Code": "AccessDenied"}, "ResponseMetadata": {"HTTPStatusCode": 403}}, "Delete")

    aws.client("s3").meta.events.register("before-call.s3.DeleteObject", refuse)
    with lock.held(aws, dev_env, "deploy.app", warn=said.append):
        pass
    assert len(said) == 1 and said[0].startswith("the deploy lock of 'dev' could not be released (")
    assert said[0].endswith("it expires with its lease (within 10m00s): to free it now, inv unlock --env dev")


class Ending:
    """A plugin that keeps how each deployment ended, as the chat and the job's page hear it."""

    def __init__(self) -> None:
        self.events: list[str] = []

    @hookimpl
    def deploykit_deployment_finished(self, env: str, report: dict[str, Any]) -> None:
        self.events.append("finished")

    @hookimpl
    def deploykit_deployment_failed(self, env: str, report: dict[str, Any], error: str) -> None:
        self.events.append(f"failed: {error[:40]}")

    @hookimpl
    def deploykit_deployment_not_run(self, env: str, report: dict[str, Any]) -> None:
        self.events.append("not run")


def test_a_run_whose_lease_ran_out_in_its_last_step_is_heard_as_failed(
    bucket: str, project: Path, clock: FakeClock
) -> None:
    """The command fails (LockLost, exit 1, the live record left as it was), found after its last step: the plugins
    heard deploykit_deployment_finished (the chat ✅) and never a failure."""

    @dataclass(frozen=True)
    class Slow(Probe):
        def run(self, ctx: Context) -> Outcome:
            clock.sleep(601)  # past the lease, no renewal between (the fake clock runs no thread)
            return super().run(ctx)

    ending = Ending()
    runtime = dataclasses.replace(
        commands.Runtime(config_path=project / "deploy.toml", stdout=io.StringIO(), stderr=io.StringIO(), clock=clock),
        plugins_factory=lambda: get_plugin_manager(entry_points=[], extra=[("ending", ending)], environ={}),
    )
    config = load_config(project / "deploy.toml")
    with pytest.raises(lock.LockLost) as lost:
        commands.run_plan(runtime, config, config.environment("dev"), deploying(Slow()), dry_run=False, as_json=False)
    assert lost.value.exit_code == 1
    assert ending.events == [f"failed: {str(lost.value)[:40]}"]
