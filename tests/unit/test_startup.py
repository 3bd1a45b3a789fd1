"""What every command pays before it does anything: the modules `inv` imports with tasks.py."""

from __future__ import annotations

import subprocess
import sys

import docker.errors

from deploykit.commands import core
from deploykit.config import load_config
from deploykit.errors import StepFailed
from tests.conftest import REPO


def test_a_command_imports_neither_docker_nor_requests_until_it_touches_an_image_or_a_registry() -> None:
    """docker and requests take 40-60 ms to import; `inv deploy.auto` with nothing to deploy, `inv history`, `inv
    diff` touch neither an image nor a registry, so tasks.py and deploykit must not import them on their own."""
    probe = "import sys, tasks; print(sorted(m for m in ('docker', 'requests') if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]", done.stdout + done.stderr


def test_a_docker_failure_in_a_step_is_still_said_as_one() -> None:
    """The translator knows docker's errors without importing docker (by the module an image step imported)."""
    env = load_config(REPO / "deploy.toml").environment("sandbox")
    translated = core._translator(env)(docker.errors.DockerException("the engine hung up"))
    assert isinstance(translated, StepFailed) and translated.message == "the Docker engine failed: the engine hung up"
    assert core._translator(env)(ValueError("not docker's")) is None
