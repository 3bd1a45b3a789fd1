"""login_handler against Cognito in moto (in-process), plus botocore's Stubber for answers moto cannot give."""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Callable, Iterator
from types import ModuleType
from typing import Any
from unittest.mock import Mock

import boto3
import pytest
from botocore.stub import Stubber
from moto import mock_aws

REGION = "us-east-1"
USERNAME = "alice@example.com"
PASSWORD = "Correct-Horse-42!"


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_COGNITO_IDENTITY_PROVIDER", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_REGION", REGION)


@pytest.fixture
def mod(load_handler: Callable[[str], ModuleType], aws_env: None) -> Iterator[ModuleType]:
    quiet = {name: logging.getLogger(name).level for name in ("botocore", "boto3", "urllib3")}
    yield load_handler("login_handler")
    for name, level in quiet.items():  # the module raises these loggers' levels; leave other tests as they were
        logging.getLogger(name).setLevel(level)


@pytest.fixture
def pool(aws_env: None, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    """A moto user pool, an app client allowing USER_PASSWORD_AUTH, and a user with a permanent password."""
    with mock_aws():
        idp = boto3.client("cognito-idp", region_name=REGION)
        pool_id = idp.create_user_pool(PoolName="car-rental-users")["UserPool"]["Id"]
        client_id = idp.create_user_pool_client(
            UserPoolId=pool_id,
            ClientName="car-rental-web",
            ExplicitAuthFlows=["ALLOW_USER_PASSWORD_AUTH", "ALLOW_REFRESH_TOKEN_AUTH"],
        )["UserPoolClient"]["ClientId"]
        idp.admin_create_user(UserPoolId=pool_id, Username=USERNAME, MessageAction="SUPPRESS")
        idp.admin_set_user_password(UserPoolId=pool_id, Username=USERNAME, Password=PASSWORD, Permanent=True)
        monkeypatch.setenv("USER_POOL_CLIENT_ID", client_id)
        yield {"pool_id": pool_id, "client_id": client_id}


def event(body: Any, *, b64: bool = False, method: str = "POST") -> dict[str, Any]:
    """An API Gateway REST proxy event for POST /auth/login."""
    if isinstance(body, dict):
        body = json.dumps(body)
    if b64 and isinstance(body, str):
        body = base64.b64encode(body.encode()).decode()
    return {
        "resource": "/auth/login",
        "path": "/auth/login",
        "httpMethod": method,
        "headers": {"content-type": "application/json"},
        "queryStringParameters": None,
        "pathParameters": None,
        "requestContext": {"stage": "prod", "requestId": "req-1", "httpMethod": method},
        "body": body,
        "isBase64Encoded": b64,
    }


def answer(resp: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    assert resp["headers"]["content-type"] == "application/json"
    assert isinstance(resp["body"], str)
    return resp["statusCode"], json.loads(resp["body"])


def test_good_login_returns_tokens(mod: ModuleType, pool: dict[str, str]) -> None:
    status, body = answer(mod.handler(event({"username": USERNAME, "password": PASSWORD}), None))

    assert status == 200
    assert set(body) == {"access_token", "id_token", "refresh_token", "expires_in", "token_type"}
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 3600
    assert all(isinstance(body[k], str) and body[k] for k in ("access_token", "id_token", "refresh_token"))
    # The access token is Cognito's for this client: a JWT whose claims name the app client.
    claims = json.loads(base64.urlsafe_b64decode(body["access_token"].split(".")[1] + "=="))
    assert claims["client_id"] == pool["client_id"]


def test_base64_body_logs_in(mod: ModuleType, pool: dict[str, str]) -> None:
    status, body = answer(mod.handler(event({"username": USERNAME, "password": PASSWORD}, b64=True), None))

    assert status == 200
    assert body["access_token"]


def test_wrong_password_and_unknown_user_answer_the_same(mod: ModuleType, pool: dict[str, str]) -> None:
    wrong_password = mod.handler(event({"username": USERNAME, "password": "Not-The-Password-1!"}), None)
    unknown_user = mod.handler(event({"username": "nobody@example.com", "password": PASSWORD}), None)

    assert wrong_password["statusCode"] == unknown_user["statusCode"] == 401
    assert wrong_password["body"] == unknown_user["body"]
    assert wrong_password["headers"] == unknown_user["headers"]
    assert json.loads(wrong_password["body"]) == {
        "code": "invalid_credentials",
        "message": "incorrect username or password",
    }


@pytest.mark.parametrize(
    ("body", "b64", "why"),
    [
        (None, False, "needs a JSON body"),
        ("", False, "needs a JSON body"),
        ("username=alice&password=x", False, "not valid JSON"),
        ('{"username": "alice", ', False, "not valid JSON"),
        ("[" * 1500 + "]" * 1500, False, "not valid JSON"),  # nested past Python's recursion limit: a 500 before
        ("[]", False, "must be a JSON object"),
        ('"alice"', False, "must be a JSON object"),
        ("null", False, "must be a JSON object"),
        ("{}", False, "username is missing"),
        ({"username": USERNAME}, False, "password is missing"),
        ({"password": PASSWORD}, False, "username is missing"),
        ({"username": "", "password": PASSWORD}, False, "username is empty"),
        ({"username": "   ", "password": PASSWORD}, False, "username is empty"),
        ({"username": USERNAME, "password": ""}, False, "password is empty"),
        ({"username": USERNAME, "password": 12345678}, False, "password must be a string"),
        ({"username": ["alice"], "password": PASSWORD}, False, "username must be a string"),
        ({"username": USERNAME, "password": None}, False, "password is missing"),
        ({"username": "a" * 129, "password": PASSWORD}, False, "username is longer than 128"),
        ({"username": USERNAME, "password": "x" * 5000}, False, "larger than 4096 bytes"),
        ("%%% not base64 %%%", True, "not valid base64"),
        (base64.b64encode(b"not json").decode(), True, "not valid JSON"),
        (base64.b64encode(b"\xff\xfe{}").decode(), True, "not valid JSON"),
        (json.dumps({"username": USERNAME, "password": PASSWORD}), True, None),  # JSON marked base64, not base64
    ],
)
def test_malformed_body_is_400_and_never_reaches_cognito(
    mod: ModuleType, monkeypatch: pytest.MonkeyPatch, body: Any, b64: bool, why: str | None
) -> None:
    monkeypatch.setenv("USER_POOL_CLIENT_ID", "client-id")
    cognito = Mock()
    monkeypatch.setattr(mod, "_client", cognito)
    ev = event(body)
    ev["isBase64Encoded"] = b64

    status, answer_body = answer(mod.handler(ev, None))

    assert status == 400
    assert answer_body["code"] == "bad_request"
    assert why is None or why in answer_body["message"]
    cognito.initiate_auth.assert_not_called()


def test_body_that_is_not_a_string_is_400(mod: ModuleType) -> None:
    ev = event(None)
    ev["body"] = {"username": USERNAME, "password": PASSWORD}  # a direct invoke, not API Gateway

    assert mod.handler(ev, None)["statusCode"] == 400
    assert mod.handler(["not", "an", "event"], None)["statusCode"] == 400


def test_other_methods_are_405(mod: ModuleType) -> None:
    resp = mod.handler(event({"username": USERNAME, "password": PASSWORD}, method="GET"), None)

    assert resp["statusCode"] == 405
    assert resp["headers"]["allow"] == "POST"


def test_new_password_challenge_is_409_with_the_challenge(mod: ModuleType, pool: dict[str, str]) -> None:
    idp = boto3.client("cognito-idp", region_name=REGION)
    idp.admin_create_user(
        UserPoolId=pool["pool_id"],
        Username="bob@example.com",
        TemporaryPassword="Temp-Pass-42!",
        MessageAction="SUPPRESS",
    )

    status, body = answer(mod.handler(event({"username": "bob@example.com", "password": "Temp-Pass-42!"}), None))

    assert status == 409
    assert body["code"] == "challenge_required"
    assert body["challenge"] == "NEW_PASSWORD_REQUIRED"
    assert body["session"]
    assert "access_token" not in body


def test_passwords_and_tokens_never_reach_the_log(
    mod: ModuleType, pool: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    good = json.loads(mod.handler(event({"username": USERNAME, "password": PASSWORD}), None)["body"])
    mod.handler(event({"username": USERNAME, "password": "Wrong-Password-1!"}), None)
    mod.handler(event({"username": USERNAME, "password": 7}), None)

    logged = caplog.text
    assert "login succeeded" in logged  # the log does say what happened
    assert "invalid credentials" in logged
    for secret in (PASSWORD, "Wrong-Password-1!", good["access_token"], good["id_token"], good["refresh_token"]):
        assert secret not in logged
    assert USERNAME not in logged


def test_client_is_created_once_per_container(mod: ModuleType, pool: dict[str, str]) -> None:
    assert mod._client is None  # nothing at import time: importing the module needs no AWS
    first = mod.cognito()
    mod.handler(event({"username": USERNAME, "password": PASSWORD}), None)

    assert mod.cognito() is first
    assert first.meta.region_name == REGION


def test_missing_client_id_is_a_generic_500(mod: ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("USER_POOL_CLIENT_ID", raising=False)

    status, body = answer(mod.handler(event({"username": USERNAME, "password": PASSWORD}), None))

    assert status == 500
    assert body == {"code": "internal_error", "message": "login is unavailable, try again later"}


def test_unknown_app_client_is_a_generic_500(
    mod: ModuleType, pool: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("USER_POOL_CLIENT_ID", "no-such-client")

    status, body = answer(mod.handler(event({"username": USERNAME, "password": PASSWORD}), None))

    assert status == 500
    assert "no-such-client" not in json.dumps(body)
    assert body["code"] == "internal_error"


@pytest.mark.parametrize(
    ("error_code", "status", "code"),
    [
        ("NotAuthorizedException", 401, "invalid_credentials"),
        ("UserNotFoundException", 401, "invalid_credentials"),
        ("UserNotConfirmedException", 403, "user_not_confirmed"),
        ("PasswordResetRequiredException", 409, "password_reset_required"),
        ("TooManyRequestsException", 429, "too_many_requests"),
        ("InvalidParameterException", 500, "internal_error"),
        ("InternalErrorException", 500, "internal_error"),
    ],
)
def test_cognito_errors_map_to_answers(
    mod: ModuleType, monkeypatch: pytest.MonkeyPatch, error_code: str, status: int, code: str
) -> None:
    monkeypatch.setenv("USER_POOL_CLIENT_ID", "client-id")
    client = boto3.client("cognito-idp", region_name=REGION)
    monkeypatch.setattr(mod, "_client", client)
    with Stubber(client) as stub:
        stub.add_client_error("initiate_auth", service_error_code=error_code, service_message="detail from AWS")

        got_status, body = answer(mod.handler(event({"username": USERNAME, "password": PASSWORD}), None))

    assert (got_status, body["code"]) == (status, code)
    assert "detail from AWS" not in body["message"]


def test_unexpected_exception_is_a_generic_500(mod: ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("USER_POOL_CLIENT_ID", "client-id")
    cognito = Mock()
    cognito.initiate_auth.side_effect = RuntimeError(f"boom {PASSWORD}")
    monkeypatch.setattr(mod, "_client", cognito)

    status, body = answer(mod.handler(event({"username": USERNAME, "password": PASSWORD}), None))

    assert (status, body["code"]) == (500, "internal_error")
    assert PASSWORD not in json.dumps(body)
