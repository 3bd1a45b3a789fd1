"""StackDeployer against the CloudFormation shapes moto cannot produce, played by botocore's Stubber.

Call order of a deploy: DescribeStacks (pre-flight, by name), [recovery], CreateChangeSet, DescribeChangeSet
until CREATE_COMPLETE or FAILED (then its further pages), DescribeStacks + DescribeStackEvents (what exists
before the execute), ExecuteChangeSet, then per poll DescribeStacks + DescribeStackEvents (by stack id). The
Stubber fails a test on any call out of this order, so "execute was never called" is checked by construction.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from botocore.exceptions import ClientError
from botocore.stub import ANY, Stubber

from deploykit.clock import FakeClock
from deploykit.errors import StepFailed, UsageError
from deploykit.stacks import NoPreview, StackDeployer
from tests.functional.conftest import new_session

ACCOUNT = "123456789012"
NAME = "CarRentalFargateStack"
STACK_ID = f"arn:aws:cloudformation:eu-west-1:{ACCOUNT}:stack/{NAME}/11111111-aaaa"
NEW_STACK_ID = f"arn:aws:cloudformation:eu-west-1:{ACCOUNT}:stack/{NAME}/22222222-bbbb"
CS_ID = f"arn:aws:cloudformation:eu-west-1:{ACCOUNT}:changeSet/deploykit-20260101T000000Z-abc/33333333"
BODY = '{"Resources":{}}'
PARAMS = {"ImageTag": "abc1234"}
T0 = datetime(2026, 1, 1, tzinfo=UTC)
STACK_TYPE = "AWS::CloudFormation::Stack"


def change(
    logical: str, rtype: str, action: str, replacement: str | None = None, *details: dict[str, Any]
) -> dict[str, Any]:
    rc: dict[str, Any] = {"LogicalResourceId": logical, "ResourceType": rtype, "Action": action}
    if replacement:
        rc["Replacement"] = replacement
        rc["Scope"] = ["Properties"]
    if action == "Remove" or replacement in ("True", "Conditional"):  # as CloudFormation says it (no policy set)
        rc["PolicyAction"] = "Delete" if action == "Remove" else "ReplaceAndDelete"
    if details:
        rc["Details"] = list(details)
    return {"Type": "Resource", "ResourceChange": rc}


def value_change(path: str, before: str, after: str, recreation: str = "Never") -> dict[str, Any]:
    """A Details entry as DescribeChangeSet gives it when asked IncludePropertyValues."""
    name = path.split("/")[2]
    return {
        "Target": {
            "Attribute": "Properties",
            "Name": name,
            "RequiresRecreation": recreation,
            "Path": path,
            "BeforeValue": before,
            "AfterValue": after,
            "AttributeChangeType": "Modify",
        },
        "Evaluation": "Static",
        "ChangeSource": "DirectModification",
    }


class Script:
    """A CloudFormation conversation, stubbed in order. ``history`` is every event so far, oldest first."""

    def __init__(self) -> None:
        self.client = new_session().client("cloudformation")
        self.stub = Stubber(self.client)
        self.history: list[dict[str, Any]] = []
        self._n = 0

    # -- responses ------------------------------------------------------------------------------------
    def stack(self, status: str, *, ref: str = NAME, stack_id: str = STACK_ID, **extra: Any) -> None:
        body = {"StackId": stack_id, "StackName": NAME, "CreationTime": T0, "StackStatus": status, **extra}
        self.stub.add_response("describe_stacks", {"Stacks": [body]}, {"StackName": ref})

    def no_stack(self, ref: str = NAME) -> None:
        self.stub.add_client_error(
            "describe_stacks", "ValidationError", f"Stack with id {ref} does not exist", 400, {"StackName": ref}
        )

    def emit(
        self,
        status: str,
        logical: str = NAME,
        rtype: str = STACK_TYPE,
        reason: str | None = None,
        stack_id: str = STACK_ID,
        physical: str | None = None,
    ) -> None:
        self._n += 1
        event: dict[str, Any] = {
            "StackId": stack_id,
            "EventId": f"event-{self._n:03d}",
            "StackName": NAME,
            "LogicalResourceId": logical,
            "ResourceType": rtype,
            "ResourceStatus": status,
            "Timestamp": T0 + timedelta(seconds=self._n),
        }
        if reason:
            event["ResourceStatusReason"] = reason
        if physical:
            event["PhysicalResourceId"] = physical
        self.history.append(event)

    def events(self, ref: str = STACK_ID) -> None:
        listing = [e for e in reversed(self.history) if e["StackId"] == ref]  # newest first, as CloudFormation
        self.stub.add_response("describe_stack_events", {"StackEvents": listing}, {"StackName": ref})

    def create_change_set(self, kind: str = "UPDATE", stack_id: str = STACK_ID, **more: Any) -> None:
        """``more``: what else the request must hold (NotificationARNs)."""
        expected = {
            "StackName": NAME,
            "ChangeSetName": ANY,
            "ChangeSetType": kind,
            "TemplateBody": BODY,
            "Parameters": [{"ParameterKey": "ImageTag", "ParameterValue": "abc1234"}],
            "Capabilities": ["CAPABILITY_IAM", "CAPABILITY_NAMED_IAM", "CAPABILITY_AUTO_EXPAND"],
            "Description": ANY,
            **more,
        }
        self.stub.add_response("create_change_set", {"Id": CS_ID, "StackId": stack_id}, expected)

    def change_set(
        self,
        status: str,
        changes: list[dict[str, Any]] | None = None,
        reason: str | None = None,
        next_token: str | None = None,
        token: str | None = None,
    ) -> None:
        body: dict[str, Any] = {"ChangeSetId": CS_ID, "StackId": STACK_ID, "StackName": NAME, "Status": status}
        if changes is not None:
            body["Changes"] = changes
        if reason:
            body["StatusReason"] = reason
        if next_token:
            body["NextToken"] = next_token
        expected: dict[str, Any] = {"ChangeSetName": CS_ID, "IncludePropertyValues": True}  # each value's change
        if token:
            expected["NextToken"] = token
        self.stub.add_response("describe_change_set", body, expected)

    def call(self, method: str, **expected: Any) -> None:
        self.stub.add_response(method, {}, expected)

    def error(self, method: str, code: str, status: int = 400, **expected: Any) -> None:
        self.stub.add_client_error(method, code, f"{code} happened", status, expected_params=expected or None)

    # -- common sequences -------------------------------------------------------------------------------
    def ready_change_set(self, kind: str = "UPDATE", changes: list[dict[str, Any]] | None = None) -> None:
        self.create_change_set(kind)
        self.change_set("CREATE_COMPLETE", changes or [change("Service", "AWS::ECS::Service", "Modify", "False")])

    def empty_change_set(self) -> None:
        """A live stack, a change set that holds no change (FAILED, as CloudFormation says it), its delete."""
        self.stack("UPDATE_COMPLETE")
        self.create_change_set("UPDATE")
        self.change_set(
            "FAILED",
            reason="The submitted information didn't contain changes. Submit different information to create a change "
            "set.",
        )
        self.call("delete_change_set", ChangeSetName=CS_ID)

    def executed_update(
        self, *, final: str = "UPDATE_COMPLETE", outputs: dict[str, str] | None = None, **described: Any
    ) -> None:
        """Baseline, execute, one poll in progress, one poll terminal; ``described``: more of the stack as the
        last poll describes it."""
        self.stack("UPDATE_COMPLETE", ref=STACK_ID)
        self.events()
        self.call("execute_change_set", ChangeSetName=CS_ID)
        self.stack("UPDATE_IN_PROGRESS", ref=STACK_ID)
        self.emit("UPDATE_IN_PROGRESS", reason="User Initiated")
        self.emit("UPDATE_IN_PROGRESS", "Service", "AWS::ECS::Service")
        self.events()
        extra: dict[str, Any] = dict(described)
        if outputs:
            extra["Outputs"] = [{"OutputKey": k, "OutputValue": v} for k, v in outputs.items()]
        self.stack(final, ref=STACK_ID, **extra)
        self.emit("UPDATE_COMPLETE", "Service", "AWS::ECS::Service")
        self.emit(final)
        self.events()


@pytest.fixture
def script() -> Script:
    return Script()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def lines() -> list[str]:
    return []


def make(script: Script, clock: FakeClock, lines: list[str], **kwargs: Any) -> StackDeployer:
    options: dict[str, Any] = {"say": lines.append, "poll": 1.0, "timeout": 30.0, "env": "dev", **kwargs}
    return StackDeployer(script.client, clock, **options)


def run(script: Script, deployer: StackDeployer, body: str = BODY, **kwargs: Any) -> Any:
    """Deploy; every stubbed answer must have been asked for, also when the deploy raises."""
    with script.stub:
        try:
            return deployer.deploy(NAME, body, PARAMS, **kwargs)
        finally:
            script.stub.assert_no_pending_responses()


def event_lines(lines: list[str]) -> list[str]:
    return [line for line in lines if line.startswith("[") and ("_IN_PROGRESS" in line or "_COMPLETE" in line)]


# -- the normal path --------------------------------------------------------------------------------------


def test_update_shows_the_changes_follows_new_events_once_and_reads_the_outputs(
    script: Script, clock: FakeClock, lines: list[str]
) -> None:
    script.emit("UPDATE_IN_PROGRESS", reason="an earlier deploy")  # history: never shown
    script.emit("UPDATE_COMPLETE")
    script.stack("UPDATE_COMPLETE")
    script.create_change_set("UPDATE")
    script.change_set("CREATE_IN_PROGRESS")
    script.change_set(
        "CREATE_COMPLETE",
        [change("TaskDefinition", "AWS::ECS::TaskDefinition", "Modify", "True")],
        next_token="page-2",
    )
    script.change_set("CREATE_COMPLETE", [change("Service", "AWS::ECS::Service", "Modify", "False")], token="page-2")
    script.executed_update(outputs={"AlbUrl": "http://alb.example", "ClusterName": "car-rental-cluster"})

    result = run(script, make(script, clock, lines))

    assert result.action == "updated"
    assert result.outputs == {"AlbUrl": "http://alb.example", "ClusterName": "car-rental-cluster"}
    assert [(c.logical_id, c.replacement) for c in result.changes] == [("TaskDefinition", "True"), ("Service", "False")]
    table = next(line for line in lines if line.startswith("resource"))
    assert "TaskDefinition" in table and "Service" in table and "replacement" in table
    assert [line.split("] ", 1)[1] for line in event_lines(lines)] == [
        f"{NAME} {STACK_TYPE} UPDATE_IN_PROGRESS: User Initiated",
        "Service AWS::ECS::Service UPDATE_IN_PROGRESS",
        "Service AWS::ECS::Service UPDATE_COMPLETE",
        f"{NAME} {STACK_TYPE} UPDATE_COMPLETE",
    ]
    assert not any("an earlier deploy" in line for line in lines)
    assert clock.sleeps == [1.0, 1.0]  # once for the change set, once between the two polls
    assert "[   2.0s]" in event_lines(lines)[-1]  # elapsed time since the deploy began


def test_an_empty_change_set_is_deleted_and_nothing_is_executed(
    script: Script, clock: FakeClock, lines: list[str]
) -> None:
    script.empty_change_set()
    script.stack("UPDATE_COMPLETE", Outputs=[{"OutputKey": "AlbUrl", "OutputValue": "http://alb"}])

    result = run(script, make(script, clock, lines))

    assert result.action == "unchanged" and result.changes == ()
    assert result.outputs == {"AlbUrl": "http://alb"}
    assert any("no changes" in line for line in lines)


@pytest.mark.parametrize(("live", "wanted", "set_to"), [(False, True, "on"), (True, False, "off"), (True, True, "")])
def test_the_stack_s_termination_protection_is_set_to_the_app_s_once_deployed(
    script: Script, clock: FakeClock, lines: list[str], live: bool, wanted: bool, set_to: str
) -> None:
    """A change set cannot set it; the CDK CLI sets it after the deploy, from Stack(termination_protection=...):
    UpdateTerminationProtection where the stack's differs, no call where it is the same (the Stubber fails on any
    call not scripted)."""
    script.empty_change_set()
    script.stack("UPDATE_COMPLETE", EnableTerminationProtection=live)
    if set_to:
        script.stub.add_response(
            "update_termination_protection",
            {"StackId": STACK_ID},
            {"StackName": NAME, "EnableTerminationProtection": wanted},
        )

    result = run(script, make(script, clock, lines), termination_protection=wanted)

    assert result.action == "unchanged" and result.protection == set_to
    assert any(f"termination protection {set_to}" in line for line in lines) == bool(set_to)


TOPIC = "arn:aws:sns:eu-west-1:123456789012:deploy-events"


@pytest.mark.parametrize(
    ("live", "wanted", "told"),
    [
        ([], None, ""),  # none named: the request names none, and the stack keeps what it has
        ([TOPIC], None, ""),
        ([], [TOPIC], "SNS topic deploy-events"),
        ([TOPIC], [], "no SNS topic"),
        ([TOPIC], [TOPIC], ""),
    ],
)
def test_the_stack_s_events_go_to_the_topics_the_deploy_names_and_stay_as_they_are_when_it_names_none(
    script: Script, clock: FakeClock, lines: list[str], live: list[str], wanted: list[str] | None, told: str
) -> None:
    """NotificationARNs is in the change set's request only when the deploy names topics (``[]`` takes them off; not
    there, CloudFormation keeps the stack's own); a change of them is said once the stack is deployed."""
    script.stack("UPDATE_COMPLETE", NotificationARNs=live)
    script.create_change_set("UPDATE", **({"NotificationARNs": wanted} if wanted is not None else {}))
    script.change_set("CREATE_COMPLETE", [])  # the topics alone: a change set with no resource change, executed
    script.executed_update(NotificationARNs=live if wanted is None else wanted)

    result = run(script, make(script, clock, lines), notification_arns=wanted)

    assert result.action == "updated" and result.notifications == told
    assert (f"{NAME}: its events go to {told} now" in lines) == bool(told)


def test_a_change_set_refused_for_a_topic_that_is_not_there_names_the_topics_to_make(
    script: Script, clock: FakeClock, lines: list[str]
) -> None:
    script.stack("UPDATE_COMPLETE")
    script.stub.add_client_error(
        "create_change_set", "ValidationError", f"Notification ARN {TOPIC} is not an SNS topic of this sandbox", 400
    )
    with pytest.raises(UsageError) as err:
        run(script, make(script, clock, lines), notification_arns=[TOPIC])
    assert err.value.next_step == (
        f"make the SNS topic {TOPIC} (in the stack's region), or name others in notification_arns of deploy.toml or "
        "the app's Stack(notification_arns=...); nothing was changed"
    )


def test_a_change_set_failing_for_another_reason_is_deleted_and_reported(
    script: Script, clock: FakeClock, lines: list[str]
) -> None:
    script.stack("UPDATE_COMPLETE")
    script.create_change_set("UPDATE")
    script.change_set("FAILED", reason="Parameters: [HealthHandlerCodeKey] must have values")
    script.call("delete_change_set", ChangeSetName=CS_ID)

    with pytest.raises(UsageError) as err:
        run(script, make(script, clock, lines))
    assert "HealthHandlerCodeKey" in err.value.message
    assert err.value.next_step and "nothing was changed" in err.value.next_step


def test_a_drift_aware_change_set_cloudformation_refuses_names_the_plain_deploy(
    script: Script, clock: FakeClock, lines: list[str]
) -> None:
    """--revert-drift: a refusal about the drift-aware mode (as CreateChangeSet's answer, or as the change set's
    reason) names the deploy without it, where another names the template to fix."""
    plain = "CloudFormation makes no drift-aware change set for it, as its message says: deploy it without "
    plain += "--revert-drift (inv deploy.stack CarRentalFargateStack --env dev), and put the settings back by hand"
    script.stack("UPDATE_COMPLETE")
    script.stub.add_client_error(
        "create_change_set", "ValidationError", "DeploymentMode REVERT_DRIFT is not supported for this stack", 400
    )
    with pytest.raises(UsageError) as err:
        run(script, make(script, clock, lines), revert_drift=True)
    assert err.value.next_step == f"{plain}; nothing was changed"

    script.stack("UPDATE_COMPLETE")
    script.create_change_set("UPDATE", DeploymentMode="REVERT_DRIFT")
    script.change_set("FAILED", reason="Drift detection failed for resource Service")
    script.call("delete_change_set", ChangeSetName=CS_ID)
    with pytest.raises(UsageError) as err:
        run(script, make(script, clock, lines), revert_drift=True)
    assert err.value.next_step == f"{plain} (nothing was changed)"

    script.stack("UPDATE_COMPLETE")
    script.stub.add_client_error("create_change_set", "ValidationError", "Template format error: drift", 400)
    with pytest.raises(UsageError) as err:
        run(script, make(script, clock, lines))  # not drift-aware: the template
    assert err.value.next_step == "fix the template or the parameters (ImageTag); nothing was changed"


def test_a_change_set_importing_an_export_no_stack_makes_names_the_stack_to_deploy_first(
    script: Script, clock: FakeClock, lines: list[str]
) -> None:
    """CloudFormation fails the change set of a stack that imports an export no stack makes yet (a new CDK cross-stack
    reference, the exporting stack not deployed since): the next step names that stack (CDK names an export after
    it) and deploy.auto, which deploys it first."""
    script.stack("UPDATE_COMPLETE")
    script.create_change_set("UPDATE")
    script.change_set("FAILED", reason="No export named CarRentalDataStack:ExportsOutputRefCars found.")
    script.call("delete_change_set", ChangeSetName=CS_ID)

    with pytest.raises(UsageError) as err:
        run(script, make(script, clock, lines))
    assert err.value.next_step == (
        "deploy the stack that exports CarRentalDataStack:ExportsOutputRefCars first (inv deploy.stack "
        "CarRentalDataStack --env dev, if it is the stack that exports it), or let inv deploy.auto deploy both (it "
        "deploys a stack whose template now exports what a changed stack imports first); nothing was changed"
    )


def test_a_rollback_whose_template_imports_an_export_no_stack_makes_names_the_exporting_stacks_rollback(
    script: Script, clock: FakeClock, lines: list[str]
) -> None:
    """A rollback of the Fargate stack to a commit whose template imported what the data stack no longer exports:
    deploying the data stack from this checkout would not make it; rolling it back to that commit would."""
    script.stack("UPDATE_COMPLETE")
    script.create_change_set("UPDATE")
    script.change_set("FAILED", reason="No export named CarRentalDataStack:ExportsOutputRefCars found.")
    script.call("delete_change_set", ChangeSetName=CS_ID)
    rerun = "inv rollback --env dev --component stack:fargate --to abc1234"

    with pytest.raises(UsageError) as err:
        run(script, make(script, clock, lines), rerun=rerun)
    assert err.value.next_step == (
        "the commit rolled back to imports CarRentalDataStack:ExportsOutputRefCars, which no live stack exports now: "
        "roll back the stack that exported it then (CarRentalDataStack, if it is the stack that exports it) first, to "
        "the same commit (the same inv rollback with --component stack:ROLE of that stack), then rerun: "
        f"{rerun}; nothing was changed"
    )


def test_a_template_cloudformation_refuses_is_a_usage_error(script: Script, clock: FakeClock, lines: list[str]) -> None:
    script.stack("UPDATE_COMPLETE")
    script.stub.add_client_error(
        "create_change_set", "ValidationError", "Template format error: Unresolved resource dependencies [Vpc]", 400
    )
    with pytest.raises(UsageError) as err:
        run(script, make(script, clock, lines))
    assert "Unresolved resource dependencies [Vpc]" in err.value.message and NAME in err.value.message


# -- the data guard ----------------------------------------------------------------------------------------


def test_replacing_a_table_is_refused_the_change_set_deleted_and_nothing_executed(
    script: Script, clock: FakeClock, lines: list[str]
) -> None:
    script.stack("UPDATE_COMPLETE")
    script.ready_change_set(
        changes=[
            change(
                "CarsTable",
                "AWS::DynamoDB::Table",
                "Modify",
                "True",
                value_change("/Properties/KeySchema/0/AttributeName", "car_id", "car_uid", "Always"),
                value_change("/Properties/BillingMode", "PROVISIONED", "PAY_PER_REQUEST"),
            ),
            change("Service", "AWS::ECS::Service", "Modify", "False"),
            change("KycBucket", "AWS::S3::Bucket", "Modify", "Conditional"),
        ]
    )
    script.call("delete_change_set", ChangeSetName=CS_ID)  # and then no ExecuteChangeSet: the Stubber would fail

    with pytest.raises(UsageError) as err:
        run(script, make(script, clock, lines))
    message = err.value.message
    # the property that replaces it is named (the billing mode does not replace it)
    assert "CarsTable (AWS::DynamoDB::Table, replacement True, by KeySchema[0].AttributeName)" in message
    said = "\n".join(lines).splitlines()
    assert "  ↳ KeySchema[0].AttributeName: car_id → car_uid  ⟳ replaces it" in said
    assert "  ↳ BillingMode: PROVISIONED → PAY_PER_REQUEST" in said
    assert "KycBucket (AWS::S3::Bucket, replacement Conditional)" in message
    assert "Service" not in message
    assert (
        err.value.next_step
        == f"if that is intended, rerun with --allow-replace: inv deploy.stack {NAME} --env dev --allow-replace"
    )
    assert any("CarsTable" in line for line in lines)  # the table was shown first


def test_a_change_set_the_teams_plugins_refuse_is_deleted_and_nothing_executed(
    script: Script, clock: FakeClock, lines: list[str]
) -> None:
    script.stack("UPDATE_COMPLETE")
    script.ready_change_set(
        changes=[
            change(
                "Fn",
                "AWS::Lambda::Function",
                "Modify",
                "False",
                value_change("/Properties/MemorySize", "256", "4096"),
            )
        ]
    )
    script.call("delete_change_set", ChangeSetName=CS_ID)  # and then no ExecuteChangeSet: the Stubber would fail
    reviewed: list[list[str]] = []

    def review(changes: Any) -> dict[str, list[str]]:
        reviewed.append([f"{c.logical_id}.{d.where}={d.after}" for c in changes for d in c.details])
        return {"team_checks": ["Fn: MemorySize 4096 is over the team's 1024 MB"], "cost": ["over budget"]}

    with pytest.raises(UsageError) as err:
        run(script, make(script, clock, lines), review=review)
    assert reviewed == [["Fn.MemorySize=4096"]]
    assert err.value.exit_code == 2
    assert err.value.message == (
        f"refusing to deploy {NAME}: the team's check plugins refuse its change set: cost: over budget; team_checks: "
        "Fn: MemorySize 4096 is over the team's 1024 MB. The change set was deleted; nothing was changed"
    )
    assert (err.value.next_step or "").endswith(
        f"run without the plugin: DEPLOYKIT_BLOCK_PLUGINS=cost,team_checks inv deploy.stack {NAME} --env dev"
    )


def test_a_change_set_its_check_refuses_is_deleted_and_nothing_executed(
    script: Script, clock: FakeClock, lines: list[str]
) -> None:
    """The deploy's own check of the changes (DeployStack: a replacement an imported export carries) runs before the
    execute: its refusal deletes the change set."""
    script.stack("UPDATE_COMPLETE")
    script.ready_change_set(changes=[change("Policy", "AWS::IAM::ManagedPolicy", "Modify", "True")])
    script.call("delete_change_set", ChangeSetName=CS_ID)  # and then no ExecuteChangeSet: the Stubber would fail
    checked: list[list[str]] = []

    def check(changes: Any) -> None:
        checked.append([f"{c.logical_id}:{c.replacement}" for c in changes])
        raise UsageError("its export is in use", next_step="deploy the importer first")

    with pytest.raises(UsageError, match="its export is in use"):
        run(script, make(script, clock, lines), check=check)
    assert checked == [["Policy:True"]]


def test_a_change_set_no_plugin_refuses_is_executed(script: Script, clock: FakeClock, lines: list[str]) -> None:
    script.stack("UPDATE_COMPLETE")
    script.ready_change_set(changes=[change("Fn", "AWS::Lambda::Function", "Modify", "False")])
    script.executed_update()
    result = run(script, make(script, clock, lines), review=lambda changes: {})
    assert result.action == "updated"


def test_a_removal_whose_policy_cannot_be_read_is_deployed_as_told(
    script: Script, clock: FakeClock, lines: list[str]
) -> None:
    """A Remove with no PolicyAction (an endpoint that does not say it) sends deploykit to the deployed template for
    the policy; a GetTemplate refused tells nothing kept, and the deploy goes on."""
    script.stack("UPDATE_COMPLETE")
    removed = change("OldTopic", "AWS::SNS::Topic", "Remove")
    del removed["ResourceChange"]["PolicyAction"]
    script.ready_change_set(changes=[removed])
    script.stub.add_client_error("get_template", "AccessDenied", "not allowed: cloudformation:GetTemplate")
    script.executed_update()
    result = run(script, make(script, clock, lines))
    assert result.action == "updated" and [c.kept_by for c in result.changes] == [""]


def test_a_functions_versions_removed_with_it_are_said_deleted_though_cloudformation_says_retain(
    script: Script, clock: FakeClock, lines: list[str]
) -> None:
    """CloudFormation says Retain of a version whose DeletionPolicy is Retain, but Lambda deletes a function's
    versions with it: a change set removing a function and a version reads the deployed template for whose it is."""
    script.stack("UPDATE_COMPLETE")
    version = change("FnVersion1", "AWS::Lambda::Version", "Remove")
    version["ResourceChange"]["PolicyAction"] = "Retain"
    script.ready_change_set(changes=[change("Fn", "AWS::Lambda::Function", "Remove"), version])
    resources = {"Fn": {"Type": "AWS::Lambda::Function"}}
    resources["FnVersion1"] = {
        "Type": "AWS::Lambda::Version",
        "DeletionPolicy": "Retain",
        "Properties": {"FunctionName": {"Ref": "Fn"}},
    }
    template = {"TemplateBody": json.dumps({"Resources": resources})}
    script.stub.add_response("get_template", template, {"StackName": NAME})
    script.executed_update()
    result = run(script, make(script, clock, lines))
    assert [(c.kept_by, c.deleted_with) for c in result.changes] == [("", ""), ("", "Fn")]
    assert any("↳ deleted with its function Fn, which this change removes" in line for line in lines)


NESTING = json.dumps({"Resources": {"Tables": {"Type": STACK_TYPE, "Properties": {"TemplateURL": "https://t"}}}})
NESTED_CS = f"{CS_ID}-nested"


def test_a_table_removed_inside_a_nested_stack_is_refused_as_one_of_the_stack_s_own(
    script: Script, clock: FakeClock, lines: list[str]
) -> None:
    """A nested stack shows in its parent's change set as one AWS::CloudFormation::Stack row: a table removed inside
    it went through without --allow-replace (and a role widened inside it without --approve-access). The change set
    is asked with the nested ones, whose rows the guards judge; a nested stack removed is refused too."""
    script.stack("UPDATE_COMPLETE")
    script.stub.add_response(
        "create_change_set",
        {"Id": CS_ID, "StackId": STACK_ID},
        {
            "StackName": NAME,
            "ChangeSetName": ANY,
            "ChangeSetType": "UPDATE",
            "TemplateBody": NESTING,
            "Parameters": ANY,
            "Capabilities": ANY,
            "Description": ANY,
            "IncludeNestedStacks": True,
        },
    )
    row = change("Tables", STACK_TYPE, "Modify", "False")
    row["ResourceChange"]["ChangeSetId"] = NESTED_CS
    script.change_set("CREATE_COMPLETE", [row])
    script.stub.add_response(
        "describe_change_set",
        {
            "ChangeSetId": NESTED_CS,
            "Status": "CREATE_COMPLETE",
            "Changes": [change("Cars", "AWS::DynamoDB::Table", "Remove")],
        },
        {"ChangeSetName": NESTED_CS, "IncludePropertyValues": True},
    )
    script.call("delete_change_set", ChangeSetName=CS_ID)  # and no ExecuteChangeSet: the Stubber would fail
    with pytest.raises(UsageError) as refused:
        run(script, make(script, clock, lines), body=NESTING)
    assert "Tables/Cars (AWS::DynamoDB::Table, removed" in refused.value.message, refused.value.message

    script.stack("UPDATE_COMPLETE")
    script.stub.add_response("create_change_set", {"Id": CS_ID, "StackId": STACK_ID})
    script.change_set("CREATE_COMPLETE", [change("Tables", STACK_TYPE, "Remove")])
    script.call("delete_change_set", ChangeSetName=CS_ID)
    with pytest.raises(UsageError) as refused:
        run(script, make(script, clock, lines), body=NESTING)
    assert "Tables (AWS::CloudFormation::Stack, removed" in refused.value.message, refused.value.message


def test_allow_replace_lets_the_replacement_through(script: Script, clock: FakeClock, lines: list[str]) -> None:
    script.stack("UPDATE_COMPLETE")
    script.ready_change_set(changes=[change("CarsTable", "AWS::DynamoDB::Table", "Modify", "True")])
    script.executed_update()

    result = run(script, make(script, clock, lines), allow_replace=True)
    assert result.action == "updated"


# -- the access guard (protected environments) -------------------------------------------------------------

ACCESS_CHANGES = [
    change("TaskRoleDefaultPolicy", "AWS::IAM::Policy", "Modify", "False"),
    change("ServiceSecurityGroup", "AWS::EC2::SecurityGroup", "Add"),
    change("Service", "AWS::ECS::Service", "Modify", "False"),
]


def test_a_change_of_access_unapproved_is_refused_in_a_protected_environment(
    script: Script, clock: FakeClock, lines: list[str]
) -> None:
    script.stack("UPDATE_COMPLETE")
    script.ready_change_set(changes=ACCESS_CHANGES)
    script.call("delete_change_set", ChangeSetName=CS_ID)  # and no ExecuteChangeSet: the Stubber would fail

    with pytest.raises(UsageError) as err:
        run(script, make(script, clock, lines), guard_access=True)
    message = err.value.message
    assert "TaskRoleDefaultPolicy (AWS::IAM::Policy, modify), ServiceSecurityGroup (AWS::EC2::SecurityGroup, add)" in (
        message
    )
    assert "Service (" not in message and "nothing was changed" in message
    assert err.value.next_step == f"once reviewed, approve it: inv deploy.stack {NAME} --env dev --approve-access"
    marked = [row for line in lines for row in line.splitlines() if "🔐 access" in row]
    assert len(marked) == 2 and "TaskRoleDefaultPolicy" in marked[0]  # the table said which rows, first


def test_a_rollbacks_refusal_names_the_rollback_to_run_again_not_deploy_stack(
    script: Script, clock: FakeClock, lines: list[str]
) -> None:
    """deploy.stack would deploy HEAD's template: a rollback's refusals name the rollback itself."""
    again = "inv rollback --env dev --component stack:fargate --to aaaaaaa11111"
    script.stack("UPDATE_COMPLETE")
    script.ready_change_set(changes=ACCESS_CHANGES)
    script.call("delete_change_set", ChangeSetName=CS_ID)
    with pytest.raises(UsageError) as err:
        run(script, make(script, clock, lines), guard_access=True, rerun=again)
    assert err.value.next_step == f"once reviewed, approve it: {again} --approve-access"
    script.stack("UPDATE_COMPLETE")
    script.ready_change_set(changes=[change("CarsTable", "AWS::DynamoDB::Table", "Modify", "True")])
    script.call("delete_change_set", ChangeSetName=CS_ID)
    with pytest.raises(UsageError) as err:
        run(script, make(script, clock, lines), rerun=again)
    assert err.value.next_step == f"if that is intended, rerun with --allow-replace: {again} --allow-replace"


def test_approved_or_unprotected_a_change_of_access_is_deployed(
    script: Script, clock: FakeClock, lines: list[str]
) -> None:
    script.stack("UPDATE_COMPLETE")
    script.ready_change_set(changes=ACCESS_CHANGES)
    script.executed_update()
    assert run(script, make(script, clock, lines)).action == "updated"


# -- recovery ---------------------------------------------------------------------------------------------


def test_a_failed_first_create_protected_from_deletion_is_refused_naming_the_protection(
    script: Script, clock: FakeClock, lines: list[str]
) -> None:
    """A ROLLBACK_COMPLETE stack whose termination protection is on: its delete (to create it again) failed as "AWS
    DeleteStack failed (ValidationError)", next "rerun; if it persists, inv health". Refused before, naming it."""
    script.stack("ROLLBACK_COMPLETE", EnableTerminationProtection=True)
    with pytest.raises(UsageError) as refused:
        run(script, make(script, clock, lines))
    assert refused.value.message == (
        f"{NAME} is ROLLBACK_COMPLETE (its first create failed, nothing of it is in use), and protected from "
        "deletion: it cannot be deleted to be created again; nothing was changed"
    )
    assert "update-termination-protection --no-enable-termination-protection" in (refused.value.next_step or "")


def test_rollback_complete_is_deleted_then_created_again(script: Script, clock: FakeClock, lines: list[str]) -> None:
    script.emit("CREATE_FAILED", "Service", "AWS::ECS::Service", "an earlier failure")
    script.emit("ROLLBACK_COMPLETE")
    script.stack("ROLLBACK_COMPLETE")
    # delete the failed stack and wait until it is gone
    script.stack("ROLLBACK_COMPLETE", ref=STACK_ID)
    script.events()
    script.call("delete_stack", StackName=STACK_ID)
    script.stack("DELETE_COMPLETE", ref=STACK_ID)
    script.emit("DELETE_IN_PROGRESS", reason="User Initiated")
    script.emit("DELETE_COMPLETE")
    script.events()
    # create it again: a new stack id
    script.create_change_set("CREATE", stack_id=NEW_STACK_ID)
    script.change_set("CREATE_COMPLETE", [change("Service", "AWS::ECS::Service", "Add")])
    script.emit("REVIEW_IN_PROGRESS", stack_id=NEW_STACK_ID)
    script.stack("REVIEW_IN_PROGRESS", ref=NEW_STACK_ID, stack_id=NEW_STACK_ID)
    script.events(ref=NEW_STACK_ID)
    script.call("execute_change_set", ChangeSetName=CS_ID)
    script.stack(
        "CREATE_COMPLETE",
        ref=NEW_STACK_ID,
        stack_id=NEW_STACK_ID,
        Outputs=[{"OutputKey": "AlbUrl", "OutputValue": "http://new"}],
    )
    script.emit("CREATE_IN_PROGRESS", stack_id=NEW_STACK_ID)
    script.emit("CREATE_COMPLETE", "Service", "AWS::ECS::Service", stack_id=NEW_STACK_ID)
    script.emit("CREATE_COMPLETE", stack_id=NEW_STACK_ID)
    script.events(ref=NEW_STACK_ID)

    result = run(script, make(script, clock, lines))

    assert result.action == "recreated" and result.outputs == {"AlbUrl": "http://new"}
    assert any("ROLLBACK_COMPLETE" in line and "deleting it" in line for line in lines)
    shown = event_lines(lines)
    assert any("DELETE_COMPLETE" in line for line in shown) and shown[-1].endswith("CREATE_COMPLETE")
    assert not any("an earlier failure" in line for line in lines)


def test_update_rollback_failed_gets_continue_update_rollback_first(
    script: Script, clock: FakeClock, lines: list[str]
) -> None:
    script.stack("UPDATE_ROLLBACK_FAILED")
    script.stack("UPDATE_ROLLBACK_FAILED", ref=STACK_ID)
    script.events()
    script.call("continue_update_rollback", StackName=STACK_ID)
    script.stack("UPDATE_ROLLBACK_IN_PROGRESS", ref=STACK_ID)
    script.emit("UPDATE_ROLLBACK_IN_PROGRESS")
    script.events()
    script.stack("UPDATE_ROLLBACK_COMPLETE", ref=STACK_ID)
    script.emit("UPDATE_ROLLBACK_COMPLETE")
    script.events()
    script.ready_change_set("UPDATE")
    script.executed_update()

    result = run(script, make(script, clock, lines))

    assert result.action == "updated"
    assert any("ContinueUpdateRollback" in line for line in lines)
    assert any("UPDATE_ROLLBACK_COMPLETE" in line for line in lines)


def test_a_rollback_that_fails_again_names_the_resources_to_skip(
    script: Script, clock: FakeClock, lines: list[str]
) -> None:
    script.stack("UPDATE_ROLLBACK_FAILED")
    script.stack("UPDATE_ROLLBACK_FAILED", ref=STACK_ID)
    script.events()
    script.call("continue_update_rollback", StackName=STACK_ID)
    script.stack("UPDATE_ROLLBACK_FAILED", ref=STACK_ID, LastUpdatedTime=T0 + timedelta(minutes=5))
    script.emit("UPDATE_ROLLBACK_IN_PROGRESS")
    script.emit("UPDATE_FAILED", "Service", "AWS::ECS::Service", "Service was deleted outside CloudFormation")
    script.emit("UPDATE_ROLLBACK_FAILED")
    script.events()

    with pytest.raises(StepFailed) as err:
        run(script, make(script, clock, lines))
    assert "Service (AWS::ECS::Service) UPDATE_FAILED: Service was deleted outside CloudFormation" in err.value.message
    assert err.value.next_step and "--resources-to-skip Service" in err.value.next_step


def test_a_busy_stack_is_waited_for_not_fought(script: Script, clock: FakeClock, lines: list[str]) -> None:
    script.stack("UPDATE_IN_PROGRESS")
    script.stack("UPDATE_COMPLETE_CLEANUP_IN_PROGRESS")
    script.stack("UPDATE_COMPLETE")
    script.ready_change_set("UPDATE")  # only now: the Stubber fails any change set made while it was busy
    script.executed_update()

    result = run(script, make(script, clock, lines))

    assert result.action == "updated"
    assert any("is busy (UPDATE_IN_PROGRESS)" in line for line in lines)
    assert any("is busy (UPDATE_COMPLETE_CLEANUP_IN_PROGRESS)" in line for line in lines)
    assert clock.sleeps[:2] == [1.0, 1.0]


BUSY = f"Stack:{STACK_ID} is in UPDATE_IN_PROGRESS state and can not be updated."


def test_a_stack_that_became_busy_after_the_wait_is_said_busy_not_a_template_to_fix(
    script: Script, clock: FakeClock, lines: list[str]
) -> None:
    """Another deploy (or a person in the console) started an update after this deploy found the stack idle:
    CloudFormation refused the change set (or its execution), and the next step said to fix the template (or to
    rerun, a failure, exit 1). It is said busy, nothing changed (exit 2), with the rerun that waits for it."""
    script.stack("UPDATE_COMPLETE")
    script.stub.add_client_error("create_change_set", "ValidationError", BUSY, 400)
    with pytest.raises(UsageError) as refused:
        run(script, make(script, clock, lines))
    assert refused.value.message == (
        f"{NAME} became busy (UPDATE_IN_PROGRESS) while this deploy went to change it: another operation started on "
        "it after the deploy waited for it to be idle (another deploy, or a person in the console); nothing was "
        "changed"
    )
    assert (refused.value.next_step or "").endswith(
        f"then rerun (it waits for a busy stack): inv deploy.stack {NAME} --env dev"
    )

    script.stack("UPDATE_COMPLETE")
    script.ready_change_set("UPDATE")
    script.stack("UPDATE_COMPLETE", ref=STACK_ID)
    script.events()
    script.stub.add_client_error("execute_change_set", "ValidationError", BUSY, 400)
    script.call("delete_change_set", ChangeSetName=CS_ID)  # not executed: not left behind
    with pytest.raises(UsageError, match=f"^{NAME} became busy \\(UPDATE_IN_PROGRESS\\) while this deploy"):
        run(script, make(script, clock, lines))


def test_a_delete_failed_stack_is_not_updated(script: Script, clock: FakeClock, lines: list[str]) -> None:
    script.stack("DELETE_FAILED")
    script.emit("UPDATE_COMPLETE")
    script.emit("DELETE_IN_PROGRESS")
    script.emit("DELETE_FAILED", "Documents", "AWS::S3::Bucket", "The bucket you tried to delete is not empty")
    script.emit("DELETE_FAILED")
    script.events()
    with pytest.raises(StepFailed) as err:
        run(script, make(script, clock, lines))
    assert "Documents (AWS::S3::Bucket) DELETE_FAILED: The bucket you tried to delete is not empty" in err.value.message
    assert err.value.next_step and "inv destroy --env dev" in err.value.next_step


# -- retries ------------------------------------------------------------------------------------------------


def test_throttling_and_transient_errors_are_retried_with_backoff(
    script: Script, clock: FakeClock, lines: list[str]
) -> None:
    script.error("describe_stacks", "Throttling")
    script.error("describe_stacks", "RequestLimitExceeded")
    script.stack("UPDATE_COMPLETE")
    script.error("create_change_set", "ThrottlingException")
    script.create_change_set("UPDATE")
    script.error("describe_change_set", "InternalFailure", 500)
    script.change_set("CREATE_COMPLETE", [change("Service", "AWS::ECS::Service", "Modify", "False")])
    script.executed_update()

    result = run(script, make(script, clock, lines))

    assert result.action == "updated"
    assert clock.sleeps[:4] == [1.0, 2.0, 1.0, 1.0]  # doubling per call, starting over for the next one
    retried = [line for line in lines if "retrying in" in line]
    assert len(retried) == 4 and "Throttling" in retried[0] and "InternalFailure" in retried[3]


def test_a_5xx_on_execute_is_not_repeated(script: Script, clock: FakeClock, lines: list[str]) -> None:
    script.stack("UPDATE_COMPLETE")
    script.ready_change_set("UPDATE")
    script.stack("UPDATE_COMPLETE", ref=STACK_ID)
    script.events()
    script.error("execute_change_set", "InternalFailure", 500)  # did it start? unknown: not executed twice
    with pytest.raises(ClientError):
        run(script, make(script, clock, lines))


def test_endless_throttling_gives_up_after_the_retries(script: Script, clock: FakeClock, lines: list[str]) -> None:
    for _ in range(4):
        script.error("describe_stacks", "Throttling")
    with pytest.raises(ClientError) as err:
        run(script, make(script, clock, lines, max_retries=3))
    assert err.value.response["Error"]["Code"] == "Throttling"
    assert clock.sleeps == [1.0, 2.0, 4.0]


# -- failures -----------------------------------------------------------------------------------------------


def test_a_failed_update_no_resource_failed_names_the_stacks_own_reason(
    script: Script, clock: FakeClock, lines: list[str]
) -> None:
    """A failure of the stack itself (an export another stack imports, which the update would delete): no resource
    event fails, the stack's own rollback event says why, and the failure says it."""
    reason = "Export CarRentalDataStack:ExportsOutputX cannot be deleted as it is in use by CarRentalFargateStack"
    script.stack("UPDATE_COMPLETE")
    script.ready_change_set("UPDATE")
    script.stack("UPDATE_COMPLETE", ref=STACK_ID)
    script.events()
    script.call("execute_change_set", ChangeSetName=CS_ID)
    script.stack("UPDATE_ROLLBACK_COMPLETE", ref=STACK_ID)
    script.emit("UPDATE_IN_PROGRESS", reason="User Initiated")
    script.emit("UPDATE_COMPLETE_CLEANUP_IN_PROGRESS")
    script.emit("UPDATE_ROLLBACK_IN_PROGRESS", reason=reason)
    script.emit("UPDATE_ROLLBACK_COMPLETE")
    script.events()

    with pytest.raises(StepFailed) as err:
        run(script, make(script, clock, lines))
    assert f"no resource failed; the stack's own event says: {reason}" in err.value.message


def test_a_failed_update_names_the_failing_resources_with_their_reasons(
    script: Script, clock: FakeClock, lines: list[str]
) -> None:
    script.stack("UPDATE_COMPLETE")
    script.ready_change_set("UPDATE")
    script.stack("UPDATE_COMPLETE", ref=STACK_ID)
    script.events()
    script.call("execute_change_set", ChangeSetName=CS_ID)
    script.stack("UPDATE_ROLLBACK_COMPLETE", ref=STACK_ID, StackStatusReason="The following resource(s) failed")
    script.emit("UPDATE_IN_PROGRESS", reason="User Initiated")
    script.emit("UPDATE_FAILED", "Queue", "AWS::SQS::Queue", "Resource update cancelled")
    script.emit(
        "UPDATE_FAILED",
        "Service",
        "AWS::ECS::Service",
        "Error occurred during operation 'ECS Deployment Circuit Breaker'",
    )
    script.emit("UPDATE_ROLLBACK_IN_PROGRESS", reason="The following resource(s) failed to update: [Service].")
    script.emit("UPDATE_ROLLBACK_COMPLETE")
    script.events()

    with pytest.raises(StepFailed) as err:
        run(script, make(script, clock, lines))
    message = err.value.message
    assert "it is UPDATE_ROLLBACK_COMPLETE" in message and "previous version is in place" in message
    cause = message.index("Service (AWS::ECS::Service) UPDATE_FAILED: Error occurred during operation")
    assert cause < message.index("Queue (AWS::SQS::Queue) UPDATE_FAILED: Resource update cancelled")
    assert err.value.next_step == (
        f"fix the cause above, then rerun the same command (this stack alone: inv deploy.stack {NAME} --env dev); "
        "check what is serving meanwhile: inv health --env dev"
    )


SERVICE_ARN = f"arn:aws:ecs:eu-west-1:{ACCOUNT}:service/car-rental-cluster/car-rental-service"


def failed_service_update(script: Script) -> None:
    """An update whose ECS service trips the circuit breaker; a queue's update is cancelled with it."""
    script.stack("UPDATE_COMPLETE")
    script.ready_change_set("UPDATE")
    script.emit("UPDATE_COMPLETE")  # the last update: what the follow starts after
    script.stack("UPDATE_COMPLETE", ref=STACK_ID)
    script.events()
    script.call("execute_change_set", ChangeSetName=CS_ID)
    script.stack("UPDATE_ROLLBACK_IN_PROGRESS", ref=STACK_ID)
    script.emit("UPDATE_IN_PROGRESS", reason="User Initiated")
    script.emit("UPDATE_FAILED", "Queue", "AWS::SQS::Queue", "Resource update cancelled", physical="queue-url")
    circuit_breaker = "Error occurred during operation 'ECS Deployment Circuit Breaker was triggered'."
    script.emit("UPDATE_FAILED", "Service", "AWS::ECS::Service", circuit_breaker, physical=SERVICE_ARN)
    script.emit("UPDATE_ROLLBACK_IN_PROGRESS", reason="The following resource(s) failed to update: [Service].")
    script.events()
    script.stack("UPDATE_ROLLBACK_COMPLETE", ref=STACK_ID)
    script.emit("UPDATE_IN_PROGRESS", "Service", "AWS::ECS::Service", physical=SERVICE_ARN)
    script.emit("UPDATE_ROLLBACK_COMPLETE")
    script.events()


def test_a_failed_resource_is_looked_behind_once_as_it_fails_and_what_is_found_ends_the_message(
    script: Script, clock: FakeClock, lines: list[str]
) -> None:
    failed_service_update(script)
    asked: list[tuple[str, Any, str]] = []

    def explain(physical: str, since: Any) -> list[str]:
        asked.append((physical, since, lines[-1]))
        return ["  3 tasks of car-rental-service failed, the last: exit code 1; its last log line: boom"]

    with pytest.raises(StepFailed) as err:
        run(script, make(script, clock, lines, explainers={"AWS::ECS::Service": explain}))
    # once, with the service's ARN, the time the operation started after, while the rollback had only begun
    assert [(physical, since) for physical, since, _ in asked] == [(SERVICE_ARN, T0 + timedelta(seconds=1))]
    assert "UPDATE_ROLLBACK_COMPLETE" not in asked[0][2]
    message = err.value.message
    assert message.endswith("\n  3 tasks of car-rental-service failed, the last: exit code 1; its last log line: boom")
    assert message.index("Queue (AWS::SQS::Queue)") < message.index("3 tasks of car-rental-service failed")


def test_a_look_behind_that_fails_is_said_and_the_failure_stays(
    script: Script, clock: FakeClock, lines: list[str]
) -> None:
    failed_service_update(script)

    def explain(physical: str, since: Any) -> list[str]:
        raise ClientError({"Error": {"Code": "AccessDeniedException", "Message": "no"}}, "ListTasks")

    with pytest.raises(StepFailed) as err:
        run(script, make(script, clock, lines, explainers={"AWS::ECS::Service": explain}))
    assert "Service (AWS::ECS::Service) UPDATE_FAILED: Error occurred" in err.value.message
    assert err.value.message.endswith("\n  (could not look behind Service: AccessDeniedException)")


def test_a_failed_first_create_says_the_next_deploy_recreates_it(
    script: Script, clock: FakeClock, lines: list[str]
) -> None:
    script.no_stack()
    script.create_change_set("CREATE")
    script.change_set("CREATE_COMPLETE", [change("Table", "AWS::DynamoDB::Table", "Add")])
    script.stack("REVIEW_IN_PROGRESS", ref=STACK_ID)
    script.emit("REVIEW_IN_PROGRESS")
    script.events()
    script.call("execute_change_set", ChangeSetName=CS_ID)
    script.stack("ROLLBACK_COMPLETE", ref=STACK_ID)
    script.emit("CREATE_IN_PROGRESS")
    script.emit("CREATE_FAILED", "Table", "AWS::DynamoDB::Table", "Subscriber limit exceeded")
    script.emit("ROLLBACK_COMPLETE")
    script.events()

    with pytest.raises(StepFailed) as err:
        run(script, make(script, clock, lines))
    assert "Table (AWS::DynamoDB::Table) CREATE_FAILED: Subscriber limit exceeded" in err.value.message
    assert "deletes the stack and creates it again" in err.value.message


def test_the_deadline_stops_waiting_and_names_the_last_status(
    script: Script, clock: FakeClock, lines: list[str]
) -> None:
    script.stack("UPDATE_COMPLETE")
    script.ready_change_set("UPDATE")
    script.stack("UPDATE_COMPLETE", ref=STACK_ID)
    script.events()
    script.call("execute_change_set", ChangeSetName=CS_ID)
    script.emit("UPDATE_IN_PROGRESS", reason="User Initiated")
    for _ in range(4):  # polls at 0, 1, 2 and 3 s; at 3 s another poll would end after the 3 s deadline
        script.stack("UPDATE_IN_PROGRESS", ref=STACK_ID)
        script.events()

    with pytest.raises(StepFailed) as err:
        run(script, make(script, clock, lines, timeout=3.0))
    assert "deadline of 3s passed while deploying stack" in err.value.message
    assert "still UPDATE_IN_PROGRESS" in err.value.message
    assert err.value.next_step and "describe-stack-events" in err.value.next_step
    assert clock.sleeps == [1.0, 1.0, 1.0]


def test_a_busy_stack_that_stays_busy_hits_the_deadline(script: Script, clock: FakeClock, lines: list[str]) -> None:
    for _ in range(3):
        script.stack("UPDATE_ROLLBACK_IN_PROGRESS")
    with pytest.raises(StepFailed, match="waiting for CarRentalFargateStack to finish UPDATE_ROLLBACK_IN_PROGRESS"):
        run(script, make(script, clock, lines, timeout=2.0))


# -- destroy --------------------------------------------------------------------------------------------------


def test_destroy_follows_the_delete(script: Script, clock: FakeClock, lines: list[str]) -> None:
    script.stack("UPDATE_COMPLETE")
    script.stack("UPDATE_COMPLETE", ref=STACK_ID)
    script.events()
    script.call("delete_stack", StackName=STACK_ID)
    script.stack("DELETE_IN_PROGRESS", ref=STACK_ID)
    script.emit("DELETE_IN_PROGRESS", reason="User Initiated")
    script.events()
    script.stack("DELETE_COMPLETE", ref=STACK_ID)
    script.emit("DELETE_COMPLETE", "Service", "AWS::ECS::Service")
    script.emit("DELETE_COMPLETE")
    script.events()
    deployer = make(script, clock, lines)
    with script.stub:
        result = deployer.destroy(NAME)
        script.stub.assert_no_pending_responses()
    assert result.action == "deleted"
    assert [line.split("] ", 1)[1] for line in event_lines(lines)] == [
        f"{NAME} {STACK_TYPE} DELETE_IN_PROGRESS: User Initiated",
        "Service AWS::ECS::Service DELETE_COMPLETE",
        f"{NAME} {STACK_TYPE} DELETE_COMPLETE",
    ]


ROLE = "arn:aws:iam::123456789012:role/cfn-exec"


def test_the_environment_s_service_role_is_given_to_the_change_set_and_the_delete(
    script: Script, clock: FakeClock, lines: list[str]
) -> None:
    """RoleARN in every call that changes the stack when the environment names a role (the Stubber checks each
    request's parameters)."""
    script.stack("UPDATE_COMPLETE")
    script.create_change_set("UPDATE", RoleARN=ROLE)
    script.change_set("CREATE_COMPLETE", [change("Service", "AWS::ECS::Service", "Modify", "False")])
    script.executed_update()
    deployer = make(script, clock, lines, role_arn=ROLE)
    assert run(script, deployer).action == "updated"

    script.stack("UPDATE_COMPLETE")
    script.stack("UPDATE_COMPLETE", ref=STACK_ID)
    script.events()
    script.call("delete_stack", StackName=STACK_ID, RoleARN=ROLE)
    script.stack("DELETE_COMPLETE", ref=STACK_ID)
    script.emit("DELETE_COMPLETE")
    script.events()
    with script.stub:
        assert deployer.destroy(NAME).action == "deleted"
        script.stub.assert_no_pending_responses()


@pytest.mark.parametrize("configured", [ROLE, None])
def test_a_role_cloudformation_cannot_act_with_is_refused_naming_the_way_out(
    script: Script, clock: FakeClock, lines: list[str], configured: str | None
) -> None:
    """deploy.toml's role, or the one the stack kept from an earlier operation (none named): CloudFormation refuses
    the change set before it starts (exit 2, nothing changed), and the next step says which to fix."""
    script.stack("UPDATE_COMPLETE")
    script.stub.add_client_error(
        "create_change_set", "ValidationError", f"Role {ROLE} is invalid or cannot be assumed", 400
    )
    with pytest.raises(UsageError) as err:
        run(script, make(script, clock, lines, role_arn=configured))
    assert err.value.message.startswith(f"CloudFormation cannot act with role {ROLE} (")
    assert err.value.message.endswith("; nothing was changed") and err.value.exit_code == 2
    kept = "the role an earlier operation gave the stack" in err.value.message
    assert kept == (configured is None)
    fix = (
        "cloudformation_role_arn of [environments.dev]"
        if configured
        else "cloudformation_role_arn in [environments.dev]"
    )
    assert fix in (err.value.next_step or "")


def test_destroy_of_a_missing_stack_is_absent(script: Script, clock: FakeClock, lines: list[str]) -> None:
    script.no_stack()
    with script.stub:
        assert make(script, clock, lines).destroy(NAME).action == "absent"


def test_delete_failed_lists_the_resources_and_how_to_keep_them(
    script: Script, clock: FakeClock, lines: list[str]
) -> None:
    script.stack("UPDATE_COMPLETE")
    script.stack("UPDATE_COMPLETE", ref=STACK_ID)
    script.events()
    script.call("delete_stack", StackName=STACK_ID)
    script.stack("DELETE_FAILED", ref=STACK_ID)
    script.emit("DELETE_IN_PROGRESS", reason="User Initiated")
    script.emit("DELETE_FAILED", "Documents", "AWS::S3::Bucket", "The bucket you tried to delete is not empty")
    script.emit("DELETE_FAILED", reason="The following resource(s) failed to delete: [Documents].")
    script.events()
    with script.stub, pytest.raises(StepFailed) as err:
        make(script, clock, lines).destroy(NAME)
    script.stub.assert_no_pending_responses()
    assert "Documents (AWS::S3::Bucket) DELETE_FAILED: The bucket you tried to delete is not empty" in err.value.message
    assert err.value.next_step and "--retain-resources Documents" in err.value.next_step


def test_a_terminal_status_from_before_the_execute_does_not_end_the_wait(
    script: Script, clock: FakeClock, lines: list[str]
) -> None:
    script.stack("UPDATE_COMPLETE")
    script.ready_change_set("UPDATE")
    script.stack("UPDATE_COMPLETE", ref=STACK_ID)
    script.events()
    script.call("execute_change_set", ChangeSetName=CS_ID)
    script.stack("UPDATE_COMPLETE", ref=STACK_ID)  # not started yet, as far as this answer knows
    script.events()
    script.stack("UPDATE_IN_PROGRESS", ref=STACK_ID)
    script.emit("UPDATE_IN_PROGRESS", reason="User Initiated")
    script.events()
    script.stack("UPDATE_COMPLETE", ref=STACK_ID, Outputs=[{"OutputKey": "AlbUrl", "OutputValue": "http://after"}])
    script.emit("UPDATE_COMPLETE")
    script.events()

    result = run(script, make(script, clock, lines))
    assert result.outputs == {"AlbUrl": "http://after"}
    assert clock.sleeps == [1.0, 1.0]


def test_a_change_set_is_asked_about_every_second_even_when_the_stack_is_polled_slower(
    script: Script, clock: FakeClock, lines: list[str]
) -> None:
    script.stack("UPDATE_COMPLETE")
    script.create_change_set("UPDATE")
    script.change_set("CREATE_PENDING")
    script.change_set("CREATE_COMPLETE", [change("Service", "AWS::ECS::Service", "Modify", "False")])
    script.executed_update()

    run(script, make(script, clock, lines, poll=5.0))
    assert clock.sleeps == [1.0, 5.0]


# -- preview (inv diff): a change set made and deleted, never executed ----------------------------------------


@pytest.mark.parametrize("status", ["ROLLBACK_COMPLETE", "ROLLBACK_FAILED"])
def test_a_preview_of_a_failed_first_create_is_a_create_not_an_error(
    script: Script, clock: FakeClock, lines: list[str], status: str
) -> None:
    """CloudFormation refuses an UPDATE change set for a stack whose first create failed ("is in ROLLBACK_COMPLETE
    state and can not be updated"); a deploy deletes it and creates it again, so the preview is a create."""
    script.stack(status)
    with script.stub:
        found = make(script, clock, lines).preview(NAME, BODY, PARAMS)
        script.stub.assert_no_pending_responses()
    assert found is None  # would be created; no change set was asked for


@pytest.mark.parametrize("status", ["UPDATE_IN_PROGRESS", "UPDATE_ROLLBACK_FAILED", "DELETE_FAILED"])
def test_a_preview_of_a_stack_whose_status_takes_no_change_set_says_why_and_asks_for_none(
    script: Script, clock: FakeClock, lines: list[str], status: str
) -> None:
    """CloudFormation makes no UPDATE change set for a stack busy, whose rollback failed, or half deleted ("is in
    <status> state and can not be updated"): the preview says so (one such stack must not fail a whole inv diff)."""
    script.stack(status)
    with script.stub:
        found = make(script, clock, lines).preview(NAME, BODY, PARAMS)
        script.stub.assert_no_pending_responses()  # no change set was asked for
    assert isinstance(found, NoPreview) and found.status == status
    assert {"UPDATE_IN_PROGRESS": "busy", "UPDATE_ROLLBACK_FAILED": "continues it first"}.get(status, "refuses") in (
        found.reason
    )


def test_a_preview_refused_for_the_stack_s_role_says_so_for_that_stack_alone(
    script: Script, clock: FakeClock, lines: list[str]
) -> None:
    """The role a stack kept from an earlier operation, deleted since: its preview says why a deploy of it is refused,
    and an inv diff of several stacks previews the others."""
    script.stack("UPDATE_COMPLETE")
    script.stub.add_client_error(
        "create_change_set", "ValidationError", f"Role {ROLE} is invalid or cannot be assumed", 400
    )
    with script.stub:
        found = make(script, clock, lines).preview(NAME, BODY, PARAMS)
        script.stub.assert_no_pending_responses()
    assert isinstance(found, NoPreview) and found.status == "UPDATE_COMPLETE"
    assert found.reason.startswith(f"CloudFormation cannot act with role {ROLE} (the role an earlier operation gave")
    assert "a deploy of it is refused (give it a role that works: cloudformation_role_arn in" in found.reason


def test_a_stack_that_became_busy_after_it_was_read_previews_as_busy_not_as_an_error(
    script: Script, clock: FakeClock, lines: list[str]
) -> None:
    script.stack("UPDATE_COMPLETE")
    script.stub.add_client_error(
        "create_change_set",
        "ValidationError",
        f"Stack:{STACK_ID} is in UPDATE_IN_PROGRESS state and can not be updated.",
        400,
    )
    with script.stub:
        found = make(script, clock, lines).preview(NAME, BODY, PARAMS)
    assert isinstance(found, NoPreview) and found.status == "UPDATE_IN_PROGRESS" and "busy" in found.reason


def test_a_drift_aware_preview_cloudformation_refuses_says_so_for_that_stack_alone(
    script: Script, clock: FakeClock, lines: list[str]
) -> None:
    """inv diff --drift: a refusal of the drift-aware mode (CreateChangeSet's answer, or the change set's reason) is
    that stack's "no preview", and the others are previewed."""
    said = "CloudFormation makes no drift-aware change set for it (inv diff without --drift previews it)"
    script.stack("UPDATE_COMPLETE")
    script.stub.add_client_error(
        "create_change_set", "ValidationError", "DeploymentMode REVERT_DRIFT is not supported for this stack", 400
    )
    with script.stub:
        found = make(script, clock, lines).preview(NAME, BODY, PARAMS, revert_drift=True)
        script.stub.assert_no_pending_responses()
    assert isinstance(found, NoPreview) and found.status == "UPDATE_COMPLETE"
    assert found.reason == f"{said}: DeploymentMode REVERT_DRIFT is not supported for this stack"

    script.stack("UPDATE_COMPLETE")
    script.create_change_set("UPDATE", DeploymentMode="REVERT_DRIFT")
    script.change_set("FAILED", reason="Drift detection failed for resource Service")
    script.call("delete_change_set", ChangeSetName=CS_ID)
    with script.stub:
        found = make(script, clock, lines).preview(NAME, BODY, PARAMS, revert_drift=True)
        script.stub.assert_no_pending_responses()
    assert isinstance(found, NoPreview) and found.reason == f"{said}: Drift detection failed for resource Service"


def test_a_preview_refused_for_another_reason_is_still_an_error(
    script: Script, clock: FakeClock, lines: list[str]
) -> None:
    script.stack("UPDATE_COMPLETE")
    script.stub.add_client_error("create_change_set", "ValidationError", "Template format error: bad", 400)
    with script.stub, pytest.raises(ClientError, match="Template format error"):
        make(script, clock, lines).preview(NAME, BODY, PARAMS)


def test_an_interrupt_before_the_execute_leaves_no_change_set_behind(
    script: Script, clock: FakeClock, lines: list[str]
) -> None:
    """Ctrl-C while the change set is made or reviewed: the change set is deleted, none is left on the stack for a
    person to execute by mistake later, and nothing is executed."""
    script.stack("UPDATE_COMPLETE")
    script.ready_change_set()
    script.call("delete_change_set", ChangeSetName=CS_ID)

    def review(changes: Any) -> dict[str, list[str]]:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run(script, make(script, clock, lines), review=review)


def test_a_change_set_that_cannot_be_read_is_deleted(script: Script, clock: FakeClock, lines: list[str]) -> None:
    script.stack("UPDATE_COMPLETE")
    script.create_change_set()
    script.error("describe_change_set", "AccessDenied")
    script.call("delete_change_set", ChangeSetName=CS_ID)
    with pytest.raises(ClientError):
        run(script, make(script, clock, lines))
