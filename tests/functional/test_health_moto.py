"""`inv health`'s engine against moto: a small environment built part by part, then gathered and judged.

What moto cannot hold is played differently: moto's ECS drops a service's deploymentConfiguration and
healthCheckGracePeriodSeconds and writes no service events, so the rollout-settings test answers
DescribeServices through botocore's Stubber (the rest of the environment still comes from moto). moto's ECS
runs no tasks: runningCount is 0 unless MOTO_ECS_SERVICE_RUNNING says otherwise. moto's ELBv2 reports a
registered target as healthy without health-checking it.
"""

from __future__ import annotations

import copy
import dataclasses
import io
import json
import re
import zipfile
from dataclasses import MISSING, fields
from datetime import UTC, datetime
from typing import Any

import pytest
from botocore.exceptions import ClientError
from botocore.stub import ANY, Stubber
from moto.awslambda.models import lambda_backends
from moto.core import DEFAULT_ACCOUNT_ID as ACCOUNT_ID
from moto.ecs.models import ecs_backends

from deploykit.aws import AwsFactory
from deploykit.config import STACK_ROLES, AlarmWatch, EnvConfig, ImageScan, Stacks
from deploykit.endpoints import Endpoints
from deploykit.health import HealthReport, Row, gather, render
from deploykit.stacks import StackOutputs
from sandbox.ext.provisioned import allocations
from tests.functional.conftest import REGION, api_function, held_across, new_session
from tests.functional.test_watch_alarms_moto import put_alarm, set_state

SHA = "0123456789ab"
IMAGE = f"123456789012.dkr.ecr.{REGION}.amazonaws.com/car-rental-backend:{SHA}"
STACKS = Stacks(
    registry="CarRentalRegistryStack",
    data="CarRentalDataStack",
    auth="CarRentalAuthStack",
    fargate="CarRentalFargateStack",
    api="CarRentalApiStack",
)
ENV = EnvConfig(
    name="dev",
    region=REGION,
    cluster="car-rental-cluster",
    service="car-rental-service",
    container="backend",
    repository="car-rental-backend",
    stacks=STACKS,
)
AWS_DEFAULT_TG: dict[str, Any] = {"HealthCheckIntervalSeconds": 30, "HealthyThresholdCount": 5}
TUNED_TG: dict[str, Any] = {
    "HealthCheckIntervalSeconds": 5,
    "HealthCheckTimeoutSeconds": 4,
    "HealthyThresholdCount": 2,
    "UnhealthyThresholdCount": 2,
}


@pytest.fixture
def aws(moto_aws: None) -> AwsFactory:
    """A factory on moto with explicit credentials (the `factory` of conftest needs a git project)."""
    return AwsFactory(ENV, session=new_session())


def endpoints(**values: Any) -> Endpoints:
    """Endpoints as resolve_endpoints makes them; every field not given is a placeholder."""
    kwargs: dict[str, Any] = {
        f.name: f"unused-{f.name}" for f in fields(Endpoints) if f.default is MISSING and f.default_factory is MISSING
    }
    kwargs.update(env="dev", region=REGION, cluster=ENV.cluster, service=ENV.service, **values)
    return Endpoints(**kwargs)


# -- building the environment ------------------------------------------------------------------------


def create_stacks(factory: AwsFactory, *names: str) -> None:
    cfn = factory.client("cloudformation")
    for name in names:
        body = {
            "Resources": {
                "Marker": {
                    "Type": "AWS::SSM::Parameter",
                    "Properties": {"Name": f"/car-rental/{name}", "Type": "String", "Value": "x"},
                }
            }
        }
        cfn.create_stack(StackName=name, TemplateBody=json.dumps(body))


def create_target_group(factory: AwsFactory, delay: int, settings: dict[str, Any]) -> str:
    ec2, elbv2 = factory.client("ec2"), factory.client("elbv2")
    vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    subnets = [
        ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.0.{i}.0/24", AvailabilityZone=f"{REGION}{zone}")["Subnet"][
            "SubnetId"
        ]
        for i, zone in ((1, "a"), (2, "b"))
    ]
    elbv2.create_load_balancer(Name="car-rental-alb", Subnets=subnets)
    arn = str(
        elbv2.create_target_group(
            Name="car-rental-tg", Protocol="HTTP", Port=8000, VpcId=vpc, TargetType="ip", **settings
        )["TargetGroups"][0]["TargetGroupArn"]
    )
    elbv2.modify_target_group_attributes(
        TargetGroupArn=arn, Attributes=[{"Key": "deregistration_delay.timeout_seconds", "Value": str(delay)}]
    )
    return arn


def create_service(factory: AwsFactory, target_group_arn: str | None, **container: Any) -> str:
    """Cluster, a task definition running IMAGE (its container with ``container`` too), and the service (behind
    ``target_group_arn`` if given)."""
    ecs, ec2 = factory.client("ecs"), factory.client("ec2")
    vpc = ec2.describe_vpcs()["Vpcs"][-1]["VpcId"]
    subnet = ec2.describe_subnets(Filters=[{"Name": "vpc-id", "Values": [vpc]}])["Subnets"][0]["SubnetId"]
    sg = ec2.create_security_group(GroupName="svc", Description="svc", VpcId=vpc)["GroupId"]
    ecs.create_cluster(clusterName=ENV.cluster)
    td = ecs.register_task_definition(
        family="car-rental-backend",
        networkMode="awsvpc",
        requiresCompatibilities=["FARGATE"],
        cpu="256",
        memory="512",
        containerDefinitions=[{"name": "backend", "image": IMAGE, "essential": True, **container}],
    )["taskDefinition"]["taskDefinitionArn"]
    load_balancers = (
        [{"targetGroupArn": target_group_arn, "containerName": "backend", "containerPort": 8000}]
        if target_group_arn
        else []
    )
    ecs.create_service(
        cluster=ENV.cluster,
        serviceName=ENV.service,
        taskDefinition=td,
        desiredCount=2,
        launchType="FARGATE",
        loadBalancers=load_balancers,
        networkConfiguration={"awsvpcConfiguration": {"subnets": [subnet], "securityGroups": [sg]}},
    )
    return str(td)


def create_api(factory: AwsFactory) -> tuple[str, str]:
    """A REST API with one mock method, deployed to stage prod: (api id, deployment id)."""
    apigw = factory.client("apigateway")
    api = apigw.create_rest_api(name="car-rental-api")["id"]
    root = apigw.get_resources(restApiId=api)["items"][0]["id"]
    apigw.put_method(restApiId=api, resourceId=root, httpMethod="GET", authorizationType="NONE")
    apigw.put_integration(restApiId=api, resourceId=root, httpMethod="GET", type="MOCK")
    deployment = apigw.create_deployment(restApiId=api, stageName="prod")["id"]
    return str(api), str(deployment)


def create_function(factory: AwsFactory, name: str, *, alias: bool = True, **settings: Any) -> dict[str, Any]:
    """A Lambda function with one published version (and the `live` alias on it): that version's configuration
    (``settings``: more of CreateFunction's)."""
    role = factory.client("iam").create_role(
        RoleName=f"{name}-role",
        AssumeRolePolicyDocument=json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [
                    {"Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"}, "Action": "sts:AssumeRole"}
                ],
            }
        ),
    )["Role"]["Arn"]
    code = io.BytesIO()
    with zipfile.ZipFile(code, "w") as archive:
        # dated, not now: each function's zip the same bytes, whichever two seconds (a zip's clock) it is made in
        handler = zipfile.ZipInfo("handler.py", date_time=(2026, 1, 1, 0, 0, 0))
        archive.writestr(handler, "def handler(event, context):\n    return {'statusCode': 200}\n")
    lam = factory.client("lambda")
    lam.create_function(
        FunctionName=name,
        Runtime="python3.11",
        Role=role,
        Handler="handler.handler",
        Code={"ZipFile": code.getvalue()},
        **settings,
    )
    version = lam.publish_version(FunctionName=name, Description=f"git {SHA}")
    if alias:
        lam.create_alias(FunctionName=name, Name="live", FunctionVersion=version["Version"])
    return dict(version)


def rows_of(report: HealthReport, part: str) -> list[Row]:
    return [r for r in report.rows if r.part == part]


# -- tests -------------------------------------------------------------------------------------------


def test_a_deployed_environment_with_untuned_settings_and_no_running_tasks(aws: AwsFactory) -> None:
    create_stacks(aws, STACKS.registry, STACKS.data, STACKS.fargate, STACKS.api)  # no auth stack
    tg = create_target_group(aws, delay=300, settings=AWS_DEFAULT_TG)
    td = create_service(aws, tg)
    api, deployment = create_api(aws)
    version = create_function(aws, "car-rental-login")
    ends = endpoints(api_id=api, api_stage="prod", target_group_arn=tg, functions={"login_handler": "car-rental-login"})

    report = gather(aws, ENV, ends)

    stacks = {r.name: r.status for r in rows_of(report, "stack")}
    assert stacks == {
        "CarRentalRegistryStack": "CREATE_COMPLETE",
        "CarRentalDataStack": "CREATE_COMPLETE",
        "CarRentalAuthStack": "missing",
        "CarRentalFargateStack": "CREATE_COMPLETE",
        "CarRentalApiStack": "CREATE_COMPLETE",
    }
    assert report.live_image == IMAGE and report.live_sha == SHA
    assert Row("image", "backend", SHA, f"{IMAGE} (car-rental-backend:1, on X86_64)") in report.rows
    assert rows_of(report, "service") == [
        Row("service", "car-rental-cluster/car-rental-service", "ACTIVE", "running 0/2, pending 2")
    ]
    [primary] = rows_of(report, "deployment")
    assert (primary.name, primary.status) == ("PRIMARY", "IN_PROGRESS")
    assert primary.detail.startswith(f"{td.rsplit('/', 1)[-1]} ({SHA}), running 0/2, pending 2")
    assert rows_of(report, "targets") == [Row("targets", "car-rental-tg", "0/0 healthy", "no targets registered")]
    [check] = rows_of(report, "health check")
    assert check.status == "untuned" and "interval 30 s" in check.detail
    assert "deregistration delay 300 s" in check.detail
    assert rows_of(report, "api stage") == [Row("api stage", f"{api}/prod", "deployed", f"deployment {deployment}")]
    [function] = rows_of(report, "lambda")
    assert (function.name, function.status) == ("login_handler (car-rental-login)", "live → version 1")
    assert function.detail.startswith(f"code {version['CodeSha256'][:12]}, git {SHA}, python3.11 on x86_64, modified ")
    assert report.runtimes == {"login_handler": ("python3.11", "CarRentalApiStack")}  # for runtime_findings

    findings = {f.what: f for f in report.findings}
    assert set(findings) == {
        "stack CarRentalAuthStack is not deployed",
        "service car-rental-service runs 0 of 2 desired tasks (2 pending tasks)",
        "target group car-rental-tg has no registered targets: the ALB serves nothing",
    }
    assert findings["stack CarRentalAuthStack is not deployed"].next_step == (
        "inv deploy.stack CarRentalAuthStack --env dev"
    )
    assert all(f.severity == "broken" for f in report.findings) and report.broken

    recs = {r.setting: r for r in report.recommendations}
    assert set(recs) == {"deregistration delay", "health-check interval", "healthy threshold"}
    assert (recs["deregistration delay"].current, recs["deregistration delay"].suggested) == ("300 s", "5–30 s")
    assert (recs["health-check interval"].current, recs["healthy threshold"].current) == ("30 s", "5")

    text = render(report)
    assert "💡 deregistration delay: 300 s → 5–30 s" in text
    assert "❌ service car-rental-service runs 0 of 2 desired tasks (2 pending tasks)" in text
    assert json.loads(json.dumps(report.to_json()))["live_sha"] == SHA


def test_a_service_being_deleted_is_said_once_not_as_its_empty_target_group_too(aws: AwsFactory) -> None:
    """DRAINING (moto deletes at once: the service is set so): the deletion is the finding; the target group it
    leaves empty, which the deletion explains, is not another one."""
    create_stacks(aws, *(getattr(STACKS, role) for role in ("registry", "data", "auth", "fargate", "api")))
    tg = create_target_group(aws, delay=5, settings=TUNED_TG)
    create_service(aws, tg)
    account = aws.client("sts").get_caller_identity()["Account"]
    service = ecs_backends[account][REGION].services[f"{ENV.cluster}:{ENV.service}"]
    service.status, service.desired_count = "DRAINING", 0  # what DeleteService does first
    report = gather(aws, ENV, endpoints(target_group_arn=tg))
    whats = [f.what for f in report.findings]
    assert f"service {ENV.service} is being deleted (DRAINING): nothing can be rolled out on it" in whats
    assert not [what for what in whats if "registered targets" in what], whats


def test_a_healthy_tuned_environment_has_nothing_broken(aws: AwsFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MOTO_ECS_SERVICE_RUNNING", "2")
    create_stacks(aws, *(getattr(STACKS, role) for role in ("registry", "data", "auth", "fargate", "api")))
    tg = create_target_group(aws, delay=5, settings=TUNED_TG)
    aws.client("elbv2").register_targets(
        TargetGroupArn=tg, Targets=[{"Id": "10.0.1.10", "Port": 8000}, {"Id": "10.0.1.11", "Port": 8000}]
    )
    create_service(aws, tg)
    api, _ = create_api(aws)
    create_function(aws, "car-rental-login")
    create_function(aws, "car-rental-health")
    functions = {"login_handler": "car-rental-login", "health_handler": "car-rental-health"}

    report = gather(aws, ENV, endpoints(api_id=api, api_stage="prod", target_group_arn=tg, functions=functions))

    assert report.findings == []
    assert report.recommendations == []  # moto reports no deploymentConfiguration: not judged
    assert not report.broken
    assert rows_of(report, "targets")[0].status == "2/2 healthy"
    assert rows_of(report, "health check")[0].status == "tuned"
    assert rows_of(report, "rollout settings")[0].status == "unknown"
    assert [r.name for r in rows_of(report, "lambda")] == [
        "health_handler (car-rental-health)",
        "login_handler (car-rental-login)",
    ]
    assert "✅ nothing broken" in render(report)
    assert report.shifting == {}

    # a canary in its middle: the live alias routes a share to a second version
    lam = aws.client("lambda")
    lam.update_function_configuration(FunctionName="car-rental-health", Description="another release")
    second = lam.publish_version(FunctionName="car-rental-health")["Version"]
    lam.update_alias(
        FunctionName="car-rental-health", Name="live", RoutingConfig={"AdditionalVersionWeights": {second: 0.1}}
    )
    report = gather(aws, ENV, endpoints(api_id=api, api_stage="prod", target_group_arn=tg, functions=functions))
    assert report.shifting == {"health_handler": ("car-rental-health", {second: 0.1})}
    assert "traffic shift in progress: 10% to version 2" in rows_of(report, "lambda")[0].detail


def test_a_secret_the_running_revision_names_that_is_gone_is_broken(aws: AwsFactory) -> None:
    """The SSM parameter the service's revision names was deleted since its tasks started: they run on, but the next
    task ECS starts fails to (ResourceInitializationError), and a deploy of the app is refused: a broken finding
    naming it, with what to do; none once it is there again."""
    create_stacks(aws, *(getattr(STACKS, role) for role in ("registry", "data", "auth", "fargate", "api")))
    td = create_service(aws, None, secrets=[{"name": "API_KEY", "valueFrom": "/car-rental/api-key"}])
    report = gather(aws, ENV, None)
    (finding,) = [f for f in report.findings if "names what does not exist" in f.what]
    assert finding.severity == "broken"
    assert finding.what == (
        f"{td.rsplit('/', 1)[-1]}, which {ENV.service} runs, names what does not exist: secret API_KEY of container "
        "backend (SSM parameter /car-rental/api-key): not found; its running tasks started before, but the next task "
        "ECS starts (a replacement, a scale-out) fails to start"
    )
    assert finding.next_step == (
        f"create what is missing (or change {ENV.stacks.fargate} to name what exists and deploy it: inv deploy.auto "
        f"--env {ENV.name})"
    )
    aws.client("ssm").put_parameter(Name="/car-rental/api-key", Value="k", Type="SecureString")
    assert not [f for f in gather(aws, ENV, None).findings if "names what does not exist" in f.what]


def test_a_lambda_row_says_the_zip_and_commit_its_version_names(aws: AwsFactory) -> None:
    create_stacks(aws, STACKS.api)
    api, _ = create_api(aws)
    key = f"lambda/login_handler/{'ab' * 32}.zip"
    functions = {"login_handler": "car-rental-login", "health_handler": "car-rental-health", "other": "other-fn"}
    lam = aws.client("lambda")
    for function in functions.values():
        create_function(aws, function, Architectures=["arm64" if function == "other-fn" else "x86_64"])
    described = {  # as the fast path writes it, as CloudFormation does, and one a person wrote
        "car-rental-login": f"code s3://artifacts/{key} git {SHA}",
        "car-rental-health": f"code s3://artifacts/{key}",
        "other-fn": "hand-made release",
    }
    for function, description in described.items():  # $LATEST changed first: else no new version is published
        lam.update_function_configuration(FunctionName=function, MemorySize=256)
        version = lam.publish_version(FunctionName=function, Description=description)["Version"]
        lam.update_alias(FunctionName=function, Name="live", FunctionVersion=version)
    code = lam.get_function_configuration(FunctionName="car-rental-login")["CodeSha256"][:12]

    report = gather(aws, ENV, endpoints(api_id=api, api_stage="prod", functions=functions))

    rows = rows_of(report, "lambda")
    assert all(re.search(r", modified \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC$", r.detail) for r in rows), rows
    details = {r.name.split(" ")[0]: r.detail.split(", modified ")[0] for r in rows}
    short = f"lambda/login_handler/{'ab' * 6}….zip"
    assert details == {  # and the CPU it runs on ([build] lambda_architecture's, through the API stack)
        "login_handler": f"code {code} from {short}, git {SHA}, python3.11 on x86_64",
        "health_handler": f"code {code} from {short}, python3.11 on x86_64",
        "other": f"code {code}, hand-made release, python3.11 on arm64",
    }


def test_a_functions_provisioned_concurrency_is_in_its_row_and_lambdas_own_shift_is_no_canary(aws: AwsFactory) -> None:
    """An alias's provisioned concurrency is in its function's row. While Lambda readies the version the alias
    moved to (IN_PROGRESS), the weight it puts on the old version meanwhile is its own, not a canary cut short; a
    FAILED allocation is a warning with its reason. (moto's allocations are READY at once: the others are set on
    the sandbox's fake.)"""
    create_stacks(aws, STACKS.api)
    api, _ = create_api(aws)
    functions = {"login_handler": "car-rental-login", "health_handler": "car-rental-health"}
    lam = aws.client("lambda")
    for function in functions.values():
        create_function(aws, function)
        lam.put_provisioned_concurrency_config(
            FunctionName=function, Qualifier="live", ProvisionedConcurrentExecutions=2
        )
    ends = endpoints(api_id=api, api_stage="prod", functions=functions)

    report = gather(aws, ENV, ends)
    assert all(", provisioned concurrency 2 of 2 READY" in r.detail for r in rows_of(report, "lambda")), report.rows
    assert not [f for f in report.findings if "Lambda" in f.what]

    backend = lambda_backends[ACCOUNT_ID][REGION]
    moving = allocations(backend)[("car-rental-login", "live")]
    moving.status = "IN_PROGRESS"
    lam.update_function_configuration(FunctionName="car-rental-login", MemorySize=256)
    version = lam.publish_version(FunctionName="car-rental-login")["Version"]
    lam.update_alias(
        FunctionName="car-rental-login",
        Name="live",
        FunctionVersion=version,
        RoutingConfig={"AdditionalVersionWeights": {"1": 1.0}},  # as Lambda routes it while readying version 2
    )
    failing = allocations(backend)[("car-rental-health", "live")]
    failing.status, failing.reason = "FAILED", "FUNCTION_ERROR_INIT_FAILURE: RuntimeError: no STATUS_PAGE_URL"

    report = gather(aws, ENV, ends)
    rows = {r.name.split(" ")[0]: r for r in rows_of(report, "lambda")}
    assert rows["login_handler"].detail.endswith(
        "provisioned concurrency 0 of 2 IN_PROGRESS, version 2's environments being readied, 100% to version 1 "
        "meanwhile"
    ), rows["login_handler"].detail
    assert report.shifting == {}  # no canary to finish
    [failed] = [f for f in report.findings if "Lambda" in f.what]
    assert failed.what == (
        "Lambda health_handler: the provisioned concurrency of its alias 'live' failed on version 1: "
        "FUNCTION_ERROR_INIT_FAILURE: RuntimeError: no STATUS_PAGE_URL"
    )
    assert failed.next_step.startswith("see what its init wrote: inv logs --component lambda:health_handler")


def test_a_function_serving_settings_other_than_its_stacks_is_a_warning(aws: AwsFactory) -> None:
    """A setting changed by hand and published behind the alias is in no change set (CloudFormation compares a
    template with the one before) and no deploy puts it back: inv health compares the version the alias serves with
    the template the API stack was deployed with (GetTemplate, no synthesis) and names it."""
    role = aws.client("iam").create_role(RoleName="fn-role", AssumeRolePolicyDocument="{}")["Role"]["Arn"]
    variables = {"STAGE": "dev", "TABLE": {"Ref": "AWS::StackName"}}  # a value CloudFormation works out: not compared
    function = api_function(role, Timeout=10, Environment={"Variables": variables})
    cfn = aws.client("cloudformation")
    cfn.create_stack(StackName=STACKS.api, TemplateBody=json.dumps({"Resources": {"HealthHandler1A2B3C4D": function}}))
    name = cfn.describe_stack_resources(StackName=STACKS.api)["StackResources"][0]["PhysicalResourceId"]
    lam = aws.client("lambda")
    lam.create_alias(FunctionName=name, Name="live", FunctionVersion=lam.publish_version(FunctionName=name)["Version"])
    ends = endpoints(api_id="none", api_stage="prod", functions={"health_handler": name})

    assert [f.what for f in gather(aws, ENV, ends).findings if "Lambda" in f.what] == []  # as the stack made it

    lam.update_function_configuration(FunctionName=name, MemorySize=512, Environment={"Variables": {"STAGE": "prod"}})
    version = lam.publish_version(FunctionName=name)["Version"]
    lam.update_alias(FunctionName=name, Name="live", FunctionVersion=version)

    found = [f for f in gather(aws, ENV, ends).findings if "Lambda" in f.what]
    assert [(f.severity, f.what) for f in found] == [
        (
            "warning",
            f"Lambda health_handler: version {version}, which the alias serves, has settings other than those "
            f"{STACKS.api} deployed: MemorySize 512 (the stack's: 256), Environment.STAGE prod (the stack's: dev); "
            "changed by hand, and published",
        )
    ]
    assert found[0].next_step == (
        f"inv deploy.stack {STACKS.api} --env dev --revert-drift puts them back, and its alias on a version that has "
        "them (inv diff --drift --env dev shows it first); inv diff --verify --env dev compares them with this "
        "checkout's"
    )

    # inv rollback back to an older version, $LATEST holding the stack's settings (here: put back by hand): the
    # version keeps those it was published with, and the next deploy of the function serves the stack's again
    lam.update_function_configuration(FunctionName=name, MemorySize=256, Environment={"Variables": {"STAGE": "dev"}})
    found = [f for f in gather(aws, ENV, ends).findings if "Lambda" in f.what]
    assert [(f.severity, f.what, f.next_step) for f in found] == [
        (
            "warning",
            f"Lambda health_handler: version {version}, which the alias serves, has settings other than those "
            f"{STACKS.api} deployed, which $LATEST has: MemorySize 512 (the stack's: 256), Environment.STAGE prod "
            "(the stack's: dev); a version keeps the settings it was published with (an older one put back by inv "
            "rollback, or one published by hand)",
            "the next deploy of it publishes the stack's: inv deploy.lambda health_handler --env dev",
        )
    ]


def test_the_parts_are_read_at_once_and_reported_in_their_order(aws: AwsFactory) -> None:
    """The five stacks, the service, the target group its stack names (with its attributes and its targets' health),
    the API stage, both functions' aliases and versions and the API stack's template are asked at the same time (each
    held until all fifteen are in flight: one round trip, where they took fifteen one after the other); the rows come
    in the order of the parts all the same."""
    create_stacks(aws, *(getattr(STACKS, role) for role in ("registry", "data", "auth", "fargate", "api")))
    tg = create_target_group(aws, delay=5, settings=TUNED_TG)
    create_service(aws, tg)
    api, _ = create_api(aws)
    create_function(aws, "car-rental-login")
    create_function(aws, "car-rental-health")
    functions = {"login_handler": "car-rental-login", "health_handler": "car-rental-health"}
    held_across(
        15,
        (aws.client("cloudformation"), "DescribeStacks"),  # 5
        (aws.client("cloudformation"), "GetTemplate"),  # the API stack's, for the functions' settings
        (aws.client("ecs"), "DescribeServices"),  # 1
        (aws.client("elbv2"), "DescribeTargetGroups"),  # 1
        (aws.client("elbv2"), "DescribeTargetGroupAttributes"),  # 1
        (aws.client("elbv2"), "DescribeTargetHealth"),  # 1
        (aws.client("apigateway"), "GetStage"),  # 1
        (aws.client("lambda"), "GetAlias"),  # 2
        (aws.client("lambda"), "GetFunctionConfiguration"),  # 2
    )

    report = gather(aws, ENV, endpoints(api_id=api, api_stage="prod", target_group_arn=tg, functions=functions))

    parts = list(dict.fromkeys(r.part for r in report.rows))
    assert parts[0] == "stack" and parts[-2:] == ["api stage", "lambda"], parts
    assert parts.index("service") < parts.index("targets") < parts.index("health check") < parts.index("api stage")
    assert [r.name for r in rows_of(report, "stack")] == [getattr(STACKS, role) for role in STACK_ROLES]


def test_the_stacks_read_for_the_endpoints_are_not_described_again(aws: AwsFactory) -> None:
    """inv health resolves the endpoints from the stacks' outputs first: their rows come from that read."""
    names = [getattr(STACKS, role) for role in STACK_ROLES]
    create_stacks(aws, *names[:-1])  # the API stack is missing: read, and remembered as missing
    outputs = StackOutputs.of(aws)
    for name in names:
        outputs(name)
    calls: list[str] = []
    aws.client("cloudformation").meta.events.register(
        "before-call.cloudformation.DescribeStacks", lambda **kw: calls.append(kw["params"]["StackName"])
    )

    report = gather(aws, ENV, None)

    assert calls == []
    assert [(r.name, r.status) for r in rows_of(report, "stack")] == [
        *((name, "CREATE_COMPLETE") for name in names[:-1]),
        (names[-1], "missing"),
    ]


def test_nothing_deployed_is_reported_not_raised(aws: AwsFactory) -> None:
    report = gather(aws, ENV, None)

    assert [r.status for r in rows_of(report, "stack")] == ["missing"] * 5
    assert {r.part: r.status for r in report.rows if r.part != "stack"} == {
        "service": "missing",
        "targets": "missing",
        "api stage": "missing",
        "lambda": "missing",
    }
    assert [(f.severity, f.what, f.next_step) for f in report.findings] == [
        (
            "broken",
            "environment dev is not deployed (no stack CarRentalRegistryStack, CarRentalDataStack, CarRentalAuthStack, "
            "CarRentalFargateStack, CarRentalApiStack)",
            "inv deploy.full --env dev",
        ),
        (  # which is missing: the cluster (not "the service not found in cluster"), and the stack that makes it
            "broken",
            "ECS cluster car-rental-cluster does not exist, nor service car-rental-service in it: the cluster is not "
            "deployed (the Fargate stack CarRentalFargateStack makes both)",
            "deploy the Fargate stack first: inv deploy.stack CarRentalFargateStack --env dev (or fix 'cluster' in "
            "deploy.toml, if it names another)",
        ),
    ]
    [service] = rows_of(report, "service")
    assert (service.name, service.detail) == ("car-rental-cluster/car-rental-service", "no cluster car-rental-cluster")
    assert report.live_image is None and report.live_sha is None
    assert report.recommendations == []


def test_the_alarms_deploys_are_judged_by_are_rows_one_in_alarm_or_missing_a_warning(aws: AwsFactory) -> None:
    for name in ("car-rental-5xx", "car-rental-latency"):
        put_alarm(aws, name)
    set_state(aws, "car-rental-latency", "ALARM", "Threshold Crossed")
    watched = dataclasses.replace(
        ENV, alarm_watch=AlarmWatch(("car-rental-5xx", "car-rental-latency", "car-rental-typo"))
    )
    report = gather(aws, watched, None)

    assert [(r.name, r.status) for r in rows_of(report, "alarm")] == [
        ("car-rental-5xx", "OK"),
        ("car-rental-latency", "ALARM"),
        ("car-rental-typo", "missing"),
    ]
    assert rows_of(report, "alarm")[1].detail.startswith("since 20") and "UTC: Threshold Crossed" in (
        rows_of(report, "alarm")[1].detail
    )
    warnings = [f for f in report.findings if "alarm" in f.what]
    assert [f.severity for f in warnings] == ["warning", "warning"]
    assert warnings[0].what.startswith("alarm car-rental-latency is in ALARM since ")
    assert warnings[0].what.endswith(
        ": Threshold Crossed; a deploy now is not judged by it (it cannot tell the release from the one before)"
    )
    assert warnings[1].what == (
        f"alarm car-rental-typo, which [environments.dev.alarm_watch] names, is not in CloudWatch ({REGION}): every "
        "deploy is refused until it is"
    )
    # each alarm needs a 60 s period, and AWS's minute of late metrics: a watch read once ends before it could fire
    [advice] = [r for r in report.recommendations if r.setting == "alarm_watch seconds"]
    assert (advice.current, advice.suggested) == ("0 s", "120 s")
    assert advice.why.startswith("alarm car-rental-5xx goes to ALARM after 120 s of a failing release at the soonest")
    assert advice.where == "deploy.toml, [environments.dev.alarm_watch]: seconds = 120"
    long_enough = dataclasses.replace(watched, alarm_watch=dataclasses.replace(watched.alarm_watch, seconds=120))
    assert not [r for r in gather(aws, long_enough, None).recommendations if r.setting == "alarm_watch seconds"]
    assert not rows_of(gather(aws, ENV, None), "alarm")  # none named: none read


def test_an_alarm_that_goes_off_again_and_again_is_a_warning(aws: AwsFactory) -> None:
    """An alarm of the alarm watch that went to ALARM three times in a day (its history) goes off without a deploy:
    it would fail deploys that did nothing wrong. Twice is not said."""
    for name in ("car-rental-5xx", "car-rental-latency"):
        put_alarm(aws, name)
    for times, name in ((3, "car-rental-5xx"), (2, "car-rental-latency")):
        for _ in range(times):
            set_state(aws, name, "ALARM", "Threshold Crossed")
            set_state(aws, name, "OK", "Threshold not crossed")
    watched = dataclasses.replace(ENV, alarm_watch=AlarmWatch(("car-rental-5xx", "car-rental-latency")))
    [noisy] = [f for f in gather(aws, watched, None).findings if "alarm" in f.what]
    assert noisy.severity == "warning" and noisy.what.startswith(
        "alarm car-rental-5xx went to ALARM 3 times in the last 24 hours: unless deploys set it off, it is noisy, "
        "and a noisy alarm fails deploys that did nothing wrong"
    )
    assert noisy.next_step.startswith(
        "read when and why: aws cloudwatch describe-alarm-history --alarm-name car-rental-5xx"
    )


def test_a_names_start_shows_a_row_for_each_alarm_it_matches(aws: AwsFactory) -> None:
    for name in ("car-rental-latency", "car-rental-5xx", "other"):
        put_alarm(aws, name)
    watched = dataclasses.replace(ENV, alarm_watch=AlarmWatch(("car-rental-*", "car-rental-5xx", "nope-*")))
    report = gather(aws, watched, None)
    assert [(r.name, r.status) for r in rows_of(report, "alarm")] == [
        ("car-rental-5xx", "OK"),
        ("car-rental-latency", "OK"),
        ("nope-*", "missing"),
    ]
    assert rows_of(report, "alarm")[2].detail == f"no alarm in CloudWatch starts with it ({REGION})"


def test_a_stage_and_target_group_settings_the_credentials_may_not_read_are_rows_not_a_refusal(
    aws: AwsFactory,
) -> None:
    """A least-privilege role without apigateway:GET or elasticloadbalancing:DescribeTargetGroupAttributes had inv
    health refused whole (an AccessDenied, no report); those rows say what could not be read, the rest is reported."""
    create_stacks(aws, *(getattr(STACKS, role) for role in ("registry", "data", "auth", "fargate", "api")))
    tg = create_target_group(aws, delay=5, settings=TUNED_TG)
    create_service(aws, tg)
    api, _ = create_api(aws)

    def deny(**_: Any) -> None:
        raise ClientError({"Error": {"Code": "AccessDeniedException", "Message": "not allowed"}}, "Call")

    aws.client("apigateway").meta.events.register("before-call.api-gateway.GetStage", deny)
    aws.client("elbv2").meta.events.register(
        "before-call.elastic-load-balancing-v2.DescribeTargetGroupAttributes", deny
    )
    report = gather(aws, ENV, endpoints(api_id=api, api_stage="prod", target_group_arn=tg))
    assert rows_of(report, "api stage") == [
        Row("api stage", f"{api}/prod", "unknown", "may not be read (AccessDeniedException): apigateway:GET")
    ]
    assert rows_of(report, "health check")[0].detail.endswith("deregistration delay ? s")
    assert len(rows_of(report, "targets")) == 1 and len(rows_of(report, "lambda")) == 1


def test_missing_stage_alias_and_target_group_are_broken_parts(aws: AwsFactory) -> None:
    create_stacks(aws, *(getattr(STACKS, role) for role in ("registry", "data", "auth", "fargate", "api")))
    create_target_group(aws, delay=5, settings=TUNED_TG)
    create_service(aws, None)  # no load balancer: the stacks' target group is used
    api, _ = create_api(aws)
    create_function(aws, "car-rental-login", alias=False)
    gone_tg = f"arn:aws:elasticloadbalancing:{REGION}:123456789012:targetgroup/gone-tg/0123456789abcdef"
    ends = endpoints(
        api_id=api, api_stage="staging", target_group_arn=gone_tg, functions={"login_handler": "car-rental-login"}
    )

    report = gather(aws, ENV, ends)

    assert rows_of(report, "api stage") == [Row("api stage", f"{api}/staging", "missing", "no such REST API or stage")]
    assert rows_of(report, "lambda")[0].status == "missing"
    assert rows_of(report, "targets") == [Row("targets", "gone-tg", "missing", f"no target group {gone_tg}")]
    broken = {f.what: f.next_step for f in report.findings if f.severity == "broken"}
    assert broken[f"API Gateway stage 'staging' of REST API {api} does not exist"] == (
        "inv deploy.stack CarRentalApiStack --env dev"
    )
    assert broken["Lambda car-rental-login: the function or its 'live' alias does not exist"] == (
        "it was deleted outside CloudFormation, which still counts it as there: a deploy of its stack as it is "
        "does not bring it back (aws cloudformation detect-stack-drift --stack-name CarRentalApiStack shows it). "
        "Have CloudFormation create it again: take it out of its stack (its route out of FUNCTIONS in "
        "cdk/stacks/api_stack.py, its deployed_function out of a stack of yours) and inv deploy.stack "
        "CarRentalApiStack --env dev, then put it back and inv deploy.stack CarRentalApiStack --env dev again"
    )
    assert broken["target group gone-tg does not exist"] == "inv deploy.stack CarRentalFargateStack --env dev"


def test_a_service_behind_another_target_group_than_its_stack_names_is_judged_by_its_own(aws: AwsFactory) -> None:
    """The stack's target group is read beside the service, but the service's own is the one reported."""
    create_stacks(aws, *(getattr(STACKS, role) for role in ("registry", "data", "auth", "fargate", "api")))
    tg = create_target_group(aws, delay=5, settings=TUNED_TG)
    create_service(aws, tg)
    vpc = aws.client("ec2").describe_vpcs()["Vpcs"][-1]["VpcId"]
    other = aws.client("elbv2").create_target_group(
        Name="stacks-tg", Protocol="HTTP", Port=8000, VpcId=vpc, TargetType="ip"
    )["TargetGroups"][0]["TargetGroupArn"]

    report = gather(aws, ENV, endpoints(api_id="x", api_stage="prod", target_group_arn=other, functions={}))

    assert [(r.name, r.status) for r in rows_of(report, "targets")] == [("car-rental-tg", "0/0 healthy")]
    assert [r.status for r in rows_of(report, "health check")] == ["tuned"]


def test_rollout_settings_events_and_a_failed_rollout_as_aws_reports_them(aws: AwsFactory) -> None:
    """DescribeServices stubbed with what AWS answers (moto keeps none of it); everything else from moto."""
    create_stacks(aws, *(getattr(STACKS, role) for role in ("registry", "data", "auth", "fargate", "api")))
    tg = create_target_group(aws, delay=5, settings=TUNED_TG)
    aws.client("elbv2").register_targets(TargetGroupArn=tg, Targets=[{"Id": "10.0.1.10", "Port": 8000}])
    td_old = create_service(aws, tg)
    td_new = td_old.rsplit(":", 1)[0] + ":2"
    events = [
        {
            "id": f"e{i}",
            "createdAt": datetime(2026, 3, 1, 8, i, tzinfo=UTC),
            "message": f"(service car-rental-service) {m}",
        }
        for i, m in enumerate(["has reached a steady state.", "has started 1 tasks", "deployment failed: tasks failed"])
    ]
    answer = {
        "services": [
            {
                "serviceName": ENV.service,
                "status": "ACTIVE",
                "desiredCount": 1,
                "runningCount": 1,
                "pendingCount": 0,
                "taskDefinition": td_new,
                "loadBalancers": [{"targetGroupArn": tg, "containerName": "backend", "containerPort": 8000}],
                "deployments": [
                    {
                        "id": "ecs-svc/2",
                        "status": "PRIMARY",
                        "taskDefinition": td_old,
                        "desiredCount": 1,
                        "runningCount": 1,
                        "pendingCount": 0,
                        "rolloutState": "COMPLETED",
                    },
                    {
                        "id": "ecs-svc/1",
                        "status": "ACTIVE",
                        "taskDefinition": td_new,
                        "desiredCount": 0,
                        "runningCount": 0,
                        "pendingCount": 0,
                        "failedTasks": 3,
                        "rolloutState": "FAILED",
                        "rolloutStateReason": "ECS deployment circuit breaker: tasks failed to start.",
                    },
                ],
                "deploymentConfiguration": {
                    "minimumHealthyPercent": 50,
                    "maximumPercent": 200,
                    "deploymentCircuitBreaker": {"enable": True, "rollback": False},
                },
                "healthCheckGracePeriodSeconds": 300,
                "events": events,
            }
        ],
        "failures": [],
    }
    ecs = aws.client("ecs")
    task_definition = ecs.describe_task_definition(taskDefinition=td_old, include=["TAGS"])
    new_definition = copy.deepcopy(task_definition["taskDefinition"])
    new_definition.update(taskDefinitionArn=td_new, revision=2)
    new_definition["containerDefinitions"][0]["image"] = IMAGE.replace(SHA, "ba9876543210")
    with Stubber(ecs) as stub:
        stub.add_response(
            "describe_services", answer, {"cluster": ENV.cluster, "services": [ENV.service], "include": ["TAGS"]}
        )
        stub.add_response(
            "describe_task_definition",
            {"taskDefinition": task_definition["taskDefinition"], "tags": task_definition.get("tags") or []},
            {"taskDefinition": td_old, "include": ANY},
        )
        stub.add_response(
            "describe_task_definition",
            {"taskDefinition": new_definition, "tags": []},
            {"taskDefinition": td_new, "include": ANY},
        )
        report = gather(aws, ENV, endpoints(target_group_arn=tg, functions={}, api_id="x", api_stage="prod"))
        stub.assert_no_pending_responses()

    assert report.live_sha == SHA  # the PRIMARY deployment (the circuit breaker went back to it)
    [settings] = rows_of(report, "rollout settings")
    assert settings == Row(
        "rollout settings",
        ENV.service,
        "untuned",
        "min healthy 50 %, max 200 %, circuit breaker on, no rollback, grace period 300 s",
    )
    assert [r.detail for r in rows_of(report, "event")] == [e["message"] for e in reversed(events)]
    assert rows_of(report, "deployment")[1].detail == (
        "car-rental-backend:2 (ba9876543210), running 0/0, pending 0, failed 3: "
        "ECS deployment circuit breaker: tasks failed to start."
    )
    recs = {r.setting: (r.current, r.suggested) for r in report.recommendations}
    assert recs == {
        "minimum healthy percent": ("50 %", "100 %"),
        "deployment circuit breaker": ("enabled, no rollback", "enabled, with rollback"),
        "health-check grace period": ("300 s", "10–60 s"),
    }
    service_findings = [(f.severity, f.what) for f in report.findings if "deployment" in f.what]
    assert service_findings == [
        (
            "broken",
            "deployment of car-rental-backend:2 (ACTIVE) FAILED: "
            "ECS deployment circuit breaker: tasks failed to start.",
        ),
        (
            "warning",
            "a rollout is in progress: 2 deployments (PRIMARY car-rental-backend:1, ACTIVE car-rental-backend:2)",
        ),
    ]


def test_the_live_images_scan_is_a_row_and_a_finding_of_high_or_worse_a_warning(aws: AwsFactory) -> None:
    create_stacks(aws, STACKS.registry, STACKS.data, STACKS.auth, STACKS.fargate, STACKS.api)
    create_service(aws, None)
    ecr = aws.client("ecr")
    # not in the registry (an image cleanup took it): said in its row, the rest of the report stands
    report = gather(aws, ENV, None)
    [row] = rows_of(report, "scan")
    assert (row.name, row.status) == (SHA, "unknown") and "ECR's scan cannot be read" in row.detail
    assert rows_of(report, "image")

    ecr.create_repository(repositoryName="car-rental-backend")
    manifest = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.docker.distribution.manifest.v2+json"})
    ecr.put_image(repositoryName="car-rental-backend", imageManifest=manifest, imageTag=SHA)
    [row] = rows_of(gather(aws, ENV, None), "scan")
    assert row == Row(
        "scan",
        SHA,
        "not scanned",
        "ECR has no scan of it (aws ecr start-image-scan --repository-name car-rental-backend --image-id "
        f"imageTag={SHA})",
    )

    ecr.start_image_scan(repositoryName="car-rental-backend", imageId={"imageTag": SHA})  # moto's: one HIGH finding
    report = gather(aws, ENV, None)
    assert rows_of(report, "scan") == [Row("scan", SHA, "COMPLETE", "1 HIGH")]
    [finding] = [f for f in report.findings if "ECR's scan" in f.what]
    assert finding.severity == "warning"
    assert finding.what == (
        f"the live image {SHA} has 1 finding(s) of HIGH or worse in ECR's scan: CVE-9999-9999 (HIGH, moto_fake 9.9.9)"
    )
    assert finding.next_step.startswith("update what they are in and deploy it (inv base-image --force, then inv")
    assert re.search(rf"^scan +{SHA} +COMPLETE +1 HIGH$", render(report), re.M)

    # the environment's gate says what counts, and what is accepted
    gated = dataclasses.replace(ENV, image_scan=ImageScan("HIGH", ("CVE-9999-9999",)))
    report = gather(AwsFactory(gated, session=new_session()), gated, None)
    assert rows_of(report, "scan") == [Row("scan", SHA, "COMPLETE", "1 HIGH; accepted by deploy.toml: CVE-9999-9999")]
    assert not [f for f in report.findings if "ECR's scan" in f.what]


def test_in_express_mode_a_stack_revision_the_service_does_not_run_is_a_warning(aws: AwsFactory) -> None:
    """An express update registered :2; its rollout failed and ECS put :1 back, the stack keeping :2."""
    create_target_group(aws, delay=5, settings=TUNED_TG)
    create_service(aws, None)
    held = {
        "Type": "AWS::ECS::TaskDefinition",
        "Properties": {
            "Family": "car-rental-backend",
            "ContainerDefinitions": [{"Name": "backend", "Image": IMAGE, "Essential": True, "Memory": 512}],
        },
    }
    cfn = aws.client("cloudformation")
    cfn.create_stack(StackName=STACKS.fargate, TemplateBody=json.dumps({"Resources": {"TaskDef": held}}))
    express = dataclasses.replace(ENV, stack_mode="express")
    [finding] = [f for f in gather(aws, express, None).findings if "holds" in f.what]
    assert (finding.severity, finding.what) == (
        "warning",
        "CarRentalFargateStack holds car-rental-backend:2, which car-rental-service does not run "
        "(car-rental-backend:1): an express update's rollout failed and ECS put the older revision back",
    )
    assert "inv deploy.auto --env dev rolls it out again" in finding.next_step
    assert not [f for f in gather(aws, ENV, None).findings if "holds" in f.what]  # standard mode: not read

    ecs = aws.client("ecs")
    ecs.update_service(cluster=ENV.cluster, service=ENV.service, taskDefinition="car-rental-backend:2")
    assert not [f for f in gather(aws, express, None).findings if "holds" in f.what]  # rolled out again

    stub = Stubber(cfn)  # a role without cloudformation:DescribeStackResources: said, the rest reported
    stub.add_client_error("describe_stack_resources", "AccessDenied", "not allowed", 403)
    with stub:
        report = gather(aws, express, None)
    [denied] = [f for f in report.findings if "could not be read" in f.what]
    assert denied.severity == "warning" and "cloudformation:DescribeStackResources" in denied.next_step
    assert [r.status for r in rows_of(report, "service")]  # the service is still reported
