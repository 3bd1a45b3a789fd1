"""A deploy command that ran no step tells the plugins why (deploykit_deployment_not_run): nothing to deploy, refused
or failed before its plan; the summary plugin writes it on the CI job's page. Against moto's deployed environment."""

from __future__ import annotations

import dataclasses
import io
import json
from datetime import timedelta
from pathlib import Path
from typing import Any
from unittest.mock import Mock

import pytest

from deploykit import commands, freeze
from deploykit.aws import AwsFactory
from deploykit.clock import FakeClock
from deploykit.config import EnvConfig
from deploykit.errors import Interrupted, StepFailed, Superseded, UsageError
from deploykit.hookspecs import hookimpl
from deploykit.lock import LockHeld
from deploykit.plugins import get_plugin_manager
from plugins.summary import Summary
from tests.conftest import git
from tests.functional.test_auto_analysis_moto import deployed, runtime_of  # noqa: F401 - a fixture


class Heard:
    """A plugin that notes what it hears of deployments that did not run, and of those that did."""

    def __init__(self) -> None:
        self.not_run: list[dict[str, Any]] = []
        self.failed: list[str] = []

    @hookimpl
    def deploykit_deployment_not_run(self, env: str, report: dict[str, Any]) -> None:
        self.not_run.append(report)

    @hookimpl
    def deploykit_deployment_failed(self, env: str, report: dict[str, Any], error: str) -> None:
        self.failed.append(error)


def hearing(runtime: commands.Runtime, heard: Heard, page: Path | None = None) -> commands.Runtime:
    extra: list[tuple[str, object]] = [("heard", heard)]
    if page is not None:
        extra.append(("summary", Summary(environ={"GITHUB_STEP_SUMMARY": str(page)}, who=lambda: "ana@ci")))
    return dataclasses.replace(
        runtime, plugins_factory=lambda: get_plugin_manager(entry_points=[], extra=extra, environ={})
    )


def test_nothing_to_deploy_since_a_commit_does_not_claim_the_environment_runs_head(
    deployed: AwsFactory,  # noqa: F811
    project: Path,
) -> None:
    """--since compares HEAD with the commit named, not with what is live: "nothing to deploy" then says so, never
    that the environment runs what HEAD would deploy (a shallow CI clone passing --since HEAD, told so by a live
    commit it lacks, would read that its environment is up to date)."""
    runtime = runtime_of(project, deployed)
    commands.deploy_auto(env="dev", only="app", since="HEAD", runtime=runtime)
    head = git(project, "rev-parse", "--short=12", "HEAD").strip()
    said = runtime.stderr.getvalue()  # type: ignore[attr-defined]
    assert "no change since what is live" not in said
    assert f"✅ nothing else to deploy: HEAD ({head}) changes nothing else deployable since {head} (--since)" in said
    assert "what dev runs was not compared (inv diff without --since compares it)" in said
    assert "dev runs the rest of what" not in said


def test_nothing_to_deploy_is_told_and_written_on_the_job_s_page(
    deployed: AwsFactory,  # noqa: F811
    project: Path,
    tmp_path: Path,
) -> None:
    heard, page = Heard(), tmp_path / "summary.md"
    runtime = hearing(runtime_of(project, deployed), heard, page)
    commands.deploy_auto(env="dev", only="app", runtime=runtime)  # everything else held back: nothing left
    head = git(project, "rev-parse", "--short=12", "HEAD").strip()
    (report,) = heard.not_run
    assert report["outcome"] == "nothing" and report["command"] == "deploy.auto" and report["env"] == "dev"
    assert report["head"] == head and report["message"] == "" and report["held"]
    text = page.read_text()
    assert text.startswith(
        f"### ✅ `dev` · deploy.auto by ana@ci · nothing to deploy\n\n`dev` runs what `{head}` would"
    )
    assert "Held back (`--only`/`--skip`): `stack:api`" in text
    # a dry run is no deploy: nothing told
    commands.deploy_auto(env="dev", only="app", dry_run=True, runtime=runtime)
    assert len(heard.not_run) == 1


def test_a_refusal_before_any_step_is_told_with_its_next_step(
    deployed: AwsFactory,  # noqa: F811
    project: Path,
    dev_env: EnvConfig,
    tmp_path: Path,
) -> None:
    heard, page = Heard(), tmp_path / "summary.md"
    runtime = hearing(runtime_of(project, deployed), heard, page)
    now = runtime.clock.now()
    freeze.write(deployed, dev_env, freeze.Freeze("lead@laptop", "audit", now, now + timedelta(hours=1)))
    with pytest.raises(UsageError, match="dev is frozen by lead@laptop") as refused:
        commands.deploy_auto(env="dev", only="stack:data", runtime=runtime)
    (report,) = heard.not_run
    assert (report["outcome"], report["command"]) == ("refused", "deploy.auto")
    assert report["message"] == refused.value.message and report["next_step"] == refused.value.next_step
    assert heard.failed == []  # no plan ran: not a deployment's failure
    text = page.read_text()
    assert text.startswith("### 🛑 `dev` · deploy.auto by ana@ci · refused before any step\n\n> refusing to deploy")
    assert "**Next:** wait until it is over" in text
    with pytest.raises(UsageError, match="unknown stack 'nope'"):  # a refused dry run tells nothing
        commands.deploy_auto(env="dev", dry_run=True, skip="stack:nope", runtime=runtime)
    assert len(heard.not_run) == 1


def test_only_what_no_one_told_and_nothing_run_again_is_told(project: Path) -> None:
    heard = Heard()
    runtime = hearing(
        commands.Runtime(config_path=project / "deploy.toml", stdout=io.StringIO(), stderr=io.StringIO()), heard
    )

    def command(error: Exception) -> Any:
        @commands.heard_when_not_run(lambda what, **_: f"deploy.stack {what}")
        def deploy(what: str, *, env: str | None = None, runtime: commands.Runtime | None = None) -> None:
            raise error

        return deploy

    told = StepFailed("the artifacts bucket could not be read", next_step="check the credentials")
    told.heard = True  # the executor told it as the run's failure
    lock = Mock(spec=["env"])
    for error in (
        told,
        Superseded("another deploy finished meanwhile"),  # started again at once
        LockHeld("held by bo", next_step="wait", lock=lock, info=Mock(), wait=600),  # waited for, then again
    ):
        with pytest.raises(type(error)):
            command(error)("data", env="sandbox", runtime=runtime)
    assert heard.not_run == []
    failed = StepFailed("reading what is live failed", next_step="rerun")
    with pytest.raises(StepFailed):
        command(failed)("data", env="sandbox", runtime=runtime)
    with pytest.raises(UsageError):  # an environment deploy.toml does not know: nothing to tell it to
        command(UsageError("no"))("data", env="nope", runtime=runtime)
    (report,) = heard.not_run
    assert (report["env"], report["command"], report["outcome"]) == ("sandbox", "deploy.stack data", "failed")
    assert (report["message"], report["next_step"]) == ("reading what is live failed", "rerun")
    assert failed.heard  # once: a caller further out does not tell it again


def test_a_command_that_gives_up_after_waiting_or_starting_again_is_told_its_last_refusal(project: Path) -> None:
    """The refusals until_unlocked starts a command again after are not told; the one it gives up with is, once."""
    heard = Heard()
    runtime = hearing(
        commands.Runtime(config_path=project / "deploy.toml", stdout=io.StringIO(), stderr=io.StringIO()), heard
    )
    lock = Mock(spec=["env", "clock", "wait_until_free", "environment"], environment=None)
    lock.env, lock.clock = "sandbox", FakeClock()
    final = LockHeld("held by bo (still, after waiting 10m00s)", next_step="wait", lock=lock, info=Mock(), wait=0)
    lock.wait_until_free.side_effect = final
    attempts: list[str] = []

    @commands.heard_when_not_run("deploy.auto")
    def deploy(*, env: str | None = None, runtime: commands.Runtime | None = None) -> None:
        attempts.append("lock")
        raise LockHeld("held by bo", next_step="wait", lock=lock, info=Mock(describe=str), wait=600)

    with pytest.raises(LockHeld) as refused:
        commands.until_unlocked(lambda: deploy(env="sandbox", runtime=runtime), runtime)
    assert refused.value is final and len(attempts) == 1
    (report,) = heard.not_run
    assert (report["command"], report["outcome"], report["message"]) == ("deploy.auto", "refused", final.message)

    @commands.heard_when_not_run("deploy.auto")
    def superseded(*, env: str | None = None, runtime: commands.Runtime | None = None) -> None:
        attempts.append("superseded")
        raise Superseded("another deploy finished meanwhile")

    with pytest.raises(Superseded):
        commands.until_unlocked(lambda: superseded(env="sandbox", runtime=runtime), runtime)
    assert attempts.count("superseded") == commands.SUPERSEDED_RESTARTS + 1
    assert [r["message"] for r in heard.not_run] == [final.message, "another deploy finished meanwhile"]


def test_ctrl_c_before_any_step_or_while_waiting_for_the_lock_is_told_and_ends_as_an_interrupt(
    deployed: AwsFactory,  # noqa: F811
    project: Path,
    tmp_path: Path,
) -> None:
    """SIGTERM (a cancelled CI job) while deploy.auto read what is live, or while it waited for another deploy's
    lock, ended with a bare KeyboardInterrupt: exit 130 with nothing on the job's page, no next step, and nothing on
    stdout for --json. It is an Interrupted (exit 130) saying nothing was changed, told to the plugins."""
    heard, page = Heard(), tmp_path / "summary.md"
    runtime = hearing(runtime_of(project, deployed), heard, page)

    def stop(**_: Any) -> None:
        raise KeyboardInterrupt

    deployed.client("cloudformation").meta.events.register("before-call.cloudformation.DescribeStacks", stop)
    with pytest.raises(Interrupted) as stopped:
        commands.deploy_auto(env="dev", only="stack:data", runtime=runtime)
    assert stopped.value.message == "interrupted before any step ran: nothing was changed"
    assert stopped.value.exit_code == 130 and stopped.value.next_step == "run the same command again"
    (report,) = heard.not_run
    assert (report["outcome"], report["message"]) == ("interrupted", stopped.value.message)
    assert page.read_text().startswith(
        "### ⚠️ `dev` · deploy.auto by ana@ci · interrupted before any step\n\n> interrupted before any step ran"
    )
    deployed.client("cloudformation").meta.events.unregister("before-call.cloudformation.DescribeStacks", stop)

    lock = Mock(spec=["env", "clock", "wait_until_free", "environment"], environment=None)
    lock.env, lock.clock = "dev", FakeClock()
    lock.wait_until_free.side_effect = KeyboardInterrupt

    @commands.heard_when_not_run("deploy.auto")
    def deploy(*, env: str | None = None, runtime: commands.Runtime | None = None) -> None:
        raise LockHeld("held by bo", next_step="wait", lock=lock, info=Mock(describe=str), wait=600)

    with pytest.raises(Interrupted) as waited:
        commands.until_unlocked(lambda: deploy(env="dev", runtime=runtime), runtime)
    assert waited.value.message == "interrupted while waiting for the lock of 'dev': nothing was changed"
    assert [(r["outcome"], r["message"]) for r in heard.not_run[1:]] == [("interrupted", waited.value.message)]


def test_the_dry_run_json_with_nothing_to_deploy_names_the_live_commit_as_its_base(
    deployed: AwsFactory,  # noqa: F811
    project: Path,
) -> None:
    """`base` was null, as for an environment not fully deployed: a script could tell the two apart only by the
    empty changes. It is the live commit (or --since's)."""
    head = git(project, "rev-parse", "HEAD").strip()
    for since in (None, "HEAD"):
        runtime = runtime_of(project, deployed)
        commands.deploy_auto(env="dev", only="app", since=since, dry_run=True, as_json=True, runtime=runtime)
        data = json.loads(runtime.stdout.getvalue())  # type: ignore[attr-defined]
        assert (data["changes"], data["steps"]) == ([], []), since
        assert data["base"] and head.startswith(data["base"]), (since, data["base"])
