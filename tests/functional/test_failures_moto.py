"""deploy.auto when things go wrong part-way through a plan of several steps, against moto.

Stacks (synth, deploy-stack), the image (base, build, push), wait-healthy and smoke are scripted fakes (moto runs no
task, no CloudFormation of CDK templates); the Lambda fast path, register-taskdef, roll-service, the lock, the
history and the live record are deploykit's own code against moto."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import os
import re
import shutil
import signal
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, tzinfo
from email.utils import format_datetime
from pathlib import Path
from typing import Any
from unittest.mock import Mock

import boto3
import botocore.exceptions
import pytest

from deploykit import aws as aws_module
from deploykit import commands, history, lambda_chain, packaging
from deploykit import rollback as rollbacks
from deploykit.app_chain import BuildImage, EnsureBaseImage, PushImage, WaitHealthy
from deploykit.aws import AwsFactory
from deploykit.clock import FakeClock, SystemClock
from deploykit.commands import core
from deploykit.config import EnvConfig
from deploykit.errors import DeployKitError, Interrupted, StepFailed, UsageError
from deploykit.plan import Context, Outcome, Plan, RunReport
from deploykit.smoke import Smoke
from deploykit.stack_chain import DeployStack, Synthesize, action_key
from tests.conftest import REPO, git
from tests.functional.conftest import REGION, create_service, put_image
from tests.functional.test_endpoints import OUTPUTS, create_stack

BUCKET = OUTPUTS["registry"]["ArtifactsBucketName"]
URI = OUTPUTS["registry"]["RepositoryUri"]
FUNCTIONS = {
    "health_handler": OUTPUTS["api"]["HealthHandlerFunctionName"],
    "login_handler": OUTPUTS["api"]["LoginHandlerFunctionName"],
}


class Script:
    """What each faked step does: a mapping name → callable(step, ctx) -> Outcome (raise to fail)."""

    def __init__(self) -> None:
        self.stack: dict[str, Callable[[DeployStack, Context], Outcome]] = {}
        self.smoke: Callable[[Context], Outcome] = lambda ctx: Outcome.done("5 passed", smoke="5 passed")
        self.wait: Callable[[WaitHealthy, Context], Outcome] = lambda step, ctx: Outcome.done("healthy")
        self.stacks_run: list[str] = []
        self.failing_updates: set[str] = set()
        self.smokes = 0
        self.failed_in: list[Context] = []  # the run a failing update failed in


def updated(step: DeployStack, ctx: Context) -> Outcome:
    return Outcome("done", f"{step.stack}: updated", {action_key(step.stack): "updated"})


@pytest.fixture
def script(monkeypatch: pytest.MonkeyPatch) -> Script:
    s = Script()

    def deploy_stack(self: DeployStack, ctx: Context) -> Outcome:
        s.stacks_run.append(self.stack)
        return s.stack.get(self.stack, updated)(self, ctx)

    def smoke(self: Smoke, ctx: Context) -> Outcome:
        s.smokes += 1
        return s.smoke(ctx)

    monkeypatch.setattr(Synthesize, "run", lambda self, ctx: Outcome.done("synthesized"))
    monkeypatch.setattr(DeployStack, "run", deploy_stack)
    monkeypatch.setattr(EnsureBaseImage, "run", lambda self, ctx: Outcome.skipped("there"))
    monkeypatch.setattr(BuildImage, "run", lambda self, ctx: Outcome.done("built"))

    def push(self: PushImage, ctx: Context) -> Outcome:
        try:
            put_image(ctx.aws, self.tag)
        except Exception:  # already there
            return Outcome.skipped("already in the registry")
        return Outcome.done("pushed")

    monkeypatch.setattr(PushImage, "run", push)
    monkeypatch.setattr(WaitHealthy, "run", lambda self, ctx: s.wait(self, ctx))
    monkeypatch.setattr(Smoke, "run", smoke)
    return s


def head(project: Path) -> str:
    return git(project, "rev-parse", "--short=12", "HEAD").strip()


def deploy_function(factory: AwsFactory, project: Path, fn: str, sha: str) -> None:
    """The function as a fast-path deploy of ``sha`` leaves it: its zip in the bucket, version 1 described with the
    key and the commit, ``live`` → 1."""
    package = packaging.package_function(project / "lambda" / fn)
    factory.client("s3").put_object(Bucket=BUCKET, Key=package.key, Body=package.zip_bytes)
    lam = factory.client("lambda")
    lam.create_function(
        FunctionName=FUNCTIONS[fn],
        Runtime="python3.11",
        Role=factory.client("iam").get_role(RoleName="fn-role")["Role"]["Arn"],
        Handler="handler.handler",
        Code={"S3Bucket": BUCKET, "S3Key": package.key},
    )
    version = lam.publish_version(
        FunctionName=FUNCTIONS[fn], Description=lambda_chain.version_description(BUCKET, package.key, sha)
    )["Version"]
    lam.create_alias(FunctionName=FUNCTIONS[fn], Name="live", FunctionVersion=version)


@pytest.fixture
def world(moto_aws: None, dev_env: EnvConfig, project: Path, script: Script) -> AwsFactory:
    """Every stack, both functions, the service, all live at commit A (the live record says so too)."""
    shutil.copytree(REPO / "lambda", project / "lambda", ignore=shutil.ignore_patterns("__pycache__", "tests"))
    shutil.copytree(REPO / "cdk", project / "cdk", ignore=shutil.ignore_patterns("__pycache__", "cdk.out", "tests"))
    git(project, "add", "-A")
    git(project, "commit", "-qm", "lambdas and cdk")
    a = head(project)
    factory = AwsFactory(dev_env)
    factory.client("iam").create_role(RoleName="fn-role", AssumeRolePolicyDocument="{}")
    boto3.client("s3", region_name=REGION).create_bucket(
        Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION}
    )
    cfn = boto3.client("cloudformation", region_name=REGION)
    for role, outputs in OUTPUTS.items():
        create_stack(cfn, getattr(dev_env.stacks, role), outputs)
    for fn in FUNCTIONS:
        deploy_function(factory, project, fn, a)
    create_service(factory, container={"image": f"{URI}:{a}"})
    put_image(factory, a)
    store = history.History.of(factory, dev_env)
    assert store is not None
    components = {"app": a, **{f"lambda:{fn}": a for fn in FUNCTIONS}}
    components |= {f"stack:{role}": a for role in OUTPUTS}
    run = RunReport(Plan("dev", (), "deploy.full"), [], 9.0)
    store.write(history.record_of(run, components=components, base={}, head=a, who="ci"))
    return factory


def change(project: Path, *paths: str, message: str = "change") -> str:
    for path in paths:
        target = project / path
        target.write_text(target.read_text() + f"\n# {message}\n")
    git(project, "add", "-A")
    git(project, "commit", "-qm", message)
    return head(project)


def runtime(project: Path, factory: AwsFactory) -> commands.Runtime:
    return commands.Runtime(
        config_path=project / "deploy.toml",
        stdout=io.StringIO(),
        stderr=io.StringIO(),
        clock=FakeClock(),
        aws_factory=lambda _env: factory,
        # asked for before a plan that builds runs (its steps here are faked: none uses it)
        docker_factory=Mock(return_value=Mock(spec=[])),
    )


def auto(project: Path, factory: AwsFactory, **options: Any) -> tuple[RunReport | None, DeployKitError | None, str]:
    run = runtime(project, factory)
    try:
        report = commands.deploy_auto(env="dev", as_json=True, runtime=run, **options)
        error = None
    except DeployKitError as exc:
        report, error = None, exc
    said = run.stderr.getvalue()  # type: ignore[attr-defined]
    out = run.stdout.getvalue()  # type: ignore[attr-defined]
    return report, error, said + "\n---JSON---\n" + out


def live(factory: AwsFactory, env: EnvConfig) -> dict[str, str]:
    store = history.History.of(factory, env)
    assert store is not None
    return {c: v["sha"] for c, v in store.live().items()}


def newest(factory: AwsFactory, env: EnvConfig, n: int = 1) -> list[history.Record]:
    store = history.History.of(factory, env)
    assert store is not None
    return store.records(n)


def alias_version(factory: AwsFactory, fn: str) -> str:
    return str(factory.client("lambda").get_alias(FunctionName=FUNCTIONS[fn], Name="live")["FunctionVersion"])


def service_tag(factory: AwsFactory) -> str:
    ecs = factory.client("ecs")
    arn = ecs.describe_services(cluster="car-rental-cluster", services=["car-rental-service"])["services"][0][
        "taskDefinition"
    ]
    image = ecs.describe_task_definition(taskDefinition=arn)["taskDefinition"]["containerDefinitions"][0]["image"]
    return str(image.rsplit(":", 1)[-1])


def planned(project: Path, factory: AwsFactory, **options: Any) -> tuple[set[str], list[str]]:
    run = runtime(project, factory)
    commands.deploy_auto(env="dev", dry_run=True, as_json=True, runtime=run, **options)
    text = run.stdout.getvalue()  # type: ignore[attr-defined]
    if not text.strip():
        return set(), []
    data = json.loads(text)
    return {c["component"] for c in data["changes"]}, [f"{s['name']}:{s['target']}" for s in data["steps"]]


def test_harness_a_clean_run(project: Path, world: AwsFactory, dev_env: EnvConfig, script: Script) -> None:
    b = change(project, "lambda/health_handler/handler.py", "backend/app/main.py", "cdk/stacks/data_stack.py")
    report, error, said = auto(project, world)
    assert error is None, said
    assert report is not None and report.ok
    assert live(world, dev_env)["lambda:health_handler"] == b
    assert live(world, dev_env)["app"] == b
    assert service_tag(world) == b


def failing_update(
    monkeypatch: pytest.MonkeyPatch, fn: str, script: Script | None = None, *, once: Callable[[], bool] | None = None
) -> Script:
    """update-code of ``fn`` fails as Lambda's Failed update makes it (the rest: deploykit's own), while ``fn`` is in
    the script's failing_updates; ``once``: not before it says what runs beside it got that far (10 s at most):
    what runs beside a failure goes no further than the step it is in."""
    real = lambda_chain.UpdateFunctionCode.run
    script = script or Script()
    script.failing_updates.add(fn)

    def run(self: lambda_chain.UpdateFunctionCode, ctx: Context) -> Outcome:
        if self.function in script.failing_updates:
            deadline = time.monotonic() + 10
            while once is not None and not once() and time.monotonic() < deadline:
                time.sleep(0.01)
            script.failed_in.append(ctx)
            raise StepFailed(
                f"Lambda failed the update of {self.function_name}: InvalidImage", next_step="fix it, then rerun"
            )
        return real(self, ctx)

    monkeypatch.setattr(lambda_chain.UpdateFunctionCode, "run", run)
    return script


def test_one_function_failing_beside_the_other_and_the_app_puts_both_back(
    project: Path, world: AwsFactory, dev_env: EnvConfig, script: Script, monkeypatch: pytest.MonkeyPatch
) -> None:
    """login_handler's update fails once, beside it, health_handler's alias moved and the app rolled out: those two,
    never smoke-tested, go back (they stayed, and the message named login_handler alone)."""
    ecs_as_aws_reports_it(world)
    a = head(project)
    b = change(project, "lambda/health_handler/handler.py", "lambda/login_handler/handler.py", "backend/app/main.py")
    failing_update(
        monkeypatch,
        "login_handler",
        once=lambda: alias_version(world, "health_handler") == "2" and service_tag(world) == b,
    )
    _, error, _ = auto(project, world)
    assert isinstance(error, StepFailed)
    assert error.message.startswith(f"Lambda failed the update of {FUNCTIONS['login_handler']}: InvalidImage")
    assert "automatic rollback: lambda:health_handler, app ok in" in error.message
    assert alias_version(world, "health_handler") == "1" and service_tag(world) == a
    assert script.smokes == 1  # the rollback's: what serves again is checked
    assert live(world, dev_env)["lambda:health_handler"] == a
    components, _ = planned(project, world)  # the next run deploys all three again
    assert {"app", "lambda:health_handler", "lambda:login_handler"} <= components


def test_an_automatic_rollback_that_failed_names_the_rollback_of_each_component_it_was_to_put_back(
    project: Path, world: AwsFactory, dev_env: EnvConfig, script: Script
) -> None:
    """A function's release failed its smoke, and its automatic rollback failed too (UpdateAlias throttled): the next
    step said "inv rollback --env dev", which rolls back the app, untouched by the run, and left the function on the
    release that failed. It names the function and the commit to go back to."""
    a = head(project)
    change(project, "lambda/health_handler/handler.py")
    script.smoke = smoke_fails
    moved: list[str] = []

    def throttled(params: dict[str, Any], **_: Any) -> None:
        moved.append(params["FunctionVersion"])
        if len(moved) > 1:  # the run's own move goes; the rollback's is refused
            throttle = {"Error": {"Code": "TooManyRequestsException"}, "ResponseMetadata": {"HTTPStatusCode": 429}}
            raise botocore.exceptions.ClientError(throttle, "UpdateAlias")

    world.client("lambda").meta.events.register("before-parameter-build.lambda.UpdateAlias", throttled)
    _, error, said = auto(project, world)
    assert isinstance(error, StepFailed) and "the automatic rollback failed too" in error.message, said
    assert error.next_step == (
        "see what runs: inv health --env dev; then put it back by hand: inv rollback --env dev --component "
        f"lambda:health_handler --to {a}"
    )


class Behind(datetime):
    """This machine's clock, 15 minutes behind AWS's (a laptop whose time sync is off)."""

    @classmethod
    def now(cls, tz: tzinfo | None = None) -> Behind:  # type: ignore[override]
        return cls.fromtimestamp((datetime.now(tz) - timedelta(minutes=15)).timestamp(), tz)


def test_a_rollback_from_a_laptop_whose_clock_runs_behind_is_recorded_in_aws_time_and_not_gone_forward_to_after(
    project: Path, world: AwsFactory, dev_env: EnvConfig, script: Script, monkeypatch: pytest.MonkeyPatch
) -> None:
    """CI deployed B, then C; ana rolled back to B from a laptop 15 minutes behind: her record, stamped by her
    clock, sorted before C's deploy, so the next inv rollback found C not taken off and went forward to it. The
    record is stamped by AWS's clock (the Date of its answers), whatever the laptop's."""
    ecs_as_aws_reports_it(world)
    a = head(project)
    b = change(project, "backend/app/main.py", message="b")
    assert auto(project, world)[1] is None
    c = change(project, "backend/app/main.py", message="c")
    assert auto(project, world)[1] is None and live(world, dev_env)["app"] == c

    def dated(parsed: dict[str, Any], **_: Any) -> None:  # S3 says its time, as it does (moto in-process does not)
        headers = parsed.setdefault("ResponseMetadata", {}).setdefault("HTTPHeaders", {})
        headers["date"] = format_datetime(datetime.now(UTC), usegmt=True)

    world.client("s3").meta.events.register("after-call.s3", dated)
    with monkeypatch.context() as laptop:
        laptop.setattr(history, "datetime", Behind)
        laptop.setattr(aws_module, "local_now", lambda: Behind.now(UTC))
        commands.rollback(env="dev", component="app", runtime=runtime(project, world))
    assert service_tag(world) == b and live(world, dev_env)["app"] == b
    assert [record.head for record in newest(world, dev_env, 2)] == [b, c]  # the rollback's is the newest
    run = runtime(project, world)
    commands.rollback(env="dev", component="app", dry_run=True, runtime=run)
    assert f"rollback app in dev: {b} → {a}" in run.stderr.getvalue()  # type: ignore[attr-defined]


def test_aws_time_never_goes_back_between_two_stamps_of_a_command(
    world: AwsFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Date is to the second: a newer answer's can move the offset back by up to one, and a failed run's record
    and its automatic rollback's, written within a second, sorted the wrong way round (or the same)."""
    clock = [datetime(2026, 12, 7, 12, 0, 10, tzinfo=UTC)]  # this machine's, about 10 s behind AWS's
    monkeypatch.setattr(aws_module, "local_now", lambda: clock[0])
    said = {"ResponseMetadata": {"HTTPHeaders": {"date": "Mon, 07 Dec 2026 12:00:20 GMT"}}}
    world._note_time(said)  # 12:00:20.000 to 12:00:20.999 by AWS, read at 12:00:10.000 here: +10.5 s
    first = world.now()
    clock[0] += timedelta(milliseconds=990)
    world._note_time(said)  # the same second, read 990 ms later: +9.51 s
    assert world.now() > first


def test_the_log_of_a_release_put_back_is_read_in_aws_time_from_a_laptop_whose_clock_runs_ahead(
    project: Path, world: AwsFactory, dev_env: EnvConfig, script: Script, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A function's release failed its smoke and was put back; what it wrote is read since the run began, counted
    by the laptop's clock, 15 minutes ahead of AWS's: "no line ... yet", the crash's line in CloudWatch Logs all the
    while. Counted in AWS's time, it is shown."""
    change(project, "lambda/health_handler/handler.py")
    logs, group, now = world.client("logs"), f"/aws/lambda/{FUNCTIONS['health_handler']}", datetime.now(UTC)
    logs.create_log_group(logGroupName=group)
    logs.create_log_stream(logGroupName=group, logStreamName=f"{now:%Y/%m/%d}/[2]abcdef")
    logs.put_log_events(
        logGroupName=group,
        logStreamName=f"{now:%Y/%m/%d}/[2]abcdef",
        logEvents=[{"timestamp": int((now - timedelta(seconds=40)).timestamp() * 1000), "message": "KeyError: 'ID'"}],
    )

    def dated(parsed: dict[str, Any], **_: Any) -> None:  # S3 says its time, as it does (moto in-process does not)
        headers = parsed.setdefault("ResponseMetadata", {}).setdefault("HTTPHeaders", {})
        headers["date"] = format_datetime(datetime.now(UTC), usegmt=True)

    world.client("s3").meta.events.register("after-call.s3", dated)
    monkeypatch.setattr(aws_module, "local_now", lambda: datetime.now(UTC) + timedelta(minutes=15))
    smokes: list[str] = []

    def once(ctx: Context) -> Outcome:  # the run's smoke fails, the rollback's passes
        smokes.append("smoke")
        return smoke_fails(ctx) if len(smokes) == 1 else Outcome.done("5 passed")

    script.smoke = once
    run = dataclasses.replace(runtime(project, world), clock=FakeClock(start=now + timedelta(minutes=15)))
    with pytest.raises(StepFailed, match="automatic rollback: lambda:health_handler ok"):
        commands.deploy_auto(env="dev", runtime=run)
    said = run.stderr.getvalue()  # type: ignore[attr-defined]
    assert "📜 the last 1 lines health_handler version 2 wrote" in said and "KeyError: 'ID'" in said, said


def test_a_failed_automatic_rollback_of_a_latest_alone_names_no_rollback_of_the_function(
    project: Path, world: AwsFactory, dev_env: EnvConfig, script: Script, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The run failed before its alias moved (publish-version), and putting $LATEST back failed too: the advice named
    inv rollback --component lambda:FN without --to, which goes one deploy back from what serves, the release that
    passed. It says the function serves what it served."""
    change(project, "lambda/health_handler/handler.py")

    def fails(*_: Any) -> Outcome:
        raise StepFailed("Lambda failed the publish (ServiceException)", next_step="rerun")

    monkeypatch.setattr(lambda_chain.PublishVersion, "run", fails)
    monkeypatch.setattr(rollbacks.LatestBack, "run", fails)
    _, error, said = auto(project, world)
    assert isinstance(error, StepFailed) and "the automatic rollback failed too" in error.message, said
    assert error.next_step == (
        "see what runs: inv health --env dev; then put it back by hand: lambda:health_handler serves what it served, "
        "its $LATEST may hold this run's code (a deploy of its stack would publish it): inv deploy.auto --env dev "
        "deploys it again, checked"
    )
    assert alias_version(world, "health_handler") == "1"


def test_the_advice_for_a_moved_version_naming_no_commit_is_to_roll_it_back(
    project: Path, world: AwsFactory, dev_env: EnvConfig, script: Script, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--no-rollback after a smoke failed, the version the alias moved from naming no commit (CloudFormation
    published it, the live record has no entry): the advice said the function "serves what it served" while the
    failed version did. It names the rollback of it (one deploy back from what serves)."""
    store = history.History.of(world, dev_env)
    assert store is not None
    entries = store.live()
    entries.pop("lambda:health_handler", None)
    world.client("s3").put_object(Bucket=store.bucket, Key=store.live_key, Body=json.dumps(entries).encode())
    monkeypatch.setattr(rollbacks.lambda_chain, "git_sha_of", lambda _description: None)
    change(project, "lambda/health_handler/handler.py")
    script.smoke = smoke_fails
    _, error, _ = auto(project, world, rollback=False)
    assert isinstance(error, StepFailed) and alias_version(world, "health_handler") == "2"
    assert (error.next_step or "").startswith(
        "put back what was live: inv rollback --env dev --component lambda:health_handler; what it wrote:"
    ), error.next_step


def smoke_fails(ctx: Context) -> Outcome:
    raise StepFailed("smoke failed (4 passed, 1 failed): api_gateway: GET /health → 502", next_step="look")


def interrupt(*_: Any) -> Outcome:
    raise KeyboardInterrupt


def lock_held(factory: AwsFactory) -> list[str]:
    listed = factory.client("s3").list_objects_v2(Bucket=BUCKET, Prefix="deploykit/lock/")
    return [o["Key"] for o in listed.get("Contents", [])]


def test_ctrl_c_between_publish_and_move_alias_then_the_rerun_moves_it_and_smokes(
    project: Path, world: AwsFactory, dev_env: EnvConfig, script: Script, monkeypatch: pytest.MonkeyPatch
) -> None:
    b = change(project, "lambda/health_handler/handler.py")
    real = lambda_chain.MoveAlias.run
    monkeypatch.setattr(lambda_chain.MoveAlias, "run", interrupt)
    _, error, said = auto(project, world)
    assert isinstance(error, Interrupted)
    assert lock_held(world) == []
    assert alias_version(world, "health_handler") == "1"
    record = newest(world, dev_env)[0]
    assert (record.ok, record.result) == (False, "failed")
    monkeypatch.setattr(lambda_chain.MoveAlias, "run", real)
    smokes = script.smokes
    report, error, said = auto(project, world)
    assert error is None and report is not None and report.ok, said
    assert alias_version(world, "health_handler") == "2" and script.smokes == smokes + 1
    assert live(world, dev_env)["lambda:health_handler"] == b
    assert lock_held(world) == []


def test_a_stack_failing_beside_another_stops_the_later_levels_and_the_rerun_plans_both(
    project: Path, world: AwsFactory, dev_env: EnvConfig, script: Script
) -> None:
    a = head(project)
    change(project, "cdk/stacks/data_stack.py", "cdk/stacks/auth_stack.py", "cdk/stacks/api_stack.py")

    def fails(step: DeployStack, ctx: Context) -> Outcome:
        raise StepFailed(
            f"{step.stack} UPDATE_ROLLBACK_COMPLETE: Table: Resource handler returned message", next_step="x"
        )

    script.stack["CarRentalDataStack"] = fails
    _, error, _ = auto(project, world)
    assert isinstance(error, StepFailed)
    assert "CarRentalAuthStack" in script.stacks_run and "CarRentalApiStack" not in script.stacks_run
    assert lock_held(world) == []
    assert live(world, dev_env)["stack:auth"] == a
    components, _ = planned(project, world)
    assert {"stack:data", "stack:auth", "stack:api"} <= components


def test_a_function_failing_holds_back_the_rollout_and_the_alias_move_beside_it(
    project: Path, world: AwsFactory, dev_env: EnvConfig, script: Script, monkeypatch: pytest.MonkeyPatch
) -> None:
    """login_handler's update fails while the app registers its revision and health_handler updates its code: the
    app rolled out and the alias moved all the same, never smoke-tested, for the automatic rollback to put back.
    Neither goes further than the step it is in; the rollback puts health_handler's $LATEST back."""
    ecs_as_aws_reports_it(world)
    a = head(project)
    change(project, "lambda/health_handler/handler.py", "lambda/login_handler/handler.py", "backend/app/main.py")
    failing_update(monkeypatch, "login_handler", script)

    told = threading.Event()  # the run knew of the failure (its automatic rollback's run clears it again)

    def until_failed(**_: Any) -> None:  # the step in flight ends once the run knows of the failure beside it
        deadline = time.monotonic() + 10
        while not told.is_set() and time.monotonic() < deadline:
            if script.failed_in and script.failed_in[0].failing.is_set():
                told.set()
            time.sleep(0.01)

    world.client("ecs").meta.events.register("before-call.ecs.RegisterTaskDefinition", until_failed)
    world.client("lambda").meta.events.register("before-call.lambda.UpdateFunctionCode", until_failed)
    _, error, said = auto(project, world)
    assert isinstance(error, StepFailed)
    assert error.message.startswith(f"Lambda failed the update of {FUNCTIONS['login_handler']}: InvalidImage")
    # the app's chain stopped before its first step, or (its revision in flight as the run was told) its second
    assert re.search(r"⏹  app: (register-taskdef|roll-service) not started: a step beside it failed", said), said
    assert "⏹  lambda health_handler: publish-version not started: a step beside it failed" in said, said
    assert alias_version(world, "health_handler") == "1" and service_tag(world) == a
    assert "automatic rollback: lambda:health_handler ok in" in error.message  # its $LATEST


def test_two_failures_in_one_group_put_the_unhealthy_app_back(
    project: Path, world: AwsFactory, dev_env: EnvConfig, script: Script, monkeypatch: pytest.MonkeyPatch
) -> None:
    """login_handler's update fails and, beside it, the app never gets healthy: the group raises the first failure
    (the function's); the unhealthy release goes back all the same (it stayed: the first was no rollback trigger)."""
    ecs_as_aws_reports_it(world)
    a = head(project)
    b = change(project, "lambda/login_handler/handler.py", "backend/app/main.py")
    waits: list[str] = []
    failing_update(monkeypatch, "login_handler", script, once=lambda: bool(waits))

    def unhealthy(step: WaitHealthy, ctx: Context) -> Outcome:
        waits.append(step.image)
        if step.image.endswith(f":{b}"):
            raise StepFailed(f"car-rental-service did not become healthy on {b}: a new task stopped", next_step="f")
        return Outcome.done("healthy")

    script.wait = unhealthy
    _, error, said = auto(project, world)
    assert isinstance(error, StepFailed)
    assert "did not become healthy" in said  # said as "failed too"
    assert "automatic rollback: app ok in" in error.message
    assert service_tag(world) == a


def ecs_as_aws_reports_it(factory: AwsFactory) -> None:
    """moto leaves the PRIMARY deployment on the first revision after UpdateService; ECS makes the new revision the
    PRIMARY one (COMPLETED once rolled out): the answers of DescribeServices rewritten so."""

    def fix(parsed: dict[str, Any], **_: Any) -> None:
        for service in parsed.get("services", []):
            for deployment in service.get("deployments", []):
                if deployment.get("status") == "PRIMARY":
                    deployment["taskDefinition"] = service["taskDefinition"]
                    deployment["rolloutState"] = "COMPLETED"

    factory.client("ecs").meta.events.register("after-call.ecs.DescribeServices", fix)


def answer_lost(factory: AwsFactory, service: str, operation: str, status: int | None = None) -> None:
    """The first call ``operation`` of ``service`` reaches AWS (moto applies it) and its answer is lost: a read
    timeout, as botocore raises it after its retries (each retry's answer lost too), or with ``status`` a server
    error (the last retry's, an earlier one having been applied)."""
    lost: list[bool] = []

    def after(model: Any, **_: Any) -> None:
        if model.name == operation and not lost:
            lost.append(True)
            if status is not None:
                answer = {"Error": {"Code": "ServiceException"}, "ResponseMetadata": {"HTTPStatusCode": status}}
                raise botocore.exceptions.ClientError(answer, operation)
            raise botocore.exceptions.ReadTimeoutError(endpoint_url=f"https://{service}.{REGION}.amazonaws.com")

    factory.client(service).meta.events.register("after-call", after)


def test_a_service_update_whose_answer_was_lost_is_put_back_by_the_automatic_rollback(
    project: Path, world: AwsFactory, dev_env: EnvConfig, script: Script
) -> None:
    """ECS took the update, its answer was lost: the run failed, and its automatic rollback left the app out (it
    knew nothing of what ran before) while saying that dev ran what was live before: the new release served, never
    waited on nor smoked. What ran before is known before the call: the app goes back."""
    a = head(project)
    change(project, "lambda/health_handler/handler.py", "backend/app/main.py")
    ecs_as_aws_reports_it(world)
    answer_lost(world, "ecs", "UpdateService")
    _, error, said = auto(project, world)
    assert isinstance(error, StepFailed) and "Read timeout" in error.message, said
    assert "automatic rollback: lambda:health_handler, app ok" in error.message, said
    assert service_tag(world) == a and alias_version(world, "health_handler") == "1"
    assert live(world, dev_env)["app"] == a and lock_held(world) == []


@pytest.mark.parametrize("status", [None, 500], ids=["read-timeout", "server-error"])
def test_an_alias_move_whose_answer_was_lost_is_put_back_by_the_automatic_rollback(
    status: int | None, project: Path, world: AwsFactory, dev_env: EnvConfig, script: Script
) -> None:
    """Lambda moved the alias, its answer was lost: the rollback said "nothing to do" while version 2, never smoked,
    served. The version it pointed at before is known before the call: the alias goes back to it."""
    a = head(project)
    change(project, "lambda/health_handler/handler.py")
    answer_lost(world, "lambda", "UpdateAlias", status)
    _, error, said = auto(project, world)
    assert isinstance(error, StepFailed) and "automatic rollback: lambda:health_handler" in error.message, said
    assert alias_version(world, "health_handler") == "1"
    assert live(world, dev_env)["lambda:health_handler"] == a and lock_held(world) == []


@pytest.mark.parametrize(
    "operation, during",
    [("PutObject", "deploykit/history/"), ("PutObject", "deploykit/live/"), ("DeleteObject", "deploykit/lock/")],
)
def test_ctrl_c_while_a_run_that_worked_is_recorded_or_lets_its_lock_go_ends_that_first(
    operation: str, during: str, project: Path, world: AwsFactory, dev_env: EnvConfig, script: Script
) -> None:
    """Ctrl-C (a real SIGINT) as the history record, the live record or the lock's release is sent: it cut the
    write short, leaving the run unrecorded, or the lock held for its lease with no word. The write ends first,
    then the interrupt stops the command."""
    b = change(project, "lambda/health_handler/handler.py")
    sent: list[str] = []

    def ctrl_c(params: dict[str, Any], **_: Any) -> None:
        if during in params.get("url_path", "") and not sent:
            sent.append(during)
            os.kill(os.getpid(), signal.SIGINT)

    world.client("s3").meta.events.register(f"before-call.s3.{operation}", ctrl_c)
    with pytest.raises(KeyboardInterrupt):
        auto(project, world)
    assert sent == [during]
    assert newest(world, dev_env)[0].ok and live(world, dev_env)["lambda:health_handler"] == b
    assert lock_held(world) == []


def test_a_live_record_s3_would_not_take_is_said_as_such_the_history_record_being_written(
    project: Path, world: AwsFactory, dev_env: EnvConfig, script: Script
) -> None:
    """The warning said the run's history record was not written, when it was: only the live record failed."""
    a, b = head(project), change(project, "lambda/health_handler/handler.py")

    def refuse(params: dict[str, Any], **_: Any) -> None:
        if "deploykit/live/" in params.get("url_path", ""):
            denied = {"Error": {"Code": "AccessDenied"}, "ResponseMetadata": {"HTTPStatusCode": 403}}
            raise botocore.exceptions.ClientError(denied, "PutObject")

    world.client("s3").meta.events.register("before-call.s3.PutObject", refuse)
    report, error, said = auto(project, world)
    assert error is None and report is not None and report.ok, said
    assert "⚠️  its history record was written; the live record was not written: " in said, said
    assert "AccessDenied" in said
    assert "history record was not written" not in said
    assert newest(world, dev_env)[0].ok and live(world, dev_env)["lambda:health_handler"] == a != b
    world.client("s3").meta.events.unregister("before-call.s3.PutObject", refuse)

    def marked(params: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
        context["lost"] = "deploykit/live/" in params.get("url_path", "")

    def lost(context: dict[str, Any], **_: Any) -> None:  # S3 took it, and its answer is lost
        if context.pop("lost", False):
            raise botocore.exceptions.ReadTimeoutError(endpoint_url="https://s3.eu-west-1.amazonaws.com")

    world.client("s3").meta.events.register("before-call.s3.PutObject", marked)
    world.client("s3").meta.events.register("after-call.s3.PutObject", lost)
    c = change(project, "lambda/health_handler/handler.py", message="again")
    report, error, said = auto(project, world)
    assert error is None and report is not None and report.ok, said
    assert "its history record was written; the live record's write got no answer, so S3 may or may not have it" in said
    assert live(world, dev_env)["lambda:health_handler"] == c


def stopped_in_its_smoke(
    project: Path, world: AwsFactory, dev_env: EnvConfig, script: Script, component: str, path: str, *, to: bool
) -> tuple[str, str]:
    """B, then C deployed; inv rollback of ``component`` back to B (``to``: named with --to) stopped by Ctrl-C in its
    smoke, its move done. (B, C); smoke passes again after it."""
    ecs_as_aws_reports_it(world)
    b = change(project, path, message="b")
    assert auto(project, world)[1] is None
    c = change(project, path, message="c")
    assert auto(project, world)[1] is None and live(world, dev_env)[component] == c
    script.smoke = interrupt
    with pytest.raises(Interrupted) as stopped:
        commands.rollback(env="dev", component=component, to=b if to else None, runtime=runtime(project, world))
    # not "or inv deploy.auto", which deploys C again
    assert (stopped.value.next_step or "").startswith("run the same command again: every step skips what is")
    script.smoke = lambda ctx: Outcome.done("5 passed", smoke="5 passed")
    return b, c


@pytest.mark.parametrize(
    "component, path", [("lambda:health_handler", "lambda/health_handler/handler.py"), ("app", "backend/app/main.py")]
)
def test_a_rollback_stopped_in_its_smoke_is_finished_by_its_rerun(
    component: str, path: str, project: Path, world: AwsFactory, dev_env: EnvConfig, script: Script
) -> None:
    """inv rollback --to B, Ctrl-C in its smoke: the move stayed (its message said a rerun redoes what is missing).
    The rerun said "nothing to roll back": no smoke, no record, the live record still naming C while B, never
    smoked, served. It skips what is in place, smokes, and records B."""
    b, c = stopped_in_its_smoke(project, world, dev_env, script, component, path, to=True)
    smokes, run = script.smokes, runtime(project, world)
    commands.rollback(env="dev", component=component, to=b, runtime=run)
    said = run.stderr.getvalue()  # type: ignore[attr-defined]
    assert "nothing to roll back" not in said and f"but the live record names {c}" in said, said
    assert script.smokes == smokes + 1 and live(world, dev_env)[component] == b
    record = newest(world, dev_env)[0]
    assert record.ok and record.rollback and record.base[component] == c
    run = runtime(project, world)
    commands.rollback(env="dev", component=component, to=b, runtime=run)  # now it is done
    assert "✅ nothing to roll back" in run.stderr.getvalue()  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "component, path", [("lambda:health_handler", "lambda/health_handler/handler.py"), ("app", "backend/app/main.py")]
)
def test_a_rollback_without_to_stopped_in_its_smoke_is_finished_by_its_rerun_not_taken_further_back(
    component: str, path: str, project: Path, world: AwsFactory, dev_env: EnvConfig, script: Script
) -> None:
    """inv rollback (no --to) went C → B and was stopped in its smoke; the same command again went back from what
    ran then, B, one deploy further: to A. It finishes the interrupted one (B); --no-smoke says it does not smoke."""
    b, _ = stopped_in_its_smoke(project, world, dev_env, script, component, path, to=False)
    smokes, run = script.smokes, runtime(project, world)
    commands.rollback(env="dev", component=component, smoke=False, runtime=run)
    said = run.stderr.getvalue()  # type: ignore[attr-defined]
    assert f"the last rollback of {component}, to {b}, was interrupted before it was verified" in said, said
    assert "then recorded (--no-smoke: not smoked)" in said and script.smokes == smokes
    assert live(world, dev_env)[component] == b


@pytest.mark.parametrize(
    "component, path, service, operation",
    [
        ("lambda:health_handler", "lambda/health_handler/handler.py", "lambda", "UpdateAlias"),
        ("app", "backend/app/main.py", "ecs", "UpdateService"),
    ],
)
def test_a_rollback_whose_move_went_in_and_failed_is_finished_by_its_rerun_not_taken_forward(
    component: str,
    path: str,
    service: str,
    operation: str,
    project: Path,
    world: AwsFactory,
    dev_env: EnvConfig,
    script: Script,
) -> None:
    """inv rollback (no --to) went C → B, and the answer of its move was lost (AWS applied it): the run failed, B
    serving. The same command again went "one deploy back" from B, and the failed record took nothing off: forward,
    to C, the release rolled back from. It finishes the failed one."""
    ecs_as_aws_reports_it(world)
    b = change(project, path, message="b")
    assert auto(project, world)[1] is None
    c = change(project, path, message="c")
    assert auto(project, world)[1] is None and live(world, dev_env)[component] == c
    answer_lost(world, service, operation)
    with pytest.raises(StepFailed):
        commands.rollback(env="dev", component=component, runtime=runtime(project, world))
    run = runtime(project, world)
    commands.rollback(env="dev", component=component, runtime=run)
    said = run.stderr.getvalue()  # type: ignore[attr-defined]
    assert f"the last rollback of {component}, to {b}, failed before it was verified: this one finishes it" in said
    assert live(world, dev_env)[component] == b and newest(world, dev_env)[0].ok, said
    if component == "app":
        assert service_tag(world) == b
    else:
        version = alias_version(world, "health_handler")
        found = world.client("lambda").get_function_configuration(
            FunctionName=FUNCTIONS["health_handler"], Qualifier=version
        )
        assert found["Description"].endswith(f" git {b}"), found["Description"]


def test_a_rollback_whose_record_was_not_written_fails_and_its_rerun_records_it(
    project: Path, world: AwsFactory, dev_env: EnvConfig, script: Script, monkeypatch: pytest.MonkeyPatch
) -> None:
    """inv rollback C → B worked, and S3 refused its record (SlowDown, past botocore's retries): a warning, exit 0,
    the live record still naming C and no record of C taken off, so the next deploy.auto brought C back, unrefused.
    The rollback fails (exit 1) naming the rerun, which finds B in place, smokes and records it; then deploy.auto
    refuses to bring C back."""
    ecs_as_aws_reports_it(world)
    b = change(project, "backend/app/main.py", message="b")
    assert auto(project, world)[1] is None
    c = change(project, "backend/app/main.py", message="c")
    assert auto(project, world)[1] is None

    def slow_down(params: dict[str, Any], **_: Any) -> None:
        if "deploykit/history/" in params.get("url_path", ""):
            busy = {"Error": {"Code": "SlowDown"}, "ResponseMetadata": {"HTTPStatusCode": 503}}
            raise botocore.exceptions.ClientError(busy, "PutObject")

    world.client("s3").meta.events.register("before-call.s3.PutObject", slow_down)
    told: list[str] = []
    monkeypatch.setattr(core, "not_run", lambda *args, **_: told.append(str(args[3])))
    with pytest.raises(StepFailed) as failed:
        commands.rollback(env="dev", component="app", runtime=runtime(project, world))
    world.client("s3").meta.events.unregister("before-call.s3.PutObject", slow_down)
    assert failed.value.message.startswith(
        f"rollback app → {b} worked, but its history record was not written (nor its live record): "
    ), failed.value.message
    assert told == []  # the plugins heard of the run, which worked: not told of one that did not start
    assert failed.value.next_step == (
        f"record it: inv rollback --env dev --component app --to {b} (it finds it in place, smokes it and records it)"
    )
    assert service_tag(world) == b and live(world, dev_env)["app"] == c

    smokes, run = script.smokes, runtime(project, world)
    commands.rollback(env="dev", component="app", to=b, runtime=run)
    assert f"but the live record names {c}" in run.stderr.getvalue()  # type: ignore[attr-defined]
    assert script.smokes == smokes + 1 and live(world, dev_env)["app"] == b
    _, error, _ = auto(project, world)  # HEAD is C: taken off, refused
    assert isinstance(error, UsageError) and "would bring back what a rollback took" in error.message


@pytest.mark.parametrize(
    "component, path", [("lambda:health_handler", "lambda/health_handler/handler.py"), ("app", "backend/app/main.py")]
)
def test_a_rollback_whose_release_failed_its_smoke_is_not_finished_by_its_rerun_which_goes_further_back(
    component: str, path: str, project: Path, world: AwsFactory, dev_env: EnvConfig, script: Script
) -> None:
    """inv rollback (no --to) went C → B, and B failed its smoke: B is bad too, and the same command again goes back
    past it (and past C, which the failed rollback took off), to A; it does not finish the rollback to B."""
    ecs_as_aws_reports_it(world)
    a = head(project)
    change(project, path, message="b")
    assert auto(project, world)[1] is None
    c = change(project, path, message="c")
    assert auto(project, world)[1] is None and live(world, dev_env)[component] == c
    script.smoke = smoke_fails
    with pytest.raises(StepFailed):
        commands.rollback(env="dev", component=component, runtime=runtime(project, world))
    script.smoke = lambda ctx: Outcome.done("5 passed", smoke="5 passed")
    run = runtime(project, world)
    commands.rollback(env="dev", component=component, runtime=run)
    said = run.stderr.getvalue()  # type: ignore[attr-defined]
    assert "this one finishes it" not in said and f"→ {a} [history" in said, said
    assert live(world, dev_env)[component] == a


# -- a release a failed or interrupted run left serving is deployed again, smoked, and put back if it fails ---------


def test_ctrl_c_during_smoke_of_a_lambda_change_then_the_rerun_deploys_it_again_and_smokes(
    project: Path, world: AwsFactory, dev_env: EnvConfig, script: Script
) -> None:
    """The alias moved, then Ctrl-C in smoke: the rerun said "nothing to deploy" (what is live for a function is read
    from its alias's version) and never smoked what serves; the live record stayed on A."""
    b = change(project, "lambda/health_handler/handler.py")
    script.smoke = interrupt
    _, error, _ = auto(project, world)
    assert isinstance(error, Interrupted)
    assert alias_version(world, "health_handler") == "2"
    script.smoke = lambda ctx: Outcome.done("5 passed")
    components, _ = planned(project, world)
    assert components == {"lambda:health_handler"}
    smokes = script.smokes
    report, error, said = auto(project, world)
    assert error is None and report is not None and report.ok, said
    assert "the last run that deployed it (deploy.auto at" in said and "failed after its alias may have moved" in said
    assert script.smokes == smokes + 1 and alias_version(world, "health_handler") == "2"
    assert live(world, dev_env)["lambda:health_handler"] == b


def test_a_function_kept_after_its_smoke_failed_is_deployed_again_and_put_back_when_it_fails_again(
    project: Path, world: AwsFactory, dev_env: EnvConfig, script: Script
) -> None:
    """--no-rollback kept version 3 serving after its smoke failed. The next deploy.auto counts the function changed
    (it said "nothing to deploy"), and when smoke fails again, puts back version 2, the last that passed (its
    move-alias found version 3 in place, so this run had replaced nothing of its own)."""
    b = change(project, "lambda/health_handler/handler.py", message="b")
    _, error, said = auto(project, world)
    assert error is None and alias_version(world, "health_handler") == "2", said  # passed: recorded with version 2
    change(project, "lambda/health_handler/handler.py", message="c")
    script.smoke = smoke_fails
    _, error, _ = auto(project, world, rollback=False)
    assert isinstance(error, StepFailed) and "left in place for debugging (--no-rollback)" in error.message
    assert (error.next_step or "").startswith(
        f"put back what was live: inv rollback --env dev --component lambda:health_handler --to {b};"
    )
    assert alias_version(world, "health_handler") == "3" and live(world, dev_env)["lambda:health_handler"] == b
    components, _ = planned(project, world)
    assert components == {"lambda:health_handler"}
    smokes: list[str] = []

    def once(ctx: Context) -> Outcome:  # this run's smoke fails, the rollback's passes
        smokes.append("smoke")
        return smoke_fails(ctx) if len(smokes) == 1 else Outcome.done("5 passed")

    script.smoke = once
    _, error, said = auto(project, world)  # smoke fails again: this time the rollback is on
    assert isinstance(error, StepFailed)
    assert "health_handler's alias served version 3 before this run, which no deploy verified" in said
    assert "automatic rollback: lambda:health_handler ok in" in error.message
    assert alias_version(world, "health_handler") == "2" and live(world, dev_env)["lambda:health_handler"] == b


def test_a_version_the_live_record_did_not_verify_counts_as_changed(
    project: Path, world: AwsFactory, dev_env: EnvConfig, script: Script
) -> None:
    """The live record keeps the version each deploy left the alias on: another one serving (moved by hand, or by a
    run whose record was lost) counts as changed, and what is live for it is the record's commit."""
    b = change(project, "lambda/health_handler/handler.py", message="b")
    auto(project, world)
    store = history.History.of(world, dev_env)
    assert store is not None and store.live()["lambda:health_handler"]["version"] == "2"
    world.client("lambda").update_alias(FunctionName=FUNCTIONS["health_handler"], Name="live", FunctionVersion="1")
    run = runtime(project, world)
    commands.deploy_auto(env="dev", dry_run=True, runtime=run)
    said = run.stderr.getvalue() + run.stdout.getvalue()  # type: ignore[attr-defined]
    assert f"{FUNCTIONS['health_handler']}'s alias live serves version 1, not version 2 (what the last" in said
    components, _ = planned(project, world)
    assert components == {"lambda:health_handler"} and live(world, dev_env)["lambda:health_handler"] == b


def test_a_rollback_to_a_commit_names_what_is_live_from_the_record_when_the_version_does_not(
    project: Path, world: AwsFactory, dev_env: EnvConfig, script: Script
) -> None:
    """A version CloudFormation published (a stack deploy that changed the function's settings) names its zip, not
    its commit: inv rollback --to said it went from "(unknown)"; the live record names the commit."""
    a = head(project)
    b = change(project, "lambda/health_handler/handler.py", message="b")
    auto(project, world)
    lam, name = world.client("lambda"), FUNCTIONS["health_handler"]
    # as CloudFormation publishes one: its description (moto copies $LATEST's) names the zip alone
    lam.update_function_configuration(FunctionName=name, Description="code s3://artifacts/lambda/health_handler/x.zip")
    published = lam.publish_version(FunctionName=name)
    lam.update_alias(FunctionName=name, Name="live", FunctionVersion=published["Version"])
    run = runtime(project, world)
    commands.rollback(env="dev", component="lambda:health_handler", to=a, dry_run=True, runtime=run)
    said = run.stderr.getvalue()  # type: ignore[attr-defined]
    assert f"⏪ rollback lambda:health_handler (version 1) in dev: {b[:12]} → {a[:12]}" in said, said
    run = runtime(project, world)  # inv health's row of the function names it too
    with contextlib.suppress(StepFailed):  # (this world's service is a fake one inv health may find broken)
        commands.health_report(env="dev", as_json=True, runtime=run)
    rows = json.loads(run.stdout.getvalue())["rows"]  # type: ignore[attr-defined]
    [row] = [r for r in rows if r["part"] == "lambda" and r["name"].startswith("health_handler")]
    assert row["detail"].endswith(f", git {b[:12]} (the live record)"), row


def test_a_canary_cut_short_is_finished_by_the_next_deploy_auto_and_cleared_by_a_rollback(
    project: Path, world: AwsFactory, dev_env: EnvConfig, script: Script
) -> None:
    """A canary's process killed mid-bake leaves the alias sending 10% to version 2: deploy.auto said "nothing to
    deploy", and inv rollback to the commit the alias serves said "nothing to roll back"; both leave it split."""
    a = head(project)
    change(project, "lambda/health_handler/handler.py")
    lam, name = world.client("lambda"), FUNCTIONS["health_handler"]
    auto(project, world)
    lam.update_alias(
        FunctionName=name, Name="live", FunctionVersion="1", RoutingConfig={"AdditionalVersionWeights": {"2": 0.1}}
    )
    run = runtime(project, world)
    commands.rollback(env="dev", component="lambda:health_handler", to=a, runtime=run)
    assert "its alias also sends 10% to version 2 (a canary cut short): the rollback clears that" in (
        run.stderr.getvalue()  # type: ignore[attr-defined]
    )
    alias = lam.get_alias(FunctionName=name, Name="live")
    assert (alias["FunctionVersion"], alias.get("RoutingConfig", {}).get("AdditionalVersionWeights") or {}) == ("1", {})

    _, error, said = auto(project, world, allow_rolled_back=True)  # b again, on purpose
    assert error is None and alias_version(world, "health_handler") == "2", said
    lam.update_alias(  # as a canary of version 1 (say, a newer build) cut short
        FunctionName=name, Name="live", FunctionVersion="2", RoutingConfig={"AdditionalVersionWeights": {"1": 0.1}}
    )
    report, error, said = auto(project, world)
    assert error is None and report is not None, said
    assert "sends 10% to version 1 beside version 2 (a canary cut short): deployed again" in said
    alias = lam.get_alias(FunctionName=name, Name="live")
    assert (alias["FunctionVersion"], alias.get("RoutingConfig", {}).get("AdditionalVersionWeights") or {}) == ("2", {})
    # all of them to version 1: Lambda's own while it readies version 2's provisioned concurrency (no canary takes
    # 100%), left by a deploy stopped while it waited
    lam.update_alias(
        FunctionName=name, Name="live", FunctionVersion="2", RoutingConfig={"AdditionalVersionWeights": {"1": 1.0}}
    )
    report, error, said = auto(project, world)
    assert error is None and report is not None, said
    assert (
        "sends 100% to version 1 beside version 2 (Lambda readying its provisioned concurrency: a deploy stopped while "
        "it waited): deployed again"
    ) in said


def test_the_rerun_after_ctrl_c_in_wait_healthy_puts_back_a_release_that_fails_smoke(
    project: Path, world: AwsFactory, dev_env: EnvConfig, script: Script
) -> None:
    """Ctrl-C during wait-healthy, then the same command again: register and roll find the release in place
    (skipped) and smoke fails. It was left serving: roll-service, skipped, said nothing of what ran before."""
    ecs_as_aws_reports_it(world)
    a = head(project)
    b = change(project, "backend/app/main.py")
    script.wait = interrupt
    _, error, _ = auto(project, world)
    assert isinstance(error, Interrupted)
    assert service_tag(world) == b and lock_held(world) == []
    script.wait = lambda step, ctx: Outcome.done("healthy")
    smokes: list[str] = []

    def once(ctx: Context) -> Outcome:  # this run's smoke fails, the rollback's passes
        smokes.append("smoke")
        return smoke_fails(ctx) if len(smokes) == 1 else Outcome.done("5 passed")

    script.smoke = once
    _, error, said = auto(project, world)
    assert isinstance(error, StepFailed) and "smoke failed" in error.message
    assert "roll-service      ⏭  skipped" in said
    assert f"car-rental-service ran {b} before this run, which no deploy verified" in said
    assert "automatic rollback: app ok in" in error.message
    assert service_tag(world) == a and live(world, dev_env)["app"] == a


def test_ctrl_c_during_wait_healthy_beside_a_lambda_chain_ends_the_wait(
    project: Path, world: AwsFactory, dev_env: EnvConfig, script: Script, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The app's rollout beside a function's fast path: Ctrl-C while wait-healthy polls (moto runs no task, so it
    never gets healthy). The command returned only at wait-healthy's deadline (600 s by default), the group waiting
    for its thread, which never looked at the interrupt."""
    toml = project / "deploy.toml"
    toml.write_text(
        toml.read_text().replace(
            "[environments.dev]\n", "[environments.dev]\nwait_timeout = 8\npoll_interval = 0.2\n", 1
        )
    )
    git(project, "commit", "-qam", "dev: short deadline")
    change(project, "lambda/health_handler/handler.py", "backend/app/main.py")
    monkeypatch.undo()  # the real WaitHealthy; the rest faked again
    monkeypatch.setattr(Synthesize, "run", lambda self, ctx: Outcome.done("synthesized"))
    monkeypatch.setattr(EnsureBaseImage, "run", lambda self, ctx: Outcome.skipped("there"))
    monkeypatch.setattr(BuildImage, "run", lambda self, ctx: Outcome.done("built"))
    monkeypatch.setattr(PushImage, "run", lambda self, ctx: (put_image(ctx.aws, self.tag), Outcome.done("p"))[1])
    monkeypatch.setattr(Smoke, "run", lambda self, ctx: Outcome.done("5 passed"))
    started: list[float] = []
    real_wait = WaitHealthy.run

    def ctrl_c() -> None:  # only into the wait: a SIGINT after it would end the test session
        if len(started) == 1:
            os.kill(os.getpid(), signal.SIGINT)

    def wait(self: WaitHealthy, ctx: Context) -> Outcome:
        started.append(time.monotonic())
        threading.Timer(1.0, ctrl_c).start()  # Ctrl-C 1 s into the wait
        try:
            return real_wait(self, ctx)
        finally:
            started.append(time.monotonic())

    monkeypatch.setattr(WaitHealthy, "run", wait)
    run = runtime(project, world)
    run = commands.Runtime(
        config_path=run.config_path,
        stdout=io.StringIO(),
        stderr=io.StringIO(),
        clock=SystemClock(),
        aws_factory=run.aws_factory,
        docker_factory=run.docker_factory,
    )
    with pytest.raises(Interrupted) as stopped:
        commands.deploy_auto(env="dev", runtime=run)
    assert len(started) == 2 and started[1] - started[0] < 6, started  # the deadline is 8 s, the Ctrl-C came at 1 s
    assert "interrupted" in stopped.value.message
    # the history says what each step of the group did (it listed the group alone, "failed interrupted")
    steps = [(s["step"], s["status"], s.get("in")) for s in newest(world, dev_env)[0].steps]
    assert ("wait-healthy", "failed", "sequence") in steps and ("move-alias", "done", "sequence") in steps, steps
    assert ("smoke", "not run", None) in steps


def cfn_publishes(factory: AwsFactory, fn: str) -> str:
    """What CloudFormation does for the API stack when a function's configuration changes: a new version (its
    description names its code, no commit), and the alias moved to it, no move-alias step of deploykit's."""
    lam = factory.client("lambda")
    name = FUNCTIONS[fn]
    serving = lam.get_function_configuration(FunctionName=name, Qualifier="live")
    key = lambda_chain.code_key(serving["Description"])
    lam.update_function_configuration(FunctionName=name, MemorySize=512)
    version = str(lam.publish_version(FunctionName=name, Description=f"code s3://{BUCKET}/{key}")["Version"])
    lam.update_alias(FunctionName=name, Name="live", FunctionVersion=version)
    return version


def test_a_version_a_stack_deploy_published_is_verified_and_stays_when_another_part_fails(
    project: Path, world: AwsFactory, dev_env: EnvConfig, script: Script, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The API stack's update publishes version 3 of health_handler (a configuration change) and moves its alias;
    the run passes. The live record still said version 2 (a move-alias step sets it): deploy.auto counted the
    function changed, and a later run whose login_handler update failed put version 2, the old configuration,
    back."""
    change(project, "lambda/health_handler/handler.py", message="b")
    _, error, said = auto(project, world)
    assert error is None, said

    def api_update(step: DeployStack, ctx: Context) -> Outcome:
        cfn_publishes(world, "health_handler")
        return Outcome("done", f"{step.stack}: updated", {action_key(step.stack): "updated"})

    script.stack["CarRentalApiStack"] = api_update
    change(project, "cdk/stacks/api_stack.py", message="memory 512")
    _, error, said = auto(project, world)
    assert error is None and alias_version(world, "health_handler") == "3", said
    script.stack.pop("CarRentalApiStack")
    assert planned(project, world)[0] == set()
    change(project, "lambda/login_handler/handler.py", message="c")
    failing_update(monkeypatch, "login_handler", script)
    _, error, said = auto(project, world)
    assert isinstance(error, StepFailed)
    assert alias_version(world, "health_handler") == "3", said


def test_a_step_that_refuses_after_the_alias_moved_puts_it_back(
    project: Path, world: AwsFactory, dev_env: EnvConfig, script: Script
) -> None:
    """Smoke refusing (no check to run: bad input) after the alias moved fails the run part way (exit 1); what moved
    was not smoke-tested and stayed, with no rollback and no word of one."""
    change(project, "lambda/health_handler/handler.py", message="b")
    refusals: list[str] = []

    def refuses_once(ctx: Context) -> Outcome:
        refusals.append("smoke")
        if len(refusals) == 1:
            raise UsageError("no checks are registered for environment 'dev'", next_step="install a plugin")
        return Outcome.done("5 passed")

    script.smoke = refuses_once
    _, error, said = auto(project, world)
    assert error is not None and error.exit_code == 1, said
    assert "automatic rollback: lambda:health_handler ok in" in error.message
    assert alias_version(world, "health_handler") == "1"
