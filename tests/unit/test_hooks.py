"""Every hookspec has a test (after datasette's): who calls it, with what, and what a failing plugin does.

Also: every hookspec is documented in the README with its exact signature.
"""

from __future__ import annotations

import inspect
import io
import re
from typing import Any
from unittest.mock import Mock

import pytest

from deploykit import hookspecs, stack_chain
from deploykit.checks import Check, CheckResult
from deploykit.clock import FakeClock
from deploykit.commands import Runtime, load_plugins
from deploykit.config import Config
from deploykit.endpoints import override_keys
from deploykit.errors import ConfigError, StepFailed, Superseded, UsageError
from deploykit.hookspecs import hookimpl
from deploykit.output import Reporter
from deploykit.plan import Context, Executor, Outcome, Plan, Step
from deploykit.plugins import Plugins, get_plugin_manager, refusal_text, review_stack_changes
from deploykit.smoke import Smoke, registered_checks
from deploykit.stacks import Change, PropertyChange
from deploykit.testing import fake_factory, run_check, sample_env
from tests.conftest import REPO, aws_client

HOOKS = sorted(name for name in dir(hookspecs) if name.startswith("deploykit_"))


class Recorder:
    """A plugin that records every hook call."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []

    @hookimpl
    def deploykit_configure(self, config: Config) -> None:
        self.calls.append(("configure", {"config": config}))

    @hookimpl
    def deploykit_deployment_started(self, env: str, plan: dict[str, Any]) -> None:
        self.calls.append(("started", {"env": env, "plan": plan}))

    @hookimpl
    def deploykit_step_finished(
        self, env: str, step: str, status: str, seconds: float, detail: str, refused: bool
    ) -> None:
        said = {"step": step, "status": status, "seconds": seconds, "detail": detail}
        self.calls.append(("step", said | ({"refused": True} if refused else {})))

    @hookimpl
    def deploykit_deployment_finished(self, env: str, report: dict[str, Any]) -> None:
        self.calls.append(("finished", {"env": env, "ok": report["ok"]}))

    @hookimpl
    def deploykit_deployment_failed(self, env: str, report: dict[str, Any], error: str) -> None:
        self.calls.append(("failed", {"env": env, "ok": report["ok"], "error": error}))


class Work(Step):
    name = "work"

    def __init__(self, fail: bool = False, refuse: bool = False) -> None:
        object.__setattr__(self, "fail", fail)
        object.__setattr__(self, "refuse", refuse)

    def describe(self) -> str:
        return "work"

    def run(self, ctx: Context) -> Outcome:
        ctx.clock.sleep(1.5)
        if self.fail:  # type: ignore[attr-defined]
            raise StepFailed("the work failed", next_step="fix it")
        if self.refuse:  # type: ignore[attr-defined]
            raise UsageError("the work would delete the table", next_step="keep it")
        return Outcome.done("worked")

    def inputs(self) -> dict[str, Any]:
        return {}


def manager_with(*plugins: tuple[str, object]) -> Plugins:
    return get_plugin_manager(entry_points=[], extra=plugins, environ={})


def context(plugins: Plugins, out: io.StringIO | None = None) -> Context:
    clock = FakeClock()
    reporter = Reporter(out or io.StringIO(), tty=False, clock=clock)
    return Context(Mock(spec=Config, plugins={}), sample_env(), fake_factory(), clock, reporter, Mock(), plugins)


def test_the_hookspecs_are_the_documented_ten() -> None:
    assert HOOKS == [
        "deploykit_configure",
        "deploykit_deployment_failed",
        "deploykit_deployment_finished",
        "deploykit_deployment_not_run",
        "deploykit_deployment_started",
        "deploykit_freeze_changed",
        "deploykit_register_checks",
        "deploykit_review_stack_changes",
        "deploykit_smoke_finished",
        "deploykit_step_finished",
    ]


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hookspec_is_in_the_readme_with_its_signature(hook: str) -> None:
    readme = (REPO / "README.md").read_text()
    signature = str(inspect.signature(getattr(hookspecs, hook))).replace("'", "")
    documented = re.findall(rf"^def {hook}(\(.*\)(?: -> [^:]+)?):", readme, flags=re.MULTILINE)
    assert documented, f"README documents no `def {hook}(...)`"
    assert documented[0] == signature, f"README has {hook}{documented[0]}, the hookspec is {hook}{signature}"


def test_the_guides_complete_plugin_is_the_sample_plugin_the_tests_install_and_run() -> None:
    """The README's `team_checks.py` is tests/sample_plugin's, from its imports on (its output is what that code
    prints): what a plugin author copies is what the suite runs."""
    readme = (REPO / "README.md").read_text()
    shown = re.search(r"```python\n# team_checks.py\n(.*?)```\n", readme, flags=re.DOTALL)
    assert shown is not None
    sample = (REPO / "tests" / "sample_plugin" / "team_checks.py").read_text()
    assert shown.group(1) == sample[sample.index("from typing import Any") :]


def test_configure_is_called_once_with_the_loaded_config() -> None:
    recorder = Recorder()
    config = Mock(spec=Config, plugins={})
    runtime = Runtime(stderr=io.StringIO(), plugins_factory=lambda: manager_with(("recorder", recorder)))
    load_plugins(runtime, config)
    assert recorder.calls == [("configure", {"config": config})]


class Configured:
    """A plugin whose deploykit_configure raises ``error``."""

    def __init__(self, error: Exception) -> None:
        self.error = error

    @hookimpl
    def deploykit_configure(self, config: Any) -> None:
        raise self.error


def test_a_settings_error_of_a_plugin_names_the_plugin_and_its_table() -> None:
    config = Mock(spec=Config, plugins={}, path=REPO / "deploy.toml")
    runtime = Runtime(stderr=io.StringIO(), plugins_factory=lambda: manager_with(("team", Configured(error))))
    error = ConfigError("min_cars must be a number")
    with pytest.raises(ConfigError) as refused:
        load_plugins(runtime, config)
    assert refused.value.exit_code == 2
    assert (
        refused.value.message == f"plugin 'team': [plugins.team] of {REPO / 'deploy.toml'}: min_cars must be a number"
    )
    assert refused.value.next_step == "fix [plugins.team] in deploy.toml"
    error = ConfigError(f"{REPO / 'deploy.toml'}: [plugins.team] has unknown keys ['x']", next_step="use only y")
    with pytest.raises(ConfigError) as refused:  # it named its table itself: not twice
        load_plugins(runtime, config)
    assert refused.value.message == f"plugin 'team': {REPO / 'deploy.toml'}: [plugins.team] has unknown keys ['x']"
    assert refused.value.next_step == "use only y"


def test_a_plugin_that_raises_in_configure_is_bad_input_naming_it_not_a_traceback() -> None:
    plugins = manager_with(("team", Configured(KeyError("min_cars"))))
    runtime = Runtime(stderr=io.StringIO(), plugins_factory=lambda: plugins)
    with pytest.raises(UsageError) as refused:
        load_plugins(runtime, Mock(spec=Config, plugins={}, path=REPO / "deploy.toml"))
    assert refused.value.message == "plugin 'team' failed in deploykit_configure: KeyError: 'min_cars'"
    assert refused.value.next_step.endswith("or block it: DEPLOYKIT_BLOCK_PLUGINS=team")


def test_the_testing_helper_runs_a_check_alone_whatever_it_needs(check_context: Any) -> None:
    """A plugin's test registers its plugin alone: a check needing the built-in alb would only ever be skipped
    ("needs alb (not run)") if run_check applied its needs."""
    check = Check("mine", lambda ctx: CheckResult.passed("mine", "ok"), needs=("alb",))
    assert run_check(check, check_context).status == "passed"


def test_register_checks_gets_the_environment_and_its_checks_run_in_plugin_order() -> None:
    seen: list[str] = []

    def plugin(name: str) -> object:
        class Plugin:
            @hookimpl
            def deploykit_register_checks(self, env: Any) -> list[Check]:
                seen.append(env.name)
                return [Check(name, lambda ctx: CheckResult.passed(name))]

        return Plugin()

    plugins = manager_with(("b_plugin", plugin("second")), ("a_plugin", plugin("first")))
    checks = registered_checks(plugins, sample_env())
    assert [c.name for c in checks] == ["second", "first"]  # the order plugins were registered in
    assert seen == ["test", "test"]


def test_a_successful_deployment_calls_started_each_step_and_finished() -> None:
    recorder = Recorder()
    executor = Executor(context(manager_with(("recorder", recorder))))
    report = executor.execute(Plan("test", (Work(), Work()), "demo"))
    assert report.ok
    kinds = [kind for kind, _ in recorder.calls]
    assert kinds == ["started", "step", "step", "finished"]
    started = recorder.calls[0][1]
    assert started["env"] == "test" and [s["step"] for s in started["plan"]["steps"]] == ["work", "work"]
    assert recorder.calls[1][1] == {"step": "work", "status": "done", "seconds": 1.5, "detail": "worked"}
    assert recorder.calls[-1][1] == {"env": "test", "ok": True}


def test_a_failed_deployment_calls_failed_with_the_error_and_the_next_step() -> None:
    recorder = Recorder()
    executor = Executor(context(manager_with(("recorder", recorder))))
    report = executor.execute(Plan("test", (Work(fail=True), Work()), "demo"))
    assert not report.ok
    assert [kind for kind, _ in recorder.calls] == ["started", "step", "failed"]
    assert recorder.calls[1][1]["status"] == "failed" and "refused" not in recorder.calls[1][1]
    failed = recorder.calls[-1][1]
    assert failed["ok"] is False and "the work failed" in failed["error"] and "fix it" in failed["error"]
    # a guard's refusal: failed too, and said to be a refusal
    recorder = Recorder()
    Executor(context(manager_with(("recorder", recorder)))).execute(Plan("test", (Work(refuse=True),), "demo"))
    assert recorder.calls[1][1] == {
        "step": "work",
        "status": "failed",
        "seconds": 1.5,
        "detail": "the work would delete the table",
        "refused": True,
    }


class Build(Work):
    """A step that only makes an artifact: the run's gate comes after it."""

    name = "build"
    artifacts_only = True


def test_behind_a_gate_plugins_hear_of_the_run_once_it_is_passed_and_not_at_all_when_it_stops_there() -> None:
    """A run whose plan is stale by its gate (another deploy finished before its lock) stops there and starts again:
    the plugins (a chat) hear of the run that goes on only, in order, with the steps before the gate."""
    for passes in (True, False):
        recorder = Recorder()
        ctx = context(manager_with(("recorder", recorder)))

        def gate(passes: bool = passes) -> None:
            if not passes:
                raise Superseded("what is live changed", next_step="rerun")

        ctx.gate = gate
        report = Executor(ctx).execute(Plan("test", (Build(), Work()), "demo"))
        kinds = [kind for kind, _ in recorder.calls]
        if passes:
            assert report.ok and kinds == ["started", "step", "step", "finished"]
            assert [c[1]["step"] for c in recorder.calls[1:3]] == ["build", "work"]
        else:
            assert isinstance(report.error, Superseded) and kinds == []

    recorder = Recorder()  # failing before the gate: told whole, as any failed run
    ctx = context(manager_with(("recorder", recorder)))
    ctx.gate = lambda: None
    Executor(ctx).execute(Plan("test", (Build(fail=True), Work()), "demo"))
    assert [kind for kind, _ in recorder.calls] == ["started", "step", "failed"]


def test_an_observer_that_raises_is_named_and_never_fails_the_deployment() -> None:
    class Broken:
        @hookimpl
        def deploykit_step_finished(self, step: str) -> None:  # a plugin may take only the arguments it needs
            raise ConnectionError("chat is down")

    recorder, out = Recorder(), io.StringIO()
    executor = Executor(context(manager_with(("chat", Broken()), ("recorder", recorder)), out))
    report = executor.execute(Plan("test", (Work(),), "demo"))
    assert report.ok
    assert "plugin 'chat' failed in deploykit_step_finished: ConnectionError: chat is down" in out.getvalue()
    assert [kind for kind, _ in recorder.calls] == ["started", "step", "finished"]  # the others still heard


def test_the_smoke_step_fails_the_plan_with_each_failed_check_and_the_rerun_command() -> None:
    class Checks:
        @hookimpl
        def deploykit_register_checks(self, env: Any) -> list[Check]:
            return [
                Check("up", lambda ctx: CheckResult.passed("up", "fine")),
                Check("down", lambda ctx: CheckResult.failed("down", "GET /x → 502 (expected 200)")),
            ]

    ctx = context(manager_with(("checks", Checks())))
    cfn = aws_client("cloudformation")
    cfn.describe_stacks.side_effect = lambda StackName: {
        "Stacks": [{"StackName": StackName, "StackStatus": "CREATE_COMPLETE", "Outputs": []}]
    }
    ctx.aws.client.return_value = cfn  # type: ignore[attr-defined]
    # every endpoint comes from an override here, so the stacks' (empty) outputs are enough
    ctx.env = sample_env(endpoints={key: "x" for key in override_keys()})
    with pytest.raises(StepFailed) as failed:
        Smoke().run(ctx)
    assert "smoke failed (1 passed, 1 failed): down: GET /x → 502 (expected 200)" in failed.value.message
    assert failed.value.next_step is not None and "inv smoke --env test --only down" in failed.value.next_step


TABLE_REPLACED = {
    "logical_id": "CarsTable",
    "type": "AWS::DynamoDB::Table",
    "action": "Modify",
    "replacement": "True",
    "access": False,
    "details": [{"property": "KeySchema[0].AttributeName", "before": "car_id", "after": "car_uid"}],
}


class NoKeyChanges:
    """A team's rule: a table's key never changes (not even with --allow-replace)."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str, int]] = []

    @hookimpl
    def deploykit_review_stack_changes(self, env: Any, stack: str, changes: list[dict[str, Any]]) -> list[str]:
        self.seen.append((env.name, stack, len(changes)))
        return [
            f"{c['logical_id']}: {d['property']} would change ({d['before']} → {d['after']})"
            for c in changes
            for d in c["details"]
            if c["type"] == "AWS::DynamoDB::Table" and d["property"].startswith("KeySchema")
        ]


class OnlyChanges:
    @hookimpl
    def deploykit_review_stack_changes(self, changes: list[dict[str, Any]]) -> list[str]:  # a subset of the args
        return [] if len(changes) < 2 else ["two changes at once"]


class Broken:
    @hookimpl
    def deploykit_review_stack_changes(self, stack: str) -> list[str]:
        raise KeyError("team-rules.yaml")


class Wrong:
    @hookimpl
    def deploykit_review_stack_changes(self, stack: str) -> str:
        return "no"


def test_review_stack_changes_gets_each_plugins_reasons_and_a_failing_one_refuses() -> None:
    rule = NoKeyChanges()
    plugins = manager_with(("keys", rule), ("pairs", OnlyChanges()), ("broken", Broken()), ("wrong", Wrong()))
    env = sample_env()
    refused = review_stack_changes(plugins, env, "DataStack", [TABLE_REPLACED])
    assert refused == {
        "keys": ["CarsTable: KeySchema[0].AttributeName would change (car_id → car_uid)"],
        "broken": ["the review failed: KeyError: 'team-rules.yaml'"],  # a rule that cannot be checked refuses
        "wrong": ["the review returned str, not a list of reasons"],
    }
    assert rule.seen == [(env.name, "DataStack", 1)]
    assert review_stack_changes(manager_with(("keys", NoKeyChanges())), env, "DataStack", []) == {}
    assert review_stack_changes(None, env, "DataStack", [TABLE_REPLACED]) == {}  # no plugins loaded
    assert refusal_text(refused) == (
        "broken: the review failed: KeyError: 'team-rules.yaml'; keys: CarsTable: KeySchema[0].AttributeName would "
        "change (car_id → car_uid); wrong: the review returned str, not a list of reasons"
    )


class Tidying:
    """A plugin that "normalises" the changes it is given, in place, and refuses nothing."""

    @hookimpl
    def deploykit_review_stack_changes(self, changes: list[dict[str, Any]]) -> list[str]:
        for change in changes:
            change["details"][:] = [d for d in change["details"] if not d["property"].startswith("KeySchema")]
        return []


def test_a_plugin_that_changes_the_changes_it_reviews_changes_them_for_no_other_rule() -> None:
    """A plugin trimming a change's details in place hid a table's key change from the team's rule asked after it
    (each had a copy of the change, sharing its list of details), and from the caller."""
    changes = [TABLE_REPLACED]
    before = repr(changes)
    # the last registered is asked first: the tidying one, then the rule
    refused = review_stack_changes(
        manager_with(("keys", NoKeyChanges()), ("tidy", Tidying())), sample_env(), "S", changes
    )
    assert list(refused) == ["keys"]
    assert repr(changes) == before


def test_a_stack_deploy_asks_the_plugins_before_its_change_set_runs() -> None:
    """The deploy step hands the plugins the change set's changes as inv diff --json lists them."""
    rule = NoKeyChanges()
    ctx = context(manager_with(("keys", rule)))
    change = Change(
        "CarsTable",
        "AWS::DynamoDB::Table",
        "Modify",
        "True",
        details=(PropertyChange("KeySchema", "/Properties/KeySchema/0/AttributeName", before="car_id", after="x"),),
    )
    assert stack_chain.review(ctx, "DataStack", [change]) == {
        "keys": ["CarsTable: KeySchema[0].AttributeName would change (car_id → x)"]
    }
    assert rule.seen == [(ctx.env.name, "DataStack", 1)]
