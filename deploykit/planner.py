"""Planners: (git revision, environment, configuration) → :class:`~deploykit.plan.Plan`.

Planning only reads; every input of every step is resolved here and written into the step.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deploykit import lambda_chain, packaging
from deploykit.app_chain import (
    BuildImage,
    EnsureBaseImage,
    PromoteImage,
    PushImage,
    RegisterTaskDef,
    RollService,
    WaitHealthy,
)
from deploykit.config import NO_FUNCTIONS, Config, EnvConfig, platform_levels
from deploykit.config import STACK_DEPENDENCIES as STACK_DEPENDENCIES  # named here too
from deploykit.endpoints import code_parameter as code_parameter  # named here too
from deploykit.endpoints import code_parameters as code_parameters
from deploykit.errors import UsageError
from deploykit.git import Revision
from deploykit.plan import Parallel, Plan, Step
from deploykit.plan import Sequence as StepSequence
from deploykit.release import Release
from deploykit.scan_gate import ScanGate, image_judge
from deploykit.smoke import Smoke
from deploykit.stack_chain import IMAGE_PARAMETER as IMAGE_PARAMETER  # the Fargate stack's input, named here too
from deploykit.stack_chain import (
    DeployStack,
    DestroyStack,
    StacksByDependencies,
    StacksByImports,
    Synthesize,
    UploadLambdaCode,
)
from deploykit.watch import WatchErrors, alarm_watch

APP_STAGES = ("build", "push", "register-taskdef", "roll-service", "wait-healthy", "smoke")


@dataclass(frozen=True)
class PromotedImage:
    """The image a promoted environment's app takes (build once): the one ``source`` (``promote_from``) runs,
    copied under its tag, ``tag``, built from the commit ``sha``."""

    source: str
    tag: str
    sha: str


def needs_repository(stages: Sequence[str]) -> bool:
    """Whether the stages need the repository URI (push, register-taskdef, roll-service and wait-healthy do)."""
    return any(stage not in ("build", "smoke") for stage in stages)


def local_image(env: EnvConfig, revision: Revision) -> str:
    return f"{env.repository}:{revision.tag}"


def build_platform(config: Config, env: EnvConfig) -> str:
    """What ``env``'s images are built for: [build] platform, what its task definitions run; "" (this engine's own)
    on the sandbox, whose tasks run on this machine (natively, on an arm64 one too)."""
    return "" if env.is_local else config.build.platform


def base_image_plan(config: Config, env: EnvConfig, *, image: str | None = None, force: bool = False) -> Plan:
    """Ensure ``image`` (default: the local base of [build.base]) is on the Docker engine."""
    step = EnsureBaseImage(
        image=image or config.build.base.name,
        spec=config.build.base,
        extra_ca_dir=config.build.extra_ca_dir,
        force=force,
        pull_after_days=config.build.pull_after_days,
        platform=build_platform(config, env),
    )
    return Plan(env.name, (step,), "base-image")


def kept_commit(revision: Revision | None, role: str) -> str:
    """The commit a stack's template is kept as after its deploy (:func:`deploykit.stack_chain.keep_template`): the
    revision's for that stack; "" when none is known or its cdk/ holds uncommitted changes (a rollback never goes
    back to those)."""
    if revision is None:
        return ""
    stack = revision.of(f"stack:{role}")
    return "" if stack.dirty else stack.tag


def app_chain_plan(
    config: Config,
    env: EnvConfig,
    revision: Revision,
    stages: Sequence[str],
    *,
    repository_uri: str | None,
    title: str | None = None,
    watch: bool = True,
    promoted: PromotedImage | None = None,
) -> Plan:
    """The steps of the app chain ``stages`` (a subset of APP_STAGES, in chain order), and the environment's error
    watch at the end when they roll the service and wait for it (``watch``: a caller that adds it later says no).
    ``promoted``: the image comes from the promote_from environment, copied (its build and push are one copy)."""
    revision = revision.of("app")
    unknown = [s for s in stages if s not in APP_STAGES]
    if unknown:
        raise UsageError(f"unknown app-chain stage(s): {', '.join(unknown)}", next_step=f"use: {', '.join(APP_STAGES)}")
    if needs_repository(stages) and repository_uri is None:
        raise ValueError("repository_uri is needed for stages after build ('' lets push resolve it)")
    tag = promoted.tag if promoted else revision.tag
    git_sha = image_commit(revision, promoted)
    image = f"{repository_uri}:{tag}"
    steps: list[Step] = []
    for stage in sorted(stages, key=APP_STAGES.index):
        if promoted and stage in ("build", "push"):
            if not any(isinstance(step, PromoteImage) for step in steps):
                steps.append(PromoteImage(promoted.source, tag, str(repository_uri), build_platform(config, env)))
        elif stage == "build":
            steps += base_image_plan(config, env, image=config.base_image_for(env)).steps
            steps.append(
                BuildImage(
                    context=str(config.root / config.build.context),
                    dockerfile=config.build.dockerfile,
                    image=local_image(env, revision),
                    base_image=config.base_image_for(env),
                    git_sha=revision.sha if not revision.dirty else revision.tag,
                    extra_ca_dir=config.build.extra_ca_dir,
                    platform=build_platform(config, env),
                    keep_local=config.build.keep_local_images,
                )
            )
        elif stage == "push":
            steps.append(
                PushImage(
                    local_image(env, revision),
                    str(repository_uri),
                    revision.tag,
                    build_platform(config, env),
                    config.base_image_for(env),
                )
            )
        elif stage == "register-taskdef":
            steps.append(
                RegisterTaskDef(
                    env.cluster,
                    env.service,
                    env.container,
                    str(repository_uri),
                    tag,
                    git_sha,
                    build_platform(config, env),
                )
            )
        elif stage == "roll-service":
            steps += before_rollout(config, env, tag, repository=str(repository_uri), git_sha=git_sha)
            steps.append(RollService(env.cluster, env.service, env.container, image))
        elif stage == "wait-healthy":
            steps.append(
                WaitHealthy(env.cluster, env.service, env.container, image, env.wait_timeout, env.poll_seconds)
            )
        elif stage == "smoke":
            steps.append(Smoke())
    if watch and {"roll-service", "wait-healthy"} <= set(stages):
        steps += error_watch(env) + alarm_watch(env, after_errors=True)
    deploys = (("app", tag),) if "roll-service" in stages else ()
    return Plan(env.name, tuple(steps), title or " → ".join(stages), deploys)


def image_commit(revision: Revision, promoted: PromotedImage | None) -> str:
    """The commit the app's image is made from, as a task definition's tags record it (the work tree's tag when
    uncommitted changes go in)."""
    revision = revision.of("app")
    return promoted.sha if promoted else revision.sha if not revision.dirty else revision.tag


def before_rollout(
    config: Config,
    env: EnvConfig,
    tag: str,
    *,
    repository: str = "",
    git_sha: str = "",
    by_stack: bool = False,
    first: bool = False,
) -> list[Step]:
    """What comes before image ``tag`` reaches the service: the gate on its scan ([environments.NAME.image_scan],
    deploykit.scan_gate), then the release command ([release], deploykit.release), each when there is one.
    ``by_stack``: the Fargate stack rolls the image out (and may create the service: ``first``, the environment's
    first deploy, whose release command then runs after the stack, :func:`fargate_with_image`)."""
    gate: list[Step] = (
        [ScanGate(env.cluster, env.service, env.container, image_judge(env, tag), by_stack=by_stack)]
        if env.image_scan.on
        else []
    )
    if not config.release.on:
        return gate
    return [
        *gate,
        _release(config, env, tag, repository=repository, git_sha=git_sha, by_stack=by_stack, created_after=first),
    ]


def _release(config: Config, env: EnvConfig, tag: str, **how: Any) -> Release:
    return Release(
        env.cluster,
        env.service,
        env.container,
        tag,
        config.release.command,
        config.release.timeout,
        env.poll_seconds,
        **how,
    )


def fargate_with_image(
    config: Config, env: EnvConfig, stack: Step, tag: str, git_sha: str, *, first: bool = False
) -> Step:
    """The Fargate stack's deploy of a new image, its scan gate and release command first (the stack's level runs on
    beside them). ``first``: the environment's first deploy (some of its stacks are not deployed), where the stack
    may create the service: a release command runs after it then, in the revision of the service's tasks."""
    return _in_order("fargate", _image_by_stack(config, env, stack, tag, git_sha, first))


def _image_by_stack(config: Config, env: EnvConfig, stack: Step, tag: str, git_sha: str, first: bool) -> list[Step]:
    after = (
        [_release(config, env, tag, git_sha=git_sha, by_stack=True, after_creation=True)]
        if first and config.release.on
        else []
    )
    return [*before_rollout(config, env, tag, git_sha=git_sha, by_stack=True, first=first), stack, *after]


def error_watch(env: EnvConfig) -> list[Step]:
    """The app's error watch after its rollout, when the environment has one (deploykit.watch)."""
    watch = env.app_error_watch
    if not watch.on:
        return []
    return [
        WatchErrors(
            env.cluster,
            env.service,
            watch.seconds,
            watch.max_error_rate,
            env.poll_seconds,
            watch.compare,
            env.alarm_watch.alarms,
            watch.max_slowdown,
        )
    ]


# -- stacks ---------------------------------------------------------------------------------------------------

DATA_STACKS = ("registry", "data", "auth")  # they hold images, tables, buckets, users: kept by destroy
# the stack the app runs in (a stack:<role> component is that stack; a function's is the one holding it)
HOSTED_BY = {"app": "fargate"}


def holds_functions(role: str) -> bool:
    """Whether the stack of ``role`` may hold Lambda functions (the API stack, a stack of the team's own): its
    deploys are given every function's code, each template taking the keys of those it declares."""
    return role not in NO_FUNCTIONS


def is_function_stack(component: str) -> bool:
    """Whether ``component`` (``stack:<role>``...) is a stack that may hold functions (:func:`holds_functions`)."""
    kind, _, role = component.partition(":")
    return kind == "stack" and holds_functions(role)


def stack_levels(env: EnvConfig | None = None) -> list[tuple[str, ...]]:
    """The roles in dependency levels (:meth:`deploykit.config.Stacks.levels`); without ``env``, the platform's."""
    return env.stacks.levels() if env else platform_levels()


def stack_dependencies(env: EnvConfig) -> dict[str, tuple[str, ...]]:
    """Role → the roles it may import from (:meth:`deploykit.config.Stacks.dependencies`)."""
    return env.stacks.dependencies()


def stack_roles(env: EnvConfig) -> dict[str, str]:
    """Role (registry, data, ..., then the team's own) → the environment's stack name."""
    return env.stacks.roles()


def role_of(env: EnvConfig, stack: str) -> str:
    """The role of the stack ``stack`` names: its name (``CarRentalFargateStack``), its role (``fargate``), or the end
    of its name that only it has (``FargateStack``, as the seed's ``deploy-stack.sh FargateStack`` named it), in any
    case."""
    roles = stack_roles(env)
    for role, name in roles.items():
        if name == stack or role == stack:
            return role
    word = stack.lower()
    ends = [role for role, name in roles.items() if word == role or name.lower().endswith(word)]
    if len(ends) == 1 and word:
        return ends[0]
    known = ", ".join(roles.values())
    if len(ends) > 1:
        raise UsageError(
            f"{stack!r} could name any of {', '.join(roles[r] for r in ends)} in environment {env.name!r}",
            next_step=f"name one: {known} (or its role: {', '.join(roles)})",
        )
    raise UsageError(f"unknown stack {stack!r} in environment {env.name!r}", next_step=f"use one of: {known}")


def synth_dir(config: Config, env: EnvConfig) -> Path:
    return config.root / "cdk.out" / env.name


def lambda_packages(config: Config, env: EnvConfig) -> dict[str, packaging.Package]:
    return packaging.package_all(config.root / "lambda", **config.lambda_target(env))


def deploy_stack_plan(
    config: Config,
    env: EnvConfig,
    stack: str,
    *,
    image_tag: str,
    code_keys: dict[str, str],
    uploads: Sequence[str] = (),
    allow_replace: bool = False,
    approve_access: bool = False,
    force_synth: bool = False,
    smoke: bool = True,
    revision: Revision | None = None,
    new_image: bool = False,
    first: bool = False,
    revert_drift: bool = False,
) -> Plan:
    """Synthesize, upload the zips it names (if any), one stack's change set, then smoke.

    ``revision`` (the commit whose cdk/ is deployed) is what the history records for the stack;
    ``approve_access`` lets a protected environment's change set change access (see DeployStack); ``new_image``:
    the Fargate stack is given an image (--image-tag), whose release command runs first; ``first``: the Fargate
    stack is not deployed yet, so the stack creates the service and the command runs after it instead;
    ``revert_drift``: a drift-aware change set, putting back what was changed outside CloudFormation (DeployStack)."""
    role = role_of(env, stack)
    name = stack_roles(env)[role]
    out = synth_dir(config, env)
    steps: list[Step] = [Synthesize(str(out), force_synth)]
    packages = lambda_packages(config, env) if uploads else {}
    steps += [UploadLambdaCode.of(fn, config.root / "lambda" / fn, packages[fn], env.stacks.registry) for fn in uploads]
    deploy = DeployStack(
        name,
        str(out / f"{name}.template.json"),
        stack_parameters(role, image_tag, code_keys),
        allow_replace,
        approve_access=approve_access,
        commit=kept_commit(revision, role),
        registry_stack=env.stacks.registry,
        express=env.stack_mode == "express",
        beside=(),
        revert_drift=revert_drift,
    )
    if new_image and role == "fargate":  # the image's tag: a short SHA
        steps += _image_by_stack(config, env, deploy, image_tag, image_tag, first)
    else:
        steps.append(deploy)
    if smoke:
        steps.append(Smoke())
    # no automatic rollback of a stack: the failure names the command that takes it back
    steps += alarm_watch(env, undo=f"inv rollback --env {env.name} --component stack:{role} puts the stack back")
    # a function the environment never had goes live with the stack, at this commit's code: recorded as live too
    components = [f"stack:{role}", *(f"lambda:{fn}" for fn in sorted(uploads))]
    deploys = tuple((c, revision.of(c).tag) for c in components) if revision is not None else ()
    command = f"deploy.stack {name}" + (" --revert-drift" if revert_drift else "")
    return Plan(env.name, tuple(steps), command, deploys)


def stack_parameters(role: str, image_tag: str, code_keys: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    """The parameters a deploy gives the stack of ``role``: the Fargate stack its image's tag; a stack that may hold
    functions the code key of each (``code_keys``: function → key), of which its deploy passes those its template
    declares (:func:`deploykit.stack_chain.held_parameters`)."""
    if role == "fargate":
        return ((IMAGE_PARAMETER, image_tag),)
    if holds_functions(role):
        return tuple(sorted((code_parameter(fn), key) for fn, key in code_keys.items()))
    return ()


@dataclass(frozen=True)
class LiveCode:
    """The deployed functions' code, each fn (folder) → ..."""

    names: Mapping[str, str]  # ... its Lambda function's name
    served: Mapping[str, str]  # ... the key of the code its alias serves (else its stack's)
    given: Mapping[str, str]  # ... the key its stack was last deployed with


def full_plan(
    config: Config,
    env: EnvConfig,
    revision: Revision,
    repository_uri: str,
    *,
    smoke: bool = True,
    approve_access: bool = False,
    promoted: PromotedImage | None = None,
    first_deploy: bool = False,
    new_environment: bool = False,
    live_code: LiveCode | None = None,
) -> Plan:
    """Every stack in dependency order, independent ones in parallel, the image and the zips in between, smoke.
    ``approve_access``: in a protected environment, the stacks may change access (a first deploy creates it all).
    ``promoted``: the image is the promote_from environment's, copied. ``first_deploy``: some of the environment's
    stacks are not deployed yet: the Fargate stack may create the service, and a release command then runs after it
    (:func:`fargate_with_image`). ``new_environment`` (which ``first_deploy`` is too): no alarm watch ends it, as
    there is no release before it, and its alarms may not be there yet. ``live_code``: the deployed functions' code,
    for the fast path of those the stacks would leave on other code than this commit's (after them)."""
    roles = stack_roles(env)
    out = synth_dir(config, env)
    packages = lambda_packages(config, env)
    code_keys = {fn: p.key for fn, p in packages.items()}
    image_tag = promoted.tag if promoted else revision.of("app").tag

    def stack(role: str) -> DeployStack:
        return DeployStack(
            roles[role],
            str(out / f"{roles[role]}.template.json"),
            stack_parameters(role, image_tag, code_keys),
            approve_access=approve_access,
            commit=kept_commit(revision, role),
            registry_stack=roles["registry"],
            express=env.stack_mode == "express",
            beside=tuple(env.stacks.function_stacks()),
        )

    image = app_chain_plan(config, env, revision, ("build", "push"), repository_uri=repository_uri, promoted=promoted)
    uploads = [
        UploadLambdaCode.of(fn, config.root / "lambda" / fn, p, roles["registry"]) for fn, p in sorted(packages.items())
    ]
    first = stack_levels(env)[0]
    # the registry stack goes first, while the image builds: the push and the zips need its repository and bucket
    steps, pushed = image_beside([Synthesize(str(out)), stack("registry")], image.steps)
    steps.append(_group([stack(r) for r in first if r != "registry"] + [*pushed, *uploads]))
    git_sha = image_commit(revision, promoted)

    def deployed(role: str) -> Step:  # the new image's release command before the Fargate stack rolls it out
        if role == "fargate":
            return fargate_with_image(config, env, stack(role), image_tag, git_sha, first=first_deploy)
        return stack(role)

    steps += later_stacks(env, roles, deployed)
    if live_code is not None:
        left = lambda_chain.left_by_stacks(code_keys, live_code.given, live_code.served)
        paths = [lambda_chain.fast_path(config, env, revision, fn, live_code.names[fn]) for fn in left]
        steps += [_group(paths)] if paths else []
    if smoke:
        steps.append(Smoke())
    if not (first_deploy or new_environment):  # nothing before it, and maybe no alarms yet
        steps += alarm_watch(env, undo=f"inv rollback --env {env.name} --run last puts back what it deployed")
    components = ["app", *(f"stack:{role}" for role in roles), *(f"lambda:{fn}" for fn in sorted(packages))]
    deploys = tuple((c, image_tag if c == "app" else revision.of(c).tag) for c in components)
    return Plan(env.name, tuple(steps), "deploy.full", deploys)


def later_stacks(env: EnvConfig, roles: Collection[str], deploy: Callable[[str], Step]) -> list[Step]:
    """The steps that deploy the stacks of ``roles`` after the platform's first level, each by ``deploy(role)``: a
    group a level of the platform's, its stacks side by side, the last one's with the team's own stacks, each of which
    starts once those of the group it depends on have deployed (:class:`StacksByDependencies`): on AWS, two stacks of
    the team's that import nothing from each other take one stack deploy's minutes, not two."""
    *middle, last = platform_levels()[1:]
    steps = [_group([deploy(r) for r in level if r in roles]) for level in middle if set(level) & set(roles)]
    platform = [role for role in last if role in roles]
    own = [role for role, _ in env.stacks.own if role in roles]
    members = [deploy(role) for role in (*platform, *own)]
    if own and len(members) > 1:
        steps.append(StacksByDependencies(tuple(members), own_from=len(platform)))
    elif members:
        steps.append(_group(members))
    return steps


def _group(steps: Sequence[Step]) -> Step:
    return steps[0] if len(steps) == 1 else Parallel(tuple(steps))


def _in_order(label: str, steps: Sequence[Step]) -> Step:
    return steps[0] if len(steps) == 1 else StepSequence(label, tuple(steps))


def image_beside(head: Sequence[Step], image: Sequence[Step]) -> tuple[list[Step], list[Step]]:
    """The image built while ``head`` runs (the CDK app's synthesis, then the registry stack when it changed): the
    plan's first steps, ``head`` beside the image's steps on this machine (base image, build); and the image's steps
    that need its repository (push; a promoted image's copy), for the group after them, beside the stacks and the
    zips. Without ``head``, or with nothing to build, ``head`` as it is and the whole image after it.

    A build takes seconds to minutes and needs no stack; the synthesis takes as long (tens of seconds for a real CDK
    app): one waited for the other before."""
    local = [step for step in image if isinstance(step, EnsureBaseImage | BuildImage)]
    remote = [step for step in image if not isinstance(step, EnsureBaseImage | BuildImage)]
    if not head or not local:
        return list(head), [_in_order("image", image)] if image else []
    beside = Parallel((_in_order("cdk", head), _in_order("image", local)))
    return [beside], [_in_order("image", remote)] if remote else []


def destroy_one_plan(env: EnvConfig, stack: str, *, include_data: bool, hosts: Mapping[str, str] | None = None) -> Plan:
    """Stacks of the team's own deleted without the rest (``inv destroy --stack ROLE[,ROLE...]``), with what they kept
    on deletion when ``include_data``: taken out of the environment before they are taken out of the app. Several go
    side by side, each once those of them importing from it are gone (:class:`StacksByImports`). The platform's five
    go together (:func:`destroy_plan`): each of the later ones imports from the earlier. The functions they hold
    (``hosts``: function → the role of the stack holding it) go with them."""
    own = dict(env.stacks.own)
    named = own_roles(env, stack)
    going = [role for role in reversed(own) if role in named]  # deploy.toml's order reversed: importers first
    with_them = tuple(own[role] for role in going)
    steps = [DestroyStack(own[role], data=include_data, alone=True, beside=with_them) for role in going]
    group = StacksByImports(tuple(steps), own_until=len(steps)) if len(steps) > 1 else steps[0]
    held = sorted(f"lambda:{fn}" for fn, role in (hosts or {}).items() if role in going)
    return Plan(env.name, (group,), "destroy", removes=(*(f"stack:{role}" for role in going), *held))


def own_roles(env: EnvConfig, stack: str) -> list[str]:
    """The roles ``inv destroy --stack ROLE[,ROLE...]`` names, each a stack of the team's own: UsageError (exit 2)
    for one that is not, asked before the person is asked to confirm."""
    own = dict(env.stacks.own)
    named = list(dict.fromkeys(role.strip() for role in stack.split(",") if role.strip()))
    for role in named or [stack]:
        if role not in own:
            known = ", ".join(own) or "none in deploy.toml"
            platform = role in STACK_DEPENDENCIES
            raise UsageError(
                f"{role!r} is {'a stack of the platform' if platform else 'no stack role'} of environment "
                f"{env.name!r}: --stack deletes stacks of the team's own ({known})",
                next_step="the platform's stacks go together: inv destroy [--include-data]"
                if platform
                else "name roles of [environments.NAME.stacks] besides the platform's five, by commas",
            )
    return named


def destroy_plan(
    env: EnvConfig, *, include_data: bool, components: Sequence[str] = (), hosts: Mapping[str, str] | None = None
) -> Plan:
    """The stacks in reverse dependency order; those holding data only with include_data. ``components`` (the
    checkout's, see changes.components_of): those the destroyed stacks take with them are the plan's removes
    (``hosts``: function → the role of the stack holding it, :func:`host_stack`)."""
    roles = stack_roles(env)
    own = dict(env.stacks.own)  # with include_data, what the team's stacks kept on deletion goes too
    team = [DestroyStack(roles[r], data=include_data) for r in reversed(own)]
    gone: list[str] = [*own]
    steps: list[Step] = []
    for index, level in enumerate(reversed(platform_levels())):
        members = [r for r in level if include_data or r not in DATA_STACKS]
        gone += members
        group = [DestroyStack(roles[r], data=r in DATA_STACKS) for r in members]
        if index == 0 and team:  # the team's first, with the platform's last: each once its importers are gone
            steps.append(StacksByImports((*team, *group), own_until=len(team)))
        elif group:
            steps.append(_group(group))
    removes = tuple(c for c in components if host_stack(c, hosts or {}) in gone)
    return Plan(env.name, tuple(steps), "destroy", removes=removes)


def host_stack(component: str, hosts: Mapping[str, str]) -> str:
    """The role of the stack ``component`` lives in: app → fargate, lambda:<fn> → the one holding it (``hosts``:
    function → role, :func:`deploykit.lambda_chain.function_hosts`; the API stack when none deployed does),
    stack:<role> → role."""
    kind, _, name = component.partition(":")
    if kind == "lambda":
        return hosts.get(name, "api")
    return name if kind == "stack" else HOSTED_BY[kind]
