"""``inv invoke FN``: one Lambda function called as its callers call it (its ``live`` alias, or a version), with an
event from the command line or a file; what it answered, the version that answered, and the last lines it logged.

The day-to-day loop of a function's author (``sam remote invoke``'s): change the handler, ``inv deploy.auto``
(its fast path, seconds), then call it with the event at hand, without going through API Gateway or the smoke
checks. The call is Lambda's synchronous Invoke with ``LogType=Tail``: the answer carries the last 4 KB of the
function's log. A function that raised (``FunctionError``) is a failed invocation; its answer is shown all the same.
"""

from __future__ import annotations

import base64
import functools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deploykit.clock import Clock
from deploykit.errors import UsageError

# What a synchronous Invoke may carry (Lambda's limit on the request's payload).
MAX_EVENT_BYTES = 6 * 1024 * 1024
# How long an Invoke's answer is waited for: a function runs for 900 s at most, and the call is sent once (an
# Invoke is not safe to repeat: botocore's retry of a read timeout would run the function again).
ANSWER_SECONDS = 900 + 30


def read_event(text: str, root: Path) -> bytes:
    """The event as JSON bytes: ``text`` itself when it is JSON, or the file ``@PATH`` names (relative to ``root``,
    the project root; ``@-`` is not read: the tasks have no standard input to give). A UsageError says what is wrong
    with it: Lambda only takes JSON."""
    if text.startswith("@"):
        path = Path(text[1:]).expanduser()
        path = path if path.is_absolute() else root / path
        try:
            raw = path.read_bytes()
        except OSError as exc:
            raise UsageError(
                f"--event {text}: cannot read {path} ({exc.strerror or exc})",
                next_step='name a JSON file (@events/login.json) or give the event itself (\'{"path": "/health"}\')',
            ) from None
        where = str(path)
    else:
        raw, where = text.encode(), "the --event text"
    try:
        json.loads(raw)
    except ValueError as exc:
        raise UsageError(
            f"{where} is not JSON ({exc}): Lambda takes a JSON event",
            next_step='quote it for the shell: --event \'{"httpMethod": "GET"}\', or put it in a file: --event '
            "@event.json",
        ) from None
    if len(raw) > MAX_EVENT_BYTES:
        raise UsageError(
            f"{where} is {len(raw):,} bytes: a synchronous Invoke takes at most {MAX_EVENT_BYTES:,}",
            next_step="give a smaller event",
        )
    return raw


@dataclass(frozen=True)
class Invocation:
    """One synchronous Invoke and what came back."""

    function: str  # the folder name under lambda/
    function_name: str
    qualifier: str  # the alias or version asked for
    version: str  # the version that answered (ExecutedVersion; an alias may route to two)
    status: int
    function_error: str  # "" when it returned; "Unhandled" (it raised) or "Handled"
    payload: bytes
    log_tail: str
    seconds: float

    @property
    def answer(self) -> Any:
        """The payload as JSON when it is JSON, else as text."""
        return self._read[1]

    @property
    def shown(self) -> str:
        """The payload for a person: pretty JSON when it is JSON (a JSON string keeping its quotes), else as it came."""
        is_json, value = self._read
        return json.dumps(value, indent=2) if is_json else str(value)

    @functools.cached_property
    def _read(self) -> tuple[bool, Any]:
        """(whether the payload is JSON, it parsed or as text), read once."""
        text = self.payload.decode(errors="replace")
        try:
            return True, json.loads(text)
        except ValueError:
            return False, text

    @property
    def error(self) -> str:
        """What the function raised, from its answer (``errorType: errorMessage``); "" when it did not."""
        if not self.function_error:
            return ""
        answer = self.answer
        if isinstance(answer, dict):
            kind, message = answer.get("errorType", ""), answer.get("errorMessage", "")
            return f"{kind}: {message}" if kind and message else str(kind or message or answer)
        return str(answer)[:500]

    def to_json(self, environment: str) -> dict[str, Any]:
        return {
            "environment": environment,
            "function": self.function,
            "function_name": self.function_name,
            "qualifier": self.qualifier,
            "version": self.version,
            "status": self.status,
            "function_error": self.function_error or None,
            "payload": self.answer,
            "log_tail": self.log_tail,
            "seconds": round(self.seconds, 3),
        }


def invoke(
    lambda_client: Any, clock: Clock, function: str, function_name: str, qualifier: str, event: bytes
) -> Invocation:
    """Invoke ``function_name:qualifier`` with ``event``, synchronously, its log's tail asked for. ``lambda_client``
    must send the call once (:meth:`deploykit.aws.AwsFactory.unretried_client`)."""
    started = clock.monotonic()
    answer = lambda_client.invoke(
        FunctionName=function_name, Qualifier=qualifier, Payload=event, InvocationType="RequestResponse", LogType="Tail"
    )
    payload = answer["Payload"].read()
    seconds = clock.monotonic() - started
    tail = answer.get("LogResult") or ""
    try:
        log_tail = base64.b64decode(tail).decode(errors="replace") if tail else ""
    except ValueError:
        log_tail = ""
    return Invocation(
        function,
        function_name,
        qualifier,
        str(answer.get("ExecutedVersion") or ""),
        int(answer.get("StatusCode", 0)),
        str(answer.get("FunctionError") or ""),
        payload,
        log_tail,
        seconds,
    )
