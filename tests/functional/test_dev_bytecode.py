"""./dev keeps the bytecode of the toolkit's sources current, also where PYTHONDONTWRITEBYTECODE is set."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import REPO

PYC = f"cpython-{sys.version_info.major}{sys.version_info.minor}.pyc"


def checkout(root: Path) -> Path:
    """A checkout with ./dev, whose .venv is this Python, already installed for its pyproject.toml."""
    shutil.copy(REPO / "dev", root / "dev")
    shutil.copy(REPO / "pyproject.toml", root / "pyproject.toml")
    (root / ".venv" / "bin").mkdir(parents=True)
    (root / ".venv" / "bin" / "python").symlink_to(sys.executable)
    stamp = hashlib.sha256((root / "pyproject.toml").read_bytes()).hexdigest()
    (root / ".venv" / ".deploykit-stamp").write_text(stamp + "\n")
    (root / "deploykit").mkdir()
    (root / "deploykit" / "a.py").write_text("A = 1\n")
    return root


def dev(root: Path) -> subprocess.CompletedProcess[str]:
    environ = dict(os.environ, DEPLOYKIT_NO_DOCKER="1", PYTHONDONTWRITEBYTECODE="1")
    return subprocess.run([str(root / "dev"), "true"], capture_output=True, text=True, env=environ, timeout=60)


def test_sources_are_compiled_then_only_when_one_is_newer(tmp_path: Path) -> None:
    root = checkout(tmp_path)
    cache = root / "deploykit" / "__pycache__"
    assert dev(root).returncode == 0
    assert (cache / f"a.{PYC}").is_file()

    (cache / f"a.{PYC}").unlink()
    assert dev(root).returncode == 0
    assert not (cache / f"a.{PYC}").exists(), "nothing newer than the last pass: nothing compiled"

    later = time.time() + 5
    (root / "deploykit" / "b.py").write_text("B = 2\n")
    (root / "deploykit" / "broken.py").write_text("def (:\n")  # mid-edit: Python reports it where it is imported
    os.utime(root / "deploykit" / "b.py", (later, later))
    done = dev(root)
    assert done.returncode == 0 and done.stderr == ""
    assert (cache / f"b.{PYC}").is_file() and (cache / f"a.{PYC}").is_file()
    assert not (cache / f"broken.{PYC}").exists()
