"""Automatic rollback of the app against moto's ECS, ECR, S3 and CloudFormation, through the command the task calls.

moto runs no task, so wait-healthy is replaced by a step that fails for the release under test (``HEAD``'s tag) as a
crashing release would, and reports healthy for any other image; the circuit-breaker case also moves the service back
itself, as ECS does. Everything else — registering, rolling, the history, the lock — is deploykit's own code.
"""

from __future__ import annotations

import dataclasses
import io
import json
import time
from pathlib import Path
from typing import Any

import pytest

from deploykit import commands, history
from deploykit.app_chain import WaitHealthy
from deploykit.aws import AwsFactory
from deploykit.config import EnvConfig
from deploykit.errors import RolledBackByEcs, StepFailed, UsageError
from deploykit.hookspecs import hookimpl
from deploykit.plan import Context, Outcome
from deploykit.plugins import get_plugin_manager
from deploykit.watch import AlarmJudge
from tests.conftest import git
from tests.functional import test_rollback_moto as rollback_tests
from tests.functional.conftest import put_image
from tests.functional.test_alarm_list_moto import watching
from tests.functional.test_rollback_moto import URI, revision_count, runtime, service_image
from tests.functional.test_watch_alarms_moto import put_alarm, set_state

deployed = rollback_tests.deployed  # the fixture: a service that ran A, then B, and runs C now

C = "ccccccc33333"  # what the `deployed` fixture leaves live
STAGES = ("register-taskdef", "roll-service", "wait-healthy")


@pytest.fixture
def release(project: Path, factory: AwsFactory, deployed: history.History, monkeypatch: pytest.MonkeyPatch) -> str:
    """HEAD's image pushed; wait-healthy fails for it (a task that stops at start) and passes for anything else."""
    tag = git(project, "rev-parse", "--short=12", "HEAD").strip()
    from tests.functional.conftest import put_image

    put_image(factory, tag)

    def wait(self: WaitHealthy, ctx: Context) -> Outcome:
        if self.image.endswith(f":{tag}"):
            raise StepFailed(
                f"car-rental-service did not become healthy on {tag}: a new task stopped: exit code 3",
                next_step="fix the release",
            )
        return Outcome.done(f"healthy: {self.image.rsplit(':', 1)[-1]}")

    monkeypatch.setattr(WaitHealthy, "run", wait)
    return tag


def test_a_release_that_never_gets_healthy_is_rolled_back_on_a_fresh_revision(
    project: Path, factory: AwsFactory, deployed: history.History, release: str
) -> None:
    revisions = revision_count(factory)
    out, err = io.StringIO(), io.StringIO()
    with pytest.raises(StepFailed) as failed:
        commands.app_chain(STAGES, env="dev", as_json=True, runtime=runtime(project, factory, out, err))

    # the failure and the rollback, both in the message; exit 1
    message = str(failed.value)
    assert failed.value.exit_code == 1
    assert f"did not become healthy on {release}" in message
    assert "automatic rollback: app ok in" in message and "dev runs what was live before" in message
    assert "fix the release and deploy again" in message
    assert "what it wrote: inv logs --env dev --since 15m" in (failed.value.next_step or "")
    printed = err.getvalue()
    assert f"⏪ automatic rollback: app: putting back what this deploy replaced (app (was {C}))" in printed
    # C, a commit of the fixture's, is in no clone: said before the deploy went on (deploy.auto refuses it)
    assert (
        f"⚠️  app is live in dev at {C}, a commit that is not in this clone's history: deploying HEAD ({release}) "
        "replaces what it has (git fetch, then inv diff, tells what)\n"
    ) in printed
    # the service is back on C, through a fresh revision (the failed release's + 1), never an old number
    arn, image = service_image(factory)
    assert image == f"{URI}:{C}"
    assert revision_count(factory) == revisions + 2 and arn.endswith(f":{revisions + 2}")
    # JSON: the failed run, then its rollback
    answer = json.loads(out.getvalue())
    assert answer["ok"] is False and answer["rollback"]["ok"] is True
    assert [(s["step"], s["status"]) for s in answer["rollback"]["steps"]] == [
        ("register-taskdef", "done"),
        ("roll-service", "done"),
        ("wait-healthy", "done"),
    ]
    # the history: the failed deploy, then the rollback that put C back; the live record says C
    newest, failed_run = deployed.records(2)
    assert (newest.command, newest.components, newest.ok) == ("automatic rollback: app", {"app": C}, True)
    assert (failed_run.components, failed_run.ok) == ({"app": release}, False)
    assert deployed.live()["app"]["sha"] == C


def test_no_rollback_leaves_the_failed_release_in_place_and_says_how_to_put_it_back(
    project: Path, factory: AwsFactory, deployed: history.History, release: str
) -> None:
    with pytest.raises(StepFailed) as failed:
        commands.app_chain(STAGES, env="dev", rollback=False, runtime=runtime(project, factory))
    assert f"left in place for debugging (--no-rollback): app (was {C})" in failed.value.message
    assert failed.value.next_step and "inv rollback --env dev" in failed.value.next_step
    assert failed.value.next_step.endswith("; what it wrote: inv logs --env dev --since 15m")
    assert service_image(factory)[1] == f"{URI}:{release}"
    assert deployed.live()["app"]["sha"] == C  # a failed deploy never becomes the live record


class Heard:
    """A plugin that keeps what it hears of each deployment, in order."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str, str]] = []

    @hookimpl
    def deploykit_deployment_started(self, env: str, plan: dict[str, Any]) -> None:
        self.events.append(("started", str(plan.get("title")), ""))

    @hookimpl
    def deploykit_deployment_failed(self, env: str, report: dict[str, Any], error: str) -> None:
        self.events.append(("failed", str(report.get("title")), error))

    @hookimpl
    def deploykit_deployment_finished(self, env: str, report: dict[str, Any]) -> None:
        self.events.append(("finished", str(report.get("title")), ""))

    @hookimpl
    def deploykit_deployment_not_run(self, env: str, report: dict[str, Any]) -> None:
        self.events.append(("not run", str(report.get("command")), str(report.get("outcome"))))


def hearing(project: Path, factory: AwsFactory, heard: Heard) -> commands.Runtime:
    return dataclasses.replace(
        runtime(project, factory),
        plugins_factory=lambda: get_plugin_manager(entry_points=[], extra=[("heard", heard)], environ={}),
    )


def test_with_no_rollback_the_plugins_hear_the_failure_as_the_command_says_it(
    project: Path, factory: AwsFactory, deployed: history.History, release: str
) -> None:
    """The chat and the job's page said the step's "fix the release", not what was left in place and how to put it
    back (the command's own message, settled after the run)."""
    heard = Heard()
    with pytest.raises(StepFailed) as failed:
        commands.app_chain(STAGES, env="dev", rollback=False, runtime=hearing(project, factory, heard))
    assert [e[0] for e in heard.events] == ["started", "failed"]  # once: not again as a run that did not run
    event = heard.events[1]
    assert event[2] == str(failed.value)
    assert f"left in place for debugging (--no-rollback): app (was {C})" in event[2]
    assert f"→ next: put back what was live: inv rollback --env dev --component app --to {C}" in event[2]


def test_the_plugins_hear_of_the_failure_before_the_automatic_rollback(
    project: Path, factory: AwsFactory, deployed: history.History, release: str
) -> None:
    heard = Heard()
    with pytest.raises(StepFailed):
        commands.app_chain(STAGES, env="dev", runtime=hearing(project, factory, heard))
    assert [e[:2] for e in heard.events] == [
        ("started", "register-taskdef → roll-service → wait-healthy"),
        ("failed", "register-taskdef → roll-service → wait-healthy"),
        ("started", "automatic rollback: app"),
        ("finished", "automatic rollback: app"),
    ]  # each once


def test_a_circuit_breaker_rollback_is_reported_and_not_repeated(
    project: Path, factory: AwsFactory, deployed: history.History, release: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    previous_arn = service_image(factory)[0]

    def breaker(self: WaitHealthy, ctx: Context) -> Outcome:
        if self.image.endswith(f":{release}"):  # ECS puts the previous deployment back by itself
            ctx.aws.client("ecs").update_service(
                cluster="car-rental-cluster", service="car-rental-service", taskDefinition=previous_arn
            )
            raise RolledBackByEcs(
                f"car-rental-service did not become healthy on {release}: circuit breaker rolled the service back",
                next_step="fix the release",
            )
        return Outcome.done(f"healthy: {self.image.rsplit(':', 1)[-1]}")

    monkeypatch.setattr(WaitHealthy, "run", breaker)
    revisions = revision_count(factory)
    err = io.StringIO()
    with pytest.raises(RolledBackByEcs) as failed:
        commands.app_chain(STAGES, env="dev", runtime=runtime(project, factory, stderr=err))
    assert f"ECS's circuit breaker already rolled car-rental-service back to {C}: not repeated" in failed.value.message
    assert "dev runs what was live before" in failed.value.message
    # only waited for: no revision registered besides the release's, the service on the revision ECS put back
    assert revision_count(factory) == revisions + 1
    assert service_image(factory) == (previous_arn, f"{URI}:{C}")
    assert "↩️  ECS's circuit breaker already rolled" in err.getvalue()


def test_a_failure_before_the_service_rolled_puts_nothing_back(
    project: Path, factory: AwsFactory, deployed: history.History, dev_env: EnvConfig
) -> None:
    """register-taskdef refuses an image that is not in the registry: nothing was replaced, nothing to undo."""
    git(project, "commit", "-q", "--allow-empty", "-m", "an unpushed release")
    err = io.StringIO()
    with pytest.raises(UsageError) as failed:  # bad input (exit 2): the image was never pushed
        commands.app_chain(STAGES, env="dev", runtime=runtime(project, factory, stderr=err))
    assert "is not in the registry" in str(failed.value)
    assert "automatic rollback" not in str(failed.value) and "⏪" not in err.getvalue()
    assert service_image(factory)[1] == f"{URI}:{C}"


@pytest.fixture
def express(project: Path, factory: AwsFactory) -> None:
    """dev in express mode, committed before `release` tags HEAD."""
    toml = project / "deploy.toml"
    toml.write_text(toml.read_text().replace("[environments.dev]\n", '[environments.dev]\nstack_mode = "express"\n', 1))
    git(project, "commit", "-qam", "dev: express")


def test_in_express_mode_the_rollback_puts_back_what_ran_not_the_stack_s_unrolled_template(
    project: Path, factory: AwsFactory, express: None, deployed: history.History, release: str
) -> None:
    """The Fargate stack holds a revision its express update failed to roll out (a new setting); the release is made
    from it, fails, and the rollback makes its revision from what ran before, without the setting."""
    ran, _ = service_image(factory)
    held = {
        "Type": "AWS::ECS::TaskDefinition",
        "Properties": {
            "Family": "car-rental-backend",
            "ContainerDefinitions": [
                {"Name": "backend", "Image": f"{URI}:{C}", "Memory": 512, "Environment": [{"Name": "F", "Value": "on"}]}
            ],
        },
    }
    cfn = factory.client("cloudformation")
    cfn.create_stack(StackName="CarRentalFargateStack", TemplateBody=json.dumps({"Resources": {"TaskDef": held}}))
    stack_revision = factory.client("ecs").list_task_definitions(familyPrefix="car-rental-backend")[
        "taskDefinitionArns"
    ][-1]
    err = io.StringIO()
    with pytest.raises(StepFailed):
        commands.app_chain(STAGES, env="dev", runtime=runtime(project, factory, io.StringIO(), err))
    printed = err.getvalue()
    name = stack_revision.rsplit("/", 1)[-1]
    assert f"(from {name}, which CarRentalFargateStack holds; the service runs {ran.rsplit('/', 1)[-1]}, " in printed
    assert f"(from {ran.rsplit('/', 1)[-1]}: what ran before)" in printed
    arn, image = service_image(factory)
    definition = factory.client("ecs").describe_task_definition(taskDefinition=arn)["taskDefinition"]
    assert image == f"{URI}:{C}"
    assert all(e["name"] != "F" for e in definition["containerDefinitions"][0].get("environment", []))

    # the service now runs a revision newer than the stack's, made from what ran: the next deploy still makes its
    # revision from the stack's, the setting back
    (project / "NOTES.md").write_text("a fix\n")
    git(project, "add", "-A")
    git(project, "commit", "-qm", "the fix")
    put_image(factory, git(project, "rev-parse", "--short=12", "HEAD").strip())
    report = commands.app_chain(STAGES, env="dev", runtime=runtime(project, factory))
    assert report is not None and report.ok
    assert report.records[0].detail.endswith(f"(from {name}, which CarRentalFargateStack holds)")
    arn, _ = service_image(factory)
    definition = factory.client("ecs").describe_task_definition(taskDefinition=arn)["taskDefinition"]
    assert {"name": "F", "value": "on"} in definition["containerDefinitions"][0]["environment"]


def test_a_release_an_alarm_failed_names_the_wait_for_the_alarms_after_its_rollback(
    project: Path, factory: AwsFactory, deployed: history.History, release: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The team's alarm stays in ALARM a while after the automatic rollback: the next step names the wait for it."""
    put_alarm(factory, "car-rental-5xx")
    watching(project, "car-rental-5xx")
    git(project, "commit", "-qam", "the alarm watch")
    put_image(factory, git(project, "rev-parse", "--short=12", "HEAD").strip())

    def alarmed(self: WaitHealthy, ctx: Context) -> Outcome:  # the release sets the alarm off as it rolls out
        if not self.image.endswith(f":{C}"):
            time.sleep(0.01)  # CloudWatch's times are to the millisecond
            set_state(factory, "car-rental-5xx", "ALARM")
            failure = AlarmJudge(ctx, ("car-rental-5xx",)).check()
            assert failure is not None
            raise failure
        return Outcome.done("healthy")

    monkeypatch.setattr(WaitHealthy, "run", alarmed)
    with pytest.raises(StepFailed) as failed:
        commands.app_chain(STAGES, env="dev", runtime=runtime(project, factory))
    assert "dev runs what was live before" in failed.value.message
    assert failed.value.message.startswith("alarm car-rental-5xx went to ALARM ")
    # its period (60 s), one evaluation period, and AWS's late minute: 2 minutes, twice
    assert "; whether the alarms clear: inv alarms --env dev --wait 4m; " in str(failed.value.next_step)


def test_a_release_no_alarm_failed_names_no_wait_for_the_alarms(
    project: Path, factory: AwsFactory, deployed: history.History, release: str
) -> None:
    with pytest.raises(StepFailed) as failed:
        commands.app_chain(STAGES, env="dev", runtime=runtime(project, factory))
    assert "dev runs what was live before" in failed.value.message
    assert "inv alarms" not in str(failed.value.next_step)
