"""The deploy dashboard of the registry stack: it draws exactly the metrics deploykit puts (deploykit/metrics.py)."""

from __future__ import annotations

import json
from typing import Any

from aws_cdk.assertions import Template
from cdk_helpers import Synthesized, only, props
from stacks.common.deploy_dashboard import dashboard_name
from stacks.common.settings import Settings

# What deploykit/metrics.py puts: metric → its dimensions besides Environment (the integration test
# test_the_deploy_dashboard_draws_what_a_deploy_put checks the same against a real deploy on the sandbox).
PUT_BY_DEPLOYKIT = {
    "Deployments": (),
    "FailedRuns": (),
    "Rollbacks": (),
    "DeploySeconds": ("Chain",),
    "StepSeconds": ("Step",),
}


def body(registry: Template) -> dict[str, Any]:
    dashboard = props(only(registry.find_resources("AWS::CloudWatch::Dashboard")))
    parts = dashboard["DashboardBody"]["Fn::Join"][1]
    text = "".join("us-east-1" if part == {"Ref": "AWS::Region"} else part for part in parts)
    found: dict[str, Any] = json.loads(text)
    return found


def metrics(registry: Template) -> list[tuple[str, str, dict[str, str]]]:
    """(namespace, name, dimensions) of every metric the dashboard draws."""
    found = []
    for widget in body(registry)["widgets"]:
        for line in widget.get("properties", {}).get("metrics", []):
            names = [part for part in line if isinstance(part, str)]
            namespace, name, rest = names[0], names[1], names[2:]
            found.append((namespace, name, dict(zip(rest[::2], rest[1::2], strict=True))))
    return found


def test_the_dashboard_is_named_by_the_environment_and_is_an_output(synthesized: Synthesized) -> None:
    registry = synthesized.template("registry")
    dashboard = props(only(registry.find_resources("AWS::CloudWatch::Dashboard")))
    assert dashboard["DashboardName"] == "car-rental-sandbox-deploys"
    (logical_id,) = registry.find_resources("AWS::CloudWatch::Dashboard")
    registry.has_output("DeployDashboardName", {"Value": {"Ref": logical_id}})


def test_it_draws_only_metrics_deploykit_puts_with_their_dimensions(synthesized: Synthesized) -> None:
    drawn = metrics(synthesized.template("registry"))
    assert drawn
    for namespace, name, dimensions in drawn:
        assert namespace == "deploykit"
        assert name in PUT_BY_DEPLOYKIT, name
        assert dimensions.pop("Environment") == "sandbox"
        assert tuple(dimensions) == PUT_BY_DEPLOYKIT[name], (name, dimensions)
    assert {name for _, name, _ in drawn} == set(PUT_BY_DEPLOYKIT)


def test_each_chain_and_each_stack_has_its_line(synthesized: Synthesized) -> None:
    drawn = metrics(synthesized.template("registry"))
    chains = {d["Chain"] for _, name, d in drawn if name == "DeploySeconds"}
    assert chains == {"app", "lambda", "stack", "mixed", "full"}
    steps = {d["Step"] for _, name, d in drawn if name == "StepSeconds"}
    assert {"build", "push", "wait-healthy", "smoke", "watch-errors", "update-code", "canary", "move-alias"} <= steps
    assert {
        f"deploy-stack:{synthesized.stack_name(k)}" for k in ("registry", "data", "auth", "fargate", "api")
    } <= steps


def test_the_goals_of_design_md_are_drawn_on_the_chain_graph(synthesized: Synthesized) -> None:
    [graph] = [
        w for w in body(synthesized.template("registry"))["widgets"] if "by chain" in w["properties"].get("title", "")
    ]
    lines = {a["label"]: a["value"] for a in graph["properties"]["annotations"]["horizontal"]}
    assert lines == {"app goal": 75, "lambda goal": 15}


def test_a_dashboard_name_keeps_only_what_cloudwatch_accepts() -> None:
    assert dashboard_name(Settings(environment="team a/b.c")) == "car-rental-team-a-b-c-deploys"
    assert dashboard_name(Settings(environment="dev_2")) == "car-rental-dev_2-deploys"
