"""Helpers for the stack tests: building and synthesizing the app, reading the cloud assembly.

A module name of its own (`from conftest import ...` is ambiguous once several test trees run together).
"""

from __future__ import annotations

import importlib.util
import json
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from aws_cdk.assertions import Template

CDK_DIR = Path(__file__).resolve().parents[1]
STACK_KEYS = ("registry", "data", "auth", "fargate", "api")


def load_app_module() -> ModuleType:
    """cdk/app.py as a module under a name of its own (a bare `app` would clash with backend/app)."""
    name = "car_rental_cdk_app"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, CDK_DIR / "app.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@dataclass
class Synthesized:
    """One synthesis of the app: the cloud assembly as plain JSON, plus assertion templates on demand."""

    outdir: Path
    built: Any  # app.CarRentalApp
    manifest: dict[str, Any]
    templates: dict[str, dict[str, Any]]  # by stack key: registry, data, auth, fargate, api
    _assertions: dict[str, Template] = field(default_factory=dict)

    def stack_name(self, key: str) -> str:
        return str(getattr(self.built.settings.stacks, key))

    def template(self, key: str) -> Template:
        """An `aws_cdk.assertions.Template` of one stack (built once, reused)."""
        if key not in self._assertions:
            self._assertions[key] = Template.from_json(self.templates[key])
        return self._assertions[key]

    def artifact(self, key: str) -> dict[str, Any]:
        """The stack's entry in manifest.json."""
        result: dict[str, Any] = self.manifest["artifacts"][self.stack_name(key)]
        return result

    def metadata(self, key: str) -> dict[str, list[dict[str, Any]]]:
        """The stack's construct metadata (acknowledged cdk-nag rules among it), by construct path."""
        artifact = self.artifact(key)
        data: dict[str, list[dict[str, Any]]] = dict(artifact.get("metadata", {}))
        extra = artifact.get("additionalMetadataFile")
        if extra:
            data.update(json.loads((self.outdir / extra).read_text()))
        return data


def read_assembly(outdir: Path, built: Any, stack_names: dict[str, str]) -> Synthesized:
    manifest = json.loads((outdir / "manifest.json").read_text())
    templates = {key: json.loads((outdir / f"{name}.template.json").read_text()) for key, name in stack_names.items()}
    return Synthesized(outdir=outdir, built=built, manifest=manifest, templates=templates)


def synthesize(outdir: Path, context: dict[str, object] | None = None) -> Synthesized:
    """Build the app in this process and synthesize it into `outdir`."""
    module = load_app_module()
    # environ={}: the shell's CAR_RENTAL_* / CDK_DEFAULT_* variables must not change what is tested.
    built = module.build_app(outdir=outdir, context=context or {}, environ={})
    built.app.synth()
    return read_assembly(outdir, built, {key: getattr(built.settings.stacks, key) for key in STACK_KEYS})


def only(resources: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """The single resource of a `Template.find_resources` result."""
    assert len(resources) == 1, f"expected exactly one resource, found {sorted(resources)}"
    return dict(next(iter(resources.values())))


def props(resource: Mapping[str, Any]) -> dict[str, Any]:
    """A resource's Properties."""
    return dict(resource.get("Properties", {}))
