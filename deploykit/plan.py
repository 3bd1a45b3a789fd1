"""Plan, then execute (after chalice's deploy planner and executor).

A planner turns git, live state and configuration into a :class:`Plan`: an ordered tuple of small
frozen :class:`Step` objects whose inputs are all explicit fields. An :class:`Executor` runs a plan,
times each step, shows progress and prints a summary table; ``--dry-run`` hands the same plan to
:func:`describe_plan` instead, which changes nothing.

Steps receive their collaborators (AWS factory, Docker client, clock, reporter) through a
:class:`Context`, never through globals, so a test runs any step against moto, a Stubber or a fake.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from typing import TYPE_CHECKING, Any, ClassVar, Literal, TypeVar

from deploykit.clock import Stoppable
from deploykit.errors import DeployKitError, Interrupted, StepFailed, UsageError, said
from deploykit.output import tabulate
from deploykit.plugins import observe

if TYPE_CHECKING:
    import docker

    from deploykit.aws import AwsFactory
    from deploykit.clock import Clock
    from deploykit.config import Config, EnvConfig
    from deploykit.output import Reporter
    from deploykit.plugins import Plugins


@dataclass
class Context:
    """What steps may use. ``docker_factory`` is called at most once, on first use. ``plugins`` (when loaded)
    get the deployment hooks and give the smoke step its checks."""

    config: Config
    env: EnvConfig
    aws: AwsFactory
    clock: Clock
    reporter: Reporter
    docker_factory: Callable[[], docker.DockerClient]
    plugins: Plugins | None = None
    # Another environment's AWS, by name, with its own credentials (promotion copies the image its source runs)
    aws_of: Callable[[str], AwsFactory] | None = None
    # Set when the run is interrupted while steps run side by side (Parallel): each stops at its next safe point,
    # a sequence between two of its steps, a canary by taking itself back.
    stop: threading.Event = field(default_factory=threading.Event, init=False, repr=False)
    # Set when a step running beside others failed or refused (not interrupted): the run fails, and its automatic
    # rollback puts back what changed. The steps still running beside it go no further than they must
    # (:class:`HeldBack`): a sequence starts none of its next steps, a canary takes itself back. Each run
    # (Executor.execute) starts it clear.
    failing: threading.Event = field(default_factory=threading.Event, init=False, repr=False)
    # whether a failure holds back what runs beside it (set per run: not in a rollback's, which no automatic rollback
    # follows, and whose every part puts back what it can: a function's move refused must not keep the app's)
    holds_back: bool = field(default=True, init=False, repr=False)
    _docker: docker.DockerClient | None = field(default=None, init=False, repr=False)
    # Checked once, before the first step of the plan that changes what is live (not artifacts_only) starts: its
    # error ends the run there, nothing live changed (deploy.auto: what is live is still what its plan was made from)
    gate: Callable[[], None] | None = None
    # Checked before each step of the plan that changes what is live: its error (the deploy lock lost: another deploy
    # may hold it now) ends the run there (deploykit.lock.Lease.check)
    holding: Callable[[], None] | None = None
    # The SHA-256 of each template this run's synthesis left (its file's resolved path → hex digest): a deploy of one
    # refuses a file another command of the checkout has synthesized again since (deploykit.synth.template_body)
    synthesized: dict[str, str] = field(default_factory=dict, init=False)
    # When the run's first step that changes what is live began (the executor sets it): what went wrong from then on
    # may be the run's doing (deploykit.watch.WatchAlarms); None until then
    changing_since: datetime | None = field(default=None, init=False)
    # How far AWS's clock is from ``clock`` (AWS's time = this machine's + it, in seconds), from the first answer read
    # for it (deploykit.watch.note_aws_time): what the times AWS says (an alarm's change) are compared in; None until
    aws_offset: float | None = field(default=None, init=False)
    # the first reads of steps started while the steps before them ran (Step.early), by the step's id, with the step
    _early: dict[int, tuple[Step, Future[Any]]] = field(default_factory=dict, init=False, repr=False)
    _early_guard: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.clock, Stoppable):  # its sleeps end once ``stop`` is set
            self.clock = Stoppable(self.clock, self.stop)

    def start_early(self, running: Step, following: Iterable[Step]) -> None:
        """While ``running`` runs, start the early reads (:meth:`Step.early`) of the steps the next of ``following``
        starts with, when ``running`` changes nothing that is live (each of its steps :attr:`~Step.artifacts_only`):
        what they read then is what they would read after it. While the next changes nothing live either, those of
        the one after it too, and so on (register-taskdef's, while the base image is made: before the push, which
        waits for them, :meth:`refuse_ahead`). Each in a thread of its own, which ends with its reads; a step's are
        started once."""
        if not all_artifacts(running):
            return
        for later in following:
            for step in first_steps(later):
                read = step.early(self)
                with self._early_guard:
                    if read is not None and id(step) not in self._early:
                        self._early[id(step)] = (step, in_background(read, "early"))
            if not all_artifacts(later):
                return

    def early_reads(self, step: Step) -> Any | None:
        """What ``step``'s early reads found (their failure raised, as the step's own reads would raise it), waiting
        for them if they are still out; None when they were not started (the step reads for itself)."""
        with self._early_guard:
            started = self._early.pop(id(step), None)
        return None if started is None else started[1].result()

    def refuse_ahead(self) -> None:
        """Before a step leaves an artifact in the environment (an image's push or copy): the refusals
        (:meth:`Step.refuse_early`) of the later steps whose early reads were started, each by what its reads found
        (waiting for them), raised as the step would raise them. A run one of them refuses then leaves nothing
        behind: the registry does not keep an image no revision was made for. A read that failed raises nothing
        here: its step raises it when it runs, as it would have."""
        with self._early_guard:
            started = [(s, f) for s, f in self._early.values() if type(s).refuse_early is not Step.refuse_early]
        for step, future in started:
            try:
                found = future.result()
            except Exception:
                continue
            try:
                step.refuse_early(self, found)
            except DeployKitError as exc:  # said as the later step's, which the run does not reach
                exc.message = f"refused ahead by {step.name}: {exc.message}"
                raise

    @property
    def docker(self) -> docker.DockerClient:
        if self._docker is None:
            self._docker = self.docker_factory()
        return self._docker


@dataclass(frozen=True)
class Outcome:
    """What a step did: ``done`` (it changed something) or ``skipped`` (the result already existed)."""

    status: Literal["done", "skipped"]
    detail: str = ""
    outputs: Mapping[str, str] = field(default_factory=dict)
    children: tuple[StepRecord, ...] = ()  # what the steps of a group (Parallel, Sequence) did
    # what it changed, one line each, for the history (a stack update: each value before and after)
    changes: tuple[str, ...] = ()

    @classmethod
    def done(cls, detail: str = "", **outputs: str) -> Outcome:
        return cls("done", detail, outputs)

    @classmethod
    def skipped(cls, detail: str = "", **outputs: str) -> Outcome:
        return cls("skipped", detail, outputs)


@dataclass(frozen=True)
class Step:
    """One unit of a plan. Subclasses are frozen dataclasses whose fields are the step's inputs."""

    name: ClassVar[str] = "step"
    # A verifying step (smoke) checks what the steps before it changed: when none of them changed anything,
    # the executor skips it, so a deploy with nothing to do stays instant.
    verifies: ClassVar[bool] = False

    def describe(self) -> str:
        """One line saying what the step will do, for the plan and the summary."""
        raise NotImplementedError

    def run(self, ctx: Context) -> Outcome:
        raise NotImplementedError

    @property
    def skippable(self) -> bool:
        """Whether the executor skips this step when no step before it changed anything (a verifying step)."""
        return self.verifies

    def inputs(self) -> dict[str, Any]:
        return {f.name: _jsonable(getattr(self, f.name)) for f in dataclasses.fields(self)}

    def interrupted(self) -> str:
        """What an interrupt in the middle of this step leaves behind, for the message (one sentence)."""
        return "it is one call or a few, each complete or not made; rerunning redoes what is missing"

    def fixed_seconds(self) -> float | None:
        """How long the step takes by its settings (a canary, a watch), whatever the history says; None: as long as
        it takes."""
        return None

    # The step makes an artifact and changes nothing that runs in the environment (a base image, an image, its push,
    # a zip's upload): the step after it may read what is live while it runs (early).
    artifacts_only: ClassVar[bool] = False
    # False: done, it still leaves what the environment runs and serves as it was (a task-definition revision no
    # service runs yet, a Lambda version no alias serves, a wait, a check): a refusal after it is still "nothing
    # changed" (RunReport.changed_live). An artifacts_only step changes nothing either way.
    changes_what_runs: ClassVar[bool] = True

    @property
    def finishes_the_one_before(self) -> bool:
        """Whether the step completes what the step before it in its sequence changed (a first deploy's release
        command, after the stack that created the service with the new image): a failure beside the sequence does
        not hold it back (:class:`HeldBack`), as what it completes is in already."""
        return False

    def early(self, ctx: Context) -> Callable[[], Any] | None:
        """The reads of what is live this step starts with, to run while the step before it runs when that one
        changes nothing live (:meth:`Context.start_early`); :meth:`run` takes what they found with
        :meth:`Context.early_reads`. None: the step has none (it reads when it runs)."""
        return None

    def preflight(self, ctx: Context, before: tuple[Step, ...]) -> None:
        """Raise what the step would refuse when it runs (UsageError), checked before the run's first change of
        what is live (:meth:`Executor.execute`), for a step that runs after others changed it: refused then, the run
        changes nothing, where the step itself would refuse after they had. ``before``: the steps of the plan that
        run before it (not beside it), whose work may make what it checks. Any other error is passed over: the step
        meets it when it runs. By default it checks nothing."""

    def as_earlier(self) -> Any:
        """What a later step's preflight counts on the step making when it runs before it: a stack deploy's template,
        read (deploykit.references.Earlier: the resources it makes, by name). None, by default: nothing."""
        return None

    # The step uses the Docker engine (a base image, a build, a push): a run of it asks for the engine before its first
    # step (commands.core.run_plan), so that an engine not running refuses the run (exit 2) before anything changed
    uses_docker: ClassVar[bool] = False

    # The step writes files that later steps read (a synthesis: the stacks' templates): no step is checked before
    # the run (preflight) while one of these is still to run.
    makes_inputs: ClassVar[bool] = False
    # Its preflight needs nothing the run's artifacts make (the alarm watch's names, read from CloudWatch): checked
    # before the run's first step when that one only makes artifacts (a build), not after them (Executor._at_start)
    preflight_at_start: ClassVar[bool] = False

    def refuse_early(self, ctx: Context, found: Any) -> None:
        """Raise what the step would refuse (UsageError), judged by what its early reads ``found``, before an
        earlier step of the run leaves an artifact for it in the environment (:meth:`Context.refuse_ahead`). The
        step refuses the same when it runs. By default it refuses nothing ahead."""


@dataclass(frozen=True)
class Plan:
    env: str
    steps: tuple[Step, ...]
    title: str = "deploy"
    # What a successful run leaves live: (component, SHA) pairs, e.g. ("app", "3e2532eaf7e5"),
    # ("stack:fargate", ...), ("lambda:login_handler", ...). Recorded in the environment's history.
    deploys: tuple[tuple[str, str], ...] = ()
    # What a successful run records as live without deploying it: components with no change since their live SHA
    # (deploy.auto), so that later diffs start at this run's commit. The history lists them apart.
    carried: tuple[tuple[str, str], ...] = ()
    # What a successful run takes out of the environment (destroy): the live record drops these components.
    removes: tuple[str, ...] = ()
    # Components deployed though the promote_from environment does not run them (--unpromoted): the record says so.
    unpromoted: tuple[str, ...] = ()
    # Changed components held back (deploy.auto --only/--skip): neither deployed nor carried; the record says so.
    held: tuple[str, ...] = ()
    # What the run replaces the running copies of without deploying anything (inv restart): (component, the SHA it
    # runs) pairs. It holds the lock and is recorded in the history (at that SHA); the live record stays as it is.
    restarts: tuple[tuple[str, str], ...] = ()
    # The commits the run takes live, newest first: (full SHA, author, subject) (deploy.auto: those behind its changes)
    commits: tuple[tuple[str, str, str], ...] = ()
    # What a rollback found running of the components it goes back, as it read them from the environment: (component,
    # SHA) pairs. The run's record names them as live before it, where the live record does not (a failed run's
    # release, which never moved it): the next deploy.auto then knows what the rollback took off.
    found: tuple[tuple[str, str], ...] = ()
    # A rollback to what never ran in the environment (``inv rollback --to`` a release its history never had live):
    # it brings something new, so the guards a deploy meets judge it as one (a freeze, require_pushed, the import
    # check; promote_from is checked as it is resolved)
    untried: bool = False

    def __bool__(self) -> bool:
        return bool(self.steps)

    @property
    def changes_live(self) -> bool:
        """Whether a run of it changes what the environment runs: it deploys, removes or restarts components."""
        return bool(self.deploys or self.removes or self.restarts)

    @property
    def rollback(self) -> bool:
        """Whether it puts back what ran before (``inv rollback``, the automatic rollback): its title says so
        (``rollback app → 3e2532eaf7e5``, ``automatic rollback: app``), as the history lists the run (and tells it:
        ``history.Record.rollback``)."""
        return self.title.startswith(("rollback ", "automatic rollback"))

    @property
    def goes_back(self) -> bool:
        """Whether it puts back only what ran before (a :attr:`rollback` to nothing :attr:`untried`): held up by none
        of the guards against bringing something new (a freeze, require_pushed, the import check)."""
        return self.rollback and not self.untried

    def __add__(self, other: Plan) -> Plan:
        return Plan(
            self.env,
            self.steps + other.steps,
            f"{self.title} + {other.title}",
            self.deploys + other.deploys,
            self.carried + other.carried,
            self.removes + other.removes,
            self.unpromoted + other.unpromoted,
            self.held + other.held,
            self.restarts + other.restarts,
            self.commits + tuple(c for c in other.commits if c not in self.commits),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "env": self.env,
            "title": self.title,
            "steps": [{"step": s.name, "describe": s.describe(), "inputs": s.inputs()} for s in self.steps],
            "deploys": [{"component": component, "sha": sha} for component, sha in self.deploys],
            "commits": commits_json(self.commits),  # [] when it takes none live, or is not told (a rollback)
        }


def commits_json(commits: Iterable[tuple[str, str, str]]) -> list[dict[str, str]]:
    """The commits a run takes live, as its JSON lists them: ``sha`` (12 characters), ``author``, ``subject``."""
    return [{"sha": sha[:12], "author": author, "subject": subject} for sha, author, subject in commits]


StepStatus = Literal["done", "skipped", "failed", "not run"]


@dataclass
class StepRecord:
    step: str
    description: str
    status: StepStatus
    seconds: float = 0.0
    detail: str = ""
    outputs: dict[str, str] = field(default_factory=dict)
    children: list[StepRecord] = field(default_factory=list)
    changes: list[str] = field(default_factory=list)  # what it changed, one line each (Outcome.changes)
    # failed, as a guard or bad input stopped it (exit 2: :func:`refusal`): it changed nothing (a group: its step that
    # refused changed nothing; its steps before may have)
    refused: bool = False
    # failed as a step beside it failed (:class:`HeldBack`): stopped short, not the run's failure
    held_back: bool = False
    # failed with an error deploykit did not judge (an AWS call's, raw until the executor translates it): a group
    # raises a judged one before it (Parallel.run); not kept in the history
    raw: bool = False


def step_json(record: StepRecord) -> dict[str, Any]:
    """A step's record as a run's ``--json`` lists it (its group's steps in ``children``); ``changes`` only when it
    says some."""
    data: dict[str, Any] = {
        "step": record.step,
        "description": record.description,
        "status": record.status,
        "seconds": round(record.seconds, 3),
        "detail": record.detail,
        "outputs": dict(record.outputs),
        "children": [step_json(child) for child in record.children],
    }
    data |= {"changes": list(record.changes)} if record.changes else {}
    return data | ({"refused": True} if record.refused else {}) | ({"held_back": True} if record.held_back else {})


def all_records(records: Iterable[StepRecord]) -> Iterator[StepRecord]:
    """``records`` and what their steps did, groups before their steps (a group's groups too)."""
    for record in records:
        yield record
        yield from all_records(record.children)


def not_run(step: Step) -> StepRecord:
    """The record of a step that never started: a group's lists its steps, none of them run either (so the history
    says which stacks a failed run never reached)."""
    children = [not_run(s) for s in step.steps] if isinstance(step, Parallel | Sequence) else []
    return StepRecord(step.name, step.describe(), "not run", children=children)


def record_of(step: Step, outcome: Outcome, seconds: float) -> StepRecord:
    """What ``step`` did, with what its own steps did when it is a group (a group's groups too)."""
    return StepRecord(
        step.name,
        step.describe(),
        outcome.status,
        seconds,
        outcome.detail,
        dict(outcome.outputs),
        list(outcome.children),
        list(outcome.changes),
    )


E = TypeVar("E", bound=BaseException)
T = TypeVar("T")


def carry(exc: E, children: list[StepRecord], outputs: Mapping[str, str]) -> E:
    """``exc``, which ends a group, carrying what the group's steps did (their records, their outputs) to the
    group's own record: what a run changed before it failed is what its automatic rollback puts back."""
    exc.deploykit_ran = (list(children), dict(outputs))  # type: ignore[attr-defined]
    return exc


def carried(exc: BaseException) -> tuple[list[StepRecord], dict[str, str]]:
    """What :func:`carry` gave ``exc`` (or the error it was translated from); nothing for another error."""
    for error in (exc, exc.__cause__):
        found = getattr(error, "deploykit_ran", None)
        if found is not None:
            return list(found[0]), dict(found[1])
    return [], {}


def failed_record(step: Step, exc: BaseException, seconds: float) -> StepRecord:
    """The record of ``step``, which failed with ``exc`` (what its own steps did, when it is a group); stopped by an
    interrupt (KeyboardInterrupt), it failed as "interrupted", as a step of the plan's own does."""
    detail = "interrupted" if isinstance(exc, KeyboardInterrupt) else said(exc)
    children, outputs = carried(exc)
    record = StepRecord(step.name, step.describe(), "failed", seconds, detail.splitlines()[0][:100], outputs, children)
    record.refused, record.held_back = refusal(exc), isinstance(exc, HeldBack)
    record.raw = not isinstance(exc, DeployKitError | KeyboardInterrupt | HeldBack)
    return record


class HeldBack(Exception):
    """A step, or a group's, stopped because a step beside it failed (:attr:`Context.failing`): what it would do next
    the run would put back (a canary's new version promoted, an app rolled out, then the automatic rollback), so it
    does not. Never the run's error: the failure beside it is."""


def held_back(ctx: Context, what: str) -> HeldBack | None:
    """:class:`HeldBack` saying ``what`` (what did not go on) when a step beside it failed, else None."""
    return HeldBack(f"{what}: a step beside it failed") if ctx.failing.is_set() else None


def refusal(exc: BaseException) -> bool:
    """Whether ``exc``, which ended a step, is a refusal: a guard or bad input (exit 2), the step changing nothing."""
    return isinstance(exc, DeployKitError) and exc.exit_code == UsageError.exit_code


def group_status(children: list[StepRecord]) -> Literal["done", "skipped"]:
    """A group changed something when one of its steps did."""
    return "done" if any(c.status == "done" for c in children) else "skipped"


@dataclass(frozen=True)
class Sequence(Step):
    """Steps that must run one after the other, as one unit (for instance inside a Parallel group)."""

    name: ClassVar[str] = "sequence"
    label: str
    steps: tuple[Step, ...]

    def describe(self) -> str:
        return f"{self.label}: " + " → ".join(s.name for s in self.steps)

    def run(self, ctx: Context) -> Outcome:
        children: list[StepRecord] = []
        outputs: dict[str, str] = {}
        for index, step in enumerate(self.steps):
            if ctx.stop.is_set():  # interrupted while running beside other steps: the next one is not started
                raise carry(KeyboardInterrupt(), children + [not_run(later) for later in self.steps[index:]], outputs)
            held = None if step.finishes_the_one_before else held_back(ctx, f"{self.label}: {step.name} not started")
            if held is not None:  # a step beside it failed: nothing further that the rollback would put back
                raise carry(held, children + [not_run(later) for later in self.steps[index:]], outputs)
            t0 = ctx.clock.monotonic()
            ctx.start_early(step, self.steps[index + 1 :])
            try:
                outcome = step.run(ctx)
            except BaseException as exc:  # what ran before it (and what did not, after it) goes to the sequence's
                # record; an interrupt's too, so the history says which steps of the group ran
                children.append(failed_record(step, exc, ctx.clock.monotonic() - t0))
                children += [not_run(later) for later in self.steps[index + 1 :]]
                carry(exc, children, {**outputs, **carried(exc)[1]})
                raise
            outputs.update(outcome.outputs)
            children.append(record_of(step, outcome, ctx.clock.monotonic() - t0))
        detail = f"{self.label}: " + "; ".join(c.detail for c in children)
        return Outcome(group_status(children), detail, outputs, tuple(children))


@dataclass(frozen=True)
class Parallel(Step):
    """Independent steps run at the same time. It fails when one of them fails, once all have ended."""

    name: ClassVar[str] = "parallel"
    heading: ClassVar[str] = "side by side"  # what the plan's row of the group says before its steps' names
    steps: tuple[Step, ...]

    def describe(self) -> str:
        return " ‖ ".join(f"{s.name}: {s.describe()}" for s in self.steps)

    def needs(self, ctx: Context | None = None) -> Mapping[int, Iterable[int]]:
        """Which of the group's steps (by place) each one waits for: it starts once they have all finished, and not
        at all when one of them failed or was not run, or when any step of the group failed meanwhile (as the CDK
        CLI's concurrent deploys stop starting stacks). None here: the group's steps are independent, and all start
        at once. ``ctx``: the run's, to read what is live with; None for an estimate (no call is made then)."""
        return {}

    def interrupted(self) -> str:
        return (
            "the steps running beside it stopped at their next safe point (a wait at its next poll: what "
            "CloudFormation or ECS had started goes on by itself; a canary took itself back), and none was started "
            "after it"
        )

    def inputs(self) -> dict[str, Any]:
        return {"steps": [{"step": s.name, "inputs": s.inputs()} for s in self.steps]}

    def run(self, ctx: Context) -> Outcome:
        ended: dict[int, tuple[Outcome | BaseException, float]] = {}  # by the step's place; none: it never started
        needs = {index: tuple(needed) for index, needed in self.needs(ctx).items()}
        settled = [threading.Event() for _ in self.steps]  # set once the step has ended, or will never start
        failed = threading.Event()  # a step of the group failed: one still waiting for others is not started

        def timed(index: int, step: Step) -> None:
            try:
                for needed in needs.get(index, ()):
                    settled[needed].wait()
                if ctx.stop.is_set():  # interrupted before its turn came (Ctrl-C as the group started): not started
                    return
                if needs.get(index) and failed.is_set():
                    return  # it waited, and meanwhile a step of the group failed: the run stops starting steps
                if any(not isinstance(ended.get(needed, (None,))[0], Outcome) for needed in needs.get(index, ())):
                    return  # what it waited for failed, or never started: not started either
                t0 = ctx.clock.monotonic()
                try:
                    ended[index] = step.run(ctx), ctx.clock.monotonic() - t0
                except BaseException as exc:  # reported below, once every sibling has ended (an interrupt's stop too)
                    ended[index] = exc, ctx.clock.monotonic() - t0
                    failed.set()
                    if ctx.holds_back and not isinstance(exc, KeyboardInterrupt | HeldBack):
                        # the run fails (a refusal too: after what changed beside it, it fails the run, and its
                        # automatic rollback puts that back): the steps still running beside it go no further
                        ctx.failing.set()
            finally:
                settled[index].set()

        with ThreadPoolExecutor(max_workers=max(1, len(self.steps)), thread_name_prefix="parallel") as pool:
            try:
                for future in [pool.submit(timed, index, step) for index, step in enumerate(self.steps)]:
                    future.result()
            except BaseException as exc:  # an interrupt: the steps still running stop at their next safe point
                ctx.stop.set()
                pool.shutdown(wait=True)  # each has ended then: what it did goes to the group's record
                raise carry(exc, *self._records(ended)) from None
        children, outputs = self._records(ended)
        failures = [
            (s, r)
            for i, s in enumerate(self.steps)
            if i in ended
            and isinstance(r := ended[i][0], BaseException)
            and not isinstance(r, KeyboardInterrupt | HeldBack)
        ]
        held = [r for r, _ in ended.values() if isinstance(r, HeldBack)]
        # a failure before a refusal, whatever their order: the group's refusal (exit 2, "nothing changed") would hide
        # what the failed sibling changed, and the automatic rollback would not follow; and deploykit's own verdict (a
        # canary that failed, a smoke) before an AWS call's failure (still raw here: the executor translates it), which
        # says nothing of the release
        failures.sort(key=lambda failure: (refusal(failure[1]), not isinstance(failure[1], DeployKitError)))
        for step, error in failures[1:]:
            ctx.reporter.line(
                f"🛑 {step.name} refused too: {error}" if refusal(error) else f"❌ {step.name} failed too: {error}"
            )
        unstarted = ctx.stop.is_set() and len(ended) < len(self.steps)  # not the ones a failure held back
        if unstarted or any(isinstance(r, KeyboardInterrupt) for r, _ in ended.values()):
            # stopped by the interrupt of a group around this one: said as one, with what each step did
            raise carry(KeyboardInterrupt(), children, outputs)
        for stopped in held:
            if not getattr(stopped, "told", False):  # once, by the innermost group
                ctx.reporter.line(f"⏹  {stopped}")
                stopped.told = True  # type: ignore[attr-defined]
        if failures:
            raise carry(failures[0][1], children, outputs)
        if held:  # a step beside this group failed: the group stopped with its own steps
            raise carry(held[0], children, outputs)
        done = sum(1 for c in children if c.status == "done")
        return Outcome(group_status(children), f"{done} of {len(children)} changed", outputs, tuple(children))

    def _records(
        self, ended: Mapping[int, tuple[Outcome | BaseException, float]]
    ) -> tuple[list[StepRecord], dict[str, str]]:
        """The records of the group's steps once each has ended (not run: one that never started) and their
        outputs (what a group among them did before it failed, too)."""
        children: list[StepRecord] = []
        outputs: dict[str, str] = {}
        for index, step in enumerate(self.steps):
            if index not in ended:
                children.append(not_run(step))
                continue
            result, seconds = ended[index]
            if isinstance(result, BaseException):
                children.append(failed_record(step, result, seconds))
                outputs.update(carried(result)[1])
                continue
            outputs.update(result.outputs)
            children.append(record_of(step, result, seconds))
        return children, outputs


@dataclass
class RunReport:
    plan: Plan
    records: list[StepRecord]
    seconds: float
    error: DeployKitError | None = None
    rollback: RunReport | None = None  # the automatic rollback that followed this failed run, if one ran
    # when this run's first step that changes what is live began (None: none did), which Context.changing_since
    # keeps for the first run of a command alone (an automatic rollback after it has its own)
    changing_since: datetime | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def changed_live(self) -> bool:
        """Whether a step of the run that changes what the environment runs (:attr:`~Step.changes_what_runs`, not
        :attr:`~Step.artifacts_only`) was done: a step of a group counts on its own."""

        def done(step: Step, record: StepRecord) -> bool:
            if is_group(step) and record.children:
                return any(done(s, r) for s, r in zip(step.steps, record.children, strict=False))  # type: ignore[attr-defined]
            return record.status == "done" and any(
                leaf.changes_what_runs and not leaf.artifacts_only for leaf in leaves(step)
            )

        return any(done(step, record) for step, record in zip(self.plan.steps, self.records, strict=False))

    def outputs(self) -> dict[str, str]:
        merged: dict[str, str] = {}
        for record in self.records:
            merged.update(record.outputs)
        return merged

    def table(self) -> str:
        icons = {"done": "✅ done", "skipped": "⏭  skipped", "failed": "❌ failed", "not run": "·  not run"}
        rows = []

        def add(record: StepRecord, depth: int) -> None:  # a group's steps under it (a group's groups too, "· ↳")
            name = nested_name(record.step, depth)
            seconds = f"{record.seconds:.1f}s" if record.status != "not run" else ""
            result = "🛑 refused" if record.refused else "⏹  held back" if record.held_back else icons[record.status]
            rows.append([name, result, seconds, " ".join(record.detail.splitlines())])  # one line: as checks.table
            for child in record.children:
                add(child, depth + 1)

        for r in self.records:
            add(r, 0)
        total = "ok" if self.error is None else "REFUSED" if refusal(self.error) else "FAILED"
        rows.append(["total", total, f"{self.seconds:.1f}s", ""])
        return tabulate(rows, headers=["step", "result", "time", "detail"], tablefmt="simple")

    def to_json(self) -> dict[str, Any]:
        return {
            "env": self.plan.env,
            "title": self.plan.title,
            "ok": self.ok,
            "seconds": round(self.seconds, 3),
            "steps": [step_json(r) for r in self.records],
            "outputs": self.outputs(),
            "error": None if self.error is None else error_json(self.error),
        } | (
            ({"rollback": self.rollback.to_json()} if self.rollback is not None else {})
            | ({"held": list(self.plan.held)} if self.plan.held else {})
            | ({"commits": commits_json(self.plan.commits)} if self.plan.commits else {})
        )


class Executor:
    """Runs a plan step by step; the first failure stops it and the rest are reported as not run.

    With plugins loaded it calls the deployment hooks (started, step finished, finished or failed); a plugin
    whose hook raises is reported by name and never fails the deployment.
    """

    def __init__(
        self,
        ctx: Context,
        translate: Callable[[Exception], DeployKitError | None] = lambda _exc: None,
        *,
        tell_end: bool = True,
    ) -> None:
        self.ctx = ctx
        self.translate = translate
        self._held: list[tuple[str, dict[str, Any]]] | None = None  # notifications held back until the gate
        # False: how the run ended is told by tell_end, once its caller has settled it (a lock found lost after the
        # last step fails a run that worked; what was put back, or how to: commands.recover), so that the plugins
        # say what the command says
        self.tell_end = tell_end
        self._untold: RunReport | None = None

    def execute(self, plan: Plan) -> RunReport:
        clock, out = self.ctx.clock, self.ctx.reporter
        start = clock.monotonic()
        self.ctx.failing.clear()  # the run before (the deploy an automatic rollback follows) failed, not this one
        self.ctx.holds_back = not plan.rollback
        records = [not_run(s) for s in plan.steps]
        error: DeployKitError | None = None
        changing: datetime | None = None  # when this run began changing what is live (RunReport.changing_since)
        count = sum(1 for _depth, step in walk(plan.steps) if not is_group(step))  # as the plan numbers them
        out.line(f"🚀 {plan.title} → {plan.env} ({count} step{'s' if count != 1 else ''})")
        # behind a gate, the plugins hear of the run once it is passed: a run the gate stops (to start again) is not
        # theirs to tell, only the run that goes on is
        self._held = [] if self.ctx.gate is not None else None
        stopped_at_gate = False
        preflown = False  # the later steps' preflights, checked before the first step that changes what is live
        # (or, when that one makes their inputs too, the first after it)
        checked: set[int] = set()  # the steps whose preflights were checked before the first step (_at_start)
        self._notify("deploykit_deployment_started", env=plan.env, plan=plan.to_json())
        index = 0
        try:
            for index, step in enumerate(plan.steps):
                record = records[index]
                if step.skippable and index and all(r.status == "skipped" for r in records[:index]):
                    record.status, record.detail = "skipped", NOT_RUN_NOTHING_CHANGED
                    self._step_finished(plan, record)
                    continue
                if index == 0:
                    try:
                        checked = self._at_start(plan)
                    except DeployKitError as exc:  # before the run's first step: nothing made, nothing changed
                        error = exc
                        out.line(f"⏹  {exc.message}")
                        break
                if self.ctx.gate is not None and not all_artifacts(step):
                    gate, self.ctx.gate = self.ctx.gate, None
                    try:
                        gate()
                    except DeployKitError as exc:  # before the step: it is not run, nor is the run told to plugins
                        error, stopped_at_gate = exc, True
                        out.line(f"⏹  {exc.message}")
                        break
                    self._release()
                if not preflown and not all_artifacts(step):
                    try:
                        preflown = self._preflight(plan, index, checked)
                    except DeployKitError as exc:  # before the step: what it and the steps after it change, unchanged
                        error = exc
                        out.line(f"⏹  {exc.message}")
                        break
                if self.ctx.holding is not None and not all_artifacts(step):
                    try:
                        self.ctx.holding()
                    except DeployKitError as exc:  # before the step: it is not run
                        error = exc
                        out.line(f"⏹  {exc.message}")
                        break
                if changing is None and not all_artifacts(step):
                    changing = clock.now()
                    self.ctx.changing_since = self.ctx.changing_since or changing
                out.line(f"▶ {step.name}: {group_heading(step) if is_group(step) else record.description}")
                t0 = clock.monotonic()
                self.ctx.start_early(
                    step, itertools.takewhile(lambda later: not later.skippable, plan.steps[index + 1 :])
                )
                try:
                    with out.activity(step.name):
                        try:
                            outcome = step.run(self.ctx)
                        except DeployKitError:
                            raise
                        except Exception as raw:
                            translated = self.translate(raw)
                            if translated is None:
                                raise
                            raise translated from raw
                except DeployKitError as exc:
                    record.status, record.detail = "failed", exc.message.splitlines()[0][:100]
                    record.children, record.outputs = carried(exc)  # a group's: what its steps did before
                    record.seconds, record.refused = clock.monotonic() - t0, refusal(exc)
                    error = exc
                    ended = f"🛑 {step.name} refused" if record.refused else f"❌ {step.name} failed"
                    out.line(f"{ended} after {record.seconds:.1f}s")
                    self._step_finished(plan, record)
                    break
                except KeyboardInterrupt as stopped:  # Ctrl-C, or SIGTERM turned into one by the task
                    record.status, record.detail = "failed", "interrupted"
                    record.children, record.outputs = carried(stopped)  # a group's: what each of its steps did
                    record.seconds = clock.monotonic() - t0
                    error = interruption(plan, index, step)
                    out.line(f"⚠️  {step.name} interrupted after {record.seconds:.1f}s")
                    self._step_finished(plan, record)
                    break
                record = records[index] = record_of(step, outcome, clock.monotonic() - t0)  # as a group's steps are
                mark = "✅" if outcome.status == "done" else "⏭ "
                out.line(f"{mark} {step.name} {outcome.status} in {record.seconds:.1f}s: {outcome.detail}")
                self._step_finished(plan, record)
        except KeyboardInterrupt:
            # between two steps (a plugin told of the last one, a check before the next): the run stops as in a step,
            # with a report, its record and its automatic rollback, never as an escape
            step = plan.steps[index]
            error = interruption(plan, index, step)
            out.line(f"⚠️  interrupted at {step.name}")
        report = RunReport(plan, records, clock.monotonic() - start, error, changing_since=changing)
        if error is not None and error.exit_code == UsageError.exit_code and report.changed_live:
            # refused by a step after others changed what runs (a plugin's review of a later stack): not "nothing
            # changed" (exit 2) but a run that failed part way (exit 1), as its table shows; settled before the
            # plugins and the history hear of it; its "nothing was changed" is the refusing step's alone
            error.exit_code = StepFailed.exit_code
            error.message += " (by this step: the steps before it changed what runs, as the table shows)"
        out.line()
        out.line(report.table())
        if report.ok and records and all(r.status == "skipped" for r in records):
            out.line(f"✅ nothing to do: everything {plan.title} would change is already in place")
        if stopped_at_gate:  # untold: the plugins hear of the run that starts again
            self._held = None
            return report
        try:
            self._release()  # a run that never reached its gate (artifacts only, or failed before it) is told whole
            self._untold = report
            if self.tell_end:
                self._tell(report)
        except KeyboardInterrupt:  # the run has ended: it is recorded, and put back when it failed, as it ended (a
            # plugin's hook cut short by Ctrl-C, a CI job's SIGTERM, must not leave it unrecorded)
            out.line(
                "⚠️  interrupted while the plugins heard how the run ended (some may not have): the run "
                f"{'failed' if error else 'worked'}, and ends as it did"
            )
        return report

    def tell_ended(self) -> None:
        """Tell the plugins how the run :meth:`execute` kept untold (``tell_end=False``) ended, its report and error
        as they stand now; once (nothing when it was told)."""
        report = self._untold
        if report is None:
            return
        try:
            self._tell(report)
        except KeyboardInterrupt:  # as in execute: the run has ended, and ends as it did
            self.ctx.reporter.line(
                "⚠️  interrupted while the plugins heard how the run ended (some may not have): the run "
                f"{'failed' if report.error else 'worked'}, and ends as it did"
            )

    def _tell(self, report: RunReport) -> None:
        """deploykit_deployment_finished, or _failed with its error: once, however it ends."""
        self._untold = None
        if report.error is None:
            self._notify("deploykit_deployment_finished", env=report.plan.env, report=report.to_json())
        else:
            self._notify(
                "deploykit_deployment_failed", env=report.plan.env, report=report.to_json(), error=str(report.error)
            )

    def _step_finished(self, plan: Plan, record: StepRecord) -> None:
        self._notify(
            "deploykit_step_finished",
            env=plan.env,
            step=record.step,
            status=record.status,
            seconds=record.seconds,
            detail=record.detail,
            refused=record.refused,
        )

    def _at_start(self, plan: Plan) -> set[int]:
        """Before the plan's first step, when it only makes artifacts (a build, a package) and no step of the plan
        makes the others' inputs: the preflights of the steps that need nothing the run makes
        (:attr:`Step.preflight_at_start`), all at once, the first refusal raised. A name the alarm watch cannot find
        is then refused before the build, not after it and the push. The ids of the steps checked, which
        :meth:`_preflight` does not check again."""
        if not all_artifacts(plan.steps[0]) or any(leaf.makes_inputs for s in plan.steps for leaf in leaves(s)):
            return set()  # checked before the first change, as every preflight is (_preflight)
        chosen = {id(leaf) for s in plan.steps for leaf in leaves(s) if leaf.preflight_at_start and has_preflight(leaf)}
        self._checked(plan, 0, chosen)
        return chosen

    def _preflight(self, plan: Plan, first: int, checked: set[int]) -> bool:
        """Before ``plan.steps[first]``, a step that changes what is live: the preflights (:meth:`Step.preflight`)
        of the steps from it on, all at once, the first refusal (in the plan's order) raised. Not the step's own when
        it is one step (it checks before it changes anything); a group's each (its steps run on when one is
        refused); not those ``checked`` before the run's first step (:meth:`_at_start`). False, checking none, while a
        step that makes their inputs is still to run (a synthesis beside the registry stack's first deploy): the
        executor asks again before the next step."""
        later = [leaf for step in plan.steps[first:] for leaf in leaves(step)]
        if any(leaf.makes_inputs for leaf in later):
            return False
        chosen = {
            id(leaf)
            for position in range(first, len(plan.steps))
            for leaf in leaves(plan.steps[position])
            if has_preflight(leaf) and (position > first or is_group(plan.steps[position])) and id(leaf) not in checked
        }
        self._checked(plan, first, chosen)
        return True

    def _checked(self, plan: Plan, first: int, chosen: set[int]) -> None:
        """The preflights of the steps ``chosen`` (by id) from ``plan.steps[first]`` on, each given the steps that
        run before its own (not beside it), all at once; the first refusal (in the plan's order) raised, any other
        error passed over (the step meets it when it runs)."""
        checks: list[Future[None]] = []
        before: list[Step] = [leaf for step in plan.steps[:first] for leaf in leaves(step)]
        for step in plan.steps[first:]:
            for leaf in leaves(step):
                if id(leaf) in chosen:
                    checks.append(in_background(partial(leaf.preflight, self.ctx, tuple(before)), "preflight"))
            before += leaves(step)
        for check in checks:
            try:
                check.result()
            except UsageError:
                raise
            except Exception:  # a read that failed: the step meets it when it runs
                continue

    def _release(self) -> None:
        """Tell the plugins what was held back until the gate was passed, in order."""
        held, self._held = self._held, None
        for hook_name, kwargs in held or ():
            self._notify(hook_name, **kwargs)

    def _notify(self, hook_name: str, **kwargs: Any) -> None:
        """Call every plugin's ``hook_name`` on its own, so one that raises is named and the others still run."""
        if self._held is not None:
            self._held.append((hook_name, kwargs))
            return
        observe(self.ctx.plugins, hook_name, self.ctx.reporter.line, **kwargs)


# the detail of a verifying step the executor did not run: nothing changed before it (no time of its own: left out of
# the history's estimates, deploykit.history.estimates)
NOT_RUN_NOTHING_CHANGED = "nothing changed before it (inv smoke checks anyway)"


def interruption(plan: Plan, index: int, step: Step) -> Interrupted:
    """The error of a plan stopped by an interrupt during ``step``: what it left in progress, and what to run. The
    steps before and after it are counted as the plan numbers them: a group's own steps, not the group."""
    done = counted([leaf.name for prior in plan.steps[:index] for leaf in leaves(prior)])
    before = f"the steps before it ({done}) are done and stay; " if done else ""
    later = sum(1 for following in plan.steps[index + 1 :] for _ in leaves(following))
    # not deploy.auto after a rollback: it would deploy again what the rollback takes off
    again = "the same command again" + ("" if plan.rollback else f" (or inv deploy.auto --env {plan.env})")
    return Interrupted(
        f"interrupted during {step.name} ({step.describe()}): {step.interrupted()}; {before}"
        f"{later} later step(s) not run",
        next_step=f"run {again}: every step skips what is already in place, so it converges; inv health --env "
        f"{plan.env} shows what is live now",
    )


def nested_name(name: str, depth: int) -> str:
    """A step's name in a table that lists a group's steps under it: ``↳`` under a group, ``· ↳`` under a group's
    group (as the run's table and the plan's show them)."""
    return f"{'· ' * (depth - 1)}↳ {name}" if depth else name


def walk(steps: Iterable[Step], depth: int = 0) -> Iterator[tuple[int, Step]]:
    """Each step of a plan with its depth, in the order they start: a group (Parallel, Sequence), then its steps."""
    for step in steps:
        yield depth, step
        if isinstance(step, Parallel | Sequence):
            yield from walk(step.steps, depth + 1)


def has_preflight(step: Step) -> bool:
    """Whether ``step`` checks anything before the run (its class has a :meth:`Step.preflight` of its own)."""
    return type(step).preflight is not Step.preflight


def is_group(step: Step) -> bool:
    return isinstance(step, Parallel | Sequence)


def all_artifacts(step: Step) -> bool:
    """Whether ``step`` (each step of a group) only makes artifacts, changing nothing that is live."""
    return all(leaf.artifacts_only for leaf in leaves(step))


def leaves(step: Step) -> Iterator[Step]:
    """The steps that do the work of ``step``: itself, or a group's, at any depth."""
    if isinstance(step, Parallel | Sequence):
        for member in step.steps:
            yield from leaves(member)
    else:
        yield step


def first_steps(step: Step) -> Iterator[Step]:
    """The steps that start when ``step`` starts: itself; a sequence's first; each of a parallel group's."""
    if isinstance(step, Sequence):
        if step.steps:
            yield from first_steps(step.steps[0])
    elif isinstance(step, Parallel):
        for member in step.steps:
            yield from first_steps(member)
    else:
        yield step


def in_background(read: Callable[[], T], name: str) -> Future[T]:
    """``read`` started in a thread of its own, which ends with it; what it returns or raises, in the future (its
    failure raised to whoever takes the result). Nothing waits for it: a run that no longer needs it lets it end."""
    future: Future[T] = Future()

    def settle() -> None:
        try:
            future.set_result(read())
        except BaseException as exc:
            future.set_exception(exc)

    threading.Thread(target=settle, name=name, daemon=True).start()
    return future


def counted(names: list[str]) -> str:
    """``names`` in order, each once, with how many times when more than once: "upload-lambda ×2, build"."""
    times = {name: names.count(name) for name in names}
    return ", ".join(f"{name} ×{n}" if n > 1 else name for name, n in times.items())


def group_heading(step: Step) -> str:
    """What a group's row in a plan says (its steps are the rows under it)."""
    if isinstance(step, Parallel):
        return f"{step.heading}: " + counted([s.label if isinstance(s, Sequence) else s.name for s in step.steps])
    assert isinstance(step, Sequence)
    return f"{step.label}: one after the other"


def describe_plan(plan: Plan) -> str:
    """The plan as people read it; what ``--dry-run`` prints: every step numbered, a group's steps under it (its
    row says what runs side by side, or one after the other). Runs nothing."""
    if not plan.steps:
        return f"Nothing to do for {plan.title} → {plan.env}."
    rows: list[list[Any]] = []
    number = 0
    for depth, step in walk(plan.steps):
        if is_group(step):
            rows.append(["", nested_name(step.name, depth), group_heading(step)])
        else:
            number += 1
            rows.append([number, nested_name(step.name, depth), step.describe()])
    head = f"Plan for {plan.title} → {plan.env} (dry run: nothing is changed)"
    return head + "\n" + tabulate(rows, headers=["#", "step", "what it would do"], tablefmt="simple")


def error_json(error: DeployKitError) -> dict[str, Any]:
    """A run's ``error`` in ``--json``, and what a command refused before it has a plan prints with ``--json``."""
    return {"message": error.message, "next_step": error.next_step, "exit_code": error.exit_code}


def _jsonable(value: Any) -> Any:
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    if isinstance(value, tuple | list):
        return [_jsonable(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    return str(value)


def dumps(data: Any) -> str:
    return json.dumps(data, indent=2, sort_keys=False, default=str)
