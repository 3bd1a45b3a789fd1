"""The sandbox's servers (its AWS endpoint, the ECR front, API Gateway, each ALB listener): each loop looks for its
shutdown every SHUTDOWN_POLL, so `inv sandbox.down` does not wait half a second for each of them in turn."""

from __future__ import annotations

import re
import socketserver
from unittest.mock import Mock

from sandbox.server import SHUTDOWN_POLL, serving
from tests.conftest import REPO


def test_a_server_started_by_serving_runs_in_a_daemon_thread_looking_for_its_shutdown_often() -> None:
    server = Mock(spec=socketserver.BaseServer)
    thread = serving(server, "a server")
    thread.join(timeout=5)
    server.serve_forever.assert_called_once_with(poll_interval=SHUTDOWN_POLL)
    assert thread.daemon and thread.name == "a server" and SHUTDOWN_POLL <= 0.1


def test_every_server_of_the_sandbox_is_started_by_serving() -> None:
    """A server started another way loops at socketserver's default (0.5 s), and its stop waits for it."""
    elsewhere = [
        str(path.relative_to(REPO))
        for path in sorted((REPO / "sandbox").rglob("*.py"))
        if "serve_forever" in path.read_text() and path.name != "server.py"
    ]
    assert elsewhere == []
    for path in ("ext/alb.py", "ext/apigw_lambda.py", "ext/ecr_registry.py"):
        assert re.search(r"\bserving\(", (REPO / "sandbox" / path).read_text()), path
