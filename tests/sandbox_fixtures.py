"""Fixtures shared by the unit and functional tests of the sandbox's fault route (loaded by tests/conftest.py)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from unittest.mock import Mock

import pytest
from botocore.retries.standard import ExponentialBackoff, RetryContext
from werkzeug.serving import make_server

from sandbox.server import Sandbox
from sandbox.settings import Settings


@pytest.fixture
def served_sandbox(tmp_path: Path) -> Iterator[Settings]:
    """The sandbox's WSGI app (moto, the fault route; no extension, no Docker) on a free 127.0.0.1 port."""
    sandbox = Sandbox(Settings(root=tmp_path), Mock(), [])
    server = make_server("127.0.0.1", 0, sandbox.wsgi(), threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield Settings(root=tmp_path, aws_port=server.port)
    server.shutdown()
    thread.join(timeout=10)


@pytest.fixture
def backoffs(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """botocore's standard backoff, spied on and not slept: the base scale of each retry's delay, 1 s when its
    throttling detector saw a throttling error, 0.05 s for any other retryable one."""
    scales: list[float] = []

    def delay(self: ExponentialBackoff, context: RetryContext) -> float:
        scales.append(self._get_base_scale(context))
        return 0.0

    monkeypatch.setattr(ExponentialBackoff, "delay_amount", delay)
    return scales
