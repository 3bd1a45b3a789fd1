"""Durations given on the command line and in variables (--timeout, --watch-errors, DEPLOYKIT_LOCK_WAIT)."""

from __future__ import annotations

import os
import signal
import time

import pytest

from deploykit.clock import LONGEST, seconds_of, shielded


@pytest.mark.parametrize(
    ("text", "seconds"), [("300", 300.0), (" 90s ", 90.0), ("1.5m", 90.0), ("1h", 3600.0), ("8784h", LONGEST)]
)
def test_a_duration_is_seconds_minutes_or_hours(text: str, seconds: float) -> None:
    assert seconds_of(text) == seconds


@pytest.mark.parametrize("text", ["", "soon", "-1", "1d", "5 m", "8785h", "9" * 400, "9" * 400 + "h"])
def test_anything_else_or_longer_than_a_year_is_none(text: str) -> None:
    """400 digits would be infinite (a wait that never ends, or an OverflowError deep in a sleep)."""
    assert seconds_of(text) is None


@pytest.mark.skipif(not hasattr(time, "CLOCK_BOOTTIME"), reason="Linux's CLOCK_BOOTTIME")
def test_the_system_clock_counts_the_time_the_machine_was_suspended(monkeypatch: pytest.MonkeyPatch) -> None:
    """A deploy lock's lease and the waits' deadlines are counted on it: CLOCK_MONOTONIC stops while a laptop sleeps,
    CLOCK_BOOTTIME goes on (played: the two told apart by the values each gives)."""
    from deploykit.clock import SystemClock

    read = {time.CLOCK_BOOTTIME: 1000.0, time.CLOCK_MONOTONIC: 40.0}
    monkeypatch.setattr(time, "clock_gettime", read.__getitem__)
    monkeypatch.setattr(time, "monotonic", lambda: 40.0)
    assert SystemClock().monotonic() == 1000.0


@pytest.mark.parametrize("number", [signal.SIGINT, signal.SIGTERM])
def test_a_shielded_block_ends_before_a_signal_that_came_meanwhile_is_delivered(number: int) -> None:
    """A Ctrl-C (or SIGTERM, which the task makes one) while a history record is written or the lock released:
    the block ends first, then the signal goes to the handler that was there before, as it came."""
    got: list[int] = []
    before = signal.signal(number, lambda n, _frame: got.append(n))
    try:
        done = []
        with shielded():
            os.kill(os.getpid(), number)
            time.sleep(0.01)  # a handler would run here, between two bytecodes
            done.append("the block")
            assert got == []
        assert done == ["the block"] and got == [number]
        assert signal.getsignal(number) is not None and signal.getsignal(number) != signal.SIG_DFL
    finally:
        signal.signal(number, before)


def test_a_signal_held_back_is_delivered_when_the_shielded_block_raises_too() -> None:
    """A lock release that failed (its ClientError caught by the caller) lost the Ctrl-C that came meanwhile."""
    got: list[int] = []
    before = signal.signal(signal.SIGINT, lambda n, _frame: got.append(n))
    try:
        with pytest.raises(ValueError), shielded():
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.01)
            raise ValueError("the release failed")
        assert got == [signal.SIGINT]
    finally:
        signal.signal(signal.SIGINT, before)
