"""A Lambda function as deploykit deploys it, in any stack: the API stack's, or one of the team's own.

The function's code is a folder of lambda/ (its name for deploykit: `lambda:<folder>`), packaged by deploykit into a
zip in the artifacts bucket named by its content's hash. deploykit finds the function by its folder in CamelCase
(`<Id>`: login_handler → LoginHandler) in the stack that holds it:

- the `<Id>CodeKey` parameter, the zip's S3 key: every deploy of the stack passes the key live then, so the stack
  keeps what `inv deploy.lambda` shipped instead of reverting it;
- the `<Id>FunctionName`, `<Id>FunctionArn` and `<Id>AliasArn` outputs.

deploykit's fast path uploads a zip, updates the function's code, publishes a version and moves the `live` alias
without CloudFormation. Whatever calls the function (API Gateway, a queue's event source mapping, a schedule)
should call the alias, never `$LATEST`, so what runs is always a published, immutable version. A folder lives in one
stack only: deploykit refuses a synthesis where two stacks hold the same one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from aws_cdk import Annotations, CfnParameter, Duration, RemovalPolicy, Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3

from stacks.common.nag import suppress
from stacks.common.outputs import output
from stacks.common.settings import Settings

ALIAS_NAME = "live"
# An S3 key of a zip: `lambda/<function>/<sha256>.zip` by convention (deploykit names it).
CODE_KEY_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_./-]*\.zip$"


def function_id(folder: str) -> str:
    """The folder in CamelCase (login_handler → LoginHandler): it names the function's construct, its <Id>CodeKey
    parameter and its <Id>FunctionName / <Id>AliasArn outputs, which is how deploykit finds it."""
    return "".join(part.capitalize() for part in folder.split("_"))


def runtime(settings: Settings) -> lambda_.Runtime:
    """Every function's, as deploy.toml's [build] lambda_runtime says: deploykit vendors their requirements as wheels
    for its CPython."""
    return lambda_.Runtime(settings.lambda_runtime, lambda_.RuntimeFamily.PYTHON)


def architecture(settings: Settings) -> lambda_.Architecture:
    """Every function's, as deploy.toml's [build] lambda_architecture says: deploykit vendors their requirements'
    compiled code for it."""
    return lambda_.Architecture.ARM_64 if settings.lambda_architecture == "arm64" else lambda_.Architecture.X86_64


@dataclass(frozen=True)
class DeployedFunction:
    """What :func:`deployed_function` made: grant the function what it needs through ``role`` (or ``function``),
    and let callers invoke ``alias``."""

    function: lambda_.Function
    alias: lambda_.Alias
    role: iam.Role
    log_group: logs.LogGroup


def deployed_function(
    stack: Stack,
    folder: str,
    *,
    description: str,
    settings: Settings,
    artifacts_bucket: s3.IBucket,
    handler: str = "handler.handler",
    environment: Mapping[str, str] | None = None,
    memory_size: int = 256,
    timeout: Duration | None = None,
    provisioned_concurrency: int = 0,
) -> DeployedFunction:
    """The function of ``lambda/<folder>/`` in ``stack``: its code parameter, log group, role (allowed to write its
    own logs and nothing else: grant it the rest), the function, its `live` alias and the outputs deploykit reads.
    Its constructs sit on the stack itself, named by its <Id>, so a function moved between stacks keeps its ids.
    ``provisioned_concurrency``: that many environments kept initialized for the alias (none by default); deploykit's
    move of the alias waits until they serve the new version."""
    name = function_id(folder)
    code_key = CfnParameter(
        stack,
        f"{name}CodeKey",
        type="String",
        description=f"S3 key of {folder}'s zip in the artifacts bucket (named by content hash)",
        allowed_pattern=CODE_KEY_PATTERN,
        constraint_description="an S3 key ending in .zip",
    )
    log_group = logs.LogGroup(
        stack, f"{name}Logs", retention=logs.RetentionDays.TWO_WEEKS, removal_policy=RemovalPolicy.DESTROY
    )
    role = iam.Role(
        stack,
        f"{name}Role",
        assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
        description=f"{folder}: writes its own logs only",
    )
    log_group.grant_write(role)
    function = lambda_.Function(
        stack,
        name,
        description=description,
        runtime=runtime(settings),
        architecture=architecture(settings),
        handler=handler,
        code=lambda_.Code.from_bucket(artifacts_bucket, code_key.value_as_string),
        role=role,
        log_group=log_group,
        memory_size=memory_size,
        timeout=timeout or Duration.seconds(10),
        environment=dict(environment) if environment else None,
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
        "The runtime is deploy.toml's [build] lambda_runtime (context lambda_runtime), for which deploykit "
        "packages each function's pinned requirements as wheels: it moves there, both together.",
    )
    alias = lambda_.Alias(
        stack,
        f"{name}Alias",
        alias_name=ALIAS_NAME,
        version=function.current_version,
        provisioned_concurrent_executions=provisioned_concurrency or None,
    )

    of = f"of {folder}"
    output(stack, f"{name}FunctionName", function.function_name, f"Lambda function {of}")
    output(stack, f"{name}FunctionArn", function.function_arn, f"Lambda function ARN {of}")
    output(stack, f"{name}AliasArn", alias.function_arn, f"ARN of the '{ALIAS_NAME}' alias {of}")
    return DeployedFunction(function, alias, role, log_group)
