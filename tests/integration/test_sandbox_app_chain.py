"""deploykit's app chain against the sandbox, exactly as against AWS (ECR token, ECS, ALB).

With a service created through the ECS API, ``inv build push register-taskdef roll-service wait-healthy``
ends with the new version answering through the ALB listener, and a client looping on the listener sees
no failed request during the rollout.
"""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import boto3
import docker
import pytest

from deploykit import commands
from deploykit.errors import StepFailed
from deploykit.git import current_revision
from sandbox.settings import Settings, load_settings
from tests.conftest import git, quiet_runtime
from tests.integration.sandbox_support import LoopingClient, create_app, running_sandbox, sandbox_project, version_of

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("base_image")]


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory, docker_engine: docker.DockerClient) -> Iterator[Path]:
    """A git checkout of the backend whose deploy.toml targets a private sandbox through its ECR."""
    root = sandbox_project(tmp_path_factory.mktemp("chain"), ("backend",))
    with running_sandbox(root):
        yield root


def run(project: Path, *stages: str) -> None:
    """Like `inv build push ...`: each task on its own, deriving its inputs from git and the environment."""
    for stage in stages:
        commands.app_chain([stage], runtime=quiet_runtime(project))


def test_the_app_chain_rolls_the_sandbox_service_with_no_failed_request(project: Path) -> None:
    settings: Settings = load_settings(project / "deploy.toml")
    kw = {
        "endpoint_url": settings.endpoint_url,
        "region_name": settings.region,
        "aws_access_key_id": "x",
        "aws_secret_access_key": "x",
    }
    ecr = boto3.client("ecr", **kw)
    ecr.create_repository(repositoryName="car-rental-backend", imageTagMutability="IMMUTABLE")

    # v1: built and pushed through the sandbox's ECR (token from GetAuthorizationToken), then the service
    run(project, "build", "push")
    v1 = current_revision(project)
    uri = ecr.describe_repositories(repositoryNames=["car-rental-backend"])["repositories"][0]["repositoryUri"]
    assert uri == f"127.0.0.1:{settings.registry_port}/car-rental-backend"
    images = ecr.describe_images(repositoryName="car-rental-backend")["imageDetails"]
    assert [d["imageTags"] for d in images] == [[v1.tag]]
    app = create_app(
        settings, "chain", f"{uri}:{v1.tag}", grace=30, cluster="car-rental-cluster", service="car-rental-service"
    )  # named as deploy.toml names them
    app.wait(lambda s: s["deployments"][0]["rolloutState"] == "COMPLETED" and s["runningCount"] == 2, timeout=120)
    assert version_of(app.listener_url) == v1.sha

    # v2: one source file changes and is committed; the five tasks, each alone, roll it out
    main = project / "backend" / "app" / "main.py"
    main.write_text(main.read_text() + "\n# v2\n")
    git(project, "commit", "-qam", "v2")
    v2 = current_revision(project)
    client = LoopingClient(app.listener_url).start()
    started = time.monotonic()
    run(project, "build", "push", "register-taskdef", "roll-service", "wait-healthy")
    chain_seconds = time.monotonic() - started
    time.sleep(1)
    client.stop()
    print(
        f"\napp chain on the sandbox (build → wait-healthy): {chain_seconds:.1f}s, "
        f"{len(client.answers)} requests during it, {sum(client.failures.values())} failed"
    )
    assert not client.failures, client.failures
    assert version_of(app.listener_url) == v2.sha
    service = app.describe()
    assert len(service["deployments"]) == 1 and service["runningCount"] == 2

    # the same commit again: every step finds its result already there
    report = commands.app_chain(
        ["build", "push", "register-taskdef", "roll-service", "wait-healthy"], runtime=quiet_runtime(project)
    )
    assert report is not None
    assert {r.step: r.status for r in report.records} == {
        "base-image": "skipped",
        "build": "skipped",
        "push": "skipped",
        "register-taskdef": "skipped",
        "roll-service": "skipped",
        "wait-healthy": "done",
    }


def test_a_crashing_release_fails_wait_healthy_with_the_reason_and_the_old_version_serves(project: Path) -> None:
    settings = load_settings(project / "deploy.toml")
    listener = f"http://127.0.0.1:{next(iter(settings.listener_ports.values()))}"
    live = version_of(listener)
    server = project / "backend" / "app" / "server.py"
    text = server.read_text()
    assert "def main() -> None:\n" in text
    server.write_text(
        text.replace("def main() -> None:\n", "def main() -> None:\n    raise SystemExit(4)  # crashes at start\n")
    )
    git(project, "commit", "-qam", "crash")
    client = LoopingClient(listener).start()
    with pytest.raises(StepFailed) as err:
        run(project, "build", "push", "register-taskdef", "roll-service", "wait-healthy")
    client.stop()
    assert "did not become healthy" in err.value.message
    assert "exit code 4" in err.value.message
    assert not client.failures, client.failures
    assert version_of(listener) == live


def test_the_rest_of_what_the_app_needs_answers_as_on_aws(project: Path) -> None:
    """S3 presigned uploads against the sandbox, DynamoDB, Cognito's JWKS, SSM, CloudWatch alarms."""
    settings = load_settings(project / "deploy.toml")
    kw = {
        "endpoint_url": settings.endpoint_url,
        "region_name": settings.region,
        "aws_access_key_id": "x",
        "aws_secret_access_key": "x",
    }
    s3 = boto3.client("s3", **kw)
    s3.create_bucket(Bucket="kyc-documents")
    url = s3.generate_presigned_url(
        "put_object",
        Params={"Bucket": "kyc-documents", "Key": "kyc/u1/doc.pdf", "ContentType": "application/pdf"},
        ExpiresIn=60,
    )
    assert url.startswith(settings.endpoint_url)
    put = urllib.request.Request(url, data=b"%PDF-1.7 test", method="PUT", headers={"Content-Type": "application/pdf"})
    with urllib.request.urlopen(put, timeout=10) as answer:
        assert answer.status == 200
    head = s3.head_object(Bucket="kyc-documents", Key="kyc/u1/doc.pdf")
    assert head["ContentLength"] == 13 and head["ContentType"] == "application/pdf"

    ddb = boto3.client("dynamodb", **kw)
    ddb.create_table(
        TableName="cars",
        BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[{"AttributeName": "car_id", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "car_id", "KeyType": "HASH"}],
    )
    ddb.put_item(TableName="cars", Item={"car_id": {"S": "c1"}, "model": {"S": "Zoe"}})
    assert ddb.get_item(TableName="cars", Key={"car_id": {"S": "c1"}})["Item"]["model"]["S"] == "Zoe"

    idp = boto3.client("cognito-idp", **kw)
    pool = idp.create_user_pool(PoolName="users")["UserPool"]["Id"]
    with urllib.request.urlopen(f"{settings.endpoint_url}/{pool}/.well-known/jwks.json", timeout=5) as answer:
        keys = json.loads(answer.read())["keys"]
    assert keys and keys[0]["kty"] == "RSA" and keys[0]["alg"] == "RS256"

    ssm = boto3.client("ssm", **kw)
    ssm.put_parameter(Name="/car-rental/feature", Value="on", Type="String")
    assert ssm.get_parameter(Name="/car-rental/feature")["Parameter"]["Value"] == "on"

    cloudwatch = boto3.client("cloudwatch", **kw)
    cloudwatch.put_metric_alarm(
        AlarmName="backend-5xx",
        MetricName="HTTPCode_Target_5XX_Count",
        Namespace="AWS/ApplicationELB",
        Statistic="Sum",
        Period=60,
        EvaluationPeriods=1,
        Threshold=5,
        ComparisonOperator="GreaterThanThreshold",
    )
    alarms = cloudwatch.describe_alarms(AlarmNames=["backend-5xx"])["MetricAlarms"]
    assert alarms[0]["StateValue"] in ("OK", "INSUFFICIENT_DATA", "ALARM")
