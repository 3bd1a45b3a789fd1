"""The Lambda fast path (deploy.lambda) against moto's Lambda, S3 and CloudFormation, through the command the
task calls: upload → update-code → publish-version → move-alias, each skipped when its result exists; what is
live read back from the alias (live_code_keys, live_git_sha) and kept by a later stack deploy (current_code_keys).

The functions are made as the API stack makes them: code from the artifacts bucket, a version published with
CloudFormation's description ``code s3://<bucket>/<key>``, the ``live`` alias on it. The stacks are stand-ins with
the outputs and parameters deploykit reads (moto keeps the outputs of stacks made with CreateStack).
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
from pathlib import Path
from typing import Any
from unittest.mock import Mock

import pytest

from deploykit import commands, history, lambda_chain, packaging
from deploykit.aws import AwsFactory
from deploykit.clock import FakeClock
from deploykit.config import load_config
from deploykit.errors import UsageError
from tests.conftest import REPO, git
from tests.functional.conftest import asked
from tests.functional.test_cli import inv

BUCKET = "car-rental-dev-artifacts"
FUNCTIONS = {"health_handler": "car-rental-dev-health", "login_handler": "car-rental-dev-login"}
OLD_HANDLER = "def handler(event, context):\n    return {'statusCode': 200, 'body': 'old'}\n"


@pytest.fixture
def with_lambdas(project: Path) -> Path:
    shutil.copytree(REPO / "lambda", project / "lambda", ignore=shutil.ignore_patterns("__pycache__", "tests"))
    git(project, "add", "-A")
    git(project, "commit", "-qm", "lambdas")
    return project


def runtime(project: Path, factory: AwsFactory, stdout: io.StringIO | None = None) -> commands.Runtime:
    return commands.Runtime(
        config_path=project / "deploy.toml",
        stdout=stdout or io.StringIO(),
        stderr=io.StringIO(),
        clock=FakeClock(),
        aws_factory=lambda _env: factory,
        docker_factory=Mock(side_effect=AssertionError("the Lambda fast path must not touch Docker")),
    )


def stack(factory: AwsFactory, name: str, outputs: dict[str, str], parameters: dict[str, str] | None = None) -> None:
    """A stand-in stack with these outputs (and parameters), as CreateStack keeps them in moto."""
    parameters = parameters or {}
    template = {
        "Parameters": {k: {"Type": "String"} for k in parameters},
        "Resources": {
            "Marker": {
                "Type": "AWS::SSM::Parameter",
                "Properties": {"Name": f"/deploykit-test/{name}", "Type": "String", "Value": name},
            }
        },
        "Outputs": {k: {"Value": v} for k, v in outputs.items()},
    }
    factory.client("cloudformation").create_stack(
        StackName=name,
        TemplateBody=json.dumps(template),
        Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in parameters.items()],
    )


def old_package(fn: str) -> tuple[str, bytes]:
    data = packaging.build_zip({"handler.py": (f"# {fn}\n{OLD_HANDLER}".encode(), False)})
    return f"lambda/{fn}/{hashlib.sha256(data).hexdigest()}.zip", data


def deploy_function(factory: AwsFactory, fn: str, *, alias: bool = True) -> str:
    """A function as the API stack leaves it: old code from the bucket, version 1 described by CloudFormation,
    ``live`` → 1. Returns the old code's key."""
    key, data = old_package(fn)
    factory.client("s3").put_object(Bucket=BUCKET, Key=key, Body=data)
    lam = factory.client("lambda")
    lam.create_function(
        FunctionName=FUNCTIONS[fn],
        Runtime="python3.11",
        Role=factory.client("iam").get_role(RoleName="fn-role")["Role"]["Arn"],
        Handler="handler.handler",
        Code={"S3Bucket": BUCKET, "S3Key": key},
        Description=f"{fn} (the function's own description)",
        Environment={"Variables": {"SETTING": "one"}},
    )
    if alias:
        version = lam.publish_version(FunctionName=FUNCTIONS[fn], Description=f"code s3://{BUCKET}/{key}")["Version"]
        lam.create_alias(FunctionName=FUNCTIONS[fn], Name="live", FunctionVersion=version)
    return key


@pytest.fixture
def environment(with_lambdas: Path, factory: AwsFactory) -> dict[str, str]:
    """The registry stack (artifacts bucket), both functions deployed, and the API stack naming them and their
    old code keys. Returns fn → old key."""
    factory.client("iam").create_role(RoleName="fn-role", AssumeRolePolicyDocument="{}")
    factory.client("s3").create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    stack(factory, "CarRentalRegistryStack", {"ArtifactsBucketName": BUCKET})
    keys = {fn: deploy_function(factory, fn) for fn in FUNCTIONS}
    stack(
        factory,
        "CarRentalApiStack",
        {
            "HealthHandlerFunctionName": FUNCTIONS["health_handler"],
            "LoginHandlerFunctionName": FUNCTIONS["login_handler"],
        },
        {"HealthHandlerCodeKey": keys["health_handler"], "LoginHandlerCodeKey": keys["login_handler"]},
    )
    return keys


def statuses(report: Any) -> dict[str, str]:
    return {r.step: r.status for r in report.records}


def alias_version(factory: AwsFactory, fn: str) -> str:
    return str(factory.client("lambda").get_alias(FunctionName=FUNCTIONS[fn], Name="live")["FunctionVersion"])


def version_config(factory: AwsFactory, fn: str, version: str) -> dict[str, Any]:
    return dict(factory.client("lambda").get_function_configuration(FunctionName=FUNCTIONS[fn], Qualifier=version))


def package(project: Path, fn: str = "health_handler") -> packaging.Package:
    return packaging.package_function(project / "lambda" / fn)


def test_new_code_is_uploaded_updated_published_and_made_live_then_a_rerun_skips_everything(
    with_lambdas: Path, factory: AwsFactory, environment: dict[str, str]
) -> None:
    sha12 = git(with_lambdas, "rev-parse", "--short=12", "HEAD").strip()
    new = package(with_lambdas)
    out = io.StringIO()
    report = commands.deploy_lambda(
        "health_handler", env="dev", smoke=False, as_json=True, runtime=runtime(with_lambdas, factory, out)
    )
    assert report is not None and report.ok
    assert statuses(report) == {
        "upload-lambda": "done",
        "update-code": "done",
        "publish-version": "done",
        "move-alias": "done",
    }
    assert factory.client("s3").head_object(Bucket=BUCKET, Key=new.key)["ContentLength"] == len(new.zip_bytes)
    lam = factory.client("lambda")
    assert lam.get_function_configuration(FunctionName=FUNCTIONS["health_handler"])["CodeSha256"] == new.code_sha256
    assert alias_version(factory, "health_handler") == "2"
    live = version_config(factory, "health_handler", "2")
    assert live["CodeSha256"] == new.code_sha256
    assert live["Description"] == f"code s3://{BUCKET}/{new.key} git {sha12}"
    assert report.outputs()["health_handler.version"] == "2"
    assert report.outputs()["health_handler.previous_version"] == "1"
    assert json.loads(out.getvalue())["steps"][-1]["detail"] == "health_handler: live → version 2 (was 1)"
    # the other function is untouched
    assert alias_version(factory, "login_handler") == "1"
    # the run is in the environment's history, as what is live for this function
    found = history.History.of(factory, load_config(with_lambdas / "deploy.toml").environment("dev"))
    assert found is not None and found.live()["lambda:health_handler"]["sha"] == sha12

    again = commands.deploy_lambda("health_handler", env="dev", smoke=False, runtime=runtime(with_lambdas, factory))
    assert again is not None and again.ok
    assert set(statuses(again).values()) == {"skipped"}, [(r.step, r.detail) for r in again.records]
    assert [
        v["Version"] for v in lam.list_versions_by_function(FunctionName=FUNCTIONS["health_handler"])["Versions"]
    ] == [
        "$LATEST",
        "1",
        "2",
    ]


def test_a_deploy_describes_each_stack_once(
    with_lambdas: Path, factory: AwsFactory, environment: dict[str, str]
) -> None:
    """The artifacts bucket is needed by the lock, the live record, three steps and the history record; the
    function names by the plan: the command reads each stack once (on AWS 100-300 ms a read)."""
    described = asked(factory.client("cloudformation"), "DescribeStacks", "StackName")
    report = commands.deploy_lambda("health_handler", env="dev", smoke=False, runtime=runtime(with_lambdas, factory))
    assert report is not None and report.ok and statuses(report)["update-code"] == "done"
    assert described.count("CarRentalRegistryStack") == 1 and described.count("CarRentalApiStack") == 1, described


def test_the_same_code_at_another_commit_is_skipped_content_addressed(
    with_lambdas: Path, factory: AwsFactory, environment: dict[str, str]
) -> None:
    first = commands.deploy_lambda("health_handler", env="dev", smoke=False, runtime=runtime(with_lambdas, factory))
    assert first is not None
    deployed_at = git(with_lambdas, "rev-parse", "--short=12", "HEAD").strip()
    (with_lambdas / "NOTES.md").write_text("not code\n")
    git(with_lambdas, "add", "-A")
    git(with_lambdas, "commit", "-qm", "notes")
    again = commands.deploy_lambda("health_handler", env="dev", smoke=False, runtime=runtime(with_lambdas, factory))
    assert again is not None and set(statuses(again).values()) == {"skipped"}
    assert alias_version(factory, "health_handler") == "2"
    # what is live is still described by the commit that deployed it
    lam = factory.client("lambda")
    assert lambda_chain.live_git_sha(lam, FUNCTIONS["health_handler"]) == deployed_at


def test_a_rollback_reuses_the_version_that_has_the_code_and_the_current_configuration(
    with_lambdas: Path, factory: AwsFactory, environment: dict[str, str]
) -> None:
    lam = factory.client("lambda")
    name = FUNCTIONS["health_handler"]
    handler = with_lambdas / "lambda" / "health_handler" / "handler.py"
    original = handler.read_text()
    commands.deploy_lambda("health_handler", env="dev", smoke=False, runtime=runtime(with_lambdas, factory))
    assert alias_version(factory, "health_handler") == "2"

    handler.write_text(original + "\nFEATURE = 2\n")
    git(with_lambdas, "commit", "-qam", "feature 2")
    commands.deploy_lambda("health_handler", env="dev", smoke=False, runtime=runtime(with_lambdas, factory))
    assert alias_version(factory, "health_handler") == "3"

    handler.write_text(original)  # back to the code of version 2: that version is live again, nothing published
    git(with_lambdas, "commit", "-qam", "revert feature 2")
    back = commands.deploy_lambda("health_handler", env="dev", smoke=False, runtime=runtime(with_lambdas, factory))
    assert back is not None
    assert statuses(back) == {
        "upload-lambda": "skipped",
        "update-code": "done",
        "publish-version": "skipped",
        "move-alias": "done",
    }
    assert alias_version(factory, "health_handler") == "2"
    assert lam.get_function_configuration(FunctionName=name)["CodeSha256"] == package(with_lambdas).code_sha256

    # the configuration changed since version 2 (as a stack deploy would change it): the same code is published
    # again with the new configuration, never version 2 with the old one
    lam.update_function_configuration(FunctionName=name, Environment={"Variables": {"SETTING": "two"}})
    handler.write_text(original + "\nFEATURE = 2\n")
    git(with_lambdas, "commit", "-qam", "feature 2 again")
    commands.deploy_lambda("health_handler", env="dev", smoke=False, runtime=runtime(with_lambdas, factory))
    handler.write_text(original)
    git(with_lambdas, "commit", "-qam", "revert feature 2 again")
    commands.deploy_lambda("health_handler", env="dev", smoke=False, runtime=runtime(with_lambdas, factory))
    live = alias_version(factory, "health_handler")
    assert live not in ("1", "2", "3")
    assert version_config(factory, "health_handler", live)["Environment"] == {"Variables": {"SETTING": "two"}}
    assert version_config(factory, "health_handler", live)["CodeSha256"] == package(with_lambdas).code_sha256


def test_a_checkout_behind_what_the_alias_serves_is_refused_unless_allow_older(
    with_lambdas: Path, factory: AwsFactory, environment: dict[str, str]
) -> None:
    handler = with_lambdas / "lambda" / "health_handler" / "handler.py"
    old = git(with_lambdas, "rev-parse", "HEAD").strip()
    handler.write_text(handler.read_text() + "\nFEATURE = 2\n")
    git(with_lambdas, "commit", "-qam", "feature 2")
    commands.deploy_lambda("health_handler", env="dev", smoke=False, runtime=runtime(with_lambdas, factory))
    assert alias_version(factory, "health_handler") == "2"

    git(with_lambdas, "checkout", "-q", old)  # an out-of-date checkout
    with pytest.raises(UsageError, match=r"HEAD \(\w{12}\) is behind what dev runs: lambda:health_handler") as err:
        commands.deploy_lambda("health_handler", env="dev", smoke=False, runtime=runtime(with_lambdas, factory))
    assert "--allow-older" in (err.value.next_step or "")
    assert alias_version(factory, "health_handler") == "2"  # nothing changed
    back = commands.deploy_lambda(
        "health_handler", env="dev", smoke=False, allow_older=True, runtime=runtime(with_lambdas, factory)
    )
    assert back is not None and statuses(back)["move-alias"] == "done"
    assert alias_version(factory, "health_handler") != "2"


def test_live_code_keys_and_git_sha_read_both_cloudformation_and_fast_path_descriptions(
    with_lambdas: Path, factory: AwsFactory, environment: dict[str, str]
) -> None:
    lam = factory.client("lambda")
    # CloudFormation's versions: the key, no commit
    assert lambda_chain.live_code_keys(lam, FUNCTIONS) == environment
    assert lambda_chain.live_git_sha(lam, FUNCTIONS["login_handler"]) is None

    commands.deploy_lambda("health_handler", env="dev", smoke=False, runtime=runtime(with_lambdas, factory))
    sha12 = git(with_lambdas, "rev-parse", "--short=12", "HEAD").strip()
    assert lambda_chain.live_code_keys(lam, FUNCTIONS) == {
        "health_handler": package(with_lambdas).key,
        "login_handler": environment["login_handler"],
    }
    assert lambda_chain.live_git_sha(lam, FUNCTIONS["health_handler"]) == sha12

    # no function, no alias, or a description naming no code: left out / None
    lam.create_function(
        FunctionName="hand-made",
        Runtime="python3.11",
        Role=factory.client("iam").get_role(RoleName="fn-role")["Role"]["Arn"],
        Handler="handler.handler",
        Code={"S3Bucket": BUCKET, "S3Key": environment["login_handler"]},
    )
    assert lambda_chain.live_code_keys(lam, {"hand_made": "hand-made", "gone": "no-such-function"}) == {}
    lam.create_alias(
        FunctionName="hand-made",
        Name="live",
        FunctionVersion=lam.publish_version(FunctionName="hand-made", Description="by hand")["Version"],
    )
    assert lambda_chain.live_code_keys(lam, {"hand_made": "hand-made"}) == {}
    assert lambda_chain.live_git_sha(lam, "hand-made") is None
    assert lambda_chain.live_git_sha(lam, "no-such-function") is None


def test_current_code_keys_prefer_what_the_alias_serves_over_the_stack_parameter(
    with_lambdas: Path, factory: AwsFactory, environment: dict[str, str]
) -> None:
    config = load_config(with_lambdas / "deploy.toml")
    env = config.environment("dev")
    assert commands.current_code_keys(factory, config, env) == (environment, [])

    commands.deploy_lambda("health_handler", env="dev", smoke=False, runtime=runtime(with_lambdas, factory))
    keys, missing = commands.current_code_keys(factory, config, env)
    assert keys == {"health_handler": package(with_lambdas).key, "login_handler": environment["login_handler"]}
    assert missing == []
    # the stack's parameter still names the old code: a stack deploy passing it would have reverted the fast path
    assert (
        commands.stack_parameters(factory, "CarRentalApiStack")["HealthHandlerCodeKey"] == environment["health_handler"]
    )

    # no alias (a version never published): the stack's parameter
    lam = factory.client("lambda")
    lam.delete_alias(FunctionName=FUNCTIONS["login_handler"], Name="live")
    assert commands.current_code_keys(factory, config, env)[0]["login_handler"] == environment["login_handler"]


def test_current_code_keys_give_this_commits_zips_to_functions_never_deployed(
    with_lambdas: Path, factory: AwsFactory
) -> None:
    config = load_config(with_lambdas / "deploy.toml")
    keys, missing = commands.current_code_keys(factory, config, config.environment("dev"))
    assert missing == ["health_handler", "login_handler"]
    assert keys == {fn: package(with_lambdas, fn).key for fn in missing}


def test_an_unknown_function_is_refused_naming_the_functions_of_lambda(with_lambdas: Path, factory: AwsFactory) -> None:
    with pytest.raises(UsageError, match="unknown Lambda function 'helth_handler'") as err:
        commands.deploy_lambda("helth_handler", env="dev", runtime=runtime(with_lambdas, factory))
    assert "health_handler, login_handler" in (err.value.next_step or "")


def test_without_the_api_stack_it_says_to_deploy_it_first(with_lambdas: Path, factory: AwsFactory) -> None:
    with pytest.raises(UsageError, match="CarRentalApiStack is not deployed") as err:
        commands.deploy_lambda("health_handler", env="dev", runtime=runtime(with_lambdas, factory))
    assert "deploy the API stack first: inv deploy.stack api" in (err.value.next_step or "")


@pytest.mark.parametrize(
    "command",
    [
        lambda rt: commands.deploy_lambda("login_handler", env="dev", runtime=rt),
        lambda rt: commands.rollback(env="dev", component="lambda:login_handler", runtime=rt),
        lambda rt: commands.logs(env="dev", component="lambda:login_handler", runtime=rt),
    ],
    ids=["deploy.lambda", "rollback", "logs"],
)
def test_a_function_the_api_stack_lacks_is_refused_naming_the_ones_it_has(
    with_lambdas: Path, factory: AwsFactory, command: Any
) -> None:
    stack(factory, "CarRentalApiStack", {"HealthHandlerFunctionName": FUNCTIONS["health_handler"]})
    with pytest.raises(UsageError) as err:
        command(runtime(with_lambdas, factory))
    assert (
        err.value.message
        == "the API stack CarRentalApiStack has no Lambda function for 'login_handler' (it has: health_handler)"
    )
    assert err.value.next_step == (
        "deploy the API stack first (cdk/stacks/api_stack.py must define it): inv deploy.stack api --env dev"
    )


def test_dry_run_prints_the_plan_and_changes_nothing(
    with_lambdas: Path, factory: AwsFactory, environment: dict[str, str]
) -> None:
    out = io.StringIO()
    assert (
        commands.deploy_lambda(
            "health_handler", env="dev", dry_run=True, as_json=True, runtime=runtime(with_lambdas, factory, out)
        )
        is None
    )
    plan = json.loads(out.getvalue())
    assert [s["step"] for s in plan["steps"]] == [
        "upload-lambda",
        "update-code",
        "publish-version",
        "move-alias",
        "smoke",
    ]
    assert plan["steps"][1]["inputs"]["function_name"] == FUNCTIONS["health_handler"]
    assert plan["steps"][2]["inputs"]["code_sha256"] == package(with_lambdas).code_sha256
    assert alias_version(factory, "health_handler") == "1"
    assert factory.client("s3").list_objects_v2(Bucket=BUCKET, Prefix="lambda/health_handler/")["KeyCount"] == 1


def test_the_task_is_listed_with_its_options(project: Path) -> None:
    listed = inv(project, "--list")
    assert listed.returncode == 0 and "  deploy.lambda " in listed.stdout
    helped = inv(project, "-h", "deploy.lambda")
    for option in ("--env", "--dry-run", "--json", "--allow-dirty", "--[no-]smoke"):
        assert option in helped.stdout, option
    refused = inv(project, "deploy.lambda", "nope", "--dry-run")
    assert refused.returncode == 2 and "unknown Lambda function 'nope'" in refused.stderr
