"""The sandbox process: moto in server mode on 127.0.0.1, extended, plus the runtimes it drives.

One process holds moto's in-memory backends and the extensions that make them real (ECS tasks as
containers, ALB listeners, the registry front, API Gateway stages). Moto's request handling and the
extensions' reconcilers share one lock, so a reconciler never sees a half-applied API call.

Run by ``inv sandbox.up`` as ``python -m sandbox serve --config deploy.toml``.

Besides AWS, the endpoint answers two routes of its own (``sandbox.settings``):

- ``GET /_sandbox/status``: each part and its health (``inv sandbox.status``); the answer's
  ``X-Deploykit-Sandbox-Pid`` header is the server's pid (how ``sandbox.lifecycle`` knows the server it started).
- ``/_sandbox/faults``: fault injection, for fault tests and demos. ``POST`` a JSON body
  ``{"throttle": {"service": "ecs", "operation": "UpdateService", "count": 3}}`` (or a list of such) and the
  next ``count`` AWS requests of that operation are refused the way AWS refuses a request over its rate, then
  the service answers normally again. ``operation`` is optional (every operation of the service) and
  ``count`` defaults to 1; ``service`` is a boto3 client name (``ecs``, ``elbv2``, ``lambda``...) or the
  signing name of the credential scope (``elasticloadbalancing``), and an operation the service does not
  have is refused (400). ``GET`` lists the faults still to fire (``{"throttle": [{"service", "operation",
  "count"}]}``, ``count`` being what remains), ``DELETE`` clears them all. ``sandbox.lifecycle`` has a client:
  ``inject_throttling(settings, "ecs", "UpdateService", count=3)``, ``clear_faults(settings)``.

  A request's service is the one its SigV4 credential scope names (``Credential=AKID/20261128/us-east-1/
  ecs/aws4_request``, in the Authorization header or a presigned URL's ``X-Amz-Credential``); its
  operation is the ``X-Amz-Target`` header's (JSON protocol: ECS, ECR, Cognito...), the ``Action`` of the
  query string or form body (query protocol: CloudFormation, ELBv2, STS), or, for REST protocols (Lambda,
  API Gateway, S3), the operation of the service's botocore model whose method and URI match. A throttled
  request is answered as AWS answers it, so botocore classifies it as throttling and retries it with backoff
  (standard and adaptive modes): JSON protocol 400 ``{"__type": "ThrottlingException", "message": "Rate
  exceeded"}``; query protocol 400 ``<ErrorResponse><Error><Type>Sender</Type><Code>Throttling</Code>...``;
  rest-json 429 with ``x-amzn-ErrorType: TooManyRequestsException``; S3 (rest-xml) 503 ``SlowDown``. A refused
  request never reaches moto: nothing changes. Requests without a SigV4 signature are never throttled.

  ``{"lambda_update": {"seconds": 2}}`` has Lambda apply each later update of a function's code or configuration
  the way AWS does, asynchronously: for that many seconds its ``LastUpdateStatus`` is ``InProgress`` and another
  update or a ``PublishVersion`` of it is refused (409 ``ResourceConflictException``, "An update is in progress");
  AWS takes 1-5 s, moto none (0, the default, and what ``DELETE`` sets again). ``GET`` lists it while it is on
  (``"lambda_update": {"seconds": 2}``). ``lifecycle.slow_lambda_updates(settings, 2)`` is its client.

  ``{"scan_findings": {"findings": [{"name": "CVE-2026-0001", "severity": "HIGH", "package": "openssl",
  "version": "3.0.11"}], "seconds": 2}}`` is what ECR's scans of images find from then on, and how long each takes
  (sandbox.ext.ecr_registry: the sandbox is no scanner; by default a scan finds nothing, at once): a rehearsal of a
  scan gate (deploykit.scan_gate). ``severity`` is one of ECR's (CRITICAL, HIGH, MEDIUM, LOW, INFORMATIONAL,
  UNDEFINED), ``package`` and ``version`` are optional; ``{"findings": [], "seconds": 0}`` (or ``DELETE``) ends it.
  ``GET`` lists it while it is on. ``lifecycle.rehearse_image_scans(settings, findings, seconds)`` is its client.

  Only calls made over HTTP are throttled: deploykit's, the AWS CLI's, and those of the code the sandbox
  runs (task containers and Lambda functions call the endpoint, as they call AWS). The sandbox's own
  reconcilers (ECS tasks, ALB health, CloudFormation resources, the ECR registry front) call moto's backends
  in-process and are never throttled, as AWS's own control plane is not by a customer's rate limits.
"""

from __future__ import annotations

import difflib
import io
import json
import logging
import os
import re
import signal
import threading
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, Protocol
from urllib.parse import parse_qs, parse_qsl

import botocore.exceptions
import botocore.session
import docker
from moto.backends import get_backend
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
from werkzeug.serving import BaseWSGIServer, make_server

from sandbox.settings import ACCOUNT_ID, FAULTS_PATH, PID_HEADER, STATUS_PATH, Settings

log = logging.getLogger("sandbox")

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


@dataclass(frozen=True)
class PartStatus:
    part: str
    address: str
    healthy: bool
    detail: str = ""


class Extension(Protocol):
    """One thing moto falls short on, fixed. Installed before the server starts serving."""

    name: str

    def install(self, sandbox: Sandbox) -> None:
        """Patch moto (before any request)."""

    def start(self) -> None:
        """Start threads and servers."""

    def stop(self) -> None:
        """Stop them, and everything they started (containers included)."""

    def status(self) -> list[PartStatus]:
        """Parts for ``inv sandbox.status``."""


class Sandbox:
    def __init__(self, settings: Settings, docker_client: docker.DockerClient, extensions: list[Extension]) -> None:
        self.settings = settings
        self.docker = docker_client
        self.lock = threading.RLock()
        self.extensions = extensions
        self._server: BaseWSGIServer | None = None
        self._stopped = threading.Event()
        self.faults = Faults()

    def backend(self, service: str) -> Any:
        """Moto's backend of ``service`` for the sandbox's account and region."""
        return get_backend(service)[ACCOUNT_ID][self.settings.region]  # type: ignore[call-overload]

    # -- the WSGI app: moto behind the lock, plus the status and fault routes ----------------------
    def wsgi(self) -> WSGIApp:
        moto_app = DomainDispatcherApplication(create_backend_app)

        def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
            path = environ.get("PATH_INFO")
            if path == STATUS_PATH:
                mark = [(PID_HEADER, str(os.getpid()))]
                if environ.get("REQUEST_METHOD") == "HEAD":  # who answers here, asked by every deploy: no part read
                    start_response("200 OK", [*mark, ("Content-Length", "0")])
                    return [b""]
                return _json_answer(start_response, 200, [asdict(p) for p in self.status()], mark)
            if path == FAULTS_PATH:
                code, data = self.faults.control(str(environ.get("REQUEST_METHOD", "GET")), _whole_body(environ))
                return _json_answer(start_response, code, data)
            refused = self.faults.intercept(environ)
            if refused is not None:
                start_response(refused.status_line, refused.headers)
                return [refused.body]
            with self.lock:
                return list(moto_app(environ, start_response))

        return app

    def status(self) -> list[PartStatus]:
        parts = [PartStatus("aws endpoint", self.settings.endpoint_url, True, "moto, extended")]
        for extension in self.extensions:
            try:
                parts.extend(extension.status())
            except Exception as exc:  # a broken part must not hide the others
                parts.append(PartStatus(extension.name, "", False, f"status failed: {exc}"))
        injected = self.faults.describe()
        if injected:  # on purpose, so healthy; said, so a fault left on does not pass for the sandbox's own doing
            parts.append(PartStatus("faults", self.settings.endpoint_url + FAULTS_PATH, True, injected))
        return parts

    # -- lifecycle -------------------------------------------------------------------------------------
    def serve(self) -> None:
        for extension in self.extensions:
            extension.install(self)
        self._server = make_server(
            "127.0.0.1", self.settings.aws_port, self.wsgi(), threaded=True, request_handler=MotoRequestHandler
        )
        for extension in self.extensions:
            extension.start()
        signal.signal(signal.SIGTERM, lambda *_: self.shutdown())
        signal.signal(signal.SIGINT, lambda *_: self.shutdown())
        log.info("sandbox serving AWS on %s", self.settings.endpoint_url)
        thread = serving(self._server, "moto")
        self._stopped.wait()
        log.info("sandbox stopping")
        for extension in reversed(self.extensions):
            try:
                extension.stop()
            except Exception:
                log.exception("stopping %s failed", extension.name)
        self._server.shutdown()
        thread.join(timeout=10)
        log.info("sandbox stopped")

    def shutdown(self) -> None:
        self._stopped.set()


# How often a server's loop looks whether shutdown() was asked (socketserver's default, 0.5 s, is what each of the
# sandbox's five or more servers made its stop wait, one after the other: `inv sandbox.down` took about a second more)
SHUTDOWN_POLL = 0.1


def serving(server: Any, name: str) -> threading.Thread:
    """A daemon thread running ``server.serve_forever`` (a socketserver's, or werkzeug's), started."""
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": SHUTDOWN_POLL}, name=name, daemon=True
    )
    thread.start()
    return thread


def _json_answer(
    start_response: Callable[..., Any], code: int, data: Any, headers: Sequence[tuple[str, str]] = ()
) -> list[bytes]:
    body = json.dumps(data).encode()
    start_response(
        _STATUS_LINES.get(code, str(code)),
        [("Content-Type", "application/json"), ("Content-Length", str(len(body))), *headers],
    )
    return [body]


def _whole_body(environ: dict[str, Any]) -> bytes:
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        length = 0
    return environ["wsgi.input"].read(length) if length > 0 else b""


# -- fault injection ---------------------------------------------------------------------------------

_STATUS_LINES = {
    200: "200 OK",
    400: "400 Bad Request",
    405: "405 Method Not Allowed",
    429: "429 Too Many Requests",
    503: "503 Service Unavailable",
}
THROTTLE_MESSAGE = "Rate exceeded"
_CREDENTIAL_RE = re.compile(r"Credential=[^/,\s]+/\d{8}/[^/]+/([^/]+)/aws4_request")
WireProtocol = Literal["json", "query", "rest-json", "rest-xml"]


class FaultError(ValueError):
    """A fault the route cannot take; the message says why."""


@dataclass(frozen=True)
class AwsCall:
    """What fault matching needs to know of one AWS request."""

    service: str  # the signing name of its credential scope: "ecs", "elasticloadbalancing", "lambda"
    protocol: WireProtocol
    operation: str | None  # JSON and query protocols name it; REST calls are matched by method and path
    method: str = "POST"
    path: str = "/"
    query: dict[str, list[str]] = field(default_factory=dict)
    content_type: str = ""
    headers: frozenset[str] = frozenset()  # the request's header names, lower case


@dataclass(frozen=True)
class Answer:
    """An HTTP answer in WSGI's terms."""

    status: int
    headers: list[tuple[str, str]]
    body: bytes

    @property
    def status_line(self) -> str:
        return _STATUS_LINES.get(self.status, str(self.status))


@dataclass
class Throttle:
    """Refuse the next ``count`` requests of ``operation`` (any operation when None) of ``service``."""

    service: str  # as asked: a boto3 client name or a signing name
    operation: str | None
    count: int
    signing_name: str
    model: str | None = None  # the botocore service model, when ``service`` names one

    def to_json(self) -> dict[str, Any]:
        return {"service": self.service, "operation": self.operation, "count": self.count}


@dataclass(frozen=True)
class _Route:
    operation: str
    method: str
    pattern: re.Pattern[str]
    query: tuple[tuple[str, str], ...]  # keys the request must carry ("" : any value)
    headers: frozenset[str]  # headers the request must carry (the operation's required header members)
    weight: int  # how specific the route is: the most specific matching route wins

    def matches(self, call: AwsCall) -> bool:
        if call.method != self.method or not self.pattern.fullmatch(call.path) or not self.headers <= call.headers:
            return False
        return all(key in call.query and (not value or value in call.query[key]) for key, value in self.query)


def _compile_route(operation: Any) -> _Route:
    """The route of a REST operation: its method, its URI as a pattern, the query keys and headers it requires."""
    http = operation.http
    path, _, literal_query = str(http.get("requestUri", "/")).partition("?")
    regex, literal = "", 0
    for piece in re.split(r"(\{[^}]+\})", path):
        if piece.startswith("{") and piece.endswith("}"):
            regex += "(.+)" if piece.endswith("+}") else "([^/]+)"
        else:
            regex += re.escape(piece)
            literal += len(piece)
    query = parse_qsl(literal_query, keep_blank_values=True)
    headers: set[str] = set()
    shape = operation.input_shape
    for name in shape.required_members if shape is not None else ():
        member = shape.members[name]
        where, called = member.serialization.get("location"), member.serialization.get("name", name)
        if where == "querystring":
            query.append((called, ""))
        elif where == "header":
            headers.add(called.lower())
    weight = literal + 100 * (len(query) + len(headers))
    pattern = re.compile(regex.rstrip("/") + "/?")
    method = str(http.get("method", "GET")).upper()
    return _Route(operation.name, method, pattern, tuple(query), frozenset(headers), weight)


# the AWS services the app's stacks and deploykit use on the sandbox (a throttle may name one by its signing name)
HOSTED_SERVICES = (
    "apigateway",
    "application-autoscaling",
    "cloudformation",
    "cloudwatch",
    "cognito-idp",
    "dynamodb",
    "ecr",
    "ecs",
    "elbv2",
    "iam",
    "lambda",
    "logs",
    "s3",
    "ssm",
    "sts",
)


class _Models:
    """botocore's service models: names, operations and REST routes (loaded on first use, cached)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._session: botocore.session.Session | None = None
        self._routes: dict[str, list[_Route]] = {}

    def _botocore(self) -> botocore.session.Session:
        """The botocore session the models are read from, made on first use (the caller holds the lock)."""
        if self._session is None:
            self._session = botocore.session.get_session()
        return self._session

    def model(self, name: str) -> Any:
        with self._lock:
            try:
                return self._botocore().get_service_model(name)
            except botocore.exceptions.UnknownServiceError:
                return None

    def signing_names(self) -> dict[str, str]:
        """The signing name (credential scope) of each service the sandbox hosts for the app, by that name:
        ``elasticloadbalancing`` → ``elbv2``, ``monitoring`` → ``cloudwatch``."""
        found: dict[str, str] = {}
        for name in HOSTED_SERVICES:
            model = self.model(name)
            if model is not None:
                found.setdefault(str(model.signing_name), name)
        return found

    def names(self) -> list[str]:
        """Every service botocore has a model of (``ecs``, ``elbv2``...)."""
        with self._lock:
            return list(self._botocore().get_available_services())

    def rest_operation(self, name: str, call: AwsCall) -> str | None:
        """The operation of model ``name`` a REST request is, or None when no route of it matches."""
        if name not in self._routes:
            model = self.model(name)
            ops = [] if model is None else [model.operation_model(op) for op in model.operation_names]
            self._routes[name] = [_compile_route(op) for op in ops]
        found = [r for r in self._routes[name] if r.matches(call)]
        return max(found, key=lambda r: r.weight).operation if found else None


def credential_service(environ: dict[str, Any]) -> str | None:
    """The service of a SigV4 request's credential scope (Authorization header, or a presigned URL's query)."""
    header = str(environ.get("HTTP_AUTHORIZATION", ""))
    found = _CREDENTIAL_RE.search(header)
    if found is None and "X-Amz-Credential=" in str(environ.get("QUERY_STRING", "")):
        scope = parse_qs(str(environ["QUERY_STRING"])).get("X-Amz-Credential", [""])[0]
        found = _CREDENTIAL_RE.search("Credential=" + scope)
    return found.group(1) if found else None


def identify(environ: dict[str, Any], service: str) -> AwsCall:
    """The request's protocol and operation. A form body is read to find its Action, then put back for moto."""
    method = str(environ.get("REQUEST_METHOD", "GET")).upper()
    path = str(environ.get("PATH_INFO", "/")) or "/"
    query = parse_qs(str(environ.get("QUERY_STRING", "")), keep_blank_values=True)
    content_type = str(environ.get("CONTENT_TYPE", ""))
    headers = {key[5:].replace("_", "-").lower() for key in environ if key.startswith("HTTP_")}
    headers |= {key.replace("_", "-").lower() for key in ("CONTENT_TYPE", "CONTENT_LENGTH") if environ.get(key)}
    target = environ.get("HTTP_X_AMZ_TARGET")
    if target:
        return AwsCall(service, "json", str(target).rsplit(".", 1)[-1], method, path, query, content_type)
    action = query.get("Action", [""])[0]
    if not action and content_type.startswith("application/x-www-form-urlencoded"):
        body = _whole_body(environ)
        environ["wsgi.input"] = io.BytesIO(body)
        action = parse_qs(body.decode("utf-8", "replace")).get("Action", [""])[0]
    if action:
        return AwsCall(service, "query", action, method, path, query, content_type)
    protocol: WireProtocol = "rest-xml" if service == "s3" else "rest-json"
    return AwsCall(service, protocol, None, method, path, query, content_type, frozenset(headers))


def throttled_answer(call: AwsCall, request_id: str | None = None) -> Answer:
    """What AWS answers a request over its rate, in the request's protocol."""
    rid = request_id or str(uuid.uuid4())
    if call.protocol == "json":
        body = json.dumps({"__type": "ThrottlingException", "message": THROTTLE_MESSAGE}).encode()
        ctype = (
            call.content_type
            if call.content_type.startswith("application/x-amz-json")
            else "application/x-amz-json-1.1"
        )
        return Answer(400, _headers(ctype, body, ("x-amzn-RequestId", rid)), body)
    if call.protocol == "query":
        xml = (
            "<ErrorResponse><Error><Type>Sender</Type><Code>Throttling</Code>"
            f"<Message>{THROTTLE_MESSAGE}</Message></Error><RequestId>{rid}</RequestId></ErrorResponse>"
        )
        return Answer(400, _headers("text/xml", xml.encode(), ("x-amzn-RequestId", rid)), xml.encode())
    if call.protocol == "rest-xml":
        xml = (
            '<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>SlowDown</Code>'
            f"<Message>Please reduce your request rate.</Message><RequestId>{rid}</RequestId></Error>"
        )
        return Answer(503, _headers("application/xml", xml.encode(), ("x-amz-request-id", rid)), xml.encode())
    body = json.dumps({"Type": "User", "message": THROTTLE_MESSAGE}).encode()
    headers = _headers("application/json", body, ("x-amzn-RequestId", rid))
    return Answer(429, [*headers, ("x-amzn-ErrorType", "TooManyRequestsException")], body)


def _headers(content_type: str, body: bytes, *extra: tuple[str, str]) -> list[tuple[str, str]]:
    return [("Content-Type", content_type), ("Content-Length", str(len(body))), *extra]


# the severities of ECR's findings (basic scanning), as a scan rehearsal may give them
SCAN_SEVERITIES = ("CRITICAL", "HIGH", "MEDIUM", "LOW", "INFORMATIONAL", "UNDEFINED")


class Faults:
    """The faults injected into the sandbox's AWS answers (the ``/_sandbox/faults`` route).

    Pure and thread-safe: no server, no moto. :meth:`intercept` looks at a WSGI request before moto does and
    returns the answer of a throttled one (None lets it through); :meth:`control` is the route itself.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._throttles: list[Throttle] = []
        self._models = _Models()
        self.lambda_update_seconds = 0.0  # how long Lambda takes to apply an update (sandbox.ext.apigw_lambda)
        # what ECR's scans of images find, and how long each takes (sandbox.ext.ecr_registry), from when it is set
        self.scan_findings: tuple[dict[str, str], ...] = ()
        self.scan_seconds = 0.0

    # -- what the route does -----------------------------------------------------------------------
    def throttle(self, service: str, operation: str | None = None, count: int = 1) -> Throttle:
        """Refuse the next ``count`` requests of ``service`` (``operation`` of it, when given)."""
        return self._add(self._validated(service, operation, count))

    def _add(self, throttle: Throttle) -> Throttle:
        with self._lock:
            self._throttles.append(throttle)
        log.info(
            "fault: the next %d %s %s request(s) will be throttled",
            throttle.count,
            throttle.service,
            throttle.operation or "(any)",
        )
        return throttle

    def _validated(self, service: Any, operation: Any, count: Any) -> Throttle:
        if not isinstance(service, str) or not service.strip():
            raise FaultError('throttle: "service" must be a service name, e.g. "ecs"')
        if operation is not None and (not isinstance(operation, str) or not operation):
            raise FaultError('throttle: "operation" must be an operation name, e.g. "UpdateService", or absent')
        if not isinstance(count, int) or isinstance(count, bool) or count < 1:
            raise FaultError(f'throttle: "count" must be a positive integer, not {count!r}')
        model = self._models.model(service)
        if model is None:  # a signing name (elasticloadbalancing), or no AWS service: nothing would be throttled
            signing = self._models.signing_names()
            if service in signing:
                model = self._models.model(signing[service])
            else:
                close = difflib.get_close_matches(service, [*self._models.names(), *signing], n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else " (boto3's names: ecs, elbv2, lambda, s3...)"
                raise FaultError(f"throttle: no AWS service is named {service!r}{hint}")
        if operation is not None and operation not in model.operation_names:
            close = difflib.get_close_matches(operation, model.operation_names, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise FaultError(f"throttle: {service} has no operation {operation!r}{hint}")
        return Throttle(service, operation, count, str(model.signing_name), str(model.service_name))

    def slow_lambda_updates(self, seconds: float) -> None:
        """Lambda applies each later update in ``seconds`` (InProgress until then), as AWS does; 0: at once."""
        if isinstance(seconds, bool) or not isinstance(seconds, int | float) or not 0 <= seconds <= 300:
            raise FaultError(f'lambda_update: "seconds" must be a number from 0 to 300, not {seconds!r}')
        self.lambda_update_seconds = float(seconds)
        log.info("fault: Lambda applies each update in %gs", seconds)

    def rehearse_scans(self, findings: Any, seconds: Any = 0) -> None:
        """ECR's scans of images started from now on find ``findings`` (each a name, a severity, optionally a
        package and its version) and take ``seconds``; none and 0: a scan finds nothing, at once (the default)."""
        checked = self._checked_scans(findings, seconds)
        with self._lock:
            self.scan_findings, self.scan_seconds = checked, float(seconds)
        log.info("fault: ECR's scans find %d finding(s), in %gs each", len(checked), seconds)

    @staticmethod
    def _checked_scans(findings: Any, seconds: Any) -> tuple[dict[str, str], ...]:
        if not isinstance(findings, list):
            raise FaultError(f'scan_findings: "findings" must be a list of findings, not {findings!r}')
        if isinstance(seconds, bool) or not isinstance(seconds, int | float) or not 0 <= seconds <= 600:
            raise FaultError(f'scan_findings: "seconds" must be a number from 0 to 600, not {seconds!r}')
        checked = []
        for finding in findings:
            if not isinstance(finding, dict) or not set(finding) <= {"name", "severity", "package", "version"}:
                raise FaultError(
                    f"scan_findings: {finding!r} is not a finding: "
                    '{"name": "CVE-2026-0001", "severity": "HIGH", "package": "openssl", "version": "3.0.11"}'
                )
            if not all(isinstance(value, str) for value in finding.values()) or not finding.get("name", "").strip():
                raise FaultError(f"scan_findings: {finding!r}: name, package and version are strings, name not empty")
            if finding.get("severity") not in SCAN_SEVERITIES:
                raise FaultError(
                    f"scan_findings: {finding['name']}: severity must be one of {', '.join(SCAN_SEVERITIES)}, "
                    f"not {finding.get('severity')!r}"
                )
            checked.append(dict(finding))
        return tuple(checked)

    def clear(self) -> int:
        """Forget every fault; returns how many there were."""
        with self._lock:
            cleared, self._throttles = len(self._throttles), []
            if self.lambda_update_seconds:
                cleared, self.lambda_update_seconds = cleared + 1, 0.0
            if self.scan_findings or self.scan_seconds:
                cleared, self.scan_findings, self.scan_seconds = cleared + 1, (), 0.0
        if cleared:
            log.info("fault: %d fault(s) cleared", cleared)
        return cleared

    def listing(self) -> dict[str, Any]:
        """The faults still to fire, as the route lists them."""
        with self._lock:
            listed: dict[str, Any] = {"throttle": [t.to_json() for t in self._throttles]}
        if self.lambda_update_seconds:
            listed["lambda_update"] = {"seconds": self.lambda_update_seconds}
        if self.scan_findings or self.scan_seconds:
            listed["scan_findings"] = {"findings": list(self.scan_findings), "seconds": self.scan_seconds}
        return listed

    def describe(self) -> str:
        """The faults on, in a line (``inv sandbox.status``); "" when there is none."""
        listed = self.listing()
        said = [
            f"{t['service']} {t['operation'] or '(every operation)'}: the next {t['count']} throttled"
            for t in listed["throttle"]
        ]
        if "lambda_update" in listed:
            said.append(f"Lambda applies each update in {listed['lambda_update']['seconds']:g}s")
        if "scan_findings" in listed:
            rehearsed = listed["scan_findings"]
            names = ", ".join(f"{f['name']} ({f['severity']})" for f in rehearsed["findings"]) or "nothing"
            said.append(f"ECR's scans find {names}, in {rehearsed['seconds']:g}s")
        return "; ".join(said) + ("; clear: inv sandbox.throttle --clear" if said else "")

    def control(self, method: str, body: bytes) -> tuple[int, dict[str, Any]]:
        """The ``/_sandbox/faults`` route: POST adds, DELETE clears, GET lists. Returns (HTTP status, JSON)."""
        method = method.upper()
        if method == "GET":
            return 200, self.listing()
        if method == "DELETE":
            return 200, {"cleared": self.clear(), **self.listing()}
        if method != "POST":
            return 405, {"error": f"{method} is not allowed here: POST adds faults, GET lists them, DELETE clears them"}
        usage = (
            'expected {"throttle": {"service": "ecs", "operation": "UpdateService", "count": 3}}, '
            '{"lambda_update": {"seconds": 2}} and/or {"scan_findings": {"findings": [{"name": "CVE-2026-0001", '
            '"severity": "HIGH"}], "seconds": 2}}'
        )
        try:
            data = json.loads(body or b"null")
        except ValueError as exc:
            return 400, {"error": f"the body is not JSON ({exc}); {usage}"}
        if not isinstance(data, dict) or not data or not set(data) <= {"throttle", "lambda_update", "scan_findings"}:
            return 400, {"error": usage}
        given = data.get("throttle", [])
        specs = given if isinstance(given, list) else [given]
        update = data.get("lambda_update")
        try:  # all are added, or none
            throttles = []
            for spec in specs:
                if not isinstance(spec, dict) or not set(spec) <= {"service", "operation", "count"}:
                    raise FaultError(f"throttle: {spec!r} is not a throttle; {usage}")
                throttles.append(self._validated(spec.get("service"), spec.get("operation"), spec.get("count", 1)))
            if update is not None and (not isinstance(update, dict) or set(update) != {"seconds"}):
                raise FaultError(f"lambda_update: {update!r} is not a duration; {usage}")
            scans = data.get("scan_findings")
            if scans is not None and (not isinstance(scans, dict) or not set(scans) <= {"findings", "seconds"}):
                raise FaultError(f"scan_findings: {scans!r} is not a scan rehearsal; {usage}")
            if scans is not None:
                self._checked_scans(scans.get("findings", []), scans.get("seconds", 0))
            if update is not None:
                self.slow_lambda_updates(update["seconds"])
            if scans is not None:  # checked above: set as it is
                self.rehearse_scans(scans.get("findings", []), scans.get("seconds", 0))
        except FaultError as exc:
            return 400, {"error": str(exc)}
        for throttle in throttles:  # validated above: added as they are
            self._add(throttle)
        return 200, self.listing()

    # -- what requests meet -------------------------------------------------------------------------
    def intercept(self, environ: dict[str, Any]) -> Answer | None:
        """The throttled answer for this request when a fault matches it (and counts it), else None."""
        if not self._throttles:  # the usual case: no fault, no parsing
            return None
        service = credential_service(environ)
        with self._lock:
            if service is None or not any(t.signing_name == service for t in self._throttles):
                return None
        call = identify(environ, service)
        hit = self.take(call)
        if hit is None:
            return None
        answer = throttled_answer(call)
        log.info(
            "fault: throttled %s %s (%s more to refuse)",
            service,
            call.operation or f"{call.method} {call.path}",
            hit.count,
        )
        return answer

    def take(self, call: AwsCall) -> Throttle | None:
        """The first fault matching ``call``, counted down (and dropped at zero); None when none matches."""
        with self._lock:
            for throttle in self._throttles:
                if self._matches(throttle, call):
                    throttle.count -= 1
                    if throttle.count <= 0:
                        self._throttles.remove(throttle)
                    return throttle
        return None

    def _matches(self, throttle: Throttle, call: AwsCall) -> bool:
        if throttle.signing_name != call.service:
            return False
        if throttle.operation is None:
            return True
        if call.operation is not None:
            return call.operation == throttle.operation
        if throttle.model is None:
            return False
        return self._models.rest_operation(throttle.model, call) == throttle.operation
