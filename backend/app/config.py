"""Settings: read once from environment variables, nothing else (see the table in backend/README.md)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

DEFAULT_REGION = "us-east-1"
DEFAULT_KYC_MAX_BYTES = 5 * 1024 * 1024
DEFAULT_KYC_UPLOAD_TTL = 900
DEFAULT_JWKS_TIMEOUT = 3.0
# the largest request body: the API's own are a few hundred bytes (a booking, a KYC start); documents go to S3
DEFAULT_MAX_BODY_BYTES = 16 * 1024
DEFAULT_MAX_OPEN_BOOKINGS = 5  # bookings of one customer not yet ended


class ConfigError(ValueError):
    """An environment variable holds a value the API cannot use."""


@dataclass(frozen=True)
class Settings:
    """Everything the API is configured with. Empty resource names mean "not configured"."""

    region: str = DEFAULT_REGION
    cars_table: str = ""
    bookings_table: str = ""
    kyc_table: str = ""
    kyc_bucket: str = ""
    user_pool_id: str = ""
    client_id: str = ""
    issuer_override: str = ""
    jwks_url_override: str = ""
    endpoint_url: str | None = None
    presign_endpoint_url: str | None = None
    git_sha: str = "unknown"
    kyc_max_bytes: int = DEFAULT_KYC_MAX_BYTES
    kyc_upload_ttl: int = DEFAULT_KYC_UPLOAD_TTL
    jwks_timeout: float = DEFAULT_JWKS_TIMEOUT
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    max_open_bookings: int = DEFAULT_MAX_OPEN_BOOKINGS
    api_docs: bool = False

    @property
    def issuer(self) -> str:
        """The expected ``iss`` claim: COGNITO_ISSUER, else the user pool's Cognito issuer."""
        if self.issuer_override:
            return self.issuer_override.rstrip("/")
        if not self.user_pool_id:
            return ""
        return f"https://cognito-idp.{self.region}.amazonaws.com/{self.user_pool_id}"

    @property
    def jwks_url(self) -> str:
        """Where the signing keys are fetched: COGNITO_JWKS_URL, else ``{issuer}/.well-known/jwks.json``."""
        if self.jwks_url_override:
            return self.jwks_url_override
        return f"{self.issuer}/.well-known/jwks.json" if self.issuer else ""

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Build settings from ``env`` (default: ``os.environ``); a malformed number raises ConfigError."""
        env = os.environ if env is None else env

        def text(name: str, default: str = "") -> str:
            return env.get(name, "").strip() or default

        return cls(
            region=text("AWS_REGION") or text("AWS_DEFAULT_REGION") or DEFAULT_REGION,
            cars_table=text("CARS_TABLE"),
            bookings_table=text("BOOKINGS_TABLE"),
            kyc_table=text("KYC_TABLE"),
            kyc_bucket=text("KYC_BUCKET"),
            user_pool_id=text("COGNITO_USER_POOL_ID"),
            client_id=text("COGNITO_CLIENT_ID"),
            issuer_override=text("COGNITO_ISSUER"),
            jwks_url_override=text("COGNITO_JWKS_URL"),
            endpoint_url=text("AWS_ENDPOINT_URL") or None,
            presign_endpoint_url=text("S3_PRESIGN_ENDPOINT_URL") or None,
            git_sha=text("GIT_SHA", "unknown"),
            kyc_max_bytes=_positive_int(env, "KYC_MAX_BYTES", DEFAULT_KYC_MAX_BYTES),
            kyc_upload_ttl=_positive_int(env, "KYC_UPLOAD_URL_TTL", DEFAULT_KYC_UPLOAD_TTL),
            jwks_timeout=_positive_float(env, "JWKS_TIMEOUT", DEFAULT_JWKS_TIMEOUT),
            max_body_bytes=_positive_int(env, "MAX_BODY_BYTES", DEFAULT_MAX_BODY_BYTES),
            max_open_bookings=_positive_int(env, "MAX_OPEN_BOOKINGS", DEFAULT_MAX_OPEN_BOOKINGS),
            api_docs=_flag(env, "API_DOCS"),
        )


def _positive_int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a whole number, got {raw!r}") from None
    if value <= 0:
        raise ConfigError(f"{name} must be positive, got {value}")
    return value


def _positive_float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number, got {raw!r}") from None
    if value <= 0:
        raise ConfigError(f"{name} must be positive, got {value}")
    return value


def _flag(env: Mapping[str, str], name: str) -> bool:
    raw = env.get(name, "").strip().lower()
    if raw in ("", "0", "false", "no", "off"):
        return False
    if raw in ("1", "true", "yes", "on"):
        return True
    raise ConfigError(f"{name} must be true or false, got {raw!r}")
