"""Stack plans: order, parallel groups, parameters decided at plan time, destroy's data rule."""

from __future__ import annotations

import dataclasses
import hashlib
import shutil
from pathlib import Path

import pytest

from deploykit import auto, changes, packaging, planner, stack_chain
from deploykit.config import AlarmWatch, load_config
from deploykit.errors import UsageError
from deploykit.git import DIRTY, current_revision
from deploykit.plan import Parallel, Plan, Sequence
from deploykit.stack_chain import DeployStack, DestroyStack, Synthesize, UploadLambdaCode
from tests.conftest import REPO, git


@pytest.fixture
def with_lambdas(project: Path) -> Path:
    shutil.copytree(REPO / "lambda", project / "lambda", ignore=shutil.ignore_patterns("__pycache__", "tests"))
    git(project, "add", "-A")
    git(project, "commit", "-qm", "lambdas")
    return project


def names(step: object) -> list[str]:
    if isinstance(step, Parallel):
        return sorted(n for s in step.steps for n in names(s))
    if isinstance(step, Sequence):
        return [f"{step.label}:" + ",".join(s.name for s in step.steps)]
    if isinstance(step, DeployStack | DestroyStack):
        return [step.stack]
    if isinstance(step, UploadLambdaCode):
        return [f"upload:{step.function}"]
    return [getattr(step, "name", "?")]


def test_full_plan_orders_stacks_by_dependency_with_independent_ones_in_parallel(with_lambdas: Path) -> None:
    config = load_config(with_lambdas / "deploy.toml")
    env = config.environment("sandbox")
    revision = current_revision(with_lambdas)
    plan = planner.full_plan(config, env, revision, repository_uri="")
    groups = [names(step) for step in plan.steps]
    assert groups == [
        # the image builds while the CDK app synthesizes and the registry stack (its repository) deploys
        ["cdk:synth,deploy-stack", "image:base-image,build"],
        sorted(["CarRentalDataStack", "CarRentalAuthStack", "push", "upload:health_handler", "upload:login_handler"]),
        ["CarRentalApiStack", "CarRentalFargateStack"],
        ["smoke"],
    ]
    [synthesis, registry] = plan.steps[0].steps[0].steps  # type: ignore[attr-defined]
    assert isinstance(synthesis, Synthesize) and isinstance(registry, DeployStack)
    assert registry.stack == "CarRentalRegistryStack"
    assert planner.full_plan(config, env, revision, repository_uri="", smoke=False).steps == plan.steps[:-1]
    fargate = next(s for s in plan.steps[2].steps if isinstance(s, DeployStack) and "Fargate" in s.stack)
    assert dict(fargate.parameters) == {"ImageTag": revision.tag}  # this commit's image, built in the plan
    api = next(s for s in plan.steps[2].steps if isinstance(s, DeployStack) and "Api" in s.stack)
    keys = dict(api.parameters)
    assert set(keys) == {"LoginHandlerCodeKey", "HealthHandlerCodeKey"}
    assert keys["LoginHandlerCodeKey"].startswith("lambda/login_handler/") and keys["LoginHandlerCodeKey"].endswith(
        ".zip"
    )
    assert fargate.template.endswith("cdk.out/sandbox/CarRentalFargateStack.template.json")


def test_a_full_deploy_runs_the_fast_path_of_a_function_its_stack_would_leave_on_other_code(
    with_lambdas: Path,
) -> None:
    """The API stack names this commit's login_handler zip already while the alias serves other code (the fast path's
    since): CloudFormation would change nothing in it, so the full deploy moves it after the stacks."""
    config = load_config(with_lambdas / "deploy.toml")
    env = config.environment("sandbox")
    revision = current_revision(with_lambdas)
    keys = {fn: p.key for fn, p in planner.lambda_packages(config, env).items()}
    names_ = {"login_handler": "api-login-1", "health_handler": "api-health-1"}
    served = {"login_handler": "lambda/login_handler/fast.zip", "health_handler": keys["health_handler"]}
    live = planner.LiveCode(names_, served, keys)
    plan = planner.full_plan(config, env, revision, repository_uri="", live_code=live)
    assert [names(step) for step in plan.steps[3:]] == [
        ["lambda login_handler:update-code,publish-version,move-alias"],
        ["smoke"],
    ]
    as_given = planner.LiveCode(names_, keys, keys)  # each alias serves what its stack names: nothing after them
    assert planner.full_plan(config, env, revision, repository_uri="", live_code=as_given).steps == (
        planner.full_plan(config, env, revision, repository_uri="").steps
    )


def test_deploy_stack_and_deploy_full_end_with_the_alarm_watch_naming_the_rollback(with_lambdas: Path) -> None:
    """No automatic rollback puts a stack back: a failed watch names the command that does. A new environment's
    deploy.full (deploy.auto's first) watches none: no release before, and maybe no alarms yet."""
    config = load_config(with_lambdas / "deploy.toml")
    env = dataclasses.replace(config.environment("sandbox"), alarm_watch=AlarmWatch(("car-rental-5xx",), 30))
    revision = current_revision(with_lambdas)
    one = planner.deploy_stack_plan(config, env, "CarRentalApiStack", image_tag="abc", code_keys={}, revision=revision)
    assert [step.name for step in one.steps][-2:] == ["smoke", "watch-alarms"]
    assert one.steps[-1].undo == "inv rollback --env sandbox --component stack:api puts the stack back"  # type: ignore[attr-defined]
    assert one.steps[-1].describe().endswith("fails the release (its failure names the rollback)")
    full = planner.full_plan(config, env, revision, repository_uri="")
    assert [step.name for step in full.steps][-2:] == ["smoke", "watch-alarms"]
    assert full.steps[-1].undo == "inv rollback --env sandbox --run last puts back what it deployed"  # type: ignore[attr-defined]
    first = planner.full_plan(config, env, revision, repository_uri="", first_deploy=True)
    assert "watch-alarms" not in [step.name for step in first.steps]
    # inv deploy.full knows a new environment by its endpoints, with or without a release command (first_deploy)
    new = planner.full_plan(config, env, revision, repository_uri="", new_environment=True)
    assert "watch-alarms" not in [step.name for step in new.steps]


def deploy_stacks(plan: Plan) -> list[DeployStack]:
    return [step for step in auto.flat_steps(plan.steps) if isinstance(step, DeployStack)]


def test_approving_access_reaches_every_stack_of_a_full_deploy_and_one_stack_s(with_lambdas: Path) -> None:
    config = load_config(with_lambdas / "deploy.toml")
    env = config.environment("sandbox")
    revision = current_revision(with_lambdas)
    assert not any(s.approve_access for s in deploy_stacks(planner.full_plan(config, env, revision, "")))
    approved = deploy_stacks(planner.full_plan(config, env, revision, "", approve_access=True))
    assert len(approved) == 5 and all(s.approve_access for s in approved)
    one = planner.deploy_stack_plan(config, env, "api", image_tag="", code_keys={}, approve_access=True)
    assert [s.approve_access for s in deploy_stacks(one)] == [True]


def test_deploy_stack_plan_takes_the_inputs_it_is_given(with_lambdas: Path) -> None:
    config = load_config(with_lambdas / "deploy.toml")
    env = config.environment("sandbox")
    plan = planner.deploy_stack_plan(config, env, "fargate", image_tag="abc123", code_keys={})
    assert [s.name for s in plan.steps] == ["synth", "deploy-stack", "smoke"]
    plan = planner.deploy_stack_plan(config, env, "fargate", image_tag="abc123", code_keys={}, smoke=False)
    assert [s.name for s in plan.steps] == ["synth", "deploy-stack"]
    assert dict(plan.steps[-1].parameters) == {"ImageTag": "abc123"}  # type: ignore[attr-defined]
    plan = planner.deploy_stack_plan(
        config,
        env,
        "CarRentalApiStack",
        image_tag="",
        code_keys={"login_handler": "k1", "health_handler": "k2"},
        uploads=["login_handler"],
        smoke=False,
    )
    assert [s.name for s in plan.steps] == ["synth", "upload-lambda", "deploy-stack"]
    assert dict(plan.steps[-1].parameters) == {"LoginHandlerCodeKey": "k1", "HealthHandlerCodeKey": "k2"}  # type: ignore[attr-defined]
    with pytest.raises(UsageError, match="unknown stack 'NoSuchStack'"):
        planner.deploy_stack_plan(config, env, "NoSuchStack", image_tag="", code_keys={})


@pytest.mark.parametrize(
    ("named", "role"),
    [("CarRentalFargateStack", "fargate"), ("fargate", "fargate"), ("FargateStack", "fargate"), ("apistack", "api")],
)
def test_a_stack_is_named_by_its_name_its_role_or_the_end_of_its_name_only_it_has(
    project: Path, named: str, role: str
) -> None:
    """The seed's `deploy-stack.sh FargateStack` names the stack as its users type it: the end of its name."""
    assert planner.role_of(load_config(project / "deploy.toml").environment("sandbox"), named) == role


def test_a_name_that_could_be_any_of_several_stacks_is_refused_naming_them(project: Path) -> None:
    env = load_config(project / "deploy.toml").environment("sandbox")
    with pytest.raises(UsageError, match="'Stack' could name any of CarRentalRegistryStack, ") as refused:
        planner.role_of(env, "Stack")
    assert refused.value.next_step.startswith("name one: CarRentalRegistryStack, ")
    with pytest.raises(UsageError, match="unknown stack 'Fargate2Stack'"):
        planner.role_of(env, "Fargate2Stack")


def test_destroy_keeps_the_stacks_that_hold_data_unless_asked(project: Path) -> None:
    env = load_config(project / "deploy.toml").environment("sandbox")
    kept = [names(s) for s in planner.destroy_plan(env, include_data=False).steps]
    assert kept == [["CarRentalApiStack", "CarRentalFargateStack"]]
    everything = [names(s) for s in planner.destroy_plan(env, include_data=True).steps]
    assert everything == [  # reverse dependency order; stacks that import nothing from each other together
        ["CarRentalApiStack", "CarRentalFargateStack"],
        ["CarRentalAuthStack", "CarRentalDataStack", "CarRentalRegistryStack"],
    ]


def test_destroy_removes_the_components_its_stacks_take_with_them(project: Path) -> None:
    env = load_config(project / "deploy.toml").environment("sandbox")
    components = [
        "app",
        "lambda:login_handler",
        "stack:registry",
        "stack:data",
        "stack:auth",
        "stack:fargate",
        "stack:api",
    ]
    kept = planner.destroy_plan(env, include_data=False, components=components)
    assert kept.removes == ("app", "lambda:login_handler", "stack:fargate", "stack:api")
    assert planner.destroy_plan(env, include_data=True, components=components).removes == tuple(components)
    assert kept.deploys == () and planner.destroy_plan(env, include_data=False).removes == ()


def test_a_dirty_full_deploy_names_only_what_the_uncommitted_changes_touch_dirty(with_lambdas: Path) -> None:
    config = load_config(with_lambdas / "deploy.toml")
    env = config.environment("sandbox")
    handler = with_lambdas / "lambda" / "login_handler" / "handler.py"
    handler.write_text(handler.read_text() + "\n# uncommitted\n")
    revision = changes.scope(config, current_revision(with_lambdas, allow_dirty=True))
    plan = planner.full_plan(config, env, revision, repository_uri="")
    deploys = dict(plan.deploys)
    assert deploys.pop("lambda:login_handler") == revision.tag and DIRTY in revision.tag
    assert set(deploys.values()) == {revision.short}  # the app, every stack, the other function: HEAD's commit
    [build] = [s for s in auto.flat_steps(plan.steps) if s.name == "build"]
    assert getattr(build, "image", "") == f"car-rental-backend:{revision.short}"
    fargate = next(s for s in plan.steps[2].steps if isinstance(s, DeployStack) and "Fargate" in s.stack)
    assert dict(fargate.parameters) == {"ImageTag": revision.short}
    # every stack's template is kept as HEAD's commit's, in the registry stack's bucket
    assert (fargate.commit, fargate.registry_stack) == (revision.short, "CarRentalRegistryStack")


def test_a_stack_whose_cdk_holds_uncommitted_changes_keeps_no_template(with_lambdas: Path) -> None:
    """A rollback never goes back to uncommitted changes: their template is not kept as any commit's."""
    config = load_config(with_lambdas / "deploy.toml")
    env = config.environment("sandbox")
    stack_file = with_lambdas / "cdk" / "stacks" / "data_stack.py"
    stack_file.parent.mkdir(parents=True, exist_ok=True)
    stack_file.write_text("# uncommitted\n")
    revision = changes.scope(config, current_revision(with_lambdas, allow_dirty=True))
    assert planner.kept_commit(revision, "data") == "" and planner.kept_commit(revision, "api") == revision.short
    assert planner.kept_commit(None, "api") == ""
    plan = planner.deploy_stack_plan(config, env, "CarRentalDataStack", image_tag="", code_keys={}, revision=revision)
    [deploy] = [s for s in plan.steps if isinstance(s, DeployStack)]
    assert deploy.commit == ""


def test_code_parameters_are_named_after_the_function() -> None:
    assert planner.code_parameter("login_handler") == "LoginHandlerCodeKey"
    assert planner.code_parameter("health_handler") == "HealthHandlerCodeKey"


def test_vendored_packages_are_copied_from_only_when_their_length_and_hash_are_theirs() -> None:
    """S3 says the SHA-256 it checked when deploykit put them (ChecksumSHA256, base64); a store that does not say
    it (moto) is trusted by the hash deploykit wrote beside them. Anything else at the key is put over."""
    body = b"vendored entries" * 100
    package = packaging.Package("fn", body + b"own files", "0" * 64, "lambda/fn/x.zip", prefix_length=len(body))
    sha = hashlib.sha256(body).hexdigest()
    checksum = packaging.code_sha256_of(sha)
    assert stack_chain.kept_vendored({"ContentLength": len(body), "ChecksumSHA256": checksum}, package)
    assert stack_chain.kept_vendored({"ContentLength": len(body), "Metadata": {"sha256": sha}}, package)
    wrong = packaging.code_sha256_of("1" * 64)
    assert not stack_chain.kept_vendored(
        {"ContentLength": len(body), "ChecksumSHA256": wrong, "Metadata": {"sha256": sha}}, package
    )
    assert not stack_chain.kept_vendored({"ContentLength": len(body) + 1, "ChecksumSHA256": checksum}, package)
    assert not stack_chain.kept_vendored({"ContentLength": len(body)}, package)
    assert not stack_chain.kept_vendored(None, package)


def test_only_a_zip_with_at_least_a_part_of_vendored_packages_is_put_together_in_s3() -> None:
    """S3's parts but the last are 5 MiB at least: smaller vendored packages are sent with the zip."""
    small = packaging.Package("fn", b"x" * 100, "0" * 64, "lambda/fn/x.zip", prefix_length=stack_chain.PART_MIN - 1)
    big = packaging.Package("fn", b"x" * 100, "0" * 64, "lambda/fn/x.zip", prefix_length=stack_chain.PART_MIN)
    assert UploadLambdaCode.of("fn", "lambda/fn", small, "Registry").prefix_key == ""
    step = UploadLambdaCode.of("fn", Path("lambda/fn"), big, "Registry")
    assert step == UploadLambdaCode("fn", "lambda/fn", "lambda/fn/x.zip", "Registry", 100, big.prefix_key)
    assert big.prefix_key.startswith("lambda-vendored/") and big.prefix_key.endswith(".bin")
