"""inv pause and inv resume, and a deploy waking a paused environment, on moto: the pause object beside the lock,
the service's desired count, the history, the refusals.

moto starts no task and keeps the counts it is given: :class:`Stopping` is the clock under which the service's tasks
stop as a pause waits (as ECS drains them); the wait of a wake for its tasks to serve is the rollout waiter's, tested
on the sandbox (tests/integration) and in test_wait_healthy_scripted."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from unittest.mock import Mock

import boto3
import pytest
from botocore.exceptions import ClientError, ReadTimeoutError
from moto.ecs.models import ecs_backends

from deploykit import commands, history, pause
from deploykit.app_chain import WaitHealthy
from deploykit.aws import AwsFactory
from deploykit.clock import FakeClock
from deploykit.config import EnvConfig, load_config
from deploykit.errors import DeployKitError, StepFailed, UsageError
from deploykit.plan import Context, Outcome, Plan, RunReport
from deploykit.report import Report
from tests.functional.conftest import ARTIFACTS_BUCKET as BUCKET
from tests.functional.conftest import REGION, Deploy
from tests.functional.conftest import moto_runtime as runtime
from tests.functional.test_endpoints import create_stack
from tests.functional.test_envs_moto import PERSONAL  # dev-*, each on a cluster and service of its own
from tests.functional.test_restart_moto import steady

ACCOUNT = "123456789012"  # moto's
KEY = "deploykit/pause/dev.json"
T0 = datetime(2026, 12, 1, 19, 0, tzinfo=UTC)


def moto_service() -> Any:
    return ecs_backends[ACCOUNT][REGION].services["car-rental-cluster:car-rental-service"]


class Stopping(FakeClock):
    """Time passes as ECS stops the service's tasks: after ``after`` sleeps, none runs."""

    def __init__(self, after: int = 2) -> None:
        super().__init__(start=T0)
        self.after = after

    def sleep(self, seconds: float) -> None:
        super().sleep(seconds)
        if len(self.sleeps) >= self.after:
            moto_service().running_count = 0
            moto_service().pending_count = 0


def kept() -> dict[str, Any] | None:
    try:
        answer = boto3.client("s3", region_name=REGION).get_object(Bucket=BUCKET, Key=KEY)
    except ClientError:
        return None
    return dict(json.loads(answer["Body"].read()))


def paused(project: Path, factory: AwsFactory, monkeypatch: pytest.MonkeyPatch) -> commands.Runtime:
    """The service of create_service, running 2 tasks, paused by ana@laptop; its runtime."""
    monkeypatch.setenv(history.ACTOR_ENV, "ana@laptop")
    steady(factory)
    rt = runtime(project, factory, clock=Stopping())
    ecs = factory.client("ecs")
    ecs.meta.events.register("after-call.ecs.UpdateService", draining)
    try:
        report = commands.pause_app(env="dev", reason="nights", runtime=rt)
    finally:
        ecs.meta.events.unregister("after-call.ecs.UpdateService", draining)
    assert report is not None and report.ok
    return rt


def draining(**_: Any) -> None:
    """As ECS answers a scale-in: the tasks still run, drained first (moto counts them gone at once)."""
    moto_service().running_count = 2


def test_a_pause_keeps_the_count_scales_to_zero_waits_and_is_recorded_as_no_deploy(
    project: Path, factory: AwsFactory, bucket: str, dev_env: EnvConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = history.History.of(factory, dev_env)
    assert store is not None
    live_before = store.live()
    rt = paused(project, factory, monkeypatch)
    assert moto_service().desired_count == 0
    assert kept() == {
        "count": 2,
        "owner": "ana@laptop",
        "reason": "nights",
        "since": "2026-12-01T19:00:00+00:00",
        "scaling": None,  # it does not scale by Application Auto Scaling
    }
    assert len(rt.clock.sleeps) == 2  # type: ignore[attr-defined]  # waited until no task ran
    said = rt.stderr.getvalue()  # type: ignore[attr-defined]
    assert "desired count 2 → 0" in said and "no task runs" in said
    assert "inv resume --env dev (or any deploy) starts 2 tasks again" in said
    [record] = store.records()
    assert (record.command, record.who, record.ok, record.components) == ("pause app", "ana@laptop", True, {})
    assert store.live() == live_before  # what deploy.auto compares with is untouched
    when = datetime.fromisoformat(record.when)
    assert Report("dev", when, when, (record,)).deployments == []
    found = pause.read(factory, dev_env)
    assert found is not None and (found.count, found.owner, found.reason) == (2, "ana@laptop", "nights")


def test_a_service_ecs_deletes_between_the_read_and_the_scale_in_is_said_as_being_deleted(
    project: Path, factory: AwsFactory, bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """UpdateService refused with ServiceNotActiveException (inv destroy, or the stack's deletion, began after the
    pause read the service; moto accepts an update of a deleted service, so the refusal is played by a hook): said as
    the service being deleted, exit 2, as a deploy's roll-service says it, not as an AWS error to rerun."""
    monkeypatch.setenv(history.ACTOR_ENV, "ana@laptop")
    steady(factory)
    ecs = factory.client("ecs")

    def refused(**_: Any) -> tuple[Any, dict[str, Any]]:
        error = {"Code": "ServiceNotActiveException", "Message": "Service was not ACTIVE."}
        return Mock(status_code=400), {"Error": error, "ResponseMetadata": {"HTTPStatusCode": 400}}

    ecs.meta.events.register("before-call.ecs.UpdateService", refused, unique_id="test-not-active")
    try:
        with pytest.raises(UsageError) as failed:
            commands.pause_app(env="dev", reason="nights", runtime=runtime(project, factory, clock=Stopping()))
    finally:
        ecs.meta.events.unregister("before-call.ecs.UpdateService", unique_id="test-not-active")
    assert failed.value.exit_code == 2
    assert "being deleted" in failed.value.message and "ServiceNotActiveException" in failed.value.message
    assert moto_service().desired_count == 2  # nothing scaled
    assert kept() is None  # and nothing left to say it is paused: the object written first is deleted again


def scalable(factory: AwsFactory, low: int, high: int) -> dict[str, Any]:
    """The service's Application Auto Scaling target, set to ``low``-``high`` when given; as it is."""
    where = {
        "ServiceNamespace": "ecs",
        "ResourceId": "service/car-rental-cluster/car-rental-service",
        "ScalableDimension": "ecs:service:DesiredCount",
    }
    client = factory.client("application-autoscaling")
    if low >= 0:
        client.register_scalable_target(**where, MinCapacity=low, MaxCapacity=high)
    found = client.describe_scalable_targets(
        ServiceNamespace="ecs", ResourceIds=[where["ResourceId"]], ScalableDimension=where["ScalableDimension"]
    )
    [target] = found["ScalableTargets"]
    return {"min": target["MinCapacity"], "max": target["MaxCapacity"]}


def answering(
    factory: AwsFactory, service: str, operation: str, error: dict[str, str] | Exception, *, after: int = 0
) -> None:
    """``operation`` of ``service`` answered with ``error`` (a ClientError's code and message; an exception: no answer
    at all, it is raised) from its call ``after`` + 1 on, as moto cannot: by a hook on the factory's client, in place
    of the one given before."""
    calls: list[int] = []

    def answer(**_: Any) -> tuple[Any, dict[str, Any]] | None:
        calls.append(1)
        if len(calls) <= after:
            return None  # to moto
        if isinstance(error, Exception):
            raise error
        return Mock(status_code=400), {"Error": error, "ResponseMetadata": {"HTTPStatusCode": 400}}

    events, event = factory.client(service).meta.events, f"before-call.{service}.{operation}"
    events.unregister(event, unique_id=f"test-{event}")  # the answer given before, if any
    events.register(event, answer, unique_id=f"test-{event}")


THROTTLED = {"Code": "ThrottlingException", "Message": "Rate exceeded"}


@pytest.mark.parametrize(
    ("service", "operation"),
    [("ecs", "UpdateService"), ("application-autoscaling", "RegisterScalableTarget")],
    ids=["the scale-in", "the scaling's range to 0-0"],
)
def test_a_pause_whose_scale_in_fails_leaves_the_service_its_range_and_no_pause_object(
    project: Path, factory: AwsFactory, bucket: str, dev_env: EnvConfig, service: str, operation: str
) -> None:
    """Throttled past the SDK's retries (an error a rerun may pass, raised as it is): AWS changed nothing, so nothing
    may say the environment is paused, nor keep its scaling at 0-0 (which would scale the running service in)."""
    steady(factory)
    scalable(factory, 2, 6)
    answering(factory, service, operation, THROTTLED)
    rt = runtime(project, factory, clock=Stopping())
    with pytest.raises(DeployKitError) as failed:
        commands.pause_app(env="dev", reason="nights", runtime=rt)
    assert "ThrottlingException" in failed.value.message
    assert moto_service().desired_count == 2 and scalable(factory, -1, -1) == {"min": 2, "max": 6}
    assert kept() is None and pause.read_object(factory, dev_env) is None
    said = rt.stderr.getvalue()  # type: ignore[attr-defined]
    assert ("car-rental-service 0-0 → 2-6 tasks again" in said) is (operation == "UpdateService")


def test_a_scaling_range_that_cannot_be_set_back_after_a_refused_scale_in_keeps_the_object_that_holds_it(
    project: Path, factory: AwsFactory, bucket: str
) -> None:
    """The service deleted meanwhile, and its range left at 0-0 (RegisterScalableTarget refused the second time):
    the object is the only record of 2-6, kept for inv resume; said, with the command that sets it by hand."""
    steady(factory)
    scalable(factory, 2, 6)
    answering(
        factory, "ecs", "UpdateService", {"Code": "ServiceNotActiveException", "Message": "Service was not ACTIVE."}
    )
    answering(factory, "application-autoscaling", "RegisterScalableTarget", THROTTLED, after=1)
    rt = runtime(project, factory, clock=Stopping())
    with pytest.raises(UsageError, match="being deleted"):
        commands.pause_app(env="dev", runtime=rt)
    assert kept() is not None and kept()["scaling"] == {"min": 2, "max": 6}  # type: ignore[index]
    said = rt.stderr.getvalue()  # type: ignore[attr-defined]
    assert "⚠️  Application Auto Scaling: car-rental-service could not be set back to 2-6 tasks" in said
    assert "--resource-id service/car-rental-cluster/car-rental-service" in said
    assert "--min-capacity 2 --max-capacity 6" in said


def test_a_pause_object_that_cannot_be_deleted_after_a_refused_scale_in_is_said_and_the_refusal_raised(
    project: Path, factory: AwsFactory, bucket: str
) -> None:
    """No right to s3:DeleteObject (the lock's release is refused too, and said: it expires with its lease)."""
    steady(factory)
    answering(factory, "ecs", "UpdateService", {"Code": "ServiceNotActiveException", "Message": "not ACTIVE"})
    answering(factory, "s3", "DeleteObject", {"Code": "AccessDenied", "Message": "not allowed: s3:DeleteObject"})
    rt = runtime(project, factory, clock=Stopping())
    with pytest.raises(UsageError, match="being deleted"):
        commands.pause_app(env="dev", runtime=rt)
    assert kept() is not None
    said = rt.stderr.getvalue()  # type: ignore[attr-defined]
    assert "⚠️  the pause object deploykit/pause/dev.json could not be deleted (An error occurred (AccessDenied)" in said
    assert "it says nothing while car-rental-service runs tasks, and the next pause replaces it" in said


def test_a_scale_in_that_got_no_answer_keeps_the_object_and_a_rerun_refused_leaves_none(
    project: Path, factory: AwsFactory, bucket: str, dev_env: EnvConfig
) -> None:
    """No answer (a read timed out): the service may be at 0 tasks now, and the object is then the only record of
    the 2 it ran, so it stays; running them still, the object alone does not make it paused. The rerun, refused (the
    service deleted meanwhile), leaves no object: neither its own nor the one before."""
    steady(factory)
    answering(factory, "ecs", "UpdateService", ReadTimeoutError(endpoint_url="https://ecs.eu-west-1.amazonaws.com"))
    with pytest.raises(StepFailed, match="Read timeout"):
        commands.pause_app(env="dev", runtime=runtime(project, factory, clock=Stopping()))
    assert kept() is not None and kept()["count"] == 2  # type: ignore[index]
    assert moto_service().desired_count == 2 and pause.read(factory, dev_env) is None
    answering(factory, "ecs", "UpdateService", {"Code": "ServiceNotActiveException", "Message": "not ACTIVE"})
    with pytest.raises(UsageError, match="being deleted"):
        commands.pause_app(env="dev", runtime=runtime(project, factory, clock=Stopping()))
    assert kept() is None and moto_service().desired_count == 2


def test_a_service_that_autoscales_is_paused_with_its_range_at_zero_and_woken_with_its_range_back(
    project: Path, factory: AwsFactory, bucket: str, dev_env: EnvConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Else Application Auto Scaling would start tasks again up to its minimum (and scale a woken one to 0)."""
    steady(factory)
    scalable(factory, 2, 6)
    monkeypatch.setenv(history.ACTOR_ENV, "ana@laptop")
    rt = runtime(project, factory, clock=Stopping())
    report = commands.pause_app(env="dev", runtime=rt)
    assert report is not None and report.ok
    assert scalable(factory, -1, -1) == {"min": 0, "max": 0} and moto_service().desired_count == 0
    assert kept() is not None and kept()["scaling"] == {"min": 2, "max": 6}  # type: ignore[index]
    assert "Application Auto Scaling: car-rental-service 2-6 tasks → 0-0" in rt.stderr.getvalue()  # type: ignore[attr-defined]
    config = load_config(project / "deploy.toml")
    image = "123456789012.dkr.ecr.eu-west-1.amazonaws.com/car-rental-backend:new"
    rolls = Rolled("car-rental-cluster", "car-rental-service", "backend", image, 60.0, 1.0)
    plan = Plan("dev", (rolls,), "deploy.demo", deploys=(("app", "dddddddddddd"),))
    woke = commands.run_plan(rt, config, dev_env, plan, dry_run=False, as_json=False)
    assert woke is not None and woke.records[0].step == "wake"
    assert scalable(factory, -1, -1) == {"min": 2, "max": 6} and moto_service().desired_count == 2


def test_a_pause_scaled_up_by_other_means_gives_its_scaling_range_back_however_it_ends(
    project: Path, factory: AwsFactory, bucket: str, dev_env: EnvConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A pause set the range 2-6 to 0-0 and kept 2-6 in its object; a person scaled the service up by other means.
    The object then holds no more, and deleting it (inv resume, a deploy's wake) lost 2-6 for good, the service never
    scaling out again; a second pause kept 0-0 as the range to come back to. Each sets the range back, or keeps it."""
    steady(factory)
    ecs = factory.client("ecs")

    def paused_then_scaled_up() -> None:
        scalable(factory, 2, 6)
        commands.pause_app(env="dev", runtime=runtime(project, factory, clock=Stopping()))
        assert scalable(factory, -1, -1) == {"min": 0, "max": 0}
        ecs.update_service(cluster="car-rental-cluster", service="car-rental-service", desiredCount=2)
        moto_service().running_count = 2

    monkeypatch.setenv(history.ACTOR_ENV, "ana@laptop")
    paused_then_scaled_up()
    rt = runtime(project, factory)
    assert commands.resume_app(env="dev", runtime=rt) is None
    assert "holds no more: removed; Application Auto Scaling: car-rental-service 0-0 → 2-6 tasks again" in (
        rt.stderr.getvalue()  # type: ignore[attr-defined]
    )
    assert scalable(factory, -1, -1) == {"min": 2, "max": 6} and kept() is None

    paused_then_scaled_up()  # then paused again: the range it keeps is the first pause's
    commands.pause_app(env="dev", runtime=runtime(project, factory, clock=Stopping()))
    assert kept()["scaling"] == {"min": 2, "max": 6}  # type: ignore[index]
    wake = pause.wake_step(dev_env, pause.read(factory, dev_env), wait=False)  # type: ignore[arg-type]
    ecs.update_service(cluster="car-rental-cluster", service="car-rental-service", desiredCount=2)  # meanwhile
    moto_service().running_count = 2
    config = load_config(project / "deploy.toml")
    plan = Plan("dev", (wake,), "deploy.demo")
    woke = commands.run_plan(runtime(project, factory), config, dev_env, plan, dry_run=False, as_json=False)
    assert woke is not None and woke.records[0].status == "done"
    assert "not paused any more; Application Auto Scaling: car-rental-service 0-0 → 2-6" in woke.records[0].detail
    assert scalable(factory, -1, -1) == {"min": 2, "max": 6} and kept() is None


def test_resume_leaves_the_object_of_a_pause_under_way(
    project: Path, factory: AwsFactory, bucket: str, dev_env: EnvConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """inv pause writes its object, then scales in, under the lock: an inv resume between the two saw an object
    beside a service wanting tasks, took it for one that holds no more and deleted it; the service then went to 0
    with no count to come back to. The stale object is deleted under the lock, read again there."""
    monkeypatch.setenv(history.ACTOR_ENV, "ana@laptop")
    steady(factory)
    ecs = factory.client("ecs")
    resumed: list[str] = []

    def resume_meanwhile(params: dict[str, Any], **_: Any) -> None:
        if params.get("desiredCount") == 0 and not resumed:
            rt = runtime(project, factory)
            commands.resume_app(env="dev", runtime=rt)
            resumed.append(rt.stderr.getvalue())  # type: ignore[attr-defined]

    ecs.meta.events.register("provide-client-params.ecs.UpdateService", resume_meanwhile, unique_id="test-race")
    try:
        commands.pause_app(env="dev", runtime=runtime(project, factory, clock=Stopping()))
    finally:
        ecs.meta.events.unregister("provide-client-params.ecs.UpdateService", unique_id="test-race")
    assert "left, as another command holds the lock" in resumed[0]
    assert kept() is not None and kept()["count"] == 2  # type: ignore[index]
    assert commands.resume_app(env="dev", smoke=False, runtime=runtime(project, factory)) is not None  # to 2
    assert moto_service().desired_count == 2


def test_an_aws_refusal_of_the_resume_s_read_of_the_image_is_said_in_deploykit_s_words(
    project: Path, factory: AwsFactory, bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The image the paused service runs (its history record's commit) is read before the plan: a refusal there
    (its DescribeServices denied, say) escaped as a traceback; a pause's same read is said as AWS's refusal."""
    paused(project, factory, monkeypatch)
    calls: list[str] = []

    def denied(**_: Any) -> None:  # the resume's first read (the pause) goes; its read of the image is refused
        calls.append("describe")
        if len(calls) > 1:
            raise ClientError({"Error": {"Code": "AccessDeniedException", "Message": "not authorized"}}, "Describe")

    factory.client("ecs").meta.events.register("provide-client-params.ecs.DescribeServices", denied)
    with pytest.raises(DeployKitError) as refused:
        commands.resume_app(env="dev", smoke=False, runtime=runtime(project, factory))
    assert refused.value.message.startswith("AWS refused Describe in 'dev'") and refused.value.exit_code == 2
    assert moto_service().desired_count == 0  # nothing changed


def test_pausing_again_changes_nothing_and_a_service_scaled_up_since_is_not_paused(
    project: Path, factory: AwsFactory, bucket: str, dev_env: EnvConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    paused(project, factory, monkeypatch)
    again = commands.pause_app(env="dev", reason="other", runtime=runtime(project, factory, clock=Stopping()))
    assert again is not None and again.records[0].status == "skipped"
    assert "paused already: dev is paused by ana@laptop since 2026-12-01T19:00:00Z: nights" in again.records[0].detail
    assert kept() is not None and kept()["reason"] == "nights"  # type: ignore[index]
    restarted = commands.restart_app(env="dev", smoke=False, runtime=runtime(project, factory))
    assert restarted is not None and restarted.records[0].status == "skipped"
    assert restarted.records[0].detail.endswith("nights; inv resume --env dev starts fresh ones")
    factory.client("ecs").update_service(cluster="car-rental-cluster", service="car-rental-service", desiredCount=1)
    assert pause.read(factory, dev_env) is None  # the object alone does not make it paused


def test_a_protected_environment_is_never_paused(
    project: Path, factory: AwsFactory, bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    toml = project / "deploy.toml"
    toml.write_text(toml.read_text().replace("[environments.dev]\n", "[environments.dev]\nprotected = true\n"))
    steady(factory)
    with pytest.raises(UsageError, match=r"protected in deploy.toml; pausing it would take its app down") as refused:
        commands.pause_app(env="dev", runtime=runtime(project, factory, clock=Stopping()))
    assert refused.value.exit_code == 2
    assert moto_service().desired_count == 2 and kept() is None


class Rolled(WaitHealthy):
    """The app's rollout waited for, as moto cannot: done at once."""

    def run(self, ctx: Context) -> Outcome:
        return Outcome.done("rolled out")


def test_a_deploy_wakes_a_paused_environment_first_and_its_rollout_waits(
    project: Path, factory: AwsFactory, bucket: str, dev_env: EnvConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    rt = paused(project, factory, monkeypatch)
    Deploy.ran = 0
    config = load_config(project / "deploy.toml")
    image = "123456789012.dkr.ecr.eu-west-1.amazonaws.com/car-rental-backend:new"
    rolls = Rolled("car-rental-cluster", "car-rental-service", "backend", image, 60.0, 1.0)
    plan = Plan("dev", (Deploy(), rolls), "deploy.demo", deploys=(("app", "dddddddddddd"),))
    report = commands.run_plan(rt, config, dev_env, plan, dry_run=False, as_json=False)
    assert report is not None and [r.step for r in report.records] == ["wake", "deploy", "wait-healthy"]
    assert "desired count 0 → 2" in rt.stderr.getvalue()  # type: ignore[attr-defined]
    assert moto_service().desired_count == 2 and kept() is None and Deploy.ran == 1
    assert pause.read(factory, dev_env) is None
    store = history.History.of(factory, dev_env)
    assert store is not None and [s["step"] for s in store.records()[0].steps] == ["wake", "deploy", "wait-healthy"]


def test_a_deploys_dry_run_shows_the_wake_it_would_run_and_wakes_nothing(
    project: Path, factory: AwsFactory, bucket: str, dev_env: EnvConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = load_config(project / "deploy.toml")
    plan = Plan("dev", (Deploy(),), "deploy.demo", deploys=(("lambda:login_handler", "dddddddddddd"),))
    paused(project, factory, monkeypatch)
    Deploy.ran = 0
    rt = runtime(project, factory)
    assert commands.run_plan(rt, config, dev_env, plan, dry_run=True, as_json=True) is None
    shown = json.loads(rt.stdout.getvalue())  # type: ignore[attr-defined]
    assert [s["step"] for s in shown["steps"]] == ["wake", "deploy"]
    assert shown["steps"][0]["inputs"]["count"] == 2 and shown["steps"][0]["inputs"]["wait"] is True
    people = runtime(project, factory)
    commands.app_chain(("roll-service", "wait-healthy"), env="dev", dry_run=True, allow_older=True, runtime=people)
    said = people.stderr.getvalue()  # type: ignore[attr-defined]
    rows = [line.split()[1] for line in said.splitlines() if line.strip()[:1].isdigit()]
    assert rows == ["wake", "roll-service", "wait-healthy"], said
    assert "scale car-rental-service back to 2 tasks (dev is paused by ana@laptop since" in said
    assert moto_service().desired_count == 0 and kept() is not None and Deploy.ran == 0
    factory.client("ecs").update_service(cluster="car-rental-cluster", service="car-rental-service", desiredCount=2)
    awake = runtime(project, factory)  # scaled up by other means: not paused any more, nothing to wake
    commands.run_plan(awake, config, dev_env, plan, dry_run=True, as_json=True)
    assert [s["step"] for s in json.loads(awake.stdout.getvalue())["steps"]] == ["deploy"]  # type: ignore[attr-defined]


def test_a_plan_without_a_rollout_of_its_own_is_woken_with_a_wake_that_waits(
    project: Path, factory: AwsFactory, bucket: str, dev_env: EnvConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    paused(project, factory, monkeypatch)
    plan = Plan("dev", (Deploy(),), "deploy.demo", deploys=(("lambda:login_handler", "dddddddddddd"),))
    found = pause.woken(plan, pause.read(factory, dev_env), dev_env)  # as a run makes it, under the lock
    wake = found.steps[0]
    assert isinstance(wake, pause.WakeService) and wake.wait and wake.count == 2
    assert "paused by ana@laptop since 2026-12-01T19:00:00Z: nights" in wake.describe()


def test_resume_of_an_environment_not_paused_does_nothing_and_of_one_scaled_to_zero_by_hand_is_refused(
    project: Path, factory: AwsFactory, bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    steady(factory)
    rt = runtime(project, factory)
    assert commands.resume_app(env="dev", as_json=True, runtime=rt) is None
    assert "dev is not paused: car-rental-service wants 2 task(s); nothing to do" in rt.stderr.getvalue()  # type: ignore[attr-defined]
    assert json.loads(rt.stdout.getvalue())["steps"] == []  # type: ignore[attr-defined]
    factory.client("ecs").update_service(cluster="car-rental-cluster", service="car-rental-service", desiredCount=0)
    with pytest.raises(UsageError, match="inv pause did not pause it: the count to come back to is not known") as no:
        commands.resume_app(env="dev", runtime=runtime(project, factory))
    assert no.value.exit_code == 2 and "--desired-count N" in (no.value.next_step or "")


def test_resume_of_a_pause_scaled_up_by_other_means_removes_its_object(
    project: Path, factory: AwsFactory, bucket: str, dev_env: EnvConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Paused, then scaled up by other means (a person's update-service): not paused any more, and inv resume says
    so; its dry run keeps the pause object, a resume removes it, so that a later scale-in by hand is not taken for
    that pause (with its old count) but refused as one whose count is not known."""
    paused(project, factory, monkeypatch)
    ecs = factory.client("ecs")
    ecs.update_service(cluster="car-rental-cluster", service="car-rental-service", desiredCount=3)
    dry = runtime(project, factory)
    assert commands.resume_app(env="dev", dry_run=True, runtime=dry) is None
    assert "its pause object, dev is paused by ana@laptop since " in dry.stderr.getvalue()  # type: ignore[attr-defined]
    assert pause.read_state(factory, dev_env)[0] is not None
    rt = runtime(project, factory)
    assert commands.resume_app(env="dev", runtime=rt) is None
    said = rt.stderr.getvalue()  # type: ignore[attr-defined]
    assert "dev is not paused: car-rental-service wants 3 task(s); nothing to do (its pause object, " in said
    assert ": nights, holds no more: removed)" in said
    assert pause.read_state(factory, dev_env) == (None, 3)
    ecs.update_service(cluster="car-rental-cluster", service="car-rental-service", desiredCount=0)
    with pytest.raises(UsageError, match="inv pause did not pause it"):
        commands.resume_app(env="dev", runtime=runtime(project, factory))


def test_resume_dry_run_shows_the_wake_and_the_smoke_and_changes_nothing(
    project: Path, factory: AwsFactory, bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    paused(project, factory, monkeypatch)
    rt = runtime(project, factory)
    assert commands.resume_app(env="dev", dry_run=True, as_json=True, runtime=rt) is None
    shown = json.loads(rt.stdout.getvalue())  # type: ignore[attr-defined]
    assert (shown["title"], [s["step"] for s in shown["steps"]]) == ("resume app", ["wake", "smoke"])
    assert shown["steps"][0]["inputs"]["wait"] is True and shown["steps"][0]["inputs"]["count"] == 2
    assert moto_service().desired_count == 0 and kept() is not None


def test_health_and_envs_say_paused_rather_than_broken(
    project: Path, factory: AwsFactory, bucket: str, dev_env: EnvConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    paused(project, factory, monkeypatch)
    rt = runtime(project, factory, stdout=io.StringIO())
    with pytest.raises(StepFailed) as broken:  # nothing else of dev is deployed here
        commands.health_report(env="dev", as_json=True, runtime=rt)
    assert "wants 0 tasks" not in broken.value.message  # the pause explains it
    report = json.loads(rt.stdout.getvalue())  # type: ignore[attr-defined]
    [row] = [r for r in report["rows"] if r["part"] == "pause"]
    assert (row["name"], row["status"]) == ("ana@laptop", "paused")
    assert not any("wants 0 tasks" in f["what"] for f in report["findings"])
    [finding] = [f for f in report["findings"] if "is paused by" in f["what"]]
    assert finding["severity"] == "warning" and finding["next_step"].startswith("inv resume --env dev starts 2 tasks")
    listing = runtime(project, factory)
    views = commands.envs(as_json=True, runtime=listing)
    [dev] = [v for v in views if v.env == "dev"]
    assert dev.paused is not None and dev.paused.owner == "ana@laptop"
    said = listing.stderr.getvalue()  # type: ignore[attr-defined]
    assert dev.tasks == 0 and "; lock free; 0 tasks\n  ⏸  dev is paused by ana@laptop" in said


def personal(project: Path, factory: AwsFactory, extra: str = "") -> None:
    """dev-alice (2 tasks) and dev-bob (1) deployed from the pattern, each with its registry stack and service;
    dev-eve has only its Fargate stack left (not deployed: no bucket for a pause)."""
    toml = project / "deploy.toml"
    head = '[environments."dev-*"]\n'
    toml.write_text(toml.read_text() + PERSONAL.replace(head, head + extra))
    steady(factory)  # the cluster and a task definition
    ecs, cfn, s3 = factory.client("ecs"), factory.client("cloudformation"), factory.client("s3")
    taskdef = moto_service().task_definition
    for name, count in (("dev-alice", 2), ("dev-bob", 1)):
        s3.create_bucket(Bucket=f"{name}-artifacts", CreateBucketConfiguration={"LocationConstraint": REGION})
        create_stack(cfn, f"CarRental-{name}-Registry", {"ArtifactsBucketName": f"{name}-artifacts"})
        ecs.create_cluster(clusterName=f"car-rental-{name}")
        ecs.create_service(
            cluster=f"car-rental-{name}", serviceName=f"car-rental-{name}", taskDefinition=taskdef, desiredCount=count
        )
        service = ecs_backends[ACCOUNT][REGION].services[f"car-rental-{name}:car-rental-{name}"]
        service.deployments[0].update(rolloutState="COMPLETED")  # steady, as steady() makes the first
    create_stack(cfn, "CarRental-dev-eve-Fargate", {"AlbUrl": "http://eve"})


def desired(factory: AwsFactory, name: str) -> int:
    found = factory.client("ecs").describe_services(cluster=f"car-rental-{name}", services=[f"car-rental-{name}"])
    return int(found["services"][0]["desiredCount"])


def test_a_pattern_pauses_and_resumes_each_deployed_environment_it_made(
    project: Path, factory: AwsFactory, bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(history.ACTOR_ENV, "github:dev-nights")
    personal(project, factory)
    out = io.StringIO()
    rt = runtime(project, factory, stdout=out)
    assert commands.pause_app(env="dev-*", reason="nights", as_json=True, runtime=rt) is None
    assert (desired(factory, "dev-alice"), desired(factory, "dev-bob")) == (0, 0)
    shown = json.loads(out.getvalue())
    assert shown["pattern"] == "dev-*" and [e["env"] for e in shown["environments"]] == ["dev-alice", "dev-bob"]
    assert all(e["ok"] and e["run"]["steps"][0]["status"] == "done" for e in shown["environments"])
    said = rt.stderr.getvalue()  # type: ignore[attr-defined]
    assert "▸ dev-alice" in said and "▸ dev-bob" in said and "dev-eve" not in said
    config = load_config(project / "deploy.toml")
    alice = pause.read(factory, config.environment("dev-alice"))
    assert alice is not None and (alice.count, alice.owner) == (2, "github:dev-nights")
    # resume: the waits for the tasks to serve are the rollout waiter's (the sandbox's test); here, their dry run
    out = io.StringIO()
    commands.resume_app(env="dev-*", dry_run=True, as_json=True, runtime=runtime(project, factory, stdout=out))
    runs = {e["env"]: e["run"] for e in json.loads(out.getvalue())["environments"]}
    assert runs == {"dev-alice": None, "dev-bob": None}  # a dry run prints its plan, runs nothing
    assert desired(factory, "dev-alice") == 0


def test_a_pattern_whose_environments_are_protected_is_refused_before_any_is_read(
    project: Path, factory: AwsFactory, bucket: str
) -> None:
    """Refused as a whole, before the environments it made are listed: each is as protected as the pattern."""
    personal(project, factory, extra="protected = true\n")
    rt = runtime(project, factory)
    rt.aws_factory = Mock(side_effect=AssertionError("the environments were read"))
    with pytest.raises(UsageError, match=r"the environments 'dev-\*' makes are protected in deploy.toml") as refused:
        commands.pause_app(env="dev-*", runtime=rt)
    assert refused.value.exit_code == 2
    assert (desired(factory, "dev-alice"), desired(factory, "dev-bob")) == (2, 1)


def test_a_paused_environment_is_idle_since_its_last_deploy_not_since_its_schedules_pause(
    project: Path, factory: AwsFactory, bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The nightly pause is a run in the history: counted as work, no environment under the schedule would ever be
    said idle; and a paused one costs less than a running one, said so."""
    personal(project, factory)
    alice = load_config(project / "deploy.toml").environment("dev-alice")
    store = history.History.of(factory, alice)
    assert store is not None
    deployed = RunReport(Plan("dev-alice", (), "deploy.full"), [], 3.0)
    store.write(
        history.record_of(deployed, components={}, base={}, head="c" * 12, who="alice", now=T0 - timedelta(days=12))
    )
    commands.pause_app(env="dev-alice", runtime=runtime(project, factory, clock=Stopping()))
    listing = runtime(project, factory, clock=FakeClock(start=T0 + timedelta(hours=1)))
    views = {v.env: v for v in commands.envs(runtime=listing)}
    assert views["dev-alice"].last_run is not None and views["dev-alice"].last_run.command == "pause app"
    assert views["dev-alice"].idle_days == 12 and views["dev-bob"].idle_days is None
    said = listing.stderr.getvalue()  # type: ignore[attr-defined]
    assert "💤 no run for 12 days (made from 'dev-*': paused, its load balancer and storage still cost)" in said
