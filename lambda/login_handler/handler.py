"""POST /auth/login behind API Gateway (REST API, Lambda proxy integration): Cognito user/password login.

Request body (JSON, optionally base64-encoded as API Gateway marks with ``isBase64Encoded``)::

    {"username": "alice", "password": "..."}

Answers, all ``application/json`` and ``cache-control: no-store``:

- 200 ``{"access_token", "id_token", "refresh_token", "expires_in", "token_type"}``
- 400 ``{"code": "bad_request", "message"}``: the body is not a JSON object with non-empty string fields
- 401 ``{"code": "invalid_credentials", "message"}``: the same answer for a wrong password and an unknown
  user, so the endpoint does not tell who has an account
- 403 ``{"code": "user_not_confirmed", "message"}``: the account exists but is not confirmed yet
- 405 ``{"code": "method_not_allowed", "message"}``: anything but POST
- 409 ``{"code": "challenge_required", "message", "challenge", "session"}``: Cognito wants another step
  (e.g. ``NEW_PASSWORD_REQUIRED``); answer it with Cognito's RespondToAuthChallenge and the session
- 409 ``{"code": "password_reset_required", "message"}``
- 429 ``{"code": "too_many_requests", "message"}``
- 500 ``{"code": "internal_error", "message"}``: anything else, detail only in the log

Environment: ``USER_POOL_CLIENT_ID`` (an app client without a secret, with ALLOW_USER_PASSWORD_AUTH),
``AWS_REGION`` (set by Lambda), and optionally ``AWS_ENDPOINT_URL`` (boto3 reads it) for a local AWS.

Passwords, tokens and the challenge session are never logged; neither is the username.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
from typing import Any

import boto3
from botocore.exceptions import BotoCoreError, ClientError

LOG = logging.getLogger(__name__)
LOG.setLevel(logging.INFO)
# botocore and urllib3 log whole request and response bodies at DEBUG: the password going in, the tokens
# coming out. Keep them at INFO or above whatever level the function's logging is later set to.
for _name in ("botocore", "boto3", "urllib3"):
    _logger = logging.getLogger(_name)
    if _logger.level < logging.INFO:  # NOTSET (0) follows the root logger, which may be set to DEBUG
        _logger.setLevel(logging.INFO)

MAX_BODY_BYTES = 4096  # a username and a password; anything bigger is not a login
MAX_USERNAME = 128  # Cognito's limits
MAX_PASSWORD = 256

JSON_HEADERS = {"content-type": "application/json", "cache-control": "no-store"}

_client: Any = None  # the Cognito client, made on first use and kept for the container's life


class BadRequest(Exception):
    """The request body is not a usable login; the message is safe to show the caller."""


def cognito() -> Any:
    """The Cognito Identity Provider client, created once per container."""
    global _client
    if _client is None:
        region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
        _client = boto3.client("cognito-idp", region_name=region)
    return _client


def response(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "statusCode": status,
        "headers": {**JSON_HEADERS, **(headers or {})},
        "body": json.dumps(body, separators=(",", ":"), sort_keys=True),
        "isBase64Encoded": False,
    }


def error(status: int, code: str, message: str, **extra: Any) -> dict[str, Any]:
    return response(status, {"code": code, "message": message, **extra})


def parse_login(event: dict[str, Any]) -> tuple[str, str]:
    """(username, password) from the proxy event's body, or BadRequest saying what is wrong."""
    body = event.get("body")
    if body is None or body == "":
        raise BadRequest("the request needs a JSON body with username and password")
    if not isinstance(body, str):
        raise BadRequest("the request body must be a JSON document")
    raw: bytes
    if event.get("isBase64Encoded"):
        try:
            raw = base64.b64decode(body, validate=True)
        except (binascii.Error, ValueError):
            raise BadRequest("the request body is marked base64 but is not valid base64") from None
    else:
        raw = body.encode("utf-8", errors="surrogatepass")
    if len(raw) > MAX_BODY_BYTES:
        raise BadRequest(f"the request body is larger than {MAX_BODY_BYTES} bytes")
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):  # RecursionError: [[[[... nested too deep
        raise BadRequest("the request body is not valid JSON") from None
    if not isinstance(data, dict):
        raise BadRequest("the request body must be a JSON object with username and password")
    return _text_field(data, "username", MAX_USERNAME), _text_field(data, "password", MAX_PASSWORD)


def _text_field(data: dict[str, Any], name: str, limit: int) -> str:
    value = data.get(name)
    if value is None:
        raise BadRequest(f"{name} is missing")
    if not isinstance(value, str):
        raise BadRequest(f"{name} must be a string")
    if not value.strip():
        raise BadRequest(f"{name} is empty")
    if len(value) > limit:
        raise BadRequest(f"{name} is longer than {limit} characters")
    return value


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """The Lambda entry point: an API Gateway proxy event in, a proxy response out, never an exception."""
    try:
        return _login(event)
    except Exception as exc:  # the caller gets a generic 500; the log gets the type and where, not the message
        tb = exc.__traceback__
        while tb is not None and tb.tb_next is not None:
            tb = tb.tb_next
        where = f"{tb.tb_frame.f_code.co_filename}:{tb.tb_lineno}" if tb is not None else "?"
        LOG.error("login failed: unexpected %s at %s", type(exc).__name__, where)
        return error(500, "internal_error", "login is unavailable, try again later")


def _login(event: dict[str, Any]) -> dict[str, Any]:
    if not isinstance(event, dict):
        return error(400, "bad_request", "expected an API Gateway proxy event")
    method = event.get("httpMethod")
    if method is not None and method != "POST":
        return response(
            405, {"code": "method_not_allowed", "message": "use POST with a JSON body"}, headers={"allow": "POST"}
        )
    try:
        username, password = parse_login(event)
    except BadRequest as exc:
        LOG.info("login rejected: malformed request (%s)", exc)
        return error(400, "bad_request", str(exc))

    client_id = os.environ.get("USER_POOL_CLIENT_ID")
    if not client_id:
        LOG.error("USER_POOL_CLIENT_ID is not set: the function is misconfigured")
        return error(500, "internal_error", "login is unavailable, try again later")

    try:
        answer = cognito().initiate_auth(
            ClientId=client_id,
            AuthFlow="USER_PASSWORD_AUTH",
            AuthParameters={"USERNAME": username, "PASSWORD": password},
        )
    except ClientError as exc:
        return _client_error(exc)
    except BotoCoreError as exc:
        LOG.error("login failed: Cognito unreachable (%s)", type(exc).__name__)
        return error(500, "internal_error", "login is unavailable, try again later")

    result = answer.get("AuthenticationResult")
    if result:
        LOG.info("login succeeded")
        return response(
            200,
            {
                "access_token": result.get("AccessToken"),
                "id_token": result.get("IdToken"),
                "refresh_token": result.get("RefreshToken"),
                "expires_in": result.get("ExpiresIn"),
                "token_type": result.get("TokenType", "Bearer"),
            },
        )
    challenge = answer.get("ChallengeName")
    if challenge:
        LOG.info("login needs a further step: %s", challenge)
        return error(
            409,
            "challenge_required",
            f"Cognito asks for another step ({challenge}); answer it with RespondToAuthChallenge and this session",
            challenge=challenge,
            session=answer.get("Session"),
        )
    LOG.error("login failed: Cognito answered with neither tokens nor a challenge")
    return error(500, "internal_error", "login is unavailable, try again later")


def _client_error(exc: ClientError) -> dict[str, Any]:
    code = exc.response.get("Error", {}).get("Code", "")
    if code in ("NotAuthorizedException", "UserNotFoundException"):
        # One answer for both, whatever Cognito's PreventUserExistenceErrors setting says.
        LOG.info("login rejected: invalid credentials")
        return error(401, "invalid_credentials", "incorrect username or password")
    if code == "UserNotConfirmedException":
        LOG.info("login rejected: user not confirmed")
        return error(403, "user_not_confirmed", "confirm the account before logging in")
    if code == "PasswordResetRequiredException":
        LOG.info("login rejected: password reset required")
        return error(409, "password_reset_required", "the password must be reset before logging in")
    if code in ("TooManyRequestsException", "LimitExceededException", "TooManyFailedAttemptsException"):
        LOG.warning("login throttled: %s", code)
        return error(429, "too_many_requests", "too many attempts, try again later")
    # ResourceNotFound (wrong client id), InvalidParameter (auth flow not enabled), InternalError...
    LOG.error("login failed: Cognito error %s", code or type(exc).__name__)
    return error(500, "internal_error", "login is unavailable, try again later")
