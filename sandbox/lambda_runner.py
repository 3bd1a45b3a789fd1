"""The sandbox's Lambda runtime: a function's uploaded zip run by a local Python, both sides of one pipe.

**Parent side** (in the sandbox process): :class:`LambdaRuntime`. It knows nothing of moto; the
API Gateway/Lambda extension hands it a :class:`FunctionCode` (what one version of a function runs:
its zip, handler, environment, timeout, memory) and an event, and gets an :class:`InvokeResult` back.

- Code cache: each zip is extracted once into ``<state_dir>/lambda/code/<sha256 of the zip>/``; a new
  upload has a new hash and so a new folder (that is the whole cache invalidation).
- Warm workers: a worker is one ``python -m sandbox.lambda_runner`` process for one (function, version,
  code hash, handler, environment, memory), like a Lambda execution environment. It imports the handler
  once (the init phase, up to 10 s), then runs one invocation at a time, so module globals (a boto3
  client made on first use) live as long as the worker, as on Lambda. Concurrent invocations get more
  workers; idle ones are kept for ``idle_ttl`` seconds (at most ``max_idle`` per key) and retired as soon
  as their function version has new code or configuration.
- Timeout: the parent waits the function's Timeout for the answer, then kills the worker's process group
  (the worker is started in a session of its own) and answers Lambda's ``Sandbox.Timedout`` error
  ("Task timed out after N.00 seconds"). A worker that dies mid-invocation gives ``Runtime.ExitError``.
- Environment: nothing is inherited from the sandbox process but PATH. The function gets its own
  variables plus Lambda's reserved ones (AWS_REGION, AWS_DEFAULT_REGION, AWS_LAMBDA_FUNCTION_NAME,
  AWS_LAMBDA_FUNCTION_VERSION, AWS_LAMBDA_FUNCTION_MEMORY_SIZE, AWS_LAMBDA_LOG_GROUP_NAME,
  AWS_LAMBDA_LOG_STREAM_NAME, AWS_EXECUTION_ENV, _HANDLER, LAMBDA_TASK_ROOT, TZ), dummy credentials, no
  AWS config files, TMPDIR under the state dir, and AWS_ENDPOINT_URL = the sandbox's endpoint (unless the
  function sets its own), so boto3 inside the function talks to the sandbox.
- Logs: whatever the function writes to stdout or stderr, and the runtime's START/END/REPORT lines, go
  line by line to the ``sandbox.lambda`` logger and into :attr:`InvokeResult.log`. The event is never
  logged (a login event carries a password).

**Child side**: ``python -m sandbox.lambda_runner`` (standard library only). The process's original
stdout is the protocol pipe; file descriptor 1 is pointed at stderr before any user code runs, so a
``print`` in the handler cannot corrupt the protocol. Messages are JSON, one per line:

- child → parent, at start when ``_HANDLER`` is set: ``{"type": "init", "ok": true, "duration_ms": 12.3}``
  or ``{"type": "init", "ok": false, "error": {errorMessage, errorType, stackTrace}}`` (then it exits);
- parent → child, per invocation: ``{"handler", "event", "timeout", "aws_request_id",
  "invoked_function_arn"}`` (``handler`` defaults to ``_HANDLER``);
- child → parent: ``{"type": "result", "ok": true, "payload": "<the handler's return value as JSON>"}``
  or ``{"type": "result", "ok": false, "payload": "<Lambda's error object as JSON>", "exit": bool}``.

The handler runs as ``module.function(event, context)`` with the code folder first on ``sys.path`` and
as the working directory; ``context`` has function_name, function_version, invoked_function_arn,
memory_limit_in_mb (a string, as Lambda's Python runtime gives it), aws_request_id, log_group_name,
log_stream_name, identity, client_context and get_remaining_time_in_millis(). An exception gives Lambda's
error shape (errorMessage, errorType, requestId, stackTrace); import problems give
``Runtime.ImportModuleError``/``Runtime.HandlerNotFound``/``Runtime.UserCodeSyntaxError``, an
unserialisable result ``Runtime.MarshalError``. The root logger has a handler in Lambda's format
(``[LEVEL]\\t<time>\\t<request id>\\t<message>``), level WARNING, as on Lambda.

By hand (one invocation, from the repository root)::

    echo '{"handler": "handler.handler", "event": {}, "timeout": 3}' \\
        | LAMBDA_TASK_ROOT=lambda/health_handler python -m sandbox.lambda_runner

Imports as on Lambda: the function runs on the sandbox's own interpreter, but a top-level module that neither its
folder, Python's standard library nor Lambda's Python runtime (:data:`LAMBDA_RUNTIME_MODULES`: the AWS SDK) has is not
found, though the interpreter has it installed (``Runtime.ImportModuleError: ... No module named 'requests'``, as on
AWS); the modules deploy.toml's ``[build] lambda_runtime_modules`` names (a layer's, on AWS) are taken from the
interpreter.

Not like Lambda: the interpreter's Python version, whatever the function's Runtime says, and the versions of the
packages it has installed (boto3...); only ``python*`` runtimes and zip packages run. Memory size is reported, not
enforced. Layers are not mounted.
"""

from __future__ import annotations

import base64
import contextlib
import decimal
import importlib
import importlib.abc
import importlib.machinery
import io
import json
import logging
import math
import os
import resource
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import uuid
import zipfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

log = logging.getLogger("sandbox.lambda")

PROJECT_ROOT = Path(__file__).resolve().parents[1]  # where ``python -m sandbox.lambda_runner`` is found
INIT_TIMEOUT = 10.0  # seconds: Lambda's limit for the init phase
LOG_SETTLE = 1.0  # seconds to wait for a worker's last log lines after its answer
# What Lambda's Python runtimes import beside the standard library and the function's folder: the AWS SDK for Python
# and what it needs, as /var/runtime has them, and the runtime interface client
LAMBDA_RUNTIME_MODULES = frozenset(
    {"boto3", "botocore", "s3transfer", "jmespath", "dateutil", "six", "urllib3", "awslambdaric", "bootstrap"}
)
# the modules a worker may import from this interpreter beyond those (deploy.toml's [build] lambda_runtime_modules),
# comma-separated; read and removed from its environment before the function's code runs
MODULES_ENV = "_SANDBOX_LAMBDA_MODULES"
DUMMY_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "sandbox", "AWS_SECRET_ACCESS_KEY": "sandbox", "AWS_SESSION_TOKEN": "sandbox"}


# == parent side ===========================================================================================


class CodeError(Exception):
    """The function cannot run at all (no code, not a zip, not Python): an error of the Invoke API itself."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class FunctionCode:
    """What one version of a function runs: a snapshot taken from moto under the sandbox lock."""

    function_name: str
    version: str  # "$LATEST" or "3"
    function_arn: str  # unqualified
    handler: str
    runtime: str
    code_sha256: str  # hex digest of the zip
    code: bytes = field(repr=False)
    environment: tuple[tuple[str, str], ...] = ()
    timeout: float = 3.0
    memory_size: int = 128
    package_type: str = "Zip"
    log_group: str = ""  # where its invocations' logs go ('' for /aws/lambda/<name>)

    @property
    def worker_key(self) -> tuple[Any, ...]:
        """Workers are shared by invocations of the same code with the same configuration."""
        return (
            self.function_arn,
            self.version,
            self.code_sha256,
            self.handler,
            self.runtime,
            self.environment,
            self.memory_size,
        )


@dataclass(frozen=True)
class InvokeResult:
    payload: bytes  # the handler's result as JSON, or Lambda's error object
    function_error: str | None  # "Unhandled" when the payload is an error
    executed_version: str
    request_id: str
    log: str = field(repr=False)  # this invocation's log lines (START ... REPORT)
    duration_ms: float = 0.0

    @property
    def error(self) -> dict[str, Any] | None:
        """Lambda's error object (errorMessage, errorType, ...) when the invocation failed."""
        if self.function_error is None:
            return None
        try:
            value = json.loads(self.payload)
        except ValueError:
            return {"errorMessage": self.payload.decode("utf-8", "replace"), "errorType": "Unknown"}
        return value if isinstance(value, dict) else {"errorMessage": str(value), "errorType": "Unknown"}

    @property
    def log_tail(self) -> str:
        """The last 4 KB of the log, base64, as Invoke's ``X-Amz-Log-Result`` (LogType=Tail) carries it."""
        return base64.b64encode(self.log.encode("utf-8")[-4096:]).decode("ascii")


class WorkerExited(Exception):
    """The worker process ended (or closed its pipe) before answering."""


class Worker:
    """One ``python -m sandbox.lambda_runner`` process: one execution environment of one function version."""

    def __init__(self, key: tuple[Any, ...], label: str, env: dict[str, str], python: str = sys.executable) -> None:
        self.key = key
        self.label = label
        self.process = subprocess.Popen(
            [python, "-m", "sandbox.lambda_runner"],
            cwd=PROJECT_ROOT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,  # its own process group: a timeout kills what the handler started too
            bufsize=0,
        )
        self.last_used = time.monotonic()
        self._buffer = bytearray()
        self._lines: list[str] = []
        self._lines_lock = threading.Lock()
        self._marker: str | None = None
        self._marker_seen = threading.Event()
        self._reader = threading.Thread(target=self._read_output, name=f"lambda-log-{self.pid}", daemon=True)
        self._reader.start()

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    # -- the function's output: to the sandbox log and to the invocation's log -----------------------------
    def _read_output(self) -> None:
        stream = self.process.stderr
        assert stream is not None
        for raw in iter(stream.readline, b""):
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            log.info("%s %s", self.label, line)
            with self._lines_lock:
                self._lines.append(line)
                if self._marker is not None and line.startswith(self._marker):
                    self._marker_seen.set()
        self._marker_seen.set()  # end of output: nothing more will come

    def expect(self, marker: str) -> None:
        """Note the line that ends the coming invocation's output."""
        with self._lines_lock:
            self._marker = marker
            self._marker_seen.clear()

    def take_log(self, settle: float = LOG_SETTLE) -> list[str]:
        """The lines written since the last call, once the expected last line is in (or after ``settle``)."""
        self._marker_seen.wait(settle)
        with self._lines_lock:
            lines, self._lines = self._lines, []
            self._marker = None
        return lines

    # -- the protocol --------------------------------------------------------------------------------------
    def send(self, message: dict[str, Any]) -> None:
        stdin = self.process.stdin
        assert stdin is not None
        try:
            stdin.write(json.dumps(message, separators=(",", ":")).encode("utf-8") + b"\n")
            stdin.flush()
        except (BrokenPipeError, ValueError, OSError) as exc:
            raise WorkerExited(str(exc)) from None

    def receive(self, deadline: float) -> dict[str, Any] | None:
        """The next message, or None when ``deadline`` (time.monotonic()) passes first."""
        stdout = self.process.stdout
        assert stdout is not None
        fd = stdout.fileno()
        searched = 0
        while True:
            newline = self._buffer.find(b"\n", searched)
            if newline >= 0:
                line = bytes(self._buffer[:newline])
                del self._buffer[: newline + 1]
                try:
                    message = json.loads(line)
                except ValueError:
                    raise WorkerExited("the worker wrote something that is not a protocol message") from None
                if not isinstance(message, dict):
                    raise WorkerExited("the worker wrote something that is not a protocol message")
                return message
            searched = len(self._buffer)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            try:
                ready, _, _ = select.select([fd], [], [], remaining)
                if not ready:
                    continue
                chunk = os.read(fd, 1 << 16)
            except (OSError, ValueError) as exc:  # the pipe was closed under us (the runtime is stopping)
                raise WorkerExited(str(exc)) from None
            if not chunk:
                raise WorkerExited("the worker closed its pipe")
            self._buffer += chunk

    def exit_description(self) -> str:
        """How the process ended, in Lambda's words ("exit status 1", "signal: killed")."""
        try:
            code = self.process.wait(timeout=2)
        except subprocess.TimeoutExpired:
            return "runtime stopped answering"
        if code < 0:
            try:
                name = signal.Signals(-code).name.removeprefix("SIG").lower()
            except ValueError:
                name = str(-code)
            return f"signal: {'killed' if name == 'kill' else name}"
        return f"exit status {code}"

    # -- the end ---------------------------------------------------------------------------------------------
    def kill(self) -> None:
        """Kill the worker and everything it started (its process group, created for it), then reap it."""
        if self.process.poll() is None:  # not reaped yet, so its pid (and group id) is still ours
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.process.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=5)
        self._close_pipes()

    def close(self) -> None:
        """End an idle worker: EOF on its input ends its loop; killed if it does not go within a second."""
        if self.process.stdin is not None:
            with contextlib.suppress(OSError):
                self.process.stdin.close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=1)
        self.kill()

    def _close_pipes(self) -> None:
        for stream in (self.process.stdin, self.process.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()
        self._reader.join(timeout=1)
        if self.process.stderr is not None:
            with contextlib.suppress(OSError):
                self.process.stderr.close()


class LambdaRuntime:
    """Runs functions' code in warm local workers (see the module docstring)."""

    def __init__(
        self,
        state_dir: Path,
        *,
        region: str,
        endpoint_url: str,
        idle_ttl: float = 300.0,
        max_idle: int = 4,
        python: str = sys.executable,
        modules: Callable[[], Iterable[str]] = tuple,
    ) -> None:
        self.state_dir = Path(state_dir)
        # what the functions may import from this interpreter beyond the runtime's (a layer's on AWS), asked as each
        # worker starts
        self.modules = modules
        self.code_root = self.state_dir / "code"
        self.tmp_dir = self.state_dir / "tmp"
        self.region = region
        self.endpoint_url = endpoint_url
        self.idle_ttl = idle_ttl
        self.max_idle = max_idle
        self.python = python
        self._lock = threading.Lock()
        self._extract_lock = threading.Lock()
        self._idle: dict[tuple[Any, ...], list[Worker]] = {}
        self._busy: set[Worker] = set()
        self._current: dict[tuple[str, str], tuple[Any, ...]] = {}  # (function arn, version) → newest key
        self._stopped = False

    # -- invoking ------------------------------------------------------------------------------------------
    def invoke(
        self, fn: FunctionCode, event: Any, *, invoked_arn: str | None = None, request_id: str | None = None
    ) -> InvokeResult:
        """Run ``fn`` on ``event`` in a worker. Raises CodeError when the function cannot run at all."""
        if fn.package_type != "Zip" or not fn.runtime.startswith("python"):
            raise CodeError(
                "InvalidRuntimeException",
                f"the sandbox runs Python zip functions only, not {fn.package_type} {fn.runtime or '(no runtime)'}",
            )
        request_id = request_id or str(uuid.uuid4())
        code_dir = self.code_dir(fn)
        started = time.monotonic()
        worker, init_failure = self._acquire(fn, code_dir)
        if init_failure is not None:
            error, lines = init_failure
            error.setdefault("requestId", request_id)
            return self._result(fn, request_id, error, lines, started)
        assert worker is not None
        worker.expect(f"REPORT RequestId: {request_id}")
        reusable = False
        try:
            worker.send(
                {
                    "handler": fn.handler,
                    "event": event,
                    "timeout": fn.timeout,
                    "aws_request_id": request_id,
                    "invoked_function_arn": invoked_arn or fn.function_arn,
                }
            )
            reply = worker.receive(deadline=time.monotonic() + fn.timeout)
        except WorkerExited:
            lines = worker.take_log(settle=0.2)
            how = worker.exit_description()
            error = {
                "errorType": "Runtime.ExitError",
                "errorMessage": f"RequestId: {request_id} Error: Runtime exited with error: {how}",
            }
            lines += [f"END RequestId: {request_id}", f"REPORT RequestId: {request_id}\tStatus: error"]
            self._release(worker, reusable=False)
            return self._result(fn, request_id, error, lines, started)
        if reply is None:  # the deadline passed: kill, as Lambda does
            worker.kill()
            lines = worker.take_log(settle=0.2)
            stamp = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
            seconds = f"{fn.timeout:.2f}"
            lines += [
                f"{stamp} {request_id} Task timed out after {seconds} seconds",
                f"END RequestId: {request_id}",
                f"REPORT RequestId: {request_id}\tDuration: {fn.timeout * 1000:.2f} ms\tStatus: timeout",
            ]
            for line in lines[-3:]:
                log.info("%s %s", worker.label, line)
            self._release(worker, reusable=False)
            error = {
                "errorType": "Sandbox.Timedout",
                "errorMessage": f"RequestId: {request_id} Error: Task timed out after {seconds} seconds",
            }
            return self._result(fn, request_id, error, lines, started)
        lines = worker.take_log()
        reusable = not reply.get("exit") and worker.alive
        self._release(worker, reusable=reusable)
        payload = reply.get("payload")
        if not isinstance(payload, str):
            payload = "null"
        if reply.get("ok"):
            return InvokeResult(
                payload.encode("utf-8"), None, fn.version, request_id, "\n".join(lines) + "\n", _ms_since(started)
            )
        return InvokeResult(
            payload.encode("utf-8"), "Unhandled", fn.version, request_id, "\n".join(lines) + "\n", _ms_since(started)
        )

    def initialize(self, fn: FunctionCode) -> InvokeResult | None:
        """Start a worker of ``fn`` and run its init phase, as provisioned concurrency readies an environment ahead of
        any request; the worker is kept warm for the next invocation. When the init failed: its error and its log, as
        an invocation's result, else None."""
        started = time.monotonic()
        worker, init_failure = self._acquire(fn, self.code_dir(fn))
        if init_failure is not None:
            error, lines = init_failure
            return self._result(fn, str(uuid.uuid4()), error, lines, started)
        assert worker is not None
        self._release(worker, reusable=True)
        return None

    @staticmethod
    def _result(
        fn: FunctionCode, request_id: str, error: dict[str, Any], lines: list[str], started: float
    ) -> InvokeResult:
        error.setdefault("requestId", request_id)
        error.setdefault("stackTrace", [])
        payload = json.dumps(error, separators=(",", ":")).encode("utf-8")
        return InvokeResult(payload, "Unhandled", fn.version, request_id, "\n".join(lines) + "\n", _ms_since(started))

    # -- the code cache ------------------------------------------------------------------------------------
    def code_dir(self, fn: FunctionCode) -> Path:
        """The folder holding ``fn``'s extracted zip, extracted now if this hash is new."""
        if not fn.code or not fn.code_sha256:
            raise CodeError("ResourceNotFoundException", f"{fn.function_name}:{fn.version} has no code to run")
        target = self.code_root / fn.code_sha256
        if target.is_dir():
            return target
        with self._extract_lock:
            if target.is_dir():
                return target
            self.code_root.mkdir(parents=True, exist_ok=True)
            staging = Path(tempfile.mkdtemp(prefix=f".{fn.code_sha256[:12]}-", dir=self.code_root))
            try:
                with zipfile.ZipFile(io.BytesIO(fn.code)) as archive:
                    archive.extractall(staging)  # extractall drops absolute paths and ".." parts
                    for info in archive.infolist():
                        if (info.external_attr >> 16) & 0o111 and not info.is_dir():
                            path = staging / info.filename
                            if path.is_file():
                                path.chmod(0o755)
                staging.rename(target)  # atomic: a folder in the cache is always complete
            except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError) as exc:
                raise CodeError(
                    "InvalidZipFileException", f"the sandbox could not unzip the deployment package: {exc}"
                ) from None
            finally:
                shutil.rmtree(staging, ignore_errors=True)
            log.info("extracted %s:%s code %s", fn.function_name, fn.version, fn.code_sha256[:12])
        return target

    # -- workers -------------------------------------------------------------------------------------------
    def _environment(self, fn: FunctionCode, code_dir: Path) -> dict[str, str]:
        now = datetime.now(UTC)
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        env = {
            "PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
            "LANG": "en_US.UTF-8",
            "PYTHONUNBUFFERED": "1",
            "AWS_ENDPOINT_URL": self.endpoint_url,
        }
        env.update(dict(fn.environment))
        env.update(
            {
                "_HANDLER": fn.handler,
                MODULES_ENV: ",".join(self.modules()),
                "LAMBDA_TASK_ROOT": str(code_dir),
                "AWS_EXECUTION_ENV": f"AWS_Lambda_{fn.runtime}",
                "AWS_LAMBDA_FUNCTION_NAME": fn.function_name,
                "AWS_LAMBDA_FUNCTION_VERSION": fn.version,
                "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(fn.memory_size),
                "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{fn.function_name}",
                "AWS_LAMBDA_LOG_STREAM_NAME": f"{now:%Y/%m/%d}/[{fn.version}]{uuid.uuid4().hex}",
                "AWS_LAMBDA_INITIALIZATION_TYPE": "on-demand",
                "AWS_REGION": self.region,
                "AWS_DEFAULT_REGION": self.region,
                "AWS_CONFIG_FILE": os.devnull,  # the developer's ~/.aws must not leak in
                "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
                "TZ": ":UTC",
                "TMPDIR": str(self.tmp_dir),
                **DUMMY_CREDENTIALS,
            }
        )
        return env

    def _acquire(
        self, fn: FunctionCode, code_dir: Path
    ) -> tuple[Worker | None, tuple[dict[str, Any], list[str]] | None]:
        """A warm worker for ``fn``, or a new one past its init phase; or the init failure and its log."""
        key = fn.worker_key
        retired: list[Worker] = []
        with self._lock:
            if self._stopped:
                raise CodeError("ServiceException", "the sandbox's Lambda runtime is stopping")
            self._current[(fn.function_arn, fn.version)] = key
            retired = self._retire_locked()
            idle = self._idle.get(key, [])
            worker = None
            while idle:
                candidate = idle.pop()
                if candidate.alive:
                    worker = candidate
                    break
                retired.append(candidate)
            if worker is not None:
                self._busy.add(worker)
        for old in retired:
            old.close()
        if worker is not None:
            return worker, None
        label = f"[{fn.function_name}:{fn.version}]"
        worker = Worker(key, label, self._environment(fn, code_dir), self.python)
        with self._lock:
            self._busy.add(worker)
        try:
            reply = worker.receive(deadline=time.monotonic() + INIT_TIMEOUT)
        except WorkerExited:
            how = worker.exit_description()
            reply = {"ok": False, "error": {"errorType": "Runtime.ExitError", "errorMessage": f"Runtime exited: {how}"}}
        if reply is None:
            worker.kill()
            reply = {
                "ok": False,
                "error": {
                    "errorType": "Sandbox.Timedout",
                    "errorMessage": f"Init phase did not end within {INIT_TIMEOUT:.0f} seconds",
                },
            }
        if reply.get("ok"):
            return worker, None
        error = reply.get("error")
        if not isinstance(error, dict):
            error = {"errorType": "Runtime.Unknown", "errorMessage": "the runtime failed to start"}
        lines = worker.take_log(settle=0.2)
        self._release(worker, reusable=False)
        return None, (error, lines)

    def _release(self, worker: Worker, *, reusable: bool) -> None:
        with self._lock:
            self._busy.discard(worker)
            current = self._current.get((worker.key[0], worker.key[1]))
            idle = self._idle.setdefault(worker.key, [])
            if reusable and not self._stopped and current == worker.key and len(idle) < self.max_idle:
                worker.last_used = time.monotonic()
                idle.append(worker)
                return
        if worker.alive:
            worker.close()
        else:
            worker.kill()

    def _retire_locked(self) -> list[Worker]:
        """Idle workers to end: idle too long, or running code/configuration that is no longer current."""
        now = time.monotonic()
        retired: list[Worker] = []
        for key in list(self._idle):
            current = self._current.get((key[0], key[1]))
            keep = []
            for worker in self._idle[key]:
                if current != key or now - worker.last_used > self.idle_ttl or not worker.alive:
                    retired.append(worker)
                else:
                    keep.append(worker)
            if keep:
                self._idle[key] = keep
            else:
                del self._idle[key]
        return retired

    def worker_count(self) -> int:
        with self._lock:
            return len(self._busy) + sum(len(workers) for workers in self._idle.values())

    def stop(self) -> None:
        """End every worker (busy ones are killed: they are running user code)."""
        with self._lock:
            self._stopped = True
            idle = [worker for workers in self._idle.values() for worker in workers]
            busy = list(self._busy)
            self._idle.clear()
        for worker in busy:
            worker.kill()
        for worker in idle:
            worker.close()


def _ms_since(started: float) -> float:
    return (time.monotonic() - started) * 1000


# == child side ============================================================================================


class _RuntimeFailure(Exception):
    """A Runtime.* error: reported with this type and message and no stack trace."""

    def __init__(self, error_type: str, message: str) -> None:
        super().__init__(message)
        self.error_type = error_type
        self.message = message


class LambdaContext:
    """The handler's ``context``, with the attributes and method of Lambda's Python runtime."""

    def __init__(self, request_id: str, invoked_function_arn: str, deadline: float) -> None:
        self.aws_request_id = request_id
        self.invoked_function_arn = invoked_function_arn
        self.function_name = os.environ.get("AWS_LAMBDA_FUNCTION_NAME", "")
        self.function_version = os.environ.get("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        self.memory_limit_in_mb = os.environ.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128")
        self.log_group_name = os.environ.get("AWS_LAMBDA_LOG_GROUP_NAME", "")
        self.log_stream_name = os.environ.get("AWS_LAMBDA_LOG_STREAM_NAME", "")
        self.identity: Any = None
        self.client_context: Any = None
        self._deadline = deadline  # time.time() seconds

    def get_remaining_time_in_millis(self) -> int:
        return max(int((self._deadline - time.time()) * 1000), 0)

    def __repr__(self) -> str:
        return (
            f"LambdaContext(function_name={self.function_name!r}, function_version={self.function_version!r}, "
            f"aws_request_id={self.aws_request_id!r})"
        )


_request_id = ""  # the invocation in progress, for the log format


class _RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.aws_request_id = _request_id
        return True


def _install_logging() -> None:
    handler = logging.StreamHandler(sys.stderr)
    formatter = logging.Formatter("[%(levelname)s]\t%(asctime)s.%(msecs)03dZ\t%(aws_request_id)s\t%(message)s")
    formatter.converter = time.gmtime
    formatter.default_time_format = "%Y-%m-%dT%H:%M:%S"
    formatter.default_msec_format = ""
    handler.setFormatter(formatter)
    handler.addFilter(_RequestIdFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)


class _AsOnLambda(importlib.abc.MetaPathFinder):
    """Imports as Lambda's: a top-level module the function's code imports (its folder's, vendored packages
    included) that neither that folder, the standard library, Lambda's runtime (:data:`LAMBDA_RUNTIME_MODULES`) nor
    ``allowed`` has is not found, though this interpreter has it. What the interpreter's own packages import (the
    SDK's, a layer's as ``allowed`` lets in) is theirs to find; a submodule is left to its package, which was let in."""

    def __init__(self, task_root: str, allowed: Iterable[str]) -> None:
        self.task_root = os.path.join(os.path.realpath(task_root), "")
        self.allowed = frozenset(sys.stdlib_module_names) | LAMBDA_RUNTIME_MODULES | frozenset(allowed)

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> None:
        if path is not None or fullname in self.allowed:
            return None
        if importlib.machinery.PathFinder.find_spec(fullname, [self.task_root]) is not None:
            return None  # the function's own, or vendored beside it
        importer = _importer()
        if not importer or not os.path.realpath(importer).startswith(self.task_root):
            return None  # the interpreter's packages, and the sandbox's own code
        raise ModuleNotFoundError(f"No module named '{fullname}'", name=fullname)


_IMPORT_MACHINERY = {__file__, importlib.__file__}


def _importer() -> str:
    """The file whose code is importing (the first frame out of the import machinery and this module); "" if none."""
    frame = sys._getframe(1)
    while frame is not None:
        name = frame.f_code.co_filename
        if not name.startswith("<frozen") and name not in _IMPORT_MACHINERY:
            return name
        frame = frame.f_back  # type: ignore[assignment]
    return ""


def _confine_imports(task_root: str) -> None:
    """From now on, imports as on Lambda (:class:`_AsOnLambda`); what the sandbox itself imported stays."""
    allowed = [m for m in os.environ.pop(MODULES_ENV, "").split(",") if m]
    sys.meta_path.insert(0, _AsOnLambda(task_root, allowed))


def _load_handler(name: str) -> Callable[[Any, LambdaContext], Any]:
    module_path, _, function_name = name.rpartition(".")
    if not module_path or not function_name:
        raise _RuntimeFailure(
            "Runtime.MalformedHandlerName", f"Bad handler '{name}': not enough values to unpack (expected 2, got 1)"
        )
    module_name = module_path.replace("/", ".")
    try:
        module = importlib.import_module(module_name)
    except SyntaxError as exc:
        raise _RuntimeFailure(
            "Runtime.UserCodeSyntaxError",
            f"Syntax error in module '{module_name}': {exc.msg} ({exc.filename}, line {exc.lineno})",
        ) from None
    except ImportError as exc:
        raise _RuntimeFailure("Runtime.ImportModuleError", f"Unable to import module '{module_name}': {exc}") from None
    function = getattr(module, function_name, None)
    if not callable(function):
        raise _RuntimeFailure("Runtime.HandlerNotFound", f"Handler '{function_name}' missing on module '{module_name}'")
    return function  # type: ignore[no-any-return]


def _error_object(exc: BaseException, request_id: str) -> dict[str, Any]:
    if isinstance(exc, _RuntimeFailure):
        return {"errorMessage": exc.message, "errorType": exc.error_type, "requestId": request_id, "stackTrace": []}
    tb = exc.__traceback__
    if tb is not None and tb.tb_frame.f_globals.get("__name__") in (__name__, "__main__"):
        tb = tb.tb_next  # the runner's own frame is not the function's business
    # the import machinery's refusal (_AsOnLambda) is not the function's business either
    stack = traceback.format_list([f for f in traceback.extract_tb(tb) if f.filename != __file__])
    return {"errorMessage": str(exc), "errorType": type(exc).__name__, "requestId": request_id, "stackTrace": stack}


def _log_error(error: dict[str, Any]) -> None:
    text = f"[ERROR] {error['errorType']}: {error['errorMessage']}"
    if error.get("stackTrace"):
        text += "\nTraceback (most recent call last):\n" + "".join(error["stackTrace"]).rstrip("\n")
    print(text, file=sys.stderr, flush=True)


def _json_default(value: Any) -> Any:
    if isinstance(value, decimal.Decimal):  # as Lambda's Python runtime encodes them
        return int(value) if value == value.to_integral_value() else float(value)
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def _invoke(
    request: dict[str, Any], handlers: dict[str, Callable[[Any, LambdaContext], Any]], init_ms: float | None
) -> dict[str, Any]:
    global _request_id
    request_id = str(request.get("aws_request_id") or uuid.uuid4())
    name = str(request.get("handler") or os.environ.get("_HANDLER", ""))
    timeout = float(request.get("timeout") or 3.0)
    version = os.environ.get("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
    arn = str(request.get("invoked_function_arn") or "")
    print(f"START RequestId: {request_id} Version: {version}", file=sys.stderr, flush=True)
    started = time.monotonic()
    _request_id = request_id
    reply: dict[str, Any]
    try:
        if name not in handlers:
            handlers[name] = _load_handler(name)
        context = LambdaContext(request_id, arn, time.time() + timeout)
        result = handlers[name](request.get("event"), context)
        try:
            payload = json.dumps(result, default=_json_default)
        except (TypeError, ValueError) as exc:
            raise _RuntimeFailure("Runtime.MarshalError", f"Unable to marshal response: {exc}") from None
        reply = {"type": "result", "ok": True, "payload": payload}
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        error = {
            "errorMessage": f"RequestId: {request_id} Error: Runtime exited with error: exit status {code}",
            "errorType": "Runtime.ExitError",
            "requestId": request_id,
            "stackTrace": [],
        }
        _log_error(error)
        reply = {"type": "result", "ok": False, "payload": json.dumps(error), "exit": True}
    except BaseException as exc:
        error = _error_object(exc, request_id)
        _log_error(error)
        reply = {"type": "result", "ok": False, "payload": json.dumps(error)}
    finally:
        _request_id = ""
        with contextlib.suppress(Exception):
            sys.stdout.flush()
    duration = (time.monotonic() - started) * 1000
    max_used = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
    memory = os.environ.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128")
    report = (
        f"REPORT RequestId: {request_id}\tDuration: {duration:.2f} ms\tBilled Duration: {math.ceil(duration)} ms\t"
        f"Memory Size: {memory} MB\tMax Memory Used: {max_used} MB"
    )
    if init_ms is not None:
        report += f"\tInit Duration: {init_ms:.2f} ms"
    print(f"END RequestId: {request_id}", file=sys.stderr, flush=True)
    print(report, file=sys.stderr, flush=True)
    return reply


def _take_protocol_pipes() -> tuple[IO[bytes], IO[bytes]]:
    """Keep the original stdin/stdout for the protocol; user code gets /dev/null and stderr instead."""
    sys.stdout.flush()
    protocol_in = os.fdopen(os.dup(0), "rb")
    protocol_out = os.fdopen(os.dup(1), "wb")
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    os.dup2(2, 1)
    sys.stdin = open(os.devnull, encoding="utf-8")  # noqa: SIM115 - lives as long as the process
    with contextlib.suppress(AttributeError, io.UnsupportedOperation):
        sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    return protocol_in, protocol_out


def _send(out: IO[bytes], message: dict[str, Any]) -> None:
    out.write(json.dumps(message, separators=(",", ":")).encode("utf-8") + b"\n")
    out.flush()


def _requests(stream: IO[bytes]) -> Iterable[dict[str, Any]]:
    for raw in stream:
        if raw.strip():
            request = json.loads(raw)
            if isinstance(request, dict):
                yield request


def main() -> int:
    protocol_in, protocol_out = _take_protocol_pipes()
    task_root = os.path.abspath(os.environ.get("LAMBDA_TASK_ROOT") or os.getcwd())
    os.chdir(task_root)
    if sys.path:
        sys.path[0] = task_root  # -m put the working directory there; the function's folder belongs there
    else:
        sys.path.insert(0, task_root)
    _install_logging()
    _confine_imports(task_root)
    handlers: dict[str, Callable[[Any, LambdaContext], Any]] = {}
    init_ms: float | None = None
    default = os.environ.get("_HANDLER")
    if default:
        started = time.monotonic()
        try:
            handlers[default] = _load_handler(default)
        except BaseException as exc:
            error = _error_object(exc, "")
            error.pop("requestId", None)
            _log_error(error)
            print(
                f"INIT_REPORT Init Duration: {(time.monotonic() - started) * 1000:.2f} ms\tPhase: init\t"
                f"Status: error\tError Type: {error['errorType']}",
                file=sys.stderr,
                flush=True,
            )
            _send(protocol_out, {"type": "init", "ok": False, "error": error})
            return 1
        init_ms = (time.monotonic() - started) * 1000
        _send(protocol_out, {"type": "init", "ok": True, "duration_ms": init_ms})
    for request in _requests(protocol_in):
        reply = _invoke(request, handlers, init_ms)
        init_ms = None
        _send(protocol_out, reply)
        if reply.get("exit"):
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
