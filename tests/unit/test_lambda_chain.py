"""The Lambda fast path's pure parts: version descriptions, the plan, choosing a version to reuse, and waiting for
an update (InProgress, Successful, Failed, the deadline) with a fake Lambda client and a fake clock."""

from __future__ import annotations

import io
import shutil
from pathlib import Path
from typing import Any
from unittest.mock import Mock

import pytest
from botocore.exceptions import ClientError

from deploykit import auto, lambda_chain, packaging
from deploykit.clock import FakeClock
from deploykit.config import load_config
from deploykit.errors import StepFailed, UsageError
from deploykit.git import current_revision
from deploykit.output import Reporter
from deploykit.plan import Context
from deploykit.smoke import Smoke
from deploykit.stack_chain import UploadLambdaCode
from deploykit.testing import fake_factory
from tests.conftest import REPO, aws_client, git

KEY = "lambda/health_handler/" + "ab" * 32 + ".zip"
CODE = "q83vEjRWeJA="
CFN = f"code s3://artifacts-bucket/{KEY}"
FAST = f"code s3://artifacts-bucket/{KEY} git 1d6b631a8f81"


@pytest.mark.parametrize(
    ("description", "location", "sha"),
    [
        (CFN, ("artifacts-bucket", KEY), None),
        (FAST, ("artifacts-bucket", KEY), "1d6b631a8f81"),
        (f"{CFN} git 1d6b631a8f81-dirty-0123456789ab", ("artifacts-bucket", KEY), "1d6b631a8f81-dirty-0123456789ab"),
        ("Cheap check of the API stage", None, None),
        ("", None, None),
        (None, None, None),
        ("legit 1d6b631a8f81", None, None),  # "git" must be a word of its own
    ],
)
def test_descriptions_name_the_code_and_the_commit(
    description: str | None, location: tuple[str, str] | None, sha: str | None
) -> None:
    assert lambda_chain.code_location(description) == location
    assert lambda_chain.code_key(description) == (location[1] if location else None)
    assert lambda_chain.git_sha_of(description) == sha


def test_the_fast_paths_description_keeps_cloudformations_prefix_and_fits_lambdas_limit() -> None:
    written = lambda_chain.version_description("artifacts-bucket", KEY, "1d6b631a8f81")
    assert written == FAST and written.startswith(CFN)
    longest = lambda_chain.version_description(
        "b" * 63, f"lambda/{'f' * 64}/{'0' * 64}.zip", f"{'1' * 12}-dirty-{'2' * 12}"
    )
    assert len(longest) <= 256  # Lambda's limit on a version's description
    assert lambda_chain.code_location(longest) == ("b" * 63, f"lambda/{'f' * 64}/{'0' * 64}.zip")


@pytest.fixture
def with_lambdas(project: Path) -> Path:
    shutil.copytree(REPO / "lambda", project / "lambda", ignore=shutil.ignore_patterns("__pycache__", "tests"))
    git(project, "add", "-A")
    git(project, "commit", "-qm", "lambdas")
    return project


def test_the_plan_is_upload_update_publish_alias_smoke_with_every_input_written(with_lambdas: Path) -> None:
    config = load_config(with_lambdas / "deploy.toml")
    env = config.environment("sandbox")
    revision = current_revision(with_lambdas)
    package = packaging.package_function(with_lambdas / "lambda" / "health_handler")
    plan = lambda_chain.lambda_plan(config, env, revision, "health_handler", function_name="fn-health")
    assert [s.name for s in plan.steps] == ["upload-lambda", "update-code", "publish-version", "move-alias", "smoke"]
    upload, update, publish, alias, smoke = plan.steps
    assert upload == UploadLambdaCode(
        "health_handler",
        str(with_lambdas / "lambda" / "health_handler"),
        package.key,
        "CarRentalRegistryStack",
        len(package.zip_bytes),
    )
    assert update == lambda_chain.UpdateFunctionCode(
        "health_handler",
        "fn-health",
        "CarRentalRegistryStack",
        package.key,
        package.code_sha256,
        env.wait_timeout,
        env.poll_seconds,
        alias="live",  # read with $LATEST, for move-alias
    )
    assert publish == lambda_chain.PublishVersion(
        "health_handler", "fn-health", "CarRentalRegistryStack", package.key, package.code_sha256, revision.short
    )
    assert alias == lambda_chain.MoveAlias("health_handler", "fn-health", "live", package.key, package.code_sha256)
    assert smoke == Smoke()
    assert plan.title == "deploy.lambda health_handler"
    assert plan.deploys == (("lambda:health_handler", revision.short),)
    unsmoked = lambda_chain.lambda_plan(config, env, revision, "health_handler", function_name="fn-health", smoke=False)
    assert unsmoked.steps == plan.steps[:-1]


def test_an_unknown_function_is_refused_with_the_list(with_lambdas: Path) -> None:
    config = load_config(with_lambdas / "deploy.toml")
    with pytest.raises(UsageError, match="unknown Lambda function 'nope'") as err:
        lambda_chain.lambda_plan(
            config, config.environment(), current_revision(with_lambdas), "nope", function_name="x"
        )
    assert err.value.next_step == "use one of the functions of lambda/: health_handler, login_handler"
    assert lambda_chain.function_names(config) == ["health_handler", "login_handler"]


# -- choosing a version -----------------------------------------------------------------------------------------


def version(number: str, code: str = CODE, description: str = CFN, memory: int = 256) -> dict[str, Any]:
    return {"Version": number, "CodeSha256": code, "Description": description, "MemorySize": memory}


def lambda_with(versions: list[dict[str, Any]]) -> Mock:
    client = aws_client("lambda")
    client.get_paginator.return_value.paginate.return_value = [{"Versions": versions[:2]}, {"Versions": versions[2:]}]
    return client


def test_the_newest_version_with_the_code_the_configuration_and_the_key_is_chosen() -> None:
    client = lambda_with(
        [
            version("$LATEST", description="the function"),
            version("1"),
            version("2", code="other"),
            version("3", description="by hand"),  # same code, key not named
            version("4"),
            version("5", memory=128),  # same code and key, another configuration
        ]
    )
    found = lambda_chain.match_version(lambda_chain.Versions(client).listed("fn"), CODE, KEY)
    assert found == lambda_chain.VersionMatch("4", CFN, names_key=True)
    client.get_paginator.assert_called_once_with("list_versions_by_function")


def find(versions: list[dict[str, Any]]) -> lambda_chain.VersionMatch | None:
    return lambda_chain.match_version(versions, CODE, KEY)


def test_a_version_with_the_code_but_not_the_key_is_a_fallback() -> None:
    assert find([version("$LATEST"), version("7", description="by hand"), version("8", code="other")]) == (
        lambda_chain.VersionMatch("7", "by hand", False)
    )
    assert find([version("$LATEST")]) is None
    assert find([version("$LATEST", memory=512), version("1")]) is None


# -- waiting for an update --------------------------------------------------------------------------------------


def context(lam: Mock, clock: FakeClock) -> Context:
    cfn = aws_client("cloudformation")
    cfn.describe_stacks.return_value = {
        "Stacks": [
            {
                "StackName": "Registry",
                "StackStatus": "CREATE_COMPLETE",
                "Outputs": [{"OutputKey": "ArtifactsBucketName", "OutputValue": "artifacts-bucket"}],
            }
        ]
    }
    if not isinstance(lam.get_paginator.return_value.paginate.return_value, list):
        lam.get_paginator.return_value.paginate.return_value = [{"Versions": [version("1", code="old")]}]
    aws = fake_factory(cloudformation=cfn, **{"lambda": lam})
    env = Mock(poll_seconds=1.0, wait_timeout=30.0)
    env.name = "test"
    return Context(Mock(), env, aws, clock, Reporter(io.StringIO(), tty=False, clock=clock), Mock())


def config(code: str, update: str = "Successful", state: str = "Active", **extra: str) -> dict[str, Any]:
    return {"CodeSha256": code, "LastUpdateStatus": update, "State": state, **extra}


def step(timeout: float = 10.0, poll: float = 5.0) -> lambda_chain.UpdateFunctionCode:
    return lambda_chain.UpdateFunctionCode("health_handler", "fn", "Registry", KEY, CODE, timeout, poll)


def test_latest_is_put_back_on_the_code_of_the_version_the_alias_went_back_to_or_said_when_it_cannot_be() -> None:
    """After an alias went back (a rollback, a canary taken back), $LATEST, which a deploy of the function's stack may
    publish, runs that version's code again, from the zip its description names; left as it was (the alias moved
    already), it is said with the command that puts it back, not a failure."""
    lam = aws_client("lambda")
    served = config("old", Description=f"code s3://artifacts-bucket/{KEY} git 3e2532e0a1b2")

    def configuration(FunctionName: str, Qualifier: str = "$LATEST") -> dict[str, Any]:  # boto3's names
        updated = lam.update_function_code.call_count and not lam.update_function_code.side_effect
        return served if Qualifier == "2" else config("old" if updated else "new")

    lam.get_function_configuration.side_effect = configuration
    lam.update_function_code.return_value = config("old", update="InProgress")
    ctx = context(lam, FakeClock())
    said = lambda_chain.latest_as_served(ctx, "health_handler", "fn", "2", rerun="inv rollback")
    assert said == "; $LATEST back on its code old… (was new…)"
    lam.update_function_code.assert_called_once_with(FunctionName="fn", S3Bucket="artifacts-bucket", S3Key=KEY)

    lam.update_function_code.side_effect = ClientError({"Error": {"Code": "InvalidParameterValueException"}}, "U")
    said = lambda_chain.latest_as_served(ctx, "health_handler", "fn", "2", rerun="inv rollback")
    assert said == (
        "; $LATEST still runs new…, not version 2's old… (InvalidParameterValueException: s3://artifacts-bucket/"
        f"{KEY}): a stack deploy that publishes a version of it would serve that code; put it back: aws lambda "
        f"update-function-code --function-name fn --s3-bucket artifacts-bucket --s3-key {KEY}"
    )
    served["Description"] = "by hand"  # names no zip: said, nothing tried
    lam.update_function_code.reset_mock()
    said = lambda_chain.latest_as_served(ctx, "health_handler", "fn", "2", rerun="inv rollback")
    assert said.startswith("; $LATEST still runs new…, not version 2's old… (which names no zip to put back)")
    lam.update_function_code.assert_not_called()
    served["CodeSha256"] = "new"  # the same code: nothing to do
    assert lambda_chain.latest_as_served(ctx, "health_handler", "fn", "2", rerun="inv rollback") == ""


def test_the_update_is_skipped_when_latest_already_has_the_code() -> None:
    lam = aws_client("lambda")
    lam.get_function_configuration.return_value = config(CODE)
    outcome = step().run(context(lam, FakeClock()))
    assert outcome.status == "skipped" and "already runs" in outcome.detail
    lam.update_function_code.assert_not_called()


def test_the_update_waits_until_lambda_reports_it_successful_polling_soon_then_each_second() -> None:
    lam = aws_client("lambda")
    lam.get_function_configuration.side_effect = [
        config("old"),
        config(CODE, "InProgress"),
        config(CODE, "InProgress"),
        config(CODE, "InProgress"),
        config(CODE),
    ]
    lam.update_function_code.return_value = config(CODE, "InProgress")  # as AWS answers it
    clock = FakeClock()
    outcome = step(poll=5.0).run(context(lam, clock))  # the environment's poll against AWS: 5 s
    assert outcome.status == "done"
    lam.update_function_code.assert_called_once_with(FunctionName="fn", S3Bucket="artifacts-bucket", S3Key=KEY)
    # the update's own answer is the first look; then 0.25 s, twice as long each time, at most a second
    assert clock.sleeps == [0.25, 0.5, 1.0, 1.0]
    assert lam.get_function_configuration.call_count == 5


def test_the_polls_are_never_further_apart_than_the_environments_poll_interval() -> None:
    lam = aws_client("lambda")
    lam.get_function_configuration.side_effect = [config("old"), *[config(CODE, "InProgress")] * 3, config(CODE)]
    lam.update_function_code.return_value = config(CODE, "InProgress")
    clock = FakeClock()
    step(poll=0.4).run(context(lam, clock))
    assert clock.sleeps == [0.25, 0.4, 0.4, 0.4]


def test_an_update_lambda_answers_successful_at_once_needs_no_read_after_it() -> None:
    lam = aws_client("lambda")
    lam.get_function_configuration.return_value = config("old")
    lam.update_function_code.return_value = config(CODE)
    clock = FakeClock()
    outcome = step().run(context(lam, clock))
    assert outcome.status == "done" and "was" in outcome.detail
    assert lam.get_function_configuration.call_count == 1 and clock.sleeps == []


def test_a_previous_update_in_progress_is_waited_for_first() -> None:
    lam = aws_client("lambda")
    lam.get_function_configuration.side_effect = [
        config("old", "InProgress"),
        config("old", "InProgress"),
        config(CODE),
    ]
    clock = FakeClock()
    outcome = step().run(context(lam, clock))
    assert outcome.status == "skipped"  # the update in progress was to this very code
    assert clock.sleeps == [0.25]
    lam.update_function_code.assert_not_called()


def test_a_failed_update_fails_the_step_with_lambdas_reason() -> None:
    lam = aws_client("lambda")
    lam.update_function_code.return_value = config("old", "InProgress")
    lam.get_function_configuration.side_effect = [
        config("old"),
        config("old", "InProgress"),
        config(
            "old",
            "Failed",
            LastUpdateStatusReason="Unzipped size must be smaller than 262144000 bytes",
            LastUpdateStatusReasonCode="InvalidZipFileException",
        ),
    ]
    with pytest.raises(StepFailed, match="Unzipped size must be smaller") as err:
        step().run(context(lam, FakeClock()))
    assert "InvalidZipFileException" in err.value.message
    assert "inv deploy.lambda health_handler" in (err.value.next_step or "")


def test_an_update_past_the_deadline_fails_naming_the_state() -> None:
    lam = aws_client("lambda")
    lam.update_function_code.return_value = config("old", "InProgress")
    lam.get_function_configuration.side_effect = [config("old")] + [config("old", "InProgress")] * 10
    clock = FakeClock()
    with pytest.raises(StepFailed, match=r"deadline of 3s passed .* LastUpdateStatus InProgress"):
        step(timeout=3.0).run(context(lam, clock))
    assert clock.monotonic() == 3.0 and clock.sleeps == [0.25, 0.5, 1.0, 1.0, 0.25]  # the last one to the deadline


def test_code_other_than_planned_after_the_update_fails() -> None:
    lam = aws_client("lambda")
    lam.get_function_configuration.side_effect = [config("old")]
    lam.update_function_code.return_value = config("something-else")
    with pytest.raises(StepFailed, match="not q83vEjRWeJA="):
        step().run(context(lam, FakeClock()))


def test_a_missing_function_the_stack_names_says_it_was_deleted_behind_the_stack() -> None:
    lam = aws_client("lambda")
    lam.get_function_configuration.side_effect = ClientError(
        {"Error": {"Code": "ResourceNotFoundException", "Message": "Function not found"}}, "GetFunctionConfiguration"
    )
    with pytest.raises(UsageError, match=r"Lambda function fn \(health_handler\) does not exist") as err:
        step().run(context(lam, FakeClock()))
    assert err.value.next_step == lambda_chain.deleted_behind_the_stack()
    assert "a deploy of its stack as it is does not bring it back" in err.value.next_step


def test_a_canary_fails_on_more_errors_than_its_rate_allows() -> None:
    from deploykit.watch import Counts, too_many_errors

    assert not too_many_errors(Counts(100, 0), 0.0)
    assert too_many_errors(Counts(100, 1), 0.0)  # the default: one error takes it back
    assert not too_many_errors(Counts(100, 1), 0.05) and too_many_errors(Counts(100, 6), 0.05)
    assert too_many_errors(Counts(0, 2), 0.5)  # errors put before their invocations still count
    assert str(Counts(1, 1)) == "1 request, 1 error" and str(Counts(3, 0)) == "3 requests, 0 errors"


def test_a_compared_canary_is_judged_against_the_old_versions_rate_once_that_rate_means_something() -> None:
    from deploykit.canary import CanaryRelease
    from deploykit.watch import BASELINE, Counts

    def step(max_error_rate: float = 0.0, compare: bool = True) -> CanaryRelease:
        return CanaryRelease("fn", "fn-1", "live", "k.zip", "code", 10, 60, max_error_rate, 5.0, compare)

    assert not step().failing(Counts(10, 0), Counts(90, 0))
    assert step().failing(Counts(10, 1), Counts(90, 0))  # healthy old version: one error, as before
    assert not step().failing(Counts(10, 1), Counts(90, 9))  # 10% beside the old one's 10%: no worse
    assert not step().failing(Counts(10, 2), Counts(90, 9))  # 20% of 10 beside 10%: chance does that (26%)
    # 50% beside 10%: chance does that 0.16% of the time, more than once in 100 over the watch's 13 looks (0.08% each)
    assert not step().failing(Counts(10, 5), Counts(90, 9))
    assert step().failing(Counts(10, 6), Counts(90, 9))  # 60%: 0.015% of the time
    assert step().failing(Counts(4, 4), Counts(90, 9))  # failing every time: within a few requests
    assert not step(0.05).failing(Counts(100, 11), Counts(90, 5))  # 11% beside 5.6% + 5%
    assert step(0.05).failing(Counts(100, 25), Counts(90, 5))
    assert step().failing(Counts(10, 1), Counts(BASELINE - 1, 2))  # too few old requests to compare: alone
    assert not step().failing(Counts(10, 1), Counts(BASELINE, 2))
    assert step(compare=False).failing(Counts(10, 1), Counts(90, 9))  # judged alone: any error
    # the old version's counts in the minutes before the canary count beside its own in the same time: a rate from
    # the first look, where its share of the first seconds is too few requests to tell one
    assert step().failing(Counts(4, 1), Counts(12, 3))
    assert not step().failing(Counts(4, 1), Counts(12, 3), before=Counts(6000, 1500))
    assert step().failing(Counts(7, 7), Counts(12, 3), before=Counts(6000, 1500))  # failing every time


def test_a_watch_shares_its_chance_of_a_false_failure_out_among_its_looks() -> None:
    """Each look at the counts as they grow is one more chance for chance alone to fail a release no worse than
    the one before: a watch of 60 s polled every 5 s looks 13 times, each under a thirteenth of 1%."""
    from deploykit.watch import Counts, failing, looks_of

    assert looks_of(60, 5) == 13 and looks_of(20, 0.5) == 41 and looks_of(7, 5) == 3 and looks_of(10, 0) == 1
    old = Counts(1000, 250)
    assert failing(Counts(20, 11), old, 0.0)  # 0.39% by chance: under 1% in one look
    assert not failing(Counts(20, 11), old, 0.0, looks=13)  # not under 0.077%
    assert failing(Counts(20, 13), old, 0.0, looks=13)  # 0.018%
    assert failing(Counts(20, 1), Counts(1000, 0), 0.0, looks=13)  # beside no error at all: one, however many looks


def test_the_chance_of_as_many_errors_is_the_binomial_upper_tail() -> None:
    from deploykit.watch import chance_of_as_many

    assert chance_of_as_many(0, 10, 0.1) == 1.0 and chance_of_as_many(1, 10, 0.0) == 0.0
    assert abs(chance_of_as_many(2, 10, 0.1) - (1 - 0.9**10 - 10 * 0.1 * 0.9**9)) < 1e-12
    assert abs(chance_of_as_many(4, 4, 0.25) - 0.25**4) < 1e-12
    assert chance_of_as_many(1, 10, 0.5) == 1.0  # at or below the expected count
    assert 0 < chance_of_as_many(1_500, 100_000, 0.01) < 1e-30  # large counts: log space, no overflow
    assert chance_of_as_many(5, 3, 0.5) == 0.5**5  # errors put before their invocations: as many requests


def test_a_function_its_source_ran_before_is_the_same_bytes_when_one_of_its_versions_holds_them(tmp_path: Path) -> None:
    """What the source runs now is compared with the version its alias serves; what it ran before (found in its
    history) with every version it published."""
    folder = tmp_path / "health_handler"
    folder.mkdir()
    (folder / "handler.py").write_text("def handler(event, context):\n    return {}\n")
    ours = packaging.package_function(folder)
    client = aws_client("lambda")
    client.get_paginator.return_value.paginate.return_value = [
        {"Versions": [{"Version": "$LATEST", "CodeSha256": "x"}, {"Version": "3", "CodeSha256": ours.code_sha256}]}
    ]
    client.get_function_configuration.return_value = {"CodeSha256": "other"}
    names, packages = {"health_handler": "dev-health"}, {"health_handler": ours}
    assert auto.other_bytes(client, "dev", names, packages, earlier=["lambda:health_handler"]) == {}
    [why] = auto.other_bytes(client, "dev", names, packages).values()
    assert why.startswith(f"dev runs CodeSha256 other, not this checkout's zip (CodeSha256 {ours.code_sha256})")
    client.get_paginator.return_value.paginate.return_value = [{"Versions": [{"Version": "3", "CodeSha256": "y"}]}]
    [why] = auto.other_bytes(client, "dev", names, packages, earlier=["lambda:health_handler"]).values()
    assert why.startswith("none of dev's 1 version(s) of it holds this checkout's zip")
    assert auto.other_bytes(client, "dev", {}, packages) == {}  # not deployed there: the change rules say so


API_TEMPLATE = {
    "Resources": {
        "LoginHandler5CDFBDA2": {
            "Type": "AWS::Lambda::Function",
            "Properties": {
                "Runtime": "python3.11",
                "Handler": "handler.handler",
                "MemorySize": 256,
                "Timeout": 10,
                "Architectures": ["x86_64"],
                "Role": {"Fn::GetAtt": ["LoginHandlerServiceRole", "Arn"]},
                "Environment": {
                    "Variables": {
                        "LOG_LEVEL": "INFO",
                        "USER_POOL_CLIENT_ID": {"Fn::ImportValue": "CarRentalAuthStack:ExportsOutputRefClient"},
                    }
                },
            },
        },
        "LoginHandlerAlias0A1B2C3D": {"Type": "AWS::Lambda::Alias", "Properties": {"Name": "live"}},
        "HealthHandler164742B2": {"Type": "AWS::Lambda::Function", "Properties": {"MemorySize": 128}},
    }
}


def test_the_settings_a_template_gives_a_function_are_those_it_sets_plainly() -> None:
    """By the function's construct (CamelCase and CDK's hash): what Lambda reports back as set, each plain
    environment variable; not what CloudFormation works out (a role's ARN, an import)."""
    assert lambda_chain.configured(API_TEMPLATE, "login_handler") == {
        "Runtime": "python3.11",
        "Handler": "handler.handler",
        "MemorySize": 256,
        "Timeout": 10,
        "Architectures": ["x86_64"],
        "Environment.LOG_LEVEL": "INFO",
    }
    assert lambda_chain.configured(API_TEMPLATE, "health_handler") == {"MemorySize": 128}
    assert lambda_chain.configured(API_TEMPLATE, "pricing_handler") == {}  # not in the template
    assert lambda_chain.configured({}, "login_handler") == {}


def test_a_live_version_differs_by_each_setting_it_has_otherwise() -> None:
    wanted = lambda_chain.configured(API_TEMPLATE, "login_handler")
    live = {
        "Runtime": "python3.11",
        "Handler": "handler.handler",
        "MemorySize": 256,
        "Timeout": 10,
        "Architectures": ["x86_64"],
        "Environment": {"Variables": {"LOG_LEVEL": "INFO", "USER_POOL_CLIENT_ID": "abc"}},
    }
    assert lambda_chain.configuration_differs(wanted, live) == {}
    by_hand = {**live, "MemorySize": 1024, "Environment": {"Variables": {"LOG_LEVEL": "DEBUG"}}}
    assert lambda_chain.configuration_differs(wanted, by_hand) == {
        "MemorySize": (256, 1024),
        "Environment.LOG_LEVEL": ("INFO", "DEBUG"),
    }
    assert lambda_chain.configuration_differs(wanted, {**live, "Environment": {}}) == {
        "Environment.LOG_LEVEL": ("INFO", None)
    }
