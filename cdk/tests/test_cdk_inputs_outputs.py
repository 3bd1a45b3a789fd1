"""Stack inputs (ImageTag, <Function>CodeKey) and outputs: the contract with deploykit."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from aws_cdk.assertions import Template
from cdk_helpers import Synthesized, only, props, synthesize

EXPECTED_OUTPUTS = {
    "registry": {"RepositoryName", "RepositoryUri", "RepositoryArn", "ArtifactsBucketName", "DeployDashboardName"},
    "data": {"CarsTableName", "BookingsTableName", "KycTableName", "KycBucketName", "KycAccessLogsBucketName"},
    "auth": {"UserPoolId", "UserPoolArn", "UserPoolClientId", "UserPoolIssuer", "UserPoolJwksUrl"},
    "fargate": {
        "AlbUrl",
        "AlbDnsName",
        "LoadBalancerArn",
        "TargetGroupArn",
        "ClusterName",
        "ServiceName",
        "ServiceArn",
        "ContainerName",
        "ContainerPort",
        "TaskDefinitionFamily",
        "BackendLogGroupName",
    },
    "api": {
        "ApiUrl",
        "ApiId",
        "ApiStageName",
        "ApiHealthUrl",
        "LoginUrl",
        "LoginHandlerFunctionName",
        "LoginHandlerFunctionArn",
        "LoginHandlerAliasArn",
        "HealthHandlerFunctionName",
        "HealthHandlerFunctionArn",
        "HealthHandlerAliasArn",
    },
}


def user_outputs(template: dict[str, Any]) -> set[str]:
    """Output keys, without the ExportsOutput* entries CDK adds for cross-stack references."""
    return {key for key in template.get("Outputs", {}) if not key.startswith("ExportsOutput")}


@pytest.mark.parametrize("key", sorted(EXPECTED_OUTPUTS))
def test_outputs(synthesized: Synthesized, key: str) -> None:
    assert user_outputs(synthesized.templates[key]) == EXPECTED_OUTPUTS[key]


def test_alb_url_is_http_on_the_load_balancer(fargate: Template) -> None:
    (load_balancer,) = fargate.find_resources("AWS::ElasticLoadBalancingV2::LoadBalancer")
    fargate.has_output("AlbUrl", {"Value": {"Fn::Join": ["", ["http://", {"Fn::GetAtt": [load_balancer, "DNSName"]}]]}})


def test_api_url_is_the_prod_stage(api: Template) -> None:
    url = api.find_outputs("ApiUrl")["ApiUrl"]["Value"]["Fn::Join"][1]
    assert url[0] == "https://"
    assert url[-1] == "/"
    assert {"Ref": next(iter(api.find_resources("AWS::ApiGateway::Stage")))} in url


def test_image_tag_is_a_required_parameter(fargate: Template) -> None:
    parameters = fargate.find_parameters("ImageTag")
    assert set(parameters) == {"ImageTag"}
    assert parameters["ImageTag"]["Type"] == "String"
    assert "Default" not in parameters["ImageTag"], "a stack deploy must always say which image it runs"


def test_image_is_the_repository_at_image_tag(fargate: Template) -> None:
    (definition,) = props(only(fargate.find_resources("AWS::ECS::TaskDefinition")))["ContainerDefinitions"]
    parts = definition["Image"]["Fn::Join"][1]
    assert parts[-2:] == [":", {"Ref": "ImageTag"}]
    assert "Fn::ImportValue" in parts[-3], "the repository comes from the registry stack"


def test_no_stack_has_a_bootstrap_version_parameter(synthesized: Synthesized) -> None:
    for key, template in synthesized.templates.items():
        assert "BootstrapVersion" not in template.get("Parameters", {}), key
        assert "Rules" not in template, key


@pytest.mark.parametrize("key", ["registry", "data", "auth"])
def test_stacks_without_inputs(synthesized: Synthesized, key: str) -> None:
    assert synthesized.templates[key].get("Parameters", {}) == {}


FUNCTIONS = {"LoginHandler": "POST", "HealthHandler": "GET"}


def test_each_function_folder_is_in_one_stack_with_the_outputs_deploykit_finds_it_by(synthesized: Synthesized) -> None:
    from stacks.common.functions import function_id

    folders = sorted(p.parent.name for p in (Path(__file__).resolve().parents[2] / "lambda").glob("*/handler.py"))
    holders: dict[str, list[str]] = {folder: [] for folder in folders}
    for key, template in synthesized.templates.items():
        for folder in folders:  # deploykit: <folder in CamelCase>CodeKey, FunctionName and AliasArn
            name = function_id(folder)
            if f"{name}CodeKey" in template.get("Parameters", {}):
                holders[folder].append(key)
                assert {f"{name}FunctionName", f"{name}AliasArn"} <= set(template.get("Outputs", {})), key
    assert {folder: found for folder, found in holders.items() if len(found) != 1} == {}  # each in one stack
    assert holders["login_handler"] == holders["health_handler"] == ["api"]


def test_each_route_calls_a_function_of_lambda(api: Template) -> None:
    from stacks.api_stack import FUNCTIONS as ROUTES

    folders = sorted(p.parent.name for p in (Path(__file__).resolve().parents[2] / "lambda").glob("*/handler.py"))
    assert {route.folder for route in ROUTES} <= set(folders)
    for route in ROUTES:
        assert f"{route.construct_id}CodeKey" in api.find_parameters("*")


def function_resources(api: Template, name: str, resource_type: str) -> dict[str, Any]:
    """The one resource of `resource_type` whose logical id starts with the function's construct id."""
    found = {k: v for k, v in api.find_resources(resource_type).items() if k.startswith(name)}
    assert len(found) == 1, f"{name}: {sorted(found)}"
    return found


def test_lambda_code_keys_are_required_parameters(api: Template) -> None:
    parameters = api.find_parameters("*")
    assert set(parameters) == {"LoginHandlerCodeKey", "HealthHandlerCodeKey"}
    for parameter in parameters.values():
        assert parameter["Type"] == "String"
        assert "Default" not in parameter, "a stack deploy must always say which code it runs"


@pytest.mark.parametrize("name", sorted(FUNCTIONS))
def test_lambda_code_is_the_artifacts_bucket_at_the_code_key(api: Template, name: str) -> None:
    function = props(only(function_resources(api, name, "AWS::Lambda::Function")))
    assert function["Code"]["S3Key"] == {"Ref": f"{name}CodeKey"}
    assert "Fn::ImportValue" in function["Code"]["S3Bucket"], "the bucket comes from the registry stack"
    assert function["Handler"] == "handler.handler"
    assert function["Runtime"] == "python3.11", "the runtime of the wheels deploykit packages"


def test_every_function_runs_on_the_architecture_and_the_runtime_deploy_toml_names(
    api: Template, tmp_path: Path
) -> None:
    """[build] lambda_architecture and lambda_runtime reach the stack as context: deploykit vendors the functions'
    requirements for the same ones."""
    for name in FUNCTIONS:
        assert props(only(function_resources(api, name, "AWS::Lambda::Function")))["Architectures"] == ["x86_64"]
    other = synthesize(tmp_path / "arm64", {"lambda_architecture": "arm64", "lambda_runtime": "python3.13"})
    for name in FUNCTIONS:
        function = props(only(function_resources(other.template("api"), name, "AWS::Lambda::Function")))
        assert function["Architectures"] == ["arm64"] and function["Runtime"] == "python3.13"


def test_the_tasks_run_on_the_architecture_the_image_is_built_for(fargate: Template, tmp_path: Path) -> None:
    """[build] platform reaches the stack as context (cpu_architecture): deploykit builds the image for the same one."""

    def runs_on(template: Template) -> str:
        task = props(only(template.find_resources("AWS::ECS::TaskDefinition")))
        return str(task["RuntimePlatform"]["CpuArchitecture"])

    assert runs_on(fargate) == "X86_64"
    assert runs_on(synthesize(tmp_path / "arm64", {"cpu_architecture": "ARM64"}).template("fargate")) == "ARM64"


def test_login_handler_knows_the_app_client(api: Template) -> None:
    login = props(only(function_resources(api, "LoginHandler", "AWS::Lambda::Function")))
    assert set(login["Environment"]["Variables"]) == {"USER_POOL_CLIENT_ID"}
    assert "Fn::ImportValue" in login["Environment"]["Variables"]["USER_POOL_CLIENT_ID"]
    health = props(only(function_resources(api, "HealthHandler", "AWS::Lambda::Function")))
    assert "Environment" not in health


@pytest.mark.parametrize("name", sorted(FUNCTIONS))
def test_a_new_code_key_publishes_a_new_version(api: Template, name: str) -> None:
    # CloudFormation replaces a version when its description changes: the description carries the key.
    version = only(function_resources(api, name, "AWS::Lambda::Version"))
    assert {"Ref": f"{name}CodeKey"} in props(version)["Description"]["Fn::Join"][1]
    assert (version["DeletionPolicy"], version["UpdateReplacePolicy"]) == ("Retain", "Retain")


@pytest.mark.parametrize(("name", "http_method"), sorted(FUNCTIONS.items()))
def test_the_api_integrates_the_live_alias(api: Template, name: str, http_method: str) -> None:
    (version_id,) = function_resources(api, name, "AWS::Lambda::Version")
    ((alias_id, alias),) = function_resources(api, name, "AWS::Lambda::Alias").items()
    assert props(alias)["Name"] == "live"
    assert props(alias)["FunctionVersion"] == {"Fn::GetAtt": [version_id, "Version"]}
    methods = api.find_resources("AWS::ApiGateway::Method", {"Properties": {"HttpMethod": http_method}})
    integration = props(only(methods))["Integration"]
    assert integration["Type"] == "AWS_PROXY"
    assert {"Ref": alias_id} in integration["Uri"]["Fn::Join"][1]
    api.has_resource_properties(
        "AWS::Lambda::Permission", {"FunctionName": {"Ref": alias_id}, "Principal": "apigateway.amazonaws.com"}
    )


def test_routes(api: Template) -> None:
    resources = api.find_resources("AWS::ApiGateway::Resource")
    paths = {props(r)["PathPart"] for r in resources.values()}
    assert paths == {"auth", "login", "health"}
    methods = sorted(props(m)["HttpMethod"] for m in api.find_resources("AWS::ApiGateway::Method").values())
    assert methods == ["GET", "POST"]
    api.has_resource_properties("AWS::ApiGateway::Stage", {"StageName": "prod"})


def test_a_function_may_keep_environments_initialized_for_its_alias() -> None:
    """deployed_function's provisioned_concurrency puts a ProvisionedConcurrencyConfig on the `live` alias (none by
    default): deploykit's move of the alias waits until those environments serve the new version."""
    from aws_cdk import App, Stack
    from aws_cdk import aws_s3 as s3
    from stacks.common.functions import deployed_function
    from stacks.common.settings import Settings

    stack = Stack(App(), "Team")
    bucket = s3.Bucket.from_bucket_name(stack, "Artifacts", "artifacts")
    common = {"settings": Settings(), "artifacts_bucket": bucket}
    deployed_function(stack, "warm_worker", description="kept warm", provisioned_concurrency=2, **common)
    deployed_function(stack, "cold_worker", description="started on demand", **common)
    aliases = Template.from_stack(stack).find_resources("AWS::Lambda::Alias")
    configs = {
        logical[: -len("Alias") - 8]: props(alias).get("ProvisionedConcurrencyConfig")
        for logical, alias in aliases.items()
    }
    assert configs == {"WarmWorker": {"ProvisionedConcurrentExecutions": 2}, "ColdWorker": None}, aliases
