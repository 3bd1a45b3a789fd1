"""StackDeployer against moto's CloudFormation, in process: create, no change, update, outputs, destroy.

moto runs change sets synchronously and never fails them, so recovery, refusals and failures are played by
botocore's Stubber in test_stacks_stubbed.py. moto also drops the outputs of stacks made through change sets
(the sandbox extends that); outputs are read here from a stack made with CreateStack.
"""

from __future__ import annotations

import dataclasses
import io
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from unittest.mock import Mock

import boto3
import pytest
from botocore.exceptions import ClientError
from botocore.stub import Stubber
from moto import mock_aws

from deploykit.aws import AwsFactory
from deploykit.clock import FakeClock
from deploykit.config import load_config
from deploykit.errors import StepFailed, UsageError
from deploykit.output import Reporter
from deploykit.plan import Context
from deploykit.stack_chain import DeployStack
from deploykit.stacks import StackDeployer, StackOutputs, updated_of
from tests.functional.conftest import REGION, asked

NAME = "CarRentalTestStack"


def template(value: str = "v1", *, with_table: bool = True, table_policy: str | None = None) -> str:
    resources: dict[str, Any] = {
        "Setting": {
            "Type": "AWS::SSM::Parameter",
            "Properties": {"Name": "/car-rental/test/setting", "Type": "String", "Value": {"Ref": "Value"}},
        },
        "Documents": {"Type": "AWS::S3::Bucket", "Properties": {"BucketName": "car-rental-test-documents"}},
    }
    if with_table:
        resources["Cars"] = {
            "Type": "AWS::DynamoDB::Table",
            "Properties": {
                "TableName": "car-rental-test-cars",
                "BillingMode": "PAY_PER_REQUEST",
                "AttributeDefinitions": [{"AttributeName": "car_id", "AttributeType": "S"}],
                "KeySchema": [{"AttributeName": "car_id", "KeyType": "HASH"}],
            },
        }
        if table_policy:
            resources["Cars"]["DeletionPolicy"] = table_policy
    return json.dumps(
        {
            "Parameters": {"Value": {"Type": "String"}},
            "Resources": resources,
            "Outputs": {"SettingName": {"Value": {"Ref": "Setting"}}, "BucketName": {"Value": {"Ref": "Documents"}}},
        }
    )


@pytest.fixture
def cfn(aws_credentials: None) -> Iterator[Any]:
    with mock_aws():
        yield boto3.client("cloudformation", region_name=REGION)


@pytest.fixture
def lines() -> list[str]:
    return []


@pytest.fixture
def deployer(cfn: Any, lines: list[str]) -> StackDeployer:
    return StackDeployer(cfn, FakeClock(), say=lines.append, poll=1.0, timeout=30.0, env="dev")


def ssm_value() -> str:
    return str(
        boto3.client("ssm", region_name=REGION).get_parameter(Name="/car-rental/test/setting")["Parameter"]["Value"]
    )


def test_create_then_nothing_then_update_then_destroy(cfn: Any, deployer: StackDeployer, lines: list[str]) -> None:
    assert deployer.describe(NAME) is None and deployer.parameters(NAME) == {} and deployer.outputs(NAME) == {}

    created = deployer.deploy(NAME, template("v1"), {"Value": "v1"}, tags={"deploykit:environment": "dev"})
    assert created.action == "created"
    assert {c.logical_id: c.action for c in created.changes} == {"Setting": "Add", "Documents": "Add", "Cars": "Add"}
    assert deployer.describe(NAME)["StackStatus"] == "CREATE_COMPLETE"  # type: ignore[index]
    assert ssm_value() == "v1"
    assert deployer.parameters(NAME) == {"Value": "v1"}
    table = next(line for line in lines if line.split()[:2] == ["resource", "type"])  # one say() per table
    assert "Cars" in table and "AWS::DynamoDB::Table" in table
    assert any("CREATE_COMPLETE" in line and line.startswith("[") for line in lines)
    assert boto3.client("dynamodb", region_name=REGION).describe_table(TableName="car-rental-test-cars")

    lines.clear()
    unchanged = deployer.deploy(NAME, template("v1"), {"Value": "v1"})
    assert unchanged.action == "unchanged" and unchanged.changes == ()
    assert any("no changes" in line for line in lines)
    left = [s for s in cfn.list_change_sets(StackName=NAME)["Summaries"] if s["ExecutionStatus"] != "EXECUTE_COMPLETE"]
    assert left == []  # the empty change set is not left behind

    lines.clear()
    updated = deployer.deploy(NAME, template("v2"), {"Value": "v2"})
    assert updated.action == "updated"
    assert ssm_value() == "v2"
    assert deployer.parameters(NAME) == {"Value": "v2"}
    events = [line for line in lines if line.startswith("[")]
    assert any("UPDATE_COMPLETE" in line for line in events)
    assert not any("CREATE_" in line or "REVIEW_IN_PROGRESS" in line for line in events)  # only this deploy's

    lines.clear()
    deleted = deployer.destroy(NAME)
    assert deleted.action == "deleted"
    assert deployer.describe(NAME) is None
    assert any("DELETE_COMPLETE" in line for line in lines)
    assert deployer.destroy(NAME).action == "absent"


def test_express_mode_is_asked_for_an_update_and_a_create_is_applied_in_the_standard_mode(
    cfn: Any, deployer: StackDeployer, lines: list[str]
) -> None:
    asked_for: list[dict[str, Any]] = []
    cfn.meta.events.register(
        "provide-client-params.cloudformation.CreateChangeSet", lambda params, **_: asked_for.append(dict(params))
    )
    created = deployer.deploy(NAME, template("v1"), {"Value": "v1"}, express=True)
    assert created.action == "created" and not created.express
    assert "DeploymentConfig" not in asked_for[-1]
    assert "express" not in "\n".join(lines)  # a create always is in the standard mode: not said
    lines.clear()
    updated = deployer.deploy(NAME, template("v2"), {"Value": "v2"}, express=True)
    assert updated.action == "updated" and updated.express
    assert asked_for[-1]["DeploymentConfig"] == {"Mode": "EXPRESS", "DisableRollback": False}
    assert any(line.startswith(f"{NAME}: UPDATE_COMPLETE (updated in") and "in express mode" in line for line in lines)
    assert ssm_value() == "v2"
    standard = deployer.deploy(NAME, template("v3"), {"Value": "v3"})
    assert not standard.express and "DeploymentConfig" not in asked_for[-1]


def test_a_drift_aware_change_set_is_asked_for_an_update_in_the_standard_mode(
    cfn: Any, deployer: StackDeployer, lines: list[str]
) -> None:
    """revert_drift: DeploymentMode REVERT_DRIFT for an update (not express, said), none for a create (a new stack
    has no drift); what it found is said after the changes (moto reads no drift: none found)."""
    asked_for: list[dict[str, Any]] = []
    cfn.meta.events.register(
        "provide-client-params.cloudformation.CreateChangeSet", lambda params, **_: asked_for.append(dict(params))
    )
    created = deployer.deploy(NAME, template("v1"), {"Value": "v1"}, express=True, revert_drift=True)
    assert created.action == "created" and "DeploymentMode" not in asked_for[-1]
    lines.clear()
    updated = deployer.deploy(NAME, template("v2"), {"Value": "v2"}, express=True, revert_drift=True)
    assert updated.action == "updated" and not updated.express
    assert asked_for[-1]["DeploymentMode"] == "REVERT_DRIFT" and "DeploymentConfig" not in asked_for[-1]
    assert f"{NAME}: standard mode, not express: a drift-aware change set (--revert-drift)" in lines
    assert f"{NAME}: no drift found in the resources it changes or read" in lines
    deployer.deploy(NAME, template("v3"), {"Value": "v3"})
    assert "DeploymentMode" not in asked_for[-1]


def test_a_stack_that_is_only_a_change_set_is_created(cfn: Any, deployer: StackDeployer, lines: list[str]) -> None:
    cfn.create_change_set(
        StackName=NAME,
        ChangeSetName="left-behind",
        ChangeSetType="CREATE",
        TemplateBody=template(),
        Parameters=[{"ParameterKey": "Value", "ParameterValue": "old"}],
    )
    assert cfn.describe_stacks(StackName=NAME)["Stacks"][0]["StackStatus"] == "REVIEW_IN_PROGRESS"
    assert deployer.describe(NAME) is not None

    result = deployer.deploy(NAME, template("v1"), {"Value": "v1"})
    assert result.action == "created"
    assert any("exists only as a change set" in line for line in lines)
    assert ssm_value() == "v1"


def test_a_first_create_refused_or_failed_leaves_no_stack_behind(cfn: Any, deployer: StackDeployer) -> None:
    """CreateChangeSet of a new stack makes the stack, empty, REVIEW_IN_PROGRESS: a refusal (exit 2, "nothing was
    changed"), or an execution AWS refused, left it, and it counted as there (its outputs {}: smoke ran against it,
    a release command was planned before the stack that makes its service). Deleted with its change set, as the CDK
    CLI does."""
    role = json.dumps(role_template())
    with pytest.raises(UsageError, match=r"refusing to deploy .* to a protected environment unapproved"):
        deployer.deploy(NAME, role, {}, guard_access=True)
    assert stack_names(cfn) == [] and StackOutputs(cfn)(NAME) is None

    class DenyExecute:
        def __init__(self, client: Any) -> None:
            self.client = client

        def __getattr__(self, name: str) -> Any:
            return getattr(self.client, name)

        def execute_change_set(self, **_: Any) -> None:
            error = {"Error": {"Code": "AccessDenied", "Message": "not authorized: cloudformation:ExecuteChangeSet"}}
            raise ClientError(error, "ExecuteChangeSet")

    denied = StackDeployer(DenyExecute(cfn), FakeClock(), say=lambda _: None, poll=1.0, timeout=30.0, env="dev")
    with pytest.raises(ClientError, match="AccessDenied"):
        denied.deploy(NAME, template("v1", with_table=False), {"Value": "v1"})
    assert stack_names(cfn) == []
    deployer.deploy(NAME, template("v1", with_table=False), {"Value": "v1"})  # an update's change set: kept stack
    with pytest.raises(ClientError, match="AccessDenied"):
        denied.deploy(NAME, template("v2", with_table=False), {"Value": "v2"})
    [stack] = cfn.describe_stacks(StackName=NAME)["Stacks"]
    assert stack["StackStatus"] in ("CREATE_COMPLETE", "UPDATE_COMPLETE")
    left = cfn.list_change_sets(StackName=NAME)["Summaries"]  # moto lists the executed one too
    assert [c for c in left if c["ExecutionStatus"] == "AVAILABLE"] == []  # none left to be executed by mistake
    assert ssm_value() == "v1"


class AfterExecute:
    """CloudFormation as ``denied`` makes it once the change set was executed: the call named refused."""

    def __init__(self, client: Any, denied: str, code: str) -> None:
        self.client, self.denied, self.code, self.executed = client, denied, code, False

    def __getattr__(self, name: str) -> Any:
        if name == "execute_change_set":
            self.executed = True
        elif name == self.denied and self.executed:
            error = {"Error": {"Code": self.code, "Message": f"{self.code} on purpose"}}
            return Mock(side_effect=ClientError(error, name))
        return getattr(self.client, name)


def test_a_refusal_after_the_change_set_went_is_a_failure_or_a_warning_never_nothing_changed(cfn: Any) -> None:
    """AWS refusing a call after the change set was executed was taken for bad input (exit 2, 'nothing changed', the
    stack's outputs lost for the live record): the stack changed. Its termination protection refused is said, the
    deploy done; following it refused (credentials run out) fails the step (exit 1)."""
    said: list[str] = []
    denied = AfterExecute(cfn, "update_termination_protection", "AccessDenied")
    deployer = StackDeployer(denied, FakeClock(), say=said.append, poll=1.0, timeout=30.0, env="dev")
    result = deployer.deploy(NAME, template("v1", with_table=False), {"Value": "v1"}, termination_protection=True)
    assert result.action == "created" and ssm_value() == "v1"
    assert any("its termination protection was not set (AccessDenied" in line for line in said)

    expired = AfterExecute(cfn, "describe_stacks", "ExpiredToken")
    deployer = StackDeployer(expired, FakeClock(), say=said.append, poll=1.0, timeout=30.0, env="dev")
    with pytest.raises(StepFailed, match="its change set was executed, but following it failed: ExpiredToken") as err:
        deployer.deploy(NAME, template("v2", with_table=False), {"Value": "v2"})
    assert err.value.exit_code == 1


class NeverExecuted:
    """CloudFormation that takes ExecuteChangeSet (200) and never runs it: the stack shows nothing."""

    def __init__(self, client: Any, execution: str | None = None) -> None:
        self.client, self.execution, self.executed = client, execution, False

    def __getattr__(self, name: str) -> Any:
        if name == "execute_change_set":
            self.executed = True
            return Mock(return_value={})
        if name == "describe_change_set" and self.execution == "unreadable" and self.executed:
            denied = ClientError({"Error": {"Code": "AccessDenied", "Message": "no"}}, "DescribeChangeSet")
            return Mock(side_effect=denied)  # the follow's own describes go through describe_stacks
        if name == "describe_change_set" and self.execution is not None:
            real = self.client.describe_change_set
            return lambda **kwargs: {**real(**kwargs), "ExecutionStatus": self.execution}
        return getattr(self.client, name)


@pytest.mark.parametrize(
    "execution", [None, "EXECUTE_FAILED", "unreadable"], ids=["still-available", "execute-failed", "unreadable"]
)
def test_a_change_set_cloudformation_took_and_never_ran_is_no_update(cfn: Any, execution: str | None) -> None:
    """ExecuteChangeSet answered, the stack never moved (no event, its status and time as before): after three quiet
    polls its old CREATE_COMPLETE counted as done, 'updated', and the deploy was recorded live. The change set says
    whether it went: not EXECUTE_COMPLETE, the step fails."""
    said: list[str] = []
    StackDeployer(cfn, FakeClock(), say=said.append, poll=1.0, timeout=30.0, env="dev").deploy(
        NAME, template("v1", with_table=False), {"Value": "v1"}
    )
    deployer = StackDeployer(NeverExecuted(cfn, execution), FakeClock(), say=said.append, poll=1.0, timeout=30.0)
    with pytest.raises(StepFailed) as failed:
        deployer.deploy(NAME, template("v2", with_table=False), {"Value": "v2"})
    said = (
        "the change set could not be read (AccessDenied): whether it went is not known"
        if execution == "unreadable"
        else f"the change set is {execution or 'AVAILABLE'}: it was not applied"
    )
    assert failed.value.message.startswith(
        f"{NAME}: CloudFormation took the execution of its change set, but the stack showed no sign of it "
        f"(CREATE_COMPLETE as before, no event, 3 polls) and {said}"
    ), failed.value.message
    assert ssm_value() == "v1" and failed.value.exit_code == 1


def stack_names(cfn: Any) -> list[str]:
    return [s["StackName"] for s in cfn.describe_stacks()["Stacks"] if s["StackStatus"] != "DELETE_COMPLETE"]


def test_a_deleted_stack_is_created_again(cfn: Any, deployer: StackDeployer) -> None:
    deployer.deploy(NAME, template("v1", with_table=False), {"Value": "v1"})
    deployer.destroy(NAME)
    assert deployer.deploy(NAME, template("v3", with_table=False), {"Value": "v3"}).action == "created"
    assert ssm_value() == "v3"


def test_outputs_of_a_stack(cfn: Any, deployer: StackDeployer) -> None:
    cfn.create_stack(
        StackName=NAME, TemplateBody=template("v1"), Parameters=[{"ParameterKey": "Value", "ParameterValue": "v1"}]
    )
    assert deployer.outputs(NAME) == {
        "SettingName": "/car-rental/test/setting",
        "BucketName": "car-rental-test-documents",
    }
    # an unchanged deploy answers with the outputs too
    assert deployer.deploy(NAME, template("v1"), {"Value": "v1"}).outputs["BucketName"] == "car-rental-test-documents"


def test_a_deploy_says_when_cloudformation_last_changed_the_stack_as_stack_outputs_reads_it(
    cfn: Any, deployer: StackDeployer
) -> None:
    """What a deploy left the stack as, by CloudFormation's clock, for the live record; StackOutputs answers the same
    from the DescribeStacks it read the outputs with (no other call)."""
    created = deployer.deploy(NAME, template("v1"), {"Value": "v1"})
    described = cfn.describe_stacks(StackName=NAME)["Stacks"][0]
    assert created.updated == updated_of(described) != ""
    assert deployer.deploy(NAME, template("v1"), {"Value": "v1"}).updated == created.updated  # unchanged
    outputs = StackOutputs(cfn)
    seen = asked(cfn, "DescribeStacks", "StackName")
    assert outputs.updated(NAME) == created.updated and outputs(NAME) is not None and seen == [NAME]
    assert outputs.updated("CarRentalAbsentStack") == ""


def test_a_preview_shows_the_changes_and_changes_nothing(cfn: Any, deployer: StackDeployer) -> None:
    assert deployer.preview(NAME, template("v1"), {"Value": "v1"}) is None  # no stack: it would all be created
    assert cfn.list_stacks()["StackSummaries"] == []  # and no REVIEW_IN_PROGRESS stack was left behind
    deployer.deploy(NAME, template("v1"), {"Value": "v1"})
    changes = deployer.preview(NAME, template("v1", with_table=False), {"Value": "v2"})
    assert changes is not None
    # moto lists template changes only (a parameter-only Modify of Setting is not detected by it)
    assert {c.logical_id: c.action for c in changes} == {"Cars": "Remove"}
    assert ssm_value() == "v1"  # never executed
    left = [c["ChangeSetName"] for c in cfn.list_change_sets(StackName=NAME)["Summaries"]]
    assert not [name for name in left if "preview" in name]  # and deleted
    assert deployer.describe(NAME)["StackStatus"] == "CREATE_COMPLETE"  # type: ignore[index]


def test_a_removal_the_deployed_templates_policy_keeps_is_said_kept(
    cfn: Any, deployer: StackDeployer, lines: list[str]
) -> None:
    """CloudFormation keeps a resource it removes when the template it was deployed with says DeletionPolicy Retain
    (as the CDK's tables, buckets, user pools and function versions are): the preview and the refusal say so."""
    deployer.deploy(NAME, template("v1", table_policy="Retain"), {"Value": "v1"})
    changes = deployer.preview(NAME, template("v1", with_table=False), {"Value": "v1"})
    assert changes is not None
    assert [(c.logical_id, c.action, c.kept_by) for c in changes] == [("Cars", "Remove", "DeletionPolicy Retain")]
    lines.clear()
    with pytest.raises(UsageError) as refused:
        deployer.deploy(NAME, template("v1", with_table=False), {"Value": "v1"})
    assert (
        "Cars (AWS::DynamoDB::Table, removed: it is kept, out of the stack, not deleted (DeletionPolicy Retain))"
        in refused.value.message
    )
    assert "  ↳ it is kept, out of the stack, not deleted (DeletionPolicy Retain)" in "\n".join(lines)
    removed = deployer.deploy(NAME, template("v1", with_table=False), {"Value": "v1"}, allow_replace=True)
    assert [c.kept_by for c in removed.changes] == ["DeletionPolicy Retain"]  # (moto deletes it all the same)


# -- StackOutputs: each stack read once per command, forgotten when anything may have changed it ------------------


def create(cfn: Any) -> None:
    """The test stack, made with CreateStack (moto keeps the outputs of those)."""
    cfn.create_stack(
        StackName=NAME, TemplateBody=template("v1"), Parameters=[{"ParameterKey": "Value", "ParameterValue": "v1"}]
    )


def test_stack_outputs_describe_each_stack_once(cfn: Any) -> None:
    create(cfn)
    outputs = StackOutputs(cfn)
    seen = asked(cfn, "DescribeStacks", "StackName")
    first = outputs(NAME)
    assert first is not None and first["SettingName"] == "/car-rental/test/setting"
    first["SettingName"] = "changed by the caller"  # a copy: what is remembered stays
    assert outputs(NAME) == {"SettingName": "/car-rental/test/setting", "BucketName": "car-rental-test-documents"}
    assert outputs("CarRentalAbsentStack") is None and outputs("CarRentalAbsentStack") is None
    assert seen == [NAME, "CarRentalAbsentStack"]


def test_a_call_that_may_change_a_stack_forgets_what_was_read(cfn: Any, deployer: StackDeployer) -> None:
    outputs = StackOutputs(cfn)
    seen = asked(cfn, "DescribeStacks", "StackName")
    assert outputs(NAME) is None
    deployer.deploy(NAME, template("v1"), {"Value": "v1"})  # through the same client: CreateChangeSet, Execute...
    assert outputs(NAME) is not None
    deployer.destroy(NAME)
    assert outputs(NAME) is None
    assert seen.count(NAME) > 3  # the deployer's own reads, and the three of StackOutputs
    before = seen.count(NAME)
    cfn.list_stacks()  # reads change nothing
    assert outputs(NAME) is None and seen.count(NAME) == before


def test_an_answer_read_while_a_change_was_in_flight_is_not_remembered(cfn: Any) -> None:
    create(cfn)
    outputs = StackOutputs(cfn)
    seen = asked(cfn, "DescribeStacks", "StackName")
    changes = [lambda: cfn.delete_stack(StackName="CarRentalOtherStack")]  # a write, once

    def write_during_the_read(**_: Any) -> None:
        while changes:
            changes.pop()()

    cfn.meta.events.register("before-call.cloudformation.DescribeStacks", write_during_the_read)
    assert outputs(NAME) is not None and outputs(NAME) is not None
    assert seen == [NAME, NAME]  # the first answer may predate the write: read again


def test_a_stack_that_is_changing_is_not_remembered(aws_credentials: None) -> None:
    cfn = boto3.client("cloudformation", region_name=REGION)
    stubber = Stubber(cfn)
    for status in ("UPDATE_IN_PROGRESS", "UPDATE_COMPLETE", "UPDATE_COMPLETE"):
        stack = {"StackName": NAME, "StackStatus": status, "CreationTime": datetime(2026, 11, 28, tzinfo=UTC)}
        stack["Outputs"] = [{"OutputKey": "Version", "OutputValue": status}]
        stubber.add_response("describe_stacks", {"Stacks": [stack]}, {"StackName": NAME})
    outputs = StackOutputs(cfn)
    with stubber:
        assert outputs(NAME) == {"Version": "UPDATE_IN_PROGRESS"}
        assert outputs(NAME) == {"Version": "UPDATE_COMPLETE"}
        assert outputs(NAME) == {"Version": "UPDATE_COMPLETE"}
    assert len(stubber._queue) == 1  # the third answer was never asked for


def role_template() -> dict[str, Any]:
    trust = {
        "Statement": [
            {"Effect": "Allow", "Principal": {"Service": "ecs-tasks.amazonaws.com"}, "Action": "sts:AssumeRole"}
        ]
    }
    return {
        "Resources": {
            "TaskRole": {"Type": "AWS::IAM::Role", "Properties": {"AssumeRolePolicyDocument": trust}},
            "Setting": {
                "Type": "AWS::SSM::Parameter",
                "Properties": {"Name": "/car-rental/test/role", "Type": "String", "Value": "v1"},
            },
        }
    }


def assembly_context(out: Path, template: dict[str, Any], project: Path, *, protected: bool = False) -> Context:
    """A cloud assembly in ``out`` holding the stack NAME of ``template``, and the context its deploy runs in (the dev
    environment of ``project``)."""
    (out / f"{NAME}.template.json").write_text(json.dumps(template))
    stack_file = {"templateFile": f"{NAME}.template.json"}
    (out / "manifest.json").write_text(
        json.dumps({"artifacts": {NAME: {"type": "aws:cloudformation:stack", "properties": stack_file}}})
    )
    config = load_config(project / "deploy.toml")
    env = dataclasses.replace(config.environment("dev"), protected=protected)
    clock = FakeClock()
    reporter = Reporter(io.StringIO(), tty=False, clock=clock)
    return Context(config, env, AwsFactory(env), clock, reporter, Mock(side_effect=AssertionError))


def test_a_protected_environment_deploys_a_change_of_access_only_approved(
    cfn: Any, tmp_path: Path, project: Path
) -> None:
    """The step as deploy.stack runs it: the environment's `protected` decides; --approve-access lets it through."""
    out = tmp_path / "cdk.out"
    out.mkdir()
    ctx = assembly_context(out, role_template(), project, protected=True)
    step = DeployStack(NAME, str(out / f"{NAME}.template.json"))
    with pytest.raises(UsageError, match=r"changes who may access what: TaskRole \(AWS::IAM::Role, add\)"):
        step.run(ctx)
    assert cfn.list_stacks()["StackSummaries"] == [] or all(
        s["StackStatus"] in ("REVIEW_IN_PROGRESS", "DELETE_COMPLETE") for s in cfn.list_stacks()["StackSummaries"]
    )
    outcome = dataclasses.replace(step, approve_access=True).run(ctx)
    statuses = [x["StackStatus"] for x in cfn.list_stacks()["StackSummaries"] if x["StackName"] == NAME]
    assert outcome.status == "done" and "CREATE_COMPLETE" in statuses


def test_a_stack_deploy_passes_the_code_keys_of_the_functions_its_template_holds_and_no_other(
    cfn: Any, tmp_path: Path, project: Path
) -> None:
    """Each stack that may hold functions is offered every function's code key: CloudFormation refuses a parameter a
    template does not declare, so the deploy passes those its template holds (none, for a stack holding none)."""
    out = tmp_path / "cdk.out"
    out.mkdir()
    key = {"Name": "/car-rental/test/key", "Type": "String", "Value": {"Ref": "NightlyJobCodeKey"}}
    body = {
        "Parameters": {"NightlyJobCodeKey": {"Type": "String"}},
        "Resources": {"Key": {"Type": "AWS::SSM::Parameter", "Properties": key}},
    }
    ctx = assembly_context(out, body, project)
    sent: list[list[str]] = []  # what each change set was asked with (AWS refuses a parameter not declared; moto not)
    ctx.aws.client("cloudformation").meta.events.register(
        "provide-client-params.cloudformation.CreateChangeSet",
        lambda params, **_: sent.append([p["ParameterKey"] for p in params.get("Parameters") or ()]),
    )
    offered = (
        ("HealthHandlerCodeKey", "lambda/health_handler/h.zip"),
        ("NightlyJobCodeKey", "lambda/nightly_job/n.zip"),
    )
    step = DeployStack(NAME, str(out / f"{NAME}.template.json"), offered)
    assert step.describe() == f"{NAME}: change set from {NAME}.template.json; the code key of each function it holds"
    assert step.run(ctx).status == "done"
    assert sent == [["NightlyJobCodeKey"]]
    [stack] = cfn.describe_stacks(StackName=NAME)["Stacks"]
    assert stack["Parameters"] == [{"ParameterKey": "NightlyJobCodeKey", "ParameterValue": "lambda/nightly_job/n.zip"}]


def test_a_stack_deploy_refuses_half_a_move_of_a_function_between_two_stacks(
    cfn: Any, tmp_path: Path, project: Path
) -> None:
    """nightly_job moves from the API stack to the jobs stack in one commit: deployed without the other, the jobs
    stack would run it a second time, and the API stack would delete it, until the other deploys. Refused before any
    change set; deployed in one run (``beside``), or unchecked (a rollback's, which checks its stacks together), not."""
    toml = project / "deploy.toml"
    toml.write_text(toml.read_text().replace('api = "CarRentalApiStack"\n', 'api = "CarRentalApiStack"\njobs = "J"\n'))
    setting = {"Type": "AWS::SSM::Parameter", "Properties": {"Type": "String", "Value": "v"}}
    held = {"Name": "/car-rental/test/held", "Type": "String", "Value": {"Ref": "NightlyJobCodeKey"}}
    api = {"Resources": {"Api": setting | {"Properties": {**setting["Properties"], "Name": "/car-rental/test/api"}}}}
    jobs = {
        "Parameters": {"NightlyJobCodeKey": {"Type": "String"}},
        "Resources": {"Key": {"Type": "AWS::SSM::Parameter", "Properties": held}},
    }
    cfn.create_stack(  # the API stack as deployed: it holds the function
        StackName="CarRentalApiStack",
        TemplateBody=json.dumps(api | {"Outputs": {"NightlyJobFunctionName": {"Value": "api-nightly"}}}),
    )
    out = tmp_path / "cdk.out"
    out.mkdir()
    ctx = assembly_context(out, jobs, project)
    manifest = json.loads((out / "manifest.json").read_text())
    for name, template in (("J", jobs), ("CarRentalApiStack", api)):  # the app makes both: its manifest lists them
        (out / f"{name}.template.json").write_text(json.dumps(template))
        properties = {"templateFile": f"{name}.template.json"}
        manifest["artifacts"][name] = {"type": "aws:cloudformation:stack", "properties": properties}
    (out / "manifest.json").write_text(json.dumps(manifest))
    offered = (("NightlyJobCodeKey", "lambda/nightly_job/n.zip"),)
    gaining = DeployStack("J", str(out / "J.template.json"), offered, beside=())
    with pytest.raises(UsageError) as refused:
        gaining.run(ctx)
    assert refused.value.message == (
        "nightly_job moves between J and CarRentalApiStack in this commit, and this run deploys J without "
        "CarRentalApiStack: it would run nightly_job twice, in both stacks until CarRentalApiStack deploys; nothing "
        "was changed"
    )
    assert refused.value.next_step == "deploy both in one run: inv deploy.auto --env dev"
    with pytest.raises(UsageError, match="twice"):
        gaining.preflight(ctx, ())  # deploy.auto's, before its first change
    losing = DeployStack("CarRentalApiStack", str(out / "CarRentalApiStack.template.json"), offered, beside=("Other",))
    with pytest.raises(UsageError, match="it would delete nightly_job, which would run nowhere until J deploys"):
        losing.run(ctx)
    assert [s["StackName"] for s in cfn.describe_stacks()["Stacks"]] == ["CarRentalApiStack"]  # nothing changed
    # the API stack deploys in the same run, or the check is not asked for: the jobs stack goes ahead
    assert dataclasses.replace(gaining, beside=("CarRentalApiStack",)).run(ctx).status == "done"
    cfn.delete_stack(StackName="J")
    assert dataclasses.replace(gaining, beside=None).run(ctx).status == "done"
