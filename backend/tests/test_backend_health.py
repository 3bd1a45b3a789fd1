"""Shallow health, deep health (200 when every dependency answers, 503 when one does not), version."""

from __future__ import annotations

from collections.abc import Callable

from carrental_testkit import World
from fastapi.testclient import TestClient

CHECKS = {"s3:kyc", "dynamodb:cars", "dynamodb:bookings", "dynamodb:kyc", "cognito:user_pool"}


def test_shallow_health(api: TestClient) -> None:
    response = api.get("/health")
    assert (response.status_code, response.json()) == (200, {"status": "ok"})


def test_shallow_health_calls_nothing(make_api: Callable[..., TestClient]) -> None:
    # Pointed at a port where nothing listens: /health still answers at once.
    api = make_api(endpoint_url="http://127.0.0.1:9", jwks_url_override="http://127.0.0.1:9/jwks.json")
    assert api.get("/health").status_code == 200


def test_version(api: TestClient, world: World) -> None:
    assert api.get("/version").json() == {"git_sha": world.settings().git_sha}


def test_deep_health_ok(api: TestClient, world: World) -> None:
    response = api.get("/health/deep")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "ok"
    assert set(body["checks"]) == CHECKS
    for check in body["checks"].values():
        assert check["status"] == "ok"
        assert check["error"] is None
        assert isinstance(check["latency_ms"], float) and check["latency_ms"] >= 0
    assert body["checks"]["s3:kyc"]["target"] == world.bucket
    assert body["checks"]["dynamodb:bookings"]["target"] == world.bookings_table
    assert body["checks"]["cognito:user_pool"]["target"] == world.pool_id


def test_deep_health_503_when_a_table_is_missing(make_api: Callable[..., TestClient]) -> None:
    response = make_api(bookings_table="no-such-table").get("/health/deep")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "fail"
    failed = {name: check for name, check in body["checks"].items() if check["status"] == "fail"}
    assert list(failed) == ["dynamodb:bookings"]
    assert "ResourceNotFoundException" in failed["dynamodb:bookings"]["error"]


def test_deep_health_503_when_bucket_and_pool_are_missing(make_api: Callable[..., TestClient]) -> None:
    response = make_api(kyc_bucket="no-such-bucket", user_pool_id="us-east-1_nosuchpool").get("/health/deep")
    assert response.status_code == 503
    checks = response.json()["checks"]
    assert {name for name, check in checks.items() if check["status"] == "fail"} == {"s3:kyc", "cognito:user_pool"}


def test_deep_health_503_when_not_configured(make_api: Callable[..., TestClient]) -> None:
    response = make_api(cars_table="", kyc_bucket="").get("/health/deep")
    assert response.status_code == 503
    checks = response.json()["checks"]
    assert checks["dynamodb:cars"]["error"] == "CARS_TABLE is not set"
    assert checks["s3:kyc"]["error"] == "KYC_BUCKET is not set"
    assert checks["dynamodb:kyc"]["status"] == "ok"
