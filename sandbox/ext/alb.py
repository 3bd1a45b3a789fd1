"""ALB that serves: real HTTP listeners on 127.0.0.1 and real target health.

What plain moto lacks, fixed here:

- ``targets_by_id_and_port``: moto keys a target group's targets by Id alone, so two tasks on one host
  (127.0.0.1, different ports) overwrite each other. Here targets are keyed by (Id, Port), as on AWS.
- ``real_target_health``: moto reports every target healthy. Here a checker polls each target's health
  check path with the target group's interval, timeout, matcher and thresholds; states are initial,
  healthy, unhealthy, draining, as DescribeTargetHealth shows on AWS. As on AWS, a newly registered target
  is healthy after one passing check; the healthy threshold counts only for a target coming back from
  unhealthy.
- ``drain_until_nothing_in_flight``: a deregistered target drains for at most the target group's
  deregistration delay and, as AWS documents ("If a deregistering target has no in-flight requests and no
  active connections, Elastic Load Balancing immediately completes the deregistration process, without
  waiting for the deregistration delay to elapse"), less when the requests it was serving have finished.
  The listeners open one connection per request and keep none idle, so a target's active connections are
  its requests in flight. (On AWS an ALB keeps idle keep-alive connections to its targets, which can hold a
  drain under steady traffic to its full delay.)
- ``listeners_that_serve``: each HTTP listener is an HTTP server on 127.0.0.1 (its port mapped through
  ``[sandbox] listener_ports``) forwarding to the healthy targets of its default target group, round
  robin. Each load balancer's port-80 listener gets a local port of its own: the first one's is
  ``listener_ports``' 80 (8080), a later one's the next free port above; the load balancer's ``DNSName`` is
  ``127.0.0.1:<that port>``, so a stack's ``http://<DNSName>`` output is where its listener answers, and two
  environments' stacks (prod beside dev) can run side by side. Draining targets get no new requests;
  requests in flight finish. No healthy target: the listener fails open to the registered ones, as an ALB
  does; none at all: 503.
- ``request_metrics``: each request a listener answers puts the ``AWS/ApplicationELB`` metrics an ALB puts, in
  moto's CloudWatch: ``RequestCount`` (by LoadBalancer, and by LoadBalancer and TargetGroup),
  ``HTTPCode_Target_<n>XX_Count`` and ``TargetResponseTime`` (by LoadBalancer and TargetGroup) for what a target
  answered, ``HTTPCode_ELB_<n>XX_Count`` (by LoadBalancer) for what the ALB answered itself (502: the target
  failed; 503: no target). Dimension values are the ARNs' suffixes (``app/<name>/<id>``,
  ``targetgroup/<name>/<id>``), as on AWS.
"""

from __future__ import annotations

import http.client
import itertools
import logging
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

from sandbox.ext.service_metrics import ServiceMetrics
from sandbox.server import PartStatus, serving
from sandbox.settings import Settings

if TYPE_CHECKING:
    from sandbox.server import Sandbox

log = logging.getLogger("sandbox.alb")

HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade"}


@dataclass
class Target:
    id: str
    port: int
    state: str = "initial"
    reason: str = "Elb.RegistrationInProgress"
    description: str = "Target registration is in progress"
    successes: int = 0
    failures: int = 0
    next_check: float = 0.0
    checking: bool = False
    drain_until: float | None = None
    in_flight: int = 0  # requests the listeners have forwarded to it and not yet answered

    @property
    def drained(self) -> bool:
        """A draining target whose deregistration is complete: its delay is over or nothing is in flight."""
        return self.state == "draining" and (
            self.in_flight == 0 or (self.drain_until is not None and time.monotonic() >= self.drain_until)
        )

    @property
    def key(self) -> tuple[str, int]:
        return (self.id, self.port)

    def describe(self) -> dict[str, Any]:
        health: dict[str, Any] = {"State": self.state}
        if self.state != "healthy":
            health.update(Reason=self.reason, Description=self.description)
        return {"Target": {"Id": self.id, "Port": self.port}, "HealthCheckPort": str(self.port), "TargetHealth": health}


def _int(value: Any, default: int) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def matches(code: int, matcher: str) -> bool:
    """Whether an HTTP status matches an ALB matcher such as "200", "200-299" or "200,302"."""
    for part in matcher.split(","):
        part = part.strip()
        if "-" in part:
            low, high = part.split("-", 1)
            if int(low) <= code <= int(high):
                return True
        elif part and int(part) == code:
            return True
    return False


def _bindable(port: int) -> bool:
    """Whether nothing listens on 127.0.0.1:``port`` now."""
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


class AlbExtension:
    name = "alb"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.targets: dict[str, dict[tuple[str, int], Target]] = {}
        self.servers: dict[str, tuple[int, ThreadingHTTPServer]] = {}  # listener arn → (local port, server)
        self.balancer_ports: dict[str, int] = {}  # load balancer arn → the local port of its port-80 listener
        self._round_robin: dict[str, itertools.count[int]] = {}
        self._metrics = ServiceMetrics()
        self._stop = threading.Event()
        self._pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="alb-health")
        self._thread: threading.Thread | None = None
        self.sandbox: Sandbox | None = None

    # -- install: the ELBv2 API sees our targets ----------------------------------------------------
    def install(self, sandbox: Sandbox) -> None:
        self.sandbox = sandbox
        backend = sandbox.backend("elbv2")

        def register_targets(target_group_arn: str, instances: list[dict[str, Any]]) -> None:
            self._target_group(target_group_arn)
            for t in instances:
                self.register(target_group_arn, t["Id"], _int(t.get("Port"), 0))

        def deregister_targets(target_group_arn: str, instances: list[dict[str, Any]]) -> None:
            self._target_group(target_group_arn)
            for t in instances:
                self.deregister(target_group_arn, t["Id"], _int(t.get("Port"), 0))

        def describe_target_health(target_group_arn: str, targets: list[dict[str, Any]]) -> list[dict[str, Any]]:
            self._target_group(target_group_arn)
            known = self.targets.get(target_group_arn, {})
            if not targets:
                return [t.describe() for t in known.values()]
            answer = []
            for wanted in targets:
                key = (wanted["Id"], _int(wanted.get("Port"), 0))
                target = known.get(key)
                if target is None:
                    answer.append(
                        {
                            "Target": {"Id": key[0], "Port": key[1]},
                            "TargetHealth": {
                                "State": "unused",
                                "Reason": "Target.NotRegistered",
                                "Description": "Target is not registered to the target group",
                            },
                        }
                    )
                else:
                    answer.append(target.describe())
            return answer

        create = backend.create_load_balancer

        def create_load_balancer(*args: Any, **kwargs: Any) -> Any:
            balancer = create(*args, **kwargs)
            port = self._free_balancer_port({arn for arn in backend.load_balancers if arn != balancer.arn})
            self.balancer_ports[balancer.arn] = port
            balancer.dns_name = f"127.0.0.1:{port}"
            return balancer

        backend.register_targets = register_targets
        backend.deregister_targets = deregister_targets
        backend.describe_target_health = describe_target_health
        backend.create_load_balancer = create_load_balancer

    def _free_balancer_port(self, others: set[str]) -> int:
        """The local port for a new load balancer's port-80 listener: ``listener_ports``' 80, or the next one above
        no other load balancer of the sandbox has."""
        taken = {port for arn, port in self.balancer_ports.items() if arn in others}
        port = self.settings.listener_ports.get(80, 18080)
        if port not in taken:
            return port  # the configured one: a listener that cannot have it says so when it starts
        while port in taken or not _bindable(port):
            port += 1
        return port

    def _target_group(self, arn: str) -> Any:
        assert self.sandbox is not None
        backend = self.sandbox.backend("elbv2")
        group = backend.target_groups.get(arn)
        if group is None:
            from moto.elbv2.exceptions import TargetGroupNotFoundError

            raise TargetGroupNotFoundError()
        return group

    # -- used by the ECS runtime and the API (call with the sandbox lock held) -----------------------
    def register(self, target_group_arn: str, target_id: str, port: int) -> None:
        group = self.targets.setdefault(target_group_arn, {})
        if (target_id, port) not in group or group[(target_id, port)].state == "draining":
            group[(target_id, port)] = Target(target_id, port)

    def deregister(self, target_group_arn: str, target_id: str, port: int) -> float:
        """Start draining; returns the deregistration delay in seconds."""
        target = self.targets.get(target_group_arn, {}).get((target_id, port))
        delay = float(
            _int(self._target_group(target_group_arn).attributes.get("deregistration_delay.timeout_seconds"), 300)
        )
        if target is not None and target.state != "draining":
            target.state, target.reason = "draining", "Target.DeregistrationInProgress"
            target.description = "Target deregistration is in progress"
            target.drain_until = time.monotonic() + delay
        return delay

    def health(self, target_group_arn: str, target_id: str, port: int) -> Target | None:
        return self.targets.get(target_group_arn, {}).get((target_id, port))

    # -- the checker and the listeners ------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="alb", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=5)
        for _port, server in self.servers.values():
            server.shutdown()
            server.server_close()
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _loop(self) -> None:
        while not self._stop.wait(self.settings.tick):
            try:
                self.reconcile()
            except Exception:
                log.exception("ALB reconcile failed")

    def reconcile(self) -> None:
        assert self.sandbox is not None
        now = time.monotonic()
        due: list[tuple[Any, Target]] = []
        with self.sandbox.lock:
            backend = self.sandbox.backend("elbv2")
            for arn in list(self.targets):
                group = backend.target_groups.get(arn)
                if group is None:
                    del self.targets[arn]
                    continue
                for key, target in list(self.targets[arn].items()):
                    if target.state == "draining":
                        if target.drained:
                            del self.targets[arn][key]
                    elif not target.checking and now >= target.next_check:
                        target.checking = True
                        due.append((group, target))
            listeners = {
                listener.arn: listener
                for lb in backend.load_balancers.values()
                for listener in lb.listeners.values()
                if listener.protocol == "HTTP"
            }
        for group, target in due:
            self._pool.submit(self._check, group, target)
        self._reconcile_listeners(listeners)

    def _check(self, group: Any, target: Target) -> None:
        path = group.health_check_path or "/"
        timeout = _int(group.health_check_timeout_seconds, 5)
        matcher = (getattr(group, "matcher", None) or {}).get("HttpCode", "200")
        code, error = 0, ""
        try:
            conn = http.client.HTTPConnection(target.id, target.port, timeout=timeout)
            conn.request("GET", path, headers={"User-Agent": "ELB-HealthChecker/2.0"})
            code = conn.getresponse().status
            conn.close()
        except OSError as exc:
            error = str(exc) or type(exc).__name__
        assert self.sandbox is not None
        with self.sandbox.lock:
            target.checking = False
            target.next_check = time.monotonic() + _int(group.health_check_interval_seconds, 30)
            if target.state == "draining":
                return
            if not error and matches(code, matcher):
                target.successes, target.failures = target.successes + 1, 0
                # AWS: a newly registered target needs one passing check, whatever the healthy threshold;
                # the threshold applies to a target coming back from unhealthy
                if target.state == "initial" or target.successes >= _int(group.healthy_threshold_count, 5):
                    target.state, target.reason, target.description = "healthy", "", ""
            else:
                target.failures, target.successes = target.failures + 1, 0
                if error:
                    reason, text = "Target.FailedHealthChecks", f"Request timed out or failed: {error}"
                else:
                    reason, text = "Target.ResponseCodeMismatch", f"Health checks failed with these codes: [{code}]"
                if target.state == "initial" and target.failures < _int(group.unhealthy_threshold_count, 2):
                    target.description = text
                if target.failures >= _int(group.unhealthy_threshold_count, 2):
                    target.state, target.reason, target.description = "unhealthy", reason, text

    def _reconcile_listeners(self, listeners: dict[str, Any]) -> None:
        for arn in list(self.servers):
            if arn not in listeners:
                _port, server = self.servers.pop(arn)
                server.shutdown()
                server.server_close()
        for arn, listener in listeners.items():
            if arn in self.servers:
                continue
            port = int(listener.port)
            local = self.settings.listener_ports.get(port, 18000 + port)
            if port == 80 and listener.load_balancer_arn in self.balancer_ports:
                local = self.balancer_ports[listener.load_balancer_arn]
            try:
                server = ListenerServer(("127.0.0.1", local), ListenerHandler, self, arn)
            except OSError as exc:
                log.error("cannot serve listener %s (port %s) on 127.0.0.1:%s: %s", arn, port, local, exc)
                continue
            serving(server, f"listener-{local}")
            self.servers[arn] = (local, server)
            log.info("ALB listener :%s serving on http://127.0.0.1:%s", port, local)

    def pick_target(self, listener_arn: str) -> Target | None:
        """Round robin over healthy targets of the listener's default target group (fail open).

        The target picked counts the request as in flight until :meth:`done` is called for it.
        """
        assert self.sandbox is not None
        with self.sandbox.lock:
            backend = self.sandbox.backend("elbv2")
            listener = find_listener(backend, listener_arn)
            if listener is None:
                return None
            group_arn = forward_target_group(listener)
            if group_arn is None:
                return None
            targets = list(self.targets.get(group_arn, {}).values())
            candidates = [t for t in targets if t.state == "healthy"] or [t for t in targets if t.state != "draining"]
            if not candidates:
                return None
            counter = self._round_robin.setdefault(group_arn, itertools.count())
            target = candidates[next(counter) % len(candidates)]
            target.in_flight += 1
            return target

    def done(self, target: Target) -> None:
        """A request forwarded to the target has been answered (or failed)."""
        assert self.sandbox is not None
        with self.sandbox.lock:
            target.in_flight -= 1

    def count(self, listener_arn: str, status: int, *, by_target: bool, seconds: float) -> None:
        """Put the metrics of one answered request (request_metrics); never fails the request."""
        assert self.sandbox is not None
        try:
            with self.sandbox.lock:
                listener = find_listener(self.sandbox.backend("elbv2"), listener_arn)
                if listener is None:
                    return
                balancer = {"Name": "LoadBalancer", "Value": str(listener.load_balancer_arn).split(":loadbalancer/")[1]}
                group_arn = forward_target_group(listener)
                group = [{"Name": "TargetGroup", "Value": group_arn.rsplit(":", 1)[1]}] if group_arn else []
                data: list[dict[str, Any]] = [{"MetricName": "RequestCount", "Value": 1, "Dimensions": [balancer]}]
                if group:
                    data.append({"MetricName": "RequestCount", "Value": 1, "Dimensions": [balancer, *group]})
                if by_target and group:
                    data += [
                        {
                            "MetricName": f"HTTPCode_Target_{status // 100}XX_Count",
                            "Value": 1,
                            "Dimensions": [balancer, *group],
                        },
                        {"MetricName": "TargetResponseTime", "Value": seconds, "Dimensions": [balancer, *group]},
                    ]
                elif not by_target:
                    data.append(
                        {"MetricName": f"HTTPCode_ELB_{status // 100}XX_Count", "Value": 1, "Dimensions": [balancer]}
                    )
                for datum in data:
                    datum["Unit"] = "Seconds" if datum["MetricName"] == "TargetResponseTime" else "Count"
                self._metrics.put(self.sandbox.backend("cloudwatch"), "AWS/ApplicationELB", data)
        except Exception:  # metrics are a convenience: never fail a request over them
            log.debug("could not put the metrics of a request to %s", listener_arn, exc_info=True)

    def status(self) -> list[PartStatus]:
        assert self.sandbox is not None
        parts = []
        with self.sandbox.lock:
            backend = self.sandbox.backend("elbv2")
            for arn, (local, _server) in self.servers.items():
                listener = find_listener(backend, arn)
                group = forward_target_group(listener) if listener is not None else None
                healthy = sum(1 for t in self.targets.get(group or "", {}).values() if t.state == "healthy")
                port = listener.port if listener is not None else "?"
                parts.append(
                    PartStatus(
                        f"alb listener :{port}", f"http://127.0.0.1:{local}", True, f"{healthy} healthy target(s)"
                    )
                )
        if not parts:
            parts.append(PartStatus("alb", "-", True, "no listeners yet"))
        return parts


def find_listener(backend: Any, arn: str) -> Any:
    listeners = (listener for lb in backend.load_balancers.values() for listener in lb.listeners.values())
    return next((listener for listener in listeners if listener.arn == arn), None)


def forward_target_group(listener: Any) -> str | None:
    for action in listener.default_actions:
        data = getattr(action, "data", {}) or {}
        if data.get("Type", getattr(action, "type", "")) != "forward":
            continue
        if data.get("TargetGroupArn"):
            return str(data["TargetGroupArn"])
        groups = (data.get("ForwardConfig") or {}).get("TargetGroups") or []
        if groups:
            return str(groups[0]["TargetGroupArn"])
    return None


class ListenerServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(
        self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler], alb: AlbExtension, listener_arn: str
    ) -> None:
        self.alb = alb
        self.listener_arn = listener_arn
        super().__init__(address, handler)


class ListenerHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: ListenerServer

    def log_message(self, format: str, *args: Any) -> None:
        return

    def _forward(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        target = self.server.alb.pick_target(self.server.listener_arn)
        if target is None:
            self._answer(503, b'{"message": "Service Unavailable: no registered targets"}')
            return
        headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
        headers["X-Forwarded-For"] = self.client_address[0]
        headers["X-Forwarded-Proto"] = "http"
        headers["X-Forwarded-Port"] = str(self.server.server_address[1])
        # TargetResponseTime as AWS counts it: from the request leaving the ALB to the target's answer (not the time
        # the ALB took to pick the target, which waits for the sandbox's lock)
        started = time.monotonic()
        try:
            conn = http.client.HTTPConnection(target.id, target.port, timeout=60)
            conn.request(self.command, self.path, body=body, headers=headers)
            answer = conn.getresponse()
            data = answer.read()
            conn.close()
        except OSError:
            self._answer(502, b'{"message": "Bad Gateway"}')
            return
        finally:
            self.server.alb.done(target)
        seconds = time.monotonic() - started
        self.send_response(answer.status, answer.reason)
        for key, value in answer.getheaders():
            if key.lower() not in HOP_BY_HOP and key.lower() != "content-length":
                self.send_header(key, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)
        self.wfile.flush()
        self.server.alb.count(self.server.listener_arn, answer.status, by_target=True, seconds=seconds)

    def _answer(self, code: int, body: bytes) -> None:
        """An answer of the ALB itself (no target, or the target failed)."""
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        self.wfile.flush()
        self.server.alb.count(self.server.listener_arn, code, by_target=False, seconds=0.0)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _forward
