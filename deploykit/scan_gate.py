"""The image scan gate: ECR's scan of a new image judged before the image runs in the environment
(``[environments.NAME.image_scan]`` of deploy.toml).

ECR scans an image pushed to a repository that scans on push (the registry stack's does), or one asked for
(StartImageScan). With ``severity = "HIGH"``, a deploy that brings a new image reads that scan (waits while it is
in progress, up to ``timeout``) and goes on only when no finding of that severity or worse is left that ``ignore``
does not name: otherwise the deploy is refused (exit 2, as the other guards refuse: "refused" in the history, no
failed deploy in ``inv report``) before the image runs anything, the old version serving on, and it says which
findings stopped it. A scan that cannot be judged (FAILED, UNSUPPORTED_IMAGE, FINDINGS_UNAVAILABLE, ...) or
is still in progress at the deadline stops the deploy too: the gate fails closed.

The step comes right before the image reaches the environment: before the release command (which runs the image)
and roll-service in the app chain, before the Fargate stack when that stack deploys a new image (deploy.full,
deploy.stack --image-tag, deploy.auto with the stack changed); ``inv run --image-tag`` judges the image it is to
run the same way, and ``inv scan`` any image (:class:`ImageJudge`). It is skipped when the service already runs the
image (it was judged as it went live), and never part of a rollback: that brings back an image that ran before, and
keeping a broken release in place for a finding in the one before it helps no one. Basic scanning's findings (a
name, a severity, the package as attributes) and enhanced scanning's (Amazon Inspector: ``enhancedFindings``, their
``status``; a SUPPRESSED or CLOSED one does not count) are both read; an UNDEFINED or UNTRIAGED severity never stops
a deploy (it is counted). ``$DEPLOYKIT_SKIP_SCAN=1`` deploys without the gate, an emergency's way past it; the step
says so, and the history keeps it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, ClassVar

from botocore.exceptions import ClientError

from deploykit import ecs
from deploykit.clock import Clock, backoff
from deploykit.config import SEVERITIES, EnvConfig
from deploykit.errors import StepFailed, UsageError
from deploykit.plan import Context, Outcome, Step
from deploykit.switches import switch, switched_on

SKIP_ENV = switch("DEPLOYKIT_SKIP_SCAN")  # =1: this run deploys without judging the scan (said in its step)
IN_PROGRESS = ("IN_PROGRESS", "PENDING")  # waited for
JUDGED = ("COMPLETE", "ACTIVE")  # basic scanning's finished scan; enhanced scanning's continuous one
NOT_COUNTED = ("SUPPRESSED", "CLOSED")  # enhanced findings a person or Inspector set aside
SHOWN = 10  # findings named in a refusal


def skipped_by_hand(environ: Mapping[str, str] | None = None) -> bool:
    """Whether this run deploys without the gate (``$DEPLOYKIT_SKIP_SCAN=1``)."""
    return switched_on(SKIP_ENV, environ)


@dataclass(frozen=True)
class Finding:
    """One finding of a scan: its name (CVE-2023-4911), severity, package (``glibc 2.36-9``) and, for an enhanced
    scan, its status (ACTIVE, SUPPRESSED, CLOSED)."""

    name: str
    severity: str
    package: str = ""
    status: str = "ACTIVE"

    def __str__(self) -> str:
        return f"{self.name} ({self.severity}{', ' + self.package if self.package else ''})"


def rank(severity: str) -> int:
    """How severe (INFORMATIONAL 0 ... CRITICAL 4); -1 for UNDEFINED, UNTRIAGED or any other."""
    return SEVERITIES.index(severity) if severity in SEVERITIES else -1


def findings_of(page: Mapping[str, Any]) -> list[Finding]:
    """The findings of one page of DescribeImageScanFindings, basic and enhanced."""
    scan = page.get("imageScanFindings") or {}
    found = []
    for finding in scan.get("findings") or ():
        attributes = {a.get("key"): a.get("value", "") for a in finding.get("attributes") or ()}
        package = " ".join(p for p in (attributes.get("package_name"), attributes.get("package_version")) if p)
        found.append(Finding(str(finding.get("name", "?")), str(finding.get("severity", "UNDEFINED")), package))
    for finding in scan.get("enhancedFindings") or ():
        details = finding.get("packageVulnerabilityDetails") or {}
        packages = details.get("vulnerablePackages") or [{}]
        package = " ".join(p for p in (packages[0].get("name"), packages[0].get("version")) if p)
        name = details.get("vulnerabilityId") or finding.get("title") or finding.get("findingArn") or "?"
        found.append(
            Finding(str(name), str(finding.get("severity", "UNDEFINED")), package, str(finding.get("status", "ACTIVE")))
        )
    return found


@dataclass(frozen=True)
class Verdict:
    """What a finished scan says under the gate's settings."""

    counts: Mapping[str, int]  # by severity, as ECR counts them
    blocking: tuple[Finding, ...]  # at the gate's severity or worse, not accepted: the deploy stops
    accepted: tuple[Finding, ...]  # at the gate's severity or worse, named in ignore

    @property
    def passed(self) -> bool:
        return not self.blocking

    def counted(self) -> str:
        """``1 HIGH, 3 MEDIUM`` (most severe first), or ``no findings``."""
        order = [*reversed(SEVERITIES), *sorted(set(self.counts) - set(SEVERITIES))]
        said = [f"{self.counts[s]} {s}" for s in order if self.counts.get(s)]
        return ", ".join(said) or "no findings"


def judge(findings: Iterable[Finding], counts: Mapping[str, int], severity: str, ignore: Sequence[str]) -> Verdict:
    """The verdict on ``findings`` when findings of ``severity`` or worse stop a deploy, those named in ``ignore``
    (any case) accepted; a SUPPRESSED or CLOSED enhanced finding does not count."""
    accepted_names = {name.strip().upper() for name in ignore}
    serious = [f for f in findings if rank(f.severity) >= rank(severity) >= 0 and f.status.upper() not in NOT_COUNTED]
    serious.sort(key=lambda f: (-rank(f.severity), f.name))
    blocking = tuple(f for f in serious if f.name.upper() not in accepted_names)
    accepted = tuple(f for f in serious if f.name.upper() in accepted_names)
    return Verdict(dict(counts), blocking, accepted)


@dataclass(frozen=True)
class Scan:
    """ECR's scan of an image as it stands: its status (and description), and when judged, its findings."""

    status: str
    description: str = ""
    findings: tuple[Finding, ...] = ()
    counts: Mapping[str, int] | None = None
    completed_at: datetime | None = None  # imageScanCompletedAt: when a basic scan was made

    def older_than(self, moment: datetime) -> bool:
        """Whether this is a finished scan made before ``moment``."""
        return self.status == "COMPLETE" and self.completed_at is not None and self.completed_at < moment

    @property
    def tally(self) -> Mapping[str, int]:
        """The findings by severity: as ECR counts them, else counted here."""
        return self.counts if self.counts is not None else _counts(self.findings)


def read_scan(client: Any, repository: str, tag: str) -> Scan | None:
    """The scan of ``repository:tag`` (every page of its findings), or None when ECR has none of it."""
    request: dict[str, Any] = {"repositoryName": repository, "imageId": {"imageTag": tag}, "maxResults": 1000}
    findings: list[Finding] = []
    first: dict[str, Any] | None = None
    while True:
        try:
            page = client.describe_image_scan_findings(**request)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code == "ScanNotFoundException":
                return None
            if code in ("ImageNotFoundException", "RepositoryNotFoundException"):
                raise UsageError(
                    f"{repository}:{tag} is not in the environment's registry, so there is no scan to judge: "
                    f"{exc.response['Error'].get('Message', code)}",
                    next_step="push it first (inv push), or deploy it with inv deploy.app",
                ) from None
            raise
        first = first or page
        findings += findings_of(page)
        token = page.get("nextToken")
        if not token:
            break
        request["nextToken"] = token
    assert first is not None  # the loop reads a page before it ends
    state = first.get("imageScanStatus") or {}
    found = first.get("imageScanFindings") or {}
    completed = found.get("imageScanCompletedAt")
    return Scan(
        str(state.get("status", "")),
        str(state.get("description", "")),
        tuple(findings),
        found.get("findingSeverityCounts"),
        completed if isinstance(completed, datetime) else None,
    )


def refusal(image: str, severity: str, verdict: Verdict) -> str:
    """Why the gate stopped the deploy: the image, the findings at ``severity`` or worse (the first ten), the
    counts."""
    shown = "\n".join(f"  {finding}" for finding in verdict.blocking[:SHOWN])
    more = len(verdict.blocking) - SHOWN
    return (
        f"ECR's scan of {image} has {len(verdict.blocking)} finding(s) of {severity} or worse that deploy.toml "
        f"does not accept ({verdict.counted()} in all):\n{shown}" + (f"\n  ... and {more} more" if more > 0 else "")
    )


@dataclass(frozen=True)
class ImageJudge:
    """The gate's judgement of one image, ``repository:tag``, by an environment's ``[image_scan]`` settings: the scan
    waited for (asked for when ECR has none), then judged. The scan gate's step, ``inv run --image-tag`` and ``inv
    scan`` use it."""

    repository: str  # the ECR repository's name
    tag: str
    severity: str
    ignore: tuple[str, ...]
    timeout: float
    poll: float
    env_name: str
    what: str = "deploys"  # what the way past it lets through: "DEPLOYKIT_SKIP_SCAN=1 deploys without the gate"
    rescan_after: float = 0.0  # seconds: a basic scan older than this is made again first (0: judged at any age)

    @property
    def image(self) -> str:
        return f"{self.repository}:{self.tag}"

    @property
    def emergency(self) -> str:
        return f"in an emergency, {SKIP_ENV}=1 {self.what} without the gate"

    def judged(self, scan: Scan) -> tuple[str, str]:
        """What the scan (:meth:`finished`) says once it passed (``passed: ...``), and its findings by severity (``1
        HIGH, 2 LOW``); UsageError (refused, exit 2) naming the findings that stop it; StepFailed for a scan that
        cannot be judged."""
        if scan.status not in JUDGED:
            raise StepFailed(
                f"ECR's scan of {self.image} cannot be judged: {scan.status}"
                + (f" ({scan.description})" if scan.description else ""),
                next_step=f"see aws ecr describe-image-scan-findings --repository-name {self.repository} --image-id "
                f"imageTag={self.tag}; scan it again (aws ecr start-image-scan) and try again, or, {self.emergency}",
            )
        verdict = judge(scan.findings, scan.tally, self.severity, self.ignore)
        if not verdict.passed:  # a guard's refusal (exit 2): nothing changed, the image is what must change
            names = ", ".join(f'"{f.name}"' for f in verdict.blocking[:3])
            raise UsageError(
                refusal(self.image, self.severity, verdict),
                next_step=f"update what they are in (the base image: inv base-image --force; the requirements) and "
                f"deploy again; or, once reviewed, accept them in [environments.{self.env_name}.image_scan] ignore = "
                f"[{names}]; {self.emergency}",
            )
        if verdict.accepted:
            accepted = ", ".join(map(str, verdict.accepted))
            return f"passed: {verdict.counted()}; accepted by deploy.toml: {accepted}", verdict.counted()
        return f"passed: nothing of {self.severity} or worse ({verdict.counted()})", verdict.counted()

    def finished(
        self,
        client: Any,
        clock: Clock,
        say: Callable[[str], object],
        status: Callable[[str], None] = lambda _state: None,
        stopped: Callable[[], bool] = lambda: False,
    ) -> Scan:
        """The scan once it is no longer in progress (one started when ECR has none, or when its basic scan is older
        than ``rescan_after``); StepFailed at the deadline. ``say``: a line for the person; ``status``: the state
        while waiting; ``stopped``: the run was interrupted."""
        start = clock.monotonic()
        pauses = backoff(min(self.poll, 1.0), max(self.poll, 1.0))
        asked = False
        replaced: datetime | None = None  # a scan asked for again: the one it replaces, until ECR shows the new one
        while True:
            scan = read_scan(client, self.repository, self.tag)
            elapsed = clock.monotonic() - start
            stale = self._stale(scan, clock) if not asked else None
            if (scan is None or stale is not None) and not asked:
                asked = True
                if self._start(client, say, stale):
                    replaced = stale
                elif scan is not None:  # scanned today already (LimitExceeded): the scan there is judged
                    return scan
            elif scan is not None and replaced is not None and scan.older_than(replaced + timedelta(seconds=1)):
                scan = None  # the scan asked for is not shown yet: the old one is still there
            elif scan is not None and scan.status not in IN_PROGRESS:
                if elapsed >= 1:
                    say(f"   [{elapsed:6.1f}s] scan {scan.status}")
                return scan
            state = scan.status if scan is not None else "not started yet"
            status(f"scan of {self.tag} {state}")
            if stopped():
                raise StepFailed("the run was interrupted while the scan was awaited", next_step="run it again")
            if elapsed >= self.timeout:
                raise StepFailed(
                    f"ECR's scan of {self.image} is still {state} after {elapsed:.0f}s (image_scan timeout "
                    f"{self.timeout:.0f}s)",
                    next_step=f"try again when the scan is done (aws ecr describe-image-scan-findings "
                    f"--repository-name {self.repository} --image-id imageTag={self.tag}), or raise [environments."
                    f"{self.env_name}.image_scan] timeout; {self.emergency}",
                )
            clock.sleep(min(next(pauses), max(self.timeout - elapsed, 0.01)))

    def _stale(self, scan: Scan | None, clock: Clock) -> datetime | None:
        """When ``scan`` was made, if it is a basic scan older than ``rescan_after``; else None."""
        if scan is None or self.rescan_after <= 0 or scan.completed_at is None:
            return None
        return scan.completed_at if scan.older_than(clock.now() - timedelta(seconds=self.rescan_after)) else None

    def _start(self, client: Any, say: Callable[[str], object], stale: datetime | None = None) -> bool:
        """Ask ECR to scan the image (a repository that does not scan on push; a scan older than ``rescan_after``);
        False when ECR scanned it today already (one on its way, or the one there is today's)."""
        try:
            client.start_image_scan(repositoryName=self.repository, imageId={"imageTag": self.tag})
        except ClientError as exc:
            error = exc.response.get("Error", {})
            if error.get("Code") == "LimitExceededException":  # scanned today already: its scan is on its way
                if stale is not None:
                    made = f"{stale:%Y-%m-%d %H:%M} UTC"
                    say(f"   ECR will not scan {self.image} again today: the scan of {made} is judged")
                return False
            raise StepFailed(
                f"ECR has no scan of {self.image} and would not start one: {error.get('Message', error.get('Code'))}",
                next_step=f"turn on scan on push for {self.repository} (the registry stack does), or, {self.emergency}",
            ) from None
        if stale is None:
            say(f"   no scan of {self.image} yet: asked ECR for one (StartImageScan)")
        else:
            days = self.rescan_after / 86400
            say(
                f"   ECR's scan of {self.image} is from {stale:%Y-%m-%d %H:%M} UTC, older than {days:g} day(s) "
                "(image_scan rescan_after_days): asked ECR for a new one (StartImageScan)"
            )
        return True


def image_judge(env: EnvConfig, tag: str, what: str = "deploys") -> ImageJudge:
    """``env``'s judgement of its repository's image ``tag`` (its [image_scan] settings, its poll)."""
    scan = env.image_scan
    return ImageJudge(
        env.repository,
        tag,
        scan.severity,
        scan.ignore,
        scan.timeout,
        env.poll_seconds,
        env.name,
        what,
        scan.rescan_after_days * 86400,
    )


@dataclass(frozen=True)
class ScanGate(Step):
    """ECR's scan of ``judge.image`` judged before the image runs here: findings of the environment's severity or
    worse that its ``ignore`` does not name stop the deploy."""

    name: ClassVar[str] = "scan-gate"
    changes_what_runs: ClassVar[bool] = False  # a check of the image
    cluster: str
    service: str
    container: str
    judge: ImageJudge
    # the Fargate stack rolls the image out, not roll-service: the service is read anew by the steps after
    by_stack: bool = False

    @property
    def image(self) -> str:
        return self.judge.image

    def describe(self) -> str:
        return f"judge ECR's scan of {self.image}: a finding of {self.judge.severity} or worse stops the deploy"

    def interrupted(self) -> str:
        return f"it only reads the scan (and may have asked ECR for one); {self.service} was not changed"

    def run(self, ctx: Context) -> Outcome:
        if skipped_by_hand():
            return Outcome.skipped(f"${SKIP_ENV}=1: ECR's scan of {self.image} not judged", scan="not judged")
        if self._runs_already(ctx):
            return Outcome.skipped(f"{self.service} already runs {self.judge.tag}: its scan was judged as it went live")
        scan = self.judge.finished(
            ctx.aws.client("ecr"), ctx.clock, ctx.reporter.line, ctx.reporter.status, ctx.stop.is_set
        )
        detail, counted = self.judge.judged(scan)
        return Outcome.done(detail, scan=counted)

    def _runs_already(self, ctx: Context) -> bool:
        """Whether the service's primary deployment runs the image (no service yet: no)."""
        services = ecs.services(ctx.aws)
        key = (self.cluster, self.service)
        try:
            service = services.take(key)  # as register-taskdef read it
        except UsageError:
            if not self.by_stack:
                raise
            return False
        if not self.by_stack:  # roll-service takes it as it was: reading a scan changes nothing of the service
            services.keep(key, service)
        primary = ecs.primary_deployment(service)
        if not primary:
            return False
        running = ecs.TaskDefinitions.of(ctx.aws).image(primary["taskDefinition"], self.container)
        repository = ecs.image_repository(running)
        same = repository == self.judge.repository or repository.endswith("/" + self.judge.repository)
        return same and ecs.image_tag(running) == self.judge.tag


def _counts(findings: Iterable[Finding]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for finding in findings:
        counts[finding.severity] = counts.get(finding.severity, 0) + 1
    return counts
