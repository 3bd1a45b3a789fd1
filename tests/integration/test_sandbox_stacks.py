"""deploy.full, deploy.stack and destroy on a private sandbox: the stacks of cdk/ really deployed and running."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import boto3
import docker
import pytest

from deploykit import commands
from deploykit.config import load_config
from sandbox import lifecycle
from sandbox.settings import load_settings
from tests.conftest import git, quiet_runtime
from tests.integration.sandbox_support import sandbox_project

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("base_image")]


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory, docker_engine: docker.DockerClient) -> Iterator[Path]:
    """A checkout of the whole platform (backend, lambda, cdk) whose deploy.toml targets a private sandbox."""
    root = sandbox_project(
        tmp_path_factory.mktemp("stacks"), ("backend", "lambda", "cdk"), gitignore=".sandbox/\n__pycache__/\ncdk.out/\n"
    )
    settings = load_settings(root / "deploy.toml")
    lifecycle.up(settings, root / "deploy.toml")
    yield root
    lifecycle.down(settings)


def http(method: str, url: str, body: dict[str, str] | None = None) -> tuple[int, dict[str, object]]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=15) as answer:
            return answer.status, json.loads(answer.read() or b"{}")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def wait_http_ok(url: str, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if http("GET", url)[0] == 200:
                return
        except OSError:
            pass
        assert time.monotonic() < deadline, f"{url} never answered 200"
        time.sleep(0.5)


def test_deploy_full_brings_up_every_stack_then_does_nothing_the_second_time(project: Path) -> None:
    started = time.monotonic()
    report = commands.deploy_full(runtime=quiet_runtime(project))
    first = time.monotonic() - started
    assert report is not None and report.ok
    endpoints = commands.endpoints(runtime=quiet_runtime(project))
    wait_http_ok(endpoints.alb_url.rstrip("/") + "/health")
    # a login through the API stage reaches login_handler: a malformed body is refused by it with 400 ...
    status, body = http("POST", endpoints.login_url, {"username": "nobody"})
    assert status == 400, body
    # ... and a real user of the stack's pool gets tokens
    config = load_config(project / "deploy.toml")
    env = config.environment()
    idp = boto3.client(
        "cognito-idp",
        endpoint_url=env.endpoint_url,
        region_name=env.region,
        aws_access_key_id="x",
        aws_secret_access_key="x",
    )
    idp.admin_create_user(UserPoolId=endpoints.user_pool_id, Username="tester@example.com", MessageAction="SUPPRESS")
    idp.admin_set_user_password(
        UserPoolId=endpoints.user_pool_id, Username="tester@example.com", Password="Sandbox-Passw0rd!", Permanent=True
    )
    status, body = http(
        "POST", endpoints.login_url, {"username": "tester@example.com", "password": "Sandbox-Passw0rd!"}
    )
    assert status == 200 and "access_token" in body, body

    started = time.monotonic()
    again = commands.deploy_full(runtime=quiet_runtime(project))
    second = time.monotonic() - started
    assert again is not None and again.ok
    statuses = {c.step + ":" + c.detail.split(":")[0]: c.status for r in again.records for c in (r.children or [r])}
    assert all(status == "skipped" for status in statuses.values()), statuses
    print(f"\ndeploy.full on a fresh sandbox: {first:.1f}s; again with no change: {second:.1f}s")


def test_a_change_to_one_stack_is_applied_by_deploy_stack_alone(project: Path) -> None:
    source = project / "cdk" / "stacks" / "fargate_stack.py"
    text = source.read_text()
    marker = '"PORT": str(CONTAINER_PORT),'
    assert marker in text, "the Fargate stack sets PORT for the backend container"
    source.write_text(text.replace(marker, '"DEPLOYKIT_TEST": "1", ' + marker, 1))
    git(project, "commit", "-qam", "fargate: one more env var")
    started = time.monotonic()
    report = commands.deploy_stack("CarRentalFargateStack", runtime=quiet_runtime(project))
    seconds = time.monotonic() - started
    assert report is not None and report.ok
    assert report.records[-1].status == "done", report.records[-1]
    print(f"\none-stack update (deploy.stack CarRentalFargateStack): {seconds:.1f}s")
    config = load_config(project / "deploy.toml")
    env = config.environment()
    ecs = boto3.client(
        "ecs", endpoint_url=env.endpoint_url, region_name=env.region, aws_access_key_id="x", aws_secret_access_key="x"
    )
    service = ecs.describe_services(cluster=env.cluster, services=[env.service])["services"][0]
    taskdef = ecs.describe_task_definition(taskDefinition=service["taskDefinition"])["taskDefinition"]
    names = {e["name"] for e in taskdef["containerDefinitions"][0]["environment"]}
    assert "DEPLOYKIT_TEST" in names
    # the image stayed the one that is live: never silently something else
    image = taskdef["containerDefinitions"][0]["image"]
    assert image.endswith(":" + git(project, "rev-parse", "--short=12", "HEAD~1").strip())


def test_destroy_keeps_data_stacks_unless_asked(project: Path) -> None:
    config = load_config(project / "deploy.toml")
    env = config.environment()
    cfn = boto3.client(
        "cloudformation",
        endpoint_url=env.endpoint_url,
        region_name=env.region,
        aws_access_key_id="x",
        aws_secret_access_key="x",
    )

    def alive() -> set[str]:
        stacks = cfn.describe_stacks()["Stacks"]
        return {s["StackName"] for s in stacks if s["StackStatus"] != "DELETE_COMPLETE"}

    commands.destroy(runtime=quiet_runtime(project))
    assert alive() == {"CarRentalRegistryStack", "CarRentalDataStack", "CarRentalAuthStack"}
    commands.destroy(include_data=True, runtime=quiet_runtime(project))
    assert alive() == set()
