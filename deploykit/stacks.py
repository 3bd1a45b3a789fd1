"""CloudFormation stacks through change sets: recover, show the changes, guard the data, execute, follow.

:class:`StackDeployer` deploys one synthesized template to one stack:

1. **pre-flight**: a stack busy with another operation (``*_IN_PROGRESS``) is waited for, not fought; a
   failed first create (``ROLLBACK_COMPLETE``/``ROLLBACK_FAILED``) is deleted and created again; an
   ``UPDATE_ROLLBACK_FAILED`` stack gets ``ContinueUpdateRollback`` (to ``UPDATE_ROLLBACK_COMPLETE``); a
   stack that is only a change set (``REVIEW_IN_PROGRESS``), a deleted one or none is created;
2. **change set** (named ``deploykit-<UTC time>``): an empty one ("didn't contain changes", "No updates are
   to be performed", at creation or as its FAILED reason) is deleted and the stack reported ``unchanged``;
   otherwise its changes are printed as a table (read with IncludePropertyValues: under each modified resource,
   each changed value before and after, and why; a removed or replaced resource the deployed template's
   DeletionPolicy or UpdateReplacePolicy keeps is said kept, out of the stack), and a replacement or removal of a
   data-holding resource (tables, buckets, user pools...) is refused unless ``allow_replace``: the change set is
   deleted and nothing changes; so is, with ``guard_access`` (a protected environment), a change of IAM, network
   rules or resource policies (marked 🔐 in the table), which the CDK CLI would ask about; and so is one the team's
   check plugins refuse (``review``: deploykit_review_stack_changes);
3. **execute and follow**: the stack's events are printed as they arrive (only the ones after the execute,
   oldest first, each once, with the elapsed time) until the stack reaches a terminal status; success reads
   the outputs, anything else raises :class:`~deploykit.errors.StepFailed` listing the failing resources
   with their reasons and the command to run next.

With ``express`` (an environment's ``stack_mode = "express"``) an update's change set asks for CloudFormation's
express mode (``DeploymentConfig``: done once each resource's configuration is applied, not once it is ready; its
rollback on failure kept on). A first create, and a template with custom resources (which express mode does not
run), are applied in the standard mode: :func:`express_blocker` says why. What express mode does not wait for, the
caller does (:class:`deploykit.stack_chain.DeployStack` waits for the app's service).

Each wait polls every ``poll`` seconds on the injected clock (a change set being made: every
``min(poll, 1)`` seconds), and has its own deadline of ``timeout`` seconds. Throttling is retried with
exponential backoff on every call; other transient errors (5xx, a dropped connection) only on calls that are
safe to repeat (reads and deletes). Nothing here makes a client.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import uuid
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from types import EllipsisType
from typing import Any, Literal

import botocore.exceptions
from botocore.exceptions import ClientError

from deploykit.aws import AwsFactory, is_throttling, role_refused
from deploykit.clock import Clock
from deploykit.errors import StepFailed, UsageError
from deploykit.output import tabulate
from deploykit.plugins import BLOCK_ENV, refusal_text

# Resource types whose replacement or removal loses (or orphans) data: the platform's, and those a stack of the
# team's own is likely to hold (messages in flight, a key that decrypts data, secrets, images, a cache, a search
# index, a volume).
DATA_RESOURCE_TYPES = frozenset(
    {
        "AWS::DynamoDB::Table",
        "AWS::DynamoDB::GlobalTable",
        "AWS::S3::Bucket",
        "AWS::Cognito::UserPool",
        "AWS::RDS::DBInstance",
        "AWS::RDS::DBCluster",
        "AWS::EFS::FileSystem",
        "AWS::SQS::Queue",
        "AWS::Kinesis::Stream",
        "AWS::KMS::Key",
        "AWS::SecretsManager::Secret",
        "AWS::ECR::Repository",
        "AWS::ElastiCache::ReplicationGroup",
        "AWS::ElastiCache::CacheCluster",
        "AWS::OpenSearchService::Domain",
        "AWS::Elasticsearch::Domain",
        "AWS::DocDB::DBCluster",
        "AWS::Neptune::DBCluster",
        "AWS::Redshift::Cluster",
        "AWS::EC2::Volume",
        "AWS::FSx::FileSystem",
        "AWS::Backup::BackupVault",
        "AWS::Timestream::Table",
        # a nested stack removed (or replaced) takes what it holds with it; what changes inside one that stays is
        # judged by its own rows (IncludeNestedStacks)
        "AWS::CloudFormation::Stack",
    }
)
# Resources whose changes grant or take away access: IAM, network rules, resource policies. The CDK CLI asks before it
# deploys such changes (--require-approval broadening); deploykit marks them in every change set and, in a protected
# environment, executes a change set with one only when approved (approve_access).
ACCESS_RESOURCE_TYPES = frozenset(
    {
        "AWS::IAM::Role",
        "AWS::IAM::Policy",
        "AWS::IAM::ManagedPolicy",
        "AWS::IAM::User",
        "AWS::IAM::Group",
        "AWS::IAM::UserToGroupAddition",
        "AWS::IAM::InstanceProfile",
        "AWS::IAM::RolePolicy",
        "AWS::IAM::UserPolicy",
        "AWS::IAM::GroupPolicy",
        "AWS::IAM::AccessKey",
        "AWS::EC2::SecurityGroup",
        "AWS::EC2::SecurityGroupIngress",
        "AWS::EC2::SecurityGroupEgress",
        "AWS::Lambda::Permission",
        "AWS::S3::BucketPolicy",
        "AWS::SQS::QueuePolicy",
        "AWS::SNS::TopicPolicy",
        "AWS::KMS::Key",
        "AWS::SecretsManager::ResourcePolicy",
        "AWS::ApiGateway::Authorizer",
        "AWS::Cognito::UserPoolClient",
        "AWS::Lambda::Url",  # AuthType NONE opens a function to anyone
        "AWS::ApiGateway::Method",  # its AuthorizationType: NONE takes a route's login away
    }
)
DEFAULT_CAPABILITIES = ("CAPABILITY_IAM", "CAPABILITY_NAMED_IAM", "CAPABILITY_AUTO_EXPAND")
# How CloudFormation says a change set is empty: as the FAILED change set's StatusReason ("The submitted
# information didn't contain changes. Submit different information to create a change set."), or as the
# error of CreateChangeSet itself ("No updates are to be performed.", which moto answers).
EMPTY_CHANGE_SET_MARKERS = ("didn't contain changes", "no updates are to be performed")

TRANSIENT_CODES = frozenset(
    {
        "InternalFailure",
        "InternalError",
        "InternalServiceError",
        "ServiceUnavailable",
        "ServiceUnavailableException",
        "RequestTimeout",
        "RequestTimeoutException",
    }
)
# Calls that may be repeated after an error whose effect is unknown (5xx, a dropped connection).
IDEMPOTENT_CALLS = frozenset(
    {
        "describe_stacks",
        "describe_stack_events",
        "describe_change_set",
        "list_change_sets",
        "delete_change_set",
        "delete_stack",
        "update_termination_protection",
    }
)

SUCCESS_AFTER_EXECUTE = frozenset({"CREATE_COMPLETE", "UPDATE_COMPLETE", "IMPORT_COMPLETE"})
# What a change set asks for to be applied in CloudFormation's express mode, its rollback on failure asked for
# (the API reference gives false as DisableRollback's default; some guides say express mode turns it off).
EXPRESS_CONFIG = {"Mode": "EXPRESS", "DisableRollback": False}
# Resource types CloudFormation's express mode does not run: their templates are applied in the standard mode.
NOT_EXPRESS_TYPES = ("AWS::CloudFormation::CustomResource", "Custom::")
FAILED_FIRST_CREATE = frozenset({"ROLLBACK_COMPLETE", "ROLLBACK_FAILED"})
# What CloudFormation answers an update (or an UPDATE change set) of a stack in a status that takes none
CANNOT_UPDATE = re.compile(r"is in (?P<status>[A-Z_]+) state and can ?not be updated")
STACK_TYPE = "AWS::CloudFormation::Stack"
NESTED_DEPTH = 5  # nested stacks' change sets read this deep (CloudFormation allows more; a CDK app rarely nests two)


def _nested_request(template_body: str) -> dict[str, Any]:
    """``IncludeNestedStacks`` for a template holding a nested stack: CloudFormation then makes each nested stack's
    change set too (:meth:`StackDeployer._all_changes` reads them), where the parent's showed one row for all it
    holds, and a table removed or a role widened inside it went past the guards."""
    return {"IncludeNestedStacks": True} if STACK_TYPE in resource_types(template_body).values() else {}


EVENT_PAGES = 5  # describe_stack_events pages read per poll at most (100 events each)
QUIET_POLLS = 3  # polls after which an unchanged terminal status counts even without any sign of activity

Action = Literal["created", "updated", "unchanged", "deleted", "absent", "recreated"]
Say = Callable[[str], None]


# What a detail's value is when CloudFormation cannot know it before the change set runs (a resource it references
# is replaced, an attribute of one changes), or did not say it.
UNKNOWN_VALUE = "(known after the deploy)"
# The policies that keep something of a resource CloudFormation removes (DeletionPolicy) or replaces (the old one:
# UpdateReplacePolicy), as the deployed template sets them: the resource stays, out of the stack; or a snapshot of it.
KEEPING_POLICIES = frozenset({"Retain", "RetainExceptOnCreate", "Snapshot"})
LAMBDA_FUNCTION, LAMBDA_VERSION = "AWS::Lambda::Function", "AWS::Lambda::Version"
LAMBDA_ALIAS = "AWS::Lambda::Alias"


@dataclass(frozen=True)
class PropertyChange:
    """One changed property of a Modify change (DescribeChangeSet's ``Details``, asked with IncludePropertyValues)."""

    name: str  # the property (top level): MemorySize, Environment
    path: str = ""  # where in it, when CloudFormation says: /Properties/Environment/Variables/TABLE
    attribute: str = "Properties"  # Properties | Metadata | Tags | DeletionPolicy | UpdatePolicy ...
    before: str | None = None  # the values, when CloudFormation gave them (large ones truncated by it)
    after: str | None = None
    change_type: str = ""  # Add | Remove | Modify ("" when not said)
    recreation: str = ""  # Never | Conditionally | Always
    source: str = ""  # DirectModification | ParameterReference | ResourceReference | ResourceAttribute | Automatic
    causing: str = ""  # the parameter or resource (ResourceName.Attribute) that causes it
    # a drift-aware change set's (--revert-drift): the property was changed outside CloudFormation, from ``deployed``
    # (what the stack's last deploy set) to ``before`` (what it is now); None: not drifted, or not such a change set
    deployed: str | None = None
    drifted: bool = False

    @property
    def synced(self) -> bool:
        """A drifted property the template now gives the value it has: left as it is, only CloudFormation's record
        of it changes (AttributeChangeType SyncWithActual)."""
        return self.change_type == "SyncWithActual"

    @property
    def where(self) -> str:
        """The property as a reader names it: ``Environment.Variables.TABLE``, ``Tags[0].Value``, ``MemorySize``."""
        parts = [p for p in self.path.split("/") if p]
        if parts and parts[0] == self.attribute:
            parts = parts[1:]
        if not parts:
            return self.name or self.attribute
        shown = parts[0]
        for part in parts[1:]:
            shown += f"[{part}]" if part.isdigit() else f".{part}"
        return shown

    @property
    def replaces(self) -> bool:
        """Whether this change (possibly) makes CloudFormation replace the resource."""
        return self.recreation in ("Always", "Conditionally")

    def to_json(self) -> dict[str, Any]:
        return {
            "property": self.where,
            "before": self.before,
            "after": self.after,
            "change": self.change_type or None,
            "recreation": self.recreation or None,
            "source": self.source or None,
            "causing": self.causing or None,
            "drift": {"deployed": self.deployed, "actual": self.before} if self.drifted else None,
        }


@dataclass(frozen=True)
class Change:
    """One resource change of a change set."""

    logical_id: str
    resource_type: str
    action: str  # Add | Modify | Remove | Import | Dynamic
    replacement: str = ""  # True | False | Conditional ("" for Add and Remove)
    physical_id: str = ""
    scope: tuple[str, ...] = ()
    details: tuple[PropertyChange, ...] = ()  # a Modify's changed properties, when CloudFormation said them
    # what CloudFormation says becomes of the resource: Delete, Retain, Snapshot, ReplaceAndRetain... ("" unsaid)
    policy_action: str = ""
    # what keeps the resource it destroys: "DeletionPolicy Retain" (a Remove), "UpdateReplacePolicy Snapshot" (the
    # old one of a replacement); "" when it is deleted (:func:`with_kept`)
    kept_by: str = ""
    # a function's version removed with its function (that function's logical id): Lambda deletes a function's
    # versions with it, whatever their DeletionPolicy says (:func:`with_kept`)
    deleted_with: str = ""
    # a drift-aware change set's ResourceDriftStatus: MODIFIED, DELETED (changed outside CloudFormation), IN_SYNC,
    # NOT_CHECKED, UNSUPPORTED, UNKNOWN; "": not said (not such a change set)
    drift: str = ""

    @property
    def drifted(self) -> bool:
        """Whether a drift-aware change set found it changed outside CloudFormation (modified, or deleted)."""
        return self.drift in ("MODIFIED", "DELETED")

    @property
    def reverts(self) -> tuple[PropertyChange, ...]:
        """Its drifted properties that the change set puts back to the template's value (not an alias the fast path
        moved: :meth:`alias_moved`)."""
        return tuple(d for d in self.details if d.drifted and not d.synced and not self.alias_moved(d))

    def alias_moved(self, detail: PropertyChange) -> bool:
        """Whether ``detail`` is the drift of a function's alias to another version: the Lambda fast path (or a
        rollback) moves the alias without CloudFormation, and a stack's deploy gives it the code the alias serves (its
        code parameter), so the version the stack puts the alias on runs that code: nothing goes back."""
        return _alias_move(self.resource_type, detail.name, detail.drifted)

    @property
    def holds_data(self) -> bool:
        return self.resource_type in DATA_RESOURCE_TYPES

    @property
    def changes_access(self) -> bool:
        """Whether it grants or takes away access: an IAM, network-rule or resource-policy resource changes."""
        return self.resource_type in ACCESS_RESOURCE_TYPES

    def to_json(self) -> dict[str, Any]:
        """The change as inv diff --json lists it, and the team's plugins get it to review."""
        return {
            "logical_id": self.logical_id,
            "type": self.resource_type,
            "action": self.action,
            "replacement": self.replacement,
            "access": self.changes_access,
            "details": [d.to_json() for d in self.details],
            "kept_by": self.kept_by or None,
            "deleted_with": self.deleted_with or None,
            "drift": self.drift or None,
        }

    @property
    def kept(self) -> str:
        """What becomes of the resource it destroys when a policy keeps it, as a reader is told; "" when deleted."""
        if self.deleted_with:
            return (
                f"deleted with its function {self.deleted_with}, which this change removes: its DeletionPolicy "
                "Retain keeps a version only while its function stays"
            )
        if not self.kept_by:
            return ""
        which = "it" if self.action == "Remove" else "the old one"
        if self.kept_by.endswith("Snapshot"):
            return f"{which} is deleted after a snapshot ({self.kept_by})"
        return f"{which} is kept, out of the stack, not deleted ({self.kept_by})"

    @property
    def destroys(self) -> bool:
        """Whether the resource as it is now goes away: removed, or (possibly) replaced by a new one."""
        return self.action == "Remove" or (self.action == "Modify" and self.replacement in ("True", "Conditional"))

    def loses_data(self, data_types: Collection[str] = DATA_RESOURCE_TYPES) -> bool:
        """Whether it takes away a resource that holds data (of ``data_types``): one removed or (possibly) replaced.
        Not a nested stack's update that CloudFormation calls a possible replacement (Conditional): what changes
        inside it is judged by its own rows (IncludeNestedStacks), and only its removal (or sure replacement) takes
        what it holds."""
        nested_update = (
            self.resource_type == STACK_TYPE and self.action == "Modify" and self.replacement == "Conditional"
        )
        return self.resource_type in data_types and self.destroys and not nested_update


@dataclass(frozen=True)
class StackResult:
    name: str
    action: Action
    seconds: float
    outputs: dict[str, str] = field(default_factory=dict)
    changes: tuple[Change, ...] = ()
    # an update's: each parameter's value before it (what the stack ran with), as DescribeStacks gave it
    previous_parameters: dict[str, str] = field(default_factory=dict)
    updated: str = ""  # when CloudFormation last changed the stack, after the deploy (:func:`updated_of`)
    express: bool = False  # applied in CloudFormation's express mode: its resources may still be getting ready
    protection: str = ""  # its termination protection turned "on" or "off" after the deploy ("": as it was)
    # the SNS topics the deploy made it send its events to (:func:`topic_names`: "SNS topics ops, audit", "no SNS
    # topic"); "": as they were
    notifications: str = ""
    # a drift-aware update's (--revert-drift): what it found changed outside CloudFormation (:func:`drift_summary`);
    # "": not such an update
    drift: str = ""


# -- pure logic ----------------------------------------------------------------------------------


def topics_of(stack: Mapping[str, Any]) -> tuple[str, ...]:
    """The SNS topics a stack (as DescribeStacks gives it) sends its events to."""
    return tuple(str(arn) for arn in stack.get("NotificationARNs") or ())


def topic_names(arns: Sequence[str]) -> str:
    """SNS topic ARNs by their names, as a line says them: ``SNS topic ops``, ``SNS topics ops, audit``,
    ``no SNS topic``."""
    names = [arn.rpartition(":")[2] for arn in arns]
    if not names:
        return "no SNS topic"
    return f"SNS topic{'s' if len(names) > 1 else ''} {', '.join(names)}"


def parse_changes(raw: Iterable[Mapping[str, Any]]) -> list[Change]:
    """DescribeChangeSet's ``Changes`` as :class:`Change` objects (entries that are not resources skipped)."""
    changes = []
    for entry in raw:
        rc = entry.get("ResourceChange")
        if entry.get("Type", "Resource") != "Resource" or not isinstance(rc, Mapping):
            continue
        changes.append(
            Change(
                logical_id=str(rc.get("LogicalResourceId", "?")),
                resource_type=str(rc.get("ResourceType", "?")),
                action=str(rc.get("Action", "?")),
                replacement=str(rc.get("Replacement") or ""),
                physical_id=str(rc.get("PhysicalResourceId") or ""),
                scope=tuple(str(s) for s in rc.get("Scope") or ()),
                details=_merged(_detail(d) for d in rc.get("Details") or () if isinstance(d, Mapping)),
                policy_action=str(rc.get("PolicyAction") or ""),
                drift=str(rc.get("ResourceDriftStatus") or ""),
            )
        )
    return changes


def with_kept(changes: Iterable[Change], template: Mapping[str, Any] | None) -> list[Change]:
    """``changes``, each that destroys a resource with what keeps it (:attr:`Change.kept_by`): CloudFormation goes by
    the DeletionPolicy of a resource it removes and the UpdateReplacePolicy of one it replaces, as last deployed (the
    CDK sets Retain on a function's versions and, by default, on tables, buckets and user pools). Its change set says
    what it will do (PolicyAction); where it does not (moto), the policy is read from the deployed ``template``.
    A function's version removed with its function (:func:`_removed_with`) is deleted whatever its policy."""
    changes = list(changes)
    resources = (template or {}).get("Resources")
    resources = resources if isinstance(resources, Mapping) else {}
    removed = {c.logical_id for c in changes if c.action == "Remove" and c.resource_type == LAMBDA_FUNCTION}
    found = []
    for change in changes:
        attribute = "DeletionPolicy" if change.action == "Remove" else "UpdateReplacePolicy"
        policy: object = change.policy_action.removeprefix("Replace").removeprefix("And")
        resource = resources.get(change.logical_id)
        if not policy and isinstance(resource, Mapping):
            policy = resource.get(attribute)
        if function := _removed_with(change, resource, removed):
            change = replace(change, deleted_with=function)
        elif change.destroys and isinstance(policy, str) and policy in KEEPING_POLICIES:
            change = replace(change, kept_by=f"{attribute} {policy}")
        found.append(change)
    return found


def _removed_with(change: Change, resource: object, removed: Collection[str]) -> str:
    """The logical id of the function of ``removed`` (those the same change set removes) that ``change``, the removal
    of a version (``resource``: as the deployed template has it), belongs to; "" otherwise."""
    if change.action != "Remove" or change.resource_type != LAMBDA_VERSION or not isinstance(resource, Mapping):
        return ""
    properties = resource.get("Properties")
    named = properties.get("FunctionName") if isinstance(properties, Mapping) else None
    function = named.get("Ref") if isinstance(named, Mapping) else None
    return function if isinstance(function, str) and function in removed else ""


def _detail(raw: Mapping[str, Any]) -> PropertyChange:
    target = raw.get("Target") if isinstance(raw.get("Target"), Mapping) else {}
    assert isinstance(target, Mapping)

    def text(mapping: Mapping[str, Any], key: str) -> str:
        return str(mapping.get(key) or "")

    drift = target.get("Drift") if isinstance(target.get("Drift"), Mapping) else None
    return PropertyChange(
        name=text(target, "Name"),
        path=text(target, "Path"),
        attribute=text(target, "Attribute") or "Properties",
        before=None if target.get("BeforeValue") is None else str(target["BeforeValue"]),
        after=None if target.get("AfterValue") is None else str(target["AfterValue"]),
        change_type=text(target, "AttributeChangeType"),
        recreation=text(target, "RequiresRecreation"),
        source=text(raw, "ChangeSource"),
        causing=text(raw, "CausingEntity"),
        deployed=None if drift is None or drift.get("PreviousValue") is None else str(drift["PreviousValue"]),
        drifted=drift is not None,
    )


def _merged(details: Iterable[PropertyChange]) -> tuple[PropertyChange, ...]:
    """The details, each property path once: CloudFormation lists a property once per cause (the template changed it
    directly, and a parameter it references changed too); the one with values, else the first, is kept."""
    kept: dict[tuple[str, str, str], PropertyChange] = {}
    for detail in details:
        key = (detail.attribute, detail.name, detail.path)
        have = kept.get(key)
        if have is None or (have.before is None and have.after is None and (detail.before or detail.after)):
            kept[key] = detail
    return tuple(kept.values())


def dangerous_changes(changes: Iterable[Change], data_types: Iterable[str] = DATA_RESOURCE_TYPES) -> list[Change]:
    """Changes that replace (surely or possibly) or remove a data-holding resource."""
    types = frozenset(data_types)
    return [c for c in changes if c.loses_data(types)]


def is_no_changes_message(text: str | None) -> bool:
    lowered = (text or "").lower()
    return any(marker in lowered for marker in EMPTY_CHANGE_SET_MARKERS)


def is_empty_change_set(status: str | None, reason: str | None) -> bool:
    """A FAILED change set whose reason says there was nothing to change."""
    return status == "FAILED" and is_no_changes_message(reason)


@dataclass(frozen=True)
class NoPreview:
    """Why no change set can show what a deploy of a stack would change now: CloudFormation takes no UPDATE change
    set in its status (``reason`` says it, with what a deploy does first), or none for a template that imports an
    ``export`` no stack makes yet (CloudFormation checks the imports as it makes a change set)."""

    status: str
    reason: str
    export: str = ""


NO_EXPORT = re.compile(r"No export named (\S+?)\.? found")  # CloudFormation's reason for a change set that failed so


def _first_exporter(reason: str, command: Callable[[str, str], str], rerun: str | None = None) -> str:
    """The next step for a change set CloudFormation failed as it imports an export no stack makes (``reason``): the
    stack that exports it first (CDK names an export after its stack: ``Stack:ExportsOutput...``); "" for another
    reason. In a rollback (``rerun``: ``inv rollback ...``), the exporting stack must be rolled back first: deployed
    from this checkout, it exports what this checkout's template does, which may not be that export."""
    found = NO_EXPORT.search(reason)
    if not found:
        return ""
    stack = found[1].split(":")[0] if ":" in found[1] else ""
    if rerun and rerun.startswith("inv rollback"):
        which = f" ({stack}, if it is the stack that exports it)" if stack else ""
        return (
            f"the commit rolled back to imports {found[1]}, which no live stack exports now: roll back the stack that "
            f"exported it then{which} first, to the same commit (the same inv rollback with --component stack:ROLE of "
            f"that stack), then rerun: {rerun}; nothing was changed"
        )
    first = f" ({command('deploy.stack', stack)}, if it is the stack that exports it)" if stack else ""
    return (
        f"deploy the stack that exports {found[1]} first{first}, or let inv deploy.auto deploy both (it deploys a "
        "stack whose template now exports what a changed stack imports first); nothing was changed"
    )


def no_export(status: str, reason: str) -> NoPreview | None:
    """:class:`NoPreview` for a change set that failed as its template imports an export no stack makes (``reason``:
    CloudFormation's); None for any other reason."""
    found = NO_EXPORT.search(reason)
    return NoPreview(status, reason, export=found[1]) if found else None


def no_preview(status: str) -> NoPreview | None:
    """:class:`NoPreview` for a stack in ``status`` that CloudFormation makes no change set for (busy, its rollback
    failed, half deleted); None when one can be made (or the stack is created: :meth:`StackDeployer.preview`)."""
    if status.endswith("_IN_PROGRESS") and status != "REVIEW_IN_PROGRESS":
        return NoPreview(
            status,
            "CloudFormation makes no change set while the stack is busy; a deploy waits for it, then makes one "
            "(run inv diff again once it is done)",
        )
    if status == "UPDATE_ROLLBACK_FAILED":
        return NoPreview(
            status,
            "CloudFormation makes no change set until the failed rollback is continued; a deploy continues it first, "
            "then makes one",
        )
    if status == "DELETE_FAILED":
        return NoPreview(status, "CloudFormation updates no half-deleted stack; a deploy refuses it")
    return None


def is_no_changes_error(exc: BaseException) -> bool:
    """CreateChangeSet refused because nothing would change (how moto answers an empty change set)."""
    return (
        isinstance(exc, ClientError)
        and exc.response.get("Error", {}).get("Code") == "ValidationError"
        and is_no_changes_message(exc.response.get("Error", {}).get("Message"))
    )


def error_code(exc: BaseException) -> str:
    return str(exc.response.get("Error", {}).get("Code", "")) if isinstance(exc, ClientError) else ""


# what S3 answers for a key that is not there (GetObject: NoSuchKey; HeadObject, which has no body: 404)
NOT_THERE = frozenset({"NoSuchKey", "404", "NotFound"})


def is_not_there(exc: BaseException) -> bool:
    """Whether ``exc`` is S3's answer for a key that is not there."""
    return error_code(exc) in NOT_THERE


def is_transient(exc: BaseException) -> bool:
    """Throttling, a 5xx, or a connection that dropped mid-call (not one that never connected)."""
    if isinstance(exc, ClientError):
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
        return is_throttling(exc) or error_code(exc) in TRANSIENT_CODES or int(status) >= 500
    return isinstance(exc, botocore.exceptions.ConnectionClosedError | botocore.exceptions.ReadTimeoutError)


def protection_off(stack: str) -> str:
    """The command that turns ``stack``'s termination protection off by hand."""
    return f"aws cloudformation update-termination-protection --no-enable-termination-protection --stack-name {stack}"


def is_missing_stack(exc: BaseException) -> bool:
    return (
        isinstance(exc, ClientError)
        and error_code(exc) == "ValidationError"
        and "does not exist" in str(exc.response.get("Error", {}).get("Message", ""))
    )


TASK_DEFINITION = "AWS::ECS::TaskDefinition"
# CloudFormation operations that change no stack; any other call may (ExecuteChangeSet, DeleteStack, ...)
READ_OPERATIONS = ("Describe", "List", "Get", "Validate", "Estimate")


class StackOutputs:
    """The outputs of stacks as one command reads them: each stack is described once, then answered from memory.

    A deploy needs the artifacts bucket for its lock, its live record, each Lambda step and its history record,
    and every endpoint again for its smoke: one DescribeStacks each, 100-300 ms on AWS. What is remembered stays
    true for the command: a stack that is changing (``*_IN_PROGRESS``) is not remembered, and any call through the
    same client that may change a stack (anything but Describe*, List*, Get*...) forgets everything, as well as any
    answer read while it was in flight. The region's exports (:meth:`exports`) are remembered the same way. One per
    AWS factory (:meth:`of`); safe from any thread.
    """

    def __init__(self, cfn: Any) -> None:
        self._cfn = cfn
        self._described: dict[str, dict[str, Any]] = {}  # stack → DescribeStacks' answer ({}: no such stack)
        self._exports: dict[str, str] | None = None  # ListExports' answer, every page (name → value); None: not read
        self._changes = 0  # calls that may change a stack, counted when sent and when answered
        self._lock = threading.Lock()
        self._listing = threading.Lock()  # one ListExports at a time: a second caller waits for the first's answer
        for event in ("before-call", "after-call", "after-call-error"):
            cfn.meta.events.register(f"{event}.cloudformation", self._seen)

    @classmethod
    def of(cls, aws: AwsFactory) -> StackOutputs:
        """The command's memory of stack outputs: one per factory."""
        return aws.shared(_stack_outputs)

    def __call__(self, stack: str) -> dict[str, str] | None:
        """The outputs of ``stack``; None when it does not exist (or was deleted)."""
        found = self.described(stack)
        if found is None or found.get("StackStatus") in ("DELETE_COMPLETE", "REVIEW_IN_PROGRESS"):
            return None  # REVIEW_IN_PROGRESS: made for a change set never executed, no resource of its own
        return dict(outputs_of(found))

    def described(self, stack: str) -> dict[str, Any] | None:
        """DescribeStacks' answer for ``stack`` (its status, times, outputs...), remembered as its outputs are; None
        when it does not exist."""
        with self._lock:
            if stack in self._described:
                return dict(self._described[stack]) or None
            changes = self._changes
        try:
            found: dict[str, Any] = dict((self._cfn.describe_stacks(StackName=stack).get("Stacks") or [{}])[0])
        except ClientError as exc:
            if not is_missing_stack(exc):
                raise
            found = {}  # no such stack
        with self._lock:
            if changes == self._changes and not str(found.get("StackStatus", "")).endswith("_IN_PROGRESS"):
                self._described[stack] = found
        return dict(found) or None

    def parameters(self, stack: str) -> dict[str, str]:
        """The parameter values ``stack`` runs with, as given (:func:`stack_parameters`), from the answer remembered."""
        found = self.described(stack)
        if found is None or found.get("StackStatus") in ("REVIEW_IN_PROGRESS", "DELETE_COMPLETE"):
            return {}
        return given_parameters(found)

    def updated(self, stack: str) -> str:
        """When CloudFormation last changed ``stack`` (:func:`updated_of`) as the read of its outputs found it (read
        now if it was not); "" when it does not exist, or is changing."""
        found = self.described(stack)
        status = str((found or {}).get("StackStatus", ""))
        if found is None or status == "DELETE_COMPLETE" or status.endswith("_IN_PROGRESS"):
            return ""
        return updated_of(found)

    def exports(self, needed: Iterable[str] = ()) -> dict[str, str]:
        """What the stacks of the region export (``Fn::ImportValue``'s names and values: ListExports, every page),
        read once and remembered as outputs are. Read again when what is remembered lacks one of ``needed``: a stack
        may have exported it since (one deployed meanwhile, by this command or another), and a missing export is a
        refusal. A failed read raises (AccessDenied...), and is not remembered."""
        with self._listing:
            with self._lock:
                remembered, changes = self._exports, self._changes
            if remembered is not None and all(name in remembered for name in needed):
                return dict(remembered)
            found = {
                str(export["Name"]): str(export["Value"])
                for page in self._cfn.get_paginator("list_exports").paginate()
                for export in page.get("Exports") or []
            }
            with self._lock:
                if changes == self._changes:
                    self._exports = found
            return dict(found)

    def _seen(self, event_name: str, **_: Any) -> None:
        """botocore's before-call, after-call and after-call-error of every call (``<event>.cloudformation.<Op>``)."""
        if not event_name.rsplit(".", 1)[-1].startswith(READ_OPERATIONS):
            with self._lock:
                self._changes += 1
                self._described.clear()
                self._exports = None


def _stack_outputs(aws: AwsFactory) -> StackOutputs:
    return StackOutputs(aws.client("cloudformation"))


REVERT_DRIFT = "REVERT_DRIFT"  # CreateChangeSet's DeploymentMode of a drift-aware change set
# what a drift-aware change set that found nothing to change says (a deploy's step, a preview)
NO_DRIFT = "no drift (nothing changed outside CloudFormation that it reads)"


# a drift-aware change set CloudFormation refuses for what the stack holds (its message says why): a plain one
_WITHOUT_DRIFT = (
    "CloudFormation makes no drift-aware change set for it, as its message says: deploy it without --revert-drift "
    "({again}), and put the settings back by hand"
)


_NO_DRIFT_PREVIEW = "CloudFormation makes no drift-aware change set for it (inv diff without --drift previews it)"


def _about_drift(message: str) -> bool:
    """Whether CloudFormation's refusal of a change set is about its drift-aware mode."""
    lowered = message.lower()
    return "drift" in lowered or "deploymentmode" in lowered or "deployment mode" in lowered


def alias_moves_only(change: Mapping[str, Any]) -> bool:
    """Whether a change, as :meth:`Change.to_json` gives it, is only the drift of an alias the fast path moved
    (:meth:`Change.alias_moved`)."""
    details = change.get("details") or ()
    return bool(details) and all(
        _alias_move(change.get("type"), d.get("property"), bool(d.get("drift"))) for d in details
    )


def _alias_move(resource_type: object, prop: object, drifted: bool) -> bool:
    """The drift of a function's alias to another version (:meth:`Change.alias_moved`)."""
    return resource_type == LAMBDA_ALIAS and drifted and prop == "FunctionVersion"


def drift_summary(changes: Sequence[Change]) -> str:
    """What a drift-aware change set found changed outside CloudFormation, in a line: the properties it puts back to
    the template's values, those the template now says as they are (kept), the resources whose drift it could not
    read (left as they are)."""
    reverted = [f"{c.logical_id}.{d.where}" for c in changes for d in c.reverts]
    kept = [f"{c.logical_id}.{d.where}" for c in changes for d in c.details if d.drifted and d.synced]
    moved = [c.logical_id for c in changes if any(c.alias_moved(d) and not d.synced for d in c.details)]
    # what it changes in place, of the resources whose drift was not read (one it adds or replaces is made anew)
    unread = [
        c.logical_id
        for c in changes
        if c.drift in ("NOT_CHECKED", "UNSUPPORTED", "UNKNOWN") and c.action == "Modify" and c.replacement != "True"
    ]
    parts = []
    if reverted:
        parts.append(f"drift back to the template: {', '.join(reverted)}")
    if kept:
        parts.append(f"drift kept, as the template now says it: {', '.join(kept)}")
    if moved:
        kept_on = "aliases moved outside CloudFormation (the fast path, a rollback), kept on the code they serve"
        parts.append(f"{kept_on}: {', '.join(moved)}")
    deleted = [c.logical_id for c in changes if c.drift == "DELETED"]
    if deleted:
        parts.append(f"deleted outside CloudFormation: {', '.join(deleted)}")
    if not parts:
        parts.append("no drift found in the resources it changes or read")
    if unread:
        parts.append(f"drift not read by CloudFormation for {', '.join(unread)}")
    return "; ".join(parts)


def change_set_name(now: datetime, suffix: str | None = None) -> str:
    """``deploykit-<UTC time>-<random>``: unique per stack even for two deploys in the same second."""
    return f"deploykit-{now:%Y%m%dT%H%M%SZ}-{suffix if suffix is not None else uuid.uuid4().hex[:8]}"


DETAIL_LINES = 12  # changed values shown under one resource at most (a CDK upgrade may change hundreds)
VALUE_WIDTH = 60  # a value longer than this is shown cut in the middle (inv diff --json has it whole)
DIFFER_LEAD = 12  # what is shown before where two values differ, when they are cut there


def changes_table(changes: Sequence[Change]) -> str:
    """The changes as a table: resource, type, action, replacement (data holders marked), each Modify followed by
    a line per changed property (``↳ MemorySize: 256 → 512``) when CloudFormation said which."""
    if not changes:
        return "(no resource changes: only parameters, outputs or metadata change)"
    rows = []
    for c in changes:
        mark = "  ⚠ holds data" if c.loses_data() else ""
        mark += "  🔐 access" if c.changes_access else ""
        mark += "  ↩ reverts drift" if c.reverts else ""
        rows.append([c.logical_id, c.resource_type, c.action, (c.replacement or "-") + mark])
    lines = tabulate(rows, headers=["resource", "type", "action", "replacement"], tablefmt="simple").splitlines()
    out = lines[:2]
    for c, line in zip(changes, lines[2:], strict=True):
        out.append(line)
        if c.kept:
            out.append(f"  ↳ {c.kept}")
        shown = c.details if len(c.details) <= DETAIL_LINES else c.details[: DETAIL_LINES - 1]
        out.extend(f"  ↳ {detail_line(d, moved=c.alias_moved(d))}" for d in shown)
        if len(shown) < len(c.details):
            out.append(f"  ↳ … and {len(c.details) - len(shown)} more changed values (inv diff --json lists them all)")
    return "\n".join(out)


HISTORY_LINES = 100  # an update's changes the history keeps at most (a CDK upgrade may change hundreds of values)


def change_lines(changes: Sequence[Change]) -> tuple[str, ...]:
    """An update's changes as the history keeps them, a line each: each changed value of a modified resource
    (``LoginHandler5CDFBDA2: MemorySize: 256 → 512``), else the resource and what happens to it
    (``TopicB1C6B4C2 (AWS::SNS::Topic): add``); past :data:`HISTORY_LINES`, how many more."""
    lines: list[str] = []
    for c in changes:
        if c.details:
            lines += [f"{c.logical_id}: {detail_line(d, moved=c.alias_moved(d))}" for d in c.details]
        else:
            kept = f" ({c.kept_by}: kept)" if c.kept_by else ""
            lines.append(f"{c.logical_id} ({c.resource_type}): {c.action.lower()}{kept}")
    if len(lines) > HISTORY_LINES:
        lines = [*lines[: HISTORY_LINES - 1], f"… and {len(lines) - HISTORY_LINES + 1} more"]
    return tuple(lines)


def _replaced_by(change: Change) -> str:
    """``, by TableName``: the properties whose change replaces the resource, when CloudFormation said them."""
    names = list(dict.fromkeys(d.where for d in change.details if d.replaces))
    return f", by {', '.join(names)}" if names else ""


def detail_line(detail: PropertyChange, *, moved: bool = False) -> str:
    """One changed property: what, from what to what, why, and whether it replaces the resource. ``moved``: the
    drift of an alias the fast path moved (:meth:`Change.alias_moved`)."""
    line = detail.where
    if detail.drifted:
        return line + drift_text(detail, moved=moved)
    if detail.change_type == "Add":
        line += f": added {_value(detail.after)}"
    elif detail.change_type == "Remove":
        line += f": removed (was {_value(detail.before)})"
    elif detail.before is not None or detail.after is not None:
        line += ": {} → {}".format(*_values(detail.before, detail.after))
    cause = {
        "ParameterReference": f"parameter {detail.causing}",
        "ResourceReference": f"{detail.causing} is replaced",
        "ResourceAttribute": f"{detail.causing} changes",
    }.get(detail.source)
    if cause and detail.causing:
        line += f" ({cause})"
    if detail.recreation == "Always":
        line += "  ⟳ replaces it"
    elif detail.recreation == "Conditionally":
        line += "  ⟳ may replace it"
    return line


def drift_text(detail: PropertyChange, *, moved: bool = False) -> str:
    """A drifted property's part of its line, after its name: ``: 512 → 256 (changed outside CloudFormation from 256:
    back to the template's value)``, or, the template giving what it has now, ``: 512 kept (changed outside
    CloudFormation from 256; the template says the same now: only CloudFormation's record changes)``; ``moved``: an
    alias the fast path moved (:meth:`Change.alias_moved`), which goes to the stack's version of the same code."""
    was = f"changed outside CloudFormation from {_value(detail.deployed)}"
    if moved and not detail.synced:
        version = "the stack's new version" if detail.after is None else f"version {_value(detail.after)}"
        return (
            f": {_value(detail.before)} → {version} (moved from {_value(detail.deployed)} outside CloudFormation: by "
            "the Lambda fast path, a rollback or by hand; the stack's version runs the code the alias serves now)"
        )
    if detail.synced:
        same = "the template says the same now: only CloudFormation's record changes"
        return f": {_value(detail.before)} kept ({was}; {same})"
    inside = _object_changes(detail.before, detail.after)
    if inside:  # an object (a function's environment): the values that go back, each
        return f" ({inside}; changed outside CloudFormation: back to the template's value)"
    after = "the template's value, once deployed" if detail.after is None else _value(detail.after)
    return f": {_value(detail.before)} → {after} ({was}: back to the template's value)"


def _or_none(value: Any) -> str:
    return "none" if value is None else _value(value if isinstance(value, str) else json.dumps(value))


def _object_changes(before: str | None, after: str | None) -> str:
    """Where two JSON objects differ, each value: ``Variables.DEBUG: 1 → none``; "" when either is not one."""
    try:
        old, new = json.loads(before or ""), json.loads(after or "")
    except ValueError:
        return ""
    if not isinstance(old, dict) or not isinstance(new, dict):
        return ""
    found: list[str] = []

    def walk(a: Any, b: Any, path: str) -> None:
        if isinstance(a, dict) and isinstance(b, dict):
            for key in dict.fromkeys([*a, *b]):
                walk(a.get(key), b.get(key), f"{path}.{key}" if path else str(key))
        elif a != b:
            found.append(f"{path}: {_or_none(a)} → {_or_none(b)}")

    walk(old, new, "")
    return ", ".join(found)


def _value(value: str | None) -> str:
    if value is None:
        return UNKNOWN_VALUE
    shown = " ".join(value.split()) or repr(value)
    if len(shown) <= VALUE_WIDTH:
        return shown
    # cut in the middle: the ends tell values apart (an ARN's resource, an S3 key's hash and extension)
    head = (VALUE_WIDTH - 1) // 2
    return shown[:head] + "…" + shown[-(VALUE_WIDTH - 1 - head) :]


def _values(before: str | None, after: str | None) -> tuple[str, str]:
    """``before`` and ``after`` as a changed property's line shows them (:func:`_value`); when each cut in the middle
    would read the same (two long lists that differ inside: a container's environment less one variable), each is
    cut around where they differ instead, from a little before it."""
    shown = _value(before), _value(after)
    if before is None or after is None or shown[0] != shown[1]:
        return shown
    old, new = " ".join(before.split()), " ".join(after.split())
    start = next((i for i, (a, b) in enumerate(zip(old, new, strict=False)) if a != b), min(len(old), len(new)))
    begin = max(0, start - DIFFER_LEAD)
    return _from(old, begin), _from(new, begin)


def _from(text: str, begin: int) -> str:
    """``text`` from ``begin`` on, cut to :data:`VALUE_WIDTH` (an ellipsis where it is cut)."""
    lead = "…" if begin else ""
    rest = text[begin:]
    if len(lead) + len(rest) <= VALUE_WIDTH:
        return lead + rest
    return lead + rest[: VALUE_WIDTH - len(lead) - 1] + "…"


def approve_access_command(stack: str, env_name: str | None) -> str:
    """The command that deploys ``stack`` with its change of access approved (the refusal and ``inv diff`` name
    it)."""
    return f"{inv_command('deploy.stack', stack, env=env_name)} --approve-access"


def access_note(stack: str, env_name: str, rerun: str | None = None) -> str:
    """What ``inv diff`` says under a protected environment's change set that changes access (``rerun``: the
    command to approve it with, when not ``inv deploy.stack``)."""
    approve = f"{rerun} --approve-access" if rerun else approve_access_command(stack, env_name)
    return f"  🔐 {env_name} is protected: this change of access deploys only approved, {approve}"


def inv_command(task: str, *args: str, env: str | None) -> str:
    """``inv TASK ARGS [--env ENV]``, as a next step names it."""
    return " ".join(["inv", task, *args, *(["--env", env] if env else [])])


def outputs_of(stack: Mapping[str, Any] | None) -> dict[str, str]:
    if not stack:
        return {}
    return {str(o["OutputKey"]): str(o.get("OutputValue", "")) for o in stack.get("Outputs") or ()}


def updated_of(stack: Mapping[str, Any] | None) -> str:
    """When CloudFormation last changed ``stack`` (its LastUpdatedTime, else its CreationTime) as DescribeStacks
    says it, ISO 8601; "" when it says neither. CloudFormation's own clock: a deploy that leaves it so, compared
    with a later DescribeStacks, tells whether anything changed the stack since (no laptop's clock involved)."""
    moment = (stack or {}).get("LastUpdatedTime") or (stack or {}).get("CreationTime")
    return moment.isoformat() if isinstance(moment, datetime) else str(moment or "")


def template_fingerprint(template: str | Mapping[str, Any]) -> str:
    """A short digest of a template that does not depend on its layout: its JSON with sorted keys, as submitted or
    as GetTemplate gives it back (a dict, for JSON); a template that is no JSON (YAML) is digested as it is."""
    parsed: Any = template
    if isinstance(template, str):
        try:
            parsed = json.loads(template)
        except ValueError:
            return hashlib.sha256(template.encode()).hexdigest()[:16]
    text = json.dumps(parsed, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def deployed_template(cfn: Any, stack: str) -> dict[str, Any] | None:
    """The template ``stack`` was last deployed with (GetTemplate; JSON, as the CDK writes it); None when the stack is
    not there or its template is not JSON."""
    try:
        body = cfn.get_template(StackName=stack).get("TemplateBody")
    except ClientError as exc:
        if is_missing_stack(exc):
            return None
        raise
    if isinstance(body, str):
        try:
            body = json.loads(body)
        except ValueError:
            return None
    return dict(body) if isinstance(body, Mapping) else None


def stack_parameters(aws: AwsFactory, stack: str) -> dict[str, str]:
    """The parameter values ``stack`` runs with, as given; {} when it does not exist, or only a change set created it
    (REVIEW_IN_PROGRESS)."""
    try:
        answer = aws.client("cloudformation").describe_stacks(StackName=stack)
    except ClientError as exc:
        if is_missing_stack(exc):
            return {}
        raise
    found = answer["Stacks"][0]
    if found.get("StackStatus") in ("REVIEW_IN_PROGRESS", "DELETE_COMPLETE"):
        return {}
    return given_parameters(found)


def given_parameters(stack: Mapping[str, Any] | None) -> dict[str, str]:
    """The parameter values the stack was deployed with, as given (not as resolved from SSM)."""
    return {str(p["ParameterKey"]): str(p.get("ParameterValue", "")) for p in (stack or {}).get("Parameters") or ()}


def parameters_of(stack: Mapping[str, Any] | None) -> dict[str, str]:
    if not stack:
        return {}
    return {
        str(p["ParameterKey"]): str(p.get("ResolvedValue") or p.get("ParameterValue", ""))
        for p in stack.get("Parameters") or ()
    }


def fresh_events(events: Iterable[Mapping[str, Any]], seen: set[str], since: datetime | None) -> list[dict[str, Any]]:
    """Events not shown yet and not older than ``since``, oldest first; their ids are added to ``seen``."""
    fresh: list[dict[str, Any]] = []
    for event in events:
        event_id = str(event.get("EventId"))
        if event_id in seen:
            continue
        seen.add(event_id)
        stamp = event.get("Timestamp")
        if since is not None and isinstance(stamp, datetime) and stamp < since:
            continue
        fresh.append(dict(event))
    # CloudFormation lists newest first; equal timestamps keep their reversed listing order (stable sort)
    fresh.reverse()
    return sorted(fresh, key=lambda e: e["Timestamp"].timestamp() if isinstance(e.get("Timestamp"), datetime) else 0)


def is_stack_event(event: Mapping[str, Any], stack_name: str) -> bool:
    return event.get("ResourceType") == STACK_TYPE and event.get("LogicalResourceId") == stack_name


def failed_resources(events: Iterable[Mapping[str, Any]], stack_name: str) -> list[tuple[str, str, str, str]]:
    """(logical id, type, status, reason) of each resource that failed, root causes before cancellations."""
    found: dict[str, tuple[str, str, str, str]] = {}
    for event in events:
        status = str(event.get("ResourceStatus", ""))
        if not status.endswith("_FAILED") or is_stack_event(event, stack_name):
            continue
        logical = str(event.get("LogicalResourceId", "?"))
        found.setdefault(
            logical,
            (logical, str(event.get("ResourceType", "?")), status, str(event.get("ResourceStatusReason") or "")),
        )
    failures = list(found.values())
    return sorted(failures, key=lambda f: "cancelled" in f[3].lower())  # stable: event order otherwise


def stack_failure_reason(events: Iterable[Mapping[str, Any]], stack_name: str) -> str:
    """What the stack's own events say failed it when no resource did ("" when they say nothing): the reason of its
    first rollback or failure event, as CloudFormation gives a failure of the stack itself there (an export another
    stack still imports: "Export X cannot be deleted as it is in use by Y")."""
    for event in events:
        status = str(event.get("ResourceStatus", ""))
        failing = "ROLLBACK_IN_PROGRESS" in status or status.endswith("_FAILED")
        if failing and is_stack_event(event, stack_name) and event.get("ResourceStatusReason"):
            return str(event["ResourceStatusReason"])
    return ""


def format_event(event: Mapping[str, Any], elapsed: float) -> str:
    reason = event.get("ResourceStatusReason")
    text = f"[{elapsed:6.1f}s] {event.get('LogicalResourceId', '?')} {event.get('ResourceType', '?')} "
    text += str(event.get("ResourceStatus", "?"))
    return text + (f": {reason}" if reason else "")


def _short_change_set(change_set_id: str) -> str:
    """The name inside a change set ARN (``arn:...:changeSet/<name>/<uuid>``), or the argument itself."""
    parts = change_set_id.split("/")
    return parts[1] if change_set_id.startswith("arn:") and len(parts) >= 3 else change_set_id


def _failure_lines(failures: Sequence[tuple[str, str, str, str]]) -> str:
    return "\n".join(
        f"  - {lid} ({rtype}) {status}: {reason or 'no reason given'}" for lid, rtype, status, reason in failures
    )


# -- the deployer -----------------------------------------------------------------------------------


# Looks behind a resource of one type that failed, while the operation rolls back: (its physical id, the time the
# operation started) → lines that say why, for the failure's message (e.g. why an ECS service's tasks stopped).
Explainer = Callable[[str, datetime | None], list[str]]


@dataclass
class _Follow:
    """Where following a stack's events starts: what was seen before the operation."""

    stack_id: str
    seen: set[str]
    since: datetime | None
    status: str
    updated: Any
    events: list[dict[str, Any]] = field(default_factory=list)  # the events shown since
    explained: dict[str, list[str]] = field(default_factory=dict)  # logical id → what its explainer found
    # ended with no sign of the operation (no event, the status and its time unchanged: QUIET_POLLS polls)
    quiet: bool = False


def resource_types(body: str) -> dict[str, str]:
    """Each resource of template ``body`` (JSON, as the CDK writes it) → its type; {} for a template that is not."""
    try:
        resources = json.loads(body).get("Resources") or {}
    except (ValueError, AttributeError):
        return {}
    return {lid: str(spec.get("Type", "")) for lid, spec in resources.items() if isinstance(spec, Mapping)}


def held_task_definition(cfn: Any, stack: str) -> str:
    """The task definition ``stack`` holds (the physical id of its one ``AWS::ECS::TaskDefinition``, one
    DescribeStackResources); "" when it has none or several, or does not exist."""
    try:
        resources = cfn.describe_stack_resources(StackName=stack).get("StackResources") or []
    except ClientError as exc:
        if is_missing_stack(exc):
            return ""
        raise
    held = [str(r.get("PhysicalResourceId") or "") for r in resources if r.get("ResourceType") == TASK_DEFINITION]
    return held[0] if len(held) == 1 else ""


def express_blocker(change_set_type: str, body: str) -> str:
    """Why a change set of ``change_set_type`` for template ``body`` is applied in the standard mode when express is
    asked for; "" when nothing stands in the way. A first create waits for every resource (what comes next, the
    other stacks and the smoke checks, needs them ready); custom resources are not run in express mode."""
    if change_set_type != "UPDATE":
        return "a new stack is created in the standard mode, each resource waited for"
    custom = sorted({kind for kind in resource_types(body).values() if kind.startswith(NOT_EXPRESS_TYPES)})
    if custom:
        return f"its template has custom resources ({', '.join(custom)}), which express mode does not run"
    return ""


def _template(body: str, url: str | None) -> dict[str, str]:
    """How a change set request names its template: from S3 when it went there, else inline."""
    return {"TemplateURL": url} if url else {"TemplateBody": body}


class StackDeployer:
    """Deploys, destroys and reads CloudFormation stacks; see the module documentation.

    ``say(text)`` receives the permanent lines (change tables, events, decisions); ``status(text)`` the
    current state for a progress line. ``env`` (an environment name) is added to the commands suggested in
    error messages. ``role_arn``: the environment's ``cloudformation_role_arn``.
    """

    def __init__(
        self,
        cfn: Any,
        clock: Clock,
        *,
        say: Say = print,
        status: Say | None = None,
        poll: float,
        timeout: float,
        env: str | None = None,
        max_retries: int = 6,
        backoff: float = 1.0,
        max_backoff: float = 20.0,
        change_set_poll: float | None = None,
        explainers: Mapping[str, Explainer] | None = None,
        role_arn: str | None = None,
    ) -> None:
        self.cfn = cfn
        # the service role CloudFormation acts with, given to every operation that changes a stack (None: the role
        # the stack has, else the caller's credentials)
        self.role_arn = role_arn
        self.explainers = dict(explainers or {})  # resource type → Explainer
        self.clock = clock
        self.say = say
        self.status = status or (lambda _text: None)
        self.poll = poll
        self.timeout = timeout
        self.env = env
        self.max_retries = max_retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        # A change set is usually ready in seconds: it is asked about more often than a stack's progress.
        self.change_set_poll = change_set_poll if change_set_poll is not None else min(poll, 1.0)
        self._started = clock.monotonic()
        self._deleted: set[str] = set()  # change sets deleted (_delete_change_set)

    # -- reading ----------------------------------------------------------------------------

    def describe(self, name: str) -> dict[str, Any] | None:
        """The stack (DescribeStacks), or None when there is none (a deleted stack counts as none)."""
        stack = self._describe_any(name)
        if stack is None or stack.get("StackStatus") == "DELETE_COMPLETE":
            return None
        return stack

    def outputs(self, name: str) -> dict[str, str]:
        """The stack's outputs; {} when it does not exist."""
        return outputs_of(self.describe(name))

    def parameters(self, name: str) -> dict[str, str]:
        """The stack's current parameter values; {} when it does not exist."""
        return parameters_of(self.describe(name))

    # -- deploy -------------------------------------------------------------------------------

    def deploy(
        self,
        name: str,
        template_body: str,
        parameters: Mapping[str, str],
        *,
        allow_replace: bool = False,
        guard_access: bool = False,
        tags: Mapping[str, str] | None = None,
        capabilities: Sequence[str] = DEFAULT_CAPABILITIES,
        rerun: str | None = None,
        template_url: str | None = None,
        review: Callable[[Sequence[Change]], Mapping[str, Sequence[str]]] | None = None,
        express: bool = False,
        check: Callable[[Sequence[Change]], None] | None = None,
        termination_protection: bool | None = None,
        notification_arns: Sequence[str] | None = None,
        revert_drift: bool = False,
    ) -> StackResult:
        """Bring stack ``name`` to ``template_body`` with ``parameters`` through a change set. ``guard_access``
        (a protected environment, not approved): a change set that changes access is deleted, not executed.
        ``review``: the team's plugins' verdict on the changes (plugin → its reasons to refuse them): a change set
        one refuses is deleted, not executed.
        ``rerun``: the command a refusal names to run this deploy again (default ``inv deploy.stack NAME``; a
        rollback names itself, as deploy.stack would deploy another template). ``template_url``: where
        CloudFormation reads the same template from S3 (one too big to send inline). ``express``: an update is applied
        in CloudFormation's express mode, unless :func:`express_blocker` says why not (said). ``check``: a check of
        the changes before they are executed, whose UsageError deletes the change set (nothing changed).
        ``termination_protection``: what the stack's protection from deletion is set to once it is deployed (a change
        set cannot), as the CDK CLI sets it from the app's ``Stack(termination_protection=...)``; None: left as is.
        ``notification_arns``: the SNS topics CloudFormation sends the stack's events to from this deploy on (``()``:
        none); None: those it has stay, as CloudFormation keeps them when a change set names none.
        ``revert_drift``: an update's change set is drift-aware (DeploymentMode REVERT_DRIFT): what was changed outside
        CloudFormation in the stack's resources goes back to the template's values, and is said (:func:`drift_summary`);
        in the standard mode, not express."""
        self._started = started = self.clock.monotonic()
        again = rerun or self._cmd("deploy.stack", name)
        change_set_type, recreated, previous, topics = self._prepare(name)
        new_stack = name if change_set_type == "CREATE" else None  # a change set not executed leaves it empty
        cs_name = change_set_name(self.clock.now())
        request: dict[str, Any] = {
            "StackName": name,
            "ChangeSetName": cs_name,
            "ChangeSetType": change_set_type,
            **_template(template_body, template_url),
            "Parameters": [{"ParameterKey": k, "ParameterValue": v} for k, v in parameters.items()],
            "Capabilities": list(capabilities),
            "Description": f"deploykit: {change_set_type.lower()} {name}",
            **self._role(),
            **_nested_request(template_body),
        }
        if tags:
            request["Tags"] = [{"Key": k, "Value": v} for k, v in tags.items()]
        if notification_arns is not None:
            request["NotificationARNs"] = list(notification_arns)
        revert_drift = revert_drift and change_set_type == "UPDATE"  # a stack made now has no drift
        if revert_drift:
            request["DeploymentMode"] = REVERT_DRIFT
            if express:
                self.say(f"{name}: standard mode, not express: a drift-aware change set (--revert-drift)")
                express = False
        if express:
            blocker = express_blocker(change_set_type, template_body)
            if blocker:
                if change_set_type == "UPDATE":  # a create always is: not said for every stack of a new environment
                    self.say(f"{name}: standard mode, not express: {blocker}")
                express = False
            else:
                request["DeploymentConfig"] = dict(EXPRESS_CONFIG)
        try:
            created = self._call("create_change_set", **request)
        except ClientError as exc:
            if is_no_changes_error(exc):
                return self._unchanged(name, started, None, termination_protection)
            message = str(exc.response["Error"].get("Message", exc))
            if no_role := role_refused(exc, self.env, self.role_arn):
                raise no_role from None
            if busy := self._busy_meanwhile(name, exc, again):
                raise busy from None
            if error_code(exc) in ("ValidationError", "InsufficientCapabilitiesException"):
                fix = f"fix the template or the parameters ({', '.join(parameters) or 'none given'})"
                if notification_arns and any(w in message for w in (*notification_arns, "AmazonSNS", "Notification")):
                    fix = (
                        f"make the SNS topic{'s' if len(notification_arns) > 1 else ''} {', '.join(notification_arns)} "
                        "(in the stack's region), or name others in notification_arns of deploy.toml or the app's "
                        "Stack(notification_arns=...)"
                    )
                if revert_drift and _about_drift(message):
                    fix = _WITHOUT_DRIFT.format(again=again)
                raise UsageError(
                    f"CloudFormation refused the change set for {name}: {message}",
                    next_step=f"{fix}; nothing was changed",
                ) from None
            raise
        change_set_id, stack_id = str(created["Id"]), str(created["StackId"])
        # a failure, a refusal or an interrupt before the execute deletes the change set (below): none is left behind
        # for a person to execute by mistake
        try:
            described = self._wait_change_set(name, change_set_id)
            if described.get("Status") == "FAILED":
                reason = str(described.get("StatusReason") or "no reason given")
                if is_empty_change_set("FAILED", reason):
                    self._delete_change_set(change_set_id)
                    return self._unchanged(name, started, change_set_id, termination_protection)
                fix = _first_exporter(reason, self._cmd, rerun)
                if not fix and revert_drift and _about_drift(reason):
                    fix = f"{_WITHOUT_DRIFT.format(again=again)} (nothing was changed)"
                raise UsageError(
                    f"CloudFormation could not make a change set for {name}: {reason}",
                    next_step=fix or f"fix the template or the parameters, then rerun: {again} (nothing was changed)",
                )
            changes = tuple(self._kept(name, parse_changes(self._all_changes(change_set_id, described))))
            noun = "change" if len(changes) == 1 else "changes"
            self.say(f"{name}: change set {cs_name} ({change_set_type.lower()}, {len(changes)} {noun})")
            self.say(changes_table(changes))
            drift = drift_summary(changes) if revert_drift else ""
            if drift:
                self.say(f"{name}: {drift}")
            risky = dangerous_changes(changes)
            if risky and not allow_replace:
                listed = ", ".join(
                    f"{c.logical_id} ({c.resource_type}, "
                    + ("removed" if c.action == "Remove" else f"replacement {c.replacement}{_replaced_by(c)}")
                    + (f": {c.kept}" if c.kept else "")
                    + ")"
                    for c in risky
                )
                raise UsageError(
                    f"refusing to deploy {name}: the change set would replace or remove resources that hold data: "
                    f"{listed}. Their data would be lost (or left behind, orphaned). The change set was deleted; "
                    "nothing was changed",
                    next_step=f"if that is intended, rerun with --allow-replace: {again} --allow-replace",
                )
            if check is not None:
                check(changes)
            access = [c for c in changes if c.changes_access]
            if access and guard_access:
                listed = ", ".join(f"{c.logical_id} ({c.resource_type}, {c.action.lower()})" for c in access)
                raise UsageError(
                    f"refusing to deploy {name} to a protected environment unapproved: the change set changes who may "
                    f"access what: {listed}. Read the 🔐 rows above; the change set was deleted, nothing was changed",
                    next_step=f"once reviewed, approve it: {again} --approve-access",
                )
            refused = review(changes) if review is not None else {}
            if refused:
                names = ",".join(sorted(refused))
                raise UsageError(
                    f"refusing to deploy {name}: the team's check plugins refuse its change set: "
                    f"{refusal_text(refused)}. The change set was deleted; nothing was changed",
                    next_step="change the stack so the rule holds (inv diff shows the changes and the refusal), or, "
                    f"if the rule does not apply to this change, run without the plugin: {BLOCK_ENV}={names} {again}",
                )
            follow = self._baseline(stack_id, name)
        except BaseException:
            self._abandon(change_set_id, new_stack)
            raise
        try:
            self._call("execute_change_set", ChangeSetName=change_set_id)
        except ClientError as exc:
            # refused (denied, throttled past the retries, invalid): the change set was not executed. One the
            # execution of may have begun (a retry after a lost answer finds it so; a server error) is left
            if error_code(exc) != "InvalidChangeSetStatus" and not is_transient(exc):
                self._abandon(change_set_id, new_stack)
                if busy := self._busy_meanwhile(name, exc, again):
                    raise busy from None
            raise
        try:
            stack = self._follow(name, follow, "deploying")
        except (ClientError, botocore.exceptions.BotoCoreError) as exc:  # the change set went: never "nothing changed"
            raise StepFailed(
                f"{name}: its change set was executed, but following it failed: {error_code(exc) or exc}",
                next_step=f"see how it ended: aws cloudformation describe-stacks --stack-name {name}; then rerun: "
                f"{again}",
            ) from exc
        status = str(stack.get("StackStatus", "?"))
        if status not in SUCCESS_AFTER_EXECUTE:
            raise self._deploy_failure(name, stack, follow)
        if follow.quiet:  # the status is the one before: whether the change set went is the change set's to say
            self._executed(name, change_set_id, status, again)
        action: Action = ("recreated" if recreated else "created") if change_set_type == "CREATE" else "updated"
        seconds = self.clock.monotonic() - started
        mode = " in express mode: its resources may still be getting ready" if express else ""
        self.say(f"{name}: {status} ({action} in {seconds:.1f}s{mode})")
        try:
            protection = self._protect(name, stack, termination_protection)
        except ClientError as exc:  # the stack is deployed: its protection left as it was is said, not a failure
            self.say(
                f"⚠️  {name}: its termination protection was not set ({error_code(exc)}: "
                f"{exc.response.get('Error', {}).get('Message', '')}); the stack is deployed, the next deploy sets it "
                "(it needs cloudformation:UpdateTerminationProtection)"
            )
            protection = ""
        now = topics_of(stack)
        told = topic_names(now) if notification_arns is not None and set(now) != set(topics) else ""
        if told:
            self.say(f"{name}: its events go to {told} now")
        return StackResult(
            name,
            action,
            seconds,
            outputs_of(stack),
            changes,
            previous,
            updated_of(stack),
            express,
            protection,
            told,
            drift,
        )

    def preview(
        self,
        name: str,
        template_body: str,
        parameters: Mapping[str, str],
        *,
        capabilities: Sequence[str] = DEFAULT_CAPABILITIES,
        template_url: Callable[[], str | None] | None = None,
        stack: Mapping[str, Any] | EllipsisType | None = ...,
        revert_drift: bool = False,
    ) -> list[Change] | NoPreview | None:
        """The changes a deploy of ``name`` would make, from a change set that is deleted, never executed.

        None when the stack does not exist yet (a deploy would create all of it: no change set is made, as one
        would leave a REVIEW_IN_PROGRESS stack behind), or only as its failed first create (``ROLLBACK_COMPLETE``,
        ``ROLLBACK_FAILED``: CloudFormation takes no update change set for it, and a deploy deletes it and creates it
        again); [] when nothing would change; :class:`NoPreview` when its status takes no change set (busy, a failed
        rollback, half deleted: what a deploy does first differs, and one stack must not fail a whole diff).
        ``template_url``: what works out :meth:`deploy`'s, called only when a change set is made (a big template goes
        to the artifacts bucket: not for a stack to be created, whose environment may have none yet).
        ``stack``: the stack as the caller just described it (None: there is
        none), else read. ``revert_drift``: a drift-aware change set, as :meth:`deploy`'s: what was changed outside
        CloudFormation is among the changes."""
        if stack is ...:
            stack = self.describe(name)
        status = str(stack.get("StackStatus")) if stack is not None else ""
        if stack is None or status in ("REVIEW_IN_PROGRESS", *FAILED_FIRST_CREATE):
            return None
        if blocked := no_preview(status):
            return blocked
        url = template_url() if template_url is not None else None
        request: dict[str, Any] = {
            "StackName": name,
            "ChangeSetName": change_set_name(self.clock.now(), f"preview-{uuid.uuid4().hex[:6]}"),
            "ChangeSetType": "UPDATE",
            **_template(template_body, url),
            "Parameters": [{"ParameterKey": k, "ParameterValue": v} for k, v in parameters.items()],
            "Capabilities": list(capabilities),
            "Description": f"deploykit: preview of {name} (inv diff), never executed",
            **self._role(),
            **_nested_request(template_body),
            **({"DeploymentMode": REVERT_DRIFT} if revert_drift else {}),
        }
        try:
            created = self._call("create_change_set", **request)
        except ClientError as exc:
            if is_no_changes_error(exc):
                return []
            message = str(exc.response.get("Error", {}).get("Message", ""))
            if no_role := role_refused(exc, self.env, self.role_arn):
                # that stack's own role (one kept from before, since deleted): the other stacks are still previewed
                reason = no_role.message.removesuffix("; nothing was changed")
                return NoPreview(status, f"{reason}: a deploy of it is refused ({no_role.next_step})")
            # it started an operation since it was described (another deploy, a person in the console)
            late = CANNOT_UPDATE.search(message)
            if error_code(exc) == "ValidationError" and late and (blocked := no_preview(late["status"])):
                return blocked
            if revert_drift and error_code(exc) == "ValidationError" and _about_drift(message):
                return NoPreview(status, f"{_NO_DRIFT_PREVIEW}: {message}")  # one stack must not fail a whole diff
            raise
        change_set_id = str(created["Id"])
        try:
            described = self._wait_change_set(name, change_set_id)
            if described.get("Status") == "FAILED":
                reason = str(described.get("StatusReason") or "no reason given")
                if is_empty_change_set("FAILED", reason):
                    return []
                if importing := no_export(status, reason):  # one stack must not fail a whole diff: said with it
                    return importing
                if revert_drift and _about_drift(reason):
                    return NoPreview(status, f"{_NO_DRIFT_PREVIEW}: {reason}")
                raise UsageError(
                    f"CloudFormation could not make a change set for {name}: {reason}",
                    next_step="fix the template or the parameters (nothing was changed)",
                )
            return self._kept(name, parse_changes(self._all_changes(change_set_id, described)))
        finally:
            self._delete_change_set(change_set_id)

    def _kept(self, name: str, changes: list[Change]) -> list[Change]:
        """:func:`with_kept`: the template ``name`` was last deployed with read only when a change that destroys a
        resource has no PolicyAction (a function's configuration change removes its last version: most updates), or
        when a function and a version go (whose function each version is, the template says)."""
        functions_go = {c.resource_type for c in changes if c.action == "Remove"} >= {LAMBDA_FUNCTION, LAMBDA_VERSION}
        if not functions_go and not any(c.destroys and not c.policy_action for c in changes):
            return with_kept(changes, None)
        try:
            deployed = deployed_template(self.cfn, name)
        except ClientError:  # what is kept is told, not needed: a template that cannot be read tells nothing
            deployed = None
        return with_kept(changes, deployed)

    def _unchanged(
        self, name: str, started: float, change_set_id: str | None, termination_protection: bool | None = None
    ) -> StackResult:
        deleted = " (its empty change set was deleted)" if change_set_id else ""
        self.say(f"{name}: no changes{deleted}")
        stack = self.describe(name)
        protection = self._protect(name, stack, termination_protection)
        seconds = self.clock.monotonic() - started
        return StackResult(
            name, "unchanged", seconds, outputs_of(stack), (), updated=updated_of(stack), protection=protection
        )

    def _protect(self, name: str, stack: Mapping[str, Any] | None, wanted: bool | None) -> str:
        """The stack's termination protection set to ``wanted`` where it is not (None: left as is): "on" or "off"
        when it was set, "" otherwise."""
        if wanted is None or stack is None or bool(stack.get("EnableTerminationProtection")) == wanted:
            return ""
        self._call("update_termination_protection", StackName=name, EnableTerminationProtection=wanted)
        said = "on" if wanted else "off"
        self.say(f"{name}: termination protection {said}, as the CDK app says")
        return said

    def _prepare(self, name: str) -> tuple[str, bool, dict[str, str], tuple[str, ...]]:
        """Recover the stack into a state a change set can start from: (change set type, recreated, the parameters
        an update starts from, the SNS topics it sends its events to)."""
        stack = self._wait_idle(name)
        if stack is None:
            return "CREATE", False, {}, ()
        status = str(stack["StackStatus"])
        topics = topics_of(stack)
        if status == "REVIEW_IN_PROGRESS":
            self.say(f"{name} exists only as a change set that was never executed (REVIEW_IN_PROGRESS); creating it")
            return "CREATE", False, {}, ()
        if status in FAILED_FIRST_CREATE:
            if stack.get("EnableTerminationProtection"):  # CloudFormation would refuse the delete, said as an error
                raise UsageError(
                    f"{name} is {status} (its first create failed, nothing of it is in use), and protected from "
                    "deletion: it cannot be deleted to be created again; nothing was changed",
                    next_step=f"turn its protection off: {protection_off(name)}; then rerun: "
                    f"{self._cmd('deploy.stack', name)}",
                )
            self.say(
                f"{name} is {status}: its first create failed and nothing of it is in use; "
                "deleting it to create it again"
            )
            self._delete(name, stack, purpose="recreate")
            return "CREATE", True, {}, ()
        if status == "UPDATE_ROLLBACK_FAILED":
            return "UPDATE", False, given_parameters(self._continue_rollback(name, stack)), topics
        if status == "DELETE_FAILED":
            failures = self._recent_failures(stack, name)
            raise StepFailed(
                f"{name} is DELETE_FAILED: an earlier delete left it half deleted, and CloudFormation cannot "
                f"update it.{(chr(10) + _failure_lines(failures)) if failures else ''}",
                next_step=f"fix what blocked the delete (above), delete it ({self._cmd('destroy')}), then rerun",
            )
        return "UPDATE", False, given_parameters(stack), topics

    def _wait_change_set(self, name: str, change_set_id: str) -> dict[str, Any]:
        phase = self.clock.monotonic()
        while True:
            described: dict[str, Any] = self._call(
                "describe_change_set", ChangeSetName=change_set_id, IncludePropertyValues=True
            )
            status = str(described.get("Status", "?"))
            if status in ("CREATE_COMPLETE", "FAILED"):
                return described
            self.status(f"{name}: change set {status}")
            if self.clock.monotonic() - phase + self.change_set_poll > self.timeout:  # the caller deletes it
                raise StepFailed(
                    f"deadline of {self.timeout:g}s passed while CloudFormation made the change set of {name} "
                    f"(still {status}); it was deleted, nothing was changed",
                    next_step=f"rerun: {self._cmd('deploy.stack', name)}",
                )
            self.clock.sleep(self.change_set_poll)

    def _all_changes(self, change_set_id: str, first: Mapping[str, Any], depth: int = 0) -> list[dict[str, Any]]:
        """Every change of the change set, page by page; a nested stack's own (its change set, when
        CloudFormation made one: IncludeNestedStacks) after its row, each named ``Parent/Child``: the guards judge the
        resources inside it, where they saw one ``AWS::CloudFormation::Stack`` row."""
        changes = list(first.get("Changes") or [])
        token = first.get("NextToken")
        while token:
            page = self._call(
                "describe_change_set", ChangeSetName=change_set_id, NextToken=token, IncludePropertyValues=True
            )
            changes.extend(page.get("Changes") or [])
            token = page.get("NextToken")
        found: list[dict[str, Any]] = []
        for entry in changes:
            found.append(entry)
            rc = entry.get("ResourceChange")
            nested = rc.get("ChangeSetId") if isinstance(rc, Mapping) and rc.get("ResourceType") == STACK_TYPE else None
            if nested and depth < NESTED_DEPTH:
                inner = self._call("describe_change_set", ChangeSetName=nested, IncludePropertyValues=True)
                parent = str(rc.get("LogicalResourceId", "?"))
                for child in self._all_changes(str(nested), inner, depth + 1):
                    child_rc = child.get("ResourceChange")
                    if isinstance(child_rc, Mapping):
                        child_id = f"{parent}/{child_rc.get('LogicalResourceId', '?')}"
                        child = {**child, "ResourceChange": {**child_rc, "LogicalResourceId": child_id}}
                    found.append(child)
        return found

    def _abandon(self, change_set_id: str, created: str | None) -> None:
        """Delete a change set not executed; and, for one that was to create stack ``created``, the stack its
        creation made: an empty stack in REVIEW_IN_PROGRESS, which would count as there (the CDK CLI deletes it too)."""
        self._delete_change_set(change_set_id)
        if created is None:
            return
        try:
            found = self._call("describe_stacks", StackName=created)["Stacks"]
            if found and found[0].get("StackStatus") == "REVIEW_IN_PROGRESS":
                self._call("delete_stack", StackName=created)
        except ClientError as exc:
            if not is_not_there(exc):
                self.say(f"could not delete the empty stack {created} its change set made: {exc}")

    def _delete_change_set(self, change_set_id: str) -> None:
        """Delete a change set not executed (once: a second call for the same one does nothing, as when what follows
        the deletion of an empty one fails)."""
        if change_set_id in self._deleted:
            return
        self._deleted.add(change_set_id)
        try:
            self._call("delete_change_set", ChangeSetName=change_set_id)
        except ClientError as exc:
            self.say(f"could not delete change set {_short_change_set(change_set_id)}: {exc}")

    def _deploy_failure(self, name: str, stack: Mapping[str, Any], follow: _Follow) -> StepFailed:
        status = str(stack.get("StackStatus", "?"))
        failures = failed_resources(follow.events, name)
        reason = stack.get("StackStatusReason")
        what = {
            "UPDATE_ROLLBACK_COMPLETE": "CloudFormation rolled the update back: the previous version is in place",
            "UPDATE_ROLLBACK_FAILED": "the update failed and so did its rollback; the next deploy continues the "
            "rollback first",
            "ROLLBACK_COMPLETE": "the create failed and was rolled back; the next deploy deletes the stack and "
            "creates it again",
            "ROLLBACK_FAILED": "the create failed and so did its rollback; the next deploy deletes the stack",
        }.get(status, "")
        lines = [f"deploying stack {name} failed: it is {status}" + (f" ({reason})" if reason else "")]
        if what:
            lines.append(what)
        if failures:
            lines.append("failing resources:")
            lines.append(_failure_lines(failures))
            lines.extend(line for found in follow.explained.values() for line in found)
        elif said := stack_failure_reason(follow.events, name):
            lines.append(f"no resource failed; the stack's own event says: {said}")
        else:
            lines.append("no resource reported a failure in the stack events")
        return StepFailed(
            "\n".join(lines),
            next_step=f"fix the cause above, then rerun the same command (this stack alone: "
            f"{self._cmd('deploy.stack', name)}); "
            f"check what is serving meanwhile: {self._cmd('health')}",
        )

    # -- recovery -------------------------------------------------------------------------------

    def _wait_idle(self, name: str) -> dict[str, Any] | None:
        """The stack once no operation runs on it (None when absent): a busy stack is waited for, not fought."""
        phase = self.clock.monotonic()
        announced = ""
        while True:
            stack = self.describe(name)
            status = str(stack["StackStatus"]) if stack else ""
            if stack is None or not status.endswith("_IN_PROGRESS") or status == "REVIEW_IN_PROGRESS":
                if announced:
                    self.say(f"[{self._elapsed():6.1f}s] {name} is {status or 'gone'} now")
                return stack
            if status != announced:
                self.say(
                    f"[{self._elapsed():6.1f}s] {name} is busy ({status}): another operation is running on it; "
                    "waiting for it to finish"
                )
                announced = status
            self.status(f"{name}: waiting for {status} to finish")
            if self.clock.monotonic() - phase + self.poll > self.timeout:
                raise StepFailed(
                    f"deadline of {self.timeout:g}s passed while waiting for {name} to finish {status}",
                    next_step=f"see what it is doing: aws cloudformation describe-stack-events --stack-name {name}; "
                    f"rerun once it is done: {self._cmd('deploy.stack', name)}",
                )
            self.clock.sleep(self.poll)

    def _role(self) -> dict[str, str]:
        """RoleARN for a call that changes a stack, when the environment names a service role."""
        return {"RoleARN": self.role_arn} if self.role_arn else {}

    def _delete(self, name: str, stack: Mapping[str, Any], *, purpose: str) -> None:
        stack_id = str(stack.get("StackId") or name)
        follow = self._baseline(stack_id, name)
        self._call("delete_stack", StackName=stack_id, **self._role())
        final = self._follow(name, follow, "deleting")
        status = str(final.get("StackStatus", "?"))
        if status == "DELETE_COMPLETE":
            self.say(f"{name}: DELETE_COMPLETE")
            return
        failures = failed_resources(follow.events, name)
        retained = " ".join(f[0] for f in failures)
        next_step = f"fix what blocked the delete (above), then rerun: {self._cmd('destroy')}"
        if purpose == "recreate":
            next_step = f"fix what blocked the delete (above), then rerun: {self._cmd('deploy.stack', name)}"
        if retained:
            next_step += (
                f"; or keep those resources: aws cloudformation delete-stack --stack-name {name} "
                f"--retain-resources {retained}"
            )
        raise StepFailed(
            f"deleting stack {name} failed: it is {status}"
            + (f" ({final['StackStatusReason']})" if final.get("StackStatusReason") else "")
            + (f"\nfailing resources:\n{_failure_lines(failures)}" if failures else ""),
            next_step=next_step,
        )

    def _continue_rollback(self, name: str, stack: Mapping[str, Any]) -> dict[str, Any]:
        """ContinueUpdateRollback, followed to its end: the stack as it is then (UPDATE_ROLLBACK_COMPLETE)."""
        self.say(f"{name} is UPDATE_ROLLBACK_FAILED: continuing the rollback (ContinueUpdateRollback) first")
        stack_id = str(stack.get("StackId") or name)
        follow = self._baseline(stack_id, name)
        self._call("continue_update_rollback", StackName=stack_id, **self._role())
        final = self._follow(name, follow, "rolling back")
        status = str(final.get("StackStatus", "?"))
        if status == "UPDATE_ROLLBACK_COMPLETE":
            self.say(f"{name}: UPDATE_ROLLBACK_COMPLETE; the previous version is in place")
            return dict(final)
        failures = failed_resources(follow.events, name)
        skip = " ".join(f[0] for f in failures) or "<logical ids of the failing resources>"
        raise StepFailed(
            f"continuing the rollback of {name} failed: it is {status}"
            + (f"\nfailing resources:\n{_failure_lines(failures)}" if failures else ""),
            next_step=f"fix those resources by hand, or skip them: aws cloudformation continue-update-rollback "
            f"--stack-name {name} --resources-to-skip {skip}; then rerun: {self._cmd('deploy.stack', name)}",
        )

    def _recent_failures(self, stack: Mapping[str, Any], name: str) -> list[tuple[str, str, str, str]]:
        """Failures of the stack's last operation: its events newest first, back to where that operation began."""
        try:
            answer = self._call("describe_stack_events", StackName=str(stack.get("StackId") or name))
        except ClientError:
            return []
        last: list[dict[str, Any]] = []
        for event in answer.get("StackEvents") or []:
            last.append(event)
            if is_stack_event(event, name) and str(event.get("ResourceStatus", "")).endswith("_IN_PROGRESS"):
                break
        return failed_resources(reversed(last), name)

    # -- destroy ---------------------------------------------------------------------------------

    def destroy(self, name: str) -> StackResult:
        """Delete stack ``name`` and wait for DELETE_COMPLETE; ``absent`` when there is none."""
        self._started = started = self.clock.monotonic()
        stack = self._wait_idle(name)
        if stack is None:
            self.say(f"{name}: not there, nothing to delete")
            return StackResult(name, "absent", self.clock.monotonic() - started)
        self.say(f"{name}: deleting ({stack.get('StackStatus')})")
        self._delete(name, stack, purpose="destroy")
        return StackResult(name, "deleted", self.clock.monotonic() - started)

    # -- following an operation -----------------------------------------------------------------

    def _baseline(self, stack_id: str, name: str) -> _Follow:
        """What exists before the operation: its events are not shown again."""
        stack = self._describe_any(stack_id) or {}
        seen: set[str] = set()
        events = self._call("describe_stack_events", StackName=stack_id).get("StackEvents") or []
        for event in events:
            seen.add(str(event.get("EventId")))
        stamps = [e["Timestamp"] for e in events if isinstance(e.get("Timestamp"), datetime)]
        return _Follow(
            stack_id=stack_id,
            seen=seen,
            since=max(stamps) if stamps else None,
            status=str(stack.get("StackStatus", "")),
            updated=stack.get("LastUpdatedTime"),
        )

    def _follow(self, name: str, follow: _Follow, doing: str) -> dict[str, Any]:
        """Poll the stack until it reaches a terminal status after the operation started; print its events."""
        phase = self.clock.monotonic()
        active = False
        quiet_terminal = 0
        while True:
            stack = self._describe_any(follow.stack_id) or {
                "StackId": follow.stack_id,
                "StackStatus": "DELETE_COMPLETE",
            }
            status = str(stack.get("StackStatus", "?"))
            for event in self._new_events(follow):
                follow.events.append(event)
                self.say(format_event(event, self._elapsed()))
                if is_stack_event(event, name):
                    active = True
                self._explain(event, follow)
            if status != follow.status or stack.get("LastUpdatedTime") != follow.updated:
                active = True
            self.status(f"{name}: {status} ({len(follow.events)} events)")
            if not status.endswith("_IN_PROGRESS"):
                if active:
                    return stack
                quiet_terminal += 1
                if quiet_terminal >= QUIET_POLLS:  # a CloudFormation that reports no activity at all
                    follow.quiet = True
                    return stack
            if self.clock.monotonic() - phase + self.poll > self.timeout:
                failures = failed_resources(follow.events, name)
                raise StepFailed(
                    f"deadline of {self.timeout:g}s passed while {doing} stack {name}: it is still {status}"
                    + (f"\nfailing so far:\n{_failure_lines(failures)}" if failures else ""),
                    next_step=f"CloudFormation carries on by itself: follow it with aws cloudformation "
                    f"describe-stack-events --stack-name {name}, then rerun {self._cmd('deploy.stack', name)} "
                    "(it waits for a busy stack)",
                )
            self.clock.sleep(self.poll)

    def _busy_meanwhile(self, name: str, exc: ClientError, again: str) -> UsageError | None:
        """The refusal of a change set's creation or execution because the stack became busy after this deploy waited
        for it to be idle (another deploy, a person in the console started an update); None for another error. It was
        said as a template to fix."""
        message = str(exc.response.get("Error", {}).get("Message", ""))
        found = CANNOT_UPDATE.search(message) if error_code(exc) == "ValidationError" else None
        if found is None:
            return None
        return UsageError(
            f"{name} became busy ({found['status']}) while this deploy went to change it: another operation started "
            "on it after the deploy waited for it to be idle (another deploy, or a person in the console); nothing "
            "was changed",
            next_step=f"see what runs on it: aws cloudformation describe-stack-events --stack-name {name}; then rerun "
            f"(it waits for a busy stack): {again}",
        )

    def _executed(self, name: str, change_set_id: str, status: str, again: str) -> None:
        """Refuse to count a stack deployed that showed no sign of its change set's execution (no event, its status
        and time as before) unless the change set says it was executed (``EXECUTE_COMPLETE``): CloudFormation took
        the call and never ran it (the change set still ``AVAILABLE``, or ``EXECUTE_FAILED``), and the deploy was
        said done and recorded live, the stack as it was."""
        try:
            execution = str(self._call("describe_change_set", ChangeSetName=change_set_id).get("ExecutionStatus"))
            said = f"the change set is {execution}: it was not applied"
        except ClientError as exc:
            execution, said = "", f"the change set could not be read ({error_code(exc)}): whether it went is not known"
        if execution == "EXECUTE_COMPLETE":
            return
        raise StepFailed(
            f"{name}: CloudFormation took the execution of its change set, but the stack showed no sign of it "
            f"({status} as before, no event, {QUIET_POLLS} polls) and {said}",
            next_step=f"see what CloudFormation says: aws cloudformation describe-change-set --change-set-name "
            f"{change_set_id}; aws cloudformation describe-stack-events --stack-name {name}; then rerun: {again}",
        )

    def _explain(self, event: Mapping[str, Any], follow: _Follow) -> None:
        """A resource failed whose type has an explainer: look behind it now, while the rollback has not removed
        it yet (a created service goes with its stack). Once per resource; never fails the follow itself."""
        explain = self.explainers.get(str(event.get("ResourceType", "")))
        logical = str(event.get("LogicalResourceId", "?"))
        physical = str(event.get("PhysicalResourceId") or "")
        failed = str(event.get("ResourceStatus", "")).endswith("_FAILED")
        if explain is None or not failed or not physical or logical in follow.explained:
            return
        try:
            follow.explained[logical] = explain(physical, follow.since)
        except (ClientError, botocore.exceptions.BotoCoreError) as exc:
            follow.explained[logical] = [f"  (could not look behind {logical}: {error_code(exc) or exc})"]

    def _new_events(self, follow: _Follow) -> list[dict[str, Any]]:
        raw: list[dict[str, Any]] = []
        token: str | None = None
        for _ in range(EVENT_PAGES):
            kwargs: dict[str, Any] = {"StackName": follow.stack_id}
            if token:
                kwargs["NextToken"] = token
            page = self._call("describe_stack_events", **kwargs)
            events = list(page.get("StackEvents") or [])
            raw.extend(events)
            token = page.get("NextToken")
            reached_known = any(str(e.get("EventId")) in follow.seen for e in events)
            reached_old = follow.since is not None and any(
                isinstance(e.get("Timestamp"), datetime) and e["Timestamp"] < follow.since for e in events
            )
            if not token or reached_known or reached_old:
                break
        return fresh_events(raw, follow.seen, follow.since)

    # -- calls ---------------------------------------------------------------------------------------

    def _describe_any(self, name_or_id: str) -> dict[str, Any] | None:
        """DescribeStacks, deleted stacks included (by id); None when CloudFormation knows no such stack."""
        try:
            stacks = self._call("describe_stacks", StackName=name_or_id).get("Stacks") or []
        except ClientError as exc:
            if is_missing_stack(exc):
                return None
            raise
        return dict(stacks[0]) if stacks else None

    def _call(self, operation: str, **kwargs: Any) -> Any:
        """One CloudFormation call, retried with exponential backoff on throttling (and, where safe, 5xx)."""
        attempt = 0
        while True:
            try:
                return getattr(self.cfn, operation)(**kwargs)
            except (ClientError, botocore.exceptions.BotoCoreError) as exc:
                retry = is_throttling(exc) or (operation in IDEMPOTENT_CALLS and is_transient(exc))
                if not retry or attempt >= self.max_retries:
                    raise
                delay = min(self.backoff * 2**attempt, self.max_backoff)
                attempt += 1
                why = error_code(exc) or type(exc).__name__
                self.say(
                    f"[{self._elapsed():6.1f}s] CloudFormation {operation}: {why}; retrying in {delay:g}s "
                    f"({attempt}/{self.max_retries})"
                )
                self.clock.sleep(delay)

    def _elapsed(self) -> float:
        return self.clock.monotonic() - self._started

    def _cmd(self, task: str, *args: str) -> str:
        return inv_command(task, *args, env=self.env)
