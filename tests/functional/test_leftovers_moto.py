"""inv destroy --include-data against moto: a data stack's kept resources (DeletionPolicy Retain) go after it."""

from __future__ import annotations

import io
import json
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
    assert BUCKET not in {b["Name"] for b in boto3.client("s3", region_name=REGION).list_buckets()["Buckets"]}


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
