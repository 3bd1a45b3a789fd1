"""Infrastructure faults during deploy.auto on a private sandbox: the registry down, AWS throttling, a broken build,
two deploys at once, Ctrl-C while the service rolls and while a stack updates, a stack whose rollback fails.

Each test commits a change, provokes the fault and checks what a person is left with: an error that names the
problem and the next step, the exit code, the previous version still answering on the ALB, nothing half-deployed
(the service's PRIMARY deployment still runs the old image, or a rollout ECS finishes on its own), the lock free;
then the fault is removed and deploy.auto run again converges. Each prints its time for the README's figures.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import docker
import pytest
from botocore.exceptions import ClientError

from deploykit import commands
from deploykit.aws import AwsFactory
from deploykit.config import EnvConfig, load_config
from deploykit.errors import DeployKitError
from deploykit.lock import EnvLock, LockInfo
from deploykit.plan import RunReport
from sandbox import lifecycle
from sandbox.settings import Settings, load_settings
from tests.conftest import REPO, git, quiet_runtime
from tests.integration.sandbox_support import deployed_sandbox_project, version_of

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("base_image")]

MAX_ATTEMPTS = 2  # botocore's max_attempts counts retries: 3 attempts in all, so a throttled call gives up fast
DRAIN = "DEREGISTRATION_DELAY = Duration.seconds({})"
BROKEN_STEP = "RUN echo 'compiling the fleet' && exit 3"


@dataclass(frozen=True)
class Sandboxed:
    """The module's project (a temporary git clone) and its private sandbox."""

    root: Path
    settings: Settings
    env: EnvConfig
    alb_url: str

    def client(self, service: str) -> Any:
        return boto3.client(
            service,  # type: ignore[call-overload]
            endpoint_url=self.settings.endpoint_url,
            region_name=self.settings.region,
            aws_access_key_id="x",
            aws_secret_access_key="x",
        )

    def head(self) -> str:
        return git(self.root, "rev-parse", "HEAD").strip()

    def live_version(self) -> str:
        """The git SHA of the backend answering on the ALB."""
        return version_of(self.alb_url)

    def primary_tag(self) -> str:
        """The image tag the service's PRIMARY deployment runs."""
        service = self.service()
        primary = next(d for d in service["deployments"] if d["status"] == "PRIMARY")
        taskdef = self.client("ecs").describe_task_definition(taskDefinition=primary["taskDefinition"])
        image = next(c["image"] for c in taskdef["taskDefinition"]["containerDefinitions"] if c["name"] == "backend")
        return str(image).rsplit(":", 1)[-1]

    def service(self) -> dict[str, Any]:
        answer = self.client("ecs").describe_services(cluster=self.env.cluster, services=[self.env.service])
        return dict(answer["services"][0])

    def wait_stable(self, timeout: float = 90) -> dict[str, Any]:
        """The service once it has one deployment, COMPLETED, running what it wants."""
        deadline = time.monotonic() + timeout
        while True:
            service = self.service()
            deployments = service["deployments"]
            if (
                len(deployments) == 1
                and deployments[0].get("rolloutState") == "COMPLETED"
                and deployments[0]["runningCount"] == deployments[0]["desiredCount"]
            ):
                return service
            assert time.monotonic() < deadline, f"the service never settled: {deployments}"
            time.sleep(0.3)

    def lock_holder(self) -> LockInfo | None:
        lock = EnvLock.of(AwsFactory(self.env), self.env)
        assert lock is not None, "the registry stack (the lock's bucket) is deployed"
        found = lock.read()
        return found.info if found else None

    def taskdef_revisions(self) -> int:
        return len(self.client("ecs").list_task_definitions()["taskDefinitionArns"])

    def commit_backend_change(self, label: str) -> str:
        fleet = self.root / "backend" / "app" / "fleet.py"
        fleet.write_text(fleet.read_text() + f"\n# {label}\n")
        git(self.root, "commit", "-qam", f"backend: {label}")
        return self.head()


def fewer_retries(root: Path) -> None:
    """A throttled call gives up after 3 attempts, not 6."""
    toml = root / "deploy.toml"
    toml.write_text(
        toml.read_text().replace("poll_interval = 0.5\n", f"poll_interval = 0.5\nmax_attempts = {MAX_ATTEMPTS}\n")
    )
    git(root, "commit", "-qam", "faults: 3 attempts")


@pytest.fixture(scope="module")
def sandboxed(tmp_path_factory: pytest.TempPathFactory, docker_engine: docker.DockerClient) -> Iterator[Sandboxed]:
    started = time.monotonic()
    with deployed_sandbox_project(tmp_path_factory.mktemp("faults"), prepare=fewer_retries) as root:
        toml = root / "deploy.toml"
        env = load_config(toml).environment()
        alb_url = commands.endpoints(runtime=quiet_runtime(root)).alb_url.rstrip("/")
        print(f"\nfaults: sandbox up and deploy.full in {time.monotonic() - started:.1f}s")
        yield Sandboxed(root, load_settings(toml), env, alb_url)


@pytest.fixture
def sandbox(sandboxed: Sandboxed) -> Iterator[Sandboxed]:
    """The module's sandbox, converged and unlocked before each test, with no fault left behind after it."""
    assert sandboxed.lock_holder() is None
    yield sandboxed
    lifecycle.clear_faults(sandboxed.settings)


# -- running deploy.auto ---------------------------------------------------------------------------------------


@dataclass
class Run:
    report: RunReport | None
    error: DeployKitError | None
    output: str
    seconds: float


def auto(project: Path) -> Run:
    """deploy.auto in this process, as the task runs it; its failure caught."""
    runtime = quiet_runtime(project)
    started = time.monotonic()
    report, error = None, None
    try:
        report = commands.deploy_auto(runtime=runtime)
    except DeployKitError as exc:
        error = exc
    output = runtime.stderr.getvalue() + runtime.stdout.getvalue()  # type: ignore[attr-defined]
    return Run(report, error, output, time.monotonic() - started)


def converges(sandbox: Sandboxed) -> Run:
    """deploy.auto again, with the fault gone: it succeeds, and what HEAD deploys answers on the ALB."""
    run = auto(sandbox.root)
    assert run.error is None, run.output
    assert run.report is None or run.report.ok, run.output
    assert sandbox.lock_holder() is None
    return run


def inv_deploy_auto(project: Path, **env: str) -> subprocess.Popen[str]:
    """``inv deploy.auto`` as a person types it, in a process of its own. SIGINT is restored to its default in the
    child (a process started in the background inherits it ignored), so a SIGINT is a Ctrl-C."""
    inherited = {key: value for key, value in os.environ.items() if key != "DEPLOYKIT_BLOCK_PLUGINS"}
    return subprocess.Popen(
        [sys.executable, "-m", "invoke", "--search-root", str(REPO), "deploy.auto"],
        cwd=project,
        # a child that hangs dumps every thread's stack on the watchdog's SIGABRT (interrupt_when), for the failure
        env={**inherited, "DEPLOYKIT_CONFIG": str(project / "deploy.toml"), "PYTHONFAULTHANDLER": "1", **env},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def interrupt_when(
    process: subprocess.Popen[str], marker: str, delay: float = 0.0, until: Callable[[], bool] | None = None
) -> tuple[str, float]:
    """Ctrl-C ``process`` once its stderr shows ``marker`` (and ``delay`` more seconds, or as soon after as ``until``
    says); its whole stderr and the seconds from start to the signal. A watchdog ends it if the marker never comes,
    or it never ends: SIGABRT first, on which it prints where each of its threads stands (PYTHONFAULTHANDLER), then
    SIGKILL."""
    started = time.monotonic()

    def abort_then_kill() -> None:
        process.send_signal(signal.SIGABRT)
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()

    watchdog = threading.Timer(240, abort_then_kill)
    watchdog.start()
    lines: list[str] = []
    signalled = 0.0
    try:
        assert process.stderr is not None
        for line in process.stderr:
            lines.append(line)
            if not signalled and marker in line:
                time.sleep(delay)
                deadline = time.monotonic() + 10
                while until is not None and not until() and time.monotonic() < deadline:
                    time.sleep(0.01)
                process.send_signal(signal.SIGINT)
                signalled = time.monotonic() - started
        process.wait(timeout=60)
    finally:
        watchdog.cancel()
        if process.poll() is None:
            process.kill()
            process.wait()
    assert signalled, f"{marker!r} never showed:\n" + "".join(lines)
    err = "".join(lines)
    if "to exit after the interrupt" in err:  # it left through the exit grace (tasks.py): said, with its threads
        wedged = err[err.index("⚠️  deploykit") :]
        warnings.warn(f"the interrupted inv deploy.auto wedged on its way out:\n{wedged}", stacklevel=2)
    return err, signalled


def assert_untouched(sandbox: Sandboxed, old: str) -> None:
    """The previous release still answers and runs as PRIMARY; nobody holds the lock."""
    assert sandbox.live_version() == old
    assert sandbox.primary_tag() == old[:12]
    assert sandbox.lock_holder() is None


# -- the faults ------------------------------------------------------------------------------------------------


def test_1_the_registry_down_fails_the_push_clearly_and_a_rerun_after_up_converges(sandbox: Sandboxed) -> None:
    started = time.monotonic()
    old = sandbox.live_version()
    revisions = sandbox.taskdef_revisions()
    new = sandbox.commit_backend_change("registry down")
    registry, _server = lifecycle.processes(sandbox.settings)
    assert registry.stop()  # the distribution registry behind the sandbox's ECR front

    failed = auto(sandbox.root)
    assert failed.error is not None and failed.error.exit_code == 1, failed.output
    host = sandbox.settings.registry_host
    assert failed.error.message.startswith(f"the registry {host} is not answering ("), failed.error.message
    assert f"{host}/car-rental-backend:{new[:12]}" in failed.error.message
    assert "the registry is not reachable: start it (the sandbox's: inv sandbox.up" in str(failed.error.next_step)
    assert "rerun the same command" in str(failed.error.next_step)
    assert_untouched(sandbox, old)
    assert sandbox.taskdef_revisions() == revisions  # nothing registered
    print(f"\n[registry down] {failed.seconds:.1f}s to fail: {failed.error}")

    assert lifecycle.up(sandbox.settings, sandbox.root / "deploy.toml") == ["registry"]
    rerun = converges(sandbox)
    assert sandbox.live_version() == new and sandbox.primary_tag() == new[:12]
    print(f"[registry down] rerun after sandbox.up {rerun.seconds:.1f}s; scenario {time.monotonic() - started:.1f}s")


def test_2_throttling_past_the_retries_fails_clearly_and_a_short_burst_is_absorbed(sandbox: Sandboxed) -> None:
    started = time.monotonic()
    old = sandbox.live_version()
    new = sandbox.commit_backend_change("throttled")
    lifecycle.inject_throttling(sandbox.settings, "ecs", "UpdateService", count=10)

    failed = auto(sandbox.root)
    assert failed.error is not None and failed.error.exit_code == 1, failed.output
    assert failed.error.message == (
        f"AWS throttled UpdateService in sandbox (ThrottlingException) after {MAX_ATTEMPTS + 1} attempts: "
        "Rate exceeded; nothing after this call was changed"
    )
    assert failed.error.next_step == (
        "wait a minute and rerun the same command (it skips what is already done); to retry more, raise "
        'max_attempts or use retry_mode = "adaptive" for [environments.sandbox] in deploy.toml'
    )
    assert "❌ roll-service failed" in failed.output
    assert lifecycle.pending_faults(sandbox.settings) == [
        {"service": "ecs", "operation": "UpdateService", "count": 10 - (MAX_ATTEMPTS + 1)}
    ]
    assert_untouched(sandbox, old)
    print(f"\n[throttled x10] {failed.seconds:.1f}s to fail: {failed.error}")

    lifecycle.clear_faults(sandbox.settings)
    assert lifecycle.pending_faults(sandbox.settings) == []
    lifecycle.inject_throttling(sandbox.settings, "ecs", "UpdateService", count=MAX_ATTEMPTS)  # fewer than attempts
    rerun = converges(sandbox)
    assert lifecycle.pending_faults(sandbox.settings) == []  # the burst was met, and absorbed by the retries
    assert sandbox.live_version() == new and sandbox.primary_tag() == new[:12]
    print(
        f"[throttled x{MAX_ATTEMPTS}] rerun absorbed it in {rerun.seconds:.1f}s; "
        f"scenario {time.monotonic() - started:.1f}s"
    )


def test_3_a_broken_build_names_the_failing_step_and_pushes_nothing(sandbox: Sandboxed) -> None:
    started = time.monotonic()
    old = sandbox.live_version()
    revisions = sandbox.taskdef_revisions()
    dockerfile = sandbox.root / "backend" / "Dockerfile"
    assert "WORKDIR /app\n" in dockerfile.read_text()
    dockerfile.write_text(dockerfile.read_text().replace("WORKDIR /app\n", f"WORKDIR /app\n{BROKEN_STEP}\n", 1))
    git(sandbox.root, "commit", "-qam", "backend: a broken build")
    broken = sandbox.head()

    failed = auto(sandbox.root)
    assert failed.error is not None and failed.error.exit_code == 1, failed.output
    message = failed.error.message
    assert message.startswith(f"docker build failed at '{BROKEN_STEP}': "), message
    assert "returned a non-zero code: 3" in message and "| compiling the fleet" in message
    assert "fix the failing instruction" in str(failed.error.next_step)
    with pytest.raises(ClientError) as missing:
        sandbox.client("ecr").describe_images(
            repositoryName=sandbox.env.repository, imageIds=[{"imageTag": broken[:12]}]
        )
    assert missing.value.response["Error"]["Code"] == "ImageNotFoundException"  # nothing pushed
    assert sandbox.taskdef_revisions() == revisions  # nothing registered
    assert_untouched(sandbox, old)
    print(f"\n[broken build] {failed.seconds:.1f}s to fail: {message.splitlines()[0]}")

    git(sandbox.root, "revert", "--no-edit", "HEAD")
    rerun = converges(sandbox)
    assert rerun.report is None and "✅ nothing to deploy" in rerun.output  # HEAD's backend is what runs
    assert sandbox.live_version() == old
    print(f"[broken build] rerun after the revert {rerun.seconds:.1f}s; scenario {time.monotonic() - started:.1f}s")


def test_4_of_two_deploys_at_once_one_deploys_and_the_other_is_refused_naming_the_holder(
    sandbox: Sandboxed,
) -> None:
    started = time.monotonic()
    new = sandbox.commit_backend_change("two at once")
    runs = {actor: inv_deploy_auto(sandbox.root, DEPLOYKIT_ACTOR=actor) for actor in ("ci/main#1", "alice@laptop")}
    ended = {actor: process.communicate(timeout=240) for actor, process in runs.items()}
    codes = {actor: runs[actor].returncode for actor in runs}
    assert sorted(codes.values()) == [0, 2], {actor: err[-2000:] for actor, (_out, err) in ended.items()}
    winner = next(actor for actor, code in codes.items() if code == 0)
    loser = next(actor for actor, code in codes.items() if code == 2)
    refusal = ended[loser][1]
    assert f"❌ another deploy holds the lock of environment 'sandbox': {winner} has been running 'deploy.auto'" in (
        refusal
    ), refusal
    assert "→ next: wait for it to finish, then rerun (or let the command wait for it: DEPLOYKIT_LOCK_WAIT=10m); " in (
        refusal
    )
    assert "if that deploy is dead" in refusal
    assert "inv unlock --env sandbox" in refusal
    assert "▶ " not in refusal  # refused before any step ran
    assert sandbox.live_version() == new and sandbox.lock_holder() is None
    line = next(x for x in refusal.splitlines() if x.startswith("❌"))
    print(f"\n[two at once] {time.monotonic() - started:.1f}s; the refused one (exit 2): {line}")


def test_5_ctrl_c_during_roll_service_leaves_a_consistent_service_and_a_rerun_converges(
    sandbox: Sandboxed,
) -> None:
    started = time.monotonic()
    old = sandbox.live_version()
    new = sandbox.commit_backend_change("interrupted roll")
    # two refusals of UpdateService: the call backs off (a random part of 1 s, then of 2 s) while the Ctrl-C lands.
    # The signal goes as soon as the first refusal is spent. A fixed 0.3 s after the step's start could come after
    # both backoffs when both drew short ones (about a 2 % chance by botocore's formula; one run here failed as if
    # it had), and the signal then landed in wait-healthy.
    lifecycle.inject_throttling(sandbox.settings, "ecs", "UpdateService", count=2)
    process = inv_deploy_auto(sandbox.root)

    def a_refusal_spent() -> bool:
        left = lifecycle.pending_faults(sandbox.settings)
        return left != [{"service": "ecs", "operation": "UpdateService", "count": 2}]

    err, at = interrupt_when(process, "▶ roll-service", until=a_refusal_spent)
    assert process.returncode == 130, err
    assert "⚠️  roll-service interrupted after" in err
    message = next(x for x in err.splitlines() if x.startswith("❌"))
    assert message.startswith("❌ interrupted during roll-service (update service car-rental-service to the revision")
    assert "if the update call was made, ECS goes on rolling car-rental-service" in message
    assert "the steps before it (base-image, build, push, register-taskdef) are done and stay" in message
    assert f"live before this run: app@{old[:12]}" in message
    assert "→ next: run the same command again (or inv deploy.auto --env sandbox)" in err
    assert sandbox.lock_holder() is None
    left = lifecycle.pending_faults(sandbox.settings)
    # consistent: ECS either never got the update (still on the old release) or rolls to the new one, then settles
    sandbox.wait_stable()
    landed = sandbox.primary_tag()
    assert landed in (old[:12], new[:12])
    assert sandbox.live_version() == (old if landed == old[:12] else new)
    state = "still on the old release" if landed == old[:12] else "rolled to the new release"
    print(f"\n[ctrl-c in roll-service] signal {at:.1f}s after start, throttles left {left}; ECS {state}: {message}")

    lifecycle.clear_faults(sandbox.settings)
    rerun = converges(sandbox)
    assert sandbox.live_version() == new and sandbox.primary_tag() == new[:12]
    print(f"[ctrl-c in roll-service] rerun {rerun.seconds:.1f}s; scenario {time.monotonic() - started:.1f}s")


def test_6_ctrl_c_during_a_stack_update_lets_cloudformation_finish_and_a_rerun_converges(
    sandbox: Sandboxed,
) -> None:
    started = time.monotonic()
    app = sandbox.live_version()
    stack_file = sandbox.root / "cdk" / "stacks" / "fargate_stack.py"
    assert DRAIN.format(5) in stack_file.read_text()
    stack_file.write_text(stack_file.read_text().replace(DRAIN.format(5), DRAIN.format(2)))
    git(sandbox.root, "commit", "-qam", "fargate: drain for 2 s")
    stack = sandbox.env.stacks.fargate

    process = inv_deploy_auto(sandbox.root)
    # the first stack event is printed once the change set is executed: CloudFormation is at work
    err, at = interrupt_when(process, f"{stack} AWS::CloudFormation::Stack UPDATE_IN_PROGRESS")
    assert process.returncode == 130, err
    message = next(x for x in err.splitlines() if x.startswith("❌"))
    assert message.startswith(f"❌ interrupted during deploy-stack ({stack}: change set from"), message
    assert f"CloudFormation goes on with {stack} on its own" in message
    assert "→ next: run the same command again" in err
    assert sandbox.lock_holder() is None

    cfn = sandbox.client("cloudformation")
    deadline = time.monotonic() + 90
    while (status := cfn.describe_stacks(StackName=stack)["Stacks"][0]["StackStatus"]).endswith("_IN_PROGRESS"):
        assert time.monotonic() < deadline, status
        time.sleep(0.3)
    assert status == "UPDATE_COMPLETE"  # CloudFormation went on without us
    finished = time.monotonic() - started
    print(f"\n[ctrl-c in deploy-stack] signal {at:.1f}s after start; {stack} {status} at {finished:.1f}s: {message}")

    rerun = converges(sandbox)
    assert rerun.report is not None and "deploy-stack" in {r.step for r in rerun.report.records}
    group = commands.endpoints(runtime=quiet_runtime(sandbox.root)).target_group_arn
    attributes = sandbox.client("elbv2").describe_target_group_attributes(TargetGroupArn=group)["Attributes"]
    assert {a["Key"]: a["Value"] for a in attributes}["deregistration_delay.timeout_seconds"] == "2"
    sandbox.wait_stable()  # the stack's new task definition revision rolls out (same image)
    assert sandbox.live_version() == app
    again = auto(sandbox.root)
    assert again.report is None and "✅ nothing to deploy" in again.output
    print(f"[ctrl-c in deploy-stack] rerun {rerun.seconds:.1f}s; scenario {time.monotonic() - started:.1f}s")


def test_7_a_stack_whose_rollback_failed_is_said_by_inv_diff_and_a_rerun_continues_the_rollback(
    sandbox: Sandboxed,
) -> None:
    """The API stack's access log group deleted behind CloudFormation's back: its update fails, and so does its
    rollback (UPDATE_ROLLBACK_FAILED). deploy.auto says so with the cause; inv diff says the stack's health and 'no
    preview' (CloudFormation makes no change set for it) and goes on, where it failed on CreateChangeSet; --verify
    counts it not verified. With the log group back, deploy.auto continues the rollback, then deploys."""
    started = time.monotonic()
    stack = sandbox.env.stacks.api
    cfn, logs = sandbox.client("cloudformation"), sandbox.client("logs")
    resources = cfn.describe_stack_resources(StackName=stack)["StackResources"]
    group = next(r["PhysicalResourceId"] for r in resources if r["LogicalResourceId"].startswith("ApiAccessLogs"))
    logs.delete_log_group(logGroupName=group)
    stack_file = sandbox.root / "cdk" / "stacks" / "api_stack.py"
    kept = '"ApiAccessLogs", retention=logs.RetentionDays.{}'
    assert kept.format("TWO_WEEKS") in stack_file.read_text()
    stack_file.write_text(stack_file.read_text().replace(kept.format("TWO_WEEKS"), kept.format("ONE_MONTH")))
    git(sandbox.root, "commit", "-qam", "api: access logs kept a month")

    failed = auto(sandbox.root)
    assert failed.error is not None and failed.error.exit_code == 1, failed.output
    assert f"deploying stack {stack} failed: it is UPDATE_ROLLBACK_FAILED" in failed.error.message
    assert "The specified log group does not exist" in failed.output
    assert cfn.describe_stacks(StackName=stack)["Stacks"][0]["StackStatus"] == "UPDATE_ROLLBACK_FAILED"

    runtime = quiet_runtime(sandbox.root)
    commands.diff(as_json=True, runtime=runtime)  # no error: the stack is said, the rest goes on
    previewed = json.loads(runtime.stdout.getvalue())["stacks"][stack]  # type: ignore[attr-defined]
    assert previewed["status"] == "UPDATE_ROLLBACK_FAILED" and previewed["changes"] is None
    assert previewed["health"]["severity"] == "broken"
    assert "a deploy continues it first" in previewed["no_preview"]
    said = runtime.stderr.getvalue()  # type: ignore[attr-defined]
    assert f"🐳 {stack} (UPDATE_ROLLBACK_FAILED)\n  ❌ stack {stack} is UPDATE_ROLLBACK_FAILED" in said, said
    assert "\n  no preview: CloudFormation makes no change set until the failed rollback is continued" in said
    with pytest.raises(DeployKitError) as unverified:
        commands.diff(verify=True, runtime=quiet_runtime(sandbox.root))
    assert f"{stack}: UPDATE_ROLLBACK_FAILED, not compared" in unverified.value.message

    logs.create_log_group(logGroupName=group)  # the cause fixed
    rerun = converges(sandbox)
    assert f"{stack} is UPDATE_ROLLBACK_FAILED: continuing the rollback (ContinueUpdateRollback) first" in (
        rerun.output
    )
    assert logs.describe_log_groups(logGroupNamePrefix=group)["logGroups"][0]["retentionInDays"] == 30
    assert auto(sandbox.root).report is None  # nothing left to deploy
    print(
        f"\n[rollback failed] {stack}: failed in {failed.seconds:.1f}s, rerun {rerun.seconds:.1f}s; scenario "
        f"{time.monotonic() - started:.1f}s"
    )
