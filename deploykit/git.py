"""The git facts a deploy is named after: the HEAD SHA, and whether the work tree is clean.

Images are immutable and named by the commit they were built from. A build from a dirty tree is
refused unless asked for; then its tag says so and carries a hash of the uncommitted diff, so two
different dirty trees never share a tag.
"""

from __future__ import annotations

import hashlib
import subprocess
from dataclasses import dataclass
from pathlib import Path

from deploykit.errors import UsageError

SHORT_SHA = 12


def _git(root: Path, *args: str) -> bytes:
    try:
        done = subprocess.run(["git", *args], cwd=root, capture_output=True, check=False)
    except FileNotFoundError:
        raise UsageError("git is not installed", next_step="install git (apt-get install git)") from None
    if done.returncode != 0:
        err = done.stderr.decode(errors="replace").strip()
        raise UsageError(
            f"git {' '.join(args)} failed in {root}: {err}",
            next_step="run deploykit from a git checkout with at least one commit",
        )
    return done.stdout


@dataclass(frozen=True)
class Revision:
    """What is being deployed: a commit, plus the uncommitted changes if any were allowed."""

    sha: str
    dirty_paths: tuple[str, ...] = ()
    dirty_hash: str = ""

    @property
    def short(self) -> str:
        return self.sha[:SHORT_SHA]

    @property
    def dirty(self) -> bool:
        return bool(self.dirty_paths)

    @property
    def tag(self) -> str:
        """The image tag: ``<sha12>``, or ``<sha12>-dirty-<hash of the diff>``."""
        if self.dirty:
            return f"{self.short}-dirty-{self.dirty_hash[:SHORT_SHA]}"
        return self.short


def head_sha(root: Path) -> str:
    return _git(root, "rev-parse", "HEAD").decode().strip()


def dirty_paths(root: Path) -> tuple[str, ...]:
    """Paths with uncommitted changes, untracked files included (ignored files are not)."""
    out = _git(root, "status", "--porcelain=v1", "-z", "--untracked-files=all").decode(errors="replace")
    paths = []
    entries = iter(out.split("\0"))
    for entry in entries:
        if not entry:
            continue
        status, path = entry[:2], entry[3:]
        paths.append(path)
        if "R" in status or "C" in status:
            next(entries, None)  # the rename's source path follows
    return tuple(sorted(paths))


def dirty_hash(root: Path, paths: tuple[str, ...]) -> str:
    """A hash of the uncommitted diff against HEAD, untracked files' contents included."""
    digest = hashlib.sha256(_git(root, "diff", "HEAD", "--binary"))
    untracked = _git(root, "ls-files", "--others", "--exclude-standard", "-z").decode().split("\0")
    for rel in sorted(p for p in untracked if p):
        digest.update(rel.encode() + b"\0")
        file = root / rel
        if file.is_file():
            digest.update(file.read_bytes())
    digest.update("\0".join(paths).encode())
    return digest.hexdigest()


def current_revision(root: Path, *, allow_dirty: bool = False) -> Revision:
    """The revision to deploy. Refuses a dirty tree unless ``allow_dirty``."""
    sha = head_sha(root)
    paths = dirty_paths(root)
    if not paths:
        return Revision(sha)
    if not allow_dirty:
        shown = ", ".join(paths[:5]) + (f" and {len(paths) - 5} more" if len(paths) > 5 else "")
        raise UsageError(
            f"the work tree has uncommitted changes: {shown}",
            next_step="commit or stash them, or pass --allow-dirty to build a uniquely tagged dirty image",
        )
    return Revision(sha, paths, dirty_hash(root, paths))
