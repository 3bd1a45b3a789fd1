"""noxfile.py's temporary folder for the tests: on the RAM disk when it has room, removed after a run that passed,
kept after one that failed, never when the caller set TMPDIR."""

from __future__ import annotations

import os
from pathlib import Path
from unittest.mock import Mock

import nox
import pytest

import noxfile


@pytest.fixture
def ram_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A folder standing for /dev/shm, with the room a run needs (this disk has it: 1 KiB asked), TMPDIR unset."""
    monkeypatch.setattr(noxfile, "RAM_DISK", tmp_path)
    monkeypatch.setattr(noxfile, "RAM_NEEDED", 1024)
    monkeypatch.delenv("TMPDIR", raising=False)
    return tmp_path


def test_a_run_that_passed_had_its_own_folder_on_the_ram_disk_and_leaves_nothing(ram_disk: Path) -> None:
    session = Mock(spec=nox.Session)
    with noxfile._temporary_files(session) as env:
        folder = Path(env["TMPDIR"])
        assert folder.parent == ram_disk and folder.name.startswith("deploykit-tests-") and folder.is_dir()
        (folder / "pytest-of-root").mkdir()
    assert list(ram_disk.iterdir()) == []
    session.log.assert_not_called()


def test_a_run_that_failed_keeps_its_folder_and_names_it(ram_disk: Path) -> None:
    session = Mock(spec=nox.Session)
    with pytest.raises(RuntimeError), noxfile._temporary_files(session) as env:
        raise RuntimeError("a test failed")
    assert Path(env["TMPDIR"]).is_dir()
    session.log.assert_called_once()
    assert env["TMPDIR"] in session.log.call_args.args[0]


def test_tmpdir_set_by_the_caller_is_kept(ram_disk: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TMPDIR", str(ram_disk / "mine"))
    with noxfile._temporary_files(Mock(spec=nox.Session)) as env:
        assert env == {}
    assert list(ram_disk.iterdir()) == []


def test_a_ram_disk_without_room_or_missing_is_not_used(ram_disk: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(noxfile, "RAM_NEEDED", os.statvfs(ram_disk).f_bavail * os.statvfs(ram_disk).f_frsize + 1)
    with noxfile._temporary_files(Mock(spec=nox.Session)) as env:
        assert env == {}
    monkeypatch.setattr(noxfile, "RAM_NEEDED", 1024)
    monkeypatch.setattr(noxfile, "RAM_DISK", ram_disk / "none")
    with noxfile._temporary_files(Mock(spec=nox.Session)) as env:
        assert env == {}
    assert list(ram_disk.iterdir()) == []
