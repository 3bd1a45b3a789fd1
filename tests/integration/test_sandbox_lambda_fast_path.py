"""deploy.lambda on a private sandbox: a change to one function is live through API Gateway in seconds, with no
CloudFormation stack touched, and a later deploy.stack of the API keeps it instead of reverting it."""

from __future__ import annotations

import json
import random
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest

from deploykit import commands, lambda_chain, packaging
from deploykit.aws import AwsFactory
from deploykit.config import load_config
from deploykit.endpoints import Endpoints
from deploykit.errors import StepFailed, UsageError
from deploykit.plan import all_records
from tests.conftest import git, quiet_runtime
from tests.integration.sandbox_support import running_sandbox, sandbox_project

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("base_image")]

FN = "health_handler"
MARKER = 'body = {"status": "ok", '


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory, docker_engine: docker.DockerClient) -> Iterator[Path]:
    """A checkout of the whole platform (backend, lambda, cdk) whose deploy.toml targets a private sandbox."""
    root = sandbox_project(
        tmp_path_factory.mktemp("lambda-fast-path"),
        ("backend", "lambda", "cdk"),
        gitignore=".sandbox/\n__pycache__/\ncdk.out/\n",
    )
    with running_sandbox(root):
        yield root


@pytest.fixture(scope="module")
def deployed(project: Path) -> Endpoints:
    """Everything deployed once (the module's only deploy.full)."""
    report = commands.deploy_full(runtime=quiet_runtime(project))
    assert report is not None and report.ok
    return commands.endpoints(runtime=quiet_runtime(project))


def client(project: Path, service: str) -> Any:
    return AwsFactory(load_config(project / "deploy.toml").environment()).client(service)


def health(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=15) as answer:
        assert answer.status == 200
        return dict(json.loads(answer.read()))


def stacks(project: Path) -> dict[str, tuple[str, str]]:
    """Every stack's status and last change: a fast path must leave them all as they were."""
    return {
        s["StackName"]: (s["StackStatus"], str(s.get("LastUpdatedTime") or s["CreationTime"]))
        for s in client(project, "cloudformation").describe_stacks()["Stacks"]
    }


def release(project: Path, name: str) -> str:
    """Make the health function answer ``"release": name`` too, and commit; returns the commit's sha12."""
    handler = project / "lambda" / FN / "handler.py"
    text = handler.read_text()
    if '"release": ' in text:
        start = text.index('"release": ')
        text = text[:start] + f'"release": "{name}", ' + text[text.index(",", start) + 2 :]
    else:
        assert MARKER in text, "the health function builds its body as {'status': 'ok', ...}"
        text = text.replace(MARKER, MARKER + f'"release": "{name}", ', 1)
    handler.write_text(text)
    git(project, "commit", "-qam", f"{FN}: release {name}")
    return git(project, "rev-parse", "--short=12", "HEAD").strip()


def statuses(report: Any) -> dict[str, str]:
    return {r.step: r.status for r in report.records}


def detail(report: Any, step: str) -> str:
    return str(next(r.detail for r in report.records if r.step == step))


def test_a_function_change_is_live_in_seconds_without_cloudformation_and_a_stack_deploy_keeps_it(
    project: Path, deployed: Endpoints
) -> None:
    url = deployed.api_health_url
    function_name = deployed.functions[FN]
    lam = client(project, "lambda")
    before = health(url)
    assert before["status"] == "ok" and "release" not in before
    stacks_before = stacks(project)
    assert lambda_chain.live_git_sha(lam, function_name) is None  # CloudFormation published it: no commit named

    # the fast path, as `inv deploy.lambda health_handler` runs it (smoke included)
    sha = release(project, "fast-1")
    started = time.monotonic()
    report = commands.deploy_lambda(FN, runtime=quiet_runtime(project))
    with_smoke = time.monotonic() - started
    assert report is not None and report.ok
    assert statuses(report) == {
        "upload-lambda": "done",
        "update-code": "done",
        "publish-version": "done",
        "move-alias": "done",
        "smoke": "done",
    }, [(r.step, r.detail) for r in report.records]
    answer = health(url)
    assert answer["release"] == "fast-1"
    assert answer["function_version"] == report.outputs()[f"{FN}.version"]
    assert lambda_chain.live_git_sha(lam, function_name) == sha
    assert stacks(project) == stacks_before  # no stack was updated

    # the chain alone (--no-smoke), another change
    sha = release(project, "fast-2")
    started = time.monotonic()
    report = commands.deploy_lambda(FN, smoke=False, runtime=quiet_runtime(project))
    chain_only = time.monotonic() - started
    assert report is not None and report.ok
    assert health(url)["release"] == "fast-2"
    assert lambda_chain.live_git_sha(lam, function_name) == sha
    key = lambda_chain.live_code_keys(lam, {FN: function_name})[FN]

    # again with no change: every step skipped
    started = time.monotonic()
    again = commands.deploy_lambda(FN, runtime=quiet_runtime(project))
    unchanged = time.monotonic() - started
    assert again is not None and set(statuses(again).values()) == {"skipped"}
    assert stacks(project) == stacks_before

    # a stack deploy of the API afterwards keeps what the fast path shipped
    stack = commands.deploy_stack("api", runtime=quiet_runtime(project))
    assert stack is not None and stack.ok
    assert health(url)["release"] == "fast-2"
    api = client(project, "cloudformation").describe_stacks(StackName="CarRentalApiStack")["Stacks"][0]
    assert {p["ParameterKey"]: p["ParameterValue"] for p in api["Parameters"]}["HealthHandlerCodeKey"] == key
    assert lambda_chain.live_code_keys(lam, {FN: function_name})[FN] == key

    print(
        f"\ndeploy.lambda {FN}: {with_smoke:.2f}s with smoke, {chain_only:.2f}s without (--no-smoke), "
        f"{unchanged:.2f}s with nothing to do"
    )
    assert chain_only <= 4.0, f"the fast path took {chain_only:.1f}s"


def test_rollback_finds_the_version_cloudformation_published_by_its_code(project: Path, deployed: Endpoints) -> None:
    """deploy.full published version 1 through the API stack: its description names its code, not a commit."""
    full = next(r for r in commands.history_list(runtime=quiet_runtime(project)) if r.command == "deploy.full")
    report = commands.rollback(component=f"lambda:{FN}", to=full.head[:7], runtime=quiet_runtime(project))
    assert report is not None and report.ok
    answer = health(deployed.api_health_url)
    assert "release" not in answer and answer["function_version"] == "1"


class Traffic:
    """Requests to a URL, one after the other from a thread, until stopped: what users send while a canary runs."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.answers: list[tuple[int, str]] = []  # status, the release that answered
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Traffic:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                with urllib.request.urlopen(self.url, timeout=15) as answer:
                    self.answers.append((answer.status, str(json.loads(answer.read()).get("release", ""))))
            except urllib.error.HTTPError as exc:
                self.answers.append((exc.code, ""))
            time.sleep(0.02)


def test_a_canary_takes_a_failing_version_back_on_its_first_errors_and_lets_a_good_one_in(
    project: Path, deployed: Endpoints
) -> None:
    """Weighted alias routing, Lambda's per-version metrics and the canary's watch together: a release that fails
    every request reaches some users, is taken back within a poll or two, and the live version serves alone again;
    a good one serves its share, then everything."""
    url, lam = deployed.api_health_url, client(project, "lambda")
    function_name = deployed.functions[FN]
    release(project, "before-canary")
    assert commands.deploy_lambda(FN, smoke=False, runtime=quiet_runtime(project)) is not None
    live = str(lam.get_alias(FunctionName=function_name, Name="live")["FunctionVersion"])

    handler = project / "lambda" / FN / "handler.py"
    good = handler.read_text()
    handler.write_text(good + '\n\ndef handler(event, context):  # noqa: F811\n    raise RuntimeError("broken")\n')
    git(project, "commit", "-qam", f"{FN}: broken")
    started = time.monotonic()
    with Traffic(url) as traffic, pytest.raises(StepFailed, match=f"the canary of {FN} failed: version "):
        commands.deploy_lambda(FN, canary="50", bake="60s", smoke=False, runtime=quiet_runtime(project))
    taken_back = time.monotonic() - started
    alias = lam.get_alias(FunctionName=function_name, Name="live")
    assert alias["FunctionVersion"] == live and not (alias.get("RoutingConfig") or {}).get("AdditionalVersionWeights")
    assert 502 in {code for code, _ in traffic.answers}  # some users met it: that is what a canary limits
    assert health(url)["release"] == "before-canary"
    broken = list(traffic.answers)

    handler.write_text(good)
    release(project, "after-canary")
    started = time.monotonic()
    with Traffic(url) as traffic:
        report = commands.deploy_lambda(FN, canary="50", bake="3s", smoke=False, runtime=quiet_runtime(project))
    assert report is not None and report.ok, report.error if report else None
    assert time.monotonic() - started >= 3.0
    canary = next(r for r in report.records if r.step == "canary")
    assert canary.status == "done" and " 0 errors (version " in canary.detail, canary.detail
    served = {release for code, release in traffic.answers if code == 200}
    assert {"before-canary", "after-canary"} <= served and 502 not in {code for code, _ in traffic.answers}
    assert health(url)["release"] == "after-canary"
    failed = sum(1 for code, _ in broken if code == 502)
    print(
        f"\ncanary of a broken release: taken back {taken_back:.2f}s after deploy.lambda began, {failed} of "
        f"{len(broken)} requests failed meanwhile; a good release's 3 s canary: {len(traffic.answers)} requests"
    )


def test_lambda_cleanup_keeps_what_serves_and_what_rollback_and_the_stack_need(
    project: Path, deployed: Endpoints
) -> None:
    """After the deploys above (each recorded), three versions no record names; with --keep 1 those two of them
    that are not the newest go, and nothing that serves, was recorded or is held by the API stack; the next
    deploy publishes past every number used and is live."""
    lam = client(project, "lambda")
    function_name = deployed.functions[FN]
    serving = lam.get_alias(FunctionName=function_name, Name="live")["FunctionVersion"]
    for n in range(3):  # e.g. deploys older than the newest records
        lam.update_function_configuration(FunctionName=function_name, Description=f"an old deploy {n}")
        lam.publish_version(FunctionName=function_name, Description=f"git {n}0000000000{n}")
    listed = [v["Version"] for v in lam.list_versions_by_function(FunctionName=function_name)["Versions"]]
    newest = max(int(v) for v in listed if v != "$LATEST")

    decision = commands.lambda_cleanup(function=FN, keep=1, runtime=quiet_runtime(project))
    why = {c.version.number: (c.delete, "; ".join(c.reasons)) for c in decision.choices}
    assert {n for n, (delete, _) in why.items() if delete} == {newest - 1, newest - 2}, why
    assert "alias live" in why[int(serving)][1]
    assert any("held by CarRentalApiStack" in reasons for _, reasons in why.values())  # CloudFormation's own
    assert "runs the code of" in why[1][1]  # deploy.full's version: it names its code, rollback finds it so
    assert all(not why[n][0] for n in why if n not in (newest - 1, newest - 2))
    remaining = {v["Version"] for v in lam.list_versions_by_function(FunctionName=function_name)["Versions"]}
    assert str(newest - 1) not in remaining and str(newest - 2) not in remaining

    release(project, "after-cleanup")
    report = commands.deploy_lambda(FN, runtime=quiet_runtime(project))
    assert report is not None and report.ok
    assert int(report.outputs()[f"{FN}.version"]) == newest + 1
    assert health(deployed.api_health_url)["release"] == "after-cleanup"


def big_pip(requirements: Path, target: Path) -> None:
    """What pip --target writes for a 6 MiB package (its bytes do not compress) that the handler then imports."""
    (target / "bigpkg").mkdir()
    (target / "bigpkg" / "__init__.py").write_text("VALUE = 'vendored 42'\n")
    (target / "bigpkg" / "blob.bin").write_bytes(random.Random(7).randbytes(6 * 1024 * 1024))


def test_a_handler_change_beside_big_requirements_sends_the_handler_and_runs_with_them(
    project: Path, deployed: Endpoints
) -> None:
    """The function vendors 6 MiB (as if from pip, into deploykit's cache): the first deploy keeps them in the
    bucket, a handler change then sends the handler and the zip's directory only, S3 copying the rest, and the
    sandbox's Lambda runs the zip put together so, importing the vendored package."""
    folder = project / "lambda" / FN
    (folder / "requirements.txt").write_text("bigpkg==1.0\n")
    packaging.package_function(folder, requirements_cache=packaging.default_vendor_cache(), installer=big_pip)
    git(project, "add", "-A")
    git(project, "commit", "-qm", f"{FN}: vendors bigpkg")
    first = commands.deploy_lambda(FN, smoke=False, runtime=quiet_runtime(project))
    assert first is not None and first.ok
    assert "its vendored packages kept at lambda-vendored/" in detail(first, "upload-lambda")

    handler = folder / "handler.py"
    handler.write_text(handler.read_text().replace(MARKER, MARKER + '"vendored": __import__("bigpkg").VALUE, ', 1))
    git(project, "commit", "-qam", f"{FN}: answers with bigpkg")
    package = packaging.package_function(folder)
    report = commands.deploy_lambda(FN, smoke=False, runtime=quiet_runtime(project))

    assert report is not None and report.ok
    sent = len(package.zip_bytes) - package.prefix_length
    assert f"{sent} B sent (its {package.prefix_length} B of vendored packages copied" in detail(
        report, "upload-lambda"
    )
    assert sent < 64 * 1024
    assert health(deployed.api_health_url)["vendored"] == "vendored 42"


def test_inv_invoke_calls_the_live_alias_or_a_version_and_shows_what_it_answered(
    project: Path, deployed: Endpoints
) -> None:
    """inv invoke: the live alias's version answers the event given, its log's tail shown; a version that raises is a
    failed invocation (exit 1) whose answer is shown all the same; a version the function lacks is bad input."""
    lam, function_name = client(project, "lambda"), deployed.functions[FN]
    requirements = project / "lambda" / FN / "requirements.txt"
    if requirements.exists():  # the test before vendors a package no index has, through a cache of its own
        handler = project / "lambda" / FN / "handler.py"
        handler.write_text(handler.read_text().replace('"vendored": __import__("bigpkg").VALUE, ', ""))
        requirements.unlink()
        git(project, "commit", "-qam", f"{FN}: vendors nothing")
    sha = release(project, "invoked")
    assert commands.deploy_lambda(FN, smoke=False, runtime=quiet_runtime(project)) is not None
    good = str(lam.get_alias(FunctionName=function_name, Name="live")["FunctionVersion"])
    runtime = quiet_runtime(project)
    result = commands.invoke_function(FN, event='{"httpMethod": "GET"}', runtime=runtime)
    assert (result.qualifier, result.version, result.status, result.function_error) == ("live", good, 200, "")
    assert json.loads(result.answer["body"])["release"] == "invoked"
    said = runtime.stderr.getvalue()  # type: ignore[attr-defined]
    assert f"⚡ {FN} in sandbox: {function_name}:live → version {good} (git {sha}), status 200 in " in said
    assert "📜 the last lines it logged:" in said and "START RequestId" in said
    assert json.loads(runtime.stdout.getvalue())["statusCode"] == 200  # type: ignore[attr-defined]
    refused = commands.invoke_function(FN, event='{"httpMethod": "POST"}', as_json=True, runtime=quiet_runtime(project))
    assert refused.answer["statusCode"] == 405  # the handler's own answer: a successful invocation

    handler = project / "lambda" / FN / "handler.py"
    fine = handler.read_text()
    handler.write_text(fine + '\n\ndef handler(event, context):  # noqa: F811\n    raise KeyError("body")\n')
    git(project, "commit", "-qam", f"{FN}: raises")
    try:
        assert commands.deploy_lambda(FN, smoke=False, runtime=quiet_runtime(project)) is not None
        runtime = quiet_runtime(project)
        with pytest.raises(StepFailed) as failed:
            commands.invoke_function(FN, runtime=runtime)
        assert failed.value.exit_code == 1
        assert f"{FN} version {int(good) + 1} (git " in failed.value.message
        assert "failed (Unhandled): KeyError: 'body'" in failed.value.message
        assert f"inv logs --env sandbox --component lambda:{FN} --since 10m" in (failed.value.next_step or "")
        assert json.loads(runtime.stdout.getvalue())["errorType"] == "KeyError"  # type: ignore[attr-defined]
        again = commands.invoke_function(FN, version=good, runtime=quiet_runtime(project))
        assert (again.version, again.status, again.function_error) == (good, 200, "")
        with pytest.raises(UsageError, match=f"{function_name} has no version 999 in sandbox"):
            commands.invoke_function(FN, version="999", runtime=quiet_runtime(project))
    finally:
        handler.write_text(fine)
        git(project, "commit", "-qam", f"{FN}: fine again")
        assert commands.deploy_lambda(FN, smoke=False, runtime=quiet_runtime(project)) is not None


JOBS_STACK = '''"""CarRentalJobsStack: a function of the team's own that no route calls (it runs when invoked)."""

from __future__ import annotations

from typing import Any

from aws_cdk import Stack
from aws_cdk import aws_s3 as s3
from constructs import Construct

from stacks.common.functions import deployed_function
from stacks.common.settings import Settings


class CarRentalJobsStack(Stack):
    def __init__(
        self, scope: Construct, construct_id: str, *, settings: Settings, artifacts_bucket: s3.IBucket, **kwargs: Any
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)
        deployed_function(
            self, "nightly_job", description="The nightly job", settings=settings, artifacts_bucket=artifacts_bucket
        )
'''
NIGHTLY = 'def handler(event, context):\n    return {"job": "nightly", "run": "first"}\n'


def test_a_function_in_a_stack_of_the_teams_own_is_deployed_with_it_then_takes_the_fast_path_which_it_keeps(
    project: Path, deployed: Endpoints
) -> None:
    """A function in a stack of the team's own (stacks/common/functions.py), not in the API stack: deploy.auto
    creates it with its stack; a handler change then takes the fast path alone; a change of its stack deploys that
    stack, which keeps the fast path's code; the stack's code parameter keeps its zip from lambda.cleanup; moved to
    the API stack and that run undone, it moves back; inv destroy --stack takes both out of the live record."""
    cdk, lam = project / "cdk", client(project, "lambda")
    (project / "lambda" / "nightly_job").mkdir()
    handler = project / "lambda" / "nightly_job" / "handler.py"
    handler.write_text(NIGHTLY)
    (cdk / "stacks" / "jobs_stack.py").write_text(JOBS_STACK)
    settings = cdk / "stacks" / "common" / "settings.py"
    field = '    api: str = "CarRentalApiStack"\n'
    settings.write_text(settings.read_text().replace(field, field + '    jobs: str = "CarRentalJobsStack"\n'))
    app = cdk / "app.py"
    imports, tags = "from stacks.registry_stack import", '    Tags.of(app).add("Project", PROJECT_TAG)\n'
    made = (
        "    CarRentalJobsStack(\n"
        "        app, names.jobs, settings=settings, artifacts_bucket=registry.artifacts_bucket, "
        '**stack_props("jobs")\n'
        "    )\n"
    )
    text = app.read_text()
    assert imports in text and tags in text
    text = text.replace(imports, "from stacks.jobs_stack import CarRentalJobsStack  # noqa: E402\n" + imports)
    app.write_text(text.replace(tags, made + tags))
    toml = project / "deploy.toml"
    table = "[environments.sandbox.stacks]\n"
    assert table in toml.read_text()
    toml.write_text(toml.read_text().replace(table, table + 'jobs = "CarRentalJobsStack"\n'))
    git(project, "add", "-A")
    git(project, "commit", "-qm", "jobs: a stack of our own with a function")

    def ran(report: Any) -> list[tuple[str, str]]:  # what changed something (a synthesis aside)
        return [
            (r.step, r.detail.split(":")[0])
            for r in all_records(report.records)
            if r.status == "done" and not r.children and r.step != "synth"
        ]

    report = commands.deploy_auto(runtime=quiet_runtime(project))
    assert report is not None and report.ok
    # (the API stack, which cdk/app.py's change deploys too, takes the code the fast path shipped as its parameter)
    assert [r for r in ran(report) if r[1] != "CarRentalApiStack"] == [
        ("upload-lambda", "nightly_job"),
        ("deploy-stack", "CarRentalJobsStack"),
        ("smoke", "5 passed"),
    ], ran(report)
    found = commands.endpoints(runtime=quiet_runtime(project))
    name = found.functions["nightly_job"]
    assert found.hosts["nightly_job"] == "CarRentalJobsStack" and found.hosts[FN] == "CarRentalApiStack"
    assert commands.invoke_function("nightly_job", runtime=quiet_runtime(project)).answer == {
        "job": "nightly",
        "run": "first",
    }
    [record] = commands.history_list(limit=1, runtime=quiet_runtime(project))
    assert {"stack:jobs", "lambda:nightly_job"} <= set(record.deployed)

    # its handler changed: the fast path alone, no stack
    handler.write_text(NIGHTLY.replace('"first"', '"second"'))
    git(project, "commit", "-qam", "nightly_job: the second run")
    before = stacks(project)
    report = commands.deploy_auto(runtime=quiet_runtime(project))
    assert report is not None and report.ok
    assert [step for step, _ in ran(report)] == [
        "upload-lambda",
        "update-code",
        "publish-version",
        "move-alias",
        "smoke",
    ]
    assert stacks(project) == before
    assert commands.invoke_function("nightly_job", runtime=quiet_runtime(project)).answer["run"] == "second"
    key = lambda_chain.live_code_keys(lam, {"nightly_job": name})["nightly_job"]

    # its stack changed (the function's memory): that stack alone, keeping what the fast path shipped
    module = cdk / "stacks" / "jobs_stack.py"
    module.write_text(
        module.read_text().replace('description="The nightly job",', 'description="The nightly job", memory_size=512,')
    )
    git(project, "commit", "-qam", "jobs: more memory")
    report = commands.deploy_auto(runtime=quiet_runtime(project))
    assert report is not None and report.ok
    assert ran(report) == [("deploy-stack", "CarRentalJobsStack"), ("smoke", "5 passed")], ran(report)
    assert commands.invoke_function("nightly_job", runtime=quiet_runtime(project)).answer["run"] == "second"
    assert lam.get_function_configuration(FunctionName=name, Qualifier="live")["MemorySize"] == 512
    jobs = client(project, "cloudformation").describe_stacks(StackName="CarRentalJobsStack")["Stacks"][0]
    assert {p["ParameterKey"]: p["ParameterValue"] for p in jobs["Parameters"]} == {"NightlyJobCodeKey": key}

    # the stack back on its previous commit (its memory) keeps the code too; then deploy.stack of HEAD's, the same
    report = commands.rollback(component="stack:jobs", runtime=quiet_runtime(project))
    assert report is not None and report.ok
    assert lam.get_function_configuration(FunctionName=name, Qualifier="live")["MemorySize"] == 256
    assert commands.invoke_function("nightly_job", runtime=quiet_runtime(project)).answer["run"] == "second"
    git(project, "revert", "--no-edit", "HEAD")  # the memory change, as the rollback's refusal asks
    handler.write_text(NIGHTLY.replace('"first"', '"third"'))
    git(project, "commit", "-qam", "nightly_job: the third run")
    assert commands.deploy_lambda("nightly_job", smoke=False, runtime=quiet_runtime(project)) is not None
    report = commands.deploy_stack("jobs", runtime=quiet_runtime(project))
    assert report is not None and report.ok
    assert commands.invoke_function("nightly_job", runtime=quiet_runtime(project)).answer["run"] == "third"
    key = lambda_chain.live_code_keys(lam, {"nightly_job": name})["nightly_job"]

    # one commit changing its handler and its stack: the stack's deploy brings the new code (no fast path); the run
    # undone, the stack goes back given the code the function goes back to, not the code the run brought
    handler.write_text(NIGHTLY.replace('"first"', '"fourth"'))
    module.write_text(
        module.read_text().replace('description="The nightly job",', 'description="The nightly job", memory_size=384,')
    )
    git(project, "commit", "-qam", "jobs: the fourth run, with more memory")
    report = commands.deploy_auto(runtime=quiet_runtime(project))
    assert report is not None and report.ok
    assert [r for r in ran(report) if r[0] != "deploy-stack" or r[1] != "CarRentalApiStack"] == [
        ("upload-lambda", "nightly_job"),
        ("deploy-stack", "CarRentalJobsStack"),
        ("smoke", "5 passed"),
    ], ran(report)
    assert commands.invoke_function("nightly_job", runtime=quiet_runtime(project)).answer["run"] == "fourth"
    report = commands.rollback(run="last", runtime=quiet_runtime(project))
    assert report is not None and report.ok
    assert commands.invoke_function("nightly_job", runtime=quiet_runtime(project)).answer["run"] == "third"
    assert lam.get_function_configuration(FunctionName=name, Qualifier="live")["MemorySize"] == 256
    jobs = client(project, "cloudformation").describe_stacks(StackName="CarRentalJobsStack")["Stacks"][0]
    assert {p["ParameterKey"]: p["ParameterValue"] for p in jobs["Parameters"]} == {"NightlyJobCodeKey": key}

    # lambda.cleanup keeps the zip the stack's code parameter names, whatever else goes
    run = quiet_runtime(project)
    commands.lambda_cleanup(function="nightly_job", keep=1, dry_run=True, as_json=True, runtime=run)
    listed = json.loads(run.stdout.getvalue())["zips"]["objects"]  # type: ignore[attr-defined]
    kept = {o["key"]: (o["action"], o["why"]) for o in listed}
    assert kept[key][0] == "keep" and "sandbox: CarRentalJobsStack's NightlyJobCodeKey" in kept[key][1], kept

    # moved to the API stack with a new handler (the fourth run reverted, as rolled back): the API stack's deploy makes
    # it anew with that code and the jobs stack's deletes the old one; the run undone, it moves back, one function
    # again, made anew by the jobs stack with the code it ran before, which no version of the moved one ran
    git(project, "revert", "--no-edit", "HEAD")
    app.write_text(app.read_text() + "# every stack deployed from one commit: the undo below takes both back to it\n")
    git(project, "commit", "-qam", "cdk/app.py: a comment")
    report = commands.deploy_auto(runtime=quiet_runtime(project))
    assert report is not None and report.ok
    api = cdk / "stacks" / "api_stack.py"
    opening = "        super().__init__(scope, construct_id, **kwargs)\n"
    assert opening in api.read_text()
    cut = JOBS_STACK.index("        deployed_function(")
    api.write_text(api.read_text().replace(opening, opening + JOBS_STACK[cut:]))
    kept = '        ssm.StringParameter(self, "Schedule", string_value="nightly")\n'  # one resource at least
    ssm = "import aws_s3 as s3\nfrom aws_cdk import aws_ssm as ssm\n"
    module.write_text((JOBS_STACK[:cut] + kept).replace("import aws_s3 as s3\n", ssm))
    handler.write_text(NIGHTLY.replace('"first"', '"fifth"'))
    app.write_text(app.read_text() + "# and every stack deployed with the move, most changing nothing\n")
    git(project, "commit", "-qam", "nightly_job moves to the API stack, for its fifth run")
    for alone, effect in (("jobs", "delete nightly_job, which would run nowhere"), ("api", "run nightly_job twice")):
        with pytest.raises(UsageError, match=f"and this run deploys .* without .*: it would {effect}"):
            commands.deploy_stack(alone, runtime=quiet_runtime(project))  # half the move: refused, nothing changed
    report = commands.deploy_auto(runtime=quiet_runtime(project))
    assert report is not None and report.ok
    assert [r for r in ran(report) if r[0] == "deploy-stack"] == [
        ("deploy-stack", "CarRentalApiStack"),
        ("deploy-stack", "CarRentalJobsStack"),
    ], ran(report)
    moved = commands.endpoints(runtime=quiet_runtime(project))
    assert moved.hosts["nightly_job"] == "CarRentalApiStack" and moved.functions["nightly_job"] != name
    assert commands.invoke_function("nightly_job", runtime=quiet_runtime(project)).answer["run"] == "fifth"
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.get_function(FunctionName=name)
    report = commands.rollback(run="last", runtime=quiet_runtime(project))
    assert report is not None and report.ok
    undone = [r.step for r in all_records(report.records) if not r.children]
    assert "upload-lambda" in undone and "update-code" not in undone, undone  # the jobs stack's deploy, its code
    # the stacks the move's run changed nothing in are carried back, no change set made for them
    stacks_back = [r.detail.split(":")[0] for r in all_records(report.records) if r.step == "deploy-stack"]
    assert sorted(stacks_back) == ["CarRentalApiStack", "CarRentalJobsStack"], stacks_back
    [undo] = commands.history_list(limit=1, runtime=quiet_runtime(project))
    assert {"stack:registry", "stack:data", "stack:auth", "stack:fargate"} <= set(undo.unchanged), undo.unchanged
    back = commands.endpoints(runtime=quiet_runtime(project))
    assert back.hosts["nightly_job"] == "CarRentalJobsStack"
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.get_function(FunctionName=moved.functions["nightly_job"])
    assert commands.invoke_function("nightly_job", runtime=quiet_runtime(project)).answer["run"] == "third"
    jobs = client(project, "cloudformation").describe_stacks(StackName="CarRentalJobsStack")["Stacks"][0]
    assert {p["ParameterKey"]: p["ParameterValue"] for p in jobs["Parameters"]} == {"NightlyJobCodeKey": key}
    for stack in ("CarRentalApiStack", "CarRentalJobsStack"):  # both went back from one commit: each with its tags
        [described] = client(project, "cloudformation").describe_stacks(StackName=stack)["Stacks"]
        assert {"Project", "Environment"} <= {t["Key"] for t in described.get("Tags") or ()}, stack
    # made anew by the move back, its one version runs the third run's code: going back to the deploy before (the
    # second run's: the fourth's was undone), whose code no version runs, publishes that code again
    report = commands.rollback(component="lambda:nightly_job", runtime=quiet_runtime(project))
    assert report is not None and report.ok
    assert [r.step for r in all_records(report.records)][1:4] == ["update-code", "publish-version", "move-alias"]
    assert commands.invoke_function("nightly_job", runtime=quiet_runtime(project)).answer["run"] == "second"

    # deleted alone: the function goes with it, out of the live record too
    report = commands.destroy(stack="jobs", runtime=quiet_runtime(project))
    assert report is not None and report.ok
    [record] = commands.history_list(limit=1, runtime=quiet_runtime(project))
    assert record.command == "destroy" and record.removed == ["stack:jobs", "lambda:nightly_job"]
    assert "nightly_job" not in commands.endpoints(runtime=quiet_runtime(project)).functions
