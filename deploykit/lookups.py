"""CDK lookups: the values a stack looks up in its account at synthesis (``StringParameter.value_from_lookup``,
``Vpc.from_lookup``, ``HostedZone.from_lookup``, ``MachineImage.lookup``, ``SecurityGroup.from_lookup_by_id``,
``Key.from_lookup``, ``ApplicationLoadBalancer.from_lookup``, the stack's availability zones...: :data:`ANSWERS`).

The CDK app does not look them up itself: it synthesizes a placeholder in their place (``vpc-12345``,
``dummy-value-for-/my/param``) and lists what it missed in its cloud assembly (``manifest.json``, ``missing``).
The CDK CLI then asks AWS, keeps the answers in ``cdk/cdk.context.json`` and runs the app again with them. deploykit
runs the app itself, so it does the same in two halves: a synthesis gives the app what ``cdk/cdk.context.json``
holds and refuses an assembly that still misses a value (its placeholder would be deployed as real), and
``inv lookup`` asks the environment for what is missing and writes it there, to be committed: a deploy is of a
commit, and every later synthesis of it gives the same templates, as CDK's own advice to commit the file intends.
The CLI gives the app the ``context`` of ``cdk/cdk.json`` too (a project's feature flags): :func:`project_context`.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from deploykit import local_lock
from deploykit.errors import UsageError

PROJECT_FILE = "cdk/cdk.json"  # the CDK CLI's settings of the app: its feature flags under "context"
CONTEXT_FILE = "cdk/cdk.context.json"  # the CDK CLI's name and place for it (beside cdk.json, in the app's folder)
MANIFEST = "manifest.json"
SUBNET_TYPES = ("Public", "Private", "Isolated")  # what a subnet can be: its aws-cdk:subnet-type tag's values

Clients = Callable[[str, str], Any]  # (service, region) → a boto3 client of the environment's credentials


def read_context(root: Path) -> dict[str, Any]:
    """What ``cdk/cdk.context.json`` holds (nothing when there is no such file); UsageError when it is no JSON
    object."""
    return _json_object(
        root, CONTEXT_FILE, "the CDK app's looked-up values are kept there", "delete it and run: inv lookup"
    )


def project_context(root: Path) -> dict[str, Any]:
    """The context the CDK CLI gives the app from the project's own files: the ``context`` of ``cdk/cdk.json`` (the
    feature flags a CDK project keeps there: without them the app makes other templates than ``cdk deploy`` made),
    under what ``cdk/cdk.context.json`` holds."""
    flags = _project_settings(root).get("context", {})
    if not isinstance(flags, dict):
        raise UsageError(
            f"{PROJECT_FILE}'s context is a JSON {type(flags).__name__}, not an object of context values by key",
            next_step=f"fix it in {PROJECT_FILE}",
        )
    return {**flags, **read_context(root)}


def project_strict(root: Path) -> bool:
    """Whether ``cdk/cdk.json`` sets ``"strict": true``, the CDK CLI's ``--strict``: an assembly the app recorded
    warnings in is not deployed."""
    return _project_settings(root).get("strict") is True


def _project_settings(root: Path) -> dict[str, Any]:
    """``cdk/cdk.json``: the CDK CLI's settings of the app (nothing when there is none)."""
    return _json_object(root, PROJECT_FILE, "the CDK CLI's settings of the app", "see the CDK docs on cdk.json")


def _json_object(root: Path, name: str, what: str, otherwise: str) -> dict[str, Any]:
    """The JSON object in file ``name`` under ``root`` (nothing when there is no such file); UsageError naming it,
    ``what`` it holds and the way out (``otherwise``), when it cannot be read or holds no object."""
    try:
        text = (root / name).read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise UsageError(f"{name} cannot be read: {exc}", next_step=f"fix or delete {name}") from None
    try:
        values = json.loads(text)
    except ValueError as exc:
        raise UsageError(
            f"{name} is not valid JSON ({exc}): {what}",
            next_step=f"fix it (git diff {name} shows what changed), or {otherwise}",
        ) from None
    if not isinstance(values, dict):
        raise UsageError(
            f"{name} holds a JSON {type(values).__name__}, not an object: {what}",
            next_step=f"fix it, or {otherwise}",
        )
    return values


def missing(out_dir: Path) -> list[dict[str, Any]]:
    """The lookups the cloud assembly in ``out_dir`` says the app missed (``key``, ``provider``, ``props`` each)."""
    try:
        manifest = json.loads((out_dir / MANIFEST).read_text())
    except (OSError, ValueError):
        return []  # no readable manifest: the synthesis' own check says so
    return [m for m in manifest.get("missing") or () if isinstance(m, dict) and m.get("key")]


def describe(entry: Mapping[str, Any]) -> str:
    """One missed lookup, as a person names it: what, in which account and region."""
    props = entry.get("props") or {}
    where = f"account {props.get('account', '?')}, {props.get('region', '?')}"
    provider = entry.get("provider")
    if provider == "ssm":
        return f"SSM parameter {props.get('parameterName')} ({where})"
    if provider == "availability-zones":
        return f"the availability zones ({where})"
    if provider == "hosted-zone":
        private = " (private)" if props.get("privateZone") else ""
        return f"hosted zone {props.get('domainName')}{private} ({where})"
    if provider == "vpc-provider":
        return f"VPC {json.dumps(props.get('filter') or {}, sort_keys=True)} ({where})"
    if provider == "ami":
        return f"the newest image of {json.dumps(props.get('filters') or {}, sort_keys=True)} ({where})"
    if provider == "security-group":
        return f"security group {props.get('securityGroupId') or props.get('securityGroupName')} ({where})"
    if provider == "key-provider":
        return f"KMS key {props.get('aliasName')} ({where})"
    if provider == "endpoint-service-availability-zones":
        return f"the zones of endpoint service {props.get('serviceName')} ({where})"
    if provider in ("load-balancer", "load-balancer-listener"):
        what = "listener" if provider.endswith("listener") else "load balancer"
        named = props.get("listenerArn") or props.get("loadBalancerArn") or props.get("loadBalancerTags")
        return f"{what} {json.dumps(named, sort_keys=True)} ({where})"
    return f"{provider} {entry.get('key')} ({where})"


class MissingLookups(UsageError):
    """A synthesis whose assembly misses looked-up values (``entries``, as the manifest lists them)."""

    def __init__(self, message: str, next_step: str, entries: list[dict[str, Any]]) -> None:
        super().__init__(message, next_step)
        self.entries = entries


def refused(entries: list[dict[str, Any]], env: str) -> MissingLookups:
    """The refusal of an assembly that misses ``entries``: its placeholders must not be deployed."""
    names = "; ".join(describe(e) for e in entries)
    answerable = all(e.get("provider") in ANSWERS for e in entries)
    how = (
        f"inv lookup --env {env} asks {env} for them and writes them to {CONTEXT_FILE}; commit that file, then rerun"
        if answerable
        else f"write the values under their keys in {CONTEXT_FILE} (inv lookup --env {env} names the keys and "
        "answers every lookup but Cloud Control's), commit that file, then rerun"
    )
    return MissingLookups(
        f"the CDK app looks up {len(entries)} value(s) {CONTEXT_FILE} does not hold: {names}. It synthesized a "
        "placeholder in their place, which a deploy would make real: nothing was deployed",
        how,
        entries,
    )


def look_up(entry: Mapping[str, Any], clients: Clients, account: str) -> Any:
    """The value of one missed lookup, asked of the environment as the CDK CLI asks it; UsageError naming what
    could not be answered and why."""
    props = entry.get("props") or {}
    provider = entry.get("provider")
    if provider not in ANSWERS:
        raise UsageError(
            f"{describe(entry)}: deploykit does not look up {provider!r} values",
            next_step=f"write its value under {entry.get('key')} in {CONTEXT_FILE} (the CDK CLI's `cdk synth` in a "
            "checkout with AWS access writes it there too), commit that file, then rerun",
        )
    if str(props.get("account")) != account:
        raise UsageError(
            f"{describe(entry)}: the environment's credentials are of account {account}, not that one",
            next_step="run inv lookup with the credentials of that account (AWS_PROFILE=...), or write the value "
            f"under {entry.get('key')} in {CONTEXT_FILE}",
        )
    service, answer = ANSWERS[str(provider)]
    try:
        return answer(props, clients(service, str(props.get("region"))))
    except (ClientError, BotoCoreError) as exc:
        raise UsageError(
            f"{describe(entry)} could not be looked up: {exc}",
            next_step="check the credentials' permissions and the name in the stack, then rerun inv lookup",
        ) from None


def _zones(props: Mapping[str, Any], ec2: Any) -> list[str]:
    """The stack's availability zones: the region's available ones."""
    return [
        z["ZoneName"] for z in ec2.describe_availability_zones()["AvailabilityZones"] if z.get("State") == "available"
    ]


def _endpoint_zones(props: Mapping[str, Any], ec2: Any) -> list[str]:
    """``InterfaceVpcEndpoint(lookup_supported_azs=True)``: the zones of the endpoint service (its first listing)."""
    name = str(props.get("serviceName"))
    details = ec2.describe_vpc_endpoint_services(ServiceNames=[name])["ServiceDetails"]
    return next((list(d.get("AvailabilityZones") or ()) for d in details if d.get("ServiceName") == name), [])


def _parameter(props: Mapping[str, Any], ssm: Any) -> Any:
    name = str(props.get("parameterName"))
    try:
        return ssm.get_parameter(Name=name)["Parameter"]["Value"]
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") != "ParameterNotFound":
            raise
    if props.get("ignoreErrorOnMissingContext") and "dummyValue" in props:  # the stack's value when there is none
        return props["dummyValue"]
    raise UsageError(
        f"SSM parameter {name} does not exist in account {props.get('account')}, {props.get('region')}",
        next_step=f"create it (aws ssm put-parameter --name {name} ...), or fix the name in the stack, then rerun "
        "inv lookup",
    )


def _hosted_zone(props: Mapping[str, Any], route53: Any) -> dict[str, str]:
    domain = str(props.get("domainName")).rstrip(".") + "."
    private = bool(props.get("privateZone"))
    vpc = props.get("vpcId")
    listed = route53.list_hosted_zones_by_name(DNSName=domain)["HostedZones"]
    found = []
    for zone in listed:
        if zone["Name"] != domain or bool(zone.get("Config", {}).get("PrivateZone")) != private:
            continue
        if vpc and vpc not in {v["VPCId"] for v in route53.get_hosted_zone(Id=zone["Id"]).get("VPCs") or ()}:
            continue
        found.append(zone)
    if len(found) != 1:
        what = f"{'private' if private else 'public'} hosted zone {domain}" + (f" of {vpc}" if vpc else "")
        raise UsageError(
            f"{len(found) or 'no'} {what} found in account {props.get('account')}: the lookup needs exactly one",
            next_step="fix the domain (or privateZone, vpcId) in the stack, then rerun inv lookup",
        )
    return {"Id": found[0]["Id"], "Name": found[0]["Name"]}


def _image(props: Mapping[str, Any], ec2: Any) -> str:
    """``MachineImage.lookup``: the newest image the owners and filters match."""
    filters = [{"Name": name, "Values": list(values)} for name, values in (props.get("filters") or {}).items()]
    asked: dict[str, Any] = {"Filters": filters}
    if props.get("owners"):
        asked["Owners"] = list(props["owners"])
    images = [i for i in ec2.describe_images(**asked)["Images"] if i.get("ImageId")]
    if not images:
        raise UsageError(
            f"no image matches {json.dumps(asked, sort_keys=True)} in account {props.get('account')}, "
            f"{props.get('region')}",
            next_step="fix the name, owners or filters of MachineImage.lookup in the stack, then rerun inv lookup",
        )
    return str(max(images, key=lambda i: str(i.get("CreationDate") or ""))["ImageId"])


def _security_group(props: Mapping[str, Any], ec2: Any) -> dict[str, Any]:
    """``SecurityGroup.from_lookup_by_id`` / ``_by_name``: the one group, and whether it lets all traffic out (to
    0.0.0.0/0 and ::/0, every protocol)."""
    asked: dict[str, Any] = {}
    if props.get("securityGroupId"):
        asked["GroupIds"] = [props["securityGroupId"]]
    filters = [{"Name": "vpc-id", "Values": [props["vpcId"]]}] if props.get("vpcId") else []
    if props.get("securityGroupName"):
        filters.append({"Name": "group-name", "Values": [props["securityGroupName"]]})
    if filters:
        asked["Filters"] = filters
    groups = ec2.describe_security_groups(**asked)["SecurityGroups"]
    if len(groups) != 1:
        raise UsageError(
            f"{len(groups) or 'no'} security groups match {json.dumps(asked, sort_keys=True)} in account "
            f"{props.get('account')}: the lookup needs exactly one",
            next_step="fix the id, or the name and VPC, of the lookup in the stack, then rerun inv lookup",
        )
    out = groups[0].get("IpPermissionsEgress") or ()
    every = [p for p in out if p.get("IpProtocol") == "-1"]
    v4 = any(r.get("CidrIp") == "0.0.0.0/0" for p in every for r in p.get("IpRanges") or ())
    v6 = any(r.get("CidrIpv6") == "::/0" for p in every for r in p.get("Ipv6Ranges") or ())
    return {"securityGroupId": groups[0]["GroupId"], "allowAllOutbound": v4 and v6}


def _key(props: Mapping[str, Any], kms: Any) -> dict[str, str]:
    """``Key.from_lookup``: the key its alias names."""
    alias = props.get("aliasName")
    for page in kms.get_paginator("list_aliases").paginate():
        for entry in page.get("Aliases") or ():
            if entry.get("AliasName") == alias and entry.get("TargetKeyId"):
                return {"keyId": str(entry["TargetKeyId"])}
    dummy = props.get("dummyValue")
    if props.get("ignoreErrorOnMissingContext") and isinstance(dummy, dict) and "keyId" in dummy:
        return {"keyId": str(dummy["keyId"])}
    raise UsageError(
        f"no KMS key has the alias {alias} in account {props.get('account')}, {props.get('region')}",
        next_step="fix the alias in the stack, or make the key and alias, then rerun inv lookup",
    )


def _balancers(props: Mapping[str, Any], elbv2: Any) -> list[dict[str, Any]]:
    """The load balancers of the lookup's type that its ARN, or every tag it names, matches."""
    asked = {"LoadBalancerArns": [props["loadBalancerArn"]]} if props.get("loadBalancerArn") else {}
    pages = elbv2.get_paginator("describe_load_balancers").paginate(**asked)
    found = [lb for page in pages for lb in page["LoadBalancers"] if lb.get("Type") == props.get("loadBalancerType")]
    wanted = {(str(t.get("key")), str(t.get("value"))) for t in props.get("loadBalancerTags") or ()}
    if not wanted or not found:
        return found
    tags: dict[str, set[tuple[str, str]]] = {}
    arns = [lb["LoadBalancerArn"] for lb in found]
    for start in range(0, len(arns), 20):  # DescribeTags takes 20 at a time
        for described in elbv2.describe_tags(ResourceArns=arns[start : start + 20])["TagDescriptions"]:
            tags[described["ResourceArn"]] = {(t["Key"], t["Value"]) for t in described.get("Tags") or ()}
    return [lb for lb in found if wanted <= tags.get(lb["LoadBalancerArn"], set())]


def _one_balancer(props: Mapping[str, Any], elbv2: Any) -> dict[str, Any]:
    found = _balancers(props, elbv2)
    if len(found) != 1:
        asked = {k: props[k] for k in ("loadBalancerType", "loadBalancerArn", "loadBalancerTags") if props.get(k)}
        raise UsageError(
            f"{len(found) or 'no'} load balancers match {json.dumps(asked, sort_keys=True)} in account "
            f"{props.get('account')}, {props.get('region')}: the lookup needs exactly one",
            next_step="fix the ARN or tags of the lookup in the stack, then rerun inv lookup",
        )
    return found[0]


def _balancer(props: Mapping[str, Any], elbv2: Any) -> dict[str, Any]:
    """``ApplicationLoadBalancer.from_lookup`` / ``NetworkLoadBalancer.from_lookup``: the one load balancer."""
    lb = _one_balancer(props, elbv2)
    return {
        "loadBalancerArn": lb["LoadBalancerArn"],
        "loadBalancerCanonicalHostedZoneId": lb["CanonicalHostedZoneId"],
        "loadBalancerDnsName": lb["DNSName"],
        "vpcId": lb["VpcId"],
        "securityGroupIds": list(lb.get("SecurityGroups") or ()),
        "ipAddressType": "ipv4" if lb.get("IpAddressType") == "ipv4" else "dualstack",
    }


def _listener(props: Mapping[str, Any], elbv2: Any) -> dict[str, Any]:
    """``ApplicationListener.from_lookup`` / ``NetworkListener.from_lookup``: the listener its ARN names, else the
    one of the matching load balancers with its port and protocol; with its load balancer's security groups."""
    if props.get("listenerArn"):
        [listener] = elbv2.describe_listeners(ListenerArns=[props["listenerArn"]])["Listeners"]
        lb = _one_balancer({**props, "loadBalancerArn": listener["LoadBalancerArn"]}, elbv2)
        return {
            "listenerArn": listener["ListenerArn"],
            "listenerPort": listener["Port"],
            "securityGroupIds": list(lb.get("SecurityGroups") or ()),
        }
    balancers = {lb["LoadBalancerArn"]: lb for lb in _balancers(props, elbv2)}
    port, protocol = props.get("listenerPort"), props.get("listenerProtocol")
    found = [
        listener
        for arn in balancers
        for page in elbv2.get_paginator("describe_listeners").paginate(LoadBalancerArn=arn)
        for listener in page["Listeners"]
        if (not port or listener.get("Port") == port) and (not protocol or listener.get("Protocol") == protocol)
    ]
    if len(found) != 1:
        keys = ("loadBalancerArn", "loadBalancerTags", "listenerPort", "listenerProtocol")
        asked = {k: props[k] for k in keys if props.get(k)}
        raise UsageError(
            f"{len(found) or 'no'} listeners match {json.dumps(asked, sort_keys=True, default=str)} in account "
            f"{props.get('account')}: the lookup needs exactly one",
            next_step="fix the load balancer, port or protocol of the lookup in the stack, then rerun inv lookup",
        )
    return {
        "listenerArn": found[0]["ListenerArn"],
        "listenerPort": found[0]["Port"],
        "securityGroupIds": list(balancers[found[0]["LoadBalancerArn"]].get("SecurityGroups") or ()),
    }


def _vpc(props: Mapping[str, Any], ec2: Any) -> dict[str, Any]:
    """What ``Vpc.from_lookup`` is given, as the CDK CLI's VPC provider answers: the one VPC the filter matches, its
    subnets grouped by type and name, each with its route table, and its VPN gateway."""
    filters = [{"Name": name, "Values": [value]} for name, value in (props.get("filter") or {}).items()]
    vpcs = ec2.describe_vpcs(Filters=filters)["Vpcs"]
    if len(vpcs) != 1:
        raise UsageError(
            f"{len(vpcs) or 'no'} VPCs match {json.dumps(props.get('filter') or {}, sort_keys=True)} in account "
            f"{props.get('account')}, {props.get('region')}: the lookup needs exactly one",
            next_step="narrow the filter (vpc_id, tags) of Vpc.from_lookup in the stack, then rerun inv lookup",
        )
    vpc = vpcs[0]
    of_vpc = [{"Name": "vpc-id", "Values": [vpc["VpcId"]]}]
    tables = ec2.describe_route_tables(Filters=of_vpc)["RouteTables"]
    subnets = [
        _subnet(s, tables, props.get("subnetGroupNameTag")) for s in ec2.describe_subnets(Filters=of_vpc)["Subnets"]
    ]
    groups: dict[tuple[str, str], list[dict[str, str]]] = {}
    for subnet in subnets:
        groups.setdefault((subnet["type"], subnet["name"]), []).append(subnet)
    for members in groups.values():
        members.sort(key=lambda s: s["az"])
    answer: dict[str, Any] = {"vpcId": vpc["VpcId"], "vpcCidrBlock": vpc["CidrBlock"], "ownerAccountId": vpc["OwnerId"]}
    if props.get("returnAsymmetricSubnets"):
        answer["availabilityZones"] = []
        answer["subnetGroups"] = [
            {
                "name": name,
                "type": kind,
                "subnets": [
                    {"subnetId": s["id"], "cidr": s["cidr"], "availabilityZone": s["az"], "routeTableId": s["table"]}
                    for s in members
                ],
            }
            for (kind, name), members in groups.items()
        ]
    else:
        answer.update(_symmetric(groups))
    if props.get("returnVpnGateways", True):
        gateways = ec2.describe_vpn_gateways(
            Filters=[
                {"Name": "attachment.vpc-id", "Values": [vpc["VpcId"]]},
                {"Name": "attachment.state", "Values": ["attached"]},
                {"Name": "state", "Values": ["available"]},
            ]
        )["VpnGateways"]
        if len(gateways) == 1:
            answer["vpnGatewayId"] = gateways[0]["VpnGatewayId"]
    return answer


def _subnet(subnet: Mapping[str, Any], tables: list[dict[str, Any]], name_tag: str | None) -> dict[str, str]:
    """One subnet as the VPC provider tells it: its type from its ``aws-cdk:subnet-type`` tag, else public when it
    maps public IPs or routes to an internet gateway, private when it routes 0.0.0.0/0 to a NAT or transit gateway,
    else isolated; its group's name from ``name_tag`` (or ``aws-cdk:subnet-name``), else its type."""
    tags = {t["Key"]: t["Value"] for t in subnet.get("Tags") or ()}
    own = next(
        (t for t in tables if any(a.get("SubnetId") == subnet["SubnetId"] for a in t.get("Associations") or ())), None
    )
    main = next((t for t in tables if any(a.get("Main") for a in t.get("Associations") or ())), None)
    routes = (own or main or {}).get("Routes") or ()
    kind = tags.get("aws-cdk:subnet-type")
    if kind is None:
        if subnet.get("MapPublicIpOnLaunch") or any(str(r.get("GatewayId", "")).startswith("igw-") for r in routes):
            kind = "Public"
        elif any(
            (r.get("NatGatewayId") or r.get("TransitGatewayId")) and r.get("DestinationCidrBlock") == "0.0.0.0/0"
            for r in routes
        ):
            kind = "Private"
        else:
            kind = "Isolated"
    where = f"subnet {subnet['SubnetId']}"
    if kind not in SUBNET_TYPES:
        raise UsageError(
            f"{where} is tagged aws-cdk:subnet-type={kind}, which is none of {', '.join(SUBNET_TYPES)}",
            next_step="fix the subnet's tag, then rerun inv lookup",
        )
    if name_tag and name_tag not in tags:
        raise UsageError(
            f"{where} has no tag {name_tag}, which the stack groups the VPC's subnets by (subnet_group_name_tag)",
            next_step="tag it, or fix subnet_group_name_tag in the stack, then rerun inv lookup",
        )
    table = (own or main or {}).get("RouteTableId")
    if not table:
        raise UsageError(
            f"{where} has no route table (and its VPC no main one)", next_step="give it one, then rerun inv lookup"
        )
    name = tags.get(name_tag or "aws-cdk:subnet-name") or kind
    return {
        "id": subnet["SubnetId"],
        "az": subnet["AvailabilityZone"],
        "cidr": subnet["CidrBlock"],
        "type": kind,
        "name": name,
        "table": table,
    }


def _symmetric(groups: Mapping[tuple[str, str], list[dict[str, str]]]) -> dict[str, Any]:
    """The older answer (``returnAsymmetricSubnets`` false): one list of zones every group spans alike, and each
    type's subnet ids, group names and route tables (a type without a subnet left out)."""
    zones = [s["az"] for s in next(iter(groups.values()), [])]
    for members in groups.values():
        if [s["az"] for s in members] != zones:
            raise UsageError(
                f"not all the VPC's subnet groups span the same zones ({[s['az'] for s in members]} vs {zones})",
                next_step="look it up with return_asymmetric_subnets=True in Vpc.from_lookup, then rerun inv lookup",
            )
    answer: dict[str, Any] = {"availabilityZones": zones}
    for kind in ("isolated", "private", "public"):
        of_kind = [(name, members) for (k, name), members in groups.items() if k.lower() == kind]
        if of_kind:
            answer[f"{kind}SubnetIds"] = [s["id"] for _, members in of_kind for s in members]
            answer[f"{kind}SubnetNames"] = [name for name, _ in of_kind]
            answer[f"{kind}SubnetRouteTableIds"] = [s["table"] for _, members in of_kind for s in members]
    return answer


# each provider deploykit answers, by the name the assembly gives it: the client its answer asks of, and the answer
ANSWERS: dict[str, tuple[str, Callable[[Mapping[str, Any], Any], Any]]] = {
    "ssm": ("ssm", _parameter),
    "availability-zones": ("ec2", _zones),
    "hosted-zone": ("route53", _hosted_zone),
    "vpc-provider": ("ec2", _vpc),
    "ami": ("ec2", _image),
    "security-group": ("ec2", _security_group),
    "key-provider": ("kms", _key),
    "endpoint-service-availability-zones": ("ec2", _endpoint_zones),
    "load-balancer": ("elbv2", _balancer),
    "load-balancer-listener": ("elbv2", _listener),
}


def write_context(root: Path, values: Mapping[str, Any]) -> Path:
    """``values`` added to ``cdk/cdk.context.json`` (what it held kept), written as the CDK CLI writes it (keys
    sorted, two-space indent), so a commit of it diffs as one. One command of the checkout at a time, and whole: a
    synthesis reading it while it was written found it no JSON, and two ``inv lookup`` runs at once lost half its
    keys (deploykit/local_lock.py)."""
    from deploykit.synth import OUT_ROOT  # synth reads this module's values

    path = root / CONTEXT_FILE
    lock = local_lock.lock_file(root / OUT_ROOT, path.name)
    with local_lock.held(lock, what=CONTEXT_FILE):
        merged = {**read_context(root), **values}
        text = json.dumps(merged, indent=2, sort_keys=True) + "\n"
        # written beside the lock (under cdk.out/, which git ignores) and moved into place at once
        with tempfile.NamedTemporaryFile("w", dir=lock.parent, delete=False, encoding="utf-8") as written:
            written.write(text)
        if path.exists():  # the file's own mode, not the temporary file's 0600
            shutil.copymode(path, written.name)
        else:
            os.chmod(written.name, 0o644)
        try:
            os.replace(written.name, path)
        except OSError:  # cdk.out on another file system (a link): written in place, still under the lock
            os.unlink(written.name)
            path.write_text(text, encoding="utf-8")
    return path
