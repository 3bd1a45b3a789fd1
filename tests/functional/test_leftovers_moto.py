"""inv destroy --include-data against moto: a data stack's kept resources (DeletionPolicy Retain) go after it."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from unittest.mock import Mock

import boto3
import pytest
from botocore.stub import Stubber

from deploykit import leftovers, planner
from deploykit.aws import AwsFactory
from deploykit.clock import FakeClock
from deploykit.config import EnvConfig, load_config
from deploykit.errors import StepFailed
from deploykit.output import Reporter
from deploykit.plan import Context
from deploykit.stack_chain import DestroyStack
from tests.functional.conftest import REGION

STACK = "CarRentalDataStack"
BUCKET = "car-rental-test-kyc"
TABLE = "car-rental-test-cars"
REPOSITORY = "car-rental-test-backend"

RETAINED: dict[str, Any] = {
    "Kyc": {
        "Type": "AWS::S3::Bucket",
        "DeletionPolicy": "Retain",
        "Properties": {"BucketName": BUCKET, "VersioningConfiguration": {"Status": "Enabled"}},
    },
    "Cars": {
        "Type": "AWS::DynamoDB::Table",
        "DeletionPolicy": "Retain",
        "Properties": {
            "TableName": TABLE,
            "BillingMode": "PAY_PER_REQUEST",
            "AttributeDefinitions": [{"AttributeName": "car_id", "AttributeType": "S"}],
            "KeySchema": [{"AttributeName": "car_id", "KeyType": "HASH"}],
        },
    },
    "Repository": {
        "Type": "AWS::ECR::Repository",
        "DeletionPolicy": "Retain",
        "Properties": {"RepositoryName": REPOSITORY},
    },
    "Setting": {  # not a kind kept on deletion: CloudFormation's to delete
        "Type": "AWS::SSM::Parameter",
        "Properties": {"Name": "/car-rental/test/setting", "Type": "String", "Value": "v"},
    },
}


def context(env: EnvConfig) -> Context:
    clock = FakeClock()
    config = Mock()
    return Context(config, env, AwsFactory(env), clock, Reporter(io.StringIO(), tty=False, clock=clock), Mock())


@pytest.fixture
def stack(moto_aws: None, dev_env: EnvConfig) -> EnvConfig:
    """The stack, its bucket holding two versions of a document and a deleted one, a car, an image."""
    boto3.client("cloudformation", region_name=REGION).create_stack(
        StackName=STACK, TemplateBody=json.dumps({"Resources": RETAINED})
    )
    s3 = boto3.client("s3", region_name=REGION)
    s3.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})  # moto's stack does not
    for body in (b"first", b"second"):
        s3.put_object(Bucket=BUCKET, Key="kyc/case-1/passport.png", Body=body)
    s3.put_object(Bucket=BUCKET, Key="kyc/case-2/passport.png", Body=b"gone")
    s3.delete_object(Bucket=BUCKET, Key="kyc/case-2/passport.png")  # a delete marker
    boto3.client("dynamodb", region_name=REGION).put_item(TableName=TABLE, Item={"car_id": {"S": "c1"}})
    return dev_env


def test_the_data_a_stack_kept_is_deleted_after_it(stack: EnvConfig) -> None:
    assert {str(k) for k in leftovers.kept_by(AwsFactory(stack), STACK)} == {
        f"bucket {BUCKET}",
        f"table {TABLE}",
        f"repository {REPOSITORY}",
    }
    outcome = DestroyStack(STACK, data=True).run(context(stack))

    assert outcome.status == "done"
    assert f"bucket {BUCKET} deleted, 4 object version(s) first" in outcome.detail
    assert f"table {TABLE} deleted" in outcome.detail and f"repository {REPOSITORY} deleted" in outcome.detail
    assert BUCKET not in {b["Name"] for b in boto3.client("s3", region_name=REGION).list_buckets()["Buckets"]}
    assert TABLE not in boto3.client("dynamodb", region_name=REGION).list_tables()["TableNames"]
    assert boto3.client("ecr", region_name=REGION).describe_repositories()["repositories"] == []


def test_without_data_the_stack_goes_and_what_it_kept_stays(stack: EnvConfig) -> None:
    outcome = DestroyStack(STACK).run(context(stack))
    assert outcome.status == "done" and "deleted" in outcome.detail and BUCKET not in outcome.detail
    assert TABLE in boto3.client("dynamodb", region_name=REGION).list_tables()["TableNames"]
    assert [
        r["repositoryName"] for r in boto3.client("ecr", region_name=REGION).describe_repositories()["repositories"]
    ] == [REPOSITORY]


def test_what_is_gone_already_is_passed_over_and_what_cannot_go_is_named_with_its_command(stack: EnvConfig) -> None:
    boto3.client("dynamodb", region_name=REGION).delete_table(TableName=TABLE)  # by hand, before
    ctx = context(stack)
    with Stubber(ctx.aws.client("ecr")) as ecr:  # an IAM refusal: moto allows everything
        ecr.add_client_error("delete_repository", "AccessDeniedException", "not allowed to ecr:DeleteRepository")
        with pytest.raises(StepFailed) as failed:
            DestroyStack(STACK, data=True).run(ctx)
    assert failed.value.message == (
        f"{STACK} is deleted, but not all the data it kept: repository {REPOSITORY}: AccessDeniedException (An error "
        "occurred (AccessDeniedException) when calling the DeleteRepository operation: not allowed to "
        "ecr:DeleteRepository)"
    )
    assert f"aws ecr delete-repository --repository-name {REPOSITORY} --force" in (failed.value.next_step or "")
    assert "run inv destroy --include-data again" in (failed.value.next_step or "")
    assert BUCKET not in {b["Name"] for b in boto3.client("s3", region_name=REGION).list_buckets()["Buckets"]}

    # the permission given, the rerun finds the repository in the deleted stack's resource list
    again = DestroyStack(STACK, data=True).run(context(stack))
    assert again.status == "done"
    assert again.detail == (
        f"{STACK} was deleted before; what it kept: bucket {BUCKET} gone already; table {TABLE} gone already; "
        f"repository {REPOSITORY} deleted, with its images"
    )
    assert boto3.client("ecr", region_name=REGION).describe_repositories()["repositories"] == []


def test_a_stack_deleted_without_deploykit_has_its_data_found_among_the_deleted_stacks(stack: EnvConfig) -> None:
    cloudformation = boto3.client("cloudformation", region_name=REGION)
    cloudformation.delete_stack(StackName=STACK)  # the console, cdk destroy: its data stays
    other = cloudformation.create_stack(StackName="OtherStack", TemplateBody=json.dumps({"Resources": {}}))
    cloudformation.delete_stack(StackName=other["StackId"])  # another name: not looked at
    assert TABLE in boto3.client("dynamodb", region_name=REGION).list_tables()["TableNames"]

    outcome = DestroyStack(STACK, data=True).run(context(stack))

    assert outcome.status == "done"
    assert outcome.detail.startswith(f"{STACK} was deleted before; what it kept: bucket {BUCKET} deleted, 4 object")
    assert BUCKET not in {b["Name"] for b in boto3.client("s3", region_name=REGION).list_buckets()["Buckets"]}
    assert TABLE not in boto3.client("dynamodb", region_name=REGION).list_tables()["TableNames"]
    assert boto3.client("ecr", region_name=REGION).describe_repositories()["repositories"] == []

    rerun = DestroyStack(STACK, data=True).run(context(stack))
    assert (rerun.status, rerun.detail) == ("skipped", f"{STACK} does not exist; what it kept is gone too")
    without_data = DestroyStack(STACK).run(context(stack))
    assert (without_data.status, without_data.detail) == ("skipped", f"{STACK} does not exist")


def test_a_stack_never_made_has_nothing_to_delete(moto_aws: None, dev_env: EnvConfig) -> None:
    outcome = DestroyStack(STACK, data=True).run(context(dev_env))
    assert (outcome.status, outcome.detail) == ("skipped", f"{STACK} does not exist")


def test_the_last_deleted_stack_of_a_name_is_the_one_whose_data_is_found(moto_aws: None, dev_env: EnvConfig) -> None:
    """Deleted stacks of one name in the order CloudFormation deleted them, whatever the order it lists them in."""
    aws = AwsFactory(dev_env)
    with Stubber(aws.client("cloudformation")) as cloudformation:
        summaries = [
            {
                "StackId": f"arn:aws:cloudformation:{REGION}:123456789012:stack/{name}/{n}",
                "StackName": name,
                "CreationTime": created,
                "DeletionTime": deleted,
                "StackStatus": "DELETE_COMPLETE",
            }
            for n, (name, created, deleted) in enumerate(
                [
                    (STACK, datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 11, 20, tzinfo=UTC)),
                    (STACK, datetime(2026, 9, 1, tzinfo=UTC), datetime(2026, 11, 2, tzinfo=UTC)),
                    ("Other", datetime(2026, 11, 25, tzinfo=UTC), datetime(2026, 11, 28, tzinfo=UTC)),
                ]
            )
        ]
        cloudformation.add_response(
            "list_stacks", {"StackSummaries": summaries}, {"StackStatusFilter": ["DELETE_COMPLETE"]}
        )
        assert leftovers.last_deleted(aws, STACK) == summaries[0]["StackId"]


def test_destroy_with_data_plans_the_data_stacks_to_go_with_their_data(project: Path) -> None:
    env = load_config(project / "deploy.toml").environment("dev")
    steps = [s for group in planner.destroy_plan(env, include_data=True).steps for s in _flat(group)]
    assert {s.stack: s.data for s in steps} == {  # type: ignore[attr-defined]
        env.stacks.api: False,
        env.stacks.fargate: False,
        env.stacks.registry: True,
        env.stacks.data: True,
        env.stacks.auth: True,
    }
    assert all(not s.data for g in planner.destroy_plan(env, include_data=False).steps for s in _flat(g))  # type: ignore[attr-defined]


def _flat(step: Any) -> list[Any]:
    return [s for member in step.steps for s in _flat(member)] if hasattr(step, "steps") else [step]


def test_a_user_pool_is_deleted_and_one_gone_already_passed_over(moto_aws: None, dev_env: EnvConfig) -> None:
    """moto's CloudFormation makes no user pool: the deletion itself, as the auth stack's would go."""
    cognito = boto3.client("cognito-idp", region_name=REGION)
    pool = cognito.create_user_pool(PoolName="car-rental-dev-users")["UserPool"]["Id"]
    kept = [leftovers.Kept("AWS::Cognito::UserPool", pool), leftovers.Kept("AWS::S3::Bucket", "never-made")]
    assert leftovers.delete(AwsFactory(dev_env), kept) == {kept[0]: "deleted", kept[1]: "gone already"}
    assert cognito.list_user_pools(MaxResults=10)["UserPools"] == []


def test_a_bucket_written_to_while_it_was_emptied_is_emptied_again_after_the_others(
    moto_aws: None, dev_env: EnvConfig
) -> None:
    """The access-logs bucket gets the log of the other bucket's emptying: its first delete finds it not empty."""
    s3 = boto3.client("s3", region_name=REGION)
    for name in ("kyc", "kyc-logs"):
        s3.create_bucket(Bucket=name, CreateBucketConfiguration={"LocationConstraint": REGION})
    s3.put_object(Bucket="kyc", Key="doc", Body=b"x")
    aws = AwsFactory(dev_env)
    deliveries: list[str] = []

    def log_delivered(params: dict[str, Any], **_: Any) -> None:
        if params["Bucket"] == "kyc-logs" and len(deliveries) < 2:  # twice: in the first round and the second
            deliveries.append("log")
            s3.put_object(Bucket="kyc-logs", Key=f"log-{len(deliveries)}", Body=b"DELETE kyc/doc")

    aws.client("s3").meta.events.register("before-parameter-build.s3.DeleteBucket", log_delivered)
    kept = [leftovers.Kept("AWS::S3::Bucket", "kyc"), leftovers.Kept("AWS::S3::Bucket", "kyc-logs")]

    done = leftovers.delete(aws, kept)

    assert done == {kept[0]: "deleted, 1 object version(s) first", kept[1]: "deleted, 1 object version(s) first"}
    assert s3.list_buckets()["Buckets"] == [] and len(deliveries) == 2
