"""./dev and the Docker engine: an engine chosen with DOCKER_HOST that does not answer is named at once; the dockerd
./dev started is known by its pid file and its command line, and only that one is ever stopped."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.functional.test_dev_bytecode import checkout


def test_an_engine_chosen_with_docker_host_that_does_not_answer_is_named_without_starting_dockerd(
    tmp_path: Path,
) -> None:
    (tmp_path / "checkout").mkdir()
    root = checkout(tmp_path / "checkout")
    tools = tmp_path / "bin"
    tools.mkdir()
    calls = tmp_path / "calls"
    for name in ("docker", "dockerd", "docker-registry", "mmdebstrap"):
        # docker answers nothing (its engine is down); dockerd would say it was started
        (tools / name).write_text(f'#!/bin/sh\necho "{name} $*" >> "{calls}"\nexit 1\n')
        (tools / name).chmod(0o755)
    environ = dict(
        os.environ,
        DOCKER_HOST="tcp://127.0.0.1:1",
        PATH=f"{tools}:{os.environ['PATH']}",
        DEPLOYKIT_ENGINE_LOCK=str(tmp_path / "lock"),
    )
    environ.pop("DEPLOYKIT_NO_DOCKER", None)
    started = time.monotonic()
    done = subprocess.run([str(root / "dev"), "true"], capture_output=True, text=True, env=environ, timeout=60)
    assert done.returncode == 2, done.stderr
    assert "the Docker engine at DOCKER_HOST=tcp://127.0.0.1:1 is not answering" in done.stderr
    assert "unset DOCKER_HOST to let ./dev start a local one" in done.stderr
    assert time.monotonic() - started < 10, "it waited for a local dockerd that cannot help"
    assert "dockerd" not in calls.read_text()


def _tools(tmp_path: Path) -> tuple[Path, Path]:
    """A docker that answers once dockerd was started, and a dockerd that says it was; `id` says root (./dev starts
    dockerd as root on Debian only)."""
    tools, calls = tmp_path / "bin", tmp_path / "calls"
    tools.mkdir()
    scripts = {
        "docker": f'[ -f "{tmp_path}/engine-up" ]',
        "dockerd": f'echo "dockerd $*" >> "{calls}"; touch "{tmp_path}/engine-up"',
        "docker-registry": "exit 0",
        "mmdebstrap": "exit 0",
        "id": "echo 0",
    }
    for name, body in scripts.items():
        (tools / name).write_text(f"#!/bin/sh\n{body}\n")
        (tools / name).chmod(0o755)
    return tools, calls


def _environ(tools: Path) -> dict[str, str]:
    # the engine lock of these fake engines, not the machine's
    environ = dict(os.environ, PATH=f"{tools}:{os.environ['PATH']}", DEPLOYKIT_ENGINE_LOCK=str(tools.parent / "lock"))
    for name in ("DEPLOYKIT_NO_DOCKER", "DOCKER_HOST"):
        environ.pop(name, None)
    return environ


@pytest.fixture
def unrelated() -> Iterator[subprocess.Popen[bytes]]:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield child
    child.kill()
    child.wait()


@pytest.mark.skipif(not Path("/etc/debian_version").exists(), reason="./dev starts dockerd on Debian only")
def test_a_stale_dockerd_pid_file_naming_another_program_is_dropped_and_dockerd_started(
    tmp_path: Path, unrelated: subprocess.Popen[bytes]
) -> None:
    """A dockerd.pid left by a crash or a reboot, whose pid another program has now: ./dev took that program for its
    dockerd, started none, and waited 30 s for an engine that never came. Now it is said, and dockerd started."""
    (tmp_path / "checkout").mkdir()
    root = checkout(tmp_path / "checkout")
    tools, calls = _tools(tmp_path)
    (root / ".sandbox").mkdir()
    (root / ".sandbox" / "dockerd.pid").write_text(f"{unrelated.pid}\n")
    started = time.monotonic()
    done = subprocess.run([str(root / "dev"), "true"], capture_output=True, text=True, env=_environ(tools), timeout=60)
    assert done.returncode == 0, done.stderr
    assert time.monotonic() - started < 10
    assert f".sandbox/dockerd.pid named pid {unrelated.pid}, which is no dockerd ./dev started (" in done.stderr
    assert "dropped it, nothing was signalled" in done.stderr and "starting dockerd" in done.stderr
    assert calls.read_text().startswith("dockerd --bridge=none")
    assert unrelated.poll() is None, "the program that has the stale pid was signalled"


@pytest.mark.skipif(not Path("/etc/debian_version").exists(), reason="./dev starts dockerd on Debian only")
def test_two_dev_started_together_start_one_dockerd(tmp_path: Path) -> None:
    """Two ./dev started at once on a machine with no engine (two terminals, two checkouts) each started a dockerd;
    the two raced for containerd and the socket, and one command failed on a reset connection. Now the second waits
    for the first's engine."""
    tools, calls = _tools(tmp_path)
    # an engine that takes a while to answer, as a first dockerd does, and then runs on
    body = f'echo "dockerd $*" >> "{calls}"\necho $$ >> "{tmp_path}/engines"\nsleep 2\ntouch "{tmp_path}/engine-up"\n'
    (tools / "dockerd").write_text(f"#!/bin/sh\n{body}exec sleep 30\n")
    roots = []
    for name in ("one", "two"):
        (tmp_path / name).mkdir()
        roots.append(checkout(tmp_path / name))
    runs = [
        subprocess.Popen([str(root / "dev"), "true"], stderr=subprocess.PIPE, text=True, env=_environ(tools))
        for root in roots
    ]
    try:
        errors = [run.communicate(timeout=20)[1] for run in runs]  # not the 30 s of a held lock
        assert [run.returncode for run in runs] == [0, 0], errors
        assert calls.read_text().count("dockerd --bridge=none") == 1, errors
        assert sum("starting dockerd" in e for e in errors) == 1, errors
        assert not any("did not answer" in e for e in errors), errors
        # the running engine does not hold the lock: the next ./dev that finds it down must not wait on it
        free = subprocess.run(["flock", "-n", str(tmp_path / "lock"), "true"], capture_output=True)
        assert free.returncode == 0, "the dockerd ./dev started holds the engine lock"
    finally:
        for pid in (tmp_path / "engines").read_text().split():
            os.kill(int(pid), signal.SIGTERM)


def test_stop_dockerd_stops_only_the_dockerd_dev_started(tmp_path: Path, unrelated: subprocess.Popen[bytes]) -> None:
    """.ci/run stops the engine at its exit with ./dev --stop-dockerd (before: kill $(cat .sandbox/dockerd.pid), which
    killed whatever process had that pid by then); the README's advice is the same command."""
    (tmp_path / "checkout").mkdir()
    root = checkout(tmp_path / "checkout")
    pid_file = root / ".sandbox" / "dockerd.pid"
    pid_file.parent.mkdir()
    pid_file.write_text(f"{unrelated.pid}\n")
    environ = dict(os.environ)
    done = subprocess.run([str(root / "dev"), "--stop-dockerd"], capture_output=True, text=True, env=environ)
    assert done.returncode == 0, done.stderr
    assert "dropped it, nothing was signalled" in done.stderr and "nothing to stop" in done.stderr
    assert unrelated.poll() is None and not pid_file.exists()
    # one naming no process now (a reboot): said as such, with no shell error about its /proc entry
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    pid_file.write_text(f"{gone.pid}\n")
    done = subprocess.run([str(root / "dev"), "--stop-dockerd"], capture_output=True, text=True, env=environ)
    assert done.returncode == 0, done.stderr
    assert f"named pid {gone.pid}, which is no dockerd ./dev started (no process now)" in done.stderr
    assert "No such file" not in done.stderr and not pid_file.exists()
    # a dockerd ./dev started: its command line is dockerd ... --pidfile <that pid file>
    code = "import time; time.sleep(60)"
    ours = subprocess.Popen(["dockerd", "-c", code, "--pidfile", str(pid_file)], executable=sys.executable)
    try:
        pid_file.write_text(f"{ours.pid}\n")
        done = subprocess.run([str(root / "dev"), "--stop-dockerd"], capture_output=True, text=True, env=environ)
        assert done.returncode == 0, done.stderr
        assert f"stopping the dockerd ./dev started (pid {ours.pid})" in done.stderr
        assert ours.wait(timeout=5) == -signal.SIGTERM
    finally:
        ours.kill()
        ours.wait()


def test_ci_run_stops_the_engine_through_dev_never_by_a_bare_kill() -> None:
    text = (REPO / ".ci" / "run").read_text()
    assert "./dev --stop-dockerd" in text and "kill " not in text


def test_the_parts_install_with_no_service_started_and_those_installed_are_not_enabled_at_boot(
    tmp_path: Path,
) -> None:
    """docker.io and docker-registry start Debian's own dockerd (its bridge network) and a registry on :5000 of every
    interface as they install: a policy-rc.d that starts none is in place while apt-get runs (unless the host has
    one), removed after. (The services of what was installed are disabled at boot on a host running systemd: not
    tried here, where systemd does not run.)"""
    (tmp_path / "checkout").mkdir()
    root = checkout(tmp_path / "checkout")
    tools, calls = _tools(tmp_path)
    (tools / "docker-registry").unlink()  # missing: installed
    system = tmp_path / "system"  # this machine's commands but the parts (which it may have): PATH holds no other
    system.mkdir()
    for folder in ("/usr/local/bin", "/usr/bin", "/bin", "/usr/sbin", "/sbin"):
        for found in Path(folder).iterdir() if Path(folder).is_dir() else ():
            if (
                found.name not in {"docker-registry", "mmdebstrap", "docker", "dockerd"}
                and not (system / found.name).exists()
            ):
                (system / found.name).symlink_to(found)
    policy = tmp_path / "policy-rc.d"
    scripts = {
        "dpkg-query": "exit 1",  # nothing installed
        "dpkg": f'echo "dpkg $*" >> "{calls}"',
        "apt-get": f'echo "apt-get $* policy:$([ -x "{policy}" ] && "{policy}"; echo $?)" >> "{calls}"',
        "systemctl": f'echo "systemctl $*" >> "{calls}"',
    }
    for name, body in scripts.items():
        (tools / name).write_text(f"#!/bin/sh\n{body}\n")
        (tools / name).chmod(0o755)
    environ = dict(_environ(tools), DEPLOYKIT_POLICY_RC=str(policy), PATH=f"{tools}:{system}")
    done = subprocess.run([str(root / "dev"), "true"], capture_output=True, text=True, env=environ, timeout=120)
    assert done.returncode == 0, done.stderr
    said = calls.read_text().splitlines()
    [install] = [line for line in said if line.startswith("apt-get install")]
    assert "docker-registry" in install and install.endswith("policy:101")  # no service started meanwhile
    assert said[0] == "dpkg --configure -a"  # an install cut short before, finished first
    assert not policy.exists()  # removed after
    policy.write_text("#!/bin/sh\nexit 0\n")  # the host's own: kept as it is
    policy.chmod(0o755)
    (tools / "docker-registry").unlink(missing_ok=True)
    done = subprocess.run([str(root / "dev"), "true"], capture_output=True, text=True, env=environ, timeout=120)
    assert done.returncode == 0, done.stderr
    assert policy.read_text() == "#!/bin/sh\nexit 0\n"
    assert calls.read_text().splitlines()[-1].endswith("policy:0")  # the host's policy, as it says
