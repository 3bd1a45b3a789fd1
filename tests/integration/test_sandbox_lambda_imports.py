"""What Lambda runs of a function before any request, on a private sandbox.

A function whose zip would not import on Lambda is refused before anything is uploaded; with the check off, the
sandbox's Lambda fails its import as AWS would (the sandbox's Python has the package, its functions do not), smoke
fails and the automatic rollback puts the version that served back; a layer named in deploy.toml lets it in, without
restarting the sandbox.

An alias with provisioned concurrency serves a new version once its environments are initialized: the move waits for
it, and an init that raises fails the allocation, the move, and the automatic rollback moves the alias back."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from deploykit import commands, lambda_chain, lambda_imports
from deploykit.errors import StepFailed, UsageError
from tests.conftest import git, quiet_runtime
from tests.integration.test_sandbox_lambda_fast_path import FN, MARKER, client, health

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("base_image")]


def versions(project: Path, function_name: str) -> list[str]:
    listed = client(project, "lambda").list_versions_by_function(FunctionName=function_name)["Versions"]
    return [v["Version"] for v in listed]


def serving(project: Path, function_name: str) -> str:
    return str(client(project, "lambda").get_alias(FunctionName=function_name, Name="live")["FunctionVersion"])


def test_a_package_the_sandbox_has_and_lambda_has_not_is_refused_fails_as_on_aws_and_a_layer_lets_it_in(
    sandbox_deployed_project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = sandbox_deployed_project
    deployed = commands.endpoints(runtime=quiet_runtime(project))
    function_name = deployed.functions[FN]
    handler = project / "lambda" / FN / "handler.py"
    handler.write_text(handler.read_text() + "\nimport requests  # the status page's webhook\n")
    line = len(handler.read_text().splitlines())
    git(project, "commit", "-qam", f"{FN}: requests, not vendored")
    before, was = versions(project, function_name), serving(project, function_name)

    with pytest.raises(UsageError) as refused:
        commands.deploy_auto(runtime=quiet_runtime(project))
    assert refused.value.exit_code == 2
    assert refused.value.message.startswith(
        f"lambda/{FN} would not import on Lambda: handler.py:{line}: imports requests, which neither the zip"
    )
    assert versions(project, function_name) == before and serving(project, function_name) == was
    # inv diff says it in its analysis, its JSON and what a pull request's reviewer must not miss
    runtime = quiet_runtime(project)
    commands.diff(as_json=True, runtime=runtime)
    out, err = runtime.stdout.getvalue(), runtime.stderr.getvalue()  # type: ignore[attr-defined]
    assert json.loads(out)["unimportable"][FN][0].startswith(f"handler.py:{line}: imports requests")
    assert f"⛔ lambda/{FN} would not import on Lambda: handler.py:{line}: imports requests" in err
    runtime = quiet_runtime(project)
    commands.diff(as_markdown=True, runtime=runtime)
    assert f"lambda/{FN} would not import on Lambda" in runtime.stdout.getvalue()  # type: ignore[attr-defined]

    # the check off: published, live moved onto it, and the sandbox's Lambda fails its import as AWS's would
    monkeypatch.setenv(lambda_imports.SKIP_ENV, "1")
    with pytest.raises(StepFailed, match="smoke failed"):
        commands.deploy_auto(runtime=quiet_runtime(project))
    monkeypatch.delenv(lambda_imports.SKIP_ENV)
    [published] = [v for v in versions(project, function_name) if v not in before]
    assert serving(project, function_name) == was  # the automatic rollback
    assert health(deployed.api_health_url)["status"] == "ok"
    answer = client(project, "lambda").invoke(FunctionName=function_name, Qualifier=published, Payload=b"{}")
    error = json.loads(answer["Payload"].read())
    assert answer["FunctionError"] == "Unhandled"
    assert error["errorType"] == "Runtime.ImportModuleError"
    assert error["errorMessage"] == "Unable to import module 'handler': No module named 'requests'"

    # a layer gives it on AWS: named in deploy.toml, the check lets it through and the running sandbox imports it
    toml = project / "deploy.toml"
    toml.write_text(toml.read_text().replace("[build]\n", '[build]\nlambda_runtime_modules = ["requests"]\n', 1))
    git(project, "commit", "-qam", "a layer gives the functions requests")
    report = commands.deploy_auto(runtime=quiet_runtime(project))
    assert report is not None and report.ok
    assert serving(project, function_name) == published  # the same code: the version published before, reused
    assert health(deployed.api_health_url)["status"] == "ok"


def allocation(project: Path, function_name: str) -> dict[str, object]:
    found = client(project, "lambda").get_provisioned_concurrency_config(FunctionName=function_name, Qualifier="live")
    return {k: v for k, v in found.items() if k != "ResponseMetadata"}


def test_an_alias_with_provisioned_concurrency_serves_a_release_once_it_is_warm_and_an_init_that_raises_goes_back(
    sandbox_deployed_project: Path,
) -> None:
    project = sandbox_deployed_project
    deployed = commands.endpoints(runtime=quiet_runtime(project))
    function_name = deployed.functions[FN]
    lam = client(project, "lambda")
    lam.put_provisioned_concurrency_config(
        FunctionName=function_name, Qualifier="live", ProvisionedConcurrentExecutions=2
    )
    assert allocation(project, function_name)["Status"] == "IN_PROGRESS"  # the sandbox takes a second, AWS minutes
    deadline = time.monotonic() + 30
    while allocation(project, function_name)["Status"] != "READY" and time.monotonic() < deadline:
        time.sleep(0.2)
    assert allocation(project, function_name)["AvailableProvisionedConcurrentExecutions"] == 2

    # a release: the alias moves, its requests go to the version it served until the new one's environments are up,
    # and the move waits for that before smoke judges it
    handler = project / "lambda" / FN / "handler.py"
    handler.write_text(handler.read_text().replace(MARKER, 'body = {"release": "warm", "status": "ok", '))
    git(project, "commit", "-qam", f"{FN}: names its release")
    started = time.monotonic()
    report = commands.deploy_lambda(FN, runtime=quiet_runtime(project))
    assert report is not None and report.ok
    [move] = [r for r in report.records if r.step == "move-alias"]
    assert "; provisioned concurrency 2 ready on it (" in move.detail, move.detail
    assert move.seconds >= 1.0 and time.monotonic() - started >= 1.0  # [sandbox] provisioned_concurrency_seconds
    warm = serving(project, function_name)
    assert not lambda_chain.routed_versions(lam.get_alias(FunctionName=function_name, Name="live"))
    assert health(deployed.api_health_url)["release"] == "warm"

    # an init that raises (a setting read at import): the allocation fails, so does the move, and the automatic
    # rollback moves the alias back, waiting for the old version's environments again; the old release serves
    handler.write_text(handler.read_text() + '\nraise RuntimeError("STATUS_PAGE_URL is not set")\n')
    git(project, "commit", "-qam", f"{FN}: reads a setting at import")
    with pytest.raises(StepFailed) as failed:
        commands.deploy_lambda(FN, runtime=quiet_runtime(project))
    assert "could not make the provisioned concurrency of" in failed.value.message
    assert (
        "FUNCTION_ERROR_INIT_FAILURE" in failed.value.message and "STATUS_PAGE_URL is not set" in failed.value.message
    )
    assert serving(project, function_name) == warm
    assert allocation(project, function_name)["Status"] == "READY"
    assert not lambda_chain.routed_versions(lam.get_alias(FunctionName=function_name, Name="live"))
    assert health(deployed.api_health_url)["release"] == "warm"
    # the init's error where the function's log goes, which the failure's next step reads (inv logs)
    group = lam.get_function_configuration(FunctionName=function_name)["LoggingConfig"]["LogGroup"]
    events = client(project, "logs").filter_log_events(logGroupName=group)["events"]
    assert any("STATUS_PAGE_URL is not set" in e["message"] for e in events), events
    lam.delete_provisioned_concurrency_config(FunctionName=function_name, Qualifier="live")
