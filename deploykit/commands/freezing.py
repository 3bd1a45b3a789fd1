"""inv freeze and inv unfreeze."""

from __future__ import annotations

from datetime import datetime

from deploykit import (
    freeze,
    history,
)
from deploykit.clock import moment_of
from deploykit.commands.core import Runtime, aws_errors, check_account, line_on, load_env, load_plugins
from deploykit.config import Config, EnvConfig
from deploykit.errors import UsageError
from deploykit.plugins import observe


def _moment(text: str, now: datetime) -> datetime:
    """``--until`` from ``now``: a duration from now (``90m``, ``12h``, ``3d``) or a time (``2026-12-02T08:00Z``, UTC
    when it names no zone); UsageError for anything else."""
    moment = moment_of(text, now, ahead=True)
    if moment is None:
        raise UsageError(
            f"--until {text!r} is neither a duration nor a time",
            next_step="pass a duration from now (90m, 12h, 3d) or a time (2026-12-02T08:00Z)",
        )
    return moment


def _until(text: str, now: datetime) -> datetime:
    """``--until`` (:func:`_moment`) from ``now``; UsageError for a time already past then as well."""
    moment = _moment(text, now)
    if moment <= now:
        raise UsageError(f"--until {text} is past", next_step="pass a time to come, or a duration from now (12h, 3d)")
    return moment


def freeze_env(
    *, env: str | None = None, reason: str = "", until: str | None = None, runtime: Runtime | None = None
) -> freeze.Freeze:
    """Close the environment to deploys (deploykit.freeze): who, why, until when (``until``; none: until
    :func:`unfreeze_env`). A freeze already there is replaced, and said. Its ``since`` and ``until`` are counted from
    S3's time (the Date of the answer to the read of the freeze it replaces) when S3 gives it, else from this
    machine's: machines whose clocks disagree freeze for as long."""
    runtime = runtime or Runtime()
    config, environment = load_env(runtime, env)
    if not reason.strip():
        raise UsageError(
            "a freeze needs a reason: the people it stops read it",
            next_step=f'inv freeze --env {environment.name} --reason "..." [--until 3d]',
        )
    if until:
        _moment(until, runtime.clock.now())  # a typo is refused before any call
    aws = runtime.aws_factory(environment)
    with aws_errors(environment):
        check_account(aws, environment)
        before, served = freeze.read_served(aws, environment)
        now = served or runtime.clock.now()
        made = freeze.Freeze(history.actor(), reason.strip(), now, _until(until, now) if until else None)
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
    observe(plugins, "deploykit_freeze_changed", line_on(runtime), env=env.name, freeze=made and made.to_json())


def unfreeze_env(*, env: str | None = None, runtime: Runtime | None = None) -> freeze.Freeze | None:
    """End the environment's freeze: what it was; None when there was none."""
    runtime = runtime or Runtime()
    config, environment = load_env(runtime, env)
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
        check_account(aws, environment)
        freeze.delete(aws, environment)
    now = runtime.clock.now()
    over = "" if found.holds(now) else " (it was over already)"
    window = freeze.in_force(None, environment, now)  # deploy.toml's freeze_windows: not ended by inv unfreeze
    if window is not None:
        runtime.stderr.write(
            f"🌤  {environment.name}'s inv freeze ended{over}: it was frozen {found.said()}\n❄️  still "
            f"{window.describe(environment.name)} (deploy.toml's freeze_windows: not ended by inv unfreeze)\n"
        )
    else:
        runtime.stderr.write(f"🌤  {environment.name} thawed{over}: it was frozen {found.said()}\n")
    if not over:  # the team hears what holds now: the window's freeze, or none (deploys go again)
        _tell_freeze(runtime, config, environment, window)
    return found
