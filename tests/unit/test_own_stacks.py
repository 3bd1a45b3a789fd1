"""The team's own stacks (any role of [environments.NAME.stacks] besides the platform's five): their changes, and
where deploy.full, deploy.auto, destroy and a rollback of a run put them."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from deploykit import auto, changes, planner, rollback
from deploykit.config import Config, load_config
from deploykit.errors import UsageError
from deploykit.git import current_revision
from deploykit.stack_chain import StacksByDependencies, StacksByImports
from tests.conftest import git
from tests.unit.test_auto_plan import INPUTS, change_set, shape
from tests.unit.test_stack_plans import names, with_lambdas  # noqa: F401 - a fixture

OWN = '\nnotifications = "CarRentalNotificationsStack"\nsearch = "CarRentalSearchStack"\n'


@pytest.fixture
def own(with_lambdas: Path) -> Config:  # noqa: F811
    """The project, its environments naming two stacks of the team's own, and a CDK app with their modules."""
    text = (with_lambdas / "deploy.toml").read_text()
    for env in ("sandbox", "dev"):
        table = f"[environments.{env}.stacks]\n"
        text = text.replace(table, table + OWN.strip() + "\n")
    (with_lambdas / "deploy.toml").write_text(text)
    stacks = with_lambdas / "cdk" / "stacks"
    (stacks / "common").mkdir(parents=True)
    (stacks / "common" / "queues.py").write_text("RETENTION = 4\n")
    (stacks / "notifications_stack.py").write_text("from stacks.common.queues import RETENTION\n")
    (stacks / "search_stack.py").write_text("DOMAIN = 'search'\n")
    (with_lambdas / "cdk" / "app.py").write_text("import stacks.notifications_stack\nimport stacks.search_stack\n")
    git(with_lambdas, "add", "-A")
    git(with_lambdas, "commit", "-qm", "own stacks")
    return load_config(with_lambdas / "deploy.toml")


def targets(config: Config, path: str) -> list[str | None]:
    return [t.component for t in changes.classify(config, path)]


def test_a_module_of_its_own_stack_is_that_stack_and_what_it_imports_counts_for_it(own: Config) -> None:
    assert targets(own, "cdk/stacks/notifications_stack.py") == ["stack:notifications"]
    assert targets(own, "cdk/stacks/search_stack.py") == ["stack:search"]
    assert targets(own, "cdk/stacks/common/queues.py") == ["stack:notifications"]  # only it imports the module
    every = targets(own, "cdk/app.py")
    assert every[-2:] == ["stack:notifications", "stack:search"] and len(every) == 7
    assert changes.components_of(own)[-2:] == ["stack:notifications", "stack:search"]
    with pytest.raises(ValueError, match=r"'stack:nope' is not a component \(app, lambda:<fn> or stack:<registry"):
        changes.detect(own, {"stack:nope": None})


def test_a_change_to_its_own_stack_deploys_that_stack_alone(own: Config) -> None:
    env, revision = own.environment("sandbox"), current_revision(own.root)
    plan = auto.auto_plan(own, env, revision, change_set(("cdk/stacks/search_stack.py", "stack:search")), INPUTS)
    assert shape(plan, env) == [("synth", "sandbox"), ("deploy-stack", "CarRentalSearchStack"), ("smoke", "sandbox")]
    # deploykit gives it no input of its own: only each function's code, of which it takes those it holds
    assert dict(plan.steps[1].parameters) == {  # type: ignore[attr-defined]
        "HealthHandlerCodeKey": "lambda/health_handler/old.zip",
        "LoginHandlerCodeKey": "lambda/login_handler/old.zip",
    }
    described = plan.steps[1].describe()
    assert described.endswith("CarRentalSearchStack.template.json; the code key of each function it holds")


def test_a_function_held_by_a_stack_of_its_own_takes_the_fast_path_unless_that_stack_deploys_it(own: Config) -> None:
    """Which stack holds a function (its outputs name it) decides: that stack's change deploys its new code; another
    stack's change, the API stack's included, leaves it to the fast path."""
    env, revision = own.environment("sandbox"), current_revision(own.root)
    held = dataclasses.replace(INPUTS, hosts={"health_handler": "search", "login_handler": "api"})
    handler = ("lambda/health_handler/handler.py", "lambda:health_handler")
    fast = [("update-code", "health_handler"), ("publish-version", "health_handler"), ("move-alias", "health_handler")]
    alone = auto.auto_plan(own, env, revision, change_set(handler), held)
    assert shape(alone, env)[1:] == [*fast, ("smoke", "sandbox")]
    with_api = auto.auto_plan(own, env, revision, change_set(handler, ("cdk/stacks/api_stack.py", "stack:api")), held)
    assert [s for s in shape(with_api, env) if s[0] != "upload-lambda"] == [
        ("synth", "sandbox"),
        ("deploy-stack", "CarRentalApiStack"),
        *fast,
        ("smoke", "sandbox"),
    ]
    with_its_own = auto.auto_plan(
        own, env, revision, change_set(handler, ("cdk/stacks/search_stack.py", "stack:search")), held
    )
    assert [s for s in shape(with_its_own, env) if s[0] != "upload-lambda"] == [
        ("synth", "sandbox"),
        ("deploy-stack", "CarRentalSearchStack"),
        ("smoke", "sandbox"),
    ]
    [deploy] = [s for s in auto.flat_steps(with_its_own.steps) if s.name == "deploy-stack"]
    assert dict(deploy.parameters)["HealthHandlerCodeKey"].startswith("lambda/health_handler/")  # type: ignore[attr-defined]
    assert dict(deploy.parameters)["HealthHandlerCodeKey"] != "lambda/health_handler/old.zip"  # type: ignore[attr-defined]
    # not deployed yet: a stack that may hold it brings it; with none changed, refused, naming both ways to hold one
    new = dataclasses.replace(held, hosts={}, functions={"login_handler": "api-login-1"})
    assert "update-code" not in dict(
        shape(
            auto.auto_plan(
                own, env, revision, change_set(handler, ("cdk/stacks/search_stack.py", "stack:search")), new
            ),
            env,
        )
    )
    with pytest.raises(UsageError) as refused:
        auto.auto_plan(own, env, revision, change_set(handler, ("cdk/stacks/data_stack.py", "stack:data")), new)
    assert refused.value.message == (
        "Lambda function health_handler is not deployed in 'sandbox': no stack has a HealthHandlerFunctionName output"
    )
    assert "deployed_function of cdk/stacks/common/functions.py in a stack of your own" in str(refused.value.next_step)


def test_its_own_stacks_deploy_with_the_platforms_last_each_after_the_stacks_it_depends_on(own: Config) -> None:
    env, revision = own.environment("sandbox"), current_revision(own.root)
    both = change_set(
        ("cdk/stacks/search_stack.py", "stack:search"),
        ("cdk/stacks/notifications_stack.py", "stack:notifications"),
        ("cdk/stacks/api_stack.py", "stack:api"),
    )
    plan = auto.auto_plan(own, env, revision, both, INPUTS)
    assert [names(step) for step in plan.steps] == [
        ["synth"],
        ["CarRentalApiStack", "CarRentalNotificationsStack", "CarRentalSearchStack"],
        ["smoke"],
    ]
    group = plan.steps[1]
    assert isinstance(group, StacksByDependencies)
    assert [step.stack for step in group.steps] == [  # type: ignore[attr-defined]
        "CarRentalApiStack",
        "CarRentalNotificationsStack",
        "CarRentalSearchStack",
    ]
    # no assembly to read (not synthesized yet): each of the team's after every stack before it, as deploy.toml lists
    assert {i: list(n) for i, n in group.needs().items()} == {1: [0], 2: [0, 1]}
    # the synthesized app's dependencies: search imports from notifications (and the data stack, deployed before)
    assembly(own, env.name, {"CarRentalSearchStack": ["CarRentalNotificationsStack", "CarRentalDataStack"]})
    assert {i: list(n) for i, n in group.needs().items()} == {0: [], 1: [], 2: [1]}
    estimates = {"deploy-stack": 60.0}
    assert auto.estimate_total(plan.steps[1:2], env, estimates) == 120.0  # search waits for notifications
    assembly(own, env.name, {})
    assert auto.estimate_total(plan.steps[1:2], env, estimates) == 60.0  # all three side by side
    full = planner.full_plan(own, env, revision, repository_uri="")
    assert [names(step) for step in full.steps][-2:] == [
        ["CarRentalApiStack", "CarRentalFargateStack", "CarRentalNotificationsStack", "CarRentalSearchStack"],
        ["smoke"],
    ]
    assert isinstance(full.steps[-2], StacksByDependencies) and full.steps[-2].own_from == 2
    assert {"stack:notifications", "stack:search"} <= {c for c, _ in full.deploys}


def assembly(config: Config, env: str, needs: dict[str, list[str]]) -> None:
    """A cloud assembly of the seven stacks in ``env``'s synthesis folder, each depending on ``needs[name]``."""
    stacks = [*config.environment(env).stacks.roles().values()]
    artifacts: dict[str, object] = {
        f"{name}.assets": {"type": "cdk:asset-manifest", "properties": {"file": f"{name}.assets.json"}}
        for name in stacks
    }
    for name in stacks:
        artifacts[f"Id{name}"] = {
            "type": "aws:cloudformation:stack",
            "properties": {"templateFile": f"{name}.template.json", "stackName": name},
            "dependencies": [f"{name}.assets", *(f"Id{other}" for other in needs.get(name, ()))],
        }
    out = planner.synth_dir(config, config.environment(env))
    out.mkdir(parents=True, exist_ok=True)
    (out / "manifest.json").write_text(json.dumps({"version": "36.0.0", "artifacts": artifacts}))


def test_destroy_deletes_its_own_stacks_with_the_platforms_last_in_the_reverse_order(own: Config) -> None:
    env = own.environment("sandbox")
    [group] = planner.destroy_plan(env, include_data=False).steps
    assert isinstance(group, StacksByImports) and group.own_until == 2
    assert [step.stack for step in group.steps] == [  # type: ignore[attr-defined]
        "CarRentalSearchStack",
        "CarRentalNotificationsStack",
        "CarRentalFargateStack",
        "CarRentalApiStack",
    ]
    # what imports from which is read as the run starts (tests/functional/test_exports_stubbed.py); until then, as
    # in the estimate: the team's one at a time in deploy.toml's order reversed, then the platform's side by side
    assert {i: list(n) for i, n in group.needs().items()} == {1: [0], 2: [0, 1], 3: [0, 1]}
    # what they keep on deletion (a table, a bucket: the CDK retains them) stays, unless --include-data
    assert not any(step.data for step in auto.flat_steps(planner.destroy_plan(env, include_data=False).steps))
    everything = auto.flat_steps(planner.destroy_plan(env, include_data=True).steps)
    assert {step.stack: step.data for step in everything} == {  # type: ignore[attr-defined]
        "CarRentalSearchStack": True,
        "CarRentalNotificationsStack": True,
        "CarRentalApiStack": False,
        "CarRentalFargateStack": False,
        "CarRentalRegistryStack": True,
        "CarRentalDataStack": True,
        "CarRentalAuthStack": True,
    }


def test_a_run_goes_back_with_its_own_stacks_after_the_platforms(own: Config) -> None:
    env = own.environment("sandbox")
    run = ["lambda:login_handler", "stack:search", "app", "stack:notifications", "stack:data", "stack:api"]
    order = sorted(run, key=lambda component: rollback.undo_order(component, env))
    assert order == ["stack:data", "stack:api", "stack:notifications", "stack:search", "lambda:login_handler", "app"]


def test_one_stack_of_the_teams_own_is_deleted_alone_before_it_leaves_the_app(own: Config) -> None:
    env = own.environment("sandbox")
    plan = planner.destroy_one_plan(env, "notifications", include_data=False)
    [step] = plan.steps
    assert (step.stack, step.data, step.alone) == ("CarRentalNotificationsStack", False, True)  # type: ignore[attr-defined]
    assert plan.removes == ("stack:notifications",)  # it leaves the live record
    hosts = {"health_handler": "notifications", "login_handler": "api"}  # with the functions it holds
    held = planner.destroy_one_plan(env, "notifications", include_data=False, hosts=hosts)
    assert held.removes == ("stack:notifications", "lambda:health_handler")
    whole = planner.destroy_plan(env, include_data=False, components=changes.components_of(own), hosts=hosts)
    assert {"lambda:health_handler", "lambda:login_handler", "stack:notifications"} <= set(whole.removes)
    assert planner.destroy_one_plan(env, "search", include_data=True).steps[0].data  # type: ignore[attr-defined]
    with pytest.raises(UsageError) as refused:
        planner.destroy_one_plan(env, "fargate", include_data=False)
    assert "'fargate' is a stack of the platform of environment 'sandbox'" in refused.value.message
    assert refused.value.next_step == "the platform's stacks go together: inv destroy [--include-data]"
    with pytest.raises(UsageError, match=r"'nope' is no stack role .*\(notifications, search\)"):
        planner.destroy_one_plan(env, "nope", include_data=False)


def test_several_stacks_of_the_teams_own_are_deleted_together_importers_first(own: Config) -> None:
    env = own.environment("sandbox")
    plan = planner.destroy_one_plan(env, "notifications, search", include_data=False)
    [group] = plan.steps
    assert isinstance(group, StacksByImports) and group.own_until == 2
    both = ("CarRentalSearchStack", "CarRentalNotificationsStack")  # deploy.toml's order reversed
    assert [(step.stack, step.alone, step.beside) for step in group.steps] == [  # type: ignore[attr-defined]
        (both[0], True, both),
        (both[1], True, both),
    ]
    assert {i: list(n) for i, n in group.needs().items()} == {1: [0]}  # until their imports are read
    assert plan.removes == ("stack:search", "stack:notifications")
    with pytest.raises(UsageError, match=r"'api' is a stack of the platform"):
        planner.destroy_one_plan(env, "search,api", include_data=False)
