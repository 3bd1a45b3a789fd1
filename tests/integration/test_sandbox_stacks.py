"""deploy.full, deploy.stack and destroy on a private sandbox: the stacks of cdk/ really deployed and running."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest

from deploykit import commands, health
from deploykit.aws import AwsFactory
from deploykit.config import load_config
from deploykit.errors import StepFailed, UsageError
from deploykit.hookspecs import hookimpl
from deploykit.plan import all_records
from deploykit.plugins import get_plugin_manager
from tests.conftest import REPO, git, quiet_runtime, sandbox_client
from tests.integration.sandbox_support import running_sandbox, sandbox_project

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("base_image")]


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory, docker_engine: docker.DockerClient) -> Iterator[Path]:
    """A checkout of the whole platform (backend, lambda, cdk) whose deploy.toml targets a private sandbox."""
    root = sandbox_project(
        tmp_path_factory.mktemp("stacks"), ("backend", "lambda", "cdk"), gitignore=".sandbox/\n__pycache__/\ncdk.out/\n"
    )
    with running_sandbox(root):
        yield root


def http(method: str, url: str, body: dict[str, str] | None = None) -> tuple[int, dict[str, object]]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=15) as answer:
            return answer.status, json.loads(answer.read() or b"{}")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def wait_http_ok(url: str, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if http("GET", url)[0] == 200:
                return
        except OSError:
            pass
        assert time.monotonic() < deadline, f"{url} never answered 200"
        time.sleep(0.5)


def test_deploy_full_brings_up_every_stack_then_does_nothing_the_second_time(project: Path) -> None:
    started = time.monotonic()
    report = commands.deploy_full(runtime=quiet_runtime(project))
    first = time.monotonic() - started
    assert report is not None and report.ok
    # the chain ends with smoke: every built-in check passed against what was just deployed
    assert (report.records[-1].step, report.records[-1].status) == ("smoke", "done")
    assert report.records[-1].detail == "5 passed", report.records[-1].detail
    endpoints = commands.endpoints(runtime=quiet_runtime(project))
    wait_http_ok(endpoints.alb_url.rstrip("/") + "/health")
    # a login through the API stage reaches login_handler: a malformed body is refused by it with 400 ...
    status, body = http("POST", endpoints.login_url, {"username": "nobody"})
    assert status == 400, body
    # ... and a real user of the stack's pool gets tokens
    idp = sandbox_client(project, "cognito-idp")
    idp.admin_create_user(UserPoolId=endpoints.user_pool_id, Username="tester@example.com", MessageAction="SUPPRESS")
    idp.admin_set_user_password(
        UserPoolId=endpoints.user_pool_id, Username="tester@example.com", Password="Sandbox-Passw0rd!", Permanent=True
    )
    status, body = http(
        "POST", endpoints.login_url, {"username": "tester@example.com", "password": "Sandbox-Passw0rd!"}
    )
    assert status == 200 and "access_token" in body, body

    started = time.monotonic()
    again = commands.deploy_full(runtime=quiet_runtime(project))
    second = time.monotonic() - started
    assert again is not None and again.ok
    statuses = {c.step + ":" + c.detail.split(":")[0]: c.status for c in all_records(again.records) if not c.children}
    assert "deploy-stack:CarRentalRegistryStack" in statuses and "build:car-rental-backend" in statuses
    assert all(status == "skipped" for status in statuses.values()), statuses
    print(f"\ndeploy.full on a fresh sandbox: {first:.1f}s; again with no change: {second:.1f}s")


def test_a_change_to_one_stack_is_applied_by_deploy_stack_alone(project: Path) -> None:
    source = project / "cdk" / "stacks" / "fargate_stack.py"
    text = source.read_text()
    marker = '"PORT": str(CONTAINER_PORT),'
    assert marker in text, "the Fargate stack sets PORT for the backend container"
    source.write_text(text.replace(marker, '"DEPLOYKIT_TEST": "1", ' + marker, 1))
    git(project, "commit", "-qam", "fargate: one more env var")
    started = time.monotonic()
    report = commands.deploy_stack("CarRentalFargateStack", runtime=quiet_runtime(project))
    seconds = time.monotonic() - started
    assert report is not None and report.ok
    assert report.records[-1].status == "done", report.records[-1]
    assert [subject for _, _, subject in report.plan.commits] == ["fargate: one more env var"]  # what went live
    print(f"\none-stack update (deploy.stack CarRentalFargateStack): {seconds:.1f}s")
    config = load_config(project / "deploy.toml")
    env = config.environment()
    ecs = sandbox_client(project, "ecs")
    service = ecs.describe_services(cluster=env.cluster, services=[env.service])["services"][0]
    taskdef = ecs.describe_task_definition(taskDefinition=service["taskDefinition"])["taskDefinition"]
    names = {e["name"] for e in taskdef["containerDefinitions"][0]["environment"]}
    assert "DEPLOYKIT_TEST" in names
    # the image stayed the one that is live: never silently something else
    image = taskdef["containerDefinitions"][0]["image"]
    assert image.endswith(":" + git(project, "rev-parse", "--short=12", "HEAD~1").strip())


def test_in_express_mode_deploy_stack_waits_for_the_service_itself_and_fails_on_its_rollout(project: Path) -> None:
    """stack_mode = "express": the Fargate stack's update ends once applied, and deploy.stack waits for the service's
    rollout itself, as CloudFormation would have; a revision whose tasks crash (a number the backend cannot read)
    fails the step, exit 1, naming what to do, while the previous revision serves. Back to standard after."""
    toml, source = project / "deploy.toml", project / "cdk" / "stacks" / "fargate_stack.py"
    toml_text, text = toml.read_text(), source.read_text()
    before = git(project, "rev-parse", "HEAD").strip()
    marker = '"PORT": str(CONTAINER_PORT),'
    assert "[environments.sandbox]\n" in toml_text and marker in text
    toml.write_text(toml_text.replace("[environments.sandbox]\n", '[environments.sandbox]\nstack_mode = "express"\n'))
    source.write_text(text.replace(marker, '"DEPLOYKIT_EXPRESS": "1", ' + marker, 1))
    git(project, "commit", "-qam", "sandbox: express; fargate: one more env var")
    env = load_config(project / "deploy.toml").environment()
    assert env.stack_mode == "express"
    runtime = quiet_runtime(project)
    try:
        started = time.monotonic()
        report = commands.deploy_stack("fargate", runtime=runtime)
        seconds = time.monotonic() - started
        assert report is not None and report.ok
        deployed = next(r for r in report.records if r.step == "deploy-stack")
        assert "updated in" in deployed.detail and "in express mode" in deployed.detail, deployed.detail
        assert f"{env.service} healthy" in deployed.detail, deployed.detail
        print(f"\none-stack update in express mode (deploy.stack fargate): {seconds:.1f}s")
        events = _cfn(project).describe_stack_events(StackName="CarRentalFargateStack")["StackEvents"]
        assert any("Express Mode" in e.get("ResourceStatusReason", "") for e in events)
        ecs = sandbox_client(project, "ecs")
        service = ecs.describe_services(cluster=env.cluster, services=[env.service])["services"][0]
        assert [(d["status"], d["rolloutState"]) for d in service["deployments"]] == [("PRIMARY", "COMPLETED")]
        serving = service["taskDefinition"]

        source.write_text(source.read_text().replace(marker, '"KYC_MAX_BYTES": "lots", ' + marker, 1))
        git(project, "commit", "-qam", "fargate: a setting the backend cannot read")
        with pytest.raises(StepFailed) as failed:
            commands.deploy_stack("fargate", runtime=quiet_runtime(project))
        print(f"❌ {failed.value.message}\n  → next: {failed.value.next_step}")
        assert failed.value.exit_code == 1
        assert "CarRentalFargateStack was updated in express mode, but car-rental-service did not become healthy" in (
            failed.value.message
        )
        assert "the stack keeps its new template" in failed.value.next_step
        assert "inv rollback --env sandbox --component stack:fargate" in failed.value.next_step
        assert "ECS goes on trying until its circuit breaker puts the previous revision back" in failed.value.next_step

        def put_back() -> bool:  # the old tasks serve meanwhile; the circuit breaker trips at the third failed task
            found = ecs.describe_services(cluster=env.cluster, services=[env.service])["services"][0]
            return bool(found["taskDefinition"] == serving)

        deadline = time.monotonic() + 120
        while not put_back():
            assert time.monotonic() < deadline, "the circuit breaker never put the previous revision back"
            time.sleep(1)
        wait_http_ok(f"{load_config(project / 'deploy.toml').environment().endpoints['alb_url']}/health")
        held = failed.value.message.split(" did not become healthy on ", 1)[1].split(":", 2)
        held_revision = f"{held[0]}:{held[1]}"
        # inv health says so meanwhile (the stack's resources read from the sandbox's CloudFormation)
        warned = [f.what for f in health.gather(AwsFactory(env), env, None).findings if " holds " in f.what]
        assert warned == [
            f"CarRentalFargateStack holds {held_revision}, which car-rental-service does not run "
            f"({serving.rsplit('/', 1)[-1]}): an express update's rollout failed and ECS put the older revision back"
        ]
        # the same commit again: its change set finds nothing to change (the stack kept the template); the stack's
        # revision is rolled out again, as CloudFormation would in the standard mode, and fails again, never passes
        runtime = quiet_runtime(project)
        with pytest.raises(StepFailed) as again:
            commands.deploy_stack("fargate", runtime=runtime)
        said = runtime.stderr.getvalue()  # type: ignore[attr-defined]
        print(f"❌ {again.value.message}\n  → next: {again.value.next_step}")
        assert again.value.exit_code == 1
        assert (
            f"CarRentalFargateStack holds {held_revision}, which car-rental-service does not run "
            f"({serving.rsplit('/', 1)[-1]}: ECS put it back after the stack's express update failed to roll out): "
            "rolling it out again" in said
        ), said
        assert f"CarRentalFargateStack's {held_revision} was rolled out again, but car-rental-service did not" in (
            again.value.message
        )
        while not put_back():  # the circuit breaker again
            assert time.monotonic() < deadline + 120, "the circuit breaker never put the previous revision back"
            time.sleep(1)
    finally:
        git(project, "reset", "-q", "--hard", before)  # the tests after count the commits
        report = commands.deploy_stack("fargate", runtime=quiet_runtime(project))
        assert report is not None and report.ok
        ecs = sandbox_client(project, "ecs")
        deadline = time.monotonic() + 60
        while True:  # the failed deployments stay listed a while after their rollback (inv health calls them broken)
            found = ecs.describe_services(cluster=env.cluster, services=[env.service])["services"][0]
            if all(d.get("rolloutState") != "FAILED" for d in found["deployments"]):
                break
            assert time.monotonic() < deadline, found["deployments"]
            time.sleep(1)


def test_an_image_the_registry_does_not_have_is_refused_before_the_change_set(project: Path) -> None:
    """deploy.stack --image-tag of a tag the sandbox's registry does not have: exit 2 before any change set (on AWS
    the tasks would fail to pull until the circuit breaker put the service back, minutes later)."""
    cfn = _cfn(project)
    before = cfn.describe_stacks(StackName="CarRentalFargateStack")["Stacks"][0]
    change_sets = cfn.list_change_sets(StackName="CarRentalFargateStack")["Summaries"]
    with pytest.raises(UsageError) as refused:
        commands.deploy_stack("fargate", image_tag="no-such-tag", runtime=quiet_runtime(project))
    assert refused.value.exit_code == 2
    assert (
        "car-rental-backend:no-such-tag, which is not in the registry of environment 'sandbox'" in refused.value.message
    )
    after = cfn.describe_stacks(StackName="CarRentalFargateStack")["Stacks"][0]
    assert (after["StackStatus"], after.get("LastUpdatedTime")) == (
        before["StackStatus"],
        before.get("LastUpdatedTime"),
    )
    assert cfn.list_change_sets(StackName="CarRentalFargateStack")["Summaries"] == change_sets  # none made


class NoDebugInProduction:
    """A team's rule, as a plugin: no DEBUG variable reaches the service's tasks."""

    @hookimpl
    def deploykit_review_stack_changes(self, stack: str, changes: list[dict[str, Any]]) -> list[str]:
        return [
            f"{stack}: {c['logical_id']} would set DEBUG"
            for c in changes
            for d in c["details"]
            if c["type"] == "AWS::ECS::TaskDefinition" and '"DEBUG"' in (d["after"] or "")
        ]


def test_a_change_the_teams_plugin_refuses_is_shown_by_diff_and_refused_by_deploy_stack(project: Path) -> None:
    source = project / "cdk" / "stacks" / "fargate_stack.py"
    text = source.read_text()
    marker = '"PORT": str(CONTAINER_PORT),'
    source.write_text(text.replace(marker, '"DEBUG": "1", ' + marker, 1))  # uncommitted: as a developer tries it

    def with_rule() -> commands.Runtime:
        runtime = quiet_runtime(project)
        return dataclasses.replace(
            runtime, plugins_factory=lambda: get_plugin_manager(extra=[("team_rules", NoDebugInProduction())])
        )

    try:
        runtime = with_rule()
        commands.diff(as_json=True, runtime=runtime)
        stack = json.loads(runtime.stdout.getvalue())["stacks"]["CarRentalFargateStack"]  # type: ignore[attr-defined]
        assert stack["refused"] == {"team_rules": ["CarRentalFargateStack: " + _taskdef(stack) + " would set DEBUG"]}
        said = runtime.stderr.getvalue()  # type: ignore[attr-defined]
        assert "⛔ plugin 'team_rules' refuses this change: CarRentalFargateStack: " in said

        cfn = _cfn(project)
        before = cfn.describe_stacks(StackName="CarRentalFargateStack")["Stacks"][0].get("LastUpdatedTime")
        with pytest.raises(UsageError) as refused:
            commands.deploy_stack("fargate", allow_dirty=True, runtime=with_rule())  # uncommitted: allowed
        assert refused.value.exit_code == 2
        assert "the team's check plugins refuse its change set: team_rules: CarRentalFargateStack: " in (
            refused.value.message
        )
        assert "DEPLOYKIT_BLOCK_PLUGINS=team_rules inv deploy.stack CarRentalFargateStack" in (
            refused.value.next_step or ""
        )
        assert cfn.describe_stacks(StackName="CarRentalFargateStack")["Stacks"][0].get("LastUpdatedTime") == before
    finally:
        source.write_text(text)


def _taskdef(stack: dict[str, Any]) -> str:
    (logical_id,) = [c["logical_id"] for c in stack["changes"] if c["type"] == "AWS::ECS::TaskDefinition"]
    return str(logical_id)


def _cfn(project: Path) -> Any:
    return sandbox_client(project, "cloudformation")


def test_health_recommends_lowering_a_stack_set_deregistration_delay_of_300s(project: Path) -> None:
    source = project / "cdk" / "stacks" / "fargate_stack.py"
    delay = "DEREGISTRATION_DELAY = Duration.seconds(5)"
    assert delay in source.read_text(), "the Fargate stack's deregistration delay is 5 s"
    healthy = commands.health_report(runtime=quiet_runtime(project))
    assert not [r for r in healthy.recommendations if r.setting == "deregistration delay"]

    source.write_text(source.read_text().replace(delay, "DEREGISTRATION_DELAY = Duration.seconds(300)"))
    git(project, "commit", "-qam", "fargate: the AWS default deregistration delay")
    report = commands.deploy_stack("fargate", runtime=quiet_runtime(project))
    assert report is not None and report.ok
    health = commands.health_report(runtime=quiet_runtime(project))
    assert not health.broken, health.findings
    delays = [r for r in health.recommendations if r.setting == "deregistration delay"]
    assert delays and delays[0].current == "300 s", health.recommendations
    assert health.live_sha == git(project, "rev-parse", "--short=12", "HEAD~2").strip()  # the image deployed last

    # put it back, so later rollouts in this module do not drain for 5 minutes
    git(project, "revert", "--no-edit", "HEAD")
    assert commands.deploy_stack("fargate", runtime=quiet_runtime(project)) is not None


def run_in(project: Path, *command: str, **env: str) -> subprocess.CompletedProcess[str]:
    """A task as a user runs it, in a process of its own, against the project's deploy.toml."""
    inherited = {key: value for key, value in os.environ.items() if key != "DEPLOYKIT_BLOCK_PLUGINS"}
    environ = {**inherited, "DEPLOYKIT_CONFIG": str(project / "deploy.toml"), **env}
    return subprocess.run(command, cwd=project, env=environ, capture_output=True, text=True, timeout=180)


def test_smoke_runs_an_installed_team_plugin_unless_it_is_blocked(project: Path, installed_team_plugin: Path) -> None:
    inv = [sys.executable, "-m", "invoke", "--search-root", str(REPO), "smoke"]
    answer = run_in(project, *inv, "--json", PYTHONPATH=str(installed_team_plugin))
    assert answer.returncode == 0, answer.stderr
    checks = {c["name"]: c["status"] for c in json.loads(answer.stdout)["checks"]}
    assert checks == {name: "passed" for name in ("alb", "api_gateway", "auth", "connectivity", "kyc", "team_fleet")}
    assert "team_fleet" in answer.stderr and "6 cars listed, all priced" in answer.stderr  # in the table

    blocked = run_in(
        project, *inv, "--json", PYTHONPATH=str(installed_team_plugin), DEPLOYKIT_BLOCK_PLUGINS="team_checks"
    )
    assert blocked.returncode == 0, blocked.stderr
    assert "team_fleet" not in {c["name"] for c in json.loads(blocked.stdout)["checks"]}

    # nox -s smoke runs the same thing
    nox = run_in(
        project, sys.executable, "-m", "nox", "-f", str(REPO / "noxfile.py"), "-s", "smoke", "--", "--env", "sandbox"
    )
    assert nox.returncode == 0, nox.stderr
    assert "✅ smoke passed on sandbox: 5 passed" in nox.stdout + nox.stderr


def test_an_installed_team_plugins_rule_on_stack_changes_shows_in_inv_diff(
    project: Path, installed_team_plugin: Path
) -> None:
    """tests/sample_plugin's rule (a table's key never changes), installed: inv diff says it refuses such a change."""
    source = project / "cdk" / "stacks" / "data_stack.py"
    text = source.read_text()
    assert '_table(self, "CarsTable", "car_id")' in text
    source.write_text(text.replace('_table(self, "CarsTable", "car_id")', '_table(self, "CarsTable", "car_uid")'))
    try:
        inv = [sys.executable, "-m", "invoke", "--search-root", str(REPO), "diff", "--json"]
        answer = run_in(project, *inv, PYTHONPATH=str(installed_team_plugin))
        assert answer.returncode == 0, answer.stderr
        stack = json.loads(answer.stdout)["stacks"]["CarRentalDataStack"]
        (cars,) = [c["logical_id"] for c in stack["changes"] if c["logical_id"].startswith("CarsTable")]
        assert stack["refused"] == {"team_checks": [f"{cars}: the table's key would change (car_id → car_uid)"]}
        assert "⛔ plugin 'team_checks' refuses this change: " in answer.stderr
    finally:
        source.write_text(text)


def test_with_the_backend_stopped_alb_and_connectivity_fail_and_smoke_exits_1(
    project: Path, docker_engine: docker.DockerClient
) -> None:
    config = load_config(project / "deploy.toml")
    env = config.environment()
    ecs = sandbox_client(project, "ecs")
    tasks = ecs.list_tasks(cluster=env.cluster, serviceName=env.service, desiredStatus="RUNNING")["taskArns"]
    assert tasks
    for arn in tasks:
        for container in docker_engine.containers.list(filters={"label": f"io.deploykit.task-arn={arn}"}):
            container.stop(timeout=1)
    answer = run_in(project, sys.executable, "-m", "invoke", "--search-root", str(REPO), "smoke", "--json")
    assert answer.returncode == 1, answer.stderr
    results = {c["name"]: c for c in json.loads(answer.stdout)["checks"]}
    alb = results["alb"]["detail"]
    # no task answers (502/503), or, on a loaded machine, the sandbox's ECS already registering the task that replaces
    # a stopped one, as ECS does: no healthy target yet (seen once in CI)
    assert results["alb"]["status"] == "failed" and ("/health → 50" in alb or "no healthy target in " in alb), alb
    assert results["connectivity"]["status"] == "failed"
    assert "/health/deep → 50" in results["connectivity"]["detail"]  # 502/503: no task answers
    assert results["api_gateway"]["status"] == "passed"  # the Lambdas do not need the backend
    assert "❌ smoke failed" in answer.stderr and "→ next:" in answer.stderr


def test_a_frozen_environment_refuses_a_deploy_and_says_so_until_it_is_thawed(project: Path) -> None:
    """inv freeze, as a user types it: inv diff says it, inv deploy.app is refused (exit 2) before anything runs,
    inv envs shows it; inv unfreeze ends it."""
    inv = [sys.executable, "-m", "invoke", "--search-root", str(REPO)]
    frozen = run_in(project, *inv, "freeze", "--reason", "the audit", "--until", "1h", DEPLOYKIT_ACTOR="lead")
    assert frozen.returncode == 0, frozen.stderr
    assert "❄️  sandbox is frozen by lead since " in frozen.stderr and ": the audit" in frozen.stderr
    try:
        env = load_config(project / "deploy.toml").environment()
        ecs = sandbox_client(project, "ecs")
        running = ecs.describe_services(cluster=env.cluster, services=[env.service])["services"][0]["taskDefinition"]
        refused = run_in(project, *inv, "deploy.app")
        assert refused.returncode == 2, refused.stderr
        assert "❌ refusing to deploy to sandbox: sandbox is frozen by lead since " in refused.stderr
        assert "Nothing was changed" in refused.stderr and "DEPLOYKIT_ALLOW_FROZEN=1" in refused.stderr
        assert "✅ done" not in refused.stderr and "⏭" not in refused.stderr  # no step ran
        after = ecs.describe_services(cluster=env.cluster, services=[env.service])["services"][0]["taskDefinition"]
        assert after == running
        envs = run_in(project, *inv, "envs")
        assert envs.returncode == 0, envs.stderr
        assert "  ❄️  sandbox is frozen by lead since " in envs.stderr
        runtime = quiet_runtime(project)
        commands.diff(runtime=runtime)
        assert "❄️  sandbox is frozen by lead" in runtime.stderr.getvalue()  # type: ignore[attr-defined]
        # deploy.auto read the freeze with what is live: refused after its analysis, before a plan or the lock
        fleet = project / "backend" / "app" / "fleet.py"
        fleet.write_text(fleet.read_text() + "\n# a change the freeze keeps out\n")
        git(project, "commit", "-qam", "backend: a change")
        runtime = quiet_runtime(project)
        with pytest.raises(UsageError, match="refusing to deploy to sandbox: sandbox is frozen by lead since "):
            commands.deploy_auto(runtime=runtime)
        said = runtime.stderr.getvalue()  # type: ignore[attr-defined]
        assert "📱 App code: backend/app/fleet.py → inv deploy.app" in said and "Plan for" not in said
    finally:
        thawed = run_in(project, *inv, "unfreeze")
    assert thawed.returncode == 0, thawed.stderr
    assert "🌤  sandbox thawed: it was frozen by lead since " in thawed.stderr


def test_the_app_s_termination_protection_is_set_by_a_deploy_and_refuses_destroy_before_any_stack_goes(
    project: Path,
) -> None:
    """``termination_protection=True`` on the data stack: a change set cannot set it, the CDK CLI sets it after the
    deploy, and deploykit did not (the stack could be deleted by hand). Now its deploy sets it, inv destroy refuses
    before deleting any stack (CloudFormation refused the data stack after the API and Fargate stacks were gone), and
    taking it out of the app turns it off again (the template unchanged: the step still says so)."""
    source = project / "cdk" / "stacks" / "data_stack.py"
    plain = "        super().__init__(scope, construct_id, **kwargs)\n"
    protected = "        super().__init__(scope, construct_id, termination_protection=True, **kwargs)\n"
    source.write_text(source.read_text().replace(plain, protected))
    git(project, "commit", "-qam", "data: protected from deletion")
    cfn = _cfn(project)
    report = commands.deploy_stack("data", runtime=quiet_runtime(project))
    assert report is not None and report.ok
    [detail] = [r.detail for r in all_records(report.records) if r.step == "deploy-stack"]
    assert detail.endswith("no changes to the stack; termination protection on"), detail
    assert cfn.describe_stacks(StackName="CarRentalDataStack")["Stacks"][0]["EnableTerminationProtection"]

    alive = {s["StackName"] for s in cfn.describe_stacks()["Stacks"] if s["StackStatus"] != "DELETE_COMPLETE"}
    with pytest.raises(UsageError, match=r"CarRentalDataStack is protected from deletion .*: nothing was deleted"):
        commands.destroy(include_data=True, runtime=quiet_runtime(project))
    assert {s["StackName"] for s in cfn.describe_stacks()["Stacks"] if s["StackStatus"] != "DELETE_COMPLETE"} == alive

    source.write_text(source.read_text().replace(protected, plain))
    git(project, "commit", "-qam", "data: no longer protected")
    report = commands.deploy_stack("data", runtime=quiet_runtime(project))
    assert report is not None and report.ok
    assert not cfn.describe_stacks(StackName="CarRentalDataStack")["Stacks"][0]["EnableTerminationProtection"]


def test_destroy_keeps_data_stacks_unless_asked(project: Path) -> None:
    cfn = sandbox_client(project, "cloudformation")

    def alive() -> set[str]:
        stacks = cfn.describe_stacks()["Stacks"]
        return {s["StackName"] for s in stacks if s["StackStatus"] != "DELETE_COMPLETE"}

    commands.destroy(runtime=quiet_runtime(project))
    assert alive() == {"CarRentalRegistryStack", "CarRentalDataStack", "CarRentalAuthStack"}
    # the history kept in the registry stack's bucket says who destroyed what; the live record drops it
    runtime = quiet_runtime(project)
    commands.history_list(as_json=True, runtime=runtime)
    found = json.loads(runtime.stdout.getvalue())  # type: ignore[attr-defined]
    newest = found["deployments"][0]
    gone = {"app", "lambda:health_handler", "lambda:login_handler", "stack:fargate", "stack:api"}
    assert (newest["command"], newest["ok"], set(newest["removed"])) == ("destroy", True, gone)
    assert set(newest["base"]) == gone and newest["components"] == {}
    assert set(found["live"]) == {"stack:registry", "stack:data", "stack:auth"}
    commands.destroy(include_data=True, runtime=quiet_runtime(project))
    assert alive() == set()
