"""nox sessions. Run them through ./dev, which prepares .venv and the Docker engine:

    ./dev nox -s tests          # the whole suite: unit, functional (moto), integration (Docker)
    ./dev nox -s tests -- -m "not integration" -x
    ./dev nox -s lint typecheck
    ./dev nox -s smoke -- --env sandbox --only alb,auth

Sessions run in the project's .venv (made by ./dev from pyproject.toml) rather than making their own,
so a session starts in well under a second and runs the very tools the developer has.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import nox

nox.options.sessions = ["tests", "cdk", "lint", "typecheck"]
nox.options.default_venv_backend = "none"

PY_SOURCES = ["deploykit", "sandbox", "plugins", "bench", "tests", "backend", "lambda", "cdk", "tasks.py", "noxfile.py"]


def _run(session: nox.Session, *command: str, env: dict[str, str] | None = None) -> None:
    """Every session is one command plus whatever the caller passed after `--`."""
    session.run(*command, *session.posargs, external=True, env=env)


@nox.session
def tests(session: nox.Session) -> None:
    """Run the test suite: unit, functional (moto) and integration (Docker engine, local registry).

    With no arguments, two pytest runs side by side: the integration tests, one after the other as always (they share
    the Docker engine and its images, and their timings assume no other rollout beside them), and everything else, whose
    CPU-bound minutes overlap the integration tests' waiting (at a lower priority: :data:`NICER`); the second run's
    output follows the first's. With arguments (``nox -s tests -- tests/unit``) it is one plain pytest run."""
    with _temporary_files(session) as env:
        if session.posargs:
            _run(session, "pytest", env=env)
            return
        log = Path(session.create_tmp()) / "tests-not-integration.log"
        with log.open("w") as out:
            rest = subprocess.Popen(
                [sys.executable, "-m", "pytest", "-m", "not integration", "-p", "no:cacheprovider"],
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, **env},
            )
            # below the integration tests: the CPU they leave is enough for these, and what they take from the
            # integration tests (their rollouts, polls and timings) lengthened that run by a tenth, the suite's length
            os.setpriority(os.PRIO_PROCESS, rest.pid, NICER)
            try:
                session.run(sys.executable, "-m", "pytest", "-m", "integration", external=True, env=env)
            finally:
                code = rest.wait()
                session.log("the unit, functional and application tests (run beside the integration tests):")
                print(log.read_text(), flush=True)
        if code != 0:
            session.error(f"the unit, functional and application tests failed (exit {code}); their output is above")


NICER = 10  # the niceness of the tests run beside the integration tests (and of what they start)

RAM_DISK = Path("/dev/shm")
RAM_NEEDED = 4 << 30  # bytes free on it: a whole run leaves about 1 GiB (projects, git repositories, registries)


@contextmanager
def _temporary_files(session: nox.Session) -> Iterator[dict[str, str]]:
    """The tests' temporary files (TMPDIR: pytest's tmp_path, the projects, their sandboxes' registries) in a folder
    of their own on the machine's RAM disk, when it has one with room that runs programs; removed after a run that
    passed, kept (and named) after one that failed. On the disk, the kernel's writeback of those files (thousands of
    git repositories, each deploy's image layers) took CPU time from the tests, and nice cannot lower its share: the
    integration tests ran 2 minutes longer beside the others than alone. TMPDIR set by the caller is kept."""
    if os.environ.get("TMPDIR") or not _roomy_ram_disk():
        yield {}
        return
    folder = tempfile.mkdtemp(prefix="deploykit-tests-", dir=RAM_DISK)
    try:
        yield {"TMPDIR": folder}
    except BaseException:
        session.log(f"the tests' temporary files are kept in {folder} (RAM: rm -rf it when done)")
        raise
    shutil.rmtree(folder, ignore_errors=True)


def _roomy_ram_disk() -> bool:
    try:
        found = os.statvfs(RAM_DISK)
    except OSError:
        return False
    return not found.f_flag & os.ST_NOEXEC and found.f_bavail * found.f_frsize >= RAM_NEEDED


@nox.session(default=False)
def smoke(session: nox.Session) -> None:
    """Run the checks against a deployed environment, as `inv smoke` does: nox -s smoke -- --env dev --junit out.xml

    Not part of the default sessions: it needs a deployed environment (the sandbox starts by itself).
    """
    _run(session, sys.executable, "-m", "invoke", "smoke")  # nox's own Python: the project's .venv


@nox.session
def lint(session: nox.Session) -> None:
    """Check style and common bugs with ruff (lint and format check)."""
    session.run("ruff", "check", *PY_SOURCES, *session.posargs, external=True)
    session.run("ruff", "format", "--check", "--diff", *PY_SOURCES, external=True)


@nox.session
def typecheck(session: nox.Session) -> None:
    """Check types with mypy (strict) on deploykit, tasks.py and noxfile.py."""
    _run(session, "mypy")


@nox.session
def cdk(session: nox.Session) -> None:
    """Synthesize the CDK app into cdk.out/, lint its templates, then run the stack tests (cdk/tests).

    Slow (synthesis starts node through jsii, about 6 s; the tests synthesize once more in-process), so it is
    kept out of `tests`. Arguments after `--` go to pytest: ./dev nox -s cdk -- -k rollout
    """
    session.run("python", "cdk/app.py", env={"CDK_OUTDIR": "cdk.out"}, external=True)
    templates = sorted(str(path) for path in Path("cdk.out").glob("*.template.json"))
    # W3005 (a DependsOn that a Ref already implies) is how CDK writes templates; W3010 (hard-coded AZs) is
    # deliberate: explicit zones keep synthesis offline.
    session.run("cfn-lint", "--ignore-checks", "W3005", "W3010", "--", *templates, external=True)
    _run(session, "pytest", "cdk/tests")
