"""The bodies of the invoke tasks: load the configuration, plan, then execute or describe.

``tasks.py`` only parses options and calls these; they raise :class:`~deploykit.errors.DeployKitError`
(with its exit code) and never call ``sys.exit`` themselves.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import re
import shlex
import sys
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, ExitStack, contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any, TextIO, TypeVar

import botocore.exceptions
from tabulate import tabulate

from deploykit import (
    auto,
    changes,
    ecs,
    freeze,
    git,
    health,
    history,
    image_cleanup,
    lambda_chain,
    lock,
    markdown,
    oneoff,
    overview,
    pause,
    planner,
    registry,
    restart,
    scan_gate,
    stack_chain,
    synth,
    task_list,
    taskdef_cleanup,
    version_cleanup,
    watch,
    zip_cleanup,
)
from deploykit import canary as lambda_canary
from deploykit import logs as applogs
from deploykit import metrics as deploy_metrics
from deploykit import report as deploy_report
from deploykit import rollback as rollbacks
from deploykit import smoke as smoke_checks
from deploykit.app_chain import app_left, image_in_registry
from deploykit.aws import AwsFactory, all_of, at_once, caller_account, translate_error
from deploykit.checks import CheckResult, junit_xml, table
from deploykit.clock import Clock, SystemClock, moment_of, seconds_of
from deploykit.config import SAMPLE_PART, Config, EnvConfig, load_config
from deploykit.endpoints import Endpoints, resolve_endpoints
from deploykit.errors import ConfigError, DeployKitError, Interrupted, StepFailed, Superseded, UsageError
from deploykit.images import docker_client
from deploykit.output import Reporter
from deploykit.plan import Context, Executor, Plan, RunReport, Step, describe_plan, dumps, in_background
from deploykit.plugins import Plugins, get_plugin_manager, observe, review_stack_changes
from deploykit.stack_chain import PART_MIN, UploadLambdaCode, template_url
from deploykit.stacks import (
    Change,
    StackDeployer,
    StackOutputs,
    access_note,
    changes_table,
    dangerous_changes,
    given_parameters,
    inv_command,
    stack_parameters,
)

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])


@dataclass
class Runtime:
    """Everything a command needs from the outside world; tests replace any part of it."""

    config_path: Path | None = None
    stdout: TextIO = field(default_factory=lambda: sys.stdout)
    stderr: TextIO = field(default_factory=lambda: sys.stderr)
    clock: Clock = field(default_factory=SystemClock)
    aws_factory: Callable[[EnvConfig], AwsFactory] = AwsFactory
    docker_factory: Callable[[], Any] = docker_client
    plugins_factory: Callable[[], Plugins] = get_plugin_manager
    # an environment with confirm = true: --yes given (or $DEPLOYKIT_YES=1) answers for the person; else ``ask``
    # puts the question (True: go on; None: there is no one to ask, no terminal)
    assume_yes: bool = False
    ask: Callable[[str], bool | None] = field(default_factory=lambda: ask_on_terminal)


YES_ENV = "DEPLOYKIT_YES"  # =1: every confirmation an environment asks for (confirm = true) answered yes


def ask_on_terminal(question: str) -> bool | None:
    """``question`` on the terminal, answered y or yes (anything else is no); None without a terminal to ask on."""
    if not sys.stdin.isatty():
        return None
    try:
        return input(question).strip().lower() in ("y", "yes")
    except EOFError:
        return False


def _aws_of(runtime: Runtime, config: Config, name: str) -> AwsFactory:
    """The AWS of the environment ``name``, with its own credentials."""
    return runtime.aws_factory(config.environment(name))


def load_plugins(runtime: Runtime, config: Config) -> Plugins:
    """The plugins (built-in and installed), configured; one that failed to load is named on stderr."""
    plugins = runtime.plugins_factory()
    for name, error in sorted(plugins.broken.items()):
        runtime.stderr.write(f"⚠️  plugin {name!r} failed to load and is left out: {error}\n")
    plugins.manager.hook.deploykit_configure(config=config)
    return plugins


def not_run(
    runtime: Runtime,
    config: Config,
    env: EnvConfig,
    command: str,
    outcome: str,
    *,
    head: str | None = None,
    **more: Any,
) -> None:
    """Tell the plugins a deploy command ended before any step of a plan ran (deploykit_deployment_not_run);
    ``head``: the checkout's commit (read here when not given), ``more``: message, next_step, held."""
    if head is None:
        try:
            head = git.head_sha(config.root)[: git.SHORT_SHA]
        except DeployKitError:  # not a git checkout after all: the report leaves it out
            head = ""
    report: dict[str, Any] = {"env": env.name, "command": command, "outcome": outcome, "head": head}
    report |= {"message": "", "next_step": "", "held": [], **more}
    observe(
        load_plugins(runtime, config), "deploykit_deployment_not_run", _line_on(runtime), env=env.name, report=report
    )


def heard_when_not_run(command: str | Callable[..., str]) -> Callable[[F], F]:
    """A deploy command (``command``: its name, or what makes it from the command's arguments) that is refused (exit
    2) or fails before a plan of it runs tells the plugins so (:func:`not_run`), as its run would have: a CI job's page
    then says why nothing was deployed. Not told: what the executor told already (:attr:`DeployKitError.heard`), a
    dry run's, an error of deploy.toml or of the environment's name (nothing to tell it to). A run superseded or
    refused by a lock the command waits for is told only when :func:`until_unlocked` gives up starting it again
    (:attr:`DeployKitError.tell_later`): the refusal it ends with."""

    def decorate(func: F) -> F:
        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            runtime = kwargs["runtime"] = kwargs.get("runtime") or Runtime()
            try:
                return func(*args, **kwargs)
            except DeployKitError as exc:
                if not (exc.heard or kwargs.get("dry_run") or isinstance(exc, ConfigError | Interrupted)):
                    try:
                        config, environment = _load(runtime, kwargs.get("env"))
                    except DeployKitError:
                        raise exc from None
                    name = command if isinstance(command, str) else command(*args, **kwargs)

                    def tell(error: DeployKitError) -> None:
                        outcome = "refused" if error.exit_code == 2 else "failed"
                        message, next_step = error.message, error.next_step or ""
                        not_run(runtime, config, environment, name, outcome, message=message, next_step=next_step)
                        error.heard = True

                    if isinstance(exc, Superseded) or (isinstance(exc, lock.LockHeld) and exc.wait > 0):
                        exc.tell_later = tell  # started again: told only if the command gives up
                    else:
                        tell(exc)
                raise

        return wrapper  # type: ignore[return-value]

    return decorate


def _translator(env: EnvConfig) -> Callable[[Exception], DeployKitError | None]:
    def translate(exc: Exception) -> DeployKitError | None:
        if isinstance(exc, botocore.exceptions.BotoCoreError | botocore.exceptions.ClientError):
            return translate_error(exc, env)
        docker_errors = sys.modules.get("docker.errors")  # none without an image touched: no Docker failure either
        if docker_errors is not None and isinstance(exc, docker_errors.DockerException):
            return StepFailed(f"the Docker engine failed: {exc}", next_step="check 'docker info', then rerun")
        return None

    return translate


@contextmanager
def aws_errors(env: EnvConfig) -> Iterator[None]:
    """Planning reads AWS too: its botocore failures become the same clear errors as a step's."""
    try:
        yield
    except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
        raise translate_error(exc, env) from None


def _load(runtime: Runtime, env_name: str | None) -> tuple[Config, EnvConfig]:
    config = load_config(runtime.config_path)
    return config, config.environment(env_name)


def _revision(config: Config, allow_dirty: bool) -> git.Revision:
    """HEAD's revision (uncommitted changes refused unless ``allow_dirty``), knowing which components they touch."""
    return changes.scope(config, git.current_revision(config.root, allow_dirty=allow_dirty))


def run_plan(
    runtime: Runtime,
    config: Config,
    env: EnvConfig,
    plan: Plan,
    *,
    dry_run: bool,
    as_json: bool,
    aws: AwsFactory | None = None,
    rollback: bool | None = None,
    planned_from: Mapping[str, Mapping[str, str]] | None = None,
) -> RunReport | None:
    """Describe (dry run) or execute ``plan``; print JSON when asked; raise the failure if any.

    ``rollback`` (deploys of the app or a Lambda): when wait-healthy, smoke or watch-errors fails, True puts back
    what the run replaced (see :func:`recover`), False leaves it in place and says how to put it back; None: neither
    applies. ``planned_from``: the live record the plan was made from (deploy.auto's analysis, read before the
    lock was taken); when the record read under the lock differs (another deploy finished in between), the run
    stops before its first step that changes what is live (:class:`~deploykit.errors.Superseded`), nothing live
    changed and nothing recorded, for the command to start again (:func:`until_unlocked`)."""
    if dry_run:  # reads nothing: a wake of a paused environment is not shown (deploy.auto's dry run shows it)
        if as_json:
            runtime.stdout.write(dumps({"dry_run": True, **plan.to_json()}) + "\n")
        else:
            runtime.stderr.write(describe_plan(plan) + "\n")
        return None
    aws = aws or runtime.aws_factory(env)
    _confirmed(runtime, env, plan)
    # a deploy wakes a paused environment first: whether it is paused is read while the lock is taken
    pausing = in_background(partial(pause.read, aws, env), "pause") if pause.may_wake(plan) else None
    with _deploy_lock(runtime, aws, env, plan):
        if pausing is not None:
            with aws_errors(env):
                plan = pause.woken(plan, pausing.result(), env)
        reporter = Reporter(runtime.stderr, clock=runtime.clock)
        plugins = load_plugins(runtime, config)
        ctx = Context(
            config,
            env,
            aws,
            runtime.clock,
            reporter,
            runtime.docker_factory,
            plugins,
            partial(_aws_of, runtime, config),
        )
        # what is live before the run: read under the lock, while the plan's first steps run (its value is needed
        # only after them: one round trip less before the first step)
        reading = _LiveBefore(runtime, aws, env) if plan.deploys or plan.removes else None
        if reading is not None and planned_from is not None:
            ctx.gate = partial(_still_as_planned, reading, env, planned_from)
        try:
            report = Executor(ctx, _translator(env)).execute(plan)
        finally:
            live = reading.result() if reading else None
        if isinstance(report.error, Superseded):  # nothing live changed: nothing to record, nothing to put back
            raise report.error
        if report.error is not None:
            report.error.heard = True  # the executor told the plugins of the run and its failure
        before = {c: v.get("sha") for c, v in live.items()} if live else {}
        if isinstance(report.error, Interrupted) and any(before.values()):
            shown = ", ".join(f"{component}@{sha}" for component, sha in sorted(before.items()) if sha)
            report.error.message += f"; live before this run: {shown}"
        if plan.changes_live:
            _record(runtime, config, aws, env, plan, report, before, live)
        if report.error is not None and rollback is not None:
            report.rollback = recover(runtime, ctx, report, before, live, rollback=rollback)
        if report.error is not None:
            roles = rollbacks.changed_stacks(report, env)
            if roles:
                back = ", ".join(f"inv rollback --env {env.name} --component stack:{role}" for role in roles)
                report.error.next_step = "; ".join(
                    filter(None, (report.error.next_step, f"if a stack change of this run broke it: {back}"))
                )
    if as_json:
        runtime.stdout.write(dumps(report.to_json()) + "\n")
    if report.error is not None:
        raise report.error
    return report


def _confirmed(runtime: Runtime, env: EnvConfig, plan: Plan) -> None:
    """In an environment that asks first (``confirm = true``), a plan that changes it runs only once someone said
    yes: on the terminal, or by --yes / $DEPLOYKIT_YES=1. Declined, or no one to ask: refused, nothing changed. A
    destroy asks on its own (the environment's name typed)."""
    if not env.confirm or not plan.changes_live or plan.title.startswith("destroy"):
        return
    what = ", ".join(f"{component}@{sha[: git.SHORT_SHA]}" for component, sha in plan.deploys) or ", ".join(
        component for component, _ in plan.restarts
    )
    commits = f", {len(plan.commits)} commit{'s' if len(plan.commits) > 1 else ''}" if plan.commits else ""
    steps = f"{len(plan.steps)} step{'s' if len(plan.steps) > 1 else ''}"
    summary = f"{plan.title} → {env.name} ({steps}: {what}{commits})"
    if runtime.assume_yes or os.environ.get(YES_ENV) == "1":
        runtime.stderr.write(f"✔  {summary}: confirmed by --yes\n")
        return
    answer = runtime.ask(f"❓ {summary}: {env.name} asks first (confirm = true). Go on? [y/N] ")
    if answer is None:
        raise UsageError(
            f"{env.name} asks before each change (confirm = true in deploy.toml) and there is no terminal to ask on: "
            "nothing was changed",
            next_step=f"rerun with --yes (or {YES_ENV}=1) where the run is approved another way, as a CI job's "
            "environment approval",
        )
    if not answer:
        raise UsageError(f"{summary} not confirmed: nothing was changed", next_step="rerun when it should go")


def _still_as_planned(reading: _LiveBefore, env: EnvConfig, planned_from: Mapping[str, Mapping[str, str]]) -> None:
    """Superseded when the live record read under the lock is not the one the plan was made from."""
    live = reading.result()
    if live is None or live == planned_from:  # unreadable: said by the read, and the run records it so
        return
    moved = sorted(
        c for c in {*live, *planned_from} if live.get(c, {}).get("sha") != planned_from.get(c, {}).get("sha")
    )
    what = ", ".join(
        f"{c} {planned_from.get(c, {}).get('sha') or '-'} → {live.get(c, {}).get('sha') or '-'}" for c in moved
    )
    raise Superseded(
        f"what is live in {env.name!r} changed since this command read it: another deploy finished meanwhile"
        + (f" ({what})" if what else "")
        + "; nothing live was changed",
        next_step="rerun: it reads what is live anew and deploys what is left",
    )


def recover(
    runtime: Runtime,
    ctx: Context,
    report: RunReport,
    before: dict[str, str | None],
    live: dict[str, dict[str, str]] | None = None,
    *,
    rollback: bool,
) -> RunReport | None:
    """After a failed deploy: put back what it replaced when wait-healthy, smoke or watch-errors failed
    (``rollback``), or say how to (``--no-rollback``). The failure's message then tells both; the rollback's own run
    is returned. ``live``: the live record as read before the failed run (which left it as it was), if it was."""
    env, error = ctx.env, report.error
    assert error is not None
    try:
        with aws_errors(env):
            undo = rollbacks.undo_plan(env, report, ctx.aws.client("lambda"), smoke=True, before=before)
    except DeployKitError as exc:
        error.message += f"; no automatic rollback: reading what to put back failed ({exc.message})"
        error.next_step = f"see what runs: inv health --env {env.name}; put it back: inv rollback --env {env.name}"
        return None
    if undo is None:
        return None
    replaced = ", ".join(undo.replaced)
    # what the failed release wrote stays in CloudWatch Logs after its tasks stopped and its alias moved back
    wrote = "; what it wrote: " + ", ".join(
        f"inv logs --env {env.name}" + ("" if c == "app" else f" --component {c}") + " --since 15m"
        for c in undo.components
    )
    if not rollback:
        error.message += f"; left in place for debugging (--no-rollback): {replaced}"
        error.next_step = (
            f"put back what was live: inv rollback --env {env.name} (per Lambda: --component lambda:NAME){wrote}"
        )
        return None
    for note in undo.notes:
        runtime.stderr.write(f"↩️  {note}\n")
    runtime.stderr.write(f"\n⏪ {undo.plan.title}: putting back what this deploy replaced ({replaced})\n")
    undone = Executor(ctx, _translator(env)).execute(undo.plan)
    if undo.plan.deploys:
        _record(runtime, ctx.config, ctx.aws, env, undo.plan, undone, before, live)
    since, outputs = runtime.clock.now() - timedelta(seconds=report.seconds + undone.seconds + 60), report.outputs()
    for component in undo.components:  # read now, after the rollback: the lines took that long to arrive
        if component.startswith("lambda:"):
            _show_version_log(runtime, ctx, component.split(":", 1)[1], outputs, since)
    what = "; ".join((*undo.notes, f"{undo.plan.title} ok in {undone.seconds:.1f}s"))
    if undone.error is None:
        error.message += f"; {what}: {env.name} runs what was live before"
        error.next_step = (
            f"fix the release and deploy again (inv deploy.auto --env {env.name}){wrote}; "
            "--no-rollback keeps a failed release in place for debugging"
        )
    else:
        error.message += (
            f"; the automatic rollback failed too ({undone.error.message.splitlines()[0]}): {env.name} may run "
            f"neither version"
        )
        error.next_step = (
            f"see what runs: inv health --env {env.name}; then put it back by hand: inv rollback --env {env.name}"
        )
    return undone


def _show_version_log(runtime: Runtime, ctx: Context, function: str, outputs: dict[str, str], since: datetime) -> None:
    """What the version of ``function`` a failed deploy made live wrote, from CloudWatch Logs; a log that cannot
    be read is said, never raised (the deploy's own failure is what counts)."""
    version, function_name = outputs.get(f"{function}.version"), outputs.get(f"{function}.function_name")
    if not version or not function_name:
        return
    try:
        with aws_errors(ctx.env):
            source = applogs.lambda_source(ctx.aws.client("lambda"), function, function_name)
            lines = applogs.version_lines(ctx.aws.client("logs"), source, version, since, limit=ecs.TASK_LOG_LINES)
    except DeployKitError as exc:
        runtime.stderr.write(f"📜 could not read what {function} version {version} wrote: {exc.message}\n")
        return
    if not lines:
        runtime.stderr.write(
            f"📜 no line of {function} version {version} in CloudWatch Logs {source.group} yet (they can take "
            f"seconds to arrive): inv logs --env {ctx.env.name} --component lambda:{function}\n"
        )
        return
    runtime.stderr.write(f"📜 the last {len(lines)} lines {function} version {version} wrote ({source.group}):\n")
    runtime.stderr.writelines(f"    {line.message}\n" for line in lines)


def nothing_to_do_json(env: str, title: str, held: Sequence[str] = ()) -> str:
    """``--json`` of a command that found nothing to do: a run report with no steps, the shape every run prints
    (``environment`` too, as printed before); ``held``: the changed components deploy.auto held back."""
    return dumps(RunReport(Plan(env, (), title, held=tuple(held)), [], 0.0, None).to_json() | {"environment": env})


def _deploy_lock(runtime: Runtime, aws: AwsFactory, env: EnvConfig, plan: Plan) -> AbstractContextManager[None]:
    """One deploy at a time per environment: a plan that changes something (it deploys components, restarts them, or
    destroys) holds the environment's lock while it runs (:func:`_env_lock`); a freeze refuses it, but a rollback's
    and a restart's (they bring nothing new)."""
    needed = bool(plan.deploys or plan.restarts or plan.title.startswith("destroy"))
    freezes = not (plan.title.startswith("rollback") or plan.restarts)
    return _env_lock(runtime, aws, env, plan.title, needed=needed, freezes=freezes)


@contextmanager
def _env_lock(
    runtime: Runtime, aws: AwsFactory, env: EnvConfig, command: str, *, needed: bool, freezes: bool = False
) -> Iterator[None]:
    """When ``needed``: the environment's lock held while the block runs, released however it ends (see
    deploykit.lock); and, first, the credentials must act in the environment's account when deploy.toml pins one.
    Not needed (nothing will change): neither. ``freezes``: a freeze of the environment (deploykit.freeze), read
    while the lock is taken, refuses the command before the block runs (but with $DEPLOYKIT_ALLOW_FROZEN=1)."""
    with ExitStack() as held:
        if needed:
            with aws_errors(env), ThreadPoolExecutor(1) as pool:  # reading or taking the lock, reading the freeze
                _in_its_account(aws, env)
                reading = pool.submit(freeze.read, aws, env) if freezes else None
                warn = partial(_warn, runtime)
                held.enter_context(lock.held(aws, env, command, clock=runtime.clock, warn=warn))
                stored = reading.result() if reading is not None else None
            found = freeze.in_force(stored, env, runtime.clock.now()) if freezes else None
            if found is not None:
                if not freeze.overridden():
                    raise freeze.refusal(found, env, command)
                runtime.stderr.write(f"❄️  {found.describe(env.name)}; deploying anyway (${freeze.OVERRIDE_ENV}=1)\n")
        yield


SUPERSEDED_RESTARTS = 3
# seconds the command now running waited for another deploy's lock first (until_unlocked), for its history record
_LOCK_WAITED: ContextVar[float] = ContextVar("lock_waited", default=0.0)


def until_unlocked(call: Callable[[], T], runtime: Runtime | None = None) -> T:
    """Run ``call``, a command; when another deploy holds the environment's lock and a wait is allowed
    (``lock_wait``, ``$DEPLOYKIT_LOCK_WAIT``), wait until that deploy lets it go, then run the command again from
    the start: it reads what is live anew (that deploy may have deployed what this one was to, or something newer)
    and plans from that. The command was refused before it changed anything, so starting again is safe. Once the
    wait is over and the lock still held: refused as without a wait (exit 2), saying how long it waited. A run
    :class:`Superseded` (what is live changed between its reads and its lock: :func:`run_plan`) starts again at
    once, up to :data:`SUPERSEDED_RESTARTS` times."""
    runtime = runtime or Runtime()
    deadline: float | None = None
    restarts = 0
    waited = 0.0
    while True:
        token = _LOCK_WAITED.set(waited)
        try:
            return call()
        except Superseded as superseded:  # nothing live changed: start again at once, a few times at most
            restarts += 1
            if restarts > SUPERSEDED_RESTARTS:
                _told(superseded, superseded)
                raise
            runtime.stderr.write(f"🔁 {superseded.message}: starting again, what is live read anew\n")
        except lock.LockHeld as held:
            if held.wait <= 0:
                raise
            clock = held.lock.clock
            if deadline is None:
                deadline = clock.monotonic() + held.wait
                runtime.stderr.write(
                    f"⏳ waiting up to {lock.duration(held.wait)} for the lock of {held.lock.env!r}: "
                    f"{held.info.describe(clock.now())} (Ctrl-C stops waiting)\n"
                )
            waiting = clock.monotonic()
            out = Reporter(runtime.stderr, clock=clock)  # the wait's progress: elapsed, and who holds the lock
            with out.activity("waiting for the lock"):
                try:
                    held.lock.wait_until_free(deadline, say=out.line, status=out.status)
                except lock.LockHeld as still:  # the wait is over, the lock still held: the command's refusal
                    _told(held, still)
                    raise
            took = clock.monotonic() - waiting
            waited += took
            runtime.stderr.write(
                f"🔓 the lock of {held.lock.env!r} is free after {lock.duration(took)}: "
                "starting again, what is live read anew\n"
            )
        finally:
            _LOCK_WAITED.reset(token)


def _told(retried: DeployKitError, final: DeployKitError) -> None:
    """The plugins told of ``final``, the refusal a command gives up with after ``retried`` made it start again
    (:func:`heard_when_not_run` left ``retried`` untold, for this)."""
    if retried.tell_later is not None and not final.heard:
        retried.tell_later(final)


def _warn(runtime: Runtime, message: str) -> None:
    runtime.stderr.write(f"⚠️  {message}\n")


def _in_its_account(aws: AwsFactory, env: EnvConfig) -> None:
    """Refuse credentials of another account than the one deploy.toml pins for ``env`` (none pinned: no check,
    and no call)."""
    if env.account:
        aws.account()


def _rolled_back(
    runtime: Runtime,
    config: Config,
    env: EnvConfig,
    aws: AwsFactory,
    components: Collection[str],
    revision: git.Revision,
    heads: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """component → why, for each of ``components`` that deploying ``revision`` (a component of ``heads`` at its
    commit there) would bring back as a person's rollback took it off (auto.rolled_back); for
    auto.refuse_deploying_again."""
    warn = _warner(runtime)
    return auto.rolled_back(aws, env, config, components, uncommitted=bool(revision.dirty), warn=warn, heads=heads)


def _refuse_older(config: Config, env: EnvConfig, component: str, live: str | None, revision: git.Revision) -> None:
    """UsageError when ``component`` is live at a commit ahead of ``revision``'s (see auto.refuse_taking_back)."""
    ahead = changes.live_ahead(config.root, live, revision.sha)
    if ahead:
        auto.refuse_taking_back({component: ahead}, revision.sha, env)


def _dropped(config: Config, plan: Plan, before: dict[str, str | None]) -> tuple[str, ...]:
    """The Lambda functions of the live record that this checkout no longer has (their folder was deleted) when
    the plan deploys the API stack: the stack, synthesized from this checkout, took them away."""
    if not any(component == f"stack:{planner.HOSTED_BY['lambda']}" for component, _ in plan.deploys):
        return ()
    present = set(changes.components_of(config))
    return tuple(sorted(c for c in before if c.startswith("lambda:") and c not in present and c not in plan.removes))


def live_record(aws: AwsFactory, env: EnvConfig) -> dict[str, dict[str, str]] | None:
    """The environment's live record (component → {sha, when, record, ...}); None without an artifacts bucket."""
    found = history.History.of(aws, env)
    return found.live() if found else None


def _planned_from(aws: AwsFactory, env: EnvConfig) -> dict[str, dict[str, str]] | None:
    """The live record a command's guards are checked beside, for :func:`run_plan` to check again under the lock;
    None (not checked again) when it cannot be read as deploykit wrote it: the run says so when it records."""
    try:
        return live_record(aws, env)
    except history.LiveRecordUnreadable:
        return None


class _LiveBefore:
    """The environment's live record as it is before a run, read in a thread of its own from the moment this is
    made (the run's steps go on meanwhile): :meth:`result` waits for it. The run holds the environment's lock, so
    nothing but this run writes the record until it ends."""

    def __init__(self, runtime: Runtime, aws: AwsFactory, env: EnvConfig) -> None:
        self._runtime, self._aws, self._env = runtime, aws, env
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="live")
        self._future = self._pool.submit(self._read)
        self._pool.shutdown(wait=False)

    def _read(self) -> dict[str, dict[str, str]] | None:
        return live_record(self._aws, self._env)

    def result(self) -> dict[str, dict[str, str]] | None:
        """component → {sha, when, record}; {} when the environment has a bucket but no record yet, None when it has
        no bucket yet or the record could not be read (said)."""
        try:
            return self._future.result()
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
            self._runtime.stderr.write(f"⚠️  could not read the live record of {self._env.name}: {exc}\n")
            return None
        except history.LiveRecordUnreadable:  # the record of the run says so when it is written
            return None


def _record(
    runtime: Runtime,
    config: Config,
    aws: AwsFactory,
    env: EnvConfig,
    plan: Plan,
    report: RunReport,
    before: dict[str, str | None],
    live: dict[str, dict[str, str]] | None = None,
) -> None:
    """Leave the run in the environment's history (and, when it succeeded, in its live record), and its figures in
    CloudWatch (deploykit.metrics), all at once. ``live``: the live record as read before the run, under the lock
    this run holds (not read again); None: read it.

    A record or metrics that cannot be written are reported and never fail a deploy that worked."""
    deployed, carried = dict(plan.deploys), dict(plan.carried)
    plan = dataclasses.replace(plan, removes=(*plan.removes, *_dropped(config, plan, before)))
    # the run's revision: a dirty build's tag when any part was one (what the changes did not touch is HEAD's)
    head = next((t for t in deployed.values() if git.DIRTY in t), next(iter(deployed.values()), ""))
    head = head or next((sha for _, sha in plan.restarts), "")  # a restart: the commit its tasks run
    components = {**carried, **deployed}
    record = history.record_of(
        report,
        components=components,
        base={c: before.get(c) for c in (*components, *plan.removes)},
        head=head,
        unchanged=sorted(set(carried) - set(deployed)),
        removed=plan.removes,
        unpromoted=plan.unpromoted,
        left=stack_chain.stacks_left(report.records, planner.stack_roles(env)) | app_left(report.records),
        waited=_LOCK_WAITED.get(),
        held=plan.held,
    )
    whose = "the deployment worked but its" if report.ok else "the failed run's"
    try:
        found = history.History.of(aws, env)
        if found is None:
            return
        writes: dict[str, Callable[[], object]] = {"record": partial(_keep, partial(found.write, live=live), record)}
        if env.metrics:  # off: not even a CloudWatch client is made
            writes["metrics"] = partial(_put_metrics, aws, record)
        written = at_once(writes)
    except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:  # finding the bucket
        written = {"record": exc}
    if isinstance(written["record"], history.LiveRecordUnreadable):
        runtime.stderr.write(f"⚠️  its history record was written, but not the live record: {written['record']}\n")
    elif isinstance(written["record"], Exception):
        runtime.stderr.write(f"⚠️  {whose} history record was not written: {written['record']}\n")
    if isinstance(written.get("metrics"), Exception):
        runtime.stderr.write(
            f"⚠️  {whose} metrics were not put in CloudWatch: {written['metrics']} (the dashboard misses this "
            f"run; metrics = false in [environments.{env.name}] turns them off)\n"
        )


def _keep(write: Callable[[history.Record], object], record: history.Record) -> object:
    """``write(record)``, or the AWS error it raised (each part of a record is reported apart)."""
    try:
        return write(record)
    except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError, history.LiveRecordUnreadable) as exc:
        return exc


def _put_metrics(aws: AwsFactory, record: history.Record) -> object:
    return _keep(partial(deploy_metrics.publish, aws.client("cloudwatch")), record)


@heard_when_not_run(
    lambda stages, **_: "deploy.app" if {"build", "wait-healthy"} <= set(stages) else " → ".join(stages)
)
def app_chain(
    stages: Sequence[str],
    *,
    env: str | None = None,
    dry_run: bool = False,
    as_json: bool = False,
    allow_dirty: bool = False,
    allow_older: bool = False,
    rollback: bool = True,
    watch_errors: str | None = None,
    unpromoted: bool = False,
    allow_rolled_back: bool = False,
    runtime: Runtime | None = None,
) -> RunReport | None:
    """Plan and run the app-chain ``stages`` (any of build, push, register-taskdef, roll-service, wait-healthy).
    Rolling the service onto a commit behind the one it runs is refused unless ``allow_older``, and onto the app as a
    person's rollback took it off unless ``allow_rolled_back`` (as deploy.auto does); ``watch_errors`` replaces how
    long the environment watches the app's errors after a rollout (deploykit.watch)."""
    runtime = runtime or Runtime()
    config, environment = _load(runtime, env)
    environment = _with_watch(environment, watch_errors)
    revision = _revision(config, allow_dirty)
    promotion = Promotion()
    # A stage that puts the app into the environment (an image in its registry, a revision, the service) takes what
    # the promote_from environment runs: push copies that image (a local build pushed under the commit's tag would
    # stay, as tags are immutable, and be what a later promoted deploy rolls out). A dry run too: its plan copies.
    if set(stages) & {"push", "register-taskdef", "roll-service"}:
        promotion = require_promoted(runtime, config, environment, revision, ["app"], unpromoted=unpromoted)
    aws = runtime.aws_factory(environment)
    reads: dict[str, Callable[[], Any]] = {}
    if "roll-service" in stages and not (allow_older or dry_run):  # a dry run of the chain reads nothing live
        reads["live"] = partial(auto.live_image_tag_or_empty, aws, environment)
    if "roll-service" in stages and not (allow_rolled_back or dry_run):
        reads["again"] = partial(_rolled_back, runtime, config, environment, aws, ["app"], revision)
    if planner.needs_repository(stages):
        reads["uri"] = partial(registry.repository_uri, aws)
    if not dry_run and "push" in stages:
        reads["auth"] = partial(registry.push_auth, aws)  # kept for the push (or the copy), asked now
    if not dry_run and {"live", "again"} & set(reads):  # what the guards were checked against: still so under the lock?
        reads["record"] = partial(_planned_from, aws, environment)
    with aws_errors(environment):
        read = at_once(reads)  # the image the service runs, the history, the repository and its token: one round trip
    if "live" in read:
        _refuse_older(config, environment, "app", read["live"], revision)
    auto.refuse_deploying_again(read.get("again", {}), revision.sha, environment)
    plan = planner.app_chain_plan(
        config, environment, revision, stages, repository_uri=read.get("uri"), promoted=promotion.image
    )
    taken = _commits_since(config, "app", read.get("live"), revision) if plan.deploys else ()
    plan = dataclasses.replace(plan, unpromoted=promotion.unpromoted, commits=taken)
    return run_plan(
        runtime,
        config,
        environment,
        plan,
        dry_run=dry_run,
        as_json=as_json,
        aws=aws,
        rollback=rollback,
        planned_from=read.get("record"),
    )


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


# -- stacks -----------------------------------------------------------------------------------------------------


def live_image_tag(aws: AwsFactory, env: EnvConfig) -> str:
    """The image tag live now: the running service's, else the stack's current ImageTag parameter."""
    tag = auto.live_image_tag_or_empty(aws, env)
    if tag:
        return tag
    current = stack_parameters(aws, env.stacks.fargate)
    if current.get(planner.IMAGE_PARAMETER):
        return current[planner.IMAGE_PARAMETER]
    raise UsageError(
        f"no image is live in environment {env.name!r} (no service, no {env.stacks.fargate} stack)",
        next_step="pass --image-tag TAG (an image already pushed), or deploy everything: inv deploy.full",
    )


def current_code_keys(aws: AwsFactory, config: Config, env: EnvConfig) -> tuple[dict[str, str], list[str]]:
    """The Lambda code keys live now, and the functions never deployed (given this commit's zips, to upload).

    Live means what each function's ``live`` alias serves (its version's description names the key), so a stack
    deploy keeps what ``inv deploy.lambda`` shipped; else the API stack's ``<Function>CodeKey`` parameter.
    """
    packages = planner.lambda_packages(config, env)
    names = lambda_chain.deployed_functions(StackOutputs.of(aws), env, required=False)
    keys = _code_keys_live(aws, env, names, packages)
    missing = sorted(fn for fn in packages if fn not in keys)
    keys.update({fn: packages[fn].key for fn in missing})
    return keys, missing


def _code_keys_live(
    aws: AwsFactory, env: EnvConfig, names: Mapping[str, str], functions: Iterable[str]
) -> dict[str, str]:
    """fn → the S3 key of the code live now, for those of ``functions`` that have one: what the ``live`` alias
    serves (``names``: fn → the deployed function's name), else the API stack's ``<Function>CodeKey`` parameter."""
    served = lambda_chain.live_code_keys(aws.client("lambda"), {fn: n for fn, n in names.items() if fn in functions})
    parameters = stack_parameters(aws, env.stacks.api)
    keys = {fn: served.get(fn) or parameters.get(planner.code_parameter(fn)) for fn in functions}
    return {fn: key for fn, key in keys.items() if key}


@heard_when_not_run(lambda stack, **_: f"deploy.stack {stack}")
def deploy_stack(
    stack: str,
    *,
    env: str | None = None,
    image_tag: str | None = None,
    allow_replace: bool = False,
    approve_access: bool = False,
    force_synth: bool = False,
    smoke: bool = True,
    dry_run: bool = False,
    as_json: bool = False,
    unpromoted: bool = False,
    allow_rolled_back: bool = False,
    runtime: Runtime | None = None,
) -> RunReport | None:
    """One stack through a change set, with its inputs as they are live now; then smoke. Refuses, as deploy.auto
    does, to deploy the stack as a person's rollback took it off, unless ``allow_rolled_back``."""
    runtime = runtime or Runtime()
    config, environment = _load(runtime, env)
    aws = runtime.aws_factory(environment)
    role = planner.role_of(environment, stack)
    revision = _revision(config, True)
    # a dry run too, as deploy.auto's: it shows whether the deploy would be let through
    promotion = require_promoted(runtime, config, environment, revision, [f"stack:{role}"], unpromoted=unpromoted)
    reads: dict[str, Callable[[], Any]] = {}
    if not allow_rolled_back:  # a dry run too
        guarded, heads = [f"stack:{role}"], {}
        if image_tag and role == planner.HOSTED_BY["app"]:  # the stack rolls the app out at that tag: guarded too
            guarded.append("app")
            heads["app"] = image_tag
        reads["again"] = partial(_rolled_back, runtime, config, environment, aws, guarded, revision, heads)
    if role == "fargate" and not image_tag:
        reads["tag"] = partial(live_image_tag, aws, environment)
    if role == "api":
        reads["keys"] = partial(current_code_keys, aws, config, environment)
    if not dry_run and reads:  # what the guard and the inputs were read from: still so under the lock?
        reads["record"] = partial(_planned_from, aws, environment)
    with aws_errors(environment):
        read = at_once(reads)  # the history and the stack's inputs: one round trip
    auto.refuse_deploying_again(read.get("again", {}), revision.sha, environment)
    tag = image_tag or read.get("tag", "")
    keys, uploads = read.get("keys", ({}, []))
    with aws_errors(environment):
        outputs = StackOutputs.of(aws)
        missing = [name for other, name in planner.stack_roles(environment).items() if other != role]
        missing = [name for name in missing if outputs(name) is None] if smoke else []
    if missing:  # a new environment, built stack by stack: no app to check end to end yet
        runtime.stderr.write(
            f"ℹ️  no smoke: {environment.name} is not fully deployed ({', '.join(missing)} not there), so there is no "
            f"app to check end to end yet; inv deploy.full --env {environment.name} deploys it all\n"
        )
        smoke = False
    plan = planner.deploy_stack_plan(
        config,
        environment,
        stack,
        image_tag=tag,
        code_keys=keys,
        uploads=uploads,
        allow_replace=allow_replace,
        approve_access=approve_access,
        force_synth=force_synth,
        smoke=smoke,
        revision=revision,
        new_image=bool(image_tag),
    )
    live_sha = ((read.get("record") or {}).get(f"stack:{role}") or {}).get("sha")  # as the live record has it
    taken = _commits_since(config, f"stack:{role}", live_sha, revision)
    plan = dataclasses.replace(plan, unpromoted=promotion.unpromoted, commits=taken)
    if image_tag and role == planner.HOSTED_BY["app"]:  # the stack rolls that image out: the app is live at it too
        plan = dataclasses.replace(plan, deploys=(*plan.deploys, ("app", image_tag)))
    return run_plan(
        runtime, config, environment, plan, dry_run=dry_run, as_json=as_json, aws=aws, planned_from=read.get("record")
    )


@heard_when_not_run(lambda name, **_: f"deploy.lambda {name}")
def deploy_lambda(
    name: str,
    *,
    env: str | None = None,
    allow_dirty: bool = False,
    allow_older: bool = False,
    smoke: bool = True,
    dry_run: bool = False,
    as_json: bool = False,
    rollback: bool = True,
    canary: str | None = None,
    bake: str | None = None,
    unpromoted: bool = False,
    allow_rolled_back: bool = False,
    runtime: Runtime | None = None,
) -> RunReport | None:
    """The Lambda fast path for one function of lambda/: upload, update code, publish, [canary,] move the alias;
    smoke. Moving the alias onto a commit behind the one it serves is refused unless ``allow_older``, and onto the
    function as a person's rollback took it off unless ``allow_rolled_back``; ``canary`` and ``bake`` replace the
    environment's canary settings (deploykit.canary)."""
    runtime = runtime or Runtime()
    config, environment = _load(runtime, env)
    environment = _with_canary(environment, canary, bake)
    lambda_chain.function_folder(config, name)  # an unknown function is refused before anything else
    revision = _revision(config, allow_dirty)
    aws = runtime.aws_factory(environment)
    with aws_errors(environment):
        function_name = lambda_chain.deployed_function(StackOutputs.of(aws), environment, name)
    component = f"lambda:{name}"
    reads: dict[str, Callable[[], Any]] = {}
    if not allow_older:
        reads["live"] = partial(lambda_chain.live_git_sha, aws.client("lambda"), function_name)
    if not allow_rolled_back:
        reads["again"] = partial(_rolled_back, runtime, config, environment, aws, [component], revision)
    if not dry_run and reads:  # what the guards were checked against: still so under the lock?
        reads["record"] = partial(_planned_from, aws, environment)
    with aws_errors(environment):
        read = at_once(reads)  # the commit the alias serves and the history: one round trip
    if "live" in read:
        _refuse_older(config, environment, component, read["live"], revision)
    auto.refuse_deploying_again(read.get("again", {}), revision.sha, environment)
    # a dry run too, as deploy.auto's: it shows whether the deploy would be let through
    promotion = require_promoted(runtime, config, environment, revision, [component], unpromoted=unpromoted)
    plan = lambda_chain.lambda_plan(config, environment, revision, name, function_name=function_name, smoke=smoke)
    taken = _commits_since(config, component, read.get("live"), revision)
    plan = dataclasses.replace(plan, unpromoted=promotion.unpromoted, commits=taken)
    return run_plan(
        runtime,
        config,
        environment,
        plan,
        dry_run=dry_run,
        as_json=as_json,
        aws=aws,
        rollback=rollback,
        planned_from=read.get("record"),
    )


def _commits_since(
    config: Config, component: str, live: str | None, revision: git.Revision
) -> tuple[tuple[str, str, str], ...]:
    """The commits a deploy of ``component`` takes live (deploy.auto's 📝 lines, for its record and the plugins):
    those behind its changes since ``live``, its live SHA or image tag as the guard against going back read it;
    none when that is unknown (not read: --allow-older; never deployed; a commit this clone lacks)."""
    if not live:
        return ()
    try:
        found = changes.detect(config, {component: live}, include_uncommitted=bool(revision.dirty))
    except DeployKitError:
        return ()
    return changes.as_taken(changes.commits_behind(config.root, found))


def _with_watch(environment: EnvConfig, duration: str | None) -> EnvConfig:
    if duration is None:
        return environment
    seconds = watch.parse_duration(duration, "--watch-errors")
    return dataclasses.replace(
        environment, app_error_watch=dataclasses.replace(environment.app_error_watch, seconds=seconds)
    )


def _with_canary(environment: EnvConfig, percent: str | None, bake: str | None) -> EnvConfig:
    if percent is None and bake is None:
        return environment
    return dataclasses.replace(
        environment, lambda_canary=lambda_canary.with_options(environment.lambda_canary, percent, bake)
    )


@heard_when_not_run("rollback")
def rollback(
    *,
    env: str | None = None,
    to: str | None = None,
    component: str | None = None,
    run: str | None = None,
    smoke: bool = True,
    allow_replace: bool = False,
    approve_access: bool = False,
    dry_run: bool = False,
    as_json: bool = False,
    runtime: Runtime | None = None,
) -> RunReport | None:
    """Put the app (a fresh task-definition revision with an earlier image), one Lambda function (its alias on an
    earlier version) or one stack (its template as an earlier commit's cdk/ synthesizes it, what runs kept) back
    on commit ``to``, else on the previous successful deploy in the history; then smoke. ``run`` (a record id, or
    ``last``): every component that run deployed back to what was live before it, in one plan, smoke once.

    Refuses (UsageError, nothing changed) what cannot be rolled back to: an image no longer in the registry, a
    Lambda commit no version runs (tagged with it, or with its code), a commit this clone lacks (a stack), an
    empty history. ``allow_replace`` and ``approve_access`` are deploy.stack's, for a stack. See deploykit.rollback."""
    runtime = runtime or Runtime()
    config, environment = _load(runtime, env)
    if run is not None and (component is not None or to is not None):
        raise UsageError(
            f"--run goes alone: it puts back every component of that run as it was before it, not with "
            f"{'--to' if to is not None else '--component'}",
            next_step="leave out --component and --to, or --run",
        )
    target_component = (
        None if run is not None else rollbacks.parse_component(component or "app", config, env=environment)
    )
    if target_component is not None and target_component.kind != "stack" and (allow_replace or approve_access):
        flag = "--allow-replace" if allow_replace else "--approve-access"
        raise UsageError(f"{flag} is for a stack's rollback", next_step="leave it out, or use --component stack:<role>")
    aws = runtime.aws_factory(environment)
    # what is live as this rollback starts, read while it works out what to go back to: checked again under its lock
    reading = None if dry_run else _LiveBefore(runtime, aws, environment)
    back = partial(
        _rollback_of,
        runtime,
        config,
        environment,
        aws,
        allow_replace=allow_replace,
        approve_access=approve_access,
        preview=dry_run,
    )
    if target_component is None:
        plan = _run_rollback_plan(runtime, environment, aws, str(run), back, smoke=smoke)
        if plan is None:
            if as_json:
                runtime.stdout.write(nothing_to_do_json(environment.name, f"rollback run {run}") + "\n")
            return None
    else:
        target, found = back(target_component, to, smoke=smoke)
        if found is None:
            if as_json:
                runtime.stdout.write(nothing_to_do_json(environment.name, target.title) + "\n")
            return None
        plan = found
    look = f"look at what is live then (inv history --env {environment.name}); rerun the rollback if it is still wanted"
    try:
        report = run_plan(
            runtime,
            config,
            environment,
            plan,
            dry_run=dry_run,
            as_json=as_json,
            aws=aws,
            planned_from=reading.result() if reading is not None else None,
        )
    except lock.LockHeld as held:  # never waited for: what a rollback goes back from may change meanwhile
        raise UsageError(
            held.message,
            next_step=f"wait for it to finish, {look} (a rollback does not wait for the lock: the deploy it would "
            f"wait for changes what it goes back from); if that deploy is dead (killed, its machine gone), break the "
            f"lock: inv unlock --env {environment.name}",
        ) from None
    except Superseded as stale:  # not started again: what it would go back from is another deploy's now
        raise UsageError(stale.message, next_step=look) from None
    if report is not None and report.ok:
        _still_in_head(runtime, config, environment, aws, report.plan)
    return report


def _still_in_head(runtime: Runtime, config: Config, env: EnvConfig, aws: AwsFactory, plan: Plan) -> None:
    """After a rollback: say which of its components HEAD still has as the rollback found them, which the next
    deploy.auto refuses to bring back (auto.deploying_again). Best effort: a read that fails says nothing."""
    try:
        found = history.History.of(aws, env)
        records = found.records(1) if found else []  # the rollback's own record
        revision = _revision(config, allow_dirty=True)
        deployed = {component for component, _ in plan.deploys}
        again = auto.deploying_again(config, records, deployed, uncommitted=bool(revision.dirty))
    except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError, DeployKitError):
        return
    for why in again.values():
        runtime.stderr.write(
            f"⛔ HEAD ({revision.short}) still has {why}: the next inv deploy.auto refuses to bring it back; "
            "revert or fix it in a commit\n"
        )


RollbackOf = Callable[..., "tuple[rollbacks.Target, Plan | None]"]


def _rollback_of(
    runtime: Runtime,
    config: Config,
    env: EnvConfig,
    aws: AwsFactory,
    component: rollbacks.Component,
    to: str | None,
    *,
    smoke: bool,
    allow_replace: bool,
    approve_access: bool,
    preview: bool,
    why: str | None = None,
    rerun: str | None = None,
    known: tuple[Sequence[history.Record], Mapping[str, Mapping[str, str]]] | None = None,
    removing: Collection[str] = (),
    restoring: Mapping[str, str] | None = None,
) -> tuple[rollbacks.Target, Plan | None]:
    """Resolve one component's rollback and say it (``why`` in place of where its target comes from); the plan, or
    None when it already runs the target. ``known``: the history's records and live record, read already.
    ``removing``, ``restoring``: functions the API stack's rollback takes out, or brings back (function → the commit
    it ran), when a run that added or took them out is undone."""
    with aws_errors(env):
        if component.kind == "stack":
            target = rollbacks.resolve_stack(aws, config, env, component, to, known=known)
        else:
            target, plan = rollbacks.rollback_plan(
                aws,
                env,
                component,
                to=to,
                smoke=smoke,
                code_at=partial(
                    lambda_chain.code_at,
                    config.root,
                    component.function,
                    architecture=config.lambda_architecture_for(env),
                ),
            )
    what = target.component.key + (f" (version {target.version})" if target.version else "")
    if target.live == target.sha:
        runtime.stderr.write(f"✅ nothing to roll back: {what} already runs {target.sha} in {env.name}\n")
        return target, None
    runtime.stderr.write(
        f"⏪ rollback {what} in {env.name}: {target.live or '(unknown)'} → {target.sha} [{why or target.source}]\n"
    )
    if component.kind == "stack":
        plan = _stack_rollback_plan(
            runtime,
            config,
            env,
            aws,
            target,
            allow_replace=allow_replace,
            approve_access=approve_access,
            smoke=smoke,
            preview=preview,
            rerun=rerun
            or inv_command("rollback", "--component", target.component.key, "--to", target.sha, env=env.name),
            removing=removing,
            restoring=restoring or {},
        )
    return target, plan


def _run_rollback_plan(
    runtime: Runtime, env: EnvConfig, aws: AwsFactory, run: str, go_back: RollbackOf, *, smoke: bool
) -> Plan | None:
    """One plan that puts every component the run deployed back on what was live before it, in a deploy's order
    and side by side as a deploy (the stacks by level, the functions, the app: see rollbacks.run_plan_of); None when
    each already is."""
    with aws_errors(env):
        found = _history(aws, env, runtime)
        reads: dict[str, Callable[[], Any]] = {
            "records": partial(found.records, rollbacks.HISTORY_DEPTH),
            "live": found.live,
        }
        read = at_once(reads)
    records: list[history.Record] = read["records"]
    record = rollbacks.find_run(records, run, env)
    newer = records[: records.index(record)]
    targets = rollbacks.undo_targets(record, newer, read["live"], env)
    # functions the run added and those it took out: the API stack's rollback takes out the first, brings back the
    # others
    added, back = rollbacks.taken_out(record), rollbacks.restored(record)
    listed = ", ".join(
        [f"{c} → {sha}" for c, sha in targets]
        + [f"{c} taken out (the run added it)" for c in added]
        + [f"{c} back at {sha} (the run took it out)" for c, sha in back.items()]
    )
    runtime.stderr.write(
        f"⏪ rollback run {record.id} ({record.command} at {record.when} by {record.who}) in {env.name}: {listed}\n"
    )
    why, rerun = f"live before run {record.id}", inv_command("rollback", "--run", record.id, env=env.name)
    known = (records, read["live"])  # a stack's resolution reads no history again
    removing = [c.removeprefix("lambda:") for c in added]
    restoring = {c.removeprefix("lambda:"): sha for c, sha in back.items()}
    plans = [
        (c, plan)
        for c, sha in targets
        if (
            plan := go_back(
                rollbacks.component_of(c),
                sha,
                smoke=False,
                why=why,
                rerun=rerun,
                known=known,
                removing=removing,
                restoring=restoring,
            )[1]
        )
    ]
    return rollbacks.run_plan_of(env, record, plans, smoke=smoke) if plans else None


def _stack_rollback_plan(
    runtime: Runtime,
    config: Config,
    env: EnvConfig,
    aws: AwsFactory,
    target: rollbacks.Target,
    *,
    allow_replace: bool,
    approve_access: bool,
    smoke: bool,
    preview: bool = False,
    rerun: str = "",
    removing: Collection[str] = (),
    restoring: Mapping[str, str] | None = None,
) -> Plan:
    """The stack's template at the commit (as its deploy kept it, else synthesized from the commit) deployed with
    what runs now: the live image tag, the code keys
    the functions' ``live`` aliases serve (else the API stack's parameters); the functions of ``removing`` taken
    out, those of ``restoring`` (function → commit) brought back, packaged as in their commit and uploaded first.
    With ``preview`` (a dry run), first print the change it would make (a change set made and deleted, as inv diff
    does)."""
    role = target.component.role
    stack = planner.stack_roles(env)[role]

    def say(line: str) -> None:
        runtime.stderr.write(f"⚙️  {line}\n")

    live: dict[str, str] = {}
    functions: dict[str, str] = {}
    with aws_errors(env):
        if role == planner.HOSTED_BY["app"]:
            live[planner.IMAGE_PARAMETER] = live_image_tag(aws, env)
        if role == planner.HOSTED_BY["lambda"]:
            functions = lambda_chain.deployed_functions(StackOutputs.of(aws), env, required=False)
            keys = _code_keys_live(aws, env, functions, functions)
            live.update({planner.code_parameter(fn): key for fn, key in keys.items()})
    with aws_errors(env):
        origin = target.deployed_from or target.sha  # runs since its deploy counted it unchanged: that template
        synthesis = rollbacks.kept_template(config, aws, env, stack, origin)
        if synthesis is not None and origin != target.sha:
            say(
                f"{stack} at {target.sha}: the template it was deployed with from {origin} (the runs since counted "
                f"it unchanged), kept in {env.name} (no synthesis)"
            )
        elif synthesis is not None:
            say(f"{stack} at {target.sha}: the template it was deployed with then, kept in {env.name} (no synthesis)")
        else:
            synthesis = rollbacks.synthesize_at(
                config,
                env,
                target.sha,
                account=aws.account(),
                ecr=aws.client("ecr"),
                say=say,
            )
    template = synthesis.template(stack)
    body = json.loads(template.read_text())
    # a function the template has and nothing runs now (taken out since): back, packaged as in its commit (the one
    # it ran before the run being undone took it out, else the template's), uploaded first
    uploads: list[Step] = []
    brought: list[tuple[str, str]] = []
    if role == planner.HOSTED_BY["lambda"]:
        for fn, parameter in sorted(planner.code_parameters(body).items()):
            if fn in functions:
                continue
            commit = (restoring or {}).get(fn, target.sha)
            folder, package = rollbacks.package_at(config, env, fn, commit)
            live[parameter] = package.key
            uploads.append(UploadLambdaCode.of(fn, folder, package, env.stacks.registry))
            brought.append((f"lambda:{fn}", commit))
            say(f"lambda:{fn} back, packaged as in {commit} ({len(package.zip_bytes)} B): {package.key}")
    parameters = rollbacks.template_parameters(
        body,
        live,
        stack=stack,
        sha=target.sha,
        live_functions=functions,
        removing=removing,
        restoring=sorted(restoring or {}) if role == planner.HOSTED_BY["lambda"] else (),
    )
    if preview:
        _preview_stack(runtime, config, aws, env, stack, template, dict(parameters), rerun=rerun)
    plan = rollbacks.stack_plan(
        env,
        target,
        template,
        parameters,
        allow_replace=allow_replace,
        approve_access=approve_access,
        smoke=smoke,
        rerun=rerun,
    )
    if not uploads:
        return plan
    return dataclasses.replace(plan, steps=(*uploads, *plan.steps), deploys=(*plan.deploys, *brought))


def logs(
    *,
    env: str | None = None,
    component: str = "app",
    since: str = "10m",
    task: str = "",
    limit: int = 200,
    follow: bool = False,
    as_json: bool = False,
    runtime: Runtime | None = None,
) -> list[applogs.LogLine]:
    """What a component (the app's containers, or one Lambda function) wrote since ``since``, from CloudWatch Logs:
    the newest ``limit`` lines on stdout, oldest first; with ``follow``, then each new line until interrupted."""
    runtime = runtime or Runtime()
    config, environment = _load(runtime, env)
    if limit < 1:
        raise UsageError(f"--limit must be at least 1 (got {limit})", next_step="pass --limit N with N of 1 or more")
    if follow and as_json:
        raise UsageError("--follow and --json do not go together", next_step="leave out one of them")
    which = rollbacks.parse_component(component, config, purpose="logs")
    if task and which.kind != "app":
        raise UsageError("--task names one of the app's tasks", next_step="leave out --task, or use --component app")
    start = applogs.parse_since(since, runtime.clock.now())
    aws = runtime.aws_factory(environment)
    with aws_errors(environment):
        if which.kind == "app":
            source = applogs.app_source(aws.client("ecs"), environment, task)
        else:
            function_name = lambda_chain.deployed_function(StackOutputs.of(aws), environment, which.function)
            source = applogs.lambda_source(aws.client("lambda"), which.function, function_name)
        streams = f", streams {source.stream_prefix}*" if source.stream_prefix else ""
        runtime.stderr.write(
            f"📜 {source.component} in {environment.name}: CloudWatch Logs {source.group}{streams}; "
            f"since {start:%Y-%m-%d %H:%M:%S} UTC (times in UTC)\n"
        )
        if follow:

            def emit(line: applogs.LogLine) -> None:
                runtime.stdout.write(line.render(source) + "\n")
                runtime.stdout.flush()

            try:
                applogs.follow(aws.client("logs"), source, start, clock=runtime.clock, emit=emit, limit=limit)
            except KeyboardInterrupt:  # the way to stop following: not an error
                runtime.stderr.write("\nstopped following\n")
            return []
        lines = applogs.read(aws.client("logs"), source, start, limit=limit)
    if as_json:
        document = {
            "environment": environment.name,
            "component": source.component,
            "group": source.group,
            "since": start.isoformat(),
            "lines": [line.to_json(source) for line in lines],
        }
        runtime.stdout.write(dumps(document) + "\n")
    else:
        runtime.stdout.writelines(line.render(source) + "\n" for line in lines)
    if not lines:
        runtime.stderr.write(f"no lines written since {start:%Y-%m-%d %H:%M:%S} UTC (try a longer --since)\n")
    elif len(lines) == limit:
        runtime.stderr.write(f"(the newest {limit}; --limit N for more)\n")
    return lines


RUN_STARTED_BY = "deploykit-run"  # inv run's tasks: ListTasks --started-by finds them
RUN_LAST_READS = 5  # reads of the task's log after it stopped, a second apart at most, while lines still come


def run_command(
    command: str,
    *,
    env: str | None = None,
    timeout: str = "10m",
    image_tag: str | None = None,
    as_json: bool = False,
    runtime: Runtime | None = None,
) -> dict[str, Any]:
    """``inv run``: ``command`` once in a one-off task of the revision the service runs, beside it (deploykit.oneoff):
    its output followed as it runs (stdout; stderr with ``as_json``), the task stopped past ``timeout`` or on Ctrl-C.
    StepFailed (exit 1) unless it exits 0. Nothing deployed changes: no lock, no freeze, no history. ``image_tag``:
    another image of the service's repository instead (one pushed, not yet deployed: a migration tried first), in a
    revision of the service's own with only that image changed (found, else registered); refused (exit 2) when the
    registry does not have it."""
    runtime = runtime or Runtime()
    _config, environment = _load(runtime, env)
    try:
        argv = shlex.split(command)
    except ValueError as exc:  # an unbalanced quote
        raise UsageError(f"the command cannot be split into its words: {exc}", next_step="check its quotes") from None
    if not argv:
        raise UsageError("name the command to run", next_step="inv run 'python -m app.release' (one string, quoted)")
    deadline = seconds_of(timeout)
    if deadline is None or deadline <= 0:
        raise UsageError(f"--timeout {timeout!r} is not a duration", next_step="pass one such as 300, 90s, 10m or 1h")
    aws = runtime.aws_factory(environment)
    out = runtime.stderr if as_json else runtime.stdout
    with aws_errors(environment):
        client = aws.client("ecs")
        service = ecs.describe_service(client, environment.cluster, environment.service, environment)
        revision = str(service["taskDefinition"])
        taskdefs = ecs.TaskDefinitions.of(aws)
        if image_tag:
            revision = _revision_of(runtime, aws, environment, taskdefs, revision, image_tag)
        tag = ecs.image_tag(taskdefs.image(revision, environment.container)) or "?"
        arguments = oneoff.run_task_arguments(
            service, environment.cluster, revision, environment.container, argv, RUN_STARTED_BY
        )
        arn = oneoff.start(client, arguments, f"a task of {ecs.revision_name(revision)}")
        task_id = arn.rsplit("/", 1)[-1]
        runtime.stderr.write(
            f"🏃 {oneoff.shown(argv)} in {environment.name}: task {task_id} of {ecs.revision_name(revision)} "
            f"({tag}), beside {environment.service}; Ctrl-C stops it\n"
        )
        tail = None
        where = ecs.log_stream(taskdefs.get(revision), environment.container, arn)
        if where is not None:  # its own stream: every line in it is the command's
            source = applogs.LogSource("app", *where)
            tail = applogs.Tail(aws.client("logs"), source, runtime.clock.now() - timedelta(minutes=5))
        else:
            runtime.stderr.write(f"   (its output is not followed: {environment.container} logs without awslogs)\n")

        def show_new() -> int:
            if tail is None:
                return 0
            try:
                lines = tail.new()
            except botocore.exceptions.ClientError:  # its stream is not there yet: the next poll reads it
                return 0
            for line in lines:
                out.write(line.message + "\n")
            out.flush()
            return len(lines)

        def state(status: str, elapsed: float) -> None:
            runtime.stderr.write(f"   [{elapsed:6.1f}s] task {status}\n")

        try:
            ended = oneoff.wait(
                client,
                runtime.clock,
                environment.cluster,
                arn,
                environment.container,
                timeout=deadline,
                poll=environment.poll_seconds,
                state=state,
                each=show_new,
            )
        except BaseException:  # Ctrl-C, SIGTERM, a call failed: the task does not run on alone
            oneoff.stop(client, environment.cluster, arn, "deploykit: inv run that started it stopped")
            runtime.stderr.write(f"⏹  task {task_id} stopped\n")
            raise
        show_new()  # what it wrote last, sent as it stopped; then whatever the log driver still sends, a little later
        for _ in range(RUN_LAST_READS if tail is not None else 0):
            runtime.clock.sleep(min(environment.poll_seconds, 1.0))
            if not show_new():
                break
    result = {
        "environment": environment.name,
        "command": argv,
        "task": arn,
        "task_definition": revision,
        "image_tag": tag,
        "exit_code": ended.exit_code,
        "seconds": round(ended.seconds, 3),
        "ok": ended.ok,
    }
    if as_json:
        runtime.stdout.write(dumps(result) + "\n")
    if not ended.ok:
        raise StepFailed(
            f"{oneoff.shown(argv)} {ended.what()} in task {task_id} of {environment.name}",
            next_step=f"its output again: inv logs --env {environment.name} --task {task_id} --since 1h",
        )
    runtime.stderr.write(f"✅ exited 0 after {ended.seconds:.1f}s (task {task_id})\n")
    return result


def tasks_list(
    *,
    env: str | None = None,
    stopped: int = task_list.STOPPED_SHOWN,
    as_json: bool = False,
    runtime: Runtime | None = None,
) -> list[task_list.TaskRow]:
    """The tasks of the service's family in its cluster (deploykit.task_list): the running ones, then the ``stopped``
    newest stopped ones, each with its revision, image, who started it, status, health, target and why it stopped."""
    if stopped < 0:
        raise UsageError(
            f"--stopped must be 0 or more (got {stopped})", next_step="pass --stopped N with N of 0 or more"
        )
    runtime = runtime or Runtime()
    _, environment = _load(runtime, env)
    aws = runtime.aws_factory(environment)
    with aws_errors(environment):
        found = task_list.read(aws, environment, stopped_shown=stopped)
    name = f"{environment.cluster}/{environment.service}"
    if as_json:
        document = {"env": environment.name, "service": name, "tasks": [r.to_json() for r in found]}
        runtime.stdout.write(dumps(document) + "\n")
    if not found:
        runtime.stderr.write(f"no task of {name} in {environment.name}, running or stopped within the hour\n")
        return found
    runtime.stderr.write(f"Tasks of {name} in {environment.name}, running first, then the newest stopped\n")
    runtime.stderr.write(task_list.table(found) + "\n")
    runtime.stderr.write(
        f"\nwhat a task wrote: inv logs --env {environment.name} --task ID (the first characters of its id do)\n"
    )
    return found


def _revision_of(
    runtime: Runtime, aws: AwsFactory, env: EnvConfig, taskdefs: ecs.TaskDefinitions, current: str, tag: str
) -> str:
    """For ``inv run --image-tag``: a revision of the service's that runs ``tag`` of the image's repository, once the
    registry is known to have it."""
    repository = ecs.image_repository(taskdefs.image(current, env.container))
    if not image_in_registry(aws, runtime.docker_factory, repository, tag):
        raise UsageError(
            f"the image {repository}:{tag} is not in the registry of {env.name}: nothing was run",
            next_step="push it first (inv push, for this checkout's commit), or name a tag inv history lists",
        )
    if env.image_scan.on and ecs.image_tag(taskdefs.image(current, env.container)) != tag:
        _judged(runtime, aws, env, tag)
    arn, registered = ecs.revision_running(
        aws.client("ecs"), taskdefs, current, env.container, f"{repository}:{tag}", tag
    )
    if registered:
        runtime.stderr.write(
            f"   registered {ecs.revision_name(arn)} to run {tag} (from {ecs.revision_name(current)})\n"
        )
    return arn


SCAN_SHOWN = 20  # findings listed by inv scan (its --json lists them all)


def scan_image(
    *, env: str | None = None, image_tag: str | None = None, as_json: bool = False, runtime: Runtime | None = None
) -> dict[str, Any]:
    """``inv scan``: ECR's scan of an image of the environment's repository (this checkout's, as ``inv push`` names
    it, unless ``image_tag``) judged as the environment's image scan gate judges it before a deploy (its severity,
    HIGH without a gate; its ignore list): waited for while in progress, asked for when ECR has none; its findings,
    most severe first. StepFailed (exit 1) when the gate would refuse a deploy of it; UsageError (exit 2) when the
    registry does not have the image. Nothing changes but a scan asked for."""
    runtime = runtime or Runtime()
    config, environment = _load(runtime, env)
    tag = image_tag or _revision(config, allow_dirty=True).of("app").tag
    gate = environment.image_scan
    severity = gate.severity or "HIGH"
    judge = dataclasses.replace(scan_gate.image_judge(environment, tag, "deploys it"), severity=severity)
    aws = runtime.aws_factory(environment)
    say = _line_on(runtime)
    with aws_errors(environment):
        found = judge.finished(aws.client("ecr"), runtime.clock, say)
    findings = sorted(found.findings, key=lambda f: (-scan_gate.rank(f.severity), f.name))
    verdict = scan_gate.judge(findings, found.tally, severity, gate.ignore)
    result = {
        "environment": environment.name,
        "image": judge.image,
        "status": found.status,
        "description": found.description,
        "severity": severity,
        "gate": gate.on,
        "counts": dict(found.tally),
        "findings": [dataclasses.asdict(f) for f in findings],
        "blocking": [f.name for f in verdict.blocking],
        "accepted": [f.name for f in verdict.accepted],
        "passed": found.status in scan_gate.JUDGED and verdict.passed,
    }
    if as_json:
        runtime.stdout.write(dumps(result) + "\n")
    whose = (
        f"{environment.name}'s image scan gate" if gate.on else f"{severity} (no image scan gate in {environment.name})"
    )
    say(f"🛡️  ECR's scan of {judge.image}: {found.status}, {verdict.counted()}; judged by {whose}")
    if findings:
        blocking, accepted = set(verdict.blocking), set(verdict.accepted)
        rows = [
            [f.name, f.severity, f.package, "stops a deploy" if f in blocking else "accepted" if f in accepted else ""]
            for f in findings[:SCAN_SHOWN]
        ]
        say(tabulate(rows, headers=["finding", "severity", "package", "gate"], tablefmt="simple"))
        if len(findings) > SCAN_SHOWN:
            say(f"... and {len(findings) - SCAN_SHOWN} more (--json lists them all)")
    try:
        detail, _counted = judge.judged(found)
    except UsageError as refused:  # what refuses a deploy fails this check (exit 1)
        raise StepFailed(refused.message, next_step=refused.next_step) from None
    say(f"✅ {detail}")
    return result


def _judged(runtime: Runtime, aws: AwsFactory, env: EnvConfig, tag: str) -> None:
    """For ``inv run --image-tag`` in an environment with an image scan gate: ECR's scan of an image the service
    does not run judged as a deploy's would be, before anything runs it (refused, exit 2, when it does not pass)."""
    say = _line_on(runtime)
    if scan_gate.skipped_by_hand():
        say(f"   ${scan_gate.SKIP_ENV}=1: ECR's scan of {tag} not judged")
        return
    judge = scan_gate.image_judge(env, tag, "runs it")
    detail, _counted = judge.judged(judge.finished(aws.client("ecr"), runtime.clock, say))
    say(f"   ECR's scan of {tag}: {detail}")


@heard_when_not_run(restart.TITLE)
def restart_app(
    *,
    env: str | None = None,
    smoke: bool = True,
    dry_run: bool = False,
    as_json: bool = False,
    runtime: Runtime | None = None,
) -> RunReport | None:
    """Every task of the service replaced by a fresh one of the revision it runs (deploykit.restart); then smoke.
    Nothing is built or deployed: no work-tree, commit or promotion guard applies, and a freeze does not refuse it."""
    plan_of = partial(restart.restart_plan, smoke=smoke)
    return _run_on_service(runtime or Runtime(), env, plan_of, dry_run=dry_run, as_json=as_json)


def _run_on_service(
    runtime: Runtime,
    env: str | None,
    plan_of: Callable[[EnvConfig, str], Plan],
    *,
    dry_run: bool,
    as_json: bool,
    refuse: Callable[[EnvConfig], None] = lambda _environment: None,
) -> RunReport | None:
    """A plan on the service as it runs (restart, pause), made by ``plan_of`` from the environment and the image tag
    the service runs (the commit its history record names; not read for a dry run), then run; ``refuse`` raises
    when the environment may not have it."""
    config, environment = _load(runtime, env)
    refuse(environment)
    aws = runtime.aws_factory(environment)
    with aws_errors(environment):
        tag = "" if dry_run else auto.live_image_tag_or_empty(aws, environment)
    plan = plan_of(environment, tag)
    return run_plan(runtime, config, environment, plan, dry_run=dry_run, as_json=as_json, aws=aws)


def pause_app(
    *,
    env: str | None = None,
    reason: str = "",
    dry_run: bool = False,
    as_json: bool = False,
    runtime: Runtime | None = None,
) -> RunReport | None:
    """The service scaled to 0 tasks, the count it ran kept in the environment (deploykit.pause); refused in a
    protected environment. Nothing is deployed: no work-tree, commit or promotion guard applies, nor a freeze.
    ``env`` a pattern of deploy.toml ("dev-*"): each deployed environment it made, one after the other."""
    one = partial(_pause_one, reason=reason, dry_run=dry_run)
    return _one_or_each(runtime or Runtime(), env, one, "pause", as_json=as_json)


@heard_when_not_run(pause.PAUSE_TITLE)
def _pause_one(
    *,
    env: str | None = None,
    reason: str = "",
    dry_run: bool = False,
    as_json: bool = False,
    runtime: Runtime | None = None,
) -> RunReport | None:
    """:func:`pause_app` on one environment."""

    def refuse(environment: EnvConfig) -> None:
        if environment.protected:
            raise UsageError(
                f"environment {environment.name!r} is protected in deploy.toml; pausing it would take its app down",
                next_step="pause development environments only; a protected one scales in its Fargate stack's settings",
            )

    def plan_of(environment: EnvConfig, tag: str) -> Plan:
        return pause.pause_plan(environment, tag, history.actor(), reason.strip())

    return _run_on_service(runtime or Runtime(), env, plan_of, dry_run=dry_run, as_json=as_json, refuse=refuse)


def resume_app(
    *,
    env: str | None = None,
    smoke: bool = True,
    dry_run: bool = False,
    as_json: bool = False,
    runtime: Runtime | None = None,
) -> RunReport | None:
    """A paused service scaled back to the count it ran, waited for until it serves; then smoke. Not paused: said,
    nothing to do (exit 0); a service at 0 tasks that inv pause did not pause: UsageError (its count is not known).
    ``env`` a pattern of deploy.toml ("dev-*"): each deployed environment it made, one after the other."""
    one = partial(_resume_one, smoke=smoke, dry_run=dry_run)
    return _one_or_each(runtime or Runtime(), env, one, "resume", as_json=as_json)


def _one_or_each(
    runtime: Runtime, env: str | None, one: Callable[..., RunReport | None], verb: str, *, as_json: bool
) -> RunReport | None:
    """``one`` (a command on one environment) on ``env``; on each deployed environment it made when ``env`` is a
    pattern of deploy.toml (:func:`_each_made`, which returns no report)."""
    if env and env in load_config(runtime.config_path).patterns:
        _each_made(runtime, env, one, verb, as_json=as_json)
        return None
    return one(env=env, as_json=as_json, runtime=runtime)


def _each_made(
    runtime: Runtime, pattern: str, one: Callable[..., RunReport | None], verb: str, *, as_json: bool
) -> None:
    """``one`` (a command on one environment) on each deployed environment ``pattern`` made, one after the other,
    each waiting for its own lock when allowed (:func:`until_unlocked`); one that fails or is refused does not stop
    the others. Each is said as it goes; ``as_json``: ``{"pattern", "environments": [{"env", "ok", "error",
    "next_step", "run"}]}`` at the end (``run``: its run report, null when there was nothing to do). Refused in
    every one it failed in: UsageError (exit 2); else failed in any: StepFailed (exit 1). Deployed: its registry
    stack (the artifacts bucket the pause lives in) is there."""
    config = load_config(runtime.config_path)
    made = _made_from(runtime, config, pattern)
    if isinstance(made, overview.EnvView):
        raise UsageError(
            f"the environments {pattern!r} made cannot be listed: {made.error}", next_step=made.next_step or ""
        )
    names = [name for name in made if config.environment(name).stacks.registry in made[name]]
    results: list[dict[str, Any]] = []
    errors: dict[str, DeployKitError] = {}
    for name in names:
        runtime.stderr.write(f"\n▸ {name}\n")
        try:
            report = until_unlocked(partial(one, env=name, as_json=False, runtime=runtime), runtime)
        except DeployKitError as exc:
            errors[name] = exc
            runtime.stderr.write(f"❌ {name}: {exc}\n")  # its message and next step, as a command's error prints
            results.append({"env": name, "ok": False, "error": exc.message, "next_step": exc.next_step, "run": None})
        else:
            run = report.to_json() if report is not None else None
            results.append({"env": name, "ok": True, "error": None, "next_step": None, "run": run})
    if not names:
        runtime.stderr.write(f"no deployed environment made from {pattern!r}: nothing to {verb}\n")
    if as_json:
        runtime.stdout.write(dumps({"pattern": pattern, "environments": results}) + "\n")
    if errors:
        what = f"{verb} failed in {len(errors)} of {len(names)} environments made from {pattern!r}: {', '.join(errors)}"
        step = f"see each above; inv {verb} --env NAME again for one"
        if all(exc.exit_code == 2 for exc in errors.values()):
            raise UsageError(what.replace("failed in", "refused in", 1), next_step=step)
        raise StepFailed(what, next_step=step)
    return None


@heard_when_not_run(pause.RESUME_TITLE)
def _resume_one(
    *,
    env: str | None = None,
    smoke: bool = True,
    dry_run: bool = False,
    as_json: bool = False,
    runtime: Runtime | None = None,
) -> RunReport | None:
    """:func:`resume_app` on one environment."""
    runtime = runtime or Runtime()
    config, environment = _load(runtime, env)
    aws = runtime.aws_factory(environment)
    with aws_errors(environment):
        kept, desired = pause.read_state(aws, environment)
    paused = pause.in_force(kept, desired)
    if desired is None:
        raise UsageError(
            f"{environment.name} has no service {environment.service} to resume",
            next_step=f"deploy it: inv deploy.full --env {environment.name}",
        )
    if paused is None:
        if desired == 0:
            raise UsageError(
                f"{environment.service} in {environment.name} runs no task, but inv pause did not pause it: the count "
                "to come back to is not known",
                next_step=f"deploy the Fargate stack (inv deploy.stack {environment.stacks.fargate} --env "
                f"{environment.name}) for its count, or: aws ecs update-service --cluster {environment.cluster} "
                f"--service {environment.service} --desired-count N",
            )
        runtime.stderr.write(
            f"☀️  {environment.name} is not paused: {environment.service} wants {desired} task(s); nothing to do\n"
        )
        if as_json:
            runtime.stdout.write(nothing_to_do_json(environment.name, pause.RESUME_TITLE) + "\n")
        return None
    tag = "" if dry_run else auto.live_image_tag_or_empty(aws, environment)
    plan = pause.resume_plan(environment, paused, tag, smoke=smoke)
    return run_plan(runtime, config, environment, plan, dry_run=dry_run, as_json=as_json, aws=aws)


@heard_when_not_run("deploy.full")
def deploy_full(
    *,
    env: str | None = None,
    allow_dirty: bool = False,
    smoke: bool = True,
    approve_access: bool = False,
    dry_run: bool = False,
    as_json: bool = False,
    unpromoted: bool = False,
    allow_rolled_back: bool = False,
    runtime: Runtime | None = None,
) -> RunReport | None:
    """Every stack in dependency order, the image of this commit and its Lambda zips included; then smoke. Refuses,
    as deploy.auto does, to bring back a component as a person's rollback took it off, unless ``allow_rolled_back``."""
    runtime = runtime or Runtime()
    config, environment = _load(runtime, env)
    revision = _revision(config, allow_dirty)
    aws = runtime.aws_factory(environment)
    # a dry run too: the plan of a promoted app copies the image its source runs
    components = changes.components_of(config)
    reads: dict[str, Callable[[], Any]] = {}
    if not allow_rolled_back:
        reads["again"] = partial(_rolled_back, runtime, config, environment, aws, components, revision)
    if not dry_run and reads:  # what the guard was checked against: still so under the lock?
        reads["record"] = partial(_planned_from, aws, environment)
    with aws_errors(environment):
        read = at_once(reads)  # the history and the live record: one round trip
    auto.refuse_deploying_again(read.get("again", {}), revision.sha, environment)
    promotion = require_promoted(runtime, config, environment, revision, components, unpromoted=unpromoted)
    plan = planner.full_plan(
        config,
        environment,
        revision,
        repository_uri="",
        smoke=smoke,
        approve_access=approve_access,
        promoted=promotion.image,
    )
    plan = dataclasses.replace(plan, unpromoted=promotion.unpromoted)
    return run_plan(
        runtime, config, environment, plan, dry_run=dry_run, as_json=as_json, aws=aws, planned_from=read.get("record")
    )


@heard_when_not_run("destroy")
def destroy(
    *,
    env: str | None = None,
    include_data: bool = False,
    dry_run: bool = False,
    as_json: bool = False,
    runtime: Runtime | None = None,
) -> RunReport | None:
    """Delete the stacks in reverse order; those holding data only with include_data. Refuses protected envs."""
    runtime = runtime or Runtime()
    config, environment = _load(runtime, env)
    if environment.protected:
        raise UsageError(
            f"environment {environment.name!r} is protected in deploy.toml; destroy refuses it",
            next_step="delete its stacks by hand if you really mean it, or set protected = false",
        )
    plan = planner.destroy_plan(environment, include_data=include_data, components=changes.components_of(config))
    return run_plan(runtime, config, environment, plan, dry_run=dry_run, as_json=as_json)


def endpoints_if_deployed(aws: AwsFactory, env: EnvConfig) -> Endpoints | None:
    """The environment's endpoints; None when some of its stacks are not deployed (a bad override still fails)."""
    try:
        return resolve_endpoints(StackOutputs.of(aws), env, env.endpoints)
    except ConfigError:
        raise
    except UsageError:
        return None


def endpoints(*, env: str | None = None, as_json: bool = False, runtime: Runtime | None = None) -> Endpoints:
    """The environment's endpoints from its stacks' outputs and deploy.toml's overrides; printed as a table."""
    runtime = runtime or Runtime()
    _config, environment = _load(runtime, env)
    aws = runtime.aws_factory(environment)
    with aws_errors(environment):
        found = resolve_endpoints(StackOutputs.of(aws), environment, environment.endpoints)
    data = found.to_json()
    if as_json:
        runtime.stdout.write(dumps(data) + "\n")
    else:
        rows = []
        for key, value in data.items():
            if key == "outputs":
                continue
            if isinstance(value, dict):
                rows += [[f"{key}.{k}", v] for k, v in value.items()]
            else:
                rows.append([key, value])
        runtime.stderr.write(tabulate(rows, headers=["endpoint", "value"]) + "\n")
    return found


# -- checks -----------------------------------------------------------------------------------------------------


def smoke(
    *,
    env: str | None = None,
    only: Sequence[str] | None = None,
    as_json: bool = False,
    junit: Path | None = None,
    runtime: Runtime | None = None,
) -> list[CheckResult]:
    """Run every registered check (or ``only`` those) against the environment; raise StepFailed if one fails."""
    runtime = runtime or Runtime()
    config, environment = _load(runtime, env)
    plugins = load_plugins(runtime, config)
    aws = runtime.aws_factory(environment)
    with aws_errors(environment):
        _in_its_account(aws, environment)  # the checks make throwaway users and cases: not in another account
        results = smoke_checks.run_smoke(plugins, environment, aws, only=only)
    runtime.stderr.write(table(results) + "\n")
    if junit is not None:
        junit.parent.mkdir(parents=True, exist_ok=True)
        junit.write_text(junit_xml(results, suite=f"deploykit.smoke.{environment.name}") + "\n")
    data = {
        "env": environment.name,
        "ok": all(r.status != "failed" for r in results),
        "checks": [
            {"name": r.name, "status": r.status, "seconds": round(r.seconds, 3), "detail": r.detail} for r in results
        ],
    }
    if as_json:
        runtime.stdout.write(dumps(data) + "\n")
    observe(plugins, "deploykit_smoke_finished", _line_on(runtime), env=environment.name, report=data)
    error = smoke_checks.failure(results, environment.name)
    if error is not None:
        try:  # the likeliest cause, read only now: a paused environment answers 503
            paused = pause.read(aws, environment)
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError, DeployKitError):
            paused = None  # the checks' own detail stands
        if paused is not None:
            error.next_step = (
                f"{paused.describe(environment.name)}: nothing serves the ALB; inv resume --env {environment.name} "
                f"starts {paused.tasks} again, then smoke again"
            )
        raise error
    runtime.stderr.write(f"✅ smoke passed on {environment.name}: {smoke_checks.summary(results)}\n")
    return results


def health_report(
    *, env: str | None = None, as_json: bool = False, runtime: Runtime | None = None
) -> health.HealthReport:
    """The environment at a glance, its findings and recommendations; StepFailed when something is broken."""
    runtime = runtime or Runtime()
    config, environment = _load(runtime, env)
    aws = runtime.aws_factory(environment)
    with aws_errors(environment):
        found = endpoints_if_deployed(aws, environment)  # None: the report says which stacks are missing
        reads: dict[str, Callable[[], Any]] = {
            "report": partial(health.gather, aws, environment, found),
            "deploys": partial(_deploys_read, config, aws, environment, found, runtime.clock),
        }
        read = at_once(reads)  # the environment's parts and its deploys, at the same time
    report: health.HealthReport = read["report"]
    _deploys_health(runtime, environment, read["deploys"], report)
    if not environment.is_local:
        try:
            found_account = aws.shared(caller_account)
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError):
            found_account = None  # the other parts have said what the credentials cannot do
        if found_account:
            findings, recommendations = health.account_advice(environment, found_account)
            report.findings += findings
            report.recommendations += recommendations
    runtime.stderr.write(health.render(report) + "\n")
    if as_json:
        runtime.stdout.write(dumps(report.to_json()) + "\n")
    if report.broken:
        broken = [f.what for f in report.findings if f.severity == "broken"]
        raise StepFailed(
            f"environment {environment.name!r} has {len(broken)} broken part(s): {'; '.join(broken)}",
            next_step="run the command shown under each finding above",
        )
    return report


def _deploys_read(
    config: Config, aws: AwsFactory, env: EnvConfig, endpoints: Endpoints | None, clock: Clock
) -> dict[str, Any] | Exception | None:
    """For :func:`_deploys_health`: the newest run, the deploy lock, the freeze, the pause, and what runs other than
    deploykit's last deploy of it left (``unverified``), read at once; None without an artifacts bucket; the error
    when the history cannot be read."""
    unverified: dict[str, str] = {}
    try:
        store = history.History.of(aws, env)
        env_lock = lock.EnvLock.of(aws, env, clock=clock)
        if store is None or env_lock is None:
            return None
        reads: dict[str, Callable[[], Any]] = {
            "newest": partial(store.records, 1),
            "lock": env_lock.read,
            "freeze": partial(freeze.read, aws, env, store.bucket),
            "pause": partial(pause.read_object, aws, env, store.bucket),
            "live": partial(auto.live_components, aws, config, env, endpoints, unverified),
        }
        return {**at_once(reads), "unverified": unverified}  # one round trip for them all
    except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
        return exc


def _deploys_health(
    runtime: Runtime, env: EnvConfig, read: dict[str, Any] | Exception | None, report: health.HealthReport
) -> None:
    """Add the last recorded run, the deploy lock, a freeze in force and a pause to ``report`` (a paused service's
    missing tasks are the pause's one finding, not broken), and a finding for each
    component that runs something else than deploykit's last deploy of it left (the app's service another image, a
    stack or a Lambda version changed outside deploykit: what deploy.auto deploys again), as :func:`_deploys_read`
    read them; nothing when there is no artifacts bucket."""
    if read is None:
        return
    if isinstance(read, Exception):
        report.rows.append(health.Row("last deploy", "-", "unknown", f"the history cannot be read: {read}"))
        return
    newest: list[history.Record] = read["newest"]
    held: lock.Found | None = read["lock"]
    unverified: dict[str, str] = read["unverified"]
    rows, findings = health.deploy_rows(
        env.name, newest[0] if newest else None, held.info if held else None, runtime.clock.now(), report.shifting
    )
    report.rows += rows
    frozen = freeze.in_force(read["freeze"], env, runtime.clock.now())
    if frozen is not None:
        by = "deploy.toml" if frozen.window else frozen.owner
        report.rows.append(health.Row("deploy freeze", by, "frozen", f"{frozen.describe(env.name)}; deploys refused"))
    paused = pause.in_force(read["pause"], report.desired)
    if paused is not None:  # what explains the service's missing tasks: said once, as what it is
        report.rows.append(health.Row("pause", paused.owner, "paused", paused.describe(env.name)))
        report.findings = [f for f in report.findings if f.cause != health.NO_TASKS]
        findings = [
            *findings,
            health.Finding(
                "warning",
                f"{paused.describe(env.name)}: no task runs, the ALB answers 503",
                f"inv resume --env {env.name} starts {paused.tasks} again (any deploy wakes it too)",
            ),
        ]
    report.findings += findings
    report.findings += [
        health.Finding(
            "warning",
            why.removesuffix(auto.AGAIN),
            f"inv diff --env {env.name} shows it; inv deploy.auto --env {env.name} deploys {component} again as "
            "the checkout has it (commit a hand-made change first to keep it)",
        )
        for component, why in sorted(unverified.items())
    ]


def envs(*, as_json: bool = False, runtime: Runtime | None = None) -> list[overview.EnvView]:
    """Every environment of deploy.toml at a glance: what it runs (each component's live commit against HEAD), its
    last run and its lock; one whose AWS cannot be read is shown so (see deploykit.overview)."""
    runtime = runtime or Runtime()
    config = load_config(runtime.config_path)
    head = git.head_sha(config.root)

    def one(environment: EnvConfig) -> overview.EnvView:
        try:
            read = overview.read_environment(runtime.aws_factory(environment), environment, runtime.clock)
            return overview.view(config, head, environment, read)
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError, DeployKitError) as exc:
            error = translate_error(exc, environment)
            return overview.EnvView(
                environment.name, environment.region, error=error.message, next_step=error.next_step
            )

    # deploy.toml's own environments read while each pattern's are found (overview.made_from); then those
    reads: dict[tuple[str, str], Callable[[], Any]] = {
        **{("env", name): partial(one, environment) for name, environment in config.environments.items()},
        **{("pattern", pattern): partial(_made_from, runtime, config, pattern) for pattern in config.patterns},
    }
    first = at_once(reads)
    environments = dict(config.environments)
    errors: list[overview.EnvView] = []
    patterns: dict[str, str] = {}  # environment → the pattern that made it
    stacks: dict[str, tuple[str, ...]] = {}  # environment → its stacks there
    for pattern in config.patterns:  # after deploy.toml's own, by pattern
        made = first["pattern", pattern]
        if isinstance(made, overview.EnvView):
            errors.append(made)
        else:
            made = {name: found for name, found in made.items() if name not in config.environments}  # read already
            environments.update((name, config.environment(name)) for name in made)
            patterns.update(dict.fromkeys(made, pattern))
            stacks.update(made)
    found = {name: view for (kind, name), view in first.items() if kind == "env"}
    found |= at_once({name: partial(one, environments[name]) for name in patterns})
    views = overview.with_promotion(config, [found[name] for name in environments] + errors)
    views = overview.with_patterns(views, patterns, runtime.clock.now(), stacks)
    runtime.stderr.write(overview.render(views, head) + "\n")
    if as_json:
        runtime.stdout.write(dumps(overview.to_json(views, head)) + "\n")
    return views


def _made_from(runtime: Runtime, config: Config, pattern: str) -> dict[str, tuple[str, ...]] | overview.EnvView:
    """The deployed environments ``pattern`` made (overview.made_from); when its AWS cannot be read, a view of the
    pattern that says why."""
    sample = config.environment(pattern.replace("*", SAMPLE_PART))  # the account and region they all live in
    try:
        return overview.made_from(runtime.aws_factory(sample), config, pattern)
    except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError, DeployKitError) as exc:
        error = translate_error(exc, sample)
        return overview.EnvView(pattern, sample.region, error=error.message, next_step=error.next_step)


def _history(aws: AwsFactory, environment: EnvConfig, runtime: Runtime | None = None) -> history.History:
    """The environment's history (a record that cannot be read is passed over, said on ``runtime``'s stderr);
    UsageError when it has none."""
    found = history.History.of(aws, environment, warn=_warner(runtime))
    if found is None:
        raise UsageError(
            f"environment {environment.name!r} has no history: its registry stack is not deployed",
            next_step=f"deploy it: inv deploy.full --env {environment.name}",
        )
    return found


def history_list(
    *,
    env: str | None = None,
    limit: int = 20,
    component: str | None = None,
    as_json: bool = False,
    commits: bool = False,
    runtime: Runtime | None = None,
) -> list[history.Record]:
    """The environment's newest deployments (who, when, what, result), newest first; with ``component`` (app,
    lambda:<fn>, stack:<role or name>) only the runs that deployed it, and only its live entry; with ``commits``,
    under the table, the commits each run took live."""
    if limit < 1:
        raise UsageError(f"--limit must be at least 1 (got {limit})", next_step="pass --limit N with N of 1 or more")
    runtime = runtime or Runtime()
    config, environment = _load(runtime, env)
    key = _history_component(config, environment, component) if component else None
    aws = runtime.aws_factory(environment)
    with aws_errors(environment):
        found = _history(aws, environment, runtime)
        reads: dict[str, Callable[[], Any]] = {
            "records": partial(found.records_of, key, limit) if key else partial(found.records, limit),
            "live": partial(_live_or_said, runtime, found),
        }
        read = at_once(reads)
    records: list[history.Record] = read["records"]
    live: dict[str, dict[str, str]] = read["live"]
    if key:
        live = {c: v for c, v in live.items() if c == key}
    if as_json:
        document = {"env": environment.name, "live": live, "deployments": [r.to_json() for r in records]}
        runtime.stdout.write(dumps(document | ({"component": key} if key else {})) + "\n")
    if records:
        runtime.stderr.write(history.table(records) + "\n")
        if key and key.startswith("stack:"):  # and what each run changed in it
            stack = planner.stack_roles(environment)[key.split(":", 1)[1]]
            for record, lines in history.stack_changes(records, stack):
                runtime.stderr.write(f"\n{record.when.replace('+00:00', 'Z')} {record.command} changed {stack}:\n")
                runtime.stderr.write("".join(f"  ↳ {line}\n" for line in lines))
        if commits:
            runtime.stderr.write(history.shipped(records))
    elif key:
        runtime.stderr.write(f"no deployment of {key} recorded in {environment.name}\n")
    else:
        runtime.stderr.write(f"no deployment recorded in {environment.name} yet\n")
    if live:
        rows = [[component, value.get("sha", ""), value.get("when", "")] for component, value in sorted(live.items())]
        runtime.stderr.write("\nlive now:\n" + tabulate(rows, headers=["component", "sha", "since"]) + "\n")
    return records


def _warner(runtime: Runtime | None) -> Callable[[str], object] | None:
    """What tells the user of a history record passed over: a line on ``runtime``'s stderr."""
    return None if runtime is None else _line_on(runtime)


def _line_on(runtime: Runtime) -> Callable[[str], object]:
    """What writes a line on ``runtime``'s stderr (a plugin's failure in an observer's hook)."""
    return lambda line: runtime.stderr.write(line + "\n")


def _live_or_said(runtime: Runtime, found: history.History) -> dict[str, dict[str, str]]:
    """The live record; {} when it is not one deploykit wrote, said with what to do (inv history still lists the
    runs: it is how the record is looked into)."""
    try:
        return found.live()
    except history.LiveRecordUnreadable as exc:
        runtime.stderr.write(f"⚠️  {exc}\n")
        return {}


def _history_component(config: Config, env: EnvConfig, text: str) -> str:
    """The history's name of ``--component``: app, stack:<role> (a role or a stack name), lambda:<fn> (also a
    function whose folder is gone: the history still names it)."""
    kind, _, name = text.strip().partition(":")
    if kind == "lambda" and re.fullmatch(r"[A-Za-z0-9_-]+", name):
        return f"lambda:{name}"
    return rollbacks.parse_component(text, config, purpose="history", env=env).key


def deployment_report(
    *, env: str | None = None, since: str = "30d", as_json: bool = False, runtime: Runtime | None = None
) -> deploy_report.Report:
    """What the environment's history says about its deploys since ``since`` (30d, 12h, an ISO time): how often,
    how often they failed and how quickly it was on a good deploy again, commit to live, each chain's and each
    step's times."""
    runtime = runtime or Runtime()
    until = runtime.clock.now()
    start = applogs.parse_since(since, until)
    if start >= until:
        raise UsageError(f"--since {since!r} is not in the past", next_step="pass 7d, 12h or an earlier time")
    config, environment = _load(runtime, env)
    aws = runtime.aws_factory(environment)
    with aws_errors(environment):
        found = _history(aws, environment, runtime)
        records = found.records_since(start)
        dashboard = (StackOutputs.of(aws)(environment.stacks.registry) or {}).get(deploy_metrics.DASHBOARD_OUTPUT)
    heads = [r.head for r in records if git.DIRTY not in r.head]  # a build of uncommitted changes has no commit time
    made = deploy_report.Report(environment.name, start, until, tuple(records), git.commit_times(config.root, heads))
    if as_json:
        runtime.stdout.write(dumps(made.to_json() | {"dashboard": dashboard}) + "\n")
    runtime.stderr.write(deploy_report.text(made))
    if dashboard and environment.metrics:
        runtime.stderr.write(f"\nthe same over time: {deploy_metrics.dashboard_link(environment, dashboard)}\n")
    return made


def unlock(
    *,
    env: str | None = None,
    confirm: Callable[[lock.LockInfo], bool] | None = None,
    runtime: Runtime | None = None,
) -> lock.LockInfo | None:
    """Break the environment's deploy lock on purpose (its deploy is dead): say who held it, then delete it.

    ``confirm`` is asked with the holder before anything is deleted; False leaves the lock as it is. Returns what
    the broken lock held; None when there was nothing to break (or it was kept)."""
    runtime = runtime or Runtime()
    _config, environment = _load(runtime, env)
    aws = runtime.aws_factory(environment)
    with aws_errors(environment):
        env_lock = lock.EnvLock.of(aws, environment, clock=runtime.clock)
        found = env_lock.read() if env_lock is not None else None
        if env_lock is None or found is None:
            runtime.stderr.write(f"🔓 no deploy holds the lock of {environment.name}: nothing to unlock\n")
            return None
        runtime.stderr.write(f"🔒 {found.info.describe(runtime.clock.now())}\n")
        if confirm is not None and not confirm(found.info):
            runtime.stderr.write("Nothing changed: the lock is still held.\n")
            return None
        _in_its_account(aws, environment)
        if not env_lock.break_(found):
            raise UsageError(
                f"the lock of {environment.name!r} changed while it was being broken (renewed, released or taken)",
                next_step=f"look again: inv unlock --env {environment.name}",
            )
    runtime.stderr.write(
        f"🔓 lock of {environment.name} broken: {found.info.owner}'s {found.info.command!r} no longer holds it\n"
    )
    return found.info


# -- freeze -----------------------------------------------------------------------------------------------------


def _until(text: str, now: datetime) -> datetime:
    """``--until``: a duration from now (``90m``, ``12h``, ``3d``) or a time (``2026-12-02T08:00Z``, UTC when it
    names no zone); UsageError for anything else, or a time already past."""
    moment = moment_of(text, now, ahead=True)
    if moment is None:
        raise UsageError(
            f"--until {text!r} is neither a duration nor a time",
            next_step="pass a duration from now (90m, 12h, 3d) or a time (2026-12-02T08:00Z)",
        )
    if moment <= now:
        raise UsageError(f"--until {text} is past", next_step="pass a time to come, or a duration from now (12h, 3d)")
    return moment


def freeze_env(
    *, env: str | None = None, reason: str = "", until: str | None = None, runtime: Runtime | None = None
) -> freeze.Freeze:
    """Close the environment to deploys (deploykit.freeze): who, why, until when (``until``; none: until
    :func:`unfreeze_env`). A freeze already there is replaced, and said."""
    runtime = runtime or Runtime()
    config, environment = _load(runtime, env)
    if not reason.strip():
        raise UsageError(
            "a freeze needs a reason: the people it stops read it",
            next_step=f'inv freeze --env {environment.name} --reason "..." [--until 3d]',
        )
    now = runtime.clock.now()
    made = freeze.Freeze(history.actor(), reason.strip(), now, _until(until, now) if until else None)
    aws = runtime.aws_factory(environment)
    with aws_errors(environment):
        _in_its_account(aws, environment)
        before = freeze.read(aws, environment)
        freeze.write(aws, environment, made)
    if before is not None and before.holds(now):
        runtime.stderr.write(f"❄️  replacing: {before.describe(environment.name)}\n")
    runtime.stderr.write(
        f"❄️  {made.describe(environment.name)}\n  deploys and destroy are refused (exit 2) meanwhile; inv rollback is "
        f"not; inv unfreeze --env {environment.name} ends it\n"
    )
    _tell_freeze(runtime, config, environment, made)
    return made


def _tell_freeze(runtime: Runtime, config: Config, env: EnvConfig, made: freeze.Freeze | None) -> None:
    """The plugins hear of a freeze made (``made``) or ended (None): the team's chat."""
    plugins = load_plugins(runtime, config)
    observe(plugins, "deploykit_freeze_changed", _line_on(runtime), env=env.name, freeze=made and made.to_json())


def unfreeze_env(*, env: str | None = None, runtime: Runtime | None = None) -> freeze.Freeze | None:
    """End the environment's freeze: what it was; None when there was none."""
    runtime = runtime or Runtime()
    config, environment = _load(runtime, env)
    aws = runtime.aws_factory(environment)
    with aws_errors(environment):
        found = freeze.read(aws, environment)
        if found is None:
            window = freeze.in_force(None, environment, runtime.clock.now())
            runtime.stderr.write(
                f"🌤  no inv freeze of {environment.name} to end"
                + (
                    f"; {window.describe(environment.name)} (deploy.toml's freeze_windows: not ended by inv unfreeze)\n"
                    if window
                    else ": it is not frozen\n"
                )
            )
            return None
        _in_its_account(aws, environment)
        freeze.delete(aws, environment)
    over = "" if found.holds(runtime.clock.now()) else " (it was over already)"
    runtime.stderr.write(f"🌤  {environment.name} thawed{over}: it was {found.describe(environment.name)}\n")
    if not over:
        _tell_freeze(runtime, config, environment, None)
    return found


# -- images.cleanup ---------------------------------------------------------------------------------------------


def _keep_at_least_one(keep: int) -> None:
    if keep < 1:
        raise UsageError(f"--keep must be at least 1 (got {keep})", next_step="pass --keep N with N of 1 or more")


def images_cleanup(
    *,
    env: str | None = None,
    keep: int = image_cleanup.DEFAULT_KEEP,
    dry_run: bool = False,
    as_json: bool = False,
    runtime: Runtime | None = None,
) -> image_cleanup.Decision:
    """Delete old images of the environment's ECR repository, keeping the ``keep`` newest, those ECS runs or may
    roll back to, and those any environment's history records (deploykit.image_cleanup says exactly which)."""
    runtime = runtime or Runtime()
    _keep_at_least_one(keep)
    config, environment = _load(runtime, env)
    aws = runtime.aws_factory(environment)
    repository = environment.repository
    warn = partial(_warn, runtime)
    deletion = None
    # no deploy may register a revision of an image between reading and deleting
    with _env_lock(runtime, aws, environment, "images.cleanup", needed=not dry_run):
        with aws_errors(environment):
            details = image_cleanup.repository_images(aws)
            in_use = image_cleanup.images_in_use(aws)
            recorded = image_cleanup.recorded_images(config, environment, runtime.aws_factory, target_aws=aws)
            parts = image_cleanup.index_parts(aws, details)
        for name, why in recorded.skipped.items():
            warn(f"skipped the history of {name} (its AWS cannot be read): {why}")
        for name in recorded.without_history:
            runtime.stderr.write(f"ℹ️  {name} has no deployment history (its registry stack is not deployed)\n")
        decision = image_cleanup.plan_cleanup(
            details, keep=keep, in_use=in_use, recorded=recorded.shas, parts=parts, now=runtime.clock.now()
        )
        if decision.to_delete and not dry_run:
            with aws_errors(environment):
                deletion = image_cleanup.delete_images(aws, decision.to_delete)
    if decision.choices:
        runtime.stderr.write(f"Images of {repository} in {environment.name}, newest first\n")
        runtime.stderr.write(image_cleanup.table(decision, dry_run=dry_run, deletion=deletion) + "\n\n")
    runtime.stderr.write(image_cleanup.summary(decision, repository=repository, dry_run=dry_run, deletion=deletion))
    runtime.stderr.write("\n")
    if as_json:
        data = image_cleanup.to_json(
            decision, env=environment.name, repository=repository, dry_run=dry_run, deletion=deletion, recorded=recorded
        )
        runtime.stdout.write(dumps(data) + "\n")
    if deletion is not None and deletion.failed:
        by_digest = {i.digest: i for i in decision.to_delete}
        first = next(iter(deletion.failed))
        label = ", ".join(by_digest[first].tags) if first in by_digest and by_digest[first].tags else first
        raise StepFailed(
            f"{len(deletion.failed)} of {len(decision.to_delete)} image(s) of {repository} could not be deleted "
            f"(first: {label}: {deletion.failed[first]})",
            next_step=f"see the table above, then rerun: inv images.cleanup --env {environment.name}",
        )
    return decision


# -- taskdefs.cleanup ------------------------------------------------------------------------------------------


def taskdefs_cleanup(
    *,
    env: str | None = None,
    keep: int = taskdef_cleanup.DEFAULT_KEEP,
    dry_run: bool = False,
    as_json: bool = False,
    runtime: Runtime | None = None,
) -> taskdef_cleanup.Decision:
    """Deregister the old revisions of the service's task-definition family, keeping the ``keep`` newest and every
    one the service, a task, the Fargate stack or the live record needs (deploykit.taskdef_cleanup says which)."""
    runtime = runtime or Runtime()
    _keep_at_least_one(keep)
    _, environment = _load(runtime, env)
    aws = runtime.aws_factory(environment)
    client = aws.client("ecs")
    done = None
    # no deploy may register or roll a revision between reading and deregistering
    with _env_lock(runtime, aws, environment, "taskdefs.cleanup", needed=not dry_run), aws_errors(environment):
        service = ecs.describe_service(client, environment.cluster, environment.service, environment)
        family = ecs.family_of(str(service["taskDefinition"]))
        reads: dict[str, Callable[[], Any]] = {
            "active": partial(ecs.active_revisions, client, family),
            "live": partial(live_record, aws, environment),
        }
        read = at_once(reads)
        live_taskdef = ((read["live"] or {}).get("app") or {}).get("taskdef")
        needed = taskdef_cleanup.needed_revisions(aws, service, live_taskdef)
        decision = taskdef_cleanup.plan_cleanup(family, read["active"], keep=keep, needed=needed)
        if decision.to_deregister and not dry_run:
            done = taskdef_cleanup.deregister(client, decision.to_deregister)
        taskdefs = ecs.TaskDefinitions.of(aws)
        images = at_once({c.arn: partial(taskdefs.image, c.arn, environment.container) for c in decision.kept}, width=8)
    tags = {arn: ecs.image_tag(image) or image for arn, image in images.items()}
    if decision.kept:
        runtime.stderr.write(f"Revisions of {family} in {environment.name} kept, newest first\n")
        runtime.stderr.write(taskdef_cleanup.table(decision, tags) + "\n\n")
    runtime.stderr.write(taskdef_cleanup.summary(decision, dry_run=dry_run, done=done) + "\n")
    if as_json:
        data = taskdef_cleanup.to_json(decision, env=environment.name, dry_run=dry_run, done=done, images=tags)
        runtime.stdout.write(dumps(data) + "\n")
    if done is not None and done.failed:
        first = next(iter(done.failed))
        raise StepFailed(
            f"{len(done.failed)} of {len(decision.to_deregister)} revision(s) of {family} could not be deregistered "
            f"(first: {ecs.revision_name(first)}: {done.failed[first]})",
            next_step=f"rerun: inv taskdefs.cleanup --env {environment.name} (what was deregistered stays so)",
        )
    return decision


# -- lambda.cleanup --------------------------------------------------------------------------------------------


def lambda_cleanup(
    *,
    env: str | None = None,
    function: str | None = None,
    keep: int = version_cleanup.DEFAULT_KEEP,
    dry_run: bool = False,
    as_json: bool = False,
    runtime: Runtime | None = None,
) -> version_cleanup.Decision:
    """Delete old published versions of the environment's Lambda functions (or of one), keeping the ``keep`` newest
    of each, those an alias routes to, those the API stack holds and those the history records
    (deploykit.version_cleanup says exactly which)."""
    runtime = runtime or Runtime()
    _keep_at_least_one(keep)
    config, environment = _load(runtime, env)
    aws = runtime.aws_factory(environment)
    deletion = None
    objects: zip_cleanup.ObjectDecision | None = None
    object_deletion: zip_cleanup.ObjectDeletion | None = None
    # no deploy may publish a version or move an alias onto one between reading and deleting
    with _env_lock(runtime, aws, environment, "lambda.cleanup", needed=not dry_run):
        with aws_errors(environment):
            functions = lambda_chain.deployed_functions(StackOutputs.of(aws), environment)
            if function is not None:
                if function not in functions:
                    raise UsageError(
                        f"no Lambda function {function!r} in the API stack of {environment.name!r}",
                        next_step=f"use one of: {', '.join(sorted(functions)) or 'none'} (or leave --function out)",
                    )
                functions = {function: functions[function]}
            bucket = history.find_artifacts_bucket(aws, environment)
            reads: dict[str, Callable[[], Any]] = {
                "versions": partial(version_cleanup.function_versions, aws, functions),
                "aliases": partial(version_cleanup.routed_versions, aws, functions),
                "mappings": partial(version_cleanup.mapped_versions, aws, functions),
                "stack": partial(version_cleanup.stack_versions, aws, environment),
                "recorded": partial(version_cleanup.recorded_shas, aws, environment, functions),
            }
            if bucket:  # the zips, and what else may run them, in the same round trip
                folders = None if function is None else functions
                reads |= {
                    "objects": partial(zip_cleanup.stored_objects, aws, bucket, folders),
                    "code keys": partial(zip_cleanup.stack_code_keys, aws, environment),
                    "sharing": partial(zip_cleanup.sharing, aws, bucket, environment),
                }
            read = at_once(reads)
        using: dict[tuple[str, int], list[str]] = {}
        for found in (read["aliases"], read["mappings"], read["stack"]):
            for key, reasons in found.items():
                using.setdefault(key, []).extend(reasons)
        versions, latest = read["versions"]
        code = version_cleanup.recorded_code(
            config.root, versions, read["recorded"], architecture=config.lambda_architecture_for(environment)
        )
        decision = version_cleanup.plan_cleanup(
            versions, keep=keep, held=using, recorded=read["recorded"], recorded_code=code
        )
        if decision.to_delete and not dry_run:
            with aws_errors(environment):
                deletion = version_cleanup.delete_versions(aws, decision.to_delete)
        if bucket:
            with aws_errors(environment):
                objects = _unneeded_zips(
                    runtime, config, aws, bucket, decision, deletion, read, latest, whole=function is None
                )
                if objects.to_delete and not dry_run:
                    object_deletion = zip_cleanup.delete_objects(aws, bucket, objects.to_delete)
    if decision.choices:
        runtime.stderr.write(f"Published versions of the Lambda functions of {environment.name}, newest first\n")
        runtime.stderr.write(version_cleanup.table(decision, dry_run=dry_run, deletion=deletion) + "\n\n")
    runtime.stderr.write(version_cleanup.summary(decision, dry_run=dry_run, deletion=deletion) + "\n")
    if objects is not None:
        if objects.choices:
            runtime.stderr.write(f"\nLambda zips and kept vendored packages in s3://{objects.bucket}\n")
            runtime.stderr.write(zip_cleanup.table(objects, dry_run=dry_run, deletion=object_deletion) + "\n\n")
        runtime.stderr.write(zip_cleanup.summary(objects, dry_run=dry_run, deletion=object_deletion) + "\n")
    if as_json:
        data = version_cleanup.to_json(decision, env=environment.name, dry_run=dry_run, deletion=deletion)
        if objects is not None:
            data["zips"] = zip_cleanup.to_json(objects, dry_run=dry_run, deletion=object_deletion)
        runtime.stdout.write(dumps(data) + "\n")
    rerun = f"see the tables above, then rerun: inv lambda.cleanup --env {environment.name}"
    if deletion is not None and deletion.failed:
        (name, number), why = next(iter(deletion.failed.items()))
        raise StepFailed(
            f"{len(deletion.failed)} of {len(decision.to_delete)} version(s) could not be deleted "
            f"(first: {name}:{number}: {why})",
            next_step=rerun,
        )
    if objects is not None and object_deletion is not None and object_deletion.failed:
        key, why = next(iter(object_deletion.failed.items()))
        raise StepFailed(
            f"{len(object_deletion.failed)} of {len(objects.to_delete)} object(s) of s3://{objects.bucket} could not "
            f"be deleted (first: {key}: {why})",
            next_step=rerun,
        )
    return decision


def _unneeded_zips(
    runtime: Runtime,
    config: Config,
    aws: AwsFactory,
    bucket: str,
    decision: version_cleanup.Decision,
    deletion: version_cleanup.Deletion | None,
    read: Mapping[str, Any],
    latest: Mapping[str, str],
    *,
    whole: bool,
) -> zip_cleanup.ObjectDecision:
    """Which zips (and, ``whole``: every function looked at, which vendored objects) of the artifacts bucket go
    after the versions' cleanup (``deletion``; None: a dry run, as if ``decision`` were carried out): what the
    versions still there and each ``$LATEST`` run (``latest``: fn → its CodeSha256), what the API stack names, and
    what the environments sharing the bucket run (deploykit.zip_cleanup)."""
    failed = deletion.failed if deletion is not None else {}
    needed = zip_cleanup.Needed(keys={key: list(why) for key, why in read["code keys"].items()})
    for choice in decision.choices:
        version = choice.version
        if not choice.delete or (version.function_name, version.number) in failed:
            needed.runs(version.code_sha256, f"{version.function} version {version.number}")
    for function, code_sha256 in latest.items():
        needed.runs(code_sha256, f"{function} $LATEST")
    objects: list[zip_cleanup.Stored] = read["objects"]
    big = zip_cleanup.big_zips(latest, objects, PART_MIN)
    reads: dict[tuple[str, str], Callable[[], Any]] = {}
    if whole:
        reads["zips", ""] = partial(zip_cleanup.zips_named, aws, bucket, big)
    unread: list[str] = []  # why each environment sharing the bucket could not be told apart
    for name in read["sharing"]:
        if name in config.environments:
            reads["env", name] = partial(_environment_code, runtime, config.environments[name])
        else:
            unread.append(f"environment {name!r}, not in deploy.toml, keeps its live record in this bucket too")
    found = at_once(reads)
    if whole:
        needed.merge(zip_cleanup.vendored_needed(big, found["zips", ""]))
    for (kind, name), answer in found.items():
        if kind == "env" and isinstance(answer, zip_cleanup.Needed):
            needed.merge(answer)
        elif kind == "env":
            unread.append(f"environment {name!r}, which shares this bucket, could not be read ({answer})")
    needed.every_zip += unread
    needed.every_vendored += unread
    return zip_cleanup.plan_objects(bucket, objects, needed, now=runtime.clock.now())


def _environment_code(runtime: Runtime, env: EnvConfig) -> zip_cleanup.Needed | str:
    """What another environment sharing the artifacts bucket runs, or why it could not be read."""
    try:
        return zip_cleanup.environment_code(runtime.aws_factory(env), env)
    except DeployKitError as exc:
        return exc.message
    except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
        return translate_error(exc, env).message


# -- deploy.auto and diff ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Preview:
    """A stack's preview: as ``inv diff --json`` lists it, and as ``--markdown`` shows it."""

    json: dict[str, Any]
    section: markdown.StackSection


@dataclass
class Analysis:
    """What deploy.auto and diff both start from: the environment, what is live, what changed."""

    config: Config
    env: EnvConfig
    aws: AwsFactory
    endpoints: Endpoints | None
    revision: git.Revision
    found: changes.ChangeSet
    live: dict[str, str | None]  # component → its live SHA (the app: its image tag)
    estimates: dict[str, float] = field(default_factory=dict)  # step → seconds, when asked for (deploy.auto)
    source: Source | None = None  # the promote_from environment and what it runs, if there is one
    # the newest runs, newest first; then, older, the runs that left a changed component live (auto.deciding_runs)
    records: list[history.Record] = field(default_factory=list)
    # lambda:<fn> → what says its alias serves settings other than its stack deployed (changed by hand, published)
    drifted: dict[str, str] = field(default_factory=dict)
    # the live record as read (component → {sha, when, record, ...}): what a plan from this analysis was made from
    entries: dict[str, dict[str, str]] = field(default_factory=dict)
    frozen: freeze.Freeze | None = None  # the environment's freeze, while it holds
    paused: pause.Pause | None = None  # the environment's pause, while it holds: a deploy wakes it first

    def closing_lines(self) -> list[str]:
        """The Change Analysis' last lines: :attr:`drifted` (deploying does not put such settings back), and
        :attr:`frozen` (a deploy is refused)."""
        lines = [
            f"⚠️  {component}: {why} (no deploy puts them back: put them back on $LATEST, then inv deploy.lambda "
            f"{component.partition(':')[2]}; inv health --env {self.env.name} names them too)"
            for component, why in sorted(self.drifted.items())
        ]
        if self.frozen is not None:
            lines.append(
                f"❄️  {self.frozen.describe(self.env.name)}: a deploy is refused until it ends (a rollback is not)"
            )
        if self.paused is not None:
            lines.append(
                f"⏸  {self.paused.describe(self.env.name)}: a deploy wakes it first ({self.paused.tasks}), and it "
                "stays awake"
            )
        return lines


def analyse(
    runtime: Runtime,
    env: str | None,
    *,
    since: str | None,
    allow_dirty: bool,
    adjust: Callable[[EnvConfig], EnvConfig] = lambda environment: environment,
    estimates: bool = False,
) -> Analysis:
    """Read what is live in the environment and detect what changed since (uncommitted changes refused unless
    ``allow_dirty``). ``adjust`` changes the environment's settings (command-line options) before anything is read,
    so that bad options are refused first. With ``estimates`` the steps' times are read from the history at the
    same time as what is live (one round trip less for every deploy; read for nothing when nothing changed). What
    runs other than the live record says counts as changed: the app's service running another image, a stack the
    newest run that deployed it failed on (:func:`deploykit.auto.left_by_failed_runs`)."""
    config, environment = _load(runtime, env)
    environment = adjust(environment)
    revision = _revision(config, allow_dirty)
    aws = runtime.aws_factory(environment)
    with aws_errors(environment):
        found_endpoints = endpoints_if_deployed(aws, environment)  # None: every component counts as never deployed
        unverified: dict[str, str] = {}  # what runs other than the last deploy verified: deployed again
        entries: dict[str, dict[str, str]] = {}  # the live record's
        drifted: dict[str, str] = {}  # functions serving settings other than their stack's: said, not deployed
        reads: dict[str, Callable[[], Any]] = {
            "live": partial(
                auto.live_components, aws, config, environment, found_endpoints, unverified, entries, drifted
            )
        }
        if found_endpoints is not None:  # the newest runs: for the estimates, and stacks a failed run left changed
            reads["records"] = partial(_newest_records, aws, environment, runtime)
        if environment.promote_from:  # what the environment it takes releases from runs, read meanwhile
            reads["source"] = partial(read_source, runtime, config, environment.promote_from)
        if found_endpoints is not None:  # said in the analysis; a deploy checks them again under the lock
            reads["freeze"] = partial(freeze.read, aws, environment)
            reads["pause"] = partial(pause.read, aws, environment)
        read = at_once(reads)
    live: dict[str, str | None] = read["live"]
    tags = {component: revision.of(component).tag for component in live}  # a live dirty build may be the same
    found = changes.detect(config, live, since=since, include_uncommitted=revision.dirty, worktree_tags=tags)
    records: list[history.Record] = read.get("records", [])
    left = auto.left_by_failed_runs(records, live, planner.stack_roles(environment))
    found = changes.with_notes(found, {**unverified, **left})
    guesses = history.estimates(records) if estimates else {}
    if found_endpoints is not None:  # for the guard against bringing back what a rollback took off, however long ago
        with aws_errors(environment):
            store = history.History.of(aws, environment, warn=_warner(runtime))  # its outputs read already
            if store is not None:
                records = auto.with_deciding_runs(entries, records, found.components(), store.records_by_id)
    return Analysis(
        config,
        environment,
        aws,
        found_endpoints,
        revision,
        found,
        live,
        guesses,
        read.get("source"),
        records,
        drifted,
        entries,
        freeze.in_force(read.get("freeze"), environment, runtime.clock.now()),
        read.get("pause"),
    )


@dataclass(frozen=True)
class Source:
    """The environment another one is promoted from: its AWS (its own credentials; every later read of it goes
    through this one, its stacks' outputs read once) and what it runs, per component."""

    aws: AwsFactory
    live: dict[str, str | None]

    @property
    def name(self) -> str:
        return self.aws.env.name


def read_source(runtime: Runtime, config: Config, name: str) -> Source:
    """What the environment ``name`` runs, read with its own credentials."""
    source = config.environment(name)
    aws = runtime.aws_factory(source)
    with aws_errors(source):
        if source.account:  # another account's credentials would find nothing there: "does not run it", wrongly
            aws.account()
        return Source(aws, auto.live_components(aws, config, source, endpoints_if_deployed(aws, source)))


@dataclass(frozen=True)
class Promotion:
    """What :func:`require_promoted` let through: the components deployed with ``--unpromoted`` (the run's history
    record names them), and the app's image when it is to be copied from the source (build once)."""

    unpromoted: tuple[str, ...] = ()
    image: planner.PromotedImage | None = None


# the source's newest runs whose deploys may be promoted, besides what it runs now: as many as image cleanup keeps the
# images of (so a promoted app's image is still in the source's registry)
VERIFIED_RUNS = image_cleanup.HISTORY_RECORDS


def promotion_of(
    config: Config, source: Source, components: Collection[str], revision: git.Revision
) -> tuple[dict[str, str], dict[str, str]]:
    """(component → why ``source`` never ran it as ``revision`` has it, component → the commit it ran it so at
    before, when it runs something else now). What it runs settles most; only for the rest are its newest
    :data:`VERIFIED_RUNS` runs read (with its credentials), each a deploy that passed its smoke there. A Lambda
    function must also be the bytes it runs or ran (:func:`auto.other_bytes`): the same sources can vendor other
    requirements on another machine."""
    why = auto.unpromoted(config, source.name, source.live, components, revision)
    earlier: dict[str, str] = {}
    if why:
        earlier = _earlier(config, source.aws, why, revision)
        why = {c: reason for c, reason in why.items() if c not in earlier}
    functions = [c.split(":", 1)[1] for c in components if c.startswith("lambda:") and c not in why]
    if functions:  # promoted by the change rules: the same sources; the same bytes too?
        why |= _lambda_bytes(config, source.aws, functions, earlier)
    return why, {c: sha for c, sha in earlier.items() if c not in why}


def _earlier(config: Config, aws: AwsFactory, why: Mapping[str, str], revision: git.Revision) -> dict[str, str]:
    """component → the commit the environment of ``aws`` ran it at as ``revision`` has it, among its newest runs
    that passed, for the components of ``why`` (those it does not run so now)."""
    environment = aws.env
    with aws_errors(environment):
        store = history.History.of(aws, environment)
        records = store.records(VERIFIED_RUNS) if store else []
    return auto.promoted_earlier(config, auto.verified_in(records, why), revision)


def _lambda_bytes(
    config: Config, aws: AwsFactory, functions: Collection[str], earlier: Collection[str]
) -> dict[str, str]:
    """lambda:<fn> → why the environment of ``aws`` runs, or ran, other bytes of ``functions`` than this checkout
    packages."""
    environment = aws.env
    with aws_errors(environment):
        names = lambda_chain.deployed_functions(StackOutputs.of(aws), environment, required=False)
        packages = {fn: lambda_chain.package(config, environment, fn) for fn in functions if fn in names}
        return auto.other_bytes(aws.client("lambda"), environment.name, names, packages, earlier)


def require_promoted(
    runtime: Runtime,
    config: Config,
    environment: EnvConfig,
    revision: git.Revision,
    components: Collection[str],
    *,
    unpromoted: bool,
    source_read: Source | None = None,
) -> Promotion:
    """An environment with ``promote_from`` takes only what that one runs, or ran in a run that passed (see
    :func:`promotion_of`): UsageError (exit 2, nothing changed) when it does not, or did not, run ``components`` as
    ``revision`` has them, unless ``unpromoted`` (an emergency fix: said). ``source_read``: that environment, when
    already read. When the app is among ``components`` and promoted, its image is the one the source runs or ran
    (:attr:`Promotion.image`)."""
    source = environment.promote_from
    if not source or not components:
        return Promotion()
    found = source_read if source_read is not None else read_source(runtime, config, source)
    live = found.live
    why, earlier = promotion_of(config, found, components, revision)
    image = None
    tag = earlier.get("app") or live.get("app")
    if "app" in components and "app" not in why and tag:
        image = planner.PromotedImage(source, tag, git.resolve_commit(config.root, tag) or tag)
    now = sorted(set(components) - set(why) - set(earlier))
    said = [f"✅ promoted from {source}: it runs {', '.join(now)} as this checkout has"] if now and not why else []
    said += [
        f"✅ promoted from {source}: it ran {component} as this checkout has at {sha}, in a run that passed there (it "
        f"runs {live.get(component) or 'none of it'} now)"
        for component, sha in sorted(earlier.items())
    ]
    if image:
        verb = "ran" if "app" in earlier else "runs"
        said.append(f"📦 the app's image is the one {source} {verb}, copied from there: {tag} (built once)")
    runtime.stderr.write("".join(line + "\n" for line in said))
    if not why:
        return Promotion(image=image)
    lines = "\n".join(f"  {component}: {reason}" for component, reason in why.items())
    if unpromoted:
        runtime.stderr.write(
            f"⚠️  deploying to {environment.name} what {source} does not run (--unpromoted; its history record says "
            f"so):\n{lines}\n"
        )
        return Promotion(tuple(why), image)
    raise UsageError(
        f"{environment.name} takes only what {source} runs (promote_from = {source!r}), and {source} does not run "
        f"this checkout's {', '.join(why)} (nor did any of its last {VERIFIED_RUNS} runs that passed):\n{lines}",
        next_step=f"deploy it to {source} first (inv deploy.auto --env {source}) and let it prove itself there, then "
        f"to {environment.name}; or check out what {source} runs. An emergency fix that cannot wait: --unpromoted",
    )


def _write_analysis(runtime: Runtime, lines: Sequence[str], closing: Sequence[str] = ()) -> None:
    """The Change Analysis: ``lines``, then ``closing`` (Analysis.closing_lines: settings changed that no deploy puts
    back, a freeze)."""
    runtime.stderr.write(
        "🔍 Change Analysis\n" + "\n".join([*(lines or ["no change since what is live"]), *closing]) + "\n"
    )


@heard_when_not_run("deploy.auto")
def deploy_auto(
    *,
    env: str | None = None,
    since: str | None = None,
    allow_dirty: bool = False,
    allow_older: bool = False,
    smoke: bool = True,
    dry_run: bool = False,
    as_json: bool = False,
    rollback: bool = True,
    canary: str | None = None,
    bake: str | None = None,
    watch_errors: str | None = None,
    unpromoted: bool = False,
    allow_rolled_back: bool = False,
    only: str | None = None,
    skip: str | None = None,
    runtime: Runtime | None = None,
) -> RunReport | None:
    """Deploy exactly what changed since the SHA live for each component: one plan, smoke once at the end.
    Refuses to take back live commits (HEAD behind what is live) unless ``allow_older``, and to deploy again a
    component as a person's rollback took it off (HEAD the same there) unless ``allow_rolled_back``; ``canary``
    and ``bake`` replace the environment's canary settings for the Lambda code it deploys (deploykit.canary),
    ``watch_errors`` its error watch after the app's rollout (deploykit.watch). ``only`` and ``skip`` (components
    or kinds, separated by commas: auto.selection) hold back the changed components the first leaves out or the
    second names: not deployed, not carried to HEAD, deployed by a later deploy.auto."""
    runtime = runtime or Runtime()
    config, environment = _load(runtime, env)
    chosen, skipped = auto.selections(config, environment, only=only, skip=skip)
    a = analyse(
        runtime,
        env,
        since=since,
        allow_dirty=allow_dirty,
        adjust=lambda environment: _with_watch(_with_canary(environment, canary, bake), watch_errors),
        estimates=not (dry_run and as_json),  # a plan to estimate, should anything have changed
    )
    if a.endpoints is None:
        if chosen is not None or skipped:
            raise UsageError(
                f"{a.env.name} is not fully deployed yet: deploy.auto deploys everything (deploy.full), and "
                f"{'--only' if chosen is not None else '--skip'} cannot hold any of it back",
                next_step="run it without --only and --skip; hold changes back once every stack is deployed",
            )
        promotion = require_promoted(
            runtime, a.config, a.env, a.revision, a.live, unpromoted=unpromoted, source_read=a.source
        )
        with aws_errors(a.env):
            plan = planner.full_plan(
                a.config, a.env, a.revision, repository_uri="", smoke=smoke, promoted=promotion.image
            )
        plan = dataclasses.replace(plan, unpromoted=promotion.unpromoted)
        runtime.stderr.write(f"🆕 {a.env.name} is not fully deployed yet: deploying everything (deploy.full)\n")
        return run_plan(runtime, a.config, a.env, plan, dry_run=dry_run, as_json=as_json, aws=a.aws, rollback=rollback)
    a.found = auto.held_back(a.found, chosen, skipped)
    changed = a.found.components()
    commits = changes.commits_behind(a.config.root, a.found)
    lines = auto.analysis_lines(
        a.found,
        a.env,
        uncommitted=a.revision.dirty_paths,
        requirements=changes.requirements_changed(a.config.root, a.found),
        commits=commits,
    )
    closing = a.closing_lines()
    behind = auto.taken_back(a.found)
    if behind and not allow_older:  # refused before reading more; the analysis shows why
        _write_analysis(runtime, lines, closing)
        auto.refuse_taking_back(behind, a.found.head, a.env)
    uncommitted = bool(a.revision.dirty)
    again = {} if allow_rolled_back else auto.deploying_again(a.config, a.records, changed, uncommitted=uncommitted)
    if again:
        _write_analysis(runtime, lines, closing)
        auto.refuse_deploying_again(again, a.found.head, a.env)
    try:
        promotion = require_promoted(
            runtime, a.config, a.env, a.revision, changed, unpromoted=unpromoted, source_read=a.source
        )
    except UsageError:
        _write_analysis(runtime, lines, closing)  # refused before reading more; the analysis shows what would have gone
        raise
    with aws_errors(a.env):
        # each read only when a changed component needs it (nothing-to-do stays quick), those needed at once
        reads: dict[str, Callable[[], Any]] = {}
        if "stack:api" in changed:
            reads["code_keys"] = lambda: current_code_keys(a.aws, a.config, a.env)[0]
        if "app" in changed:
            reads["repository_uri"] = partial(registry.repository_uri, a.aws)
            if not dry_run:
                reads["push_auth"] = partial(registry.push_auth, a.aws)  # kept for the push (or the copy), asked now
        read = at_once(reads)
        inputs = auto.Inputs(
            image_tag=a.live.get("app") or "",
            code_keys=read.get("code_keys", {}),
            functions=dict(a.endpoints.functions),
            repository_uri=read.get("repository_uri", ""),
            promoted=promotion.image,
        )
        plan = auto.auto_plan(a.config, a.env, a.revision, a.found, inputs, smoke=smoke)
        # components with no change since their live SHA are live at HEAD too: recorded so, later diffs start there
        carried = auto.unchanged_components(a.found, a.revision)
        held = tuple(sorted(a.found.held))
        taken = changes.as_taken(commits)  # what the run takes live, for its record
        plan = (
            dataclasses.replace(plan, carried=carried, unpromoted=promotion.unpromoted, held=held, commits=taken)
            if plan
            else plan
        )
        plan = pause.woken(plan, a.paused, a.env)  # a paused environment woken first
    if dry_run and as_json:
        runtime.stdout.write(dumps(auto.plan_json(a.env, a.found, plan)) + "\n")
        return None
    _write_analysis(runtime, lines, closing)
    if not plan:
        what = f"HEAD ({a.revision.short})"
        if a.revision.touches:  # uncommitted changes that touch components, all of them live already
            what = f"the work tree (HEAD {a.revision.short} with its uncommitted changes)"
        if held:  # not "runs what HEAD would deploy": what was held back does not run
            runtime.stderr.write(
                f"✅ nothing else to deploy: {a.env.name} runs the rest of what {what} would deploy; held back: "
                f"{', '.join(held)} (the next inv deploy.auto deploys them)\n"
            )
        else:
            runtime.stderr.write(f"✅ nothing to deploy: {a.env.name} runs what {what} would deploy\n")
        if not dry_run:
            not_run(runtime, a.config, a.env, "deploy.auto", "nothing", head=a.revision.short, held=list(held))
        if as_json:
            runtime.stdout.write(nothing_to_do_json(a.env.name, "deploy.auto", held) + "\n")
        return None
    if a.frozen is not None and not dry_run and not freeze.overridden():  # refused now: the lock would refuse it
        raise freeze.refusal(a.frozen, a.env, plan.title)
    rows = auto.estimate_rows(plan, a.env, a.estimates)
    total = auto.estimate_total(plan.steps, a.env, a.estimates)
    about = f"{total:.0f}s" if total >= 10 else f"{total:.1f}s"
    runtime.stderr.write(
        f"\nPlan for deploy.auto → {a.env.name}"
        + (f" (about {about} from the history)" if total else "")
        + "\n"
        + tabulate(rows, headers=["#", "step", "target", "estimate"], tablefmt="simple")
        + "\n\n"
    )
    if dry_run:
        runtime.stderr.write("(dry run: nothing is changed)\n")
        return None
    return run_plan(
        runtime,
        a.config,
        a.env,
        plan,
        dry_run=False,
        as_json=as_json,
        aws=a.aws,
        rollback=rollback,
        planned_from=a.entries,
    )


WATCH_POLL = 1.0  # seconds between two looks at the work tree
WATCH_SETTLE = 0.5  # a change is deployed once the work tree stayed the same this long (an editor saving files)


def deploy_watch(
    *,
    env: str | None = None,
    allow_older: bool = False,
    smoke: bool = True,
    rollback: bool = True,
    allow_rolled_back: bool = False,
    only: str | None = None,
    skip: str | None = None,
    runtime: Runtime | None = None,
    deploy: Callable[[], Any] | None = None,
    until: Callable[[], bool] = lambda: False,
) -> int:
    """``inv deploy.auto --watch``: deploy.auto of the work tree (uncommitted changes included, as --allow-dirty)
    now, then again each time it changes (a save, a commit, a checkout), until Ctrl-C (or ``until()``). A failed
    deploy is told and the watch goes on: the next save deploys again. Refuses a protected environment. Returns how
    many deploys it ran."""
    runtime = runtime or Runtime()
    config, environment = _load(runtime, env)
    auto.selections(config, environment, only=only, skip=skip)  # refused now, not at the first save
    if environment.protected:
        raise UsageError(
            f"environment {environment.name!r} is protected in deploy.toml; --watch deploys every save, "
            "uncommitted ones included",
            next_step=f"watch a development environment (the sandbox), or deploy commits: inv deploy.auto --env "
            f"{environment.name}",
        )
    # a canary or an error watch of minutes at every save would defeat the loop: left out, and said so
    canary, watch_errors = environment.lambda_canary.on, environment.app_error_watch.on
    if canary or watch_errors:
        runtime.stderr.write(
            f"👀 the edit loop leaves out {environment.name}'s Lambda canary and error watch (each save would wait "
            "for them): inv deploy.auto without --watch runs them\n"
        )
    deploy = deploy or partial(
        deploy_auto,
        env=env,
        allow_dirty=True,
        allow_older=allow_older,
        smoke=smoke,
        rollback=rollback,
        allow_rolled_back=allow_rolled_back,
        only=only,
        skip=skip,
        runtime=runtime,
        canary="0" if canary else None,
        watch_errors="0" if watch_errors else None,
    )
    clock, deployed, runs = runtime.clock, None, 0
    try:
        while not until():
            state = git.worktree_state(config.root)
            if state == deployed:
                clock.sleep(WATCH_POLL)
                continue
            if deployed is not None:  # a change: deploy it once it has settled
                clock.sleep(WATCH_SETTLE)
                if git.worktree_state(config.root) != state:
                    continue
            deployed, runs = state, runs + 1
            try:
                until_unlocked(deploy, runtime)  # waits for another deploy's lock when allowed, as each task does
            except Interrupted:
                raise
            except DeployKitError as exc:  # told as the task would, then back to watching
                runtime.stderr.write(f"❌ {exc.message}\n" + (f"  → next: {exc.next_step}\n" if exc.next_step else ""))
            runtime.stderr.write(
                f"\n👀 watching {config.root} for changes to deploy to {environment.name} (Ctrl-C ends)\n"
            )
    except KeyboardInterrupt:  # the way to stop watching: not an error
        runtime.stderr.write("\nstopped watching\n")
    return runs


def _newest_records(aws: AwsFactory, env: EnvConfig, runtime: Runtime | None = None) -> list[history.Record]:
    """The environment's newest runs (auto.NEWEST_RUNS), newest first (cached on this machine by ETag); none without
    a registry stack (the first deploy). A record that cannot be read is passed over, said on ``runtime``'s
    stderr."""
    # its outputs come from memory when the caller read the stacks already
    found = history.History.of(aws, env, warn=_warner(runtime))
    return found.records(auto.NEWEST_RUNS) if found else []


def diff(
    *,
    env: str | None = None,
    since: str | None = None,
    as_json: bool = False,
    as_markdown: bool = False,
    verify: bool = False,
    runtime: Runtime | None = None,
) -> changes.ChangeSet:
    """Change Analysis: each changed path, its component and the command that deploys it; for each changed stack,
    the CloudFormation changes it would make (a change set that is deleted, never executed) and its status.
    ``as_markdown``: the same as one Markdown document on stdout, for a pull request's comment or a CI job's summary
    (deploykit.markdown).

    ``verify``: whether the environment runs what this checkout would deploy, whatever git and the live record say:
    every stack previewed, every function's live code compared with this checkout's zip; StepFailed (exit 1) when
    anything differs (a nightly check of an environment that should run main)."""
    if as_json and as_markdown:
        raise UsageError("--json and --markdown both print on stdout", next_step="choose one of them")
    runtime = runtime or Runtime()
    a = analyse(runtime, env, since=since, allow_dirty=True)
    packages = changes.requirements_changed(a.config.root, a.found)
    commits = changes.commits_behind(a.config.root, a.found)
    commits_json = [commit.to_json() for commit in commits]  # behind the changes, newest first
    lines = auto.analysis_lines(
        a.found, a.env, uncommitted=a.revision.dirty_paths, requirements=packages, commits=commits
    )
    if a.revision.touches:
        lines.append(
            "✏️  uncommitted changes are counted: commit them before deploying, or deploy them as a dirty build "
            "with --allow-dirty"
        )
    held: dict[str, str] = {}  # component → why the promote_from environment does not run it
    earlier: dict[str, str] = {}  # component → the commit the promote_from environment verified it at, before
    if a.source is not None and a.found.components():
        source = a.source.name
        held, earlier = promotion_of(a.config, a.source, a.found.components(), a.revision)
        lines += [
            f"🚦 {component}: not promoted, {held[component]}"
            if component in held
            else f"🚦 {component}: {source} ran it at {earlier[component]}"
            if component in earlier
            else f"🚦 {component}: {source} runs it"
            for component in sorted(a.found.components())
        ]
        if held:
            lines.append(f"🚦 deploy.auto --env {a.env.name} refuses this until {source} runs it (or --unpromoted)")
    again = auto.deploying_again(a.config, a.records, a.found.components(), uncommitted=bool(a.revision.dirty))
    refusals = [f"{why}: deploy.auto refuses to bring it back (or --allow-rolled-back)" for why in again.values()]
    lines += [f"⛔ {refusal}" for refusal in refusals]
    closing = a.closing_lines()
    _write_analysis(runtime, lines, closing)
    previews: dict[str, Preview] = {}
    changed = {c.split(":", 1)[1] for c in a.found.components() if c.startswith("stack:")}
    roles = list(planner.stack_roles(a.env)) if verify else sorted(changed)
    if roles:
        previews = _stack_previews(runtime, a, roles, changed=changed, as_given=verify)
    stacks_json = {name: preview.json for name, preview in previews.items()}
    verdict = _verified(runtime, a, stacks_json) if verify else None
    if as_markdown:
        attention = [*refusals, *(f"{component}: not promoted, {why}" for component, why in sorted(held.items()))]
        attention += [
            f"{component}: live at {live[: git.SHORT_SHA]}, {n} commit{'s' if n > 1 else ''} ahead of HEAD: "
            "deploy.auto refuses to take them back (or --allow-older)"
            for component, (live, n) in auto.taken_back(a.found).items()
        ]
        attention += closing
        listed = set(auto.commit_lines(commits))  # listed apart, linked: not in the block too
        found = markdown.Review(
            env=a.env.name,
            base=auto.oldest_base(a.found),
            head=a.found.head,
            components=sorted(a.found.components()),
            analysis=[*(line for line in lines if line not in listed), *closing],
            command=inv_command("deploy.auto", env=a.env.name),
            stacks=[preview.section for preview in previews.values()],
            attention=attention,
            verdict=None if verdict is None else verdict["differs"],
            commits=commits_json,
            commit_url=git.commit_url_base(a.config.root, os.environ),
        )
        runtime.stdout.write(markdown.review(found))
    if as_json:
        data = auto.diff_json(a.env, a.found)
        data["stacks"] = stacks_json
        if a.env.promote_from:
            data["promotion"] = {"from": a.env.promote_from, "not_promoted": held, "ran_before": earlier}
        data["rolled_back"] = again  # component → why deploy.auto refuses to bring it back
        data["commits"] = commits_json
        # requirements file → the packages its change changes
        data["requirements"] = {
            path: [{"name": p.name, "before": p.before, "after": p.after} for p in found]
            for path, found in packages.items()
        }
        if verdict is not None:
            data["verify"] = verdict
        runtime.stdout.write(dumps(data) + "\n")
    if verdict is not None and verdict["differs"]:
        by_hand = [fn for fn, found in verdict["functions"].items() if found.get("settings")]
        settings = "".join(
            f"; {fn}'s settings: put them back on its $LATEST as the template has them (aws lambda "
            f"update-function-configuration --function-name {verdict['functions'][fn]['name']}), then inv "
            f"deploy.lambda {fn} --env {a.env.name} moves its alias to a version that has them"
            for fn in by_hand
        )
        raise StepFailed(
            f"{a.env.name} does not run what this checkout would deploy: {'; '.join(verdict['differs'])}",
            next_step=f"inv deploy.auto --env {a.env.name} deploys what changed; a stack whose change set above is "
            f"not empty though nothing of it changed in git: inv deploy.stack NAME --env {a.env.name}{settings}",
        )
    return a.found


def _verified(runtime: Runtime, a: Analysis, stacks_json: Mapping[str, Any]) -> dict[str, Any]:
    """``inv diff --verify``'s verdict, said: each function's live code against this checkout's zip (the fast
    path's part, which the API stack's preview cannot show) and its live version's settings against this checkout's
    template (a setting changed by hand and published, which no change set shows: CloudFormation compares templates,
    not what runs), then what differs: a component the analysis counts changed, a stack whose preview is not empty,
    a function that runs other code or other settings. A function's $LATEST with other settings than the template
    (staged by hand, not published) is said, not counted: it is not served. ``{"differs": [what], "functions": {fn:
    {"name": its Lambda function or None, "live": CodeSha256 or None, "checkout": CodeSha256, "settings": {setting:
    {"live", "checkout"}}, "latest_settings": {setting: {"latest", "checkout"}} (those that differ)}}}``."""
    packages = planner.lambda_packages(a.config, a.env)
    names = lambda_chain.deployed_functions(StackOutputs.of(a.aws), a.env, required=False)
    client = a.aws.client("lambda")
    deployed = [fn for fn in packages if fn in names]
    with aws_errors(a.env):  # what each alias serves and, beside it, $LATEST (what the next fast path publishes)
        reads: dict[tuple[str, str], Callable[[], Any]] = {}
        for fn in deployed:
            reads[fn, "serving"] = partial(lambda_chain.live_configuration, client, names[fn])
            reads[fn, "latest"] = partial(lambda_chain.live_configuration, client, names[fn], "$LATEST")
        found = at_once(reads)
    serving = {fn: found[fn, "serving"] for fn in deployed}
    latest = {fn: found[fn, "latest"] for fn in deployed}
    functions: dict[str, dict[str, Any]] = {
        fn: {"name": names.get(fn), "live": (serving.get(fn) or {}).get("CodeSha256"), "checkout": package.code_sha256}
        for fn, package in packages.items()
    }
    differs = {c: f"{c} changed" for c in sorted(a.found.components())}  # component → what differs

    def differ(component: str, what: str) -> None:
        differs[component] = f"{differs[component]} ({what})" if component in differs else what

    roles = {name: role for role, name in planner.stack_roles(a.env).items()}
    for name, preview in stacks_json.items():
        found = preview["changes"]
        if found is None or found:
            count = f"{len(found)} change{'s' if len(found) > 1 else ''} to make" if found else "to be created"
            differ(f"stack:{roles[name]}", f"{name}: {count}")
    template = _synthesized(a, "api")
    runtime.stderr.write(
        "\n🔧 Lambda (what each live alias serves, against this checkout's zip and its template's settings)\n"
    )
    for fn, package in packages.items():
        serves = functions[fn]["live"]
        if serves == package.code_sha256:
            runtime.stderr.write(f"  {fn}: ✅ runs this checkout's code ({serves[:12]})\n")
        else:
            live = f"runs {serves[:12]}" if serves else "is not deployed"
            runtime.stderr.write(f"  {fn}: ❌ {live}, this checkout's is {package.code_sha256[:12]}\n")
            differ(f"lambda:{fn}", f"{fn} {live}, not this checkout's code")
        version = serving.get(fn)
        if not version or not template:
            continue
        wanted = lambda_chain.configured(template, fn)
        settings = lambda_chain.configuration_differs(wanted, version)
        functions[fn]["settings"] = {key: {"live": has, "checkout": want} for key, (want, has) in settings.items()}
        for key, (want, has) in settings.items():
            runtime.stderr.write(f"  {fn}: ❌ its live version has {key} {has!r}, this checkout's template {want!r}\n")
            differ(f"lambda:{fn}", f"{fn} runs with {key} {has!r}, not {want!r}")
        # $LATEST is not served, so it does not fail the verdict; the next fast-path deploy publishes what it has
        staged = lambda_chain.configuration_differs(wanted, latest[fn]) if latest.get(fn) else {}
        functions[fn]["latest_settings"] = {
            key: {"latest": has, "checkout": want} for key, (want, has) in staged.items()
        }
        for key, (want, has) in staged.items():
            if settings.get(key) == (want, has):  # published as it is: said above, with how to put it back
                continue
            runtime.stderr.write(
                f"  {fn}: ⚠️  its $LATEST has {key} {has!r}, this checkout's template {want!r}: not served, but the "
                f"next inv deploy.lambda {fn} (or deploy.auto of it) publishes it\n"
            )
    if not differs:
        runtime.stderr.write(
            f"\n✅ {a.env.name} runs what this checkout would deploy: no component changed, no stack has anything "
            "to change, every function runs this checkout's code\n"
        )
    return {"differs": list(differs.values()), "functions": functions}


def _synthesized(a: Analysis, role: str) -> dict[str, Any]:
    """The template this checkout synthesized for the stack of ``role`` (``inv diff --verify`` synthesized every
    one); {} when there is none."""
    path = planner.synth_dir(a.config, a.env) / f"{planner.stack_roles(a.env)[role]}.template.json"
    try:
        found = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return found if isinstance(found, dict) else {}


def _stack_previews(
    runtime: Runtime,
    a: Analysis,
    roles: Sequence[str],
    *,
    changed: Collection[str],
    as_given: bool = False,
) -> dict[str, Preview]:
    """Synthesize (while what is live is read), then preview each stack of ``roles`` with the inputs a deploy would
    give it: every change set at the same time (on AWS each takes seconds to make; a change to shared CDK code
    changes every stack), printed in the stacks' order. ``changed``: the roles the analysis counts changed; an
    empty preview of another says there is nothing to change. ``as_given``: each stack keeps
    the parameters it was deployed with (its template alone is previewed): the image and the functions' code, which
    the app chain and the fast path change without the stacks, are compared apart (``--verify``)."""
    from deploykit.stack_chain import Synthesize

    out = planner.synth_dir(a.config, a.env)
    reporter = Reporter(runtime.stderr, clock=runtime.clock)
    ctx = Context(a.config, a.env, a.aws, runtime.clock, reporter, runtime.docker_factory)
    reads: dict[str, Callable[[], Any]] = {
        "synth": partial(Synthesize(str(out)).run, ctx),
        "image_tag": partial(auto.live_image_tag_or_empty, a.aws, a.env),
    }
    if "api" in roles:
        reads["code_keys"] = lambda: current_code_keys(a.aws, a.config, a.env)[0]
    with aws_errors(a.env), reporter.activity("synth"):
        read = at_once(reads)
    names = planner.stack_roles(a.env)
    previews = {
        names[role]: partial(
            _previewed,
            runtime,
            a.aws,
            a.env,
            names[role],
            out / f"{names[role]}.template.json",
            dict(planner.stack_parameters(role, read["image_tag"], read.get("code_keys", {}))),
            as_given=as_given,
        )
        for role in roles
    }
    with aws_errors(a.env):
        found = all_of(previews)
    plugins = load_plugins(runtime, a.config)
    return {
        names[role]: _show_preview(
            runtime, a.env, names[role], *found[names[role]], changed=role in changed, plugins=plugins
        )
        for role in roles
    }


def _previewer(runtime: Runtime, aws: AwsFactory, env: EnvConfig) -> StackDeployer:
    """A StackDeployer that only previews: it says nothing while it waits for a change set."""
    return StackDeployer(
        aws.client("cloudformation"),
        runtime.clock,
        say=lambda _t: None,
        poll=env.poll_seconds,
        timeout=env.wait_timeout,
        env=env.name,
    )


def _preview_stack(
    runtime: Runtime,
    config: Config,
    aws: AwsFactory,
    env: EnvConfig,
    name: str,
    template: Path,
    parameters: dict[str, str],
    *,
    rerun: str | None = None,
) -> dict[str, Any]:
    """Print what a deploy of ``template`` with ``parameters`` would change in stack ``name`` (a change set made and
    deleted, never executed); the same as JSON. ``rerun``: the command that deploys it, when not deploy.stack."""
    with aws_errors(env):
        found, stack = _previewed(runtime, aws, env, name, template, parameters)
    return _show_preview(runtime, env, name, found, stack, rerun=rerun, plugins=load_plugins(runtime, config)).json


def _previewed(
    runtime: Runtime,
    aws: AwsFactory,
    env: EnvConfig,
    name: str,
    template: Path,
    parameters: dict[str, str],
    *,
    as_given: bool = False,
) -> tuple[list[Change] | None, dict[str, Any] | None]:
    """The changes a deploy of ``template`` would make in stack ``name`` (:meth:`StackDeployer.preview`), and the
    stack as it is. ``as_given``: each of ``parameters`` the stack has keeps its value (the template alone)."""
    body = synth.template_body(template)
    deployer = _previewer(runtime, aws, env)
    stack = deployer.describe(name)  # its status, printed; and what the preview needs to know first
    if as_given:
        given = given_parameters(stack)
        parameters = {key: given.get(key, value) for key, value in parameters.items()}
    return deployer.preview(name, body, parameters, template_url=template_url(aws, env, name, body), stack=stack), stack


def _show_preview(
    runtime: Runtime,
    env: EnvConfig,
    name: str,
    found: list[Change] | None,
    stack: Mapping[str, Any] | None,
    *,
    rerun: str | None = None,
    changed: bool = True,
    plugins: Plugins | None = None,
) -> Preview:
    """Print a stack's preview (:func:`_previewed`); the same as JSON. ``changed``: whether the analysis counts the
    stack changed (an empty preview then says the change is in code the template does not see). ``plugins``: the
    team's, whose review of the changes is said under them (what a deploy of them would refuse)."""
    status = str(stack.get("StackStatus")) if stack else "not deployed"
    lines = []
    if found is None:
        lines.append("  would be created")
    elif not found and not changed:
        lines.append("  nothing to change")
    elif not found:
        lines.append("  no CloudFormation change (the change is in code the template does not see)")
    else:
        lines.append(changes_table(found))
        if env.protected and any(c.changes_access for c in found):
            lines.append(access_note(name, env.name, rerun))
    changes = None if found is None else [c.to_json() for c in found]
    refused = review_stack_changes(plugins, env, name, changes) if changes else {}
    lines += [
        f"⛔ plugin {plugin!r} refuses this change: {'; '.join(reasons)} (a deploy of it is refused)"
        for plugin, reasons in sorted(refused.items())
    ]
    runtime.stderr.write(f"\n🐳 {name} ({status})\n" + "\n".join(lines) + "\n")
    # what a reviewer must not miss (--markdown lists it above the tables): what a deploy refuses or asks approval for
    attention = [
        f"{name}: {c.logical_id} ({c.resource_type}) holds data and would be "
        f"{'removed' if c.action == 'Remove' else 'replaced'}: a deploy refuses it without --allow-replace"
        for c in dangerous_changes(found or ())
    ]
    approval = ": a deploy to this protected environment needs --approve-access" if env.protected else ""
    attention += [
        f"{name}: {c.logical_id} ({c.resource_type}) changes who may access what{approval}"
        for c in found or ()
        if c.changes_access
    ]
    attention += [f"{name}: plugin {p!r} refuses this change: {'; '.join(r)}" for p, r in sorted(refused.items())]
    return Preview(
        {"status": status, "changes": changes, "refused": refused},
        markdown.StackSection(
            name, status, "\n".join(lines), None if found is None else len(found), attention=tuple(attention)
        ),
    )
