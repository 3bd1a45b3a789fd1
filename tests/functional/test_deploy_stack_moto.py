"""inv deploy.stack against moto: one stack of an environment, planned with its inputs as they are live."""

from __future__ import annotations

import io
import json
from pathlib import Path

from deploykit import commands
from deploykit.aws import AwsFactory
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
