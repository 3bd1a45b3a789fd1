"""An export another stack still imports, which a stack's new template drops: kept for the deploy, where
CloudFormation refuses the update ("Export X cannot be deleted as it is in use by Y").

CDK adds an output exporting a value to a stack's template when another stack refers to one of its resources (a
cross-stack reference), and drops it from the template as soon as the other stack no longer does. A commit that
changes the exporting stack (a setting) and drops the other's use of its resource makes both templates new: the
exporting stack deploys first, as it must, and its update fails on the export the other stack, not deployed yet,
still imports. The CDK CLI fails the same way; its users call it the "deadly embrace", and the remedy it documents is
by hand (keep the export with ``exportValue``, deploy, remove it, deploy again).

Here the deploy does the first half itself: an export the live stack makes, that its new template drops and a live
stack imports (``ListImports``), is kept in the template it deploys, as the live template has it (its output, the
same value expression), when every resource and parameter that value names is still in the new template with the
same type. CloudFormation then works it out as before: the same value, the export unchanged (were the resource
replaced, its value would change, and CloudFormation refuses that as ever). The importing stack, deployed later in
the run, drops its import; the export stays, unused, until the exporting stack's next deploy, whose template does not
keep what nothing imports. An export whose resource the new template removes cannot be kept truthfully: the deploy is
refused before its change set, naming the importers and the two deploys that make the change. One whose output the
live template does not show, or whose output's key the new template uses for another, is left to CloudFormation, as
is everything when the imports cannot be read (ListImports denied).
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from deploykit.errors import UsageError
from deploykit.references import ANY, Template, exports_of
from deploykit.stacks import Change, deployed_template, error_code, is_missing_stack

NOT_IMPORTED = "is not imported by any stack"  # ListImports' ValidationError for an export nothing imports
SUB_NAME = re.compile(r"\$\{([^!}][^}]*)\}")  # a ${Name} or ${Resource.Attribute} of Fn::Sub (not ${!literal})


@dataclass(frozen=True)
class Kept:
    """An export the deploy keeps: its ``name``, the ``output`` of the live template that makes it, and the stacks
    that import it."""

    name: str
    output: str
    importers: tuple[str, ...]

    def said(self, verb: str = "kept") -> str:
        users = ", ".join(self.importers)
        return f"{verb} its export {self.name}, which {users} still import{'s' if len(self.importers) == 1 else ''}"


def importers_of(cfn: Any, export: str) -> tuple[str, ...]:
    """The stacks that import ``export`` (ListImports, every page); () when none does."""
    names: list[str] = []
    request: dict[str, str] = {"ExportName": export}
    while True:
        try:
            page = cfn.list_imports(**request)
        except ClientError as exc:
            if error_code(exc) == "ValidationError" and NOT_IMPORTED in str(exc):
                return ()
            raise
        names += [str(n) for n in page.get("Imports") or ()]
        if not page.get("NextToken"):
            return tuple(sorted(set(names)))
        request["NextToken"] = str(page["NextToken"])


def keep_imported(
    cfn: Any,
    stack: str,
    body: str,
    given: Mapping[str, str],
    *,
    region: str,
    account: str,
    described: Mapping[str, Any] | None = None,
    importing_before: Iterable[str] = (),
) -> tuple[str, tuple[Kept, ...]]:
    """Template ``body`` of ``stack`` as its deploy sends it (with its parameters ``given``): with each export the
    live stack makes, that ``body`` drops and another stack imports, kept (:mod:`deploykit.exports`); what was kept.
    ``body`` as it is when there is none (the reads: DescribeStacks unless ``described``, ListImports per dropped
    export, GetTemplate when one is imported). UsageError, before anything changes, for one that cannot be kept (its
    resource is gone from the new template), unless each of its importers is among ``importing_before`` (stacks a run
    deploys before this one, which may drop the import first: the deploy then checks again)."""
    try:
        template = json.loads(body)
    except ValueError:
        return body, ()
    if not isinstance(template, dict):
        return body, ()
    live = _live_exports(cfn, stack) if described is None else _exports_in(described)
    if not live:
        return body, ()
    wanted = exports_of(template, Template.of(template, given, stack=stack, region=region, account=account))
    if ANY in wanted:  # a name worked out as it deploys: what it drops is not known here
        return body, ()
    in_use = {name: users for name in sorted(set(live) - wanted) if (users := importers_of(cfn, name))}
    if not in_use:
        return body, ()
    before = deployed_template(cfn, stack) or {}
    held = dict(before.get("Outputs") or {})
    outputs = dict(template.get("Outputs") or {})
    kept: list[Kept] = []
    for name, users in in_use.items():
        key = live[name]
        output = held.get(key)
        if not isinstance(output, Mapping) or key in outputs:  # not read, or its key taken: left to CloudFormation
            continue
        gone = _gone(output, before, template)
        if not gone:
            outputs[key] = copy.deepcopy(dict(output))
            kept.append(Kept(name, key, users))
        elif not set(users) <= set(importing_before):
            raise _refusal(stack, name, users, gone)
    if not kept:
        return body, ()
    template["Outputs"] = outputs
    return json.dumps(template, indent=1), tuple(kept)


def refuse_replacing_imported(cfn: Any, stack: str, changes: Iterable[Change], rerun: str) -> None:
    """UsageError, before a change set of ``stack`` is executed, when it replaces a resource (Replacement True) whose
    value an export of the stack carries and another stack imports: CloudFormation would make the new resource, then
    refuse to change an export in use ("Export X cannot be updated as it is in use by Y") and roll the update back
    (the new resource made, then deleted again). Reads only for a change set that replaces something:
    DescribeStacks, GetTemplate, ListImports per export that names a replaced resource."""
    replaced = {c.logical_id for c in changes if c.action == "Modify" and c.replacement == "True"}
    if not replaced:
        return
    live = _live_exports(cfn, stack)
    if not live:
        return
    held = dict((deployed_template(cfn, stack) or {}).get("Outputs") or {})
    for name, key in sorted(live.items()):
        output = held.get(key)
        hit = sorted(_named(output.get("Value")) & replaced) if isinstance(output, Mapping) else []
        if hit and (users := importers_of(cfn, name)):
            named = ", ".join(users)
            raise UsageError(
                f"{stack}'s change set replaces {', '.join(hit)}, whose new value its export {name} would carry, "
                f"which {named} import{'s' if len(users) == 1 else ''}: CloudFormation would make the new resource, "
                "then refuse to change an export in use and roll the update back. The change set was deleted; "
                "nothing was changed",
                next_step="change it so that the resource is updated in place (the ↳ lines above say what replaces "
                f"it), or deploy in two steps: first {named} without the import (a commit that drops its use, "
                f"deployed), then this change again ({rerun})",
            )


def imported_from(cfn: Any, stack: str) -> dict[str, tuple[str, ...]]:
    """Each export of ``stack`` as it is that a stack imports → those stacks (DescribeStacks, then ListImports of
    each export); {} when none is imported, or the stack does not exist."""
    found = {export: importers_of(cfn, export) for export in _live_exports(cfn, stack)}
    return {export: users for export, users in found.items() if users}


def _live_exports(cfn: Any, stack: str) -> dict[str, str]:
    """Export name → the output that makes it, of ``stack`` as it is (DescribeStacks); {} when it does not exist."""
    try:
        [described] = cfn.describe_stacks(StackName=stack)["Stacks"]
    except ClientError as exc:
        if is_missing_stack(exc):
            return {}
        raise
    return _exports_in(described)


def _exports_in(described: Mapping[str, Any]) -> dict[str, str]:
    return {
        str(o["ExportName"]): str(o["OutputKey"])
        for o in described.get("Outputs") or ()
        if isinstance(o, Mapping) and o.get("ExportName") and o.get("OutputKey")
    }


def _gone(output: Mapping[str, Any], before: Mapping[str, Any], after: Mapping[str, Any]) -> list[str]:
    """What ``output`` of template ``before`` names that template ``after`` lacks (a resource, or one of another
    type; a parameter; a condition or a mapping not the same): it cannot be kept there as it is. [] when nothing."""
    resources, parameters = dict(before.get("Resources") or {}), dict(after.get("Parameters") or {})
    now = dict(after.get("Resources") or {})
    gone: list[str] = []
    for name in sorted(_named(output)):
        if name.startswith("AWS::") or name in parameters:
            continue
        was, is_ = resources.get(name), now.get(name)
        same_type = isinstance(was, Mapping) and isinstance(is_, Mapping) and was.get("Type") == is_.get("Type")
        if not same_type:
            gone.append(name)
    for section, names in (("Conditions", _conditions(output)), ("Mappings", _mappings(output))):
        gone += [n for n in sorted(names) if (before.get(section) or {}).get(n) != (after.get(section) or {}).get(n)]
    return gone


def _found(value: Any, pick: Callable[[str, Any], set[str] | None]) -> set[str]:
    """What ``pick`` finds in ``value``, given each key of it with its item, at any depth (None: nothing there
    itself, the item is looked into)."""
    found: set[str] = set()
    if isinstance(value, Mapping):
        for key, item in value.items():
            picked = pick(key, item)
            found |= _found(item, pick) if picked is None else picked
    elif isinstance(value, list):
        for item in value:
            found |= _found(item, pick)
    return found


def _named(value: Any) -> set[str]:
    """The logical ids and parameters ``value`` refers to (Ref, Fn::GetAtt, Fn::Sub's ${...})."""

    def pick(key: str, item: Any) -> set[str] | None:
        if key == "Ref" and isinstance(item, str):
            return {item}
        if key == "Fn::GetAtt":
            target = item[0] if isinstance(item, list) and item else item
            return {target.split(".")[0]} if isinstance(target, str) else set()
        if key == "Fn::Sub":
            text, local = (item[0], item[1]) if isinstance(item, list) and len(item) == 2 else (item, {})
            names = {n.split(".")[0] for n in SUB_NAME.findall(text)} if isinstance(text, str) else set()
            return (names - set(dict(local or {}))) | _found(local, pick)
        return None

    return _found(value, pick)


def _conditions(value: Any) -> set[str]:
    """The conditions ``value`` names (its own Condition, Fn::If's)."""

    def pick(key: str, item: Any) -> set[str] | None:
        if key == "Condition" and isinstance(item, str):
            return {item}
        if key == "Fn::If" and isinstance(item, list) and item and isinstance(item[0], str):
            return {item[0]} | _found(item[1:], pick)
        return None

    return _found(value, pick)


def _mappings(value: Any) -> set[str]:
    """The mappings ``value`` reads (Fn::FindInMap)."""

    def pick(key: str, item: Any) -> set[str] | None:
        if key == "Fn::FindInMap" and isinstance(item, list) and item and isinstance(item[0], str):
            return {item[0]} | _found(item, pick)
        return None

    return _found(value, pick)


def _refusal(stack: str, export: str, users: tuple[str, ...], gone: list[str]) -> UsageError:
    first = users[0]
    named = ", ".join(users)
    return UsageError(
        f"{stack}'s new template drops its export {export}, which {named} still "
        f"import{'s' if len(users) == 1 else ''}, and what it names with it ({', '.join(gone)}): CloudFormation "
        "would refuse the update (an export in use cannot be deleted), and keeping the export would point "
        f"{named} at what the update deletes",
        next_step=f"deploy it in two steps: first {named} without the import (inv deploy.stack {first}, when its new "
        f"template needs nothing new of {stack}; otherwise a commit that only drops its use, deployed), then this "
        "one again; nothing was changed",
    )
