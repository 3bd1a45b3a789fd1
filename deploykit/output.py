"""Output for people: permanent lines, and a progress line for anything slower than a second.

Everything for people goes to stderr, so ``--json`` can keep stdout for machines. On a terminal the
progress line is redrawn in place (elapsed time and the current state); elsewhere (CI logs) a state
is printed at most every few seconds, and a heartbeat line every ``heartbeat`` seconds while
nothing changes.
"""

from __future__ import annotations

import errno
import os
import re
import sys
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import TYPE_CHECKING, Any, TextIO, cast

from deploykit.clock import Clock, SystemClock

if TYPE_CHECKING:
    from tabulate import tabulate as tabulate  # re-exported: the modules that print tables import it from here
else:

    def tabulate(*args: Any, **kwargs: Any) -> str:
        """tabulate's table, the module imported at the first table a command prints (most print none: a deploy
        with nothing to deploy, a refusal); importing it and wcwidth with it cost every command about 20 ms."""
        from tabulate import tabulate as table

        return table(*args, **kwargs)


# the progress line's own control: back to the line's start, and clear it (the only one deploykit writes)
CLEAR = "\r\x1b[2K"
# what a terminal or a CI runner acts on: the C0 controls but a newline and a tab (a carriage return, an escape
# starting a sequence that moves the cursor, clears lines, sets the window's title), DEL and the C1 controls
_CONTROLS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]|\r(?!\n)")  # a CRLF's \r starts no line
# a line GitHub Actions reads as a workflow command: "::" first, after any whitespace (its runner trims every kind
# Unicode has: a no-break space, an ideographic space), or its older form "##[" anywhere in the line
_COMMAND_LINE = re.compile(r"^([^\S\n]*)::", re.MULTILINE)
_OLD_COMMAND = "##["
NOT_A_COMMAND = "\u200b"  # a zero-width space before "::": no whitespace to the runner, nothing on the screen


def escaped_controls(text: str) -> str:
    """``text`` with each control character a terminal or a CI runner would act on written as its escape (``\\x1b``,
    ``\\x0d``); a newline, a tab and a CRLF's carriage return kept."""
    return _CONTROLS.sub(lambda found: f"\\x{ord(found.group()):02x}", text)


def printable(text: str) -> str:
    """``text`` with its control characters escaped (:func:`escaped_controls`), and a line starting with ``::`` led
    by a zero-width space, as is the ``[`` of a ``##[``: text deploykit does not control (a commit's subject, a
    check's detail, an AWS reason, an app's log line) can neither rewrite the screen nor issue a workflow command to
    GitHub Actions. Deploykit's own commands go through :meth:`GuardedStream.command`."""
    text = escaped_controls(text).replace(_OLD_COMMAND, f"##{NOT_A_COMMAND}[")
    return _COMMAND_LINE.sub(lambda found: f"{found.group(1)}{NOT_A_COMMAND}::", text)


class GuardedStream:
    """A standard stream (stdout, stderr) whose reader may go away: ``inv history | head -3``, a pager quit early, a
    CI log's pipe closed, a full disk under ``--json > file``. Python raises on the next write (``BrokenPipeError``,
    ``OSError``), wherever it happens to be: a traceback for ``inv --list | head -1``, a deploy stopped between two
    steps by its progress line. Here the first failed write ends the stream's output (later writes go nowhere, its
    file descriptor is pointed at /dev/null so Python's own flush at exit finds nothing to fail on) and the command
    runs to its end; :attr:`failure` keeps what failed unless it was the reader going away (a closed pipe), for the
    command's end to say (:func:`output_failures`). What the stream's encoding cannot say is written escaped, as
    Python writes it to stderr. Every other attribute is the stream's own."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._lock = threading.Lock()
        self.gone = False  # a write failed: nothing more is written
        self.wrote = False  # something was written (or would have been, once gone)
        self.failure: OSError | None = None  # why, unless the reader went away (EPIPE)

    def write(self, text: str) -> int:
        return self.command(text if text == CLEAR else printable(text))

    def command(self, text: str) -> int:
        """Write ``text`` as it is: a workflow command of deploykit's own (the summary plugin's annotation), which
        :func:`printable` would disarm."""
        self.wrote = self.wrote or bool(text)
        if not self.gone:
            try:
                return self._write(text)
            except OSError as exc:
                self._lost(exc)
        return len(text)

    def _write(self, text: str) -> int:
        try:
            return self._stream.write(text)
        except UnicodeEncodeError:  # an emoji, a → in an ASCII or Latin-1 locale: it ended the command (inv --list)
            encoding = self._stream.encoding  # written as stderr writes it: \\u2705
            return self._stream.write(text.encode(encoding, "backslashreplace").decode(encoding))

    def writelines(self, lines: Iterable[str]) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        if not self.gone:
            try:
                self._stream.flush()
            except OSError as exc:
                self._lost(exc)

    def _lost(self, exc: OSError) -> None:
        with self._lock:
            if self.gone:
                return
            self.gone = True
            if exc.errno not in (errno.EPIPE, errno.ECONNRESET):
                self.failure = exc
            try:  # what the stream still buffers goes nowhere at exit, rather than fail again there
                nowhere = os.open(os.devnull, os.O_WRONLY)
                os.dup2(nowhere, self._stream.fileno())
                os.close(nowhere)
            except (OSError, ValueError, AttributeError):  # no descriptor (a StringIO): later writes are dropped
                pass

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def guard_standard_streams() -> None:
    """Put :class:`GuardedStream` in front of sys.stdout and sys.stderr (once; ``inv`` does it as it starts)."""
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        if stream is not None and not isinstance(stream, GuardedStream):
            setattr(sys, name, cast(TextIO, GuardedStream(stream)))


def reader_gone(stream: TextIO) -> bool:
    """Whether ``stream`` is a :class:`GuardedStream` that writes nothing more (a loop writing to it may stop)."""
    return isinstance(stream, GuardedStream) and stream.gone


def wrote_to(stream: TextIO) -> bool:
    """Whether anything was written to ``stream`` (True when it cannot be told: not a :class:`GuardedStream`)."""
    return not isinstance(stream, GuardedStream) or stream.wrote


def output_failures() -> list[str]:
    """What went wrong writing to stdout and stderr other than their readers going away, flushing stdout first: a
    command's output lost (``--json > file`` on a full disk), which its end must say."""
    said = []
    sys.stdout.flush()
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        if isinstance(stream, GuardedStream) and stream.failure is not None:
            said.append(f"{name}: {stream.failure.strerror or stream.failure}")
    return said


PROGRESS_AFTER = 1.0
NON_TTY_STATUS_EVERY = 5.0  # without a terminal, a changed state is printed at most this often


class Reporter:
    def __init__(
        self,
        stream: TextIO | None = None,
        *,
        tty: bool | None = None,
        clock: Clock | None = None,
        heartbeat: float = 15.0,
        quiet: bool = False,
    ) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.tty = self.stream.isatty() if tty is None else tty
        self.clock = clock or SystemClock()
        self.heartbeat = heartbeat
        self.quiet = quiet
        self._lock = threading.Lock()
        self._activity: str | None = None
        self._status = ""
        self._started = 0.0
        self._shown = False  # the progress line is on screen (tty) / the activity was announced
        self._last_status_printed = ""
        self._last_print = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- permanent output -------------------------------------------------------------------
    def line(self, text: str = "") -> None:
        """Print a permanent line (above the progress line, if one is shown)."""
        if self.quiet:
            return
        with self._lock:
            self._clear()
            self.stream.write(text + "\n")
            self._last_print = self.clock.monotonic()
            self._draw()
            self.stream.flush()

    def elapsed(self) -> float:
        """Seconds since the current activity started (0 outside one)."""
        return self.clock.monotonic() - self._started if self._activity else 0.0

    # -- progress -------------------------------------------------------------------------------
    @contextmanager
    def activity(self, title: str) -> Iterator[None]:
        """Show progress for ``title`` once it has run for more than a second."""
        with self._lock:
            self._activity, self._status, self._shown = title, "", False
            self._last_status_printed = ""
            self._started = self._last_print = self.clock.monotonic()
            self._stop.clear()
        if not self.quiet:
            self._thread = threading.Thread(target=self._tick, name="deploykit-progress", daemon=True)
            self._thread.start()
        try:
            yield
        finally:
            self._stop.set()
            if self._thread is not None:
                self._thread.join()
                self._thread = None
            with self._lock:
                self._clear()
                self._activity = None
                self.stream.flush()

    def status(self, text: str) -> None:
        """Set the current state of the running activity (shown on the progress line)."""
        with self._lock:
            self._status = text.strip()
            if self._shown:
                self._refresh()

    def _tick(self) -> None:
        while not self._stop.wait(0.25):
            with self._lock:
                if self._activity is None:
                    return
                if self.clock.monotonic() - self._started < PROGRESS_AFTER:
                    continue
                first = not self._shown
                self._shown = True
                self._refresh(heartbeat=True, first=first)

    def _refresh(self, heartbeat: bool = False, first: bool = False) -> None:
        if self.quiet:
            return
        if self.tty:
            self._clear()
            self._draw()
            self.stream.flush()
            return
        now = self.clock.monotonic()
        changed = self._status != self._last_status_printed
        since = now - self._last_print
        if first or (changed and since >= NON_TTY_STATUS_EVERY) or (heartbeat and since >= self.heartbeat):
            self.stream.write(self._progress_text() + "\n")
            self.stream.flush()
            self._last_status_printed = self._status
            self._last_print = now

    def _progress_text(self) -> str:
        secs = self.clock.monotonic() - self._started
        text = f"  ⏳ {self._activity} · {secs:.0f}s"
        return f"{text} · {self._status}" if self._status else text

    def _draw(self) -> None:
        if self.tty and self._shown and self._activity:
            width = 118
            self.stream.write(self._progress_text()[:width])

    def _clear(self) -> None:
        if self.tty and self._shown:
            self.stream.write(CLEAR)


def age(delta: timedelta) -> str:
    """How long ago, for people: ``3 days``, ``1 day``, ``5 h``, ``12 min``."""
    seconds = max(0, int(delta.total_seconds()))
    if seconds >= 2 * 86400:
        return f"{seconds // 86400} days"
    if seconds >= 86400:
        return "1 day"
    if seconds >= 3600:
        return f"{seconds // 3600} h"
    return f"{seconds // 60} min"


class _Aside:
    """``sys.stdout`` while a :func:`stdout_aside` block runs: what a thread inside one writes goes to ``sys.stderr``,
    what any other thread writes to the stdout it stands in for (a check left running past its timeout leaves the
    command's own prints where they were)."""

    def __init__(self, stdout: TextIO) -> None:
        self.stdout = stdout

    def _target(self) -> TextIO:
        return sys.stderr if getattr(_inside, "depth", 0) else self.stdout

    def write(self, text: str) -> int:
        return self._target().write(text)

    def flush(self) -> None:
        self._target().flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._target(), name)


_aside = threading.Lock()
_aside_count = 0
_inside = threading.local()


@contextmanager
def stdout_aside() -> Iterator[None]:
    """What this thread prints while the block runs sent to ``sys.stderr``: what a plugin prints (a hook, a check)
    never mixes into the command's own output (``--json``, which a script reads). Other threads' prints are left
    where they were. ``sys.stdout`` is the stand-in (:class:`_Aside`) while any thread is in such a block."""
    global _aside_count
    with _aside:
        if _aside_count == 0 and not isinstance(sys.stdout, _Aside):
            sys.stdout = cast(TextIO, _Aside(sys.stdout))
        _aside_count += 1
    _inside.depth = getattr(_inside, "depth", 0) + 1
    try:
        yield
    finally:
        _inside.depth -= 1
        with _aside:
            _aside_count -= 1
            if _aside_count == 0 and isinstance(sys.stdout, _Aside):  # put back, unless replaced meanwhile
                sys.stdout = sys.stdout.stdout
