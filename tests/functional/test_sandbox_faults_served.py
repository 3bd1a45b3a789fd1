"""The sandbox's fault route: which requests a throttle refuses, how each protocol's refusal reads to botocore, the
route's own answers; then one real botocore client against the WSGI app, retrying what it is refused."""

from __future__ import annotations

import json
import urllib.request
from typing import Any
from urllib.parse import urlsplit

import boto3
import botocore.session
import pytest
from botocore.awsrequest import AWSPreparedRequest, AWSResponse, HeadersDict
from botocore.config import Config
from botocore.exceptions import ClientError
from botocore.parsers import create_parser
from botocore.retries.standard import RetryContext, ThrottledRetryableChecker
from werkzeug.test import EnvironBuilder

from sandbox import lifecycle
from sandbox.server import (
    THROTTLE_MESSAGE,
    AwsCall,
    Faults,
    credential_service,
    identify,
    throttled_answer,
)
from sandbox.settings import FAULTS_PATH, Settings


class _Captured(Exception):
    def __init__(self, request: AWSPreparedRequest) -> None:
        super().__init__("captured")
        self.request = request


def signed_request(service: str, operation: str, /, **params: Any) -> AWSPreparedRequest:
    """The request botocore would send for ``operation``, signed, captured before it leaves."""
    client = boto3.client(
        service,  # type: ignore[call-overload]
        region_name="us-east-1",
        endpoint_url="http://127.0.0.1:9",
        aws_access_key_id="AKID",
        aws_secret_access_key="secret",
        config=Config(retries={"mode": "standard", "max_attempts": 0}),
    )

    def capture(request: AWSPreparedRequest, **_kwargs: Any) -> None:
        raise _Captured(request)

    client.meta.events.register("before-send", capture)
    with pytest.raises(_Captured) as caught:
        getattr(client, operation)(**params)
    return caught.value.request


def environ_of(request: AWSPreparedRequest) -> dict[str, Any]:
    url = urlsplit(request.url)
    raw = request.body
    body = raw if isinstance(raw, bytes) else raw.read() if hasattr(raw, "read") else (raw or "").encode()
    headers = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in request.headers.items()}
    return dict(
        EnvironBuilder(method=request.method, path=url.path, query_string=url.query, headers=headers, data=body)
        .get_environ()
        .items()
    )


def environ(service: str, operation: str, /, **params: Any) -> dict[str, Any]:
    return environ_of(signed_request(service, operation, **params))


# -- which request is which ------------------------------------------------------------------------------


def test_the_service_is_the_credential_scopes_and_the_operation_comes_from_the_protocol() -> None:
    ecs = environ("ecs", "update_service", cluster="c", service="s", taskDefinition="td:2")
    assert credential_service(ecs) == "ecs"
    assert identify(ecs, "ecs").protocol == "json" and identify(ecs, "ecs").operation == "UpdateService"

    cfn = environ("cloudformation", "describe_stacks", StackName="s")
    call = identify(cfn, "cloudformation")
    assert (call.protocol, call.operation) == ("query", "DescribeStacks")
    assert b"Action=DescribeStacks" in cfn["wsgi.input"].read()  # the body read for its Action is put back

    elb = environ("elbv2", "describe_target_health", TargetGroupArn="arn:tg")
    assert credential_service(elb) == "elasticloadbalancing"

    lam = identify(environ("lambda", "update_function_code", FunctionName="f", ZipFile=b"zip"), "lambda")
    assert (lam.protocol, lam.operation, lam.method, lam.path) == (
        "rest-json",
        None,
        "PUT",
        "/2015-03-31/functions/f/code",
    )
    assert credential_service({"PATH_INFO": "/", "QUERY_STRING": ""}) is None  # unsigned: never throttled


def test_a_throttle_counts_down_and_touches_nothing_else() -> None:
    faults = Faults()
    faults.throttle("ecs", "UpdateService", count=2)
    update = environ("ecs", "update_service", cluster="c", service="s", taskDefinition="td:2")
    describe = environ("ecs", "describe_services", cluster="c", services=["s"])
    ecr = environ("ecr", "describe_repositories")
    assert faults.intercept(describe) is None  # another operation of the service
    assert faults.intercept(ecr) is None  # another service
    assert faults.listing() == {"throttle": [{"service": "ecs", "operation": "UpdateService", "count": 2}]}
    assert faults.intercept(update) is not None
    assert faults.listing()["throttle"][0]["count"] == 1
    assert faults.intercept(update) is not None
    assert faults.intercept(update) is None and faults.listing() == {"throttle": []}  # normal again


def test_without_an_operation_every_operation_of_the_service_is_throttled_and_clear_forgets_all() -> None:
    faults = Faults()
    faults.throttle("elbv2", count=5)  # a client name; the credential scope says elasticloadbalancing
    assert faults.intercept(environ("elbv2", "describe_target_health", TargetGroupArn="arn:tg")) is not None
    assert faults.intercept(environ("elbv2", "describe_load_balancers")) is not None
    faults.throttle("lambda", "GetFunction")
    assert faults.clear() == 2
    assert faults.intercept(environ("elbv2", "describe_load_balancers")) is None


def test_rest_operations_are_found_by_method_and_path_from_the_model() -> None:
    faults = Faults()
    faults.throttle("lambda", "UpdateFunctionCode", count=1)
    assert faults.intercept(environ("lambda", "get_function", FunctionName="f")) is None
    assert faults.intercept(environ("lambda", "get_function_configuration", FunctionName="f")) is None
    assert faults.intercept(environ("lambda", "update_function_code", FunctionName="f", ZipFile=b"z")) is not None
    faults.throttle("s3", "PutObject")
    assert faults.intercept(environ("s3", "get_object", Bucket="b", Key="k/x.zip")) is None
    answer = faults.intercept(environ("s3", "put_object", Bucket="b", Key="k/x.zip", Body=b"z"))
    assert answer is not None and answer.status == 503


@pytest.mark.parametrize(
    ("service", "operation", "params", "status", "code"),
    [
        ("ecs", "UpdateService", {"cluster": "c", "service": "s"}, 400, "ThrottlingException"),
        ("ecr", "DescribeImages", {"repositoryName": "repo"}, 400, "ThrottlingException"),
        ("cloudformation", "DescribeStacks", {"StackName": "s"}, 400, "Throttling"),
        ("elbv2", "DescribeTargetHealth", {"TargetGroupArn": "arn:tg"}, 400, "Throttling"),
        ("lambda", "GetFunction", {"FunctionName": "f"}, 429, "TooManyRequestsException"),
        ("s3", "HeadObject", {"Bucket": "b", "Key": "k"}, 503, "SlowDown"),
    ],
)
def test_each_protocols_refusal_reads_to_botocore_as_throttling(
    service: str, operation: str, params: dict[str, Any], status: int, code: str
) -> None:
    snake = "".join("_" + c.lower() if c.isupper() else c for c in operation).lstrip("_")
    request = environ(service, snake, **params)
    answer = throttled_answer(identify(request, credential_service(request) or "?"), request_id="rid-1")
    assert answer.status == status

    model = botocore.session.get_session().get_service_model(service)
    op = model.operation_model(operation)
    headers = HeadersDict(dict(answer.headers))
    parsed = create_parser(model.protocol).parse(
        {"status_code": answer.status, "headers": headers, "body": answer.body, "context": {}}, op.output_shape
    )
    assert parsed["Error"]["Code"] == code
    if service != "s3":
        assert parsed["Error"]["Message"] == THROTTLE_MESSAGE
    context = RetryContext(
        attempt_number=1,
        operation_model=op,
        parsed_response=parsed,
        http_response=AWSResponse("http://x", answer.status, headers, None),
    )
    assert ThrottledRetryableChecker().is_retryable(context)  # botocore's standard/adaptive modes: throttling


def test_the_query_refusal_is_the_error_response_aws_sends() -> None:
    call = AwsCall("cloudformation", "query", "DescribeStacks")
    assert throttled_answer(call, request_id="r-1").body.decode() == (
        "<ErrorResponse><Error><Type>Sender</Type><Code>Throttling</Code><Message>Rate exceeded</Message></Error>"
        "<RequestId>r-1</RequestId></ErrorResponse>"
    )
    json_call = AwsCall("ecs", "json", "UpdateService", content_type="application/x-amz-json-1.1")
    assert json.loads(throttled_answer(json_call).body) == {"__type": "ThrottlingException", "message": "Rate exceeded"}


# -- the route --------------------------------------------------------------------------------------------


def test_the_route_adds_lists_clears_and_refuses_what_it_cannot_do() -> None:
    faults = Faults()
    spec = {"throttle": {"service": "ecs", "operation": "UpdateService", "count": 3}}
    assert faults.control("POST", json.dumps(spec).encode()) == (
        200,
        {"throttle": [{"service": "ecs", "operation": "UpdateService", "count": 3}]},
    )
    many = {"throttle": [{"service": "cloudformation"}, {"service": "lambda", "operation": "GetFunction", "count": 2}]}
    assert faults.control("POST", json.dumps(many).encode())[0] == 200
    signed = {"throttle": {"service": "elasticloadbalancing", "operation": "DescribeTargetHealth"}}  # a signing name
    assert faults.control("POST", json.dumps(signed).encode())[0] == 200
    code, listed = faults.control("GET", b"")
    assert code == 200 and [t["count"] for t in listed["throttle"]] == [3, 1, 2, 1]
    assert listed["throttle"][1] == {"service": "cloudformation", "operation": None, "count": 1}

    for bad, says in [
        ({"throttle": {"service": "ecs", "operation": "UpdateServic"}}, "did you mean 'UpdateService'"),
        # a service AWS does not have would never be throttled: refused, not added
        ({"throttle": {"service": "nope"}}, "no AWS service is named 'nope'"),
        ({"throttle": {"service": "elbv3"}}, "no AWS service is named 'elbv3' (did you mean 'elbv2'?)"),
        ({"throttle": {"service": "ecs", "count": 0}}, "positive integer"),
        ({"throttle": {"service": "ecs", "times": 2}}, "is not a throttle"),
        ({"throttle": {"operation": "UpdateService"}}, '"service" must be'),
        ({"latency": {"service": "ecs"}}, "expected {"),
    ]:
        code, answer = faults.control("POST", json.dumps(bad).encode())
        assert code == 400 and says in answer["error"], answer
    # a list with one bad throttle adds none of them
    half = {"throttle": [{"service": "ecr"}, {"service": "ecs", "operation": "Nope"}]}
    assert faults.control("POST", json.dumps(half).encode())[0] == 400
    assert faults.control("POST", b"{not json")[0] == 400
    assert faults.control("PUT", b"")[0] == 405
    assert len(faults.listing()["throttle"]) == 4

    assert faults.control("DELETE", b"") == (200, {"cleared": 4, "throttle": []})


def test_the_route_slows_lambdas_updates_lists_it_while_on_and_clears_it() -> None:
    faults = Faults()
    assert faults.control("POST", json.dumps({"lambda_update": {"seconds": 2}}).encode()) == (
        200,
        {"throttle": [], "lambda_update": {"seconds": 2.0}},
    )
    assert faults.lambda_update_seconds == 2.0
    both = {"throttle": {"service": "ecs"}, "lambda_update": {"seconds": 0.5}}
    assert faults.control("POST", json.dumps(both).encode())[1]["lambda_update"] == {"seconds": 0.5}
    for bad, says in [
        ({"lambda_update": {"seconds": -1}}, "from 0 to 300"),
        ({"lambda_update": {"seconds": "2"}}, "from 0 to 300"),
        ({"lambda_update": {"seconds": True}}, "from 0 to 300"),
        ({"lambda_update": {"secs": 2}}, "is not a duration"),
        ({"lambda_update": {"seconds": 1}, "throttle": {"service": "ecs", "operation": "Nope"}}, "no operation"),
        ({}, "expected {"),
    ]:
        code, answer = faults.control("POST", json.dumps(bad).encode())
        assert code == 400 and says in answer["error"], answer
    assert faults.lambda_update_seconds == 0.5 and len(faults.listing()["throttle"]) == 1  # refused: unchanged
    assert faults.describe() == (
        "ecs (every operation): the next 1 throttled; Lambda applies each update in 0.5s; "
        "clear: inv sandbox.throttle --clear"
    )
    assert faults.control("DELETE", b"") == (200, {"cleared": 2, "throttle": []})
    assert faults.lambda_update_seconds == 0.0 and faults.describe() == ""


# -- a real client against the WSGI app --------------------------------------------------------------------


def client(settings: Settings, service: str, retries: int) -> Any:
    return boto3.client(
        service,  # type: ignore[call-overload]
        endpoint_url=settings.endpoint_url,
        region_name=settings.region,
        aws_access_key_id="sandbox",
        aws_secret_access_key="sandbox",
        config=Config(retries={"mode": "standard", "max_attempts": retries}),
    )


def test_a_real_client_retries_a_throttled_call_and_gives_up_past_its_attempts(
    served_sandbox: Settings, backoffs: list[float]
) -> None:
    ecs = client(served_sandbox, "ecs", retries=1)  # botocore's max_attempts counts retries: 2 attempts in all
    assert ecs.list_clusters()["clusterArns"] == []

    lifecycle.inject_throttling(served_sandbox, "ecs", "ListClusters", count=1)
    answer = ecs.list_clusters()  # refused once, retried, answered
    assert answer["ResponseMetadata"]["RetryAttempts"] == 1
    assert backoffs == [1]  # backed off as from throttling
    assert lifecycle.pending_faults(served_sandbox) == []

    lifecycle.inject_throttling(served_sandbox, "ecs", "ListClusters", count=3)
    with pytest.raises(ClientError) as refused:
        ecs.list_clusters()
    error = refused.value.response
    assert error["Error"]["Code"] == "ThrottlingException" and error["ResponseMetadata"]["RetryAttempts"] == 1
    assert lifecycle.pending_faults(served_sandbox) == [{"service": "ecs", "operation": "ListClusters", "count": 1}]
    lifecycle.clear_faults(served_sandbox)
    assert ecs.list_clusters()["clusterArns"] == []

    lifecycle.inject_throttling(served_sandbox, "cloudformation", count=2)
    lifecycle.inject_throttling(served_sandbox, "lambda", "ListFunctions", count=2)
    for service, call, code in [
        ("cloudformation", "list_stacks", "Throttling"),
        ("lambda", "list_functions", "TooManyRequestsException"),
    ]:
        with pytest.raises(ClientError) as refused:
            getattr(client(served_sandbox, service, retries=1), call)()
        assert refused.value.response["Error"]["Code"] == code
    assert lifecycle.pending_faults(served_sandbox) == []
    assert backoffs == [1, 1, 1, 1]  # every protocol's refusal: a throttling backoff

    with pytest.raises(lifecycle.SandboxError, match="has no operation 'UpdateServic'"):
        lifecycle.inject_throttling(served_sandbox, "ecs", "UpdateServic")
    with urllib.request.urlopen(served_sandbox.endpoint_url + FAULTS_PATH, timeout=5) as listed:
        assert json.loads(listed.read()) == {"throttle": []}
