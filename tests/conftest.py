"""Shared fixtures: a throwaway project (git repo + deploy.toml + backend) and a valid config."""

from __future__ import annotations

import functools
import gc
import io
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from unittest.mock import Mock

import boto3
import pytest

from deploykit import commands
from deploykit.config import load_config
from sandbox.ext import alarms, provisioned

# deploykit's fixtures for plugin authors (check_context, fake_http, fake_aws...): the built-in plugins' tests and
# the sample team plugin's use them as any plugin's tests would.
pytest_plugins = ["deploykit.testing", "tests.sandbox_fixtures"]

REPO = Path(__file__).resolve().parents[1]

# moto's EC2 loads its ~1,300 default AMIs into each (account, region) backend it makes, which ECS, ELBv2 and
# CloudFormation make too: a quarter of the time of the tests other than integration (780 s of test time, 595 s
# without), and none of them asks for an AMI
os.environ.setdefault("MOTO_EC2_LOAD_DEFAULT_AMIS", "false")

# moto has no provisioned concurrency (its GetProvisionedConcurrencyConfig answered 404 "Not yet implemented"), which
# every move of a Lambda alias asks about: the sandbox's API, allocations ready at once
provisioned.routes()
# nor composite alarms (PutCompositeAlarm) nor an alarm's history (DescribeAlarmHistory), which the alarm watch reads:
# the sandbox's
alarms.routes()

# moto's backends, botocore's clients and each test's fixtures make objects by the million: at Python's default
# thresholds (700, 10, 10) a quarter of a functional test run went in garbage collection (30.6 s of 125 s for three
# moto modules, most in full collections), 78.5 s in all at these, for twice the memory (342 -> 729 MB)
gc.set_threshold(20_000, 50, 20)

SANDBOX_TOML = """
default_env = "sandbox"

[build]
context = "backend"
base_image = "python:3.11-slim"
extra_ca_dir = "{ca_dir}"

[build.base]
name = "deploykit/python-base:3.11-bookworm"

[environments.sandbox]
region = "us-east-1"
endpoint_url = "http://127.0.0.1:4566"
registry = "{registry}"
base_image = "deploykit/python-base:3.11-bookworm"
cluster = "car-rental-cluster"
service = "car-rental-service"
container = "backend"
repository = "{repository}"
wait_timeout = 60
poll_interval = 0.5

[environments.sandbox.stacks]
registry = "CarRentalRegistryStack"
data = "CarRentalDataStack"
auth = "CarRentalAuthStack"
fargate = "CarRentalFargateStack"
api = "CarRentalApiStack"

[environments.dev]
region = "eu-west-1"
cluster = "car-rental-cluster"
service = "car-rental-service"
container = "backend"
repository = "car-rental-backend"

[environments.dev.stacks]
registry = "CarRentalRegistryStack"
data = "CarRentalDataStack"
auth = "CarRentalAuthStack"
fargate = "CarRentalFargateStack"
api = "CarRentalApiStack"
"""


def free_ports(count: int) -> list[int]:
    """``count`` ports of 127.0.0.1 nothing listens on, all different: bound at once, then closed (a port closed
    before the next one is bound may be handed out again: CI once saw two settings given the same one)."""
    held = [socket.socket() for _ in range(count)]
    try:
        for each in held:
            each.bind(("127.0.0.1", 0))
        return [each.getsockname()[1] for each in held]
    finally:
        for each in held:
            each.close()


def one_stack_app(stack: str, body: str) -> str:
    """The text of a CDK app (cdk/app.py) of one stack, ``stack``, in the environment's account and region (the
    context deploy.toml's settings give it), bootstrapless as the project's; ``body`` adds to the stack (``stack``,
    ``cdk``, ``ec2`` and ``context`` are there) and ends with ``app.synth()``."""
    head = f"""
import aws_cdk as cdk
from aws_cdk import aws_ec2 as ec2

app = cdk.App()
context = app.node.try_get_context
stack = cdk.Stack(
    app,
    "{stack}",
    env=cdk.Environment(account=context("account"), region=context("region")),
    synthesizer=cdk.BootstraplessSynthesizer(),
)
"""
    return head + body


def git(root: Path, *args: str) -> str:
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@example.invalid",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@example.invalid",
    }
    return subprocess.run(["git", *args], cwd=root, check=True, capture_output=True, text=True, env=env).stdout


def make_project(
    root: Path, *, registry: str = "127.0.0.1:5000", repository: str = "car-rental-backend", ca_dir: str = ""
) -> Path:
    """A git repository with deploy.toml and a copy of backend/, one commit."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "deploy.toml").write_text(SANDBOX_TOML.format(registry=registry, repository=repository, ca_dir=ca_dir))
    shutil.copytree(
        REPO / "backend",
        root / "backend",
        ignore=shutil.ignore_patterns("__pycache__", "*.crt", ".pytest_cache"),
    )
    (root / ".gitignore").write_text(".sandbox/\n__pycache__/\n")
    git(root, "init", "-q", "-b", "main")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "initial")
    return root


@pytest.fixture(scope="session", autouse=True)
def session_record_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Module and session fixtures (a sandbox deployed once for many tests) read history records into a cache of
    the session's, never the user's ~/.cache; and the tests' deploys never append to the page of a CI job running
    them, nor put error annotations on it (the summary plugin; a test that wants either names its own)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DEPLOYKIT_CACHE_DIR", str(tmp_path_factory.mktemp("session-record-cache")))
        patch.delenv("GITHUB_STEP_SUMMARY", raising=False)
        patch.delenv("GITHUB_ACTIONS", raising=False)
        yield


@pytest.fixture(autouse=True)
def record_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Each test reads history records into a cache of its own (never the user's ~/.cache, never another test's);
    commands run in subprocesses inherit it."""
    root = tmp_path_factory.mktemp("record-cache")
    monkeypatch.setenv("DEPLOYKIT_CACHE_DIR", str(root))
    monkeypatch.delenv("DEPLOYKIT_NO_CACHE", raising=False)
    return root


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return make_project(tmp_path / "project")


def sandbox_client(project: Path, service: str) -> Any:
    """A boto3 client of ``service`` against the sandbox a test project's deploy.toml names."""
    env = load_config(project / "deploy.toml").environment()
    return boto3.client(
        service, endpoint_url=env.endpoint_url, region_name=env.region, aws_access_key_id="x", aws_secret_access_key="x"
    )


@functools.cache
def _real_client(service: str) -> Any:
    return boto3.client(service, region_name="eu-west-1", aws_access_key_id="x", aws_secret_access_key="x")


def aws_client(service: str) -> Mock:
    """A fake boto3 client of ``service`` for unit tests: ``Mock(spec=...)`` of a real one, so a call of an operation
    the service does not have (a typo, a renamed method) fails instead of answering a Mock."""
    return Mock(spec=_real_client(service))


def quiet_runtime(project: Path) -> commands.Runtime:
    """The commands' runtime for a test project, its output captured instead of printed."""
    return commands.Runtime(config_path=project / "deploy.toml", stdout=io.StringIO(), stderr=io.StringIO())


@pytest.fixture(scope="session")
def installed_team_plugin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tests/sample_plugin installed with pip into a folder of its own: a distribution with an entry point."""
    source = tmp_path_factory.mktemp("team-src") / "team-checks"
    shutil.copytree(REPO / "tests" / "sample_plugin", source, ignore=shutil.ignore_patterns("test_*", "__pycache__"))
    target = tmp_path_factory.mktemp("team-site")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "--target",
            str(target),
            str(source),
        ],
        check=True,
        capture_output=True,
    )
    return target
