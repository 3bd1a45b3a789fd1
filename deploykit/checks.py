"""The public check API for plugins, and the runner behind ``inv smoke``.

A plugin returns :class:`Check` objects from ``deploykit_register_checks``; the runner runs the checks that
do not depend on each other in parallel, each with its timeout, and a check whose prerequisite did not
pass is skipped, not run. Results come back as :class:`CheckResult` (passed / failed / skipped, seconds,
detail), printable as a table and as JUnit XML for CI.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from tabulate import tabulate

from deploykit.errors import UsageError

if TYPE_CHECKING:
    from deploykit.aws import AwsFactory
    from deploykit.config import EnvConfig
    from deploykit.endpoints import Endpoints

Status = Literal["passed", "failed", "skipped"]


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
        """The body as JSON; a body that is not JSON raises ValueError quoting its start."""
        try:
            return json.loads(self.body or b"null")
        except ValueError:
            raise ValueError(f"HTTP {self.status} answer is not JSON: {self.text[:120]!r}") from None


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
            raise HttpError(f"{method} {url}: no answer ({reason})") from None

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


def select(checks: Sequence[Check], only: Iterable[str] | None) -> list[Check]:
    """The checks named in ``only`` (all when None); an unknown name is a UsageError listing the known ones."""
    names = [c.name for c in checks]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise UsageError(
            f"two plugins register the check(s) {', '.join(duplicates)}",
            next_step="rename one, or block a plugin with DEPLOYKIT_BLOCK_PLUGINS",
        )
    if only is None:
        return list(checks)
    wanted = [n.strip() for n in only if n.strip()]
    unknown = [n for n in wanted if n not in names]
    if unknown:
        raise UsageError(f"unknown check(s): {', '.join(unknown)}", next_step=f"use: {', '.join(sorted(names))}")
    return [c for c in checks if c.name in wanted]


def run_checks(checks: Sequence[Check], ctx: CheckContext, *, workers: int = 8) -> list[CheckResult]:
    """Run ``checks``: independent ones in parallel, each within its timeout; results in the given order.

    A check whose ``needs`` did not all pass is skipped. A check past its timeout is reported failed at
    once; its thread cannot be killed, so it is left to finish (and clean up) in the background.
    """
    by_name = {c.name: c for c in checks}
    results: dict[str, CheckResult] = {}
    started: dict[str, float] = {}
    running: dict[Future[CheckResult], Check] = {}
    pending = list(checks)
    pool = ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="check")
    try:
        while pending or running:
            for check in list(pending):
                missing = [n for n in check.needs if n in by_name and n not in results]
                if missing:
                    continue
                pending.remove(check)
                failed = [n for n in check.needs if n in results and results[n].status != "passed"]
                unknown = [n for n in check.needs if n not in by_name]
                if failed or unknown:
                    why = f"needs {', '.join(failed or unknown)}" + (" (did not pass)" if failed else " (not run)")
                    results[check.name] = CheckResult.skipped(check.name, why)
                    continue
                started[check.name] = time.monotonic()
                running[pool.submit(_guarded, check, ctx)] = check
            if not running:
                continue
            nearest = min(started[c.name] + c.timeout for c in running.values())
            done, _ = wait(running, timeout=max(0.0, nearest - time.monotonic()), return_when=FIRST_COMPLETED)
            now = time.monotonic()
            for future in list(running):
                check = running[future]
                seconds = now - started[check.name]
                if future in done:
                    result = future.result()
                    results[check.name] = CheckResult(check.name, result.status, seconds, result.detail)
                    del running[future]
                elif seconds >= check.timeout:
                    detail = f"timed out after {check.timeout:g}s"
                    results[check.name] = CheckResult(check.name, "failed", seconds, detail)
                    del running[future]
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
    return [results[c.name] for c in checks]


def _guarded(check: Check, ctx: CheckContext) -> CheckResult:
    try:
        result = check.run(ctx)
    except Exception as exc:  # a check that raises has failed, with its error as the reason
        return CheckResult.failed(check.name, f"{type(exc).__name__}: {exc}")
    if not isinstance(result, CheckResult):
        return CheckResult.failed(check.name, f"returned {type(result).__name__}, not a CheckResult")
    return result


def table(results: Sequence[CheckResult]) -> str:
    icons = {"passed": "✅ passed", "failed": "❌ failed", "skipped": "⏭  skipped"}
    rows = [[r.name, icons[r.status], f"{r.seconds:.2f}s", r.detail] for r in results]
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
        case = ET.SubElement(root, "testcase", classname=suite, name=result.name, time=f"{result.seconds:.3f}")
        if result.status == "failed":
            ET.SubElement(case, "failure", message=result.detail[:500]).text = result.detail
        elif result.status == "skipped":
            ET.SubElement(case, "skipped", message=result.detail[:500])
    return ET.tostring(root, encoding="unicode", xml_declaration=True)
