"""Errors that end a command, each with the exit code it maps to and the next step to take.

Exit codes follow the house convention: 0 success or nothing to do, 1 a failed deploy or check,
2 bad input or configuration (nothing was changed).
"""

from __future__ import annotations

from collections.abc import Callable


class DeployKitError(Exception):
    """Base of every error deploykit reports to a person.

    ``message`` says what failed and why; ``next_step`` says what to run or do next.
    """

    exit_code = 1
    # the plugins heard of it as a deployment's failure (deploykit_deployment_failed); else, from a deploy command,
    # as a deployment that did not run (deploykit_deployment_not_run): commands.heard_when_not_run
    heard = False
    # a refusal the command is started again after (a lock it waits for, a superseded plan): how to tell the plugins
    # of the last one, should the command give up (commands.until_unlocked), the error given
    tell_later: Callable[[DeployKitError], None] | None = None

    def __init__(self, message: str, next_step: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.next_step = next_step

    def __str__(self) -> str:
        if self.next_step:
            return f"{self.message}\n  → next: {self.next_step}"
        return self.message


def said(exc: BaseException) -> str:
    """What an error says: a DeployKitError's message (its next step left out), another exception as text."""
    return exc.message if isinstance(exc, DeployKitError) else str(exc)


class UsageError(DeployKitError):
    """Bad input: a malformed deploy.toml, an unknown environment, a dirty tree, a missing image...

    Raised before anything is changed.
    """

    exit_code = 2


class ConfigError(UsageError):
    """deploy.toml is malformed, incomplete or names something unknown."""


class EnvironmentNotReady(UsageError):
    """A prerequisite on this machine is missing: the Docker engine, a base image, a registry."""


class ServiceBeingDeleted(UsageError):
    """ECS is deleting the service, or has (DRAINING, INACTIVE): nothing can be rolled out on it, by a rerun or a
    rollback, until the stack that defines it makes it again (:func:`deploykit.ecs.being_deleted`)."""


class NoCluster(UsageError):
    """The ECS cluster deploy.toml names does not exist: the Fargate stack that makes it is not deployed, or
    ``cluster`` names another (:func:`deploykit.ecs.no_cluster`)."""


class Superseded(UsageError):
    """What is live changed between reading it and taking the lock (another deploy finished meanwhile): the plan
    made from it is stale. Raised before anything live was changed; the command may start again."""


class StepFailed(DeployKitError):
    """A step of a running plan failed; what ran before it stays as it is."""

    exit_code = 1


class RolledBackByEcs(StepFailed):
    """The release failed and ECS's deployment circuit breaker already put the previous deployment back."""


class Interrupted(DeployKitError):
    """Ctrl-C or SIGTERM stopped a running plan between two API calls; what ran before it stays as it is."""

    exit_code = 130
