"""deploykit.aws: independent reads at once, one client per service from any thread, reads handed on, one botocore
loader for every session."""

from __future__ import annotations

import threading
import time
from functools import partial
from typing import Any
from unittest.mock import Mock

import boto3
import botocore.exceptions
import pytest
from botocore.exceptions import ClientError

from deploykit import aws as aws_module
from deploykit.aws import (
    PROFILE_ENV,
    AwsFactory,
    HandedOn,
    Once,
    all_of,
    at_once,
    maybe_applied,
    new_session,
    translate_error,
)
from deploykit.errors import DeployKitError, StepFailed, UsageError
from deploykit.testing import fake_factory, sample_env
from tests.conftest import aws_client


def test_reads_are_in_flight_together_and_come_back_by_key() -> None:
    barrier = threading.Barrier(3, timeout=10)  # one read at a time would break it: each waits for the others

    def read(value: int) -> int:
        barrier.wait()
        return value

    assert at_once({"a": lambda: read(1), "b": lambda: read(2), "c": lambda: read(3)}) == {"a": 1, "b": 2, "c": 3}


def test_a_failed_read_raises_as_it_would_alone_the_first_in_order_when_several_fail() -> None:
    def fails(message: str) -> Any:
        raise LookupError(message)

    with pytest.raises(LookupError, match="first"):
        at_once({"ok": lambda: 1, "x": lambda: fails("first"), "y": lambda: fails("second")})


def test_a_single_read_runs_in_the_calling_thread() -> None:
    assert at_once({"only": lambda: threading.current_thread().name}) == {"only": threading.current_thread().name}


def test_clients_asked_for_from_many_threads_are_made_once_per_service() -> None:
    env = sample_env()
    session = Mock(spec=boto3.session.Session)

    def make(service: str, **_: Any) -> Mock:
        time.sleep(0.05)  # botocore takes longer: the window where two threads could both make one
        return Mock(name=service)

    session.client.side_effect = make
    aws = AwsFactory(env, session=session)
    barrier = threading.Barrier(6, timeout=10)

    def ask(service: str) -> Any:
        barrier.wait()  # all six ask at the same moment
        return aws.client(service)

    got = at_once({i: partial(ask, "ecs" if i % 2 else "s3") for i in range(6)})
    assert len({id(c) for i, c in got.items() if i % 2}) == 1 and len({id(c) for i, c in got.items() if not i % 2}) == 1
    assert sorted(call.args[0] for call in session.client.call_args_list) == ["ecs", "s3"]


def test_a_failure_is_raised_without_waiting_for_slower_reads_and_queued_ones_never_start() -> None:
    release, started = threading.Event(), []

    def slow(n: int) -> int:
        started.append(n)
        release.wait(10)
        return n

    def fails() -> int:
        raise LookupError("refused")

    reads = {"fails": fails, **{i: partial(slow, i) for i in range(12)}}
    begun = time.monotonic()
    with pytest.raises(LookupError, match="refused"):
        at_once(reads)
    waited = time.monotonic() - begun
    release.set()
    assert waited < 5, "the failure waited for the slow reads"
    assert len(started) < 12, "reads queued behind the full pool started after the failure"


def test_all_of_runs_calls_together_and_raises_the_first_failure_once_every_call_has_ended() -> None:
    barrier = threading.Barrier(2, timeout=10)
    ended: list[str] = []

    def call(name: str, fail: bool = False) -> str:
        barrier.wait()  # both in flight at once, or this times out
        if fail:
            raise LookupError(name)
        time.sleep(0.2)  # the failure is not raised before this one ends (a preview deletes its change set)
        ended.append(name)
        return name

    assert all_of({"a": partial(call, "a"), "b": partial(call, "b")}) == {"a": "a", "b": "b"}
    ended.clear()
    with pytest.raises(LookupError, match="x"):
        all_of({"x": partial(call, "x", True), "y": partial(call, "y")})
    assert ended == ["y"]
    assert all_of({"only": lambda: threading.current_thread().name}) == {"only": threading.current_thread().name}


def test_what_a_factory_shares_is_made_once_from_any_thread() -> None:
    env = sample_env()
    aws = AwsFactory(env, session=Mock(spec=boto3.session.Session))
    made: list[AwsFactory] = []

    def make(factory: AwsFactory) -> object:
        made.append(factory)
        time.sleep(0.05)  # the window where two threads could both make one
        return object()

    barrier = threading.Barrier(4, timeout=10)

    def ask() -> object:
        barrier.wait()
        return aws.shared(make)

    got = at_once({i: ask for i in range(4)})
    assert len({id(thing) for thing in got.values()}) == 1 and made == [aws]
    other = AwsFactory(env, session=Mock(spec=boto3.session.Session))
    assert other.shared(make) is not aws.shared(make)  # one per factory: per command


def test_the_fake_factory_for_tests_answers_its_clients_and_shares_as_a_factory_does() -> None:
    s3 = aws_client("s3")
    aws = fake_factory(s3=s3)
    assert aws.client("s3") is s3
    made: list[Any] = []

    def make(factory: Any) -> object:
        made.append(factory)
        return object()

    assert aws.shared(make) is aws.shared(make) and made == [aws]
    with pytest.raises(KeyError):
        aws.client("ecs")  # only the clients it was given


def test_a_read_handed_on_is_taken_once_then_read_anew() -> None:
    """What one step read for the next: kept when read, taken once; a take with nothing kept reads, and so does a
    second take (what came between may have changed it)."""
    answers = iter(["first", "second", "third"])
    reads: list[str] = []

    def read(key: str) -> str:
        reads.append(key)
        return f"{key}: {next(answers)}"

    handed = HandedOn(read)
    assert handed.read("svc") == "svc: first"
    assert handed.take("svc") == "svc: first" and reads == ["svc"]  # kept: no read
    assert handed.take("svc") == "svc: second" and reads == ["svc", "svc"]  # taken already: read anew
    assert handed.take("other") == "other: third" and reads == ["svc", "svc", "other"]


def test_a_read_once_answers_every_caller_from_one_call_its_error_too() -> None:
    calls: list[str] = []

    def read() -> str:
        calls.append("read")
        return "answer"

    once = Once(read)
    assert at_once({n: once for n in range(4)}) == dict.fromkeys(range(4), "answer") and calls == ["read"]

    def failing() -> str:
        calls.append("failing")
        raise RuntimeError("no")

    broken = Once(failing)
    for _ in range(2):
        with pytest.raises(RuntimeError, match="no"):
            broken()
    assert calls == ["read", "failing"]


def test_every_session_shares_one_loader_so_a_model_is_parsed_once_per_process() -> None:
    """A new session per environment (or per command of a long-lived process) no longer parses botocore's models
    again: the loader, its cache of parsed files with it, is the first session's; boto3's own folder, which each new
    session adds to the loader's search path, is there once."""
    first = new_session(region_name="eu-west-1", aws_access_key_id="a", aws_secret_access_key="b")
    loader = first._session.get_component("data_loader")
    paths = list(loader.search_paths)
    first.client("ecs")
    other = new_session(region_name="us-east-1", aws_access_key_id="c", aws_secret_access_key="d")
    assert other._session.get_component("data_loader") is loader and loader.search_paths == paths
    parsed: list[str] = []
    read = loader.file_loader.load_file
    loader.file_loader.load_file = lambda path: parsed.append(path) or read(path)  # type: ignore[method-assign]
    try:
        client = other.client("ecs")
    finally:
        del loader.file_loader.load_file
    assert parsed == [] and client.meta.region_name == "us-east-1"  # the session's own settings: its region
    assert other.get_credentials().access_key == "c"


def test_two_factories_never_make_clients_at_the_same_time() -> None:
    """The shared loader is not thread-safe: factories of two environments, asked from two threads at once, make
    their clients one after the other."""
    inside, most = 0, 0
    guard = threading.Lock()

    def make(service: str, **_: Any) -> Mock:
        nonlocal inside, most
        with guard:
            inside += 1
            most = max(most, inside)
        time.sleep(0.05)
        with guard:
            inside -= 1
        return Mock(name=service)

    factories = []
    for _ in range(2):
        session = Mock(spec=boto3.session.Session)
        session.client.side_effect = make
        factories.append(AwsFactory(sample_env(), session=session))
    barrier = threading.Barrier(4, timeout=10)

    def ask(i: int) -> Any:
        barrier.wait()
        return factories[i % 2].client("ecs" if i < 2 else "s3")

    at_once({i: partial(ask, i) for i in range(4)})
    assert most == 1 and not aws_module.MAKING._is_owned()  # type: ignore[attr-defined]


def test_a_credentials_error_names_the_profile_the_session_used(monkeypatch: pytest.MonkeyPatch) -> None:
    """In CI, DEPLOYKIT_AWS_PROFILE="" replaces deploy.toml's profile with the job's credentials: a missing or expired
    credential's next step names those, never `aws sso login` of the profile that was not used."""
    env = sample_env(name="dev", profile="car-rental-dev")
    missing, expired = (
        botocore.exceptions.NoCredentialsError(),
        ClientError({"Error": {"Code": "ExpiredToken", "Message": "expired"}}, "DescribeStacks"),
    )
    monkeypatch.delenv(PROFILE_ENV, raising=False)
    assert translate_error(missing, env).next_step == "run: aws sso login --profile car-rental-dev"
    monkeypatch.setenv(PROFILE_ENV, "ci-role")
    assert translate_error(missing, env).next_step == "run: aws sso login --profile ci-role"
    assert translate_error(expired, env).next_step == "run: aws sso login --profile ci-role"
    monkeypatch.setenv(PROFILE_ENV, "")
    assert translate_error(missing, env).next_step == (
        "give the job its credentials (the AWS_* variables, or its role): DEPLOYKIT_AWS_PROFILE='' uses them"
    )
    assert translate_error(expired, env).next_step == "refresh them"
    assert translate_error(missing, sample_env(name="dev")).next_step == (
        "run: aws configure (or set 'profile' in deploy.toml)"
    )


def test_an_unretried_client_sends_a_call_once_and_waits_as_long_as_asked() -> None:
    """Lambda's Invoke runs the function: botocore's retry of a read timeout (its standard mode retries one) would
    run it again. The unretried client makes no retry, whatever the environment's retry settings."""
    factory = AwsFactory(sample_env(max_attempts=5, read_timeout=60.0), session=boto3.session.Session())
    once = factory.unretried_client("lambda", read_timeout=930)
    assert once.meta.config.retries["total_max_attempts"] == 1  # botocore counts the first try
    assert once.meta.config.read_timeout == 930
    assert factory.client("lambda").meta.config.retries["total_max_attempts"] == 6  # the shared one keeps its retries
    assert factory.unretried_client("lambda") is not once  # not cached: each call's own


def test_a_role_cloudformation_cannot_act_with_says_which_role_to_fix_and_changed_nothing() -> None:
    """A destroy's DeleteStack (or any call) refused for the stack's service role: deploy.toml's role, or the one
    the stack kept from an earlier operation (the classic: its role deleted before the stack)."""
    role = "arn:aws:iam::123456789012:role/cfn-exec"
    refused = ClientError(
        {"Error": {"Code": "ValidationError", "Message": f"Role {role} is invalid or cannot be assumed"}}, "DeleteStack"
    )
    kept = translate_error(refused, sample_env(name="dev"))
    assert isinstance(kept, UsageError) and kept.exit_code == 2
    assert kept.message == (
        f"CloudFormation cannot act with role {role} (the role an earlier operation gave the stack, which "
        "CloudFormation keeps using until another is given); nothing was changed"
    )
    assert (kept.next_step or "").startswith("give it a role that works: cloudformation_role_arn in [environments.dev]")
    named = translate_error(refused, sample_env(name="dev", cloudformation_role_arn=role))
    assert "the role of cloudformation_role_arn in deploy.toml: it must exist, trust cloudformation.amazonaws.com" in (
        named.message
    )
    other = ClientError({"Error": {"Code": "ValidationError", "Message": "Stack [x] does not exist"}}, "DeleteStack")
    assert isinstance(translate_error(other, sample_env(name="dev")), StepFailed)


def test_a_shell_profile_that_is_not_configured_is_named_as_the_shells_not_deploy_tomls(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An environment naming no profile, AWS_PROFILE=nosuch in the shell: "AWS profile None (... from 'profile' in
    deploy.toml) is not configured; run: aws configure --profile None"."""
    monkeypatch.delenv(PROFILE_ENV, raising=False)
    monkeypatch.setenv("AWS_PROFILE", "nosuch")
    with pytest.raises(UsageError) as refused:
        AwsFactory(sample_env(name="dev")).session  # noqa: B018
    assert refused.value.message == (
        "The config profile (nosuch) could not be found (environment 'dev' names no profile: the shell's "
        "AWS_PROFILE or AWS_DEFAULT_PROFILE does)"
    )
    assert refused.value.next_step.startswith("unset AWS_PROFILE")


def test_a_local_environment_s_profile_that_is_not_configured_is_named_as_deploy_toml_s(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """$DEPLOYKIT_AWS_PROFILE never applies to an environment on this machine: a CI job setting it "" was told the
    profile came from it, and to set it "", which it had."""
    monkeypatch.setenv(PROFILE_ENV, "")
    local = sample_env(name="dev", endpoint_url="http://127.0.0.1:5000", profile="laptop-dev")
    with pytest.raises(UsageError) as refused:
        AwsFactory(local).session  # noqa: B018
    assert refused.value.message == (
        "AWS profile 'laptop-dev' (environment 'dev', from 'profile' in deploy.toml) is not configured"
    )
    assert refused.value.next_step == (
        "run: aws configure --profile laptop-dev (or fix 'profile' in deploy.toml); a local endpoint takes any "
        "credentials: remove the profile from its table"
    )


def test_an_answer_that_is_not_aws_is_said_with_the_proxy_that_may_have_given_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A proxy's 502 page where AWS's XML was due: botocore's ResponseParserError, no BotoCoreError, escaped every
    catch as a traceback (exit 1)."""
    from botocore.parsers import ResponseParserError

    from deploykit.commands.core import aws_errors

    for name in ("HTTP_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.corp:3128")
    local = sample_env(name="moto", endpoint_url="http://10.1.2.3:4566")
    with pytest.raises(DeployKitError) as said, aws_errors(local):
        raise ResponseParserError("Unable to parse response (syntax error), invalid XML received")
    assert said.value.message.startswith(
        "http://10.1.2.3:4566 answered with something that is not AWS's (Unable to parse response (syntax error)"
    )
    assert said.value.message.endswith(": the proxy of HTTPS_PROXY in between?")
    assert said.value.next_step.startswith("list http://10.1.2.3:4566's host in NO_PROXY")
    monkeypatch.delenv("HTTPS_PROXY")
    aws = translate_error(ResponseParserError("Unable to parse response"), sample_env(name="dev"))
    assert isinstance(aws, StepFailed) and aws.message.startswith("AWS (us-east-1) answered with something")


def test_a_change_whose_answer_was_lost_or_a_server_failed_may_have_been_applied_a_refusal_was_not() -> None:
    def answered(status: int | None) -> ClientError:
        meta = {} if status is None else {"HTTPStatusCode": status}
        return ClientError({"Error": {"Code": "X", "Message": "x"}, "ResponseMetadata": meta}, "UpdateAlias")

    assert maybe_applied(botocore.exceptions.ReadTimeoutError(endpoint_url="https://lambda"))
    assert maybe_applied(botocore.exceptions.ConnectionClosedError(endpoint_url="https://lambda"))
    assert maybe_applied(KeyboardInterrupt())
    assert maybe_applied(answered(500)) and maybe_applied(answered(503)) and maybe_applied(answered(None))
    assert not maybe_applied(answered(400)) and not maybe_applied(answered(409)) and not maybe_applied(answered(403))
    assert not maybe_applied(UsageError("refused"))


def test_a_call_that_got_no_answer_is_named_in_its_message(monkeypatch: pytest.MonkeyPatch) -> None:
    """A read timeout was said "AWS call failed: Read timeout on endpoint URL ...", naming no call, where a refusal
    names its operation."""
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(name, "testing")  # the call is signed before it is sent (and fails, sent nowhere)
    env = sample_env(name="dev", max_attempts=0)
    aws = AwsFactory(env, environ={})

    def no_answer(**_: Any) -> None:
        raise botocore.exceptions.ReadTimeoutError(endpoint_url="https://ecs.us-east-1.amazonaws.com")

    ecs = aws.client("ecs")
    ecs.meta.events.register("before-send", no_answer)
    with pytest.raises(botocore.exceptions.ReadTimeoutError) as lost:
        ecs.update_service(cluster="c", service="s", taskDefinition="t:2")
    said = translate_error(lost.value, env)
    assert (
        said.message == 'AWS UpdateService failed: Read timeout on endpoint URL: "https://ecs.us-east-1.amazonaws.com"'
    )
    assert translate_error(botocore.exceptions.ReadTimeoutError(endpoint_url="x"), env).message.startswith(
        "AWS call failed: "
    )
