"""Test helpers and pytest fixtures for check-plugin authors.

Use them from your plugin's tests with ``pytest_plugins = ["deploykit.testing"]`` in your ``conftest.py`` (or
``pytest -p deploykit.testing``)::

    from deploykit.testing import plugin_checks, run_check

    def test_fleet_check_passes(check_context, fake_http):
        fake_http.add("GET", "https://alb.example.test/cars", json_body={"cars": [{"car_id": "c1"}]})
        [check] = plugin_checks(team_checks)
        assert run_check(check, check_context).status == "passed"

Fixtures: ``deploykit_env`` (an EnvConfig named ``test``), ``deploykit_endpoints`` (plausible values for every
endpoint), ``fake_http`` (a :class:`FakeHttp`), ``fake_aws`` (``Mock(spec=AwsFactory)``: set
``fake_aws.client.return_value`` or use moto with :func:`moto_aws`), and ``check_context`` made of them.
"""

from __future__ import annotations

import dataclasses
import json
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from unittest.mock import Mock

import pytest

from deploykit.aws import AwsFactory, new_session
from deploykit.checks import Check, CheckContext, CheckResult, Http, HttpError, HttpResponse, likely_meant, run_checks
from deploykit.config import Config, EnvConfig, Stacks
from deploykit.endpoints import FUNCTION_OUTPUTS, MAPPED_OUTPUTS, SCALAR_OUTPUTS, Endpoints
from deploykit.plugins import configure_plugins, get_plugin_manager
from deploykit.smoke import plugins_checks, registered_checks

__all__ = [
    "FakeHttp",
    "fake_factory",
    "moto_aws",
    "plugin_checks",
    "replace_endpoints",
    "run_check",
    "sample_endpoints",
    "sample_env",
]

ALB_URL = "https://alb.example.test"
API_URL = "https://api.example.test/prod/"


def sample_env(**overrides: Any) -> EnvConfig:
    """An environment named ``test`` (override any EnvConfig field)."""
    values: dict[str, Any] = {
        "name": "test",
        "region": "us-east-1",
        "cluster": "car-rental-cluster",
        "service": "car-rental-service",
        "container": "backend",
        "repository": "car-rental-backend",
        "stacks": Stacks(
            "CarRentalRegistryStack",
            "CarRentalDataStack",
            "CarRentalAuthStack",
            "CarRentalFargateStack",
            "CarRentalApiStack",
        ),
    }
    return EnvConfig(**(values | overrides))


def sample_endpoints(**overrides: Any) -> Endpoints:
    """Endpoints with a plausible value for every field: ALB at ``https://alb.example.test``, API below
    ``https://api.example.test/prod/``; override any field (``alb_url=...``, ``tables={...}``)."""
    values: dict[str, Any] = {key: f"test-{key.replace('_', '-')}" for key in SCALAR_OUTPUTS}
    values |= {
        "alb_url": ALB_URL,
        "api_url": API_URL,
        "api_health_url": API_URL + "health",
        "login_url": API_URL + "auth/login",
        "user_pool_id": "us-east-1_TestPool",
        "container_port": "8000",
    }
    for name, keys in MAPPED_OUTPUTS.items():
        values[name] = {key: f"test-{name}-{key}".replace("_", "-") for key in keys}
    for name in FUNCTION_OUTPUTS:  # this repository's two functions
        values[name] = {fn: f"test-{name}-{fn}".replace("_", "-") for fn in ("login_handler", "health_handler")}
    return Endpoints(env="test", region="us-east-1", **(values | overrides))


class FakeHttp(Http):
    """An Http that answers from a route table and records every request; an unknown route gets no answer."""

    def __init__(self) -> None:
        super().__init__(timeout=1.0)
        self.routes: dict[tuple[str, str], list[HttpResponse | Exception]] = {}
        self.requests: list[dict[str, Any]] = []

    def add(
        self,
        method: str,
        url: str,
        *,
        status: int = 200,
        json_body: Any = None,
        body: bytes = b"",
        headers: dict[str, str] | None = None,
        error: Exception | None = None,
    ) -> None:
        """Answer ``method url`` with this response (or raise ``error``); several adds answer in turn, the last
        one repeating."""
        answer: HttpResponse | Exception
        if error is not None:
            answer = error
        else:
            data = json.dumps(json_body).encode() if json_body is not None else body
            answer = HttpResponse(status, data, headers or {"Content-Type": "application/json"})
        self.routes.setdefault((method.upper(), url), []).append(answer)

    def request(
        self,
        method: str,
        url: str,
        *,
        json_body: Any = None,
        data: bytes | None = None,
        headers: dict[str, str] | None = None,
        timeout: float | None = None,
    ) -> HttpResponse:
        self.requests.append(
            {"method": method.upper(), "url": url, "json": json_body, "data": data, "headers": dict(headers or {})}
        )
        answers = self.routes.get((method.upper(), url))
        if not answers:
            raise HttpError(f"{method} {url}: no answer (no route in FakeHttp; add one with fake_http.add)")
        answer = answers.pop(0) if len(answers) > 1 else answers[0]
        if isinstance(answer, Exception):
            raise answer
        return answer


def plugin_checks(
    plugin: object,
    env: EnvConfig | None = None,
    *,
    name: str | None = None,
    settings: Mapping[str, Any] | None = None,
) -> list[Check]:
    """Register ``plugin`` alone under ``name`` (hook names validated as at load time), configure it as ``inv``
    does (its ``deploykit_configure`` given a deploy.toml whose ``[plugins.NAME]`` table is ``settings``, none when
    not given; a ConfigError it raises comes out as ``inv`` says it), and return the checks it registers.

    A class is made once, as the loader makes a class an entry point names. ``settings`` need ``name``, the entry
    point's: the plugin reads its table by that name, and one filed under another was read by no one (TypeError).
    A need of a check that neither the plugin nor one installed here registers is warned of (a misspelt need skips
    the check in ``inv smoke``, which passes without it)."""
    if settings is not None and name is None:
        raise TypeError(
            "plugin_checks(..., settings=...) needs name=, the plugin's entry-point name: its deploykit_configure "
            "reads [plugins.NAME] by that name, and settings filed under another are read by no one"
        )
    if isinstance(plugin, type):
        plugin = plugin()
    environment = env or sample_env()
    name = name or "under-test"
    plugins = get_plugin_manager(entry_points=[], extra=[(name, plugin)], environ={})
    table = {} if settings is None else {name: dict(settings)}
    config = Config(Path("deploy.toml"), {environment.name: environment}, default_env=environment.name, plugins=table)
    configure_plugins(plugins, config)
    checks = registered_checks(plugins, environment)
    needed = {n for check in checks for n in check.needs} - {c.name for c in checks}
    known = {c.name for c in checks} | (_installed_checks(environment) if needed else set())
    for check in checks:
        for need in (n for n in check.needs if n not in known):
            close = likely_meant(need, known)
            warnings.warn(
                f"check {check.name!r} needs {need!r}, which no plugin installed here registers"
                f"{f' (did you mean {close!r}?)' if close else ''}: inv smoke skips a check whose need no plugin "
                "registers, and passes without it",
                UserWarning,
                stacklevel=2,
            )
    return checks


def _installed_checks(env: EnvConfig) -> set[str]:
    """The names of the checks the plugins installed here register for ``env`` (those that load and answer)."""
    checks, _failed = plugins_checks(get_plugin_manager(environ={}), env)
    return {check.name for check in checks}


def run_check(check: Check, ctx: CheckContext) -> CheckResult:
    """Run one check as ``inv smoke`` does: its timeout applies, an exception becomes a failure. It runs alone:
    the checks its ``needs`` names are not run first, and do not hold it back."""
    return run_checks([dataclasses.replace(check, needs=())], ctx)[0]


def moto_aws(env: EnvConfig | None = None) -> AwsFactory:
    """An AwsFactory for use inside ``moto.mock_aws()`` (dummy credentials, the env's region)."""
    env = env or sample_env()
    session = new_session(region_name=env.region, aws_access_key_id="test", aws_secret_access_key="test")
    return AwsFactory(env, session=session)


@pytest.fixture
def deploykit_env() -> EnvConfig:
    return sample_env()


@pytest.fixture
def deploykit_endpoints() -> Endpoints:
    return sample_endpoints()


@pytest.fixture
def fake_http() -> FakeHttp:
    return FakeHttp()


@pytest.fixture
def fake_aws(deploykit_env: EnvConfig) -> Mock:
    return fake_factory(deploykit_env)


def fake_factory(env: EnvConfig | None = None, **clients: Any) -> Mock:
    """``Mock(spec=AwsFactory)`` whose ``client(name)`` answers ``clients[name]`` (when clients are given; else set
    ``client.return_value``) and whose ``shared(make)`` makes, once, what a factory shares over its clients
    (deploykit's memory of stack outputs and task definitions)."""
    aws = Mock(spec=AwsFactory)
    if env is not None:
        aws.env = env
    if clients:
        aws.client.side_effect = lambda name: clients[name]
    made: dict[Any, Any] = {}

    def shared(make: Any) -> Any:
        if make not in made:
            made[make] = make(aws)
        return made[make]

    aws.shared.side_effect = shared
    return aws


@pytest.fixture
def check_context(
    deploykit_env: EnvConfig, deploykit_endpoints: Endpoints, fake_aws: Mock, fake_http: FakeHttp
) -> CheckContext:
    return CheckContext(deploykit_env, deploykit_endpoints, fake_aws, fake_http)


def replace_endpoints(ctx: CheckContext, **changes: Any) -> CheckContext:
    """The same context with some endpoints changed."""
    return dataclasses.replace(ctx, endpoints=dataclasses.replace(ctx.endpoints, **changes))
