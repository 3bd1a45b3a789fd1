"""CarRentalApiStack: API Gateway (REST) in front of the Lambda functions of lambda/ it routes to.

Each function is a `deployed_function` (stacks/common/functions.py: its `<Function>CodeKey` parameter, its outputs,
its `live` alias). API Gateway integrates the alias, never `$LATEST`, so what is served is always a published,
immutable version. A function no route calls (a queue's consumer) belongs in the stack that holds what calls it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from aws_cdk import RemovalPolicy, Stack
from aws_cdk import aws_apigateway as apigw
from aws_cdk import aws_cognito as cognito
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from constructs import Construct

from stacks.common.functions import deployed_function, function_id
from stacks.common.nag import suppress
from stacks.common.outputs import output
from stacks.common.settings import Settings

STAGE_NAME = "prod"
# Stage-wide throttling: a ceiling against runaway clients and cost, far above the expected load.
THROTTLE_RATE = 50
THROTTLE_BURST = 100

LOGIN_BODY_SCHEMA = apigw.JsonSchema(
    schema=apigw.JsonSchemaVersion.DRAFT4,
    title="LoginRequest",
    type=apigw.JsonSchemaType.OBJECT,
    required=["username", "password"],
    # Cognito's limits, as login_handler checks them; other fields are ignored, as login_handler does.
    properties={
        "username": apigw.JsonSchema(type=apigw.JsonSchemaType.STRING, min_length=1, max_length=128),
        "password": apigw.JsonSchema(type=apigw.JsonSchemaType.STRING, min_length=1, max_length=256),
    },
)


@dataclass(frozen=True)
class LambdaRoute:
    """One function behind one route. `folder` is its directory under lambda/ (its name for deploykit)."""

    folder: str
    method: str
    path: str
    description: str
    body_schema: apigw.JsonSchema | None = None
    needs_user_pool_client: bool = False
    handler: str = "handler.handler"

    @property
    def construct_id(self) -> str:
        """The folder in CamelCase (login_handler → LoginHandler): it names the function's construct, its
        <Id>CodeKey parameter and its <Id>FunctionName / <Id>AliasArn outputs, which is how deploykit finds it."""
        return function_id(self.folder)


FUNCTIONS: tuple[LambdaRoute, ...] = (
    LambdaRoute(
        folder="login_handler",
        method="POST",
        path="/auth/login",
        description="Cognito user/password login returning tokens",
        body_schema=LOGIN_BODY_SCHEMA,
        needs_user_pool_client=True,
    ),
    LambdaRoute(
        folder="health_handler",
        method="GET",
        path="/health",
        description="Cheap check of the API stage; reports the version the alias serves",
    ),
)


class CarRentalApiStack(Stack):
    """The REST API, one Lambda function (with a `live` alias) per route, and their logs."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        settings: Settings,
        artifacts_bucket: s3.IBucket,
        user_pool_client: cognito.IUserPoolClient,
        **kwargs: Any,
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)
        self._settings = settings

        access_log_group = logs.LogGroup(
            self, "ApiAccessLogs", retention=logs.RetentionDays.TWO_WEEKS, removal_policy=RemovalPolicy.DESTROY
        )
        self.api = apigw.RestApi(
            self,
            "Api",
            rest_api_name=f"car-rental-{settings.environment}",
            description="Car Rental API (Lambda functions)",
            endpoint_types=[apigw.EndpointType.REGIONAL],
            # The account-level role that lets API Gateway write execution logs (needed for logging_level).
            cloud_watch_role=True,
            cloud_watch_role_removal_policy=RemovalPolicy.RETAIN,
            deploy=True,
            deploy_options=apigw.StageOptions(
                stage_name=STAGE_NAME,
                access_log_destination=apigw.LogGroupLogDestination(access_log_group),
                access_log_format=apigw.AccessLogFormat.json_with_standard_fields(
                    caller=True,
                    http_method=True,
                    ip=True,
                    protocol=True,
                    request_time=True,
                    resource_path=True,
                    response_length=True,
                    status=True,
                    user=True,
                ),
                # Execution logs for failures only (integration errors, throttling): enough to debug, cheap.
                logging_level=apigw.MethodLoggingLevel.ERROR,
                # Never log request or response bodies: the login body carries a password, its response tokens.
                data_trace_enabled=False,
                metrics_enabled=True,
                throttling_rate_limit=THROTTLE_RATE,
                throttling_burst_limit=THROTTLE_BURST,
            ),
        )
        # RestApi adds an "Endpoint" output under a hashed name; ApiUrl below is the same URL under a stable one.
        self.api.node.try_remove_child("Endpoint")
        # A body the model rejects gets the functions' own error shape ({"code", "message"}).
        self.api.add_gateway_response(
            "BadRequestBody",
            type=apigw.ResponseType.BAD_REQUEST_BODY,
            status_code="400",
            templates={
                "application/json": '{"code": "bad_request", "message": "$context.error.validationErrorString"}'
            },
        )
        validator = self.api.add_request_validator(
            "Validator", validate_request_body=True, validate_request_parameters=True
        )

        self.aliases: dict[str, lambda_.Alias] = {}
        for route in FUNCTIONS:
            alias = self._function(route, artifacts_bucket, user_pool_client)
            self.aliases[route.folder] = alias
            models = {}
            if route.body_schema is not None:
                models["application/json"] = self.api.add_model(
                    f"{route.construct_id}Body", content_type="application/json", schema=route.body_schema
                )
            method = self.api.root.resource_for_path(route.path).add_method(
                route.method,
                apigw.LambdaIntegration(alias, proxy=True),
                request_validator=validator,
                request_models=models or None,
            )
            self._acknowledge_public_method(method)

        self._acknowledge_api_findings()

        output(self, "ApiUrl", self.api.url, "Base URL of the API stage (ends with /)")
        output(self, "ApiId", self.api.rest_api_id, "REST API id")
        output(self, "ApiStageName", STAGE_NAME, "Stage the API is deployed to")
        output(self, "ApiHealthUrl", self.api.url_for_path("/health"), "GET: 200 and the version serving")
        output(self, "LoginUrl", self.api.url_for_path("/auth/login"), "POST {username, password}: tokens")

    def _function(
        self, route: LambdaRoute, artifacts_bucket: s3.IBucket, user_pool_client: cognito.IUserPoolClient
    ) -> lambda_.Alias:
        # the login calls Cognito's InitiateAuth, which a public app client permits without IAM credentials: the
        # function's own role writes its logs and nothing else
        environment = {}
        if route.needs_user_pool_client:
            environment["USER_POOL_CLIENT_ID"] = user_pool_client.user_pool_client_id
        return deployed_function(
            self,
            route.folder,
            description=route.description,
            settings=self._settings,
            artifacts_bucket=artifacts_bucket,
            handler=route.handler,
            environment=environment,
        ).alias

    def _acknowledge_public_method(self, method: apigw.Method) -> None:
        suppress(
            method,
            "AwsSolutions-APIG4",
            "Public by design: POST /auth/login is how a caller obtains a token, and GET /health must answer "
            "without one. Every other route of the product is served by the backend, which verifies tokens.",
        )
        suppress(
            method,
            "AwsSolutions-COG4",
            "A Cognito authorizer cannot protect the login route itself (the caller has no token yet), and "
            "the health route is deliberately anonymous.",
        )

    def _acknowledge_api_findings(self) -> None:
        suppress(
            self.api,
            "AwsSolutions-APIG3",
            "No WAF web ACL (a fixed monthly cost per ACL and rule): abuse is bounded by stage throttling "
            f"({THROTTLE_RATE} req/s, burst {THROTTLE_BURST}), request-body validation and Cognito's own "
            "rate limits on InitiateAuth.",
        )
        suppress(
            self.api,
            "AwsSolutions-IAM4",
            "The API Gateway CloudWatch role uses the AWS managed AmazonAPIGatewayPushToCloudWatchLogs policy, "
            "the documented policy for this account-level role; it only grants writing API Gateway's own logs.",
            applies_to="Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AmazonAPIGatewayPushToCloudWatchLogs",
        )
