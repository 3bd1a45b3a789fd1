"""Invoke tasks: thin wrappers that parse options and call deploykit.

Run them through ./dev (it prepares .venv and the Docker engine): ``./dev inv --list``.
Tasks compose in one call, each deriving its inputs from git and the environment:

    inv build push register-taskdef roll-service wait-healthy
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any, TypeVar

from invoke.collection import Collection
from invoke.context import Context
from invoke.exceptions import Exit
from invoke.tasks import task

from deploykit import commands
from deploykit.errors import DeployKitError

F = TypeVar("F", bound=Callable[..., Any])

COMMON_HELP = {
    "env": "environment from deploy.toml (default: $DEPLOYKIT_ENV, else default_env)",
    "dry-run": "print the plan and change nothing",
    "json": "print the result as JSON on stdout (people's output stays on stderr)",
    "allow-dirty": "build from uncommitted changes (the tag then says -dirty- and hashes the diff)",
}
CHAIN_HELP = COMMON_HELP
BASE_HELP = {k: v for k, v in COMMON_HELP.items() if k != "allow-dirty"} | {
    "force": "rebuild even when the image is present and current",
}


def reports_errors(func: F) -> F:
    """Print a DeployKitError's message and next step, and exit with its code (1 failed, 2 bad input)."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except DeployKitError as exc:
            print(f"❌ {exc.message}", file=sys.stderr)
            if exc.next_step:
                print(f"  → next: {exc.next_step}", file=sys.stderr)
            raise Exit(code=exc.exit_code) from None
        except KeyboardInterrupt:
            print("⚠️  interrupted", file=sys.stderr)
            raise Exit(code=130) from None

    return wrapper  # type: ignore[return-value]


def _chain(stages: tuple[str, ...], env: str | None, dry_run: bool, json_: bool, allow_dirty: bool) -> None:
    commands.app_chain(stages, env=env, dry_run=dry_run, as_json=json_, allow_dirty=allow_dirty)


@task(help=CHAIN_HELP)
@reports_errors
def build(
    c: Context, env: str | None = None, dry_run: bool = False, json_: bool = False, allow_dirty: bool = False
) -> None:
    """Build the backend image with the Docker SDK, tagged with the git SHA."""
    _chain(("build",), env, dry_run, json_, allow_dirty)


@task(help=CHAIN_HELP)
@reports_errors
def push(
    c: Context, env: str | None = None, dry_run: bool = False, json_: bool = False, allow_dirty: bool = False
) -> None:
    """Push the image of this commit to the environment's registry (skipped when already there)."""
    _chain(("push",), env, dry_run, json_, allow_dirty)


@task(help=CHAIN_HELP)
@reports_errors
def register_taskdef(
    c: Context, env: str | None = None, dry_run: bool = False, json_: bool = False, allow_dirty: bool = False
) -> None:
    """Register a task-definition revision that runs this commit's image (only the image changes)."""
    _chain(("register-taskdef",), env, dry_run, json_, allow_dirty)


@task(help=CHAIN_HELP)
@reports_errors
def roll_service(
    c: Context, env: str | None = None, dry_run: bool = False, json_: bool = False, allow_dirty: bool = False
) -> None:
    """Point the ECS service at the revision that runs this commit's image."""
    _chain(("roll-service",), env, dry_run, json_, allow_dirty)


@task(help=CHAIN_HELP)
@reports_errors
def wait_healthy(
    c: Context, env: str | None = None, dry_run: bool = False, json_: bool = False, allow_dirty: bool = False
) -> None:
    """Wait until this commit's revision is PRIMARY, COMPLETED and healthy behind the ALB."""
    _chain(("wait-healthy",), env, dry_run, json_, allow_dirty)


@task(help=BASE_HELP)
@reports_errors
def base_image(
    c: Context, env: str | None = None, force: bool = False, dry_run: bool = False, json_: bool = False
) -> None:
    """Build the local Debian/Python base image (mmdebstrap | docker import), cached."""
    commands.base_image(env=env, force=force, dry_run=dry_run, as_json=json_)


@task(name="app", help=CHAIN_HELP)
@reports_errors
def deploy_app(
    c: Context, env: str | None = None, dry_run: bool = False, json_: bool = False, allow_dirty: bool = False
) -> None:
    """The whole app chain in one plan: build → push → register-taskdef → roll-service → wait-healthy."""
    _chain(
        ("build", "push", "register-taskdef", "roll-service", "wait-healthy"),
        env,
        dry_run,
        json_,
        allow_dirty,
    )


deploy = Collection("deploy")
deploy.add_task(deploy_app)

ns = Collection(build, push, register_taskdef, roll_service, wait_healthy, base_image, deploy)
