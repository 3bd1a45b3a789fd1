"""The built-in ``summary`` plugin: each deployment as Markdown on the CI job's page ($GITHUB_STEP_SUMMARY)."""

from __future__ import annotations

import io
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from unittest.mock import Mock

import pytest

from deploykit.aws import AwsFactory
from deploykit.clock import FakeClock
from deploykit.config import Config, parse_config
from deploykit.errors import ConfigError, StepFailed, UsageError
from deploykit.output import GuardedStream, Reporter
from deploykit.plan import Context, Executor, Outcome, Plan, Sequence, Step
from deploykit.plugins import get_plugin_manager
from plugins.summary import CHANGES_SHOWN, COMMITS_SHOWN, Summary, annotation, not_run_markdown, run_markdown
from tests.unit.test_notify_plugin import ENVIRONMENTS


def config(**settings: Any) -> Config:
    raw = tomllib.loads(ENVIRONMENTS)
    if settings:
        raw["plugins"] = {"summary": settings}
    return parse_config(raw, Path("deploy.toml"))


@dataclass(frozen=True)
class Works(Step):
    name = "deploy-stack"
    fail: bool = False
    refuse: bool = False
    stop: bool = False
    changes: tuple[str, ...] = ()

    def describe(self) -> str:
        return "CarRentalApiStack: change set from CarRentalApiStack.template.json"

    def run(self, ctx: Context) -> Outcome:
        if self.fail:
            raise StepFailed("the stack did not update: a | b", next_step="read its events, then rerun")
        if self.refuse:
            raise UsageError("the Docker engine is not running", next_step="start it, then rerun")
        if self.stop:
            raise KeyboardInterrupt  # Ctrl-C, or the task's SIGTERM (a cancelled CI job)
        return Outcome("done", "CarRentalApiStack: updated in 0.7s | 2 outputs", changes=self.changes)

    def inputs(self) -> dict[str, object]:
        return {}


def deploy(summary: Summary, cfg: Config, *steps: Step) -> None:
    plugins = get_plugin_manager(entry_points=[], extra=[("summary", summary)], environ={})
    plugins.manager.hook.deploykit_configure(config=cfg)
    clock = FakeClock()
    ctx = Context(
        cfg,
        cfg.environment("dev"),
        Mock(spec=AwsFactory),
        clock,
        Reporter(io.StringIO(), tty=False, clock=clock),
        Mock(side_effect=AssertionError("no Docker here")),
        plugins=plugins,
    )
    plan = Plan("dev", steps, "deploy.auto", deploys=(("stack:api", "0123456789abcdef"),))
    Executor(ctx).execute(plan)


def test_each_deployment_is_appended_to_the_file_the_variable_names(tmp_path: Path) -> None:
    page = tmp_path / "summary.md"
    page.write_text("# the job's own heading\n\n", encoding="utf-8")
    summary = Summary(who=lambda: "github:ana", environ={"GITHUB_STEP_SUMMARY": str(page)})
    lines = ("LoginHandler5CDFBDA2: MemorySize: 256 → 512", "Topic (AWS::SNS::Topic): add")
    deploy(summary, config(), Works(changes=lines))
    deploy(summary, config(), Sequence("stacks", (Works(fail=True),)))
    text = page.read_text(encoding="utf-8")
    assert text.startswith("# the job's own heading\n\n### ✅ `dev` · deploy.auto by github:ana · ")
    assert "Deploys `stack:api` at `0123456789ab`." in text
    assert "| deploy-stack | ✅ done | 0.0 s | CarRentalApiStack: updated in 0.7s \\| 2 outputs |" in text
    assert (
        "<details><summary>CarRentalApiStack: what it changed</summary>\n\n"
        "- LoginHandler5CDFBDA2: MemorySize: 256 → 512\n- Topic (AWS::SNS::Topic): add\n\n</details>"
    ) in text
    failed = text.split("### ❌ ")[1]
    assert failed.startswith("`dev` · deploy.auto by github:ana · failed at `deploy-stack` after ")
    assert "> the stack did not update: a \\| b\n\n**Next:** read its events, then rerun" in failed
    assert "| sequence | ❌ failed | 0.0 s |" in failed and "| ↳ deploy-stack | ❌ failed | 0.0 s |" in failed


def test_a_lone_surrogate_is_written_escaped_not_the_whole_section_lost(tmp_path: Path) -> None:
    """A detail holding a lone surrogate (bytes a check decoded with surrogateescape) failed the write, strict
    UTF-8: the run's whole section was missing from the page, a plugin failure said instead."""
    page, err = tmp_path / "summary.md", io.StringIO()
    summary = Summary(who=lambda: "ana", environ={"GITHUB_STEP_SUMMARY": str(page)}, stderr=err)

    @dataclass(frozen=True)
    class Odd(Works):
        def run(self, ctx: Context) -> Outcome:
            return Outcome("done", "answered \udcff")

    deploy(summary, config(), Odd())
    assert "| deploy-stack | ✅ done | 0.0 s | answered \\udcff |" in page.read_text(encoding="utf-8")
    assert err.getvalue() == ""


def test_a_refusal_is_said_as_one_and_another_variable_can_be_named(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    summary = Summary(who=lambda: "ana@laptop", environ={"CI_SUMMARY": str(page), "GITHUB_STEP_SUMMARY": "/nope"})
    deploy(summary, config(file_env="CI_SUMMARY"), Works(refuse=True))
    text = page.read_text(encoding="utf-8")
    assert text.startswith("### 🛑 `dev` · deploy.auto by ana@laptop · refused at ")
    assert "| deploy-stack | 🛑 refused | 0.0 s | the Docker engine is not running |" in text


def test_without_the_variable_nothing_is_written_and_an_unwritable_file_fails_nothing(tmp_path: Path) -> None:
    deploy(Summary(environ={}), config(), Works())  # a laptop: nothing set, nothing written, no error
    deploy(Summary(environ={"GITHUB_STEP_SUMMARY": str(tmp_path / "x.md")}), config(file_env=""), Works())
    assert not (tmp_path / "x.md").exists()  # file_env = "": off
    stderr = io.StringIO()
    summary = Summary(stderr=stderr, environ={"GITHUB_STEP_SUMMARY": str(tmp_path / "no" / "such" / "dir.md")})
    deploy(summary, config(), Works())
    assert stderr.getvalue().startswith("⚠️  plugin 'summary': could not write the job summary to ")


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"file": "X"}, "deploy.toml: [plugins.summary] has unknown keys ['file']"),
        ({"file_env": 3}, "deploy.toml: [plugins.summary]: file_env must be the name of an environment variable"),
        ({"annotations": "yes"}, "deploy.toml: [plugins.summary]: annotations must be true or false"),
    ],
)
def test_settings_it_does_not_know_are_errors(settings: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as raised:
        Summary(environ={}).deploykit_configure(config(**settings))
    assert raised.value.message.startswith(message)


def test_a_long_list_of_changes_is_cut_and_held_back_components_are_named() -> None:
    step = {"step": "deploy-stack", "description": "S: x", "status": "done", "seconds": 1.0, "detail": "d"}
    step["changes"] = [f"V{i}: 1 → 2" for i in range(CHANGES_SHOWN + 5)]
    report = {"env": "dev", "title": "deploy.auto", "ok": True, "seconds": 1.0, "steps": [step], "held": ["app"]}
    text = run_markdown(report, None, "ana")
    assert "<summary>S: what it changed</summary>" in text
    assert f"- V{CHANGES_SHOWN - 1}: 1 → 2\n- … and 5 more (`inv history`)" in text
    assert "Held back (`--only`/`--skip`): `app`." in text
    assert "Deploys" not in text


def test_a_deploy_that_ran_no_step_says_why_escaped() -> None:
    report = {
        "env": "prod",
        "command": "deploy.stack CarRentalDataStack",
        "outcome": "failed",
        "head": "0123456789ab",
        "message": "reading the stack failed: <AccessDenied> on *everything*\nsecond line",
        "next_step": "check the role's `cloudformation:DescribeStacks`",
        "held": [],
    }
    assert not_run_markdown(report, "ci|bot") == (
        "### ❌ `prod` · deploy.stack CarRentalDataStack by ci\\|bot · failed before any step\n\n"
        "> reading the stack failed: \\<AccessDenied\\> on \\*everything\\*\n> second line\n\n"
        "**Next:** check the role's \\`cloudformation:DescribeStacks\\`\n\n"
    )
    nothing = {**report, "outcome": "nothing", "message": "", "next_step": "", "head": ""}
    assert not_run_markdown(nothing, "ana").splitlines()[2] == "`prod` runs what the checkout would deploy."


def test_in_github_actions_a_failure_is_an_error_annotation_too(tmp_path: Path) -> None:
    stderr = io.StringIO()
    actions = {"GITHUB_ACTIONS": "true", "GITHUB_STEP_SUMMARY": str(tmp_path / "page.md")}
    summary = Summary(stderr=stderr, who=lambda: "ci", environ=actions)
    deploy(summary, config(), Works())  # a success: no annotation
    deploy(summary, config(), Works(fail=True))
    deploy(summary, config(), Works(refuse=True))
    summary.deploykit_deployment_not_run(
        env="dev",
        report={"command": "deploy.auto", "outcome": "refused", "message": "dev is frozen", "next_step": "wait"},
    )
    summary.deploykit_deployment_not_run(env="dev", report={"command": "deploy.auto", "outcome": "nothing"})
    summary.deploykit_smoke_finished(
        env="dev",
        report={
            "env": "dev",
            "ok": False,
            "checks": [
                {"name": "alb", "status": "passed", "seconds": 0.1, "detail": "GET /health 200"},
                {"name": "auth", "status": "failed", "seconds": 0.2, "detail": "GET /me → 500"},
            ],
        },
    )
    assert stderr.getvalue().splitlines() == [
        "::error title=deploykit%3A deploy.auto to dev failed at deploy-stack::the stack did not update: a | b%0A"
        "  → next: read its events, then rerun",
        "::error title=deploykit%3A deploy.auto to dev refused at deploy-stack::the Docker engine is not running%0A"
        "  → next: start it, then rerun",
        "::error title=deploykit%3A deploy.auto to dev refused before any step::dev is frozen%0A  → next: wait",
        "::error title=deploykit%3A smoke of dev failed (1 check(s))::auth: GET /me → 500",
    ]
    # not in GitHub Actions, or turned off: none
    for environ, settings in (({"GITHUB_STEP_SUMMARY": str(tmp_path / "x.md")}, {}), (actions, {"annotations": False})):
        quiet = io.StringIO()
        deploy(Summary(stderr=quiet, environ=environ), config(**settings), Works(fail=True))
        assert quiet.getvalue() == ""


def test_a_deployment_interrupted_at_a_step_is_said_as_one_and_a_warning_annotation(tmp_path: Path) -> None:
    """Exit 130 (Ctrl-C, a cancelled CI job) was headed "❌ failed" on the page, with an ::error annotation."""
    page, stderr = tmp_path / "page.md", io.StringIO()
    summary = Summary(
        stderr=stderr, who=lambda: "ci", environ={"GITHUB_ACTIONS": "true", "GITHUB_STEP_SUMMARY": str(page)}
    )
    deploy(summary, config(), Works(stop=True))  # exit 130: the executor ends the plan, its report says so
    assert page.read_text(encoding="utf-8").startswith(
        "### ⚠️ `dev` · deploy.auto by ci · interrupted at `deploy-stack`"
    )
    (line,) = stderr.getvalue().splitlines()
    assert line.startswith("::warning title=deploykit%3A deploy.auto to dev interrupted at deploy-stack::interrupted ")


def test_an_annotation_is_escaped_as_the_runner_reads_it() -> None:
    assert annotation("a: b, c%", "50% done\r\nnext") == "::error title=a%3A b%2C c%25::50%25 done%0D%0Anext\n"


def test_an_annotation_through_deploykits_guarded_stream_is_written_as_a_command_its_controls_escaped() -> None:
    """The annotation is deploykit's own workflow command: through the stream that disarms the app's (a zero-width
    space before "::"), it was disarmed too, and GitHub showed none. An escape sequence in a check's detail (an
    app's answer) is written as its escape, as everything else deploykit prints."""
    underneath = io.StringIO()
    actions = {"GITHUB_ACTIONS": "true"}
    summary = Summary(stderr=GuardedStream(underneath), who=lambda: "ci", environ=actions)  # type: ignore[arg-type]
    detail = "HTTP 502: \x1b]8;;https://evil.example\x07click\x1b]8;;\x07 \x9b2J"
    check = {"name": "api", "status": "failed", "seconds": 0.1, "detail": detail}
    summary.deploykit_smoke_finished(env="dev", report={"env": "dev", "ok": False, "checks": [check]})
    assert underneath.getvalue() == (
        "::error title=deploykit%3A smoke of dev failed (1 check(s))::api: HTTP 502: \\x1b]8;;https://evil.example"
        "\\x07click\\x1b]8;;\\x07 \\x9b2J\n"
    )


def test_the_commits_a_run_takes_live_are_listed_escaped_and_cut() -> None:
    report = {"env": "prod", "title": "deploy.auto", "ok": True, "seconds": 3.0, "steps": []}
    commits = [{"sha": f"{i:012x}", "author": "ana", "subject": f"Fix #{i} <b>"} for i in range(COMMITS_SHOWN + 2)]
    text = run_markdown(report, {"deploys": [], "commits": commits}, "ana")
    assert f"{COMMITS_SHOWN + 2} commits going live:\n\n- `000000000000` Fix #0 \\<b\\> (ana)\n" in text
    assert f"- `{COMMITS_SHOWN - 1:012x}` Fix #{COMMITS_SHOWN - 1} \\<b\\> (ana)\n- and 2 more" in text
    assert "going live" not in run_markdown(report, {"deploys": []}, "ana")


def test_in_github_actions_the_commits_link_to_the_repository() -> None:
    report = {"env": "prod", "title": "deploy.auto", "ok": True, "seconds": 3.0, "steps": []}
    plan = {"deploys": [], "commits": [{"sha": "1f75bd3b539f", "author": "ana", "subject": "Login: v2"}]}
    url = "https://github.com/acme/car-rental/commit/"
    assert "- [`1f75bd3b539f`](https://github.com/acme/car-rental/commit/1f75bd3b539f) Login: v2 (ana)" in (
        run_markdown(report, plan, "ana", commit_url=url)
    )
    summary = Summary(environ={"GITHUB_SERVER_URL": "https://github.com/", "GITHUB_REPOSITORY": "acme/car-rental"})
    assert summary._commit_url() == url
    assert Summary(environ={})._commit_url() == ""
