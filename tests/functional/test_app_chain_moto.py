"""register-taskdef and roll-service against moto's ECS and ECR, through the same commands the tasks call."""

from __future__ import annotations

import base64
import dataclasses
import io
import json
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import ClassVar
from unittest.mock import Mock

import pytest
from botocore.stub import Stubber

from deploykit import app_chain, commands, history, images, registry
from deploykit.app_chain import RegisterTaskDef, RollService
from deploykit.aws import AwsFactory
from deploykit.clock import FakeClock
from deploykit.commands import core
from deploykit.config import EnvConfig
from deploykit.errors import ServiceBeingDeleted, StepFailed, UsageError
from deploykit.git import current_revision
from deploykit.output import Reporter
from deploykit.plan import Context, Executor, Outcome, Plan, Step
from tests.conftest import git
from tests.functional.conftest import CONTAINER, asked, create_service, held_across, put_image
from tests.functional.conftest import moto_runtime as runtime


def revisions(factory: AwsFactory) -> list[str]:
    answer = factory.client("ecs").list_task_definitions(familyPrefix="car-rental-backend")
    return list(answer["taskDefinitionArns"])


def test_repository_uri_and_push_credentials_come_from_ecr(factory: AwsFactory) -> None:
    create_service(factory)
    assert registry.repository_uri(factory).endswith(".amazonaws.com/car-rental-backend")
    auth = registry.push_auth(factory)
    assert auth is not None and auth["username"] == "AWS" and auth["serveraddress"].startswith("https://")
    token = factory.client("ecr").get_authorization_token()["authorizationData"][0]["authorizationToken"]
    assert base64.b64decode(token).decode() == f"AWS:{auth['password']}"


def test_the_registry_token_is_asked_once_per_command_beside_the_repository(project: Path, factory: AwsFactory) -> None:
    """A command that pushes asks for ECR's token while it reads the repository's URI, before the build: the push
    finds it there instead of asking after the build (a round trip less between build and push)."""
    create_service(factory)
    ecr = factory.client("ecr")
    tokens: list[str] = []
    ecr.meta.events.register("before-call.ecr.GetAuthorizationToken", lambda **_: tokens.append("asked"))
    held_across(2, (ecr, "DescribeRepositories"), (ecr, "GetAuthorizationToken"))
    with pytest.raises(AssertionError, match="must not touch Docker"):  # the push itself is not made here
        commands.app_chain(["push"], env="dev", runtime=runtime(project, factory))
    assert tokens == ["asked"]
    assert registry.push_auth(factory) == registry.push_auth(factory) and tokens == ["asked"]  # the command's own


def test_missing_repository_is_bad_input(factory: AwsFactory) -> None:
    with pytest.raises(UsageError, match="ECR repository 'car-rental-backend' does not exist") as err:
        registry.repository_uri(factory)
    assert "inv deploy.stack CarRentalRegistryStack" in (err.value.next_step or "")


def test_register_taskdef_changes_only_the_image_and_is_idempotent(project: Path, factory: AwsFactory) -> None:
    before = create_service(factory)
    revision = current_revision(project)
    put_image(factory, revision.tag)
    out = io.StringIO()
    report = commands.app_chain(
        ["register-taskdef"], env="dev", as_json=True, runtime=runtime(project, factory, stdout=out)
    )
    assert report is not None and report.records[0].status == "done"
    arns = revisions(factory)
    assert len(arns) == 2
    ecs = factory.client("ecs")
    answer = ecs.describe_task_definition(taskDefinition=arns[-1], include=["TAGS"])
    new = answer["taskDefinition"]
    container = new["containerDefinitions"][0]
    assert container["image"].endswith(f"/car-rental-backend:{revision.tag}")
    for key in ("environment", "secrets", "healthCheck", "logConfiguration", "portMappings"):
        assert container[key] == CONTAINER[key], key
    for key in ("cpu", "memory", "networkMode", "executionRoleArn", "taskRoleArn", "requiresCompatibilities"):
        assert new[key] == before[key], key
    tags = {t["key"]: t["value"] for t in answer["tags"]}
    assert tags == {"team": "cars", "deploykit:git-sha": revision.sha, "deploykit:image-tag": revision.tag}
    assert '"task_definition"' in out.getvalue()

    again = commands.app_chain(["register-taskdef"], env="dev", runtime=runtime(project, factory))
    assert again is not None and again.records[0].status == "skipped"
    assert len(revisions(factory)) == 2  # no identical revision


def test_register_then_roll_describe_each_task_definition_once(project: Path, factory: AwsFactory) -> None:
    """A revision never changes: the one register-taskdef starts from is read once, the one it registers comes
    from its own answer, and roll-service reads neither again (on AWS 100-300 ms a read)."""
    create_service(factory)
    put_image(factory, current_revision(project).tag)
    described = asked(factory.client("ecs"), "DescribeTaskDefinition", "taskDefinition")
    report = commands.app_chain(["register-taskdef", "roll-service"], env="dev", runtime=runtime(project, factory))
    assert report is not None and [r.status for r in report.records] == ["done", "done"]
    assert described == [revisions(factory)[0]]


def test_register_then_roll_read_the_service_and_list_the_revisions_once(project: Path, factory: AwsFactory) -> None:
    """register-taskdef reads the service, then lists its family's revisions while it asks the registry for the
    image (one round trip); roll-service starts from the service as register-taskdef read it and points it at the
    revision it registered: four round trips for both, where they took seven. Alone, roll-service reads both."""
    create_service(factory)
    put_image(factory, current_revision(project).tag)
    ecs = factory.client("ecs")
    services = asked(ecs, "DescribeServices", "services")
    listed = asked(ecs, "ListTaskDefinitions", "familyPrefix")
    held_across(2, (ecs, "ListTaskDefinitions"), (factory.client("ecr"), "DescribeImages"))
    chain = ["register-taskdef", "roll-service"]
    report = commands.app_chain(chain, env="dev", allow_older=True, runtime=runtime(project, factory))
    assert report is not None and [r.status for r in report.records] == ["done", "done"]
    assert (len(services), len(listed)) == (1, 1)
    service = ecs.describe_services(cluster="car-rental-cluster", services=["car-rental-service"])["services"][0]
    assert service["taskDefinition"] == revisions(factory)[-1]

    ecs.update_service(cluster="car-rental-cluster", service="car-rental-service", taskDefinition=revisions(factory)[0])
    services.clear()
    listed.clear()
    alone = commands.app_chain(["roll-service"], env="dev", allow_older=True, runtime=runtime(project, factory))
    assert alone is not None and alone.records[0].status == "done"
    assert (len(services), len(listed)) == (1, 1)
    service = ecs.describe_services(cluster="car-rental-cluster", services=["car-rental-service"])["services"][0]
    assert service["taskDefinition"] == revisions(factory)[-1]


def test_the_app_s_python_that_does_not_compile_is_refused_before_the_build(project: Path, factory: AwsFactory) -> None:
    """Every Python file of the build context the rules give to the app, as the work tree has it (an untracked one
    too); the backend's tests deploy nothing and are not judged. Nothing is built (the runtime has no Docker)."""
    (project / "backend" / "app" / "wip.py").write_text("import os\n\ndef half(:\n")
    (project / "backend" / "tests").mkdir(exist_ok=True)
    (project / "backend" / "tests" / "test_wip.py").write_text("def (:\n")
    with pytest.raises(UsageError) as refused:
        commands.app_chain(["build"], env="dev", allow_dirty=True, runtime=runtime(project, factory))
    assert refused.value.exit_code == 2
    assert refused.value.message == "1 app Python file does not compile: backend/app/wip.py:3: invalid syntax"
    dry = runtime(project, factory)
    commands.app_chain(["build"], env="dev", allow_dirty=True, dry_run=True, runtime=dry)
    said = dry.stderr.getvalue()  # type: ignore[attr-defined]
    assert "⚠️  1 app Python file does not compile: backend/app/wip.py:3: invalid syntax: the deploy would be" in said


def test_register_taskdef_refuses_an_image_that_is_not_pushed(project: Path, factory: AwsFactory) -> None:
    create_service(factory)
    with pytest.raises(UsageError, match="is not in the registry") as err:
        commands.app_chain(["register-taskdef"], env="dev", runtime=runtime(project, factory))
    assert "inv build push" in (err.value.next_step or "")
    assert len(revisions(factory)) == 1  # nothing changed


def test_register_taskdef_refuses_an_image_built_for_another_platform_than_the_tasks(
    project: Path, factory: AwsFactory
) -> None:
    """The task definition runs ARM64 (Graviton), the image is built for linux/amd64 ([build] platform): its tasks
    would stop at once with 'exec format error'. Refused before anything is registered; the matching platform is
    registered."""
    create_service(factory, runtimePlatform={"cpuArchitecture": "ARM64", "operatingSystemFamily": "LINUX"})
    put_image(factory, current_revision(project).tag)
    with pytest.raises(UsageError, match=r"runs on ARM64, but the image is built for linux/amd64") as refused:
        commands.app_chain(["register-taskdef"], env="dev", runtime=runtime(project, factory))
    assert refused.value.exit_code == 2 and "platform = 'linux/arm64'" in (refused.value.next_step or "")
    assert "the Fargate stack puts the tasks on [build] platform's architecture" in (refused.value.next_step or "")
    assert len(revisions(factory)) == 1  # nothing changed

    toml = project / "deploy.toml"
    toml.write_text(toml.read_text().replace("[build]\n", '[build]\nplatform = "linux/arm64"\n', 1))
    git(project, "commit", "-qam", "build for Graviton")
    put_image(factory, current_revision(project).tag)
    report = commands.app_chain(["register-taskdef"], env="dev", runtime=runtime(project, factory))
    assert report is not None and report.records[0].status == "done" and len(revisions(factory)) == 2


DB_SECRET = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:db-AbCdEf"


def test_register_taskdef_refuses_a_revision_whose_secret_or_log_group_is_missing_and_registers_once_they_exist(
    project: Path, factory: AwsFactory
) -> None:
    """ECS would find a missing secret or log group only as each new task failed to start (ResourceInitializationError):
    the new revision is refused before it is registered, naming each missing thing; once they exist it is
    registered. A role deleted is missing too (ECS could not assume it)."""
    create_service(
        factory,
        {
            "secrets": [
                {"name": "API_KEY", "valueFrom": "arn:aws:ssm:eu-west-1:123456789012:parameter/api-key"},
                {"name": "DB", "valueFrom": f"{DB_SECRET}:password::"},
            ],
            "logConfiguration": {"logDriver": "awslogs", "options": {"awslogs-group": "/ecs/backend"}},
        },
    )
    put_image(factory, current_revision(project).tag)
    with pytest.raises(UsageError) as refused:
        commands.app_chain(["register-taskdef"], env="dev", runtime=runtime(project, factory))
    assert refused.value.exit_code == 2
    assert refused.value.message == (
        "the new revision of car-rental-service's task definition (from car-rental-backend:1) names what does not "
        "exist, so none of its tasks would start: secret DB of container backend (Secrets Manager secret "
        "arn:aws:secretsmanager:eu-west-1:123456789012:secret:db-AbCdEf): not found; log group /ecs/backend of "
        "container backend: not found. Nothing was changed"
    )
    assert "create what is missing" in (refused.value.next_step or "")
    assert len(revisions(factory)) == 1  # nothing registered

    factory.client("logs").create_log_group(logGroupName="/ecs/backend")
    secret = factory.client("secretsmanager").create_secret(Name="db", SecretString='{"password": "x"}')["ARN"]
    ecs = factory.client("ecs")  # moto makes its own suffix for the secret's ARN: the revision names that one
    current = ecs.describe_task_definition(taskDefinition="car-rental-backend")["taskDefinition"]
    current["containerDefinitions"][0]["secrets"][1]["valueFrom"] = f"{secret}:password::"
    keys = ("family", "taskRoleArn", "executionRoleArn", "networkMode", "containerDefinitions", "cpu", "memory")
    arn = ecs.register_task_definition(**{k: current[k] for k in keys}, requiresCompatibilities=["FARGATE"])
    ecs.update_service(
        cluster="car-rental-cluster",
        service="car-rental-service",
        taskDefinition=arn["taskDefinition"]["taskDefinitionArn"],
    )
    factory.client("iam").delete_role(RoleName="task")
    with pytest.raises(UsageError, match="names what does not exist") as refused:
        commands.app_chain(["register-taskdef"], env="dev", runtime=runtime(project, factory))
    assert "tasks would start: the task role arn:aws:iam::123456789012:role/task: not found. " in refused.value.message

    factory.client("iam").create_role(RoleName="task", AssumeRolePolicyDocument="{}")
    report = commands.app_chain(["register-taskdef"], env="dev", runtime=runtime(project, factory))
    assert report is not None and report.records[0].status == "done", report.error
    assert report.records[0].detail == "registered car-rental-backend:3 (from car-rental-backend:2)"
    assert len(revisions(factory)) == 3


def built_here(base: str, arch: str = "amd64") -> Mock:
    """An image on the (fake) engine, as deploykit builds it: its platform, the base its label names."""
    return Mock(attrs={"Os": "linux", "Architecture": arch, "Config": {"Labels": {images.BASE_LABEL: base}}})


def test_a_push_of_another_environment_s_build_of_the_tag_is_refused(project: Path, factory: AwsFactory) -> None:
    """The sandbox and dev build the same local tag (a repository of the same name): `inv build push --env dev`
    builds the sandbox's (invoke gives --env to the last task) and pushed it to dev's registry, which keeps it under
    the tag for good (later pushes skip it: already there). Refused, exit 2, nothing pushed."""
    import docker
    import docker.errors
    from docker.models.images import ImageCollection

    create_service(factory)
    engine = Mock(spec=docker.DockerClient, api=Mock(spec=docker.APIClient), images=Mock(spec=ImageCollection))
    engine.api.inspect_distribution.side_effect = docker.errors.APIError("manifest unknown", Mock(status_code=404))
    run = dataclasses.replace(runtime(project, factory), docker_factory=Mock(return_value=engine))
    for held, said in (
        (
            built_here("deploykit/python-base:3.11-bookworm"),
            "FROM deploykit/python-base:3.11-bookworm, not python:3.11",
        ),
        (built_here("python:3.11-slim", "arm64"), "for linux/arm64, not linux/amd64"),
    ):
        engine.images.get.return_value = held
        with pytest.raises(UsageError, match=said) as refused:
            commands.app_chain(["push"], env="dev", runtime=run)
        assert refused.value.exit_code == 2 and "inv build --env dev" in (refused.value.next_step or "")
    assert engine.api.tag.call_count == 0 and engine.api.push.call_count == 0


def test_a_push_whose_revision_register_taskdef_would_refuse_pushes_nothing(project: Path, factory: AwsFactory) -> None:
    """``inv push register-taskdef`` with the service's secret gone: register-taskdef's reads, made while the push
    runs, refuse the revision before the image is pushed, so the registry keeps no image that nothing was made to
    run (exit 2, "Nothing was changed" true of the whole run). Docker is a fake: the image is built here, not yet in
    the registry."""
    import docker
    import docker.errors
    from docker.models.images import ImageCollection

    create_service(factory, {"secrets": [{"name": "DB", "valueFrom": f"{DB_SECRET}:password::"}]})
    engine = Mock(spec=docker.DockerClient, api=Mock(spec=docker.APIClient), images=Mock(spec=ImageCollection))
    engine.api.inspect_distribution.side_effect = docker.errors.APIError("manifest unknown", Mock(status_code=404))
    engine.images.get.return_value = built_here("python:3.11-slim")  # dev's build: its platform, its base
    run = dataclasses.replace(runtime(project, factory), docker_factory=Mock(return_value=engine))
    with pytest.raises(UsageError, match="names what does not exist") as refused:
        commands.app_chain(["push", "register-taskdef"], env="dev", runtime=run)
    assert refused.value.exit_code == 2 and refused.value.message.endswith("Nothing was changed")
    assert "secret DB of container backend" in refused.value.message
    engine.images.get.assert_called_once()  # the built image is there: the push had all it needed
    assert engine.api.tag.call_count == 0 and engine.api.push.call_count == 0  # but nothing was pushed
    assert len(revisions(factory)) == 1
    assert refused.value.message.startswith("refused ahead by register-taskdef: the new revision of car-rental-")
    assert "🛑 push refused" in run.stderr.getvalue() and "register-taskdef  ·  not run" in run.stderr.getvalue()


def test_in_express_mode_the_new_revision_is_made_from_the_one_the_fargate_stack_holds_when_newer(
    project: Path, factory: AwsFactory
) -> None:
    """An express update of the Fargate stack registered :2 (a new setting); its rollout failed and ECS put :1 back,
    the stack keeping :2. Made from :1, the app's next revision would drop the setting for good."""
    create_service(factory)
    setting = {"Name": "FEATURE", "Value": "on"}
    held = {
        "Type": "AWS::ECS::TaskDefinition",
        "Properties": {
            "Family": "car-rental-backend",
            "Cpu": "256",
            "Memory": "512",
            "NetworkMode": "awsvpc",
            "RequiresCompatibilities": ["FARGATE"],
            "ContainerDefinitions": [
                {"Name": "backend", "Image": CONTAINER["image"], "Essential": True, "Environment": [setting]}
            ],
        },
    }
    cfn = factory.client("cloudformation")
    cfn.create_stack(StackName="CarRentalFargateStack", TemplateBody=json.dumps({"Resources": {"TaskDef": held}}))
    put_image(factory, current_revision(project).tag)
    ran = commands.app_chain(["register-taskdef"], env="dev", runtime=runtime(project, factory))
    assert ran is not None and ran.records[0].detail == "registered car-rental-backend:3 (from car-rental-backend:1)"

    toml = project / "deploy.toml"
    toml.write_text(toml.read_text().replace("[environments.dev]\n", '[environments.dev]\nstack_mode = "express"\n', 1))
    git(project, "commit", "-qam", "dev: express")
    put_image(factory, current_revision(project).tag)
    ran = commands.app_chain(["register-taskdef"], env="dev", runtime=runtime(project, factory))
    assert ran is not None and ran.records[0].detail == (
        "registered car-rental-backend:4 (from car-rental-backend:2, which CarRentalFargateStack holds; the service "
        "runs car-rental-backend:1, its express rollout failed)"
    )
    new = factory.client("ecs").describe_task_definition(taskDefinition=revisions(factory)[-1])["taskDefinition"]
    assert {"name": "FEATURE", "value": "on"} in new["containerDefinitions"][0]["environment"]


def test_in_express_mode_the_stack_s_revision_of_the_image_the_service_runs_is_rolled_to(
    project: Path, factory: AwsFactory
) -> None:
    """The stack holds :2, the service's image with a new setting, whose express rollout failed (ECS put :1 back).
    register-taskdef picks :2 (it runs the image already); roll-service then rolls to it: skipping because :1 runs the
    same image left the setting off while the run said the stack's revision was in place."""
    toml = project / "deploy.toml"
    toml.write_text(toml.read_text().replace("[environments.dev]\n", '[environments.dev]\nstack_mode = "express"\n', 1))
    git(project, "commit", "-qam", "dev: express")
    tag = current_revision(project).tag
    image = f"123456789012.dkr.ecr.eu-west-1.amazonaws.com/car-rental-backend:{tag}"
    create_service(factory, {"image": image})
    put_image(factory, tag)
    container = {
        "Name": "backend",
        "Image": image,
        "Essential": True,
        "Environment": [{"Name": "FEATURE", "Value": "on"}],
    }
    properties = {"Family": "car-rental-backend", "Cpu": "256", "Memory": "512", "NetworkMode": "awsvpc"}
    held = {"Type": "AWS::ECS::TaskDefinition", "Properties": {**properties, "ContainerDefinitions": [container]}}
    held["Properties"]["RequiresCompatibilities"] = ["FARGATE"]
    cfn = factory.client("cloudformation")
    cfn.create_stack(StackName="CarRentalFargateStack", TemplateBody=json.dumps({"Resources": {"TaskDef": held}}))
    ran = commands.app_chain(["register-taskdef", "roll-service"], env="dev", runtime=runtime(project, factory))
    assert ran is not None and [r.status for r in ran.records] == ["skipped", "done"], ran.error
    assert ran.records[1].detail.startswith("car-rental-service → car-rental-backend:2 ")
    service = factory.client("ecs").describe_services(cluster="car-rental-cluster", services=["car-rental-service"])
    assert service["services"][0]["taskDefinition"].endswith(":2")


def test_roll_service_points_the_service_at_our_revision(project: Path, factory: AwsFactory) -> None:
    create_service(factory)
    revision = current_revision(project)
    put_image(factory, revision.tag)
    commands.app_chain(["register-taskdef", "roll-service"], env="dev", runtime=runtime(project, factory))
    service = factory.client("ecs").describe_services(cluster="car-rental-cluster", services=["car-rental-service"])
    assert service["services"][0]["taskDefinition"] == revisions(factory)[-1]


def test_rolling_back_to_an_older_commit_needs_allow_older(project: Path, factory: AwsFactory) -> None:
    create_service(factory)
    old = current_revision(project)
    (project / "backend" / "app" / "main.py").write_text("# newer\n")
    git(project, "commit", "-qam", "newer")
    newer = current_revision(project)
    for revision in (old, newer):
        put_image(factory, revision.tag)
    commands.app_chain(["register-taskdef", "roll-service"], env="dev", runtime=runtime(project, factory))
    count = len(revisions(factory))

    git(project, "checkout", "-q", old.sha)  # an out-of-date checkout: deploy.app would take "newer" back
    with pytest.raises(UsageError, match=f"HEAD \\({old.short}\\) is behind what dev runs: app") as err:
        commands.app_chain(["register-taskdef", "roll-service"], env="dev", runtime=runtime(project, factory))
    assert f"live at {newer.short}, 1 ahead" in err.value.message and "--allow-older" in (err.value.next_step or "")
    assert len(revisions(factory)) == count  # nothing changed
    # stages that roll nothing go on; going back on purpose too
    assert commands.app_chain(["register-taskdef"], env="dev", runtime=runtime(project, factory)) is not None
    commands.app_chain(["roll-service"], env="dev", allow_older=True, runtime=runtime(project, factory))
    service = factory.client("ecs").describe_services(cluster="car-rental-cluster", services=["car-rental-service"])
    image = factory.client("ecs").describe_task_definition(taskDefinition=service["services"][0]["taskDefinition"])
    assert image["taskDefinition"]["containerDefinitions"][0]["image"].endswith(f":{old.tag}")


def test_the_running_image_and_the_repository_are_read_at_once(project: Path, factory: AwsFactory) -> None:
    """roll-service's check of the commit the service runs adds no round trip: it goes with the repository's."""
    create_service(factory)
    put_image(factory, current_revision(project).tag)
    held_across(2, (factory.client("ecs"), "DescribeServices"), (factory.client("ecr"), "DescribeRepositories"))
    report = commands.app_chain(["register-taskdef", "roll-service"], env="dev", runtime=runtime(project, factory))
    assert report is not None and [r.status for r in report.records] == ["done", "done"]


def test_roll_service_without_a_revision_says_to_register_one(project: Path, factory: AwsFactory) -> None:
    create_service(factory)
    with pytest.raises(UsageError, match="no ACTIVE revision") as err:
        commands.app_chain(["roll-service"], env="dev", runtime=runtime(project, factory))
    assert "inv register-taskdef" in (err.value.next_step or "")


def test_unknown_service_and_cluster_are_bad_input(project: Path, factory: AwsFactory) -> None:
    factory.client("ecr").create_repository(repositoryName="car-rental-backend")
    with pytest.raises(UsageError, match="cluster 'car-rental-cluster' does not exist") as err:
        commands.app_chain(["roll-service"], env="dev", runtime=runtime(project, factory))
    assert err.value.next_step == "deploy the Fargate stack first: inv deploy.stack CarRentalFargateStack --env dev"
    factory.client("ecs").create_cluster(clusterName="car-rental-cluster")
    with pytest.raises(UsageError, match="service 'car-rental-service' not found") as err:
        commands.app_chain(["roll-service"], env="dev", runtime=runtime(project, factory))
    assert "create it: inv deploy.stack CarRentalFargateStack --env dev (deleted by hand while" in (
        err.value.next_step or ""
    )


def test_dry_run_changes_nothing(project: Path, factory: AwsFactory) -> None:
    create_service(factory)
    put_image(factory, current_revision(project).tag)
    out = io.StringIO()
    assert (
        commands.app_chain(
            ["register-taskdef", "roll-service", "wait-healthy"],
            env="dev",
            dry_run=True,
            as_json=True,
            runtime=runtime(project, factory, stdout=out),
        )
        is None
    )
    assert '"dry_run": true' in out.getvalue() and '"register-taskdef"' in out.getvalue()
    assert len(revisions(factory)) == 1


def test_aws_errors_during_a_step_become_failures_with_a_next_step(project: Path, factory: AwsFactory) -> None:
    create_service(factory)
    put_image(factory, current_revision(project).tag)
    rt = runtime(project, factory)
    ecs = factory.client("ecs")
    ecs.register_task_definition = Mock(side_effect=_client_error("ServerException", "boom"))
    with pytest.raises(StepFailed, match=r"RegisterTaskDefinition failed \(ServerException\): boom"):
        commands.app_chain(["register-taskdef"], env="dev", runtime=rt)


def _client_error(code: str, message: str) -> Exception:
    from botocore.exceptions import ClientError

    return ClientError({"Error": {"Code": code, "Message": message}}, "RegisterTaskDefinition")


def test_destroy_refuses_a_protected_environment(project: Path, factory: AwsFactory) -> None:
    toml = project / "deploy.toml"
    toml.write_text(
        toml.read_text().replace(
            '[environments.dev]\nregion = "eu-west-1"', '[environments.dev]\nprotected = true\nregion = "eu-west-1"'
        )
    )
    with pytest.raises(UsageError, match="'dev' is protected") as err:
        commands.destroy(env="dev", include_data=True, runtime=runtime(project, factory))
    assert err.value.exit_code == 2


@dataclass(frozen=True)
class PushStandIn(Step):
    """Stands in for the push (an artifact, nothing live changed): it puts the image in ECR once register-taskdef
    has read the service and listed its revisions, which proves they were read while it ran."""

    name: ClassVar[str] = "push"
    artifacts_only: ClassVar[bool] = True
    factory: AwsFactory = field(compare=False)
    tag: str
    read: threading.Event = field(compare=False)

    def describe(self) -> str:
        return f"push {self.tag}"

    def run(self, ctx: Context) -> Outcome:
        assert self.read.wait(10), "register-taskdef read nothing while the image was pushed"
        put_image(self.factory, self.tag)
        return Outcome.done(f"pushed {self.tag}")


def test_register_taskdef_reads_the_service_and_its_revisions_while_the_image_is_pushed(
    project: Path, factory: AwsFactory, dev_env: EnvConfig
) -> None:
    """The push changes nothing of the service: register-taskdef's first two round trips (the service, then its
    revision and the newest of its family) go while it runs, and after it only the registry is asked (the image is
    there only now) before registering; roll-service takes the service as read."""
    create_service(factory)
    tag = current_revision(project).tag
    ecs = factory.client("ecs")
    services = asked(ecs, "DescribeServices", "services")
    listed = asked(ecs, "ListTaskDefinitions", "familyPrefix")
    read = threading.Event()
    ecs.meta.events.register("after-call.ecs.ListTaskDefinitions", lambda **_: read.set())
    uri = factory.client("ecr").describe_repositories()["repositories"][0]["repositoryUri"]
    plan = Plan(
        "dev",
        (
            PushStandIn(factory, tag, read),
            RegisterTaskDef("car-rental-cluster", "car-rental-service", "backend", uri, tag, "0" * 40),
            RollService("car-rental-cluster", "car-rental-service", "backend", f"{uri}:{tag}"),
        ),
    )
    clock = FakeClock()
    ctx = Context(Mock(), dev_env, factory, clock, Reporter(io.StringIO(), tty=False, clock=clock), Mock())

    report = Executor(ctx).execute(plan)

    assert report.ok and [r.status for r in report.records] == ["done", "done", "done"], report.error
    assert (len(services), len(listed)) == (1, 1)
    service = ecs.describe_services(cluster="car-rental-cluster", services=["car-rental-service"])["services"][0]
    assert service["taskDefinition"] == revisions(factory)[-1]


def test_register_taskdef_does_not_ask_the_registry_for_the_image_this_commands_push_left_there(
    project: Path, factory: AwsFactory, dev_env: EnvConfig
) -> None:
    """The push (or the copy) of the same command confirmed the image in the registry: register-taskdef registers
    without asking again (one round trip after the push). Here ECR does not hold it: asked, it would refuse."""
    create_service(factory)
    tag = current_revision(project).tag
    uri = factory.client("ecr").describe_repositories()["repositories"][0]["repositoryUri"]
    clock = FakeClock()
    ctx = Context(Mock(), dev_env, factory, clock, Reporter(io.StringIO(), tty=False, clock=clock), Mock())
    step = RegisterTaskDef("car-rental-cluster", "car-rental-service", "backend", uri, tag, "0" * 40)
    with pytest.raises(UsageError, match="is not in the registry"):
        step.run(ctx)
    asked_images = asked(factory.client("ecr"), "DescribeImages", "repositoryName")

    app_chain.in_registry_now(factory).add(f"{uri}:{tag}")  # as this command's push does once it confirmed it
    outcome = step.run(ctx)

    assert outcome.status == "done" and asked_images == []


def test_rolling_the_service_records_the_commits_it_takes_live(
    project: Path, factory: AwsFactory, bucket: str, dev_env: EnvConfig
) -> None:
    """As deploy.auto's: the commits since the one the service runs that change the app (not docs)."""
    live = git(project, "rev-parse", "--short=12", "HEAD").strip()
    image = f"{CONTAINER['image'].rsplit(':', 1)[0]}:{live}"
    create_service(factory, {"image": image})
    fleet = project / "backend" / "app" / "fleet.py"
    fleet.write_text(fleet.read_text() + "\n# more cars\n")
    git(project, "commit", "-qam", "Fleet: more cars")
    change = git(project, "rev-parse", "--short=12", "HEAD").strip()
    (project / "README.md").write_text("docs\n")
    git(project, "add", "-A")
    git(project, "commit", "-qm", "Docs")
    put_image(factory, current_revision(project).tag)
    report = commands.app_chain(["register-taskdef", "roll-service"], env="dev", runtime=runtime(project, factory))
    assert report is not None and report.ok
    store = history.History.of(factory, dev_env)
    assert store is not None
    assert store.records(limit=1)[0].commits == [{"sha": change, "author": "t", "subject": "Fleet: more cars"}]
    # the commit's time, kept for inv report's commit to live (a clone that lacks the commit reads it there)
    committed = datetime.fromtimestamp(int(git(project, "show", "-s", "--format=%ct", "HEAD")), UTC)
    assert store.records(limit=1)[0].committed == committed.isoformat(timespec="seconds")


# -- services UpdateService refuses whatever the rerun: said as such, exit 2 ------------------------------------


@pytest.mark.parametrize("controller", ["CODE_DEPLOY", "EXTERNAL"])
def test_a_service_another_controller_deploys_is_refused_before_anything_is_registered(
    project: Path, factory: AwsFactory, controller: str
) -> None:
    """UpdateService refuses such a service a new revision (moto does not): the deployment controller is in the
    service register-taskdef reads, so the chain stops there, before registering a revision nothing would run."""
    create_service(factory, service={"deploymentController": {"type": controller}})
    put_image(factory, current_revision(project).tag)
    updates = asked(factory.client("ecs"), "UpdateService", "service")
    for stages in (["register-taskdef", "roll-service"], ["roll-service"]):
        with pytest.raises(UsageError) as err:
            commands.app_chain(stages, env="dev", allow_older=True, runtime=runtime(project, factory))
        assert err.value.exit_code == 2
        assert err.value.message == (
            f"ECS service 'car-rental-service' is deployed by its {controller} deployment controller: deploykit "
            "rolls out only services ECS deploys itself (deployment controller ECS); nothing was changed"
        )
        assert (err.value.next_step or "").startswith("deploy it with ")
        assert "cdk/stacks/fargate_stack.py" in (err.value.next_step or "")
    assert len(revisions(factory)) == 1 and updates == []


@dataclass(frozen=True)
class Refuse(Step):
    """Between register-taskdef and roll-service: ECS's next answer (UpdateService's, the only call roll-service
    makes after register-taskdef's reads) is ``code``, as the Stubber plays it (moto gives none of these)."""

    name: ClassVar[str] = "refuse"
    changes_what_runs: ClassVar[bool] = False
    stub: Stubber = field(compare=False)
    code: str
    message: str

    def describe(self) -> str:
        return f"ECS refuses UpdateService: {self.code}"

    def run(self, ctx: Context) -> Outcome:
        self.stub.add_client_error("update_service", self.code, self.message, 400)
        self.stub.activate()
        return Outcome.done("armed")


REFUSALS = [
    (
        "ServiceNotActiveException",
        "Service was not ACTIVE.",
        2,
        "ECS service 'car-rental-service' in cluster 'car-rental-cluster' is being deleted or was deleted "
        "(ServiceNotActiveException: Service was not ACTIVE.): it cannot be rolled out; nothing was changed",
        "once ECS has finished deleting it (it may have: inv health --env dev says whether), deploy the stack that "
        "defines it: inv deploy.stack CarRentalFargateStack --env dev",
    ),
    (
        "InvalidParameterException",
        "UpdateService with a CODE_DEPLOY controller can only update the desired count, deployment configuration...",
        2,
        "ECS service 'car-rental-service' is deployed by its CODE_DEPLOY deployment controller "
        "(InvalidParameterException: UpdateService with a CODE_DEPLOY controller can only update the desired count, "
        "deployment configuration...): deploykit rolls out only services ECS deploys itself (deployment controller "
        "ECS); nothing was changed",
        "deploy it with CodeDeploy",
    ),
    (
        "ClusterNotFoundException",
        "Cluster not found.",
        2,
        "ECS cluster 'car-rental-cluster' does not exist",
        "deploy the Fargate stack first: inv deploy.stack CarRentalFargateStack --env dev",
    ),
    (
        "ServiceNotFoundException",
        "Service not found.",
        2,
        "ECS service 'car-rental-service' not found in cluster 'car-rental-cluster'",
        "check 'cluster' and 'service' in deploy.toml, or create it: inv deploy.stack CarRentalFargateStack --env dev "
        "(deleted by hand while CarRentalFargateStack still holds it, it is not made again from an unchanged "
        "template: aws cloudformation detect-stack-drift --stack-name CarRentalFargateStack shows it)",
    ),
    (
        "InvalidParameterException",
        "Unable to update task definition on services with a EXTERNAL deployment controller.",
        2,
        "ECS service 'car-rental-service' is deployed by its EXTERNAL deployment controller "
        "(InvalidParameterException: Unable to update task definition on services with a EXTERNAL deployment "
        "controller.): deploykit rolls out only services ECS deploys itself (deployment controller ECS); nothing "
        "was changed",
        "deploy it with the tool that makes its task sets",
    ),
    # any other refusal, and throttling, are said as before: a rerun may pass
    (
        "InvalidParameterException",
        "Task definition does not support launch_type EXTERNAL.",  # ECS Anywhere's: no deployment controller
        1,
        "AWS UpdateService failed (InvalidParameterException): Task definition does not support launch_type EXTERNAL.",
        "rerun; if it persists, inv health",
    ),
    (
        "ThrottlingException",
        "Rate exceeded",
        1,
        "AWS throttled UpdateService in dev (ThrottlingException) after its retries: Rate exceeded; nothing after "
        "this call was changed",
        "wait a minute and rerun the same command",
    ),
]


@pytest.mark.parametrize(
    ("code", "said", "exit_code", "message", "next_step"),
    REFUSALS,
    ids=["not-active", "code-deploy", "no-cluster", "no-service", "external", "other-invalid-parameter", "throttled"],
)
def test_update_service_refusals_a_rerun_cannot_help_name_the_problem_and_exit_2(
    project: Path,
    factory: AwsFactory,
    dev_env: EnvConfig,
    code: str,
    said: str,
    exit_code: int,
    message: str,
    next_step: str,
) -> None:
    """The service changed between register-taskdef's read and roll-service's UpdateService (deleted, given another
    controller, its cluster gone): what must be fixed first and how, exit 2, not "rerun"."""
    create_service(factory)
    tag = current_revision(project).tag
    put_image(factory, tag)
    uri = factory.client("ecr").describe_repositories()["repositories"][0]["repositoryUri"]
    stub = Stubber(factory.client("ecs"))
    plan = Plan(
        "dev",
        (
            RegisterTaskDef("car-rental-cluster", "car-rental-service", "backend", uri, tag, "0" * 40),
            Refuse(stub, code, said),
            RollService("car-rental-cluster", "car-rental-service", "backend", f"{uri}:{tag}"),
        ),
    )
    clock = FakeClock()
    ctx = Context(Mock(), dev_env, factory, clock, Reporter(io.StringIO(), tty=False, clock=clock), Mock())
    try:
        report = Executor(ctx, core._translator(dev_env)).execute(plan)
    finally:
        stub.deactivate()
    stub.assert_no_pending_responses()  # UpdateService was asked, and nothing after it
    assert [r.status for r in report.records] == ["done", "done", "failed"]
    assert report.error is not None
    assert (report.error.exit_code, report.error.message) == (exit_code, message)
    assert (report.error.next_step or "").startswith(next_step)
    service = factory.client("ecs").describe_services(cluster="car-rental-cluster", services=["car-rental-service"])
    assert service["services"][0]["taskDefinition"] == revisions(factory)[0]  # still the one it ran


def test_a_service_being_deleted_is_refused_before_update_service(dev_env: EnvConfig, aws_credentials: None) -> None:
    """DRAINING (moto deletes at once): roll-service reads it and refuses without asking UpdateService."""
    factory = AwsFactory(dev_env)
    ecs = factory.client("ecs")
    arn = "arn:aws:ecs:eu-west-1:123456789012:task-definition/car-rental-backend:1"
    draining = {"serviceName": "car-rental-service", "status": "DRAINING", "taskDefinition": arn, "deployments": []}
    clock = FakeClock()
    ctx = Context(Mock(), dev_env, factory, clock, Reporter(io.StringIO(), tty=False, clock=clock), Mock())
    step = RollService("car-rental-cluster", "car-rental-service", "backend", "repo/car-rental-backend:abc")
    with Stubber(ecs) as stub:  # any other call fails
        stub.add_response(
            "describe_services",
            {"services": [draining], "failures": []},
            {"cluster": "car-rental-cluster", "services": ["car-rental-service"], "include": ["TAGS"]},
        )
        with pytest.raises(UsageError) as err:
            step.run(ctx)
        stub.assert_no_pending_responses()
    assert err.value.exit_code == 2
    assert err.value.message == (
        "ECS service 'car-rental-service' in cluster 'car-rental-cluster' is being deleted (status DRAINING): it "
        "cannot be rolled out; nothing was changed"
    )
    # ECS has not finished: CreateService refuses a name still draining, so the stack makes it again only after
    assert (err.value.next_step or "").startswith(
        "once ECS has finished deleting it (inv health --env dev shows it INACTIVE, or not found, then), deploy the "
        "stack that defines it: inv deploy.stack CarRentalFargateStack --env dev"
    )


def test_a_service_deleted_during_the_wait_ends_it_at_once_and_nothing_is_rolled_back_on_it(
    project: Path, factory: AwsFactory
) -> None:
    """Someone deletes the service (inv destroy, its stack deleted: INACTIVE in moto, which deletes at once; DRAINING
    on AWS) right after roll-service pointed it at the new revision: the wait stops at its first poll, saying so,
    rather than polling until its deadline (minutes on AWS); the run changed what runs, so it failed (exit 1), and
    the automatic rollback, which could not roll the service either, is not tried."""
    create_service(factory)
    tag = current_revision(project).tag
    put_image(factory, tag)
    other = factory.client("ecs")  # what someone else's tool calls, after UpdateService answered
    deleted: list[str] = []

    def delete(**_: object) -> None:
        if not deleted:
            deleted.append("car-rental-service")
            other.delete_service(cluster="car-rental-cluster", service="car-rental-service", force=True)

    other.meta.events.register("after-call.ecs.UpdateService", delete)
    clock = FakeClock()
    with pytest.raises(ServiceBeingDeleted) as err:
        commands.app_chain(
            ["register-taskdef", "roll-service", "wait-healthy"],
            env="dev",
            runtime=runtime(project, factory, clock=clock),
        )
    assert deleted and clock.sleeps == []  # not one pause: the first poll saw it
    assert err.value.exit_code == 1
    assert err.value.message.startswith(
        "ECS service 'car-rental-service' in cluster 'car-rental-cluster' was deleted (status INACTIVE): its rollout "
        "cannot finish; nothing was changed (by this step: the steps before it changed what runs, as the table "
        "shows)"
    )
    assert err.value.message.endswith(
        "; no automatic rollback: nothing can be rolled out on a service ECS is deleting or has deleted"
    )
    assert "inv deploy.stack CarRentalFargateStack --env dev" in (err.value.next_step or "")
