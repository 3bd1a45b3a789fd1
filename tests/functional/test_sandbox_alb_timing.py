"""The sandbox ALB's TargetResponseTime is what AWS counts: from the request leaving the load balancer to the target's
answer, not the time the ALB waited to pick a target (the sandbox's lock, held by other requests' metrics, an alarm
evaluation, a GetMetricData), which made a busy sandbox's releases look slower than they were."""

from __future__ import annotations

import threading
import time
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from unittest.mock import Mock

import pytest

from sandbox.ext.alb import AlbExtension, ListenerHandler, ListenerServer, Target


class Instant(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, format: str, *args: object) -> None:
        return


def serving(server: ThreadingHTTPServer) -> Iterator[ThreadingHTTPServer]:
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def target() -> Iterator[ThreadingHTTPServer]:
    yield from serving(ThreadingHTTPServer(("127.0.0.1", 0), Instant))


def test_the_time_to_pick_a_target_is_not_the_targets_response_time(target: ThreadingHTTPServer) -> None:
    alb = Mock(spec=AlbExtension)

    def pick_target(_listener: str) -> Target:
        time.sleep(0.3)  # the sandbox's lock, held elsewhere
        return Target("127.0.0.1", target.server_address[1])

    alb.pick_target.side_effect = pick_target
    for server in serving(ListenerServer(("127.0.0.1", 0), ListenerHandler, alb, "arn:listener")):
        started = time.monotonic()
        with urllib.request.urlopen(f"http://127.0.0.1:{server.server_address[1]}/version", timeout=5) as answer:
            assert answer.status == 200 and answer.read() == b"ok"
        assert time.monotonic() - started >= 0.3  # the client waited for it
        deadline = time.monotonic() + 5
        while not alb.count.called and time.monotonic() < deadline:
            time.sleep(0.01)
    alb.count.assert_called_once()
    (listener, status), options = alb.count.call_args
    assert (listener, status, options["by_target"]) == ("arn:listener", 200, True)
    assert options["seconds"] < 0.2  # the target answered at once: AWS's TargetResponseTime
