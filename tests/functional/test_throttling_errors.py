"""Throttling: a call AWS still refuses for its rate after botocore's retries ends the step with a clear error (what
was throttled, after how many attempts, that nothing after it changed, what to run); and the retry settings of an
environment really retry a throttled call (against the sandbox's WSGI app, its fault route refusing the calls)."""

from __future__ import annotations

import dataclasses
import io
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar
from unittest.mock import Mock

import pytest
from botocore.exceptions import ClientError
from botocore.retries.standard import ThrottledRetryableChecker
from botocore.stub import Stubber

from deploykit.aws import THROTTLING_CODES, AwsFactory, is_throttling, translate_error
from deploykit.clock import FakeClock
from deploykit.commands import core
from deploykit.config import Config, EnvConfig, load_config
from deploykit.errors import StepFailed
from deploykit.output import Reporter
from deploykit.plan import Context, Executor, Outcome, Plan, Step
from sandbox import lifecycle
from sandbox.settings import Settings

NEXT_STEP = (
    "wait a minute and rerun the same command (it skips what is already done); to retry more, raise max_attempts "
    'or use retry_mode = "adaptive" for [environments.dev] in deploy.toml'
)


def test_the_codes_are_the_ones_botocore_retries_as_throttling() -> None:
    assert set(ThrottledRetryableChecker._THROTTLED_ERROR_CODES) == THROTTLING_CODES


@pytest.fixture
def ecs_stub(aws_credentials: None, dev_env: EnvConfig) -> Iterator[tuple[AwsFactory, Stubber]]:
    factory = AwsFactory(dev_env)
    with Stubber(factory.client("ecs")) as stub:
        yield factory, stub


@pytest.mark.parametrize("code", ["ThrottlingException", "TooManyRequestsException", "RequestLimitExceeded"])
def test_a_throttled_call_becomes_a_step_failure_naming_it_and_the_next_step(
    ecs_stub: tuple[AwsFactory, Stubber], dev_env: EnvConfig, code: str
) -> None:
    factory, stub = ecs_stub
    stub.add_client_error(
        "update_service", service_error_code=code, service_message="Rate exceeded", http_status_code=400
    )
    with pytest.raises(ClientError) as raised:
        factory.client("ecs").update_service(cluster="c", service="s", taskDefinition="td:2")
    assert is_throttling(raised.value)
    error = translate_error(raised.value, dev_env)
    assert isinstance(error, StepFailed) and error.exit_code == 1
    # the Stubber answers before botocore's retry handler counts anything: the attempts are not known
    assert error.message == (
        f"AWS throttled UpdateService in dev ({code}) after its retries: Rate exceeded; "
        "nothing after this call was changed"
    )
    assert error.next_step == NEXT_STEP


def test_the_attempts_botocore_made_are_counted_and_a_bare_429_is_throttling_too(dev_env: EnvConfig) -> None:
    answered = {
        "Error": {"Code": "Throttling", "Message": "Rate exceeded"},
        "ResponseMetadata": {"HTTPStatusCode": 400, "RetryAttempts": 5},
    }
    error = translate_error(ClientError(answered, "DescribeStacks"), dev_env)
    assert error.message.startswith("AWS throttled DescribeStacks in dev (Throttling) after 6 attempts: Rate exceeded")
    bare = {"Error": {"Code": "429", "Message": ""}, "ResponseMetadata": {"HTTPStatusCode": 429, "RetryAttempts": 0}}
    error = translate_error(ClientError(bare, "GetFunction"), dev_env)
    assert error.message == (
        "AWS throttled GetFunction in dev (429) after 1 attempt: rate exceeded; nothing after this call was changed"
    )
    other = {"Error": {"Code": "InvalidParameterException", "Message": "no"}, "ResponseMetadata": {}}
    assert not is_throttling(ClientError(other, "UpdateService"))
    assert "throttled" not in translate_error(ClientError(other, "UpdateService"), dev_env).message


@dataclass(frozen=True)
class UpdateService(Step):
    name: ClassVar[str] = "roll-service"

    def describe(self) -> str:
        return "update the service"

    def run(self, ctx: Context) -> Outcome:
        ctx.aws.client("ecs").update_service(cluster="c", service="s", taskDefinition="td:2")
        return Outcome.done("rolled")


def test_a_plan_whose_step_is_throttled_fails_with_the_clear_error(
    ecs_stub: tuple[AwsFactory, Stubber], dev_env: EnvConfig
) -> None:
    factory, stub = ecs_stub
    stub.add_client_error("update_service", "ThrottlingException", "Rate exceeded", 400)
    clock, stream = FakeClock(), io.StringIO()
    ctx = Context(Mock(spec=Config), dev_env, factory, clock, Reporter(stream, tty=False, clock=clock), Mock())
    report = Executor(ctx, core._translator(dev_env)).execute(Plan("dev", (UpdateService(),)))
    assert report.to_json()["error"] == {
        "message": "AWS throttled UpdateService in dev (ThrottlingException) after its retries: Rate exceeded; "
        "nothing after this call was changed",
        "next_step": NEXT_STEP,
        "exit_code": 1,
    }
    assert report.records[0].status == "failed"


# -- the retry settings really retry: a real client against the sandbox's fault route -------------------------


def test_the_environments_retry_settings_retry_throttling_then_the_clear_error(
    project: Path, served_sandbox: Settings, backoffs: list[float]
) -> None:
    sandbox = load_config(project / "deploy.toml").environment("sandbox")
    assert sandbox.retry_mode == "standard"
    env = dataclasses.replace(sandbox, endpoint_url=served_sandbox.endpoint_url, max_attempts=2)
    ecs = AwsFactory(env).client("ecs")  # max_attempts = 2 retries: 3 attempts in all

    lifecycle.inject_throttling(served_sandbox, "ecs", "ListClusters", count=2)  # fewer than the attempts
    answer = ecs.list_clusters()
    assert answer["clusterArns"] == [] and answer["ResponseMetadata"]["RetryAttempts"] == 2
    assert backoffs == [1, 1]  # two retries, each backing off as from throttling

    lifecycle.inject_throttling(served_sandbox, "ecs", "ListClusters", count=4)  # more than the attempts
    with pytest.raises(ClientError) as raised:
        ecs.list_clusters()
    assert lifecycle.pending_faults(served_sandbox) == [{"service": "ecs", "operation": "ListClusters", "count": 1}]
    error = translate_error(raised.value, env)
    assert error.message == (
        "AWS throttled ListClusters in sandbox (ThrottlingException) after 3 attempts: Rate exceeded; "
        "nothing after this call was changed"
    )
    assert "[environments.sandbox] in deploy.toml" in str(error.next_step)
    lifecycle.clear_faults(served_sandbox)
    assert ecs.list_clusters()["ResponseMetadata"]["RetryAttempts"] == 0


def test_an_error_deploykit_already_put_into_words_is_translated_to_itself(dev_env: EnvConfig) -> None:
    said = StepFailed("the rollout failed", next_step="look")
    assert translate_error(said, dev_env) is said
