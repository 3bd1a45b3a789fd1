"""What every command pays before it does anything: the modules `inv` imports with tasks.py."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import docker.errors
import pytest
from invoke.context import Context as InvokeContext
from invoke.exceptions import Exit

import tasks
from deploykit import config
from deploykit.commands import core
from deploykit.config import load_config
from deploykit.errors import ConfigError, StepFailed, UsageError
from sandbox import lifecycle
from tests.conftest import REPO


def test_a_command_imports_neither_docker_nor_requests_until_it_touches_an_image_or_a_registry() -> None:
    """docker and requests take 40-60 ms to import; `inv deploy.auto` with nothing to deploy, `inv history`, `inv
    diff` touch neither an image nor a registry, so tasks.py and deploykit must not import them on their own. Nor
    tabulate (and wcwidth with it, about 20 ms) until a command prints a table (deploykit.output.tabulate)."""
    probe = "import sys, tasks; print(sorted(m for m in ('docker', 'requests', 'tabulate') if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]", done.stdout + done.stderr


def test_a_docker_failure_in_a_step_is_still_said_as_one() -> None:
    """The translator knows docker's errors without importing docker (by the module an image step imported)."""
    env = load_config(REPO / "deploy.toml").environment("sandbox")
    translated = core._translator(env)(docker.errors.DockerException("the engine hung up"))
    assert isinstance(translated, StepFailed) and translated.message == "the Docker engine failed: the engine hung up"
    assert core._translator(env)(ValueError("not docker's")) is None


class _Parses:
    """A spy on tomllib.loads and config.parse_config: how many times deploy.toml was parsed, and validated."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.parsed = self.validated = 0
        loads, parse = tomllib.loads, config.parse_config

        def counted_loads(text: str, **kwargs: Any) -> dict[str, Any]:
            self.parsed += 1
            return loads(text, **kwargs)

        def counted_parse(raw: dict[str, Any], path: Path) -> config.Config:
            self.validated += 1
            return parse(raw, path)

        monkeypatch.setattr(tomllib, "loads", counted_loads)
        monkeypatch.setattr(config, "parse_config", counted_parse)


def test_a_task_parses_and_validates_deploy_toml_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """`inv tasks` on the sandbox, as every task that may start it: the check of the whole file before the task, its
    [sandbox] settings, the command's environment, then the settings again as the sandbox is found not running. Each
    parsed and validated the file anew (four parses, two validations): one of each now."""
    monkeypatch.setenv("DEPLOYKIT_CONFIG", str(REPO / "deploy.toml"))
    monkeypatch.delenv("DEPLOYKIT_ENV", raising=False)
    asked: list[Any] = []

    def not_running(settings: Any) -> Any:  # the sandbox's settings reached it: stop the task there
        asked.append(settings)
        raise lifecycle.SandboxError("the sandbox is not running (a test's)", "nothing")

    monkeypatch.setattr(lifecycle, "survey", not_running)
    parses = _Parses(monkeypatch)
    with pytest.raises(Exit) as refused:
        tasks.tasks_list(InvokeContext(), env="sandbox")
    assert refused.value.code == 2 and len(asked) == 1 and asked[0].aws_port == 4566
    assert (parses.parsed, parses.validated) == (1, 1)
    assert tasks._CONFIGS.get() is None  # the task's deploy.toml is forgotten with it

    with pytest.raises(Exit):
        tasks.tasks_list(InvokeContext(), env="sandbox")
    assert (parses.parsed, parses.validated) == (2, 2)  # each task reads the file anew


def test_a_command_reads_an_edit_of_deploy_toml_and_two_commands_share_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The cache is the command's (Runtime.configs): an edit of the same length, within one tick of the file
    system's clock (a size and a modification time would not tell it), is read at its next ask (a command run again
    after a lock wait); another Runtime reads the file itself."""
    toml = tmp_path / "deploy.toml"
    toml.write_text((REPO / "deploy.toml").read_text())
    parses = _Parses(monkeypatch)
    runtime = core.Runtime(config_path=toml)
    first = runtime.load_config()
    assert runtime.load_config() is first and core.load_env(runtime, "sandbox")[0] is first
    assert runtime.configs.toml(toml)["environments"]["sandbox"]["region"] == first.environment("sandbox").region
    assert (parses.parsed, parses.validated) == (1, 1)

    stat = toml.stat()
    toml.write_text(toml.read_text().replace('region = "us-east-1"', 'region = "us-east-2"', 1))
    os.utime(toml, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # the same size and modification time
    assert toml.stat().st_size == stat.st_size
    assert runtime.load_config().environment("sandbox").region == "us-east-2"
    assert core.Runtime(config_path=toml).load_config() is not runtime.load_config()
    assert (parses.parsed, parses.validated) == (3, 3)


def test_a_broken_deploy_toml_is_refused_at_every_ask(tmp_path: Path) -> None:
    """A file that does not validate is not kept as if it did: each ask says so again (exit 2)."""
    toml = tmp_path / "deploy.toml"
    toml.write_text("[environments]\n")
    configs = config.ConfigCache()
    for _ in range(2):
        with pytest.raises(ConfigError, match=r"missing \[environments.<name>\] tables"):
            configs.load(toml)
    toml.write_text("[environments\n")
    with pytest.raises(ConfigError, match="is not valid TOML"):
        configs.toml(toml)


def test_behind_a_proxy_inv_sends_its_calls_to_this_machine_past_it() -> None:
    """HTTP_PROXY set and no NO_PROXY naming 127.0.0.1: every client deploykit and its plugins make (botocore, urllib,
    requests) sent the sandbox's calls to the proxy. Loaded by inv, tasks.py lists this machine in NO_PROXY, keeping
    what it listed."""
    probe = "import os, tasks; print(os.environ['NO_PROXY']); print(os.environ['no_proxy'])"
    environ = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    proxied = {**environ, "HTTPS_PROXY": "http://127.0.0.1:3128", "NO_PROXY": ".corp.example"}
    said = subprocess.run([sys.executable, "-c", probe], env=proxied, cwd=REPO, capture_output=True, text=True)
    assert said.stdout.splitlines() == [".corp.example,localhost,127.0.0.1,::1,[::1]"] * 2, said.stderr
    probe = "import os, tasks; print([k for k in os.environ if 'proxy' in k.lower()])"
    said = subprocess.run([sys.executable, "-c", probe], env=environ, cwd=REPO, capture_output=True, text=True)
    assert said.stdout.strip() == "[]", said.stderr  # no proxy: the environment is left as it is


@pytest.mark.parametrize("where", ["tcp://nonsense:abc", "tcp://127.0.0.1:99999", "tcp://[::1"])
def test_a_docker_host_that_is_no_address_is_said_not_a_traceback(where: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The Docker SDK raises ValueError for such a DOCKER_HOST: a traceback, exit 1, even for inv history on the
    sandbox (which asks whether its engine runs)."""
    from deploykit import images

    monkeypatch.setenv("DOCKER_HOST", where)
    with pytest.raises(UsageError) as refused:
        images.docker_client()
    assert refused.value.message.startswith(f"DOCKER_HOST={where!r} is not an address of a Docker engine: ")
    assert refused.value.exit_code == 2 and refused.value.next_step == "fix DOCKER_HOST, or unset it"
    with pytest.raises(lifecycle.SandboxError, match=r"^DOCKER_HOST=.* is not an address of a Docker engine: "):
        lifecycle.check_docker()
