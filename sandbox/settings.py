"""The sandbox's settings: the ``[sandbox]`` table of deploy.toml, validated here.

Every address is on 127.0.0.1; ports are configurable so two checkouts can run side by side.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

ACCOUNT_ID = "123456789012"  # moto's default account: what the sandbox's ARNs carry


# The sandbox server's own routes (lifecycle asks them without importing the server, and so moto): its parts and
# their health; the faults injected into its AWS answers (sandbox.server, "Fault injection").
STATUS_PATH = "/_sandbox/status"
FAULTS_PATH = "/_sandbox/faults"
# The status route's answer carries the sandbox server's pid in this header: lifecycle tells by it the server it
# started from another checkout's, and either from another program that holds the port.
PID_HEADER = "X-Deploykit-Sandbox-Pid"


class SettingsError(Exception):
    """The [sandbox] table of deploy.toml is malformed."""


@dataclass(frozen=True)
class Settings:
    root: Path  # the project root (deploy.toml's folder)
    region: str = "us-east-1"
    aws_port: int = 4566  # the AWS endpoint (moto, extended)
    registry_port: int = 5000  # the registry as clients see it (ECR auth and tag immutability in front)
    registry_backend_port: int = 5001  # the distribution registry itself, behind the front
    api_port: int = 4567  # API Gateway stages
    task_ports: tuple[int, int] = (20000, 20999)  # host ports handed to task containers
    listener_ports: dict[int, int] = field(default_factory=lambda: {80: 8080})  # ALB listener port → local port
    circuit_breaker_threshold: int = 3  # failed new tasks before a deployment is rolled back
    # Extra environment of task containers: name → template over the task's own variables, {endpoint_url} and
    # {region}; a variable the task definition sets itself, or a template naming one the task lacks, is left out.
    task_environment: dict[str, str] = field(default_factory=dict)
    tick: float = 0.25  # seconds between two passes of the ECS/ALB reconciler

    @property
    def state_dir(self) -> Path:
        return self.root / ".sandbox"

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.aws_port}"

    @property
    def registry_host(self) -> str:
        return f"127.0.0.1:{self.registry_port}"


def load_settings(deploy_toml: Path) -> Settings:
    """Read [sandbox] (every key optional) and the sandbox environment's region from deploy.toml."""
    raw = tomllib.loads(deploy_toml.read_bytes().decode("utf-8-sig"))  # UTF-8, a byte order mark left out
    table: dict[str, Any] = dict(raw.get("sandbox", {}))
    region = raw.get("environments", {}).get("sandbox", {}).get("region", "us-east-1")
    known = {f.name for f in fields(Settings)} - {"root", "region"}
    unknown = set(table) - known
    if unknown:
        raise SettingsError(
            f"{deploy_toml}: unknown key(s) in [sandbox]: {', '.join(sorted(unknown))} "
            f"(known: {', '.join(sorted(known))})"
        )
    values: dict[str, Any] = {"root": deploy_toml.resolve().parent, "region": region}
    for key, value in table.items():
        if key == "task_ports":
            if not (isinstance(value, list) and len(value) == 2 and all(_is_port(v) for v in value)):
                raise SettingsError(f"{deploy_toml}: sandbox.task_ports must be [first, last], two ports (1-65535)")
            if value[0] > value[1]:
                raise SettingsError(f"{deploy_toml}: sandbox.task_ports = {value}: the first port comes after the last")
            values[key] = (value[0], value[1])
        elif key == "listener_ports":
            if not (
                isinstance(value, dict)
                and all(k.isascii() and k.isdigit() and _is_port(int(k)) and _is_port(v) for k, v in value.items())
            ):
                raise SettingsError(
                    f"{deploy_toml}: sandbox.listener_ports must be a table of port = port (1-65535), "
                    "like { 80 = 8080 }"
                )
            values[key] = {int(k): v for k, v in value.items()}
        elif key == "task_environment":
            if not (isinstance(value, dict) and all(isinstance(v, str) for v in value.values())):
                raise SettingsError(f'{deploy_toml}: sandbox.task_environment must be a table of NAME = "template"')
            values[key] = dict(value)
        elif key == "tick":
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 10:
                raise SettingsError(f"{deploy_toml}: sandbox.tick must be a number of seconds, more than 0, at most 10")
            values[key] = float(value)
        elif key == "circuit_breaker_threshold":
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise SettingsError(
                    f"{deploy_toml}: sandbox.circuit_breaker_threshold must be a whole number, 1 or more"
                )
            values[key] = value
        else:
            if not _is_port(value):
                raise SettingsError(f"{deploy_toml}: sandbox.{key} must be a port, a whole number from 1 to 65535")
            values[key] = value
    settings = Settings(**values)
    _check_ports(settings, deploy_toml)
    return settings


def _is_port(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 65535


def _check_ports(settings: Settings, deploy_toml: Path) -> None:
    """No port taken twice, none inside task_ports."""
    taken: dict[int, str] = {}
    named = {key: getattr(settings, key) for key in ("aws_port", "registry_port", "registry_backend_port", "api_port")}
    named.update({f"listener_ports.{listen}": port for listen, port in settings.listener_ports.items()})
    first, last = settings.task_ports
    for key, port in named.items():
        if port in taken:
            raise SettingsError(f"{deploy_toml}: sandbox.{taken[port]} and sandbox.{key} are both port {port}")
        if first <= port <= last:
            raise SettingsError(
                f"{deploy_toml}: sandbox.{key} = {port} is within task_ports [{first}, {last}], which tasks are given"
            )
        taken[port] = key
