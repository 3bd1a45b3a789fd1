"""SIGTERM (a cancelled CI job) stops a task as Ctrl-C does: the interrupt reaches the executor, which ends the
plan cleanly; the task exits 130 with the message and the next step."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO

SCRIPT = """
import os, signal, sys, threading, time
sys.path.insert(0, {repo!r})
import tasks
from deploykit.errors import Interrupted

@tasks.reports_errors
def task():
    try:  # "ready" inside the try: a signal right after it still lands in the step
        print("ready", flush=True)
        time.sleep(30)
    except KeyboardInterrupt:
        raise Interrupted("interrupted during roll-service (demo)", next_step="run it again") from None

try:
    task()
except tasks.Exit as exc:
    sys.exit(exc.code)
"""


@pytest.mark.slow
def test_sigterm_becomes_a_clean_interrupt_with_exit_130(tmp_path: Path) -> None:
    script = tmp_path / "task.py"
    script.write_text(SCRIPT.format(repo=str(REPO)))
    process = subprocess.Popen(
        [sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO
    )
    assert process.stdout is not None and process.stdout.readline().strip() == "ready"
    started = time.monotonic()
    os.kill(process.pid, signal.SIGTERM)
    _out, err = process.communicate(timeout=20)
    assert process.returncode == 130, err
    assert time.monotonic() - started < 5
    assert "❌ interrupted during roll-service (demo)" in err and "→ next: run it again" in err
