"""Deploy freezes: an environment closed to deploys, in its artifacts bucket beside the lock (moto's S3)."""

from __future__ import annotations

import dataclasses
import io
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from botocore.response import StreamingBody
from botocore.stub import ANY, Stubber

from deploykit import commands, freeze, history, lock
from deploykit.aws import AwsFactory
from deploykit.clock import FakeClock
from deploykit.commands import freezing
from deploykit.config import EnvConfig, load_config
from deploykit.errors import UsageError
from deploykit.hookspecs import hookimpl
from deploykit.plan import Plan
from deploykit.plugins import get_plugin_manager
from tests.functional.conftest import ARTIFACTS_BUCKET as BUCKET
from tests.functional.conftest import held_each
from tests.functional.test_lock_moto import Probe, deploying, run

KEY = "deploykit/freeze/dev.json"
T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(start=T0)


def s3_telling(s3_clock: FakeClock) -> Callable[[EnvConfig], AwsFactory]:
    """The environment's AWS (moto's), its S3 telling its time in each answer's ``Date`` by ``s3_clock``, as S3
    does by its own (moto in-process sends one on a missing object's answer only, by the real clock)."""

    def make(env: EnvConfig) -> AwsFactory:
        aws = AwsFactory(env)

        def date(parsed: dict[str, Any], **_: Any) -> None:
            headers = parsed.setdefault("ResponseMetadata", {}).setdefault("HTTPHeaders", {})
            headers["date"] = format_datetime(s3_clock.now(), usegmt=True)

        aws.client("s3").meta.events.register("after-call.s3", date)
        return aws

    return make


def runtime(project: Path, clock: FakeClock, s3_clock: FakeClock | None = None) -> commands.Runtime:
    """A runtime on ``clock``, whose S3 tells its time by ``s3_clock`` (default: ``clock``: the two agree)."""
    return commands.Runtime(
        config_path=project / "deploy.toml",
        stdout=io.StringIO(),
        stderr=io.StringIO(),
        clock=clock,
        aws_factory=s3_telling(s3_clock or clock),
    )


def stored() -> dict[str, Any] | None:
    try:
        answer = boto3.client("s3", region_name="eu-west-1").get_object(Bucket=BUCKET, Key=KEY)
    except ClientError:
        return None
    return dict(json.loads(answer["Body"].read()))


def frozen(project: Path, clock: FakeClock, monkeypatch: pytest.MonkeyPatch, until: str | None = None) -> str:
    monkeypatch.setenv(history.ACTOR_ENV, "lead@laptop")
    rt = runtime(project, clock)
    commands.freeze_env(env="dev", reason="Black Friday weekend", until=until, runtime=rt)
    monkeypatch.setenv(history.ACTOR_ENV, "ana@laptop")
    return str(rt.stderr.getvalue())  # type: ignore[attr-defined]


def test_a_freeze_refuses_deploys_and_destroy_before_any_step_and_rollbacks_go_on(
    bucket: str, project: Path, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    said = frozen(project, clock, monkeypatch, until="3d")
    assert stored() == {
        "owner": "lead@laptop",
        "reason": "Black Friday weekend",
        "since": "2026-12-01T09:00:00+00:00",
        "until": "2026-12-04T09:00:00+00:00",
    }
    assert said.startswith(
        "❄️  dev is frozen by lead@laptop since 2026-12-01T09:00:00Z until 2026-12-04T09:00:00Z: Black Friday weekend\n"
    )
    for plan in (deploying(Probe()), deploying(Probe(), "deploy.full"), Plan("dev", (Probe(),), "destroy")):
        with pytest.raises(UsageError) as refused:
            run(project, plan, clock)
        what = "destroy dev" if plan.title == "destroy" else "deploy to dev"
        assert refused.value.message == (
            f"refusing to {what}: dev is frozen by lead@laptop since 2026-12-01T09:00:00Z until 2026-12-04T09:00:00Z: "
            "Black Friday weekend. Nothing was changed"
        )
        assert refused.value.exit_code == 2
        assert "DEPLOYKIT_ALLOW_FROZEN=1" in (refused.value.next_step or "")
        assert isinstance(plan.steps[0], Probe) and plan.steps[0].seen == []  # nothing ran
    assert (
        boto3.client("s3", region_name="eu-west-1").list_objects_v2(Bucket=BUCKET, Prefix="deploykit/lock/")["KeyCount"]
        == 0
    )  # the lock taken to read the freeze beside it was let go
    going_back = Probe()
    run(project, deploying(going_back, "rollback lambda:login_handler → dddddddddddd"), clock)
    assert len(going_back.seen) == 1  # a rollback to what ran there is never refused
    untried = dataclasses.replace(deploying(Probe(), "rollback app → eeeeeeeeeeee"), untried=True)
    with pytest.raises(UsageError, match="refusing to deploy to dev: dev is frozen"):
        run(project, untried, clock)  # one to what never ran there brings something new: a deploy
    restarting = Probe()
    run(project, Plan("dev", (restarting,), "restart app", restarts=(("app", "dddddddddddd"),)), clock)
    [held] = restarting.seen  # nor a restart, which brings nothing new; it holds the lock all the same
    assert held is not None and held["command"] == "restart app"


def test_the_override_deploys_saying_so_and_a_freeze_past_its_end_refuses_nothing(
    bucket: str, project: Path, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    frozen(project, clock, monkeypatch, until="2h")
    monkeypatch.setenv(freeze.OVERRIDE_ENV, "1")
    probe = Probe()
    rt = run(project, deploying(probe), clock)
    assert len(probe.seen) == 1
    assert "❄️  dev is frozen by lead@laptop since 2026-12-01T09:00:00Z until 2026-12-01T11:00:00Z: Black Friday " in (
        rt.stderr.getvalue()  # type: ignore[attr-defined]
    )
    assert "; deploying anyway ($DEPLOYKIT_ALLOW_FROZEN=1)" in rt.stderr.getvalue()  # type: ignore[attr-defined]
    monkeypatch.delenv(freeze.OVERRIDE_ENV)
    with pytest.raises(UsageError, match="refusing to deploy to dev: dev is frozen"):
        run(project, deploying(Probe()), clock)
    clock.advance(2 * 3600)  # its end: over by itself
    probe = Probe()
    run(project, deploying(probe), clock)
    assert len(probe.seen) == 1


class Heard:
    """A plugin that notes the freezes it hears of."""

    def __init__(self) -> None:
        self.freezes: list[dict[str, Any] | None] = []

    @hookimpl
    def deploykit_freeze_changed(self, env: str, freeze: dict[str, Any] | None) -> None:
        self.freezes.append(freeze)


def test_the_plugins_hear_of_a_freeze_and_of_its_end(
    bucket: str, project: Path, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    heard = Heard()
    rt = dataclasses.replace(
        runtime(project, clock),
        plugins_factory=lambda: get_plugin_manager(entry_points=[], extra=[("chat", heard)], environ={}),
    )
    monkeypatch.setenv(history.ACTOR_ENV, "lead")
    commands.freeze_env(env="dev", reason="audit", until="1h", runtime=rt)
    commands.unfreeze_env(env="dev", runtime=rt)
    commands.freeze_env(env="dev", reason="audit", until="1h", runtime=rt)
    clock.advance(7200)
    commands.unfreeze_env(env="dev", runtime=rt)  # over already: its end was not news
    made = {
        "owner": "lead",
        "reason": "audit",
        "since": "2026-12-01T09:00:00+00:00",
        "until": "2026-12-01T10:00:00+00:00",
    }
    assert heard.freezes == [made, None, made]


def test_unfreeze_ends_it_and_says_what_it_was(
    bucket: str, project: Path, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    frozen(project, clock, monkeypatch)  # no end: until unfreeze
    with pytest.raises(UsageError, match="until inv unfreeze: Black Friday weekend"):
        run(project, deploying(Probe()), clock)
    rt = runtime(project, clock)
    ended = commands.unfreeze_env(env="dev", runtime=rt)
    assert ended is not None and ended.reason == "Black Friday weekend" and stored() is None
    assert commands.unfreeze_env(env="dev", runtime=rt) is None
    said = rt.stderr.getvalue()  # type: ignore[attr-defined]
    assert said.startswith("🌤  dev thawed: it was frozen by lead@laptop since 2026-12-01T09:00:00Z until inv ")
    assert said.endswith("🌤  no inv freeze of dev to end: it is not frozen\n")
    probe = Probe()
    run(project, deploying(probe), clock)
    assert len(probe.seen) == 1


@pytest.mark.parametrize(
    ("reason", "until", "message"),
    [
        ("", None, "a freeze needs a reason"),
        ("  ", "3d", "a freeze needs a reason"),
        ("x", "soon", "--until 'soon' is neither a duration nor a time"),
        ("x", "2026-11-30T08:00", "--until 2026-11-30T08:00 is past"),
    ],
)
def test_bad_input_is_refused_and_freezes_nothing(
    bucket: str, project: Path, clock: FakeClock, reason: str, until: str | None, message: str
) -> None:
    with pytest.raises(UsageError, match=message):
        commands.freeze_env(env="dev", reason=reason, until=until, runtime=runtime(project, clock))
    assert stored() is None


def test_until_takes_durations_and_times() -> None:
    now = T0
    assert freezing._until("90m", now) == now + timedelta(minutes=90)
    assert freezing._until("12h", now) == now + timedelta(hours=12)
    assert freezing._until("1.5d", now) == now + timedelta(hours=36)
    assert freezing._until("2026-12-02T08:00Z", now) == datetime(2026, 12, 2, 8, tzinfo=UTC)
    assert freezing._until("2026-12-02T08:00", now) == datetime(2026, 12, 2, 8, tzinfo=UTC)  # no zone: UTC
    assert freezing._until("2026-12-02T09:00+01:00", now) == datetime(2026, 12, 2, 8, tzinfo=UTC)


def test_an_environment_with_no_artifacts_bucket_has_nothing_to_freeze(
    moto_aws: None, project: Path, clock: FakeClock
) -> None:
    with pytest.raises(UsageError, match="has no artifacts bucket yet") as refused:
        commands.freeze_env(env="dev", reason="x", runtime=runtime(project, clock))
    assert refused.value.next_step == "deploy it first: inv deploy.full --env dev"
    assert commands.unfreeze_env(env="dev", runtime=runtime(project, clock)) is None


def test_the_freeze_is_read_while_the_lock_is_taken(bucket: str, project: Path, clock: FakeClock) -> None:
    """No round trip of its own: the freeze's GetObject and the lock's conditional PutObject are both in flight at
    once (each held until the other is)."""
    config = load_config(project / "deploy.toml")
    env = config.environment("dev")
    aws = AwsFactory(env)
    s3 = aws.client("s3")
    held_each(
        (s3, "GetObject", lambda params: str(params.get("Key", "")).startswith(freeze.PREFIX)),
        (s3, "PutObject", lambda params: str(params.get("Key", "")).startswith(lock.PREFIX)),
    )
    probe = Probe()
    commands.run_plan(runtime(project, clock), config, env, deploying(probe), dry_run=False, as_json=False, aws=aws)
    assert len(probe.seen) == 1


def test_a_freeze_window_of_deploy_toml_refuses_deploys_while_it_lasts(bucket: str, project: Path) -> None:
    toml = project / "deploy.toml"
    window = '[[environments.dev.freeze_windows]]\nstart = "Fri 15:00"\nend = "Mon 08:00"\nreason = "the weekend"\n'
    toml.write_text(toml.read_text() + "\n" + window)
    saturday = FakeClock(start=datetime(2026, 12, 5, 10, 0, tzinfo=UTC))
    with pytest.raises(UsageError) as refused:
        run(project, deploying(Probe()), saturday)
    assert refused.value.message == (
        "refusing to deploy to dev: dev is frozen by deploy.toml's freeze window Fri 15:00 – Mon 08:00 UTC since "
        "2026-12-04T15:00:00Z until 2026-12-07T08:00:00Z: the weekend. Nothing was changed"
    )
    going_back = Probe()
    run(project, deploying(going_back, "rollback app → dddddddddddd"), saturday)
    assert len(going_back.seen) == 1
    rt = runtime(project, saturday)
    assert commands.unfreeze_env(env="dev", runtime=rt) is None
    assert "(deploy.toml's freeze_windows: not ended by inv unfreeze)" in rt.stderr.getvalue()  # type: ignore[attr-defined]
    # an inv freeze inside the window, ended: the window still holds, which the team hears (not "deploys go again")
    heard = Heard()
    rt = dataclasses.replace(
        runtime(project, saturday),
        plugins_factory=lambda: get_plugin_manager(entry_points=[], extra=[("chat", heard)], environ={}),
    )
    commands.freeze_env(env="dev", reason="audit", until="1h", runtime=rt)
    assert commands.unfreeze_env(env="dev", runtime=rt) is not None
    said = rt.stderr.getvalue()  # type: ignore[attr-defined]
    assert "🌤  dev's inv freeze ended: it was frozen " in said and "thawed" not in said
    assert "❄️  still dev is frozen by deploy.toml's freeze window Fri 15:00 – Mon 08:00 UTC" in said
    assert heard.freezes[-1] is not None and heard.freezes[-1]["reason"] == "the weekend"
    monday = FakeClock(start=datetime(2026, 12, 7, 8, 0, tzinfo=UTC))
    probe = Probe()
    run(project, deploying(probe), monday)
    assert len(probe.seen) == 1


# -- a freeze's times by S3's clock, whatever the machines' clocks say -------------------------------------------


def test_a_freeze_is_counted_from_s3s_time_by_a_laptop_whose_clock_runs_ahead_and_judged_by_it(
    bucket: str, project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``inv freeze --until 2h`` on a laptop 15 minutes ahead freezes from S3's time for 2 hours (the Date of its
    read's answer, the freeze not there yet: no extra call); the laptop's own deploy is refused by S3's clock until
    the end of those 2 hours, and not a moment longer."""
    s3_clock = FakeClock(start=T0)
    ahead = FakeClock(start=T0 + timedelta(minutes=15))
    monkeypatch.setenv(history.ACTOR_ENV, "lead@laptop")
    made = commands.freeze_env(env="dev", reason="audit", until="2h", runtime=runtime(project, ahead, s3_clock))
    assert (made.since, made.until) == (T0, T0 + timedelta(hours=2))
    assert stored() == {
        "owner": "lead@laptop",
        "reason": "audit",
        "since": "2026-12-01T09:00:00+00:00",
        "until": "2026-12-01T11:00:00+00:00",
    }
    config = load_config(project / "deploy.toml")
    env = config.environment("dev")
    s3_clock.advance(2 * 3600 - 60)
    ahead.advance(2 * 3600 - 60)  # 11:14 by this clock, past the until: 10:59 by S3's, still frozen
    with pytest.raises(UsageError, match="refusing to deploy to dev: dev is frozen by lead@laptop"):
        commands.run_plan(
            runtime(project, ahead, s3_clock),
            config,
            env,
            deploying(Probe()),
            dry_run=False,
            as_json=False,
            aws=s3_telling(s3_clock)(env),
        )
    s3_clock.advance(60)
    probe = Probe()
    commands.run_plan(
        runtime(project, ahead, s3_clock),
        config,
        env,
        deploying(probe),
        dry_run=False,
        as_json=False,
        aws=s3_telling(s3_clock)(env),
    )
    assert len(probe.seen) == 1


def stubbed_s3(aws: AwsFactory) -> Stubber:
    return Stubber(aws.client("s3"))


def freeze_answer(*, until: datetime, served: datetime | None) -> dict[str, Any]:
    """GetObject's answer for a freeze until ``until``, S3's time in its Date ``served`` (None: a store sending
    none)."""
    body = json.dumps(
        {
            "owner": "lead",
            "reason": "audit",
            "since": (until - timedelta(hours=2)).isoformat(),
            "until": until.isoformat(),
        }
    ).encode()
    return {
        "Body": StreamingBody(io.BytesIO(body), len(body)),
        "ETag": '"f"',
        "ResponseMetadata": {
            "HTTPStatusCode": 200,
            "HTTPHeaders": {"date": format_datetime(served, usegmt=True)} if served else {},
        },
    }


@pytest.mark.parametrize(
    ("until", "laptop", "holds"),
    [
        (T0 + timedelta(minutes=10), T0 + timedelta(minutes=15), True),  # ahead: over by its clock, not by S3's
        (T0 - timedelta(minutes=10), T0 - timedelta(minutes=15), False),  # behind: over by S3's, not by its clock
    ],
    ids=["a clock 15 minutes ahead", "a clock 15 minutes behind"],
)
def test_a_freeze_read_is_judged_by_s3s_clock_not_this_machines(
    moto_aws: None, project: Path, until: datetime, laptop: datetime, holds: bool
) -> None:
    env = load_config(project / "deploy.toml").environment("dev")
    aws = AwsFactory(env)
    with stubbed_s3(aws) as stub:
        stub.add_response("get_object", freeze_answer(until=until, served=T0), {"Bucket": BUCKET, "Key": KEY})
        kept = freeze.read(aws, env, BUCKET)
    assert kept is not None and kept.served == T0
    assert kept.holds(laptop) is holds
    assert (freeze.in_force(kept, env, laptop) is kept) is holds


def test_a_store_that_sends_no_date_is_judged_by_this_machines_clock_as_before(moto_aws: None, project: Path) -> None:
    env = load_config(project / "deploy.toml").environment("dev")
    aws = AwsFactory(env)
    with stubbed_s3(aws) as stub:
        answer = freeze_answer(until=T0 + timedelta(minutes=10), served=None)
        stub.add_response("get_object", answer, {"Bucket": BUCKET, "Key": KEY})
        kept = freeze.read(aws, env, BUCKET)
    assert kept is not None and kept.served is None
    assert not kept.holds(T0 + timedelta(minutes=15)) and kept.holds(T0 + timedelta(minutes=5))


@pytest.mark.parametrize("skew", [timedelta(minutes=15), -timedelta(minutes=15)], ids=["ahead", "behind"])
def test_inv_freeze_counts_until_from_the_date_of_s3s_answer_that_no_freeze_is_there(
    bucket: str, project: Path, monkeypatch: pytest.MonkeyPatch, skew: timedelta
) -> None:
    """S3's answer to the read of the freeze to replace (404: none) carries its time: the freeze counts from it, and
    a time --until names is past or not by it."""
    aws = AwsFactory(load_config(project / "deploy.toml").environment("dev"))  # the artifacts bucket: moto's
    rt = dataclasses.replace(runtime(project, FakeClock(start=T0 + skew)), aws_factory=lambda _env: aws)
    monkeypatch.setenv(history.ACTOR_ENV, "lead")
    with stubbed_s3(aws) as stub:
        stub.add_client_error(
            "get_object",
            "NoSuchKey",
            http_status_code=404,
            response_meta={"HTTPHeaders": {"date": format_datetime(T0, usegmt=True)}},
            expected_params={"Bucket": BUCKET, "Key": KEY},
        )
        stub.add_response(
            "put_object",
            {"ETag": '"f"'},
            {"Bucket": BUCKET, "Key": KEY, "Body": ANY, "ContentType": "application/json"},
        )
        made = commands.freeze_env(env="dev", reason="audit", until="90m", runtime=rt)
        stub.add_client_error(
            "get_object",
            "NoSuchKey",
            http_status_code=404,
            response_meta={"HTTPHeaders": {"date": format_datetime(T0, usegmt=True)}},
        )
        stub.add_response("put_object", {"ETag": '"g"'})
        later = "2026-12-01T09:10Z"  # past by a clock ahead, to come by S3's
        assert commands.freeze_env(env="dev", reason="audit", until=later, runtime=rt).until == T0 + timedelta(
            minutes=10
        )
        stub.add_client_error(
            "get_object",
            "NoSuchKey",
            http_status_code=404,
            response_meta={"HTTPHeaders": {"date": format_datetime(T0, usegmt=True)}},
        )
        with pytest.raises(UsageError, match="--until 2026-12-01T08:55Z is past"):  # to come by a clock behind
            commands.freeze_env(env="dev", reason="audit", until="2026-12-01T08:55Z", runtime=rt)
        stub.assert_no_pending_responses()
    assert (made.since, made.until) == (T0, T0 + timedelta(minutes=90))
