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


def _python_without_venv(tools: Path) -> Path:
    """A python3 whose venv module fails (Debian without python3-venv), making what it was asked to, half."""
    tools.mkdir()
    python = tools / "python3"
    python.write_text(f'#!/bin/sh\n[ "$1" = -m ] && {{ mkdir -p "$3/bin"; exit 1; }}\nexec {sys.executable} "$@"\n')
    python.chmod(0o755)
    (tools / "id").write_text("#!/bin/sh\necho 1000\n")  # not root: ./dev would not apt-get python3-venv
    (tools / "id").chmod(0o755)
    return python


def test_a_venv_whose_interpreter_cannot_be_run_is_said_and_kept(tmp_path: Path) -> None:
    """.venv/bin/python linking to a Python since removed: ./dev made a venv over it, which failed, removed the whole
    .venv and advised installing python3-venv. Now it says what is wrong and how to rebuild, and removes nothing."""
    (tmp_path / "checkout").mkdir()
    root = checkout(tmp_path / "checkout")
    python = _python_without_venv(tmp_path / "bin")
    (root / ".venv" / "bin" / "python").unlink()
    (root / ".venv" / "bin" / "python").symlink_to(tmp_path / "gone" / "python3.11")
    (root / ".venv" / "mine.txt").write_text("kept\n")
    environ = dict(os.environ, DEPLOYKIT_NO_DOCKER="1", PYTHON=str(python))
    environ["PATH"] = f"{tmp_path / 'bin'}:{environ['PATH']}"
    done = subprocess.run([str(root / "dev"), "true"], capture_output=True, text=True, env=environ, timeout=60)
    assert done.returncode == 2
    assert (
        f"❌ .venv's interpreter, {root}/.venv/bin/python, cannot be run: it links to {tmp_path}/gone/python3.11"
        in (done.stderr)
    )
    assert f"→ next: rebuild .venv: rm -rf '{root}/.venv' && ./dev true" in done.stderr
    assert "python3-venv" not in done.stderr
    assert (root / ".venv" / "mine.txt").read_text() == "kept\n"
    # a .venv this run was making, half made when venv failed: removed, and python3-venv advised
    shutil.rmtree(root / ".venv")
    done = subprocess.run([str(root / "dev"), "true"], capture_output=True, text=True, env=environ, timeout=60)
    assert done.returncode == 2 and "python3 -m venv failed" in done.stderr and "python3-venv" in done.stderr
    assert not (root / ".venv").exists()
