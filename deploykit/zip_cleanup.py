"""The Lambda zips and the kept vendored packages in the artifacts bucket that nothing needs any more: ``inv
lambda.cleanup`` deletes them after the old versions.

Every Lambda deploy uploads a zip named by its content (``lambda/<fn>/<sha256>.zip``, :mod:`deploykit.packaging`),
and a function vendoring big requirements also keeps them once (``lambda-vendored/<sha256>.bin``,
:class:`~deploykit.stack_chain.UploadLambdaCode`); none of them expires, so a team deploying a 16 MB function a few
times a day stores gigabytes a month. Lambda copies a zip's bytes when it takes code (each version keeps its own),
so a zip is needed only by what may hand its key to Lambda again. A **zip** is kept when:

- a function's ``$LATEST`` or one of its published versions that this cleanup keeps runs it (its CodeSha256, the
  zip's SHA-256 as Lambda reports it): the stack's next deploy, CloudFormation rolling an update back, and
  ``inv rollback`` hand such keys to Lambda;
- the code parameter (``<Function>CodeKey``) of the stack holding it names it: CloudFormation rolls a failed update
  back to it;
- it was uploaded within :data:`GRACE` (a deploy in another environment may be about to use it; one that finds it
  there renews its date, :data:`~deploykit.stack_chain.RENEW_AFTER`);
- another environment writes its live record in the same bucket (one account, one registry stack): its functions
  are read the same way (every version kept), or, when it cannot be read, every zip is kept.

A **vendored object** only speeds uploads up (a zip whose kept packages are gone is sent whole, and keeps them
again), so it is kept while a function's ``$LATEST`` runs a zip put together from it (the zip names it in its
metadata) or while it is younger than :data:`GRACE`; when a big zip of ``$LATEST`` does not say (uploaded before
zips named their vendored packages), every vendored object is kept.

Everything else is deleted (DeleteObjects). The bucket is versioned: S3 keeps a deleted object as a noncurrent
version until the bucket's lifecycle expires it (90 days in deploykit's registry stack), so a deletion can be undone
meanwhile and the storage is freed then. A deleted zip a rollback needs again is packaged from git and uploaded, as
for any new code. :func:`plan_objects` decides and reads nothing; the readers and :func:`delete_objects` talk to S3,
Lambda and CloudFormation.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from deploykit import lambda_chain, packaging
from deploykit.aws import AwsFactory, answered, at_once
from deploykit.config import EnvConfig
from deploykit.history import LIVE_PREFIX
from deploykit.lock import STOPPED, LockLost, lost_lease
from deploykit.output import age, tabulate
from deploykit.stacks import StackOutputs, is_not_there, stack_parameters
from deploykit.version_cleanup import size

GRACE = timedelta(days=1)
ZIP_PREFIX = f"{packaging.KEY_PREFIX}/"
VENDORED_PREFIX = f"{packaging.VENDORED_KEY_PREFIX}/"
DELETE_BATCH = 1000  # DeleteObjects' most keys per call
_ZIP = re.compile(rf"{ZIP_PREFIX}(?P<function>[^/]+)/(?P<sha256>[0-9a-f]{{64}})\.zip")
_VENDORED = re.compile(rf"{VENDORED_PREFIX}(?P<sha256>[0-9a-f]{{64}})\.bin")


# -- the decision (pure) ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Stored:
    """A zip (``function`` its folder) or a vendored object (``function`` ""), as ListObjectsV2 details it."""

    key: str
    size: int
    modified: datetime
    sha256: str
    function: str = ""

    @classmethod
    def of(cls, listed: Mapping[str, Any]) -> Stored | None:
        """None for a key deploykit did not name so (left alone)."""
        key = str(listed.get("Key") or "")
        size, modified = int(listed.get("Size") or 0), listed["LastModified"]
        if found := _ZIP.fullmatch(key):
            return cls(key, size, modified, found["sha256"], found["function"])
        if found := _VENDORED.fullmatch(key):
            return cls(key, size, modified, found["sha256"])
        return None

    @property
    def kind(self) -> str:
        return "zip" if self.function else "vendored"


@dataclass
class Needed:
    """What needs the bucket's objects, and why: zips by SHA-256 (what Lambda runs) and by key (what a stack names),
    vendored objects by SHA-256, and why every zip (or every vendored object) is kept, when that cannot be told."""

    codes: dict[str, list[str]] = field(default_factory=dict)
    keys: dict[str, list[str]] = field(default_factory=dict)
    vendored: dict[str, list[str]] = field(default_factory=dict)
    every_zip: list[str] = field(default_factory=list)
    every_vendored: list[str] = field(default_factory=list)

    def runs(self, code_sha256: str, why: str) -> None:
        """Something runs the code whose CodeSha256 (Lambda's base64) is ``code_sha256``."""
        if code_sha256:
            _add(self.codes, packaging.sha256_of(code_sha256), why)

    def merge(self, other: Needed) -> None:
        for mine, theirs in ((self.codes, other.codes), (self.keys, other.keys), (self.vendored, other.vendored)):
            for name, reasons in theirs.items():
                for why in reasons:
                    _add(mine, name, why)
        self.every_zip += other.every_zip
        self.every_vendored += other.every_vendored


def _add(found: dict[str, list[str]], name: str, why: str) -> None:
    if why not in found.setdefault(name, []):
        found[name].append(why)


@dataclass(frozen=True)
class ObjectChoice:
    stored: Stored
    delete: bool
    reasons: tuple[str, ...]


@dataclass(frozen=True)
class ObjectDecision:
    """Every zip and vendored object looked at, kept or deleted, each with its reasons."""

    bucket: str
    choices: tuple[ObjectChoice, ...]

    @property
    def to_delete(self) -> tuple[Stored, ...]:
        return tuple(c.stored for c in self.choices if c.delete)


def plan_objects(
    bucket: str, objects: Iterable[Stored], needed: Needed, *, now: datetime, grace: timedelta = GRACE
) -> ObjectDecision:
    """Decide which of ``objects`` to delete: zips by function then newest first, then the vendored objects."""
    choices: list[ObjectChoice] = []
    for stored in sorted(objects, key=lambda s: (s.kind != "zip", s.function, -s.modified.timestamp(), s.key)):
        if stored.kind == "zip":
            reasons = needed.codes.get(stored.sha256, []) + needed.keys.get(stored.key, []) + needed.every_zip
            unneeded = "nothing runs it: no kept version, no $LATEST, not a stack's code parameter"
        else:
            reasons = needed.vendored.get(stored.sha256, []) + needed.every_vendored
            unneeded = "no $LATEST runs a zip put together from it (the next zip of its requirements sends them)"
        if now - stored.modified < grace:
            ago = age(now - stored.modified)
            reasons = [*reasons, f"uploaded {ago} ago, less than {age(grace)} (a deploy may be about to use it)"]
        choices.append(ObjectChoice(stored, not reasons, tuple(reasons) or (unneeded,)))
    return ObjectDecision(bucket, tuple(choices))


# -- the readers ------------------------------------------------------------------------------------------------


def stored_objects(aws: AwsFactory, bucket: str, functions: Iterable[str] | None = None) -> list[Stored]:
    """The zips of ``functions`` (folders; None: every folder, and the vendored objects too) in ``bucket``."""
    prefixes = [ZIP_PREFIX, VENDORED_PREFIX] if functions is None else [f"{ZIP_PREFIX}{fn}/" for fn in functions]
    paginator = aws.client("s3").get_paginator("list_objects_v2")
    found: list[Stored] = []
    for prefix in prefixes:
        for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
            found += [s for listed in page.get("Contents") or () if (s := Stored.of(listed)) is not None]
    return found


def stack_code_keys(aws: AwsFactory, env: EnvConfig) -> dict[str, list[str]]:
    """key → why: the zips the code parameters of the stacks that may hold functions (the API stack, the team's own)
    name (CloudFormation rolls a failed update back to them); {} when none is there."""
    keys: dict[str, list[str]] = {}
    stacks = env.stacks.function_stacks()
    for stack, parameters in at_once({stack: partial(stack_parameters, aws, stack) for stack in stacks}).items():
        for name, value in parameters.items():
            if name.endswith("CodeKey") and value.startswith(ZIP_PREFIX):
                _add(keys, value, f"{env.name}: {stack}'s {name}")
    return keys


def sharing(aws: AwsFactory, bucket: str, env: EnvConfig) -> list[str]:
    """The other environments whose live record is in ``bucket`` (which share it with ``env``)."""
    paginator = aws.client("s3").get_paginator("list_objects_v2")
    names = [
        str(listed["Key"])[len(LIVE_PREFIX) :].removesuffix(".json")
        for page in paginator.paginate(Bucket=bucket, Prefix=LIVE_PREFIX)
        for listed in page.get("Contents") or ()
    ]
    return sorted(name for name in names if name and name != env.name)


def zips_named(aws: AwsFactory, bucket: str, zips: Mapping[str, Stored]) -> dict[str, str | None]:
    """fn → the SHA-256 of the vendored packages the zip of its ``$LATEST`` (``zips``: fn → that zip) was put
    together from, from the zip's metadata: "" when it names none, None when it is gone."""
    s3 = aws.client("s3")
    found: dict[str, str | None] = {}
    for function, stored in sorted(zips.items()):
        try:
            metadata = s3.head_object(Bucket=bucket, Key=stored.key).get("Metadata") or {}
        except ClientError as exc:
            if not is_not_there(exc):
                raise
            found[function] = None
        else:
            found[function] = str(metadata.get(packaging.VENDORED_METADATA) or "")
    return found


def environment_code(aws: AwsFactory, env: EnvConfig) -> Needed:
    """What another environment sharing the bucket runs: every version of its functions (``$LATEST`` too) and its
    code parameters of its stacks. Its own cleanup decides which of its versions go."""
    needed = Needed(keys=stack_code_keys(aws, env))
    functions = lambda_chain.deployed_functions(StackOutputs.of(aws), env, required=False)
    client = aws.client("lambda")
    for function, function_name in sorted(functions.items()):
        for version in lambda_chain.all_versions(client, function_name):
            needed.runs(str(version.get("CodeSha256") or ""), f"{env.name}: {function} {_version(version)}")
    return needed


def _version(detail: Mapping[str, Any]) -> str:
    number = str(detail.get("Version"))
    return number if number == "$LATEST" else f"version {number}"


def big_zips(latest: Mapping[str, str], objects: Iterable[Stored], big: int) -> dict[str, Stored]:
    """fn → the zip its ``$LATEST`` (fn → CodeSha256) runs, for those of ``big`` bytes or more (only those can
    have been put together from kept vendored packages)."""
    by_sha = {stored.sha256: stored for stored in objects if stored.kind == "zip"}
    found = {function: by_sha.get(packaging.sha256_of(code)) for function, code in latest.items()}
    return {function: stored for function, stored in sorted(found.items()) if stored and stored.size >= big}


def vendored_needed(zips: Mapping[str, Stored], named: Mapping[str, str | None]) -> Needed:
    """The vendored objects the zips of the functions' ``$LATEST`` (:func:`big_zips`) were put together from, as
    :func:`zips_named` read them; a zip that does not say keeps every one."""
    needed = Needed()
    for function, stored in zips.items():
        vendored = named.get(function)
        if vendored:
            _add(needed.vendored, vendored, f"the zip {function}'s $LATEST runs was put together from it")
        elif vendored == "":
            needed.every_vendored.append(
                f"{function}'s $LATEST runs {packaging.short_key(stored.key)}, which does not name the vendored "
                "packages it was put together from (uploaded before zips named them)"
            )
    return needed


# -- deleting ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ObjectDeletion:
    deleted: tuple[str, ...]  # keys
    failed: dict[str, str]  # key → why
    stopped: LockLost | None = None  # the lock was lost: the keys from the call it was found lost are not done
    # key → its LastModified when looked at again before its call: within the grace (a deploy renewed it meanwhile)
    renewed: dict[str, datetime] = field(default_factory=dict)


def delete_objects(
    aws: AwsFactory,
    bucket: str,
    objects: Sequence[Stored],
    holding: Callable[[], None] | None = None,
    *,
    now: Callable[[], datetime] | None = None,
    grace: timedelta = GRACE,
) -> ObjectDeletion:
    """DeleteObjects, a thousand keys a call; a key S3 reports an error for is that key's failure, and a call S3
    refuses whole (slowed down after its retries, access) the failure of each of its keys (the next call goes on).
    ``holding`` (the lease's check) is asked before each call: once the lock is lost, the rest is not done
    (``stopped``). Just before each call its keys are looked at again (HeadObject): one whose LastModified is now
    within ``grace`` of ``now()`` (a deploy of another environment found it and renewed its date meanwhile, as it
    does for a cleanup to keep it) is left (``renewed``); one that cannot be looked at is not deleted (its failure).
    """
    s3 = aws.client("s3")
    clock = now or (lambda: datetime.now(UTC))
    keys = [stored.key for stored in objects]
    failed: dict[str, str] = {}
    renewed: dict[str, datetime] = {}
    for start in range(0, len(keys), DELETE_BATCH):
        if (stopped := lost_lease(holding)) is not None:
            failed.update(dict.fromkeys(keys[start:], STOPPED))
            left = {**failed, **renewed}
            return ObjectDeletion(tuple(k for k in keys if k not in left), failed, stopped, renewed)
        batch = []
        seen = at_once({k: partial(_modified, s3, bucket, k) for k in keys[start : start + DELETE_BATCH]}, width=16)
        moment = clock()
        for key, modified in seen.items():
            if isinstance(modified, str):
                failed[key] = f"not deleted: it could not be looked at again first ({modified})"
            elif modified is not None and moment - modified < grace:
                renewed[key] = modified
            else:
                batch.append(key)  # one gone meanwhile: deleting it again does no harm
        if not batch:
            continue
        try:
            answer = s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": k} for k in batch], "Quiet": True})
        except (BotoCoreError, ClientError) as exc:
            failed.update(dict.fromkeys(batch, answered(exc)))
            continue
        for error in answer.get("Errors") or ():
            failed[str(error.get("Key"))] = f"{error.get('Code', 'Error')}: {error.get('Message', '')}".rstrip(": ")
    left = {**failed, **renewed}
    return ObjectDeletion(tuple(k for k in keys if k not in left), failed, renewed=renewed)


def _modified(s3: Any, bucket: str, key: str) -> datetime | str | None:
    """The object's LastModified now (HeadObject); None when it is gone; why, when it cannot be looked at."""
    try:
        return s3.head_object(Bucket=bucket, Key=key)["LastModified"]  # type: ignore[no-any-return]
    except ClientError as exc:
        if is_not_there(exc):
            return None
        return answered(exc)
    except BotoCoreError as exc:
        return answered(exc)


# -- output -----------------------------------------------------------------------------------------------------


def action_of(choice: ObjectChoice, *, dry_run: bool, deletion: ObjectDeletion | None) -> str:
    if not choice.delete:
        return "keep"
    if dry_run or deletion is None:
        return "would delete"
    if choice.stored.key in deletion.renewed:
        return "keep"
    return "FAILED" if choice.stored.key in deletion.failed else "deleted"


def table(decision: ObjectDecision, *, dry_run: bool, deletion: ObjectDeletion | None = None) -> str:
    rows = []
    for choice in decision.choices:
        stored = choice.stored
        why = "; ".join(renewal_of(stored.key, deletion) or choice.reasons)
        failure = deletion.failed.get(stored.key) if deletion else None
        rows.append(
            [
                stored.function or "(vendored)",
                packaging.short_key(stored.key),
                stored.modified.strftime("%Y-%m-%d %H:%M"),
                size(stored.size),
                action_of(choice, dry_run=dry_run, deletion=deletion),
                f"{failure} ({why})" if failure else why,
            ]
        )
    return tabulate(rows, headers=["function", "key", "uploaded (UTC)", "size", "action", "why"])


def renewal_of(key: str, deletion: ObjectDeletion | None) -> tuple[str, ...]:
    """Why an object planned for deletion was kept after all: renewed meanwhile (() when it was not)."""
    if deletion is None or key not in deletion.renewed:
        return ()
    when = deletion.renewed[key].strftime("%Y-%m-%d %H:%M")
    return (f"renewed meanwhile ({when} UTC: a deploy found it and copied it onto itself), kept for {age(GRACE)}",)


def _objects(count: int) -> str:
    return f"{count} object" + ("" if count == 1 else "s")


def summary(decision: ObjectDecision, *, dry_run: bool, deletion: ObjectDeletion | None = None) -> str:
    total, doomed = len(decision.choices), decision.to_delete
    where = f"s3://{decision.bucket}"
    if not total:
        return f"no Lambda zips in {where}: nothing to delete"
    if not doomed:
        return f"nothing to delete in {where}: all {_objects(total)} are kept"
    if dry_run or deletion is None:
        freeing = size(sum(s.size for s in doomed))
        return f"dry run: would delete {_objects(len(doomed))} of {total} in {where} ({freeing}); nothing was deleted"
    gone = set(deletion.deleted)
    freed = size(sum(s.size for s in doomed if s.key in gone))
    line = (
        f"deleted {_objects(len(gone))} in {where} ({freed}; S3 keeps them as noncurrent versions until the "
        "bucket's lifecycle expires them)"
    )
    if deletion.renewed:
        line += f"; {_objects(len(deletion.renewed))} renewed by a deploy meanwhile, kept"
    if deletion.failed:
        line += f"; {_objects(len(deletion.failed))} could not be deleted"
    return line


def to_json(decision: ObjectDecision, *, dry_run: bool, deletion: ObjectDeletion | None) -> dict[str, Any]:
    gone = set(deletion.deleted) if deletion else set()
    return {
        "bucket": decision.bucket,
        "objects": [
            {
                "key": c.stored.key,
                "kind": c.stored.kind,
                "function": c.stored.function or None,
                "bytes": c.stored.size,
                "uploaded": c.stored.modified.isoformat(),
                "action": action_of(c, dry_run=dry_run, deletion=deletion),
                "why": list(renewal_of(c.stored.key, deletion) or c.reasons),
            }
            for c in decision.choices
        ],
        "to_delete": len(decision.to_delete),
        "deleted": len(gone),
        "renewed": sorted(deletion.renewed) if deletion else [],
        "deleted_bytes": sum(s.size for s in decision.to_delete if s.key in gone),
        "failures": dict(deletion.failed) if deletion else {},
    }
