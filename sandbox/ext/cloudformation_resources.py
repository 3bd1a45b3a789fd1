"""CloudFormation's resource providers for the sandbox: how each resource type of a template is created,
updated and deleted through moto's own backends, so that what a stack makes exists and answers its own
API (and, where the sandbox runs things, really runs).

Used by :mod:`sandbox.ext.cloudformation`, which works out the order, the events and the rollbacks. A
provider is called with the sandbox lock held, except :meth:`Provider.wait`, which runs without it (an ECS
service waits for its deployment to complete, as CloudFormation does).

Providers, by what moto's own CloudFormation models lacked (short names):

- ``cognito_user_pool``, ``cognito_user_pool_client``: moto had neither; the pool and the app client are
  made with their API settings (password policy, username attributes, auth flows, token validities...).
- ``lambda_alias``, ``lambda_version_description``: moto had no alias (its provisioned concurrency is waited for
  until READY, as AWS's CloudFormation waits), and published versions without their description.
  ``lambda_function_settings``: tags, architectures and a missing code object answer as Lambda does.
- ``apigw_stage``, ``apigw_account``, ``apigw_model``, ``apigw_request_validator``,
  ``apigw_gateway_response``: moto had none of them. ``apigw_method_any_integration``: moto read
  ``Integration.IntegrationHttpMethod`` even for MOCK integrations and dropped request models, validators,
  method and integration responses.
- ``s3_bucket_settings``: moto kept only encryption and tags; versioning, public access block, ownership
  controls, lifecycle rules, CORS and logging are applied too. ``bucket_logging_before_its_policy``: the
  logging target's bucket policy may come later in the template (as CDK orders it); AWS accepts that,
  moto refused it. ``s3_bucket_policy``: moto had no AWS::S3::BucketPolicy.
- ``ssm_parameter``: moto's model failed on the type's map of tags, and could not update a parameter.
- ``cloudwatch_alarm``: moto had no AWS::CloudWatch::Alarm (a placeholder, no alarm); it is made, changed in
  place (its state kept) and deleted through moto's CloudWatch, whose alarms the sandbox evaluates.
- ``sqs_queue_in_place``, ``sns_topic_in_place``: moto replaced a queue, and made a topic again (its subscriptions
  lost), for any change; as on AWS only a new name or FIFO setting replaces them now. ``sns_subscription``: moto had
  no AWS::SNS::Subscription, so a topic's subscriber in a template received nothing.
- ``dynamodb_table_settings``: point-in-time recovery is applied; ``ecr_repository_lifecycle``: the
  lifecycle policy is applied.
- ``ecs_task_definition_settings``: moto registered only family, containers, volumes and memory;
  network mode, cpu, roles, compatibilities and runtime platform are kept too.
  ``ecs_service_settings``: moto dropped LoadBalancers ("TODO"), the deployment configuration, the
  health-check grace period, the network configuration and the launch type; they reach the ECS runtime,
  and an ECS service resource completes only when its deployment has (its circuit breaker fails it), as on
  AWS. ``ecs_cluster_settings``: cluster settings and tags are kept.
- ``elbv2_target_group_settings``: health-check settings and target group attributes (deregistration
  delay...) reach the ALB extension, on create and on update. ``elbv2_load_balancer_settings``: type,
  tags, attributes, and the LoadBalancerFullName attribute.
- ``ec2_security_group_egress``: moto had no AWS::EC2::SecurityGroupEgress. ``ec2_deletes``: moto could
  not delete most EC2 networking resources, so a deleted stack left a VPC that could not go.
- ``placeholder``: a type neither moto nor this module knows is accepted with a log line and a
  generated physical id (so a harmless resource does not fail its stack); Fn::GetAtt on it fails.

Everything else goes to moto's own model of the type (``moto_model``), which serves IAM roles and
policies, log groups, VPCs, subnets, route tables, routes, gateways, flow logs, ingress rules, listeners,
Lambda permissions and API Gateway resources well enough.

Limits: what a resource is made of is what moto keeps of it; what the sandbox does not run stays
cosmetic (security groups and IAM policies are not enforced; API Gateway request validators, models and
gateway responses exist but the stages do not apply them; flow logs deliver nothing). In-place updates
are done for the properties the templates change (ECS service counts and settings, target group health
checks and attributes, Lambda code and configuration, aliases, stages, Cognito settings, S3 settings,
log retention, policies); a DynamoDB table's indexes and billing mode are not updated in place (a log
line says so).
"""

from __future__ import annotations

import copy
import json
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, ClassVar

from moto.backends import get_backend
from moto.cloudformation.exceptions import UnformattedGetAttTemplateException
from moto.cloudformation.parsing import generate_resource_name, get_model_map
from moto.core.utils import pascal_to_camelcase, remap_nested_keys

from sandbox.ext import alarms, provisioned

if TYPE_CHECKING:
    from sandbox.ext.ecs_runtime import EcsRuntime
    from sandbox.server import Sandbox

log = logging.getLogger("sandbox.cloudformation")

ALL = "*"  # in Provider.replace_on: any property change replaces the resource
PARTITION_SERVICES = frozenset({"s3", "iam"})  # moto keys these backends by partition, not region
SERVICE_STABILIZATION_TIMEOUT = 900.0  # seconds an ECS service resource waits for its deployment


class ResourceError(Exception):
    """A resource could not be created, updated or deleted; the message is the event's status reason."""


def now() -> datetime:
    return datetime.now(UTC)


class Record:
    """One physical resource of a stack, as CloudFormation keeps it: what Ref and Fn::GetAtt answer."""

    def __init__(
        self,
        logical_id: str,
        resource_type: str,
        physical_id: str,
        properties: dict[str, Any],
        *,
        model: Any = None,
        attributes: dict[str, Any] | None = None,
    ) -> None:
        self.logical_resource_id = logical_id
        self.cf_resource_type = resource_type
        self.physical_resource_id = physical_id
        self.properties = properties  # resolved, as last applied
        self.model = model  # moto's object, when there is one
        self.attributes: dict[str, Any] = attributes or {}
        self.extra: dict[str, Any] = {}  # what a provider remembers between calls
        self.status = "CREATE_COMPLETE"
        self.status_reason = ""
        self.timestamp = now()

    def get_cfn_attribute(self, name: str) -> Any:
        value = self.attributes.get(name)
        if value is not None:
            return value() if callable(value) else value
        getter = getattr(self.model, "get_cfn_attribute", None)
        if getter is not None:
            try:
                return getter(name)
            except NotImplementedError:
                pass
        raise UnformattedGetAttTemplateException()

    def set_status(self, status: str, reason: str = "") -> None:
        self.status, self.status_reason, self.timestamp = status, reason, now()

    def __repr__(self) -> str:
        return f"Record({self.logical_resource_id}, {self.cf_resource_type}, {self.physical_resource_id})"


@dataclass
class Context:
    """What a provider may use: moto's backends for the stack's account and region, and the runtimes."""

    sandbox: Sandbox
    account_id: str
    region: str
    stack_name: str
    stack_id: str
    ecs: EcsRuntime | None = None
    tags: list[dict[str, str]] = field(default_factory=list)
    express: bool = False  # the operation runs in express mode: a resource is done once applied, not once ready

    def backend(self, service: str) -> Any:
        key = "aws" if service in PARTITION_SERVICES else self.region
        return get_backend(service)[self.account_id][key]  # type: ignore[call-overload]

    def arn(self, service: str, resource: str) -> str:
        return f"arn:aws:{service}:{self.region}:{self.account_id}:{resource}"


class Provider:
    """How CloudFormation creates, updates and deletes one resource type (called with the sandbox lock held)."""

    resource_type: ClassVar[str] = ""
    name_property: ClassVar[str | None] = None  # the property that names the resource, if any
    replace_on: ClassVar[frozenset[str]] = frozenset({ALL})  # property changes that need a new resource

    def requires_replacement(self, changed: set[str]) -> bool:
        return ALL in self.replace_on or bool(changed & self.replace_on)

    def physical_name(self, ctx: Context, logical_id: str, props: dict[str, Any]) -> str:
        if self.name_property and props.get(self.name_property):
            return str(props[self.name_property])
        return generate_resource_name(self.resource_type, ctx.stack_name, logical_id)

    def create(self, ctx: Context, logical_id: str, props: dict[str, Any]) -> Record:
        raise NotImplementedError

    def update(self, ctx: Context, record: Record, props: dict[str, Any]) -> None:
        """In place (only called when :meth:`requires_replacement` says no)."""
        raise NotImplementedError

    def delete(self, ctx: Context, record: Record) -> None:
        raise NotImplementedError

    def actual(self, ctx: Context, record: Record) -> dict[str, Any] | None:
        """drift_aware_change_sets: the resource's settings as its service has them now, for the properties this type's
        drift is read of (those ``record``'s template gave, among the ones the service reports), in the template's
        shapes; None: its drift is not read (NOT_CHECKED)."""
        return None

    def wait(self, ctx: Context, record: Record) -> None:
        """Without the lock: until the resource is ready (most are at once)."""

    def wait_deleted(self, ctx: Context, record: Record) -> None:
        """Without the lock: until the deleted resource is really gone (most are at once)."""


def tag_dict(tags: Any) -> dict[str, str]:
    if isinstance(tags, dict):
        return {str(k): str(v) for k, v in tags.items()}
    return {str(t["Key"]): str(t["Value"]) for t in tags or []}


def tag_list(tags: Any) -> list[dict[str, str]]:
    return [{"Key": k, "Value": v} for k, v in tag_dict(tags).items()]


def camel(value: Any) -> Any:
    """CloudFormation's PascalCase keys as the service APIs' camelCase (ECS, API Gateway)."""
    return remap_nested_keys(copy.deepcopy(value), pascal_to_camelcase)


def as_bool(value: Any) -> bool:
    return str(value).lower() == "true"


# == moto's own models ======================================================================================


class MotoModel(Provider):
    """A type moto's CloudFormation knows well enough: its model creates (and, where it can, updates and
    deletes) the resource."""

    def __init__(self, resource_type: str, replace_on: frozenset[str] = frozenset({ALL})) -> None:
        self._type = resource_type
        self._replace_on = replace_on

    def requires_replacement(self, changed: set[str]) -> bool:
        return ALL in self._replace_on or bool(changed & self._replace_on)

    @property
    def model_class(self) -> Any:
        return get_model_map()[self._type]

    def physical_name(self, ctx: Context, logical_id: str, props: dict[str, Any]) -> str:
        name_property = self.model_class.cloudformation_name_type()
        if name_property and props.get(name_property):
            return str(props[name_property])
        return generate_resource_name(self._type, ctx.stack_name, logical_id)

    def create(self, ctx: Context, logical_id: str, props: dict[str, Any]) -> Record:
        model = self.model_class.create_from_cloudformation_json(
            self.physical_name(ctx, logical_id, props),
            {"Type": self._type, "Properties": copy.deepcopy(props)},
            ctx.account_id,
            ctx.region,
            LogicalId=logical_id,
            StackId=ctx.stack_id,
            ResourceType=self._type,
        )
        physical = (
            getattr(model, "physical_resource_id", None) or f"{ctx.stack_name}-{logical_id}-{uuid.uuid4().hex[:12]}"
        )
        return Record(logical_id, self._type, str(physical), props, model=model)

    def update(self, ctx: Context, record: Record, props: dict[str, Any]) -> None:
        model = self.model_class.update_from_cloudformation_json(
            original_resource=record.model,
            new_resource_name=record.physical_resource_id,
            cloudformation_json={"Type": self._type, "Properties": copy.deepcopy(props)},
            account_id=ctx.account_id,
            region_name=ctx.region,
        )
        record.model = model
        record.physical_resource_id = str(getattr(model, "physical_resource_id", record.physical_resource_id))

    def delete(self, ctx: Context, record: Record) -> None:
        deleter = getattr(record.model, "delete", None)
        if callable(deleter):
            try:
                deleter(ctx.account_id, ctx.region)
                return
            except (TypeError, AttributeError):
                pass
        delete_json = self.model_class.delete_from_cloudformation_json
        if getattr(delete_json, "__isabstractmethod__", False):
            log.info("%s %s: moto cannot delete this type; left in place", self._type, record.physical_resource_id)
            return
        delete_json(record.physical_resource_id, {"Properties": record.properties}, ctx.account_id, ctx.region)


class Placeholder(Provider):
    """placeholder: a type nobody here knows; accepted so that a harmless resource does not fail the stack."""

    def __init__(self, resource_type: str) -> None:
        self._type = resource_type

    def create(self, ctx: Context, logical_id: str, props: dict[str, Any]) -> Record:
        log.warning("%s (%s): the sandbox has no support for this type; accepted, nothing made", logical_id, self._type)
        physical = f"{ctx.stack_name}-{logical_id}-{uuid.uuid4().hex[:12].upper()}"
        return Record(logical_id, self._type, physical, props)

    def delete(self, ctx: Context, record: Record) -> None:
        return


class Accepted(Provider):
    """A purely cosmetic type (it changes nothing the sandbox runs): kept as a record with a log line."""

    def __init__(self, resource_type: str, why: str) -> None:
        self._type = resource_type
        self._why = why

    replace_on = frozenset()

    def create(self, ctx: Context, logical_id: str, props: dict[str, Any]) -> Record:
        log.info("%s (%s): accepted, %s", logical_id, self._type, self._why)
        return Record(logical_id, self._type, f"{ctx.stack_name}-{logical_id}-{uuid.uuid4().hex[:12].upper()}", props)

    def update(self, ctx: Context, record: Record, props: dict[str, Any]) -> None:
        record.properties = props

    def delete(self, ctx: Context, record: Record) -> None:
        return


# == Cognito ================================================================================================

USER_POOL_CFN_ONLY = ("UserPoolName",)


class CognitoUserPool(Provider):
    """cognito_user_pool."""

    resource_type = "AWS::Cognito::UserPool"
    name_property = "UserPoolName"
    replace_on = frozenset({"UsernameAttributes", "AliasAttributes", "Schema"})

    def create(self, ctx: Context, logical_id: str, props: dict[str, Any]) -> Record:
        name = self.physical_name(ctx, logical_id, props)
        pool = ctx.backend("cognito-idp").create_user_pool(name, self._config(props))
        return Record(
            logical_id,
            self.resource_type,
            pool.id,
            props,
            model=pool,
            attributes={
                "Arn": pool.arn,
                "ProviderName": f"cognito-idp.{ctx.region}.amazonaws.com/{pool.id}",
                "ProviderURL": f"https://cognito-idp.{ctx.region}.amazonaws.com/{pool.id}",
                "UserPoolId": pool.id,
            },
        )

    @staticmethod
    def _config(props: dict[str, Any]) -> dict[str, Any]:
        return {k: copy.deepcopy(v) for k, v in props.items() if k not in USER_POOL_CFN_ONLY}

    def update(self, ctx: Context, record: Record, props: dict[str, Any]) -> None:
        ctx.backend("cognito-idp").update_user_pool(record.physical_resource_id, self._config(props))
        record.properties = props

    def delete(self, ctx: Context, record: Record) -> None:
        ctx.backend("cognito-idp").delete_user_pool(record.physical_resource_id)


class CognitoUserPoolClient(Provider):
    """cognito_user_pool_client."""

    resource_type = "AWS::Cognito::UserPoolClient"
    replace_on = frozenset({"UserPoolId", "GenerateSecret"})

    def create(self, ctx: Context, logical_id: str, props: dict[str, Any]) -> Record:
        config = {k: copy.deepcopy(v) for k, v in props.items() if k not in ("UserPoolId", "GenerateSecret")}
        config.setdefault("ClientName", logical_id)
        client = ctx.backend("cognito-idp").create_user_pool_client(
            props["UserPoolId"], as_bool(props.get("GenerateSecret", False)), config
        )
        return Record(
            logical_id,
            self.resource_type,
            client.id,
            props,
            model=client,
            attributes={"ClientSecret": lambda: client.secret, "Name": client.extended_config.get("ClientName")},
        )

    def update(self, ctx: Context, record: Record, props: dict[str, Any]) -> None:
        config = {k: copy.deepcopy(v) for k, v in props.items() if k not in ("UserPoolId", "GenerateSecret")}
        config.setdefault("ClientName", record.logical_resource_id)
        ctx.backend("cognito-idp").update_user_pool_client(props["UserPoolId"], record.physical_resource_id, config)
        record.properties = props

    def delete(self, ctx: Context, record: Record) -> None:
        ctx.backend("cognito-idp").delete_user_pool_client(record.properties["UserPoolId"], record.physical_resource_id)


# == Lambda =================================================================================================


class LambdaFunction(Provider):
    """lambda_function_settings: moto's model, with tags, architectures and Lambda's answer to missing code."""

    resource_type = "AWS::Lambda::Function"
    name_property = "FunctionName"
    replace_on = frozenset({"FunctionName", "PackageType"})
    SPEC_KEYS = (
        "Description",
        "MemorySize",
        "Timeout",
        "VpcConfig",
        "Environment",
        "Architectures",
        "Layers",
        "DeadLetterConfig",
        "TracingConfig",
        "EphemeralStorage",
        "ImageConfig",
        "PackageType",
        "LoggingConfig",
    )

    def _spec(self, name: str, props: dict[str, Any]) -> dict[str, Any]:
        spec: dict[str, Any] = {
            "FunctionName": name,
            "Code": copy.deepcopy(props["Code"]),
            "Handler": props.get("Handler"),
            "Role": props["Role"],
            "Runtime": props.get("Runtime"),
        }
        spec.update({k: copy.deepcopy(props[k]) for k in self.SPEC_KEYS if k in props})
        if "Tags" in props:
            spec["Tags"] = tag_dict(props["Tags"])
        return spec

    def _check_code(self, ctx: Context, code: dict[str, Any]) -> None:
        if "S3Bucket" not in code:
            return
        try:
            found = ctx.backend("s3").get_object(code["S3Bucket"], code["S3Key"], code.get("S3ObjectVersion"))
        except Exception:
            found = None
        if found is None:
            raise ResourceError(
                "Error occurred while GetObject. S3 Error Code: NoSuchKey. S3 Error Message: The specified key "
                f"does not exist. (s3://{code['S3Bucket']}/{code['S3Key']})"
            )

    def create(self, ctx: Context, logical_id: str, props: dict[str, Any]) -> Record:
        name = self.physical_name(ctx, logical_id, props)
        if len(name) > 64:
            name = name[:51] + name[-13:]
        self._check_code(ctx, props["Code"])
        fn = ctx.backend("lambda").create_function(self._spec(name, props))
        return Record(
            logical_id, self.resource_type, fn.function_name, props, model=fn, attributes={"Arn": fn.function_arn}
        )

    def update(self, ctx: Context, record: Record, props: dict[str, Any]) -> None:
        backend = ctx.backend("lambda")
        self._check_code(ctx, props["Code"])
        fn = backend.get_function(record.physical_resource_id)
        spec = self._spec(record.physical_resource_id, props)
        spec.setdefault("LoggingConfig", {})  # a property taken out of the template goes back to the default
        fn.update_configuration(spec)
        if props["Code"] != record.properties.get("Code"):
            fn.update_function_code(spec["Code"])
        record.properties = props

    def delete(self, ctx: Context, record: Record) -> None:
        ctx.backend("lambda").delete_function(record.physical_resource_id)

    def actual(self, ctx: Context, record: Record) -> dict[str, Any] | None:
        fn = ctx.backend("lambda").get_function(record.physical_resource_id)
        found: dict[str, Any] = {
            "Description": fn.description,
            "MemorySize": fn.memory_size,
            "Timeout": fn.timeout,
            "Handler": fn.handler,
            "Environment": {"Variables": dict(fn.environment_vars or {})},
        }
        return {key: value for key, value in found.items() if key in record.properties}


class LambdaVersion(Provider):
    """lambda_version_description: a published version, with its description; Ref is the version's ARN."""

    resource_type = "AWS::Lambda::Version"

    def create(self, ctx: Context, logical_id: str, props: dict[str, Any]) -> Record:
        backend = ctx.backend("lambda")
        fn = backend.publish_version(props["FunctionName"], props.get("Description", ""))
        if fn is None:
            raise ResourceError(f"Function not found: {props['FunctionName']}")
        unqualified = ctx.arn("lambda", f"function:{fn.function_name}")
        arn = f"{unqualified}:{fn.version}"
        return Record(
            logical_id,
            self.resource_type,
            arn,
            props,
            model=fn,
            attributes={"Version": str(fn.version), "FunctionArn": unqualified},
        )

    def delete(self, ctx: Context, record: Record) -> None:
        function, _, version = record.physical_resource_id.rpartition(":")
        backend = ctx.backend("lambda")
        name = function.rsplit(":", 1)[-1]
        aliases = [
            a.name for a in backend._lambdas._get_function_aliases(name).values() if a.function_version == version
        ]
        if aliases:
            raise ResourceError(f"Unable to delete version because the following aliases reference it: {aliases}")
        backend.delete_function(name, version)


PROVISIONED_TIMEOUT = 900.0  # seconds an alias's provisioned concurrency is waited for (the sandbox's: 0-600 s)


class LambdaAlias(Provider):
    """lambda_alias: moto had no AWS::Lambda::Alias; Ref is the alias ARN."""

    resource_type = "AWS::Lambda::Alias"
    replace_on = frozenset({"Name", "FunctionName"})

    def create(self, ctx: Context, logical_id: str, props: dict[str, Any]) -> Record:
        alias = ctx.backend("lambda").create_alias(
            name=props["Name"],
            function_name=props["FunctionName"],
            function_version=str(props["FunctionVersion"]),
            description=props.get("Description", ""),
            routing_config=self._routing(props),
        )
        self._provision(ctx, props)
        return Record(logical_id, self.resource_type, alias.arn, props, model=alias, attributes={"AliasArn": alias.arn})

    @staticmethod
    def _provision(ctx: Context, props: dict[str, Any]) -> None:
        """The alias's ProvisionedConcurrencyConfig (sandbox.ext.provisioned): allocated when it is new or asks for
        another count (a move of the alias alone is the update's own transition), dropped when it is gone. Waited
        for (:meth:`wait`), as AWS's CloudFormation waits."""
        backend = ctx.backend("lambda")
        key = (props["FunctionName"], props["Name"])
        found = provisioned.allocations(backend).get(key)
        asked = int((props.get("ProvisionedConcurrencyConfig") or {}).get("ProvisionedConcurrentExecutions") or 0)
        if not asked:
            provisioned.allocations(backend).pop(key, None)
        elif found is None or found.requested != asked:
            alias = backend.get_alias(props["Name"], props["FunctionName"])
            provisioned.allocate(backend, *key, asked, str(alias.function_version), None)

    @staticmethod
    def _routing(props: dict[str, Any]) -> Any:
        config = props.get("RoutingConfig")
        if not config:
            return None
        weights = {
            str(w["FunctionVersion"]): float(w["FunctionWeight"]) for w in config.get("AdditionalVersionWeights", [])
        }
        return {"AdditionalVersionWeights": weights}

    def update(self, ctx: Context, record: Record, props: dict[str, Any]) -> None:
        ctx.backend("lambda").update_alias(
            props["Name"],
            props["FunctionName"],
            str(props["FunctionVersion"]),
            props.get("Description", ""),
            self._routing(props),
        )
        self._provision(ctx, props)
        record.properties = props

    def wait(self, ctx: Context, record: Record) -> None:
        """As AWS's CloudFormation, until the alias's provisioned concurrency is READY (FAILED, or the deadline: the
        resource fails, and the stack's operation rolls back)."""
        key = (record.properties["FunctionName"], record.properties["Name"])
        deadline = time.monotonic() + PROVISIONED_TIMEOUT
        while True:
            with ctx.sandbox.lock:
                found = provisioned.allocations(ctx.backend("lambda")).get(key)
                status, reason = (found.status, found.reason) if found is not None else (provisioned.READY, "")
            if status == provisioned.READY:
                return
            if status == provisioned.FAILED:
                raise ResourceError(f"the provisioned concurrency of {':'.join(key)} could not be made ready: {reason}")
            if time.monotonic() > deadline:
                raise ResourceError(
                    f"the provisioned concurrency of {':'.join(key)} was not ready in {PROVISIONED_TIMEOUT:.0f} s"
                )
            time.sleep(0.05)

    def delete(self, ctx: Context, record: Record) -> None:
        ctx.backend("lambda").delete_alias(record.properties["Name"], record.properties["FunctionName"])
        provisioned.allocations(ctx.backend("lambda")).pop(
            (record.properties["FunctionName"], record.properties["Name"]), None
        )

    def actual(self, ctx: Context, record: Record) -> dict[str, Any] | None:
        alias = ctx.backend("lambda").get_alias(record.properties["Name"], record.properties["FunctionName"])
        return {"FunctionVersion": str(alias.function_version)}


class LambdaPermission(MotoModel):
    """moto's model adds the statement; its id is the physical id, and deleting removes it."""

    def __init__(self) -> None:
        super().__init__("AWS::Lambda::Permission")

    def create(self, ctx: Context, logical_id: str, props: dict[str, Any]) -> Record:
        sid = f"{ctx.stack_name}-{logical_id}-{uuid.uuid4().hex[:12].upper()}"
        statement = {k: v for k, v in props.items()}
        statement["StatementId"] = sid
        fn = ctx.backend("lambda").get_function(props["FunctionName"])
        fn.policy.add_statement(raw=json.dumps(statement))
        return Record(logical_id, "AWS::Lambda::Permission", sid, props, model=fn)

    def delete(self, ctx: Context, record: Record) -> None:
        try:
            record.model.policy.del_statement(record.physical_resource_id)
        except Exception:  # the function may be gone already
            log.debug("permission %s already gone", record.physical_resource_id)


# == API Gateway ============================================================================================


class ApiGatewayRestApi(MotoModel):
    """moto's model, with tags; deleting deletes the API."""

    def __init__(self) -> None:
        super().__init__("AWS::ApiGateway::RestApi", frozenset())

    def create(self, ctx: Context, logical_id: str, props: dict[str, Any]) -> Record:
        api = self._create(ctx, props, logical_id)
        return Record(logical_id, "AWS::ApiGateway::RestApi", api.id, props, model=api)

    @staticmethod
    def _create(ctx: Context, props: dict[str, Any], logical_id: str) -> Any:
        api = ctx.backend("apigateway").create_rest_api(
            name=props.get("Name", logical_id),
            description=props.get("Description", ""),
            endpoint_configuration=camel(props.get("EndpointConfiguration")),
            tags=tag_dict(props.get("Tags")) or None,
        )
        if props.get("BinaryMediaTypes"):
            api.binaryMediaTypes = list(props["BinaryMediaTypes"])
        return api

    def update(self, ctx: Context, record: Record, props: dict[str, Any]) -> None:
        api = record.model
        api.name = props.get("Name", api.name)
        api.description = props.get("Description", "")
        if "BinaryMediaTypes" in props:
            api.binaryMediaTypes = list(props["BinaryMediaTypes"])
        record.properties = props

    def delete(self, ctx: Context, record: Record) -> None:
        ctx.backend("apigateway").delete_rest_api(record.physical_resource_id)


class ApiGatewayResource(MotoModel):
    def __init__(self) -> None:
        super().__init__("AWS::ApiGateway::Resource")

    def delete(self, ctx: Context, record: Record) -> None:
        ctx.backend("apigateway").delete_resource(record.properties["RestApiId"], record.physical_resource_id)


class ApiGatewayMethod(Provider):
    """apigw_method_any_integration: put_method with its request models, validator and parameters, then the
    integration (IntegrationHttpMethod only where there is one), method and integration responses."""

    resource_type = "AWS::ApiGateway::Method"
    replace_on = frozenset({"RestApiId", "ResourceId", "HttpMethod"})

    def create(self, ctx: Context, logical_id: str, props: dict[str, Any]) -> Record:
        self._put(ctx, props)
        physical = f"{ctx.stack_name}-{logical_id}-{uuid.uuid4().hex[:12].upper()}"
        return Record(logical_id, self.resource_type, physical, props)

    def _put(self, ctx: Context, props: dict[str, Any]) -> None:
        backend = ctx.backend("apigateway")
        api, resource, method = props["RestApiId"], props["ResourceId"], props["HttpMethod"]
        backend.put_method(
            function_id=api,
            resource_id=resource,
            method_type=method,
            authorization_type=props.get("AuthorizationType", "NONE"),
            api_key_required=as_bool(props.get("ApiKeyRequired", False)),
            request_parameters=props.get("RequestParameters"),
            request_models=props.get("RequestModels"),
            operation_name=props.get("OperationName"),
            authorizer_id=props.get("AuthorizerId"),
            authorization_scopes=props.get("AuthorizationScopes"),
            request_validator_id=props.get("RequestValidatorId"),
        )
        for response in props.get("MethodResponses", []):
            backend.put_method_response(
                api,
                resource,
                method,
                str(response["StatusCode"]),
                response.get("ResponseModels"),
                response.get("ResponseParameters"),
            )
        integration = props.get("Integration")
        if not integration:
            return
        backend.put_integration(
            function_id=api,
            resource_id=resource,
            method_type=method,
            integration_type=integration["Type"],
            uri=integration.get("Uri"),
            integration_method=integration.get("IntegrationHttpMethod"),
            credentials=integration.get("Credentials"),
            request_templates=integration.get("RequestTemplates"),
            passthrough_behavior=integration.get("PassthroughBehavior"),
            timeout_in_millis=integration.get("TimeoutInMillis"),
            request_parameters=integration.get("RequestParameters"),
            content_handling=integration.get("ContentHandling"),
            connection_type=integration.get("ConnectionType"),
        )
        for response in integration.get("IntegrationResponses", []):
            backend.put_integration_response(
                api,
                resource,
                method,
                str(response["StatusCode"]),
                response.get("SelectionPattern"),
                response.get("ResponseTemplates") or {},
                response.get("ResponseParameters") or {},
                response.get("ContentHandling"),
            )

    def update(self, ctx: Context, record: Record, props: dict[str, Any]) -> None:
        ctx.backend("apigateway").delete_method(props["RestApiId"], props["ResourceId"], props["HttpMethod"])
        self._put(ctx, props)
        record.properties = props

    def delete(self, ctx: Context, record: Record) -> None:
        p = record.properties
        ctx.backend("apigateway").delete_method(p["RestApiId"], p["ResourceId"], p["HttpMethod"])


class ApiGatewayDeployment(Provider):
    """A deployment (the API extension snapshots the routes); a new one for any change, as CDK expects."""

    resource_type = "AWS::ApiGateway::Deployment"

    def create(self, ctx: Context, logical_id: str, props: dict[str, Any]) -> Record:
        deployment = ctx.backend("apigateway").create_deployment(
            props["RestApiId"], props.get("StageName"), props.get("Description", ""), None
        )
        return Record(logical_id, self.resource_type, deployment.id, props, model=deployment)

    def delete(self, ctx: Context, record: Record) -> None:
        backend = ctx.backend("apigateway")
        api = backend.get_rest_api(record.properties["RestApiId"])
        if any(stage.deployment_id == record.physical_resource_id for stage in api.stages.values()):
            raise ResourceError("Active stages pointing to this deployment must be moved or deleted")
        api.deployments.pop(record.physical_resource_id, None)


class ApiGatewayStage(Provider):
    """apigw_stage: moto had no AWS::ApiGateway::Stage; the stage serves its deployment (apigw_lambda)."""

    resource_type = "AWS::ApiGateway::Stage"
    name_property = "StageName"
    replace_on = frozenset({"RestApiId", "StageName"})

    def create(self, ctx: Context, logical_id: str, props: dict[str, Any]) -> Record:
        backend = ctx.backend("apigateway")
        name = props.get("StageName") or logical_id.lower()
        stage = backend.create_stage(
            props["RestApiId"],
            name,
            props["DeploymentId"],
            variables=props.get("Variables") or {},
            description=props.get("Description", ""),
            cacheClusterEnabled=as_bool(props.get("CacheClusterEnabled", False)),
            cacheClusterSize=props.get("CacheClusterSize"),
            tags=tag_dict(props.get("Tags")) or None,
            tracing_enabled=as_bool(props.get("TracingEnabled", False)),
        )
        self._settings(stage, props)
        return Record(logical_id, self.resource_type, name, props, model=stage)

    @staticmethod
    def _settings(stage: Any, props: dict[str, Any]) -> None:
        access = props.get("AccessLogSetting")
        stage.access_log_settings = (
            {"destinationArn": access.get("DestinationArn"), "format": access.get("Format")} if access else None
        )
        stage.method_settings = {}
        for setting in props.get("MethodSettings", []):
            key = f"{setting.get('ResourcePath', '/*').lstrip('/') or '*'}/{setting.get('HttpMethod', '*')}"
            stage.method_settings[key] = {
                "metricsEnabled": as_bool(setting.get("MetricsEnabled", False)),
                "loggingLevel": setting.get("LoggingLevel", "OFF"),
                "dataTraceEnabled": as_bool(setting.get("DataTraceEnabled", False)),
                "throttlingBurstLimit": int(setting.get("ThrottlingBurstLimit", 5000)),
                "throttlingRateLimit": float(setting.get("ThrottlingRateLimit", 10000)),
                "cachingEnabled": as_bool(setting.get("CachingEnabled", False)),
            }

    def update(self, ctx: Context, record: Record, props: dict[str, Any]) -> None:
        stage = ctx.backend("apigateway").get_stage(props["RestApiId"], record.physical_resource_id)
        stage.deployment_id = props["DeploymentId"]
        stage.variables = dict(props.get("Variables") or {})
        stage.description = props.get("Description", "")
        stage.tracing_enabled = as_bool(props.get("TracingEnabled", False))
        self._settings(stage, props)
        record.properties = props

    def delete(self, ctx: Context, record: Record) -> None:
        ctx.backend("apigateway").delete_stage(record.properties["RestApiId"], record.physical_resource_id)


class ApiGatewayAccount(Provider):
    """apigw_account: the account's CloudWatch role (cosmetic in the sandbox, but GetAccount shows it)."""

    resource_type = "AWS::ApiGateway::Account"
    replace_on = frozenset()

    def create(self, ctx: Context, logical_id: str, props: dict[str, Any]) -> Record:
        self.update(ctx, Record(logical_id, self.resource_type, "", props), props)
        return Record(
            logical_id, self.resource_type, f"{ctx.stack_name}-{logical_id}-{uuid.uuid4().hex[:12].upper()}", props
        )

    def update(self, ctx: Context, record: Record, props: dict[str, Any]) -> None:
        if props.get("CloudWatchRoleArn"):
            ctx.backend("apigateway").update_account(
                [{"op": "replace", "path": "/cloudwatchRoleArn", "value": props["CloudWatchRoleArn"]}]
            )
        record.properties = props

    def delete(self, ctx: Context, record: Record) -> None:
        return


class ApiGatewayModel(Provider):
    """apigw_model: moto had no AWS::ApiGateway::Model; Ref is the model's name."""

    resource_type = "AWS::ApiGateway::Model"
    name_property = "Name"
    replace_on = frozenset({"RestApiId", "Name", "ContentType"})

    def physical_name(self, ctx: Context, logical_id: str, props: dict[str, Any]) -> str:
        if props.get("Name"):
            return str(props["Name"])
        return "".join(c for c in logical_id if c.isalnum())[:50] + uuid.uuid4().hex[:12].upper()

    def create(self, ctx: Context, logical_id: str, props: dict[str, Any]) -> Record:
        name = self.physical_name(ctx, logical_id, props)
        schema = props.get("Schema")
        model = ctx.backend("apigateway").create_model(
            props["RestApiId"],
            name,
            props.get("ContentType", "application/json"),
            props.get("Description", ""),
            json.dumps(schema) if isinstance(schema, dict) else schema,
        )
        return Record(logical_id, self.resource_type, name, props, model=model)

    def update(self, ctx: Context, record: Record, props: dict[str, Any]) -> None:
        schema = props.get("Schema")
        record.model.schema = json.dumps(schema) if isinstance(schema, dict) else schema
        record.model.description = props.get("Description", "")
        record.properties = props

    def delete(self, ctx: Context, record: Record) -> None:
        ctx.backend("apigateway").delete_model(record.properties["RestApiId"], record.physical_resource_id)


class ApiGatewayRequestValidator(Provider):
    """apigw_request_validator: moto had no AWS::ApiGateway::RequestValidator; Ref is its id."""

    resource_type = "AWS::ApiGateway::RequestValidator"
    replace_on = frozenset({"RestApiId", "Name"})

    def create(self, ctx: Context, logical_id: str, props: dict[str, Any]) -> Record:
        validator = ctx.backend("apigateway").create_request_validator(
            props["RestApiId"],
            props.get("Name") or logical_id,
            as_bool(props.get("ValidateRequestBody", False)),
            as_bool(props.get("ValidateRequestParameters", False)),
        )
        return Record(logical_id, self.resource_type, validator.id, props, model=validator)

    def update(self, ctx: Context, record: Record, props: dict[str, Any]) -> None:
        ctx.backend("apigateway").update_request_validator(
            props["RestApiId"],
            record.physical_resource_id,
            [
                {
                    "op": "replace",
                    "path": "/validateRequestBody",
                    "value": str(as_bool(props.get("ValidateRequestBody"))),
                },
                {
                    "op": "replace",
                    "path": "/validateRequestParameters",
                    "value": str(as_bool(props.get("ValidateRequestParameters"))),
                },
            ],
        )
        record.properties = props

    def delete(self, ctx: Context, record: Record) -> None:
        ctx.backend("apigateway").delete_request_validator(record.properties["RestApiId"], record.physical_resource_id)


class ApiGatewayGatewayResponse(Provider):
    """apigw_gateway_response: moto had no AWS::ApiGateway::GatewayResponse."""

    resource_type = "AWS::ApiGateway::GatewayResponse"
    replace_on = frozenset({"RestApiId", "ResponseType"})

    def create(self, ctx: Context, logical_id: str, props: dict[str, Any]) -> Record:
        self._put(ctx, props)
        physical = f"{ctx.stack_name}-{logical_id}-{uuid.uuid4().hex[:12].upper()}"
        return Record(logical_id, self.resource_type, physical, props)

    @staticmethod
    def _put(ctx: Context, props: dict[str, Any]) -> None:
        ctx.backend("apigateway").put_gateway_response(
            props["RestApiId"],
            props["ResponseType"],
            props.get("StatusCode"),
            props.get("ResponseParameters"),
            props.get("ResponseTemplates"),
        )

    def update(self, ctx: Context, record: Record, props: dict[str, Any]) -> None:
        self._put(ctx, props)
        record.properties = props

    def delete(self, ctx: Context, record: Record) -> None:
        p = record.properties
        ctx.backend("apigateway").delete_gateway_response(p["RestApiId"], p["ResponseType"])


# == S3 =====================================================================================================


class S3Bucket(Provider):
    """s3_bucket_settings and bucket_logging_before_its_policy."""

    resource_type = "AWS::S3::Bucket"
    name_property = "BucketName"
    replace_on = frozenset({"BucketName"})

    def create(self, ctx: Context, logical_id: str, props: dict[str, Any]) -> Record:
        name = self.physical_name(ctx, logical_id, props)
        bucket = ctx.backend("s3").create_bucket(name, ctx.region)
        self._configure(ctx, name, props)
        return Record(logical_id, self.resource_type, name, props, model=bucket)

    def update(self, ctx: Context, record: Record, props: dict[str, Any]) -> None:
        self._configure(ctx, record.physical_resource_id, props)
        record.properties = props

    def delete(self, ctx: Context, record: Record) -> None:
        backend = ctx.backend("s3")
        if backend.delete_bucket(record.physical_resource_id) is None:
            raise ResourceError("The bucket you tried to delete is not empty (Service: S3, Status Code: 409)")

    def _configure(self, ctx: Context, name: str, props: dict[str, Any]) -> None:
        from moto.s3.cloud_formation import cfn_to_api_encryption

        backend = ctx.backend("s3")
        bucket = backend.get_bucket(name)
        if "BucketEncryption" in props:
            backend.put_bucket_encryption(name, cfn_to_api_encryption(props["BucketEncryption"]))
        if "VersioningConfiguration" in props:
            backend.put_bucket_versioning(name, props["VersioningConfiguration"].get("Status", "Suspended"))
        if "PublicAccessBlockConfiguration" in props:
            block = props["PublicAccessBlockConfiguration"]
            backend.put_public_access_block(
                name,
                {k: str(as_bool(block.get(k, False))).lower() for k in _PUBLIC_ACCESS_BLOCK_KEYS},
            )
        rules = (props.get("OwnershipControls") or {}).get("Rules") or []
        if rules:
            backend.put_bucket_ownership_controls(name, ownership=rules[0]["ObjectOwnership"])
        if "LifecycleConfiguration" in props:
            backend.put_bucket_lifecycle(name, [_lifecycle_rule(r) for r in props["LifecycleConfiguration"]["Rules"]])
        if "CorsConfiguration" in props:
            backend.put_bucket_cors(name, [_cors_rule(r) for r in props["CorsConfiguration"]["CorsRules"]])
        logging_config = props.get("LoggingConfiguration")
        if logging_config:
            target = logging_config.get("DestinationBucketName") or name
            if target not in backend.buckets:
                raise ResourceError(f"The target bucket for logging does not exist: {target}")
            bucket.logging = {"TargetBucket": target, "TargetPrefix": logging_config.get("LogFilePrefix", "")}
        if "Tags" in props:
            backend.put_bucket_tagging(name, tag_dict(props["Tags"]))


_PUBLIC_ACCESS_BLOCK_KEYS = ("BlockPublicAcls", "IgnorePublicAcls", "BlockPublicPolicy", "RestrictPublicBuckets")


def _lifecycle_rule(rule: dict[str, Any]) -> dict[str, Any]:
    """A CloudFormation lifecycle rule in the shape moto's S3 parses from XML."""
    out: dict[str, Any] = {"ID": rule.get("Id", ""), "Status": rule.get("Status", "Enabled")}
    out["Filter"] = {"Prefix": rule.get("Prefix", "")}
    if "ExpirationInDays" in rule:
        out["Expiration"] = {"Days": str(rule["ExpirationInDays"])}
    if "ExpirationDate" in rule:
        out["Expiration"] = {"Date": rule["ExpirationDate"]}
    if "NoncurrentVersionExpiration" in rule:
        out["NoncurrentVersionExpiration"] = {
            "NoncurrentDays": str(rule["NoncurrentVersionExpiration"]["NoncurrentDays"])
        }
    elif "NoncurrentVersionExpirationInDays" in rule:
        out["NoncurrentVersionExpiration"] = {"NoncurrentDays": str(rule["NoncurrentVersionExpirationInDays"])}
    if "AbortIncompleteMultipartUpload" in rule:
        days = rule["AbortIncompleteMultipartUpload"]["DaysAfterInitiation"]
        out["AbortIncompleteMultipartUpload"] = {"DaysAfterInitiation": str(days)}
    if "Transitions" in rule:
        out["Transition"] = [
            {"Days": str(t["TransitionInDays"]), "StorageClass": t["StorageClass"]}
            for t in rule["Transitions"]
            if "TransitionInDays" in t
        ]
    return out


def _cors_rule(rule: dict[str, Any]) -> dict[str, Any]:
    """A CloudFormation CORS rule in the shape moto's S3 parses from XML."""
    out: dict[str, Any] = {"AllowedMethod": list(rule["AllowedMethods"]), "AllowedOrigin": list(rule["AllowedOrigins"])}
    if rule.get("AllowedHeaders"):
        out["AllowedHeader"] = list(rule["AllowedHeaders"])
    if rule.get("ExposedHeaders"):
        out["ExposeHeader"] = list(rule["ExposedHeaders"])
    if "MaxAge" in rule:
        out["MaxAgeSeconds"] = str(rule["MaxAge"])
    if rule.get("Id"):
        out["ID"] = rule["Id"]
    return out


class S3BucketPolicy(Provider):
    """s3_bucket_policy: moto had no AWS::S3::BucketPolicy."""

    resource_type = "AWS::S3::BucketPolicy"
    replace_on = frozenset({"Bucket"})

    def create(self, ctx: Context, logical_id: str, props: dict[str, Any]) -> Record:
        ctx.backend("s3").put_bucket_policy(props["Bucket"], json.dumps(props["PolicyDocument"]).encode())
        physical = f"{ctx.stack_name}-{logical_id}-{uuid.uuid4().hex[:12].upper()}"
        return Record(logical_id, self.resource_type, physical, props)

    def update(self, ctx: Context, record: Record, props: dict[str, Any]) -> None:
        ctx.backend("s3").put_bucket_policy(props["Bucket"], json.dumps(props["PolicyDocument"]).encode())
        record.properties = props

    def delete(self, ctx: Context, record: Record) -> None:
        backend = ctx.backend("s3")
        if record.properties["Bucket"] in backend.buckets:
            backend.delete_bucket_policy(record.properties["Bucket"])


# == DynamoDB, ECR, logs ====================================================================================


class DynamoDBTable(MotoModel):
    """dynamodb_table_settings: moto's model, plus point-in-time recovery; deletes as DeleteTable does."""

    def __init__(self) -> None:
        super().__init__(
            "AWS::DynamoDB::Table",
            frozenset({"TableName", "KeySchema", "LocalSecondaryIndexes", "AttributeDefinitions"}),
        )

    def create(self, ctx: Context, logical_id: str, props: dict[str, Any]) -> Record:
        record = super().create(ctx, logical_id, props)
        self._settings(ctx, record.physical_resource_id, props)
        return record

    @staticmethod
    def _settings(ctx: Context, name: str, props: dict[str, Any]) -> None:
        spec = props.get("PointInTimeRecoverySpecification")
        if spec is not None:
            enabled = as_bool(spec.get("PointInTimeRecoveryEnabled", False))
            ctx.backend("dynamodb").update_continuous_backups(name, {"PointInTimeRecoveryEnabled": enabled})

    def update(self, ctx: Context, record: Record, props: dict[str, Any]) -> None:
        changed = {k for k in set(props) | set(record.properties) if props.get(k) != record.properties.get(k)}
        self._settings(ctx, record.physical_resource_id, props)
        if "Tags" in changed:
            table = record.model
            ctx.backend("dynamodb").tag_resource(table.table_arn, tag_dict(props.get("Tags")))
        ignored = changed - {"Tags", "PointInTimeRecoverySpecification"}
        if ignored:
            log.warning("%s: the sandbox does not update %s in place", record.logical_resource_id, sorted(ignored))
        record.properties = props

    def delete(self, ctx: Context, record: Record) -> None:
        ctx.backend("dynamodb").delete_table(record.physical_resource_id)


class EcrRepository(MotoModel):
    """ecr_repository_lifecycle: moto's model (the ECR extension fixes its URI), plus the lifecycle policy."""

    def __init__(self) -> None:
        super().__init__("AWS::ECR::Repository", frozenset({"RepositoryName", "EncryptionConfiguration"}))

    def create(self, ctx: Context, logical_id: str, props: dict[str, Any]) -> Record:
        record = super().create(ctx, logical_id, props)
        self._lifecycle(ctx, record.physical_resource_id, props)
        return record

    @staticmethod
    def _lifecycle(ctx: Context, name: str, props: dict[str, Any]) -> None:
        text = (props.get("LifecyclePolicy") or {}).get("LifecyclePolicyText")
        if text:
            ctx.backend("ecr").put_lifecycle_policy(None, name, text)

    def update(self, ctx: Context, record: Record, props: dict[str, Any]) -> None:
        super().update(ctx, record, props)
        self._lifecycle(ctx, record.physical_resource_id, props)
        record.properties = props

    def delete(self, ctx: Context, record: Record) -> None:
        ctx.backend("ecr").delete_repository(
            record.physical_resource_id, None, as_bool(record.properties.get("EmptyOnDelete"))
        )


class LogGroup(MotoModel):
    """moto's model; retention changes in place; deleting deletes the group."""

    def __init__(self) -> None:
        super().__init__("AWS::Logs::LogGroup", frozenset({"LogGroupName", "KmsKeyId"}))

    def update(self, ctx: Context, record: Record, props: dict[str, Any]) -> None:
        backend = ctx.backend("logs")
        if props.get("RetentionInDays"):
            backend.put_retention_policy(record.physical_resource_id, int(props["RetentionInDays"]))
        else:
            backend.delete_retention_policy(record.physical_resource_id)
        record.properties = props

    def delete(self, ctx: Context, record: Record) -> None:
        backend = ctx.backend("logs")
        if record.physical_resource_id in backend.groups:
            backend.delete_log_group(record.physical_resource_id)

    def actual(self, ctx: Context, record: Record) -> dict[str, Any] | None:
        if "RetentionInDays" not in record.properties:
            return {}
        group = ctx.backend("logs").groups[record.physical_resource_id]
        return {"RetentionInDays": group.retention_in_days}


class SsmParameter(Provider):
    """ssm_parameter: moto's model took the template's ``Tags``, a map for this type (a list of Key and Value for
    the others), as a list, and failed the stack (``string indices must be integers``); and it could not update in
    place. The value, description, allowed pattern, data type, tier and tags change in place (a new version of the
    parameter, as on AWS); a new name or type replaces it. Fn::GetAtt Type and Value answer."""

    resource_type = "AWS::SSM::Parameter"
    name_property = "Name"
    replace_on = frozenset({"Name", "Type"})

    def create(self, ctx: Context, logical_id: str, props: dict[str, Any]) -> Record:
        name = self.physical_name(ctx, logical_id, props)
        self._put(ctx, name, props, overwrite=False)
        record = Record(logical_id, self.resource_type, name, props)
        record.attributes = {  # as last applied
            "Type": lambda: record.properties.get("Type"),
            "Value": lambda: record.properties.get("Value"),
        }
        return record

    def update(self, ctx: Context, record: Record, props: dict[str, Any]) -> None:
        name = record.physical_resource_id
        self._put(ctx, name, props, overwrite=True)
        backend = ctx.backend("ssm")
        before, after = tag_dict(record.properties.get("Tags")), tag_dict(props.get("Tags"))
        if set(before) - set(after):
            backend.remove_tags_from_resource("Parameter", name, sorted(set(before) - set(after)))
        if after:
            backend.add_tags_to_resource("Parameter", name, after)
        record.properties = props

    def delete(self, ctx: Context, record: Record) -> None:
        backend = ctx.backend("ssm")
        if backend.get_parameter(record.physical_resource_id) is not None:
            backend.delete_parameter(record.physical_resource_id)

    @staticmethod
    def _put(ctx: Context, name: str, props: dict[str, Any], *, overwrite: bool) -> None:
        ctx.backend("ssm").put_parameter(
            name=name,
            description=props.get("Description"),
            value=props.get("Value"),
            parameter_type=props.get("Type"),
            allowed_pattern=props.get("AllowedPattern"),
            keyid=None,
            overwrite=overwrite,
            tags=[] if overwrite else tag_list(props.get("Tags")),  # an overwrite takes no tags (update: apart)
            data_type=props.get("DataType") or "text",
            tier=props.get("Tier"),
            policies=props.get("Policies"),
        )


# == CloudWatch ===============================================================================================


class CloudWatchAlarm(Provider):
    """cloudwatch_alarm: moto's CloudFormation has no AWS::CloudWatch::Alarm (a stack holding one got a placeholder
    and CloudWatch no alarm). Made, changed in place and deleted through moto's CloudWatch, whose metric alarms the
    sandbox evaluates (sandbox.ext.alarms); a change keeps the alarm's state, as PutMetricAlarm does on AWS; a new
    AlarmName replaces it. Ref answers its name, Fn::GetAtt Arn its ARN. An alarm of metric math (``Metrics``) is
    made without them, and stays as it was put."""

    resource_type = "AWS::CloudWatch::Alarm"
    name_property = "AlarmName"
    replace_on = frozenset({"AlarmName"})

    def create(self, ctx: Context, logical_id: str, props: dict[str, Any]) -> Record:
        name = self.physical_name(ctx, logical_id, props)
        alarm = self._put(ctx, name, props)
        record = Record(logical_id, self.resource_type, name, props, model=alarm)
        record.attributes = {"Arn": lambda: alarm.alarm_arn}
        return record

    def update(self, ctx: Context, record: Record, props: dict[str, Any]) -> None:
        before = ctx.backend("cloudwatch").alarms.get(record.physical_resource_id)
        alarm = self._put(ctx, record.physical_resource_id, props)
        if before is not None:  # its configuration overwritten, its state left as it was
            alarms.keep_state(before, alarm)
        record.properties, record.model = props, alarm

    def delete(self, ctx: Context, record: Record) -> None:
        ctx.backend("cloudwatch").delete_alarms([record.physical_resource_id])

    @staticmethod
    def _put(ctx: Context, name: str, props: dict[str, Any]) -> Any:
        def number(key: str) -> float | None:
            return float(props[key]) if props.get(key) is not None else None

        return ctx.backend("cloudwatch").put_metric_alarm(
            name=name,
            namespace=props.get("Namespace", ""),
            metric_name=props.get("MetricName", ""),
            comparison_operator=props.get("ComparisonOperator", ""),
            evaluation_periods=int(props.get("EvaluationPeriods") or 0),
            period=int(props.get("Period") or 0),
            threshold=number("Threshold") or 0.0,
            statistic=props.get("Statistic", ""),
            description=props.get("AlarmDescription", ""),
            dimensions=[{"Name": d["Name"], "Value": str(d["Value"])} for d in props.get("Dimensions") or []],
            alarm_actions=list(props.get("AlarmActions") or []),
            datapoints_to_alarm=int(props["DatapointsToAlarm"]) if props.get("DatapointsToAlarm") else None,
            extended_statistic=props.get("ExtendedStatistic"),
            ok_actions=list(props.get("OKActions") or []),
            insufficient_data_actions=list(props.get("InsufficientDataActions") or []),
            unit=props.get("Unit"),
            actions_enabled=as_bool(props.get("ActionsEnabled", True)),
            treat_missing_data=props.get("TreatMissingData"),
            evaluate_low_sample_count_percentile=props.get("EvaluateLowSampleCountPercentile"),
            threshold_metric_id=props.get("ThresholdMetricId"),
        )


# == SQS and SNS ============================================================================================

# what an SQS queue's attribute is when its template no longer says it: SQS's defaults, as CloudFormation puts back
SQS_DEFAULTS = {"DelaySeconds": "0", "MessageRetentionPeriod": "345600", "ReceiveMessageWaitTimeSeconds": "0",
                "VisibilityTimeout": "30"}  # fmt: skip
SQS_SETTINGS = (
    *SQS_DEFAULTS,
    "MaximumMessageSize",
    "KmsMasterKeyId",
    "KmsDataKeyReusePeriodSeconds",
    "SqsManagedSseEnabled",
    "ContentBasedDeduplication",
    "DeduplicationScope",
    "FifoThroughputLimit",
)


class SqsQueue(MotoModel):
    """sqs_queue_in_place: moto's model replaced the queue for any change (a new URL, its messages lost, a stack
    importing its URL broken), and its update set two attributes only. As on AWS, a new name or FIFO setting
    replaces it; every other setting (retention, visibility timeout, delays, sizes, encryption, redrive policies,
    tags) changes in place, one the template no longer says going back to SQS's default."""

    def __init__(self) -> None:
        super().__init__("AWS::SQS::Queue", frozenset({"QueueName", "FifoQueue"}))

    def update(self, ctx: Context, record: Record, props: dict[str, Any]) -> None:
        backend = ctx.backend("sqs")
        queue = record.model
        attributes: dict[str, Any] = {key: str(props[key]) for key in SQS_SETTINGS if key in props}
        attributes |= {key: value for key, value in SQS_DEFAULTS.items() if key not in props}
        for key in ("RedrivePolicy", "RedriveAllowPolicy"):
            if key in props:
                attributes[key] = json.dumps(props[key]) if not isinstance(props[key], str) else props[key]
            elif key in record.properties:
                attributes[key] = ""  # taken out of the template: off
        attributes["Policy"] = queue.policy  # moto's setter drops a policy it is not given again
        backend.set_queue_attributes(queue.name, attributes)
        before, after = tag_dict(record.properties.get("Tags")), tag_dict(props.get("Tags"))
        if set(before) - set(after):
            backend.untag_queue(queue.name, sorted(set(before) - set(after)))
        if after:
            backend.tag_queue(queue.name, after)
        record.properties = props

    def actual(self, ctx: Context, record: Record) -> dict[str, Any] | None:
        attributes = record.model.attributes
        return {key: attributes[key] for key in SQS_SETTINGS if key in record.properties and key in attributes}


class SnsTopic(MotoModel):
    """sns_topic_in_place: moto's model deleted the topic and made it again for any change, its subscriptions lost.
    As on AWS, a new name or FIFO setting replaces it; its display name, encryption key, signature version, tracing,
    tags and the subscriptions it lists itself change in place, the topic's other subscriptions kept."""

    SETTINGS: ClassVar[tuple[str, ...]] = (
        "DisplayName",
        "KmsMasterKeyId",
        "SignatureVersion",
        "TracingConfig",
        "ContentBasedDeduplication",
    )

    def __init__(self) -> None:
        super().__init__("AWS::SNS::Topic", frozenset({"TopicName", "FifoTopic"}))

    def update(self, ctx: Context, record: Record, props: dict[str, Any]) -> None:
        backend, arn = ctx.backend("sns"), record.physical_resource_id
        topic = backend.get_topic(arn)
        for key in self.SETTINGS:
            if props.get(key) != record.properties.get(key):
                setattr(topic, _snake(key), props.get(key) or "")
        listed = {(s["Protocol"], s["Endpoint"]) for s in record.properties.get("Subscription") or []}
        wanted = {(s["Protocol"], s["Endpoint"]) for s in props.get("Subscription") or []}
        for protocol, endpoint in sorted(wanted - listed):
            backend.subscribe(arn, endpoint, protocol)
        gone = listed - wanted
        for subscription in list(backend.subscriptions.values()):
            if subscription.topic.arn == arn and (subscription.protocol, subscription.endpoint) in gone:
                backend.unsubscribe(subscription.arn)
        before, after = tag_dict(record.properties.get("Tags")), tag_dict(props.get("Tags"))
        if set(before) - set(after):
            backend.untag_resource(arn, sorted(set(before) - set(after)))
        if after:
            backend.tag_resource(arn, after)
        record.properties = props


class SnsSubscription(Provider):
    """sns_subscription: moto had no AWS::SNS::Subscription, so a topic's subscriber in a template (CDK's
    ``topic.add_subscription``) received nothing. It subscribes the endpoint with its attributes (raw message
    delivery, filter policy and its scope, redrive and delivery policies); they change in place, and a new protocol,
    endpoint or topic replaces it. Ref answers its ARN."""

    resource_type = "AWS::SNS::Subscription"
    replace_on = frozenset({"Protocol", "Endpoint", "TopicArn", "Region"})
    ATTRIBUTES: ClassVar[tuple[str, ...]] = (
        "FilterPolicyScope",  # before the policy: moto reads the scope the policy is checked against
        "FilterPolicy",
        "RawMessageDelivery",
        "RedrivePolicy",
        "DeliveryPolicy",
    )

    def create(self, ctx: Context, logical_id: str, props: dict[str, Any]) -> Record:
        subscription = ctx.backend("sns").subscribe(props["TopicArn"], props["Endpoint"], props["Protocol"])
        record = Record(logical_id, self.resource_type, subscription.arn, {})
        self.update(ctx, record, props)
        return record

    def update(self, ctx: Context, record: Record, props: dict[str, Any]) -> None:
        backend = ctx.backend("sns")
        for key in self.ATTRIBUTES:
            if props.get(key) == record.properties.get(key):
                continue
            value = props.get(key)
            if key == "RawMessageDelivery":  # moto delivers raw for any truthy value, the string "false" too
                value = as_bool(value)
            elif isinstance(value, dict | list):
                value = json.dumps(value)
            backend.set_subscription_attributes(record.physical_resource_id, key, "" if value is None else value)
        record.properties = props

    def delete(self, ctx: Context, record: Record) -> None:
        backend = ctx.backend("sns")
        if any(s.arn == record.physical_resource_id for s in backend.subscriptions.values()):
            backend.unsubscribe(record.physical_resource_id)


def _snake(key: str) -> str:
    """DisplayName → display_name: the name of moto's attribute for a setting."""
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in key).lstrip("_")


class IamManagedPolicy(MotoModel):
    """moto's model; a document change makes a new default version, as AWS does."""

    def __init__(self) -> None:
        super().__init__("AWS::IAM::ManagedPolicy", frozenset({"ManagedPolicyName", "Path"}))

    def update(self, ctx: Context, record: Record, props: dict[str, Any]) -> None:
        iam = ctx.backend("iam")
        if props.get("PolicyDocument") != record.properties.get("PolicyDocument"):
            policy = iam.get_policy(record.physical_resource_id)
            for version in list(policy.versions):
                if not version.is_default:
                    iam.delete_policy_version(record.physical_resource_id, version.version_id)
            iam.create_policy_version(record.physical_resource_id, json.dumps(props["PolicyDocument"]), True)
        for role in set(record.properties.get("Roles", [])) - set(props.get("Roles", [])):
            iam.detach_role_policy(record.physical_resource_id, role)
        for role in set(props.get("Roles", [])) - set(record.properties.get("Roles", [])):
            iam.attach_role_policy(record.physical_resource_id, role)
        record.properties = props

    def delete(self, ctx: Context, record: Record) -> None:
        iam = ctx.backend("iam")
        for role in record.properties.get("Roles", []):
            try:
                iam.detach_role_policy(record.physical_resource_id, role)
            except Exception:
                log.debug("detaching %s from %s", record.physical_resource_id, role, exc_info=True)
        policy = iam.get_policy(record.physical_resource_id)
        for version in list(policy.versions):
            if not version.is_default:
                iam.delete_policy_version(record.physical_resource_id, version.version_id)
        iam.delete_policy(record.physical_resource_id)


class IamRole(MotoModel):
    """moto's model; deleting first detaches managed policies and removes inline ones, as CloudFormation does."""

    def __init__(self) -> None:
        super().__init__("AWS::IAM::Role", frozenset({"RoleName", "Path"}))

    def delete(self, ctx: Context, record: Record) -> None:
        iam = ctx.backend("iam")
        role = iam.get_role(record.physical_resource_id)
        for arn in list(role.managed_policies):
            iam.detach_role_policy(arn, role.name)
        for name in list(role.policies):
            iam.delete_role_policy(role.name, name)
        iam.delete_role(role.name)


# == EC2 ====================================================================================================


class Ec2(MotoModel):
    """ec2_deletes: moto's models create; deletes go through the EC2 backend (moto could not delete most)."""

    def __init__(self, resource_type: str, deleter: Callable[[Any, Record], None], replace_on: frozenset[str]) -> None:
        super().__init__(resource_type, replace_on)
        self._deleter = deleter

    def update(self, ctx: Context, record: Record, props: dict[str, Any]) -> None:
        if "Tags" in props:
            ctx.backend("ec2").create_tags([record.physical_resource_id], tag_dict(props["Tags"]))
        record.properties = props

    def delete(self, ctx: Context, record: Record) -> None:
        self._deleter(ctx.backend("ec2"), record)


def _delete_route(ec2: Any, record: Record) -> None:
    p = record.properties
    ec2.delete_route(p["RouteTableId"], p.get("DestinationCidrBlock"), p.get("DestinationIpv6CidrBlock"))


def _delete_association(ec2: Any, record: Record) -> None:
    p = record.properties
    ec2.subnet_associations.pop(f"{p['RouteTableId']}:{p['SubnetId']}", None)


def _delete_attachment(ec2: Any, record: Record) -> None:
    p = record.properties
    if p.get("InternetGatewayId"):
        ec2.detach_internet_gateway(p["InternetGatewayId"], p["VpcId"])


def _delete_ingress(ec2: Any, record: Record) -> None:
    p = record.properties
    ec2.revoke_security_group_ingress(
        p["GroupId"], p["IpProtocol"], p.get("FromPort"), p.get("ToPort"), _ip_ranges(p), _source_groups(p)
    )


def _ip_ranges(p: dict[str, Any]) -> list[dict[str, Any]]:
    cidr = p.get("CidrIp")
    if not cidr:
        return []
    entry: dict[str, Any] = {"CidrIp": cidr}
    if p.get("Description"):
        entry["Description"] = p["Description"]
    return [entry]


def _source_groups(p: dict[str, Any]) -> list[dict[str, Any]]:
    group = p.get("SourceSecurityGroupId") or p.get("DestinationSecurityGroupId")
    return [{"GroupId": group}] if group else []


EC2_DELETERS: dict[str, tuple[Callable[[Any, Record], None], frozenset[str]]] = {
    "AWS::EC2::VPC": (
        lambda ec2, r: ec2.delete_vpc(r.physical_resource_id),
        frozenset({"CidrBlock", "InstanceTenancy"}),
    ),
    "AWS::EC2::Subnet": (
        lambda ec2, r: ec2.delete_subnet(r.physical_resource_id),
        frozenset({"VpcId", "CidrBlock", "AvailabilityZone"}),
    ),
    "AWS::EC2::RouteTable": (lambda ec2, r: ec2.delete_route_table(r.physical_resource_id), frozenset({"VpcId"})),
    "AWS::EC2::Route": (_delete_route, frozenset({ALL})),
    "AWS::EC2::SubnetRouteTableAssociation": (_delete_association, frozenset({ALL})),
    "AWS::EC2::InternetGateway": (lambda ec2, r: ec2.delete_internet_gateway(r.physical_resource_id), frozenset()),
    "AWS::EC2::VPCGatewayAttachment": (_delete_attachment, frozenset({ALL})),
    "AWS::EC2::SecurityGroupIngress": (_delete_ingress, frozenset({ALL})),
    "AWS::EC2::FlowLog": (lambda ec2, r: ec2.delete_flow_logs([r.physical_resource_id]), frozenset({ALL})),
}


class Ec2SecurityGroup(MotoModel):
    """moto's model (ingress rules), plus the egress rules of the template; deletes through EC2."""

    def __init__(self) -> None:
        super().__init__("AWS::EC2::SecurityGroup", frozenset({"GroupName", "GroupDescription", "VpcId"}))

    def create(self, ctx: Context, logical_id: str, props: dict[str, Any]) -> Record:
        props_for_moto = dict(props)
        props_for_moto.pop("GroupName", None)  # moto's name generator gives unique names; AWS generates too
        record = super().create(ctx, logical_id, props_for_moto)
        record.properties = props
        ec2 = ctx.backend("ec2")
        for rule in props.get("SecurityGroupEgress", []):
            try:
                ec2.authorize_security_group_egress(
                    record.physical_resource_id,
                    rule.get("IpProtocol", "-1"),
                    rule.get("FromPort"),
                    rule.get("ToPort"),
                    _ip_ranges(rule),
                    source_groups=_source_groups(rule),
                )
            except Exception as exc:  # moto already has the default allow-all rule
                log.debug("egress rule of %s: %s", logical_id, exc)
        return record

    def update(self, ctx: Context, record: Record, props: dict[str, Any]) -> None:
        if "Tags" in props:
            ctx.backend("ec2").create_tags([record.physical_resource_id], tag_dict(props["Tags"]))
        record.properties = props

    def delete(self, ctx: Context, record: Record) -> None:
        ctx.backend("ec2").delete_security_group(group_id=record.physical_resource_id)


class Ec2SecurityGroupEgress(Provider):
    """ec2_security_group_egress: moto had no AWS::EC2::SecurityGroupEgress."""

    resource_type = "AWS::EC2::SecurityGroupEgress"

    def create(self, ctx: Context, logical_id: str, props: dict[str, Any]) -> Record:
        rules, _group = ctx.backend("ec2").authorize_security_group_egress(
            props["GroupId"],
            props["IpProtocol"],
            props.get("FromPort"),
            props.get("ToPort"),
            _ip_ranges(props),
            source_groups=_source_groups(props),
        )
        physical = rules[0].id if rules else f"sgr-{uuid.uuid4().hex[:17]}"
        return Record(logical_id, self.resource_type, physical, props)

    def delete(self, ctx: Context, record: Record) -> None:
        p = record.properties
        ctx.backend("ec2").revoke_security_group_egress(
            p["GroupId"], p["IpProtocol"], p.get("FromPort"), p.get("ToPort"), _ip_ranges(p), _source_groups(p)
        )


# == ECS ====================================================================================================


class EcsCluster(Provider):
    """ecs_cluster_settings."""

    resource_type = "AWS::ECS::Cluster"
    name_property = "ClusterName"
    replace_on = frozenset({"ClusterName"})

    def create(self, ctx: Context, logical_id: str, props: dict[str, Any]) -> Record:
        name = self.physical_name(ctx, logical_id, props)
        cluster = ctx.backend("ecs").create_cluster(
            name,
            tags=camel(props.get("Tags")),
            cluster_settings=camel(props.get("ClusterSettings")),
            configuration=camel(props.get("Configuration")),
            capacity_providers=props.get("CapacityProviders"),
            default_capacity_provider_strategy=camel(props.get("DefaultCapacityProviderStrategy")),
        )
        return Record(logical_id, self.resource_type, name, props, model=cluster, attributes={"Arn": cluster.arn})

    def update(self, ctx: Context, record: Record, props: dict[str, Any]) -> None:
        cluster = ctx.backend("ecs").clusters[record.physical_resource_id]
        cluster.settings = camel(props.get("ClusterSettings"))
        record.properties = props

    def delete(self, ctx: Context, record: Record) -> None:
        backend = ctx.backend("ecs")
        if any(
            s.cluster_name == record.physical_resource_id and s.status == "ACTIVE" for s in backend.services.values()
        ):
            raise ResourceError("The Cluster cannot be deleted while Services are active.")
        backend.delete_cluster(record.physical_resource_id)


class EcsTaskDefinition(Provider):
    """ecs_task_definition_settings: every change registers a new revision (the old one is deregistered in
    the cleanup), as on AWS; Ref is the revision's ARN."""

    resource_type = "AWS::ECS::TaskDefinition"

    def create(self, ctx: Context, logical_id: str, props: dict[str, Any]) -> Record:
        family = props.get("Family") or f"{ctx.stack_name}{logical_id}"
        td = ctx.backend("ecs").register_task_definition(
            family=family,
            container_definitions=camel(props.get("ContainerDefinitions", [])),
            volumes=camel(props.get("Volumes")),
            network_mode=props.get("NetworkMode"),
            tags=camel(props.get("Tags")),
            placement_constraints=camel(props.get("PlacementConstraints")),
            requires_compatibilities=props.get("RequiresCompatibilities"),
            cpu=str(props["Cpu"]) if "Cpu" in props else None,
            memory=str(props["Memory"]) if "Memory" in props else None,
            task_role_arn=props.get("TaskRoleArn"),
            execution_role_arn=props.get("ExecutionRoleArn"),
            runtime_platform=camel(props.get("RuntimePlatform")),
            ipc_mode=props.get("IpcMode"),
            pid_mode=props.get("PidMode"),
            ephemeral_storage=camel(props.get("EphemeralStorage")),
        )
        return Record(logical_id, self.resource_type, td.arn, props, model=td, attributes={"TaskDefinitionArn": td.arn})

    def delete(self, ctx: Context, record: Record) -> None:
        ctx.backend("ecs").deregister_task_definition(record.physical_resource_id)


class EcsService(Provider):
    """ecs_service_settings: the service with what moto dropped, handed to the ECS runtime; completes when its
    deployment has (COMPLETED), fails when the circuit breaker trips."""

    resource_type = "AWS::ECS::Service"
    name_property = "ServiceName"
    replace_on = frozenset(
        {"Cluster", "ServiceName", "LaunchType", "Role", "SchedulingStrategy", "DeploymentController"}
    )

    def create(self, ctx: Context, logical_id: str, props: dict[str, Any]) -> Record:
        backend = ctx.backend("ecs")
        name = self.physical_name(ctx, logical_id, props)
        cluster = str(props.get("Cluster") or "default")
        service = backend.create_service(
            cluster,
            name,
            int(props.get("DesiredCount", 1)),
            task_definition_str=props.get("TaskDefinition"),
            load_balancers=self._load_balancers(props),
            scheduling_strategy=props.get("SchedulingStrategy"),
            tags=camel(props.get("Tags")),
            deployment_controller=camel(props.get("DeploymentController")),
            launch_type=props.get("LaunchType"),
            service_registries=camel(props.get("ServiceRegistries")),
            platform_version=props.get("PlatformVersion"),
            propagate_tags=props.get("PropagateTags", "NONE"),
            network_configuration=camel(props.get("NetworkConfiguration")),
            role_arn=props.get("Role"),
        )
        self._configure(ctx, service, props)
        record = Record(
            logical_id,
            self.resource_type,
            service.arn,
            props,
            model=service,
            attributes={"Name": service.name, "ServiceArn": service.arn},
        )
        record.extra["task_definition"] = service.task_definition
        return record

    @staticmethod
    def _load_balancers(props: dict[str, Any]) -> list[dict[str, Any]]:
        return [
            {k: (int(v) if k == "containerPort" else v) for k, v in lb.items()}
            for lb in camel(props.get("LoadBalancers") or [])
        ]

    def _configure(self, ctx: Context, service: Any, props: dict[str, Any], *, force: bool = False) -> None:
        config = camel(props.get("DeploymentConfiguration") or {})
        for key in ("maximumPercent", "minimumHealthyPercent"):
            if key in config:
                config[key] = int(config[key])
        breaker = config.get("deploymentCircuitBreaker")
        if breaker:
            config["deploymentCircuitBreaker"] = {
                "enable": as_bool(breaker.get("enable")),
                "rollback": as_bool(breaker.get("rollback")),
            }
        if ctx.ecs is not None:
            ctx.ecs.configure_service(
                service,
                deployment_configuration=config,
                grace=int(props.get("HealthCheckGracePeriodSeconds", 0)),
                load_balancers=self._load_balancers(props),
                force=force,
            )
        else:
            service.load_balancers = self._load_balancers(props)

    def update(self, ctx: Context, record: Record, props: dict[str, Any]) -> None:
        backend = ctx.backend("ecs")
        service = backend.update_service(
            {
                "cluster": str(props.get("Cluster") or "default"),
                "service": record.model.name,
                "task_definition": props.get("TaskDefinition"),
                "desired_count": int(props.get("DesiredCount", 1)),
                "platform_version": props.get("PlatformVersion"),
                "network_configuration": camel(props.get("NetworkConfiguration")),
            }
        )
        self._configure(ctx, service, props)
        record.model = service
        record.extra["task_definition"] = service.task_definition
        record.properties = props

    def wait(self, ctx: Context, record: Record) -> None:
        """Until the ECS runtime's PRIMARY deployment of this task definition is COMPLETED (FAILED: an error)."""
        if ctx.ecs is None:
            return
        runtime, lock = ctx.ecs, ctx.sandbox.lock
        service = record.model
        expected = record.extra.get("task_definition") or service.task_definition
        deadline = time.monotonic() + SERVICE_STABILIZATION_TIMEOUT
        while True:
            with lock:
                state = runtime.deployment_state(service.cluster_name, service.name)
            if state is not None:
                primary, rollout, failed = state
                if expected in failed or (rollout == "COMPLETED" and primary != expected):
                    reason = failed.get(expected) or f"rolled back to {primary.rsplit('/', 1)[-1]}"
                    raise ResourceError(
                        f"Error occurred during operation 'ECS Deployment Circuit Breaker was triggered'. ({reason})"
                    )
                if rollout == "COMPLETED":
                    return
            if time.monotonic() > deadline:
                raise ResourceError(
                    f"Service {service.name} did not stabilize in {SERVICE_STABILIZATION_TIMEOUT:.0f} s"
                )
            time.sleep(0.25)

    def delete(self, ctx: Context, record: Record) -> None:
        service = record.model
        backend = ctx.backend("ecs")
        if f"{service.cluster_name}:{service.name}" in backend.services:
            backend.delete_service(service.cluster_name, service.name, force=True)

    def wait_deleted(self, ctx: Context, record: Record) -> None:
        """As CloudFormation, until the service's tasks have drained and stopped."""
        if ctx.ecs is None:
            return
        service = record.model
        deadline = time.monotonic() + SERVICE_STABILIZATION_TIMEOUT
        while time.monotonic() < deadline:
            with ctx.sandbox.lock:
                if ctx.ecs.tasks_left(service.cluster_name, service.name) == 0:
                    return
            time.sleep(0.25)
        raise ResourceError(
            f"the tasks of service {service.name} did not stop in {SERVICE_STABILIZATION_TIMEOUT:.0f} s"
        )


# == ELBv2 ==================================================================================================


class LoadBalancer(Provider):
    """elbv2_load_balancer_settings."""

    resource_type = "AWS::ElasticLoadBalancingV2::LoadBalancer"
    name_property = "Name"
    replace_on = frozenset({"Name", "Scheme", "Type"})

    def create(self, ctx: Context, logical_id: str, props: dict[str, Any]) -> Record:
        backend = ctx.backend("elbv2")
        name = self.physical_name(ctx, logical_id, props)
        lb = backend.create_load_balancer(
            name,
            props.get("SecurityGroups") or [],
            props.get("Subnets") or [],
            subnet_mappings=props.get("SubnetMappings"),
            scheme=props.get("Scheme", "internet-facing"),
            loadbalancer_type=props.get("Type", "application"),
            ip_address_type=props.get("IpAddressType", "ipv4"),
            tags=tag_list(props.get("Tags")) or None,
        )
        self._attributes(backend, lb.arn, props)
        return Record(
            logical_id,
            self.resource_type,
            lb.arn,
            props,
            model=lb,
            attributes={
                "LoadBalancerFullName": lb.arn.split(":loadbalancer/", 1)[-1],
                "CanonicalHostedZoneID": "Z35SXDOTRQ7X7K",
                "SecurityGroups": list(props.get("SecurityGroups") or []),
                "LoadBalancerArn": lb.arn,
            },
        )

    @staticmethod
    def _attributes(backend: Any, arn: str, props: dict[str, Any]) -> None:
        attrs = {a["Key"]: str(a["Value"]) for a in props.get("LoadBalancerAttributes", [])}
        if attrs:
            backend.modify_load_balancer_attributes(arn, attrs)

    def update(self, ctx: Context, record: Record, props: dict[str, Any]) -> None:
        backend = ctx.backend("elbv2")
        self._attributes(backend, record.physical_resource_id, props)
        if props.get("SecurityGroups"):
            backend.set_security_groups(record.physical_resource_id, props["SecurityGroups"])
        record.properties = props

    def delete(self, ctx: Context, record: Record) -> None:
        ctx.backend("elbv2").delete_load_balancer(record.physical_resource_id)


class TargetGroup(Provider):
    """elbv2_target_group_settings: health-check settings and attributes reach the ALB's checker and drains."""

    resource_type = "AWS::ElasticLoadBalancingV2::TargetGroup"
    name_property = "Name"
    replace_on = frozenset({"Name", "Port", "Protocol", "ProtocolVersion", "TargetType", "VpcId"})

    def create(self, ctx: Context, logical_id: str, props: dict[str, Any]) -> Record:
        backend = ctx.backend("elbv2")
        name = self.physical_name(ctx, logical_id, props)
        group = backend.create_target_group(
            name,
            vpc_id=props.get("VpcId"),
            protocol=props.get("Protocol"),
            protocol_version=props.get("ProtocolVersion"),
            port=props.get("Port"),
            target_type=props.get("TargetType"),
            tags=tag_list(props.get("Tags")) or None,
            **self._health(props),
        )
        self._attributes(backend, group.arn, props)
        return Record(
            logical_id,
            self.resource_type,
            group.arn,
            props,
            model=group,
            attributes={
                "TargetGroupFullName": group.arn.split(":", 5)[-1].split("/", 1)[-1],
                "TargetGroupName": group.name,
                "TargetGroupArn": group.arn,
                "LoadBalancerArns": lambda: list(group.load_balancer_arns),
            },
        )

    @staticmethod
    def _health(props: dict[str, Any]) -> dict[str, Any]:
        settings: dict[str, Any] = {
            "healthcheck_protocol": props.get("HealthCheckProtocol"),
            "healthcheck_port": props.get("HealthCheckPort"),
            "healthcheck_path": props.get("HealthCheckPath"),
            "healthcheck_interval_seconds": props.get("HealthCheckIntervalSeconds"),
            "healthcheck_timeout_seconds": props.get("HealthCheckTimeoutSeconds"),
            "healthcheck_enabled": props.get("HealthCheckEnabled"),
            "healthy_threshold_count": props.get("HealthyThresholdCount"),
            "unhealthy_threshold_count": props.get("UnhealthyThresholdCount"),
            "matcher": props.get("Matcher"),
        }
        return {
            k: (str(v) if isinstance(v, int | float) and not isinstance(v, bool) else v)
            for k, v in settings.items()
            if v is not None
        }

    @staticmethod
    def _attributes(backend: Any, arn: str, props: dict[str, Any]) -> None:
        attrs = {a["Key"]: str(a["Value"]) for a in props.get("TargetGroupAttributes", [])}
        if attrs:
            backend.modify_target_group_attributes(arn, attrs)

    def update(self, ctx: Context, record: Record, props: dict[str, Any]) -> None:
        backend = ctx.backend("elbv2")
        health = self._health(props)
        backend.modify_target_group(
            record.physical_resource_id,
            health_check_proto=health.get("healthcheck_protocol"),
            health_check_port=health.get("healthcheck_port"),
            health_check_path=health.get("healthcheck_path"),
            health_check_interval=health.get("healthcheck_interval_seconds"),
            health_check_timeout=health.get("healthcheck_timeout_seconds"),
            healthy_threshold_count=health.get("healthy_threshold_count"),
            unhealthy_threshold_count=health.get("unhealthy_threshold_count"),
            http_codes=(props.get("Matcher") or {}).get("HttpCode"),
            health_check_enabled=health.get("healthcheck_enabled"),
        )
        self._attributes(backend, record.physical_resource_id, props)
        record.properties = props

    def delete(self, ctx: Context, record: Record) -> None:
        ctx.backend("elbv2").delete_target_group(record.physical_resource_id)


class Listener(MotoModel):
    """moto's model (it updates through ModifyListener); deleting deletes the listener (and frees its port)."""

    def __init__(self) -> None:
        super().__init__("AWS::ElasticLoadBalancingV2::Listener", frozenset({"LoadBalancerArn"}))

    def create(self, ctx: Context, logical_id: str, props: dict[str, Any]) -> Record:
        record = super().create(ctx, logical_id, props)
        record.attributes["ListenerArn"] = record.physical_resource_id
        return record

    def delete(self, ctx: Context, record: Record) -> None:
        ctx.backend("elbv2").delete_listener(record.physical_resource_id)


# == the registry ===========================================================================================

COSMETIC: dict[str, str] = {
    "AWS::CDK::Metadata": "CDK's version report",
    "AWS::CloudFormation::WaitConditionHandle": "nothing waits in the sandbox",
}


def providers() -> dict[str, Provider]:
    """Every resource type with its provider (types not listed: moto's model if it has one, else placeholder)."""
    table: dict[str, Provider] = {
        p.resource_type: p
        for p in (
            CognitoUserPool(),
            CognitoUserPoolClient(),
            LambdaFunction(),
            LambdaVersion(),
            LambdaAlias(),
            ApiGatewayMethod(),
            ApiGatewayDeployment(),
            ApiGatewayStage(),
            ApiGatewayAccount(),
            ApiGatewayModel(),
            ApiGatewayRequestValidator(),
            ApiGatewayGatewayResponse(),
            S3Bucket(),
            S3BucketPolicy(),
            Ec2SecurityGroupEgress(),
            EcsCluster(),
            EcsTaskDefinition(),
            EcsService(),
            LoadBalancer(),
            TargetGroup(),
            SsmParameter(),
            SnsSubscription(),
            CloudWatchAlarm(),
        )
    }
    for provider in (
        LambdaPermission(),
        ApiGatewayRestApi(),
        ApiGatewayResource(),
        DynamoDBTable(),
        EcrRepository(),
        LogGroup(),
        IamManagedPolicy(),
        IamRole(),
        SqsQueue(),
        SnsTopic(),
        Ec2SecurityGroup(),
        Listener(),
    ):
        table[provider._type] = provider
    table["AWS::IAM::Policy"] = MotoModel("AWS::IAM::Policy", frozenset({"PolicyName"}))
    for resource_type, (deleter, replace_on) in EC2_DELETERS.items():
        table[resource_type] = Ec2(resource_type, deleter, replace_on)
    for resource_type, why in COSMETIC.items():
        table[resource_type] = Accepted(resource_type, why)
    return table


def provider_for(table: dict[str, Provider], resource_type: str) -> Provider:
    if resource_type in table:
        return table[resource_type]
    if resource_type in get_model_map():
        return table.setdefault(resource_type, MotoModel(resource_type))
    return table.setdefault(resource_type, Placeholder(resource_type))
