"""A service ECS deleted (``inv destroy``, its stack's deletion, or by hand), on moto: ECS lists it INACTIVE a while
longer, and moto's DeleteService leaves it so. Each command that reads the service says it was deleted, with the
stack that makes it again, never "not found in cluster" (as if deploy.toml named another service), and none changes
it (moto's UpdateService would take an INACTIVE service; AWS's refuses it: ServiceNotActiveException)."""

from __future__ import annotations

from pathlib import Path

import pytest

from deploykit import commands
from deploykit.aws import AwsFactory
from deploykit.errors import ServiceBeingDeleted, UsageError
from tests.functional.conftest import asked, create_service
from tests.functional.conftest import moto_runtime as runtime

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
    assert REMADE in (err.value.next_step or "")
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
