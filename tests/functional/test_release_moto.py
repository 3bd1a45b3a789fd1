"""The release command ([release] of deploy.toml) against moto's ECS: run once in the new revision, beside the
service, before roll-service; its exit code decides. moto holds the service and its revisions; :class:`Agent`
answers for the one-off tasks, ending each as the test says when deploykit first looks at it."""

from __future__ import annotations

import io
import shutil
import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar
from unittest.mock import Mock

import pytest
from botocore.awsrequest import AWSResponse
from moto.ecs.models import ecs_backends

from deploykit import commands, planner
from deploykit.aws import AwsFactory
from deploykit.clock import FakeClock
from deploykit.config import load_config
from deploykit.errors import StepFailed
from deploykit.git import current_revision
from deploykit.output import Reporter
from deploykit.plan import Context, Executor, Outcome, Parallel, Plan, Step
from deploykit.release import STARTED_BY, pending
from tests.conftest import REPO, git
from tests.functional.conftest import REGION, create_service, put_image
from tests.functional.conftest import moto_runtime as runtime

ACCOUNT = "123456789012"  # moto's
COMMAND = '["python", "-m", "app.release"]'
RUNS = {"memory": 512}  # moto runs a task only when its container names its memory


class Agent:
    """ECS's scheduler and agent for the release's one-off tasks (moto cannot run one of an awsvpc task definition):
    RunTask, DescribeTasks and StopTask of them answered here, the rest by moto. A task ends (exit ``code``; None: it
    never ran, ``reason`` says why) the first time it is described, or never (``ends=False``) until stopped."""

    def __init__(self, factory: AwsFactory, code: int | None = 0, *, ends: bool = True, reason: str = "") -> None:
        self.code, self.ends, self.reason = code, ends, reason
        self.run: list[dict[str, Any]] = []
        self.stopped: list[str] = []
        self.tasks: dict[str, dict[str, Any]] = {}
        ecs = factory.client("ecs")
        ecs.meta.events.register("provide-client-params.ecs.RunTask", self._ran)
        ecs.meta.events.register("before-call.ecs.RunTask", self._run_task)
        ecs.meta.events.register("provide-client-params.ecs.DescribeTasks", self._described)
        ecs.meta.events.register("before-call.ecs.DescribeTasks", self._answer)
        ecs.meta.events.register("provide-client-params.ecs.StopTask", self._stop)
        ecs.meta.events.register("before-call.ecs.StopTask", self._answer)
        self._answer_next: dict[str, Any] = {}

    def _ran(self, params: dict[str, Any], **_: Any) -> None:
        self.run.append(dict(params))
        arn = f"arn:aws:ecs:{REGION}:{ACCOUNT}:task/car-rental-cluster/{len(self.run):032x}"
        now = datetime.now(UTC)
        self.tasks[arn] = {
            "taskArn": arn,
            "taskDefinitionArn": params["taskDefinition"],
            "lastStatus": "PROVISIONING",
            "startedBy": params.get("startedBy", ""),
            "createdAt": now,
            "containers": [{"name": "backend", "lastStatus": "PENDING"}],
        }
        self._answer_next = {"tasks": [self.tasks[arn]], "failures": []}

    def _run_task(self, **_: Any) -> tuple[AWSResponse, dict[str, Any]]:
        return AWSResponse("", 200, {}, None), self._answer_next  # type: ignore[arg-type]

    def _described(self, params: dict[str, Any], **_: Any) -> None:
        found = [self.tasks[arn] for arn in params["tasks"] if arn in self.tasks]
        for task in found:
            if self.ends and task["lastStatus"] != "STOPPED":
                self._end(task, self.code, self.reason or "Essential container in task exited")
        self._answer_next = {"tasks": found, "failures": []}

    def _stop(self, params: dict[str, Any], **_: Any) -> None:
        self.stopped.append(params["task"])
        task = self.tasks[params["task"]]
        self._end(task, 137, f"Task stopped by user: {params.get('reason', '')}")
        self._answer_next = {"task": task}

    def _answer(self, **_: Any) -> tuple[AWSResponse, dict[str, Any]]:
        return AWSResponse("", 200, {}, None), self._answer_next  # type: ignore[arg-type]

    @staticmethod
    def _end(task: dict[str, Any], code: int | None, reason: str) -> None:
        now = datetime.now(UTC)
        task.update(lastStatus="STOPPED", stoppedReason=reason, startedAt=now - timedelta(seconds=2), stoppedAt=now)
        task["containers"] = [
            {"name": "backend", "lastStatus": "STOPPED", **({} if code is None else {"exitCode": code})}
        ]


@pytest.fixture
def release_project(project: Path) -> Path:
    with (project / "deploy.toml").open("a") as toml:
        toml.write(f"\n[release]\ncommand = {COMMAND}\ntimeout = 30\n")
    git(project, "commit", "-qam", "a release command")
    return project


def service(factory: AwsFactory) -> dict[str, Any]:
    ecs = factory.client("ecs")
    return dict(ecs.describe_services(cluster="car-rental-cluster", services=["car-rental-service"])["services"][0])


def rollout(project: Path, factory: AwsFactory, *, push: bool = True) -> Any:
    if push:
        put_image(factory, current_revision(project).tag)
    return commands.app_chain(["register-taskdef", "roll-service"], env="dev", runtime=runtime(project, factory))


def test_the_release_command_runs_in_the_new_revision_beside_the_service_before_it_rolls(
    release_project: Path, factory: AwsFactory
) -> None:
    before = create_service(factory, RUNS)
    agent = Agent(factory, 0)
    report = rollout(release_project, factory)
    assert [r.step for r in report.records] == ["register-taskdef", "release", "roll-service"]
    registered = report.records[0].outputs["task_definition"]
    (ran,) = agent.run
    assert ran["taskDefinition"] == registered  # the new image's revision, not the service's current one
    assert ran["taskDefinition"] != before["taskDefinitionArn"]
    assert ran["overrides"] == {"containerOverrides": [{"name": "backend", "command": ["python", "-m", "app.release"]}]}
    assert ran["startedBy"] == STARTED_BY and ran["launchType"] == "FARGATE" and ran["cluster"] == "car-rental-cluster"
    assert ran["networkConfiguration"] == service(factory)["networkConfiguration"]
    assert report.records[1].status == "done" and "exited 0" in report.records[1].detail
    assert service(factory)["taskDefinition"] == registered  # then the rollout went on
    assert not agent.stopped


def test_a_failing_release_command_stops_the_deploy_before_the_service_changes(
    release_project: Path, factory: AwsFactory
) -> None:
    before = create_service(factory, RUNS)
    Agent(factory, 3)
    with pytest.raises(StepFailed) as failed:
        rollout(release_project, factory)
    message = str(failed.value)
    assert "the release command of" in message and "exited with code 3" in message
    assert "car-rental-service was not changed" in message
    assert "inv logs --component app --task" in (failed.value.next_step or "")
    assert service(factory)["taskDefinition"] == before["taskDefinitionArn"]  # roll-service never ran


def test_a_release_task_that_could_not_start_says_why(release_project: Path, factory: AwsFactory) -> None:
    before = create_service(factory, RUNS)
    Agent(factory, None, reason="CannotPullContainerError: pull access denied")
    with pytest.raises(StepFailed, match="did not run: CannotPullContainerError: pull access denied"):
        rollout(release_project, factory)
    assert service(factory)["taskDefinition"] == before["taskDefinitionArn"]


def test_a_release_command_past_its_deadline_is_stopped(release_project: Path, factory: AwsFactory) -> None:
    before = create_service(factory, RUNS)
    agent = Agent(factory, ends=False)
    with pytest.raises(StepFailed, match="did not end within 30s and was stopped") as failed:
        rollout(release_project, factory)
    assert "[release] timeout" in (failed.value.next_step or "")
    assert agent.stopped == list(agent.tasks)
    assert service(factory)["taskDefinition"] == before["taskDefinitionArn"]


def test_the_release_command_is_skipped_when_the_service_already_runs_the_image(
    release_project: Path, factory: AwsFactory
) -> None:
    create_service(factory, RUNS)
    agent = Agent(factory, 0)
    first = rollout(release_project, factory)
    # the rollout completed, as ECS would show it (moto leaves the PRIMARY deployment on the revision it began with)
    moto_service = ecs_backends[ACCOUNT][REGION].services["car-rental-cluster:car-rental-service"]
    moto_service.deployments[0]["taskDefinition"] = first.records[0].outputs["task_definition"]
    again = rollout(release_project, factory, push=False)
    assert [(r.step, r.status) for r in again.records] == [
        ("register-taskdef", "skipped"),
        ("release", "skipped"),
        ("roll-service", "skipped"),
    ]
    assert "its release command ran as it went live" in again.records[1].detail
    assert len(agent.run) == 1


def test_without_a_release_command_no_task_is_run(project: Path, factory: AwsFactory) -> None:
    create_service(factory, RUNS)
    agent = Agent(factory, 0)
    report = rollout(project, factory)
    assert [r.step for r in report.records] == ["register-taskdef", "roll-service"]
    assert agent.run == []


def test_skipping_it_by_hand_rolls_out_without_running_it_and_the_next_deploy_runs_it_first(
    release_project: Path, factory: AwsFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """$DEPLOYKIT_SKIP_RELEASE=1 (what the command needs is down): the image rolls out, its command not run, and the
    service is tagged; the same image deployed again without it runs the command first, and the tag comes off."""
    create_service(factory, RUNS)
    tag = current_revision(release_project).tag
    agent = Agent(factory, 3)  # it would fail
    monkeypatch.setenv("DEPLOYKIT_SKIP_RELEASE", "1")
    report = rollout(release_project, factory)
    assert [(r.step, r.status) for r in report.records] == [
        ("register-taskdef", "done"),
        ("release", "skipped"),
        ("roll-service", "done"),
    ]
    assert report.records[1].detail == (
        f"$DEPLOYKIT_SKIP_RELEASE=1: python -m app.release not run for {tag}; tagged deploykit:release-pending={tag}: "
        "a deploy, of this commit too, runs the command first"
    )
    assert agent.run == [] and pending(service_with_tags(factory)) == tag

    monkeypatch.delenv("DEPLOYKIT_SKIP_RELEASE")
    agent.code = 0  # what it needs is back
    moto_service = ecs_backends[ACCOUNT][REGION].services["car-rental-cluster:car-rental-service"]
    moto_service.deployments[0]["taskDefinition"] = report.records[0].outputs["task_definition"]  # rolled out
    again = rollout(release_project, factory, push=False)
    assert [(r.step, r.status) for r in again.records] == [
        ("register-taskdef", "skipped"),
        ("release", "done"),
        ("roll-service", "skipped"),
    ]
    assert len(agent.run) == 1 and pending(service_with_tags(factory)) is None


@dataclass(frozen=True)
class FargateStack(Step):
    """The Fargate stack of a first deploy, as far as the release command sees it: it creates the service, running
    ``image`` ("": the service is there already, the stack leaves it)."""

    name: ClassVar[str] = "deploy-stack"
    factory: AwsFactory
    image: str = ""

    def describe(self) -> str:
        return "the Fargate stack"

    def run(self, ctx: Context) -> Outcome:
        if self.image:
            create_service(self.factory, {**RUNS, "image": self.image})
        return Outcome.done("deployed")


def first_deploy(project: Path, factory: AwsFactory, stack: Step) -> tuple[Plan, Context]:
    config = load_config(project / "deploy.toml")
    env, revision = config.environment("dev"), current_revision(project)
    fargate = planner.fargate_with_image(config, env, stack, revision.tag, revision.sha, first=True)
    clock = FakeClock()
    reporter = Reporter(io.StringIO(), tty=False, clock=clock)
    return Plan("dev", (fargate,)), Context(config, env, factory, clock, reporter, Mock())


def test_a_first_deploys_release_command_runs_once_the_fargate_stack_created_the_service(
    release_project: Path, factory: AwsFactory
) -> None:
    """No service before the Fargate stack (an environment's first deploy): the step before it leaves the command to
    the step after it, which runs it in the revision the stack gave the service; the new image needs no revision of
    its own."""
    tag = current_revision(release_project).tag
    image = f"123456789012.dkr.ecr.eu-west-1.amazonaws.com/car-rental-backend:{tag}"
    agent = Agent(factory, 0)
    plan, ctx = first_deploy(release_project, factory, FargateStack(factory, image))
    report = Executor(ctx).execute(plan)
    assert report.ok, report.error
    done = [(r.step, r.status) for r in report.records[0].children]
    assert done == [("release", "skipped"), ("deploy-stack", "done"), ("release", "done")]
    before, _stack, after = report.records[0].children
    assert before.detail == (
        "no service car-rental-service yet: the Fargate stack creates it, then the command runs in its tasks' revision"
    )
    assert "exited 0" in after.detail
    (ran,) = agent.run
    assert ran["taskDefinition"] == service(factory)["taskDefinition"]  # the stack's revision, none registered
    assert ran["networkConfiguration"] == service(factory)["networkConfiguration"]
    assert len(factory.client("ecs").list_task_definitions()["taskDefinitionArns"]) == 1


@dataclass(frozen=True)
class FailsBeside(Step):
    """The api stack beside the Fargate stack, failing once the Fargate stack has started."""

    name: ClassVar[str] = "deploy-stack"
    started: threading.Event

    def describe(self) -> str:
        return "the api stack"

    def run(self, ctx: Context) -> Outcome:
        assert self.started.wait(5)
        raise StepFailed("CarRentalApiStack: UPDATE_ROLLBACK_COMPLETE", next_step="look")


def test_a_first_deploys_release_command_runs_after_the_stack_created_the_service_whatever_failed_beside_it(
    release_project: Path, factory: AwsFactory
) -> None:
    """A stack beside the Fargate stack failed while it created the service: the step after it, held back, never ran
    the command, and nothing marks it owed (a rerun found the service running the image, "its release command ran as
    it went live"). It completes what the stack did, and runs."""
    tag = current_revision(release_project).tag
    image = f"123456789012.dkr.ecr.eu-west-1.amazonaws.com/car-rental-backend:{tag}"
    agent, started = Agent(factory, 0), threading.Event()

    @dataclass(frozen=True)
    class Slow(FargateStack):  # CloudFormation takes minutes: the stack beside it fails meanwhile
        def run(self, ctx: Context) -> Outcome:
            started.set()
            outcome = super().run(ctx)
            assert ctx.failing.wait(5)
            return outcome

    plan, ctx = first_deploy(release_project, factory, Slow(factory, image))
    report = Executor(ctx).execute(Plan("dev", (Parallel((plan.steps[0], FailsBeside(started))),), "deploy.full"))
    assert isinstance(report.error, StepFailed) and report.error.message.startswith("CarRentalApiStack")
    fargate = report.records[0].children[0]
    assert [(r.step, r.status) for r in fargate.children] == [
        ("release", "skipped"),
        ("deploy-stack", "done"),
        ("release", "done"),
    ]
    assert len(agent.run) == 1


def test_a_first_deploy_onto_a_service_already_there_runs_the_command_before_the_stack_only(
    release_project: Path, factory: AwsFactory
) -> None:
    """Some stacks not deployed, but the Fargate stack's service is there: the command's turn is before the stack,
    as in any deploy; the step after the stack finds nothing left to it."""
    create_service(factory, RUNS)
    agent = Agent(factory, 0)
    plan, ctx = first_deploy(release_project, factory, FargateStack(factory))
    report = Executor(ctx).execute(plan)
    assert report.ok, report.error
    assert [(r.step, r.status) for r in report.records[0].children] == [
        ("release", "done"),
        ("deploy-stack", "done"),
        ("release", "skipped"),
    ]
    assert report.records[0].children[2].detail == (
        "car-rental-service was there before the Fargate stack: the command's turn was before"
    )
    assert len(agent.run) == 1


def test_a_first_deploys_failing_release_command_marks_the_service_and_the_next_deploy_runs_it_again(
    release_project: Path, factory: AwsFactory
) -> None:
    """The command failed after the first deploy's Fargate stack created the service, which runs the image: the
    service is tagged, so the next deploy of the same commit, finding the image running, runs the command all the
    same (first); once it passes, the tag comes off and a deploy after that skips it as usual."""
    tag = current_revision(release_project).tag
    image = f"123456789012.dkr.ecr.eu-west-1.amazonaws.com/car-rental-backend:{tag}"
    agent = Agent(factory, 3)
    plan, ctx = first_deploy(release_project, factory, FargateStack(factory, image))
    report = Executor(ctx).execute(plan)
    assert isinstance(report.error, StepFailed)
    message = report.error.message
    assert "exited with code 3" in message
    assert (
        f"car-rental-service runs {tag} already: this first deploy's Fargate stack created it with the image" in message
    )
    assert f"; tagged deploykit:release-pending={tag}: a deploy, of this commit too, runs the command first" in message
    assert (report.error.next_step or "").startswith(
        "fix what it needs and deploy again (the command runs first, this commit or a later one); its whole output: "
        "inv logs --component app --task "
    )
    assert pending(service_with_tags(factory)) == tag

    # the same commit again while what it needs is still out: the service ran the image all along, and says so
    with pytest.raises(StepFailed) as still:
        rollout(release_project, factory, push=False)
    assert f"car-rental-service runs {tag} already: its command has not passed; tagged " in still.value.message
    assert "was not changed" not in still.value.message and pending(service_with_tags(factory)) == tag

    agent.code = 0  # what it needed is there now: the same commit again
    again = rollout(release_project, factory, push=False)
    assert [(r.step, r.status) for r in again.records] == [
        ("register-taskdef", "skipped"),
        ("release", "done"),
        ("roll-service", "skipped"),
    ]
    assert again.records[1].detail.endswith("; deploykit:release-pending taken off the service")
    assert pending(service_with_tags(factory)) is None and len(agent.run) == 3
    third = rollout(release_project, factory, push=False)
    assert [(r.step, r.status) for r in third.records][1] == ("release", "skipped")
    assert len(agent.run) == 3


def service_with_tags(factory: AwsFactory) -> dict[str, Any]:
    ecs = factory.client("ecs")
    found = ecs.describe_services(cluster="car-rental-cluster", services=["car-rental-service"], include=["TAGS"])
    return dict(found["services"][0])


def test_deploy_full_of_an_environment_not_deployed_yet_runs_the_command_after_the_fargate_stack_too(
    release_project: Path, factory: AwsFactory
) -> None:
    """deploy.full reads whether every stack is deployed (with a release command only): here none is, so its plan
    has the step after the Fargate stack; the dry run shows it."""
    shutil.copytree(REPO / "lambda", release_project / "lambda", ignore=shutil.ignore_patterns("__pycache__", "tests"))
    git(release_project, "add", "-A")
    git(release_project, "commit", "-qm", "lambdas")
    ran = runtime(release_project, factory)
    commands.deploy_full(env="dev", dry_run=True, runtime=ran)
    lines = ran.stderr.getvalue().splitlines()  # type: ignore[attr-defined]
    fargate = [
        line.split("↳ ", 1)[1] for line in lines if "· ↳ release" in line or "↳ deploy-stack  CarRentalF" in line
    ]
    assert [line.split()[0] for line in fargate] == ["release", "deploy-stack", "release"], lines
    assert "beside car-rental-service when it is there (deadline 30s)" in fargate[0]
    assert "if the Fargate stack just created car-rental-service (a first deploy; deadline 30s)" in fargate[2]


def test_deploy_stack_of_a_fargate_stack_not_deployed_yet_runs_the_command_after_it_too(
    release_project: Path, factory: AwsFactory
) -> None:
    """deploy.stack CarRentalFargateStack --image-tag TAG onto an environment without it: the stack creates the
    service, so its plan has the step after the stack (the dry run shows it), as deploy.full's first deploy has."""
    ran = runtime(release_project, factory)
    factory.client("ecr").create_repository(repositoryName="car-rental-backend")  # the registry stack's
    put_image(factory, "abc1234")
    commands.deploy_stack("CarRentalFargateStack", env="dev", image_tag="abc1234", dry_run=True, runtime=ran)
    lines = ran.stderr.getvalue().splitlines()  # type: ignore[attr-defined]
    steps = [line.split()[1] for line in lines if line.split()[:1] in (["2"], ["3"], ["4"])]
    assert steps == ["release", "deploy-stack", "release"], lines
    assert "if the Fargate stack just created car-rental-service (a first deploy; deadline 30s)" in lines[-1], lines
