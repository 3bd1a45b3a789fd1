"""The CDK stack tests: the app is built and synthesized ONCE per session (it takes seconds), then read.

These tests live outside the project's `testpaths`, so plain `pytest` (the fast suite) never collects them;
they run in the nox session `cdk` (`pytest cdk/tests`). Every test here carries the `cdk` marker.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

CDK_DIR = Path(__file__).resolve().parents[1]
for path in (CDK_DIR, CDK_DIR / "tests"):  # `stacks` and `cdk_helpers`, whatever the import mode
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from aws_cdk.assertions import Template  # noqa: E402
from cdk_helpers import Synthesized, synthesize  # noqa: E402


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "cdk: synthesizes the CDK app (slow; run by `nox -s cdk`)")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if CDK_DIR in Path(str(item.path)).parents:
            item.add_marker(pytest.mark.cdk)


@pytest.fixture(scope="session")
def synthesized(tmp_path_factory: pytest.TempPathFactory) -> Synthesized:
    """The app with default (sandbox) settings, synthesized once for the whole session."""
    return synthesize(tmp_path_factory.mktemp("cdk.out"))


@pytest.fixture(scope="session")
def registry(synthesized: Synthesized) -> Template:
    return synthesized.template("registry")


@pytest.fixture(scope="session")
def data(synthesized: Synthesized) -> Template:
    return synthesized.template("data")


@pytest.fixture(scope="session")
def auth(synthesized: Synthesized) -> Template:
    return synthesized.template("auth")


@pytest.fixture(scope="session")
def fargate(synthesized: Synthesized) -> Template:
    return synthesized.template("fargate")


@pytest.fixture(scope="session")
def api(synthesized: Synthesized) -> Template:
    return synthesized.template("api")
