"""deploy.auto's plan: exactly the chain each change needs, in order, and the --dry-run --json shape CI reads."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from deploykit import auto, changes, lambda_chain, planner
from deploykit.commands.deploys import with_alarm_watch
from deploykit.config import AlarmWatch, Config, EnvConfig, ErrorWatch, LambdaCanary, load_config
from deploykit.endpoints import function_id
from deploykit.errors import UsageError
from deploykit.git import Revision, current_revision
from deploykit.plan import Parallel, Plan
from deploykit.stack_chain import UploadLambdaCode
from tests.conftest import aws_client, git
from tests.unit.test_stack_plans import with_lambdas  # noqa: F401 - a fixture

HEAD = "f" * 40
INPUTS = auto.Inputs(
    image_tag="aaaaaaaaaaaa",
    code_keys={"login_handler": "lambda/login_handler/old.zip", "health_handler": "lambda/health_handler/old.zip"},
    functions={"login_handler": "api-login-1", "health_handler": "api-health-1"},
)


def change_set(*pairs: tuple[str, str]) -> changes.ChangeSet:
    """Changes as (path, component); kinds from the component."""
    found = tuple(
        changes.Change(path, component or None, changes.kind_of(component) if component else "none", "M", "rule")
        for path, component in pairs
    )
    return changes.ChangeSet(base={c: "a" * 40 for _, c in pairs if c}, head=HEAD, changes=found)


def test_a_path_counted_from_two_live_commits_is_listed_once(project: Path) -> None:
    """Components live at two commits: a README changed since the older is counted from each, and was listed twice."""
    env = load_config(project / "deploy.toml").environment("sandbox")
    found = change_set(("README.md", ""), ("docs/a.md", ""), ("README.md", ""), ("backend/app/main.py", "app"))
    [quiet] = [line for line in auto.analysis_lines(found, env) if line.startswith("📄")]
    assert quiet.count("README.md") == 1 and "docs/a.md" in quiet


def setup(project: Path) -> tuple[Config, EnvConfig, Revision]:
    config = load_config(project / "deploy.toml")
    return config, config.environment("sandbox"), current_revision(project)


def shape(plan: Plan, env: EnvConfig) -> list[tuple[str, str]]:
    return [(s.name, auto.target_of(s, env)) for s in auto.flat_steps(plan.steps)]


def test_nothing_deployable_changed_means_an_empty_plan(with_lambdas: Path) -> None:  # noqa: F811
    config, env, revision = setup(with_lambdas)
    plan = auto.auto_plan(config, env, revision, change_set(("README.md", ""), ("tests/x.py", "")), INPUTS)
    assert not plan and plan.deploys == ()


def test_a_backend_change_is_the_app_chain_then_smoke(with_lambdas: Path) -> None:  # noqa: F811
    config, env, revision = setup(with_lambdas)
    plan = auto.auto_plan(config, env, revision, change_set(("backend/app/routes.py", "app")), INPUTS)
    assert shape(plan, env) == [
        ("base-image", "deploykit/python-base:3.11-bookworm"),
        ("build", f"car-rental-backend:{revision.tag}"),
        ("push", f"car-rental-backend:{revision.tag}"),
        ("register-taskdef", "car-rental-service"),
        ("roll-service", "car-rental-service"),
        ("wait-healthy", "car-rental-service"),
        ("smoke", "sandbox"),
    ]
    assert plan.deploys == (("app", revision.tag),)
    # smoke runs even when every step finds its result in place: what it deploys was never verified
    assert not plan.steps[-1].skippable

    # an environment that watches the app's errors does so last, after smoke; deploy.app the same; a chain that
    # does not roll the service has nothing to watch
    env = dataclasses.replace(env, app_error_watch=ErrorWatch(seconds=120))
    plan = auto.auto_plan(config, env, revision, change_set(("backend/app/routes.py", "app")), INPUTS)
    assert shape(plan, env)[-5:] == [
        ("register-taskdef", "car-rental-service"),
        ("roll-service", "car-rental-service"),
        ("wait-healthy", "car-rental-service"),
        ("smoke", "sandbox"),
        ("watch-errors", "car-rental-service"),
    ]
    assert auto.estimate_total(plan.steps[-1:], env, {"watch-errors": 3.0}) == 120.0
    stages = ("build", "push", "register-taskdef", "roll-service", "wait-healthy", "smoke")
    chain = planner.app_chain_plan(config, env, revision, stages, repository_uri="")
    assert [s.name for s in chain.steps][-4:] == ["roll-service", "wait-healthy", "smoke", "watch-errors"]
    assert "watch-errors" not in [
        s.name for s in planner.app_chain_plan(config, env, revision, ("wait-healthy",), repository_uri="").steps
    ]


def test_an_environments_own_alarms_are_watched_last_whatever_the_run_deploys(with_lambdas: Path) -> None:  # noqa: F811
    """After smoke and the app's error watch, in deploy.auto (an app, a function, a stack), deploy.app and
    deploy.lambda; not inside deploy.auto's function chains, nor in a chain that does not roll the service."""
    config, env, revision = setup(with_lambdas)
    env = dataclasses.replace(
        env, app_error_watch=ErrorWatch(seconds=120), alarm_watch=AlarmWatch(("car-rental-5xx",), seconds=90)
    )
    backend = ("backend/app/routes.py", "app")
    for pairs in ([backend], [("lambda/login_handler/handler.py", "lambda:login_handler"), backend]):
        plan = auto.auto_plan(config, env, revision, change_set(*pairs), INPUTS)
        assert [name for name, _ in shape(plan, env)][-3:] == ["smoke", "watch-errors", "watch-alarms"]
        assert [name for name, _ in shape(plan, env)].count("watch-alarms") == 1
        assert plan.steps[-1].seconds == 0  # type: ignore[attr-defined]  # the error watch read them for 120 s
    plan = auto.auto_plan(
        config, env, revision, change_set(("lambda/login_handler/handler.py", "lambda:login_handler")), INPUTS
    )
    assert [name for name, _ in shape(plan, env)][-3:] == ["move-alias", "smoke", "watch-alarms"]
    assert auto.estimate_total(plan.steps[-1:], env, {"watch-alarms": 3.0}) == 90.0
    assert plan.steps[-1].skippable  # nothing changed before it: nothing of the run's to judge
    assert auto.analysis_lines(change_set(("cdk/stacks/api_stack.py", "stack:api")), env)[-1] == (
        "🔔 read CloudWatch alarm car-rental-5xx for 90s: one going to ALARM since the deploy began fails the release "
        "(and rolls it back)"
    )
    assert not any(line[0] == "🔔" for line in auto.analysis_lines(change_set(("README.md", "")), env))
    stages = ("build", "push", "register-taskdef", "roll-service", "wait-healthy", "smoke")
    chain = planner.app_chain_plan(config, env, revision, stages, repository_uri="")
    assert [s.name for s in chain.steps][-3:] == ["smoke", "watch-errors", "watch-alarms"]
    assert chain.steps[-2].alarms == ("car-rental-5xx",)  # type: ignore[attr-defined]  # read at its polls too
    # so the alarms' own watch lasts only the rest of their time: none of 90 s after the error watch's 120 s (a read),
    # 30 s of 150 s
    assert chain.steps[-1].seconds == 0  # type: ignore[attr-defined]
    longer = dataclasses.replace(env, alarm_watch=AlarmWatch(("car-rental-5xx",), seconds=150))
    assert planner.app_chain_plan(config, longer, revision, stages, repository_uri="").steps[-1].seconds == 30  # type: ignore[attr-defined]
    alone = planner.app_chain_plan(config, env, revision, ("wait-healthy",), repository_uri="")
    assert "watch-alarms" not in [s.name for s in alone.steps]
    fast = lambda_chain.lambda_plan(config, env, revision, "login_handler", function_name="fn")
    assert [s.name for s in fast.steps][-2:] == ["smoke", "watch-alarms"]
    inside = lambda_chain.lambda_plan(config, env, revision, "login_handler", function_name="fn", watch=False)
    assert "watch-alarms" not in [s.name for s in inside.steps]


def test_a_lambda_change_is_the_fast_path_without_cloudformation(with_lambdas: Path) -> None:  # noqa: F811
    config, env, revision = setup(with_lambdas)
    plan = auto.auto_plan(
        config, env, revision, change_set(("lambda/login_handler/handler.py", "lambda:login_handler")), INPUTS
    )
    assert [name for name, _ in shape(plan, env)] == [
        "upload-lambda",
        "update-code",
        "publish-version",
        "move-alias",
        "smoke",
    ]
    assert {target for _, target in shape(plan, env)} == {"login_handler", "sandbox"}
    assert plan.deploys == (("lambda:login_handler", revision.tag),)

    # an environment with a canary tries the new code on a share of the requests before move-alias
    env = dataclasses.replace(env, lambda_canary=LambdaCanary(percent=10, seconds=120))
    plan = auto.auto_plan(
        config, env, revision, change_set(("lambda/login_handler/handler.py", "lambda:login_handler")), INPUTS
    )
    assert shape(plan, env)[2:5] == [(n, "login_handler") for n in ("publish-version", "canary", "move-alias")]


def test_the_functions_architecture_changed_deploys_the_api_stack_with_every_zip_packaged_for_it(
    with_lambdas: Path,  # noqa: F811
) -> None:
    """[build] lambda_architecture = "arm64" (and lambda_runtime = "python3.12") on an environment in AWS: the API stack
    takes every function's zip, packaged for arm64 (and CPython 3.12), in its change set (no fast path beside it); the
    sandbox's stay this machine's (and this Python's)."""
    config, sandbox, revision = setup(with_lambdas)
    build = dataclasses.replace(config.build, lambda_architecture="arm64", lambda_runtime="python3.12")
    config = dataclasses.replace(config, build=build)
    on_aws = dataclasses.replace(sandbox, name="dev", endpoint_url=None, registry="")
    reason = "[build] lambda_architecture of deploy.toml changed"
    found = changes.ChangeSet(
        base=dict.fromkeys(["lambda:login_handler", "lambda:health_handler", "stack:api"], "a" * 40),
        head=HEAD,
        changes=tuple(
            changes.Change("deploy.toml", c, changes.kind_of(c), "M", reason, setting="[build] lambda_architecture")
            for c in ("lambda:login_handler", "lambda:health_handler", "stack:api")
        ),
    )
    plan = auto.auto_plan(config, on_aws, revision, found, INPUTS)
    assert [name for name, _ in shape(plan, on_aws)] == [
        "synth",
        "upload-lambda",
        "upload-lambda",
        "deploy-stack",
        "smoke",
    ]
    uploads = [s for s in auto.flat_steps(plan.steps) if isinstance(s, UploadLambdaCode)]
    assert {(u.architecture, u.python) for u in uploads} == {("arm64", "3.12")}
    parameters = dict(next(s for s in auto.flat_steps(plan.steps) if s.name == "deploy-stack").parameters)  # type: ignore[attr-defined]
    assert set(parameters.values()) == {u.key for u in uploads}  # the new zips, not the live ones
    here = auto.auto_plan(config, sandbox, revision, found, INPUTS)
    assert {(s.architecture, s.python) for s in auto.flat_steps(here.steps) if isinstance(s, UploadLambdaCode)} == {
        (config.lambda_architecture_for(sandbox), f"{sys.version_info.major}.{sys.version_info.minor}")
    }


def test_a_stack_change_deploys_that_stack_alone_with_the_live_inputs(with_lambdas: Path) -> None:  # noqa: F811
    config, env, revision = setup(with_lambdas)
    plan = auto.auto_plan(config, env, revision, change_set(("cdk/stacks/fargate_stack.py", "stack:fargate")), INPUTS)
    assert shape(plan, env) == [("synth", "sandbox"), ("deploy-stack", "CarRentalFargateStack"), ("smoke", "sandbox")]
    assert dict(plan.steps[1].parameters) == {"ImageTag": "aaaaaaaaaaaa"}  # type: ignore[attr-defined]


def test_stacks_go_first_in_dependency_order_then_lambdas_then_the_app(with_lambdas: Path) -> None:  # noqa: F811
    config, env, revision = setup(with_lambdas)
    found = change_set(
        ("backend/app/routes.py", "app"),
        ("cdk/stacks/fargate_stack.py", "stack:fargate"),
        ("cdk/stacks/data_stack.py", "stack:data"),
        ("lambda/health_handler/handler.py", "lambda:health_handler"),
    )
    plan = auto.auto_plan(config, env, revision, found, INPUTS)
    steps = [name + ":" + target for name, target in shape(plan, env)]
    order = [s.split(":")[0] for s in steps]
    assert order.index("deploy-stack") > order.index("synth")
    # the image builds while the CDK app synthesizes; it is pushed beside the first stacks, before the Fargate one
    first = plan.steps[0]
    assert isinstance(first, Parallel) and [s.name for s in first.steps] == ["synth", "sequence"]
    assert [s.name for s in first.steps[1].steps] == ["base-image", "build"]  # type: ignore[attr-defined]
    second = plan.steps[1]
    assert isinstance(second, Parallel) and sorted(s.name for s in second.steps) == [
        "deploy-stack",
        "push",
        "upload-lambda",
    ]
    assert order.index("push") < steps.index("deploy-stack:CarRentalFargateStack")
    assert steps.index("deploy-stack:CarRentalDataStack") < steps.index("deploy-stack:CarRentalFargateStack")
    assert steps.index("deploy-stack:CarRentalFargateStack") < steps.index("update-code:health_handler")
    assert steps.index("update-code:health_handler") < steps.index("register-taskdef:car-rental-service")
    # the function's fast path and the app's rollout are independent: side by side, after every stack
    together = plan.steps[-2]
    assert isinstance(together, Parallel)
    assert [(s.label, [x.name for x in s.steps]) for s in together.steps] == [  # type: ignore[attr-defined]
        ("lambda health_handler", ["update-code", "publish-version", "move-alias"]),
        ("app", ["register-taskdef", "roll-service", "wait-healthy"]),
    ]
    assert order[-1] == "smoke" and order.count("smoke") == 1
    # the Fargate stack rolls the new image itself, so the app chain after it has nothing left to roll
    fargate = next(s for s in auto.flat_steps(plan.steps) if getattr(s, "stack", "") == "CarRentalFargateStack")
    assert dict(fargate.parameters) == {"ImageTag": revision.tag}  # type: ignore[attr-defined]


def test_a_shared_module_of_independent_stacks_deploys_them_side_by_side(with_lambdas: Path) -> None:  # noqa: F811
    """cdk/stacks/common/storage.py is the registry's and the data stack's: the data stack waited for the registry
    stack, which only the image's push and the zips need."""
    config, env, revision = setup(with_lambdas)
    shared = (("cdk/stacks/common/storage.py", "stack:registry"), ("cdk/stacks/common/storage.py", "stack:data"))
    plan = auto.auto_plan(config, env, revision, change_set(*shared), INPUTS)
    assert [s.name for s in plan.steps] == ["synth", "parallel", "smoke"]
    assert [s.stack for s in plan.steps[1].steps] == ["CarRentalRegistryStack", "CarRentalDataStack"]  # type: ignore[attr-defined]
    # with a zip to upload, the registry stack goes first, alone: the upload needs its bucket
    found = change_set(*shared, ("lambda/health_handler/handler.py", "lambda:health_handler"))
    plan = auto.auto_plan(config, env, revision, found, INPUTS)
    assert [s.name for s in plan.steps[:2]] == ["synth", "deploy-stack"]
    assert plan.steps[1].stack == "CarRentalRegistryStack"  # type: ignore[attr-defined]
    assert sorted(s.name for s in plan.steps[2].steps) == ["deploy-stack", "upload-lambda"]  # type: ignore[attr-defined]


def test_a_promoted_environment_copies_the_image_its_source_runs_instead_of_building(with_lambdas: Path) -> None:  # noqa: F811
    """promote_from: the app's image is the source's, copied under its tag, which the task definition, the Fargate
    stack's parameter and the run's record all name."""
    config, env, revision = setup(with_lambdas)
    promoted = planner.PromotedImage("dev", "abcdefabcdef", "abcdefabcdef" + "0" * 28)
    found = change_set(("backend/app/routes.py", "app"), ("cdk/stacks/fargate_stack.py", "stack:fargate"))
    plan = auto.auto_plan(config, env, revision, found, dataclasses.replace(INPUTS, promoted=promoted))
    assert [name for name, _ in shape(plan, env)] == [
        "synth",
        "promote-image",
        "deploy-stack",
        "register-taskdef",
        "roll-service",
        "wait-healthy",
        "smoke",
    ]
    assert ("promote-image", "car-rental-backend:abcdefabcdef") in shape(plan, env)
    register = next(s for s in auto.flat_steps(plan.steps) if s.name == "register-taskdef")
    assert (register.tag, register.git_sha) == ("abcdefabcdef", promoted.sha)  # type: ignore[attr-defined]
    fargate = next(s for s in auto.flat_steps(plan.steps) if s.name == "deploy-stack")
    assert dict(fargate.parameters) == {"ImageTag": "abcdefabcdef"}  # type: ignore[attr-defined]
    assert dict(plan.deploys)["app"] == "abcdefabcdef" and dict(plan.deploys)["stack:fargate"] == revision.tag


def test_with_uncommitted_changes_what_they_do_not_touch_is_built_as_the_commit(with_lambdas: Path) -> None:  # noqa: F811
    config, env, _ = setup(with_lambdas)
    (with_lambdas / "lambda" / "health_handler" / "handler.py").write_text("def handler(e, c):\n    return {}\n")
    revision = changes.scope(config, current_revision(with_lambdas, allow_dirty=True))
    # a committed backend change and a stack change, deployed beside an uncommitted Lambda edit
    found = change_set(
        ("backend/app/routes.py", "app"),
        ("cdk/stacks/fargate_stack.py", "stack:fargate"),
        ("lambda/health_handler/handler.py", "lambda:health_handler"),
    )
    plan = auto.auto_plan(config, env, revision, found, INPUTS)
    assert dict(plan.deploys) == {
        "app": revision.short,
        "stack:fargate": revision.short,
        "lambda:health_handler": revision.tag,
    }
    steps = auto.flat_steps(plan.steps)
    assert next(s for s in steps if s.name == "build").image == f"car-rental-backend:{revision.short}"  # type: ignore[attr-defined]
    fargate = next(s for s in steps if getattr(s, "stack", "") == "CarRentalFargateStack")
    assert dict(fargate.parameters) == {"ImageTag": revision.short}  # type: ignore[attr-defined]
    publish = next(s for s in steps if s.name == "publish-version")
    assert publish.git_sha == revision.tag  # type: ignore[attr-defined]


def test_an_api_stack_change_carries_the_new_lambda_code_itself(with_lambdas: Path) -> None:  # noqa: F811
    config, env, revision = setup(with_lambdas)
    found = change_set(
        ("cdk/stacks/api_stack.py", "stack:api"), ("lambda/login_handler/handler.py", "lambda:login_handler")
    )
    plan = auto.auto_plan(config, env, revision, found, INPUTS)
    names = [name for name, _ in shape(plan, env)]
    assert "update-code" not in names and names.count("upload-lambda") == 1
    api = next(s for s in auto.flat_steps(plan.steps) if getattr(s, "stack", "") == "CarRentalApiStack")
    keys = dict(api.parameters)  # type: ignore[attr-defined]
    assert keys["HealthHandlerCodeKey"] == "lambda/health_handler/old.zip"  # unchanged: the live code
    assert keys["LoginHandlerCodeKey"] != "lambda/login_handler/old.zip"  # changed: this commit's zip


def test_a_function_whose_changed_stack_names_its_code_already_takes_the_fast_path_after_it(
    with_lambdas: Path,  # noqa: F811
) -> None:
    """The API stack was last deployed with this commit's login_handler zip, and the alias serves other code since
    (the fast path shipped a commit since, and this one reverted it): CloudFormation finds nothing to change in the
    function, so its fast path runs after the stack. Not when the alias serves that code, nor when the stack's key
    differs (CloudFormation updates the code itself)."""
    config, env, revision = setup(with_lambdas)
    found = change_set(
        ("cdk/stacks/api_stack.py", "stack:api"), ("lambda/login_handler/handler.py", "lambda:login_handler")
    )
    key = lambda_chain.package(config, env, "login_handler").key
    reverted = dataclasses.replace(INPUTS, hosts={"login_handler": "api"}, given={"login_handler": key})
    plan = auto.auto_plan(config, env, revision, found, reverted)
    fast = [("update-code", "login_handler"), ("publish-version", "login_handler"), ("move-alias", "login_handler")]
    assert [s for s in shape(plan, env) if s[0] not in ("upload-lambda", "synth")] == [
        ("deploy-stack", "CarRentalApiStack"),
        *fast,
        ("smoke", "sandbox"),
    ]
    served = dataclasses.replace(reverted, code_keys={**INPUTS.code_keys, "login_handler": key})
    other = dataclasses.replace(reverted, given={"login_handler": "lambda/login_handler/older.zip"})
    for inputs in (served, other):
        assert "update-code" not in dict(shape(auto.auto_plan(config, env, revision, found, inputs), env))


def test_the_stacks_inputs_inv_diff_previews_are_those_deploy_auto_gives(with_lambdas: Path) -> None:  # noqa: F811
    """The Fargate stack changed with the app is given this commit's image (the promote_from environment's, when it
    is copied), the API stack changed with a function that function's new zip: inv diff previewed the live ones, and
    its change set left out the image's rollout and the function's code."""
    config, env, revision = setup(with_lambdas)
    made = {"login_handler": lambda_chain.package(config, env, "login_handler")}
    live = ("aaaaaaaaaaaa", INPUTS.code_keys)
    assert auto.stack_inputs(revision, {"stack:fargate"}, *live, {}) == live
    image, keys = auto.stack_inputs(revision, {"app", "stack:fargate", "lambda:login_handler"}, *live, made)
    assert image == revision.of("app").tag
    assert keys == {**INPUTS.code_keys, "login_handler": made["login_handler"].key}
    assert auto.stack_inputs(revision, {"app"}, *live, {}, "bbbbbbbbbbbb")[0] == "bbbbbbbbbbbb"
    found = change_set(
        ("backend/app/routes.py", "app"),
        ("cdk/stacks/fargate_stack.py", "stack:fargate"),
        ("cdk/stacks/api_stack.py", "stack:api"),
        ("lambda/login_handler/handler.py", "lambda:login_handler"),
    )
    plan = auto.auto_plan(config, env, revision, found, INPUTS)
    given = {s.stack: dict(s.parameters) for s in auto.flat_steps(plan.steps) if s.name == "deploy-stack"}  # type: ignore[attr-defined]
    assert given["CarRentalFargateStack"] == {"ImageTag": image}
    assert given["CarRentalApiStack"] == {f"{function_id(fn)}CodeKey": key for fn, key in keys.items()}


def test_a_lambda_that_is_not_deployed_is_refused_with_the_fix(with_lambdas: Path) -> None:  # noqa: F811
    config, env, revision = setup(with_lambdas)
    inputs = auto.Inputs(image_tag="a", code_keys={}, functions={})
    with pytest.raises(UsageError, match="login_handler is not deployed") as refused:
        auto.auto_plan(config, env, revision, change_set(("lambda/login_handler/x.py", "lambda:login_handler")), inputs)
    assert "no stack has a LoginHandlerFunctionName output" in refused.value.message
    assert "give folder 'login_handler' a stack and commit it (a LambdaRoute of FUNCTIONS in " in (
        refused.value.next_step or ""
    )
    assert refused.value.next_step.endswith("inv deploy.stack STACK --env sandbox")  # type: ignore[union-attr]


def test_the_dry_run_json_shape_is_pinned(with_lambdas: Path) -> None:  # noqa: F811
    config, env, revision = setup(with_lambdas)
    found = change_set(
        ("backend/app/routes.py", "app"),
        ("lambda/login_handler/handler.py", "lambda:login_handler"),
        ("cdk/stacks/fargate_stack.py", "stack:fargate"),
        ("README.md", ""),
    )
    data = json.loads(json.dumps(auto.plan_json(env, found, auto.auto_plan(config, env, revision, found, INPUTS))))
    assert list(data) == ["environment", "base", "head", "changes", "steps"]
    assert (data["environment"], data["base"], data["head"]) == ("sandbox", "a" * 40, HEAD)
    assert data["changes"] == [
        {"path": "backend/app/routes.py", "component": "app", "kind": "app"},
        {"path": "lambda/login_handler/handler.py", "component": "lambda:login_handler", "kind": "lambda"},
        {"path": "cdk/stacks/fargate_stack.py", "component": "stack:fargate", "kind": "stack"},
    ]
    assert all(list(step) == ["name", "target"] for step in data["steps"])
    assert data["steps"][0] == {"name": "synth", "target": "sandbox"}
    assert data["steps"][-1] == {"name": "smoke", "target": "sandbox"}
    assert {"name": "deploy-stack", "target": "CarRentalFargateStack"} in data["steps"]
    assert {"name": "move-alias", "target": "login_handler"} in data["steps"]


def test_the_json_base_is_the_oldest_live_commit_when_components_differ(with_lambdas: Path) -> None:  # noqa: F811
    """The app live at a newer commit than a function: ``git log base..head`` must hold every change, so the base
    is the older (it was the first by the components' names: the app's)."""
    _config, env, _revision = setup(with_lambdas)
    older = git(with_lambdas, "rev-parse", "HEAD").strip()
    (with_lambdas / "NOTES.md").write_text("newer\n")
    git(with_lambdas, "add", "-A")
    git(with_lambdas, "commit", "-qm", "newer")
    newer = git(with_lambdas, "rev-parse", "HEAD").strip()
    found = dataclasses.replace(
        change_set(("backend/app/routes.py", "app"), ("lambda/login_handler/handler.py", "lambda:login_handler")),
        base={"app": newer, "lambda:login_handler": older},
    )
    assert auto.plan_json(env, found, Plan("sandbox", ()), with_lambdas)["base"] == older
    assert auto.oldest_base(found, with_lambdas) == older and auto.oldest_base(found) == newer  # no clone: as listed
    assert auto.diff_json(env, found, with_lambdas)["base"] == older


def test_change_analysis_names_the_command_for_each_path(
    with_lambdas: Path,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _config, env, _revision = setup(with_lambdas)
    found = change_set(
        ("backend/app/auth.py", "app"),
        ("lambda/login_handler/handler.py", "lambda:login_handler"),
        ("cdk/stacks/fargate_stack.py", "stack:fargate"),
        ("README.md", ""),
    )
    assert auto.analysis_lines(found, env) == [
        "📱 App code: backend/app/auth.py → inv deploy.app",
        "🔧 Lambda:   lambda/login_handler/handler.py → inv deploy.lambda login_handler",
        "🐳 Stack:    cdk/stacks/fargate_stack.py → inv deploy.stack CarRentalFargateStack",
        "📄 No deploy: README.md (docs, tests, the toolkit: nothing to deploy)",
    ]
    # another environment than a command without --env takes: each command names it, copied as shown it deploys
    # there (it went to the default environment)
    config = _config
    monkeypatch.delenv("DEPLOYKIT_ENV", raising=False)
    assert config.env_flag(config.default_env) == "" and config.env_flag("dev") == " --env dev"
    assert auto.analysis_lines(found, env, flag=config.env_flag("dev"))[1:3] == [
        "🔧 Lambda:   lambda/login_handler/handler.py → inv deploy.lambda login_handler --env dev",
        "🐳 Stack:    cdk/stacks/fargate_stack.py → inv deploy.stack CarRentalFargateStack --env dev",
    ]
    monkeypatch.setenv("DEPLOYKIT_ENV", "dev")
    assert config.env_flag("dev") == "" and config.env_flag(config.default_env) == f" --env {config.default_env}"
    # under a requirements file, the packages its change changes
    packages = changes.requirement_changes(
        "".join(f"p{i}==1.0\n" for i in range(9)), "".join(f"p{i}==2.0\n" for i in range(9))
    )
    bumped = change_set(
        ("backend/requirements.txt", "app"), ("lambda/login_handler/requirements.txt", "lambda:login_handler")
    )
    lines = auto.analysis_lines(
        bumped,
        env,
        requirements={
            "backend/requirements.txt": changes.requirement_changes("a==1\n", "a==2\nb==1\n"),
            "lambda/login_handler/requirements.txt": packages,
        },
    )
    assert lines == [
        "📱 App code: backend/requirements.txt → inv deploy.app",
        "             📦 a 1 → 2, b==1 added",
        "🔧 Lambda:   lambda/login_handler/requirements.txt → inv deploy.lambda login_handler",
        "             📦 p0 1.0 → 2.0, p1 1.0 → 2.0, p2 1.0 → 2.0, p3 1.0 → 2.0, p4 1.0 → 2.0, p5 1.0 → 2.0 and 3 more "
        "(inv diff --json)",
    ]
    # a work tree compared with --allow-dirty (and always by inv diff): its own paths are marked
    marked = auto.analysis_lines(found, env, uncommitted=("lambda/login_handler/handler.py", "README.md"))
    assert marked[1] == "🔧 Lambda:   lambda/login_handler/handler.py (uncommitted) → inv deploy.lambda login_handler"
    assert marked[0] == "📱 App code: backend/app/auth.py → inv deploy.app"
    # never deployed (after inv destroy): deploy.app and deploy.lambda would find no service or function
    never = changes.ChangeSet(
        base=dict.fromkeys(["app", "lambda:login_handler", "stack:api"]),
        head=HEAD,
        changes=tuple(
            changes.Change("", component, changes.kind_of(component), "A", changes.NOT_DEPLOYED)
            for component in ("app", "lambda:login_handler", "stack:api")
        ),
    )
    assert auto.analysis_lines(never, env) == [
        "📱 App code: app (not deployed yet) → inv deploy.auto",
        "🔧 Lambda:   lambda:login_handler (not deployed yet) → inv deploy.auto",
        "🐳 Stack:    stack:api (not deployed yet) → inv deploy.stack CarRentalApiStack",
    ]
    # deploy.toml's settings: the setting named; the functions' architecture is the API stack's and the zips' together
    settings = changes.ChangeSet(
        base=dict.fromkeys(["app", "lambda:login_handler", "stack:api"], "a" * 40),
        head=HEAD,
        changes=(
            changes.Change("deploy.toml", "app", "app", "M", "the [build] table...", setting="[build]"),
            *(
                changes.Change("deploy.toml", c, changes.kind_of(c), "M", "arch", setting="[build] lambda_architecture")
                for c in ("lambda:login_handler", "stack:api")
            ),
        ),
    )
    platform = changes.ChangeSet(
        base=dict.fromkeys(["app", "stack:fargate"], "a" * 40),
        head=HEAD,
        changes=tuple(
            changes.Change("deploy.toml", c, changes.kind_of(c), "M", "platform", setting="[build] platform")
            for c in ("app", "stack:fargate")
        ),
    )
    assert auto.analysis_lines(platform, env) == [
        "📱 App code: deploy.toml ([build] platform changed) → inv deploy.auto",
        "🐳 Stack:    deploy.toml ([build] platform changed) → inv deploy.auto",
    ]
    assert auto.analysis_lines(settings, env) == [
        "📱 App code: deploy.toml ([build] changed) → inv deploy.app",
        "🔧 Lambda:   deploy.toml ([build] lambda_architecture changed) → inv deploy.auto",
        "🐳 Stack:    deploy.toml ([build] lambda_architecture changed) → inv deploy.auto",
    ]
    # an environment with a canary and an error watch says what the changes will go through
    env = dataclasses.replace(
        env, lambda_canary=LambdaCanary(percent=10, seconds=300), app_error_watch=ErrorWatch(seconds=180)
    )
    assert auto.analysis_lines(found, env)[-2:] == [
        "🐤 Lambda code by the fast path goes through a canary: 10% of live's requests for 300s, any error beyond "
        "the old version's own rate takes it back",
        "👀 the app's 5xx are watched for 180s after its rollout, more than 1.0% failing rolls it back",
    ]
    assert not any(line[0] in "🐤👀" for line in auto.analysis_lines(change_set(("README.md", "")), env))
    slowdown = dataclasses.replace(env, app_error_watch=ErrorWatch(seconds=180, max_slowdown=1.5))
    assert auto.analysis_lines(found, slowdown)[-1] == (
        "👀 the app's 5xx and response times are watched for 180s after its rollout, more than 1.0% failing, or a p90 "
        "over 1.5× the release before's and 20 ms more, rolls it back"
    )


def test_deploying_a_head_behind_what_is_live_is_refused(with_lambdas: Path) -> None:  # noqa: F811
    _config, env, _revision = setup(with_lambdas)
    found = dataclasses.replace(
        change_set(("backend/app/auth.py", "app"), ("docs/x.md", "")),
        ahead={"app": 2, "stack:api": 2},  # stack:api has no change: taking nothing back
    )
    assert auto.taken_back(found) == {"app": ("a" * 40, 2)}
    assert auto.analysis_lines(found, env)[1] == (
        f"⏮  app: live at aaaaaaaaaaaa, 2 commits ahead of HEAD ({HEAD[:12]}): deploying HEAD would take them back"
    )
    with pytest.raises(UsageError) as refused:
        auto.refuse_taking_back(auto.taken_back(found), found.head, env)
    assert refused.value.message == (
        f"HEAD ({HEAD[:12]}) is behind what sandbox runs: app (live at aaaaaaaaaaaa, 2 ahead); deploying it would "
        "take back commits that are live"
    )
    assert refused.value.next_step == (
        "update this checkout (git pull) and rerun; to deploy HEAD anyway, going back on purpose, rerun with "
        "--allow-older"
    )
    auto.refuse_taking_back({}, found.head, env)  # not behind: nothing to refuse
    # inv diff --json says it too
    assert auto.diff_json(env, found)["behind"] == {"app": {"live": "a" * 40, "ahead": 2}}
    assert auto.diff_json(env, dataclasses.replace(found, ahead={}))["behind"] == {}


def test_components_without_change_are_recorded_live_at_head_but_not_the_app(with_lambdas: Path) -> None:  # noqa: F811
    _config, _env, revision = setup(with_lambdas)
    found = changes.ChangeSet(
        base={
            "app": "a" * 40,
            "stack:data": "a" * 40,
            "stack:api": None,
            "lambda:login_handler": "b" * 40,
            "stack:auth": "c" * 40,
        },
        head=HEAD,
        changes=(changes.Change("lambda/login_handler/h.py", "lambda:login_handler", "lambda", "M", "rule"),),
        dirty=frozenset({"stack:auth"}),
    )
    assert auto.unchanged_components(found, revision) == (("stack:data", revision.tag),)
    # with uncommitted changes deployed, what they do not touch is live at HEAD's commit, not at the dirty build
    dirty = dataclasses.replace(revision, dirty_paths=("backend/app/auth.py",), dirty_hash="d" * 64)
    assert dirty.tag != dirty.short and auto.unchanged_components(found, dirty) == (("stack:data", dirty.short),)
    # --since names the base: what is live is not known, so nothing is carried
    assert auto.unchanged_components(dataclasses.replace(found, since="a" * 40), revision) == ()


def test_what_is_live_comes_from_the_environment_itself(with_lambdas: Path) -> None:  # noqa: F811
    """The app from the running task definition's image tag, a Lambda from its live version's description (the
    live record when that names no commit), a stack from the live record; a stack not deployed is None."""
    from unittest.mock import Mock

    from deploykit.testing import fake_factory, sample_endpoints

    config, env, _revision = setup(with_lambdas)
    ecs = aws_client("ecs")
    ecs.describe_services.return_value = {"services": [{"status": "ACTIVE", "taskDefinition": "arn:td:7"}]}
    ecs.describe_task_definition.return_value = {
        "taskDefinition": {
            "taskDefinitionArn": "arn:td:7",
            "containerDefinitions": [{"name": "backend", "image": "reg/car-rental-backend:aaaaaaaaaaaa"}],
        },
        "tags": [],
    }
    versions = {
        "api-login-1": "code s3://b/lambda/login_handler/1.zip git bbbbbbbbbbbb",
        "api-health-1": "code s3://b/k",
    }
    lam = aws_client("lambda")
    lam.get_alias.return_value = {"Name": "live", "FunctionVersion": "1"}  # no weighted routing
    lam.get_function_configuration.side_effect = lambda FunctionName, Qualifier: {"Description": versions[FunctionName]}
    live_record = {
        "stack:data": {"sha": "cccccccccccc"},
        "lambda:health_handler": {"sha": "dddddddddddd"},
        "stack:api": {"sha": "eeeeeeeeeeee"},
    }
    s3 = aws_client("s3")
    s3.get_object.return_value = {"Body": Mock(read=Mock(return_value=json.dumps(live_record).encode()))}
    aws = fake_factory(ecs=ecs, s3=s3, **{"lambda": lam})
    endpoints = sample_endpoints(
        functions={"login_handler": "api-login-1", "health_handler": "api-health-1"},
        outputs={env.stacks.data: {}, env.stacks.registry: {}},  # only these two stacks are deployed
    )
    live = auto.live_components(aws, config, env, endpoints)
    assert live == {
        "app": "aaaaaaaaaaaa",
        "lambda:health_handler": "dddddddddddd",  # a version CloudFormation published: from the record
        "lambda:login_handler": "bbbbbbbbbbbb",
        "stack:registry": None,  # deployed, but no record of what it was deployed from
        "stack:data": "cccccccccccc",
        "stack:auth": None,
        "stack:fargate": None,
        "stack:api": None,  # a record, but the stack is gone
    }
    assert s3.get_object.call_args.kwargs["Key"] == "deploykit/live/sandbox.json"
    # some stack missing (after inv destroy): no endpoints; the stacks still there answer, the rest is None
    cfn = aws_client("cloudformation")
    present = {
        env.stacks.registry: [{"OutputKey": "ArtifactsBucketName", "OutputValue": "bucket"}],
        env.stacks.data: [],
    }

    def describe_stacks(StackName: str) -> dict[str, Any]:
        if StackName not in present:
            error = {"Error": {"Code": "ValidationError", "Message": f"Stack with id {StackName} does not exist"}}
            raise ClientError(error, "DescribeStacks")
        return {"Stacks": [{"StackName": StackName, "StackStatus": "CREATE_COMPLETE", "Outputs": present[StackName]}]}

    cfn.describe_stacks.side_effect = describe_stacks
    partly = fake_factory(ecs=ecs, s3=s3, cloudformation=cfn, **{"lambda": lam})
    assert auto.live_components(partly, config, env, None) == dict.fromkeys(live) | {"stack:data": "cccccccccccc"}
    assert s3.get_object.call_args.kwargs["Bucket"] == "bucket"
    present.pop(env.stacks.registry)  # no registry stack: no live record either
    assert auto.live_components(fake_factory(cloudformation=cfn), config, env, None) == dict.fromkeys(live)

    # a dirty build's version whose code was committed since, and deployed from that commit (which found the
    # version in place): live at the recorded commit, as its code is that commit's
    from deploykit import packaging

    head = git(with_lambdas, "rev-parse", "--short=12", "HEAD").strip()
    code = packaging.package_function(with_lambdas / "lambda" / "login_handler").code_sha256
    lam.get_function_configuration.side_effect = lambda FunctionName, Qualifier: {
        "Description": versions[FunctionName],
        "CodeSha256": code,
    }
    versions["api-login-1"] = "code s3://b/lambda/login_handler/1.zip git bbbbbbbbbbbb-dirty-0123456789ab"
    live_record["lambda:login_handler"] = {"sha": head}
    s3.get_object.return_value = {"Body": Mock(read=Mock(return_value=json.dumps(live_record).encode()))}
    assert auto.live_components(aws, config, env, endpoints)["lambda:login_handler"] == head
    # ... but not when the dirty code is not the recorded commit's (a dirty deploy that failed and was left in place)
    code = "some-other-code="
    assert (
        auto.live_components(aws, config, env, endpoints)["lambda:login_handler"] == "bbbbbbbbbbbb-dirty-0123456789ab"
    )
    versions["api-login-1"] = "code s3://b/lambda/login_handler/1.zip git bbbbbbbbbbbb"
    del live_record["lambda:login_handler"]

    # a deploy that rolled the service but was interrupted before it was verified: the record wins, and the app is
    # said to run what was not verified (deploy.auto deploys it again, whatever changed)
    live_record["app"] = {"sha": "ffffffffffff"}
    s3.get_object.return_value = {"Body": Mock(read=Mock(return_value=json.dumps(live_record).encode()))}
    unverified: dict[str, str] = {}
    assert auto.live_components(aws, config, env, endpoints, unverified)["app"] == "ffffffffffff"
    assert unverified == {
        "app": f"{env.service} runs aaaaaaaaaaaa, not ffffffffffff (what the last successful deploy left and smoked): "
        "deployed again, as this checkout has it"
    }
    # a rollout still in progress: the image of the deployment that completed last is what is live
    del live_record["app"]
    s3.get_object.return_value = {"Body": Mock(read=Mock(return_value=json.dumps(live_record).encode()))}
    ecs.describe_services.return_value = {
        "services": [
            {
                "status": "ACTIVE",
                "taskDefinition": "arn:td:8",
                "deployments": [
                    {"status": "PRIMARY", "taskDefinition": "arn:td:8", "rolloutState": "IN_PROGRESS"},
                    {"status": "ACTIVE", "taskDefinition": "arn:td:7", "rolloutState": "COMPLETED"},
                ],
            }
        ]
    }
    images = {"arn:td:7": "reg/car-rental-backend:aaaaaaaaaaaa", "arn:td:8": "reg/car-rental-backend:999999999999"}
    ecs.describe_task_definition.side_effect = lambda taskDefinition, include: {
        "taskDefinition": {
            "taskDefinitionArn": taskDefinition,
            "containerDefinitions": [{"name": "backend", "image": images[taskDefinition]}],
        },
        "tags": [],
    }
    assert auto.live_components(aws, config, env, endpoints)["app"] == "aaaaaaaaaaaa"  # td:7's, not td:8's


def _world(
    project: Path,
    live_record: dict[str, Any],
    serving: dict[str, dict[str, Any]],
    updated: dict[str, Any] | None = None,
    templates: dict[str, Any] | None = None,
) -> tuple[Any, ...]:
    """What live_components reads, faked: the live record, each function's live version (by function name), every
    stack deployed (its LastUpdatedTime from ``updated``, its template from ``templates``)."""
    from datetime import UTC, datetime
    from unittest.mock import Mock

    from deploykit.testing import fake_factory, sample_endpoints

    config, env, _revision = setup(project)
    lam = aws_client("lambda")
    lam.get_alias.return_value = {"Name": "live", "FunctionVersion": "1"}  # no weighted routing
    lam.get_function_configuration.side_effect = lambda FunctionName, Qualifier: (
        {"Version": "3"} | serving.get(FunctionName, {"Description": "code s3://b/k"})
    )
    s3 = aws_client("s3")
    s3.get_object.return_value = {"Body": Mock(read=Mock(return_value=json.dumps(live_record).encode()))}
    updated = {} if updated is None else updated
    templates = {} if templates is None else templates

    def describe_stacks(StackName: str) -> dict[str, Any]:
        stack = {"StackName": StackName, "StackStatus": "UPDATE_COMPLETE", "Outputs": []}
        stack |= {"CreationTime": datetime(2026, 11, 1, tzinfo=UTC)}
        return {"Stacks": [stack | ({"LastUpdatedTime": updated[StackName]} if StackName in updated else {})]}

    cfn = aws_client("cloudformation")
    cfn.describe_stacks.side_effect = describe_stacks
    cfn.get_template.side_effect = lambda StackName: {"TemplateBody": templates[StackName]}
    ecs = aws_client("ecs")
    ecs.describe_services.return_value = {"services": []}  # no app
    aws = fake_factory(s3=s3, cloudformation=cfn, ecs=ecs, **{"lambda": lam})
    endpoints = sample_endpoints(
        functions={"login_handler": "api-login-1", "health_handler": "api-health-1"},
        outputs={name: {} for name in planner.stack_roles(env).values()},
    )
    return config, env, aws, endpoints, cfn


def test_the_app_on_the_revision_its_last_deploy_left_is_not_described_again(with_lambdas: Path) -> None:  # noqa: F811
    """The live record keeps the task definition the app's last deploy left the service on: a service still on it
    runs that deploy's image (a revision never changes), so it is not described; on another, it is."""
    record = {"app": {"sha": "aaaaaaaaaaaa", "taskdef": "arn:td:7"}}
    config, env, aws, endpoints, _cfn = _world(with_lambdas, record, {})
    ecs = aws.client("ecs")
    ecs.describe_services.return_value = {"services": [{"status": "ACTIVE", "taskDefinition": "arn:td:7"}]}
    assert auto.live_components(aws, config, env, endpoints)["app"] == "aaaaaaaaaaaa"
    assert ecs.describe_task_definition.call_count == 0
    ecs.describe_services.return_value = {"services": [{"status": "ACTIVE", "taskDefinition": "arn:td:8"}]}
    ecs.describe_task_definition.return_value = {
        "taskDefinition": {
            "taskDefinitionArn": "arn:td:8",
            "containerDefinitions": [{"name": env.container, "image": "reg/car-rental-backend:bbbbbbbbbbbb"}],
        },
        "tags": [],
    }
    unverified: dict[str, str] = {}
    assert auto.live_components(aws, config, env, endpoints, unverified)["app"] == "aaaaaaaaaaaa"  # as verified
    assert ecs.describe_task_definition.call_count == 1 and "runs bbbbbbbbbbbb, not aaaaaaaaaaaa" in unverified["app"]
    # what the record keeps comes from the run's register-taskdef step, in a group or not
    from deploykit.app_chain import app_left
    from deploykit.plan import StepRecord

    registered = StepRecord("register-taskdef", "", "skipped", 0.1, "", {"task_definition": "arn:td:9"})
    group = StepRecord("sequence", "", "done", 1.0, children=[StepRecord("build", "", "done"), registered])
    assert app_left([group, StepRecord("smoke", "", "done")]) == {"app": {"taskdef": "arn:td:9"}}
    assert app_left([StepRecord("smoke", "", "done")]) == {}


def test_a_lambda_version_changed_outside_deploykit_is_deployed_again(with_lambdas: Path) -> None:  # noqa: F811
    """The version behind a function's alias must run the zip its description names (its SHA-256 is in the key);
    one whose description names none (a person published it) must run the code of the live record's commit."""
    from deploykit import packaging

    head = git(with_lambdas, "rev-parse", "--short=12", "HEAD").strip()
    package = packaging.package_function(with_lambdas / "lambda" / "login_handler")
    ours = {"Description": f"code s3://b/{package.key} git {head}", "CodeSha256": package.code_sha256}
    serving = {"api-login-1": dict(ours)}
    record = {"lambda:login_handler": {"sha": head}}
    config, env, aws, endpoints, *_ = _world(with_lambdas, record, serving)
    unverified: dict[str, str] = {}
    assert auto.live_components(aws, config, env, endpoints, unverified)["lambda:login_handler"] == head
    assert unverified == {}
    # the same description on another zip: not what deploykit published
    serving["api-login-1"]["CodeSha256"] = "b3RoZXI="
    auto.live_components(aws, config, env, endpoints, unverified)
    assert unverified == {
        "lambda:login_handler": "api-login-1's alias live serves version 3, whose code b3RoZXI= is not the zip its "
        "description names (changed outside deploykit): deployed again, as this checkout has it"
    }
    # a person's version of the very same code (no description of ours): live as recorded
    serving["api-login-1"] = {"Description": "hotfix", "CodeSha256": package.code_sha256}
    unverified.clear()
    assert auto.live_components(aws, config, env, endpoints, unverified)["lambda:login_handler"] == head
    assert unverified == {}
    # ... of other code: deployed again
    serving["api-login-1"] = {"Description": "hotfix", "CodeSha256": "b3RoZXI="}
    auto.live_components(aws, config, env, endpoints, unverified)
    assert unverified == {
        "lambda:login_handler": "api-login-1's alias live serves version 3, which deploykit did not publish "
        f"(changed outside deploykit): its code b3RoZXI= is not login_handler as at {head}: deployed again, "
        "as this checkout has it"
    }
    # a commit this clone lacks cannot be packaged again: not to be told, nothing said
    record["lambda:login_handler"] = {"sha": "0123456789ab"}
    config, env, aws, endpoints, *_ = _world(with_lambdas, record, serving)
    unverified.clear()
    auto.live_components(aws, config, env, endpoints, unverified)
    assert unverified == {}


def test_a_stack_changed_outside_deploykit_is_deployed_again(with_lambdas: Path) -> None:  # noqa: F811
    """A stack CloudFormation changed later than deploykit's deploy left it (by CloudFormation's clock), to another
    template, counts as changed; its template is read only when CloudFormation changed it since."""
    from datetime import UTC, datetime

    from deploykit.stacks import template_fingerprint, updated_of

    template = {"Resources": {"Queue": {"Type": "AWS::SQS::Queue"}}}
    left = datetime(2026, 11, 30, 9, 0, 1, 250000, tzinfo=UTC)
    record = {
        "stack:data": {"sha": "cccccccccccc", "updated": left.isoformat(), "template": template_fingerprint(template)},
        "stack:auth": {"sha": "cccccccccccc"},  # deployed before deploykit kept what a deploy left: not told
    }
    data = "CarRentalDataStack"
    updated, templates = {data: left}, {data: template}
    config, env, aws, endpoints, cfn = _world(with_lambdas, record, {}, updated, templates)
    assert env.stacks.data == data
    unverified: dict[str, str] = {}
    auto.live_components(aws, config, env, endpoints, unverified)
    assert unverified == {} and cfn.get_template.call_count == 0  # as deploykit left it: its template not read
    # updated since, to the same template (an update that failed and was rolled back, the same template again)
    updated[data] = datetime(2026, 11, 30, 10, 0, tzinfo=UTC)
    config, env, aws, endpoints, cfn = _world(with_lambdas, record, {}, updated, templates)
    auto.live_components(aws, config, env, endpoints, unverified)
    assert unverified == {} and [c.kwargs for c in cfn.get_template.call_args_list] == [{"StackName": data}]
    # ... to another one (its layout does not count: a JSON string of the same template would be the same)
    templates[data] = json.dumps({"Resources": {"Queue": {"Type": "AWS::SQS::Queue", "Properties": {"x": 1}}}})
    auto.live_components(aws, config, env, endpoints, unverified)
    assert unverified == {
        "stack:data": f"{data} was changed outside deploykit: CloudFormation updated it at 2026-11-30 10:00 UTC, to "
        "a template deploykit did not deploy: deployed again, as this checkout has it"
    }
    assert template_fingerprint(json.dumps(template, indent=2)) == template_fingerprint(template)
    assert updated_of({"CreationTime": left}) == left.isoformat() and updated_of(None) == ""


def test_what_is_live_is_read_at_once(with_lambdas: Path) -> None:  # noqa: F811
    """The live record, the service and both functions' aliases are asked for together: each first call waits
    for the other three (one after the other, the first would wait alone and the barrier break)."""
    import threading
    from unittest.mock import Mock

    from deploykit.testing import fake_factory, sample_endpoints

    config, env, _revision = setup(with_lambdas)
    barrier = threading.Barrier(4, timeout=10)

    def together(answer: Any) -> Any:
        def call(*_args: Any, **_kwargs: Any) -> Any:
            barrier.wait()
            return answer

        return call

    ecs = aws_client("ecs")
    ecs.describe_services.side_effect = together({"services": [{"status": "ACTIVE", "taskDefinition": "arn:td:7"}]})
    ecs.describe_task_definition.return_value = {
        "taskDefinition": {
            "taskDefinitionArn": "arn:td:7",
            "containerDefinitions": [{"name": "backend", "image": "reg/repo:aaaaaaaaaaaa"}],
        },
        "tags": [],
    }
    lam = aws_client("lambda")
    lam.get_alias.return_value = {"Name": "live", "FunctionVersion": "1"}  # no weighted routing
    lam.get_function_configuration.side_effect = together({"Description": "code s3://b/k git bbbbbbbbbbbb"})
    s3 = aws_client("s3")
    s3.get_object.side_effect = together({"Body": Mock(read=Mock(return_value=b"{}"))})
    aws = fake_factory(ecs=ecs, s3=s3, **{"lambda": lam})
    endpoints = sample_endpoints(functions={"login_handler": "api-login-1", "health_handler": "api-health-1"})
    live = auto.live_components(aws, config, env, endpoints)
    assert (live["app"], live["lambda:login_handler"], live["lambda:health_handler"]) == ("aaaaaaaaaaaa",) + (
        "bbbbbbbbbbbb",
    ) * 2


def test_the_estimated_total_counts_a_parallel_group_as_its_longest_member(with_lambdas: Path) -> None:  # noqa: F811
    config, env, revision = setup(with_lambdas)
    found = change_set(("backend/app/routes.py", "app"), ("lambda/health_handler/handler.py", "lambda:health_handler"))
    plan = auto.auto_plan(config, env, revision, found, INPUTS)
    # the image (build, push) beside the Lambda upload, then the fast path beside the app's rollout, then smoke
    estimates = {
        "build": 2.0,
        "push": 1.0,
        "upload-lambda": 5.0,
        "update-code": 0.5,
        "wait-healthy": 10.0,
        "smoke": 1.0,
    }
    rows = auto.estimate_rows(plan, env, estimates)
    assert sum(float(r[3][1:-1]) for r in rows if r[0] and r[3]) == 19.5  # each step one after the other
    assert auto.estimate_total(plan.steps, env, estimates) == 5.0 + 10.0 + 1.0
    # a stack's own median goes before the median of all stack deploys
    stack_plan = auto.auto_plan(config, env, revision, change_set(("cdk/stacks/data_stack.py", "stack:data")), INPUTS)
    stack_estimates = {"deploy-stack": 9.0, "deploy-stack:CarRentalDataStack": 3.0, "synth": 4.0}
    assert auto.estimate_total(stack_plan.steps, env, stack_estimates) == 7.0
    # a canary takes the time it is given, whatever the history says
    canary_env = dataclasses.replace(env, lambda_canary=LambdaCanary(percent=10, seconds=120))
    lambda_plan = auto.auto_plan(
        config, canary_env, revision, change_set(("lambda/health_handler/handler.py", "lambda:health_handler")), INPUTS
    )
    assert auto.estimate_total(lambda_plan.steps, canary_env, {"canary": 3.0, "smoke": 1.0}) == 121.0


def test_a_stack_the_newest_run_that_deployed_it_failed_on_is_deployed_again() -> None:
    """A failed run never moves the live record, yet its stack's change set may have gone through before a later
    step failed: the stack counts as changed (said why) until a run that passes deploys it; a failed run at the live
    commit left it as the record says. A refused run changed nothing, nor did a run whose deploy of the stack found
    nothing to change: the run before them is the one that counts."""
    from deploykit.history import Record

    def run(n: int, stacks: dict[str, str], **kw: Any) -> Record:
        when = f"2026-11-30T01:{n:02d}:00+00:00"
        return Record(f"r{n}", "sandbox", when, "ana", kw.pop("command", "deploy.auto"), "x", seconds=1.0,
                      components=stacks, ok=kw.pop("ok", True), **kw)  # fmt: skip

    live = {"app": "a" * 12, "stack:fargate": "b" * 12, "stack:api": "b" * 12, "stack:data": None}
    failed = run(3, {"stack:fargate": "c" * 12, "stack:api": "c" * 12}, ok=False)
    refused = run(4, {"stack:api": "d" * 12}, ok=False, refused=True)
    automatic = run(5, {"app": "a" * 12}, command="automatic rollback: app")
    notes = auto.left_by_failed_runs([automatic, refused, failed, run(1, {"stack:fargate": "b" * 12})], live)
    assert notes == {  # the refused run after the failed one changed nothing: the api stack is left as that left it
        f"stack:{role}": f"the last run that deployed it (deploy.auto at 2026-11-30T01:03:00+00:00, {'c' * 12}) "
        "failed, maybe after its change set went through: deployed again, as this checkout has it"
        for role in ("api", "fargate")
    }
    # deployed again by a run that passed: as the record says
    assert list(auto.left_by_failed_runs([run(6, {"stack:fargate": "e" * 12}), failed], live)) == ["stack:api"]
    # a failed run at the live commit itself left the stack as the record has it
    assert auto.left_by_failed_runs([run(7, {"stack:fargate": "b" * 12}, ok=False)], live) == {}

    # a failed run whose deploy of the Fargate stack found nothing to change (the step inside its groups) did not
    # change it: what counts is the run before, here one that passed; the API stack it did update counts
    stacks = {"fargate": "CarRentalFargateStack", "api": "CarRentalApiStack"}
    steps = [
        {"step": "parallel", "status": "failed", "detail": "smoke failed"},
        {"step": "deploy-stack", "status": "skipped", "detail": "CarRentalFargateStack: no changes", "in": "parallel"},
        {"step": "deploy-stack", "status": "done", "detail": "CarRentalApiStack: updated in 1.0s", "in": "parallel"},
    ]
    untouched = run(8, {"stack:fargate": "f" * 12, "stack:api": "f" * 12}, ok=False, steps=steps)
    passed = run(2, {"stack:fargate": "b" * 12, "stack:api": "b" * 12})
    assert list(auto.left_by_failed_runs([untouched, passed], live, stacks)) == ["stack:api"]
    assert sorted(auto.left_by_failed_runs([untouched, passed], live)) == ["stack:api", "stack:fargate"]  # unnamed
    # a run that passed with nothing to change verified what the failed run before it left (the live record's)
    fixed = run(9, {"stack:fargate": "b" * 12}, steps=steps[1:2])
    assert list(auto.left_by_failed_runs([fixed, failed], live, stacks)) == ["stack:api"]  # not the Fargate stack
    # ... and behind it a failed run that did change it: that one counts (the stack may hold its template still)
    assert sorted(auto.left_by_failed_runs([untouched, failed, passed], live, stacks)) == ["stack:api", "stack:fargate"]


def test_a_function_the_newest_run_that_moved_its_alias_failed_on_is_deployed_again() -> None:
    """What is live for a function is read from its alias, which a failed run may have moved (kept with
    --no-rollback, or interrupted in smoke): it counts as changed until a run that passes moves it. A failed run
    that never moved it (its move-alias not run, its canary taken back) is passed over, and a run that passed and
    moved it settles it though it deployed no commit of it (the automatic rollback to a version CloudFormation
    published, which names none: it said the function changed forever)."""
    from deploykit.history import Record

    def run(n: int, components: dict[str, str], steps: list[dict[str, Any]], **kw: Any) -> Record:
        when = f"2026-12-03T01:{n:02d}:00+00:00"
        return Record(f"r{n}", "sandbox", when, "ana", kw.pop("command", "deploy.auto"), "x", seconds=1.0,
                      components=components, ok=kw.pop("ok", True), steps=steps, **kw)  # fmt: skip

    moved = [{"step": "move-alias", "status": "done", "detail": "health_handler: live → version 3 (was 2)"}]
    not_moved = [{"step": "move-alias", "status": "not run", "detail": "point api-health-1:live at ..."}]
    live = {"lambda:health_handler": "c" * 12}  # read from the alias: the failed run's
    entries = {"lambda:health_handler": {"sha": "b" * 12}}
    failed = run(3, {"lambda:health_handler": "c" * 12}, moved, ok=False)
    assert auto.left_by_failed_runs([failed], live, entries=entries) == {
        "lambda:health_handler": "the last run that deployed it (deploy.auto at 2026-12-03T01:03:00+00:00, "
        f"{'c' * 12}) failed after its alias may have moved: deployed again, as this checkout has it"
    }
    assert auto.left_by_failed_runs([failed], live) == {}  # the live record's entries not read: nothing to compare
    taken_back = run(4, {"lambda:health_handler": "d" * 12}, not_moved, ok=False)
    assert list(auto.left_by_failed_runs([taken_back, failed], live, entries=entries)) == ["lambda:health_handler"]
    back = [{"step": "move-alias", "status": "done", "detail": "health_handler: live → version 1 (git unknown, was 3)"}]
    rollback = run(5, {}, back, command="automatic rollback: lambda:health_handler")
    assert auto.left_by_failed_runs([rollback, failed], live, entries=entries) == {}
    passed = run(6, {"lambda:health_handler": "c" * 12}, moved)
    assert auto.left_by_failed_runs([passed, failed], live, entries=entries) == {}


def test_notes_count_a_component_as_changed_unless_a_path_of_it_changed_already(with_lambdas: Path) -> None:  # noqa: F811
    config = load_config(with_lambdas / "deploy.toml")
    head = git(with_lambdas, "rev-parse", "HEAD").strip()
    live = {c: head[:12] for c in changes.components_of(config)}
    found = changes.detect(config, live)
    assert found.components() == set()
    noted = changes.with_notes(found, {"stack:fargate": "left by a failed run", "app": "runs another image"})
    assert noted.components() == {"stack:fargate", "app"}
    assert [(c.path, c.component, c.status, c.reason) for c in noted.changes] == [
        ("", "app", "M", "runs another image"),
        ("", "stack:fargate", "M", "left by a failed run"),
    ]
    assert changes.with_notes(noted, {"app": "again"}) == noted  # changed already: nothing added
    env = config.environment("sandbox")
    assert auto.diff_json(env, noted)["reasons"] == {
        "app": "runs another image",
        "stack:fargate": "left by a failed run",
    }
    assert auto.diff_json(env, found)["reasons"] == {}


def test_the_plan_lists_a_groups_steps_under_it_with_the_groups_estimate(with_lambdas: Path) -> None:  # noqa: F811
    config, env, revision = setup(with_lambdas)
    found = change_set(("backend/app/routes.py", "app"), ("lambda/health_handler/handler.py", "lambda:health_handler"))
    plan = auto.auto_plan(config, env, revision, found, INPUTS)
    estimates = {"build": 2.0, "push": 1.0, "upload-lambda": 5.0, "update-code": 0.5, "wait-healthy": 10.0}
    rows = [[str(cell) for cell in row] for row in auto.estimate_rows(plan, env, estimates)]
    tag = f"car-rental-backend:{revision.tag}"
    assert rows == [
        ["", "parallel", "side by side: image, upload-lambda", "~5.0s"],
        ["", "↳ sequence", "image: one after the other", "~3.0s"],
        ["1", "· ↳ base-image", "deploykit/python-base:3.11-bookworm", ""],
        ["2", "· ↳ build", tag, "~2.0s"],
        ["3", "· ↳ push", tag, "~1.0s"],
        ["4", "↳ upload-lambda", "health_handler", "~5.0s"],
        ["", "parallel", "side by side: lambda health_handler, app", "~10.0s"],
        ["", "↳ sequence", "lambda health_handler: one after the other", "~0.5s"],
        ["5", "· ↳ update-code", "health_handler", "~0.5s"],
        ["6", "· ↳ publish-version", "health_handler", ""],
        ["7", "· ↳ move-alias", "health_handler", ""],
        ["", "↳ sequence", "app: one after the other", "~10.0s"],
        ["8", "· ↳ register-taskdef", "car-rental-service", ""],
        ["9", "· ↳ roll-service", "car-rental-service", ""],
        ["10", "· ↳ wait-healthy", "car-rental-service", "~10.0s"],
        ["11", "smoke", "sandbox", ""],
    ]


def test_deploying_again_what_a_rollback_took_the_environment_off_is_refused(with_lambdas: Path) -> None:  # noqa: F811
    """A person's rollback found a release wanting: a deploy.auto of a HEAD that has the component as that release
    had it would bring it back. A fix since, a deploy since, or the automatic rollback of a failed run are not that."""
    from deploykit.history import Record

    config, env, _revision = setup(with_lambdas)
    bad = git(with_lambdas, "rev-parse", "--short=12", "HEAD").strip()
    (with_lambdas / "README.md").write_text("docs only\n")
    git(with_lambdas, "add", "-A")
    git(with_lambdas, "commit", "-qm", "docs")
    revision = current_revision(with_lambdas)

    def run(n: int, command: str, deployed: dict[str, str], base: dict[str, str], **kw: Any) -> Record:
        return Record(f"r{n}", "sandbox", f"2026-11-30T02:{n:02d}:00+00:00", "ana", command, "x", seconds=1.0,
                      components=deployed, base=base, ok=kw.pop("ok", True), **kw)  # fmt: skip

    good = "a" * 12
    rollback = run(3, "rollback app → " + good, {"app": good}, {"app": bad})
    deploy = run(2, "deploy.auto", {"app": bad}, {"app": good})
    assert auto.taken_off([rollback, deploy]) == {"app": (bad, rollback)}
    again = auto.deploying_again(config, [rollback, deploy], {"app"})
    assert (
        list(again) == ["app"]
        and f"app as it was at {bad} (taken off by rollback app → {good}, ana at " in again["app"]
    )
    with pytest.raises(
        UsageError, match=f"would bring back what a rollback took sandbox off: app as it was at {bad}"
    ) as no:
        auto.refuse_deploying_again(again, revision.sha, env)
    assert no.value.exit_code == 2 and "--allow-rolled-back" in (no.value.next_step or "")
    assert auto.deploying_again(config, [rollback, deploy], {"stack:api"}) == {}  # not deployed now
    # the components one rollback took off one commit: said once
    whole = run(3, "rollback run r2", {"app": good, "stack:api": good}, {"app": bad, "stack:api": bad})
    both = auto.deploying_again(
        config, [whole, run(2, "deploy.auto", whole.base, whole.components)], {"app", "stack:api"}
    )
    assert list(both) == ["app", "stack:api"]
    [(said, count)] = auto.said_together(both)
    assert count == 2 and said.startswith(
        f"app, stack:api as they were at {bad} (taken off by rollback run r2, ana at "
    )
    with pytest.raises(UsageError, match=f"took sandbox off: app, stack:api as they were at {bad} \\(taken off by"):
        auto.refuse_deploying_again(both, revision.sha, env)
    assert auto.said_together(again) == [(again["app"], 1)]
    # the automatic rollback of a failed run, or a deploy after the rollback, does not count
    automatic = run(3, "automatic rollback: app", {"app": good}, {"app": bad})
    assert auto.taken_off([automatic, deploy]) == {}
    assert auto.taken_off([run(4, "deploy.auto", {"app": bad}, {"app": good}), rollback, deploy]) == {}
    assert auto.taken_off([run(4, "deploy.auto", {"app": bad}, {"app": good}, ok=False), rollback]) != {}
    # an uncommitted fix counts when the work tree is deployed (--allow-dirty), not otherwise
    (with_lambdas / "backend" / "app").mkdir(parents=True, exist_ok=True)
    (with_lambdas / "backend" / "app" / "routes.py").write_text("# being fixed\n")
    assert auto.deploying_again(config, [rollback, deploy], {"app"}, uncommitted=True) == {}
    assert list(auto.deploying_again(config, [rollback, deploy], {"app"})) == ["app"]
    # a fix on top of the release: the app changed since, so it is not the release again
    (with_lambdas / "backend" / "app").mkdir(parents=True, exist_ok=True)
    (with_lambdas / "backend" / "app" / "routes.py").write_text("# fixed\n")
    git(with_lambdas, "add", "-A")
    git(with_lambdas, "commit", "-qm", "fix")
    assert auto.deploying_again(config, [rollback, deploy], {"app"}) == {}
    # a commit this clone does not have: it cannot tell, so it does not refuse
    elsewhere = run(3, "rollback app → " + good, {"app": good}, {"app": "0123456789ab"})
    assert auto.deploying_again(config, [elsewhere], {"app"}) == {}


def test_the_runs_read_besides_the_newest_are_those_that_left_a_changed_component_live() -> None:
    from deploykit.history import Record

    def run(run_id: str, components: dict[str, str], ok: bool = True) -> Record:
        return Record(run_id, "dev", "", "", "deploy.auto", "", ok, 1.0, components=components)

    newest = [run("0003", {"app": "c"}), run("0002", {"stack:api": "b"}, ok=False)]
    entries = {
        "app": {"sha": "c", "record": "0003"},
        "stack:api": {"sha": "a", "record": "0001"},  # the failed run did not leave it live
        "stack:data": {"sha": "a", "record": "0001"},
        "stack:auth": {"sha": "a", "record": "0000"},
        "lambda:login_handler": {"sha": "a"},  # written before the record was named: nothing to read
    }
    changed = ["app", "stack:api", "stack:data", "lambda:login_handler"]
    assert auto.deciding_runs(entries, newest, changed) == ["0001"]  # stack:auth unchanged, app deployed since
    assert auto.deciding_runs(entries, [*newest, run("0001", {"stack:data": "a"})], changed) == []


# -- --only and --skip ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "chosen"),
    [
        ("app", {"app"}),
        ("lambda", {"lambda"}),
        ("app, lambda:login_handler,", {"app", "lambda:login_handler"}),
        ("stack:api,stack:CarRentalFargateStack", {"stack:api", "stack:fargate"}),  # a role or the stack's name
        ("stack", {"stack"}),
    ],
)
def test_only_and_skip_name_components_or_kinds(with_lambdas: Path, text: str, chosen: set[str]) -> None:  # noqa: F811
    config, env, _revision = setup(with_lambdas)
    assert auto.selection(text, config, env, "--only") == chosen


@pytest.mark.parametrize(
    ("text", "said"),
    [
        ("lamda", "--skip 'lamda': 'lamda' is not a component"),
        (" , ", "--skip ' , ' names nothing"),
        ("lambda:nope", "unknown Lambda function 'nope'"),
        ("stack:nope", "unknown stack 'nope' in environment 'sandbox'"),
        ("", "--skip '' names nothing"),
    ],
)
def test_an_unknown_component_is_refused_naming_those_there_are(with_lambdas: Path, text: str, said: str) -> None:  # noqa: F811
    config, env, _revision = setup(with_lambdas)
    with pytest.raises(UsageError) as refused:
        auto.selection(text, config, env, "--skip")
    assert refused.value.message == said
    assert refused.value.exit_code == 2


def test_only_and_skip_naming_one_component_is_refused(with_lambdas: Path) -> None:  # noqa: F811
    config, env, _revision = setup(with_lambdas)
    with pytest.raises(UsageError, match="--only and --skip both name app") as refused:
        auto.selections(config, env, only="app,lambda", skip="app")
    assert refused.value.exit_code == 2
    # a kind in one, a component of it in the other: all functions but one
    assert auto.selections(config, env, only="lambda", skip="lambda:login_handler") == (
        {"lambda"},
        {"lambda:login_handler"},
    )


def test_held_back_components_are_left_out_of_the_plan_and_not_carried_to_head(with_lambdas: Path) -> None:  # noqa: F811
    config, env, revision = setup(with_lambdas)
    found = change_set(
        ("backend/app/routes.py", "app"),
        ("lambda/login_handler/handler.py", "lambda:login_handler"),
        ("cdk/stacks/fargate_stack.py", "stack:fargate"),
        ("README.md", ""),
    )
    found = dataclasses.replace(found, base={**found.base, "stack:data": "a" * 40})

    skipped = auto.held_back(found, None, {"stack"})
    assert skipped.components() == {"app", "lambda:login_handler"} and skipped.held == {"stack:fargate"}
    plan = auto.auto_plan(config, env, revision, skipped, INPUTS)
    assert "deploy-stack" not in {s.name for s in auto.flat_steps(plan.steps)}
    assert {c for c, _ in plan.deploys} == {"app", "lambda:login_handler"}
    # what is held back is not live at HEAD: only stack:data, unchanged, is carried there
    assert auto.unchanged_components(skipped, revision) == (("stack:data", revision.tag),)
    hosts = auto.code_hosts({"login_handler": "api"})
    assert hosts == {"app": "stack:fargate", "lambda:login_handler": "stack:api"}
    assert auto.analysis_lines(skipped, env, hosts=hosts, flag=" --env dev")[-3:] == [
        "⏸  held back (--only/--skip): stack:fargate: left as live, for a later inv deploy.auto --env dev",
        # the stack holds what the code needs (its settings, its permissions): said, where it went out without a
        # word; login_handler's stack (the API's) goes out, nothing said of it
        "⚠️  app goes out without stack:fargate, which holds it: what this code needs of its change (a setting, a "
        "permission) is not live until it deploys",
        "📄 No deploy: README.md (docs, tests, the toolkit: nothing to deploy)",
    ]
    assert [c["component"] for c in auto.plan_json(env, skipped, plan)["changes"]] == ["app", "lambda:login_handler"]

    only = auto.held_back(found, {"lambda:login_handler", "stack:fargate"}, ())
    assert only.components() == {"lambda:login_handler", "stack:fargate"} and only.held == {"app"}
    plan = auto.auto_plan(config, env, revision, only, INPUTS)
    assert shape(plan, env)[0] == ("synth", "sandbox") and ("build", "car-rental-backend") not in shape(plan, env)
    fargate = next(s for s in auto.flat_steps(plan.steps) if s.name == "deploy-stack")
    assert dict(fargate.parameters) == {"ImageTag": "aaaaaaaaaaaa"}  # type: ignore[attr-defined]  # the live image

    # both: --only a kind, --skip one of it; a component that did not change is held back from nothing
    both = auto.held_back(found, {"lambda", "app"}, {"app", "lambda:health_handler"})
    assert both.components() == {"lambda:login_handler"} and both.held == {"app", "stack:fargate"}
    assert not auto.auto_plan(config, env, revision, auto.held_back(found, {"stack:api"}, ()), INPUTS)


def test_the_commits_behind_the_changes_are_said_ten_at_most_long_subjects_cut() -> None:
    commits = [
        changes.ChangedBy(
            f"{i:012x}" + "0" * 28, "ana", "2026-12-01T06:00:00+00:00", "x" * 80 if i == 0 else f"Fix {i}", ("app",)
        )
        for i in range(auto.COMMITS_SHOWN + 3)
    ]
    lines = auto.commit_lines(commits)
    assert lines[0] == f"📝 {auto.COMMITS_SHOWN + 3} commits behind these changes, newest first:"
    assert lines[1] == f"   {0:012x} {'x' * 71}… · ana · app"
    assert lines[2] == f"   {1:012x} Fix 1 · ana · app"
    assert lines[-1] == "   … and 3 more (inv diff --json lists them)" and len(lines) == auto.COMMITS_SHOWN + 2
    assert auto.commit_lines(commits[:1])[0] == "📝 1 commit behind these changes, newest first:"
    assert auto.commit_lines([]) == []


def test_only_and_skip_may_not_hold_back_a_stack_a_deployed_one_imports_from_anew(with_lambdas: Path) -> None:  # noqa: F811
    """The data stack deploys first for the Fargate stack's new import: --only stack:fargate (or --skip stack:data)
    held it back, and the Fargate stack failed at CloudFormation ("No export named ...") after what ran before it.
    Refused before anything runs; holding both back, or neither, is fine."""
    _config, env, _revision = setup(with_lambdas)
    names = planner.stack_roles(env)
    why = auto.EXPORTS_FOR.format(export="Data:TableArn", importer=names["fargate"])
    found = change_set(("cdk/stacks/fargate_stack.py", "stack:fargate"), ("backend/app/x.py", "app"))
    found = changes.with_notes(found, {"stack:data": why})
    for only, skip in ((["stack:fargate"], []), (None, ["stack:data"])):
        held = auto.held_back(found, only, skip)
        with pytest.raises(
            UsageError, match=r"hold back what a stack this run deploys needs deployed first: stack:data"
        ) as err:
            auto.refuse_holding_exporters(found, held, env)
        assert err.value.exit_code == 2 and "stack:fargate imports" in err.value.message
    for only, skip in ((["stack:fargate", "stack:data"], []), (None, ["stack:fargate", "stack:data"]), (["app"], [])):
        auto.refuse_holding_exporters(found, auto.held_back(found, only, skip), env)


def test_a_stack_whose_new_export_a_changed_stack_imports_is_deployed_first() -> None:
    """A commit that changed the Fargate stack's code to refer to a data stack table anew: CDK adds an export to the
    data stack's template, which the Fargate stack imports. The data stack is counted with the run (deployed first),
    named by the first of its new exports; not when the export is live already, nor for an import no other stack
    makes (the deploy then says it), nor for one whose name cannot be worked out here."""
    names = {"data": "Data", "auth": "Auth", "fargate": "Fargate"}

    def exporting(*exports: str) -> dict[str, Any]:
        outputs = {f"O{i}": {"Value": "v", "Export": {"Name": name}} for i, name in enumerate(exports)}
        return {"Resources": {"T": {"Type": "AWS::DynamoDB::Table"}}, "Outputs": outputs}

    def importing(*imports: Any) -> dict[str, Any]:
        environment = [{"Name": f"V{i}", "Value": {"Fn::ImportValue": name}} for i, name in enumerate(imports)]
        container = {"Name": "backend", "Environment": environment}
        return {"Resources": {"TD": {"Type": "AWS::ECS::TaskDefinition", "Properties": {"Containers": [container]}}}}

    asked: list[list[str]] = []

    def live(*exported: str) -> Any:
        def read(wanted: list[str]) -> dict[str, str]:
            asked.append(wanted)
            return dict.fromkeys(exported, "v")

        return read

    templates = {
        "data": exporting("Data:TableName", "Data:TableArn", "Data:BucketArn"),
        "auth": exporting("Auth:PoolId"),
        "fargate": importing("Data:TableName", "Data:TableArn", {"Fn::Sub": "Data:${AWS::Region}"}, "Elsewhere:X"),
    }
    wanted = auto.exports_wanted(templates, {"fargate"}, names, live("Data:TableName"), region="eu-west-1", account="1")
    assert wanted == {"stack:data": "its template now exports Data:TableArn, which Fargate imports: it deploys first"}
    assert asked == [["Data:TableArn", "Data:TableName"]]  # what a changed stack imports that another exports
    both = live("Data:TableName", "Data:TableArn")
    assert auto.exports_wanted(templates, {"fargate"}, names, both, region="eu-west-1", account="1") == {}
    asked.clear()
    alone = {"auth": templates["auth"], "fargate": templates["fargate"]}  # what it imports, no other stack exports
    assert auto.exports_wanted(alone, {"fargate"}, names, live(), region="eu-west-1", account="1") == {}
    assert asked == []  # nothing read

    templates["fargate"] = importing({"Fn::Sub": "Data:Table${Kind}"})  # Kind: no value here
    assert auto.exports_wanted(templates, {"fargate"}, names, live(), region="eu-west-1", account="1") == {}
    templates["fargate"] = importing({"Fn::Sub": "Data:Table${Kind}"}) | {"Parameters": {"Kind": {"Default": "Arn"}}}
    assert set(auto.exports_wanted(templates, {"fargate"}, names, live(), region="eu-west-1", account="1")) == {
        "stack:data"
    }


def test_watch_alarms_sets_how_long_the_alarms_are_read_for_one_deploy(with_lambdas: Path) -> None:  # noqa: F811
    """--watch-alarms DURATION: the alarm watch's seconds for this deploy; refused without alarms named, beyond the
    setting's three hours, or not a duration."""
    config, env, revision = setup(with_lambdas)
    with pytest.raises(UsageError, match=r"^--watch-alarms 5m: \[environments.sandbox.alarm_watch\] names no alarms"):
        with_alarm_watch(env, "5m")
    env = dataclasses.replace(env, alarm_watch=AlarmWatch(("car-rental-5xx",), seconds=90))
    assert with_alarm_watch(env, None) is env
    longer = with_alarm_watch(env, "15m")
    assert longer.alarm_watch == AlarmWatch(("car-rental-5xx",), seconds=900.0)
    plan = auto.auto_plan(config, longer, revision, change_set(("backend/app/routes.py", "app")), INPUTS)
    assert [name for name, _ in shape(plan, env)][-1] == "watch-alarms"
    assert plan.steps[-1].seconds == 900  # type: ignore[attr-defined]
    assert with_alarm_watch(env, "0").alarm_watch.seconds == 0
    with pytest.raises(UsageError, match="longer than 3 hours"):
        with_alarm_watch(env, "4h")
    with pytest.raises(UsageError, match="--watch-alarms 'soon' is not a duration"):
        with_alarm_watch(env, "soon")
