"""A service ECS deleted (``inv destroy``, its stack's deletion, or by hand), on moto: ECS lists it INACTIVE a while
longer, and moto's DeleteService leaves it so. Each command that reads the service says it was deleted, with the
stack that makes it again, never "not found in cluster" (as if deploy.toml named another service), and none changes
it (moto's UpdateService would take an INACTIVE service; AWS's refuses it: ServiceNotActiveException). inv logs
reads the lines its tasks left while its log group holds some, saying first that it was deleted."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from moto.ecs.models import ecs_backends

from deploykit import commands
from deploykit.aws import AwsFactory
from deploykit.errors import ServiceBeingDeleted, StepFailed, UsageError
from tests.functional.conftest import CONTAINER, asked, create_service
from tests.functional.conftest import moto_runtime as runtime
from tests.functional.test_logs_moto import GROUP, logs, put, run_logs  # noqa: F401 (logs: a fixture)
from tests.functional.test_restart_moto import ACCOUNT, REGION, steady

CLUSTER, SERVICE = "car-rental-cluster", "car-rental-service"
DELETED = (
    f"ECS service {SERVICE!r} in cluster {CLUSTER!r} was deleted (status INACTIVE): ECS lists a deleted service a "
    "while longer, but nothing runs on it or can be rolled out on it; nothing was changed"
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


@pytest.mark.usefixtures("logs")  # the group of conftest's CONTAINER, with two tasks' lines
def test_inv_logs_reads_what_a_deleted_service_left_saying_first_that_it_was_deleted(
    project: Path, factory: AwsFactory, deleted: list[str]
) -> None:
    """Deleted by hand (the group stays; inv destroy would delete it with the stack): its last revision's awslogs
    settings find its group, whose lines are read as any service's, after a line saying it was deleted."""
    lines, out, err = run_logs(project, factory, since="5m")

    assert [line.message for line in lines] == ["task a starts", "task b starts", "task a serves", "task b serves"]
    assert out.splitlines()[0].endswith("aaaa1111  task a starts")
    said = err.splitlines()
    assert said[0] == (
        f"⚠️  ECS deleted service {SERVICE} (INACTIVE; it lists it a while longer): its tasks write no more; these are "
        "the lines they left, where its last revision car-rental-backend:1 sent them (the Fargate stack makes it "
        "again: inv deploy.stack CarRentalFargateStack --env dev)"
    )
    assert said[1].startswith(f"📜 app in dev: CloudWatch Logs {GROUP}, streams backend/backend/*")
    _, out, _ = run_logs(project, factory, since="5m", task="bbbb", as_json=True)  # --task and --json as ever
    document = json.loads(out)
    assert [line["message"] for line in document["lines"]] == ["task b starts", "task b serves"]
    assert document["deleted"] is True  # a script reading stdout alone can tell these are a deleted service's


def refused_logs(project: Path, factory: AwsFactory, why: str) -> None:
    """inv logs of the deleted service: nothing to read (exit 2), saying why, and the stack that makes it again."""
    with pytest.raises(ServiceBeingDeleted) as err:
        run_logs(project, factory, since="5m")
    assert err.value.exit_code == 2
    assert err.value.message == (
        f"ECS service {SERVICE!r} in cluster {CLUSTER!r} was deleted (status INACTIVE): none of its logs is left to "
        f"read ({why}); nothing was changed"
    )
    assert (err.value.next_step or "").startswith(REMADE)


def test_inv_logs_of_a_deleted_service_whose_group_is_gone_says_there_is_nothing_to_read(
    project: Path, factory: AwsFactory, deleted: list[str]
) -> None:
    """inv destroy: the stack deleted the service, then the group."""
    refused_logs(project, factory, f"log group {GROUP} is gone (inv destroy deletes it with the stack)")


def test_inv_logs_of_a_deleted_service_whose_group_holds_none_of_its_streams_says_so(
    project: Path, factory: AwsFactory, deleted: list[str]
) -> None:
    client = factory.client("logs")
    client.create_log_group(logGroupName=GROUP)
    put(client, "other/sidecar/aaaa1111", (1, "not the app's container"))
    refused_logs(project, factory, f"log group {GROUP} holds no stream of backend")


def test_inv_logs_of_a_deleted_service_whose_last_revision_is_gone_or_logged_elsewhere_says_so(
    project: Path, factory: AwsFactory, deleted: list[str]
) -> None:
    ecs = factory.client("ecs")
    [listed] = ecs.describe_services(cluster=CLUSTER, services=[SERVICE])["services"]
    arn = listed["taskDefinition"]
    bare = {k: v for k, v in CONTAINER.items() if k != "logConfiguration"}
    ecs.register_task_definition(family="car-rental-backend", containerDefinitions=[bare], memory="512")
    service = ecs_backends[ACCOUNT][REGION].services[f"{CLUSTER}:{SERVICE}"]
    service.task_definition = arn.replace(":1", ":2")  # its last revision logged with no driver
    refused_logs(
        project,
        factory,
        "container 'backend' of car-rental-backend:2 does not log to CloudWatch Logs (log driver: none)",
    )
    service.task_definition = arn.replace(":1", ":9")  # deleted for good (DeleteTaskDefinitions)
    with pytest.raises(
        ServiceBeingDeleted,
        match=r"none of its logs is left to read \(its last revision "
        r"car-rental-backend:9 cannot be read: .*ClientException",
    ):
        run_logs(project, factory, since="5m")


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
        "check 'cluster' and 'service' in deploy.toml, or create it: inv deploy.stack CarRentalFargateStack --env dev "
        "(deleted by hand while CarRentalFargateStack still holds it, it is not made again from an unchanged "
        "template: aws cloudformation detect-stack-drift --stack-name CarRentalFargateStack shows it)"
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
