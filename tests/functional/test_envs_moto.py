"""inv envs against moto: three environments of one deploy.toml, their live records, last runs and locks in one
artifacts bucket (dev and staging, one account), prod behind a profile nobody has; positions from a real git
history with a side branch."""

from __future__ import annotations

import io
import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws

from deploykit import commands, freeze, history, lock, overview
from deploykit.aws import AwsFactory
from deploykit.clock import FakeClock
from deploykit.config import EnvConfig, load_config
from deploykit.plan import Plan, RunReport, StepRecord
from tests.conftest import git
from tests.functional.test_cli import inv
from tests.functional.test_endpoints import create_stack
from tests.functional.test_image_cleanup_moto import ENV
from tests.functional.test_watch_alarms_moto import put_alarm, set_state

REGION = "eu-west-1"
BUCKET = "registry-artifacts-1"


def commit(root: Path, message: str, backend: bool = False) -> str:
    (root / "notes.txt").write_text(message)
    if backend:
        (root / "backend").mkdir(exist_ok=True)
        (root / "backend" / "app.py").write_text(f"# {message}\n")
    git(root, "add", "-A")
    git(root, "commit", "-qm", message)
    return git(root, "rev-parse", "--short=12", "HEAD").strip()


@pytest.fixture
def world(tmp_path: Path, no_profiles: None) -> Iterator[dict[str, str]]:
    """c1 → c2 → c3 (HEAD, main: a backend file); side: c1 → s1. dev runs the app and health_handler at c2, the
    API stack at c1 with uncommitted changes, and its lock is held; staging runs the app at a commit this clone
    lacks and health_handler at s1; prod cannot be read."""
    root = tmp_path / "project"
    root.mkdir()
    (root / "deploy.toml").write_text(
        'default_env = "dev"\n'
        + ENV.format(name="dev", region=REGION, extra="")
        + ENV.format(name="staging", region=REGION, extra="")
        + ENV.format(name="prod", region=REGION, extra='profile = "car-rental-prod"  # not configured here\n')
    )
    git(root, "init", "-q", "-b", "main")
    shas = {"c1": commit(root, "c1")}
    git(root, "checkout", "-qb", "side")
    shas["s1"] = commit(root, "s1")
    git(root, "checkout", "-q", "main")
    shas["c2"] = commit(root, "c2")
    shas["c3"] = commit(root, "c3", backend=True)
    with mock_aws():
        boto3.client("s3", region_name=REGION).create_bucket(
            Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION}
        )
        create_stack(
            boto3.client("cloudformation", region_name=REGION),
            "CarRentalRegistryStack",
            {"ArtifactsBucketName": BUCKET},
        )
        config = load_config(root / "deploy.toml")
        deployed = {
            "dev": {"app": shas["c2"], "lambda:health_handler": shas["c2"], "stack:api": f"{shas['c1']}-dirty-abc"},
            "staging": {"app": "0123456789ab", "lambda:health_handler": shas["s1"]},
        }
        for name, components in deployed.items():
            env = config.environment(name)
            store = history.History.of(AwsFactory(env), env)
            assert store is not None
            run = RunReport(Plan(name, (), "deploy.auto"), [StepRecord("smoke", "checks", "done", 1.0)], 3.0)
            store.write(history.record_of(run, components=components, base={}, head=shas["c3"], who=f"ci@{name}"))
        dev = config.environment("dev")
        env_lock = lock.EnvLock.of(AwsFactory(dev), dev, clock=FakeClock())
        assert env_lock is not None
        env_lock.acquire("deploy.app")
        since = datetime(2026, 11, 27, 18, 0, tzinfo=UTC)
        freeze.write(AwsFactory(dev), dev, freeze.Freeze("lead@laptop", "Black Friday weekend", since))
        yield {**shas, "root": str(root)}


def test_each_environment_says_what_it_runs_against_head_its_last_run_and_its_lock(world: dict[str, str]) -> None:
    root = Path(world["root"])
    out = io.StringIO()
    runtime = commands.Runtime(config_path=root / "deploy.toml", stdout=out, stderr=io.StringIO(), clock=FakeClock())
    views = commands.envs(as_json=True, runtime=runtime)
    assert [v.env for v in views] == ["dev", "staging", "prod"]  # deploy.toml's order
    dev, staging, prod = views
    positions = {x.component: (x.position.text(), x.to_deploy) for x in dev.live if x.sha}
    assert positions == {
        "app": ("1 behind HEAD", "1 changed path(s)"),  # c3 changed backend/app.py
        "lambda:health_handler": ("1 behind HEAD", "nothing"),  # and nothing of the function
        "stack:api": ("2 behind HEAD (+ uncommitted changes)", "1 changed path(s)"),  # what is live is in no commit
    }
    never = [x.component for x in dev.live if not x.sha]  # this checkout's components dev never had
    assert never == ["stack:auth", "stack:data", "stack:fargate", "stack:registry"]
    assert {x.to_deploy for x in dev.live if not x.sha} == {"new: never deployed here"}
    assert [x.component for x in dev.live][:3] == ["app", "lambda:health_handler", "stack:api"]  # app, Lambdas, stacks
    assert dev.last_run is not None and dev.last_run.who == "ci@dev" and dev.lock is not None
    assert {x.component: (x.position.text(), x.to_deploy) for x in staging.live if x.sha} == {
        "app": ("not in this clone (fetch, or another branch's)", "?"),
        "lambda:health_handler": ("on another line: 2 behind, 1 ahead of HEAD", "nothing"),
    }
    assert staging.lock is None
    assert prod.error is not None and "car-rental-prod" in prod.error and prod.next_step
    said = runtime.stderr.getvalue()  # type: ignore[attr-defined]
    assert f"HEAD is {world['c3']}" in said
    assert "▸ dev (eu-west-1): last run ✅ deploy.auto by ci@dev" in said and "🔒 held by" in said
    assert "▸ staging (eu-west-1): last run ✅ deploy.auto by ci@staging" in said and "lock free" in said
    assert (
        "\n  ❄️  dev is frozen by lead@laptop since 2026-11-27T18:00:00Z until inv unfreeze: Black Friday weekend "
        "(deploys refused; inv unfreeze --env dev ends it)\n"
    ) in said
    assert said.count("❄️") == 1 and staging.frozen is None
    assert "▸ prod (eu-west-1): ⚠️  not read: AWS profile 'car-rental-prod'" in said
    data = json.loads(out.getvalue())
    assert data["head"] == world["c3"]
    assert data["environments"][0]["freeze"] == {
        "owner": "lead@laptop",
        "reason": "Black Friday weekend",
        "since": "2026-11-27T18:00:00+00:00",
        "until": None,
    }
    [api] = [x for x in data["environments"][0]["live"] if x["component"] == "stack:api"]
    assert (api["behind"], api["ahead"], api["dirty"], api["known"], api["changed_paths"]) == (2, 0, True, True, 1)
    assert data["environments"][2]["live"] == [] and data["environments"][2]["error"]


def test_a_lock_whose_lease_ran_out_by_s3s_clock_is_said_expired_whatever_this_machines_clock_says(
    world: dict[str, str],
) -> None:
    """dev's lock (the world's: taken by a clock at 2026-01-01 00:00, its lease 10 minutes) was last written 11
    minutes before S3's time in the Date of the read's answer: expired, though by this machine's clock (the holder's,
    2026-01-01 00:00) it has 10 minutes left. staging's, taken by a clock a year behind (its ``expires`` long past by
    this machine's), was written a moment ago by S3's clock: held. S3's time is the Date of the lock's one read."""
    root = Path(world["root"])
    staging = load_config(root / "deploy.toml").environment("staging")
    staging_lock = lock.EnvLock.of(
        AwsFactory(staging), staging, clock=FakeClock(start=datetime(2025, 1, 1, tzinfo=UTC))
    )
    assert staging_lock is not None
    staging_lock.acquire("deploy.lambda")
    ahead = {"dev": timedelta(minutes=11), "staging": timedelta(0)}  # S3's clock against the real one, moto's
    reads: list[str] = []

    def s3_telling(env: EnvConfig) -> AwsFactory:
        aws = AwsFactory(env)
        if env.name not in ahead:
            return aws  # prod: its profile is not configured here

        def date(parsed: dict[str, Any], **_: Any) -> None:
            headers = parsed.setdefault("ResponseMetadata", {}).setdefault("HTTPHeaders", {})
            headers["date"] = format_datetime(datetime.now(UTC) + ahead[env.name], usegmt=True)

        def read(params: dict[str, Any], **_: Any) -> None:
            if str(params.get("Key", "")).startswith(lock.PREFIX):
                reads.append(env.name)

        aws.client("s3").meta.events.register("after-call.s3", date)
        aws.client("s3").meta.events.register("provide-client-params.s3.GetObject", read)
        return aws

    out = io.StringIO()
    runtime = commands.Runtime(
        config_path=root / "deploy.toml", stdout=out, stderr=io.StringIO(), clock=FakeClock(), aws_factory=s3_telling
    )
    dev_view, staging_view, _ = commands.envs(as_json=True, runtime=runtime)
    assert (dev_view.lock_expired, staging_view.lock_expired) == (True, False)
    said = runtime.stderr.getvalue()  # type: ignore[attr-defined]
    assert "(deploy.app) since 2026-01-01 00:00 UTC: it blocks no deploy, the next one takes it over" in said
    assert (
        "⌛ expired lock of " in said and "🔒 held by " in said and "(deploy.lambda) since 2025-01-01 00:00 UTC" in said
    )
    assert said.count("⌛") == 1 and said.count("🔒") == 1
    dev_json, staging_json, _ = json.loads(out.getvalue())["environments"]
    assert (dev_json["lock"]["expired"], staging_json["lock"]["expired"]) == (True, False)
    assert sorted(reads) == ["dev", "staging"]  # one read of each lock: no call more for S3's time


def test_an_environment_promoted_from_another_says_what_waits_there_to_be_promoted(world: dict[str, str]) -> None:
    """staging takes its releases from dev (promote_from): dev's app at c3 changed a path of the app since staging's
    c1, dev's API stack (a dirty build, never promoted) cannot be told, dev's health_handler (c2) is what staging's
    (s1) holds by its paths. Once staging runs a newer app than dev, nothing of it waits (it would go back)."""
    root = Path(world["root"])
    toml = root / "deploy.toml"
    toml.write_text(
        toml.read_text().replace("[environments.staging]\n", '[environments.staging]\npromote_from = "dev"\n')
    )
    config = load_config(toml)

    def apps(smoke: bool = True, **at: str) -> None:  # environment → the commit its app is deployed at
        for name, sha in at.items():
            env = config.environment(name)
            store = history.History.of(AwsFactory(env), env)
            assert store is not None
            steps = [StepRecord("smoke", "checks", "done", 1.0)] if smoke else []  # [] : --no-smoke
            run = RunReport(Plan(name, (), "deploy.app"), steps, 3.0)
            store.write(history.record_of(run, components={"app": sha}, base={}, head=sha, who=f"ci@{name}"))

    apps(dev=world["c3"], staging=world["c1"])
    out = io.StringIO()
    runtime = commands.Runtime(config_path=toml, stdout=out, stderr=io.StringIO(), clock=FakeClock())
    dev, staging, prod = commands.envs(as_json=True, runtime=runtime)
    assert dev.waiting is None and prod.waiting is None and prod.promoted_from == ""
    assert staging.promoted_from == "dev"
    assert staging.waiting == {"app": "1 changed path(s)", "stack:api": "?"}
    said = runtime.stderr.getvalue()  # type: ignore[attr-defined]
    assert "  🚦 waiting in dev to be promoted here: app (1 changed path(s)), stack:api (?)" in said
    promotion = json.loads(out.getvalue())["environments"][1]["promotion"]
    assert promotion == {"from": "dev", "waiting": {"app": "1 changed path(s)", "stack:api": "?"}}
    # staging ahead of dev (dev rolled back, a fix sent to staging --unpromoted): nothing of the app waits in dev
    apps(dev=world["c1"], staging=world["c3"])
    _, staging, _ = commands.envs(runtime=runtime)
    assert staging.waiting == {"stack:api": "?"}
    # dev deploys c3 again with --no-smoke: what waits there is said so (its promotion takes it only if an earlier
    # run proved the code), and dev's row says what no smoke proved
    apps(smoke=False, dev=world["c3"])
    apps(staging=world["c1"])
    out.truncate(0)
    out.seek(0)
    runtime.stderr = io.StringIO()
    dev, staging, _ = commands.envs(as_json=True, runtime=runtime)
    assert staging.waiting == {"app": "1 changed path(s), deployed in dev without its smoke", "stack:api": "?"}
    assert [x.component for x in dev.live if x.unsmoked] == ["app"]
    said = runtime.stderr.getvalue()
    assert (
        "  ⚠️  deployed without its smoke (--no-smoke), no smoke passed since: app (an environment promoted from dev "
        "does not take it; inv smoke --env dev proves it)\n"
    ) in said
    assert said.count("without its smoke (--no-smoke)") == 1  # dev's own line; staging's app is smoked
    [app] = [x for x in json.loads(out.getvalue())["environments"][0]["live"] if x["component"] == "app"]
    assert app["unsmoked"] is True


def test_an_environment_with_no_registry_stack_has_nothing_deployed(tmp_path: Path) -> None:
    env = load_config_env(tmp_path)
    view = overview.view(load_config(tmp_path / "deploy.toml"), "0" * 40, env, None)
    assert not view.has_history
    assert "nothing deployed yet" in overview.render([view], "0" * 40)


def load_config_env(tmp_path: Path) -> EnvConfig:
    (tmp_path / "deploy.toml").write_text('default_env = "dev"\n' + ENV.format(name="dev", region=REGION, extra=""))
    return load_config(tmp_path / "deploy.toml").environment("dev")


def test_inv_envs_runs_as_a_task(world: dict[str, str]) -> None:
    """The task is wired (moto is in this process only, so the subprocess sees every environment unreadable)."""
    done = inv(Path(world["root"]), "envs", "--json", AWS_ENDPOINT_URL="http://127.0.0.1:9")
    assert done.returncode == 0, done.stderr
    assert [e["env"] for e in json.loads(done.stdout)["environments"]] == ["dev", "staging", "prod"]


def test_a_component_a_rollback_took_off_is_shown_as_refused(world: dict[str, str]) -> None:
    """dev's app was rolled back from c3 (HEAD) to c2 by a person: a deploy of HEAD would bring c3 back, which
    deploy.auto refuses, and inv envs says so rather than "1 changed path(s)"."""
    root = Path(world["root"])
    config = load_config(root / "deploy.toml")
    dev = config.environment("dev")
    store = history.History.of(AwsFactory(dev), dev)
    assert store is not None
    undo = RunReport(Plan("dev", (), f"rollback app → {world['c2']}"), [], 1.0)
    later = datetime.now(UTC) + timedelta(minutes=1)
    record = history.record_of(
        undo, components={"app": world["c2"]}, base={"app": world["c3"]}, head=world["c2"], who="ana", now=later
    )
    store.write(record)
    out = io.StringIO()
    runtime = commands.Runtime(config_path=root / "deploy.toml", stdout=out, stderr=io.StringIO(), clock=FakeClock())
    views = commands.envs(as_json=True, runtime=runtime)
    app = next(x for x in views[0].live if x.component == "app")
    assert app.to_deploy == "⛔ refused: HEAD has it as a rollback took it off"
    assert app.rolled_back.startswith(f"app as it was at {world['c3'][:12]} (taken off by rollback app → ")
    listed = json.loads(out.getvalue())["environments"][0]["live"]
    assert next(x for x in listed if x["component"] == "app")["rolled_back"] == app.rolled_back
    assert {x["component"]: x["rolled_back"] for x in listed if x["component"] != "app"} == dict.fromkeys(
        [x["component"] for x in listed if x["component"] != "app"]
    )


PERSONAL = """
[environments."dev-*"]
region = "eu-west-1"
cluster = "car-rental-{env}"
service = "car-rental-{env}"
container = "backend"
repository = "car-rental-backend-{env}"
promote_from = "dev"
[environments."dev-*".stacks]
registry = "CarRental-{env}-Registry"
data = "CarRental-{env}-Data"
auth = "CarRental-{env}-Auth"
fargate = "CarRental-{env}-Fargate"
api = "CarRental-{env}-Api"
"""


def test_the_environments_a_pattern_made_are_found_by_their_stacks(world: dict[str, str]) -> None:
    """dev-alice is deployed (its registry stack and a run), dev-bob7's registry stack is being created, dev-carol's
    was deleted, dev-eve has only its Fargate stack left, and a stack named like one but for a name the pattern
    cannot make is not one of them."""
    root = Path(world["root"])
    toml = root / "deploy.toml"
    toml.write_text(toml.read_text() + PERSONAL)
    config = load_config(toml)
    cfn = boto3.client("cloudformation", region_name=REGION)
    s3 = boto3.client("s3", region_name=REGION)
    for name in ("dev-alice", "dev-bob7", "dev-carol"):
        bucket = f"{name}-artifacts"
        s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": REGION})
        create_stack(cfn, f"CarRental-{name}-Registry", {"ArtifactsBucketName": bucket})
    cfn.delete_stack(StackName="CarRental-dev-carol-Registry")
    create_stack(cfn, "CarRental-dev-Dave-Registry", {"ArtifactsBucketName": "dev-alice-artifacts"})
    create_stack(cfn, "CarRental-dev-eve-Fargate", {"AlbUrl": "http://eve"})  # its registry stack gone before it
    alice = config.environment("dev-alice")
    store = history.History.of(AwsFactory(alice), alice)
    assert store is not None
    run = RunReport(Plan("dev-alice", (), "deploy.full"), [], 3.0)
    t0 = datetime(2026, 11, 18, 9, 0, tzinfo=UTC)
    store.write(history.record_of(run, components={"app": world["c3"]}, base={}, head=world["c3"], who="alice", now=t0))

    out = io.StringIO()
    clock = FakeClock(start=t0 + timedelta(days=12, hours=3))
    runtime = commands.Runtime(config_path=toml, stdout=out, stderr=io.StringIO(), clock=clock)
    views = commands.envs(as_json=True, runtime=runtime)

    assert [v.env for v in views] == ["dev", "staging", "prod", "dev-alice", "dev-bob7", "dev-eve"]
    assert [v.stacks_left for v in views[3:]] == [(), (), ("CarRental-dev-eve-Fargate",)]
    alice_view = views[3]
    assert alice_view.last_run is not None and alice_view.last_run.who == "alice"
    assert (
        alice_view.promoted_from == "dev"
        and alice_view.waiting
        and alice_view.waiting["lambda:health_handler"] == "new"
    )
    assert views[4].last_run is None  # made, nothing recorded yet
    said = runtime.stderr.getvalue()  # type: ignore[attr-defined]
    assert "▸ dev-alice (eu-west-1, from 'dev-*'): last run ✅ deploy.full by alice" in said
    # twelve days without a run: it still costs, and how to take it down is said
    assert (alice_view.made_from, alice_view.idle_days) == ("dev-*", 12) and views[4].idle_days is None
    assert views[0].made_from == "" and views[0].idle_days is None  # deploy.toml's own: never said idle
    assert (
        "  💤 no run for 12 days (made from 'dev-*': it still costs while it runs); when done with it: inv destroy "
        "--env dev-alice --include-data"
    ) in said
    data = json.loads(out.getvalue())["environments"][3]
    assert (data["env"], data["made_from"], data["idle_days"]) == ("dev-alice", "dev-*", 12)
    # its stacks without a registry stack: still costing, and how to take them down is said
    assert (
        "▸ dev-eve (eu-west-1, from 'dev-*'): no registry stack (no history), but CarRental-dev-eve-Fargate still "
        "there, and costing; to take it down: inv destroy --env dev-eve --include-data"
    ) in said
    assert json.loads(out.getvalue())["environments"][5]["stacks_left"] == ["CarRental-dev-eve-Fargate"]
    # and that command does it, without a registry stack to hold its lock in
    gone = commands.destroy(env="dev-eve", include_data=True, runtime=runtime)
    assert gone is not None and gone.ok
    assert "CarRental-dev-eve-Fargate" not in {s["StackName"] for s in cfn.describe_stacks()["Stacks"]}
    # a run six days ago is not idle
    runtime = commands.Runtime(
        config_path=toml, stdout=io.StringIO(), stderr=io.StringIO(), clock=FakeClock(start=t0 + timedelta(days=6))
    )
    assert commands.envs(runtime=runtime)[3].idle_days is None


def test_a_pattern_whose_account_cannot_be_read_is_said_so(world: dict[str, str]) -> None:
    root = Path(world["root"])
    toml = root / "deploy.toml"
    toml.write_text(toml.read_text() + PERSONAL.replace('promote_from = "dev"', 'profile = "car-rental-dev-people"'))
    runtime = commands.Runtime(config_path=toml, stdout=io.StringIO(), stderr=io.StringIO(), clock=FakeClock())
    views = commands.envs(runtime=runtime)
    assert [v.env for v in views] == ["dev", "staging", "prod", "dev-*"]
    assert views[-1].error is not None and "car-rental-dev-people" in views[-1].error


def test_an_environment_whose_alarms_are_in_alarm_says_so(world: dict[str, str]) -> None:
    """The alarms [environments.NAME.alarm_watch] names, read with the rest: those in ALARM are said, with the
    command that shows why; an environment whose alarms are all well says nothing of them."""
    root = Path(world["root"])
    toml = root / "deploy.toml"
    toml.write_text(
        toml.read_text()
        + '\n[environments.dev.alarm_watch]\nalarms = ["car-rental-5xx", "car-rental-latency"]\n'
        + '\n[environments.staging.alarm_watch]\nalarms = ["staging-*"]\n'
    )
    dev_aws = AwsFactory(load_config(toml).environment("dev"))  # staging's alarms: the same account and region
    for name in ("car-rental-5xx", "car-rental-latency", "staging-5xx"):
        put_alarm(dev_aws, name)
    set_state(dev_aws, "car-rental-5xx", "ALARM")
    out = io.StringIO()
    runtime = commands.Runtime(config_path=toml, stdout=out, stderr=io.StringIO(), clock=FakeClock())
    dev, staging, prod = commands.envs(as_json=True, runtime=runtime)
    assert dev.in_alarm is not None and list(dev.in_alarm) == ["car-rental-5xx"]
    assert staging.in_alarm == {} and prod.in_alarm is None  # prod: not read at all
    said = runtime.stderr.getvalue()  # type: ignore[attr-defined]
    assert re.search(
        r"\n  🔔 in ALARM: car-rental-5xx \(since 20\d\d-\d\d-\d\d \d\d:\d\d UTC\); inv alarms --env dev shows why, "
        r"--wait until they leave it\n",
        said,
    )
    assert said.count("🔔") == 1
    environments = json.loads(out.getvalue())["environments"]
    assert list(environments[0]["in_alarm"]) == ["car-rental-5xx"] and environments[1]["in_alarm"] == {}


def test_what_changed_is_counted_with_each_environments_own_settings(world: dict[str, str]) -> None:
    """deploy.toml's base_image of one environment changes its app alone: staging's counts nothing in dev, dev's own
    does (the rules run with each environment's settings, as deploy.auto's there)."""
    root = Path(world["root"])
    toml = root / "deploy.toml"

    def dev_app() -> str:
        runtime = commands.Runtime(config_path=toml, stdout=io.StringIO(), stderr=io.StringIO(), clock=FakeClock())
        dev = commands.envs(as_json=True, runtime=runtime)[0]
        return next(x.to_deploy for x in dev.live if x.component == "app")

    assert dev_app() == "1 changed path(s)"  # c3's backend file
    text = toml.read_text()
    staging_table = '[environments.staging]\nregion = "eu-west-1"\n'
    assert staging_table in text
    toml.write_text(text.replace(staging_table, staging_table + 'base_image = "python:3.12-slim"\n'))
    git(root, "commit", "-qam", "staging builds on 3.12")
    assert dev_app() == "1 changed path(s)"  # another environment's base: not dev's app
    dev_table = '[environments.dev]\nregion = "eu-west-1"\n'
    toml.write_text(toml.read_text().replace(dev_table, dev_table + 'base_image = "python:3.12-slim"\n'))
    git(root, "commit", "-qam", "dev builds on 3.12")
    assert dev_app() == "2 changed path(s)"  # its own: the backend file and deploy.toml
