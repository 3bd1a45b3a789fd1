"""Changed Python that does not compile, caught before anything is built or deployed.

A save half made (``inv deploy.auto --watch`` deploys every save) or a typo in a commit would otherwise go the whole
way: on the app's chain an image built and pushed, a revision rolled out, tasks that crash at their import,
wait-healthy's failure and the automatic rollback (seconds on the sandbox, minutes on AWS), and a failed run in the
history; on a Lambda function a version published that raises on every call until the canary or smoke catches it; on
a stack the synthesis failing with a traceback. Compiling the changed files takes milliseconds.

It is Python's own ``compile`` of each file as the work tree has it, with the Python that runs deploykit: it finds
what no Python accepts (an unclosed bracket, a stray indent), not a name that is wrong, and not syntax only a newer
Python than the runtime's accepts.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from deploykit import git
from deploykit.changes import ChangeSet, classify
from deploykit.config import Config
from deploykit.errors import UsageError

CODE_KINDS = ("app", "lambda", "stack")  # the kinds of change whose Python is deployed (or synthesized)


def python_errors(root: Path, paths: Iterable[str]) -> list[str]:
    """``path:line: message`` for each of ``paths`` (relative to ``root``, ``.py`` ones, those that exist) that does
    not compile, in the order given."""
    errors = []
    for path in dict.fromkeys(paths):
        file = root / path
        if not path.endswith(".py") or not file.is_file():
            continue
        try:
            compile(file.read_bytes(), path, "exec", dont_inherit=True)
        except SyntaxError as exc:
            errors.append(f"{path}:{exc.lineno or '?'}: {exc.msg}")
        except ValueError as exc:  # null bytes in the source
            errors.append(f"{path}: {exc}")
    return errors


def component_code(config: Config, component: str, folder: str) -> list[str]:
    """The Python files of ``folder`` in the work tree that deploy.toml's rules give to ``component`` (``app``,
    ``lambda:<fn>``): what a build of it takes (deploy.app, deploy.lambda)."""
    return [
        path
        for path in git.worktree_files(config.root, folder)
        if path.endswith(".py") and any(t.component == component for t in classify(config, path))
    ]


def said(errors: list[str], which: str) -> str:
    """``N <which> Python file(s) do(es) not compile: <each error>``."""
    many = len(errors) > 1
    return f"{len(errors)} {which} Python file{'s' if many else ''} do{'' if many else 'es'} not compile: " + "; ".join(
        errors
    )


def refuse(errors: list[str], which: str) -> None:
    """UsageError naming the files of ``errors`` (:func:`python_errors`) when there are any: nothing built yet."""
    if errors:
        raise UsageError(said(errors, which), next_step="fix it and deploy again (nothing was built or deployed)")


def changed_code(found: ChangeSet) -> list[str]:
    """The changed paths of deployed code: those of the app, a function or a stack, not deleted."""
    return [c.path for c in found.changes if c.kind in CODE_KINDS and c.path and c.status != "D"]
