"""inv deploy.stack against moto: one stack of an environment, planned with its inputs as they are live."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar
from unittest.mock import Mock

import boto3
import pytest
from botocore.stub import Stubber

from deploykit import commands, references, registry, stack_chain, synth
from deploykit.app_chain import RegisterTaskDef, in_registry_now
from deploykit.aws import AwsFactory
from deploykit.clock import FakeClock
from deploykit.commands.previews import show_preview, stack_previewed
from deploykit.config import EnvConfig
from deploykit.errors import UsageError
from deploykit.output import Reporter
from deploykit.plan import Context, Executor, Outcome, Plan, RunReport, Step
from deploykit.stack_chain import DeployStack, Synthesize
from deploykit.stacks import Change, NoPreview, PropertyChange
from tests.conftest import git, quiet_runtime
from tests.functional.conftest import create_service, put_image
from tests.functional.test_endpoints import create_stack
from tests.unit.fake_registry import Store, running


def plan_of(project: Path, stack: str) -> tuple[list[str], str]:
    runtime = commands.Runtime(config_path=project / "deploy.toml", stdout=io.StringIO(), stderr=io.StringIO())
    commands.deploy_stack(stack, env="dev", dry_run=True, as_json=True, runtime=runtime)
    assert isinstance(runtime.stdout, io.StringIO) and isinstance(runtime.stderr, io.StringIO)
    return [step["step"] for step in json.loads(runtime.stdout.getvalue())["steps"]], runtime.stderr.getvalue()


def test_the_first_stack_of_a_new_environment_is_deployed_without_a_smoke_that_could_only_fail(
    project: Path, factory: AwsFactory
) -> None:
    """Built stack by stack, an environment has no app to check end to end until every stack is there: smoke is
    left out, and said; once the others are there, it is back."""
    steps, said = plan_of(project, "CarRentalDataStack")
    assert steps == ["synth", "deploy-stack"]
    assert (
        "ℹ️  no smoke: dev is not fully deployed (CarRentalRegistryStack, CarRentalAuthStack, CarRentalFargateStack, "
        "CarRentalApiStack not there)" in said
    )
    cfn = factory.client("cloudformation")
    for name in ("CarRentalRegistryStack", "CarRentalAuthStack", "CarRentalFargateStack", "CarRentalApiStack"):
        create_stack(cfn, name, {})
    steps, said = plan_of(project, "CarRentalDataStack")
    assert steps == ["synth", "deploy-stack", "smoke"] and "no smoke" not in said


def test_an_image_given_to_the_fargate_stack_is_recorded_as_the_apps(project: Path, factory: AwsFactory) -> None:
    """`--image-tag` rolls that image out through the stack: the run records the app at it too, so the live record
    names what runs (else the next deploy.auto would see an image no deploy verified, and deploy the app again)."""
    cfn = factory.client("cloudformation")
    for name in ("CarRentalRegistryStack", "CarRentalDataStack", "CarRentalAuthStack", "CarRentalApiStack"):
        create_stack(cfn, name, {})
    factory.client("ecr").create_repository(repositoryName="car-rental-backend")
    put_image(factory, "abcdef123456")
    runtime = commands.Runtime(config_path=project / "deploy.toml", stdout=io.StringIO(), stderr=io.StringIO())
    commands.deploy_stack(
        "CarRentalFargateStack", env="dev", image_tag="abcdef123456", dry_run=True, as_json=True, runtime=runtime
    )
    assert isinstance(runtime.stdout, io.StringIO)
    deploys = json.loads(runtime.stdout.getvalue())["deploys"]
    assert {d["component"]: d["sha"] for d in deploys}["app"] == "abcdef123456"
    runtime = commands.Runtime(config_path=project / "deploy.toml", stdout=io.StringIO(), stderr=io.StringIO())
    with pytest.raises(UsageError) as refused:  # a stack that runs no image: the tag would go unused, unsaid
        commands.deploy_stack("CarRentalApiStack", env="dev", image_tag="abcdef123456", dry_run=True, runtime=runtime)
    assert refused.value.message == (
        "--image-tag is for CarRentalFargateStack, which runs the app's image; CarRentalApiStack has none"
    )
    assert refused.value.next_step == "inv deploy.stack CarRentalApiStack without --image-tag"


def test_an_image_the_registry_does_not_have_is_refused_by_the_dry_run_too(project: Path, factory: AwsFactory) -> None:
    """`--image-tag` of an image the registry lacks (mistyped, never pushed, cleaned up): the run would refuse it
    after synthesis; the dry run, and the run, refuse it before anything (exit 2, the next step); no registry
    stack: named."""
    for dry_run in (True, False):
        with pytest.raises(UsageError, match="does not exist in environment 'dev'") as refused:
            commands.deploy_stack(
                "CarRentalFargateStack",
                env="dev",
                image_tag="abcdef123456",
                dry_run=dry_run,
                runtime=quiet_runtime(project),
            )
        assert "deploy the registry stack first: inv deploy.stack CarRentalRegistryStack" in refused.value.next_step
    factory.client("ecr").create_repository(repositoryName="car-rental-backend")
    put_image(factory, "abcdef000000")
    for dry_run in (True, False):
        with pytest.raises(UsageError) as refused:
            commands.deploy_stack(
                "CarRentalFargateStack",
                env="dev",
                image_tag="abcdef123456",
                dry_run=dry_run,
                runtime=quiet_runtime(project),
            )
        assert refused.value.message == (
            "CarRentalFargateStack would roll out the image car-rental-backend:abcdef123456, which is not in the "
            "registry of environment 'dev': the service's tasks could not start"
        )
        assert refused.value.exit_code == 2 and "inv build push --env dev" in refused.value.next_step
    put_image(factory, "abcdef123456")
    runtime = quiet_runtime(project)
    commands.deploy_stack(
        "CarRentalFargateStack", env="dev", image_tag="abcdef123456", dry_run=True, as_json=True, runtime=runtime
    )
    assert isinstance(runtime.stdout, io.StringIO)
    assert "deploy-stack" in [step["step"] for step in json.loads(runtime.stdout.getvalue())["steps"]]


def test_a_plain_registry_is_asked_for_the_image_through_its_api_without_docker(
    project: Path, factory: AwsFactory
) -> None:
    """An environment pushing to a registry of its own (`registry = "host"`): the dry run asks that registry (its
    API), not the Docker engine, whether it has the image."""
    store = Store()
    store.put_image("car-rental-backend", "abcdef123456", [b"layer"], platform="linux/amd64")
    with running(store) as served:
        toml = project / "deploy.toml"
        toml.write_text(
            toml.read_text().replace("[environments.dev]\n", f'[environments.dev]\nregistry = "{served.host}"\n')
        )
        git(project, "commit", "-qam", "dev: a registry of its own")

        def no_docker() -> None:
            raise AssertionError("the Docker engine was asked")

        for tag, there in (("abcdef123456", True), ("abcdef000000", False)):
            runtime = dataclasses.replace(quiet_runtime(project), docker_factory=no_docker)
            if there:
                commands.deploy_stack("CarRentalFargateStack", env="dev", image_tag=tag, dry_run=True, runtime=runtime)
                continue
            with pytest.raises(UsageError, match="car-rental-backend:abcdef000000, which is not in the registry"):
                commands.deploy_stack("CarRentalFargateStack", env="dev", image_tag=tag, dry_run=True, runtime=runtime)
        assert ("GET", "/v2/car-rental-backend/manifests/abcdef000000") in store.calls


def fargate_template(cpu: str | None) -> str:
    """A Fargate stack's template, its task definition on ``cpu`` (None: naming none, Fargate's default)."""
    properties: dict[str, object] = {"RequiresCompatibilities": ["FARGATE"], "ContainerDefinitions": []}
    if cpu:
        properties["RuntimePlatform"] = {"CpuArchitecture": cpu, "OperatingSystemFamily": "LINUX"}
    resources = {"TaskDefinition": {"Type": "AWS::ECS::TaskDefinition", "Properties": properties}}
    return json.dumps({"Parameters": {"ImageTag": {"Type": "String"}}, "Resources": resources})


def test_the_cpu_a_template_puts_the_tasks_on() -> None:
    assert stack_chain.template_cpu(fargate_template("ARM64")) == "ARM64"
    assert stack_chain.template_cpu(fargate_template(None)) == "X86_64"  # Fargate's default
    assert stack_chain.template_cpu(json.dumps({"Resources": {"T": {"Type": "AWS::SNS::Topic"}}})) is None
    assert stack_chain.template_cpu("not json") is None


def test_the_running_image_is_not_put_on_tasks_of_another_cpu(
    project: Path, factory: AwsFactory, dev_env: EnvConfig, tmp_path: Path
) -> None:
    """[build] platform changed to linux/arm64 and the Fargate stack deployed with the image running now (built for
    X86_64): refused before anything changes. Another image (one built for it by the run, or named by a person)
    goes on, and so does the running image on the CPU it runs on."""
    create_service(factory)  # its task definition runs ...:old and names no CPU: Fargate's X86_64
    template = tmp_path / "CarRentalFargateStack.template.json"
    template.write_text(fargate_template("ARM64"))
    stack = {"type": "aws:cloudformation:stack", "properties": {"templateFile": template.name}}
    (tmp_path / "manifest.json").write_text(json.dumps({"artifacts": {"CarRentalFargateStack": stack}}))
    clock = FakeClock()
    ctx = Context(Mock(), dev_env, factory, clock, Reporter(io.StringIO(), tty=False, clock=clock), Mock())

    def deploy(tag: str) -> str:
        return DeployStack("CarRentalFargateStack", str(template), (("ImageTag", tag),)).run(ctx).status

    with pytest.raises(UsageError) as refused:
        deploy("old")
    assert refused.value.exit_code == 2
    assert refused.value.message == (
        "CarRentalFargateStack would put the service's tasks on ARM64, but the image they would run, the one running "
        "now (old), is built for X86_64: they would not start"
    )
    assert "inv deploy.auto" in (refused.value.next_step or "") and "--image-tag" in (refused.value.next_step or "")
    assert factory.client("cloudformation").list_stacks()["StackSummaries"] == []  # nothing changed

    template.write_text(fargate_template(None))  # the CPU it runs on
    assert deploy("old") == "done"
    template.write_text(fargate_template("ARM64"))
    in_registry_now(factory).add(f"{registry.repository_uri(factory)}:c0ffee123456")  # this run's push
    assert deploy("c0ffee123456") == "done"  # an image built for it


def test_another_image_than_the_running_one_is_looked_up_in_the_registry_first(
    moto_aws: None, dev_env: EnvConfig, tmp_path: Path
) -> None:
    """deploy.stack --image-tag TAG (a rollback's image too): a tag the registry does not have, or an image built for
    another CPU than the template's, is refused before the change set (exit 2, nothing changed), where the tasks
    would have failed to pull or start until the circuit breaker put the service back. One the registry has for that
    CPU goes on; the running image and one this run pushed are not looked up."""
    store = Store()
    store.put_image("car-rental-backend", "arm", [b"layer"], platform="linux/arm64")
    store.put_image("car-rental-backend", "intel", [b"layer"], platform="linux/amd64")
    with running(store) as served:
        env = dataclasses.replace(dev_env, registry=served.host)
        aws = AwsFactory(env)
        create_service(aws)  # runs ...:old on X86_64
        template = tmp_path / "CarRentalFargateStack.template.json"
        stack = {"type": "aws:cloudformation:stack", "properties": {"templateFile": template.name}}
        (tmp_path / "manifest.json").write_text(json.dumps({"artifacts": {"CarRentalFargateStack": stack}}))
        clock = FakeClock()
        ctx = Context(Mock(), env, aws, clock, Reporter(io.StringIO(), tty=False, clock=clock), Mock())

        def deploy(tag: str, cpu: str | None) -> str:
            template.write_text(fargate_template(cpu))
            return DeployStack("CarRentalFargateStack", str(template), (("ImageTag", tag),)).run(ctx).status

        with pytest.raises(UsageError) as missing:
            deploy("no-such-tag", None)
        assert missing.value.exit_code == 2
        assert missing.value.message == (
            "CarRentalFargateStack would roll out the image car-rental-backend:no-such-tag, which is not in the "
            "registry of environment 'dev': the service's tasks could not start"
        )
        assert "inv build push --env dev" in (missing.value.next_step or "")
        with pytest.raises(UsageError) as other_cpu:
            deploy("intel", "ARM64")
        assert other_cpu.value.message == (
            "CarRentalFargateStack would put the service's tasks on ARM64, but the image it would roll out "
            "(car-rental-backend:intel) is built for linux/amd64: they would not start"
        )
        assert aws.client("cloudformation").list_stacks()["StackSummaries"] == []  # nothing changed

        assert deploy("arm", "ARM64") == "done"
        assert deploy("intel", None) == "done"
        looked = len(store.calls)
        assert deploy("old", None) == "done"  # the running image: not looked up
        in_registry_now(aws).add(f"{served.host}/car-rental-backend:pushed")
        assert deploy("pushed", "ARM64") == "done"  # this run's push, for [build] platform: not looked up
        assert len(store.calls) == looked


def test_uncommitted_changes_are_refused_unless_allowed_and_then_named_as_a_dirty_build(
    project: Path, factory: AwsFactory
) -> None:
    """Its synthesis reads the work tree: a stack deployed from uncommitted CDK code must not be recorded as the
    clean commit. Refused (exit 2, nothing run, a dry run too); with allow_dirty, the plan records the dirty build."""
    stack_file = project / "cdk" / "stacks" / "data_stack.py"
    stack_file.parent.mkdir(parents=True, exist_ok=True)
    stack_file.write_text(stack_file.read_text() + "\n# uncommitted\n" if stack_file.exists() else "# uncommitted\n")
    with pytest.raises(UsageError, match="uncommitted changes") as refused:
        plan_of(project, "CarRentalDataStack")
    assert "--allow-dirty" in (refused.value.next_step or "")
    runtime = commands.Runtime(config_path=project / "deploy.toml", stdout=io.StringIO(), stderr=io.StringIO())
    commands.deploy_stack("data", env="dev", dry_run=True, as_json=True, allow_dirty=True, runtime=runtime)
    assert isinstance(runtime.stdout, io.StringIO)
    [deployed] = json.loads(runtime.stdout.getvalue())["deploys"]
    assert deployed["component"] == "stack:data" and "-dirty-" in deployed["sha"]


SPELLED_OUT = {"Fn::Sub": "arn:${AWS::Partition}:ssm:${AWS::Region}:${AWS::AccountId}:parameter/stack-key"}


def secret_template(tmp_path: Path, value_from: Any = SPELLED_OUT) -> Path:
    """A Fargate stack's template whose task definition names an SSM parameter (``value_from``: by default spelled
    out, as ecs.Secret.from_ssm_parameter writes it) and a log group of its own."""
    secret = {"Name": "API_KEY", "ValueFrom": value_from}
    container = {
        "Name": "backend",
        "Image": "repo:tag",
        "Secrets": [secret],
        "LogConfiguration": {"LogDriver": "awslogs", "Options": {"awslogs-group": {"Ref": "LogGroup"}}},
    }
    resources = {
        "LogGroup": {"Type": "AWS::Logs::LogGroup"},
        "TaskDefinition": {
            "Type": "AWS::ECS::TaskDefinition",
            "Properties": {"ContainerDefinitions": [container], "Cpu": "256", "Memory": "512"},
        },
    }
    template = tmp_path / "CarRentalFargateStack.template.json"
    template.write_text(json.dumps({"Resources": resources}))
    stack = {"type": "aws:cloudformation:stack", "properties": {"templateFile": template.name}}
    (tmp_path / "manifest.json").write_text(json.dumps({"artifacts": {"CarRentalFargateStack": stack}}))
    return template


def test_a_stack_whose_task_definition_names_a_missing_secret_is_refused_before_its_change_set(
    factory: AwsFactory, dev_env: EnvConfig, tmp_path: Path
) -> None:
    """The Fargate stack's revision names an SSM parameter that is missing: the deploy is refused before anything
    changes (exit 2, naming it); once it is there, the stack deploys. Its own log group is never read."""
    clock = FakeClock()
    ctx = Context(Mock(), dev_env, factory, clock, Reporter(io.StringIO(), tty=False, clock=clock), Mock())
    step = DeployStack("CarRentalFargateStack", str(secret_template(tmp_path)))

    with pytest.raises(UsageError) as refused:
        step.run(ctx)
    parameter = f"arn:aws:ssm:{dev_env.region}:{factory.account()}:parameter/stack-key"
    assert refused.value.exit_code == 2
    assert refused.value.message == (
        "CarRentalFargateStack would register a task definition that names what does not exist, so none of its "
        f"tasks would start: secret API_KEY of container backend (SSM parameter {parameter}): not found. Nothing "
        "was changed"
    )
    assert refused.value.next_step == (
        "create what is missing (or change CarRentalFargateStack to name what exists), then rerun"
    )
    assert factory.client("cloudformation").list_stacks()["StackSummaries"] == []  # nothing changed

    factory.client("ssm").put_parameter(Name="/stack-key", Value="k", Type="SecureString")
    assert step.run(ctx).status == "done"


def data_template(folder: Path, resources: dict[str, Any]) -> Path:
    """A data stack's template of ``resources``, deployed before the Fargate stack, in the cloud assembly
    :func:`secret_template` wrote into ``folder``."""
    template = folder / "CarRentalDataStack.template.json"
    template.write_text(json.dumps({"Resources": resources}))
    manifest = json.loads((folder / "manifest.json").read_text())
    stack = {"type": "aws:cloudformation:stack", "properties": {"templateFile": template.name}}
    manifest["artifacts"]["CarRentalDataStack"] = stack
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return template


def test_a_stacks_template_is_the_file_its_assembly_names_and_a_stack_it_names_not_is_refused(
    factory: AwsFactory, dev_env: EnvConfig, tmp_path: Path
) -> None:
    """An app whose construct id is not its stack name writes <id>.template.json: the manifest says which file is the
    stack's, where <name>.template.json (a file an earlier synthesis left) was deployed. A stack the manifest lists
    none of: refused, nothing changed."""
    folder = tmp_path / "assembly"
    folder.mkdir()
    stale = {"Resources": {"Stale": {"Type": "AWS::SQS::Queue", "Properties": {"QueueName": "stale"}}}}
    for name in ("CarRentalDataStack", "CarRentalAuthStack"):
        (folder / f"{name}.template.json").write_text(json.dumps(stale))
    made = {"Resources": {"Queue": {"Type": "AWS::SQS::Queue", "Properties": {"QueueName": "jobs"}}}}
    (folder / "DataDev.template.json").write_text(json.dumps(made))
    properties = {"stackName": "CarRentalDataStack", "templateFile": "DataDev.template.json"}
    manifest = {"artifacts": {"DataDev": {"type": "aws:cloudformation:stack", "properties": properties}}}
    (folder / "manifest.json").write_text(json.dumps(manifest))

    def run(stack: str) -> RunReport:
        clock = FakeClock()
        ctx = Context(Mock(), dev_env, factory, clock, Reporter(io.StringIO(), tty=False, clock=clock), Mock())
        return Executor(ctx).execute(Plan("dev", (DeployStack(stack, str(folder / f"{stack}.template.json")),)))

    assert run("CarRentalDataStack").ok
    cfn = factory.client("cloudformation")
    resources = cfn.describe_stack_resources(StackName="CarRentalDataStack")["StackResources"]
    assert [r["LogicalResourceId"] for r in resources] == ["Queue"]
    refused = run("CarRentalAuthStack")
    assert refused.error is not None and refused.error.exit_code == 2
    assert refused.error.message.startswith("the CDK app makes no stack CarRentalAuthStack: the cloud assembly in ")
    assert "CarRentalAuthStack" not in [s["StackName"] for s in cfn.list_stacks()["StackSummaries"]]


def test_a_template_synthesized_again_by_another_command_since_the_run_s_synthesis_is_not_deployed(
    factory: AwsFactory, dev_env: EnvConfig, tmp_path: Path
) -> None:
    """inv diff --env dev (other sources, settings or credentials) synthesized cdk.out/dev again while inv deploy.auto
    --env dev ran between its synth step and its stack's deploy: the other command's template was deployed."""
    folder = tmp_path / "assembly"
    folder.mkdir()
    template = folder / "CarRentalDataStack.template.json"
    template.write_text(json.dumps({"Resources": {"Queue": {"Type": "AWS::SQS::Queue"}}}))
    properties = {"stackName": "CarRentalDataStack", "templateFile": template.name}
    manifest = {"artifacts": {"Data": {"type": "aws:cloudformation:stack", "properties": properties}}}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    clock = FakeClock()
    ctx = Context(Mock(), dev_env, factory, clock, Reporter(io.StringIO(), tty=False, clock=clock), Mock())
    ctx.synthesized[str(template.resolve())] = hashlib.sha256(template.read_bytes()).hexdigest()
    template.write_text(json.dumps({"Resources": {"Topic": {"Type": "AWS::SNS::Topic"}}}))  # the other's synthesis
    report = Executor(ctx).execute(Plan("dev", (DeployStack("CarRentalDataStack", str(template)),)))
    assert report.error is not None and report.error.exit_code == 2
    assert report.error.message.startswith("CarRentalDataStack.template.json changed after this run synthesized it")
    assert factory.client("cloudformation").list_stacks()["StackSummaries"] == []


@dataclass(frozen=True)
class SynthesizeAgain(Step):
    """Another command of the checkout synthesizing the environment again, between this run's steps."""

    name: ClassVar[str] = "another-synthesis"
    artifacts_only: ClassVar[bool] = True
    path: str  # a template, the manifest
    content: str  # written there anew

    def describe(self) -> str:
        return f"{self.path} written again"

    def run(self, ctx: Context) -> Outcome:
        Path(self.path).write_text(self.content)
        return Outcome.done("written again")


def test_a_runs_synthesis_hands_its_templates_digests_to_its_stack_deploy(
    factory: AwsFactory, dev_env: EnvConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The synth step records what it left (its templates' SHA-256) in the run's context; the deploy-stack step after
    it checks the file against it: the same file deploys, one written again between them is refused."""
    folder = tmp_path / "cdk.out" / "dev"
    template = folder / "CarRentalDataStack.template.json"

    def synthesize(config: Any, env: EnvConfig, **kwargs: Any) -> synth.Synthesis:
        folder.mkdir(parents=True, exist_ok=True)
        template.write_text(json.dumps({"Resources": {"Queue": {"Type": "AWS::SQS::Queue"}}}))
        properties = {"stackName": "CarRentalDataStack", "templateFile": template.name}
        manifest = {"artifacts": {"Data": {"type": "aws:cloudformation:stack", "properties": properties}}}
        (folder / "manifest.json").write_text(json.dumps(manifest))
        templates = {"CarRentalDataStack": template}
        return synth.Synthesis(folder, templates, False, 0.1, digests=synth.digests_of(folder, templates))

    monkeypatch.setattr(synth, "synthesize", synthesize)

    def run(*between: Step) -> RunReport:
        clock = FakeClock()
        ctx = Context(Mock(), dev_env, factory, clock, Reporter(io.StringIO(), tty=False, clock=clock), Mock())
        steps = (Synthesize(str(folder)), *between, DeployStack("CarRentalDataStack", str(template)))
        return Executor(ctx).execute(Plan("dev", steps))

    other = json.dumps({"Resources": {"Topic": {"Type": "AWS::SNS::Topic"}}})
    refused = run(SynthesizeAgain(str(template), other))
    assert refused.error is not None
    assert refused.error.message.startswith("CarRentalDataStack.template.json changed after this run synthesized it")
    # the stack's tags, protection and topics are the manifest's: one written again is refused too
    tagged = {"stackName": "CarRentalDataStack", "templateFile": template.name, "tags": {"Owner": "other"}}
    manifest = json.dumps({"artifacts": {"Data": {"type": "aws:cloudformation:stack", "properties": tagged}}})
    refused = run(SynthesizeAgain(str(folder / "manifest.json"), manifest))
    assert refused.error is not None
    assert refused.error.message.startswith("manifest.json changed after this run synthesized it")
    assert factory.client("cloudformation").list_stacks()["StackSummaries"] == []
    assert run().ok


def test_a_later_stack_whose_task_definition_names_a_missing_secret_is_refused_before_the_run_changes_anything(
    factory: AwsFactory, dev_env: EnvConfig, tmp_path: Path
) -> None:
    """A run that deploys the data stack, then the Fargate stack (deploy.auto's levels), whose revision names a
    missing SSM parameter: refused before the data stack is deployed (exit 2, nothing changed), where the Fargate
    stack's own check refused it after the data stack had changed; so when the data stack makes another parameter,
    its name spelled out or worked out here (Fn::Sub of its stack's name). When it could make this one (its name
    worked out only as it deploys), the data stack is deployed and the Fargate stack's own check judges, after it;
    when it makes this one, both are deployed."""
    fargate = DeployStack("CarRentalFargateStack", str(secret_template(tmp_path)))
    queue = {"Queue": {"Type": "AWS::SQS::Queue", "Properties": {"QueueName": "jobs"}}}

    def run(data: Path) -> RunReport:
        clock = FakeClock()
        ctx = Context(Mock(), dev_env, factory, clock, Reporter(io.StringIO(), tty=False, clock=clock), Mock())
        return Executor(ctx).execute(Plan("dev", (DeployStack("CarRentalDataStack", str(data)), fargate)))

    report = run(data_template(tmp_path, queue))
    assert report.error is not None and report.error.exit_code == 2 and not report.changed_live
    assert report.error.message.startswith("CarRentalFargateStack would register a task definition that names what")
    assert report.error.message.endswith(
        "(SSM parameter arn:aws:ssm:eu-west-1:123456789012:parameter/stack-key): not found. Nothing was changed"
    )
    assert [r.status for r in report.records] == ["not run", "not run"]
    assert factory.client("cloudformation").list_stacks()["StackSummaries"] == []  # the data stack too

    def parameter(name: Any) -> dict[str, Any]:
        return {"Key": {"Type": "AWS::SSM::Parameter", "Properties": {"Name": name, "Type": "String", "Value": "v"}}}

    report = run(data_template(tmp_path, {**queue, **parameter("/other")}))  # another parameter: refused first
    assert [r.status for r in report.records] == ["not run", "not run"] and not report.changed_live

    worked_out = parameter({"Fn::Sub": "/${AWS::StackName}-key"})  # another, worked out here: refused first
    report = run(data_template(tmp_path, {**queue, **worked_out}))
    assert [r.status for r in report.records] == ["not run", "not run"] and not report.changed_live

    not_here = parameter({"Fn::GetAtt": ["Queue", "QueueName"]})  # it could be this one: the stack's own check
    report = run(data_template(tmp_path, {**queue, **not_here}))
    assert [r.status for r in report.records] == ["done", "failed"], report.error
    assert report.error is not None and report.error.exit_code == 1 and report.changed_live

    report = run(data_template(tmp_path, {**queue, **parameter("/stack-key")}))  # it makes it
    assert [r.status for r in report.records] == ["done", "done"], report.error


def test_the_apps_revision_after_a_stack_is_refused_before_the_run_changes_anything(
    factory: AwsFactory, dev_env: EnvConfig, tmp_path: Path
) -> None:
    """deploy.auto of the data stack and the app, whose live task definition names a parameter that does not exist:
    register-taskdef's check is made before the data stack deploys (exit 2, nothing changed), where it refused once
    the stack had deployed (and the image was pushed beside it). A data stack that makes that parameter: both run.
    With the Fargate stack before it, the stack's template is what the revision is made from: left to its check."""
    parameter = f"arn:aws:ssm:{dev_env.region}:{factory.account()}:parameter/app-key"
    create_service(factory, {"secrets": [{"name": "API_KEY", "valueFrom": parameter}]})
    put_image(factory, "abcdef123456")
    register = RegisterTaskDef(
        dev_env.cluster,
        dev_env.service,
        dev_env.container,
        registry.repository_uri(factory),
        "abcdef123456",
        "abcdef123456",
    )
    secret_template(tmp_path)  # the cloud assembly the data stack's template goes into
    queue = {"Queue": {"Type": "AWS::SQS::Queue", "Properties": {"QueueName": "jobs"}}}

    def run(*steps: Step) -> RunReport:
        clock = FakeClock()
        ctx = Context(Mock(), dev_env, factory, clock, Reporter(io.StringIO(), tty=False, clock=clock), Mock())
        return Executor(ctx).execute(Plan("dev", steps))

    report = run(DeployStack("CarRentalDataStack", str(data_template(tmp_path, queue))), register)
    assert report.error is not None and report.error.exit_code == 2 and not report.changed_live
    assert report.error.message.startswith("the new revision of car-rental-service's task definition (from car-rental-")
    assert f"(SSM parameter {parameter}): not found" in report.error.message
    assert [r.status for r in report.records] == ["not run", "not run"]
    assert factory.client("cloudformation").list_stacks()["StackSummaries"] == []

    fargate = DeployStack("CarRentalFargateStack", str(tmp_path / "CarRentalFargateStack.template.json"))
    assert isinstance(fargate.as_earlier(), references.Earlier)
    register.preflight(Mock(spec=Context, env=dev_env, aws=factory), (fargate,))  # its own check judges

    making = {
        "Key": {"Type": "AWS::SSM::Parameter", "Properties": {"Name": "/app-key", "Type": "String", "Value": "v"}}
    }
    report = run(DeployStack("CarRentalDataStack", str(data_template(tmp_path, {**queue, **making}))), register)
    assert [r.status for r in report.records] == ["done", "done"], report.error


def test_a_preview_says_what_a_stacks_task_definition_names_that_does_not_exist(
    project: Path, factory: AwsFactory, dev_env: EnvConfig, tmp_path: Path
) -> None:
    """inv diff and deploy.auto's dry run show, under the stack's changes, the refusal its deploy would meet: in the
    text, the JSON and --markdown's Needs attention; nothing once the parameter is there."""
    template = secret_template(tmp_path)

    def previewed() -> tuple[str, Any]:
        runtime = quiet_runtime(project)
        found = stack_previewed(runtime, factory, dev_env, "CarRentalFargateStack", template, {})
        shown = show_preview(runtime, dev_env, "CarRentalFargateStack", *found)
        assert isinstance(runtime.stderr, io.StringIO)
        return runtime.stderr.getvalue(), shown

    said, shown = previewed()
    parameter = f"arn:aws:ssm:{dev_env.region}:{factory.account()}:parameter/stack-key"
    missing = f"secret API_KEY of container backend (SSM parameter {parameter}): not found"
    assert shown.json["missing"] == [missing]
    assert (
        "⛔ its task definition names what does not exist, so none of its tasks would start (a deploy of it is "
        f"refused): {missing}"
    ) in said
    assert shown.section.attention == (
        f"CarRentalFargateStack: its task definition names what does not exist: {missing} (a deploy refuses it)",
    )
    factory.client("ssm").put_parameter(Name="/stack-key", Value="k", Type="SecureString")
    said, shown = previewed()
    assert shown.json["missing"] == [] and "⛔" not in said


def test_a_preview_says_apart_what_a_stack_deployed_before_it_in_the_run_could_make(
    project: Path, factory: AwsFactory, dev_env: EnvConfig, tmp_path: Path
) -> None:
    """inv diff of the data stack and the Fargate stack, whose revision names a parameter the data stack could make
    (it makes SSM parameters): not said refused, since deploy.auto checks it once the data stack is deployed, but
    said as not there yet, in the text, the JSON (``missing_yet``) and what a reviewer must not miss. A data stack
    that makes none: refused, as before."""
    runtime = quiet_runtime(project)

    def made_by(body: str) -> Callable[[str, str], bool]:
        earlier = [references.Earlier(body, "CarRentalDataStack", {})]
        return references.could_make(earlier, region=dev_env.region, account=factory.account())

    found = stack_previewed(runtime, factory, dev_env, "CarRentalFargateStack", secret_template(tmp_path), {})
    parameter = f"arn:aws:ssm:{dev_env.region}:{factory.account()}:parameter/stack-key"
    missing = f"secret API_KEY of container backend (SSM parameter {parameter}): not found"
    making = json.dumps({"Resources": {"Key": {"Type": "AWS::SSM::Parameter"}}})
    shown = show_preview(runtime, dev_env, "CarRentalFargateStack", *found, made_before=made_by(making))
    assert shown.json["missing"] == [] and shown.json["missing_yet"] == [missing]
    said = runtime.stderr.getvalue()  # type: ignore[attr-defined]
    assert (
        "⛔" not in said
        and (
            "⚠️  its task definition names what does not exist yet, which a stack deployed before it in the same run "
            f"could make (a deploy checks it once they are deployed): {missing}"
        )
        in said
    )
    assert shown.section.attention == (
        f"CarRentalFargateStack: its task definition names what does not exist yet: {missing} (a stack deployed "
        "before it must make it)",
    )
    other = json.dumps({"Resources": {"Table": {"Type": "AWS::DynamoDB::Table"}}})
    shown = show_preview(runtime, dev_env, "CarRentalFargateStack", *found, made_before=made_by(other))
    assert shown.json["missing"] == [missing] and shown.json["missing_yet"] == []


EXPORT = "CarRentalDataStack:ApiKeyParameter"
IMPORTED = {"Fn::ImportValue": {"Fn::Sub": "CarRentalDataStack:ApiKey${Kind}"}}  # resolved to EXPORT


def imported_template(tmp_path: Path) -> Path:
    """:func:`secret_template` whose secret is imported from another stack's export (its name an Fn::Sub of a
    parameter's default)."""
    template = secret_template(tmp_path, IMPORTED)
    body = json.loads(template.read_text())
    body["Parameters"] = {"Kind": {"Type": "String", "Default": "Parameter"}}
    template.write_text(json.dumps(body))
    return template


def export_stack(cfn: Any, value: str) -> None:
    """A stack that exports ``value`` as :data:`EXPORT`."""
    template = {
        "Resources": {
            "Marker": {"Type": "AWS::SSM::Parameter", "Properties": {"Name": "/marker", "Type": "String", "Value": "m"}}
        },
        "Outputs": {"ApiKeyParameter": {"Value": value, "Export": {"Name": EXPORT}}},
    }
    cfn.create_stack(StackName="CarRentalDataStack", TemplateBody=json.dumps(template))


def listed_exports(factory: AwsFactory) -> list[str]:
    """The ListExports calls the factory's CloudFormation client will make, one entry each."""
    calls: list[str] = []
    factory.client("cloudformation").meta.events.register(
        "before-call.cloudformation.ListExports", lambda **_: calls.append("ListExports")
    )
    return calls


def test_what_a_stacks_task_definition_imports_from_another_stack_is_read_through_the_exports(
    factory: AwsFactory, dev_env: EnvConfig, tmp_path: Path
) -> None:
    """The secret comes from the data stack's export: with no such export, the deploy is refused naming it (before
    CloudFormation refuses it less plainly); once exported, the SSM parameter it names is checked as a spelled-out
    one is (refused while missing), and nothing is missing once it is there. The exports are read once, and again
    only when what is remembered lacks one (another deploy made it) or a stack changed through the command's client
    since; never for a template that imports nothing."""
    clock = FakeClock()
    ctx = Context(Mock(), dev_env, factory, clock, Reporter(io.StringIO(), tty=False, clock=clock), Mock())
    step = DeployStack("CarRentalFargateStack", str(imported_template(tmp_path)))
    listed = listed_exports(factory)

    with pytest.raises(UsageError) as refused:
        step.run(ctx)
    assert refused.value.exit_code == 2
    assert refused.value.message == (
        "CarRentalFargateStack would register a task definition that names what does not exist, so none of its "
        f"tasks would start: export {EXPORT}: not exported by any stack. Nothing was changed"
    )
    assert len(listed) == 1

    parameter = f"arn:aws:ssm:{dev_env.region}:{factory.account()}:parameter/stack-key"
    export_stack(boto3.client("cloudformation", region_name=dev_env.region), parameter)  # another deploy's
    with pytest.raises(UsageError) as refused:
        step.run(ctx)
    assert refused.value.message == (
        "CarRentalFargateStack would register a task definition that names what does not exist, so none of its "
        f"tasks would start: secret API_KEY of container backend (SSM parameter {parameter}): not found. Nothing "
        "was changed"
    )
    assert len(listed) == 2  # read anew: what was remembered lacked the export

    # moto's change sets do not resolve Fn::ImportValue: the check alone, as the step makes it, from here on
    factory.client("ssm").put_parameter(Name="/stack-key", Value="k", Type="SecureString")
    body = imported_template(tmp_path).read_text()
    found = stack_chain.template_references(factory, dev_env, "CarRentalFargateStack", body, {})
    assert found is not None and (found.checked, found.missing, found.unchecked) == (1, (), ())
    assert len(listed) == 2  # no stack changed through this client since the last read: the exports remembered

    factory.client("cloudformation").delete_stack(StackName="CarRentalDataStack")  # through this client: forgotten
    found = stack_chain.template_references(factory, dev_env, "CarRentalFargateStack", body, {})
    assert found is not None and found.missing == (f"export {EXPORT}: not exported by any stack",)
    assert len(listed) == 3

    spelled_out = secret_template(tmp_path).read_text()
    found = stack_chain.template_references(factory, dev_env, "CarRentalFargateStack", spelled_out, {})
    assert found is not None and found.missing == () and len(listed) == 3  # nothing imported: no read


def test_a_template_whose_exports_may_not_be_read_says_what_it_imports_as_not_checked(
    factory: AwsFactory, dev_env: EnvConfig, tmp_path: Path
) -> None:
    """ListExports refused (AccessDenied, as the Stubber plays it): what the template imports is not checked, and
    said so, and the deploy is not refused for it. A refusal is not remembered: the next check reads again, every
    page of the exports."""
    body = imported_template(tmp_path).read_text()
    with Stubber(factory.client("cloudformation")) as stub:
        stub.add_client_error("list_exports", service_error_code="AccessDenied", http_status_code=403)
        found = stack_chain.template_references(factory, dev_env, "CarRentalFargateStack", body, {})
        assert found is not None
        assert (found.missing, found.unchecked) == ((), (f"export {EXPORT}: this caller may not read it",))
        assert references.said_unchecked(found) == f"; not checked: export {EXPORT}: this caller may not read it"

        parameter = f"arn:aws:ssm:{dev_env.region}:{factory.account()}:parameter/stack-key"
        first = {"ExportingStackId": "data", "Name": "Other", "Value": "x"}
        stub.add_response("list_exports", {"Exports": [first], "NextToken": "page-2"})
        exported = {"ExportingStackId": "data", "Name": EXPORT, "Value": parameter}
        stub.add_response("list_exports", {"Exports": [exported]}, {"NextToken": "page-2"})
        found = stack_chain.template_references(factory, dev_env, "CarRentalFargateStack", body, {})
        stub.assert_no_pending_responses()
    assert found is not None and found.unchecked == ()
    assert found.missing == (f"secret API_KEY of container backend (SSM parameter {parameter}): not found",)


def test_a_preview_of_a_stack_importing_an_export_a_stack_before_it_adds_says_so(
    project: Path, factory: AwsFactory, dev_env: EnvConfig, tmp_path: Path
) -> None:
    """CDK's new cross-stack reference: the data stack's template gains an output exporting a value, which the
    Fargate stack's imports. inv diff previews the data stack as its outputs alone changing (its change set lists no
    resource), and the Fargate stack, whose change set CloudFormation refuses until the export exists, as waiting for
    the stack deployed before it in the run: neither fails the diff. An import no stack of the run exports is said so,
    as what a deploy refuses."""
    runtime = quiet_runtime(project)
    queue = {"Queue": {"Type": "AWS::SQS::Queue", "Properties": {"QueueName": "jobs"}}}
    cfn = factory.client("cloudformation")
    for stack in ("CarRentalDataStack", "CarRentalFargateStack"):
        cfn.create_stack(StackName=stack, TemplateBody=json.dumps({"Resources": queue}))
    data = tmp_path / "data.template.json"
    export = {"Value": {"Fn::GetAtt": ["Queue", "Arn"]}, "Export": {"Name": "Data:QueueArn"}}
    data.write_text(json.dumps({"Resources": queue, "Outputs": {"QueueArn": export}}))
    found = stack_previewed(runtime, factory, dev_env, "CarRentalDataStack", data, {})
    assert found[0] == [] and found[3] == ("+ QueueArn (export Data:QueueArn)",)
    shown = show_preview(runtime, dev_env, "CarRentalDataStack", *found)
    assert shown.json["outputs"] == ["+ QueueArn (export Data:QueueArn)"]
    said = runtime.stderr.getvalue()  # type: ignore[attr-defined]
    assert "only its outputs change (no resource does): + QueueArn (export Data:QueueArn)" in said

    fargate = tmp_path / "fargate.template.json"
    imported = {"Type": "AWS::SQS::Queue", "Properties": {"QueueName": {"Fn::ImportValue": "Data:QueueArn"}}}
    fargate.write_text(json.dumps({"Resources": {**queue, "Other": imported}}))
    stack = cfn.describe_stacks(StackName="CarRentalFargateStack")
    with Stubber(cfn) as stub:  # moto makes the change set; CloudFormation fails it so, for the missing export
        stub.add_response("describe_stacks", stack)
        arn = "arn:aws:cloudformation:eu-west-1:123456789012:changeSet/preview/1"
        stub.add_response("create_change_set", {"Id": arn, "StackId": stack["Stacks"][0]["StackId"]})
        reason = "No export named Data:QueueArn found."
        stub.add_response("describe_change_set", {"ChangeSetId": arn, "Status": "FAILED", "StatusReason": reason})
        stub.add_response("delete_change_set", {})
        found = stack_previewed(runtime, factory, dev_env, "CarRentalFargateStack", fargate, {})
        stub.assert_no_pending_responses()
    assert isinstance(found[0], NoPreview) and found[0].export == "Data:QueueArn"
    earlier = [references.Earlier(data.read_text(), "CarRentalDataStack", {})]
    made = references.could_make(earlier, region=dev_env.region, account=factory.account())
    shown = show_preview(runtime, dev_env, "CarRentalFargateStack", *found, made_before=made)
    said = runtime.stderr.getvalue()  # type: ignore[attr-defined]
    assert (
        "no preview yet: it imports Data:QueueArn, which a stack deployed before it in the same run exports "
        "(CloudFormation makes its change set once that stack is deployed)"
    ) in said
    assert shown.section.attention == () and shown.json["no_preview"].startswith("No export named Data:QueueArn")
    shown = show_preview(runtime, dev_env, "CarRentalFargateStack", *found)
    assert "⛔ no preview: it imports Data:QueueArn, which no stack exports (a deploy of it is refused)" in (
        runtime.stderr.getvalue()  # type: ignore[attr-defined]
    )
    assert shown.section.attention == (
        "CarRentalFargateStack: it imports Data:QueueArn, which no stack exports: a deploy of it is refused",
    )


def test_a_drift_aware_preview_says_what_it_found_and_names_the_command_only_for_drift(
    project: Path, dev_env: EnvConfig
) -> None:
    """inv diff --drift: the line under a stack's table sums up its drift, with the command that puts it back when
    there is any; a stack with neither changes nor drift says so."""
    stack = {"StackStatus": "UPDATE_COMPLETE"}
    command = "(inv deploy.stack CarRentalApiStack --env dev --revert-drift)"
    memory = PropertyChange(
        "MemorySize", before="1024", after="256", change_type="Modify", deployed="256", drifted=True
    )
    cases = {
        "drifted": [Change("Login", "AWS::Lambda::Function", "Modify", "False", details=(memory,), drift="MODIFIED")],
        "template only": [Change("Queue", "AWS::SQS::Queue", "Modify", "False", drift="IN_SYNC")],
        "nothing": [],
    }
    said = {}
    for case, changes in cases.items():
        runtime = quiet_runtime(project)
        show_preview(runtime, dev_env, "CarRentalApiStack", changes, stack, changed=False, drift=True)
        said[case] = runtime.stderr.getvalue()  # type: ignore[attr-defined]
    assert f"  drift back to the template: Login.MemorySize {command}\n" in said["drifted"]
    assert "  no drift found in the resources it changes or read\n" in said["template only"]
    assert command not in said["template only"]
    assert "  nothing to change, and no drift (nothing changed outside CloudFormation that it reads)" in said["nothing"]
