"""The Lambda canary: a new version first takes a share of the ``live`` alias's requests while its errors are watched.

With ``[environments.NAME.lambda_canary] percent`` above 0 (or ``--canary PERCENT``), the Lambda fast path runs a
``canary`` step between publish-version and move-alias:

1. the alias keeps pointing at the version it serves and routes ``percent`` % of its requests to the new one
   (Lambda's weighted alias routing, guarded by the alias's RevisionId);
2. for ``seconds``, every poll asks CloudWatch (one GetMetricData) for the ``Invocations`` and ``Errors`` of each
   version behind the alias: namespace ``AWS/Lambda``, dimensions ``FunctionName``, ``Resource``
   (``<function>:<alias>``) and ``ExecutedVersion``, which Lambda puts for every invocation through an alias,
   counted from the moment the canary began (deploykit.watch.Since);
3. as soon as more than ``max_error_rate`` of the new version's invocations failed (with the default 0: one
   error) and, with ``compare`` (the default), more than a version failing at the old one's own rate in the same
   time plus ``max_error_rate`` would fail by chance (deploykit.watch.failing: a binomial tail under
   ``SIGNIFICANCE``, once the old version answered ``BASELINE`` requests: a rate of fewer means little), the routing
   is cleared, so the alias serves the old version alone again, and the step fails; an interrupt, or an error of
   the watch itself, takes the canary back the same way. Compared so, a dependency failing for both versions does
   not take back a new version no worse than the old one, while one that fails more still goes within a few
   requests; beside an old version with no error, one error is still enough;
4. when the time is up the step is done and move-alias gives the new version every request (smoke then checks it,
   and the automatic rollback still answers a failure there).

A new version that took no request in that time has nothing to judge it by: that is said, and the deploy goes on.
On AWS Lambda puts its metrics about a minute late: give ``seconds`` a few minutes there.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar

from botocore.exceptions import BotoCoreError, ClientError

from deploykit import history
from deploykit.clock import shielded
from deploykit.config import LambdaCanary, canary_problem
from deploykit.errors import StepFailed, UsageError
from deploykit.lambda_chain import (
    alias_outputs,
    get_alias,
    latest_as_served,
    read_version_and_alias,
    routed_versions,
    routing_shares,
)
from deploykit.plan import Context, HeldBack, Outcome, Step, carry, held_back
from deploykit.stacks import error_code
from deploykit.watch import (
    BEFORE_SECONDS,
    AlarmJudge,
    Counts,
    Query,
    Since,
    allowed,
    failing,
    looks_of,
    parse_duration,
    sums_before,
    too_many_errors,
)

NAMESPACE = "AWS/Lambda"
# how a failed canary's message ends once it took itself back: the environment is as before (deploykit.report)
TAKEN_BACK = "alone again"


class AliasChanged(StepFailed):
    """The alias was changed by other means during a canary (a person in the console): the canary stops, judging
    nothing, and leaves the alias as that change left it."""


def serving(alias: Mapping[str, Any]) -> str:
    """What ``alias`` (as GetAlias answers it) serves, for a message: ``serves version 1 with 10% to version 2``."""
    routed = routed_versions(alias)
    return f"serves version {alias['FunctionVersion']}" + (f" with {routing_shares(routed)}" if routed else " alone")


def _live_entry(ctx: Context, function: str) -> Mapping[str, str]:
    """The live record's entry of ``function`` (what the last deploy that passed left: its commit, its version);
    {} when there is none or it cannot be read (then nothing says a version is not verified)."""
    try:
        found = history.History.of(ctx.aws, ctx.env)
        return found.live().get(f"lambda:{function}", {}) if found is not None else {}
    except (BotoCoreError, ClientError, history.LiveRecordUnreadable):
        return {}


def takes_it_back(max_error_rate: float, compare: bool, old: str) -> str:
    """What takes a canary back, for people: "any error beyond version 3's own rate" (``old`` names the version)."""
    return allowed(max_error_rate) + (f" beyond {old}'s own rate" if compare else "")


def with_options(settings: LambdaCanary, percent: str | None, bake: str | None) -> LambdaCanary:
    """The environment's canary with ``--canary PERCENT`` (``10``, ``10%``; ``0``: none) and ``--bake DURATION``
    (``300``, ``90s``, ``5m``) over it; UsageError for a value that is not one, or a bake without a canary."""
    chosen = settings
    if percent is not None:
        try:
            chosen = dataclasses.replace(chosen, percent=float(percent.strip().removesuffix("%")))
        except ValueError:
            raise UsageError(
                f"--canary {percent!r} is not a percentage", next_step="pass a number: --canary 10 (0: no canary)"
            ) from None
    if bake is not None:
        chosen = dataclasses.replace(chosen, seconds=parse_duration(bake, "--bake"))
    problem = canary_problem(chosen)
    if problem:
        raise UsageError(
            f"the canary's {problem}", next_step="pass --canary from 1 to 99 (0: no canary), --bake above 0"
        )
    if bake is not None and not chosen.on:
        raise UsageError(
            "--bake is how long a canary runs, and there is none here",
            next_step="add --canary PERCENT, or set percent in [environments.NAME.lambda_canary]",
        )
    return chosen


def dimensions(function_name: str, alias: str, version: str) -> list[dict[str, str]]:
    """Lambda's dimensions of a version's metrics behind an alias, in name order (the order moto matches on)."""
    return [
        {"Name": "ExecutedVersion", "Value": version},
        {"Name": "FunctionName", "Value": function_name},
        {"Name": "Resource", "Value": f"{function_name}:{alias}"},
    ]


def version_queries(function_name: str, alias: str, versions: Sequence[str]) -> dict[str, Query]:
    """The invocations and errors of each version behind ``alias``."""
    return {
        f"{metric.lower()}{index}": (NAMESPACE, metric, dimensions(function_name, alias, version))
        for index, version in enumerate(versions)
        for metric in ("Invocations", "Errors")
    }


def version_counts(found: Mapping[str, float], versions: Sequence[str]) -> dict[str, Counts]:
    """Each version's counts from the sums of :func:`version_queries`."""
    return {
        version: Counts(round(found[f"invocations{i}"]), round(found[f"errors{i}"]))
        for i, version in enumerate(versions)
    }


# the output a failed canary's error carries: its function (a folder of lambda/)
FAILED_FUNCTION = "canary.failed_function"


@dataclass(frozen=True)
class CanaryRelease(Step):
    """Route ``percent`` % of the alias's requests to the published version with this code for ``seconds``,
    watching its errors; take it back (and fail) when they pass ``max_error_rate``."""

    name: ClassVar[str] = "canary"
    function: str
    function_name: str
    alias: str
    key: str
    code_sha256: str
    percent: float
    seconds: float
    max_error_rate: float
    poll: float
    compare: bool = True  # judged against the old version's error rate in the same time (see the module)
    # the team's own alarms ([environments.NAME.alarm_watch]), read at each poll too: one going to ALARM takes the
    # canary back there (deploykit.watch.WatchAlarms)
    alarms: tuple[str, ...] = ()

    def describe(self) -> str:
        return (
            f"give the version that runs {self.code_sha256[:12]}… {self.percent:g}% of {self.function_name}:"
            f"{self.alias}'s requests for {self.seconds:g}s; {self._allowed('the old version')} takes it back"
        )

    def _allowed(self, old: str) -> str:
        return takes_it_back(self.max_error_rate, self.compare, old)

    def failing(self, new: Counts, old: Counts, before: Counts | None = None) -> bool:
        """Whether the new version's counts take it back, beside the old one's in the same time and ``before`` it
        (:meth:`before`), judged at each of the watch's looks."""
        judged_by = old + before if before is not None else old
        return failing(new, judged_by if self.compare else None, self.max_error_rate, looks_of(self.seconds, self.poll))

    def before(self, ctx: Context, began: datetime, old: str) -> Counts:
        """The old version's counts in the whole minutes of the ten before the canary ``began``, when it served all
        of the alias's requests. Its own rate from the first look, where its share of the canary's first seconds
        holds too few requests to tell one: judged alone meanwhile, a new version failing as often as the old one
        was taken back on its first error."""
        queries = version_queries(self.function_name, self.alias, [old])
        return version_counts(sums_before(ctx.aws.client("cloudwatch"), queries, began, BEFORE_SECONDS), [old])[old]

    def fixed_seconds(self) -> float:
        return self.seconds

    def interrupted(self) -> str:
        return (
            f"the canary was taken back: {self.function_name}:{self.alias} serves the version it served before "
            "alone (unless a line above says it could not)"
        )

    def run(self, ctx: Context) -> Outcome:
        client = ctx.aws.client("lambda")
        new, current = read_version_and_alias(
            ctx.aws, self.function, self.function_name, self.alias, self.code_sha256, self.key
        )
        old = str(current["FunctionVersion"])
        if old == new:
            judged_by = self._judged_by(ctx, new, routed_versions(current))
            if judged_by is None:
                return Outcome.skipped(f"{self.function}: {self.alias} already serves version {new}: nothing to try")
            old = judged_by
        versions = [new, old]
        # counted from before the shift, so that no request the new version answers goes uncounted
        since = Since(ctx, version_queries(self.function_name, self.alias, versions))
        before = self.before(ctx, since.start, old) if self.compare else Counts()
        share = round(self.percent / 100, 4)
        try:
            answer = client.update_alias(
                FunctionName=self.function_name,
                Name=self.alias,
                FunctionVersion=old,
                RoutingConfig={"AdditionalVersionWeights": {new: share}},
                RevisionId=current["RevisionId"],
            )
        except ClientError as exc:
            answer = self._split_refused(client, exc, new, old, share)
        except BaseException:  # an interrupt while the split went: it may be in, its answer unread
            self._take_back(ctx, client, old, "")
            raise
        revision = str(answer.get("RevisionId", ""))
        try:  # from the split on: an interrupt anywhere (while the line below is written too) takes it back
            rate = f" (version {old} in the minutes before: {before}, {before.rate:.1%})" if before.requests else ""
            ctx.reporter.line(
                f"🐤 {self.function}: version {new} takes {self.percent:g}% of {self.alias}'s requests for "
                f"{self.seconds:g}s (version {old} the rest); {self._allowed(f'version {old}')} takes it back{rate}"
            )
            counts, alarmed = self._watch(ctx, since, new, old, before, share)
        except AliasChanged:  # someone else's routing now: not undone
            raise
        except BaseException as exc:  # an interrupt, or the watch itself failed: never leave the canary half in
            if not self._take_back(ctx, client, old, revision) and isinstance(exc, HeldBack):
                # still split, beside a failure: the automatic rollback points the alias at ``old`` alone
                carry(exc, [], alias_outputs(self.function, self.function_name, self.alias, new, previous=old))
            raise
        if alarmed is not None or self.failing(counts[new], counts[old], before):
            answered = (
                f"version {new} answered {counts[new]} ({counts[new].rate:.0%}; version {old}: {counts[old]}, "
                f"{counts[old].rate:.0%})"
            )
            failed = (
                f"the canary of {self.function} failed: {alarmed.message} ({answered})"
                if alarmed is not None
                else f"the canary of {self.function} failed: {answered}, {self._allowed(f'version {old}')} takes it "
                "back"
            )
            # the function whose release is bad, for the automatic rollback (of what moved beside it) to show its log
            culprit = {
                FAILED_FUNCTION: self.function,
                f"{self.function}.version": new,
                f"{self.function}.function_name": self.function_name,
            }
            if not self._take_back(ctx, client, old, revision):
                raise carry(
                    StepFailed(
                        f"{failed}; but taking it back failed: {self._as_it_is(client, new)}; $LATEST still runs its "
                        "code, which a deploy of the function's stack would publish",
                        next_step=f"{self._clear_command(old)}; then inv deploy.lambda {self.function} --env "
                        f"{ctx.env.name} (it puts $LATEST back on what serves)",
                    ),
                    [],
                    culprit,
                )
            raise carry(
                StepFailed(
                    f"{failed}; {self.alias} serves version {old} {TAKEN_BACK}",
                    next_step=f"see what it wrote: inv logs --component lambda:{self.function} --since 15m; fix it, "
                    f"commit, and deploy again",
                ),
                [],
                culprit,
            )
        detail = (
            f"{self.function}: version {new} took {self.percent:g}% for {self.seconds:g}s: {counts[new]} "
            f"(version {old}: {counts[old]})"
        )
        if counts[new].requests == 0:
            detail += "; no request reached it, nothing to judge it by (only what runs after the canary checks it)"
            ctx.reporter.line(f"⚠️  {detail}")
        elif too_many_errors(counts[new], self.max_error_rate):
            many = counts[new].requests
            detail += (
                f"; version {new} failed {counts[new].rate:.0%} of them, but {many} request{'s' if many != 1 else ''} "
                f"cannot tell that from version {old}'s own errors ({counts[old].rate:.0%}): not judged (a longer "
                "--bake, or more traffic, lets the canary judge it)"
            )
            ctx.reporter.line(f"⚠️  {detail}")
        return Outcome.done(detail, **{f"{self.function}.canary_version": new})

    def _judged_by(self, ctx: Context, new: str, weights: Mapping[str, float]) -> str | None:
        """The version a canary of ``new`` starts from when the alias's own version is ``new`` already: the one the
        live record verified, when it is another (an earlier run's release left serving, never verified: a smoke
        that failed and a rollback that did not go through), else the one a split routes to besides (set by hand:
        ``new`` never passed a canary). None when ``new`` serves alone and nothing says it is not verified: nothing
        to try. Said when the canary goes on: the alias is split anew, ``new`` taking its share."""
        entry = _live_entry(ctx, self.function)
        verified = str(entry.get("version") or "") if entry.get("sha") else ""
        others = [version for version in weights if version != new]
        judged_by = verified if verified and verified != new else (others[0] if others else None)
        if judged_by is not None:
            now = f"with {routing_shares(weights)}" if weights else "alone"
            ctx.reporter.line(
                f"🐤 {self.function}: {self.alias} serves version {new} {now}, which no canary or deploy verified: the "
                f"canary starts from version {judged_by}"
                + (", the last that passed" if judged_by == verified else "")
                + f", version {new} taking {self.percent:g}%"
            )
        return judged_by

    def _watch(
        self, ctx: Context, since: Since, new: str, old: str, before: Counts, share: float
    ) -> tuple[dict[str, Counts], StepFailed | None]:
        """Poll the versions' counts until the time is up, the new one fails too much or one of the alarms went to
        ALARM (its failure, then); :class:`AliasChanged` when the alias no longer splits as the canary set it."""
        versions = [new, old]
        alarms, started = AlarmJudge(ctx, self.alarms), ctx.clock.monotonic()
        client = ctx.aws.client("lambda")
        while True:
            if ctx.stop.is_set():  # the run was interrupted while this step ran beside others: take it back now
                raise KeyboardInterrupt
            held = held_back(ctx, f"the canary of {self.function} stopped unjudged")
            if held is not None:  # a step beside it failed: not promoted only for the automatic rollback to put back
                raise held
            counts = version_counts(since.read(), versions)
            now = get_alias(client, self.function_name, self.alias)
            split = {version: round(weight, 4) for version, weight in routed_versions(now).items()}
            if str(now["FunctionVersion"]) != old or split != {new: share}:
                raise AliasChanged(
                    f"the canary of {self.function} stopped unjudged: {self.alias} was changed by other means while "
                    f"it ran, and {serving(now)} (version {new} took {self.percent:g}% before: {counts[new]}); the "
                    "release goes no further",
                    next_step=f"see who changed it (CloudTrail: UpdateAlias on {self.function_name}); deploy again "
                    "once it is settled",
                )
            elapsed = ctx.clock.monotonic() - started
            ctx.reporter.status(
                f"{self.function} canary {elapsed:.0f}s of {self.seconds:g}s: version {new} {counts[new]}, "
                f"version {old} {counts[old]}"
            )
            alarmed = alarms.check()
            if alarmed is not None or self.failing(counts[new], counts[old], before) or elapsed >= self.seconds:
                return counts, alarmed
            ctx.clock.sleep(min(self.poll, self.seconds - elapsed))

    def _as_it_is(self, client: Any, new: str) -> str:
        """What the alias serves now, read again (someone may have changed it), for a message."""
        try:
            now = get_alias(client, self.function_name, self.alias)
        except (BotoCoreError, ClientError, UsageError):
            return f"{self.alias} may still route {self.percent:g}% to version {new}"
        return f"{self.alias} {serving(now)}"

    def _clear_command(self, old: str) -> str:
        return (
            f"point the alias at version {old} alone: aws lambda update-alias --function-name {self.function_name} "
            f"--name {self.alias} --function-version {old} --routing-config AdditionalVersionWeights={{}}"
        )

    def _split_refused(self, client: Any, exc: ClientError, new: str, old: str, share: float) -> dict[str, Any]:
        """The alias with the canary's split in when Lambda refused it as done already (botocore sent the call again
        after its answer was lost, a read timeout: the alias's RevisionId had moved on with the first); StepFailed
        when Lambda refused it (nothing was changed), ``exc`` otherwise."""
        code = error_code(exc)
        if code == "PreconditionFailedException":
            now = dict(get_alias(client, self.function_name, self.alias))
            if str(now["FunctionVersion"]) == old and routed_versions(now) == {new: share}:
                return now
        if code not in ("InvalidParameterValueException", "PreconditionFailedException"):
            raise exc
        raise StepFailed(
            f"Lambda refused to route {self.percent:g}% of {self.function_name}:{self.alias} to version {new} "
            f"beside version {old}: {exc.response.get('Error', {}).get('Message', exc)} (nothing was changed)",
            next_step=f"deploy it without a canary: inv deploy.lambda {self.function} --canary 0",
        ) from None

    def _take_back(self, ctx: Context, client: Any, old: str, revision: str) -> bool:
        """The alias on ``old`` alone again; said, and False, when it cannot be (someone changed the alias
        meanwhile, or AWS refused)."""
        # a second Ctrl-C does not cut it short, and a refusal is said before it stops the run (shielded: after)
        with shielded():
            try:
                client.update_alias(
                    FunctionName=self.function_name,
                    Name=self.alias,
                    FunctionVersion=old,
                    RoutingConfig={"AdditionalVersionWeights": {}},
                    **({"RevisionId": revision} if revision else {}),
                )
            except Exception as exc:  # said, and the failure that brought us here goes on
                ctx.reporter.line(
                    f"❌ could not take the canary of {self.function} back ({exc}); {self._clear_command(old)}"
                )
                return False
        back = ""
        try:  # $LATEST holds the canary's code, which a deploy of the function's stack would publish
            rerun = f"inv deploy.lambda {self.function} --env {ctx.env.name}"
            back = latest_as_served(ctx, self.function, self.function_name, old, rerun=rerun)
        except Exception as exc:  # said, and the failure that brought us here goes on
            back = f"; $LATEST still runs the canary's code ({exc}): a deploy of its stack would publish it"
        ctx.reporter.line(f"↩️  {self.function}: canary taken back, {self.alias} serves version {old} alone{back}")
        return True
