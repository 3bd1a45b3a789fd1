"""SIGTERM (a cancelled CI job) stops a task as Ctrl-C does: the interrupt reaches the executor, which ends the
plan cleanly; the task exits 130 with the message and the next step. An interrupted task whose way out is wedged
(a thread that never ends) still leaves, after a grace, saying where its threads stood."""

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

tasks.EXIT_GRACE = 1.0
{setup}

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
    err, seconds = interrupted(tmp_path, signal.SIGTERM, setup="")
    assert seconds < 5
    assert "❌ interrupted during roll-service (demo)" in err and "→ next: run it again" in err
    assert "to exit after the interrupt" not in err  # it left on its own, before the grace


# a read started beside the step that never ends: Python's way out waits for such a thread forever
WEDGED = """
def wedged_read():
    threading.Event().wait()

threading.Thread(target=wedged_read, name="wedged-read").start()
"""


@pytest.mark.slow
def test_an_interrupted_task_whose_exit_is_wedged_leaves_after_the_grace_saying_where_it_stood(
    tmp_path: Path,
) -> None:
    err, seconds = interrupted(tmp_path, signal.SIGINT, setup=WEDGED)
    assert 1 <= seconds < 10, err
    assert "❌ interrupted during roll-service (demo)" in err
    assert "⚠️  deploykit took more than 1s to exit after the interrupt: leaving now; where its threads stood" in err
    assert " in wedged_read\n" in err  # the thread it waited for, by faulthandler
    assert " in _shutdown\n" in err  # where Python's way out stood: waiting for that thread


# a pool's worker in a read that never answers (an AWS that accepts connections and says nothing): Python's way out
# joins the pool's threads (concurrent.futures' own exit hook) before it marks the main thread stopped
WEDGED_POOL = """
from concurrent.futures import ThreadPoolExecutor

def wedged_pool_read():
    threading.Event().wait()

ThreadPoolExecutor(max_workers=1).submit(wedged_pool_read)
"""


@pytest.mark.slow
def test_an_interrupted_task_whose_pool_worker_hangs_leaves_after_the_grace(tmp_path: Path) -> None:
    err, seconds = interrupted(tmp_path, signal.SIGTERM, setup=WEDGED_POOL)
    assert 1 <= seconds < 10, err
    assert "❌ interrupted during roll-service (demo)" in err
    assert "⚠️  deploykit took more than 1s to exit after the interrupt: leaving now; where its threads stood" in err
    assert " in wedged_pool_read\n" in err
    assert " in _python_exit\n" in err  # concurrent.futures' exit hook, joining the pool's worker


def interrupted(tmp_path: Path, signum: int, setup: str) -> tuple[str, float]:
    """The demo task run in a process of its own, ``setup`` run first, stopped by ``signum`` once it is in its step:
    its stderr and the seconds from the signal to its end (exit 130 asserted)."""
    script = tmp_path / "task.py"
    script.write_text(SCRIPT.format(repo=str(REPO), setup=setup))
    process = subprocess.Popen(
        [sys.executable, str(script)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # a background job inherits it ignored
    )
    assert process.stdout is not None and process.stdout.readline().strip() == "ready"
    started = time.monotonic()
    os.kill(process.pid, signum)
    try:
        _out, err = process.communicate(timeout=20)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130, err
    return err, time.monotonic() - started


@pytest.mark.slow
def test_a_caller_that_goes_on_in_the_same_process_is_not_ended_by_the_grace() -> None:
    """Tasks called from a script (or a test) that carries on after their interrupt: nothing ends the process."""
    script = f"""
import sys, threading, time
sys.path.insert(0, {str(REPO)!r})
import tasks
tasks.EXIT_GRACE = 0.3

@tasks.reports_errors
def task():
    raise KeyboardInterrupt

try:
    task()
except tasks.Exit as exc:
    print("exit", exc.code)
time.sleep(1.5)  # past the grace, twice over
print("still here", [t.name for t in threading.enumerate() if t.name == "deploykit-exit-grace"])
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=30, cwd=REPO)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["exit 130", "still here []"]
