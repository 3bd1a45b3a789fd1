"""Endpoints from the stacks' outputs (moto's CloudFormation), with deploy.toml's overrides applied last."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from typing import Any
from unittest.mock import Mock

import boto3
import pytest
from moto import mock_aws

from deploykit import lambda_chain
from deploykit.aws import AwsFactory
from deploykit.config import EnvConfig, Stacks
from deploykit.endpoints import Endpoints, override_keys, resolve_endpoints
from deploykit.errors import ConfigError, UsageError
from deploykit.plan import Context
from deploykit.stack_chain import artifacts_bucket
from deploykit.stacks import StackOutputs
from tests.functional.conftest import REGION, held_together

API_ID = "a1b2c3d4e5"
POOL = f"{REGION}_AbCdEf123"
AWS_API = f"https://{API_ID}.execute-api.{REGION}.amazonaws.com/prod/"
ISSUER = f"https://cognito-idp.{REGION}.amazonaws.com/{POOL}"

OUTPUTS: dict[str, dict[str, str]] = {
    "registry": {
        "RepositoryName": "car-rental-backend",
        "RepositoryUri": f"123456789012.dkr.ecr.{REGION}.amazonaws.com/car-rental-backend",
        "RepositoryArn": f"arn:aws:ecr:{REGION}:123456789012:repository/car-rental-backend",
        "ArtifactsBucketName": "registry-artifacts-1",
    },
    "data": {
        "CarsTableName": "data-cars-1",
        "BookingsTableName": "data-bookings-1",
        "KycTableName": "data-kyc-1",
        "KycBucketName": "data-kyc-docs-1",
        "KycAccessLogsBucketName": "data-kyc-logs-1",
    },
    "auth": {
        "UserPoolId": POOL,
        "UserPoolArn": f"arn:aws:cognito-idp:{REGION}:123456789012:userpool/{POOL}",
        "UserPoolClientId": "client123",
        "UserPoolIssuer": ISSUER,
        "UserPoolJwksUrl": f"{ISSUER}/.well-known/jwks.json",
    },
    "fargate": {
        "AlbUrl": "http://alb-1.eu-west-1.elb.amazonaws.com",
        "AlbDnsName": "alb-1.eu-west-1.elb.amazonaws.com",
        "LoadBalancerArn": "arn:lb",
        "TargetGroupArn": "arn:tg",
        "ClusterName": "car-rental-cluster",
        "ServiceName": "car-rental-service",
        "ServiceArn": "arn:service",
        "ContainerName": "backend",
        "ContainerPort": "8000",
        "TaskDefinitionFamily": "car-rental-service",
        "BackendLogGroupName": "/car-rental/backend",
    },
    "api": {
        "ApiUrl": AWS_API,
        "ApiId": API_ID,
        "ApiStageName": "prod",
        "ApiHealthUrl": f"{AWS_API}health",
        "LoginUrl": f"{AWS_API}auth/login",
        "LoginHandlerFunctionName": "api-login-1",
        "LoginHandlerFunctionArn": "arn:login",
        "LoginHandlerAliasArn": "arn:login:live",
        "HealthHandlerFunctionName": "api-health-1",
        "HealthHandlerFunctionArn": "arn:health",
        "HealthHandlerAliasArn": "arn:health:live",
    },
}


def env_config(prefix: str = "CarRental") -> EnvConfig:
    return EnvConfig(
        name="dev",
        region=REGION,
        cluster="car-rental-cluster",
        service="car-rental-service",
        container="backend",
        repository="car-rental-backend",
        stacks=Stacks(
            registry=f"{prefix}RegistryStack",
            data=f"{prefix}DataStack",
            auth=f"{prefix}AuthStack",
            fargate=f"{prefix}FargateStack",
            api=f"{prefix}ApiStack",
        ),
    )


def create_stack(cfn: Any, name: str, outputs: dict[str, str]) -> None:
    template = {
        "Resources": {
            "Marker": {
                "Type": "AWS::SSM::Parameter",
                "Properties": {"Name": f"/stacks/{name}", "Type": "String", "Value": name},
            }
        },
        "Outputs": {key: {"Value": value} for key, value in outputs.items()},
    }
    cfn.create_stack(StackName=name, TemplateBody=json.dumps(template))


@pytest.fixture
def cfn(aws_credentials: None) -> Iterator[Any]:
    with mock_aws():
        yield boto3.client("cloudformation", region_name=REGION)


@pytest.fixture
def env() -> EnvConfig:
    return env_config()


@pytest.fixture
def deployed(cfn: Any, env: EnvConfig) -> Any:
    for role, outputs in OUTPUTS.items():
        create_stack(cfn, getattr(env.stacks, role), outputs)
    return cfn


def test_endpoints_come_from_the_outputs_of_the_environments_stacks(deployed: Any, env: EnvConfig) -> None:
    ep = resolve_endpoints(StackOutputs(deployed), env)
    assert isinstance(ep, Endpoints) and ep.env == "dev" and ep.region == REGION
    assert ep.alb_url == "http://alb-1.eu-west-1.elb.amazonaws.com"
    assert ep.api_url == AWS_API and ep.login_url == f"{AWS_API}auth/login" and ep.api_health_url == f"{AWS_API}health"
    assert ep.user_pool_id == POOL and ep.user_pool_client_id == "client123"
    assert ep.user_pool_issuer == ISSUER and ep.jwks_url == f"{ISSUER}/.well-known/jwks.json"
    assert ep.tables == {"cars": "data-cars-1", "bookings": "data-bookings-1", "kyc": "data-kyc-1"}
    assert ep.buckets == {
        "kyc": "data-kyc-docs-1",
        "kyc_access_logs": "data-kyc-logs-1",
        "artifacts": "registry-artifacts-1",
    }
    assert ep.functions == {"login_handler": "api-login-1", "health_handler": "api-health-1"}
    assert ep.aliases == {"login_handler": "arn:login:live", "health_handler": "arn:health:live"}
    assert (ep.cluster, ep.service, ep.container, ep.container_port) == (
        "car-rental-cluster",
        "car-rental-service",
        "backend",
        "8000",
    )
    assert ep.repository_uri.endswith("/car-rental-backend") and ep.artifacts_bucket == "registry-artifacts-1"
    assert ep.outputs["CarRentalApiStack"]["ApiId"] == API_ID
    assert json.loads(json.dumps(ep.to_json()))["tables"]["cars"] == "data-cars-1"


def test_the_outputs_of_a_stack_of_the_teams_own_are_read_with_the_others_and_an_override_may_use_them(
    deployed: Any, env: EnvConfig
) -> None:
    """A check plugin of the team's own stack reads its outputs there (ctx.endpoints.outputs), by the stack's name in
    the environment; one not deployed yet is no endpoint's, and resolves as before."""
    own = dataclasses.replace(env, stacks=dataclasses.replace(env.stacks, own=(("notifications", "Notify"),)))
    assert "Notify" not in resolve_endpoints(StackOutputs(deployed), own).outputs
    create_stack(deployed, "Notify", {"QueueUrl": "https://sqs/notify"})
    found = resolve_endpoints(StackOutputs(deployed), own, {"alb_url": "{QueueUrl}/alb"})
    assert found.outputs[own.stacks.roles()["notifications"]] == {"QueueUrl": "https://sqs/notify"}
    assert found.alb_url == "https://sqs/notify/alb"
    assert "Notify" not in resolve_endpoints(StackOutputs(deployed), env).outputs  # not named: not read


def test_stack_names_come_from_the_environment(cfn: Any) -> None:
    env = env_config("Staging")
    for role, outputs in OUTPUTS.items():
        create_stack(
            cfn, getattr(env.stacks, role), {**outputs, "ClusterName": "staging"} if role == "fargate" else outputs
        )
    assert resolve_endpoints(StackOutputs(cfn), env).cluster == "staging"


def test_overrides_are_templates_over_the_outputs_and_urls_below_the_api_follow(deployed: Any, env: EnvConfig) -> None:
    ep = resolve_endpoints(
        StackOutputs(deployed),
        env,
        {
            "alb_url": "http://127.0.0.1:8080",
            "api_url": "http://127.0.0.1:4567/restapis/{ApiId}/{ApiStageName}/_user_request_/",
            "jwks_url": "http://127.0.0.1:4566/{UserPoolId}/.well-known/jwks.json",
            "tables.cars": "{CarsTableName}-copy",
        },
    )
    local_api = f"http://127.0.0.1:4567/restapis/{API_ID}/prod/_user_request_/"
    assert ep.alb_url == "http://127.0.0.1:8080"
    assert ep.api_url == local_api
    assert ep.login_url == f"{local_api}auth/login" and ep.api_health_url == f"{local_api}health"
    assert ep.jwks_url == f"http://127.0.0.1:4566/{POOL}/.well-known/jwks.json"
    assert ep.user_pool_issuer == ISSUER  # the issuer stays what the tokens say
    assert ep.tables["cars"] == "data-cars-1-copy" and ep.tables["kyc"] == "data-kyc-1"


def test_an_overridden_login_url_is_kept_and_endpoint_names_can_be_used(deployed: Any, env: EnvConfig) -> None:
    ep = resolve_endpoints(
        StackOutputs(deployed),
        env,
        {"api_url": "http://127.0.0.1:4567/{ApiId}/", "login_url": "{alb_url}/login", "service": "{env}-{region}"},
    )
    assert ep.login_url == "http://alb-1.eu-west-1.elb.amazonaws.com/login"
    assert ep.api_health_url == f"http://127.0.0.1:4567/{API_ID}/health"
    assert ep.service == f"dev-{REGION}"


def test_a_missing_stack_is_named_with_the_command_that_deploys_it(cfn: Any, env: EnvConfig) -> None:
    for role in ("registry", "data", "auth"):
        create_stack(cfn, getattr(env.stacks, role), OUTPUTS[role])
    with pytest.raises(UsageError) as err:
        resolve_endpoints(StackOutputs(cfn), env)
    assert "not deployed: CarRentalFargateStack, CarRentalApiStack" in err.value.message
    assert err.value.next_step == "deploy the stacks: inv deploy.full --env dev"
    assert err.value.exit_code == 2


def test_a_missing_output_is_named(cfn: Any, env: EnvConfig) -> None:
    for role, outputs in OUTPUTS.items():
        kept = {k: v for k, v in outputs.items() if k != "LoginUrl"}
        create_stack(cfn, getattr(env.stacks, role), kept)
    with pytest.raises(UsageError, match="CarRentalApiStack has no output LoginUrl"):
        resolve_endpoints(StackOutputs(cfn), env)
    assert (
        resolve_endpoints(StackOutputs(cfn), env, {"login_url": "{ApiUrl}auth/login"}).login_url
        == f"{AWS_API}auth/login"
    )


def test_every_function_of_the_api_stack_is_found_by_its_outputs(cfn: Any, env: EnvConfig) -> None:
    for role, outputs in OUTPUTS.items():
        if role == "api":  # a function added to the stack (folder lambda/s3_price_v2), outputs as the stack names them
            outputs = outputs | {
                "S3PriceV2FunctionName": "api-price-1",
                "S3PriceV2FunctionArn": "arn:price",
                "S3PriceV2AliasArn": "arn:price:live",
                "Lowercase_FunctionName": "x",  # names no folder: function_id makes no "_"
                "FunctionName": "y",
            }
        create_stack(cfn, getattr(env.stacks, role), outputs)
    ep = resolve_endpoints(StackOutputs(cfn), env)
    assert ep.functions == {
        "login_handler": "api-login-1",
        "health_handler": "api-health-1",
        "s3_price_v2": "api-price-1",
    }
    assert ep.aliases == {
        "login_handler": "arn:login:live",
        "health_handler": "arn:health:live",
        "s3_price_v2": "arn:price:live",
    }
    # deploy.lambda's reading of the API stack alone finds the same functions
    assert lambda_chain.deployed_functions(StackOutputs(cfn), env) == ep.functions
    # a function's outputs may be overridden like any mapped endpoint
    overridden = resolve_endpoints(StackOutputs(cfn), env, {"functions.s3_price_v2": "{S3PriceV2FunctionName}-x"})
    assert overridden.functions["s3_price_v2"] == "api-price-1-x"
    with pytest.raises(ConfigError, match=r"functions\.Price") as err:
        resolve_endpoints(StackOutputs(cfn), env, {"functions.Price": "x"})
    assert "functions.<fn>, aliases.<fn>)" in err.value.message  # the keys it may be


def test_a_function_a_stack_of_the_teams_own_holds_is_found_by_its_outputs_there_with_its_stack(
    deployed: Any, env: EnvConfig
) -> None:
    """Any stack may hold functions (stacks/common/functions.py makes the same outputs): each is found where it is,
    and ``hosts`` names its stack; read the same when other stacks are missing (deploy.lambda, a destroyed API)."""
    own = dataclasses.replace(env, stacks=dataclasses.replace(env.stacks, own=(("jobs", "Jobs"),)))
    create_stack(deployed, "Jobs", {"NightlyJobFunctionName": "jobs-nightly-1", "NightlyJobAliasArn": "arn:nightly"})
    found = resolve_endpoints(StackOutputs(deployed), own)
    assert found.functions == {
        "login_handler": "api-login-1",
        "health_handler": "api-health-1",
        "nightly_job": "jobs-nightly-1",
    }
    assert found.aliases["nightly_job"] == "arn:nightly"
    assert found.hosts == {"login_handler": env.stacks.api, "health_handler": env.stacks.api, "nightly_job": "Jobs"}
    assert lambda_chain.function_hosts(StackOutputs(deployed), own) == {
        "login_handler": "api",
        "health_handler": "api",
        "nightly_job": "jobs",
    }
    deployed.delete_stack(StackName=env.stacks.api)  # the endpoints no longer resolve: each stack's outputs do
    assert lambda_chain.deployed_functions(StackOutputs(deployed), own) == {"nightly_job": "jobs-nightly-1"}
    assert lambda_chain.function_hosts(StackOutputs(deployed), own) == {"nightly_job": "jobs"}
    with pytest.raises(UsageError, match="the API stack CarRentalApiStack is not deployed in environment 'dev'"):
        lambda_chain.deployed_functions(StackOutputs(deployed), env)  # none holds a function: the API stack named


def test_a_deleted_stack_counts_as_missing(deployed: Any, env: EnvConfig) -> None:
    deployed.delete_stack(StackName=env.stacks.api)
    with pytest.raises(UsageError, match="not deployed: CarRentalApiStack"):
        resolve_endpoints(StackOutputs(deployed), env)


def test_an_unknown_override_key_is_a_config_error(deployed: Any, env: EnvConfig) -> None:
    with pytest.raises(ConfigError) as err:
        resolve_endpoints(StackOutputs(deployed), env, {"api_ur1": "http://x", "tables.car": "x"})
    assert "api_ur1" in err.value.message and "tables.car" in err.value.message
    assert "tables.cars" in err.value.message  # the known keys are listed
    assert "api_url" in override_keys()


def test_an_override_naming_no_output_is_a_config_error(deployed: Any, env: EnvConfig) -> None:
    with pytest.raises(ConfigError) as err:
        resolve_endpoints(StackOutputs(deployed), env, {"api_url": "http://127.0.0.1:4567/restapis/{RestApiId}/"})
    assert "{RestApiId}" in err.value.message and "ApiId" in err.value.message
    assert err.value.next_step == "fix [environments.dev.endpoints] in deploy.toml"
    with pytest.raises(ConfigError, match="not a valid template"):
        resolve_endpoints(StackOutputs(deployed), env, {"alb_url": "http://{AlbDnsName"})


def test_the_five_stacks_are_read_at_once(deployed: Any, env: EnvConfig) -> None:
    """One round trip for the five outputs, not five: each DescribeStacks waits until all five are in flight."""
    held_together(deployed, "DescribeStacks", 5)
    assert resolve_endpoints(StackOutputs(deployed), env).tables["cars"] == "data-cars-1"


def test_a_registry_stack_without_its_bucket_names_the_deploy_of_this_environment(cfn: Any, env: EnvConfig) -> None:
    """`inv deploy.stack CarRentalRegistryStack` as the next step, copied as shown, deployed the default
    environment's."""
    create_stack(cfn, env.stacks.registry, {})
    aws = Mock(spec=AwsFactory)
    aws.env, aws.client.return_value, aws.shared.side_effect = env, cfn, lambda make: make(aws)
    ctx = Context(Mock(), env, aws, Mock(), Mock(), Mock())
    with pytest.raises(UsageError) as refused:
        artifacts_bucket(ctx, env.stacks.registry)
    assert refused.value.next_step == f"deploy it first: inv deploy.stack {env.stacks.registry} --env {env.name}"
