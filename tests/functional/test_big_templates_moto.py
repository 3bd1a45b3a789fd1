"""A template over CloudFormation's 51,200 bytes for one sent inline (a CDK app's stack grows past it) is deployed
and previewed through S3, as the CDK CLI does: put once in the artifacts bucket under its hash, named by TemplateURL.
Against moto, which reads a TemplateURL from its own S3."""

from __future__ import annotations

import dataclasses
import io
import json
from pathlib import Path
from unittest.mock import Mock

import pytest

from deploykit import commands, synth
from deploykit.aws import AwsFactory
from deploykit.clock import FakeClock
from deploykit.commands import previews
from deploykit.config import EnvConfig, load_config
from deploykit.errors import UsageError
from deploykit.output import Reporter
from deploykit.plan import Context
from deploykit.stack_chain import STAGED_TEMPLATES, DeployStack, template_url
from tests.functional.conftest import asked
from tests.functional.test_endpoints import create_stack

BUCKET = "registry-artifacts-big"
STACK = "CarRentalFargateStack"


def big_template(topics: int) -> dict[str, object]:
    """Over the inline limit once minified: topics with long descriptions in their metadata."""
    note = "a description a real stack carries in its metadata, " * 40
    resources = {f"Topic{i}": {"Type": "AWS::SNS::Topic", "Metadata": {"note": note}} for i in range(topics)}
    return {"Resources": resources}


def write(tmp_path: Path, template: dict[str, object], name: str = STACK) -> Path:
    folder = tmp_path / f"assembly-{len(template['Resources'])}"  # type: ignore[arg-type]
    folder.mkdir()
    path = folder / f"{name}.template.json"
    path.write_text(json.dumps(template, indent=1))
    artifact = {"type": "aws:cloudformation:stack", "properties": {"stackName": name, "templateFile": path.name}}
    (folder / "manifest.json").write_text(json.dumps({"artifacts": {name: artifact}}))
    return path


@pytest.fixture
def ctx(factory: AwsFactory, dev_env: EnvConfig) -> Context:
    """dev with its registry stack (and so its artifacts bucket) deployed."""
    factory.client("s3").create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    create_stack(factory.client("cloudformation"), dev_env.stacks.registry, {"ArtifactsBucketName": BUCKET})
    clock = FakeClock()
    return Context(Mock(), dev_env, factory, clock, Reporter(io.StringIO(), tty=False, clock=clock), Mock())


def test_a_template_over_the_inline_limit_goes_through_s3_once_and_deploys(ctx: Context, tmp_path: Path) -> None:
    path = write(tmp_path, big_template(30))
    body = synth.template_body(path)
    assert synth.TEMPLATE_BODY_LIMIT < len(body) < synth.TEMPLATE_URL_LIMIT
    cfn, s3 = ctx.aws.client("cloudformation"), ctx.aws.client("s3")
    urls = asked(cfn, "CreateChangeSet", "TemplateURL")
    puts = asked(s3, "PutObject", "Key")

    assert DeployStack(STACK, str(path)).run(ctx).status == "done"
    [url] = urls
    [key] = [k for k in puts if k.startswith(STAGED_TEMPLATES)]
    assert url == f"https://s3.eu-west-1.amazonaws.com/{BUCKET}/{key}"
    assert key.startswith(f"{STAGED_TEMPLATES}{STACK}/") and key.endswith(".json")
    assert s3.get_object(Bucket=BUCKET, Key=key)["Body"].read().decode() == body
    resources = cfn.describe_stack_resources(StackName=STACK)["StackResources"]
    assert len(resources) == 30

    # the same template again: the conditional put finds it there, and the change set has nothing to do
    assert template_url(ctx.aws, ctx.env, STACK, body) == url
    assert [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix=STAGED_TEMPLATES)["Contents"]] == [key]
    # one that fits goes inline, as before
    small = synth.template_body(write(tmp_path, big_template(2)))
    assert template_url(ctx.aws, ctx.env, STACK, small) is None


def test_a_preview_of_a_big_template_goes_through_s3_too(ctx: Context, project: Path, tmp_path: Path) -> None:
    assert DeployStack(STACK, str(write(tmp_path, big_template(25)))).run(ctx).status == "done"
    urls = asked(ctx.aws.client("cloudformation"), "CreateChangeSet", "TemplateURL")
    described = asked(ctx.aws.client("cloudformation"), "DescribeStacks", "StackName")
    runtime = commands.Runtime(stdout=io.StringIO(), stderr=io.StringIO())
    found = previews.preview_stack(
        runtime, load_config(project / "deploy.toml"), ctx.aws, ctx.env, STACK, write(tmp_path, big_template(30)), {}
    )
    assert described.count(STACK) == 1  # the status printed and the preview's first look: one read
    added = sorted(c["logical_id"] for c in found["changes"] if c["action"] == "Add")
    assert added == [f"Topic{i}" for i in range(25, 30)] and len(urls) == 1  # (moto lists the others as Modify)
    assert len(ctx.aws.client("cloudformation").describe_stack_resources(StackName=STACK)["StackResources"]) == 25


def test_the_registry_stack_or_an_environment_without_its_bucket_cannot_take_a_big_template(
    factory: AwsFactory, dev_env: EnvConfig, tmp_path: Path
) -> None:
    body = synth.template_body(write(tmp_path, big_template(30)))
    with pytest.raises(UsageError, match=r"\(its artifacts bucket\) is not deployed") as no_bucket:
        template_url(factory, dev_env, STACK, body)
    assert no_bucket.value.exit_code == 2 and "inv deploy.stack CarRentalRegistryStack" in (
        no_bucket.value.next_step or ""
    )
    with pytest.raises(UsageError, match="it makes the artifacts bucket"):
        template_url(factory, dev_env, dev_env.stacks.registry, body)
    too_big = {"Resources": {"T": {"Type": "AWS::SNS::Topic", "Metadata": {"n": "x" * synth.TEMPLATE_URL_LIMIT}}}}
    with pytest.raises(UsageError, match="over CloudFormation's limit of 1,048,576 bytes"):
        synth.template_body(write(tmp_path, too_big, "Huge"))


def test_a_big_template_of_a_stack_not_deployed_yet_is_previewed_as_to_be_created(
    ctx: Context, project: Path, factory: AwsFactory, dev_env: EnvConfig, tmp_path: Path
) -> None:
    """A stack to be created takes no change set, so its big template needs no bucket: inv diff of an environment not
    deployed yet said the template could not go through S3 and ended (exit 2); with the bucket there, it put the
    template in it for nothing."""
    runtime = commands.Runtime(stdout=io.StringIO(), stderr=io.StringIO())
    config, path = load_config(project / "deploy.toml"), write(tmp_path, big_template(30))
    puts = asked(factory.client("s3"), "PutObject", "Key")
    assert previews.preview_stack(runtime, config, ctx.aws, dev_env, STACK, path, {})["changes"] is None
    assert puts == []
    bare = dataclasses.replace(dev_env, stacks=dataclasses.replace(dev_env.stacks, registry="NoRegistryStack"))
    assert previews.preview_stack(runtime, config, factory, bare, STACK, path, {})["changes"] is None
