"""The KYC workflow end to end: start → upload through the presigned URL (real HTTP to the moto
server) → submit → status; rejections (type, size, content, empty), and one user blocked from another's."""

from __future__ import annotations

import urllib.request
from typing import Any
from urllib.parse import parse_qs, urlsplit

import boto3
import pytest
from carrental_testkit import User, World
from fastapi.testclient import TestClient

PDF = b"%PDF-1.7\n" + b"0" * 2048
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 1024
JPEG = b"\xff\xd8\xff\xe0" + b"\x00" * 1024
LIMIT = 5 * 1024 * 1024


def start(api: TestClient, user: User, content_type: str = "application/pdf", document: str = "passport") -> Any:
    response = api.post("/kyc", headers=user.headers, json={"document_type": document, "content_type": content_type})
    assert response.status_code == 201, response.text
    return response.json()


def upload(started: dict[str, Any], body: bytes, content_type: str | None = None) -> int:
    """PUT the document where the API said, as a browser would."""
    headers = dict(started["upload"]["headers"])
    if content_type is not None:
        headers["Content-Type"] = content_type
    request = urllib.request.Request(started["upload"]["url"], data=body, method="PUT", headers=headers)
    with urllib.request.urlopen(request, timeout=10) as response:
        return int(response.status)


def submit(api: TestClient, user: User, case_id: str) -> Any:
    return api.post(f"/kyc/{case_id}/submit", headers=user.headers)


def object_exists(aws_session: boto3.Session, world: World, user: User, case_id: str) -> bool:
    s3 = aws_session.client("s3", endpoint_url=world.endpoint)
    found = s3.list_objects_v2(Bucket=world.bucket, Prefix=f"kyc/{user.sub}/{case_id}")
    return int(found["KeyCount"]) == 1


def test_every_step(api: TestClient, alice: User, world: World, aws_session: boto3.Session) -> None:
    started = start(api, alice, "application/pdf", "driving_licence")
    case = started["case"]
    case_id = case["case_id"]
    assert case["status"] == "PENDING_UPLOAD"
    assert (case["document_type"], case["content_type"]) == ("driving_licence", "application/pdf")

    # The presigned URL is a PUT to the KYC bucket, with the Content-Type signed (bound) into it.
    target = urlsplit(started["upload"]["url"])
    query = parse_qs(target.query)
    assert target.path == f"/{world.bucket}/kyc/{alice.sub}/{case_id}"
    assert query["X-Amz-SignedHeaders"] == ["content-type;host"]
    assert query["X-Amz-Expires"] == ["900"]
    assert started["upload"]["method"] == "PUT"
    assert started["upload"]["headers"] == {"Content-Type": "application/pdf"}
    assert started["upload"]["max_bytes"] == LIMIT

    assert api.get(f"/kyc/{case_id}", headers=alice.headers).json()["status"] == "PENDING_UPLOAD"
    assert upload(started, PDF) == 200
    assert object_exists(aws_session, world, alice, case_id)

    submitted = submit(api, alice, case_id)
    assert submitted.status_code == 200, submitted.text
    assert submitted.json()["status"] == "SUBMITTED"
    assert submitted.json()["size_bytes"] == len(PDF)
    assert submitted.json()["rejection_reason"] is None

    status = api.get(f"/kyc/{case_id}", headers=alice.headers)
    assert status.status_code == 200
    assert status.json() == submitted.json()
    assert status.json()["submitted_at"]
    assert [c["case_id"] for c in api.get("/kyc", headers=alice.headers).json()["cases"]] == [case_id]

    again = submit(api, alice, case_id)
    assert again.status_code == 409
    assert again.json()["error"]["code"] == "invalid_state"


@pytest.mark.parametrize(("content_type", "body"), [("image/png", PNG), ("image/jpeg", JPEG)])
def test_images_accepted(api: TestClient, alice: User, content_type: str, body: bytes) -> None:
    started = start(api, alice, content_type, "national_id")
    upload(started, body)
    assert submit(api, alice, started["case"]["case_id"]).json()["status"] == "SUBMITTED"


def test_submit_before_upload_keeps_the_case_open(api: TestClient, alice: User) -> None:
    started = start(api, alice)
    case_id = started["case"]["case_id"]
    early = submit(api, alice, case_id)
    assert early.status_code == 409
    assert early.json()["error"]["code"] == "document_missing"
    assert api.get(f"/kyc/{case_id}", headers=alice.headers).json()["status"] == "PENDING_UPLOAD"
    upload(started, PDF)  # the client can still upload, then submit
    assert submit(api, alice, case_id).json()["status"] == "SUBMITTED"


def assert_rejected(api: TestClient, user: User, case_id: str, reason: str) -> dict[str, Any]:
    response = submit(api, user, case_id)
    assert response.status_code == 200, response.text
    case: dict[str, Any] = response.json()
    assert case["status"] == "REJECTED"
    assert reason in case["rejection_reason"]
    assert api.get(f"/kyc/{case_id}", headers=user.headers).json() == case
    assert submit(api, user, case_id).status_code == 409  # final
    return case


def test_bad_type_rejected(api: TestClient, alice: User, world: World, aws_session: boto3.Session) -> None:
    # Real S3 refuses this PUT (the signed Content-Type differs); moto does not check signatures, and
    # the submit check holds either way.
    started = start(api, alice, "application/pdf")
    case_id = started["case"]["case_id"]
    upload(started, b"plain text, not a document", content_type="text/plain")
    assert_rejected(api, alice, case_id, "content type 'text/plain' is not allowed")
    assert not object_exists(aws_session, world, alice, case_id)  # refused documents are not kept


def versioned_case(api: TestClient, user: User, world: World, aws_session: boto3.Session) -> tuple[Any, Any]:
    """The bucket's S3 client, versioning on (as the data stack has it), and a PDF case started by ``user``."""
    s3 = aws_session.client("s3", endpoint_url=world.endpoint)
    s3.put_bucket_versioning(Bucket=world.bucket, VersioningConfiguration={"Status": "Enabled"})
    return s3, start(api, user, "application/pdf")


def test_a_refused_document_goes_with_every_version(
    api: TestClient, alice: User, world: World, aws_session: boto3.Session
) -> None:
    """The bucket keeps versions: a plain delete left the refused document 90 days behind a delete marker."""
    s3, started = versioned_case(api, alice, world, aws_session)
    case_id = started["case"]["case_id"]
    upload(started, b"not a pdf, once")
    upload(started, b"not a pdf, twice")  # two versions of it
    assert_rejected(api, alice, case_id, "the document content is not application/pdf")
    left = s3.list_object_versions(Bucket=world.bucket, Prefix=f"kyc/{alice.sub}/{case_id}")
    assert not left.get("Versions") and not left.get("DeleteMarkers")


def test_a_submitted_case_records_the_version_it_checked(
    api: TestClient, alice: User, world: World, aws_session: boto3.Session
) -> None:
    """The upload URL stays valid after the submit: what is put there afterwards is not what was checked."""
    s3, started = versioned_case(api, alice, world, aws_session)
    case_id = started["case"]["case_id"]
    upload(started, PDF)
    assert submit(api, alice, case_id).json()["status"] == "SUBMITTED"
    assert upload(started, b"%PDF-not what was checked") == 200  # the same URL, after the submit
    dynamodb = aws_session.client("dynamodb", endpoint_url=world.endpoint)
    item = dynamodb.get_item(TableName=world.kyc_table, Key={"user_id": {"S": alice.sub}, "case_id": {"S": case_id}})
    version = item["Item"]["document_version"]["S"]
    key = f"kyc/{alice.sub}/{case_id}"
    assert s3.get_object(Bucket=world.bucket, Key=key, VersionId=version)["Body"].read() == PDF
    assert s3.get_object(Bucket=world.bucket, Key=key)["Body"].read() != PDF


def test_allowed_type_other_than_declared_rejected(api: TestClient, alice: User) -> None:
    started = start(api, alice, "application/pdf")
    upload(started, PNG, content_type="image/png")
    assert_rejected(api, alice, started["case"]["case_id"], "differs from the declared application/pdf")


def test_content_not_matching_its_type_rejected(api: TestClient, alice: User) -> None:
    started = start(api, alice, "image/png")
    upload(started, b"MZ\x90\x00 an executable, named a PNG")
    assert_rejected(api, alice, started["case"]["case_id"], "not image/png")


def test_too_large_rejected(api: TestClient, alice: User, world: World, aws_session: boto3.Session) -> None:
    started = start(api, alice, "application/pdf")
    case_id = started["case"]["case_id"]
    upload(started, b"%PDF-" + b"0" * (LIMIT - 4))  # one byte over 5 MiB
    case = assert_rejected(api, alice, case_id, f"the limit is {LIMIT} bytes")
    assert case["size_bytes"] == LIMIT + 1
    assert not object_exists(aws_session, world, alice, case_id)


def test_exactly_the_limit_accepted(api: TestClient, alice: User) -> None:
    started = start(api, alice, "application/pdf")
    upload(started, b"%PDF-" + b"0" * (LIMIT - 5))
    assert submit(api, alice, started["case"]["case_id"]).json()["status"] == "SUBMITTED"


def test_empty_rejected(api: TestClient, alice: User) -> None:
    started = start(api, alice, "image/jpeg")
    upload(started, b"")
    assert_rejected(api, alice, started["case"]["case_id"], "empty")


def test_start_validated(api: TestClient, alice: User) -> None:
    for body in (
        {"document_type": "passport", "content_type": "image/gif"},
        {"document_type": "library_card", "content_type": "image/png"},
        {"document_type": "passport"},
        {"document_type": "passport", "content_type": "image/png", "status": "SUBMITTED"},
    ):
        response = api.post("/kyc", headers=alice.headers, json=body)
        assert response.status_code == 422, body
        assert response.json()["error"]["code"] == "validation_error"
    assert api.get("/kyc", headers=alice.headers).json()["cases"] == []


def test_malformed_case_id(api: TestClient, alice: User) -> None:
    for response in (
        api.get("/kyc/not-a-case-id", headers=alice.headers),
        api.post("/kyc/" + "Z" * 32 + "/submit", headers=alice.headers),
    ):
        assert response.status_code == 422
        assert response.json()["error"]["code"] == "validation_error"
    traversal = api.get("/kyc/..%2F..%2Fsecrets", headers=alice.headers)
    assert traversal.status_code == 404
    assert traversal.json()["error"]["code"] == "not_found"


def test_kyc_needs_a_token(api: TestClient, alice: User) -> None:
    case_id = start(api, alice)["case"]["case_id"]
    for response in (api.post("/kyc", json={}), api.get(f"/kyc/{case_id}"), api.post(f"/kyc/{case_id}/submit")):
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "missing_token"


def test_another_users_case_is_invisible(api: TestClient, alice: User, bob: User) -> None:
    started = start(api, alice)
    case_id = started["case"]["case_id"]
    upload(started, PDF)

    for response in (api.get(f"/kyc/{case_id}", headers=bob.headers), submit(api, bob, case_id)):
        assert response.status_code == 404
        assert response.json() == {"error": {"code": "not_found", "message": "no such KYC case"}}
    assert api.get("/kyc", headers=bob.headers).json()["cases"] == []

    # Bob's attempts changed nothing: Alice's case is still hers to submit.
    assert api.get(f"/kyc/{case_id}", headers=alice.headers).json()["status"] == "PENDING_UPLOAD"
    assert submit(api, alice, case_id).json()["status"] == "SUBMITTED"


def test_unknown_case_is_404(api: TestClient, alice: User) -> None:
    response = api.get("/kyc/" + "0" * 32, headers=alice.headers)
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"
