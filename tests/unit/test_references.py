"""What a task definition names that its tasks need (deploykit.references.of, and of_template for a stack's): which
references are read, and which are said as not checked (another region or account, a value only CloudFormation
works out); what a template imports from another stack's exports is resolved once they are read."""

from __future__ import annotations

import json
from typing import Any
from unittest.mock import Mock

import botocore.exceptions

from deploykit import references
from deploykit.aws import AwsFactory
from deploykit.references import Earlier, Reference, could_make

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


def task_definition_template(container_more: dict[str, Any], **properties: Any) -> str:
    """A template as the CDK writes one: a task definition, its log group and roles made by the stack."""
    definition = {
        "Name": "backend",
        "Image": {"Fn::Join": ["", ["repo:", {"Ref": "ImageTag"}]]},
        "LogConfiguration": {
            "LogDriver": "awslogs",
            "Options": {"awslogs-group": {"Ref": "LogGroup"}, "awslogs-stream-prefix": "backend"},
        },
        **container_more,
    }
    resources = {
        "LogGroup": {"Type": "AWS::Logs::LogGroup"},
        "TaskRole": {"Type": "AWS::IAM::Role"},
        "TaskDefinition": {
            "Type": "AWS::ECS::TaskDefinition",
            "Properties": {
                "ContainerDefinitions": [definition],
                "ExecutionRoleArn": {"Fn::GetAtt": ["TaskRole", "Arn"]},
                "TaskRoleArn": {"Fn::GetAtt": "TaskRole.Arn"},
                **properties,
            },
        },
    }
    parameters = {"ImageTag": {"Type": "String"}, "Stage": {"Type": "String", "Default": "prod"}}
    return json.dumps({"Parameters": parameters, "Resources": resources})


def from_template(body: str, **given: str) -> tuple[list[tuple[str, str]], list[str]]:
    found, elsewhere, _ = references.of_template(body, given, stack="Fargate", region=REGION, account=ACCOUNT)
    return [(ref.kind, ref.key) for ref in found], elsewhere


def test_what_the_stack_makes_itself_is_not_read_from_its_template() -> None:
    """The CDK's task definition: its log group and roles are the stack's own (Ref, Fn::GetAtt), made with it;
    nothing to read, nothing said."""
    assert from_template(task_definition_template({})) == ([], [])


def test_a_templates_values_are_resolved_as_cloudformation_would() -> None:
    """What ecs.Secret.from_ssm_parameter and the CDK's imports write: Fn::Join of pseudo parameters, Fn::Sub, a
    parameter given or its default. An export of another stack is left for the exports' read (not said as not
    checked); a value only CloudFormation can work out (Fn::If) is said as not checked."""
    partition = {"Ref": "AWS::Partition"}
    body = task_definition_template(
        {
            "Secrets": [
                {
                    "Name": "API_KEY",
                    "ValueFrom": {
                        "Fn::Join": [
                            "",
                            [
                                "arn:",
                                partition,
                                ":ssm:",
                                {"Ref": "AWS::Region"},
                                ":",
                                {"Ref": "AWS::AccountId"},
                                ":parameter/car-rental/api-key",
                            ],
                        ]
                    },
                },
                {
                    "Name": "DB",
                    "ValueFrom": {
                        "Fn::Sub": "arn:${AWS::Partition}:secretsmanager:${AWS::Region}:"
                        "${AWS::AccountId}:secret:${Stage}-db-AbCdEf"
                    },
                },
                {"Name": "SHARED", "ValueFrom": {"Fn::ImportValue": "Data:SecretArn"}},
                {"Name": "PICKED", "ValueFrom": {"Fn::If": ["IsProd", "/a", "/b"]}},
            ],
            "EnvironmentFiles": [
                {
                    "Type": "s3",
                    "Value": {"Fn::Sub": ["arn:aws:s3:::${B}/${AWS::StackName}.env", {"B": "config-bucket"}]},
                }
            ],
        },
        ExecutionRoleArn=f"arn:aws:iam::{ACCOUNT}:role/shared-exec",
    )
    found, elsewhere = from_template(body, Stage="staging")
    assert found == [
        ("ssm", f"arn:aws:ssm:{REGION}:{ACCOUNT}:parameter/car-rental/api-key"),
        ("secretsmanager", f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:staging-db-AbCdEf"),
        ("s3", "config-bucket/Fargate.env"),
        ("iam", "shared-exec"),
    ]
    assert elsewhere == [
        'secret PICKED of container backend: worked out by CloudFormation as it deploys ({"Fn::If": ["IsProd", '
        '"/a", "/b"]})'
    ]
    assert from_template(body)[0][1] == (
        "secretsmanager",
        f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:prod-db-AbCdEf",  # the parameter's default
    )
    # a parameter neither given nor defaulted: the stack's own value, not known here
    kept = task_definition_template({"Secrets": [{"Name": "K", "ValueFrom": {"Fn::Sub": "/${ImageTag}/key"}}]})
    assert from_template(kept) == (
        [],
        [
            "secret K of container backend: made of the stack's parameter ImageTag, whose value is the stack's own "
            "(not given here)"
        ],
    )


JOINED = {"Fn::Sub": ["${Leaf}", {"Leaf": {"Fn::ImportValue": "B:Leaf"}}]}  # a second import in one value


def test_what_a_template_imports_is_resolved_through_the_exports_once_they_are_read() -> None:
    """Fn::ImportValue, its name a string, an Fn::Sub or an Fn::Join: before the exports are read, the names of those
    imported (nothing found through them, nothing said as not checked), each of those one value joins; given the
    exports, the values they name are found as if spelled out, region and account judged as for those, and an export
    that is not there is named."""
    body = task_definition_template(
        {
            "Secrets": [
                {"Name": "SHARED", "ValueFrom": {"Fn::ImportValue": "Data:SecretArn"}},
                {"Name": "KEY", "ValueFrom": "/car-rental/key"},
                {"Name": "JOINED", "ValueFrom": {"Fn::Join": ["/", [{"Fn::ImportValue": "A:Root"}, JOINED]]}},
            ],
            "LogConfiguration": {
                "LogDriver": "awslogs",
                "Options": {"awslogs-group": {"Fn::ImportValue": {"Fn::Sub": "${Stage}:LogGroup"}}},
            },
        },
        ExecutionRoleArn={"Fn::ImportValue": {"Fn::Join": [":", ["Shared", {"Ref": "AWS::Region"}, "ExecRole"]]}},
        TaskRoleArn={"Fn::ImportValue": "Shared:FarRole"},
    )

    def resolved(
        exports: dict[str, str] | None,
    ) -> tuple[list[tuple[str, str]], list[str], list[str]]:
        found, elsewhere, imported = references.of_template(
            body, {}, stack="Fargate", region=REGION, account=ACCOUNT, exports=exports
        )
        return [(ref.kind, ref.key) for ref in found], elsewhere, imported

    assert resolved(None) == (
        [("ssm", "/car-rental/key")],
        [],
        ["Data:SecretArn", "A:Root", "B:Leaf", "prod:LogGroup", f"Shared:{REGION}:ExecRole", "Shared:FarRole"],
    )
    exports = {
        "Data:SecretArn": SM,
        "A:Root": "/car-rental",
        "B:Leaf": "joined",
        "prod:LogGroup": "/ecs/shared",
        f"Shared:{REGION}:ExecRole": f"arn:aws:iam::{ACCOUNT}:role/shared-exec",
        "Shared:FarRole": "arn:aws:iam::210987654321:role/far",
        "Other:Thing": "unused",
    }
    assert resolved(exports) == (
        [
            ("secretsmanager", SM),
            ("ssm", "/car-rental/key"),
            ("ssm", "/car-rental/joined"),
            ("logs", "/ecs/shared"),
            ("iam", "shared-exec"),
        ],
        ["the task role arn:aws:iam::210987654321:role/far: in another region / account 210987654321"],
        [],
    )
    del exports["prod:LogGroup"]
    assert resolved(exports)[2] == ["prod:LogGroup"]


def test_a_log_group_named_in_the_template_is_read_and_one_elsewhere_is_said() -> None:
    body = task_definition_template(
        {"LogConfiguration": {"LogDriver": "awslogs", "Options": {"awslogs-group": "/ecs/shared"}}}
    )
    assert from_template(body) == ([("logs", "/ecs/shared")], [])
    far = task_definition_template(
        {
            "LogConfiguration": {
                "LogDriver": "awslogs",
                "Options": {"awslogs-group": "/ecs/far", "awslogs-region": "us-east-1"},
            }
        }
    )
    assert from_template(far) == ([], ["log group /ecs/far of container backend: in region us-east-1"])
    assert from_template("not json") == ([], [])


def made_by(bodies: list[str | None], given: dict[str, str] | None = None) -> Any:
    """could_make of the stacks of templates ``bodies`` (Data0, Data1...), each given ``given``."""
    earlier = [Earlier(body, f"Data{i}", given or {}) for i, body in enumerate(bodies)]
    return could_make(earlier, region=REGION, account=ACCOUNT)


def test_what_the_stacks_before_a_stack_could_make_is_told_by_their_resources_and_exports() -> None:
    """The preflight of a later stack leaves to its own check what a stack deployed before it could make: a
    resource of that kind with that name (a parameter by name or ARN, a secret by its ARN's name) or with a name
    worked out as it deploys (or none), anything in S3, an export of that name (or one worked out as deployed),
    anything for a custom resource or a template that could not be read."""

    def body(resources: dict[str, str], exports: tuple[Any, ...] = ()) -> str:
        outputs = {f"O{i}": {"Value": "v", "Export": {"Name": name}} for i, name in enumerate(exports)}
        return json.dumps({"Resources": {k: {"Type": t} for k, t in resources.items()}, "Outputs": outputs})

    data = body({"Table": "AWS::DynamoDB::Table", "Bucket": "AWS::S3::Bucket"}, ("Data:TableName",))
    made = made_by([data])
    assert made("s3", "bucket/env") and made("export", "Data:TableName")
    assert not made("ssm", "arn:aws:ssm:eu-west-1:1:parameter/x") and not made("secretsmanager", "arn:...:db")
    assert not made("logs", "/ecs/app") and not made("iam", "task") and not made("export", "Data:Other")
    assert made_by([body({"Key": "AWS::SSM::Parameter"})])("ssm", "any name at all")
    assert made_by([body({}, ({"Fn::GetAtt": ["Table", "Name"]},))])("export", "Data:Other")
    assert made_by([body({"Seed": "Custom::SeedData"})])("iam", "task")
    assert made_by([data, None])("logs", "/ecs/app")  # one could not be read: it could make anything
    assert not made_by([])("logs", "/ecs/app")

    def named(kind: str, name: Any) -> str:
        return json.dumps({"Resources": {"R": {"Type": kind, "Properties": {"Name": name, "RoleName": name}}}})

    parameter = made_by([named("AWS::SSM::Parameter", "/car-rental/api-key")])
    assert parameter("ssm", "/car-rental/api-key") and parameter("ssm", "arn:aws:ssm:r:1:parameter/car-rental/api-key")
    assert not parameter("ssm", "/car-rental/other") and not parameter("ssm", "arn:aws:ssm:r:1:parameter/other")
    assert made_by([named("AWS::SSM::Parameter", {"Fn::GetAtt": ["Other", "Name"]})])("ssm", "/any/thing")
    secret = made_by([named("AWS::SecretsManager::Secret", "db")])
    assert secret("secretsmanager", "arn:aws:secretsmanager:r:1:secret:db-AbCdEf")
    assert not secret("secretsmanager", "arn:aws:secretsmanager:r:1:secret:db-other-AbCdEf")
    role = made_by([named("AWS::IAM::Role", "task")])
    assert role("iam", "task") and not role("iam", "execution")


def test_a_name_made_of_the_earlier_stacks_parameters_and_pseudo_parameters_is_worked_out_as_the_check_does() -> None:
    """A parameter named by Fn::Sub or Fn::Join of the stack's parameters (given, else defaulted) and pseudo
    parameters (its name, region, account) is the one of that name alone; a name that cannot be worked out here (a
    Ref of its own resource, a parameter with no value here, Fn::If) could still be any, as could an export's."""

    def parameter(name: Any, parameters: dict[str, Any] | None = None) -> str:
        resources = {"R": {"Type": "AWS::SSM::Parameter", "Properties": {"Name": name}}}
        return json.dumps({"Parameters": parameters or {}, "Resources": resources})

    by_stack = made_by(
        [parameter({"Fn::Sub": "/${AWS::StackName}/${Env}/key"}, {"Env": {"Type": "String"}})], {"Env": "dev"}
    )
    assert by_stack("ssm", "/Data0/dev/key") and by_stack(
        "ssm", f"arn:aws:ssm:{REGION}:{ACCOUNT}:parameter/Data0/dev/key"
    )
    assert not by_stack("ssm", "/Data0/prod/key") and not by_stack("ssm", "/any/thing")
    joined = ["", ["/", {"Ref": "AWS::Region"}, "/", {"Ref": "AWS::AccountId"}, "/", {"Ref": "Env"}]]
    defaulted = made_by([parameter({"Fn::Join": joined}, {"Env": {"Type": "String", "Default": "qa"}})])
    assert defaulted("ssm", f"/{REGION}/{ACCOUNT}/qa") and not defaulted("ssm", f"/{REGION}/{ACCOUNT}/dev")
    assert made_by([parameter({"Fn::Sub": "/${Env}/key"}, {"Env": {"Type": "String"}})])("ssm", "/x/key")  # no value
    assert made_by([parameter({"Ref": "R"})])("ssm", "/any/thing")
    assert made_by([parameter({"Fn::If": ["C", "a", "b"]})])("ssm", "/any/thing")
    exporting = json.dumps(
        {"Resources": {}, "Outputs": {"O": {"Value": "v", "Export": {"Name": {"Fn::Sub": "${AWS::StackName}:Key"}}}}}
    )
    assert made_by([exporting])("export", "Data0:Key") and not made_by([exporting])("export", "Data1:Key")
