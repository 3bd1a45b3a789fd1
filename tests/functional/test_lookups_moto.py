"""The values a CDK app looks up (deploykit.lookups), asked of moto as the CDK CLI asks AWS, and kept in
cdk/cdk.context.json as the CLI keeps them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from deploykit import lookups
from deploykit.aws import AwsFactory
from deploykit.errors import UsageError

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
    vpc = entry("vpc-provider", region=REGION, filter={"vpc-id": "vpc-0abc"})
    with pytest.raises(UsageError, match="does not look up 'vpc-provider' values") as err:
        lookups.look_up(vpc, clients_of(factory), ACCOUNT)
    assert err.value.next_step and vpc["key"] in err.value.next_step
    with pytest.raises(UsageError, match="credentials are of account 210987654321"):
        lookups.look_up(entry("ssm", region=REGION, parameterName="/p"), clients_of(factory), "210987654321")
    # what inv lookup cannot answer is not sent to it alone: its value is to be written by hand
    assert str(lookups.refused([vpc], "dev").next_step).startswith("write the values under their keys")
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
