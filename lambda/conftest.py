"""Shared fixtures for the Lambda functions' own tests.

``lambda`` is a keyword, so no function folder is importable as a package, and every function's module is
called ``handler``. ``load_handler("login_handler")`` therefore executes ``lambda/login_handler/handler.py``
afresh under a unique module name (``lambda_fn_login_handler``): two functions never collide, and each
test starts from a fresh module (module-level caches such as a lazily created boto3 client are empty).
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType

import pytest

LAMBDA_ROOT = Path(__file__).resolve().parent


def import_handler(path: Path, module_name: str) -> ModuleType:
    """Execute the handler module at ``path`` as ``module_name`` (replacing any earlier one)."""
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def load_handler() -> Iterator[Callable[[str], ModuleType]]:
    loaded: list[str] = []

    def load(function: str) -> ModuleType:
        name = f"lambda_fn_{function}"
        loaded.append(name)
        return import_handler(LAMBDA_ROOT / function / "handler.py", name)

    yield load
    for name in loaded:
        sys.modules.pop(name, None)
