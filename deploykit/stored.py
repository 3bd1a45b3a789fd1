"""Small JSON objects deploykit keeps in an environment's artifacts bucket, beside its history and lock: the freeze
(deploykit.freeze) and the pause (deploykit.pause). Each lives in the environment itself, so every laptop and CI
job reads the same; each is one object, read whole, written whole, deleted when it ends. And S3's times, by which
what such an object (the lock's too) says about time is judged whatever the reading machine's clock says:
:func:`served`, S3's time when it answered, and :func:`utc`, a time S3 gave (a ``LastModified``)."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from botocore.exceptions import ClientError

from deploykit.aws import AwsFactory, served
from deploykit.config import EnvConfig
from deploykit.errors import UsageError
from deploykit.history import find_artifacts_bucket
from deploykit.stacks import is_not_there


def read_json(aws: AwsFactory, env: EnvConfig, key: str, bucket: str | None = None) -> dict[str, Any] | None:
    """The object at ``key`` as a mapping ({} when it is not JSON); None when there is none, or no artifacts bucket
    yet. ``bucket``: the artifacts bucket, when the caller knows it already."""
    return read_served(aws, env, key, bucket)[0]


def read_served(
    aws: AwsFactory, env: EnvConfig, key: str, bucket: str | None = None
) -> tuple[dict[str, Any] | None, datetime | None]:
    """:func:`read_json`, and S3's time when it answered (:func:`served`: the ``Date`` of the same answer, the
    object found or not there; None when S3 sent none, or there is no artifacts bucket to ask)."""
    bucket = bucket or find_artifacts_bucket(aws, env)
    if not bucket:
        return None, None
    try:
        answer = aws.client("s3").get_object(Bucket=bucket, Key=key)
    except ClientError as exc:
        if is_not_there(exc):
            return None, served(exc.response)
        raise
    try:
        data = json.loads(answer["Body"].read())
    except ValueError:
        data = {}
    return (data if isinstance(data, dict) else {}), served(answer)


def write_json(aws: AwsFactory, env: EnvConfig, key: str, data: dict[str, Any], *, nothing_to: str) -> None:
    """Write ``data`` at ``key`` (what is there is replaced). UsageError when the environment has no artifacts
    bucket yet: "there is nothing to ``nothing_to``"."""
    aws.client("s3").put_object(
        Bucket=bucket_of(aws, env, nothing_to=nothing_to),
        Key=key,
        Body=json.dumps(data, indent=2).encode(),
        ContentType="application/json",
    )


def delete(aws: AwsFactory, env: EnvConfig, key: str, *, nothing_to: str) -> None:
    aws.client("s3").delete_object(Bucket=bucket_of(aws, env, nothing_to=nothing_to), Key=key)


def bucket_of(aws: AwsFactory, env: EnvConfig, *, nothing_to: str) -> str:
    """The environment's artifacts bucket; UsageError (with the deploy that makes it) when it has none yet."""
    bucket = find_artifacts_bucket(aws, env)
    if not bucket:
        raise UsageError(
            f"environment {env.name!r} has no artifacts bucket yet (its registry stack {env.stacks.registry} is not "
            f"deployed): there is nothing to {nothing_to}",
            next_step=f"deploy it first: inv deploy.full --env {env.name}",
        )
    return bucket


def moment(value: object) -> datetime | None:
    """A moment an object stores (ISO 8601; without a zone: this machine's); None when it is not one."""
    if not value:
        return None
    try:
        found = datetime.fromisoformat(str(value))
    except ValueError:
        return None
    return found if found.tzinfo else found.astimezone()


def shown(moment: datetime) -> str:
    """A stored moment as messages show it (UTC as Z)."""
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")
