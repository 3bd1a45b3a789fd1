"""inv restart's plan and its refusal of a service that is rolling out (pure logic, no AWS)."""

from __future__ import annotations

from pathlib import Path

from deploykit.config import load_config
from deploykit.ecs import rolling
from deploykit.restart import RestartService, restart_plan

TD = "arn:aws:ecs:us-east-1:1:task-definition/app:{}"


def test_a_service_is_rolling_while_its_primary_is_not_completed_or_an_older_deployment_still_runs() -> None:
    primary = {"id": "ecs-svc/2", "status": "PRIMARY", "taskDefinition": TD.format(5), "rolloutState": "COMPLETED"}
    assert rolling({"deployments": [primary]}) == ""
    assert rolling({"deployments": [primary | {"rolloutState": "IN_PROGRESS"}]}) == (
        "its deployment ecs-svc/2 of app:5 is IN_PROGRESS"
    )
    older = {"id": "ecs-svc/1", "status": "ACTIVE", "taskDefinition": TD.format(4), "rolloutState": "COMPLETED"}
    assert rolling({"deployments": [primary, older]}) == "1 older deployment(s) of app:4 still run tasks"
    assert rolling({"deployments": [{k: v for k, v in primary.items() if k != "rolloutState"}]}) == ""


def test_the_plan_restarts_the_service_then_smokes_and_records_the_commit_it_runs(project: Path) -> None:
    env = load_config(project / "deploy.toml").environment("dev")
    plan = restart_plan(env, "3e2532eaf7e5")
    assert [s.name for s in plan.steps] == ["restart", "smoke"]
    assert plan.steps[0] == RestartService(env.cluster, env.service, env.container, env.wait_timeout, env.poll_seconds)
    assert (plan.title, plan.restarts, plan.deploys) == ("restart app", (("app", "3e2532eaf7e5"),), ())
    assert [s.name for s in restart_plan(env, "3e2532eaf7e5", smoke=False).steps] == ["restart"]
