"""Promotion builds once: a promoted environment's app chain copies the image its source (``promote_from``) runs,
under that image's tag, instead of building and pushing its own (moto: dev runs a commit's image in ECS)."""

from __future__ import annotations

import functools
import io
import json
from pathlib import Path
from typing import Any

import pytest
from moto.core import DEFAULT_ACCOUNT_ID as MOTO_ACCOUNT
from moto.ecs.models import ecs_backends

from deploykit import commands, history, planner
from deploykit.aws import AwsFactory
from deploykit.config import load_config
from deploykit.errors import UsageError
from deploykit.plan import Plan, RunReport, StepRecord
from tests.conftest import git
from tests.functional.conftest import create_service, put_image, synthesized_as
from tests.functional.test_endpoints import create_stack
from tests.functional.test_rollback_moto import run_image

PROD = """
[environments.prod]
promote_from = "dev"
region = "eu-west-1"
cluster = "prod-cluster"
service = "prod-service"
container = "backend"
repository = "prod-backend"

[environments.prod.stacks]
registry = "ProdRegistryStack"
data = "ProdDataStack"
auth = "ProdAuthStack"
fargate = "ProdFargateStack"
api = "ProdApiStack"
"""


@pytest.fixture
def promoted(project: Path, factory: AwsFactory) -> str:
    """prod, promoted from dev, which runs HEAD's app (its image tagged with HEAD's commit); the tag."""
    toml = project / "deploy.toml"
    toml.write_text(toml.read_text() + PROD)
    git(project, "commit", "-qam", "prod, promoted from dev")
    create_service(factory)
    create_stack(factory.client("cloudformation"), "CarRentalFargateStack", {})  # dev runs an app
    factory.client("ecr").create_repository(repositoryName="prod-backend")
    run_there(factory, git(project, "rev-parse", "--short=12", "HEAD").strip())
    return git(project, "rev-parse", "--short=12", "HEAD").strip()


def run_there(factory: AwsFactory, tag: str) -> None:
    """dev's service runs the image ``tag``."""
    run_image(factory, tag)
    # moto leaves every rollout IN_PROGRESS; ECS completes it once the new tasks are healthy
    service = ecs_backends[MOTO_ACCOUNT][factory.env.region].services["car-rental-cluster:car-rental-service"]
    for deployment in service.deployments:
        deployment["rolloutState"] = "COMPLETED"


def dry_run(project: Path, deploy: Any, **options: Any) -> tuple[dict[str, Any], str]:
    runtime = commands.Runtime(config_path=project / "deploy.toml", stdout=io.StringIO(), stderr=io.StringIO())
    deploy(env="prod", dry_run=True, as_json=True, runtime=runtime, **options)
    assert isinstance(runtime.stdout, io.StringIO) and isinstance(runtime.stderr, io.StringIO)
    return json.loads(runtime.stdout.getvalue()), runtime.stderr.getvalue()


def app(**options: Any) -> Any:
    return commands.app_chain(list(planner.APP_STAGES), **options)


def test_the_app_chain_of_a_promoted_environment_copies_the_image_its_source_runs(project: Path, promoted: str) -> None:
    plan, said = dry_run(project, app)
    steps = [step["step"] for step in plan["steps"]]
    assert steps[:4] == ["promote-image", "register-taskdef", "roll-service", "wait-healthy"]
    assert not {"base-image", "build", "push"} & set(steps)
    copy, register = plan["steps"][0], plan["steps"][1]
    assert copy["inputs"]["source"] == "dev" and copy["inputs"]["tag"] == promoted
    assert copy["inputs"]["repository"] == "123456789012.dkr.ecr.eu-west-1.amazonaws.com/prod-backend"
    assert copy["describe"] == f"copy the image dev runs ({promoted}) → {copy['inputs']['repository']}:{promoted}"
    assert register["inputs"]["tag"] == promoted
    assert plan["deploys"] == [{"component": "app", "sha": promoted}]
    assert "✅ promoted from dev: it runs app as this checkout has\n" in said
    assert f"📦 the app's image is the one dev runs, copied from there: {promoted} (built once)\n" in said


def test_after_a_commit_that_leaves_the_app_alone_prod_takes_the_image_dev_runs_under_its_own_commit(
    project: Path, promoted: str
) -> None:
    (project / "NOTES.md").write_text("docs only\n")
    git(project, "add", "NOTES.md")
    git(project, "commit", "-qm", "docs")
    head = git(project, "rev-parse", "--short=12", "HEAD").strip()
    plan, _ = dry_run(project, app)
    [copy] = [step for step in plan["steps"] if step["step"] == "promote-image"]
    assert copy["inputs"]["tag"] == promoted != head  # the image dev proved, not a build of HEAD
    config = load_config(project / "deploy.toml")
    sha = git(project, "rev-parse", promoted).strip()
    [register] = [step for step in plan["steps"] if step["step"] == "register-taskdef"]
    assert register["inputs"]["git_sha"] == sha  # the commit the image was built from, in full
    assert config.environment("prod").promote_from == "dev"


def test_an_emergency_fix_let_through_unpromoted_is_built_for_prod(project: Path, promoted: str) -> None:
    fleet = project / "backend" / "app" / "fleet.py"
    fleet.write_text(fleet.read_text() + "\n# hotfix\n")
    git(project, "commit", "-qam", "hotfix")
    with pytest.raises(UsageError, match="dev does not run this checkout's app"):
        dry_run(project, app)
    plan, said = dry_run(project, app, unpromoted=True)
    steps = [step["step"] for step in plan["steps"]]
    assert steps[:3] == ["base-image", "build", "push"] and "promote-image" not in steps
    assert "⚠️  deploying to prod what dev does not run" in said


def test_a_push_or_a_revision_alone_in_a_promoted_environment_takes_the_image_its_source_runs(
    project: Path, promoted: str
) -> None:
    """inv push --env prod copies dev's image: a build of the commit pushed there would keep the tag (immutable)
    and be what a later promoted deploy rolls out. Refused, as a deploy is, when dev does not run it."""

    def push(**options: Any) -> Any:
        return commands.app_chain(["push"], **options)

    def register(**options: Any) -> Any:
        return commands.app_chain(["register-taskdef"], **options)

    plan, said = dry_run(project, push)
    assert [step["step"] for step in plan["steps"]] == ["promote-image"]
    assert plan["steps"][0]["inputs"]["source"] == "dev" and plan["steps"][0]["inputs"]["tag"] == promoted
    assert f"📦 the app's image is the one dev runs, copied from there: {promoted} (built once)\n" in said
    plan, _ = dry_run(project, register)
    assert [(step["step"], step["inputs"]["tag"]) for step in plan["steps"]] == [("register-taskdef", promoted)]

    fleet = project / "backend" / "app" / "fleet.py"
    fleet.write_text(fleet.read_text() + "\n# hotfix\n")
    git(project, "commit", "-qam", "hotfix")
    for chain in (push, register):
        with pytest.raises(UsageError, match="dev does not run this checkout's app") as refused:
            dry_run(project, chain)
        assert refused.value.exit_code == 2
    plan, _ = dry_run(project, push, unpromoted=True)
    assert [step["step"] for step in plan["steps"]] == ["push"]  # built here: the emergency fix


def test_a_full_deploy_of_a_promoted_environment_copies_the_image_and_gives_its_tag_to_the_fargate_stack(
    project: Path, promoted: str
) -> None:
    """dev runs the app, not its stacks (moto holds no record of them): they go --unpromoted, the app is copied."""
    (project / "lambda").mkdir()  # no functions
    plan, said = dry_run(project, commands.deploy_full, unpromoted=True)
    assert "stack:fargate: dev does not run it" in said and "app:" not in said
    described = " | ".join(step["describe"] for step in plan["steps"])
    assert "promote-image: copy the image dev runs" in described and "build" not in described
    assert f"ProdFargateStack.template.json (ImageTag={promoted})" in described
    assert {"component": "app", "sha": promoted} in plan["deploys"]


def test_what_dev_ran_in_a_run_that_passed_is_promoted_though_dev_moved_on(
    project: Path, promoted: str, factory: AwsFactory
) -> None:
    """The release waited for prod's approval while dev took the next commit: prod, at the release, takes the
    image of dev's run that passed, found in dev's history; the next commit, never deployed to dev, is refused."""
    bucket = "dev-artifacts"
    factory.client("s3").create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    create_stack(factory.client("cloudformation"), "CarRentalRegistryStack", {"ArtifactsBucketName": bucket})
    store = history.History(factory, factory.env, bucket)

    def deployed(tag: str, before: str | None) -> None:
        run = RunReport(Plan("dev", (), "deploy.auto"), [StepRecord("smoke", "checks", "done", 1.0)], 3.0)
        store.write(history.record_of(run, components={"app": tag}, base={"app": before}, head=tag, who="ci@dev"))

    deployed(promoted, None)
    release = git(project, "rev-parse", "HEAD").strip()
    fleet = project / "backend" / "app" / "fleet.py"
    fleet.write_text(fleet.read_text() + "\n# the next release\n")
    git(project, "commit", "-qam", "the next release")
    following = git(project, "rev-parse", "--short=12", "HEAD").strip()
    run_there(factory, following)  # dev runs it now
    deployed(following, promoted)
    git(project, "checkout", "-q", release)

    plan, said = dry_run(project, app)
    [copy] = [step for step in plan["steps"] if step["step"] == "promote-image"]
    assert copy["inputs"]["tag"] == promoted
    assert (
        f"✅ promoted from dev: it ran app as this checkout has at {promoted}, in a run that passed there (it runs "
        f"{following} now)\n📦 the app's image is the one dev ran, copied from there: {promoted} (built once)\n"
    ) in said

    git(project, "checkout", "-q", "main")
    fleet.write_text(fleet.read_text() + "\n# never in dev\n")
    git(project, "commit", "-qam", "not deployed anywhere")
    with pytest.raises(UsageError, match=r"(?s)dev does not run this checkout's app \(nor did any of its last 30 runs"):
        dry_run(project, app)


@pytest.mark.parametrize("moved_on", [False, True], ids=["runs-it-now", "ran-it-before"])
def test_what_dev_deployed_without_its_smoke_is_not_promoted_until_a_smoke_passes_there(
    project: Path, promoted: str, factory: AwsFactory, moved_on: bool
) -> None:
    """dev deployed the release with --no-smoke (its run has no smoke): prod took it as proven there, the README
    promising only what was smoke-tested in dev first. Refused, whether dev runs it still or moved on since; a run
    whose smoke passed in dev afterwards proves it."""
    bucket = "dev-artifacts"
    factory.client("s3").create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    create_stack(factory.client("cloudformation"), "CarRentalRegistryStack", {"ArtifactsBucketName": bucket})
    store = history.History(factory, factory.env, bucket)

    def deployed(tag: str, before: str | None, steps: list[StepRecord], components: dict[str, str]) -> None:
        run = RunReport(Plan("dev", (), "deploy.app"), steps, 3.0)
        store.write(history.record_of(run, components=components, base={"app": before}, head=tag, who="ana@laptop"))

    rolled = [StepRecord("roll-service", "roll", "done", 1.0)]
    deployed(promoted, None, rolled, {"app": promoted})  # inv deploy.app --no-smoke
    assert store.live()["app"]["unsmoked"] == "true"
    release = git(project, "rev-parse", "HEAD").strip()
    if moved_on:  # dev took the next commit, its smoke passed: what dev ran before was never smoked
        fleet = project / "backend" / "app" / "fleet.py"
        fleet.write_text(fleet.read_text() + "\n# the next release\n")
        git(project, "commit", "-qam", "the next release")
        following = git(project, "rev-parse", "--short=12", "HEAD").strip()
        run_there(factory, following)
        deployed(following, promoted, [*rolled, StepRecord("smoke", "checks", "done", 1.0)], {"app": following})
        git(project, "checkout", "-q", release)
    with pytest.raises(UsageError) as refused:
        dry_run(project, app)
    said = "" if moved_on else f"dev runs it at {promoted}, deployed there without its smoke (--no-smoke)"
    said += "" if moved_on else ", and no smoke has passed there since (inv smoke --env dev proves it, as does any "
    assert said in refused.value.message and "dev does not run this checkout's app" in refused.value.message
    if not moved_on:  # a later run's smoke passed in dev (a deploy.auto of another part): what dev runs is proven
        deployed(promoted, promoted, [StepRecord("smoke", "checks", "done", 1.0)], {"lambda:x": promoted})
        assert "unsmoked" not in store.live()["app"]
        assert "✅ promoted from dev: it runs app as this checkout has" in dry_run(project, app)[1]


def test_a_dry_run_of_one_stack_is_refused_as_its_deploy_would_be(project: Path, promoted: str) -> None:
    runtime = commands.Runtime(config_path=project / "deploy.toml", stdout=io.StringIO(), stderr=io.StringIO())
    with pytest.raises(UsageError, match="dev does not run this checkout's stack:data") as refused:
        commands.deploy_stack("ProdDataStack", env="prod", dry_run=True, runtime=runtime)
    assert refused.value.exit_code == 2


def test_a_stack_that_adds_a_function_dev_does_not_run_is_refused(
    project: Path, factory: AwsFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The API stack of prod, which never had report_handler, gives it this commit's zip: dev runs the stack but not
    the function. The stack alone was checked ("✅ promoted from dev"), and code dev never ran went out, recorded as
    nothing; with --unpromoted it goes, said and recorded."""
    toml = project / "deploy.toml"
    toml.write_text(toml.read_text() + PROD)
    handler = project / "lambda" / "report_handler" / "handler.py"
    handler.parent.mkdir(parents=True)
    handler.write_text("def handler(event, context):\n    return {'statusCode': 200}\n")
    git(project, "add", "-A")
    git(project, "commit", "-qm", "report_handler")
    s3 = factory.client("s3")
    s3.create_bucket(Bucket="dev-artifacts", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    create_stack(factory.client("cloudformation"), "CarRentalRegistryStack", {"ArtifactsBucketName": "dev-artifacts"})
    create_stack(factory.client("cloudformation"), "CarRentalApiStack", {})
    live = {"stack:api": {"sha": git(project, "rev-parse", "--short=12", "HEAD").strip()}}
    s3.put_object(Bucket="dev-artifacts", Key="deploykit/live/dev.json", Body=json.dumps(live).encode())
    deploy = functools.partial(commands.deploy_stack, "ProdApiStack", smoke=False)
    # a function the stack does not take (work in progress, or another stack's) is neither checked nor recorded
    synthesized_as(monkeypatch, {"ProdApiStack": ["LoginHandlerCodeKey"]})
    plan, _ = dry_run(project, deploy)
    assert [d["component"] for d in plan["deploys"]] == ["stack:api"]
    synthesized_as(monkeypatch, {"ProdApiStack": ["LoginHandlerCodeKey", "ReportHandlerCodeKey"]})
    with pytest.raises(UsageError, match=r"dev does not run this checkout's lambda:report_handler \(") as refused:
        dry_run(project, deploy)
    assert refused.value.exit_code == 2
    plan, said = dry_run(project, deploy, unpromoted=True)
    assert (
        "⚠️  deploying to prod what dev does not run (--unpromoted; its history record says so):\n"
        "  lambda:report_handler: dev does not run it\n"
    ) in said
    assert [d["component"] for d in plan["deploys"]] == ["stack:api", "lambda:report_handler"]  # live with the stack


def test_a_fargate_stack_given_an_image_dev_never_ran_is_refused(
    project: Path, promoted: str, factory: AwsFactory
) -> None:
    """prod's Fargate stack deployed with --image-tag rolls the app out at that image: dev must run it or have run
    it, as for any app deploy of prod; it was checked for the stack alone, and an image dev never ran went out."""
    s3 = factory.client("s3")
    s3.create_bucket(Bucket="dev-artifacts", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    create_stack(factory.client("cloudformation"), "CarRentalRegistryStack", {"ArtifactsBucketName": "dev-artifacts"})
    live = {"stack:fargate": {"sha": promoted}, "app": {"sha": promoted}}
    s3.put_object(Bucket="dev-artifacts", Key="deploykit/live/dev.json", Body=json.dumps(live).encode())
    for tag in (promoted, "eeeeeee55555"):
        put_image(factory, tag, repository="prod-backend")
    runtime = commands.Runtime(config_path=project / "deploy.toml", stdout=io.StringIO(), stderr=io.StringIO())
    with pytest.raises(UsageError) as refused:
        commands.deploy_stack("ProdFargateStack", env="prod", image_tag="eeeeeee55555", dry_run=True, runtime=runtime)
    assert refused.value.message == (
        "prod takes only what dev runs (promote_from = 'dev'), and --image-tag rolls out the app at eeeeeee55555: dev "
        "neither runs nor ran the image eeeeeee55555; nothing was changed"
    )
    commands.deploy_stack("ProdFargateStack", env="prod", image_tag=promoted, dry_run=True, runtime=runtime)


def test_prods_own_settings_of_the_app_are_not_promoted_from_dev(project: Path, promoted: str) -> None:
    """prod gets a base image of its own: prod's deploy copied dev's image (dev's base), and the app then counted as
    changed in prod at every deploy.auto, deployed again each time. Refused, saying why; --unpromoted builds it."""
    toml, header = project / "deploy.toml", '[environments.prod]\npromote_from = "dev"\n'
    hardened = 'base_image = "registry.example.com/hardened/python:3.11-slim"\n'
    toml.write_text(toml.read_text().replace(header, header + hardened))
    git(project, "commit", "-qam", "prod: its own hardened base image")
    with pytest.raises(UsageError) as refused:
        dry_run(project, app)
    assert (
        "app: prod's own settings of it changed since the commit dev runs it at (deploy.toml): prod takes dev's "
        "build, made without them"
    ) in refused.value.message, refused.value.message
    plan, _ = dry_run(project, app, unpromoted=True)
    assert "promote-image" not in [step["step"] for step in plan["steps"]]
