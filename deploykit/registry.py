"""Where images go: the ECR repository's URI and the credentials to push there.

On AWS both come from ECR (``DescribeRepositories``, ``GetAuthorizationToken``). An environment may
name a ``registry`` host instead (a plain local registry): images then go to ``registry/repository``
with no credentials.
"""

from __future__ import annotations

import base64
from functools import partial
from typing import Any

from botocore.exceptions import ClientError

from deploykit.aws import AwsFactory, Once
from deploykit.config import EnvConfig
from deploykit.errors import UsageError


def repository_uri(aws: AwsFactory) -> str:
    env = aws.env
    if env.registry:
        return f"{env.registry.rstrip('/')}/{env.repository}"
    try:
        answer = aws.client("ecr").describe_repositories(repositoryNames=[env.repository])
    except ClientError as exc:
        if exc.response["Error"]["Code"] == "RepositoryNotFoundException":
            raise no_repository(env) from None
        raise
    return str(answer["repositories"][0]["repositoryUri"])


def no_repository(env: EnvConfig) -> UsageError:
    return UsageError(
        f"ECR repository {env.repository!r} does not exist in environment {env.name!r}",
        next_step=f"deploy the registry stack first: inv deploy.stack {env.stacks.registry} --env {env.name}",
    )


def push_auth(aws: AwsFactory) -> dict[str, str] | None:
    """Docker ``auth_config`` for the environment's registry: an ECR token, or None for a plain one. Asked once per
    command (a token holds 12 hours): a command that will push asks for it beside the repository's URI, before the
    build, so the push finds it there (one round trip less after the build)."""
    if aws.env.registry:
        return None
    return aws.shared(_token)()


def _token(aws: AwsFactory) -> Once[dict[str, str]]:
    """The registry's credentials of one command (one per AWS factory), asked the first time they are needed."""
    return Once(partial(_ask_token, aws))


def _ask_token(aws: AwsFactory) -> dict[str, str]:
    data: dict[str, Any] = aws.client("ecr").get_authorization_token()["authorizationData"][0]
    user, _, password = base64.b64decode(data["authorizationToken"]).decode().partition(":")
    return {"username": user, "password": password, "serveraddress": str(data["proxyEndpoint"])}


def credentials(aws: AwsFactory) -> tuple[str, str] | None:
    """(user, password) for the environment's registry (an ECR token), or None for a plain one."""
    auth = push_auth(aws)
    return (auth["username"], auth["password"]) if auth else None
