"""inv restart as a command, on moto: the lock, the history record, what it leaves alone, its dry run.

moto keeps one deployment per service and starts no task; :func:`steady` makes it the ECS whose deployments complete
at once (a forced deployment keeps it so, under a new id), the step's waiting being tested in
test_restart_scripted."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import pytest
from moto.ecs.models import ecs_backends

from deploykit import commands, history
from deploykit.aws import AwsFactory
from deploykit.config import EnvConfig
from deploykit.errors import UsageError
from deploykit.report import Report
from tests.functional.conftest import REGION, asked, create_service
from tests.functional.conftest import moto_runtime as runtime

ACCOUNT = "123456789012"  # moto's


def steady(factory: AwsFactory) -> str:
    """The service of create_service, its deployment COMPLETED with every task running; its deployment id."""
    create_service(factory, {"memory": 512})
    service = ecs_backends[ACCOUNT][REGION].services["car-rental-cluster:car-rental-service"]
    service.deployments[0].update(rolloutState="COMPLETED", runningCount=2, pendingCount=0)
    service.running_count = 2
    return str(service.deployments[0]["id"])


def test_a_restart_is_recorded_at_the_commit_it_runs_and_changes_no_live_record(
    project: Path, factory: AwsFactory, bucket: str, dev_env: EnvConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(history.ACTOR_ENV, "ana@laptop")
    before = steady(factory)
    store = history.History.of(factory, dev_env)
    assert store is not None
    live_before = store.live()
    report = commands.restart_app(env="dev", smoke=False, runtime=runtime(project, factory))
    assert report is not None and report.ok
    after = ecs_backends[ACCOUNT][REGION].services["car-rental-cluster:car-rental-service"].deployments[0]["id"]
    assert after != before and report.records[0].outputs == {"deployment": after}
    [record] = store.records()
    assert (record.command, record.head, record.who, record.ok) == ("restart app", "old", "ana@laptop", True)
    assert record.components == {} and [s["step"] for s in record.steps] == ["restart"]
    assert store.live() == live_before  # what deploy.auto compares with is untouched
    when = datetime.fromisoformat(record.when)
    assert Report("dev", when, when, (record,)).deployments == []  # nor the deploy figures of inv report


def test_its_dry_run_prints_the_plan_and_touches_nothing(project: Path, factory: AwsFactory) -> None:
    before = steady(factory)
    rt = runtime(project, factory)
    assert commands.restart_app(env="dev", dry_run=True, as_json=True, runtime=rt) is None
    plan = json.loads(rt.stdout.getvalue())  # type: ignore[attr-defined]
    assert [s["step"] for s in plan["steps"]] == ["restart", "smoke"] and plan["title"] == "restart app"
    assert (
        ecs_backends[ACCOUNT][REGION].services["car-rental-cluster:car-rental-service"].deployments[0]["id"] == before
    )


def test_a_service_another_controller_deploys_is_refused_before_update_service(
    project: Path, factory: AwsFactory
) -> None:
    """ForceNewDeployment is a deployment too, which UpdateService refuses a CODE_DEPLOY service (moto does not): said
    from the service read first, exit 2, rather than "rerun" after the refusal."""
    create_service(factory, service={"deploymentController": {"type": "CODE_DEPLOY"}})
    updates = asked(factory.client("ecs"), "UpdateService", "service")
    with pytest.raises(UsageError) as err:
        commands.restart_app(env="dev", smoke=False, runtime=runtime(project, factory))
    assert err.value.exit_code == 2
    assert err.value.message.startswith(
        "ECS service 'car-rental-service' is deployed by its CODE_DEPLOY deployment controller: deploykit rolls out "
        "only services ECS deploys itself"
    )
    assert (err.value.next_step or "").startswith("deploy it with CodeDeploy")
    assert updates == []  # no deployment forced
