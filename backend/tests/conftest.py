"""Fixtures: moto in server mode on 127.0.0.1 (S3, DynamoDB, Cognito with real signed tokens and its
JWKS over HTTP), the API wired to it, users who log in for real, and a fake identity provider."""

from __future__ import annotations

import socket
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

BACKEND = Path(__file__).resolve().parents[1]
if str(BACKEND) not in sys.path:
    sys.path.insert(0, str(BACKEND))

from app.aws import AwsClients, make_clients  # noqa: E402
from app.main import create_app  # noqa: E402
from carrental_testkit import (  # noqa: E402
    FAKE_CLIENT_ID,
    FAKE_ISSUER,
    REGION,
    FakeIdp,
    User,
    World,
    create_client,
    create_table,
)
from moto.server import ThreadedMotoServer  # noqa: E402

PASSWORD = "Correct-Horse-9-Battery"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def moto_url() -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=free_port(), verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture(scope="session")
def aws_session() -> boto3.Session:
    # Explicit fake credentials: nothing leaks into (or out of) os.environ.
    return boto3.Session(aws_access_key_id="testing", aws_secret_access_key="testing", region_name=REGION)


@pytest.fixture(scope="session")
def world(moto_url: str, aws_session: boto3.Session) -> World:
    s3 = aws_session.client("s3", endpoint_url=moto_url)
    dynamodb = aws_session.client("dynamodb", endpoint_url=moto_url)
    cognito = aws_session.client("cognito-idp", endpoint_url=moto_url)
    s3.create_bucket(Bucket="car-rental-kyc-test")
    create_table(dynamodb, "cars", "car_id")
    create_table(dynamodb, "bookings", "user_id", "booking_id")
    create_table(dynamodb, "kyc-cases", "user_id", "case_id")
    pool_id = cognito.create_user_pool(PoolName="car-rental-users")["UserPool"]["Id"]
    other_pool_id = cognito.create_user_pool(PoolName="somebody-elses-users")["UserPool"]["Id"]
    return World(
        endpoint=moto_url,
        bucket="car-rental-kyc-test",
        cars_table="cars",
        bookings_table="bookings",
        kyc_table="kyc-cases",
        pool_id=pool_id,
        client_id=create_client(cognito, pool_id, "web"),
        other_client_id=create_client(cognito, pool_id, "another-app"),
        other_pool_id=other_pool_id,
        other_pool_client_id=create_client(cognito, other_pool_id, "web"),
    )


@pytest.fixture(scope="session")
def clients(world: World, aws_session: boto3.Session) -> AwsClients:
    return make_clients(world.settings(), aws_session)


@pytest.fixture(scope="session")
def make_api(world: World, aws_session: boto3.Session) -> Callable[..., TestClient]:
    """A TestClient on a fresh app whose settings are the world's with ``overrides``."""

    def make(app: FastAPI | None = None, **overrides: Any) -> TestClient:
        if app is None:
            settings = world.settings(**overrides)
            app = create_app(settings, make_clients(settings, aws_session))
        return TestClient(app, raise_server_exceptions=False)

    return make


@pytest.fixture(scope="session")
def api(world: World, clients: AwsClients) -> TestClient:
    """The API as deployed: every setting from the world, moto's JWKS."""
    return TestClient(create_app(world.settings(), clients), raise_server_exceptions=False)


@pytest.fixture(scope="session")
def make_user(world: World, aws_session: boto3.Session) -> Callable[..., User]:
    """A new user in a pool, logged in with USER_PASSWORD_AUTH: real moto-signed access and id tokens."""
    cognito = aws_session.client("cognito-idp", endpoint_url=world.endpoint)

    def make(pool_id: str | None = None, client_id: str | None = None) -> User:
        pool_id = pool_id or world.pool_id
        client_id = client_id or world.client_id
        username = f"user-{uuid.uuid4().hex[:10]}"
        email = f"{username}@example.com"
        created = cognito.admin_create_user(
            UserPoolId=pool_id,
            Username=username,
            UserAttributes=[{"Name": "email", "Value": email}, {"Name": "email_verified", "Value": "true"}],
            MessageAction="SUPPRESS",
        )
        cognito.admin_set_user_password(UserPoolId=pool_id, Username=username, Password=PASSWORD, Permanent=True)
        auth = cognito.initiate_auth(
            ClientId=client_id,
            AuthFlow="USER_PASSWORD_AUTH",
            AuthParameters={"USERNAME": username, "PASSWORD": PASSWORD},
        )["AuthenticationResult"]
        sub = next(a["Value"] for a in created["User"]["Attributes"] if a["Name"] == "sub")
        return User(username, email, sub, auth["AccessToken"], auth["IdToken"])

    return make


@pytest.fixture
def alice(make_user: Callable[..., User]) -> User:
    return make_user()


@pytest.fixture
def bob(make_user: Callable[..., User]) -> User:
    return make_user()


@pytest.fixture(scope="session")
def idp() -> Iterator[FakeIdp]:
    fake = FakeIdp()
    yield fake
    fake.close()


@pytest.fixture
def fake_idp_api(idp: FakeIdp, make_api: Callable[..., TestClient]) -> TestClient:
    """The API trusting the fake identity provider instead of moto's Cognito."""
    idp.published[:] = ["fake-key-1"]
    idp.fail = False
    return make_api(issuer_override=FAKE_ISSUER, jwks_url_override=idp.jwks_url, client_id=FAKE_CLIENT_ID)
