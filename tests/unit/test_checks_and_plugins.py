"""The check runner (parallel, needs, timeouts, JUnit) and the plugin manager (entry points, blocking, errors)."""

from __future__ import annotations

import importlib.metadata
import json
import subprocess
import sys
import threading
import time
import types
import xml.etree.ElementTree as ET
from collections.abc import Callable
from typing import Any
from unittest.mock import Mock

import pytest

from deploykit import hookspecs
from deploykit.checks import (
    Check,
    CheckContext,
    CheckResult,
    Http,
    HttpResponse,
    junit_xml,
    run_checks,
    select,
    table,
)
from deploykit.errors import UsageError
from deploykit.plugins import BLOCK_ENV, get_plugin_manager

CTX = CheckContext(Mock(), Mock(), Mock())


def check(
    name: str,
    *,
    result: str = "passed",
    delay: float = 0.0,
    needs: tuple[str, ...] = (),
    timeout: float = 5.0,
    barrier: threading.Barrier | None = None,
) -> Check:
    def run(ctx: CheckContext) -> CheckResult:
        if barrier is not None:
            barrier.wait()
        time.sleep(delay)
        if result == "raise":
            raise RuntimeError("boom")
        return CheckResult(name, result, detail=f"{name} {result}")  # type: ignore[arg-type]

    return Check(name, run, timeout=timeout, needs=needs)


def test_independent_checks_run_in_parallel() -> None:
    barrier = threading.Barrier(2, timeout=3)  # both must be running at once, or this breaks
    results = run_checks([check("a", barrier=barrier), check("b", barrier=barrier)], CTX)
    assert [r.status for r in results] == ["passed", "passed"]


def test_a_check_whose_prerequisite_failed_is_skipped_and_order_is_kept() -> None:
    results = run_checks([check("login", needs=("api",)), check("api", result="failed")], CTX)
    assert [(r.name, r.status) for r in results] == [("login", "skipped"), ("api", "failed")]
    assert "needs api (did not pass)" in results[0].detail


def test_a_raising_check_fails_with_its_error_and_a_slow_one_times_out() -> None:
    started = time.monotonic()
    results = run_checks([check("x", result="raise"), check("slow", delay=3, timeout=0.3)], CTX)
    assert time.monotonic() - started < 2
    assert results[0].status == "failed" and "RuntimeError: boom" in results[0].detail
    assert results[1].status == "failed" and results[1].detail == "timed out after 0.3s"


SIGNED = (
    "http://127.0.0.1:9/kyc/probe.pdf?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=ASIA%2F20261207"
    "&X-Amz-Security-Token=FQoGZXIvYXdzEXAMPLESESSIONTOKEN&X-Amz-Signature=0123abcd"
)


def test_what_a_team_check_says_of_a_presigned_url_keeps_its_credentials_out() -> None:
    """A check written as the README's example (a presigned GET through ctx.http) whose host does not answer: the
    whole URL, its signature and the deployer's session token, went into the table, --json, the history record and
    the chat. deploykit's HTTP client names the URL without its query, and each check's detail loses any URL's."""

    def download(ctx: CheckContext) -> CheckResult:
        ctx.http.get(SIGNED, timeout=2)
        return CheckResult.passed("download")

    def quoted(ctx: CheckContext) -> CheckResult:
        return CheckResult.failed("quoted", f"GET {SIGNED} answered 403")

    def token(ctx: CheckContext) -> CheckResult:
        HttpResponse(200, b"access_token=gho_16C7e42F&scope=repo", {"Content-Type": "text/plain"}).json()
        return CheckResult.passed("token")

    context = CheckContext(Mock(), Mock(), Mock(), Http())
    results = run_checks([Check("download", download), Check("quoted", quoted), Check("token", token)], context)
    assert [r.status for r in results] == ["failed"] * 3
    details = " ".join(r.detail for r in results)
    assert "EXAMPLESESSIONTOKEN" not in details and "X-Amz-Signature" not in details and "gho_" not in details
    assert results[0].detail.startswith("HttpError: GET http://127.0.0.1:9/kyc/probe.pdf?…: no answer")
    assert results[1].detail == "GET http://127.0.0.1:9/kyc/probe.pdf?… answered 403"
    assert results[2].detail == "ValueError: HTTP 200 answer is not JSON (text/plain, 36 bytes)"


def test_a_check_past_its_timeout_may_clean_up_as_the_process_ends_but_never_keeps_it_from_ending() -> None:
    """Past its timeout a check is reported failed; as the process ends, it waits LATE_CHECKS_GRACE seconds at most
    for such checks (their `finally` cleans up), then ends: a check that never returns does not hang `inv smoke` (a
    thread pool's threads are joined at exit: it would, for as long as the check runs)."""
    script = """
import time
from unittest.mock import Mock
from deploykit import checks
def late(ctx):
    try:
        time.sleep(1)
    finally:
        print("cleaned up", flush=True)
hang = checks.Check("hang", lambda ctx: time.sleep(120), timeout=0.2)
context = checks.CheckContext(Mock(), Mock(), Mock())
results = checks.run_checks([hang, checks.Check("late", late, timeout=0.2)], context)
print(*(r.detail for r in results), sep="\\n", flush=True)
checks.LATE_CHECKS_GRACE = 3.0
"""
    started = time.monotonic()
    ended = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=100)
    took = time.monotonic() - started
    assert ended.stdout == "timed out after 0.2s\ntimed out after 0.2s\n", ended.stderr  # the caller's print
    assert ended.stderr == "cleaned up\n"  # what a check prints goes to stderr (its own print, kept off --json)
    assert 2.5 < took < 30, took  # the grace waited for, then the hanging check left behind


def test_no_more_than_workers_checks_run_at_once() -> None:
    lock, now, most = threading.Lock(), [0], [0]

    def run(ctx: CheckContext) -> CheckResult:
        with lock:
            now[0] += 1
            most[0] = max(most[0], now[0])
        time.sleep(0.05)
        with lock:
            now[0] -= 1
        return CheckResult.passed("c")

    results = run_checks([Check(f"c{i}", run) for i in range(6)], CTX, workers=2)
    assert [r.status for r in results] == ["passed"] * 6 and most[0] == 2


def test_a_circle_of_needs_is_refused_and_never_waited_for() -> None:
    """a needs b, b needs a: each would wait for the other for ever. select refuses it (bad input); run_checks, given
    one anyway, skips them instead of spinning."""
    circle = [check("alb"), check("a", needs=("b",)), check("b", needs=("c",)), check("c", needs=("a",))]
    with pytest.raises(UsageError, match="the checks' needs go round in a circle: a → b → c → a"):
        select(circle, None)
    with pytest.raises(UsageError, match="circle: self → self"):
        select([check("self", needs=("self",))], ["self"])
    ran: list[list[CheckResult]] = []
    worker = threading.Thread(target=lambda: ran.append(run_checks(circle, CTX)), daemon=True)
    worker.start()
    worker.join(10)
    assert ran, "run_checks did not return"
    assert [(r.name, r.status) for r in ran[0]] == [("alb", "passed")] + [(n, "skipped") for n in "abc"]


def test_select_and_its_errors() -> None:
    checks = [check("alb"), check("auth")]
    assert [c.name for c in select(checks, ["auth"])] == ["auth"]
    with pytest.raises(UsageError, match="unknown check"):
        select(checks, ["albb"])
    with pytest.raises(UsageError, match="--only names no check"):  # `--only ,`
        select(checks, ["", " "])
    # what a chosen check needs is run too, in turn (else it would be skipped and --only would pass, unrun)
    chain = [check("api"), check("alb"), check("login", needs=("api",)), check("team", needs=("login",))]
    assert [c.name for c in select(chain, ["team"])] == ["api", "login", "team"]
    with pytest.raises(UsageError, match="two plugins register"):
        select([check("alb"), check("alb")], None)


def test_table_and_junit() -> None:
    results = [
        CheckResult("a", "passed", 0.5, "ok"),
        CheckResult("b", "failed", 1.0, "HTTP 503"),
        CheckResult("c", "skipped", 0.0, "needs b"),
    ]
    assert "❌ failed" in table(results)
    # a detail's lines run on in its cell: a line of its own starting "::" GitHub Actions reads as a command
    quoted = table([CheckResult("q", "failed", 0.1, "HTTP 500:\n::add-mask::failed")])
    assert "HTTP 500: ::add-mask::failed" in quoted and not any(
        line.lstrip().startswith("::") for line in quoted.split("\n")
    )
    root = ET.fromstring(junit_xml(results).split("?>", 1)[1])
    assert root.attrib["tests"] == "3" and root.attrib["failures"] == "1" and root.attrib["skipped"] == "1"
    assert root.find("testcase[@name='b']/failure").attrib["message"] == "HTTP 503"  # type: ignore[union-attr]


def test_a_check_answering_what_is_no_result_fails_its_row_which_every_output_can_show() -> None:
    """A status the runner does not know ("error"), a detail that is no text, a check that raises SystemExit: each a
    failed row the table, the JSON and the JUnit report show (before: a KeyError out of the table, mid-deploy, and
    "error" counted as no failure; a TypeError out of the JUnit and the JSON; SystemExit "timed out" at its timeout)."""

    def answering(result: object) -> Check:
        return Check("team", lambda ctx: result, timeout=5)  # type: ignore[arg-type,return-value]

    def leaving(ctx: CheckContext) -> CheckResult:
        raise SystemExit(3)

    started = time.monotonic()
    [error] = run_checks([answering(CheckResult("team", "error", detail="db down"))], CTX)  # type: ignore[arg-type]
    [odd] = run_checks([answering(CheckResult.failed("team", ValueError("bad")))], CTX)  # type: ignore[arg-type]
    [left] = run_checks([Check("team", leaving, timeout=5)], CTX)
    assert time.monotonic() - started < 4
    assert (error.status, error.detail) == (
        "failed",
        "returned status 'error', not one of passed, failed, skipped: db down",
    )
    assert (odd.status, odd.detail) == ("failed", "bad")
    assert (left.status, left.detail) == ("failed", "SystemExit: 3")
    results = [error, odd, left]
    assert table(results).count("❌ failed") == 3
    assert ET.fromstring(junit_xml(results).split("?>", 1)[1]).attrib["failures"] == "3"
    json.dumps([r.detail for r in results])


def test_the_junit_report_parses_whatever_a_failed_check_quotes() -> None:
    """A detail quoting an answer with an escape sequence or a NUL, which XML cannot hold: written as its escape."""
    detail = "GET /health → 500: \x1b[31mboom\x1b[0m \x00 \ufffe"
    root = ET.fromstring(junit_xml([CheckResult("alb", "failed", 0.1, detail)]).split("?>", 1)[1])
    assert root.find("testcase/failure").text == "GET /health → 500: \\x1b[31mboom\\x1b[0m \\x00 \\ufffe"  # type: ignore[union-attr]


def test_a_need_no_plugin_registers_names_the_check_it_may_be_a_typo_of() -> None:
    """needs=("alb_health",): the check skipped, and smoke passed without it; the row now names the likely one."""
    alb = Check("alb", lambda ctx: CheckResult.passed("alb", "ok"))
    team = Check("team", lambda ctx: CheckResult.passed("team", "ok"), needs=("alb_health",))
    [_, result] = run_checks([alb, team], CTX)
    assert (result.status, result.detail) == (
        "skipped",
        "needs alb_health (not run: no plugin registers it here; a typo of alb? (needs= of its Check))",
    )


def test_a_check_name_registered_twice_names_the_plugins_that_do() -> None:
    from deploykit.smoke import refuse_twice_named

    refuse_twice_named({"alb": ["alb"], "team_fleet": ["team_checks"]})  # once each: nothing said
    with pytest.raises(UsageError) as refused:
        refuse_twice_named({"alb": ["alb", "team_checks"], "fleet": ["team_checks", "team_checks"]})
    assert refused.value.message == (
        "more than one check of a name: alb by plugins alb, team_checks; fleet twice by plugin team_checks"
    )
    assert refused.value.exit_code == 2


def test_a_plugin_that_implements_no_hook_is_refused_naming_what_looks_meant() -> None:
    """A misspelt hook left unmarked (`deploykt_register_checks`), or an entry point naming the module where its class
    holds the hooks: the plugin loaded with no checks, and smoke passed without them, unsaid."""
    misspelt = types.ModuleType("dk_test_misspelt")
    misspelt.deploykt_register_checks = lambda env: []  # type: ignore[attr-defined]
    with pytest.raises(
        UsageError,
        match=r"plugin 'team' implements no hook of deploykit's \(close to "
        r"deploykit_register_checks\?\): it would add nothing",
    ) as refused:
        get_plugin_manager(entry_points=[], extra=[("team", misspelt)], environ={})
    assert refused.value.exit_code == 2 and "module:Class" in refused.value.next_step

    class TeamChecks:
        @hookspecs.hookimpl
        def deploykit_register_checks(self, env: object) -> list[Check]:
            return []

    module = types.ModuleType("dk_test_module")
    module.TeamChecks = TeamChecks  # type: ignore[attr-defined]
    with pytest.raises(UsageError, match=r"implements no hook of deploykit's \(TeamChecks holds them\?\)"):
        get_plugin_manager(entry_points=[], extra=[("team", module)], environ={})
    get_plugin_manager(entry_points=[], extra=[("team", TeamChecks())], environ={})  # its hooks: loaded

    class Idle:  # nothing of a plugin about to be refused runs: a property raising made the refusal a traceback
        @property
        def state(self) -> None:
            raise RuntimeError("side effect")

    with pytest.raises(UsageError, match=r"plugin 'idle' implements no hook of deploykit's: it would add nothing"):
        get_plugin_manager(entry_points=[], extra=[("idle", Idle())], environ={})


def test_needs_are_check_names() -> None:
    """needs="alb" is the letters a, l, b: three checks no plugin has; the check would be skipped, never run."""
    with pytest.raises(TypeError, match="check 'team': needs must be a tuple of check names, not 'alb'"):
        Check("team", Mock(), needs="alb")  # type: ignore[arg-type]
    assert Check("team", Mock(), needs=["alb"]).needs == ("alb",)  # type: ignore[arg-type]
    assert Check("team", Mock(), needs=(n for n in ["alb"])).needs == ("alb",)  # type: ignore[arg-type]  # read once


@pytest.mark.parametrize(
    ("made", "said"),
    [
        (lambda run: Check(run, "team"), r"a check's name must be a non-empty text, not <"),  # the two swapped
        (lambda run: Check("", run), r"a check's name must be a non-empty text, not ''"),
        (lambda run: Check("team", "fleet"), r"check 'team': run must be a function of the CheckContext, not 'fleet'"),
        (lambda run: Check("team", run, timeout="15s"), r"check 'team': timeout must be a number .* not '15s'"),
        (lambda run: Check("team", run, timeout=None), r"check 'team': timeout must be a number .* not None"),
        (lambda run: Check("team", run, timeout=0), r"check 'team': timeout must be a number .* not 0"),
    ],
)
def test_a_checks_fields_are_checked_as_it_is_made(made: Callable[[Any], Check], said: str) -> None:
    """A timeout of "15s" broke the smoke run when the checks ran, Check(run, NAME) when they were sorted: tracebacks,
    exit 1, far from the plugin's line. Said as the check's, where the plugin makes it."""
    with pytest.raises(TypeError, match=said):
        made(Mock())
    assert Check("team", Mock(), timeout=15).timeout == 15


def fake_entry_point(name: str, module: str) -> importlib.metadata.EntryPoint:
    return importlib.metadata.EntryPoint(name=name, value=module, group="deploykit")


@pytest.fixture
def plugin_modules() -> types.SimpleNamespace:
    good = types.ModuleType("dk_test_good")

    @hookspecs.hookimpl
    def deploykit_register_checks(env: object) -> list[Check]:
        return [check("team-check")]

    good.deploykit_register_checks = deploykit_register_checks  # type: ignore[attr-defined]
    typo = types.ModuleType("dk_test_typo")

    @hookspecs.hookimpl
    def deploykit_register_chekcs(env: object) -> list[Check]:
        return []

    typo.deploykit_register_chekcs = deploykit_register_chekcs  # type: ignore[attr-defined]
    sys.modules.update(dk_test_good=good, dk_test_typo=typo)
    yield types.SimpleNamespace(good=good, typo=typo)
    for name in ("dk_test_good", "dk_test_typo"):
        sys.modules.pop(name, None)


def test_plugins_from_entry_points_register_checks(plugin_modules: types.SimpleNamespace) -> None:
    plugins = get_plugin_manager(entry_points=[fake_entry_point("team", "dk_test_good")], environ={})
    registered = [c.name for group in plugins.manager.hook.deploykit_register_checks(env=None) for c in group]
    assert registered == ["team-check"]


def test_a_class_named_by_an_entry_point_is_made_once_per_manager() -> None:
    """No instance at import, shared by every manager of the process (the built-in notifier keeps a queue and a
    thread): each manager makes its own."""
    module = types.ModuleType("dk_test_class")

    class Plugin:
        made = 0

        def __init__(self) -> None:
            Plugin.made += 1

        @hookspecs.hookimpl
        def deploykit_register_checks(self, env: object) -> list[Check]:
            return [check("team-check")]

    module.Plugin = Plugin  # type: ignore[attr-defined]
    sys.modules["dk_test_class"] = module
    try:
        found = [fake_entry_point("team", "dk_test_class:Plugin")]
        first = get_plugin_manager(entry_points=found, environ={})
        second = get_plugin_manager(entry_points=found, environ={})
    finally:
        sys.modules.pop("dk_test_class")
    assert Plugin.made == 2
    assert isinstance(first.manager.get_plugin("team"), Plugin)
    assert first.manager.get_plugin("team") is not second.manager.get_plugin("team")
    assert [c.name for group in first.manager.hook.deploykit_register_checks(env=None) for c in group] == ["team-check"]


def test_a_plugin_that_fails_to_import_is_reported_and_the_others_load(plugin_modules: types.SimpleNamespace) -> None:
    plugins = get_plugin_manager(
        entry_points=[fake_entry_point("broken", "dk_no_such_module"), fake_entry_point("team", "dk_test_good")],
        environ={},
    )
    assert "broken" in plugins.broken and "ModuleNotFoundError" in plugins.broken["broken"]
    assert plugins.manager.get_plugin("team") is not None


def test_two_plugins_of_one_name_are_refused_and_one_listed_twice_loads_once(
    plugin_modules: types.SimpleNamespace,
) -> None:
    """A team's entry point named as a built-in (``notify``) left one of the two out, which depending on the order
    the path listed them, unsaid. The same entry point twice (two copies of a distribution's metadata) is one."""
    builtin = fake_entry_point("notify", "plugins.notify:Notifier")
    for order in (
        [builtin, fake_entry_point("notify", "dk_test_good")],
        [fake_entry_point("notify", "dk_test_good"), builtin],
    ):
        with pytest.raises(
            UsageError, match="two plugins are named 'notify' \\(entry points of the group deploykit: "
        ) as refused:
            get_plugin_manager(entry_points=order, environ={})
        assert "plugins.notify:Notifier" in refused.value.message and "dk_test_good" in refused.value.message
        assert "rename the team's entry point" in (refused.value.next_step or "")
    twice = get_plugin_manager(
        entry_points=[builtin, fake_entry_point("notify", "plugins.notify:Notifier")], environ={}
    )
    assert [name for name, _ in twice.manager.list_name_plugin()] == ["notify"] and not twice.broken


def test_blocking_by_environment_variable_removes_a_plugin(plugin_modules: types.SimpleNamespace) -> None:
    plugins = get_plugin_manager(
        entry_points=[fake_entry_point("team", "dk_test_good")], environ={BLOCK_ENV: "team, other"}
    )
    assert plugins.blocked == ("other", "team")
    assert plugins.manager.hook.deploykit_register_checks(env=None) == []


def test_a_misspelt_hook_fails_at_load_with_the_plugin_name(plugin_modules: types.SimpleNamespace) -> None:
    with pytest.raises(UsageError, match="plugin 'sloppy' implements a hook deploykit does not have"):
        get_plugin_manager(entry_points=[fake_entry_point("sloppy", "dk_test_typo")], environ={})


def test_a_hook_without_hookimpl_is_refused_at_load_naming_it() -> None:
    """pluggy calls only marked functions: an unmarked deploykit_* one would go silently unused."""

    class Unmarked:
        def deploykit_register_checks(self, env: object) -> list[Check]:
            return []

        def helper(self) -> None: ...

    with pytest.raises(UsageError) as refused:
        get_plugin_manager(entry_points=[], extra=[("team", Unmarked())], environ={})
    assert refused.value.message == (
        "plugin 'team' defines deploykit_register_checks() without @hookimpl: deploykit would never call it"
    )
    assert refused.value.next_step.startswith("mark it: from deploykit.hookspecs import hookimpl")


def test_a_hook_taking_an_argument_the_hook_does_not_have_is_refused_at_load() -> None:
    class WrongArgument:
        @hookspecs.hookimpl
        def deploykit_register_checks(self, environment: object) -> list[Check]:
            return []

    with pytest.raises(UsageError) as refused:
        get_plugin_manager(entry_points=[], extra=[("team", WrongArgument())], environ={})
    assert refused.value.message.startswith("plugin 'team' cannot be loaded: ")
    assert "environment" in refused.value.message
    assert refused.value.next_step.startswith("take only the hook's own arguments")


def test_every_hookspec_is_prefixed_and_documented() -> None:
    specs = [name for name in dir(hookspecs) if name.startswith("deploykit_")]
    assert set(specs) == {
        "deploykit_configure",
        "deploykit_register_checks",
        "deploykit_deployment_started",
        "deploykit_step_finished",
        "deploykit_deployment_finished",
        "deploykit_deployment_failed",
        "deploykit_deployment_not_run",
        "deploykit_review_stack_changes",
        "deploykit_smoke_finished",
        "deploykit_freeze_changed",
    }
    for name in specs:
        assert (getattr(hookspecs, name).__doc__ or "").strip(), f"{name} has no docstring"
