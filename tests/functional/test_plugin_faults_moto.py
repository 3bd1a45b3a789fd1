"""A team's observer plugin that misbehaves during a real app deploy (moto's ECS, ECR, S3): it calls ``sys.exit``, is
cut short by a Ctrl-C, prints, or changes what it was given. The deploy is judged as it would be without it: its
record written, its automatic rollback run, its ``--json`` whole. The release under test never gets healthy (the
``release`` fixture of the automatic rollback's tests), unless a test says otherwise."""

from __future__ import annotations

import dataclasses
import io
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from deploykit import commands, history
from deploykit.app_chain import WaitHealthy
from deploykit.aws import AwsFactory
from deploykit.checks import Check
from deploykit.errors import StepFailed, UsageError
from deploykit.hookspecs import hookimpl
from deploykit.plan import Outcome
from deploykit.plugins import get_plugin_manager
from tests.functional import test_auto_rollback_moto as auto_rollback_tests
from tests.functional import test_rollback_moto as rollback_tests
from tests.functional.test_auto_rollback_moto import STAGES, C
from tests.functional.test_rollback_moto import URI, runtime, service_image

deployed = rollback_tests.deployed  # a service that ran A, then B, and runs C now
release = auto_rollback_tests.release  # HEAD's image pushed; wait-healthy fails for it


class Faulty:
    """An observer whose ``hook`` raises ``raised`` the first time ``when`` holds of what it was told."""

    def __init__(self, hook: str, raised: BaseException, when: Callable[[dict[str, Any]], bool] = lambda _: True):
        self.hook, self.raised, self.when, self.fired = hook, raised, when, 0

    def _told(self, hook: str, **told: Any) -> None:
        if hook == self.hook and self.when(told) and not self.fired:
            self.fired += 1
            raise self.raised

    @hookimpl
    def deploykit_step_finished(self, step: str, status: str) -> None:
        self._told("deploykit_step_finished", step=step, status=status)

    @hookimpl
    def deploykit_deployment_finished(self, report: dict[str, Any]) -> None:
        self._told("deploykit_deployment_finished", report=report)

    @hookimpl
    def deploykit_deployment_failed(self, report: dict[str, Any]) -> None:
        self._told("deploykit_deployment_failed", report=report)


def with_plugins(project: Path, factory: AwsFactory, *plugins: tuple[str, object]) -> commands.Runtime:
    made = runtime(project, factory, io.StringIO(), io.StringIO())
    return dataclasses.replace(
        made, plugins_factory=lambda: get_plugin_manager(entry_points=[], extra=list(plugins), environ={})
    )


@pytest.mark.parametrize(
    ("hook", "raised", "when"),
    [
        ("deploykit_step_finished", SystemExit(3), lambda told: told["step"] == "roll-service"),
        ("deploykit_deployment_failed", SystemExit(3), lambda _: True),
        ("deploykit_deployment_failed", KeyboardInterrupt(), lambda _: True),  # a Ctrl-C during its chat call
    ],
    ids=["exit-after-roll-service", "exit-in-failed", "ctrl-c-in-failed"],
)
def test_a_plugin_that_exits_or_is_interrupted_leaves_the_failed_deploy_recorded_and_rolled_back(
    project: Path,
    factory: AwsFactory,
    deployed: history.History,
    release: str,
    hook: str,
    raised: BaseException,
    when: Callable[[dict[str, Any]], bool],
) -> None:
    """``sys.exit()`` in a hook (or a Ctrl-C while the plugins hear of the failure) escaped the run: no record, no
    automatic rollback, the failed release left serving, the exit code the plugin's."""
    faulty = Faulty(hook, raised, when)
    rt = with_plugins(project, factory, ("team", faulty))
    with pytest.raises(StepFailed) as failed:
        commands.app_chain(STAGES, env="dev", as_json=True, runtime=rt)
    assert faulty.fired == 1
    assert failed.value.exit_code == 1 and "automatic rollback: app ok in" in str(failed.value)
    assert service_image(factory)[1] == f"{URI}:{C}"  # put back
    newest = deployed.records(2)
    assert [(r.command, r.ok) for r in newest] == [("automatic rollback: app", True), (" → ".join(STAGES), False)]
    assert json.loads(rt.stdout.getvalue())["rollback"]["ok"] is True  # type: ignore[attr-defined]
    said = rt.stderr.getvalue()  # type: ignore[attr-defined]
    if isinstance(raised, SystemExit):
        assert f"⚠️  plugin 'team' failed in {hook}: SystemExit: 3\n" in said, said
        assert "→ next: fix the plugin, or block it: DEPLOYKIT_BLOCK_PLUGINS=team" in said
    else:
        assert "⚠️  interrupted while the plugins heard how the run ended (some may not have): the run failed" in said


def test_a_ctrl_c_while_the_plugins_hear_of_a_deploy_that_worked_leaves_it_recorded(
    project: Path, factory: AwsFactory, deployed: history.History, release: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The release gets healthy; a Ctrl-C lands while a plugin posts "deployed" to the chat: the live record still
    names the release (it said C, what the service no longer runs), the run is recorded, --json printed."""
    monkeypatch.setattr(WaitHealthy, "run", lambda self, ctx: Outcome.done("healthy"))
    rt = with_plugins(project, factory, ("team", Faulty("deploykit_deployment_finished", KeyboardInterrupt())))
    commands.app_chain(STAGES, env="dev", as_json=True, runtime=rt)
    assert service_image(factory)[1] == f"{URI}:{release}"
    assert deployed.live()["app"]["sha"] == release
    assert [(r.command, r.ok) for r in deployed.records(1)] == [(" → ".join(STAGES), True)]
    assert json.loads(rt.stdout.getvalue())["ok"] is True  # type: ignore[attr-defined]
    assert "the run worked, and ends as it did" in rt.stderr.getvalue()  # type: ignore[attr-defined]


class Printing:
    """A plugin that prints what it hears (to stdout), and trims the report it is given."""

    @hookimpl
    def deploykit_step_finished(self, step: str) -> None:
        print(f"team-plugin: {step} finished")

    @hookimpl
    def deploykit_deployment_failed(self, report: dict[str, Any]) -> None:
        report["steps"].clear()
        report["ok"] = True


class Listening:
    """A plugin that keeps the reports it hears."""

    def __init__(self) -> None:
        self.heard: list[dict[str, Any]] = []

    @hookimpl
    def deploykit_deployment_failed(self, report: dict[str, Any]) -> None:
        self.heard.append(report)


def test_what_a_plugin_prints_stays_off_json_and_what_it_changes_off_the_others(
    project: Path,
    factory: AwsFactory,
    deployed: history.History,
    release: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A plugin's print went into stdout, ahead of --json (``jq`` failed on it); a plugin that changed the report it
    was given changed it for the plugins told after it (the summary wrote a failed deploy as one that worked)."""
    listening = Listening()
    # pluggy calls the last registered first: "printing" hears before "listening"
    rt = with_plugins(project, factory, ("listening", listening), ("printing", Printing()))
    rt = dataclasses.replace(rt, stdout=sys.stdout)  # the command's --json on the process's stdout
    with pytest.raises(StepFailed):
        commands.app_chain(STAGES, env="dev", as_json=True, runtime=rt)
    printed = capsys.readouterr()
    answer = json.loads(printed.out)  # the report alone
    assert answer["ok"] is False
    assert "team-plugin: roll-service finished" in printed.err
    [heard] = listening.heard
    assert heard["ok"] is False and [s["step"] for s in heard["steps"]][:2] == ["register-taskdef", "roll-service"]


class Unregistering:
    """A team's check plugin whose registration fails (a token it reads is not set in this CI job)."""

    def __init__(self, raised: BaseException) -> None:
        self.raised = raised

    @hookimpl
    def deploykit_register_checks(self) -> list[Check]:
        raise self.raised


@pytest.mark.parametrize(
    "raised", [RuntimeError("TEAM_TOKEN is not set"), SystemExit("TEAM_TOKEN is not set")], ids=["raise", "exit"]
)
def test_a_deploy_whose_plugin_has_no_checks_there_is_refused_before_it_rolls_out(
    project: Path, factory: AwsFactory, deployed: history.History, release: str, raised: BaseException
) -> None:
    """A plugin that failed to load, or to register its checks, made every deploy roll out, fail its smoke on the
    plugin's row, roll back, and fail that smoke too ("dev may run neither version"): refused before the first step
    now, as the checks' other refusals are, exit 2, nothing changed. One that calls sys.exit() escaped raw."""
    rt = with_plugins(project, factory, ("team_checks", Unregistering(raised)))
    records = len(deployed.records(20))
    with pytest.raises(UsageError) as refused:
        commands.app_chain((*STAGES, "smoke"), env="dev", runtime=rt)
    assert refused.value.exit_code == 2
    assert refused.value.message.startswith(
        "the checks of 1 plugin(s) are not there: plugin 'team_checks' failed: deploykit_register_checks raised "
        f"{type(raised).__name__}: TEAM_TOKEN is not set: the smoke at the end of this run would fail on them"
    ), refused.value.message
    assert "DEPLOYKIT_BLOCK_PLUGINS=team_checks" in (refused.value.next_step or "")
    assert service_image(factory)[1] == f"{URI}:{C}"
    [newest] = deployed.records(1)  # the refusal, recorded as one (nothing live changed)
    assert newest.refused and not newest.ok and len(deployed.records(20)) == records + 1
