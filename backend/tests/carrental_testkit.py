"""Test helpers: the World (AWS resources in the moto server), logged-in Users, and a tiny identity
provider with its own RSA keys, a JWKS served over real HTTP on 127.0.0.1, and tokens signed however a
test needs them (expired, wrong token_use, rotated keys...)."""

from __future__ import annotations

import json
import threading
import time
import uuid
from dataclasses import dataclass, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
from app.config import Settings
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey

REGION = "us-east-1"

FAKE_ISSUER = "https://idp.example.test/eu-west-1_FAKEPOOL"
FAKE_CLIENT_ID = "fake-client-id"


@dataclass(frozen=True)
class World:
    """The AWS resources the API runs against, created once per test session in the moto server."""

    endpoint: str
    bucket: str
    cars_table: str
    bookings_table: str
    kyc_table: str
    pool_id: str
    client_id: str
    other_client_id: str  # same pool, another app client
    other_pool_id: str
    other_pool_client_id: str

    def settings(self, **overrides: Any) -> Settings:
        base = Settings(
            region=REGION,
            cars_table=self.cars_table,
            bookings_table=self.bookings_table,
            kyc_table=self.kyc_table,
            kyc_bucket=self.bucket,
            user_pool_id=self.pool_id,
            client_id=self.client_id,
            # moto signs with the real Cognito issuer but serves the keys itself: hence the separate URL.
            jwks_url_override=f"{self.endpoint}/{self.pool_id}/.well-known/jwks.json",
            endpoint_url=self.endpoint,
            git_sha="0123456789abcdef0123456789abcdef01234567",
        )
        return replace(base, **overrides)


def create_table(dynamodb: Any, name: str, partition: str, sort: str | None = None) -> None:
    keys = [{"AttributeName": partition, "KeyType": "HASH"}]
    attributes = [{"AttributeName": partition, "AttributeType": "S"}]
    if sort:
        keys.append({"AttributeName": sort, "KeyType": "RANGE"})
        attributes.append({"AttributeName": sort, "AttributeType": "S"})
    dynamodb.create_table(
        TableName=name, KeySchema=keys, AttributeDefinitions=attributes, BillingMode="PAY_PER_REQUEST"
    )


def create_client(cognito: Any, pool_id: str, name: str) -> str:
    client = cognito.create_user_pool_client(
        UserPoolId=pool_id,
        ClientName=name,
        ExplicitAuthFlows=["ALLOW_USER_PASSWORD_AUTH", "ALLOW_REFRESH_TOKEN_AUTH"],
        ReadAttributes=["email"],
    )
    return str(client["UserPoolClient"]["ClientId"])


@dataclass(frozen=True)
class User:
    username: str
    email: str
    sub: str
    access_token: str
    id_token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.access_token}"}


def new_key() -> RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def public_jwk(key: RSAPrivateKey, kid: str) -> dict[str, Any]:
    jwk: dict[str, Any] = jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key(), as_dict=True)
    return {**jwk, "kid": kid, "alg": "RS256", "use": "sig"}


def sign(key: RSAPrivateKey, kid: str, claims: dict[str, Any], alg: str = "RS256") -> str:
    return jwt.encode(claims, key, algorithm=alg, headers={"kid": kid})


class FakeIdp:
    """Serves ``{"keys": [...]}`` at :attr:`jwks_url` and counts the fetches."""

    def __init__(self) -> None:
        self.keys: dict[str, RSAPrivateKey] = {}
        self.published: list[str] = []  # the kids the JWKS currently lists
        self.fetches = 0
        self.fail = False
        idp = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                idp.fetches += 1
                if idp.fail or self.path != "/jwks.json":
                    self.send_response(500 if idp.fail else 404)
                    self.end_headers()
                    return
                body = json.dumps({"keys": [public_jwk(idp.keys[kid], kid) for kid in idp.published]}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                return

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        host, port = self._server.server_address[:2]
        self.jwks_url = f"http://{host!s}:{port}/jwks.json"
        self.add_key("fake-key-1")

    def add_key(self, kid: str, *, publish: bool = True) -> RSAPrivateKey:
        self.keys[kid] = new_key()
        if publish:
            self.published.append(kid)
        return self.keys[kid]

    def claims(self, **overrides: Any) -> dict[str, Any]:
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": FAKE_ISSUER,
            "sub": str(uuid.uuid4()),
            "token_use": "access",
            "client_id": FAKE_CLIENT_ID,
            "username": "fake-user",
            "iat": now,
            "exp": now + 3600,
        }
        claims.update(overrides)
        return {key: value for key, value in claims.items() if value is not None}

    def token(self, kid: str = "fake-key-1", **overrides: Any) -> str:
        return sign(self.keys[kid], kid, self.claims(**overrides))

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
