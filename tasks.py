"""Invoke tasks: thin wrappers that parse options and call deploykit.

Run them through ./dev (it prepares .venv and the Docker engine): ``./dev inv --list``.
Tasks compose in one call, each deriving its inputs from git and the environment:

    inv build push register-taskdef roll-service wait-healthy
"""

from __future__ import annotations

import difflib
import faulthandler
import functools
import gc
import inspect
import json
import os
import re
import signal
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, TypeVar

from invoke.collection import Collection
from invoke.context import Context
from invoke.exceptions import Exit, ParseError
from invoke.program import Program
from invoke.tasks import task

# The modules a command imports (invoke's, then deploykit's with boto3 and botocore) make a few hundred thousand
# objects that live as long as the process and are never garbage. Frozen (gc.freeze) once invoke's are made and again
# once deploykit's are, no collection walks them again: the collections while deploykit's modules were imported and
# while the command ran walked them all, each time. `inv deploy.auto` with nothing to deploy: 1.49 s -> 1.28 s
# (medians of 14 runs each, alternating, on one sandbox).
gc.freeze()

from deploykit import (  # noqa: E402
    commands,
    planner,
    switches,
)
from deploykit.aws import AwsFactory  # noqa: E402
from deploykit.config import ConfigCache, EnvConfig, endpoint_address, find_config  # noqa: E402
from deploykit.endpoints import check_overrides  # noqa: E402
from deploykit.errors import (  # noqa: E402
    ConfigError,
    DeployKitError,
    EnvironmentNotReady,
    Interrupted,
    UsageError,
)
from deploykit.lock import LockInfo  # noqa: E402
from deploykit.output import guard_standard_streams, output_failures, wrote_to  # noqa: E402
from deploykit.plan import error_json  # noqa: E402
from deploykit.plugins import check_tables, installed_names  # noqa: E402
from deploykit.proxies import bypass_loopback  # noqa: E402

if TYPE_CHECKING:
    from sandbox.settings import Settings

gc.freeze()

# Behind a proxy, the calls to this machine (the sandbox's AWS, registry, load balancers) go past it: NO_PROXY lists
# it before any client is made, the plugins' included (deploykit/proxies.py)
bypass_loopback(os.environ)

# A reader that goes away (inv history | head -3, a pager quit early) ends the output, not the command: a deploy is
# not stopped between two steps by a closed pipe (deploykit/output.py); output lost otherwise is said at the end
guard_standard_streams()

F = TypeVar("F", bound=Callable[..., Any])

# deploy.toml as the running task reads it (reports_errors sets it for the task's run, and only then): the check of the
# whole file before the task, the sandbox's settings and the command's own environment share one read of it
_CONFIGS: ContextVar[ConfigCache | None] = ContextVar("deploykit_task_configs", default=None)


def _configs() -> ConfigCache:
    """The running task's :class:`ConfigCache`; outside a task (a test calling a helper), one of its own."""
    return _CONFIGS.get() or ConfigCache()


COMMON_HELP = {
    "env": "environment from deploy.toml (default: $DEPLOYKIT_ENV, else default_env)",
    "dry-run": "print the plan and change nothing",
    "json": "print the result as JSON on stdout (people's output stays on stderr)",
    "allow-dirty": "build from uncommitted changes (the tag then says -dirty- and hashes the diff)",
}
CHAIN_HELP = COMMON_HELP
SMOKE_HELP = {"smoke": "run the checks after deploying (--no-smoke leaves them out)"}
ROLLBACK_HELP = {
    "rollback": "when wait-healthy, smoke or watch-errors fails, put back what was live (--no-rollback leaves the "
    "failed release in place for debugging)"
}
CANARY_HELP = {
    "canary": "first give the new Lambda version this percentage of the live alias's requests, its errors watched "
    "(0: none; default: the environment's lambda_canary)",
    "bake": "how long the canary runs before the new version takes every request (90s, 5m)",
}
WATCH_HELP = {
    "watch-errors": "after the rollout, watch the app's 5xx through its ALB this long (90s, 5m; 0: not at all); too "
    "many roll it back (default: the environment's app_error_watch)"
}
ALARMS_HELP = {
    "watch-alarms": "after smoke, read the environment's own CloudWatch alarms this long (90s, 10m; 0: once); one "
    "going to ALARM fails the release (default: the environment's alarm_watch seconds)"
}
OLDER_HELP = {
    "allow-older": "deploy HEAD even when what is live is a newer commit on the same line (going back on purpose)"
}
PROMOTE_HELP = {
    "unpromoted": "in an environment with promote_from, deploy even what that environment does not run (an "
    "emergency fix; said in the output; the app is then built here, not copied from there)"
}
ROLLED_BACK_HELP = {
    "allow-rolled-back": "deploy a component as it was when inv rollback took the environment off it (refused "
    "otherwise: fix or revert it first)",
}
PATTERN_ENV_HELP = COMMON_HELP["env"] + '; or a pattern of it ("dev-*"): each deployed environment it made'
YES_HELP = {"yes": "answer yes where the environment asks before each change (confirm = true): for scripts"}
BASE_HELP = {k: v for k, v in COMMON_HELP.items() if k != "allow-dirty"} | {
    "force": "rebuild even when the image is present and current",
}


def reports_errors(func: F) -> F:
    """Print a DeployKitError's message and next step, and exit with its code (1 failed, 2 bad input). A command
    refused because another deploy holds the lock runs again once it is free, when a wait is allowed
    ($DEPLOYKIT_LOCK_WAIT, the environment's lock_wait; commands.until_unlocked)."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        previous = _stop_on_sigterm()
        configs = _CONFIGS.set(ConfigCache())
        as_json = False
        try:
            given = _given(func, args, kwargs)
            as_json = any(name == "json_" and value is True for name, _, value in given)
            _refuse_flag_as_positional(given)
            _refuse_empty_values(given)
            _check_config()
            switches.check_all()  # a DEPLOYKIT_* switch neither on nor off: refused now, not by the step reading it
            return commands.until_unlocked(lambda: func(*args, **kwargs))
        except DeployKitError as exc:
            print(f"❌ {exc.message}", file=sys.stderr)
            if exc.next_step:
                print(f"  → next: {exc.next_step}", file=sys.stderr)
            if as_json and not wrote_to(sys.stdout):  # refused before a plan: a script's jq gets the reason too
                print(json.dumps({"ok": False, "error": error_json(exc)}))
            if exc.exit_code == INTERRUPTED:
                _leave_within(EXIT_GRACE)
            raise Exit(code=exc.exit_code) from None
        except KeyboardInterrupt:
            print("⚠️  interrupted", file=sys.stderr)
            if as_json and not wrote_to(sys.stdout):  # a CI job cancelled: the job's jq gets why there is no report
                stopped = Interrupted("interrupted", next_step="run the same command again")
                print(json.dumps({"ok": False, "error": error_json(stopped)}))
            _leave_within(EXIT_GRACE)
            raise Exit(code=INTERRUPTED) from None
        finally:
            _CONFIGS.reset(configs)
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)

    return wrapper  # type: ignore[return-value]


def _given(
    func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> list[tuple[str, inspect.Parameter, Any]]:
    """Each parameter of a task after its context, with the value the command line gave it (None: not given)."""
    signature = inspect.signature(func)
    bound = signature.bind_partial(*args, **kwargs)
    return [(name, p, bound.arguments.get(name)) for name, p in list(signature.parameters.items())[1:]]


def _refuse_flag_as_positional(given: list[tuple[str, inspect.Parameter, Any]]) -> None:
    """A UsageError when a task's positional argument (deploy.stack's NAME, run's COMMAND...) got a flag for its value:
    invoke gives the flag after a task's name to a positional still unfilled (pyinvoke/invoke#982), so `inv invoke
    --help` would call a function named '--help', and `inv run --help` run a command '--help'. Refused before
    anything is read or started."""
    for name, parameter, value in given:
        if parameter.default is inspect.Parameter.empty and isinstance(value, str) and value.startswith("-"):
            word = name.upper()
            task = next((a for a, b in zip(sys.argv, sys.argv[1:], strict=False) if b == value), "TASK")
            raise UsageError(
                f"{value!r} was taken for {word}: invoke takes a flag written where the task's {word} goes for the "
                f"{word} itself (pyinvoke/invoke#982)",
                next_step=f"this task's help: inv --help {task}; to run it, give {word} first: inv {task} {word} "
                "[--options]",
            )


def _refuse_empty_values(given: list[tuple[str, inspect.Parameter, Any]]) -> None:
    """A UsageError when an option or argument was given an empty value (``--image-tag "$TAG"``, TAG unset): taken as
    not given, it would act on something else than asked (the image running now, a freeze with no end, every
    check). Refused before anything is read or started. --env has its own (deploykit.config)."""
    for name, parameter, value in given:
        if name == "env" or not isinstance(value, str) or value.strip() or value == parameter.default:
            continue
        said = name.upper() if parameter.default is inspect.Parameter.empty else f"--{name.replace('_', '-')}"
        raise UsageError(
            f"{said} is empty ({value!r}): an unset variable?",
            next_step=f"give {said} a value, or leave it out where it may be (inv --help TASK lists the options)",
        )


INTERRUPTED = Interrupted.exit_code  # 130: a command stopped by Ctrl-C or SIGTERM
EXIT_GRACE = 10.0  # seconds an interrupted command may take to leave once it has said so


def _leave_within(seconds: float) -> None:
    """An interrupted command has said what it left and released its lock: once Python is on its way out, the
    process ends within ``seconds``. What Python still does then (joining pool threads whose reads nobody needs now,
    the atexit work, closing connections) may be wedged by where the interrupt landed; past the grace, deploykit says
    so, prints where each thread stands (for a bug report) and leaves with the interrupt's exit code rather than leave
    the terminal (or a CI job) hanging. The way out is seen beginning from threading's own exit hooks, which run before
    Python joins any thread (``concurrent.futures``' executors included: theirs were registered first, so run after
    ours). A caller that goes on in the same process (Python not on its way out ``seconds`` later) is left alone."""

    sys.stdout.flush()  # what the command printed (its --json) is out before anything could wedge
    sys.stderr.flush()
    leaving = threading.Event()
    try:  # threading's exit hooks run in reverse order of registration: this one before the executors' joins
        threading._register_atexit(leaving.set)  # type: ignore[attr-defined]  # private since 3.9, used by concurrent.futures
    except (AttributeError, RuntimeError):  # no such hook (another Python), or Python is already on its way out
        leaving.set()

    def leave() -> None:
        if not leaving.wait(seconds):
            return  # a caller in the same process goes on (a script, a test): not ours to end
        time.sleep(seconds)
        said = f"⚠️  deploykit took more than {seconds:g}s to exit after the interrupt: leaving now; where its threads "
        os.write(2, (said + "stood (please report it):\n").encode())  # not through sys.stderr, whose lock may be held
        faulthandler.dump_traceback(file=sys.stderr, all_threads=True)  # writes to the descriptor itself
        os._exit(INTERRUPTED)

    threading.Thread(target=leave, name="deploykit-exit-grace", daemon=True).start()


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def _stop_on_sigterm() -> Any:
    """SIGTERM (a CI job cancelled) stops a task the way Ctrl-C does: cleanly, between two API calls."""
    if threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGTERM, _raise_interrupt)


def on_the_sandbox(environment: EnvConfig, sandbox_endpoint: str) -> bool:
    """Whether ``environment`` is on the sandbox's AWS endpoint: the sandbox, or another environment beside it (prod
    on the same endpoint). Its address decides, not its name: ``http://localhost:4566/`` is the sandbox at
    ``http://127.0.0.1:4566``; an environment named sandbox on another port (another local AWS) is not."""
    return environment.is_local and endpoint_address(environment.endpoint_url or "") == endpoint_address(
        sandbox_endpoint
    )


class _SandboxFirst:
    """A command's ``aws_factory`` that starts the sandbox when it is not running, the first time the command asks for
    the AWS of an environment on it (the sandbox, or another environment on its AWS endpoint: prod beside it). That
    is after the command has checked its options and the environment's name: a typo (``inv tasks --stopped -3``)
    is refused without starting anything."""

    def __init__(self, configs: ConfigCache | None = None) -> None:
        self._lock = threading.Lock()
        self._started = False
        self._configs = configs or ConfigCache()  # the task's (asked from the command's threads, not the task's)

    def __call__(self, environment: EnvConfig) -> AwsFactory:
        if environment.is_local and not self._started:
            with self._lock:  # a command may ask from several threads at once
                if not self._started:
                    self._started = _start_sandbox(environment, self._configs)
        return AwsFactory(environment)


def _start_sandbox(environment: EnvConfig, configs: ConfigCache) -> bool:
    """Start the sandbox when ``environment`` is on it and it is not running; whether it is (now) running."""
    from sandbox import lifecycle

    settings, path = _sandbox_settings(configs)
    if not on_the_sandbox(environment, settings.endpoint_url):
        return False
    try:
        up, elsewhere = lifecycle.survey(settings)  # each part asked once
        if up:
            if elsewhere:
                print(f"🧪 {_elsewhere(settings, elsewhere)}", file=sys.stderr)
            return True
        print("🧪 the sandbox is not running: starting it (inv sandbox.up)", file=sys.stderr)
        lifecycle.up(settings, path)
    except lifecycle.SandboxError as exc:  # another program on its ports too
        raise EnvironmentNotReady(exc.message, exc.next_step) from None
    return True


def _runtime(*, start_sandbox: bool = True, assume_yes: bool = False) -> commands.Runtime:
    """A task's runtime for its command: ``start_sandbox`` (not for a dry run) starts the sandbox when the command
    first needs it (_SandboxFirst); ``assume_yes``: --yes."""
    configs = _configs()
    factory = _SandboxFirst(configs) if start_sandbox else AwsFactory
    return commands.Runtime(configs=configs, aws_factory=factory, peer_aws_factory=AwsFactory, assume_yes=assume_yes)


def _plain_runtime() -> commands.Runtime:
    """The runtime of a command that starts nothing (the sandbox neither): the task's deploy.toml, read once."""
    return commands.Runtime(configs=_configs())


def _chain(
    stages: tuple[str, ...],
    env: str | None,
    dry_run: bool,
    json_: bool,
    allow_dirty: bool,
    rollback: bool = True,
    allow_older: bool = False,
    watch_errors: str | None = None,
    unpromoted: bool = False,
    allow_rolled_back: bool = False,
    yes: bool = False,
    watch_alarms: str | None = None,
) -> None:
    commands.app_chain(
        stages,
        env=env,
        dry_run=dry_run,
        as_json=json_,
        allow_dirty=allow_dirty,
        allow_older=allow_older,
        rollback=rollback,
        watch_errors=watch_errors,
        watch_alarms=watch_alarms,
        unpromoted=unpromoted,
        allow_rolled_back=allow_rolled_back,
        runtime=_runtime(start_sandbox=stages != ("build",) and not dry_run, assume_yes=yes),
    )


@task(help=CHAIN_HELP)
@reports_errors
def build(
    c: Context, env: str | None = None, dry_run: bool = False, json_: bool = False, allow_dirty: bool = False
) -> None:
    """Build the backend image with the Docker SDK, tagged with the git SHA."""
    _chain(("build",), env, dry_run, json_, allow_dirty)


@task(help=CHAIN_HELP | PROMOTE_HELP)
@reports_errors
def push(
    c: Context,
    env: str | None = None,
    dry_run: bool = False,
    json_: bool = False,
    allow_dirty: bool = False,
    unpromoted: bool = False,
) -> None:
    """Push the image of this commit to the environment's registry (skipped when already there).

    In an environment with promote_from, copy the image that one runs instead."""
    _chain(("push",), env, dry_run, json_, allow_dirty, unpromoted=unpromoted)


@task(help=CHAIN_HELP | PROMOTE_HELP)
@reports_errors
def register_taskdef(
    c: Context,
    env: str | None = None,
    dry_run: bool = False,
    json_: bool = False,
    allow_dirty: bool = False,
    unpromoted: bool = False,
) -> None:
    """Register a task-definition revision that runs this commit's image (only the image changes)."""
    _chain(("register-taskdef",), env, dry_run, json_, allow_dirty, unpromoted=unpromoted)


@task(help=CHAIN_HELP | OLDER_HELP | PROMOTE_HELP | ROLLED_BACK_HELP | YES_HELP)
@reports_errors
def roll_service(
    c: Context,
    env: str | None = None,
    dry_run: bool = False,
    json_: bool = False,
    allow_dirty: bool = False,
    allow_older: bool = False,
    unpromoted: bool = False,
    allow_rolled_back: bool = False,
    yes: bool = False,
) -> None:
    """Point the ECS service at the revision that runs this commit's image."""
    _chain(
        ("roll-service",),
        env,
        dry_run,
        json_,
        allow_dirty,
        allow_older=allow_older,
        unpromoted=unpromoted,
        allow_rolled_back=allow_rolled_back,
        yes=yes,
    )


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
    commands.base_image(env=env, force=force, dry_run=dry_run, as_json=json_, runtime=_plain_runtime())


@task(
    name="app",
    help=CHAIN_HELP
    | OLDER_HELP
    | SMOKE_HELP
    | ROLLBACK_HELP
    | WATCH_HELP
    | ALARMS_HELP
    | PROMOTE_HELP
    | ROLLED_BACK_HELP
    | YES_HELP,
)
@reports_errors
def deploy_app(
    c: Context,
    env: str | None = None,
    dry_run: bool = False,
    json_: bool = False,
    allow_dirty: bool = False,
    allow_older: bool = False,
    smoke: bool = True,
    rollback: bool = True,
    watch_errors: str | None = None,
    watch_alarms: str | None = None,
    unpromoted: bool = False,
    allow_rolled_back: bool = False,
    yes: bool = False,
) -> None:
    """The app chain in one plan: build → push → register-taskdef → roll-service → wait-healthy → smoke.

    In an environment with promote_from: promote-image, a copy of the image that one runs, instead of build → push."""
    stages: tuple[str, ...] = ("build", "push", "register-taskdef", "roll-service", "wait-healthy")
    if smoke:
        stages += ("smoke",)
    _chain(
        stages,
        env,
        dry_run,
        json_,
        allow_dirty,
        rollback,
        allow_older,
        watch_errors,
        unpromoted,
        allow_rolled_back,
        yes,
        watch_alarms,
    )


@task(
    name="stack",
    help={
        "name": "stack name (or its role: registry, data, auth, fargate, api)",
        "image-tag": "ImageTag for the Fargate stack (default: the image live now, never anything else)",
        "allow-replace": "allow the change set to replace a table, bucket or user pool (their data is lost)",
        "approve-access": "in a protected environment, allow the change set to change access (IAM, network, policies)",
        "force-synth": "synthesize even when nothing the CDK app reads has changed",
        "revert-drift": "a drift-aware change set: what was changed outside CloudFormation (the console, the CLI) in "
        "the stack's resources goes back to the template's values, each shown first",
        **COMMON_HELP,
        "allow-dirty": "deploy from uncommitted changes (the history then names the dirty build, <sha12>-dirty-<hash>)",
        **SMOKE_HELP,
        **ALARMS_HELP,
        **PROMOTE_HELP,
        **ROLLED_BACK_HELP,
        **YES_HELP,
    },
)
@reports_errors
def deploy_stack(
    c: Context,
    name: str,
    image_tag: str | None = None,
    allow_replace: bool = False,
    approve_access: bool = False,
    force_synth: bool = False,
    env: str | None = None,
    dry_run: bool = False,
    json_: bool = False,
    smoke: bool = True,
    unpromoted: bool = False,
    allow_rolled_back: bool = False,
    allow_dirty: bool = False,
    revert_drift: bool = False,
    watch_alarms: str | None = None,
    yes: bool = False,
) -> None:
    """One stack: synthesize, change set (its changes shown), execute, follow the events, outputs, smoke."""
    commands.deploy_stack(
        name,
        env=env,
        allow_dirty=allow_dirty,
        image_tag=image_tag,
        allow_replace=allow_replace,
        approve_access=approve_access,
        force_synth=force_synth,
        smoke=smoke,
        dry_run=dry_run,
        as_json=json_,
        unpromoted=unpromoted,
        allow_rolled_back=allow_rolled_back,
        revert_drift=revert_drift,
        watch_alarms=watch_alarms,
        runtime=_runtime(start_sandbox=not dry_run, assume_yes=yes),
    )


@task(
    name="lambda",
    help={
        "name": "the function: a folder of lambda/ (login_handler, health_handler, ...)",
        **CHAIN_HELP,
        "allow-dirty": "deploy uncommitted changes (the version's description then says <sha12>-dirty-<hash>)",
        **OLDER_HELP,
        **SMOKE_HELP,
        **ROLLBACK_HELP,
        **CANARY_HELP,
        **ALARMS_HELP,
        **PROMOTE_HELP,
        **ROLLED_BACK_HELP,
        **YES_HELP,
    },
)
@reports_errors
def deploy_lambda(
    c: Context,
    name: str,
    env: str | None = None,
    dry_run: bool = False,
    json_: bool = False,
    allow_dirty: bool = False,
    allow_older: bool = False,
    smoke: bool = True,
    rollback: bool = True,
    canary: str | None = None,
    bake: str | None = None,
    watch_alarms: str | None = None,
    unpromoted: bool = False,
    allow_rolled_back: bool = False,
    yes: bool = False,
) -> None:
    """One Lambda function without CloudFormation: upload its zip, update the code, publish, move `live`; smoke."""
    commands.deploy_lambda(
        name,
        env=env,
        allow_dirty=allow_dirty,
        allow_older=allow_older,
        smoke=smoke,
        dry_run=dry_run,
        as_json=json_,
        rollback=rollback,
        canary=canary,
        bake=bake,
        watch_alarms=watch_alarms,
        unpromoted=unpromoted,
        allow_rolled_back=allow_rolled_back,
        runtime=_runtime(start_sandbox=not dry_run, assume_yes=yes),
    )


@task(
    name="full",
    help=CHAIN_HELP
    | SMOKE_HELP
    | PROMOTE_HELP
    | ROLLED_BACK_HELP
    | YES_HELP
    | ALARMS_HELP
    | {"approve-access": "in a protected environment, allow the stacks to change access (IAM, network, policies)"},
)
@reports_errors
def deploy_full(
    c: Context,
    env: str | None = None,
    dry_run: bool = False,
    json_: bool = False,
    allow_dirty: bool = False,
    smoke: bool = True,
    approve_access: bool = False,
    unpromoted: bool = False,
    allow_rolled_back: bool = False,
    watch_alarms: str | None = None,
    yes: bool = False,
) -> None:
    """Every stack in dependency order (independent ones in parallel), with this commit's image and zips; smoke."""
    commands.deploy_full(
        env=env,
        allow_dirty=allow_dirty,
        smoke=smoke,
        approve_access=approve_access,
        dry_run=dry_run,
        as_json=json_,
        unpromoted=unpromoted,
        allow_rolled_back=allow_rolled_back,
        watch_alarms=watch_alarms,
        runtime=_runtime(start_sandbox=not dry_run, assume_yes=yes),
    )


@task(
    name="rollback",
    help={
        "env": COMMON_HELP["env"],
        "to": "the commit to go back to (7 or more hex digits of its SHA; a stack: any revision; default: the previous "
        "successful deploy)",
        "component": "app (default), lambda:<fn> (e.g. lambda:login_handler) or stack:<role> (e.g. stack:fargate)",
        "run": "every component one run deployed, back as it was before it: last, or the run's time as inv history "
        "shows it (or its record id)",
        "dry-run": "resolve the target and print the plan; change nothing",
        "json": COMMON_HELP["json"],
        "allow-replace": "a stack: let its change set replace or delete data resources (as deploy.stack)",
        "approve-access": "a stack in a protected environment: let its change set change access (as deploy.stack)",
        "wait-alarms": "then wait up to this long (90s, 10m) until none of the alarm watch's alarms is in ALARM; exit "
        "1 if one still is",
        **SMOKE_HELP,
        **YES_HELP,
    },
)
@reports_errors
def rollback(
    c: Context,
    env: str | None = None,
    to: str | None = None,
    component: str | None = None,
    run: str | None = None,
    dry_run: bool = False,
    json_: bool = False,
    smoke: bool = True,
    allow_replace: bool = False,
    approve_access: bool = False,
    wait_alarms: str | None = None,
    yes: bool = False,
) -> None:
    """Put the app, one Lambda, one stack or a whole run back on an earlier commit; smoke.

    The app: a fresh task-definition revision with the earlier image; a Lambda: its alias moved to the earlier
    version; a stack: that commit's template; --run: every component that run deployed, as it was before it."""
    commands.rollback(
        env=env,
        to=to,
        component=component,
        run=run,
        smoke=smoke,
        allow_replace=allow_replace,
        approve_access=approve_access,
        wait_alarms=wait_alarms,
        dry_run=dry_run,
        as_json=json_,
        runtime=_runtime(assume_yes=yes),  # even a dry run reads the environment to resolve the target
    )


@task(
    name="tasks",
    help={
        "env": COMMON_HELP["env"],
        "stopped": "how many of the newest stopped tasks to show after the running ones (default 10; 0: none)",
        "json": "print the tasks as JSON on stdout",
    },
)
@reports_errors
def tasks_list(c: Context, env: str | None = None, stopped: int = 10, json_: bool = False) -> None:
    """The service's tasks: revision, image, who started them, status, health, ALB target, why one stopped."""
    commands.tasks_list(env=env, stopped=stopped, as_json=json_, runtime=_runtime())


@task(
    name="scan",
    help={
        "env": COMMON_HELP["env"],
        "image-tag": "the image of the environment's repository to judge (default: this checkout's, as inv push tags)",
        "json": "print the scan and its verdict as JSON on stdout",
    },
)
@reports_errors
def scan_image(c: Context, env: str | None = None, image_tag: str | None = None, json_: bool = False) -> None:
    """ECR's scan of an image, judged as the scan gate judges a deploy's: its findings; exit 1 if refused."""
    commands.scan_image(env=env, image_tag=image_tag, as_json=json_, runtime=_runtime())


@task(
    name="restart",
    help={
        "env": COMMON_HELP["env"],
        "dry-run": COMMON_HELP["dry-run"],
        "json": COMMON_HELP["json"],
        "smoke": "run the checks after the restart (--no-smoke leaves them out)",
        **YES_HELP,
    },
)
@reports_errors
def restart_app(
    c: Context,
    env: str | None = None,
    dry_run: bool = False,
    json_: bool = False,
    smoke: bool = True,
    yes: bool = False,
) -> None:
    """Replace every task of the service with a fresh one of what it runs (a rotated secret); wait; smoke.

    Nothing is built or deployed: the same revision, image and commit, new tasks beside the old ones, the old drained
    once the new serve. Holds the lock and is recorded in the history; a freeze does not refuse it."""
    commands.restart_app(
        env=env,
        smoke=smoke,
        dry_run=dry_run,
        as_json=json_,
        runtime=_runtime(start_sandbox=not dry_run, assume_yes=yes),
    )


@task(
    name="pause",
    help={
        "env": PATTERN_ENV_HELP,
        "reason": "why, for who finds it paused (inv health, inv envs, the history)",
        "dry-run": COMMON_HELP["dry-run"],
        "json": COMMON_HELP["json"],
        **YES_HELP,
    },
)
@reports_errors
def pause_app(
    c: Context, env: str | None = None, reason: str = "", dry_run: bool = False, json_: bool = False, yes: bool = False
) -> None:
    """Scale the service to 0 tasks while nobody works on it (nights, weekends); the count kept for inv resume.

    The load balancer, the API, its Lambdas and the data stay; the ALB answers 503 meanwhile. Any deploy wakes it
    first. Refused in a protected environment. Holds the lock and is recorded in the history."""
    commands.pause_app(
        env=env,
        reason=reason,
        dry_run=dry_run,
        as_json=json_,
        runtime=_runtime(start_sandbox=not dry_run, assume_yes=yes),
    )


@task(
    name="resume",
    help={
        "env": PATTERN_ENV_HELP,
        "dry-run": COMMON_HELP["dry-run"],
        "json": COMMON_HELP["json"],
        "smoke": "run the checks once the tasks serve (--no-smoke leaves them out)",
        **YES_HELP,
    },
)
@reports_errors
def resume_app(
    c: Context,
    env: str | None = None,
    dry_run: bool = False,
    json_: bool = False,
    smoke: bool = True,
    yes: bool = False,
) -> None:
    """Scale a paused service back to the count it ran; wait until its tasks serve; smoke."""
    runtime = _runtime(assume_yes=yes)  # even a dry run reads whether it is paused
    commands.resume_app(env=env, smoke=smoke, dry_run=dry_run, as_json=json_, runtime=runtime)


@task(
    name="logs",
    help={
        "env": COMMON_HELP["env"],
        "component": "app (default: the service's containers), lambda:<fn> (e.g. lambda:login_handler), several "
        "separated by commas, or all (the app and every function)",
        "since": "how far back: a duration (30s, 10m, 2h, 1d) or an ISO time (default 10m)",
        "task": "only this task of the app (its id, or the first characters shown in the second column)",
        "limit": "the newest N lines (default 200)",
        "follow": "then print each new line as it arrives, until Ctrl-C",
        "json": "print the lines as JSON on stdout",
        "filter": 'only the lines matching a CloudWatch Logs filter pattern: ERROR, "GET /cars", ?ERROR ?WARN',
    },
)
@reports_errors
def show_logs(
    c: Context,
    env: str | None = None,
    component: str = "app",
    since: str = "10m",
    task: str = "",
    limit: int = 200,
    follow: bool = False,
    json_: bool = False,
    filter_: str = "",
) -> None:
    """What the app's containers or Lambda functions wrote (CloudWatch Logs): the newest lines, or followed."""
    commands.logs(
        env=env,
        component=component,
        since=since,
        task=task,
        limit=limit,
        follow=follow,
        as_json=json_,
        pattern=filter_,
        runtime=_runtime(),
    )


@task(
    name="run",
    help={
        "command": "the command, one quoted string: 'python -m app.release' (split as a shell would)",
        "env": COMMON_HELP["env"],
        "timeout": "stop it after this long: 300, 90s, 10m, 1h (default 10m)",
        "image-tag": "run it in this image of the service's repository instead (pushed, not yet deployed)",
        "json": "print the task, its exit code and time as JSON on stdout (its output then on stderr)",
    },
)
@reports_errors
def run_command(
    c: Context,
    command: str,
    env: str | None = None,
    timeout: str = "10m",
    image_tag: str | None = None,
    json_: bool = False,
) -> None:
    """A command once, in a one-off task of what the service runs, beside it; its output followed.

    The task has the service's network, roles, environment and secrets; exit 1 unless the command exits 0; Ctrl-C
    or --timeout stops the task."""
    commands.run_command(command, env=env, timeout=timeout, image_tag=image_tag, as_json=json_, runtime=_runtime())


@task(
    name="invoke",
    help={
        "function": "the function: its folder under lambda/, e.g. login_handler",
        "env": COMMON_HELP["env"],
        "event": 'the event: JSON (\'{"httpMethod": "GET"}\') or @FILE, a JSON file (default {})',
        "version": "call this version instead of the live alias",
        "json": "print the answer, the version, the status and the log's tail as JSON on stdout",
    },
)
@reports_errors
def invoke_function(
    c: Context, function: str, env: str | None = None, event: str = "{}", version: str = "", json_: bool = False
) -> None:
    """One Lambda function called once through its live alias: its answer, the version that gave it, its log's tail.

    The code runs for real in the environment (what it writes is written); exit 1 when the function raised."""
    commands.invoke_function(function, env=env, event=event, version=version, as_json=json_, runtime=_runtime())


@task(name="endpoints", help={"env": COMMON_HELP["env"], "json": COMMON_HELP["json"]})
@reports_errors
def show_endpoints(c: Context, env: str | None = None, json_: bool = False) -> None:
    """The environment's endpoints (ALB and API URLs, pool and client ids, tables, buckets) from its stacks."""
    commands.endpoints(env=env, as_json=json_, runtime=_plain_runtime())


@task(name="lookup", help={"env": COMMON_HELP["env"], "json": COMMON_HELP["json"]})
@reports_errors
def lookup_values(c: Context, env: str | None = None, json_: bool = False) -> None:
    """Look up what the CDK app asks of the environment (SSM parameters, zones, VPCs) into cdk/cdk.context.json.

    Then commit the file. As the CDK CLI looks them up at synthesis; deploykit's own synthesis refuses a template
    holding a lookup's placeholder (dummy-value-for-..., vpc-12345) until the file holds the value."""
    commands.lookup(env=env, as_json=json_, runtime=_runtime())


@task(
    name="smoke",
    help={
        "env": COMMON_HELP["env"],
        "only": "run only these checks, comma-separated (e.g. alb,auth)",
        "json": "print the results as JSON on stdout",
        "junit": "also write the results as JUnit XML to this file (for CI)",
    },
)
@reports_errors
def smoke_checks(
    c: Context, env: str | None = None, only: str | None = None, json_: bool = False, junit: str = ""
) -> None:
    """Run every check the plugins register (alb, api_gateway, auth, kyc, connectivity, yours) in parallel."""
    from pathlib import Path

    commands.smoke(
        env=env,
        only=only.split(",") if only else None,
        as_json=json_,
        junit=Path(junit) if junit else None,
        runtime=_runtime(),
    )


@task(
    name="history",
    help={
        "env": COMMON_HELP["env"],
        "json": "print the records (and the live record) as JSON on stdout",
        "limit": "how many deployments, newest first (default 20)",
        "component": "only the runs that deployed it: app, lambda:<fn> or stack:<role>, e.g. stack:fargate",
        "commits": "under the table, the commits each run took live (what shipped)",
    },
)
@reports_errors
def history_list(
    c: Context,
    env: str | None = None,
    json_: bool = False,
    limit: int = 20,
    component: str | None = None,
    commits: bool = False,
) -> None:
    """The environment's deployments (who, when, command, commit, result, time) and what is live per component."""
    commands.history_list(env=env, limit=limit, component=component, as_json=json_, commits=commits, runtime=_runtime())


@task(
    name="report",
    help={
        "env": COMMON_HELP["env"],
        "json": "print the report as JSON on stdout",
        "since": "the window's start: a duration back from now (30d, 12h) or an ISO time (default 30d)",
    },
)
@reports_errors
def deploy_report(c: Context, env: str | None = None, json_: bool = False, since: str = "30d") -> None:
    """How the deploys went: frequency, failures, time to restore, commit to live, chain and step times."""
    commands.deployment_report(env=env, since=since, as_json=json_, runtime=_runtime())


@task(
    name="perf",
    help={
        "env": COMMON_HELP["env"],
        "since": "the window's start: a duration back from now (1d, 12h) or an ISO time (default 1d, 15d at most)",
        "component": "app or lambda:FN alone (default: the app and every function)",
        "limit": "the newest releases of each component shown (default 10)",
        "json": "print the releases and their figures as JSON on stdout",
    },
)
@reports_errors
def perf_report(
    c: Context,
    env: str | None = None,
    since: str = "1d",
    component: str | None = None,
    limit: int = 10,
    json_: bool = False,
) -> None:
    """How each release served: requests, errors, p50/p90/p99; one slower or failing more than the one before marked."""
    commands.perf_report(env=env, since=since, component=component, limit=limit, as_json=json_, runtime=_runtime())


@task(name="unlock", help={"env": COMMON_HELP["env"], "yes": "do not ask for confirmation (for scripts)"})
@reports_errors
def unlock(c: Context, env: str | None = None, yes: bool = False) -> None:
    """Break the environment's deploy lock on purpose, when the deploy holding it is dead: who held it, deleted."""

    _configs().load().environment(env)  # an unknown environment said as such first
    if not yes and not sys.stdin.isatty():  # said before the lock is read
        raise UsageError(
            "unlock needs a confirmation and there is no terminal to ask on", "pass --yes to confirm in a script"
        )

    def confirm(held: LockInfo) -> bool:
        return yes or input("Break this lock? Only if that deploy is dead. [y/N] ").strip().lower() in ("y", "yes")

    commands.unlock(env=env, confirm=confirm, runtime=_runtime())


@task(
    name="freeze",
    help={
        "env": COMMON_HELP["env"],
        "reason": "why (required): the people the freeze stops read it",
        "until": "when it ends by itself: a duration from now (90m, 12h, 3d) or a time (2026-12-02T08:00Z); "
        "default: at inv unfreeze",
    },
)
@reports_errors
def freeze_env(c: Context, env: str | None = None, reason: str = "", until: str | None = None) -> None:
    """Close the environment to deploys for a while: deploys and destroy are refused, rollbacks are not."""
    commands.freeze_env(env=env, reason=reason, until=until, runtime=_runtime())


@task(name="unfreeze", help={"env": COMMON_HELP["env"]})
@reports_errors
def unfreeze_env(c: Context, env: str | None = None) -> None:
    """End the environment's freeze: deploys go again."""
    commands.unfreeze_env(env=env, runtime=_runtime())


@task(name="envs", help={"json": "print every environment's live components, last run and lock as JSON on stdout"})
@reports_errors
def show_envs(c: Context, json_: bool = False) -> None:
    """Every environment at a glance: each component's live commit against HEAD, the last run, the lock."""
    commands.envs(as_json=json_, runtime=_plain_runtime())


@task(name="health", help={"env": COMMON_HELP["env"], "json": "print the report as JSON on stdout"})
@reports_errors
def health_report(c: Context, env: str | None = None, json_: bool = False) -> None:
    """Start of the day: stacks, service, targets, API stage, Lambdas, live SHA; findings and recommendations."""
    commands.health_report(env=env, as_json=json_, runtime=_runtime())


@task(
    name="alarms",
    help={
        "env": COMMON_HELP["env"],
        "wait": "then wait up to this long (90s, 10m) until none is in ALARM; exit 1 if one still is",
        "json": "print the alarms as JSON on stdout",
    },
)
@reports_errors
def alarms(c: Context, env: str | None = None, wait: str | None = None, json_: bool = False) -> None:
    """The alarms the alarm watch judges deploys by, as CloudWatch has them now; --wait until none is in ALARM."""
    commands.alarms(env=env, wait=wait, as_json=json_, runtime=_runtime())


AUTO_HELP = {
    **CHAIN_HELP,
    **SMOKE_HELP,
    **ROLLBACK_HELP,
    "since": "compare every component with this commit instead of the one live for it",
    **OLDER_HELP,
    **CANARY_HELP,
    **WATCH_HELP,
    **ALARMS_HELP,
    "allow-dirty": "count uncommitted changes too (images and versions are then tagged -dirty-)",
    "watch": "deploy the work tree now, then again on each save or commit (uncommitted changes included), until Ctrl-C",
    "logs": "with --watch: between deploys, print what the app and the functions log (--no-logs: not)",
    **PROMOTE_HELP,
    **ROLLED_BACK_HELP,
    "only": "deploy only these of the changed components, separated by commas: app, lambda:NAME, stack:ROLE (or the "
    "stack's name), or a kind: lambda, stack; the others are held back for a later deploy.auto",
    "skip": "hold back these changed components (as --only names them): not deployed now, deployed by a later "
    "deploy.auto",
    **YES_HELP,
}


@task(name="auto", help=AUTO_HELP)
@reports_errors
def deploy_auto(
    c: Context,
    env: str | None = None,
    dry_run: bool = False,
    json_: bool = False,
    since: str | None = None,
    allow_dirty: bool = False,
    allow_older: bool = False,
    smoke: bool = True,
    rollback: bool = True,
    watch: bool = False,
    canary: str | None = None,
    bake: str | None = None,
    watch_errors: str | None = None,
    watch_alarms: str | None = None,
    unpromoted: bool = False,
    allow_rolled_back: bool = False,
    only: str | None = None,
    skip: str | None = None,
    yes: bool = False,
    logs: bool = True,
) -> None:
    """Deploy exactly what changed since what is live: stacks, Lambda code, the app; smoke once at the end.
    Another deploy holding the environment's lock: refused, or waited for with DEPLOYKIT_LOCK_WAIT=15m."""
    if not logs and not watch:
        raise UsageError(
            "--no-logs goes with --watch (the logs it prints between deploys)",
            next_step="add --watch, or leave out --no-logs",
        )
    if watch:
        if (
            dry_run
            or json_
            or since
            or canary is not None
            or bake is not None
            or watch_errors is not None
            or watch_alarms is not None
            or unpromoted
        ):
            raise UsageError(
                "--watch deploys the work tree as it changes: it does not go with --dry-run, --json, --since, "
                "--canary, --bake, --watch-errors, --watch-alarms or --unpromoted",
                next_step="leave those out, or run inv deploy.auto without --watch",
            )
        commands.deploy_watch(
            env=env,
            allow_older=allow_older,
            smoke=smoke,
            rollback=rollback,
            allow_rolled_back=allow_rolled_back,
            only=only,
            skip=skip,
            logs=logs,
            runtime=_runtime(assume_yes=yes),
        )
        return
    commands.deploy_auto(
        env=env,
        since=since,
        allow_dirty=allow_dirty,
        allow_older=allow_older,
        smoke=smoke,
        dry_run=dry_run,
        as_json=json_,
        rollback=rollback,
        canary=canary,
        bake=bake,
        watch_errors=watch_errors,
        watch_alarms=watch_alarms,
        unpromoted=unpromoted,
        allow_rolled_back=allow_rolled_back,
        only=only,
        skip=skip,
        runtime=_runtime(start_sandbox=not dry_run, assume_yes=yes),
    )


@task(
    name="diff",
    help={
        "env": COMMON_HELP["env"],
        "json": "print the changes and each changed stack's CloudFormation changes as JSON on stdout",
        "markdown": "print the same as Markdown on stdout, for a pull request's comment or a CI job's summary",
        "since": "compare with this commit instead of the one live for each component",
        "verify": "check that the environment runs what this checkout would deploy, whatever git and the live "
        "record say: every stack's change set and every function's code (exit 1 when anything differs)",
        "drift": "preview every stack through a drift-aware change set: what was changed outside CloudFormation "
        "(the console, the CLI) is shown, as deploy.stack --revert-drift would put it back",
    },
)
@reports_errors
def show_diff(
    c: Context,
    env: str | None = None,
    json_: bool = False,
    markdown: bool = False,
    since: str | None = None,
    verify: bool = False,
    drift: bool = False,
) -> None:
    """Change Analysis: what changed since what is live, the command for each part, each stack's change set."""
    commands.diff(
        env=env, since=since, as_json=json_, as_markdown=markdown, verify=verify, drift=drift, runtime=_runtime()
    )


deploy = Collection("deploy")
deploy.add_task(deploy_auto)
deploy.add_task(deploy_app)
deploy.add_task(deploy_stack)
deploy.add_task(deploy_lambda)
deploy.add_task(deploy_full)


@task(
    help={
        "include-data": "also delete the stacks holding data (registry, data, auth)",
        "stack": "only these stacks of the team's own, by role, commas between (notifications,alerts), before they "
        "leave the app",
        "yes": "do not ask for confirmation (for scripts)",
        **{k: v for k, v in COMMON_HELP.items() if k != "allow-dirty"},
    }
)
@reports_errors
def destroy(
    c: Context,
    include_data: bool = False,
    stack: str | None = None,
    yes: bool = False,
    env: str | None = None,
    dry_run: bool = False,
    json_: bool = False,
) -> None:
    """Delete the environment's stacks in reverse order; data stacks only with --include-data."""
    config = _configs().load()
    environment = config.environment(env)
    if stack is not None:  # a name that is none of the team's stacks: said before the person types a confirmation
        planner.own_roles(environment, stack)
    if not dry_run and not yes:
        if not sys.stdin.isatty():
            raise UsageError(
                "destroy needs a confirmation and there is no terminal to ask on", "pass --yes to confirm in a script"
            )
        what = "every stack" if include_data else "the stacks without data"
        if stack is not None:
            what = f"the stack(s) {stack}" + (" and the data they kept" if include_data else "")
        answer = input(f"Delete {what} of {environment.name!r}? Type the environment's name to confirm: ")
        if answer.strip() != environment.name:
            print("Nothing deleted.", file=sys.stderr)
            return
    commands.destroy(
        env=env, include_data=include_data, stack=stack, dry_run=dry_run, as_json=json_, runtime=_plain_runtime()
    )


# -- images ----------------------------------------------------------------------------------------------------


@task(
    name="cleanup",
    help={
        "env": COMMON_HELP["env"],
        "keep": "how many of the newest tagged images to keep whatever else holds (default 10)",
        "dry-run": "list what would be deleted and why, delete nothing",
        "json": "print every image, its action and why as JSON on stdout",
    },
)
@reports_errors
def images_cleanup(
    c: Context, env: str | None = None, keep: int = 10, dry_run: bool = False, json_: bool = False
) -> None:
    """Delete old images of the repository: keeps the N newest, those in use or recorded in any history."""
    commands.images_cleanup(env=env, keep=keep, dry_run=dry_run, as_json=json_, runtime=_runtime())


images = Collection("images")
images.add_task(images_cleanup)


# -- lambda ----------------------------------------------------------------------------------------------------


@task(
    name="cleanup",
    help={
        "env": COMMON_HELP["env"],
        "function": "only this function (a folder of lambda/); default: every function of the environment's stacks",
        "keep": "how many of each function's newest versions to keep whatever else holds (default 10)",
        "dry-run": "list what would be deleted and why, delete nothing",
        "json": "print every version, its action and why as JSON on stdout",
    },
)
@reports_errors
def lambda_cleanup(
    c: Context,
    env: str | None = None,
    function: str | None = None,
    keep: int = 10,
    dry_run: bool = False,
    json_: bool = False,
) -> None:
    """Delete old Lambda versions and the zips nothing uses; keeps the N newest and what may run again.

    Versions: keeps the N newest, those an alias routes to or the history records. Zips (lambda/, lambda-vendored/
    in the artifacts bucket): keeps what a version left or $LATEST runs, what the API stack names, a day's uploads."""
    commands.lambda_cleanup(env=env, function=function, keep=keep, dry_run=dry_run, as_json=json_, runtime=_runtime())


@task(
    name="check",
    help={
        "function": "only this function (a folder of lambda/); default: every function of lambda/",
        "json": "print each function's problems as JSON on stdout",
    },
)
@reports_errors
def lambda_check(c: Context, function: str | None = None, json_: bool = False) -> None:
    """Whether each function's zip would import on Lambda, without AWS (a commit hook, a CI job); exit 1 if not.

    Its handler's imports and its vendored packages' requirements, for deploy.toml's lambda_runtime and
    lambda_architecture, as a deploy judges the zips it uploads."""
    commands.lambda_check(function=function, as_json=json_, runtime=_runtime())


lambdas = Collection("lambda")
lambdas.add_task(lambda_cleanup)
lambdas.add_task(lambda_check)


# -- task definitions ------------------------------------------------------------------------------------------


@task(
    name="cleanup",
    help={
        "env": COMMON_HELP["env"],
        "keep": "how many of the newest revisions to keep whatever else holds (default 10)",
        "dry-run": "list what would be deregistered, change nothing",
        "json": "print every ACTIVE revision, its action and why as JSON on stdout",
    },
)
@reports_errors
def taskdefs_cleanup(
    c: Context, env: str | None = None, keep: int = 10, dry_run: bool = False, json_: bool = False
) -> None:
    """Deregister old revisions of the service's task definition; keeps the N newest and what runs or may.

    Kept: the N newest, the service's and its deployments', those a task runs, the Fargate stack's, the live
    record's. Deregistered revisions stay described by ARN; running tasks are not touched."""
    commands.taskdefs_cleanup(env=env, keep=keep, dry_run=dry_run, as_json=json_, runtime=_runtime())


taskdefs = Collection("taskdefs")
taskdefs.add_task(taskdefs_cleanup)


# -- the sandbox: a local AWS on this machine ---------------------------------------------------------------


def _check_config() -> None:
    """deploy.toml, validated whole before any task runs (a few milliseconds): its own keys, and the [sandbox] table
    the sandbox reads (deploykit leaves that table to it), the keys and templates of each environment's endpoints, and
    the [plugins.NAME] tables' names. A mistake anywhere in it is exit 2 with where it is, even for a task that would
    not have read that part. Read once for the task: the task's command and the sandbox's settings take it from the
    task's :class:`ConfigCache`, not from the file again."""
    configs = _configs()
    config = configs.load()
    _sandbox_settings(configs)
    for env in config.environments.values():
        check_overrides(env.endpoints, env.name)
    for pattern, body in config.patterns.items():
        endpoints = body.get("endpoints")
        check_overrides(endpoints if isinstance(endpoints, dict) else {}, pattern, f'environments."{pattern}"')
    check_tables(config, installed_names())


def _sandbox_settings(configs: ConfigCache | None = None) -> tuple[Any, Any]:
    """The [sandbox] table's settings and deploy.toml's path, from ``configs`` (default: the running task's)."""
    from sandbox.settings import SettingsError, settings_of

    path = find_config()
    configs = configs or _configs()
    try:
        return settings_of(configs.toml(path), path), path
    except SettingsError as exc:
        raise ConfigError(
            str(exc), exc.next_step or "fix the [sandbox] table of deploy.toml, then rerun (nothing started)"
        ) from None


def _sandbox_call(func: Callable[..., Any], *args: Any) -> Any:
    from sandbox.lifecycle import SandboxError

    try:
        return func(*args)
    except SandboxError as exc:
        raise EnvironmentNotReady(exc.message, exc.next_step) from None


@task(name="up")
@reports_errors
def sandbox_up(c: Context) -> None:
    """Start the sandbox (AWS endpoint, registry, runtimes) on 127.0.0.1; idempotent."""
    from sandbox import lifecycle

    settings, path = _sandbox_settings()
    started = _sandbox_call(lifecycle.up, settings, path)
    print(f"🧪 sandbox up ({', '.join(started) if started else 'already running'})", file=sys.stderr)
    if elsewhere := _sandbox_call(lifecycle.started_elsewhere, settings):
        print(f"🧪 {_elsewhere(settings, elsewhere)}", file=sys.stderr)
    _print_status(settings)


def _elsewhere(settings: Settings, parts: list[str]) -> str:
    """What a checkout is told when it uses a sandbox whose ``parts`` (lifecycle.started_elsewhere) another checkout
    started (on the same ports)."""
    parts = [{"sandbox": "AWS endpoint"}.get(part, part) for part in parts]
    return (
        f"using the sandbox at {settings.endpoint_url}, whose {' and '.join(parts)} another checkout started "
        "(a second clone or a worktree on the same ports): its state is shared, and inv sandbox.down there stops it"
    )


@task(name="down")
@reports_errors
def sandbox_down(c: Context) -> None:
    """Stop the sandbox: only the processes `up` started (by pid) and their task containers."""
    from sandbox import lifecycle

    settings, _path = _sandbox_settings()
    stopped = lifecycle.down(settings)
    print(f"🧪 sandbox down ({', '.join(stopped) if stopped else 'nothing was running'})", file=sys.stderr)


@task(name="status", help={"json": "print the parts as JSON"})
@reports_errors
def sandbox_status(c: Context, json_: bool = False) -> None:
    """Each part of the sandbox, its address and its health; exit 1 if one is unhealthy."""
    settings, _path = _sandbox_settings()
    if not _print_status(settings, as_json=json_):
        raise Exit(code=1)


@task(name="logs", help={"part": "registry or sandbox (default: both)", "lines": "lines per log (default 50)"})
@reports_errors
def sandbox_logs(c: Context, part: str | None = None, lines: int = 50) -> None:
    """Show the end of the sandbox's logs (.sandbox/*.log)."""
    from sandbox import lifecycle

    settings, _path = _sandbox_settings()
    if lines < 1:
        raise UsageError(f"--lines {lines}: a log's end is 1 line or more", next_step="inv sandbox.logs --lines 50")
    parts = [process.name for process in lifecycle.processes(settings)]
    if part is not None and part not in parts:
        raise UsageError(f"the sandbox has no part {part!r}", next_step=f"name one: --part {' or --part '.join(parts)}")
    print(lifecycle.log_tail(settings, part, lines))


@task(name="reset")
@reports_errors
def sandbox_reset(c: Context) -> None:
    """Stop the sandbox, forget all its state (AWS resources, images), start it again."""
    from sandbox import lifecycle

    settings, path = _sandbox_settings()
    _sandbox_call(lifecycle.reset, settings, path)
    print("🧪 sandbox reset", file=sys.stderr)
    _print_status(settings)


@task(
    name="throttle",
    help={
        "service": "the AWS service as boto3 names it: ecs, ecr, elbv2, cloudformation, lambda, s3...",
        "operation": "only this operation (UpdateService, CreateChangeSet...); default: every one of the service",
        "count": "how many requests to refuse before answering normally again (default 3)",
        "clear": "forget every injected fault",
    },
)
@reports_errors
def sandbox_throttle(
    c: Context, service: str = "", operation: str | None = None, count: int = 3, clear: bool = False
) -> None:
    """Rehearse AWS throttling: the sandbox refuses the next COUNT requests of SERVICE[/OPERATION] as AWS does."""
    from sandbox import lifecycle

    settings, _path = _sandbox_settings()
    if clear:
        _sandbox_call(lifecycle.clear_faults, settings)
        print("🧪 sandbox faults cleared", file=sys.stderr)
        return
    if not service:
        raise UsageError("name the service to throttle", next_step="inv sandbox.throttle --service ecs [--operation X]")
    if count < 1:
        raise UsageError(f"--count {count}: throttle 1 request or more", next_step="inv sandbox.throttle --service ecs")
    pending = _sandbox_call(lambda: lifecycle.inject_throttling(settings, service, operation, count=count))
    for fault in pending:
        print(f"🧪 throttling {fault}", file=sys.stderr)


@task(
    name="scan-findings",
    iterable=["finding"],
    help={
        "finding": "NAME:SEVERITY[:PACKAGE[@VERSION]], e.g. CVE-2026-0001:HIGH:openssl@3.0.11; repeat for more",
        "seconds": "how long each scan takes before it is COMPLETE (ECR: seconds to minutes; default 0)",
        "clear": "scans find nothing again, at once",
    },
)
@reports_errors
def sandbox_scan_findings(
    c: Context, finding: list[str] | None = None, seconds: float = 0.0, clear: bool = False
) -> None:
    """Rehearse ECR's image scans: each image scanned from now on is found to have these findings."""
    from sandbox import lifecycle

    if clear and (finding or seconds):
        raise UsageError(
            "--clear forgets every finding and the scan's time: it goes alone",
            next_step="inv sandbox.scan-findings --clear, or leave out --clear",
        )
    findings = [] if clear else [_finding(text) for text in finding or []]
    if not clear and not findings and not seconds:
        raise UsageError(
            "name a finding (or --seconds, or --clear)",
            next_step="inv sandbox.scan-findings --finding CVE-2026-0001:HIGH:openssl@3.0.11 [--seconds 2]",
        )
    if not 0 <= seconds <= 600:
        raise UsageError(
            f"--seconds {seconds:g}: a scan takes from 0 to 600 seconds here",
            next_step="inv sandbox.scan-findings --finding CVE-2026-0001:HIGH --seconds 2",
        )
    settings, _path = _sandbox_settings()
    _sandbox_call(lambda: lifecycle.rehearse_image_scans(settings, findings, 0.0 if clear else seconds))
    if not findings and (clear or not seconds):
        print("🧪 the sandbox's image scans find nothing again, at once", file=sys.stderr)
        return
    names = ", ".join(f"{f['name']} ({f['severity']})" for f in findings) or "nothing"
    print(f"🧪 each image the sandbox's ECR scans from now on: {names}, in {seconds:g}s", file=sys.stderr)


def _finding(text: str) -> dict[str, str]:
    """``NAME:SEVERITY[:PACKAGE[@VERSION]]`` → a finding of the sandbox's scan rehearsal."""
    name, _, rest = text.partition(":")
    severity, _, package = rest.partition(":")
    severities = ("CRITICAL", "HIGH", "MEDIUM", "LOW", "INFORMATIONAL", "UNDEFINED")
    if not name.strip() or severity.upper() not in severities:
        raise UsageError(
            f"--finding {text!r} is not NAME:SEVERITY[:PACKAGE[@VERSION]] with a severity of {', '.join(severities)}",
            next_step="inv sandbox.scan-findings --finding CVE-2026-0001:HIGH:openssl@3.0.11",
        )
    finding = {"name": name.strip(), "severity": severity.upper()}
    package, _, version = package.partition("@")
    if package:
        finding["package"] = package
    if version:
        finding["version"] = version
    return finding


@task(
    name="lambda-updates",
    help={"seconds": "how long Lambda takes to apply each later update (AWS: 1-5 s); 0: at once, as before"},
)
@reports_errors
def sandbox_lambda_updates(c: Context, seconds: float = 2.0) -> None:
    """Rehearse AWS's asynchronous Lambda updates: each code or configuration update stays InProgress SECONDS."""
    from sandbox import lifecycle

    if not 0 <= seconds <= 300:
        raise UsageError(
            f"--seconds {seconds:g}: Lambda's updates take from 0 to 300 seconds here",
            next_step="inv sandbox.lambda-updates --seconds 2 (0: at once)",
        )
    settings, _path = _sandbox_settings()
    _sandbox_call(lambda: lifecycle.slow_lambda_updates(settings, seconds))
    if seconds:
        print(f"🧪 the sandbox's Lambda now applies each update in {seconds:g}s (0: at once)", file=sys.stderr)
    else:
        print("🧪 the sandbox's Lambda applies each update at once again", file=sys.stderr)


def _print_status(settings: Any, as_json: bool = False) -> bool:
    import json

    from tabulate import tabulate

    from sandbox import lifecycle

    rows = lifecycle.status(settings)
    if as_json:
        print(json.dumps(rows, indent=2))
    else:
        table = [[r["part"], r["address"], "✅" if r["healthy"] else "❌", r.get("detail", "")] for r in rows]
        print(tabulate(table, headers=["part", "address", "healthy", "detail"]), file=sys.stderr)
    return all(bool(r["healthy"]) for r in rows)


sandbox = Collection("sandbox")
for _task in (
    sandbox_up,
    sandbox_down,
    sandbox_status,
    sandbox_logs,
    sandbox_reset,
    sandbox_throttle,
    sandbox_lambda_updates,
    sandbox_scan_findings,
):
    sandbox.add_task(_task)


def _clear_parse_errors() -> None:
    """What invoke says of a command line it cannot parse ("No idea what '--dryrun' is!", exit 1), as deploykit says
    bad input: what is wrong, the next step (the option or task meant, when one is close), exit 2 (1 is a deploy that
    failed, which a CI script must be able to tell from a typo). invoke parses the tasks' options after it has read
    this module, with no hook of its own for this: its two parse steps are wrapped here, once."""
    if getattr(Program.parse_tasks, "deploykit", False):
        return
    for name in ("parse_tasks", "parse_cleanup"):  # the tasks and their options; `inv --help TASK`; `inv --list`
        original = getattr(Program, name)

        def parse(self: Program, original: Callable[[Program], None] = original) -> None:
            try:
                original(self)
            except ParseError as exc:
                names = self.collection.task_names if self.collection else {}
                raise _refused(self.argv, *parse_error_text(exc, names, self.argv)) from None
            except ValueError as exc:  # a number option given a word: invoke's int() or float() of it
                said = number_error_text(exc, self.collection.task_names if self.collection else {}, self.argv)
                if said is None:  # another ValueError: not one to guess at
                    raise
                raise _refused(self.argv, *said) from None
            except AttributeError as exc:  # --list-format nosuch: invoke looks for a method list_nosuch
                if not str(exc).startswith("'Program' object has no attribute 'list_"):
                    raise
                given = str(exc).split("'list_", 1)[1].split("'", 1)[0]
                raise Exit(
                    f"❌ --list-format takes flat, nested or json, not {given!r}\n  → next: inv --list --list-format "
                    "nested",
                    code=2,
                ) from None

        parse.deploykit = True  # type: ignore[attr-defined]
        setattr(Program, name, parse)


def parse_error_text(
    exc: ParseError, task_names: Mapping[str, Sequence[str]], argv: Sequence[str] = ()
) -> tuple[str, str]:
    """(message, next step) for invoke's ``exc``; ``task_names``: each task's name and its aliases; ``argv``: the
    command line as typed (``inv`` first)."""
    context = exc.context
    task = context.name if context is not None else None
    said = str(exc)
    unknown = re.fullmatch(r"No idea what '(.*)' is!", said)
    echoed = _echo_meant_as_env(unknown.group(1) if unknown else "", argv, task_names)
    if echoed is not None:
        return echoed
    if unknown and unknown.group(1).startswith("-") and context is not None:
        word = unknown.group(1)
        options = [f for f in [*context.flags.keys(), *context.inverse_flags] if f.startswith("--")]
        close = difflib.get_close_matches(word.split("=")[0], options, n=1, cutoff=0.6)
        if not task:  # before any task: invoke's own options
            return f"inv has no option {word}", _maybe(
                close, "inv --help lists its own options, inv --help TASK a task's"
            )
        return f"inv {task} has no option {word}", _maybe(close, f"inv --help {task} lists its options")
    if unknown:
        word = unknown.group(1)
        group = sorted(name for name in task_names if name.startswith(f"{word}."))
        if group:  # a collection's name: `inv deploy`
            return f"{word!r} is a group of tasks, not one", f"name one: inv {', inv '.join(group)}"
        close = difflib.get_close_matches(word, sorted(_names(task_names)), n=1, cutoff=0.6)
        close = [f"inv {name}" for name in close]
        if (
            task
            and context is not None
            and "--component" in context.flags
            and re.fullmatch(r"app|(lambda|stack):[\w.-]+", word)
        ):
            return (  # `inv rollback app`: a component named as deploy.lambda names its function
                f"{word!r} after inv {task} is neither a task nor the value of one of its options",
                f"did you mean inv {task} --component {word}? (inv --help {task} lists its options)",
            )
        if task:  # a word after a task's options that is neither a task nor one of its options' values
            return (
                f"{word!r} after inv {task} is neither a task nor the value of one of its options",
                _maybe(close, f"inv --help {task} lists its options, each value after its option (--name VALUE)"),
            )
        return f"no task {word!r}", _maybe(close, "inv --list lists the tasks")
    needs = re.fullmatch(
        r"Flag <Argument: (\S+?)(?: \([^)]*\))?(?: \[\w+\])?> needed value and was not given one!", said
    )
    if needs and task:
        option = "--" + needs.group(1).replace("_", "-")
        return f"inv {task}: {option} needs a value", f"{option} VALUE (inv --help {task} says what it takes)"
    missing = re.fullmatch(r"'.+' did not receive required positional arguments: (.+)", said)
    if missing and task:
        wanted = " ".join(name.strip(" '").upper() for name in missing.group(1).split(","))
        return f"inv {task} needs its {wanted}", f"inv {task} {wanted} (inv --help {task} says what it takes)"
    where = f"inv {task}: " if task else ""
    return f"{where}{said}", (
        f"inv --help {task} says what it takes" if task else "inv --list lists the tasks; inv --help TASK their options"
    )


def number_error_text(
    exc: ValueError, task_names: Mapping[str, Sequence[str]], argv: Sequence[str]
) -> tuple[str, str] | None:
    """(message, next step) for a word given to a number option (``inv history --limit abc``): invoke raises the
    ValueError of its int() or float(), naming neither the option nor the task; both are read back from ``argv``.
    None for another ValueError."""
    found = re.fullmatch(
        r"(invalid literal for int\(\) with base 10|could not convert string to float): '(.*)'", str(exc)
    )
    if found is None:
        return None
    kind = "a whole number" if "int()" in found.group(1) else "a number"
    value = found.group(2)
    names = _names(task_names)
    task, option = "", ""
    for before, word in zip(["", *argv[1:]], argv[1:], strict=False):
        if word in names:
            task = word
        if word == value and before.startswith("-"):
            option = before
            break
        if word.startswith("-") and word.split("=", 1)[-1] == value and "=" in word:
            option = word.split("=", 1)[0]
            break
    where = f"inv {task}: " if task else ""
    what = f"{option} takes {kind}" if option else f"a number option takes {kind}"
    help_of = f"inv --help {task}" if task else "inv --help TASK"
    return f"{where}{what}, not {value!r}", f"{option or '--option'} N ({help_of} says what it takes)"


def _echo_meant_as_env(
    word: str, argv: Sequence[str], task_names: Mapping[str, Sequence[str]]
) -> tuple[str, str] | None:
    """`inv -e sandbox deploy.auto`: invoke's own ``-e`` (``--echo``) before any task, taken as ``--env``; the
    (message, next step) that says so; None when ``word`` does not follow ``-e`` there, or is close to a task's name."""
    words = list(argv[1:])
    names = _names(task_names)
    others = [name for name in names if not name.startswith(f"{word}.")]  # `-e sandbox`: the environment
    if difflib.get_close_matches(word, others, n=1, cutoff=0.6):  # `inv -e helth`: a task mistyped, echoed
        return None
    for at, flag in enumerate(words[:-1]):
        if words[at + 1] == word and flag in ("-e", "--echo"):
            break
        if flag in names:  # a task: -e from here on would be the task's own
            return None
    else:
        return None
    after = next((w for w in words[at + 2 :] if w in names), "TASK")
    return (
        f"no task {word!r}: -e before a task is invoke's own --echo, not --env",
        f"the environment after the task: inv {after} --env {word}",
    )


def _names(task_names: Mapping[str, Sequence[str]]) -> set[str]:
    """Every task's name and alias."""
    return {*task_names, *(alias for aliases in task_names.values() for alias in aliases)}


def _refused(argv: Sequence[str], message: str, next_step: str) -> Exit:
    """invoke's Exit (2) for a command line it could not parse; with ``--json`` on it, the refusal is printed on
    stdout too, as a command refused before it has a plan prints it: a CI script's jq gets the reason."""
    if any(arg == "--json" or (arg[:1] == "-" and arg[1:2] != "-" and "j" in arg[1:]) for arg in argv):  # -j, -dj
        print(json.dumps({"ok": False, "error": error_json(UsageError(message, next_step=next_step))}))
    return Exit(f"❌ {message}\n  → next: {next_step}", code=2)


def _maybe(close: list[str], then: str) -> str:
    return f"did you mean {close[0]}? ({then})" if close else then


def _say_lost_output() -> None:
    """A command that ran to its end but could not write its output (``--json > file`` on a full disk, stdout
    closed with an error) ends with exit 1 saying so, rather than 0 with the output missing (invoke's run has no hook
    of its own after a command: its last two steps, the tasks and ``inv --list``/``--help``, are wrapped here, once).
    A reader that went away (a closed pipe) is no failure: ``inv history | head -3`` exits as the command does."""
    if getattr(Program.execute, "deploykit_output", False):
        return
    for name in ("execute", "parse_cleanup"):
        original = getattr(Program, name)

        def run(self: Program, original: Callable[[Program], None] = original) -> None:
            try:
                original(self)
            except Exit as exc:  # inv --list, --help: printed, then invoke's Exit (code 0)
                if exc.code == 0:
                    _lost_output()
                raise
            _lost_output()

        run.deploykit_output = True  # type: ignore[attr-defined]
        setattr(Program, name, run)


def _lost_output() -> None:
    lost = output_failures()
    if lost:
        raise Exit(
            f"❌ the command ran to its end, but its output was lost ({'; '.join(lost)})\n  → next: make room where it "
            "goes (or send it elsewhere) and run the command again (a deploy that ran is in inv history)",
            code=1,
        )


_clear_parse_errors()
_say_lost_output()

ns = Collection(
    build,
    push,
    register_taskdef,
    roll_service,
    wait_healthy,
    base_image,
    deploy,
    destroy,
    rollback,
    show_logs,
    run_command,
    invoke_function,
    restart_app,
    pause_app,
    resume_app,
    scan_image,
    tasks_list,
    show_endpoints,
    lookup_values,
    show_diff,
    show_envs,
    smoke_checks,
    health_report,
    alarms,
    history_list,
    deploy_report,
    perf_report,
    unlock,
    freeze_env,
    unfreeze_env,
    images,
    lambdas,
    taskdefs,
    sandbox,
)
