"""The stack chain's steps: synthesize → change set → execute → wait, and what the stacks need first.

``inv deploy.stack NAME`` plans Synthesize + DeployStack; ``inv deploy.full`` plans every stack in dependency
order, independent ones in parallel, with the image and the Lambda zips in between; ``inv destroy`` plans
DestroyStack steps in reverse order. Every parameter value of a stack is decided by the planner and written
into its step: the image tag, the Lambda code keys.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from botocore.exceptions import BotoCoreError, ClientError

from deploykit import ecs, exports, images, leftovers, oci, packaging, plugins, references, registry, stacks, synth
from deploykit.app_chain import await_rollout, events_command, in_registry_now
from deploykit.aws import DENIED, at_once, served, translate_error, utc
from deploykit.config import PLATFORMS
from deploykit.endpoints import code_parameters, stacks_functions
from deploykit.errors import DeployKitError, RolledBackByEcs, StepFailed, UsageError, said
from deploykit.output import age
from deploykit.plan import Context, Outcome, Parallel, Step, StepRecord, all_records, leaves
from deploykit.stacks import error_code, is_not_there

if TYPE_CHECKING:
    from deploykit.aws import AwsFactory
    from deploykit.config import EnvConfig

ARTIFACTS_OUTPUT = "ArtifactsBucketName"


def review(ctx: Context, stack: str, changes: Iterable[stacks.Change]) -> dict[str, list[str]]:
    """What the team's plugins refuse in ``stack``'s changes (plugin → its reasons), before they are executed."""
    return plugins.review_stack_changes(ctx.plugins, ctx.env, stack, [c.to_json() for c in changes])


def _role_of(env: EnvConfig, stack: str) -> str:
    """The role (fargate, api...) of the environment's stack ``stack``; its name when it has none."""
    return next((role for role, name in env.stacks.roles().items() if name == stack), stack)


def deployer(ctx: Context) -> stacks.StackDeployer:
    return stacks.StackDeployer(
        ctx.aws.client("cloudformation"),
        ctx.clock,
        say=ctx.reporter.line,
        status=ctx.reporter.status,
        poll=ctx.env.poll_seconds,
        timeout=ctx.env.wait_timeout * 3,
        env=ctx.env.name,
        explainers={"AWS::ECS::Service": partial(_explain_service, ctx)},
        role_arn=ctx.env.cloudformation_role_arn,
    )


def _explain_service(ctx: Context, service_arn: str, since: datetime | None) -> list[str]:
    """A service in a stack whose rollout failed: why its tasks stopped, from ECS and its log (deploykit.ecs)."""
    return ecs.explain_failed_service(
        ctx.aws.client("ecs"),
        ctx.aws.client("logs"),
        service_arn,
        since,
        container=ctx.env.container,
        say=ctx.reporter.line,
        taskdefs=ecs.TaskDefinitions.of(ctx.aws),
    )


@dataclass(frozen=True)
class Synthesize(Step):
    """Run the CDK app for the environment into cdk.out/<env>/ (skipped when nothing it reads changed)."""

    name: ClassVar[str] = "synth"
    artifacts_only: ClassVar[bool] = True  # the step after it may read what is live meanwhile
    makes_inputs: ClassVar[bool] = True  # the templates the stack deploys read (and check before the run)
    out_dir: str
    force: bool = False

    def describe(self) -> str:
        return f"synthesize cdk/ into {self.out_dir} (skipped when the sources and the context are unchanged)"

    def run(self, ctx: Context) -> Outcome:
        result = synth.synthesize(
            ctx.config,
            ctx.env,
            account=ctx.aws.account(),
            ecr=ctx.aws.client("ecr"),
            out_dir=Path(self.out_dir),
            force=self.force,
            clock=ctx.clock,
            say=ctx.reporter.line,
        )
        ctx.synthesized.update({str(path.resolve()): digest for path, digest in result.digests.items()})
        names = ", ".join(sorted(result.templates))
        if result.skipped:
            return Outcome.skipped(f"unchanged since the last synthesis ({names})")
        return Outcome.done(f"{len(result.templates)} templates in {result.seconds:.1f}s")


def action_key(stack: str) -> str:
    """The output of a deploy-stack step that says what it did to ``stack`` (created, updated, unchanged...)."""
    return f"deploy-stack.{stack}"


def was_key(stack: str, parameter: str) -> str:
    """The output of a deploy-stack step that updated ``stack``: the value ``parameter`` had before, when the
    update changed it."""
    return f"deploy-stack.{stack}.was.{parameter}"


# what a deploy-stack step says it left the stack as (left_key); the live record keeps it
LEFT = ("updated", "template")


def left_key(stack: str, what: str) -> str:
    """The output of a deploy-stack step that says what it left ``stack`` as (one of :data:`LEFT`): ``updated``,
    when CloudFormation last changed the stack by its own clock (:func:`~deploykit.stacks.updated_of`), and
    ``template``, the fingerprint of the template it runs (:func:`~deploykit.stacks.template_fingerprint`). The live
    record keeps both, so a later read can tell whether anything else changed the stack since."""
    return f"deploy-stack.{stack}.left.{what}"


def stacks_left(records: Iterable[StepRecord], roles: Mapping[str, str]) -> dict[str, dict[str, str]]:
    """``stack:<role>`` → what a run's deploy-stack steps (among ``records``, groups' steps too) left that stack as
    (:func:`left_key`), for its history record (:attr:`~deploykit.history.Record.left`). ``roles``: role → stack."""
    left: dict[str, dict[str, str]] = {}
    for record in all_records(records):
        for role, stack in roles.items():
            state = {what: record.outputs[key] for what in LEFT if (key := left_key(stack, what)) in record.outputs}
            if state:
                left[f"stack:{role}"] = state
    return left


KEPT_TEMPLATES = "deploykit/templates/"
# templates over TemplateBody's limit, handed to CloudFormation through S3 (template_url)
STAGED_TEMPLATES = "deploykit/cfn/"
KEPT_FORMAT = 1


def kept_template_key(env: str, stack: str, commit: str) -> str:
    """Where the template ``stack`` was deployed with from ``commit`` (sha12) is kept, in the artifacts bucket."""
    return f"{KEPT_TEMPLATES}{env}/{stack}/{commit}.json"


def put_once(s3: Any, bucket: str, key: str, body: bytes, content_type: str) -> bool:
    """Put ``body`` at ``key``, named by its content, unless it is there: one conditional PutObject
    (``If-None-Match: *``); False when S3 answers that it is (412), or that the same put is in flight (409)."""
    try:
        s3.put_object(Bucket=bucket, Key=key, Body=body, ContentType=content_type, IfNoneMatch="*")
    except ClientError as exc:
        if error_code(exc) not in ("PreconditionFailed", "ConditionalRequestConflict"):
            raise
        return False
    return True


def template_url(aws: AwsFactory, env: EnvConfig, stack: str, body: str) -> str | None:
    """Where CloudFormation reads ``stack``'s template ``body`` (minified) from when it is too big to be sent inline
    (over :data:`~deploykit.synth.TEMPLATE_BODY_LIMIT` bytes, as a CDK app's stacks grow): the environment's
    artifacts bucket, under the body's hash (``deploykit/cfn/<stack>/<sha256>.json``, put once: a conditional put
    finds it there), named as CloudFormation wants it (``https://s3.<region>.amazonaws.com/<bucket>/<key>``, the
    form the CDK CLI hands over too). None for a body that fits inline. A UsageError for the registry stack, whose
    template must fit inline (it makes the bucket), and when the environment has no bucket yet."""
    size = len(body.encode())
    if size <= synth.TEMPLATE_BODY_LIMIT:
        return None
    registry = env.stacks.registry
    bucket = None if stack == registry else (stacks.StackOutputs.of(aws)(registry) or {}).get(ARTIFACTS_OUTPUT)
    if not bucket:
        why = (
            "it makes the artifacts bucket"
            if stack == registry
            else f"{registry} (its artifacts bucket) is not deployed"
        )
        raise UsageError(
            f"the template of {stack} is {size:,} bytes, over CloudFormation's {synth.TEMPLATE_BODY_LIMIT:,} for a "
            f"template sent inline, and it cannot go through S3: {why}",
            next_step="split the stack (or move large inline content out of it), then rerun"
            if stack == registry
            else f"deploy {registry} first: inv deploy.stack {registry} --env {env.name}",
        )
    key = f"{STAGED_TEMPLATES}{stack}/{hashlib.sha256(body.encode()).hexdigest()}.json"
    put_once(aws.client("s3"), bucket, key, body.encode(), "application/json")
    suffix = "amazonaws.com.cn" if env.region.startswith("cn-") else "amazonaws.com"
    return f"https://s3.{env.region}.{suffix}/{bucket}/{key}"


def keep_template(
    ctx: Context,
    registry_stack: str,
    stack: str,
    commit: str,
    body: str,
    tags: Mapping[str, str],
    notifications: Sequence[str] | None = None,
) -> str:
    """Keep the template ``body`` (and the stack tags of its assembly, and the notification topics its app named,
    ``notifications``: None when it named none) ``stack`` was just deployed with from ``commit``, so that a rollback
    to that commit deploys it as it was, without synthesizing the commit's CDK app with today's libraries; the key.
    Raises what S3 or finding the bucket raise."""
    kept = {
        "format": KEPT_FORMAT,
        "stack": stack,
        "commit": commit,
        "tags": dict(tags),
        "template": json.loads(body),
    }
    if notifications is not None:
        kept["notification_arns"] = list(notifications)
    key = kept_template_key(ctx.env.name, stack, commit)
    ctx.aws.client("s3").put_object(
        Bucket=artifacts_bucket(ctx, registry_stack),
        Key=key,
        Body=json.dumps(kept, sort_keys=True).encode(),
        ContentType="application/json",
    )
    return key


def notification_arns(env: EnvConfig, app: Sequence[str] | None) -> tuple[str, ...] | None:
    """The SNS topics a stack's deploy gives CloudFormation for its events: those deploy.toml names for the
    environment (``[environments.NAME] notification_arns``, as ``cdk deploy --notification-arns``), then those the app
    names for the stack (``app``), each once. None when neither says: the stack keeps those it has, as the CDK CLI
    leaves them (set by hand, or by another tool); ``()`` takes them off."""
    if env.notification_arns is None and app is None:
        return None
    return tuple(dict.fromkeys((*(env.notification_arns or ()), *(app or ()))))


IMAGE_PARAMETER = "ImageTag"  # the Fargate stack's input: the tag of the image its task definition runs


def template_cpu(body: str) -> str | None:
    """The CPU a template's ECS task definition puts its tasks on (``X86_64``, ``ARM64``; Fargate's default, X86_64,
    when it names none); None for a template without one (or one that may run on EC2 too)."""
    try:
        template = json.loads(body)
    except ValueError:
        return None
    for resource in (template.get("Resources") or {}).values():
        if isinstance(resource, dict) and resource.get("Type") == stacks.TASK_DEFINITION:
            properties = resource.get("Properties") or {}
            named = (properties.get("RuntimePlatform") or {}).get("CpuArchitecture")
            as_ecs_says_it = {
                "runtimePlatform": {"cpuArchitecture": named if isinstance(named, str) else None},
                "requiresCompatibilities": properties.get("RequiresCompatibilities"),
            }
            return ecs.cpu_architecture(as_ecs_says_it)
    return None


def template_references(
    aws: AwsFactory, env: EnvConfig, stack: str, body: str, given: Mapping[str, str]
) -> references.Findings | None:
    """Whether what the task definitions of template ``body`` name exists (a secret, an environment file, a log
    group, a role: :func:`deploykit.references.check_template`), read at once, with what they import from another
    stack's exports; None for a template without a task definition. No read for one whose references are all the
    stack's own (this repository's)."""
    if stacks.TASK_DEFINITION not in stacks.resource_types(body).values():
        return None
    return references.check_template(aws, body, given, stack=stack, region=env.region)


def readable_template(template: str) -> str | None:
    """The template's body; None when it cannot be read (not there, not JSON, too big)."""
    try:
        return synth.template_body(Path(template))
    except (DeployKitError, OSError):
        return None


def functions_in(out_dir: Path, stack: str) -> dict[str, str]:
    """function → its code parameter, for each one the template of ``stack`` in the cloud assembly ``out_dir`` takes
    (:func:`deploykit.endpoints.code_parameters`); {} when the template cannot be read (the app makes no such stack)."""
    body = readable_template(str(synth.template_in(out_dir, stack)))
    return code_parameters(json.loads(body)) if body is not None else {}


def image_not_there(stack: str, repository: str, tag: str, env_name: str) -> UsageError:
    """The refusal of a stack deploy that would roll out an image the environment's registry does not have (its run
    finds it after synthesis, its dry run before)."""
    return UsageError(
        f"{stack} would roll out the image {repository}:{tag}, which is not in the registry of "
        f"environment {env_name!r}: the service's tasks could not start",
        next_step=f"name an image the registry has (inv history --env {env_name} lists those deployed), "
        f"or build and push it first (inv build push --env {env_name}); nothing was changed",
    )


def is_code_parameter(name: str) -> bool:
    """Whether ``name`` is a function's code parameter (``<Id>CodeKey``, :func:`deploykit.endpoints.code_parameter`)."""
    return bool(code_parameters({"Parameters": {name: {}}}))


def held_parameters(template: Mapping[str, Any], given: Mapping[str, str]) -> dict[str, str]:
    """``given`` without the code parameters of the functions ``template`` does not hold: a deploy offers every
    function's code to each stack that may hold one (:func:`deploykit.planner.stack_parameters`)."""
    declared = template.get("Parameters") or {}
    return {name: value for name, value in given.items() if name in declared or not is_code_parameter(name)}


@dataclass(frozen=True)
class DeployStack(Step):
    """One stack through a change set: show the changes, execute, follow the events, read the outputs; then keep
    the template it deployed in the artifacts bucket as ``commit``'s (:func:`keep_template`), when it names one."""

    name: ClassVar[str] = "deploy-stack"
    stack: str
    template: str
    parameters: tuple[tuple[str, str], ...] = ()
    allow_replace: bool = False
    approve_access: bool = False  # in a protected environment, changes of access (IAM, network, policies) may run
    rerun: str = ""  # the command a refusal names to run this again ("": inv deploy.stack NAME)
    # the commit (sha12) whose cdk/ made the template, and the stack that holds the artifacts bucket: the template
    # is kept there after the deploy, for a rollback to that commit; "": not kept (a build of uncommitted changes)
    commit: str = ""
    registry_stack: str = ""
    express: bool = False  # an update through CloudFormation's express mode (the environment's stack_mode)
    # the other stacks that may hold functions the same run deploys: a function moving between this stack and another
    # must move in one run (:meth:`_refuse_half_move`); None: not checked (a rollback checks its stacks together)
    beside: tuple[str, ...] | None = None
    # a drift-aware change set (DeploymentMode REVERT_DRIFT): what was changed outside CloudFormation in the stack's
    # resources goes back to the template's values (inv deploy.stack --revert-drift)
    revert_drift: bool = False

    def describe(self) -> str:
        code = [k for k, _ in self.parameters if is_code_parameter(k)]
        params = ", ".join(f"{k}={v}" for k, v in self.parameters if k not in code)
        mode = "; an update in express mode" if self.express and not self.revert_drift else ""
        mode += "; drift-aware: what was changed outside CloudFormation goes back" if self.revert_drift else ""
        held = "; the code key of each function it holds" if code else ""
        shown = f" ({params})" if params else ""
        return f"{self.stack}: change set from {Path(self.template).name}{shown}{held}{mode}"

    def interrupted(self) -> str:
        return (
            f"if its change set was executed, CloudFormation goes on with {self.stack} on its own (and rolls it "
            "back if it fails); a rerun waits for it, and an unexecuted change set is simply replaced"
        )

    def run(self, ctx: Context) -> Outcome:
        out_dir = Path(self.template).parent  # its tags, protection, topics in the app: as this run synthesized them
        manifest = ctx.synthesized.get(str((out_dir / synth.MANIFEST).resolve()))
        app = synth.manifest_stack(out_dir, self.stack, digest=manifest)
        if app is None:  # a file an earlier synthesis left: not what the app makes now
            raise UsageError(
                f"the CDK app makes no stack {self.stack}: the cloud assembly in {out_dir} lists "
                f"none (a {Path(self.template).name} there is left from an earlier synthesis); nothing was changed",
                next_step=f"make the stack in cdk/app.py (its stack_name {self.stack!r}), or name the one it makes "
                "in deploy.toml's [environments.NAME.stacks]",
            )
        # the file the manifest names (<id>.template.json), as this run's synthesis left it
        body = synth.template_body(app.template, digest=ctx.synthesized.get(str(app.template.resolve())))
        template = json.loads(body)
        self._refuse_half_move(ctx, template)
        given = held_parameters(template, dict(self.parameters))
        if IMAGE_PARAMETER in given:  # the Fargate stack: the image must be there, for the CPU the tasks run on
            self._check_image(ctx, body, given[IMAGE_PARAMETER])
        unchecked = self._check_references(ctx, body, given)
        body, kept_exports = self._kept_exports(ctx, body, given)
        url = template_url(ctx.aws, ctx.env, self.stack, body)
        app_tags, app_topics = app.tags, app.notifications
        synth.check_notification_arns(self.stack, app_topics)  # a rollback's assembly is not checked at synthesis
        result = deployer(ctx).deploy(
            self.stack,
            body,
            given,
            template_url=url,
            allow_replace=self.allow_replace,
            guard_access=ctx.env.protected and not self.approve_access,
            tags={**app_tags, "deploykit:environment": ctx.env.name},
            rerun=self.rerun or None,
            review=partial(review, ctx, self.stack),
            express=self.express,
            check=partial(self._replaced_imported, ctx),
            termination_protection=app.protected,
            notification_arns=notification_arns(ctx.env, app_topics),
            revert_drift=self.revert_drift,
        )
        detail = f"{result.action} in {result.seconds:.1f}s"
        if result.express:
            detail += " in express mode"
        if result.changes:
            detail += f" ({len(result.changes)} change{'s' if len(result.changes) != 1 else ''})"
        if result.protection:
            detail += f"; termination protection {result.protection}"
        if result.notifications:
            detail += f"; its events go to {result.notifications}"
        again = ""  # the stack's revision of the service rolled out again (_service_runs_stack)
        if result.express and any(
            c.resource_type == "AWS::ECS::Service" and c.action != "Remove" for c in result.changes
        ):
            detail += f"; {self._after_execute(ctx, partial(self._await_service, ctx))}"
        elif result.express or (self.express and result.action == "unchanged"):
            again = self._after_execute(ctx, partial(self._service_runs_stack, ctx, body))
            detail += f"; {again}" if again else ""
        outputs = {f"{self.stack}.{k}": v for k, v in result.outputs.items()}
        outputs[action_key(self.stack)] = result.action  # what CloudFormation did, read by rollback.changed_stacks
        if result.updated:
            outputs[left_key(self.stack, "updated")] = result.updated
            outputs[left_key(self.stack, "template")] = stacks.template_fingerprint(body)
        if result.action == "updated":  # what an update changed a parameter from (rollback.undo_plan reads it)
            outputs |= {
                was_key(self.stack, k): v for k, v in result.previous_parameters.items() if given.get(k, v) != v
            }
        # what was deployed, not the file again (a synthesis may rewrite it)
        kept = self._keep(ctx, body, app_tags, app_topics)
        kept += unchecked + "".join(f"; {export.said()}" for export in kept_exports)
        if result.action == "unchanged" and again:  # the stack's revision rolled out again: the step did something
            return Outcome("done", f"{self.stack}: no changes to the stack; {again}{kept}", outputs)
        if result.action == "unchanged" and result.protection:  # so did setting its protection
            protection = f"termination protection {result.protection}"
            return Outcome("done", f"{self.stack}: no changes to the stack; {protection}{kept}", outputs)
        if result.action == "unchanged":
            drift = f" and {stacks.NO_DRIFT}" if self.revert_drift else ""
            return Outcome.skipped(f"{self.stack}: no changes{drift}{kept}", **outputs)
        if result.drift:
            detail += f"; {result.drift}"
        changed = stacks.change_lines(result.changes) if result.action == "updated" else ()
        return Outcome("done", f"{self.stack}: {detail}{kept}", outputs, changes=changed)

    def _await_service(self, ctx: Context, what: str = "") -> str:
        """After an update in express mode that changed the app's service: wait for its rollout, as CloudFormation
        would have in the standard mode (a paused service, running no task, is not waited for); what became of it.
        A failed rollout fails the step, the stack keeping its new template. ``what``: what was rolled out, for the
        failure's message (default: the stack's express update)."""
        cluster, name, container = ctx.env.cluster, ctx.env.service, ctx.env.container
        service = ecs.describe_service(ctx.aws.client("ecs"), cluster, name, ctx.env)
        primary = ecs.primary_deployment(service) or {}
        if not service.get("desiredCount"):
            return f"{name} runs no task (desired count 0): not waited for"
        revision = str(primary.get("taskDefinition") or service["taskDefinition"])
        image = ecs.TaskDefinitions.of(ctx.aws).image(revision, container)
        if not what:
            ctx.reporter.line(f"{self.stack}: express mode ended before {name} was ready: waiting for it")
        deployment = str(primary.get("id", ""))
        verdict, last_line = await_rollout(
            ctx, cluster, name, container, image, ctx.env.wait_timeout, ctx.env.poll_seconds, deployment
        )
        if verdict.state == "healthy":
            return f"{name} healthy: {verdict.summary}"
        again = self.rerun or f"inv deploy.stack {self.stack} --env {ctx.env.name}"
        meanwhile = (
            "ECS put the previous revision back"
            if verdict.rolled_back_by_ecs
            else "ECS goes on trying until its circuit breaker puts the previous revision back"
        )
        raise (RolledBackByEcs if verdict.rolled_back_by_ecs else StepFailed)(
            f"{what or f'{self.stack} was updated in express mode'}, but {name} did not become healthy on "
            f"{ecs.revision_name(revision)}: {verdict.reason}{last_line}",
            next_step=f"the stack keeps its new template ({meanwhile}); "
            f"fix the cause and rerun {again}, or go back: inv rollback --env {ctx.env.name} --component "
            f"stack:{_role_of(ctx.env, self.stack)}; events: {events_command(cluster, name)}",
        )

    def _after_execute(self, ctx: Context, work: Callable[[], str]) -> str:
        """``work``, after the change set went through: bad input it finds (an AWS refusal, a service gone) is the
        step's failure, exit 1, never a refusal (exit 2: nothing changed), since the stack has changed."""
        try:
            return work()
        except UsageError as exc:
            raise StepFailed(exc.message, next_step=exc.next_step) from None
        except (ClientError, BotoCoreError) as exc:
            said = translate_error(exc, ctx.env)
            raise StepFailed(said.message, next_step=said.next_step) from None

    def _service_runs_stack(self, ctx: Context, body: str) -> str:
        """Express mode, the app's service left alone by this deploy: when the service runs an older revision than
        the one the stack holds, roll the stack's out again and wait for it, as CloudFormation would update the
        service to it in the standard mode; what became of it ("" when there was nothing to do). An express update
        whose rollout failed leaves that (CloudFormation did not roll the stack back; ECS's circuit breaker put the
        previous revision back), and a deploy of the same template again finds nothing to change: it must roll it
        out again (passing once its cause outside the template, a secret, a permission, is fixed), never pass for
        it. A newer revision is the app's own deploys (register-taskdef); one of another family, or a template
        without exactly one task definition, is not judged."""
        kinds = stacks.resource_types(body)
        definitions = [lid for lid, kind in kinds.items() if kind == stacks.TASK_DEFINITION]
        if len(definitions) != 1 or "AWS::ECS::Service" not in kinds.values():
            return ""
        held = stacks.held_task_definition(ctx.aws.client("cloudformation"), self.stack)
        if not held:
            return ""
        name, client = ctx.env.service, ctx.aws.client("ecs")
        service = ecs.describe_service(client, ctx.env.cluster, name, ctx.env)
        running = str((ecs.primary_deployment(service) or {}).get("taskDefinition") or service.get("taskDefinition"))
        if not ecs.is_older(running, held):
            return ""
        ctx.reporter.line(
            f"{self.stack} holds {ecs.revision_name(held)}, which {name} does not run ({ecs.revision_name(running)}: "
            "ECS put it back after the stack's express update failed to roll out): rolling it out again"
        )
        ecs.update_service(client, ctx.env.cluster, name, ctx.env, taskDefinition=held)
        return self._await_service(ctx, f"{self.stack}'s {ecs.revision_name(held)} was rolled out again")

    def _check_image(self, ctx: Context, body: str, tag: str) -> None:
        """UsageError, before anything changes, when the service's tasks could not start from the image the
        template would roll out (``tag``, its ImageTag): one that is not in the environment's registry (a tag
        mistyped, never pushed, or cleaned up), or one built for another CPU than the template puts the tasks on. The
        image running now is checked against the CPU it runs on (a change of [build] platform deployed without an
        image built for it: deploy.stack without --image-tag, deploy.auto holding the app back, a stack rollback
        keeping what runs); another one (a tag a person names, a rollback's) is looked up in the registry, its
        platforms read from its manifest (two reads); one this run pushed or copied is known there, built for
        [build] platform."""
        wanted = template_cpu(body)
        if wanted is None:
            return
        try:
            service = ecs.describe_service(ctx.aws.client("ecs"), ctx.env.cluster, ctx.env.service)
            running = ecs.TaskDefinitions.of(ctx.aws).get(str(service["taskDefinition"]))
            image = ecs.container_image(running, ctx.env.container)
        except UsageError:  # no service yet (nothing runs on any CPU), or no such container (said elsewhere)
            running, image = None, ""
        if running is not None and ecs.image_tag(image) == tag:
            runs = ecs.cpu_architecture(running)
            if runs is None or runs == wanted:
                return
            raise UsageError(
                f"{self.stack} would put the service's tasks on {wanted}, but the image they would run, the one "
                f"running now ({tag}), is built for {runs}: they would not start",
                next_step="deploy the stack with an image built for [build] platform: inv deploy.auto (after the "
                f"commit that changed it: it builds the image and deploys both), or inv deploy.stack {self.stack} "
                "--image-tag TAG of an image built for it",
            )
        # this run's build or copy, for [build] platform (known without asking the registry, or ECR for its URI)
        if any(ref.endswith(f"/{ctx.env.repository}:{tag}") for ref in in_registry_now(ctx.aws)):
            return
        host, repository = images.split_registry(registry.repository_uri(ctx.aws))
        platforms = oci.image_platforms(oci.Registry(host, registry.credentials(ctx.aws)), repository, tag)
        if platforms is None:
            raise image_not_there(self.stack, repository, tag, ctx.env.name)
        if not any(PLATFORMS.get(platform) == wanted for platform in platforms):
            raise UsageError(
                f"{self.stack} would put the service's tasks on {wanted}, but the image it would roll out "
                f"({repository}:{tag}) is built for {', '.join(platforms) or 'no platform'}: they would not start",
                next_step=f"name an image built for {wanted}, or deploy the stack as [build] platform has it with an "
                "image built for it: inv deploy.auto",
            )

    def preflight(self, ctx: Context, before: tuple[Step, ...]) -> None:
        """The check of what the template's task definitions name (:meth:`_check_references`), before the run's
        first change, for a stack deployed after others changed what is live (a higher level of deploy.auto, the
        Fargate stack after the data stack): refused then, nothing changed, where the step would refuse it after
        them. What a stack deployed before it in the run could make (:func:`deploykit.references.could_make`: a
        resource of that kind, an export of that name) is left to the step's own check, made once they are deployed.
        So is an export the template drops that another stack still imports and that cannot be kept
        (:func:`deploykit.exports.keep_imported`), unless each stack importing it deploys before it in the run."""
        body = readable_template(str(synth.stack_template(Path(self.template), self.stack)))
        if body is None:  # the step meets it when it runs
            return
        self._refuse_half_move(ctx, json.loads(body))
        earlier = references.earlier_stacks(before)
        self._kept_exports(ctx, body, dict(self.parameters), tuple(e.stack for e in earlier))
        found = template_references(ctx.aws, ctx.env, self.stack, body, dict(self.parameters))
        if found is None or not found.missing:
            return
        made = references.could_make(earlier, region=ctx.env.region, account=ctx.aws.account())
        references.refuse_missing_in(found.keeping(lambda kind, key: not made(kind, key)), self.stack, self.rerun)

    def _refuse_half_move(self, ctx: Context, template: Mapping[str, Any]) -> None:
        """UsageError when a function moves between this stack and another one that the run does not deploy
        (:attr:`beside`): that other stack holds it now and its template (beside this one's, in the same assembly)
        no longer does, or this stack holds it now and the other's template does. Deployed alone, this stack would run
        it twice (in both stacks until the other deploys) or delete it (in neither until then)."""
        everywhere = ctx.env.stacks.function_stacks()
        if self.beside is None or self.stack not in everywhere:
            return
        names = [name for name in everywhere if name != self.stack and name not in self.beside]
        if not names:  # the run deploys every stack that may hold functions
            return
        read = stacks.StackOutputs.of(ctx.aws)
        found = at_once({name: partial(read, name) for name in everywhere if name == self.stack or name in names})
        hosts = stacks_functions({name: dict(outputs) for name, outputs in found.items() if outputs})["hosts"]
        held = code_parameters(template)
        functions_of: dict[str, Mapping[str, str]] = {}  # each other stack's functions, its template read once

        def holds(stack: str, fn: str) -> bool:  # the stack's template of this assembly holds the function
            if stack not in functions_of:
                functions_of[stack] = functions_in(Path(self.template).parent, stack)
            return fn in functions_of[stack]

        for fn, host in sorted(hosts.items()):
            if host != self.stack and host in names and fn in held and not holds(host, fn):
                effect, other = f"run {fn} twice, in both stacks until {host} deploys", host
            elif host == self.stack and fn not in held and (gains := [n for n in names if holds(n, fn)]):
                effect, other = f"delete {fn}, which would run nowhere until {gains[0]} deploys", gains[0]
            else:
                continue
            raise UsageError(
                f"{fn} moves between {self.stack} and {other} in this commit, and this run deploys {self.stack} "
                f"without {other}: it would {effect}; nothing was changed",
                next_step=f"deploy both in one run: inv deploy.auto --env {ctx.env.name}",
            )

    def _kept_exports(
        self, ctx: Context, body: str, given: Mapping[str, str], importing_before: tuple[str, ...] = ()
    ) -> tuple[str, tuple[exports.Kept, ...]]:
        """``body`` with each export the stack makes that it drops and another stack still imports kept
        (:func:`deploykit.exports.keep_imported`: refused when it cannot be); as it is when they cannot be read (the
        deploy goes on, CloudFormation judging it as before)."""
        try:
            return exports.keep_imported(
                ctx.aws.client("cloudformation"),
                self.stack,
                body,
                given,
                region=ctx.env.region,
                account=ctx.aws.account(),
                importing_before=importing_before,
            )
        except (ClientError, BotoCoreError):
            return body, ()

    def _replaced_imported(self, ctx: Context, changes: Iterable[stacks.Change]) -> None:
        """The change set's check (:func:`deploykit.exports.refuse_replacing_imported`); passed over when what it
        reads cannot be (CloudFormation judges it, as before)."""
        rerun = self.rerun or f"inv deploy.stack {self.stack} --env {ctx.env.name}"
        try:
            exports.refuse_replacing_imported(ctx.aws.client("cloudformation"), self.stack, changes, rerun)
        except (ClientError, BotoCoreError):
            return

    def as_earlier(self) -> references.Earlier:
        template = synth.stack_template(Path(self.template), self.stack)
        return references.Earlier(readable_template(str(template)), self.stack, dict(self.parameters))

    def _check_references(self, ctx: Context, body: str, given: Mapping[str, str]) -> str:
        """UsageError, before anything changes, when a task definition of the template names what does not exist
        (:func:`template_references`), as ``register-taskdef`` refuses its revisions: on AWS its tasks would fail to
        start a minute into the rollout, then be rolled back. What the step's detail says of those not checked (""
        for none)."""
        found = template_references(ctx.aws, ctx.env, self.stack, body, given)
        if found is None:
            return ""
        references.refuse_missing_in(found, self.stack, self.rerun)
        return references.said_unchecked(found)

    def _keep(self, ctx: Context, body: str, tags: Mapping[str, str], topics: Sequence[str] | None) -> str:
        """Keep the template ``body`` as ``commit``'s; what the detail says when it could not be (it never fails a
        deploy that worked: a rollback to this commit then synthesizes it, as before)."""
        if not (self.commit and self.registry_stack):
            return ""
        try:
            keep_template(ctx, self.registry_stack, self.stack, self.commit, body, tags, topics)
        except (ClientError, BotoCoreError, DeployKitError, OSError, ValueError) as exc:
            return f"; its template was not kept for a rollback ({said(exc)})"
        return ""


@dataclass(frozen=True)
class StacksByDependencies(Parallel):
    """The platform's last stacks and the team's own, side by side as far as they may be: each starts once the stacks
    of the group it depends on have deployed (the synthesized app's :func:`deploykit.synth.stack_dependencies`), as
    ``cdk deploy --concurrency`` orders them; one whose stack failed is not started. Without an assembly to read, the
    team's stacks go one after the other, each after every stack before it, which the synthesis's check
    (:func:`deploykit.synth.check_stacks`) keeps a valid order.

    ``steps``: each deploys one stack (a :class:`DeployStack`, or a group around one: the Fargate stack's release
    command first); ``own_from``: the place of the first stack of the team's own."""

    heading: ClassVar[str] = "side by side, each after the stacks it depends on"
    own_from: int = 0

    def needs(self, ctx: Context | None = None) -> Mapping[int, Iterable[int]]:
        deploys = [next(s for s in leaves(step) if isinstance(s, DeployStack)) for step in self.steps]
        try:
            found = synth.stack_dependencies(Path(deploys[0].template).parent)
        except StepFailed:
            return {index: range(index) for index in range(self.own_from, len(self.steps))}
        place = {deploy.stack: index for index, deploy in enumerate(deploys)}
        # a stack before it only (the synthesis's check refuses a team's stack that needs a later one): no step can
        # wait for one that waits for it
        return {i: [place[s] for s in found.get(d.stack, ()) if place.get(s, i) < i] for i, d in enumerate(deploys)}


@dataclass(frozen=True)
class StacksByImports(Parallel):
    """The team's stacks and the platform's last ones deleted side by side as far as they may be: each once the
    stacks of the group that import one of its exports are gone (DescribeStacks, then ListImports of each export, as
    the stacks are), since CloudFormation refuses to delete a stack whose export is in use. Without those reads (an
    estimate, or ListImports denied: said) as before: the team's stacks one after the other, each after the stacks
    listed after it in deploy.toml, then the platform's side by side.

    ``steps``: each deletes one stack (:class:`DestroyStack`), the team's first (deploy.toml's order reversed);
    ``own_until``: how many are the team's."""

    heading: ClassVar[str] = "side by side, each once the stacks that import from it are gone"
    own_until: int = 0

    def needs(self, ctx: Context | None = None) -> Mapping[int, Iterable[int]]:
        fallback = {i: range(min(i, self.own_until)) for i in range(1, len(self.steps))}
        names = [step.stack if isinstance(step, DestroyStack) else "" for step in self.steps]
        if ctx is None:
            return fallback
        cfn = ctx.aws.client("cloudformation")
        try:  # one after the other: a few calls, before deletions of minutes each
            used = {name: exports.imported_from(cfn, name) for name in names if name}
        except ClientError as exc:
            if error_code(exc) not in DENIED:
                raise
            ctx.reporter.line(f"⚠️  which stacks import from which may not be read ({error_code(exc)}): the stacks "
                              "of the team's own go one at a time")  # fmt: skip
            return fallback
        place = {name: index for index, name in enumerate(names)}
        # an importer listed before its exporter only (a stack of the team's imports from stacks before it in
        # deploy.toml, a platform stack from none of the team's): no step can wait for one that waits for it
        return {
            i: sorted(
                {place[user] for users in used.get(name, {}).values() for user in users if place.get(user, i) < i}
            )
            for i, name in enumerate(names)
        }


def artifacts_bucket(ctx: Context, registry_stack: str) -> str:
    """The artifacts bucket, from the registry stack's output; a UsageError when the stack has none."""
    bucket = (stacks.StackOutputs.of(ctx.aws)(registry_stack) or {}).get(ARTIFACTS_OUTPUT)
    if not bucket:
        raise UsageError(
            f"stack {registry_stack} has no output {ARTIFACTS_OUTPUT}",
            next_step=f"deploy it first: inv deploy.stack {registry_stack} --env {ctx.env.name}",
        )
    return bucket


SMALL_ZIP = 64 * 1024
"""A zip this small (most handlers: a few kB) is sent at once, on the condition that its key is not there yet
(``If-None-Match: *``): one round trip where asking first takes two; a bigger one is asked about first, as sending
it again for nothing takes longer than the question (64 kB: about 50 ms at 10 Mbit/s, one round trip to AWS)."""


RENEW_AFTER = timedelta(hours=6)
"""A zip a deploy finds already in the bucket, and S3 last wrote longer ago than this, is copied onto itself
(CopyObject, its metadata kept) so that its date is now's: ``inv lambda.cleanup`` keeps a zip for a day after its
upload (:data:`deploykit.zip_cleanup.GRACE`), a deploy of another environment sharing the bucket may be about to use
it, and one that reuses an old zip (a rollback, code deployed before) must not find it deleted between its upload
step and Lambda's read. Renewed at most every 6 hours: every renewal leaves a noncurrent version in the versioned
bucket, expired by its lifecycle."""


PART_MIN = 5 * 1024 * 1024
"""S3's least size of a multipart upload's part but the last: a zip whose vendored packages are at least this big
(:attr:`~deploykit.packaging.Package.prefix_length`) is put together in S3 from a copy of them and the rest sent;
smaller ones are sent whole (5 MiB: 4 s at 10 Mbit/s, a few round trips against seconds)."""


@dataclass(frozen=True)
class UploadLambdaCode(Step):
    """Upload a function's reproducible zip under its content-hash key (skipped when already there).

    A zip with 5 MiB or more of vendored packages is not sent whole: its first bytes, the vendored entries, are the
    same in every zip of that requirements.txt, so they are kept once in the bucket by their hash
    (``lambda-vendored/<sha256>.bin``, put with its SHA-256 for S3 to check) and the zip is a multipart upload of a
    copy of them made within S3 (UploadPartCopy) and the function's own files and the zip's directory, sent. A handler
    change beside 16 MB of numpy sends kilobytes; the first zip of new requirements sends the vendored entries once,
    as the whole zip did. The zip's key is still the hash of all its bytes, and update-code checks that Lambda reads
    those bytes (CodeSha256)."""

    name: ClassVar[str] = "upload-lambda"
    artifacts_only: ClassVar[bool] = True  # the step after it may read what is live meanwhile
    function: str
    folder: str
    key: str
    registry_stack: str
    size: int = 0  # the zip's size in bytes, as planned; 0: not known (asked about first, as a big one)
    prefix_key: str = ""  # where the zip's vendored entries are kept, as planned (Package.prefix_key); "": none
    architecture: str = packaging.DEFAULT_ARCHITECTURE  # what it was packaged for (Package.architecture)
    python: str = packaging.DEFAULT_PYTHON  # and the CPython (Package.python)

    @classmethod
    def of(cls, function: str, folder: Path | str, package: packaging.Package, registry_stack: str) -> UploadLambdaCode:
        """The step uploading ``package``, packaged from ``folder`` when the plan was made."""
        prefix_key = package.prefix_key if package.prefix_length >= PART_MIN else ""
        return cls(
            function,
            str(folder),
            package.key,
            registry_stack,
            len(package.zip_bytes),
            prefix_key,
            package.architecture,
            package.python,
        )

    def describe(self) -> str:
        return f"{self.function} → s3://<{self.registry_stack}.{ARTIFACTS_OUTPUT}>/{self.key}"

    def run(self, ctx: Context) -> Outcome:
        bucket = artifacts_bucket(ctx, self.registry_stack)
        s3 = ctx.aws.client("s3")
        small = 0 < self.size <= SMALL_ZIP
        # the vendored entries' object, when the plan named one and it is there; S3's refusal to say (a role that may
        # not read lambda-vendored/*): the zip goes whole
        kept: dict[str, Any] | ClientError | None = None
        if not small:
            reads: dict[str, Callable[[], Any]] = {"zip": partial(_head, s3, bucket, self.key)}
            if self.prefix_key:  # in the same round trip
                reads["prefix"] = partial(_head_unless_denied, s3, bucket, self.prefix_key)
            found = at_once(reads)
            if found["zip"] is not None:
                return self._reused(ctx, s3, bucket, found["zip"])
            kept = found.get("prefix")
        package = packaging.package_function(Path(self.folder), architecture=self.architecture, python=self.python)
        if package.key != self.key:
            raise UsageError(
                f"{self.function} changed since the plan was made ({package.key} ≠ {self.key})",
                next_step="rerun the command",
            )
        size = len(package.zip_bytes)
        if small:  # its name is its content's hash: one there already is the same zip
            if not put_once(s3, bucket, self.key, package.zip_bytes, "application/zip"):
                head = _head(s3, bucket, self.key)  # how old it is: asked only when it was there
                if head is not None:
                    return self._reused(ctx, s3, bucket, head)
                s3.put_object(Bucket=bucket, Key=self.key, Body=package.zip_bytes, ContentType="application/zip")
        elif self.prefix_key:  # as planned: the same bytes (its key checked above), so the same vendored prefix
            sent, how = put_from_vendored(s3, bucket, package, kept)
            vendored = packaging.short_key(package.prefix_key)
            said = {
                "copied": f"its {package.prefix_length} B of vendored packages copied within S3 from {vendored}",
                "kept": f"its vendored packages kept at {vendored} for the next zips of these requirements",
            }.get(how, f"sent whole: {how}")
            return Outcome.done(f"{self.function}: {size} B → s3://{bucket}/{self.key}, {sent} B sent ({said})")
        else:
            s3.put_object(Bucket=bucket, Key=self.key, Body=package.zip_bytes, ContentType="application/zip")
        return Outcome.done(f"{self.function}: {size} B → s3://{bucket}/{self.key}")

    def _reused(self, ctx: Context, s3: Any, bucket: str, head: Mapping[str, Any]) -> Outcome:
        """Skipped: the zip is there (HeadObject's answer ``head``); its date renewed when it is older than
        :data:`RENEW_AFTER` (S3's clock: its answer's ``Date``). A renewal S3 refuses is said, not a failure: the
        deploy goes on with the zip that is there."""
        there = f"{self.function}: s3://{bucket}/{self.key} is already there"
        modified, now = utc(head.get("LastModified")), served(head) or ctx.clock.now()
        if modified is None or now - modified < RENEW_AFTER:
            return Outcome.skipped(there)
        ago = f"uploaded {age(now - modified)} ago"
        try:
            s3.copy_object(
                Bucket=bucket,
                Key=self.key,
                CopySource={"Bucket": bucket, "Key": self.key},
                MetadataDirective="REPLACE",  # S3 copies an object onto itself only when something is replaced
                Metadata=dict(head.get("Metadata") or {}),
                ContentType=str(head.get("ContentType") or "application/zip"),
            )
        except (BotoCoreError, ClientError) as exc:  # the zip is there all the same: the deploy goes on with it
            why = error_code(exc) if isinstance(exc, ClientError) else type(exc).__name__
            return Outcome.skipped(
                f"{there} ({ago}; its date could not be renewed, {why}: inv lambda.cleanup may delete it a day after "
                "its upload while a deploy still uses it)"
            )
        return Outcome.skipped(f"{there} ({ago}: its date renewed, so that inv lambda.cleanup keeps it a day)")


def _head(s3: Any, bucket: str, key: str) -> dict[str, Any] | None:
    """HeadObject's answer (with the object's checksum, when it has one); None when the key is not there."""
    try:
        return dict(s3.head_object(Bucket=bucket, Key=key, ChecksumMode="ENABLED"))
    except ClientError as exc:
        if is_not_there(exc):
            return None
        raise


def in_bucket(s3: Any, bucket: str, key: str) -> bool:
    """Whether ``key`` is in ``bucket`` (HeadObject)."""
    return _head(s3, bucket, key) is not None


def _head_unless_denied(s3: Any, bucket: str, key: str) -> dict[str, Any] | ClientError | None:
    """:func:`_head`, with S3's refusal returned, not raised: a caller that may not read ``key`` (HeadObject's 403)."""
    try:
        return _head(s3, bucket, key)
    except ClientError as exc:
        if error_code(exc) not in DENIED | {"403", "Forbidden"}:
            raise
        return exc


def kept_vendored(found: Mapping[str, Any] | None, package: packaging.Package) -> bool:
    """Whether the object HeadObject ``found`` at ``package.prefix_key`` holds its vendored entries: their length,
    and their SHA-256 as S3 checked it when deploykit put them (ChecksumSHA256), or, from a store that does not
    say (moto), as deploykit wrote it beside them."""
    if not found or int(found.get("ContentLength", -1)) != package.prefix_length:
        return False
    checksum = found.get("ChecksumSHA256")
    if checksum:
        return bool(checksum == packaging.code_sha256_of(package.prefix_sha256))
    return bool((found.get("Metadata") or {}).get("sha256") == package.prefix_sha256)


def put_from_vendored(
    s3: Any, bucket: str, package: packaging.Package, found: Mapping[str, Any] | ClientError | None
) -> tuple[int, str]:
    """Put ``package``'s zip at its key as a copy, within S3, of its vendored entries (put first at
    ``package.prefix_key`` unless ``found`` there, :func:`kept_vendored`) and the rest of it, sent: a multipart
    upload of two parts. The bytes sent, and how: ``copied`` (the vendored entries were there), ``kept`` (put first),
    or, when S3 would not put it together, why, and the zip is sent whole: S3 would not say whether the vendored
    entries are there (``found`` is its refusal of HeadObject), they were gone by the time they were to be copied (a
    person's doing), or S3 refused the copy (the caller may not read ``lambda-vendored/``, say). A multipart upload
    that does not complete is aborted."""
    named = {packaging.VENDORED_METADATA: package.prefix_sha256}  # which kept entries it is made of (lambda.cleanup)
    vendored = packaging.short_key(package.prefix_key)

    def whole() -> int:
        s3.put_object(
            Bucket=bucket, Key=package.key, Body=package.zip_bytes, ContentType="application/zip", Metadata=named
        )
        return len(package.zip_bytes)

    if isinstance(found, ClientError):  # nothing it may copy from
        return whole(), f"S3 would not say whether {vendored} is there ({error_code(found)}: {found})"
    length = package.prefix_length
    data = memoryview(package.zip_bytes)
    sent, how = 0, "copied"
    if not kept_vendored(found, package):
        s3.put_object(
            Bucket=bucket,
            Key=package.prefix_key,
            Body=bytes(data[:length]),
            ContentType="application/octet-stream",
            ChecksumSHA256=packaging.code_sha256_of(package.prefix_sha256),
            Metadata={"sha256": package.prefix_sha256},
        )
        sent, how = length, "kept"
    # CRC32, as boto3's own multipart uploads declare it: the SDK sends each part's CRC32 (its default), S3 works out
    # the copied part's, and the completion names both (an upload that declares an algorithm must)
    upload = s3.create_multipart_upload(
        Bucket=bucket, Key=package.key, ContentType="application/zip", ChecksumAlgorithm="CRC32", Metadata=named
    )["UploadId"]
    where = {"Bucket": bucket, "Key": package.key, "UploadId": upload}
    try:
        parts = at_once(
            {
                1: partial(
                    s3.upload_part_copy,
                    **where,
                    PartNumber=1,
                    CopySource={"Bucket": bucket, "Key": package.prefix_key},
                    CopySourceRange=f"bytes=0-{length - 1}",
                ),
                # its CRC32 asked for by name: sent even where the SDK is set to send checksums only when S3 needs
                # them (AWS_REQUEST_CHECKSUM_CALCULATION=when_required), as S3-compatible stores need it
                2: partial(s3.upload_part, **where, PartNumber=2, Body=bytes(data[length:]), ChecksumAlgorithm="CRC32"),
            }
        )
        answers = {1: parts[1]["CopyPartResult"], 2: parts[2]}
        completed = [
            {"PartNumber": n, "ETag": answer["ETag"], **_crc32(answer)} for n, answer in sorted(answers.items())
        ]
        s3.complete_multipart_upload(**where, MultipartUpload={"Parts": completed})
    except ClientError as exc:  # what the zip is matters, not how it got there: sent whole as before
        _abort(s3, where)
        why = (
            f"{vendored} was gone when it was to be copied"
            if is_not_there(exc)
            else f"S3 would not put it together from {vendored} ({error_code(exc)}: {exc})"
        )
        return sent + whole(), why
    except BaseException:
        _abort(s3, where)
        raise
    return sent + len(data) - length, how


def _crc32(part: Mapping[str, Any]) -> dict[str, str]:
    """A part's CRC32 as S3 answered it, for the completion; {} when it gave none (moto gives none for a copy)."""
    return {"ChecksumCRC32": part["ChecksumCRC32"]} if part.get("ChecksumCRC32") else {}


def _abort(s3: Any, where: Mapping[str, str]) -> None:
    """Abort a multipart upload, its parts dropped; a failure to is passed over (the bucket's lifecycle rule drops
    it a day later: every bucket's "tidy" rule, cdk/stacks/common/storage.py)."""
    with contextlib.suppress(ClientError, BotoCoreError):
        s3.abort_multipart_upload(**where)


@dataclass(frozen=True)
class DestroyStack(Step):
    """Delete one stack and wait until it is gone; with ``data``, then what it kept on deletion (its buckets,
    tables, user pool, image repository: deploykit.leftovers), read from its resource list before."""

    name: ClassVar[str] = "destroy-stack"
    stack: str
    data: bool = False
    # deleted without the rest (inv destroy --stack): refused while a stack imports one of its exports, unless that
    # stack is deleted with it (``beside``, these stacks' names: inv destroy --stack ROLE,ROLE)
    alone: bool = False
    beside: tuple[str, ...] = ()

    def describe(self) -> str:
        return f"delete {self.stack}" + (", then the data it keeps on deletion" if self.data else "")

    def interrupted(self) -> str:
        return f"if the delete call was made, CloudFormation goes on deleting {self.stack} on its own"

    def preflight(self, ctx: Context, before: tuple[Step, ...]) -> None:
        self._refuse_protected(ctx, "nothing was deleted")
        if self.alone:
            self._refuse_imported(ctx)

    def _refuse_imported(self, ctx: Context) -> None:
        """A stack deleted alone whose export another stack imports: CloudFormation would fail its deletion part way
        ("Export ... cannot be deleted as it is in use by ...")."""
        try:
            used = exports.imported_from(ctx.aws.client("cloudformation"), self.stack)
        except ClientError as exc:
            if error_code(exc) not in DENIED:
                raise
            ctx.reporter.line(f"⚠️  the imports of {self.stack}'s exports may not be read ({error_code(exc)}): "
                              "CloudFormation refuses its deletion if one is in use")  # fmt: skip
            return
        used = {export: others for export, users in used.items() if (others := tuple(set(users) - set(self.beside)))}
        if used:
            said = "; ".join(f"{export} by {', '.join(sorted(users))}" for export, users in sorted(used.items()))
            importers = sorted({user for users in used.values() for user in users})
            own = {name: role for role, name in ctx.env.stacks.own}
            together = [own[name] for name in (*importers, *self.beside, self.stack) if name in own]
            with_it = (
                f"delete them with it: inv destroy --stack {','.join(dict.fromkeys(together))} --env {ctx.env.name}"
                if all(name in own for name in importers)
                else "delete them first, then rerun"
            )
            raise UsageError(
                f"{self.stack} exports what other stacks import ({said}): it cannot go while they do; nothing was "
                "deleted",
                next_step=f"drop their use of it in the CDK app and deploy {', '.join(importers)} first (inv "
                f"deploy.auto), then rerun; or {with_it}",
            )

    def _refuse_protected(self, ctx: Context, done: str) -> None:
        """Refuse a stack protected from deletion (its termination protection: the CDK app's
        ``termination_protection=True``, or set by hand), where CloudFormation's refusal came after the stacks
        before it were deleted. ``done``: what the run did so far."""
        refused = self.protected(ctx.aws, ctx.env, done)
        if refused is not None:
            raise refused

    def protected(self, aws: AwsFactory, env: EnvConfig, done: str) -> UsageError | None:
        """The refusal of :meth:`_refuse_protected` when the stack is protected from deletion; None when it is not,
        or is not there. A dry run says it (its plan is not run: the refusal came only with the run)."""
        try:
            [stack] = aws.client("cloudformation").describe_stacks(StackName=self.stack)["Stacks"]
        except ClientError as exc:
            if stacks.is_missing_stack(exc):
                return None
            raise
        if not stack.get("EnableTerminationProtection"):
            return None
        return UsageError(
            f"{self.stack} is protected from deletion (its termination protection is on): {done}",
            next_step=f"if it is to go, turn it off: termination_protection=False on the stack in the CDK app and "
            f"inv deploy.stack {self.stack} --env {env.name}, or by hand: {stacks.protection_off(self.stack)}; "
            "then rerun inv destroy",
        )

    def run(self, ctx: Context) -> Outcome:
        self._refuse_protected(ctx, f"{self.stack} was not deleted")
        if self.alone:  # a plan of this step alone has no preflight: it checks as it starts
            self._refuse_imported(ctx)
        kept = self._kept(ctx) if self.data else []
        result = deployer(ctx).destroy(self.stack)
        deleted = leftovers.delete(ctx.aws, kept) if kept else {}
        failed = {item: why for item, why in deleted.items() if isinstance(why, Exception)}
        if failed:
            raise StepFailed(
                f"{self.stack} is deleted, but not all the data it kept: "
                + "; ".join(f"{item}: {error_code(why)} ({why})" for item, why in failed.items()),
                next_step="give the permission it names and run inv destroy --include-data again (it finds them in "
                "the deleted stack's resource list), or delete them by hand: "
                + "; ".join(leftovers.by_hand(item) for item in failed),
            )
        said = "; ".join(f"{item} {why}" for item, why in deleted.items())
        if result.action == "absent":
            if any(why != leftovers.GONE_ALREADY for why in deleted.values()):
                return Outcome.done(f"{self.stack} was deleted before; what it kept: {said}")
            return Outcome.skipped(f"{self.stack} does not exist" + ("; what it kept is gone too" if said else ""))
        return Outcome.done(f"{self.stack} deleted in {result.seconds:.1f}s" + (f"; {said}" if said else ""))

    def _kept(self, ctx: Context) -> list[leftovers.Kept]:
        """What the stack keeps on deletion; when it is deleted already, what the last stack of its name kept."""
        try:
            return leftovers.kept_by(ctx.aws, self.stack)
        except ClientError as exc:
            if not stacks.is_missing_stack(exc):
                raise
        deleted = leftovers.last_deleted(ctx.aws, self.stack)
        return leftovers.kept_by(ctx.aws, deleted) if deleted else []
