"""deploy.auto's first reads against moto: what is live and, beside it, the steps' times from the history (the plan's
estimates), in one round trip."""

from __future__ import annotations

import dataclasses
import io
import json
import shutil
from datetime import timedelta
from functools import partial
from pathlib import Path
from unittest.mock import Mock

import boto3
import pytest

from deploykit import auto, commands, freeze, history, pause
from deploykit.aws import AwsFactory
from deploykit.clock import FakeClock
from deploykit.commands import autodeploy
from deploykit.config import STACK_ROLES, EnvConfig, load_config
from deploykit.errors import UsageError
from deploykit.plan import Plan, RunReport, StepRecord
from deploykit.release import PENDING_TAG
from tests.conftest import REPO, git
from tests.functional.conftest import REGION, api_function, create_service, held_across, held_each, synthesized_as
from tests.functional.test_endpoints import OUTPUTS, create_stack
from tests.unit.test_stack_plans import with_lambdas  # noqa: F401 - a fixture


@pytest.fixture
def deployed(moto_aws: None, dev_env: EnvConfig, project: Path) -> AwsFactory:
    """Every stack with its outputs, the artifacts bucket, two recorded runs (no service, no functions: what they
    hold reads as not deployed)."""
    bucket = OUTPUTS["registry"]["ArtifactsBucketName"]
    boto3.client("s3", region_name=REGION).create_bucket(
        Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": REGION}
    )
    cfn = boto3.client("cloudformation", region_name=REGION)
    for role, outputs in OUTPUTS.items():
        create_stack(cfn, getattr(dev_env.stacks, role), outputs)
    factory = AwsFactory(dev_env)
    store = history.History.of(factory, dev_env)
    assert store is not None
    head = git(project, "rev-parse", "--short=12", "HEAD").strip()
    for build in (8.0, 6.0, 7.0):
        run = RunReport(Plan("dev", (), "deploy.app"), [StepRecord("build", "docker build", "done", build, "built")], 9)
        store.write(history.record_of(run, components={"app": head}, base={}, head=head, who="ci"))
    return factory


def runtime_of(project: Path, deployed: AwsFactory) -> commands.Runtime:
    """The commands' runtime for ``project``, its output captured, against moto's ``deployed`` environment."""
    return commands.Runtime(
        config_path=project / "deploy.toml",
        stdout=io.StringIO(),
        stderr=io.StringIO(),
        clock=FakeClock(),
        aws_factory=lambda _env: deployed,
    )


def test_the_estimates_are_read_beside_what_is_live(deployed: AwsFactory, project: Path) -> None:
    runtime = runtime_of(project, deployed)
    # the service (what is live) and the history's two listings (the newest records) are asked at the same time
    held_across(3, (deployed.client("ecs"), "DescribeServices"), (deployed.client("s3"), "ListObjectsV2"))
    found = commands.analyse(runtime, "dev", since=None, allow_dirty=False, estimates=True)
    assert found.estimates == {"build": 7.0}  # the median of the recorded builds
    assert commands.analyse(runtime, "dev", since=None, allow_dirty=False).estimates == {}  # not asked: not read


def test_a_rollback_older_than_the_newest_runs_still_keeps_deploy_auto_from_bringing_it_back(
    deployed: AwsFactory, project: Path, dev_env: EnvConfig
) -> None:
    """A person rolled the data stack back from HEAD's commit; since, 31 app deploys pushed that rollback out of the
    newest 30 runs deploy.auto reads. The live record names the run that left the stack live as it is: it is read
    too, so deploy.auto still refuses to bring the rolled-back commit back (and `inv diff` says so)."""
    from deploykit.errors import UsageError

    data = project / "cdk" / "stacks" / "data_stack.py"
    data.parent.mkdir(parents=True)
    data.write_text('"""The data stack."""\n')
    git(project, "add", "-A")
    git(project, "commit", "-qm", "data: the stack")
    good = git(project, "rev-parse", "--short=12", "HEAD").strip()
    data.write_text(data.read_text() + "\n# a bad release of the data stack\n")
    git(project, "commit", "-qam", "data: a bad release")
    bad = git(project, "rev-parse", "--short=12", "HEAD").strip()
    store = history.History.of(deployed, dev_env)
    assert store is not None
    undo = RunReport(Plan("dev", (), f"rollback stack:data → {good}"), [], 1.0)
    store.write(history.record_of(undo, components={"stack:data": good}, base={"stack:data": bad}, head=good))
    for _ in range(31):
        run = RunReport(Plan("dev", (), "deploy.app"), [StepRecord("build", "docker build", "done", 1.0, "")], 2.0)
        store.write(history.record_of(run, components={"app": bad}, base={}, head=bad))
    runtime = runtime_of(project, deployed)
    found = commands.analyse(runtime, "dev", since=None, allow_dirty=False)
    assert len(found.records) == 31 and found.records[-1].command == f"rollback stack:data → {good}"
    refused = rf"would bring back what a rollback took dev off: stack:data as it was at {bad}"
    with pytest.raises(UsageError, match=refused):
        commands.deploy_auto(env="dev", dry_run=True, runtime=runtime)
    # the commands that deploy what they are told read it too, and so does inv envs' ⛔
    for told in (partial(commands.deploy_stack, "data"), commands.deploy_full):
        with pytest.raises(UsageError, match=refused) as no:
            told(env="dev", dry_run=True, runtime=runtime)
        assert no.value.exit_code == 2 and "--allow-rolled-back" in (no.value.next_step or "")
    view = next(v for v in commands.envs(runtime=runtime) if v.env == "dev")
    data_stack = next(x for x in view.live if x.component == "stack:data")
    assert data_stack.rolled_back.startswith(f"stack:data as it was at {bad} (taken off by rollback stack:data → ")


def test_a_function_serving_settings_its_stack_did_not_deploy_is_said_in_the_analysis(
    moto_aws: None, dev_env: EnvConfig, project: Path
) -> None:
    """A function's memory raised by hand and published behind its alias: no deploy puts it back (no change set shows
    it, the code is the same), so the Change Analysis of deploy.auto and of inv diff says it, from the API stack's
    template as CloudFormation holds it (read with what is live, in the same round trip); nothing when they agree."""
    shutil.copytree(REPO / "lambda", project / "lambda", ignore=shutil.ignore_patterns("__pycache__", "tests"))
    git(project, "add", "-A")
    git(project, "commit", "-qm", "lambdas")
    boto3.client("s3", region_name=REGION).create_bucket(
        Bucket=OUTPUTS["registry"]["ArtifactsBucketName"], CreateBucketConfiguration={"LocationConstraint": REGION}
    )
    cfn = boto3.client("cloudformation", region_name=REGION)
    for role, outputs in OUTPUTS.items():
        if role != "api":
            create_stack(cfn, getattr(dev_env.stacks, role), outputs)
    role = boto3.client("iam", region_name=REGION).create_role(RoleName="fn", AssumeRolePolicyDocument="{}")
    function = api_function(role["Role"]["Arn"])
    outputs = {k: {"Value": v} for k, v in OUTPUTS["api"].items() if not k.startswith("HealthHandler")}
    outputs["HealthHandlerFunctionName"] = {"Value": {"Ref": "HealthHandler1A2B3C4D"}}
    template = {"Resources": {"HealthHandler1A2B3C4D": function}, "Outputs": outputs}
    cfn.create_stack(StackName=dev_env.stacks.api, TemplateBody=json.dumps(template))
    name = cfn.describe_stack_resources(StackName=dev_env.stacks.api)["StackResources"][0]["PhysicalResourceId"]
    lam = boto3.client("lambda", region_name=REGION)
    lam.create_alias(FunctionName=name, Name="live", FunctionVersion=lam.publish_version(FunctionName=name)["Version"])
    factory = AwsFactory(dev_env)
    runtime = runtime_of(project, factory)
    found = commands.analyse(runtime, "dev", since=None, allow_dirty=False)
    assert found.drifted == {}
    # the Handler the alias serves, read with it: the import check judges the new zip's by it
    assert found.handlers == {"health_handler": function["Properties"]["Handler"]}

    lam.update_function_configuration(FunctionName=name, MemorySize=512)
    by_hand = lam.publish_version(FunctionName=name)["Version"]
    lam.update_alias(FunctionName=name, Name="live", FunctionVersion=by_hand)
    # the template, and one function's configuration: in flight together (one of each held until the other is)
    held_each((factory.client("cloudformation"), "GetTemplate"), (factory.client("lambda"), "GetFunctionConfiguration"))

    found = commands.analyse(runtime, "dev", since=None, allow_dirty=False)

    said = (
        f"version {by_hand}, which the alias serves, has settings other than those {dev_env.stacks.api} deployed: "
        "MemorySize 512 (the stack's: 256); changed by hand, and published"
    )
    assert found.drifted == {"lambda:health_handler": said}
    runtime = runtime_of(project, factory)
    factory.client("ecr").create_repository(repositoryName="car-rental-backend")  # the app is changed: a plan
    commands.deploy_auto(env="dev", dry_run=True, runtime=runtime)
    err = runtime.stderr.getvalue()  # type: ignore[attr-defined]
    assert "📋 Change Analysis:\n" in err  # the heading of the seed's diff.sh, as its users know it
    remedy = "inv deploy.stack CarRentalApiStack --env dev --revert-drift puts them back, and its alias on a version"
    assert f"⚠️  lambda:health_handler: {said} (no deploy of its code puts them back: {remedy} that has them; " in err

    # $LATEST back to the stack's settings (or the stack's update set them there, and inv rollback moved the alias
    # back to an older version): the version keeps its own, and the next deploy of the function serves the stack's
    lam.update_function_configuration(FunctionName=name, MemorySize=256)
    runtime = runtime_of(project, factory)
    found = commands.analyse(runtime, "dev", since=None, allow_dirty=False)
    said = (
        f"version {by_hand}, which the alias serves, has settings other than those {dev_env.stacks.api} deployed, "
        "which $LATEST has: MemorySize 512 (the stack's: 256); a version keeps the settings it was published with "
        "(an older one put back by inv rollback, or one published by hand)"
    )
    assert found.drifted == {"lambda:health_handler": said}
    runtime = runtime_of(project, factory)
    commands.deploy_auto(env="dev", dry_run=True, runtime=runtime)
    err = runtime.stderr.getvalue()  # type: ignore[attr-defined]
    assert f"⚠️  lambda:health_handler: {said} (the next deploy of it publishes the stack's: inv deploy.lambda" in err


def test_only_and_skip_hold_changed_components_back_from_the_plan(
    deployed: AwsFactory, project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every component reads as never deployed (no service, no functions): --only and --skip keep some of them."""
    deployed.client("ecr").create_repository(repositoryName="car-rental-backend")
    shutil.copytree(REPO / "lambda", project / "lambda", ignore=shutil.ignore_patterns("__pycache__", "tests"))
    git(project, "add", "-A")
    git(project, "commit", "-qm", "lambdas")

    def planned(**selection: str) -> tuple[set[str], set[str]]:
        runtime = runtime_of(project, deployed)
        commands.deploy_auto(env="dev", dry_run=True, as_json=True, runtime=runtime, **selection)
        data = json.loads(runtime.stdout.getvalue())  # type: ignore[attr-defined]
        return {c["component"] for c in data["changes"]}, {s["name"] for s in data["steps"]}

    every, _ = planned()
    lambdas = {"lambda:health_handler", "lambda:login_handler"}
    assert lambdas | {"stack:api", "stack:fargate"} <= every and "app" not in every  # the app is as recorded
    kept, steps = planned(only="lambda:login_handler")
    assert kept == {"lambda:login_handler"} and steps == {
        "upload-lambda",
        "update-code",
        "publish-version",
        "move-alias",
        "smoke",
    }
    kept, steps = planned(skip="stack,lambda:health_handler")
    assert kept == {"lambda:login_handler"} and "deploy-stack" not in steps
    kept, _ = planned(only="stack", skip="stack:CarRentalApiStack")
    assert kept == {c for c in every if c.startswith("stack:")} - {"stack:api"}
    kept, steps = planned(only="app")
    assert kept == set() and steps == set()  # nothing of it changed: nothing to deploy
    # the dry run's JSON says what is held back (CI reads it), and only when something is
    runtime = runtime_of(project, deployed)
    commands.deploy_auto(env="dev", dry_run=True, as_json=True, runtime=runtime, only="lambda:login_handler")
    assert json.loads(runtime.stdout.getvalue())["held"] == sorted(every - {"lambda:login_handler"})  # type: ignore[attr-defined]

    # the API stack is given every function's code, a new one's this commit's zip, which only that function's deploy
    # uploads: held back, the stack's deploy failed at CloudFormation (NoSuchKey), or made live a function that was
    # neither checked nor recorded
    synthesized_as(monkeypatch, {"CarRentalApiStack": []})  # a stack that takes no function's code: let through
    planned(only="stack:api")
    synthesized_as(monkeypatch, {"CarRentalApiStack": ["HealthHandlerCodeKey", "LoginHandlerCodeKey"]})
    for selection in ({"only": "stack:api"}, {"skip": "lambda:health_handler"}):
        with pytest.raises(UsageError) as refused:
            planned(**selection)
        assert refused.value.exit_code == 2
        assert refused.value.message.startswith("--only/--skip hold back lambda:health_handler")
        assert "which dev does not have yet, while stack:api deploys" in refused.value.message

    # not "dev runs what HEAD would deploy": what is held back does not run yet
    runtime = runtime_of(project, deployed)
    commands.deploy_auto(env="dev", only="app", as_json=True, runtime=runtime)
    head = git(project, "rev-parse", "--short=12", "HEAD").strip()
    held = sorted(every)
    assert (
        f"✅ nothing else to deploy: dev runs the rest of what HEAD ({head}) would deploy; held back: "
        f"{', '.join(held)} (the next inv deploy.auto deploys them)\n"
    ) in runtime.stderr.getvalue()  # type: ignore[attr-defined]
    report = json.loads(runtime.stdout.getvalue())  # type: ignore[attr-defined]
    assert (report["ok"], report["steps"], report["held"]) == (True, [], held)

    # a function no stack holds yet, its stack held back: "give it a stack" sent the user to what the commit may do
    (project / "lambda" / "new_fn").mkdir()
    (project / "lambda" / "new_fn" / "handler.py").write_text("def handler(event, context):\n    return {}\n")
    git(project, "add", "-A")
    git(project, "commit", "-qm", "new_fn")
    with pytest.raises(UsageError) as refused:
        planned(only="lambda:new_fn")
    assert refused.value.message == (
        "Lambda function new_fn is not deployed in 'dev' yet, and --only/--skip hold back stack:api, which may be "
        "what creates it"
    )


def test_an_unknown_component_to_hold_back_is_refused_before_anything_is_read(
    deployed: AwsFactory, project: Path
) -> None:
    calls: list[str] = []
    for service in ("cloudformation", "s3", "ecs", "lambda"):
        deployed.client(service).meta.events.register(f"before-call.{service}", lambda **kw: calls.append("call"))
    with pytest.raises(UsageError) as refused:
        commands.deploy_auto(env="dev", skip="stack:nope", runtime=runtime_of(project, deployed))
    assert refused.value.exit_code == 2 and refused.value.message == "unknown stack 'nope' in environment 'dev'"
    with pytest.raises(UsageError) as refused:
        commands.deploy_watch(env="dev", only="lamda", runtime=runtime_of(project, deployed), until=lambda: True)
    assert refused.value.message == "--only 'lamda': 'lamda' is not a component"
    assert calls == []


def test_an_environment_not_fully_deployed_cannot_hold_anything_back(
    moto_aws: None, dev_env: EnvConfig, project: Path
) -> None:
    factory = AwsFactory(dev_env)  # no stack at all: deploy.auto would deploy everything
    with pytest.raises(UsageError) as refused:
        commands.deploy_auto(env="dev", only="app", runtime=runtime_of(project, factory))
    assert refused.value.exit_code == 2
    assert refused.value.message == (
        "dev is not fully deployed yet: deploy.auto deploys everything (deploy.full), and --only cannot hold any of it "
        "back"
    )
    assert boto3.client("cloudformation", region_name=REGION).list_stacks()["StackSummaries"] == []


def test_the_dry_run_json_of_an_environment_not_fully_deployed_has_the_pinned_shape(
    moto_aws: None,
    dev_env: EnvConfig,
    with_lambdas: Path,  # noqa: F811
) -> None:
    """A fresh (or destroyed) environment: deploy.auto deploys everything, and its --dry-run --json printed the
    executor's own dry-run shape, which a CI script reading the pinned one broke on."""
    runtime = runtime_of(with_lambdas, AwsFactory(dev_env))
    assert commands.deploy_auto(env="dev", dry_run=True, as_json=True, runtime=runtime) is None
    data = json.loads(runtime.stdout.getvalue())  # type: ignore[attr-defined]
    assert list(data) == ["environment", "base", "head", "changes", "steps"]
    assert data["environment"] == "dev" and data["base"] is None
    assert {c["kind"] for c in data["changes"]} <= {"app", "lambda", "stack"} and data["changes"]
    assert {"name": "smoke", "target": "dev"} in data["steps"] and all(
        list(s) == ["name", "target"] for s in data["steps"]
    )
    assert boto3.client("cloudformation", region_name=REGION).list_stacks()["StackSummaries"] == []


def test_a_freeze_is_read_with_what_is_live_and_closes_the_analysis(
    deployed: AwsFactory, project: Path, dev_env: EnvConfig
) -> None:
    runtime = runtime_of(project, deployed)
    assert commands.analyse(runtime, "dev", since=None, allow_dirty=False).frozen is None
    now = runtime.clock.now()
    made = freeze.Freeze("lead@laptop", "audit", now - timedelta(hours=1), now + timedelta(hours=1))
    freeze.write(deployed, dev_env, made)
    found = commands.analyse(runtime, "dev", since=None, allow_dirty=False)
    assert found.frozen == made
    assert found.closing_lines()[-1] == (
        f"❄️  {made.describe('dev')}: a deploy is refused until it ends (a rollback is not)"
    )
    freeze.write(deployed, dev_env, dataclasses.replace(made, until=now - timedelta(seconds=1)))  # over
    assert commands.analyse(runtime, "dev", since=None, allow_dirty=False).frozen is None


def test_a_pause_is_read_with_what_is_live_and_said_as_a_deploy_wakes_it(
    deployed: AwsFactory, project: Path, dev_env: EnvConfig
) -> None:
    create_service(deployed)
    runtime = runtime_of(project, deployed)
    made = pause.Pause(2, "ana@laptop", "nights", runtime.clock.now())
    pause.write_object(deployed, dev_env, made)  # its service runs: not paused
    assert commands.analyse(runtime, "dev", since=None, allow_dirty=False).paused is None
    deployed.client("ecs").update_service(cluster=dev_env.cluster, service=dev_env.service, desiredCount=0)
    found = commands.analyse(runtime, "dev", since=None, allow_dirty=False)
    assert found.paused == made
    said = f"⏸  {made.describe('dev')}: a deploy wakes it first (2 tasks), and it stays awake"
    assert found.closing_lines()[-1] == said


def test_an_image_whose_release_command_has_not_passed_counts_as_changed(
    deployed: AwsFactory, project: Path, dev_env: EnvConfig
) -> None:
    """The service runs HEAD's image, as the live record says, but is tagged deploykit:release-pending (a first
    deploy's command failed after the Fargate stack created it): the app is deployed again, said why, so that its
    release command runs; without the tag it is not."""
    head = git(project, "rev-parse", "--short=12", "HEAD").strip()
    image = f"123456789012.dkr.ecr.{REGION}.amazonaws.com/car-rental-backend:{head}"
    create_service(deployed, {"image": image})
    runtime = runtime_of(project, deployed)
    assert "app" not in commands.analyse(runtime, "dev", since=None, allow_dirty=False).found.components()
    ecs = deployed.client("ecs")
    (service,) = ecs.describe_services(cluster=dev_env.cluster, services=[dev_env.service])["services"]
    ecs.tag_resource(resourceArn=service["serviceArn"], tags=[{"key": PENDING_TAG, "value": head}])
    # no release command (any longer): nothing would take the tag off, and nothing is deployed for it
    assert "app" not in commands.analyse(runtime, "dev", since=None, allow_dirty=False).found.components()
    with (project / "deploy.toml").open("a") as toml:
        toml.write('\n[release]\ncommand = ["python", "-m", "app.release"]\n')
    git(project, "commit", "-qam", "a release command")
    found = commands.analyse(runtime, "dev", since=None, allow_dirty=False)
    (app,) = [c for c in found.found.changes if c.component == "app"]
    assert app.reason == (
        f"{dev_env.service} runs {head}, whose release command has not passed ({PENDING_TAG}={head}): deployed again, "
        "as this checkout has it"
    )


def test_an_image_whose_release_command_has_not_passed_is_said_not_deployed_while_it_is_skipped_by_hand(
    deployed: AwsFactory, project: Path, dev_env: EnvConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """$DEPLOYKIT_SKIP_RELEASE=1 left set after the emergency's deploy: deploying the app again would only skip the
    command again and tag the service again, so the tag is said (with the way to run it), and nothing deployed."""
    with (project / "deploy.toml").open("a") as toml:
        toml.write('\n[release]\ncommand = ["python", "-m", "app.release"]\n')
    git(project, "commit", "-qam", "a release command")
    head = git(project, "rev-parse", "--short=12", "HEAD").strip()
    create_service(deployed, {"image": f"123456789012.dkr.ecr.{REGION}.amazonaws.com/car-rental-backend:{head}"})
    ecs = deployed.client("ecs")
    (service,) = ecs.describe_services(cluster=dev_env.cluster, services=[dev_env.service])["services"]
    ecs.tag_resource(resourceArn=service["serviceArn"], tags=[{"key": PENDING_TAG, "value": head}])
    monkeypatch.setenv("DEPLOYKIT_SKIP_RELEASE", "1")
    found = commands.analyse(runtime_of(project, deployed), "dev", since=None, allow_dirty=False)
    assert "app" not in found.found.components()
    unverified: dict[str, str] = {}  # as inv health reads it (no drift collected): said whatever the variable
    auto.live_components(deployed, found.config, found.env, found.endpoints, unverified)
    assert unverified["app"].startswith(f"{dev_env.service} runs {head}, whose release command has not passed")
    assert found.closing_lines() == [
        f"⚠️  app: {dev_env.service} runs {head}, whose release command has not passed ({PENDING_TAG}={head}); "
        "$DEPLOYKIT_SKIP_RELEASE=1 skips it, so the app is not deployed again for it (unset DEPLOYKIT_SKIP_RELEASE "
        "and inv deploy.auto --env dev: the command runs first)"
    ]
    monkeypatch.delenv("DEPLOYKIT_SKIP_RELEASE")
    found = commands.analyse(runtime_of(project, deployed), "dev", since=None, allow_dirty=False)
    assert "app" in found.found.components() and found.closing_lines() == []


def test_changed_python_that_does_not_compile_is_refused_before_anything_is_built(
    deployed: AwsFactory, project: Path
) -> None:
    """A typo committed in the backend: refused (exit 2) before the image is built, where it would have crashed the
    new tasks at their rollout; the dry run says it would be."""
    deployed.client("ecr").create_repository(repositoryName="car-rental-backend")
    shutil.copytree(REPO / "lambda", project / "lambda", ignore=shutil.ignore_patterns("__pycache__", "tests"))
    fleet = project / "backend" / "app" / "fleet.py"
    fleet.write_text(fleet.read_text() + "\n\ndef broken(:\n    pass\n")
    (project / "backend" / "tests").mkdir(exist_ok=True)
    (project / "backend" / "tests" / "test_wip.py").write_text("def half(:\n")  # tests deploy nothing: not judged
    git(project, "add", "-A")
    git(project, "commit", "-qm", "backend: a typo")
    lines = len(fleet.read_text().splitlines())
    runtime = dataclasses.replace(
        runtime_of(project, deployed), docker_factory=Mock(side_effect=AssertionError("nothing is built"))
    )
    with pytest.raises(UsageError) as refused:
        commands.deploy_auto(env="dev", runtime=runtime)
    assert refused.value.exit_code == 2
    assert refused.value.message == (
        f"1 changed Python file does not compile: backend/app/fleet.py:{lines - 1}: invalid syntax"
    )
    assert "nothing was built or deployed" in (refused.value.next_step or "")

    runtime = runtime_of(project, deployed)
    commands.deploy_auto(env="dev", dry_run=True, runtime=runtime)
    said = runtime.stderr.getvalue()  # type: ignore[attr-defined]
    assert "⚠️  1 changed Python file does not compile: backend/app/fleet.py:" in said
    assert ": the deploy would be refused\n" in said


def test_a_function_that_would_not_import_on_lambda_is_refused_before_the_plan_is_shown(
    deployed: AwsFactory, project: Path
) -> None:
    """requests is installed on this machine, not in Lambda's runtime, and the function does not vendor it: refused
    (exit 2) before the plan is shown and anything uploaded; the dry run shows the plan and says it would be."""
    shutil.copytree(REPO / "lambda", project / "lambda", ignore=shutil.ignore_patterns("__pycache__", "tests"))
    handler = project / "lambda" / "login_handler" / "handler.py"
    handler.write_text(handler.read_text() + "\nimport requests\n")
    line = len(handler.read_text().splitlines())
    git(project, "add", "-A")
    git(project, "commit", "-qm", "login: requests, not vendored")
    runtime = runtime_of(project, deployed)
    with pytest.raises(UsageError) as refused:  # the function alone: the stacks' deploys would synthesize the CDK app
        commands.deploy_auto(env="dev", only="lambda:login_handler", runtime=runtime)
    assert refused.value.exit_code == 2
    assert refused.value.message.startswith(
        f"lambda/login_handler would not import on Lambda: handler.py:{line}: imports requests, which neither "
    )
    said = runtime.stderr.getvalue()  # type: ignore[attr-defined]
    assert "Plan for deploy.auto" not in said and "🚀" not in said

    runtime = runtime_of(project, deployed)
    commands.deploy_auto(env="dev", only="lambda:login_handler", dry_run=True, runtime=runtime)
    said = runtime.stderr.getvalue()  # type: ignore[attr-defined]
    assert f"⚠️  lambda/login_handler would not import on Lambda: handler.py:{line}: imports requests" in said
    assert ": the deploy would be refused\n" in said and "upload-lambda" in said
    # inv diff's analysis says it, of each changed function (health_handler, changed too, imports)
    found = autodeploy._unimportable(
        commands.analyse(runtime_of(project, deployed), "dev", since=None, allow_dirty=False)
    )
    assert list(found) == ["login_handler"] and str(found["login_handler"][0]).startswith(f"handler.py:{line}: ")


def test_a_first_deploy_of_everything_checks_all_of_the_app_s_and_the_functions_python(
    moto_aws: None, project: Path
) -> None:
    """Nothing deployed: deploy.auto deploys everything (deploy.full), so every Python file it builds or packages is
    compiled first; a broken handler is refused before a stack is created."""
    shutil.copytree(REPO / "lambda", project / "lambda", ignore=shutil.ignore_patterns("__pycache__", "tests"))
    handler = project / "lambda" / "login_handler" / "handler.py"
    handler.write_text(handler.read_text() + "\n\ndef half(:\n")
    git(project, "add", "-A")
    git(project, "commit", "-qm", "a typo")
    runtime = dataclasses.replace(
        runtime_of(project, AwsFactory(load_config(project / "deploy.toml").environment("dev"))),
        docker_factory=Mock(side_effect=AssertionError("nothing is built")),
    )
    with pytest.raises(UsageError) as refused:
        commands.deploy_auto(env="dev", runtime=runtime)
    assert refused.value.message.startswith(
        "1 app or function Python file does not compile: lambda/login_handler/handler.py:"
    )
    assert boto3.client("cloudformation", region_name=REGION).describe_stacks()["Stacks"] == []


def test_a_service_size_changed_in_deploy_toml_deploys_that_environment_s_fargate_stack(
    deployed: AwsFactory, project: Path, dev_env: EnvConfig
) -> None:
    """Every stack live at HEAD (the live record): a commit sizing another environment's service changes nothing of
    dev's; one sizing dev's makes deploy.auto and inv diff deploy dev's Fargate stack, the setting said."""
    store = history.History.of(deployed, dev_env)
    assert store is not None
    head = git(project, "rev-parse", "--short=12", "HEAD").strip()
    stacks = {f"stack:{role}": head for role in STACK_ROLES}
    run = RunReport(Plan("dev", (), "deploy.full"), [StepRecord("deploy-stack", "stacks", "done", 9.0, "done")], 9)
    store.write(history.record_of(run, components=stacks, base={}, head=head, who="ci"))
    toml = project / "deploy.toml"

    def stacks_changed() -> dict[str, set[str | None]]:
        found = commands.analyse(runtime_of(project, deployed), "dev", since=None, allow_dirty=False).found
        stacks = {c.component for c in found.changes if c.kind == "stack" and c.component}
        return {stack: {c.setting for c in found.for_component(stack)} for stack in stacks}

    assert stacks_changed() == {}
    sandbox, dev = "[environments.sandbox.stacks]", "[environments.dev.stacks]"
    toml.write_text(toml.read_text().replace(sandbox, f"desired_count = 2\n\n{sandbox}"))
    git(project, "commit", "-qam", "sandbox: two tasks")
    assert stacks_changed() == {}  # another environment's size
    toml.write_text(toml.read_text().replace(dev, f"task_cpu = 1024\ntask_memory = 2048\n\n{dev}"))
    git(project, "commit", "-qam", "dev: 1 vCPU, 2 GiB")
    assert stacks_changed() == {"stack:fargate": {"[environments.dev] task_cpu, task_memory"}}
    runtime = runtime_of(project, deployed)
    commands.deploy_auto(env="dev", dry_run=True, as_json=True, runtime=runtime)
    data = json.loads(runtime.stdout.getvalue())  # type: ignore[attr-defined]
    assert [c["component"] for c in data["changes"] if c["component"].startswith("stack:")] == ["stack:fargate"]
    assert {"name": "deploy-stack", "target": "CarRentalFargateStack"} in data["steps"]
    assert not [s for s in data["steps"] if s["name"] == "deploy-stack" and s["target"] != "CarRentalFargateStack"]
    runtime = runtime_of(project, deployed)
    commands.deploy_auto(env="dev", dry_run=True, runtime=runtime)
    said = runtime.stdout.getvalue() + runtime.stderr.getvalue()  # type: ignore[attr-defined]
    setting = "[environments.dev] task_cpu, task_memory"
    assert f"deploy.toml ({setting} changed) → inv deploy.stack CarRentalFargateStack" in said
