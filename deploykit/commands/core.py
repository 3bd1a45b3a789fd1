"""What every command shares: the runtime, loading the configuration and plugins, running a plan under the
environment's lock (confirmation, the pause's wake, the record in the history, the automatic rollback)."""

from __future__ import annotations

import dataclasses
import functools
import sys
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, ExitStack, contextmanager, nullcontext
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any, TextIO, TypeVar

import botocore.exceptions

from deploykit import (
    alarm_list,
    auto,
    changes,
    ecs,
    freeze,
    git,
    history,
    lambda_chain,
    lambda_imports,
    lock,
    overview,
    pause,
    planner,
    stack_chain,
    watch,
)
from deploykit import logs as applogs
from deploykit import metrics as deploy_metrics
from deploykit import rollback as rollbacks
from deploykit.app_chain import app_left
from deploykit.aws import AWS_ERRORS, DENIED, AwsFactory, at_once, translate_error
from deploykit.canary import FAILED_FUNCTION
from deploykit.clock import Clock, SystemClock, shielded
from deploykit.config import SAMPLE_PART, Config, ConfigCache, EnvConfig
from deploykit.errors import (
    ConfigError,
    DeployKitError,
    Interrupted,
    ServiceBeingDeleted,
    StepFailed,
    Superseded,
    UsageError,
)
from deploykit.images import docker_client
from deploykit.output import Reporter
from deploykit.plan import Context, Executor, Plan, RunReport, describe_plan, dumps, in_background, walk
from deploykit.plugins import Plugins, check_tables, configure_plugins, get_plugin_manager, observe
from deploykit.stacks import error_code
from deploykit.switches import switch, switched_on

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])


@dataclass
class Runtime:
    """Everything a command needs from the outside world; tests replace any part of it."""

    config_path: Path | None = None
    # deploy.toml as this command reads it: parsed and validated once however often it is asked for (load_config)
    configs: ConfigCache = field(default_factory=ConfigCache)
    stdout: TextIO = field(default_factory=lambda: sys.stdout)
    stderr: TextIO = field(default_factory=lambda: sys.stderr)
    clock: Clock = field(default_factory=SystemClock)
    aws_factory: Callable[[EnvConfig], AwsFactory] = AwsFactory
    # the AWS of the other environments a command reads on the way (their histories, the code they run), never
    # starting anything (aws_factory may start the sandbox: tasks._SandboxFirst); None: aws_factory
    peer_aws_factory: Callable[[EnvConfig], AwsFactory] | None = None
    docker_factory: Callable[[], Any] = docker_client
    plugins_factory: Callable[[], Plugins] = get_plugin_manager
    # an environment with confirm = true: --yes given (or $DEPLOYKIT_YES=1) answers for the person; else ``ask``
    # puts the question (True: go on; None: there is no one to ask, no terminal)
    assume_yes: bool = False
    ask: Callable[[str], bool | None] = field(default_factory=lambda: ask_on_terminal)

    def load_config(self) -> Config:
        """deploy.toml (``config_path``, else the one found from the current folder), as :attr:`configs` has it."""
        return self.configs.load(self.config_path)

    @property
    def peer_aws(self) -> Callable[[EnvConfig], AwsFactory]:
        """The factory of the AWS of environments other than the command's own (peer_aws_factory)."""
        return self.peer_aws_factory or self.aws_factory


YES_ENV = switch("DEPLOYKIT_YES")  # =1: every confirmation an environment asks for (confirm = true) answered yes
# on: require_pushed = true lets this run through (an emergency)
ALLOW_UNPUSHED_ENV = switch("DEPLOYKIT_ALLOW_UNPUSHED")


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
    check_tables(config, [*(name for name, _ in plugins.manager.list_name_plugin()), *plugins.broken, *plugins.blocked])
    configure_plugins(plugins, config)
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
        load_plugins(runtime, config), "deploykit_deployment_not_run", line_on(runtime), env=env.name, report=report
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
            ran = _PLAN_RAN.set(False)
            try:
                try:
                    return func(*args, **kwargs)
                except KeyboardInterrupt:  # Ctrl-C, or SIGTERM (a cancelled CI job) turned into one by the task
                    if _PLAN_RAN.get():  # the executor told the plugins of the run, and what it left
                        raise
                    raise before_any_step() from None
            except DeployKitError as exc:
                told = exc.heard or kwargs.get("dry_run") or isinstance(exc, ConfigError)
                if not told and (not isinstance(exc, Interrupted) or exc.message == BEFORE_ANY_STEP):
                    try:
                        config, environment = load_env(runtime, kwargs.get("env"))
                    except DeployKitError:
                        raise exc from None
                    name = command if isinstance(command, str) else command(*args, **kwargs)

                    def tell(error: DeployKitError) -> None:
                        outcome = "refused" if error.exit_code == 2 else "failed"
                        outcome = "interrupted" if isinstance(error, Interrupted) else outcome
                        message, next_step = error.message, error.next_step or ""
                        not_run(runtime, config, environment, name, outcome, message=message, next_step=next_step)
                        error.heard = True

                    if isinstance(exc, Superseded) or (isinstance(exc, lock.LockHeld) and exc.wait > 0):
                        exc.tell_later = tell  # started again: told only if the command gives up
                    else:
                        tell(exc)
                raise
            finally:
                _PLAN_RAN.reset(ran)

        return wrapper  # type: ignore[return-value]

    return decorate


# whether the command now running started a plan (run_plan): an interrupt before that stopped it before any step
_PLAN_RAN: ContextVar[bool] = ContextVar("plan_ran", default=False)
BEFORE_ANY_STEP = "interrupted before any step ran: nothing was changed"


def before_any_step() -> Interrupted:
    """What a command stopped by Ctrl-C or SIGTERM before a plan of it ran (reading what is live, waiting for the
    lock) ends with: exit 130, as an interrupted run, its reason told to the plugins and printed with ``--json``."""
    return Interrupted(BEFORE_ANY_STEP, next_step="run the same command again")


def _translator(env: EnvConfig) -> Callable[[Exception], DeployKitError | None]:
    def translate(exc: Exception) -> DeployKitError | None:
        if isinstance(exc, AWS_ERRORS):
            return translate_error(exc, env)
        docker_errors = sys.modules.get("docker.errors")  # none without an image touched: no Docker failure either
        if docker_errors is not None and isinstance(exc, docker_errors.DockerException):
            return StepFailed(f"the Docker engine failed: {exc}", next_step="check 'docker info', then rerun")
        return None

    return translate


def synthesis(
    runtime: Runtime, config: Config, env: EnvConfig, aws: AwsFactory, reporter: Reporter
) -> Callable[[], Any]:
    """The plan's first step (:class:`deploykit.stack_chain.Synthesize` into cdk.out/<env>), to run outside a plan:
    skipped when nothing it reads changed since, so a plan that follows finds it done."""
    ctx = Context(config, env, aws, runtime.clock, reporter, runtime.docker_factory)
    return partial(stack_chain.Synthesize(str(planner.synth_dir(config, env))).run, ctx)


def declared_functions(
    runtime: Runtime, config: Config, env: EnvConfig, aws: AwsFactory, roles: Iterable[str], functions: Iterable[str]
) -> set[str]:
    """Those of ``functions`` whose code a template of the stacks of ``roles`` takes (its ``<Fn>CodeKey``
    parameter): a stack is offered every function's code and takes what it declares, which only its template says.
    The CDK app is synthesized for it, when there is anything to ask (as the plan's first step would be: that step
    then finds it done)."""
    functions, roles = sorted(set(functions)), sorted(set(roles))
    if not functions or not roles:
        return set()
    synthesis(runtime, config, env, aws, Reporter(runtime.stderr, clock=runtime.clock))()
    out, names = planner.synth_dir(config, env), planner.stack_roles(env)
    return {fn for role in roles for fn in stack_chain.functions_in(out, names[role]) if fn in functions}


@contextmanager
def aws_errors(env: EnvConfig) -> Iterator[None]:
    """Planning reads AWS too: its botocore failures become the same clear errors as a step's."""
    try:
        yield
    except AWS_ERRORS as exc:
        raise translate_error(exc, env) from None


def load_env(runtime: Runtime, env_name: str | None) -> tuple[Config, EnvConfig]:
    config = runtime.load_config()
    return config, config.environment(env_name)


def head_revision(config: Config, allow_dirty: bool) -> git.Revision:
    """HEAD's revision (uncommitted changes refused unless ``allow_dirty``), knowing which components they touch."""
    return changes.scope(config, git.current_revision(config.root, allow_dirty=allow_dirty))


def _docker_first(runtime: Runtime, plan: Plan) -> Callable[[], Any]:
    """What the run's steps get the Docker engine from. A plan with a step that uses it (a build, a push) asks for it
    now, before its first step: an engine not running is refused (EnvironmentNotReady, exit 2) with nothing changed,
    where a stack deployed beside the build had changed the environment when the build found no engine (exit 1)."""
    if not any(step.uses_docker for _, step in walk(plan.steps)):
        return runtime.docker_factory
    client = runtime.docker_factory()
    return lambda: client


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
    handlers: Mapping[str, str] | None = None,
    then: Callable[[RunReport], tuple[dict[str, Any], DeployKitError | None]] | None = None,
) -> RunReport | None:
    """Describe (dry run) or execute ``plan``; print JSON when asked; raise the failure if any. ``then``: what to do
    after a run that worked, the lock released (a rollback's wait for its alarms): what it gives is added to the
    run's JSON, and the failure it gives is raised after it (the run itself worked: the plugins heard so).

    ``rollback`` (deploys of the app or a Lambda): when a step fails after the run rolled the service or moved an alias,
    True puts back what the run replaced (see :func:`recover`), False leaves it in place and says how to put it back;
    None: neither applies. ``planned_from``: the live record the plan was made from (deploy.auto's analysis, read before
    the lock was taken); when the record read under the lock differs (another deploy finished in between), the run stops
    before its first step that changes what is live (:class:`~deploykit.errors.Superseded`), nothing live changed and
    nothing recorded, for the command to start again (:func:`until_unlocked`). ``handlers``: function → its Handler
    as Lambda has it, where the command read it, for the check that each zip the plan uploads would import
    (:func:`require_importable`).

    A deploy wakes a paused environment first (:func:`pause.woken`): its dry run reads the pause too and shows the
    wake, so that the plan shown is the plan run (deploy.auto's own dry run shows it from its analysis)."""
    require_pushed(runtime, config, env, plan, dry_run=dry_run)
    require_importable(runtime, config, plan, dry_run=dry_run, handlers=handlers)
    if dry_run:
        aws = aws or runtime.aws_factory(env)
        if pause.may_wake(plan):  # the wake the run would add under the lock
            plan = _woken_if_read(runtime, env, plan, aws)
        say_missing_alarms(runtime, env, plan, aws)
        say_protected(runtime, env, plan, aws)
        if as_json:
            runtime.stdout.write(dumps({"dry_run": True, **plan.to_json()}) + "\n")
        else:
            runtime.stderr.write(describe_plan(plan) + "\n")
        return None
    aws = aws or runtime.aws_factory(env)
    docker = _docker_first(runtime, plan)
    _confirmed(runtime, env, plan)
    # a deploy wakes a paused environment first: whether it is paused is read while the lock is taken
    pausing = in_background(partial(pause.read, aws, env), "pause") if pause.may_wake(plan) else None
    with _deploy_lock(runtime, aws, env, plan) as lease:
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
            docker,
            plugins,
            partial(_aws_of, runtime, config),
        )
        # what is live before the run: read under the lock, while the plan's first steps run (its value is needed
        # only after them: one round trip less before the first step)
        reading = LiveBefore(runtime, aws, env) if plan.deploys or plan.removes else None
        if reading is not None and planned_from is not None:
            ctx.gate = partial(_still_as_planned, reading, env, planned_from)
        if lease is not None:  # a deploy whose lock was broken or taken over stops before its next step
            ctx.holding = lease.check
        # how the run ended is told to the plugins once it is settled (a lock found lost after the last step fails a
        # run that worked; what was put back, or how to: recover), as the command says it; before a rollback's own
        # run, which they hear of after it
        executor = Executor(ctx, _translator(env), tell_end=False)
        try:
            try:
                _PLAN_RAN.set(True)
                report = executor.execute(plan)
                if lease is not None and report.error is None:  # lost during its last step: what it recorded as live
                    try:  # may no longer be (another deploy may hold the lock and have deployed): a failed run, which
                        lease.check()  # leaves the live record as it is
                    except lock.LockLost as lost:
                        report.error = lost
                        runtime.stderr.write(f"❌ {lost.message}\n")
            finally:
                live = reading.result() if reading else None
            if isinstance(report.error, Superseded):  # nothing live changed: nothing to record, nothing to put back
                raise report.error
            if report.error is not None:
                report.error.heard = True  # the plugins are told of the run and its failure (tell_ended)
            before = {c: v.get("sha") for c, v in live.items()} if live else {}
            if isinstance(report.error, Interrupted) and any(before.values()):
                shown = ", ".join(f"{component}@{sha}" for component, sha in sorted(before.items()) if sha)
                report.error.message += f"; live before this run: {shown}"
            if plan.changes_live:
                with shielded():  # a Ctrl-C now stops the command once the run is recorded, not half way through
                    unkept = _record(runtime, config, aws, env, plan, report, before, live)
                if unkept and report.ok and plan.rollback:
                    report.error = _unrecorded_rollback(env, plan, unkept)
            if report.error is not None and rollback is not None and not isinstance(report.error, lock.LockLost):
                report.rollback = recover(
                    runtime, ctx, report, before, live, rollback=rollback, tell=executor.tell_ended
                )  # not without the lock
            if report.error is not None:
                roles = rollbacks.changed_stacks(report, env)
                if roles:
                    back = ", ".join(f"inv rollback --env {env.name} --component stack:{role}" for role in roles)
                    report.error.next_step = "; ".join(
                        filter(None, (report.error.next_step, f"if a stack change of this run broke it: {back}"))
                    )
        finally:
            executor.tell_ended()
    extra, after = then(report) if then is not None and report.error is None else ({}, None)
    if as_json:
        runtime.stdout.write(dumps(report.to_json() | extra) + "\n")
    if report.error is not None:
        raise report.error
    if after is not None:
        after.heard = True  # the plugins heard of the run, which worked: not of a run that did not
        raise after
    return report


def _woken_if_read(runtime: Runtime, env: EnvConfig, plan: Plan, aws: AwsFactory) -> Plan:
    """A dry run's ``plan`` with the wake of a paused environment first; as it is, said, when AWS cannot tell (no
    credentials, the endpoint down): a dry run shows the plan without AWS, as it did before it read the pause."""
    try:
        with aws_errors(env):
            return pause.woken(plan, pause.read(aws, env), env)
    except DeployKitError as exc:
        runtime.stderr.write(
            f"ℹ️  whether {env.name} is paused could not be read ({exc.message.splitlines()[0]}): if it is, the run "
            "wakes it first\n"
        )
        return plan


def require_pushed(runtime: Runtime, config: Config, env: EnvConfig, plan: Plan, *, dry_run: bool) -> None:
    """In an environment that takes only pushed commits (``require_pushed = true``), a plan that deploys a commit no
    remote branch holds (as this clone last fetched them: no network) is refused, before anything changes: HEAD, or
    another this clone has (the image ``deploy.stack --image-tag`` rolls out, what a promotion takes). Once it ran
    there, each teammate's deploy.auto would stop at a live commit their clone cannot fetch. A rollback goes through
    (back to what ran before: never held up; not one to what never ran there, Plan.untried), as does a commit this
    clone does not have (nothing to tell), a clone
    with no remote branch at all, and $DEPLOYKIT_ALLOW_UNPUSHED=1 (said); a dry run says so and goes on."""
    if not env.require_pushed or not plan.deploys or plan.goes_back:
        return
    _refuse_unpushed(runtime, config, env, [tag for _, tag in plan.deploys], dry_run=dry_run)


def say_missing_alarms(runtime: Runtime, env: EnvConfig, plan: Plan, aws: AwsFactory) -> None:
    """A dry run's word on the alarms its alarm watch names that CloudWatch does not have, or may not be read: the run
    refuses them before it starts (deploykit.watch.WatchAlarms.preflight). One a stack the plan deploys may make is
    said as such (its template, not synthesized by a dry run, is not read)."""
    names = next((leaf.alarms for _, leaf in walk(plan.steps) if isinstance(leaf, watch.WatchAlarms)), ())
    if not names:
        return
    table = f"[environments.{env.name}.alarm_watch] alarms"
    try:
        found = watch.read_alarms(aws.client("cloudwatch"), names)
    except botocore.exceptions.ClientError as exc:
        if error_code(exc) in DENIED:
            runtime.stderr.write(f"⚠️  may not read the CloudWatch alarms {table} names: the deploy would be refused\n")
        return  # another error: the run meets it
    missing = watch.missing_alarms(names, found)
    if not missing:
        return
    deploys_stacks = any(isinstance(step, stack_chain.DeployStack) for _, step in walk(plan.steps))
    unless = ", unless a stack it deploys makes it" if deploys_stacks else ""
    runtime.stderr.write(
        f"⚠️  CloudWatch has no alarm named {', '.join(missing)} in {env.region} ({table}): the deploy would be "
        f"refused{unless}\n"
    )


def say_protected(runtime: Runtime, env: EnvConfig, plan: Plan, aws: AwsFactory) -> None:
    """A dry run's word on each stack it would delete that is protected from deletion: the run refuses it before it
    deletes anything (DestroyStack's preflight), and the dry run said nothing of it. A stack that cannot be read is
    left to the run."""
    for _, step in walk(plan.steps):
        if isinstance(step, stack_chain.DestroyStack):
            try:
                refused = step.protected(aws, env, "the run would be refused, nothing deleted")
            except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError):
                continue
            if refused is not None:
                runtime.stderr.write(f"⚠️  {refused.message}\n    → next: {refused.next_step}\n")


def require_importable(
    runtime: Runtime, config: Config, plan: Plan, *, dry_run: bool, handlers: Mapping[str, str] | None = None
) -> None:
    """A plan uploading a function's zip that would not import on Lambda (deploykit.lambda_imports: a module neither
    the zip nor the runtime has, a vendored package's requirement missing, no handler) is refused before anything
    changes; a dry run says so and goes on. A rollback goes through: back to code that ran (never held up by a check
    that could be wrong), as does a plan with $DEPLOYKIT_SKIP_IMPORT_CHECK=1. ``handlers``: function → its Handler,
    as read from Lambda (lambda_chain.unimportable)."""
    if plan.goes_back or lambda_imports.skipped():
        return
    found = lambda_chain.unimportable(config, plan, handlers)
    if not found:
        return
    said = "; ".join(lambda_imports.said(function, problems) for function, problems in found.items())
    if dry_run:
        runtime.stderr.write(f"⚠️  {said}: the deploy would be refused\n")
        return
    raise UsageError(said, next_step=lambda_imports.NEXT_STEP)


def refuse_unpushed_early(runtime: Runtime, config: Config, env: EnvConfig, tags: Sequence[str]) -> None:
    """:func:`require_pushed` before the environment is read, for a command whose plan always deploys ``tags`` (HEAD;
    deploy.stack's --image-tag): refused then, rather than once the plan is made. A dry run, and a run let through by
    $DEPLOYKIT_ALLOW_UNPUSHED=1, are said once the plan is made, as before."""
    if env.require_pushed and not switched_on(ALLOW_UNPUSHED_ENV):
        _refuse_unpushed(runtime, config, env, tags, dry_run=False)


def _refuse_unpushed(
    runtime: Runtime, config: Config, env: EnvConfig, deployed: Sequence[str], *, dry_run: bool
) -> None:
    tags = [tag.split(git.DIRTY)[0] for tag in deployed]  # a dirty build's: the commit it was built on
    commits = [sha for sha in git.resolve_commits(config.root, tags).values() if sha is not None]
    held_back = git.unpushed(config.root, commits)
    if not held_back:
        return
    head = git.head_sha(config.root)
    named = " and ".join(("HEAD " if sha == head else "commit ") + sha[: git.SHORT_SHA] for sha in held_back)
    named += " is" if len(held_back) == 1 else " are"
    refusal = UsageError(
        f"{env.name} takes only pushed commits (require_pushed = true), and {named} on no remote branch (as this "
        f"clone last fetched them): running there, it would stop each teammate's inv deploy.auto --env {env.name} "
        "at a commit their clone cannot fetch",
        next_step=f"git push (git fetch first, if it was pushed from elsewhere), then deploy again; in an emergency, "
        f"{ALLOW_UNPUSHED_ENV}=1",
    )
    if dry_run or switched_on(ALLOW_UNPUSHED_ENV):
        why = "the run would be refused" if dry_run else f"{ALLOW_UNPUSHED_ENV}=1 lets it through"
        runtime.stderr.write(f"⚠️  {refusal.message} ({why})\n")
        return
    raise refusal


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
    if runtime.assume_yes or switched_on(YES_ENV):
        runtime.stderr.write(f"✔  {summary}: confirmed by --yes\n")
        return
    answer = runtime.ask(f"❓ {summary}: {env.name} asks first (confirm = true). Go on? [y/N] ")
    if answer is None:
        raise _no_one_to_ask(env)
    if not answer:
        raise UsageError(f"{summary} not confirmed: nothing was changed", next_step="rerun when it should go")


def _no_one_to_ask(env: EnvConfig) -> UsageError:
    return UsageError(
        f"{env.name} asks before each change (confirm = true in deploy.toml) and there is no terminal to ask on: "
        "nothing was changed",
        next_step=f"rerun with --yes (or {YES_ENV}=1) where the run is approved another way, as a CI job's "
        "environment approval",
    )


def refuse_unaskable(runtime: Runtime, env: EnvConfig, *, dry_run: bool) -> None:
    """For a command whose plan always changes ``env``: in an environment that asks first (confirm = true), with no
    one to answer (no --yes, no $DEPLOYKIT_YES=1, no terminal), refused before anything is read, as
    :func:`_confirmed` would refuse it once the plan is made."""
    if dry_run or not env.confirm or runtime.assume_yes or switched_on(YES_ENV):
        return
    if runtime.ask is ask_on_terminal and not sys.stdin.isatty():
        raise _no_one_to_ask(env)


def _still_as_planned(reading: LiveBefore, env: EnvConfig, planned_from: Mapping[str, Mapping[str, str]]) -> None:
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
    tell: Callable[[], None] = lambda: None,
) -> RunReport | None:
    """After a failed deploy: put back what it replaced (:func:`deploykit.rollback.undo_plan`: after any step failure,
    ``rollback``), or say how to (``--no-rollback``). The failure's message then tells both; the rollback's own run
    is returned. ``live``: the live record as read before the failed run (which left it as it was), if it was.
    ``tell``: tells the plugins of the failed run (Executor.tell_ended), called before a rollback runs; else its
    caller tells them once the message is settled."""
    env, error = ctx.env, report.error
    assert error is not None
    try:
        with aws_errors(env):
            undo = rollbacks.undo_plan(
                env, report, ctx.aws.client("lambda"), smoke=True, before=before, entries=live or {}
            )
    except DeployKitError as exc:
        error.message += f"; no automatic rollback: reading what to put back failed ({exc.message})"
        error.next_step = f"see what runs: inv health --env {env.name}; put it back: inv rollback --env {env.name}"
        return None
    if undo is None:
        if isinstance(error, ServiceBeingDeleted) and report.changed_live:
            error.message += (
                "; no automatic rollback: nothing can be rolled out on a service ECS is deleting or has deleted"
            )
        return None
    replaced = ", ".join(undo.replaced)
    # what the failed release wrote stays in CloudWatch Logs after its tasks stopped and its alias moved back: of
    # each component put back, or of the function whose canary failed (what moved beside it goes back unjudged)
    failed = rollbacks.failed_step(report)
    culprit = failed.outputs.get(FAILED_FUNCTION) if failed is not None else None
    suspects = (f"lambda:{culprit}",) if culprit else undo.components
    wrote = "; what it wrote: " + ", ".join(
        f"inv logs --env {env.name}" + ("" if c == "app" else f" --component {c}") + " --since 15m" for c in suspects
    )
    # by hand: each component to what the automatic rollback puts back, named (without --to, a rollback goes one
    # deploy back from what runs then, and without --component it is the app's, which this run may not have touched)
    # (a function only its $LATEST is to be put back of serves what it served: no rollback of it, which would go one
    # deploy back from there)
    back_to = dict(undo.plan.deploys)
    latest = [f"lambda:{s.function}" for s in undo.plan.steps if isinstance(s, rollbacks.LatestBack)]
    by_hand = ", ".join(
        f"inv rollback --env {env.name} --component {c}" + (f" --to {back_to[c]}" if c in back_to else "")
        for c in dict.fromkeys(undo.components)
        if c not in latest  # (one whose moved version names no commit: one deploy back from it)
    )
    if latest:
        by_hand += ("; " if by_hand else "") + (
            f"{', '.join(latest)} serves what it served, its $LATEST may hold this run's code (a deploy of its stack "
            f"would publish it): inv deploy.auto --env {env.name} deploys it again, checked"
        )
    if not rollback:
        error.message += f"; left in place for debugging (--no-rollback): {replaced}"
        error.next_step = f"put back what was live: {by_hand}{wrote}"
        return None
    for note in undo.notes:
        runtime.stderr.write(f"↩️  {note}\n")
    tell()  # the failure first, then the rollback's own run
    runtime.stderr.write(f"\n⏪ {undo.plan.title}: putting back what this deploy replaced ({replaced})\n")
    undone = Executor(ctx, _translator(env)).execute(undo.plan)
    if undo.plan.deploys:
        _record(runtime, ctx.config, ctx.aws, env, undo.plan, undone, before, live)
    # in AWS's time, which CloudWatch Logs counts in (a clock minutes ahead passed over the lines the release wrote)
    took = timedelta(seconds=report.seconds + undone.seconds + 60 - ctx.aws.offset)
    since, outputs = runtime.clock.now() - took, report.outputs()
    for component in suspects:  # read now, after the rollback: the lines took that long to arrive
        if component.startswith("lambda:"):
            _show_version_log(runtime, ctx, component.split(":", 1)[1], outputs, since)
    what = "; ".join((*undo.notes, f"{undo.plan.title} ok in {undone.seconds:.1f}s"))
    if undone.error is None:
        error.message += f"; {what}: {env.name} runs what was live before"
        # an alarm judged it (the alarm watch, or one read by a canary or the error watch): it stays in ALARM a while
        clears = f"; whether the alarms clear: {_alarms_wait(ctx, env)}" if watch.ALARMED in error.message else ""
        error.next_step = (
            f"fix the release and deploy again (inv deploy.auto --env {env.name}){wrote}{clears}; "
            "--no-rollback keeps a failed release in place for debugging"
        )
    else:
        error.message += (
            f"; the automatic rollback failed too ({undone.error.message.splitlines()[0]}): {env.name} may run "
            f"neither version"
        )
        error.next_step = f"see what runs: inv health --env {env.name}; then put it back by hand: {by_hand}"
    return undone


def _alarms_wait(ctx: Context, env: EnvConfig) -> str:
    """The command that waits for ``env``'s alarms to leave ALARM, the wait suggested by those in ALARM now
    (deploykit.alarm_list.suggested_wait; one read), 10 minutes when they cannot be read."""
    try:
        found = watch.read_alarms(ctx.aws.client("cloudwatch"), env.alarm_watch.alarms)
        wait = alarm_list.suggested_wait(found, watch.in_alarm(found) or list(found), local=env.is_local)
    except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError):
        wait = "10m"
    return f"inv alarms --env {env.name} --wait {wait}"


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


def _deploy_lock(
    runtime: Runtime, aws: AwsFactory, env: EnvConfig, plan: Plan
) -> AbstractContextManager[lock.Lease | None]:
    """One deploy at a time per environment: a plan that changes something (it deploys components, restarts them, or
    destroys) holds the environment's lock while it runs (:func:`held_lock`); a freeze refuses it, but a rollback's
    (to what ran there before: Plan.goes_back) and a restart's (they bring nothing new)."""
    needed = bool(plan.deploys or plan.restarts or plan.title.startswith("destroy"))
    freezes = not (plan.goes_back or plan.restarts)
    return held_lock(runtime, aws, env, plan.title, needed=needed, freezes=freezes)


@contextmanager
def held_lock(
    runtime: Runtime, aws: AwsFactory, env: EnvConfig, command: str, *, needed: bool, freezes: bool = False
) -> Iterator[lock.Lease | None]:
    """When ``needed``: the environment's lock held while the block runs, released however it ends (see
    deploykit.lock); and, first, the credentials must act in the environment's account when deploy.toml pins one.
    Not needed (nothing will change): neither. ``freezes``: a freeze of the environment (deploykit.freeze), read
    while the lock is taken, refuses the command before the block runs (but with $DEPLOYKIT_ALLOW_FROZEN=1). Yields
    the lease held (None: none needed, or nowhere to hold one yet)."""
    lease: lock.Lease | None = None
    with ExitStack() as held:
        if needed:
            with aws_errors(env), ThreadPoolExecutor(1) as pool:  # reading or taking the lock, reading the freeze
                check_account(aws, env)
                reading = pool.submit(freeze.read, aws, env) if freezes else None
                warn = partial(say_warning, runtime)
                lease = held.enter_context(lock.held(aws, env, command, clock=runtime.clock, warn=warn))
                stored = reading.result() if reading is not None else None
            found = freeze.in_force(stored, env, runtime.clock.now()) if freezes else None
            if found is not None:
                if not freeze.overridden():
                    raise freeze.refusal(found, env, command)
                runtime.stderr.write(f"❄️  {found.describe(env.name)}; deploying anyway (${freeze.OVERRIDE_ENV}=1)\n")
        yield lease


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
    first: float | None = None  # when the command was first refused (monotonic)
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
                first = clock.monotonic()
                deadline = first + held.wait
                runtime.stderr.write(
                    f"⏳ waiting up to {lock.duration(held.wait)} for the lock of {held.lock.env!r}: "
                    f"{held.holder(clock.now())} (Ctrl-C stops waiting)\n"
                )
            waiting = clock.monotonic()
            out = Reporter(runtime.stderr, clock=clock)  # the wait's progress: elapsed, and who holds the lock
            translated = aws_errors(held.lock.environment) if held.lock.environment else nullcontext()
            with out.activity("waiting for the lock"), translated:
                try:
                    held.lock.wait_until_free(deadline, say=out.line, status=out.status, since=first)
                except lock.LockHeld as still:  # the wait is over, the lock still held: the command's refusal
                    _told(held, still)
                    raise
                except KeyboardInterrupt:  # Ctrl-C stops waiting: the command ends, as one refused would have
                    stopped = before_any_step()
                    stopped.message = (
                        f"interrupted while waiting for the lock of {held.lock.env!r}: nothing was changed"
                    )
                    _told(held, stopped)
                    raise stopped from None
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


def say_warning(runtime: Runtime, message: str) -> None:
    runtime.stderr.write(f"⚠️  {message}\n")


def check_account(aws: AwsFactory, env: EnvConfig) -> None:
    """Refuse credentials of another account than the one deploy.toml pins for ``env`` (none pinned: no check,
    and no call)."""
    if env.account:
        aws.account()


def rolled_back_components(
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
    warn = warner(runtime)
    return auto.rolled_back(aws, env, config, components, uncommitted=bool(revision.dirty), warn=warn, heads=heads)


def refuse_older(
    runtime: Runtime, config: Config, env: EnvConfig, component: str, live: str | None, revision: git.Revision
) -> None:
    """UsageError when ``component`` is live at a commit ahead of ``revision``'s (see auto.refuse_taking_back). A
    live commit this clone does not have (a teammate's release not fetched yet), or one on another line of history
    (another branch's), is said before the deploy goes on: what it replaces, as deploy.auto's analysis says it."""
    ahead = changes.live_ahead(config.root, live, revision.sha)
    if ahead:
        auto.refuse_taking_back({component: ahead}, revision.sha, env)
    said = changes.live_elsewhere(config.root, live, revision.sha)
    if said:
        runtime.stderr.write(
            f"⚠️  {component} is live in {env.name} at {said}: deploying HEAD ({revision.short}) replaces what it "
            "has (git fetch, then inv diff, tells what)\n"
        )


def _dropped(config: Config, plan: Plan, before: dict[str, str | None]) -> tuple[str, ...]:
    """The Lambda functions of the live record that this checkout no longer has (their folder was deleted) when
    the plan deploys a stack that may hold functions: the stack, synthesized from this checkout, took them away. A
    rollback deploys a template it kept or made from an older commit, with every function that runs (its ``removes``
    says what it takes away), whatever this checkout has."""
    if plan.rollback or not any(planner.is_function_stack(component) for component, _ in plan.deploys):
        return ()
    present = set(changes.components_of(config))
    return tuple(sorted(c for c in before if c.startswith("lambda:") and c not in present and c not in plan.removes))


def live_record(aws: AwsFactory, env: EnvConfig) -> dict[str, dict[str, str]] | None:
    """The environment's live record (component → {sha, when, record, ...}); None without an artifacts bucket."""
    found = history.History.of(aws, env)
    return found.live() if found else None


def live_record_planned(aws: AwsFactory, env: EnvConfig) -> dict[str, dict[str, str]] | None:
    """The live record a command's guards are checked beside, for :func:`run_plan` to check again under the lock;
    None (not checked again) when it cannot be read as deploykit wrote it: the run says so when it records."""
    try:
        return live_record(aws, env)
    except history.LiveRecordUnreadable:
        return None


class LiveBefore:
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
) -> str | None:
    """Leave the run in the environment's history (and, when it succeeded, in its live record), and its figures in
    CloudWatch (deploykit.metrics), all at once. ``live``: the live record as read before the run, under the lock
    this run holds (not read again); None: read it.

    A record or metrics that cannot be written are reported and never fail a deploy that worked (a rollback's
    record fails it: :func:`_unrecorded_rollback`); what was not kept of the record is returned, as said."""
    deployed, carried = dict(plan.deploys), dict(plan.carried)
    plan = dataclasses.replace(plan, removes=(*plan.removes, *_dropped(config, plan, before)))
    # the run's revision: a dirty build's tag when any part was one (what the changes did not touch is HEAD's)
    head = next((t for t in deployed.values() if git.DIRTY in t), next(iter(deployed.values()), ""))
    head = head or next((sha for _, sha in plan.restarts), "")  # a restart: the commit its tasks run
    components = {**carried, **deployed}
    record = history.record_of(
        report,
        now=aws.now(),  # AWS's time: the records of several machines' runs sort as the runs happened
        components=components,
        # what a rollback went back from, where it read it from the environment: the live record may not name it
        base={c: dict(plan.found).get(c) or before.get(c) for c in (*components, *plan.removes)},
        head=head,
        unchanged=sorted(set(carried) - set(deployed)),
        removed=plan.removes,
        unpromoted=plan.unpromoted,
        left=stack_chain.stacks_left(report.records, planner.stack_roles(env))
        | app_left(report.records)
        | lambda_chain.lambda_left(report.records),
        waited=_LOCK_WAITED.get(),
        held=plan.held,
        # read here, where the commit is (a shallow clone reading the history later may lack it)
        committed=git.commit_times(config.root, [head]).get(head) if head and git.DIRTY not in head else None,
    )
    whose = "the deployment worked but its" if report.ok else "the failed run's"
    try:
        found = history.History.of(aws, env, warn=lambda said: runtime.stderr.write(f"⚠️  {said}\n"))
        if found is None:  # no history (no registry stack): nothing to keep it in
            return None
        writes: dict[str, Callable[[], object]] = {"record": partial(_keep, partial(found.write, live=live), record)}
        if env.metrics:  # off: not even a CloudWatch client is made
            writes["metrics"] = partial(_put_metrics, aws, record)
        written = at_once(writes)
    except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:  # finding the bucket
        written = {"record": exc}
    unkept = None
    if isinstance(written["record"], history.LiveRecordNotWritten):
        unkept = f"its history record was written; {written['record']}"
    elif isinstance(written["record"], history.LiveRecordUnreadable):
        unkept = f"its history record was written, but not the live record: {written['record']}"
    elif isinstance(written["record"], Exception):
        unkept = f"{whose} history record was not written (nor its live record): {written['record']}"
    if unkept:
        runtime.stderr.write(f"⚠️  {unkept}\n")
    if isinstance(written.get("metrics"), Exception):
        runtime.stderr.write(
            f"⚠️  {whose} metrics were not put in CloudWatch: {written['metrics']} (the dashboard misses this "
            f"run; metrics = false in [environments.{env.name}] turns them off)\n"
        )
    return unkept


def _unrecorded_rollback(env: EnvConfig, plan: Plan, unkept: str) -> StepFailed:
    """The failure of a rollback that worked and was not recorded (``unkept`` says which part): the live record
    still names what it took off, and no record says it was taken off, so the next deploy.auto brings it back
    unrefused. It ended with a warning and exit 0."""
    again = ", ".join(f"inv rollback --env {env.name} --component {c} --to {sha}" for c, sha in plan.deploys)
    failed = StepFailed(
        f"{plan.title} worked, but {unkept.removeprefix('the deployment worked but ')}: the live record may still "
        "name what it took off, and inv deploy.auto would bring that back unrefused",
        next_step=f"record it: {again} (it finds it in place, smokes it and records it)",
    )
    failed.heard = True  # the plugins heard of the run, which worked: not of a run that did not start
    return failed


def _keep(write: Callable[[history.Record], object], record: history.Record) -> object:
    """``write(record)``, or the AWS error it raised (each part of a record is reported apart)."""
    try:
        return write(record)
    except (
        botocore.exceptions.BotoCoreError,
        botocore.exceptions.ClientError,
        history.LiveRecordUnreadable,
        history.LiveRecordNotWritten,
    ) as exc:
        return exc


def _put_metrics(aws: AwsFactory, record: history.Record) -> object:
    return _keep(partial(deploy_metrics.publish, aws.client("cloudwatch")), record)


def environments_made(runtime: Runtime, config: Config, pattern: str) -> dict[str, tuple[str, ...]] | overview.EnvView:
    """The deployed environments ``pattern`` made (overview.made_from); when its AWS cannot be read, a view of the
    pattern that says why."""
    sample = config.environment(pattern.replace("*", SAMPLE_PART))  # the account and region they all live in
    try:
        return overview.made_from(runtime.aws_factory(sample), config, pattern)
    except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError, DeployKitError) as exc:
        error = translate_error(exc, sample)
        return overview.EnvView(pattern, sample.region, error=error.message, next_step=error.next_step)


def read_history(aws: AwsFactory, environment: EnvConfig, runtime: Runtime | None = None) -> history.History:
    """The environment's history (a record that cannot be read is passed over, said on ``runtime``'s stderr);
    UsageError when it has none."""
    found = history.History.of(aws, environment, warn=warner(runtime))
    if found is None:
        raise UsageError(
            f"environment {environment.name!r} has no history: its registry stack is not deployed",
            next_step=f"deploy it: inv deploy.full --env {environment.name}",
        )
    return found


def warner(runtime: Runtime | None) -> Callable[[str], object] | None:
    """What tells the user of a history record passed over: a line on ``runtime``'s stderr."""
    return None if runtime is None else line_on(runtime)


def line_on(runtime: Runtime) -> Callable[[str], object]:
    """What writes a line on ``runtime``'s stderr (a plugin's failure in an observer's hook)."""
    return lambda line: runtime.stderr.write(line + "\n")
