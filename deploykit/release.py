"""The release command: run once in a new image before it takes any traffic (``[release]`` of deploy.toml).

A data migration, a backfill, a check that the new image reaches what it needs: the command runs as a one-off ECS
task of the revision that runs the new image, beside the service (its subnets, security groups and capacity), with
the command instead of the image's own. Exit code 0 lets the rollout go on; anything else, a task that cannot start
or one past its deadline (stopped) fails the deploy before the service is pointed at the image: the old version
keeps serving, and nothing of the new one took a request. Its output goes where the container's always goes
(CloudWatch Logs, awslogs); a failure shows its last lines.

The step comes right before the image reaches the service: before roll-service in the app chain, before the Fargate
stack when that stack deploys a new image (deploy.full, deploy.stack, deploy.auto with the stack changed). It is
skipped when the service already runs the image (its command ran when it went live), unless the service is tagged as
running an image whose command has not passed (:data:`PENDING_TAG`). Before a Fargate stack, the
revision it runs in is made from the service's own with the new image: what the stack's update changes in the task
definition reaches the command from the next deploy on. On an environment's first deploy there is no service yet to
run it beside: the Fargate stack creates it, and the command runs right after, in the revision of the service's
first tasks (a step after the stack, which runs only when the step before it found no service); nothing was served
before, so nothing older kept serving meanwhile, and a failure fails the deploy with the service in place. A rollback
never runs it: it brings back an image that ran its command before; release commands are written to be run again and
to leave data the version before can still read.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from botocore.exceptions import BotoCoreError, ClientError

from deploykit import ecs, oneoff
from deploykit.aws import AwsFactory
from deploykit.errors import StepFailed, UsageError
from deploykit.plan import Context, Outcome, Step
from deploykit.switches import switch, switched_on

STARTED_BY = "deploykit-release"  # the one-off tasks' startedBy: ListTasks --started-by finds them
# A service that runs an image whose command has not passed (it failed after a first deploy's Fargate stack created the
# service, or $DEPLOYKIT_SKIP_RELEASE=1 left it out): this tag on the service (its value: the image tag) has the next
# deploy run the command first (deploy.auto counts the app as changed; the image running would otherwise say it ran);
# the next command that passes takes it off.
PENDING_TAG = "deploykit:release-pending"
# on: this run deploys without running the release command (said in its step)
SKIP_ENV = switch("DEPLOYKIT_SKIP_RELEASE")


def skipped_by_hand(environ: Mapping[str, str] | None = None) -> bool:
    """Whether this run leaves the release command out (``$DEPLOYKIT_SKIP_RELEASE=1``: an emergency's way past one
    that cannot pass now, a partner's API down; the step says so)."""
    return switched_on(SKIP_ENV, environ)


@dataclass(frozen=True)
class Release(Step):
    """The release command in a one-off task of the revision running ``repository:tag``, before the service runs it."""

    name: ClassVar[str] = "release"
    cluster: str
    service: str
    container: str
    tag: str
    command: tuple[str, ...]
    timeout: float
    poll: float
    # the image's repository; "": the one the service's image comes from (a Fargate stack's deploy knows only a tag)
    repository: str = ""
    git_sha: str = ""  # tags a revision registered here (when the Fargate stack, not register-taskdef, makes it)
    # the Fargate stack rolls the image out, not roll-service: no service yet is no failure (the stack creates it: an
    # environment's first deploy), only nothing to run the command beside; nothing is handed on to roll-service
    by_stack: bool = False
    # an environment's first deploy: a step after the Fargate stack runs the command once the stack created the
    # service (``created_after``: this step, before the stack, leaves it to that one when there is no service yet;
    # ``after_creation``: that step, which runs only then)
    created_after: bool = False
    after_creation: bool = False

    @property
    def finishes_the_one_before(self) -> bool:
        """After creation: the stack before it made the service with the new image, whose command must run in it
        (nothing marks it owed for a later deploy to run)."""
        return self.after_creation

    def describe(self) -> str:
        if self.after_creation:
            return (
                f"run {self.shown} once in {self.tag} if the Fargate stack just created {self.service} (a first "
                f"deploy; deadline {self.timeout:.0f}s)"
            )
        there = " when it is there" if self.created_after else ""
        return f"run {self.shown} once in {self.tag}, beside {self.service}{there} (deadline {self.timeout:.0f}s)"

    @property
    def shown(self) -> str:
        """The command as a shell would read it, cut to a line's part."""
        return oneoff.shown(self.command)

    def interrupted(self) -> str:
        if self.after_creation:
            return f"the release task is stopped (StopTask) if it had started; {self.service} runs {self.tag} already"
        return f"the release task is stopped (StopTask) if it had started; {self.service} was not changed"

    def run(self, ctx: Context) -> Outcome:
        key = (self.cluster, self.service)
        if self.after_creation:
            return self._after_creation(ctx, key)
        services = ecs.services(ctx.aws)
        try:
            service = services.take(key)  # as register-taskdef read it
        except UsageError:
            if not self.by_stack:
                raise
            if self.created_after:
                ctx.aws.shared(_awaiting_creation).add(key)
                return Outcome.skipped(
                    f"no service {self.service} yet: the Fargate stack creates it, then the command runs in its tasks' "
                    "revision"
                )
            return Outcome.skipped(
                f"no service {self.service} yet (the Fargate stack creates it): nothing to run it beside"
            )
        if not self.by_stack:  # roll-service takes it as it was: a one-off task changes nothing of the service
            services.keep(key, service)
        taskdefs = ecs.TaskDefinitions.of(ctx.aws)
        current = service["taskDefinition"]
        image = self._image(taskdefs, current)
        primary = ecs.primary_deployment(service)
        runs = primary is not None and taskdefs.image(primary["taskDefinition"], self.container) == image
        if runs:
            if pending(service) != self.tag:
                return Outcome.skipped(
                    f"{self.service} already runs {self.tag}: its release command ran as it went live"
                )
            ctx.reporter.line(f"   {self.service} runs {self.tag}, whose command has not passed")
        if skipped_by_hand():
            return self._skipped_by_hand(ctx, service)
        revision = self._revision(ctx, taskdefs, current, image)
        return self._run_task(ctx, service, revision, taskdefs, runs=runs)

    def _skipped_by_hand(self, ctx: Context, service: dict[str, Any]) -> Outcome:
        """``$DEPLOYKIT_SKIP_RELEASE=1``: not run, and the service tagged, so that the next deploy runs it first."""
        marked = _mark(ctx.aws.client("ecs"), service, self.tag)
        return Outcome.skipped(f"${SKIP_ENV}=1: {self.shown} not run for {self.tag}{marked}")

    def _after_creation(self, ctx: Context, key: tuple[str, str]) -> Outcome:
        """After the Fargate stack of a first deploy: the command, when the step before the stack found no service
        (the stack created it, with the image); nothing to do when the service was there (the command's turn was
        before the stack)."""
        awaiting = ctx.aws.shared(_awaiting_creation)
        if key not in awaiting:
            return Outcome.skipped(f"{self.service} was there before the Fargate stack: the command's turn was before")
        awaiting.discard(key)
        service = ecs.services(ctx.aws).take(key)  # as the stack left it
        if skipped_by_hand():
            return self._skipped_by_hand(ctx, service)
        taskdefs = ecs.TaskDefinitions.of(ctx.aws)
        current = service["taskDefinition"]
        image = self._image(taskdefs, current)
        return self._run_task(ctx, service, self._revision(ctx, taskdefs, current, image), taskdefs, runs=True)

    def _image(self, taskdefs: ecs.TaskDefinitions, current: str) -> str:
        """The new image: ``repository:tag``, the repository the one ``current`` (a revision) runs when not given."""
        return f"{self.repository or ecs.image_repository(taskdefs.image(current, self.container))}:{self.tag}"

    def _revision(self, ctx: Context, taskdefs: ecs.TaskDefinitions, current: str, image: str) -> str:
        """The revision that runs ``image``: register-taskdef's (handed on to roll-service again), else one
        registered here from the service's own (a Fargate stack deploying the image registers its own after)."""
        client = ctx.aws.client("ecs")
        arn, registered = ecs.revision_running(client, taskdefs, current, self.container, image, self.git_sha)
        if registered:
            ctx.reporter.line(
                f"   registered {ecs.revision_name(arn)} for the release command (from {ecs.revision_name(current)})"
            )
        if not self.by_stack:
            taskdefs.chosen(arn, self.container, image)  # roll-service's again
        return str(arn)

    def _run_task(
        self, ctx: Context, service: dict[str, Any], revision: str, taskdefs: ecs.TaskDefinitions, *, runs: bool
    ) -> Outcome:
        """The command in a one-off task of ``revision``; ``runs``: the service runs the image already (a first
        deploy's service, or one whose image's command has not passed), which a failure then says, and tags."""
        client = ctx.aws.client("ecs")
        arguments = oneoff.run_task_arguments(service, self.cluster, revision, self.container, self.command, STARTED_BY)
        arn = oneoff.start(client, arguments, f"the release task of {ecs.revision_name(revision)}")
        task_id = arn.rsplit("/", 1)[-1]
        ctx.reporter.line(f"   release task {task_id} of {ecs.revision_name(revision)}")

        def state(status: str, elapsed: float) -> None:
            ctx.reporter.line(f"   [{elapsed:6.1f}s] release task {status}")
            ctx.reporter.status(f"release task {status}")

        def interrupted() -> None:  # while beside other steps: the task is stopped as on an interrupt
            if ctx.stop.is_set():
                raise StepFailed("the run was interrupted while the release command ran", next_step="deploy again")

        try:
            ended = oneoff.wait(
                client,
                ctx.clock,
                self.cluster,
                arn,
                self.container,
                timeout=self.timeout,
                poll=self.poll,
                state=state,
                each=interrupted,
            )
        except BaseException:  # interrupted (Ctrl-C, SIGTERM) or a call failed: the task must not run on alone
            failed = oneoff.stop(client, self.cluster, arn, "deploykit: the deploy that started it stopped")
            if failed:
                ctx.reporter.line(f"⚠️  the release task {task_id} could not be stopped: {failed}")
            raise
        task_log = self._log(ctx, taskdefs, revision, arn)
        if ended.ok:
            last = f": {line}" if (line := ecs.quoted_line(task_log, 120)) else ""
            unmarked = _mark(client, service, None) if pending(service) is not None else ""
            return Outcome.done(f"exited 0 after {ended.seconds:.1f}s (task {task_id}){last}{unmarked}", task=arn)
        if task_log is not None:
            ecs.show_task_log(ctx.reporter.line, task_log, self.container)
        if runs:
            how = (
                "this first deploy's Fargate stack created it with the image, there was no service to run the command "
                "beside before"
                if self.after_creation
                else "its command has not passed"
            )
            where = f"{self.service} runs {self.tag} already: {how}" + _mark(client, service, self.tag)
            again = "fix what it needs and deploy again (the command runs first, this commit or a later one)"
        else:
            where, again = (
                f"{self.service} was not changed: nothing of {self.tag} took a request",
                "fix it, commit and deploy again",
            )
        raise StepFailed(
            f"the release command of {self.tag} ({self.shown}) {ended.what()} in task {task_id}; "
            f"{where}{ecs.last_line(task_log)}",
            next_step=f"{again}; its whole output: inv logs --component app --task {task_id}"
            + (" (or raise [release] timeout in deploy.toml)" if ended.deadline is not None else ""),
        )

    def _log(self, ctx: Context, taskdefs: ecs.TaskDefinitions, revision: str, arn: str) -> ecs.TaskLog | None:
        try:
            return ecs.container_log(ctx.aws.client("logs"), taskdefs.get(revision), self.container, arn)
        except (ClientError, BotoCoreError):  # the log explains; it never hides the outcome
            return None


def _awaiting_creation(aws: AwsFactory) -> set[tuple[str, str]]:
    """The services (cluster, service) whose release command waits for the Fargate stack to create them: one set per
    command (``aws.shared``), from the step before the stack to the step after it."""
    return set()


def pending(service: dict[str, Any]) -> str | None:
    """The image tag whose release command is still to pass on ``service`` (described with its tags), if any."""
    return next((str(t.get("value")) for t in service.get("tags", []) if t.get("key") == PENDING_TAG), None)


def _mark(client: Any, service: dict[str, Any], tag: str | None) -> str:
    """Put the pending mark for ``tag`` on ``service``, or take it off (None); what to say of it, added to the step's
    detail or message (how it failed, when it did)."""
    arn = service.get("serviceArn", "")
    try:
        if tag is None:
            client.untag_resource(resourceArn=arn, tagKeys=[PENDING_TAG])
            return f"; {PENDING_TAG} taken off the service"
        client.tag_resource(resourceArn=arn, tags=[{"key": PENDING_TAG, "value": tag}])
        return f"; tagged {PENDING_TAG}={tag}: a deploy, of this commit too, runs the command first"
    except (ClientError, BotoCoreError) as exc:
        return f" ({PENDING_TAG} could not be {'taken off' if tag is None else 'put on'} the service: {exc})"
