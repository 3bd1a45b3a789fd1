"""API Gateway and Lambda that run: REST API stages answer HTTP on 127.0.0.1 and run the uploaded code.

What plain moto lacks, fixed here:

- ``lambda_that_runs``: moto's Invoke needs Docker images it cannot pull here. The Lambda backend's
  ``invoke`` is replaced: the qualifier (version, alias — with the alias's weighted routing — or
  ``$LATEST``) is resolved to a version, and that version's zip (``ZipFile`` or ``S3Bucket``/``S3Key``:
  moto keeps the bytes on each version object) runs in a local Python worker (:mod:`sandbox.lambda_runner`:
  code cache by zip hash, warm workers, the function's Timeout, environment and handler). RequestResponse
  answers the handler's result, or Lambda's error object with ``X-Amz-Function-Error: Unhandled``;
  ``X-Amz-Executed-Version`` and, with ``LogType=Tail``, ``X-Amz-Log-Result`` are set; ``Event`` runs in
  the background (202), ``DryRun`` runs nothing (204). UpdateFunctionCode, PublishVersion and aliases
  take effect on the next invocation. The sandbox lock is let go while user code runs, so the function
  can call the sandbox's AWS endpoint.
- ``invoke_qualifier``: moto's Invoke reads ``qualifier`` (lower case) from the query string or, failing
  that, from the event itself, so ``Qualifier=1`` was ignored; the query string's ``Qualifier`` is used.
- ``function_logs``: each invocation's log (the function's stdout/stderr and START/END/REPORT lines) goes
  to the sandbox log (logger ``sandbox.lambda``) and to CloudWatch Logs: the group of the function's
  ``LoggingConfig``, else ``/aws/lambda/<name>``, stream ``<yyyy/mm/dd>/[<version>]<id>``.
- ``lambda_metrics``: each invocation puts ``AWS/Lambda`` ``Invocations``, ``Errors`` and ``Duration`` in moto's
  CloudWatch as Lambda does: by FunctionName; by FunctionName and Resource (``<name>:<qualifier>``) when invoked
  with a qualifier; through an alias also by ExecutedVersion (the version its weighted routing chose).
- ``logging_config``: moto drops a function's LoggingConfig; it is kept (CreateFunction,
  UpdateFunctionConfiguration, CloudFormation), copied to the versions published from it and shown by
  GetFunction(Configuration) with AWS's defaults (``Text``, ``/aws/lambda/<name>``).
- ``versions_as_aws``: moto numbered a new version len(versions) + 1, so once versions were deleted a publish
  took the number of one still there; a number is never used again here. Deleting a version an alias serves or
  routes a weighted share to is refused (``ResourceConflictException``), as AWS refuses it.
- ``updates_as_aws``: Lambda applies an update of a function's code or configuration asynchronously: AWS answers
  ``LastUpdateStatus: InProgress`` and the update is done 1-5 s later; moto is done at once. With the fault
  ``{"lambda_update": {"seconds": N}}`` (``inv sandbox.lambda-updates --seconds N``) each later update made
  through the API stays InProgress for N seconds, and another update or a PublishVersion of the function
  meanwhile is refused with AWS's ``ResourceConflictException`` (409). Off by default. CloudFormation's
  updates are not slowed: on AWS CloudFormation waits for them itself.
- ``provisioned_concurrency``: on an alias or a version, allocated in ``[sandbox] provisioned_concurrency_seconds``
  with the version's init run in a warm worker (:meth:`LambdaRuntime.initialize`); see :mod:`sandbox.ext.provisioned`.
- ``deployment_snapshots``: moto's deployments point at the live resources, so an undeployed change would
  be served at once. Here CreateDeployment records the API's routes, integrations and binary media types,
  and a stage serves the snapshot of its deployment, as on AWS (deployments made before this extension
  was installed are served live).
- ``stage_keeps_settings``: moto's CreateDeployment with the name of an existing stage replaces that
  stage, dropping its variables and settings; here the stage is kept and pointed at the new deployment.
- ``stages_that_answer``: a threaded HTTP server on ``127.0.0.1:<api_port>`` serves every deployed stage:

  - ``http://127.0.0.1:<api_port>/restapis/<api_id>/<stage>/_user_request_/<path>`` (LocalStack's style;
    :func:`invoke_url` gives the base, the equivalent of ``https://<api_id>.execute-api.<region>.amazonaws.com/<stage>``);
  - ``http://127.0.0.1:<api_port>/<stage>/<path>`` with ``Host: <api_id>.execute-api.localhost`` (any host
    whose labels start ``<api_id>.execute-api.``; curl resolves ``*.localhost`` itself, other clients may
    need the Host header set by hand).

  The resource is matched as API Gateway does: literal path parts before ``{param}`` before a greedy
  ``{proxy+}`` (which takes one or more parts), among the resources that have the request's method or
  ``ANY``. ``AWS_PROXY`` integrations whose URI is ``arn:aws:apigateway:<region>:lambda:path/2015-03-31/
  functions/<function ARN, optionally :alias or :version>/invocations`` (``${stageVariables.x}``
  substituted) get the REST API proxy event (resource, path, httpMethod, headers, multiValueHeaders,
  queryStringParameters, multiValueQueryStringParameters, pathParameters, stageVariables, requestContext,
  body, isBase64Encoded: base64 when the Content-Type is one of the API's binaryMediaTypes or the body is
  not UTF-8), and their proxy response (statusCode, headers, multiValueHeaders, body, isBase64Encoded,
  nothing else) becomes the HTTP answer; a body marked isBase64Encoded is always decoded (AWS also wants
  the request's Accept header among the binaryMediaTypes). A function error or timeout, or a malformed
  proxy response: 502 ``{"message": "Internal server error"}``. ``MOCK`` integrations answer the
  integration response their request template's statusCode selects, with its ``application/json``
  template as the body (literally: no VTL) and its static ``'quoted'`` header values. No matching
  resource or method: 403 ``{"message": "Missing Authentication Token"}``; an unknown API or stage: 403
  ``{"message": "Forbidden"}``.

Not done (AWS does): authorizers, API keys and usage plans, request validation and models, gateway
responses, VTL mapping templates, the non-proxy ``AWS``/``HTTP``/``HTTP_PROXY`` integrations (500), the
29-second integration timeout, Lambda resource policies (API Gateway may invoke any function), HTTP APIs
(apigatewayv2). Only the sandbox's region is patched. An event source mapping (a queue's, a table stream's)
invokes what it names, an alias or ``$LATEST``, through the same Invoke.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import fnmatch
import hashlib
import json
import logging
import random
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import parse_qs, parse_qsl, unquote, urlsplit

from moto.awslambda.exceptions import LambdaClientError

from sandbox.ext import provisioned
from sandbox.ext.service_metrics import ServiceMetrics
from sandbox.lambda_runner import CodeError, FunctionCode, InvokeResult, LambdaRuntime
from sandbox.server import PartStatus, serving
from sandbox.settings import ACCOUNT_ID, Settings, lambda_modules

if TYPE_CHECKING:
    from sandbox.server import Sandbox

log = logging.getLogger("sandbox.apigw")

MAX_BODY = 10 * 1024 * 1024  # API Gateway's payload limit
PROXY_RESPONSE_KEYS = frozenset({"statusCode", "headers", "multiValueHeaders", "body", "isBase64Encoded"})
HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade"}
)
LAMBDA_URI = re.compile(r"^arn:aws[\w-]*:apigateway:[^:]*:lambda:path/[^/]+/functions/(?P<function>.+)/invocations$")
STAGE_VARIABLE = re.compile(r"\$\{stageVariables\.([A-Za-z0-9_]+)\}")
PATH_STYLE = re.compile(r"^/restapis/(?P<api>[^/]+)/(?P<stage>[^/]+)/_user_request_(?P<path>/.*)?$")
HOST_STYLE = re.compile(r"^(?P<api>[A-Za-z0-9]+)\.execute-api\.", re.IGNORECASE)
MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def invoke_url(settings: Settings, api_id: str, stage: str) -> str:
    """The base URL of a deployed stage (no trailing slash): append the resource path, e.g. ``/auth/login``."""
    return f"http://127.0.0.1:{settings.api_port}/restapis/{api_id}/{stage}/_user_request_"


class _Lock(Protocol):
    def acquire(self, blocking: bool = ..., timeout: float = ...) -> bool: ...

    def release(self) -> None: ...


@contextlib.contextmanager
def released(lock: _Lock) -> Iterator[None]:
    """Let go of an RLock entirely (however deeply this thread holds it) for the block, then take it back."""
    depth = 0
    while True:
        try:
            lock.release()
        except RuntimeError:  # not (or no longer) held by this thread
            break
        depth += 1
    try:
        yield
    finally:
        for _ in range(depth):
            lock.acquire()


# == snapshots of deployments ==============================================================================


@dataclass(frozen=True)
class IntegrationResponse:
    status_code: str
    selection_pattern: str
    templates: Mapping[str, str]
    parameters: Mapping[str, str]


@dataclass(frozen=True)
class Integration:
    type: str
    uri: str
    request_templates: Mapping[str, str] = field(default_factory=dict)
    responses: tuple[IntegrationResponse, ...] = ()


@dataclass(frozen=True)
class Route:
    resource_id: str
    path: str  # the resource path: "/", "/auth/login", "/cars/{id}", "/{proxy+}"
    methods: Mapping[str, Integration | None]  # HTTP method (or ANY) → its integration

    @property
    def parts(self) -> tuple[str, ...]:
        return tuple(p for p in self.path.split("/") if p)


@dataclass(frozen=True)
class DeployedApi:
    api_id: str
    routes: tuple[Route, ...]
    binary_media_types: tuple[str, ...] = ()


def snapshot_api(api: Any) -> DeployedApi:
    """The routes of a moto RestAPI as they are now (call with the sandbox lock held)."""
    routes = []
    for resource in list(api.resources.values()):
        methods: dict[str, Integration | None] = {}
        for method_name, method in resource.resource_methods.items():
            integration = method.method_integration
            if integration is None:
                methods[method_name.upper()] = None
                continue
            responses = tuple(
                IntegrationResponse(
                    str(r.status_code),
                    str(r.selection_pattern or ""),
                    {k: str(v) for k, v in (r.response_templates or {}).items() if v is not None},
                    {k: str(v) for k, v in (r.response_parameters or {}).items()},
                )
                for r in (integration.integration_responses or {}).values()
            )
            methods[method_name.upper()] = Integration(
                str(integration.integration_type or "").upper(),
                str(integration.uri or ""),
                {k: str(v) for k, v in (integration.request_templates or {}).items() if v is not None},
                responses,
            )
        routes.append(Route(resource.id, resource.get_path(), methods))
    return DeployedApi(api.id, tuple(routes), tuple(str(t) for t in (api.binaryMediaTypes or [])))


def match_route(api: DeployedApi, method: str, path: str) -> tuple[Route, Integration | None, dict[str, str]] | None:
    """The resource and integration for a (decoded) path, and the path parameters; None when nothing matches."""
    parts = [p for p in path.split("/") if p]
    best: tuple[tuple[int, ...], Route, Integration | None, dict[str, str]] | None = None
    for route in api.routes:
        if method in route.methods:
            integration = route.methods[method]
        elif "ANY" in route.methods:
            integration = route.methods["ANY"]
        else:
            continue
        matched = _match_parts(route.parts, parts)
        if matched is None:
            continue
        rank, params = matched
        if best is None or rank < best[0]:
            best = (rank, route, integration, params)
    return None if best is None else (best[1], best[2], best[3])


def _match_parts(template: tuple[str, ...], parts: list[str]) -> tuple[tuple[int, ...], dict[str, str]] | None:
    """(rank, params) when ``parts`` fit ``template``; a lower rank is more specific (literal < {x} < {x+})."""
    params: dict[str, str] = {}
    rank: list[int] = []
    for index, piece in enumerate(template):
        if piece.startswith("{") and piece.endswith("+}"):
            if index != len(template) - 1 or index >= len(parts):
                return None
            params[piece[1:-2]] = "/".join(parts[index:])
            rank.append(2)
            return tuple(rank), params
        if index >= len(parts):
            return None
        if piece.startswith("{") and piece.endswith("}"):
            params[piece[1:-1]] = parts[index]
            rank.append(1)
        elif piece == parts[index]:
            rank.append(0)
        else:
            return None
    if len(parts) != len(template):
        return None
    return tuple(rank), params


# == the proxy formats =====================================================================================


@dataclass(frozen=True)
class HttpRequest:
    method: str
    path: str  # after the stage, decoded: "/auth/login"
    query: str
    headers: list[tuple[str, str]]
    body: bytes
    source_ip: str


@dataclass(frozen=True)
class HttpAnswer:
    status: int
    headers: list[tuple[str, str]]
    body: bytes


class MalformedProxyResponse(Exception):
    """The function's answer is not a Lambda proxy response."""


def _is_binary(content_type: str, binary_media_types: tuple[str, ...]) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return bool(media) and any(fnmatch.fnmatchcase(media, pattern.lower()) for pattern in binary_media_types)


def _request_time(now: datetime) -> str:
    return f"{now:%d}/{MONTHS[now.month - 1]}/{now:%Y:%H:%M:%S} +0000"


def proxy_event(
    request: HttpRequest,
    *,
    api: DeployedApi,
    route: Route,
    stage: str,
    stage_variables: Mapping[str, str],
    path_parameters: Mapping[str, str],
    request_id: str,
    port: int,
) -> dict[str, Any]:
    """The REST API (v1) Lambda proxy event for a request."""
    multi_headers: dict[str, list[str]] = {}
    for name, value in request.headers:
        if name.lower() in HOP_BY_HOP:
            continue
        multi_headers.setdefault(name, []).append(value)
    forwarded_name = next((k for k in multi_headers if k.lower() == "x-forwarded-for"), "X-Forwarded-For")
    forwarded = multi_headers.get(forwarded_name, [])
    multi_headers[forwarded_name] = [", ".join([*forwarded, request.source_ip])]
    present = {k.lower() for k in multi_headers}
    for name, value in (("X-Forwarded-Port", str(port)), ("X-Forwarded-Proto", "http")):
        if name.lower() not in present:
            multi_headers[name] = [value]
    headers = {name: values[-1] for name, values in multi_headers.items()}
    multi_query: dict[str, list[str]] = {}
    for name, value in parse_qsl(request.query, keep_blank_values=True):
        multi_query.setdefault(name, []).append(value)
    content_type = next((v for k, v in headers.items() if k.lower() == "content-type"), "")
    body: str | None
    encoded = False
    if not request.body:
        body = None
    elif _is_binary(content_type, api.binary_media_types):
        body, encoded = base64.b64encode(request.body).decode("ascii"), True
    else:
        try:
            body = request.body.decode("utf-8")
        except UnicodeDecodeError:
            body, encoded = base64.b64encode(request.body).decode("ascii"), True
    now = datetime.now(UTC)
    user_agent = next((v for k, v in headers.items() if k.lower() == "user-agent"), None)
    host = next((v for k, v in headers.items() if k.lower() == "host"), f"127.0.0.1:{port}")
    return {
        "resource": route.path,
        "path": request.path,
        "httpMethod": request.method,
        "headers": headers,
        "multiValueHeaders": multi_headers,
        "queryStringParameters": {k: v[-1] for k, v in multi_query.items()} or None,
        "multiValueQueryStringParameters": multi_query or None,
        "pathParameters": dict(path_parameters) or None,
        "stageVariables": dict(stage_variables) or None,
        "requestContext": {
            "resourceId": route.resource_id,
            "resourcePath": route.path,
            "httpMethod": request.method,
            "extendedRequestId": base64.b32encode(uuid.uuid4().bytes).decode("ascii")[:16],
            "requestTime": _request_time(now),
            "requestTimeEpoch": int(now.timestamp() * 1000),
            "path": f"/{stage}{request.path}",
            "accountId": ACCOUNT_ID,
            "protocol": "HTTP/1.1",
            "stage": stage,
            "domainPrefix": host.split(".", 1)[0] if HOST_STYLE.match(host) else api.api_id,
            "domainName": host.split(":", 1)[0],
            "requestId": request_id,
            "apiId": api.api_id,
            "identity": {
                "cognitoIdentityPoolId": None,
                "accountId": None,
                "cognitoIdentityId": None,
                "caller": None,
                "sourceIp": request.source_ip,
                "principalOrgId": None,
                "accessKey": None,
                "cognitoAuthenticationType": None,
                "cognitoAuthenticationProvider": None,
                "userArn": None,
                "userAgent": user_agent,
                "user": None,
            },
        },
        "body": body,
        "isBase64Encoded": encoded,
    }


def _header_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float):
        return str(value)
    raise MalformedProxyResponse(f"a header value is a {type(value).__name__}")


def proxy_answer(payload: bytes) -> HttpAnswer:
    """The HTTP answer for a Lambda proxy response; MalformedProxyResponse when it is not one."""
    try:
        response = json.loads(payload)
    except ValueError:
        raise MalformedProxyResponse("not JSON") from None
    if not isinstance(response, dict):
        raise MalformedProxyResponse(f"a JSON {type(response).__name__}, not an object")
    unknown = set(response) - PROXY_RESPONSE_KEYS
    if unknown:
        raise MalformedProxyResponse(f"unexpected field(s) {', '.join(sorted(unknown))}")
    status = response.get("statusCode")
    if isinstance(status, str) and status.isdigit():
        status = int(status)
    if not isinstance(status, int) or isinstance(status, bool) or not 100 <= status <= 599:
        raise MalformedProxyResponse("statusCode is missing or not an HTTP status")
    merged: dict[str, tuple[str, list[str]]] = {}  # lower-case name → (name, values)
    headers = response.get("headers")
    if headers is not None:
        if not isinstance(headers, dict):
            raise MalformedProxyResponse("headers is not an object")
        for name, value in headers.items():
            if value is not None:
                merged[name.lower()] = (name, [_header_value(value)])
    multi = response.get("multiValueHeaders")
    if multi is not None:
        if not isinstance(multi, dict):
            raise MalformedProxyResponse("multiValueHeaders is not an object")
        for name, values in multi.items():
            if values is None:
                continue
            if not isinstance(values, list):
                raise MalformedProxyResponse("a multiValueHeaders value is not a list")
            merged[name.lower()] = (name, [_header_value(v) for v in values])
    body = response.get("body")
    if body is not None and not isinstance(body, str):
        raise MalformedProxyResponse("body is not a string")
    is_base64 = response.get("isBase64Encoded")
    if is_base64 is not None and not isinstance(is_base64, bool):
        raise MalformedProxyResponse("isBase64Encoded is not a boolean")
    data = (body or "").encode("utf-8")
    if is_base64 and body:
        try:
            data = base64.b64decode(body, validate=True)
        except (binascii.Error, ValueError):
            raise MalformedProxyResponse("body is marked base64 but is not") from None
    out = [(name, value) for name, values in merged.values() for value in values]
    if "content-type" not in merged:
        out.append(("Content-Type", "application/json"))
    return HttpAnswer(status, out, data)


def mock_answer(integration: Integration) -> HttpAnswer:
    """A MOCK integration's answer: the integration response its request template's statusCode selects."""
    template = integration.request_templates.get("application/json")
    if template is None and integration.request_templates:
        template = next(iter(integration.request_templates.values()))
    status = "200"
    with contextlib.suppress(ValueError, TypeError, KeyError):
        status = str(int(json.loads(template or "{}")["statusCode"]))
    chosen = next(
        (r for r in integration.responses if r.selection_pattern and re.fullmatch(r.selection_pattern, status)),
        None,
    ) or next((r for r in integration.responses if not r.selection_pattern), None)
    if chosen is None:
        return gateway_error(500, "Internal server error")
    headers = []
    for key, value in chosen.parameters.items():
        if key.startswith("method.response.header.") and len(value) >= 2 and value[0] == value[-1] == "'":
            headers.append((key.removeprefix("method.response.header."), value[1:-1]))
    if not any(name.lower() == "content-type" for name, _ in headers):
        headers.append(("Content-Type", "application/json"))
    body = chosen.templates.get("application/json", next(iter(chosen.templates.values()), ""))
    return HttpAnswer(int(chosen.status_code), headers, body.encode("utf-8"))


def gateway_error(status: int, message: str, error_type: str = "") -> HttpAnswer:
    headers = [("Content-Type", "application/json")]
    if error_type:
        headers.append(("x-amzn-ErrorType", error_type))
    return HttpAnswer(status, headers, json.dumps({"message": message}).encode("utf-8"))


# == the extension =========================================================================================


def invoke_qualifier(headers: Any, moto_qualifier: str | None) -> str | None:
    """Invoke's ``Qualifier`` query parameter. Moto looks for ``qualifier`` (lower case) in the query and then
    in the JSON payload, so it misses the real one and may take an event field for it; the WSGI environ
    behind the request's headers has the query string as sent."""
    environ = getattr(headers, "environ", None)
    if not isinstance(environ, dict):
        return moto_qualifier
    values = parse_qs(str(environ.get("QUERY_STRING", ""))).get("Qualifier")
    return values[0] if values else None


class LambdaServiceError(LambdaClientError):
    """An Invoke API error Lambda answers with a 5xx (InvalidZipFileException, InvalidRuntimeException...)."""

    code = 502


@dataclass(frozen=True)
class _Resolved:
    code: FunctionCode
    invoked_arn: str
    qualifier: str | None = None  # as invoked: a version, an alias, $LATEST or none


class ApiGatewayLambda:
    name = "apigw-lambda"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.runtime = LambdaRuntime(
            settings.state_dir / "lambda",
            region=settings.region,
            endpoint_url=settings.endpoint_url,
            modules=partial(lambda_modules, settings.root / "deploy.toml"),
        )
        self.sandbox: Sandbox | None = None
        self.deployed: dict[tuple[str, str], DeployedApi] = {}  # (api id, deployment id) → routes
        self._server: ApiServer | None = None
        self._thread: threading.Thread | None = None
        self._server_error = ""
        self._async = ThreadPoolExecutor(max_workers=4, thread_name_prefix="lambda-event")
        self._metrics = ServiceMetrics()

    # -- install: moto's Invoke runs the code; deployments are snapshots ------------------------------------
    def install(self, sandbox: Sandbox) -> None:
        self.sandbox = sandbox
        lambda_backend = sandbox.backend("lambda")
        apigw_backend = sandbox.backend("apigateway")

        def invoke(
            function_name: str, qualifier: str | None, body: Any, headers: Any, response_headers: dict[str, str]
        ) -> bytes:
            return self._api_invoke(function_name, qualifier, body, headers, response_headers)

        original_create_deployment = apigw_backend.create_deployment

        def create_deployment(function_id: str, name: str, description: str = "", stage_variables: Any = None) -> Any:
            api = apigw_backend.get_rest_api(function_id)
            previous = api.stages.get(name) if name else None
            deployment = original_create_deployment(function_id, name, description, stage_variables)
            self.deployed[(function_id, deployment.id)] = snapshot_api(api)
            if previous is not None:
                previous.deployment_id = deployment.id
                previous.variables.update(stage_variables or {})
                api.stages[name] = previous
            return deployment

        lambda_backend.invoke = invoke
        apigw_backend.create_deployment = create_deployment
        _keep_logging_config()
        _versions_as_aws()
        _updates_as_aws(lambda_backend, lambda: sandbox.faults.lambda_update_seconds)
        _mappings_as_aws(lambda_backend, partial(_event_sources, sandbox))
        provisioned.install(
            lambda_backend,
            provisioned.Timing(lambda: self.settings.provisioned_concurrency_seconds, self._initialize, sandbox.lock),
        )

    # -- Lambda ----------------------------------------------------------------------------------------------
    def resolve(self, function: str, qualifier: str | None = None) -> _Resolved:
        """The version a name or ARN (optionally ``:qualifier``) runs now. Call with the sandbox lock held."""
        assert self.sandbox is not None
        backend = self.sandbox.backend("lambda")
        name = function.split(":function:", 1)[1] if ":function:" in function else function  # ARN, partial ARN
        if ":" in name:
            name, qualifier = name.split(":", 1)
        latest = backend.get_function(name)  # raises moto's ResourceNotFoundException
        unqualified = str(latest.function_arn)
        if qualifier in (None, "", "$LATEST"):
            fn = latest
        elif qualifier.isdigit():
            fn = backend.get_function(name, qualifier)
        else:
            backend.get_function(name, qualifier)  # an unknown alias: Lambda's ResourceNotFoundException
            alias = backend.get_alias(qualifier, name)
            version = str(alias.function_version)
            weights = (alias.routing_config or {}).get("AdditionalVersionWeights") or {}
            roll, total = random.random(), 0.0
            for extra, weight in weights.items():
                total += float(weight)
                if roll < total:
                    version = str(extra)
                    break
            fn = latest if version == "$LATEST" else backend.get_function(name, version)
        invoked = f"{unqualified}:{qualifier}" if qualifier else unqualified
        return _Resolved(function_code(fn, unqualified), invoked, qualifier or None)

    def _initialize(self, backend: Any, function_name: str, version: str) -> str | None:
        """Run the init of a version's code in a warm worker, as provisioned concurrency does (called without the
        sandbox lock); its error (``RuntimeError: ...``), its log filed in CloudWatch Logs, else None."""
        assert self.sandbox is not None
        with self.sandbox.lock:
            fn = backend.get_function(function_name, version)
            code = function_code(fn, str(backend.get_function(function_name).function_arn))
        failed = self.runtime.initialize(code)
        if failed is None:
            return None
        with self.sandbox.lock:  # its log where the function's go, as Lambda files an environment's failed init
            self._save_logs(code, failed)
        error = failed.error or {}
        return f"{error.get('errorType', 'Runtime.Unknown')}: {error.get('errorMessage', '')}"

    def invoke(self, resolved: _Resolved, event: Any) -> InvokeResult:
        """Run a resolved function (without the sandbox lock), then file its log and metrics (:meth:`_file`)."""
        assert self.sandbox is not None
        with released(self.sandbox.lock):
            result = self.runtime.invoke(resolved.code, event, invoked_arn=resolved.invoked_arn)
        self._file(resolved, result)
        return result

    def _file(self, resolved: _Resolved, result: InvokeResult) -> None:
        """What Lambda keeps of an invocation: its log in CloudWatch Logs, its metrics in CloudWatch."""
        assert self.sandbox is not None
        with self.sandbox.lock:
            self._save_logs(resolved.code, result)
            self._save_metrics(resolved, result)

    def _save_metrics(self, resolved: _Resolved, result: InvokeResult) -> None:
        """The invocation's ``AWS/Lambda`` metrics, as Lambda puts them: Invocations, Errors and Duration by
        FunctionName; by FunctionName and Resource (``<name>:<qualifier>``) when invoked with a qualifier; and, through
        an alias, also by the version that ran (ExecutedVersion). Dimensions in name order."""
        assert self.sandbox is not None
        name = resolved.code.function_name
        function = {"Name": "FunctionName", "Value": name}
        sets = [[function]]
        qualifier = resolved.qualifier
        if qualifier and qualifier != "$LATEST":
            resource = {"Name": "Resource", "Value": f"{name}:{qualifier}"}
            sets.append([function, resource])
            if not qualifier.isdigit():
                sets.append([{"Name": "ExecutedVersion", "Value": resolved.code.version}, function, resource])
        data = []
        for dimensions in sets:
            data += [
                {"MetricName": "Invocations", "Value": 1, "Unit": "Count", "Dimensions": dimensions},
                {
                    "MetricName": "Errors",
                    "Value": int(bool(result.function_error)),
                    "Unit": "Count",
                    "Dimensions": dimensions,
                },
                {
                    "MetricName": "Duration",
                    "Value": result.duration_ms,
                    "Unit": "Milliseconds",
                    "Dimensions": dimensions,
                },
            ]
        try:
            self._metrics.put(self.sandbox.backend("cloudwatch"), "AWS/Lambda", data)
        except Exception:  # metrics are a convenience: never fail an invocation over them
            log.debug("could not put the metrics of %s in CloudWatch", name, exc_info=True)

    def _save_logs(self, code: FunctionCode, result: InvokeResult) -> None:
        assert self.sandbox is not None
        try:
            logs = self.sandbox.backend("logs")
            group = code.log_group or f"/aws/lambda/{code.function_name}"
            stream = f"{datetime.now(UTC):%Y/%m/%d}/[{code.version}]{result.request_id.replace('-', '')}"
            logs.ensure_log_group(group)
            logs.create_log_stream(group, stream)
            now = int(time.time() * 1000)
            events = [{"timestamp": now, "message": line} for line in result.log.splitlines() if line]
            if events:
                logs.put_log_events(group, stream, events)
        except Exception:  # logs are a convenience: never fail an invocation over them
            log.debug("could not file the log of %s in CloudWatch Logs", code.function_name, exc_info=True)

    def _api_invoke(
        self, function_name: str, qualifier: str | None, body: Any, headers: Any, response_headers: dict[str, str]
    ) -> bytes:
        """Lambda's Invoke, called by moto with the sandbox lock held."""
        invocation_type = headers.get("X-Amz-Invocation-Type") or "RequestResponse"
        resolved = self.resolve(function_name, invoke_qualifier(headers, qualifier))
        response_headers["X-Amz-Executed-Version"] = resolved.code.version
        if invocation_type == "DryRun":
            return b""
        raw = body.decode("utf-8", "replace") if isinstance(body, bytes) else (body or "")
        try:
            event = json.loads(raw) if raw.strip() else {}
        except ValueError as exc:
            raise LambdaClientError(
                "InvalidRequestContentException", f"Could not parse request body into json: {exc}"
            ) from None
        if invocation_type == "Event":
            self._async.submit(self._event_invoke, resolved, event)
            return b""
        try:
            result = self.invoke(resolved, event)
        except CodeError as exc:
            raise LambdaServiceError(exc.code, exc.message) from None
        if result.function_error:
            response_headers["X-Amz-Function-Error"] = result.function_error
        response_headers["x-amz-log-result"] = result.log_tail  # moto drops it unless LogType=Tail
        response_headers["Content-Length"] = str(len(result.payload))
        return result.payload

    def _event_invoke(self, resolved: _Resolved, event: Any) -> None:
        assert self.sandbox is not None
        try:
            result = self.runtime.invoke(resolved.code, event, invoked_arn=resolved.invoked_arn)
            self._file(resolved, result)
        except Exception:
            log.exception("asynchronous invocation of %s failed", resolved.invoked_arn)

    # -- API Gateway -----------------------------------------------------------------------------------------
    def handle(self, api_id: str, stage_name: str, request: HttpRequest, request_id: str) -> tuple[HttpAnswer, str]:
        """The answer of a stage to a request, and a short note for the access log."""
        assert self.sandbox is not None
        with self.sandbox.lock:
            backend = self.sandbox.backend("apigateway")
            api = backend.apis.get(api_id)
            stage = api.stages.get(stage_name) if api is not None else None
            if api is None or stage is None:
                return gateway_error(403, "Forbidden", "ForbiddenException"), "no such API or stage"
            deployed = self.deployed.get((api_id, str(stage.deployment_id)))
            if deployed is None:
                if stage.deployment_id not in api.deployments:
                    return gateway_error(403, "Forbidden", "ForbiddenException"), "stage has no deployment"
                deployed = snapshot_api(api)
            stage_variables = {str(k): str(v) for k, v in (stage.variables or {}).items()}
            matched = match_route(deployed, request.method, request.path)
            if matched is None:
                answer = gateway_error(403, "Missing Authentication Token", "MissingAuthenticationTokenException")
                return answer, "no route"
            route, integration, params = matched
            if integration is None:
                return gateway_error(500, "Internal server error", "InternalServerErrorException"), "no integration"
            if integration.type == "MOCK":
                return mock_answer(integration), "mock"
            target = LAMBDA_URI.match(STAGE_VARIABLE.sub(lambda m: stage_variables.get(m[1], ""), integration.uri))
            if integration.type != "AWS_PROXY" or target is None:
                log.warning(
                    "%s %s: the sandbox does not run %s integrations", request.method, route.path, integration.type
                )
                return gateway_error(500, "Internal server error", "InternalServerErrorException"), "unsupported"
            try:
                resolved = self.resolve(target["function"])
            except Exception as exc:
                log.warning("%s %s: cannot resolve %s: %s", request.method, route.path, target["function"], exc)
                return gateway_error(500, "Internal server error", "InternalServerErrorException"), "no function"
        event = proxy_event(
            request,
            api=deployed,
            route=route,
            stage=stage_name,
            stage_variables=stage_variables,
            path_parameters=params,
            request_id=request_id,
            port=self.settings.api_port,
        )
        function = f"{resolved.code.function_name}:{resolved.code.version}"
        try:
            result = self.invoke(resolved, event)
        except CodeError as exc:
            log.warning("%s %s: %s cannot run: %s", request.method, route.path, function, exc.message)
            return gateway_error(500, "Internal server error", "InternalServerErrorException"), function
        if result.function_error:
            error = result.error or {}
            log.warning("%s %s: %s failed: %s", request.method, route.path, function, error.get("errorType"))
            return gateway_error(502, "Internal server error", "InternalServerErrorException"), function
        try:
            answer = proxy_answer(result.payload)
        except MalformedProxyResponse as exc:
            log.warning("%s %s: %s: malformed Lambda proxy response (%s)", request.method, route.path, function, exc)
            return gateway_error(502, "Internal server error", "InternalServerErrorException"), function
        return answer, function

    # -- lifecycle -------------------------------------------------------------------------------------------
    def start(self) -> None:
        try:
            self._server = ApiServer(("127.0.0.1", self.settings.api_port), ApiHandler, self)
        except OSError as exc:
            self._server_error = f"cannot listen on 127.0.0.1:{self.settings.api_port}: {exc}"
            log.error("API Gateway stages: %s", self._server_error)
            return
        self._thread = serving(self._server, "apigw")
        log.info("API Gateway stages serving on http://127.0.0.1:%s", self.settings.api_port)

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._async.shutdown(wait=False, cancel_futures=True)
        self.runtime.stop()

    def status(self) -> list[PartStatus]:
        assert self.sandbox is not None
        with self.sandbox.lock:
            apis = list(self.sandbox.backend("apigateway").apis.values())
            stages = sum(len(api.stages) for api in apis)
            functions = len(list(self.sandbox.backend("lambda").list_functions()))
        address = f"http://127.0.0.1:{self.settings.api_port}"
        serving = self._server is not None and not self._server_error
        detail = f"{len(apis)} APIs, {stages} stages" if serving else self._server_error or "not started"
        workers = self.runtime.worker_count()
        return [
            PartStatus("api gateway", address, serving, detail),
            PartStatus("lambda runtime", str(self.runtime.code_root), True, f"{functions} functions, {workers} warm"),
        ]


def _versions_as_aws() -> None:
    """Published versions as AWS keeps them (once per process). A version's number is never used again, even once
    that version is deleted: moto numbered a new one len(versions) + 1, so after `inv lambda.cleanup` a publish
    took the number of a version still there. And a version an alias routes to (its version, or a weighted share)
    cannot be deleted: ResourceConflictException, as AWS answers."""
    from moto.awslambda.models import LambdaStorage

    if getattr(LambdaStorage, "_sandbox_versions", False):
        return
    LambdaStorage._sandbox_versions = True  # type: ignore[attr-defined]
    original_publish = LambdaStorage.publish_version
    original_delete = LambdaStorage.del_function

    def numbers(storage: Any) -> dict[str, int]:  # function name → the highest number it ever published
        return storage.__dict__.setdefault("_sandbox_numbers", {})  # type: ignore[no-any-return]

    def publish_version(self: Any, name_or_arn: str, description: str = "") -> Any:
        name = self.get_function_by_name_or_arn_forbid_qualifier(name_or_arn).function_name
        versions = (self._functions.get(name) or {}).get("versions") or []
        used = max([numbers(self).get(name, 0), *(int(v.version) for v in versions)])
        before = len(versions)
        fn = original_publish(self, name_or_arn, description)
        if fn is not None and len(versions) > before:  # a new version, not the unchanged latest one
            if int(fn.version) != used + 1:
                del self._arns[fn.function_arn]
                fn.set_version(used + 1)
                self._arns[fn.function_arn] = fn
            numbers(self)[name] = used + 1
        return fn

    def del_function(self: Any, name_or_arn: str, qualifier: str | None = None) -> None:
        fn = self.get_function_by_name_or_arn_with_qualifier(name_or_arn, qualifier)
        if qualifier and qualifier != "$LATEST":
            routing = [
                alias.name
                for alias in self._get_function_aliases(fn.function_name).values()
                if str(alias.function_version) == str(qualifier)
                or str(qualifier) in ((alias.routing_config or {}).get("AdditionalVersionWeights") or {})
            ]
            if routing:
                error = LambdaClientError(
                    "ResourceConflictException",
                    f"Unable to delete version because the following aliases reference it: {sorted(routing)}",
                )
                error.code = 409
                raise error
        original_delete(self, name_or_arn, qualifier)
        if not qualifier:
            numbers(self).pop(fn.function_name, None)  # a function made again numbers from 1, as on AWS

    LambdaStorage.publish_version = publish_version  # type: ignore[method-assign]
    LambdaStorage.del_function = del_function  # type: ignore[method-assign]


def _mappings_as_aws(backend: Any, sources: Callable[[], Iterable[Any]]) -> None:
    """Event source mappings (a queue's, a table stream's) as AWS keeps them: on what they name. A mapping made on an
    alias invokes the alias, whichever version it serves then (moto bound it to the alias's version when made, so a
    queue went on calling the old code after the fast path moved the alias), and ListEventSourceMappings says the
    alias's ARN; on the bare function, ``$LATEST``. A deleted mapping no longer invokes anything (moto kept calling
    it). ``sources``: the queues and tables, each holding its mappings by the ARN they invoke."""
    original_create = backend.create_event_source_mapping
    original_update = backend.update_event_source_mapping
    original_delete = backend.delete_event_source_mapping

    def named(function: str) -> str:  # the ARN of what ``function`` (a name or ARN, maybe qualified) names
        name = function.split(":function:", 1)[1] if ":function:" in function else function
        name, _, qualifier = name.partition(":")
        unqualified = str(backend.get_function(name).function_arn)
        return f"{unqualified}:{qualifier}" if qualifier and qualifier != "$LATEST" else unqualified

    def held_by(esm: Any) -> list[dict[str, Any]]:  # the mappings of the source ``esm`` reads
        return [source.lambda_event_source_mappings for source in sources() if _arn_of(source) == esm.event_source_arn]

    def rebind(esm: Any, arn: str) -> None:
        for mappings in held_by(esm):
            for key in [key for key, found in mappings.items() if found is esm]:
                del mappings[key]
            mappings[arn] = esm
        esm.function_arn = arn

    def create_event_source_mapping(spec: dict[str, Any]) -> Any:
        esm = original_create(spec)
        rebind(esm, named(str(spec["FunctionName"])))
        return esm

    def update_event_source_mapping(uuid: str, spec: dict[str, Any]) -> Any:
        esm = original_update(uuid, spec)
        if esm is not None and spec.get("FunctionName"):
            rebind(esm, named(str(spec["FunctionName"])))
        return esm

    def delete_event_source_mapping(uuid: str) -> Any:
        esm = original_delete(uuid)
        for mappings in held_by(esm) if esm is not None else ():
            for key in [key for key, found in mappings.items() if found is esm]:
                del mappings[key]
        return esm

    backend.create_event_source_mapping = create_event_source_mapping
    backend.update_event_source_mapping = update_event_source_mapping
    backend.delete_event_source_mapping = delete_event_source_mapping


UPDATE_IN_PROGRESS = "The operation cannot be performed at this time. An update is in progress for resource: {arn}"


def _updates_as_aws(backend: Any, seconds: Callable[[], float]) -> None:
    """updates_as_aws: an update of a function made through ``backend`` (its API) stays InProgress for
    ``seconds()`` (read at each update: the fault route sets it), during which updating or publishing the function
    is refused as AWS refuses it. The function's configuration reports it (a class patch, inert on functions no
    such update touched)."""
    from moto.awslambda.models import LambdaFunction

    def busy(fn: Any) -> bool:
        return bool(time.monotonic() < getattr(fn, "_sandbox_busy_until", 0.0))

    def idle(name: str, qualifier: str | None = None) -> Any:
        """The function, once it is not being updated; ResourceConflictException (409) while it is."""
        fn = backend.get_function(name, qualifier)
        if busy(fn):
            error = LambdaClientError("ResourceConflictException", UPDATE_IN_PROGRESS.format(arn=fn.function_arn))
            error.code = 409
            raise error
        return fn

    def begin(name: str, qualifier: str | None) -> None:
        fn = idle(name, qualifier)
        if seconds() > 0:
            fn._sandbox_busy_until = time.monotonic() + seconds()

    original_code = backend.update_function_code
    original_configuration = backend.update_function_configuration
    original_publish = backend.publish_version

    def update_function_code(function_name: str, qualifier: str, body: dict[str, Any]) -> Any:
        begin(function_name, qualifier)
        return original_code(function_name, qualifier, body)

    def update_function_configuration(function_name: str, qualifier: str, body: dict[str, Any]) -> Any:
        begin(function_name, qualifier)
        return original_configuration(function_name, qualifier, body)

    def publish_version(function_name: str, description: str = "") -> Any:
        idle(function_name)
        return original_publish(function_name, description)

    backend.update_function_code = update_function_code
    backend.update_function_configuration = update_function_configuration
    backend.publish_version = publish_version
    if getattr(LambdaFunction, "_sandbox_updates", False):
        return
    LambdaFunction._sandbox_updates = True  # type: ignore[attr-defined]
    original_get = LambdaFunction.get_configuration

    def get_configuration(self: Any, on_create: bool = False) -> dict[str, Any]:
        config = dict(original_get(self, on_create))
        if busy(self):
            config["LastUpdateStatus"] = "InProgress"
        return config

    LambdaFunction.get_configuration = get_configuration  # type: ignore[method-assign]


def _keep_logging_config() -> None:
    """logging_config: keep each function's LoggingConfig on moto's function objects (once per process)."""
    from moto.awslambda.models import LambdaFunction

    if getattr(LambdaFunction, "_sandbox_logging_config", False):
        return
    LambdaFunction._sandbox_logging_config = True  # type: ignore[attr-defined]
    original_init = LambdaFunction.__init__
    original_update = LambdaFunction.update_configuration
    original_get = LambdaFunction.get_configuration

    def logging_config(fn: Any, given: Any) -> dict[str, str]:
        given = dict(given or {})
        return {
            "LogFormat": str(given.get("LogFormat") or "Text"),
            "LogGroup": str(given.get("LogGroup") or f"/aws/lambda/{fn.function_name}"),
            **{k: str(v) for k, v in given.items() if k in ("ApplicationLogLevel", "SystemLogLevel")},
        }

    def init(self: Any, account_id: str, spec: dict[str, Any], region: str, version: Any = 1) -> None:
        original_init(self, account_id, spec, region, version)
        self.logging_config = logging_config(self, spec.get("LoggingConfig"))

    def update_configuration(self: Any, config_updates: dict[str, Any]) -> dict[str, Any]:
        if "LoggingConfig" in config_updates:  # absent: unchanged, as UpdateFunctionConfiguration
            self.logging_config = logging_config(self, config_updates["LoggingConfig"])
        return dict(original_update(self, config_updates))

    def get_configuration(self: Any, on_create: bool = False) -> dict[str, Any]:
        config = dict(original_get(self, on_create))
        config["LoggingConfig"] = dict(getattr(self, "logging_config", None) or logging_config(self, None))
        return config

    LambdaFunction.__init__ = init  # type: ignore[method-assign]
    LambdaFunction.update_configuration = update_configuration  # type: ignore[method-assign]
    LambdaFunction.get_configuration = get_configuration  # type: ignore[method-assign]


def _arn_of(source: Any) -> str | None:
    """A queue's ARN, or a table's stream's."""
    if hasattr(source, "queue_arn"):
        return str(source.queue_arn)
    return (source.describe().get("TableDescription") or {}).get("LatestStreamArn")


def _event_sources(sandbox: Sandbox) -> list[Any]:
    """The queues and the tables (their streams) whose records moto hands to the mappings they hold."""
    tables = sandbox.backend("dynamodb").tables.values()
    return [*sandbox.backend("sqs").queues.values(), *(t for t in tables if getattr(t, "stream_shard", None))]


def function_code(fn: Any, unqualified_arn: str) -> FunctionCode:
    """What a moto LambdaFunction (one version of it) runs."""
    code = bytes(getattr(fn, "code_bytes", b"") or b"")
    digest = str(getattr(fn, "code_digest", "") or "") or (hashlib.sha256(code).hexdigest() if code else "")
    environment = tuple(sorted((str(k), str(v)) for k, v in (fn.environment_vars or {}).items()))
    return FunctionCode(
        function_name=fn.function_name,
        version=str(fn.version),
        function_arn=unqualified_arn,
        handler=str(fn.handler or ""),
        runtime=str(fn.run_time or ""),
        code_sha256=digest,
        code=code,
        environment=environment,
        timeout=float(fn.timeout or 3),
        memory_size=int(fn.memory_size or 128),
        package_type=str(fn.package_type or "Zip"),
        log_group=str((getattr(fn, "logging_config", None) or {}).get("LogGroup") or ""),
    )


# == the HTTP server =======================================================================================


class ApiServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(
        self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler], extension: ApiGatewayLambda
    ) -> None:
        self.extension = extension
        super().__init__(address, handler)


class ApiHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: ApiServer

    def log_message(self, format: str, *args: Any) -> None:
        return

    def _serve(self) -> None:
        started = time.monotonic()
        request_id = str(uuid.uuid4())
        split = urlsplit(self.path)
        host = self.headers.get("Host", "")
        by_host = HOST_STYLE.match(host)
        by_path = PATH_STYLE.match(split.path)
        try:
            body = self._read_body()
        except ValueError:  # a malformed chunk size or Content-Length
            self.close_connection = True
            self._send(gateway_error(400, "Bad Request"), request_id)
            return
        if body is None:
            self._send(gateway_error(413, "Request Too Long"), request_id)
            return
        if by_path is not None:
            api_id, stage, path = by_path["api"], by_path["stage"], by_path["path"] or "/"
        elif by_host is not None and split.path.strip("/"):
            api_id = by_host["api"]
            stage, _, rest = split.path.lstrip("/").partition("/")
            path = "/" + rest
        else:
            hint = "use /restapis/<api_id>/<stage>/_user_request_/<path>, or Host: <api_id>.execute-api.localhost"
            answer = HttpAnswer(404, [("Content-Type", "application/json")], json.dumps({"message": hint}).encode())
            self._send(answer, request_id)
            return
        request = HttpRequest(
            method=self.command,
            path=unquote(path),
            query=split.query,
            headers=list(self.headers.items()),
            body=body,
            source_ip=self.client_address[0],
        )
        try:
            answer, note = self.server.extension.handle(api_id, stage, request, request_id)
        except Exception:
            log.exception("%s %s failed in the sandbox", self.command, split.path)
            answer, note = gateway_error(500, "Internal server error", "InternalServerErrorException"), "sandbox error"
        self._send(answer, request_id)
        log.info(
            "%s /%s/%s%s → %s (%s, %.0f ms)",
            self.command,
            api_id,
            stage,
            path,
            answer.status,
            note,
            (time.monotonic() - started) * 1000,
        )

    def _read_body(self) -> bytes | None:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks = []
            size = 0
            while True:
                line = self.rfile.readline(65537)
                length = int(line.split(b";", 1)[0].strip() or b"0", 16)
                if length == 0:
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass
                    break
                size += length
                if size > MAX_BODY:
                    self.close_connection = True
                    return None
                chunks.append(self.rfile.read(length))
                self.rfile.readline(3)
            return b"".join(chunks)
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            self.close_connection = True
            return None
        return self.rfile.read(length) if length > 0 else b""

    def _send(self, answer: HttpAnswer, request_id: str) -> None:
        self.send_response(answer.status)
        for name, value in answer.headers:
            if name.lower() not in HOP_BY_HOP and name.lower() != "content-length":
                self.send_header(name, value)
        self.send_header("x-amzn-RequestId", request_id)
        self.send_header("Content-Length", str(len(answer.body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(answer.body)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _serve
