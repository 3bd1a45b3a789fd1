"""inv images.cleanup, inv taskdefs.cleanup and inv lambda.cleanup."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from functools import partial
from typing import Any

import botocore.exceptions

from deploykit import (
    ecs,
    history,
    image_cleanup,
    lambda_chain,
    lock,
    taskdef_cleanup,
    version_cleanup,
    zip_cleanup,
)
from deploykit.aws import DENIED, AwsFactory, at_once, translate_error
from deploykit.commands.core import (
    Runtime,
    aws_errors,
    check_account,
    held_lock,
    live_record,
    load_env,
    say_warning,
)
from deploykit.config import Config, EnvConfig
from deploykit.errors import ConfigError, DeployKitError, StepFailed, UsageError
from deploykit.plan import dumps
from deploykit.stack_chain import PART_MIN
from deploykit.stacks import (
    StackOutputs,
)

# -- images.cleanup ---------------------------------------------------------------------------------------------


def holding(lease: lock.Lease | None) -> Callable[[], None] | None:
    """What a cleanup asks before each deletion: whether the lock is still ours (None: none held, a dry run)."""
    return None if lease is None else lease.check


def _keep_at_least_one(keep: int) -> None:
    if keep < 1:
        raise UsageError(f"--keep must be at least 1 (got {keep})", next_step="pass --keep N with N of 1 or more")


def _in_its_account(aws: AwsFactory, env: EnvConfig) -> None:
    """Credentials of another account than deploy.toml pins for ``env`` are refused before anything is read (exit 2),
    a dry run's too: its plan would be that other account's (the real run's lock checks it again, asked once)."""
    with aws_errors(env):
        check_account(aws, env)


def _then_rerun(failures: Iterable[str], permission: str, command: str, otherwise: str) -> str:
    """The next step after deletions that failed: ``otherwise``, or, when AWS refused one for access (``Code:
    message``, a code of :data:`~deploykit.aws.DENIED`), the permission the credentials lack, then ``command`` (a
    rerun alone would fail alike)."""
    if any(why.split(":", 1)[0].strip() in DENIED for why in failures):
        return f"give these credentials {permission} (see README, 'Permissions'), then rerun: {command}"
    return otherwise


def images_cleanup(
    *,
    env: str | None = None,
    keep: int = image_cleanup.DEFAULT_KEEP,
    dry_run: bool = False,
    as_json: bool = False,
    runtime: Runtime | None = None,
) -> image_cleanup.Decision:
    """Delete old images of the environment's ECR repository, keeping the ``keep`` newest, those ECS runs or may
    roll back to, and those any environment's history records (deploykit.image_cleanup says exactly which)."""
    runtime = runtime or Runtime()
    _keep_at_least_one(keep)
    config, environment = load_env(runtime, env)
    aws = runtime.aws_factory(environment)
    _in_its_account(aws, environment)
    repository = environment.repository
    warn = partial(say_warning, runtime)
    deletion = None
    # no deploy may register a revision of an image between reading and deleting
    with held_lock(runtime, aws, environment, "images.cleanup", needed=not dry_run) as lease:
        with aws_errors(environment):
            details = image_cleanup.repository_images(aws)
            recorded = image_cleanup.recorded_images(config, environment, runtime.peer_aws, target_aws=aws)
            in_use = {**recorded.in_use, **image_cleanup.images_in_use(aws)}
            parts = image_cleanup.index_parts(aws, details)
        for name, why in recorded.skipped.items():
            warn(f"skipped the history of {name} (its AWS cannot be read): {why}")
        for name in recorded.without_history:
            runtime.stderr.write(f"ℹ️  {name} has no deployment history (its registry stack is not deployed)\n")
        decision = image_cleanup.plan_cleanup(
            details, keep=keep, in_use=in_use, recorded=recorded.shas, parts=parts, now=runtime.clock.now()
        )
        if decision.to_delete and not dry_run:
            with aws_errors(environment):
                deletion = image_cleanup.delete_images(aws, decision.to_delete, holding(lease))
    if decision.choices:
        runtime.stderr.write(f"Images of {repository} in {environment.name}, newest first\n")
        runtime.stderr.write(image_cleanup.table(decision, dry_run=dry_run, deletion=deletion) + "\n\n")
    runtime.stderr.write(image_cleanup.summary(decision, repository=repository, dry_run=dry_run, deletion=deletion))
    runtime.stderr.write("\n")
    if as_json:
        data = image_cleanup.to_json(
            decision, env=environment.name, repository=repository, dry_run=dry_run, deletion=deletion, recorded=recorded
        )
        runtime.stdout.write(dumps(data) + "\n")
    if deletion is not None and deletion.stopped is not None:
        raise deletion.stopped
    if deletion is not None and deletion.failed:
        by_digest = {i.digest: i for i in decision.to_delete}
        first = next(iter(deletion.failed))
        label = ", ".join(by_digest[first].tags) if first in by_digest and by_digest[first].tags else first
        raise StepFailed(
            f"{len(deletion.failed)} of {len(decision.to_delete)} image(s) of {repository} could not be deleted "
            f"(first: {label}: {deletion.failed[first]})",
            next_step=_then_rerun(
                deletion.failed.values(),
                f"ecr:BatchDeleteImage on repository {repository}",
                f"inv images.cleanup --env {environment.name}",
                f"see the table above, then rerun: inv images.cleanup --env {environment.name}",
            ),
        )
    return decision


# -- taskdefs.cleanup ------------------------------------------------------------------------------------------


def taskdefs_cleanup(
    *,
    env: str | None = None,
    keep: int = taskdef_cleanup.DEFAULT_KEEP,
    dry_run: bool = False,
    as_json: bool = False,
    runtime: Runtime | None = None,
) -> taskdef_cleanup.Decision:
    """Deregister the old revisions of the service's task-definition family, keeping the ``keep`` newest and every
    one the service, a task, the Fargate stack or the live record needs (deploykit.taskdef_cleanup says which)."""
    runtime = runtime or Runtime()
    _keep_at_least_one(keep)
    config, environment = load_env(runtime, env)
    aws = runtime.aws_factory(environment)
    _in_its_account(aws, environment)
    client = aws.client("ecs")
    done = None
    # no deploy may register or roll a revision between reading and deregistering
    with (
        held_lock(runtime, aws, environment, "taskdefs.cleanup", needed=not dry_run) as lease,
        aws_errors(environment),
    ):
        service = ecs.describe_service(client, environment.cluster, environment.service, environment)
        family = ecs.family_of(str(service["taskDefinition"]))
        reads: dict[str, Callable[[], Any]] = {
            "active": partial(ecs.active_revisions, client, family),
            "live": partial(live_record, aws, environment),
        }
        read = at_once(reads)
        live_taskdef = ((read["live"] or {}).get("app") or {}).get("taskdef")
        needed = taskdef_cleanup.needed_revisions(aws, service, live_taskdef)
        # another environment's service of the same name, in this account and region, runs the same family
        others = taskdef_cleanup.others_needing(config, aws, family, runtime.peer_aws)
        for arn, reasons in others.needed.items():
            needed.setdefault(arn, []).extend(reasons)
        for name, why in others.skipped.items():
            say_warning(runtime, f"skipped {name} (its AWS cannot be read): {why}")
        decision = taskdef_cleanup.plan_cleanup(family, read["active"], keep=keep, needed=needed)
        images = taskdef_cleanup.kept_images(aws, decision, environment.container)  # read before anything changes
        if decision.to_deregister and not dry_run:
            done = taskdef_cleanup.deregister(client, decision.to_deregister, holding(lease))
    tags = {arn: ecs.image_tag(image) or image for arn, image in images.items()}
    if decision.kept:
        runtime.stderr.write(f"Revisions of {family} in {environment.name} kept, newest first\n")
        runtime.stderr.write(taskdef_cleanup.table(decision, tags) + "\n\n")
    runtime.stderr.write(taskdef_cleanup.summary(decision, dry_run=dry_run, done=done) + "\n")
    if as_json:
        data = taskdef_cleanup.to_json(decision, env=environment.name, dry_run=dry_run, done=done, images=tags)
        runtime.stdout.write(dumps(data) + "\n")
    if done is not None and done.stopped is not None:
        raise done.stopped
    if done is not None and done.failed:
        first = next(iter(done.failed))
        raise StepFailed(
            f"{len(done.failed)} of {len(decision.to_deregister)} revision(s) of {family} could not be deregistered "
            f"(first: {ecs.revision_name(first)}: {done.failed[first]})",
            next_step=_then_rerun(
                done.failed.values(),
                f"ecs:DeregisterTaskDefinition on {family}",
                f"inv taskdefs.cleanup --env {environment.name}",
                f"rerun: inv taskdefs.cleanup --env {environment.name} (what was deregistered stays so)",
            ),
        )
    return decision


# -- lambda.cleanup --------------------------------------------------------------------------------------------


def lambda_cleanup(
    *,
    env: str | None = None,
    function: str | None = None,
    keep: int = version_cleanup.DEFAULT_KEEP,
    dry_run: bool = False,
    as_json: bool = False,
    runtime: Runtime | None = None,
) -> version_cleanup.Decision:
    """Delete old published versions of the environment's Lambda functions (or of one), keeping the ``keep`` newest
    of each, those an alias routes to, those their stacks hold and those the history records
    (deploykit.version_cleanup says exactly which)."""
    runtime = runtime or Runtime()
    _keep_at_least_one(keep)
    config, environment = load_env(runtime, env)
    aws = runtime.aws_factory(environment)
    _in_its_account(aws, environment)
    deletion = None
    objects: zip_cleanup.ObjectDecision | None = None
    object_deletion: zip_cleanup.ObjectDeletion | None = None
    zips_error: DeployKitError | None = None  # why the zips could not be read or deleted (after the versions)
    with aws_errors(environment):  # the functions: a --function of none is refused before the lock is taken
        functions = lambda_chain.deployed_functions(StackOutputs.of(aws), environment)
    if function is not None:
        if function not in functions:
            raise UsageError(
                f"no Lambda function {function!r} in the stacks of {environment.name!r}",
                next_step=f"use one of: {', '.join(sorted(functions)) or 'none'} (or leave --function out)",
            )
        functions = {function: functions[function]}
    # no deploy may publish a version or move an alias onto one between reading and deleting
    with held_lock(runtime, aws, environment, "lambda.cleanup", needed=not dry_run) as lease:
        with aws_errors(environment):
            bucket = history.find_artifacts_bucket(aws, environment)
            reads: dict[str, Callable[[], Any]] = {
                "versions": partial(version_cleanup.function_versions, aws, functions),
                "aliases": partial(version_cleanup.routed_versions, aws, functions),
                "mappings": partial(version_cleanup.mapped_versions, aws, functions),
                "stack": partial(version_cleanup.stack_versions, aws, environment),
                "history": partial(version_cleanup.recent_history, aws, environment),
            }
            if bucket:  # the zips, and what else may run them, in the same round trip
                folders = None if function is None else functions
                reads |= {
                    "objects": partial(zip_cleanup.stored_objects, aws, bucket, folders),
                    "code keys": partial(zip_cleanup.stack_code_keys, aws, environment),
                    "sharing": partial(zip_cleanup.sharing, aws, bucket, environment),
                }
            read = at_once(reads)
        using: dict[tuple[str, int], list[str]] = {}
        for found in (read["aliases"], read["mappings"], read["stack"]):
            for key, reasons in found.items():
                using.setdefault(key, []).extend(reasons)
        versions, latest = read["versions"]
        target = config.lambda_target(environment)
        code_of = version_cleanup.CodeOf(config.root, **target)
        recorded = version_cleanup.recorded_shas(read["history"], functions, versions, code_of)
        code = version_cleanup.recorded_code(config.root, versions, recorded, **target, code_of=code_of)
        decision = version_cleanup.plan_cleanup(versions, keep=keep, held=using, recorded=recorded, recorded_code=code)
        if decision.to_delete and not dry_run:
            with aws_errors(environment):
                deletion = version_cleanup.delete_versions(aws, decision.to_delete, holding(lease))
        if bucket and (deletion is None or deletion.stopped is None):  # the lock lost: the zips are left as they are
            try:  # the versions deleted are reported whatever becomes of the zips
                with aws_errors(environment):
                    objects = _unneeded_zips(
                        runtime, config, aws, bucket, decision, deletion, read, latest, whole=function is None
                    )
                    if objects.to_delete and not dry_run:
                        object_deletion = zip_cleanup.delete_objects(
                            aws, bucket, objects.to_delete, holding(lease), now=runtime.clock.now
                        )
            except DeployKitError as exc:
                zips_error = exc
    if decision.choices:
        runtime.stderr.write(f"Published versions of the Lambda functions of {environment.name}, newest first\n")
        runtime.stderr.write(version_cleanup.table(decision, dry_run=dry_run, deletion=deletion) + "\n\n")
    runtime.stderr.write(version_cleanup.summary(decision, dry_run=dry_run, deletion=deletion) + "\n")
    if objects is not None:
        if objects.choices:
            runtime.stderr.write(f"\nLambda zips and kept vendored packages in s3://{objects.bucket}\n")
            runtime.stderr.write(zip_cleanup.table(objects, dry_run=dry_run, deletion=object_deletion) + "\n\n")
        runtime.stderr.write(zip_cleanup.summary(objects, dry_run=dry_run, deletion=object_deletion) + "\n")
    if zips_error is not None:
        runtime.stderr.write(f"\nthe Lambda zips of s3://{bucket} were left as they are: {zips_error.message}\n")
    if as_json:
        data = version_cleanup.to_json(decision, env=environment.name, dry_run=dry_run, deletion=deletion)
        if objects is not None:
            data["zips"] = zip_cleanup.to_json(objects, dry_run=dry_run, deletion=object_deletion)
        if zips_error is not None:
            data["zips_error"] = zips_error.message
        runtime.stdout.write(dumps(data) + "\n")
    command = f"inv lambda.cleanup --env {environment.name}"
    rerun = f"see the tables above, then rerun: {command}"
    for done in (deletion, object_deletion):  # the lock lost: what was done is said above, and the run stops
        if done is not None and done.stopped is not None:
            raise done.stopped
    if deletion is not None and deletion.failed:
        (name, number), why = next(iter(deletion.failed.items()))
        raise StepFailed(
            f"{len(deletion.failed)} of {len(decision.to_delete)} version(s) could not be deleted "
            f"(first: {name}:{number}: {why})",
            next_step=_then_rerun(
                deletion.failed.values(), "lambda:DeleteFunction on the functions' versions", command, rerun
            ),
        )
    if zips_error is not None:
        if deletion is None or not deletion.deleted or zips_error.exit_code == StepFailed.exit_code:
            raise zips_error
        raise StepFailed(zips_error.message, next_step=zips_error.next_step) from zips_error  # versions went: 1
    if objects is not None and object_deletion is not None and object_deletion.failed:
        key, why = next(iter(object_deletion.failed.items()))
        raise StepFailed(
            f"{len(object_deletion.failed)} of {len(objects.to_delete)} object(s) of s3://{objects.bucket} could not "
            f"be deleted (first: {key}: {why})",
            next_step=_then_rerun(
                object_deletion.failed.values(),
                f"s3:DeleteObject on lambda/* and lambda-vendored/* of s3://{objects.bucket}",
                command,
                rerun,
            ),
        )
    return decision


def _unneeded_zips(
    runtime: Runtime,
    config: Config,
    aws: AwsFactory,
    bucket: str,
    decision: version_cleanup.Decision,
    deletion: version_cleanup.Deletion | None,
    read: Mapping[str, Any],
    latest: Mapping[str, str],
    *,
    whole: bool,
) -> zip_cleanup.ObjectDecision:
    """Which zips (and, ``whole``: every function looked at, which vendored objects) of the artifacts bucket go
    after the versions' cleanup (``deletion``; None: a dry run, as if ``decision`` were carried out): what the
    versions still there and each ``$LATEST`` run (``latest``: fn → its CodeSha256), what their stacks name, and
    what the environments sharing the bucket run (deploykit.zip_cleanup)."""
    failed = deletion.failed if deletion is not None else {}
    needed = zip_cleanup.Needed(keys={key: list(why) for key, why in read["code keys"].items()})
    for choice in decision.choices:
        version = choice.version
        if not choice.delete or (version.function_name, version.number) in failed:
            needed.runs(version.code_sha256, f"{version.function} version {version.number}")
    for function, code_sha256 in latest.items():
        needed.runs(code_sha256, f"{function} $LATEST")
    objects: list[zip_cleanup.Stored] = read["objects"]
    big = zip_cleanup.big_zips(latest, objects, PART_MIN)
    reads: dict[tuple[str, str], Callable[[], Any]] = {}
    if whole:
        reads["zips", ""] = partial(zip_cleanup.zips_named, aws, bucket, big)
    unread: list[str] = []  # why each environment sharing the bucket could not be told apart
    for name in read["sharing"]:
        try:  # one of deploy.toml's own, or one a pattern of it makes (dev-bob from [environments."dev-*"])
            other = config.environment(name)
        except ConfigError:
            unread.append(f"environment {name!r}, not in deploy.toml, keeps its live record in this bucket too")
        else:
            reads["env", name] = partial(_environment_code, runtime, other)
    found = at_once(reads)
    if whole:
        needed.merge(zip_cleanup.vendored_needed(big, found["zips", ""]))
    for (kind, name), answer in found.items():
        if kind == "env" and isinstance(answer, zip_cleanup.Needed):
            needed.merge(answer)
        elif kind == "env":
            unread.append(f"environment {name!r}, which shares this bucket, could not be read ({answer})")
    needed.every_zip += unread
    needed.every_vendored += unread
    return zip_cleanup.plan_objects(bucket, objects, needed, now=runtime.clock.now())


def _environment_code(runtime: Runtime, env: EnvConfig) -> zip_cleanup.Needed | str:
    """What another environment sharing the artifacts bucket runs, or why it could not be read."""
    try:
        return zip_cleanup.environment_code(runtime.peer_aws(env), env)
    except DeployKitError as exc:
        return exc.message
    except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
        return translate_error(exc, env).message
