"""CloudFormation that deploys: change sets create, update and delete a stack's resources for real, in the
background, with per-resource events, outputs, exports and rollbacks, as AWS CloudFormation does.

moto's CloudFormation creates what it knows of a template inside the request, for few resource types and
few of their properties; a stack made by a CREATE change set gets no outputs and cannot import, an update
re-runs moto's thin models, failures are 500s, events are per stack. This extension keeps moto's records
(stacks, change sets, exports: DescribeStacks, GetTemplate, ListExports answer from them as before) and
replaces the engine. The resource types are in :mod:`sandbox.ext.cloudformation_resources`.

What plain moto lacks, fixed here:

- ``change_sets_that_validate``: CreateChangeSet checks the template as AWS does before anything runs:
  parameters (unknown, missing, AllowedPattern, AllowedValues), capabilities (CAPABILITY_IAM /
  CAPABILITY_NAMED_IAM for IAM resources), references (Ref, Fn::GetAtt, Fn::Sub, DependsOn to nothing:
  "Unresolved resource dependencies"), circular dependencies, the stack's state; a missing import fails
  the change set ("No export named X found.").
- ``change_set_changes``: DescribeChangeSet lists each change with Action, LogicalResourceId,
  PhysicalResourceId, ResourceType, Replacement (True, False or Conditional, by the type's replacement
  properties), PolicyAction (what becomes of a replaced or removed resource: Delete, Retain,
  ReplaceAndRetain...), Scope and Details (which property, static or dynamic, caused by what); a
  parameter change modifies the resources that use it, a replacement the resources that reference it.
- ``change_set_values``: asked IncludePropertyValues, DescribeChangeSet gives a Modify's details one per changed
  value, with Path, BeforeValue (what the resource was made with), AfterValue (the template resolved with the new
  parameters; none when it depends on a resource the update adds or replaces, known only after it) and
  AttributeChangeType.
- ``empty_change_set``: the same template and parameters make a FAILED change set with AWS's reason
  ("The submitted information didn't contain changes. Submit different information to create a change
  set."); moto raised "No updates are to be performed." instead when parameters were passed.
- ``change_sets_per_stack``: Describe/Execute/Delete/ListChangeSets find a change set by name within its
  stack (two stacks may use the same change-set name), or by ARN; executing one deletes the stack's others.
  Deleting one by name succeeds while its stack exists, even when there is no such change set (AWS does so,
  and the CDK CLI counts on it before every deploy).
- ``operations_in_the_background``: ExecuteChangeSet, CreateStack, UpdateStack and DeleteStack return at
  once; a thread per operation works the resources in dependency order (DependsOn, Ref, Fn::GetAtt,
  Fn::Sub), taking the sandbox lock for each resource only, so DescribeStacks and DescribeStackEvents show
  the progress as it happens, and an ECS service waits for its deployment without holding anyone up.
- ``resource_events``: every resource gets CREATE/UPDATE/DELETE _IN_PROGRESS, _COMPLETE, _FAILED (with
  the ResourceStatusReason) and DELETE_SKIPPED events, with physical ids, in order; the stack gets its own
  (User Initiated, UPDATE_COMPLETE_CLEANUP_IN_PROGRESS, ROLLBACK_*...), with StackStatusReason.
- ``updates_by_resolved_properties``: an update resolves each resource's properties and compares them with
  what it was made with: equal ones are left alone; changed ones are updated in place or replaced (a new
  resource first, the old one deleted in the cleanup phase, UpdateReplacePolicy honoured; a custom-named
  resource cannot be replaced, as on AWS), as the type's provider says.
- ``express_mode``: a change set asked for DeploymentConfig Mode EXPRESS applies its resources without waiting for
  them to be ready (an ECS service's deployment, a deleted service's tasks draining): each is complete once its
  configuration is applied, with AWS's status reason ("Resource operation completed using Express Mode. It may
  continue becoming available in the background."), so a rollout that fails later does not fail the stack.
  DeploymentConfig DisableRollback (default false, as the API reference has it) is honoured as ExecuteChangeSet's
  is.
- ``rollback``: a failed create deletes what it made (ROLLBACK_COMPLETE; DisableRollback: CREATE_FAILED);
  a failed update puts the stack back on its previous template and parameters, the resource whose update
  failed included (UPDATE_ROLLBACK_COMPLETE, or UPDATE_ROLLBACK_FAILED, which ContinueUpdateRollback
  retries, ResourcesToSkip honoured); an ECS service whose circuit breaker trips fails its update.
- ``outputs_and_exports``: outputs are resolved after every create and update (moto lost them after a
  change set, and gave every output whose value equalled an export that export's name); exports are
  registered for Fn::ImportValue, must be unique, and one that another stack imports can be neither
  changed nor deleted ("Export X cannot be deleted as it is in use by Y"); ListImports, which moto lacks, names the
  stacks that import one (a ValidationError, as on AWS, when none does).
- ``drift_aware_change_sets``: CreateChangeSet's DeploymentMode REVERT_DRIFT reads the actual settings of each
  resource whose type says how (a Lambda function's description, memory, timeout, handler and environment, an alias's
  version, an SQS queue's settings, a log group's retention: ``Provider.actual``, of the properties the template sets;
  the others NOT_CHECKED) and compares them with what the stack
  last applied: each drifted property is a detail with BeforeValueFrom ACTUAL_STATE and its Drift (PreviousValue,
  ActualValue), a Modify when the template says another value (applied again when executed, though the template did
  not change) or SyncWithActual when it says the actual one (left as it is, the stack's record updated); a resource
  whose every change is such is a SyncWithActual change; every change says its ResourceDriftStatus. Drift alone is a
  change; no drift and no change is still the empty change set.
- ``stack_notifications``: a change set's NotificationARNs (each an SNS topic of the sandbox, else a ValidationError)
  are the stack's once it is executed, and a change of them alone is a change; none named, the stack keeps its own.
  Every event of the stack and of its resources goes to those topics (moto sent the stack's own only, and failed the
  operation on a topic deleted since).
- ``service_roles``: a change set's RoleARN, and DeleteStack's and ContinueUpdateRollback's, is the stack's from then
  on; an operation naming none acts with the stack's. Either must be an IAM role of the sandbox that trusts
  cloudformation.amazonaws.com, else a ValidationError with AWS's words ("Role X is invalid or cannot be assumed");
  the sandbox does not act with it (no IAM enforcement).
- ``termination_protection``: UpdateTerminationProtection, which moto lacks, sets it, and DeleteStack refuses a
  protected stack ("Stack [X] cannot be deleted while TerminationProtection is enabled"), where moto deleted it.
- ``retain_on_delete``: DeleteStack deletes in reverse dependency order; DeletionPolicy Retain keeps the
  resource (DELETE_SKIPPED), as on AWS; a failed deletion is DELETE_FAILED with the resource's reason.
- ``stack_resources``: DescribeStackResource(s) and ListStackResources show each resource's own status,
  reason and time (moto showed the stack's status for all); a deleted stack's, asked by its id, show each
  resource as its deletion left it (DELETE_COMPLETE, or DELETE_SKIPPED for one retained), as on AWS.
- ``loopback_counts_as_tls``: moto enforces S3 bucket policies but ignores their conditions, so the
  templates' "deny unless aws:SecureTransport" statements (CDK's enforceSSL) denied every request. The
  sandbox serves plain HTTP on the loopback only; a Deny whose conditions are only about the transport
  (aws:SecureTransport, s3:TlsVersion) is not applied.

Not done: nested stacks, stack policies, drift, resource import, change sets of type IMPORT, rollback triggers,
stack tags propagated to the resources, parallel resource operations (a stack's resources are worked one at a time;
stacks run in parallel), Fn::Transform / macros, CancelUpdateStack.
"""

from __future__ import annotations

import copy
import json
import logging
import re
import threading
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, cast

from moto.cloudformation.exceptions import CloudFormationError, UnformattedGetAttTemplateException, ValidationError
from moto.cloudformation.models import CloudFormationBackend, Event, Stack
from moto.cloudformation.parsing import Export, ResourceMap, clean_json
from moto.cloudformation.responses import CloudFormationResponse
from moto.cloudformation.utils import generate_changeset_id, generate_stack_id, get_stack_from_s3_url
from moto.core.responses import ActionResult, EmptyResult
from moto.iam.models import iam_backends
from moto.sns.models import sns_backends

from sandbox.ext.cloudformation_resources import Context, Provider, Record, ResourceError, provider_for, providers
from sandbox.server import PartStatus
from sandbox.settings import Settings

if TYPE_CHECKING:
    from sandbox.ext.ecs_runtime import EcsRuntime
    from sandbox.server import Sandbox

log = logging.getLogger("sandbox.cloudformation")

NO_CHANGES = "The submitted information didn't contain changes. Submit different information to create a change set."
UPDATABLE = frozenset(
    {"CREATE_COMPLETE", "UPDATE_COMPLETE", "UPDATE_ROLLBACK_COMPLETE", "IMPORT_COMPLETE", "IMPORT_ROLLBACK_COMPLETE"}
)
IAM_TYPES = {
    "AWS::IAM::Role": "RoleName",
    "AWS::IAM::ManagedPolicy": "ManagedPolicyName",
    "AWS::IAM::User": "UserName",
    "AWS::IAM::Group": "GroupName",
    "AWS::IAM::InstanceProfile": "InstanceProfileName",
    "AWS::IAM::Policy": "",
    "AWS::IAM::AccessKey": "",
    "AWS::IAM::UserToGroupAddition": "",
}
TRANSPORT_CONDITION_KEYS = frozenset({"aws:securetransport", "s3:tlsversion"})
SUB_VARIABLE = re.compile(r"\$\{([^!}][^}]*)\}")


def now() -> datetime:
    return datetime.now(UTC)


# == errors moto does not define ============================================================================


class InsufficientCapabilitiesException(CloudFormationError):
    code = "InsufficientCapabilitiesException"


class InvalidChangeSetStatus(CloudFormationError):
    code = "InvalidChangeSetStatus"


class ChangeSetNotFound(CloudFormationError):
    code = "ChangeSetNotFound"

    def __init__(self, name: str) -> None:
        super().__init__(f"ChangeSet [{name}] does not exist")


class OperationFailed(Exception):
    """A resource failed (``logical_id`` names it, the message is its status reason), or the outputs did
    (``resource`` False: the message is the stack's status reason)."""

    def __init__(self, logical_id: str, reason: str, *, resource: bool = True) -> None:
        super().__init__(reason)
        self.logical_id, self.reason, self.resource = logical_id, reason, resource

    def stack_reason(self, verb: str) -> str:
        if not self.resource:
            return self.reason
        return f"The following resource(s) failed to {verb}: [{self.logical_id}]. "


# == reading templates ======================================================================================


def parse_template(body: str) -> dict[str, Any]:
    try:
        template = Stack.parse_template(body)
    except Exception as exc:
        raise ValidationError(message=f"Template format error: {exc}") from None
    if not isinstance(template, dict) or not isinstance(template.get("Resources"), dict) or not template["Resources"]:
        raise ValidationError(message="Template format error: At least one Resources member must be defined.")
    return template


def references(value: Any) -> set[str]:
    """Names a template fragment refers to through Ref, Fn::GetAtt and Fn::Sub (resources and parameters)."""
    found: set[str] = set()
    if isinstance(value, dict):
        for key, inner in value.items():
            if key == "Ref" and isinstance(inner, str):
                found.add(inner)
            elif key == "Fn::GetAtt":
                target = inner[0] if isinstance(inner, list) else str(inner).split(".", 1)[0]
                found.add(str(target))
            elif key == "Fn::Sub":
                text, variables = (inner[0], inner[1]) if isinstance(inner, list) else (inner, {})
                found |= {m.split(".", 1)[0] for m in SUB_VARIABLE.findall(str(text)) if m not in variables}
                found |= references(variables)
            else:
                found |= references(inner)
    elif isinstance(value, list):
        for item in value:
            found |= references(item)
    return found


def dependencies(template: dict[str, Any]) -> dict[str, set[str]]:
    """Each resource's dependencies on other resources of the template."""
    resources = template.get("Resources", {})
    graph: dict[str, set[str]] = {}
    for logical_id, spec in resources.items():
        depends = spec.get("DependsOn") or []
        needs = set([depends] if isinstance(depends, str) else depends)
        needs |= references({k: v for k, v in spec.items() if k not in ("DependsOn", "Metadata")})
        graph[logical_id] = {n for n in needs if n in resources and n != logical_id}
    return graph


def creation_order(template: dict[str, Any]) -> list[str]:
    """Resources in dependency order (template order among independent ones)."""
    graph = dependencies(template)
    order: list[str] = []
    placed: set[str] = set()
    while len(order) < len(graph):
        ready = [n for n in graph if n not in placed and graph[n] <= placed]
        if not ready:
            stuck = sorted(n for n in graph if n not in placed)
            raise ValidationError(message=f"Circular dependency between resources: {stuck}")
        for name in ready:
            order.append(name)
            placed.add(name)
    return order


def imports_of(template: dict[str, Any]) -> set[str]:
    """Export names the template imports (literal names only: the kind CDK writes)."""
    names: set[str] = set()

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            for key, inner in value.items():
                if key == "Fn::ImportValue" and isinstance(inner, str):
                    names.add(inner)
                else:
                    walk(inner)
        elif isinstance(value, list):
            for item in value:
                walk(item)

    walk(template.get("Resources", {}))
    walk(template.get("Outputs", {}))
    return names


def normalized(value: Any) -> Any:
    """For comparing properties: numbers and booleans as CloudFormation passes them (strings)."""
    if isinstance(value, dict):
        return {k: normalized(v) for k, v in value.items()}
    if isinstance(value, list):
        return [normalized(v) for v in value]
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return value


def changed_properties(old: dict[str, Any], new: dict[str, Any]) -> set[str]:
    return {k for k in set(old) | set(new) if normalized(old.get(k)) != normalized(new.get(k))}


def resolve_parameters(
    template: dict[str, Any], given: list[dict[str, Any]], previous: dict[str, str] | None
) -> dict[str, str]:
    """ParameterKey/Value (or UsePreviousValue) pairs checked against the template, as CreateChangeSet does."""
    slots: dict[str, Any] = template.get("Parameters") or {}
    values: dict[str, str] = {}
    for parameter in given:
        key = parameter["ParameterKey"]
        if parameter.get("UsePreviousValue"):
            if previous is None or key not in previous:
                raise ValidationError(
                    message=f"Invalid input for parameter key {key}. Cannot specify usePreviousValue as true for a "
                    "parameter key not in the previous template"
                )
            values[key] = previous[key]
        else:
            values[key] = str(parameter.get("ParameterValue", ""))
    unknown = sorted(set(values) - set(slots))
    if unknown:
        raise ValidationError(message=f"Parameters: [{', '.join(unknown)}] do not exist in the template")
    missing = sorted(k for k, slot in slots.items() if k not in values and "Default" not in slot)
    if missing:
        raise ValidationError(message=f"Parameters: [{', '.join(missing)}] must have values")
    for key, slot in slots.items():
        value = values.get(key, str(slot.get("Default", "")))
        pattern = slot.get("AllowedPattern")
        if pattern and not re.fullmatch(pattern, value):
            raise ValidationError(message=f"Parameter '{key}' must match pattern {pattern}")
        allowed = slot.get("AllowedValues")
        if allowed and value not in [str(a) for a in allowed]:
            raise ValidationError(message=f"Parameter '{key}' must be one of AllowedValues")
    return values


def with_defaults(template: dict[str, Any], values: dict[str, str]) -> dict[str, str]:
    slots: dict[str, Any] = template.get("Parameters") or {}
    return {k: values.get(k, str(slot.get("Default", ""))) for k, slot in slots.items()}


def required_capabilities(template: dict[str, Any]) -> set[str]:
    needed: set[str] = set()
    for spec in template.get("Resources", {}).values():
        name_property = IAM_TYPES.get(spec.get("Type", ""))
        if name_property is None:
            continue
        named = bool(name_property) and bool((spec.get("Properties") or {}).get(name_property))
        needed.add("CAPABILITY_NAMED_IAM" if named else "CAPABILITY_IAM")
    return needed


def check_references(template: dict[str, Any]) -> None:
    resources = template["Resources"]
    known = set(resources) | set(template.get("Parameters") or {})
    for spec in resources.values():
        depends = spec.get("DependsOn") or []
        wanted = set([depends] if isinstance(depends, str) else depends) | references(spec)
        missing = sorted(n for n in wanted if n not in known and not n.startswith("AWS::"))
        if missing:
            raise ValidationError(
                message=f"Template format error: Unresolved resource dependencies {missing} in the Resources block "
                "of the template"
            )
    creation_order(template)


# == records moto serializes ================================================================================


class ResolverNotReady(Exception):
    """A resource referred to before it exists (a bug in the ordering)."""


class Resolver(ResourceMap):
    """moto's ResourceMap (parameters, conditions, pseudo parameters, intrinsic functions) that never creates
    anything itself: it only holds the records CloudFormation made."""

    def __getitem__(self, key: str) -> Any:
        if key in self._parsed_resources:
            return self._parsed_resources[key]
        if key in self._resource_json_map:
            raise ResolverNotReady(f"{key} is not created (yet)")
        raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        return iter([k for k, v in self._parsed_resources.items() if isinstance(v, Record)])

    def __len__(self) -> int:
        return sum(1 for v in self._parsed_resources.values() if isinstance(v, Record))

    def validate_outputs(self) -> None:
        return None

    def records(self) -> dict[str, Record]:
        return {k: v for k, v in self._parsed_resources.items() if isinstance(v, Record)}

    def put(self, record: Record) -> None:
        self._parsed_resources[record.logical_resource_id] = record

    def drop(self, logical_id: str) -> None:
        self._parsed_resources.pop(logical_id, None)

    def condition(self, name: str | None) -> bool:
        return True if not name else bool(self.lazy_condition_map[name])


class ResourceChangeEntry:
    """One change of a change set, in DescribeChangeSet's ResourceChange shape."""

    def __init__(
        self,
        action: str,
        logical_id: str,
        resource_type: str,
        *,
        physical_id: str | None = None,
        replacement: str | None = None,
        details: list[dict[str, Any]] | None = None,
    ) -> None:
        self.action = action
        self.logical_resource_id = logical_id
        self.resource_type = resource_type
        self.physical_resource_id = physical_id
        self.replacement = replacement
        self.scope = ["Properties"] if action == "Modify" else []
        self.details = details or []
        # the same, one per changed value, with BeforeValue and AfterValue: what DescribeChangeSet answers when
        # asked IncludePropertyValues (None: as ``details``)
        self.value_details: list[dict[str, Any]] | None = None
        self.policy_action: str | None = None  # what becomes of the old resource: Delete, Retain, ReplaceAnd...
        # a drift-aware change set's: IN_SYNC, MODIFIED, NOT_CHECKED (None: not one)
        self.resource_drift_status: str | None = None


class SandboxChangeSet:
    """A change set, in DescribeChangeSet's and ChangeSetSummary's shapes."""

    def __init__(
        self,
        *,
        change_set_id: str,
        change_set_name: str,
        change_set_type: str,
        stack: Stack,
        template: str,
        template_dict: dict[str, Any],
        parameters: dict[str, str],
        description: str | None,
        capabilities: list[str],
        tags: list[dict[str, str]],
        notification_arns: list[str] | None,
        role_arn: str | None,
        deployment_config: dict[str, Any] | None = None,
        deployment_mode: str | None = None,
    ) -> None:
        self.change_set_id = change_set_id
        self.change_set_name = change_set_name
        self.change_set_type = change_set_type
        self.stack = stack
        self.stack_id = stack.stack_id
        self.stack_name = stack.name
        self.template = template
        self.template_dict = template_dict
        self.parameters = parameters
        self.description = description
        self.capabilities = capabilities
        self.tags = tags
        self.sets_topics = notification_arns is not None  # None: the stack keeps its own
        self.notification_arns = list(notification_arns or ())
        self.role_arn = role_arn
        self.deployment_config = dict(deployment_config or {})
        self.deployment_mode = deployment_mode  # REVERT_DRIFT: drift_aware_change_sets
        # drift_aware_change_sets: the resources whose drift the execution reverts, and those whose template now says
        # what they have (logical id → the properties' values), which it leaves as they are
        self.reverting: set[str] = set()
        self.synced: dict[str, dict[str, Any]] = {}
        self.creation_time = now()
        self.changes: list[ResourceChangeEntry] = []
        self.status = "CREATE_COMPLETE"
        self.execution_status = "AVAILABLE"
        self.status_reason: str | None = None
        self.include_nested_stacks = False

    def fail(self, reason: str) -> None:
        self.status, self.execution_status, self.status_reason = "FAILED", "UNAVAILABLE", reason

    def with_values(self) -> SandboxChangeSet:
        """change_set_values: the change set as DescribeChangeSet answers IncludePropertyValues, each Modify's
        details one per changed value, with the value before and after."""
        shown = copy.copy(self)
        shown.changes = []
        for change in self.changes:
            if change.value_details is not None:
                with_values = copy.copy(change)
                with_values.details = change.value_details
                change = with_values
            shown.changes.append(change)
        return shown


class StackState:
    """What the engine keeps about a stack beside moto's record."""

    def __init__(self) -> None:
        self.busy = False
        self.imports: set[str] = set()
        self.outputs: list[dict[str, Any]] | None = None
        # after UPDATE_ROLLBACK_FAILED: the template, parameters and records the rollback was going to, and
        # the records still to be cleaned up
        self.rollback: tuple[dict[str, Any], dict[str, str], dict[str, Record], list[tuple[Record, str]]] | None = None
        # once deleted: its resources as the deletion left them (stack_resources)
        self.deleted: dict[str, Record] = {}


def state_of(stack: Stack) -> StackState:
    state = getattr(stack, "_sandbox_state", None)
    if state is None:
        state = StackState()
        stack._sandbox_state = state  # type: ignore[attr-defined]
    return state


def _stack_outputs(stack: Stack) -> list[dict[str, Any]] | None:
    """outputs_and_exports: the outputs the engine resolved (moto matched export names by value)."""
    state = getattr(stack, "_sandbox_state", None)
    if state is not None:
        return state.outputs or None
    if _ORIGINAL_OUTPUTS is None or _ORIGINAL_OUTPUTS.fget is None:
        return None
    return cast(list[dict[str, Any]] | None, _ORIGINAL_OUTPUTS.fget(stack))


_ORIGINAL_OUTPUTS: property | None = None


# == the engine =============================================================================================


class CloudFormationExtension:
    name = "cloudformation"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.sandbox: Sandbox | None = None
        self.ecs: EcsRuntime | None = None
        self.providers: dict[str, Provider] = providers()
        self._threads: dict[str, threading.Thread] = {}

    # -- install --------------------------------------------------------------------------------------------
    def install(self, sandbox: Sandbox) -> None:
        from sandbox.ext.ecs_runtime import EcsRuntime

        self.sandbox = sandbox
        self.ecs = next((e for e in sandbox.extensions if isinstance(e, EcsRuntime)), None)
        self._patch_responses()
        self._patch_stack_outputs()
        if Event.sendToSns is not _send_to_live_topics:
            global _ORIGINAL_SEND
            _ORIGINAL_SEND = Event.sendToSns
            Event.sendToSns = _send_to_live_topics  # type: ignore[method-assign,assignment]
        _loopback_counts_as_tls()

    def _patch_stack_outputs(self) -> None:
        global _ORIGINAL_OUTPUTS
        current = Stack.__dict__["outputs"]
        if current.fget is not _stack_outputs:
            _ORIGINAL_OUTPUTS = current
            Stack.outputs = property(_stack_outputs)  # type: ignore[assignment,method-assign]

    def _patch_responses(self) -> None:
        engine = self

        def create_change_set(response: CloudFormationResponse) -> ActionResult:
            change_set = engine.create_change_set(response.cloudformation_backend, **_change_set_request(response))
            return ActionResult({"Id": change_set.change_set_id, "StackId": change_set.stack_id})

        def describe_change_set(response: CloudFormationResponse) -> ActionResult:
            change_set = engine.find_change_set(
                response.cloudformation_backend, response._get_param("ChangeSetName"), response._get_param("StackName")
            )
            if str(response._get_param("IncludePropertyValues")).lower() == "true":
                return ActionResult(change_set.with_values())
            return ActionResult(change_set)

        def execute_change_set(response: CloudFormationResponse) -> EmptyResult:
            engine.execute_change_set(
                response.cloudformation_backend,
                response._get_param("ChangeSetName"),
                response._get_param("StackName"),
                disable_rollback=response._get_bool_param("DisableRollback", False) or False,
            )
            return EmptyResult()

        def delete_change_set(response: CloudFormationResponse) -> EmptyResult:
            backend = response.cloudformation_backend
            name, stack_name = response._get_param("ChangeSetName"), response._get_param("StackName")
            try:
                change_set = engine.find_change_set(backend, name, stack_name)
            except ChangeSetNotFound:
                # As on AWS, deleting a change set by name succeeds while its stack exists, whether or not the
                # change set does: the CDK CLI deletes "cdk-deploy-change-set" before each deploy this way.
                if not name.startswith("arn:") and engine.find_live_stack(backend, stack_name) is not None:
                    return EmptyResult()
                raise
            if change_set.execution_status == "EXECUTE_IN_PROGRESS":
                raise InvalidChangeSetStatus(
                    f"ChangeSet [{change_set.change_set_id}] cannot be deleted in its current status of "
                    "[EXECUTE_IN_PROGRESS]"
                )
            backend.change_sets.pop(change_set.change_set_id, None)
            return EmptyResult()

        def list_change_sets(response: CloudFormationResponse) -> ActionResult:
            backend = response.cloudformation_backend
            stack = engine.live_stack(backend, response._get_param("StackName"))
            summaries = [c for c in backend.change_sets.values() if getattr(c, "stack_id", None) == stack.stack_id]
            return ActionResult({"Summaries": summaries})

        def create_stack(response: CloudFormationResponse) -> ActionResult:
            backend = response.cloudformation_backend
            request = _change_set_request(response)
            if engine.find_live_stack(backend, request["stack_name"]) is not None:
                raise _already_exists(request["stack_name"])
            request.update(change_set_name=f"sandbox-create-{uuid.uuid4().hex[:12]}", change_set_type="CREATE")
            change_set = engine.create_change_set(backend, **request)
            if change_set.status == "FAILED":
                raise ValidationError(message=change_set.status_reason or "change set failed")
            engine.execute_change_set(
                backend,
                change_set.change_set_id,
                None,
                disable_rollback=response._get_bool_param("DisableRollback", False) or False,
                keep=False,
            )
            return ActionResult({"StackId": change_set.stack_id})

        def update_stack(response: CloudFormationResponse) -> ActionResult:
            backend = response.cloudformation_backend
            request = _change_set_request(response)
            request.update(change_set_name=f"sandbox-update-{uuid.uuid4().hex[:12]}", change_set_type="UPDATE")
            change_set = engine.create_change_set(backend, **request)
            if change_set.status == "FAILED":
                backend.change_sets.pop(change_set.change_set_id, None)
                reason = change_set.status_reason or ""
                raise ValidationError(message="No updates are to be performed." if reason == NO_CHANGES else reason)
            engine.execute_change_set(backend, change_set.change_set_id, None, keep=False)
            return ActionResult({"StackId": change_set.stack_id})

        def delete_stack(response: CloudFormationResponse) -> EmptyResult:
            engine.delete_stack(
                response.cloudformation_backend, response._get_param("StackName"), response._get_param("RoleARN")
            )
            return EmptyResult()

        def continue_update_rollback(response: CloudFormationResponse) -> EmptyResult:
            engine.continue_update_rollback(
                response.cloudformation_backend,
                response._get_param("StackName"),
                set(response._get_param("ResourcesToSkip", []) or []),
                response._get_param("RoleARN"),
            )
            return EmptyResult()

        def describe_stack_resources(response: CloudFormationResponse) -> ActionResult:
            backend = response.cloudformation_backend
            stack = backend.get_stack(response._get_param("StackName"))
            wanted = response._get_param("LogicalResourceId")
            rows = [
                _resource_row(stack, r, "Timestamp")
                for r in engine.records_of(stack).values()
                if not wanted or r.logical_resource_id == wanted
            ]
            return ActionResult({"StackResources": rows})

        def describe_stack_resource(response: CloudFormationResponse) -> ActionResult:
            backend = response.cloudformation_backend
            stack_name = response._get_param("StackName")
            stack = backend.get_stack(stack_name)
            wanted = response._get_param("LogicalResourceId")
            record = engine.records_of(stack).get(wanted)
            if record is None:
                raise ValidationError(message=f"Resource {wanted} does not exist for stack {stack_name}")
            return ActionResult({"StackResourceDetail": _resource_row(stack, record, "LastUpdatedTimestamp")})

        def list_stack_resources(response: CloudFormationResponse) -> ActionResult:
            stack = response.cloudformation_backend.get_stack(response._get_param("StackName"))
            rows = [
                _resource_row(stack, r, "LastUpdatedTimestamp", summary=True) for r in engine.records_of(stack).values()
            ]
            return ActionResult({"StackResourceSummaries": rows})

        def update_termination_protection(response: CloudFormationResponse) -> ActionResult:
            stack = engine.live_stack(response.cloudformation_backend, response._get_param("StackName"))
            stack.enable_termination_protection = bool(response._get_bool_param("EnableTerminationProtection"))
            return ActionResult({"StackId": stack.stack_id})

        def list_imports(response: CloudFormationResponse) -> ActionResult:
            backend = response.cloudformation_backend
            name = response._get_param("ExportName")
            export = backend.exports.get(name)
            exporter = next(
                (s for s in backend.stacks.values() if export and s.stack_id == export.exporting_stack_id), None
            )
            users = engine._importers(backend, name, exporter)
            if not users:  # AWS's answer for an export nothing imports (or no export of that name)
                raise ValidationError(message=f"Export '{name}' is not imported by any stack.")
            return ActionResult({"Imports": users})

        for name, method in (
            ("create_change_set", create_change_set),
            ("describe_change_set", describe_change_set),
            ("execute_change_set", execute_change_set),
            ("delete_change_set", delete_change_set),
            ("list_change_sets", list_change_sets),
            ("create_stack", create_stack),
            ("update_stack", update_stack),
            ("delete_stack", delete_stack),
            ("continue_update_rollback", continue_update_rollback),
            ("describe_stack_resources", describe_stack_resources),
            ("describe_stack_resource", describe_stack_resource),
            ("list_stack_resources", list_stack_resources),
            ("list_imports", list_imports),
            ("update_termination_protection", update_termination_protection),
        ):
            setattr(CloudFormationResponse, name, method)

    # -- lookups --------------------------------------------------------------------------------------------
    @staticmethod
    def find_live_stack(backend: CloudFormationBackend, name_or_id: str | None) -> Stack | None:
        if not name_or_id:
            return None
        for stack in backend.stacks.values():
            if stack.name == name_or_id or stack.stack_id == name_or_id:
                return stack
        return None

    def live_stack(self, backend: CloudFormationBackend, name_or_id: str | None) -> Stack:
        stack = self.find_live_stack(backend, name_or_id)
        if stack is None:
            raise ValidationError(name_or_id)
        return stack

    def find_change_set(self, backend: CloudFormationBackend, name: str, stack_name: str | None) -> SandboxChangeSet:
        if name in backend.change_sets and isinstance(backend.change_sets[name], SandboxChangeSet):
            return backend.change_sets[name]  # type: ignore[return-value]
        if name.startswith("arn:"):
            raise ChangeSetNotFound(name)
        if not stack_name:
            raise ValidationError(message="StackName must be specified if ChangeSetName is not specified as an ARN.")
        stack = self.find_live_stack(backend, stack_name)
        for change_set in backend.change_sets.values():
            if (
                isinstance(change_set, SandboxChangeSet)
                and stack is not None
                and change_set.stack_id == stack.stack_id
                and change_set.change_set_name == name
            ):
                return change_set
        raise ChangeSetNotFound(name)

    @staticmethod
    def records_of(stack: Stack) -> dict[str, Record]:
        if stack.status == "DELETE_COMPLETE":
            return state_of(stack).deleted
        resource_map = stack.resource_map
        return resource_map.records() if isinstance(resource_map, Resolver) else {}

    # -- change sets ----------------------------------------------------------------------------------------
    def create_change_set(
        self,
        backend: CloudFormationBackend,
        *,
        stack_name: str,
        change_set_name: str,
        change_set_type: str,
        template: str | None,
        use_previous_template: bool,
        parameters: list[dict[str, Any]],
        capabilities: list[str],
        tags: list[dict[str, str]],
        description: str | None,
        notification_arns: list[str] | None,
        role_arn: str | None,
        deployment_config: dict[str, Any] | None = None,
        deployment_mode: str | None = None,
    ) -> SandboxChangeSet:
        """change_sets_that_validate, change_set_changes, empty_change_set, express_mode, stack_notifications,
        drift_aware_change_sets."""
        if deployment_mode not in (None, "", "REVERT_DRIFT"):
            raise ValidationError(
                message=f"1 validation error detected: Value '{deployment_mode}' at 'deploymentMode' failed to "
                "satisfy constraint: Member must satisfy enum value set: [REVERT_DRIFT]"
            )
        mode = (deployment_config or {}).get("Mode", "STANDARD")
        if mode not in ("STANDARD", "EXPRESS"):
            raise ValidationError(
                message=f"1 validation error detected: Value '{mode}' at 'deploymentConfig.mode' failed to satisfy "
                "constraint: Member must satisfy enum value set: [STANDARD, EXPRESS]"
            )
        if not re.fullmatch(r"[a-zA-Z][-a-zA-Z0-9]*", change_set_name or "") or len(change_set_name) > 128:
            raise ValidationError(
                message=f"1 validation error detected: Value '{change_set_name}' at 'changeSetName' failed to satisfy "
                "constraint: Member must satisfy regular expression pattern: [a-zA-Z][-a-zA-Z0-9]*"
            )
        stack = self.find_live_stack(backend, stack_name)
        if change_set_type == "CREATE":
            if stack is not None and stack.status != "REVIEW_IN_PROGRESS":
                raise ValidationError(
                    message=f"Stack [{stack_name}] already exists and cannot be created again with the changeSet "
                    f"[{change_set_name}]."
                )
        elif change_set_type == "UPDATE":
            if stack is None:
                raise ValidationError(message=f"Stack [{stack_name}] does not exist")
            if stack.status not in UPDATABLE or state_of(stack).busy:
                raise ValidationError(
                    message=f"Stack:{stack.stack_id} is in {stack.status} state and can not be updated."
                )
        else:
            raise ValidationError(message=f"ChangeSetType {change_set_type} is not supported by the sandbox")
        if use_previous_template:
            if stack is None or change_set_type != "UPDATE":
                raise ValidationError(message="UsePreviousTemplate can only be used with an UPDATE change set")
            template = stack.template if isinstance(stack.template, str) else json.dumps(stack.template)
        if not template:
            raise ValidationError(message="Either Template URL or Template Body must be specified.")
        for arn in notification_arns or ():
            if arn not in sns_backends[backend.account_id][backend.region_name].topics:
                raise ValidationError(message=f"Notification ARN {arn} is not an SNS topic of this sandbox")
        _check_role(
            backend, role_arn or (stack.role_arn if stack is not None and change_set_type == "UPDATE" else None)
        )
        template_dict = parse_template(template)
        previous = dict(stack.parameters) if stack is not None and change_set_type == "UPDATE" else None
        values = resolve_parameters(template_dict, parameters, previous)
        check_references(template_dict)
        missing_capabilities = sorted(required_capabilities(template_dict) - set(capabilities))
        if missing_capabilities:
            raise InsufficientCapabilitiesException(f"Requires capabilities : [{', '.join(missing_capabilities)}]")
        for name in dict.fromkeys(
            p["ParameterKey"] for p in parameters if p.get("UsePreviousValue") and p.get("ParameterValue")
        ):
            raise ValidationError(
                message=f"Invalid input for parameter key {name}. Cannot specify usePreviousValue as true and non "
                "empty value for a parameter"
            )

        if stack is None:
            stack = Stack(  # type: ignore[abstract]
                stack_id=generate_stack_id(stack_name, backend.region_name, backend.account_id),
                name=stack_name,
                template={},
                parameters={},
                account_id=backend.account_id,
                region_name=backend.region_name,
                notification_arns=[],  # its change set's, once executed
                tags={t["Key"]: t["Value"] for t in tags},
                role_arn=role_arn,
            )
            stack.status = "REVIEW_IN_PROGRESS"
            stack.template = ""
            state_of(stack)
            backend.stacks[stack.stack_id] = stack
            stack._add_stack_event("REVIEW_IN_PROGRESS", resource_status_reason="User Initiated")

        change_set = SandboxChangeSet(
            change_set_id=generate_changeset_id(change_set_name, backend.region_name, backend.account_id),
            change_set_name=change_set_name,
            change_set_type=change_set_type,
            stack=stack,
            template=template,
            template_dict=template_dict,
            parameters=values,
            description=description,
            capabilities=list(capabilities),
            tags=list(tags),
            notification_arns=notification_arns,
            role_arn=role_arn,
            deployment_config=deployment_config,
            deployment_mode=deployment_mode or None,
        )
        missing = sorted(n for n in imports_of(template_dict) if n not in backend.exports)
        if missing:
            change_set.fail(f"No export named {missing[0]} found.")
        elif change_set_type == "UPDATE":
            old_values = with_defaults(stack.template_dict, dict(stack.parameters))
            new_values = with_defaults(template_dict, values)
            same_tags = not tags or {t["Key"]: t["Value"] for t in tags} == dict(stack.tags or {})
            same_topics = notification_arns is None or set(notification_arns) == set(stack.notification_arns or ())
            drift = self.drift_of(backend, stack) if change_set.deployment_mode else {}
            drifted = any(read[1] for read in drift.values() if read is not None)
            same = template_dict == stack.template_dict and old_values == new_values and same_tags and same_topics
            if same and not drifted:
                change_set.fail(NO_CHANGES)
            else:
                change_set.changes = self.plan_changes(stack, template_dict, new_values)
                self._add_values(backend, stack, template_dict, values, change_set.changes)
                if change_set.deployment_mode:
                    self._add_drift(backend, stack, change_set, drift)
        else:
            change_set.changes = [
                ResourceChangeEntry("Add", logical_id, spec["Type"])
                for logical_id, spec in template_dict["Resources"].items()
            ]
        backend.change_sets[change_set.change_set_id] = change_set  # type: ignore[assignment]
        return change_set

    def plan_changes(self, stack: Stack, template: dict[str, Any], values: dict[str, str]) -> list[ResourceChangeEntry]:
        """change_set_changes: what an UPDATE will do, from the templates, parameters and replacement rules."""
        old_template = stack.template_dict
        old_resources, new_resources = old_template.get("Resources", {}), template["Resources"]
        old_values = with_defaults(old_template, dict(stack.parameters))
        new_values = with_defaults(template, values)
        changed_parameters = {k for k in set(old_values) | set(new_values) if old_values.get(k) != new_values.get(k)}
        records = self.records_of(stack)
        replaced: set[str] = set()
        changes: list[ResourceChangeEntry] = []
        for logical_id in creation_order(template):
            spec = new_resources[logical_id]
            old = old_resources.get(logical_id)
            physical = records[logical_id].physical_resource_id if logical_id in records else None
            if old is None:
                changes.append(ResourceChangeEntry("Add", logical_id, spec["Type"]))
                continue
            if old.get("Type") != spec["Type"]:
                replaced.add(logical_id)
                changes.append(
                    ResourceChangeEntry("Modify", logical_id, spec["Type"], physical_id=physical, replacement="True")
                )
                continue
            provider = provider_for(self.providers, spec["Type"])
            old_props, new_props = old.get("Properties") or {}, spec.get("Properties") or {}
            direct = changed_properties(old_props, new_props)
            by_parameter = {p for p, v in new_props.items() if references(v) & changed_parameters} - direct
            by_resource = {p for p, v in new_props.items() if references(v) & replaced} - direct - by_parameter
            if not (direct or by_parameter or by_resource):
                continue
            details: list[dict[str, Any]] = []
            for prop in sorted(direct):
                details.append(_detail(provider, prop, "Static", "DirectModification", None))
            for prop in sorted(by_parameter):
                causes = sorted(references(new_props[prop]) & changed_parameters)
                details.append(_detail(provider, prop, "Static", "ParameterReference", causes[0]))
            for prop in sorted(by_resource):
                causes = sorted(references(new_props[prop]) & replaced)
                details.append(_detail(provider, prop, "Dynamic", "ResourceReference", causes[0]))
            if provider.requires_replacement(direct | by_parameter):
                replacement = "True"
            elif provider.requires_replacement(by_resource):
                replacement = "Conditional"
            else:
                replacement = "False"
            if replacement != "False":
                replaced.add(logical_id)
            change = ResourceChangeEntry(
                "Modify", logical_id, spec["Type"], physical_id=physical, replacement=replacement, details=details
            )
            if replacement == "True":
                change.policy_action = f"ReplaceAnd{_policy(old, 'UpdateReplacePolicy')}"
            changes.append(change)
        for logical_id, spec in old_resources.items():
            if logical_id not in new_resources:
                physical = records[logical_id].physical_resource_id if logical_id in records else None
                change = ResourceChangeEntry("Remove", logical_id, spec.get("Type", ""), physical_id=physical)
                change.policy_action = _policy(spec, "DeletionPolicy")
                changes.append(change)
        return changes

    def _add_values(
        self,
        backend: CloudFormationBackend,
        stack: Stack,
        template: dict[str, Any],
        values: dict[str, str],
        changes: list[ResourceChangeEntry],
    ) -> None:
        """change_set_values: each Modify's changed values, the properties resolved as the update would resolve them
        (a value that depends on a resource added or replaced is known only after the update: no AfterValue)."""
        records = self.records_of(stack)
        new = {c.logical_resource_id for c in changes if c.action == "Add" or c.replacement == "True"}
        resolver = self._resolver(backend, stack, template, values)
        for logical_id, record in records.items():
            if logical_id not in new:
                resolver.put(record)
        for logical_id in new:
            resolver.put(_NotYetMade(logical_id, template["Resources"][logical_id]["Type"], UNKNOWN, {}))
        for change in changes:
            made = records.get(change.logical_resource_id)
            if change.action != "Modify" or made is None or not change.details:
                continue
            spec = template["Resources"][change.logical_resource_id]
            try:
                after = clean_json(copy.deepcopy(spec.get("Properties") or {}), resolver)
                change.value_details = _value_details(change.details, made.properties, after)
            except Exception:  # unresolvable now (the update will say why): the details as they are
                continue

    def drift_of(
        self, backend: CloudFormationBackend, stack: Stack
    ) -> dict[str, tuple[dict[str, Any], dict[str, tuple[Any, Any]]] | None]:
        """drift_aware_change_sets: each resource of ``stack`` → (its settings as its service has them now, of the
        properties read; each of those that differs from what the stack last applied → (applied, actual)); None for
        a resource whose drift is not read."""
        ctx = self._context(backend, stack)
        found: dict[str, tuple[dict[str, Any], dict[str, tuple[Any, Any]]] | None] = {}
        for logical_id, record in self.records_of(stack).items():
            try:
                actual = provider_for(self.providers, record.cf_resource_type).actual(ctx, record)
            except Exception:  # gone, or not readable: not checked
                actual = None
            if actual is None:
                found[logical_id] = None
                continue
            applied = record.properties
            found[logical_id] = (
                actual,
                {k: (applied.get(k), v) for k, v in actual.items() if normalized(applied.get(k)) != normalized(v)},
            )
        return found

    def _add_drift(
        self,
        backend: CloudFormationBackend,
        stack: Stack,
        change_set: SandboxChangeSet,
        drift: dict[str, tuple[dict[str, Any], dict[str, tuple[Any, Any]]] | None],
    ) -> None:
        """drift_aware_change_sets: every change says its resource's drift status; each drifted property is a
        detail compared with the resource's actual value (BeforeValueFrom ACTUAL_STATE, its Drift the value the stack
        last applied and the actual one): Modify when the template says another value (the execution puts the
        template's back), SyncWithActual when it says the actual one (left as it is; a resource whose every change
        is such is a SyncWithActual change). A drifted resource the template does not change is a Modify of its
        drifted properties."""
        template, values = change_set.template_dict, change_set.parameters
        resolver = self._resolver(backend, stack, template, values)
        records = self.records_of(stack)
        made = {c.logical_resource_id for c in change_set.changes if c.action == "Add" or c.replacement == "True"}
        for logical_id, record in records.items():  # one the update makes anew: known once made (as _add_values)
            resolver.put(
                record if logical_id not in made else _NotYetMade(logical_id, record.cf_resource_type, UNKNOWN, {})
            )
        by_id = {c.logical_resource_id: c for c in change_set.changes}
        for logical_id, read in drift.items():
            spec = template["Resources"].get(logical_id)
            change = by_id.get(logical_id)
            if read is None or spec is None or spec.get("Type") != records[logical_id].cf_resource_type:
                if change is not None:
                    change.resource_drift_status = "NOT_CHECKED" if read is None else _drift_status(read[1])
                continue
            _, drifted = read
            if not drifted:
                if change is not None:
                    change.resource_drift_status = "IN_SYNC"
                continue
            try:
                after = clean_json(copy.deepcopy(spec.get("Properties") or {}), resolver)
            except Exception:  # not known before the update: the drift is reverted to what the update resolves
                after = {}
            provider = provider_for(self.providers, spec["Type"])
            details: dict[str, dict[str, Any]] = {}
            synced: dict[str, Any] = {}
            for prop, (applied, actual) in sorted(drifted.items()):
                wanted = after.get(prop, _ABSENT)
                kind = "SyncWithActual" if normalized(wanted) == normalized(actual) else "Modify"
                if kind == "SyncWithActual":
                    synced[prop] = actual
                target: dict[str, Any] = {
                    "Attribute": "Properties",
                    "Name": prop,
                    "Path": f"/Properties/{prop}",
                    "RequiresRecreation": "Always" if provider.requires_replacement({prop}) else "Never",
                    "BeforeValueFrom": "ACTUAL_STATE",
                    "AfterValueFrom": "TEMPLATE",
                    "AttributeChangeType": kind,
                    "Drift": {
                        key: shown
                        for key, value in (("PreviousValue", applied), ("ActualValue", actual))
                        if (shown := _shown(value)) is not None
                    },
                }
                for key, value in (("BeforeValue", actual), ("AfterValue", wanted)):
                    if (shown := _shown(value)) is not None:
                        target[key] = shown
                details[prop] = {"Target": target, "Evaluation": "Static"}
            if change is None:
                physical = records[logical_id].physical_resource_id
                change = ResourceChangeEntry("Modify", logical_id, spec["Type"], physical_id=physical)
                change.replacement = "False"
                change_set.changes.append(change)
            # the template's own changes of those properties are told by their drift details
            kept = [d for d in change.value_details or change.details if d["Target"].get("Name") not in details]
            change.details = change.value_details = [*kept, *details.values()]
            change.resource_drift_status = "MODIFIED"
            if all(d["Target"].get("AttributeChangeType") == "SyncWithActual" for d in change.details):
                change.action, change.scope, change.replacement = "SyncWithActual", [], None
            if len(synced) < len(drifted):
                change_set.reverting.add(logical_id)
            if synced:
                change_set.synced[logical_id] = synced

    def execute_change_set(
        self,
        backend: CloudFormationBackend,
        name: str,
        stack_name: str | None,
        *,
        disable_rollback: bool = False,
        keep: bool = True,
    ) -> None:
        change_set = self.find_change_set(backend, name, stack_name)
        if change_set.status != "CREATE_COMPLETE" or change_set.execution_status != "AVAILABLE":
            raise InvalidChangeSetStatus(
                f"ChangeSet [{change_set.change_set_id}] cannot be executed in its current execution status of "
                f"[{change_set.execution_status}]"
            )
        stack = change_set.stack
        state = state_of(stack)
        if state.busy:
            raise ValidationError(message=f"Stack:{stack.stack_id} is in {stack.status} state and can not be updated.")
        if "DisableRollback" in change_set.deployment_config:  # its default false, as the API reference gives it
            disable_rollback = str(change_set.deployment_config["DisableRollback"]).lower() == "true"
        for other_id, other in list(backend.change_sets.items()):
            if other_id != change_set.change_set_id and getattr(other, "stack_id", None) == stack.stack_id:
                del backend.change_sets[other_id]
        if not keep:
            backend.change_sets.pop(change_set.change_set_id, None)
        change_set.execution_status = "EXECUTE_IN_PROGRESS"
        stack.change_set_id = change_set.change_set_id  # type: ignore[attr-defined]
        stack.disable_rollback = disable_rollback
        stack.capabilities = change_set.capabilities  # type: ignore[attr-defined]
        if change_set.tags:
            stack.tags = {t["Key"]: t["Value"] for t in change_set.tags}
        if change_set.sets_topics:
            stack.notification_arns = list(change_set.notification_arns)
        if change_set.role_arn:  # the stack's from now on, as on AWS
            stack.role_arn = change_set.role_arn
        records = self.records_of(stack)
        for logical_id in change_set.reverting & set(records):  # applied again, though the template says the same
            records[logical_id].extra["dirty"] = True
        for logical_id, synced in change_set.synced.items():  # the template says what it has: nothing to apply
            if logical_id in records:
                records[logical_id].properties = {**records[logical_id].properties, **synced}
        state.busy = True
        if change_set.change_set_type == "CREATE":
            stack.status = "CREATE_IN_PROGRESS"
            stack._add_stack_event("CREATE_IN_PROGRESS", resource_status_reason="User Initiated")
            work: Callable[[], None] = lambda: self._create(backend, stack, change_set, disable_rollback)  # noqa: E731
        else:
            stack.status = "UPDATE_IN_PROGRESS"
            stack.last_updated_time = now()  # type: ignore[attr-defined]
            stack._add_stack_event("UPDATE_IN_PROGRESS", resource_status_reason="User Initiated")
            work = lambda: self._update(backend, stack, change_set)  # noqa: E731
        self._start(stack, work)

    def delete_stack(self, backend: CloudFormationBackend, name_or_id: str, role_arn: str | None = None) -> None:
        """retain_on_delete, termination_protection, service_roles."""
        stack = self.find_live_stack(backend, name_or_id)
        if stack is None:
            return  # deleting a stack that does not exist succeeds, as on AWS
        state = state_of(stack)
        if stack.status == "DELETE_IN_PROGRESS":
            return
        if state.busy:
            raise ValidationError(message=f"Stack [{stack.name}] cannot be deleted while in status {stack.status}")
        if getattr(stack, "enable_termination_protection", False):  # as AWS: moto deleted it all the same
            raise ValidationError(
                message=f"Stack [{stack.name}] cannot be deleted while TerminationProtection is enabled"
            )
        _take_role(backend, stack, role_arn)
        state.busy = True
        stack.status = "DELETE_IN_PROGRESS"
        stack._add_stack_event("DELETE_IN_PROGRESS", resource_status_reason="User Initiated")
        self._start(stack, lambda: self._delete(backend, stack))

    def continue_update_rollback(
        self, backend: CloudFormationBackend, name: str, skip: set[str], role_arn: str | None = None
    ) -> None:
        stack = self.live_stack(backend, name)
        state = state_of(stack)
        if stack.status != "UPDATE_ROLLBACK_FAILED" or state.rollback is None or state.busy:
            raise ValidationError(
                message=f"Stack {stack.stack_id} is in {stack.status} state and can not continue update rollback."
            )
        _take_role(backend, stack, role_arn)
        state.busy = True
        stack.status = "UPDATE_ROLLBACK_IN_PROGRESS"
        stack._add_stack_event("UPDATE_ROLLBACK_IN_PROGRESS", resource_status_reason="User Initiated")
        template, values, records, pending = state.rollback
        self._start(stack, lambda: self._roll_back(backend, stack, template, values, records, pending, skip))

    # -- operations (in their own thread) -------------------------------------------------------------------
    def _start(self, stack: Stack, work: Callable[[], None]) -> None:
        def run() -> None:
            try:
                work()
            except Exception:
                log.exception("stack %s: the sandbox's CloudFormation failed", stack.name)
                assert self.sandbox is not None
                with self.sandbox.lock:
                    if stack.status.endswith("_IN_PROGRESS"):
                        failed = {
                            "CREATE_IN_PROGRESS": "CREATE_FAILED",
                            "DELETE_IN_PROGRESS": "DELETE_FAILED",
                            "ROLLBACK_IN_PROGRESS": "ROLLBACK_FAILED",
                        }.get(stack.status, "UPDATE_ROLLBACK_FAILED")
                        self._stack_status(stack, failed, "Internal failure of the sandbox (see its log)")
            finally:
                state_of(stack).busy = False
                self._threads.pop(stack.stack_id, None)

        thread = threading.Thread(target=run, name=f"cfn-{stack.name}", daemon=True)
        self._threads[stack.stack_id] = thread
        thread.start()

    def _context(
        self, backend: CloudFormationBackend, stack: Stack, change_set: SandboxChangeSet | None = None
    ) -> Context:
        """``change_set``: the one whose execution this is (its DeploymentConfig Mode: express_mode)."""
        assert self.sandbox is not None
        express = change_set is not None and change_set.deployment_config.get("Mode") == "EXPRESS"
        return Context(
            self.sandbox, backend.account_id, backend.region_name, stack.name, stack.stack_id, self.ecs, express=express
        )

    def _resolver(
        self, backend: CloudFormationBackend, stack: Stack, template: dict[str, Any], values: dict[str, str]
    ) -> Resolver:
        resolver = Resolver(
            stack.stack_id,
            stack.name,
            dict(values),
            dict(stack.tags or {}),
            region_name=backend.region_name,
            account_id=backend.account_id,
            template=template,
            cross_stack_resources=backend.exports,
        )
        resolver.load()
        return resolver

    def _create(
        self, backend: CloudFormationBackend, stack: Stack, change_set: SandboxChangeSet, disable_rollback: bool
    ) -> None:
        assert self.sandbox is not None
        ctx = self._context(backend, stack, change_set)
        template, values = change_set.template_dict, change_set.parameters
        with self.sandbox.lock:
            resolver = self._resolver(backend, stack, template, values)
            stack.template, stack.template_dict, stack.parameters = change_set.template, template, values
            stack.description = template.get("Description")
            stack.resource_map = resolver
            stack.output_map = stack._create_output_map()
        try:
            self._converge(ctx, stack, resolver, {}, template)
            with self.sandbox.lock:
                self._publish_outputs(backend, stack, resolver, template)
        except OperationFailed as failure:
            with self.sandbox.lock:
                change_set.execution_status = "EXECUTE_FAILED"
            reason = failure.stack_reason("create")
            if disable_rollback:
                with self.sandbox.lock:
                    self._stack_status(stack, "CREATE_FAILED", reason)
                return
            with self.sandbox.lock:
                self._stack_status(stack, "ROLLBACK_IN_PROGRESS", f"{reason.rstrip()} Rollback requested by user.")
            items = [(r, "DeletionPolicy") for r in resolver.records().values()]
            failed = self._delete_records(ctx, stack, resolver, items, template)
            with self.sandbox.lock:
                if failed:
                    self._stack_status(
                        stack, "ROLLBACK_FAILED", f"The following resource(s) failed to delete: [{', '.join(failed)}]. "
                    )
                else:
                    self._stack_status(stack, "ROLLBACK_COMPLETE", "")
            return
        with self.sandbox.lock:
            change_set.execution_status = "EXECUTE_COMPLETE"
            self._stack_status(stack, "CREATE_COMPLETE", "")

    def _update(self, backend: CloudFormationBackend, stack: Stack, change_set: SandboxChangeSet) -> None:
        assert self.sandbox is not None
        ctx = self._context(backend, stack, change_set)
        old_template, old_values = stack.template_dict, dict(stack.parameters)
        current = self.records_of(stack)
        template, values = change_set.template_dict, change_set.parameters
        with self.sandbox.lock:
            target = self._resolver(backend, stack, template, values)
        try:
            cleanup = self._converge(ctx, stack, target, current, template)
            with self.sandbox.lock:
                self._publish_outputs(backend, stack, target, template)
        except OperationFailed as failure:
            with self.sandbox.lock:
                change_set.execution_status = "EXECUTE_FAILED"
                self._stack_status(
                    stack,
                    "UPDATE_ROLLBACK_IN_PROGRESS",
                    failure.stack_reason("update"),
                )
            made = [(r, "") for r in target.records().values() if all(r is not c for c in current.values())]
            self._roll_back(backend, stack, old_template, old_values, current, made, set())
            return
        with self.sandbox.lock:
            change_set.execution_status = "EXECUTE_COMPLETE"
            stack.template, stack.template_dict, stack.parameters = change_set.template, template, values
            stack.description = template.get("Description")
            stack.resource_map = target
            stack.output_map = stack._create_output_map()
            self._stack_status(stack, "UPDATE_COMPLETE_CLEANUP_IN_PROGRESS", "")
        self._delete_records(ctx, stack, None, cleanup, old_template)
        with self.sandbox.lock:
            self._stack_status(stack, "UPDATE_COMPLETE", "")

    def _roll_back(
        self,
        backend: CloudFormationBackend,
        stack: Stack,
        template: dict[str, Any],
        values: dict[str, str],
        records: dict[str, Record],
        pending: list[tuple[Record, str]],
        skip: set[str],
    ) -> None:
        """rollback: back to ``template``/``values`` from ``records`` (the resources as they were, where they
        were replaced); ``pending``: resources made by the failed update, deleted in the cleanup."""
        assert self.sandbox is not None
        ctx = self._context(backend, stack)
        with self.sandbox.lock:
            back = self._resolver(backend, stack, template, values)
        state = state_of(stack)
        try:
            cleanup = self._converge(ctx, stack, back, records, template, skip=skip)
        except OperationFailed as failure:
            with self.sandbox.lock:
                state.rollback = (template, values, {**records, **back.records()}, pending)
                stack.resource_map = back
                self._stack_status(
                    stack,
                    "UPDATE_ROLLBACK_FAILED",
                    failure.stack_reason("update"),
                )
            return
        with self.sandbox.lock:
            state.rollback = None
            stack.resource_map = back
            stack.template_dict, stack.parameters = template, values
            self._publish_outputs(backend, stack, back, template, check_imports=False)
            self._stack_status(stack, "UPDATE_ROLLBACK_COMPLETE_CLEANUP_IN_PROGRESS", "")
        kept = list(back.records().values())
        leftovers = [(r, p) for r, p in pending if all(r is not k for k in kept)]
        self._delete_records(ctx, stack, None, leftovers + cleanup, template)
        with self.sandbox.lock:
            self._stack_status(stack, "UPDATE_ROLLBACK_COMPLETE", "")

    def _delete(self, backend: CloudFormationBackend, stack: Stack) -> None:
        assert self.sandbox is not None
        ctx = self._context(backend, stack)
        state = state_of(stack)
        with self.sandbox.lock:
            mine = [e.name for e in backend.exports.values() if e.exporting_stack_id == stack.stack_id]
            for export in mine:
                users = self._importers(backend, export, stack)
                if users:
                    self._stack_status(
                        stack,
                        "DELETE_FAILED",
                        f"Export {export} cannot be deleted as it is in use by {', '.join(users)}",
                    )
                    return
        resolver = stack.resource_map
        items = [(r, "DeletionPolicy") for r in resolver.records().values()] if isinstance(resolver, Resolver) else []
        records = {record.logical_resource_id: record for record, _ in items}  # their statuses follow the deletion
        pending_cleanup = state.rollback[3] if state.rollback else []
        failed = self._delete_records(
            ctx,
            stack,
            resolver if isinstance(resolver, Resolver) else None,
            items + pending_cleanup,
            stack.template_dict,
        )
        with self.sandbox.lock:
            if failed:
                self._stack_status(
                    stack, "DELETE_FAILED", f"The following resource(s) failed to delete: [{', '.join(failed)}]. "
                )
                return
            for export in mine:
                backend.exports.pop(export, None)
            state.outputs, state.rollback, state.deleted = None, None, records
            stack.deletion_time = now()  # type: ignore[attr-defined]
            self._stack_status(stack, "DELETE_COMPLETE", "")
            backend.stacks.pop(stack.stack_id, None)
            backend.deleted_stacks[stack.stack_id] = stack
            for change_set_id, change_set in list(backend.change_sets.items()):
                if getattr(change_set, "stack_id", None) == stack.stack_id:
                    del backend.change_sets[change_set_id]

    # -- the resource work ----------------------------------------------------------------------------------
    def _converge(
        self,
        ctx: Context,
        stack: Stack,
        target: Resolver,
        current: dict[str, Record],
        template: dict[str, Any],
        *,
        skip: set[str] | None = None,
    ) -> list[tuple[Record, str]]:
        """updates_by_resolved_properties: make ``target``'s resources from ``current``; returns the records
        left over for the cleanup, each with the policy that decides (UpdateReplacePolicy for a replaced
        resource, DeletionPolicy for a removed one). Raises OperationFailed at the first failure."""
        assert self.sandbox is not None
        lock = self.sandbox.lock
        resources = template["Resources"]
        cleanup: list[tuple[Record, str]] = []
        with lock:
            for logical_id, record in current.items():
                spec = resources.get(logical_id)
                if spec is not None and spec.get("Type") == record.cf_resource_type:
                    target.put(record)
            order = creation_order(template)
        live: set[str] = set()
        for logical_id in order:
            spec = resources[logical_id]
            resource_type = spec["Type"]
            provider = provider_for(self.providers, resource_type)
            with lock:
                if not target.condition(spec.get("Condition")):
                    target.drop(logical_id)
                    continue
                live.add(logical_id)
                old = current.get(logical_id)
                if skip and logical_id in skip and old is not None:
                    self._event(stack, old, "UPDATE_COMPLETE", "Resource skipped during rollback")
                    continue
                try:
                    props = clean_json(copy.deepcopy(spec.get("Properties") or {}), target)
                except Exception as exc:
                    stub = old or Record(logical_id, resource_type, "", {})
                    action = "UPDATE" if old is not None else "CREATE"
                    self._event(stack, stub, f"{action}_FAILED", _reason(exc))
                    raise OperationFailed(logical_id, _reason(exc)) from None
            if old is None or old.cf_resource_type != resource_type:
                self._make(ctx, stack, target, provider, logical_id, resource_type, props, "CREATE")
                if old is not None:
                    cleanup.append((old, "UpdateReplacePolicy"))
                continue
            changed = changed_properties(old.properties, props)
            if not changed and not old.extra.get("dirty"):
                continue
            if changed and provider.requires_replacement(changed):
                name_property = provider.name_property or ""
                if (
                    name_property
                    and props.get(name_property)
                    and props.get(name_property) == old.properties.get(name_property)
                ):
                    reason = (
                        "CloudFormation cannot update a stack when a custom-named resource requires replacing. "
                        f"Rename {old.physical_resource_id} and update the stack again."
                    )
                    with lock:
                        self._event(stack, old, "UPDATE_FAILED", reason)
                    raise OperationFailed(logical_id, reason)
                with lock:
                    self._event(
                        stack,
                        old,
                        "UPDATE_IN_PROGRESS",
                        "Requested update requires the creation of a new physical resource; hence creating one.",
                    )
                self._make(ctx, stack, target, provider, logical_id, resource_type, props, "UPDATE")
                cleanup.append((old, "UpdateReplacePolicy"))
                continue
            with lock:
                self._event(stack, old, "UPDATE_IN_PROGRESS", "")
                try:
                    provider.update(ctx, old, props)
                except Exception as exc:
                    old.extra["dirty"] = True  # maybe half updated: the next update of it is applied, even if equal
                    self._event(stack, old, "UPDATE_FAILED", _reason(exc))
                    raise OperationFailed(logical_id, _reason(exc)) from None
                old.properties = props
                old.extra.pop("dirty", None)
            done = self._wait(ctx, stack, provider, old, "UPDATE")
            with lock:
                self._event(stack, old, "UPDATE_COMPLETE", done)
        for logical_id, record in current.items():
            if logical_id not in live and all(record is not r for r, _ in cleanup):
                cleanup.append((record, "DeletionPolicy"))
        return cleanup

    def _make(
        self,
        ctx: Context,
        stack: Stack,
        target: Resolver,
        provider: Provider,
        logical_id: str,
        resource_type: str,
        props: dict[str, Any],
        action: str,
    ) -> Record:
        assert self.sandbox is not None
        with self.sandbox.lock:
            stub = Record(logical_id, resource_type, "", props)
            if action == "CREATE":
                self._event(stack, stub, "CREATE_IN_PROGRESS", "")
            try:
                record = provider.create(ctx, logical_id, props)
            except Exception as exc:
                self._event(stack, stub, f"{action}_FAILED", _reason(exc))
                raise OperationFailed(logical_id, _reason(exc)) from None
            target.put(record)
            self._event(stack, record, f"{action}_IN_PROGRESS", "Resource creation Initiated")
        done = self._wait(ctx, stack, provider, record, action)
        with self.sandbox.lock:
            self._event(stack, record, f"{action}_COMPLETE", done)
        return record

    def _wait(self, ctx: Context, stack: Stack, provider: Provider, record: Record, action: str) -> str:
        """Until the resource is ready; in express mode not at all. The reason its _COMPLETE event gives."""
        assert self.sandbox is not None
        if ctx.express:
            return EXPRESS_REASON
        try:
            provider.wait(ctx, record)
        except Exception as exc:
            with self.sandbox.lock:
                self._event(stack, record, f"{action}_FAILED", _reason(exc))
            raise OperationFailed(record.logical_resource_id, _reason(exc)) from None
        return ""

    def _delete_records(
        self,
        ctx: Context,
        stack: Stack,
        resolver: Resolver | None,
        items: list[tuple[Record, str]],
        template: dict[str, Any] | None,
    ) -> list[str]:
        """retain_on_delete: delete in reverse dependency order, each record unless its policy (DeletionPolicy,
        UpdateReplacePolicy; "" for none) in ``template`` says Retain; returns the logical ids that failed."""
        assert self.sandbox is not None
        specs = (template or {}).get("Resources", {})
        try:
            order = creation_order(template) if template else []
        except ValidationError:
            order = []
        rank = {logical_id: i for i, logical_id in enumerate(order)}
        failed: list[str] = []
        for record, policy_key in sorted(
            items, key=lambda i: rank.get(i[0].logical_resource_id, len(rank)), reverse=True
        ):
            spec = specs.get(record.logical_resource_id) or {}
            policy = (spec.get(policy_key) if policy_key else None) or "Delete"
            with self.sandbox.lock:
                if policy in ("Retain", "RetainExceptOnCreate") and record.physical_resource_id:
                    self._event(stack, record, "DELETE_SKIPPED", "")
                    if resolver is not None:
                        resolver.drop(record.logical_resource_id)
                    continue
                self._event(stack, record, "DELETE_IN_PROGRESS", "")
                provider = provider_for(self.providers, record.cf_resource_type)
                try:
                    if record.physical_resource_id:
                        provider.delete(ctx, record)
                except Exception as exc:
                    self._event(stack, record, "DELETE_FAILED", _reason(exc))
                    failed.append(record.logical_resource_id)
                    continue
            try:
                if record.physical_resource_id and not ctx.express:
                    provider.wait_deleted(ctx, record)
            except Exception as exc:
                with self.sandbox.lock:
                    self._event(stack, record, "DELETE_FAILED", _reason(exc))
                failed.append(record.logical_resource_id)
                continue
            with self.sandbox.lock:
                self._event(stack, record, "DELETE_COMPLETE", EXPRESS_REASON if ctx.express else "")
                if resolver is not None and resolver.records().get(record.logical_resource_id) is record:
                    resolver.drop(record.logical_resource_id)
        return failed

    # -- outputs and exports --------------------------------------------------------------------------------
    def _publish_outputs(
        self,
        backend: CloudFormationBackend,
        stack: Stack,
        resolver: Resolver,
        template: dict[str, Any],
        *,
        check_imports: bool = True,
    ) -> None:
        """outputs_and_exports (call with the lock held); raises OperationFailed for a bad output or export."""
        outputs: list[dict[str, Any]] = []
        exports: dict[str, Any] = {}
        for key, spec in (template.get("Outputs") or {}).items():
            try:
                if not resolver.condition(spec.get("Condition")):
                    continue
                value = clean_json(copy.deepcopy(spec.get("Value")), resolver)
                entry: dict[str, Any] = {"OutputKey": key, "OutputValue": _output_text(value)}
                if spec.get("Description"):
                    entry["Description"] = spec["Description"]
                if spec.get("Export"):
                    export = str(clean_json(copy.deepcopy(spec["Export"]["Name"]), resolver))
                    entry["ExportName"] = export
                    exports[export] = entry["OutputValue"]
            except Exception as exc:
                raise OperationFailed(key, f"Output {key}: {_reason(exc)}", resource=False) from None
            outputs.append(entry)
        mine = {n: e for n, e in backend.exports.items() if e.exporting_stack_id == stack.stack_id}
        for name in exports:
            other = backend.exports.get(name)
            if other is not None and other.exporting_stack_id != stack.stack_id:
                owner = next((s.name for s in backend.stacks.values() if s.stack_id == other.exporting_stack_id), "?")
                raise OperationFailed(
                    name, f"Export with name {name} is already exported by stack {owner}", resource=False
                )
        if check_imports:
            for name, current in mine.items():
                users = self._importers(backend, name, stack)
                if users and (name not in exports or exports[name] != current.value):
                    verb = "updated" if name in exports else "deleted"
                    raise OperationFailed(
                        name, f"Export {name} cannot be {verb} as it is in use by {', '.join(users)}", resource=False
                    )
        for name in mine:
            if name not in exports:
                backend.exports.pop(name, None)
        for name, value in exports.items():
            backend.exports[name] = Export(stack.stack_id, name, value)
        state = state_of(stack)
        state.outputs = outputs
        state.imports = imports_of(template)

    @staticmethod
    def _importers(backend: CloudFormationBackend, export: str, exporter: Stack | None) -> list[str]:
        return sorted(
            s.name
            for s in backend.stacks.values()
            if s is not exporter and export in state_of(s).imports and s.status != "DELETE_COMPLETE"
        )

    # -- events ---------------------------------------------------------------------------------------------
    @staticmethod
    def _event(stack: Stack, record: Record, status: str, reason: str) -> None:
        """resource_events (call with the lock held)."""
        record.set_status(status, reason)
        event = Event(
            stack_id=stack.stack_id,
            stack_name=stack.name,
            logical_resource_id=record.logical_resource_id,
            physical_resource_id=record.physical_resource_id,
            resource_type=record.cf_resource_type,
            resource_status=status,
            resource_status_reason=reason or None,
            resource_properties=json.dumps(record.properties)
            if status.endswith("IN_PROGRESS") and not reason
            else None,
        )
        stack.events.append(event)
        event.sendToSns(stack.account_id, stack.region_name, stack.notification_arns)
        if status.endswith("_FAILED"):
            log.warning("stack %s: %s %s: %s", stack.name, record.logical_resource_id, status, reason)

    @staticmethod
    def _stack_status(stack: Stack, status: str, reason: str) -> None:
        stack.status = status
        stack.stack_status_reason = reason or None  # type: ignore[attr-defined]
        stack._add_stack_event(status, resource_status_reason=reason or None)
        log.info("stack %s: %s%s", stack.name, status, f" ({reason.strip()})" if reason else "")

    # -- lifecycle ------------------------------------------------------------------------------------------
    def start(self) -> None:
        return None

    def stop(self) -> None:
        """Operations still running are cut short with the process (their state is in memory only)."""
        running = [t.name for t in list(self._threads.values()) if t.is_alive()]
        if running:
            log.warning("stopping with stack operations in progress: %s", ", ".join(running))

    def status(self) -> list[PartStatus]:
        assert self.sandbox is not None
        with self.sandbox.lock:
            backend = self.sandbox.backend("cloudformation")
            stacks = list(backend.stacks.values())
            busy = sum(1 for s in stacks if s.status.endswith("_IN_PROGRESS"))
        return [
            PartStatus(
                "cloudformation", self.settings.endpoint_url, True, f"{len(stacks)} stack(s), {busy} in progress"
            )
        ]


# == helpers ================================================================================================


def _change_set_request(response: CloudFormationResponse) -> dict[str, Any]:
    template = response._get_param("TemplateBody")
    url = response._get_param("TemplateURL")
    if not template and url:
        template = get_stack_from_s3_url(url, account_id=response.current_account, partition=response.partition)
    return {
        "stack_name": response._get_param("StackName"),
        "change_set_name": response._get_param("ChangeSetName") or "",
        "change_set_type": response._get_param("ChangeSetType") or "CREATE",
        "template": template,
        "use_previous_template": bool(response._get_bool_param("UsePreviousTemplate", False)),
        "parameters": response._get_param("Parameters", []) or [],
        "capabilities": response._get_param("Capabilities", []) or [],
        "tags": response._get_param("Tags", []) or [],
        "description": response._get_param("Description"),
        "notification_arns": _notification_arns(response),
        "role_arn": response._get_param("RoleARN"),
        "deployment_config": _deployment_config(response),
        "deployment_mode": response._get_param("DeploymentMode"),
    }


_ORIGINAL_SEND: Callable[..., None] | None = None


def _check_role(backend: CloudFormationBackend, role: str | None) -> None:
    """service_roles: a ValidationError, with AWS's words, for a role that is not one of the sandbox's IAM roles or
    does not trust cloudformation.amazonaws.com (None: no role, the caller's credentials)."""
    if not role:
        return
    roles = iam_backends[backend.account_id]["global"].roles.values()
    found = next((r for r in roles if r.arn == role), None)
    if found is None or "cloudformation.amazonaws.com" not in str(found.assume_role_policy_document):
        raise ValidationError(message=f"Role {role} is invalid or cannot be assumed")


def _take_role(backend: CloudFormationBackend, stack: Stack, role: str | None) -> None:
    """service_roles: an operation on ``stack`` acts with ``role`` (which it keeps from then on), else with the role
    it has; either must be one CloudFormation can take on."""
    _check_role(backend, role or stack.role_arn)
    if role:
        stack.role_arn = role


def _send_to_live_topics(event: Event, account_id: str, region: str, sns_topic_arns: list[str]) -> None:
    """stack_notifications: an event goes to each of its stack's topics that still exists (moto's publish raised for
    one deleted since, which would have failed the stack's operation; AWS just does not deliver it)."""
    topics = sns_backends[account_id][region].topics
    if _ORIGINAL_SEND is not None:
        _ORIGINAL_SEND(event, account_id, region, [arn for arn in sns_topic_arns if arn in topics])


def _notification_arns(response: CloudFormationResponse) -> list[str] | None:
    """stack_notifications: the request's NotificationARNs; None when it names none (the stack keeps its own), []
    when it names an empty list (botocore sends ``NotificationARNs=`` for it)."""
    if "NotificationARNs" not in response.querystring and "NotificationARNs.member.1" not in response.querystring:
        return None
    given = response._get_param("NotificationARNs")
    return [str(arn) for arn in given] if isinstance(given, list) else []


def _deployment_config(response: CloudFormationResponse) -> dict[str, Any]:
    """DeploymentConfig as a dict (Mode, DisableRollback), as moto parses a structure of the request by its model;
    {} when none was given."""
    parsed = response._get_param("DeploymentConfig")
    return dict(parsed) if isinstance(parsed, dict) else {}


def _already_exists(name: str) -> CloudFormationError:
    from moto.cloudformation.exceptions import AlreadyExistsException

    return AlreadyExistsException(f"Stack [{name}] already exists")


def _policy(spec: dict[str, Any], key: str) -> str:
    """A resource's DeletionPolicy or UpdateReplacePolicy as a ResourceChange's PolicyAction word."""
    policy = str(spec.get(key) or "Delete")
    return "Retain" if policy.startswith("Retain") else "Snapshot" if policy == "Snapshot" else "Delete"


# The status reason of a resource operation CloudFormation completed in express mode (express_mode).
EXPRESS_REASON = (
    "Resource operation completed using Express Mode. It may continue becoming available in the background."
)

# what a value not known before the update resolves to while the change set is made
UNKNOWN = "\x00known-after-the-update\x00"


class _NotYetMade(Record):
    """A resource the update adds or replaces, while its change set is made: its id and attributes are unknown."""

    def get_cfn_attribute(self, name: str) -> Any:
        return UNKNOWN


def _value_details(
    details: list[dict[str, Any]], before: dict[str, Any], after: dict[str, Any]
) -> list[dict[str, Any]]:
    """The property-level ``details`` one per changed value: Path, BeforeValue, AfterValue, AttributeChangeType,
    each with its property's cause and recreation; a property whose values could not be told apart keeps its
    detail as it was."""
    out: list[dict[str, Any]] = []
    for detail in details:
        target = detail["Target"]
        name = target["Name"]
        leaves = list(_leaf_changes(before.get(name), after.get(name), (name,)))
        if not leaves:
            out.append(detail)
            continue
        for path, old, new, kind in leaves:
            value_target = {**target, "Path": "/Properties/" + "/".join(path), "AttributeChangeType": kind}
            for key, value in (("BeforeValue", old), ("AfterValue", new)):
                shown = _shown(value)
                if shown is not None:
                    value_target[key] = shown
            out.append({**detail, "Target": value_target})
    return out


_ABSENT = object()


def _drift_status(drifted: dict[str, Any]) -> str:
    return "MODIFIED" if drifted else "IN_SYNC"


def _leaf_changes(old: Any, new: Any, path: tuple[str, ...]) -> Iterator[tuple[tuple[str, ...], Any, Any, str]]:
    """Each changed value under ``path``: (path, before, after, Add | Remove | Modify); objects and lists of one
    length are followed into, other values compared as CloudFormation passes them."""
    if old is None and new is not None:
        yield path, _ABSENT, new, "Add"
    elif new is None and old is not None:
        yield path, old, _ABSENT, "Remove"
    elif isinstance(old, dict) and isinstance(new, dict):
        for key in dict.fromkeys([*old, *new]):
            yield from _leaf_changes(old.get(key), new.get(key), (*path, str(key)))
    elif isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        for index, (a, b) in enumerate(zip(old, new, strict=True)):
            yield from _leaf_changes(a, b, (*path, str(index)))
    elif normalized(old) != normalized(new):
        yield path, old, new, "Modify"


def _shown(value: Any) -> str | None:
    """A value as a change set shows it (objects as JSON); None: absent or not known before the update."""
    if value is _ABSENT:
        return None
    plain = normalized(value)  # numbers and booleans as strings, as CloudFormation passes them
    text = plain if isinstance(plain, str) else json.dumps(plain, sort_keys=True, default=str)
    return None if UNKNOWN in text else text


def _detail(provider: Provider, prop: str, evaluation: str, source: str, cause: str | None) -> dict[str, Any]:
    recreation = "Always" if provider.requires_replacement({prop}) else "Never"
    if evaluation == "Dynamic" and recreation == "Always":
        recreation = "Conditionally"
    detail: dict[str, Any] = {
        "Target": {"Attribute": "Properties", "Name": prop, "RequiresRecreation": recreation},
        "Evaluation": evaluation,
        "ChangeSource": source,
    }
    if cause:
        detail["CausingEntity"] = cause
    return detail


def _reason(exc: BaseException) -> str:
    """A status reason as CloudFormation words it."""
    if isinstance(exc, ResourceError):
        return str(exc)
    if isinstance(exc, UnformattedGetAttTemplateException):
        return "Template error: a resource does not support the attribute asked for in Fn::GetAtt"
    message = getattr(exc, "message", None) or str(exc) or type(exc).__name__
    code = getattr(exc, "error_type", None) or getattr(exc, "code", None)
    if not isinstance(code, str):  # moto's RESTError keeps the HTTP status in ``code``
        code = type(exc).__name__
    return f'Resource handler returned message: "{message}" (HandlerErrorCode: {code})'


def _output_text(value: Any) -> str:
    if isinstance(value, list):
        return ",".join(str(v) for v in value)
    return str(value)


def _resource_row(stack: Stack, record: Record, time_key: str, *, summary: bool = False) -> dict[str, Any]:
    row: dict[str, Any] = {
        "LogicalResourceId": record.logical_resource_id,
        "PhysicalResourceId": record.physical_resource_id,
        "ResourceType": record.cf_resource_type,
        time_key: record.timestamp,
        "ResourceStatus": record.status,
        "DriftInformation": {"StackResourceDriftStatus": "NOT_CHECKED"},
    }
    if record.status_reason:
        row["ResourceStatusReason"] = record.status_reason
    if not summary:
        row.update(StackName=stack.name, StackId=stack.stack_id)
    return row


def _loopback_counts_as_tls() -> None:
    """loopback_counts_as_tls: moto ignores policy conditions, so skip Deny statements that only test the
    transport (the sandbox is plain HTTP on 127.0.0.1)."""
    from moto.iam.access_control import IAMPolicy, PermissionResult
    from moto.s3.models import FakeBucket

    if getattr(FakeBucket.get_permission, "_sandbox", False):
        return

    def get_permission(bucket: FakeBucket, action: str, resource: str) -> Any:
        if bucket.policy is None:
            return PermissionResult.NEUTRAL
        document = json.loads(bucket.policy.decode() if isinstance(bucket.policy, bytes) else bucket.policy)
        statements = document.get("Statement", [])
        statements = [statements] if isinstance(statements, dict) else statements
        kept = [s for s in statements if not _transport_only_deny(s)]
        return IAMPolicy(json.dumps({**document, "Statement": kept})).is_action_permitted(action, resource)

    get_permission._sandbox = True  # type: ignore[attr-defined]
    FakeBucket.get_permission = get_permission  # type: ignore[method-assign,assignment]


def _transport_only_deny(statement: dict[str, Any]) -> bool:
    if statement.get("Effect") != "Deny" or not statement.get("Condition"):
        return False
    keys = {key.lower() for operator in statement["Condition"].values() for key in operator}
    return keys <= TRANSPORT_CONDITION_KEYS
