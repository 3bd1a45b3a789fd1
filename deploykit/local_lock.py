"""One command of this checkout at a time on a piece of its local state.

The environment's deploy lock (:mod:`deploykit.lock`, in S3) keeps two deploys of one environment apart, from any
machine. It does not keep apart two commands of one checkout that write the same local files: ``inv deploy.auto
--env dev`` in one terminal and ``inv diff --env dev`` in another both synthesize into ``cdk.out/dev/``, two
rollbacks to one commit export its files into one folder, two ``inv lookup`` runs write ``cdk/cdk.context.json``.
Each such writer holds this lock (an exclusive ``flock`` of a file beside what it guards, under ``cdk.out/``, which
git ignores) while it writes and reads back: the second waits for the first, saying so. The system lets go of it
however the command ends, killed included; a lock file left behind holds nothing.
"""

from __future__ import annotations

import fcntl
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

LOCKS = ".locks"  # the folder of the lock files, in cdk.out/


def lock_file(out_root: Path, name: str) -> Path:
    """The lock file of ``name`` (a folder or a file of the checkout's local state) under ``out_root`` (cdk.out)."""
    return out_root / LOCKS / f"{name.replace('/', '_')}.lock"


@contextmanager
def held(path: Path, *, what: str, say: Callable[[str], None] | None = None) -> Iterator[None]:
    """The lock of ``path`` (made, with its folder, when missing) held for the block; ``what`` names what it guards
    when another command of this checkout holds it and this one waits (said through ``say``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if say:
                say(f"⏳ another command of this checkout is writing {what}: waiting for it")
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
