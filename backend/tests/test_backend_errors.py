"""Every error is JSON {"error": {"code", "message"}}; no token or document content reaches the logs."""

from __future__ import annotations

import logging
import urllib.request
from collections.abc import Callable, Iterator
from datetime import timedelta

import pytest
from app.aws import AwsClients
from app.config import Settings
from app.main import create_app
from app.models import today_utc
from carrental_testkit import User
from fastapi.testclient import TestClient


def assert_error(response: object, status: int, code: str) -> None:
    from httpx2 import Response

    assert isinstance(response, Response)
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == {"error"}
    assert body["error"]["code"] == code
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]


def test_unknown_route(api: TestClient) -> None:
    assert_error(api.get("/no/such/route"), 404, "not_found")


def test_wrong_method(api: TestClient) -> None:
    assert_error(api.delete("/cars"), 405, "method_not_allowed")


def test_unexpected_exception_is_a_json_500(
    make_api: Callable[..., TestClient], clients: AwsClients, caplog: pytest.LogCaptureFixture
) -> None:
    app = create_app(Settings(), clients)

    @app.get("/boom")
    def boom() -> None:
        raise RuntimeError("kaboom")

    with caplog.at_level(logging.ERROR, logger="app"):
        assert_error(make_api(app=app).get("/boom"), 500, "internal_error")
    assert "RuntimeError" in caplog.text


def test_aws_failure_is_a_json_503(make_api: Callable[..., TestClient], alice: User) -> None:
    api = make_api(kyc_table="no-such-table")
    response = api.post("/kyc", headers=alice.headers, json={"document_type": "passport", "content_type": "image/png"})
    assert_error(response, 503, "dependency_error")


def test_no_token_or_document_in_logs(api: TestClient, alice: User, caplog: pytest.LogCaptureFixture) -> None:
    secret_document = b"%PDF-1.4 TOP-SECRET-PASSPORT-NUMBER-X1234567"
    with caplog.at_level(logging.DEBUG):
        assert api.get("/me", headers=alice.headers).status_code == 200
        assert api.get("/me", headers={"Authorization": f"Bearer {alice.id_token}"}).status_code == 200
        assert api.get("/me", headers={"Authorization": f"Bearer {alice.access_token}x"}).status_code == 401
        started = api.post(
            "/kyc", headers=alice.headers, json={"document_type": "passport", "content_type": "application/pdf"}
        ).json()
        request = urllib.request.Request(
            started["upload"]["url"], data=secret_document, method="PUT", headers=started["upload"]["headers"]
        )
        urllib.request.urlopen(request, timeout=10).close()
        case_id = started["case"]["case_id"]
        assert api.post(f"/kyc/{case_id}/submit", headers=alice.headers).json()["status"] == "SUBMITTED"
    app_records = [record for record in caplog.records if record.name.startswith("app")]
    assert any("/kyc" in record.getMessage() for record in app_records)  # the access log did log
    everything = "\n".join(record.getMessage() for record in caplog.records)
    signature = alice.access_token.split(".")[2]
    for secret in (alice.access_token, alice.id_token, signature, "TOP-SECRET-PASSPORT-NUMBER"):
        assert secret not in everything


# -- bounds ----------------------------------------------------------------------------------------------------------


def test_a_body_over_the_bound_is_refused_unread_before_the_token_is_checked(
    make_api: Callable[..., TestClient],
) -> None:
    """An anonymous POST of megabytes was parsed whole (tens of times its size in memory) before its 401."""
    api = make_api(max_body_bytes=1024)
    padded = b'{"car_id": "car-001", "pad": "' + b"x" * 2000 + b'"}'
    response = api.post("/bookings", content=padded, headers={"Content-Type": "application/json"})
    assert_error(response, 413, "payload_too_large")
    assert response.json()["error"]["message"] == "the request body is larger than 1024 bytes"


def test_a_body_sent_without_its_length_is_counted_as_it_is_read(make_api: Callable[..., TestClient]) -> None:
    api = make_api(max_body_bytes=1024)

    def chunks() -> Iterator[bytes]:
        yield b'{"car_id": "car-001", "pad": "'
        for _ in range(20):
            yield b"x" * 100
        yield b'"}'

    response = api.post("/bookings", content=chunks(), headers={"Content-Type": "application/json"})
    assert "content-length" not in response.request.headers
    assert_error(response, 413, "payload_too_large")


def test_a_body_within_the_bound_is_served(make_api: Callable[..., TestClient], alice: User) -> None:
    api = make_api(max_body_bytes=1024)
    dates = {"start_date": (today_utc() + timedelta(days=330)).isoformat()}
    dates["end_date"] = (today_utc() + timedelta(days=331)).isoformat()
    response = api.post("/bookings", headers=alice.headers, json={"car_id": "car-001", **dates})
    assert response.status_code == 201, response.text


def test_the_docs_and_the_schema_are_served_only_where_asked_for(
    api: TestClient, make_api: Callable[..., TestClient]
) -> None:
    """/openapi.json gave anyone every route and the build's commit; /docs and /redoc load scripts from a CDN."""
    for path in ("/docs", "/redoc", "/openapi.json"):
        assert_error(api.get(path), 404, "not_found")
    documented = make_api(api_docs=True)
    for path in ("/docs", "/redoc", "/openapi.json"):
        assert documented.get(path).status_code == 200, path
