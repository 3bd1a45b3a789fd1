"""`inv smoke` end to end against moto's stacks: selection, table, JSON, JUnit, exit codes, broken and
blocked plugins; and a team plugin installed as its own distribution, found through its entry point."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any
from unittest.mock import Mock

import pytest

from deploykit import commands
from deploykit import smoke as smoke_checks
from deploykit.aws import AwsFactory
from deploykit.checks import Check, CheckContext, CheckResult
from deploykit.clock import FakeClock
from deploykit.config import load_config
from deploykit.errors import StepFailed, UsageError
from deploykit.hookspecs import hookimpl
from deploykit.output import Reporter
from deploykit.plan import Context, Executor, Outcome, Plan, RunReport, Step, StepRecord
from deploykit.plugins import Plugins, get_plugin_manager
from deploykit.testing import sample_env
from plugins.summary import Summary
from tests.functional.test_endpoints import OUTPUTS, create_stack


class AppChecks:
    """A plugin whose checks look at what the context resolved."""

    def __init__(self, fail: bool = False, during: Callable[[], object] | None = None) -> None:
        self.fail, self.during = fail, during
        self.seen: list[CheckContext] = []

    @hookimpl
    def deploykit_register_checks(self, env: Any) -> list[Check]:
        def alb(ctx: CheckContext) -> CheckResult:
            self.seen.append(ctx)
            if self.during is not None:
                self.during()
            if self.fail:
                return CheckResult.failed("alb", f"GET {ctx.endpoints.alb_url}/health → 502 (expected 200)")
            return CheckResult.passed("alb", f"{ctx.endpoints.alb_url} answers")

        def login(ctx: CheckContext) -> CheckResult:
            return CheckResult.passed("login", ctx.endpoints.login_url)

        return [Check("alb", alb), Check("login", login, needs=("alb",))]


@pytest.fixture
def deployed(moto_aws: None, project: Path) -> Path:
    import boto3

    cfn = boto3.client("cloudformation", region_name="eu-west-1")
    for role, outputs in OUTPUTS.items():
        create_stack(cfn, f"CarRental{role.capitalize()}Stack", outputs)
    return project


def runtime(project: Path, *plugins: tuple[str, object], broken: dict[str, str] | None = None) -> commands.Runtime:
    def factory() -> Plugins:
        loaded = get_plugin_manager(entry_points=[], extra=plugins, environ={})
        loaded.broken.update(broken or {})
        return loaded

    return commands.Runtime(
        config_path=project / "deploy.toml", stdout=io.StringIO(), stderr=io.StringIO(), plugins_factory=factory
    )


def test_smoke_runs_every_check_against_the_resolved_endpoints(deployed: Path, tmp_path: Path) -> None:
    checks = AppChecks()
    rt = runtime(deployed, ("app", checks))
    junit = tmp_path / "reports" / "smoke.xml"
    results = commands.smoke(env="dev", as_json=True, junit=junit, runtime=rt)
    assert [(r.name, r.status) for r in results] == [("alb", "passed"), ("login", "passed")]
    assert checks.seen[0].endpoints.alb_url == OUTPUTS["fargate"]["AlbUrl"]
    assert checks.seen[0].env.name == "dev"
    printed = rt.stderr.getvalue()  # type: ignore[attr-defined]
    assert "check" in printed and "✅ passed" in printed and "✅ smoke passed on dev: 2 passed" in printed
    data = json.loads(rt.stdout.getvalue())  # type: ignore[attr-defined]
    assert data["ok"] is True and [c["name"] for c in data["checks"]] == ["alb", "login"]
    suite = ET.parse(junit).getroot()
    assert (suite.get("name"), suite.get("tests"), suite.get("failures")) == ("deploykit.smoke.dev", "2", "0")


def test_a_failed_check_fails_smoke_with_exit_1_and_skips_what_needs_it(deployed: Path, tmp_path: Path) -> None:
    rt = runtime(deployed, ("app", AppChecks(fail=True)))
    junit = tmp_path / "smoke.xml"
    with pytest.raises(StepFailed) as failed:
        commands.smoke(env="dev", junit=junit, runtime=rt)
    assert failed.value.exit_code == 1
    assert "alb: GET http://alb-1.eu-west-1.elb.amazonaws.com/health → 502" in failed.value.message
    assert "⏭  skipped" in rt.stderr.getvalue()  # type: ignore[attr-defined]
    suite = ET.parse(junit).getroot()
    assert (suite.get("failures"), suite.get("skipped")) == ("1", "1")  # written before the exit


class Raises:
    """An observer that fails."""

    @hookimpl
    def deploykit_smoke_finished(self, env: str, report: dict[str, Any]) -> None:
        raise RuntimeError("the dashboard is down")


def test_a_smoke_run_of_its_own_is_told_to_the_plugins_and_written_on_the_job_s_page(
    deployed: Path, tmp_path: Path
) -> None:
    page = tmp_path / "summary.md"
    summary = Summary(who=lambda: "github:ana", environ={"GITHUB_STEP_SUMMARY": str(page)})
    rt = runtime(deployed, ("app", AppChecks(fail=True)), ("summary", summary), ("raises", Raises()))
    with pytest.raises(StepFailed):  # told before the failure is raised
        commands.smoke(env="dev", runtime=rt)
    written = re.sub(r"\| \d+\.\d\d s \|", "| T s |", page.read_text(encoding="utf-8"))  # a check's time varies
    assert written.startswith(
        "### ❌ `dev` · smoke by github:ana · 1 failed, 1 skipped\n\n"
        "| check | result | time | detail |\n|---|---|---|---|\n"
        "| alb | ❌ failed | T s | GET http://alb-1.eu-west-1.elb.amazonaws.com/health → 502 (expected 200) |\n"
    )
    said = rt.stderr.getvalue()  # type: ignore[attr-defined]
    assert "⚠️  plugin 'raises' failed in deploykit_smoke_finished: RuntimeError: the dashboard is down" in said
    commands.smoke(env="dev", runtime=runtime(deployed, ("app", AppChecks()), ("summary", summary)))
    assert "### ✅ `dev` · smoke by github:ana · 2 passed\n" in page.read_text(encoding="utf-8")


def test_only_selects_checks_and_an_unknown_one_is_exit_2(deployed: Path) -> None:
    rt = runtime(deployed, ("app", AppChecks()))
    assert [r.name for r in commands.smoke(env="dev", only=["alb"], runtime=rt)] == ["alb"]
    # login needs alb: run too, else login would be skipped and the run pass without running it
    assert [(r.name, r.status) for r in commands.smoke(env="dev", only=["login"], runtime=rt)] == [
        ("alb", "passed"),
        ("login", "passed"),
    ]
    with pytest.raises(UsageError, match="unknown check\\(s\\): nope") as unknown:
        commands.smoke(env="dev", only=["nope"], runtime=rt)
    assert unknown.value.next_step == "use: alb, login"


def test_a_plugin_that_failed_to_load_is_a_failed_row_and_the_others_still_run(deployed: Path) -> None:
    rt = runtime(deployed, ("app", AppChecks()), broken={"team": "ImportError: no module named 'requests'"})
    with pytest.raises(StepFailed, match="plugin:team: failed to load"):
        commands.smoke(env="dev", runtime=rt)
    printed = rt.stderr.getvalue()  # type: ignore[attr-defined]
    assert "plugin 'team' failed to load and is left out: ImportError" in printed
    assert printed.count("✅ passed") == 2


class RegistersBadly:
    """A plugin whose deploykit_register_checks raises, or answers a Check where a list is due."""

    def __init__(self, answer: object) -> None:
        self.answer = answer

    @hookimpl
    def deploykit_register_checks(self, env: Any) -> object:
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


def test_a_plugin_whose_checks_fail_to_register_is_a_failed_row_and_the_others_still_run(deployed: Path) -> None:
    """Each plugin is asked on its own: one that raises (or answers a Check, not a list) neither crashes the run
    nor takes the others' checks with it; its failed row fails smoke (exit 1), named."""
    raising, bare = RegistersBadly(RuntimeError("cannot register")), RegistersBadly(Check("x", lambda ctx: None))  # type: ignore[arg-type,return-value]
    rt = runtime(deployed, ("app", AppChecks()), ("raising", raising), ("bare", bare))
    with pytest.raises(StepFailed) as failed:
        commands.smoke(env="dev", runtime=rt)
    said = failed.value.message
    assert "plugin:raising: failed: deploykit_register_checks raised RuntimeError: cannot register" in said
    assert "plugin:bare: failed: deploykit_register_checks returned Check, not a list of Check" in said
    assert rt.stderr.getvalue().count("✅ passed") == 2  # type: ignore[attr-defined]
    with pytest.raises(UsageError) as unknown:  # a check asked for by name may be one of theirs: said
        commands.smoke(env="dev", only=["team_fleet"], runtime=rt)
    assert unknown.value.message == (
        "unknown check(s): team_fleet (maybe one of a plugin whose checks are not there: plugin 'bare' failed: "
        "deploykit_register_checks returned Check, not a list of Check; plugin 'raising' failed: "
        "deploykit_register_checks raised RuntimeError: cannot register)"
    )


class NeedsTeam:
    """A plugin whose check needs one of another plugin's."""

    @hookimpl
    def deploykit_register_checks(self, env: Any) -> list[Check]:
        return [Check("kyc", lambda ctx: CheckResult.passed("kyc"), needs=("team_fleet",))]


def test_a_need_no_plugin_registers_skips_the_check_and_one_of_a_broken_plugin_fails_the_run(deployed: Path) -> None:
    """A need no plugin registers here (a plugin may leave a check out of an environment): the check is skipped, its
    row saying so, and the run passes. One a broken plugin would have registered: the plugin's failed row stays with
    --only too (before, `--only kyc` passed without running it, and without a word of the broken plugin)."""
    rt = runtime(deployed, ("kyc", NeedsTeam()))
    commands.smoke(env="dev", runtime=rt)
    assert "needs team_fleet (not run: no plugin registers it here)" in rt.stderr.getvalue()  # type: ignore[attr-defined]
    rt = runtime(deployed, ("kyc", NeedsTeam()), broken={"team": "ImportError: no module named 'requests'"})
    with pytest.raises(StepFailed) as failed:
        commands.smoke(env="dev", only=["kyc"], runtime=rt)
    assert "plugin:team: failed to load (ImportError: no module named 'requests')" in failed.value.message
    assert "needs team_fleet (not run: no plugin registers it here)" in rt.stderr.getvalue()  # type: ignore[attr-defined]


def test_a_deploy_whose_smoke_would_be_refused_is_refused_before_it_changes_anything(project: Path) -> None:
    """Two plugins registering a check of one name: `inv smoke` refuses it at once; a deploy's smoke did too, but
    only after the steps before it had changed what runs (a good release then counted as a failed deploy)."""
    ran: list[str] = []

    class Rolls(Step):
        name = "roll-service"

        def describe(self) -> str:
            return "roll"

        def run(self, ctx: Context) -> Outcome:
            ran.append(self.name)
            return Outcome.done("rolled")

    plugins = get_plugin_manager(entry_points=[], extra=[("app", AppChecks()), ("team", AppChecks())], environ={})
    config, clock = load_config(project / "deploy.toml"), FakeClock()
    ctx = Context(
        config,
        config.environment("dev"),
        Mock(spec=AwsFactory),
        clock,
        Reporter(io.StringIO(), tty=False, clock=clock),
        Mock(side_effect=AssertionError("no Docker here")),
        plugins=plugins,
    )
    Executor(ctx).execute(Plan("dev", (Rolls(), smoke_checks.Smoke()), "deploy.app"))
    assert ran == []
    # which plugins register each: the bare "two plugins register the check(s) alb" said not which
    assert "⏹  more than one check of a name: alb by plugins app, team; login by plugins app, team" in (
        ctx.reporter.stream.getvalue()  # type: ignore[attr-defined]
    )
    # a rollback's smoke does not hold back what puts things right: the refusal comes at its smoke
    Executor(ctx).execute(Plan("dev", (Rolls(), smoke_checks.Smoke(refuses_first=False)), "rollback app → a"))
    assert ran == ["roll-service"]


def test_a_check_asked_for_while_plugins_are_blocked_names_them(project: Path) -> None:
    """The check may be one of a blocked plugin's: said, rather than only "unknown"."""
    blocked = {"DEPLOYKIT_BLOCK_PLUGINS": "team"}
    plugins = get_plugin_manager(entry_points=[], extra=[("app", AppChecks())], environ=blocked)
    with pytest.raises(UsageError) as unknown:
        smoke_checks.choose(plugins, sample_env(), ["team_fleet"])
    assert unknown.value.message == (
        "unknown check(s): team_fleet (maybe one of a plugin whose checks are not there: plugin 'team' blocked by "
        "DEPLOYKIT_BLOCK_PLUGINS)"
    )


def test_no_stacks_means_a_clear_error_before_any_check(project: Path, moto_aws: None) -> None:
    checks = AppChecks()
    with pytest.raises(UsageError, match="not deployed: CarRentalRegistryStack") as missing:
        commands.smoke(env="dev", runtime=runtime(project, ("app", checks)))
    assert missing.value.next_step == "deploy the stacks: inv deploy.full --env dev"
    assert checks.seen == []


def plugin_names(site: Path, **env: str) -> list[str]:
    """The plugins a fresh process loads with ``site`` on its path (as if installed there)."""
    code = (
        "import json; from deploykit.plugins import get_plugin_manager as g; "
        "print(json.dumps(sorted(n for n, p in g().manager.list_name_plugin() if p is not None)))"
    )
    environ = {**os.environ, "PYTHONPATH": str(site), **env}
    answer = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True, env=environ)
    return list(json.loads(answer.stdout))


@pytest.mark.slow
def test_an_installed_plugin_is_found_by_its_entry_point_and_blocked_by_the_variable(
    installed_team_plugin: Path,
) -> None:
    assert list(installed_team_plugin.glob("carrental_team_checks-1.0.0.dist-info/entry_points.txt"))
    names = plugin_names(installed_team_plugin)
    assert names == ["alb", "api_gateway", "auth", "connectivity", "kyc", "notify", "summary", "team_checks"]
    assert plugin_names(installed_team_plugin, DEPLOYKIT_BLOCK_PLUGINS="team_checks,kyc,notify,summary") == [
        "alb",
        "api_gateway",
        "auth",
        "connectivity",
    ]


def test_a_junit_file_that_cannot_be_written_is_refused_before_any_check_runs(deployed: Path, tmp_path: Path) -> None:
    """A folder, or a place no folder can be made in: exit 2 before the checks (they make throwaway users), not a
    traceback after them."""
    checks = AppChecks()
    rt = runtime(deployed, ("app", checks))
    with pytest.raises(UsageError, match=f"--junit {tmp_path} is a folder") as folder:
        commands.smoke(env="dev", junit=tmp_path, runtime=rt)
    assert folder.value.next_step == f"name a file: --junit {tmp_path / 'smoke.xml'}"
    blocked = tmp_path / "a-file"
    blocked.write_text("")
    with pytest.raises(UsageError, match=f"--junit {blocked / 'smoke.xml'} cannot be written: "):
        commands.smoke(env="dev", junit=blocked / "smoke.xml", runtime=rt)  # its folder would be a file
    assert checks.seen == []
    with pytest.raises(UsageError, match=f"--junit {blocked / 'x' / 'smoke.xml'} cannot be written: "):
        commands.smoke(env="dev", junit=blocked / "x" / "smoke.xml", runtime=rt)  # a folder of it would be a file
    assert checks.seen == []


def test_a_smoke_refused_leaves_no_folder_behind(deployed: Path, tmp_path: Path) -> None:
    """The --junit file's folders are made as it is written: a smoke refused before (a check no plugin has) makes
    none, nor reads the environment."""
    rt = runtime(deployed, ("app", AppChecks()))
    rt.aws_factory = Mock(side_effect=AssertionError("the environment was read"))
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(UsageError, match=r"unknown check\(s\): nope"):
        commands.smoke(env="dev", only=["nope"], junit=out / "reports" / "ci" / "smoke.xml", runtime=rt)
    assert list(out.iterdir()) == []


@pytest.mark.parametrize(
    "meanwhile",
    ["nothing", "locked", "deployed", "only", "failed", "left in place", "failed meanwhile", "nothing marked"],
)
def test_a_smoke_of_every_check_takes_the_unsmoked_mark_off_what_the_environment_runs(
    deployed: Path, meanwhile: str
) -> None:
    """What a run without its smoke deployed is marked until a smoke passes there (a promotion does not take it):
    inv smoke of every check passing proves it too, and takes the mark off under the environment's lock; not while a
    deploy holds the lock, nor when one wrote the live record while the checks ran, nor by a smoke of some checks
    (--only) or one that failed; nor when a failed deploy (which writes no live record) left its release in place
    (--no-rollback) or ran while the checks did: they checked another release than the live record names."""
    import boto3

    from deploykit import history, lock

    boto3.client("s3", region_name="eu-west-1").create_bucket(
        Bucket="registry-artifacts-1", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"}
    )
    config = load_config(deployed / "deploy.toml")
    env = config.environment("dev")
    store = history.History.of(AwsFactory(env), env)
    assert store is not None
    rolled = [StepRecord("roll-service", "roll", "done", 1.0)]

    def write(command: str, components: dict[str, str], failed: bool = False) -> None:
        error = StepFailed("wait-healthy failed", next_step="look") if failed else None
        run = RunReport(Plan("dev", (), command), rolled, 1.0, error)  # no smoke step: --no-smoke
        store.write(history.record_of(run, components=components, base={}, head="a" * 12, who="ana@laptop"))

    write("deploy.app", {"app": "a" * 12, "lambda:login_handler": "b" * 12})
    if meanwhile == "nothing marked":  # a later run's smoke passed: nothing to take off, nothing said
        run = RunReport(Plan("dev", (), "deploy.auto"), [StepRecord("smoke", "checks", "done", 1.0)], 1.0)
        store.write(history.record_of(run, components={"stack:api": "e" * 12}, base={}, head="e" * 12, who="bo"))
        rt = runtime(deployed, ("app", AppChecks()))
        commands.smoke(env="dev", runtime=rt)
        assert "unsmoked" not in rt.stderr.getvalue() and "🏷" not in rt.stderr.getvalue()  # type: ignore[attr-defined]
        return
    if meanwhile == "left in place":  # deploy.app --no-rollback of dddd failed: dddd serves, the live record says aaaa
        write("deploy.app", {"app": "d" * 12}, failed=True)
    landing = {  # a run of another part as the checks run; a failed one writes its record alone
        "deployed": partial(write, "deploy.lambda", {"lambda:x": "c" * 12}),
        "failed meanwhile": partial(write, "deploy.app", {"app": "d" * 12}, failed=True),
    }.get(meanwhile)
    checks = AppChecks(fail=meanwhile == "failed", during=landing)
    rt = runtime(deployed, ("app", checks))
    if meanwhile == "locked":
        env_lock = lock.EnvLock.of(AwsFactory(env), env)
        assert env_lock is not None
        env_lock.acquire("deploy.auto")
    only = ["alb", "login"] if meanwhile == "only" else None
    if meanwhile == "failed":
        with pytest.raises(StepFailed):
            commands.smoke(env="dev", runtime=rt)
    else:
        commands.smoke(env="dev", only=only, runtime=rt)
    said = rt.stderr.getvalue()  # type: ignore[attr-defined]
    marked = sorted(c for c, entry in store.live().items() if entry.get(history.UNSMOKED) == "true")
    if meanwhile == "nothing":
        assert marked == []
        assert (
            "🏷  app, lambda:login_handler, deployed in dev without its smoke, passed this one: the unsmoked mark is "
            "taken off (an environment promoted from dev may take what it runs)\n"
        ) in said
        return
    landed = ["lambda:x"] if meanwhile == "deployed" else []  # marked too: its run had no smoke
    assert marked == ["app", "lambda:login_handler", *landed] and "🏷" not in said
    if meanwhile == "locked":
        assert "⚠️  the unsmoked mark of app, lambda:login_handler in dev stays: " in said and "deploy.auto" in said
    if meanwhile in ("deployed", "failed meanwhile"):
        assert (
            "⚠️  the unsmoked mark of app, lambda:login_handler in dev stays: a deploy ran while the checks ran (smoke "
            "again)\n"
        ) in said
    if meanwhile == "left in place":
        assert (
            "⚠️  the unsmoked mark of app, lambda:login_handler in dev stays: its newest run (deploy.app) failed, so "
            "what serves may not be what its live record names (deploy, then smoke again)\n"
        ) in said
    if meanwhile in ("only", "failed"):
        assert "unsmoked mark" not in said
