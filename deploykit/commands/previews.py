"""What a stack's change set would change, shown before it is executed (deploy.stack, deploy.auto, inv diff)."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from deploykit import (
    exports,
    health,
    markdown,
    synth,
)
from deploykit.aws import AwsFactory, at_once
from deploykit.commands.core import Runtime, aws_errors, load_plugins
from deploykit.config import Config, EnvConfig
from deploykit.errors import StepFailed, UsageError
from deploykit.plugins import Plugins, review_stack_changes
from deploykit.references import Findings
from deploykit.stack_chain import held_parameters, notification_arns, template_references, template_url
from deploykit.stacks import (
    NO_DRIFT,
    Change,
    NoPreview,
    StackDeployer,
    access_note,
    changes_table,
    dangerous_changes,
    drift_summary,
    given_parameters,
    topic_names,
    topics_of,
)


@dataclass(frozen=True)
class Preview:
    """A stack's preview: as ``inv diff --json`` lists it, and as ``--markdown`` shows it."""

    json: dict[str, Any]
    section: markdown.StackSection


def _previewer(runtime: Runtime, aws: AwsFactory, env: EnvConfig) -> StackDeployer:
    """A StackDeployer that only previews: it says nothing while it waits for a change set."""
    return StackDeployer(
        aws.client("cloudformation"),
        runtime.clock,
        say=lambda _t: None,
        poll=env.poll_seconds,
        timeout=env.wait_timeout,
        env=env.name,
        role_arn=env.cloudformation_role_arn,
    )


def preview_stack(
    runtime: Runtime,
    config: Config,
    aws: AwsFactory,
    env: EnvConfig,
    name: str,
    template: Path,
    parameters: dict[str, str],
    *,
    rerun: str | None = None,
) -> dict[str, Any]:
    """Print what a deploy of ``template`` with ``parameters`` would change in stack ``name`` (a change set made and
    deleted, never executed); the same as JSON. ``rerun``: the command that deploys it, when not deploy.stack."""
    with aws_errors(env):
        found = stack_previewed(runtime, aws, env, name, template, parameters)
    return show_preview(runtime, env, name, *found, rerun=rerun, plugins=load_plugins(runtime, config)).json


@dataclass(frozen=True)
class Exported:
    """What a deploy of a stack does about its exports that other stacks import: those it keeps
    (:func:`deploykit.exports.keep_imported`), and its refusal of a change set replacing what one carries
    (:func:`deploykit.exports.refuse_replacing_imported`; "": none)."""

    kept: tuple[exports.Kept, ...] = ()
    refused: str = ""


# its changes, the stack as it is, what its task definitions name, (no resource changing) its outputs' changes, what
# a deploy does about the exports other stacks import, and the SNS topics its events would go to ("": as they do)
Previewed = tuple[
    list[Change] | NoPreview | None, dict[str, Any] | None, Findings | None, tuple[str, ...], Exported, str
]


def stack_previewed(
    runtime: Runtime,
    aws: AwsFactory,
    env: EnvConfig,
    name: str,
    template: Path,
    parameters: dict[str, str],
    *,
    as_given: bool = False,
    drift: bool = False,
) -> Previewed:
    """The changes a deploy of ``template`` would make in stack ``name`` (:meth:`StackDeployer.preview`), the stack
    as it is, and whether what its task definitions name exists (:func:`template_references`, read beside the change
    set; None: no task definition), which a deploy checks first. ``as_given``: each of ``parameters`` the stack has
    keeps its value (the template alone). The template is previewed as a deploy sends it: with the exports it drops
    that other stacks still import kept (:func:`deploykit.exports.keep_imported`); one that cannot be kept is no
    preview (a deploy refuses it). The SNS topics its events would go to (:func:`topics_changed`) are read apart:
    a change set that changes them alone changes no resource. ``drift``: a drift-aware change set (what was changed
    outside CloudFormation is among the changes: inv diff --drift)."""
    template = synth.stack_template(template, name)  # the file the assembly's manifest names for it
    body = synth.template_body(template)
    parameters = held_parameters(json.loads(body), parameters)  # each function's code offered: those it holds
    deployer = _previewer(runtime, aws, env)
    stack = deployer.describe(name)  # its status, printed; and what the preview needs to know first
    if as_given:
        given = given_parameters(stack)
        parameters = {key: given.get(key, value) for key, value in parameters.items()}
    kept: tuple[exports.Kept, ...] = ()
    if stack:
        try:
            body, kept = exports.keep_imported(
                aws.client("cloudformation"),
                name,
                body,
                parameters,
                region=env.region,
                account=aws.account(),
                described=stack,
            )
        except (ClientError, BotoCoreError):  # not read: previewed as the template has it, as a deploy sends it
            pass
        except UsageError as exc:
            refused = NoPreview(str(stack.get("StackStatus")), f"{exc.message} (a deploy of it is refused)")
            return refused, stack, None, (), Exported(), ""
    reads: dict[str, Callable[[], Any]] = {
        "changes": lambda: deployer.preview(
            name,
            body,
            parameters,
            template_url=partial(template_url, aws, env, name, body),
            stack=stack,
            revert_drift=drift,
        ),
        "references": partial(template_references, aws, env, name, body, parameters),
    }
    found = at_once(reads)
    outputs = outputs_changed(body, stack) if found["changes"] == [] and stack else ()
    replacing = ""
    if isinstance(found["changes"], list):
        try:
            exports.refuse_replacing_imported(aws.client("cloudformation"), name, found["changes"], "")
        except (ClientError, BotoCoreError):  # not read: left to the deploy
            pass
        except UsageError as exc:
            replacing = exc.message.removesuffix(". The change set was deleted; nothing was changed")
    topics = topics_changed(env, template, name, stack) if stack else ""
    return found["changes"], stack, found["references"], outputs, Exported(kept, replacing), topics


def topics_changed(env: EnvConfig, template: Path, name: str, stack: Mapping[str, Any]) -> str:
    """The SNS topics a deploy of ``template`` would make stack ``name`` send its events to, by name (deploy.toml's
    and its app's: :func:`deploykit.stack_chain.notification_arns`), when they differ from ``stack``'s; "" when they
    do not, or neither names any (the stack keeps its own). A template with no manifest beside it is judged by
    deploy.toml's alone (the deploy reads the manifest, and says what it lacks)."""
    try:
        app = synth.manifest_stack(template.parent, name)
    except StepFailed:
        app = None
    wanted = notification_arns(env, app.notifications if app else None)
    if wanted is None or set(wanted) == set(topics_of(stack)):
        return ""
    return topic_names(wanted)


def outputs_changed(body: str, stack: Mapping[str, Any]) -> tuple[str, ...]:
    """What a deploy of template ``body`` changes of ``stack``'s outputs, by their keys (``+ KEY``: added, ``- KEY``:
    removed; an export's name with it), when its change set changes no resource: CloudFormation updates a stack for
    its outputs alone (a stack whose resource another stack now refers to: CDK's export), though its change set
    lists none."""
    try:
        template = json.loads(body)
        wanted = dict(template.get("Outputs") or {})
    except (ValueError, AttributeError, TypeError):
        return ()
    held = {str(o.get("OutputKey")): o for o in stack.get("Outputs") or [] if isinstance(o, Mapping)}

    def exported(output: Any) -> str:
        export = output.get("Export") if isinstance(output, Mapping) else None
        name = export.get("Name") if isinstance(export, Mapping) else None
        return f" (export {name})" if isinstance(name, str) else ""

    added = [f"+ {key}{exported(output)}" for key, output in sorted(wanted.items()) if key not in held]
    removed = [
        f"- {key}" + (f" (export {output['ExportName']})" if output.get("ExportName") else "")
        for key, output in sorted(held.items())
        if key not in wanted
    ]
    return (*added, *removed)


def show_preview(
    runtime: Runtime,
    env: EnvConfig,
    name: str,
    found: list[Change] | NoPreview | None,
    stack: Mapping[str, Any] | None,
    named: Findings | None = None,
    outputs: tuple[str, ...] = (),
    exported: Exported = Exported(),
    topics: str = "",
    *,
    rerun: str | None = None,
    changed: bool = True,
    plugins: Plugins | None = None,
    made_before: Callable[[str, str], bool] | None = None,
    drift: bool = False,
) -> Preview:
    """Print a stack's preview (:func:`stack_previewed`: its changes, the stack, what its task definitions name); the
    same as JSON. ``outputs``: its outputs' changes when no resource changes (:func:`outputs_changed`). ``changed``:
    whether the analysis counts the stack changed (an empty preview then says the change is in code the template does
    not see). ``plugins``: the team's, whose review of the changes is said under them (what a deploy of them would
    refuse), as what the task definitions name that does not exist is. ``exported``: what a deploy does about the
    exports other stacks import (:class:`Exported`). ``topics``: the SNS topics its events would go to
    (:func:`topics_changed`; "": as they do). ``made_before``: what the stacks a deploy.auto deploys before this one
    could make (:func:`deploykit.references.could_make`); what is missing and one of them could make is said apart,
    as not there yet (the deploy checks it once they are deployed), not as refused. ``drift``: its change set was
    drift-aware (:func:`stack_previewed`): what it found changed outside CloudFormation is said under the changes."""
    status = str(stack.get("StackStatus")) if stack else "not deployed"
    # its health, as inv health judges its status: a last update rolled back, a stack busy or stuck, and what a deploy
    # of it does first (waits, continues the rollback, creates it again)
    finding = health.stack_finding(name, status, env.name) if stack else None
    lines = (
        [f"  {'❌' if finding.severity == 'broken' else '⚠️ '} {finding.what} → {finding.next_step}"] if finding else []
    )
    blocked = found if isinstance(found, NoPreview) else None
    imported = blocked.export if blocked else ""  # what its template imports that no stack exports (yet)
    exported_before = bool(imported) and made_before is not None and made_before("export", imported)
    if imported:
        lines.append(
            f"  no preview yet: it imports {imported}, which a stack deployed before it in the same run exports "
            "(CloudFormation makes its change set once that stack is deployed)"
            if exported_before
            else f"  ⛔ no preview: it imports {imported}, which no stack exports (a deploy of it is refused)"
        )
        found = None
    elif isinstance(found, NoPreview):
        now = f" (it is {found.status} now)" if found.status != status else ""  # it started since it was read
        lines.append(f"  no preview{now}: {found.reason}")
        found = None
    elif found is None:
        lines.append("  would be created")
    elif not found and outputs:
        lines.append(f"  only its outputs change (no resource does): {'; '.join(outputs)}")
    elif not found and topics:
        lines.append(f"  no resource changes; its events would go to {topics} (a setting of the stack)")
    elif not found and drift:
        lines.append(f"  nothing to change, and {NO_DRIFT}")
    elif not found and not changed:
        lines.append("  nothing to change")
    elif not found:
        lines.append(
            "  no CloudFormation change: the stack holds this template already (the change is in code the template "
            "does not see, or a run that failed after its change set went through left it there)"
        )
    else:
        lines.append(changes_table(found))
        if drift:  # and what puts it back, when there is any
            drifted = any(c.drifted for c in found)
            command = f" (inv deploy.stack {name} --env {env.name} --revert-drift)" if drifted else ""
            lines.append(f"  {drift_summary(found)}{command}")
        if env.protected and any(c.changes_access for c in found):
            lines.append(access_note(name, env.name, rerun))
    if topics and (found or outputs):  # else said above, or no preview
        lines.append(f"  its events would go to {topics} (a setting of the stack)")
    lines += [
        f"  {export.said('keeps')}: CloudFormation refuses to delete an export in use (the stack's next deploy drops "
        "it once nothing imports it)"
        for export in exported.kept
    ]
    if exported.refused:
        lines.append(f"⛔ {exported.refused} (a deploy of it is refused)")
    changes = None if found is None else [c.to_json() for c in found]
    refused = review_stack_changes(plugins, env, name, changes) if changes else {}
    lines += [
        f"⛔ plugin {plugin!r} refuses this change: {'; '.join(reasons)} (a deploy of it is refused)"
        for plugin, reasons in sorted(refused.items())
    ]
    missing = list(named.missing) if named else []
    not_yet: list[str] = []
    if named is not None and made_before is not None:
        missing = list(named.keeping(lambda kind, key: not made_before(kind, key)).missing)
        not_yet = list(named.keeping(made_before).missing)
    if missing:
        lines.append(
            "⛔ its task definition names what does not exist, so none of its tasks would start (a deploy of it is "
            f"refused): {'; '.join(missing)}"
        )
    if not_yet:
        lines.append(
            "⚠️  its task definition names what does not exist yet, which a stack deployed before it in the same run "
            f"could make (a deploy checks it once they are deployed): {'; '.join(not_yet)}"
        )
    runtime.stderr.write(f"\n🐳 {name} ({status})\n" + "\n".join(lines) + "\n")
    # what a reviewer must not miss (--markdown lists it above the tables): what a deploy refuses or asks approval for
    attention = [
        f"{name}: {c.logical_id} ({c.resource_type}) holds data and would be "
        f"{'removed' if c.action == 'Remove' else 'replaced'}: a deploy refuses it without --allow-replace"
        for c in dangerous_changes(found or ())
    ]
    approval = ": a deploy to this protected environment needs --approve-access" if env.protected else ""
    attention += [
        f"{name}: {c.logical_id} ({c.resource_type}) changes who may access what{approval}"
        for c in found or ()
        if c.changes_access
    ]
    attention += [f"{name}: plugin {p!r} refuses this change: {'; '.join(r)}" for p, r in sorted(refused.items())]
    attention += [f"{name}: its task definition names what does not exist: {m} (a deploy refuses it)" for m in missing]
    attention += [
        f"{name}: its task definition names what does not exist yet: {m} (a stack deployed before it must make it)"
        for m in not_yet
    ]
    if imported and not exported_before:
        attention.append(f"{name}: it imports {imported}, which no stack exports: a deploy of it is refused")
    if exported.refused:
        attention.append(f"{exported.refused}: a deploy of it is refused")
    attention += [finding.what] if finding else []
    return Preview(
        {
            "status": status,
            "health": finding.to_json() if finding else None,
            "changes": changes,
            "no_preview": blocked.reason if blocked else None,
            "outputs": list(outputs),  # no resource changing: what changes of its outputs (+ KEY, - KEY)
            "topics": topics or None,  # the SNS topics its events would go to, when that changes
            "kept_exports": [export.name for export in exported.kept],  # exports it drops that a deploy keeps
            "export_in_use": exported.refused or None,  # a replacement a deploy refuses: an imported export carries it
            "refused": refused,
            "missing": missing,  # what its task definitions name that does not exist: a deploy refuses it
            # what does not exist yet, which a stack deployed before it in the run could make: checked then
            "missing_yet": not_yet,
        },
        markdown.StackSection(
            name,
            status,
            "\n".join(lines),
            None if found is None else len(found),
            attention=tuple(attention),
            no_preview=blocked is not None,
        ),
    )
