"""The reporter: permanent lines, and progress only for what takes more than a second."""

from __future__ import annotations

import io
import time

from deploykit.output import Reporter


def test_fast_activity_shows_no_progress() -> None:
    out = io.StringIO()
    reporter = Reporter(out, tty=False)
    with reporter.activity("quick"):
        reporter.status("working")
        reporter.line("a line")
    assert out.getvalue() == "a line\n"


def test_slow_activity_shows_progress_with_elapsed_time_and_state() -> None:
    out = io.StringIO()
    reporter = Reporter(out, tty=False)
    with reporter.activity("slow"):
        reporter.status("pushing layer 1")
        time.sleep(1.4)
    assert "⏳ slow · 1s · pushing layer 1" in out.getvalue()


def test_terminal_progress_is_redrawn_in_place_and_cleared() -> None:
    out = io.StringIO()
    reporter = Reporter(out, tty=True)
    with reporter.activity("slow"):
        time.sleep(1.4)
        reporter.line("event")
    text = out.getvalue()
    assert "\r\x1b[2K" in text and "event\n" in text
    assert text.endswith("\r\x1b[2K")  # nothing left behind
