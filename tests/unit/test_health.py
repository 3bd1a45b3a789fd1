"""The judging behind `inv health`, on plain dicts shaped like boto3's answers: stacks, service, targets, settings."""

from __future__ import annotations

import dataclasses
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest

from deploykit import health, history, packaging
from deploykit.config import AlarmWatch
from deploykit.health import Finding, HealthReport, Recommendation, Row
from deploykit.lock import Found, LockInfo
from deploykit.testing import sample_env

T0 = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)
TD = "arn:aws:ecs:eu-west-1:123456789012:task-definition/car-rental-backend"


# -- stacks ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("status", ["CREATE_COMPLETE", "UPDATE_COMPLETE", "IMPORT_COMPLETE"])
def test_a_stable_stack_is_fine(status: str) -> None:
    assert health.stack_finding("CarRentalApiStack", status, "dev") is None


def test_a_missing_stack_is_broken_and_names_its_deploy() -> None:
    finding = health.stack_finding("CarRentalApiStack", None, "dev")
    assert finding == Finding(
        "broken", "stack CarRentalApiStack is not deployed", "inv deploy.stack CarRentalApiStack --env dev"
    )
    assert health.stack_row("CarRentalApiStack", None) == Row("stack", "CarRentalApiStack", "missing", "not deployed")


def test_update_rollback_complete_is_serving_but_a_warning() -> None:
    finding = health.stack_finding("CarRentalFargateStack", "UPDATE_ROLLBACK_COMPLETE", "dev")
    assert finding is not None and finding.severity == "warning"
    assert "last update rolled back" in finding.what
    assert finding.next_step.endswith("inv deploy.stack CarRentalFargateStack --env dev")


def test_update_rollback_failed_is_broken_and_says_the_rollback_is_continued() -> None:
    finding = health.stack_finding("CarRentalFargateStack", "UPDATE_ROLLBACK_FAILED", "prod")
    assert finding is not None and finding.severity == "broken"
    assert finding.next_step.startswith("inv deploy.stack CarRentalFargateStack --env prod")
    assert "continues the rollback" in finding.next_step


@pytest.mark.parametrize("status", ["ROLLBACK_COMPLETE", "ROLLBACK_FAILED", "CREATE_FAILED", "DELETE_FAILED"])
def test_failed_stacks_are_broken_with_a_next_command(status: str) -> None:
    finding = health.stack_finding("CarRentalDataStack", status, "dev")
    assert finding is not None and finding.severity == "broken"
    assert status in finding.what
    assert "inv deploy.stack CarRentalDataStack --env dev" in finding.next_step


@pytest.mark.parametrize("status", ["UPDATE_IN_PROGRESS", "CREATE_IN_PROGRESS", "UPDATE_ROLLBACK_IN_PROGRESS"])
def test_a_stack_in_progress_is_busy(status: str) -> None:
    finding = health.stack_finding("CarRentalDataStack", status, "dev")
    assert finding is not None and finding.severity == "warning"
    assert finding.what == f"stack CarRentalDataStack is busy ({status})"
    assert "describe-stack-events --stack-name CarRentalDataStack" in finding.next_step


def test_stack_row_shows_status_last_update_and_reason() -> None:
    row = health.stack_row(
        "CarRentalApiStack",
        {
            "StackStatus": "UPDATE_ROLLBACK_COMPLETE",
            "CreationTime": T0,
            "LastUpdatedTime": T0 + timedelta(hours=2),
            "StackStatusReason": "Resource Api failed",
        },
    )
    assert row == Row(
        "stack",
        "CarRentalApiStack",
        "UPDATE_ROLLBACK_COMPLETE",
        "updated 2026-03-01 10:00:00 UTC (Resource Api failed)",
    )


# -- the service -------------------------------------------------------------------------------------


def deployment(status: str, revision: int, rollout: str, running: int, desired: int, pending: int = 0) -> dict:
    return {
        "status": status,
        "taskDefinition": f"{TD}:{revision}",
        "rolloutState": rollout,
        "runningCount": running,
        "desiredCount": desired,
        "pendingCount": pending,
    }


def service(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "serviceName": "car-rental-service",
        "status": "ACTIVE",
        "runningCount": 2,
        "desiredCount": 2,
        "pendingCount": 0,
        "deployments": [deployment("PRIMARY", 7, "COMPLETED", 2, 2)],
        "deploymentConfiguration": {
            "minimumHealthyPercent": 100,
            "maximumPercent": 200,
            "deploymentCircuitBreaker": {"enable": True, "rollback": True},
        },
        "healthCheckGracePeriodSeconds": 10,
        "events": [],
    }
    return {**base, **overrides}


def test_a_steady_tuned_service_has_no_findings_and_no_recommendations() -> None:
    assert health.service_findings(service(), "car-rental-cluster", "dev") == []
    assert health.service_recommendations(service()) == []


def test_no_running_task_is_broken_and_counts_the_pending_ones() -> None:
    findings = health.service_findings(service(runningCount=0, pendingCount=2), "car-rental-cluster", "dev")
    assert len(findings) == 1
    assert findings[0].severity == "broken"
    assert findings[0].what == "service car-rental-service runs 0 of 2 desired tasks (2 pending tasks)"
    assert findings[0].next_step == (
        "why tasks stopped: inv tasks --env dev; what they wrote: inv logs --env dev --since 15m; fresh tasks of the "
        "same release: inv restart --env dev; the release before: inv rollback --env dev (the service events are "
        "above; or: aws ecs describe-services --cluster car-rental-cluster --services car-rental-service; aws ecs "
        "list-tasks --cluster car-rental-cluster --service-name car-rental-service --desired-status STOPPED)"
    )


def test_some_running_tasks_missing_is_a_warning() -> None:
    findings = health.service_findings(service(runningCount=1, pendingCount=0), "c", "dev")
    assert [(f.severity, f.what) for f in findings] == [
        ("warning", "service car-rental-service runs 1 of 2 desired tasks (no pending tasks)")
    ]


def test_a_failed_rollout_is_broken_and_a_second_deployment_means_a_rollout_in_progress() -> None:
    svc = service(
        deployments=[
            {**deployment("PRIMARY", 8, "FAILED", 0, 2), "rolloutStateReason": "tasks failed to start"},
            deployment("ACTIVE", 7, "COMPLETED", 2, 2),
        ]
    )
    findings = health.service_findings(svc, "c", "dev")
    assert [f.severity for f in findings] == ["broken", "warning"]
    missing = health.service_findings({**svc, "runningCount": 1}, "c", "dev")[0]
    assert missing.what.endswith("runs 1 of 2 desired tasks (no pending tasks)")
    assert "; once it stops rolling out (its deployment ? of car-rental-backend:8 is FAILED), fresh tasks of the " in (
        missing.next_step  # restart refuses a service mid-rollout
    )
    # a first rollout stuck: one deployment, IN_PROGRESS, no task running
    stuck = service(runningCount=0, deployments=[deployment("PRIMARY", 1, "IN_PROGRESS", 0, 2, 2)])
    [finding] = health.service_findings(stuck, "c", "dev")
    assert "once it stops rolling out (its deployment ? of car-rental-backend:1 is IN_PROGRESS)" in finding.next_step
    assert findings[0].what == "deployment of car-rental-backend:8 (PRIMARY) FAILED: tasks failed to start"
    assert "inv deploy.app --env dev" in findings[0].next_step
    assert findings[1].what == (
        "a rollout is in progress: 2 deployments (PRIMARY car-rental-backend:8, ACTIVE car-rental-backend:7)"
    )


def test_service_rows_show_deployments_settings_and_the_three_newest_events() -> None:
    events = [{"id": str(i), "createdAt": T0 + timedelta(minutes=i), "message": f"event {i}"} for i in range(5)]
    svc = service(
        deployments=[deployment("PRIMARY", 8, "IN_PROGRESS", 1, 2, 1), deployment("ACTIVE", 7, "COMPLETED", 2, 2)],
        events=events,
    )
    images = {f"{TD}:8": "repo/backend:0123456789ab", f"{TD}:7": "repo/backend:ba9876543210"}
    rows = health.service_rows(svc, "car-rental-cluster", images)
    assert rows[0] == Row("service", "car-rental-cluster/car-rental-service", "ACTIVE", "running 2/2, pending 0")
    assert rows[1] == Row(
        "deployment", "PRIMARY", "IN_PROGRESS", "car-rental-backend:8 (0123456789ab), running 1/2, pending 1"
    )
    assert rows[2].detail.startswith("car-rental-backend:7 (ba9876543210)")
    assert rows[3] == Row(
        "rollout settings",
        "car-rental-service",
        "tuned",
        "min healthy 100 %, max 200 %, circuit breaker on with rollback, grace period 10 s",
    )
    assert [r.detail for r in rows[4:]] == ["event 4", "event 3", "event 2"]
    assert rows[4].name == "2026-03-01 08:04:00 UTC"


def test_untuned_rollout_settings_are_each_recommended() -> None:
    svc = service(
        deploymentConfiguration={
            "minimumHealthyPercent": 50,
            "maximumPercent": 150,
            "deploymentCircuitBreaker": {"enable": False, "rollback": False},
        },
        healthCheckGracePeriodSeconds=120,
    )
    recs = {r.setting: r for r in health.service_recommendations(svc)}
    assert set(recs) == {
        "minimum healthy percent",
        "maximum percent",
        "deployment circuit breaker",
        "health-check grace period",
    }
    assert (recs["minimum healthy percent"].current, recs["minimum healthy percent"].suggested) == ("50 %", "100 %")
    assert recs["minimum healthy percent"].where == "cdk/stacks/fargate_stack.py: MIN_HEALTHY_PERCENT"
    assert (recs["maximum percent"].current, recs["maximum percent"].suggested) == ("150 %", "200 %")
    assert recs["maximum percent"].where.endswith("MAX_HEALTHY_PERCENT")
    assert recs["deployment circuit breaker"].current == "disabled"
    assert recs["deployment circuit breaker"].suggested == "enabled, with rollback"
    assert recs["health-check grace period"].current == "120 s"
    assert "120 s" in recs["health-check grace period"].why
    assert recs["health-check grace period"].where.endswith("HEALTH_CHECK_GRACE_PERIOD")
    assert health.service_rows(svc, "c", {})[2].status == "untuned"


def test_a_circuit_breaker_without_rollback_is_recommended_rollback() -> None:
    svc = service(
        deploymentConfiguration={
            "minimumHealthyPercent": 100,
            "maximumPercent": 200,
            "deploymentCircuitBreaker": {"enable": True, "rollback": False},
        }
    )
    [rec] = health.service_recommendations(svc)
    assert (rec.setting, rec.current, rec.suggested) == (
        "deployment circuit breaker",
        "enabled, no rollback",
        "enabled, with rollback",
    )


def test_settings_the_answer_does_not_carry_are_not_judged() -> None:
    svc = service()
    del svc["deploymentConfiguration"], svc["healthCheckGracePeriodSeconds"]
    assert health.service_recommendations(svc) == []
    assert health.service_rows(svc, "c", {})[2].status == "unknown"


# -- images ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("image", "tag", "sha"),
    [
        (
            "123456789012.dkr.ecr.eu-west-1.amazonaws.com/car-rental-backend:0123456789ab",
            "0123456789ab",
            "0123456789ab",
        ),
        (
            "127.0.0.1:5000/car-rental-backend:0123456789ab-dirty-fedcba987654",
            "0123456789ab-dirty-fedcba987654",
            "0123456789ab",
        ),
        ("127.0.0.1:5000/car-rental-backend:latest", "latest", None),
        ("127.0.0.1:5000/car-rental-backend", None, None),
        ("repo/backend:0123456789ab@sha256:" + "a" * 64, "0123456789ab", "0123456789ab"),
        ("repo/backend:0123456789abc", "0123456789abc", None),
    ],
)
def test_image_tag_and_the_sha_it_names(image: str, tag: str | None, sha: str | None) -> None:
    assert health.image_tag(image) == tag
    assert health.sha_of_tag(tag) == sha


# -- targets -----------------------------------------------------------------------------------------


def target(ip: str, state: str, reason: str = "", description: str = "") -> dict[str, Any]:
    th: dict[str, Any] = {"State": state}
    if reason:
        th["Reason"] = reason
    if description:
        th["Description"] = description
    return {"Target": {"Id": ip, "Port": 8000}, "TargetHealth": th}


def test_no_healthy_target_is_broken_with_the_reasons() -> None:
    descriptions = [target("10.0.1.5", "unhealthy", "Target.FailedHealthChecks", "Health checks failed with 502")]
    [finding] = health.target_findings("tg", "arn:tg", descriptions, "dev")
    assert finding.severity == "broken"
    assert (
        finding.what == "no healthy target in target group tg (10.0.1.5:8000 unhealthy: Health checks failed with 502)"
    )
    assert "/health" in finding.next_step and "--target-group-arn arn:tg" in finding.next_step


def test_no_target_at_all_is_broken() -> None:
    [finding] = health.target_findings("tg", "arn:tg", [], "dev")
    assert finding.severity == "broken" and "no registered targets" in finding.what
    assert health.targets_row("tg", []) == Row("targets", "tg", "0/0 healthy", "no targets registered")


def test_some_unhealthy_targets_are_a_warning_and_draining_ones_are_counted() -> None:
    descriptions = [
        target("10.0.1.5", "healthy"),
        target("10.0.1.6", "unhealthy", "Target.Timeout"),
        target("10.0.1.7", "draining", "Target.DeregistrationInProgress"),
    ]
    [finding] = health.target_findings("tg", "arn:tg", descriptions, "dev")
    assert finding.severity == "warning"
    assert finding.what.startswith("1 of 3 targets in target group tg are unhealthy")
    row = health.targets_row("tg", descriptions)
    assert row.status == "1/3 healthy"
    assert row.detail.startswith("draining 1, healthy 1, unhealthy 1; ")
    assert "10.0.1.6:8000 unhealthy: Target.Timeout" in row.detail


def test_all_healthy_targets_say_nothing() -> None:
    assert health.target_findings("tg", "arn:tg", [target("10.0.1.5", "healthy")], "dev") == []


# -- target-group settings ---------------------------------------------------------------------------

AWS_DEFAULTS = {
    "HealthCheckIntervalSeconds": 30,
    "HealthCheckTimeoutSeconds": 5,
    "HealthyThresholdCount": 5,
    "UnhealthyThresholdCount": 5,
}
TUNED = {
    "HealthCheckIntervalSeconds": 5,
    "HealthCheckTimeoutSeconds": 4,
    "HealthyThresholdCount": 2,
    "UnhealthyThresholdCount": 2,
}


def test_aws_default_target_group_settings_are_all_recommended_with_their_cost() -> None:
    attributes = health.attributes_of([{"Key": "deregistration_delay.timeout_seconds", "Value": "300"}])
    recs = {r.setting: r for r in health.target_group_recommendations(AWS_DEFAULTS, attributes)}
    assert set(recs) == {"deregistration delay", "health-check interval", "healthy threshold", "unhealthy threshold"}
    delay = recs["deregistration delay"]
    assert (delay.current, delay.suggested) == ("300 s", "5–30 s")
    assert "300 s" in delay.why
    assert delay.where == "cdk/stacks/fargate_stack.py: DEREGISTRATION_DELAY"
    assert (recs["health-check interval"].current, recs["health-check interval"].suggested) == ("30 s", "5–10 s")
    assert "up to 30 s more per deploy" in recs["health-check interval"].why
    assert recs["health-check interval"].where.startswith("cdk/stacks/fargate_stack.py: HEALTH_CHECK_INTERVAL")
    healthy = recs["healthy threshold"]
    assert (healthy.current, healthy.suggested) == ("5", "2")
    assert "5 × 30 s = 150 s" in healthy.why and "saves 90 s" in healthy.why
    assert "a new target needs one passing check" in healthy.why
    assert healthy.where.endswith("HEALTHY_THRESHOLD")
    assert (recs["unhealthy threshold"].current, recs["unhealthy threshold"].suggested) == ("5", "2–3")
    assert recs["unhealthy threshold"].where.endswith("UNHEALTHY_THRESHOLD")


def test_tuned_target_group_settings_get_no_recommendation() -> None:
    attributes = {"deregistration_delay.timeout_seconds": "5"}
    assert health.target_group_recommendations(TUNED, attributes) == []
    assert health.target_group_recommendations(TUNED, {"deregistration_delay.timeout_seconds": "30"}) == []
    [rec] = health.target_group_recommendations(TUNED, {"deregistration_delay.timeout_seconds": "31"})
    assert rec.setting == "deregistration delay"
    assert health.health_check_text(TUNED, attributes) == (
        "interval 5 s, timeout 4 s, healthy threshold 2, unhealthy threshold 2, deregistration delay 5 s"
    )


# -- the report --------------------------------------------------------------------------------------

REC = Recommendation(
    "deregistration delay", "300 s", "5–30 s", "every deploy waits up to 300 s", "cdk/stacks/fargate_stack.py"
)


def test_render_shows_the_table_findings_with_next_steps_and_recommendations() -> None:
    report = HealthReport(
        env="dev",
        rows=[Row("stack", "CarRentalApiStack", "UPDATE_COMPLETE", "updated 2026-03-01 08:00:00 UTC")],
        findings=[
            Finding("warning", "a rollout is in progress", "inv health --env dev"),
            Finding("broken", "no healthy target", "look at /health"),
        ],
        recommendations=[REC],
        live_image="repo/backend:0123456789ab",
        live_sha="0123456789ab",
    )
    text = health.render(report)
    assert "live image: repo/backend:0123456789ab (git 0123456789ab)" in text
    for header in ("part", "name", "status", "detail", "CarRentalApiStack", "UPDATE_COMPLETE"):
        assert header in text
    findings = text[text.index("Findings") :]
    assert findings.index("❌ no healthy target") < findings.index("⚠️  a rollout is in progress")
    assert "→ next: look at /health" in text
    assert "💡 deregistration delay: 300 s → 5–30 s: every deploy waits up to 300 s" in text
    assert "✅ nothing broken" not in text
    assert report.broken


def test_render_says_nothing_is_broken_without_broken_findings() -> None:
    report = HealthReport(env="dev", rows=[Row("stack", "S", "CREATE_COMPLETE", "")])
    text = health.render(report)
    assert "✅ nothing broken" in text and "Findings" not in text and "Recommendations" not in text
    assert not report.broken
    report.findings.append(Finding("warning", "busy", "wait"))
    assert not report.broken and "✅ nothing broken" in health.render(report)


def test_to_json_carries_everything() -> None:
    report = HealthReport(
        env="dev",
        rows=[Row("image", "backend", "0123456789ab", "repo/backend:0123456789ab")],
        findings=[Finding("broken", "x", "y")],
        recommendations=[REC],
        live_image="repo/backend:0123456789ab",
        live_sha="0123456789ab",
    )
    assert report.to_json() == {
        "env": "dev",
        "broken": True,
        "live_image": "repo/backend:0123456789ab",
        "live_sha": "0123456789ab",
        "rows": [{"part": "image", "name": "backend", "status": "0123456789ab", "detail": "repo/backend:0123456789ab"}],
        "findings": [{"severity": "broken", "what": "x", "next_step": "y"}],
        "recommendations": [
            {
                "setting": "deregistration delay",
                "current": "300 s",
                "suggested": "5–30 s",
                "why": "every deploy waits up to 300 s",
                "where": "cdk/stacks/fargate_stack.py",
            }
        ],
    }


# -- the last deploy and the lock ---------------------------------------------------------------------------------

NOW = datetime(2026, 11, 29, 9, 0, tzinfo=UTC)


def recorded(ok: bool, error: str | None = None) -> history.Record:
    return history.Record(
        id="20261129T085000.000000-abcd1234",
        env="dev",
        when="2026-11-29T08:50:00+00:00",
        who="ana@laptop",
        command="deploy.auto",
        head="05c317f69b77",
        ok=ok,
        seconds=4.25,
        error=error,
    )


def holder(expires: datetime, **s3_times: datetime) -> Found:
    """The lock as read: by a store that gave no times (judged by ``expires``), or with S3's ``written`` and
    ``served`` (judged by them, its lease 600 s)."""
    info = LockInfo(
        owner="ci",
        host="runner-1",
        pid=4242,
        command="deploy.full",
        started=(NOW - timedelta(minutes=2)).isoformat(),
        expires=expires.isoformat(),
        token="t",
        lease=600.0,
    )
    return Found(info, '"e"', **s3_times)


def test_the_last_deploy_and_a_free_lock_are_rows_and_nothing_is_found() -> None:
    rows, findings = health.deploy_rows("dev", recorded(True), None, NOW)
    assert rows == [
        Row("last run", "deploy.auto", "ok", "2026-11-29 08:50:00 UTC by ana@laptop, 05c317f69b77, 4.2s"),
        Row("deploy lock", "-", "free", "no deploy is running"),
    ]
    assert findings == []


def test_a_failed_last_run_is_a_warning_that_names_what_to_run() -> None:
    rows, findings = health.deploy_rows("dev", recorded(False, "the rollout failed\n  → next: look"), None, NOW)
    assert rows[0].status == "failed" and rows[0].detail.endswith(": the rollout failed")
    assert findings == [
        Finding(
            "warning",
            "the last run in dev failed: deploy.auto by ana@laptop (the rollout failed)",
            "what it did: inv history --env dev; once fixed: inv deploy.auto --env dev",
        )
    ]


def test_a_refused_last_run_is_said_refused_not_failed() -> None:
    """A guard or bad input stopped it (Docker down, a freeze): it changed nothing live, and is said so."""
    refused = dataclasses.replace(recorded(False, "the Docker engine is not running"), refused=True)
    rows, findings = health.deploy_rows("dev", refused, None, NOW)
    assert rows[0].status == "refused"
    assert [f.what for f in findings] == [
        "the last run in dev was refused: deploy.auto by ana@laptop (the Docker engine is not running)"
    ]


def test_a_held_lock_says_who_and_an_expired_one_says_so() -> None:
    rows, _ = health.deploy_rows("dev", None, holder(NOW + timedelta(minutes=8)), NOW)
    assert rows[0] == Row("last run", "-", "none", "no run recorded yet")
    assert (
        rows[1].status == "held" and rows[1].name == "ci" and "'deploy.full' on runner-1 (pid 4242)" in rows[1].detail
    )
    rows, _ = health.deploy_rows("dev", None, holder(NOW - timedelta(seconds=1)), NOW)
    assert rows[1].status == "expired" and "its lease expired" in rows[1].detail


def test_a_lock_is_held_or_expired_by_s3s_clock_whatever_this_machines_says() -> None:
    """This machine's clock (NOW) 15 minutes ahead of S3's: the lock renewed 100 s ago by S3's clock is held, though
    the ``expires`` its holder wrote is past by this clock; one last written 11 minutes ago expired, though by this
    clock it ends in an hour."""
    s3_now = NOW - timedelta(minutes=15)
    renewed = holder(NOW - timedelta(minutes=5), written=s3_now - timedelta(seconds=100), served=s3_now)
    rows, _ = health.deploy_rows("dev", None, renewed, NOW)
    assert rows[1].status == "held" and rows[1].detail.endswith(
        "its lease expires in 8m20s unless renewed (at 2026-11-29T08:53:20Z by S3's clock)"
    )
    dead = holder(NOW + timedelta(hours=1), written=s3_now - timedelta(minutes=11), served=s3_now)
    rows, _ = health.deploy_rows("dev", None, dead, NOW)
    assert rows[1].status == "expired" and rows[1].detail.endswith(
        "its lease expired 1m00s ago (at 2026-11-29T08:44:00Z by S3's clock)"
    )


def test_a_split_alias_with_no_deploy_running_is_a_canary_cut_short() -> None:
    shifting = {"health_handler": ("car-rental-dev-health", {"3": 0.1})}
    _, findings = health.deploy_rows("dev", recorded(True), None, NOW, shifting)
    assert findings == [
        Finding(
            "warning",
            "Lambda health_handler: its live alias routes 10% to version 3, and no deploy is running (a canary cut "
            "short: its process was killed before it could take itself back)",
            "finish it: inv deploy.lambda health_handler --env dev; or take it back: aws lambda update-alias "
            "--function-name car-rental-dev-health --name live --routing-config AdditionalVersionWeights={}",
        )
    ]
    # while a deploy holds the lock, that is its canary running
    assert health.deploy_rows("dev", recorded(True), holder(NOW + timedelta(minutes=8)), NOW, shifting)[1] == []


def test_the_credentials_account_against_the_pinned_one() -> None:
    dev = sample_env(name="dev")
    [recommendation] = health.account_advice(dev, "111111111111")[1]
    assert (recommendation.setting, recommendation.current, recommendation.suggested) == (
        "account",
        "not pinned",
        '"111111111111"',
    )
    assert recommendation.where == 'deploy.toml, [environments.dev]: account = "111111111111"'
    pinned = dataclasses.replace(dev, account="111111111111")
    assert health.account_advice(pinned, "111111111111") == ([], [])
    [finding], recommendations = health.account_advice(pinned, "222222222222")
    assert finding.severity == "broken" and recommendations == []
    assert "act in AWS account 222222222222, but deploy.toml pins 111111111111" in finding.what
    local = dataclasses.replace(dev, endpoint_url="http://127.0.0.1:4566")
    assert health.account_advice(local, "123456789012") == ([], [])  # the sandbox's account is moto's


@pytest.mark.parametrize(
    ("value", "said"),
    [
        (datetime(2026, 11, 30, 18, 43, 20, tzinfo=UTC), "2026-11-30 18:43:20 UTC"),
        ("2026-11-30T18:43:20.000+0000", "2026-11-30 18:43:20 UTC"),  # Lambda's LastModified on AWS
        ("2026-11-30T18:43:20.780323000Z", "2026-11-30 18:43:20 UTC"),  # the sandbox's
        ("yesterday", "yesterday"),
        (None, ""),
    ],
)
def test_times_are_said_alike_whether_a_datetime_or_lambdas_string(value: object, said: str) -> None:
    assert health.when(value) == said


def test_a_functions_row_names_the_live_commit_where_its_version_names_none() -> None:
    """A version CloudFormation published names its zip, not its commit: the row takes the commit deploy.auto reads
    (the live record's); a version the fast path published names its own, and other rows stay as they are."""
    live = {"lambda:health_handler": "0123456789ab", "lambda:login_handler": "ba9876543210", "app": "fedcba987654"}
    stack_made = Row("lambda", "health_handler (Api-Health-1)", "live → version 3", "code abc from x.zip, on x86_64")
    fast_path = Row("lambda", "login_handler", "live → version 2", "code def, git 111111111111, on arm64")
    unknown = Row("lambda", "other", "live → version 1", "code ghi")
    app = Row("image", "backend", "0123", "registry/backend:0123")
    assert [health.with_live_commit(row, live).detail for row in (stack_made, fast_path, unknown, app)] == [
        "code abc from x.zip, on x86_64, git 0123456789ab (the live record)",
        "code def, git 111111111111, on arm64",
        "code ghi",
        "registry/backend:0123",
    ]


# -- the functions' runtime against AWS's deprecation dates ------------------------------------------------------

RUNS = {"login_handler": ("python3.11", "CarRentalApiStack"), "health_handler": ("python3.11", "CarRentalApiStack")}


def test_a_runtime_far_from_its_deprecation_is_not_a_finding() -> None:
    assert health.runtime_findings(RUNS, "python3.11", date(2026, 12, 6), "dev") == []  # 206 days before 2027-06-30


def test_a_runtime_within_180_days_of_its_deprecation_is_a_warning_naming_its_functions_and_the_move() -> None:
    [finding] = health.runtime_findings(RUNS, "python3.11", date(2027, 1, 1), "dev")  # 180 days before
    assert finding == health.Finding(
        "warning",
        "Lambdas health_handler, login_handler run python3.11, which AWS deprecates on 2027-06-30 (on Amazon Linux 2, "
        "past its end of life)",
        'set [build] lambda_runtime = "python3.12" in deploy.toml (or python3.13, python3.14), commit, inv deploy.auto '
        "--env dev; run the functions' tests on that Python first",
    )


def test_a_deprecated_runtime_the_setting_has_left_is_moved_by_deploying_the_functions_stacks() -> None:
    runs = {**RUNS, "report": ("python3.10", "TeamStack"), "export": ("python3.12", "TeamStack")}
    found = health.runtime_findings(runs, "python3.12", date(2026, 12, 6), "dev")
    assert found == [
        health.Finding(
            "warning",
            "Lambda report runs python3.10, which AWS deprecated on 2026-10-31 (on Amazon Linux 2, past its end of "
            "life)",
            "deploy.toml's [build] lambda_runtime is python3.12: inv deploy.stack TeamStack --env dev puts them on "
            "it, unless their stack gives them a runtime of its own",
        )
    ]
    # the setting as old as the function's runtime: the setting moves
    [moved] = health.runtime_findings(runs, "python3.10", date(2026, 12, 6), "dev")
    assert moved.next_step.startswith('set [build] lambda_runtime = "python3.12" in deploy.toml')


def test_runtime_deprecation_dates_and_the_runtimes_to_move_to() -> None:
    assert packaging.runtime_deprecation("python3.13", date(2029, 1, 1)) == (
        "python3.13, which AWS deprecates on 2029-06-30"
    )
    assert packaging.runtime_deprecation("python3.13", date(2028, 12, 31)) is None
    assert packaging.runtime_deprecation("python3.99", date(2040, 1, 1)) is None  # not listed: nothing said
    assert set(packaging.RUNTIME_DEPRECATION) == set(packaging.LAMBDA_RUNTIMES)  # each runtime offered has its date
    assert packaging.runtimes_to_move_to(date(2026, 12, 6)) == ["python3.12", "python3.13", "python3.14"]
    assert packaging.runtimes_to_move_to(date(2030, 1, 1)) == []
    assert health.runtime_findings({"f": ("python3.14", "S")}, "python3.14", date(2030, 1, 1), "dev")[0].next_step == (
        "no runtime deploykit knows is supported longer: see AWS's table of Lambda runtimes"
    )


def test_the_alarm_watch_s_seconds_are_judged_by_a_metric_math_alarm_s_periods_too() -> None:
    """A metric math alarm has no Period of its own: its metrics' longest is what it judges over."""
    env = dataclasses.replace(sample_env(), alarm_watch=AlarmWatch(("errors-ratio",), 60.0))
    math = {"EvaluationPeriods": 3, "Metrics": [{"Id": "r", "Expression": "e/n"}, {"MetricStat": {"Period": 60}}]}
    [advice] = health.alarm_watch_advice(env, {"errors-ratio": math})
    assert advice.suggested == "240 s" and advice.why.startswith("alarm errors-ratio goes to ALARM after 240 s")
    assert health.alarm_watch_advice(env, {"errors-ratio": {"EvaluationPeriods": 3, "AlarmRule": "ALARM(a)"}}) == []
