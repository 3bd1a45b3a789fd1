"""inv deploy.stack against moto: one stack of an environment, planned with its inputs as they are live."""

from __future__ import annotations

import io
import json
from pathlib import Path
from unittest.mock import Mock

import pytest

from deploykit import commands, stack_chain
from deploykit.aws import AwsFactory
from deploykit.clock import FakeClock
from deploykit.config import EnvConfig
from deploykit.errors import UsageError
from deploykit.output import Reporter
from deploykit.plan import Context
from deploykit.stack_chain import DeployStack
from tests.functional.conftest import create_service
from tests.functional.test_endpoints import create_stack


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
    runtime = commands.Runtime(config_path=project / "deploy.toml", stdout=io.StringIO(), stderr=io.StringIO())
    commands.deploy_stack(
        "CarRentalFargateStack", env="dev", image_tag="abcdef123456", dry_run=True, as_json=True, runtime=runtime
    )
    assert isinstance(runtime.stdout, io.StringIO)
    deploys = json.loads(runtime.stdout.getvalue())["deploys"]
    assert {d["component"]: d["sha"] for d in deploys}["app"] == "abcdef123456"
    runtime = commands.Runtime(config_path=project / "deploy.toml", stdout=io.StringIO(), stderr=io.StringIO())
    commands.deploy_stack(
        "CarRentalDataStack", env="dev", image_tag="abcdef123456", dry_run=True, as_json=True, runtime=runtime
    )
    assert isinstance(runtime.stdout, io.StringIO)
    assert [d["component"] for d in json.loads(runtime.stdout.getvalue())["deploys"]] == ["stack:data"]


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
    assert deploy("c0ffee123456") == "done"  # an image built for it
