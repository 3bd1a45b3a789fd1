"""Python to deploy that does not compile, caught before anything is built or deployed.

A save half made (``inv deploy.auto --watch`` deploys every save) or a typo in a commit would otherwise go the whole
way: on the app's chain an image built and pushed, a revision rolled out, tasks that crash at their import,
wait-healthy's failure and the automatic rollback (seconds on the sandbox, minutes on AWS), and a failed run in the
history; on a Lambda function a version published that raises on every call until the canary or smoke catches it; on
a stack the synthesis failing with a traceback. Compiling the changed files takes milliseconds.

It is Python's own ``compile`` of each file as the work tree has it, with the Python that runs deploykit (its
warnings silenced): it finds what that Python rejects (an unclosed bracket, a stray indent), not a name that is
wrong. Syntax only a newer Python accepts (an image on a newer one than deploykit's) is rejected too:
``DEPLOYKIT_SKIP_COMPILE_CHECK=1`` turns the check off. A file it cannot judge (nested too deep for the compiler
here, unreadable) is passed over: the deploy finds out.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from pathlib import Path

from deploykit import git, lambda_chain
from deploykit.changes import NOT_DEPLOYED, ChangeSet, StackUsage, classify, stack_usage_in_worktree
from deploykit.config import Config
from deploykit.errors import UsageError
from deploykit.switches import switch, switched_on

CODE_KINDS = ("app", "lambda", "stack")  # the kinds of change whose Python is deployed (or synthesized)
SKIP_ENV = switch("DEPLOYKIT_SKIP_COMPILE_CHECK")


def skipped() -> bool:
    """Whether ``DEPLOYKIT_SKIP_COMPILE_CHECK=1`` turns the check off."""
    return switched_on(SKIP_ENV)


def python_errors(root: Path, paths: Iterable[str]) -> list[str]:
    """``path:line: message`` for each of ``paths`` (relative to ``root``, ``.py`` ones, those that exist) that does
    not compile, in the order given; none when the check is off."""
    if skipped():
        return []
    errors = []
    for path in dict.fromkeys(paths):
        file = root / path
        if not path.endswith(".py") or not file.is_file():
            continue
        try:
            with warnings.catch_warnings():  # SyntaxWarnings (an escape, `is` with a literal): never an error here
                warnings.simplefilter("ignore")
                compile(file.read_bytes(), path, "exec", dont_inherit=True)
        except SyntaxError as exc:
            errors.append(f"{path}:{exc.lineno or '?'}: {exc.msg}")
        except ValueError as exc:  # null bytes in the source
            errors.append(f"{path}: {exc}")
        except (RecursionError, MemoryError, OSError):  # not judged here (see the module's docstring)
            continue
    return errors


def component_code(config: Config, component: str, folder: str, *, usage: StackUsage | None = None) -> list[str]:
    """The Python files of ``folder`` in the work tree that deploy.toml's rules give to ``component`` (``app``,
    ``lambda:<fn>``); none when the folder is not inside the checkout. ``usage``: the CDK modules' import graph, read
    from the work tree for each CDK module when not given."""
    if not (config.root / folder).resolve().is_relative_to(config.root.resolve()):
        return []
    return [
        path
        for path in git.worktree_files(config.root, folder or ".")
        if path.endswith(".py") and any(t.component == component for t in classify(config, path, usage=usage))
    ]


def folder_of(config: Config, component: str) -> str | None:
    """Where a component's own code is (the app's build context, a function's folder); None for a stack (its
    synthesis reads the CDK app)."""
    if component == "app":
        return config.build.context
    if component.startswith("lambda:"):
        return f"{lambda_chain.LAMBDA_FOLDER}/{component.partition(':')[2]}"
    return None


def every_code(config: Config) -> list[str]:
    """The Python of the app and of every function of lambda/: what a deploy of everything builds and packages."""
    components = ["app", *(f"lambda:{fn}" for fn in lambda_chain.function_names(config))]
    return [
        path
        for component in components
        for path in component_code(config, component, folder_of(config, component) or "")
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
        raise UsageError(
            said(errors, which),
            next_step=f"fix it and deploy again (nothing was built or deployed); {SKIP_ENV}=1 skips the check (a "
            "runtime newer than deploykit's Python)",
        )


def changed_code(config: Config, found: ChangeSet) -> list[str]:
    """The Python to deploy that changed: the changed paths of the app, a function or a stack (not deleted, and
    still theirs: a file renamed out of one is not deployed), every file of a component never deployed, and every
    file of a submodule's folder that changed (git names the folder alone)."""
    paths = []
    # a submodule holding CDK modules: the import graph read once, not for each module of it and each stack
    usage = stack_usage_in_worktree(config) if any(c.submodule and c.kind == "stack" for c in found.changes) else None
    for change in found.changes:
        if change.kind not in CODE_KINDS or change.status == "D" or change.component is None:
            continue
        if not change.path:  # the whole component is new (or its live build was of a dirty tree)
            folder = folder_of(config, change.component) if change.reason == NOT_DEPLOYED else None
            paths += component_code(config, change.component, folder) if folder is not None else []
        elif change.submodule:  # a submodule's folder: the files it holds
            paths += component_code(config, change.component, change.path, usage=usage)
        elif any(t.component == change.component for t in classify(config, change.path)):
            paths.append(change.path)
    return paths
