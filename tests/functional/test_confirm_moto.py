"""An environment that asks first (confirm = true): a plan that changes it runs once someone said yes, on the
terminal or by --yes / $DEPLOYKIT_YES=1; declined, or no one to ask, refused before the lock, nothing changed."""

from __future__ import annotations

import dataclasses
import io
from pathlib import Path

import pytest

from deploykit import commands
from deploykit.clock import FakeClock
from deploykit.config import load_config
from deploykit.errors import UsageError
from deploykit.plan import Plan
from tests.functional.test_lock_moto import Probe, stored


@pytest.fixture
def asking(project: Path) -> Path:
    """The test project with its dev environment asking first."""
    toml = project / "deploy.toml"
    toml.write_text(toml.read_text().replace("[environments.dev]\n", "[environments.dev]\nconfirm = true\n", 1))
    assert load_config(toml).environment("dev").confirm
    return project


def run(project: Path, plan: Plan, answers: list[bool | None], *, yes: bool = False) -> tuple[list[str], str]:
    """run_plan with ``answers`` given to the questions it asks, in turn; the questions and what it said."""
    asked: list[str] = []

    def ask(question: str) -> bool | None:
        asked.append(question)
        return answers.pop(0)

    runtime = commands.Runtime(
        config_path=project / "deploy.toml", stdout=io.StringIO(), stderr=io.StringIO(), clock=FakeClock()
    )
    runtime = dataclasses.replace(runtime, ask=ask, assume_yes=yes)
    config = load_config(project / "deploy.toml")
    try:
        commands.run_plan(runtime, config, config.environment("dev"), plan, dry_run=False, as_json=False)
    finally:
        said = runtime.stderr.getvalue()  # type: ignore[attr-defined]
    return asked, said


def deploying(probe: Probe, title: str = "deploy.auto") -> Plan:
    commits = (("1f75bd3b539f" + "0" * 28, "ana", "Login: v2"), ("b8b21770ae3f" + "0" * 28, "bo", "Fleet"))
    return Plan("dev", (probe,), title, deploys=(("lambda:login_handler", "d" * 40),), commits=commits)


def test_a_plan_runs_once_the_person_says_yes_and_the_question_says_what_goes(bucket: str, asking: Path) -> None:
    probe = Probe()
    asked, _ = run(asking, deploying(probe), [True])
    assert asked == [
        "❓ deploy.auto → dev (1 step: lambda:login_handler@dddddddddddd, 2 commits): dev asks first (confirm = true). "
        "Go on? [y/N] "
    ]
    assert len(probe.seen) == 1 and probe.seen[0] is not None  # it ran, holding the lock


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        (False, "deploy.auto → dev (1 step: lambda:login_handler@dddddddddddd, 2 commits) not confirmed"),
        (None, "dev asks before each change (confirm = true in deploy.toml) and there is no terminal to ask on"),
    ],
)
def test_declined_or_no_one_to_ask_is_refused_before_the_lock(
    bucket: str, asking: Path, answer: bool | None, message: str
) -> None:
    probe = Probe()
    with pytest.raises(UsageError) as refused:
        run(asking, deploying(probe), [answer])
    assert refused.value.message.startswith(message) and refused.value.exit_code == 2
    assert "nothing was changed" in refused.value.message
    assert probe.seen == [] and stored() is None  # nothing ran, no lock was taken
    if answer is None:
        assert "--yes (or DEPLOYKIT_YES=1)" in (refused.value.next_step or "")


def test_yes_answers_for_the_person_and_says_so(bucket: str, asking: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    probe = Probe()
    asked, said = run(asking, deploying(probe), [], yes=True)
    assert asked == [] and len(probe.seen) == 1
    assert "✔  deploy.auto → dev (1 step: lambda:login_handler@dddddddddddd, 2 commits): confirmed by --yes" in said
    monkeypatch.setenv(commands.YES_ENV, "1")
    again = Probe()
    asked, _ = run(asking, deploying(again), [])
    assert asked == [] and len(again.seen) == 1


def test_what_changes_nothing_a_destroy_and_an_environment_that_does_not_ask_are_not_asked(
    bucket: str, project: Path, asking: Path
) -> None:
    reading = Probe()
    asked, _ = run(asking, Plan("dev", (reading,), "smoke"), [])  # deploys nothing: no question
    assert asked == [] and len(reading.seen) == 1
    destroying = Probe()
    asked, _ = run(asking, Plan("dev", (destroying,), "destroy", removes=("app",)), [])  # asks on its own
    assert asked == [] and len(destroying.seen) == 1
    restarting = Probe()
    asked, _ = run(asking, Plan("dev", (restarting,), "restart app", restarts=(("app", "a" * 12),)), [True])
    assert asked[0].startswith("❓ restart app → dev (1 step: app): ") and len(restarting.seen) == 1


def test_without_confirm_nothing_is_asked(bucket: str, project: Path) -> None:
    probe = Probe()
    asked, _ = run(project, deploying(probe), [])
    assert asked == [] and len(probe.seen) == 1
