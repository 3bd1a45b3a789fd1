"""``inv images.cleanup``: delete old images from the environment's ECR repository, never one that may be needed.

An image is kept when any of these holds (every kept image says which):

- it is one of the ``keep`` newest tagged images (by ``imagePushedAt``; images pushed at the same moment as the
  ``keep``-th are all kept, so the result never depends on the order ECR lists them in);
- it is **in use** (:func:`images_in_use`): run by a task definition of the ECS service's current deployments
  (PRIMARY, ACTIVE, whatever ECS lists), or by one of the newest :data:`ROLLBACK_REVISIONS` ACTIVE revisions of
  the service's task-definition family, so a rollback target stays, or by a task definition the Fargate stack
  holds, which a CloudFormation rollback puts the service back on;
- it is **recorded** (:func:`recorded_images`): its tag is the ``app`` SHA of one of the newest
  :data:`HISTORY_RECORDS` deployment records of any environment of deploy.toml (deployed there, or live there
  before that deploy), of an environment's live record, or of a deploy ``inv rollback`` may go back to there (the
  app's newest two successful deploys, by commit, of the newest :data:`deploykit.history.ROLLBACK_DEPTH` records,
  as many as it reads: :func:`deploykit.history.rollback_targets`). Tags are ``<sha12>`` or
  ``<sha12>-dirty-<hash>``;
- it is an untagged image pushed less than :data:`UNTAGGED_GRACE` ago (a push may still be under way, and the
  registry stack's lifecycle rule waits as long), or a platform image of a kept image index.

Everything else is deleted: older tagged images, and untagged ones (manifest leftovers; they never count among
the newest). :func:`plan_cleanup` decides and reads nothing; the readers and :func:`delete_images` talk to AWS.
Sizes are ``imageSizeInBytes``: the compressed size ECR reports (and bills storage by), layers shared between
images counted in each, so the space really freed can be less.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

import botocore.exceptions
from botocore.exceptions import ClientError

from deploykit import ecs, taskdef_cleanup
from deploykit.aws import AwsFactory, answered, at_once, translate_error
from deploykit.config import Config, EnvConfig, may_be_together
from deploykit.errors import DeployKitError, StepFailed, UsageError
from deploykit.git import DIRTY, SHORT_SHA, is_sha
from deploykit.history import History
from deploykit.images import split_registry
from deploykit.lock import STOPPED, LockLost, lost_lease
from deploykit.output import age, tabulate
from deploykit.stacks import is_transient

DEFAULT_KEEP = 10
ROLLBACK_REVISIONS = 5
HISTORY_RECORDS = 30
UNTAGGED_GRACE = timedelta(days=1)
DELETE_BATCH = 100  # BatchDeleteImage takes at most 100 image ids
INDEX_MEDIA_TYPES = frozenset(
    {
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
    }
)


# -- the decision (pure) ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Image:
    """One image of the repository, as DescribeImages details it."""

    digest: str
    tags: tuple[str, ...]
    pushed_at: datetime
    size: int  # imageSizeInBytes: compressed, as ECR reports it
    media_type: str = ""

    @classmethod
    def from_ecr(cls, detail: Mapping[str, Any]) -> Image:
        pushed = detail.get("imagePushedAt")
        if isinstance(pushed, int | float):
            pushed = datetime.fromtimestamp(pushed, UTC)
        if not isinstance(pushed, datetime):
            pushed = datetime.fromtimestamp(0, UTC)
        if pushed.tzinfo is None:
            pushed = pushed.replace(tzinfo=UTC)
        return cls(
            digest=str(detail["imageDigest"]),
            tags=tuple(sorted(str(t) for t in detail.get("imageTags") or ())),
            pushed_at=pushed.astimezone(UTC),
            size=int(detail.get("imageSizeInBytes") or 0),
            media_type=str(detail.get("imageManifestMediaType") or ""),
        )

    @property
    def short_digest(self) -> str:
        algorithm, _, hexdigest = self.digest.partition(":")
        return f"{algorithm}:{hexdigest[:12]}" if hexdigest else self.digest[:19]


@dataclass(frozen=True)
class Choice:
    """What happens to one image, and why."""

    image: Image
    delete: bool
    reasons: tuple[str, ...]


@dataclass(frozen=True)
class Decision:
    """Every image of the repository, newest first, each kept or deleted with its reasons."""

    choices: tuple[Choice, ...]
    keep: int

    @property
    def to_delete(self) -> tuple[Image, ...]:
        return tuple(c.image for c in self.choices if c.delete)

    @property
    def kept(self) -> tuple[Choice, ...]:
        return tuple(c for c in self.choices if not c.delete)

    @property
    def bytes_to_free(self) -> int:
        return sum(image.size for image in self.to_delete)

    def why(self, digest: str) -> tuple[str, ...]:
        for choice in self.choices:
            if choice.image.digest == digest:
                return choice.reasons
        raise KeyError(digest)


def tag_key(tag_or_sha: str) -> str:
    """The form a tag and a recorded SHA are compared in: ``<sha12>`` or ``<sha12>-dirty-<hash>``.

    A full 40-character SHA and its 12-character tag are the same commit; a dirty tag is another image than
    its commit's clean one, and matches only itself.
    """
    value = tag_or_sha.strip()
    sha, dirty, rest = value.partition(DIRTY)
    if is_sha(sha, least=12):
        sha = sha[:SHORT_SHA]
    return f"{sha}{dirty}{rest}"


def plan_cleanup(
    images: Iterable[Mapping[str, Any] | Image],
    *,
    keep: int,
    in_use: Mapping[str, str],
    recorded: Mapping[str, str],
    parts: Mapping[str, Sequence[str]] | None = None,
    now: datetime | None = None,
) -> Decision:
    """Decide which images to delete; every image gets its reasons.

    ``images``: DescribeImages ``imageDetails`` (or :class:`Image`). ``in_use``: image tag or digest → why it is
    in use ("in use by car-rental-backend:12 (PRIMARY)"). ``recorded``: SHA or tag (any length of SHA, dirty
    tags as they are) → why ("deployed in dev at ..."). ``parts``: digest of an image index → the digests of
    its platform images (kept with their index). ``now``: for the untagged grace period (default: now).
    """
    if keep < 1:
        raise ValueError("keep must be at least 1")
    now = now or datetime.now(UTC)
    found = [i if isinstance(i, Image) else Image.from_ecr(i) for i in images]
    unique = {i.digest: i for i in found}  # an image listed twice (once per tag by some ECRs) is one image
    ordered = sorted(unique.values(), key=lambda i: (-i.pushed_at.timestamp(), i.tags, i.digest))
    recorded_keys: dict[str, list[str]] = {}
    for sha, why in recorded.items():
        recorded_keys.setdefault(tag_key(sha), []).append(why)
    reasons: dict[str, list[str]] = {i.digest: [] for i in ordered}

    tagged = [i for i in ordered if i.tags]
    if tagged:
        cutoff = tagged[min(keep, len(tagged)) - 1].pushed_at
        newest = [i for i in tagged if i.pushed_at >= cutoff]
        for image in newest:
            tied = len(newest) > keep and image.pushed_at == cutoff
            reasons[image.digest].append(f"newest {keep}" + (" (tied: pushed with the last of them)" if tied else ""))
    for image in ordered:
        mine = reasons[image.digest]
        for ref in (image.digest, *image.tags):
            if ref in in_use and in_use[ref] not in mine:
                mine.append(in_use[ref])
        for tag in image.tags:
            for why in recorded_keys.get(tag_key(tag), ()):
                if why not in mine:
                    mine.append(why)
        if not image.tags and now - image.pushed_at < UNTAGGED_GRACE:
            mine.append(f"untagged, pushed less than {age(UNTAGGED_GRACE)} ago (a push may be under way)")
    for index, children in (parts or {}).items():
        if reasons.get(index):
            label = next(iter(unique[index].tags), unique[index].short_digest)
            for child in children:
                if child in reasons and not reasons[child]:
                    reasons[child].append(f"platform image of {label}")

    choices = []
    for image in ordered:
        found_reasons = reasons[image.digest]
        if found_reasons:
            choices.append(Choice(image, False, tuple(found_reasons)))
        elif image.tags:
            choices.append(Choice(image, True, (f"older than the newest {keep}, not in use, not recorded",)))
        else:
            choices.append(Choice(image, True, (f"untagged, pushed {age(now - image.pushed_at)} ago, not in use",)))
    return Decision(tuple(choices), keep)


# -- the readers ------------------------------------------------------------------------------------------------


def repository_images(aws: AwsFactory) -> list[dict[str, Any]]:
    """Every image of the environment's repository (DescribeImages, every page)."""
    env = aws.env
    details: list[dict[str, Any]] = []
    paginator = aws.client("ecr").get_paginator("describe_images")
    try:
        for page in paginator.paginate(repositoryName=env.repository):
            details += [dict(d) for d in page.get("imageDetails") or ()]
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") == "RepositoryNotFoundException":
            raise UsageError(
                f"ECR repository {env.repository!r} does not exist in environment {env.name!r}",
                next_step=f"check 'repository' in deploy.toml, or deploy the registry stack: "
                f"inv deploy.stack {env.stacks.registry} --env {env.name}",
            ) from None
        raise
    return details


def index_parts(aws: AwsFactory, images: Sequence[Mapping[str, Any]]) -> dict[str, list[str]]:
    """Digest of each image index (multi-platform image) → the digests of its platform images. An index ECR did not
    give (a failure in BatchGetImage's answer: KmsError...) stops the cleanup before anything is deleted (StepFailed):
    its platform images would otherwise look like untagged leftovers, to be deleted under a kept index. One deleted
    since it was listed (ImageNotFound: the lifecycle rule, another cleanup) keeps nothing: passed over."""
    indexes = [str(d["imageDigest"]) for d in images if d.get("imageManifestMediaType") in INDEX_MEDIA_TYPES]
    found: dict[str, list[str]] = {}
    ecr = aws.client("ecr")
    for start in range(0, len(indexes), DELETE_BATCH):
        answer = ecr.batch_get_image(
            repositoryName=aws.env.repository,
            imageIds=[{"imageDigest": d} for d in indexes[start : start + DELETE_BATCH]],
            acceptedMediaTypes=sorted(INDEX_MEDIA_TYPES),
        )
        for failure in answer.get("failures") or ():
            if failure.get("failureCode") == "ImageNotFound":  # deleted since it was listed: no index to keep
                continue
            digest = str((failure.get("imageId") or {}).get("imageDigest") or "?")
            raise StepFailed(
                f"ECR did not give the image index {digest[:19]}… of {aws.env.repository} "
                f"({failure.get('failureCode')}: {failure.get('failureReason')}): the platform images it holds cannot "
                "be told from untagged leftovers; nothing was deleted",
                next_step=f"rerun inv images.cleanup --env {aws.env.name}; if it persists: aws ecr batch-get-image "
                f"--repository-name {aws.env.repository} --image-ids imageDigest={digest}",
            )
        for image in answer.get("images") or ():
            manifest = json.loads(image.get("imageManifest") or "{}")
            found[str(image["imageId"]["imageDigest"])] = [
                str(m["digest"]) for m in manifest.get("manifests") or () if m.get("digest")
            ]
    return found


def split_reference(reference: str) -> tuple[str, str | None, str | None]:
    """``host/path:tag@digest`` → (path without the registry host, tag, digest)."""
    rest, _, digest = reference.partition("@")
    head, slash, tail = rest.rpartition("/")
    name, colon, tag = tail.partition(":")
    path = split_registry(f"{head}{slash}{name}")[1]
    return path, (tag if colon else None), (digest or None)


def _names_repository(path: str, repository: str) -> bool:
    return path == repository or path.endswith(f"/{repository}")


def images_in_use(aws: AwsFactory, *, revisions: int = ROLLBACK_REVISIONS) -> dict[str, str]:
    """Image tags and digests of the environment's repository that ECS uses or may roll back to → why.

    Read: the task definitions of the service's current deployments (every one ECS lists: PRIMARY, ACTIVE,
    DRAINING) and its ``taskDefinition``, plus the newest ``revisions`` ACTIVE revisions of that task
    definition's family (rollback targets), and those the Fargate stack holds (a CloudFormation rollback puts the
    service back on them: :func:`deploykit.taskdef_cleanup.stack_revisions`, read with the service). Older ACTIVE
    revisions, other families and other services are not read. Every container of those task definitions counts,
    when its image is in this repository.
    A service that cannot be found is an error (a UsageError naming it): without it, nothing is known to be safe.
    """
    env = aws.env
    client = aws.client("ecs")
    reads: dict[str, Callable[[], Any]] = {
        "service": partial(ecs.describe_service, client, env.cluster, env.service, env),
        "stack": partial(taskdef_cleanup.stack_revisions, aws, env.stacks.fargate),
    }
    read = at_once(reads)
    service = read["service"]
    definitions = ecs.TaskDefinitions(client)
    users: list[tuple[str, str]] = []  # (task-definition ARN, why)
    for deployment in service.get("deployments") or ():
        arn = str(deployment.get("taskDefinition") or "")
        if arn:
            users.append((arn, f"in use by {ecs.revision_name(arn)} ({deployment.get('status', 'deployment')})"))
    if service.get("taskDefinition"):
        users.append(
            (str(service["taskDefinition"]), f"in use by {ecs.revision_name(service['taskDefinition'])} (service)")
        )
    current = next((arn for arn, _ in users), "")
    family = ecs.family_of(current)
    if family:
        for arn in newest_revisions(client, family, revisions):
            users.append((arn, f"rollback target {ecs.revision_name(arn)} (one of the newest {revisions} revisions)"))
    for arn in read["stack"]:
        why = f"held by {env.stacks.fargate} ({ecs.revision_name(arn)}): a stack rollback goes back to it"
        users.append((arn, why))
    found: dict[str, str] = {}
    for arn, why in users:
        for container in definitions.get(arn).get("containerDefinitions") or ():
            path, tag, digest = split_reference(str(container.get("image") or ""))
            if not _names_repository(path, env.repository):
                continue
            for ref in (tag, digest):
                if ref and ref not in found:
                    found[ref] = why
    return found


def newest_revisions(client: Any, family: str, count: int) -> list[str]:
    """The newest ``count`` ACTIVE revisions of exactly ``family``."""
    return ecs.active_revisions(client, family)[:count]


@dataclass(frozen=True)
class Recorded:
    """What the environments' histories say was deployed, and which environments could not be read."""

    shas: dict[str, str] = field(default_factory=dict)  # app SHA (tag form) → why
    skipped: dict[str, str] = field(default_factory=dict)  # environment → why its AWS could not be read
    without_history: tuple[str, ...] = ()  # environments read, with no history (registry stack not deployed)
    read: tuple[str, ...] = ()  # environments whose history was read
    # image tag or digest → why: what the services and Fargate stacks of the other environments sharing the
    # repository use or may roll back to (images_in_use, theirs)
    in_use: dict[str, str] = field(default_factory=dict)


def may_share(target: EnvConfig, env: EnvConfig) -> bool:
    """Whether ``env``'s repository may be ``target``'s: the same name, region and endpoint, in an account deploy.toml
    does not tell apart (the credentials' account then tells)."""
    return env.repository == target.repository and may_be_together(target, env)


def _shares(aws: AwsFactory, target_aws: AwsFactory) -> bool | None:
    """Whether the environment of ``aws`` holds its images in the target's repository: :func:`may_share`, and the same
    account (both pinned so in deploy.toml, or its credentials' account the target's); None when that cannot be told
    (its credentials cannot be had: another account's, most often). A failure AWS only had for now (throttled, a 5xx)
    is raised as it is: the caller's :func:`_stop_when_transient` stops the cleanup on it (a StepFailed raised here
    would be caught there as the environment's failure, and the environment skipped)."""
    target, env = target_aws.env, aws.env
    if not may_share(target, env):
        return False
    if target.account and env.account:
        return True  # may_share: the same one
    try:
        return aws.account() == target_aws.account()
    except (botocore.exceptions.BotoCoreError, ClientError, DeployKitError) as exc:
        if is_transient(exc):
            raise
        return None


def _sharing_in_use(aws: AwsFactory) -> dict[str, str]:
    """What the environment of ``aws``, whose repository is the target's (:func:`_shares`), uses or may roll back to
    (:func:`images_in_use`), each why naming it; {} when its service is not there (not deployed)."""
    try:
        found = images_in_use(aws)
    except UsageError:  # no such service: nothing of it runs
        return {}
    return {ref: f"{aws.env.name}: {why}" for ref, why in found.items()}


def recorded_images(
    config: Config,
    target: EnvConfig,
    aws_factory: Callable[[EnvConfig], AwsFactory],
    *,
    records: int = HISTORY_RECORDS,
    target_aws: AwsFactory | None = None,
) -> Recorded:
    """The ``app`` SHAs of every environment's newest ``records`` records (deployed, and live before), of its
    live record and of the deploys ``inv rollback`` may go back to there (:meth:`History.recorded`) → why.

    Each environment's history is found as :meth:`History.of` finds it. An environment whose AWS cannot be read
    (another account, no credentials, an endpoint down) is skipped and named in ``skipped``; the target
    environment's own history must be readable (its failure is raised), since its repository is being cleaned. So
    must everything of one whose repository is the target's (:func:`_shares`: the same account), whatever the
    failure (a refusal, a damaged live record), and of one that may share it when AWS only failed for now
    (throttled, a 5xx): StepFailed, nothing deleted. Of the environments sharing it, what their services and
    Fargate stacks use is read too (:attr:`Recorded.in_use`): their histories alone do not hold the revisions a
    stack rollback goes to.
    """
    reasons: dict[str, dict[str, str]] = {}  # key → env → why (the newest reason per environment)
    skipped: dict[str, str] = {}
    without: list[str] = []
    read: list[str] = []
    in_use: dict[str, str] = {}
    # the target may be one a pattern made (dev-alice): not among deploy.toml's own, read first all the same
    others = [config.environments[n] for n in sorted(config.environments) if n != target.name]
    own = target_aws if target_aws is not None else aws_factory(target)
    for env in [target, *others]:
        name = env.name
        if name == target.name:
            found = _history_shas(own, env, records)
        else:
            sharing: bool | None = None
            try:
                aws = aws_factory(env)
                sharing = _shares(aws, own)
                if sharing:  # its service's and stack's images, read whatever becomes of its history
                    in_use |= {ref: why for ref, why in _sharing_in_use(aws).items() if ref not in in_use}
                found = _history_shas(aws, env, records)
            except (botocore.exceptions.BotoCoreError, ClientError, DeployKitError) as exc:
                _stop_when_transient(exc, target, env)
                if sharing:
                    raise _unreadable(exc, target, env) from None
                skipped[name] = translate_error(exc, env).message
                continue
        if found is None:
            without.append(name)
            continue
        read.append(name)
        for sha, why in found:
            reasons.setdefault(tag_key(sha), {}).setdefault(name, why)
    shas = {key: "; ".join(by_env.values()) for key, by_env in reasons.items()}
    return Recorded(shas, skipped, tuple(without), tuple(read), in_use)


def _stop_when_transient(exc: Exception, target: EnvConfig, env: EnvConfig) -> None:
    """StepFailed (nothing deleted) when what ``env``, which may share the target's repository, needs could not be
    read for now (throttled, a 5xx): a rerun reads it."""
    if may_share(target, env) and is_transient(exc):
        raise StepFailed(
            f"what {env.name}, which may share repository {target.repository} with {target.name}, needs could not be "
            f"read ({translate_error(exc, env).message}): nothing was deleted",
            next_step=f"rerun in a while: inv images.cleanup --env {target.name}",
        ) from None


def _unreadable(exc: Exception, target: EnvConfig, env: EnvConfig) -> StepFailed:
    """The cleanup's stop when what ``env``, whose repository is the target's, runs or recorded cannot be read (a
    refusal, a damaged live record): the images it needs are not known, so none may go."""
    cause = translate_error(exc, env)
    rerun = f"inv images.cleanup --env {target.name}"
    return StepFailed(
        f"what {env.name}, which shares repository {target.repository} with {target.name} (the same account), needs "
        f"could not be read ({cause.message}): nothing was deleted",
        next_step=f"{cause.next_step}; then rerun: {rerun}"
        if cause.next_step
        else f"let these credentials read {env.name}'s service, Fargate stack and history, then rerun: {rerun}",
    )


def _history_shas(aws: AwsFactory, env: EnvConfig, records: int) -> list[tuple[str, str]] | None:
    """(app SHA, why) of one environment, newest first (:meth:`History.recorded`: with what ``inv rollback`` may go
    back to); None without a history."""
    history = History.of(aws, env)
    return None if history is None else history.recorded(["app"], records)["app"]


# -- deleting ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Deletion:
    """What BatchDeleteImage did: the digests deleted, and digest → the failure reported for it. ``gone``: those of
    ``deleted`` that were gone already (ImageNotFound: the registry's lifecycle rule, or another cleanup, first)."""

    deleted: tuple[str, ...]
    failed: dict[str, str]
    gone: tuple[str, ...] = ()
    stopped: LockLost | None = None  # the lock was lost: the images from the batch it was found lost are not done


ALREADY_GONE = "ImageNotFound"  # BatchDeleteImage's failure code for an image that is not there (any more)


def delete_images(aws: AwsFactory, images: Sequence[Image], holding: Callable[[], None] | None = None) -> Deletion:
    """BatchDeleteImage by digest (every tag of an image goes with it), in batches of 100. An image already gone
    counts as deleted (in ``gone``); a batch AWS refuses whole (throttled after its retries, access) is a failure
    of each of its images, and the next batch goes on: what was deleted before is always reported. ``holding``
    (the lease's check) is asked before each batch: once the lock is lost, the rest is not done (``stopped``)."""
    ecr = aws.client("ecr")
    deleted: list[str] = []
    gone_before: list[str] = []
    failed: dict[str, str] = {}
    digests = [image.digest for image in images]
    for start in range(0, len(digests), DELETE_BATCH):
        batch = digests[start : start + DELETE_BATCH]
        if (stopped := lost_lease(holding)) is not None:
            failed.update(dict.fromkeys(digests[start:], STOPPED))
            return Deletion(tuple(deleted), failed, tuple(gone_before), stopped)
        try:
            answer = ecr.batch_delete_image(
                repositoryName=aws.env.repository, imageIds=[{"imageDigest": d} for d in batch]
            )
        except (botocore.exceptions.BotoCoreError, ClientError) as exc:
            failed.update(dict.fromkeys(batch, answered(exc)))
            continue
        gone = {str(i.get("imageDigest")) for i in answer.get("imageIds") or ()}
        for failure in answer.get("failures") or ():
            digest = str((failure.get("imageId") or {}).get("imageDigest", ""))
            code, reason = failure.get("failureCode", "Unknown"), failure.get("failureReason", "")
            if code == ALREADY_GONE and digest in batch:
                gone_before.append(digest)
                continue
            failed[digest] = f"{code}: {reason}" if reason else str(code)
        for digest in batch:
            if digest in failed:
                continue
            try:
                there = (
                    digest not in gone and digest not in gone_before and _still_there(ecr, aws.env.repository, digest)
                )
            except (botocore.exceptions.BotoCoreError, ClientError) as exc:
                failed[digest] = f"not reported deleted, and could not be read again: {answered(exc)}"
                continue
            if there:
                failed[digest] = "not deleted, and no failure reported for it"
            else:
                deleted.append(digest)
    return Deletion(tuple(deleted), failed, tuple(gone_before))


def _still_there(ecr: Any, repository: str, digest: str) -> bool:
    """Whether an image BatchDeleteImage reported neither deleted nor failed is still there (moto leaves an
    untagged image out of its answer; ECR lists it)."""
    try:
        ecr.describe_images(repositoryName=repository, imageIds=[{"imageDigest": digest}])
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") == "ImageNotFoundException":
            return False
        raise
    return True


# -- output -----------------------------------------------------------------------------------------------------


def megabytes(size: int) -> str:
    return f"{size / 1_000_000:.1f} MB"


def action_of(choice: Choice, *, dry_run: bool, deletion: Deletion | None) -> str:
    if not choice.delete:
        return "keep"
    if dry_run or deletion is None:
        return "would delete"
    if choice.image.digest in deletion.failed:
        return "FAILED"
    return "deleted"


def table(decision: Decision, *, dry_run: bool, deletion: Deletion | None = None) -> str:
    rows = []
    for choice in decision.choices:
        image = choice.image
        why = "; ".join(choice.reasons)
        if deletion is not None and image.digest in deletion.failed:
            why = f"{deletion.failed[image.digest]} ({why})"
        elif deletion is not None and image.digest in deletion.gone:
            why = f"already gone (the registry's lifecycle rule, or another cleanup, deleted it first); {why}"
        rows.append(
            [
                ", ".join(image.tags) or "<untagged>",
                image.short_digest,
                image.pushed_at.strftime("%Y-%m-%d %H:%M"),
                megabytes(image.size),
                action_of(choice, dry_run=dry_run, deletion=deletion),
                why,
            ]
        )
    return tabulate(rows, headers=["tag(s)", "digest", "pushed (UTC)", "size", "action", "why"])


def to_json(
    decision: Decision, *, env: str, repository: str, dry_run: bool, deletion: Deletion | None, recorded: Recorded
) -> dict[str, Any]:
    deleted = set(deletion.deleted) if deletion else set()
    return {
        "env": env,
        "repository": repository,
        "keep": decision.keep,
        "dry_run": dry_run,
        "images": [
            {
                "digest": c.image.digest,
                "tags": list(c.image.tags),
                "pushed_at": c.image.pushed_at.isoformat(),
                "size_bytes": c.image.size,
                "action": action_of(c, dry_run=dry_run, deletion=deletion),
                "why": list(c.reasons),
            }
            for c in decision.choices
        ],
        "to_delete": len(decision.to_delete),
        "deleted": len(deleted),
        "freed_bytes": freed_by(decision, deletion),
        "failures": dict(deletion.failed) if deletion else {},
        "already_gone": list(deletion.gone) if deletion else [],
        "histories_read": list(recorded.read),
        "histories_skipped": dict(recorded.skipped),
        "without_history": list(recorded.without_history),
    }


def freed_by(decision: Decision, deletion: Deletion | None) -> int:
    """The bytes ``deletion`` freed: of the images it deleted, not those already gone (another freed them)."""
    if deletion is None:
        return 0
    freed = set(deletion.deleted) - set(deletion.gone)
    return sum(i.size for i in decision.to_delete if i.digest in freed)


def _images(count: int) -> str:
    return f"{count} image" + ("" if count == 1 else "s")


def summary(decision: Decision, *, repository: str, dry_run: bool, deletion: Deletion | None = None) -> str:
    """The closing line: what was (or would be) deleted and the space freed."""
    size_note = "compressed size, as ECR reports it"
    total = len(decision.choices)
    if not total:
        return f"no images in {repository}: nothing to delete"
    if not decision.to_delete:
        return f"nothing to delete: all {_images(total)} of {repository} are kept"
    if dry_run or deletion is None:
        return (
            f"dry run: would delete {_images(len(decision.to_delete))} of {total}, freeing "
            f"{megabytes(decision.bytes_to_free)} ({size_note}); nothing was deleted"
        )
    line = f"deleted {_images(len(deletion.deleted))}, freed {megabytes(freed_by(decision, deletion))} ({size_note})"
    if deletion.gone:
        line += f"; {len(deletion.gone)} of them already gone"
    if deletion.failed:
        line += f"; {_images(len(deletion.failed))} could not be deleted"
    return line
