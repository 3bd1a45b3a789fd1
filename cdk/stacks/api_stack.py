"""CarRentalApiStack: API Gateway (REST) in front of the Lambda functions of lambda/.

Each function's code is a zip in the artifacts bucket under a content-hash key, and that key is a stack
parameter (`<Function>CodeKey`, e.g. `LoginHandlerCodeKey`). deploykit's Lambda fast path uploads a zip,
updates the function code, publishes a version and moves the `live` alias without CloudFormation; a later
stack deploy passes the key that is live then, so the stack keeps that code instead of reverting it. API
Gateway integrates the alias, never `$LATEST`, so what is served is always a published, immutable version.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from aws_cdk import Annotations, CfnParameter, Duration, RemovalPolicy, Stack
from aws_cdk import aws_apigateway as apigw
from aws_cdk import aws_cognito as cognito
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from constructs import Construct

from stacks.common.nag import suppress
from stacks.common.outputs import output
from stacks.common.settings import Settings

STAGE_NAME = "prod"
ALIAS_NAME = "live"
# The Python the zips are built for: deploykit's packaging installs a function's pinned requirements as
# CPython 3.11 wheels (lambda/README.md), so the runtime must be 3.11 too. Move both together.
RUNTIME = lambda_.Runtime.PYTHON_3_11
# An S3 key of a zip: `lambda/<function>/<sha256>.zip` by convention (deploykit names it).
CODE_KEY_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_./-]*\.zip$"
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
        return "".join(part.capitalize() for part in self.folder.split("_"))


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
        # every function's: deploykit vendors their requirements' compiled code for the same one
        self._architecture = (
            lambda_.Architecture.ARM_64 if settings.lambda_architecture == "arm64" else lambda_.Architecture.X86_64
        )

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
        name = route.construct_id
        code_key = CfnParameter(
            self,
            f"{name}CodeKey",
            type="String",
            description=f"S3 key of {route.folder}'s zip in the artifacts bucket (named by content hash)",
            allowed_pattern=CODE_KEY_PATTERN,
            constraint_description="an S3 key ending in .zip",
        )
        log_group = logs.LogGroup(
            self, f"{name}Logs", retention=logs.RetentionDays.TWO_WEEKS, removal_policy=RemovalPolicy.DESTROY
        )
        # Its own role, allowed to write to its own log group and nothing else (the login calls Cognito's
        # InitiateAuth, which a public app client permits without IAM credentials).
        role = iam.Role(
            self,
            f"{name}Role",
            assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
            description=f"{route.folder}: writes its own logs only",
        )
        log_group.grant_write(role)

        environment = {}
        if route.needs_user_pool_client:
            environment["USER_POOL_CLIENT_ID"] = user_pool_client.user_pool_client_id
        function = lambda_.Function(
            self,
            name,
            description=route.description,
            runtime=RUNTIME,
            architecture=self._architecture,
            handler=route.handler,
            code=lambda_.Code.from_bucket(artifacts_bucket, code_key.value_as_string),
            role=role,
            log_group=log_group,
            memory_size=256,
            timeout=Duration.seconds(10),
            environment=environment or None,
            # `current_version` below is a version whose logical id hashes the function's configuration, so a
            # configuration change (environment, memory, runtime, handler...) publishes a new version. The code
            # key is a parameter, invisible to that hash, so the version's description names it: CloudFormation
            # replaces a version on any property change, so a new key publishes a new version too. With
            # neither changed nothing is published and the alias stays where the Lambda fast path put it.
            # Versions are kept (RETAIN): they are the rollback targets, and the fast path's versions may be
            # the very ones CloudFormation adopts.
            current_version_options=lambda_.VersionOptions(
                description=f"code s3://{artifacts_bucket.bucket_name}/{code_key.value_as_string}",
                removal_policy=RemovalPolicy.RETAIN,
            ),
        )
        # The zip's key is its SHA-256 (deploykit.packaging): new code is a new key, which a deploy of the stack
        # passes in, so CloudFormation sees the change without an object version.
        Annotations.of(artifacts_bucket).acknowledge_warning(
            "@aws-cdk/aws-lambda:codeFromBucketObjectVersionNotSpecified",
            "each zip's key is its content's SHA-256: new code is a new key",
        )
        suppress(
            function,
            "AwsSolutions-L1",
            "The runtime is pinned to Python 3.11 on purpose: deploykit packages each function's pinned "
            "requirements as CPython 3.11 wheels, so a newer runtime could not load them. Upgrade both together.",
        )
        alias = lambda_.Alias(self, f"{name}Alias", alias_name=ALIAS_NAME, version=function.current_version)

        description = f"of {route.folder}"
        output(self, f"{name}FunctionName", function.function_name, f"Lambda function {description}")
        output(self, f"{name}FunctionArn", function.function_arn, f"Lambda function ARN {description}")
        output(self, f"{name}AliasArn", alias.function_arn, f"ARN of the '{ALIAS_NAME}' alias {description}")
        return alias

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
