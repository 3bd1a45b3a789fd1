"""The sandbox's settings: the ``[sandbox]`` table of deploy.toml, validated here.

Every address is on 127.0.0.1; ports are configurable so two checkouts can run side by side.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

ACCOUNT_ID = "123456789012"  # moto's default account: what the sandbox's ARNs carry


# The sandbox server's own routes (lifecycle asks them without importing the server, and so moto): its parts and
# their health; the faults injected into its AWS answers (sandbox.server, "Fault injection").
STATUS_PATH = "/_sandbox/status"
FAULTS_PATH = "/_sandbox/faults"
# The status route's answer carries the sandbox server's pid in this header: lifecycle tells by it the server it
# started from another checkout's, and either from another program that holds the port.
PID_HEADER = "X-Deploykit-Sandbox-Pid"
# The label of each task container a sandbox starts, its value the sandbox's state folder (Settings.task_owner): the
# sandbox removes its own at its stop and start, and lifecycle those of a sandbox that had to be killed.
TASK_LABEL = "io.deploykit.sandbox"


class SettingsError(Exception):
    """The [sandbox] table of deploy.toml is malformed, or disagrees with the environments on the sandbox."""

    def __init__(self, message: str, next_step: str | None = None) -> None:
        super().__init__(message)
        self.next_step = next_step


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
    # seconds Lambda takes to allocate an alias's or version's provisioned concurrency (on AWS a minute or more)
    provisioned_concurrency_seconds: float = 1.0

    @property
    def state_dir(self) -> Path:
        return self.root / ".sandbox"

    @property
    def task_owner(self) -> str:
        """The value of TASK_LABEL on this checkout's task containers."""
        return str(self.state_dir)

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.aws_port}"

    @property
    def registry_host(self) -> str:
        return f"127.0.0.1:{self.registry_port}"


def load_settings(deploy_toml: Path) -> Settings:
    """Read [sandbox] (every key optional) and the sandbox environment's region from deploy.toml."""
    text = deploy_toml.read_bytes().decode("utf-8-sig")  # UTF-8, a byte order mark left out
    return settings_of(tomllib.loads(text), deploy_toml)


def settings_of(raw: dict[str, Any], deploy_toml: Path) -> Settings:
    """:func:`load_settings` of deploy.toml already parsed (``raw``, read, never changed): a task's, read once."""
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
        elif key == "provisioned_concurrency_seconds":
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 600:
                raise SettingsError(
                    f"{deploy_toml}: sandbox.provisioned_concurrency_seconds must be a number of seconds, 0 to 600"
                )
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
    _check_environments(settings, raw.get("environments", {}), deploy_toml)
    return settings


def lambda_modules(deploy_toml: Path) -> tuple[str, ...]:
    """What the sandbox's functions may import from its own interpreter beyond Lambda's runtime: deploy.toml's
    ``[build] lambda_runtime_modules`` (a layer's on AWS; the sandbox mounts no layer), as the file says now (read
    as each function's worker starts: a change needs no restart); none when it is unreadable (deploykit says why)."""
    try:
        build = tomllib.loads(deploy_toml.read_bytes().decode("utf-8-sig")).get("build")
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return ()
    modules = build.get("lambda_runtime_modules") if isinstance(build, dict) else None
    return tuple(m for m in modules if isinstance(m, str)) if isinstance(modules, list) else ()


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


LOOPBACK = ("127.0.0.1", "localhost")
# URLs that may name a port of their own on this machine (a plain registry of one's own, a proxy in front of the load
# balancer): said only beside a URL of the sandbox's AWS endpoint or API Gateway that names another port than [sandbox]
SECONDARY = ("registry", "endpoints.alb_url")


def _check_environments(settings: Settings, environments: Any, deploy_toml: Path) -> None:
    """The environments on the sandbox name its ports: [environments.sandbox] when its endpoint_url is on this machine,
    and any other environment on the sandbox's AWS endpoint (prod beside it). A URL of theirs on 127.0.0.1 or localhost
    naming another port than [sandbox] gives (the ports of [sandbox] changed alone, for a sandbox of a second checkout
    of its own) would have the commands talk to whatever listens there: the other checkout's sandbox, without a word.
    An environment whose endpoint is elsewhere (AWS, another local AWS on another port) is not the sandbox's."""
    if not isinstance(environments, dict):
        return  # deploykit's own check of deploy.toml says what is wrong with it
    expected = {
        "endpoint_url": ("aws_port", (settings.aws_port,)),
        "registry": ("registry_port", (settings.registry_port, settings.registry_backend_port)),
        "endpoints.api_url": ("api_port", (settings.api_port,)),
        "endpoints.jwks_url": ("aws_port", (settings.aws_port,)),
        "endpoints.alb_url": ("listener_ports", tuple(settings.listener_ports.values())),
    }
    for name, table in environments.items():
        if not isinstance(table, dict) or "*" in name:
            continue
        endpoint = _loopback_port(table.get("endpoint_url"))
        if endpoint is None or (name != "sandbox" and endpoint != settings.aws_port):
            continue  # not on this machine, or another local AWS beside the sandbox's
        given = table.get("endpoints")
        endpoints: dict[str, Any] = given if isinstance(given, dict) else {}
        values = {
            "endpoint_url": table.get("endpoint_url"),
            "registry": table.get("registry"),
            **{f"endpoints.{key}": endpoints.get(key) for key in ("api_url", "jwks_url")},
        }
        if name == "sandbox":  # another environment's load balancer takes the next free port: its own
            values["endpoints.alb_url"] = endpoints.get("alb_url")
        wrong = []
        for key, value in values.items():
            port = _loopback_port(value, host_port=key == "registry")
            setting, ports = expected[key]
            if port is not None and ports and port not in ports:
                wanted = ports[0] if setting != "listener_ports" else settings.listener_ports.get(80, ports[0])
                wrong.append((key, str(value), port, setting, wanted))
        if any(key not in SECONDARY for key, *_ in wrong):
            said = ", ".join(
                f"{key} = {value!r} (port {port}; [sandbox] {setting}: {wanted})"
                for key, value, port, setting, wanted in wrong
            )
            fixed = ", ".join(
                f"{key} = {value.replace(f':{port}', f':{wanted}', 1)!r}"
                for key, value, port, _setting, wanted in wrong
            )
            raise SettingsError(
                f"{deploy_toml}: environments.{name} names ports on this machine that the sandbox of [sandbox] does "
                f"not listen on: {said}; its commands would talk to whatever listens there, another checkout's "
                "sandbox perhaps",
                f"give [environments.{name}] the ports of [sandbox] ({fixed}), or set [sandbox] back to the ports "
                "it names",
            )


def _loopback_port(value: Any, *, host_port: bool = False) -> int | None:
    """The port of ``value``, a URL (``host_port``: host:port) on 127.0.0.1 or localhost; None for any other."""
    if not isinstance(value, str):
        return None
    try:
        parts = urlsplit(("//" + value) if host_port else value.strip())
        port = parts.port or {"http": 80, "https": 443}.get(parts.scheme)
    except ValueError:
        return None  # deploykit's own check of deploy.toml says what is wrong with it
    return port if parts.hostname in LOOPBACK else None
