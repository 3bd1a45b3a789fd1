"""The image scan gate ([environments.NAME.image_scan]) in the app chain, against moto's ECR and ECS: ECR's scan of
the new image judged after register-taskdef, before roll-service. moto's scan of an image finds one HIGH finding
(CVE-9999-9999 in moto_fake 9.9.9) once one was started; :class:`Scans` scripts other answers (a scan in progress,
one that failed, enhanced findings) where the test needs them."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from botocore.awsrequest import AWSResponse
from moto.ecs.models import ecs_backends

from deploykit import commands
from deploykit.aws import AwsFactory
from deploykit.clock import FakeClock
from deploykit.errors import StepFailed, UsageError
from deploykit.git import current_revision
from tests.conftest import git
from tests.functional.conftest import REGION, create_service, put_image
from tests.functional.conftest import moto_runtime as runtime

ACCOUNT = "123456789012"  # moto's


def with_gate(project: Path, **settings: Any) -> Path:
    body = "".join(f"{key} = {value!r}\n".replace("'", '"') for key, value in settings.items())
    with (project / "deploy.toml").open("a") as toml:
        toml.write(f"\n[environments.dev.image_scan]\n{body}")
    git(project, "commit", "-qam", "the scan gate")
    return project


def rollout(project: Path, factory: AwsFactory, *, push: bool = True, clock: FakeClock | None = None) -> Any:
    if push:
        put_image(factory, current_revision(project).tag)
    return commands.app_chain(
        ["register-taskdef", "roll-service"], env="dev", runtime=runtime(project, factory, clock=clock)
    )


def running(factory: AwsFactory) -> str:
    ecs = factory.client("ecs")
    return str(ecs.describe_services(cluster="car-rental-cluster", services=["car-rental-service"])["services"][0]
               ["taskDefinition"])  # fmt: skip


def test_a_finding_at_the_gates_severity_stops_the_deploy_before_the_service_changes(
    project: Path, factory: AwsFactory
) -> None:
    with_gate(project, severity="HIGH")
    before = create_service(factory)
    with pytest.raises(UsageError) as failed:
        rollout(project, factory)
    assert failed.value.exit_code == 2  # refused, as the other guards refuse: nothing changed
    message = str(failed.value)
    tag = current_revision(project).tag
    assert f"ECR's scan of car-rental-backend:{tag} has 1 finding(s) of HIGH or worse" in message
    assert "CVE-9999-9999 (HIGH, moto_fake 9.9.9)" in message
    assert 'ignore = ["CVE-9999-9999"]' in (failed.value.next_step or "")
    assert "DEPLOYKIT_SKIP_SCAN=1" in (failed.value.next_step or "")
    assert running(factory) == before["taskDefinitionArn"]  # roll-service never ran


def test_the_scan_is_asked_for_when_ecr_has_none_and_judged(project: Path, factory: AwsFactory) -> None:
    with_gate(project, severity="CRITICAL")  # moto's finding is HIGH: under the gate
    create_service(factory)
    report = rollout(project, factory)
    assert [(r.step, r.status) for r in report.records] == [
        ("register-taskdef", "done"),
        ("scan-gate", "done"),
        ("roll-service", "done"),
    ]
    assert report.records[1].detail == "passed: nothing of CRITICAL or worse (1 HIGH)"
    assert report.records[1].outputs == {"scan": "1 HIGH"}
    assert running(factory) == report.records[0].outputs["task_definition"]


def test_a_finding_deploy_toml_accepts_lets_the_deploy_go_on(project: Path, factory: AwsFactory) -> None:
    with_gate(project, severity="HIGH", ignore=["cve-9999-9999"])  # any case
    create_service(factory)
    report = rollout(project, factory)
    gate = report.records[1]
    assert gate.status == "done"
    assert gate.detail == "passed: 1 HIGH; accepted by deploy.toml: CVE-9999-9999 (HIGH, moto_fake 9.9.9)"


def test_without_a_gate_no_scan_is_read(project: Path, factory: AwsFactory) -> None:
    create_service(factory)
    scans = Scans(factory, [])  # any read of a scan is counted (and refused: nothing scripted)
    report = rollout(project, factory)
    assert [r.step for r in report.records] == ["register-taskdef", "roll-service"]
    assert scans.described == 0


def test_skipping_it_by_hand_rolls_out_without_judging(
    project: Path, factory: AwsFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    with_gate(project, severity="LOW")
    create_service(factory)
    monkeypatch.setenv("DEPLOYKIT_SKIP_SCAN", "1")
    report = rollout(project, factory)
    assert [(r.step, r.status) for r in report.records] == [
        ("register-taskdef", "done"),
        ("scan-gate", "skipped"),
        ("roll-service", "done"),
    ]
    assert report.records[1].detail == f"$DEPLOYKIT_SKIP_SCAN=1: ECR's scan of car-rental-backend:" \
        f"{current_revision(project).tag} not judged"  # fmt: skip


def test_the_gate_is_skipped_when_the_service_already_runs_the_image(project: Path, factory: AwsFactory) -> None:
    with_gate(project, severity="CRITICAL")
    create_service(factory)
    first = rollout(project, factory)
    # the rollout completed, as ECS would show it (moto leaves the PRIMARY deployment on the revision it began with)
    moto_service = ecs_backends[ACCOUNT][REGION].services["car-rental-cluster:car-rental-service"]
    moto_service.deployments[0]["taskDefinition"] = first.records[0].outputs["task_definition"]
    again = rollout(project, factory, push=False)
    assert [(r.step, r.status) for r in again.records] == [
        ("register-taskdef", "skipped"),
        ("scan-gate", "skipped"),
        ("roll-service", "skipped"),
    ]
    assert "its scan was judged as it went live" in again.records[1].detail


class Scans:
    """ECR's DescribeImageScanFindings (and StartImageScan) answered from a script instead of moto: each read takes
    the next answer (the last one again when the script ends); an answer with ``"Error"`` is refused as ECR would."""

    def __init__(self, factory: AwsFactory, script: list[dict[str, Any]], start: dict[str, Any] | None = None) -> None:
        self.script = script
        self.start = start or {"imageScanStatus": {"status": "IN_PROGRESS"}}
        self.described = 0
        self.started = 0
        ecr = factory.client("ecr")
        ecr.meta.events.register("before-call.ecr.DescribeImageScanFindings", self._describe)
        ecr.meta.events.register("before-call.ecr.StartImageScan", self._start)

    def _describe(self, **_: Any) -> tuple[AWSResponse, dict[str, Any]]:
        self.described += 1  # counted first: a read with nothing scripted is counted too, not only refused
        assert self.script, "no scan was scripted"
        return _answer(self.script[min(self.described - 1, len(self.script) - 1)])

    def _start(self, **_: Any) -> tuple[AWSResponse, dict[str, Any]]:
        self.started += 1
        return _answer(self.start)


def _answer(answer: dict[str, Any]) -> tuple[AWSResponse, dict[str, Any]]:
    status = 400 if "Error" in answer else 200
    return AWSResponse("", status, {}, None), answer  # type: ignore[arg-type]


def scan(
    status: str, *findings: dict[str, Any], enhanced: bool = False, completed: datetime | None = None, **more: Any
) -> dict[str, Any]:
    answer: dict[str, Any] = {"imageScanStatus": {"status": status, "description": more.pop("description", "")}}
    if findings or status in ("COMPLETE", "ACTIVE"):
        counts: dict[str, int] = {}
        for finding in findings:
            counts[finding["severity"]] = counts.get(finding["severity"], 0) + 1
        answer["imageScanFindings"] = {
            "imageScanCompletedAt": completed or datetime.now(UTC),
            "findingSeverityCounts": counts,
            ("enhancedFindings" if enhanced else "findings"): list(findings),
        }
    return answer | more


NOT_FOUND = {"Error": {"Code": "ScanNotFoundException", "Message": "Image scan does not exist for the image"}}


@pytest.fixture
def gated(project: Path, factory: AwsFactory) -> Iterator[Path]:
    with_gate(project, severity="HIGH", timeout=60)
    create_service(factory)
    yield project


def test_a_scan_in_progress_is_waited_for(gated: Path, factory: AwsFactory) -> None:
    clock = FakeClock()
    medium = {"name": "CVE-2026-1", "severity": "MEDIUM", "attributes": []}
    scans = Scans(factory, [NOT_FOUND, scan("IN_PROGRESS"), scan("IN_PROGRESS"), scan("COMPLETE", medium)])
    report = rollout(gated, factory, clock=clock)
    assert report.records[1].detail == "passed: nothing of HIGH or worse (1 MEDIUM)"
    assert scans.started == 1 and scans.described == 4
    assert clock.sleeps and max(clock.sleeps) <= 5.0  # the poll of dev (5 s on AWS) at most


def test_a_scan_still_in_progress_at_the_deadline_stops_the_deploy(gated: Path, factory: AwsFactory) -> None:
    before = running(factory)
    Scans(factory, [scan("IN_PROGRESS")])
    with pytest.raises(StepFailed, match=r"is still IN_PROGRESS after 60s \(image_scan timeout 60s\)") as failed:
        rollout(gated, factory)
    assert "raise [environments.dev.image_scan] timeout" in (failed.value.next_step or "")
    assert running(factory) == before


@pytest.mark.parametrize("status", ["FAILED", "UNSUPPORTED_IMAGE", "FINDINGS_UNAVAILABLE"])
def test_a_scan_that_cannot_be_judged_stops_the_deploy(gated: Path, factory: AwsFactory, status: str) -> None:
    before = running(factory)
    Scans(factory, [scan(status, description="The operating system is not supported")])
    with pytest.raises(StepFailed, match=f"cannot be judged: {status} \\(The operating system is not supported\\)"):
        rollout(gated, factory)
    assert running(factory) == before


def test_a_scan_ecr_will_not_start_stops_the_deploy(gated: Path, factory: AwsFactory) -> None:
    refused = {"Error": {"Code": "UnsupportedImageTypeException", "Message": "The image is not supported"}}
    Scans(factory, [NOT_FOUND], start=refused)
    with pytest.raises(StepFailed, match=r"has no scan of .* and would not start one: The image is not supported"):
        rollout(gated, factory)


def test_a_scan_ecr_says_is_on_its_way_is_waited_for(gated: Path, factory: AwsFactory) -> None:
    once_a_day = {"Error": {"Code": "LimitExceededException", "Message": "The scan quota per image has been exceeded"}}
    scans = Scans(factory, [NOT_FOUND, NOT_FOUND, scan("COMPLETE")], start=once_a_day)
    report = rollout(gated, factory)
    assert report.records[1].detail == "passed: nothing of HIGH or worse (no findings)"
    assert scans.started == 1  # asked once only


NOW = datetime(2026, 1, 1, tzinfo=UTC)  # FakeClock's start
OLD = {"name": "CVE-2025-1", "severity": "MEDIUM", "attributes": []}  # what a month-old scan knew
NEW = {"name": "CVE-2025-2", "severity": "HIGH", "attributes": []}  # what is known now


def test_a_scan_older_than_rescan_after_days_is_made_again_and_the_new_one_judged(
    project: Path, factory: AwsFactory
) -> None:
    with_gate(project, severity="HIGH", rescan_after_days=7)
    before = create_service(factory)
    month_old = scan("COMPLETE", OLD, completed=NOW - timedelta(days=31))
    fresh = scan("COMPLETE", OLD, NEW, completed=NOW + timedelta(seconds=3))
    # ECR may show the old scan a moment longer after it was asked for a new one
    scans = Scans(factory, [month_old, month_old, scan("IN_PROGRESS"), fresh])
    rt = runtime(project, factory)
    put_image(factory, current_revision(project).tag)
    with pytest.raises(UsageError, match=r"CVE-2025-2 \(HIGH\)"):  # what is known now, not what the old scan knew
        commands.app_chain(["register-taskdef", "roll-service"], env="dev", runtime=rt)
    said = rt.stderr.getvalue()  # type: ignore[attr-defined]
    assert "is from 2025-12-01 00:00 UTC, older than 7 day(s) (image_scan rescan_after_days): asked ECR" in said
    assert scans.started == 1 and scans.described == 4
    assert running(factory) == before["taskDefinitionArn"]


def test_a_scan_within_rescan_after_days_is_judged_as_it_is(project: Path, factory: AwsFactory) -> None:
    with_gate(project, severity="HIGH", rescan_after_days=7)
    create_service(factory)
    scans = Scans(factory, [scan("COMPLETE", OLD, completed=NOW - timedelta(days=2))])
    report = rollout(project, factory)
    assert report.records[1].detail == "passed: nothing of HIGH or worse (1 MEDIUM)"
    assert scans.started == 0


def test_a_stale_scan_ecr_will_not_redo_today_is_judged_as_it_is(project: Path, factory: AwsFactory) -> None:
    with_gate(project, severity="HIGH", rescan_after_days=0.5)
    create_service(factory)
    once_a_day = {"Error": {"Code": "LimitExceededException", "Message": "The scan quota per image has been exceeded"}}
    scans = Scans(factory, [scan("COMPLETE", OLD, completed=NOW - timedelta(hours=13))], start=once_a_day)
    rt = runtime(project, factory)
    put_image(factory, current_revision(project).tag)
    report = commands.app_chain(["register-taskdef", "roll-service"], env="dev", runtime=rt)
    assert report.records[1].detail == "passed: nothing of HIGH or worse (1 MEDIUM)"
    assert scans.started == 1
    said = rt.stderr.getvalue()  # type: ignore[attr-defined]
    assert "ECR will not scan car-rental-backend:" in said and "again today: the scan of 2025-12-31 11:00 UTC" in said


def enhanced(name: str, severity: str, status: str = "ACTIVE") -> dict[str, Any]:
    return {
        "severity": severity,
        "status": status,
        "title": f"{name} - glibc",
        "packageVulnerabilityDetails": {
            "vulnerabilityId": name,
            "vulnerablePackages": [{"name": "glibc", "version": "2.36-9"}],
        },
    }


def test_enhanced_findings_count_unless_suppressed_or_closed(gated: Path, factory: AwsFactory) -> None:
    findings = [
        enhanced("CVE-2023-4911", "HIGH", "SUPPRESSED"),
        enhanced("CVE-2023-0001", "CRITICAL", "CLOSED"),
        enhanced("CVE-2024-2961", "CRITICAL"),
        enhanced("CVE-2024-0002", "UNTRIAGED"),
    ]
    Scans(factory, [scan("ACTIVE", *findings, enhanced=True)])
    with pytest.raises(UsageError) as failed:
        rollout(gated, factory)
    message = str(failed.value)
    assert "has 1 finding(s) of HIGH or worse" in message
    assert "CVE-2024-2961 (CRITICAL, glibc 2.36-9)" in message
    assert "CVE-2023-4911" not in message and "CVE-2023-0001" not in message


def test_every_page_of_findings_is_read(gated: Path, factory: AwsFactory) -> None:
    low = [{"name": f"CVE-2026-{n}", "severity": "LOW"} for n in range(3)]
    high = {"name": "CVE-2026-99", "severity": "HIGH"}
    Scans(factory, [scan("COMPLETE", *low, nextToken="page-2"), scan("COMPLETE", high)])
    with pytest.raises(UsageError, match=r"CVE-2026-99 \(HIGH\)"):
        rollout(gated, factory)


# -- inv scan ------------------------------------------------------------------------------------------------------


def test_inv_scan_judges_this_checkouts_image_as_the_gate_would(project: Path, factory: AwsFactory) -> None:
    """Without a gate: judged at HIGH; moto's scan (asked for: ECR had none) finds CVE-9999-9999, HIGH: exit 1,
    the finding listed; the environment's gate says what counts and what is accepted."""
    create_service(factory)
    tag = current_revision(project).tag
    put_image(factory, tag)
    rt = runtime(project, factory)
    with pytest.raises(StepFailed, match=r"has 1 finding\(s\) of HIGH or worse") as refused:
        commands.scan_image(env="dev", as_json=True, runtime=rt)
    assert refused.value.exit_code == 1
    said = rt.stderr.getvalue()  # type: ignore[attr-defined]
    assert f"   no scan of car-rental-backend:{tag} yet: asked ECR for one (StartImageScan)" in said
    heading = f"🛡️  ECR's scan of car-rental-backend:{tag}: COMPLETE, 1 HIGH; judged by HIGH (no image scan gate in dev)"
    assert heading in said
    assert "CVE-9999-9999  HIGH        moto_fake 9.9.9  stops a deploy" in said
    printed = json.loads(rt.stdout.getvalue())  # type: ignore[attr-defined]
    assert printed == {
        "environment": "dev",
        "image": f"car-rental-backend:{tag}",
        "status": "COMPLETE",
        "description": "The scan was completed successfully.",
        "severity": "HIGH",
        "gate": False,
        "counts": {"HIGH": 1},
        "findings": [{"name": "CVE-9999-9999", "severity": "HIGH", "package": "moto_fake 9.9.9", "status": "ACTIVE"}],
        "blocking": ["CVE-9999-9999"],
        "accepted": [],
        "passed": False,
    }

    with_gate(project, severity="HIGH", ignore=["CVE-9999-9999"])
    rt = runtime(project, factory)
    result = commands.scan_image(env="dev", image_tag=tag, runtime=rt)
    assert result["passed"] and result["accepted"] == ["CVE-9999-9999"] and result["gate"]
    said = rt.stderr.getvalue()  # type: ignore[attr-defined]
    assert "judged by dev's image scan gate" in said and "accepted" in said
    assert "✅ passed: 1 HIGH; accepted by deploy.toml: CVE-9999-9999 (HIGH, moto_fake 9.9.9)" in said


def test_inv_scan_of_an_image_the_registry_does_not_have_is_bad_input(project: Path, factory: AwsFactory) -> None:
    create_service(factory)
    with pytest.raises(UsageError, match="car-rental-backend:nope00000000 is not in the environment's registry") as bad:
        commands.scan_image(env="dev", image_tag="nope00000000", runtime=runtime(project, factory))
    assert bad.value.exit_code == 2 and "inv push" in (bad.value.next_step or "")
