"""bench/deploy_auto.py refuses an environment it cannot measure before it clones or deploys anything."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO


def bench(tmp_path: Path, env: str) -> subprocess.CompletedProcess[str]:
    """The bench with ``--env env``, its temporary folder (where it would clone) in ``tmp_path``."""
    return subprocess.run(
        [sys.executable, str(REPO / "bench" / "deploy_auto.py"), "--env", env],
        capture_output=True,
        text=True,
        env=dict(os.environ, TMPDIR=str(tmp_path)),
        timeout=60,
    )


def test_unknown_environment_exits_2_naming_the_known_ones_and_clones_nothing(tmp_path: Path) -> None:
    done = bench(tmp_path, "nope")
    assert done.returncode == 2, done.stderr
    assert "unknown environment 'nope'" in done.stderr and "sandbox" in done.stderr
    assert "→ next:" in done.stderr
    assert list(tmp_path.iterdir()) == []
    assert done.stdout == ""


def test_the_checkouts_own_sandbox_is_refused_the_bench_makes_its_own(tmp_path: Path) -> None:
    done = bench(tmp_path, "sandbox")
    assert done.returncode == 2, done.stderr
    assert "private sandbox of its own" in done.stderr and "run it without --env" in done.stderr
    assert list(tmp_path.iterdir()) == []


def test_the_history_listing_bench_reads_the_same_records_every_way_and_lists_and_fetches_fewer() -> None:
    done = subprocess.run(
        [sys.executable, str(REPO / "bench" / "history_listing.py"), "--sizes", "2000", "--delay", "0", "--json"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    [row] = json.loads(done.stdout)["rows"]
    assert row["records"] == 2000
    assert (row["whole"]["list_calls"], row["whole"]["keys_listed"]) == (2, 2000)
    # 2000 a year: the last week holds 38, enough for the newest 30
    # the oldest 100 keys are asked for beside it
    assert row["windows"]["list_calls"] == 2 and 130 <= row["windows"]["keys_listed"] < 160
    assert row["whole"]["fetched"] == row["windows"]["fetched"] == 30
    # with the cache warm, the same listing and no record fetched
    assert (row["cached"]["list_calls"], row["cached"]["fetched"]) == (2, 0)
    # 2000 a year: about 164 in the last 30 days, each fetched from S3, then none
    assert 150 <= row["month"]["records"] == row["month"]["fetched"] == row["month_cached"]["records"] <= 180
    assert row["month_cached"]["fetched"] == 0


def test_the_bench_s_sandbox_takes_each_free_port_once_whatever_digits_it_has(monkeypatch: pytest.MonkeyPatch) -> None:
    """One port after the other, an AWS port of 4567x was then taken for the API's (4567), and its URL named
    127.0.0.1:<api port>x: the bench's sandbox did not start."""
    sys.path.insert(0, str(REPO / "bench"))
    try:
        import deploy_auto
    finally:
        sys.path.remove(str(REPO / "bench"))
    monkeypatch.setattr(deploy_auto, "free_ports", lambda count: [45671, 44029, 36607, 49387, 41991][:count])
    text, ports = deploy_auto.private_toml((REPO / "deploy.toml").read_text())
    named = set(re.findall(r"127\.0\.0\.1:(\d+)", text))
    assert {str(ports["aws"]), str(ports["api"]), str(ports["listener"])} <= named
    assert named <= {str(p) for p in ports.values()} | {"5000"}, named  # 5000: a comment's example
