"""Integration fixtures: the real Docker engine, a real registry on 127.0.0.1, the local base image.

In CI (``CI`` set) a missing Docker engine or registry binary is a failure, never a skip.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from deploykit import commands
from deploykit.config import load_config
from deploykit.errors import DeployKitError
from deploykit.images import docker_client
from sandbox import lifecycle
from tests.conftest import REPO

CA_DIR = "/usr/local/share/ca-certificates"


def _unavailable(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI needs it: run the suite through ./dev, which installs and starts it)")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def docker_engine() -> docker.DockerClient:
    try:
        return docker_client()
    except DeployKitError as exc:
        _unavailable(str(exc))
        raise


# below the kernel's ephemeral range (32768-60999 on Debian), where bind(0) and outgoing connections take their
# ports, and below the task ports of the private sandboxes (21000-29000)
FREE_PORTS = range(10000, 20000)
_HANDED_OUT: set[int] = set()


def free_port() -> int:
    """A port nothing listens on, for a server a test starts later, never the same twice in this process. Not one of
    bind(0)'s: the tests running beside the integration ones (the backend's moto servers) bind ports of the ephemeral
    range, and one took a private sandbox's port between this pick and the sandbox's start once (CI: its status
    route answered by another server, the sandbox then gone)."""
    for _ in range(200):
        port = random.choice(FREE_PORTS)
        if port in _HANDED_OUT:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _HANDED_OUT.add(port)
        return port
    raise RuntimeError(f"no free port in {FREE_PORTS.start}-{FREE_PORTS.stop - 1} on 127.0.0.1")


class LocalRegistry:
    """The CNCF distribution registry (Debian's docker-registry) on 127.0.0.1, started by pid."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = free_port()
        self.process = lifecycle.Process("test registry", root / "registry.pid", root / "registry.log")

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        lifecycle.start_registry(self.process, self.root, self.port, self.root)

    def stop(self) -> None:
        self.process.stop(timeout=10)


@pytest.fixture(scope="session")
def local_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalRegistry]:
    if shutil.which("docker-registry") is None:
        _unavailable("docker-registry is not installed (Debian package docker-registry)")
    registry = LocalRegistry(tmp_path_factory.mktemp("registry"))
    registry.start()
    yield registry
    registry.stop()


@pytest.fixture(scope="session")
def base_image(docker_engine: docker.DockerClient) -> str:
    """The local base image of the repository's deploy.toml, built once (about a minute) and cached."""
    commands.base_image(runtime=commands.Runtime(config_path=REPO / "deploy.toml"))
    return load_config(REPO / "deploy.toml").build.base.name


@pytest.fixture
def repository_name(request: pytest.FixtureRequest) -> str:
    """A repository name of this test's own, so tests never see each other's images."""
    return "it-" + request.node.name.lower().replace("_", "-")[:40].strip("-") + f"-{os.getpid()}"


@pytest.fixture
def cleanup_images(docker_engine: docker.DockerClient, repository_name: str) -> Iterator[None]:
    yield
    for image in docker_engine.images.list():
        # its tags, and the references by digest a pull leaves (repository@sha256:..., listed as <none>)
        for ref in [*image.tags, *(image.attrs.get("RepoDigests") or [])]:
            if repository_name in ref:
                with contextlib.suppress(docker.errors.APIError):
                    docker_engine.images.remove(ref, noprune=False)


@pytest.fixture(scope="module")
def sandbox_deployed_project(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, docker_engine: docker.DockerClient
) -> Iterator[Path]:
    """A checkout of the whole platform on its private sandbox, deployed once for the module (its only deploy.full)."""
    from tests.integration.sandbox_support import deployed_sandbox_project  # it imports this module

    with deployed_sandbox_project(tmp_path_factory.mktemp(request.module.__name__.rpartition(".")[2])) as root:
        yield root
