"""inv rollback against moto's ECS, ECR, S3 and CloudFormation, through the command the task calls.

The history and the live record are in the artifacts bucket as deploys leave them; moto runs no task, so
wait-healthy (tested on its own in test_wait_healthy_scripted) is replaced by a step that reports healthy.
"""

from __future__ import annotations

import dataclasses
import io
import json
import shutil
import threading
import time
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any
from unittest.mock import Mock

import botocore.exceptions
import pytest

from deploykit import auto, commands, history, local_lock, lock, planner, stack_chain, synth
from deploykit import rollback as rollbacks
from deploykit.app_chain import WaitHealthy
from deploykit.aws import AwsFactory
from deploykit.clock import FakeClock
from deploykit.commands.promotion import ran_there
from deploykit.config import EnvConfig, load_config
from deploykit.errors import StepFailed, Superseded, UsageError
from deploykit.hookspecs import hookimpl
from deploykit.output import Reporter
from deploykit.plan import Context, Outcome, Plan, RunReport, StepRecord
from deploykit.stack_chain import KEPT_TEMPLATES as KEPT
from deploykit.stack_chain import DeployStack, kept_template_key, was_key
from tests.conftest import REPO, git
from tests.functional.conftest import CONTAINER, asked, create_service, put_image
from tests.functional.test_alarm_list_moto import watching
from tests.functional.test_endpoints import create_stack
from tests.functional.test_not_run_moto import Heard, hearing
from tests.functional.test_watch_alarms_moto import NAMES, Evaluating, put_alarm, set_state

BUCKET = "registry-artifacts-rb"
A, B, C = "aaaaaaa11111", "bbbbbbb22222", "ccccccc33333"
URI = "123456789012.dkr.ecr.eu-west-1.amazonaws.com/car-rental-backend"


def runtime(
    project: Path, factory: AwsFactory, stdout: io.StringIO | None = None, stderr: io.StringIO | None = None
) -> commands.Runtime:
    return commands.Runtime(
        config_path=project / "deploy.toml",
        stdout=stdout or io.StringIO(),
        stderr=stderr or io.StringIO(),
        clock=FakeClock(),
        aws_factory=lambda _env: factory,
        docker_factory=Mock(side_effect=AssertionError("a rollback builds nothing")),
    )


def write_record(store: history.History, sha: str, minutes: int, *, ok: bool = True) -> None:
    report = RunReport(Plan("dev", (), "deploy.app"), [], 30.0, None)
    now = datetime(2026, 3, 1, 9, 0, tzinfo=UTC) + timedelta(minutes=minutes)
    record = history.record_of(report, components={"app": sha}, base={}, head=sha, who="ana@laptop", now=now)
    store.write(record if ok else history.Record(**{**record.__dict__, "ok": False}))


def run_image(factory: AwsFactory, tag: str) -> str:
    """Make the service run ``<repo>:tag`` (a revision registered as deploy.app would)."""
    ecs = factory.client("ecs")
    td = ecs.describe_task_definition(taskDefinition="car-rental-backend")["taskDefinition"]
    container = {**CONTAINER, "image": f"{URI}:{tag}"}
    arn = ecs.register_task_definition(
        family="car-rental-backend",
        networkMode=td["networkMode"],
        requiresCompatibilities=td["requiresCompatibilities"],
        cpu=td["cpu"],
        memory=td["memory"],
        executionRoleArn=td["executionRoleArn"],
        taskRoleArn=td["taskRoleArn"],
        containerDefinitions=[container],
    )["taskDefinition"]["taskDefinitionArn"]
    ecs.update_service(cluster="car-rental-cluster", service="car-rental-service", taskDefinition=arn)
    return str(arn)


FIRST = {"Parameters": {"ImageTag": {"Type": "String"}}, "Resources": {"Topic": {"Type": "AWS::SNS::Topic"}}}
SECOND = {**FIRST, "Resources": {"Topic": {"Type": "AWS::SNS::Topic"}, "Alerts": {"Type": "AWS::SNS::Topic"}}}


def deploy_fargate(
    factory: AwsFactory,
    env: EnvConfig,
    tmp_path: Path,
    template: dict[str, object],
    commit: str,
    image: str = C,
    topics: list[str] | None = None,
) -> Outcome:
    """Deploy ``template`` as the Fargate stack's, from ``commit`` ("": uncommitted changes), as deploy.stack does:
    the template kept in the artifacts bucket when a commit made it. ``topics``: those its app names for its
    events."""
    assembly = tmp_path / f"assembly-{commit or 'dirty'}"
    assembly.mkdir(parents=True)
    (assembly / "Fargate.template.json").write_text(json.dumps(template))
    properties: dict[str, object] = {"stackName": "CarRentalFargateStack", "templateFile": "Fargate.template.json"}
    if topics is not None:
        properties["notificationArns"] = topics
    artifact = {"type": "aws:cloudformation:stack", "properties": {**properties, "tags": {"project": "rental"}}}
    (assembly / "manifest.json").write_text(json.dumps({"artifacts": {"CarRentalFargateStack": artifact}}))
    step = DeployStack(
        "CarRentalFargateStack",
        str(assembly / "Fargate.template.json"),
        (("ImageTag", image),),
        commit=commit,
        registry_stack=env.stacks.registry,
    )
    clock = FakeClock()
    return step.run(Context(Mock(), env, factory, clock, Reporter(io.StringIO(), tty=False, clock=clock), Mock()))


def stack_record(store: history.History, sha: str, minutes: int) -> None:
    """A successful deploy.stack of the Fargate stack at ``sha``, at 9:``minutes``."""
    report = RunReport(Plan("dev", (), "deploy.stack"), [], 1.0)
    now = datetime(2026, 3, 1, 9, minutes, tzinfo=UTC)
    store.write(history.record_of(report, components={"stack:fargate": sha}, base={}, head=sha, who="ci", now=now))


def stack_resources(factory: AwsFactory) -> list[str]:
    cfn = factory.client("cloudformation")
    return [
        r["LogicalResourceId"]
        for r in cfn.describe_stack_resources(StackName="CarRentalFargateStack")["StackResources"]
    ]


@pytest.fixture
def deployed(factory: AwsFactory, dev_env: EnvConfig, monkeypatch: pytest.MonkeyPatch) -> history.History:
    """A service that ran A, then B, and runs C now (B's deploy failed once first); images A, B, C pushed."""
    create_service(factory)
    s3 = factory.client("s3")
    s3.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    create_stack(factory.client("cloudformation"), dev_env.stacks.registry, {"ArtifactsBucketName": BUCKET})
    store = history.History.of(factory, dev_env)
    assert store is not None
    for minutes, tag in enumerate((A, B, C)):
        put_image(factory, tag)
        run_image(factory, tag)
        write_record(store, tag, minutes)
    write_record(store, A, 5, ok=False)  # a failed deploy is never a rollback target

    def healthy(self: WaitHealthy, ctx: Context) -> Outcome:
        return Outcome.done(f"healthy: {self.image.rsplit(':', 1)[-1]} (moto runs no task)")

    monkeypatch.setattr(WaitHealthy, "run", healthy)
    return store


def service_image(factory: AwsFactory) -> tuple[str, str]:
    ecs = factory.client("ecs")
    service = ecs.describe_services(cluster="car-rental-cluster", services=["car-rental-service"])["services"][0]
    td = ecs.describe_task_definition(taskDefinition=service["taskDefinition"])["taskDefinition"]
    return str(service["taskDefinition"]), str(td["containerDefinitions"][0]["image"])


def revision_count(factory: AwsFactory) -> int:
    return len(factory.client("ecs").list_task_definitions(familyPrefix="car-rental-backend")["taskDefinitionArns"])


def test_a_rollback_reads_the_live_record_before_the_history_and_a_deploy_writes_them_the_other_way_round(
    project: Path, factory: AwsFactory, deployed: history.History
) -> None:
    """A rollback read the history it goes back by beside the live record it checks again under its lock, and a
    deploy wrote its record and its live record at once: a deploy finishing between the two reads (its live record
    read, its history record not yet) was taken off unseen, the rollback's output and record naming the release
    before it. Now the live record is read first (its read held back a little here, so that reads side by side would
    show), and the deploy's record is written before its live record (its write held back a little)."""
    s3 = factory.client("s3")
    events: list[str] = []

    def what(params: dict[str, Any], operation: str) -> str | None:
        key = str(params.get("Key") or params.get("Prefix") or "")
        if key == deployed.live_key:
            return f"{operation} live"
        return f"{operation} history" if key.startswith(deployed.prefix) else None

    def started(params: dict[str, Any], model: Any, **_: Any) -> None:
        if said := what(params, model.name):
            events.append(said)
            if model.name in ("GetObject", "PutObject"):  # what went side by side would be overtaken
                time.sleep(0.3)

    def ended(context: dict[str, Any], model: Any, **_: Any) -> None:
        if said := what(context.get("dk_params", {}), model.name):
            events.append(f"{said} done")

    def kept(params: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
        context["dk_params"] = dict(params)

    s3.meta.events.register("before-parameter-build.s3.*", started)
    s3.meta.events.register("before-parameter-build.s3.*", kept)
    s3.meta.events.register("after-call.s3.*", ended)
    commands.rollback(env="dev", smoke=False, runtime=runtime(project, factory))
    first_history = next(i for i, e in enumerate(events) if e.endswith("history") and not e.startswith("Put"))
    assert events.index("GetObject live done") < first_history, events
    assert events.index("PutObject history done") < events.index("PutObject live"), events


def test_rollback_goes_back_to_the_previous_successful_deploy_on_a_fresh_revision(
    project: Path, factory: AwsFactory, deployed: history.History
) -> None:
    before = revision_count(factory)  # 1 (the stack's) + A, B, C
    out, err = io.StringIO(), io.StringIO()
    rt = runtime(project, factory, out, err)
    report = commands.rollback(env="dev", smoke=False, as_json=True, runtime=rt)
    assert report is not None and report.ok
    assert [(r.step, r.status) for r in report.records] == [
        ("register-taskdef", "done"),
        ("roll-service", "done"),
        ("wait-healthy", "done"),
    ]
    arn, image = service_image(factory)
    assert image == f"{URI}:{B}"
    assert revision_count(factory) == before + 1 and arn.endswith(f":{before + 1}")  # fresh, not revision 3
    tags = factory.client("ecs").describe_task_definition(taskDefinition=arn, include=["TAGS"])["tags"]
    assert {"key": "deploykit:image-tag", "value": B} in tags
    assert f"⏪ rollback app in dev: {C} → {B} [history: deploy.app at 2026-03-01T09:01:00+00:00" in err.getvalue()
    assert json.loads(out.getvalue())["ok"] is True
    # the history says what is live now
    newest = deployed.records(1)[0]
    assert (newest.command, newest.components, newest.base, newest.ok) == (
        f"rollback app → {B}",
        {"app": B},
        {"app": C},
        True,
    )
    assert deployed.live()["app"]["sha"] == B

    # again: B is live, so the previous successful deploy other than B is C (the one rolled back from)
    again = commands.rollback(env="dev", to="aaaaaaa", smoke=False, runtime=runtime(project, factory))
    assert again is not None and again.ok
    assert service_image(factory)[1] == f"{URI}:{A}"
    assert revision_count(factory) == before + 2


def test_a_rollback_never_waits_for_the_lock_another_deploy_holds(
    project: Path, factory: AwsFactory, deployed: history.History, dev_env: EnvConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Even where commands may wait for the lock ($DEPLOYKIT_LOCK_WAIT), a rollback is refused at once: the deploy it
    would wait for changes what it goes back from (the previous deploy, what is live); it says so."""
    monkeypatch.setenv(lock.WAIT_ENV, "10m")
    clock = FakeClock()
    held = lock.EnvLock.of(factory, dev_env, clock=clock)
    assert held is not None
    held.acquire("deploy.auto")
    rt = runtime(project, factory)
    rt.clock = clock
    with pytest.raises(UsageError, match="another deploy holds the lock of environment 'dev'") as refused:
        commands.until_unlocked(lambda: commands.rollback(env="dev", smoke=False, runtime=rt), rt)
    assert not isinstance(refused.value, lock.LockHeld) and clock.sleeps == []
    assert "a rollback does not wait for the lock" in (refused.value.next_step or "")
    assert service_image(factory)[1] == f"{URI}:{C}"


def test_a_rollback_another_deploy_finished_under_is_refused_not_started_again(
    project: Path, factory: AwsFactory, deployed: history.History, dev_env: EnvConfig
) -> None:
    """A deploy that finished between the rollback's reads and its lock (its record written just before the lock's
    PutObject) changed what the rollback goes back from: it stops before changing anything and, unlike a deploy, is
    not started again (it would go back from that deploy's release): refused, with what to look at."""
    other: list[str] = []

    def meanwhile(params: dict[str, Any], **_: Any) -> None:
        if str(params.get("Key", "")).startswith("deploykit/lock/") and not other:
            other.append("deploy.app")
            write_record(deployed, "ddddddd44444", 10)  # another deploy of the app, finished

    factory.client("s3").meta.events.register("before-parameter-build.s3.PutObject", meanwhile)
    before = service_image(factory)
    rt = runtime(project, factory)
    with pytest.raises(UsageError, match=r"what is live in 'dev' changed since this command read it") as refused:
        commands.until_unlocked(lambda: commands.rollback(env="dev", smoke=False, runtime=rt), rt)
    assert not isinstance(refused.value, Superseded) and other == ["deploy.app"]
    assert (refused.value.next_step or "").startswith("look at what is live then (inv history --env dev)")
    assert service_image(factory) == before and "🔁" not in rt.stderr.getvalue()  # type: ignore[attr-defined]
    assert deployed.records(1)[0].command == "deploy.app"  # the rollback recorded nothing


def test_a_rollback_to_an_image_that_never_ran_there_is_judged_as_a_deploy(
    project: Path, factory: AwsFactory, deployed: history.History
) -> None:
    """dev is frozen and runs C; image D was pushed and never deployed there. `--to D` brings something new: the
    freeze refuses it, as it would a deploy, where a rollback's going back was never held up; `--to A`, which ran
    there, goes. Without the freeze D goes, said as new."""
    D = "ddddddd44444"
    put_image(factory, D)
    commands.freeze_env(env="dev", reason="Black Friday", runtime=runtime(project, factory))
    with pytest.raises(UsageError, match="refusing to deploy to dev: dev is frozen") as refused:
        commands.rollback(env="dev", to=D, smoke=False, runtime=runtime(project, factory))
    assert refused.value.exit_code == 2 and service_image(factory)[1] == f"{URI}:{C}"
    back = commands.rollback(env="dev", to=A, smoke=False, runtime=runtime(project, factory))
    assert back is not None and back.ok and service_image(factory)[1] == f"{URI}:{A}"
    commands.unfreeze_env(env="dev", runtime=runtime(project, factory))
    err = io.StringIO()
    report = commands.rollback(env="dev", to=D, smoke=False, runtime=runtime(project, factory, stderr=err))
    assert report is not None and report.ok and service_image(factory)[1] == f"{URI}:{D}"
    assert f"⚠️  app never ran at {D} in dev (its newest 100 runs): going to it brings something new" in err.getvalue()


def test_a_commit_a_component_was_carried_to_counts_as_run_there(
    factory: AwsFactory, deployed: history.History
) -> None:
    """stack:data deployed at A, then carried unchanged through a run at B (the app's): it ran at B (the stack at B
    was A's template). Judged by its deploys alone, B was "never run" there, and a rollback to it refused in a
    freeze, or where releases are promoted."""
    report = RunReport(Plan("dev", (), "deploy.auto"), [], 1.0)
    when = datetime(2026, 3, 1, 10, 0, tzinfo=UTC)
    deployed.write(history.record_of(report, components={"stack:data": A}, base={}, head=A, who="ci", now=when))
    carried = {"app": B, "stack:data": B}
    later = datetime(2026, 3, 1, 10, 5, tzinfo=UTC)
    deployed.write(
        history.record_of(
            report, components=carried, base={"app": A}, head=B, unchanged=["stack:data"], who="ci", now=later
        )
    )
    assert [r.head for r in deployed.records_of("stack:data", 100)] == [A]  # the deploys alone: not B
    assert ran_there(factory, "stack:data", B) and ran_there(factory, "stack:data", A[:7])
    assert not ran_there(factory, "stack:data", C)


STAGING = """
[environments.staging]
region = "eu-west-1"
cluster = "staging-cluster"
service = "staging-service"
container = "backend"
repository = "staging-backend"

[environments.staging.stacks]
registry = "StagingRegistryStack"
data = "StagingDataStack"
auth = "StagingAuthStack"
fargate = "StagingFargateStack"
api = "StagingApiStack"
"""


def test_a_rollback_to_an_image_neither_it_nor_its_source_ran_is_refused_where_releases_are_promoted(
    project: Path, factory: AwsFactory, deployed: history.History
) -> None:
    """dev takes only what staging runs (promote_from); `--to D`, never run in dev nor in staging, would ship a
    release no environment tried: refused, nothing changed. `--to A`, which ran in dev, goes back."""
    toml = project / "deploy.toml"
    toml.write_text(
        toml.read_text().replace("[environments.dev]\n", '[environments.dev]\npromote_from = "staging"\n') + STAGING
    )
    D = "ddddddd44444"
    put_image(factory, D)
    rt = runtime(project, factory)
    rt.aws_factory = lambda env: factory if env.name == "dev" else AwsFactory(env)
    with pytest.raises(UsageError) as refused:
        commands.rollback(env="dev", to=D, smoke=False, runtime=rt)
    assert refused.value.message == (
        f"dev takes only what staging runs (promote_from = 'staging'), and neither ran app at {D}: nothing was changed"
    )
    assert service_image(factory)[1] == f"{URI}:{C}"
    back = commands.rollback(env="dev", to=A, smoke=False, runtime=rt)
    assert back is not None and back.ok and service_image(factory)[1] == f"{URI}:{A}"


def test_rollback_to_what_is_live_changes_nothing(
    project: Path, factory: AwsFactory, deployed: history.History
) -> None:
    before = revision_count(factory)
    err = io.StringIO()
    assert commands.rollback(env="dev", to=C[:8], runtime=runtime(project, factory, stderr=err)) is None
    assert "nothing to roll back: app already runs" in err.getvalue()
    assert revision_count(factory) == before
    # --json: the shape every run prints, with no steps
    out = io.StringIO()
    assert commands.rollback(env="dev", to=C[:8], as_json=True, runtime=runtime(project, factory, stdout=out)) is None
    printed = json.loads(out.getvalue())
    assert list(printed)[:7] == ["env", "title", "ok", "seconds", "steps", "outputs", "error"]
    assert (printed["env"], printed["ok"], printed["steps"], printed["error"]) == ("dev", True, [], None)


def test_a_rollback_from_a_failed_runs_release_records_that_release_as_what_it_took_off(
    project: Path, factory: AwsFactory, deployed: history.History, dev_env: EnvConfig, tmp_path: Path
) -> None:
    """A failed run never moves the live record, yet what it released may run (kept with --no-rollback, a stack's
    change set that went through before smoke failed). A rollback from it records it as what ran before, as it said
    (`D → C`), so that the next deploy.auto knows what the rollback took off (it said C → C, and took nothing off)."""
    failed = "ddddddd44444"
    put_image(factory, failed)
    run_image(factory, failed)  # the failed release kept running
    write_record(deployed, failed, 7, ok=False)
    err = io.StringIO()
    report = commands.rollback(env="dev", smoke=False, runtime=runtime(project, factory, stderr=err))
    assert report is not None and report.ok
    assert f"⏪ rollback app in dev: {failed} → {C} [history: " in err.getvalue()
    newest = deployed.records(1)[0]
    assert (newest.components, newest.base) == ({"app": C}, {"app": failed})
    assert auto.taken_off(deployed.records(10))["app"] == (failed, newest)
    assert deployed.live()["app"]["sha"] == C

    # a stack: the failed run's change set went through before its smoke failed
    older = "0123456789ab"
    assert deploy_fargate(factory, dev_env, tmp_path, FIRST, older).status == "done"
    stack_record(deployed, older, 10)
    assert deploy_fargate(factory, dev_env, tmp_path / "b", SECOND, B, image=B).status == "done"
    through = [
        StepRecord("deploy-stack", "s", "done", 1.0, "CarRentalFargateStack: updated in 1.0s (1 change)"),
        StepRecord("smoke", "s", "failed", 1.0, "alb: 502"),
    ]
    run = RunReport(Plan("dev", (), "deploy.stack"), through, 2.0, StepFailed("smoke failed"))
    now = datetime(2026, 3, 1, 9, 12, tzinfo=UTC)
    deployed.write(
        history.record_of(run, components={"stack:fargate": B}, base={"stack:fargate": older}, head=B, now=now)
    )
    report = commands.rollback(env="dev", component="stack:fargate", smoke=False, runtime=runtime(project, factory))
    assert report is not None and report.ok and stack_resources(factory) == ["Topic"]
    newest = deployed.records(1)[0]
    assert (newest.components, newest.base) == ({"stack:fargate": older}, {"stack:fargate": B})
    assert auto.taken_off(deployed.records(10))["stack:fargate"] == (B, newest)


def test_the_deploy_to_go_back_to_is_found_past_the_newest_runs_of_other_components(
    project: Path, factory: AwsFactory, deployed: history.History, dev_env: EnvConfig, tmp_path: Path
) -> None:
    """The newest records are read first; when a hundred runs of other components came since the component's
    previous deploy (a function deployed many times a day, a stack rarely), its own records further back are: it
    was 'nothing to go back to: no successful deploy of app in dev's history'."""
    older = "0123456789ab"
    assert deploy_fargate(factory, dev_env, tmp_path, FIRST, older).status == "done"
    assert deploy_fargate(factory, dev_env, tmp_path / "b", SECOND, B, image=B).status == "done"
    stack_record(deployed, older, 10)
    stack_record(deployed, B, 11)
    run = RunReport(Plan("dev", (), "deploy.lambda"), [], 1.0)
    for n in range(rollbacks.HISTORY_DEPTH):
        now = datetime(2026, 3, 1, 10, 0, tzinfo=UTC) + timedelta(minutes=n)
        deployed.write(
            history.record_of(run, components={"lambda:login_handler": f"{n:012x}"}, base={}, head=f"{n:012x}", now=now)
        )
    err = io.StringIO()
    report = commands.rollback(env="dev", smoke=False, runtime=runtime(project, factory, stderr=err))
    assert report is not None and report.ok, report and report.error
    assert f"⏪ rollback app in dev: {C} → {B} [history: deploy.app at 2026-03-01T09:01:00+00:00" in err.getvalue()
    assert service_image(factory)[1] == f"{URI}:{B}"
    err = io.StringIO()
    report = commands.rollback(
        env="dev", component="stack:fargate", smoke=False, runtime=runtime(project, factory, stderr=err)
    )
    assert report is not None and report.ok, report and report.error
    assert f"⏪ rollback stack:fargate in dev: {B} → {older} [history: deploy.stack at" in err.getvalue()
    assert stack_resources(factory) == ["Topic"]


def test_dry_run_prints_the_plan_and_changes_nothing(
    project: Path, factory: AwsFactory, deployed: history.History
) -> None:
    before = revision_count(factory)
    out = io.StringIO()
    assert (
        commands.rollback(env="dev", to=A, dry_run=True, as_json=True, runtime=runtime(project, factory, out)) is None
    )
    plan = json.loads(out.getvalue())
    assert plan["title"] == f"rollback app → {A}"
    assert [s["step"] for s in plan["steps"]] == ["register-taskdef", "roll-service", "wait-healthy", "smoke"]
    assert plan["steps"][0]["inputs"]["tag"] == A
    assert revision_count(factory) == before and len(deployed.records(20)) == 4


def test_an_image_no_longer_in_the_registry_is_refused_and_nothing_changes(
    project: Path, factory: AwsFactory, deployed: history.History
) -> None:
    factory.client("ecr").batch_delete_image(repositoryName="car-rental-backend", imageIds=[{"imageTag": B}])
    before = revision_count(factory)
    with pytest.raises(UsageError, match=f"car-rental-backend:{B} is not in the registry") as err:
        commands.rollback(env="dev", runtime=runtime(project, factory))
    assert err.value.exit_code == 2
    assert C in err.value.message and A in err.value.message
    assert revision_count(factory) == before and service_image(factory)[1] == f"{URI}:{C}"
    assert len(deployed.records(20)) == 4  # no record: nothing was run


def test_nothing_to_go_back_to(project: Path, factory: AwsFactory, dev_env: EnvConfig) -> None:
    create_service(factory)
    factory.client("s3").create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    create_stack(factory.client("cloudformation"), dev_env.stacks.registry, {"ArtifactsBucketName": BUCKET})
    put_image(factory, "old")
    with pytest.raises(UsageError, match="nothing to go back to"):
        commands.rollback(env="dev", runtime=runtime(project, factory))


def test_a_stack_rollback_is_refused_before_anything_changes_where_it_cannot_be_made(
    project: Path, factory: AwsFactory, deployed: history.History
) -> None:
    """The flags of a stack's rollback are refused for the app; a stack already at the commit is left alone; a
    commit whose tree has no CDK app (this project has none) is refused, exit 2, before any change set."""
    with pytest.raises(UsageError, match="--allow-replace is for a stack's rollback"):
        commands.rollback(env="dev", allow_replace=True, runtime=runtime(project, factory))
    head = git(project, "rev-parse", "--short=12", "HEAD").strip()
    cloudformation = factory.client("cloudformation")
    change_sets = asked(cloudformation, "CreateChangeSet", "StackName")
    with pytest.raises(UsageError, match=f"commit {head} has no cdk/app.py") as err:
        commands.rollback(env="dev", component="stack:fargate", to=head[:7], runtime=runtime(project, factory))
    assert err.value.exit_code == 2 and change_sets == []
    assert not list((project / "cdk.out").glob(".source-*"))  # what it took from git is gone again

    record = history.record_of(
        RunReport(Plan("dev", (), "deploy.stack"), [], 1.0), components={"stack:fargate": head}, base={}, head=head
    )
    deployed.write(record)
    err_out = io.StringIO()
    assert (
        commands.rollback(
            env="dev", component="stack:fargate", to=head, runtime=runtime(project, factory, stderr=err_out)
        )
        is None
    )
    assert f"nothing to roll back: stack:fargate already runs {head}" in err_out.getvalue() and change_sets == []


def test_a_runs_rollback_goes_alone_and_puts_the_app_back(
    project: Path, factory: AwsFactory, deployed: history.History
) -> None:
    with pytest.raises(UsageError, match=r"--run goes alone: .* not with --component"):
        commands.rollback(env="dev", run="last", component="app", runtime=runtime(project, factory))
    with pytest.raises(UsageError, match=r"--run goes alone: .* not with --to"):
        commands.rollback(env="dev", run="last", to=A, runtime=runtime(project, factory))
    run = RunReport(Plan("dev", (), "deploy.app"), [], 30.0, None)
    now = datetime(2026, 3, 1, 9, 6, tzinfo=UTC)  # the newest: C deployed over B
    deployed.write(history.record_of(run, components={"app": C}, base={"app": B}, head=C, who="ci", now=now))
    err = io.StringIO()
    report = commands.rollback(env="dev", run="last", smoke=False, runtime=runtime(project, factory, stderr=err))
    assert report is not None and report.ok
    assert report.plan.title.startswith("rollback run ") and report.plan.deploys == (("app", B),)
    assert (
        f"app → {B}" in err.getvalue()
        and f"⏪ rollback app in dev: {C} → {B} [live before run 20260301T0906" in err.getvalue()
    )
    assert service_image(factory)[1].endswith(f":{B}")
    # again: `last` is the deploy, never the rollback just made (undoing it would deploy C again); it is undone
    with pytest.raises(UsageError, match=r"is undone already: app \(put back by rollback run 20260301T0906") as again:
        commands.rollback(env="dev", run="last", smoke=False, runtime=runtime(project, factory))
    assert again.value.exit_code == 2 and service_image(factory)[1].endswith(f":{B}")


def test_a_runs_rollback_with_nothing_to_do_is_titled_by_the_run_it_names(
    project: Path, factory: AwsFactory, deployed: history.History
) -> None:
    """--json of a --run that finds each component back already names the run, as its plan would and as --to's
    names the commit (it was titled `rollback run last`, what was typed)."""
    run = RunReport(Plan("dev", (), "deploy.app"), [], 30.0, None)
    now = datetime(2026, 3, 1, 9, 6, tzinfo=UTC)  # C deployed over B...
    deployed.write(history.record_of(run, components={"app": C}, base={"app": B}, head=C, who="ci", now=now))
    undone = deployed.records(1)[0]
    run_image(factory, B)  # ...and B runs again, and is live (a rollback's record lost, its live record written)
    live = deployed.live()
    live["app"] = {**live["app"], "sha": B}
    factory.client("s3").put_object(Bucket=deployed.bucket, Key=deployed.live_key, Body=json.dumps(live).encode())
    revisions = revision_count(factory)
    for named in ("last", "2026-03-01T09:06:00Z"):
        out, err = io.StringIO(), io.StringIO()
        assert (
            commands.rollback(env="dev", run=named, as_json=True, runtime=runtime(project, factory, out, err)) is None
        )
        assert json.loads(out.getvalue())["title"] == f"rollback run {undone.id}"
        assert f"nothing to roll back: app already runs {B} in dev" in err.getvalue()
    out = io.StringIO()
    assert commands.rollback(env="dev", to=B, as_json=True, runtime=runtime(project, factory, out)) is None
    assert json.loads(out.getvalue())["title"] == f"rollback app → {B}"
    assert revision_count(factory) == revisions


def test_a_runs_rollback_of_stacks_it_changed_nothing_in_has_nothing_to_roll_back(
    project: Path, factory: AwsFactory, deployed: history.History, dev_env: EnvConfig
) -> None:
    """A run (named by its id: `last` never picks one that changed nothing) whose stack deploy found no changes: its
    undo makes no change set, runs nothing and records nothing, and says so."""
    stack = planner.stack_roles(dev_env)["data"]
    skipped = Plan("dev", (), "deploy.stack"), [], 1.0
    record = history.record_of(
        RunReport(*skipped, None), components={"stack:data": C}, base={"stack:data": B}, head=C, who="ci"
    )
    record = dataclasses.replace(
        record, steps=[{"step": "deploy-stack", "status": "skipped", "seconds": 0.1, "detail": f"{stack}: no changes"}]
    )
    deployed.write(record)
    count = len(deployed.records(10))
    err = io.StringIO()
    assert commands.rollback(env="dev", run=record.id, runtime=runtime(project, factory, io.StringIO(), err)) is None
    assert "✅ nothing to roll back: stack:data: the run changed nothing in it (no changes)" in err.getvalue()
    assert "recorded as live" not in err.getvalue() and "change set" not in err.getvalue()
    assert len(deployed.records(10)) == count


def test_a_runs_rollback_of_a_stack_deployed_over_uncommitted_changes_names_the_next_step_for_it(
    project: Path, factory: AwsFactory, deployed: history.History
) -> None:
    """The stack went back over a build of uncommitted changes: refused (its cdk/ is not in git), exit 2, no change
    set, said of the run, with a next step --run can follow (it was `--to <build> is a build of uncommitted
    changes`, told to pass a commit SHA, which --run does not take)."""
    run = RunReport(Plan("dev", (), "deploy.stack"), [], 1.0)
    at = partial(datetime, 2026, 3, 1, 9, tzinfo=UTC)
    dirty = f"{A}-dirty-0f1e2d3c"
    deployed.write(history.record_of(run, components={"stack:fargate": dirty}, base={}, head=dirty, now=at(10)))
    deployed.write(
        history.record_of(run, components={"stack:fargate": B}, base={"stack:fargate": dirty}, head=B, now=at(11))
    )
    undone = deployed.records(1)[0]
    change_sets = asked(factory.client("cloudformation"), "CreateChangeSet", "StackName")
    with pytest.raises(UsageError) as refused:
        commands.rollback(env="dev", run="last", smoke=False, runtime=runtime(project, factory))
    assert refused.value.exit_code == 2 and change_sets == []
    assert refused.value.message.startswith(f"run {undone.id} (deploy.stack at ")
    assert f"deployed stack:fargate over a build of uncommitted changes ({dirty})" in refused.value.message
    assert "--to" not in refused.value.message
    assert refused.value.next_step == (
        "roll back the run's components one by one, stack:fargate to a commit: inv rollback --env dev --component "
        "stack:fargate --to SHA (inv history --env dev --component stack:fargate lists them)"
    )


def test_a_run_older_than_the_newest_records_is_found_by_its_id_or_time(
    project: Path, factory: AwsFactory, deployed: history.History
) -> None:
    """inv history --limit 200 lists runs past the newest 100 records a rollback reads first: one named by its whole
    id or its time is read from the history since then (it was 'no run ... among dev's newest 100 records', told to
    pass a whole record id, as it had)."""
    run = RunReport(Plan("dev", (), "deploy.app"), [], 30.0, None)
    now = datetime(2026, 3, 1, 9, 6, tzinfo=UTC)  # the app: C deployed over B
    deployed.write(history.record_of(run, components={"app": C}, base={"app": B}, head=C, who="ci", now=now))
    undone = deployed.records(1)[0]
    other = RunReport(Plan("dev", (), "deploy.lambda"), [], 1.0)
    for n in range(rollbacks.HISTORY_DEPTH):
        at = datetime(2026, 3, 1, 10, 0, tzinfo=UTC) + timedelta(minutes=n)
        deployed.write(
            history.record_of(other, components={"lambda:login_handler": f"{n:012x}"}, base={}, head=C, now=at)
        )
    for named in (undone.id, "2026-03-01T09:06:00Z"):
        out = io.StringIO()
        commands.rollback(env="dev", run=named, dry_run=True, as_json=True, runtime=runtime(project, factory, out))
        planned = json.loads(out.getvalue())
        assert planned["title"] == f"rollback run {undone.id}"
        assert planned["deploys"] == [{"component": "app", "sha": B}]
    with pytest.raises(UsageError, match="no run '20260301T0907' among dev's") as unknown:
        commands.rollback(env="dev", run="20260301T0907", smoke=False, runtime=runtime(project, factory))
    assert unknown.value.exit_code == 2
    report = commands.rollback(env="dev", run=undone.id, smoke=False, runtime=runtime(project, factory))
    assert report is not None and report.ok and service_image(factory)[1].endswith(f":{B}")


def test_a_stack_deploy_keeps_its_template_and_a_rollback_deploys_it_without_synthesizing(
    project: Path, factory: AwsFactory, deployed: history.History, dev_env: EnvConfig, tmp_path: Path
) -> None:
    """A stack deploy from a commit keeps the template and the stack tags it deployed with in the artifacts bucket;
    a rollback to that commit deploys them as they were. This project's commit has no cdk/app.py, so synthesizing
    it would be refused (see above): the kept template is all the rollback needs."""
    head = git(project, "rev-parse", "--short=12", "HEAD").strip()
    deploy = partial(deploy_fargate, factory, dev_env, tmp_path)

    assert deploy(FIRST, head).status == "done"
    key = kept_template_key("dev", "CarRentalFargateStack", head)
    kept = json.loads(factory.client("s3").get_object(Bucket=BUCKET, Key=key)["Body"].read())
    assert (kept["commit"], kept["tags"], kept["template"]) == (head, {"project": "rental"}, FIRST)
    updated = deploy(SECOND, "", image=B)  # uncommitted changes: nothing kept
    assert updated.status == "done"
    # what the update changed a parameter from, for an automatic rollback of the image it rolled out
    assert {k: v for k, v in updated.outputs.items() if ".was." in k} == {
        was_key("CarRentalFargateStack", "ImageTag"): C
    }
    assert [o["Key"] for o in factory.client("s3").list_objects_v2(Bucket=BUCKET, Prefix=KEPT)["Contents"]] == [key]

    for minutes, sha in ((10, head), (11, B)):  # deployed from head, then from B (what runs: the second template)
        stack_record(deployed, sha, minutes)
    err = io.StringIO()
    report = commands.rollback(
        env="dev", component="stack:fargate", to=head, smoke=False, runtime=runtime(project, factory, stderr=err)
    )
    assert report is not None and report.ok, report and report.error
    assert f"CarRentalFargateStack at {head}: the template it was deployed with then, kept in dev" in err.getvalue()
    assert stack_resources(factory) == ["Topic"]  # the queue of the second template is gone
    cfn = factory.client("cloudformation")
    [stack] = cfn.describe_stacks(StackName="CarRentalFargateStack")["Stacks"]
    assert {t["Key"]: t["Value"] for t in stack["Tags"]}["project"] == "rental"
    assert not (project / "cdk.out" / f"dev@{head}").exists()  # nothing synthesized


def test_a_stack_s_events_go_to_deploy_toml_s_topics_and_the_app_s_and_its_kept_template_keeps_the_app_s(
    project: Path, factory: AwsFactory, deployed: history.History, dev_env: EnvConfig, tmp_path: Path
) -> None:
    """The environment's topics (deploy.toml) and those the app names for the stack, each once, are the stack's; the
    template kept for a rollback keeps the app's, so a deploy of it names them again (with deploy.toml's of then)."""
    sns = factory.client("sns")
    ops, team = (sns.create_topic(Name=name)["TopicArn"] for name in ("ops", "team"))
    head = git(project, "rev-parse", "--short=12", "HEAD").strip()
    env = dataclasses.replace(dev_env, notification_arns=(ops, team))

    outcome = deploy_fargate(factory, env, tmp_path, FIRST, head, topics=[team])

    assert outcome.status == "done" and "its events go to SNS topics ops, team" in outcome.detail
    [stack] = factory.client("cloudformation").describe_stacks(StackName="CarRentalFargateStack")["Stacks"]
    assert stack["NotificationARNs"] == [ops, team]
    kept = rollbacks.kept_template(load_config(project / "deploy.toml"), factory, env, "CarRentalFargateStack", head)
    assert kept is not None
    assert list(kept.templates) == ["CarRentalFargateStack"]
    app = synth.manifest_stack(kept.out_dir, "CarRentalFargateStack")
    assert app is not None and app.notifications == (team,)
    assert stack_chain.notification_arns(dev_env, (team,)) == (team,)  # deploy.toml naming none: the app's
    assert stack_chain.notification_arns(dev_env, None) is None  # neither: the stack keeps its own


def test_templates_kept_from_one_commit_keep_each_stack_s_tags_and_topics_side_by_side(
    project: Path, factory: AwsFactory, deployed: history.History, dev_env: EnvConfig
) -> None:
    """A run's undo reads the kept templates of its stacks, most of them from one commit, into one folder: each keeps
    its own stack tags and topics there. Its manifest once named the last stack read only, and the others went back
    without their app's tags (and topics)."""
    bucket = history.find_artifacts_bucket(factory, dev_env)
    assert bucket
    topic = "arn:aws:sns:eu-west-1:123456789012:compliance"
    config, sha = load_config(project / "deploy.toml"), "a" * 12
    for stack, topics in (("CarRentalApiStack", [topic]), ("CarRentalDataStack", None)):
        kept = {"stack": stack, "template": FIRST, "tags": {"Project": "car-rental", "Of": stack}}
        factory.client("s3").put_object(
            Bucket=bucket,
            Key=kept_template_key(dev_env.name, stack, sha),
            Body=json.dumps({**kept, "notification_arns": topics}).encode(),
        )
        assert rollbacks.kept_template(config, factory, dev_env, stack, sha) is not None
    out = project / synth.OUT_ROOT / f"{dev_env.name}@{sha}.kept"
    api, data = (synth.manifest_stack(out, s) for s in ("CarRentalApiStack", "CarRentalDataStack"))
    assert api is not None and api.tags == {"Project": "car-rental", "Of": "CarRentalApiStack"}
    assert api.notifications == (topic,)
    assert data is not None and data.tags == {"Project": "car-rental", "Of": "CarRentalDataStack"}
    assert data.notifications is None


def test_a_kept_template_read_while_another_command_writes_that_folder_waits_for_it(
    project: Path, factory: AwsFactory, deployed: history.History, dev_env: EnvConfig
) -> None:
    """Two rollbacks of stacks to one commit at once each read the folder's manifest, added its own stack and wrote
    it: one's entry was lost (6 of 600 runs of a helper's), and its deploy refused "the CDK app makes no stack". The
    second waits for the first (the lock held here plays the first)."""
    bucket = history.find_artifacts_bucket(factory, dev_env)
    assert bucket
    config, sha = load_config(project / "deploy.toml"), "b" * 12
    kept = {"stack": "CarRentalApiStack", "template": FIRST, "tags": {}}
    key = kept_template_key(dev_env.name, "CarRentalApiStack", sha)
    factory.client("s3").put_object(Bucket=bucket, Key=key, Body=json.dumps(kept).encode())
    read: list[Any] = []
    out = project / synth.OUT_ROOT / f"{dev_env.name}@{sha}.kept"
    with local_lock.held(local_lock.lock_file(out.parent, out.name), what="the first command's"):
        second = threading.Thread(
            target=lambda: read.append(rollbacks.kept_template(config, factory, dev_env, "CarRentalApiStack", sha))
        )
        second.start()
        second.join(0.5)
        assert second.is_alive() and not (out / synth.MANIFEST).exists()
    second.join(10)
    assert read[0] is not None and synth.manifest_stack(out, "CarRentalApiStack") is not None


def test_a_stack_goes_back_to_a_commit_this_clone_lacks_when_its_template_was_kept(
    project: Path, factory: AwsFactory, deployed: history.History, dev_env: EnvConfig, tmp_path: Path
) -> None:
    """A shallow CI checkout lacks the commits deployed before: a stack's rollback to one deploys the template kept
    from it, named by --to (a prefix of its SHA) or found in the history; one with no template kept is refused,
    exit 2, before any change set."""
    older = "0123456789ab"  # in no clone: only its kept template says what it deployed
    assert deploy_fargate(factory, dev_env, tmp_path, FIRST, older).status == "done"
    assert deploy_fargate(factory, dev_env, tmp_path, SECOND, B, image=B).status == "done"
    stack_record(deployed, older, 10)
    stack_record(deployed, B, 11)
    assert stack_resources(factory) == ["Topic", "Alerts"]

    err = io.StringIO()
    report = commands.rollback(
        env="dev", component="stack:fargate", smoke=False, runtime=runtime(project, factory, stderr=err)
    )
    assert report is not None and report.ok, report and report.error
    assert f"⏪ rollback stack:fargate in dev: {B} → {older} [history: deploy.stack at" in err.getvalue()
    assert f"CarRentalFargateStack at {older}: the template it was deployed with then, kept in dev" in err.getvalue()
    assert stack_resources(factory) == ["Topic"]

    third = {**FIRST, "Resources": {**FIRST["Resources"], "Other": {"Type": "AWS::SNS::Topic"}}}
    assert deploy_fargate(factory, dev_env, tmp_path / "again", third, "", image=B).status == "done"
    stack_record(deployed, B, 30)
    report = commands.rollback(
        env="dev", component="stack:fargate", to=older[:8], smoke=False, runtime=runtime(project, factory)
    )
    assert report is not None and report.ok and report.plan.deploys == (("stack:fargate", older),)
    assert stack_resources(factory) == ["Topic"]

    change_sets = asked(factory.client("cloudformation"), "CreateChangeSet", "StackName")
    # no template kept; too short a prefix to name a kept one
    for to, said in (("fedcba987654", "is not in this clone, and dev kept no template"), (older[:5], "too few digits")):
        with pytest.raises(UsageError, match=f"{to}.*{said}") as no:
            commands.rollback(env="dev", component="stack:fargate", to=to, runtime=runtime(project, factory))
        assert no.value.exit_code == 2
    assert change_sets == []


def test_a_stack_goes_back_to_a_commit_runs_only_counted_it_unchanged_at_with_the_template_kept_before(
    project: Path, factory: AwsFactory, deployed: history.History, dev_env: EnvConfig, tmp_path: Path
) -> None:
    """deploy.auto counts a stack none of whose paths changed as live at its commit without deploying it: no template
    is kept for that commit, and what the stack held there is the template of the deploy it was carried from. Going
    back to such a commit (the base of the run undone, typically) deploys that template: no synthesis, no commit in
    the clone."""
    older, carried = "0123456789ab", "456789abcdef"  # in no clone
    assert deploy_fargate(factory, dev_env, tmp_path, FIRST, older).status == "done"
    stack_record(deployed, older, 10)
    run = RunReport(Plan("dev", (), "deploy.auto"), [], 1.0)
    at = partial(datetime, 2026, 3, 1, 9, tzinfo=UTC)
    deployed.write(  # an app release, the stack counted unchanged at its commit
        history.record_of(
            run,
            components={"app": carried, "stack:fargate": carried},
            base={"app": B, "stack:fargate": older},
            head=carried,
            unchanged=["stack:fargate"],
            who="ci",
            now=at(11),
        )
    )
    assert deploy_fargate(factory, dev_env, tmp_path / "b", SECOND, B, image=B).status == "done"
    deployed.write(
        history.record_of(
            run, components={"stack:fargate": B}, base={"stack:fargate": carried}, head=B, who="ci", now=at(12)
        )
    )
    assert stack_resources(factory) == ["Topic", "Alerts"]
    assert rollbacks.deployed_from(deployed.records(10), "stack:fargate", carried) == older

    err = io.StringIO()
    report = commands.rollback(env="dev", run="last", smoke=False, runtime=runtime(project, factory, stderr=err))
    assert report is not None and report.ok, report and report.error
    assert report.plan.deploys == (("stack:fargate", carried),)
    assert (
        f"CarRentalFargateStack at {carried}: the template it was deployed with from {older} (the runs since counted "
        "it unchanged), kept in dev (no synthesis)"
    ) in err.getvalue()
    assert stack_resources(factory) == ["Topic"]
    assert not (project / "cdk.out" / f"dev@{carried}").exists()  # nothing synthesized
    # the rollback deployed the stack at that commit: the template is kept under it now
    assert rollbacks.deployed_from(deployed.records(10), "stack:fargate", carried) == carried
    assert factory.client("s3").head_object(
        Bucket=BUCKET, Key=kept_template_key("dev", "CarRentalFargateStack", carried)
    )


def test_deploy_full_refuses_to_bring_back_what_a_rollback_took_off(
    project: Path, factory: AwsFactory, deployed: history.History
) -> None:
    """After `inv rollback` took dev off this checkout's commit, deploy.full of it would bring the release back:
    refused (exit 2) before anything is planned, as deploy.auto does; --allow-rolled-back goes on to the plan."""
    shutil.copytree(REPO / "lambda", project / "lambda", ignore=shutil.ignore_patterns("__pycache__", "tests"))
    git(project, "add", "-A")
    git(project, "commit", "-qm", "lambdas")  # the app is as it was: a rollback of it still counts
    head = git(project, "rev-parse", "--short=12", "HEAD").strip()
    run = RunReport(Plan("dev", (), f"rollback app → {B}"), [], 1.0)
    now = datetime(2026, 3, 1, 9, 30, tzinfo=UTC)
    deployed.write(history.record_of(run, components={"app": B}, base={"app": head}, head=B, who="ana", now=now))
    with pytest.raises(
        UsageError, match=rf"HEAD \({head}\) would bring back what a rollback took dev off: app as it"
    ) as no:
        commands.deploy_full(env="dev", dry_run=True, runtime=runtime(project, factory))
    assert no.value.exit_code == 2 and "--allow-rolled-back" in (no.value.next_step or "")
    assert f"taken off by rollback app → {B}, ana at " in no.value.message
    # allowed, it goes on (here to a dry run's plan, which needs nothing of Docker)
    out = io.StringIO()
    commands.deploy_full(env="dev", dry_run=True, allow_rolled_back=True, runtime=runtime(project, factory, stderr=out))
    assert "Plan for deploy.full → dev (dry run: nothing is changed)" in out.getvalue()


def test_deploy_stack_with_an_image_tag_refuses_to_roll_out_the_app_a_rollback_took_off(
    project: Path, factory: AwsFactory, deployed: history.History
) -> None:
    """`deploy.stack <fargate> --image-tag TAG` rolls the app out at TAG: after a person rolled dev's app back from
    a commit, the tag of that commit's build (or of a later commit with the app as it was) is refused as deploy.app
    would refuse it; a tag whose commit changed the app since, or that names no commit of this clone, goes on."""
    head = git(project, "rev-parse", "--short=12", "HEAD").strip()
    run = RunReport(Plan("dev", (), f"rollback app → {B}"), [], 1.0)
    now = datetime(2026, 3, 1, 9, 30, tzinfo=UTC)
    deployed.write(history.record_of(run, components={"app": B}, base={"app": head}, head=B, who="ana", now=now))
    (project / "NOTES.md").write_text("the app as it was\n")
    git(project, "add", "-A")
    git(project, "commit", "-qm", "notes")
    same_app = git(project, "rev-parse", "--short=12", "HEAD").strip()
    stack = "CarRentalFargateStack"

    for tag in (head, same_app):
        with pytest.raises(UsageError, match=rf"app as it was at {head}, which {tag} has too \(taken off by") as no:
            commands.deploy_stack(stack, env="dev", image_tag=tag, dry_run=True, runtime=runtime(project, factory))
        assert no.value.exit_code == 2 and "--allow-rolled-back" in (no.value.next_step or "")

    (project / "backend" / "app" / "fix.py").parent.mkdir(parents=True, exist_ok=True)
    (project / "backend" / "app" / "fix.py").write_text("FIXED = True\n")
    git(project, "add", "-A")
    git(project, "commit", "-qm", "the fix")
    fixed = git(project, "rev-parse", "--short=12", "HEAD").strip()
    for tag in (head, fixed):  # the registry has them, as it has C (deploy.stack refuses a tag it lacks)
        put_image(factory, tag)
    for tag in (fixed, C):  # the app changed since; a tag this clone cannot tell about
        out = io.StringIO()
        commands.deploy_stack(
            stack, env="dev", image_tag=tag, dry_run=True, runtime=runtime(project, factory, stderr=out)
        )
        assert f"Plan for deploy.stack {stack} → dev (dry run: nothing is changed)" in out.getvalue(), out.getvalue()
    out = io.StringIO()
    commands.deploy_stack(
        stack,
        env="dev",
        image_tag=head,
        dry_run=True,
        allow_rolled_back=True,
        runtime=runtime(project, factory, stderr=out),
    )
    assert "dry run: nothing is changed" in out.getvalue()


def test_deploy_app_and_roll_service_refuse_to_bring_back_what_a_rollback_took_off(
    project: Path, factory: AwsFactory, deployed: history.History
) -> None:
    """A person rolled dev's app back from this checkout's commit: deploy.app (and roll-service) of it would roll the
    release out again, which deploy.auto refuses: refused too, before anything is built or changed; allowed with
    --allow-rolled-back. A stage that rolls nothing out (build, push) is not guarded."""
    head = git(project, "rev-parse", "--short=12", "HEAD").strip()
    run = RunReport(Plan("dev", (), f"rollback app → {B}"), [], 1.0)
    now = datetime(2026, 3, 1, 9, 30, tzinfo=UTC)
    deployed.write(history.record_of(run, components={"app": B}, base={"app": head}, head=B, who="ana", now=now))
    chain = ("build", "push", "register-taskdef", "roll-service", "wait-healthy")
    before = service_image(factory)
    for stages in (chain, ("roll-service",)):
        with pytest.raises(UsageError, match=rf"HEAD \({head}\) would bring back what a rollback took dev off") as no:
            commands.app_chain(stages, env="dev", runtime=runtime(project, factory))
        assert no.value.exit_code == 2 and "--allow-rolled-back" in (no.value.next_step or "")
    assert service_image(factory) == before
    out = io.StringIO()
    commands.app_chain(
        chain, env="dev", dry_run=True, allow_rolled_back=True, runtime=runtime(project, factory, stderr=out)
    )
    assert "→ roll-service → wait-healthy → dev (dry run: nothing is changed)" in out.getvalue()
    out = io.StringIO()
    commands.app_chain(("build", "push"), env="dev", dry_run=True, runtime=runtime(project, factory, stderr=out))
    assert "Plan for build → push → dev (dry run: nothing is changed)" in out.getvalue()


def test_after_a_rollback_the_alarms_still_in_alarm_are_said_and_with_wait_alarms_waited_for(
    project: Path, factory: AwsFactory, deployed: history.History
) -> None:
    """The alarm watch's alarms still in ALARM after a rollback are named, with the command that waits for them;
    --wait-alarms waits until none is (the rollback cleared them), or fails (exit 1) once one still is: the rollback
    itself went through and is recorded as it, and the plugins, who heard of it, are not told of a run that did not
    run."""
    put_alarm(factory, NAMES[0])
    watching(project, NAMES[0])
    set_state(factory, NAMES[0], "ALARM")
    rt = runtime(project, factory)
    assert commands.rollback(env="dev", smoke=False, runtime=rt) is not None
    said = rt.stderr.getvalue()  # type: ignore[attr-defined]
    assert f"🔔 still in ALARM after the rollback: {NAMES[0]} (since " in said
    assert said.endswith("to wait for it, inv alarms --env dev --wait 4m\n")

    rt = dataclasses.replace(runtime(project, factory), clock=Evaluating([lambda: set_state(factory, NAMES[0], "OK")]))
    assert commands.rollback(env="dev", to=C, smoke=False, wait_alarms="1m", runtime=rt) is not None
    said = rt.stderr.getvalue()  # type: ignore[attr-defined]
    assert f"waiting up to 1m00s\n✅ {NAMES[0]}: OK at " in said
    assert said.endswith("✅ none in ALARM after 5s: the rollback cleared it\n")
    assert service_image(factory)[1] == f"{URI}:{C}"

    out = io.StringIO()
    rt = runtime(project, factory, stdout=out)
    assert commands.rollback(env="dev", to=B, smoke=False, wait_alarms="1m", as_json=True, runtime=rt) is not None
    assert rt.stderr.getvalue().endswith("🔔 the alarms after the rollback: 1 OK, none in ALARM\n")  # type: ignore
    assert json.loads(out.getvalue())["alarms"] == {"in_alarm": [], "clear": True, "waited": None}

    set_state(factory, NAMES[0], "ALARM", "Threshold Crossed: 1 datapoint [40.0]")
    heard, out = HeardDone(), io.StringIO()
    with pytest.raises(StepFailed) as failed:
        commands.rollback(
            env="dev",
            to=C,
            smoke=False,
            wait_alarms="12s",
            as_json=True,
            runtime=hearing(runtime(project, factory, stdout=out), heard),
        )
    assert heard.done == [f"rollback app → {C}"]  # the plugins heard of the rollback, which worked
    answer = json.loads(out.getvalue())  # the run worked; its alarms did not clear
    assert answer["ok"] is True and answer["alarms"] == {"in_alarm": [NAMES[0]], "clear": False, "waited": 12.0}
    assert failed.value.message.startswith(
        f"the rollback went through, but alarm {NAMES[0]} is still in ALARM after 12s of waiting (since "
    )
    assert failed.value.message.endswith("Threshold Crossed: 1 datapoint [40.0]")
    assert heard.not_run == [] and heard.failed == []
    newest = deployed.records(1)[0]
    assert (newest.command, newest.ok) == (f"rollback app → {C}", True) and deployed.live()["app"]["sha"] == C


class HeardDone(Heard):
    """:class:`Heard`, and the titles of the deployments that succeeded."""

    def __init__(self) -> None:
        super().__init__()
        self.done: list[str] = []

    @hookimpl
    def deploykit_deployment_finished(self, env: str, report: dict[str, Any]) -> None:
        self.done.append(str(report["title"]))


def test_wait_alarms_without_alarms_is_refused_before_anything_changes(
    project: Path, factory: AwsFactory, deployed: history.History
) -> None:
    before = service_image(factory)
    with pytest.raises(UsageError, match=r"--wait-alarms 5m: \[environments.dev.alarm_watch\] names no alarms"):
        commands.rollback(env="dev", smoke=False, wait_alarms="5m", runtime=runtime(project, factory))
    watching(project, NAMES[0])
    with pytest.raises(UsageError, match="--wait-alarms 'later' is not a duration"):
        commands.rollback(env="dev", smoke=False, wait_alarms="later", runtime=runtime(project, factory))
    assert service_image(factory) == before and deployed.records(1)[0].command == "deploy.app"


def test_alarms_that_cannot_be_read_after_a_rollback_say_nothing_and_fail_only_a_wait_for_them(
    project: Path, factory: AwsFactory, deployed: history.History, monkeypatch: pytest.MonkeyPatch
) -> None:
    put_alarm(factory, NAMES[0])
    watching(project, NAMES[0])
    cloudwatch = factory.client("cloudwatch")
    denied = botocore.exceptions.ClientError(
        {"Error": {"Code": "AccessDenied", "Message": "not authorized"}}, "DescribeAlarms"
    )
    monkeypatch.setattr(cloudwatch, "describe_alarms", Mock(side_effect=denied))
    rt = runtime(project, factory)
    assert commands.rollback(env="dev", smoke=False, runtime=rt) is not None
    assert rt.stderr.getvalue().endswith(  # type: ignore[attr-defined]
        "⚠️  the alarms after the rollback could not be read: may not read the CloudWatch alarms "
        "[environments.dev.alarm_watch] names: AccessDenied\n"
    )
    heard = Heard()
    with pytest.raises(StepFailed) as failed:
        commands.rollback(
            env="dev", to=C, smoke=False, wait_alarms="1m", runtime=hearing(runtime(project, factory), heard)
        )
    assert failed.value.message == (
        "the rollback went through, but its alarms could not be read to wait for them: may not read the CloudWatch "
        "alarms [environments.dev.alarm_watch] names: AccessDenied"
    )
    assert failed.value.next_step == "inv alarms --env dev --wait 1m, once they can be"
    assert heard.not_run == [] and deployed.live()["app"]["sha"] == C
