"""The pause's pure parts: what its object says, when it holds, where a deploy's plan puts the wake."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from deploykit.app_chain import RollService, WaitHealthy
from deploykit.config import EnvConfig, load_config
from deploykit.pause import Pause, WakeService, in_force, may_wake, pause_plan, resume_plan, woken
from deploykit.plan import Outcome, Parallel, Plan, Sequence, Step
from deploykit.smoke import Smoke

SINCE = datetime(2026, 12, 1, 19, 0, tzinfo=UTC)
PAUSE = Pause(2, "ana@laptop", "nights", SINCE)


@pytest.fixture
def dev_env(project: Path) -> EnvConfig:
    return load_config(project / "deploy.toml").environment("dev")


class Noop(Step):
    name = "noop"

    def describe(self) -> str:
        return "nothing"

    def run(self, ctx: object) -> Outcome:
        return Outcome.done()

    def inputs(self) -> dict[str, object]:
        return {}


def test_the_object_round_trips_and_says_who_why_and_since() -> None:
    assert Pause.from_json(PAUSE.to_json()) == PAUSE
    assert PAUSE.describe("dev") == "dev is paused by ana@laptop since 2026-12-01T19:00:00Z: nights"
    assert Pause(1, "ci", "", SINCE).describe("dev") == "dev is paused by ci since 2026-12-01T19:00:00Z"
    assert (PAUSE.tasks, Pause(1, "ci", "", SINCE).tasks) == ("2 tasks", "1 task")


@pytest.mark.parametrize("count", [None, "x", 0, -3])
def test_a_count_that_cannot_be_read_comes_back_as_one_task_which_serves(count: object) -> None:
    assert Pause.from_json({"count": count, "owner": "ci", "since": "2026-12-01T19:00:00+00:00"}).count == 1


def test_it_holds_only_while_the_service_wants_no_task() -> None:
    assert in_force(PAUSE, 0) is PAUSE
    assert in_force(PAUSE, 1) is None  # scaled up since: a stack update, a person
    assert in_force(PAUSE, None) is None  # no service
    assert in_force(None, 0) is None  # at 0 by other means: not deploykit's pause


def rollout(env: EnvConfig) -> tuple[Step, ...]:
    image = "repo:new"
    return (
        RollService(env.cluster, env.service, env.container, image),
        WaitHealthy(env.cluster, env.service, env.container, image, 60.0, 1.0),
    )


def test_a_deploy_is_woken_first_and_its_own_rollout_waits_for_the_tasks(dev_env: EnvConfig) -> None:
    plan = Plan("dev", (Noop(), Sequence("app", rollout(dev_env)), Smoke()), deploys=(("app", "a" * 12),))
    found = woken(plan, PAUSE, dev_env)
    wake = found.steps[0]
    assert isinstance(wake, WakeService) and found.steps[1:] == plan.steps
    assert (wake.count, wake.wait, wake.service) == (2, False, dev_env.service)
    assert "the rollout that follows waits for them" in wake.describe()
    assert woken(found, PAUSE, dev_env) is found and not may_wake(found)  # once


def test_a_deploy_without_a_rollout_of_the_app_waits_in_its_wake(dev_env: EnvConfig) -> None:
    plan = Plan("dev", (Parallel((Noop(), Noop())), Smoke()), deploys=(("lambda:login_handler", "a" * 12),))
    wake = woken(plan, PAUSE, dev_env).steps[0]
    assert isinstance(wake, WakeService) and wake.wait
    assert wake.describe().endswith(
        "(dev is paused by ana@laptop since 2026-12-01T19:00:00Z: nights); wait until they serve"
    )


def test_nothing_is_woken_when_not_paused_or_when_the_plan_deploys_nothing(dev_env: EnvConfig) -> None:
    deploy = Plan("dev", (Noop(),), deploys=(("app", "a" * 12),))
    assert woken(deploy, None, dev_env) is deploy
    restart = Plan("dev", (Noop(),), "restart app", restarts=(("app", "a" * 12),))
    assert woken(restart, PAUSE, dev_env) is restart and not may_wake(restart)


def test_pause_and_resume_plans_are_recorded_at_the_commit_the_service_runs(dev_env: EnvConfig) -> None:
    paused = pause_plan(dev_env, "c" * 12, "ana@laptop", "nights")
    assert ([s.name for s in paused.steps], paused.restarts, paused.deploys) == (["pause"], (("app", "c" * 12),), ())
    resumed = resume_plan(dev_env, PAUSE, "c" * 12)
    assert [s.name for s in resumed.steps] == ["wake", "smoke"] and resumed.title == "resume app"
    assert [s.name for s in resume_plan(dev_env, PAUSE, "c" * 12, smoke=False).steps] == ["wake"]


def test_the_scaling_range_a_pause_keeps_round_trips_and_a_bad_one_is_none() -> None:
    scaled = Pause(2, "ana@laptop", "nights", SINCE, (2, 6))
    assert scaled.to_json()["scaling"] == {"min": 2, "max": 6} and Pause.from_json(scaled.to_json()) == scaled
    assert PAUSE.to_json()["scaling"] is None
    for bad in ({"min": 3, "max": 1}, {"min": -1, "max": 2}, {"min": "x", "max": 2}, {"max": 2}, [1, 2]):
        assert Pause.from_json({**PAUSE.to_json(), "scaling": bad}).scaling is None


def test_a_wake_sets_the_scaling_range_back_first(dev_env: EnvConfig) -> None:
    scaled = Pause(2, "ana@laptop", "nights", SINCE, (2, 6))
    plan = Plan("dev", (Noop(),), deploys=(("lambda:login_handler", "a" * 12),))
    wake = woken(plan, scaled, dev_env).steps[0]
    assert isinstance(wake, WakeService) and wake.scaling == (2, 6) and wake.inputs()["scaling"] == [2, 6]
