"""The reporter: permanent lines, and progress only for what takes more than a second."""

from __future__ import annotations

import errno
import io
import os
import sys
import time

import pytest

from deploykit.output import GuardedStream, Reporter, guard_standard_streams, reader_gone


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


# -- a reader that goes away -----------------------------------------------------------------------------------------


class Failing(io.StringIO):
    """A stream whose writes fail from the ``after``-th on with ``error``."""

    def __init__(self, error: int, after: int = 0) -> None:
        super().__init__()
        self.error, self.after = error, after

    def write(self, text: str) -> int:
        if self.after <= 0:
            raise OSError(self.error, os.strerror(self.error))
        self.after -= 1
        return super().write(text)


def test_control_characters_are_written_as_their_escapes_but_the_progress_lines_own() -> None:
    """A commit's subject (or a check's detail, an AWS reason) holding an escape sequence rewrote the screen above
    the confirmation prompt, and a carriage return started a line GitHub Actions reads as a workflow command
    (::add-mask::, ::stop-commands::). Newlines and tabs stay; so does the progress line's own clearing."""
    underneath = io.StringIO()
    guarded = GuardedStream(underneath)
    guarded.write("• 7e70bee14656 fix\x1b[8A\x1b[J\r::add-mask::failed\t(eve\x1b]0;pwned\x07) ✅\n")
    guarded.write("\r\x1b[2K")
    assert underneath.getvalue() == (
        "• 7e70bee14656 fix\\x1b[8A\\x1b[J\\x0d::add-mask::failed\t(eve\\x1b]0;pwned\\x07) ✅\n\r\x1b[2K"
    )


def test_a_line_starting_a_workflow_command_is_disarmed_but_deploykits_own_command() -> None:
    """An app's log event of two lines (inv logs indents the second) whose second starts "::stop-commands::" was a
    workflow command to GitHub Actions, whose runner trims blanks first; a CRLF's carriage return starts no line and
    is left; C1 controls and DEL are escaped; deploykit's own annotation is written as it is."""
    underneath = io.StringIO()
    guarded = GuardedStream(underneath)
    guarded.write("12:00:00.000  app  Traceback\r\n                   ::stop-commands::deadbeef\n")
    guarded.write("::warning::fake\x7f\x9b2J\n")
    guarded.command("::error title=deploykit::smoke failed\n")
    assert underneath.getvalue() == (
        "12:00:00.000  app  Traceback\r\n                   \u200b::stop-commands::deadbeef\n"
        "\u200b::warning::fake\\x7f\\x9b2J\n::error title=deploykit::smoke failed\n"
    )


@pytest.mark.parametrize(
    ("said", "written"),
    [
        ("\u00a0::stop-commands::nbsp\n", "\u00a0\u200b::stop-commands::nbsp\n"),  # the runner trims any whitespace
        ("\u3000::set-output name=image::evil\n", "\u3000\u200b::set-output name=image::evil\n"),
        ("\u2003\t ::add-mask::x\n", "\u2003\t \u200b::add-mask::x\n"),
        ("user agent: ##[add-mask]v1form\n", "user agent: ##\u200b[add-mask]v1form\n"),  # the older form, anywhere
        ("a:: b ## [c] ✅\tok\n", "a:: b ## [c] ✅\tok\n"),  # no command: as it is
    ],
)
def test_a_workflow_command_after_any_whitespace_or_in_its_older_form_is_disarmed(said: str, written: str) -> None:
    """GitHub's runner trims every kind of whitespace .NET knows before it looks for "::" (a no-break space, an
    ideographic space), and reads "##[command]" anywhere in a line: an app's log line held either."""
    underneath = io.StringIO()
    GuardedStream(underneath).write(said)
    assert underneath.getvalue() == written


def test_a_closed_pipe_ends_the_output_quietly_and_the_writer_goes_on() -> None:
    underneath = Failing(errno.EPIPE, after=1)
    guarded = GuardedStream(underneath)
    assert guarded.write("first\n") == 6
    assert not reader_gone(guarded)  # type: ignore[arg-type]
    assert guarded.write("second\n") == 7  # raised nothing: the command goes on
    guarded.writelines(["third\n"])
    guarded.flush()
    assert underneath.getvalue() == "first\n"
    assert reader_gone(guarded) and guarded.failure is None  # type: ignore[arg-type]  # no failure: no one reads


def test_a_full_disk_is_kept_to_be_said_at_the_end() -> None:
    guarded = GuardedStream(Failing(errno.ENOSPC))
    guarded.write("{}\n")
    assert guarded.gone and guarded.failure is not None and guarded.failure.errno == errno.ENOSPC


def test_the_stream_s_descriptor_goes_nowhere_so_python_s_flush_at_exit_cannot_fail() -> None:
    read_end, write_end = os.pipe()
    os.close(read_end)
    stream = os.fdopen(write_end, "w", buffering=1)
    guarded = GuardedStream(stream)
    guarded.write("a line\n")  # EPIPE: the reader has gone
    assert guarded.gone and guarded.failure is None
    stream.write("what the stream still buffers\n")
    stream.close()  # flushed to /dev/null: raised nothing


def test_other_attributes_are_the_stream_s() -> None:
    underneath = io.StringIO()
    guarded = GuardedStream(underneath)
    assert guarded.isatty() is False and guarded.getvalue() == ""
    with pytest.raises(AttributeError):
        guarded.no_such_attribute  # noqa: B018


def test_what_the_locale_cannot_say_is_written_escaped_on_stdout_as_on_stderr(monkeypatch: pytest.MonkeyPatch) -> None:
    """In a Latin-1 (or ASCII) locale, Python's stdout raised UnicodeEncodeError for an emoji or a →: inv --list and
    inv diff --markdown ended in a traceback. Written as stderr writes it now."""
    raw = io.BytesIO()
    latin1 = io.TextIOWrapper(raw, encoding="latin-1", errors="strict")
    monkeypatch.setattr(sys, "stdout", latin1)
    monkeypatch.setattr(sys, "stderr", sys.stderr)  # put back after the test, guarded or not
    guard_standard_streams()
    print("✅ build → push, café")
    sys.stdout.flush()
    assert raw.getvalue() == b"\\u2705 build \\u2192 push, caf\xe9\n"
