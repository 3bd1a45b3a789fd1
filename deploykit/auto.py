"""``inv deploy.auto`` and ``inv diff``: what is live per component, what changed since, and the one plan
that deploys exactly that.

What is live is read from the environment: the app from the image tag of the service's running task
definition, each Lambda from the description of the version behind its ``live`` alias, each stack from the
live record the history keeps (see :mod:`deploykit.history`), which also backs the other two when their own
place says nothing. The plan: stacks first in dependency order (the image build and the Lambda uploads in
parallel with the first ones), then the Lambda fast path for changed functions the stack holding them did not
already deploy, then the app chain, smoke once at the end.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from deploykit import changes, ecs, lambda_chain, packaging, planner, references, synth
from deploykit.app_chain import PromoteImage, PushImage, RegisterTaskDef, RollService, WaitHealthy
from deploykit.aws import AwsFactory, Once, at_once
from deploykit.canary import takes_it_back
from deploykit.config import SIZE_KEYS, Config, EnvConfig
from deploykit.endpoints import Endpoints, function_id
from deploykit.errors import DeployKitError, UsageError
from deploykit.git import DIRTY, SHORT_SHA, Revision, commits_ahead, is_shallow
from deploykit.history import History, LiveRecordUnreadable, Record, step_name, when_utc
from deploykit.plan import Parallel, Plan, Step, group_heading, is_group, nested_name, walk
from deploykit.plan import Sequence as StepSequence
from deploykit.release import PENDING_TAG, SKIP_ENV
from deploykit.release import pending as release_pending
from deploykit.release import skipped_by_hand as release_skipped_by_hand
from deploykit.smoke import Smoke
from deploykit.stack_chain import ARTIFACTS_OUTPUT, DeployStack, Synthesize, UploadLambdaCode
from deploykit.stacks import StackOutputs, deployed_template, template_fingerprint
from deploykit.watch import alarm_watch, allowed

NEWEST_RUNS = 30  # the runs read to decide: the estimates, and what a rollback took off (older ones when needed)
QUIET_SHOWN = 4  # paths that deploy nothing, named before "and N more"
AGAIN = ": deployed again, as this checkout has it"  # how a note on what runs unverified ends (deploy.auto's answer)
PACKAGES_SHOWN = 6  # the packages a requirements file's change changes, named under it at most
COMMITS_SHOWN = 10  # the commits behind the changes, named before "and N more"
KIND_ICONS = {"app": "📱 App code:", "lambda": "🔧 Lambda:  ", "stack": "🐳 Stack:   ", "none": "📄 No deploy:"}


def live_components(
    aws: AwsFactory,
    config: Config,
    env: EnvConfig,
    endpoints: Endpoints | None,
    unverified: dict[str, str] | None = None,
    entries: dict[str, dict[str, str]] | None = None,
    drifted: dict[str, str] | None = None,
    handlers: dict[str, str] | None = None,
) -> dict[str, str | None]:
    """component → the SHA (image-tag form) live for it in ``env``; None when it is not deployed (or unknown).
    ``unverified`` (when given) gets component → why, for a component that runs something else than what the last
    successful deploy verified (the app: its service's image), which deploy.auto deploys again whatever changed.
    ``entries`` (when given) gets the live record's entries (component → {sha, when, record, ...}). ``drifted``
    (when given) gets lambda:<fn> → what says it, for a function whose alias serves settings other than the template
    of the stack holding it gives it (:func:`deploykit.lambda_chain.settings_drift`; the templates read with the
    rest), which deploying does not put back; and app → why, for a service whose image's release command has not
    passed while ``$DEPLOYKIT_SKIP_RELEASE=1`` is set (deploying again would only skip it again). ``handlers`` (when
    given) gets function → the Handler of the version its alias serves, for the check that its new zip would import.

    The live record, the service's image and each function's version are read at once (:func:`at_once`). Without
    ``endpoints`` (some stack is not deployed, e.g. after ``inv destroy``) the stacks that are still answer from
    the outputs already read, and what the missing ones hold is None."""
    components = changes.components_of(config)
    bucket: str | None
    if endpoints is not None:
        stacks, bucket, functions = endpoints.outputs, endpoints.artifacts_bucket, endpoints.functions
        hosts = {fn: endpoints.hosts.get(fn, env.stacks.api) for fn in functions}
        has_service = True
    else:
        outputs = StackOutputs.of(aws)  # read by the caller when it resolved the endpoints: answered from memory
        stacks = {name: answer for name in planner.stack_roles(env).values() if (answer := outputs(name)) is not None}
        bucket = stacks.get(env.stacks.registry, {}).get(ARTIFACTS_OUTPUT)
        functions = lambda_chain.deployed_functions(outputs, env, required=False)  # {}: no stack holds one
        names = env.stacks.roles()
        hosts = {fn: names[role] for fn, role in lambda_chain.function_hosts(outputs, env).items()}
        has_service = env.stacks.fargate in stacks
    found = History(aws, env, bucket) if bucket else None
    # the app's read waits for it: both start at once
    live_record: Once[dict[str, dict[str, str]]] = Once(found.live if found else dict)
    pending: dict[str, str] = {}  # the app's image whose release command has not passed (deploykit.release)
    reads: dict[str, Callable[[], Any]] = {"record": live_record}
    for component in components:
        kind, _, name = component.partition(":")
        function_name = functions.get(name) if kind == "lambda" else None
        if kind == "app" and has_service:
            known = partial(_recorded_revision, live_record)
            reads[component] = partial(_live_image_tag, aws, env, completed=True, known=known, pending=pending)
        elif function_name:
            reads[component] = partial(lambda_chain.live_configuration, aws.client("lambda"), function_name)
            if unverified is not None:  # its routing: a canary cut short sends a share to a version never verified
                reads[f"{component}@alias"] = partial(lambda_chain.alias_if_there, aws.client("lambda"), function_name)
    if drifted is not None:  # what each function's settings should be: the template of the stack holding it
        for stack in sorted(set(hosts.values())):
            reads[f"template:{stack}"] = partial(deployed_template, aws.client("cloudformation"), stack)
    read = at_once(reads)
    kept: dict[str, dict[str, str]] = read.pop("record")
    templates = {stack: read.pop(f"template:{stack}", None) for stack in set(hosts.values())}
    if entries is not None:
        entries.update(kept)
    record = {c: v.get("sha") for c, v in kept.items()}
    live: dict[str, str | None] = {}
    for component in components:
        kind, _, name = component.partition(":")
        if kind == "app":
            # the running image, unless the live record (what a deploy verified, smoke included) says another:
            # then that deploy did not finish — interrupted, or the service changed by other means — and the
            # app counts from what was last verified, so deploy.auto waits for it and smokes it (not read: no
            # Fargate stack, no app)
            image, verified = read.get(component), record.get(component)
            if component not in read:
                live[component] = None
            else:
                live[component] = verified if verified and image and verified != image else (image or verified)
            if unverified is not None and verified and image and verified != image:
                unverified[component] = (
                    f"{env.service} runs {image}, not {verified} (what the last successful deploy left and smoked)"
                    + AGAIN
                )
            elif pending and config.release.on:  # its command to run (none: no tag to mind)
                waiting = pending["tag"]
                note = f"{env.service} runs {waiting}, whose release command has not passed ({PENDING_TAG}={waiting})"
                if drifted is not None and release_skipped_by_hand():  # deployed again only to skip it again
                    drifted[component] = f"{note}; ${SKIP_ENV}=1 skips it, so the app is not deployed again for it"
                elif unverified is not None:  # (inv health, which collects no drift, says it whatever the variable)
                    unverified[component] = note + AGAIN
        elif kind == "lambda":
            serving, recorded = read.get(component), record.get(component)
            if handlers is not None and serving and serving.get("Handler"):
                handlers[name] = serving["Handler"]
            described = lambda_chain.git_sha_of(serving.get("Description")) if serving else None
            if component not in read:
                live[component] = None
            elif described and recorded and DIRTY in described and DIRTY not in recorded:
                # a dirty build's version, whose code the recorded commit holds too (a deploy from that commit found
                # the version in place: a version keeps the description it was published with): live at that commit
                at = lambda_chain.code_known_at(config.root, name, recorded, **config.lambda_target(env))
                same = serving is not None and at is not None and at[1] == serving.get("CodeSha256")
                live[component] = recorded if same else described
            else:
                live[component] = described or recorded
            # the version the last successful deploy left the alias on (and smoked), when its record says: another
            # one serving was never verified (moved by a run that failed, kept with --no-rollback, or interrupted)
            left = kept.get(component, {}).get("version")
            version = str(serving.get("Version", "")) if serving else ""
            routed = lambda_chain.routed_versions(read.get(f"{component}@alias"))
            # the most telling reason first: a version deploykit did not publish, then one it did that the record
            # did not verify, then a canary cut short
            why = None
            if unverified is not None and serving and recorded:
                why = _lambda_changed_outside(config, env, name, functions[name], serving, recorded)
            # a version the fast path published (its description names a commit): CloudFormation's own, published when
            # a stack deploy changes the function (its configuration), moves the alias without a move-alias step,
            # leaving the record's version behind, and names no commit
            if recorded and left and version and version != left and described:
                live[component] = recorded  # what was verified: deploy.auto deploys again (and smokes) what serves
                why = why or (
                    f"{functions[name]}'s alias {lambda_chain.ALIAS} serves version {version}, not version {left} "
                    "(what the last successful deploy left and smoked)" + AGAIN
                )
            if routed and not why:
                why = (
                    f"{functions[name]}'s alias {lambda_chain.ALIAS} sends {lambda_chain.routing_shares(routed)} "
                    f"beside version {version} ({lambda_chain.shift_cause(routed)})" + AGAIN
                )
            if why and unverified is not None:
                unverified[component] = why
            if drifted is not None and serving and name in hosts:
                host = hosts[name]
                drift = lambda_chain.settings_drift(templates.get(host), name, serving, host)
                if drift:  # $LATEST read only then: whether the next deploy of it serves the stack's settings again
                    latest = lambda_chain.live_configuration(aws.client("lambda"), functions[name], "$LATEST")
                    drift = lambda_chain.settings_drift(templates.get(host), name, serving, host, latest)
                if drift:
                    drifted[component] = drift
        else:
            stack = env.stacks.roles()[name]
            live[component] = record.get(component) if stack in stacks else None
    if unverified is not None:
        names = env.stacks.roles()
        roles = {names[c.partition(":")[2]]: c for c in components if c.startswith("stack:")}
        unverified |= _stacks_changed_outside(aws, {roles[s]: s for s in stacks if s in roles}, kept)
    return live


def _lambda_changed_outside(
    config: Config, env: EnvConfig, function: str, function_name: str, serving: Mapping[str, Any], recorded: str
) -> str | None:
    """Why the version behind ``function``'s alias is not what deploykit deployed, when it is not: it runs another
    zip than its description names, or its description names none (a person published it) and its code is not
    ``function`` as at ``recorded`` (the live record's commit, packaged again: packaging is reproducible)."""
    version, code = serving.get("Version", "?"), str(serving.get("CodeSha256", ""))
    named = lambda_chain.runs_named_code(serving)
    if named is False:
        return (
            f"{function_name}'s alias {lambda_chain.ALIAS} serves version {version}, whose code {code[:12]} is not the "
            f"zip its description names (changed outside deploykit){AGAIN}"
        )
    if named is None and DIRTY not in recorded:
        # None: not to be told here (a shallow clone)
        at = lambda_chain.code_known_at(config.root, function, recorded, **config.lambda_target(env))
        if at is not None and at[1] != code:
            return (
                f"{function_name}'s alias {lambda_chain.ALIAS} serves version {version}, which deploykit did not "
                f"publish (changed outside deploykit): its code {code[:12]} is not {function} as at {recorded}" + AGAIN
            )
    return None


def _stacks_changed_outside(
    aws: AwsFactory, stacks: Mapping[str, str], entries: Mapping[str, Mapping[str, str]]
) -> dict[str, str]:
    """component → why, for each of ``stacks`` (component → stack name) that something else than deploykit changed
    since deploykit deployed it: CloudFormation changed it later than that deploy left it (by CloudFormation's own
    clock, :func:`deploykit.stacks.updated_of`; the live record's ``entries`` keep what each deploy left), and to
    another template. Only a stack changed since is read (its template: one GetTemplate)."""
    kept = {c: s for c, s in stacks.items() if entries.get(c, {}).get("updated") and entries[c].get("template")}
    if not kept:  # deployed before the live record kept what a deploy left
        return {}
    outputs = StackOutputs.of(aws)
    changed = {c: s for c, s in kept.items() if outputs.updated(s) not in ("", entries[c]["updated"])}
    if not changed:
        return {}
    cfn = aws.client("cloudformation")
    templates = at_once({c: partial(cfn.get_template, StackName=stack) for c, stack in changed.items()})
    why: dict[str, str] = {}
    for component, stack in changed.items():
        if template_fingerprint(templates[component].get("TemplateBody") or "") != entries[component]["template"]:
            why[component] = (
                f"{stack} was changed outside deploykit: CloudFormation updated it at "
                f"{when_utc(outputs.updated(stack))}, to a template deploykit did not deploy{AGAIN}"
            )
    return why


def exporters_needed(
    config: Config, env: EnvConfig, aws: AwsFactory, found: changes.ChangeSet, synthesize: Callable[[], object]
) -> dict[str, str]:
    """The stacks a run of ``found``'s changed stacks needs deployed before them though no path of theirs changed
    (``stack:<role>`` → why, for :func:`deploykit.changes.with_notes`). A stack that refers anew to another stack's
    resource (CDK's cross-stack reference) changes that stack's template too: CDK adds an output exporting the value,
    which the referring stack imports (``Fn::ImportValue``). Deployed alone, the referring stack fails
    (CloudFormation: "No export named ... found"); the exporting stack, deployed first, makes the export, as the CDK
    CLI deploys a stack's dependencies first.

    Looked for only when a changed stack depends on one that did not change (:func:`planner.stack_dependencies`):
    the CDK app is synthesized (``synthesize``: the plan's synthesis, which then finds it done; one that fails is
    left to it), and the region's exports are read (ListExports, once per command) when a template it synthesized
    exports what a changed one imports."""
    changed = {c.partition(":")[2] for c in found.components() if c.startswith("stack:")}
    candidates = {
        dependency
        for role in changed
        for dependency in planner.stack_dependencies(env).get(role, ())
        if dependency not in changed
    }
    if not candidates:
        return {}
    names = planner.stack_roles(env)
    out = planner.synth_dir(config, env)
    try:
        synthesize()
        templates = {
            role: json.loads(synth.template_body(synth.template_in(out, names[role]))) for role in changed | candidates
        }
    except (DeployKitError, OSError, ValueError):  # the plan's synthesis meets it, or the stack's deploy
        return {}
    if not all(isinstance(template, dict) for template in templates.values()):
        return {}
    exports = StackOutputs.of(aws).exports
    return exports_wanted(templates, changed, names, exports, region=env.region, account=aws.account())


# why an unchanged stack deploys before a changed one that imports from it (exports_wanted), which --only and --skip
# may not hold back (refuse_holding_exporters reads it)
EXPORTS_FOR = "its template now exports {export}, which {importer} imports: it deploys first"
_EXPORTS_FOR = re.compile(
    r"its template now exports (?P<export>\S+), which (?P<importer>\S+) imports: it deploys first"
)


def code_hosts(functions: Mapping[str, str]) -> dict[str, str]:
    """The stack holding each component of code: the app's, and each deployed function's (``functions``: its folder
    → the role of the stack holding it, as :attr:`Inputs.hosts`)."""
    hosted = {c: f"stack:{role}" for c, role in planner.HOSTED_BY.items()}
    return hosted | {f"lambda:{fn}": f"stack:{role}" for fn, role in functions.items()}


def held_new_functions(held: changes.ChangeSet, never_deployed: Iterable[str]) -> list[str]:
    """Those of the functions the environment does not have yet (``never_deployed``) that --only/--skip hold back."""
    return sorted(fn for fn in never_deployed if f"lambda:{fn}" in held.held)


def refuse_holding_new_functions(held: changes.ChangeSet, taken: Iterable[str], env: EnvConfig) -> None:
    """UsageError (exit 2, before anything runs) when --only/--skip hold back functions the environment does not have
    yet that a stack this run deploys takes (``taken``: of :func:`held_new_functions`, those its template declares):
    that stack is given each one's code, a new one's this commit's zip, which only the held function's upload puts
    there (CloudFormation: NoSuchKey, a stack rolled back; with the zip there from an earlier run, a function live that
    was neither checked against promote_from nor recorded)."""
    stacks = sorted(c for c in held.components() if planner.is_function_stack(c))
    new = sorted(f"lambda:{fn}" for fn in taken)
    if stacks and new:
        raise UsageError(
            f"--only/--skip hold back {', '.join(new)}, which {env.name} does not have yet, while "
            f"{', '.join(stacks)} deploys: a stack that holds functions is given each one's code, and a new one's "
            "is uploaded by its own deploy; nothing was deployed",
            next_step="deploy them together (add them to --only, or leave them out of --skip)",
        )


def refuse_holding_exporters(found: changes.ChangeSet, held: changes.ChangeSet, env: EnvConfig) -> None:
    """UsageError (exit 2, before anything runs) when ``held`` (``found`` with --only/--skip's components held back)
    holds back a stack that a stack it still deploys imports from anew: that one's deploy would fail at
    CloudFormation ("No export named ..."), after what ran before it."""
    roles = {name: role for role, name in planner.stack_roles(env).items()}
    deploying = held.components()
    needed = []
    for component in sorted(held.held):
        for change in found.for_component(component):
            match = _EXPORTS_FOR.fullmatch(change.reason or "")
            importer = f"stack:{roles.get(match['importer'], '')}" if match else ""
            if match and importer in deploying:
                needed.append(f"{component} (its new export {match['export']}, which {importer} imports)")
    if needed:
        raise UsageError(
            f"--only/--skip hold back what a stack this run deploys needs deployed first: {'; '.join(needed)}; "
            "nothing was deployed",
            next_step="deploy them together (add them to --only, or leave them out of --skip)",
        )


def exports_wanted(
    templates: Mapping[str, Mapping[str, Any]],
    changed: Collection[str],
    names: Mapping[str, str],
    live: Callable[[list[str]], Mapping[str, str]],
    *,
    region: str,
    account: str,
) -> dict[str, str]:
    """:func:`exporters_needed` of the stacks' synthesized ``templates`` (role → template; the ``changed`` roles and
    the others they depend on): each export a changed one imports that another exports and ``live`` (the region's
    exports, asked with the names wanted) lacks names its stack."""

    def resolver(role: str) -> references.Template:
        return references.Template.of(templates[role], {}, stack=names[role], region=region, account=account)

    imported = {
        name: role for role in sorted(changed) for name in references.imports_of(templates[role], resolver(role))
    }
    exporters = {
        name: role
        for role in sorted(set(templates) - set(changed))
        for name in references.exports_of(templates[role], resolver(role))
    }
    wanted = {name: role for name, role in imported.items() if name in exporters}
    if not wanted:
        return {}
    exported = live(sorted(wanted))
    needed: dict[str, str] = {}
    for name, role in sorted(wanted.items()):
        if name not in exported:  # the first of a stack's new exports names it
            why = EXPORTS_FOR.format(export=name, importer=names[role])
            needed.setdefault(f"stack:{exporters[name]}", why)
    return needed


def left_by_failed_runs(
    records: Sequence[Record],
    live: Mapping[str, str | None],
    stacks: Mapping[str, str] | None = None,
    entries: Mapping[str, Mapping[str, str]] | None = None,
) -> dict[str, str]:
    """stack:<role> → why, for each stack whose newest run that deployed it (``records``: newest first) failed, at
    another commit than the live record's: its change set may have gone through before a later step failed (a
    failed run never moves the live record, and the automatic rollback puts back code, never a stack), so the
    stack may hold what no successful run verified; deploy.auto deploys it again, as the checkout has it (a change
    set with nothing to change when it holds that already). A run a guard refused changed nothing, nor did a failed
    one whose deploy of the stack found nothing to change or never started (its step skipped or not run, as the
    record says: ``stacks``, role → name): the newest run that may have changed the stack is looked for behind
    them. A run that passed verified what the stack held, changed or not.

    lambda:<fn> → why, the same way, for each function whose newest run that may have moved its alias failed at
    another commit than the live record's (``entries``: its entries; what is live for a function is read from the
    version its alias serves, which that run may have put there): its new version served, never verified (kept with
    --no-rollback, or the run interrupted). A run that never moved the alias (its move-alias skipped, not run, or
    its canary taken back) is passed over."""
    notes: dict[str, str] = {}
    for component, sha in live.items():
        if component.startswith("lambda:") and (verified := (entries or {}).get(component, {}).get("sha")):
            last = next((r for r in records if _settles_alias(r, component)), None)
            if last is not None and not last.ok and last.deployed[component] != verified:
                notes[component] = (
                    f"the last run that deployed it ({last.command} at {last.when}, {last.deployed[component]}) "
                    "failed after its alias may have moved" + AGAIN
                )
            continue
        if not component.startswith("stack:") or sha is None:
            continue
        name = (stacks or {}).get(component.removeprefix("stack:"))
        newest = next(
            (
                r
                for r in records
                if component in r.deployed
                and not r.refused
                and (r.ok or not (name and _did_not_change(r, name)))  # one that passed verified it
            ),
            None,
        )
        if newest is not None and not newest.ok and newest.deployed[component] != sha:
            notes[component] = (
                f"the last run that deployed it ({newest.command} at {newest.when}, {newest.deployed[component]}) "
                "failed, maybe after its change set went through" + AGAIN
            )
    return notes


def _settles_alias(record: Record, component: str) -> bool:
    """Whether ``record``'s run tells what the alias of ``component`` (``lambda:<fn>``) serves: one that deployed it
    and passed, or failed after it may have moved it; or one that passed and moved it though it deployed no commit of
    it (an automatic rollback to a version CloudFormation published, which names none). A refused run moved nothing."""
    fn = component.removeprefix("lambda:")
    if record.refused:
        return False
    if component in record.deployed:
        return record.ok or _may_have_moved(record, fn)
    return record.ok and _may_have_moved(record, fn)


def _may_have_moved(record: Record, fn: str) -> bool:
    """Whether ``record``'s failed run may have moved ``fn``'s alias: its move-alias step of that function was done,
    or a step that may hold one was cut short (an interrupted group says nothing of its steps)."""
    for step in record.steps:
        name, status, detail = step.get("step"), step.get("status"), str(step.get("detail", ""))
        if name == lambda_chain.MoveAlias.name and status == "done" and detail.startswith(f"{fn}: "):
            return True
        if status == "failed" and detail == "interrupted" and name in ("move-alias", "parallel", "sequence"):
            return True
    return False


def _did_not_change(record: Record, stack: str) -> bool:
    """Whether ``record``'s run did not change ``stack``: its deploy-stack step (at any depth in the run's groups)
    found nothing to change (skipped), or never started (the run failed before it, or beside it in a group it never
    reached)."""
    name = f"{DeployStack.name}:{stack}"
    return any(step.get("status") in ("skipped", "not run") and step_name(step) == name for step in record.steps)


def unpromoted(
    config: Config,
    source: str,
    source_live: Mapping[str, str | None],
    components: Collection[str],
    revision: Revision,
    target: str | None = None,
) -> dict[str, str]:
    """component → why the environment ``source`` (``promote_from``) does not run it as ``revision`` has it, for
    those of ``components`` it does not: never deployed there, a build with uncommitted changes there, or paths of
    the component changed between the commit it runs there and ``revision`` (its uncommitted changes included). The
    same rules as deploy.auto's: a component is what its paths hold, so a commit that changed only docs since, or
    another component, is still what the source runs. The app, when the source runs it so but its settings for
    ``target`` alone changed since (its own ``base_image``), is not either: ``target`` would take the source's image,
    built without them, and count it changed at every deploy after."""
    wanted = {component: source_live.get(component) for component in sorted(components)}
    try:
        found = changes.detect(config, wanted, include_uncommitted=bool(revision.dirty), env=source)
        # the app by the target's settings, when the source's find it the same: one diff more, only then
        same_app = target and "app" in wanted and "app" not in found.components()
        app = {"app": wanted.get("app")}
        own = changes.detect(config, app, include_uncommitted=bool(revision.dirty), env=target) if same_app else None
    except UsageError as exc:  # what the source runs is in no commit of this clone
        raise UsageError(
            f"cannot tell whether {source} runs what this checkout would deploy: {exc.message}",
            next_step=f"{changes.fetch_more(is_shallow(config.root), 'deployed there')}, then rerun",
        ) from None
    why: dict[str, str] = {}
    for component in sorted(found.components()):
        base = found.base.get(component)
        if base is None:
            why[component] = f"{source} does not run it"
        elif component in found.dirty:
            why[component] = f"{source} runs a build of it with uncommitted changes ({wanted[component]})"
        else:
            paths = list(dict.fromkeys(c.path or c.old_path or "" for c in found.for_component(component)))
            more = f" and {len(paths) - 3} more" if len(paths) > 3 else ""
            why[component] = f"{source} runs it at {base[:SHORT_SHA]}; changed since: {', '.join(paths[:3])}{more}"
    # the app's image is built once, in the source (a stack is made for each environment; a function's zip is
    # compared byte for byte, other_bytes)
    if own is not None and "app" in own.components():
        settings = ", ".join(dict.fromkeys(c.path or c.reason for c in own.for_component("app")))
        why["app"] = (
            f"{target}'s own settings of it changed since the commit {source} runs it at ({settings}): {target} takes "
            f"{source}'s build, made without them; give {source} the same settings, or build it for {target} "
            "(--unpromoted)"
        )
    return why


def verified_in(records: Sequence[Record], components: Collection[str]) -> dict[str, list[str]]:
    """component → the commits (image-tag form) successful runs of an environment deployed it at, newest first:
    each passed its smoke there (a run that fails it is not ok; one without its smoke, --no-smoke, proves nothing). A
    commit a later rollback took the component off is left out (it was found wanting there), unless a run after that
    rollback deployed it again; so are dirty builds (never promoted). ``records``: the environment's runs, newest
    first."""
    found: dict[str, list[str]] = {}
    revoked: dict[str, set[str]] = {}
    for record in records:
        if not record.ok:
            continue
        for component, sha in record.deployed.items() if record.smoked else ():
            if component in components and DIRTY not in sha and sha not in revoked.get(component, set()):
                found.setdefault(component, [])
                if sha not in found[component]:
                    found[component].append(sha)
        if record.rollback_by_hand:  # what it took the components off, older runs may not vouch for
            for component in record.deployed:
                left = record.base.get(component)
                if left and left not in found.get(component, []):
                    revoked.setdefault(component, set()).add(left)
    return found


def promoted_earlier(config: Config, verified: Mapping[str, Sequence[str]], revision: Revision) -> dict[str, str]:
    """component → the newest of its ``verified`` commits it is the same at as ``revision`` has it, by the change
    rules (what the source environment proved, though it runs something else now); components with none are left
    out. A commit this clone lacks is passed over."""
    at: dict[str, str] = {}
    for component, shas in sorted(verified.items()):
        for sha in shas:
            try:
                found = changes.detect(config, {component: sha}, include_uncommitted=bool(revision.dirty))
            except UsageError:  # not in this clone's history
                continue
            if found.base.get(component) is not None and component not in found.components():
                at[component] = sha
                break
    return at


def other_bytes(
    lambda_client: Any,
    source: str,
    function_names: Mapping[str, str],
    packages: Mapping[str, packaging.Package],
    earlier: Collection[str] = (),
) -> dict[str, str]:
    """``lambda:<fn>`` → why ``source`` (``promote_from``) does not run this checkout's zip of it byte for byte,
    for those of ``packages`` (fn → this checkout's package) it runs (``function_names``: fn → its Lambda function
    there). Packaging is reproducible, so the same sources make the same zip, but vendored requirements are what pip
    resolves on the machine that packages them: unpinned ones can differ between dev's and prod's. Compared with the
    version its ``live`` alias serves, or for those in ``earlier`` (what it ran before) with any version it
    published."""

    def codes(function: str) -> set[str]:
        name = function_names[function]
        if f"lambda:{function}" in earlier:
            return {str(v.get("CodeSha256")) for v in lambda_chain.published_versions(lambda_client, name)}
        config = lambda_chain.live_configuration(lambda_client, name)
        return {str(config.get("CodeSha256"))} if config else set()

    found: dict[str, set[str]] = at_once({fn: partial(codes, fn) for fn in packages if fn in function_names})
    why: dict[str, str] = {}
    for function, package in sorted(packages.items()):
        theirs = found.get(function)
        if theirs is None or package.code_sha256 in theirs:
            continue
        said = (
            f"none of {source}'s {len(theirs)} version(s) of it holds"
            if f"lambda:{function}" in earlier
            else f"{source} runs CodeSha256 {', '.join(sorted(theirs))}, not"
        )
        why[f"lambda:{function}"] = (
            f"{said} this checkout's zip (CodeSha256 {package.code_sha256}): the same sources, other bytes; its "
            f"vendored requirements resolve otherwise here (pin every one of them, transitive ones too: pip freeze)"
        )
    return why


def live_image_tag_or_empty(aws: AwsFactory, env: EnvConfig) -> str:
    """The image tag of the service's task definition now (its PRIMARY deployment's); "" when there is no
    service yet."""
    return _live_image_tag(aws, env, completed=False) or ""


def _recorded_revision(live_record: Callable[[], Mapping[str, Mapping[str, str]]]) -> tuple[str, str] | None:
    """(the task definition the last deploy of the app left the service on, its image tag), from the live record;
    None when it does not say."""
    app = live_record().get("app", {})
    return (app["taskdef"], app["sha"]) if app.get("taskdef") and app.get("sha") else None


def _live_image_tag(
    aws: AwsFactory,
    env: EnvConfig,
    *,
    completed: bool,
    known: Callable[[], tuple[str, str] | None] = lambda: None,
    pending: dict[str, str] | None = None,
) -> str | None:
    """The image tag of the service's task definition, or with ``completed`` of the deployment that completed
    last. While a rollout is still in progress (a deploy was interrupted after rolling), the new image is not live
    yet: the one it replaces is, so deploy.auto plans the app again — its steps find the image, the revision and
    the rollout in place, wait for it, and smoke it. ``known``: (a revision, its image tag) known already (the
    live record's): the service on that revision is not described again (a revision never changes). ``pending``
    (when given) gets ``{"tag": TAG}`` when the service is tagged as running an image whose release command has not
    passed (:data:`deploykit.release.PENDING_TAG`: a first deploy's that failed)."""
    client = aws.client("ecs")
    try:
        service = ecs.describe_service(client, env.cluster, env.service, env)
    except UsageError:
        return None
    if pending is not None and (tag := release_pending(service)) is not None:
        pending["tag"] = tag
    deployments = service.get("deployments") or []
    primary = next((d for d in deployments if d.get("status") == "PRIMARY"), None)
    arn = service["taskDefinition"]
    if completed and primary is not None and primary.get("rolloutState", "COMPLETED") != "COMPLETED":
        done = [d for d in deployments if d.get("status") != "PRIMARY" and d.get("rolloutState") == "COMPLETED"]
        if not done:
            return None  # nothing completed: the app counts as changed
        arn = done[0]["taskDefinition"]
    recorded = known()
    if recorded is not None and recorded[0] == arn:
        return recorded[1]
    try:
        image = ecs.TaskDefinitions.of(aws).image(arn, env.container)
    except UsageError:
        return None
    return image.rsplit(":", 1)[-1] if ":" in image else None


@dataclass(frozen=True)
class Inputs:
    """What the plan needs from the live environment besides the changes."""

    image_tag: str  # the image live now (the Fargate stack's ImageTag when the app does not change)
    code_keys: Mapping[str, str]  # function → the code key live now
    functions: Mapping[str, str]  # function → its Lambda function name
    hosts: Mapping[str, str] = field(default_factory=dict)  # function → the role of the stack holding it
    given: Mapping[str, str] = field(default_factory=dict)  # function → the code key its stack was last deployed with
    repository_uri: str = ""  # "" lets push resolve it from the registry stack
    promoted: planner.PromotedImage | None = None  # the app's image is the promote_from environment's, copied


def auto_plan(
    config: Config,
    env: EnvConfig,
    revision: Revision,
    found: changes.ChangeSet,
    inputs: Inputs,
    *,
    smoke: bool = True,
) -> Plan:
    """One plan for every changed component (empty when nothing changed)."""
    changed = found.components()
    roles = [role for level in planner.stack_levels(env) for role in level if f"stack:{role}" in changed]
    functions = sorted(c.split(":", 1)[1] for c in changed if c.startswith("lambda:"))
    app = "app" in changed
    if not (roles or functions or app):
        return Plan(env.name, (), "deploy.auto")

    names = planner.stack_roles(env)
    out = planner.synth_dir(config, env)
    packages = {fn: lambda_chain.package(config, env, fn) for fn in functions}
    promoted = inputs.promoted
    image_tag, code_keys = stack_inputs(
        revision, changed, inputs.image_tag, inputs.code_keys, packages, promoted.tag if promoted else None
    )
    if "fargate" in roles and not image_tag:
        raise UsageError(
            f"no image is live in environment {env.name!r} for the Fargate stack",
            next_step=f"deploy everything once: inv deploy.full --env {env.name}",
        )

    def stack(role: str) -> DeployStack:
        parameters = planner.stack_parameters(role, image_tag, code_keys)
        return DeployStack(
            names[role],
            str(out / f"{names[role]}.template.json"),
            parameters,
            commit=planner.kept_commit(revision, role),
            registry_stack=env.stacks.registry,
            express=env.stack_mode == "express",
            beside=tuple(names[r] for r in roles if planner.holds_functions(r)),
        )

    levels = planner.stack_levels(env)
    others = [role for role in levels[0] if role in roles and role != "registry"]  # of the registry's level
    head: list[Step] = [Synthesize(str(out))] if roles else []
    if "registry" in roles:
        if app or packages:  # the push and the zips need its repository and bucket: it goes first, alone
            head.append(stack("registry"))
        else:  # nothing waits for it but the later stacks: the others of its level beside it (a shared CDK module)
            head.append(_group([stack("registry"), *(stack(role) for role in others)]))
            others = []
    image = (
        planner.app_chain_plan(
            config, env, revision, ("build", "push"), repository_uri=inputs.repository_uri, promoted=promoted
        ).steps
        if app
        else ()
    )
    steps, first = planner.image_beside(head, image)  # the image builds while the CDK app synthesizes
    first += [
        UploadLambdaCode.of(fn, lambda_chain.function_folder(config, fn), p, env.stacks.registry)
        for fn, p in sorted(packages.items())
    ]
    first += [stack(role) for role in others]
    if first:
        steps.append(_group(first))
    git_sha = planner.image_commit(revision, promoted)

    def deployed(role: str) -> Step:  # a new image through the Fargate stack: its release command first
        if role == "fargate" and app:
            return planner.fargate_with_image(config, env, stack(role), image_tag, git_sha)
        return stack(role)

    steps += planner.later_stacks(env, roles, deployed)
    # a stack holding a function, when it changed, deployed the new code itself (one that may hold it, for a function
    # not deployed yet), unless it names that code already while the alias serves other (left); the fast path does
    # the others
    holders = [role for role in roles if planner.holds_functions(role)]
    left = lambda_chain.left_by_stacks(
        {fn: packages[fn].key for fn in functions if inputs.hosts.get(fn) in roles}, inputs.given, inputs.code_keys
    )
    fast = [
        fn for fn in functions if fn in left or (inputs.hosts[fn] not in roles if fn in inputs.hosts else not holders)
    ]
    chains: list[Step] = []  # the functions' fast paths and the app's rollout: side by side, independent
    if fast:
        for fn in fast:
            if fn not in inputs.functions:
                held = sorted(c for c in found.held if planner.is_function_stack(c))
                if held:  # this commit may give it its stack already: --only/--skip held that back
                    raise UsageError(
                        f"Lambda function {fn} is not deployed in {env.name!r} yet, and --only/--skip hold back "
                        f"{', '.join(held)}, which may be what creates it",
                        next_step="deploy them together (add them to --only, or leave them out of --skip)",
                    )
                raise UsageError(
                    f"Lambda function {fn} is not deployed in {env.name!r}: no stack has a "
                    f"{function_id(fn)}FunctionName output",
                    next_step=f"give folder {fn!r} a stack and commit it (a LambdaRoute of FUNCTIONS in "
                    "cdk/stacks/api_stack.py, or deployed_function of cdk/stacks/common/functions.py in a stack of "
                    "your own): inv deploy.auto then deploys that stack; or deploy the stack that holds it as it is: "
                    f"inv deploy.stack STACK --env {env.name}",
                )
            chains.append(lambda_chain.fast_path(config, env, revision, fn, inputs.functions[fn]))
    if app:
        rollout = planner.app_chain_plan(
            config,
            env,
            revision,
            ("register-taskdef", "roll-service", "wait-healthy"),
            repository_uri=inputs.repository_uri,
            watch=False,  # after smoke, below
            promoted=promoted,
        ).steps
        if chains:  # a Lambda update (a canary's bake: minutes) no longer holds the rollout back, nor it the update
            chains.append(StepSequence("app", rollout))
        else:
            steps += rollout
    if chains:
        steps.append(_group(chains))
    if smoke:
        # always: this plan exists because the live record (written only by a deploy that passed smoke) differs
        # from HEAD; when every step finds its result in place (a stack CloudFormation finished after an
        # interrupt, a rollout ECS completed on its own), that result was still never smoke-tested
        steps.append(Smoke(always=True))
    if app:
        steps += planner.error_watch(env)  # after smoke: the release, checked, then meets real traffic
    steps += alarm_watch(env, after_errors=app)  # the team's own judges of all of it
    deploys = tuple((c, image_tag if c == "app" else revision.of(c).tag) for c in sorted(changed))
    return Plan(env.name, tuple(steps), "deploy.auto", deploys)


def stack_inputs(
    revision: Revision,
    changed: Collection[str],
    image_tag: str,
    code_keys: Mapping[str, str],
    packages: Mapping[str, packaging.Package],
    promoted_tag: str | None = None,
) -> tuple[str, dict[str, str]]:
    """The image tag and the functions' code keys (fn → key) a deploy of the components ``changed`` gives its stacks:
    this commit's image when the app changes (the promote_from environment's, ``promoted_tag``, when it is copied
    from there), else the live one (``image_tag``); the zip of each changed function (``packages``: fn → this
    checkout's) over the live keys (``code_keys``). ``inv diff`` previews the stacks with what ``deploy.auto`` gives."""
    if "app" in changed:
        image_tag = promoted_tag or revision.of("app").tag
    return image_tag, {**code_keys, **{fn: p.key for fn, p in packages.items()}}


def stacks_taken_out(env: EnvConfig, entries: Mapping[str, Mapping[str, str]]) -> dict[str, tuple[str, str]]:
    """stack:ROLE → (what, the next step) for each stack the live record (``entries``) holds whose role deploy.toml
    names no more: taken out of the app and deploy.toml without ``inv destroy --stack`` first, it may still run (and
    cost) in the account, and no deploy minds it. Said by ``inv health`` and by deploy.auto's Change Analysis."""
    roles = env.stacks.roles()
    return {
        component: (
            f"{component} is in {env.name}'s live record (deployed at {entries[component].get('sha', '?')}), and "
            "deploy.toml names no such stack: taken out of the app without inv destroy --stack, its stack may still "
            "be there",
            f'name it again in every environment\'s [environments.NAME.stacks] (ROLE = "ITS STACK NAME"), then inv '
            f"destroy --stack {component.partition(':')[2]} --env {env.name} deletes it, if it is there, and takes it "
            "out of the live record",
        )
        for component in sorted(entries)
        if component.startswith("stack:") and component.partition(":")[2] not in roles
    }


def unchanged_components(found: changes.ChangeSet, revision: Revision) -> tuple[tuple[str, str], ...]:
    """(component, HEAD's commit) for each component deployed from a known commit with no change since: what is
    live for it is what HEAD's commit holds. The app is left out (its image tag, not the record, says what runs).

    None with --since: its commit is what the user told to compare with, not what is live, and carrying a component
    to HEAD would hide, for good, changes made between its live commit and that one. The commit is HEAD's own
    even when uncommitted changes are deployed (--allow-dirty): a component they do not touch is as committed, and a
    dirty tag in the live record would count it changed next time."""
    if found.since is not None:
        return ()
    changed = found.components() | found.held  # one held back (--only, --skip) is not live at HEAD either
    return tuple(
        (component, revision.short)
        for component, base in sorted(found.base.items())
        if base is not None and component not in changed and component not in found.dirty and component != "app"
    )


KINDS = ("app", "lambda", "stack")


def selection(text: str, config: Config, env: EnvConfig, flag: str) -> frozenset[str]:
    """``--only`` or ``--skip``: components separated by commas — ``app``, ``lambda:<fn>``, ``stack:<role>`` or the
    stack's name — or kinds (``lambda``, ``stack``: every one of them); UsageError naming what there is otherwise."""
    chosen: set[str] = set()
    known = ", ".join([*KINDS, *(c for c in changes.components_of(config) if c != "app")])
    for item in (part.strip() for part in text.split(",") if part.strip()):
        kind, _, name = item.partition(":")
        if item in KINDS:
            chosen.add(item)
        elif kind == "lambda" and name:
            lambda_chain.function_folder(config, name)  # refuses an unknown function, naming the known ones
            chosen.add(item)
        elif kind == "stack" and name:
            chosen.add(f"stack:{planner.role_of(env, name)}")  # refuses an unknown stack, naming the known ones
        else:
            raise UsageError(
                f"{flag} {text!r}: {item!r} is not a component",
                next_step=f"name components or kinds, separated by commas: {known}",
            )
    if not chosen:
        raise UsageError(f"{flag} {text!r} names nothing", next_step=f"name one or more of: {known}")
    return frozenset(chosen)


def selections(
    config: Config, env: EnvConfig, *, only: str | None, skip: str | None
) -> tuple[frozenset[str] | None, frozenset[str]]:
    """``--only`` (None: not given) and ``--skip`` (empty: not given) as :func:`selection` reads them."""
    chosen = selection(only, config, env, "--only") if only is not None else None
    skipped = selection(skip, config, env, "--skip") if skip is not None else frozenset()
    both = sorted(chosen & skipped) if chosen is not None else []
    if both:
        raise UsageError(
            f"--only and --skip both name {', '.join(both)}: the one takes it in, the other leaves it out",
            next_step="name each component in one of them",
        )
    return chosen, skipped


def selected(component: str, only: Collection[str] | None, skip: Collection[str]) -> bool:
    """Whether ``--only`` (None: not given) and ``--skip`` (:func:`selections`) leave ``component`` in: each names
    components or kinds."""

    def named(chosen: Collection[str]) -> bool:
        return component in chosen or changes.kind_of(component) in chosen

    return (only is None or named(only)) and not named(skip)


def held_back(found: changes.ChangeSet, only: Collection[str] | None, skip: Collection[str]) -> changes.ChangeSet:
    """``found`` with the changed components ``only`` leaves out or ``skip`` names held back (:func:`selected`)."""
    return found.holding([c for c in found.components() if not selected(c, only, skip)])


def _group(steps: Sequence[Step]) -> Step:
    return steps[0] if len(steps) == 1 else Parallel(tuple(steps))


def flat_steps(steps: Sequence[Step]) -> list[Step]:
    """The plan's steps in the order they run, groups opened."""
    return [step for _depth, step in walk(steps) if not is_group(step)]


def target_of(step: Step, env: EnvConfig) -> str:
    """What a step acts on, for the plan as CI reads it."""
    if isinstance(step, DeployStack):
        return step.stack
    if isinstance(step, UploadLambdaCode | lambda_chain.UpdateFunctionCode | lambda_chain.PublishVersion):
        return step.function
    if isinstance(step, lambda_chain.MoveAlias):
        return step.function
    if isinstance(step, RegisterTaskDef | RollService | WaitHealthy):
        return step.service
    if isinstance(step, PushImage):
        return step.local_image
    if isinstance(step, PromoteImage):
        return f"{env.repository}:{step.tag}"
    if isinstance(step, Smoke | Synthesize):
        return env.name
    for name in ("image", "function", "stack", "service"):
        value = getattr(step, name, None)
        if isinstance(value, str) and value:
            return value
    return env.name


def oldest_base(found: changes.ChangeSet, root: Path | None = None) -> str | None:
    """The base of the changes: the one live SHA when all changed components share it, else the oldest by history
    (``root``'s clone: one that is the other's ancestor is older; on other lines of history, the first listed), so
    that ``git log base..head`` holds every change; without ``root``, the first listed. With nothing changed, the
    same of every component's live SHA (or ``--since``'s commit): null only where nothing is deployed."""
    counted = found.components() or found.base.keys()
    bases = list(dict.fromkeys(b for c in sorted(counted) if (b := found.base.get(c))))
    if len(bases) <= 1 or root is None:
        return bases[0] if bases else None
    oldest = bases[0]
    for other in bases[1:]:
        if commits_ahead(root, oldest, other):  # other is one of its ancestors
            oldest = other
    return oldest


def plan_json(env: EnvConfig, found: changes.ChangeSet, plan: Plan, root: Path | None = None) -> dict[str, Any]:
    """``--dry-run --json``: a shape kept stable for CI scripts (``root``: the clone, for the oldest base)."""
    return {
        "environment": env.name,
        "base": oldest_base(found, root),
        "head": found.head,
        "changes": [
            {"path": c.path, "component": c.component, "kind": c.kind}
            for c in found.changes
            if c.kind != "none" and c.component is not None
        ],
        "steps": [{"name": s.name, "target": target_of(s, env)} for s in flat_steps(plan.steps)],
        # what --only/--skip leave as live: only when they hold something back (the shape is otherwise the same)
        **({"held": sorted(found.held)} if found.held else {}),
    }


def diff_json(env: EnvConfig, found: changes.ChangeSet, root: Path | None = None) -> dict[str, Any]:
    """``inv diff --json``: the plan's shape without its steps; ``behind``: each changed component whose live
    commit is ahead of HEAD (what the ⏮ lines say), ``{component: {"live": sha, "ahead": commits}}``; ``replaced``:
    each changed component whose live commit is on another line of history (the 🔀 lines), ``{component: {"live":
    sha, "commits": how many HEAD lacks}}``; and
    ``reasons``: each component counted changed with no path of it changed, ``{component: why}`` (never deployed, a
    dirty build live, not what the last deploy verified, changed outside deploykit...)."""
    data = plan_json(env, found, Plan(env.name, ()), root)
    data.pop("steps")
    data["behind"] = {c: {"live": live, "ahead": n} for c, (live, n) in taken_back(found).items()}
    data["replaced"] = {c: {"live": live, "commits": n} for c, (live, n) in replaced(found).items()}
    data["reasons"] = {c.component: c.reason for c in found.changes if not c.path and c.component}
    return data


NOTHING_TO_DEPLOY = "nothing to deploy"


def command_for(change: changes.Change, env: EnvConfig, flag: str = "") -> str:
    """The command that deploys the component of ``change``, with ``flag`` (:meth:`Config.env_flag`)."""
    command = _command_for(change, env)
    return command if command == NOTHING_TO_DEPLOY else command + flag


def _command_for(change: changes.Change, env: EnvConfig) -> str:
    # the service's size (an environment's desired_count, task_cpu, task_memory), the topics of the stacks' events
    # (notification_arns), the CDK app's values (context): each stack alone deploys it
    alone = (*SIZE_KEYS, changes.NOTIFICATION_ARNS, changes.CONTEXT)
    by_stack = change.setting is not None and change.setting.rsplit(" ", 1)[-1] in alone
    if change.reason == changes.NOT_DEPLOYED and change.kind in ("app", "lambda"):
        return "inv deploy.auto"  # deploy.app and deploy.lambda need their stack's service and function in place
    if change.setting and change.setting != "[build]" and not change.setting.endswith(" base_image") and not by_stack:
        # an architecture: a stack moves what runs on it, beside the image or zips made for it, in one deploy.auto
        return "inv deploy.auto"
    if change.kind == "app":
        return "inv deploy.app"
    if change.kind == "lambda" and change.component:
        return f"inv deploy.lambda {change.component.split(':', 1)[1]}"
    if change.kind == "stack" and change.component:
        return f"inv deploy.stack {planner.stack_roles(env)[change.component.split(':', 1)[1]]}"
    return NOTHING_TO_DEPLOY


def taken_back(found: changes.ChangeSet) -> dict[str, tuple[str, int]]:
    """The changed components whose live commit is ahead of HEAD (HEAD is an ancestor of it): component → (that
    commit, how many commits): deploying HEAD would take those commits back. Never with --since."""
    changed = found.components()
    return {c: (found.base.get(c) or "", n) for c, n in sorted(found.ahead.items()) if c in changed}


def replaced(found: changes.ChangeSet) -> dict[str, tuple[str, int]]:
    """The changed components whose live commit is on another line of history (another branch deployed): component →
    (that commit, how many commits it has that HEAD lacks), which deploying HEAD replaces. Never with --since."""
    changed = found.components()
    return {c: (found.base.get(c) or "", n) for c, n in sorted(found.apart.items()) if c in changed}


def refuse_taking_back(behind: Mapping[str, tuple[str, int]], head: str, env: EnvConfig) -> None:
    """UsageError (nothing changed) when deploying ``head`` would take back commits that are live (``behind``:
    component → (its live commit, how many commits that is ahead of ``head``)): an out-of-date checkout, or an old
    CI job run again."""
    if not behind:
        return
    listed = ", ".join(f"{c} (live at {live[:SHORT_SHA]}, {n} ahead)" for c, (live, n) in behind.items())
    raise UsageError(
        f"HEAD ({head[:SHORT_SHA]}) is behind what {env.name} runs: {listed}; deploying it would take back commits "
        "that are live",
        next_step="update this checkout (git pull) and rerun; to deploy HEAD anyway, going back on purpose, rerun "
        "with --allow-older",
    )


def taken_off(records: Sequence[Record]) -> dict[str, tuple[str, Record]]:
    """component → (the commit a person's ``inv rollback`` took it off, that rollback's record), for each component
    whose newest successful run that deployed it was such a rollback (``records``: newest first). The automatic
    rollback of a failed deploy is not one: running the same release again (a failure that came and went) is
    fair. A run that deployed the component after the rollback ends it: a fix, or the release again on purpose."""
    found: dict[str, tuple[str, Record]] = {}
    decided: set[str] = set()
    for record in records:
        if not record.ok:
            continue
        for component, sha in record.deployed.items():
            if component in decided:
                continue
            decided.add(component)
            off = record.base.get(component)
            if record.rollback_by_hand and off and off != sha and DIRTY not in off:
                found[component] = (off, record)
    return found


def deciding_runs(
    entries: Mapping[str, Mapping[str, str]], records: Sequence[Record], components: Collection[str]
) -> list[str]:
    """The ids of the runs that left each of ``components`` live as it is (the live record's ``entries`` name them),
    for those none of ``records`` (the newest runs) deployed: read too, :func:`taken_off` finds a person's rollback
    however long ago it was (an environment whose app deploys many times a day leaves a stack's last deploy far
    behind the newest runs)."""
    deployed = {c for r in records if r.ok for c in r.deployed}
    known = {r.id for r in records}
    ids = {entries[c]["record"] for c in components if c not in deployed and entries.get(c, {}).get("record")}
    return sorted(ids - known, reverse=True)


def with_deciding_runs(
    entries: Mapping[str, Mapping[str, str]],
    records: Sequence[Record],
    components: Collection[str],
    read: Callable[[Sequence[str]], Sequence[Record]],
) -> list[Record]:
    """``records`` (the newest runs, newest first) and after them, read with ``read`` (History.records_by_id), the
    older runs that left each of ``components`` live as it is when none of ``records`` deployed it
    (:func:`deciding_runs`): one round trip more, only then."""
    older = deciding_runs(entries, records, components)
    return [*records, *read(older)] if older else list(records)


def rolled_back(
    aws: AwsFactory,
    env: EnvConfig,
    config: Config,
    components: Collection[str],
    *,
    uncommitted: bool = False,
    warn: Callable[[str], object] | None = None,
    heads: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """:func:`deploying_again` for ``components`` (each at HEAD, or at its commit of ``heads``), read from ``env``: its
    newest :data:`NEWEST_RUNS` runs and, older, the runs its live record says left them live (:func:`deciding_runs`,
    one round trip more, only then). The guard of the commands that deploy what they are told (deploy.full,
    deploy.app, deploy.lambda, deploy.stack); nothing without a history (a first deploy). A live record that cannot be
    read is passed over here: the newest runs still guard, and the run says so when it writes its record."""
    store = History.of(aws, env, warn=warn)
    if store is None:
        return {}
    reads: dict[str, Callable[[], Any]] = {"records": partial(store.records, NEWEST_RUNS), "live": store.live_or_why}
    read = at_once(reads)
    live = {} if isinstance(read["live"], LiveRecordUnreadable) else read["live"]
    records = with_deciding_runs(live, read["records"], components, store.records_by_id)
    return deploying_again(config, records, components, uncommitted=uncommitted, heads=heads)


def deploying_again(
    config: Config,
    records: Sequence[Record],
    components: Collection[str],
    *,
    uncommitted: bool = False,
    heads: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """component → why, for each of ``components`` (those a deploy.auto would deploy) that HEAD (with the work
    tree's changes, when ``uncommitted``) has as it was at the commit a person's rollback took it off
    (:func:`taken_off`): deploying it would bring back what was found wanting. A commit changed since (a fix
    forward) is not; nor one this clone lacks (it cannot tell). ``heads``: a component deployed from another commit
    than HEAD (``deploy.stack --image-tag`` puts the app live at its tag), that commit (a tag that names none: it
    cannot tell either)."""
    why: dict[str, str] = {}
    for component, (off, rollback) in sorted(taken_off(records).items()):
        if component not in components:
            continue
        head = (heads or {}).get(component, "HEAD")
        try:
            found = changes.detect(
                config, {component: off}, head=head, include_uncommitted=uncommitted and head == "HEAD"
            )
        except UsageError:  # that commit is not in this clone's history
            continue
        if found.base.get(component) is not None and component not in found.components():
            at = "" if head == "HEAD" else f", which {head} has too"
            why[component] = (
                f"{component} as it was at {off[:SHORT_SHA]}{at} (taken off by {rollback.command}, {rollback.who} at "
                f"{rollback.when})"
            )
    return why


def said_together(again: Mapping[str, str]) -> list[tuple[str, int]]:
    """:func:`deploying_again`'s reasons, those of the components one rollback took off one commit said once
    (``app, stack:api as they were at ...``), each with how many components it names."""
    groups: dict[str, list[str]] = {}
    for component, why in again.items():
        groups.setdefault(why.removeprefix(f"{component} as it was at "), []).append(component)
    return [
        (f"{members[0]} as it was at {rest}" if len(members) == 1 else f"{', '.join(members)} as they were at {rest}",
         len(members))
        for rest, members in groups.items()
    ]  # fmt: skip


def refuse_deploying_again(again: Mapping[str, str], head: str, env: EnvConfig) -> None:
    """UsageError (nothing changed) when deploy.auto or deploy.full would deploy again what a rollback took off
    (``again``: component → why, :func:`deploying_again`)."""
    if not again:
        return
    listed = "; ".join(why for why, _ in said_together(again))
    raise UsageError(
        f"HEAD ({head[:SHORT_SHA]}) would bring back what a rollback took {env.name} off: {listed}; nothing was "
        "changed",
        next_step="fix or revert it in a commit, then rerun; to deploy it anyway (the rollback was for another "
        "reason), rerun with --allow-rolled-back",
    )


def analysis_lines(
    found: changes.ChangeSet,
    env: EnvConfig,
    *,
    uncommitted: Collection[str] = (),
    requirements: Mapping[str, Sequence[changes.RequirementChange]] | None = None,
    commits: Sequence[changes.ChangedBy] = (),
    flag: str = "",
    hosts: Mapping[str, str] | None = None,
) -> list[str]:
    """Change Analysis: each changed path, its component and the command that deploys it (with ``flag``: ``--env``
    when a command without it would take another environment, :meth:`Config.env_flag`); ``hosts``: the stack holding
    each component of code (``{"app": "stack:fargate", "lambda:fn": "stack:api"}``, :func:`code_hosts`), whose
    code going out while that stack is held back is said; the paths among
    ``uncommitted`` (the work tree's, when it was compared) are marked so; under a requirements file, the packages
    its change changes (``requirements``: :func:`deploykit.changes.requirements_changed`); then the commits behind
    the changes (``commits``: :func:`deploykit.changes.commits_behind`), what a deploy takes live."""
    hosts = hosts or {}
    lines = []
    packages_said: set[str] = set()  # a file every stack counts (cdk/requirements.txt): its packages said once
    for change in found.changes:
        if change.kind == "none":
            continue
        what = change.path or f"{change.component} ({change.reason})"
        if change.setting:
            what = f"{change.path} ({change.setting} changed)"
        if change.old_path:
            what = f"{change.old_path} → {change.path}"
        if change.submodule:
            what += " (submodule)"
        if change.path and {change.path, change.old_path} & set(uncommitted):
            what += " (uncommitted)"
        lines.append(f"{KIND_ICONS[change.kind]} {what} → {command_for(change, env, flag)}")
        packages = (requirements or {}).get(change.path) if not change.setting else None
        if packages and change.path not in packages_said:
            packages_said.add(change.path)
            shown = ", ".join(p.describe() for p in packages[:PACKAGES_SHOWN])
            more = len(packages) - PACKAGES_SHOWN
            lines.append(f"{' ' * 13}📦 {shown}" + (f" and {more} more (inv diff{flag} --json)" if more > 0 else ""))
    lines += commit_lines(commits, flag)
    for component, (live, ahead) in taken_back(found).items():
        lines.append(
            f"⏮  {component}: live at {live[:SHORT_SHA]}, {ahead} commit{'s' if ahead > 1 else ''} ahead of HEAD "
            f"({found.head[:SHORT_SHA]}): deploying HEAD would take {'them' if ahead > 1 else 'it'} back"
        )
    for component, (live, apart) in replaced(found).items():
        lines.append(
            f"🔀 {component}: live at {live[:SHORT_SHA]}, on another line of history ({apart} "
            f"commit{'s' if apart > 1 else ''} HEAD ({found.head[:SHORT_SHA]}) lacks, another branch's): deploying "
            f"HEAD replaces {'them' if apart > 1 else 'it'}"
        )
    if found.held:
        held = ", ".join(sorted(found.held))
        lines.append(f"⏸  held back (--only/--skip): {held}: left as live, for a later inv deploy.auto{flag}")
        # code going out while the stack that holds it (its settings, its permissions) is held back
        code = sorted(c for c in found.components() if hosts.get(c) in found.held)
        for stack in sorted({hosts[c] for c in code}):
            held_code = [c for c in code if hosts[c] == stack]
            lines.append(
                f"⚠️  {', '.join(held_code)} go{'es' if len(held_code) == 1 else ''} out without {stack}, which holds "
                f"{'it' if len(held_code) == 1 else 'them'}: what this code needs of its change (a setting, a "
                "permission) is not live until it deploys"
            )
    # paths of a function this checkout has not (its folder has no handler.py: removed, or shared code), apart from
    # docs and tests: a removed function's files are no docs
    absent: dict[str, list[str]] = {}
    quiet: list[str] = []
    for c in found.changes:
        if c.kind != "none":
            continue
        gone = changes.not_deployable(c)
        listed, path = (absent.setdefault(gone, []), _gone_path(c, gone)) if gone else (quiet, c.path)
        if path not in listed:  # a path counted from each of two live commits (components live apart): said once
            listed.append(path)
    # a submodule that deploys nothing: which of its files changed git does not say, so why is said, not summed up
    # as docs or tests (one not checked out here may well hold code)
    moot = {c.path: c.reason for c in found.changes if c.kind == "none" and c.submodule and c.path in quiet}
    lines += [f"{KIND_ICONS['none']} {path} (submodule: {why})" for path, why in moot.items()]
    quiet = [path for path in quiet if path not in moot]
    if quiet:
        lines.append(f"{KIND_ICONS['none']} {_some(quiet)} (docs, tests, the toolkit: nothing to deploy)")
    for component, paths in sorted(absent.items()):
        folder = f"{changes.LAMBDA_DIR}/{component.partition(':')[2]}"
        lines.append(
            f"{KIND_ICONS['none']} {_some(paths)} ({folder}/ has no {changes.HANDLER} in this checkout: no function "
            f"{component} to deploy; one deployed stays until the stack that holds it is deployed without it)"
        )
    kinds = {c.kind for c in found.changes}
    canary, watch = env.lambda_canary, env.app_error_watch
    if "lambda" in kinds and canary.on:
        lines.append(
            f"🐤 Lambda code by the fast path goes through a canary: {canary.percent:g}% of live's requests for "
            f"{canary.seconds:g}s, {takes_it_back(canary.max_error_rate, canary.compare, 'the old version')} takes it "
            "back"
        )
    if "app" in kinds and watch.on:
        slower = (
            f", or a p90 over {watch.max_slowdown:g}× the release before's and 20 ms more,"
            if watch.max_slowdown
            else ""
        )
        lines.append(
            f"👀 the app's 5xx{' and response times' if slower else ''} are watched for {watch.seconds:g}s after its "
            f"rollout, {allowed(watch.max_error_rate)}{slower} rolls it back"
        )
    if kinds - {"none"} and env.alarm_watch.on:
        lines.append(f"🔔 {alarm_watch(env)[0].describe()}")
    return lines


def _gone_path(change: changes.Change, component: str) -> str:
    """The path of ``change`` in the folder of ``component``, a function this checkout has not: the old one of a file
    moved out of it (a function renamed: lambda/old/handler.py → lambda/new/handler.py), else its path."""
    folder = f"{changes.LAMBDA_DIR}/{component.partition(':')[2]}/"
    if change.old_path and change.old_path.startswith(folder) and not change.path.startswith(folder):
        return f"{change.old_path} (now {change.path})"
    return change.path


def _some(paths: Sequence[str]) -> str:
    """The first :data:`QUIET_SHOWN` of ``paths``, then how many more."""
    more = f" and {len(paths) - QUIET_SHOWN} more" if len(paths) > QUIET_SHOWN else ""
    return ", ".join(paths[:QUIET_SHOWN]) + more


def commit_lines(commits: Sequence[changes.ChangedBy], flag: str = "") -> list[str]:
    """The commits a deploy takes live, newest first: :data:`COMMITS_SHOWN` of them, then how many more (``flag``:
    :meth:`Config.env_flag`, in the command that lists them)."""
    if not commits:
        return []
    count = len(commits)
    lines = [f"📝 {count} commit{'s' if count > 1 else ''} behind these changes, newest first:"]
    for commit in commits[:COMMITS_SHOWN]:
        subject = commit.subject if len(commit.subject) <= 72 else commit.subject[:71] + "…"
        lines.append(f"   {commit.sha[:SHORT_SHA]} {subject} · {commit.author} · {', '.join(commit.components)}")
    if count > COMMITS_SHOWN:
        lines.append(f"   … and {count - COMMITS_SHOWN} more (inv diff{flag} --json lists them)")
    return lines


def estimate_rows(plan: Plan, env: EnvConfig, estimates: Mapping[str, float]) -> list[list[Any]]:
    """One row per step: #, step, target, its estimated time from the history (blank when never timed); a group's
    steps under it (as the run's table lists them), the group's row saying what runs side by side or one after the
    other, and its estimate (the longest of its steps side by side, the sum of those one after the other)."""
    rows: list[list[Any]] = []
    number = 0
    for depth, step in walk(plan.steps):
        if is_group(step):
            timed = any(_estimate(s, env, estimates) is not None for s in flat_steps((step,)))
            guess: float | None = estimate_total((step,), env, estimates) if timed else None
            rows.append(["", nested_name(step.name, depth), group_heading(step), _seconds(guess)])
            continue
        number += 1
        guess = _estimate(step, env, estimates)
        rows.append([number, nested_name(step.name, depth), target_of(step, env), _seconds(guess)])
    return rows


def _seconds(guess: float | None) -> str:
    return f"~{guess:.1f}s" if guess is not None else ""


def estimate_total(steps: Sequence[Step], env: EnvConfig, estimates: Mapping[str, float]) -> float:
    """The plan's estimated wall time: its steps one after the other, a parallel group as long as its longest
    member, or chain of members one waits for (a step never timed counts as 0)."""
    total = 0.0
    for step in steps:
        if isinstance(step, Parallel):
            needs = step.needs()
            ends: list[float] = []  # when each member would end, from the group's start
            for index, member in enumerate(step.steps):
                start = max((ends[n] for n in needs.get(index, ()) if n < index), default=0.0)
                ends.append(start + estimate_total((member,), env, estimates))
            total += max(ends, default=0.0)
        elif isinstance(step, StepSequence):
            total += estimate_total(step.steps, env, estimates)
        else:
            total += _estimate(step, env, estimates) or 0.0
    return total


def _estimate(step: Step, env: EnvConfig, estimates: Mapping[str, float]) -> float | None:
    """A step's median time in the history: of the same step on the same target (a stack), else of the step; a
    step of fixed length (a canary, an error watch: :meth:`Step.fixed_seconds`) takes that."""
    fixed = step.fixed_seconds()
    if fixed is not None:
        return fixed
    return estimates.get(f"{step.name}:{target_of(step, env)}", estimates.get(step.name))
