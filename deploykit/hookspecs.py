"""The hooks deploykit calls on its plugins (pluggy), after pytest's ``hookspec.py`` and tox 4's ``plugin/spec.py``.

A plugin is a module or object with functions named like these specifications, marked with
:data:`hookimpl`. Built-in check plugins and a team's own are registered the same way: through the
entry-point group ``deploykit`` (see :func:`deploykit.plugins.get_plugin_manager`). Every hook is prefixed
``deploykit_``; a misspelt one fails at load time with the plugin's name.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from deploykit.checks import Check
    from deploykit.config import Config, EnvConfig

PROJECT = "deploykit"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def deploykit_configure(config: Config) -> None:
    """Called once after deploy.toml is loaded, before anything else; a plugin may read its settings."""


@hookspec
def deploykit_register_checks(env: EnvConfig) -> list[Check]:
    """Return the checks this plugin adds for ``env`` (``inv smoke``, and the last step of every deploy).

    Each :class:`~deploykit.checks.Check` has a unique name, a timeout, the names of the checks it needs to
    have passed first, and a function that gets a :class:`~deploykit.checks.CheckContext` and returns a
    :class:`~deploykit.checks.CheckResult`. It must clean up what it creates, even when it fails.
    """
    raise NotImplementedError  # a specification only


@hookspec
def deploykit_review_stack_changes(env: EnvConfig, stack: str, changes: list[dict[str, Any]]) -> list[str]:
    """A change set of ``stack`` is made and not executed yet: return why this plugin refuses it (an empty list: it
    does not). ``changes`` are its resource changes as ``inv diff --json`` lists them (logical_id, type, action,
    replacement, access, kept_by, deleted_with, drift, details: each changed value before and after, and its drift in
    a drift-aware change set: deploy.stack --revert-drift). A refusal deletes the change set: nothing is deployed
    (exit 2); ``inv diff`` shows it. A plugin that raises refuses too (a rule that
    cannot be checked)."""
    raise NotImplementedError  # a specification only


@hookspec
def deploykit_deployment_started(env: str, plan: dict[str, Any]) -> None:
    """A deployment starts; ``plan`` is the plan as ``--dry-run --json`` prints it (for notifications)."""


@hookspec
def deploykit_step_finished(env: str, step: str, status: str, seconds: float, detail: str, refused: bool) -> None:
    """A step ended: ``status`` is done, skipped or failed (for progress in chat, metrics); ``refused``: it failed as a
    guard or bad input stopped it (exit 2), changing nothing, as the run's table shows it (``🛑 refused``)."""


@hookspec
def deploykit_deployment_finished(env: str, report: dict[str, Any]) -> None:
    """A deployment succeeded; ``report`` is the run as ``--json`` prints it."""


@hookspec
def deploykit_deployment_failed(env: str, report: dict[str, Any], error: str) -> None:
    """A deployment failed; ``error`` says what failed and the next step (for alerts)."""


@hookspec
def deploykit_deployment_not_run(env: str, report: dict[str, Any]) -> None:
    """A deploy command ended before any step of a plan ran: ``report["outcome"]`` is ``nothing`` (``deploy.auto``
    found nothing to deploy: the environment runs what the checkout would deploy), ``refused`` (exit 2: a freeze, the
    lock another deploy holds, a guard such as taking back newer commits), ``failed`` (exit 1: a read of what is
    live failed) or ``interrupted`` (exit 130: Ctrl-C, or SIGTERM from a cancelled CI job, while it read what is live
    or waited for the lock). ``report``: env, command, outcome, head (the checkout's commit, "" when unknown),
    message and next_step (why, and what to do; "" for nothing), held (changed components held back by
    --only/--skip). A
    deployment whose plan ran is told through the hooks above instead; a dry run is told nothing. The built-in
    ``summary`` plugin writes it on the CI job's page, ``notify`` puts a refusal in the chat when asked."""


@hookspec
def deploykit_smoke_finished(env: str, report: dict[str, Any]) -> None:
    """A smoke run of its own (``inv smoke``, ``nox -s smoke``) ended, passed or not; ``report`` is the run as its
    ``--json`` prints it (env, ok, checks: name, status, seconds, detail). A deployment's smoke step is told through
    the deployment's hooks instead."""


@hookspec
def deploykit_freeze_changed(env: str, freeze: dict[str, Any] | None) -> None:
    """``inv freeze`` closed the environment to deploys (``freeze``: owner, reason, since, until, as ``inv envs
    --json`` shows it), or ``inv unfreeze`` ended that (None): for the team's chat."""
