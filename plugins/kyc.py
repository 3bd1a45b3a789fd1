"""The ``kyc`` check: the KYC workflow end to end, as a customer's app runs it.

A throwaway Cognito user logs in through the API, then on the ALB: ``POST /kyc`` (passport, PDF) → 201 with a
case and a presigned upload; ``PUT`` a tiny PDF to the presigned URL with the headers it came with;
``POST /kyc/{id}/submit`` → SUBMITTED; ``GET /kyc/{id}`` → SUBMITTED.

Afterwards, whatever happened: the document ``kyc/{sub}/{case_id}`` is deleted from the KYC bucket, the case
item (``user_id``, ``case_id``) from the KYC table, and the user from the pool. When ``POST /kyc`` gave no case
id, the user's whole prefix and partition are swept instead (a case may exist whose answer was lost).

Needs ``alb`` and ``api_gateway`` (it logs in through the API): when either failed, it is skipped.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from deploykit.checks import Check, CheckContext, CheckResult
from deploykit.hookspecs import hookimpl
from plugins._support import (
    Cleanup,
    Failed,
    bearer,
    body_start,
    call,
    create_user,
    join_url,
    json_object,
    jwt_claims,
    login,
    ms,
    require,
    run_check_body,
)

if TYPE_CHECKING:
    from deploykit.config import EnvConfig

NAME = "kyc"
TIMEOUT = 45.0
CONTENT_TYPE = "application/pdf"
START = {"document_type": "passport", "content_type": CONTENT_TYPE}
# The smallest thing that starts like a PDF (the backend checks the file signature, %PDF-).
DOCUMENT = b"%PDF-1.4\n1 0 obj\n<< /Type /Catalog >>\nendobj\ntrailer\n<< /Root 1 0 R >>\n%%EOF\n"


@hookimpl
def deploykit_register_checks(env: EnvConfig) -> list[Check]:
    return [
        Check(
            NAME,
            run,
            description="KYC end to end with a throwaway user: start, upload by presigned URL, submit, status",
            timeout=TIMEOUT,
            needs=("alb", "api_gateway"),  # it logs in through the API
        )
    ]


def run(ctx: CheckContext) -> CheckResult:
    return run_check_body(NAME, ctx, _body)


def object_key(sub: str, case_id: str) -> str:
    """Where the backend keeps a case's document (backend/app/kyc.py)."""
    return f"kyc/{sub}/{case_id}"


def case_key(sub: str, case_id: str) -> dict[str, Any]:
    return {"user_id": {"S": sub}, "case_id": {"S": case_id}}


def delete_documents(s3: Any, bucket: str, prefix: str) -> None:
    """Delete every version of every object under ``prefix``: the KYC bucket keeps versions, so a plain delete left each
    smoke run's document behind a delete marker (an object under every throwaway user, for the bucket's 90 days)."""
    for page in s3.get_paginator("list_object_versions").paginate(Bucket=bucket, Prefix=prefix):
        for version in [*(page.get("Versions") or ()), *(page.get("DeleteMarkers") or ())]:
            s3.delete_object(Bucket=bucket, Key=version["Key"], VersionId=version["VersionId"])


def sweep(s3: Any, dynamodb: Any, bucket: str, table: str, sub: str) -> None:
    """Delete every document under ``kyc/{sub}/`` and every case of ``sub`` (a throwaway user's, all of them)."""
    delete_documents(s3, bucket, f"kyc/{sub}/")
    found = dynamodb.query(
        TableName=table,
        KeyConditionExpression="user_id = :sub",
        ExpressionAttributeValues={":sub": {"S": sub}},
        ProjectionExpression="case_id",
    )
    for item in found.get("Items") or []:
        dynamodb.delete_item(TableName=table, Key=case_key(sub, item["case_id"]["S"]))


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _body(ctx: CheckContext, cleanup: Cleanup) -> str:
    endpoints = ctx.endpoints
    require(endpoints, "user_pool_id", "login_url", "alb_url", "buckets.kyc", "tables.kyc")
    bucket, table = endpoints.buckets["kyc"], endpoints.tables["kyc"]
    s3, dynamodb = ctx.aws.client("s3"), ctx.aws.client("dynamodb")

    # what the check leaves is deleted at once: the user, its document and its case do not depend on each other
    user = create_user(ctx.aws.client("cognito-idp"), endpoints.user_pool_id, cleanup, together=True)
    token, _ = login(ctx.http, endpoints.login_url, user)
    # what the clean-up deletes is named by the throwaway user's sub as Cognito has it, never by the token's alone: a
    # login that answered another user's token (a bad deploy) must not have a real customer's documents swept
    claimed = str(jwt_claims(token).get("sub") or "")
    if user.sub and claimed and claimed != user.sub:
        raise Failed(
            f"the login answered an access token of another user (sub {claimed!r}, not the throwaway user's "
            f"{user.sub!r}); KYC not started, nothing of that user's touched"
        )
    sub = user.sub or claimed
    if not sub:
        raise Failed("neither the access token nor Cognito names the throwaway user's sub; KYC not started")
    auth = bearer(token)

    case_ids: list[str] = []
    cleanup.add(
        f"sweep the KYC data of {user.email} (s3://{bucket}/kyc/{sub}/, {table})",
        lambda: None if case_ids else sweep(s3, dynamodb, bucket, table, sub),
        together=True,
    )
    start_url = join_url(endpoints.alb_url, "kyc")
    response, start_ms = call(ctx.http, "POST", start_url, expect=201, json_body=START, headers=auth)
    started = json_object(response, f"POST {start_url}")
    case = _mapping(started.get("case")) or started
    upload = _mapping(started.get("upload"))
    case_id, upload_url = case.get("case_id"), upload.get("url")
    if not isinstance(case_id, str) or not case_id or not isinstance(upload_url, str) or not upload_url:
        raise Failed(f"POST {start_url} → 201 but the answer has no case id and upload URL: {body_start(response)}")
    case_ids.append(case_id)
    key = object_key(sub, case_id)
    cleanup.add(f"delete s3://{bucket}/{key}", lambda: delete_documents(s3, bucket, key), together=True)
    cleanup.add(
        f"delete the case {case_id} from {table}",
        lambda: dynamodb.delete_item(TableName=table, Key=case_key(sub, case_id)),
        together=True,
    )

    headers = {str(k): str(v) for k, v in (_mapping(upload.get("headers")) or {"Content-Type": CONTENT_TYPE}).items()}
    method = str(upload.get("method") or "PUT").upper()
    _, upload_ms = call(ctx.http, method, upload_url, expect=(200, 204), data=DOCUMENT, headers=headers)

    case_url = join_url(start_url, quote(case_id, safe=""))
    submit_url = join_url(case_url, "submit")
    response, submit_ms = call(ctx.http, "POST", submit_url, headers=auth)
    submitted = json_object(response, f"POST {submit_url}")
    if submitted.get("status") != "SUBMITTED":
        reason = submitted.get("rejection_reason") or body_start(response)
        raise Failed(
            f"POST {submit_url} → 200 but the case is {submitted.get('status')!r} (expected 'SUBMITTED'): {reason}"
        )

    response, status_ms = call(ctx.http, "GET", case_url, headers=auth)
    status = json_object(response, f"GET {case_url}").get("status")
    if status != "SUBMITTED":
        raise Failed(f"GET {case_url} → 200 but the case is {status!r} (expected 'SUBMITTED'): {body_start(response)}")
    return (
        f"case {case_id[:8]} SUBMITTED: start 201 in {ms(start_ms)}, upload in {ms(upload_ms)}, "
        f"submit in {ms(submit_ms)}, status in {ms(status_ms)}"
    )
