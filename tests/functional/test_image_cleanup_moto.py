"""inv images.cleanup against moto: ECR images, an ECS service and its task definitions, histories in S3.

Moto cannot produce two things cleanup reads, so the test sets them in moto's backend: each image's
``imagePushedAt`` (moto stamps the second of the PutImage call, so every image would tie) and the service's
deployments (moto keeps the one made by CreateService, while ECS lists PRIMARY and ACTIVE during a rollout).
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws
from moto.core import DEFAULT_ACCOUNT_ID
from moto.ecr.models import ecr_backends
from moto.ecs.models import ecs_backends

from deploykit import commands, history, image_cleanup, lock, rollback
from deploykit.aws import AwsFactory, new_session
from deploykit.clock import FakeClock
from deploykit.config import EnvConfig, load_config
from deploykit.errors import ConfigError, StepFailed, UsageError
from deploykit.plan import Plan, RunReport
from tests.functional.conftest import CONTAINER, REGION
from tests.functional.test_cli import inv
from tests.functional.test_endpoints import create_stack

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
REPOSITORY = "car-rental-backend"
URI = f"{DEFAULT_ACCOUNT_ID}.dkr.ecr.{REGION}.amazonaws.com/{REPOSITORY}"
BUCKET = "registry-artifacts-1"
DIRTY = "333333333333-dirty-abcdefabcdef"

ENV = """
[environments.{name}]
region = "{region}"
cluster = "car-rental-cluster"
service = "car-rental-service"
container = "backend"
repository = "car-rental-backend"
{extra}
[environments.{name}.stacks]
registry = "CarRentalRegistryStack"
data = "CarRentalDataStack"
auth = "CarRentalAuthStack"
fargate = "CarRentalFargateStack"
api = "CarRentalApiStack"
"""


def tag(k: int) -> str:
    """The tag of image k: 12 hex characters (like a commit's), image 3 a dirty build."""
    return DIRTY if k == 3 else f"{k:x}" * 12


@dataclass
class World:
    config: Path
    digests: dict[str, str]  # tag (or "untagged") → digest
    sizes: dict[str, int]


@pytest.fixture
def world(tmp_path: Path, no_profiles: None) -> Iterator[World]:
    """dev: 13 images, a service, 8 revisions; staging (same account): a history; prod: a profile nobody has."""
    config = tmp_path / "deploy.toml"
    config.write_text(
        'default_env = "dev"\n'
        + ENV.format(name="dev", region=REGION, extra="")
        + ENV.format(name="staging", region=REGION, extra="")
        + ENV.format(name="prod", region=REGION, extra='profile = "car-rental-prod"  # not configured here\n')
    )
    with mock_aws():
        yield build_world(config)


def build_world(config: Path) -> World:
    ecr = boto3.client("ecr", region_name=REGION)
    ecr.create_repository(repositoryName=REPOSITORY)
    digests: dict[str, str] = {}
    sizes: dict[str, int] = {}
    pushed: dict[str, datetime] = {}
    # images 0 (newest) ... 12 (oldest), an hour apart; an untagged one two days old
    for k in [*range(13), -1]:
        name = tag(k) if k >= 0 else "untagged"
        size = 10_000_000 + 1_000_000 * (k + 1) + 12_345
        manifest = {
            "schemaVersion": 2,
            "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
            # moto reports the config's size as the image's, and makes the digest from the layers'
            "config": {"digest": f"sha256:{k + 1:064x}", "size": size, "mediaType": "application/json"},
            "layers": [{"digest": f"sha256:{k + 100:064x}", "size": size, "mediaType": "application/tar+gzip"}],
        }
        kwargs = {"imageTag": name} if k >= 0 else {}
        answer = ecr.put_image(repositoryName=REPOSITORY, imageManifest=json.dumps(manifest), **kwargs)
        digests[name] = answer["image"]["imageId"]["imageDigest"]
        sizes[name] = size
        pushed[digests[name]] = NOW - (timedelta(hours=k) if k >= 0 else timedelta(days=2))
    assert len(set(digests.values())) == 14, "every image has its own digest"
    for image in ecr_backends[DEFAULT_ACCOUNT_ID][REGION].repositories[REPOSITORY].images:
        image.image_pushed_at = int(pushed[image.image_digest].timestamp())

    # revisions 1..8 of the family run images 11, 10, 9, 8, 7, 6, 5, 4; revision 6 is deregistered
    ecs = boto3.client("ecs", region_name=REGION)
    ecs.create_cluster(clusterName="car-rental-cluster")
    arns = {}
    for revision, k in zip(range(1, 9), range(11, 3, -1), strict=True):
        container = {**CONTAINER, "image": f"{URI}:{tag(k)}"}
        sidecar = {"name": "log-router", "image": "public.ecr.aws/aws-observability/aws-for-fluent-bit:stable"}
        arns[revision] = ecs.register_task_definition(
            family=REPOSITORY,
            containerDefinitions=[container, sidecar],
            requiresCompatibilities=["FARGATE"],
            networkMode="awsvpc",
            cpu="256",
            memory="512",
        )["taskDefinition"]["taskDefinitionArn"]
    ecs.deregister_task_definition(taskDefinition=arns[6])
    ecs.create_service(
        cluster="car-rental-cluster", serviceName="car-rental-service", taskDefinition=arns[8], desiredCount=1
    )
    # mid-rollout: revision 8 is PRIMARY, revision 1's tasks are still draining (ACTIVE)
    service = ecs_backends[DEFAULT_ACCOUNT_ID][REGION].services["car-rental-cluster:car-rental-service"]
    primary = dict(service.deployments[0])
    service.deployments = [primary, {**primary, "id": "ecs-svc/2", "status": "ACTIVE", "taskDefinition": arns[1]}]

    # histories: dev deployed image 10 (over image 12); staging has image 3 (a dirty build) live
    s3 = boto3.client("s3", region_name=REGION)
    s3.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION})
    create_stack(
        boto3.client("cloudformation", region_name=REGION), "CarRentalRegistryStack", {"ArtifactsBucketName": BUCKET}
    )
    loaded = load_config(config)
    write_record(loaded.environment("dev"), app=tag(10), before=tag(12), when=NOW - timedelta(hours=20))
    write_record(loaded.environment("staging"), app=DIRTY, before=None, when=NOW - timedelta(hours=5))
    return World(config, digests, sizes)


def write_record(env: EnvConfig, *, app: str, before: str | None, when: datetime) -> None:
    store = history.History.of(AwsFactory(env), env)
    assert store is not None
    report = RunReport(Plan(env.name, (), "deploy.app"), [], 42.0, None)
    store.write(history.record_of(report, components={"app": app}, base={"app": before}, head=app, who="ci", now=when))


def runtime_for(world: World) -> commands.Runtime:
    return commands.Runtime(
        config_path=world.config, stdout=io.StringIO(), stderr=io.StringIO(), clock=FakeClock(start=NOW)
    )


def remaining_tags(world: World) -> set[str]:
    ecr = boto3.client("ecr", region_name=REGION)
    details = ecr.describe_images(repositoryName=REPOSITORY)["imageDetails"]
    return {t for d in details for t in d.get("imageTags", ["untagged"])}


# Kept: 0, 1 (newest 2); 3 (live in staging); 4 (PRIMARY, revision 8); 5, 7, 8, 9 (revisions 7, 5, 4, 3: the
# newest 5 ACTIVE with 8); 10 (deployed in dev); 11 (ACTIVE deployment, revision 1); 12 (live in dev before).
# Deleted: 2 (nothing holds it), 6 (its revision is deregistered), the untagged one (two days old).
DELETED = {tag(2), tag(6), "untagged"}


def test_dry_run_lists_every_image_with_why_and_deletes_nothing(world: World) -> None:
    runtime = runtime_for(world)
    decision = commands.images_cleanup(env="dev", keep=2, dry_run=True, as_json=True, runtime=runtime)
    assert remaining_tags(world) == {tag(k) for k in range(13)} | {"untagged"}
    assert {", ".join(i.tags) or "untagged" for i in decision.to_delete} == DELETED
    by_tag = {c.image.tags[0]: c.reasons for c in decision.choices if c.image.tags}
    assert by_tag[tag(0)] == ("newest 2",)
    assert by_tag[tag(4)][0] == "in use by car-rental-backend:8 (PRIMARY)"
    assert by_tag[tag(4)][1:] == (), "one in-use reason per image: the strongest"
    assert by_tag[tag(11)] == ("in use by car-rental-backend:1 (ACTIVE)",)
    assert by_tag[tag(9)] == ("rollback target car-rental-backend:3 (one of the newest 5 revisions)",)
    assert by_tag[tag(10)] == ("live in dev since 2026-11-27 16:00 UTC",), "one reason per environment: live first"
    assert by_tag[tag(12)] == ("live in dev before 2026-11-27 16:00 UTC",)
    assert by_tag[DIRTY] == ("live in staging since 2026-11-28 07:00 UTC",)
    printed = runtime.stderr.getvalue()  # type: ignore[attr-defined]
    freed = sum(world.sizes[name] for name in DELETED)
    assert f"dry run: would delete 3 images of 14, freeing {freed / 1e6:.1f} MB" in printed
    assert "(compressed size, as ECR reports it); nothing was deleted" in printed
    assert printed.count("would delete") == 1 + 3, "the summary and one row per image to delete"
    assert "<untagged>" in printed and "sha256:" in printed
    data = json.loads(runtime.stdout.getvalue())  # type: ignore[attr-defined]
    assert data["dry_run"] is True and data["deleted"] == 0 and data["freed_bytes"] == 0 and data["to_delete"] == 3
    assert {i["action"] for i in data["images"]} == {"keep", "would delete"}
    assert data["histories_read"] == ["dev", "staging"]


def test_a_real_run_deletes_exactly_those_images_and_reports_the_bytes(world: World) -> None:
    runtime = runtime_for(world)
    commands.images_cleanup(env="dev", keep=2, as_json=True, runtime=runtime)
    assert remaining_tags(world) == ({tag(k) for k in range(13)} | {"untagged"}) - DELETED
    data = json.loads(runtime.stdout.getvalue())  # type: ignore[attr-defined]
    freed = sum(world.sizes[name] for name in DELETED)
    assert data["deleted"] == 3 and data["freed_bytes"] == freed and data["failures"] == {}
    assert sorted(i["digest"] for i in data["images"] if i["action"] == "deleted") == sorted(
        world.digests[name] for name in DELETED
    )
    printed = runtime.stderr.getvalue()  # type: ignore[attr-defined]
    assert f"deleted 3 images, freed {freed / 1e6:.1f} MB (compressed size, as ECR reports it)" in printed
    # a second run has nothing left to delete
    again = runtime_for(world)
    assert commands.images_cleanup(env="dev", keep=2, runtime=again).to_delete == ()
    assert "nothing to delete: all 11 images of car-rental-backend are kept" in again.stderr.getvalue()  # type: ignore[attr-defined]


def test_an_environment_that_cannot_be_read_is_skipped_with_a_warning(world: World) -> None:
    runtime = runtime_for(world)
    commands.images_cleanup(env="dev", keep=2, dry_run=True, runtime=runtime)
    warnings = [line for line in runtime.stderr.getvalue().splitlines() if line.startswith("⚠️")]  # type: ignore[attr-defined]
    assert warnings == [
        "⚠️  skipped the history of prod (its AWS cannot be read): "
        "AWS profile 'car-rental-prod' (environment 'prod', from 'profile' in deploy.toml) is not configured"
    ]


def test_an_environment_of_another_account_whose_aws_refuses_is_skipped_too(world: World) -> None:
    """staging pinned to another account: its repository is not dev's, and its history, refused, is skipped."""
    text = world.config.read_text()
    head, staging = text.split("[environments.staging]")
    head = head.replace('region = "', f'account = "{DEFAULT_ACCOUNT_ID}"\nregion = "', 1)
    world.config.write_text(
        head + "[environments.staging]" + staging.replace('region = "', 'account = "111111111111"\nregion = "', 1)
    )

    def factory(env: EnvConfig) -> AwsFactory:
        if env.name != "staging":
            return AwsFactory(env)
        session = new_session(region_name=REGION, aws_access_key_id="other", aws_secret_access_key="x")
        aws = AwsFactory(env, session=session)
        client = aws.client("cloudformation")

        def refuse(**_kwargs: Any) -> Any:
            from botocore.exceptions import ClientError

            error = {"Error": {"Code": "AccessDenied", "Message": "not in this account"}}
            raise ClientError(error, "DescribeStacks")  # type: ignore[arg-type]

        client.describe_stacks = refuse
        return aws

    runtime = runtime_for(world)
    runtime.aws_factory = factory
    decision = commands.images_cleanup(env="dev", keep=2, dry_run=True, runtime=runtime)
    printed = runtime.stderr.getvalue()  # type: ignore[attr-defined]
    assert "⚠️  skipped the history of staging (its AWS cannot be read): AWS refused DescribeStacks" in printed
    # without staging's history, its dirty image is no longer protected
    assert DIRTY in {t for i in decision.to_delete for t in i.tags}


def test_what_another_environment_sharing_the_repository_runs_is_kept(world: World) -> None:
    """staging runs its own service (image 6) from dev's repository, and its history does not name that image: its
    service is read as dev's is, where its history alone protected it and dev's cleanup deleted what it runs."""
    text = world.config.read_text()
    head, staging = text.split("[environments.staging]")
    staging = staging.replace('cluster = "car-rental-cluster"', 'cluster = "staging-cluster"', 1)
    world.config.write_text(head + "[environments.staging]" + staging)
    ecs = boto3.client("ecs", region_name=REGION)
    ecs.create_cluster(clusterName="staging-cluster")
    arn = ecs.register_task_definition(
        family="staging-backend",
        containerDefinitions=[{**CONTAINER, "image": f"{URI}:{tag(6)}"}],
        requiresCompatibilities=["FARGATE"],
        networkMode="awsvpc",
        cpu="256",
        memory="512",
    )["taskDefinition"]["taskDefinitionArn"]
    ecs.create_service(cluster="staging-cluster", serviceName="car-rental-service", taskDefinition=arn, desiredCount=1)
    decision = commands.images_cleanup(env="dev", keep=2, dry_run=True, runtime=runtime_for(world))
    by_tag = {c.image.tags[0]: c.reasons for c in decision.choices if c.image.tags}
    assert by_tag[tag(6)] == ("staging: in use by staging-backend:1 (PRIMARY)",)
    assert {", ".join(i.tags) or "untagged" for i in decision.to_delete} == DELETED - {tag(6)}


def staging_refusing(service: str, method: str, code: str) -> Any:
    """Each environment's AWS (moto's), staging's refusing ``method`` of its ``service`` client with ``code``."""

    def factory(env: EnvConfig) -> AwsFactory:
        aws = AwsFactory(env)
        if env.name == "staging":

            def refuse(**_kwargs: Any) -> Any:
                from botocore.exceptions import ClientError

                raise ClientError({"Error": {"Code": code, "Message": "refused"}}, method)  # type: ignore[arg-type]

            setattr(aws.client(service), method, refuse)
        return aws

    return factory


@pytest.mark.parametrize(
    ("service", "method", "code", "cause"),
    [
        ("ecs", "describe_services", "AccessDeniedException", "AWS refused describe_services in 'staging'"),
        ("s3", "get_object", "AccessDenied", "AWS refused get_object in 'staging'"),
    ],
    ids=["service-denied", "history-denied"],
)
def test_an_environment_sharing_the_repository_that_cannot_be_read_stops_the_cleanup(
    world: World, service: str, method: str, code: str, cause: str
) -> None:
    """staging, in dev's account, keeps its images in dev's repository: one of its reads refused (its service, its
    history), what it runs or may roll back to is not known, and nothing is deleted. Before, a refused history
    skipped staging whole (its service with it: the image that service ran went), and a refused service left its
    history alone to protect it."""
    runtime = runtime_for(world)
    runtime.aws_factory = staging_refusing(service, method, code)
    with pytest.raises(StepFailed) as stopped:
        commands.images_cleanup(env="dev", keep=1, runtime=runtime)
    assert stopped.value.message.startswith(
        f"what staging, which shares repository car-rental-backend with dev (the same account), needs could not be "
        f"read ({cause}"
    )
    assert stopped.value.message.endswith("): nothing was deleted")
    assert stopped.value.next_step is not None
    assert stopped.value.next_step.endswith("then rerun: inv images.cleanup --env dev")
    assert len(remaining_tags(world)) == 14


def test_an_environment_sharing_the_repository_whose_live_record_is_damaged_stops_the_cleanup(world: World) -> None:
    """staging's live record is not JSON (a hand edit): its history cannot be read, and its service, which runs
    image 6 from dev's repository, was skipped with it; dev's cleanup deleted image 6. Now nothing is deleted, and
    the message says what to do with the record."""
    text = world.config.read_text()
    head, staging = text.split("[environments.staging]")
    staging = staging.replace('cluster = "car-rental-cluster"', 'cluster = "staging-cluster"', 1)
    world.config.write_text(head + "[environments.staging]" + staging)
    ecs = boto3.client("ecs", region_name=REGION)
    ecs.create_cluster(clusterName="staging-cluster")
    arn = ecs.register_task_definition(
        family="staging-backend",
        containerDefinitions=[{**CONTAINER, "image": f"{URI}:{tag(6)}"}],
        requiresCompatibilities=["FARGATE"],
        networkMode="awsvpc",
        cpu="256",
        memory="512",
    )["taskDefinition"]["taskDefinitionArn"]
    ecs.create_service(cluster="staging-cluster", serviceName="car-rental-service", taskDefinition=arn, desiredCount=1)
    boto3.client("s3", region_name=REGION).put_object(Bucket=BUCKET, Key="deploykit/live/staging.json", Body=b"{oops")
    for dry_run in (True, False):
        with pytest.raises(StepFailed) as stopped:
            commands.images_cleanup(env="dev", keep=2, dry_run=dry_run, runtime=runtime_for(world))
        assert "what staging, which shares repository car-rental-backend with dev" in stopped.value.message
        assert "the live record of staging" in stopped.value.message
        assert "put back a good copy of it, or delete it" in (stopped.value.next_step or "")
    assert tag(6) in remaining_tags(world) and len(remaining_tags(world)) == 14


def test_an_environment_sharing_the_repository_that_aws_throttles_stops_the_cleanup(world: World) -> None:
    """Its history could not be read for now (S3 slowing it down past the retries): what it needs is not known, and
    nothing is deleted; before, it was skipped as one in another account, and its live image went."""

    runtime = runtime_for(world)
    runtime.aws_factory = staging_refusing("s3", "get_object", "SlowDown")
    with pytest.raises(StepFailed) as stopped:
        commands.images_cleanup(env="dev", keep=1, runtime=runtime)
    assert stopped.value.message.startswith(
        "what staging, which may share repository car-rental-backend with dev, needs could not be read ("
    )
    assert stopped.value.message.endswith("): nothing was deleted")
    assert len(remaining_tags(world)) == 14


def test_a_real_run_waits_for_no_deploy_and_a_dry_run_needs_no_lock(world: World) -> None:
    dev = load_config(world.config).environment("dev")
    env_lock = lock.EnvLock.of(AwsFactory(dev), dev, clock=FakeClock(start=NOW))
    assert env_lock is not None
    held = env_lock.acquire("deploy.app")
    runtime = runtime_for(world)
    with pytest.raises(UsageError, match="another deploy holds the lock of environment 'dev'"):
        commands.images_cleanup(env="dev", keep=2, runtime=runtime)
    assert len(remaining_tags(world)) == 14, "nothing deleted"
    assert len(commands.images_cleanup(env="dev", keep=2, dry_run=True, runtime=runtime_for(world)).to_delete) == 3
    held.release()
    commands.images_cleanup(env="dev", keep=2, runtime=runtime_for(world))
    assert len(remaining_tags(world)) == 11
    assert env_lock.read() is None, "the cleanup released the lock"


def test_the_target_environment_must_be_readable(world: World) -> None:
    runtime = runtime_for(world)
    with pytest.raises(UsageError, match="ECR repository 'nope' does not exist in environment 'dev'"):
        text = world.config.read_text().replace('repository = "car-rental-backend"', 'repository = "nope"', 1)
        world.config.write_text(text)
        commands.images_cleanup(env="dev", runtime=runtime)


def test_bad_input_is_refused_before_anything_is_read(world: World) -> None:
    runtime = runtime_for(world)
    with pytest.raises(UsageError, match="--keep must be at least 1"):
        commands.images_cleanup(env="dev", keep=0, runtime=runtime)
    with pytest.raises(ConfigError, match="unknown environment 'qa'"):
        commands.images_cleanup(env="qa", runtime=runtime)
    assert len(remaining_tags(world)) == 14


def test_the_task_exits_2_on_bad_input(project: Path) -> None:
    done = inv(project, "images.cleanup", "--env", "qa")
    assert done.returncode == 2 and "unknown environment 'qa'" in done.stderr
    done = inv(project, "images.cleanup", "--env", "dev", "--keep", "0")
    assert done.returncode == 2 and "--keep must be at least 1" in done.stderr


def test_the_other_environments_are_read_through_the_peer_factory(world: World) -> None:
    """The command's own AWS (which a task's runtime may start the sandbox for: tasks._SandboxFirst) is asked for the
    environment cleaned alone; the histories of the others go through ``peer_aws_factory``, which starts nothing
    (``inv images.cleanup --env prod`` started the sandbox to read its history)."""
    asked: list[str] = []
    peers: list[str] = []

    def own(env: EnvConfig) -> AwsFactory:
        asked.append(env.name)
        return AwsFactory(env)

    def peer(env: EnvConfig) -> AwsFactory:
        peers.append(env.name)
        return AwsFactory(env)

    runtime = runtime_for(world)
    runtime.aws_factory, runtime.peer_aws_factory = own, peer
    commands.images_cleanup(env="dev", keep=2, dry_run=True, runtime=runtime)
    assert asked == ["dev"] and sorted(peers) == ["prod", "staging"]


@pytest.mark.parametrize("others", [30, 101], ids=["30-others", "101-others"])
def test_the_image_inv_rollback_goes_back_to_stays_however_many_other_deploys_came_since(
    others: int, world: World
) -> None:
    """The app's deploy before the live one is what ``inv rollback`` (no --to) goes back to, read from the newest 100
    records. 30 Lambda deploys since pushed it out of the newest 30 records the cleanup read: its image was deleted,
    and the rollback then refused with 'image ... is not in the registry'. It stays, and says why; an older
    image of the app no rollback goes back to (12, live before the first deploy) still goes. With 101 since, the
    rollback reads the app's own records further back than the newest 100, and so does the cleanup."""
    dev = load_config(world.config).environment("dev")
    write_record(dev, app=tag(4), before=tag(10), when=NOW - timedelta(hours=19))  # revision 8 runs image 4
    store = history.History.of(AwsFactory(dev), dev)
    assert store is not None
    fn = "lambda:health_handler"
    for k in range(others):
        report = RunReport(Plan("dev", (), "deploy.lambda health_handler"), [], 1.0, None)
        when = NOW - timedelta(hours=18) + timedelta(minutes=k)
        store.write(
            history.record_of(report, components={fn: f"{k + 1:012x}"}, base={fn: f"{k:012x}"}, head="x", now=when)
        )
    assert rollback.resolve_app(AwsFactory(dev), dev, None).sha == tag(10)

    runtime = runtime_for(world)
    decision = commands.images_cleanup(env="dev", keep=2, runtime=runtime)
    by_tag = {c.image.tags[0]: c for c in decision.choices if c.image.tags}
    assert not by_tag[tag(10)].delete
    assert by_tag[tag(10)].reasons == ("deployed in dev at 2026-11-27 16:00 UTC, what inv rollback may go back to",)
    assert by_tag[tag(12)].delete, "not what a rollback goes back to, and out of the newest 30 records"
    assert tag(10) in remaining_tags(world)
    assert rollback.resolve_app(AwsFactory(dev), dev, None).sha == tag(10), "its image is still there"


def test_the_image_inv_rollback_goes_back_to_stays_when_the_newest_records_hold_the_live_deploy_alone(
    world: World,
) -> None:
    """The newest 100 records hold the app's live deploy (image 4) and 60 others; the deploy before it (image 10) is
    further back, where the rollback reads: the cleanup reads there too (one deploy among the newest is not two)."""
    dev = load_config(world.config).environment("dev")
    store = history.History.of(AwsFactory(dev), dev)
    assert store is not None
    fn = "lambda:health_handler"

    def others(start: datetime, count: int) -> None:
        for k in range(count):
            report = RunReport(Plan("dev", (), "deploy.lambda health_handler"), [], 1.0, None)
            when = start + timedelta(minutes=k)
            components, base = {fn: f"{k + 1:012x}"}, {fn: f"{k:012x}"}
            store.write(history.record_of(report, components=components, base=base, head="x", now=when))

    others(NOW - timedelta(hours=19), 50)
    write_record(dev, app=tag(4), before=tag(10), when=NOW - timedelta(hours=10))
    others(NOW - timedelta(hours=9), 60)
    assert rollback.resolve_app(AwsFactory(dev), dev, None).sha == tag(10)
    decision = commands.images_cleanup(env="dev", keep=2, runtime=runtime_for(world))
    by_tag = {c.image.tags[0]: c for c in decision.choices if c.image.tags}
    assert not by_tag[tag(10)].delete and tag(10) in remaining_tags(world)


def test_the_image_of_the_task_definition_the_fargate_stack_holds_stays(world: World) -> None:
    """A failed update of the Fargate stack rolls the service back to the task definition the stack holds
    (taskdefs.cleanup keeps that revision). Its image was deleted when no deployment, newest revision or history
    named it, and the stack's rollback then put the service on an image that is gone. It stays, and says why."""
    template = {
        "Resources": {
            "TaskDef": {
                "Type": "AWS::ECS::TaskDefinition",
                "Properties": {
                    "Family": REPOSITORY,
                    "ContainerDefinitions": [{"Name": "backend", "Image": f"{URI}:{tag(6)}", "Memory": 512}],
                },
            }
        }
    }
    cfn = boto3.client("cloudformation", region_name=REGION)
    cfn.create_stack(StackName="CarRentalFargateStack", TemplateBody=json.dumps(template))
    [held] = [
        r["PhysicalResourceId"]
        for r in cfn.list_stack_resources(StackName="CarRentalFargateStack")["StackResourceSummaries"]
    ]
    assert held.endswith(f"{REPOSITORY}:9")
    boto3.client("ecs", region_name=REGION).deregister_task_definition(taskDefinition=held)  # not among the newest
    decision = commands.images_cleanup(env="dev", keep=2, runtime=runtime_for(world))
    by_tag = {c.image.tags[0]: c for c in decision.choices if c.image.tags}
    assert by_tag[tag(6)].reasons == (
        f"held by CarRentalFargateStack ({REPOSITORY}:9): a stack rollback goes back to it",
    )
    assert remaining_tags(world) == ({tag(k) for k in range(13)} | {"untagged"}) - {tag(2), "untagged"}


def refuse_after(client: Any, operation: str, calls: int, code: str = "ThrottlingException") -> list[int]:
    """The ``calls``+1-th and later calls of ``operation`` answer ``code`` (as AWS would after its retries)."""
    made: list[int] = []

    def answer(**_: Any) -> Any:
        made.append(1)
        if len(made) <= calls:
            return None
        error = {"Error": {"Code": code, "Message": "Rate exceeded"}, "ResponseMetadata": {"HTTPStatusCode": 400}}
        return type("Response", (), {"status_code": 400, "headers": {}})(), error

    client.meta.events.register(f"before-call.ecr.{operation}", answer)
    return made


def test_a_deletion_refused_for_access_names_the_permission_missing(world: World) -> None:
    """BatchDeleteImage refused (AccessDeniedException): the next step said 'rerun', which fails alike; it names the
    permission the credentials lack. Throttled, it still says rerun (the test after this one)."""
    runtime = runtime_for(world)
    dev = load_config(world.config).environment("dev")
    factory = AwsFactory(dev)
    runtime.aws_factory = lambda _env: factory
    refuse_after(factory.client("ecr"), "BatchDeleteImage", 0, "AccessDeniedException")
    with pytest.raises(StepFailed) as failed:
        commands.images_cleanup(env="dev", keep=2, runtime=runtime)
    assert failed.value.message.startswith("3 of 3 image(s) of car-rental-backend could not be deleted (first: ")
    assert failed.value.next_step == (
        "give these credentials ecr:BatchDeleteImage on repository car-rental-backend (see README, 'Permissions'), "
        "then rerun: inv images.cleanup --env dev"
    )
    assert len(remaining_tags(world)) == 14


def test_a_batch_refused_whole_is_reported_per_image_after_those_deleted(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """BatchDeleteImage throttled for the second batch (after its retries): the command ended on one AWS error, no
    table and no summary, so the images the first batch deleted were said nowhere. Now each row says what became
    of its image, the summary counts both, and the run exits 1."""
    monkeypatch.setattr(image_cleanup, "DELETE_BATCH", 2)  # the three images to delete go in two batches
    runtime = runtime_for(world)
    dev = load_config(world.config).environment("dev")
    factory = AwsFactory(dev)
    runtime.aws_factory = lambda _env: factory
    made = refuse_after(factory.client("ecr"), "BatchDeleteImage", 1)
    with pytest.raises(StepFailed) as failed:
        commands.images_cleanup(env="dev", keep=2, as_json=True, runtime=runtime)
    assert failed.value.exit_code == 1 and len(made) == 2
    assert failed.value.message.startswith("1 of 3 image(s) of car-rental-backend could not be deleted (first: ")
    assert failed.value.next_step == "see the table above, then rerun: inv images.cleanup --env dev"
    printed = runtime.stderr.getvalue()  # type: ignore[attr-defined]
    assert "deleted 2 images, freed" in printed and "; 1 image could not be deleted" in printed
    rows = {line.split()[0]: line for line in printed.splitlines() if "deleted" in line or "FAILED" in line}
    assert "FAILED" in rows["<untagged>"] and "ThrottlingException: Rate exceeded" in rows["<untagged>"]
    assert " deleted " in rows[tag(2)] and " deleted " in rows[tag(6)]
    assert remaining_tags(world) == ({tag(k) for k in range(13)} | {"untagged"}) - {tag(2), tag(6)}
    data = json.loads(runtime.stdout.getvalue())  # type: ignore[attr-defined]
    assert data["deleted"] == 2 and list(data["failures"]) == [world.digests["untagged"]]


def test_an_image_already_gone_counts_as_deleted(world: World) -> None:
    """The registry's lifecycle rule expires untagged images a day after their push, as the cleanup does: when it
    deleted one just before the cleanup's BatchDeleteImage, ECR answers ImageNotFound for it. That was a FAILED
    row and exit 1 for an image gone as wanted; now it is deleted, said as already gone, and the run exits 0."""
    dev = load_config(world.config).environment("dev")
    factory = AwsFactory(dev)
    other = boto3.client("ecr", region_name=REGION)

    def lifecycle(**_: Any) -> None:
        other.batch_delete_image(repositoryName=REPOSITORY, imageIds=[{"imageDigest": world.digests["untagged"]}])

    factory.client("ecr").meta.events.register_first("before-call.ecr.BatchDeleteImage", lifecycle)
    runtime = runtime_for(world)
    runtime.aws_factory = lambda _env: factory
    commands.images_cleanup(env="dev", keep=2, as_json=True, runtime=runtime)
    printed = runtime.stderr.getvalue()  # type: ignore[attr-defined]
    [row] = [line for line in printed.splitlines() if line.startswith("<untagged>")]
    assert " deleted " in row and "already gone (the registry's lifecycle rule, or another cleanup" in row
    assert "deleted 3 images, freed" in printed and "; 1 of them already gone" in printed
    data = json.loads(runtime.stdout.getvalue())  # type: ignore[attr-defined]
    assert data["failures"] == {} and data["already_gone"] == [world.digests["untagged"]] and data["deleted"] == 3
    assert remaining_tags(world) == ({tag(k) for k in range(13)} | {"untagged"}) - DELETED
    freed = sum(world.sizes[name] for name in DELETED - {"untagged"})  # the rule freed the untagged one's bytes
    assert data["freed_bytes"] == freed and f"freed {freed / 1e6:.1f} MB" in printed


PATTERN = """
[environments."dev-*"]
region = "{region}"
cluster = "car-rental-{{env}}"
service = "car-rental-{{env}}"
container = "backend"
repository = "car-rental-backend-{{env}}"

[environments."dev-*".stacks]
registry = "CarRental-{{env}}-Registry"
data = "CarRental-{{env}}-Data"
auth = "CarRental-{{env}}-Auth"
fargate = "CarRental-{{env}}-Fargate"
api = "CarRental-{{env}}-Api"
"""


def test_an_environment_a_pattern_makes_is_cleaned_like_any_other(world: World) -> None:
    """``--env dev-alice``, made from ``[environments."dev-*"]``, crashed with KeyError: 'dev-alice' (the histories
    were looked up by name among deploy.toml's own environments). Its own history is read first, then theirs."""
    with world.config.open("a") as toml:
        toml.write(PATTERN.format(region=REGION))
    alice = load_config(world.config).environment("dev-alice")
    ecr = boto3.client("ecr", region_name=REGION)
    ecr.create_repository(repositoryName=alice.repository)
    for n in range(3):
        manifest = {
            "schemaVersion": 2,
            "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
            "config": {"digest": f"sha256:{n + 500:064x}", "size": 1000, "mediaType": "application/json"},
            "layers": [{"digest": f"sha256:{n + 600:064x}", "size": 1000, "mediaType": "application/tar+gzip"}],
        }
        ecr.put_image(repositoryName=alice.repository, imageManifest=json.dumps(manifest), imageTag=tag(n))
    ecs = boto3.client("ecs", region_name=REGION)
    ecs.create_cluster(clusterName=alice.cluster)
    container = {**CONTAINER, "image": f"{URI}-dev-alice:{tag(0)}", "memory": 256}
    arn = ecs.register_task_definition(family="car-rental-dev-alice", containerDefinitions=[container])
    revision = arn["taskDefinition"]["taskDefinitionArn"]
    ecs.create_service(cluster=alice.cluster, serviceName=alice.service, taskDefinition=revision)
    s3 = boto3.client("s3", region_name=REGION)
    s3.create_bucket(Bucket="alice-artifacts", CreateBucketConfiguration={"LocationConstraint": REGION})
    cfn = boto3.client("cloudformation", region_name=REGION)
    create_stack(cfn, alice.stacks.registry, {"ArtifactsBucketName": "alice-artifacts"})
    write_record(alice, app=tag(1), before=tag(2), when=NOW - timedelta(hours=2))
    runtime = runtime_for(world)
    decision = commands.images_cleanup(env="dev-alice", keep=1, dry_run=True, as_json=True, runtime=runtime)
    data = json.loads(runtime.stdout.getvalue())  # type: ignore[attr-defined]
    assert data["env"] == "dev-alice" and data["histories_read"] == ["dev-alice", "dev", "staging"]
    why = {c.image.tags[0]: c.reasons for c in decision.choices}
    assert "in use by car-rental-dev-alice:1 (PRIMARY)" in why[tag(0)]
    assert "live in dev-alice since 2026-11-28 10:00 UTC" in why[tag(1)]
    assert "live in dev-alice before 2026-11-28 10:00 UTC" in why[tag(2)]


def test_a_lock_lost_midway_stops_the_deletions_after_reporting_those_done(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The cleanup's lease ran out unrenewed while it deleted (another deploy may hold the lock now and register a
    revision of an image it is about to delete): it went on deleting. Now the lease is checked before each batch:
    the rest is not done, each row says so, and the run stops with LockLost (exit 1) after the table."""
    monkeypatch.setattr(image_cleanup, "DELETE_BATCH", 2)
    runtime = runtime_for(world)
    dev = load_config(world.config).environment("dev")
    factory = AwsFactory(dev)
    runtime.aws_factory = lambda _env: factory
    clock = runtime.clock
    assert isinstance(clock, FakeClock)

    def renewals_fail(**_: Any) -> None:  # after this batch, the lease has run out
        clock.advance(lock.LEASE_SECONDS + 1)

    factory.client("ecr").meta.events.register("after-call.ecr.BatchDeleteImage", renewals_fail)
    with pytest.raises(lock.LockLost, match="ran out") as lost:
        commands.images_cleanup(env="dev", keep=2, runtime=runtime)
    assert lost.value.exit_code == 1
    printed = runtime.stderr.getvalue()  # type: ignore[attr-defined]
    assert "deleted 2 images, freed" in printed
    [row] = [line for line in printed.splitlines() if line.startswith("<untagged>")]
    assert "FAILED" in row and lock.STOPPED in row
    assert remaining_tags(world) == ({tag(k) for k in range(13)} | {"untagged"}) - {tag(2), tag(6)}


@pytest.mark.parametrize("cleanup", ["images_cleanup", "taskdefs_cleanup", "lambda_cleanup"])
@pytest.mark.parametrize("dry_run", [True, False], ids=["dry-run", "real"])
def test_credentials_of_another_account_than_deploy_toml_pins_are_refused_dry_run_or_not(
    world: World, cleanup: str, dry_run: bool
) -> None:
    """deploy.toml pins dev to account 111111111111, the credentials act in moto's: a real run was refused (exit 2),
    while a dry run read the other account and said what it would delete there. Both are refused now."""
    text = world.config.read_text()
    head, rest = text.split("[environments.staging]")
    head = head.replace('region = "', 'account = "111111111111"\nregion = "', 1)
    world.config.write_text(head + "[environments.staging]" + rest)
    runtime = runtime_for(world)
    with pytest.raises(UsageError) as refused:
        getattr(commands, cleanup)(env="dev", keep=2, dry_run=dry_run, runtime=runtime)
    assert refused.value.exit_code == 2
    assert refused.value.message == (
        f"the credentials for environment 'dev' act in AWS account {DEFAULT_ACCOUNT_ID}, but deploy.toml pins "
        "111111111111 for it: nothing was changed"
    )
    assert runtime.stderr.getvalue() == ""  # type: ignore[attr-defined]
    assert len(remaining_tags(world)) == 14


def staging_without_credentials(code: str, status: int, event: str = "before-call") -> Any:
    """Each environment's AWS (moto's), every call of staging's (its STS GetCallerIdentity first; those ``event``
    names) answering ``code`` with HTTP ``status``, as AWS does after the SDK's retries."""

    def factory(env: EnvConfig) -> AwsFactory:
        if env.name != "staging":
            return AwsFactory(env)
        session = new_session(region_name=REGION)

        def answer(**_: Any) -> Any:
            error = {"Error": {"Code": code, "Message": "refused"}, "ResponseMetadata": {"HTTPStatusCode": status}}
            return type("Response", (), {"status_code": status, "headers": {}})(), error

        session.events.register(event, answer)  # copied into each client the session makes
        return AwsFactory(env, session=session)

    return factory


def test_an_environment_pinned_to_the_targets_account_shares_it_though_its_credentials_cannot_be_had(
    world: World,
) -> None:
    """deploy.toml pins dev and staging to the same account (and the same repository): they share it, whatever
    staging's credentials say. Those refused (an expired token: its account() cannot be had), what staging needs is
    not known: the cleanup stops and nothing is deleted, rather than skipping staging as one of another account."""
    text = world.config.read_text()
    head, staging = text.split("[environments.staging]")
    pin = f'account = "{DEFAULT_ACCOUNT_ID}"\nregion = "'
    staging = staging.replace('region = "', pin, 1).replace('"CarRental', '"CarRentalStaging')  # stacks of its own
    world.config.write_text(head.replace('region = "', pin, 1) + "[environments.staging]" + staging)
    runtime = runtime_for(world)
    runtime.aws_factory = runtime.peer_aws_factory = staging_without_credentials("ExpiredTokenException", 403)
    with pytest.raises(StepFailed) as stopped:
        commands.images_cleanup(env="dev", keep=1, runtime=runtime)
    assert stopped.value.message.startswith(
        "what staging, which shares repository car-rental-backend with dev (the same account), needs could not be "
        "read ("
    )
    assert "(the AWS credentials of environment 'staging' have expired)" in stopped.value.message
    assert stopped.value.message.endswith("): nothing was deleted")
    assert len(remaining_tags(world)) == 14


def test_an_environment_whose_account_aws_throttles_stops_the_cleanup(world: World) -> None:
    """Nothing pinned: whether staging shares dev's repository is told by its credentials' account (STS), and STS
    throttles it past the retries (the rest of staging's AWS answers). That it shares it is not ruled out: the
    cleanup stops (rerun in a while) and nothing is deleted, rather than taking staging for one of another account
    and leaving what its service runs unread."""
    runtime = runtime_for(world)
    refusing = staging_without_credentials("Throttling", 400, "before-call.sts.GetCallerIdentity")
    runtime.aws_factory = runtime.peer_aws_factory = refusing
    with pytest.raises(StepFailed) as stopped:
        commands.images_cleanup(env="dev", keep=1, runtime=runtime)
    assert stopped.value.message.startswith(
        "what staging, which may share repository car-rental-backend with dev, needs could not be read ("
    )
    assert stopped.value.message.endswith("): nothing was deleted")
    assert stopped.value.next_step == "rerun in a while: inv images.cleanup --env dev"
    assert len(remaining_tags(world)) == 14
