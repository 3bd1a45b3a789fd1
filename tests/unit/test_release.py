"""The release command ([release]): where the plans put it, what it asks ECS for, how deploy.toml is checked."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from deploykit import auto, planner
from deploykit.config import Config, ReleaseCommand, load_config, parse_config
from deploykit.errors import ConfigError
from deploykit.git import current_revision
from deploykit.oneoff import Ended, run_task_arguments
from deploykit.plan import Plan
from deploykit.release import Release
from tests.unit.test_auto_plan import INPUTS, change_set, shape
from tests.unit.test_config import raw
from tests.unit.test_stack_plans import names, with_lambdas  # noqa: F401 - a fixture

COMMAND = ("python", "-m", "app.release")


def with_release(config: Config) -> Config:
    return dataclasses.replace(config, release=ReleaseCommand(COMMAND, 120))


def releases(plan: Plan) -> list[Release]:
    return [step for step in auto.flat_steps(plan.steps) if isinstance(step, Release)]


def test_the_app_chain_runs_the_release_command_between_register_taskdef_and_roll_service(project: Path) -> None:
    config = load_config(project / "deploy.toml")
    env, revision = config.environment("sandbox"), current_revision(project)
    stages = ("register-taskdef", "roll-service", "wait-healthy")
    plain = planner.app_chain_plan(config, env, revision, stages, repository_uri="127.0.0.1:5000/car-rental-backend")
    assert [s.name for s in plain.steps] == list(stages)  # none without [release]
    plan = planner.app_chain_plan(
        with_release(config), env, revision, stages, repository_uri="127.0.0.1:5000/car-rental-backend"
    )
    assert [s.name for s in plan.steps] == ["register-taskdef", "release", "roll-service", "wait-healthy"]
    (release,) = releases(plan)
    assert (release.tag, release.repository, release.command, release.timeout) == (
        revision.tag,
        "127.0.0.1:5000/car-rental-backend",
        COMMAND,
        120,
    )
    assert release.git_sha == revision.sha and not release.by_stack  # the service must be there
    assert release.poll == env.poll_seconds
    # a chain that does not roll the service runs no release command
    built = planner.app_chain_plan(with_release(config), env, revision, ("register-taskdef",), repository_uri="r")
    assert releases(built) == []


def test_a_new_image_through_the_fargate_stack_runs_its_release_command_first(with_lambdas: Path) -> None:  # noqa: F811
    config = with_release(load_config(with_lambdas / "deploy.toml"))
    env, revision = config.environment("sandbox"), current_revision(with_lambdas)
    full = planner.full_plan(config, env, revision, repository_uri="")
    # beside the API stack, the release command then the Fargate stack (one Sequence)
    assert names(full.steps[2]) == ["CarRentalApiStack", "fargate:release,deploy-stack"]
    (release,) = releases(full)
    assert release.tag == revision.tag and release.by_stack and release.repository == ""
    assert not (release.created_after or release.after_creation)
    # an environment's first deploy: the stack may create the service, and the command then runs after it
    first = planner.full_plan(config, env, revision, repository_uri="", first_deploy=True)
    assert names(first.steps[2]) == ["CarRentalApiStack", "fargate:release,deploy-stack,release"]
    before, after = releases(first)
    assert before.created_after and not before.after_creation and before.by_stack
    assert after.after_creation and after.by_stack and (after.tag, after.git_sha) == (revision.tag, release.git_sha)
    # without a release command, nothing either side
    plain = load_config(with_lambdas / "deploy.toml")
    assert releases(planner.full_plan(plain, env, revision, repository_uri="", first_deploy=True)) == []

    # deploy.auto: the app and the Fargate stack changed: the release command before the stack; the app chain's own
    # after it finds the image live and is skipped then
    both = auto.auto_plan(
        config,
        env,
        revision,
        change_set(("backend/app/routes.py", "app"), ("cdk/stacks/fargate_stack.py", "stack:fargate")),
        INPUTS,
    )
    steps = shape(both, env)
    assert steps.index(("release", "car-rental-service")) < steps.index(("deploy-stack", "CarRentalFargateStack"))
    assert [r.by_stack for r in releases(both)] == [True, False]
    # only the stack changed: the image live stays, no release command
    stack_only = auto.auto_plan(
        config, env, revision, change_set(("cdk/stacks/fargate_stack.py", "stack:fargate")), INPUTS
    )
    assert releases(stack_only) == []


def test_deploy_stack_runs_the_release_command_only_for_an_image_it_is_given(with_lambdas: Path) -> None:  # noqa: F811
    config = with_release(load_config(with_lambdas / "deploy.toml"))
    env = config.environment("sandbox")

    def plan(stack: str, new_image: bool, first: bool = False) -> list[str]:
        made = planner.deploy_stack_plan(
            config, env, stack, image_tag="abc", code_keys={}, new_image=new_image, first=first
        )
        return [s.name for s in made.steps]

    assert plan("CarRentalFargateStack", True) == ["synth", "release", "deploy-stack", "smoke"]
    assert plan("CarRentalFargateStack", False) == ["synth", "deploy-stack", "smoke"]
    assert plan("CarRentalDataStack", True) == ["synth", "deploy-stack", "smoke"]
    # the Fargate stack not deployed yet: it creates the service, the command runs after it too
    assert plan("CarRentalFargateStack", True, first=True) == ["synth", "release", "deploy-stack", "release", "smoke"]
    assert plan("CarRentalFargateStack", False, first=True) == ["synth", "deploy-stack", "smoke"]


def test_the_release_task_runs_where_and_as_the_service_runs_its_tasks() -> None:
    network = {
        "awsvpcConfiguration": {"subnets": ["subnet-1"], "securityGroups": ["sg-1"], "assignPublicIp": "DISABLED"}
    }
    service = {"networkConfiguration": network, "launchType": "FARGATE", "platformVersion": "1.4.0"}
    arguments = run_task_arguments(service, "cluster", "family:7", "backend", COMMAND, "deploykit-release")
    assert arguments == {
        "cluster": "cluster",
        "taskDefinition": "family:7",
        "count": 1,
        "startedBy": "deploykit-release",
        "overrides": {"containerOverrides": [{"name": "backend", "command": list(COMMAND)}]},
        "networkConfiguration": network,
        "launchType": "FARGATE",
        "platformVersion": "1.4.0",
    }
    # capacity providers (Fargate Spot) instead of a launch type; LATEST is what ECS picks anyway
    strategy = [{"capacityProvider": "FARGATE_SPOT", "weight": 1}]
    spot = run_task_arguments(
        {"capacityProviderStrategy": strategy, "launchType": "", "platformVersion": "LATEST"},
        "c",
        "f:1",
        "b",
        COMMAND,
        "deploykit-run",
    )
    assert spot["capacityProviderStrategy"] == strategy
    assert "launchType" not in spot and "platformVersion" not in spot and "networkConfiguration" not in spot


def test_how_a_one_off_task_ended_is_its_container_s_exit_code() -> None:
    task = {"containers": [{"name": "sidecar", "exitCode": 0}, {"name": "backend", "exitCode": 3}]}
    assert Ended(task, "backend").exit_code == 3 and not Ended(task, "backend").ok
    assert Ended(task, "backend").what() == "exited with code 3 after 0.0s"
    never = {"containers": [{"name": "backend"}], "stoppedReason": "CannotPullContainerError: denied"}
    assert Ended(never, "backend").exit_code is None  # it never ran
    assert Ended(never, "backend").what() == "did not run: CannotPullContainerError: denied"
    assert Ended({}, "backend", deadline=30).what() == "did not end within 30s and was stopped"
    assert Ended({"containers": [{"name": "backend", "exitCode": 0}]}, "backend").ok


def test_the_release_table_is_checked(tmp_path: Path) -> None:
    base = raw()
    config = parse_config({**base, "release": {"command": list(COMMAND), "timeout": 60}}, tmp_path / "deploy.toml")
    assert config.release == ReleaseCommand(COMMAND, 60.0) and config.release.on
    assert not parse_config(base, tmp_path / "deploy.toml").release.on  # none by default
    for release, problem in (
        ({"command": "python -m app.release"}, "'release.command' must be a list of strings"),
        ({"command": ["", "x"]}, "release.command starts with an empty string"),
        ({"command": list(COMMAND), "timeout": 0}, "release.timeout must be more than 0 seconds"),
        ({"comand": list(COMMAND)}, "unknown key 'release.comand' (did you mean 'command'?)"),
    ):
        with pytest.raises(ConfigError, match=re.escape(problem)):
            parse_config({**base, "release": release}, tmp_path / "deploy.toml")


def test_a_long_command_is_cut_in_what_people_read() -> None:
    def step(*command: str) -> Release:
        return Release("c", "s", "backend", "abc", command, 60, 1)

    assert step(*COMMAND).shown == "python -m app.release"
    assert step("sh", "-c", "echo 'it works'").shown == "sh -c 'echo '\"'\"'it works'\"'\"''"
    long = step("python", "-c", "x" * 100)
    assert len(long.shown) == 60 and long.shown.endswith("…") and long.shown in long.describe()
