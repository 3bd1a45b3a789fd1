"""Functional fixtures: moto in-process for ECR/ECS/ELBv2, and an AWS factory pointed at it."""

from __future__ import annotations

import contextlib
import io
import itertools
import json
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from unittest.mock import Mock

import boto3
import pytest
from moto import mock_aws

from deploykit import aws, commands
from deploykit.aws import AwsFactory
from deploykit.clock import FakeClock
from deploykit.config import EnvConfig, load_config
from deploykit.plan import Context, Outcome, Step

REGION = "eu-west-1"


def moto_runtime(
    project: Path,
    factory: AwsFactory,
    *,
    stdout: io.StringIO | None = None,
    clock: FakeClock | None = None,
) -> commands.Runtime:
    """A command's runtime on ``project``'s deploy.toml with ``factory``'s AWS (moto): its output kept (stdout,
    stderr), a fake clock, and no Docker engine (a command that reaches for one fails the test)."""
    return commands.Runtime(
        config_path=project / "deploy.toml",
        stdout=stdout or io.StringIO(),
        stderr=io.StringIO(),
        clock=clock or FakeClock(),
        aws_factory=lambda _env: factory,
        docker_factory=Mock(side_effect=AssertionError("this command must not touch Docker")),
    )


@pytest.fixture
def aws_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": REGION,
    }.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)


@pytest.fixture
def no_profiles(aws_credentials: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The test credentials alone: no AWS config or credentials file (so a profile deploy.toml names is not
    configured, as on a machine without it), no DEPLOYKIT_ENV."""
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.delenv("DEPLOYKIT_ENV", raising=False)


@pytest.fixture
def percentiles() -> Iterator[None]:
    """moto's CloudWatch with the sandbox's percentiles (GetMetricData's p90; moto alone has none), for the test
    alone."""
    # imported here: the sandbox's extensions (its package imports them all) only for the tests that ask
    from moto.cloudwatch.models import Statistics

    from sandbox.ext.service_metrics import allow_percentiles

    original = Statistics.get_statistics_for_type
    allow_percentiles()
    yield
    Statistics.get_statistics_for_type = original  # type: ignore[method-assign]


@pytest.fixture
def moto_aws(aws_credentials: None) -> Iterator[None]:
    with mock_aws():
        yield


@pytest.fixture
def dev_env(project: Path) -> EnvConfig:
    """The test project's "dev" environment: real-AWS shaped (no endpoint, no registry override)."""
    return load_config(project / "deploy.toml").environment("dev")


@pytest.fixture
def factory(moto_aws: None, dev_env: EnvConfig) -> AwsFactory:
    return AwsFactory(dev_env)


CONTAINER = {
    "name": "backend",
    "image": "123456789012.dkr.ecr.eu-west-1.amazonaws.com/car-rental-backend:old",
    "essential": True,
    "portMappings": [{"containerPort": 8000, "protocol": "tcp"}],
    "environment": [{"name": "TABLE_NAME", "value": "cars"}, {"name": "PORT", "value": "8000"}],
    "secrets": [{"name": "API_KEY", "valueFrom": "arn:aws:ssm:eu-west-1:123456789012:parameter/api-key"}],
    "healthCheck": {
        "command": ["CMD-SHELL", "curl -f http://localhost:8000/health"],
        "interval": 5,
        "timeout": 2,
        "retries": 2,
        "startPeriod": 10,
    },
    "logConfiguration": {
        "logDriver": "awslogs",
        "options": {
            "awslogs-group": "/ecs/car-rental",
            "awslogs-region": "eu-west-1",
            "awslogs-stream-prefix": "backend",
            "awslogs-create-group": "true",  # the tests that read its log make the group; register-taskdef needs none
        },
    },
}


def create_service(
    factory: AwsFactory,
    container: dict[str, Any] | None = None,
    *,
    service: dict[str, Any] | None = None,
    **taskdef: Any,
) -> dict[str, Any]:
    """The ECS side of CarRentalFargateStack, as moto can hold it (``taskdef``: more of its task definition,
    ``container``: more of its container's definition, ``service``: more of the service's)."""
    ecs = factory.client("ecs")
    ec2 = factory.client("ec2")
    vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.1.0/24")["Subnet"]["SubnetId"]
    sg = ec2.create_security_group(GroupName="svc", Description="svc", VpcId=vpc)["GroupId"]
    factory.client("ecr").create_repository(repositoryName="car-rental-backend")
    ecs.create_cluster(clusterName="car-rental-cluster")
    create_references(factory)
    td = ecs.register_task_definition(
        family="car-rental-backend",
        networkMode="awsvpc",
        requiresCompatibilities=["FARGATE"],
        cpu="256",
        memory="512",
        executionRoleArn="arn:aws:iam::123456789012:role/exec",
        taskRoleArn="arn:aws:iam::123456789012:role/task",
        containerDefinitions=[{**CONTAINER, **(container or {})}],
        tags=[{"key": "team", "value": "cars"}],
        **taskdef,
    )["taskDefinition"]
    ecs.create_service(
        cluster="car-rental-cluster",
        serviceName="car-rental-service",
        taskDefinition=td["taskDefinitionArn"],
        desiredCount=2,
        launchType="FARGATE",
        networkConfiguration={
            "awsvpcConfiguration": {"subnets": [subnet], "securityGroups": [sg], "assignPublicIp": "DISABLED"}
        },
        **(service or {}),
    )
    return dict(td)


def create_references(factory: AwsFactory) -> None:
    """What CONTAINER's task definition names, which register-taskdef checks (deploykit.references): its roles and
    its secret's SSM parameter (moto names the parameter of ``...:parameter/api-key`` ``/api-key``)."""
    iam = factory.client("iam")
    for role in ("exec", "task"):
        with contextlib.suppress(iam.exceptions.EntityAlreadyExistsException):
            iam.create_role(RoleName=role, AssumeRolePolicyDocument="{}")
    factory.client("ssm").put_parameter(Name="/api-key", Value="k", Type="SecureString", Overwrite=True)


def api_function(role_arn: str, **properties: Any) -> dict[str, Any]:
    """An ``AWS::Lambda::Function`` resource as the API stack holds one (its code inline, so moto's CloudFormation
    makes it), 256 MB, with ``properties`` more."""
    code = "def handler(event, context):\n    return {'statusCode': 200}\n"
    return {
        "Type": "AWS::Lambda::Function",
        "Properties": {
            "Code": {"ZipFile": code},
            "Handler": "handler.handler",
            "Runtime": "python3.11",
            "Role": role_arn,
            "MemorySize": 256,
            **properties,
        },
    }


def put_image(factory: AwsFactory, tag: str, *, repository: str = "car-rental-backend") -> None:
    manifest = (
        '{"schemaVersion": 2, "mediaType": "application/vnd.docker.distribution.manifest.v2+json", '
        '"config": {"digest": "sha256:' + "a" * 64 + '", "size": 1, '
        '"mediaType": "application/vnd.docker.container.image.v1+json"}, "layers": []}'
    )
    factory.client("ecr").put_image(repositoryName=repository, imageManifest=manifest, imageTag=tag)


def new_session() -> boto3.session.Session:
    return aws.new_session(region_name=REGION, aws_access_key_id="x", aws_secret_access_key="x")


ARTIFACTS_BUCKET = "registry-artifacts-1"


@pytest.fixture
def bucket(moto_aws: None, dev_env: EnvConfig) -> str:
    """The environment's artifacts bucket (history, live record, lock), named by its registry stack's outputs."""
    from tests.functional.test_endpoints import create_stack

    boto3.client("s3", region_name="eu-west-1").create_bucket(
        Bucket=ARTIFACTS_BUCKET, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"}
    )
    cfn = boto3.client("cloudformation", region_name="eu-west-1")
    create_stack(cfn, dev_env.stacks.registry, {"ArtifactsBucketName": ARTIFACTS_BUCKET})
    return ARTIFACTS_BUCKET


def held_together(client: Any, operations: str | tuple[str, ...], parties: int, *, passing: int = 0) -> None:
    """Hold the first ``parties`` calls of ``operations`` (one name or several) on ``client`` until all of them are
    in flight: calls made one after the other break the barrier, and the first fails with BrokenBarrierError.
    Later calls pass, and so do the first ``passing`` (calls made before those whose overlap is asserted)."""
    names = (operations,) if isinstance(operations, str) else operations
    held_across(parties, *((client, name) for name in names), passing=passing)


def held_across(parties: int, *calls: tuple[Any, str], passing: int = 0) -> None:
    """:func:`held_together` for (client, operation) pairs of several clients."""
    barrier = threading.Barrier(parties, timeout=10)
    count = itertools.count()

    def hold(**_: Any) -> None:  # None: no answer of its own, botocore sends the call (or the next handler answers)
        if passing <= next(count) < passing + parties:
            barrier.wait()

    for client, operation in calls:
        service = client.meta.service_model.service_id.hyphenize()
        client.meta.events.register(f"before-call.{service}.{operation}", hold)  # before a catch-all "before-call"


def held_each(*calls: tuple[Any, str] | tuple[Any, str, Callable[[dict[str, Any]], bool]]) -> None:
    """Hold the first call of each (client, operation[, which]) until one of each is in flight: each is one party of
    the barrier, so other calls of the same operations (another key, another function) cannot stand in for it, as
    they can with :func:`held_across`. ``which`` picks the call by its parameters (``lambda p: p["Key"] == ...``)."""
    barrier, lock = threading.Barrier(len(calls), timeout=10), threading.Lock()
    for call in calls:
        client, operation = call[0], call[1]
        which = call[2] if len(call) > 2 else None  # type: ignore[misc]
        taken: list[bool] = []  # the call held for this pair, once taken

        def hold(params: dict[str, Any], which: Any = which, taken: list[bool] = taken, **_: Any) -> None:
            with lock:
                mine = not taken and (which is None or which(params))
                if mine:
                    taken.append(True)
            if mine:
                barrier.wait()

        service = client.meta.service_model.service_id.hyphenize()
        client.meta.events.register(f"before-parameter-build.{service}.{operation}", hold)


def asked(client: Any, operation: str, param: str) -> list[str]:
    """The ``param`` of each ``operation`` call ``client`` makes from now on (e.g. each DescribeStacks' StackName)."""
    seen: list[str] = []
    service = client.meta.service_model.service_id.hyphenize()
    client.meta.events.register(
        f"before-parameter-build.{service}.{operation}", lambda params, **_: seen.append(params[param])
    )
    return seen


class Deploy(Step):
    """A step that deploys nothing but says it did, counting its runs: for what run_plan does around a plan."""

    name = "deploy"
    ran = 0

    def describe(self) -> str:
        return "deploy"

    def run(self, ctx: Context) -> Outcome:
        Deploy.ran += 1
        return Outcome.done("deployed")

    def inputs(self) -> dict[str, object]:
        return {}


def synthesized_as(monkeypatch: pytest.MonkeyPatch, parameters: dict[str, list[str]]) -> list[str]:
    """Synthesis faked: each stack named in ``parameters`` gets a template declaring those parameters (a stack takes
    the functions' code it declares, ``<Fn>CodeKey``); the synthesized out folders, in turn."""
    from deploykit.plan import Outcome
    from deploykit.stack_chain import Synthesize

    made: list[str] = []

    def run(self: Synthesize, ctx: object) -> Outcome:
        out = Path(self.out_dir)
        out.mkdir(parents=True, exist_ok=True)
        exclude = out.parents[1] / ".git" / "info" / "exclude"  # as the repository's .gitignore has cdk.out/
        if exclude.parent.is_dir() and "cdk.out/" not in (exclude.read_text() if exclude.exists() else ""):
            exclude.write_text((exclude.read_text() if exclude.exists() else "") + "cdk.out/\n")
        for stack, names in parameters.items():
            template = {"Parameters": {name: {"Type": "String"} for name in names}, "Resources": {}}
            (out / f"{stack}.template.json").write_text(json.dumps(template))
        made.append(str(out))
        return Outcome.done("synthesized (faked)")

    monkeypatch.setattr(Synthesize, "run", run)
    return made
