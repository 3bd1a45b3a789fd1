"""How ``sandbox.lifecycle`` tells the sandbox's own servers from another program on their ports: the AWS endpoint's
status answer carries its pid, the registry's the distribution API header; and a busy one from a missing one. Real
servers on 127.0.0.1, no Docker."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from unittest.mock import Mock

import pytest
from werkzeug.serving import make_server

from sandbox import lifecycle
from sandbox.server import PartStatus, Sandbox
from sandbox.settings import Settings
from tests.conftest import free_ports


class _NotFound(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_error(404)

    do_HEAD = do_GET

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def foreign_port() -> Iterator[int]:
    """A port another program holds: it answers every request with 404."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _NotFound)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def sandbox(served_sandbox: Settings) -> Settings:
    """The served sandbox (this process's pid in its answers), with no registry on its registry port."""
    return dataclasses.replace(served_sandbox, registry_backend_port=_free_port())


@pytest.fixture
def other_process() -> Iterator[int]:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield child.pid
    child.kill()
    child.wait()


def test_the_sandbox_answers_with_its_pid_and_is_this_checkouts_only_when_its_pid_file_names_that_pid(
    sandbox: Settings, other_process: int
) -> None:
    registry, server = lifecycle.parts(sandbox)
    assert lifecycle.answering(server) == str(os.getpid())
    assert lifecycle.answering(registry) is None  # nothing on its port
    assert not lifecycle.is_up(sandbox)
    pid_file = lifecycle.processes(sandbox)[1].pid_file
    assert lifecycle.started_elsewhere(sandbox) == ["sandbox"]  # no pid file: another checkout's
    assert lifecycle.survey(sandbox) == (False, ["sandbox"])  # both, from one question to each part
    pid_file.parent.mkdir(parents=True)
    lifecycle.write_pid_file(pid_file, other_process)  # a process of ours runs, but it is not the one answering
    assert lifecycle.started_elsewhere(sandbox) == ["sandbox"]
    assert _aws_row(lifecycle.status(sandbox))["detail"].endswith(", started by another checkout")
    lifecycle.write_pid_file(pid_file, os.getpid())
    assert lifecycle.started_elsewhere(sandbox) == []
    assert _aws_row(lifecycle.status(sandbox))["detail"].endswith(f", pid {os.getpid()}")


def test_the_sandbox_is_asked_directly_whatever_proxy_the_environment_names(
    sandbox: Settings, foreign_port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Behind a corporate proxy, HTTP_PROXY is set and NO_PROXY seldom lists 127.0.0.1: the sandbox's own ports were
    asked through the proxy, whose answer read as another program on them."""
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    for name in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy"):
        monkeypatch.setenv(name, f"http://127.0.0.1:{foreign_port}")
    registry, server = lifecycle.parts(sandbox)
    assert lifecycle.answering(server) == str(os.getpid())
    assert lifecycle.answering(registry) is None


def test_another_program_on_the_aws_port_is_named_and_up_starts_nothing(sandbox: Settings, foreign_port: int) -> None:
    taken = dataclasses.replace(sandbox, aws_port=foreign_port)
    with pytest.raises(lifecycle.SandboxError) as raised:
        lifecycle.answering(lifecycle.parts(taken)[1])
    assert raised.value.message.startswith(
        f"127.0.0.1:{foreign_port} is taken by another program: it answered "
        f"http://127.0.0.1:{foreign_port}/_sandbox/status with HTTP 404 (BaseHTTP/"
    )
    assert raised.value.message.endswith(", not as the sandbox's AWS endpoint")
    assert raised.value.next_step == (
        f"stop that program (ss -ltnp 'sport = :{foreign_port}' names it), or give the sandbox another port: "
        "aws_port = ... in deploy.toml's [sandbox]"
    )
    with pytest.raises(lifecycle.SandboxError, match="is taken by another program"):
        lifecycle.is_up(taken)
    with pytest.raises(lifecycle.SandboxError, match="is taken by another program"):
        lifecycle.up(taken, taken.root / "deploy.toml")  # before the Docker engine is even asked
    assert not taken.state_dir.exists()  # nothing started, no pid file written
    row = _aws_row(lifecycle.status(taken))
    assert not row["healthy"]
    assert row["detail"] == f"port {foreign_port} taken by another program: inv sandbox.up says which"


def test_another_program_on_the_registry_port_is_named(sandbox: Settings, foreign_port: int) -> None:
    taken = dataclasses.replace(sandbox, registry_backend_port=foreign_port)
    with pytest.raises(lifecycle.SandboxError, match=r"answered http://127.0.0.1:\d+/v2/ with HTTP 404") as raised:
        lifecycle.up(taken, taken.root / "deploy.toml")
    assert raised.value.message.endswith(", not as the sandbox's registry")
    assert "registry_backend_port = ... in deploy.toml's [sandbox]" in raised.value.next_step
    registry_row = next(r for r in lifecycle.status(taken) if r["part"] == "registry (distribution)")
    assert not registry_row["healthy"] and "taken by another program" in str(registry_row["detail"])


def test_a_started_server_is_waited_for_by_its_own_pid_not_taken_for_one_already_answering(
    sandbox: Settings, other_process: int, foreign_port: int, tmp_path: Path
) -> None:
    server = lifecycle.processes(sandbox)[1]
    part = lifecycle.parts(sandbox)[1]
    server.pid_file.parent.mkdir(parents=True)
    # started, still starting: the answer is some other sandbox's
    lifecycle.write_pid_file(server.pid_file, other_process)
    with pytest.raises(lifecycle.SandboxError, match="did not answer at"):
        lifecycle._wait(part, server, 0.5, pid_marked=True)
    lifecycle.write_pid_file(server.pid_file, os.getpid())
    lifecycle._wait(part, server, 0.5, pid_marked=True)  # its own answer
    # a started server finding its port taken ends: said with what holds the port, and the end of its log
    ended = subprocess.Popen([sys.executable, "-c", "print('address already in use')"])
    ended.wait()
    lifecycle.write_pid_file(server.pid_file, ended.pid)
    server.log_file.write_text("address already in use\n")
    taken = dataclasses.replace(part, port=foreign_port)
    with pytest.raises(lifecycle.SandboxError) as raised:
        lifecycle._wait(taken, server, 5, pid_marked=True)
    assert raised.value.message.startswith(
        f"the sandbox's sandbox did not answer at {taken.url} (127.0.0.1:{foreign_port} is taken by another program"
    )
    assert raised.value.message.endswith("; its log ends with:\naddress already in use")


def _aws_row(rows: list[dict[str, object]]) -> dict[str, object]:
    return next(r for r in rows if r["part"] == "aws endpoint")


@pytest.fixture
def slow_sandbox(tmp_path: Path) -> Iterator[Settings]:
    """The sandbox's WSGI app with a part whose status takes 3 s to read (a registry of thousands of images)."""
    slow = Mock()
    slow.name = "slow"
    slow.status.side_effect = lambda: (time.sleep(3), [PartStatus("slow", "", True, "")])[1]
    server = make_server("127.0.0.1", 0, Sandbox(Settings(root=tmp_path), Mock(), [slow]).wsgi(), threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield Settings(root=tmp_path, aws_port=server.port, registry_backend_port=_free_port())
    server.shutdown()
    thread.join(timeout=10)


def test_whether_the_sandbox_is_there_is_asked_without_reading_its_parts(slow_sandbox: Settings) -> None:
    """Every deploy asks: the answer is its pid alone, however long its parts' status takes to read."""
    started = time.monotonic()
    assert lifecycle.answering(lifecycle.parts(slow_sandbox)[1], timeout=1) == str(os.getpid())
    assert time.monotonic() - started < 1


@pytest.fixture
def hung_port() -> Iterator[int]:
    """A port whose program takes connections (the kernel does, for its backlog) and never answers."""
    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen(8)
        yield int(listening.getsockname()[1])


def test_a_sandbox_that_takes_the_connection_but_does_not_answer_is_left_running_not_started_again(
    sandbox: Settings, hung_port: int, other_process: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Taken for missing, a busy or hung sandbox was stopped by up() and an empty one started: every stack and
    service of the developer's sandbox lost. Now it is said, and nothing is stopped or started."""
    hung = dataclasses.replace(sandbox, aws_port=hung_port)
    server = lifecycle.processes(hung)[1]
    server.pid_file.parent.mkdir(parents=True)
    lifecycle.write_pid_file(server.pid_file, other_process)  # the sandbox process, running
    part = lifecycle.parts(hung)[1]
    with pytest.raises(lifecycle.SandboxBusy) as raised:
        lifecycle.answering(part, timeout=0.3)
    assert raised.value.message == (
        f"the sandbox's AWS endpoint on 127.0.0.1:{hung_port} took the connection but did not answer {part.url} "
        "within 0.3s: busy or hung (it was left running)"
    )
    assert "inv sandbox.reset starts it afresh" in raised.value.next_step
    monkeypatch.setattr(lifecycle, "ANSWER_TIMEOUT", 0.3)
    with pytest.raises(lifecycle.SandboxBusy):
        lifecycle.up(hung, hung.root / "deploy.toml")
    with pytest.raises(lifecycle.SandboxBusy):
        lifecycle.is_up(hung)
    row = _aws_row(lifecycle.status(hung))
    assert server.pid() == other_process  # not stopped
    assert not row["healthy"] and str(row["detail"]).startswith("running, but no answer within 0.3s: busy or hung")


def test_a_pid_file_whose_pid_is_another_program_now_is_dropped_and_that_program_never_signalled(
    tmp_path: Path, other_process: int, capsys: pytest.CaptureFixture[str]
) -> None:
    """After a crash or a reboot, the pid of .sandbox/sandbox.pid or registry.pid may be another program's: down and up
    killed it. Now a pid file holds the start time of its process too, and a pid file whose process is not the one it
    recorded is dropped, said, and its process left alone."""
    settings = Settings(root=tmp_path, aws_port=_free_port(), registry_backend_port=_free_port())
    registry, server = lifecycle.processes(settings)
    settings.state_dir.mkdir()
    server.pid_file.write_text(f"{other_process}\n")  # an older deploykit's pid file: no sandbox runs as that pid
    registry.pid_file.write_text(f"{other_process} 1\n")  # that pid, but a process started at another time
    assert lifecycle.down(settings) == []
    assert lifecycle._alive(other_process), "an unrelated process was signalled"
    assert not server.pid_file.exists() and not registry.pid_file.exists()
    said = capsys.readouterr().err
    assert f"named pid {other_process}, which is no longer the sandbox this checkout started (" in said
    assert "dropped that pid file, nothing was signalled" in said and "registry.pid named pid" in said

    lifecycle.write_pid_file(server.pid_file, other_process)  # as up() writes it: this process, its start time
    assert server.pid_file.read_text().split()[1].isdigit()
    assert lifecycle.processes(settings)[1].pid() == other_process


def test_a_second_start_or_stop_of_the_sandbox_waits_for_the_one_under_way(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Two terminals' `up` at once both found nothing answering: one stopped the server the other had just started
    (by the pid file), and a server could be left that no pid file named. Another process holds this checkout's
    start (as an `inv sandbox.up` would): a stop waits for it, said."""
    settings = Settings(root=tmp_path, aws_port=_free_port(), registry_backend_port=_free_port())
    settings.state_dir.mkdir()
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import fcntl, os, sys, time; f = os.open(sys.argv[1], os.O_RDONLY); fcntl.flock(f, fcntl.LOCK_EX); "
            "print('held', flush=True); time.sleep(60)",
            str(settings.root),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        done = threading.Event()
        stopping = threading.Thread(target=lambda: (lifecycle.down(settings), done.set()), daemon=True)
        stopping.start()
        assert not done.wait(0.5), "the stop did not wait for the start under way"
    finally:
        holder.kill()  # the system lets its lock go
        holder.wait()
    assert done.wait(10)
    said = capsys.readouterr().err
    assert "another start or stop of this sandbox is under way (a second terminal?): waiting for it" in said
    # a root not made yet (a second checkout's settings, as a test makes them): no folder to lock, nothing to stop
    assert lifecycle.down(dataclasses.replace(settings, root=tmp_path / "not-made")) == []


def test_an_old_pid_file_is_ours_when_its_process_runs_the_program_and_stopped(tmp_path: Path) -> None:
    settings = Settings(root=tmp_path)
    server = lifecycle.processes(settings)[1]
    settings.state_dir.mkdir()
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "-m", "sandbox", "serve"])
    try:
        deadline = time.monotonic() + 10  # until its exec: a forked child has the parent's command line first
        while "sandbox serve" not in lifecycle._command_line(child.pid):
            assert time.monotonic() < deadline, lifecycle._command_line(child.pid)
            time.sleep(0.01)
        server.pid_file.write_text(f"{child.pid}\n")  # a pid file of a deploykit before start times
        assert server.pid() == child.pid
        assert lifecycle.down(settings) == ["sandbox"]
        assert not lifecycle._alive(child.pid)  # ended by its SIGTERM (and reaped)
    finally:
        child.kill()
        child.wait()


def test_a_server_of_another_user_is_said_not_a_traceback(
    tmp_path: Path, other_process: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = Settings(root=tmp_path)
    server = lifecycle.processes(settings)[1]
    settings.state_dir.mkdir()
    lifecycle.write_pid_file(server.pid_file, other_process)

    def kill(pid: int, signum: int) -> None:
        if signum:
            raise PermissionError(1, "Operation not permitted")

    with monkeypatch.context() as patched, pytest.raises(lifecycle.SandboxError) as raised:
        patched.setattr(lifecycle.os, "kill", kill)
        lifecycle.down(settings)
    assert raised.value.message.endswith("runs as another user: it cannot be stopped from here")
    assert raised.value.next_step == f"stop it as the user who started it (sudo kill {other_process}), then rerun"


def _free_settings(root: Path) -> Settings:
    aws, registry, backend, api, alb = free_ports(5)
    return Settings(
        root=root,
        aws_port=aws,
        registry_port=registry,
        registry_backend_port=backend,
        api_port=api,
        listener_ports={80: alb},
    )


@pytest.mark.parametrize("setting", ["registry_port", "api_port", "listener_ports"])
def test_every_port_the_sandbox_listens_on_is_checked_before_anything_starts(
    tmp_path: Path, setting: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """registry_port taken: the sandbox process ended with an OSError traceback, leaving docker-registry running and a
    stale sandbox.pid; api_port taken: exit 0 and one ❌ row; a listener's (8080) taken: the other program answered
    wait-healthy and smoke, said only in sandbox.log. Now up() stops before starting anything."""
    settings = _free_settings(tmp_path)
    port = settings.listener_ports[80] if setting == "listener_ports" else getattr(settings, setting)

    def engine() -> None:
        raise AssertionError("up() went on to start the sandbox")

    monkeypatch.setattr(lifecycle, "check_docker", engine)
    with socket.socket() as holder:  # another program's server: listening, never answering
        holder.bind(("127.0.0.1", port))
        holder.listen()
        with pytest.raises(lifecycle.SandboxError) as raised:
            lifecycle.up(settings, tmp_path / "deploy.toml")
    assert raised.value.message == (
        f"127.0.0.1:{port} ({setting} of deploy.toml's [sandbox]) is in use by another program: the sandbox cannot "
        "listen there, nothing was started"
    )
    assert raised.value.next_step.startswith(f"stop that program (ss -ltnp 'sport = :{port}' names it), or give ")
    assert f"{setting} = ... in deploy.toml's [sandbox]" in raised.value.next_step
    assert list(settings.state_dir.glob("*.pid")) == []


def test_a_start_that_fails_part_way_stops_what_it_started(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The registry started, then the sandbox process did not come up: the registry kept running, a sandbox.pid was
    left. Now what this start started is stopped, and no pid file is left."""
    settings = _free_settings(tmp_path)
    registries: list[int] = []

    def start_registry(process: lifecycle.Process, root: Path, port: int, cwd: Path) -> None:
        lifecycle._spawn(process, [sys.executable, "-c", "import time; time.sleep(60)"], cwd)
        registries.append(int(process.pid_file.read_text().split()[0]))

    monkeypatch.setattr(lifecycle, "check_docker", lambda: None)
    monkeypatch.setattr(lifecycle.shutil, "which", lambda name: f"/usr/bin/{name}")
    monkeypatch.setattr(lifecycle, "start_registry", start_registry)
    try:
        with pytest.raises(lifecycle.SandboxError, match="the sandbox's sandbox did not answer at"):
            lifecycle.up(settings, tmp_path / "no-such-deploy.toml")  # the sandbox process fails to read it
        assert not lifecycle._alive(registries[0]), "the registry this start started was left running"
        assert list(settings.state_dir.glob("*.pid")) == []
    finally:
        for pid in registries:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, 9)


@pytest.fixture
def ssh_like_port() -> Iterator[int]:
    """A program that answers every connection with a line that is not HTTP (an SSH server)."""

    def serve(listening: socket.socket) -> None:
        while True:
            try:
                connection, _ = listening.accept()
            except OSError:
                return
            with connection:
                connection.sendall(b"SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n")

    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen(8)
        threading.Thread(target=serve, args=(listening,), daemon=True).start()
        yield int(listening.getsockname()[1])
        listening.shutdown(socket.SHUT_RDWR)


def test_a_program_answering_in_something_other_than_http_is_named_not_a_traceback(
    tmp_path: Path, ssh_like_port: int
) -> None:
    settings = dataclasses.replace(_free_settings(tmp_path), aws_port=ssh_like_port)
    with pytest.raises(lifecycle.SandboxError) as raised:
        lifecycle.up(settings, tmp_path / "deploy.toml")
    assert raised.value.message.startswith(
        f"127.0.0.1:{ssh_like_port} is taken by another program: it answered http://127.0.0.1:{ssh_like_port}"
        "/_sandbox/status with something other than HTTP (BadStatusLine: "
    )
    assert "aws_port = ... in deploy.toml's [sandbox]" in raised.value.next_step
    row = _aws_row(lifecycle.status(settings))
    assert row["detail"] == f"port {ssh_like_port} taken by another program: inv sandbox.up says which"


@pytest.fixture
def stubborn(tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A sandbox process that does not end on SIGTERM (hung), recorded as this checkout's."""
    code = (
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ready', flush=True); time.sleep(60)"
    )
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    assert child.stdout is not None and child.stdout.readline() == b"ready\n"
    yield child
    child.kill()
    child.wait()


def test_a_sandbox_that_had_to_be_killed_has_its_task_containers_removed(
    tmp_path: Path,
    stubborn: subprocess.Popen[bytes],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Killed at the deadline, the sandbox process could not remove its task containers (it does at its stop): down
    said "sandbox down" and they kept running. Now down removes those of this checkout, and says so."""
    settings = Settings(root=tmp_path)
    settings.state_dir.mkdir()
    lifecycle.write_pid_file(lifecycle.processes(settings)[1].pid_file, stubborn.pid)
    containers = [Mock(), Mock()]
    client = Mock()
    client.containers.list.return_value = containers
    monkeypatch.setattr(lifecycle, "check_docker", lambda: client)
    monkeypatch.setattr(lifecycle, "STOP_TIMEOUT", 0.3)
    assert lifecycle.down(settings) == ["sandbox"]
    assert not lifecycle._alive(stubborn.pid)
    client.containers.list.assert_called_once_with(
        all=True, filters={"label": f"io.deploykit.sandbox={tmp_path}/.sandbox"}
    )
    for container in containers:
        container.remove.assert_called_once_with(force=True)
    said = capsys.readouterr().err
    assert "the sandbox did not end within 0.3s of SIGTERM and was killed: removed its 2 task container(s)" in said


def test_a_killed_sandbox_whose_containers_cannot_be_removed_says_they_remain(
    tmp_path: Path,
    stubborn: subprocess.Popen[bytes],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    settings = Settings(root=tmp_path)
    settings.state_dir.mkdir()
    lifecycle.write_pid_file(lifecycle.processes(settings)[1].pid_file, stubborn.pid)

    def engine_down() -> None:
        raise lifecycle.SandboxError("the Docker engine is not answering: gone", lifecycle.START_DOCKER)

    monkeypatch.setattr(lifecycle, "check_docker", engine_down)
    monkeypatch.setattr(lifecycle, "STOP_TIMEOUT", 0.3)
    assert lifecycle.down(settings) == ["sandbox"]
    said = capsys.readouterr().err
    assert (
        "was killed: its task containers may remain (the Docker engine is not answering: gone); docker rm -f " in said
    )
    assert f"--filter label=io.deploykit.sandbox={tmp_path}/.sandbox) removes them, and so does the next inv " in said
