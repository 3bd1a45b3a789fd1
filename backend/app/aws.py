"""boto3 clients, made once per process (in create_app) and shared by every request."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import boto3
from botocore.config import Config

from app.config import Settings

# Short timeouts and few retries: a request (or /health/deep) should fail in seconds, not hang.
_BASE = Config(connect_timeout=2, read_timeout=5, retries={"max_attempts": 3, "mode": "standard"})


@dataclass(frozen=True)
class AwsClients:
    s3: Any
    s3_presign: Any  # the same client as s3 unless S3_PRESIGN_ENDPOINT_URL names another endpoint
    dynamodb: Any
    cognito: Any


def _s3_config(endpoint: str | None) -> Config:
    # SigV4 so that a presigned PUT signs (binds) its Content-Type; path-style for a local endpoint
    # (http://127.0.0.1:4566/bucket/key), where bucket subdomains do not resolve.
    return _BASE.merge(Config(signature_version="s3v4", s3={"addressing_style": "path" if endpoint else "auto"}))


def make_clients(settings: Settings, session: boto3.Session | None = None) -> AwsClients:
    """The API's clients, honouring AWS_ENDPOINT_URL (a local AWS) and S3_PRESIGN_ENDPOINT_URL."""
    session = session or boto3.Session()
    endpoint = settings.endpoint_url
    s3 = session.client("s3", region_name=settings.region, endpoint_url=endpoint, config=_s3_config(endpoint))
    presign = s3
    if settings.presign_endpoint_url and settings.presign_endpoint_url != endpoint:
        presign = session.client(
            "s3",
            region_name=settings.region,
            endpoint_url=settings.presign_endpoint_url,
            config=_s3_config(settings.presign_endpoint_url),
        )
    return AwsClients(
        s3=s3,
        s3_presign=presign,
        dynamodb=session.client("dynamodb", region_name=settings.region, endpoint_url=endpoint, config=_BASE),
        cognito=session.client("cognito-idp", region_name=settings.region, endpoint_url=endpoint, config=_BASE),
    )
