"""Deep health: each dependency probed for real, in parallel, with its latency."""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from app.aws import AwsClients
from app.config import Settings
from app.models import Check, DeepHealth


def _describe(exc: Exception) -> str:
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        return f"{error.get('Code', 'ClientError')}: {error.get('Message', '')}".rstrip(": ")
    if isinstance(exc, BotoCoreError):
        return f"{type(exc).__name__}: {exc}"
    return type(exc).__name__


def _probe(target: str, env: str, call: Callable[[], Any]) -> Check:
    if not target:
        return Check(status="fail", target="", latency_ms=0.0, error=f"{env} is not set")
    started = time.perf_counter()
    try:
        call()
    except Exception as exc:
        return Check(status="fail", target=target, latency_ms=_ms(started), error=_describe(exc))
    return Check(status="ok", target=target, latency_ms=_ms(started))


def _ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 1)


def deep_health(settings: Settings, clients: AwsClients) -> DeepHealth:
    probes: dict[str, tuple[str, str, Callable[[], Any]]] = {
        "s3:kyc": (settings.kyc_bucket, "KYC_BUCKET", lambda: clients.s3.head_bucket(Bucket=settings.kyc_bucket)),
        "dynamodb:cars": (
            settings.cars_table,
            "CARS_TABLE",
            lambda: clients.dynamodb.describe_table(TableName=settings.cars_table),
        ),
        "dynamodb:bookings": (
            settings.bookings_table,
            "BOOKINGS_TABLE",
            lambda: clients.dynamodb.describe_table(TableName=settings.bookings_table),
        ),
        "dynamodb:kyc": (
            settings.kyc_table,
            "KYC_TABLE",
            lambda: clients.dynamodb.describe_table(TableName=settings.kyc_table),
        ),
        "cognito:user_pool": (
            settings.user_pool_id,
            "COGNITO_USER_POOL_ID",
            lambda: clients.cognito.describe_user_pool(UserPoolId=settings.user_pool_id),
        ),
    }
    with ThreadPoolExecutor(max_workers=len(probes), thread_name_prefix="health") as pool:
        futures = {name: pool.submit(_probe, *probe) for name, probe in probes.items()}
        checks = {name: future.result() for name, future in futures.items()}
    healthy = all(check.status == "ok" for check in checks.values())
    return DeepHealth(status="ok" if healthy else "fail", checks=checks)
