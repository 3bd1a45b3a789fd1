"""The commands that read an environment: inv endpoints, inv lookup (which writes what it read to
cdk/cdk.context.json), inv smoke, inv health, inv alarms, inv envs, inv history, inv report, inv perf; and inv
unlock."""

from __future__ import annotations

import errno
import json
import os
import re
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any, NoReturn

import botocore.exceptions

from deploykit import (
    alarm_list,
    auto,
    ecs,
    freeze,
    git,
    health,
    history,
    lambda_chain,
    lock,
    lookups,
    overview,
    pause,
    perf,
    planner,
    stored,
    synth,
    watch,
)
from deploykit import logs as applogs
from deploykit import metrics as deploy_metrics
from deploykit import report as deploy_report
from deploykit import rollback as rollbacks
from deploykit import smoke as smoke_checks
from deploykit.aws import DENIED, AwsFactory, at_once, caller_account, is_throttling, translate_error
from deploykit.checks import CheckResult, junit_xml, table
from deploykit.clock import Clock
from deploykit.commands.core import (
    Runtime,
    aws_errors,
    check_account,
    environments_made,
    line_on,
    load_env,
    load_plugins,
    read_history,
    say_warning,
)
from deploykit.config import MAX_ALARM_WATCH, Config, EnvConfig
from deploykit.endpoints import Endpoints, resolve_endpoints
from deploykit.errors import ConfigError, DeployKitError, StepFailed, UsageError
from deploykit.output import Reporter, tabulate
from deploykit.plan import dumps
from deploykit.plugins import observe
from deploykit.stacks import (
    StackOutputs,
    error_code,
)


def endpoints_if_deployed(aws: AwsFactory, env: EnvConfig) -> Endpoints | None:
    """The environment's endpoints; None when some of its stacks are not deployed (a bad override still fails)."""
    try:
        return resolve_endpoints(StackOutputs.of(aws), env, env.endpoints)
    except ConfigError:
        raise
    except UsageError:
        return None


def endpoints(*, env: str | None = None, as_json: bool = False, runtime: Runtime | None = None) -> Endpoints:
    """The environment's endpoints from its stacks' outputs and deploy.toml's overrides; printed as a table."""
    runtime = runtime or Runtime()
    _config, environment = load_env(runtime, env)
    aws = runtime.aws_factory(environment)
    with aws_errors(environment):
        found = resolve_endpoints(StackOutputs.of(aws), environment, environment.endpoints)
    data = found.to_json()
    if as_json:
        runtime.stdout.write(dumps(data) + "\n")
    else:
        rows = []
        for key, value in data.items():
            if key == "outputs":
                continue
            if isinstance(value, dict):
                rows += [[f"{key}.{k}", v] for k, v in value.items()]
            else:
                rows.append([key, value])
        runtime.stderr.write(tabulate(rows, headers=["endpoint", "value"]) + "\n")
    return found


# -- lookups ----------------------------------------------------------------------------------------------------

LOOKUP_ROUNDS = 5  # a value found can make the app look up another (a security group in a looked-up VPC)


def lookup(*, env: str | None = None, as_json: bool = False, runtime: Runtime | None = None) -> dict[str, Any]:
    """Look up in ``env`` the values the CDK app asks for and cdk/cdk.context.json lacks, and write them there (to
    be committed); synthesize again until the app misses none. Returns what was written, by key."""
    runtime = runtime or Runtime()
    config, environment = load_env(runtime, env)
    aws = runtime.aws_factory(environment)
    written: dict[str, Any] = {}
    rows: list[list[str]] = []

    def said(line: str) -> None:
        runtime.stderr.write(line + "\n")

    def clients(service: str, region: str) -> Any:
        if region == environment.region:
            return aws.client(service)
        return aws.session.client(
            service,  # type: ignore[call-overload]
            region_name=region,
            endpoint_url=environment.endpoint_url,
            config=aws.botocore_config,
        )

    with aws_errors(environment):
        account = aws.account()
        for _ in range(LOOKUP_ROUNDS):
            try:
                # every stack the app makes looks up, whether deploy.toml names it yet or not (a deploy checks that)
                synth.synthesize(config, environment, account=account, ecr=aws.client("ecr"), say=said, check=False)
                break
            except lookups.MissingLookups as exc:
                if any(e["key"] in written for e in exc.entries):  # answered, and missed again: not the app's key
                    raise UsageError(
                        f"the CDK app still misses what was written to {lookups.CONTEXT_FILE}: "
                        + "; ".join(lookups.describe(e) for e in exc.entries if e["key"] in written),
                        next_step="look at the key the app asks for (cdk.out/<env>/manifest.json, missing) against "
                        f"the one {lookups.CONTEXT_FILE} holds",
                    ) from None
                found, failed = {}, []
                for e in exc.entries:
                    try:
                        found[e["key"]] = lookups.look_up(e, clients, account)
                    except UsageError as refused:
                        failed.append(refused)
                if not found:  # none answered: nothing the next round would ask otherwise
                    raise failed[0] from None
                # one that failed may ask of another's placeholder (a security group of vpc-12345): the next
                # round, given what this one found, asks it again, under its own key
                lookups.write_context(config.root, found)
                written.update(found)
                rows += [[lookups.describe(e), _shown(found[e["key"]])] for e in exc.entries if e["key"] in found]
        else:
            raise UsageError(
                f"the CDK app still looks up new values after {LOOKUP_ROUNDS} rounds",
                next_step=f"see what it asks for in cdk.out/{environment.name}/manifest.json (missing)",
            )
    if as_json:
        runtime.stdout.write(dumps({"environment": environment.name, "file": lookups.CONTEXT_FILE, "values": written}))
        runtime.stdout.write("\n")
    elif not written:
        runtime.stderr.write(f"✅ the CDK app looks up nothing that {lookups.CONTEXT_FILE} does not hold\n")
    else:
        runtime.stderr.write(tabulate(rows, headers=["looked up", "value"]) + "\n")
        runtime.stderr.write(
            f"✅ {len(written)} value(s) written to {lookups.CONTEXT_FILE}: commit it (git add {lookups.CONTEXT_FILE} "
            "&& git commit), then deploy\n"
        )
    return written


def _shown(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    return text if len(text) <= 80 else text[:77] + "..."


# -- checks -----------------------------------------------------------------------------------------------------


def _writable(path: Path, option: str) -> None:
    """``path`` can take a file (its folders made as it is written, not now: nothing is left behind by a command
    refused later); UsageError naming ``option`` otherwise."""
    if path.is_dir():
        raise UsageError(f"{option} {path} is a folder", next_step=f"name a file: {option} {path / 'smoke.xml'}")
    there = path if path.exists() else next(p for p in path.absolute().parents if p.exists())
    try:
        if there != path and not there.is_dir():
            raise NotADirectoryError(errno.ENOTDIR, f"{there} is a file")
        if not os.access(there, os.W_OK):
            raise PermissionError(errno.EACCES, "permission denied")
    except OSError as exc:
        raise UsageError(
            f"{option} {path} cannot be written: {exc.strerror or exc}",
            next_step=f"name a file you can write: {option} FILE",
        ) from None


def smoke(
    *,
    env: str | None = None,
    only: Sequence[str] | None = None,
    as_json: bool = False,
    junit: Path | None = None,
    runtime: Runtime | None = None,
) -> list[CheckResult]:
    """Run every registered check (or ``only`` those) against the environment; raise StepFailed if one fails."""
    runtime = runtime or Runtime()
    config, environment = load_env(runtime, env)
    if junit is not None:  # a place no file can be written: said before any check runs
        _writable(junit, "--junit")
    plugins = load_plugins(runtime, config)
    chosen = smoke_checks.choose(plugins, environment, only)  # an unknown check: refused before anything is read
    aws = runtime.aws_factory(environment)
    with aws_errors(environment):
        check_account(aws, environment)  # the checks make throwaway users and cases: not in another account
        marked = None if only else _marked(aws, environment)  # read before the checks: what they check
        results = smoke_checks.run_smoke(plugins, environment, aws, only=only, chosen=chosen)
    runtime.stderr.write(table(results) + "\n")
    if junit is not None:
        try:
            junit.parent.mkdir(parents=True, exist_ok=True)
            junit.write_text(junit_xml(results, suite=f"deploykit.smoke.{environment.name}") + "\n")
        except OSError as exc:  # it could be made, and now cannot be written (a full disk)
            raise StepFailed(
                f"the checks ran ({smoke_checks.summary(results)}), but --junit {junit} could not be written: {exc}",
                next_step="free the place, or name another file, and run inv smoke again",
            ) from None
    data = {
        "env": environment.name,
        "ok": all(r.status != "failed" for r in results),
        "checks": [
            {"name": r.name, "status": r.status, "seconds": round(r.seconds, 3), "detail": r.detail} for r in results
        ],
    }
    if as_json:
        runtime.stdout.write(dumps(data) + "\n")
    observe(plugins, "deploykit_smoke_finished", line_on(runtime), env=environment.name, report=data)
    error = smoke_checks.failure(results, environment.name)
    if error is not None:
        try:  # the likeliest cause, read only now: a paused environment answers 503
            paused = pause.read(aws, environment)
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError, DeployKitError):
            paused = None  # the checks' own detail stands
        if paused is not None:
            error.next_step = (
                f"{paused.describe(environment.name)}: nothing serves the ALB; inv resume --env {environment.name} "
                f"starts {paused.tasks} again, then smoke again"
            )
        raise error
    runtime.stderr.write(f"✅ smoke passed on {environment.name}: {smoke_checks.summary(results)}\n")
    if marked is not None:
        _clear_marks(runtime, aws, environment, *marked)
    return results


def _marked(
    aws: AwsFactory, environment: EnvConfig
) -> tuple[history.History, history.Live, history.Record | None] | None:
    """The environment's history, live record and newest run when an entry of the live record is marked unsmoked
    (a run without its smoke deployed it); None when none is, or it cannot be read (the smoke is what was asked: it
    goes on)."""
    try:
        store = history.History.of(aws, environment)
        live = store.live() if store is not None else None
        if store is None or live is None or not any(history.UNSMOKED in entry for entry in live.values()):
            return None
        newest = store.records(1)
    except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError, DeployKitError):
        return None
    return store, live, newest[0] if newest else None


def _clear_marks(
    runtime: Runtime,
    aws: AwsFactory,
    environment: EnvConfig,
    store: history.History,
    live: history.Live,
    newest: history.Record | None,
) -> None:
    """Take the unsmoked mark off what the environment runs, a smoke of every check having passed: only when its
    newest run (``newest``, read before the checks) worked, so that what serves is what the live record names (a
    failed deploy, left in place with --no-rollback, writes no live record: the smoke checked its release); under
    the environment's lock, on condition that no run was recorded and the live record was not written since (no
    deploy changed what they checked). What stops it is said; the smoke passed all the same."""
    name = environment.name
    marked = ", ".join(sorted(c for c, entry in live.items() if history.UNSMOKED in entry))
    stays = f"the unsmoked mark of {marked} in {name} stays"
    if newest is None or not newest.ok:
        ran = f"its newest run ({newest.command}) {newest.result}" if newest else "it has no run recorded"
        say_warning(
            runtime, f"{stays}: {ran}, so what serves may not be what its live record names (deploy, then smoke again)"
        )
        return
    try:
        with lock.held(aws, environment, "smoke", clock=runtime.clock, warn=partial(say_warning, runtime)):
            again = store.records(1)
            cleared = bool(again) and again[0].id == newest.id and store.clear_unsmoked(live)
    except lock.LockHeld as exc:
        say_warning(runtime, f"{stays}: {exc.message} (smoke again once it is done)")
        return
    except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError, DeployKitError) as exc:
        say_warning(runtime, f"{stays}: its history could not be read or written ({exc})")
        return
    if not cleared:
        say_warning(runtime, f"{stays}: a deploy ran while the checks ran (smoke again)")
        return
    runtime.stderr.write(
        f"🏷  {marked}, deployed in {name} without its smoke, passed this one: the unsmoked mark is taken off "
        f"(an environment promoted from {name} may take what it runs)\n"
    )


def health_report(
    *, env: str | None = None, as_json: bool = False, runtime: Runtime | None = None
) -> health.HealthReport:
    """The environment at a glance, its findings and recommendations; StepFailed when something is broken."""
    runtime = runtime or Runtime()
    config, environment = load_env(runtime, env)
    aws = runtime.aws_factory(environment)
    with aws_errors(environment):
        found = endpoints_if_deployed(aws, environment)  # None: the report says which stacks are missing
        reads: dict[str, Callable[[], Any]] = {
            "report": partial(health.gather, aws, environment, found),
            "deploys": partial(_deploys_read, config, aws, environment, found, runtime.clock),
            "clock": partial(health.read_clock, aws, runtime.clock),
        }
        read = at_once(reads)  # the environment's parts, its deploys and AWS's clock, at the same time
    report: health.HealthReport = read["report"]
    report.findings += health.clock_findings(read["clock"])
    today = runtime.clock.now().date()
    report.findings += health.runtime_findings(report.runtimes, config.build.lambda_runtime, today, environment.name)
    _deploys_health(runtime, environment, read["deploys"], report)
    if not environment.is_local:
        try:
            found_account = aws.shared(caller_account)
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError):
            found_account = None  # the other parts have said what the credentials cannot do
        if found_account:
            findings, recommendations = health.account_advice(environment, found_account)
            report.findings += findings
            report.recommendations += recommendations
    runtime.stderr.write(health.render(report) + "\n")
    if as_json:
        runtime.stdout.write(dumps(report.to_json()) + "\n")
    if report.broken:
        broken = [f.what for f in report.findings if f.severity == "broken"]
        raise StepFailed(
            f"environment {environment.name!r} has {len(broken)} broken part(s): {'; '.join(broken)}",
            next_step="run the command shown under each finding above",
        )
    return report


def alarms(
    *, env: str | None = None, wait: str | None = None, as_json: bool = False, runtime: Runtime | None = None
) -> alarm_list.Waited:
    """The alarms ``[environments.NAME.alarm_watch]`` names, as CloudWatch has them now (deploykit.alarm_list);
    ``wait`` (a duration, 0: read once): then read every poll until none is in ALARM, and StepFailed (exit 1) when
    one still is once it has passed, or one went from CloudWatch meanwhile. Refused (UsageError) where deploy.toml
    names no alarms, they may not be read, or, for a wait, CloudWatch has none of them."""
    runtime = runtime or Runtime()
    _, environment = load_env(runtime, env)
    seconds = None if wait is None else alarm_wait(wait, "--wait")  # a malformed option first, as every command
    if not environment.alarm_watch.on:
        raise UsageError(
            f"[environments.{environment.name}.alarm_watch] names no alarms in deploy.toml: there are none to show",
            next_step=f"name the team's alarms there: [environments.{environment.name}.alarm_watch] alarms = "
            '["car-rental-5xx", "car-rental-prod-*"] (README, "Your own alarms")',
        )
    aws = runtime.aws_factory(environment)
    names = environment.alarm_watch.alarms
    with aws_errors(environment):
        reading = AlarmReading(runtime, environment, aws)
        found = reading.read()
        runtime.stderr.write(f"Alarms of {environment.name} ([environments.{environment.name}.alarm_watch])\n")
        runtime.stderr.write(alarm_list.table(alarm_list.rows(names, found, environment.region), reading.aws_now()))
        runtime.stderr.write("\n")
        if reading.skew:
            runtime.stderr.write(f"⚠️  {reading.skew}: how long ago counts in AWS's time\n")
        if seconds is not None and not found:
            raise none_there(environment, "nothing to wait for")
        waited = alarm_list.Waited(found, 0.0, not watch.in_alarm(found))
        if seconds is not None:
            waited = wait_for_alarms(runtime, environment, reading, found, seconds)
    if as_json:
        document = {
            "env": environment.name,
            "alarms": [r.to_json() for r in alarm_list.rows(names, waited.found, environment.region)],
            "clear": waited.clear,
            "waited": round(waited.seconds, 1) if seconds is not None else None,
        }
        runtime.stdout.write(dumps(document) + "\n")
    alarming = watch.in_alarm(waited.found)
    if seconds is None and alarming:
        runtime.stderr.write(
            f"\n🔔 {len(alarming)} in ALARM: to wait until none is, inv alarms --env {environment.name} --wait "
            f"{alarm_list.suggested_wait(waited.found, alarming, local=environment.is_local)}\n"
        )
    elif seconds is not None and waited.clear:
        runtime.stderr.write(f"✅ {alarm_list.cleared(waited)}\n")
    elif seconds is not None:
        raise still_in_alarm(environment, waited)
    return waited


def alarm_wait(text: str, flag: str) -> float:
    """A wait for the alarms (``flag`` said ``text``) in seconds: a duration of 0 (read once) to 3 hours, the alarm
    watch's own bound (UsageError otherwise)."""
    seconds = watch.parse_duration(text, flag)
    if seconds > MAX_ALARM_WATCH:
        raise UsageError(
            f"{flag} {text} is longer than {MAX_ALARM_WATCH / 3600:g} hours, the alarm watch's longest",
            next_step=f"wait {MAX_ALARM_WATCH / 3600:g} hours at most: {flag} 3h",
        )
    return seconds


def none_there(env: EnvConfig, what: str) -> UsageError:
    """CloudWatch has none of the alarms ``env``'s alarm watch names: ``what`` follows (a wait has nothing to wait
    for, and would say none is in ALARM)."""
    return UsageError(
        f"CloudWatch has none of the alarms [environments.{env.name}.alarm_watch] names in {env.region}: {what}",
        next_step="check their names and the region (aws cloudwatch describe-alarms --alarm-name-prefix ...), or "
        "create them",
    )


class AlarmReading:
    """The alarms of ``env``'s alarm watch, read with ``aws`` (deploykit.watch.read_alarms), the first answer's Date
    saying how far AWS's clock is from this machine's (deploykit.watch.clock_offset). Refused (UsageError) when they
    may not be read."""

    def __init__(self, runtime: Runtime, env: EnvConfig, aws: AwsFactory) -> None:
        self.runtime, self.env, self.cloudwatch = runtime, env, aws.client("cloudwatch")
        self.offset: float = 0.0
        self.skew = ""  # this machine's clock said, when it is worth saying (watch.skew_to_say)

    def read(self) -> dict[str, Any]:
        sent = self.runtime.clock.now()

        def answered(answer: Any) -> None:
            found = watch.clock_offset(answer, sent, self.runtime.clock.now())
            if found is not None:
                self.offset = found[0]
                estimate = watch.skew_to_say(found)
                self.skew = watch.skew_said(estimate) if estimate is not None else ""

        try:
            return watch.read_alarms(self.cloudwatch, self.env.alarm_watch.alarms, answered)
        except botocore.exceptions.ClientError as exc:
            if error_code(exc) not in DENIED:
                raise
            raise UsageError(
                f"may not read the CloudWatch alarms [environments.{self.env.name}.alarm_watch] names: "
                f"{error_code(exc)}",
                next_step="allow cloudwatch:DescribeAlarms to these credentials (see Permissions in the README)",
            ) from None

    def aws_now(self) -> datetime:
        return self.runtime.clock.now() + timedelta(seconds=self.offset)


def wait_for_alarms(
    runtime: Runtime, env: EnvConfig, reading: AlarmReading, found: Any, seconds: float
) -> alarm_list.Waited:
    """:func:`deploykit.alarm_list.until_clear` of ``env``'s alarms (``found``: as read last), its progress on the
    terminal."""
    reporter = Reporter(runtime.stderr, clock=runtime.clock)
    with reporter.activity("waiting until no alarm is in ALARM"):
        return alarm_list.until_clear(
            reading.read,
            found,
            seconds=seconds,
            poll=env.poll_seconds,
            clock=runtime.clock,
            say=reporter.line,
            status=reporter.status,
        )


def still_in_alarm(env: EnvConfig, waited: alarm_list.Waited, what: str = "") -> StepFailed:
    """The failure of a wait that ended with alarms still in ALARM, or one gone from CloudWatch during it; ``what``:
    what went before it (a rollback)."""
    alarming = watch.in_alarm(waited.found)
    again = alarm_list.suggested_wait(waited.found, alarming, local=env.is_local, waited=waited.seconds)
    if waited.gone:
        return StepFailed(
            f"{what}alarm {', '.join(waited.gone)} is gone from CloudWatch (deleted during the wait): it cannot say "
            "whether it left ALARM",
            next_step=f"put it back, or take it out of [environments.{env.name}.alarm_watch] alarms; then: inv alarms "
            f"--env {env.name} --wait {again}",
        )
    first = waited.found[alarming[0]]
    also = f" (and {', '.join(alarming[1:])})" if alarming[1:] else ""
    return StepFailed(
        f"{what}alarm {alarming[0]}{also} is still in ALARM after {lock.duration(waited.seconds)} of waiting"
        f"{alarm_list.since(first)}: {alarm_list.reason(first).rstrip('.')}",
        next_step=f"what it watches: aws cloudwatch describe-alarms --alarm-names {alarming[0]}; what the app "
        f"writes: inv logs --env {env.name} --since 15m; to wait longer: inv alarms --env {env.name} --wait {again}",
    )


def _deploys_read(
    config: Config, aws: AwsFactory, env: EnvConfig, endpoints: Endpoints | None, clock: Clock
) -> dict[str, Any] | Exception | None:
    """For :func:`_deploys_health`: the newest run, the deploy lock, the freeze, the pause, and what runs other than
    deploykit's last deploy of it left (``unverified``), read at once; None without an artifacts bucket; the error
    when the history cannot be read."""
    unverified: dict[str, str] = {}
    entries: dict[str, dict[str, str]] = {}
    try:
        store = history.History.of(aws, env)
        env_lock = lock.EnvLock.of(aws, env, clock=clock)
        if store is None or env_lock is None:
            return None
        reads: dict[str, Callable[[], Any]] = {
            "newest": partial(store.records, auto.NEWEST_RUNS),  # which run last deployed each stack (cached)
            "lock": env_lock.read,
            "freeze": partial(freeze.read, aws, env, store.bucket),
            "pause": partial(pause.read_object, aws, env, store.bucket),
            "live": partial(auto.live_components, aws, config, env, endpoints, unverified, entries),
        }
        return {**at_once(reads), "unverified": unverified, "entries": entries}  # one round trip for them all
    except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError, history.LiveRecordUnreadable) as exc:
        return exc


def _deploys_health(
    runtime: Runtime, env: EnvConfig, read: dict[str, Any] | Exception | None, report: health.HealthReport
) -> None:
    """Add the last recorded run, the deploy lock, a freeze in force and a pause to ``report`` (a paused service's
    missing tasks are the pause's one finding, not broken), and a finding for each
    component that runs something else than deploykit's last deploy of it left (the app's service another image, a
    stack or a Lambda version changed outside deploykit: what deploy.auto deploys again), as :func:`_deploys_read`
    read them; nothing when there is no artifacts bucket."""
    if read is None:
        return
    if isinstance(read, Exception):
        report.rows.append(health.Row("last deploy", "-", "unknown", f"the history cannot be read: {read}"))
        return
    newest: list[history.Record] = read["newest"]
    held: lock.Found | None = read["lock"]
    # a stack the newest run that deployed it failed on holds what that run left, not a change made outside deploykit
    failed = auto.left_by_failed_runs(newest, read["live"], planner.stack_roles(env), read["entries"])
    unverified: dict[str, str] = {c: why for c, why in read["unverified"].items() if c not in failed}
    rows, findings = health.deploy_rows(
        env.name, newest[0] if newest else None, held, runtime.clock.now(), report.shifting
    )
    report.rows += rows
    report.rows = [health.with_live_commit(row, read["live"]) for row in report.rows]  # a stack's version: no commit
    frozen = freeze.in_force(read["freeze"], env, runtime.clock.now())
    if frozen is not None:
        by = "deploy.toml" if frozen.window else frozen.owner
        report.rows.append(health.Row("deploy freeze", by, "frozen", f"{frozen.describe(env.name)}; deploys refused"))
    paused = pause.in_force(read["pause"], report.desired)
    if paused is not None:  # what explains the service's missing tasks: said once, as what it is
        report.rows.append(health.Row("pause", paused.owner, "paused", paused.describe(env.name)))
        report.findings = [f for f in report.findings if f.cause != health.NO_TASKS]
        findings = [
            *findings,
            health.Finding(
                "warning",
                f"{paused.describe(env.name)}: no task runs, the ALB answers 503",
                f"inv resume --env {env.name} starts {paused.tasks} again (any deploy wakes it too)",
            ),
        ]
    report.findings += findings
    first = {  # what to look at first: the change made by hand, or how the run failed
        **{c: (why, f"inv diff --env {env.name} shows it; ", " (commit a hand-made change first to keep it)")
           for c, why in unverified.items()},
        **{c: (why, f"inv history --env {env.name} says how it failed; ", "") for c, why in failed.items()},
    }  # fmt: skip
    report.findings += [
        health.Finding(
            "warning",
            why.removesuffix(auto.AGAIN),
            f"{look}inv deploy.auto --env {env.name} deploys {component} again as the checkout has it{keep}",
        )
        for component, (why, look, keep) in sorted(first.items())
    ]
    taken_out = auto.stacks_taken_out(env, read["entries"])  # out of the app and deploy.toml, maybe not the account
    report.findings += [health.Finding("warning", what, fix) for what, fix in taken_out.values()]


def envs(*, as_json: bool = False, runtime: Runtime | None = None) -> list[overview.EnvView]:
    """Every environment of deploy.toml at a glance: what it runs (each component's live commit against HEAD), its
    last run and its lock; one whose AWS cannot be read is shown so (see deploykit.overview)."""
    runtime = runtime or Runtime()
    config = runtime.load_config()
    head = git.head_sha(config.root)

    def one(environment: EnvConfig) -> overview.EnvView:
        try:
            read = overview.read_environment(runtime.aws_factory(environment), environment, runtime.clock)
            return overview.view(config, head, environment, read)
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError, DeployKitError) as exc:
            error = translate_error(exc, environment)
            return overview.EnvView(
                environment.name, environment.region, error=error.message, next_step=error.next_step
            )

    # deploy.toml's own environments read while each pattern's are found (overview.made_from); then those
    reads: dict[tuple[str, str], Callable[[], Any]] = {
        **{("env", name): partial(one, environment) for name, environment in config.environments.items()},
        **{("pattern", pattern): partial(environments_made, runtime, config, pattern) for pattern in config.patterns},
    }
    first = at_once(reads)
    environments = dict(config.environments)
    errors: list[overview.EnvView] = []
    patterns: dict[str, str] = {}  # environment → the pattern that made it
    stacks: dict[str, tuple[str, ...]] = {}  # environment → its stacks there
    for pattern in config.patterns:  # after deploy.toml's own, by pattern
        made = first["pattern", pattern]
        if isinstance(made, overview.EnvView):
            errors.append(made)
        else:
            made = {name: found for name, found in made.items() if name not in config.environments}  # read already
            environments.update((name, config.environment(name)) for name in made)
            patterns.update(dict.fromkeys(made, pattern))
            stacks.update(made)
    found = {name: view for (kind, name), view in first.items() if kind == "env"}
    found |= at_once({name: partial(one, environments[name]) for name in patterns})
    views = overview.with_promotion(config, [found[name] for name in environments] + errors)
    views = overview.with_patterns(views, patterns, runtime.clock.now(), stacks)
    runtime.stderr.write(overview.render(views, head) + "\n")
    if as_json:
        runtime.stdout.write(dumps(overview.to_json(views, head)) + "\n")
    return views


def history_list(
    *,
    env: str | None = None,
    limit: int = 20,
    component: str | None = None,
    as_json: bool = False,
    commits: bool = False,
    runtime: Runtime | None = None,
) -> list[history.Record]:
    """The environment's newest deployments (who, when, what, result), newest first; with ``component`` (app,
    lambda:<fn>, stack:<role or name>) only the runs that deployed it, and only its live entry; with ``commits``,
    under the table, the commits each run took live."""
    if limit < 1:
        raise UsageError(f"--limit must be at least 1 (got {limit})", next_step="pass --limit N with N of 1 or more")
    runtime = runtime or Runtime()
    config, environment = load_env(runtime, env)
    key = _history_component(config, environment, component) if component else None
    aws = runtime.aws_factory(environment)
    with aws_errors(environment):
        found = read_history(aws, environment, runtime)
        reads: dict[str, Callable[[], Any]] = {
            "records": partial(found.records_of, key, limit) if key else partial(found.records, limit),
            "live": partial(_live_or_said, runtime, found),
        }
        read = at_once(reads)
    records: list[history.Record] = read["records"]
    live: dict[str, dict[str, str]] = read["live"]
    if key:
        live = {c: v for c, v in live.items() if c == key}
    if key and not records and not live and _gone_function(config, key):
        _unknown_component(config, environment, key)
    if as_json:
        document = {"env": environment.name, "live": live, "deployments": [r.to_json() for r in records]}
        runtime.stdout.write(dumps(document | ({"component": key} if key else {})) + "\n")
    if records:
        runtime.stderr.write(history.table(records) + "\n")
        if key and key.startswith("stack:"):  # and what each run changed in it
            stack = planner.stack_roles(environment)[key.split(":", 1)[1]]
            for record, lines in history.stack_changes(records, stack):
                runtime.stderr.write(f"\n{record.when.replace('+00:00', 'Z')} {record.command} changed {stack}:\n")
                runtime.stderr.write("".join(f"  ↳ {line}\n" for line in lines))
        if commits:
            runtime.stderr.write(history.shipped(records))
    elif key:
        runtime.stderr.write(f"no deployment of {key} recorded in {environment.name}\n")
    else:
        runtime.stderr.write(f"no deployment recorded in {environment.name} yet\n")
    if live:
        rows = [
            [
                component,
                value.get("sha", "") + (" (no smoke yet)" if history.UNSMOKED in value else ""),
                value.get("when", ""),
            ]
            for component, value in sorted(live.items())
        ]
        runtime.stderr.write(
            "\nlive now:\n" + tabulate(rows, headers=["component", "sha", "since"], disable_numparse=True) + "\n"
        )
        if any(history.UNSMOKED in value for value in live.values()):
            runtime.stderr.write(
                "(no smoke yet): deployed by a run without its smoke (--no-smoke), and no smoke passed since: an "
                f"environment promoted from {environment.name} does not take it; inv smoke --env {environment.name} "
                "proves it\n"
            )
    return records


def _live_or_said(runtime: Runtime, found: history.History) -> dict[str, dict[str, str]]:
    """The live record; {} when it is not one deploykit wrote, said with what to do (inv history still lists the
    runs: it is how the record is looked into)."""
    try:
        return found.live()
    except history.LiveRecordUnreadable as exc:
        runtime.stderr.write(f"⚠️  {exc}\n")
        return {}


def _history_component(config: Config, env: EnvConfig, text: str) -> str:
    """The history's name of ``--component``: app, stack:<role> (a role or a stack name), lambda:<fn> (also a
    function whose folder is gone: the history still names it; :func:`history_list` refuses one it has no run of)."""
    kind, _, name = text.strip().partition(":")
    if kind == "lambda" and re.fullmatch(r"[A-Za-z0-9_-]+", name):
        return f"lambda:{name}"
    return rollbacks.parse_component(text, config, purpose="history", env=env).key


def _gone_function(config: Config, key: str) -> bool:
    """Whether ``key`` is lambda:<fn> for a function that has no folder in this checkout."""
    kind, _, name = key.partition(":")
    return kind == "lambda" and name not in lambda_chain.function_names(config)


def _unknown_component(config: Config, env: EnvConfig, key: str) -> NoReturn:
    """UsageError for lambda:<fn> that is neither a function of lambda/ nor one the history has a run of."""
    raise UsageError(
        f"unknown component {key!r} for history: lambda/{key.split(':', 1)[1]} is no function of this checkout "
        f"and no run of it is recorded in {env.name}",
        next_step=f"use --component with one of: {', '.join(rollbacks.known_components(config, env))}",
    )


def deployment_report(
    *, env: str | None = None, since: str = "30d", as_json: bool = False, runtime: Runtime | None = None
) -> deploy_report.Report:
    """What the environment's history says about its deploys since ``since`` (30d, 12h, an ISO time): how often,
    how often they failed and how quickly it was on a good deploy again, commit to live, each chain's and each
    step's times."""
    runtime = runtime or Runtime()
    until = runtime.clock.now()
    start = applogs.parse_since(since, until)
    if start >= until:
        raise UsageError(f"--since {since!r} is not in the past", next_step="pass 7d, 12h or an earlier time")
    config, environment = load_env(runtime, env)
    aws = runtime.aws_factory(environment)
    with aws_errors(environment):
        found = read_history(aws, environment, runtime)
        records = found.records_since(start)
        dashboard = (StackOutputs.of(aws)(environment.stacks.registry) or {}).get(deploy_metrics.DASHBOARD_OUTPUT)
    # the commit times the records do not keep (older ones): a build of uncommitted changes has none
    heads = [r.head for r in records if r.committed is None and git.DIRTY not in r.head]
    made = deploy_report.Report(environment.name, start, until, tuple(records), git.commit_times(config.root, heads))
    if as_json:
        runtime.stdout.write(dumps(made.to_json() | {"dashboard": dashboard}) + "\n")
    runtime.stderr.write(deploy_report.text(made))
    if dashboard and environment.metrics:
        runtime.stderr.write(f"\nthe same over time: {deploy_metrics.dashboard_link(environment, dashboard)}\n")
    return made


def perf_report(
    *,
    env: str | None = None,
    since: str = "1d",
    component: str | None = None,
    limit: int = 10,
    as_json: bool = False,
    runtime: Runtime | None = None,
) -> dict[str, list[perf.Row]]:
    """How each release of the app and of each Lambda function served since ``since`` (a duration back from now, an
    ISO time; 15 days at most): its requests, errors and response times, each that answers slower or fails more than
    the release before it marked (deploykit.perf). ``component``: app or lambda:<fn> alone; ``limit``: the newest
    releases of each shown. Reads and says; the live release marked names the rollback that puts the one before
    back."""
    if limit < 1:
        raise UsageError(f"--limit must be at least 1 (got {limit})", next_step="pass --limit N with N of 1 or more")
    runtime = runtime or Runtime()
    until = runtime.clock.now()
    start = applogs.parse_since(since, until).astimezone(UTC)
    if start >= until:
        raise UsageError(f"--since {since!r} is not in the past", next_step="pass 1d, 12h or an earlier time")
    if until - start > perf.MAX_WINDOW:
        raise UsageError(
            f"--since {since} reaches back further than CloudWatch keeps each minute's figures (15 days, and a day "
            "for the reads)",
            next_step="pass 14d or less: inv perf --since 7d",
        )
    config, environment = load_env(runtime, env)
    wanted = _perf_component(config, component)
    aws = runtime.aws_factory(environment)
    with aws_errors(environment):
        found = read_history(aws, environment, runtime)
        reads: dict[str, Callable[[], Any]] = {
            "records": partial(found.records_since, start),
            "live": partial(_live_or_said, runtime, found),
            "sources": partial(_perf_sources, aws, environment),
        }
        read = at_once(reads)
        sources, notes = read["sources"]
        notes = [note for note in notes if wanted is None or note.startswith(f"{wanted}:")]
        if wanted is not None and wanted not in sources:
            raise UsageError(
                f"{wanted} has nothing to read in {environment.name}: {'; '.join(notes) or 'no stack holds it'}",
                next_step=f"inv health --env {environment.name} says what it has; deploy what is missing: inv "
                f"deploy.auto --env {environment.name}",
            )
        timelines = {
            key: perf.timeline(key, read["records"], read["live"].get(key), start, until)[-(limit + 1) :]
            for key in sources
            if wanted in (None, key)
        }
        cloudwatch = aws.client("cloudwatch")
        reads = {
            f"{key}#{index}": partial(_served_unless_throttled, cloudwatch, sources[key], *minutes)
            for key, releases in timelines.items()
            for index, release in enumerate(releases)
            if (minutes := release.minutes()) is not None
        }
        served = at_once(reads) if reads else {}
    throttled = sum(1 for figures in served.values() if figures is None)
    if throttled:
        notes.append(
            f"CloudWatch throttled the reads of {throttled} release{'s' if throttled != 1 else ''} (GetMetricData's "
            "rate, shared with the deploys' watches): shown as not read; run it again"
        )
    rows = {
        key: perf.judged(
            releases,
            [served.get(f"{key}#{index}") for index in range(len(releases))],
            environment.app_error_watch.max_error_rate if key == "app" else environment.lambda_canary.max_error_rate,
        )[-limit:]
        for key, releases in timelines.items()
    }
    if as_json:
        document = {
            "env": environment.name,
            "from": stored.shown(start),
            "to": stored.shown(until),
            "components": [
                {"component": key, "releases": [row.to_json() for row in component_rows]}
                for key, component_rows in rows.items()
            ],
            "notes": notes,
        }
        runtime.stdout.write(dumps(document) + "\n")
    runtime.stderr.write(_perf_text(environment, start, until, since, rows, notes))
    return rows


def _perf_component(config: Config, text: str | None) -> str | None:
    """``--component``: app or lambda:<fn> (deployed: the caller checks); None for all (none given, or ``all``)."""
    if text is None or text.strip() in ("", "all"):
        return None
    kind, _, name = text.strip().partition(":")
    if kind == "app" and not name:
        return "app"
    if kind == "lambda" and re.fullmatch(r"[A-Za-z0-9_-]+", name):
        return f"lambda:{name}"
    if kind == "stack":
        raise UsageError(f"a stack serves no request of its own: {text!r}", next_step="pass app or lambda:<fn>")
    known = ", ".join(f"lambda:{fn}" for fn in lambda_chain.function_names(config)) or "lambda:<fn>"
    raise UsageError(
        f"unknown component {text!r} for perf", next_step=f"use --component with one of: all, app, {known}"
    )


def _perf_sources(aws: AwsFactory, env: EnvConfig) -> tuple[dict[str, perf.Source], list[str]]:
    """Where each deployed component's figures are (the app's ALB, each function), and what is left out, and why."""
    sources: dict[str, perf.Source] = {}
    notes: list[str] = []
    try:
        service = ecs.describe_service(aws.client("ecs"), env.cluster, env.service, env)
    except UsageError as exc:
        notes.append(f"app: {exc.message}")
    else:
        groups = ecs.target_groups(service)
        source = perf.app_source(aws.client("elbv2"), groups) if groups else None
        if source is None:
            notes.append(f"app: no load balancer routes to {env.service}: its answers are not counted")
        else:
            sources["app"] = source
    functions = lambda_chain.deployed_functions(StackOutputs.of(aws), env, required=False)
    for fn, name in sorted(functions.items()):
        sources[f"lambda:{fn}"] = perf.function_source(name)
    return sources, notes


def _served_unless_throttled(
    cloudwatch: Any, source: perf.Source, start: datetime, end: datetime
) -> perf.Served | None:
    """:func:`deploykit.perf.read_served`; None when CloudWatch still throttles it after the retries (the other
    releases are shown: a view is not failed over one)."""
    try:
        return perf.read_served(cloudwatch, source, start, end)
    except botocore.exceptions.ClientError as exc:
        if is_throttling(exc):
            return None
        raise


def _perf_text(
    env: EnvConfig,
    start: datetime,
    until: datetime,
    since: str,
    rows: dict[str, list[perf.Row]],
    notes: Sequence[str],
) -> str:
    span = f"{start.astimezone(UTC):%Y-%m-%d %H:%M} → {until.astimezone(UTC):%Y-%m-%d %H:%M} UTC"
    out = [f"📈 how each release served in {env.name}, {span} (--since {since})\n"]
    for key, component_rows in rows.items():
        noun = "requests" if key == "app" else "invocations"
        if not component_rows:
            out.append(f"\n{key}: no release of it recorded\n")
            continue
        out.append(f"\n{key}\n{perf.table(component_rows, noun)}\n")
    out += [f"\n⚠️  {note}\n" for note in notes]
    for key, component_rows in rows.items():
        last = component_rows[-1] if component_rows else None
        if last is None or not last.release.live or not last.flagged or last.before_served is None:
            continue
        now, then = last.served, last.before_served
        assert now is not None  # judged: it served
        what = []
        if last.slower is not None:
            what.append(
                f"answers slower (p90 {watch.ms(now.latency.get('p90'))}, was {watch.ms(then.latency.get('p90'))})"
            )
        if last.more_errors:
            what.append(f"fails more ({now.counts.rate:.1%}, was {then.counts.rate:.1%})")
        assert last.before is not None
        out.append(
            f"\n❗ the live release of {key} ({last.release.sha[:12]}) {' and '.join(what)} than "
            f"{last.before.sha[:12]}: to put that one back, inv rollback --env {env.name} --component {key} --to "
            f"{last.before.sha[:12]}; what it wrote: inv logs --env {env.name} --component {key} --since {since}\n"
        )
    return "".join(out)


def unlock(
    *,
    env: str | None = None,
    confirm: Callable[[lock.LockInfo], bool] | None = None,
    runtime: Runtime | None = None,
) -> lock.LockInfo | None:
    """Break the environment's deploy lock on purpose (its deploy is dead): say who held it, then delete it.

    ``confirm`` is asked with the holder before anything is deleted; False leaves the lock as it is. Returns what
    the broken lock held; None when there was nothing to break (or it was kept)."""
    runtime = runtime or Runtime()
    _config, environment = load_env(runtime, env)
    aws = runtime.aws_factory(environment)
    with aws_errors(environment):
        env_lock = lock.EnvLock.of(aws, environment, clock=runtime.clock)
        found = env_lock.read() if env_lock is not None else None
        if env_lock is None or found is None:
            runtime.stderr.write(f"🔓 no deploy holds the lock of {environment.name}: nothing to unlock\n")
            return None
        runtime.stderr.write(f"🔒 {found.describe(runtime.clock.now())}\n")
        if confirm is not None and not confirm(found.info):
            runtime.stderr.write("Nothing changed: the lock is still held.\n")
            return None
        check_account(aws, environment)
        if not env_lock.break_(found):
            raise UsageError(
                f"the lock of {environment.name!r} changed while it was being broken (renewed, released or taken)",
                next_step=f"look again: inv unlock --env {environment.name}",
            )
    runtime.stderr.write(
        f"🔓 lock of {environment.name} broken: {found.info.owner}'s {found.info.command!r} no longer holds it\n"
    )
    return found.info
