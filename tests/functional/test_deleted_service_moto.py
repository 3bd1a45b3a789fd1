"""A service ECS deleted (``inv destroy``, its stack's deletion, or by hand), on moto: ECS lists it INACTIVE a while
longer, and moto's DeleteService leaves it so. Each command that reads the service says it was deleted, with the
stack that makes it again, never "not found in cluster" (as if deploy.toml named another service), and none changes
it (moto's UpdateService would take an INACTIVE service; AWS's refuses it: ServiceNotActiveException)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from moto.ecs.models import ecs_backends

from deploykit import commands
from deploykit.aws import AwsFactory
from deploykit.errors import ServiceBeingDeleted, StepFailed, UsageError
from tests.functional.conftest import asked, create_service
from tests.functional.conftest import moto_runtime as runtime
from tests.functional.test_restart_moto import ACCOUNT, REGION, steady

CLUSTER, SERVICE = "car-rental-cluster", "car-rental-service"
DELETED = (
    f"ECS service {SERVICE!r} in cluster {CLUSTER!r} is being deleted or was deleted (status INACTIVE): ECS lists a "
    "deleted service a while longer, but nothing runs on it or can be rolled out on it; nothing was changed"
)
REMADE = "deploy the stack that defines it: inv deploy.stack CarRentalFargateStack --env dev"


def delete_service(factory: AwsFactory) -> None:
    """What inv destroy's stack deletion does to the service: ECS lists it INACTIVE afterwards."""
    ecs = factory.client("ecs")
    ecs.delete_service(cluster=CLUSTER, service=SERVICE, force=True)
    [listed] = ecs.describe_services(cluster=CLUSTER, services=[SERVICE])["services"]
    assert listed["status"] == "INACTIVE"  # what this module is about: moto lists it as ECS does


def said_deleted(err: pytest.ExceptionInfo[UsageError]) -> None:
    assert isinstance(err.value, ServiceBeingDeleted) and err.value.exit_code == 2
    assert err.value.message == DELETED
    assert (err.value.next_step or "").startswith(REMADE)  # deleted already: no "once ECS has deleted it"
    assert "detect-stack-drift --stack-name CarRentalFargateStack" in (err.value.next_step or "")


@pytest.fixture
def deleted(factory: AwsFactory) -> list[str]:
    """The service of create_service, deleted; each UpdateService asked for from then on."""
    create_service(factory)
    delete_service(factory)
    return asked(factory.client("ecs"), "UpdateService", "service")


def test_inv_tasks_says_the_service_was_deleted(project: Path, factory: AwsFactory, deleted: list[str]) -> None:
    with pytest.raises(UsageError) as err:
        commands.tasks_list(env="dev", runtime=runtime(project, factory))
    said_deleted(err)


def test_inv_logs_says_the_service_was_deleted(project: Path, factory: AwsFactory, deleted: list[str]) -> None:
    with pytest.raises(UsageError) as err:
        commands.logs(env="dev", component="app", runtime=runtime(project, factory))
    said_deleted(err)


def test_inv_restart_refuses_a_deleted_service_and_forces_no_deployment(
    project: Path, factory: AwsFactory, deleted: list[str]
) -> None:
    with pytest.raises(UsageError) as err:
        commands.restart_app(env="dev", smoke=False, runtime=runtime(project, factory))
    said_deleted(err)
    assert deleted == []


def test_inv_pause_refuses_a_deleted_service_and_scales_nothing(
    project: Path, factory: AwsFactory, bucket: str, deleted: list[str]
) -> None:
    with pytest.raises(UsageError) as err:
        commands.pause_app(env="dev", runtime=runtime(project, factory))
    said_deleted(err)
    assert deleted == []


def test_inv_resume_of_a_paused_environment_whose_service_was_deleted_says_so(
    project: Path, factory: AwsFactory, bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Paused, then destroyed: the pause object stays in the artifacts bucket; the service is gone."""
    from tests.functional.test_pause_moto import paused

    paused(project, factory, monkeypatch)
    delete_service(factory)
    updates = asked(factory.client("ecs"), "UpdateService", "service")
    with pytest.raises(UsageError) as err:
        commands.resume_app(env="dev", smoke=False, runtime=runtime(project, factory))
    said_deleted(err)
    assert updates == []


def test_inv_resume_without_any_service_still_says_there_is_none(
    project: Path, factory: AwsFactory, bucket: str
) -> None:
    """The service never made (the cluster there): not told as deleted."""
    factory.client("ecs").create_cluster(clusterName=CLUSTER)
    with pytest.raises(UsageError) as err:
        commands.resume_app(env="dev", smoke=False, runtime=runtime(project, factory))
    assert not isinstance(err.value, ServiceBeingDeleted)
    assert err.value.message == f"dev has no service {SERVICE} to resume"


def test_inv_run_says_the_service_was_deleted(project: Path, factory: AwsFactory, deleted: list[str]) -> None:
    with pytest.raises(UsageError) as err:
        commands.run_command("python -m app.release", env="dev", runtime=runtime(project, factory))
    said_deleted(err)


def health(project: Path, factory: AwsFactory) -> dict[str, Any]:
    """inv health --json: broken (exit 1); its JSON document."""
    rt = runtime(project, factory)
    with pytest.raises(StepFailed):
        commands.health_report(env="dev", as_json=True, runtime=rt)
    return dict(json.loads(rt.stdout.getvalue()))  # type: ignore[attr-defined]


def test_inv_health_tells_a_deleted_service_from_a_missing_one(project: Path, factory: AwsFactory) -> None:
    steady(factory)
    delete_service(factory)

    report = health(project, factory)

    [row] = [r for r in report["rows"] if r["part"] == "service"]
    assert (row["name"], row["status"], row["detail"]) == (
        f"{CLUSTER}/{SERVICE}",
        "INACTIVE",
        "deleted; ECS lists it a while",
    )
    findings = {f["what"]: f["next_step"] for f in report["findings"] if f["severity"] == "broken"}
    assert not [what for what in findings if "not found" in what]
    step = findings[f"service {SERVICE} was deleted (INACTIVE): nothing runs on it"]
    assert step.startswith(REMADE) and "detect-stack-drift --stack-name CarRentalFargateStack" in step
    # nothing of the deleted service is judged as if it ran: no deployment, no image, no task count
    assert not [r for r in report["rows"] if r["part"] in ("deployment", "image", "rollout settings")]
    assert not [f for f in report["findings"] if "desired tasks" in f["what"] or "live" in f["what"]]


def test_inv_health_still_says_not_found_for_a_service_never_made(project: Path, factory: AwsFactory) -> None:
    factory.client("ecs").create_cluster(clusterName=CLUSTER)

    report = health(project, factory)

    [row] = [r for r in report["rows"] if r["part"] == "service"]
    assert (row["status"], row["detail"]) == ("missing", f"no such service in {CLUSTER}")  # the cluster is there
    findings = {f["what"]: f["next_step"] for f in report["findings"]}
    assert findings[f"ECS service {SERVICE} not found in cluster {CLUSTER}"] == (
        "check 'cluster' and 'service' in deploy.toml, or create it: inv deploy.stack CarRentalFargateStack --env dev"
    )


def test_inv_health_says_a_service_being_deleted_and_that_its_stack_makes_it_again_once_ecs_has_finished(
    project: Path, factory: AwsFactory
) -> None:
    """DRAINING (ECS stops its tasks, then lists it INACTIVE; moto deletes at once, so the service is set so): the
    next step is the one every command that reads it gives (the Fargate stack, once ECS has finished), not
    ``inv deploy.full``; its tasks and rollouts are not judged (restart and rollback refuse a service being deleted)."""
    steady(factory)
    service = ecs_backends[ACCOUNT][REGION].services[f"{CLUSTER}:{SERVICE}"]
    service.status, service.desired_count = "DRAINING", 0  # what DeleteService does first

    report = health(project, factory)

    [row] = [r for r in report["rows"] if r["part"] == "service"]
    assert row["status"] == "DRAINING"
    findings = {f["what"]: f["next_step"] for f in report["findings"] if SERVICE in f["what"]}
    step = findings.pop(f"service {SERVICE} is being deleted (DRAINING): nothing can be rolled out on it")
    assert not [what for what in findings if "tasks" in what]  # not "wants 0 tasks", nor restart's next step
    assert step.startswith(
        "once ECS has finished deleting it (inv health --env dev shows it INACTIVE, or not found, then), " + REMADE
    )
    assert "detect-stack-drift --stack-name CarRentalFargateStack" in step
