"""inv deploy.auto --watch: the loop over a real git work tree, with a fake deploy and a clock that edits files."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from deploykit import commands
from deploykit.clock import FakeClock
from deploykit.commands import autodeploy
from deploykit.errors import Interrupted, StepFailed, Superseded, UsageError
from tests.conftest import git

FLEET = "backend/app/fleet.py"


class EditingClock(FakeClock):
    """A clock on whose n-th sleep ``edits[n]`` happens first (the developer saving files meanwhile)."""

    def __init__(self, edits: list[Callable[[], Any]]) -> None:
        super().__init__()
        self.edits = edits

    def sleep(self, seconds: float) -> None:
        if len(self.sleeps) < len(self.edits):
            self.edits[len(self.sleeps)]()
        super().sleep(seconds)


def append(project: Path, path: str, text: str) -> Callable[[], None]:
    def edit() -> None:
        file = project / path
        file.write_text(file.read_text() + text)

    return edit


def nothing() -> None:
    pass


def watch(project: Path, clock: EditingClock, deploy: Callable[[], Any] | None) -> tuple[int, str]:
    """Run the watch until the clock has no edits left: (deploys run, what it printed)."""
    stderr = io.StringIO()
    runtime = commands.Runtime(config_path=project / "deploy.toml", stdout=io.StringIO(), stderr=stderr, clock=clock)
    runs = commands.deploy_watch(
        env="sandbox", runtime=runtime, deploy=deploy, until=lambda: len(clock.sleeps) > len(clock.edits), logs=False
    )
    return runs, stderr.getvalue()


def test_it_deploys_at_once_then_each_change_once_it_has_settled(project: Path) -> None:
    seen: list[str] = []

    def deploy() -> None:  # what the deploy would build from: the file as it is then
        seen.append((project / FLEET).read_text()[-12:])

    clock = EditingClock(
        [
            nothing,  # poll: nothing changed since the first deploy
            append(project, FLEET, "\n# save 1"),  # poll: changed ...
            append(project, FLEET, "\n# save 2"),  # settle: ... and changed again: not yet
            nothing,  # settle: the same for 0.5 s: deployed
            nothing,  # poll: nothing changed
            lambda: git(project, "commit", "-qam", "the saves"),  # a commit is a change too
            nothing,  # settle
            nothing,
        ]
    )
    runs, printed = watch(project, clock, deploy)
    assert runs == 3
    assert seen[1].endswith("# save 2") and seen[2].endswith("# save 2")
    assert clock.sleeps == [1.0, 1.0, 0.5, 0.5, 1.0, 1.0, 0.5, 1.0, 1.0]
    assert printed.count("👀 watching") == 3


def test_a_failed_deploy_is_told_and_the_watch_goes_on(project: Path) -> None:
    outcomes: list[Exception | None] = [StepFailed("smoke failed (...)", next_step="fix the release"), None]

    def deploy() -> None:
        outcome = outcomes.pop(0)
        if outcome is not None:
            raise outcome

    clock = EditingClock([append(project, FLEET, "\n# the fix"), nothing, nothing])
    runs, printed = watch(project, clock, deploy)
    assert runs == 2 and outcomes == []
    assert "❌ smoke failed (...)\n  → next: fix the release\n" in printed


def test_a_save_whose_deploy_was_superseded_is_deployed_again_at_once(project: Path) -> None:
    """A deploy that found what is live changed under it (another deploy finished before its lock) starts again at
    once, as every task does, instead of waiting for the next save."""
    outcomes: list[Exception | None] = [Superseded("what is live in 'sandbox' changed", next_step="rerun"), None]

    def deploy() -> None:
        outcome = outcomes.pop(0)
        if outcome is not None:
            raise outcome

    clock = EditingClock([nothing])
    runs, printed = watch(project, clock, deploy)
    assert runs == 1 and outcomes == []
    assert "🔁 what is live in 'sandbox' changed: starting again" in printed and "❌" not in printed


def test_an_interrupted_deploy_ends_the_watch(project: Path) -> None:
    def deploy() -> None:
        raise Interrupted("interrupted during roll-service")

    with pytest.raises(Interrupted):
        watch(project, EditingClock([nothing]), deploy)


def test_ctrl_c_while_watching_ends_it_without_an_error(project: Path) -> None:
    def interrupt() -> None:
        raise KeyboardInterrupt

    runs, printed = watch(project, EditingClock([interrupt]), lambda: None)
    assert runs == 1 and printed.endswith("stopped watching\n")


def test_a_protected_environment_is_refused_before_anything_is_deployed(project: Path) -> None:
    toml = project / "deploy.toml"
    toml.write_text(toml.read_text().replace("[environments.sandbox]\n", "[environments.sandbox]\nprotected = true\n"))
    deployed: list[int] = []
    with pytest.raises(UsageError) as err:
        watch(project, EditingClock([nothing]), lambda: deployed.append(1))
    assert "protected in deploy.toml; --watch deploys every save" in err.value.message
    assert err.value.exit_code == 2 and deployed == []


def test_an_environment_taking_only_pushed_commits_is_refused_before_anything_is_deployed(project: Path) -> None:
    toml = project / "deploy.toml"
    toml.write_text(
        toml.read_text().replace("[environments.sandbox]\n", "[environments.sandbox]\nrequire_pushed = true\n")
    )
    deployed: list[int] = []
    with pytest.raises(UsageError) as err:
        watch(project, EditingClock([nothing]), lambda: deployed.append(1))
    assert "takes only pushed commits (require_pushed = true in deploy.toml); --watch deploys" in err.value.message
    assert err.value.exit_code == 2 and deployed == []


def test_the_loop_leaves_out_a_canary_and_an_error_watch_and_says_so(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    toml = project / "deploy.toml"
    settings = (
        "[environments.sandbox.lambda_canary]\npercent = 10\n\n[environments.sandbox.app_error_watch]\nseconds = 60\n"
    )
    toml.write_text(toml.read_text() + "\n" + settings)
    asked: list[dict[str, Any]] = []
    monkeypatch.setattr(autodeploy, "deploy_auto", lambda **kwargs: asked.append(kwargs))
    runs, printed = watch(project, EditingClock([nothing]), None)  # the loop's own deploy: the stand-in records it
    assert runs == 1 and asked[0]["canary"] == "0" and asked[0]["watch_errors"] == "0"
    assert "👀 the edit loop leaves out sandbox's Lambda canary and error watch" in printed


def test_the_loop_reads_the_alarms_once_rather_than_watching_them(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    toml = project / "deploy.toml"
    toml.write_text(
        toml.read_text() + '\n[environments.sandbox.alarm_watch]\nalarms = ["car-rental-5xx"]\nseconds = 120\n'
    )
    asked: list[dict[str, Any]] = []
    monkeypatch.setattr(autodeploy, "deploy_auto", lambda **kwargs: asked.append(kwargs))
    runs, printed = watch(project, EditingClock([nothing]), None)
    assert runs == 1 and asked[0]["alarms_once"] is True and asked[0]["canary"] is None
    assert (
        "👀 the edit loop leaves out sandbox's alarm watch (each save would wait for it; its alarms are read once, "
        "after smoke)" in printed
    )
