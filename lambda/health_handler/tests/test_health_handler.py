"""health_handler: the API stage's cheap check route."""

from __future__ import annotations

import json
from collections.abc import Callable
from types import ModuleType

import pytest


@pytest.fixture
def mod(load_handler: Callable[[str], ModuleType]) -> ModuleType:
    return load_handler("health_handler")


def test_get_health_is_ok(mod: ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_VERSION", "7")

    resp = mod.handler({"httpMethod": "GET", "path": "/health", "body": None}, None)

    assert resp["statusCode"] == 200
    assert resp["headers"]["content-type"] == "application/json"
    assert json.loads(resp["body"]) == {"status": "ok", "function_version": "7"}


def test_version_defaults_to_latest(mod: ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_LAMBDA_FUNCTION_VERSION", raising=False)

    assert json.loads(mod.handler({"httpMethod": "HEAD"}, None)["body"])["function_version"] == "$LATEST"


def test_other_methods_are_405(mod: ModuleType) -> None:
    resp = mod.handler({"httpMethod": "POST", "path": "/health", "body": "{}"}, None)

    assert resp["statusCode"] == 405
    assert resp["headers"]["allow"] == "GET, HEAD"
