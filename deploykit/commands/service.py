"""The commands that act on what runs: inv logs, inv run, inv tasks, inv scan, inv restart, inv pause and inv resume
on the service, inv invoke on a Lambda function."""

from __future__ import annotations

import dataclasses
import re
import shlex
from collections.abc import Callable, Collection, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

import botocore.exceptions

from deploykit import (
    auto,
    ecs,
    history,
    invoking,
    lambda_chain,
    lock,
    oneoff,
    overview,
    pause,
    references,
    restart,
    scan_gate,
    task_list,
)
from deploykit import logs as applogs
from deploykit import rollback as rollbacks
from deploykit.app_chain import image_in_registry
from deploykit.aws import AwsFactory, answered, is_throttling
from deploykit.clock import seconds_of
from deploykit.commands.core import (
    Runtime,
    aws_errors,
    check_account,
    environments_made,
    head_revision,
    heard_when_not_run,
    line_on,
    load_env,
    nothing_to_do_json,
    refuse_unaskable,
    run_plan,
    say_warning,
    until_unlocked,
)
from deploykit.config import SAMPLE_PART, Config, EnvConfig
from deploykit.errors import DeployKitError, StepFailed, UsageError, said
from deploykit.output import reader_gone, tabulate
from deploykit.plan import Plan, RunReport, dumps
from deploykit.stacks import (
    StackOutputs,
    error_code,
)

# seconds between two reads of followed logs (cdk watch's too), at least: one FilterLogEvents per component, which AWS
# allows 5 times a second per account and region, shared by everyone in the account; so with many components, half a
# second each (10 functions and the app: a read every 5.5 s)
LOGS_POLL = 2.0
LOGS_POLL_EACH = 0.5
LOGS_READ_TIMEOUT = 10.0  # seconds: a read sent once, never retried by botocore (the next read is the retry)


def log_components(text: str, config: Config) -> tuple[list[rollbacks.Component], bool]:
    """``--component``: ``app``, ``lambda:<fn>``, several separated by commas, or ``all`` (the app and every function
    of lambda/); and whether ``all`` was asked. UsageError naming what there is otherwise."""
    named = [part.strip() for part in text.split(",") if part.strip()] or [text]
    if "all" in named:
        fns = lambda_chain.function_names(config)
        return [rollbacks.Component("app"), *(rollbacks.Component("lambda", fn) for fn in fns)], True
    try:
        found = [rollbacks.parse_component(part, config, purpose="logs") for part in named]
    except UsageError as exc:
        raise UsageError(exc.message, next_step=f"{exc.next_step}, several separated by commas, or all") from None
    return list(dict.fromkeys(found)), False


def log_source(
    aws: AwsFactory, env: EnvConfig, which: rollbacks.Component, task: str = "", *, deleted: bool = False
) -> applogs.LogSource:
    """Where a component logs, read from the environment (the app: the awslogs settings of the task definition its
    service runs, ``task`` narrowing them to one task's stream; a function: its LoggingConfig); UsageError when it is
    not deployed. ``deleted``: the app of a service ECS deleted (INACTIVE) too, while its log group holds its lines
    (applogs.deleted_app_source: the source says so); without, it is refused."""
    if which.kind == "app":
        return applogs.app_source(aws.client("ecs"), env, task, logs=aws.client("logs") if deleted else None)
    function_name = lambda_chain.deployed_function(StackOutputs.of(aws), env, which.function)
    return applogs.lambda_source(aws.client("lambda"), which.function, function_name)


def logs_client(aws: AwsFactory) -> Any:
    """The followers' CloudWatch Logs client: each read sent once (a throttled one is said, and read again at the
    next poll), and waited for LOGS_READ_TIMEOUT at most, so a read never holds up the watch's look at the work tree
    for long."""
    return aws.unretried_client("logs", read_timeout=LOGS_READ_TIMEOUT)


class LogFollower:
    """Components' new lines printed on ``runtime``'s stdout as they come (applogs.Followed: each once, the lines of a
    read in time order across components; named by component when ``named``), and on its stderr, once each and again
    only when the reason changes, what cannot be followed or read. ``inv logs --follow``, and ``inv deploy.auto
    --watch`` between deploys."""

    def __init__(self, runtime: Runtime, logs: Any, start: datetime, *, limit: int, named: bool = True) -> None:
        self.runtime, self.named = runtime, named
        self.followed = applogs.Followed(logs, start, limit=limit)
        self.said: dict[str, str] = {}  # component → the last thing said of why it is not followed or read
        self.ever: set[str] = set()  # the components followed at some time
        self.next_read = 0.0

    @property
    def poll(self) -> float:
        """Seconds between two reads: LOGS_POLL, more with many components (LOGS_POLL_EACH each)."""
        return max(LOGS_POLL, LOGS_POLL_EACH * len(self.followed.sources))

    def follow(
        self,
        sources: Sequence[applogs.LogSource],
        missing: Mapping[str, str] | None = None,
        keep: Collection[str] = (),
    ) -> list[str]:
        """Follow ``sources`` from now on, and those followed now of the components ``keep`` names (their lookup
        failed for a moment); say what ``missing`` names (component → why not). Read at the next
        :meth:`read_if_due`. Returns the components never followed before."""
        kept = [s for s in self.followed.sources if s.component in keep]
        self.followed.follow([*sources, *kept])
        for component, why in (missing or {}).items():
            self._say(component, f"📜 not following {component}'s logs: {why}")
        self.next_read = 0.0
        added = [s.component for s in sources if s.component not in self.ever]
        self.ever.update(added)
        return added

    def read_if_due(self) -> None:
        """Read every component once if :attr:`poll` seconds passed since the last read (or the sources changed)."""
        clock = self.runtime.clock
        if clock.monotonic() < self.next_read:
            return
        self.next_read = clock.monotonic() + self.poll
        lines, failed = self.followed.new()
        self.runtime.stdout.writelines(line.render(source, named=self.named) + "\n" for source, line in lines)
        self.runtime.stdout.flush()
        for source, exc in failed:
            if isinstance(exc, applogs.NoLogGroup):
                self._say(source.component, f"📜 {exc.message} yet: following it from when it does")
                continue
            why = said(exc)
            self._say(
                source.component,
                f"📜 could not read {source.component}'s logs ({why}): reading again in {self.poll:g} s",
            )
        for component in {s.component for s in self.followed.sources} - {s.component for s, _ in failed}:
            self.said.pop(component, None)  # read: a failure later is said again

    def _say(self, component: str, text: str) -> None:
        if self.said.get(component) != text:
            self.said[component] = text
            self.runtime.stderr.write(text + "\n")


def logs(
    *,
    env: str | None = None,
    component: str = "app",
    since: str = "10m",
    task: str = "",
    limit: int = 200,
    follow: bool = False,
    as_json: bool = False,
    pattern: str = "",
    runtime: Runtime | None = None,
) -> list[applogs.LogLine]:
    """What components (the app's containers, Lambda functions: ``component``, see :func:`log_components`) wrote
    since ``since``, from CloudWatch Logs: the newest ``limit`` lines on stdout, oldest first (named by component when
    there are several; with ``pattern``, only the lines matching it, a CloudWatch Logs filter pattern); with
    ``follow``, then each new line until interrupted (:class:`LogFollower`)."""
    runtime = runtime or Runtime()
    config, environment = load_env(runtime, env)
    if limit < 1:
        raise UsageError(f"--limit must be at least 1 (got {limit})", next_step="pass --limit N with N of 1 or more")
    if follow and as_json:
        raise UsageError("--follow and --json do not go together", next_step="leave out one of them")
    which, everything = log_components(component, config)
    if task and [w.kind for w in which] != ["app"]:
        raise UsageError(
            "--task names one of the app's tasks", next_step="leave out --task, or use it with --component app alone"
        )
    start = applogs.parse_since(since, runtime.clock.now()).astimezone(UTC)  # said in UTC, whatever zone it named
    aws = runtime.aws_factory(environment)
    with aws_errors(environment):
        sources = []
        for w in which:
            try:
                found = log_source(aws, environment, w, task, deleted=True)  # a deleted service's last lines too
                sources.append(dataclasses.replace(found, pattern=pattern.strip()))
            except UsageError as exc:  # all: a function not deployed yet (its folder added) is left out, and said
                if not (everything and w.kind == "lambda"):
                    raise
                runtime.stderr.write(f"📜 {w.key} left out: {exc.message}\n")
        for source in sources:
            if source.deleted:  # said first: the lines below are the last it wrote
                runtime.stderr.write(f"⚠️  {source.deleted}\n")
            streams = f", streams {source.stream_prefix}*" if source.stream_prefix else ""
            matching = f", lines matching {source.pattern}" if source.pattern else ""
            runtime.stderr.write(
                f"📜 {source.component} in {environment.name}: CloudWatch Logs {source.group}{streams}{matching}; "
                f"since {start:%Y-%m-%d %H:%M:%S} UTC (times in UTC)\n"
            )
        if follow:
            if task.strip() and not applogs.has_streams(aws.client("logs"), sources[0]):  # yet: it may be starting
                runtime.stderr.write(
                    f"📜 no task of {environment.service} whose id starts with {task.strip()!r} has written yet: "
                    f"following until one does (a mistyped id never will: inv tasks --env {environment.name})\n"
                )
            follower = LogFollower(runtime, logs_client(aws), start, limit=limit, named=len(sources) > 1)
            follower.follow(sources)
            try:
                while not reader_gone(runtime.stdout):  # inv logs --follow | grep -m1 X: ends with its reader
                    follower.read_if_due()
                    runtime.clock.sleep(follower.poll)
            except KeyboardInterrupt:  # the way to stop following: not an error
                runtime.stderr.write("\nstopped following\n")
            return []
        pairs = _newest_lines(runtime, aws.client("logs"), sources, start, limit)
        cut = len(pairs) > limit
        pairs = pairs[-limit:]
        if not pairs and task.strip() and not applogs.has_streams(aws.client("logs"), sources[0]):
            raise UsageError(  # a mistyped id: said so, rather than "try a longer --since"
                f"no task of {environment.service} whose id starts with {task.strip()!r} ever wrote to "
                f"{sources[0].group}",
                next_step=f"inv tasks --env {environment.name} lists the service's tasks (running, and stopped "
                "within the hour): the first characters of one's id do",
            )
    lines = [line for _, line in pairs]
    if as_json:
        document: dict[str, Any] = {"environment": environment.name}
        if len(sources) == 1:  # the shape of one component, kept for scripts
            document |= _source_json(sources[0])
        else:
            document["components"] = [_source_json(s) for s in sources]
        if pattern.strip():
            document["filter"] = pattern.strip()
        document |= {
            "since": start.isoformat(),
            "lines": [line.to_json(source) | {"component": source.component} for source, line in pairs],
        }
        runtime.stdout.write(dumps(document) + "\n")
    else:
        runtime.stdout.writelines(line.render(source, named=len(sources) > 1) + "\n" for source, line in pairs)
    if not lines:
        matching = f" matching {pattern.strip()}" if pattern.strip() else ""
        runtime.stderr.write(f"no lines{matching} written since {start:%Y-%m-%d %H:%M:%S} UTC (try a longer --since)\n")
    elif cut:
        runtime.stderr.write(f"(the newest {limit}; --limit N for more)\n")
    return lines


def _source_json(source: applogs.LogSource) -> dict[str, Any]:
    """A component of ``inv logs --json``: its name, its log group, and whether ECS deleted the service whose lines
    these are (the app's, INACTIVE: its tasks write no more; what stderr says first), so a script can tell the last
    lines of a deleted service from those of one that runs. Always false for a function."""
    return {"component": source.component, "group": source.group, "deleted": bool(source.deleted)}


def _newest_lines(
    runtime: Runtime, logs: Any, sources: Sequence[applogs.LogSource], start: datetime, limit: int
) -> list[tuple[applogs.LogSource, applogs.LogLine]]:
    """The newest ``limit`` lines of all ``sources`` since ``start``, oldest first. Of several, one whose log group
    does not exist (a function that never ran) is said and passed over; of one, it is the UsageError."""
    found: list[tuple[applogs.LogSource, applogs.LogLine]] = []
    for source in sources:
        try:  # one more than asked: whether there were more than ``limit`` (then said cut) is known
            found += [(source, line) for line in applogs.read(logs, source, start, limit=limit + 1)]
        except applogs.NoLogGroup as exc:
            if len(sources) == 1:
                raise
            runtime.stderr.write(f"📜 {exc.message}: nothing written yet\n")
    return sorted(found, key=lambda pair: pair[1].timestamp)[-(limit + 1) :]


RUN_STARTED_BY = "deploykit-run"  # inv run's tasks: ListTasks --started-by finds them
RUN_LAST_READS = 8  # reads of the task's log after it stopped, a second apart at most, while lines still come
RUN_QUIET_READS = 2  # ... until this many in a row find none


def run_command(
    command: str,
    *,
    env: str | None = None,
    timeout: str = "10m",
    image_tag: str | None = None,
    as_json: bool = False,
    runtime: Runtime | None = None,
) -> dict[str, Any]:
    """``inv run``: ``command`` once in a one-off task of the revision the service runs, beside it (deploykit.oneoff):
    its output followed as it runs (stdout; stderr with ``as_json``), the task stopped past ``timeout`` or on Ctrl-C.
    StepFailed (exit 1) unless it exits 0. Nothing deployed changes: no lock, no freeze, no history. ``image_tag``:
    another image of the service's repository instead (one pushed, not yet deployed: a migration tried first), in a
    revision of the service's own with only that image changed (found, else registered); refused (exit 2) when the
    registry does not have it."""
    runtime = runtime or Runtime()
    _config, environment = load_env(runtime, env)
    try:
        argv = shlex.split(command)
    except ValueError as exc:  # an unbalanced quote
        raise UsageError(f"the command cannot be split into its words: {exc}", next_step="check its quotes") from None
    if not argv:
        raise UsageError("name the command to run", next_step="inv run 'python -m app.release' (one string, quoted)")
    deadline = seconds_of(timeout)
    if deadline is None:
        raise UsageError(
            f"--timeout {timeout!r} is not a duration (of a year at most)",
            next_step="pass one such as 300, 90s, 10m or 1h",
        )
    if deadline <= 0:
        raise UsageError(f"--timeout {timeout}: the command would be stopped before it starts", "pass 300, 90s or 10m")
    if image_tag:
        ecs.check_image_tag(image_tag)
    aws = runtime.aws_factory(environment)
    out = runtime.stderr if as_json else runtime.stdout
    with aws_errors(environment):
        client = aws.client("ecs")
        service = ecs.describe_service(client, environment.cluster, environment.service, environment)
        revision = str(service["taskDefinition"])
        taskdefs = ecs.TaskDefinitions.of(aws)
        if image_tag:
            revision = _revision_of(runtime, aws, environment, taskdefs, revision, image_tag)
        tag = ecs.image_tag(taskdefs.image(revision, environment.container)) or "?"
        # what the revision names (secrets, log group, roles...) must exist, or the task would not start: ECS says so
        # only as it fails to, a minute on AWS (register-taskdef checks the same before it registers a revision)
        found = references.check_revision(aws, revision, taskdefs.get(revision))
        references.refuse_missing_for_run(found, ecs.revision_name(revision), environment.stacks.fargate)
        arguments = oneoff.run_task_arguments(
            service, environment.cluster, revision, environment.container, argv, RUN_STARTED_BY
        )
        arn = oneoff.start(client, arguments, f"a task of {ecs.revision_name(revision)}")
        task_id = arn.rsplit("/", 1)[-1]
        runtime.stderr.write(
            f"🏃 {oneoff.shown(argv)} in {environment.name}: task {task_id} of {ecs.revision_name(revision)} "
            f"({tag}), beside {environment.service}; Ctrl-C stops it\n"
        )
        tail = None
        where = ecs.log_stream(taskdefs.get(revision), environment.container, arn)
        if where is not None:  # its own stream: every line in it is the command's
            source = applogs.LogSource("app", *where)
            tail = applogs.Tail(aws.client("logs"), source, runtime.clock.now() - timedelta(minutes=5))
        else:
            runtime.stderr.write(f"   (its output is not followed: {environment.container} logs without awslogs)\n")

        unread: list[str] = []  # why its output could not be read, said once

        def show_new() -> int:
            if tail is None:
                return 0
            try:
                lines = tail.new()
            except botocore.exceptions.ClientError as exc:
                if error_code(exc) == "ResourceNotFoundException" or is_throttling(exc):
                    return 0  # its stream is not there yet, or the read was slowed down: the next poll reads it
                said = answered(exc)  # denied (logs:FilterLogEvents, the group's KMS key): said, never silent
            except (botocore.exceptions.BotoCoreError, applogs.NoLogGroup) as exc:  # the command runs on all the same
                said = exc.message if isinstance(exc, applogs.NoLogGroup) else str(exc)
            else:
                for line in lines:
                    out.write(line.message + "\n")
                out.flush()
                return len(lines)
            if not unread:
                unread.append(said)
                runtime.stderr.write(f"   (its output cannot be read now: {said}; the command runs on)\n")
            return 0

        def state(status: str, elapsed: float) -> None:
            runtime.stderr.write(f"   [{elapsed:6.1f}s] task {status}\n")

        try:
            ended = oneoff.wait(
                client,
                runtime.clock,
                environment.cluster,
                arn,
                environment.container,
                timeout=deadline,
                poll=environment.poll_seconds,
                state=state,
                each=show_new,
            )
        except BaseException:  # Ctrl-C, SIGTERM, a call failed: the task does not run on alone
            failed = oneoff.stop(client, environment.cluster, arn, "deploykit: inv run that started it stopped")
            runtime.stderr.write(
                f"⚠️  task {task_id} could not be stopped: {failed}\n" if failed else f"⏹  task {task_id} stopped\n"
            )
            raise
        show_new()  # what it wrote last, sent as it stopped; then whatever the log driver still sends, a little later
        quiet = 0  # reads in a row that found nothing: the log may still be on its way after one
        for _ in range(RUN_LAST_READS if tail is not None else 0):
            runtime.clock.sleep(min(environment.poll_seconds, 1.0))
            quiet = 0 if show_new() else quiet + 1
            if quiet == RUN_QUIET_READS:
                break
    result = {
        "environment": environment.name,
        "command": argv,
        "task": arn,
        "task_definition": revision,
        "image_tag": tag,
        "exit_code": ended.exit_code,
        "seconds": round(ended.seconds, 3),
        "ok": ended.ok,
    }
    if as_json:
        runtime.stdout.write(dumps(result) + "\n")
    if not ended.ok:
        raise StepFailed(
            f"{oneoff.shown(argv)} {ended.what()} in task {task_id} of {environment.name}",
            next_step=f"its output again: inv logs --env {environment.name} --task {task_id} --since 1h",
        )
    runtime.stderr.write(f"✅ exited 0 after {ended.seconds:.1f}s (task {task_id})\n")
    return result


def tasks_list(
    *,
    env: str | None = None,
    stopped: int = task_list.STOPPED_SHOWN,
    as_json: bool = False,
    runtime: Runtime | None = None,
) -> list[task_list.TaskRow]:
    """The tasks of the service's family in its cluster (deploykit.task_list): the running ones, then the ``stopped``
    newest stopped ones, each with its revision, image, who started it, status, health, target and why it stopped."""
    if stopped < 0:
        raise UsageError(
            f"--stopped must be 0 or more (got {stopped})", next_step="pass --stopped N with N of 0 or more"
        )
    runtime = runtime or Runtime()
    _, environment = load_env(runtime, env)
    aws = runtime.aws_factory(environment)
    with aws_errors(environment):
        found = task_list.read(aws, environment, stopped_shown=stopped)
    name = f"{environment.cluster}/{environment.service}"
    if as_json:
        document = {"env": environment.name, "service": name, "tasks": [r.to_json() for r in found]}
        runtime.stdout.write(dumps(document) + "\n")
    if not found:
        runtime.stderr.write(f"no task of {name} in {environment.name}, running or stopped within the hour\n")
        return found
    runtime.stderr.write(f"Tasks of {name} in {environment.name}, running first, then the newest stopped\n")
    runtime.stderr.write(task_list.table(found) + "\n")
    runtime.stderr.write(
        f"\nwhat a task wrote: inv logs --env {environment.name} --task ID (the first characters of its id do)\n"
    )
    return found


def _revision_of(
    runtime: Runtime, aws: AwsFactory, env: EnvConfig, taskdefs: ecs.TaskDefinitions, current: str, tag: str
) -> str:
    """For ``inv run --image-tag``: a revision of the service's that runs ``tag`` of the image's repository, once the
    registry is known to have it."""
    repository = ecs.image_repository(taskdefs.image(current, env.container))
    if not image_in_registry(aws, repository, tag):
        raise UsageError(
            f"the image {repository}:{tag} is not in the registry of {env.name}: nothing was run",
            next_step="push it first (inv push, for this checkout's commit), or name a tag inv history lists",
        )
    if env.image_scan.on and ecs.image_tag(taskdefs.image(current, env.container)) != tag:
        _judged(runtime, aws, env, tag)
    arn, registered = ecs.revision_running(
        aws.client("ecs"), taskdefs, current, env.container, f"{repository}:{tag}", tag
    )
    if registered:
        runtime.stderr.write(
            f"   registered {ecs.revision_name(arn)} to run {tag} (from {ecs.revision_name(current)})\n"
        )
    return arn


SCAN_SHOWN = 20  # findings listed by inv scan (its --json lists them all)


def scan_image(
    *, env: str | None = None, image_tag: str | None = None, as_json: bool = False, runtime: Runtime | None = None
) -> dict[str, Any]:
    """``inv scan``: ECR's scan of an image of the environment's repository (this checkout's, as ``inv push`` names
    it, unless ``image_tag``) judged as the environment's image scan gate judges it before a deploy (its severity,
    HIGH without a gate; its ignore list): waited for while in progress, asked for when ECR has none; its findings,
    most severe first. StepFailed (exit 1) when the gate would refuse a deploy of it; UsageError (exit 2) when the
    registry does not have the image. Nothing changes but a scan asked for."""
    runtime = runtime or Runtime()
    config, environment = load_env(runtime, env)
    tag = ecs.check_image_tag(image_tag) if image_tag else head_revision(config, allow_dirty=True).of("app").tag
    gate = environment.image_scan
    severity = gate.severity or "HIGH"
    judge = dataclasses.replace(scan_gate.image_judge(environment, tag, "deploys it"), severity=severity)
    aws = runtime.aws_factory(environment)
    say = line_on(runtime)
    with aws_errors(environment):
        found = judge.finished(aws.client("ecr"), runtime.clock, say)
    findings = sorted(found.findings, key=lambda f: (-scan_gate.rank(f.severity), f.name))
    verdict = scan_gate.judge(findings, found.tally, severity, gate.ignore)
    result = {
        "environment": environment.name,
        "image": judge.image,
        "status": found.status,
        "description": found.description,
        "severity": severity,
        "gate": gate.on,
        "counts": dict(found.tally),
        "findings": [dataclasses.asdict(f) for f in findings],
        "blocking": [f.name for f in verdict.blocking],
        "accepted": [f.name for f in verdict.accepted],
        "passed": found.status in scan_gate.JUDGED and verdict.passed,
    }
    if as_json:
        runtime.stdout.write(dumps(result) + "\n")
    whose = (
        f"{environment.name}'s image scan gate" if gate.on else f"{severity} (no image scan gate in {environment.name})"
    )
    say(f"🛡️  ECR's scan of {judge.image}: {found.status}, {verdict.counted()}; judged by {whose}")
    if findings:
        blocking, accepted = set(verdict.blocking), set(verdict.accepted)
        rows = [
            [f.name, f.severity, f.package, "stops a deploy" if f in blocking else "accepted" if f in accepted else ""]
            for f in findings[:SCAN_SHOWN]
        ]
        say(tabulate(rows, headers=["finding", "severity", "package", "gate"], tablefmt="simple"))
        if len(findings) > SCAN_SHOWN:
            say(f"... and {len(findings) - SCAN_SHOWN} more (--json lists them all)")
    try:
        detail, _counted = judge.judged(found)
    except UsageError as refused:  # what refuses a deploy fails this check (exit 1)
        raise StepFailed(refused.message, next_step=refused.next_step) from None
    say(f"✅ {detail}")
    return result


def _judged(runtime: Runtime, aws: AwsFactory, env: EnvConfig, tag: str) -> None:
    """For ``inv run --image-tag`` in an environment with an image scan gate: ECR's scan of an image the service
    does not run judged as a deploy's would be, before anything runs it (refused, exit 2, when it does not pass)."""
    say = line_on(runtime)
    if scan_gate.skipped_by_hand():
        say(f"   ${scan_gate.SKIP_ENV}=1: ECR's scan of {tag} not judged")
        return
    judge = scan_gate.image_judge(env, tag, "runs it")
    detail, _counted = judge.judged(judge.finished(aws.client("ecr"), runtime.clock, say))
    say(f"   ECR's scan of {tag}: {detail}")


@heard_when_not_run(restart.TITLE)
def restart_app(
    *,
    env: str | None = None,
    smoke: bool = True,
    dry_run: bool = False,
    as_json: bool = False,
    runtime: Runtime | None = None,
) -> RunReport | None:
    """Every task of the service replaced by a fresh one of the revision it runs (deploykit.restart); then smoke.
    Nothing is built or deployed: no work-tree, commit or promotion guard applies, and a freeze does not refuse it."""
    plan_of = partial(restart.restart_plan, smoke=smoke)
    return _run_on_service(runtime or Runtime(), env, plan_of, dry_run=dry_run, as_json=as_json)


def _run_on_service(
    runtime: Runtime,
    env: str | None,
    plan_of: Callable[[EnvConfig, str], Plan],
    *,
    dry_run: bool,
    as_json: bool,
    refuse: Callable[[EnvConfig], None] = lambda _environment: None,
) -> RunReport | None:
    """A plan on the service as it runs (restart, pause), made by ``plan_of`` from the environment and the image tag
    the service runs (the commit its history record names; not read for a dry run), then run; ``refuse`` raises
    when the environment may not have it."""
    config, environment = load_env(runtime, env)
    refuse(environment)
    refuse_unaskable(runtime, environment, dry_run=dry_run)
    aws = runtime.aws_factory(environment)
    with aws_errors(environment):
        tag = "" if dry_run else auto.live_image_tag_or_empty(aws, environment)
    plan = plan_of(environment, tag)
    return run_plan(runtime, config, environment, plan, dry_run=dry_run, as_json=as_json, aws=aws)


def pause_app(
    *,
    env: str | None = None,
    reason: str = "",
    dry_run: bool = False,
    as_json: bool = False,
    runtime: Runtime | None = None,
) -> RunReport | None:
    """The service scaled to 0 tasks, the count it ran kept in the environment (deploykit.pause); refused in a
    protected environment. Nothing is deployed: no work-tree, commit or promotion guard applies, nor a freeze.
    ``env`` a pattern of deploy.toml ("dev-*"): each deployed environment it made, one after the other."""
    runtime = runtime or Runtime()
    config = runtime.load_config()
    if env and env in config.patterns and config.environment(env.replace("*", SAMPLE_PART)).protected:
        raise UsageError(  # each environment it made is as protected as it: refused before any is listed
            f"the environments {env!r} makes are protected in deploy.toml; pausing them would take their apps down",
            next_step="pause development environments only; a protected one scales in its Fargate stack's settings",
        )
    one = partial(_pause_one, reason=reason, dry_run=dry_run)
    return _one_or_each(runtime, env, one, "pause", as_json=as_json)


def _refuse_pause(environment: EnvConfig) -> None:
    if environment.protected:
        raise UsageError(
            f"environment {environment.name!r} is protected in deploy.toml; pausing it would take its app down",
            next_step="pause development environments only; a protected one scales in its Fargate stack's settings",
        )


@heard_when_not_run(pause.PAUSE_TITLE)
def _pause_one(
    *,
    env: str | None = None,
    reason: str = "",
    dry_run: bool = False,
    as_json: bool = False,
    runtime: Runtime | None = None,
) -> RunReport | None:
    """:func:`pause_app` on one environment."""

    def plan_of(environment: EnvConfig, tag: str) -> Plan:
        return pause.pause_plan(environment, tag, history.actor(), reason.strip())

    return _run_on_service(runtime or Runtime(), env, plan_of, dry_run=dry_run, as_json=as_json, refuse=_refuse_pause)


def resume_app(
    *,
    env: str | None = None,
    smoke: bool = True,
    dry_run: bool = False,
    as_json: bool = False,
    runtime: Runtime | None = None,
) -> RunReport | None:
    """A paused service scaled back to the count it ran, waited for until it serves; then smoke. Not paused: said,
    nothing to do (exit 0); a service at 0 tasks that inv pause did not pause: UsageError (its count is not known).
    ``env`` a pattern of deploy.toml ("dev-*"): each deployed environment it made, one after the other."""
    one = partial(_resume_one, smoke=smoke, dry_run=dry_run)
    return _one_or_each(runtime or Runtime(), env, one, "resume", as_json=as_json)


def _one_or_each(
    runtime: Runtime, env: str | None, one: Callable[..., RunReport | None], verb: str, *, as_json: bool
) -> RunReport | None:
    """``one`` (a command on one environment) on ``env``; on each deployed environment it made when ``env`` is a
    pattern of deploy.toml (:func:`_each_made`, which returns no report)."""
    if env and env in runtime.load_config().patterns:
        _each_made(runtime, env, one, verb, as_json=as_json)
        return None
    return one(env=env, as_json=as_json, runtime=runtime)


def _each_made(
    runtime: Runtime, pattern: str, one: Callable[..., RunReport | None], verb: str, *, as_json: bool
) -> None:
    """``one`` (a command on one environment) on each deployed environment ``pattern`` made, one after the other,
    each waiting for its own lock when allowed (:func:`until_unlocked`); one that fails or is refused does not stop
    the others. Each is said as it goes; ``as_json``: ``{"pattern", "environments": [{"env", "ok", "error",
    "next_step", "run"}]}`` at the end (``run``: its run report, null when there was nothing to do). Refused in
    every one it failed in: UsageError (exit 2); else failed in any: StepFailed (exit 1). Deployed: its registry
    stack (the artifacts bucket the pause lives in) is there."""
    config = runtime.load_config()
    made = environments_made(runtime, config, pattern)
    if isinstance(made, overview.EnvView):
        raise UsageError(
            f"the environments {pattern!r} made cannot be listed: {made.error}", next_step=made.next_step or ""
        )
    names = [name for name in made if config.environment(name).stacks.registry in made[name]]
    results: list[dict[str, Any]] = []
    errors: dict[str, DeployKitError] = {}
    for name in names:
        runtime.stderr.write(f"\n▸ {name}\n")
        try:
            report = until_unlocked(partial(one, env=name, as_json=False, runtime=runtime), runtime)
        except DeployKitError as exc:
            errors[name] = exc
            runtime.stderr.write(f"❌ {name}: {exc}\n")  # its message and next step, as a command's error prints
            results.append({"env": name, "ok": False, "error": exc.message, "next_step": exc.next_step, "run": None})
        else:
            run = report.to_json() if report is not None else None
            results.append({"env": name, "ok": True, "error": None, "next_step": None, "run": run})
    if not names:
        runtime.stderr.write(f"no deployed environment made from {pattern!r}: nothing to {verb}\n")
    if as_json:
        runtime.stdout.write(dumps({"pattern": pattern, "environments": results}) + "\n")
    if errors:
        what = f"{verb} failed in {len(errors)} of {len(names)} environments made from {pattern!r}: {', '.join(errors)}"
        step = f"see each above; inv {verb} --env NAME again for one"
        if all(exc.exit_code == 2 for exc in errors.values()):
            raise UsageError(what.replace("failed in", "refused in", 1), next_step=step)
        raise StepFailed(what, next_step=step)
    return None


@heard_when_not_run(pause.RESUME_TITLE)
def _resume_one(
    *,
    env: str | None = None,
    smoke: bool = True,
    dry_run: bool = False,
    as_json: bool = False,
    runtime: Runtime | None = None,
) -> RunReport | None:
    """:func:`resume_app` on one environment."""
    runtime = runtime or Runtime()
    config, environment = load_env(runtime, env)
    aws = runtime.aws_factory(environment)
    with aws_errors(environment):
        kept, desired = pause.read_state(aws, environment)
    paused = pause.in_force(kept, desired)
    if desired is None:
        with aws_errors(environment):
            pause.refuse_deleted(aws, environment)  # one ECS deleted is said so
        raise UsageError(
            f"{environment.name} has no service {environment.service} to resume",
            next_step=f"deploy it: inv deploy.full --env {environment.name}",
        )
    if paused is None:
        if desired == 0:
            raise UsageError(
                f"{environment.service} in {environment.name} runs no task, but inv pause did not pause it: the count "
                "to come back to is not known",
                next_step=f"deploy the Fargate stack (inv deploy.stack {environment.stacks.fargate} --env "
                f"{environment.name}) for its count, or: aws ecs update-service --cluster {environment.cluster} "
                f"--service {environment.service} --desired-count N",
            )
        stale = ""
        if kept is not None:  # a pause's, the service scaled up since by other means: it would make a later scale-in
            # by hand pass for this pause, with its old count
            done = "" if dry_run else _forget_pause(runtime, aws, environment)
            stale = f" (its pause object, {kept.describe(environment.name)}, holds no more{done})"
        runtime.stderr.write(
            f"☀️  {environment.name} is not paused: {environment.service} wants {desired} task(s); nothing to do"
            f"{stale}\n"
        )
        if as_json:
            runtime.stdout.write(nothing_to_do_json(environment.name, pause.RESUME_TITLE) + "\n")
        return None
    with aws_errors(environment):  # an AWS error said in deploykit's words, as a pause's read of it is
        tag = "" if dry_run else auto.live_image_tag_or_empty(aws, environment)
    plan = pause.resume_plan(environment, paused, tag, smoke=smoke)
    return run_plan(runtime, config, environment, plan, dry_run=dry_run, as_json=as_json, aws=aws)


def _forget_pause(runtime: Runtime, aws: AwsFactory, env: EnvConfig) -> str:
    """The pause object of ``env``, whose service wants tasks again (scaled up by other means), deleted under the
    environment's lock, read again once it is held: an ``inv pause`` writes its object first, then scales in, and
    one deleted between the two lost the count and the scaling range to come back to. The scaling range the pause
    set to 0-0 is set back first (:func:`pause.scaling_back`). What was done, for the line that says it."""
    try:
        with (
            aws_errors(env),
            lock.held(aws, env, pause.RESUME_TITLE, clock=runtime.clock, warn=partial(say_warning, runtime)),
        ):
            kept, desired = pause.read_state(aws, env)
            if kept is None or not desired:  # gone, or a pause scaled it in meanwhile: it holds
                return ": left, as it holds now" if kept is not None else ": removed meanwhile"
            scaling = aws.client("application-autoscaling")
            back = pause.scaling_back(scaling, env.cluster, env.service, kept.scaling)
            pause.delete_object(aws, env)
    except UsageError as held:  # another command holds the lock (an inv pause under way): its object is its own
        return f": left, as another command holds the lock ({held.message.splitlines()[0]})"
    return f": removed{back}"


def invoke_function(
    function: str,
    *,
    env: str | None = None,
    event: str = "{}",
    version: str = "",
    as_json: bool = False,
    runtime: Runtime | None = None,
) -> invoking.Invocation:
    """Call the Lambda function of folder ``function`` once, synchronously, through its live alias (or ``version``),
    with ``event`` (JSON, or @FILE): the version that answered on stderr, its answer on stdout, the last lines it
    logged on stderr. A function that raised fails the command (exit 1) after its answer is shown."""
    runtime = runtime or Runtime()
    config, environment = load_env(runtime, env)
    lambda_chain.function_folder(config, function)  # refuses an unknown function, naming the known ones
    if version and not (re.fullmatch(r"[1-9][0-9]*", version) or version == "$LATEST"):  # not 0, not ٣
        raise UsageError(
            f"--version {version!r} is not a version of a function: a number (or $LATEST)",
            next_step=f"leave it out to call the {lambda_chain.ALIAS} alias, or give a version's number (aws lambda "
            "list-versions-by-function lists them)",
        )
    payload = invoking.read_event(event, config.root)
    qualifier = version or lambda_chain.ALIAS
    aws = runtime.aws_factory(environment)
    with aws_errors(environment):
        check_account(aws, environment)  # the code runs for real: never in an account deploy.toml does not name
        function_name = lambda_chain.deployed_function(StackOutputs.of(aws), environment, function)
        client = aws.client("lambda")
        once = aws.unretried_client("lambda", read_timeout=invoking.ANSWER_SECONDS)  # the function runs once
        try:
            result = invoking.invoke(once, runtime.clock, function, function_name, qualifier, payload)
        except botocore.exceptions.ClientError as exc:
            code = exc.response.get("Error", {}).get("Code")
            if code == "TooManyRequestsException":  # Invoke is never retried (it may have run): said as what it is
                raise StepFailed(
                    f"Lambda refused to call {function_name}:{qualifier} for now (its concurrency or rate limit): "
                    "the function did not run",
                    next_step="run the command again in a moment",
                ) from None
            if code != lambda_chain.NOT_FOUND:
                raise
            raise UsageError(
                f"{function_name} has no {'version' if version else 'alias'} {qualifier} in {environment.name}",
                next_step=f"aws lambda list-versions-by-function --function-name {function_name} lists its versions; "
                "leave --version out for the alias",
            ) from None
        try:  # which commit answered: the answer is shown whatever this read does (the function ran)
            described = client.get_function_configuration(
                FunctionName=function_name, Qualifier=result.version or qualifier
            )
        except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError):
            described = {}
    sha = lambda_chain.git_sha_of(described.get("Description"))
    what = f"version {result.version}" + (f" (git {sha})" if sha else "")
    runtime.stderr.write(
        f"⚡ {function} in {environment.name}: {function_name}:{qualifier} → {what}, status {result.status} in "
        f"{result.seconds * 1000:.0f} ms\n"
    )
    if as_json:
        runtime.stdout.write(dumps(result.to_json(environment.name) | {"git_sha": sha or None}) + "\n")
    else:
        runtime.stdout.write(result.shown + "\n")
        if result.log_tail:
            lines = result.log_tail.rstrip("\n").splitlines()
            runtime.stderr.write("📜 the last lines it logged:\n" + "".join(f"  {line}\n" for line in lines))
    if result.function_error:
        raise StepFailed(
            f"{function} {what} failed ({result.function_error}): {result.error}",
            next_step=f"its log: inv logs --env {environment.name} --component lambda:{function} --since 10m; fix the "
            "handler, then inv deploy.auto",
        )
    return result
