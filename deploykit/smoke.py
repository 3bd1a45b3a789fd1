"""Smoke: the checks every plugin registers, run against an environment's resolved endpoints.

``inv smoke`` runs them on their own; :class:`Smoke` is the same run as the last step of every deploy chain,
so a deploy is done when the app works, not when ECS says so. A plugin that failed to load shows up as a
failed row (its checks did not run), so a broken team plugin is noticed rather than silently skipped.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from deploykit.checks import Check, CheckContext, CheckResult, Http, run_checks, select, table
from deploykit.endpoints import resolve_endpoints
from deploykit.errors import StepFailed, UsageError
from deploykit.plan import Context, Outcome, Step
from deploykit.plugins import BLOCK_ENV, Plugins, each_plugin, get_plugin_manager
from deploykit.stacks import StackOutputs

if TYPE_CHECKING:
    from deploykit.aws import AwsFactory
    from deploykit.config import EnvConfig


def registered_checks(plugins: Plugins, env: EnvConfig) -> list[Check]:
    """Every check the loaded plugins register for ``env``, in plugin-name order; what a plugin's hook raises goes
    through as it is (a plugin's own tests: ``deploykit.testing.plugin_checks``), a wrong answer is a UsageError."""
    checks: list[Check] = []
    for _name, register in each_plugin(plugins, "deploykit_register_checks", env=env):
        given = _checks_in(register())
        if isinstance(given, str):
            raise UsageError(f"a plugin's {given}", next_step="return a list of deploykit.checks.Check from the hook")
        checks.extend(given)
    return checks


def plugins_checks(
    plugins: Plugins, env: EnvConfig, owners: dict[str, list[str]] | None = None
) -> tuple[list[Check], dict[str, str]]:
    """Every check the loaded plugins register for ``env``, in plugin-name order, and each plugin whose hook failed
    (name → what it raised, or returned instead of a list of Check): each plugin is asked on its own, so one that
    fails takes neither the others' checks nor the run down (:func:`plugin_failed_results`). ``owners``, when given,
    gets each check's name → the plugins that register it, once per registration."""
    checks: list[Check] = []
    failed: dict[str, str] = {}
    owners = {} if owners is None else owners
    for name, register in each_plugin(plugins, "deploykit_register_checks", env=env):
        try:
            found = register()
        except (Exception, SystemExit) as exc:  # a plugin's error, whatever it is (sys.exit too): its checks did not
            # run, said as a failed row
            failed[name] = f"deploykit_register_checks raised {type(exc).__name__}: {exc}"
            continue
        given = _checks_in(found)
        if isinstance(given, str):
            failed[name] = given
        else:
            checks.extend(given)
            for check in given:
                owners.setdefault(check.name, []).append(name)
    return checks, failed


def refuse_twice_named(owners: Mapping[str, Sequence[str]]) -> None:
    """UsageError naming each check registered more than once and by which plugins (the bare "two plugins register
    the check(s) alb" said not which, nor that one plugin may register a name twice)."""
    twice = {name: list(by) for name, by in sorted(owners.items()) if len(by) > 1}
    if not twice:
        return
    said = [
        f"{name} by plugins {', '.join(sorted(set(by)))}" if len(set(by)) > 1 else f"{name} twice by plugin {by[0]}"
        for name, by in twice.items()
    ]
    raise UsageError(
        f"more than one check of a name: {'; '.join(said)}",
        next_step=f"rename one (Check(NAME, ...) in the plugin), or block a plugin with {BLOCK_ENV}",
    )


def _checks_in(found: object) -> list[Check] | str:
    """The checks of a deploykit_register_checks answer (a list of Check, or nothing), or what is wrong with it."""
    if found is None:
        return []
    if not isinstance(found, list | tuple):
        return f"deploykit_register_checks returned {type(found).__name__}, not a list of Check"
    wrong = [type(check).__name__ for check in found if not isinstance(check, Check)]
    return f"deploykit_register_checks returned {wrong[0]}, not a Check" if wrong else list(found)


def plugin_failed_results(gone: Mapping[str, str]) -> list[CheckResult]:
    """One failed row per plugin of ``gone`` (:meth:`Chosen.gone`): its checks did not run."""
    return [
        CheckResult.failed(f"plugin:{name}", f"{said}; fix it, or block it: {BLOCK_ENV}={name}")
        for name, said in gone.items()
    ]


def _gone(plugins: Plugins, failed: dict[str, str] | None) -> dict[str, str]:
    """Each plugin whose checks are not there, by name: what went wrong."""
    said = {name: f"failed to load ({error})" for name, error in plugins.broken.items()}
    said |= {name: f"failed: {error}" for name, error in (failed or {}).items()}
    return dict(sorted(said.items()))


@dataclass(frozen=True)
class Chosen:
    """The checks a smoke runs, and each plugin whose hook failed (:func:`plugins_checks`)."""

    checks: list[Check]
    failed: dict[str, str]
    needs_gone: bool = False  # a check chosen needs one that is not there (a plugin's that failed, or is blocked)

    def gone(self, plugins: Plugins, only: Sequence[str] | None) -> dict[str, str]:
        """Each plugin whose checks are not there (it failed to load, or to register them: what went wrong), whose
        failed row fails the smoke: every one; with ``only``, when a check chosen needs one that is not there."""
        return _gone(plugins, self.failed) if only is None or self.needs_gone else {}


def choose(plugins: Plugins, env: EnvConfig, only: Sequence[str] | None = None) -> Chosen:
    """The checks (``only`` by name, with those they need); UsageError for a name no check has (with ``only``: named
    when a check asked for is unknown, since it may be one of a plugin that failed), or when no check is registered.
    Nothing is read from the environment: ``inv smoke --only typo`` is refused before it is."""
    owners: dict[str, list[str]] = {}
    registered, failed = plugins_checks(plugins, env, owners)
    refuse_twice_named(owners)
    try:
        checks = select(registered, only)
    except UsageError as exc:
        gone = [f"plugin {name!r} {said}" for name, said in _gone(plugins, failed).items()]
        gone += [f"plugin {name!r} blocked by {BLOCK_ENV}" for name in sorted(plugins.blocked)]
        if gone:
            exc.message += f" (maybe one of a plugin whose checks are not there: {'; '.join(gone)})"
        raise
    if not checks and not plugins.broken and not failed:
        raise UsageError(
            f"no checks are registered for environment {env.name!r}",
            next_step=f"install deploykit with its built-in plugins (pip install -e .), or unset {BLOCK_ENV}",
        )
    # a need no plugin registers here (one an environment leaves out, as a plugin may: the check is skipped, said in
    # its row; one of a plugin that failed: its failed row stays, --only or not)
    names = {c.name for c in registered}
    return Chosen(checks, failed, needs_gone=any(n not in names for c in checks for n in c.needs))


def run_smoke(
    plugins: Plugins,
    env: EnvConfig,
    aws: AwsFactory,
    *,
    only: Sequence[str] | None = None,
    http: Http | None = None,
    chosen: Chosen | None = None,
) -> list[CheckResult]:
    """Run the checks :func:`choose` picks (``chosen``, when the caller did already), after resolving the endpoints;
    a plugin that failed to load or to register its checks is a failed row (with ``only``, when a check chosen needs
    one that is not there: it is skipped, and the run would pass without it)."""
    picked = chosen or choose(plugins, env, only)
    endpoints = resolve_endpoints(StackOutputs.of(aws), env, env.endpoints)
    context = CheckContext(env, endpoints, aws, http or Http())
    return run_checks(picked.checks, context) + plugin_failed_results(picked.gone(plugins, only))


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
    changes_what_runs: ClassVar[bool] = False  # checks
    verifies: ClassVar[bool] = True
    preflight_at_start: ClassVar[bool] = True  # the plugins' checks are chosen before a build, not after it
    only: tuple[str, ...] | None = None
    # run even when no step before it changed anything: what the plan deploys was never verified (deploy.auto)
    always: bool = False
    # its preflight refuses what the checks' choice refuses, before the run changes anything (a deploy's); a
    # rollback's, a restart's, a wake's does not hold back what puts things right (the refusal comes at smoke)
    refuses_first: bool = True

    @property
    def skippable(self) -> bool:
        return not self.always

    def describe(self) -> str:
        return "run the checks: " + (", ".join(self.only) if self.only else "every registered check")

    def preflight(self, ctx: Context, before: tuple[Step, ...]) -> None:
        """What the checks' choice refuses (two plugins' checks of one name, needs in a circle, an unknown --only
        name), and a plugin whose checks are not there (it failed to load, or to register them), whose failed row
        would fail this smoke: before the run changes anything, not after the release went out (not for a plan that
        puts things right: refuses_first)."""
        if not self.refuses_first:
            return
        plugins = ctx.plugins if ctx.plugins is not None else get_plugin_manager()
        gone = choose(plugins, ctx.env, self.only).gone(plugins, self.only)
        if gone:
            raise UsageError(
                f"the checks of {len(gone)} plugin(s) are not there: "
                + "; ".join(f"plugin {name!r} {said}" for name, said in gone.items())
                + ": the smoke at the end of this run would fail on them, after the release went out; nothing was "
                "changed",
                next_step=f"fix the plugin (its import, its deploykit_register_checks); or, where its checks cannot "
                f"run, block it for the run: {BLOCK_ENV}={','.join(gone)}",
            )

    def run(self, ctx: Context) -> Outcome:
        plugins = ctx.plugins if ctx.plugins is not None else get_plugin_manager()
        results = run_smoke(plugins, ctx.env, ctx.aws, only=self.only)
        ctx.reporter.line(table(results))
        error = failure(results, ctx.env.name)
        if error is not None:
            raise error
        return Outcome.done(summary(results), smoke=summary(results))
