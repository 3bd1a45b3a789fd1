"""One-off ECS tasks: a command run once in a revision of the service's task definition, beside the service.

The task runs where and as the service runs its own (its subnets and security groups, its launch type or capacity
providers, its platform version; the revision's task role, environment, secrets and log configuration), with the
command instead of the image's. The release step (deploykit.release) runs the release command so, ``inv run`` a
person's command. Waiting is polling with the command's clock, a deadline (the task is then stopped) and the
caller's look at each poll (a log tail, an interrupt).
"""

from __future__ import annotations

import shlex
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from deploykit import ecs
from deploykit.aws import answered, is_throttling
from deploykit.clock import Clock, shielded
from deploykit.errors import StepFailed

SHOWN = 60  # characters of a command shown in a plan and a message


def shown(command: tuple[str, ...] | list[str]) -> str:
    """``command`` as a shell would read it, cut to a line's part."""
    text = shlex.join(command)
    return text if len(text) <= SHOWN else text[: SHOWN - 1] + "…"


def run_task_arguments(
    service: dict[str, Any],
    cluster: str,
    revision: str,
    container: str,
    command: tuple[str, ...] | list[str],
    started_by: str,
) -> dict[str, Any]:
    """RunTask's arguments: ``revision`` once, where and as the service runs its tasks (its network, its launch type or
    capacity providers, its platform version), ``command`` instead of the image's."""
    arguments: dict[str, Any] = {
        "cluster": cluster,
        "taskDefinition": revision,
        "count": 1,
        "startedBy": started_by,
        "overrides": {"containerOverrides": [{"name": container, "command": list(command)}]},
    }
    if service.get("networkConfiguration"):
        arguments["networkConfiguration"] = service["networkConfiguration"]
    if service.get("capacityProviderStrategy"):
        arguments["capacityProviderStrategy"] = service["capacityProviderStrategy"]
    elif service.get("launchType"):
        arguments["launchType"] = service["launchType"]
    if service.get("platformVersion") and service.get("platformVersion") != "LATEST":
        arguments["platformVersion"] = service["platformVersion"]
    return arguments


def start(client: Any, arguments: dict[str, Any], what: str) -> str:
    """Run the task; its ARN. ECS's refusal to place it (``failures``) is a StepFailed naming ``what`` it was for."""
    answer = client.run_task(**arguments)
    if answer.get("failures") or not answer.get("tasks"):
        failure = (answer.get("failures") or [{}])[0]
        raise StepFailed(
            f"ECS could not start {what}: {failure.get('reason', 'no task in its answer')} "
            f"{failure.get('detail') or ''}".rstrip(),
            next_step=f"nothing was changed; see why in the ECS console (cluster {arguments['cluster']}), then rerun",
        )
    return str(answer["tasks"][0]["taskArn"])


@dataclass(frozen=True)
class Ended:
    """A one-off task as it stopped (``task``: its DescribeTasks answer), or was stopped past its deadline."""

    task: dict[str, Any]
    container: str
    deadline: float | None = None  # the deadline it was stopped at (seconds); None: it stopped on its own
    unstopped: str = ""  # past its deadline, why StopTask failed ("": it was sent): the task may run on

    @property
    def exit_code(self) -> int | None:
        """The exit code of the container (None: it never ran, or ECS did not say)."""
        for each in self.task.get("containers") or []:
            if each.get("name") == self.container and each.get("exitCode") is not None:
                return int(each["exitCode"])
        return None

    @property
    def stopped_by(self) -> str | None:
        """Who or what stopped it from outside (a person's StopTask, Fargate Spot, a retirement:
        :func:`deploykit.ecs.stopped_from_outside`); None when it ended on its own."""
        return ecs.stopped_from_outside(self.task)

    @property
    def ok(self) -> bool:
        """It ran to its end and exited 0: not past its deadline, nor stopped from outside (a command that exits 0 on
        SIGTERM, half done)."""
        return self.deadline is None and self.exit_code == 0 and self.stopped_by is None

    @property
    def seconds(self) -> float:
        """How long the container ran (0 when it never started, or the answer lacks the times)."""
        started, stopped = self.task.get("startedAt"), self.task.get("stoppedAt") or self.task.get("executionStoppedAt")
        try:
            return max(0.0, float((stopped - started).total_seconds()))  # type: ignore[operator]
        except TypeError:
            return 0.0

    def what(self) -> str:
        """How it ended, for a message: ``exited with code 3 after 0.3s``."""
        if self.deadline is not None:
            if self.unstopped:
                return f"did not end within {self.deadline:.0f}s, and stopping it failed ({self.unstopped})"
            return f"did not end within {self.deadline:.0f}s and was stopped"
        if self.stopped_by is not None:
            code = f" (it exited with code {self.exit_code})" if self.exit_code is not None else ""
            return f"was stopped from outside, by {self.stopped_by}, after {self.seconds:.1f}s{code}"
        if self.exit_code is None:
            return f"did not run: {self.task.get('stoppedReason') or self.task.get('stopCode') or 'stopped'}"
        return f"exited with code {self.exit_code} after {self.seconds:.1f}s"


def wait(
    client: Any,
    clock: Clock,
    cluster: str,
    arn: str,
    container: str,
    *,
    timeout: float,
    poll: float,
    state: Callable[[str, float], None] = lambda _state, _elapsed: None,
    each: Callable[[], object] = lambda: None,
) -> Ended:
    """Poll the task until it stops. ``state(lastStatus, elapsed)`` hears each new state, ``each()`` is called after
    every poll (it may raise to end the wait: the caller then stops the task). Past ``timeout``, the task is
    stopped (:func:`stop`) and the answer says so. Throttled polls back off."""
    started = clock.monotonic()
    interval, last = poll, ""
    while True:
        elapsed = clock.monotonic() - started
        try:
            tasks = client.describe_tasks(cluster=cluster, tasks=[arn]).get("tasks") or []
        except ClientError as exc:
            if not is_throttling(exc):
                raise
            interval, tasks = min(interval * 2, poll * 8), []
        else:
            interval = poll
        if tasks:
            task = dict(tasks[0])
            status = str(task.get("lastStatus", "?"))
            if status != last:
                state(status, elapsed)
                last = status
            if status == "STOPPED":
                return Ended(task, container)
        each()
        if elapsed >= timeout:
            failed = stop(client, cluster, arn, f"deploykit: its deadline of {timeout:.0f}s passed")
            return Ended(dict(tasks[0]) if tasks else {}, container, deadline=timeout, unstopped=failed)
        clock.sleep(interval)


def stop(client: Any, cluster: str, arn: str, reason: str) -> str:
    """StopTask: "" when it was sent, else why it failed (denied, throttled past the retries, no answer) with the
    command that stops the task by hand: the task may run on, and the caller says so. A second Ctrl-C while it is
    sent does not cut it short."""
    failed = ""
    try:
        with shielded():
            try:
                client.stop_task(cluster=cluster, task=arn, reason=reason[:255])
            except (ClientError, BotoCoreError) as exc:
                failed = f"{answered(exc)}; it may still run: aws ecs stop-task --cluster {cluster} --task {arn}"
    except KeyboardInterrupt:  # a second one, held back while StopTask went: the caller is stopping already, and
        pass  # says whether the task was stopped
    return failed
