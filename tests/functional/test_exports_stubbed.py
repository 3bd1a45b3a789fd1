"""An export another stack still imports, that a stack's new template drops (deploykit.exports), against
CloudFormation's answers played by botocore's Stubber (moto has no ListImports). Calls: DescribeStacks, then
ListImports per dropped export (every page), then GetTemplate when one is imported; the Stubber fails a test on any
other call or order, so "nothing more was read" is checked by construction."""

from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path
from typing import Any
from unittest.mock import Mock

import pytest
from botocore.exceptions import ClientError
from botocore.stub import Stubber

from deploykit.aws import AwsFactory
from deploykit.config import EnvConfig
from deploykit.errors import UsageError
from deploykit.exports import Kept, importers_of, keep_imported, refuse_replacing_imported
from deploykit.plan import Context
from deploykit.stack_chain import DeployStack, DestroyStack, StacksByImports
from deploykit.stacks import Change
from tests.functional.conftest import new_session

ACCOUNT = "123456789012"
DATA, FARGATE, API = "CarRentalDataStack", "CarRentalFargateStack", "CarRentalApiStack"
KEY = "ExportsOutputFnGetAttCarsTable1234Arn5678"
EXPORT = f"{DATA}:{KEY}"
TABLE = {"Type": "AWS::DynamoDB::Table", "Properties": {"BillingMode": "PAY_PER_REQUEST"}}
OUTPUT = {"Value": {"Fn::GetAtt": ["CarsTable1234", "Arn"]}, "Export": {"Name": EXPORT}}
LIVE = {
    "Resources": {"CarsTable1234": TABLE},
    "Outputs": {KEY: OUTPUT, "CarsTableName": {"Value": {"Ref": "CarsTable1234"}}},
}
# the new template: the Fargate stack no longer refers to the table's ARN, so CDK dropped the export; a setting changed
NEW = {
    "Resources": {"CarsTable1234": {**TABLE, "Properties": {"BillingMode": "PAY_PER_REQUEST", "TableClass": "X"}}},
    "Outputs": {"CarsTableName": {"Value": {"Ref": "CarsTable1234"}}},
}


def stubbed() -> tuple[Any, Stubber]:
    cfn = new_session().client("cloudformation")
    return cfn, Stubber(cfn)


def described(*exports: tuple[str, str]) -> dict[str, Any]:
    outputs = [{"OutputKey": key, "OutputValue": "v", "ExportName": name} for key, name in exports]
    outputs.append({"OutputKey": "CarsTableName", "OutputValue": "cars"})
    return {
        "Stacks": [
            {
                "StackName": DATA,
                "StackId": f"arn:aws:cloudformation:eu-west-1:{ACCOUNT}:stack/{DATA}/1",
                "CreationTime": "2026-01-01T00:00:00Z",
                "StackStatus": "UPDATE_COMPLETE",
                "Outputs": outputs,
            }
        ]
    }


def kept(cfn: Any, body: dict[str, Any], before: tuple[str, ...] = ()) -> tuple[str, tuple[Kept, ...]]:
    return keep_imported(cfn, DATA, json.dumps(body), {}, region="eu-west-1", account=ACCOUNT, importing_before=before)


def not_imported(stub: Stubber, export: str) -> None:
    stub.add_client_error(
        "list_imports",
        service_error_code="ValidationError",
        service_message=f"Export '{export}' is not imported by any stack.",
        expected_params={"ExportName": export},
    )


def test_an_export_still_imported_is_kept_as_the_live_template_has_it_when_its_resource_stays() -> None:
    cfn, stub = stubbed()
    stub.add_response("describe_stacks", described((KEY, EXPORT)), {"StackName": DATA})
    stub.add_response("list_imports", {"Imports": [FARGATE]}, {"ExportName": EXPORT})
    stub.add_response("get_template", {"TemplateBody": json.dumps(LIVE)}, {"StackName": DATA})
    with stub:
        body, found = kept(cfn, NEW)
    assert found == (Kept(EXPORT, KEY, (FARGATE,)),)
    assert found[0].said() == f"kept its export {EXPORT}, which {FARGATE} still imports"
    template = json.loads(body)
    assert template["Outputs"] == {**NEW["Outputs"], KEY: OUTPUT}  # the same value expression: CloudFormation's
    assert template["Resources"] == NEW["Resources"]  # the new template's otherwise


def test_an_export_nothing_imports_goes_as_the_template_has_it_and_the_live_template_is_not_read() -> None:
    cfn, stub = stubbed()
    stub.add_response("describe_stacks", described((KEY, EXPORT)), {"StackName": DATA})
    not_imported(stub, EXPORT)
    with stub:
        body, found = kept(cfn, NEW)
    assert found == () and body == json.dumps(NEW)


def test_a_template_that_keeps_its_exports_reads_no_imports() -> None:
    cfn, stub = stubbed()
    stub.add_response("describe_stacks", described((KEY, EXPORT)), {"StackName": DATA})
    with stub:
        body, found = kept(cfn, LIVE)
    assert found == () and body == json.dumps(LIVE)


def test_a_stack_not_there_yet_has_no_export_to_keep() -> None:
    cfn, stub = stubbed()
    stub.add_client_error(
        "describe_stacks", service_error_code="ValidationError", service_message=f"Stack with id {DATA} does not exist"
    )
    with stub:
        assert kept(cfn, NEW) == (json.dumps(NEW), ())


@pytest.mark.parametrize(
    "new_resources",
    [
        pytest.param({}, id="resource removed"),
        pytest.param({"CarsTable1234": {"Type": "AWS::S3::Bucket"}}, id="resource of another type"),
    ],
)
def test_an_imported_export_whose_resource_goes_is_refused_naming_the_importer_and_the_two_deploys(
    new_resources: dict[str, Any],
) -> None:
    cfn, stub = stubbed()
    stub.add_response("describe_stacks", described((KEY, EXPORT)), {"StackName": DATA})
    stub.add_response("list_imports", {"Imports": [FARGATE]}, {"ExportName": EXPORT})
    stub.add_response("get_template", {"TemplateBody": json.dumps(LIVE)}, {"StackName": DATA})
    new = {"Resources": new_resources, "Outputs": {}}
    with stub, pytest.raises(UsageError) as refused:
        kept(cfn, new)
    assert f"{DATA}'s new template drops its export {EXPORT}, which {FARGATE} still imports" in refused.value.message
    assert "(CarsTable1234)" in refused.value.message and "CloudFormation would refuse" in refused.value.message
    assert f"inv deploy.stack {FARGATE}" in refused.value.next_step and "nothing was changed" in refused.value.next_step


def test_an_export_whose_importers_all_deploy_before_it_in_the_run_is_left_to_the_deploy() -> None:
    cfn, stub = stubbed()
    stub.add_response("describe_stacks", described((KEY, EXPORT)), {"StackName": DATA})
    stub.add_response("list_imports", {"Imports": [FARGATE]}, {"ExportName": EXPORT})
    stub.add_response("get_template", {"TemplateBody": json.dumps(LIVE)}, {"StackName": DATA})
    with stub:
        assert kept(cfn, {"Resources": {}}, before=(FARGATE,)) == (json.dumps({"Resources": {}}), ())


@pytest.mark.parametrize(
    ("change", "gone"),
    [
        pytest.param(lambda t: None, "", id="all there"),
        pytest.param(lambda t: t.pop("Parameters"), "Suffix", id="parameter gone"),
        pytest.param(lambda t: t.update(Conditions={"Prod": {"Fn::Equals": ["a", "b"]}}), "Prod", id="condition"),
        pytest.param(lambda t: t.update(Mappings={"Zones": {"a": {"b": "2"}}}), "Zones", id="mapping"),
    ],
)
def test_what_a_kept_output_names_besides_its_resource_must_be_in_the_new_template_as_it_was(
    change: Any, gone: str
) -> None:
    output = {
        "Condition": "Prod",
        "Value": {
            "Fn::Sub": [
                "${CarsTable1234.Arn}/${Suffix}/${AWS::Region}/${!Literal}/${Zone}",
                {"Zone": {"Fn::FindInMap": ["Zones", "a", "b"]}},
            ]
        },
        "Export": {"Name": EXPORT},
    }
    live = {**copy.deepcopy(LIVE), "Parameters": {"Suffix": {"Type": "String"}}}
    live["Conditions"] = {"Prod": {"Fn::Equals": ["a", "a"]}}
    live["Mappings"] = {"Zones": {"a": {"b": "1"}}}
    live["Outputs"][KEY] = output
    new = {**copy.deepcopy(NEW), "Parameters": {"Suffix": {"Type": "String"}}}
    new["Conditions"] = {"Prod": {"Fn::Equals": ["a", "a"]}}
    new["Mappings"] = {"Zones": {"a": {"b": "1"}}}
    change(new)
    cfn, stub = stubbed()
    stub.add_response("describe_stacks", described((KEY, EXPORT)), {"StackName": DATA})
    stub.add_response("list_imports", {"Imports": [FARGATE]}, {"ExportName": EXPORT})
    stub.add_response("get_template", {"TemplateBody": json.dumps(live)}, {"StackName": DATA})
    with stub:
        if not gone:
            body, found = kept(cfn, new)
            assert json.loads(body)["Outputs"][KEY] == output and [k.name for k in found] == [EXPORT]
        else:
            with pytest.raises(UsageError, match=rf"what it names with it \({gone}\)"):
                kept(cfn, new)


def test_the_importers_are_read_from_every_page() -> None:
    cfn, stub = stubbed()
    stub.add_response("list_imports", {"Imports": [FARGATE], "NextToken": "t1"}, {"ExportName": EXPORT})
    stub.add_response("list_imports", {"Imports": [API]}, {"ExportName": EXPORT, "NextToken": "t1"})
    with stub:
        assert importers_of(cfn, EXPORT) == (API, FARGATE)


def test_imports_that_may_not_be_read_are_not_taken_for_none() -> None:
    cfn, stub = stubbed()
    stub.add_client_error("list_imports", service_error_code="AccessDenied", service_message="not allowed")
    with stub, pytest.raises(ClientError):
        importers_of(cfn, EXPORT)


def test_a_stack_deployed_later_in_a_run_is_refused_before_the_run_changes_anything_unless_its_importer_goes_first(
    tmp_path: Path, dev_env: EnvConfig
) -> None:
    """DeployStack's preflight (before the run's first change): an export the data stack's template drops with its
    resource, which the Fargate stack imports, is refused then; with the Fargate stack deployed before it in the run
    (which may drop the import first), it is left to the step."""
    template = tmp_path / f"{DATA}.template.json"
    template.write_text(json.dumps({"Resources": {}}))
    step = DeployStack(DATA, str(template))
    for before in ((), (DeployStack(FARGATE, str(tmp_path / f"{FARGATE}.template.json")),)):
        cfn, stub = stubbed()
        stub.add_response("describe_stacks", described((KEY, EXPORT)), {"StackName": DATA})
        stub.add_response("list_imports", {"Imports": [FARGATE]}, {"ExportName": EXPORT})
        stub.add_response("get_template", {"TemplateBody": json.dumps(LIVE)}, {"StackName": DATA})
        aws = Mock(spec=AwsFactory, client=Mock(return_value=cfn), account=Mock(return_value=ACCOUNT))
        with stub:
            if before:
                step.preflight(Mock(spec=Context, env=dev_env, aws=aws), before)
            else:
                with pytest.raises(UsageError, match=f"drops its export {EXPORT}, which {FARGATE} still imports"):
                    step.preflight(Mock(spec=Context, env=dev_env, aws=aws), before)
        aws.client.assert_called_with("cloudformation")


POLICY_KEY = "ExportsOutputRefAppDataAccessPolicy1234"
POLICY_EXPORT = f"{DATA}:{POLICY_KEY}"
POLICY_LIVE = {
    "Resources": {"AppDataAccessPolicy": {"Type": "AWS::IAM::ManagedPolicy"}},
    "Outputs": {POLICY_KEY: {"Value": {"Ref": "AppDataAccessPolicy"}, "Export": {"Name": POLICY_EXPORT}}},
}


def replacing(replacement: str) -> list[Change]:
    return [Change("AppDataAccessPolicy", "AWS::IAM::ManagedPolicy", "Modify", replacement)]


def test_a_change_set_replacing_a_resource_an_imported_export_carries_is_refused_before_it_is_executed() -> None:
    cfn, stub = stubbed()
    stub.add_response("describe_stacks", described((POLICY_KEY, POLICY_EXPORT)), {"StackName": DATA})
    stub.add_response("get_template", {"TemplateBody": json.dumps(POLICY_LIVE)}, {"StackName": DATA})
    stub.add_response("list_imports", {"Imports": [FARGATE]}, {"ExportName": POLICY_EXPORT})
    with stub, pytest.raises(UsageError) as refused:
        refuse_replacing_imported(cfn, DATA, replacing("True"), "inv deploy.stack X")
    assert refused.value.message.startswith(
        f"{DATA}'s change set replaces AppDataAccessPolicy, whose new value its export {POLICY_EXPORT} would carry, "
        f"which {FARGATE} imports: CloudFormation would make the new resource"
    )
    assert refused.value.next_step.endswith(
        f"first {FARGATE} without the import (a commit that drops its use, "
        "deployed), then this change again (inv deploy.stack X)"
    )


def test_a_replaced_resource_whose_export_nothing_imports_goes_on() -> None:
    cfn, stub = stubbed()
    stub.add_response("describe_stacks", described((POLICY_KEY, POLICY_EXPORT)), {"StackName": DATA})
    stub.add_response("get_template", {"TemplateBody": json.dumps(POLICY_LIVE)}, {"StackName": DATA})
    not_imported(stub, POLICY_EXPORT)
    with stub:
        refuse_replacing_imported(cfn, DATA, replacing("True"), "inv deploy.stack X")


@pytest.mark.parametrize("replacement", ["False", "Conditional"])
def test_a_change_set_that_replaces_nothing_for_sure_reads_nothing(replacement: str) -> None:
    cfn, stub = stubbed()
    with stub:  # any read would fail: none is scripted
        refuse_replacing_imported(cfn, DATA, replacing(replacement), "inv deploy.stack X")


def test_a_stack_deleted_alone_is_refused_while_another_imports_its_export_and_goes_once_none_does(
    dev_env: EnvConfig,
) -> None:
    """inv destroy --stack ROLE (DestroyStack alone): CloudFormation would fail the deletion on an export in use; the
    preflight names it and its importer before anything is deleted. Deleted with the rest, the order sees to it."""
    for importers in ([FARGATE], []):
        cfn, stub = stubbed()
        stub.add_response("describe_stacks", described((KEY, EXPORT)), {"StackName": DATA})  # its protection
        stub.add_response("describe_stacks", described((KEY, EXPORT)), {"StackName": DATA})  # its exports
        if importers:
            stub.add_response("list_imports", {"Imports": importers}, {"ExportName": EXPORT})
        else:
            not_imported(stub, EXPORT)
        aws = Mock(spec=AwsFactory, client=Mock(return_value=cfn))
        with stub:
            if importers:
                with pytest.raises(UsageError) as refused:
                    DestroyStack(DATA, alone=True).preflight(Mock(spec=Context, env=dev_env, aws=aws), ())
                assert refused.value.message == (
                    f"{DATA} exports what other stacks import ({EXPORT} by {FARGATE}): it cannot go while they do; "
                    "nothing was deleted"
                )
                assert str(refused.value.next_step).startswith(
                    f"drop their use of it in the CDK app and deploy {FARGATE}"
                )
            else:
                DestroyStack(DATA, alone=True).preflight(Mock(spec=Context, env=dev_env, aws=aws), ())
        stub.assert_no_pending_responses()
    # its importer deleted with it (inv destroy --stack alerts,notifications): no refusal; another one: named, with the
    # command that deletes both, when it is a stack of the team's own
    own = dataclasses.replace(dev_env, stacks=dataclasses.replace(dev_env.stacks, own=(("alerts", FARGATE),
                                                                                       ("data", DATA))))  # fmt: skip
    for beside in ((FARGATE, DATA), (DATA,)):
        cfn, stub = stubbed()
        stub.add_response("describe_stacks", described((KEY, EXPORT)), {"StackName": DATA})
        stub.add_response("list_imports", {"Imports": [FARGATE]}, {"ExportName": EXPORT})
        aws = Mock(spec=AwsFactory, client=Mock(return_value=cfn))
        step = DestroyStack(DATA, alone=True, beside=beside)
        with stub:
            if FARGATE in beside:
                step._refuse_imported(Mock(spec=Context, env=own, aws=aws))
            else:
                with pytest.raises(UsageError) as refused:
                    step._refuse_imported(Mock(spec=Context, env=own, aws=aws))
                assert str(refused.value.next_step).endswith(
                    f"then rerun; or delete them with it: inv destroy --stack alerts,data --env {dev_env.name}"
                )
    # imports that may not be read: left to CloudFormation, said
    cfn, stub = stubbed()
    stub.add_response("describe_stacks", described((KEY, EXPORT)), {"StackName": DATA})
    stub.add_response("describe_stacks", described((KEY, EXPORT)), {"StackName": DATA})
    stub.add_client_error("list_imports", service_error_code="AccessDenied", service_message="not allowed")
    said: list[str] = []
    aws = Mock(spec=AwsFactory, client=Mock(return_value=cfn))
    ctx = Mock(spec=Context, env=dev_env, aws=aws, reporter=Mock(line=said.append))
    with stub:
        DestroyStack(DATA, alone=True).preflight(ctx, ())
    assert said == [
        f"⚠️  the imports of {DATA}'s exports may not be read (AccessDenied): CloudFormation refuses its deletion if "
        "one is in use"
    ]


def test_stacks_destroyed_together_wait_only_for_the_stacks_importing_from_them(dev_env: EnvConfig) -> None:
    """inv destroy: the team's stacks and the platform's last ones go side by side, each once the stacks importing one
    of its exports are gone (as they are: DescribeStacks, ListImports); imports that may not be read: as before, the
    team's one at a time, then the platform's (said)."""
    search, notify, fargate, api = "CarRentalSearchStack", "CarRentalNotificationsStack", FARGATE, "CarRentalApiStack"
    group = StacksByImports(tuple(DestroyStack(name) for name in (search, notify, fargate, api)), own_until=2)
    cfn, stub = stubbed()
    stub.add_response("describe_stacks", described(), {"StackName": search})
    stub.add_response("describe_stacks", described(("QueueUrl", "Notify:QueueUrl")), {"StackName": notify})
    stub.add_response("list_imports", {"Imports": [search]}, {"ExportName": "Notify:QueueUrl"})
    stub.add_response("describe_stacks", described(), {"StackName": fargate})
    stub.add_response("describe_stacks", described(("ApiUrl", "Api:Url"), ("ApiId", "Api:Id")), {"StackName": api})
    stub.add_response("list_imports", {"Imports": [search, "SomeoneElsesStack"]}, {"ExportName": "Api:Url"})
    not_imported(stub, "Api:Id")
    aws = Mock(spec=AwsFactory, client=Mock(return_value=cfn))
    with stub:
        needs = group.needs(Mock(spec=Context, env=dev_env, aws=aws))
    stub.assert_no_pending_responses()
    assert {i: list(n) for i, n in needs.items()} == {0: [], 1: [0], 2: [], 3: [0]}
    cfn, stub = stubbed()
    stub.add_response("describe_stacks", described(("QueueUrl", "Notify:QueueUrl")), {"StackName": search})
    stub.add_client_error("list_imports", service_error_code="AccessDenied", service_message="not allowed")
    said: list[str] = []
    ctx = Mock(spec=Context, env=dev_env, aws=Mock(spec=AwsFactory, client=Mock(return_value=cfn)))
    ctx.reporter = Mock(line=said.append)
    with stub:
        needs = group.needs(ctx)
    assert {i: list(n) for i, n in needs.items()} == {1: [0], 2: [0, 1], 3: [0, 1]}
    assert said == [
        "⚠️  which stacks import from which may not be read (AccessDenied): the stacks of the team's own go one at a "
        "time"
    ]
