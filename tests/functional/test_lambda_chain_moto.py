"""The Lambda fast path (deploy.lambda) against moto's Lambda, S3 and CloudFormation, through the command the
task calls: upload → update-code → publish-version → move-alias, each skipped when its result exists; what is
live read back from the alias (live_code_keys, live_git_sha) and kept by a later stack deploy (current_code_keys).

The functions are made as the API stack makes them: code from the artifacts bucket, a version published with
CloudFormation's description ``code s3://<bucket>/<key>``, the ``live`` alias on it. The stacks are stand-ins with
the outputs and parameters deploykit reads (moto keeps the outputs of stacks made with CreateStack).
"""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import io
import json
import os
import random
import shutil
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any, TextIO, cast
from unittest.mock import Mock

import botocore.exceptions
import pytest
from botocore.exceptions import ClientError
from botocore.stub import Stubber

from deploykit import auto, canary, changes, commands, history, lambda_chain, lambda_imports, packaging, stack_chain
from deploykit.aws import AwsFactory
from deploykit.canary import CanaryRelease
from deploykit.clock import FakeClock
from deploykit.commands.core import require_importable, run_plan
from deploykit.commands.deploys import code_given, with_canary
from deploykit.config import EnvConfig, LambdaCanary, load_config
from deploykit.errors import Interrupted, StepFailed, Superseded, UsageError
from deploykit.git import current_revision
from deploykit.output import GuardedStream, Reporter
from deploykit.plan import Context, Executor, HeldBack, Outcome, Parallel, Plan, RunReport, carried, held_back
from deploykit.smoke import Smoke
from deploykit.stack_chain import SMALL_ZIP, UploadLambdaCode
from deploykit.stacks import stack_parameters
from deploykit.testing import fake_factory
from tests.conftest import REPO, git
from tests.functional.conftest import asked, held_across, moto_runtime, new_session
from tests.functional.test_cli import inv
from tests.functional.test_watch_alarms_moto import put_alarm

BUCKET = "car-rental-dev-artifacts"
FUNCTIONS = {"health_handler": "car-rental-dev-health", "login_handler": "car-rental-dev-login"}
OLD_HANDLER = "def handler(event, context):\n    return {'statusCode': 200, 'body': 'old'}\n"


@pytest.fixture
def with_lambdas(project: Path) -> Path:
    shutil.copytree(REPO / "lambda", project / "lambda", ignore=shutil.ignore_patterns("__pycache__", "tests"))
    git(project, "add", "-A")
    git(project, "commit", "-qm", "lambdas")
    return project


def runtime(project: Path, factory: AwsFactory, stdout: io.StringIO | None = None) -> commands.Runtime:
    return commands.Runtime(
        config_path=project / "deploy.toml",
        stdout=stdout or io.StringIO(),
        stderr=io.StringIO(),
        clock=FakeClock(),
        aws_factory=lambda _env: factory,
        docker_factory=Mock(side_effect=AssertionError("the Lambda fast path must not touch Docker")),
    )


def stack(factory: AwsFactory, name: str, outputs: dict[str, str], parameters: dict[str, str] | None = None) -> None:
    """A stand-in stack with these outputs (and parameters), as CreateStack keeps them in moto."""
    parameters = parameters or {}
    template = {
        "Parameters": {k: {"Type": "String"} for k in parameters},
        "Resources": {
            "Marker": {
                "Type": "AWS::SSM::Parameter",
                "Properties": {"Name": f"/deploykit-test/{name}", "Type": "String", "Value": name},
            }
        },
        "Outputs": {k: {"Value": v} for k, v in outputs.items()},
    }
    factory.client("cloudformation").create_stack(
        StackName=name,
        TemplateBody=json.dumps(template),
        Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in parameters.items()],
    )


def old_package(fn: str) -> tuple[str, bytes]:
    data = packaging.build_zip({"handler.py": (f"# {fn}\n{OLD_HANDLER}".encode(), False)})
    return f"lambda/{fn}/{hashlib.sha256(data).hexdigest()}.zip", data


def deploy_function(factory: AwsFactory, fn: str, *, alias: bool = True) -> str:
    """A function as the API stack leaves it: old code from the bucket, version 1 described by CloudFormation,
    ``live`` → 1. Returns the old code's key."""
    key, data = old_package(fn)
    factory.client("s3").put_object(Bucket=BUCKET, Key=key, Body=data)
    lam = factory.client("lambda")
    lam.create_function(
        FunctionName=FUNCTIONS[fn],
        Runtime="python3.11",
        Role=factory.client("iam").get_role(RoleName="fn-role")["Role"]["Arn"],
        Handler="handler.handler",
        Code={"S3Bucket": BUCKET, "S3Key": key},
        Description=f"{fn} (the function's own description)",
        Environment={"Variables": {"SETTING": "one"}},
    )
    if alias:
        version = lam.publish_version(FunctionName=FUNCTIONS[fn], Description=f"code s3://{BUCKET}/{key}")["Version"]
        lam.create_alias(FunctionName=FUNCTIONS[fn], Name="live", FunctionVersion=version)
    return key


def bare_function(factory: AwsFactory, name: str, key: str, **more: Any) -> None:
    """A function made by hand from ``key`` in the artifacts bucket: no version, no alias."""
    factory.client("lambda").create_function(
        FunctionName=name,
        Runtime="python3.11",
        Role=factory.client("iam").get_role(RoleName="fn-role")["Role"]["Arn"],
        Handler="handler.handler",
        Code={"S3Bucket": BUCKET, "S3Key": key},
        **more,
    )


@pytest.fixture
def environment(with_lambdas: Path, factory: AwsFactory) -> dict[str, str]:
    """The registry stack (artifacts bucket), both functions deployed, and the API stack naming them and their
    old code keys. Returns fn → old key."""
    factory.client("iam").create_role(RoleName="fn-role", AssumeRolePolicyDocument="{}")
    factory.client("s3").create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    stack(factory, "CarRentalRegistryStack", {"ArtifactsBucketName": BUCKET})
    keys = {fn: deploy_function(factory, fn) for fn in FUNCTIONS}
    stack(
        factory,
        "CarRentalApiStack",
        {
            "HealthHandlerFunctionName": FUNCTIONS["health_handler"],
            "LoginHandlerFunctionName": FUNCTIONS["login_handler"],
        },
        {"HealthHandlerCodeKey": keys["health_handler"], "LoginHandlerCodeKey": keys["login_handler"]},
    )
    return keys


def statuses(report: Any) -> dict[str, str]:
    return {r.step: r.status for r in report.records}


def alias_version(factory: AwsFactory, fn: str) -> str:
    return str(factory.client("lambda").get_alias(FunctionName=FUNCTIONS[fn], Name="live")["FunctionVersion"])


def version_config(factory: AwsFactory, fn: str, version: str) -> dict[str, Any]:
    return dict(factory.client("lambda").get_function_configuration(FunctionName=FUNCTIONS[fn], Qualifier=version))


def package(project: Path, fn: str = "health_handler") -> packaging.Package:
    return packaging.package_function(project / "lambda" / fn)


def test_new_code_is_uploaded_updated_published_and_made_live_then_a_rerun_skips_everything(
    with_lambdas: Path, factory: AwsFactory, environment: dict[str, str]
) -> None:
    sha12 = git(with_lambdas, "rev-parse", "--short=12", "HEAD").strip()
    new = package(with_lambdas)
    out = io.StringIO()
    report = commands.deploy_lambda(
        "health_handler", env="dev", smoke=False, as_json=True, runtime=runtime(with_lambdas, factory, out)
    )
    assert report is not None and report.ok
    assert statuses(report) == {
        "upload-lambda": "done",
        "update-code": "done",
        "publish-version": "done",
        "move-alias": "done",
    }
    assert factory.client("s3").head_object(Bucket=BUCKET, Key=new.key)["ContentLength"] == len(new.zip_bytes)
    lam = factory.client("lambda")
    assert lam.get_function_configuration(FunctionName=FUNCTIONS["health_handler"])["CodeSha256"] == new.code_sha256
    assert alias_version(factory, "health_handler") == "2"
    live = version_config(factory, "health_handler", "2")
    assert live["CodeSha256"] == new.code_sha256
    assert live["Description"] == f"code s3://{BUCKET}/{new.key} git {sha12}"
    assert report.outputs()["health_handler.version"] == "2"
    assert report.outputs()["health_handler.previous_version"] == "1"
    assert json.loads(out.getvalue())["steps"][-1]["detail"] == "health_handler: live → version 2 (was 1)"
    # the other function is untouched
    assert alias_version(factory, "login_handler") == "1"
    # the run is in the environment's history, as what is live for this function
    found = history.History.of(factory, load_config(with_lambdas / "deploy.toml").environment("dev"))
    assert found is not None and found.live()["lambda:health_handler"]["sha"] == sha12

    again = commands.deploy_lambda("health_handler", env="dev", smoke=False, runtime=runtime(with_lambdas, factory))
    assert again is not None and again.ok
    assert set(statuses(again).values()) == {"skipped"}, [(r.step, r.detail) for r in again.records]
    assert [
        v["Version"] for v in lam.list_versions_by_function(FunctionName=FUNCTIONS["health_handler"])["Versions"]
    ] == [
        "$LATEST",
        "1",
        "2",
    ]


def test_a_deploy_whose_progress_reader_goes_away_runs_to_its_end(
    with_lambdas: Path, factory: AwsFactory, environment: dict[str, str]
) -> None:
    """inv deploy.lambda X 2>&1 | head -5: the pipe closes after five lines. The deploy stopped at its next line with
    a BrokenPipeError, version 2 published and the alias not moved; inv's guarded stderr lets it run to its end."""

    class ClosingPipe(io.StringIO):
        def __init__(self, lines: int) -> None:
            super().__init__()
            self.lines = lines

        def write(self, text: str) -> int:
            self.lines -= 1
            if self.lines < 0:
                raise BrokenPipeError(errno.EPIPE, "Broken pipe")
            return super().write(text)

    run = runtime(with_lambdas, factory)
    run.stderr = cast(TextIO, GuardedStream(ClosingPipe(5)))
    report = commands.deploy_lambda("health_handler", env="dev", smoke=False, runtime=run)
    assert report is not None and report.ok
    assert set(statuses(report).values()) == {"done"}
    assert alias_version(factory, "health_handler") == "2"


def test_a_deploy_that_finished_between_the_guards_reads_and_the_lock_stops_deploy_lambda_before_it_changes_anything(
    with_lambdas: Path, factory: AwsFactory, environment: dict[str, str], dev_env: EnvConfig
) -> None:
    """deploy.lambda checks its guards (a newer commit live, a rollback's) against what is live, then takes the lock:
    another deploy that finished in between (its record written just before the lock's PutObject) makes the run stop
    after its upload, before update-code; started again (as every inv task is), it deploys."""
    other: list[str] = []

    def meanwhile(params: dict[str, Any], **_: Any) -> None:
        if str(params.get("Key", "")).startswith("deploykit/lock/") and not other:
            other.append("deploy.lambda login_handler")
            store = history.History.of(factory, dev_env)
            assert store is not None
            report = RunReport(Plan("dev", (), other[0]), [], 1.0)
            sha = "c" * 12
            store.write(history.record_of(report, components={"lambda:login_handler": sha}, base={}, head=sha))

    factory.client("s3").meta.events.register("before-parameter-build.s3.PutObject", meanwhile)
    run = runtime(with_lambdas, factory)
    with pytest.raises(
        Superseded, match=r"another deploy finished meanwhile \(lambda:login_handler - → cccccccccccc\)"
    ):
        commands.deploy_lambda("health_handler", env="dev", smoke=False, runtime=run)
    assert other and alias_version(factory, "health_handler") == "1"  # nothing live changed
    said = run.stderr.getvalue()  # type: ignore[attr-defined]
    assert "✅ upload-lambda done" in said and "⏹  what is live in 'dev' changed" in said and "▶ sequence" not in said

    run = runtime(with_lambdas, factory)
    report = commands.until_unlocked(
        lambda: commands.deploy_lambda("health_handler", env="dev", smoke=False, runtime=run), run
    )
    assert report is not None and report.ok and alias_version(factory, "health_handler") == "2"


def test_a_function_with_many_versions_says_how_to_delete_old_ones(
    with_lambdas: Path, factory: AwsFactory, environment: dict[str, str]
) -> None:
    lam = factory.client("lambda")
    name = FUNCTIONS["health_handler"]
    for n in range(lambda_chain.MANY_VERSIONS - 2):  # with version 1 (the stack's), one short of the limit
        lam.update_function_configuration(FunctionName=name, Description=f"old deploy {n}")
        lam.publish_version(FunctionName=name)
    report = commands.deploy_lambda("health_handler", env="dev", smoke=False, runtime=runtime(with_lambdas, factory))
    assert report is not None and report.ok
    published = next(r.detail for r in report.records if r.step == "publish-version")
    assert "inv lambda.cleanup" not in published  # 99 before this deploy published one more
    again = commands.deploy_lambda("health_handler", env="dev", smoke=False, runtime=runtime(with_lambdas, factory))
    assert again is not None and again.ok
    published = next(r.detail for r in again.records if r.step == "publish-version")
    hint = "100 versions published, old ones can go: inv lambda.cleanup --env dev --function health_handler"
    assert published.endswith(f"; {hint}"), published


def test_move_alias_reads_the_version_and_the_alias_in_one_round_trip(
    with_lambdas: Path, factory: AwsFactory, environment: dict[str, str], dev_env: EnvConfig
) -> None:
    """Alone (a command of its own, a new factory), move-alias lists the versions while it reads the alias."""
    report = commands.deploy_lambda("health_handler", env="dev", smoke=False, runtime=runtime(with_lambdas, factory))
    assert report is not None and report.ok and alias_version(factory, "health_handler") == "2"
    factory.client("lambda").update_alias(FunctionName=FUNCTIONS["health_handler"], Name="live", FunctionVersion="1")
    new = package(with_lambdas)
    step = lambda_chain.MoveAlias("health_handler", FUNCTIONS["health_handler"], "live", new.key, new.code_sha256)
    alone = AwsFactory(dev_env)
    lam = alone.client("lambda")
    held_across(2, (lam, "ListVersionsByFunction"), (lam, "GetAlias"))  # each waits until both are in flight
    clock = FakeClock()
    ctx = Context(Mock(), dev_env, alone, clock, Reporter(io.StringIO(), tty=False, clock=clock), Mock())
    outcome = step.run(ctx)
    assert outcome.status == "done" and outcome.detail == "health_handler: live → version 2 (was 1)"
    assert alias_version(factory, "health_handler") == "2"


def test_the_chain_lists_the_versions_once_while_it_reads_latest(
    with_lambdas: Path, factory: AwsFactory, environment: dict[str, str], dev_env: EnvConfig
) -> None:
    """update-code lists the function's versions in the round trip that reads $LATEST; publish-version and
    move-alias then go by that listing, with $LATEST as the update left it and the version just published: no
    listing of their own (on AWS 50-200 ms each, and a page per 50 versions)."""
    new = package(with_lambdas)
    factory.client("s3").put_object(Bucket=BUCKET, Key=new.key, Body=new.zip_bytes)
    aws = AwsFactory(dev_env)  # one command's
    lam = aws.client("lambda")
    listed = asked(lam, "ListVersionsByFunction", "FunctionName")
    held_across(2, (lam, "ListVersionsByFunction"), (lam, "GetFunctionConfiguration"))
    clock = FakeClock()
    ctx = Context(Mock(), dev_env, aws, clock, Reporter(io.StringIO(), tty=False, clock=clock), Mock())
    name = FUNCTIONS["health_handler"]
    steps = [
        lambda_chain.UpdateFunctionCode(
            "health_handler", name, "CarRentalRegistryStack", new.key, new.code_sha256, 30, 1
        ),
        lambda_chain.PublishVersion(
            "health_handler", name, "CarRentalRegistryStack", new.key, new.code_sha256, "a" * 12
        ),
        lambda_chain.MoveAlias("health_handler", name, "live", new.key, new.code_sha256),
    ]
    assert [step.run(ctx).detail.split(": ", 1)[1] for step in steps] == [
        f"$LATEST runs {new.code_sha256[:12]}… (was {environment_code(factory, '1')[:12]}…)",
        f"version 2 (git {'a' * 12})",
        "live → version 2 (was 1)",
    ]
    assert listed == [name]
    known = {v["Version"]: v["CodeSha256"] for v in lambda_chain.Versions.of(aws).known(name)}
    assert known == {"$LATEST": new.code_sha256, "1": environment_code(factory, "1"), "2": new.code_sha256}
    assert listed == [name]  # known: no listing made for it
    assert alias_version(factory, "health_handler") == "2"


def test_a_version_a_run_left_pending_is_waited_for_again_when_it_is_reused(
    with_lambdas: Path, factory: AwsFactory, environment: dict[str, str], dev_env: EnvConfig
) -> None:
    """A run that gave up waiting for its version (still Pending: SnapStart) said to rerun; the rerun reuses that
    version, and must wait for it too before move-alias points the alias at it."""
    new = package(with_lambdas)
    factory.client("s3").put_object(Bucket=BUCKET, Key=new.key, Body=new.zip_bytes)
    aws = AwsFactory(dev_env)
    clock = FakeClock()
    ctx = Context(Mock(), dev_env, aws, clock, Reporter(io.StringIO(), tty=False, clock=clock), Mock())
    name = FUNCTIONS["health_handler"]
    update = lambda_chain.UpdateFunctionCode(
        "health_handler", name, "CarRentalRegistryStack", new.key, new.code_sha256, 30, 1
    )
    publish = lambda_chain.PublishVersion(
        "health_handler", name, "CarRentalRegistryStack", new.key, new.code_sha256, "a" * 12
    )
    update.run(ctx)
    publish.run(ctx)
    known = lambda_chain.Versions.of(aws)
    [version] = [v for v in known.known(name) if v["Version"] == "2"]
    known.published(name, {**version, "State": "Pending"})  # as the run that gave up left it
    qualifiers = asked(aws.client("lambda"), "GetFunctionConfiguration", "Qualifier")
    outcome = publish.run(ctx)
    assert outcome.status == "skipped" and "version 2 already runs this code" in outcome.detail
    assert qualifiers == ["2"]  # read until Active (moto has it Active at once)
    # listed Active: reused as it is, no read; listed without its state (ListVersionsByFunction's answer on AWS): read
    known.published(name, {**version, "State": "Active"})
    assert publish.run(ctx).status == "skipped" and qualifiers == ["2"]
    known.published(name, {k: v for k, v in version.items() if k != "State"})
    assert publish.run(ctx).status == "skipped" and qualifiers == ["2", "2"]

    def failed(parsed: dict[str, Any], **_: Any) -> None:  # Lambda failed its snapshot meanwhile
        parsed.update(State="Failed", StateReason="SnapStart snapshot failed", StateReasonCode="SnapStartNotReady")

    aws.client("lambda").meta.events.register("after-call.lambda.GetFunctionConfiguration", failed)
    with pytest.raises(
        StepFailed, match=r"Lambda failed version 2 of .*: SnapStart snapshot failed .*; the alias was not moved"
    ):
        publish.run(ctx)


def test_update_code_reads_the_alias_move_alias_moves_and_a_canary_takes_it_once(
    with_lambdas: Path, factory: AwsFactory, environment: dict[str, str], dev_env: EnvConfig
) -> None:
    """A deploy reads the alias in the round trip that reads $LATEST: move-alias then moves it at once (its RevisionId
    still guards the move), one round trip less after the publish. So is whether the alias has provisioned
    concurrency: without any, move-alias reads nothing after the move. A step that changed the alias meanwhile (the
    canary takes the kept alias, then moves it) leaves move-alias to read it anew."""
    lam = factory.client("lambda")
    aliases = asked(lam, "GetAlias", "Name")
    provisioned = asked(lam, "GetProvisionedConcurrencyConfig", "Qualifier")
    held_across(
        4,
        (lam, "ListVersionsByFunction"),
        (lam, "GetFunctionConfiguration"),
        (lam, "GetAlias"),
        (lam, "GetProvisionedConcurrencyConfig"),
    )
    deploy = partial(commands.deploy_lambda, "health_handler", env="dev", smoke=False, allow_older=True)
    report = deploy(runtime=runtime(with_lambdas, factory))  # (no read of what the alias serves before the plan)
    assert report is not None and statuses(report)["move-alias"] == "done"
    assert aliases == ["live"] and alias_version(factory, "health_handler") == "2"
    assert provisioned == ["live"]  # update-code's: none, so move-alias waits for nothing and reads nothing

    new = package(with_lambdas)  # the next command's update-code kept the alias; a canary took it and moved it
    factory.client("s3").put_object(Bucket=BUCKET, Key=new.key, Body=new.zip_bytes)
    kept = lambda_chain.aliases(factory)
    name = FUNCTIONS["health_handler"]
    kept.read((name, "live"))
    lam.update_alias(FunctionName=name, Name="live", FunctionVersion="1")  # as a canary's UpdateAlias would
    assert kept.take((name, "live"))["FunctionVersion"] == "2"  # the canary's start: as update-code read it
    aliases.clear()
    clock = FakeClock()
    ctx = Context(Mock(), dev_env, factory, clock, Reporter(io.StringIO(), tty=False, clock=clock), Mock())
    moved = lambda_chain.MoveAlias("health_handler", name, "live", new.key, new.code_sha256).run(ctx)
    assert aliases == ["live"] and moved.detail == "health_handler: live → version 2 (was 1)"


def test_update_code_reads_what_is_live_while_the_zip_is_uploaded(
    with_lambdas: Path, factory: AwsFactory, environment: dict[str, str], dev_env: EnvConfig
) -> None:
    """An upload changes nothing of the function: update-code's reads ($LATEST, the versions, the alias) go while
    the zip is sent — the four calls in flight together, one round trip where they took two — and it reads nothing
    again when it runs."""
    lam, s3 = factory.client("lambda"), factory.client("s3")
    held_across(
        4, (s3, "PutObject"), (lam, "GetFunctionConfiguration"), (lam, "ListVersionsByFunction"), (lam, "GetAlias")
    )
    new = package(with_lambdas)
    name = FUNCTIONS["health_handler"]
    plan = Plan(
        "dev",
        (
            UploadLambdaCode.of(
                "health_handler", with_lambdas / "lambda" / "health_handler", new, "CarRentalRegistryStack"
            ),
            lambda_chain.UpdateFunctionCode(
                "health_handler", name, "CarRentalRegistryStack", new.key, new.code_sha256, 30, 1, alias="live"
            ),
        ),
    )
    configurations = asked(lam, "GetFunctionConfiguration", "FunctionName")
    clock = FakeClock()
    ctx = Context(Mock(), dev_env, factory, clock, Reporter(io.StringIO(), tty=False, clock=clock), Mock())

    report = Executor(ctx).execute(plan)

    assert report.ok and [r.status for r in report.records] == ["done", "done"], report.error
    assert lam.get_function_configuration(FunctionName=name)["CodeSha256"] == new.code_sha256
    assert len(configurations) == 1 + 1  # the early read of $LATEST, then the wait for the update (none before)


def test_update_code_says_when_latest_has_other_settings_than_the_live_version(
    with_lambdas: Path, factory: AwsFactory, environment: dict[str, str]
) -> None:
    """Memory raised by hand on $LATEST (not published): the deploy publishes it, and update-code says so, with
    the setting and the live version's; a deploy whose $LATEST agrees with the live version says nothing of it."""
    name = FUNCTIONS["health_handler"]
    report = commands.deploy_lambda("health_handler", env="dev", smoke=False, runtime=runtime(with_lambdas, factory))
    assert report is not None and "settings differ" not in report.records[1].detail
    live = version_config(factory, "health_handler", alias_version(factory, "health_handler"))["MemorySize"]
    factory.client("lambda").update_function_configuration(FunctionName=name, MemorySize=live * 2)
    handler = with_lambdas / "lambda" / "health_handler" / "handler.py"
    handler.write_text(handler.read_text() + "\nFEATURE = 3\n")
    git(with_lambdas, "commit", "-qam", "feature 3")
    again = commands.deploy_lambda("health_handler", env="dev", smoke=False, runtime=runtime(with_lambdas, factory))
    assert again is not None and again.ok
    update = next(r for r in again.records if r.step == "update-code")
    assert (
        f"; ⚠️ $LATEST's settings differ from version 2's, which the alias serves: MemorySize {live * 2} (live {live}); "
        "the publish takes them live"
    ) in update.detail
    assert version_config(factory, "health_handler", alias_version(factory, "health_handler"))["MemorySize"] == live * 2


def test_settings_note_names_plain_settings_with_both_values_and_others_by_name() -> None:
    latest = {"Version": "$LATEST", "MemorySize": 512, "Environment": {"Variables": {"A": "2"}}, "Timeout": 10}
    versions = [latest, {"Version": "3", "MemorySize": 256, "Environment": {"Variables": {"A": "1"}}, "Timeout": 10}]
    note = lambda_chain.settings_note(latest, versions, {"FunctionVersion": "3"})
    assert "version 3's, which the alias serves: MemorySize 512 (live 256), Environment;" in note
    assert lambda_chain.settings_note(latest, [latest, {**latest, "Version": "3"}], {"FunctionVersion": "3"}) == ""
    assert lambda_chain.settings_note(latest, [latest], {"FunctionVersion": "3"}) == ""  # not listed: nothing said


def environment_code(factory: AwsFactory, version: str) -> str:
    return str(version_config(factory, "health_handler", version)["CodeSha256"])


def test_a_small_zip_is_sent_at_once_and_a_big_one_is_asked_about_first(
    with_lambdas: Path, factory: AwsFactory, environment: dict[str, str], dev_env: EnvConfig
) -> None:
    """A handler's zip of a few kB is put on the condition that its key is not there: one call, whether it is sent
    or already there (skipped); a zip above SMALL_ZIP, or of a size not planned, is asked about first (HeadObject),
    and not sent when it is there."""
    new = package(with_lambdas)
    s3 = factory.client("s3")
    calls: list[str] = []
    for operation in ("HeadObject", "PutObject"):
        s3.meta.events.register(f"before-call.s3.{operation}", lambda event_name, **_: calls.append(event_name))
    clock = FakeClock()
    ctx = Context(Mock(), dev_env, factory, clock, Reporter(io.StringIO(), tty=False, clock=clock), Mock())
    folder = str(with_lambdas / "lambda" / "health_handler")

    def upload(size: int) -> str:
        calls.clear()
        outcome = UploadLambdaCode("health_handler", folder, new.key, "CarRentalRegistryStack", size).run(ctx)
        return f"{outcome.status}: " + ", ".join(c.rsplit(".", 1)[1] for c in calls)

    assert len(new.zip_bytes) <= SMALL_ZIP
    assert upload(len(new.zip_bytes)) == "done: PutObject"
    assert s3.get_object(Bucket=BUCKET, Key=new.key)["Body"].read() == new.zip_bytes
    assert upload(len(new.zip_bytes)) == "skipped: PutObject, HeadObject"  # how old it is: asked when it is there
    assert upload(SMALL_ZIP + 1) == "skipped: HeadObject"
    assert upload(0) == "skipped: HeadObject"
    s3.delete_object(Bucket=BUCKET, Key=new.key)
    assert upload(SMALL_ZIP + 1) == "done: HeadObject, PutObject"
    assert s3.get_object(Bucket=BUCKET, Key=new.key)["Body"].read() == new.zip_bytes


def test_a_zip_found_there_older_than_six_hours_has_its_date_renewed_so_lambda_cleanup_keeps_it_a_day(
    with_lambdas: Path, factory: AwsFactory, environment: dict[str, str], dev_env: EnvConfig
) -> None:
    """lambda.cleanup keeps a zip for a day after its upload, for a deploy of another environment sharing the bucket
    that may be about to use it; a deploy that finds an old zip there (a rollback, code deployed before) copies it
    onto itself, its metadata kept, so that its date is now's. One S3 refuses to copy is said, not a failure."""
    new = package(with_lambdas)
    s3 = factory.client("s3")
    calls: list[str] = []
    s3.meta.events.register("before-call.s3.*", lambda event_name, **_: calls.append(event_name.rsplit(".", 1)[1]))
    clock = FakeClock(datetime.now(UTC))  # what "now" is when S3's answer has no Date (moto's has none)
    ctx = Context(Mock(), dev_env, factory, clock, Reporter(io.StringIO(), tty=False, clock=clock), Mock())
    folder = str(with_lambdas / "lambda" / "health_handler")
    s3.put_object(Bucket=BUCKET, Key=new.key, Body=new.zip_bytes, ContentType="application/zip", Metadata={"a": "b"})

    def upload(size: int) -> str:
        calls.clear()
        outcome = UploadLambdaCode("health_handler", folder, new.key, "CarRentalRegistryStack", size).run(ctx)
        return f"{outcome.status}: {outcome.detail} [{', '.join(calls)}]"

    there = f"health_handler: s3://{BUCKET}/{new.key} is already there"
    assert upload(len(new.zip_bytes)) == f"skipped: {there} [PutObject, HeadObject]"  # written just now

    older = [timedelta(hours=5)]

    def aged(parsed: dict[str, Any], **_: Any) -> None:
        if "LastModified" in parsed:
            parsed["LastModified"] -= older[0]

    s3.meta.events.register("after-call.s3.HeadObject", aged)
    assert upload(SMALL_ZIP + 1) == f"skipped: {there} [HeadObject]"  # 5 hours: not yet
    older[0] = timedelta(hours=7)
    assert upload(SMALL_ZIP + 1).endswith(" [HeadObject, CopyObject]")  # past 6 hours: well within the day's grace
    # the clock stays at the test's start while each copy dates the zip anew: an hour over, so that seconds gone by
    # do not make it "1 day ago" (it did 2 runs in 10)
    older[0] = timedelta(days=2, hours=1)
    renewed = f"skipped: {there} (uploaded 2 days ago: its date renewed, so that inv lambda.cleanup keeps it a day)"
    assert upload(len(new.zip_bytes)) == f"{renewed} [PutObject, HeadObject, CopyObject]"
    assert upload(SMALL_ZIP + 1) == f"{renewed} [HeadObject, CopyObject]"
    s3.meta.events.unregister("after-call.s3.HeadObject", aged)
    head = s3.head_object(Bucket=BUCKET, Key=new.key)
    assert (head["ContentType"], head["Metadata"]) == ("application/zip", {"a": "b"})
    assert s3.get_object(Bucket=BUCKET, Key=new.key)["Body"].read() == new.zip_bytes

    def refused(**_: Any) -> None:
        raise ClientError({"Error": {"Code": "AccessDenied", "Message": "no"}}, "CopyObject")

    s3.meta.events.register("after-call.s3.HeadObject", aged)
    s3.meta.events.register("before-call.s3.CopyObject", refused)
    assert upload(SMALL_ZIP + 1) == (
        f"skipped: {there} (uploaded 2 days ago; its date could not be renewed, AccessDenied: inv lambda.cleanup may "
        "delete it a day after its upload while a deploy still uses it) [HeadObject, CopyObject]"
    )

    def no_answer(**_: Any) -> None:  # the copy's answer lost: the zip is there all the same
        raise botocore.exceptions.ReadTimeoutError(endpoint_url="https://s3.eu-west-1.amazonaws.com")

    s3.meta.events.unregister("before-call.s3.CopyObject", refused)
    s3.meta.events.register("before-call.s3.CopyObject", no_answer)
    assert "its date could not be renewed, ReadTimeoutError: " in upload(SMALL_ZIP + 1)


MIB = 1024 * 1024


def big_pip(requirements: Path, target: Path) -> None:
    """What pip --target writes for a 6 MiB package that does not compress (as numpy's compiled code barely does)."""
    (target / "bigpkg").mkdir()
    (target / "bigpkg" / "__init__.py").write_text("VALUE = 42\n")
    (target / "bigpkg" / "blob.bin").write_bytes(random.Random(7).randbytes(6 * MIB))


@pytest.fixture
def vendored(with_lambdas: Path) -> Path:
    """health_handler with a requirement of 6 MiB, vendored into deploykit's cache (as pip would have): its folder."""
    folder = with_lambdas / "lambda" / "health_handler"
    (folder / "requirements.txt").write_text("bigpkg==1.0\n")
    packaging.package_function(folder, requirements_cache=packaging.default_vendor_cache(), installer=big_pip)
    git(with_lambdas, "add", "-A")
    git(with_lambdas, "commit", "-qm", "bigpkg")
    return folder


def sent_to(s3: Any) -> list[tuple[str, int]]:
    """Each call ``s3`` makes from now on, with the bytes its body sends (0 for none)."""
    seen: list[tuple[str, int]] = []

    def record(params: dict[str, Any], model: Any, **_: Any) -> None:
        body = params.get("Body")
        seen.append((model.name, len(body) if isinstance(body, bytes | bytearray) else 0))

    s3.meta.events.register("provide-client-params.s3.*", record)
    return seen


def change_handler(folder: Path, line: str) -> packaging.Package:
    (folder / "handler.py").write_text((folder / "handler.py").read_text() + f"\n{line}\n")
    return packaging.package_function(folder)


def test_vendored_packages_are_sent_once_and_copied_within_s3_into_each_later_zip(
    vendored: Path, factory: AwsFactory, environment: dict[str, str], dev_env: EnvConfig
) -> None:
    """A handler change beside 6 MiB of vendored packages sends the handler and the zip's directory, not the
    packages: the first zip of those requirements keeps them in the bucket under their hash, and every later zip is
    a multipart upload of a copy of them (UploadPartCopy) and the rest, sent. Each zip in S3 is its bytes exactly."""
    s3 = factory.client("s3")
    clock = FakeClock()
    ctx = Context(Mock(), dev_env, factory, clock, Reporter(io.StringIO(), tty=False, clock=clock), Mock())
    first = packaging.package_function(vendored)
    assert first.prefix_length > stack_chain.PART_MIN and len(first.zip_bytes) > SMALL_ZIP
    calls = sent_to(s3)

    outcome = UploadLambdaCode.of("health_handler", vendored, first, "CarRentalRegistryStack").run(ctx)

    assert outcome.status == "done" and "its vendored packages kept at lambda-vendored/" in outcome.detail
    assert sorted(calls) == sorted(
        [
            ("HeadObject", 0),
            ("HeadObject", 0),  # the zip and the vendored packages, at once
            ("PutObject", first.prefix_length),
            ("CreateMultipartUpload", 0),
            ("UploadPartCopy", 0),
            ("UploadPart", len(first.zip_bytes) - first.prefix_length),
            ("CompleteMultipartUpload", 0),
        ]
    )
    assert s3.get_object(Bucket=BUCKET, Key=first.key)["Body"].read() == first.zip_bytes
    kept = s3.get_object(Bucket=BUCKET, Key=first.prefix_key)
    assert kept["Body"].read() == first.zip_bytes[: first.prefix_length]
    assert kept["Metadata"] == {"sha256": first.prefix_sha256}

    second = change_handler(vendored, "CHANGED = 2")
    assert second.prefix_key == first.prefix_key
    calls.clear()
    declared = asked(s3, "CreateMultipartUpload", "ChecksumAlgorithm")
    part = asked(s3, "UploadPart", "ChecksumAlgorithm")
    completed = asked(s3, "CompleteMultipartUpload", "MultipartUpload")
    outcome = UploadLambdaCode.of("health_handler", vendored, second, "CarRentalRegistryStack").run(ctx)
    # as boto3's own multipart uploads: CRC32 declared, the part sent with its CRC32 (asked for by name: even where
    # the SDK sends checksums only when required), and each part's CRC32 S3 answered named in the completion
    assert declared == ["CRC32"] and part == ["CRC32"] and "ChecksumCRC32" in completed[0]["Parts"][1]

    tail = len(second.zip_bytes) - second.prefix_length
    assert outcome.status == "done"
    assert f"{tail} B sent (its {second.prefix_length} B of vendored packages copied within S3" in outcome.detail
    assert sum(size for _, size in calls) == tail < SMALL_ZIP and ("PutObject", second.prefix_length) not in calls
    assert s3.get_object(Bucket=BUCKET, Key=second.key)["Body"].read() == second.zip_bytes

    calls.clear()
    again = UploadLambdaCode.of("health_handler", vendored, second, "CarRentalRegistryStack").run(ctx)
    assert again.status == "skipped" and calls == [("HeadObject", 0), ("HeadObject", 0)]
    assert "Uploads" not in s3.list_multipart_uploads(Bucket=BUCKET)


def test_vendored_packages_not_as_kept_are_put_again_and_gone_ones_make_the_zip_go_whole(
    vendored: Path, factory: AwsFactory, environment: dict[str, str], dev_env: EnvConfig
) -> None:
    """Something else at the vendored packages' key (of the right size) is not copied from: they are put again.
    When they are gone by the time S3 is to copy them, or S3 refuses the copy, the upload is aborted and the zip sent
    whole, saying why; when a part fails otherwise (the uplink drops), the upload is aborted and the failure raised,
    the zip not there."""
    s3 = factory.client("s3")
    clock = FakeClock()
    ctx = Context(Mock(), dev_env, factory, clock, Reporter(io.StringIO(), tty=False, clock=clock), Mock())
    first = packaging.package_function(vendored)
    s3.put_object(Bucket=BUCKET, Key=first.prefix_key, Body=bytes(first.prefix_length))  # zeros, no checksum
    outcome = UploadLambdaCode.of("health_handler", vendored, first, "CarRentalRegistryStack").run(ctx)
    assert "kept at" in outcome.detail
    assert s3.get_object(Bucket=BUCKET, Key=first.key)["Body"].read() == first.zip_bytes

    second = change_handler(vendored, "CHANGED = 2")

    def gone(**_: Any) -> None:  # after the HeadObject found them, before the copy
        s3.delete_object(Bucket=BUCKET, Key=second.prefix_key)

    s3.meta.events.register("before-call.s3.CreateMultipartUpload", gone)
    outcome = UploadLambdaCode.of("health_handler", vendored, second, "CarRentalRegistryStack").run(ctx)
    s3.meta.events.unregister("before-call.s3.CreateMultipartUpload", gone)
    assert outcome.status == "done" and f"{len(second.zip_bytes)} B sent (sent whole:" in outcome.detail
    assert s3.get_object(Bucket=BUCKET, Key=second.key)["Body"].read() == second.zip_bytes
    assert "Uploads" not in s3.list_multipart_uploads(Bucket=BUCKET)

    refused_once = change_handler(vendored, "CHANGED = 2b")

    def denied(**_: Any) -> None:  # the caller may not read lambda-vendored/ (a policy left it out)
        raise ClientError({"Error": {"Code": "AccessDenied", "Message": "Access Denied"}}, "UploadPartCopy")

    s3.meta.events.register("before-call.s3.UploadPartCopy", denied)
    outcome = UploadLambdaCode.of("health_handler", vendored, refused_once, "CarRentalRegistryStack").run(ctx)
    s3.meta.events.unregister("before-call.s3.UploadPartCopy", denied)
    assert (
        outcome.status == "done" and "sent whole: S3 would not put it together from lambda-vendored/" in outcome.detail
    )
    assert "(AccessDenied: " in outcome.detail
    sent_whole = s3.get_object(Bucket=BUCKET, Key=refused_once.key)
    assert sent_whole["Body"].read() == refused_once.zip_bytes
    assert sent_whole["Metadata"] == {"vendored": refused_once.prefix_sha256}  # for lambda.cleanup, as put together
    assert "Uploads" not in s3.list_multipart_uploads(Bucket=BUCKET)

    third = change_handler(vendored, "CHANGED = 3")
    s3.put_object(Bucket=BUCKET, Key=third.prefix_key, Body=third.zip_bytes[: third.prefix_length])

    def fail(**_: Any) -> None:
        raise ConnectionResetError("the uplink dropped")

    s3.meta.events.register("before-call.s3.UploadPart", fail)
    with pytest.raises(ConnectionResetError):
        UploadLambdaCode.of("health_handler", vendored, third, "CarRentalRegistryStack").run(ctx)
    s3.meta.events.unregister("before-call.s3.UploadPart", fail)
    assert "Uploads" not in s3.list_multipart_uploads(Bucket=BUCKET)
    assert not s3.list_objects_v2(Bucket=BUCKET, Prefix=third.key).get("Contents")


def test_a_caller_that_may_not_read_the_vendored_packages_sends_the_zip_whole(
    vendored: Path, factory: AwsFactory, environment: dict[str, str], dev_env: EnvConfig
) -> None:
    """A deploy role whose policy leaves out lambda-vendored/* may not read the vendored packages' object: S3 answers
    its HeadObject 403 (as it answers UploadPartCopy AccessDenied). The upload failed with 'AWS HeadObject failed
    (403)' where the zip goes whole, saying why, as when S3 refuses the copy."""
    s3 = factory.client("s3")
    clock = FakeClock()
    ctx = Context(Mock(), dev_env, factory, clock, Reporter(io.StringIO(), tty=False, clock=clock), Mock())
    first = packaging.package_function(vendored)
    s3.put_object(Bucket=BUCKET, Key=first.prefix_key, Body=first.zip_bytes[: first.prefix_length])

    def forbidden(params: dict[str, Any], **_: Any) -> None:
        if str(params.get("Key", "")).startswith(f"{packaging.VENDORED_KEY_PREFIX}/"):
            raise ClientError({"Error": {"Code": "403", "Message": "Forbidden"}}, "HeadObject")

    def denied(**_: Any) -> None:
        raise ClientError({"Error": {"Code": "AccessDenied", "Message": "Access Denied"}}, "UploadPartCopy")

    s3.meta.events.register("before-parameter-build.s3.HeadObject", forbidden)
    s3.meta.events.register("before-call.s3.UploadPartCopy", denied)
    calls = sent_to(s3)
    outcome = UploadLambdaCode.of("health_handler", vendored, first, "CarRentalRegistryStack").run(ctx)

    assert outcome.status == "done", outcome.detail
    assert f"{len(first.zip_bytes)} B sent (sent whole: " in outcome.detail and "(403: " in outcome.detail
    assert ("PutObject", len(first.zip_bytes)) in calls and ("PutObject", first.prefix_length) not in calls
    assert s3.get_object(Bucket=BUCKET, Key=first.key)["Body"].read() == first.zip_bytes
    assert "Uploads" not in s3.list_multipart_uploads(Bucket=BUCKET)


def test_a_handler_change_beside_vendored_packages_deploys_what_lambda_reads_back(
    vendored: Path, factory: AwsFactory, environment: dict[str, str]
) -> None:
    """deploy.lambda twice, the handler changed between: the second zip, put together in S3, is what Lambda runs
    (update-code compares its CodeSha256 with the zip's)."""
    first = commands.deploy_lambda(
        "health_handler", env="dev", smoke=False, runtime=runtime(vendored.parents[1], factory)
    )
    assert first is not None and first.ok
    second = change_handler(vendored, "CHANGED = 2")
    git(vendored.parents[1], "commit", "-qam", "handler")

    report = commands.deploy_lambda(
        "health_handler", env="dev", smoke=False, runtime=runtime(vendored.parents[1], factory)
    )

    assert report is not None and report.ok, [(r.step, r.detail) for r in report.records]
    upload = next(r.detail for r in report.records if r.step == "upload-lambda")
    assert "vendored packages copied within S3" in upload
    assert version_config(factory, "health_handler", alias_version(factory, "health_handler"))["CodeSha256"] == (
        second.code_sha256
    )


def test_compiled_code_vendored_for_x86_64_is_refused_on_an_arm64_function(
    with_lambdas: Path, factory: AwsFactory, environment: dict[str, str], dev_env: EnvConfig
) -> None:
    """numpy's wheels vendored for x86_64 do not import on Graviton: update-code refuses before changing the
    function; pure-Python code (compiled_for "") runs on either."""
    lam = factory.client("lambda")
    bare_function(factory, "car-rental-dev-fleet", environment["health_handler"], Architectures=["arm64"])
    before = lam.get_function_configuration(FunctionName="car-rental-dev-fleet")
    new = package(with_lambdas)
    clock = FakeClock()
    ctx = Context(Mock(), dev_env, factory, clock, Reporter(io.StringIO(), tty=False, clock=clock), Mock())

    def update(compiled_for: str) -> lambda_chain.UpdateFunctionCode:
        return lambda_chain.UpdateFunctionCode(
            "fleet", "car-rental-dev-fleet", "CarRentalRegistryStack", new.key, new.code_sha256, 30, 1, compiled_for
        )

    with pytest.raises(UsageError, match="runs on arm64, but the compiled code vendored from ") as refused:
        update(packaging.DEFAULT_ARCHITECTURE).run(ctx)
    assert refused.value.exit_code == 2 and "[build] lambda_architecture is x86_64" in (refused.value.next_step or "")
    assert "set lambda_architecture = 'arm64'" in (refused.value.next_step or "")
    assert lam.get_function_configuration(FunctionName="car-rental-dev-fleet")["CodeSha256"] == before["CodeSha256"]

    factory.client("s3").put_object(Bucket=BUCKET, Key=new.key, Body=new.zip_bytes)
    assert update("").run(ctx).status == "done"


def test_compiled_code_vendored_for_another_python_is_refused_and_the_plan_asks_it_off_the_sandbox_only(
    with_lambdas: Path, factory: AwsFactory, environment: dict[str, str], dev_env: EnvConfig, vendored: Path
) -> None:
    """Wheels vendored for CPython 3.12 do not import on python3.11: update-code refuses before changing the function
    (deploy.toml's lambda_runtime changed, the stack not deployed since). The plan asks it of a zip with vendored
    packages, off the sandbox, which runs functions on its own Python."""
    lam = factory.client("lambda")
    before = lam.get_function_configuration(FunctionName=FUNCTIONS["health_handler"])
    new = package(with_lambdas)
    clock = FakeClock()
    ctx = Context(Mock(), dev_env, factory, clock, Reporter(io.StringIO(), tty=False, clock=clock), Mock())
    update = lambda_chain.UpdateFunctionCode(
        "health_handler",
        FUNCTIONS["health_handler"],
        "CarRentalRegistryStack",
        new.key,
        new.code_sha256,
        30,
        1,
        "x86_64",
        "live",
        "3.12",
    )
    with pytest.raises(UsageError, match=r"runs on python3\.11, but the compiled code vendored from ") as refused:
        update.run(ctx)
    assert refused.value.exit_code == 2 and "[build] lambda_runtime is python3.12" in (refused.value.next_step or "")
    assert "set lambda_runtime = 'python3.11'" in (refused.value.next_step or "")
    assert (
        lam.get_function_configuration(FunctionName=FUNCTIONS["health_handler"])["CodeSha256"] == before["CodeSha256"]
    )

    made = dataclasses.replace(new, compiled_for="x86_64", python="3.12")
    steps = lambda_chain.code_steps(dev_env, "health_handler", "fn", vendored, made, "sha")
    assert [s.python for s in steps if isinstance(s, lambda_chain.UpdateFunctionCode)] == ["3.12"]
    here = dataclasses.replace(dev_env, endpoint_url="http://127.0.0.1:4566")
    steps = lambda_chain.code_steps(here, "health_handler", "fn", vendored, made, "sha")
    assert [s.python for s in steps if isinstance(s, lambda_chain.UpdateFunctionCode)] == [""]
    plain = dataclasses.replace(new, compiled_for="", python="3.12")
    steps = lambda_chain.code_steps(dev_env, "health_handler", "fn", vendored, plain, "sha")
    assert [s.python for s in steps if isinstance(s, lambda_chain.UpdateFunctionCode)] == [""]


def test_a_deploy_describes_each_stack_once(
    with_lambdas: Path, factory: AwsFactory, environment: dict[str, str]
) -> None:
    """The artifacts bucket is needed by the lock, the live record, three steps and the history record; the
    function names by the plan: the command reads each stack once (on AWS 100-300 ms a read)."""
    described = asked(factory.client("cloudformation"), "DescribeStacks", "StackName")
    report = commands.deploy_lambda("health_handler", env="dev", smoke=False, runtime=runtime(with_lambdas, factory))
    assert report is not None and report.ok and statuses(report)["update-code"] == "done"
    assert described.count("CarRentalRegistryStack") == 1 and described.count("CarRentalApiStack") == 1, described


def test_the_same_code_at_another_commit_is_skipped_content_addressed(
    with_lambdas: Path, factory: AwsFactory, environment: dict[str, str]
) -> None:
    first = commands.deploy_lambda("health_handler", env="dev", smoke=False, runtime=runtime(with_lambdas, factory))
    assert first is not None
    deployed_at = git(with_lambdas, "rev-parse", "--short=12", "HEAD").strip()
    (with_lambdas / "NOTES.md").write_text("not code\n")
    git(with_lambdas, "add", "-A")
    git(with_lambdas, "commit", "-qm", "notes")
    again = commands.deploy_lambda("health_handler", env="dev", smoke=False, runtime=runtime(with_lambdas, factory))
    assert again is not None and set(statuses(again).values()) == {"skipped"}
    assert alias_version(factory, "health_handler") == "2"
    # what is live is still described by the commit that deployed it
    lam = factory.client("lambda")
    assert lambda_chain.live_git_sha(lam, FUNCTIONS["health_handler"]) == deployed_at


def test_a_rollback_reuses_the_version_that_has_the_code_and_the_current_configuration(
    with_lambdas: Path, factory: AwsFactory, environment: dict[str, str]
) -> None:
    lam = factory.client("lambda")
    name = FUNCTIONS["health_handler"]
    handler = with_lambdas / "lambda" / "health_handler" / "handler.py"
    original = handler.read_text()
    commands.deploy_lambda("health_handler", env="dev", smoke=False, runtime=runtime(with_lambdas, factory))
    assert alias_version(factory, "health_handler") == "2"

    handler.write_text(original + "\nFEATURE = 2\n")
    git(with_lambdas, "commit", "-qam", "feature 2")
    commands.deploy_lambda("health_handler", env="dev", smoke=False, runtime=runtime(with_lambdas, factory))
    assert alias_version(factory, "health_handler") == "3"

    handler.write_text(original)  # back to the code of version 2: that version is live again, nothing published
    git(with_lambdas, "commit", "-qam", "revert feature 2")
    back = commands.deploy_lambda("health_handler", env="dev", smoke=False, runtime=runtime(with_lambdas, factory))
    assert back is not None
    assert statuses(back) == {
        "upload-lambda": "skipped",
        "update-code": "done",
        "publish-version": "skipped",
        "move-alias": "done",
    }
    assert alias_version(factory, "health_handler") == "2"
    assert lam.get_function_configuration(FunctionName=name)["CodeSha256"] == package(with_lambdas).code_sha256

    # the configuration changed since version 2 (as a stack deploy would change it): the same code is published
    # again with the new configuration, never version 2 with the old one
    lam.update_function_configuration(FunctionName=name, Environment={"Variables": {"SETTING": "two"}})
    handler.write_text(original + "\nFEATURE = 2\n")
    git(with_lambdas, "commit", "-qam", "feature 2 again")
    commands.deploy_lambda("health_handler", env="dev", smoke=False, runtime=runtime(with_lambdas, factory))
    handler.write_text(original)
    git(with_lambdas, "commit", "-qam", "revert feature 2 again")
    commands.deploy_lambda("health_handler", env="dev", smoke=False, runtime=runtime(with_lambdas, factory))
    live = alias_version(factory, "health_handler")
    assert live not in ("1", "2", "3")
    assert version_config(factory, "health_handler", live)["Environment"] == {"Variables": {"SETTING": "two"}}
    assert version_config(factory, "health_handler", live)["CodeSha256"] == package(with_lambdas).code_sha256


def test_a_checkout_behind_what_the_alias_serves_is_refused_unless_allow_older(
    with_lambdas: Path, factory: AwsFactory, environment: dict[str, str]
) -> None:
    handler = with_lambdas / "lambda" / "health_handler" / "handler.py"
    old = git(with_lambdas, "rev-parse", "HEAD").strip()
    handler.write_text(handler.read_text() + "\nFEATURE = 2\n")
    git(with_lambdas, "commit", "-qam", "feature 2")
    commands.deploy_lambda("health_handler", env="dev", smoke=False, runtime=runtime(with_lambdas, factory))
    assert alias_version(factory, "health_handler") == "2"

    git(with_lambdas, "checkout", "-q", old)  # an out-of-date checkout
    with pytest.raises(UsageError, match=r"HEAD \(\w{12}\) is behind what dev runs: lambda:health_handler") as err:
        commands.deploy_lambda("health_handler", env="dev", smoke=False, runtime=runtime(with_lambdas, factory))
    assert "--allow-older" in (err.value.next_step or "")
    assert alias_version(factory, "health_handler") == "2"  # nothing changed
    back = commands.deploy_lambda(
        "health_handler", env="dev", smoke=False, allow_older=True, runtime=runtime(with_lambdas, factory)
    )
    assert back is not None and statuses(back)["move-alias"] == "done"
    assert alias_version(factory, "health_handler") != "2"


@pytest.mark.parametrize("dry_run", [False, True])
def test_a_version_that_names_no_commit_is_guarded_by_the_commit_the_live_record_names(
    with_lambdas: Path, factory: AwsFactory, environment: dict[str, str], dry_run: bool
) -> None:
    """The alias serves a version a person (or CloudFormation) published: its description names no commit, and the
    guard against going back let an out-of-date checkout through. It reads the live record's commit then, as
    deploy.auto does."""
    handler = with_lambdas / "lambda" / "health_handler" / "handler.py"
    old = git(with_lambdas, "rev-parse", "HEAD").strip()
    handler.write_text(handler.read_text() + "\nFEATURE = 2\n")
    git(with_lambdas, "commit", "-qam", "feature 2")
    commands.deploy_lambda("health_handler", env="dev", smoke=False, runtime=runtime(with_lambdas, factory))
    lam, name = factory.client("lambda"), FUNCTIONS["health_handler"]
    lam.update_function_configuration(FunctionName=name, Description="memory raised by hand")
    by_hand = lam.publish_version(FunctionName=name, Description="memory raised by hand")["Version"]
    lam.update_alias(FunctionName=name, Name="live", FunctionVersion=by_hand)
    assert lambda_chain.live_git_sha(lam, name) is None  # the version names no commit

    git(with_lambdas, "checkout", "-q", old)  # an out-of-date checkout
    with pytest.raises(UsageError, match=r"HEAD \(\w{12}\) is behind what dev runs: lambda:health_handler"):
        commands.deploy_lambda(
            "health_handler", env="dev", smoke=False, dry_run=dry_run, runtime=runtime(with_lambdas, factory)
        )
    assert alias_version(factory, "health_handler") == by_hand  # nothing changed


def test_a_function_a_rollback_took_off_is_refused_unless_allow_rolled_back(
    with_lambdas: Path, factory: AwsFactory, environment: dict[str, str], dev_env: EnvConfig
) -> None:
    """A person rolled health_handler back from HEAD's commit (its version 2 to 1): deploying HEAD would bring that
    release back, which deploy.auto refuses: refused too, the alias left as the rollback put it."""
    handler = with_lambdas / "lambda" / "health_handler" / "handler.py"
    before = git(with_lambdas, "rev-parse", "--short=12", "HEAD").strip()
    handler.write_text(handler.read_text() + "\nFEATURE = 2\n")
    git(with_lambdas, "commit", "-qam", "feature 2")
    head = git(with_lambdas, "rev-parse", "--short=12", "HEAD").strip()
    commands.deploy_lambda("health_handler", env="dev", smoke=False, runtime=runtime(with_lambdas, factory))
    factory.client("lambda").update_alias(FunctionName=FUNCTIONS["health_handler"], Name="live", FunctionVersion="1")
    store = history.History.of(factory, dev_env)
    assert store is not None
    undo = RunReport(Plan("dev", (), f"rollback lambda:health_handler → {before}"), [], 1.0)
    component = "lambda:health_handler"
    store.write(history.record_of(undo, components={component: before}, base={component: head}, head=before))

    with pytest.raises(UsageError, match=rf"HEAD \({head}\) would bring back what a rollback took dev off") as no:
        commands.deploy_lambda("health_handler", env="dev", smoke=False, runtime=runtime(with_lambdas, factory))
    assert no.value.exit_code == 2 and "--allow-rolled-back" in (no.value.next_step or "")
    assert alias_version(factory, "health_handler") == "1"  # nothing changed
    again = commands.deploy_lambda(
        "health_handler", env="dev", smoke=False, allow_rolled_back=True, runtime=runtime(with_lambdas, factory)
    )
    assert again is not None and statuses(again)["move-alias"] == "done"
    assert alias_version(factory, "health_handler") == "2"


def test_a_rollback_puts_latest_back_on_the_code_the_alias_serves_again(
    with_lambdas: Path, factory: AwsFactory, environment: dict[str, str]
) -> None:
    """After a rollback the alias serves the version it goes back to, and $LATEST, which a deploy of the stack holding
    the function publishes whenever it changes the function's settings, runs that version's code too, not the code
    rolled back."""
    lam, name = factory.client("lambda"), FUNCTIONS["health_handler"]
    handler = with_lambdas / "lambda" / "health_handler" / "handler.py"
    commands.deploy_lambda("health_handler", env="dev", smoke=False, runtime=runtime(with_lambdas, factory))
    good = package(with_lambdas).code_sha256
    handler.write_text(handler.read_text() + "\nFEATURE = 2\n")
    git(with_lambdas, "commit", "-qam", "feature 2")
    commands.deploy_lambda("health_handler", env="dev", smoke=False, runtime=runtime(with_lambdas, factory))
    bad = package(with_lambdas).code_sha256
    assert (
        alias_version(factory, "health_handler"),
        lam.get_function_configuration(FunctionName=name)["CodeSha256"],
    ) == ("3", bad)
    report = commands.rollback(
        env="dev", component="lambda:health_handler", smoke=False, runtime=runtime(with_lambdas, factory)
    )
    assert report is not None and report.ok
    [moved] = report.records
    assert moved.detail.endswith(f"; $LATEST back on its code {good[:12]}… (was {bad[:12]}…)"), moved.detail
    assert alias_version(factory, "health_handler") == "2"
    assert lam.get_function_configuration(FunctionName=name)["CodeSha256"] == good


def test_live_code_keys_and_git_sha_read_both_cloudformation_and_fast_path_descriptions(
    with_lambdas: Path, factory: AwsFactory, environment: dict[str, str]
) -> None:
    lam = factory.client("lambda")
    # CloudFormation's versions: the key, no commit
    assert lambda_chain.live_code_keys(lam, FUNCTIONS) == environment
    assert lambda_chain.live_git_sha(lam, FUNCTIONS["login_handler"]) is None

    commands.deploy_lambda("health_handler", env="dev", smoke=False, runtime=runtime(with_lambdas, factory))
    sha12 = git(with_lambdas, "rev-parse", "--short=12", "HEAD").strip()
    assert lambda_chain.live_code_keys(lam, FUNCTIONS) == {
        "health_handler": package(with_lambdas).key,
        "login_handler": environment["login_handler"],
    }
    assert lambda_chain.live_git_sha(lam, FUNCTIONS["health_handler"]) == sha12

    # no function, no alias, or a description naming no code: left out / None
    bare_function(factory, "hand-made", environment["login_handler"])
    assert lambda_chain.live_code_keys(lam, {"hand_made": "hand-made", "gone": "no-such-function"}) == {}
    lam.create_alias(
        FunctionName="hand-made",
        Name="live",
        FunctionVersion=lam.publish_version(FunctionName="hand-made", Description="by hand")["Version"],
    )
    assert lambda_chain.live_code_keys(lam, {"hand_made": "hand-made"}) == {}
    assert lambda_chain.live_git_sha(lam, "hand-made") is None
    assert lambda_chain.live_git_sha(lam, "no-such-function") is None


def test_current_code_keys_prefer_what_the_alias_serves_over_the_stack_parameter(
    with_lambdas: Path, factory: AwsFactory, environment: dict[str, str]
) -> None:
    config = load_config(with_lambdas / "deploy.toml")
    env = config.environment("dev")
    assert commands.current_code_keys(factory, config, env) == (environment, [])

    commands.deploy_lambda("health_handler", env="dev", smoke=False, runtime=runtime(with_lambdas, factory))
    keys, missing = commands.current_code_keys(factory, config, env)
    assert keys == {"health_handler": package(with_lambdas).key, "login_handler": environment["login_handler"]}
    assert missing == []
    # the stack's parameter still names the old code: a stack deploy passing it would have reverted the fast path
    assert stack_parameters(factory, "CarRentalApiStack")["HealthHandlerCodeKey"] == environment["health_handler"]
    assert code_given(factory, env, ["health_handler", "login_handler"]) == environment  # as deploy.auto reads it

    # no alias (a version never published): the stack's parameter
    lam = factory.client("lambda")
    lam.delete_alias(FunctionName=FUNCTIONS["login_handler"], Name="live")
    assert commands.current_code_keys(factory, config, env)[0]["login_handler"] == environment["login_handler"]


def test_current_code_keys_keep_the_code_of_a_version_a_person_published_when_deploykit_uploaded_it(
    with_lambdas: Path, factory: AwsFactory, environment: dict[str, str]
) -> None:
    """A version published by hand (a setting changed in an incident) names no code in its description: the key is
    the zip deploykit uploaded that code as (named by its content), so a later stack deploy keeps the fast path's
    code, where it went back to the stack's parameter and reverted it. Code a person uploaded some other way: the
    parameter, as before."""
    config = load_config(with_lambdas / "deploy.toml")
    env = config.environment("dev")
    commands.deploy_lambda("health_handler", env="dev", smoke=False, runtime=runtime(with_lambdas, factory))
    lam, name = factory.client("lambda"), FUNCTIONS["health_handler"]

    def publish_by_hand() -> None:
        lam.update_function_configuration(FunctionName=name, Description="memory raised by hand")
        version = lam.publish_version(FunctionName=name, Description="memory raised by hand")["Version"]
        lam.update_alias(FunctionName=name, Name="live", FunctionVersion=version)

    publish_by_hand()
    assert (
        lambda_chain.code_key(lam.get_function_configuration(FunctionName=name, Qualifier="live")["Description"])
        is None
    )
    assert commands.current_code_keys(factory, config, env)[0]["health_handler"] == package(with_lambdas).key

    _key, other = old_package("other")  # uploaded straight to Lambda, never to the bucket
    lam.update_function_code(FunctionName=name, ZipFile=other)
    publish_by_hand()
    assert commands.current_code_keys(factory, config, env)[0]["health_handler"] == environment["health_handler"]


def test_current_code_keys_give_this_commits_zips_to_functions_never_deployed(
    with_lambdas: Path, factory: AwsFactory
) -> None:
    config = load_config(with_lambdas / "deploy.toml")
    keys, missing = commands.current_code_keys(factory, config, config.environment("dev"))
    assert missing == ["health_handler", "login_handler"]
    assert keys == {fn: package(with_lambdas, fn).key for fn in missing}


def test_an_unknown_function_is_refused_naming_the_functions_of_lambda(with_lambdas: Path, factory: AwsFactory) -> None:
    with pytest.raises(UsageError, match="unknown Lambda function 'helth_handler'") as err:
        commands.deploy_lambda("helth_handler", env="dev", runtime=runtime(with_lambdas, factory))
    assert "health_handler, login_handler" in (err.value.next_step or "")


def test_a_handler_that_does_not_compile_is_refused_before_anything_is_packaged(
    with_lambdas: Path, factory: AwsFactory
) -> None:
    """Refused (exit 2) before AWS is asked anything: a version that raises on every call is never published. A test
    of the function (not in its zip) is not judged."""
    handler = with_lambdas / "lambda" / "health_handler" / "handler.py"
    handler.write_text(handler.read_text() + "\n\ndef half_made(event:\n")
    (with_lambdas / "lambda" / "health_handler" / "tests").mkdir(exist_ok=True)
    (with_lambdas / "lambda" / "health_handler" / "tests" / "test_wip.py").write_text("def (:\n")
    lines = len(handler.read_text().splitlines())
    with pytest.raises(UsageError) as refused:
        commands.deploy_lambda("health_handler", env="dev", allow_dirty=True, runtime=runtime(with_lambdas, factory))
    assert refused.value.exit_code == 2
    assert refused.value.message.startswith(
        f"1 lambda:health_handler Python file does not compile: lambda/health_handler/handler.py:{lines}: "
    )


def test_a_function_that_would_not_import_on_lambda_is_refused_before_anything_is_uploaded(
    with_lambdas: Path, factory: AwsFactory, environment: dict[str, str]
) -> None:
    """This machine has requests installed (the sandbox would import it); Lambda's runtime has not and the zip does
    not vendor it: refused (exit 2), the zip not uploaded, no version published, the alias where it was. A dry run
    says so under its plan; $DEPLOYKIT_SKIP_IMPORT_CHECK=1, or deploy.toml naming the module a layer gives, let it
    through."""
    handler = with_lambdas / "lambda" / "health_handler" / "handler.py"
    handler.write_text(handler.read_text() + "\nimport requests\n")
    line = len(handler.read_text().splitlines())
    git(with_lambdas, "commit", "-qam", "requests")
    made = package(with_lambdas)
    with pytest.raises(UsageError) as refused:
        commands.deploy_lambda("health_handler", env="dev", runtime=runtime(with_lambdas, factory))
    assert refused.value.exit_code == 2
    assert refused.value.message == (
        f"lambda/health_handler would not import on Lambda: handler.py:{line}: imports requests, which neither the "
        "zip (the function's files, its vendored requirements) nor Lambda's Python runtime (the standard library, the "
        "AWS SDK) has"
    )
    assert (refused.value.next_step or "").startswith("add what is missing to the function's requirements.txt")
    assert alias_version(factory, "health_handler") == "1"
    s3 = factory.client("s3")
    assert s3.list_objects_v2(Bucket=BUCKET, Prefix=made.key)["KeyCount"] == 0

    dry = runtime(with_lambdas, factory)
    assert commands.deploy_lambda("health_handler", env="dev", dry_run=True, runtime=dry) is None
    assert f"⚠️  lambda/health_handler would not import on Lambda: handler.py:{line}: imports requests" in said(dry)
    assert "the deploy would be refused" in said(dry) and "upload-lambda" in said(dry)

    toml = with_lambdas / "deploy.toml"
    toml.write_text(toml.read_text().replace("[build]\n", '[build]\nlambda_runtime_modules = ["requests"]\n', 1))
    git(with_lambdas, "commit", "-qam", "a layer gives requests")
    report = commands.deploy_lambda("health_handler", env="dev", smoke=False, runtime=runtime(with_lambdas, factory))
    assert report is not None and report.ok
    assert s3.list_objects_v2(Bucket=BUCKET, Prefix=made.key)["KeyCount"] == 1


def test_the_import_check_judges_the_handler_the_alias_serves(
    with_lambdas: Path, factory: AwsFactory, environment: dict[str, str]
) -> None:
    """handler.py's function renamed to main: refused while the version live serves Handler handler.handler (every
    call would be Runtime.HandlerNotFound); let through once it serves handler.main (its stack changed it)."""
    handler = with_lambdas / "lambda" / "health_handler" / "handler.py"
    handler.write_text(handler.read_text().replace("\ndef handler(", "\ndef main("))
    git(with_lambdas, "commit", "-qam", "health: main")
    with pytest.raises(UsageError) as refused:
        commands.deploy_lambda("health_handler", env="dev", smoke=False, runtime=runtime(with_lambdas, factory))
    assert refused.value.message == (
        "lambda/health_handler would not import on Lambda: handler.py: defines no handler: Lambda calls "
        "handler.handler(event, context) (Runtime.HandlerNotFound)"
    )
    lam, name = factory.client("lambda"), FUNCTIONS["health_handler"]
    lam.update_function_configuration(FunctionName=name, Handler="handler.main")
    version = lam.publish_version(FunctionName=name)["Version"]
    lam.update_alias(FunctionName=name, Name="live", FunctionVersion=version)
    report = commands.deploy_lambda("health_handler", env="dev", smoke=False, runtime=runtime(with_lambdas, factory))
    assert report is not None and report.ok


def test_lambda_check_judges_every_function_without_aws(with_lambdas: Path) -> None:
    """inv lambda.check: each function of lambda/ as the work tree has it, for deploy.toml's runtime and architecture,
    no environment read (the factory fails any AWS call); exit 1 naming the ones that would not import."""
    rt = dataclasses.replace(runtime(with_lambdas, Mock(spec=AwsFactory)), aws_factory=Mock(side_effect=AssertionError))
    assert commands.lambda_check(as_json=True, runtime=rt) == {"health_handler": [], "login_handler": []}
    assert json.loads(rt.stdout.getvalue())["runtime"] == "python3.11"  # type: ignore[attr-defined]
    handler = with_lambdas / "lambda" / "health_handler" / "handler.py"
    handler.write_text(handler.read_text() + "\nimport yaml\n")  # uncommitted: what a commit hook sees
    rt = dataclasses.replace(rt, stderr=io.StringIO())
    with pytest.raises(StepFailed) as failed:
        commands.lambda_check(runtime=rt)
    assert failed.value.exit_code == 1
    assert failed.value.message == "1 of 2 functions would not import on Lambda: health_handler"
    said = rt.stderr.getvalue()  # type: ignore[attr-defined]
    assert "❌ lambda/health_handler would not import on Lambda (python3.11 on x86_64): handler.py:" in said
    assert "✅ lambda/login_handler imports on Lambda (python3.11 on x86_64) as far as its zip says" in said
    assert commands.lambda_check(function="login_handler", runtime=rt) == {"login_handler": []}
    with pytest.raises(UsageError, match="unknown Lambda function 'nope'"):
        commands.lambda_check(function="nope", runtime=rt)


def test_lambda_check_says_a_runtime_aws_deprecates_soon(with_lambdas: Path) -> None:
    """AWS deprecates python3.11 on 2027-06-30 and tells its users 180 days before: so does lambda.check, of
    deploy.toml's setting, with the runtimes to move to (its JSON too), without failing. Before then, nothing."""

    def told(day: datetime) -> tuple[str, dict[str, Any]]:
        rt = dataclasses.replace(runtime(with_lambdas, Mock(spec=AwsFactory)), clock=FakeClock(day))
        commands.lambda_check(as_json=True, runtime=rt)
        return rt.stderr.getvalue(), json.loads(rt.stdout.getvalue())  # type: ignore[attr-defined]

    said, shown = told(datetime(2027, 1, 15, tzinfo=UTC))
    assert (
        "⚠️  deploy.toml's [build] lambda_runtime is python3.11, which AWS deprecates on 2027-06-30 (on Amazon Linux 2, "
        "past its end of life): move the functions to a later one (python3.12, python3.13, python3.14)\n"
    ) in said
    assert shown["deprecation"] == (
        "python3.11, which AWS deprecates on 2027-06-30 (on Amazon Linux 2, past its end of life)"
    )
    said, shown = told(datetime(2026, 12, 6, tzinfo=UTC))
    assert "AWS deprecates" not in said and shown["deprecation"] is None


def test_a_rollback_is_not_held_up_by_the_import_check(
    with_lambdas: Path, factory: AwsFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Back to code that ran: the check, which could be wrong, never stands in its way. The same plan as a deploy is
    refused, its uploads side by side in a group as deploy.auto makes them."""
    handler = with_lambdas / "lambda" / "health_handler" / "handler.py"
    handler.write_text(handler.read_text() + "\nimport requests\n")
    made = package(with_lambdas)
    upload = UploadLambdaCode.of("health_handler", handler.parent, made, "CarRentalRegistryStack")
    other = UploadLambdaCode.of(
        "login_handler",
        handler.parent.parent / "login_handler",
        package(with_lambdas, "login_handler"),
        "CarRentalRegistryStack",
    )
    config = load_config(with_lambdas / "deploy.toml")
    rt = runtime(with_lambdas, factory)
    back = Plan("dev", (Parallel((other, upload)),), "rollback lambda:health_handler → 3e2532eaf7e5")
    assert back.rollback
    require_importable(rt, config, back, dry_run=False)
    deploy = dataclasses.replace(back, title="deploy.lambda health_handler")
    with pytest.raises(UsageError, match="lambda/health_handler would not import on Lambda"):
        require_importable(rt, config, deploy, dry_run=False)
    monkeypatch.setenv(lambda_imports.SKIP_ENV, "1")  # turned off
    require_importable(rt, config, deploy, dry_run=False)


def test_without_the_api_stack_it_says_to_deploy_it_first(with_lambdas: Path, factory: AwsFactory) -> None:
    with pytest.raises(UsageError, match="CarRentalApiStack is not deployed") as err:
        commands.deploy_lambda("health_handler", env="dev", runtime=runtime(with_lambdas, factory))
    assert "deploy the API stack first: inv deploy.stack api" in (err.value.next_step or "")


@pytest.mark.parametrize(
    "command",
    [
        lambda rt: commands.deploy_lambda("login_handler", env="dev", runtime=rt),
        lambda rt: commands.rollback(env="dev", component="lambda:login_handler", runtime=rt),
        lambda rt: commands.logs(env="dev", component="lambda:login_handler", runtime=rt),
    ],
    ids=["deploy.lambda", "rollback", "logs"],
)
def test_a_function_the_api_stack_lacks_is_refused_naming_the_ones_it_has(
    with_lambdas: Path, factory: AwsFactory, command: Any
) -> None:
    stack(factory, "CarRentalApiStack", {"HealthHandlerFunctionName": FUNCTIONS["health_handler"]})
    with pytest.raises(UsageError) as err:
        command(runtime(with_lambdas, factory))
    assert err.value.message == (
        "no stack of environment 'dev' has a Lambda function for 'login_handler' (they have: health_handler)"
    )
    assert err.value.next_step == (
        "deploy the stack that holds it first (its deployed_function in cdk/stacks/, the API stack's FUNCTIONS for a "
        "route): inv deploy.auto --env dev"
    )


def test_dry_run_prints_the_plan_and_changes_nothing(
    with_lambdas: Path, factory: AwsFactory, environment: dict[str, str]
) -> None:
    out = io.StringIO()
    assert (
        commands.deploy_lambda(
            "health_handler", env="dev", dry_run=True, as_json=True, runtime=runtime(with_lambdas, factory, out)
        )
        is None
    )
    plan = json.loads(out.getvalue())
    assert [s["step"] for s in plan["steps"]] == [
        "upload-lambda",
        "update-code",
        "publish-version",
        "move-alias",
        "smoke",
    ]
    assert plan["steps"][1]["inputs"]["function_name"] == FUNCTIONS["health_handler"]
    assert plan["steps"][2]["inputs"]["code_sha256"] == package(with_lambdas).code_sha256
    assert alias_version(factory, "health_handler") == "1"
    assert factory.client("s3").list_objects_v2(Bucket=BUCKET, Prefix="lambda/health_handler/")["KeyCount"] == 1


def test_the_task_is_listed_with_its_options(project: Path) -> None:
    listed = inv(project, "--list")
    assert listed.returncode == 0 and "  deploy.lambda " in listed.stdout
    helped = inv(project, "-h", "deploy.lambda")
    for option in ("--env", "--dry-run", "--json", "--allow-dirty", "--[no-]smoke", "--allow-rolled-back"):
        assert option in helped.stdout, option
    refused = inv(project, "deploy.lambda", "nope", "--dry-run")
    assert refused.returncode == 2 and "unknown Lambda function 'nope'" in refused.stderr


# -- the canary (deploykit.canary) ---------------------------------------------------------------------------------
# The new version takes a share of the ``live`` alias's requests while its errors are watched, and is taken back when
# they are too many or the run is interrupted, or goes on to take every request. Lambda itself is played by the clock:
# while the step sleeps between two polls the alias "serves" requests, and the clock puts the metrics Lambda would
# (AWS/Lambda Invocations and Errors by ExecutedVersion, FunctionName, Resource) for the versions it routes to.

FN = "health_handler"


class Traffic(FakeClock):
    """Time in which the alias serves ``per_poll`` requests, routed by its weights, with the metrics Lambda puts.
    ``failing``: the versions whose every invocation fails; ``flaky``: the share of every version's invocations
    that fail (a dependency both call, failing); ``interrupt_at``: the sleep at which Ctrl-C comes."""

    def __init__(
        self,
        factory: AwsFactory,
        *,
        per_poll: int = 10,
        failing: tuple[str, ...] = (),
        flaky: float = 0.0,
        interrupt_at: int = 0,
    ) -> None:
        super().__init__(start=datetime.now(UTC))
        self.lam, self.cloudwatch = factory.client("lambda"), factory.client("cloudwatch")
        self.per_poll, self.failing, self.flaky, self.interrupt_at = per_poll, failing, flaky, interrupt_at
        self.routing: list[tuple[str, dict[str, float]]] = []  # what the alias said at each sleep

    def sleep(self, seconds: float) -> None:
        super().sleep(seconds)
        if self.interrupt_at and len(self.sleeps) == self.interrupt_at:
            raise KeyboardInterrupt
        alias = self.lam.get_alias(FunctionName=FUNCTIONS[FN], Name="live")
        weights = (alias.get("RoutingConfig") or {}).get("AdditionalVersionWeights") or {}
        self.routing.append((str(alias["FunctionVersion"]), dict(weights)))
        served = {version: round(self.per_poll * weight) for version, weight in weights.items()}
        served[str(alias["FunctionVersion"])] = self.per_poll - sum(served.values())
        data = []
        for version, count in served.items():
            dimensions = canary.dimensions(FUNCTIONS[FN], "live", version)
            errors = count if version in self.failing else round(count * self.flaky)
            data += [
                {"MetricName": "Invocations", "Dimensions": dimensions, "Value": count, "Timestamp": self.now()},
                {"MetricName": "Errors", "Dimensions": dimensions, "Value": errors, "Timestamp": self.now()},
            ]
        if self.per_poll:
            self.cloudwatch.put_metric_data(Namespace="AWS/Lambda", MetricData=data)


def lambda_runtime(project: Path, factory: AwsFactory, clock: FakeClock) -> commands.Runtime:
    return commands.Runtime(
        config_path=project / "deploy.toml",
        stdout=io.StringIO(),
        stderr=io.StringIO(),
        clock=clock,
        aws_factory=lambda _env: factory,
        docker_factory=Mock(side_effect=AssertionError("the Lambda fast path must not touch Docker")),
    )


def deploy(project: Path, factory: AwsFactory, clock: FakeClock, **options: str) -> commands.Runtime:
    runtime = lambda_runtime(project, factory, clock)
    commands.deploy_lambda(FN, env="dev", smoke=False, runtime=runtime, **options)
    return runtime


def said(runtime: commands.Runtime) -> str:
    return str(runtime.stderr.getvalue())  # type: ignore[attr-defined]


def routing_now(factory: AwsFactory) -> tuple[str, dict[str, float]]:
    alias = factory.client("lambda").get_alias(FunctionName=FUNCTIONS[FN], Name="live")
    return str(alias["FunctionVersion"]), dict((alias.get("RoutingConfig") or {}).get("AdditionalVersionWeights") or {})


def test_a_healthy_canary_serves_its_share_for_the_bake_then_takes_every_request(
    with_lambdas: Path, factory: AwsFactory, environment: dict[str, str]
) -> None:
    clock = Traffic(factory)
    runtime = deploy(with_lambdas, factory, clock, canary="20", bake="30s")
    assert clock.routing == [("1", {"2": 0.2})] * 6  # every poll of the 30 s (5 s apart: AWS's interval)
    assert sum(clock.sleeps) == 30.0
    assert routing_now(factory) == ("2", {})  # then move-alias gave it everything
    text = said(runtime)
    assert "🐤 health_handler: version 2 takes 20% of live's requests for 30s (version 1 the rest)" in text
    assert "health_handler: version 2 took 20% for 30s: 12 requests, 0 errors (version 1: 48 requests" in text

    again = deploy(with_lambdas, factory, Traffic(factory))  # live serves it already: nothing to try
    assert "canary" not in said(again)  # dev has no canary of its own: --canary made that one


def test_a_new_version_no_worse_than_the_old_under_a_failing_dependency_gets_in(
    with_lambdas: Path, factory: AwsFactory, environment: dict[str, str]
) -> None:
    """A quarter of every version's invocations fail (a dependency both call): the new version's 25% is the old
    one's, so the canary lets it in; judged alone (compare = false), the first poll takes it back."""
    clock = Traffic(factory, per_poll=40, flaky=0.25)
    runtime = deploy(with_lambdas, factory, clock, canary="20", bake="30s")
    assert routing_now(factory) == ("2", {})  # in: move-alias gave it everything
    assert "version 2 took 20% for 30s: 48 requests, 12 errors (version 1: 192 requests, 48 errors)" in said(runtime)
    assert "any error beyond version 1's own rate takes it back" in said(runtime)

    toml = with_lambdas / "deploy.toml"
    toml.write_text(toml.read_text() + "\n[environments.dev.lambda_canary]\ncompare = false\n")
    (with_lambdas / "lambda" / FN / "handler.py").write_text(OLD_HANDLER + "\n# another change\n")
    git(with_lambdas, "commit", "-qam", "judged alone")
    alone = Traffic(factory, per_poll=40, flaky=0.25)
    with pytest.raises(StepFailed, match=r"version 3 answered 8 requests, 2 errors \(25%; version 2: 32 requests, "):
        deploy(with_lambdas, factory, alone, canary="20", bake="30s")
    assert len(alone.sleeps) == 1 and routing_now(factory) == ("2", {})


def test_the_old_version_s_rate_in_the_minutes_before_judges_the_first_looks_of_a_quiet_canary(
    with_lambdas: Path, factory: AwsFactory, environment: dict[str, str]
) -> None:
    """A quarter of every invocation fails, a few requests a poll: the old version's share of the first polls is too
    few requests to tell its rate. Judged alone there, the new version was taken back on its first error; beside the
    old version's rate in the ten minutes before the canary, when it served every request, it gets in."""
    clock = Traffic(factory, per_poll=8, flaky=0.25)
    before = clock.now() - timedelta(minutes=3)
    dimensions = canary.dimensions(FUNCTIONS[FN], "live", "1")
    factory.client("cloudwatch").put_metric_data(
        Namespace="AWS/Lambda",
        MetricData=[
            {"MetricName": "Invocations", "Dimensions": dimensions, "Value": 600, "Timestamp": before},
            {"MetricName": "Errors", "Dimensions": dimensions, "Value": 150, "Timestamp": before},
        ],
    )
    runtime = deploy(with_lambdas, factory, clock, canary="50", bake="30s")
    assert routing_now(factory) == ("2", {})  # in
    assert "(version 1 in the minutes before: 600 requests, 150 errors, 25.0%)" in said(runtime)
    assert "version 2 took 50% for 30s: 24 requests, 6 errors (version 1: 24 requests, 6 errors)" in said(runtime)


def test_a_new_version_worse_than_the_old_is_taken_back_beside_a_failing_dependency(
    with_lambdas: Path, factory: AwsFactory, environment: dict[str, str]
) -> None:
    """The old version fails a quarter of its invocations, the new one all of them: taken back at the first poll."""
    clock = Traffic(factory, per_poll=40, flaky=0.25, failing=("2",))
    with pytest.raises(StepFailed) as failed:
        deploy(with_lambdas, factory, clock, canary="20", bake="30s")
    assert "version 2 answered 8 requests, 8 errors (100%; version 1: 32 requests, 8 errors, 25%)" in (
        failed.value.message
    )
    assert len(clock.sleeps) == 1 and routing_now(factory) == ("1", {})


def test_errors_of_the_new_version_take_it_back_at_once_and_fail_the_deploy(
    with_lambdas: Path, factory: AwsFactory, environment: dict[str, str]
) -> None:
    clock = Traffic(factory, failing=("2",))
    with pytest.raises(StepFailed) as failed:
        deploy(with_lambdas, factory, clock, canary="10", bake="5m")
    assert failed.value.message.startswith(
        "the canary of health_handler failed: version 2 answered 1 request, 1 error (100%; version 1: 9 requests, "
        "0 errors, 0%), any error beyond version 1's own rate takes it back; live serves version 1 alone again"
    )
    assert "inv logs --component lambda:health_handler" in (failed.value.next_step or "")
    assert len(clock.sleeps) == 1  # the first poll with an error ended it, not the 5 minutes
    assert routing_now(factory) == ("1", {})
    lam = factory.client("lambda")  # $LATEST runs version 1's code again: a deploy of its stack would publish it
    served = lam.get_function_configuration(FunctionName=FUNCTIONS["health_handler"], Qualifier="1")["CodeSha256"]
    assert lam.get_function_configuration(FunctionName=FUNCTIONS["health_handler"])["CodeSha256"] == served


class Alarming(Traffic):
    """Traffic without errors, during which the team's alarm goes off at the second poll (CloudWatch, played)."""

    def sleep(self, seconds: float) -> None:
        super().sleep(seconds)
        if len(self.sleeps) == 2:
            self.cloudwatch.set_alarm_state(
                AlarmName="orders-failing", StateValue="ALARM", StateReason="Threshold Crossed"
            )


def test_an_alarm_of_the_alarm_watch_going_off_takes_the_canary_back_at_once(
    with_lambdas: Path, factory: AwsFactory, environment: dict[str, str]
) -> None:
    """The version answers without an error, yet the team's own alarm (orders failing downstream) goes off during
    its bake: taken back at that poll, not after the bake and smoke."""
    put_alarm(factory, "orders-failing")
    toml = with_lambdas / "deploy.toml"
    toml.write_text(
        toml.read_text().replace(
            "[environments.dev.stacks]",
            '[environments.dev.alarm_watch]\nalarms = ["orders-failing"]\n\n[environments.dev.stacks]',
        )
    )
    git(with_lambdas, "commit", "-qam", "dev: the team's alarm")
    clock = Alarming(factory)
    with pytest.raises(StepFailed) as failed:
        deploy(with_lambdas, factory, clock, canary="10", bake="5m")
    assert failed.value.message.startswith(
        "the canary of health_handler failed: alarm orders-failing went to ALARM "
    ), failed.value.message
    assert "Threshold Crossed; it fails the release (version 2 answered 2 requests, 0 errors (0%; version 1: " in (
        failed.value.message
    )
    assert "live serves version 1 alone again" in failed.value.message
    assert len(clock.sleeps) == 2 and routing_now(factory) == ("1", {})  # at the poll that saw it, not in 5 minutes


def test_a_rate_of_errors_tolerates_fewer_and_takes_back_more(
    with_lambdas: Path, factory: AwsFactory, environment: dict[str, str]
) -> None:
    """max_error_rate = 0.5 in deploy.toml: the old version failing is not the new one's fault; a new version
    failing every request is taken back."""
    toml = with_lambdas / "deploy.toml"
    toml.write_text(
        toml.read_text().replace(
            "[environments.dev.stacks]",
            "[environments.dev.lambda_canary]\npercent = 50\nseconds = 20\nmax_error_rate = 0.5\n\n"
            "[environments.dev.stacks]",
        )
    )
    git(with_lambdas, "commit", "-qam", "dev: a canary")
    ok = Traffic(factory, failing=("1",))  # only the old version fails: the canary is not to blame
    deploy(with_lambdas, factory, ok)
    assert routing_now(factory) == ("2", {}) and ok.routing == [("1", {"2": 0.5})] * 4

    handler = with_lambdas / "lambda" / FN / "handler.py"
    handler.write_text(handler.read_text() + "\n# version 3\n")
    git(with_lambdas, "commit", "-qam", "health: version 3")
    with pytest.raises(StepFailed, match=r"version 3 answered 5 requests, 5 errors \(100%; version 2: "):
        deploy(with_lambdas, factory, Traffic(factory, failing=("3",)))
    assert routing_now(factory) == ("2", {})


def test_an_interrupt_during_the_canary_takes_it_back(
    with_lambdas: Path, factory: AwsFactory, environment: dict[str, str]
) -> None:
    clock = Traffic(factory, interrupt_at=3)
    with pytest.raises(Interrupted) as stopped:
        deploy(with_lambdas, factory, clock, canary="10", bake="5m")
    assert clock.routing == [("1", {"2": 0.1})] * 2  # two polls in, then Ctrl-C
    assert "interrupted during canary" in stopped.value.message
    assert "the canary was taken back: car-rental-dev-health:live serves the version it served before alone" in (
        stopped.value.message
    )
    assert routing_now(factory) == ("1", {})


def test_a_second_ctrl_c_while_the_canary_is_taken_back_does_not_cut_it_short(
    with_lambdas: Path, factory: AwsFactory, environment: dict[str, str]
) -> None:
    """Ctrl-C during the bake, and again (a real SIGINT) as the take-back's UpdateAlias went: the take-back was cut
    short, the alias left split, and the message said it was taken back."""
    sent: list[bool] = []

    def again(params: dict[str, Any], **_: Any) -> None:
        if params.get("RoutingConfig") == {"AdditionalVersionWeights": {}} and not sent:
            sent.append(True)
            os.kill(os.getpid(), signal.SIGINT)

    factory.client("lambda").meta.events.register("before-parameter-build.lambda.UpdateAlias", again)
    with pytest.raises((Interrupted, KeyboardInterrupt)):
        deploy(with_lambdas, factory, Traffic(factory, interrupt_at=3), canary="10", bake="5m")
    assert sent and routing_now(factory) == ("1", {})


def test_a_take_back_refused_while_a_second_ctrl_c_came_is_said_before_the_interrupt_stops_the_run(
    with_lambdas: Path, factory: AwsFactory, environment: dict[str, str]
) -> None:
    """The canary failed; its take-back was refused as a second Ctrl-C came: the interrupt, held back by the shield,
    replaced the refusal before it was said, and the run ended saying the canary was taken back (the alias still
    split). The refusal is said, with how to clear the alias, then the interrupt stops the run."""

    def refuse(params: dict[str, Any], **_: Any) -> None:
        if params.get("RoutingConfig") == {"AdditionalVersionWeights": {}}:
            os.kill(os.getpid(), signal.SIGINT)
            raise ClientError({"Error": {"Code": "AccessDeniedException", "Message": "denied"}}, "UpdateAlias")

    factory.client("lambda").meta.events.register("provide-client-params.lambda.UpdateAlias", refuse)
    runtime = lambda_runtime(with_lambdas, factory, Traffic(factory, failing=("2",)))
    with pytest.raises((Interrupted, KeyboardInterrupt)):
        commands.deploy_lambda(FN, env="dev", smoke=False, runtime=runtime, canary="10", bake="20s")
    assert routing_now(factory) == ("1", {"2": 0.1})
    assert "❌ could not take the canary of health_handler back (" in said(runtime)


def lost_answer(factory: AwsFactory, fail: Exception | None = None) -> None:
    """The canary's UpdateAlias as botocore's retry after a lost answer makes it: the first attempt applied (by
    another client), the call itself refused (Lambda's PreconditionFailedException: the RevisionId moved on), or
    ``fail`` raised instead (an interrupt while it went)."""
    lam, other = factory.client("lambda"), new_session().client("lambda", region_name="eu-west-1")
    sent: list[str] = []

    def resend(params: dict[str, Any], **_: Any) -> None:
        weights = params.get("RoutingConfig", {}).get("AdditionalVersionWeights")
        if sent or not weights:
            return
        sent.append("split")
        other.update_alias(**{k: v for k, v in params.items() if k != "RevisionId"})
        if fail is not None:
            raise fail
        error = {"Error": {"Code": "PreconditionFailedException", "Message": "The Revision Id provided does not match"}}
        raise ClientError(error, "UpdateAlias")

    lam.meta.events.register("provide-client-params.lambda.UpdateAlias", resend)


def test_a_canary_split_whose_answer_was_lost_and_sent_again_goes_on(
    with_lambdas: Path, factory: AwsFactory, environment: dict[str, str]
) -> None:
    """Lambda refused botocore's resend of the split (its first attempt was in): the canary goes on with the split
    as it is, where it said 'nothing was changed' and left 10% on the untried version."""
    lost_answer(factory)
    clock = Traffic(factory)
    runtime = deploy(with_lambdas, factory, clock, canary="10", bake="5s")
    assert "🐤 health_handler: version 2 takes 10% of live's requests" in said(runtime)
    assert clock.routing[0] == ("1", {"2": 0.1}) and routing_now(factory) == ("2", {})


def test_a_canary_split_interrupted_while_it_went_is_taken_back(
    with_lambdas: Path, factory: AwsFactory, environment: dict[str, str]
) -> None:
    """Ctrl-C while the split went (its answer unread): the split may be in, and is taken back."""
    lost_answer(factory, fail=KeyboardInterrupt())
    with pytest.raises(Interrupted):
        deploy(with_lambdas, factory, Traffic(factory), canary="10", bake="5s")
    assert routing_now(factory) == ("1", {})


def test_a_run_that_fails_before_its_alias_moves_puts_latest_back_on_the_code_the_alias_serves(
    with_lambdas: Path, factory: AwsFactory, environment: dict[str, str]
) -> None:
    """update-code put the new zip on $LATEST, then Lambda refused the publish: the alias never moved, and a deploy
    of the function's stack that changes its settings would publish $LATEST, the untried code, and serve it. The
    automatic rollback puts $LATEST back on the code the alias serves."""
    lam = factory.client("lambda")
    name = FUNCTIONS[FN]
    served = lam.get_function_configuration(FunctionName=name, Qualifier="1")["CodeSha256"]

    def refuse(**_: Any) -> None:
        error = {"Error": {"Code": "InvalidParameterValueException", "Message": "refused on purpose"}}
        raise ClientError(error, "PublishVersion")

    lam.meta.events.register("provide-client-params.lambda.PublishVersion", refuse)
    runtime = commands.Runtime(
        config_path=with_lambdas / "deploy.toml",
        stderr=io.StringIO(),
        clock=FakeClock(),
        aws_factory=lambda _env: factory,
    )
    with pytest.raises(StepFailed, match="Lambda refused to publish"):
        commands.deploy_lambda(FN, env="dev", smoke=False, runtime=runtime)
    assert lam.get_function_configuration(FunctionName=name)["CodeSha256"] == served
    assert routing_now(factory) == ("1", {})
    assert "automatic rollback: lambda:health_handler" in said(runtime)
    assert "health_handler: live serves version 1; $LATEST back on its code" in said(runtime)


class BothServe(FakeClock):
    """Both functions serve ``requests`` while anyone sleeps (the steps of deploy.auto's side-by-side chains sleep in
    their own threads), routed by each alias's weights; the (function, version) in ``failing`` fail every one."""

    def __init__(self, factory: AwsFactory, failing: tuple[tuple[str, str], ...] = (), requests: int = 10) -> None:
        super().__init__(start=datetime.now(UTC))
        # clients of their own: what a test holds of deploykit's calls (alias_reads_wait) never holds the traffic
        self.lam, self.cloudwatch = new_session().client("lambda"), new_session().client("cloudwatch")
        self.failing, self.requests = failing, requests
        self.guard = threading.Lock()

    def sleep(self, seconds: float) -> None:
        with self.guard:
            super().sleep(seconds)
            for fn, name in FUNCTIONS.items():
                alias = self.lam.get_alias(FunctionName=name, Name="live")
                weights = (alias.get("RoutingConfig") or {}).get("AdditionalVersionWeights") or {}
                served = {version: round(self.requests * weight) for version, weight in weights.items()}
                served[str(alias["FunctionVersion"])] = self.requests - sum(served.values())
                data = []
                for version, count in served.items():
                    dimensions = canary.dimensions(name, "live", version)
                    errors = count if (fn, version) in self.failing else 0
                    data += [
                        {
                            "MetricName": "Invocations",
                            "Dimensions": dimensions,
                            "Value": count,
                            "Timestamp": self.now(),
                        },
                        {"MetricName": "Errors", "Dimensions": dimensions, "Value": errors, "Timestamp": self.now()},
                    ]
                self.cloudwatch.put_metric_data(Namespace="AWS/Lambda", MetricData=data)


def alias_reads_wait(factory: AwsFactory, function: str, until: Callable[[], bool]) -> None:
    """Each GetAlias of ``function``'s alias waits (10 s at most) until ``until()``: what its chain does next (its
    canary's next look) comes after what another chain does meanwhile, whatever the threads' pace."""

    def hold(params: dict[str, Any], **_: Any) -> None:
        deadline = time.monotonic() + 10
        while params.get("FunctionName") == FUNCTIONS[function] and not until() and time.monotonic() < deadline:
            time.sleep(0.01)

    factory.client("lambda").meta.events.register("before-parameter-build.lambda.GetAlias", hold)


def test_a_failed_canary_in_deploy_auto_puts_back_the_function_moved_beside_it(
    with_lambdas: Path, factory: AwsFactory, environment: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A commit changes both functions; deploy.auto's canaries run side by side, login_handler's fails (and takes
    itself back). health_handler's passed and took every request: the automatic rollback puts it back, and smoke
    checks what serves. It was left serving its new version, never smoke-tested, no rollback."""
    for fn in FUNCTIONS:  # version 2 of each, by the fast path, recorded
        commands.deploy_lambda(fn, env="dev", smoke=False, runtime=moto_runtime(with_lambdas, factory))
    base = git(with_lambdas, "rev-parse", "--short=12", "HEAD").strip()
    for fn in FUNCTIONS:
        handler = with_lambdas / "lambda" / fn / "handler.py"
        handler.write_text(handler.read_text() + "\n# both change\n")
    git(with_lambdas, "commit", "-qam", "both change")
    smoked: list[str] = []
    monkeypatch.setattr(Smoke, "run", lambda _self, _ctx: smoked.append("smoke") or Outcome.done("ok"))
    config = load_config(with_lambdas / "deploy.toml")
    env = with_canary(config.environment("dev"), "10", "30s")
    revision = changes.scope(config, current_revision(config.root, allow_dirty=False))
    found = changes.detect(config, {f"lambda:{fn}": base for fn in FUNCTIONS})
    plan = auto.auto_plan(config, env, revision, found, auto.Inputs(image_tag="", code_keys={}, functions=FUNCTIONS))
    clock = BothServe(factory, failing=(("login_handler", "3"),))
    runtime = moto_runtime(with_lambdas, factory, clock=clock)
    promoted = threading.Event()  # health_handler's alias moved to version 3: its canary passed before the other's
    alias_reads_wait(factory, "login_handler", promoted.is_set)
    factory.client("lambda").meta.events.register(
        "after-call.lambda.UpdateAlias",
        lambda parsed, **_: (
            promoted.set()
            if parsed.get("AliasArn", "").endswith("health:live") and parsed.get("FunctionVersion") == "3"
            else None
        ),
    )
    with pytest.raises(StepFailed) as failed:
        run_plan(runtime, config, env, plan, dry_run=False, as_json=False, aws=factory, rollback=True)
    assert "the canary of login_handler failed" in failed.value.message
    lam = factory.client("lambda")
    for fn in FUNCTIONS:  # each serves version 2 alone: login_handler took itself back, health_handler was put back
        alias = lam.get_alias(FunctionName=FUNCTIONS[fn], Name="live")
        assert (alias["FunctionVersion"], alias.get("RoutingConfig", {}).get("AdditionalVersionWeights") or {}) == (
            "2",
            {},
        ), fn
    assert "⏪ automatic rollback: lambda:health_handler: putting back what this deploy replaced" in said(runtime)
    assert "; automatic rollback: lambda:health_handler ok in" in failed.value.message
    # what the failed canary's version wrote is the log to read, not that of the function put back unjudged
    assert "inv logs --env dev --component lambda:login_handler --since 15m" in (failed.value.next_step or "")
    assert "lambda:health_handler --since" not in (failed.value.next_step or "")
    assert "what login_handler version 3 wrote" in said(runtime)
    assert smoked == ["smoke"]  # the rollback's: what serves is checked
    store = history.History.of(factory, env)
    assert store is not None and store.live()["lambda:health_handler"]["sha"] == base


@pytest.mark.parametrize("refused", [False, True], ids=["taken-back", "take-back-refused"])
def test_a_canary_failing_mid_bake_in_deploy_auto_takes_back_the_one_baking_beside_it(
    refused: bool,
    with_lambdas: Path,
    factory: AwsFactory,
    environment: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """login_handler's canary fails at its first look, enough requests telling; health_handler's, beside it, baked
    on, and its move-alias gave its version every request, for the automatic rollback to take it away again (or,
    that rollback failing, to leave it serving, never verified). It stops unjudged, taken back, its move-alias not
    started; the rollback finds nothing of it to put back. When Lambda refuses the take-back (throttled), the
    automatic rollback points the alias back (it left 10% on version 3, and said the canary was taken back)."""
    for fn in FUNCTIONS:  # version 2 of each, by the fast path, recorded
        commands.deploy_lambda(fn, env="dev", smoke=False, runtime=moto_runtime(with_lambdas, factory))
    for fn in FUNCTIONS:
        handler = with_lambdas / "lambda" / fn / "handler.py"
        handler.write_text(handler.read_text() + "\n# both change\n")
    base = git(with_lambdas, "rev-parse", "--short=12", "HEAD").strip()
    git(with_lambdas, "commit", "-qam", "both change")
    config = load_config(with_lambdas / "deploy.toml")
    env = with_canary(config.environment("dev"), "10", "30s")
    plan = auto.auto_plan(
        config,
        env,
        changes.scope(config, current_revision(config.root, allow_dirty=False)),
        changes.detect(config, {f"lambda:{fn}": base for fn in FUNCTIONS}),
        auto.Inputs(image_tag="", code_keys={}, functions=FUNCTIONS),
    )
    runtime = moto_runtime(with_lambdas, factory, clock=BothServe(factory, (("login_handler", "3"),), requests=100))
    # health_handler's canary, once it splits the alias, looks again only after the run was told of the failure
    contexts: list[Context] = []
    splits: list[str] = []

    def spy(ctx: Context, what: str) -> HeldBack | None:
        contexts.append(ctx)
        return held_back(ctx, what)

    monkeypatch.setattr(canary, "held_back", spy)
    told = threading.Event()  # the run was told (the automatic rollback's run clears it again)

    def looks_again() -> bool:
        if contexts and contexts[0].failing.is_set():
            told.set()
        return not splits or told.is_set()

    alias_reads_wait(factory, "health_handler", looks_again)
    factory.client("lambda").meta.events.register(
        "before-parameter-build.lambda.UpdateAlias",
        lambda params, **_: (
            splits.append("split")
            if params["FunctionName"] == FUNCTIONS["health_handler"]
            and params["RoutingConfig"]["AdditionalVersionWeights"]
            else None
        ),
    )

    def throttled(params: dict[str, Any], **_: Any) -> None:  # health_handler's take-back, once
        back = not params.get("RoutingConfig", {}).get("AdditionalVersionWeights")
        if refused and back and splits == ["split"] and params["FunctionName"] == FUNCTIONS["health_handler"]:
            splits.append("refused")
            throttle = {"Error": {"Code": "TooManyRequestsException"}, "ResponseMetadata": {"HTTPStatusCode": 429}}
            raise botocore.exceptions.ClientError(throttle, "UpdateAlias")

    factory.client("lambda").meta.events.register("before-parameter-build.lambda.UpdateAlias", throttled)
    monkeypatch.setattr(Smoke, "run", lambda _self, _ctx: Outcome.done("ok"))  # the rollback's, after its move
    with pytest.raises(StepFailed) as failed:
        run_plan(runtime, config, env, plan, dry_run=False, as_json=False, aws=factory, rollback=True)
    assert failed.value.message.startswith("the canary of login_handler failed: version 3 answered ")
    assert "live → version 3" not in said(runtime)  # no move-alias of either
    if refused:
        assert "❌ could not take the canary of health_handler back" in said(runtime)
        assert "putting back what this deploy replaced (lambda:health_handler (was version 2))" in said(runtime)
        # the version before the split is carried for the rollback: not guessed as one no deploy verified
        assert "which no deploy verified" not in said(runtime), said(runtime)
    lam = factory.client("lambda")
    for fn in FUNCTIONS:
        alias = lam.get_alias(FunctionName=FUNCTIONS[fn], Name="live")
        assert (alias["FunctionVersion"], alias.get("RoutingConfig", {}).get("AdditionalVersionWeights") or {}) == (
            "2",
            {},
        ), fn
    assert ("↩️  health_handler: canary taken back, live serves version 2 alone" in said(runtime)) is not refused
    assert "⏹  the canary of health_handler stopped unjudged: a step beside it failed" in said(runtime)
    # the log named is that of the version that failed, not of the one held back beside it
    assert "inv logs --env dev --component lambda:login_handler --since 15m" in (failed.value.next_step or "")
    assert "lambda:health_handler --since" not in (failed.value.next_step or "")
    store = history.History.of(factory, env)
    assert store is not None
    steps = [step for record in store.records(limit=2) for step in record.steps]  # the rollback's, the run's
    assert [(s["detail"][:40], s.get("held_back")) for s in steps if s["step"] == "canary"] == [
        ("the canary of health_handler stopped unj", True),
        ("the canary of login_handler failed: vers", None),
    ]


def test_a_canary_no_request_reached_is_said_and_the_deploy_goes_on(
    with_lambdas: Path, factory: AwsFactory, environment: dict[str, str]
) -> None:
    runtime = deploy(with_lambdas, factory, Traffic(factory, per_poll=0), canary="10", bake="10s")
    assert "⚠️  health_handler: version 2 took 10% for 10s: 0 requests, 0 errors" in said(runtime)
    assert "no request reached it, nothing to judge it by (only what runs after the canary checks it)" in said(runtime)
    assert routing_now(factory) == ("2", {})


def set_alias(factory: AwsFactory, version: str, weights: dict[str, float]) -> None:
    """The alias as a person leaves it in the console."""
    factory.client("lambda").update_alias(
        FunctionName=FUNCTIONS[FN],
        Name="live",
        FunctionVersion=version,
        RoutingConfig={"AdditionalVersionWeights": weights},
    )


def test_a_version_serving_already_that_no_deploy_verified_still_goes_through_the_canary(
    with_lambdas: Path, factory: AwsFactory, environment: dict[str, str], dev_env: EnvConfig
) -> None:
    """The alias served the new version, and the canary said "nothing to try", then move-alias gave it everything:
    after a split set by hand (90% still on version 1), or a release a failed run left serving (its smoke failed,
    the rollback did not go through: the live record verified version 1). The canary starts from the version that
    passed (or the split's other), the new one taking its share, and judges it."""
    deploy(with_lambdas, factory, Traffic(factory), canary="0")  # version 2, verified
    set_alias(factory, "2", {"1": 0.9})  # by hand: version 2 never passed a canary
    clock = Traffic(factory, failing=("2",))
    with pytest.raises(StepFailed, match="the canary of health_handler failed"):
        deploy(with_lambdas, factory, clock, canary="10", bake="30s")
    assert clock.routing[0] == ("1", {"2": 0.1}) and routing_now(factory) == ("1", {})

    store = history.History.of(factory, dev_env)
    assert store is not None
    live_record = store.live()
    live_record["lambda:health_handler"] = {**live_record["lambda:health_handler"], "version": "1"}  # v1 passed
    factory.client("s3").put_object(
        Bucket=BUCKET, Key=f"{history.LIVE_PREFIX}dev.json", Body=json.dumps(live_record).encode()
    )
    set_alias(factory, "2", {})  # version 2 serves alone, left by a run whose rollback failed
    clock = Traffic(factory)
    runtime = deploy(with_lambdas, factory, clock, canary="10", bake="30s")
    assert clock.routing[0] == ("1", {"2": 0.1}) and routing_now(factory) == ("2", {})
    assert (
        "🐤 health_handler: live serves version 2 alone, which no canary or deploy verified: the canary starts from "
        "version 1, the last that passed, version 2 taking 10%"
    ) in said(runtime)


def test_a_canary_whose_alias_is_changed_by_other_means_stops_unjudged_and_leaves_it_so(
    with_lambdas: Path, factory: AwsFactory, environment: dict[str, str]
) -> None:
    """A person cleared the split mid-bake: the canary polled on, said version 2 took 10% for 30s, and move-alias
    gave it every request."""

    class Cleared(Traffic):
        def sleep(self, seconds: float) -> None:
            super().sleep(seconds)
            if len(self.sleeps) == 2:
                set_alias(factory, "1", {})

    with pytest.raises(StepFailed) as stopped:
        deploy(with_lambdas, factory, Cleared(factory), canary="10", bake="30s")
    assert stopped.value.message.startswith(
        "the canary of health_handler stopped unjudged: live was changed by other means while it ran, and serves "
        "version 1 alone (version 2 took 10% before: "
    )
    assert routing_now(factory) == ("1", {})


def test_a_canary_failing_more_than_allowed_on_too_few_requests_to_tell_says_it_was_not_judged(
    with_lambdas: Path, factory: AwsFactory, environment: dict[str, str]
) -> None:
    """Every request to version 2 failed, beside version 1 failing a quarter of its own: 3 requests cannot tell the
    two apart, and the step said nothing of it."""
    runtime = deploy(
        with_lambdas, factory, Traffic(factory, per_poll=30, failing=("2",), flaky=0.25), canary="10", bake="5s"
    )
    text = said(runtime)
    assert "version 2 failed 100% of them, but " in text and "cannot tell that from version 1's own errors" in text
    assert "not judged (a longer --bake, or more traffic, lets the canary judge it)" in text


def test_the_plan_shows_the_canary_between_publish_and_move_alias(
    with_lambdas: Path, factory: AwsFactory, environment: dict[str, str]
) -> None:
    out = io.StringIO()
    runtime = commands.Runtime(
        config_path=with_lambdas / "deploy.toml",
        stdout=out,
        stderr=io.StringIO(),
        clock=FakeClock(),
        aws_factory=lambda _env: factory,
    )
    commands.deploy_lambda(FN, env="dev", canary="10%", bake="2m", dry_run=True, as_json=True, runtime=runtime)
    steps = [(step["step"], step["describe"]) for step in json.loads(out.getvalue())["steps"]]
    names = [name for name, _ in steps]
    assert names.index("publish-version") + 1 == names.index("canary") == names.index("move-alias") - 1, names
    assert "10% of car-rental-dev-health:live's requests for 120s" in dict(steps)["canary"]
    assert routing_now(factory) == ("1", {})  # a dry run changes nothing
    assert alias_version(factory, FN) == "1"


@pytest.mark.parametrize(
    ("percent", "bake", "message"),
    [
        ("ten", None, "--canary 'ten' is not a percentage"),
        ("100", None, "the canary's percent must be at least 0 (no canary) and under 100, not 100"),
        # Lambda's weights go to 4 decimals: the first routed nothing, the second every request
        ("0.004", None, "the canary's percent must be 0 (no canary) or from 0.01 to 99.99, not 0.004"),
        ("99.995", None, "the canary's percent must be 0 (no canary) or from 0.01 to 99.99, not 99.995"),
        ("10", "soon", "--bake 'soon' is not a duration"),
        (None, "5m", "--bake is how long a canary runs, and there is none here"),
        ("0", "5m", "--bake is how long a canary runs, and there is none here"),
    ],
)
def test_canary_options_that_are_not_right_exit_2(percent: str | None, bake: str | None, message: str) -> None:
    with pytest.raises(UsageError, match=message.replace("(", r"\(").replace(")", r"\)")):
        canary.with_options(LambdaCanary(), percent, bake)


def test_canary_options_replace_the_environments_settings() -> None:
    settings = LambdaCanary(percent=5, seconds=600, max_error_rate=0.01)
    assert canary.with_options(settings, "25%", "90s") == LambdaCanary(25, 90, 0.01)
    assert canary.with_options(settings, None, "5m").seconds == 300
    assert not canary.with_options(settings, "0", None).on


_CONFIG = {"Runtime": "python3.11", "Handler": "handler.handler", "Role": "arn:aws:iam::123456789012:role/fn"}
# ListVersionsByFunction's answer for the Stubber's tests: version 1 serves old code, version 2 was just published
STUBBED_VERSIONS = [
    {"Version": "$LATEST", "CodeSha256": "new", **_CONFIG},
    {"Version": "1", "CodeSha256": "old", **_CONFIG},
    {"Version": "2", "CodeSha256": "new", "Description": "code s3://b/k.zip git aaaaaaaaaaaa", **_CONFIG},
]


def test_a_routing_lambda_refuses_fails_the_canary_with_nothing_changed(dev_env: EnvConfig) -> None:
    """Lambda refuses weighted routing between versions that differ in role or dead-letter settings: a shape moto
    does not produce, played by botocore's Stubber (list the versions, read the alias, the refused update)."""
    client = new_session().client("lambda", region_name="eu-west-1")
    cloudwatch = new_session().client("cloudwatch", region_name="eu-west-1")
    versions = STUBBED_VERSIONS
    with Stubber(client) as stub, Stubber(cloudwatch) as stub_cloudwatch:
        stub_cloudwatch.add_response("get_metric_data", {"MetricDataResults": []})  # the counts before the shift
        stub_cloudwatch.add_response("get_metric_data", {"MetricDataResults": []})  # the minutes before it
        stub.add_response("list_versions_by_function", {"Versions": versions}, {"FunctionName": "fn"})
        alias = {"Name": "live", "FunctionVersion": "1", "RevisionId": "r1"}
        stub.add_response("get_alias", alias, {"FunctionName": "fn", "Name": "live"})
        stub.add_client_error(
            "update_alias",
            "InvalidParameterValueException",
            "Both versions must have the same execution role",
            expected_params={
                "FunctionName": "fn",
                "Name": "live",
                "FunctionVersion": "1",
                "RoutingConfig": {"AdditionalVersionWeights": {"2": 0.1}},
                "RevisionId": "r1",
            },
        )
        aws = fake_factory(**{"lambda": client, "cloudwatch": cloudwatch})
        lambda_chain.Versions.of(aws).listed("fn")  # as update-code listed them, before the canary
        clock = FakeClock()
        ctx = Context(Mock(), dev_env, aws, clock, Reporter(io.StringIO(), tty=False, clock=clock), Mock())
        step = CanaryRelease("health_handler", "fn", "live", "k.zip", "new", 10, 60, 0.0, 5.0)
        with pytest.raises(StepFailed) as refused:
            step.run(ctx)
        stub.assert_no_pending_responses()
        stub_cloudwatch.assert_no_pending_responses()
    assert refused.value.message == (
        "Lambda refused to route 10% of fn:live to version 2 beside version 1: Both versions must have the same "
        "execution role (nothing was changed)"
    )
    assert refused.value.next_step == "deploy it without a canary: inv deploy.lambda health_handler --canary 0"


def test_an_alias_move_whose_answer_was_lost_and_sent_again_is_done(dev_env: EnvConfig) -> None:
    """UpdateAlias is guarded by the alias's RevisionId: when its answer is lost (a read timeout, a dropped
    connection), botocore sends the same call again, which Lambda refuses (PreconditionFailedException: the first
    attempt moved the RevisionId on). move-alias failed though the alias serves its version, and the run counted a
    failure after the alias moved. Played by botocore's Stubber (moto ignores RevisionId): the retry's refusal, then
    the alias as the first attempt left it."""
    client = new_session().client("lambda", region_name="eu-west-1")
    versions = STUBBED_VERSIONS
    with Stubber(client) as stub:
        stub.add_response("list_versions_by_function", {"Versions": versions}, {"FunctionName": "fn"})
        aws = fake_factory(**{"lambda": client})
        lambda_chain.Versions.of(aws).listed("fn")  # as update-code listed them
        stub.add_response("get_alias", {"Name": "live", "FunctionVersion": "1", "RevisionId": "r1"})
        stub.add_client_error(
            "update_alias",
            "PreconditionFailedException",
            "The Revision Id provided does not match the latest Revision Id.",
            http_status_code=412,
        )
        stub.add_response("get_alias", {"Name": "live", "FunctionVersion": "2", "RevisionId": "r2"})
        stub.add_client_error(
            "get_provisioned_concurrency_config", "ProvisionedConcurrencyConfigNotFoundException", http_status_code=404
        )
        clock = FakeClock()
        ctx = Context(Mock(), dev_env, aws, clock, Reporter(io.StringIO(), tty=False, clock=clock), Mock())
        moved = lambda_chain.MoveAlias("health_handler", "fn", "live", "k.zip", "new").run(ctx)
        stub.assert_no_pending_responses()
    assert moved.status == "done" and moved.detail == "health_handler: live → version 2 (was 1)"
    assert moved.outputs["health_handler.previous_version"] == "1"

    with Stubber(client) as stub:  # someone else moved it meanwhile, elsewhere: refused as before
        stub.add_response("list_versions_by_function", {"Versions": versions}, {"FunctionName": "fn"})
        aws = fake_factory(**{"lambda": client})
        lambda_chain.Versions.of(aws).listed("fn")
        stub.add_response("get_alias", {"Name": "live", "FunctionVersion": "1", "RevisionId": "r1"})
        stub.add_client_error("update_alias", "PreconditionFailedException", "no match", http_status_code=412)
        stub.add_response("get_alias", {"Name": "live", "FunctionVersion": "3", "RevisionId": "r3"})
        ctx = Context(Mock(), dev_env, aws, clock, Reporter(io.StringIO(), tty=False, clock=clock), Mock())
        with pytest.raises(ClientError, match="PreconditionFailedException"):
            lambda_chain.MoveAlias("health_handler", "fn", "live", "k.zip", "new").run(ctx)


def provisioned(status: str, available: int, reason: str = "") -> dict[str, Any]:
    """GetProvisionedConcurrencyConfig's answer for an alias asking for 3 environments."""
    found = {"RequestedProvisionedConcurrentExecutions": 3, "AvailableProvisionedConcurrentExecutions": available}
    return {**found, "Status": status, **({"StatusReason": reason} if reason else {})}


def moving_with_provisioned_concurrency(
    dev_env: EnvConfig, answers: list[tuple[str, dict[str, Any]]]
) -> tuple[Outcome | BaseException, FakeClock]:
    """MoveAlias of health_handler from version 1 to 2 on an alias with provisioned concurrency, Lambda answering
    ``answers`` (operation, answer; ``{"denied": True}`` for an AccessDeniedException) after the move: its outcome or
    error, and the clock."""
    client = new_session().client("lambda", region_name="eu-west-1")
    versions = STUBBED_VERSIONS
    clock = FakeClock()
    with Stubber(client) as stub:
        stub.add_response("list_versions_by_function", {"Versions": versions}, {"FunctionName": "fn"})
        aws = fake_factory(**{"lambda": client})
        lambda_chain.Versions.of(aws).listed("fn")
        stub.add_response("get_alias", {"Name": "live", "FunctionVersion": "1", "RevisionId": "r1"})
        stub.add_response("update_alias", {"Name": "live", "FunctionVersion": "2", "RevisionId": "r2"})
        for operation, answer in answers:
            if answer == {"denied": True}:
                stub.add_client_error(operation, "AccessDeniedException", "not allowed", http_status_code=403)
            else:
                stub.add_response(operation, answer)
        ctx = Context(Mock(), dev_env, aws, clock, Reporter(io.StringIO(), tty=False, clock=clock), Mock())
        try:
            outcome: Outcome | BaseException = lambda_chain.MoveAlias(
                "health_handler", "fn", "live", "k.zip", "new"
            ).run(ctx)
        except StepFailed as exc:
            outcome = exc
        stub.assert_no_pending_responses()
    return outcome, clock


def test_a_move_waits_until_the_aliass_provisioned_concurrency_serves_the_new_version(dev_env: EnvConfig) -> None:
    """Lambda allocates an alias's provisioned concurrency to the version it was moved to asynchronously, and routes
    the alias's requests to the old version meanwhile (a weight of 1 for it): smoke would judge the old version.
    move-alias is done once the allocation is READY, all of it available, and the alias routes to its version
    alone; played by botocore's Stubber (moto has no provisioned concurrency)."""
    moving = {"Name": "live", "FunctionVersion": "2", "RevisionId": "r2"}
    moved, clock = moving_with_provisioned_concurrency(
        dev_env,
        [
            ("get_provisioned_concurrency_config", provisioned("IN_PROGRESS", 0)),
            ("get_provisioned_concurrency_config", provisioned("READY", 3)),
            ("get_alias", {**moving, "RoutingConfig": {"AdditionalVersionWeights": {"1": 1.0}}}),  # still moving
            ("get_provisioned_concurrency_config", provisioned("READY", 3)),
            ("get_alias", moving),
        ],
    )
    assert isinstance(moved, Outcome) and moved.status == "done"
    assert moved.detail == ("health_handler: live → version 2 (was 1); provisioned concurrency 3 ready on it (0.8s)"), (
        moved.detail
    )
    assert clock.sleeps == [0.25, 0.5]  # soon, then less often


def test_a_failed_allocation_or_the_deadline_fails_the_move_with_what_moved_for_the_rollback(
    dev_env: EnvConfig,
) -> None:
    """An allocation Lambda could not make (the new version's init raises on each environment) fails move-alias,
    naming the reason, with the alias's move in the failed record's outputs: the automatic rollback moves it back.
    So does the wait's deadline (wait_timeout)."""
    failed, _clock = moving_with_provisioned_concurrency(
        dev_env,
        [
            ("get_provisioned_concurrency_config", provisioned("IN_PROGRESS", 0)),
            ("get_provisioned_concurrency_config", provisioned("FAILED", 0, "FUNCTION_ERROR_INIT_FAILURE")),
        ],
    )
    assert isinstance(failed, StepFailed)
    assert failed.message == (
        "Lambda could not make the provisioned concurrency of fn:live ready on version 2: FUNCTION_ERROR_INIT_FAILURE; "
        "the version it served before serves meanwhile"
    )
    assert (failed.next_step or "").startswith(
        "see what its init wrote: inv logs --env dev --component lambda:health_handler --since 15m; fix it, commit, "
        "then: inv deploy.lambda health_handler --env dev"
    )
    _records, outputs = carried(failed)
    assert outputs["health_handler.previous_version"] == "1" and outputs["health_handler.version"] == "2"

    slow = dataclasses.replace(dev_env, wait_timeout=1.0)
    late, clock = moving_with_provisioned_concurrency(
        slow, [("get_provisioned_concurrency_config", provisioned("IN_PROGRESS", 0))] * 4
    )
    assert isinstance(late, StepFailed) and late.message == (
        "deadline of 1s passed waiting for the provisioned concurrency of fn:live on version 2 (IN_PROGRESS, 0 of 3 "
        "ready)"
    )
    assert sum(clock.sleeps) == 1.0 and carried(late)[1]["health_handler.previous_version"] == "1"


def test_a_move_by_a_role_that_may_not_read_provisioned_concurrency_stands_and_says_so(dev_env: EnvConfig) -> None:
    moved, _clock = moving_with_provisioned_concurrency(
        dev_env, [("get_provisioned_concurrency_config", {"denied": True})]
    )
    assert isinstance(moved, Outcome) and moved.status == "done"
    assert moved.detail.endswith(
        "; its provisioned concurrency not read (lambda:GetProvisionedConcurrencyConfig denied), not waited for"
    )


def test_a_canary_that_cannot_take_itself_back_says_so_and_how(dev_env: EnvConfig) -> None:
    """Someone changed the alias during the canary (its RevisionId moved on), so taking it back is refused: a shape
    moto does not produce (it ignores RevisionId), played by botocore's Stubber."""
    lam = new_session().client("lambda", region_name="eu-west-1")
    cloudwatch = new_session().client("cloudwatch", region_name="eu-west-1")
    config = {"Runtime": "python3.11", "Handler": "handler.handler", "Role": "arn:aws:iam::123456789012:role/fn"}
    versions = [
        {"Version": "$LATEST", "CodeSha256": "new", **config},
        {"Version": "2", "CodeSha256": "new", "Description": "code s3://b/k.zip git aaaaaaaaaaaa", **config},
    ]
    with Stubber(lam) as stub_lambda, Stubber(cloudwatch) as stub_cloudwatch:
        stub_lambda.add_response("list_versions_by_function", {"Versions": versions})
        stub_lambda.add_response("get_alias", {"Name": "live", "FunctionVersion": "1", "RevisionId": "r1"})
        stub_lambda.add_response("update_alias", {"Name": "live", "RevisionId": "r2"})
        nothing = [{"Id": i, "Values": []} for i in ("invocations0", "errors0", "invocations1", "errors1")]
        stub_cloudwatch.add_response("get_metric_data", {"MetricDataResults": nothing})  # before the canary
        old_only = {"MetricDataResults": nothing[:2]}  # the old version's, in the minutes before it
        stub_cloudwatch.add_response("get_metric_data", old_only)
        failed = [
            {"Id": "invocations0", "Values": [3.0]},
            {"Id": "errors0", "Values": [3.0]},
            {"Id": "invocations1", "Values": [30.0]},
            {"Id": "errors1", "Values": []},
        ]
        stub_cloudwatch.add_response("get_metric_data", {"MetricDataResults": failed})
        split = {"Name": "live", "FunctionVersion": "1", "RoutingConfig": {"AdditionalVersionWeights": {"2": 0.1}}}
        stub_lambda.add_response("get_alias", {**split, "RevisionId": "r2"})  # the poll's: as the canary split it
        stub_lambda.add_client_error(
            "update_alias",
            "PreconditionFailedException",
            "The Revision Id provided does not match the latest Revision Id",
            expected_params={
                "FunctionName": "fn",
                "Name": "live",
                "FunctionVersion": "1",
                "RoutingConfig": {"AdditionalVersionWeights": {}},
                "RevisionId": "r2",
            },
        )
        stub_lambda.add_response("get_alias", {**split, "RevisionId": "r3"})  # read again for the message
        aws = fake_factory(**{"lambda": lam, "cloudwatch": cloudwatch})
        lambda_chain.Versions.of(aws).listed("fn")  # as update-code listed them, before the canary
        clock, out = FakeClock(), io.StringIO()
        ctx = Context(Mock(), dev_env, aws, clock, Reporter(out, tty=False, clock=clock), Mock())
        with pytest.raises(StepFailed) as failed_step:
            CanaryRelease("health_handler", "fn", "live", "k.zip", "new", 10, 60, 0.0, 5.0).run(ctx)
        stub_lambda.assert_no_pending_responses()
        stub_cloudwatch.assert_no_pending_responses()
    assert failed_step.value.message == (
        "the canary of health_handler failed: version 2 answered 3 requests, 3 errors (100%; version 1: 30 requests, "
        "0 errors, 0%), any error beyond version 1's own rate takes it back; but taking it back failed: live serves "
        "version 1 with 10% to version 2; $LATEST still runs its code, which a deploy of the function's stack would "
        "publish"
    )
    assert failed_step.value.next_step == (
        "point the alias at version 1 alone: aws lambda update-alias --function-name fn --name live "
        "--function-version 1 --routing-config AdditionalVersionWeights={}; then inv deploy.lambda health_handler "
        "--env dev (it puts $LATEST back on what serves)"
    )
    assert "❌ could not take the canary of health_handler back (" in out.getvalue()


def test_a_promoted_function_must_be_the_bytes_its_source_runs(
    with_lambdas: Path, factory: AwsFactory, environment: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """prod (promote_from = "dev", here on dev's own resources) takes lambda:health_handler when dev runs it as this
    checkout has it, and only as the very zip dev runs: a version of dev said to be this commit but holding other
    bytes (requirements pip resolved otherwise on dev's machine) makes the sources the same and the zips not."""
    toml = with_lambdas / "deploy.toml"
    text = toml.read_text()
    prod = text[text.index("[environments.dev]") :].replace("environments.dev", "environments.prod")
    toml.write_text(text + "\n" + prod.replace("[environments.prod]\n", '[environments.prod]\npromote_from = "dev"\n'))
    git(with_lambdas, "commit", "-qam", "prod, promoted from dev")
    head = git(with_lambdas, "rev-parse", "--short=12", "HEAD").strip()
    # deployed to dev with its smoke (one without proves nothing to prod), its checks passing here
    monkeypatch.setattr(Smoke, "run", lambda _self, _ctx: Outcome.done("ok"))
    commands.deploy_lambda("health_handler", env="dev", runtime=runtime(with_lambdas, factory))
    run = runtime(with_lambdas, factory)
    commands.deploy_lambda("health_handler", env="prod", dry_run=True, runtime=run)
    assert "✅ promoted from dev: it runs lambda:health_handler as this checkout has" in run.stderr.getvalue()  # type: ignore[attr-defined]

    lam = factory.client("lambda")  # dev's live version: this commit by its description, other bytes
    name, key = FUNCTIONS["health_handler"], environment["health_handler"]
    lam.update_function_code(FunctionName=name, S3Bucket=BUCKET, S3Key=key)
    version = lam.publish_version(FunctionName=name, Description=f"code s3://{BUCKET}/{key} git {head}")["Version"]
    lam.update_alias(FunctionName=name, Name="live", FunctionVersion=version)
    with pytest.raises(UsageError) as refused:
        commands.deploy_lambda("health_handler", env="prod", dry_run=True, runtime=runtime(with_lambdas, factory))
    theirs = lam.get_function_configuration(FunctionName=name, Qualifier=version)["CodeSha256"]
    assert f"  lambda:health_handler: dev runs CodeSha256 {theirs}, not this checkout's zip (CodeSha256 " in (
        refused.value.message
    )
    assert "pip freeze" in refused.value.message and refused.value.exit_code == 2


def test_a_function_whose_release_failed_in_the_source_is_not_promoted(
    with_lambdas: Path, factory: AwsFactory, environment: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """dev kept a release whose smoke failed (--no-rollback): its alias serves it, its live record names the commit
    before. prod (promote_from = "dev") took it ("✅ promoted from dev"): what dev runs was read from the alias."""
    toml = with_lambdas / "deploy.toml"
    text = toml.read_text()
    prod = text[text.index("[environments.dev]") :].replace("environments.dev", "environments.prod")
    toml.write_text(text + "\n" + prod.replace("[environments.prod]\n", '[environments.prod]\npromote_from = "dev"\n'))
    git(with_lambdas, "commit", "-qam", "prod, promoted from dev")
    commands.deploy_lambda("health_handler", env="dev", smoke=False, runtime=runtime(with_lambdas, factory))
    handler = with_lambdas / "lambda" / FN / "handler.py"
    handler.write_text(handler.read_text() + "\n# a broken release\n")
    git(with_lambdas, "commit", "-qam", "a broken release")

    def failing(_self: Smoke, _ctx: Context) -> Outcome:
        raise StepFailed("smoke failed (4 passed, 1 failed): api_gateway: GET /health → 500", next_step="look")

    monkeypatch.setattr(Smoke, "run", failing)
    with pytest.raises(StepFailed, match="left in place for debugging"):
        commands.deploy_lambda(FN, env="dev", rollback=False, runtime=runtime(with_lambdas, factory))
    assert alias_version(factory, FN) == "3"
    with pytest.raises(UsageError) as refused:
        commands.deploy_lambda(FN, env="prod", dry_run=True, runtime=runtime(with_lambdas, factory))
    assert "lambda:health_handler: dev runs it at " in refused.value.message and refused.value.exit_code == 2
    assert "changed since: lambda/health_handler/handler.py" in refused.value.message


def test_a_source_environment_that_cannot_be_read_is_named_as_the_promotions(
    with_lambdas: Path, factory: AwsFactory, environment: dict[str, str]
) -> None:
    """dev, prod's promote_from, does not answer: the error said "cannot reach AWS" alone (on AWS, at the region's
    endpoint prod shares), naming neither dev nor the promotion check."""
    toml = with_lambdas / "deploy.toml"
    text = toml.read_text().replace("[environments.dev]\n", "[environments.dev]\nmax_attempts = 0\n", 1)
    prod = text[text.index("[environments.dev]") :].replace("environments.dev", "environments.prod")
    toml.write_text(text + "\n" + prod.replace("[environments.prod]\n", '[environments.prod]\npromote_from = "dev"\n'))
    git(with_lambdas, "commit", "-qam", "prod, promoted from dev, which does not answer")

    def factory_of(env: EnvConfig) -> AwsFactory:
        return AwsFactory(dataclasses.replace(env, endpoint_url="http://127.0.0.1:9")) if env.name == "dev" else factory

    run = commands.Runtime(
        config_path=toml,
        stdout=io.StringIO(),
        stderr=io.StringIO(),
        clock=FakeClock(),
        aws_factory=factory_of,
        docker_factory=Mock(side_effect=AssertionError("no Docker")),
    )
    with pytest.raises(StepFailed) as failed:
        commands.deploy_lambda(FN, env="prod", dry_run=True, runtime=run)
    assert failed.value.message.startswith(
        "reading dev, the environment releases are promoted from, failed: cannot reach AWS (Could not connect to "
    )


def test_a_deploy_of_a_function_records_the_commits_it_takes_live(
    with_lambdas: Path, factory: AwsFactory, environment: dict[str, str], dev_env: EnvConfig
) -> None:
    """As deploy.auto's: the commits since the one the alias serves that change the function (not another's)."""
    commands.deploy_lambda("health_handler", env="dev", smoke=False, runtime=runtime(with_lambdas, factory))
    handler = with_lambdas / "lambda" / "health_handler" / "handler.py"
    handler.write_text(handler.read_text() + "\n# v2\n")
    git(with_lambdas, "commit", "-qam", "Health: v2")
    v2 = git(with_lambdas, "rev-parse", "--short=12", "HEAD").strip()
    other = with_lambdas / "lambda" / "login_handler" / "handler.py"
    other.write_text(other.read_text() + "\n# elsewhere\n")
    git(with_lambdas, "commit", "-qam", "Login: not this one")
    report = commands.deploy_lambda("health_handler", env="dev", smoke=False, runtime=runtime(with_lambdas, factory))
    assert report is not None and report.ok
    store = history.History.of(factory, dev_env)
    assert store is not None
    assert store.records(limit=1)[0].commits == [{"sha": v2, "author": "t", "subject": "Health: v2"}]


def test_a_rerun_after_a_release_kept_with_no_rollback_smokes_it_before_the_live_record_takes_it(
    with_lambdas: Path,
    factory: AwsFactory,
    environment: dict[str, str],
    dev_env: EnvConfig,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A release whose smoke failed, kept with --no-rollback, serves behind the alias; the same command run again
    found every step in place and skipped smoke too ("nothing changed before it"), so the live record took the
    release that failed smoke as verified, with no check run."""
    smoked: list[str] = []

    def smoke(result: str) -> Callable[[Smoke, Context], Outcome]:
        def run(_self: Smoke, _ctx: Context) -> Outcome:
            smoked.append(result)
            if result == "failed":
                raise StepFailed("smoke failed (4 passed, 1 failed): api_gateway: GET /health → 500", next_step="look")
            return Outcome.done("5 passed")

        return run

    monkeypatch.setattr(Smoke, "run", smoke("passed"))
    commands.deploy_lambda(FN, env="dev", runtime=runtime(with_lambdas, factory))
    store = history.History.of(factory, dev_env)
    assert store is not None and store.live()[f"lambda:{FN}"]["version"] == "2"
    handler = with_lambdas / "lambda" / FN / "handler.py"
    handler.write_text(handler.read_text() + "\n# a broken release\n")
    git(with_lambdas, "commit", "-qam", "a broken release")
    monkeypatch.setattr(Smoke, "run", smoke("failed"))
    with pytest.raises(StepFailed, match="left in place for debugging"):
        commands.deploy_lambda(FN, env="dev", rollback=False, runtime=runtime(with_lambdas, factory))
    assert alias_version(factory, FN) == "3" and store.live()[f"lambda:{FN}"]["version"] == "2"

    with pytest.raises(StepFailed, match="smoke failed"):  # still broken: smoked again, and not taken as verified
        commands.deploy_lambda(FN, env="dev", rollback=False, runtime=runtime(with_lambdas, factory))
    assert smoked == ["passed", "failed", "failed"] and store.live()[f"lambda:{FN}"]["version"] == "2"

    monkeypatch.setattr(Smoke, "run", smoke("passed"))  # what it calls is back
    report = commands.deploy_lambda(FN, env="dev", runtime=runtime(with_lambdas, factory))
    assert report is not None and statuses(report)["smoke"] == "done" and smoked[-1] == "passed"
    assert store.live()[f"lambda:{FN}"]["version"] == "3"
    again = commands.deploy_lambda(FN, env="dev", runtime=runtime(with_lambdas, factory))
    assert again is not None and set(statuses(again).values()) == {"skipped"}  # verified: nothing to do
    assert len(smoked) == 4


@pytest.mark.parametrize("deleted", ["function", "alias"])
def test_a_function_deleted_outside_cloudformation_is_told_how_to_have_it_created_again(
    with_lambdas: Path, factory: AwsFactory, environment: dict[str, str], deleted: str
) -> None:
    """The API stack names the function, but Lambda has it (or its alias) no more: a deploy of the unchanged stack
    would change nothing, so the advice is not 'deploy the API stack first' but how to have CloudFormation make it."""
    lam = factory.client("lambda")
    if deleted == "function":
        lam.delete_function(FunctionName=FUNCTIONS["health_handler"])
    else:
        lam.delete_alias(FunctionName=FUNCTIONS["health_handler"], Name="live")
    with pytest.raises(UsageError) as refused:
        commands.deploy_lambda("health_handler", env="dev", smoke=False, runtime=runtime(with_lambdas, factory))
    assert "though its stack" in refused.value.message and refused.value.exit_code == 2
    assert refused.value.next_step == lambda_chain.deleted_behind_the_stack()
    assert "deleted outside CloudFormation" in (refused.value.next_step or "")
    assert "its route out of FUNCTIONS in cdk/stacks/api_stack.py" in (refused.value.next_step or "")


def test_an_update_another_actor_began_after_the_read_is_waited_for_then_the_code_is_updated(
    dev_env: EnvConfig,
) -> None:
    """UpdateFunctionCode refused with ResourceConflictException: an update began between update-code's read of
    $LATEST (idle then) and its call (a stack deploy, a person). It is waited for, as one seen at the read is, and
    the update made then: the step failed with the AWS error, for a rerun to wait. Played by botocore's Stubber."""
    lam = new_session().client("lambda", region_name="eu-west-1")
    cfn = new_session().client("cloudformation", region_name="eu-west-1")
    config = {"Runtime": "python3.11", "Handler": "handler.handler", "Role": "arn:aws:iam::123456789012:role/fn"}
    idle = {"FunctionName": "fn", "Version": "$LATEST", "CodeSha256": "old", "State": "Active", **config}
    with Stubber(lam) as stub, Stubber(cfn) as stub_cfn:
        aws = fake_factory(**{"lambda": lam, "cloudformation": cfn})
        outputs = [{"OutputKey": "ArtifactsBucketName", "OutputValue": "bucket"}]
        stack = {"StackName": "Registry", "CreationTime": datetime(2026, 1, 1, tzinfo=UTC)}
        stub_cfn.add_response(
            "describe_stacks", {"Stacks": [{**stack, "StackStatus": "UPDATE_COMPLETE", "Outputs": outputs}]}
        )
        stub.add_client_error(
            "update_function_code",
            "ResourceConflictException",
            "The operation cannot be performed at this time. An update is in progress for resource: fn",
            http_status_code=409,
        )
        stub.add_response("get_function_configuration", {**idle, "LastUpdateStatus": "InProgress"})
        stub.add_response("get_function_configuration", {**idle, "LastUpdateStatus": "Successful"})
        updated = {**idle, "CodeSha256": "new", "LastUpdateStatus": "Successful"}
        stub.add_response(
            "update_function_code", updated, {"FunctionName": "fn", "S3Bucket": "bucket", "S3Key": "k.zip"}
        )
        clock = FakeClock()
        ctx = Context(Mock(), dev_env, aws, clock, Reporter(io.StringIO(), tty=False, clock=clock), Mock())
        step = lambda_chain.UpdateFunctionCode("health_handler", "fn", "Registry", "k.zip", "new", 60.0, 1.0)
        read: Future[Any] = Future()  # $LATEST idle, as read while the zip was uploaded (the step's early read)
        read.set_result({"current": {**idle, "LastUpdateStatus": "Successful"}, "versions": [idle]})
        ctx._early[id(step)] = (step, read)
        done = step.run(ctx)
        stub.assert_no_pending_responses()
    assert done.status == "done" and done.detail == "health_handler: $LATEST runs new… (was old…)"
    assert clock.sleeps  # it waited for the other update


def published(state: str, **more: Any) -> dict[str, Any]:
    return {"FunctionName": "car-rental-login", "Version": "7", "State": state, **more}


def test_a_version_published_pending_is_waited_for_until_active_before_the_alias_moves() -> None:
    """SnapStart: PublishVersion answers State Pending while Lambda takes the snapshot, and no invoke reaches a
    Pending version; an alias moved to it at once would fail every request meanwhile. Played by the Stubber (moto
    publishes every version Active)."""
    client = new_session().client("lambda")
    clock, said = FakeClock(), []
    with Stubber(client) as stub:
        for state in ("Pending", "Active"):
            stub.add_response(
                "get_function_configuration",
                published(state),
                {"FunctionName": "car-rental-login", "Qualifier": "7"},
            )
        ready = lambda_chain.version_ready(
            client, "car-rental-login", published("Pending"), clock, said.append, timeout=60, poll=1, rerun="r"
        )
        stub.assert_no_pending_responses()
    assert ready["State"] == "Active" and clock.sleeps and len(said) == 2
    assert said[0].startswith("car-rental-login version 7: Pending")


def test_a_version_published_active_is_not_read_again() -> None:
    client = new_session().client("lambda")
    with Stubber(client):  # any read would fail: none is scripted
        ready = lambda_chain.version_ready(
            client, "car-rental-login", published("Active"), FakeClock(), print, timeout=60, poll=1, rerun="r"
        )
    assert ready["State"] == "Active"


@pytest.mark.parametrize("last", ["Failed", "Pending"])
def test_a_version_that_fails_or_stays_pending_fails_the_step_before_the_alias_moves(last: str) -> None:
    client = new_session().client("lambda")
    clock = FakeClock()
    with Stubber(client) as stub:
        for _ in range(100 if last == "Pending" else 1):
            stub.add_response(
                "get_function_configuration",
                published(last, StateReason="snapshot failed", StateReasonCode="SnapStartException"),
                {"FunctionName": "car-rental-login", "Qualifier": "7"},
            )
        with pytest.raises(StepFailed) as failed:
            lambda_chain.version_ready(
                client,
                "car-rental-login",
                published("Pending"),
                clock,
                lambda _line: None,
                timeout=5,
                poll=1,
                rerun="inv deploy.lambda login_handler",
            )
    message = failed.value.message
    if last == "Failed":
        assert message == (
            "Lambda failed version 7 of car-rental-login: snapshot failed (SnapStartException); the alias was not moved"
        )
    else:
        assert message.startswith("deadline of 5s passed waiting for version 7 of car-rental-login to be Active")
        assert clock.monotonic() >= 5
    assert failed.value.next_step.endswith(
        "inv deploy.lambda login_handler" + ("" if last == "Failed" else " (it reuses the version)")
    )
