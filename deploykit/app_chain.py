"""The app chain's steps: base image → build → push → register-taskdef → roll-service → wait-healthy.

Each step is a frozen dataclass whose fields are its whole input, all derivable from git and the
environment, so each runs alone (``inv push``) or in a chain (``inv deploy.app``) alike, and none
depends on state another left behind. A step whose result already exists is skipped.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any, ClassVar

from botocore.exceptions import BotoCoreError, ClientError

from deploykit import base_image, ecs, images, oci, references, registry, stacks
from deploykit.aws import AwsFactory, at_once, maybe_applied
from deploykit.cachedir import PRUNE_STAMP, cache_root, prune_due
from deploykit.config import PLATFORMS, BaseImageSpec
from deploykit.errors import EnvironmentNotReady, RolledBackByEcs, StepFailed, UsageError
from deploykit.plan import Context, Outcome, Step, StepRecord, all_records, carry

# tags of older builds a build removes at most (about 20-50 ms each): a machine holding hundreds, the first time,
# is pruned over its next builds rather than one build waiting on them all
PRUNED_PER_BUILD = 40


def _ca_dir(path: str) -> Path | None:
    return Path(path) if path else None


@dataclass(frozen=True)
class EnsureBaseImage(Step):
    """Make sure the image the Dockerfile starts FROM is on the engine."""

    name: ClassVar[str] = "base-image"
    uses_docker: ClassVar[bool] = True
    artifacts_only: ClassVar[bool] = True  # the step after it may read what is live meanwhile
    image: str
    spec: BaseImageSpec
    extra_ca_dir: str
    force: bool = False
    pull_after_days: float = 0  # a pulled image: pulled again once this machine's copy is older ([build])
    # what the images are built for ([build] platform); "": this engine's own (the sandbox, whose tasks run here)
    platform: str = "linux/amd64"

    @property
    def local(self) -> bool:
        """Whether this is the locally built base (deploy.toml [build.base]) rather than a public one."""
        return self.image == self.spec.name

    def describe(self) -> str:
        if self.local:
            how = "build it locally with mmdebstrap if missing or stale"
        elif self.pull_after_days and "@" not in self.image:
            how = f"pull it if missing or pulled more than {self.pull_after_days:g} days ago"
        else:
            how = "pull it if missing"
        return f"base image {self.image}: {how}"

    def run(self, ctx: Context) -> Outcome:
        import docker.errors

        client, now = ctx.docker, ctx.clock.now()
        if self.local:
            engine = images.engine_platform(client) if self.platform else ""
            if engine != self.platform:  # mmdebstrap builds for the machine it runs on
                raise UsageError(
                    f"the local base image {self.image} is built for this machine's platform, {engine}, but images "
                    f"are built for {self.platform} ([build] platform: what the task definition runs)",
                    next_step=f"build FROM a public base pulled for {self.platform} (base_image = "
                    f"'python:3.11-slim' for environment {ctx.env.name!r} in deploy.toml), or deploy from a "
                    f"{self.platform} machine (CI)",
                )
            why = "--force" if self.force else base_image.stale(client, self.spec, _ca_dir(self.extra_ca_dir), now)
            if why is None:
                return Outcome.skipped(f"{self.image} is present and current")
            ctx.reporter.line(f"🐧 building {self.image} (about a minute): {why}")
            image_id = base_image.build_base_image(
                client, self.spec, _ca_dir(self.extra_ca_dir), status=ctx.reporter.status
            )
            return Outcome.done(f"built {self.image} ({image_id[7:19]}): {why}", base_image=self.image)
        held = images.local_image(client, self.image)
        if held is not None:
            why = images.pull_again(held, self.image, self.pull_after_days, now, self.platform)
            if why is None:
                return Outcome.skipped(f"{self.image} is present")
            ctx.reporter.line(f"🐳 pulling {self.image} again: {why}")
        ctx.reporter.status(f"pulling {self.image}")
        try:
            pulled = images.pull_stamped(client, self.image, self.platform or None)
        except docker.errors.APIError as exc:
            if held is not None and images.is_for(held, self.platform):
                # offline, or the registry down: the copy here still builds
                failed = f"pulling {self.image} again failed ({images._short(exc)})"
                ctx.reporter.line(f"⚠️  {failed}: building from this copy")
                return Outcome.skipped(f"{self.image} is present; {failed}")
            missing = "is not on this Docker engine" if held is None else f"is here only for {images.platform_of(held)}"
            platform = f" --platform {self.platform}" if self.platform else ""  # "": this engine's own
            raise EnvironmentNotReady(
                f"base image {self.image} {missing} and cannot be pulled{' for ' + self.platform if platform else ''}: "
                f"{images._short(exc)}",
                next_step=f"build the local base with 'inv base-image' and set base_image = "
                f"{self.spec.name!r} for this environment in deploy.toml, or pull it yourself "
                f"(docker pull{platform} {self.image})",
            ) from None
        if not images.is_for(pulled, self.platform):  # a registry that has the image for another platform only
            raise EnvironmentNotReady(
                f"base image {self.image} is in its registry only for {images.platform_of(pulled)}, and images are "
                f"built for {self.platform} ([build] platform: what the task definition runs)",
                next_step=f"push a {self.platform} build of it (or a multi-platform one) and rerun, or choose "
                "another base_image in deploy.toml",
            )
        if held is None:
            return Outcome.done(f"pulled {self.image}")
        if pulled.id == held.id:
            return Outcome.done(f"pulled {self.image} again: unchanged")
        return Outcome.done(f"pulled {self.image} again: updated ({held.short_id[7:]} → {pulled.short_id[7:]})")


@dataclass(frozen=True)
class BuildImage(Step):
    """Build the backend image, tagged with the git revision."""

    name: ClassVar[str] = "build"
    uses_docker: ClassVar[bool] = True
    artifacts_only: ClassVar[bool] = True  # the step after it may read what is live meanwhile
    context: str
    dockerfile: str
    image: str  # local reference, repository:tag
    base_image: str
    git_sha: str
    extra_ca_dir: str
    platform: str = "linux/amd64"  # what the task definition runs ([build] platform); "": this engine's own
    keep_local: int = 0  # [build] keep_local_images: older builds removed after a build, once a day; 0: never

    def describe(self) -> str:
        built_for = f" for {self.platform}" if self.platform else ""
        return f"docker build {self.context} → {self.image}{built_for} (FROM {self.base_image})"

    def interrupted(self) -> str:
        return "the Docker engine stops the build; no image is tagged until a build completes"

    def run(self, ctx: Context) -> Outcome:
        held = images.local_image(ctx.docker, self.image)
        if held is not None:
            # another environment pushing to a repository of the same name builds the same local tag, maybe FROM
            # another base (the sandbox's local one): that build is not this environment's image
            base = images.labels_of(held).get(images.BASE_LABEL)
            if images.is_for(held, self.platform) and base == self.base_image:
                return Outcome.skipped(f"{self.image} is already built (tags are immutable)", image=self.image)
            if not images.is_for(held, self.platform):
                ctx.reporter.line(
                    f"🐳 {self.image} here is for {images.platform_of(held)}: building it for {self.platform}"
                )
            else:
                ctx.reporter.line(
                    f"🐳 {self.image} here is built FROM {base or 'a base it does not name'}: building it FROM "
                    f"{self.base_image}"
                )
        result = images.build_image(
            ctx.docker,
            context=Path(self.context),
            dockerfile=self.dockerfile,
            tag=self.image,
            buildargs={"BASE_IMAGE": self.base_image, "GIT_SHA": self.git_sha},
            labels={
                images.BUILD_LABEL: self.git_sha,
                "org.opencontainers.image.revision": self.git_sha,
                images.BASE_LABEL: self.base_image,
            },
            extra_ca_dir=_ca_dir(self.extra_ca_dir),
            say=ctx.reporter.line,
            status=ctx.reporter.status,
            platform=self.platform or None,
        )
        built = ctx.docker.images.get(self.image)
        if not images.is_for(built, self.platform):  # an engine that ignored the platform: the task would not start
            raise StepFailed(
                f"docker build made {self.image} for {images.platform_of(built)}, not {self.platform} "
                "([build] platform)",
                next_step=f"let the engine build for {self.platform} (Docker Desktop: enable emulation; Linux: "
                "install qemu-user-static and binfmt-support), or deploy from such a machine (CI)",
            )
        cached = f", {result.steps_cached}/{result.steps_total} steps from cache" if result.steps_total else ""
        return Outcome.done(f"{self.image} ({result.image_id[7:19]}{cached}){self._prune(ctx)}", image=self.image)

    def _prune(self, ctx: Context) -> str:
        """The older builds of this image's repository removed from the engine ([build] keep_local_images), at
        most once a day (a stamp in the cache; without a cache, after each build); said in the step's detail."""
        if not self.keep_local:
            return ""
        repository = self.image.rsplit(":", 1)[0]
        root = cache_root()
        folder = root / "local-builds" / repository.replace("/", "_") if root is not None else None
        if folder is not None:
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except OSError:
                folder = None
        if folder is not None and not prune_due(folder, ctx.clock.now().timestamp()):
            return ""
        removed = images.prune_builds(ctx.docker, repository, self.keep_local, self.image, PRUNED_PER_BUILD)
        if len(removed) == PRUNED_PER_BUILD and folder is not None:  # more left (a first prune): the next build goes on
            (folder / PRUNE_STAMP).unlink(missing_ok=True)
        if not removed:
            return ""
        return (
            f"; {len(removed)} tag(s) of older builds removed from this engine (keep_local_images = {self.keep_local})"
        )


@dataclass(frozen=True)
class PushImage(Step):
    """Push the built image to the environment's repository, unless the tag is already there."""

    name: ClassVar[str] = "push"
    uses_docker: ClassVar[bool] = True
    artifacts_only: ClassVar[bool] = True  # the step after it may read what is live meanwhile
    local_image: str
    repository: str  # registry/repository, no tag; "" when the repository is created by an earlier step
    tag: str
    platform: str = "linux/amd64"  # what the image is built for ([build] platform); "": not checked
    base_image: str = ""  # what the environment's image is built FROM (Config.base_image_for); "": not checked

    @property
    def remote(self) -> str:
        return f"{self.repository or '<ECR repository>'}:{self.tag}"

    def describe(self) -> str:
        return f"push {self.local_image} → {self.remote}"

    def interrupted(self) -> str:
        return "a push that did not finish tags nothing in the registry; layers already sent are reused next time"

    def run(self, ctx: Context) -> Outcome:
        if not self.repository:  # created by an earlier step of this plan (deploy.full's registry stack)
            return replace(self, repository=registry.repository_uri(ctx.aws)).run(ctx)
        client = ctx.docker
        auth = registry.push_auth(ctx.aws)
        existing = images.remote_image(client, self.remote, auth)
        if existing:
            digest, platforms = existing
            if self.platform and platforms and self.platform not in platforms:  # pushed from another machine
                # a state to fix, not a failure a rerun may pass (exit 2, nothing pushed), as promotion says it
                raise UsageError(
                    f"{self.remote} is in the registry for {', '.join(platforms)}, not for {self.platform} ([build] "
                    "platform, what the task definition runs): a task would not start from it, and ECR keeps a "
                    "tag's image (the registry stack's tags are immutable); nothing was pushed",
                    next_step="commit again (a new commit is a new tag) and deploy that",
                )
            in_registry_now(ctx.aws).add(self.remote)
            return Outcome.skipped(f"{self.remote} is already in the registry ({digest[:19]})", digest=digest)
        held = images.local_image(client, self.local_image)
        if held is None:
            raise UsageError(f"image {self.local_image} has not been built here", next_step="run: inv build")
        # another environment pushing to a repository of the same name builds the same local tag (build.local_image),
        # for another platform or FROM another base (the sandbox's local one): not this environment's image, which
        # the registry would keep under the tag for good (its tags are immutable; later pushes skip it)
        base = images.labels_of(held).get(images.BASE_LABEL)
        other = (
            f"for {images.platform_of(held)}, not {self.platform}"
            if not images.is_for(held, self.platform)
            else f"FROM {base or 'a base it does not name'}, not {self.base_image}"
            if self.base_image and base != self.base_image
            else ""
        )
        if other:
            raise UsageError(
                f"image {self.local_image} here is built {other}: another environment's build of the same tag; "
                "nothing was pushed",
                next_step=f"build it for this environment first: inv build --env {ctx.env.name}, then push",
            )
        ctx.refuse_ahead()  # a revision of it that register-taskdef would refuse: not pushed either
        client.api.tag(self.local_image, self.repository, self.tag)
        pushed = images.push_image(
            client,
            repository=self.repository,
            tag=self.tag,
            auth=auth,
            say=ctx.reporter.line,
            status=ctx.reporter.status,
        )
        confirmed = images.remote_digest(client, self.remote, auth)
        if confirmed != pushed.digest:
            raise StepFailed(
                f"the registry reports digest {confirmed} for {self.remote}, but the push reported {pushed.digest}",
                next_step="someone pushed the same tag concurrently; check the registry, then rerun: inv push",
            )
        in_registry_now(ctx.aws).add(self.remote)
        return Outcome.done(f"{self.remote} {pushed.digest[:19]} ({pushed.size} B manifest)", digest=pushed.digest)


@dataclass(frozen=True)
class PromoteImage(Step):
    """Copy the image the ``source`` environment (``promote_from``) runs into this environment's repository, byte
    for byte (deploykit.oci): this environment then runs the very image its source proved, under its tag, and
    nothing is built (no Docker engine needed). The build and push of the chain, for a promoted environment."""

    name: ClassVar[str] = "promote-image"
    artifacts_only: ClassVar[bool] = True  # the step after it may read what is live meanwhile
    source: str  # the environment the image comes from
    tag: str  # the tag it runs there (its commit)
    repository: str  # this environment's registry/repository, no tag; "": created by an earlier step
    platform: str = "linux/amd64"  # what the task definition runs ([build] platform); "": not checked

    @property
    def remote(self) -> str:
        return f"{self.repository or '<ECR repository>'}:{self.tag}"

    def describe(self) -> str:
        return f"copy the image {self.source} runs ({self.tag}) → {self.remote}"

    def interrupted(self) -> str:
        return "a copy that did not finish tags nothing in the registry; blobs already copied are not sent again"

    def run(self, ctx: Context) -> Outcome:
        if not self.repository:  # created by an earlier step of this plan (deploy.full's registry stack)
            return replace(self, repository=registry.repository_uri(ctx.aws)).run(ctx)
        if ctx.aws_of is None:
            raise ValueError("PromoteImage needs Context.aws_of (the source environment's AWS)")
        source_aws = ctx.aws_of(self.source)
        source_uri = registry.repository_uri(source_aws)
        source_host, source_repository = images.split_registry(source_uri)
        target_host, target_repository = images.split_registry(self.repository)
        copied = oci.copy_image(
            oci.Registry(source_host, registry.credentials(source_aws)),
            source_repository,
            oci.Registry(target_host, registry.credentials(ctx.aws)),
            target_repository,
            self.tag,
            platform=self.platform,
            say=ctx.reporter.line,
            status=ctx.reporter.status,
            sleep=ctx.clock.sleep,
            before=ctx.refuse_ahead,  # a revision of it that register-taskdef would refuse: not copied either
        )
        in_registry_now(ctx.aws).add(self.remote)  # copied, or there already
        if copied.already:
            return Outcome.skipped(
                f"{self.remote} is already {self.source}'s image ({copied.digest[:19]})", digest=copied.digest
            )
        if copied.there:
            return Outcome.skipped(
                f"{self.remote} is already in the registry, built apart ({copied.there[:19]}; {self.source} runs "
                f"{copied.digest[:19]}): kept, tags being immutable",
                digest=copied.there,
            )
        mb = copied.sent_bytes / 1e6
        return Outcome.done(
            f"{source_uri}:{self.tag} → {self.remote} {copied.digest[:19]} ({copied.sent} blob(s) copied, {mb:.1f} "
            f"MB; {copied.mounted} mounted; {copied.present} already there)",
            digest=copied.digest,
        )


def in_registry_now(aws: AwsFactory) -> set[str]:
    """The images (``repository:tag``) this command's push or copy left in the environment's registry, or found
    there: register-taskdef need not ask the registry for them again (one round trip after the push)."""
    return aws.shared(_in_registry_now)


def _in_registry_now(aws: AwsFactory) -> set[str]:
    return set()


def image_in_registry(aws: AwsFactory, repository: str, tag: str) -> bool:
    """Whether ``repository:tag`` is in the environment's registry (known without asking when this command's push or
    copy put it there or found it, :func:`in_registry_now`): ECR asked by the repository's name (DescribeImages), a
    plain registry through its API at ``repository`` (``host/path``: no Docker engine needed)."""
    if f"{repository}:{tag}" in in_registry_now(aws):
        return True
    env = aws.env
    if env.registry:
        host, path = images.split_registry(repository)
        return oci.Registry(host).manifest(path, tag) is not None
    try:
        aws.client("ecr").describe_images(repositoryName=env.repository, imageIds=[{"imageTag": tag}])
    except ClientError as exc:
        if exc.response["Error"]["Code"] == "RepositoryNotFoundException":
            raise registry.no_repository(env) from None
        if exc.response["Error"]["Code"] != "ImageNotFoundException":
            raise
        return False
    return True


def app_left(records: Iterable[StepRecord]) -> dict[str, dict[str, str]]:
    """``{"app": {"taskdef": ARN}}``: the task definition a run's register-taskdef step left the service on (among
    ``records``, groups' steps too), for its history record; the live record keeps it, so a later read that finds
    the service on that revision knows its image without describing it (a revision never changes). {} without one."""
    for record in all_records(records):
        if record.step == RegisterTaskDef.name and record.outputs.get("task_definition"):
            return {"app": {"taskdef": record.outputs["task_definition"]}}
    return {}


@dataclass(frozen=True)
class RegisterTaskDef(Step):
    """A new task-definition revision: the service's current one with only our container's image changed."""

    name: ClassVar[str] = "register-taskdef"
    changes_what_runs: ClassVar[bool] = False  # a revision no service runs yet
    cluster: str
    service: str
    container: str
    repository: str
    tag: str
    git_sha: str
    # what the image is built for ([build] platform), checked against the task definition's; "" (a rollback to an
    # image that ran here before): not checked
    platform: str = ""
    # in express mode, made from the revision the Fargate stack holds (_base); False (a rollback, which puts back
    # what ran): from the one the service runs, said when the stack holds a newer one
    from_stack: bool = True
    # the revision to make it from, whatever the service runs: the automatic rollback's, what ran before the run
    base: str = ""

    @property
    def image(self) -> str:
        return f"{self.repository}:{self.tag}"

    def describe(self) -> str:
        return f"task definition of {self.service} with {self.container} = {self.image}"

    def early(self, ctx: Context) -> Callable[[], Any] | None:
        return partial(self._early, ctx)

    def _early(self, ctx: Context) -> dict[str, Any]:
        """:meth:`_live`, then whether what the new revision names exists (:meth:`_references`): both beside the
        image's build."""
        read = self._live(ctx)
        return {**read, "references": self._references(ctx, read)}

    def refuse_early(self, ctx: Context, found: Any) -> None:
        """What :meth:`run` refuses before it registers (a service it could not roll, an image for another platform
        than the tasks', a revision naming what does not exist), judged by its early reads: raised before the push,
        which then leaves no image in the registry that no revision was made for."""
        self._refuse(ctx, found, lambda _kind, _key: False)

    def _refuse(self, ctx: Context, found: Mapping[str, Any], made: Callable[[str, str], bool]) -> None:
        """What :meth:`run` refuses, judged by its reads ``found`` (:meth:`_early`); a missing reference that ``made``
        (a stack deployed before the step could make it) passed over."""
        base = self._runnable(ctx, found)[1]
        references.refuse_missing(
            found["references"].keeping(lambda kind, key: not made(kind, key)), self.service, base
        )

    def preflight(self, ctx: Context, before: tuple[Step, ...]) -> None:
        """What :meth:`refuse_early` refuses, judged before the run's first change when stacks deploy before the step
        (deploy.auto of the data stack and the app): refused then, nothing changed, where the step would refuse once
        they were deployed and the image pushed. Not when the Fargate stack is among them: the new revision is then
        made from what that stack registers, which its own check judges. What a stack before it could make
        (:func:`deploykit.references.could_make`: a parameter of that name...) is left to the step's own check."""
        earlier = references.earlier_stacks(before)
        if not earlier or any(stack.stack == ctx.env.stacks.fargate for stack in earlier):
            return  # none: the early reads judge it before the push (Context.refuse_ahead)
        made = references.could_make(earlier, region=ctx.env.region, account=ctx.aws.account())
        self._refuse(ctx, self._early(ctx), made)

    def _runnable(self, ctx: Context, read: Mapping[str, Any]) -> tuple[str, str]:
        """The revision the new one is made from and what the step's detail says of it (:meth:`_base`), once it is
        known that roll-service could point the service at the new one and that its tasks run on the image's
        platform: else UsageError, before anything is registered."""
        ecs.refuse_unrollable(read["service"], self.cluster, ctx.env)
        current_arn, base = self._base(read, ctx.env.stacks.fargate)
        runs = ecs.cpu_architecture(ecs.TaskDefinitions.of(ctx.aws).get(current_arn))
        if self.platform and runs is not None and runs != PLATFORMS[self.platform]:
            raise UsageError(
                f"the task definition of {self.service} ({ecs.revision_name(current_arn)}) runs on {runs}, but the "
                f"image is built for {self.platform} ([build] platform): its tasks would not start",
                next_step=f"the Fargate stack puts the tasks on [build] platform's architecture: deploy it with this "
                f"image (inv deploy.auto, after a commit changing the setting), or set [build] platform = "
                f"{_platform_for(runs)!r} if the service is to stay on {runs}",
            )
        return current_arn, base

    def _references(self, ctx: Context, read: Mapping[str, Any]) -> references.Findings:
        """Whether the secrets, roles, log groups and environment files of the revision the new one is made from
        exist (the new one names the same: only the image changes), read at once."""
        base = self._base(read, ctx.env.stacks.fargate)[0]
        return references.check_revision(ctx.aws, base, ecs.TaskDefinitions.of(ctx.aws).get(base))

    def _live(self, ctx: Context, **more: Callable[[], Any]) -> dict[str, Any]:
        """The service (kept for roll-service, which starts from it), then at once the revision it runs (described
        once per command), the newest of its family, in express mode the one the Fargate stack holds
        (:meth:`_base`), and ``more``: two round trips."""
        service = ecs.services(ctx.aws).read((self.cluster, self.service))
        taskdefs = ecs.TaskDefinitions.of(ctx.aws)
        current_arn = service["taskDefinition"]
        reads: dict[str, Callable[[], Any]] = {
            "current": partial(taskdefs.get, current_arn),
            "latest": partial(taskdefs.latest, ecs.family_of(current_arn)),
            **more,
        }
        if not self.base and ctx.env.stack_mode == "express":
            cfn = ctx.aws.client("cloudformation")
            reads["held"] = partial(stacks.held_task_definition, cfn, ctx.env.stacks.fargate)
        return {"service": service, **at_once(reads)}

    def _base(self, read: Mapping[str, Any], stack: str) -> tuple[str, str]:
        """The revision the new one is made from, and what the step's detail says of it. ``base`` when given (the
        automatic rollback: what ran before the run). Else, in express mode, the one the Fargate stack holds: its
        template's settings with our image. An express update whose rollout failed leaves the service on an older
        revision (CloudFormation kept the stack's new template, ECS's circuit breaker put the older one back), and an
        automatic rollback after it puts back what ran: made from what the service runs, the new revision would drop
        what the template changed (an environment variable, a size, a role) for good, since no later stack deploy
        puts it back (its change set is empty). Where the service runs the stack's revision or one made from it, the
        result is the same. A rollback (not ``from_stack``) puts back what ran, and says what it leaves out."""
        current, held = str(read["service"]["taskDefinition"]), str(read.get("held") or "")
        runs = ecs.revision_name(current)
        if self.base:
            return self.base, f"{ecs.revision_name(self.base)}: what ran before"
        if not held or held == current or ecs.family_of(held) != ecs.family_of(current):
            return current, runs
        failed = ecs.is_older(current, held)
        if self.from_stack:
            why = f"; the service runs {runs}, its express rollout failed" if failed else ""
            return held, f"{ecs.revision_name(held)}, which {stack} holds{why}"
        if not failed:
            return current, runs
        return current, (
            f"{runs}; {stack} holds {ecs.revision_name(held)}, which this rollback leaves out: the next deploy makes "
            "its revision from it, inv rollback --component stack:fargate puts the stack back too"
        )

    def run(self, ctx: Context) -> Outcome:
        client = ctx.aws.client("ecs")
        pushed = partial(image_in_registry, ctx.aws, self.repository, self.tag)  # needed only to register
        # read while the image was built and pushed; else now, the registry asked beside the revisions
        read = ctx.early_reads(self) or self._live(ctx, pushed=pushed)
        current_arn, base = self._runnable(ctx, read)
        taskdefs = ecs.TaskDefinitions.of(ctx.aws)
        wanted = ecs.derive_registration(
            taskdefs.get(current_arn), taskdefs.tags(current_arn), self.container, self.image, self.git_sha
        )
        candidates = [str(read["service"]["taskDefinition"])]  # a revision it runs, or the newest: nothing to register
        latest = read["latest"]
        if latest and latest not in candidates:
            candidates.append(latest)
        for arn in candidates:
            existing = ecs.derive_registration(
                taskdefs.get(arn), [], self.container, taskdefs.image(arn, self.container), ""
            )
            if ecs.same_registration(existing, wanted):
                if arn == latest:
                    taskdefs.chosen(arn, self.container, self.image)
                return Outcome.skipped(f"{ecs.revision_name(arn)} already runs {self.tag}", task_definition=arn)
        if not (read["pushed"] if "pushed" in read else pushed()):  # nothing would run it
            raise UsageError(
                f"image {self.image} is not in the registry of environment {ctx.env.name!r}",
                next_step="build and push it first: inv build push",
            )
        found = read["references"] if "references" in read else self._references(ctx, read)
        references.refuse_missing(found, self.service, base)  # no task of it would start
        arn = taskdefs.remember(client.register_task_definition(**wanted))["taskDefinitionArn"]
        taskdefs.chosen(arn, self.container, self.image)  # roll-service points the service at it
        return Outcome.done(
            f"registered {ecs.revision_name(arn)} (from {base}){references.said_unchecked(found)}",
            task_definition=arn,
        )


@dataclass(frozen=True)
class RollService(Step):
    """Point the service at the newest revision that runs our image."""

    name: ClassVar[str] = "roll-service"
    cluster: str
    service: str
    container: str
    image: str

    def describe(self) -> str:
        return f"update service {self.service} to the revision running {self.image.rsplit(':', 1)[-1]}"

    def interrupted(self) -> str:
        return (
            f"if the update call was made, ECS goes on rolling {self.service} to {self.image} on its own (its "
            "circuit breaker rolls a bad release back); the old tasks serve until the new ones are healthy"
        )

    def run(self, ctx: Context) -> Outcome:
        client = ctx.aws.client("ecs")
        service = ecs.services(ctx.aws).take((self.cluster, self.service))  # as register-taskdef read it
        ecs.refuse_unrollable(service, self.cluster, ctx.env)  # UpdateService would refuse it: said before
        taskdefs = ecs.TaskDefinitions.of(ctx.aws)
        primary = ecs.primary_deployment(service)
        previous = service["taskDefinition"]
        # the revision register-taskdef chose, when not the one the service runs: in express mode, the one the
        # Fargate stack holds, whose settings the service's revision of the same image lacks (its rollout failed)
        chosen = taskdefs.chosen_revision(ecs.family_of(previous), self.container, self.image)
        runs = primary and (
            primary["taskDefinition"] == chosen
            if chosen
            else taskdefs.image(primary["taskDefinition"], self.container) == self.image
        )
        if primary and runs:
            return Outcome.skipped(
                f"PRIMARY deployment already runs {ecs.revision_name(primary['taskDefinition'])}",
                task_definition=primary["taskDefinition"],
            )
        family = taskdefs.get(previous)["family"]
        target = chosen or taskdefs.latest_with_image(family, self.container, self.image)
        if target is None:
            raise UsageError(
                f"no ACTIVE revision of task definition family {family!r} runs {self.image}",
                next_step="register one first: inv register-taskdef",
            )
        # what ran before, for an automatic rollback (deploykit.rollback.undo_plan): also when the update's answer
        # was lost, as ECS may have taken it (a rollback to what already runs registers and rolls nothing)
        before = {"previous_task_definition": previous, "previous_image": taskdefs.image(previous, self.container)}
        try:
            answer = ecs.update_service(client, self.cluster, self.service, ctx.env, taskDefinition=target)
        except BaseException as exc:
            if maybe_applied(exc):
                carry(exc, [], before)
            raise
        deployment = ecs.primary_deployment(answer["service"]) or {}
        return Outcome.done(
            f"{self.service} → {ecs.revision_name(target)} (deployment {deployment.get('id', '?')})",
            task_definition=target,
            **before,
        )


@dataclass(frozen=True)
class WaitHealthy(Step):
    """Wait until the new revision is PRIMARY, COMPLETED, fully running and healthy behind the ALB."""

    name: ClassVar[str] = "wait-healthy"
    changes_what_runs: ClassVar[bool] = False  # a wait
    cluster: str
    service: str
    container: str
    image: str
    timeout: float
    poll: float

    def describe(self) -> str:
        return (
            f"wait for {self.service} to run {self.image.rsplit(':', 1)[-1]}: PRIMARY, COMPLETED, "
            f"targets healthy (deadline {self.timeout:.0f}s, poll {self.poll:g}s)"
        )

    def interrupted(self) -> str:
        return f"only the waiting stopped: ECS goes on with the rollout of {self.service} on its own"

    def run(self, ctx: Context) -> Outcome:
        verdict, last_line = await_rollout(
            ctx, self.cluster, self.service, self.container, self.image, self.timeout, self.poll
        )
        if verdict.state == "healthy":
            return Outcome.done(f"healthy: {verdict.summary}")
        message = f"{self.service} did not become healthy on {self.image.rsplit(':', 1)[-1]}: {verdict.reason}"
        failure = RolledBackByEcs if verdict.rolled_back_by_ecs else UsageError if verdict.not_asked else StepFailed
        raise failure(message + last_line, next_step=_wait_next_step(verdict.reason, self.cluster, self.service))


def await_rollout(
    ctx: Context,
    cluster: str,
    service: str,
    container: str,
    image: str,
    timeout: float,
    poll: float,
    deployment: str = "",
    since: datetime | None = None,
) -> tuple[ecs.Verdict, str]:
    """Wait for the rollout of ``image`` (or of ``deployment``, by id: a restart) with the step's reporter; the
    verdict, and for a failure the last line the task that explains it wrote (its last lines shown; "" when it
    wrote none), for the failure's message to end with. ``since``: what counts starts then (a wake:
    :meth:`ecs.RolloutWaiter.wait`)."""
    taskdefs = ecs.TaskDefinitions.of(ctx.aws)
    waiter = ecs.RolloutWaiter(
        ctx.aws.client("ecs"),
        ctx.aws.client("elbv2"),
        ctx.clock,
        say=ctx.reporter.line,
        status=ctx.reporter.status,
        taskdefs=taskdefs,
        env=ctx.env,
    )
    verdict = waiter.wait(
        cluster=cluster,
        service=service,
        container=container,
        image=image,
        timeout=timeout,
        poll=poll,
        deployment=deployment,
        since=since,
    )
    if verdict.state == "healthy":
        return verdict, ""
    return verdict, _shown_task_log(ctx, waiter.last, taskdefs, container)


def events_command(cluster: str, service: str) -> str:
    """The command that shows the service's newest events."""
    return f"aws ecs describe-services --cluster {cluster} --services {service} --query 'services[0].events[:10]'"


def _shown_task_log(ctx: Context, snapshot: ecs.Snapshot | None, taskdefs: ecs.TaskDefinitions, container: str) -> str:
    """Show what the task that explains a failed rollout (the last to stop, else the newest running) wrote last,
    when its container logs to CloudWatch Logs (awslogs); the failure's message ends with the last line returned
    ("" when there is none)."""
    task = ecs.task_to_explain(snapshot) if snapshot is not None else None
    if task is None:
        return ""
    try:
        definition = taskdefs.get(task["taskDefinitionArn"])
    except (ClientError, BotoCoreError):  # the task definition is cached from the polls; never hide the failure
        return ""
    task_log = ecs.container_log(ctx.aws.client("logs"), definition, container, task["taskArn"])
    if task_log is None:
        return ""
    ecs.show_task_log(ctx.reporter.line, task_log, container)
    return ecs.last_line(task_log)


def _wait_next_step(reason: str, cluster: str, service: str) -> str:
    if "not rolling out" in reason:
        return "roll it first: inv roll-service"
    logs = events_command(cluster, service)
    if ecs.NO_TASK_WANTED in reason:
        return (
            f"scale it up (aws ecs update-service --cluster {cluster} --service {service} --desired-count N; the "
            "autoscaling's minimum, if it has one), then rerun"
        )
    if "deadline" in reason:
        return f"look at the service events ({logs}); rerun inv wait-healthy to keep waiting"
    return f"fix the release (the old version keeps serving), then rerun; events: {logs}"


def _platform_for(architecture: str) -> str:
    return next((name for name, arch in PLATFORMS.items() if arch == architecture), architecture)
