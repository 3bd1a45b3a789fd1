"""The sandbox's CloudFormation deploys the five synthesized CarRental stacks through change sets, and the
stacks really run (sandbox/ext/cloudformation.py and cloudformation_resources.py).

One private sandbox on free ports for the module; the CDK app is synthesized once (its registry is the
sandbox's ECR front). Everything goes through the AWS APIs on the sandbox's endpoint, as deploykit would:
change sets (CREATE, then UPDATE), events followed as they arrive, outputs and exports; the image is pushed
through ECR with the token from GetAuthorizationToken, the Lambda zips are uploaded to the artifacts bucket.
The tests run in order: they deploy, update and finally delete the same stacks.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import hashlib
import io
import json
import os
import re
import subprocess
import sys
import tarfile
import threading
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import boto3
import docker
import docker.errors
import pytest
from botocore.exceptions import ClientError

from deploykit.packaging import package_function
from sandbox import lifecycle
from sandbox.ext.apigw_lambda import invoke_url
from sandbox.ext.ecs_runtime import LABEL
from sandbox.settings import ACCOUNT_ID, Settings, load_settings
from tests.conftest import REPO
from tests.integration.conftest import free_port
from tests.integration.sandbox_support import BASE, TEST_APP, private_sandbox_files

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("base_image")]

REGISTRY, DATA, AUTH, FARGATE, API = (
    "CarRentalRegistryStack",
    "CarRentalDataStack",
    "CarRentalAuthStack",
    "CarRentalFargateStack",
    "CarRentalApiStack",
)
ORDER = (REGISTRY, DATA, AUTH, FARGATE, API)
CAPABILITIES = ["CAPABILITY_IAM", "CAPABILITY_NAMED_IAM"]
NO_CHANGES = "The submitted information didn't contain changes. Submit different information to create a change set."
PASSWORD = "Sandbox-Passw0rd!x"
DEADLINE = 180.0  # seconds for one stack operation


# == the harness ============================================================================================


@dataclass
class Operation:
    """One executed change set as a client saw it."""

    stack: str
    change_set: dict[str, Any]
    status: str
    seconds: float
    events: list[dict[str, Any]]  # new events, in the order they happened
    polls: list[tuple[str, int]] = field(default_factory=list)  # (stack status, events seen so far) per poll


class Aws:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        kw: dict[str, Any] = {
            "endpoint_url": settings.endpoint_url,
            "region_name": settings.region,
            "aws_access_key_id": "sandbox",
            "aws_secret_access_key": "sandbox",
        }
        self.clients = {
            name: boto3.client(name, **kw)  # type: ignore[call-overload]
            for name in (
                "cloudformation",
                "ecs",
                "elbv2",
                "ecr",
                "s3",
                "cognito-idp",
                "dynamodb",
                "lambda",
                "apigateway",
                "ec2",
                "logs",
                "iam",
                "ssm",
                "sns",
                "sqs",
                "cloudwatch",
            )
        }
        self.cf = self.clients["cloudformation"]
        self.ecs = self.clients["ecs"]
        self.elbv2 = self.clients["elbv2"]
        self._count = 0

    def change_set(
        self, stack: str, template: str, parameters: dict[str, str], kind: str, **extra: Any
    ) -> tuple[str, dict[str, Any]]:
        self._count += 1
        name = f"deploykit-{self._count}"
        self.cf.create_change_set(
            StackName=stack,
            ChangeSetName=name,
            ChangeSetType=kind,
            TemplateBody=template,
            Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in parameters.items()],
            Capabilities=CAPABILITIES,
            **extra,
        )
        return name, self.cf.describe_change_set(StackName=stack, ChangeSetName=name)

    def deploy(self, stack: str, template: str, parameters: dict[str, str] | None = None, **extra: Any) -> Operation:
        """A change set (CREATE or UPDATE), executed, its events followed as they arrive, to a terminal state;
        ``extra``: more of CreateChangeSet's parameters (DeploymentConfig)."""
        try:
            self.cf.describe_stacks(StackName=stack)
            kind = "UPDATE"
        except ClientError:
            kind = "CREATE"
        name, described = self.change_set(stack, template, parameters or {}, kind, **extra)
        assert described["Status"] == "CREATE_COMPLETE", described.get("StatusReason")
        seen = {e["EventId"] for e in self.cf.describe_stack_events(StackName=stack)["StackEvents"]}
        started = time.monotonic()
        self.cf.execute_change_set(StackName=stack, ChangeSetName=name)
        operation = Operation(stack, described, "", 0.0, [])

        def take_events() -> None:
            fresh = [
                e for e in self.cf.describe_stack_events(StackName=stack)["StackEvents"] if e["EventId"] not in seen
            ]
            for event in reversed(fresh):  # the API lists the newest first
                seen.add(event["EventId"])
                operation.events.append(event)

        while True:
            # the events first, then the status: a status read in progress then says the events were read before the
            # stack ended (read the other way round, a busy machine let the stack end between the two reads)
            take_events()
            status = self.cf.describe_stacks(StackName=stack)["Stacks"][0]["StackStatus"]
            operation.polls.append((status, len(operation.events)))
            if not status.endswith("_IN_PROGRESS"):
                take_events()  # those of its last moments, after the read before the status
                break
            assert time.monotonic() - started < DEADLINE, f"{stack} still {status} after {DEADLINE} s"
            time.sleep(0.2)
        operation.status, operation.seconds = status, time.monotonic() - started
        return operation

    def outputs(self, stack: str) -> dict[str, str]:
        described = self.cf.describe_stacks(StackName=stack)["Stacks"][0]
        return {o["OutputKey"]: o["OutputValue"] for o in described.get("Outputs", [])}

    def service(self) -> dict[str, Any]:
        return dict(
            self.ecs.describe_services(cluster="car-rental-cluster", services=["car-rental-service"])["services"][0]
        )

    def target_health(self, group: str) -> list[str]:
        health = self.elbv2.describe_target_health(TargetGroupArn=group)["TargetHealthDescriptions"]
        return sorted(h["TargetHealth"]["State"] for h in health)


@dataclass
class Deployment:
    settings: Settings
    aws: Aws
    templates: dict[str, dict[str, Any]]
    parameters: dict[str, dict[str, str]]
    created: dict[str, Operation]
    seconds: float  # the five stacks, first create (image push and zip uploads included)
    docker: docker.DockerClient

    def template(self, stack: str) -> str:
        return json.dumps(self.templates[stack])

    @property
    def listener(self) -> str:
        return f"http://127.0.0.1:{self.settings.listener_ports[80]}"

    def fargate(self, logical_type: str) -> dict[str, Any]:
        """The properties of the Fargate template's only resource of a type (to edit)."""
        resources = self.templates[FARGATE]["Resources"]
        (spec,) = [r for r in resources.values() if r["Type"] == logical_type]
        return dict(spec["Properties"])

    def edit_fargate(self, logical_type: str, **changes: Any) -> None:
        resources = self.templates[FARGATE]["Resources"]
        (logical_id,) = [k for k, r in resources.items() if r["Type"] == logical_type]
        resources[logical_id]["Properties"].update(changes)


def synthesize(outdir: Path, registry: str) -> dict[str, dict[str, Any]]:
    context = {"registry": registry, "account": ACCOUNT_ID, "region": "us-east-1", "desired_count": 1}
    env = {**os.environ, "CDK_OUTDIR": str(outdir), "CDK_CONTEXT_JSON": json.dumps(context)}
    done = subprocess.run([sys.executable, str(REPO / "cdk" / "app.py")], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    return {name: json.loads((outdir / f"{name}.template.json").read_text()) for name in ORDER}


def build_app_image(client: docker.DockerClient, tag: str, version: str) -> None:
    """The tiny test app (answers /health and /version on $PORT) with VERSION baked in."""
    buffer = io.BytesIO()
    dockerfile = f'FROM {BASE}\nENV VERSION={version}\nCOPY app.py /app.py\nCMD ["python3", "/app.py"]\n'
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, text in (("Dockerfile", dockerfile), ("app.py", TEST_APP)):
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    buffer.seek(0)
    client.images.build(fileobj=buffer, custom_context=True, tag=tag, network_mode="host", rm=True)


def push(aws: Aws, client: docker.DockerClient, local: str, repository: str, tag: str) -> None:
    """docker push through the sandbox's ECR front with the token from GetAuthorizationToken."""
    data = aws.clients["ecr"].get_authorization_token()["authorizationData"][0]
    user, _, password = base64.b64decode(data["authorizationToken"]).decode().partition(":")
    remote = f"{aws.settings.registry_host}/{repository}"
    assert client.images.get(local).tag(remote, tag)
    errors = [
        chunk["error"]
        for chunk in client.api.push(
            remote, tag=tag, stream=True, decode=True, auth_config={"username": user, "password": password}
        )
        if "error" in chunk
    ]
    assert not errors, errors


def get(url: str, body: bytes | None = None, method: str = "GET") -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=body, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def report(operation: Operation) -> None:
    """The measured time of an update (shown with pytest -s)."""
    changes = ", ".join(c["ResourceChange"]["LogicalResourceId"] for c in operation.change_set["Changes"])
    print(f"\n{operation.stack} update ({changes}): {operation.status} in {operation.seconds:.1f} s")


def task_containers(deployment: Deployment) -> list[dict[str, Any]]:
    """The running task containers of this sandbox (the low-level list: no inspect, no race with removals)."""
    label = f"{LABEL}={deployment.settings.state_dir}"
    return list(deployment.docker.api.containers(filters={"label": label}))


def wait_until(check: Any, timeout: float = 60.0, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what or check}"
        time.sleep(0.25)


# == fixtures ===============================================================================================


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory, docker_engine: docker.DockerClient) -> Iterator[Settings]:
    path = private_sandbox_files(tmp_path_factory.mktemp("cfn-sandbox"), ecr=True)
    settings = load_settings(path)
    lifecycle.up(settings, path)
    yield settings
    lifecycle.down(settings)


@pytest.fixture(scope="module")
def deployment(
    sandbox: Settings, tmp_path_factory: pytest.TempPathFactory, docker_engine: docker.DockerClient
) -> Iterator[Deployment]:
    """The five stacks created through change sets, in dependency order, with a real image and real zips."""
    templates = synthesize(tmp_path_factory.mktemp("cdk.out"), sandbox.registry_host)
    aws = Aws(sandbox)
    local = f"sandbox-test/cfn-app:{os.getpid()}"
    build_app_image(docker_engine, local + "-v1", "v1")
    build_app_image(docker_engine, local + "-v2", "v2")
    started = time.monotonic()
    created = {name: aws.deploy(name, json.dumps(templates[name])) for name in (REGISTRY, DATA, AUTH)}
    registry = aws.outputs(REGISTRY)
    push(aws, docker_engine, local + "-v1", registry["RepositoryName"], "v1")
    keys = {}
    for function in ("login_handler", "health_handler"):
        package = package_function(REPO / "lambda" / function)
        aws.clients["s3"].put_object(Bucket=registry["ArtifactsBucketName"], Key=package.key, Body=package.zip_bytes)
        keys[function] = package.key
    parameters = {
        REGISTRY: {},
        DATA: {},
        AUTH: {},
        FARGATE: {"ImageTag": "v1"},
        API: {"LoginHandlerCodeKey": keys["login_handler"], "HealthHandlerCodeKey": keys["health_handler"]},
    }
    for name in (FARGATE, API):
        created[name] = aws.deploy(name, json.dumps(templates[name]), parameters[name])
    seconds = time.monotonic() - started
    yield Deployment(sandbox, aws, templates, parameters, created, seconds, docker_engine)
    remote = f"{sandbox.registry_host}/car-rental-backend"
    for tag in (local + "-v1", local + "-v2", remote + ":v1", remote + ":v2"):
        with contextlib.suppress(docker.errors.APIError):
            docker_engine.images.remove(tag, force=True)


# == 1. deploy through change sets ==========================================================================


def test_the_five_stacks_deploy_through_change_sets_in_dependency_order(deployment: Deployment) -> None:
    for name in ORDER:
        operation = deployment.created[name]
        assert operation.status == "CREATE_COMPLETE", [
            (e["LogicalResourceId"], e["ResourceStatus"], e.get("ResourceStatusReason")) for e in operation.events
        ]
        changes = [c["ResourceChange"] for c in operation.change_set["Changes"]]
        resources = deployment.templates[name]["Resources"]
        assert {c["LogicalResourceId"] for c in changes} == set(resources)
        assert {c["Action"] for c in changes} == {"Add"}
        assert all(c["ResourceType"] == resources[c["LogicalResourceId"]]["Type"] for c in changes)
    print(
        f"\nfive stacks created in {deployment.seconds:.1f} s (image push and zip uploads included): "
        + ", ".join(f"{n} {deployment.created[n].seconds:.1f} s" for n in ORDER)
    )


def test_every_output_is_there_and_exports_feed_the_imports(deployment: Deployment) -> None:
    aws = deployment.aws
    exports = {e["Name"]: e["Value"] for e in aws.cf.list_exports()["Exports"]}
    for name in ORDER:
        stack = aws.cf.describe_stacks(StackName=name)["Stacks"][0]
        outputs = {o["OutputKey"]: o for o in stack.get("Outputs", [])}
        declared = deployment.templates[name].get("Outputs", {})
        assert set(outputs) == set(declared), name
        for key, spec in declared.items():
            if "Export" in spec:
                assert outputs[key]["ExportName"] == spec["Export"]["Name"]
                assert exports[spec["Export"]["Name"]] == outputs[key]["OutputValue"]
            else:
                assert "ExportName" not in outputs[key], key  # moto named exports by matching values
    # ListImports names the stacks that import an export (every export here is CDK's, made for its importer), and
    # answers AWS's ValidationError for one nothing imports
    for export in exports:
        assert aws.cf.list_imports(ExportName=export)["Imports"], export
    policy = next(n for n in exports if n.startswith(f"{DATA}:ExportsOutputRefAppDataAccessPolicy"))
    assert aws.cf.list_imports(ExportName=policy)["Imports"] == [FARGATE]
    with pytest.raises(ClientError, match="Export 'nobody' is not imported by any stack"):
        aws.cf.list_imports(ExportName="nobody")
    data, auth = aws.outputs(DATA), aws.outputs(AUTH)
    definition = aws.ecs.describe_task_definition(taskDefinition=aws.service()["taskDefinition"])["taskDefinition"]
    environment = {e["name"]: e["value"] for e in definition["containerDefinitions"][0]["environment"]}
    assert environment["CARS_TABLE"] == data["CarsTableName"]
    assert environment["COGNITO_USER_POOL_ID"] == auth["UserPoolId"]
    assert environment["COGNITO_CLIENT_ID"] == auth["UserPoolClientId"]
    # the resources answer their own APIs
    assert data["CarsTableName"] in aws.clients["dynamodb"].list_tables()["TableNames"]
    pool = aws.clients["cognito-idp"].describe_user_pool(UserPoolId=auth["UserPoolId"])["UserPool"]
    assert pool["Policies"]["PasswordPolicy"]["MinimumLength"] == 12
    client = aws.clients["cognito-idp"].describe_user_pool_client(
        UserPoolId=auth["UserPoolId"], ClientId=auth["UserPoolClientId"]
    )["UserPoolClient"]
    assert "ALLOW_USER_PASSWORD_AUTH" in client["ExplicitAuthFlows"]
    assert (
        aws.clients["ecr"].describe_repositories(repositoryNames=["car-rental-backend"])["repositories"][0][
            "imageTagMutability"
        ]
        == "IMMUTABLE"
    )
    bucket = aws.outputs(REGISTRY)["ArtifactsBucketName"]
    assert aws.clients["s3"].get_bucket_versioning(Bucket=bucket)["Status"] == "Enabled"
    assert json.loads(aws.clients["s3"].get_bucket_policy(Bucket=bucket)["Policy"])["Statement"]
    api = aws.outputs(API)
    assert (
        aws.clients["lambda"].get_alias(FunctionName=api["LoginHandlerFunctionName"], Name="live")["AliasArn"]
        == api["LoginHandlerAliasArn"]
    )
    stage = aws.clients["apigateway"].get_stage(restApiId=api["ApiId"], stageName=api["ApiStageName"])
    assert stage["deploymentId"]


def test_stack_events_follow_each_resource_in_order(deployment: Deployment) -> None:
    for name in ORDER:
        operation = deployment.created[name]
        statuses: dict[str, list[str]] = {}
        for event in operation.events:
            statuses.setdefault(event["LogicalResourceId"], []).append(event["ResourceStatus"])
        assert statuses.pop(name) == ["CREATE_IN_PROGRESS", "CREATE_COMPLETE"]
        assert set(statuses) == set(deployment.templates[name]["Resources"])
        for logical_id, seen in statuses.items():
            assert seen[0] == "CREATE_IN_PROGRESS" and seen[-1] == "CREATE_COMPLETE", (logical_id, seen)
        assert operation.events[-1]["LogicalResourceId"] == name
        stamps = [e["Timestamp"] for e in operation.events]
        assert stamps == sorted(stamps)
    # the Fargate stack was followed while it ran: polls saw it in progress with some, not all, events
    fargate = deployment.created[FARGATE]
    in_progress = [count for status, count in fargate.polls if status == "CREATE_IN_PROGRESS"]
    assert in_progress and 0 < in_progress[-1] < len(fargate.events)
    service = [e for e in fargate.events if e["ResourceType"] == "AWS::ECS::Service"]
    assert service[-1]["ResourceStatus"] == "CREATE_COMPLETE"
    assert service[-1]["PhysicalResourceId"].endswith("/car-rental-service")


# == 2. the app runs ========================================================================================


def test_the_app_answers_health_through_the_alb_listener(deployment: Deployment) -> None:
    status, body = get(deployment.listener + "/health")
    assert status == 200 and json.loads(body)["version"] == "v1"
    aws = deployment.aws
    service = aws.service()
    assert service["runningCount"] == 1
    assert service["loadBalancers"][0]["targetGroupArn"] == aws.outputs(FARGATE)["TargetGroupArn"]
    assert service["deploymentConfiguration"]["deploymentCircuitBreaker"] == {"enable": True, "rollback": True}
    assert service["healthCheckGracePeriodSeconds"] == 10
    assert aws.target_health(aws.outputs(FARGATE)["TargetGroupArn"]) == ["healthy"]


def test_a_login_through_the_api_stage_reaches_login_handler(deployment: Deployment) -> None:
    aws = deployment.aws
    api, auth = aws.outputs(API), aws.outputs(AUTH)
    base = invoke_url(deployment.settings, api["ApiId"], api["ApiStageName"])
    status, body = get(base + "/auth/login", b"{not json", "POST")
    assert status == 400 and json.loads(body)["code"] == "bad_request"
    idp = aws.clients["cognito-idp"]
    idp.admin_create_user(UserPoolId=auth["UserPoolId"], Username="alice@example.com", MessageAction="SUPPRESS")
    idp.admin_set_user_password(
        UserPoolId=auth["UserPoolId"], Username="alice@example.com", Password=PASSWORD, Permanent=True
    )
    body_ok = json.dumps({"username": "alice@example.com", "password": PASSWORD}).encode()
    status, body = get(base + "/auth/login", body_ok, "POST")
    assert status == 200, body
    tokens = json.loads(body)
    payload = tokens["id_token"].split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    assert claims["iss"] == auth["UserPoolIssuer"]
    status, body = get(base + "/health")
    assert status == 200 and json.loads(body)["status"] == "ok"


# == 3. updates change the running thing ====================================================================


def test_a_change_set_with_nothing_new_fails_with_aws_reason(deployment: Deployment) -> None:
    aws = deployment.aws
    for name in (REGISTRY, FARGATE):  # without and with parameters
        change_set_name, described = aws.change_set(
            name, deployment.template(name), deployment.parameters[name], "UPDATE"
        )
        assert described["Status"] == "FAILED"
        assert described["ExecutionStatus"] == "UNAVAILABLE"
        assert described["StatusReason"] == NO_CHANGES
        with pytest.raises(ClientError, match="InvalidChangeSetStatus"):
            aws.cf.execute_change_set(StackName=name, ChangeSetName=change_set_name)
        aws.cf.delete_change_set(StackName=name, ChangeSetName=change_set_name)


def test_asked_for_property_values_a_change_set_gives_each_changed_value(deployment: Deployment) -> None:
    """IncludePropertyValues: a detail per changed value, with its path and the values before and after, resolved
    (a parameter's new value in the image; a reference to a resource being replaced is not known before the
    update); without it, a detail per property, as before."""
    aws = deployment.aws
    template = copy.deepcopy(deployment.templates[FARGATE])
    resources = template["Resources"]
    service = next(k for k, r in resources.items() if r["Type"] == "AWS::ECS::Service")
    taskdef = next(k for k, r in resources.items() if r["Type"] == "AWS::ECS::TaskDefinition")
    count = int(resources[service]["Properties"]["DesiredCount"])
    resources[service]["Properties"]["DesiredCount"] = count + 3
    tag = deployment.parameters[FARGATE]["ImageTag"]
    name, plain = aws.change_set(FARGATE, json.dumps(template), {"ImageTag": "values-test"}, "UPDATE")
    try:
        described = aws.cf.describe_change_set(StackName=FARGATE, ChangeSetName=name, IncludePropertyValues=True)
    finally:
        aws.cf.delete_change_set(StackName=FARGATE, ChangeSetName=name)

    def details(answer: dict[str, Any], logical_id: str) -> list[dict[str, Any]]:
        (change,) = [
            c["ResourceChange"] for c in answer["Changes"] if c["ResourceChange"]["LogicalResourceId"] == logical_id
        ]
        return list(change["Details"])

    assert [(d["Target"]["Name"], d["ChangeSource"]) for d in details(plain, service)] == [
        ("DesiredCount", "DirectModification"),
        ("TaskDefinition", "ResourceReference"),
    ]
    assert all("Path" not in d["Target"] for d in details(plain, service))
    count_detail, taskdef_detail = details(described, service)
    assert count_detail["Target"] == {
        "Attribute": "Properties",
        "Name": "DesiredCount",
        "RequiresRecreation": "Never",
        "Path": "/Properties/DesiredCount",
        "BeforeValue": str(count),
        "AfterValue": str(count + 3),
        "AttributeChangeType": "Modify",
    }
    assert taskdef_detail["Target"]["Path"] == "/Properties/TaskDefinition"
    assert ":task-definition/" in taskdef_detail["Target"]["BeforeValue"]
    assert "AfterValue" not in taskdef_detail["Target"]  # the new revision is made by the update
    assert (taskdef_detail["ChangeSource"], taskdef_detail["CausingEntity"]) == ("ResourceReference", taskdef)
    (image,) = [d for d in details(described, taskdef) if d["Target"]["Path"].endswith("/Image")]
    assert image["Target"]["Path"] == "/Properties/ContainerDefinitions/0/Image"
    assert image["Target"]["BeforeValue"].endswith(f"/car-rental-backend:{tag}")
    assert image["Target"]["AfterValue"].endswith("/car-rental-backend:values-test")
    assert (image["ChangeSource"], image["CausingEntity"]) == ("ParameterReference", "ImageTag")
    assert image["Target"]["RequiresRecreation"] == "Always"


def test_deleting_a_change_set_by_name_succeeds_while_its_stack_exists(deployment: Deployment) -> None:
    # as on AWS, where the CDK CLI counts on it: it deletes "cdk-deploy-change-set" before every deploy
    aws = deployment.aws
    aws.cf.delete_change_set(StackName=REGISTRY, ChangeSetName="cdk-deploy-change-set")
    with pytest.raises(ClientError):  # no stack of that name
        aws.cf.delete_change_set(StackName="CarRentalNoSuchStack", ChangeSetName="cdk-deploy-change-set")
    with pytest.raises(ClientError, match="ChangeSetNotFound"):  # an ARN names one change set: it must exist
        arn = f"arn:aws:cloudformation:us-east-1:{ACCOUNT_ID}:changeSet/cdk-deploy-change-set/{'0' * 36}"
        aws.cf.delete_change_set(ChangeSetName=arn)


def test_a_desired_count_change_scales_the_containers(deployment: Deployment) -> None:
    aws = deployment.aws
    deployment.edit_fargate("AWS::ECS::Service", DesiredCount=2)
    operation = aws.deploy(FARGATE, deployment.template(FARGATE), deployment.parameters[FARGATE])
    report(operation)
    (change,) = [c["ResourceChange"] for c in operation.change_set["Changes"]]
    assert (change["Action"], change["ResourceType"], change["Replacement"]) == ("Modify", "AWS::ECS::Service", "False")
    assert [d["Target"]["Name"] for d in change["Details"]] == ["DesiredCount"]
    assert change["PhysicalResourceId"].endswith("/car-rental-service")
    assert operation.status == "UPDATE_COMPLETE"
    # the stack completed once the ECS deployment had: two tasks run, both targets healthy
    service = aws.service()
    assert (service["desiredCount"], service["runningCount"]) == (2, 2)
    running = aws.ecs.list_tasks(
        cluster="car-rental-cluster", serviceName="car-rental-service", desiredStatus="RUNNING"
    )
    assert len(running["taskArns"]) == 2
    assert aws.target_health(aws.outputs(FARGATE)["TargetGroupArn"]) == ["healthy", "healthy"]
    assert len(task_containers(deployment)) == 2


class Probe(BaseHTTPRequestHandler):
    hits: ClassVar[list[float]] = []

    def log_message(self, *args: Any) -> None:
        return

    def do_GET(self) -> None:
        type(self).hits.append(time.monotonic())
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()


def test_a_health_check_change_reaches_the_target_group_and_its_checker(deployment: Deployment) -> None:
    aws = deployment.aws
    group = aws.outputs(FARGATE)["TargetGroupArn"]
    before = aws.elbv2.describe_target_groups(TargetGroupArns=[group])["TargetGroups"][0]
    assert before["HealthCheckIntervalSeconds"] == 5
    deployment.edit_fargate("AWS::ElasticLoadBalancingV2::TargetGroup", HealthCheckIntervalSeconds=8)
    operation = aws.deploy(FARGATE, deployment.template(FARGATE), deployment.parameters[FARGATE])
    report(operation)
    (change,) = [c["ResourceChange"] for c in operation.change_set["Changes"]]
    assert change["LogicalResourceId"].startswith("LoadBalancerHttpBackendGroup") and change["Replacement"] == "False"
    assert operation.status == "UPDATE_COMPLETE"
    after = aws.elbv2.describe_target_groups(TargetGroupArns=[group])["TargetGroups"][0]
    assert after["HealthCheckIntervalSeconds"] == 8 and after["TargetGroupArn"] == group
    # the checker uses it: a probe target is checked right away, then 8 s later (it was 5)
    Probe.hits = []
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), Probe)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    aws.elbv2.register_targets(TargetGroupArn=group, Targets=[{"Id": "127.0.0.1", "Port": port}])
    target = {"Id": "127.0.0.1", "Port": port}

    def state() -> str:
        found = aws.elbv2.describe_target_health(TargetGroupArn=group, Targets=[target])["TargetHealthDescriptions"]
        return str(found[0]["TargetHealth"]["State"])

    try:
        # as on AWS, a newly registered target is healthy after ONE passing check (the threshold, 2 here, is for
        # a target coming back from unhealthy)
        wait_until(lambda: state() == "healthy", timeout=5, what="the probe healthy after its first check")
        assert len(Probe.hits) == 1
        wait_until(lambda: len(Probe.hits) >= 2, timeout=20, what="two health checks of the probe")
    finally:
        aws.elbv2.deregister_targets(TargetGroupArn=group, Targets=[{"Id": "127.0.0.1", "Port": port}])
        server.shutdown()
    gap = Probe.hits[1] - Probe.hits[0]
    assert 7.8 <= gap <= 9.5, gap


def test_an_image_tag_change_rolls_the_service_to_a_new_task_definition(deployment: Deployment) -> None:
    aws = deployment.aws
    push(aws, deployment.docker, f"sandbox-test/cfn-app:{os.getpid()}-v2", "car-rental-backend", "v2")
    old = aws.service()["taskDefinition"]
    deployment.parameters[FARGATE] = {"ImageTag": "v2"}
    operation = aws.deploy(FARGATE, deployment.template(FARGATE), deployment.parameters[FARGATE])
    report(operation)
    changes = {c["ResourceChange"]["ResourceType"]: c["ResourceChange"] for c in operation.change_set["Changes"]}
    assert set(changes) == {"AWS::ECS::TaskDefinition", "AWS::ECS::Service"}
    assert changes["AWS::ECS::TaskDefinition"]["Replacement"] == "True"
    assert changes["AWS::ECS::TaskDefinition"]["PolicyAction"] == "ReplaceAndDelete"
    assert changes["AWS::ECS::TaskDefinition"]["Details"][0]["ChangeSource"] == "ParameterReference"
    assert changes["AWS::ECS::Service"]["Replacement"] == "False"
    assert changes["AWS::ECS::Service"]["Details"][0]["ChangeSource"] == "ResourceReference"
    assert operation.status == "UPDATE_COMPLETE"
    statuses = [(e["ResourceType"], e["ResourceStatus"]) for e in operation.events]
    assert ("AWS::ECS::TaskDefinition", "DELETE_COMPLETE") in statuses  # the old revision, in the cleanup
    service = aws.service()
    assert service["taskDefinition"] != old
    assert [(d["status"], d["rolloutState"]) for d in service["deployments"]] == [("PRIMARY", "COMPLETED")]
    image = aws.ecs.describe_task_definition(taskDefinition=service["taskDefinition"])["taskDefinition"][
        "containerDefinitions"
    ][0]["image"]
    assert image == f"{deployment.settings.registry_host}/car-rental-backend:v2"
    assert aws.ecs.describe_task_definition(taskDefinition=old)["taskDefinition"]["status"] == "INACTIVE"
    assert {json.loads(get(deployment.listener + "/version")[1])["version"] for _ in range(10)} == {"v2"}


def test_a_failed_update_rolls_back_with_the_resource_reason(deployment: Deployment) -> None:
    aws = deployment.aws
    before = aws.service()["taskDefinition"]
    operation = aws.deploy(FARGATE, deployment.template(FARGATE), {"ImageTag": "no-such-image"})
    report(operation)
    assert operation.status == "UPDATE_ROLLBACK_COMPLETE"
    failed = [e for e in operation.events if e["ResourceStatus"].endswith("_FAILED")]
    assert [(e["ResourceType"], e["ResourceStatus"]) for e in failed] == [("AWS::ECS::Service", "UPDATE_FAILED")]
    assert "Circuit Breaker" in failed[0]["ResourceStatusReason"]
    stack = aws.cf.describe_stacks(StackName=FARGATE)["Stacks"][0]
    assert stack["Parameters"] == [{"ParameterKey": "ImageTag", "ParameterValue": "v2"}]
    assert aws.service()["taskDefinition"] == before
    assert json.loads(get(deployment.listener + "/version")[1])["version"] == "v2"


def test_in_express_mode_an_update_ends_once_applied_and_a_failed_rollout_does_not_fail_it(
    deployment: Deployment,
) -> None:
    """DeploymentConfig Mode EXPRESS: the stack is UPDATE_COMPLETE once the service's update is applied, before its
    deployment is done, each resource's event saying so; a rollout that fails afterwards (an image the registry does
    not have) is the circuit breaker's to undo, the stack staying on the new template. Deployed back in the standard
    mode after, for the tests that follow."""
    aws = deployment.aws
    before = aws.service()["taskDefinition"]
    express = {"DeploymentConfig": {"Mode": "EXPRESS", "DisableRollback": False}}
    operation = aws.deploy(FARGATE, deployment.template(FARGATE), {"ImageTag": "no-such-image"}, **express)
    report(operation)
    assert operation.status == "UPDATE_COMPLETE"
    done = [
        e
        for e in operation.events
        if e["ResourceStatus"] == "UPDATE_COMPLETE" and e["ResourceType"] != "AWS::CloudFormation::Stack"
    ]
    assert {e["ResourceType"] for e in done} == {"AWS::ECS::TaskDefinition", "AWS::ECS::Service"}
    assert {e["ResourceStatusReason"] for e in done} == {
        "Resource operation completed using Express Mode. It may continue becoming available in the background."
    }
    rolling = aws.service()
    assert rolling["taskDefinition"] != before
    assert [d["rolloutState"] for d in rolling["deployments"] if d["status"] == "PRIMARY"] == ["IN_PROGRESS"]
    wait_until(lambda: aws.service()["taskDefinition"] == before, 120, "the circuit breaker putting the service back")
    stack = aws.cf.describe_stacks(StackName=FARGATE)["Stacks"][0]
    assert (stack["StackStatus"], stack["Parameters"]) == (
        "UPDATE_COMPLETE",
        [{"ParameterKey": "ImageTag", "ParameterValue": "no-such-image"}],
    )
    with pytest.raises(ClientError, match=r"deploymentConfig\.mode"):
        aws.change_set(
            FARGATE, deployment.template(FARGATE), {"ImageTag": "v2"}, "UPDATE", DeploymentConfig={"Mode": "FAST"}
        )
    back = aws.deploy(FARGATE, deployment.template(FARGATE), deployment.parameters[FARGATE])
    assert back.status == "UPDATE_COMPLETE"
    assert not [e for e in back.events if "Express" in e.get("ResourceStatusReason", "")]
    assert [d["rolloutState"] for d in aws.service()["deployments"] if d["status"] == "PRIMARY"] == ["COMPLETED"]
    assert json.loads(get(deployment.listener + "/version")[1])["version"] == "v2"


def test_a_code_key_change_publishes_a_version_and_moves_the_alias(deployment: Deployment) -> None:
    aws = deployment.aws
    api = aws.outputs(API)
    package = package_function(REPO / "lambda" / "health_handler")
    buffer = io.BytesIO(package.zip_bytes)
    with zipfile.ZipFile(buffer, "a") as archive:  # other bytes, same behaviour: a new content-hash key
        archive.writestr("marker.txt", "second upload")
    key = f"lambda/health_handler/{hashlib.sha256(buffer.getvalue()).hexdigest()}.zip"
    aws.clients["s3"].put_object(Bucket=aws.outputs(REGISTRY)["ArtifactsBucketName"], Key=key, Body=buffer.getvalue())
    deployment.parameters[API] = {**deployment.parameters[API], "HealthHandlerCodeKey": key}
    operation = aws.deploy(API, deployment.template(API), deployment.parameters[API])
    report(operation)
    assert operation.status == "UPDATE_COMPLETE"
    changes = {c["ResourceChange"]["LogicalResourceId"]: c["ResourceChange"] for c in operation.change_set["Changes"]}
    version = next(k for k in changes if k.startswith("HealthHandlerCurrentVersion"))
    assert changes[version]["Replacement"] == "True"
    assert changes[version]["PolicyAction"] == "ReplaceAndRetain"  # UpdateReplacePolicy Retain
    assert {k for k in changes if not k.startswith("HealthHandler")} == set()
    skipped = [e for e in operation.events if e["ResourceStatus"] == "DELETE_SKIPPED"]
    assert [e["LogicalResourceId"] for e in skipped] == [version]  # the old version is retained
    alias = aws.clients["lambda"].get_alias(FunctionName=api["HealthHandlerFunctionName"], Name="live")
    assert alias["FunctionVersion"] == "2"
    status, body = get(invoke_url(deployment.settings, api["ApiId"], api["ApiStageName"]) + "/health")
    assert status == 200 and json.loads(body)["function_version"] == "2"


MOCK_API = {
    "Resources": {
        "Api": {"Type": "AWS::ApiGateway::RestApi", "Properties": {"Name": "mock-api"}},
        "Ping": {
            "Type": "AWS::ApiGateway::Resource",
            "Properties": {
                "RestApiId": {"Ref": "Api"},
                "ParentId": {"Fn::GetAtt": ["Api", "RootResourceId"]},
                "PathPart": "ping",
            },
        },
        "PingGet": {
            "Type": "AWS::ApiGateway::Method",
            "Properties": {
                "RestApiId": {"Ref": "Api"},
                "ResourceId": {"Ref": "Ping"},
                "HttpMethod": "GET",
                "AuthorizationType": "NONE",
                "Integration": {
                    "Type": "MOCK",
                    "RequestTemplates": {"application/json": '{"statusCode": 200}'},
                    "IntegrationResponses": [
                        {"StatusCode": "200", "ResponseTemplates": {"application/json": '{"pong": true}'}}
                    ],
                },
                "MethodResponses": [{"StatusCode": "200"}],
            },
        },
        "Deployment": {
            "Type": "AWS::ApiGateway::Deployment",
            "DependsOn": ["PingGet"],
            "Properties": {"RestApiId": {"Ref": "Api"}},
        },
        "Stage": {
            "Type": "AWS::ApiGateway::Stage",
            "Properties": {"RestApiId": {"Ref": "Api"}, "DeploymentId": {"Ref": "Deployment"}, "StageName": "v1"},
        },
    },
    "Outputs": {"ApiId": {"Value": {"Ref": "Api"}}},
}


def test_a_mock_method_from_a_template_answers_on_its_stage(deployment: Deployment) -> None:
    aws = deployment.aws
    operation = aws.deploy("MockApi", json.dumps(MOCK_API))
    assert operation.status == "CREATE_COMPLETE", operation.events
    status, body = get(invoke_url(deployment.settings, aws.outputs("MockApi")["ApiId"], "v1") + "/ping")
    assert (status, json.loads(body)) == (200, {"pong": True})
    aws.cf.delete_stack(StackName="MockApi")
    wait_until(lambda: not any(s["StackName"] == "MockApi" for s in aws.cf.describe_stacks()["Stacks"]), what="delete")
    assert "mock-api" not in [api["name"] for api in aws.clients["apigateway"].get_rest_apis()["items"]]


def test_data_and_auth_updates_apply_in_place(deployment: Deployment) -> None:
    aws = deployment.aws
    before = {name: aws.outputs(name) for name in (DATA, AUTH)}
    resources = deployment.templates[AUTH]["Resources"]
    pool = next(r for r in resources.values() if r["Type"] == "AWS::Cognito::UserPool")
    pool["Properties"]["Policies"]["PasswordPolicy"]["MinimumLength"] = 14
    operation = aws.deploy(AUTH, deployment.template(AUTH))
    report(operation)
    assert operation.status == "UPDATE_COMPLETE"
    pool_id = before[AUTH]["UserPoolId"]
    described = aws.clients["cognito-idp"].describe_user_pool(UserPoolId=pool_id)["UserPool"]
    assert described["Policies"]["PasswordPolicy"]["MinimumLength"] == 14
    resources = deployment.templates[DATA]["Resources"]
    policy = next(r for r in resources.values() if r["Type"] == "AWS::IAM::ManagedPolicy")
    statement = {"Effect": "Allow", "Action": "dynamodb:ListTables", "Resource": "*"}
    policy["Properties"]["PolicyDocument"]["Statement"].append(statement)
    operation = aws.deploy(DATA, deployment.template(DATA))
    report(operation)
    assert operation.status == "UPDATE_COMPLETE"
    arn = before[DATA]["ExportsOutputRefAppDataAccessPolicyCB15CDFE8E49A6E4"]
    iam = aws.clients["iam"]
    version = iam.get_policy(PolicyArn=arn)["Policy"]["DefaultVersionId"]
    document = iam.get_policy_version(PolicyArn=arn, VersionId=version)["PolicyVersion"]["Document"]
    document = json.loads(document) if isinstance(document, str) else document
    assert statement in document["Statement"]
    assert {name: aws.outputs(name) for name in (DATA, AUTH)} == before  # same resources, same exports


def test_an_update_that_would_change_an_export_in_use_rolls_back(deployment: Deployment) -> None:
    aws = deployment.aws
    before = aws.outputs(DATA)
    template = copy.deepcopy(deployment.templates[DATA])
    cars = next(k for k, r in template["Resources"].items() if k.startswith("CarsTable"))
    template["Resources"][cars]["Properties"]["TableName"] = "cars-renamed"  # a replacement: a new name
    operation = aws.deploy(DATA, json.dumps(template))
    assert operation.status == "UPDATE_ROLLBACK_COMPLETE"
    changes = {c["ResourceChange"]["LogicalResourceId"]: c["ResourceChange"] for c in operation.change_set["Changes"]}
    assert changes[cars]["Replacement"] == "True"
    policy = next(k for k in changes if k.startswith("AppDataAccessPolicy"))  # it names the table's ARN
    assert changes[policy]["Details"][0]["ChangeSource"] == "ResourceReference"
    reasons = [e.get("ResourceStatusReason") or "" for e in operation.events]
    assert any("cannot be updated as it is in use by CarRentalFargateStack" in r for r in reasons), reasons
    assert aws.outputs(DATA) == before
    assert "cars-renamed" not in aws.clients["dynamodb"].list_tables()["TableNames"]


# == 4. outputs after updates ===============================================================================


def test_every_output_survives_the_updates(deployment: Deployment) -> None:
    aws = deployment.aws
    for name in ORDER:
        outputs = aws.outputs(name)
        assert set(outputs) == set(deployment.templates[name]["Outputs"]), name
    exports = {e["Name"] for e in aws.cf.list_exports()["Exports"]}
    declared = {
        spec["Export"]["Name"]
        for name in ORDER
        for spec in deployment.templates[name]["Outputs"].values()
        if "Export" in spec
    }
    assert exports == declared


# == odds and ends on a stack of its own ====================================================================

SMALL = {
    "Parameters": {"Key": {"Type": "String", "AllowedPattern": "^[a-z/]+\\.zip$"}},
    "Resources": {
        "Bucket": {"Type": "AWS::S3::Bucket"},
        "Harmless": {"Type": "AWS::Vendor::Unknown", "Properties": {"Anything": 1}},
        "Role": {
            "Type": "AWS::IAM::Role",
            "Properties": {
                "AssumeRolePolicyDocument": {
                    "Statement": [
                        {
                            "Action": "sts:AssumeRole",
                            "Effect": "Allow",
                            "Principal": {"Service": "lambda.amazonaws.com"},
                        }
                    ]
                }
            },
        },
        "Function": {
            "Type": "AWS::Lambda::Function",
            "DependsOn": ["Bucket"],
            "Properties": {
                "Code": {"S3Bucket": {"Ref": "Bucket"}, "S3Key": {"Ref": "Key"}},
                "Handler": "handler.handler",
                "Runtime": "python3.11",
                "Role": {"Fn::GetAtt": ["Role", "Arn"]},
            },
        },
    },
    "Outputs": {"BucketName": {"Value": {"Ref": "Bucket"}}},
}


def test_create_change_sets_are_validated_as_on_aws(deployment: Deployment) -> None:
    cf = deployment.aws.cf
    body = json.dumps(SMALL)
    with pytest.raises(ClientError, match="InsufficientCapabilities"):
        cf.create_change_set(
            StackName="Small",
            ChangeSetName="a",
            ChangeSetType="CREATE",
            TemplateBody=body,
            Parameters=[{"ParameterKey": "Key", "ParameterValue": "x.zip"}],
        )
    with pytest.raises(ClientError, match="must match pattern"):
        deployment.aws.change_set("Small", body, {"Key": "NOT OK"}, "CREATE")
    with pytest.raises(ClientError, match=r"Parameters: \[Key\] must have values"):
        deployment.aws.change_set("Small", body, {}, "CREATE")
    broken = copy.deepcopy(SMALL)
    broken["Resources"]["Bucket"]["DependsOn"] = ["Nowhere"]
    with pytest.raises(ClientError, match="Unresolved resource dependencies"):
        deployment.aws.change_set("Small", json.dumps(broken), {"Key": "x.zip"}, "CREATE")


def test_a_template_too_big_to_send_inline_is_read_from_the_artifacts_bucket(deployment: Deployment) -> None:
    """As deploykit hands over a template over 51,200 bytes (deploykit.stack_chain.template_url): put in the
    artifacts bucket, named by a path-style TemplateURL; the sandbox's CloudFormation reads it from its S3."""
    aws = deployment.aws
    note = "a note a big stack carries in its metadata " * 40
    big = {"Resources": {f"Topic{i}": {"Type": "AWS::SNS::Topic", "Metadata": {"note": note}} for i in range(40)}}
    body = json.dumps(big, separators=(",", ":"))
    assert len(body) > 51_200
    bucket, key = aws.outputs(REGISTRY)["ArtifactsBucketName"], "deploykit/cfn/Big/template.json"
    aws.clients["s3"].put_object(Bucket=bucket, Key=key, Body=body.encode())
    aws.cf.create_change_set(
        StackName="Big",
        ChangeSetName="big-1",
        ChangeSetType="CREATE",
        TemplateURL=f"https://s3.us-east-1.amazonaws.com/{bucket}/{key}",
    )
    described = aws.cf.describe_change_set(StackName="Big", ChangeSetName="big-1")
    assert described["Status"] == "CREATE_COMPLETE" and len(described["Changes"]) == 40
    aws.cf.execute_change_set(StackName="Big", ChangeSetName="big-1")
    status = wait_until(
        lambda: (
            (s := aws.cf.describe_stacks(StackName="Big")["Stacks"][0]["StackStatus"]) != "CREATE_IN_PROGRESS" and s
        ),
        what="the big stack",
    )
    assert status == "CREATE_COMPLETE"
    assert len(aws.cf.describe_stack_resources(StackName="Big")["StackResources"]) == 40
    aws.cf.delete_stack(StackName="Big")


def test_a_failed_create_rolls_back_and_a_harmless_unknown_type_does_not_fail(deployment: Deployment) -> None:
    aws = deployment.aws
    operation = aws.deploy("Small", json.dumps(SMALL), {"Key": "no/such.zip"})
    assert operation.status == "ROLLBACK_COMPLETE"
    by_resource = {(e["LogicalResourceId"], e["ResourceStatus"]): e for e in operation.events}
    assert ("Harmless", "CREATE_COMPLETE") in by_resource
    assert "NoSuchKey" in by_resource[("Function", "CREATE_FAILED")]["ResourceStatusReason"]
    assert ("Bucket", "DELETE_COMPLETE") in by_resource
    reason = by_resource[("Small", "ROLLBACK_IN_PROGRESS")]["ResourceStatusReason"]
    assert reason == "The following resource(s) failed to create: [Function]. Rollback requested by user."
    aws.cf.delete_stack(StackName="Small")
    wait_until(lambda: aws.cf.list_stacks(StackStatusFilter=["DELETE_COMPLETE"])["StackSummaries"], what="delete")


def test_an_ssm_parameter_with_tags_is_made_updated_in_place_and_deleted_with_its_stack(
    deployment: Deployment,
) -> None:
    """AWS::SSM::Parameter takes its Tags as a map (as the CDK writes them), where moto's model failed the stack; a
    new value or tags update it in place (a new version), Fn::GetAtt Value answers, and the stack's delete takes it."""
    aws, ssm = deployment.aws, deployment.aws.clients["ssm"]

    def template(value: str, tags: dict[str, str]) -> str:
        parameter = {"Name": "/car-rental/partner-key", "Type": "String", "Value": value, "Tags": tags}
        return json.dumps(
            {
                "Resources": {"Key": {"Type": "AWS::SSM::Parameter", "Properties": parameter}},
                "Outputs": {"Value": {"Value": {"Fn::GetAtt": ["Key", "Value"]}}},
            }
        )

    def tags() -> dict[str, str]:
        listed = ssm.list_tags_for_resource(ResourceType="Parameter", ResourceId="/car-rental/partner-key")
        return {t["Key"]: t["Value"] for t in listed["TagList"]}

    assert aws.deploy("Params", template("k1", {"Project": "car-rental", "Owner": "a"})).status == "CREATE_COMPLETE"
    found = ssm.get_parameter(Name="/car-rental/partner-key")["Parameter"]
    assert (found["Value"], found["Version"]) == ("k1", 1) and tags() == {"Project": "car-rental", "Owner": "a"}
    assert aws.outputs("Params") == {"Value": "k1"}
    assert aws.deploy("Params", template("k2", {"Project": "car-rental"})).status == "UPDATE_COMPLETE"
    found = ssm.get_parameter(Name="/car-rental/partner-key")["Parameter"]
    assert (found["Value"], found["Version"]) == ("k2", 2) and tags() == {"Project": "car-rental"}
    assert aws.outputs("Params") == {"Value": "k2"}
    aws.cf.delete_stack(StackName="Params")
    wait_until(
        lambda: not ssm.get_parameters(Names=["/car-rental/partner-key"])["Parameters"], what="the parameter deleted"
    )


def test_an_alarm_is_made_evaluated_changed_in_place_and_deleted_with_its_stack(deployment: Deployment) -> None:
    """AWS::CloudWatch::Alarm (a team's alarms in the CDK app) is a real alarm of the sandbox's CloudWatch, which
    evaluates it; a new threshold changes it in place, its state kept; the stack's delete takes it."""
    aws, cloudwatch = deployment.aws, deployment.aws.clients["cloudwatch"]

    def template(threshold: int) -> str:
        alarm = {
            "AlarmName": "car-rental-orders-failing",
            "Namespace": "CarRental",
            "MetricName": "OrdersFailed",
            "Statistic": "Sum",
            "Period": 10,
            "EvaluationPeriods": 1,
            "Threshold": threshold,
            "ComparisonOperator": "GreaterThanOrEqualToThreshold",
            "TreatMissingData": "notBreaching",
        }
        return json.dumps(
            {
                "Resources": {"Orders": {"Type": "AWS::CloudWatch::Alarm", "Properties": alarm}},
                "Outputs": {"Name": {"Value": {"Ref": "Orders"}}, "Arn": {"Value": {"Fn::GetAtt": ["Orders", "Arn"]}}},
            }
        )

    def alarm() -> dict[str, Any]:
        return dict(cloudwatch.describe_alarms(AlarmNames=["car-rental-orders-failing"])["MetricAlarms"][0])

    assert aws.deploy("Alarms", template(3)).status == "CREATE_COMPLETE"
    outputs = aws.outputs("Alarms")
    assert outputs["Name"] == "car-rental-orders-failing" and outputs["Arn"] == alarm()["AlarmArn"]
    cloudwatch.put_metric_data(Namespace="CarRental", MetricData=[{"MetricName": "OrdersFailed", "Value": 5}])
    wait_until(lambda: alarm()["StateValue"] == "ALARM", what="the alarm evaluated")
    went = alarm()["StateUpdatedTimestamp"]
    assert aws.deploy("Alarms", template(4)).status == "UPDATE_COMPLETE"
    changed = alarm()
    assert (changed["Threshold"], changed["StateValue"], changed["StateUpdatedTimestamp"]) == (4.0, "ALARM", went)
    aws.cf.delete_stack(StackName="Alarms")
    wait_until(
        lambda: not cloudwatch.describe_alarms(AlarmNames=["car-rental-orders-failing"])["MetricAlarms"],
        what="the alarm deleted",
    )


def test_a_stack_sends_its_events_to_the_topics_its_change_set_names_until_one_takes_them_off(
    deployment: Deployment,
) -> None:
    """stack_notifications: the change set's NotificationARNs are the stack's once executed, and every event of the
    stack and its resources goes there; a change of them alone is a change, an empty list takes them off, a change set
    naming none leaves them; a topic that is not there is refused."""
    aws, sns, sqs = deployment.aws, deployment.aws.clients["sns"], deployment.aws.clients["sqs"]
    topic = sns.create_topic(Name="deploy-events")["TopicArn"]
    queue = sqs.create_queue(QueueName="deploy-events-inbox")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=queue_arn, Attributes={"RawMessageDelivery": "true"})

    def template(value: str) -> str:
        parameter = {"Type": "String", "Value": value}
        return json.dumps({"Resources": {"Note": {"Type": "AWS::SSM::Parameter", "Properties": parameter}}})

    def received() -> list[str]:
        messages: list[str] = []
        while batch := sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10).get("Messages", []):
            messages += [m["Body"] for m in batch]
            sqs.delete_message_batch(
                QueueUrl=queue,
                Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(batch)],
            )
        return messages

    def topics() -> list[str]:
        return list(aws.cf.describe_stacks(StackName="Noted")["Stacks"][0].get("NotificationARNs", []))

    assert aws.deploy("Noted", template("a"), NotificationARNs=[topic]).status == "CREATE_COMPLETE"
    assert topics() == [topic]
    told = [m for m in received() if "StackName='Noted'" in m]
    assert any("LogicalResourceId='Note'" in m and "ResourceStatus='CREATE_COMPLETE'" in m for m in told)
    assert any("LogicalResourceId='Noted'" in m and "ResourceStatus='CREATE_COMPLETE'" in m for m in told)

    _, same = aws.change_set("Noted", template("a"), {}, "UPDATE", NotificationARNs=[topic])
    assert same["StatusReason"] == NO_CHANGES
    _, unnamed = aws.change_set("Noted", template("a"), {}, "UPDATE")
    assert unnamed["StatusReason"] == NO_CHANGES
    assert aws.deploy("Noted", template("b")).status == "UPDATE_COMPLETE"  # none named: the stack keeps its topic
    assert topics() == [topic]
    assert any("ResourceStatus='UPDATE_COMPLETE'" in m for m in received())

    taken_off = aws.deploy("Noted", template("b"), NotificationARNs=[])  # the topics alone: a change
    assert taken_off.status == "UPDATE_COMPLETE" and taken_off.change_set["Changes"] == []
    assert topics() == []
    assert aws.deploy("Noted", template("c")).status == "UPDATE_COMPLETE"
    assert not [m for m in received() if "ResourceStatus='UPDATE_COMPLETE'" in m]

    missing = topic.replace("deploy-events", "no-such-topic")
    with pytest.raises(ClientError, match="no-such-topic"):
        aws.change_set("Noted", template("d"), {}, "UPDATE", NotificationARNs=[missing])
    aws.cf.delete_stack(StackName="Noted")


def test_a_stack_acts_with_the_service_role_an_operation_names_and_keeps_it_for_the_next(
    deployment: Deployment,
) -> None:
    """service_roles: a role that is not there, or does not trust CloudFormation, is refused with AWS's words; one a
    change set names is the stack's, used by the operations naming none; once it is gone they are refused, and a
    delete naming another role works."""
    aws, iam = deployment.aws, deployment.aws.clients["iam"]
    trust = {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Principal": {"Service": "cloudformation.amazonaws.com"}, "Action": "sts:AssumeRole"}
        ],
    }

    def role(name: str, service: str = "cloudformation") -> str:
        policy = json.dumps(trust).replace("cloudformation.amazonaws.com", f"{service}.amazonaws.com")
        return str(iam.create_role(RoleName=name, AssumeRolePolicyDocument=policy)["Role"]["Arn"])

    def template(value: str) -> str:
        parameter = {"Type": "String", "Value": value}
        return json.dumps({"Resources": {"Note": {"Type": "AWS::SSM::Parameter", "Properties": parameter}}})

    deployer, ec2 = role("cfn-deployer"), role("ec2-only", "ec2")
    for wrong in (ec2, deployer.replace("cfn-deployer", "no-such-role")):
        with pytest.raises(ClientError, match=f"Role {re.escape(wrong)} is invalid or cannot be assumed"):
            aws.change_set("Roled", template("a"), {}, "CREATE", RoleARN=wrong)
    assert aws.deploy("Roled", template("a"), RoleARN=deployer).status == "CREATE_COMPLETE"
    assert aws.cf.describe_stacks(StackName="Roled")["Stacks"][0]["RoleARN"] == deployer
    assert aws.deploy("Roled", template("b")).status == "UPDATE_COMPLETE"  # none named: the stack's own
    iam.delete_role(RoleName="cfn-deployer")
    with pytest.raises(ClientError, match=f"Role {re.escape(deployer)} is invalid or cannot be assumed"):
        aws.change_set("Roled", template("c"), {}, "UPDATE")
    with pytest.raises(ClientError, match=f"Role {re.escape(deployer)} is invalid or cannot be assumed"):
        aws.cf.delete_stack(StackName="Roled")
    aws.cf.delete_stack(StackName="Roled", RoleARN=role("cfn-deployer-2"))

    def gone() -> bool:
        try:
            return bool(aws.cf.describe_stacks(StackName="Roled")["Stacks"][0]["StackStatus"] == "DELETE_COMPLETE")
        except ClientError:  # no such stack any more
            return True

    wait_until(gone, what="the stack deleted with the role the delete named")


def test_a_drift_aware_change_set_puts_back_what_changed_outside_and_keeps_what_the_template_now_says(
    deployment: Deployment,
) -> None:
    """drift_aware_change_sets: settings changed outside CloudFormation are invisible to a change set, found by a
    REVERT_DRIFT one: Modify details that compare the actual value (BeforeValueFrom ACTUAL_STATE, the Drift's
    previous and actual values) with the template's, put back when executed; a template now saying the actual value
    makes a SyncWithActual change that changes nothing; with no drift and no change there is nothing to do."""
    aws, sqs, logs = deployment.aws, deployment.aws.clients["sqs"], deployment.aws.clients["logs"]

    def template(visibility: int, retention: int = 345600) -> str:
        queue = {"VisibilityTimeout": visibility, "MessageRetentionPeriod": retention}
        return json.dumps(
            {
                "Resources": {
                    "Inbox": {"Type": "AWS::SQS::Queue", "Properties": queue},
                    "Log": {"Type": "AWS::Logs::LogGroup", "Properties": {"RetentionInDays": 7}},
                },
                "Outputs": {"Url": {"Value": {"Ref": "Inbox"}}, "Log": {"Value": {"Ref": "Log"}}},
            }
        )

    def kept_days(group: str) -> int:
        return int(logs.describe_log_groups(logGroupNamePrefix=group)["logGroups"][0]["retentionInDays"])

    def settings(url: str) -> tuple[str, str]:
        found = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
        return found["VisibilityTimeout"], found["MessageRetentionPeriod"]

    assert aws.deploy("Drifting", template(30)).status == "CREATE_COMPLETE"
    url, group = aws.outputs("Drifting")["Url"], aws.outputs("Drifting")["Log"]
    sqs.set_queue_attributes(QueueUrl=url, Attributes={"VisibilityTimeout": "90", "MessageRetentionPeriod": "60"})
    logs.put_retention_policy(logGroupName=group, retentionInDays=30)

    plain = aws.change_set("Drifting", template(30), {}, "UPDATE")[1]  # a change set compares templates: none
    assert plain["Status"] == "FAILED" and plain["StatusReason"] == NO_CHANGES

    _, drift_aware = aws.change_set("Drifting", template(30), {}, "UPDATE", DeploymentMode="REVERT_DRIFT")
    assert drift_aware["Status"] == "CREATE_COMPLETE" and drift_aware["DeploymentMode"] == "REVERT_DRIFT"
    change, log_change = (c["ResourceChange"] for c in drift_aware["Changes"])
    assert (change["Action"], change["ResourceDriftStatus"], change["Replacement"]) == ("Modify", "MODIFIED", "False")
    assert [(d["Target"]["Name"], d["Target"]["BeforeValue"], d["Target"]["AfterValue"]) for d in log_change[
        "Details"]] == [("RetentionInDays", "30", "7")]  # fmt: skip
    shown = aws.cf.describe_change_set(
        StackName="Drifting", ChangeSetName=drift_aware["ChangeSetId"], IncludePropertyValues=True
    )["Changes"][0]["ResourceChange"]
    targets = {d["Target"]["Name"]: d["Target"] for d in shown["Details"]}
    assert targets["VisibilityTimeout"] | {"RequiresRecreation": "Never"} == {
        "Attribute": "Properties",
        "Name": "VisibilityTimeout",
        "Path": "/Properties/VisibilityTimeout",
        "RequiresRecreation": "Never",
        "BeforeValue": "90",
        "AfterValue": "30",
        "BeforeValueFrom": "ACTUAL_STATE",
        "AfterValueFrom": "TEMPLATE",
        "AttributeChangeType": "Modify",
        "Drift": {"PreviousValue": "30", "ActualValue": "90"},
    }
    assert targets["MessageRetentionPeriod"]["AttributeChangeType"] == "Modify"

    # the template now says the retention as it is: that one is kept, the visibility timeout goes back
    done = aws.deploy("Drifting", template(30, retention=60), DeploymentMode="REVERT_DRIFT")
    assert done.status == "UPDATE_COMPLETE"
    kinds = {d["Target"]["Name"]: d["Target"]["AttributeChangeType"] for d in done.change_set["Changes"][0][
        "ResourceChange"]["Details"]}  # fmt: skip
    assert kinds == {"MessageRetentionPeriod": "SyncWithActual", "VisibilityTimeout": "Modify"}
    assert settings(url) == ("30", "60") and kept_days(group) == 7
    assert aws.outputs("Drifting")["Url"] == url  # in place

    # a drift the template says alone: a SyncWithActual change, nothing applied
    sqs.set_queue_attributes(QueueUrl=url, Attributes={"VisibilityTimeout": "45"})
    synced = aws.deploy("Drifting", template(45, retention=60), DeploymentMode="REVERT_DRIFT")
    assert synced.status == "UPDATE_COMPLETE"
    assert [(c["ResourceChange"]["Action"], c["ResourceChange"]["ResourceDriftStatus"]) for c in synced.change_set[
        "Changes"]] == [("SyncWithActual", "MODIFIED")]  # fmt: skip
    assert settings(url) == ("45", "60")

    # nothing drifted, nothing changed: nothing to do
    _, nothing = aws.change_set("Drifting", template(45, retention=60), {}, "UPDATE", DeploymentMode="REVERT_DRIFT")
    assert nothing["Status"] == "FAILED" and nothing["StatusReason"] == NO_CHANGES
    aws.cf.delete_stack(StackName="Drifting")


def test_a_queue_and_a_topic_change_in_place_and_a_subscription_in_the_template_delivers(
    deployment: Deployment,
) -> None:
    """sqs_queue_in_place, sns_topic_in_place, sns_subscription: a topic with a queue subscribed in the template
    delivers to it; the queue's retention and visibility timeout, the topic's display name and the subscription's raw
    delivery change in place (the same URL and ARNs, the subscription kept, as on AWS); a new queue name replaces it."""
    aws, sqs, sns = deployment.aws, deployment.aws.clients["sqs"], deployment.aws.clients["sns"]

    def template(*, retention: int, display: str, raw: bool, name: str | None = None) -> str:
        queue: dict[str, Any] = {"MessageRetentionPeriod": retention, "VisibilityTimeout": 30 if raw else 45}
        if name:
            queue["QueueName"] = name
        return json.dumps(
            {
                "Resources": {
                    "Inbox": {"Type": "AWS::SQS::Queue", "Properties": queue},
                    "Events": {"Type": "AWS::SNS::Topic", "Properties": {"DisplayName": display}},
                    "Feed": {
                        "Type": "AWS::SNS::Subscription",
                        "Properties": {
                            "Protocol": "sqs",
                            "TopicArn": {"Ref": "Events"},
                            "Endpoint": {"Fn::GetAtt": ["Inbox", "Arn"]},
                            "RawMessageDelivery": raw,
                        },
                    },
                },
                "Outputs": {"Url": {"Value": {"Ref": "Inbox"}}, "Topic": {"Value": {"Ref": "Events"}}},
            }
        )

    def delivered(topic: str, url: str) -> list[str]:
        sns.publish(TopicArn=topic, Message="booked")
        return [m["Body"] for m in sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", [])]

    assert aws.deploy("Fanout", template(retention=345600, display="a", raw=True)).status == "CREATE_COMPLETE"
    first = aws.outputs("Fanout")
    assert delivered(first["Topic"], first["Url"]) == ["booked"]

    updated = aws.deploy("Fanout", template(retention=86400, display="b", raw=False))
    assert updated.status == "UPDATE_COMPLETE"
    assert {c["ResourceChange"]["LogicalResourceId"]: c["ResourceChange"]["Replacement"] for c in updated.change_set[
        "Changes"]} == {"Inbox": "False", "Events": "False", "Feed": "False"}  # fmt: skip
    assert aws.outputs("Fanout") == first
    attributes = sqs.get_queue_attributes(QueueUrl=first["Url"], AttributeNames=["All"])["Attributes"]
    assert (attributes["MessageRetentionPeriod"], attributes["VisibilityTimeout"]) == ("86400", "45")
    assert sns.get_topic_attributes(TopicArn=first["Topic"])["Attributes"]["DisplayName"] == "b"
    [body] = delivered(first["Topic"], first["Url"])
    assert json.loads(body)["Message"] == "booked"  # an SNS envelope now: raw delivery off

    renamed = aws.deploy("Fanout", template(retention=86400, display="b", raw=False, name="fanout-inbox"))
    assert renamed.status == "UPDATE_COMPLETE"
    inbox = [
        c["ResourceChange"]
        for c in renamed.change_set["Changes"]
        if c["ResourceChange"]["LogicalResourceId"] == "Inbox"
    ]
    assert inbox[0]["Replacement"] == "True"
    assert aws.outputs("Fanout")["Url"].endswith("/fanout-inbox")
    aws.cf.delete_stack(StackName="Fanout")


def test_a_rollback_that_fails_is_continued_once_the_cause_is_fixed(deployment: Deployment) -> None:
    """UPDATE_ROLLBACK_FAILED, then ContinueUpdateRollback (the recovery deploykit runs)."""
    aws, logs = deployment.aws, deployment.aws.clients["logs"]
    template: dict[str, Any] = {
        "Resources": {
            "Logs": {"Type": "AWS::Logs::LogGroup", "Properties": {"LogGroupName": "rollback-me", "RetentionInDays": 7}}
        }
    }
    assert aws.deploy("Rollback", json.dumps(template)).status == "CREATE_COMPLETE"
    logs.delete_log_group(logGroupName="rollback-me")  # behind CloudFormation's back: updates now fail
    template["Resources"]["Logs"]["Properties"]["RetentionInDays"] = 14
    operation = aws.deploy("Rollback", json.dumps(template))
    assert operation.status == "UPDATE_ROLLBACK_FAILED"
    failed = [e for e in operation.events if e["ResourceStatus"] == "UPDATE_FAILED"]
    assert len(failed) == 2 and all("ResourceNotFound" in e["ResourceStatusReason"] for e in failed)
    with pytest.raises(ClientError, match="can not be updated"):
        aws.change_set("Rollback", json.dumps(template), {}, "UPDATE")
    logs.create_log_group(logGroupName="rollback-me")
    aws.cf.continue_update_rollback(StackName="Rollback")
    stack = wait_until(
        lambda: (
            (s := aws.cf.describe_stacks(StackName="Rollback")["Stacks"][0])["StackStatus"]
            != "UPDATE_ROLLBACK_IN_PROGRESS"
            and s
        ),
        what="continue update rollback",
    )
    assert stack["StackStatus"] == "UPDATE_ROLLBACK_COMPLETE"
    assert logs.describe_log_groups(logGroupNamePrefix="rollback-me")["logGroups"][0]["retentionInDays"] == 7
    aws.cf.delete_stack(StackName="Rollback")


# == 5. delete in reverse order =============================================================================


def test_delete_in_reverse_order_keeps_what_is_retained(deployment: Deployment) -> None:
    aws = deployment.aws
    ids = {name: aws.cf.describe_stacks(StackName=name)["Stacks"][0]["StackId"] for name in ORDER}
    outputs = {name: aws.outputs(name) for name in ORDER}
    # an export in use stops the deletion of its stack
    aws.cf.delete_stack(StackName=DATA)
    stack = wait_until(
        lambda: (s := aws.cf.describe_stacks(StackName=DATA)["Stacks"][0])["StackStatus"] != "DELETE_IN_PROGRESS" and s,
        what="data stack",
    )
    assert stack["StackStatus"] == "DELETE_FAILED"
    assert "in use by CarRentalFargateStack" in stack["StackStatusReason"]
    for name in reversed(ORDER):
        aws.cf.delete_stack(StackName=name)
        stack = wait_until(
            lambda: (
                (s := aws.cf.describe_stacks(StackName=ids[name])["Stacks"][0])["StackStatus"]  # noqa: B023
                not in ("DELETE_IN_PROGRESS", "DELETE_FAILED")
                and s
            ),
            timeout=60,
            what=f"delete {name}",
        )
        assert stack["StackStatus"] == "DELETE_COMPLETE", stack
        with pytest.raises(ClientError, match="does not exist"):
            aws.cf.describe_stacks(StackName=name)
    events = aws.cf.describe_stack_events(StackName=ids[DATA])["StackEvents"]
    skipped = {e["LogicalResourceId"] for e in events if e["ResourceStatus"] == "DELETE_SKIPPED"}
    assert {"CarsTableA3676011", "KycDocumentsBucketBD09E66F"} <= skipped
    # retained: data holders
    assert outputs[DATA]["CarsTableName"] in aws.clients["dynamodb"].list_tables()["TableNames"]
    buckets = {b["Name"] for b in aws.clients["s3"].list_buckets()["Buckets"]}
    assert {outputs[REGISTRY]["ArtifactsBucketName"], outputs[DATA]["KycBucketName"]} <= buckets
    aws.clients["cognito-idp"].describe_user_pool(UserPoolId=outputs[AUTH]["UserPoolId"])
    aws.clients["ecr"].describe_repositories(repositoryNames=["car-rental-backend"])
    # gone: the rest, the containers and the listener
    assert aws.cf.list_exports()["Exports"] == []
    assert aws.elbv2.describe_load_balancers()["LoadBalancers"] == []
    assert aws.clients["apigateway"].get_rest_apis()["items"] == []
    assert aws.clients["lambda"].list_functions()["Functions"] == []
    assert [v for v in aws.clients["ec2"].describe_vpcs()["Vpcs"] if not v.get("IsDefault")] == []
    wait_until(lambda: not task_containers(deployment), timeout=20, what="the task containers to go")
    with pytest.raises(OSError):
        urllib.request.urlopen(deployment.listener + "/health", timeout=2)
