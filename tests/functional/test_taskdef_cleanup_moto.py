"""inv taskdefs.cleanup against moto: the service's task-definition family, its tasks, the live record in S3.

moto keeps the service's one deployment (made by CreateService); the test adds the ACTIVE one ECS would list during
a rollout in moto's backend. moto runs a one-off task only of a revision outside awsvpc whose container names its
memory: the test registers one such revision in the family, as an ``inv run`` task's."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto.ecs.models import ecs_backends

from deploykit import commands, lock
from deploykit.aws import AwsFactory
from deploykit.clock import FakeClock
from deploykit.config import EnvConfig
from deploykit.errors import StepFailed, UsageError
from tests.functional.conftest import ARTIFACTS_BUCKET, CONTAINER, REGION, create_service
from tests.functional.conftest import moto_runtime as runtime

ACCOUNT = "123456789012"  # moto's
FAMILY = "car-rental-backend"


def arn(revision: int) -> str:
    return f"arn:aws:ecs:{REGION}:{ACCOUNT}:task-definition/{FAMILY}:{revision}"


def register(factory: AwsFactory, count: int, **more: Any) -> None:
    """``count`` more revisions of the family, as deploys leave them."""
    ecs = factory.client("ecs")
    for n in range(count):
        image = f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/car-rental-backend:{n:012x}"
        ecs.register_task_definition(
            family=FAMILY,
            containerDefinitions=[{**CONTAINER, "image": image, "memory": 256}],
            **more,
        )


def active(factory: AwsFactory) -> list[int]:
    arns = factory.client("ecs").list_task_definitions(familyPrefix=FAMILY, status="ACTIVE")["taskDefinitionArns"]
    return sorted(int(a.rsplit(":", 1)[1]) for a in arns)


@pytest.fixture
def family(factory: AwsFactory) -> AwsFactory:
    """Revision 1 the service's (create_service), 2-13 twelve deploys' since, the service still on 1."""
    create_service(factory)
    register(factory, 12)
    return factory


def test_the_newest_and_everything_in_use_stay_the_rest_is_deregistered(
    project: Path, family: AwsFactory, bucket: str
) -> None:
    ecs = family.client("ecs")
    service = ecs_backends[ACCOUNT][REGION].services["car-rental-cluster:car-rental-service"]
    # a rollout from 2 to 1 in progress: the circuit breaker's way back must stay usable
    service.deployments.append(
        {**service.deployments[0], "id": "ecs-svc/2", "status": "ACTIVE", "taskDefinition": arn(2)}
    )
    register(family, 1)  # 14: what a one-off task runs
    network = service.network_configuration
    ecs.run_task(
        cluster="car-rental-cluster",
        taskDefinition=arn(14),
        startedBy="deploykit-run",
        launchType="FARGATE",
        networkConfiguration=network,
    )
    register(family, 6)  # 15-20
    live = {"app": {"sha": "3e2532eaf7e5", "taskdef": arn(5)}}
    boto3.client("s3", region_name=REGION).put_object(
        Bucket=ARTIFACTS_BUCKET, Key="deploykit/live/dev.json", Body=json.dumps(live).encode()
    )
    rt = runtime(project, family)
    decision = commands.taskdefs_cleanup(env="dev", keep=3, as_json=True, runtime=rt)
    assert active(family) == [1, 2, 5, 14, 18, 19, 20]
    why = {c.revision: c.reasons for c in decision.kept}
    assert why[1] == ("the service's PRIMARY deployment", "the service runs it")
    assert why[2] == ("the service's ACTIVE deployment",)
    assert why[5] == ("the live record's (the last app deploy left the service on it)",)
    assert why[14] == ("1 task(s) run it",)
    assert why[20] == ("newest 3",)
    printed = rt.stderr.getvalue()  # type: ignore[attr-defined]
    assert "deregistered 13 of 20 ACTIVE revision(s) of car-rental-backend (3-4, 6-13, 15-17)" in printed
    data = json.loads(rt.stdout.getvalue())  # type: ignore[attr-defined]
    assert (data["to_deregister"], data["deregistered"], data["failures"]) == (13, 13, {})
    assert next(r for r in data["revisions"] if r["revision"] == 20)["image_tag"] == f"{5:012x}"
    described = ecs.describe_task_definition(taskDefinition=arn(3))["taskDefinition"]
    assert described["status"] == "INACTIVE"  # out of the lists, still described by its ARN


STAGING = """
[environments.staging]
region = "eu-west-1"
cluster = "staging-cluster"
service = "car-rental-service"
container = "backend"
repository = "car-rental-backend"

[environments.staging.stacks]
registry = "StagingRegistryStack"
data = "StagingDataStack"
auth = "StagingAuthStack"
fargate = "StagingFargateStack"
api = "StagingApiStack"
"""


def test_a_revision_another_environments_service_of_the_same_name_runs_stays(project: Path, family: AwsFactory) -> None:
    """staging, in dev's account and region, runs a service of the same name in a cluster of its own: the CDK names
    the family after the service, so it runs revision 2 of dev's family. It stays, said as staging's; before, dev's
    cleanup deregistered it, and staging's rollbacks and one-off tasks could no longer use it."""
    (project / "deploy.toml").write_text((project / "deploy.toml").read_text() + STAGING)
    ecs = family.client("ecs")
    ecs.create_cluster(clusterName="staging-cluster")
    ecs.create_service(
        cluster="staging-cluster", serviceName="car-rental-service", taskDefinition=arn(2), desiredCount=0
    )
    rt = runtime(project, family)
    rt.peer_aws_factory = AwsFactory  # each environment its own AWS (moto's one account)
    decision = commands.taskdefs_cleanup(env="dev", keep=3, dry_run=True, runtime=rt)
    why = {c.revision: c.reasons for c in decision.kept}
    assert why[2] == ("staging: the service's PRIMARY deployment", "staging: the service runs it")
    assert 2 not in {int(a.rsplit(":", 1)[1]) for a in decision.to_deregister}


def test_another_environment_in_the_account_that_aws_throttles_stops_the_cleanup(
    project: Path, family: AwsFactory
) -> None:
    """What staging needs could not be read for now (ECS throttling it past the retries): nothing deregistered."""
    (project / "deploy.toml").write_text((project / "deploy.toml").read_text() + STAGING)

    def peer(env: EnvConfig) -> AwsFactory:
        aws = AwsFactory(env)

        def throttled(**_kwargs: Any) -> Any:
            from botocore.exceptions import ClientError

            error = {"Error": {"Code": "ThrottlingException", "Message": "Rate exceeded"}}
            raise ClientError(error, "DescribeServices")  # type: ignore[arg-type]

        aws.client("ecs").describe_services = throttled
        return aws

    rt = runtime(project, family)
    rt.peer_aws_factory = peer
    with pytest.raises(StepFailed) as stopped:
        commands.taskdefs_cleanup(env="dev", keep=3, runtime=rt)
    assert stopped.value.message.startswith(
        "what staging, in the same account and region as dev, needs of car-rental-backend could not be read ("
    )
    assert active(family) == list(range(1, 14))


@pytest.mark.parametrize("dry_run", [True, False], ids=["dry-run", "real"])
def test_another_environment_whose_service_runs_the_family_and_whose_tasks_are_refused_stops_the_cleanup(
    project: Path, family: AwsFactory, dry_run: bool
) -> None:
    """staging's service runs revision 2 (DescribeServices read it), its ecs:ListTasks is refused: before, staging was
    skipped whole and revision 2 deregistered (INACTIVE: ECS cannot roll staging back onto it). Now nothing is
    deregistered and the refusal is named."""
    (project / "deploy.toml").write_text((project / "deploy.toml").read_text() + STAGING)
    ecs = family.client("ecs")
    ecs.create_cluster(clusterName="staging-cluster")
    ecs.create_service(
        cluster="staging-cluster", serviceName="car-rental-service", taskDefinition=arn(2), desiredCount=0
    )

    def peer(env: EnvConfig) -> AwsFactory:
        aws = AwsFactory(env)

        def refused(**_kwargs: Any) -> Any:
            from botocore.exceptions import ClientError

            error = {"Error": {"Code": "AccessDeniedException", "Message": "not allowed on staging-cluster"}}
            raise ClientError(error, "ListTasks")  # type: ignore[arg-type]

        if env.name == "staging":
            aws.client("ecs").list_tasks = refused
        return aws

    rt = runtime(project, family)
    rt.peer_aws_factory = peer
    with pytest.raises(StepFailed) as stopped:
        commands.taskdefs_cleanup(env="dev", keep=3, dry_run=dry_run, runtime=rt)
    assert stopped.value.message == (
        "what staging, whose service runs car-rental-backend in the same account and region as dev, needs of it "
        "could not be read (AWS refused ListTasks in 'staging': not allowed on staging-cluster): nothing was "
        "deregistered"
    )
    assert (stopped.value.next_step or "").endswith("then rerun: inv taskdefs.cleanup --env dev")
    assert active(family) == list(range(1, 14))


def test_a_dry_run_says_what_it_would_deregister_and_changes_nothing(project: Path, family: AwsFactory) -> None:
    rt = runtime(project, family)
    decision = commands.taskdefs_cleanup(env="dev", keep=10, dry_run=True, runtime=rt)
    assert len(decision.to_deregister) == 2 and active(family) == list(range(1, 14))
    assert "dry run: would deregister 2 of 13 ACTIVE revision(s) of car-rental-backend (2-3); nothing was changed" in (
        rt.stderr.getvalue()  # type: ignore[attr-defined]
    )


def test_a_revision_that_cannot_be_deregistered_fails_the_run_after_the_others(
    project: Path, family: AwsFactory
) -> None:
    ecs = family.client("ecs")

    def refuse(params: dict[str, Any], **_: Any) -> None:
        if params["taskDefinition"] == arn(2):
            params["taskDefinition"] = f"{FAMILY}:not-a-revision"  # moto refuses it as ECS would a bad one

    ecs.meta.events.register("provide-client-params.ecs.DeregisterTaskDefinition", refuse)
    with pytest.raises(StepFailed) as failed:
        commands.taskdefs_cleanup(env="dev", keep=10, runtime=runtime(project, family))
    assert failed.value.message.startswith(
        "1 of 2 revision(s) of car-rental-backend could not be deregistered (first: "
    )
    assert "car-rental-backend:2: " in failed.value.message
    assert "inv taskdefs.cleanup --env dev" in (failed.value.next_step or "")
    assert active(family) == [1, 2, *range(4, 14)]  # 2 stayed, 3 after it went


def test_a_deregistration_refused_for_access_names_the_permission_missing(project: Path, family: AwsFactory) -> None:
    """DeregisterTaskDefinition refused (AccessDeniedException): the next step said 'rerun', which fails alike; it
    names the permission the credentials lack."""

    def denied(**_: Any) -> Any:
        error = {"Error": {"Code": "AccessDeniedException", "Message": "not allowed"}}
        return type("Response", (), {"status_code": 400, "headers": {}})(), error

    family.client("ecs").meta.events.register("before-call.ecs.DeregisterTaskDefinition", denied)
    with pytest.raises(StepFailed) as failed:
        commands.taskdefs_cleanup(env="dev", keep=10, runtime=runtime(project, family))
    assert failed.value.message.startswith("2 of 2 revision(s) of car-rental-backend could not be deregistered")
    assert failed.value.next_step == (
        "give these credentials ecs:DeregisterTaskDefinition on car-rental-backend (see README, 'Permissions'), "
        "then rerun: inv taskdefs.cleanup --env dev"
    )
    assert active(family) == list(range(1, 14))


def test_a_deregistration_with_no_answer_fails_that_revision_and_the_others_go_on(
    project: Path, family: AwsFactory
) -> None:
    """A timeout on revision 2's call (no answer at all, past botocore's retries): before, it escaped the loop after
    the others before it went, with no table and revision 3 never tried."""
    import botocore.exceptions

    def time_out(params: dict[str, Any], **_: Any) -> None:
        if params["taskDefinition"] == arn(2):
            raise botocore.exceptions.ReadTimeoutError(endpoint_url="https://ecs.eu-west-1.amazonaws.com/")

    family.client("ecs").meta.events.register("provide-client-params.ecs.DeregisterTaskDefinition", time_out)
    rt = runtime(project, family)
    with pytest.raises(StepFailed) as failed:
        commands.taskdefs_cleanup(env="dev", keep=10, runtime=rt)
    assert "car-rental-backend:2: ReadTimeoutError: Read timeout on endpoint URL" in failed.value.message
    assert active(family) == [1, 2, *range(4, 14)]  # 3 went after 2 failed
    assert "Revisions of car-rental-backend in dev kept" in rt.stderr.getvalue()  # type: ignore[attr-defined]


@pytest.mark.parametrize("keep", [0, -1])
def test_keep_must_be_at_least_one(project: Path, family: AwsFactory, keep: int) -> None:
    with pytest.raises(UsageError, match="--keep must be at least 1"):
        commands.taskdefs_cleanup(env="dev", keep=keep, runtime=runtime(project, family))
    assert active(family) == list(range(1, 14))


def test_no_service_is_refused_naming_the_stack_that_creates_it(
    project: Path, factory: AwsFactory, dev_env: EnvConfig
) -> None:
    factory.client("ecs").create_cluster(clusterName="car-rental-cluster")
    with pytest.raises(UsageError) as refused:
        commands.taskdefs_cleanup(env="dev", runtime=runtime(project, factory))
    assert refused.value.exit_code == 2 and dev_env.stacks.fargate in (refused.value.next_step or "")


@pytest.mark.parametrize("dry_run", [True, False], ids=["dry-run", "real"])
def test_a_kept_revision_whose_container_was_named_otherwise_shows_no_image(
    project: Path, factory: AwsFactory, dry_run: bool
) -> None:
    """The container was renamed 'api' → 'backend' a few deploys ago (revisions 1-3 say 'api'). Reading each kept
    revision's image for the table raised 'has no container backend: fix container in deploy.toml' (exit 2): a
    real run had deregistered 1-2 already and said nothing of them; the dry run could not preview. Such a revision
    shows no image; the table, the summary and the exit code are what they would be."""
    ecs = factory.client("ecs")
    for _ in range(3):
        ecs.register_task_definition(family=FAMILY, containerDefinitions=[{**CONTAINER, "name": "api", "memory": 256}])
    create_service(factory)  # 4, container 'backend': the service's
    register(factory, 8)  # 5-12
    rt = runtime(project, factory)
    decision = commands.taskdefs_cleanup(env="dev", keep=10, dry_run=dry_run, as_json=True, runtime=rt)
    assert decision.to_deregister == (arn(2), arn(1))
    assert active(factory) == list(range(1 if dry_run else 3, 13))
    rows = {r["revision"]: r["image_tag"] for r in json.loads(rt.stdout.getvalue())["revisions"]}  # type: ignore[attr-defined]
    assert rows[3] == "" and rows[12] == f"{7:012x}"
    printed = rt.stderr.getvalue()  # type: ignore[attr-defined]
    assert "car-rental-backend:3" in printed
    done = "would deregister 2 of 12 ACTIVE revision(s)" if dry_run else "deregistered 2 of 12 ACTIVE revision(s)"
    assert done in printed


def test_a_lock_lost_midway_stops_the_deregistrations_after_reporting_those_done(
    project: Path, family: AwsFactory, bucket: str
) -> None:
    """The cleanup's lease ran out unrenewed while it deregistered (another deploy may hold the lock now and roll the
    service onto a revision about to go): it went on. Now the lease is checked before each revision: the rest is
    not done, and the run stops with LockLost (exit 1) after its summary."""
    rt = runtime(project, family)
    clock = rt.clock
    assert isinstance(clock, FakeClock)

    def renewals_fail(**_: Any) -> None:  # after this one, the lease has run out
        clock.advance(lock.LEASE_SECONDS + 1)

    family.client("ecs").meta.events.register("after-call.ecs.DeregisterTaskDefinition", renewals_fail)
    with pytest.raises(lock.LockLost, match="ran out") as lost:
        commands.taskdefs_cleanup(env="dev", keep=10, as_json=True, runtime=rt)
    assert lost.value.exit_code == 1
    assert active(family) == [1, 2, *range(4, 14)]  # 3 went, then it stopped
    assert "deregistered 1 of 13 ACTIVE revision(s) of car-rental-backend (3); 1 could not be" in rt.stderr.getvalue()  # type: ignore[attr-defined]
    data = json.loads(rt.stdout.getvalue())  # type: ignore[attr-defined]
    assert data["failures"] == {arn(2): lock.STOPPED}
