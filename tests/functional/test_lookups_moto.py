"""The values a CDK app looks up (deploykit.lookups), asked of moto as the CDK CLI asks AWS, and kept in
cdk/cdk.context.json as the CLI keeps them."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any
from unittest.mock import Mock

import pytest

from deploykit import commands, lookups, synth
from deploykit.aws import AwsFactory
from deploykit.config import load_config
from deploykit.errors import UsageError
from tests.conftest import one_stack_app
from tests.functional.conftest import moto_runtime

ACCOUNT = "123456789012"
REGION = "eu-west-1"


def entry(provider: str, **props: Any) -> dict[str, Any]:
    return {"key": f"{provider}:account={ACCOUNT}:x", "provider": provider, "props": {"account": ACCOUNT, **props}}


def clients_of(factory: AwsFactory) -> lookups.Clients:
    return lambda service, region: factory.session.client(service, region_name=region)  # type: ignore[call-overload]


def test_an_ssm_parameter_is_its_value_and_a_missing_one_is_said_with_its_name(factory: AwsFactory) -> None:
    factory.client("ssm").put_parameter(Name="/car-rental/support-tier", Value="gold", Type="String")
    found = entry("ssm", region=REGION, parameterName="/car-rental/support-tier")
    assert lookups.look_up(found, clients_of(factory), ACCOUNT) == "gold"
    absent = entry("ssm", region=REGION, parameterName="/car-rental/none")
    with pytest.raises(UsageError, match="SSM parameter /car-rental/none does not exist") as err:
        lookups.look_up(absent, clients_of(factory), ACCOUNT)
    assert err.value.next_step and "put-parameter --name /car-rental/none" in err.value.next_step
    # the stack said what to take when there is none (value_from_lookup(..., default_value=...)): that, as the CLI
    tolerated = entry(
        "ssm", region=REGION, parameterName="/car-rental/none", ignoreErrorOnMissingContext=True, dummyValue="bronze"
    )
    assert lookups.look_up(tolerated, clients_of(factory), ACCOUNT) == "bronze"


def test_a_parameter_of_another_region_is_asked_there(factory: AwsFactory) -> None:
    factory.session.client("ssm", region_name="us-east-1").put_parameter(Name="/p", Value="east", Type="String")
    assert lookups.look_up(entry("ssm", region="us-east-1", parameterName="/p"), clients_of(factory), ACCOUNT) == "east"
    with pytest.raises(UsageError, match="does not exist"):
        lookups.look_up(entry("ssm", region=REGION, parameterName="/p"), clients_of(factory), ACCOUNT)


def test_the_availability_zones_are_the_available_ones_by_name(factory: AwsFactory) -> None:
    zones = lookups.look_up(entry("availability-zones", region=REGION), clients_of(factory), ACCOUNT)
    assert zones and all(z.startswith(REGION) for z in zones)
    assert zones == [z["ZoneName"] for z in factory.client("ec2").describe_availability_zones()["AvailabilityZones"]]


def test_an_endpoint_service_s_zones_are_its_own(factory: AwsFactory) -> None:
    service = f"com.amazonaws.{REGION}.s3"
    listed = factory.client("ec2").describe_vpc_endpoint_services(ServiceNames=[service])["ServiceDetails"]
    details = next(d for d in listed if d["ServiceName"] == service)  # the first, as the CLI takes (S3 has two)
    ask = entry("endpoint-service-availability-zones", region=REGION, serviceName=service)
    assert lookups.look_up(ask, clients_of(factory), ACCOUNT) == details["AvailabilityZones"]
    assert details["AvailabilityZones"]
    unknown = entry("endpoint-service-availability-zones", region=REGION, serviceName="com.example.none")
    with pytest.raises(UsageError, match=r"com\.example\.none' does not exist"):  # EC2's own refusal, said
        lookups.look_up(unknown, clients_of(factory), ACCOUNT)


def test_a_hosted_zone_is_the_one_of_that_name_public_or_private_of_a_vpc(factory: AwsFactory) -> None:
    route53 = factory.client("route53")
    public = route53.create_hosted_zone(Name="cars.example.com", CallerReference="1")["HostedZone"]
    route53.create_hosted_zone(Name="other.example.com", CallerReference="2")
    vpc = factory.client("ec2").create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    private = route53.create_hosted_zone(
        Name="cars.example.com",
        CallerReference="3",
        HostedZoneConfig={"PrivateZone": True},
        VPC={"VPCRegion": REGION, "VPCId": vpc},
    )["HostedZone"]
    ask = {"region": REGION, "domainName": "cars.example.com"}
    found = lookups.look_up(entry("hosted-zone", **ask), clients_of(factory), ACCOUNT)
    assert found == {"Id": public["Id"], "Name": "cars.example.com."}
    inside = lookups.look_up(entry("hosted-zone", **ask, privateZone=True, vpcId=vpc), clients_of(factory), ACCOUNT)
    assert inside == {"Id": private["Id"], "Name": "cars.example.com."}
    with pytest.raises(UsageError, match=r"no public hosted zone nothing\.example\.com\. found"):
        lookups.look_up(
            entry("hosted-zone", region=REGION, domainName="nothing.example.com"), clients_of(factory), ACCOUNT
        )


def test_a_provider_deploykit_does_not_answer_and_another_account_are_refused_naming_the_key(
    factory: AwsFactory,
) -> None:
    balancer = entry("cc-api-provider", region=REGION, typeName="AWS::IAM::Role")
    with pytest.raises(UsageError, match="does not look up 'cc-api-provider' values") as err:
        lookups.look_up(balancer, clients_of(factory), ACCOUNT)
    assert err.value.next_step and balancer["key"] in err.value.next_step
    with pytest.raises(UsageError, match="credentials are of account 210987654321"):
        lookups.look_up(entry("ssm", region=REGION, parameterName="/p"), clients_of(factory), "210987654321")
    # what inv lookup cannot answer is not sent to it alone: its value is to be written by hand
    assert str(lookups.refused([balancer], "dev").next_step).startswith("write the values under their keys")
    answerable = lookups.refused([entry("ssm", region=REGION, parameterName="/p")], "dev")
    assert str(answerable.next_step).startswith("inv lookup --env dev asks dev for them")


def test_the_file_keeps_what_it_held_and_is_written_sorted_as_the_cdk_cli_writes_it(tmp_path: Path) -> None:
    (tmp_path / "cdk").mkdir()
    assert lookups.read_context(tmp_path) == {}
    lookups.write_context(tmp_path, {"b": "2"})
    lookups.write_context(tmp_path, {"a": ["x", "y"]})
    text = (tmp_path / "cdk" / "cdk.context.json").read_text()
    assert json.loads(text) == {"a": ["x", "y"], "b": "2"}
    assert text == '{\n  "a": [\n    "x",\n    "y"\n  ],\n  "b": "2"\n}\n'


def test_two_writers_at_once_keep_every_key_and_a_reader_never_finds_half_a_file(tmp_path: Path) -> None:
    """Two inv lookup runs at once kept half the keys (each wrote what it read before the other wrote), and a
    synthesis reading the file while it was written found it no JSON: a helper's stress run, 11,047 of 16,396 reads."""
    (tmp_path / "cdk").mkdir()
    lookups.write_context(tmp_path, {"seed": "0"})
    stop = threading.Event()
    failures: list[str] = []

    def read() -> None:
        while not stop.is_set():
            try:
                lookups.read_context(tmp_path)
            except UsageError as exc:
                failures.append(exc.message)

    def write(prefix: str) -> None:
        for n in range(60):
            lookups.write_context(tmp_path, {f"{prefix}{n}": "x" * 2000})

    reader = threading.Thread(target=read)
    writers = [threading.Thread(target=write, args=(prefix,)) for prefix in ("a", "b")]
    reader.start()
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join()
    stop.set()
    reader.join()
    assert failures == []
    assert len(lookups.read_context(tmp_path)) == 121
    assert [p.name for p in (tmp_path / "cdk").iterdir()] == ["cdk.context.json"]  # nothing else left in cdk/
    context = tmp_path / "cdk" / "cdk.context.json"
    context.chmod(0o664)
    lookups.write_context(tmp_path, {"last": "1"})
    assert context.stat().st_mode & 0o777 == 0o664  # the file's mode kept, not the temporary file's 0600


VPC_APP = one_stack_app(
    "LookupStack",
    """
vpc = ec2.Vpc.from_lookup(stack, "Vpc", tags={"Name": "shared"})
cdk.CfnOutput(stack, "VpcId", value=vpc.vpc_id)
cdk.CfnOutput(stack, "Public", value=",".join(s.subnet_id for s in vpc.public_subnets))
cdk.CfnOutput(stack, "Isolated", value=",".join(s.subnet_id for s in vpc.isolated_subnets))
cdk.CfnOutput(stack, "Zones", value=",".join(vpc.availability_zones))
app.synth()
""",
)


def test_a_vpc_looked_up_is_what_the_cdk_library_builds_the_vpc_from(
    factory: AwsFactory, project: Path, tmp_path: Path
) -> None:
    """Vpc.from_lookup of a tagged VPC with a public subnet (a route to an internet gateway) and an isolated one in
    each of two zones: the real CDK app, given what inv lookup wrote, builds the VPC of those very subnets (it
    synthesized vpc-12345 and placeholders before)."""
    ec2 = factory.client("ec2")
    vpc = ec2.create_vpc(CidrBlock="10.1.0.0/16")["Vpc"]["VpcId"]
    ec2.create_tags(Resources=[vpc], Tags=[{"Key": "Name", "Value": "shared"}])
    ec2.create_vpc(CidrBlock="10.2.0.0/16")  # another, untagged: not matched
    igw = ec2.create_internet_gateway()["InternetGateway"]["InternetGatewayId"]
    ec2.attach_internet_gateway(InternetGatewayId=igw, VpcId=vpc)
    public_table = ec2.create_route_table(VpcId=vpc)["RouteTable"]["RouteTableId"]
    ec2.create_route(RouteTableId=public_table, DestinationCidrBlock="0.0.0.0/0", GatewayId=igw)
    public, isolated = [], []
    for i, zone in enumerate((f"{REGION}a", f"{REGION}b")):
        made = ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.1.{i}.0/24", AvailabilityZone=zone)["Subnet"]["SubnetId"]
        ec2.associate_route_table(RouteTableId=public_table, SubnetId=made)
        public.append(made)
        isolated.append(
            ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.1.{i + 10}.0/24", AvailabilityZone=zone)["Subnet"]["SubnetId"]
        )
    (project / "cdk").mkdir()
    (project / "cdk" / "app.py").write_text(VPC_APP)
    config = load_config(project / "deploy.toml")
    dev = config.environment("dev")
    out = tmp_path / "assembly"

    with pytest.raises(lookups.MissingLookups) as refused:
        synth.synthesize(config, dev, account=ACCOUNT, registry="", out_dir=out, check=False)
    [asked] = refused.value.entries
    assert asked["provider"] == "vpc-provider" and asked["props"]["filter"] == {"tag:Name": "shared"}
    value = lookups.look_up(asked, clients_of(factory), ACCOUNT)
    lookups.write_context(project, {asked["key"]: value})
    done = synth.synthesize(config, dev, account=ACCOUNT, registry="", out_dir=out, check=False)
    outputs = {k: v["Value"] for k, v in json.loads(done.templates["LookupStack"].read_text())["Outputs"].items()}
    assert outputs == {
        "VpcId": vpc,
        "Public": ",".join(public),
        "Isolated": ",".join(isolated),
        "Zones": f"{REGION}a,{REGION}b",
    }


def test_a_vpc_lookup_needs_exactly_one_vpc_and_the_older_answer_lists_each_type(factory: AwsFactory) -> None:
    ec2 = factory.client("ec2")
    ask = {"region": REGION, "filter": {"tag:Name": "shared"}, "returnAsymmetricSubnets": False}
    with pytest.raises(UsageError, match=r'no VPCs match \{"tag:Name": "shared"\}') as err:
        lookups.look_up(entry("vpc-provider", **ask), clients_of(factory), ACCOUNT)
    assert err.value.next_step and "narrow the filter" in err.value.next_step
    vpc = ec2.create_vpc(CidrBlock="10.1.0.0/16")["Vpc"]["VpcId"]
    ec2.create_tags(Resources=[vpc], Tags=[{"Key": "Name", "Value": "shared"}])
    subnets = [
        ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.1.{i}.0/24", AvailabilityZone=f"{REGION}{z}")["Subnet"]
        for i, z in enumerate("ba")
    ]
    ec2.create_tags(Resources=[s["SubnetId"] for s in subnets], Tags=[{"Key": "aws-cdk:subnet-name", "Value": "db"}])
    assert "vpnGatewayId" not in lookups.look_up(entry("vpc-provider", **ask), clients_of(factory), ACCOUNT)
    gateway = ec2.create_vpn_gateway(Type="ipsec.1")["VpnGateway"]["VpnGatewayId"]
    ec2.attach_vpn_gateway(VpcId=vpc, VpnGatewayId=gateway)
    found = lookups.look_up(entry("vpc-provider", **ask), clients_of(factory), ACCOUNT)
    assert found["vpcId"] == vpc and found["vpcCidrBlock"] == "10.1.0.0/16" and "subnetGroups" not in found
    assert found["vpnGatewayId"] == gateway
    assert found["availabilityZones"] == [f"{REGION}a", f"{REGION}b"]  # by zone, whatever order they were made in
    assert found["isolatedSubnetIds"] == [subnets[1]["SubnetId"], subnets[0]["SubnetId"]]
    assert found["isolatedSubnetNames"] == ["db"] and "publicSubnetIds" not in found
    other = ec2.create_vpc(CidrBlock="10.2.0.0/16")["Vpc"]["VpcId"]
    ec2.create_tags(Resources=[other], Tags=[{"Key": "Name", "Value": "shared"}])
    with pytest.raises(UsageError, match="2 VPCs match"):
        lookups.look_up(entry("vpc-provider", **ask), clients_of(factory), ACCOUNT)


THREE_LOOKUPS_APP = one_stack_app(
    "LookupStack",
    """
from aws_cdk import aws_kms as kms

image = ec2.MachineImage.lookup(name="car-rental-*", owners=["self"]).get_image(stack)
group = ec2.SecurityGroup.from_lookup_by_name(stack, "TasksGroup", "car-rental-tasks", ec2.Vpc.from_lookup(
    stack, "Vpc", vpc_id=context("vpc")))
key = kms.Key.from_lookup(stack, "AppKey", alias_name="alias/car-rental")
cdk.CfnOutput(stack, "Image", value=image.image_id)
cdk.CfnOutput(stack, "Group", value=group.security_group_id)
cdk.CfnOutput(stack, "Key", value=key.key_id)
app.synth()
""",
)


def test_an_image_a_security_group_and_a_key_looked_up_are_what_the_cdk_library_builds_from(
    factory: AwsFactory, project: Path, tmp_path: Path
) -> None:
    """MachineImage.lookup, SecurityGroup.from_lookup_by_name (in a looked-up VPC) and Key.from_lookup, as the CDK
    CLI answers them: the real CDK app, given what inv lookup found in moto, names those very resources."""
    ec2 = factory.client("ec2")
    vpc = ec2.create_vpc(CidrBlock="10.1.0.0/16")["Vpc"]["VpcId"]
    ec2.create_subnet(VpcId=vpc, CidrBlock="10.1.0.0/24", AvailabilityZone=f"{REGION}a")
    group = ec2.create_security_group(GroupName="car-rental-tasks", Description="tasks", VpcId=vpc)["GroupId"]
    ec2.create_security_group(GroupName="car-rental-tasks", Description="elsewhere")  # another VPC's: not matched
    instance = ec2.run_instances(ImageId="ami-12345678", MinCount=1, MaxCount=1)["Instances"][0]["InstanceId"]
    image = ec2.create_image(InstanceId=instance, Name="car-rental-2026")["ImageId"]
    kms = factory.client("kms")
    key = kms.create_key()["KeyMetadata"]["KeyId"]
    kms.create_alias(AliasName="alias/car-rental", TargetKeyId=key)
    (project / "cdk").mkdir()
    (project / "cdk" / "app.py").write_text(THREE_LOOKUPS_APP.replace('context("vpc")', repr(vpc)))
    config = load_config(project / "deploy.toml")
    dev, out = config.environment("dev"), tmp_path / "assembly"

    # the first round asks for the group in vpc-12345 (the VPC's placeholder), which fails; the second, given the
    # VPC, asks for it in that VPC, under another key, as the CDK CLI's rounds go
    written = commands.lookup(env="dev", runtime=moto_runtime(project, factory))
    assert len(written) == 4
    done = synth.synthesize(config, dev, account=ACCOUNT, registry="", out_dir=out, check=False)
    outputs = {k: v["Value"] for k, v in json.loads(done.templates["LookupStack"].read_text())["Outputs"].items()}
    assert outputs == {"Image": image, "Group": group, "Key": key}
    context = lookups.read_context(project)
    [answer] = [v for k, v in context.items() if k.startswith("security-group:")]
    assert answer == {"securityGroupId": group, "allowAllOutbound": False}  # moto's default egress has no ::/0


def test_the_newest_image_is_taken_and_a_missing_alias_or_image_is_said() -> None:
    ec2 = Mock(spec=["describe_images"])
    ec2.describe_images.return_value = {
        "Images": [
            {"ImageId": "ami-old", "CreationDate": "2025-01-02T00:00:00.000Z"},
            {"ImageId": "ami-new", "CreationDate": "2026-03-04T00:00:00.000Z"},
            {"ImageId": "ami-mid", "CreationDate": "2025-11-30T00:00:00.000Z"},
        ]
    }
    ask = entry("ami", region=REGION, owners=["self"], filters={"name": ["car-rental-*"]})
    assert lookups.look_up(ask, lambda service, region: ec2, ACCOUNT) == "ami-new"
    ec2.describe_images.assert_called_once_with(Owners=["self"], Filters=[{"Name": "name", "Values": ["car-rental-*"]}])
    ec2.describe_images.return_value = {"Images": []}
    with pytest.raises(UsageError, match="no image matches"):
        lookups.look_up(ask, lambda service, region: ec2, ACCOUNT)


BALANCER_APP = one_stack_app(
    "LookupStack",
    """
from aws_cdk import aws_elasticloadbalancingv2 as elbv2

shared = {"app": "shared"}
balancer = elbv2.ApplicationLoadBalancer.from_lookup(stack, "Alb", load_balancer_tags=shared)
listener = elbv2.ApplicationListener.from_lookup(stack, "Http", load_balancer_tags=shared, listener_port=80)
cdk.CfnOutput(stack, "Dns", value=balancer.load_balancer_dns_name)
cdk.CfnOutput(stack, "Listener", value=listener.listener_arn)
cdk.CfnOutput(stack, "Groups", value=",".join(listener.connections.security_groups[0].security_group_id for _ in [0]))
app.synth()
""",
)


def test_a_load_balancer_and_its_listener_looked_up_are_what_the_cdk_library_builds_from(
    factory: AwsFactory, project: Path, tmp_path: Path
) -> None:
    """ApplicationLoadBalancer.from_lookup and ApplicationListener.from_lookup by tags (another balancer untagged,
    another listener on 8080), as the CDK CLI answers them."""
    ec2, elbv2 = factory.client("ec2"), factory.client("elbv2")
    vpc = ec2.create_vpc(CidrBlock="10.1.0.0/16")["Vpc"]["VpcId"]
    subnets = [
        ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.1.{i}.0/24", AvailabilityZone=f"{REGION}{z}")["Subnet"]["SubnetId"]
        for i, z in enumerate("ab")
    ]
    group = ec2.create_security_group(GroupName="alb", Description="alb", VpcId=vpc)["GroupId"]
    made = []
    for name, tags in (("shared", [{"Key": "app", "Value": "shared"}]), ("other", [{"Key": "app", "Value": "other"}])):
        made.append(
            elbv2.create_load_balancer(Name=name, Subnets=subnets, SecurityGroups=[group], Tags=tags)["LoadBalancers"][
                0
            ]
        )
    shared = made[0]
    listeners = [
        elbv2.create_listener(
            LoadBalancerArn=shared["LoadBalancerArn"],
            Protocol="HTTP",
            Port=port,
            DefaultActions=[{"Type": "fixed-response", "FixedResponseConfig": {"StatusCode": "200"}}],
        )["Listeners"][0]["ListenerArn"]
        for port in (80, 8080)
    ]
    (project / "cdk").mkdir()
    (project / "cdk" / "app.py").write_text(BALANCER_APP)

    written = commands.lookup(env="dev", runtime=moto_runtime(project, factory))
    # the library then looks up what they name: their security groups, the balancer's VPC (a second round)
    providers = {key.split(":")[0] for key in written}
    assert providers == {"load-balancer", "load-balancer-listener", "security-group", "vpc-provider"}
    config = load_config(project / "deploy.toml")
    done = synth.synthesize(
        config, config.environment("dev"), account=ACCOUNT, registry="", out_dir=tmp_path / "out", check=False
    )
    outputs = {k: v["Value"] for k, v in json.loads(done.templates["LookupStack"].read_text())["Outputs"].items()}
    assert outputs == {"Dns": shared["DNSName"], "Listener": listeners[0], "Groups": group}
