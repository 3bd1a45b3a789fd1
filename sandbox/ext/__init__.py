"""The sandbox's extensions to moto, each named after what it fixes (see each module's docstring)."""

from __future__ import annotations

from sandbox.ext.alarms import AlarmEvaluator
from sandbox.ext.alb import AlbExtension
from sandbox.ext.apigw_lambda import ApiGatewayLambda
from sandbox.ext.cloudformation import CloudFormationExtension
from sandbox.ext.ecr_registry import EcrRegistry
from sandbox.ext.ecs_runtime import EcsRuntime
from sandbox.server import Extension
from sandbox.settings import Settings


def extensions(settings: Settings) -> list[Extension]:
    """Every extension, in start order (the ECS runtime registers targets with the ALB; CloudFormation, last,
    creates resources through the backends the others have patched and waits on the ECS runtime; the alarms' evaluation
    reads the metrics the ALB and Lambda put)."""
    alb = AlbExtension(settings)
    return [
        EcrRegistry(settings),
        alb,
        EcsRuntime(settings, alb),
        ApiGatewayLambda(settings),
        CloudFormationExtension(settings),
        AlarmEvaluator(settings),
    ]
