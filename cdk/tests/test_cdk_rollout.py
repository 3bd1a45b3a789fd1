"""The rollout settings of CarRentalFargateStack, pinned value by value (see fargate_stack.py for the why).

The expected values are literals on purpose: a change to a rollout setting must change this file too.
"""

from __future__ import annotations

from typing import Any

import pytest
from aws_cdk.assertions import Match, Template
from cdk_helpers import only, props

TARGET_GROUP = "AWS::ElasticLoadBalancingV2::TargetGroup"
SERVICE = "AWS::ECS::Service"
TASK_DEFINITION = "AWS::ECS::TaskDefinition"


@pytest.fixture(scope="module")
def target_group(fargate: Template) -> dict[str, Any]:
    return props(only(fargate.find_resources(TARGET_GROUP)))


@pytest.fixture(scope="module")
def service(fargate: Template) -> dict[str, Any]:
    return props(only(fargate.find_resources(SERVICE)))


@pytest.fixture(scope="module")
def container(fargate: Template) -> dict[str, Any]:
    definitions = props(only(fargate.find_resources(TASK_DEFINITION)))["ContainerDefinitions"]
    assert len(definitions) == 1
    result: dict[str, Any] = definitions[0]
    return result


def test_deregistration_delay_is_5_seconds(fargate: Template, target_group: dict[str, Any]) -> None:
    fargate.has_resource_properties(
        TARGET_GROUP,
        {"TargetGroupAttributes": Match.array_with([{"Key": "deregistration_delay.timeout_seconds", "Value": "5"}])},
    )
    attributes = {a["Key"]: a["Value"] for a in target_group["TargetGroupAttributes"]}
    assert attributes["deregistration_delay.timeout_seconds"] == "5"


def test_target_health_check_interval_is_5_seconds(target_group: dict[str, Any]) -> None:
    assert target_group["HealthCheckIntervalSeconds"] == 5


def test_target_healthy_threshold_is_2(target_group: dict[str, Any]) -> None:
    assert target_group["HealthyThresholdCount"] == 2


def test_target_unhealthy_threshold_is_2(target_group: dict[str, Any]) -> None:
    assert target_group["UnhealthyThresholdCount"] == 2


def test_target_health_check_timeout_is_4_seconds(target_group: dict[str, Any]) -> None:
    assert target_group["HealthCheckTimeoutSeconds"] == 4
    assert target_group["HealthCheckTimeoutSeconds"] < target_group["HealthCheckIntervalSeconds"]


def test_target_health_check_path_is_health(fargate: Template, target_group: dict[str, Any]) -> None:
    fargate.has_resource_properties(TARGET_GROUP, {"HealthCheckPath": "/health", "Matcher": {"HttpCode": "200"}})
    assert target_group["HealthCheckPath"] == "/health"


def test_target_group_points_at_the_container_port(target_group: dict[str, Any]) -> None:
    assert target_group["Port"] == 8000
    assert target_group["Protocol"] == "HTTP"
    assert target_group["TargetType"] == "ip"


def test_minimum_healthy_percent_is_100(fargate: Template, service: dict[str, Any]) -> None:
    fargate.has_resource_properties(
        SERVICE, {"DeploymentConfiguration": Match.object_like({"MinimumHealthyPercent": 100})}
    )
    assert service["DeploymentConfiguration"]["MinimumHealthyPercent"] == 100


def test_maximum_percent_is_200(fargate: Template, service: dict[str, Any]) -> None:
    fargate.has_resource_properties(SERVICE, {"DeploymentConfiguration": Match.object_like({"MaximumPercent": 200})})
    assert service["DeploymentConfiguration"]["MaximumPercent"] == 200


def test_circuit_breaker_enabled_with_rollback(fargate: Template, service: dict[str, Any]) -> None:
    fargate.has_resource_properties(
        SERVICE,
        {
            "DeploymentConfiguration": Match.object_like(
                {"DeploymentCircuitBreaker": {"Enable": True, "Rollback": True}}
            )
        },
    )
    assert service["DeploymentConfiguration"]["DeploymentCircuitBreaker"] == {"Enable": True, "Rollback": True}


def test_health_check_grace_period_is_short(service: dict[str, Any]) -> None:
    assert service["HealthCheckGracePeriodSeconds"] == 10


def test_rolling_deployments_by_ecs(service: dict[str, Any]) -> None:
    assert service["DeploymentController"] == {"Type": "ECS"}
    assert service["LaunchType"] == "FARGATE"


def test_service_is_behind_the_target_group(fargate: Template, service: dict[str, Any]) -> None:
    (target_group_id,) = fargate.find_resources(TARGET_GROUP)
    assert service["LoadBalancers"] == [
        {"ContainerName": "backend", "ContainerPort": 8000, "TargetGroupArn": {"Ref": target_group_id}}
    ]


def test_listener_80_forwards_to_the_target_group(fargate: Template) -> None:
    (target_group_id,) = fargate.find_resources(TARGET_GROUP)
    fargate.has_resource_properties(
        "AWS::ElasticLoadBalancingV2::Listener",
        {
            "Port": 80,
            "Protocol": "HTTP",
            "DefaultActions": [{"Type": "forward", "TargetGroupArn": {"Ref": target_group_id}}],
        },
    )


def test_no_container_health_check_the_alb_check_counts(container: dict[str, Any]) -> None:
    # a container check would hold every new task for Docker's first probe, one interval (>= 5 s) after its start
    assert "HealthCheck" not in container


def test_container_stop_timeout_is_short(container: dict[str, Any]) -> None:
    assert container["StopTimeout"] == 10


def test_container_port_and_environment(container: dict[str, Any]) -> None:
    assert container["Name"] == "backend"
    assert container["PortMappings"] == [{"ContainerPort": 8000, "Protocol": "tcp"}]
    environment = {e["Name"]: e["Value"] for e in container["Environment"]}
    assert environment["PORT"] == "8000"
    assert environment["HOST"] == "0.0.0.0"
    assert environment["AWS_REGION"] == "us-east-1"
    for name in (
        "CARS_TABLE",
        "BOOKINGS_TABLE",
        "KYC_TABLE",
        "KYC_BUCKET",
        "COGNITO_USER_POOL_ID",
        "COGNITO_CLIENT_ID",
    ):
        assert "Fn::ImportValue" in environment[name], f"{name} should come from the data or auth stack"
    assert container["LogConfiguration"]["LogDriver"] == "awslogs"


def test_cluster_and_service_are_named_from_settings(fargate: Template, service: dict[str, Any]) -> None:
    fargate.has_resource_properties("AWS::ECS::Cluster", {"ClusterName": "car-rental-cluster"})
    assert service["ServiceName"] == "car-rental-service"
    assert service["DesiredCount"] == 1
    fargate.has_resource_properties(TASK_DEFINITION, {"Family": "car-rental-service"})
    # unset in deploy.toml: the smallest Fargate task, as before the size was an environment's setting
    fargate.has_resource_properties(TASK_DEFINITION, {"Cpu": "256", "Memory": "512"})
