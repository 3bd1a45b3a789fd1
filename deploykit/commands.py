"""The bodies of the invoke tasks: load the configuration, plan, then execute or describe.

``tasks.py`` only parses options and calls these; they raise :class:`~deploykit.errors.DeployKitError`
(with its exit code) and never call ``sys.exit`` themselves.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import botocore.exceptions
import docker.errors

from deploykit import git, planner, registry
from deploykit.aws import AwsFactory, translate_error
from deploykit.clock import Clock, SystemClock
from deploykit.config import Config, EnvConfig, load_config
from deploykit.errors import DeployKitError, StepFailed
from deploykit.images import docker_client
from deploykit.output import Reporter
from deploykit.plan import Context, Executor, Plan, RunReport, describe_plan, dumps


@dataclass
class Runtime:
    """Everything a command needs from the outside world; tests replace any part of it."""

    config_path: Path | None = None
    stdout: TextIO = field(default_factory=lambda: sys.stdout)
    stderr: TextIO = field(default_factory=lambda: sys.stderr)
    clock: Clock = field(default_factory=SystemClock)
    aws_factory: Callable[[EnvConfig], AwsFactory] = AwsFactory
    docker_factory: Callable[[], Any] = docker_client


def _translator(env: EnvConfig) -> Callable[[Exception], DeployKitError | None]:
    def translate(exc: Exception) -> DeployKitError | None:
        if isinstance(exc, botocore.exceptions.BotoCoreError | botocore.exceptions.ClientError):
            return translate_error(exc, env)
        if isinstance(exc, docker.errors.DockerException):
            return StepFailed(f"the Docker engine failed: {exc}", next_step="check 'docker info', then rerun")
        return None

    return translate


def _load(runtime: Runtime, env_name: str | None) -> tuple[Config, EnvConfig]:
    config = load_config(runtime.config_path)
    return config, config.environment(env_name)


def run_plan(
    runtime: Runtime,
    config: Config,
    env: EnvConfig,
    plan: Plan,
    *,
    dry_run: bool,
    as_json: bool,
    aws: AwsFactory | None = None,
) -> RunReport | None:
    """Describe (dry run) or execute ``plan``; print JSON when asked; raise the failure if any."""
    if dry_run:
        if as_json:
            runtime.stdout.write(dumps({"dry_run": True, **plan.to_json()}) + "\n")
        else:
            runtime.stderr.write(describe_plan(plan) + "\n")
        return None
    reporter = Reporter(runtime.stderr, clock=runtime.clock)
    ctx = Context(config, env, aws or runtime.aws_factory(env), runtime.clock, reporter, runtime.docker_factory)
    report = Executor(ctx, _translator(env)).execute(plan)
    if as_json:
        runtime.stdout.write(dumps(report.to_json()) + "\n")
    if report.error is not None:
        raise report.error
    return report


def app_chain(
    stages: Sequence[str],
    *,
    env: str | None = None,
    dry_run: bool = False,
    as_json: bool = False,
    allow_dirty: bool = False,
    runtime: Runtime | None = None,
) -> RunReport | None:
    """Plan and run the app-chain ``stages`` (any of build, push, register-taskdef, roll-service, wait-healthy)."""
    runtime = runtime or Runtime()
    config, environment = _load(runtime, env)
    revision = git.current_revision(config.root, allow_dirty=allow_dirty)
    aws = runtime.aws_factory(environment)
    uri = None
    if planner.needs_repository(stages):
        try:
            uri = registry.repository_uri(aws)
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
            raise translate_error(exc, environment) from None
    plan = planner.app_chain_plan(config, environment, revision, stages, repository_uri=uri)
    return run_plan(runtime, config, environment, plan, dry_run=dry_run, as_json=as_json, aws=aws)


def base_image(
    *,
    env: str | None = None,
    force: bool = False,
    dry_run: bool = False,
    as_json: bool = False,
    runtime: Runtime | None = None,
) -> RunReport | None:
    """Make sure the environment's base image is on the Docker engine (build the local one if needed)."""
    runtime = runtime or Runtime()
    config, environment = _load(runtime, env)
    plan = planner.base_image_plan(config, environment, force=force)
    return run_plan(runtime, config, environment, plan, dry_run=dry_run, as_json=as_json)
