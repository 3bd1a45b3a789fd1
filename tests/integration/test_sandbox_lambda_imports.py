"""A function whose zip would not import on Lambda, on a private sandbox: refused before anything is uploaded; with the
check off, the sandbox's Lambda fails its import as AWS would (the sandbox's Python has the package, its functions do
not), smoke fails and the automatic rollback puts the version that served back; a layer named in deploy.toml lets it
in, without restarting the sandbox."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from deploykit import commands, lambda_imports
from deploykit.errors import StepFailed, UsageError
from tests.conftest import git, quiet_runtime
from tests.integration.test_sandbox_lambda_fast_path import FN, client, health

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
