"""The commands that deploy: the app chain, one stack, one Lambda function, the full deploy, a rollback; and
inv destroy."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import botocore.exceptions

from deploykit import (
    alarm_list,
    auto,
    changes,
    ecs,
    git,
    history,
    lambda_chain,
    lambda_imports,
    leftovers,
    lock,
    packaging,
    planner,
    registry,
    syntax,
    watch,
    zip_cleanup,
)
from deploykit import canary as lambda_canary
from deploykit import rollback as rollbacks
from deploykit.app_chain import image_in_registry
from deploykit.aws import AwsFactory, at_once
from deploykit.commands.core import (
    LiveBefore,
    Runtime,
    aws_errors,
    declared_functions,
    head_revision,
    heard_when_not_run,
    live_record_planned,
    load_env,
    nothing_to_do_json,
    read_history,
    refuse_older,
    refuse_unaskable,
    refuse_unpushed_early,
    rolled_back_components,
    run_plan,
)
from deploykit.commands.previews import preview_stack
from deploykit.commands.promotion import RAN_BEFORE_RUNS, Promotion, ran_there, require_promoted, source_ran
from deploykit.commands.views import (
    AlarmReading,
    alarm_wait,
    endpoints_if_deployed,
    none_there,
    still_in_alarm,
    wait_for_alarms,
)
from deploykit.config import MAX_ALARM_WATCH, Config, EnvConfig
from deploykit.errors import DeployKitError, StepFailed, Superseded, UsageError, said
from deploykit.plan import Plan, RunReport, Step, dumps
from deploykit.smoke import Smoke
from deploykit.stack_chain import ARTIFACTS_OUTPUT, UploadLambdaCode, image_not_there, in_bucket
from deploykit.stacks import (
    StackOutputs,
    inv_command,
    is_not_there,
    stack_parameters,
)


def refuse_or_say(runtime: Runtime, broken: list[str], which: str, *, dry_run: bool) -> None:
    """Python that does not compile (deploykit.syntax): refused, or, in a dry run, said."""
    if broken and dry_run:
        runtime.stderr.write(f"⚠️  {syntax.said(broken, which)}: the deploy would be refused\n")
    syntax.refuse([] if dry_run else broken, which)


def lambda_check(
    *, function: str | None = None, as_json: bool = False, runtime: Runtime | None = None
) -> dict[str, list[str]]:
    """``inv lambda.check``: whether each function of lambda/ (or ``function``) would import on Lambda, as deploy.toml's
    ``[build]`` says the functions run (``lambda_runtime``, ``lambda_architecture``), judged as a deploy judges a zip
    it uploads (deploykit.lambda_imports), with no environment read: the handler's module is ``handler.py``, whose
    function is not judged (a deploy reads the Handler from Lambda). For a commit hook or a CI job without AWS access.
    Function → its problems; StepFailed (exit 1) when one has any."""
    runtime = runtime or Runtime()
    config = runtime.load_config()
    names = [lambda_chain.function_folder(config, function).name] if function else lambda_chain.function_names(config)
    build, target = config.build, config.lambda_target(None)
    found = {
        fn: [
            str(p) for p in lambda_chain.import_problems(config, lambda_chain.function_folder(config, fn), target, None)
        ]
        for fn in names
    }
    today = runtime.clock.now().date()
    deprecated = packaging.runtime_deprecation(build.lambda_runtime, today)
    if as_json:
        data = {
            "runtime": build.lambda_runtime,
            "architecture": build.lambda_architecture,
            "deprecation": deprecated,
            "functions": found,
        }
        runtime.stdout.write(dumps(data) + "\n")
    on = f"{build.lambda_runtime} on {build.lambda_architecture}"
    if deprecated:
        later = ", ".join(packaging.runtimes_to_move_to(today)) or "none deploykit knows"
        runtime.stderr.write(
            f"⚠️  deploy.toml's [build] lambda_runtime is {deprecated}: move the functions to a later one ({later})\n"
        )
    for fn, problems in found.items():
        if problems:
            runtime.stderr.write(f"❌ lambda/{fn} would not import on Lambda ({on}): {'; '.join(problems)}\n")
        else:
            runtime.stderr.write(f"✅ lambda/{fn} imports on Lambda ({on}) as far as its zip says\n")
    broken = [fn for fn, problems in found.items() if problems]
    if broken:
        raise StepFailed(
            f"{len(broken)} of {len(found)} function{'s' if len(found) > 1 else ''} would not import on Lambda: "
            + ", ".join(broken),
            next_step=lambda_imports.FIX,
        )
    return found


def check_packaging(runtime: Runtime, folders: Iterable[Path], *, dry_run: bool) -> None:
    """What packaging each function folder would refuse (packaging.check_function: an unpinned requirement, a link
    to a directory), before the environment is read: refused, or, in a dry run, said."""
    for folder in folders:
        try:
            packaging.check_function(folder)
        except UsageError as exc:
            if not dry_run:
                raise
            runtime.stderr.write(f"⚠️  {exc.message}: the deploy would be refused\n")


@heard_when_not_run(
    lambda stages, **_: "deploy.app" if {"build", "wait-healthy"} <= set(stages) else " → ".join(stages)
)
def app_chain(
    stages: Sequence[str],
    *,
    env: str | None = None,
    dry_run: bool = False,
    as_json: bool = False,
    allow_dirty: bool = False,
    allow_older: bool = False,
    rollback: bool = True,
    watch_errors: str | None = None,
    unpromoted: bool = False,
    allow_rolled_back: bool = False,
    watch_alarms: str | None = None,
    runtime: Runtime | None = None,
) -> RunReport | None:
    """Plan and run the app-chain ``stages`` (any of build, push, register-taskdef, roll-service, wait-healthy).
    Rolling the service onto a commit behind the one it runs is refused unless ``allow_older``, and onto the app as a
    person's rollback took it off unless ``allow_rolled_back`` (as deploy.auto does); ``watch_errors`` replaces how
    long the environment watches the app's errors after a rollout (deploykit.watch)."""
    runtime = runtime or Runtime()
    config, environment = load_env(runtime, env)
    environment = with_alarm_watch(with_watch(environment, watch_errors), watch_alarms)
    revision = head_revision(config, allow_dirty)
    if "roll-service" in stages and not dry_run:  # the service onto HEAD: what git alone tells, before any read
        refuse_unpushed_early(runtime, config, environment, [revision.tag])
    promotion = Promotion()
    # A stage that puts the app into the environment (an image in its registry, a revision, the service) takes what
    # the promote_from environment runs: push copies that image (a local build pushed under the commit's tag would
    # stay, as tags are immutable, and be what a later promoted deploy rolls out). A dry run too: its plan copies.
    if set(stages) & {"push", "register-taskdef", "roll-service"}:
        promotion = require_promoted(runtime, config, environment, revision, ["app"], unpromoted=unpromoted)
    if "build" in stages and not promotion.image:  # what the image would take (a promoted one: built already)
        broken = syntax.python_errors(config.root, syntax.component_code(config, "app", config.build.context))
        refuse_or_say(runtime, broken, "app", dry_run=dry_run)
    if "roll-service" in stages:
        refuse_unaskable(runtime, environment, dry_run=dry_run)
    aws = runtime.aws_factory(environment)
    reads: dict[str, Callable[[], Any]] = {}
    if "roll-service" in stages and not (allow_older or dry_run):  # a dry run of the chain reads nothing live
        reads["live"] = partial(auto.live_image_tag_or_empty, aws, environment)
    if "roll-service" in stages and not (allow_rolled_back or dry_run):
        reads["again"] = partial(rolled_back_components, runtime, config, environment, aws, ["app"], revision)
    if planner.needs_repository(stages):
        reads["uri"] = partial(registry.repository_uri, aws)
    if not dry_run and "push" in stages:
        reads["auth"] = partial(registry.push_auth, aws)  # kept for the push (or the copy), asked now
    if not dry_run and {"live", "again"} & set(reads):  # what the guards were checked against: still so under the lock?
        reads["record"] = partial(live_record_planned, aws, environment)
    with aws_errors(environment):
        read = at_once(reads)  # the image the service runs, the history, the repository and its token: one round trip
    if "live" in read:
        refuse_older(runtime, config, environment, "app", read["live"], revision)
    auto.refuse_deploying_again(read.get("again", {}), revision.sha, environment)
    plan = planner.app_chain_plan(
        config, environment, revision, stages, repository_uri=read.get("uri"), promoted=promotion.image
    )
    taken = _commits_since(config, "app", read.get("live"), revision) if plan.deploys else ()
    plan = dataclasses.replace(plan, unpromoted=promotion.unpromoted, commits=taken)
    return run_plan(
        runtime,
        config,
        environment,
        plan,
        dry_run=dry_run,
        as_json=as_json,
        aws=aws,
        rollback=rollback,
        planned_from=read.get("record"),
    )


def base_image(
    *,
    env: str | None = None,
    force: bool = False,
    dry_run: bool = False,
    as_json: bool = False,
    runtime: Runtime | None = None,
) -> RunReport | None:
    """Make sure the environment's base image is on the Docker engine (build the local one if needed)."""
    runtime = runtime or Runtime()
    config, environment = load_env(runtime, env)
    plan = planner.base_image_plan(config, environment, force=force)
    return run_plan(runtime, config, environment, plan, dry_run=dry_run, as_json=as_json)


# -- stacks -----------------------------------------------------------------------------------------------------


def live_image_tag(aws: AwsFactory, env: EnvConfig) -> str:
    """The image tag live now: the running service's, else the stack's current ImageTag parameter."""
    tag = auto.live_image_tag_or_empty(aws, env)
    if tag:
        return tag
    current = stack_parameters(aws, env.stacks.fargate)
    if current.get(planner.IMAGE_PARAMETER):
        return current[planner.IMAGE_PARAMETER]
    raise UsageError(
        f"no image is live in environment {env.name!r} (no service, no {env.stacks.fargate} stack)",
        next_step="pass --image-tag TAG (an image already pushed), or deploy everything: inv deploy.full",
    )


def current_code_keys(aws: AwsFactory, config: Config, env: EnvConfig) -> tuple[dict[str, str], list[str]]:
    """The Lambda code keys live now, and the functions never deployed (given this commit's zips, to upload).

    Live means what each function's ``live`` alias serves (its version's description names the key), so a stack
    deploy keeps what ``inv deploy.lambda`` shipped; else the ``<Function>CodeKey`` parameter of the stack holding it.
    """
    packages = planner.lambda_packages(config, env)
    names = lambda_chain.deployed_functions(StackOutputs.of(aws), env, required=False)
    keys = _code_keys_live(aws, env, names, packages)
    missing = sorted(fn for fn in packages if fn not in keys)
    keys.update({fn: packages[fn].key for fn in missing})
    return keys, missing


def _code_keys_live(
    aws: AwsFactory, env: EnvConfig, names: Mapping[str, str], functions: Iterable[str]
) -> dict[str, str]:
    """fn → the S3 key of the code live now, for those of ``functions`` that have one: what the ``live`` alias
    serves (``names``: fn → the deployed function's name), else the ``<Function>CodeKey`` parameter of the stack
    holding it (the API stack's, when none deployed does)."""
    functions = list(functions)
    return _served_or_given(_served_keys(aws, env, names, functions), code_given(aws, env, functions), functions)


def _served_keys(aws: AwsFactory, env: EnvConfig, names: Mapping[str, str], functions: Iterable[str]) -> dict[str, str]:
    """fn → the S3 key of the code the ``live`` alias of each of ``functions`` serves, for those that have one."""
    outputs = StackOutputs.of(aws)

    def stored(key: str) -> bool:  # the zip of a version published by hand: uploaded by deploykit, so still there?
        bucket = (outputs(env.stacks.registry) or {}).get(ARTIFACTS_OUTPUT)
        return bool(bucket) and in_bucket(aws.client("s3"), str(bucket), key)

    chosen = set(functions)
    wanted = {fn: n for fn, n in names.items() if fn in chosen}
    return lambda_chain.live_code_keys(aws.client("lambda"), wanted, stored)


def _served_or_given(served: Mapping[str, str], given: Mapping[str, str], functions: Iterable[str]) -> dict[str, str]:
    """fn → what its alias serves, else what its stack was given, for those of ``functions`` that have either."""
    keys = {fn: served.get(fn) or given.get(fn) for fn in functions}
    return {fn: key for fn, key in keys.items() if key}


def live_code_of(aws: AwsFactory, env: EnvConfig) -> planner.LiveCode | None:
    """The deployed functions' code (the stacks deployed so far hold them: a full deploy finds any stack its
    function's fast path left on other code, planner.full_plan); None when none is deployed."""
    names = lambda_chain.deployed_functions(StackOutputs.of(aws), env, required=False)
    if not names:
        return None
    code = at_once(
        {"served": partial(_served_keys, aws, env, names, names), "given": partial(code_given, aws, env, names)}
    )
    return planner.LiveCode(names, _served_or_given(code["served"], code["given"], names), code["given"])


def code_given(aws: AwsFactory, env: EnvConfig, functions: Iterable[str]) -> dict[str, str]:
    """fn → the code key the stack holding it (the API stack, when none deployed does) was last deployed with, for
    those of ``functions`` it names one for (its ``<Function>CodeKey`` parameter)."""
    outputs = StackOutputs.of(aws)
    hosts, stacks = lambda_chain.function_hosts(outputs, env), env.stacks.roles()
    keys = {fn: outputs.parameters(stacks[hosts.get(fn, "api")]).get(planner.code_parameter(fn)) for fn in functions}
    return {fn: key for fn, key in keys.items() if key}


@heard_when_not_run(lambda stack, **_: f"deploy.stack {stack}")
def deploy_stack(
    stack: str,
    *,
    env: str | None = None,
    image_tag: str | None = None,
    allow_replace: bool = False,
    approve_access: bool = False,
    force_synth: bool = False,
    smoke: bool = True,
    dry_run: bool = False,
    as_json: bool = False,
    unpromoted: bool = False,
    allow_rolled_back: bool = False,
    allow_dirty: bool = False,
    revert_drift: bool = False,
    watch_alarms: str | None = None,
    runtime: Runtime | None = None,
) -> RunReport | None:
    """One stack through a change set, with its inputs as they are live now; then smoke. Refuses, as deploy.auto
    does, to deploy the stack as a person's rollback took it off, unless ``allow_rolled_back``; and uncommitted
    changes (its synthesis reads the work tree), unless ``allow_dirty``. ``revert_drift``: a drift-aware change set
    (what was changed outside CloudFormation goes back to the template)."""
    runtime = runtime or Runtime()
    config, environment = load_env(runtime, env)
    environment = with_alarm_watch(environment, watch_alarms)
    role = planner.role_of(environment, stack)
    if image_tag and role != planner.HOSTED_BY["app"]:  # the only stack with an image to roll out
        names = planner.stack_roles(environment)
        raise UsageError(
            f"--image-tag is for {names[planner.HOSTED_BY['app']]}, which runs the app's image; {names[role]} has none",
            next_step=f"inv deploy.stack {names[role]} without --image-tag",
        )
    if image_tag:
        ecs.check_image_tag(image_tag)
    revision = head_revision(config, allow_dirty)
    refuse_unaskable(runtime, environment, dry_run=dry_run)
    if not dry_run:  # what git alone tells: before the environment is read
        refuse_unpushed_early(runtime, config, environment, [revision.tag, *([image_tag] if image_tag else [])])
    aws = runtime.aws_factory(environment)
    reads: dict[str, Callable[[], Any]] = {}
    if not allow_rolled_back:  # a dry run too
        guarded, heads = [f"stack:{role}"], {}
        if image_tag and role == planner.HOSTED_BY["app"]:  # the stack rolls the app out at that tag: guarded too
            guarded.append("app")
            heads["app"] = image_tag
        reads["again"] = partial(rolled_back_components, runtime, config, environment, aws, guarded, revision, heads)
    if role == "fargate" and not image_tag:
        reads["tag"] = partial(live_image_tag, aws, environment)
    if role == "fargate" and image_tag:  # a tag not in the registry: refused now, a dry run too, not after synthesis
        reads["image"] = partial(_image_there, aws, image_tag)
    if planner.holds_functions(role):
        reads["keys"] = partial(current_code_keys, aws, config, environment)
    if not dry_run and reads:  # what the guard and the inputs were read from: still so under the lock?
        reads["record"] = partial(live_record_planned, aws, environment)
    with aws_errors(environment):
        read = at_once(reads)  # the history and the stack's inputs: one round trip
    auto.refuse_deploying_again(read.get("again", {}), revision.sha, environment)
    tag = image_tag or read.get("tag", "")
    if read.get("image") is False:
        raise image_not_there(planner.stack_roles(environment)[role], environment.repository, tag, environment.name)
    keys, uploads = read.get("keys", ({}, []))
    # a function the environment never had that this stack takes (its template declares its code) goes out with it
    # at this commit's code: checked against promote_from as deploy.lambda's would be, a dry run too (as
    # deploy.auto's: it shows whether the deploy would be let through), and recorded live with the stack
    uploads = sorted(declared_functions(runtime, config, environment, aws, [role], uploads))
    components = [f"stack:{role}", *(f"lambda:{fn}" for fn in uploads)]
    promotion = require_promoted(runtime, config, environment, revision, components, unpromoted=unpromoted)
    with aws_errors(environment):
        outputs = StackOutputs.of(aws)
        names = planner.stack_roles(environment)
        missing = [name for other, name in names.items() if other != role]
        missing = [name for name in missing if outputs(name) is None] if smoke else []
        # an image given to a Fargate stack not deployed yet: the stack creates the service, the release command
        # runs after it (in the service's first revision), as an environment's first deploy.full runs it
        first = bool(image_tag) and role == "fargate" and config.release.on and outputs(names[role]) is None
    if missing:  # a new environment, built stack by stack: no app to check end to end yet
        runtime.stderr.write(
            f"ℹ️  no smoke: {environment.name} is not fully deployed ({', '.join(missing)} not there), so there is no "
            f"app to check end to end yet; inv deploy.full --env {environment.name} deploys it all\n"
        )
        smoke = False
    plan = planner.deploy_stack_plan(
        config,
        environment,
        stack,
        image_tag=tag,
        code_keys=keys,
        uploads=uploads,
        allow_replace=allow_replace,
        approve_access=approve_access,
        force_synth=force_synth,
        smoke=smoke,
        revision=revision,
        new_image=bool(image_tag),
        first=first,
        revert_drift=revert_drift,
    )
    live_sha = ((read.get("record") or {}).get(f"stack:{role}") or {}).get("sha")  # as the live record has it
    taken = _commits_since(config, f"stack:{role}", live_sha, revision)
    plan = dataclasses.replace(plan, unpromoted=promotion.unpromoted, commits=taken)
    if image_tag and role == planner.HOSTED_BY["app"]:  # the stack rolls that image out: the app is live at it too
        plan = dataclasses.replace(plan, deploys=(*plan.deploys, ("app", image_tag)))
        if environment.promote_from and not source_ran(runtime, config, environment, "app", image_tag):
            plan = _unpromoted_image(runtime, environment, image_tag, plan, unpromoted=unpromoted)
    return run_plan(
        runtime, config, environment, plan, dry_run=dry_run, as_json=as_json, aws=aws, planned_from=read.get("record")
    )


def _unpromoted_image(runtime: Runtime, env: EnvConfig, tag: str, plan: Plan, *, unpromoted: bool) -> Plan:
    """``plan`` of a Fargate stack given ``--image-tag TAG`` that the environment it is promoted from neither runs nor
    ran: refused (UsageError, nothing changed), or with ``unpromoted`` said and recorded so."""
    source = env.promote_from
    why = f"{source} neither runs nor ran the image {tag}"
    if not unpromoted:
        raise UsageError(
            f"{env.name} takes only what {source} runs (promote_from = {source!r}), and --image-tag rolls out the app "
            f"at {tag}: {why}; nothing was changed",
            next_step=f"deploy it to {source} first and let it prove itself there, or give an image it runs; an "
            "emergency fix that cannot wait: --unpromoted",
        )
    runtime.stderr.write(
        f"⚠️  deploying to {env.name} an image {source} does not run (--unpromoted; its history record says so): {why}\n"
    )
    return dataclasses.replace(plan, unpromoted=tuple(sorted({*plan.unpromoted, "app"})))


def _image_there(aws: AwsFactory, tag: str) -> bool:
    """Whether the environment's registry has its repository's image ``tag`` (no registry stack: UsageError); a plain
    registry's URI is known without a call, ECR's repository is asked by its name."""
    return image_in_registry(aws, registry.repository_uri(aws) if aws.env.registry else aws.env.repository, tag)


@heard_when_not_run(lambda name, **_: f"deploy.lambda {name}")
def deploy_lambda(
    name: str,
    *,
    env: str | None = None,
    allow_dirty: bool = False,
    allow_older: bool = False,
    smoke: bool = True,
    dry_run: bool = False,
    as_json: bool = False,
    rollback: bool = True,
    canary: str | None = None,
    bake: str | None = None,
    unpromoted: bool = False,
    allow_rolled_back: bool = False,
    watch_alarms: str | None = None,
    runtime: Runtime | None = None,
) -> RunReport | None:
    """The Lambda fast path for one function of lambda/: upload, update code, publish, [canary,] move the alias;
    smoke. Moving the alias onto a commit behind the one it serves is refused unless ``allow_older``, and onto the
    function as a person's rollback took it off unless ``allow_rolled_back``; ``canary`` and ``bake`` replace the
    environment's canary settings (deploykit.canary)."""
    runtime = runtime or Runtime()
    config, environment = load_env(runtime, env)
    environment = with_alarm_watch(with_canary(environment, canary, bake), watch_alarms)
    folder = lambda_chain.function_folder(config, name)  # an unknown function is refused before anything else
    revision = head_revision(config, allow_dirty)
    code = syntax.component_code(config, f"lambda:{name}", folder.relative_to(config.root).as_posix())  # its zip's
    refuse_or_say(runtime, syntax.python_errors(config.root, code), f"lambda:{name}", dry_run=dry_run)
    check_packaging(runtime, [folder], dry_run=dry_run)
    refuse_unaskable(runtime, environment, dry_run=dry_run)
    if not dry_run:
        refuse_unpushed_early(runtime, config, environment, [revision.tag])
    aws = runtime.aws_factory(environment)
    with aws_errors(environment):
        function_name = lambda_chain.deployed_function(StackOutputs.of(aws), environment, name)
    component = f"lambda:{name}"
    reads: dict[str, Callable[[], Any]] = {}
    if not allow_older or (smoke and not dry_run):  # the version the alias serves: the commit it names (the guard
        # against going back), and whether the live record verified it (else smoke runs whatever the steps find)
        reads["serving"] = partial(lambda_chain.live_configuration, aws.client("lambda"), function_name)
    if not allow_rolled_back:
        reads["again"] = partial(rolled_back_components, runtime, config, environment, aws, [component], revision)
    guarded = not (allow_older and allow_rolled_back)  # what the guards were checked against: still so under the lock?
    if (not dry_run and reads) or not allow_older:  # also what the guard reads of a version that names no commit
        reads["record"] = partial(live_record_planned, aws, environment)
    with aws_errors(environment):
        read = at_once(reads)  # the commit the alias serves and the history: one round trip
    serving = read.get("serving")
    if not allow_older:
        # the commit the version names (the fast path's), else the one the live record names, as deploy.auto reads
        # it: a version CloudFormation or a person published names none, and the guard let any commit through
        recorded = ((read.get("record") or {}).get(component) or {}).get("sha")
        read["live"] = (lambda_chain.git_sha_of(serving.get("Description")) or recorded) if serving else None
        refuse_older(runtime, config, environment, component, read["live"], revision)
    auto.refuse_deploying_again(read.get("again", {}), revision.sha, environment)
    # a dry run too, as deploy.auto's: it shows whether the deploy would be let through
    promotion = require_promoted(runtime, config, environment, revision, [component], unpromoted=unpromoted)
    plan = lambda_chain.lambda_plan(config, environment, revision, name, function_name=function_name, smoke=smoke)
    if serving and "record" in read and lambda_chain.serving_unverified((read["record"] or {}).get(component), serving):
        # a run that failed after moving the alias (--no-rollback, interrupted) left it there: a rerun whose steps
        # all find their result in place still smokes what serves before the live record takes it as verified
        plan = dataclasses.replace(
            plan, steps=tuple(Smoke(step.only, always=True) if isinstance(step, Smoke) else step for step in plan.steps)
        )
    taken = _commits_since(config, component, read.get("live"), revision)
    plan = dataclasses.replace(plan, unpromoted=promotion.unpromoted, commits=taken)
    return run_plan(
        runtime,
        config,
        environment,
        plan,
        dry_run=dry_run,
        as_json=as_json,
        aws=aws,
        rollback=rollback,
        planned_from=read.get("record") if guarded else None,
        # the Handler of the version the alias serves, for the check that the new zip would import
        handlers={name: serving["Handler"]} if serving and serving.get("Handler") else None,
    )


def _commits_since(
    config: Config, component: str, live: str | None, revision: git.Revision
) -> tuple[tuple[str, str, str], ...]:
    """The commits a deploy of ``component`` takes live (deploy.auto's 📝 lines, for its record and the plugins):
    those behind its changes since ``live``, its live SHA or image tag as the guard against going back read it;
    none when that is unknown (not read: --allow-older; never deployed; a commit this clone lacks)."""
    if not live:
        return ()
    try:
        found = changes.detect(config, {component: live}, include_uncommitted=bool(revision.dirty))
    except DeployKitError:
        return ()
    return changes.as_taken(changes.commits_behind(config.root, found))


def with_watch(environment: EnvConfig, duration: str | None) -> EnvConfig:
    if duration is None:
        return environment
    seconds = watch.parse_duration(duration, "--watch-errors")
    return dataclasses.replace(
        environment, app_error_watch=dataclasses.replace(environment.app_error_watch, seconds=seconds)
    )


def with_alarm_watch(environment: EnvConfig, duration: str | None) -> EnvConfig:
    """``environment`` whose own alarms are read for ``duration`` after smoke (``--watch-alarms``) rather than its
    ``[environments.NAME.alarm_watch] seconds``; None: as deploy.toml has it. Refused (UsageError) without alarms
    named, or beyond the setting's longest (three hours)."""
    if duration is None:
        return environment
    seconds = watch.parse_duration(duration, "--watch-alarms")
    if not environment.alarm_watch.on:
        raise UsageError(
            f"--watch-alarms {duration}: [environments.{environment.name}.alarm_watch] names no alarms to watch",
            next_step=f"name them in deploy.toml ([environments.{environment.name}.alarm_watch] alarms = [...]), or "
            "leave out --watch-alarms",
        )
    if seconds > MAX_ALARM_WATCH:
        raise UsageError(
            f"--watch-alarms {duration} is longer than {MAX_ALARM_WATCH / 3600:g} hours (CloudFormation's longest "
            "monitoring time, as deploy.toml's seconds)",
            next_step="pass 3h or less",
        )
    return dataclasses.replace(environment, alarm_watch=dataclasses.replace(environment.alarm_watch, seconds=seconds))


def with_alarms_once(environment: EnvConfig, once: bool) -> EnvConfig:
    """``environment`` whose own alarms, with ``once``, are read once after smoke rather than watched a while."""
    if not once:
        return environment
    return dataclasses.replace(environment, alarm_watch=dataclasses.replace(environment.alarm_watch, seconds=0.0))


def with_canary(environment: EnvConfig, percent: str | None, bake: str | None) -> EnvConfig:
    if percent is None and bake is None:
        return environment
    return dataclasses.replace(
        environment, lambda_canary=lambda_canary.with_options(environment.lambda_canary, percent, bake)
    )


@heard_when_not_run("rollback")
def rollback(
    *,
    env: str | None = None,
    to: str | None = None,
    component: str | None = None,
    run: str | None = None,
    smoke: bool = True,
    allow_replace: bool = False,
    approve_access: bool = False,
    wait_alarms: str | None = None,
    dry_run: bool = False,
    as_json: bool = False,
    runtime: Runtime | None = None,
) -> RunReport | None:
    """Put the app (a fresh task-definition revision with an earlier image), one Lambda function (its alias on an
    earlier version) or one stack (its template as an earlier commit's cdk/ synthesizes it, what runs kept) back
    on commit ``to``, else on the previous successful deploy in the history; then smoke. ``run`` (a record id, or
    ``last``): every component that run deployed back to what was live before it, in one plan, smoke once.

    Then the alarms of the environment's alarm watch still in ALARM are said (:func:`_alarms_after_rollback`);
    ``wait_alarms`` (a duration): waited for until none is, StepFailed (exit 1) when one still is by then.

    Refuses (UsageError, nothing changed) what cannot be rolled back to: an image no longer in the registry, a
    Lambda commit no version runs (tagged with it, or with its code), a commit this clone lacks (a stack), an
    empty history. ``allow_replace`` and ``approve_access`` are deploy.stack's, for a stack. See deploykit.rollback."""
    runtime = runtime or Runtime()
    config, environment = load_env(runtime, env)
    if run is not None and (component is not None or to is not None):
        raise UsageError(
            f"--run goes alone: it puts back every component of that run as it was before it, not with "
            f"{'--to' if to is not None else '--component'}",
            next_step="leave out --component and --to, or --run",
        )
    target_component = (
        None if run is not None else rollbacks.parse_component(component or "app", config, env=environment)
    )
    wait = None if wait_alarms is None else alarm_wait(wait_alarms, "--wait-alarms")
    if wait is not None and not environment.alarm_watch.on:
        raise UsageError(
            f"--wait-alarms {wait_alarms}: [environments.{environment.name}.alarm_watch] names no alarms to wait for",
            next_step=f"name them in deploy.toml ([environments.{environment.name}.alarm_watch] alarms = [...]), or "
            "leave out --wait-alarms",
        )
    if target_component is not None and target_component.kind != "stack" and (allow_replace or approve_access):
        flag = "--allow-replace" if allow_replace else "--approve-access"
        raise UsageError(f"{flag} is for a stack's rollback", next_step="leave it out, or use --component stack:<role>")
    if run is not None:  # what can be told without the environment, before it is read
        rollbacks.run_prefix(run, environment)
    elif target_component is not None and target_component.kind == "stack":
        if to is not None:
            rollbacks.check_stack_to(config.root, to)
    elif target_component is not None:
        if target_component.kind == "app":
            rollbacks.check_app(environment)
        if to is not None:
            rollbacks.normalize_to(to)
    aws = runtime.aws_factory(environment)
    # what is live as this rollback starts, checked again under its lock; read before the history it works out what
    # to go back from (a deploy writes its history record before its live record): a deploy finishing between the two
    # reads is then never one the rollback takes off unseen (the live record, read first, names what it did not)
    reading = None if dry_run else LiveBefore(runtime, aws, environment)
    planned_from = reading.result() if reading is not None else None
    back = partial(
        _rollback_of,
        runtime,
        config,
        environment,
        aws,
        allow_replace=allow_replace,
        approve_access=approve_access,
        preview=dry_run,
    )
    if target_component is None:
        record, plan = _run_rollback_plan(runtime, environment, aws, str(run), back, smoke=smoke)
        if plan is None:
            if as_json:  # titled as its plan would be: the run it names, whatever --run said (last, a time)
                runtime.stdout.write(nothing_to_do_json(environment.name, f"rollback run {record.id}") + "\n")
            return None
    else:
        target, found = back(target_component, to, smoke=smoke)
        if found is None:
            if as_json:
                runtime.stdout.write(nothing_to_do_json(environment.name, target.title) + "\n")
            return None
        plan = found if to is None else _untried(runtime, config, environment, aws, target, found)
    look = f"look at what is live then (inv history --env {environment.name}); rerun the rollback if it is still wanted"
    try:
        report = run_plan(
            runtime,
            config,
            environment,
            plan,
            dry_run=dry_run,
            as_json=as_json,
            aws=aws,
            planned_from=planned_from,
            then=partial(_after_rollback, runtime, config, environment, aws, wait_alarms),
        )
    except lock.LockHeld as held:  # never waited for: what a rollback goes back from may change meanwhile
        raise UsageError(
            held.message,
            next_step=f"wait for it to finish, {look} (a rollback does not wait for the lock: the deploy it would "
            f"wait for changes what it goes back from); if that deploy is dead (killed, its machine gone), break the "
            f"lock: inv unlock --env {environment.name}",
        ) from None
    except Superseded as stale:  # not started again: what it would go back from is another deploy's now
        raise UsageError(stale.message, next_step=look) from None
    return report


def _untried(
    runtime: Runtime, config: Config, env: EnvConfig, aws: AwsFactory, target: rollbacks.Target, plan: Plan
) -> Plan:
    """``plan`` as it goes to ``target`` (``--to``): when the environment never ran it (its newest runs of the
    component, and what was live before them), a rollback brings something new, and is judged as a deploy
    (Plan.untried: a freeze, require_pushed, the import check); with ``promote_from``, the environment released from
    must run it or have run it, else UsageError (exit 2, nothing changed)."""
    key = target.component.key
    if ran_there(aws, key, target.sha):
        return plan
    runtime.stderr.write(
        f"⚠️  {key} never ran at {target.sha} in {env.name} (its newest {RAN_BEFORE_RUNS} runs): going to it brings "
        "something new, judged as a deploy (a freeze, require_pushed"
        + (f", promote_from = {env.promote_from!r}" if env.promote_from else "")
        + ")\n"
    )
    if env.promote_from and not source_ran(runtime, config, env, key, target.sha):
        source = env.promote_from
        raise UsageError(
            f"{env.name} takes only what {source} runs (promote_from = {source!r}), and neither ran "
            f"{key} at {target.sha}: nothing was changed",
            next_step=f"roll back to what ran in {env.name} (inv rollback --env {env.name} --component {key}, "
            f"without --to, goes to the deploy before), or deploy {target.sha} to {source} first",
        )
    return dataclasses.replace(plan, untried=True)


def _after_rollback(
    runtime: Runtime, config: Config, env: EnvConfig, aws: AwsFactory, wait: str | None, report: RunReport
) -> tuple[dict[str, Any], DeployKitError | None]:
    """After a rollback that worked: what HEAD still has that the next deploy refuses to bring back, then the alarms
    (:func:`_alarms_after_rollback`), as ``--json`` adds them (``alarms``), and the failure of their wait."""
    _still_in_head(runtime, config, env, aws, report.plan)
    outcome, failure = _alarms_after_rollback(runtime, env, aws, wait)
    return ({"alarms": outcome} if outcome is not None else {}), failure


def _alarms_after_rollback(
    runtime: Runtime, env: EnvConfig, aws: AwsFactory, wait: str | None
) -> tuple[dict[str, Any] | None, StepFailed | None]:
    """After a rollback: how the alarms of ``env``'s alarm watch stand (read once), those still in ALARM named with
    the command that waits for them; a read that fails is said. ``wait`` (a duration, checked already): waited for
    until none is in ALARM. Gives them as ``--json`` says them (``in_alarm``, ``clear``, ``waited``; ``unread``: why
    they could not be read; None without alarms named), and the failure of the wait (exit 1: the rollback went
    through, the alarms did not clear) when one still is in ALARM by then, one is deleted meanwhile, or they cannot
    be read."""
    if not env.alarm_watch.on:
        return None, None
    seconds = None if wait is None else alarm_wait(wait, "--wait-alarms")
    reading = AlarmReading(runtime, env, aws)
    try:
        found = reading.read()
        if not found:
            raise none_there(env, "whether the rollback cleared them cannot be told")
    except UNREAD as exc:
        if wait is None:
            runtime.stderr.write(f"⚠️  the alarms after the rollback could not be read: {said(exc)}\n")
            return {"unread": said(exc)}, None
        return {"unread": said(exc), "clear": False}, _alarms_unread(env, wait, exc)
    alarming = watch.in_alarm(found)
    outcome: dict[str, Any] = {"in_alarm": alarming, "clear": not alarming, "waited": None}
    if not alarming:
        runtime.stderr.write(f"🔔 the alarms after the rollback: {watch.states(found)}, none in ALARM\n")
        return outcome, None
    since = ", ".join(f"{name}{alarm_list.since(found[name])}" for name in alarming)
    them = "it" if len(alarming) == 1 else "them"
    if seconds is None or wait is None:
        runtime.stderr.write(
            f"🔔 still in ALARM after the rollback: {since}; an alarm leaves it once its metric has been within its "
            f"threshold for enough of its periods: to wait for {them}, inv alarms --env {env.name} --wait "
            f"{alarm_list.suggested_wait(found, alarming, local=env.is_local)}\n"
        )
        return outcome, None
    runtime.stderr.write(f"🔔 still in ALARM after the rollback: {since}; waiting up to {lock.duration(seconds)}\n")
    try:
        waited = wait_for_alarms(runtime, env, reading, found, seconds)
    except UNREAD as exc:
        return {"unread": said(exc), "clear": False}, _alarms_unread(env, wait, exc)
    outcome = {"in_alarm": watch.in_alarm(waited.found), "clear": waited.clear, "waited": round(waited.seconds, 1)}
    if waited.gone:
        outcome["gone"] = list(waited.gone)
    if not waited.clear:
        return outcome, still_in_alarm(env, waited, what="the rollback went through, but ")
    runtime.stderr.write(f"✅ {alarm_list.cleared(waited)}: the rollback cleared {them}\n")
    return outcome, None


UNREAD = (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError, DeployKitError)


def _alarms_unread(env: EnvConfig, wait: str, exc: Exception) -> StepFailed:
    """The failure of a rollback's wait for its alarms (``wait``: as given) that could not read them (``exc``)."""
    return StepFailed(
        f"the rollback went through, but its alarms could not be read to wait for them: {said(exc)}",
        next_step=f"inv alarms --env {env.name} --wait {wait}, once they can be",
    )


def _still_in_head(runtime: Runtime, config: Config, env: EnvConfig, aws: AwsFactory, plan: Plan) -> None:
    """After a rollback: say which of its components HEAD still has as the rollback found them, which the next
    deploy.auto refuses to bring back (auto.deploying_again). Best effort: a read that fails says nothing."""
    try:
        found = history.History.of(aws, env)
        records = found.records(1) if found else []  # the rollback's own record
        revision = head_revision(config, allow_dirty=True)
        deployed = {component for component, _ in plan.deploys}
        again = auto.deploying_again(config, records, deployed, uncommitted=bool(revision.dirty))
    except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError, DeployKitError):
        return
    for why, count in auto.said_together(again):
        them = "it" if count == 1 else "them"
        runtime.stderr.write(
            f"⛔ HEAD ({revision.short}) still has {why}: the next inv deploy.auto refuses to bring {them} back; "
            f"revert or fix {them} in a commit\n"
        )


RollbackOf = Callable[..., "tuple[rollbacks.Target, Plan | None]"]


def _rollback_of(
    runtime: Runtime,
    config: Config,
    env: EnvConfig,
    aws: AwsFactory,
    component: rollbacks.Component,
    to: str | None,
    *,
    smoke: bool,
    allow_replace: bool,
    approve_access: bool,
    preview: bool,
    undo: rollbacks.RunUndo | None = None,
) -> tuple[rollbacks.Target, Plan | None]:
    """Resolve one component's rollback and say it; the plan, or None when it already runs the target. ``undo``: the
    run being undone, when this component's rollback is one of its undo's (``to`` is then what was live before it)."""
    known = undo.known if undo is not None else None
    if (
        to is None
        and undo is None
        and (stopped := _unfinished_rollback(aws, env, component.key))
        and (unfinished := _unfinished_to(stopped, component))
    ):
        to, how = unfinished
        runtime.stderr.write(
            f"↩️  the last rollback of {component.key}, to {to}, {how} before it was verified: this one finishes it "
            "(--to names another commit)\n"
        )
    with aws_errors(env):
        if component.kind == "stack":
            target = rollbacks.resolve_stack(aws, config, env, component, to, known=known)
        else:
            target, plan = rollbacks.rollback_plan(
                aws,
                env,
                component,
                to=to,
                smoke=smoke,
                code_at=partial(
                    lambda_chain.code_at,
                    config.root,
                    component.function,
                    **config.lambda_target(env),
                ),
                package_at=partial(rollbacks.package_at, config, env, component.function),
                ran=undo is not None,
            )
    what = target.component.key + (f" (version {target.version})" if target.version else "")
    unverified, went_from = False, target.live  # what it goes back from, for its record
    if target.live == target.sha and not target.routed:
        recorded = _recorded_otherwise(aws, env, target)
        if recorded is None:
            runtime.stderr.write(f"✅ nothing to roll back: {what} already runs {target.sha} in {env.name}\n")
            return target, None
        # a rollback stopped after its move (Ctrl-C in its smoke), or not recorded: never verified, nor recorded
        runtime.stderr.write(
            f"↩️  {what} already runs {target.sha}, but the live record names {recorded[: git.SHORT_SHA]} (a rollback "
            "never recorded: stopped before it was verified, or its record not written): what is in place is "
            "skipped, then " + ("smoked and recorded\n" if smoke else "recorded (--no-smoke: not smoked)\n")
        )
        unverified, went_from = True, recorded
    if target.republish:
        runtime.stderr.write(
            f"📦 no version of {target.component.key} runs the code of {target.sha} (the function made anew since: "
            "moved to another stack, or replaced; or that version deleted): it is published again from that commit's "
            "code\n"
        )
    if target.routed:  # the move clears it
        shares = lambda_chain.routing_shares(target.routed)
        cause = lambda_chain.shift_cause(target.routed)
        runtime.stderr.write(f"↩️  its alias also sends {shares} ({cause}): the rollback clears that\n")
    runtime.stderr.write(
        f"⏪ rollback {what} in {env.name}: {target.live or '(unknown)'} → {target.sha} "
        f"[{undo.why if undo is not None else target.source}]\n"
    )
    if component.kind == "stack":
        again = (
            ("--run", undo.record.id) if undo is not None else ("--component", target.component.key, "--to", target.sha)
        )
        plan = _stack_rollback_plan(
            runtime,
            config,
            env,
            aws,
            target,
            allow_replace=allow_replace,
            approve_access=approve_access,
            smoke=smoke,
            preview=preview,
            rerun=inv_command("rollback", *again, env=env.name),
            undo=undo,
        )
    if plan is not None and went_from:  # what it goes back from, for its record (the live record may not say it)
        plan = dataclasses.replace(plan, found=((target.component.key, went_from),))
    if plan is not None and unverified:  # its smoke runs though every step before it finds its work done
        steps = tuple(dataclasses.replace(s, always=True) if isinstance(s, Smoke) else s for s in plan.steps)
        plan = dataclasses.replace(plan, steps=steps)
    return target, plan


def _unfinished_rollback(aws: AwsFactory, env: EnvConfig, component: str) -> history.Record | None:
    """The newest run of ``component`` when it is a rollback that did not end well (Ctrl-C in its smoke: its move
    stayed, never verified); None otherwise, or when the history cannot be read (what runs is then taken as it is)."""
    try:
        found = history.History.of(aws, env)
        newest = found.records_of(component, 1) if found is not None else []
    except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError):
        return None
    return newest[0] if newest and newest[0].rollback and not newest[0].ok else None


def _unfinished_to(record: history.Record, component: rollbacks.Component) -> tuple[str, str] | None:
    """The commit an unfinished rollback (:func:`_unfinished_rollback`) went back to, and how it ended, when it was
    interrupted, or failed in a step that judges no release (AWS refused a call of its move, or its answer was lost:
    the move may be in): a rerun of ``inv rollback`` without --to finishes it, where it went back one deploy
    further, from what runs now (forward onto the release it was rolling back from, when the move was in and the
    failed record took nothing off). Not after a refusal (nothing changed), nor when the release it went back to
    failed a check of its own (wait-healthy, smoke: the rerun goes back further, past it)."""
    steps = record.steps  # groups' steps too
    if record.refused:
        return None
    if any(step.get("detail") == "interrupted" for step in steps):
        how = "was interrupted"
    elif any(step.get("status") == "failed" and step.get("step") in rollbacks.TRIGGERS for step in steps):
        return None
    else:
        how = "failed"
    target = record.components.get(component.key)
    return (target, how) if target else None


def _recorded_otherwise(aws: AwsFactory, env: EnvConfig, target: rollbacks.Target) -> str | None:
    """What the live record names for ``target``'s component, which runs ``target`` already, when that is another
    commit: a rollback to it that was never recorded (stopped in its smoke, failed after its move went in, or its
    record not written), whose rerun skips what is in place, smokes it and records it, where it said "nothing to
    roll back" and the next deploy.auto, finding no record of the rollback, brought back what it took off. None when
    the live record agrees, names none, or cannot be read."""
    try:
        found = history.History.of(aws, env)
        recorded = str(found.live().get(target.component.key, {}).get("sha") or "") if found is not None else ""
    except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError, history.LiveRecordUnreadable):
        return None
    short = target.sha[: git.SHORT_SHA]
    return recorded if recorded and recorded[: git.SHORT_SHA] != short else None


def _run_rollback_plan(
    runtime: Runtime, env: EnvConfig, aws: AwsFactory, run: str, go_back: RollbackOf, *, smoke: bool
) -> tuple[history.Record, Plan | None]:
    """The run's record, and one plan that puts every component the run deployed back on what was live before it,
    in a deploy's order and side by side as a deploy (the stacks by level, the functions, the app: see
    rollbacks.run_plan_of); None when each already is."""
    with aws_errors(env):
        found = read_history(aws, env, runtime)
        reads: dict[str, Callable[[], Any]] = {
            "records": partial(found.records, rollbacks.HISTORY_DEPTH),
            "live": found.live,
        }
        read = at_once(reads)
    records: list[history.Record] = read["records"]
    moment = rollbacks.run_moment(run, env)
    since = None
    if (
        moment is not None
        and len(records) >= rollbacks.HISTORY_DEPTH
        and not any(r.id.startswith(rollbacks.run_prefix(run, env)) for r in records)
    ):  # older than the newest records: the history since it (the runs after it are checked too)
        with aws_errors(env):
            records, since = found.records_since(moment)[::-1], moment
    record = rollbacks.find_run(records, run, env, since=since)
    newer = records[: records.index(record)]
    targets = rollbacks.undo_targets(record, newer, read["live"], env)
    quiet = rollbacks.unchanged_by(record, planner.stack_roles(env))
    # functions the run added and those it took out: the rollback of the stacks holding them takes out the first,
    # brings back the others
    added, back = rollbacks.taken_out(record), rollbacks.restored(record)
    listed = ", ".join(
        [f"{c} → {sha}" for c, sha in targets]
        + [f"{how}: undone already" for how in rollbacks.put_back_since(record, newer, read["live"]).values()]
        + [f"{c} taken out (the run added it)" for c in added]
        + [f"{c} back at {sha} (the run took it out)" for c, sha in back.items()]
    )
    runtime.stderr.write(
        f"⏪ rollback run {record.id} ({record.command} at {record.when} by {record.who}) in {env.name}: {listed}\n"
    )
    undo = rollbacks.RunUndo(
        record,
        (records, read["live"]),  # a stack's resolution reads no history again
        removing=tuple(c.removeprefix("lambda:") for c in added),
        restoring={c.removeprefix("lambda:"): sha for c, sha in back.items()},
    )
    # the functions first: the stacks going back are given the code each function goes back to, not what runs now
    back_of = partial(go_back, smoke=False)
    built = {c: back_of(rollbacks.component_of(c), sha, undo=undo) for c, sha in targets if c.startswith("lambda:")}
    with aws_errors(env):
        going_back = _going_back_keys(aws, env, [target for target, plan in built.values() if plan is not None])
    # code no version runs (the run made its function anew: moved it to another stack, replaced it): the stack going
    # back that holds it deploys that code, uploaded first, which makes the function anew again
    again = {t.component.function: t.sha for t, plan in built.values() if plan is not None and t.republish}
    undo = dataclasses.replace(undo, going_back=going_back, republishing=again)  # the same list of moves
    built |= {
        c: back_of(rollbacks.component_of(c), sha, undo=undo) for c, sha in targets if c not in built and c not in quiet
    }
    rollbacks.refuse_moves(undo.moves)  # a function moved between two stacks moves back; one gone or twice is refused
    for fn, sha in again.items():  # its own steps not needed then: the stack's deploy is the function's
        own_target, own = built[f"lambda:{fn}"]
        stacks = [(c, t, p) for c, (t, p) in built.items() if c.startswith("stack:") and p is not None]
        holder = next(((c, t, p) for c, t, p in stacks if (f"lambda:{fn}", sha) in p.deploys), None)
        if holder is not None and own is not None:
            stack, stack_target, stack_plan = holder
            built[stack] = (stack_target, dataclasses.replace(stack_plan, found=(*stack_plan.found, *own.found)))
            built[f"lambda:{fn}"] = (own_target, None)
    plans = [(c, plan) for c, _ in targets if c in built and (plan := built[c][1])]
    brought = {c.removeprefix("lambda:") for _, plan in plans for c, _ in plan.deploys}
    missing = sorted(fn for fn in undo.restoring if fn not in brought)
    if missing and plans:  # each stack going back brings those its template holds: none held these
        raise UsageError(
            f"no stack going back holds function {', '.join(missing)}, though it ran before run {record.id} took "
            f"{'it' if len(missing) == 1 else 'them'} out; nothing was changed",
            next_step="roll back the run's components one by one: inv rollback --component COMPONENT --to SHA",
        )
    carried = [(c, sha) for c, sha in targets if c in quiet]
    if carried:
        them = "it" if len(carried) == 1 else "them"
        said = f"{', '.join(sorted(quiet))}: the run changed nothing in {them} (no changes): nothing to put back"
        runtime.stderr.write(
            f"⏭  {said}, no change set; recorded as live before it\n" if plans else f"✅ nothing to roll back: {said}\n"
        )
    return record, (rollbacks.run_plan_of(env, record, plans, smoke=smoke, carried=carried) if plans else None)


def _going_back_keys(aws: AwsFactory, env: EnvConfig, targets: Sequence[rollbacks.Target]) -> dict[str, str]:
    """fn → the code key of the version each of ``targets`` (functions' rollbacks) moves its alias back to, as its
    description names it; one that names none is left out (the stack is given the code live now)."""
    names = lambda_chain.deployed_functions(StackOutputs.of(aws), env, required=False)
    client = aws.client("lambda")
    found = at_once(
        {
            t.component.function: partial(
                client.get_function_configuration, FunctionName=names[t.component.function], Qualifier=t.version
            )
            for t in targets
            if t.version and t.component.function in names
        }
    )
    return {fn: key for fn, config in found.items() if (key := lambda_chain.code_key(config.get("Description")))}


def _stack_rollback_plan(
    runtime: Runtime,
    config: Config,
    env: EnvConfig,
    aws: AwsFactory,
    target: rollbacks.Target,
    *,
    allow_replace: bool,
    approve_access: bool,
    smoke: bool,
    preview: bool = False,
    rerun: str = "",
    undo: rollbacks.RunUndo | None = None,
) -> Plan:
    """The stack's template at the commit (as its deploy kept it, else synthesized from the commit) deployed with
    what runs now: the live image tag, the code keys the functions' ``live`` aliases serve (else the parameters of
    the stacks holding them). Within a run's ``undo`` (:class:`rollbacks.RunUndo`): the code its functions go back to
    (``going_back``), the functions the run added taken out, those it took out that the stack holds brought back, and
    those whose code is published again that it holds given that code, each packaged as in its commit and uploaded
    first. A function it would delete, or take over from another stack, is refused (:func:`rollbacks.refuse_moves`),
    unless within an undo: then what it does is added to the undo's moves, for the caller to check with the other
    stacks going back.
    With ``preview`` (a dry run), first print the change it would make (a change set made and deleted, as inv diff
    does)."""
    removing = undo.removing if undo is not None else ()
    restoring = undo.restoring if undo is not None else {}
    republishing = undo.republishing if undo is not None else {}
    role = target.component.role
    stack = planner.stack_roles(env)[role]

    def say(line: str) -> None:
        runtime.stderr.write(f"⚙️  {line}\n")

    live: dict[str, str] = {}
    hosts: dict[str, str] = {}  # each function deployed now → the stack holding it
    every: dict[str, str] = {}  # every function deployed now
    with aws_errors(env):
        if role == planner.HOSTED_BY["app"]:
            live[planner.IMAGE_PARAMETER] = live_image_tag(aws, env)
        if planner.holds_functions(role):  # each function's code live now; where each is held
            every = lambda_chain.deployed_functions(StackOutputs.of(aws), env, required=False)
            names = planner.stack_roles(env)
            hosts = {fn: names[r] for fn, r in lambda_chain.function_hosts(StackOutputs.of(aws), env).items()}
            keys = _code_keys_live(aws, env, every, every) | dict(undo.going_back if undo is not None else {})
            live.update({planner.code_parameter(fn): key for fn, key in keys.items()})
    with aws_errors(env):
        origin = target.deployed_from or target.sha  # runs since its deploy counted it unchanged: that template
        synthesis = rollbacks.kept_template(config, aws, env, stack, origin)
        if synthesis is not None and origin != target.sha:
            say(
                f"{stack} at {target.sha}: the template it was deployed with from {origin} (the runs since counted "
                f"it unchanged), kept in {env.name} (no synthesis)"
            )
        elif synthesis is not None:
            say(f"{stack} at {target.sha}: the template it was deployed with then, kept in {env.name} (no synthesis)")
        else:
            synthesis = rollbacks.synthesize_at(
                config,
                env,
                target.sha,
                account=aws.account(),
                ecr=aws.client("ecr"),
                say=say,
            )
    template = synthesis.template(stack)
    body = json.loads(template.read_text())
    # a function the template has and nothing runs now (taken out since): back, packaged as in its commit (the one
    # it ran before the run being undone took it out, else the template's), uploaded first
    uploads: list[Step] = []
    brought: list[tuple[str, str]] = []
    held = planner.code_parameters(body) if planner.holds_functions(role) else {}
    for fn, parameter in sorted(held.items()):
        again = republishing.get(fn)
        if fn in every and again is None:  # it runs now (in this stack, or in another it moved to since)
            continue
        commit = again or restoring.get(fn, target.sha)
        folder, package = rollbacks.package_at(config, env, fn, commit)
        live[parameter] = package.key
        uploads.append(UploadLambdaCode.of(fn, folder, package, env.stacks.registry))
        brought.append((f"lambda:{fn}", commit))
        what = f": its code of {commit} packaged again" if again else f" back, packaged as in {commit}"
        say(f"lambda:{fn}{what} ({len(package.zip_bytes)} B): {package.key}")
    parameters = rollbacks.template_parameters(
        body,
        live,
        stack=stack,
        sha=target.sha,
        removing=removing,
        restoring=sorted(fn for fn in restoring if fn in held),  # another stack brings back the others
    )
    moved = rollbacks.stack_moves(body, hosts, stack=stack, sha=target.sha, removing=removing)
    if undo is None:
        rollbacks.refuse_moves([moved])
    else:
        undo.moves.append(moved)
    if preview:
        preview_stack(runtime, config, aws, env, stack, template, dict(parameters), rerun=rerun)
    plan = rollbacks.stack_plan(
        env,
        target,
        template,
        parameters,
        allow_replace=allow_replace,
        approve_access=approve_access,
        smoke=smoke,
        rerun=rerun,
    )
    if not uploads:
        return plan
    return dataclasses.replace(plan, steps=(*uploads, *plan.steps), deploys=(*plan.deploys, *brought))


@heard_when_not_run("deploy.full")
def deploy_full(
    *,
    env: str | None = None,
    allow_dirty: bool = False,
    smoke: bool = True,
    approve_access: bool = False,
    dry_run: bool = False,
    as_json: bool = False,
    unpromoted: bool = False,
    allow_rolled_back: bool = False,
    watch_alarms: str | None = None,
    runtime: Runtime | None = None,
) -> RunReport | None:
    """Every stack in dependency order, the image of this commit and its Lambda zips included; then smoke. Refuses,
    as deploy.auto does, to bring back a component as a person's rollback took it off, unless ``allow_rolled_back``."""
    runtime = runtime or Runtime()
    config, environment = load_env(runtime, env)
    environment = with_alarm_watch(environment, watch_alarms)
    revision = head_revision(config, allow_dirty)
    functions = lambda_chain.function_names(config)
    check_packaging(runtime, [config.root / lambda_chain.LAMBDA_FOLDER / fn for fn in functions], dry_run=dry_run)
    refuse_unaskable(runtime, environment, dry_run=dry_run)
    if not dry_run:
        refuse_unpushed_early(runtime, config, environment, [revision.tag])
    aws = runtime.aws_factory(environment)
    # a dry run too: the plan of a promoted app copies the image its source runs
    components = changes.components_of(config)
    reads: dict[str, Callable[[], Any]] = {}
    if not allow_rolled_back:
        reads["again"] = partial(rolled_back_components, runtime, config, environment, aws, components, revision)
    if not dry_run and reads:  # what the guard was checked against: still so under the lock?
        reads["record"] = partial(live_record_planned, aws, environment)
    # a first deploy's release command runs after the Fargate stack created the service, and it watches no alarms
    reads["endpoints"] = partial(endpoints_if_deployed, aws, environment)
    with aws_errors(environment):
        read = at_once(reads)  # the history, the live record, whether every stack is deployed: one round trip
    auto.refuse_deploying_again(read.get("again", {}), revision.sha, environment)
    promotion = require_promoted(runtime, config, environment, revision, components, unpromoted=unpromoted)
    with aws_errors(environment):
        live_code = live_code_of(aws, environment)
    plan = planner.full_plan(
        config,
        environment,
        revision,
        repository_uri="",
        smoke=smoke,
        approve_access=approve_access,
        promoted=promotion.image,
        first_deploy=config.release.on and read["endpoints"] is None,
        new_environment=read["endpoints"] is None,
        live_code=live_code,
    )
    plan = dataclasses.replace(plan, unpromoted=promotion.unpromoted)
    return run_plan(
        runtime, config, environment, plan, dry_run=dry_run, as_json=as_json, aws=aws, planned_from=read.get("record")
    )


def _refuse_shared_registry(aws: AwsFactory, env: EnvConfig) -> None:
    """UsageError (nothing deleted) when the registry stack's artifacts bucket holds another environment's live
    record: the stack is that one's too, and deleting it (the repository, the bucket: forced) takes its images, its
    history, its lock and its live record. A registry stack deleted before (by hand, or a destroy without
    --include-data: its bucket and repository retained) is judged by the bucket it kept, which the destroy deletes."""
    bucket = history.find_artifacts_bucket(aws, env)
    if bucket is None and (deleted := leftovers.last_deleted(aws, env.stacks.registry)):
        kept = [item.physical_id for item in leftovers.kept_by(aws, deleted) if item.resource_type == "AWS::S3::Bucket"]
        bucket = next((name for name in kept if _bucket_there(aws, name)), None)
    others = zip_cleanup.sharing(aws, bucket, env) if bucket else []
    if others:
        raise UsageError(
            f"{env.stacks.registry}'s bucket {bucket} holds the live record of {', '.join(others)} too: its registry "
            f"stack is theirs as well, and destroy --include-data would delete their images, history and lock with "
            "it; nothing was deleted",
            next_step=f"destroy the other stacks alone (inv destroy --env {env.name}, without --include-data), or "
            f"first give {', '.join(others)} a registry stack of its own; a live record left by an environment that "
            f"is gone: delete it (aws s3 rm s3://{bucket}/{history.LIVE_PREFIX}{others[0]}.json), then rerun",
        )


def _bucket_there(aws: AwsFactory, bucket: str) -> bool:
    try:
        aws.client("s3").head_bucket(Bucket=bucket)
    except botocore.exceptions.ClientError as exc:
        if is_not_there(exc):
            return False
        raise
    return True


@heard_when_not_run("destroy")
def destroy(
    *,
    env: str | None = None,
    include_data: bool = False,
    stack: str | None = None,
    dry_run: bool = False,
    as_json: bool = False,
    runtime: Runtime | None = None,
) -> RunReport | None:
    """Delete the stacks in reverse order; those holding data only with include_data. Refuses protected envs.
    ``stack``: only those stacks of the team's own, by role, commas between (planner.destroy_one_plan)."""
    runtime = runtime or Runtime()
    config, environment = load_env(runtime, env)
    if environment.protected:
        raise UsageError(
            f"environment {environment.name!r} is protected in deploy.toml; destroy refuses it",
            next_step="delete its stacks by hand if you really mean it, or set protected = false",
        )
    aws = runtime.aws_factory(environment)
    with aws_errors(environment):  # the functions the stacks hold leave the live record with them
        hosts = lambda_chain.function_hosts(StackOutputs.of(aws), environment)
        if include_data and stack is None:  # the registry stack goes, with its bucket
            _refuse_shared_registry(aws, environment)
    if stack is not None:
        plan = planner.destroy_one_plan(environment, stack, include_data=include_data, hosts=hosts)
    else:
        components = changes.components_of(config)
        plan = planner.destroy_plan(environment, include_data=include_data, components=components, hosts=hosts)
    return run_plan(runtime, config, environment, plan, dry_run=dry_run, as_json=as_json)
