"""bench/deploy_auto.py refuses an environment it cannot measure before it clones or deploys anything."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO


def test_unknown_environment_exits_2_naming_the_known_ones_and_clones_nothing(tmp_path: Path) -> None:
    environ = dict(os.environ, TMPDIR=str(tmp_path))  # where the bench would put its clone
    done = subprocess.run(
        [sys.executable, str(REPO / "bench" / "deploy_auto.py"), "--env", "nope"],
        capture_output=True,
        text=True,
        env=environ,
        timeout=60,
    )
    assert done.returncode == 2, done.stderr
    assert "unknown environment 'nope'" in done.stderr and "sandbox" in done.stderr
    assert "→ next:" in done.stderr
    assert list(tmp_path.iterdir()) == []
    assert done.stdout == ""
