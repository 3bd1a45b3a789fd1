"""Bad releases on a private sandbox, each deployed by deploy.auto from a clean deploy.full while a client loops on the
ALB listener: one that crashes at start, one that never becomes healthy, one that passes health but fails smoke.
Each ends with the previous version serving (automatic rollback), no failed request on the listener, the lock free;
reverting the bad commit then leaves nothing to deploy. Last, ``inv rollback`` of a good release, timed."""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import docker
import pytest

from deploykit import commands, lock
from deploykit.aws import AwsFactory
from deploykit.config import load_config
from deploykit.errors import StepFailed, UsageError
from deploykit.plan import all_records
from sandbox import lifecycle
from sandbox.settings import load_settings
from tests.conftest import git, quiet_runtime
from tests.integration.sandbox_support import LoopingClient, deployed_sandbox_project, version_of

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("base_image")]


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory, docker_engine: docker.DockerClient) -> Iterator[Path]:
    with deployed_sandbox_project(tmp_path_factory.mktemp("faults")) as project:
        yield project


def alb(project: Path) -> str:
    return commands.endpoints(runtime=quiet_runtime(project)).alb_url.rstrip("/")


def lock_is_free(project: Path) -> bool:
    env = load_config(project / "deploy.toml").environment("sandbox")
    found = lock.EnvLock.of(AwsFactory(env), env)
    assert found is not None
    return found.read() is None


def edit(project: Path, path: str, old: str, new: str) -> None:
    file = project / path
    text = file.read_text()
    assert old in text, f"{old!r} not in {path}"
    file.write_text(text.replace(old, new, 1))


def deploy_bad_release(project: Path, change: Callable[[], None], what: str) -> tuple[StepFailed, str]:
    """Commit ``change``, deploy it with a client looping on the listener; assert the previous version serves
    throughout and after, the lock is free, and reverting the commit leaves nothing to deploy."""
    url = alb(project)
    live = version_of(url)
    change()
    git(project, "commit", "-qam", f"a release that {what}")
    bad = git(project, "rev-parse", "HEAD").strip()
    client = LoopingClient(url).start()
    runtime = quiet_runtime(project)
    started = time.monotonic()
    with pytest.raises(StepFailed) as failed:
        commands.deploy_auto(runtime=runtime)
    seconds = time.monotonic() - started
    client.stop()
    printed = runtime.stderr.getvalue()  # type: ignore[attr-defined]

    assert failed.value.exit_code == 1
    assert "runs what was live before" in failed.value.message, printed
    assert "⏪ automatic rollback: app" in printed
    assert version_of(url) == live
    assert not client.failures, f"{sum(client.failures.values())} failed requests: {client.failures}"
    assert client.answers and set(client.answers) <= {live, bad}
    assert lock_is_free(project)
    print(
        f"\n{what}: failed and rolled back in {seconds:.1f}s; listener: {len(client.answers)} requests sent, "
        f"0 failed ({client.answers.count(bad)} answered by the bad release)\n{printed}\n{failed.value}"
    )

    git(project, "revert", "--no-edit", "HEAD")
    runtime = quiet_runtime(project)
    assert commands.deploy_auto(runtime=runtime) is None
    assert "✅ nothing to deploy" in runtime.stderr.getvalue()  # type: ignore[attr-defined]
    return failed.value, printed


def test_a_release_that_crashes_at_start_is_rolled_back(project: Path) -> None:
    error, printed = deploy_bad_release(
        project,
        lambda: edit(
            project,
            "backend/app/server.py",
            "def main() -> None:\n",
            'def main() -> None:\n    raise SystemExit("crashing at start on purpose")\n',
        ),
        "crashes at start",
    )
    assert "did not become healthy" in error.message and "stopped" in error.message
    # what the crashed task wrote, from CloudWatch Logs: shown, and its last line ends the error
    assert "exit code 1; its last log line: crashing at start on purpose; automatic rollback" in error.message
    assert "📜 the last" in printed and "lines backend wrote in task" in printed


def test_a_release_that_never_becomes_healthy_is_rolled_back(project: Path) -> None:
    error, _ = deploy_bad_release(
        project,
        lambda: edit(
            project,
            "backend/app/routes.py",
            '    return {"status": "ok"}',
            '    return JSONResponse(status_code=503, content={"status": "never healthy on purpose"})  # type: ignore',
        ),
        "never becomes healthy",
    )
    assert "did not become healthy" in error.message


def test_a_release_that_passes_health_but_fails_smoke_is_rolled_back(project: Path) -> None:
    error, printed = deploy_bad_release(
        project,
        lambda: edit(
            project, "backend/app/routes.py", 'status_code=200 if result.status == "ok" else 503', "status_code=503"
        ),
        "passes health but fails smoke",
    )
    assert "smoke" in error.message and "connectivity" in printed
    assert "wait-healthy done" in printed or "✅ wait-healthy" in printed  # it did become healthy first


def test_a_release_that_fails_users_after_its_rollout_is_rolled_back_by_the_error_watch(project: Path) -> None:
    """Healthy, smoke passed, yet its /version answers 500: the watch of the ALB's 5xx after the rollout fails it
    within a poll or two, and the automatic rollback puts the previous release back."""
    url = alb(project)
    live = version_of(url)
    doc = '    """The git SHA this image was built from."""\n'
    edit(project, "backend/app/routes.py", doc, doc + '    raise RuntimeError("version broken on purpose")\n')
    git(project, "commit", "-qam", "a release whose /version fails")
    client = LoopingClient(url).start()
    runtime = quiet_runtime(project)
    started = time.monotonic()
    with pytest.raises(StepFailed) as failed:
        commands.deploy_auto(watch_errors="60s", runtime=runtime)
    seconds = time.monotonic() - started
    client.stop()
    printed = runtime.stderr.getvalue()  # type: ignore[attr-defined]

    assert "▶ watch-errors: watch car-rental-service's answers through its ALB for 60s" in printed
    assert printed.count("▶ watch-errors") == 1 and printed.index("✅ smoke") < printed.index("▶ watch-errors")
    assert "car-rental-service answered " in failed.value.message and " with a 5xx (" in failed.value.message
    assert "runs what was live before" in failed.value.message and "⏪ automatic rollback: app" in printed
    assert version_of(url) == live
    assert client.failures  # some users met it: the watch bounds how long
    assert lock_is_free(project)
    print(
        f"\na release that fails users after its rollout: failed by the error watch and rolled back in {seconds:.1f}s; "
        f"listener: {len(client.answers)} answered, {sum(client.failures.values())} failed\n{failed.value}"
    )
    git(project, "revert", "--no-edit", "HEAD")
    assert commands.deploy_auto(runtime=quiet_runtime(project)) is None


def evaluated_ok(cloudwatch: Any, name: str) -> None:
    """Wait until the sandbox has evaluated alarm ``name`` as OK (moto's first state, "Unchecked", is none; the
    errors of the test before may still be in its period)."""

    def evaluated() -> str:
        alarm = cloudwatch.describe_alarms(AlarmNames=[name])["MetricAlarms"][0]
        return "" if alarm["StateReason"].startswith("Unchecked") else str(alarm["StateValue"])

    deadline = time.monotonic() + 30
    while evaluated() != "OK" and time.monotonic() < deadline:
        time.sleep(0.2)
    assert evaluated() == "OK"


def commit_watched(project: Path, line: str, alarm: str, seconds: int, message: str) -> None:
    """Commit a release whose /version has ``line`` added, with [environments.sandbox.alarm_watch] watching
    ``alarm`` for ``seconds``."""
    doc = '    """The git SHA this image was built from."""\n'
    edit(project, "backend/app/routes.py", doc, f"{doc}    {line}\n")
    toml = project / "deploy.toml"
    toml.write_text(
        toml.read_text() + f'\n[environments.sandbox.alarm_watch]\nalarms = ["{alarm}"]\nseconds = {seconds}\n'
    )
    git(project, "commit", "-qam", message)


def test_a_release_the_teams_own_alarm_judges_bad_is_rolled_back(project: Path) -> None:
    """The team's CloudWatch alarm on the ALB's 5xx (the sandbox evaluates it as CloudWatch does, every second),
    named in [environments.sandbox.alarm_watch]: the release whose /version answers 500 sets it off once its users
    meet it, watch-alarms fails it, and the automatic rollback puts the previous release back."""
    url = alb(project)
    live = version_of(url)
    env = load_config(project / "deploy.toml").environment("sandbox")
    aws = AwsFactory(env)
    balancer = aws.client("elbv2").describe_load_balancers()["LoadBalancers"][0]
    group = aws.client("elbv2").describe_target_groups(LoadBalancerArn=balancer["LoadBalancerArn"])["TargetGroups"][0]
    cloudwatch = aws.client("cloudwatch")
    cloudwatch.put_metric_alarm(
        AlarmName="car-rental-5xx",
        Namespace="AWS/ApplicationELB",
        MetricName="HTTPCode_Target_5XX_Count",
        Dimensions=[
            {"Name": "LoadBalancer", "Value": balancer["LoadBalancerArn"].split(":loadbalancer/")[1]},
            {"Name": "TargetGroup", "Value": group["TargetGroupArn"].rsplit(":", 1)[1]},
        ],
        Statistic="Sum",
        Period=10,
        EvaluationPeriods=1,
        Threshold=3,
        ComparisonOperator="GreaterThanOrEqualToThreshold",
        TreatMissingData="notBreaching",
    )
    evaluated_ok(cloudwatch, "car-rental-5xx")
    commit_watched(
        project,
        'raise RuntimeError("version broken on purpose")',
        "car-rental-5xx",
        60,
        "a release whose /version fails, and the team's alarm watched",
    )
    client = LoopingClient(url).start()
    runtime = quiet_runtime(project)
    started = time.monotonic()
    with pytest.raises(StepFailed) as failed:
        commands.deploy_auto(runtime=runtime)
    seconds = time.monotonic() - started
    client.stop()
    printed = runtime.stderr.getvalue()  # type: ignore[attr-defined]

    assert "🔔 read CloudWatch alarm car-rental-5xx for 60s" in printed
    assert printed.index("✅ smoke") < printed.index("▶ watch-alarms")
    assert failed.value.message.startswith("alarm car-rental-5xx went to ALARM "), failed.value.message
    assert "Threshold Crossed" in failed.value.message
    assert "runs what was live before" in failed.value.message and "⏪ automatic rollback: app" in printed
    assert version_of(url) == live
    assert lock_is_free(project)
    print(
        f"\na release the team's alarm judges bad: failed by watch-alarms and rolled back in {seconds:.1f}s; "
        f"listener: {len(client.answers)} answered, {sum(client.failures.values())} failed\n{failed.value}"
    )
    git(project, "revert", "--no-edit", "HEAD")
    cloudwatch.delete_alarms(AlarmNames=["car-rental-5xx"])
    assert commands.deploy_auto(runtime=quiet_runtime(project)) is None


def test_an_alarm_that_went_off_and_back_during_the_rollout_fails_a_watch_that_reads_once(project: Path) -> None:
    """The rollout sets the team's alarm off and it is OK again 0.3 s later (SetAlarmState, as CloudWatch would on a
    burst of errors while the new tasks come up), before wait-healthy and smoke end: the watch reads it once, after
    smoke, finds it OK, and its history (the sandbox's DescribeAlarmHistory, over HTTP) says it went to ALARM during
    the deploy. The release fails, and the automatic rollback puts the previous one back."""
    url = alb(project)
    live = version_of(url)
    env = load_config(project / "deploy.toml").environment("sandbox")
    aws = AwsFactory(env)
    cloudwatch, ecs = aws.client("cloudwatch"), aws.client("ecs")
    cloudwatch.put_metric_alarm(
        AlarmName="car-rental-burst",
        Namespace="Test/Release",
        MetricName="Burst",
        Statistic="Sum",
        Period=10,
        EvaluationPeriods=1,
        Threshold=1,
        ComparisonOperator="GreaterThanOrEqualToThreshold",
        TreatMissingData="notBreaching",  # no data: OK
    )
    evaluated_ok(cloudwatch, "car-rental-burst")
    running = ecs.describe_services(cluster=env.cluster, services=[env.service])["services"][0]["taskDefinition"]
    rolled = threading.Event()

    def burst_at_the_rollout() -> None:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            service = ecs.describe_services(cluster=env.cluster, services=[env.service])["services"][0]
            if service["taskDefinition"] != running:  # roll-service
                cloudwatch.set_alarm_state(
                    AlarmName="car-rental-burst", StateValue="ALARM", StateReason="Threshold Crossed: a burst"
                )
                time.sleep(0.3)  # the burst over (the sandbox's evaluation would say so within its second too)
                cloudwatch.set_alarm_state(
                    AlarmName="car-rental-burst", StateValue="OK", StateReason="Threshold Crossed: no burst"
                )
                rolled.set()
                return
            time.sleep(0.05)

    commit_watched(
        project,
        "# a release whose rollout sets the burst alarm off",
        "car-rental-burst",
        0,
        "a release whose rollout sets the team's alarm off for a second",
    )
    watcher = threading.Thread(target=burst_at_the_rollout, daemon=True)
    watcher.start()
    runtime = quiet_runtime(project)
    with pytest.raises(StepFailed) as failed:
        commands.deploy_auto(runtime=runtime)
    watcher.join(timeout=5)
    printed = runtime.stderr.getvalue()  # type: ignore[attr-defined]

    assert rolled.is_set()
    assert failed.value.message.startswith("alarm car-rental-burst went to ALARM "), failed.value.message
    assert ", and was OK again at " in failed.value.message and "Threshold Crossed: a burst" in failed.value.message
    assert "⏪ automatic rollback: app" in printed
    assert version_of(url) == live
    assert lock_is_free(project)
    git(project, "revert", "--no-edit", "HEAD")
    cloudwatch.delete_alarms(AlarmNames=["car-rental-burst"])
    assert commands.deploy_auto(runtime=quiet_runtime(project)) is None


def test_a_lambda_release_that_fails_smoke_goes_back_to_the_version_live_before(project: Path) -> None:
    api_health = commands.endpoints(runtime=quiet_runtime(project)).api_health_url
    live_version = json.loads(urllib.request.urlopen(api_health, timeout=10).read())["function_version"]
    edit(
        project,
        "lambda/health_handler/handler.py",
        '"statusCode": 200, "headers": HEADERS',
        '"statusCode": 500, "headers": HEADERS',
    )
    git(project, "commit", "-qam", "a health Lambda that answers 500")
    runtime = quiet_runtime(project)
    started = time.monotonic()
    with pytest.raises(StepFailed) as failed:
        commands.deploy_auto(runtime=runtime)
    seconds = time.monotonic() - started
    printed = runtime.stderr.getvalue()  # type: ignore[attr-defined]
    assert "api_gateway" in failed.value.message and "automatic rollback: lambda:health_handler ok" in str(failed.value)
    assert "⏪ automatic rollback: lambda:health_handler" in printed
    assert "inv logs --env sandbox --component lambda:health_handler --since 15m" in (failed.value.next_step or "")
    # what the failed version wrote, read after the rollback: its invocations by the smoke checks
    shown = printed[printed.index("📜 the last") :]
    assert "lines health_handler version" in shown.splitlines()[0] and "START RequestId" in shown
    answer = json.loads(urllib.request.urlopen(api_health, timeout=10).read())
    assert answer == {"status": "ok", "function_version": live_version}
    assert lock_is_free(project)
    print(f"\na Lambda that fails smoke: failed and rolled back in {seconds:.1f}s\n{failed.value}")

    git(project, "revert", "--no-edit", "HEAD")
    assert commands.deploy_auto(runtime=quiet_runtime(project)) is None


def test_an_image_whose_scan_finds_a_high_vulnerability_never_runs(project: Path) -> None:
    """With [environments.sandbox.image_scan] severity = "HIGH" and the sandbox's scans rehearsing a HIGH finding
    (scan on push, done a second later): deploy.auto of a backend change stops at the scan gate, before anything
    of the new image runs, the old version serving (nothing to roll back); accepted in deploy.toml, it goes live."""
    settings = load_settings(project / "deploy.toml")
    url = alb(project)
    live, tasks = version_of(url), running_tasks(project)
    toml = project / "deploy.toml"
    plain = toml.read_text()
    toml.write_text(plain + '\n[environments.sandbox.image_scan]\nseverity = "HIGH"\ntimeout = 60\n')
    fleet = project / "backend" / "app" / "fleet.py"
    fleet.write_text(fleet.read_text() + "\n# a release whose image has a HIGH finding\n")
    git(project, "commit", "-qam", "a release whose image has a HIGH finding, behind a scan gate")
    finding = {"name": "CVE-2026-0001", "severity": "HIGH", "package": "openssl", "version": "3.0.11"}
    lifecycle.rehearse_image_scans(settings, [finding, {"name": "CVE-2026-0002", "severity": "MEDIUM"}], 1.0)
    try:
        runtime = quiet_runtime(project)
        started = time.monotonic()
        with pytest.raises(UsageError) as failed:
            commands.deploy_auto(runtime=runtime)
        seconds = time.monotonic() - started
        printed = runtime.stderr.getvalue()  # type: ignore[attr-defined]
        assert failed.value.exit_code == 2  # refused, as the other guards refuse
        assert commands.history_list(limit=1, runtime=quiet_runtime(project))[0].result == "refused"
        assert "has 1 finding(s) of HIGH or worse that deploy.toml does not accept (1 HIGH, 1 MEDIUM in all)" in (
            failed.value.message
        )
        assert "CVE-2026-0001 (HIGH, openssl 3.0.11)" in failed.value.message
        assert "▶ roll-service" not in printed and "automatic rollback" not in printed
        assert version_of(url) == live and running_tasks(project) == tasks
        assert lock_is_free(project)
        print(f"\na HIGH finding: stopped at the scan gate in {seconds:.1f}s\n{failed.value}")
        with pytest.raises(StepFailed, match=r"CVE-2026-0001 \(HIGH, openssl 3.0.11\)"):  # inv scan says the same
            commands.scan_image(runtime=quiet_runtime(project))

        toml.write_text(toml.read_text() + 'ignore = ["CVE-2026-0001"]\n')
        git(project, "commit", "-qam", "CVE-2026-0001 reviewed: accepted")
        runtime = quiet_runtime(project)
        report = commands.deploy_auto(runtime=runtime)
        assert report is not None and report.ok
        (gate,) = [r for r in all_records(report.records) if r.step == "scan-gate"]
        assert gate.detail == (
            "passed: 1 HIGH, 1 MEDIUM; accepted by deploy.toml: CVE-2026-0001 (HIGH, openssl 3.0.11)"
        )
        assert version_of(url) == git(project, "rev-parse", "HEAD").strip()
    finally:
        lifecycle.rehearse_image_scans(settings, [], 0)
        toml.write_text(plain)
        git(project, "commit", "-qam", "no scan gate")


def test_inv_logs_reads_what_the_app_and_a_function_wrote(project: Path) -> None:
    commands.smoke(runtime=quiet_runtime(project))  # the checks log in and start a KYC case
    app_lines = commands.logs(since="2m", runtime=quiet_runtime(project))
    assert any("app.access POST /kyc 201" in line.message for line in app_lines), app_lines[-5:]
    running = {t.rsplit("/", 1)[-1][:8] for t in running_tasks(project)}
    assert {line.stream.rsplit("/", 1)[-1][:8] for line in app_lines} & running
    runtime = quiet_runtime(project)
    login = commands.logs(component="lambda:login_handler", since="2m", runtime=runtime)
    assert any("login succeeded" in line.message for line in login)
    # the function's own group (the API stack's LoginHandlerLogs, its LoggingConfig), not /aws/lambda/...
    assert "LoginHandlerLogs" in runtime.stderr.getvalue()  # type: ignore[attr-defined]


def running_tasks(project: Path) -> list[str]:
    env = load_config(project / "deploy.toml").environment("sandbox")
    ecs = AwsFactory(env).client("ecs")
    return list(ecs.list_tasks(cluster=env.cluster, serviceName=env.service)["taskArns"])


def test_inv_rollback_puts_the_previous_release_back(project: Path) -> None:
    url = alb(project)
    before = version_of(url)
    fleet = project / "backend" / "app" / "fleet.py"
    fleet.write_text(fleet.read_text() + "\n# a good release, rolled back by hand\n")
    git(project, "commit", "-qam", "a good release")
    assert commands.deploy_auto(runtime=quiet_runtime(project)) is not None
    assert version_of(url) == git(project, "rev-parse", "HEAD").strip()

    client = LoopingClient(url).start()
    runtime = quiet_runtime(project)
    started = time.monotonic()
    report = commands.rollback(runtime=runtime)
    seconds = time.monotonic() - started
    client.stop()
    assert report is not None and report.ok
    assert version_of(url) == before
    assert not client.failures, client.failures
    assert lock_is_free(project)
    steps = {r.step: round(r.seconds, 1) for r in report.records}
    print(f"\ninv rollback (app): {seconds:.1f}s; steps {steps}; listener {len(client.answers)} requests, 0 failed")
