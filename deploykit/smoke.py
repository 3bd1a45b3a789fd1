"""Smoke: the checks every plugin registers, run against an environment's resolved endpoints.

``inv smoke`` runs them on their own; :class:`Smoke` is the same run as the last step of every deploy chain,
so a deploy is done when the app works, not when ECS says so. A plugin that failed to load shows up as a
failed row (its checks did not run), so a broken team plugin is noticed rather than silently skipped.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from deploykit.checks import Check, CheckContext, CheckResult, Http, run_checks, select, table
from deploykit.endpoints import resolve_endpoints
from deploykit.errors import StepFailed, UsageError
from deploykit.plan import Context, Outcome, Step
from deploykit.plugins import BLOCK_ENV, Plugins, get_plugin_manager
from deploykit.stacks import StackOutputs

if TYPE_CHECKING:
    from deploykit.aws import AwsFactory
    from deploykit.config import EnvConfig


def registered_checks(plugins: Plugins, env: EnvConfig) -> list[Check]:
    """Every check the loaded plugins register for ``env``, in plugin-name order."""
    checks: list[Check] = []
    for found in reversed(plugins.manager.hook.deploykit_register_checks(env=env)):  # pluggy answers LIFO
        for check in found or []:
            if not isinstance(check, Check):
                raise UsageError(
                    f"a plugin's deploykit_register_checks returned {type(check).__name__}, not a Check",
                    next_step="return a list of deploykit.checks.Check from the hook",
                )
            checks.append(check)
    return checks


def broken_plugin_results(plugins: Plugins) -> list[CheckResult]:
    """One failed row per plugin that failed to load: its checks did not run."""
    return [
        CheckResult.failed(f"plugin:{name}", f"failed to load ({error}); fix it, or block it: {BLOCK_ENV}={name}")
        for name, error in sorted(plugins.broken.items())
    ]


def run_smoke(
    plugins: Plugins, env: EnvConfig, aws: AwsFactory, *, only: Sequence[str] | None = None, http: Http | None = None
) -> list[CheckResult]:
    """Select the checks (``only`` by name), resolve the endpoints, run them; broken plugins as failed rows."""
    checks = select(registered_checks(plugins, env), only)
    if not checks and not plugins.broken:
        raise UsageError(
            f"no checks are registered for environment {env.name!r}",
            next_step=f"install deploykit with its built-in plugins (pip install -e .), or unset {BLOCK_ENV}",
        )
    endpoints = resolve_endpoints(StackOutputs.of(aws), env, env.endpoints)
    context = CheckContext(env, endpoints, aws, http or Http())
    return run_checks(checks, context) + (broken_plugin_results(plugins) if only is None else [])


def summary(results: Sequence[CheckResult]) -> str:
    counts = {status: sum(r.status == status for r in results) for status in ("passed", "failed", "skipped")}
    return ", ".join(f"{n} {status}" for status, n in counts.items() if n)


def failure(results: Sequence[CheckResult], env: str) -> StepFailed | None:
    """The error that ends a smoke run with failed checks (None when none failed)."""
    failed = [r for r in results if r.status == "failed"]
    if not failed:
        return None
    reasons = "; ".join(f"{r.name}: {r.detail}" for r in failed)
    names = ",".join(r.name for r in failed if not r.name.startswith("plugin:"))
    rerun = f"inv smoke --env {env}" + (f" --only {names}" if names else "")
    return StepFailed(f"smoke failed ({summary(results)}): {reasons}", next_step=f"look at the detail, then: {rerun}")


@dataclass(frozen=True)
class Smoke(Step):
    """The last step of a deploy chain: every registered check (or those in ``only``) must pass."""

    name: ClassVar[str] = "smoke"
    verifies: ClassVar[bool] = True
    only: tuple[str, ...] | None = None
    # run even when no step before it changed anything: what the plan deploys was never verified (deploy.auto)
    always: bool = False

    @property
    def skippable(self) -> bool:
        return not self.always

    def describe(self) -> str:
        return "run the checks: " + (", ".join(self.only) if self.only else "every registered check")

    def run(self, ctx: Context) -> Outcome:
        plugins = ctx.plugins if ctx.plugins is not None else get_plugin_manager()
        results = run_smoke(plugins, ctx.env, ctx.aws, only=self.only)
        ctx.reporter.line(table(results))
        error = failure(results, ctx.env.name)
        if error is not None:
            raise error
        return Outcome.done(summary(results), smoke=summary(results))
