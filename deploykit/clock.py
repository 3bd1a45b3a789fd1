"""Time, injectable: every wait in deploykit takes a Clock so tests never sleep."""

from __future__ import annotations

import contextlib
import re
import signal
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol


class Clock(Protocol):
    def monotonic(self) -> float: ...

    def sleep(self, seconds: float) -> None: ...

    def now(self) -> datetime: ...


_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smh]?)")
_UNIT = {"": 1, "s": 1, "m": 60, "h": 3600}
LONGEST = 366 * 86400.0  # no wait, watch or timeout deploykit takes is longer than a year (8784h)


def seconds_of(text: str) -> float | None:
    """``300``, ``90s``, ``5m`` or ``1h`` → seconds; None for anything else, and for more than a year (LONGEST:
    ``99999999h`` is a typo, and 400 digits would be infinite)."""
    found = _DURATION.fullmatch(text.strip())
    seconds = None if found is None else float(found[1]) * _UNIT[found[2]]
    return seconds if seconds is not None and seconds <= LONGEST else None


_SPAN = re.compile(r"(\d+(?:\.\d+)?)([smhd])")
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def moment_of(text: str, now: datetime, *, ahead: bool) -> datetime | None:
    """A time given on the command line: a span from ``now``, later (``ahead``) or earlier (``90s``, ``10m``, ``2h``,
    ``1d``), or an ISO 8601 time (``2026-12-02T08:00Z``; UTC when it names no zone); None for anything else."""
    value = text.strip()
    found = _SPAN.fullmatch(value)
    try:
        if found:
            span = timedelta(seconds=float(found[1]) * {**_UNIT, "d": 86400}[found[2]])
            when = now + span if ahead else now - span
        else:
            when = datetime.fromisoformat(value.replace("Z", "+00:00"))
            when = when if when.tzinfo else when.replace(tzinfo=UTC)
    except (ValueError, OverflowError):  # not a time, or one past the calendar's ends (99999999999d)
        return None
    return when if when >= EPOCH else None  # AWS counts time from 1970: nothing it holds is older


def backoff(first: float, cap: float, factor: float = 2.0) -> Iterator[float]:
    """The pauses between the polls of something that is usually done within seconds: ``first``, then each
    ``factor`` times longer, never longer than ``cap`` (``first`` too). A fixed poll of 5 s notices a two-second
    Lambda update 3 s late; 0.25 → 0.5 → 1 → 1 s notices it 0.25 s late, for three more reads."""
    delay = min(first, cap)
    while True:
        yield delay
        delay = min(delay * factor, cap)


# A monotonic clock that counts the time the machine was suspended (Linux's CLOCK_BOOTTIME), where there is one:
# CLOCK_MONOTONIC stops while a laptop sleeps, and a lease or a deadline counted on it would outlive the sleep (a
# deploy lock's lease ran out by S3's time, another deploy took it, and the woken one went on). Elsewhere (macOS's
# monotonic clock counts sleep already), time.monotonic.
_BOOTTIME = getattr(time, "CLOCK_BOOTTIME", None)


class SystemClock:
    """The real clock."""

    def monotonic(self) -> float:
        return time.clock_gettime(_BOOTTIME) if _BOOTTIME is not None else time.monotonic()

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)

    def now(self) -> datetime:
        return datetime.now(UTC)


class Stoppable:
    """``clock``, whose sleeps end, with KeyboardInterrupt, once ``stop`` is set: a step running beside others
    (:class:`deploykit.plan.Parallel`) stops waiting (for a rollout, a stack, a function) when the run is interrupted,
    where it waited out its whole deadline (wait-healthy's ten minutes) before the interrupt could end the command.
    Anything else is the clock's own (a test's fake clock keeps its attributes)."""

    def __init__(self, clock: Clock, stop: threading.Event) -> None:
        self.clock, self.stop = clock, stop

    def monotonic(self) -> float:
        return self.clock.monotonic()

    def now(self) -> datetime:
        return self.clock.now()

    def sleep(self, seconds: float) -> None:
        if self.stop.is_set():
            raise KeyboardInterrupt
        if isinstance(self.clock, SystemClock):
            if self.stop.wait(seconds):  # woken by the interrupt, not at the end of the pause
                raise KeyboardInterrupt
            return
        self.clock.sleep(seconds)
        if self.stop.is_set():
            raise KeyboardInterrupt

    def __getattr__(self, name: str) -> Any:
        return getattr(self.clock, name)


class FakeClock:
    """A clock that only moves when slept on: tests advance time without waiting."""

    def __init__(self, start: datetime | None = None) -> None:
        self._t = 0.0
        self._start = start or datetime(2026, 1, 1, tzinfo=UTC)
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self._t

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self._t += seconds

    def advance(self, seconds: float) -> None:
        """Time passes without a sleep: what a slow call takes."""
        self._t += seconds

    def now(self) -> datetime:
        from datetime import timedelta

        return self._start + timedelta(seconds=self._t)


@contextlib.contextmanager
def shielded() -> Iterator[None]:
    """Ctrl-C and SIGTERM held back while the block runs (in the main thread; elsewhere, as they are), then delivered
    as they came, to the handlers before: what must not be cut short (a history record being written, a lock being
    released, a task being stopped) ends first, then the command stops as it would have."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    before = {number: signal.signal(number, lambda got, _frame: caught.append(got)) for number in _HELD}
    try:
        yield
    finally:  # however the block ended: a Ctrl-C it held back is never lost
        for number, handler in before.items():
            signal.signal(number, signal.SIG_DFL if handler is None else handler)
        for got in dict.fromkeys(caught):
            signal.raise_signal(got)


_HELD = (signal.SIGINT, signal.SIGTERM)
