"""Helpers for the sandbox's integration tests: a private sandbox, tiny test images, the app's ECS/ALB shape.

Each test session runs its own sandbox on free ports under a temporary root, so it never collides with a
developer's sandbox on the default ports.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import tarfile
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import docker

from deploykit import commands
from sandbox import lifecycle
from sandbox.settings import Settings, load_settings
from tests.conftest import REPO, git, quiet_runtime
from tests.integration.conftest import free_port

BASE = "deploykit/python-base:3.11-bookworm"

# A tiny app: /health and /version; MODE=crash exits at start, MODE=crash-later 1.5 s after it (once registered
# with its target group), MODE=sick answers /health with 500; /slow/N answers after N seconds.
TEST_APP = """\
import json, os, sys, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
VERSION = os.environ.get("VERSION", "?")
if os.environ.get("MODE") == "crash":
    print("crashing on purpose", flush=True)
    sys.exit(3)
if os.environ.get("MODE") == "crash-later":
    time.sleep(1.5)
    print("crashing later on purpose", flush=True)
    sys.exit(3)
class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args): pass
    def do_GET(self):
        sick = os.environ.get("MODE") == "sick" and self.path == "/health"
        if self.path.startswith("/slow/"):
            time.sleep(float(self.path.rsplit("/", 1)[1]))
        body = json.dumps({"version": VERSION, "path": self.path}).encode()
        self.send_response(500 if sick else 200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
ThreadingHTTPServer((os.environ.get("HOST", "127.0.0.1"), int(os.environ.get("PORT", "8000"))), Handler).serve_forever()
"""


def build_test_image(client: docker.DockerClient, tag: str) -> str:
    """A tiny image FROM the local base (no pip, builds in about a second)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, text in (
            ("Dockerfile", f'FROM {BASE}\nCOPY app.py /app.py\nCMD ["python3", "/app.py"]\n'),
            ("app.py", TEST_APP),
        ):
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    buffer.seek(0)
    client.images.build(fileobj=buffer, custom_context=True, tag=tag, network_mode="host", rm=True)
    return tag


def sandbox_toml(ports: dict[str, int], listener: int, task_first: int, *, ecr: bool = False) -> str:
    """A deploy.toml for a private sandbox. ``ecr``: push through the sandbox's ECR (token, front) like on AWS;
    otherwise straight to the distribution registry (no credentials)."""
    registry = "" if ecr else f'registry = "127.0.0.1:{ports["backend"]}"'
    return f"""
default_env = "sandbox"

[build]
context = "backend"
extra_ca_dir = "/usr/local/share/ca-certificates"

[sandbox]
aws_port = {ports["aws"]}
registry_port = {ports["registry"]}
registry_backend_port = {ports["backend"]}
api_port = {ports["api"]}
task_ports = [{task_first}, {task_first + 199}]
listener_ports = {{ 80 = {listener} }}

[sandbox.task_environment]
COGNITO_JWKS_URL = "{{endpoint_url}}/{{COGNITO_USER_POOL_ID}}/.well-known/jwks.json"

[environments.sandbox]
region = "us-east-1"
endpoint_url = "http://127.0.0.1:{ports["aws"]}"
{registry}
base_image = "{BASE}"
cluster = "car-rental-cluster"
service = "car-rental-service"
container = "backend"
repository = "car-rental-backend"
wait_timeout = 120
poll_interval = 0.5

[environments.sandbox.endpoints]
alb_url = "http://127.0.0.1:{listener}"
api_url = "http://127.0.0.1:{ports["api"]}/restapis/{{ApiId}}/{{ApiStageName}}/_user_request_/"
jwks_url = "http://127.0.0.1:{ports["aws"]}/{{UserPoolId}}/.well-known/jwks.json"

[environments.sandbox.stacks]
registry = "CarRentalRegistryStack"
data = "CarRentalDataStack"
auth = "CarRentalAuthStack"
fargate = "CarRentalFargateStack"
api = "CarRentalApiStack"
"""


def private_sandbox_files(root: Path, *, ecr: bool = False) -> Path:
    """deploy.toml for a sandbox on free ports under ``root``; returns its path."""
    ports = {name: free_port() for name in ("aws", "registry", "backend", "api")}
    listener = free_port()
    task_first = 21000 + (free_port() % 40) * 200  # 21000-28999: apart from the ephemeral range and free_port()'s
    root.mkdir(parents=True, exist_ok=True)
    path = root / "deploy.toml"
    path.write_text(sandbox_toml(ports, listener, task_first, ecr=ecr))
    return path


def aws_client(settings: Settings, service: str) -> Any:
    """A boto3 client of the sandbox."""
    return boto3.client(
        service,  # type: ignore[call-overload]
        endpoint_url=settings.endpoint_url,
        region_name=settings.region,
        aws_access_key_id="sandbox",
        aws_secret_access_key="sandbox",
    )


def clients(settings: Settings) -> tuple[Any, Any, Any]:
    return aws_client(settings, "ec2"), aws_client(settings, "ecs"), aws_client(settings, "elbv2")


@dataclass
class App:
    """The Fargate stack's shape, made through the APIs: ALB, target group, listener, cluster, service."""

    settings: Settings
    cluster: str
    service: str
    target_group: str
    listener_url: str
    ecs: Any
    elbv2: Any
    subnet: str
    security_group: str
    family: str = "car-rental-backend"

    def task_definition(
        self, image: str, log_group: str = "", *, secrets: dict[str, str] | None = None, **env: str
    ) -> str:
        """A revision running ``image`` with ``env`` and ``secrets`` (name → valueFrom); its output goes to
        ``log_group`` (awslogs) when named."""
        environment = [{"name": k, "value": v} for k, v in env.items()]
        named = [{"name": k, "valueFrom": v} for k, v in (secrets or {}).items()]
        logging = (
            {"logDriver": "awslogs", "options": {"awslogs-group": log_group, "awslogs-stream-prefix": "app"}}
            if log_group
            else None
        )
        answer = self.ecs.register_task_definition(
            family=self.family,
            networkMode="awsvpc",
            requiresCompatibilities=["FARGATE"],
            cpu="256",
            memory="512",
            containerDefinitions=[
                {
                    "name": "backend",
                    "image": image,
                    "essential": True,
                    "portMappings": [{"containerPort": 8000}],
                    "environment": environment,
                    **({"secrets": named} if named else {}),
                    **({"logConfiguration": logging} if logging else {}),
                }
            ],
        )
        return str(answer["taskDefinition"]["taskDefinitionArn"])

    def delete(self) -> None:
        """Delete the service and the load balancer (its listener frees the local port)."""
        self.ecs.delete_service(cluster=self.cluster, service=self.service, force=True)
        for lb in self.elbv2.describe_load_balancers()["LoadBalancers"]:
            for listener in self.elbv2.describe_listeners(LoadBalancerArn=lb["LoadBalancerArn"])["Listeners"]:
                self.elbv2.delete_listener(ListenerArn=listener["ListenerArn"])
            self.elbv2.delete_load_balancer(LoadBalancerArn=lb["LoadBalancerArn"])

    def describe(self) -> dict[str, Any]:
        return dict(self.ecs.describe_services(cluster=self.cluster, services=[self.service])["services"][0])

    def wait(self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 90) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            service = self.describe()
            if predicate(service):
                return service
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"timed out; deployments: {service['deployments']}; "
                    f"events: {[e['message'] for e in service['events'][:8]]}"
                )
            time.sleep(0.3)


def create_app(
    settings: Settings,
    name: str,
    image_v1: str,
    desired: int = 2,
    grace: int = 0,
    cluster: str | None = None,
    service: str | None = None,
) -> App:
    ec2, ecs, elbv2 = clients(settings)
    vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    subnets = [
        ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.0.{i}.0/24", AvailabilityZone=f"us-east-1{z}")["Subnet"]["SubnetId"]
        for i, z in ((1, "a"), (2, "b"))
    ]
    sg = ec2.create_security_group(GroupName=f"{name}-sg", Description="svc", VpcId=vpc)["GroupId"]
    lb = elbv2.create_load_balancer(Name=f"{name}-alb", Subnets=subnets, SecurityGroups=[sg])["LoadBalancers"][0]
    tg = elbv2.create_target_group(
        Name=f"{name}-tg",
        Protocol="HTTP",
        Port=8000,
        VpcId=vpc,
        TargetType="ip",
        HealthCheckPath="/health",
        HealthCheckIntervalSeconds=5,
        HealthyThresholdCount=2,
        UnhealthyThresholdCount=2,
        HealthCheckTimeoutSeconds=4,
    )["TargetGroups"][0]["TargetGroupArn"]
    elbv2.modify_target_group_attributes(
        TargetGroupArn=tg, Attributes=[{"Key": "deregistration_delay.timeout_seconds", "Value": "3"}]
    )
    listener_port = next(iter(settings.listener_ports.values()))
    elbv2.create_listener(
        LoadBalancerArn=lb["LoadBalancerArn"],
        Protocol="HTTP",
        Port=80,
        DefaultActions=[{"Type": "forward", "TargetGroupArn": tg}],
    )
    cluster = cluster or f"{name}-cluster"
    ecs.create_cluster(clusterName=cluster)
    app = App(
        settings,
        cluster,
        service or f"{name}-service",
        tg,
        f"http://127.0.0.1:{listener_port}",
        ecs,
        elbv2,
        subnets[0],
        sg,
        family=f"{name}-backend",
    )
    first = app.task_definition(image_v1, VERSION="v1")
    ecs.create_service(
        cluster=cluster,
        serviceName=app.service,
        taskDefinition=first,
        desiredCount=desired,
        launchType="FARGATE",
        networkConfiguration={"awsvpcConfiguration": {"subnets": [subnets[0]], "securityGroups": [sg]}},
        loadBalancers=[{"targetGroupArn": tg, "containerName": "backend", "containerPort": 8000}],
        healthCheckGracePeriodSeconds=grace,
        deploymentConfiguration={
            "maximumPercent": 200,
            "minimumHealthyPercent": 100,
            "deploymentCircuitBreaker": {"enable": True, "rollback": True},
        },
    )
    return app


@dataclass
class LoopingClient:
    """Requests the listener in a loop; records every answer's version and every failure."""

    url: str
    answers: list[str] = field(default_factory=list)
    failures: Counter[str] = field(default_factory=Counter)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> LoopingClient:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.answers.append(version_of(self.url))
            except (OSError, ValueError, KeyError) as exc:
                self.failures[str(exc)[:80]] += 1
            time.sleep(0.02)

    def stop(self) -> LoopingClient:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=10)
        return self


def version_of(url: str) -> str:
    """What answers at ``url``: the test app's VERSION, or the backend's git SHA."""
    with urllib.request.urlopen(url + "/version", timeout=5) as answer:
        body = json.loads(answer.read())
    return str(body.get("version") or body["git_sha"])


@contextmanager
def deployed_sandbox_project(root: Path, prepare: Callable[[Path], None] | None = None) -> Iterator[Path]:
    """A git clone of the app (backend, lambda, cdk) under ``root`` — changed by ``prepare`` first, when given —
    with its private sandbox up and ``deploy.full`` done; the sandbox goes down when the block ends."""
    project = sandbox_project(root, ("backend", "lambda", "cdk"), gitignore=".sandbox/\n__pycache__/\ncdk.out/\n")
    if prepare is not None:
        prepare(project)
    with running_sandbox(project):
        report = commands.deploy_full(runtime=quiet_runtime(project))
        assert report is not None and report.ok
        yield project


@contextmanager
def running_sandbox(project: Path) -> Iterator[Settings]:
    """The private sandbox of ``project`` (made by :func:`sandbox_project`) up for the block; when it ends, the
    layers its registry holds of the backend's image are kept for the projects made after it, and it goes down."""
    settings = load_settings(project / "deploy.toml")
    lifecycle.up(settings, project / "deploy.toml")
    try:
        yield settings
    finally:
        try:
            _link_tree(_registry_v2(project), _layer_store(project), LAYER_PARTS)
        finally:
            lifecycle.down(settings)


# The backend image's layers, as the private sandboxes' registries held them: each new project's registry starts
# with them (hard links; the blobs and the repository's layer links, never its manifests or tags, so its ECR lists no
# image until one is pushed). Its first push then finds each layer there ("Layer already exists": docker asks the
# registry for the compressed digest it sent before) instead of compressing and sending 210 MB again: 9-10 s of each
# module's first deploy.
BACKEND = "car-rental-backend"
LAYER_PARTS = ("blobs", f"repositories/{BACKEND}/_layers")  # what is linked, under the registry's v2/ folder


def _registry_v2(project: Path) -> Path:
    return project / ".sandbox" / "registry" / "data" / "docker" / "registry" / "v2"


def _layer_store(project: Path) -> Path:
    return project.parent / "backend-layers"  # beside the session's projects (pytest's base temporary directory)


def _link_tree(source: Path, target: Path, parts: tuple[str, ...]) -> None:
    """Hard links in ``target`` to the files of ``source``'s ``parts`` (paths under it) it lacks."""
    for part in parts:
        for path in (source / part).rglob("*"):
            made = target / path.relative_to(source)
            if path.is_file() and not made.exists():
                made.parent.mkdir(parents=True, exist_ok=True)
                os.link(path, made)


def sandbox_project(root: Path, parts: tuple[str, ...], *, gitignore: str = ".sandbox/\n__pycache__/\n") -> Path:
    """A git checkout under ``root`` with copies of the repository's ``parts`` and a private sandbox's deploy.toml
    (pushing through the sandbox's ECR, as on AWS)."""
    private_sandbox_files(root, ecr=True)
    for part in parts:
        shutil.copytree(
            REPO / part,
            root / part,
            ignore=shutil.ignore_patterns("__pycache__", "*.crt", "tests", "cdk.out", ".pytest_cache"),
        )
    (root / ".gitignore").write_text(gitignore)
    _link_tree(_layer_store(root), _registry_v2(root), LAYER_PARTS)
    git(root, "init", "-q", "-b", "main")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "initial")
    return root
