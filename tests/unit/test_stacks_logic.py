"""The pure logic of stack deploys: change parsing, the data guard, empty change sets, events, failures."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from botocore.exceptions import ClientError, ConnectionClosedError, EndpointConnectionError

from deploykit import stacks
from deploykit.stacks import Change

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def resource_change(logical: str, rtype: str, action: str, replacement: str | None = None, **extra: Any) -> dict:
    rc: dict[str, Any] = {"LogicalResourceId": logical, "ResourceType": rtype, "Action": action, **extra}
    if replacement is not None:
        rc["Replacement"] = replacement
    return {"Type": "Resource", "ResourceChange": rc}


def event(
    eid: str, logical: str, status: str, seconds: float, rtype: str = "AWS::S3::Bucket", reason: str = ""
) -> dict:
    e: dict[str, Any] = {
        "EventId": eid,
        "LogicalResourceId": logical,
        "ResourceType": rtype,
        "ResourceStatus": status,
        "Timestamp": T0 + timedelta(seconds=seconds),
    }
    if reason:
        e["ResourceStatusReason"] = reason
    return e


def client_error(code: str, message: str = "", status: int = 400) -> ClientError:
    return ClientError(
        {"Error": {"Code": code, "Message": message}, "ResponseMetadata": {"HTTPStatusCode": status}}, "DescribeStacks"
    )


# -- changes ---------------------------------------------------------------------------------------------


def test_changes_are_parsed_with_their_details() -> None:
    raw = [
        resource_change(
            "CarsTable",
            "AWS::DynamoDB::Table",
            "Modify",
            "True",
            PhysicalResourceId="cars-1",
            Scope=["Properties"],
        ),
        resource_change("Topic", "AWS::SNS::Topic", "Add"),
        {"Type": "HookInvocation", "HookInvocationCount": 1},  # not a resource: ignored
    ]
    assert stacks.parse_changes(raw) == [
        Change("CarsTable", "AWS::DynamoDB::Table", "Modify", "True", "cars-1", ("Properties",)),
        Change("Topic", "AWS::SNS::Topic", "Add", "", "", ()),
    ]


@pytest.mark.parametrize(
    ("rtype", "action", "replacement", "refused"),
    [
        ("AWS::DynamoDB::Table", "Modify", "True", True),
        ("AWS::DynamoDB::Table", "Modify", "Conditional", True),
        ("AWS::DynamoDB::Table", "Modify", "False", False),
        ("AWS::DynamoDB::Table", "Remove", None, True),
        ("AWS::DynamoDB::Table", "Add", None, False),
        ("AWS::S3::Bucket", "Modify", "True", True),
        ("AWS::S3::Bucket", "Remove", None, True),
        ("AWS::Cognito::UserPool", "Modify", "Conditional", True),
        ("AWS::RDS::DBInstance", "Modify", "True", True),
        ("AWS::EFS::FileSystem", "Remove", None, True),
        ("AWS::ECS::TaskDefinition", "Modify", "True", False),  # replaced every deploy: holds no data
        ("AWS::Lambda::Version", "Remove", None, False),
        ("AWS::Cognito::UserPoolClient", "Modify", "True", False),
        # what a stack of the team's own holds: messages in flight, a key, secrets, images, a search index
        ("AWS::SQS::Queue", "Modify", "True", True),
        ("AWS::SQS::Queue", "Modify", "False", False),
        ("AWS::KMS::Key", "Remove", None, True),
        ("AWS::SecretsManager::Secret", "Modify", "Conditional", True),
        ("AWS::ECR::Repository", "Modify", "True", True),
        ("AWS::OpenSearchService::Domain", "Remove", None, True),
        ("AWS::SNS::Topic", "Modify", "True", False),
        ("AWS::SQS::QueuePolicy", "Remove", None, False),
        # a nested stack removed takes what it holds; its update is judged by its own rows, whatever it is called
        ("AWS::CloudFormation::Stack", "Remove", None, True),
        ("AWS::CloudFormation::Stack", "Modify", "True", True),
        ("AWS::CloudFormation::Stack", "Modify", "Conditional", False),
        ("AWS::CloudFormation::Stack", "Modify", "False", False),
    ],
)
def test_data_guard(rtype: str, action: str, replacement: str | None, refused: bool) -> None:
    changes = stacks.parse_changes([resource_change("R", rtype, action, replacement)])
    assert bool(stacks.dangerous_changes(changes)) is refused
    assert ("⚠ holds data" in stacks.changes_table(changes)) is refused  # the table marks what the guard refuses


def test_data_guard_names_only_the_dangerous_ones() -> None:
    changes = stacks.parse_changes(
        [
            resource_change("TaskDef", "AWS::ECS::TaskDefinition", "Modify", "True"),
            resource_change("Cars", "AWS::DynamoDB::Table", "Modify", "True"),
            resource_change("Docs", "AWS::S3::Bucket", "Modify", "False"),
            resource_change("Pool", "AWS::Cognito::UserPool", "Remove"),
        ]
    )
    assert [c.logical_id for c in stacks.dangerous_changes(changes)] == ["Cars", "Pool"]
    assert stacks.dangerous_changes(changes, data_types={"AWS::S3::Bucket"}) == []


@pytest.mark.parametrize(
    ("rtype", "access"),
    [
        ("AWS::IAM::Role", True),
        ("AWS::IAM::UserPolicy", True),
        ("AWS::IAM::GroupPolicy", True),
        ("AWS::IAM::AccessKey", True),
        ("AWS::Lambda::Url", True),  # AuthType NONE opens a function to anyone
        ("AWS::ApiGateway::Method", True),  # AuthorizationType NONE takes a route's login away
        ("AWS::SNS::Topic", False),
        ("AWS::Lambda::Function", False),
    ],
)
def test_what_changes_who_may_access_what(rtype: str, access: bool) -> None:
    """What a protected environment deploys only approved (--approve-access), and every change set marks 🔐."""
    assert Change("R", rtype, "Modify", "False").changes_access is access


def test_changes_table_lists_resource_type_action_replacement() -> None:
    changes = [
        Change("Cars", "AWS::DynamoDB::Table", "Modify", "True"),
        Change("Service", "AWS::ECS::Service", "Modify", "False"),
        Change("Topic", "AWS::SNS::Topic", "Add"),
    ]
    table = stacks.changes_table(changes)
    lines = table.splitlines()
    assert lines[0].split() == ["resource", "type", "action", "replacement"]
    assert "Cars" in lines[2] and "True" in lines[2] and "holds data" in lines[2]
    assert "Service" in lines[3] and "False" in lines[3] and "holds data" not in lines[3]
    assert lines[4].split() == ["Topic", "AWS::SNS::Topic", "Add", "-"]
    assert "no resource changes" in stacks.changes_table([])


def detail(name: str, source: str = "DirectModification", causing: str = "", **target: Any) -> dict[str, Any]:
    raw: dict[str, Any] = {
        "Target": {"Attribute": "Properties", "Name": name, "RequiresRecreation": "Never", **target},
        "Evaluation": "Static",
        "ChangeSource": source,
    }
    if causing:
        raw["CausingEntity"] = causing
    return raw


def function_change(*details: dict[str, Any]) -> dict[str, Any]:
    return resource_change("Fn", "AWS::Lambda::Function", "Modify", "False", Details=list(details))


def test_changed_properties_are_parsed_with_their_values() -> None:
    raw = function_change(
        detail(
            "MemorySize",
            Path="/Properties/MemorySize",
            BeforeValue="256",
            AfterValue="512",
            AttributeChangeType="Modify",
        ),
        detail(
            "Environment",
            Path="/Properties/Environment/Variables/TABLE",
            AfterValue="cars",
            AttributeChangeType="Add",
        ),
        detail("Code", "ParameterReference", "FnCodeKey"),
    )
    (change,) = stacks.parse_changes([raw])
    memory, environment, code = change.details
    assert (memory.where, memory.before, memory.after, memory.change_type) == ("MemorySize", "256", "512", "Modify")
    assert (environment.where, environment.before, environment.after) == ("Environment.Variables.TABLE", None, "cars")
    assert (code.where, code.before, code.after, code.source, code.causing) == (
        "Code",
        None,
        None,
        "ParameterReference",
        "FnCodeKey",
    )
    assert memory.to_json() == {
        "property": "MemorySize",
        "before": "256",
        "after": "512",
        "change": "Modify",
        "recreation": "Never",
        "source": "DirectModification",
        "causing": None,
        "drift": None,  # not a drift-aware change set's
    }


def test_a_property_listed_once_per_cause_is_shown_once_with_its_values() -> None:
    raw = function_change(
        detail("Code", "DirectModification"),
        detail("Code", "ParameterReference", "FnCodeKey"),
        detail("Timeout", Path="/Properties/Timeout", BeforeValue="3", AfterValue="9"),
        detail("Timeout", "ParameterReference", "T", Path="/Properties/Timeout", BeforeValue="3", AfterValue="9"),
    )
    (change,) = stacks.parse_changes([raw])
    assert [(d.where, d.source) for d in change.details] == [
        ("Code", "DirectModification"),
        ("Timeout", "DirectModification"),
    ]


@pytest.mark.parametrize(
    ("path", "name", "shown"),
    [
        ("/Properties/Tags/0/Value", "Tags", "Tags[0].Value"),
        ("/Properties/Environment/Variables/TABLE", "Environment", "Environment.Variables.TABLE"),
        ("", "MemorySize", "MemorySize"),  # no values asked: the property's name
        ("/Properties", "", "Properties"),
    ],
)
def test_a_property_path_is_shown_as_a_reader_names_it(path: str, name: str, shown: str) -> None:
    assert stacks.PropertyChange(name=name, path=path).where == shown


@pytest.mark.parametrize(
    ("change", "line"),
    [
        (stacks.PropertyChange("MemorySize", before="256", after="512", change_type="Modify"), "MemorySize: 256 → 512"),
        (
            stacks.PropertyChange("Timeout", before="3", after=None, change_type="Modify"),
            "Timeout: 3 → (known after the deploy)",
        ),
        (stacks.PropertyChange("Description", after="cars", change_type="Add"), "Description: added cars"),
        (stacks.PropertyChange("Description", before="old", change_type="Remove"), "Description: removed (was old)"),
        (stacks.PropertyChange("Code", source="ParameterReference", causing="FnCodeKey"), "Code (parameter FnCodeKey)"),
        (
            stacks.PropertyChange("Role", source="ResourceReference", causing="FnRole", recreation="Conditionally"),
            "Role (FnRole is replaced)  ⟳ may replace it",
        ),
        (
            stacks.PropertyChange("TableName", before="cars", after="cars-2", recreation="Always"),
            "TableName: cars → cars-2  ⟳ replaces it",
        ),
        (
            stacks.PropertyChange("Policy", before='{"a":\n  ' + "x" * 80 + "}", after="{}"),
            'Policy: {"a": ' + "x" * 23 + "…" + "x" * 29 + "} → {}",
        ),
    ],
)
def test_a_changed_property_is_one_line(change: stacks.PropertyChange, line: str) -> None:
    assert stacks.detail_line(change) == line


def test_two_long_values_that_would_read_the_same_cut_in_the_middle_are_cut_where_they_differ() -> None:
    """A container's environment less one variable (seen on the sandbox: the line read "[{"Name": "HOST", "Value":
    "0…"c472f9e912204a5b888728f14d"}]" on both sides of the arrow)."""
    head = '[{"Name": "HOST", "Value": "0.0.0.0"}, {"Name": "PORT", "Value": "8000"}, '
    tail = '{"Name": "CARS_TABLE", "Value": "cars"}, {"Name": "VERSION", "Value": "c472f9e912204a5b888728f14d"}]'
    gone = '{"Name": "CARS_ARN", "Value": "arn:aws:dynamodb:us-east-1:123456789012:table/cars"}, '
    line = stacks.detail_line(stacks.PropertyChange("Environment", before=head + gone + tail, after=head + tail))
    before, after = line.removeprefix("Environment: ").split(" → ")
    assert before != after
    assert before.startswith("…") and '"CARS_ARN"' in before and len(before) == stacks.VALUE_WIDTH
    assert after.startswith("…") and '"CARS_TABLE"' in after and '"CARS_ARN"' not in after
    assert before[:13] == after[:13]  # the same lead: where they part is plain
    ends = stacks.detail_line(stacks.PropertyChange("Environment", before="x" * 70 + "a", after="x" * 70 + "b"))
    assert ends == f"Environment: {'x' * 29}…{'x' * 29}a → {'x' * 29}…{'x' * 29}b"  # the middle cut tells them apart


def test_the_changes_table_puts_each_resources_changed_properties_under_it() -> None:
    memory = stacks.PropertyChange("MemorySize", before="256", after="512")
    key = stacks.PropertyChange(
        "KeySchema", path="/Properties/KeySchema/0/AttributeName", before="car_id", after="car_uid", recreation="Always"
    )
    changes = [
        Change("Fn", "AWS::Lambda::Function", "Modify", "False", details=(memory,)),
        Change("Topic", "AWS::SNS::Topic", "Add"),
        Change("Cars", "AWS::DynamoDB::Table", "Modify", "True", details=(key,)),
    ]
    lines = stacks.changes_table(changes).splitlines()
    assert lines[2].split()[0] == "Fn"
    assert lines[3] == "  ↳ MemorySize: 256 → 512"
    assert lines[4].split()[0] == "Topic"
    assert lines[5].split()[0] == "Cars"
    assert lines[6] == "  ↳ KeySchema[0].AttributeName: car_id → car_uid  ⟳ replaces it"
    assert len(lines) == 7


def test_a_resource_with_many_changed_values_shows_the_first_and_counts_the_rest() -> None:
    many = tuple(
        stacks.PropertyChange("Tags", path=f"/Properties/Tags/{i}/Value", before="a", after="b") for i in range(30)
    )
    lines = stacks.changes_table([Change("Fn", "AWS::Lambda::Function", "Modify", "False", details=many)]).splitlines()
    assert lines[3] == "  ↳ Tags[0].Value: a → b"
    assert lines[-1] == "  ↳ … and 19 more changed values (inv diff --json lists them all)"
    assert len(lines) == 3 + stacks.DETAIL_LINES
    few = many[: stacks.DETAIL_LINES]
    lines = stacks.changes_table([Change("Fn", "AWS::Lambda::Function", "Modify", "False", details=few)]).splitlines()
    assert len(lines) == 3 + stacks.DETAIL_LINES and "more changed values" not in lines[-1]


def test_an_updates_changes_are_kept_a_line_each_for_the_history() -> None:
    memory = stacks.PropertyChange("MemorySize", before="256", after="512")
    changes = [
        Change("Fn", "AWS::Lambda::Function", "Modify", "False", details=(memory,)),
        Change("Topic", "AWS::SNS::Topic", "Add"),
        Change("Old", "AWS::SNS::Topic", "Remove"),
    ]
    assert stacks.change_lines(changes) == (
        "Fn: MemorySize: 256 → 512",
        "Topic (AWS::SNS::Topic): add",
        "Old (AWS::SNS::Topic): remove",
    )
    many = [Change(f"Topic{i}", "AWS::SNS::Topic", "Add") for i in range(130)]
    lines = stacks.change_lines(many)
    assert len(lines) == stacks.HISTORY_LINES and lines[-1] == "… and 31 more"


def test_a_removed_or_replaced_resource_a_policy_keeps_is_said_kept() -> None:
    """CloudFormation keeps what the deployed template's DeletionPolicy (a Remove) or UpdateReplacePolicy (the old one
    of a replacement) keeps; the other policy, and Delete, keep nothing."""
    deployed = {
        "Resources": {
            "Version1": {"Type": "AWS::Lambda::Version", "DeletionPolicy": "Retain", "UpdateReplacePolicy": "Retain"},
            "Cars": {"Type": "AWS::DynamoDB::Table", "DeletionPolicy": "Delete", "UpdateReplacePolicy": "Retain"},
            "Db": {"Type": "AWS::RDS::DBInstance", "DeletionPolicy": "Snapshot"},
            "Topic": {"Type": "AWS::SNS::Topic"},
            "Pool": {"Type": "AWS::Cognito::UserPool", "DeletionPolicy": "RetainExceptOnCreate"},
        }
    }
    changes = [
        Change("Version1", "AWS::Lambda::Version", "Remove"),
        Change("Cars", "AWS::DynamoDB::Table", "Remove"),  # Delete: gone with its data
        Change("Cars", "AWS::DynamoDB::Table", "Modify", "True"),  # the old one kept
        Change("Db", "AWS::RDS::DBInstance", "Remove"),
        Change("Db", "AWS::RDS::DBInstance", "Modify", "Conditional"),  # no UpdateReplacePolicy: deleted
        Change("Topic", "AWS::SNS::Topic", "Remove"),
        Change("Pool", "AWS::Cognito::UserPool", "Remove"),
        Change("Pool", "AWS::Cognito::UserPool", "Modify", "False"),  # destroys nothing
        Change("New", "AWS::SNS::Topic", "Add"),
    ]
    kept = stacks.with_kept(changes, deployed)
    assert [c.kept_by for c in kept] == [
        "DeletionPolicy Retain",
        "",
        "UpdateReplacePolicy Retain",
        "DeletionPolicy Snapshot",
        "",
        "",
        "DeletionPolicy RetainExceptOnCreate",
        "",
        "",
    ]
    assert kept[0].kept == "it is kept, out of the stack, not deleted (DeletionPolicy Retain)"
    assert kept[2].kept == "the old one is kept, out of the stack, not deleted (UpdateReplacePolicy Retain)"
    assert kept[3].kept == "it is deleted after a snapshot (DeletionPolicy Snapshot)"
    assert stacks.with_kept(changes, None) == changes  # no deployed template: nothing said kept
    lines = stacks.changes_table(kept[:2]).splitlines()
    assert lines[3] == "  ↳ it is kept, out of the stack, not deleted (DeletionPolicy Retain)"
    assert lines[4].startswith("Cars") and "↳" not in "".join(lines[4:])
    assert stacks.change_lines(kept[:2]) == (
        "Version1 (AWS::Lambda::Version): remove (DeletionPolicy Retain: kept)",
        "Cars (AWS::DynamoDB::Table): remove",
    )
    assert kept[0].to_json()["kept_by"] == "DeletionPolicy Retain" and kept[1].to_json()["kept_by"] is None
    said = [  # CloudFormation's own word (PolicyAction) goes first: no template needed
        Change("Cars", "AWS::DynamoDB::Table", "Remove", policy_action="Retain"),
        Change("Cars", "AWS::DynamoDB::Table", "Modify", "True", policy_action="ReplaceAndSnapshot"),
        Change("Version1", "AWS::Lambda::Version", "Remove", policy_action="Delete"),  # above all, the template's
        Change("Fn", "AWS::Lambda::Function", "Modify", "False", policy_action="Retain"),  # destroys nothing
    ]
    assert [c.kept_by for c in stacks.with_kept(said, deployed)] == [
        "DeletionPolicy Retain",
        "UpdateReplacePolicy Snapshot",
        "",
        "",
    ]
    raw = resource_change("Cars", "AWS::DynamoDB::Table", "Remove", None, PolicyAction="Retain")
    assert stacks.parse_changes([raw])[0].policy_action == "Retain"


def test_a_functions_version_removed_with_its_function_is_said_deleted_with_it_whatever_its_policy() -> None:
    """Lambda deletes a function's versions with it: a Retain on a version keeps it only while its function stays (a
    function moved to another stack, or taken out)."""
    version = {"Type": "AWS::Lambda::Version", "DeletionPolicy": "Retain"}
    version["Properties"] = {"FunctionName": {"Ref": "Fn"}}
    deployed = {"Resources": {"FnVersion1": version, "OtherVersion1": version | {"Properties": {}}}}
    changes = [
        Change("Fn", "AWS::Lambda::Function", "Remove"),
        Change("FnVersion1", "AWS::Lambda::Version", "Remove", policy_action="Retain"),
        Change("OtherVersion1", "AWS::Lambda::Version", "Remove", policy_action="Retain"),  # its function stays
    ]
    found = stacks.with_kept(changes, deployed)
    assert [(c.kept_by, c.deleted_with) for c in found] == [("", ""), ("", "Fn"), ("DeletionPolicy Retain", "")]
    assert found[1].kept == (
        "deleted with its function Fn, which this change removes: its DeletionPolicy Retain keeps a version only while "
        "its function stays"
    )
    assert found[1].to_json()["deleted_with"] == "Fn" and found[2].to_json()["deleted_with"] is None
    assert stacks.change_lines(found[1:2]) == ("FnVersion1 (AWS::Lambda::Version): remove",)
    # the function staying, its version is kept as before
    assert stacks.with_kept(changes[1:], deployed)[0].kept_by == "DeletionPolicy Retain"


# -- empty change sets --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "reason", "empty"),
    [
        (
            "FAILED",
            "The submitted information didn't contain changes. Submit different information to create a change set.",
            True,
        ),
        ("FAILED", "No updates are to be performed.", True),
        ("FAILED", "Template format error: Unresolved resource dependencies [Nope]", False),
        ("FAILED", None, False),
        ("CREATE_COMPLETE", None, False),  # no resource changes, but parameters or outputs change: not empty
        ("CREATE_COMPLETE", "No updates are to be performed.", False),
    ],
)
def test_empty_change_set_detection(status: str, reason: str | None, empty: bool) -> None:
    assert stacks.is_empty_change_set(status, reason) is empty


def test_no_updates_error_of_create_change_set() -> None:
    assert stacks.is_no_changes_error(client_error("ValidationError", "No updates are to be performed."))
    assert not stacks.is_no_changes_error(client_error("ValidationError", "Template format error"))
    assert not stacks.is_no_changes_error(client_error("Throttling", "No updates are to be performed."))
    assert not stacks.is_no_changes_error(ValueError("No updates are to be performed."))


# -- events ------------------------------------------------------------------------------------------------


def test_fresh_events_are_oldest_first_each_once_and_not_older_than_the_start() -> None:
    seen: set[str] = {"old-1"}
    listing = [  # as CloudFormation lists them: newest first
        event("e3", "Bucket", "CREATE_COMPLETE", 30),
        event("e2", "Bucket", "CREATE_IN_PROGRESS", 20),
        event("e1", "Stack", "CREATE_IN_PROGRESS", 10, rtype="AWS::CloudFormation::Stack"),
        event("old-2", "Stack", "REVIEW_IN_PROGRESS", -5),  # before the execute, not seen before either
        event("old-1", "Stack", "REVIEW_IN_PROGRESS", -10),
    ]
    fresh = stacks.fresh_events(listing, seen, since=T0)
    assert [e["EventId"] for e in fresh] == ["e1", "e2", "e3"]
    assert stacks.fresh_events(listing, seen, since=T0) == []  # each once
    later = [event("e4", "Stack", "CREATE_COMPLETE", 40, rtype="AWS::CloudFormation::Stack"), *listing]
    assert [e["EventId"] for e in stacks.fresh_events(later, seen, since=T0)] == ["e4"]


def test_events_with_equal_timestamps_keep_their_order() -> None:
    listing = [event("b", "B", "CREATE_COMPLETE", 5), event("a", "A", "CREATE_COMPLETE", 5)]
    assert [e["EventId"] for e in stacks.fresh_events(listing, set(), since=None)] == ["a", "b"]


def test_event_line_has_the_elapsed_time_resource_status_and_reason() -> None:
    line = stacks.format_event(event("e", "Cars", "CREATE_FAILED", 0, "AWS::DynamoDB::Table", "limit exceeded"), 12.34)
    assert line == "[  12.3s] Cars AWS::DynamoDB::Table CREATE_FAILED: limit exceeded"
    assert stacks.format_event(event("e", "Cars", "CREATE_COMPLETE", 0), 1).endswith("CREATE_COMPLETE")


def test_failed_resources_put_the_cause_before_the_cancellations() -> None:
    oldest_first = [
        event("1", "Queue", "UPDATE_FAILED", 1, "AWS::SQS::Queue", "Resource update cancelled"),
        event("2", "Service", "UPDATE_FAILED", 2, "AWS::ECS::Service", "Circuit breaker triggered"),
        event("3", "Service", "UPDATE_FAILED", 3, "AWS::ECS::Service", "a later, second failure"),
        event("4", "Cars", "UPDATE_COMPLETE", 4, "AWS::DynamoDB::Table"),
        event("5", "MyStack", "UPDATE_ROLLBACK_FAILED", 5, "AWS::CloudFormation::Stack", "stack level"),
    ]
    assert stacks.failed_resources(oldest_first, "MyStack") == [
        ("Service", "AWS::ECS::Service", "UPDATE_FAILED", "Circuit breaker triggered"),
        ("Queue", "AWS::SQS::Queue", "UPDATE_FAILED", "Resource update cancelled"),
    ]


# -- retries and names ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("exc", "throttling", "transient"),
    [
        (client_error("Throttling", "Rate exceeded"), True, True),
        (client_error("RequestLimitExceeded"), True, True),
        (client_error("ThrottlingException"), True, True),
        (client_error("InternalFailure", status=500), False, True),
        (client_error("Anything", status=503), False, True),
        (client_error("ValidationError", "Stack with id x does not exist"), False, False),
        (client_error("AccessDenied", status=403), False, False),
        (ConnectionClosedError(endpoint_url="https://cloudformation"), False, True),
        (EndpointConnectionError(endpoint_url="http://127.0.0.1:4566"), False, False),  # never connected: say so
    ],
)
def test_throttling_and_transient_errors(exc: Exception, throttling: bool, transient: bool) -> None:
    assert stacks.is_throttling(exc) is throttling
    assert stacks.is_transient(exc) is transient


def test_missing_stack_error() -> None:
    assert stacks.is_missing_stack(client_error("ValidationError", "Stack with id Nope does not exist"))
    assert not stacks.is_missing_stack(client_error("ValidationError", "Template format error"))


def test_change_set_names_are_valid_and_unique() -> None:
    first = stacks.change_set_name(T0)
    assert re.fullmatch(r"[a-zA-Z][-a-zA-Z0-9]{0,127}", first)
    assert first.startswith("deploykit-20260101T000000Z-")
    assert stacks.change_set_name(T0) != first  # same second, another deploy
    assert stacks.change_set_name(T0, "abc") == "deploykit-20260101T000000Z-abc"


def test_outputs_and_parameters_of_a_stack() -> None:
    stack = {
        "Outputs": [{"OutputKey": "AlbUrl", "OutputValue": "http://alb"}, {"OutputKey": "Empty"}],
        "Parameters": [
            {"ParameterKey": "ImageTag", "ParameterValue": "abc123"},
            {"ParameterKey": "Ami", "ParameterValue": "/aws/ssm/ami", "ResolvedValue": "ami-1"},
        ],
    }
    assert stacks.outputs_of(stack) == {"AlbUrl": "http://alb", "Empty": ""}
    assert stacks.parameters_of(stack) == {"ImageTag": "abc123", "Ami": "ami-1"}
    assert stacks.outputs_of(None) == {} and stacks.parameters_of({}) == {}


def test_what_a_run_left_each_stack_as_is_read_from_its_deploy_stack_steps_groups_included() -> None:
    from deploykit.plan import StepRecord
    from deploykit.stack_chain import left_key, stacks_left

    def deployed(stack: str, updated: str) -> StepRecord:
        outputs = {left_key(stack, "updated"): updated, left_key(stack, "template"): "f" * 16, "x.y": "z"}
        return StepRecord("deploy-stack", stack, "done", 1.0, "", outputs)

    records = [
        deployed("CarRentalDataStack", "t1"),
        StepRecord("parallel", "", "done", 1.0, children=[deployed("CarRentalApiStack", "t2")]),
        StepRecord("smoke", "", "done", 1.0),
    ]
    roles = {"data": "CarRentalDataStack", "api": "CarRentalApiStack", "auth": "CarRentalAuthStack"}
    assert stacks_left(records, roles) == {
        "stack:data": {"updated": "t1", "template": "f" * 16},
        "stack:api": {"updated": "t2", "template": "f" * 16},
    }


def test_express_mode_is_for_updates_of_templates_without_custom_resources() -> None:
    plain = '{"Resources": {"Cars": {"Type": "AWS::DynamoDB::Table"}, "Service": {"Type": "AWS::ECS::Service"}}}'
    assert stacks.express_blocker("UPDATE", plain) == ""
    assert (
        stacks.express_blocker("CREATE", plain)
        == "a new stack is created in the standard mode, each resource waited for"
    )
    custom = (
        '{"Resources": {"Seed": {"Type": "Custom::SeedCars"}, "Other": {"Type": "AWS::CloudFormation::CustomResource"},'
        ' "Cars": {"Type": "AWS::DynamoDB::Table"}}}'
    )
    assert stacks.express_blocker("UPDATE", custom) == (
        "its template has custom resources (AWS::CloudFormation::CustomResource, Custom::SeedCars), which express mode "
        "does not run"
    )
    assert stacks.express_blocker("UPDATE", "not json") == ""  # CloudFormation says what is wrong with it


def _drifted(name: str, before: str, after: str | None, deployed: str, kind: str = "Modify") -> dict[str, Any]:
    """A detail of a drift-aware change set (DescribeChangeSet with IncludePropertyValues)."""
    target = {
        "Attribute": "Properties",
        "Name": name,
        "Path": f"/Properties/{name}",
        "RequiresRecreation": "Never",
        "BeforeValue": before,
        "BeforeValueFrom": "ACTUAL_STATE",
        "AfterValueFrom": "TEMPLATE",
        "AttributeChangeType": kind,
        "Drift": {"PreviousValue": deployed, "ActualValue": before},
    }
    if after is not None:
        target["AfterValue"] = after
    return {"Target": target, "Evaluation": "Static"}


def _resource(logical_id: str, kind: str, details: list[dict[str, Any]], drift: str, **more: Any) -> dict[str, Any]:
    change = {"Action": "Modify", "LogicalResourceId": logical_id, "ResourceType": kind, "Replacement": "False"}
    return {"Type": "Resource", "ResourceChange": {**change, "Details": details, "ResourceDriftStatus": drift, **more}}


def test_a_drift_aware_change_set_says_what_goes_back_what_is_kept_and_the_aliases_the_fast_path_moved() -> None:
    env = '{"Variables": {"TABLE": "cars"}}'
    changes = stacks.parse_changes(
        [
            _resource(
                "Login",
                "AWS::Lambda::Function",
                [
                    _drifted("MemorySize", "1024", "256", "256"),
                    _drifted("Environment", '{"Variables": {"DEBUG": "1", "TABLE": "cars"}}', env, env),
                    _drifted("Timeout", "30", "30", "10", kind="SyncWithActual"),
                ],
                "MODIFIED",
            ),
            _resource("HealthAlias", "AWS::Lambda::Alias", [_drifted("FunctionVersion", "2", None, "1")], "MODIFIED"),
            _resource("Queue", "AWS::SQS::Queue", [], "NOT_CHECKED"),
            _resource("Version", "AWS::Lambda::Version", [], "NOT_CHECKED", Replacement="True"),
            _resource("Api", "AWS::ApiGateway::RestApi", [], "IN_SYNC"),
        ]
    )
    login, alias, queue = changes[:3]
    assert login.drift == "MODIFIED" and [d.where for d in login.reverts] == ["MemorySize", "Environment"]
    assert alias.reverts == () and alias.alias_moved(alias.details[0])
    assert login.details[0].to_json()["drift"] == {"deployed": "256", "actual": "1024"}
    assert queue.to_json()["drift"] == "NOT_CHECKED" and changes[4].details == ()

    table = stacks.changes_table(changes)
    assert re.search(r"^Login .* Modify +False  ↩ reverts drift$", table, re.M), table
    assert re.search(r"^HealthAlias .* Modify +False$", table, re.M), table  # not reverted: the same code
    assert "  ↳ MemorySize: 1024 → 256 (changed outside CloudFormation from 256: back to the template's value)" in table
    assert (
        "  ↳ Environment (Variables.DEBUG: 1 → none; changed outside CloudFormation: back to the template's value)"
        in table
    )
    assert (
        "  ↳ Timeout: 30 kept (changed outside CloudFormation from 10; the template says the same now: only "
        "CloudFormation's record changes)" in table
    )
    assert (
        "  ↳ FunctionVersion: 2 → the stack's new version (moved from 1 outside CloudFormation: by the Lambda fast "
        "path, a rollback or by hand; the stack's version runs the code the alias serves now)" in table
    )
    assert stacks.drift_summary(changes) == (
        "drift back to the template: Login.MemorySize, Login.Environment; drift kept, as the template now says it: "
        "Login.Timeout; aliases moved outside CloudFormation (the fast path, a rollback), kept on the code they serve: "
        "HealthAlias; drift not read by CloudFormation for Queue"
    )
    in_sync, deleted = (_resource("Api", "AWS::ApiGateway::RestApi", [], status) for status in ("IN_SYNC", "DELETED"))
    assert stacks.drift_summary(stacks.parse_changes([in_sync])) == "no drift found in the resources it changes or read"
    assert stacks.drift_summary(stacks.parse_changes([deleted])) == "deleted outside CloudFormation: Api"


def test_a_change_that_is_only_an_alias_moved_outside_cloudformation_is_told_apart() -> None:
    """inv diff --verify --drift does not count it: the fast path moves aliases, and their code is compared apart."""
    moved, also_routed, function = (
        stacks.parse_changes([change])[0].to_json()
        for change in (
            _resource("Alias", "AWS::Lambda::Alias", [_drifted("FunctionVersion", "2", None, "1")], "MODIFIED"),
            _resource(
                "Alias",
                "AWS::Lambda::Alias",
                [_drifted("FunctionVersion", "2", None, "1"), _drifted("RoutingConfig", '{"a": 1}', None, "{}")],
                "MODIFIED",
            ),
            _resource("Fn", "AWS::Lambda::Function", [_drifted("FunctionVersion", "2", None, "1")], "MODIFIED"),
        )
    )
    assert stacks.alias_moves_only(moved)
    assert not stacks.alias_moves_only(also_routed) and not stacks.alias_moves_only(function)
    assert not stacks.alias_moves_only({**moved, "details": []})
