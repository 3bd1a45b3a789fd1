"""Security settings: buckets, registry, user pool, IAM, network, logging. Pinned resource by resource."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import pytest
from aws_cdk.assertions import Match, Template
from cdk_helpers import Synthesized, only, props

BUCKET = "AWS::S3::Bucket"
BUCKET_POLICY = "AWS::S3::BucketPolicy"
TABLE = "AWS::DynamoDB::Table"


def all_buckets(synthesized: Synthesized) -> list[tuple[str, str, Mapping[str, Any]]]:
    """(stack key, logical id, resource) of every bucket in the app."""
    found = []
    for key in ("registry", "data"):
        for logical_id, resource in synthesized.template(key).find_resources(BUCKET).items():
            found.append((key, logical_id, resource))
    return found


def test_the_app_has_three_buckets(synthesized: Synthesized) -> None:
    names = sorted(logical_id.rstrip("0123456789ABCDEF") for _, logical_id, _ in all_buckets(synthesized))
    assert names == ["ArtifactsBucket", "KycAccessLogsBucket", "KycDocumentsBucket"]


def test_every_bucket_is_encrypted(synthesized: Synthesized) -> None:
    for _, logical_id, bucket in all_buckets(synthesized):
        rules = props(bucket)["BucketEncryption"]["ServerSideEncryptionConfiguration"]
        assert rules == [{"ServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}], logical_id


def test_every_bucket_blocks_public_access(synthesized: Synthesized) -> None:
    expected = {
        "BlockPublicAcls": True,
        "BlockPublicPolicy": True,
        "IgnorePublicAcls": True,
        "RestrictPublicBuckets": True,
    }
    for _, logical_id, bucket in all_buckets(synthesized):
        assert props(bucket)["PublicAccessBlockConfiguration"] == expected, logical_id


def test_every_bucket_is_versioned_with_acls_off(synthesized: Synthesized) -> None:
    for _, logical_id, bucket in all_buckets(synthesized):
        assert props(bucket)["VersioningConfiguration"] == {"Status": "Enabled"}, logical_id
        assert props(bucket)["OwnershipControls"] == {"Rules": [{"ObjectOwnership": "BucketOwnerEnforced"}]}


def test_every_bucket_is_retained(synthesized: Synthesized) -> None:
    for _, logical_id, bucket in all_buckets(synthesized):
        assert (bucket["DeletionPolicy"], bucket["UpdateReplacePolicy"]) == ("Retain", "Retain"), logical_id


def test_every_bucket_denies_requests_without_tls(synthesized: Synthesized) -> None:
    for key, logical_id, _ in all_buckets(synthesized):
        template = synthesized.template(key)
        policies = [
            props(p)
            for p in template.find_resources(BUCKET_POLICY).values()
            if props(p)["Bucket"] == {"Ref": logical_id}
        ]
        assert len(policies) == 1, f"{logical_id} has no bucket policy"
        statements = policies[0]["PolicyDocument"]["Statement"]
        deny_plain_http = [
            s
            for s in statements
            if s["Effect"] == "Deny"
            and s["Action"] == "s3:*"
            and s["Principal"] == {"AWS": "*"}
            and s["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
        ]
        assert deny_plain_http, f"{logical_id} accepts requests without TLS"
        deny_old_tls = [s for s in statements if s["Effect"] == "Deny" and "NumericLessThan" in s["Condition"]]
        assert deny_old_tls and deny_old_tls[0]["Condition"]["NumericLessThan"] == {"s3:TlsVersion": 1.2}


def test_kyc_bucket_accepts_presigned_puts_from_browsers(data: Template) -> None:
    data.has_resource_properties(
        BUCKET,
        {
            "CorsConfiguration": {
                "CorsRules": [
                    Match.object_like(
                        {"AllowedMethods": Match.array_with(["PUT"]), "AllowedOrigins": ["*"], "AllowedHeaders": ["*"]}
                    )
                ]
            },
            "LoggingConfiguration": Match.object_like({"LogFilePrefix": "kyc-documents/"}),
        },
    )


def test_ecr_tags_are_immutable_and_images_scanned(registry: Template) -> None:
    repository = props(only(registry.find_resources("AWS::ECR::Repository")))
    assert repository["RepositoryName"] == "car-rental-backend"
    assert repository["ImageTagMutability"] == "IMMUTABLE"
    assert repository["ImageScanningConfiguration"] == {"ScanOnPush": True}


def test_ecr_keeps_the_newest_30_tagged_images_and_drops_untagged_ones_after_a_day(registry: Template) -> None:
    # Never more than `inv images.cleanup` deletes (its default --keep is 10, untagged images go after a day there
    # too); tests/unit/test_image_cleanup.py holds the two side by side.
    repository = only(registry.find_resources("AWS::ECR::Repository"))
    rules = json.loads(props(repository)["LifecyclePolicy"]["LifecyclePolicyText"])["rules"]
    assert [(r["rulePriority"], r["selection"], r["action"]) for r in rules] == [
        (
            1,
            {"tagStatus": "untagged", "countType": "sinceImagePushed", "countNumber": 1, "countUnit": "days"},
            {"type": "expire"},
        ),
        (
            2,
            {"tagStatus": "tagged", "tagPatternList": ["*"], "countType": "imageCountMoreThan", "countNumber": 30},
            {"type": "expire"},
        ),
    ]
    assert not [r for r in rules if r["selection"]["tagStatus"] == "any"], "no rule counts untagged images in"
    assert repository["DeletionPolicy"] == "Retain"


def test_templates_expire_and_nothing_else_in_the_artifacts_bucket(registry: Template) -> None:
    """The templates deploykit keeps for stack rollbacks (deploykit/templates/) go after 180 days, those it hands
    CloudFormation through S3 (deploykit/cfn/) after 7; the Lambda zips, the history, the live record and the lock
    never expire (only their old versions do, as in every bucket): a rule cannot tell a zip a function or the API
    stack still names from one nothing does, which `inv lambda.cleanup` tells (deploykit/zip_cleanup.py)."""
    bucket = only(registry.find_resources(BUCKET))
    rules = {r["Id"]: r for r in props(bucket)["LifecycleConfiguration"]["Rules"]}
    assert rules["kept-templates"] == {
        "Id": "kept-templates",
        "Prefix": "deploykit/templates/",
        "ExpirationInDays": 180,
        "Status": "Enabled",
    }
    assert rules["staged-templates"] == {
        "Id": "staged-templates",
        "Prefix": "deploykit/cfn/",
        "ExpirationInDays": 7,
        "Status": "Enabled",
    }
    assert sorted(rules) == ["kept-templates", "staged-templates", "tidy"] and "ExpirationInDays" not in rules["tidy"]


def test_user_pool_password_policy_is_strong(auth: Template) -> None:
    auth.has_resource_properties(
        "AWS::Cognito::UserPool",
        {
            "Policies": {
                "PasswordPolicy": {
                    "MinimumLength": 12,
                    "RequireLowercase": True,
                    "RequireUppercase": True,
                    "RequireNumbers": True,
                    "RequireSymbols": True,
                    "TemporaryPasswordValidityDays": 3,
                }
            }
        },
    )


def test_user_pool_has_no_self_sign_up_and_is_retained(auth: Template) -> None:
    pool = only(auth.find_resources("AWS::Cognito::UserPool"))
    assert props(pool)["AdminCreateUserConfig"]["AllowAdminCreateUserOnly"] is True
    assert props(pool)["UsernameAttributes"] == ["email"]
    assert (pool["DeletionPolicy"], pool["UpdateReplacePolicy"]) == ("Retain", "Retain")


def test_app_client_has_no_secret_and_user_password_auth(auth: Template) -> None:
    client = props(only(auth.find_resources("AWS::Cognito::UserPoolClient")))
    assert client.get("GenerateSecret", False) is False
    assert sorted(client["ExplicitAuthFlows"]) == ["ALLOW_REFRESH_TOKEN_AUTH", "ALLOW_USER_PASSWORD_AUTH"]
    assert client["PreventUserExistenceErrors"] == "ENABLED"


def test_tables_are_on_demand_with_point_in_time_recovery_and_retained(data: Template) -> None:
    tables = data.find_resources("AWS::DynamoDB::Table")
    assert len(tables) == 3
    for logical_id, table in tables.items():
        assert props(table)["BillingMode"] == "PAY_PER_REQUEST", logical_id
        assert props(table)["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}, logical_id
        assert (table["DeletionPolicy"], table["UpdateReplacePolicy"]) == ("Retain", "Retain"), logical_id


@pytest.mark.parametrize(
    ("table", "keys"),
    [
        ("CarsTable", [("car_id", "HASH")]),
        ("BookingsTable", [("user_id", "HASH"), ("booking_id", "RANGE")]),
        ("KycTable", [("user_id", "HASH"), ("case_id", "RANGE")]),
    ],
)
def test_table_keys_scope_data_to_its_user(data: Template, table: str, keys: list[tuple[str, str]]) -> None:
    (resource,) = [
        r for logical_id, r in data.find_resources("AWS::DynamoDB::Table").items() if logical_id.startswith(table)
    ]
    assert [(k["AttributeName"], k["KeyType"]) for k in props(resource)["KeySchema"]] == keys


def test_backend_data_access_has_no_wildcard_actions(data: Template) -> None:
    policy = props(only(data.find_resources("AWS::IAM::ManagedPolicy")))
    statements = {s["Sid"]: s for s in policy["PolicyDocument"]["Statement"]}
    assert set(statements) == {"CarsTable", "BookingsTable", "KycTable", "KycDocuments", "KycBucket"}
    actions = [a for s in statements.values() for a in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])]
    assert actions and not [a for a in actions if "*" in a]
    # the calls backend/app/store.py makes on each table, no more: no batch, no index, Scan on the fleet
    # alone (every customer's bookings and KYC cases were open to a Scan)
    for sid, calls in {
        "CarsTable": ["DescribeTable", "GetItem", "PutItem", "Scan"],
        "BookingsTable": ["DeleteItem", "DescribeTable", "GetItem", "PutItem", "Query", "UpdateItem"],
        "KycTable": ["DescribeTable", "GetItem", "PutItem", "Query", "UpdateItem"],
    }.items():
        assert sorted(statements[sid]["Action"]) == [f"dynamodb:{call}" for call in calls]
        (table,) = [logical_id for logical_id in data.find_resources(TABLE) if logical_id.startswith(sid)]
        assert statements[sid]["Resource"] == {"Fn::GetAtt": [table, "Arn"]}
    (bucket,) = [b for b in data.find_resources(BUCKET) if b.startswith("KycDocumentsBucket")]
    assert statements["KycDocuments"]["Resource"] == {"Fn::Join": ["", [{"Fn::GetAtt": [bucket, "Arn"]}, "/kyc/*"]]}
    assert sorted(statements["KycDocuments"]["Action"]) == [
        "s3:DeleteObject",  # a refused document is deleted, every version of it
        "s3:DeleteObjectVersion",
        "s3:GetObject",
        "s3:GetObjectVersion",  # the version submit checked, read at that version
        "s3:PutObject",
    ]
    assert sorted(statements["KycBucket"]["Action"]) == ["s3:ListBucket", "s3:ListBucketVersions"]


def test_task_role_gets_the_data_policy_and_describe_user_pool_only(fargate: Template) -> None:
    roles = fargate.find_resources("AWS::IAM::Role")
    (task_role,) = [r for logical_id, r in roles.items() if logical_id.startswith("TaskDefinitionTaskRole")]
    assert [list(arn) for arn in props(task_role)["ManagedPolicyArns"]] == [["Fn::ImportValue"]]
    policies = fargate.find_resources("AWS::IAM::Policy")
    (task_policy,) = [p for logical_id, p in policies.items() if logical_id.startswith("TaskDefinitionTaskRole")]
    (statement,) = props(task_policy)["PolicyDocument"]["Statement"]
    assert statement["Action"] == "cognito-idp:DescribeUserPool"
    assert "Fn::ImportValue" in statement["Resource"]


def test_tasks_accept_traffic_from_the_load_balancer_only(fargate: Template) -> None:
    groups = fargate.find_resources("AWS::EC2::SecurityGroup")
    (service_group,) = [g for g in groups if g.startswith("ServiceSecurityGroup")]
    (alb_group,) = [g for g in groups if g.startswith("LoadBalancerSecurityGroup")]
    assert "SecurityGroupIngress" not in props(groups[service_group])
    ingress = [
        props(r)
        for r in fargate.find_resources("AWS::EC2::SecurityGroupIngress").values()
        if props(r)["GroupId"] == {"Fn::GetAtt": [service_group, "GroupId"]}
    ]
    assert ingress == [
        {
            "IpProtocol": "tcp",
            "Description": "Load balancer to target",
            "FromPort": 8000,
            "ToPort": 8000,
            "GroupId": {"Fn::GetAtt": [service_group, "GroupId"]},
            "SourceSecurityGroupId": {"Fn::GetAtt": [alb_group, "GroupId"]},
        }
    ]


def test_vpc_has_no_nat_gateway_and_flow_logs(fargate: Template) -> None:
    fargate.resource_count_is("AWS::EC2::NatGateway", 0)
    fargate.has_resource_properties(
        "AWS::EC2::FlowLog", {"TrafficType": "ALL", "LogDestinationType": "cloud-watch-logs"}
    )


@pytest.mark.parametrize("name", ["LoginHandler", "HealthHandler"])
def test_lambda_role_may_only_write_its_own_logs(api: Template, name: str) -> None:
    policies = api.find_resources("AWS::IAM::Policy")
    (policy,) = [p for logical_id, p in policies.items() if logical_id.startswith(f"{name}Role")]
    (statement,) = props(policy)["PolicyDocument"]["Statement"]
    assert sorted(statement["Action"]) == ["logs:CreateLogStream", "logs:PutLogEvents"]
    (log_group,) = [g for g in api.find_resources("AWS::Logs::LogGroup") if g.startswith(f"{name}Logs")]
    assert statement["Resource"] == {"Fn::GetAtt": [log_group, "Arn"]}
    roles = api.find_resources("AWS::IAM::Role")
    (role,) = [r for logical_id, r in roles.items() if logical_id.startswith(f"{name}Role")]
    assert "ManagedPolicyArns" not in props(role)


def test_api_never_logs_bodies(api: Template) -> None:
    stage = props(only(api.find_resources("AWS::ApiGateway::Stage")))
    (settings,) = stage["MethodSettings"]
    assert settings["DataTraceEnabled"] is False
    assert settings["LoggingLevel"] == "ERROR"
    assert "DestinationArn" in stage["AccessLogSetting"]


def test_api_validates_the_login_body(api: Template) -> None:
    api.has_resource_properties(
        "AWS::ApiGateway::RequestValidator", {"ValidateRequestBody": True, "ValidateRequestParameters": True}
    )
    model = props(only(api.find_resources("AWS::ApiGateway::Model")))
    assert model["Schema"]["required"] == ["username", "password"]
    assert model["Schema"]["properties"]["username"] == {"type": "string", "minLength": 1, "maxLength": 128}
    assert model["Schema"]["properties"]["password"] == {"type": "string", "minLength": 1, "maxLength": 256}
    (login,) = api.find_resources("AWS::ApiGateway::Method", {"Properties": {"HttpMethod": "POST"}}).values()
    assert list(props(login)["RequestModels"]) == ["application/json"]
    api.has_resource_properties(
        "AWS::ApiGateway::GatewayResponse", {"ResponseType": "BAD_REQUEST_BODY", "StatusCode": "400"}
    )
