"""inv deploy.auto (and its --watch) and inv diff: what changed since what is live, planned and run, or shown."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from deploykit import (
    auto,
    changes,
    freeze,
    git,
    history,
    lambda_chain,
    lambda_imports,
    markdown,
    pause,
    planner,
    references,
    registry,
    release,
    syntax,
    synth,
)
from deploykit import logs as applogs
from deploykit.aws import AwsFactory, all_of, at_once
from deploykit.commands.core import (
    Runtime,
    aws_errors,
    declared_functions,
    head_revision,
    heard_when_not_run,
    load_env,
    load_plugins,
    not_run,
    nothing_to_do_json,
    require_importable,
    require_pushed,
    run_plan,
    say_missing_alarms,
    synthesis,
    until_unlocked,
    warner,
)
from deploykit.commands.deploys import (
    code_given,
    current_code_keys,
    live_code_of,
    refuse_or_say,
    with_alarm_watch,
    with_alarms_once,
    with_canary,
    with_watch,
)
from deploykit.commands.previews import Preview, show_preview, stack_previewed
from deploykit.commands.promotion import Source, promotion_of, read_source, require_promoted
from deploykit.commands.service import LogFollower, log_components, log_source, logs_client
from deploykit.commands.views import endpoints_if_deployed
from deploykit.config import Config, EnvConfig
from deploykit.endpoints import Endpoints
from deploykit.errors import DeployKitError, Interrupted, StepFailed, UsageError
from deploykit.output import Reporter, tabulate
from deploykit.plan import Plan, RunReport, dumps
from deploykit.stacks import (
    StackOutputs,
    alias_moves_only,
    inv_command,
)


@dataclass
class Analysis:
    """What deploy.auto and diff both start from: the environment, what is live, what changed."""

    config: Config
    env: EnvConfig
    aws: AwsFactory
    endpoints: Endpoints | None
    revision: git.Revision
    found: changes.ChangeSet
    live: dict[str, str | None]  # component → its live SHA (the app: its image tag)
    estimates: dict[str, float] = field(default_factory=dict)  # step → seconds, when asked for (deploy.auto)
    source: Source | None = None  # the promote_from environment and what it runs, if there is one
    # the newest runs, newest first; then, older, the runs that left a changed component live (auto.deciding_runs)
    records: list[history.Record] = field(default_factory=list)
    # lambda:<fn> → what says its alias serves settings other than its stack deployed (changed by hand, published);
    # app → its image's release command not passed while $DEPLOYKIT_SKIP_RELEASE=1 (said, not deployed)
    drifted: dict[str, str] = field(default_factory=dict)
    # the live record as read (component → {sha, when, record, ...}): what a plan from this analysis was made from
    entries: dict[str, dict[str, str]] = field(default_factory=dict)
    frozen: freeze.Freeze | None = None  # the environment's freeze, while it holds
    paused: pause.Pause | None = None  # the environment's pause, while it holds: a deploy wakes it first
    handlers: dict[str, str] = field(default_factory=dict)  # function → the Handler its alias serves, as read

    def closing_lines(self) -> list[str]:
        """The Change Analysis' last lines: :attr:`drifted` (deploying does not put such settings back), a stack
        of the live record deploy.toml names no more (:func:`deploykit.auto.stacks_taken_out`), and :attr:`frozen`
        (a deploy is refused)."""
        hosts = self.endpoints.hosts if self.endpoints is not None else {}
        lines = [
            f"⚠️  {component}: {why} ("
            + (
                f"the next deploy of it publishes the stack's: inv deploy.lambda {component.partition(':')[2]}"
                if lambda_chain.LATEST_HAS_THEM in why  # a version that keeps its own: the next deploy serves them
                else "no deploy of its code puts them back: "
                + lambda_chain.drift_remedy(self.env.name, hosts.get(component.partition(":")[2]))
            )
            + f"; inv health --env {self.env.name} names them too)"
            for component, why in sorted(self.drifted.items())
            if component != "app"
        ]
        if "app" in self.drifted:
            lines.append(
                f"⚠️  app: {self.drifted['app']} (unset {release.SKIP_ENV} and inv deploy.auto --env {self.env.name}: "
                "the command runs first)"
            )
        lines += [f"⚠️  {what} (next: {fix})" for what, fix in auto.stacks_taken_out(self.env, self.entries).values()]
        if self.frozen is not None:
            lines.append(
                f"❄️  {self.frozen.describe(self.env.name)}: a deploy is refused until it ends (a rollback is not)"
            )
        if self.paused is not None:
            lines.append(
                f"⏸  {self.paused.describe(self.env.name)}: a deploy wakes it first ({self.paused.tasks}), and it "
                "stays awake"
            )
        return lines


def analyse(
    runtime: Runtime,
    env: str | None,
    *,
    since: str | None,
    allow_dirty: bool,
    adjust: Callable[[EnvConfig], EnvConfig] = lambda environment: environment,
    estimates: bool = False,
) -> Analysis:
    """Read what is live in the environment and detect what changed since (uncommitted changes refused unless
    ``allow_dirty``). ``adjust`` changes the environment's settings (command-line options) before anything is read,
    so that bad options are refused first. With ``estimates`` the steps' times are read from the history at the
    same time as what is live (one round trip less for every deploy; read for nothing when nothing changed). What
    runs other than the live record says counts as changed: the app's service running another image, a stack the
    newest run that deployed it failed on (:func:`deploykit.auto.left_by_failed_runs`)."""
    config, environment = load_env(runtime, env)
    environment = adjust(environment)
    revision = head_revision(config, allow_dirty)
    if since is not None:
        changes.check_since(config.root, since)
    aws = runtime.aws_factory(environment)
    with aws_errors(environment):
        found_endpoints = endpoints_if_deployed(aws, environment)  # None: every component counts as never deployed
        unverified: dict[str, str] = {}  # what runs other than the last deploy verified: deployed again
        entries: dict[str, dict[str, str]] = {}  # the live record's
        drifted: dict[str, str] = {}  # functions serving settings other than their stack's: said, not deployed
        handlers: dict[str, str] = {}  # each function's, for the check that its new zip would import
        reads: dict[str, Callable[[], Any]] = {
            "live": partial(
                auto.live_components, aws, config, environment, found_endpoints, unverified, entries, drifted, handlers
            )
        }
        if found_endpoints is not None:  # the newest runs: for the estimates, and stacks a failed run left changed
            reads["records"] = partial(_newest_records, aws, environment, runtime)
        if environment.promote_from:  # what the environment it takes releases from runs, read meanwhile
            reads["source"] = partial(read_source, runtime, config, environment.promote_from)
        if found_endpoints is not None:  # said in the analysis; a deploy checks them again under the lock
            reads["freeze"] = partial(freeze.read, aws, environment)
            reads["pause"] = partial(pause.read, aws, environment)
        read = at_once(reads)
    live: dict[str, str | None] = read["live"]
    tags = {component: revision.of(component).tag for component in live}  # a live dirty build may be the same
    found = changes.detect(
        config, live, since=since, include_uncommitted=revision.dirty, worktree_tags=tags, env=environment.name
    )
    records: list[history.Record] = read.get("records", [])
    left = auto.left_by_failed_runs(records, live, planner.stack_roles(environment), entries)
    found = changes.with_notes(found, {**unverified, **left})
    if found_endpoints is not None:  # a stack another changed stack now imports from: deployed first
        found = changes.with_notes(found, _exporters(runtime, config, environment, aws, found))
    guesses = history.estimates(records) if estimates else {}
    if found_endpoints is not None:  # for the guard against bringing back what a rollback took off, however long ago
        with aws_errors(environment):
            store = history.History.of(aws, environment, warn=warner(runtime))  # its outputs read already
            if store is not None:
                records = auto.with_deciding_runs(entries, records, found.components(), store.records_by_id)
    return Analysis(
        config,
        environment,
        aws,
        found_endpoints,
        revision,
        found,
        live,
        guesses,
        read.get("source"),
        records,
        drifted,
        entries,
        freeze.in_force(read.get("freeze"), environment, runtime.clock.now()),
        read.get("pause"),
        handlers,
    )


def _unimportable(a: Analysis) -> dict[str, list[lambda_imports.Problem]]:
    """Each changed function (one of lambda/ still) whose zip, as this checkout makes it, would not import on Lambda
    (:func:`deploykit.lambda_chain.import_problems`, with the Handler its alias serves): what deploy.auto would
    refuse."""
    if lambda_imports.skipped():
        return {}
    there = set(lambda_chain.function_names(a.config))
    changed = sorted(c.partition(":")[2] for c in a.found.components() if c.startswith("lambda:"))
    target = a.config.lambda_target(a.env)
    found = {}
    for fn in (fn for fn in changed if fn in there):
        folder = lambda_chain.function_folder(a.config, fn)
        problems = lambda_chain.import_problems(a.config, folder, target, a.handlers.get(fn))
        if problems:
            found[fn] = problems
    return found


def _exporters(
    runtime: Runtime, config: Config, env: EnvConfig, aws: AwsFactory, found: changes.ChangeSet
) -> dict[str, str]:
    """:func:`deploykit.auto.exporters_needed`, synthesized as the plan's first step synthesizes."""
    synthesize = synthesis(runtime, config, env, aws, Reporter(runtime.stderr, clock=runtime.clock))
    with aws_errors(env):
        return auto.exporters_needed(config, env, aws, found, synthesize)


def _say_synthesis(runtime: Runtime, a: Analysis, plan: Plan) -> None:
    """A dry run whose plan synthesizes the CDK app: synthesized now (the run then finds it done), and what its
    synthesis would refuse (a stack deploy.toml does not name, a value to look up, an error the app recorded) said,
    where the plan alone would show stacks that the run then refuses to deploy."""
    from deploykit.stack_chain import Synthesize

    if not any(isinstance(step, Synthesize) for step in auto.flat_steps(plan.steps)):
        return
    try:
        synthesis(runtime, a.config, a.env, a.aws, Reporter(runtime.stderr, clock=runtime.clock))()
    except DeployKitError as exc:
        then = f"\n  → next: {exc.next_step}" if exc.next_step else ""
        runtime.stderr.write(f"⚠️  {exc.message}: the deploy would be refused at its synthesis{then}\n")


def _write_analysis(
    runtime: Runtime, lines: Sequence[str], closing: Sequence[str] = (), since: str | None = None
) -> None:
    """The Change Analysis: ``lines``, then ``closing`` (Analysis.closing_lines: settings changed that no deploy puts
    back, a freeze). No line: no change since what is live, or since the commit ``--since`` named (``since``: what
    is live was not compared then)."""
    empty = f"no change since {since[: git.SHORT_SHA]} (--since)" if since else "no change since what is live"
    runtime.stderr.write("📋 Change Analysis:\n" + "\n".join([*(lines or [empty]), *closing]) + "\n")


@heard_when_not_run("deploy.auto")
def deploy_auto(
    *,
    env: str | None = None,
    since: str | None = None,
    allow_dirty: bool = False,
    allow_older: bool = False,
    smoke: bool = True,
    dry_run: bool = False,
    as_json: bool = False,
    rollback: bool = True,
    canary: str | None = None,
    bake: str | None = None,
    watch_errors: str | None = None,
    unpromoted: bool = False,
    allow_rolled_back: bool = False,
    only: str | None = None,
    skip: str | None = None,
    runtime: Runtime | None = None,
    alarms_once: bool = False,
    watch_alarms: str | None = None,
) -> RunReport | None:
    """Deploy exactly what changed since the SHA live for each component: one plan, smoke once at the end.
    Refuses to take back live commits (HEAD behind what is live) unless ``allow_older``, and to deploy again a
    component as a person's rollback took it off (HEAD the same there) unless ``allow_rolled_back``; ``canary``
    and ``bake`` replace the environment's canary settings for the Lambda code it deploys (deploykit.canary),
    ``watch_errors`` its error watch after the app's rollout, ``watch_alarms`` how long its own alarms are read
    after smoke (deploykit.watch). ``only`` and ``skip`` (components
    or kinds, separated by commas: auto.selection) hold back the changed components the first leaves out or the
    second names: not deployed, not carried to HEAD, deployed by a later deploy.auto. ``alarms_once``: the
    environment's own alarms are read once after smoke, not watched for a while (the edit loop)."""
    runtime = runtime or Runtime()
    config, environment = load_env(runtime, env)
    chosen, skipped = auto.selections(config, environment, only=only, skip=skip)
    a = analyse(
        runtime,
        env,
        since=since,
        allow_dirty=allow_dirty,
        adjust=lambda environment: with_alarms_once(
            with_alarm_watch(with_watch(with_canary(environment, canary, bake), watch_errors), watch_alarms),
            alarms_once,
        ),
        estimates=not (dry_run and as_json),  # a plan to estimate, should anything have changed
    )
    if a.endpoints is None:
        if chosen is not None or skipped:
            raise UsageError(
                f"{a.env.name} is not fully deployed yet: deploy.auto deploys everything (deploy.full), and "
                f"{'--only' if chosen is not None else '--skip'} cannot hold any of it back",
                next_step="run it without --only and --skip; hold changes back once every stack is deployed",
            )
        promotion = require_promoted(
            runtime, a.config, a.env, a.revision, a.live, unpromoted=unpromoted, source_read=a.source
        )
        with aws_errors(a.env):
            plan = planner.full_plan(
                a.config,
                a.env,
                a.revision,
                repository_uri="",
                smoke=smoke,
                promoted=promotion.image,
                first_deploy=True,
                live_code=live_code_of(a.aws, a.env),  # a function some stack holds already
            )
        plan = dataclasses.replace(plan, unpromoted=promotion.unpromoted)
        if not dry_run and not promotion.image:  # the code it builds and packages: all of it
            syntax.refuse(syntax.python_errors(a.config.root, syntax.every_code(a.config)), "app or function")
        runtime.stderr.write(f"🆕 {a.env.name} is not fully deployed yet: deploying everything (deploy.full)\n")
        if dry_run and as_json:  # the shape CI scripts read, whatever the environment holds yet
            runtime.stdout.write(dumps(auto.plan_json(a.env, a.found, plan, a.config.root)) + "\n")
            return None
        return run_plan(runtime, a.config, a.env, plan, dry_run=dry_run, as_json=as_json, aws=a.aws, rollback=rollback)
    selection = auto.held_back(a.found, chosen, skipped)
    auto.refuse_holding_exporters(a.found, selection, a.env)
    a.found = selection
    changed = a.found.components()
    commits = changes.commits_behind(a.config.root, a.found)
    hosts = {fn: planner.role_of(a.env, stack) for fn, stack in a.endpoints.hosts.items()}  # each function's stack
    lines = auto.analysis_lines(
        a.found,
        a.env,
        uncommitted=a.revision.dirty_paths,
        requirements=changes.requirements_changed(a.config.root, a.found),
        commits=commits,
        flag=a.config.env_flag(a.env.name),
        hosts=auto.code_hosts(hosts),
    )
    closing = a.closing_lines()
    behind = auto.taken_back(a.found)
    if behind and not allow_older:  # refused before reading more; the analysis shows why
        _write_analysis(runtime, lines, closing)
        auto.refuse_taking_back(behind, a.found.head, a.env)
    uncommitted = bool(a.revision.dirty)
    again = {} if allow_rolled_back else auto.deploying_again(a.config, a.records, changed, uncommitted=uncommitted)
    if again:
        _write_analysis(runtime, lines, closing)
        auto.refuse_deploying_again(again, a.found.head, a.env)
    try:
        promotion = require_promoted(
            runtime, a.config, a.env, a.revision, changed, unpromoted=unpromoted, source_read=a.source
        )
    except UsageError:
        _write_analysis(runtime, lines, closing)  # refused before reading more; the analysis shows what would have gone
        raise
    with aws_errors(a.env):
        # each read only when a changed component needs it (nothing-to-do stays quick), those needed at once
        reads: dict[str, Callable[[], Any]] = {}
        if any(planner.is_function_stack(c) for c in changed):  # its deploy is given every function's code
            reads["code_keys"] = partial(current_code_keys, a.aws, a.config, a.env)
            reads["given"] = partial(
                code_given, a.aws, a.env, (c.split(":", 1)[1] for c in changed if c.startswith("lambda:"))
            )
        if "app" in changed:
            reads["repository_uri"] = partial(registry.repository_uri, a.aws)
            if not dry_run:
                reads["push_auth"] = partial(registry.push_auth, a.aws)  # kept for the push (or the copy), asked now
        read = at_once(reads)
        code_keys, never_deployed = read.get("code_keys", ({}, []))
        try:
            held_new = auto.held_new_functions(a.found, never_deployed)
            stacks = [c.split(":", 1)[1] for c in changed if planner.is_function_stack(c)]
            declared = declared_functions(runtime, a.config, a.env, a.aws, stacks, held_new)  # synthesized: rare
            auto.refuse_holding_new_functions(a.found, declared, a.env)
        except UsageError:
            _write_analysis(runtime, lines, closing)
            raise
        inputs = auto.Inputs(
            image_tag=a.live.get("app") or "",
            code_keys=code_keys,
            functions=dict(a.endpoints.functions),
            hosts=hosts,
            given=read.get("given", {}),
            repository_uri=read.get("repository_uri", ""),
            promoted=promotion.image,
        )
        plan = auto.auto_plan(a.config, a.env, a.revision, a.found, inputs, smoke=smoke)
        # components with no change since their live SHA are live at HEAD too: recorded so, later diffs start there
        carried = auto.unchanged_components(a.found, a.revision)
        held = tuple(sorted(a.found.held))
        taken = changes.as_taken(commits)  # what the run takes live, for its record
        plan = (
            dataclasses.replace(plan, carried=carried, unpromoted=promotion.unpromoted, held=held, commits=taken)
            if plan
            else plan
        )
        plan = pause.woken(plan, a.paused, a.env)  # a paused environment woken first
    if dry_run and as_json:
        runtime.stdout.write(dumps(auto.plan_json(a.env, a.found, plan, a.config.root)) + "\n")
        return None
    _write_analysis(runtime, lines, closing, a.found.since)
    if not plan:
        what = f"HEAD ({a.revision.short})"
        if a.revision.touches:  # uncommitted changes that touch components, all of them live already
            what = f"the work tree (HEAD {a.revision.short} with its uncommitted changes)"
        if a.found.since:  # what is live was not compared: only that HEAD changes nothing since the commit named
            runtime.stderr.write(
                f"✅ nothing {'else ' if held else ''}to deploy: {what} changes nothing "
                f"{'else ' if held else ''}deployable since {a.found.since[: git.SHORT_SHA]} (--since)"
                + (f", held back: {', '.join(held)}" if held else "")
                + f"; what {a.env.name} runs was not compared (inv diff without --since compares it)\n"
            )
        elif held:  # not "runs what HEAD would deploy": what was held back does not run
            runtime.stderr.write(
                f"✅ nothing else to deploy: {a.env.name} runs the rest of what {what} would deploy; held back: "
                f"{', '.join(held)} (the next inv deploy.auto deploys them)\n"
            )
        else:
            runtime.stderr.write(f"✅ nothing to deploy: {a.env.name} runs what {what} would deploy\n")
        if not dry_run:
            not_run(runtime, a.config, a.env, "deploy.auto", "nothing", head=a.revision.short, held=list(held))
        if as_json:
            runtime.stdout.write(nothing_to_do_json(a.env.name, "deploy.auto", held) + "\n")
        return None
    # refused before anything is built: it would fail at its rollout, its smoke or its synthesis
    refuse_or_say(
        runtime, syntax.python_errors(a.config.root, syntax.changed_code(a.config, a.found)), "changed", dry_run=dry_run
    )
    # before the plan is shown, as the syntax is
    require_importable(runtime, a.config, plan, dry_run=dry_run, handlers=a.handlers)
    if a.frozen is not None and not dry_run and not freeze.overridden():  # refused now: the lock would refuse it
        raise freeze.refusal(a.frozen, a.env, plan.title)
    if dry_run:
        _say_synthesis(runtime, a, plan)
    rows = auto.estimate_rows(plan, a.env, a.estimates)
    total = auto.estimate_total(plan.steps, a.env, a.estimates)
    about = f"{total:.0f}s" if total >= 10 else f"{total:.1f}s"
    runtime.stderr.write(
        f"\nPlan for deploy.auto → {a.env.name}"
        + (f" (about {about} from the history)" if total else "")
        + "\n"
        + tabulate(rows, headers=["#", "step", "target", "estimate"], tablefmt="simple")
        + "\n\n"
    )
    if dry_run:
        require_pushed(runtime, a.config, a.env, plan, dry_run=True)  # says whether the run would be refused
        say_missing_alarms(runtime, a.env, plan, a.aws)
        runtime.stderr.write("(dry run: nothing is changed)\n")
        return None
    return run_plan(
        runtime,
        a.config,
        a.env,
        plan,
        dry_run=False,
        as_json=as_json,
        aws=a.aws,
        rollback=rollback,
        planned_from=a.entries,
        handlers=a.handlers,
    )


WATCH_POLL = 1.0  # seconds between two looks at the work tree
WATCH_SETTLE = 0.5  # a change is deployed once the work tree stayed the same this long (an editor saving files)
LOGS_FIRST = 100  # of the lines written since the watch began, the newest shown when components are first followed


def _log_sources(
    runtime: Runtime, config: Config, env: EnvConfig, only: Collection[str] | None, skip: Collection[str]
) -> tuple[list[applogs.LogSource], dict[str, str], set[str]]:
    """Where the components the watch changes log (the app's, each deployed function's; as inv logs finds them): a
    component ``--only`` and ``--skip`` leave in, or whose stack they leave in (a Fargate stack deploy replaces the
    app's tasks) unless ``--skip`` names it. Also why one cannot be followed (component → why: not deployed yet, no
    awslogs), and the components whose lookup failed for a moment (an AWS error: followed on as they were)."""
    aws = runtime.aws_factory(env)  # of its own: the stacks' outputs as they are after the deploy just made
    sources: list[applogs.LogSource] = []
    missing: dict[str, str] = {}
    unsure: set[str] = set()
    hosts: dict[str, str] = {}
    with contextlib.suppress(ClientError, BotoCoreError):  # not read: a function's stack counts as the API stack
        hosts = lambda_chain.function_hosts(StackOutputs.of(aws), env)
    for which in log_components("all", config)[0]:
        host = f"stack:{planner.host_stack(which.key, hosts)}"
        by_stack = auto.selected(host, only, skip) and auto.selected(which.key, None, skip)  # and not skipped itself
        if not (auto.selected(which.key, only, skip) or by_stack):
            continue
        try:
            sources.append(log_source(aws, env, which))
        except DeployKitError as exc:
            missing[which.key] = exc.message
        except (ClientError, BotoCoreError):
            unsure.add(which.key)
    return sources, missing, unsure


def deploy_watch(
    *,
    env: str | None = None,
    allow_older: bool = False,
    smoke: bool = True,
    rollback: bool = True,
    allow_rolled_back: bool = False,
    only: str | None = None,
    skip: str | None = None,
    logs: bool = True,
    runtime: Runtime | None = None,
    deploy: Callable[[], Any] | None = None,
    until: Callable[[], bool] = lambda: False,
) -> int:
    """``inv deploy.auto --watch``: deploy.auto of the work tree (uncommitted changes included, as --allow-dirty)
    now, then again each time it changes (a save, a commit, a checkout), until Ctrl-C (or ``until()``). A failed
    deploy is told and the watch goes on: the next save deploys again. With ``logs``, between deploys, the new log
    lines of the components it deploys (commands.service.LogFollower). Refuses a protected environment, and one that
    takes only pushed commits. Returns how many deploys it ran."""
    runtime = runtime or Runtime()
    config, environment = load_env(runtime, env)
    chosen, skipped = auto.selections(config, environment, only=only, skip=skip)  # refused now, not at a save
    if environment.protected:
        raise UsageError(
            f"environment {environment.name!r} is protected in deploy.toml; --watch deploys every save, "
            "uncommitted ones included",
            next_step=f"watch a development environment (the sandbox), or deploy commits: inv deploy.auto --env "
            f"{environment.name}",
        )
    if environment.require_pushed:  # each save would be refused: a work tree is on no remote branch
        raise UsageError(
            f"environment {environment.name!r} takes only pushed commits (require_pushed = true in deploy.toml); "
            "--watch deploys every save, uncommitted ones included",
            next_step=f"watch an environment of your own (the sandbox, a dev-* one), or push and deploy commits: "
            f"inv deploy.auto --env {environment.name}",
        )
    # a canary or an error watch of minutes at every save would defeat the loop: left out, and said so
    canary, watch_errors = environment.lambda_canary.on, environment.app_error_watch.on
    alarms_once = environment.alarm_watch.seconds > 0 and environment.alarm_watch.on
    if canary or watch_errors or alarms_once:
        left_out = [
            what
            for what, on in (("Lambda canary", canary), ("error watch", watch_errors), ("alarm watch", alarms_once))
            if on
        ]
        listed = " and ".join([", ".join(left_out[:-1]), left_out[-1]] if left_out[1:] else left_out)
        alarms = "; its alarms are read once, after smoke" if alarms_once else ""
        runtime.stderr.write(
            f"👀 the edit loop leaves out {environment.name}'s {listed} (each save would wait for "
            f"{'it' if len(left_out) == 1 else 'them'}{alarms}): inv deploy.auto without --watch runs them\n"
        )
    deploy = deploy or partial(
        deploy_auto,
        env=env,
        allow_dirty=True,
        allow_older=allow_older,
        smoke=smoke,
        rollback=rollback,
        allow_rolled_back=allow_rolled_back,
        only=only,
        skip=skip,
        runtime=runtime,
        canary="0" if canary else None,
        watch_errors="0" if watch_errors else None,
        alarms_once=alarms_once,
    )
    clock, deployed, runs = runtime.clock, None, 0
    following = None
    if logs:  # between deploys: the lines of the components it deploys, from the first deploy's on
        client = logs_client(runtime.aws_factory(environment))
        following = LogFollower(runtime, client, runtime.clock.now(), limit=LOGS_FIRST)
    try:
        while not until():
            state = git.worktree_state(config.root)
            if state == deployed:
                if following:
                    following.read_if_due()
                clock.sleep(WATCH_POLL)
                continue
            if deployed is not None:  # a change: deploy it once it has settled
                clock.sleep(WATCH_SETTLE)
                if git.worktree_state(config.root) != state:
                    continue
            deployed, runs = state, runs + 1
            try:
                until_unlocked(deploy, runtime)  # waits for another deploy's lock when allowed, as each task does
            except Interrupted:
                raise
            except DeployKitError as exc:  # told as the task would, then back to watching
                runtime.stderr.write(f"❌ {exc.message}\n" + (f"  → next: {exc.next_step}\n" if exc.next_step else ""))
            if following:  # looked up again: the deploy may have made a function, or moved a log group
                sources, missing, unsure = _log_sources(runtime, config, environment, chosen, skipped)
                added = following.follow(sources, missing, keep=unsure)
                if added:
                    runtime.stderr.write(
                        f"📜 following the logs of {', '.join(added)} between deploys (--no-logs: not)\n"
                    )
            runtime.stderr.write(
                f"\n👀 watching {config.root} for changes to deploy to {environment.name} (Ctrl-C ends)\n"
            )
    except KeyboardInterrupt:  # the way to stop watching: not an error
        runtime.stderr.write("\nstopped watching\n")
    return runs


def _newest_records(aws: AwsFactory, env: EnvConfig, runtime: Runtime | None = None) -> list[history.Record]:
    """The environment's newest runs (auto.NEWEST_RUNS), newest first (cached on this machine by ETag); none without
    a registry stack (the first deploy). A record that cannot be read is passed over, said on ``runtime``'s
    stderr."""
    # its outputs come from memory when the caller read the stacks already
    found = history.History.of(aws, env, warn=warner(runtime))
    return found.records(auto.NEWEST_RUNS) if found else []


def diff(
    *,
    env: str | None = None,
    since: str | None = None,
    as_json: bool = False,
    as_markdown: bool = False,
    verify: bool = False,
    drift: bool = False,
    runtime: Runtime | None = None,
) -> changes.ChangeSet:
    """Change Analysis: each changed path, its component and the command that deploys it; for each changed stack,
    the CloudFormation changes it would make (a change set that is deleted, never executed) and its status.
    ``as_markdown``: the same as one Markdown document on stdout, for a pull request's comment or a CI job's summary
    (deploykit.markdown).

    ``verify``: whether the environment runs what this checkout would deploy, whatever git and the live record say:
    every stack previewed, every function's live code compared with this checkout's zip; StepFailed (exit 1) when
    anything differs (a nightly check of an environment that should run main).

    ``drift``: every stack previewed through a drift-aware change set (what ``inv deploy.stack NAME --revert-drift``
    would do), so what was changed outside CloudFormation is among the changes and said; with ``verify``, such a
    change is a difference too (an alias the fast path moved is not: its code is compared apart)."""
    if as_json and as_markdown:
        raise UsageError("--json and --markdown both print on stdout", next_step="choose one of them")
    runtime = runtime or Runtime()
    a = analyse(runtime, env, since=since, allow_dirty=True)
    packages = changes.requirements_changed(a.config.root, a.found)
    commits = changes.commits_behind(a.config.root, a.found)
    commits_json = [commit.to_json() for commit in commits]  # behind the changes, newest first
    lines = auto.analysis_lines(
        a.found,
        a.env,
        uncommitted=a.revision.dirty_paths,
        requirements=packages,
        commits=commits,
        flag=a.config.env_flag(a.env.name),
    )
    if a.revision.touches:
        lines.append(
            "✏️  uncommitted changes are counted: commit them before deploying, or deploy them as a dirty build "
            "with --allow-dirty"
        )
    held: dict[str, str] = {}  # component → why the promote_from environment does not run it
    earlier: dict[str, str] = {}  # component → the commit the promote_from environment verified it at, before
    if a.source is not None and a.found.components():
        source = a.source.name
        held, earlier = promotion_of(a.config, a.source, a.found.components(), a.revision, a.env.name)
        lines += [
            f"🚦 {component}: not promoted, {held[component]}"
            if component in held
            else f"🚦 {component}: {source} ran it at {earlier[component]}"
            if component in earlier
            else f"🚦 {component}: {source} runs it"
            for component in sorted(a.found.components())
        ]
        if held:
            lines.append(f"🚦 deploy.auto --env {a.env.name} refuses this until {source} runs it (or --unpromoted)")
    again = auto.deploying_again(a.config, a.records, a.found.components(), uncommitted=bool(a.revision.dirty))
    refusals = [
        f"{why}: deploy.auto refuses to bring {'it' if count == 1 else 'them'} back (or --allow-rolled-back)"
        for why, count in auto.said_together(again)
    ]
    unimportable = _unimportable(a)
    refusals += [
        f"{lambda_imports.said(fn, found)}: deploy.auto refuses it ({lambda_imports.SKIP_ENV}=1 skips the check)"
        for fn, found in unimportable.items()
    ]
    lines += [f"⛔ {refusal}" for refusal in refusals]
    closing = a.closing_lines()
    _write_analysis(runtime, lines, closing, a.found.since)
    previews: dict[str, Preview] = {}
    changed = {c.split(":", 1)[1] for c in a.found.components() if c.startswith("stack:")}
    roles = list(planner.stack_roles(a.env)) if verify or drift else sorted(changed)
    if roles:
        # the app's image copied from the promote_from environment, as deploy.auto would
        promoted = None if a.source is None or "app" in held else earlier.get("app") or a.source.live.get("app")
        previews = _stack_previews(
            runtime, a, roles, changed=changed, as_given=verify, drift=drift, promoted_tag=promoted
        )
    stacks_json = {name: preview.json for name, preview in previews.items()}
    verdict = _verified(runtime, a, stacks_json) if verify else None
    if as_markdown:
        attention = [*refusals, *(f"{component}: not promoted, {why}" for component, why in sorted(held.items()))]
        attention += [
            f"{component}: live at {live[: git.SHORT_SHA]}, {n} commit{'s' if n > 1 else ''} ahead of HEAD: "
            "deploy.auto refuses to take them back (or --allow-older)"
            for component, (live, n) in auto.taken_back(a.found).items()
        ]
        attention += closing
        listed = set(auto.commit_lines(commits))  # listed apart, linked: not in the block too
        found = markdown.Review(
            env=a.env.name,
            base=auto.oldest_base(a.found, a.config.root),
            head=a.found.head,
            components=sorted(a.found.components()),
            analysis=[*(line for line in lines if line not in listed), *closing],
            command=inv_command("deploy.auto", env=a.env.name),
            stacks=[preview.section for preview in previews.values()],
            attention=attention,
            verdict=None if verdict is None else verdict["differs"],
            commits=commits_json,
            commit_url=git.commit_url_base(a.config.root, os.environ),
        )
        runtime.stdout.write(markdown.review(found))
    if as_json:
        data = auto.diff_json(a.env, a.found, a.config.root)
        data["stacks"] = stacks_json
        if a.env.promote_from:
            data["promotion"] = {"from": a.env.promote_from, "not_promoted": held, "ran_before": earlier}
        data["rolled_back"] = again  # component → why deploy.auto refuses to bring it back
        # function → why its zip would not import on Lambda (deploy.auto refuses it)
        data["unimportable"] = {fn: [str(p) for p in found] for fn, found in unimportable.items()}
        data["commits"] = commits_json
        # requirements file → the packages its change changes
        data["requirements"] = {
            path: [{"name": p.name, "before": p.before, "after": p.after} for p in found]
            for path, found in packages.items()
        }
        if verdict is not None:
            data["verify"] = verdict
        runtime.stdout.write(dumps(data) + "\n")
    if verdict is not None and verdict["differs"]:
        by_hand = [fn for fn, found in verdict["functions"].items() if found.get("settings")]
        hosts = a.endpoints.hosts if a.endpoints is not None else {}
        settings = "".join(
            f"; {fn}'s settings: {lambda_chain.drift_remedy(a.env.name, hosts.get(fn))}" for fn in by_hand
        )
        revert = " --revert-drift" if drift else ""
        raise StepFailed(
            f"{a.env.name} does not run what this checkout would deploy: {'; '.join(verdict['differs'])}",
            next_step=f"inv deploy.auto --env {a.env.name} deploys what changed; a stack whose change set above is "
            f"not empty though nothing of it changed in git: inv deploy.stack NAME --env {a.env.name}{revert}"
            f"{settings}",
        )
    return a.found


def _verified(runtime: Runtime, a: Analysis, stacks_json: Mapping[str, Any]) -> dict[str, Any]:
    """``inv diff --verify``'s verdict, said: each function's live code against this checkout's zip (the fast
    path's part, which the API stack's preview cannot show) and its live version's settings against this checkout's
    template (a setting changed by hand and published, which no change set shows: CloudFormation compares templates,
    not what runs), then what differs: a component the analysis counts changed, a stack whose preview is not empty,
    a function that runs other code or other settings. A function's $LATEST with other settings than the template
    (staged by hand, not published) is said, not counted: it is not served. ``{"differs": [what], "functions": {fn:
    {"name": its Lambda function or None, "live": CodeSha256 or None, "checkout": CodeSha256, "settings": {setting:
    {"live", "checkout"}}, "latest_settings": {setting: {"latest", "checkout"}} (those that differ)}}}``."""
    packages = planner.lambda_packages(a.config, a.env)
    names = lambda_chain.deployed_functions(StackOutputs.of(a.aws), a.env, required=False)
    client = a.aws.client("lambda")
    deployed = [fn for fn in packages if fn in names]
    with aws_errors(a.env):  # what each alias serves and, beside it, $LATEST (what the next fast path publishes)
        reads: dict[tuple[str, str], Callable[[], Any]] = {}
        for fn in deployed:
            reads[fn, "serving"] = partial(lambda_chain.live_configuration, client, names[fn])
            reads[fn, "latest"] = partial(lambda_chain.live_configuration, client, names[fn], "$LATEST")
        found = at_once(reads)
    serving = {fn: found[fn, "serving"] for fn in deployed}
    latest = {fn: found[fn, "latest"] for fn in deployed}
    functions: dict[str, dict[str, Any]] = {
        fn: {"name": names.get(fn), "live": (serving.get(fn) or {}).get("CodeSha256"), "checkout": package.code_sha256}
        for fn, package in packages.items()
    }
    differs = {c: f"{c} changed" for c in sorted(a.found.components())}  # component → what differs

    def differ(component: str, what: str) -> None:
        differs[component] = f"{differs[component]} ({what})" if component in differs else what

    roles = {name: role for role, name in planner.stack_roles(a.env).items()}
    for name, preview in stacks_json.items():
        # an alias the fast path moved is drift to CloudFormation (--drift): its code is compared below
        to_make = None if preview["changes"] is None else [c for c in preview["changes"] if not alias_moves_only(c)]
        if preview.get("no_preview"):  # what it holds cannot be compared now: not verified
            differ(f"stack:{roles[name]}", f"{name}: {preview['status']}, not compared ({preview['no_preview']})")
        elif to_make is None or to_make:
            count = f"{len(to_make)} change{'s' if len(to_make) > 1 else ''} to make" if to_make else "to be created"
            differ(f"stack:{roles[name]}", f"{name}: {count}")
    synthesized = [_synthesized(a, role) for role in planner.stack_roles(a.env) if planner.holds_functions(role)]
    holding = {fn: found for found in synthesized for fn in planner.code_parameters(found)}  # fn → its template
    runtime.stderr.write(
        "\n🔧 Lambda (what each live alias serves, against this checkout's zip and its template's settings)\n"
    )
    for fn, package in packages.items():
        serves = functions[fn]["live"]
        if serves == package.code_sha256:
            runtime.stderr.write(f"  {fn}: ✅ runs this checkout's code ({serves[:12]})\n")
        else:
            live = f"runs {serves[:12]}" if serves else "is not deployed"
            runtime.stderr.write(f"  {fn}: ❌ {live}, this checkout's is {package.code_sha256[:12]}\n")
            differ(f"lambda:{fn}", f"{fn} {live}, not this checkout's code")
        version = serving.get(fn)
        if not version or fn not in holding:
            continue
        wanted = lambda_chain.configured(holding[fn], fn)
        settings = lambda_chain.configuration_differs(wanted, version)
        functions[fn]["settings"] = {key: {"live": has, "checkout": want} for key, (want, has) in settings.items()}
        for key, (want, has) in settings.items():
            runtime.stderr.write(f"  {fn}: ❌ its live version has {key} {has!r}, this checkout's template {want!r}\n")
            differ(f"lambda:{fn}", f"{fn} runs with {key} {has!r}, not {want!r}")
        # $LATEST is not served, so it does not fail the verdict; the next fast-path deploy publishes what it has
        staged = lambda_chain.configuration_differs(wanted, latest[fn]) if latest.get(fn) else {}
        functions[fn]["latest_settings"] = {
            key: {"latest": has, "checkout": want} for key, (want, has) in staged.items()
        }
        for key, (want, has) in staged.items():
            if settings.get(key) == (want, has):  # published as it is: said above, with how to put it back
                continue
            runtime.stderr.write(
                f"  {fn}: ⚠️  its $LATEST has {key} {has!r}, this checkout's template {want!r}: not served, but the "
                f"next inv deploy.lambda {fn} (or deploy.auto of it) publishes it\n"
            )
    if not differs:
        runtime.stderr.write(
            f"\n✅ {a.env.name} runs what this checkout would deploy: no component changed, no stack has anything "
            "to change, every function runs this checkout's code\n"
        )
    return {"differs": list(differs.values()), "functions": functions}


def _synthesized(a: Analysis, role: str) -> dict[str, Any]:
    """The template this checkout synthesized for the stack of ``role`` (``inv diff --verify`` synthesized every
    one); {} when there is none."""
    path = synth.template_in(planner.synth_dir(a.config, a.env), planner.stack_roles(a.env)[role])
    try:
        found = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return found if isinstance(found, dict) else {}


def _stack_previews(
    runtime: Runtime,
    a: Analysis,
    roles: Sequence[str],
    *,
    changed: Collection[str],
    as_given: bool = False,
    drift: bool = False,
    promoted_tag: str | None = None,
) -> dict[str, Preview]:
    """Synthesize (while what is live is read), then preview each stack of ``roles`` with the inputs a deploy would
    give it: every change set at the same time (on AWS each takes seconds to make; a change to shared CDK code
    changes every stack), printed in the stacks' order. ``changed``: the roles the analysis counts changed; an
    empty preview of another says there is nothing to change. ``as_given``: each stack keeps
    the parameters it was deployed with (its template alone is previewed): the image and the functions' code, which
    the app chain and the fast path change without the stacks, are compared apart (``--verify``). ``drift``: each
    change set drift-aware (``--drift``). Otherwise a stack gets what deploy.auto would give it
    (:func:`deploykit.auto.stack_inputs`): the Fargate stack this commit's image when the app changes too
    (``promoted_tag``, the promote_from environment's image), the API stack each changed function's new zip."""
    out = planner.synth_dir(a.config, a.env)
    reporter = Reporter(runtime.stderr, clock=runtime.clock)
    reads: dict[str, Callable[[], Any]] = {
        "synth": synthesis(runtime, a.config, a.env, a.aws, reporter),
        "image_tag": partial(auto.live_image_tag_or_empty, a.aws, a.env),
    }
    if any(planner.holds_functions(role) for role in roles):
        reads["code_keys"] = lambda: current_code_keys(a.aws, a.config, a.env)[0]
    with aws_errors(a.env), reporter.activity("synth"):
        read = at_once(reads)
    names = planner.stack_roles(a.env)
    components = a.found.components()
    live = read["image_tag"], read.get("code_keys", {})
    deployed = live  # what deploy.auto gives a changed stack (the others, --drift's, keep what runs)
    if not as_given:
        functions = sorted(c.split(":", 1)[1] for c in components if c.startswith("lambda:"))
        packages = {fn: lambda_chain.package(a.config, a.env, fn) for fn in functions}
        deployed = auto.stack_inputs(a.revision, components, *live, packages, promoted_tag)

    def given(role: str) -> dict[str, str]:  # the parameters a deploy would give the stack of ``role``
        return dict(planner.stack_parameters(role, *(deployed if role in changed else live)))

    previews = {
        names[role]: partial(
            stack_previewed,
            runtime,
            a.aws,
            a.env,
            names[role],
            out / f"{names[role]}.template.json",
            given(role),
            as_given=as_given,
            drift=drift,
        )
        for role in roles
    }
    with aws_errors(a.env):
        found = all_of(previews)
    plugins = load_plugins(runtime, a.config)
    return {
        names[role]: show_preview(
            runtime,
            a.env,
            names[role],
            *found[names[role]],
            changed=role in changed,
            plugins=plugins,
            made_before=_made_before(a, role, changed, out, given),
            drift=drift,
        )
        for role in roles
    }


def _made_before(
    a: Analysis, role: str, changed: Collection[str], out: Path, given: Callable[[str], Mapping[str, str]]
) -> Callable[[str, str], bool] | None:
    """What the changed stacks a deploy.auto deploys before ``role``'s (those of the levels before its) could make
    (:func:`deploykit.references.could_make`), as their templates in ``out`` and the parameters a deploy would give
    them (``given``) say; None when there are none."""
    from deploykit.stack_chain import readable_template

    level = {r: index for index, roles in enumerate(planner.stack_levels(a.env)) for r in roles}
    before = [r for r in changed if r in level and role in level and level[r] < level[role]]
    if not before:
        return None
    names = planner.stack_roles(a.env)
    earlier = [
        references.Earlier(readable_template(str(synth.template_in(out, names[r]))), names[r], given(r))
        for r in sorted(before)
    ]
    return references.could_make(earlier, region=a.env.region, account=a.aws.account())
