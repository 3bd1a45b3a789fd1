"""The entry point (`python -m app.server`) as a process: it accepts connections before the app is loaded."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from conftest import free_port

BACKEND = Path(__file__).resolve().parents[1]


def test_a_connection_made_while_the_app_loads_waits_and_is_answered() -> None:
    port = free_port()
    env = {**os.environ, "HOST": "127.0.0.1", "PORT": str(port), "AWS_REGION": "eu-west-1", "LOG_LEVEL": "WARNING"}
    started = time.monotonic()
    server = subprocess.Popen([sys.executable, "-m", "app.server"], cwd=BACKEND, env=env, stderr=subprocess.PIPE)
    try:
        while True:  # the first connection that is not refused, as a load balancer's first health check
            try:
                conn = socket.create_connection(("127.0.0.1", port), timeout=30)
                break
            except ConnectionRefusedError:
                assert server.poll() is None, server.stderr.read().decode() if server.stderr else ""
                assert time.monotonic() - started < 30, "the server never listened"
                time.sleep(0.005)
        connected = time.monotonic()
        with conn:
            conn.sendall(b"GET /health HTTP/1.1\r\nHost: task\r\nConnection: close\r\n\r\n")
            answer = b""
            while chunk := conn.recv(4096):
                answer += chunk
        answered = time.monotonic()
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert answer.startswith(b"HTTP/1.1 200"), answer[:200]
    # The socket listened before FastAPI, boto3 and the routes were imported, which is most of the start; had
    # uvicorn opened it after loading the app, the first connection would come late and be answered at once.
    took = f"connected after {connected - started:.3f}s, answered after {answered - started:.3f}s"
    assert connected - started < (answered - started) / 2, took


def test_an_idle_connection_outlives_uvicorns_default_so_the_load_balancer_may_reuse_it() -> None:
    """The ALB keeps a connection idle up to 60 s and reuses it; uvicorn closed one idle 5 s (its default), and a
    request the ALB sent on it then was a 502. A connection idle 6 s still answers."""
    import http.client

    port = free_port()
    env = {**os.environ, "HOST": "127.0.0.1", "PORT": str(port), "AWS_REGION": "eu-west-1", "LOG_LEVEL": "WARNING"}
    server = subprocess.Popen([sys.executable, "-m", "app.server"], cwd=BACKEND, env=env, stderr=subprocess.PIPE)
    try:
        started = time.monotonic()
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=30).close()
                break
            except ConnectionRefusedError:
                assert server.poll() is None and time.monotonic() - started < 30
                time.sleep(0.01)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        conn.request("GET", "/health")
        first = conn.getresponse()
        assert first.status == 200 and first.read()
        held = conn.sock
        time.sleep(6)  # idle past uvicorn's default keep-alive of 5 s
        conn.request("GET", "/health")  # on the same connection, as the ALB reuses it
        again = conn.getresponse()
        assert again.status == 200 and conn.sock is held
        conn.close()
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_log_level_debug_is_the_apps_own_lines_never_the_sdks_requests() -> None:
    """At DEBUG, botocore logged each request whole: the session token, a booking's items."""
    import logging

    from app.server import configure_logging

    configure_logging("debug")
    assert not logging.getLogger("botocore.endpoint").isEnabledFor(logging.DEBUG)
    assert not logging.getLogger("urllib3.connectionpool").isEnabledFor(logging.DEBUG)
