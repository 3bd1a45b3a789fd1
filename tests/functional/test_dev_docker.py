"""./dev and the Docker engine: an engine chosen with DOCKER_HOST that does not answer is named at once."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

from tests.functional.test_dev_bytecode import checkout


def test_an_engine_chosen_with_docker_host_that_does_not_answer_is_named_without_starting_dockerd(
    tmp_path: Path,
) -> None:
    (tmp_path / "checkout").mkdir()
    root = checkout(tmp_path / "checkout")
    tools = tmp_path / "bin"
    tools.mkdir()
    calls = tmp_path / "calls"
    for name in ("docker", "dockerd", "docker-registry", "mmdebstrap"):
        # docker answers nothing (its engine is down); dockerd would say it was started
        (tools / name).write_text(f'#!/bin/sh\necho "{name} $*" >> "{calls}"\nexit 1\n')
        (tools / name).chmod(0o755)
    environ = dict(os.environ, DOCKER_HOST="tcp://127.0.0.1:1", PATH=f"{tools}:{os.environ['PATH']}")
    environ.pop("DEPLOYKIT_NO_DOCKER", None)
    started = time.monotonic()
    done = subprocess.run([str(root / "dev"), "true"], capture_output=True, text=True, env=environ, timeout=60)
    assert done.returncode == 2, done.stderr
    assert "the Docker engine at DOCKER_HOST=tcp://127.0.0.1:1 is not answering" in done.stderr
    assert "unset DOCKER_HOST to let ./dev start a local one" in done.stderr
    assert time.monotonic() - started < 10, "it waited for a local dockerd that cannot help"
    assert "dockerd" not in calls.read_text()
