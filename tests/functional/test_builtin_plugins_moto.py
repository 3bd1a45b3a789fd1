"""The built-in check plugins (plugins/): each check against a fake platform, passing and failing, cleanup always.

HTTP is ``Mock(spec=Http)`` whose ``request`` is a :class:`FakePlatform`: the app's routes (API Gateway health
and login, the backend's /health, /health/deep, /me and KYC, the presigned S3 upload) routed by (method, URL),
backed by moto's Cognito, S3 and DynamoDB, so a login checks the password the check set, tokens are moto's
JWTs, and a KYC case and its document really exist until the check removes them. ELBv2 target health is a
Mock (moto cannot make a target unhealthy with a reason). Any route can be overridden with an answer or an
HttpError to make a check fail at that point.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import re
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any
from unittest.mock import Mock
from urllib.parse import urlsplit

import pytest
from botocore.exceptions import ClientError
from moto import mock_aws

import plugins
from deploykit.aws import AwsFactory, new_session
from deploykit.checks import Check, CheckContext, CheckResult, Http, HttpError, HttpResponse, run_checks
from deploykit.endpoints import Endpoints
from deploykit.plugins import get_plugin_manager
from deploykit.testing import sample_endpoints, sample_env
from plugins import _support, alb, api_gateway, auth, connectivity, kyc

REGION = "us-east-1"
ALB = "http://alb.test"
API = "https://api.test/prod/"
S3 = "https://s3.test"
TG_ARN = "arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/car-rental-tg/0123456789abcdef"
SIGNATURE = "X-Amz-Signature=s3cr3t-signature"
MODULES: list[tuple[str, ModuleType, tuple[str, ...]]] = [
    ("alb", alb, ()),
    ("api_gateway", api_gateway, ()),
    ("auth", auth, ("api_gateway",)),
    ("kyc", kyc, ("alb", "api_gateway")),
    ("connectivity", connectivity, ()),
]


def answer(status: int, body: Any = None, raw: bytes = b"") -> HttpResponse:
    data = json.dumps(body).encode() if body is not None else raw
    return HttpResponse(status, data, {"Content-Type": "application/json" if body is not None else "text/html"})


def target_health(*states: tuple[str, str | None]) -> dict[str, Any]:
    descriptions = []
    for i, (state, reason) in enumerate(states):
        health = {"State": state, **({"Reason": reason} if reason else {})}
        descriptions.append({"Target": {"Id": f"10.0.0.{i + 1}", "Port": 8000}, "TargetHealth": health})
    return {"TargetHealthDescriptions": descriptions}


@dataclass
class World:
    """moto's Cognito, S3 and DynamoDB with the stacks' resources, a Mock ELBv2, and the AWS factory for them."""

    clients: dict[str, Any]
    aws: Mock
    endpoints: Endpoints

    @property
    def idp(self) -> Any:
        return self.clients["cognito-idp"]

    def leftovers(self) -> dict[str, list[Any]]:
        pool, bucket, table = self.endpoints.user_pool_id, self.endpoints.buckets["kyc"], self.endpoints.tables["kyc"]
        s3, dynamodb = self.clients["s3"], self.clients["dynamodb"]
        return {
            "users": [u["Username"] for u in self.idp.list_users(UserPoolId=pool)["Users"]],
            # every version and delete marker: the data stack's bucket keeps versions, as this one does
            "objects": [
                o["Key"]
                for found in [s3.list_object_versions(Bucket=bucket)]
                for o in [*found.get("Versions", []), *found.get("DeleteMarkers", [])]
            ],
            "cases": dynamodb.scan(TableName=table)["Items"],
        }


@pytest.fixture
def world(monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    with mock_aws():
        session = new_session(region_name=REGION, aws_access_key_id="test", aws_secret_access_key="test")
        idp, s3, dynamodb = session.client("cognito-idp"), session.client("s3"), session.client("dynamodb")
        policy = {
            "MinimumLength": 12,
            "RequireUppercase": True,
            "RequireLowercase": True,
            "RequireNumbers": True,
            "RequireSymbols": True,
        }
        pool = idp.create_user_pool(
            PoolName="car-rental-test-users", UsernameAttributes=["email"], Policies={"PasswordPolicy": policy}
        )["UserPool"]["Id"]
        client = idp.create_user_pool_client(
            UserPoolId=pool, ClientName="car-rental-app", ExplicitAuthFlows=["ALLOW_USER_PASSWORD_AUTH"]
        )["UserPoolClient"]["ClientId"]
        s3.create_bucket(Bucket="kyc-docs")
        s3.put_bucket_versioning(Bucket="kyc-docs", VersioningConfiguration={"Status": "Enabled"})
        tables = {"cars": "cars-table", "bookings": "bookings-table", "kyc": "kyc-cases"}
        for role, name in tables.items():
            keys = [("car_id", "HASH")] if role == "cars" else [("user_id", "HASH"), (f"{role[:-1]}_id", "RANGE")]
            if role == "kyc":
                keys = [("user_id", "HASH"), ("case_id", "RANGE")]
            dynamodb.create_table(
                TableName=name,
                KeySchema=[{"AttributeName": k, "KeyType": t} for k, t in keys],
                AttributeDefinitions=[{"AttributeName": k, "AttributeType": "S"} for k, _ in keys],
                BillingMode="PAY_PER_REQUEST",
            )
        elbv2 = Mock(spec=["describe_target_health"])
        elbv2.describe_target_health.return_value = target_health(("healthy", None), ("healthy", None))
        clients: dict[str, Any] = {"cognito-idp": idp, "s3": s3, "dynamodb": dynamodb, "elbv2": elbv2}
        aws = Mock(spec=AwsFactory)
        aws.client.side_effect = lambda service: clients[service]
        endpoints = sample_endpoints(
            alb_url=ALB,
            api_url=API,
            api_health_url=API + "health",
            login_url=API + "auth/login",
            target_group_arn=TG_ARN,
            user_pool_id=pool,
            user_pool_client_id=client,
            tables=tables,
            buckets={"kyc": "kyc-docs", "kyc_access_logs": "kyc-logs", "artifacts": "artifacts"},
        )
        yield World(clients, aws, endpoints)


@dataclass
class FakePlatform:
    """``Http.request`` for the whole app, routed by (method, URL). ``overrides`` answer (or raise) instead of a
    route; ``after`` replaces a route's answer once it has run (a request that did its work, then failed). A key's
    URL ending in ``*`` matches by prefix."""

    world: World
    overrides: dict[tuple[str, str], HttpResponse | Exception] = field(default_factory=dict)
    after: dict[tuple[str, str], HttpResponse] = field(default_factory=dict)
    requests: list[dict[str, Any]] = field(default_factory=list)
    issued: set[str] = field(default_factory=set)
    accept_any_token: bool = False
    deep: dict[str, dict[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        e = self.world.endpoints
        targets = {
            "s3:kyc": e.buckets["kyc"],
            "dynamodb:cars": e.tables["cars"],
            "dynamodb:bookings": e.tables["bookings"],
            "dynamodb:kyc": e.tables["kyc"],
            "cognito:user_pool": e.user_pool_id,
        }
        for i, (name, target) in enumerate(targets.items()):
            self.deep[name] = {"status": "ok", "target": target, "latency_ms": 10.0 + i, "error": None}

    def backend_stopped(self) -> None:
        """What the ALB does with no healthy target: 503 for every backend route."""
        self.overrides[("GET", ALB + "/*")] = self.overrides[("POST", ALB + "/*")] = answer(
            503, raw=b"<html><body><h1>503 Service Temporarily Unavailable</h1></body></html>"
        )
        elbv2 = self.world.clients["elbv2"]
        elbv2.describe_target_health.return_value = target_health(("unhealthy", "Target.FailedHealthChecks"))

    @staticmethod
    def _lookup(table: dict[tuple[str, str], Any], method: str, url: str) -> Any:
        for (m, u), found in table.items():
            if m == method and (u == url or (u.endswith("*") and url.startswith(u[:-1]))):
                return found
        return None

    def __call__(
        self,
        method: str,
        url: str,
        *,
        json_body: Any = None,
        data: bytes | None = None,
        headers: dict[str, str] | None = None,
        timeout: float | None = None,
    ) -> HttpResponse:
        sent = dict(headers or {})
        self.requests.append({"method": method, "url": url, "json": json_body, "data": data, "headers": sent})
        found: HttpResponse | Exception | None = self._lookup(self.overrides, method, url)
        if isinstance(found, Exception):
            raise found
        if found is not None:
            return found
        response = self._route(method, url, json_body, data, sent)
        replaced: HttpResponse | None = self._lookup(self.after, method, url)
        return replaced or response

    def urls(self, method: str | None = None) -> list[str]:
        return [r["url"] for r in self.requests if method is None or r["method"] == method]

    # -- the routes --------------------------------------------------------------------------------------

    def _route(self, method: str, url: str, body: Any, data: bytes | None, headers: dict[str, str]) -> HttpResponse:
        if (method, url) == ("GET", API + "health"):
            return answer(200, {"status": "ok", "function_version": "3"})
        if (method, url) == ("POST", API + "auth/login"):
            return self._login(body)
        if method == "PUT" and url.startswith(S3 + "/"):
            return self._upload(url, data, headers)
        path = url[len(ALB) :] if url.startswith(ALB + "/") else None
        if path == "/health" and method == "GET":
            return answer(200, {"status": "ok"})
        if path == "/health/deep" and method == "GET":
            ok = all(c["status"] == "ok" for c in self.deep.values())
            return answer(200 if ok else 503, {"status": "ok" if ok else "fail", "checks": self.deep})
        claims = self._caller(headers)
        if path is not None and path.startswith(("/me", "/kyc")) and claims is None:
            return answer(401, {"error": {"code": "invalid_token", "message": "the token is not valid"}})
        if path == "/me" and method == "GET" and claims is not None:
            return answer(200, {"sub": claims["sub"], "username": claims["username"], "token_use": "access"})
        match = re.fullmatch(r"/kyc(?:/([0-9a-f]{32})(/submit)?)?", path or "")
        if match and claims is not None:
            case_id, submit = match.groups()
            if case_id is None and method == "POST":
                return self._kyc_start(claims["sub"], body)
            if case_id is not None and submit and method == "POST":
                return self._kyc_submit(claims["sub"], case_id)
            if case_id is not None and not submit and method == "GET":
                return self._kyc_view(claims["sub"], case_id)
        return answer(404, {"error": {"code": "not_found", "message": f"no route {method} {url}"}})

    def _login(self, body: Any) -> HttpResponse:
        if not isinstance(body, dict) or not body.get("username") or not body.get("password"):
            return answer(400, {"code": "bad_request", "message": "password is missing"})
        try:
            result = self.world.idp.initiate_auth(
                ClientId=self.world.endpoints.user_pool_client_id,
                AuthFlow="USER_PASSWORD_AUTH",
                AuthParameters={"USERNAME": body["username"], "PASSWORD": body["password"]},
            )["AuthenticationResult"]
        except ClientError:
            return answer(401, {"code": "invalid_credentials", "message": "incorrect username or password"})
        self.issued.add(result["AccessToken"])
        tokens = {"access_token": result["AccessToken"], "id_token": result["IdToken"]}
        return answer(200, {**tokens, "refresh_token": "r", "expires_in": 3600, "token_type": "Bearer"})

    def _caller(self, headers: dict[str, str]) -> dict[str, Any] | None:
        token = headers.get("Authorization", "").removeprefix("Bearer ")
        if token in self.issued or (self.accept_any_token and token):
            return _support.jwt_claims(token) or None
        return None

    def _table(self) -> tuple[Any, str]:
        return self.world.clients["dynamodb"], self.world.endpoints.tables["kyc"]

    def _case(self, sub: str, case_id: str) -> dict[str, Any] | None:
        dynamodb, table = self._table()
        item = dynamodb.get_item(TableName=table, Key=kyc.case_key(sub, case_id)).get("Item")
        return {k: v["S"] for k, v in item.items()} if item else None

    def _kyc_start(self, sub: str, body: Any) -> HttpResponse:
        if body != {"document_type": "passport", "content_type": "application/pdf"}:
            return answer(422, {"error": {"code": "validation_error", "message": "unexpected body"}})
        dynamodb, table = self._table()
        case_id = uuid.uuid4().hex
        case = {"case_id": case_id, "status": "PENDING_UPLOAD", **body}
        dynamodb.put_item(TableName=table, Item={k: {"S": v} for k, v in {**case, "user_id": sub}.items()})
        url = f"{S3}/{self.world.endpoints.buckets['kyc']}/kyc/{sub}/{case_id}?{SIGNATURE}"
        upload = {"url": url, "method": "PUT", "headers": {"Content-Type": "application/pdf"}, "expires_in": 900}
        return answer(201, {"case": case, "upload": upload})

    def _upload(self, url: str, data: bytes | None, headers: dict[str, str]) -> HttpResponse:
        bucket, key = urlsplit(url).path.lstrip("/").split("/", 1)
        if headers.get("Content-Type") != "application/pdf" or SIGNATURE not in url:
            return answer(403, raw=b"<Error><Code>SignatureDoesNotMatch</Code></Error>")
        self.world.clients["s3"].put_object(Bucket=bucket, Key=key, Body=data or b"", ContentType="application/pdf")
        return HttpResponse(200, b"")

    def _kyc_submit(self, sub: str, case_id: str) -> HttpResponse:
        case = self._case(sub, case_id)
        if case is None:
            return answer(404, {"error": {"code": "not_found", "message": "no such KYC case"}})
        s3, bucket = self.world.clients["s3"], self.world.endpoints.buckets["kyc"]
        key = kyc.object_key(sub, case_id)
        try:
            head = s3.get_object(Bucket=bucket, Key=key)["Body"].read(16)
        except ClientError:
            return answer(409, {"error": {"code": "document_missing", "message": "no document uploaded yet"}})
        status = "SUBMITTED" if head.startswith(b"%PDF-") else "REJECTED"
        if status == "REJECTED":
            case["rejection_reason"] = "the document content is not application/pdf"
            s3.delete_object(Bucket=bucket, Key=key)
        case["status"] = status
        dynamodb, table = self._table()
        dynamodb.put_item(TableName=table, Item={k: {"S": v} for k, v in case.items()})
        return answer(200, {k: v for k, v in case.items() if k != "user_id"})

    def _kyc_view(self, sub: str, case_id: str) -> HttpResponse:
        case = self._case(sub, case_id)
        if case is None:
            return answer(404, {"error": {"code": "not_found", "message": "no such KYC case"}})
        return answer(200, {k: v for k, v in case.items() if k != "user_id"})


@pytest.fixture
def platform(world: World) -> FakePlatform:
    return FakePlatform(world)


def context(world: World, platform: FakePlatform, **endpoint_changes: Any) -> CheckContext:
    http = Mock(spec=Http)
    http.request.side_effect = platform
    endpoints = dataclasses.replace(world.endpoints, **endpoint_changes)
    return CheckContext(sample_env(), endpoints, world.aws, http)


def run(module: ModuleType, world: World, platform: FakePlatform, **endpoint_changes: Any) -> CheckResult:
    [check] = module.deploykit_register_checks(env=sample_env())
    result = check.run(context(world, platform, **endpoint_changes))
    assert isinstance(result, CheckResult)
    return result


NOTHING_LEFT: dict[str, list[Any]] = {"users": [], "objects": [], "cases": []}


# -- registration ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "module", "needs"), MODULES, ids=[m[0] for m in MODULES])
def test_each_plugin_registers_one_check_with_its_name_needs_and_a_timeout(
    name: str, module: ModuleType, needs: tuple[str, ...]
) -> None:
    checks = module.deploykit_register_checks(env=sample_env())
    assert len(checks) == 1 and isinstance(checks[0], Check)
    assert (checks[0].name, checks[0].needs) == (name, needs)
    assert 20 <= checks[0].timeout <= 45 and checks[0].description


def test_the_five_plugins_load_through_the_plugin_manager_like_external_ones() -> None:
    loaded = get_plugin_manager(entry_points=[], extra=[(name, module) for name, module, _ in MODULES], environ={})
    loaded.manager.check_pending()
    assert not loaded.broken
    names = sorted(c.name for found in loaded.manager.hook.deploykit_register_checks(env=sample_env()) for c in found)
    assert names == sorted(plugins.BUILTIN) == ["alb", "api_gateway", "auth", "connectivity", "kyc"]


def test_all_five_pass_together_and_leave_nothing_behind(world: World, platform: FakePlatform) -> None:
    checks = [c for _, module, _ in MODULES for c in module.deploykit_register_checks(env=sample_env())]
    results = run_checks(checks, context(world, platform))
    assert [(r.name, r.status) for r in results] == [(c.name, "passed") for c in checks], results
    assert world.leftovers() == NOTHING_LEFT


def test_with_the_backend_stopped_alb_and_connectivity_each_fail_with_their_reason(
    world: World, platform: FakePlatform
) -> None:
    platform.backend_stopped()
    checks = [c for _, module, _ in MODULES for c in module.deploykit_register_checks(env=sample_env())]
    results = {r.name: r for r in run_checks(checks, context(world, platform))}
    assert results["alb"].status == "failed"
    assert results["alb"].detail.startswith(
        "no healthy target in car-rental-tg: 1 unhealthy (Target.FailedHealthChecks); "
        f"GET {ALB}/health → 503 (expected 200): <html>"
    )
    assert results["connectivity"].status == "failed"
    assert results["connectivity"].detail.startswith(f"GET {ALB}/health/deep → 503 (expected 200): <html>")
    assert results["kyc"].status == "skipped" and results["kyc"].detail == "needs alb (did not pass)"
    assert results["api_gateway"].status == "passed"
    assert results["auth"].status == "failed" and f"GET {ALB}/me → 503" in results["auth"].detail
    assert world.leftovers() == NOTHING_LEFT


# -- alb -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("alb_url", [ALB, ALB + "/"])
def test_alb_passes_with_healthy_targets_and_joins_urls_either_way(
    world: World, platform: FakePlatform, alb_url: str
) -> None:
    result = run(alb, world, platform, alb_url=alb_url)
    assert result.status == "passed", result.detail
    assert re.fullmatch(r"2 healthy targets in car-rental-tg; GET /health 200 in \d+ ms", result.detail)
    assert platform.urls() == [ALB + "/health"]
    world.clients["elbv2"].describe_target_health.assert_called_once_with(TargetGroupArn=TG_ARN)


def test_alb_passes_with_one_healthy_target_and_names_the_draining_one(world: World, platform: FakePlatform) -> None:
    world.clients["elbv2"].describe_target_health.return_value = target_health(
        ("healthy", None), ("draining", "Target.DeregistrationInProgress")
    )
    result = run(alb, world, platform)
    assert result.status == "passed"
    assert result.detail.startswith("1 healthy target in car-rental-tg (1 draining (Target.DeregistrationInProgress));")


def test_alb_fails_with_no_healthy_target_even_when_health_answers(world: World, platform: FakePlatform) -> None:
    world.clients["elbv2"].describe_target_health.return_value = target_health(
        ("unhealthy", "Target.FailedHealthChecks"), ("initial", "Elb.RegistrationInProgress")
    )
    result = run(alb, world, platform)
    assert result == CheckResult.failed(
        "alb",
        "no healthy target in car-rental-tg: 1 initial (Elb.RegistrationInProgress), "
        "1 unhealthy (Target.FailedHealthChecks)",
    )


def test_alb_fails_with_no_target_registered(world: World, platform: FakePlatform) -> None:
    world.clients["elbv2"].describe_target_health.return_value = target_health()
    assert run(alb, world, platform).detail == "no healthy target in car-rental-tg: no target registered"


def test_alb_fails_when_health_says_fail_or_nothing_answers(world: World, platform: FakePlatform) -> None:
    platform.overrides[("GET", ALB + "/health")] = answer(200, {"status": "fail"})
    result = run(alb, world, platform)
    assert result.status == "failed"
    assert result.detail == f"GET {ALB}/health → 200 but status 'fail' (expected 'ok'): " + '{"status":"fail"}'
    platform.overrides[("GET", ALB + "/health")] = HttpError(f"GET {ALB}/health: no answer (Connection refused)")
    assert run(alb, world, platform).detail == f"GET {ALB}/health: no answer (Connection refused)"


def test_alb_reports_an_unreadable_target_group_and_still_tries_health(world: World, platform: FakePlatform) -> None:
    world.clients["elbv2"].describe_target_health.side_effect = RuntimeError("TargetGroupNotFound")
    result = run(alb, world, platform)
    assert result.detail == "cannot read the target health of car-rental-tg: RuntimeError: TargetGroupNotFound"
    assert platform.urls() == [ALB + "/health"]


def test_alb_is_skipped_when_the_environment_has_no_alb(world: World, platform: FakePlatform) -> None:
    result = run(alb, world, platform, alb_url="")
    assert result == CheckResult.skipped("alb", "the endpoints of 'test' have no alb_url")


# -- api_gateway -----------------------------------------------------------------------------------------


def test_api_gateway_passes_and_sends_a_login_without_password(world: World, platform: FakePlatform) -> None:
    result = run(api_gateway, world, platform)
    assert result.status == "passed", result.detail
    assert re.fullmatch(r"GET health 200 in \d+ ms \(version 3\); malformed login → 400 in \d+ ms", result.detail)
    [login] = [r for r in platform.requests if r["method"] == "POST"]
    assert login["url"] == API + "auth/login" and "password" not in login["json"]


def test_api_gateway_fails_when_a_malformed_login_is_accepted(world: World, platform: FakePlatform) -> None:
    platform.overrides[("POST", API + "auth/login")] = answer(200, {"access_token": "eyJa.eyJb.c", "id_token": "x"})
    result = run(api_gateway, world, platform)
    assert result == CheckResult.failed(
        "api_gateway",
        f"POST {API}auth/login with no password → 200 (expected 400): the login accepted a body without a password",
    )


def test_api_gateway_fails_when_login_is_broken(world: World, platform: FakePlatform) -> None:
    platform.overrides[("POST", API + "auth/login")] = answer(500, {"code": "internal_error", "message": "down"})
    result = run(api_gateway, world, platform)
    assert result.detail == (
        f'POST {API}auth/login with no password → 500 (expected 400): {{"code":"internal_error","message":"down"}}'
    )


def test_api_gateway_fails_when_the_stage_health_fails(world: World, platform: FakePlatform) -> None:
    platform.overrides[("GET", API + "health")] = answer(502, {"message": "Internal server error"})
    result = run(api_gateway, world, platform)
    assert result.detail == f'GET {API}health → 502 (expected 200): {{"message":"Internal server error"}}'
    assert platform.urls() == [API + "health"]


# -- auth ------------------------------------------------------------------------------------------------


def test_auth_passes_and_deletes_its_user(world: World, platform: FakePlatform) -> None:
    result = run(auth, world, platform)
    assert result.status == "passed", result.detail
    assert re.fullmatch(
        r"login 200 in \d+ ms; GET /me 200 in \d+ ms names the throwaway user; tampered token → 401", result.detail
    )
    [login] = [r for r in platform.requests if r["url"] == API + "auth/login"]
    assert re.fullmatch(r"deploykit-smoke-[0-9a-f]{16}@example\.com", login["json"]["username"])
    password = login["json"]["password"]
    assert len(password) >= 12 and all(
        any(c in chars for c in password) for chars in ("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")
    )
    [token] = platform.issued
    good, bad = (r["headers"]["Authorization"] for r in platform.requests if r["url"] == ALB + "/me")
    assert good == f"Bearer {token}"
    tampered = bad.removeprefix("Bearer ")
    assert tampered != token and tampered.rsplit(".", 1)[0] == token.rsplit(".", 1)[0]
    assert password not in result.detail and token not in result.detail
    assert world.leftovers() == NOTHING_LEFT


def test_auth_deletes_its_user_when_me_answers_500(world: World, platform: FakePlatform) -> None:
    platform.overrides[("GET", ALB + "/me")] = answer(500, {"error": {"code": "internal_error", "message": "boom"}})
    result = run(auth, world, platform)
    assert result == CheckResult.failed(
        "auth", f'GET {ALB}/me → 500 (expected 200): {{"error":{{"code":"internal_error","message":"boom"}}}}'
    )
    assert world.leftovers() == NOTHING_LEFT


def test_auth_fails_when_a_tampered_token_is_accepted(world: World, platform: FakePlatform) -> None:
    platform.accept_any_token = True
    result = run(auth, world, platform)
    assert result == CheckResult.failed(
        "auth",
        f"GET {ALB}/me with a tampered token → 200 (expected 401): "
        "the backend accepted a token whose signature was altered",
    )
    assert world.leftovers() == NOTHING_LEFT


def test_auth_fails_when_me_names_someone_else(world: World, platform: FakePlatform) -> None:
    platform.overrides[("GET", ALB + "/me")] = answer(200, {"sub": "someone-else", "username": "someone-else"})
    result = run(auth, world, platform)
    assert result.status == "failed"
    assert re.fullmatch(
        rf"GET {ALB}/me → 200 but names sub 'someone-else' \(expected the throwaway user's sub '[0-9a-f-]{{36}}'\)",
        result.detail,
    )


def test_auth_login_failure_quotes_the_answer_without_secrets(world: World, platform: FakePlatform) -> None:
    platform.overrides[("POST", API + "auth/login")] = answer(
        409, {"code": "challenge_required", "challenge": "NEW_PASSWORD_REQUIRED", "session": "SESSION-SECRET"}
    )
    result = run(auth, world, platform)
    assert result.status == "failed"
    assert re.fullmatch(
        rf"POST {API}auth/login \(login as deploykit-smoke-[0-9a-f]{{16}}@example\.com\) → 409 \(expected 200\): "
        r'\{"code":"challenge_required","challenge":"NEW_PASSWORD_REQUIRED","session":"<redacted>"\}',
        result.detail,
    )
    assert world.leftovers() == NOTHING_LEFT


def test_a_failed_cleanup_turns_a_pass_into_a_failure_that_names_what_was_left(
    world: World, platform: FakePlatform
) -> None:
    idp = Mock(wraps=world.idp)
    idp.admin_delete_user.side_effect = RuntimeError("AccessDenied")
    world.clients["cognito-idp"] = idp
    result = run(auth, world, platform)
    assert result.status == "failed"
    assert re.fullmatch(
        r"login 200 .*tampered token → 401; cleanup failed: could not delete the throwaway user "
        r"deploykit-smoke-[0-9a-f]{16}@example\.com from \S+ \(RuntimeError: AccessDenied\)",
        result.detail,
    )


def test_auth_fails_clearly_when_the_user_cannot_be_created(world: World, platform: FakePlatform) -> None:
    result = run(auth, world, platform, user_pool_id="us-east-1_NoSuchPool")
    assert result.status == "failed"
    assert result.detail.startswith("cannot create a throwaway user in the user pool us-east-1_NoSuchPool: ")
    assert "ResourceNotFoundException" in result.detail
    assert platform.requests == []


# -- kyc -------------------------------------------------------------------------------------------------


def test_kyc_passes_end_to_end_and_removes_case_document_and_user(world: World, platform: FakePlatform) -> None:
    result = run(kyc, world, platform, alb_url=ALB + "/")
    assert result.status == "passed", result.detail
    assert re.fullmatch(
        r"case [0-9a-f]{8} SUBMITTED: start 201 in \d+ ms, upload in \d+ ms, submit in \d+ ms, status in \d+ ms",
        result.detail,
    )
    [upload] = [r for r in platform.requests if r["method"] == "PUT"]
    assert upload["data"].startswith(b"%PDF-") and upload["headers"] == {"Content-Type": "application/pdf"}
    case_id = upload["url"].split("?")[0].rsplit("/", 1)[1]
    assert platform.urls("POST")[1:] == [ALB + "/kyc", f"{ALB}/kyc/{case_id}/submit"]
    assert platform.urls("GET") == [f"{ALB}/kyc/{case_id}"]
    assert world.leftovers() == NOTHING_LEFT


def test_kyc_deletes_its_user_document_and_case_at_once(world: World, platform: FakePlatform) -> None:
    """The three deletions depend on none of the others: all three are in flight together (one round trip), and
    each waits at a barrier the others must reach, which calls made one after the other would break."""
    barrier = threading.Barrier(3, timeout=5)
    calls = [("s3", "DeleteObject"), ("dynamodb", "DeleteItem"), ("cognito-idp", "AdminDeleteUser")]

    def hold(**_: Any) -> None:  # None: botocore goes on with the call
        barrier.wait()

    for service, operation in calls:
        client = world.clients[service]
        client.meta.events.register(f"before-call.{client.meta.service_model.service_id.hyphenize()}.{operation}", hold)
    result = run(kyc, world, platform)
    assert result.status == "passed", result.detail
    assert world.leftovers() == NOTHING_LEFT


def test_kyc_cleans_up_document_and_case_when_submit_fails(world: World, platform: FakePlatform) -> None:
    platform.overrides[("POST", ALB + "/kyc/*")] = answer(500, {"error": {"code": "internal_error", "message": "x"}})
    result = run(kyc, world, platform)
    assert result.status == "failed"
    assert re.fullmatch(
        rf"POST {ALB}/kyc/[0-9a-f]{{32}}/submit → 500 \(expected 200\): .*internal_error.*", result.detail
    )
    [upload] = [r for r in platform.requests if r["method"] == "PUT"]
    assert upload["data"].startswith(b"%PDF-")  # the document had been uploaded: it must be gone now
    assert world.leftovers() == NOTHING_LEFT


def test_kyc_fails_when_the_document_is_rejected(world: World, platform: FakePlatform, monkeypatch: Any) -> None:
    monkeypatch.setattr(kyc, "DOCUMENT", b"not a pdf")
    result = run(kyc, world, platform)
    assert re.fullmatch(
        rf"POST {ALB}/kyc/[0-9a-f]{{32}}/submit → 200 but the case is 'REJECTED' \(expected 'SUBMITTED'\): "
        "the document content is not application/pdf",
        result.detail,
    )
    assert world.leftovers() == NOTHING_LEFT


def test_kyc_upload_failure_names_the_url_without_its_signature(world: World, platform: FakePlatform) -> None:
    platform.overrides[("PUT", S3 + "/*")] = answer(403, raw=b"<Error><Code>AccessDenied</Code></Error>")
    result = run(kyc, world, platform)
    assert re.fullmatch(
        rf"PUT {S3}/kyc-docs/kyc/[0-9a-f-]{{36}}/[0-9a-f]{{32}}\?… → 403 \(expected 200 or 204\): "
        r"<Error><Code>AccessDenied</Code></Error>",
        result.detail,
    )
    assert "s3cr3t" not in result.detail
    platform.overrides[("PUT", S3 + "/*")] = HttpError(f"PUT {S3}/kyc-docs/k?{SIGNATURE}: no answer (timed out)")
    assert "s3cr3t" not in run(kyc, world, platform).detail
    assert world.leftovers() == NOTHING_LEFT


def test_kyc_sweeps_a_case_whose_start_answer_was_lost(world: World, platform: FakePlatform) -> None:
    platform.after[("POST", ALB + "/kyc")] = answer(502, raw=b"Bad Gateway")
    result = run(kyc, world, platform)
    assert result == CheckResult.failed("kyc", f"POST {ALB}/kyc → 502 (expected 201): Bad Gateway")
    assert world.leftovers() == NOTHING_LEFT


def test_kyc_sweeps_nothing_of_another_user_whose_token_the_login_answered(
    world: World, platform: FakePlatform
) -> None:
    """A bad deploy's login answers a real customer's token whoever logs in: the check fails saying so, before it
    starts a case, and its clean-up (which sweeps the throwaway user's documents and cases when a start's answer was
    lost) leaves that customer's document and case as they were."""
    idp, s3, dynamodb = world.idp, world.clients["s3"], world.clients["dynamodb"]
    pool, bucket, table = world.endpoints.user_pool_id, world.endpoints.buckets["kyc"], world.endpoints.tables["kyc"]
    email, password = "real.customer@example.com", "Real-Customer-Pw1!"
    idp.admin_create_user(UserPoolId=pool, Username=email, MessageAction="SUPPRESS")
    idp.admin_set_user_password(UserPoolId=pool, Username=email, Password=password, Permanent=True)
    tokens = idp.initiate_auth(
        ClientId=world.endpoints.user_pool_client_id,
        AuthFlow="USER_PASSWORD_AUTH",
        AuthParameters={"USERNAME": email, "PASSWORD": password},
    )["AuthenticationResult"]
    real = _support.jwt_claims(tokens["AccessToken"])["sub"]
    s3.put_object(Bucket=bucket, Key=f"kyc/{real}/case-1", Body=b"%PDF- a real passport")
    dynamodb.put_item(TableName=table, Item=kyc.case_key(real, "case-1"))
    platform.issued.add(tokens["AccessToken"])
    platform.overrides[("POST", API + "auth/login")] = answer(
        200, {"access_token": tokens["AccessToken"], "id_token": tokens["IdToken"]}
    )
    platform.overrides[("POST", ALB + "/kyc")] = answer(500, {"error": {"code": "internal", "message": "boom"}})
    result = run(kyc, world, platform)
    assert result.status == "failed"
    assert re.fullmatch(
        rf"the login answered an access token of another user \(sub '{real}', not the throwaway user's "
        r"'[0-9a-f-]{36}'\); KYC not started, nothing of that user's touched",
        result.detail,
    ), result.detail
    assert platform.urls("POST")[1:] == []  # no case started
    left = world.leftovers()
    assert left["objects"] == [f"kyc/{real}/case-1"] and len(left["cases"]) == 1


def test_kyc_fails_when_the_status_is_not_submitted(world: World, platform: FakePlatform) -> None:
    platform.overrides[("GET", ALB + "/kyc/*")] = answer(200, {"status": "PENDING_UPLOAD"})
    result = run(kyc, world, platform)
    assert re.fullmatch(
        rf"GET {ALB}/kyc/[0-9a-f]{{32}} → 200 but the case is 'PENDING_UPLOAD' \(expected 'SUBMITTED'\): .*",
        result.detail,
    )
    assert world.leftovers() == NOTHING_LEFT


# -- connectivity ----------------------------------------------------------------------------------------


def test_connectivity_passes_and_lists_each_dependency(world: World, platform: FakePlatform) -> None:
    result = run(connectivity, world, platform, alb_url=ALB + "/")
    assert result == CheckResult.passed(
        "connectivity",
        "s3:kyc 10 ms, dynamodb:cars 11 ms, dynamodb:bookings 12 ms, dynamodb:kyc 13 ms, cognito:user_pool 14 ms "
        "(all the stacks' own)",
    )
    assert platform.urls() == [ALB + "/health/deep"]


def test_connectivity_names_each_failing_dependency(world: World, platform: FakePlatform) -> None:
    platform.deep["dynamodb:kyc"] |= {"status": "fail", "error": "ResourceNotFoundException: Requested resource"}
    platform.deep["cognito:user_pool"] |= {"status": "fail", "error": "AccessDeniedException: not allowed"}
    result = run(connectivity, world, platform)
    assert result == CheckResult.failed(
        "connectivity",
        f"GET {ALB}/health/deep → 503: dynamodb:kyc fail (ResourceNotFoundException: Requested resource), "
        "cognito:user_pool fail (AccessDeniedException: not allowed)",
    )


def test_connectivity_fails_when_the_service_uses_another_table(world: World, platform: FakePlatform) -> None:
    platform.deep["dynamodb:kyc"]["target"] = "old-kyc-cases"
    result = run(connectivity, world, platform)
    assert result == CheckResult.failed(
        "connectivity", "the service uses table 'old-kyc-cases' for dynamodb:kyc, the stack outputs 'kyc-cases'"
    )


def test_connectivity_fails_on_no_answer_and_on_a_missing_check(world: World, platform: FakePlatform) -> None:
    del platform.deep["s3:kyc"]
    assert run(connectivity, world, platform).detail == f"GET {ALB}/health/deep → 200: s3:kyc missing from the answer"
    platform.overrides[("GET", ALB + "/health/deep")] = HttpError(f"GET {ALB}/health/deep: no answer (reset)")
    assert run(connectivity, world, platform).detail == f"GET {ALB}/health/deep: no answer (reset)"


# -- helpers ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("base", ["http://h", "http://h/", "http://h/stage/", "http://h/stage"])
def test_join_url_puts_exactly_one_slash(base: str) -> None:
    assert _support.join_url(base, "/health/deep") == base.rstrip("/") + "/health/deep"
    assert _support.join_url(base, "me") == base.rstrip("/") + "/me"


@pytest.mark.parametrize("raw", [bytes(range(256)), bytes(256)], ids=["varied", "zeros"])
def test_tamper_changes_the_signature_bytes_only(raw: bytes) -> None:
    # an RS256 signature is 256 bytes: 342 base64url characters, the last one with 4 padding bits, so a
    # tamper that changes only the last character may change nothing (with zeros: ...A → ...B)
    signature = base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
    token = f"eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.{signature}"
    changed = _support.tamper(token)
    assert changed.rsplit(".", 1)[0] == token.rsplit(".", 1)[0]
    decoded = base64.urlsafe_b64decode(changed.rsplit(".", 1)[1] + "==")
    assert len(decoded) == 256 and decoded != raw
    assert _support.tamper("A" * 10 + ".b.AAAAAAAAAA") != "A" * 10 + ".b.AAAAAAAAAA"


def test_body_start_redacts_tokens_and_shortens() -> None:
    body = {"access_token": "eyJa.eyJb.sig", "nested": {"password": "p"}, "note": "token eyJx.eyJy.zz inside"}
    text = _support.body_start(answer(200, body))
    assert "eyJ" not in text and '"p"' not in text and "<redacted>" in text and "<jwt>" in text
    assert _support.body_start(answer(500, raw=b"x" * 500)).endswith("…")
    assert _support.body_start(HttpResponse(502)) == "(empty body)"


def test_passwords_meet_a_strict_policy() -> None:
    for _ in range(50):
        password = _support.new_password()
        assert len(password) == 24
        assert any(c.isupper() for c in password) and any(c.islower() for c in password)
        assert any(c.isdigit() for c in password) and any(c in _support.PASSWORD_SYMBOLS for c in password)


def test_steps_added_together_are_undone_at_once_and_the_others_alone_in_reverse_order() -> None:
    """Steps added together next to one another run at the same time (each waits until the other has started);
    a step added alone runs by itself, after what was added after it and before what was added before it; every
    problem is reported, in the order the steps were undone."""
    cleanup = _support.Cleanup()
    done: list[str] = []
    both = threading.Barrier(2, timeout=5)

    def held(name: str) -> None:
        both.wait()
        done.append(name)

    def fails() -> None:
        both.wait()
        raise RuntimeError("gone")

    cleanup.add("delete the user", lambda: done.append("user"))
    cleanup.add("delete the document", lambda: held("document"), together=True)
    cleanup.add("delete the case", fails, together=True)
    cleanup.add("close the session", lambda: done.append("session"))
    assert cleanup.run() == ["could not delete the case (RuntimeError: gone)"]
    assert done == ["session", "document", "user"]
    assert cleanup.run() == []  # each step runs once


def test_a_raising_body_still_cleans_up(world: World, platform: FakePlatform) -> None:
    done: list[str] = []

    def body(ctx: CheckContext, cleanup: _support.Cleanup) -> str:
        cleanup.add("undo one", lambda: done.append("one"))
        cleanup.add("undo two", lambda: done.append("two"))
        raise KeyError("boom")

    result = _support.run_check_body("x", context(world, platform), body)
    assert result == CheckResult.failed("x", "KeyError: 'boom'")
    assert done == ["two", "one"]
