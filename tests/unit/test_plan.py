"""The executor: timing, skipping, stopping at the first failure, summary and JSON; dry runs."""

from __future__ import annotations

import dataclasses
import io
import json
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, ClassVar
from unittest.mock import Mock

import pytest
from botocore.exceptions import ClientError

from deploykit.aws import AwsFactory
from deploykit.clock import FakeClock
from deploykit.config import Config
from deploykit.errors import DeployKitError, Interrupted, StepFailed, UsageError
from deploykit.output import Reporter
from deploykit.plan import (
    Context,
    Executor,
    Outcome,
    Parallel,
    Plan,
    Sequence,
    Step,
    all_records,
    describe_plan,
    step_json,
)


@dataclass(frozen=True)
class Sleep(Step):
    name: ClassVar[str] = "sleep"
    seconds: float
    skip: bool = False

    def describe(self) -> str:
        return f"sleep {self.seconds}s"

    def run(self, ctx: Context) -> Outcome:
        ctx.clock.sleep(self.seconds)
        return Outcome.skipped("nothing to do") if self.skip else Outcome.done("slept", slept=str(self.seconds))


@dataclass(frozen=True)
class Boom(Step):
    name: ClassVar[str] = "boom"
    error: Exception

    def describe(self) -> str:
        return "fail"

    def run(self, ctx: Context) -> Outcome:
        raise self.error


def make_ctx(clock: FakeClock, stream: io.StringIO) -> Context:
    docker_factory = Mock(side_effect=AssertionError("no step here uses Docker"))
    return Context(
        Mock(spec=Config),
        Mock(),
        Mock(spec=AwsFactory),
        clock,
        Reporter(stream, tty=False, clock=clock),
        docker_factory,
    )


def test_steps_are_timed_and_summarised() -> None:
    clock, out = FakeClock(), io.StringIO()
    plan = Plan("sandbox", (Sleep(2.0), Sleep(0.5, skip=True)), "demo")
    report = Executor(make_ctx(clock, out)).execute(plan)
    assert report.ok
    assert [(r.status, r.seconds) for r in report.records] == [("done", 2.0), ("skipped", 0.5)]
    assert report.seconds == 2.5
    assert report.outputs() == {"slept": "2.0"}
    text = out.getvalue()
    assert "▶ sleep: sleep 2.0s" in text and "total" in text and "2.5s" in text
    assert "✅ nothing to do" not in text


@dataclass(frozen=True)
class Build(Sleep):
    name: ClassVar[str] = "build"
    artifacts_only: ClassVar[bool] = True


def test_each_run_says_when_it_began_changing_what_runs_the_context_the_first_runs() -> None:
    clock = FakeClock()
    ctx = make_ctx(clock, io.StringIO())
    began = clock.now()
    report = Executor(ctx).execute(Plan("sandbox", (Build(2.0), Sleep(1.0)), "demo"))
    assert report.changing_since == began + timedelta(seconds=2) == ctx.changing_since
    undo = Executor(ctx).execute(Plan("sandbox", (Sleep(1.0),), "automatic rollback: demo"))
    assert undo.changing_since == began + timedelta(seconds=3) and ctx.changing_since == report.changing_since
    assert Executor(ctx).execute(Plan("sandbox", (Build(1.0),), "demo")).changing_since is None


def test_a_plan_whose_steps_all_skip_says_there_was_nothing_to_do() -> None:
    out = io.StringIO()
    Executor(make_ctx(FakeClock(), out)).execute(Plan("sandbox", (Sleep(0.1, skip=True),), "deploy.full"))
    assert "✅ nothing to do: everything deploy.full would change is already in place" in out.getvalue()


def test_first_failure_stops_the_plan_and_is_reported() -> None:
    clock, out = FakeClock(), io.StringIO()
    plan = Plan("sandbox", (Sleep(1.0), Boom(StepFailed("it broke", "fix it")), Sleep(1.0)), "demo")
    report = Executor(make_ctx(clock, out)).execute(plan)
    assert not report.ok and isinstance(report.error, StepFailed)
    assert [r.status for r in report.records] == ["done", "failed", "not run"]
    data = report.to_json()
    assert data["ok"] is False and data["error"] == {
        "message": "it broke",
        "next_step": "fix it",
        "exit_code": 1,
    }
    json.dumps(data)  # serialisable


def test_usage_errors_keep_exit_code_2() -> None:
    report = Executor(make_ctx(FakeClock(), io.StringIO())).execute(Plan("sandbox", (Boom(UsageError("bad input")),)))
    assert report.error is not None and report.error.exit_code == 2


def test_a_step_that_refused_is_shown_and_recorded_as_refused_where_one_that_broke_failed() -> None:
    from deploykit.history import record_of

    out = io.StringIO()
    refusing = Parallel((Sleep(1.0), Sequence("stacks", (Boom(UsageError("would delete the table")),))))
    report = Executor(make_ctx(FakeClock(), out)).execute(Plan("sandbox", (refusing, Sleep(1.0)), "demo"))
    text = out.getvalue()
    assert "🛑 parallel refused after 1.0s" in text and "failed after" not in text
    rows = [line.split() for line in text.splitlines() if line.startswith(("parallel", "↳", "·", "total"))]
    assert [row[:3] for row in rows[-5:]] == [
        ["parallel", "🛑", "refused"],
        ["↳", "sleep", "✅"],
        ["↳", "sequence", "🛑"],
        ["·", "↳", "boom"],
        ["total", "FAILED", "1.0s"],  # the run: the sleep beside the refusal changed what runs (exit 1)
    ]
    assert report.error is not None and report.error.exit_code == 1
    assert "🛑 refused" in next(line for line in text.splitlines() if "↳ boom" in line)
    assert [r.status for r in report.records] == ["failed", "not run"]  # a failure still, for what reads statuses
    steps = report.to_json()["steps"]
    assert steps[0]["refused"] is True and steps[0]["children"][1]["children"][0]["refused"] is True
    assert "refused" not in steps[0]["children"][0] and "refused" not in steps[1]
    recorded = record_of(report, components={}, base={}, head="0" * 40, who="ana").steps
    assert [(s["step"], s.get("refused", False)) for s in recorded] == [
        ("parallel", True),
        ("sleep", False),
        ("sequence", True),
        ("boom", True),
        ("sleep", False),
    ]

    out = io.StringIO()
    Executor(make_ctx(FakeClock(), out)).execute(Plan("sandbox", (Boom(UsageError("bad input")),), "demo"))
    assert "🛑 boom refused after 0.0s" in out.getvalue() and re.search(r"total +REFUSED", out.getvalue())
    out = io.StringIO()
    Executor(make_ctx(FakeClock(), out)).execute(Plan("sandbox", (Boom(StepFailed("it broke")),), "demo"))
    assert "❌ boom failed after 0.0s" in out.getvalue() and "❌ failed" in out.getvalue()
    assert re.search(r"total +FAILED", out.getvalue()) and "refused" not in out.getvalue()


def test_unknown_exceptions_go_through_the_translator() -> None:
    throttled = ClientError({"Error": {"Code": "Throttling", "Message": "slow down"}}, "DescribeServices")

    def translate(exc: Exception) -> DeployKitError | None:
        return StepFailed(f"translated {type(exc).__name__}") if isinstance(exc, ClientError) else None

    report = Executor(make_ctx(FakeClock(), io.StringIO()), translate).execute(Plan("x", (Boom(throttled),)))
    assert report.error is not None and report.error.message == "translated ClientError"
    with pytest.raises(ZeroDivisionError):
        Executor(make_ctx(FakeClock(), io.StringIO()), translate).execute(Plan("x", (Boom(ZeroDivisionError()),)))


def test_dry_run_describes_every_step_and_runs_none() -> None:
    plan = Plan("sandbox", (Sleep(1.0), Boom(RuntimeError("must not run"))), "demo")
    text = describe_plan(plan)
    assert "dry run" in text and "sleep 1.0s" in text and "fail" in text
    assert plan.to_json()["steps"][0] == {
        "step": "sleep",
        "describe": "sleep 1.0s",
        "inputs": {"seconds": 1.0, "skip": False},
    }
    assert "Nothing to do" in describe_plan(Plan("sandbox", ()))


def test_a_dry_run_lists_a_groups_steps_under_it() -> None:
    from deploykit.plan import Parallel, Sequence

    image = Sequence("image", (Sleep(1.0), Sleep(2.0)))
    plan = Plan("sandbox", (Parallel((image, Sleep(3.0), Sleep(3.5))), Sleep(4.0)), "demo")
    rows = [re.split(r"\s{2,}", line.strip()) for line in describe_plan(plan).splitlines()[3:]]
    assert rows == [
        ["parallel", "side by side: image, sleep ×2"],
        ["↳ sequence", "image: one after the other"],
        ["1", "· ↳ sleep", "sleep 1.0s"],
        ["2", "· ↳ sleep", "sleep 2.0s"],
        ["3", "↳ sleep", "sleep 3.0s"],
        ["4", "↳ sleep", "sleep 3.5s"],
        ["5", "sleep", "sleep 4.0s"],
    ]


def test_parallel_steps_run_together_and_are_listed_under_their_group() -> None:
    import threading

    from deploykit.plan import Parallel

    barrier = threading.Barrier(2, timeout=5)  # both must be running at once, or this times out

    @dataclass(frozen=True)
    class Meet(Step):
        name: ClassVar[str] = "meet"
        who: str

        def describe(self) -> str:
            return self.who

        def run(self, ctx: Context) -> Outcome:
            barrier.wait()
            return Outcome.done(f"{self.who} met", **{self.who: "yes"})

    out = io.StringIO()
    report = Executor(make_ctx(FakeClock(), out)).execute(Plan("x", (Parallel((Meet("a"), Meet("b"))),)))
    assert report.ok and report.outputs() == {"a": "yes", "b": "yes"}
    assert [c.detail for c in report.records[0].children] == ["a met", "b met"]
    assert "↳ meet" in report.table()
    # the run counts its steps as the plan numbers them, and names what goes side by side
    assert "(2 steps)" in out.getvalue() and "▶ parallel: side by side: meet ×2\n" in out.getvalue()


def test_a_groups_groups_are_listed_under_it_in_the_table_and_in_the_history_record() -> None:
    """A sequence inside a parallel group (the image built while the CDK app synthesizes): its steps are shown and
    recorded too, each under its own group, so their times reach the estimates and inv report."""
    from deploykit import history
    from deploykit.plan import Parallel
    from deploykit.plan import Sequence as StepSequence

    inner = StepSequence("image", (Sleep(0.0, skip=True), Sleep(0.0)))
    report = Executor(make_ctx(FakeClock(), io.StringIO())).execute(Plan("x", (Parallel((Sleep(0.0), inner)),)))
    assert report.ok
    rows = report.table().splitlines()[2:-1]
    assert [row.split("  ")[0] for row in rows] == ["parallel", "↳ sleep", "↳ sequence", "· ↳ sleep", "· ↳ sleep"]
    record = history.record_of(report, components={}, base={}, head="h")
    assert [(s["step"], s["status"], s.get("in")) for s in record.steps] == [
        ("parallel", "done", None),
        ("sleep", "done", "parallel"),
        ("sequence", "done", "parallel"),
        ("sleep", "skipped", "sequence"),
        ("sleep", "done", "sequence"),
    ]


def test_a_failing_parallel_step_fails_the_group_after_its_siblings_end() -> None:
    from deploykit.plan import Parallel

    clock, out = FakeClock(), io.StringIO()
    report = Executor(make_ctx(clock, out)).execute(
        Plan("x", (Parallel((Boom(StepFailed("left broke")), Sleep(2.0))),))
    )
    assert isinstance(report.error, StepFailed) and report.error.message == "left broke"
    assert report.records[0].status == "failed"


def test_a_sibling_s_verdict_heads_the_group_s_failure_before_an_aws_call_that_failed_beside_it() -> None:
    """One function's canary split was throttled, the other's canary failed: the message led with the throttle (the
    first in the group's order), the bad release a "failed too" line."""
    from botocore.exceptions import ClientError

    from deploykit.plan import Parallel

    throttled = ClientError({"Error": {"Code": "Throttling", "Message": "Rate exceeded"}}, "UpdateAlias")
    verdict = StepFailed("the canary of login_handler failed: version 3 answered 10 requests, 10 errors")
    clock, out = FakeClock(), io.StringIO()
    translate = lambda exc: StepFailed(f"AWS said: {exc}")  # noqa: E731 - the executor's, as commands give it
    report = Executor(make_ctx(clock, out), translate).execute(Plan("x", (Parallel((Boom(throttled), Boom(verdict))),)))
    assert report.error is verdict
    assert "❌ boom failed too: An error occurred (Throttling)" in out.getvalue()


def test_a_sibling_s_failure_is_the_group_s_whatever_refused_before_it_in_the_plan() -> None:
    """Two stacks of one level: the first's change set refused by a guard (exit 2, nothing changed), the second's
    update failed. The group raised the first, and the run counted as refused: no automatic rollback, and the
    record said nothing changed. A step's SystemExit (a plugin's) was no failure at all: the group passed and smoke
    ran; it goes on up as a step's own does."""
    from deploykit.plan import Parallel

    clock, out = FakeClock(), io.StringIO()
    refused = UsageError("refusing to deploy CarRentalFargateStack: its change set replaces the table")
    report = Executor(make_ctx(clock, out)).execute(
        Plan(
            "x",
            (
                Parallel(
                    (Boom(refused), Boom(StepFailed("CarRentalApiStack: UPDATE_ROLLBACK_COMPLETE"))),
                ),
            ),
        )
    )
    assert isinstance(report.error, StepFailed) and report.error.exit_code == 1
    assert "🛑 boom refused too: refusing to deploy CarRentalFargateStack" in out.getvalue()

    with pytest.raises(SystemExit):
        Executor(make_ctx(clock, io.StringIO())).execute(Plan("x", (Parallel((Sleep(1.0), Boom(SystemExit(3)))),)))


def test_an_interrupt_between_two_steps_ends_the_run_with_its_report() -> None:
    """Ctrl-C while nothing runs a step (a check before the next one, a plugin told of the last one) escaped the
    executor: no report, so no history record and no automatic rollback of what the steps before had changed."""
    clock, out = FakeClock(), io.StringIO()
    ctx = make_ctx(clock, out)
    checks: list[int] = []

    def holding() -> None:
        checks.append(1)
        if len(checks) == 2:
            raise KeyboardInterrupt

    ctx.holding = holding
    report = Executor(ctx).execute(Plan("x", (Sleep(1.0), Sleep(2.0), Sleep(3.0))))
    assert isinstance(report.error, Interrupted) and report.error.exit_code == 130
    assert [r.status for r in report.records] == ["done", "not run", "not run"]
    assert "⚠️  interrupted at sleep" in out.getvalue()


@dataclass(frozen=True)
class Waiting(Parallel):
    """A group whose steps wait for the ones ``after`` names (by place), as the stacks of the team's own do."""

    after: tuple[tuple[int, ...], ...] = ()

    def needs(self, ctx: Context | None = None) -> dict[int, tuple[int, ...]]:
        return dict(enumerate(self.after))


@dataclass(frozen=True)
class Logged(Step):
    name: ClassVar[str] = "logged"
    who: str
    log: list[str] = field(compare=False, hash=False)
    barrier: threading.Barrier | None = field(default=None, compare=False, hash=False)

    def describe(self) -> str:
        return self.who

    def run(self, ctx: Context) -> Outcome:
        self.log.append(f"{self.who} starts")
        if self.barrier:
            self.barrier.wait()
        self.log.append(f"{self.who} ends")
        return Outcome.done(self.who)


def test_a_step_of_a_group_that_needs_another_starts_once_it_ends_and_the_others_go_side_by_side() -> None:
    log: list[str] = []
    meet = threading.Barrier(2, timeout=5)  # a and c must be running at once, or this times out
    group = Waiting((Logged("a", log, meet), Logged("b", log), Logged("c", log, meet)), after=((), (0,), ()))
    report = Executor(make_ctx(FakeClock(), io.StringIO())).execute(Plan("x", (group,)))
    assert report.ok and [c.detail for c in report.records[0].children] == ["a", "b", "c"]
    assert log.index("b starts") > log.index("a ends"), log


def test_a_step_whose_needed_step_failed_is_not_run_and_the_group_fails_with_that_failure() -> None:
    log: list[str] = []
    group = Waiting((Boom(StepFailed("a broke")), Logged("b", log), Logged("c", log)), after=((), (0,), ()))
    report = Executor(make_ctx(FakeClock(), io.StringIO())).execute(Plan("x", (group,)))
    assert isinstance(report.error, StepFailed) and report.error.message == "a broke"
    assert [c.status for c in report.records[0].children] == ["failed", "not run", "done"]
    assert log == ["c starts", "c ends"]


def test_a_step_still_waiting_when_another_step_of_its_group_fails_is_not_started() -> None:
    """b does not depend on a, but by the time c (which waits for b) could start, a has failed: the run stops
    starting steps, as the CDK CLI's concurrent deploys do; b, already running, ends."""
    log: list[str] = []
    a_failed = threading.Event()

    @dataclass(frozen=True)
    class Fails(Step):
        name: ClassVar[str] = "fails"

        def describe(self) -> str:
            return "a"

        def run(self, ctx: Context) -> Outcome:
            a_failed.set()
            raise StepFailed("a broke")

    @dataclass(frozen=True)
    class AfterA(Logged):
        def run(self, ctx: Context) -> Outcome:
            assert a_failed.wait(5)
            time.sleep(0.05)  # a's failure is recorded as it raises
            return super().run(ctx)

    group = Waiting((Fails(), AfterA("b", log), Logged("c", log)), after=((), (), (1,)))
    report = Executor(make_ctx(FakeClock(), io.StringIO())).execute(Plan("x", (group,)))
    assert isinstance(report.error, StepFailed) and report.error.message == "a broke"
    assert [c.status for c in report.records[0].children] == ["failed", "done", "not run"]
    assert log == ["b starts", "b ends"]


@dataclass(frozen=True)
class Verify(Step):
    name: ClassVar[str] = "verify"
    verifies: ClassVar[bool] = True

    def describe(self) -> str:
        return "verify"

    def run(self, ctx: Context) -> Outcome:
        ctx.clock.sleep(1.0)
        return Outcome.done("verified")


def test_a_verifying_step_runs_after_a_change_and_is_skipped_when_nothing_changed() -> None:
    clock, out = FakeClock(), io.StringIO()
    changed = Executor(make_ctx(clock, out)).execute(Plan("sandbox", (Sleep(1.0, skip=True), Sleep(1.0), Verify())))
    assert [r.status for r in changed.records] == ["skipped", "done", "done"]
    unchanged = Executor(make_ctx(clock, out)).execute(Plan("sandbox", (Sleep(1.0, skip=True), Verify()), "demo"))
    assert [r.status for r in unchanged.records] == ["skipped", "skipped"]
    assert unchanged.records[1].detail == "nothing changed before it (inv smoke checks anyway)"
    assert unchanged.seconds == 1.0
    assert "✅ nothing to do" in out.getvalue()
    alone = Executor(make_ctx(clock, out)).execute(Plan("sandbox", (Verify(),)))
    assert [r.status for r in alone.records] == ["done"]


@dataclass(frozen=True)
class VerifyAlways(Verify):
    @property
    def skippable(self) -> bool:
        return False


def test_a_verifying_step_that_is_not_skippable_runs_even_when_nothing_changed() -> None:
    """deploy.auto's smoke: the results were in place (a stack finished after an interrupt) but never verified."""
    clock, out = FakeClock(), io.StringIO()
    report = Executor(make_ctx(clock, out)).execute(Plan("sandbox", (Sleep(1.0, skip=True), VerifyAlways())))
    assert [r.status for r in report.records] == ["skipped", "done"]


@dataclass(frozen=True)
class Interrupt(Step):
    name: ClassVar[str] = "roll"

    def describe(self) -> str:
        return "roll the service"

    def interrupted(self) -> str:
        return "ECS goes on rolling on its own"

    def run(self, ctx: Context) -> Outcome:
        ctx.clock.sleep(0.5)
        raise KeyboardInterrupt


def test_an_interrupt_stops_the_plan_cleanly_and_says_what_was_left_in_progress() -> None:
    from deploykit.errors import Interrupted

    clock, out = FakeClock(), io.StringIO()
    report = Executor(make_ctx(clock, out)).execute(Plan("dev", (Sleep(1.0), Interrupt(), Sleep(1.0)), "demo"))
    assert isinstance(report.error, Interrupted) and report.error.exit_code == 130
    assert [(r.step, r.status) for r in report.records] == [("sleep", "done"), ("roll", "failed"), ("sleep", "not run")]
    assert report.records[1].detail == "interrupted"
    assert report.error.message == (
        "interrupted during roll (roll the service): ECS goes on rolling on its own; "
        "the steps before it (sleep) are done and stay; 1 later step(s) not run"
    )
    assert report.error.next_step is not None and "run the same command again" in report.error.next_step
    assert "⚠️  roll interrupted after 0.5s" in out.getvalue()


def test_an_interrupt_names_the_steps_of_the_groups_before_and_after_it() -> None:
    """As the plan numbers them: it said "the steps before it (parallel)", and counted a group as one later step."""
    clock, out = FakeClock(), io.StringIO()
    before = Parallel((Sleep(1.0), Sleep(1.0), Sequence("image", (Sleep(0.5), Verify()))))
    plan = Plan("dev", (before, Interrupt(), Sequence("after", (Sleep(1.0), Sleep(1.0)))), "demo")
    report = Executor(make_ctx(clock, out)).execute(plan)
    assert report.error is not None
    assert "the steps before it (sleep ×3, verify) are done and stay; 2 later step(s) not run" in report.error.message


def test_an_interrupt_during_a_parallel_group_stops_each_sequence_before_its_next_step() -> None:
    """Ctrl-C reaches the main thread while siblings run in workers: they finish the step they are in (none is cut
    halfway) and start no other; a step that watches ``ctx.stop`` (the canary) can end sooner."""
    import signal
    import threading

    from deploykit.errors import Interrupted
    from deploykit.plan import Parallel, Sequence

    started = threading.Event()
    ran: list[str] = []
    main = threading.main_thread().ident
    assert main is not None and signal.getsignal(signal.SIGINT) is signal.default_int_handler

    @dataclass(frozen=True)
    class Watch(Step):
        name: ClassVar[str] = "watch"

        def describe(self) -> str:
            return "watch until stopped"

        def run(self, ctx: Context) -> Outcome:
            started.set()
            assert ctx.stop.wait(timeout=5), "the group never said stop"
            ran.append("watch")
            return Outcome.done("stopped")

    @dataclass(frozen=True)
    class After(Step):
        name: ClassVar[str] = "after"

        def describe(self) -> str:
            return "must not start"

        def run(self, ctx: Context) -> Outcome:
            ran.append("after")
            return Outcome.done("started anyway")

    @dataclass(frozen=True)
    class CtrlC(Step):
        name: ClassVar[str] = "ctrl-c"

        def describe(self) -> str:
            return "the user presses Ctrl-C"

        def run(self, ctx: Context) -> Outcome:
            assert started.wait(timeout=5)
            signal.pthread_kill(main, signal.SIGINT)  # as a terminal does: to the main thread, which waits on the group
            return Outcome.done("pressed")

    out = io.StringIO()
    group = Parallel((Sequence("lambda a", (Watch(), After())), CtrlC()))
    report = Executor(make_ctx(FakeClock(), out)).execute(Plan("dev", (group, Sleep(1.0)), "demo"))
    assert isinstance(report.error, Interrupted)
    assert ran == ["watch"]
    assert [(r.step, r.status) for r in report.records] == [("parallel", "failed"), ("sleep", "not run")]
    # what each step of the group did is its record's: it listed none ("which of them ran is not known here")
    assert [(r.step, r.status, r.detail) for r in all_records(report.records[0].children)] == [
        ("sequence", "failed", "interrupted"),
        ("watch", "done", "stopped"),
        ("after", "not run", ""),
        ("ctrl-c", "done", "pressed"),
    ]


@dataclass(frozen=True)
class Baking(Step):
    """Runs until a step beside it has ended (as a canary bakes), then is done; what ``started`` says it began."""

    name: ClassVar[str] = "bake"
    started: threading.Event
    beside: threading.Event

    def describe(self) -> str:
        return "bake while the step beside it runs"

    def run(self, ctx: Context) -> Outcome:
        self.started.set()
        assert self.beside.wait(timeout=5), "the step beside it never ended"
        return Outcome.done("baked")


@dataclass(frozen=True)
class Promote(Step):
    name: ClassVar[str] = "promote"
    ran: list[str]

    def describe(self) -> str:
        return "what the rollback would put back"

    def run(self, ctx: Context) -> Outcome:
        self.ran.append("promote")
        return Outcome.done("promoted")


@dataclass(frozen=True)
class EndsBeside(Step):
    """Fails (or is refused) once the step beside it has begun, and says it ended."""

    name: ClassVar[str] = "canary"
    error: Exception
    started: threading.Event
    ended: threading.Event

    def describe(self) -> str:
        return "a canary that fails"

    def run(self, ctx: Context) -> Outcome:
        assert self.started.wait(timeout=5)
        try:
            raise self.error
        finally:
            self.ended.set()


def test_a_failure_beside_a_sequence_holds_back_its_next_steps_and_the_next_run_goes_on() -> None:
    """Two functions' fast paths side by side: one canary fails while the other bakes. The other's move-alias gave
    its version every request, for the automatic rollback to put it back (and, that rollback failing, to leave it
    serving, never verified): it is not started now, said, and the run fails with the failure beside it. The next
    run on the same context (the automatic rollback's) is not held back."""
    started, ended, ran, out = threading.Event(), threading.Event(), [], io.StringIO()
    fails = StepFailed("the canary of login_handler failed")
    group = Parallel(
        (
            Sequence("lambda health_handler", (Baking(started, ended), Promote(ran))),
            EndsBeside(fails, started, ended),
        )
    )
    ctx = make_ctx(FakeClock(), out)
    report = Executor(ctx).execute(Plan("dev", (group, Sleep(1.0)), "demo"))
    assert report.error is fails and ran == []
    assert "⏹  lambda health_handler: promote not started: a step beside it failed" in out.getvalue()
    assert [(r.step, r.status, r.detail) for r in all_records(report.records[0].children)] == [
        ("sequence", "failed", "lambda health_handler: promote not started: a step beside it failed"),
        ("bake", "done", "baked"),
        ("promote", "not run", ""),
        ("canary", "failed", "the canary of login_handler failed"),
    ]
    assert "⏹  held back" in report.table().splitlines()[3]  # the sequence's row, under its group's
    assert step_json(report.records[0].children[0])["held_back"] is True
    assert "held_back" not in step_json(report.records[0].children[1])
    again = Executor(ctx).execute(Plan("dev", (Sequence("lambda health_handler", (Promote(ran),)),), "rollback"))
    assert again.ok and ran == ["promote"]


def test_a_group_whose_only_stop_is_a_step_held_back_is_held_back_too() -> None:
    """The held-back sequence inside a group of its own, beside the failing canary: that group stopped with it (held
    back, once said), not "done" while its step says held back."""
    started, ended, ran, out = threading.Event(), threading.Event(), [], io.StringIO()
    fails = StepFailed("the canary of login_handler failed")
    inner = Parallel((Sequence("lambda health_handler", (Baking(started, ended), Promote(ran))),))
    ctx = make_ctx(FakeClock(), out)
    report = Executor(ctx).execute(Plan("dev", (Parallel((inner, EndsBeside(fails, started, ended))),), "demo"))
    assert report.error is fails and ran == []
    [group] = report.records[0].children[:1]
    assert (group.step, group.status, group.held_back) == ("parallel", "failed", True)
    assert out.getvalue().count("⏹  lambda health_handler: promote not started") == 1


def test_a_rollbacks_failure_holds_back_nothing_beside_it() -> None:
    """A whole run's rollback puts the app and its functions back side by side: one function's move refused held
    the app's roll-service back, and no automatic rollback follows a rollback; the app stayed on the release being
    rolled back. Beside a failure in a rollback, each part still puts back what it can."""
    started, ended, ran = threading.Event(), threading.Event(), []
    fails = StepFailed("AWS throttled UpdateAlias")
    group = Parallel((Sequence("app", (Baking(started, ended), Promote(ran))), EndsBeside(fails, started, ended)))
    report = Executor(make_ctx(FakeClock(), io.StringIO())).execute(Plan("dev", (group,), "rollback run 20261207T1"))
    assert report.error is fails and ran == ["promote"]


def test_a_refusal_beside_a_sequence_holds_it_back_too() -> None:
    """A refusal beside steps that changed what runs fails the run all the same (exit 1, the automatic rollback):
    what runs beside it goes no further either, and the run ends with the refusal (an interrupt stops them in its
    own way: ctx.stop)."""
    started, ended, ran = threading.Event(), threading.Event(), []
    refused = UsageError("refusing: bad input")
    group = Parallel((Sequence("app", (Baking(started, ended), Promote(ran))), EndsBeside(refused, started, ended)))
    report = Executor(make_ctx(FakeClock(), io.StringIO())).execute(Plan("dev", (group,), "demo"))
    assert report.error is refused and ran == []


@dataclass(frozen=True)
class StackDeploy(Step):
    """Named as the real step, described as it is (the stack first), so the history tells the stacks apart."""

    name: ClassVar[str] = "deploy-stack"
    stack: str

    def describe(self) -> str:
        return f"{self.stack}: change set from {self.stack}.template.json"

    def run(self, ctx: Context) -> Outcome:
        return Outcome.done(f"{self.stack}: updated in 0.1s")


def test_steps_a_failed_run_never_started_are_recorded_not_run_each_so_their_stacks_count_as_untouched() -> None:
    """A group the run never reached lists its steps, not run; so does a sequence after its failed step. The history
    names each not-run stack deploy by its stack, and deploy.auto does not count those stacks as left changed by
    the failed run."""
    from deploykit import auto, history
    from deploykit.plan import Parallel
    from deploykit.plan import Sequence as StepSequence

    first = Parallel((StackDeploy("DataStack"), StepSequence("cdk", (Boom(StepFailed("no")), StackDeploy("Auth")))))
    later = Parallel((StackDeploy("FargateStack"), StackDeploy("ApiStack")))
    report = Executor(make_ctx(FakeClock(), io.StringIO())).execute(Plan("x", (first, later, Sleep(0.0))))
    assert not report.ok
    statuses = [(r.step, r.status) for r in all_records(report.records)]
    assert statuses == [
        ("parallel", "failed"),
        ("deploy-stack", "done"),
        ("sequence", "failed"),
        ("boom", "failed"),
        ("deploy-stack", "not run"),  # after the failed step of its sequence
        ("parallel", "not run"),
        ("deploy-stack", "not run"),
        ("deploy-stack", "not run"),
        ("sleep", "not run"),
    ]
    assert "·  not run" in report.table().splitlines()[-3]  # the later group's steps listed under it
    roles = {"data": "DataStack", "auth": "Auth", "fargate": "FargateStack", "api": "ApiStack"}
    components = {f"stack:{role}": "b" * 12 for role in roles}
    record = history.record_of(report, components=components, base={}, head="b" * 12)
    assert [history.step_name(s) for s in record.steps if s["status"] == "not run"][:3] == [
        "deploy-stack:Auth",
        "parallel",
        "deploy-stack:FargateStack",
    ]
    live = {component: "a" * 12 for component in components}
    assert list(auto.left_by_failed_runs([record], live, roles)) == ["stack:data"]  # the one it did deploy


@dataclass(frozen=True)
class Artifact(Step):
    """A step that makes an artifact only (a push, an upload), and notes which early reads began while it ran."""

    name: ClassVar[str] = "artifact"
    artifacts_only: ClassVar[bool] = True
    started: threading.Event = field(compare=False)
    seen: list[bool] = field(compare=False)
    wait: float = field(default=5, compare=False)  # for the reads to begin: not as long where they must not

    def describe(self) -> str:
        return "make an artifact"

    def run(self, ctx: Context) -> Outcome:
        self.seen.append(self.started.wait(self.wait))  # the next step's early reads begin while this one runs
        return Outcome.done("made")


@dataclass(frozen=True)
class Changes(Artifact):
    """The same, but it changes what is live (a stack deploy): nothing may be read meanwhile for the next step."""

    name: ClassVar[str] = "changes"
    artifacts_only: ClassVar[bool] = False

    def run(self, ctx: Context) -> Outcome:
        self.seen.append(self.started.wait(0.3))
        return Outcome.done("changed")


@dataclass(frozen=True)
class Reader(Step):
    """A step whose first read (of what is live) may go early; it says whether it got it from the early read."""

    name: ClassVar[str] = "reader"
    started: threading.Event = field(compare=False)
    error: Exception | None = field(default=None, compare=False)
    reads: list[str] = field(default_factory=list, compare=False)  # one per read

    def describe(self) -> str:
        return "read what is live, then act"

    def early(self, ctx: Context) -> Callable[[], Any] | None:
        return self._read

    def _read(self) -> str:
        self.reads.append("read")
        self.started.set()
        if self.error is not None:
            raise self.error
        return "live"

    def run(self, ctx: Context) -> Outcome:
        early = ctx.early_reads(self)
        return Outcome.done("read early" if early is not None else f"read now: {self._read()}")


def test_a_steps_first_reads_go_while_the_step_before_makes_an_artifact() -> None:
    """Reads of what is live a step starts with run while the step before it only makes an artifact (the image
    built and pushed, a zip uploaded): at the top of a plan, in a sequence, into a parallel group's sequences."""
    for shape in ("top", "sequence", "parallel"):
        started, seen = threading.Event(), []
        reader = Reader(started)
        after: Step = {"top": reader, "sequence": reader, "parallel": Parallel((Sequence("fn", (reader,)),))}[shape]
        steps: tuple[Step, ...] = (Artifact(started, seen), after)
        if shape == "sequence":
            steps = (Sequence("chain", steps),)
        report = Executor(make_ctx(FakeClock(), io.StringIO())).execute(Plan("dev", steps))
        assert report.ok and seen == [True], shape
        assert [r.detail for r in all_records(report.records) if r.step == "reader"] == ["read early"], shape


def test_a_steps_first_reads_go_while_every_step_before_it_back_to_the_running_one_makes_an_artifact() -> None:
    """Two steps that make artifacts (the image's build, its push), then the reader (register-taskdef): its reads
    start while the first runs, and once (the second does not start them again); at the top of a plan and in a
    sequence."""
    for shape in ("top", "sequence"):
        started, seen = threading.Event(), []
        reader = Reader(started)
        steps: tuple[Step, ...] = (Artifact(started, seen), Artifact(started, []), reader)
        if shape == "sequence":
            steps = (Sequence("chain", steps),)
        report = Executor(make_ctx(FakeClock(), io.StringIO())).execute(Plan("dev", steps))
        assert report.ok and seen == [True], shape
        assert [r.detail for r in all_records(report.records) if r.step == "reader"] == ["read early"], shape
        assert reader.reads == ["read"], shape

    started, seen = threading.Event(), []  # not across a step that changes what is live
    steps = (Artifact(started, seen, wait=0.3), Sleep(0), Reader(started))
    report = Executor(make_ctx(FakeClock(), io.StringIO())).execute(Plan("dev", steps))
    assert report.ok and seen == [False] and report.records[2].detail == "read now: live"


@dataclass(frozen=True)
class Publish(Artifact):
    """A step that leaves an artifact in the environment (an image's push): the refusals of the steps after it
    first."""

    name: ClassVar[str] = "publish"
    published: list[str] = field(compare=False, default_factory=list)

    def run(self, ctx: Context) -> Outcome:
        ctx.refuse_ahead()
        self.published.append("image")
        return Outcome.done("published")


@dataclass(frozen=True)
class Refuser(Reader):
    """A reader (register-taskdef) that refuses what its reads found missing, when it runs and ahead of it."""

    name: ClassVar[str] = "refuser"
    found: str = field(compare=False, default="live")

    def _read(self) -> str:
        super()._read()
        return self.found

    def refuse_early(self, ctx: Context, found: Any) -> None:
        if found == "missing":
            raise UsageError("its secret does not exist. Nothing was changed", "create it")

    def run(self, ctx: Context) -> Outcome:
        found = ctx.early_reads(self) or self._read()
        self.refuse_early(ctx, found)
        return Outcome.done(f"registered ({found})")


def test_a_step_that_publishes_an_artifact_first_raises_what_a_later_step_would_refuse_by_its_early_reads() -> None:
    """The push asks ahead (Context.refuse_ahead): a revision register-taskdef would refuse by what it read early
    (a missing secret) refuses the push, which leaves nothing behind (exit 2: nothing changed); what it would not
    refuse lets the push go on; a read that failed raises nothing ahead, the step raises it itself."""
    started = threading.Event()
    started.set()
    publish = Publish(started, [])
    report = Executor(make_ctx(FakeClock(), io.StringIO())).execute(
        Plan("dev", (Artifact(started, []), publish, Refuser(threading.Event(), found="missing")))
    )
    assert report.error is not None and report.error.exit_code == 2 and publish.published == []
    assert report.error.message == "refused ahead by refuser: its secret does not exist. Nothing was changed"
    assert [r.status for r in report.records] == ["done", "failed", "not run"]

    for refuser, status, detail in (
        (Refuser(threading.Event()), "done", "registered (live)"),
        (Refuser(threading.Event(), StepFailed("the service is gone")), "failed", "the service is gone"),
    ):
        publish = Publish(started, [])
        report = Executor(make_ctx(FakeClock(), io.StringIO())).execute(Plan("dev", (publish, refuser)))
        assert publish.published == ["image"]
        assert [(r.step, r.status, r.detail) for r in report.records][1] == ("refuser", status, detail)


@dataclass(frozen=True)
class Checked(Sleep):
    """A step that changes what is live (a stack deploy) and checks ahead what it would refuse (Step.preflight):
    ``refusal``, raised there; each check noted in ``asked`` with the names of the steps before it."""

    name: ClassVar[str] = "checked"
    label: str = ""
    refusal: Exception | None = field(default=None, compare=False)
    asked: list[tuple[str, tuple[str, ...]]] = field(default_factory=list, compare=False)

    def preflight(self, ctx: Context, before: tuple[Step, ...]) -> None:
        self.asked.append((self.label, tuple(getattr(s, "label", s.name) for s in before)))
        if self.refusal is not None:
            raise self.refusal

    def run(self, ctx: Context) -> Outcome:
        if isinstance(self.refusal, UsageError):  # its own check, before it changes anything
            raise self.refusal
        return super().run(ctx)


@dataclass(frozen=True)
class Inputs(Sleep):
    """A step that writes what later steps check (a synthesis)."""

    name: ClassVar[str] = "inputs"
    artifacts_only: ClassVar[bool] = True
    makes_inputs: ClassVar[bool] = True


def test_a_later_steps_refusal_is_checked_before_the_run_changes_anything() -> None:
    """Before the first step that changes what is live: the preflights of the steps after it (not its own, when it
    is one step: it checks before it changes anything; each of a group's), with the steps before each; the first
    refusal ends the run there (exit 2, nothing changed). Another error is passed over (the step meets it); none is
    checked while a step that makes their inputs (a synthesis) is still to run, but before the step after it."""
    asked: list[tuple[str, tuple[str, ...]]] = []
    refused = UsageError("the Fargate stack names a missing secret. Nothing was changed")
    data, fargate = Checked(1, label="data", asked=asked), Checked(1, label="fargate", refusal=refused, asked=asked)
    api = Checked(1, label="api", refusal=RuntimeError("throttled"), asked=asked)
    plan = Plan("dev", (Inputs(0), data, Parallel((fargate, api)), Sleep(0)))
    out = io.StringIO()
    report = Executor(make_ctx(FakeClock(), out)).execute(plan)
    assert report.error is refused and report.error.exit_code == 2 and not report.changed_live
    assert [r.status for r in report.records] == ["done", "not run", "not run", "not run"]
    assert sorted(asked) == [("api", ("inputs", "data")), ("fargate", ("inputs", "data"))]
    assert "⏹  the Fargate stack names a missing secret" in out.getvalue()

    asked.clear()
    report = Executor(make_ctx(FakeClock(), io.StringIO())).execute(Plan("dev", (Parallel((fargate, api)),)))
    assert report.error is refused and sorted(asked) == [("api", ()), ("fargate", ())]  # a group's each

    asked.clear()
    report = Executor(make_ctx(FakeClock(), io.StringIO())).execute(Plan("dev", (data, api, Sleep(0))))
    assert report.ok and asked == [("api", ("data",))]  # its error passed over

    asked.clear()  # the synthesis runs beside the first stack: checked once it is done, before the next step
    auth = Checked(1, label="auth", asked=asked)
    report = Executor(make_ctx(FakeClock(), io.StringIO())).execute(
        Plan("dev", (Sequence("cdk", (Inputs(0), data)), auth, fargate))
    )
    assert asked == [("fargate", ("inputs", "data", "auth"))]
    assert report.error is refused and [r.status for r in report.records] == ["done", "not run", "not run"]
    assert report.changed_live and report.error.exit_code == 1  # the stack beside the synthesis was deployed


@dataclass(frozen=True)
class Built(Sleep):
    """A step that makes an artifact only (a build)."""

    name: ClassVar[str] = "built"
    artifacts_only: ClassVar[bool] = True


@dataclass(frozen=True)
class Watches(Checked):
    """A step whose check needs nothing the run makes (the alarm watch: names read from CloudWatch)."""

    name: ClassVar[str] = "watches"
    preflight_at_start: ClassVar[bool] = True
    changes_what_runs: ClassVar[bool] = False


def test_a_check_that_needs_nothing_the_run_makes_is_made_before_its_first_step() -> None:
    """A step whose preflight needs nothing the run makes (Step.preflight_at_start) is checked before the build, not
    after it: refused then, nothing was built; passed, it is not checked again before the first change. With a step
    that makes the others' inputs (a synthesis) in the plan, or a first step that changes what is live, it is checked
    before the first change, as every other."""
    asked: list[tuple[str, tuple[str, ...]]] = []
    refused = UsageError("CloudWatch has no alarm named car-rental-typo")
    watch = Watches(0, label="watch", refusal=refused, asked=asked)
    out = io.StringIO()
    report = Executor(make_ctx(FakeClock(), out)).execute(Plan("dev", (Built(1), Sleep(1), watch)))
    assert report.error is refused and report.error.exit_code == 2
    assert [r.status for r in report.records] == ["not run"] * 3 and asked == [("watch", ("built", "sleep"))]
    assert "⏹  CloudWatch has no alarm named car-rental-typo" in out.getvalue()

    asked.clear()
    watch = Watches(0, label="watch", asked=asked)
    later = Checked(1, label="later", asked=asked)
    report = Executor(make_ctx(FakeClock(), io.StringIO())).execute(Plan("dev", (Built(1), Sleep(1), later, watch)))
    assert report.ok and asked == [("watch", ("built", "sleep", "later")), ("later", ("built", "sleep"))]

    for plan in (Plan("dev", (Inputs(0), Sleep(1), watch)), Plan("dev", (Sleep(1), Built(1), watch))):
        asked.clear()
        report = Executor(make_ctx(FakeClock(), io.StringIO())).execute(plan)
        assert report.ok and asked == [("watch", tuple(getattr(s, "label", s.name) for s in plan.steps[:2]))]


def test_nothing_is_read_early_while_the_step_before_changes_what_is_live() -> None:
    """After a step that changes the environment (a stack deploy), the next step reads when it runs: what it reads
    may be what that step changed."""
    started, seen = threading.Event(), []
    report = Executor(make_ctx(FakeClock(), io.StringIO())).execute(
        Plan("dev", (Changes(started, seen), Reader(started)))
    )
    assert report.ok and seen == [False]
    assert report.records[1].detail == "read now: live"


def test_an_early_read_that_failed_fails_its_step_as_its_own_read_would() -> None:
    started, seen = threading.Event(), []
    report = Executor(make_ctx(FakeClock(), io.StringIO())).execute(
        Plan("dev", (Artifact(started, seen), Reader(started, StepFailed("the service is gone"))))
    )
    assert not report.ok and report.error is not None and report.error.message == "the service is gone"
    assert [(r.step, r.status) for r in report.records] == [("artifact", "done"), ("reader", "failed")]


def test_the_gate_is_passed_once_before_the_first_step_that_changes_what_is_live() -> None:
    """Artifacts first (a group of them too), then the gate, once, then every other step; a gate that fails stops
    the run there: the changing step and those after it are not run."""
    started, seen = threading.Event(), []
    started.set()
    steps: tuple[Step, ...] = (
        Artifact(started, seen),
        Parallel((Artifact(started, seen), Artifact(started, seen))),
        Sleep(1),
        Sleep(2),
    )
    passed: list[int] = []
    ctx = make_ctx(FakeClock(), io.StringIO())
    ctx.gate = lambda: passed.append(len(seen))
    report = Executor(ctx).execute(Plan("dev", steps))
    assert report.ok and passed == [3] and ctx.gate is None

    out = io.StringIO()
    ctx = make_ctx(FakeClock(), out)

    def stale() -> None:
        raise UsageError("what is live changed", next_step="rerun")

    ctx.gate = stale
    report = Executor(ctx).execute(Plan("dev", (Artifact(started, seen), Sleep(1), Sleep(2))))
    assert report.error is not None and report.error.message == "what is live changed"
    assert [r.status for r in report.records] == ["done", "not run", "not run"]
    assert "⏹  what is live changed" in out.getvalue()


@dataclass(frozen=True)
class Change(Step):
    name: ClassVar[str] = "change"

    def describe(self) -> str:
        return "change two values"

    def run(self, ctx: Context) -> Outcome:
        return Outcome("done", "changed", {}, changes=("A: x: 1 → 2", "B: y: added 3"))


def test_what_a_step_changed_is_in_its_record_and_the_runs_json_only_when_it_says_some() -> None:
    report = Executor(make_ctx(FakeClock(), io.StringIO())).execute(
        Plan("x", (Parallel((Change(), Sleep(0.1))), Sleep(0.2), Change()))
    )
    assert report.records[0].children[0].changes == ["A: x: 1 → 2", "B: y: added 3"]  # a group's step
    assert report.records[2].changes == ["A: x: 1 → 2", "B: y: added 3"]  # a step of the plan itself
    steps = report.to_json()["steps"]
    group, sleep, _change = steps
    assert group["children"][0]["changes"] == ["A: x: 1 → 2", "B: y: added 3"]
    assert "changes" not in group and "changes" not in sleep and "changes" not in group["children"][1]
    assert list(sleep) == ["step", "description", "status", "seconds", "detail", "outputs", "children"]
    assert json.loads(json.dumps(report.to_json()))["steps"] == steps  # plain JSON


def test_the_commits_a_plan_takes_live_are_in_its_json_its_report_and_its_history_record_capped() -> None:
    from deploykit import history
    from deploykit.plan import RunReport

    many = tuple((f"{i:012x}" + "0" * 28, "ana", f"Fix {i}") for i in range(history.RECORDED_COMMITS + 5))
    plan = Plan("dev", (), "deploy.auto", deploys=(("app", "a" * 12),), commits=many[:2])
    assert plan.to_json()["commits"] == [
        {"sha": f"{0:012x}", "author": "ana", "subject": "Fix 0"},
        {"sha": f"{1:012x}", "author": "ana", "subject": "Fix 1"},
    ]
    assert (
        Plan("dev", (), "deploy.stack data").to_json()["commits"] == []
    )  # always there: a plugin reads plan["commits"]
    both = plan + Plan("dev", (), "more", commits=many[1:3])
    assert both.commits == many[:3]  # each commit once
    report = RunReport(dataclasses.replace(plan, commits=many), [], 1.0, None)
    assert len(report.to_json()["commits"]) == len(many)
    record = history.record_of(report, components={"app": "a" * 12}, base={"app": None}, head="a" * 12)
    assert len(record.commits) == history.RECORDED_COMMITS and record.commits[0]["subject"] == "Fix 0"
    again = history.Record.from_json(json.loads(json.dumps(record.to_json())))
    assert again.commits == record.commits
    older = history.Record.from_json({k: v for k, v in record.to_json().items() if k != "commits"})
    assert older.commits == []  # a record written before commits were kept
