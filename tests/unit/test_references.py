"""What a task definition names that its tasks need (deploykit.references.of): which references are read, and
which are said as not checked (another region or account)."""

from __future__ import annotations

from typing import Any
from unittest.mock import Mock

import botocore.exceptions

from deploykit import references
from deploykit.aws import AwsFactory
from deploykit.references import Reference

ACCOUNT, REGION = "123456789012", "eu-west-1"
SM = f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:db-AbCdEf"


def container(**more: Any) -> dict[str, Any]:
    return {"name": "backend", "image": "repo:tag", **more}


def test_each_kind_of_reference_is_found_with_what_its_read_takes() -> None:
    taskdef = {
        "executionRoleArn": f"arn:aws:iam::{ACCOUNT}:role/service-role/exec",
        "taskRoleArn": f"arn:aws:iam::{ACCOUNT}:role/task",
        "containerDefinitions": [
            container(
                secrets=[
                    {"name": "API_KEY", "valueFrom": "/car-rental/api-key"},
                    {"name": "TOKEN", "valueFrom": f"arn:aws:ssm:{REGION}:{ACCOUNT}:parameter/token"},
                    {"name": "DB_PASSWORD", "valueFrom": f"{SM}:password::"},  # a JSON key of the secret
                ],
                environmentFiles=[{"value": "arn:aws:s3:::config-bucket/backend/prod.env", "type": "s3"}],
                logConfiguration={"logDriver": "awslogs", "options": {"awslogs-group": "/ecs/backend"}},
            )
        ],
    }
    found, elsewhere = references.of(taskdef, region=REGION, account=ACCOUNT)
    assert [(ref.kind, ref.key) for ref in found] == [
        ("ssm", "/car-rental/api-key"),
        ("ssm", f"arn:aws:ssm:{REGION}:{ACCOUNT}:parameter/token"),
        ("secretsmanager", SM),
        ("s3", "config-bucket/backend/prod.env"),
        ("logs", "/ecs/backend"),
        ("iam", "exec"),
        ("iam", "task"),
    ]
    assert found[2].said == f"secret DB_PASSWORD of container backend (Secrets Manager secret {SM})"
    assert elsewhere == []


def test_a_log_group_the_driver_creates_and_references_elsewhere_are_not_read() -> None:
    other = f"arn:aws:secretsmanager:us-east-1:{ACCOUNT}:secret:x-AbCdEf"
    shared = f"arn:aws:ssm:{REGION}:999999999999:parameter/shared"
    taskdef = {
        "executionRoleArn": "arn:aws:iam::999999999999:role/exec",
        "containerDefinitions": [
            container(
                secrets=[{"name": "A", "valueFrom": other}, {"name": "B", "valueFrom": shared}],
                logConfiguration={
                    "logDriver": "awslogs",
                    "options": {"awslogs-group": "/ecs/made", "awslogs-create-group": "true"},
                },
            ),
            container(
                name="sidecar",
                logConfiguration={
                    "logDriver": "awslogs",
                    "options": {"awslogs-group": "/ecs/far", "awslogs-region": "us-east-1"},
                },
            ),
        ],
    }
    found, elsewhere = references.of(taskdef, region=REGION, account=ACCOUNT)
    assert found == []
    assert elsewhere == [
        f"secret A of container backend ({other}): in us-east-1 region / account {ACCOUNT}",
        f"secret B of container backend ({shared}): in {REGION} region / account 999999999999",
        "log group /ecs/far of container sidecar: in region us-east-1",
        "the execution role arn:aws:iam::999999999999:role/exec: in another region / account 999999999999",
    ]


def client_error(code: str, status: int = 400) -> botocore.exceptions.ClientError:
    return botocore.exceptions.ClientError(
        {"Error": {"Code": code, "Message": "m"}, "ResponseMetadata": {"HTTPStatusCode": status}}, "Op"
    )


def test_a_missing_thing_is_missing_and_a_read_refused_or_unreachable_is_said_as_not_checked() -> None:
    clients = {name: Mock() for name in ("ssm", "secretsmanager", "iam", "logs", "s3")}
    clients["ssm"].get_parameters.return_value = {"Parameters": [], "InvalidParameters": ["/gone"]}
    clients["secretsmanager"].describe_secret.return_value = {"ARN": SM, "DeletedDate": "2026-12-01"}
    clients["iam"].get_role.side_effect = client_error("AccessDenied", 403)
    clients["logs"].describe_log_groups.return_value = {"logGroups": [{"logGroupName": "/ecs/backend-old"}]}
    clients["s3"].head_object.side_effect = botocore.exceptions.EndpointConnectionError(endpoint_url="https://s3")
    aws = Mock(spec=AwsFactory)
    aws.client.side_effect = clients.__getitem__
    found = references.check(
        aws,
        [
            Reference("ssm", "/gone", "secret A"),
            Reference("ssm", "/there", "secret B"),
            Reference("secretsmanager", SM, "secret C"),
            Reference("iam", "exec", "the execution role"),
            Reference("logs", "/ecs/backend", "log group"),
            Reference("s3", "bucket/key.env", "environment file"),
        ],
        ["secret D: in us-east-1"],
    )
    assert found.checked == 6
    assert found.missing == ("secret A: not found", "secret C: scheduled for deletion", "log group: not found")
    assert found.unchecked == (
        "secret D: in us-east-1",
        "the execution role: this caller may not read it",
        'environment file: Could not connect to the endpoint URL: "https://s3"',
    )
    clients["ssm"].get_parameters.assert_called_once_with(Names=["/gone", "/there"], WithDecryption=False)
    assert references.said_unchecked(found) == "; not checked: secret D: in us-east-1 (+2 more)"


def test_parameters_are_asked_ten_at_a_time() -> None:
    ssm = Mock()
    ssm.get_parameters.side_effect = lambda Names, WithDecryption: {"Parameters": [], "InvalidParameters": []}
    aws = Mock(spec=AwsFactory)
    aws.client.return_value = ssm
    found = references.check(aws, [Reference("ssm", f"/p{i}", f"p{i}") for i in range(23)])
    assert (found.checked, found.missing, found.unchecked) == (23, (), ())
    assert sorted(len(call.kwargs["Names"]) for call in ssm.get_parameters.call_args_list) == [3, 10, 10]
