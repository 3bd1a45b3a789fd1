"""The sandbox's API Gateway and Lambda: stages that answer HTTP and run the uploaded code.

The sandbox's WSGI app (moto, extended) is served on a free 127.0.0.1 port in a thread, with the
ApiGatewayLambda extension installed and its stage server on another free port. Everything is created
through the AWS APIs on that endpoint, as deploykit would: the login function from its real zip, a Cognito
pool, client and user, REST APIs with AWS_PROXY and MOCK integrations, deployments and stages. No Docker.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import io
import json
import logging
import os
import subprocess
import sys
import textwrap
import threading
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import boto3
import pytest
from moto.core.base_backend import BackendDict
from moto.moto_server.werkzeug_app import MotoRequestHandler
from werkzeug.serving import make_server

from deploykit.packaging import package_function
from sandbox import lifecycle
from sandbox.ext.apigw_lambda import ApiGatewayLambda, invoke_url
from sandbox.lambda_runner import FunctionCode, LambdaRuntime
from sandbox.server import Sandbox
from sandbox.settings import Settings
from tests.conftest import REPO
from tests.integration.conftest import free_port

pytestmark = pytest.mark.integration

REGION = "us-east-1"
PASSWORD = "Correct-Horse-9!"

VERSIONED = """
import json, os

TAG = {tag!r}

def handler(event, context):
    body = {{
        "tag": TAG,
        "function_version": os.environ["AWS_LAMBDA_FUNCTION_VERSION"],
        "context_version": context.function_version,
        "function_name": context.function_name,
        "invoked_function_arn": context.invoked_function_arn,
        "memory_limit_in_mb": context.memory_limit_in_mb,
        "remaining_ms": context.get_remaining_time_in_millis(),
        "request_id": context.aws_request_id,
        "region": os.environ.get("AWS_REGION"),
        "default_region": os.environ.get("AWS_DEFAULT_REGION"),
        "endpoint": os.environ.get("AWS_ENDPOINT_URL"),
        "greeting": os.environ.get("GREETING"),
        "has_key": bool(os.environ.get("AWS_ACCESS_KEY_ID")),
    }}
    print("versioned function says hello")
    return {{"statusCode": 200, "headers": {{"content-type": "application/json"}}, "body": json.dumps(body)}}
"""

ECHO = """
import json

def handler(event, context):
    return {
        "statusCode": 201,
        "headers": {"content-type": "application/json", "x-single": "one"},
        "multiValueHeaders": {"x-multi": ["a", "b"]},
        "body": json.dumps(event),
    }
"""

SLEEPER = """
import time

def handler(event, context):
    print("going to sleep")
    time.sleep(30)
    return {"statusCode": 200, "body": "woke up"}
"""

RAISER = """
def handler(event, context):
    raise ValueError("boom")
"""

MALFORMED = """
def handler(event, context):
    return {"statusCode": 200, "body": {"not": "a string"}}
"""

BINARY = """
import base64

def handler(event, context):
    return {"statusCode": 200, "headers": {"content-type": "image/png"}, "isBase64Encoded": True,
            "body": base64.b64encode(bytes(range(256))).decode()}
"""


def zip_of(source: str) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("handler.py", textwrap.dedent(source))
    return buffer.getvalue()


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def request(method: str, url: str, body: bytes | str | None = None, headers: dict[str, str] | None = None) -> Answer:
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=30)
    try:
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        conn.request(method, target, body=body, headers=headers or {})
        response = conn.getresponse()
        return Answer(response.status, {k.lower(): v for k, v in response.getheaders()}, response.read())
    finally:
        conn.close()


@dataclass
class Harness:
    settings: Settings
    extension: ApiGatewayLambda
    role_arn: str

    def client(self, service: str) -> Any:
        factory: Any = boto3.client  # the service is a plain str here, not one of the stubs' literals
        return factory(
            service,
            region_name=REGION,
            endpoint_url=self.settings.endpoint_url,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )

    def function(
        self, name: str, source: str, *, timeout: int = 3, env: dict[str, str] | None = None, alias: bool = True
    ) -> str:
        """Create a function (published as version 1, with alias "live" when asked); its ARN, qualified if so."""
        lam = self.client("lambda")
        created = lam.create_function(
            FunctionName=name,
            Runtime="python3.11",
            Handler="handler.handler",
            Role=self.role_arn,
            Code={"ZipFile": zip_of(source)},
            Timeout=timeout,
            Environment={"Variables": env or {}},
        )
        if not alias:
            return str(created["FunctionArn"])
        version = lam.publish_version(FunctionName=name)["Version"]
        return str(lam.create_alias(FunctionName=name, Name="live", FunctionVersion=version)["AliasArn"])

    def api(self, routes: dict[tuple[str, str], str], *, stage: str = "v1", binary: list[str] | None = None) -> str:
        """A REST API: (method, path) → function ARN (AWS_PROXY) or "MOCK"; deployed to ``stage``."""
        apigw = self.client("apigateway")
        api_id = apigw.create_rest_api(name=f"api-{len(routes)}-{time.monotonic_ns()}", binaryMediaTypes=binary or [])[
            "id"
        ]
        ids = {"/": next(r["id"] for r in apigw.get_resources(restApiId=api_id)["items"] if r["path"] == "/")}
        for _method, path in routes:
            parent = "/"
            for part in [p for p in path.split("/") if p]:
                here = parent.rstrip("/") + "/" + part
                if here not in ids:
                    ids[here] = apigw.create_resource(restApiId=api_id, parentId=ids[parent], pathPart=part)["id"]
                parent = here
        for (method, path), target in routes.items():
            resource = ids[path]
            apigw.put_method(restApiId=api_id, resourceId=resource, httpMethod=method, authorizationType="NONE")
            if target == "MOCK":
                apigw.put_integration(
                    restApiId=api_id,
                    resourceId=resource,
                    httpMethod=method,
                    type="MOCK",
                    requestTemplates={"application/json": '{"statusCode": 200}'},
                )
                apigw.put_integration_response(
                    restApiId=api_id,
                    resourceId=resource,
                    httpMethod=method,
                    statusCode="200",
                    responseTemplates={"application/json": '{"status": "ok"}'},
                    responseParameters={"method.response.header.X-Mock": "'yes'"},
                )
            else:
                apigw.put_integration(
                    restApiId=api_id,
                    resourceId=resource,
                    httpMethod=method,
                    type="AWS_PROXY",
                    integrationHttpMethod="POST",
                    uri=f"arn:aws:apigateway:{REGION}:lambda:path/2015-03-31/functions/{target}/invocations",
                )
        apigw.create_deployment(restApiId=api_id, stageName=stage)
        return str(api_id)

    def url(self, api_id: str, path: str, stage: str = "v1") -> str:
        return invoke_url(self.settings, api_id, stage) + path


@pytest.fixture(scope="module")
def harness(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Harness]:
    BackendDict.reset()  # a clean moto: earlier tests in this process may have left state behind
    settings = Settings(
        root=tmp_path_factory.mktemp("sandbox"), region=REGION, aws_port=free_port(), api_port=free_port()
    )
    extension = ApiGatewayLambda(settings)
    sandbox = Sandbox(settings, None, [extension])  # no Docker: this extension needs none
    extension.install(sandbox)
    server = make_server(
        "127.0.0.1", settings.aws_port, sandbox.wsgi(), threaded=True, request_handler=MotoRequestHandler
    )
    thread = threading.Thread(target=server.serve_forever, name="moto-test", daemon=True)
    thread.start()
    extension.start()
    iam = boto3.client(
        "iam",
        region_name=REGION,
        endpoint_url=settings.endpoint_url,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    trust = {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"}, "Action": "sts:AssumeRole"}
        ],
    }
    role_arn = iam.create_role(RoleName="sandbox-lambda", AssumeRolePolicyDocument=json.dumps(trust))["Role"]["Arn"]
    try:
        yield Harness(settings, extension, role_arn)
    finally:
        extension.stop()
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
        BackendDict.reset()  # drop the patched backends: later tests get a plain moto
        assert extension.runtime.worker_count() == 0


@dataclass
class Login:
    api_id: str
    pool_id: str
    url: str
    client_id: str = ""


@pytest.fixture(scope="module")
def login(harness: Harness) -> Login:
    """The real login_handler zip behind POST /auth/login (alias "live"), a Cognito pool, client and user."""
    idp = harness.client("cognito-idp")
    pool_id = idp.create_user_pool(PoolName="sandbox-users")["UserPool"]["Id"]
    client_id = idp.create_user_pool_client(
        UserPoolId=pool_id,
        ClientName="web",
        GenerateSecret=False,
        ExplicitAuthFlows=["ALLOW_USER_PASSWORD_AUTH", "ALLOW_REFRESH_TOKEN_AUTH"],
    )["UserPoolClient"]["ClientId"]
    idp.admin_create_user(UserPoolId=pool_id, Username="alice", MessageAction="SUPPRESS")
    idp.admin_set_user_password(UserPoolId=pool_id, Username="alice", Password=PASSWORD, Permanent=True)

    package = package_function(REPO / "lambda" / "login_handler")
    lam = harness.client("lambda")
    lam.create_function(
        FunctionName="login_handler",
        Runtime="python3.11",
        Handler="handler.handler",
        Role=harness.role_arn,
        Code={"ZipFile": package.zip_bytes},
        Timeout=10,
        Environment={"Variables": {"USER_POOL_CLIENT_ID": client_id}},
    )
    version = lam.publish_version(FunctionName="login_handler")["Version"]
    alias_arn = lam.create_alias(FunctionName="login_handler", Name="live", FunctionVersion=version)["AliasArn"]
    api_id = harness.api({("POST", "/auth/login"): alias_arn, ("GET", "/health"): "MOCK"})
    return Login(api_id, pool_id, harness.url(api_id, "/auth/login"), client_id)


def jwt_claims(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    return dict(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))))


# -- login through the stage ----------------------------------------------------------------------------------


def test_login_with_good_credentials_returns_cognito_tokens(login: Login, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    body = json.dumps({"username": "alice", "password": PASSWORD})
    answer = request("POST", login.url, body, {"Content-Type": "application/json"})
    assert answer.status == 200, answer.body
    tokens = answer.json()
    assert set(tokens) >= {"access_token", "id_token", "refresh_token", "expires_in", "token_type"}
    # The tokens come from the sandbox's Cognito, which the function reached through AWS_ENDPOINT_URL.
    assert jwt_claims(tokens["id_token"])["iss"].endswith(f"/{login.pool_id}")
    assert answer.headers["content-type"] == "application/json"
    assert answer.headers["cache-control"] == "no-store"
    assert answer.headers["x-amzn-requestid"]
    # The function's log lines reach the sandbox log; the event (with the password) never does.
    assert "login succeeded" in caplog.text
    assert "START RequestId" in caplog.text
    assert PASSWORD not in caplog.text


def test_tokens_from_the_stage_are_accepted_by_the_backend(harness: Harness, login: Login) -> None:
    """The backend verifies the sandbox's tokens for real: signature against the sandbox's JWKS, issuer, client."""
    body = json.dumps({"username": "alice", "password": PASSWORD})
    tokens = request("POST", login.url, body, {"Content-Type": "application/json"}).json()
    port = free_port()
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "AWS_REGION": REGION,
        "AWS_ENDPOINT_URL": harness.settings.endpoint_url,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "COGNITO_USER_POOL_ID": login.pool_id,
        "COGNITO_CLIENT_ID": login.client_id,
        # the issuer stays Cognito's own (the backend's default); only the keys come from the sandbox
        "COGNITO_JWKS_URL": f"{harness.settings.endpoint_url}/{login.pool_id}/.well-known/jwks.json",
    }
    backend = subprocess.Popen(
        [sys.executable, "-m", "app.server"],
        cwd=REPO / "backend",
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if request("GET", f"http://127.0.0.1:{port}/health").status == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, "the backend did not start"
            time.sleep(0.2)
        me = request(
            "GET", f"http://127.0.0.1:{port}/me", headers={"Authorization": f"Bearer {tokens['access_token']}"}
        )
        assert me.status == 200, me.body
        assert me.json()["username"] == "alice"
        tampered = tokens["access_token"][:-4] + ("AAAA" if not tokens["access_token"].endswith("AAAA") else "BBBB")
        refused = request("GET", f"http://127.0.0.1:{port}/me", headers={"Authorization": f"Bearer {tampered}"})
        assert refused.status == 401
    finally:
        backend.terminate()
        backend.wait(timeout=10)


def test_login_with_a_malformed_body_is_400(login: Login) -> None:
    answer = request("POST", login.url, "{not json", {"Content-Type": "application/json"})
    assert answer.status == 400
    assert answer.json()["code"] == "bad_request"


def test_login_with_a_bad_password_is_401(login: Login) -> None:
    body = json.dumps({"username": "alice", "password": "wrong-password-1A!"})
    answer = request("POST", login.url, body, {"Content-Type": "application/json"})
    assert answer.status == 401
    assert answer.json() == {"code": "invalid_credentials", "message": "incorrect username or password"}


def test_invoke_api_runs_a_function_that_calls_back_into_the_sandbox(harness: Harness, login: Login) -> None:
    # moto's Invoke holds the sandbox lock; it must be let go while the function calls Cognito through it.
    event = {"httpMethod": "POST", "body": json.dumps({"username": "alice", "password": PASSWORD})}
    lam = harness.client("lambda")
    answer = lam.invoke(FunctionName="login_handler", Qualifier="live", Payload=json.dumps(event).encode())
    assert "FunctionError" not in answer
    result = json.loads(answer["Payload"].read())
    assert result["statusCode"] == 200
    assert "access_token" in json.loads(result["body"])


def test_host_header_style_reaches_the_same_stage(harness: Harness, login: Login) -> None:
    url = f"http://127.0.0.1:{harness.settings.api_port}/v1/auth/login"
    host = f"{login.api_id}.execute-api.localhost:{harness.settings.api_port}"
    answer = request("POST", url, "[]", {"Host": host, "Content-Type": "application/json"})
    assert answer.status == 400  # the function ran: a JSON array is not a login
    assert answer.json()["code"] == "bad_request"


def test_mock_integration_answers_its_integration_response(login: Login, harness: Harness) -> None:
    answer = request("GET", harness.url(login.api_id, "/health"))
    assert answer.status == 200
    assert answer.json() == {"status": "ok"}
    assert answer.headers["x-mock"] == "yes"


def test_unknown_routes_and_stages_are_403(login: Login, harness: Harness) -> None:
    missing = request("GET", harness.url(login.api_id, "/nowhere"))
    assert missing.status == 403
    assert missing.json() == {"message": "Missing Authentication Token"}
    wrong_method = request("GET", login.url)
    assert wrong_method.status == 403
    assert wrong_method.json() == {"message": "Missing Authentication Token"}
    no_stage = request("POST", harness.url(login.api_id, "/auth/login", stage="v9"), "{}")
    assert no_stage.status == 403
    assert no_stage.json() == {"message": "Forbidden"}


# -- versions, aliases, code updates --------------------------------------------------------------------------


def test_code_update_publish_and_alias_move_take_effect_on_the_next_request(harness: Harness) -> None:
    alias_arn = harness.function("versioned", VERSIONED.format(tag="one"), env={"GREETING": "hi"})
    api_id = harness.api({("GET", "/version"): alias_arn})
    first = request("GET", harness.url(api_id, "/version"))
    assert first.status == 200, first.body
    seen = first.json()
    assert seen["tag"] == "one"
    assert seen["function_version"] == seen["context_version"] == "1"
    assert seen["function_name"] == "versioned"
    assert seen["invoked_function_arn"] == alias_arn
    assert seen["memory_limit_in_mb"] == "128"
    assert 0 < seen["remaining_ms"] <= 3000
    assert seen["region"] == seen["default_region"] == REGION
    assert seen["endpoint"] == harness.settings.endpoint_url
    assert seen["greeting"] == "hi"
    assert seen["has_key"] is True

    lam = harness.client("lambda")
    lam.update_function_code(FunctionName="versioned", ZipFile=zip_of(VERSIONED.format(tag="two")))
    assert request("GET", harness.url(api_id, "/version")).json()["tag"] == "one"  # the alias still says 1
    version = lam.publish_version(FunctionName="versioned")["Version"]
    assert version == "2"
    lam.update_alias(FunctionName="versioned", Name="live", FunctionVersion=version)
    second = request("GET", harness.url(api_id, "/version")).json()
    assert (second["tag"], second["function_version"]) == ("two", "2")

    # Invoke resolves qualifiers the same way: a version, an alias, $LATEST.
    for qualifier, tag in (("1", "one"), ("live", "two"), ("$LATEST", "two")):
        answer = lam.invoke(FunctionName="versioned", Qualifier=qualifier, Payload=b"{}")
        assert "FunctionError" not in answer
        assert json.loads(json.loads(answer["Payload"].read())["body"])["tag"] == tag
        assert answer["ExecutedVersion"] == {"1": "1", "live": "2", "$LATEST": "$LATEST"}[qualifier]


CONSUMER = """
def handler(event, context):
    for record in event["Records"]:
        print("took", record["body"], "with {tag}")
    return {{"taken": len(event["Records"])}}
"""


def test_a_queue_mapped_to_an_alias_invokes_the_version_the_alias_serves_then(harness: Harness) -> None:
    """As on AWS: a mapping made on the alias follows it (a queue's consumer runs what the fast path moved `live`
    to), and says the alias's ARN; one deleted invokes nothing more."""
    alias_arn = harness.function("consumer", CONSUMER.format(tag="one"))
    sqs, lam, logs = harness.client("sqs"), harness.client("lambda"), harness.client("logs")
    url = sqs.create_queue(QueueName="bookings")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    mapping = lam.create_event_source_mapping(EventSourceArn=queue_arn, FunctionName=alias_arn, BatchSize=1)
    assert mapping["FunctionArn"] == alias_arn
    assert [m["FunctionArn"] for m in lam.list_event_source_mappings()["EventSourceMappings"]] == [alias_arn]

    def took() -> list[str]:
        events = logs.filter_log_events(logGroupName="/aws/lambda/consumer")["events"]
        return [e["message"].strip() for e in events if e["message"].startswith("took")]

    sqs.send_message(QueueUrl=url, MessageBody="booking 1")
    assert took() == ["took booking 1 with one"]
    lam.update_function_code(FunctionName="consumer", ZipFile=zip_of(CONSUMER.format(tag="two")))
    lam.update_alias(
        FunctionName="consumer", Name="live", FunctionVersion=lam.publish_version(FunctionName="consumer")["Version"]
    )
    sqs.send_message(QueueUrl=url, MessageBody="booking 2")
    assert took() == ["took booking 1 with one", "took booking 2 with two"]  # moto ran version 1 again
    lam.delete_event_source_mapping(UUID=mapping["UUID"])
    sqs.send_message(QueueUrl=url, MessageBody="booking 3")
    assert took() == ["took booking 1 with one", "took booking 2 with two"]  # moto invoked it still
    assert sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"])["Attributes"] == {
        "ApproximateNumberOfMessages": "1"
    }


def test_version_numbers_are_never_reused_and_a_routed_version_cannot_be_deleted(harness: Harness) -> None:
    """As on AWS: after versions are deleted the next one takes a new number; a version an alias serves or routes
    a share to is refused (ResourceConflictException) and stays."""
    harness.function("numbered", VERSIONED.format(tag="v1"))  # version 1 behind `live`
    lam = harness.client("lambda")
    for tag in ("v2", "v3", "v4"):
        lam.update_function_code(FunctionName="numbered", ZipFile=zip_of(VERSIONED.format(tag=tag)))
        lam.publish_version(FunctionName="numbered")
    shares = {"AdditionalVersionWeights": {"2": 0.1}}
    lam.update_alias(FunctionName="numbered", Name="live", FunctionVersion="1", RoutingConfig=shares)
    for routed in ("1", "2"):
        with pytest.raises(lam.exceptions.ResourceConflictException, match="aliases reference it"):
            lam.delete_function(FunctionName="numbered", Qualifier=routed)
    lam.delete_function(FunctionName="numbered", Qualifier="4")
    lam.delete_function(FunctionName="numbered", Qualifier="3")
    lam.update_function_code(FunctionName="numbered", ZipFile=zip_of(VERSIONED.format(tag="v5")))
    assert lam.publish_version(FunctionName="numbered")["Version"] == "5"  # not 3: numbers 3 and 4 were used
    listed = lam.list_versions_by_function(FunctionName="numbered")["Versions"]
    assert [v["Version"] for v in listed] == ["$LATEST", "1", "2", "5"]
    answer = lam.invoke(FunctionName="numbered", Qualifier="5", Payload=b"{}")
    assert json.loads(json.loads(answer["Payload"].read())["body"])["tag"] == "v5"


def test_code_from_s3_runs_and_updates(harness: Harness) -> None:
    s3 = harness.client("s3")
    s3.create_bucket(Bucket="artifacts")
    s3.put_object(Bucket="artifacts", Key="lambda/s3fn/one.zip", Body=zip_of(VERSIONED.format(tag="s3-one")))
    s3.put_object(Bucket="artifacts", Key="lambda/s3fn/two.zip", Body=zip_of(VERSIONED.format(tag="s3-two")))
    lam = harness.client("lambda")
    lam.create_function(
        FunctionName="s3fn",
        Runtime="python3.11",
        Handler="handler.handler",
        Role=harness.role_arn,
        Code={"S3Bucket": "artifacts", "S3Key": "lambda/s3fn/one.zip"},
    )

    def tag() -> str:
        answer = lam.invoke(FunctionName="s3fn", Payload=b"{}")
        return str(json.loads(json.loads(answer["Payload"].read())["body"])["tag"])

    assert tag() == "s3-one"
    lam.update_function_code(FunctionName="s3fn", S3Bucket="artifacts", S3Key="lambda/s3fn/two.zip")
    assert tag() == "s3-two"


def test_with_the_fault_an_update_stays_in_progress_and_refuses_a_publish_meanwhile(harness: Harness) -> None:
    """updates_as_aws: as AWS answers while it applies an update; off again, updates are done at once."""
    harness.function("slowfn", VERSIONED.format(tag="one"))
    lam = harness.client("lambda")
    lifecycle.slow_lambda_updates(harness.settings, 0.6)
    assert harness.extension.sandbox is not None
    [said] = [part.detail for part in harness.extension.sandbox.status() if part.part == "faults"]
    assert said.startswith("Lambda applies each update in 0.6s")  # inv sandbox.status says it is on
    try:
        # before the call: the sandbox's 0.6 s begin when it takes the update, which a slow answer (a busy machine)
        # leaves well before the answer arrives (CI once measured 0.35 s from the answer on)
        started = time.monotonic()
        answer = lam.update_function_code(FunctionName="slowfn", ZipFile=zip_of(VERSIONED.format(tag="two")))
        assert answer["LastUpdateStatus"] == "InProgress"
        assert lam.get_function_configuration(FunctionName="slowfn")["LastUpdateStatus"] == "InProgress"
        with pytest.raises(lam.exceptions.ResourceConflictException, match="An update is in progress"):
            lam.publish_version(FunctionName="slowfn")
        with pytest.raises(lam.exceptions.ResourceConflictException, match="An update is in progress"):
            lam.update_function_configuration(FunctionName="slowfn", Timeout=5)
        while lam.get_function_configuration(FunctionName="slowfn")["LastUpdateStatus"] != "Successful":
            assert time.monotonic() - started < 5, "the update never ended"
            time.sleep(0.05)
        assert time.monotonic() - started >= 0.5
        assert lam.publish_version(FunctionName="slowfn")["Version"] == "2"
        assert lam.get_function_configuration(FunctionName="slowfn", Qualifier="1")["LastUpdateStatus"] == "Successful"
    finally:
        lifecycle.clear_faults(harness.settings)
    answer = lam.update_function_configuration(FunctionName="slowfn", Timeout=5)
    assert answer["LastUpdateStatus"] == "Successful"  # the fault cleared: at once, as moto does


def test_invoke_api_runs_the_code_and_tails_the_log(harness: Harness) -> None:
    harness.function("plain", VERSIONED.format(tag="plain"), alias=False)
    lam = harness.client("lambda")
    answer = lam.invoke(FunctionName="plain", Payload=b'{"any": "event"}', LogType="Tail")
    assert answer["StatusCode"] == 200
    assert json.loads(json.loads(answer["Payload"].read())["body"])["tag"] == "plain"
    tail = base64.b64decode(answer["LogResult"]).decode()
    assert "START RequestId" in tail
    assert "versioned function says hello" in tail
    assert "REPORT RequestId" in tail
    # The same lines are in CloudWatch Logs.
    logs = harness.client("logs")
    streams = logs.describe_log_streams(logGroupName="/aws/lambda/plain")["logStreams"]
    assert streams
    events = logs.get_log_events(logGroupName="/aws/lambda/plain", logStreamName=streams[0]["logStreamName"])
    assert any("says hello" in e["message"] for e in events["events"])
    assert lam.invoke(FunctionName="plain", InvocationType="DryRun")["StatusCode"] == 204
    assert lam.invoke(FunctionName="plain", InvocationType="Event", Payload=b"{}")["StatusCode"] == 202


def test_a_function_logs_to_the_group_of_its_logging_config(harness: Harness) -> None:
    lam, logs = harness.client("lambda"), harness.client("logs")
    logs.create_log_group(logGroupName="/team/custom")
    lam.create_function(
        FunctionName="configured",
        Runtime="python3.11",
        Handler="handler.handler",
        Role=harness.role_arn,
        Code={"ZipFile": zip_of(VERSIONED.format(tag="configured"))},
        LoggingConfig={"LogFormat": "Text", "LogGroup": "/team/custom"},
    )
    assert lam.get_function_configuration(FunctionName="configured")["LoggingConfig"] == {
        "LogFormat": "Text",
        "LogGroup": "/team/custom",
    }
    published = lam.publish_version(FunctionName="configured")["Version"]
    lam.invoke(FunctionName="configured", Payload=b"{}")
    streams = logs.describe_log_streams(logGroupName="/team/custom")["logStreams"]
    assert [s["logStreamName"].split("]")[0][-8:] for s in streams] == ["[$LATEST"]
    # a change of LoggingConfig moves $LATEST's log, not the version published before it
    lam.update_function_configuration(FunctionName="configured", LoggingConfig={"LogGroup": "/team/other"})
    assert lam.get_function_configuration(FunctionName="configured")["LoggingConfig"]["LogGroup"] == "/team/other"
    version = lam.get_function_configuration(FunctionName="configured", Qualifier=published)
    assert version["LoggingConfig"]["LogGroup"] == "/team/custom"
    lam.invoke(FunctionName="configured", Payload=b"{}")
    events = logs.filter_log_events(logGroupName="/team/other")["events"]
    assert any("says hello" in e["message"] for e in events)
    # without one, AWS's default
    harness.function("unconfigured", VERSIONED.format(tag="unconfigured"), alias=False)
    default = lam.get_function_configuration(FunctionName="unconfigured")["LoggingConfig"]
    assert default == {"LogFormat": "Text", "LogGroup": "/aws/lambda/unconfigured"}


# -- failures -------------------------------------------------------------------------------------------------


def test_a_function_past_its_timeout_is_killed(harness: Harness) -> None:
    alias_arn = harness.function("sleeper", SLEEPER, timeout=1)
    api_id = harness.api({("GET", "/sleep"): alias_arn})
    started = time.monotonic()
    answer = request("GET", harness.url(api_id, "/sleep"))
    assert answer.status == 502
    assert answer.json() == {"message": "Internal server error"}
    assert time.monotonic() - started < 5

    invoked = harness.client("lambda").invoke(FunctionName="sleeper", Qualifier="live", Payload=b"{}")
    assert invoked["FunctionError"] == "Unhandled"
    error = json.loads(invoked["Payload"].read())
    assert error["errorType"] == "Sandbox.Timedout"
    assert "Task timed out after 1.00 seconds" in error["errorMessage"]


def test_a_raising_function_is_an_unhandled_error(harness: Harness) -> None:
    alias_arn = harness.function("raiser", RAISER)
    invoked = harness.client("lambda").invoke(FunctionName="raiser", Payload=b"{}")
    assert invoked["FunctionError"] == "Unhandled"
    error = json.loads(invoked["Payload"].read())
    assert error["errorType"] == "ValueError"
    assert error["errorMessage"] == "boom"
    assert any('raise ValueError("boom")' in line for line in error["stackTrace"])
    api_id = harness.api({("GET", "/raise"): alias_arn})
    answer = request("GET", harness.url(api_id, "/raise"))
    assert answer.status == 502
    assert answer.json() == {"message": "Internal server error"}


def test_a_malformed_proxy_response_is_502(harness: Harness) -> None:
    alias_arn = harness.function("malformed", MALFORMED)
    api_id = harness.api({("GET", "/bad"): alias_arn})
    answer = request("GET", harness.url(api_id, "/bad"))
    assert answer.status == 502
    assert answer.json() == {"message": "Internal server error"}


def test_an_unknown_handler_module_is_an_import_error(harness: Harness) -> None:
    lam = harness.client("lambda")
    lam.create_function(
        FunctionName="misnamed",
        Runtime="python3.11",
        Handler="nothere.handler",
        Role=harness.role_arn,
        Code={"ZipFile": zip_of(RAISER)},
    )
    invoked = lam.invoke(FunctionName="misnamed", Payload=b"{}")
    assert invoked["FunctionError"] == "Unhandled"
    assert json.loads(invoked["Payload"].read())["errorType"] == "Runtime.ImportModuleError"


# -- the proxy event and response -----------------------------------------------------------------------------


def test_proxy_event_carries_the_request(harness: Harness) -> None:
    echo = harness.function("echo", ECHO)
    api_id = harness.api(
        {("GET", "/items/{id}"): echo, ("ANY", "/files/{proxy+}"): echo, ("GET", "/items/special"): "MOCK"},
        binary=["application/octet-stream"],
    )
    answer = request("GET", harness.url(api_id, "/items/42?a=1&a=2&b=x"), headers={"X-Thing": "t"})
    assert answer.status == 201
    assert answer.headers["x-single"] == "one"
    assert answer.headers["x-multi"] in ("a, b", "a,b", "b")  # two header lines; http.client joins them
    event = answer.json()
    assert event["resource"] == "/items/{id}"
    assert event["path"] == "/items/42"
    assert event["httpMethod"] == "GET"
    assert event["pathParameters"] == {"id": "42"}
    assert event["queryStringParameters"] == {"a": "2", "b": "x"}
    assert event["multiValueQueryStringParameters"] == {"a": ["1", "2"], "b": ["x"]}
    assert event["headers"]["X-Thing"] == "t"
    assert event["multiValueHeaders"]["X-Thing"] == ["t"]
    assert event["body"] is None
    assert event["isBase64Encoded"] is False
    context = event["requestContext"]
    assert context["stage"] == "v1"
    assert context["apiId"] == api_id
    assert context["resourcePath"] == "/items/{id}"
    assert context["httpMethod"] == "GET"
    assert context["identity"]["sourceIp"] == "127.0.0.1"
    assert context["requestId"] == answer.headers["x-amzn-requestid"]

    assert request("GET", harness.url(api_id, "/items/special")).json() == {"status": "ok"}  # literal beats {id}

    binary = bytes(range(256))
    answer = request("PUT", harness.url(api_id, "/files/a/b.bin"), binary, {"Content-Type": "application/octet-stream"})
    event = answer.json()
    assert event["resource"] == "/files/{proxy+}"
    assert event["pathParameters"] == {"proxy": "a/b.bin"}
    assert event["httpMethod"] == "PUT"
    assert event["isBase64Encoded"] is True
    assert base64.b64decode(event["body"]) == binary
    text = request("POST", harness.url(api_id, "/files/x"), "héllo".encode(), {"Content-Type": "text/plain"}).json()
    assert (text["body"], text["isBase64Encoded"]) == ("héllo", False)


def test_a_base64_proxy_response_is_sent_as_bytes(harness: Harness) -> None:
    alias_arn = harness.function("binary", BINARY)
    api_id = harness.api({("GET", "/image"): alias_arn})
    answer = request("GET", harness.url(api_id, "/image"))
    assert answer.status == 200
    assert answer.headers["content-type"] == "image/png"
    assert answer.body == bytes(range(256))


def test_a_stage_serves_its_deployment_not_later_changes(harness: Harness) -> None:
    echo = harness.function("echo2", ECHO)
    apigw = harness.client("apigateway")
    api_id = harness.api({("GET", "/one"): echo})
    apigw.update_stage(
        restApiId=api_id,
        stageName="v1",
        patchOperations=[{"op": "replace", "path": "/variables/color", "value": "blue"}],
    )
    root = next(r["id"] for r in apigw.get_resources(restApiId=api_id)["items"] if r["path"] == "/")
    two = apigw.create_resource(restApiId=api_id, parentId=root, pathPart="two")["id"]
    apigw.put_method(restApiId=api_id, resourceId=two, httpMethod="GET", authorizationType="NONE")
    uri = f"arn:aws:apigateway:{REGION}:lambda:path/2015-03-31/functions/{echo}/invocations"
    apigw.put_integration(
        restApiId=api_id, resourceId=two, httpMethod="GET", type="AWS_PROXY", integrationHttpMethod="POST", uri=uri
    )
    assert request("GET", harness.url(api_id, "/two")).status == 403  # not deployed yet
    apigw.create_deployment(restApiId=api_id, stageName="v1")
    answer = request("GET", harness.url(api_id, "/two"))
    assert answer.status == 201
    assert answer.json()["stageVariables"] == {"color": "blue"}  # the stage kept its variables


# -- status and the runtime on its own ------------------------------------------------------------------------


def test_status_counts_apis_stages_and_functions(harness: Harness, login: Login) -> None:
    parts = {p.part: p for p in harness.extension.status()}
    api = parts["api gateway"]
    assert api.healthy
    assert api.address == f"http://127.0.0.1:{harness.settings.api_port}"
    apis = harness.client("apigateway").get_rest_apis()["items"]
    assert api.detail == f"{len(apis)} APIs, {len(apis)} stages"
    functions = harness.client("lambda").list_functions()["Functions"]
    assert parts["lambda runtime"].detail.startswith(f"{len(functions)} functions")


def runtime_function(name: str, files: dict[str, str]) -> FunctionCode:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path, source in files.items():
            archive.writestr(path, textwrap.dedent(source))
    code = buffer.getvalue()
    return FunctionCode(
        function_name=name,
        version="$LATEST",
        function_arn=f"arn:aws:lambda:{REGION}:123456789012:function:{name}",
        handler="handler.handler",
        runtime="python3.11",
        code_sha256=hashlib.sha256(code).hexdigest(),
        code=code,
    )


def test_runtime_reuses_warm_workers_and_stop_ends_them(tmp_path: Path) -> None:
    runtime = LambdaRuntime(tmp_path, region=REGION, endpoint_url="http://127.0.0.1:9")
    source = "import os\ndef handler(event, context):\n    return {'pid': os.getpid(), 'cwd': os.getcwd()}\n"
    fn = runtime_function("pids", {"handler.py": source})
    first = json.loads(runtime.invoke(fn, {}).payload)
    second = json.loads(runtime.invoke(fn, {}).payload)
    assert first["pid"] == second["pid"]  # warm
    assert first["cwd"] == str(tmp_path / "code" / fn.code_sha256)
    runtime.stop()
    assert runtime.worker_count() == 0
    with pytest.raises(ProcessLookupError):
        os.kill(first["pid"], 0)


def test_a_function_imports_what_lambda_has_not_what_the_sandboxs_interpreter_has(tmp_path: Path) -> None:
    """requests is installed here, not in Lambda's runtime: a function importing it without vendoring it fails as
    on AWS, at its init; the SDK imports; a try that does without a module does; a vendored package beside the
    handler imports, and its own import of a module nothing has fails. deploy.toml's [build] lambda_runtime_modules
    (a layer's on AWS) lets the interpreter's module in, with what it imports itself."""
    runtime = LambdaRuntime(tmp_path / "strict", region=REGION, endpoint_url="http://127.0.0.1:9")
    layered = LambdaRuntime(
        tmp_path / "layered", region=REGION, endpoint_url="http://127.0.0.1:9", modules=lambda: ["requests"]
    )
    try:
        unvendored = runtime_function(
            "unvendored", {"handler.py": "import requests\ndef handler(e, c):\n    return 1\n"}
        )
        failed = runtime.invoke(unvendored, {})
        assert failed.function_error == "Unhandled"
        assert failed.error is not None and failed.error == {
            "errorMessage": "Unable to import module 'handler': No module named 'requests'",
            "errorType": "Runtime.ImportModuleError",
            "requestId": failed.error["requestId"],
            "stackTrace": [],
        }
        fine = runtime_function(
            "fine",
            {
                "handler.py": """
                    import boto3
                    import vendored_pkg
                    try:
                        import yaml
                    except ImportError:
                        yaml = None
                    def handler(event, context):
                        return [vendored_pkg.NAME, yaml is None, boto3.__name__]
                    """,
                "vendored_pkg/__init__.py": "NAME = 'vendored'\n",
            },
        )
        assert json.loads(runtime.invoke(fine, {}).payload) == ["vendored", True, "boto3"]
        broken_vendor = runtime_function(
            "broken_vendor",
            {
                "handler.py": "import vendored_pkg\ndef handler(e, c):\n    return 1\n",
                "vendored_pkg/__init__.py": "import idna\n",
            },
        )
        assert "No module named 'idna'" in str(runtime.invoke(broken_vendor, {}).error)
        assert json.loads(layered.invoke(unvendored, {}).payload) == 1
    finally:
        runtime.stop()
        layered.stop()
