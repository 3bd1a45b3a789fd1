"""``inv pause`` and ``inv resume``: an environment's app service at no task while nobody works on it.

What it is for: a development environment (the team's ``dev``, a developer's own ``dev-<name>``) runs its Fargate
tasks day and night, billed by the second, and is used eight hours a day. ``inv pause`` scales the service to 0
tasks and keeps the count it ran; ``inv resume`` scales it back to that count, waits until the tasks serve, and
smokes. Everything else stays: the load balancer (it answers 503 meanwhile), the API and its Lambda functions (billed
by request), the data, the images, the history. A CI schedule can pause every evening and resume every morning.

A deploy to a paused environment wakes it first (:class:`WakeService`, the plan's first step ``wake``): a deploy is
someone working on it, and smoke needs the app. When the plan rolls the app out itself (its ``wait-healthy`` waits
for the count), the wake only sets the count and the rollout waits; otherwise (a Lambda, a stack) the wake waits
until the tasks serve, so that smoke finds them. The environment stays awake whatever the deploy then does.

Where it is kept: the S3 object ``deploykit/pause/<env>.json`` in the artifacts bucket (who paused it, why, since
when, how many tasks it ran), beside the freeze and the lock; the service's desired count of 0 is the other half.
The environment is paused while both hold: a service scaled up by other means since (a Fargate stack update sets
its template's count, as CloudFormation does whenever it updates the service; a person) is not paused any more,
whatever the object says: the next pause replaces the object, ``inv resume`` removes it. A protected environment is
never paused. A service Application Auto Scaling scales gets the range 0-0 while paused (its own range kept in the
object, set back by the wake), or the scaling would start its tasks again.

Both hold the environment's lock and are recorded in the history (``pause app``, ``resume app``), but deploy
nothing: the live record, rollbacks' targets and the deploy report's figures are untouched; a freeze refuses
neither (they bring nothing new).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import Any, ClassVar

from botocore.exceptions import BotoCoreError, ClientError

from deploykit import ecs, stored
from deploykit.app_chain import WaitHealthy, await_rollout, events_command
from deploykit.aws import DENIED, AwsFactory, at_once
from deploykit.config import EnvConfig
from deploykit.errors import DeployKitError, RolledBackByEcs, ServiceBeingDeleted, StepFailed, UsageError
from deploykit.history import find_artifacts_bucket
from deploykit.plan import Context, Outcome, Plan, Step, leaves
from deploykit.smoke import Smoke
from deploykit.stacks import error_code

PREFIX = "deploykit/pause/"
SCALED = "ecs:service:DesiredCount"  # the dimension Application Auto Scaling scales a service on
PAUSE_TITLE = "pause app"
RESUME_TITLE = "resume app"


@dataclass(frozen=True)
class Pause:
    """What a pause object says: the count the service ran, who paused it, why, since when; and the service's
    Application Auto Scaling range (min, max) when it scales by it (None: it does not)."""

    count: int
    owner: str
    reason: str
    since: datetime
    scaling: tuple[int, int] | None = None

    def to_json(self) -> dict[str, Any]:
        scaling = {"min": self.scaling[0], "max": self.scaling[1]} if self.scaling else None
        return {
            "count": self.count,
            "owner": self.owner,
            "reason": self.reason,
            "since": self.since.isoformat(timespec="seconds"),
            "scaling": scaling,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Pause:
        since = stored.moment(data.get("since")) or datetime.fromtimestamp(0).astimezone()
        try:
            count = max(1, int(data.get("count") or 1))
        except (TypeError, ValueError):
            count = 1  # a count that cannot be read: one task, which serves
        return cls(count, str(data.get("owner") or "?"), str(data.get("reason") or ""), since, _range(data))

    def describe(self, env: str) -> str:
        why = f": {self.reason}" if self.reason else ""
        return f"{env} is paused by {self.owner} since {stored.shown(self.since)}{why}"

    @property
    def tasks(self) -> str:
        return tasks(self.count)


def tasks(count: int) -> str:
    """``1 task``, ``2 tasks``: a count of a service's tasks, as the pause says them."""
    return f"{count} task{'s' if count != 1 else ''}"


def _range(data: Mapping[str, Any]) -> tuple[int, int] | None:
    """The scaling range a pause object kept (None: none, or one that cannot be read)."""
    scaling = data.get("scaling")
    if not isinstance(scaling, Mapping):
        return None
    try:
        low, high = int(scaling["min"]), int(scaling["max"])
    except (KeyError, TypeError, ValueError):
        return None
    return (low, high) if 0 <= low <= high else None


def key(env: str) -> str:
    return f"{PREFIX}{env}.json"


def read_object(aws: AwsFactory, env: EnvConfig, bucket: str | None = None) -> Pause | None:
    """The pause object as stored (its service scaled up since or not); None when there is none."""
    data = stored.read_json(aws, env, key(env.name), bucket)
    return None if data is None else Pause.from_json(data)


def write_object(aws: AwsFactory, env: EnvConfig, pause: Pause) -> None:
    stored.write_json(aws, env, key(env.name), pause.to_json(), nothing_to="pause")


def delete_object(aws: AwsFactory, env: EnvConfig) -> None:
    stored.delete(aws, env, key(env.name), nothing_to="pause")


def desired_count(service: Mapping[str, Any] | None) -> int | None:
    """The service's desired count; None when there is no service (not deployed yet)."""
    return None if service is None else int(service.get("desiredCount") or 0)


def in_force(kept: Pause | None, desired: int | None) -> Pause | None:
    """The pause that holds: ``kept`` (the object) while the service wants no task; None otherwise."""
    return kept if kept is not None and desired == 0 else None


def _service_or_none(aws: AwsFactory, env: EnvConfig) -> dict[str, Any] | None:
    try:
        return ecs.describe_service(aws.client("ecs"), env.cluster, env.service, env)
    except UsageError:  # no cluster or service yet, or one ECS deleted: nothing runs, nothing is paused
        return None


def refuse_deleted(aws: AwsFactory, env: EnvConfig) -> None:
    """For a command that found no service (:func:`read_state`): :func:`deploykit.ecs.describe_service`'s error when
    the service is one ECS deleted (INACTIVE: ``inv destroy``, its stack's deletion or by hand), which is said as
    deleted, not as never deployed; nothing otherwise."""
    try:
        ecs.describe_service(aws.client("ecs"), env.cluster, env.service, env)
    except ServiceBeingDeleted:
        raise
    except UsageError:  # no cluster or service of its name: the caller says so
        return


def read_state(aws: AwsFactory, env: EnvConfig, bucket: str | None = None) -> tuple[Pause | None, int | None]:
    """The pause object (None: none) and the service's desired count (None: no service), read at once; ``bucket``:
    the artifacts bucket, when known."""
    bucket = bucket or find_artifacts_bucket(aws, env)
    if not bucket:
        return None, None
    reads: dict[str, Callable[[], Any]] = {
        "object": partial(read_object, aws, env, bucket),
        "service": partial(_service_or_none, aws, env),
    }
    found = at_once(reads)
    return found["object"], desired_count(found["service"])


def read(aws: AwsFactory, env: EnvConfig, bucket: str | None = None) -> Pause | None:
    """The environment's pause while it holds (the object, and the service at 0 tasks); None when it is not paused
    (or not deployed)."""
    return in_force(*read_state(aws, env, bucket))


def _scaled(cluster: str, service: str) -> dict[str, str]:
    return {"ServiceNamespace": "ecs", "ResourceId": f"service/{cluster}/{service}", "ScalableDimension": SCALED}


def read_scaling(client: Any, cluster: str, service: str) -> tuple[tuple[int, int] | None, str]:
    """The service's Application Auto Scaling range (min, max; None: it does not scale by it) and, when that cannot
    be read (no right to), why: it is then taken as not scaling, and said."""
    where = _scaled(cluster, service)
    try:
        answer = client.describe_scalable_targets(
            ServiceNamespace=where["ServiceNamespace"],
            ResourceIds=[where["ResourceId"]],
            ScalableDimension=where["ScalableDimension"],
        )
    except ClientError as exc:
        if error_code(exc) not in DENIED:
            raise
        return None, (
            f"Application Auto Scaling could not be read ({error_code(exc)}): if {service} scales by it, it may start "
            "tasks again (give application-autoscaling:DescribeScalableTargets and RegisterScalableTarget)"
        )
    targets = answer.get("ScalableTargets") or []
    if not targets:
        return None, ""
    return (int(targets[0]["MinCapacity"]), int(targets[0]["MaxCapacity"])), ""


def scaling_back(client: Any, cluster: str, service: str, scaling: tuple[int, int] | None) -> str:
    """After a pause that no longer holds (the service scaled up by other means while paused): the Application Auto
    Scaling range the pause set to 0-0 set back to ``scaling`` (the range the pause kept), when it is 0-0 still; what
    was done, for the detail ("" for nothing). The pause object deleted without it, the range was lost for good."""
    if scaling is None or scaling == (0, 0):
        return ""
    live, _unread = read_scaling(client, cluster, service)
    if live != (0, 0):
        return ""
    set_scaling(client, cluster, service, *scaling)
    return f"; Application Auto Scaling: {service} 0-0 → {scaling[0]}-{scaling[1]} tasks again, as before its pause"


def set_scaling(client: Any, cluster: str, service: str, low: int, high: int) -> None:
    """The service's Application Auto Scaling range set to ``low``-``high`` (its policies kept)."""
    client.register_scalable_target(**_scaled(cluster, service), MinCapacity=low, MaxCapacity=high)


@dataclass(frozen=True)
class PauseService(Step):
    """The service scaled to 0 tasks, the count it ran kept in the pause object first; waited for until no task
    runs (the ALB drains them first). A service Application Auto Scaling scales gets the range 0-0 too (its own
    range kept in the object), or the scaling would start its tasks again.

    Why the object is written first, and deleted again when the scale-in is refused or fails, rather than written
    after it: it is the only record of the count (and the scaling range) ``inv resume`` brings back. Written after,
    a process that dies between the two (killed, its machine gone, Ctrl-C) would leave the service at 0 tasks with
    nothing to say how many it ran: ``inv resume`` then refuses (its count is not known), and a range narrowed to 0-0
    is lost. Written first, the same death leaves an object beside a service still running its tasks, which nothing
    takes for paused (:func:`in_force`: the object counts only while the service wants no task), and which the next
    pause replaces. When AWS answers the scale-in with an error (UpdateService or RegisterScalableTarget refused: the
    service deleted meanwhile, throttled, no right to), it changed nothing: the range is set back if it was
    narrowed, and the object deleted, so that a refused or failed pause leaves nothing behind (:meth:`_take_back`).
    When no answer came (the network, Ctrl-C), the scale-in may have gone through: the object stays, as when the
    process dies."""

    name: ClassVar[str] = "pause"
    cluster: str
    service: str
    owner: str
    reason: str
    timeout: float
    poll: float

    def describe(self) -> str:
        return (
            f"scale {self.service} to 0 tasks, the count it runs kept for inv resume; wait until they stopped "
            f"(deadline {self.timeout:.0f}s, poll {self.poll:g}s)"
        )

    def interrupted(self) -> str:
        return f"only the waiting stopped: ECS goes on stopping the tasks of {self.service}"

    def run(self, ctx: Context) -> Outcome:
        client = ctx.aws.client("ecs")
        service = ecs.describe_service(client, self.cluster, self.service, ctx.env)
        desired = desired_count(service) or 0
        if desired == 0:
            kept = read_object(ctx.aws, ctx.env)
            if kept is not None:
                return Outcome.skipped(f"paused already: {kept.describe(ctx.env.name)}")
            return Outcome.skipped(f"{self.service} runs no task already (desired count 0): nothing to pause")
        busy = ecs.rolling(service)
        if busy:
            raise UsageError(
                f"refusing to pause {self.service} while it rolls out: {busy}",
                next_step=f"wait until it is done (inv wait-healthy --env {ctx.env.name}), then inv pause again",
            )
        scaling_client = ctx.aws.client("application-autoscaling")
        scaling, unread = read_scaling(scaling_client, self.cluster, self.service)
        if scaling == (0, 0):  # a pause's range left by a scale-up by other means: the range it kept is the one
            earlier = read_object(ctx.aws, ctx.env)
            scaling = earlier.scaling if earlier is not None and earlier.scaling else scaling
        made = Pause(desired, self.owner, self.reason, ctx.clock.now(), scaling)
        write_object(ctx.aws, ctx.env, made)  # first: what to come back to is never lost (see the docstring)
        narrowed: tuple[int, int] | None = None  # the range set to 0-0, to set back if the scale-in is refused
        try:
            if scaling is not None:
                set_scaling(scaling_client, self.cluster, self.service, 0, 0)
                narrowed = scaling
                ctx.reporter.line(f"Application Auto Scaling: {self.service} {scaling[0]}-{scaling[1]} tasks → 0-0")
            ecs.update_service(client, self.cluster, self.service, ctx.env, desiredCount=0)  # a refusal said as such
        except (ClientError, DeployKitError):  # AWS answered no: the service runs on, nothing may say it is paused
            self._take_back(ctx, scaling_client, narrowed)
            raise
        ctx.reporter.line(f"{self.service}: desired count {desired} → 0")
        left = self._wait_stopped(ctx, client)
        comes_back = f"inv resume --env {ctx.env.name} (or any deploy) starts {made.tasks} again"
        if unread:
            comes_back += f"; {unread}"
        if left:
            return Outcome.done(
                f"{self.service} wants 0 tasks; {left} still stopping after {self.timeout:.0f}s (ECS goes on); "
                + comes_back,
                count=str(desired),
            )
        return Outcome.done(f"{made.tasks} of {self.service} stopped; {comes_back}", count=str(desired))

    def _take_back(self, ctx: Context, scaling_client: Any, narrowed: tuple[int, int] | None) -> None:
        """After a scale-in AWS refused: the scaling range set back when it was ``narrowed`` to 0-0, then the pause
        object deleted. A range that cannot be set back keeps the object (it holds the range, which ``inv resume``
        sets back once the scaling has scaled the service in to 0-0), and says how to set it by hand; what fails here
        is said and raises nothing: the scale-in's own error is the one to raise."""
        if narrowed is not None:
            low, high = narrowed
            try:
                set_scaling(scaling_client, self.cluster, self.service, low, high)
            except (BotoCoreError, ClientError) as exc:
                ctx.reporter.line(
                    f"⚠️  Application Auto Scaling: {self.service} could not be set back to {low}-{high} tasks ({exc}): "
                    f"it stays 0-0 and may scale the service in; the pause object is kept, for inv resume --env "
                    f"{ctx.env.name} to set it back then; or set it now: aws application-autoscaling "
                    f"register-scalable-target --service-namespace ecs --resource-id service/{self.cluster}/"
                    f"{self.service} --scalable-dimension {SCALED} --min-capacity {low} --max-capacity {high}"
                )
                return
            ctx.reporter.line(f"Application Auto Scaling: {self.service} 0-0 → {low}-{high} tasks again")
        try:
            delete_object(ctx.aws, ctx.env)
        except (BotoCoreError, ClientError, DeployKitError) as exc:
            ctx.reporter.line(
                f"⚠️  the pause object {key(ctx.env.name)} could not be deleted ({exc}); it says nothing while "
                f"{self.service} runs tasks, and the next pause replaces it"
            )

    def _wait_stopped(self, ctx: Context, client: Any) -> int:
        """Until the service runs no task (running and pending); the tasks left at the deadline."""
        start = ctx.clock.monotonic()
        said = ""
        with ctx.reporter.activity(f"stopping the tasks of {self.service}"):
            while True:
                service = ecs.describe_service(client, self.cluster, self.service, ctx.env)
                left = int(service.get("runningCount") or 0) + int(service.get("pendingCount") or 0)
                elapsed = ctx.clock.monotonic() - start
                state = f"{left} task(s) left" if left else "no task runs"
                if state != said:
                    ctx.reporter.line(f"[{elapsed:6.1f}s] {state}")
                    said = state
                ctx.reporter.status(state)
                if left == 0 or elapsed + self.poll > self.timeout:
                    return left
                ctx.clock.sleep(self.poll)


@dataclass(frozen=True)
class WakeService(Step):
    """A paused service scaled back to the count it ran, the pause object deleted; with ``wait``, waited for until
    its tasks serve (PRIMARY, COMPLETED, running the count, targets healthy), else left to the rollout that
    follows."""

    name: ClassVar[str] = "wake"
    cluster: str
    service: str
    container: str
    count: int
    paused: str  # who paused it, since when (Pause.describe)
    wait: bool
    scaling: tuple[int, int] | None  # its Application Auto Scaling range, set back first (None: it has none)
    timeout: float
    poll: float

    def describe(self) -> str:
        then = "wait until they serve" if self.wait else "the rollout that follows waits for them"
        return f"scale {self.service} back to {tasks(self.count)} ({self.paused}); {then}"

    def interrupted(self) -> str:
        return f"only the waiting stopped: ECS goes on starting the tasks of {self.service}"

    def run(self, ctx: Context) -> Outcome:
        client = ctx.aws.client("ecs")
        service = ecs.describe_service(client, self.cluster, self.service, ctx.env)
        desired = desired_count(service) or 0
        if desired:  # scaled up by other means since it was planned: not paused any more
            scaling_client = ctx.aws.client("application-autoscaling")
            back = scaling_back(scaling_client, self.cluster, self.service, self.scaling)
            delete_object(ctx.aws, ctx.env)
            said = f"{self.service} wants {desired} task(s) already: not paused any more{back}"
            return Outcome.done(said) if back else Outcome.skipped(said)
        woken_at = ctx.clock.now()  # the tasks the pause stopped before are not failures of the wake
        if self.scaling is not None:
            set_scaling(ctx.aws.client("application-autoscaling"), self.cluster, self.service, *self.scaling)
            low, high = self.scaling
            ctx.reporter.line(f"Application Auto Scaling: {self.service} 0-0 → {low}-{high} tasks")
        ecs.update_service(client, self.cluster, self.service, ctx.env, desiredCount=self.count)
        delete_object(ctx.aws, ctx.env)  # after the count: a failed update leaves it paused, and says so
        rev = ecs.revision_name(str(service.get("taskDefinition", "")))
        ctx.reporter.line(f"{self.service}: desired count 0 → {self.count} ({rev})")
        if not self.wait:
            return Outcome.done(f"{self.count} task(s) of {rev} starting; the rollout that follows waits for them")
        image = ecs.TaskDefinitions.of(ctx.aws).image(str(service["taskDefinition"]), self.container)
        verdict, last_line = await_rollout(
            ctx, self.cluster, self.service, self.container, image, self.timeout, self.poll, since=woken_at
        )
        if verdict.state == "healthy":
            return Outcome.done(f"{self.count} task(s) of {rev} serve")
        raise (RolledBackByEcs if verdict.rolled_back_by_ecs else StepFailed)(
            f"the tasks of {self.service} ({rev}) did not become healthy after the pause: {verdict.reason}{last_line}",
            next_step=f"ECS goes on trying; look at the service events ({events_command(self.cluster, self.service)})"
            f"; what the tasks read when they start (a secret, a parameter) may have changed while it was paused",
        )


def pause_plan(env: EnvConfig, tag: str, owner: str, reason: str) -> Plan:
    """pause (scale to 0, waited for); ``tag``: the image tag the service runs (its history record's commit)."""
    step = PauseService(env.cluster, env.service, owner, reason, env.wait_timeout, env.poll_seconds)
    return Plan(env.name, (step,), PAUSE_TITLE, restarts=(("app", tag),))


def wake_step(env: EnvConfig, pause: Pause, *, wait: bool) -> WakeService:
    return WakeService(
        env.cluster,
        env.service,
        env.container,
        pause.count,
        pause.describe(env.name),
        wait,
        pause.scaling,
        env.wait_timeout,
        env.poll_seconds,
    )


def resume_plan(env: EnvConfig, pause: Pause, tag: str, *, smoke: bool = True) -> Plan:
    """wake (waited for until the tasks serve) → smoke."""
    steps: list[Step] = [wake_step(env, pause, wait=True)]
    if smoke:
        steps.append(Smoke(refuses_first=False))
    return Plan(env.name, tuple(steps), RESUME_TITLE, restarts=(("app", tag),))


def _leaves(plan: Plan) -> list[Step]:
    return [leaf for step in plan.steps for leaf in leaves(step)]


def may_wake(plan: Plan) -> bool:
    """Whether ``plan`` would wake a paused environment and does not yet: it deploys, and has no wake step."""
    return bool(plan.deploys) and not any(isinstance(step, WakeService) for step in _leaves(plan))


def woken(plan: Plan, pause: Pause | None, env: EnvConfig) -> Plan:
    """``plan`` (a deploy) with the wake of a paused environment (``pause``) first; as it is when the environment
    is not paused, or the plan is not one to wake it (:func:`may_wake`). The wake waits for the tasks unless the
    plan's own ``wait-healthy`` does."""
    if pause is None or not may_wake(plan):
        return plan
    wait = not any(isinstance(step, WaitHealthy) for step in _leaves(plan))
    return dataclasses.replace(plan, steps=(wake_step(env, pause, wait=wait), *plan.steps))
