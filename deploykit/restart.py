"""``inv restart``: every task of the service replaced by a fresh one of the revision it runs; nothing is deployed.

What it is for: a secret rotated in Secrets Manager or a parameter changed in Parameter Store (a task reads them
when it starts, never again), a task gone bad (a leak, a connection pool stuck on a failed-over database). The same
revision, the same image, the same commit: only the tasks are new.

How: ``UpdateService(forceNewDeployment=True)`` and nothing else, so ECS rolls a new deployment of the revision the
service runs as it rolls any other, by the service's deployment configuration: new tasks beside the old ones, the
load balancer's traffic moved to them once they are healthy, the old ones drained and stopped. The step then waits
for *that* deployment, by its id (its tasks run the very revision of the ones they replace, so the image cannot tell
them apart), until it is PRIMARY, COMPLETED, running its desired count, its targets healthy; smoke follows. New tasks
that do not become healthy (the rotated secret is wrong) leave the old ones serving; the circuit breaker ends the
deployment and the step fails with what the last task wrote.

A restart holds the environment's lock (a deploy's wait would take the new deployment for someone else's) and is
recorded in the history as ``restart app``, but it deploys nothing: the live record, what ``deploy.auto`` compares
with, rollbacks' targets and the deploy report's figures are untouched. A freeze does not refuse it, as it does not
refuse a rollback: it brings nothing new. A service in the middle of a rollout is refused: wait for it first.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from deploykit import ecs, pause
from deploykit.app_chain import await_rollout, events_command
from deploykit.config import EnvConfig
from deploykit.errors import RolledBackByEcs, StepFailed, UsageError
from deploykit.plan import Context, Outcome, Plan, Step
from deploykit.smoke import Smoke

TITLE = "restart app"


@dataclass(frozen=True)
class RestartService(Step):
    """A new deployment of the revision the service runs (forceNewDeployment), waited for until it serves."""

    name: ClassVar[str] = "restart"
    cluster: str
    service: str
    container: str
    timeout: float
    poll: float

    def describe(self) -> str:
        return (
            f"replace every task of {self.service} with a fresh one of the revision it runs; wait until they serve "
            f"(deadline {self.timeout:.0f}s, poll {self.poll:g}s)"
        )

    def interrupted(self) -> str:
        return f"only the waiting stopped: ECS goes on replacing the tasks of {self.service} on its own"

    def run(self, ctx: Context) -> Outcome:
        client = ctx.aws.client("ecs")
        service = ecs.describe_service(client, self.cluster, self.service, ctx.env)
        ecs.refuse_unrollable(service, self.cluster, ctx.env)  # UpdateService would refuse it: said before
        busy = ecs.rolling(service)
        if busy:
            raise UsageError(
                f"refusing to restart {self.service} while it rolls out: {busy}",
                next_step=f"wait until it is done (inv wait-healthy --env {ctx.env.name}, or watch "
                f"inv health --env {ctx.env.name}), then inv restart again",
            )
        arn = str(service["taskDefinition"])
        rev = ecs.revision_name(arn)
        desired = int(service.get("desiredCount", 0))
        if desired == 0:
            kept = pause.read_object(ctx.aws, ctx.env)  # paused: what starts fresh tasks is inv resume
            if kept is not None:
                return Outcome.skipped(
                    f"{self.service} runs no task: {kept.describe(ctx.env.name)}; inv resume --env {ctx.env.name} "
                    "starts fresh ones"
                )
            return Outcome.skipped(f"{self.service} runs no task (desired count 0): none to restart")
        taskdefs = ecs.TaskDefinitions.of(ctx.aws)
        image = taskdefs.image(arn, self.container)
        answer = ecs.update_service(client, self.cluster, self.service, ctx.env, forceNewDeployment=True)
        primary = ecs.primary_deployment(answer.get("service", {})) or {}
        deployment = str(primary.get("id", ""))
        before = (ecs.primary_deployment(service) or {}).get("id")
        if not deployment or deployment == before:  # ECS always starts one; never wait on the old one by mistake
            raise StepFailed(
                f"ECS answered the restart of {self.service} without a new deployment (PRIMARY {deployment or '-'})",
                next_step=f"look at the service: aws ecs describe-services --cluster {self.cluster} "
                f"--services {self.service}",
            )
        ctx.reporter.line(f"deployment {deployment}: {desired} fresh task(s) of {rev} ({image.rsplit(':', 1)[-1]})")
        verdict, last_line = await_rollout(
            ctx, self.cluster, self.service, self.container, image, self.timeout, self.poll, deployment
        )
        if verdict.state == "healthy":
            return Outcome.done(
                f"{desired} fresh task(s) of {rev} serve (deployment {deployment})", deployment=deployment
            )
        message = f"the fresh tasks of {self.service} ({rev}) did not become healthy: {verdict.reason}{last_line}"
        events = events_command(self.cluster, self.service)
        if "deadline" in verdict.reason:
            next_step = f"ECS goes on trying while the old tasks serve; look at the service events ({events})"
        else:
            next_step = (
                "the old tasks keep serving; what the fresh ones read at start (a rotated secret, a parameter) is the "
                f"likely cause: fix it, then inv restart again; events: {events}"
            )
        raise (RolledBackByEcs if verdict.rolled_back_by_ecs else StepFailed)(message, next_step=next_step)


def restart_plan(env: EnvConfig, tag: str, *, smoke: bool = True) -> Plan:
    """restart (forceNewDeployment, waited for) → smoke; ``tag``: the image tag the service runs (its history record's
    commit)."""
    steps: list[Step] = [RestartService(env.cluster, env.service, env.container, env.wait_timeout, env.poll_seconds)]
    if smoke:
        steps.append(Smoke(refuses_first=False))
    return Plan(env.name, tuple(steps), TITLE, restarts=(("app", tag),))
