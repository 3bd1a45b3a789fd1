"""The tasks as a user runs them: bad input exits 2 with a clear message and changes nothing."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, free_ports, git


def inv(
    cwd: Path,
    *args: str,
    drop: tuple[str, ...] = ("DEPLOYKIT_",),
    timeout: float = 60,
    stdout: int | None = None,
    **env: str,
) -> subprocess.CompletedProcess[str]:
    """``inv ARGS`` in ``cwd`` as a user types it, without this environment's variables starting with ``drop``;
    no stdin (a question is answered "no"); its stdout to the file descriptor ``stdout`` when given, else kept."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    # Docker is pointed nowhere: these commands must fail before they would need it.
    environ.update(DOCKER_HOST="unix:///nonexistent/docker.sock", **env)
    return subprocess.run(
        [sys.executable, "-m", "invoke", "--search-root", str(REPO), *args],
        cwd=cwd,
        stdout=subprocess.PIPE if stdout is None else stdout,
        stderr=subprocess.PIPE,
        text=True,
        env=environ,
        stdin=subprocess.DEVNULL,
        timeout=timeout,
    )


@pytest.mark.parametrize("args", [("--list",), ("--help", "deploy.app"), ("envs", "--json")])
def test_a_reader_gone_before_the_output_ends_it_without_a_traceback(project: Path, args: tuple[str, ...]) -> None:
    """inv --list | head -1, inv envs --json | head -c 10: the reader goes, the command ends as it would have (a
    BrokenPipeError's traceback and exit 1 before)."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        done = inv(project, *args, stdout=write_end)
    finally:
        os.close(write_end)
    assert "Traceback" not in done.stderr and "Broken pipe" not in done.stderr
    assert done.returncode == 0, done.stderr


def test_a_json_command_refused_before_its_plan_says_why_on_stdout_too(project: Path) -> None:
    done = inv(project, "deploy.auto", "--dry-run", "--json", "--env", "nosuch")
    assert done.returncode == 2
    said = json.loads(done.stdout)
    assert said["ok"] is False and said["error"]["exit_code"] == 2
    assert said["error"]["message"].startswith("unknown environment 'nosuch'")
    assert f"❌ {said['error']['message']}" in done.stderr
    assert inv(project, "deploy.auto", "--dry-run", "--env", "nosuch").stdout == ""  # without --json: stderr alone


@pytest.mark.parametrize("encoding", [{"LC_ALL": "C", "PYTHONUTF8": "0"}, {"PYTHONIOENCODING": "latin-1"}])
def test_a_locale_that_cannot_say_an_emoji_gets_it_escaped_not_a_traceback(
    project: Path, encoding: dict[str, str]
) -> None:
    """inv --list in an ASCII or Latin-1 locale: UnicodeEncodeError for the → of a task's help (exit 1)."""
    done = inv(project, "--list", **encoding)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    assert "\\u2192" in done.stdout


@pytest.mark.parametrize("args", [("--list",), ("envs", "--json")])
def test_output_lost_to_a_full_disk_is_said_and_fails(project: Path, args: tuple[str, ...]) -> None:
    """inv envs --json > file on a full disk: exit 1 saying the output was lost (a traceback before, or exit 0 with
    the file empty)."""
    with open("/dev/full", "w") as full:
        done = inv(project, *args, stdout=full.fileno())
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    assert "❌ the command ran to its end, but its output was lost (stdout: No space left on device)" in done.stderr
    assert "→ next: make room where it goes (or send it elsewhere) and run the command again" in done.stderr


def test_list_shows_the_five_chain_tasks_with_help(project: Path) -> None:
    done = inv(project, "--list")
    assert done.returncode == 0
    for name in (
        "build",
        "push",
        "register-taskdef",
        "roll-service",
        "wait-healthy",
        "base-image",
        "deploy.app",
    ):
        assert f"  {name} " in done.stdout, name
    helped = inv(project, "-h", "build")
    assert "--allow-dirty" in helped.stdout and "--dry-run" in helped.stdout and "--json" in helped.stdout


def test_unknown_environment_exits_2(project: Path) -> None:
    done = inv(project, "build", "--env", "staging")
    assert done.returncode == 2
    assert "unknown environment 'staging'" in done.stderr and "→ next:" in done.stderr


def test_an_option_the_task_does_not_have_exits_2_with_the_one_meant(project: Path) -> None:
    """As a user types it: invoke reads tasks.py, whose parse errors are deploykit's bad input."""
    done = inv(project, "deploy.auto", "--dryrun")
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        "❌ inv deploy.auto has no option --dryrun",
        "  → next: did you mean --dry-run? (inv --help deploy.auto lists its options)",
    ]


def test_a_command_line_invoke_cannot_parse_with_json_prints_the_refusal_on_stdout_too(project: Path) -> None:
    """A CI script's jq read nothing: the refusal went to stderr alone, though a command refused before it has a
    plan prints it on stdout with --json."""
    for args, message in [
        (("deploy.auto", "--dryrun", "--json"), "inv deploy.auto has no option --dryrun"),
        (("deploy.auto", "-j", "--dryrun"), "inv deploy.auto has no option --dryrun"),  # --json's short flag
        (("history", "--json", "--limit", "abc"), "inv history: --limit takes a whole number"),
    ]:
        done = inv(project, *args)
        assert done.returncode == 2
        refused = json.loads(done.stdout)
        assert refused["ok"] is False and refused["error"]["exit_code"] == 2
        assert refused["error"]["message"].startswith(message) and refused["error"]["next_step"]
        assert done.stderr.startswith(f"❌ {refused['error']['message']}")
    assert inv(project, "deploy.auto", "--dryrun").stdout == ""  # without --json: stderr alone


def test_a_switch_set_to_neither_on_nor_off_is_refused_before_the_command_starts(project: Path) -> None:
    done = inv(project, "deploy.auto", "--dry-run", DEPLOYKIT_SKIP_RELEASE="y")
    assert done.returncode == 2
    assert done.stderr.splitlines()[0] == (
        "❌ $DEPLOYKIT_SKIP_RELEASE is 'y': neither on (1, true, yes, on) nor off (0, false, no, off, or unset)"
    )


def test_destroy_of_a_stack_that_is_none_of_the_teams_says_so_before_it_asks_for_a_confirmation(project: Path) -> None:
    """It said "destroy needs a confirmation and there is no terminal to ask on" (on a terminal, it had the person
    type the environment's name), then that the stack is unknown."""
    done = inv(project, "destroy", "--stack", "nosuch", "--env", "dev")
    assert done.returncode == 2
    assert done.stderr.startswith("❌ 'nosuch' is no stack role of environment 'dev': --stack deletes stacks of")


def test_a_list_format_invoke_does_not_have_exits_2_naming_those_it_has(project: Path) -> None:
    """invoke looked for a method list_nosuch: an AttributeError's traceback, exit 1."""
    done = inv(project, "--list-format", "nosuch", "--list")
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        "❌ --list-format takes flat, nested or json, not 'nosuch'",
        "  → next: inv --list --list-format nested",
    ]


@pytest.mark.parametrize(
    ("args", "word"),
    [(("invoke", "--help"), "FUNCTION"), (("run", "--help"), "COMMAND"), (("deploy.stack", "--dry"), "NAME")],
)
def test_a_flag_given_where_a_task_takes_its_name_is_refused_not_run(
    project: Path, args: tuple[str, ...], word: str
) -> None:
    """invoke hands a flag after a task's name to a positional still unfilled (pyinvoke/invoke#982): `inv run --help`
    would run the command '--help' in a one-off task. Refused, exit 2, before the sandbox is started or AWS read."""
    done = inv(project, *args)
    assert done.returncode == 2
    task, flag = args
    assert done.stderr.splitlines() == [
        f"❌ '{flag}' was taken for {word}: invoke takes a flag written where the task's {word} goes for the {word} "
        "itself (pyinvoke/invoke#982)",
        f"  → next: this task's help: inv --help {task}; to run it, give {word} first: inv {task} {word} [--options]",
    ]


def test_no_logs_without_watch_exits_2(project: Path) -> None:
    done = inv(project, "deploy.auto", "--no-logs", "--dry-run")
    assert done.returncode == 2 and "--no-logs goes with --watch" in done.stderr


def test_watch_with_a_dry_run_exits_2_before_anything_runs(project: Path) -> None:
    done = inv(project, "deploy.auto", "--watch", "--dry-run")
    assert done.returncode == 2
    assert "--watch deploys the work tree as it changes: it does not go with --dry-run" in done.stderr
    done = inv(project, "deploy.auto", "--watch", "--unpromoted")  # was: left out without a word
    assert done.returncode == 2 and "--watch-errors, --watch-alarms or --unpromoted" in done.stderr
    done = inv(project, "deploy.auto", "--watch", "--watch-alarms", "10m")  # the loop reads the alarms once
    assert done.returncode == 2 and "it does not go with --dry-run" in done.stderr
    done = inv(project, "deploy.app", "--watch-alarms", "10m", "--dry-run")  # no alarms named in this deploy.toml
    assert (
        done.returncode == 2 and "--watch-alarms 10m: [environments.sandbox.alarm_watch] names no alarms" in done.stderr
    )


def test_the_alarms_and_their_wait_without_alarms_named_exit_2(project: Path) -> None:
    done = inv(project, "alarms", "--wait", "5m")  # this deploy.toml names none
    assert done.returncode == 2 and "[environments.sandbox.alarm_watch] names no alarms in deploy.toml" in done.stderr
    done = inv(project, "rollback", "--wait-alarms", "5m", "--dry-run")
    assert done.returncode == 2
    assert "--wait-alarms 5m: [environments.sandbox.alarm_watch] names no alarms" in done.stderr


def test_perf_refuses_a_stack_and_too_long_a_window_with_exit_2(project: Path) -> None:
    done = inv(project, "perf", "--component", "stack:data")
    assert done.returncode == 2 and "a stack serves no request of its own" in done.stderr
    done = inv(project, "perf", "--since", "30d")
    assert done.returncode == 2 and "further than CloudWatch keeps each minute's figures" in done.stderr


def test_malformed_deploy_toml_exits_2(project: Path) -> None:
    (project / "deploy.toml").write_text("[environments.sandbox\n")
    for task in ("build", "sandbox.status"):  # the sandbox's tasks read the file too: a traceback before
        done = inv(project, task)
        assert done.returncode == 2 and "is not valid TOML" in done.stderr and "Traceback" not in done.stderr


def test_unknown_key_exits_2_and_names_it(project: Path) -> None:
    text = (project / "deploy.toml").read_text().replace('container = "backend"', 'containr = "backend"', 1)
    (project / "deploy.toml").write_text(text)
    done = inv(project, "push")
    assert done.returncode == 2 and "environments.sandbox.containr" in done.stderr


def test_an_unknown_sandbox_setting_exits_2_and_names_the_known_ones(project: Path) -> None:
    text = (project / "deploy.toml").read_text()
    assert "[sandbox]" not in text
    (project / "deploy.toml").write_text(text + "\n[sandbox]\nprotected = true\n")
    # every task, those that never read the table too (inv envs, a dry run: exit 0 before)
    for args in (["deploy.auto"], ["sandbox.status"], ["envs"], ["destroy", "--dry-run"]):
        done = inv(project, *args)
        assert done.returncode == 2, (args, done.stderr)
        assert "unknown key(s) in [sandbox]: protected (known: api_port, aws_port, " in done.stderr
        assert "→ next: fix the [sandbox] table of deploy.toml" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (("run", "true", "--image-tag", ""), "--image-tag is empty ('')"),  # not: the image running now
        (("freeze", "--reason", "x", "--until", " "), "--until is empty (' ')"),  # not: a freeze with no end
        (("deploy.stack", ""), "NAME is empty ('')"),
        (("smoke", "--only", ""), "--only is empty ('')"),  # not: every check
    ],
)
def test_an_empty_value_is_refused_before_anything_is_read_or_started(
    project: Path, args: tuple[str, ...], said: str
) -> None:
    done = inv(project, *args)
    assert done.returncode == 2 and f"❌ {said}: an unset variable?" in done.stderr, done.stderr
    assert "sandbox" not in done.stderr  # nothing started, nothing asked


def _sandbox_on_free_ports(project: Path) -> None:
    """The project's sandbox on ports nothing listens on: whatever sandbox runs on this machine (another test's, the
    developer's), this one is not running."""
    aws, registry, backend, api = free_ports(4)
    # the sandbox environment's URLs name its ports: both in one pass (one after the other, an AWS port of 4567x
    # became 4567x's api port and a trailing digit: 127.0.0.1:342975)
    ports = {"4566": aws, "4567": api}
    text = re.sub(
        r"127\.0\.0\.1:(4566|4567)\b", lambda m: f"127.0.0.1:{ports[m[1]]}", (project / "deploy.toml").read_text()
    )
    text = text.replace('registry = "127.0.0.1:5000"', f'registry = "127.0.0.1:{registry}"')
    text += f"\n[sandbox]\naws_port = {aws}\nregistry_port = {registry}\nregistry_backend_port = {backend}\n"
    (project / "deploy.toml").write_text(text + f"api_port = {api}\n")
    git(project, "commit", "-qam", "a sandbox of its own")


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (("tasks", "--stopped", "-3"), "--stopped must be 0 or more (got -3)"),
        (("deploy.stack", "NoSuchStack"), "unknown stack 'NoSuchStack' in environment 'sandbox'"),
        (("rollback", "--to", "xyz"), "environment 'sandbox' pushes to a plain registry (127.0.0.1:"),
        (("rollback", "--run", "2026-02-30T10:00:00Z"), "--run 2026-02-30T10:00:00Z: there is no such time"),
        (("rollback", "--component", "stack:data", "--to", "no-such-branch"), "--to no-such-branch: no commit, tag or"),
        (("rollback", "--component", "stack:data", "--to", "abcdef1-dirty-ff"), "is a build of uncommitted changes"),
        (("deploy.auto", "--since", "no-such-ref"), "--since no-such-ref: no such commit in this clone's history"),
        (("diff", "--since", "no-such-ref"), "--since no-such-ref: no such commit in this clone's history"),
        (("run", "true", "--timeout", "0"), "--timeout 0: the command would be stopped before it starts"),
        (("run", "true", "--timeout", "9" * 400 + "h"), "h' is not a duration (of a year at most)"),
        (("run", "true", "--image-tag", "a b"), "--image-tag 'a b' cannot name an image"),
        (("scan", "--image-tag", ".hidden"), "--image-tag '.hidden' cannot name an image"),
        (("logs", "--since", "2999-01-01T00:00:00Z"), "--since 2999-01-01T00:00:00Z is to come"),
        (("report", "--since", "2999-01-01T00:00:00Z"), "--since 2999-01-01T00:00:00Z is to come"),
        (("smoke", "--only", "no_such_check"), "unknown check(s): no_such_check"),
        (("unlock",), "unlock needs a confirmation and there is no terminal to ask on"),
        (("history", "--limit", "0"), "--limit must be at least 1 (got 0)"),
        (("images.cleanup", "--keep", "0"), "--keep must be at least 1 (got 0)"),
        (("freeze", "--until", "1h"), "a freeze needs a reason"),
    ],
)
def test_bad_input_is_refused_before_the_sandbox_is_started(project: Path, args: tuple[str, ...], said: str) -> None:
    """A task that starts the sandbox when it is not running (tasks._SandboxFirst) does so when its command first
    asks for the environment's AWS: after the options are checked. A typo starts nothing and is named as such (it
    was: moto and the registry started, or the Docker engine's absence said instead)."""
    _sandbox_on_free_ports(project)
    done = inv(project, *args)
    assert done.returncode == 2 and done.stderr.startswith("❌ ") and said in done.stderr.splitlines()[0], done.stderr
    assert "🧪" not in done.stderr and not (project / ".sandbox").exists()


def test_a_task_that_needs_the_sandbox_starts_it(project: Path) -> None:
    """The other side of the test above: good options, the sandbox not running: started (here the Docker engine is
    pointed nowhere, so its start is refused with how to start the engine)."""
    _sandbox_on_free_ports(project)
    done = inv(project, "tasks")
    assert done.returncode == 2
    assert "🧪 the sandbox is not running: starting it (inv sandbox.up)" in done.stderr
    assert "Docker engine is not answering" in done.stderr


def test_a_canary_option_that_is_not_a_number_exits_2(project: Path) -> None:
    done = inv(project, "deploy.lambda", "login_handler", "--canary", "ten", "--dry-run")
    assert done.returncode == 2 and "--canary 'ten' is not a percentage" in done.stderr, done.stderr
    done = inv(project, "deploy.auto", "--bake", "5m", "--dry-run")
    assert done.returncode == 2 and "--bake is how long a canary runs, and there is none here" in done.stderr
    done = inv(project, "deploy.app", "--watch-errors", "soon", "--dry-run")
    assert done.returncode == 2 and "--watch-errors 'soon' is not a duration" in done.stderr


def test_dirty_tree_exits_2_and_changes_nothing(project: Path) -> None:
    (project / "backend" / "app" / "main.py").write_text("# edited\n")
    before = git(project, "status", "--porcelain")
    done = inv(project, "build")
    assert done.returncode == 2
    assert "uncommitted changes: backend/app/main.py" in done.stderr and "--allow-dirty" in done.stderr
    assert git(project, "status", "--porcelain") == before


def test_a_dirty_build_is_tagged_dirty_only_when_the_changes_touch_the_image(project: Path) -> None:
    head = git(project, "rev-parse", "HEAD").strip()[:12]
    (project / "docs").mkdir()
    (project / "docs" / "notes.md").write_text("uncommitted, outside the image\n")
    done = inv(project, "build", "--allow-dirty", "--dry-run")
    assert done.returncode == 0, done.stderr
    assert f"car-rental-backend:{head} " in done.stderr  # HEAD's image, named as HEAD's
    (project / "backend" / "app" / "main.py").write_text("# edited\n")
    done = inv(project, "build", "--allow-dirty", "--dry-run")
    assert done.returncode == 0 and f"car-rental-backend:{head}-dirty-" in done.stderr


def test_docker_engine_not_running_exits_2_with_how_to_start_it(project: Path) -> None:
    done = inv(project, "build")
    assert done.returncode == 2
    assert "Docker engine is not answering" in done.stderr and "dockerd --bridge=none" in done.stderr


def test_sandbox_endpoint_down_exits_2(project: Path) -> None:
    text = (project / "deploy.toml").read_text().replace('registry = "127.0.0.1:5000"\n', "", 1)
    text = text.replace("http://127.0.0.1:4566", "http://127.0.0.1:9")  # nothing listens on the discard port
    # another local AWS than the sandbox's (whose environment names the sandbox's ports: deploy.toml's check)
    text = text.replace("environments.sandbox", "environments.local").replace(
        'default_env = "sandbox"', 'default_env = "local"'
    )
    (project / "deploy.toml").write_text(text)
    git(project, "commit", "-qam", "no registry override")
    done = inv(project, "register-taskdef")
    assert done.returncode == 2
    assert "is not answering" in done.stderr and "inv sandbox.up" in done.stderr


@pytest.mark.parametrize("task", ["build", "push", "register-taskdef", "roll-service", "wait-healthy", "deploy.app"])
def test_dry_run_of_each_task_needs_neither_docker_nor_aws(project: Path, task: str) -> None:
    text = (project / "deploy.toml").read_text()  # no AWS at all, even with a sandbox up on this machine
    text = text.replace("http://127.0.0.1:4566", "http://127.0.0.1:9")
    (project / "deploy.toml").write_text(text + "\n[sandbox]\naws_port = 9\n")
    git(project, "commit", "-qam", "the sandbox's endpoint: nothing there")
    done = inv(project, task, "--dry-run")
    assert done.returncode == 0, done.stderr
    assert "dry run: nothing is changed" in done.stderr
    if task in ("roll-service", "deploy.app"):  # a deploy's dry run reads the pause (its wake shown) when it can
        assert "ℹ️  whether sandbox is paused could not be read (the sandbox's AWS endpoint" in done.stderr


def test_invoke_takes_a_version_number_from_1_in_ascii_digits(project: Path) -> None:
    (project / "lambda" / "login_handler").mkdir(parents=True)
    (project / "lambda" / "login_handler" / "handler.py").write_text("def handler(event, context):\n    return {}\n")
    git(project, "add", "-A")
    git(project, "commit", "-qm", "a function")
    for version in ("0", "٣", "1.0"):
        done = inv(project, "invoke", "login_handler", "--version", version)
        assert done.returncode == 2 and f"--version {version!r} is not a version of a function" in done.stderr


def test_the_sandbox_rehearsals_refuse_what_they_cannot_do(project: Path) -> None:
    done = inv(project, "sandbox.scan-findings", "--clear", "--finding", "CVE-2026-0001:HIGH")
    assert done.returncode == 2 and "--clear forgets every finding and the scan's time: it goes alone" in done.stderr
    done = inv(project, "sandbox.throttle", "--service", "ecs", "--count", "0")
    assert done.returncode == 2 and "--count 0: throttle 1 request or more" in done.stderr


def test_a_function_packaging_would_refuse_is_refused_before_the_environment_is_read(project: Path) -> None:
    """An unpinned requirement was found as the zip was made, after the environment was read (and the sandbox
    started): now before, for deploy.lambda and for deploy.full."""
    _sandbox_on_free_ports(project)
    (project / "lambda" / "login_handler").mkdir(parents=True)
    (project / "lambda" / "login_handler" / "handler.py").write_text("def handler(event, context):\n    return {}\n")
    (project / "lambda" / "login_handler" / "requirements.txt").write_text("requests\n")
    git(project, "add", "-A")
    git(project, "commit", "-qm", "a function with an unpinned requirement")
    for args in (("deploy.lambda", "login_handler"), ("deploy.full",)):
        done = inv(project, *args)
        assert done.returncode == 2, done.stderr
        assert "requirements.txt: 'requests' is not pinned, so the package would change with the day" in done.stderr
        assert "🧪" not in done.stderr


def test_an_environment_that_asks_first_with_no_one_to_ask_is_refused_before_it_is_read(project: Path) -> None:
    """confirm = true, no terminal, no --yes: a command whose plan always changes the environment is refused before
    the environment is read (and the sandbox started), not once its plan is made."""
    _sandbox_on_free_ports(project)
    toml = project / "deploy.toml"
    toml.write_text(toml.read_text().replace("[environments.sandbox]\n", "[environments.sandbox]\nconfirm = true\n", 1))
    git(project, "commit", "-qam", "the sandbox asks first")
    for args in (("deploy.stack", "CarRentalDataStack"), ("deploy.full",), ("restart",), ("roll-service",)):
        done = inv(project, *args)
        assert done.returncode == 2, done.stderr
        assert "sandbox asks before each change (confirm = true in deploy.toml) and there is no terminal" in done.stderr
        assert "🧪" not in done.stderr
    done = inv(project, "restart", "--yes")  # answered: goes on to read the environment, and start the sandbox for it
    assert "🧪 the sandbox is not running: starting it" in done.stderr
