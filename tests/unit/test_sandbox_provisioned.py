"""The sandbox's provisioned concurrency (sandbox.ext.provisioned), on in-process moto: allocations that take time and
run the version's init, and an alias's move that keeps its old version serving until the new one is READY."""

from __future__ import annotations

import io
import threading
import time
import zipfile
from collections.abc import Iterator
from typing import Any
from unittest.mock import Mock

import boto3
import pytest
from botocore.exceptions import ClientError
from moto import mock_aws
from moto.awslambda.models import lambda_backends
from moto.core import DEFAULT_ACCOUNT_ID

from sandbox.ext import provisioned
from sandbox.ext.cloudformation_resources import Context, LambdaAlias, ResourceError

REGION = "eu-west-1"


@pytest.fixture
def lam() -> Iterator[Any]:
    with mock_aws():
        role = boto3.client("iam", region_name=REGION).create_role(RoleName="r", AssumeRolePolicyDocument="{}")
        client = boto3.client("lambda", region_name=REGION)
        code = io.BytesIO()
        with zipfile.ZipFile(code, "w") as archive:
            archive.writestr("handler.py", "def handler(event, context):\n    return 1\n")
        client.create_function(
            FunctionName="fn",
            Runtime="python3.11",
            Role=role["Role"]["Arn"],
            Handler="handler.handler",
            Code={"ZipFile": code.getvalue()},
        )
        client.publish_version(FunctionName="fn")
        client.create_alias(FunctionName="fn", Name="live", FunctionVersion="1")
        yield client


def publish(lam: Any, memory: int) -> str:
    lam.update_function_configuration(FunctionName="fn", MemorySize=memory)
    return str(lam.publish_version(FunctionName="fn")["Version"])


def status(lam: Any) -> str:
    return str(lam.get_provisioned_concurrency_config(FunctionName="fn", Qualifier="live")["Status"])


def settled(lam: Any) -> str:
    deadline = time.monotonic() + 5
    while status(lam) == "IN_PROGRESS" and time.monotonic() < deadline:
        time.sleep(0.01)
    return status(lam)


def weights(lam: Any) -> dict[str, float]:
    return dict(
        (lam.get_alias(FunctionName="fn", Name="live").get("RoutingConfig") or {}).get("AdditionalVersionWeights") or {}
    )


def test_an_allocation_takes_time_runs_the_init_and_an_aliass_move_waits_for_it(lam: Any) -> None:
    inits: list[str] = []
    failing = {"3": "RuntimeError: STATUS_PAGE_URL is not set"}

    def init(_backend: Any, function: str, version: str) -> str | None:
        inits.append(f"{function}:{version}")
        return failing.get(version)

    backend = lambda_backends[DEFAULT_ACCOUNT_ID][REGION]
    provisioned.install(backend, provisioned.Timing(lambda: 0.05, init, threading.Lock()))
    answer = lam.put_provisioned_concurrency_config(
        FunctionName="fn", Qualifier="live", ProvisionedConcurrentExecutions=2
    )
    assert (answer["Status"], answer["AvailableProvisionedConcurrentExecutions"]) == ("IN_PROGRESS", 0)
    assert settled(lam) == "READY" and inits == ["fn:1"]

    # moved: version 1 takes the alias's requests (a weight of 1) until version 2's environments are ready
    two = publish(lam, 256)
    lam.update_alias(
        FunctionName="fn", Name="live", FunctionVersion=two, RoutingConfig={"AdditionalVersionWeights": {}}
    )
    assert status(lam) == "IN_PROGRESS" and weights(lam) == {"1": 1.0}
    assert settled(lam) == "READY" and weights(lam) == {} and inits[-1] == "fn:2"

    # an init that raises: FAILED with its reason, version 2 still serving
    three = publish(lam, 512)
    lam.update_alias(
        FunctionName="fn", Name="live", FunctionVersion=three, RoutingConfig={"AdditionalVersionWeights": {}}
    )
    assert settled(lam) == "FAILED" and weights(lam) == {"2": 1.0}
    found = lam.get_provisioned_concurrency_config(FunctionName="fn", Qualifier="live")
    assert found["StatusReason"] == "FUNCTION_ERROR_INIT_FAILURE: RuntimeError: STATUS_PAGE_URL is not set"
    # moved back: the version whose allocation failed never served, so version 2 serves at once
    lam.update_alias(
        FunctionName="fn", Name="live", FunctionVersion=two, RoutingConfig={"AdditionalVersionWeights": {}}
    )
    assert weights(lam) == {} and settled(lam) == "READY"
    [listed] = lam.list_provisioned_concurrency_configs(FunctionName="fn")["ProvisionedConcurrencyConfigs"]
    assert listed["FunctionArn"].endswith(":function:fn:live") and listed["Status"] == "READY"


def test_what_lambda_refuses_and_none_is_not_found(lam: Any) -> None:
    """Without the sandbox's timing (moto in the tests), an allocation is READY at once."""
    with pytest.raises(ClientError, match="ProvisionedConcurrencyConfigNotFoundException"):
        status(lam)
    with pytest.raises(ClientError, match="cannot be applied to unpublished function versions"):
        lam.put_provisioned_concurrency_config(
            FunctionName="fn", Qualifier="$LATEST", ProvisionedConcurrentExecutions=1
        )
    two = publish(lam, 256)
    lam.update_alias(
        FunctionName="fn", Name="live", FunctionVersion=two, RoutingConfig={"AdditionalVersionWeights": {"1": 0.1}}
    )
    with pytest.raises(ClientError, match="Alias with weights can not be used with Provisioned Concurrency"):
        lam.put_provisioned_concurrency_config(FunctionName="fn", Qualifier="live", ProvisionedConcurrentExecutions=1)
    lam.put_provisioned_concurrency_config(FunctionName="fn", Qualifier="1", ProvisionedConcurrentExecutions=1)
    assert lam.get_provisioned_concurrency_config(FunctionName="fn", Qualifier="1")["Status"] == "READY"
    lam.delete_provisioned_concurrency_config(FunctionName="fn", Qualifier="1")
    assert lam.list_provisioned_concurrency_configs(FunctionName="fn")["ProvisionedConcurrencyConfigs"] == []


def test_a_stacks_alias_asks_for_it_in_its_provisioned_concurrency_config(lam: Any) -> None:
    """The sandbox's CloudFormation gives an AWS::Lambda::Alias its ProvisionedConcurrencyConfig (CDK's
    ``provisioned_concurrent_executions``), and takes it off with the setting or the alias."""
    ctx = Context(Mock(), DEFAULT_ACCOUNT_ID, REGION, "Team", "stack-id")
    props = {"Name": "warm", "FunctionName": "fn", "FunctionVersion": "1"}
    provider = LambdaAlias()
    record = provider.create(
        ctx, "WarmAlias", {**props, "ProvisionedConcurrencyConfig": {"ProvisionedConcurrentExecutions": 2}}
    )

    def asked() -> int | None:
        try:
            found = lam.get_provisioned_concurrency_config(FunctionName="fn", Qualifier="warm")
        except ClientError:
            return None
        return int(found["RequestedProvisionedConcurrentExecutions"])

    assert asked() == 2
    provider.update(ctx, record, {**props, "ProvisionedConcurrencyConfig": {"ProvisionedConcurrentExecutions": 3}})
    assert asked() == 3
    provider.update(ctx, record, props)
    assert asked() is None
    provider.update(ctx, record, {**props, "ProvisionedConcurrencyConfig": {"ProvisionedConcurrentExecutions": 1}})
    provider.delete(ctx, record)
    assert asked() is None


def test_a_stacks_alias_waits_until_its_provisioned_concurrency_is_ready_and_fails_when_it_fails(lam: Any) -> None:
    """As AWS's CloudFormation: the alias is done once its environments are READY; FAILED fails the resource (and
    so the stack's operation, which rolls back)."""
    backend = lambda_backends[DEFAULT_ACCOUNT_ID][REGION]
    failing = {"2": "RuntimeError: STATUS_PAGE_URL is not set"}
    provisioned.install(
        backend, provisioned.Timing(lambda: 0.2, lambda _b, _f, version: failing.get(version), threading.Lock())
    )
    ctx = Context(Mock(lock=threading.RLock()), DEFAULT_ACCOUNT_ID, REGION, "Team", "stack-id")
    props = {"Name": "warm", "FunctionName": "fn", "FunctionVersion": "1"}
    warm = {**props, "ProvisionedConcurrencyConfig": {"ProvisionedConcurrentExecutions": 2}}
    provider = LambdaAlias()
    record = provider.create(ctx, "WarmAlias", warm)
    started = time.monotonic()
    provider.wait(ctx, record)
    assert time.monotonic() - started >= 0.15  # the allocation's time, waited for
    assert lam.get_provisioned_concurrency_config(FunctionName="fn", Qualifier="warm")["Status"] == "READY"
    two = publish(lam, 256)
    provider.update(ctx, record, {**warm, "FunctionVersion": two})
    with pytest.raises(
        ResourceError,
        match="provisioned concurrency of fn:warm could not be made ready: "
        "FUNCTION_ERROR_INIT_FAILURE: RuntimeError: STATUS_PAGE_URL is not set",
    ):
        provider.wait(ctx, record)
