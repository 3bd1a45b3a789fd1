"""Start, stop and inspect the sandbox: ``inv sandbox.up | down | status | logs | reset``.

Two processes, each with a pid file and a log under ``.sandbox/``: the distribution registry
(``docker-registry``, on ``registry_backend_port``) and the sandbox process (moto, extended, plus
the runtimes; ``python -m sandbox serve``). ``down`` stops exactly those, by pid, and the sandbox
process removes the task containers it started.

:func:`inject_throttling` and :func:`clear_faults` drive the sandbox's fault route (``/_sandbox/faults``, see
``sandbox.server``) for fault tests and demos: the next N requests of an AWS operation are refused as AWS
refuses a request over its rate.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from sandbox.settings import FAULTS_PATH, PID_HEADER, STATUS_PATH, TASK_LABEL, Settings

if TYPE_CHECKING:
    import docker


# The sandbox's ports are this machine's: asked directly, whatever proxy the environment names (HTTP_PROXY without a
# NO_PROXY listing 127.0.0.1 sent them to the proxy, whose 502 read as "taken by another program")
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))

REGISTRY_CONFIG = """\
version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: {root}
  delete:
    enabled: true
http:
  addr: 127.0.0.1:{port}
"""
START_DOCKER = (
    "start the Docker engine: run the command through ./dev (root on Debian starts one), or "
    "'dockerd --bridge=none --iptables=false --ip-masq=false &' as root, or Docker Desktop"
)


class SandboxError(Exception):
    """Something the sandbox needs is missing; the message says what and how to get it."""

    def __init__(self, message: str, next_step: str) -> None:
        super().__init__(message)
        self.message, self.next_step = message, next_step


class SandboxBusy(SandboxError):
    """A part took the connection but did not answer in time: it runs, busy or hung; it is not missing."""


@dataclass(frozen=True)
class Process:
    """A process ``up`` started, known again by its pid file: its pid, then the start time the kernel gives it
    (``/proc/<pid>/stat``, field 22), which a later process given the same pid (after a crash, a reboot) does not
    share. A pid file of an older deploykit holds the pid alone: that process is ours when its command line names
    ``program``. A pid file whose process is gone, or is another program's now, is stale: dropped, said, and its
    process never signalled."""

    name: str
    pid_file: Path
    log_file: Path
    program: str = ""  # what the command line of a process of an old pid file (a pid alone) must hold to be ours

    def pid(self) -> int | None:
        """The pid of our pid file if that process is alive (not exited, not a zombie) and is the one we started."""
        try:
            fields = self.pid_file.read_text().split()
            pid, started = int(fields[0]), (int(fields[1]) if len(fields) > 1 else None)
        except (OSError, ValueError, IndexError):
            return None
        if not _alive(pid):
            return None
        if _ours(pid, started, self.program):
            return pid
        self.pid_file.unlink(missing_ok=True)  # another program's now: never ours to signal
        _say(
            f"{_shown(self.pid_file)} named pid {pid}, which is no longer the {self.name} this checkout started "
            f"({_command_line(pid) or 'another process'}): dropped that pid file, nothing was signalled"
        )
        return None

    def record(self, pid: int) -> None:
        """Write our pid file for the process ``pid`` (just started): its pid and its start time."""
        write_pid_file(self.pid_file, pid)

    def stop(self, timeout: float = 20) -> bool:
        """SIGTERM the process of our pid file and wait; SIGKILL at the deadline. False if none ran."""
        return self.end(timeout) is not None

    def end(self, timeout: float = 20) -> str | None:
        """As :meth:`stop`; how it ended: ``"terminated"`` (by SIGTERM), ``"killed"`` (SIGKILL, at the deadline), or
        None when none of ours ran."""
        pid = self.pid()
        if pid is None:
            self.pid_file.unlink(missing_ok=True)
            return None
        try:
            os.kill(pid, signal.SIGTERM)
            how = "terminated"
            if not _wait_gone(pid, timeout):
                os.kill(pid, signal.SIGKILL)
                how = "killed"
                _wait_gone(pid, 5)  # and reap it, when it is our own child
        except ProcessLookupError:
            how = "terminated"  # it ended by itself meanwhile
        except PermissionError:
            raise SandboxError(
                f"the sandbox's {_TITLES.get(self.name, self.name)} (pid {pid}, {_shown(self.pid_file)}) runs as "
                "another user: it cannot be stopped from here",
                f"stop it as the user who started it (sudo kill {pid}), then rerun",
            ) from None
        self.pid_file.unlink(missing_ok=True)
        return how


def write_pid_file(path: Path, pid: int) -> None:
    """A pid file :class:`Process` knows its process again by: the pid, and its start time where /proc gives it."""
    started = _start_time(pid)
    path.write_text(f"{pid}\n" if started is None else f"{pid} {started}\n")


def _start_time(pid: int) -> int | None:
    """When process ``pid`` started, in clock ticks after boot (/proc/<pid>/stat, field 22); None without /proc."""
    try:
        after_name = Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1].split()
        return int(after_name[19])  # fields 3... follow the name: field 22 is the 20th of them
    except (OSError, IndexError, ValueError):
        return None


def _command_line(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def _ours(pid: int, started: int | None, program: str) -> bool:
    """Whether the live process ``pid`` is the one our pid file recorded: the same start time; for a pid file of an
    older deploykit (no start time), a command line naming ``program``. Without /proc (not Linux), as before: the
    pid alone."""
    if not Path("/proc/self/stat").exists():
        return True
    if started is not None:
        return _start_time(pid) == started
    return bool(program) and program in _command_line(pid)


def _shown(path: Path) -> str:
    """``path`` as the user knows it: relative to the working folder when under it."""
    with contextlib.suppress(ValueError):
        return str(path.relative_to(Path.cwd()))
    return str(path)


def _say(text: str) -> None:
    print(f"🧪 {text}", file=sys.stderr)


def _wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while _alive(pid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)
    return True


def _alive(pid: int) -> bool:
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)  # reap it if it is our own child that has exited
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # another user's process: alive (whether it is ours, _ours says)
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1][0] != "Z"
    except (OSError, IndexError):
        return True


def processes(settings: Settings) -> tuple[Process, Process]:
    state = settings.state_dir
    return (
        Process("registry", state / "registry.pid", state / "registry.log", "docker-registry serve"),
        Process("sandbox", state / "sandbox.pid", state / "sandbox.log", "-m sandbox serve"),
    )


REGISTRY_MARK = "Docker-Distribution-Api-Version"  # a header every answer of a distribution registry's /v2/ has
_TITLES = {"registry": "registry", "sandbox": "AWS endpoint"}


@dataclass(frozen=True)
class Part:
    """One of the sandbox's servers as its clients find it: where it answers, and what tells its answer from another
    program's on the same port (``mark``, a header of the answer)."""

    name: str  # "registry" or "sandbox", as its Process
    port: int
    path: str  # what is asked there
    mark: str
    setting: str  # the key of its port in deploy.toml's [sandbox]
    method: str = "GET"  # how it is asked: the sandbox's status is asked HEAD, its mark alone (the parts not read)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{self.path}"


def parts(settings: Settings) -> tuple[Part, Part]:
    """The registry and the sandbox's server (its AWS endpoint), in the order of :func:`processes`."""
    return _registry_part(settings.registry_backend_port), Part(
        "sandbox", settings.aws_port, STATUS_PATH, PID_HEADER, "aws_port", method="HEAD"
    )


ANSWER_TIMEOUT = 5.0  # seconds a part that took the connection has to answer before it counts as busy or hung


def answering(part: Part, timeout: float | None = None) -> str | None:
    """The mark of ``part``'s answer (the sandbox's pid; the registry's API version) when it answers; None when
    nothing answers on its port. Another program answering there (it took the port): SandboxError naming it, for
    the sandbox cannot start there and its clients would be talking to that program. A part that takes the
    connection but does not answer within ``timeout``: SandboxError too, never None: the sandbox is there, busy or
    hung, and ``up`` would otherwise stop it and start an empty one, its every stack and service lost."""
    timeout = ANSWER_TIMEOUT if timeout is None else timeout
    try:
        with _DIRECT.open(urllib.request.Request(part.url, method=part.method), timeout=timeout) as answer:
            status, headers = answer.status, answer.headers
    except urllib.error.HTTPError as error:  # it answered, with an error status
        status, headers = error.code, error.headers
    except http.client.HTTPException as error:  # it answered, but not in HTTP (an SSH server, a database...)
        if isinstance(error, ConnectionError):  # closed without a word (RemoteDisconnected): as nothing there
            return None
        raise SandboxError(
            f"127.0.0.1:{part.port} is taken by another program: it answered {part.url} with something other than "
            f"HTTP ({type(error).__name__}: {str(error)[:60]}), not as the sandbox's {_TITLES[part.name]}",
            f"stop that program (ss -ltnp 'sport = :{part.port}' names it), or give the sandbox another port: "
            f"{part.setting} = ... in deploy.toml's [sandbox]",
        ) from None
    except OSError as error:
        if _timed_out(error):  # connected, then no answer in time
            raise SandboxBusy(
                f"the sandbox's {_TITLES[part.name]} on 127.0.0.1:{part.port} took the connection but did not answer "
                f"{part.url} within {timeout:g}s: busy or hung (it was left running)",
                "run the command again; if it still does not answer, inv sandbox.status says what it runs, and inv "
                "sandbox.reset starts it afresh (its stacks and services are lost)",
            ) from None
        return None  # nothing listens there
    mark = headers.get(part.mark)
    if mark is not None:
        return str(mark)
    server = headers.get("Server")
    raise SandboxError(
        f"127.0.0.1:{part.port} is taken by another program: it answered {part.url} with HTTP {status}"
        + (f" ({server})" if server else "")
        + f", not as the sandbox's {_TITLES[part.name]}",
        f"stop that program (ss -ltnp 'sport = :{part.port}' names it), or give the sandbox another port: "
        f"{part.setting} = ... in deploy.toml's [sandbox]",
    )


def _timed_out(error: BaseException) -> bool:
    """Whether urlopen's ``error`` is a timeout (raised as is while reading, inside a URLError while connecting)."""
    return isinstance(getattr(error, "reason", error), TimeoutError)


def check_docker() -> docker.DockerClient:
    import docker  # here: every deploy to the sandbox asks whether it is up, and that needs no Docker client
    import docker.errors

    try:
        client = docker.from_env(timeout=30)
        client.ping()
    except docker.errors.DockerException as exc:
        raise SandboxError(f"the Docker engine is not answering: {exc}", START_DOCKER) from None
    except ValueError as exc:  # DOCKER_HOST that is no address (tcp://host:abc, a port out of range)
        where = os.environ.get("DOCKER_HOST", "")
        raise SandboxError(
            f"DOCKER_HOST={where!r} is not an address of a Docker engine: {exc}", "fix DOCKER_HOST, or unset it"
        ) from None
    return client


def _spawn(process: Process, command: list[str], cwd: Path) -> None:
    process.log_file.parent.mkdir(parents=True, exist_ok=True)
    with process.log_file.open("ab") as log:
        child = subprocess.Popen(
            command, cwd=cwd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
        )
    process.record(child.pid)


def _wait(part: Part, process: Process, timeout: float, *, pid_marked: bool = False) -> None:
    """Until ``part`` answers as the one ``process`` runs (``pid_marked``: its answer's mark is that pid), else
    SandboxError with the end of its log. Another program answering on its port meanwhile is waited past: the
    process, finding its port taken, ends, and that is said."""
    deadline = time.monotonic() + timeout
    foreign = ""
    while time.monotonic() < deadline:
        try:
            mark = answering(part)
        except SandboxError as exc:
            mark, foreign = None, exc.message
        if mark is not None and (not pid_marked or mark == str(process.pid())):
            return
        if process.pid() is None:
            break
        time.sleep(0.1)
    tail = (
        "\n".join(process.log_file.read_text(errors="replace").splitlines()[-15:]) if process.log_file.exists() else ""
    )
    raise SandboxError(
        f"the sandbox's {process.name} did not answer at {part.url}"
        + (f" ({foreign})" if foreign else "")
        + (f"; its log ends with:\n{tail}" if tail else ""),
        f"read {process.log_file}, fix, then rerun: inv sandbox.up",
    )


def survey(settings: Settings) -> tuple[bool, list[str]]:
    """Each part asked once (every deploy to the sandbox asks): whether both answer (:func:`is_up`), and those
    another checkout started (:func:`started_elsewhere`). Another program on one of their ports: SandboxError
    (:func:`answering`)."""
    marks = [answering(part) for part in parts(settings)]  # each asked: another program on either is said
    elsewhere = [
        part.name
        for process, part, mark in zip(processes(settings), parts(settings), marks, strict=True)
        if mark is not None and not _started_here(process, part, mark)
    ]
    return None not in marks, elsewhere


def is_up(settings: Settings) -> bool:
    """Whether the registry and the AWS endpoint answer: started by this checkout's ``up`` or another's (a second
    clone or a worktree of the same project, whose ``deploy.toml`` names the same ports)."""
    return survey(settings)[0]


def started_elsewhere(settings: Settings) -> list[str]:
    """The parts that answer on this checkout's ports though this checkout did not start them: another checkout's
    sandbox, which ``up`` uses as it is and ``down`` here leaves alone. The AWS endpoint is this checkout's when its
    pid is that of this checkout's pid file; the registry, when that file's process runs."""
    return survey(settings)[1]


def _started_here(process: Process, part: Part, mark: str) -> bool:
    pid = process.pid()
    return pid is not None and (part.mark != PID_HEADER or mark == str(pid))


def start_registry(process: Process, root: Path, port: int, cwd: Path) -> None:
    """A distribution registry (``docker-registry``) keeping its data and config in ``root``, on 127.0.0.1:``port``,
    started as ``process`` (its pid file and log: :meth:`Process.stop` ends it); returns once it answers, else
    SandboxError. The sandbox's own, and the registries of their own that the tests and the benchmarks start."""
    root.mkdir(parents=True, exist_ok=True)
    config = root / "config.yml"
    config.write_text(REGISTRY_CONFIG.format(root=root / "data", port=port))
    _spawn(process, ["docker-registry", "serve", str(config)], cwd)
    _wait(_registry_part(port), process, 20)


def _registry_part(port: int) -> Part:
    return Part("registry", port, "/v2/", REGISTRY_MARK, "registry_backend_port")


@contextlib.contextmanager
def _one_at_a_time(settings: Settings) -> Iterator[None]:
    """This checkout's starts and stops of its sandbox, one after the other: two terminals' ``up`` at once (any task
    for the sandbox starts it) both found nothing answering, one stopped the server the other had just started by
    its pid file, and a server could be left that no pid file named, for no ``down`` to stop. An advisory lock on the
    checkout's folder (a start refused writes nothing), let go by the system when its holder dies."""
    if not settings.root.is_dir():  # no checkout there yet (a settings' root made up): nothing of it to race over
        yield
        return
    held = os.open(settings.root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        try:
            fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            _say("another start or stop of this sandbox is under way (a second terminal?): waiting for it")
            fcntl.flock(held, fcntl.LOCK_EX)
        yield
    finally:
        os.close(held)  # and the lock with it


def up(settings: Settings, config_path: Path) -> list[str]:
    """Start what is not running; returns what was started. Idempotent. A part that answers on its port though
    this checkout did not start it (:func:`started_elsewhere`) is used as it is: starting another would only find
    its port taken. Another program on one of the ports: SandboxError naming it, before anything is started. One
    start or stop at a time (:func:`_one_at_a_time`): a second waits, then finds the first one's sandbox up."""
    with _one_at_a_time(settings):
        return _up(settings, config_path)


def _up(settings: Settings, config_path: Path) -> list[str]:
    registry_part, server_part = parts(settings)
    registry_mark, server_mark = answering(registry_part), answering(server_part)
    listening = [("registry_backend_port", settings.registry_backend_port)] if registry_mark is None else []
    if server_mark is None:  # the sandbox process listens on these (its AWS endpoint, the ECR front, API Gateway)
        listening += [("aws_port", settings.aws_port), ("registry_port", settings.registry_port)]
        listening.append(("api_port", settings.api_port))
        # and its load balancers' listeners, once one exists: another program there would answer wait-healthy and
        # smoke in their place, said only in sandbox.log
        listening += [("listener_ports", port) for port in settings.listener_ports.values()]
    for setting, port in listening:  # every port it will listen on, before anything is started
        if _in_use(port):
            raise SandboxError(
                f"127.0.0.1:{port} ({setting} of deploy.toml's [sandbox]) is in use by another program: the sandbox "
                "cannot listen there, nothing was started",
                f"stop that program (ss -ltnp 'sport = :{port}' names it), or give the sandbox another port: "
                f"{setting} = ... in deploy.toml's [sandbox] (and the URLs of [environments.sandbox] naming it)",
            )
    check_docker()
    if shutil.which("docker-registry") is None:
        raise SandboxError(
            "docker-registry (the CNCF distribution registry) is not installed",
            "run the command through ./dev (it installs it on Debian), or: apt-get install docker-registry",
        )
    registry, server = processes(settings)
    started: list[str] = []
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    try:
        if registry_mark is None:
            registry.stop()
            started.append("registry")
            start_registry(registry, settings.state_dir / "registry", settings.registry_backend_port, settings.root)
        if server_mark is None:
            server.stop()
            started.append("sandbox")
            _spawn(server, [sys.executable, "-m", "sandbox", "serve", "--config", str(config_path)], settings.root)
            _wait(server_part, server, 60, pid_marked=True)
    except BaseException:  # a part that did not come up (or Ctrl-C): what this start started goes, no pid file left
        for process in (server, registry):
            if process.name in started:
                with contextlib.suppress(SandboxError):
                    process.stop(timeout=10)
        raise
    return started


def _in_use(port: int) -> bool:
    """Whether another program listens on 127.0.0.1:``port`` (or on every address): the sandbox could not."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the servers bind: a closing socket is no owner
        try:
            probe.bind(("127.0.0.1", port))
        except OSError as error:
            return error.errno == errno.EADDRINUSE
    return False


STOP_TIMEOUT = 20.0  # seconds the sandbox process has to end after SIGTERM before it is killed


def down(settings: Settings) -> list[str]:
    """Stop what up started, by pid; returns what was stopped. The sandbox process removes its task containers as it
    stops; one that had to be killed could not: they are removed here, or said to remain. Not while a start is under
    way (:func:`_one_at_a_time`)."""
    with _one_at_a_time(settings):
        return _down(settings)


def _down(settings: Settings) -> list[str]:
    registry, server = processes(settings)
    stopped = []
    how = server.end(STOP_TIMEOUT)
    if how is not None:
        stopped.append("sandbox")
    if how == "killed":
        _remove_task_containers(settings)
    if registry.stop():
        stopped.append("registry")
    return stopped


def _remove_task_containers(settings: Settings) -> None:
    """After the sandbox process was killed: remove this checkout's task containers (labelled with its state folder)
    as it would have at its stop, and say so; when the Docker engine cannot, say they remain and how they go."""
    label = f"{TASK_LABEL}={settings.task_owner}"
    killed = f"the sandbox did not end within {STOP_TIMEOUT:g}s of SIGTERM and was killed"
    try:
        import docker.errors

        client = check_docker()
        found = client.containers.list(all=True, filters={"label": label})
        for container in found:
            container.remove(force=True)
    except (SandboxError, docker.errors.DockerException) as exc:
        reason = exc.message if isinstance(exc, SandboxError) else str(exc)
        _say(
            f"{killed}: its task containers may remain ({reason[:100]}); "
            f"docker rm -f $(docker ps -aq --filter label={label}) removes them, and so does the next inv sandbox.up"
        )
        return
    if found:
        _say(f"{killed}: removed its {len(found)} task container(s)")


def reset(settings: Settings, config_path: Path) -> None:
    """Down, forget all state (AWS resources, images in the registry, logs), up. A sandbox another checkout started
    on these ports is not this checkout's to forget: SandboxError, nothing changed."""
    with _one_at_a_time(settings):
        _reset(settings, config_path)


def _reset(settings: Settings, config_path: Path) -> None:
    elsewhere = started_elsewhere(settings)
    if elsewhere:
        raise SandboxError(
            f"the sandbox's {' and '.join(elsewhere)} on these ports were started by another checkout (a second clone "
            "or a worktree): its state is not this checkout's to forget, nothing was changed",
            "run inv sandbox.reset in the checkout that started it",
        )
    _down(settings)
    for name in ("registry", "lambda", "registry-password", "ecr-images.json"):
        path = settings.state_dir / name
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
    _up(settings, config_path)


def status(settings: Settings) -> list[dict[str, object]]:
    """Each part, its address and its health."""
    registry, server = processes(settings)
    rows: list[dict[str, object]] = []
    try:
        check_docker()
        rows.append(
            {
                "part": "docker engine",
                "address": os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock"),
                "healthy": True,
                "detail": "",
            }
        )
    except SandboxError as exc:
        rows.append({"part": "docker engine", "address": "-", "healthy": False, "detail": exc.message[:80]})
    registry_part, server_part = parts(settings)
    try:
        mark = answering(registry_part)
        detail = _owner(registry, registry_part, mark)
    except SandboxBusy:
        mark, detail = None, _BUSY.format(seconds=ANSWER_TIMEOUT)
    except SandboxError:
        mark, detail = None, _TAKEN.format(port=registry_part.port)
    rows.append(
        {
            "part": "registry (distribution)",
            "address": f"http://127.0.0.1:{registry_part.port}",
            "healthy": mark is not None,
            "detail": detail,
        }
    )
    down = {"part": "aws endpoint", "address": settings.endpoint_url, "healthy": False}
    try:
        with _DIRECT.open(server_part.url, timeout=ANSWER_TIMEOUT) as answer:
            mark, listed = answer.headers.get(PID_HEADER), json.loads(answer.read())
    except urllib.error.HTTPError:
        mark, listed = None, None
    except http.client.HTTPException as error:  # an answer, but not in HTTP
        if not isinstance(error, ConnectionError):
            return [*rows, {**down, "detail": _TAKEN.format(port=server_part.port)}]
        return [*rows, {**down, "detail": "not running: inv sandbox.up"}]
    except (OSError, ValueError) as error:
        if _timed_out(error):
            return [*rows, {**down, "detail": _BUSY.format(seconds=ANSWER_TIMEOUT)}]
        return [*rows, {**down, "detail": "not running: inv sandbox.up"}]
    if mark is None:  # an answer, but not the sandbox's
        return [*rows, {**down, "detail": _TAKEN.format(port=server_part.port)}]
    for row in listed:
        if row["part"] == "aws endpoint":
            row["detail"] = f"{row['detail']}, {_owner(server, server_part, mark)}"
        rows.append(row)
    return rows


_TAKEN = "port {port} taken by another program: inv sandbox.up says which"
_BUSY = "running, but no answer within {seconds:g}s: busy or hung (inv sandbox.reset starts it afresh)"


def _owner(process: Process, part: Part, mark: str | None) -> str:
    """Which process a part is: this checkout's (its pid), another checkout's, or none (``mark``: its answer's,
    :func:`answering`)."""
    if mark is None:
        return "not running"
    return f"pid {process.pid()}" if _started_here(process, part, mark) else "started by another checkout"


def log_tail(settings: Settings, part: str | None, lines: int) -> str:
    out = []
    for process in processes(settings):
        if part and part != process.name:
            continue
        if process.log_file.exists():
            text = process.log_file.read_text(errors="replace").splitlines()[-lines:]
            out.append(f"==> {process.log_file} <==\n" + "\n".join(text))
    return "\n\n".join(out) or "no logs yet (inv sandbox.up)"


# -- fault injection (the sandbox's /_sandbox/faults route) ------------------------------------------------


def inject_throttling(
    settings: Settings, service: str, operation: str | None = None, *, count: int = 1
) -> list[dict[str, object]]:
    """Have the sandbox refuse the next ``count`` requests of ``service`` (``"ecs"``, ``"elbv2"``, ``"lambda"``...),
    only those of ``operation`` (``"UpdateService"``) when given, as AWS throttles them; then it answers normally
    again. Returns the faults still to fire."""
    spec: dict[str, object] = {"service": service, "count": count}
    if operation is not None:
        spec["operation"] = operation
    return _faults_call(settings, "POST", {"throttle": spec})


def slow_lambda_updates(settings: Settings, seconds: float) -> None:
    """Have the sandbox's Lambda apply each later update of a function's code or configuration in ``seconds``, as
    AWS does (InProgress until then; another update or a publish meanwhile refused); 0: at once again."""
    _faults_call(settings, "POST", {"lambda_update": {"seconds": seconds}})


def rehearse_image_scans(settings: Settings, findings: list[dict[str, str]], seconds: float = 0.0) -> None:
    """Have the sandbox's ECR scans of images, from now on, find ``findings`` (``{"name": "CVE-2026-0001",
    "severity": "HIGH", "package": "openssl", "version": "3.0.11"}``, package and version optional) and take
    ``seconds`` each; no findings and 0: a scan finds nothing, at once, again."""
    _faults_call(settings, "POST", {"scan_findings": {"findings": findings, "seconds": seconds}})


def clear_faults(settings: Settings) -> None:
    """Forget every injected fault: the sandbox answers normally again."""
    _faults_call(settings, "DELETE")


def pending_faults(settings: Settings) -> list[dict[str, object]]:
    """The injected faults still to fire (a throttle's ``count`` is what remains of it)."""
    return _faults_call(settings, "GET")


def _faults_call(settings: Settings, method: str, payload: dict[str, object] | None = None) -> list[dict[str, object]]:
    url = settings.endpoint_url + FAULTS_PATH
    data = json.dumps(payload).encode() if payload is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with _DIRECT.open(request, timeout=5) as answer:
            body = json.loads(answer.read())
    except urllib.error.HTTPError as exc:
        try:
            reason = str(json.loads(exc.read()).get("error", exc.reason))
        except ValueError:
            reason = str(exc.reason)
        raise SandboxError(
            f"the sandbox refused the fault ({exc.code}): {reason}",
            "fix the fault's service, operation, count or seconds",
        ) from None
    except OSError as exc:
        raise SandboxError(
            f"the sandbox's AWS endpoint {settings.endpoint_url} is not answering: {exc}", "inv sandbox.up"
        ) from None
    return list(body.get("throttle", []))
