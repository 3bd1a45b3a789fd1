"""Settings come from environment variables only."""

from __future__ import annotations

import pytest
from app.config import ConfigError, Settings


def test_defaults_derive_issuer_and_jwks_from_the_pool() -> None:
    settings = Settings.from_env({"AWS_REGION": "eu-west-1", "COGNITO_USER_POOL_ID": "eu-west-1_AbC"})
    assert settings.issuer == "https://cognito-idp.eu-west-1.amazonaws.com/eu-west-1_AbC"
    assert settings.jwks_url == "https://cognito-idp.eu-west-1.amazonaws.com/eu-west-1_AbC/.well-known/jwks.json"
    assert settings.endpoint_url is None
    assert settings.kyc_max_bytes == 5 * 1024 * 1024
    assert settings.git_sha == "unknown"
    assert (settings.max_body_bytes, settings.max_open_bookings, settings.api_docs) == (16 * 1024, 5, False)


def test_every_variable_is_read() -> None:
    env = {
        "AWS_DEFAULT_REGION": "ap-south-1",
        "CARS_TABLE": "c",
        "BOOKINGS_TABLE": "b",
        "KYC_TABLE": "k",
        "KYC_BUCKET": "bucket",
        "COGNITO_USER_POOL_ID": "pool",
        "COGNITO_CLIENT_ID": "client",
        "COGNITO_ISSUER": "https://issuer.example/",
        "COGNITO_JWKS_URL": "http://127.0.0.1:4566/pool/.well-known/jwks.json",
        "AWS_ENDPOINT_URL": "http://127.0.0.1:4566",
        "S3_PRESIGN_ENDPOINT_URL": "http://localhost:4566",
        "GIT_SHA": "abc123",
        "KYC_MAX_BYTES": "1024",
        "KYC_UPLOAD_URL_TTL": "60",
        "JWKS_TIMEOUT": "1.5",
        "MAX_BODY_BYTES": "4096",
        "MAX_OPEN_BOOKINGS": "2",
        "API_DOCS": "true",
    }
    assert Settings.from_env(env) == Settings(
        region="ap-south-1",
        cars_table="c",
        bookings_table="b",
        kyc_table="k",
        kyc_bucket="bucket",
        user_pool_id="pool",
        client_id="client",
        issuer_override="https://issuer.example/",
        jwks_url_override="http://127.0.0.1:4566/pool/.well-known/jwks.json",
        endpoint_url="http://127.0.0.1:4566",
        presign_endpoint_url="http://localhost:4566",
        git_sha="abc123",
        kyc_max_bytes=1024,
        kyc_upload_ttl=60,
        jwks_timeout=1.5,
        max_body_bytes=4096,
        max_open_bookings=2,
        api_docs=True,
    )
    assert Settings.from_env(env).issuer == "https://issuer.example"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("KYC_MAX_BYTES", "5MB"),
        ("KYC_UPLOAD_URL_TTL", "0"),
        ("JWKS_TIMEOUT", "x"),
        ("MAX_BODY_BYTES", "16k"),
        ("MAX_OPEN_BOOKINGS", "0"),
        ("API_DOCS", "maybe"),
    ],
)
def test_bad_numbers_fail_loudly(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=name):
        Settings.from_env({name: value})
