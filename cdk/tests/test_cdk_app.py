"""The app as deploykit uses it: stack order, tags, self-contained templates, the process interface."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from cdk_helpers import CDK_DIR, STACK_KEYS, Synthesized, load_app_module, read_assembly, synthesize

# CloudFormation's limit for a template passed inline (TemplateBody); larger ones must go through S3.
TEMPLATE_BODY_LIMIT = 51_200


def test_stacks_are_named_as_in_deploy_toml(synthesized: Synthesized) -> None:
    stacks = [k for k, a in synthesized.manifest["artifacts"].items() if a["type"] == "aws:cloudformation:stack"]
    assert stacks == [
        "CarRentalRegistryStack",
        "CarRentalDataStack",
        "CarRentalAuthStack",
        "CarRentalFargateStack",
        "CarRentalApiStack",
    ]


def test_dependency_order(synthesized: Synthesized) -> None:
    dependencies = {key: sorted(synthesized.artifact(key).get("dependencies", [])) for key in STACK_KEYS}
    assert dependencies == {
        "registry": [],
        "data": [],
        "auth": [],
        "fargate": ["CarRentalAuthStack", "CarRentalDataStack", "CarRentalRegistryStack"],
        "api": ["CarRentalAuthStack", "CarRentalRegistryStack"],
    }


def test_every_stack_is_tagged(synthesized: Synthesized) -> None:
    for key in STACK_KEYS:
        assert synthesized.artifact(key)["properties"]["tags"] == {"Project": "car-rental", "Environment": "sandbox"}


def test_taggable_resources_carry_the_project_tag(synthesized: Synthesized) -> None:
    for key, template in synthesized.templates.items():
        for logical_id, resource in template["Resources"].items():
            tags = resource.get("Properties", {}).get("Tags")
            if isinstance(tags, list):
                assert {"Key": "Project", "Value": "car-rental"} in tags, f"{key}/{logical_id}"
            elif isinstance(tags, dict):  # Cognito, SSM and a few others take a map
                assert tags.get("Project") == "car-rental", f"{key}/{logical_id}"


def test_stacks_are_environment_specific(synthesized: Synthesized) -> None:
    for key in STACK_KEYS:
        assert synthesized.artifact(key)["environment"] == "aws://123456789012/us-east-1"


def test_templates_need_no_assets_lookups_or_bootstrap(synthesized: Synthesized) -> None:
    # deploykit deploys the templates as they are: nothing to publish first, nothing to look up.
    types = {a["type"] for a in synthesized.manifest["artifacts"].values()}
    assert "cdk:asset-manifest" not in types
    assert not synthesized.manifest.get("missing")
    for key, template in synthesized.templates.items():
        resource_types = {r["Type"] for r in template["Resources"].values()}
        assert "AWS::CDK::Metadata" not in resource_types, key
        assert not [t for t in resource_types if t.startswith("Custom::") or t == "AWS::CloudFormation::CustomResource"]
        assert "dummy1a" not in json.dumps(template), key


@pytest.mark.parametrize("key", STACK_KEYS)
def test_template_fits_an_inline_template_body(synthesized: Synthesized, key: str) -> None:
    minified = json.dumps(synthesized.templates[key], separators=(",", ":"))
    assert len(minified.encode()) < TEMPLATE_BODY_LIMIT, f"{key}: deploy it through S3 (TemplateURL)"


def test_the_vpc_uses_the_configured_zones(synthesized: Synthesized) -> None:
    zones = sorted(
        r["Properties"]["AvailabilityZone"]
        for r in synthesized.templates["fargate"]["Resources"].values()
        if r["Type"] == "AWS::EC2::Subnet"
    )
    assert zones == ["us-east-1a", "us-east-1b"]


def test_synthesis_is_deterministic(synthesized: Synthesized, tmp_path: Path) -> None:
    # Same sources and context, same templates: deploykit skips an unchanged synthesis and an empty change set.
    again = synthesize(tmp_path)
    assert again.templates == synthesized.templates


def test_every_acknowledgement_goes_through_nag_helpers() -> None:
    # Suppressions are made with stacks.common.nag.suppress (which demands a reason), never directly.
    for path in (CDK_DIR / "stacks").rglob("*.py"):
        if path.name == "nag.py":
            continue
        text = path.read_text()
        assert ".acknowledge(" not in text and "NagSuppressions" not in text, path


def run_app(
    outdir: Path, context: dict[str, Any] | None, extra_env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """`python cdk/app.py` the way deploykit runs it: a process, CDK_OUTDIR and CDK_CONTEXT_JSON."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CAR_RENTAL_", "CDK_"))}
    env["CDK_OUTDIR"] = str(outdir)
    if context is not None:
        env["CDK_CONTEXT_JSON"] = json.dumps(context)
    env.update(extra_env or {})
    return subprocess.run(
        [sys.executable, str(CDK_DIR / "app.py")], env=env, capture_output=True, text=True, timeout=300, check=False
    )


def test_app_runs_as_a_process_with_the_environment_as_context(tmp_path: Path) -> None:
    context = {
        "environment": "dev",
        "account": "123456789012",
        "region": "eu-west-1",
        "cluster": "rental-cluster",
        "service": "rental-service",
        "container": "api",
        "repository": "rental-backend",
        "registry": "127.0.0.1:5000",
        "desired_count": 2,
        "task_cpu": 1024,
        "task_memory": 2048,
        "stacks": {"fargate": "DevFargate", "api": "DevApi"},
    }
    result = run_app(tmp_path, context)
    assert result.returncode == 0, result.stderr
    assert "synthesized 5 stacks for dev (123456789012/eu-west-1)" in result.stderr

    module = load_app_module()
    names = {key: getattr(module.Settings.load(context.get, {}).stacks, key) for key in STACK_KEYS}
    assert names["fargate"] == "DevFargate"
    assembly = read_assembly(tmp_path, None, names)
    fargate = assembly.templates["fargate"]["Resources"]
    (service,) = [r["Properties"] for r in fargate.values() if r["Type"] == "AWS::ECS::Service"]
    assert (service["ServiceName"], service["DesiredCount"]) == ("rental-service", 2)
    (cluster,) = [r["Properties"] for r in fargate.values() if r["Type"] == "AWS::ECS::Cluster"]
    assert cluster["ClusterName"] == "rental-cluster"
    (task,) = [r["Properties"] for r in fargate.values() if r["Type"] == "AWS::ECS::TaskDefinition"]
    assert (task["Cpu"], task["Memory"]) == ("1024", "2048")  # deploy.toml's task_cpu and task_memory
    (container,) = task["ContainerDefinitions"]
    assert container["Name"] == "api"
    # The sandbox's registry, exactly the reference deploykit writes into the task definitions it registers.
    assert container["Image"] == {"Fn::Join": ["", ["127.0.0.1:5000/rental-backend:", {"Ref": "ImageTag"}]]}
    zones = sorted(r["Properties"]["AvailabilityZone"] for r in fargate.values() if r["Type"] == "AWS::EC2::Subnet")
    assert zones == ["eu-west-1a", "eu-west-1b"]
    registry = assembly.templates["registry"]["Resources"]
    (repository,) = [r["Properties"] for r in registry.values() if r["Type"] == "AWS::ECR::Repository"]
    assert repository["RepositoryName"] == "rental-backend"
    assert assembly.manifest["artifacts"]["DevApi"]["properties"]["tags"]["Environment"] == "dev"


def test_app_exits_2_on_bad_settings(tmp_path: Path) -> None:
    result = run_app(tmp_path, {"region": "Mars"})
    assert result.returncode == 2
    assert "region must look like 'us-east-1', got 'Mars'" in result.stderr
    assert not (tmp_path / "manifest.json").exists()
