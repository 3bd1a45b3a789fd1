"""The public check API for plugins, and the runner behind ``inv smoke``.

A plugin returns :class:`Check` objects from ``deploykit_register_checks``; the runner runs the checks that
do not depend on each other in parallel, each with its timeout, and a check whose prerequisite did not
pass is skipped, not run. Results come back as :class:`CheckResult` (passed / failed / skipped, seconds,
detail), printable as a table and as JUnit XML for CI.
"""

from __future__ import annotations

import atexit
import difflib
import json
import re
import threading
import time
import urllib.error
import urllib.request
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit, urlunsplit

from deploykit.errors import UsageError
from deploykit.output import stdout_aside, tabulate

if TYPE_CHECKING:
    from deploykit.aws import AwsFactory
    from deploykit.config import EnvConfig
    from deploykit.endpoints import Endpoints

Status = Literal["passed", "failed", "skipped"]
STATUSES: tuple[Status, ...] = ("passed", "failed", "skipped")

# How long the process, as it ends, waits for checks that ran past their timeout, so that their ``finally`` can
# clean up what they made (seconds, all of them together); a check still running then is left behind.
LATE_CHECKS_GRACE = 10.0
_late: list[threading.Thread] = []  # the threads of checks that ran past their timeout, in this process


@dataclass(frozen=True)
class CheckResult:
    name: str
    status: Status
    seconds: float = 0.0
    detail: str = ""

    @classmethod
    def passed(cls, name: str, detail: str = "") -> CheckResult:
        return cls(name, "passed", detail=detail)

    @classmethod
    def failed(cls, name: str, detail: str) -> CheckResult:
        return cls(name, "failed", detail=detail)

    @classmethod
    def skipped(cls, name: str, detail: str) -> CheckResult:
        return cls(name, "skipped", detail=detail)


_URL_QUERY = re.compile(r"(https?://[^\s?#\"']*)\?[^\s\"']*?(:?)(?=[\s\"']|$)")


def shown_url(url: str) -> str:
    """``url`` fit for a detail: without its query string (a presigned URL's credentials and signature)."""
    parts = urlsplit(url)
    if not parts.query and not parts.fragment:
        return url
    return urlunsplit((parts.scheme, parts.netloc, parts.path, "", "")) + ("?…" if parts.query else "")


def without_queries(text: str) -> str:
    """``text`` with the query string of every URL in it replaced by ``…`` (presigned URLs carry credentials)."""
    return _URL_QUERY.sub(lambda m: f"{m.group(1)}?…{m.group(2)}", text)


class HttpError(OSError):
    """The request got no HTTP answer at all (refused, reset, timed out); the message says which URL."""


@dataclass(frozen=True)
class HttpResponse:
    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")

    def json(self) -> Any:
        """The body as JSON; a body that is not JSON raises ValueError saying its type and size (not its text: a
        token endpoint's form-encoded answer holds the token)."""
        try:
            return json.loads(self.body or b"null")
        except ValueError:
            kind = next((v for k, v in self.headers.items() if k.lower() == "content-type"), "no Content-Type")
            raise ValueError(f"HTTP {self.status} answer is not JSON ({kind}, {len(self.body)} bytes)") from None


class Http:
    """The HTTP client checks use: an answer for every HTTP status (never an exception for 4xx/5xx), and an
    :class:`HttpError` naming the URL when there is no answer. Tests replace it with ``Mock(spec=Http)``."""

    def __init__(self, timeout: float = 10.0) -> None:
        self.timeout = timeout

    def request(
        self,
        method: str,
        url: str,
        *,
        json_body: Any = None,
        data: bytes | None = None,
        headers: dict[str, str] | None = None,
        timeout: float | None = None,
    ) -> HttpResponse:
        sent = dict(headers or {})
        if json_body is not None:
            data = json.dumps(json_body).encode()
            sent.setdefault("Content-Type", "application/json")
        request = urllib.request.Request(url, data=data, method=method, headers=sent)
        try:
            with urllib.request.urlopen(request, timeout=timeout or self.timeout) as answer:
                return HttpResponse(answer.status, answer.read(), dict(answer.headers.items()))
        except urllib.error.HTTPError as exc:
            return HttpResponse(exc.code, exc.read(), dict(exc.headers.items()) if exc.headers else {})
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise HttpError(f"{method} {shown_url(url)}: no answer ({reason})") from None  # a presigned URL's
            # signature and session token stay out of what is shown, recorded and sent to the chat

    def get(self, url: str, **kwargs: Any) -> HttpResponse:
        return self.request("GET", url, **kwargs)

    def post(self, url: str, **kwargs: Any) -> HttpResponse:
        return self.request("POST", url, **kwargs)

    def put(self, url: str, **kwargs: Any) -> HttpResponse:
        return self.request("PUT", url, **kwargs)


@dataclass(frozen=True)
class CheckContext:
    """What a check may use: the environment, its resolved endpoints, its AWS clients and an HTTP client."""

    env: EnvConfig
    endpoints: Endpoints
    aws: AwsFactory
    http: Http = field(default_factory=Http)
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Check:
    """One check: ``run(ctx)`` returns a CheckResult (or raises: that is a failure with the error)."""

    name: str
    run: Callable[[CheckContext], CheckResult]
    description: str = ""
    timeout: float = 30.0
    needs: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        # each field as it is given, said as the check's, where a wrong one broke the smoke run later: a timeout of
        # "15s" a TypeError when the checks ran, Check(run, NAME) one in sorting them (tracebacks, exit 1)
        if not isinstance(self.name, str) or not self.name.strip():
            raise TypeError(f"a check's name must be a non-empty text, not {self.name!r} (Check(NAME, run, ...))")
        if not callable(self.run):
            raise TypeError(f"check {self.name!r}: run must be a function of the CheckContext, not {self.run!r}")
        timeout = self.timeout
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not 0 < timeout < float("inf"):
            raise TypeError(f"check {self.name!r}: timeout must be a number of seconds above 0, not {timeout!r}")
        # needs="alb" is the letters a, l, b: a check needing three checks no plugin has, skipped, never run
        needs = self.needs if isinstance(self.needs, str) else tuple(self.needs)  # a generator: read once
        if isinstance(needs, str) or not all(isinstance(n, str) for n in needs):
            raise TypeError(f"check {self.name!r}: needs must be a tuple of check names, not {self.needs!r}")
        object.__setattr__(self, "needs", needs)


def likely_meant(name: str, known: Iterable[str]) -> str | None:
    """The check a misspelt ``name`` most likely meant, of ``known``: a close spelling, else one it begins with or
    that begins with it (``alb_health``: ``alb``); None when none is close."""
    names = sorted(set(known) - {name})
    close = difflib.get_close_matches(name, names, n=1)
    if close:
        return close[0]
    near = [k for k in names if min(len(k), len(name)) >= 3 and (name.startswith(k) or k.startswith(name))]
    return near[0] if near else None


def select(checks: Sequence[Check], only: Iterable[str] | None) -> list[Check]:
    """The checks named in ``only`` (all when None) and those they need, in turn (a check whose prerequisite did not
    run is skipped: ``--only`` of it alone would pass without running it); an unknown name is a UsageError listing
    the known ones."""
    names = [c.name for c in checks]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise UsageError(
            f"two plugins register the check(s) {', '.join(duplicates)}",
            next_step="rename one, or block a plugin with DEPLOYKIT_BLOCK_PLUGINS",
        )
    cycle = _needs_cycle(checks)
    if cycle:
        raise UsageError(
            f"the checks' needs go round in a circle: {' → '.join(cycle)}",
            next_step="take one of these out of the other's needs (needs= of the plugin's Check)",
        )
    if only is None:
        return list(checks)
    wanted = [n.strip() for n in only if n.strip()]
    if not wanted:  # `--only ,`: not every check, and not none of them either
        raise UsageError("--only names no check", next_step=f"name one or more: {', '.join(sorted(names))}")
    unknown = [n for n in wanted if n not in names]
    if unknown:
        raise UsageError(f"unknown check(s): {', '.join(unknown)}", next_step=f"use: {', '.join(sorted(names))}")
    by_name = {c.name: c for c in checks}
    chosen: set[str] = set()
    while wanted:
        name = wanted.pop()
        if name in by_name and name not in chosen:
            chosen.add(name)
            wanted.extend(by_name[name].needs)
    return [c for c in checks if c.name in chosen]


def _needs_cycle(checks: Sequence[Check]) -> list[str]:
    """A circle of ``needs`` among ``checks`` (``a → b → a``; none: []): each would wait for the other for ever."""
    by_name = {c.name: c for c in checks}
    done: set[str] = set()

    def walk(name: str, path: list[str]) -> list[str]:
        if name in path:
            return [*path[path.index(name) :], name]
        if name in done or name not in by_name:
            return []
        for needed in by_name[name].needs:
            found = walk(needed, [*path, name])
            if found:
                return found
        done.add(name)
        return []

    for check in checks:
        found = walk(check.name, [])
        if found:
            return found
    return []


def run_checks(checks: Sequence[Check], ctx: CheckContext, *, workers: int = 8) -> list[CheckResult]:
    """Run ``checks``: independent ones in parallel, each within its timeout; results in the given order.

    A check whose ``needs`` did not all pass is skipped. At most ``workers`` run at once, each in its own thread. A
    check past its timeout is reported failed at once; its thread cannot be killed, so it is left to finish (and
    clean up) in the background, as a daemon: when the process ends it waits :data:`LATE_CHECKS_GRACE` seconds at
    most for such checks, so a check that never returns does not keep the command from ending.
    """
    by_name = {c.name: c for c in checks}
    results: dict[str, CheckResult] = {}
    started: dict[str, float] = {}
    running: dict[Future[CheckResult], Check] = {}
    threads: dict[Future[CheckResult], threading.Thread] = {}
    pending = list(checks)
    while pending or running:
        for check in list(pending):
            if len(running) >= max(1, workers):
                break
            missing = [n for n in check.needs if n in by_name and n not in results]
            if missing:
                continue
            pending.remove(check)
            failed = [n for n in check.needs if n in results and results[n].status != "passed"]
            unknown = [n for n in check.needs if n not in by_name]
            if failed or unknown:
                close = [m for n in unknown if (m := likely_meant(n, by_name))]
                maybe = f"; a typo of {', '.join(close)}? (needs= of its Check)" if close and not failed else ""
                why = f"needs {', '.join(failed or unknown)}" + (
                    " (did not pass)" if failed else f" (not run: no plugin registers it here{maybe})"
                )
                results[check.name] = CheckResult.skipped(check.name, why)
                continue
            started[check.name] = time.monotonic()
            future, threads[future] = _start(check, ctx)
            running[future] = check
        if not running:
            if pending and all(any(n in by_name and n not in results for n in c.needs) for c in pending):
                for check in pending:  # a circle of needs (select refuses one): skipped, never waited for
                    results[check.name] = CheckResult.skipped(check.name, "needs a check that needs it (a circle)")
                pending.clear()
            continue
        nearest = min(started[c.name] + c.timeout for c in running.values())
        done, _ = wait(running, timeout=max(0.0, nearest - time.monotonic()), return_when=FIRST_COMPLETED)
        now = time.monotonic()
        for future in list(running):
            check = running[future]
            seconds = now - started[check.name]
            if future in done:
                result = future.result()
                # what a check said, without any URL's query string (a presigned URL's credentials)
                results[check.name] = CheckResult(check.name, result.status, seconds, without_queries(result.detail))
                del running[future]
            elif seconds >= check.timeout:
                detail = f"timed out after {check.timeout:g}s"
                results[check.name] = CheckResult(check.name, "failed", seconds, detail)
                _late.append(threads[future])
                del running[future]
    return [results[c.name] for c in checks]


def _start(check: Check, ctx: CheckContext) -> tuple[Future[CheckResult], threading.Thread]:
    """``check`` running in a daemon thread of its own (a pool's threads are joined when the interpreter exits: one
    check that hangs would hang the command): the future of its result, and the thread."""
    future: Future[CheckResult] = Future()

    def run() -> None:
        future.set_result(_guarded(check, ctx))

    thread = threading.Thread(target=run, name=f"check-{check.name}", daemon=True)
    thread.start()
    return future, thread


@atexit.register
def _wait_for_late_checks() -> None:
    """As the process ends: give the checks that ran past their timeout :data:`LATE_CHECKS_GRACE` seconds, in all,
    to return (their ``finally`` cleans up), then leave them."""
    deadline = time.monotonic() + LATE_CHECKS_GRACE
    for thread in _late:
        thread.join(max(0.0, deadline - time.monotonic()))


def _guarded(check: Check, ctx: CheckContext) -> CheckResult:
    try:
        with stdout_aside():  # what it prints: not into --json
            result = check.run(ctx)
    except BaseException as exc:  # a check that raises (SystemExit too, in its thread) failed, its error the reason
        return CheckResult.failed(check.name, f"{type(exc).__name__}: {exc}")
    if not isinstance(result, CheckResult):
        return CheckResult.failed(check.name, f"returned {type(result).__name__}, not a CheckResult")
    if result.status not in STATUSES:  # "error", "ok": neither a pass nor a row the table, JSON or JUnit can show
        return CheckResult.failed(
            check.name, f"returned status {result.status!r}, not one of {', '.join(STATUSES)}: {result.detail}"
        )
    return result if isinstance(result.detail, str) else replace(result, detail=str(result.detail))


def table(results: Sequence[CheckResult]) -> str:
    icons = {"passed": "✅ passed", "failed": "❌ failed", "skipped": "⏭  skipped"}
    # a detail's lines run on in its cell: a line of its own, even indented, GitHub Actions reads as a workflow
    # command when it starts with "::" (a check quoting an answer that holds one)
    rows = [[r.name, icons[r.status], f"{r.seconds:.2f}s", " ".join(r.detail.splitlines())] for r in results]
    return tabulate(rows, headers=["check", "result", "time", "detail"])


def junit_xml(results: Sequence[CheckResult], *, suite: str = "deploykit.smoke") -> str:
    """JUnit XML for CI: one testcase per check; failed ones carry a failure, skipped ones a skipped."""
    root = ET.Element(
        "testsuite",
        name=suite,
        tests=str(len(results)),
        failures=str(sum(r.status == "failed" for r in results)),
        skipped=str(sum(r.status == "skipped" for r in results)),
        time=f"{sum(r.seconds for r in results):.3f}",
    )
    for result in results:
        name, detail = _xml_text(result.name), _xml_text(result.detail)
        case = ET.SubElement(root, "testcase", classname=suite, name=name, time=f"{result.seconds:.3f}")
        if result.status == "failed":
            ET.SubElement(case, "failure", message=detail[:500]).text = detail
        elif result.status == "skipped":
            ET.SubElement(case, "skipped", message=detail[:500])
    return ET.tostring(root, encoding="unicode", xml_declaration=True)


# what XML 1.0 cannot hold: ElementTree writes it as it is, and the file no longer parses (a failed check's detail
# quoting an answer with an escape sequence or a NUL: the report CI reads breaks just when a check failed)
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def _xml_text(text: str) -> str:
    """``text`` with each character XML cannot hold as ``\\xNN`` (its escape, as Python writes it)."""
    return _NOT_XML.sub(lambda found: repr(found.group())[1:-1], text)
