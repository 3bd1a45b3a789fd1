"""What a task definition names that must exist for ECS to start its tasks, checked before a new revision is
registered (``register-taskdef``: ``inv deploy.app``, the app chain of ``deploy.auto``, ``inv rollback`` of the
app), as ``ecspresso verify`` does by hand.

A task whose references are missing does not start: ECS says so only once it tries, as the task's stop reason
(``ResourceInitializationError: unable to pull secrets or registry auth``, ``... ParameterNotFound``,
``failed to validate logger args: The specified log group does not exist``, ``ECS was unable to assume the
role``). On AWS that is the rollout's first tasks failing a minute into the deploy, then the automatic rollback;
here it is a refusal before anything changes (exit 2), naming what is missing. What is checked:

- each container's ``secrets``: an SSM parameter (its name or ARN: ``GetParameters``, which takes both) or a
  Secrets Manager secret (``DescribeSecret``: its metadata, never its value; one scheduled for deletion counts as
  missing, ECS cannot read it);
- each container's ``environmentFiles`` (S3 objects: ``HeadObject``);
- the ``awslogs`` log group of each container, unless the driver creates it (``awslogs-create-group``);
- the task and execution roles (``GetRole``).

A reference in another region or account than the task definition's is not checked (the caller's rights there are
another matter), nor is one this caller may not read (``AccessDenied``) or that a read could not reach: each is said
as not checked, and the deploy goes on. The reads go at once (:func:`deploykit.aws.at_once`), beside the image's build
when the step reads early.

The revisions a stack deploy registers (the Fargate stack's ``AWS::ECS::TaskDefinition``) are checked the same way
from the template, before its change set (:func:`check_template`): a value CloudFormation works out is resolved where
it can be here (``Ref`` to a parameter or a pseudo parameter, ``Fn::Join``, ``Fn::Sub``); one the stack makes itself
(a ``Ref`` or ``Fn::GetAtt`` of its own resource: its log group, its roles) is not read; any other (``Fn::If``...) is
said as not checked. What another stack exports (``Fn::ImportValue``, its name spelled out or resolved as above) is
read from the region's exports (``ListExports``, once per command, and only for a template that imports one, beside
the other reads), and the value it names is checked as if the template spelled it out. An export no stack makes is
missing (CloudFormation would refuse the deploy too, but later and less plainly); when the exports cannot be read
(``AccessDenied``), what the template imports is not checked.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any, NamedTuple

import botocore.exceptions

from deploykit.aws import DENIED, AwsFactory, at_once
from deploykit.errors import UsageError
from deploykit.stacks import StackOutputs

if TYPE_CHECKING:
    from deploykit.plan import Step

SSM_BATCH = 10  # GetParameters takes at most 10 names
# what each service answers for a thing that is not there
NOT_FOUND = frozenset({"ResourceNotFoundException", "NoSuchEntity", "ParameterNotFound", "404", "NoSuchKey"})


@dataclass(frozen=True)
class Reference:
    """One thing a task definition names: ``kind`` (the service that holds it: ssm, secretsmanager, s3, logs, iam),
    ``key`` (what that service's read takes) and ``said`` (how a person is told of it)."""

    kind: str
    key: str
    said: str


@dataclass(frozen=True)
class Findings:
    """What the reads found: the references ``missing`` (each said, with why), and those ``unchecked`` (with why);
    ``missing_refs``, beside ``missing``: what each missing one is (:attr:`Reference.kind`, or ``export``; and its
    key), for :meth:`keeping`."""

    checked: int
    missing: tuple[str, ...] = ()
    unchecked: tuple[str, ...] = ()
    missing_refs: tuple[tuple[str, str], ...] = ()

    def keeping(self, missing: Callable[[str, str], bool]) -> Findings:
        """These findings with only the missing references for which ``missing(kind, key)`` holds (the others may
        exist by the time they are needed: a stack deployed before makes them)."""
        kept = [(said, ref) for said, ref in zip(self.missing, self.missing_refs, strict=True) if missing(*ref)]
        return Findings(self.checked, tuple(said for said, _ in kept), self.unchecked, tuple(ref for _, ref in kept))


def of(registration: Mapping[str, Any], *, region: str, account: str) -> tuple[list[Reference], list[str]]:
    """The references of a RegisterTaskDefinition argument set (or a described revision) that can be checked from
    ``region`` and ``account`` (the task definition's), and how each of the others is said as not checked."""
    found: list[Reference] = []
    elsewhere: list[str] = []

    def here(arn: str, said: str) -> bool:
        parts = arn.split(":")
        ref_region, ref_account = (parts[3], parts[4]) if len(parts) > 4 else ("", "")
        if (ref_region and ref_region != region) or (ref_account and account and ref_account != account):
            elsewhere.append(f"{said}: in {ref_region or 'another'} region / account {ref_account or '?'}")
            return False
        return True

    for container in registration.get("containerDefinitions") or []:
        name = container.get("name", "?")
        for secret in container.get("secrets") or []:
            value = str(secret.get("valueFrom", ""))
            said = f"secret {secret.get('name', '?')} of container {name}"
            if not value or (value.startswith("arn:") and not here(value, f"{said} ({value})")):
                continue
            if value.startswith("arn:") and value.split(":")[2] == "secretsmanager":
                secret_arn = ":".join(value.split(":")[:7])  # without :json-key:version-stage:version-id
                found.append(Reference("secretsmanager", secret_arn, f"{said} (Secrets Manager secret {secret_arn})"))
            else:
                found.append(Reference("ssm", value, f"{said} (SSM parameter {value})"))
        for file in container.get("environmentFiles") or []:
            value = str(file.get("value", ""))
            if value.startswith("arn:aws:s3:::") and "/" in value:
                bucket, key = value.removeprefix("arn:aws:s3:::").split("/", 1)
                found.append(Reference("s3", f"{bucket}/{key}", f"environment file of container {name} ({value})"))
        logging = container.get("logConfiguration") or {}
        options = logging.get("options") or {}
        group = options.get("awslogs-group")
        if logging.get("logDriver") == "awslogs" and group and options.get("awslogs-create-group") != "true":
            said = f"log group {group} of container {name}"
            if options.get("awslogs-region", region) != region:
                elsewhere.append(f"{said}: in region {options['awslogs-region']}")
            else:
                found.append(Reference("logs", group, said))
    for field, role in (("executionRoleArn", "execution role"), ("taskRoleArn", "task role")):
        arn = str(registration.get(field) or "")
        if arn and here(arn, f"the {role} {arn}"):
            found.append(Reference("iam", arn.rsplit("/", 1)[-1], f"the {role} {arn}"))
    return found, elsewhere


TASK_DEFINITION = "AWS::ECS::TaskDefinition"
# what each log option of a template's container is read for (the others are not)
LOG_OPTIONS = ("awslogs-group", "awslogs-region", "awslogs-create-group")
_SUBSTITUTION = re.compile(r"\$\{([^}!][^}]*)\}")


class Unresolved(Exception):
    """A template value CloudFormation works out as it deploys: ``made`` by this stack (nothing to check before), or
    ``imported`` from another stack's export of that name which is not known here (not read yet, or no stack makes
    it), else not checked here, and ``why``."""

    def __init__(self, why: str = "", *, made: bool = False, imported: tuple[str, ...] = ()) -> None:
        super().__init__(why)
        self.why, self.made, self.imported = why, made, imported


@dataclass(frozen=True)
class Template:
    """What a template's values are resolved against: its own ``resources`` (logical ids), its ``parameters`` (the
    values given, else their defaults), the pseudo parameters (``AWS::Region``...) and the region's ``exports`` (name:
    value; None when they have not been read)."""

    resources: frozenset[str]
    parameters: Mapping[str, str]
    pseudo: Mapping[str, str]
    declared: frozenset[str] = frozenset()  # its parameters, with a value here or not (the stack's previous one)
    exports: Mapping[str, str] | None = None

    @classmethod
    def of(
        cls,
        template: Mapping[str, Any],
        given: Mapping[str, str],
        *,
        stack: str,
        region: str,
        account: str,
        exports: Mapping[str, str] | None = None,
    ) -> Template:
        """What the values of ``template`` (parsed) resolve against, deployed as ``stack`` in ``region`` and
        ``account`` with the parameters ``given``."""
        declared = dict(template.get("Parameters") or {})
        partition = "aws-cn" if region.startswith("cn-") else "aws-us-gov" if region.startswith("us-gov-") else "aws"
        pseudo = {
            "AWS::Region": region,
            "AWS::AccountId": account,
            "AWS::Partition": partition,
            "AWS::URLSuffix": "amazonaws.com.cn" if partition == "aws-cn" else "amazonaws.com",
            "AWS::StackName": stack,
        }
        parameters = {
            name: str(given[name] if name in given else spec.get("Default"))
            for name, spec in declared.items()
            if name in given or (isinstance(spec, Mapping) and "Default" in spec)
        }
        resources = frozenset(dict(template.get("Resources") or {}))
        return cls(resources, parameters, pseudo, frozenset(declared), exports)

    def value(self, raw: Any) -> str:
        """``raw`` as a string, as CloudFormation would make it; :class:`Unresolved` when it cannot be here."""
        if isinstance(raw, str):
            return raw
        if isinstance(raw, (int, float)) and not isinstance(raw, bool):
            return str(raw)
        if isinstance(raw, Mapping) and len(raw) == 1:
            ((function, argument),) = raw.items()
            if function == "Ref":
                return self.named(str(argument))
            if function == "Fn::GetAtt":
                self.named(str(argument[0] if isinstance(argument, list) and argument else argument).split(".")[0])
            if function == "Fn::ImportValue":  # another stack's export, named by a string, Fn::Sub or Fn::Join
                name = self.value(argument)
                if self.exports is not None and name in self.exports:
                    return self.exports[name]
                raise Unresolved(imported=(name,))
            if function == "Fn::Join" and isinstance(argument, list) and len(argument) == 2:
                separator, parts = argument
                if isinstance(separator, str) and isinstance(parts, list):
                    return separator.join(self._each(self.value, parts))
            if function == "Fn::Sub":
                return self._substituted(argument)
        raise Unresolved(f"worked out by CloudFormation as it deploys ({json.dumps(raw)[:80]})")

    def named(self, name: str) -> str:
        """What ``Ref`` of ``name`` gives: a parameter's or pseudo parameter's value; :class:`Unresolved` for one of
        the stack's own resources (made with it)."""
        if name in self.pseudo:
            return self.pseudo[name]
        if name in self.parameters:
            return self.parameters[name]
        if name in self.resources:
            raise Unresolved(made=True)
        if name in self.declared:  # neither given nor defaulted: the value the stack holds, not known here
            raise Unresolved(f"made of the stack's parameter {name}, whose value is the stack's own (not given here)")
        raise Unresolved(f"names {name}, which the template does not hold")

    def _substituted(self, argument: Any) -> str:
        text, names = (
            (argument[0], argument[1]) if isinstance(argument, list) and len(argument) == 2 else (argument, {})
        )
        if not isinstance(text, str) or not isinstance(names, Mapping):
            raise Unresolved(f"worked out by CloudFormation as it deploys ({json.dumps(argument)[:80]})")

        def one(name: str) -> str:
            if name in names:
                return self.value(names[name])
            return self.named(name.split(".")[0])  # Resource.Attribute: the resource's

        names_in = _SUBSTITUTION.findall(text)
        found = dict(zip(names_in, self._each(one, names_in), strict=True))
        return _SUBSTITUTION.sub(lambda match: found[match.group(1)], text).replace("${!", "${")

    @staticmethod
    def _each(resolve: Callable[[Any], str], parts: list[Any]) -> list[str]:
        """Each of ``parts`` resolved; when some import exports not known here, :class:`Unresolved` naming every one
        of them (their values are all read at once), else the first part's that could not be."""
        resolved: list[str] = []
        imported: list[str] = []
        first: Unresolved | None = None
        for part in parts:
            try:
                resolved.append(resolve(part))
            except Unresolved as exc:
                imported += exc.imported
                first = first or exc
        if imported:
            raise Unresolved(imported=tuple(dict.fromkeys(imported)))
        if first is not None:
            raise first
        return resolved


Resolved = tuple[list[Reference], list[str], list[str]]  # what of_template finds: references, not checked, imported


def check_template(aws: AwsFactory, body: str, given: Mapping[str, str], *, stack: str, region: str) -> Findings:
    """Whether what the task definitions of template ``body`` name exists (:func:`of_template`), read at once from
    ``region`` and the caller's account. When they import what another stack exports, the region's exports are read
    beside the other reads (:meth:`deploykit.stacks.StackOutputs.exports`: once per command), then what each imported
    value names (:func:`_check_imported`)."""
    account = aws.account()
    named, elsewhere, imported = of_template(body, given, stack=stack, region=region, account=account)
    if not imported:
        return check(aws, named, elsewhere)
    resolve = partial(of_template, body, given, stack=stack, region=region, account=account)
    reads: dict[str, Callable[[], Findings]] = {
        "spelled out": partial(check, aws, named, elsewhere),
        "imported": partial(_check_imported, aws, resolve, (named, elsewhere, imported)),
    }
    spelled, through_exports = at_once(reads).values()
    return Findings(
        spelled.checked + through_exports.checked,
        spelled.missing + through_exports.missing,
        spelled.unchecked + through_exports.unchecked,
        spelled.missing_refs + through_exports.missing_refs,
    )


def _check_imported(aws: AwsFactory, resolve: Callable[..., Resolved], before: Resolved) -> Findings:
    """What the values a template imports name (``before``: what :func:`of_template` found without the exports,
    ``resolve``: it again, given them), read once the region's exports are. An export no stack makes is missing; all
    are not checked when the exports could not be read."""
    named, elsewhere, imported = before
    try:
        exports = StackOutputs.of(aws).exports(needed=imported)
    except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as exc:
        why = _problem(exc).why
        return Findings(0, unchecked=tuple(f"export {name}: {why}" for name in dict.fromkeys(imported)))
    more, far, missing = resolve(exports=exports)
    # the template resolved again: what it names beyond the first time is what the exports named
    found = check(aws, _beyond(more, named), _beyond(far, elsewhere))
    names = tuple(dict.fromkeys(missing))
    not_exported = tuple(f"export {name}: not exported by any stack" for name in names)
    return Findings(
        found.checked,
        not_exported + found.missing,
        found.unchecked,
        tuple(("export", name) for name in names) + found.missing_refs,
    )


def _beyond(items: list[Any], known: list[Any]) -> list[Any]:
    """``items`` without those in ``known`` (each as many times as it is there), in their order."""
    left = list(known)
    kept = []
    for item in items:
        if item in left:
            left.remove(item)
        else:
            kept.append(item)
    return kept


def of_template(
    body: str,
    given: Mapping[str, str],
    *,
    stack: str,
    region: str,
    account: str,
    exports: Mapping[str, str] | None = None,
) -> Resolved:
    """The references of the task definitions of template ``body`` (deployed as ``stack`` in ``region`` and
    ``account``, with the parameters ``given``) that can be checked before it is, as :func:`of` finds them in a
    registration; how each of the others is said as not checked; and the names of the exports it imports that
    ``exports`` (the region's, None: not read) does not hold, whose values are left out."""
    try:
        template = json.loads(body)
        resources = dict(template.get("Resources") or {})
        resolver = Template.of(template, given, stack=stack, region=region, account=account, exports=exports)
    except (ValueError, AttributeError, TypeError):
        return [], [], []
    found: list[Reference] = []
    elsewhere: list[str] = []
    imported: list[str] = []
    for spec in resources.values():
        if isinstance(spec, Mapping) and spec.get("Type") == TASK_DEFINITION:
            registration, unresolved, imports = _registration(resolver, spec.get("Properties") or {})
            more, far = of(registration, region=region, account=account)
            found += more
            elsewhere += far + unresolved
            imported += imports
    return found, elsewhere, imported


def _registration(resolver: Template, properties: Mapping[str, Any]) -> tuple[dict[str, Any], list[str], list[str]]:
    """A template's task definition ``properties`` as the RegisterTaskDefinition arguments :func:`of` reads, with
    only the values resolved (:meth:`Template.value`); how each unresolved one is said as not checked (one the stack
    makes: not said); and the names of the exports it imports whose values are not known (not said either)."""
    unresolved: list[str] = []
    imported: list[str] = []

    def value(raw: Any, said: str) -> str | None:
        try:
            return resolver.value(raw)
        except Unresolved as exc:
            if exc.imported:
                imported.extend(exc.imported)
            elif not exc.made:
                unresolved.append(f"{said}: {exc.why}")
            return None

    containers = []
    for container in properties.get("ContainerDefinitions") or []:
        name = value(container.get("Name", "?"), "the name of a container") or "?"
        secrets = []
        for secret in container.get("Secrets") or []:
            said = f"secret {secret.get('Name', '?')} of container {name}"
            resolved = value(secret.get("ValueFrom"), said)
            if resolved:
                secrets.append({"name": secret.get("Name", "?"), "valueFrom": resolved})
        files = []
        for file in container.get("EnvironmentFiles") or []:
            resolved = value(file.get("Value"), f"environment file of container {name}")
            if resolved:
                files.append({"value": resolved, "type": "s3"})
        logging = container.get("LogConfiguration") or {}
        options = {}
        for option in LOG_OPTIONS:
            if option in (logging.get("Options") or {}):
                resolved = value(logging["Options"][option], f"{option} of container {name}")
                if resolved:
                    options[option] = resolved
        log = {"logDriver": logging.get("LogDriver"), "options": options}
        containers.append({"name": name, "secrets": secrets, "environmentFiles": files, "logConfiguration": log})
    registration: dict[str, Any] = {"containerDefinitions": containers}
    for field, key, said in (
        ("executionRoleArn", "ExecutionRoleArn", "execution"),
        ("taskRoleArn", "TaskRoleArn", "task"),
    ):
        if properties.get(key):
            registration[field] = value(properties[key], f"the {said} role")
    return registration, unresolved, imported


class Problem(NamedTuple):
    """What a read found wrong with a reference: ``missing`` (else not checked), and why."""

    missing: bool
    why: str


NOT_THERE = Problem(missing=True, why="not found")
Answers = list[tuple[Reference, Problem | None]]  # each reference read, and its problem (None: it is there)


def check_revision(aws: AwsFactory, arn: str, definition: Mapping[str, Any]) -> Findings:
    """Whether what the registered revision ``arn`` (``definition``, as described) names exists, read at once from
    the revision's own region and account (:func:`of`, :func:`check`)."""
    parts = arn.split(":")
    return check(aws, *of(definition, region=parts[3], account=parts[4]))


def check(aws: AwsFactory, references: Iterable[Reference], elsewhere: Iterable[str] = ()) -> Findings:
    """Read whether each reference exists, all at once; ``elsewhere`` (from :func:`of`) is said as not checked."""
    references = list(references)
    reads: dict[int, Callable[[], Answers]] = {}
    parameters = [ref for ref in references if ref.kind == "ssm"]
    for start in range(0, len(parameters), SSM_BATCH):
        reads[len(reads)] = partial(_parameters, aws, parameters[start : start + SSM_BATCH])
    for ref in references:
        if ref.kind != "ssm":
            reads[len(reads)] = partial(_one, aws, ref)
    missing: list[tuple[Reference, str]] = []  # each with why
    unchecked: list[str] = list(elsewhere)
    for answers in at_once(reads).values():
        for ref, problem in answers:
            if problem is None:
                continue
            if problem.missing:
                missing.append((ref, problem.why))
            else:
                unchecked.append(f"{ref.said}: {problem.why}")
    said = tuple(f"{ref.said}: {why}" for ref, why in missing)
    return Findings(len(references), said, tuple(unchecked), tuple((ref.kind, ref.key) for ref, _ in missing))


def refuse_missing(found: Findings, service: str, base: str) -> None:
    """A UsageError naming what is missing, when something is: no task of the new revision of ``service``'s task
    definition (made from ``base``, as a step's detail names it) would start."""
    _refuse(
        found,
        f"the new revision of {service}'s task definition (from {base}) names what does not exist, so none of its "
        "tasks would start",
        "create what is missing (or, if it was renamed, change the Fargate stack to name the new one and deploy it: "
        "inv deploy.auto), then rerun",
    )


def refuse_missing_in(found: Findings, stack: str, rerun: str) -> None:
    """A UsageError naming what is missing, when something is: no task of the task definition ``stack`` would
    register would start (checked before its change set: nothing changed). ``rerun``: the command to run again, when
    it is not the one just run."""
    _refuse(
        found,
        f"{stack} would register a task definition that names what does not exist, so none of its tasks would start",
        f"create what is missing (or change {stack} to name what exists), then rerun" + (f": {rerun}" if rerun else ""),
    )


def refuse_missing_for_run(found: Findings, revision: str, stack: str) -> None:
    """A UsageError naming what is missing, when something is: a one-off task of ``revision`` (``inv run``) would
    not start (it is not started)."""
    _refuse(
        found,
        f"{revision}, which the task would run, names what does not exist, so it would not start",
        f"create what is missing (or change {stack} to name what exists and deploy it: inv deploy.auto), then rerun",
        nothing="Nothing was started",
    )


def _refuse(found: Findings, said: str, next_step: str, nothing: str = "Nothing was changed") -> None:
    if found.missing:
        raise UsageError(f"{said}: {'; '.join(found.missing)}. {nothing}", next_step=next_step)


def said_unchecked(found: Findings) -> str:
    """A short note for the step's detail: how many references were not checked, and the first reason."""
    if not found.unchecked:
        return ""
    more = f" (+{len(found.unchecked) - 1} more)" if len(found.unchecked) > 1 else ""
    return f"; not checked: {found.unchecked[0]}{more}"


def _problem(exc: Exception) -> Problem:
    """What a failed read says: the reference missing (not found), or not checked (denied, unreachable, other)."""
    if isinstance(exc, botocore.exceptions.ClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        if code in NOT_FOUND:
            return NOT_THERE
        if code in DENIED or code == "403":
            return Problem(missing=False, why="this caller may not read it")
        return Problem(missing=False, why=f"{code} {error.get('Message', '')}".rstrip())
    return Problem(missing=False, why=str(exc))


def _parameters(aws: AwsFactory, refs: list[Reference]) -> Answers:
    try:
        answer = aws.client("ssm").get_parameters(Names=[ref.key for ref in refs], WithDecryption=False)
    except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as exc:
        return [(ref, _problem(exc)) for ref in refs]
    invalid = set(answer.get("InvalidParameters") or [])
    return [(ref, NOT_THERE if ref.key in invalid else None) for ref in refs]


def _one(aws: AwsFactory, ref: Reference) -> Answers:
    try:
        if ref.kind == "secretsmanager":
            described = aws.client("secretsmanager").describe_secret(SecretId=ref.key)
            if described.get("DeletedDate"):
                return [(ref, Problem(missing=True, why="scheduled for deletion"))]
        elif ref.kind == "s3":
            bucket, key = ref.key.split("/", 1)
            aws.client("s3").head_object(Bucket=bucket, Key=key)
        elif ref.kind == "logs":
            groups = aws.client("logs").describe_log_groups(logGroupNamePrefix=ref.key).get("logGroups") or []
            if not any(group.get("logGroupName") == ref.key for group in groups):
                return [(ref, NOT_THERE)]
        elif ref.kind == "iam":
            aws.client("iam").get_role(RoleName=ref.key)
    except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as exc:
        return [(ref, _problem(exc))]
    return [(ref, None)]


def exports_of(template: Mapping[str, Any], resolver: Template) -> set[str]:
    """The names of the exports of ``template`` (its outputs' ``Export.Name``), each resolved by ``resolver``
    (:data:`ANY` for one that cannot be here)."""
    names: set[str] = set()
    for output in dict(template.get("Outputs") or {}).values():
        export = output.get("Export") if isinstance(output, Mapping) else None
        if isinstance(export, Mapping) and export.get("Name") is not None:
            names.add(_name_of(resolver, export["Name"]))
    return names


def imports_of(template: Mapping[str, Any], resolver: Template) -> set[str]:
    """The names of the exports ``template`` imports anywhere (``Fn::ImportValue``), those ``resolver`` resolves."""
    names: set[str] = set()

    def walk(value: Any) -> None:
        if isinstance(value, Mapping):
            if len(value) == 1 and "Fn::ImportValue" in value:
                name = _name_of(resolver, value["Fn::ImportValue"])
                if name != ANY:
                    names.add(name)
                return
            for item in value.values():
                walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)

    walk(template.get("Resources"))
    walk(template.get("Outputs"))
    return names


def _name_of(resolver: Template, raw: Any) -> str:
    """``raw`` resolved (:meth:`Template.value`); :data:`ANY` when it cannot be here, or is empty."""
    try:
        return resolver.value(raw) or ANY
    except Unresolved:
        return ANY


# What a stack's resources of each type may make that a task definition names (references.Reference.kind): the
# type, and the property that names it (None: any resource of the type could make any of that kind)
MAKES: dict[str, tuple[str, str | None]] = {
    "ssm": ("AWS::SSM::Parameter", "Name"),
    "secretsmanager": ("AWS::SecretsManager::Secret", "Name"),
    "logs": ("AWS::Logs::LogGroup", "LogGroupName"),
    "iam": ("AWS::IAM::Role", "RoleName"),
    "s3": ("AWS::S3::", None),  # a bucket, what a deployment into it writes
    # the alarms an alarm watch names (deploykit.watch.WatchAlarms), a stack of the team's may make
    "alarm": ("AWS::CloudWatch::Alarm", "AlarmName"),
    "composite_alarm": ("AWS::CloudWatch::CompositeAlarm", "AlarmName"),
}
ANY = "*"  # a name worked out as the stack deploys (one that cannot be here, or none: generated): it could be any


@dataclass(frozen=True)
class Earlier:
    """A stack a run deploys before another, as :func:`could_make` reads it: its template's ``body`` (None: it could
    not be read), its name and the parameter values it is ``given`` (its step's)."""

    body: str | None
    stack: str
    given: Mapping[str, str]


def earlier_stacks(before: Iterable[Step]) -> list[Earlier]:
    """The stacks among the steps of a run ``before`` (:meth:`deploykit.plan.Step.as_earlier`), as
    :func:`could_make` reads them."""
    return [made for step in before if (made := step.as_earlier()) is not None]


def could_make(earlier: Iterable[Earlier], *, region: str, account: str) -> Callable[[str, str], bool]:
    """Whether the stacks ``earlier``, deployed in ``region`` and ``account``, could make a reference of kind
    ``kind`` and key ``key`` (references.Reference; ``export``: an export's name): a resource of the type that makes
    that kind (:data:`MAKES`) with that name, or with a name worked out as it deploys (or none: generated); an output
    exporting that name, likewise; anything, where one has a custom resource or could not be read (None). A name
    made of the stack's parameters and pseudo parameters (``Fn::Sub``, ``Fn::Join``, ``Ref``) is worked out here as
    the stack check does (:class:`Template`). A secret is named by its ARN, whose name AWS ends with ``-`` and six
    characters; a parameter's ARN holds its name."""
    made_names: dict[str, set[str]] = {}
    exported: set[str] = set()
    for stack in earlier:
        try:
            template = json.loads(stack.body) if stack.body is not None else None
            resources = dict(template.get("Resources") or {}) if isinstance(template, Mapping) else None
            resolver = Template.of(template or {}, stack.given, stack=stack.stack, region=region, account=account)
            exported |= exports_of(template, resolver) if isinstance(template, Mapping) else set()
        except (ValueError, AttributeError, TypeError):
            resources = None
        if resources is None:
            return lambda _kind, _key: True
        for spec in resources.values():
            kind_type = str(spec.get("Type", "")) if isinstance(spec, Mapping) else ""
            if kind_type.startswith("Custom::") or kind_type == "AWS::CloudFormation::CustomResource":
                return lambda _kind, _key: True
            properties = spec.get("Properties") if isinstance(spec, Mapping) else None
            for kind, (prefix, name_property) in MAKES.items():
                if kind_type.startswith(prefix):
                    name = properties.get(name_property) if name_property and isinstance(properties, Mapping) else None
                    made_names.setdefault(kind, set()).add(_name_of(resolver, name))

    def made(kind: str, key: str) -> bool:
        if kind == "export":
            return key in exported or ANY in exported
        names = made_names.get(kind, set())
        return ANY in names or any(_names(kind, name, key) for name in names)

    return made


def _names(kind: str, name: str, key: str) -> bool:
    """Whether a resource of ``kind`` named ``name`` in a template is the one a task definition names by ``key``."""
    if kind == "ssm":  # by name or ARN (arn:aws:ssm:region:account:parameter/name); a leading / either way
        return (
            key.partition(":parameter")[2].lstrip("/") == name.lstrip("/")
            if key.startswith("arn:")
            else (key.lstrip("/") == name.lstrip("/"))
        )
    if kind == "secretsmanager":  # arn:aws:secretsmanager:region:account:secret:name-AbCdEf
        secret = key.partition(":secret:")[2]
        return secret == name or (secret.startswith(f"{name}-") and len(secret) == len(name) + 7)
    return key == name
