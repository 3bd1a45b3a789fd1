"""Drift on a private sandbox: settings changed outside CloudFormation (the console, the CLI) are invisible to a
plain change set; `inv diff --drift` shows them, `--verify --drift` counts them, and `inv deploy.stack
--revert-drift` puts them back, keeping what the Lambda fast path shipped."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from deploykit import commands
from deploykit.endpoints import Endpoints
from deploykit.errors import StepFailed
from tests.conftest import quiet_runtime
from tests.integration.test_sandbox_lambda_fast_path import FN, client, detail, health, release, statuses

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("base_image")]


@pytest.fixture(scope="module")
def project(sandbox_deployed_project: Path) -> Path:
    return sandbox_deployed_project


@pytest.fixture(scope="module")
def deployed(project: Path) -> Endpoints:
    return commands.endpoints(runtime=quiet_runtime(project))


def test_a_stack_deploy_reverting_drift_puts_back_a_console_change_and_keeps_what_the_fast_path_shipped(
    project: Path, deployed: Endpoints
) -> None:
    """deploy.stack --revert-drift: a function's memory and environment changed in the console go back to the
    template's; the alias the fast path moved is drift too, and stays on the code it serves (the stack's new version
    runs it); run again, there is nothing to do."""
    lam = client(project, "lambda")
    login = deployed.functions["login_handler"]
    configured = lam.get_function_configuration(FunctionName=login)
    variables = configured["Environment"]["Variables"]
    lam.update_function_configuration(
        FunctionName=login,
        MemorySize=configured["MemorySize"] * 4,
        Environment={"Variables": {**variables, "DEBUG": "1"}},
    )
    plain = commands.deploy_stack("api", runtime=quiet_runtime(project))  # compares templates: nothing to do
    assert plain is not None and statuses(plain)["deploy-stack"] == "skipped"
    assert lam.get_function_configuration(FunctionName=login)["MemorySize"] == configured["MemorySize"] * 4
    release(project, "drift")
    report = commands.deploy_lambda(FN, smoke=False, runtime=quiet_runtime(project))
    assert report is not None and report.ok

    # inv diff --drift: every stack's drift-aware preview, never executed
    runtime = quiet_runtime(project)
    commands.diff(as_json=True, drift=True, runtime=runtime)
    previews = json.loads(runtime.stdout.getvalue())["stacks"]  # type: ignore[attr-defined]
    assert set(previews) == {f"CarRental{r}Stack" for r in ("Registry", "Data", "Auth", "Fargate", "Api")}
    assert previews["CarRentalDataStack"]["changes"] == []
    drifted = {c["logical_id"]: c for c in previews["CarRentalApiStack"]["changes"] if c["drift"] == "MODIFIED"}
    [login_id] = [i for i in drifted if i.startswith("LoginHandler")]
    memory = next(d for d in drifted[login_id]["details"] if d["property"] == "MemorySize")
    assert memory["drift"] == {"deployed": str(configured["MemorySize"]), "actual": str(configured["MemorySize"] * 4)}
    assert memory["after"] == str(configured["MemorySize"])
    said = runtime.stderr.getvalue()  # type: ignore[attr-defined]
    assert "nothing to change, and no drift" in said and "--revert-drift)" in said, said
    assert lam.get_function_configuration(FunctionName=login)["MemorySize"] == configured["MemorySize"] * 4
    # --verify --drift: the console's change is a difference; the alias the fast path moved is not
    with pytest.raises(StepFailed) as verified:
        commands.diff(verify=True, drift=True, runtime=quiet_runtime(project))
    assert "CarRentalApiStack: 1 change to make" in verified.value.message, verified.value.message
    assert "--revert-drift" in verified.value.next_step

    report = commands.deploy_stack("api", revert_drift=True, runtime=quiet_runtime(project))
    assert report is not None and report.ok
    said = detail(report, "deploy-stack")
    assert "drift back to the template: LoginHandler" in said and ".MemorySize" in said, said
    assert "(the fast path, a rollback), kept on the code they serve: HealthHandlerAlias" in said, said
    now = lam.get_function_configuration(FunctionName=login)
    assert (now["MemorySize"], now["Environment"]["Variables"]) == (configured["MemorySize"], variables)
    assert health(deployed.api_health_url)["release"] == "drift"
    [record] = commands.history_list(limit=1, runtime=quiet_runtime(project))
    assert record.command == "deploy.stack CarRentalApiStack --revert-drift"

    again = commands.deploy_stack("api", revert_drift=True, runtime=quiet_runtime(project))
    assert again is not None and statuses(again)["deploy-stack"] == "skipped"
    assert "no drift" in detail(again, "deploy-stack")
