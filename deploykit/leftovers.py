"""What ``inv destroy --include-data`` deletes besides the stacks: the data they keep when they are deleted.

The data stacks keep their buckets, tables, user pool and image repository when CloudFormation deletes them
(``DeletionPolicy: Retain``: a stack deleted by mistake loses no data). Left in the account they hold their names,
so that deploying the environment again fails (the repository's name is the environment's ``repository``), and they
keep costing. ``--include-data`` asks for the data to go too: before each data stack is deleted, deploykit deletes
what it made of those kinds — read from the stack's own resource list, nothing else of the account — a versioned
bucket emptied of every version and delete marker first, the repository with its images. A resource gone already
is passed over, so a destroy run again after a failure finishes the job. A stack deleted already (by a destroy whose
deletion of the data failed, or without deploykit: the console, ``cdk destroy``) is found among the deleted stacks
CloudFormation lists for 90 days: what the last of that name kept is deleted then.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

from botocore.exceptions import ClientError

from deploykit.aws import AwsFactory, at_once
from deploykit.stacks import error_code

BATCH = 1000  # keys a DeleteObjects call takes

# resource type → what it is called in messages; the kinds the data stacks keep on deletion
KEPT: Mapping[str, str] = {
    "AWS::S3::Bucket": "bucket",
    "AWS::ECR::Repository": "repository",
    "AWS::DynamoDB::Table": "table",
    "AWS::Cognito::UserPool": "user pool",
}
# how each service says "no such thing": the resource is gone already
GONE = frozenset({"NoSuchBucket", "RepositoryNotFoundException", "ResourceNotFoundException"})
GONE_ALREADY = "gone already"


@dataclass(frozen=True)
class Kept:
    """One resource of a stack that outlives its deletion."""

    resource_type: str
    physical_id: str  # the bucket's, repository's or table's name; the user pool's id

    def __str__(self) -> str:
        return f"{KEPT[self.resource_type]} {self.physical_id}"


def kept_by(aws: AwsFactory, stack: str) -> list[Kept]:
    """The resources of ``stack`` of the kinds kept on deletion, as its resource list names them (every page)."""
    found = []
    paginator = aws.client("cloudformation").get_paginator("list_stack_resources")
    for page in paginator.paginate(StackName=stack):
        for resource in page.get("StackResourceSummaries") or ():
            kind, physical = str(resource.get("ResourceType", "")), str(resource.get("PhysicalResourceId") or "")
            if kind in KEPT and physical and resource.get("ResourceStatus") != "DELETE_COMPLETE":
                found.append(Kept(kind, physical))
    return found


def last_deleted(aws: AwsFactory, stack: str) -> str | None:
    """The id of the stack named ``stack`` deleted last, as CloudFormation lists deleted stacks (for 90 days), or
    None: a deleted stack's resource list is read by its id, its name naming only a stack that exists."""
    found: list[Mapping[str, Any]] = []
    paginator = aws.client("cloudformation").get_paginator("list_stacks")
    for page in paginator.paginate(StackStatusFilter=["DELETE_COMPLETE"]):
        found += [summary for summary in page.get("StackSummaries") or () if summary.get("StackName") == stack]
    if not found:
        return None
    last = max(found, key=lambda summary: summary.get("DeletionTime") or summary.get("CreationTime") or 0)
    return str(last["StackId"])


def delete(aws: AwsFactory, kept: Sequence[Kept]) -> dict[Kept, str | Exception]:
    """Delete each of ``kept``, all at once: what was done (``"deleted"``, ``"deleted, 12 object versions first"``,
    ``"gone already"``) or the error that stopped it, for each. A bucket still not empty once emptied (another's
    access logs landing in it while that one was emptied) is emptied and deleted again after all the others."""
    done: dict[Kept, str | Exception] = {}
    todo = list(kept)
    for _ in range(1 + RETRIES):
        done.update(_delete_each(aws, todo))
        todo = [item for item in todo if _not_empty(done[item])]
        if not todo:
            break
    return {item: done[item] for item in kept}


def _not_empty(outcome: str | Exception) -> bool:
    return isinstance(outcome, ClientError) and error_code(outcome) == NOT_EMPTY


NOT_EMPTY = "BucketNotEmpty"
RETRIES = 3  # rounds of emptying a bucket again that something still wrote to


def _delete_each(aws: AwsFactory, kept: Sequence[Kept]) -> dict[Kept, str | Exception]:
    deleters: dict[str, Callable[[AwsFactory, str], str]] = {
        "AWS::S3::Bucket": _delete_bucket,
        "AWS::ECR::Repository": _delete_repository,
        "AWS::DynamoDB::Table": _delete_table,
        "AWS::Cognito::UserPool": _delete_user_pool,
    }

    def one(item: Kept) -> str | Exception:
        try:
            return deleters[item.resource_type](aws, item.physical_id)
        except ClientError as exc:
            if error_code(exc) in GONE:
                return GONE_ALREADY
            return exc

    return at_once({item: partial(one, item) for item in kept})


def _delete_bucket(aws: AwsFactory, bucket: str) -> str:
    s3 = aws.client("s3")
    count = 0
    for batch in _batches(_versions(s3, bucket)):
        answer = s3.delete_objects(Bucket=bucket, Delete={"Objects": batch, "Quiet": True})
        errors = answer.get("Errors") or []
        if errors:
            first = errors[0]
            raise ClientError(
                {
                    "Error": {
                        "Code": str(first.get("Code", "")),
                        "Message": f"{first.get('Key')}: {first.get('Message')}",
                    }
                },
                "DeleteObjects",
            )
        count += len(batch)
    s3.delete_bucket(Bucket=bucket)
    return f"deleted, {count} object version(s) first" if count else "deleted (empty)"


def _versions(s3: Any, bucket: str) -> Iterator[dict[str, str]]:
    """Every object version and delete marker of ``bucket``, as DeleteObjects takes them."""
    for page in s3.get_paginator("list_object_versions").paginate(Bucket=bucket):
        for entry in [*(page.get("Versions") or ()), *(page.get("DeleteMarkers") or ())]:
            yield {"Key": str(entry["Key"]), "VersionId": str(entry.get("VersionId") or "null")}


def _batches(items: Iterator[dict[str, str]]) -> Iterator[list[dict[str, str]]]:
    batch: list[dict[str, str]] = []
    for item in items:
        batch.append(item)
        if len(batch) == BATCH:
            yield batch
            batch = []
    if batch:
        yield batch


def _delete_repository(aws: AwsFactory, repository: str) -> str:
    answer = aws.client("ecr").delete_repository(repositoryName=repository, force=True)
    images = (answer.get("repository") or {}).get("imageCount")
    return "deleted, with its images" if images is None else f"deleted, with its {images} image(s)"


def _delete_table(aws: AwsFactory, table: str) -> str:
    aws.client("dynamodb").delete_table(TableName=table)
    return "deleted"


def _delete_user_pool(aws: AwsFactory, pool: str) -> str:
    aws.client("cognito-idp").delete_user_pool(UserPoolId=pool)
    return "deleted"


def by_hand(item: Kept) -> str:
    """The AWS CLI command that deletes ``item`` (a bucket: emptied of every version first, by the console or a
    script: ``aws s3 rb --force`` leaves the versions)."""
    name = item.physical_id
    return {
        "AWS::S3::Bucket": f"empty bucket {name} of every object version, then aws s3api delete-bucket --bucket {name}",
        "AWS::ECR::Repository": f"aws ecr delete-repository --repository-name {name} --force",
        "AWS::DynamoDB::Table": f"aws dynamodb delete-table --table-name {name}",
        "AWS::Cognito::UserPool": f"aws cognito-idp delete-user-pool --user-pool-id {name}",
    }[item.resource_type]
