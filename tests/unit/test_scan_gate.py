"""The image scan gate ([environments.NAME.image_scan]): where the plans put it, how findings are read and judged,
how deploy.toml is checked, and the sandbox's rehearsal of ECR's scans."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from moto.ecr.exceptions import LimitExceededException

from deploykit import auto, planner
from deploykit.config import Config, ImageScan, load_config, parse_config
from deploykit.errors import ConfigError, UsageError
from deploykit.git import current_revision
from deploykit.plan import Plan
from deploykit.scan_gate import Finding, ImageJudge, ScanGate, findings_of, judge, rank, refusal
from sandbox.ext.ecr_registry import ImageScans, ScanRecord, scan_answer
from sandbox.server import Faults
from tests.unit.test_auto_plan import INPUTS, change_set, shape
from tests.unit.test_config import raw
from tests.unit.test_release import with_release
from tests.unit.test_stack_plans import names, with_lambdas  # noqa: F401 - a fixture

GATE = ImageScan("HIGH", ("CVE-2023-4911",), 300)  # rescan_after_days 0: judged at any age


def gated(config: Config, *, release: bool = False) -> Config:
    env = dataclasses.replace(config.environment("sandbox"), image_scan=GATE)
    made = dataclasses.replace(config, environments={**config.environments, "sandbox": env})
    return with_release(made) if release else made


def gates(plan: Plan) -> list[ScanGate]:
    return [step for step in auto.flat_steps(plan.steps) if isinstance(step, ScanGate)]


def test_the_app_chain_judges_the_scan_before_the_release_command_and_roll_service(project: Path) -> None:
    config = load_config(project / "deploy.toml")
    env, revision = config.environment("sandbox"), current_revision(project)
    stages = ("register-taskdef", "roll-service", "wait-healthy")
    uri = "127.0.0.1:5000/car-rental-backend"
    assert gates(planner.app_chain_plan(config, env, revision, stages, repository_uri=uri)) == []  # off by default
    on = gated(config, release=True)
    plan = planner.app_chain_plan(on, on.environment("sandbox"), revision, stages, repository_uri=uri)
    assert [s.name for s in plan.steps] == ["register-taskdef", "scan-gate", "release", "roll-service", "wait-healthy"]
    (gate,) = gates(plan)
    assert gate.judge == ImageJudge(
        "car-rental-backend", revision.tag, "HIGH", ("CVE-2023-4911",), 300, env.poll_seconds, "sandbox", "deploys", 0
    )
    assert not gate.by_stack
    assert auto.target_of(gate, env) == f"car-rental-backend:{revision.tag}"
    # a chain that does not roll the service judges nothing
    assert gates(planner.app_chain_plan(on, env, revision, ("build", "push"), repository_uri=uri)) == []


def test_a_new_image_through_the_fargate_stack_is_judged_first(with_lambdas: Path) -> None:  # noqa: F811
    config = gated(load_config(with_lambdas / "deploy.toml"), release=True)
    env, revision = config.environment("sandbox"), current_revision(with_lambdas)
    full = planner.full_plan(config, env, revision, repository_uri="")
    assert names(full.steps[2]) == ["CarRentalApiStack", "fargate:scan-gate,release,deploy-stack"]
    (gate,) = gates(full)
    assert gate.by_stack and gate.judge.tag == revision.tag

    def plan(stack: str, new_image: bool) -> list[str]:
        made = planner.deploy_stack_plan(config, env, stack, image_tag="abc", code_keys={}, new_image=new_image)
        return [s.name for s in made.steps]

    assert plan("CarRentalFargateStack", True) == ["synth", "scan-gate", "release", "deploy-stack", "smoke"]
    assert plan("CarRentalFargateStack", False) == ["synth", "deploy-stack", "smoke"]

    both = auto.auto_plan(
        config,
        env,
        revision,
        change_set(("backend/app/routes.py", "app"), ("cdk/stacks/fargate_stack.py", "stack:fargate")),
        INPUTS,
    )
    steps = shape(both, env)
    image = f"car-rental-backend:{revision.tag}"
    assert steps.index(("scan-gate", image)) < steps.index(("deploy-stack", "CarRentalFargateStack"))
    assert [g.by_stack for g in gates(both)] == [True, False]  # the app chain's, after, finds it live and skips


def basic(name: str, severity: str, package: str = "", version: str = "") -> dict[str, object]:
    attributes = [{"key": "package_name", "value": package}] if package else []
    attributes += [{"key": "package_version", "value": version}] if version else []
    return {"name": name, "severity": severity, "uri": "https://example.invalid", "attributes": attributes}


def test_findings_are_read_from_basic_and_enhanced_scans() -> None:
    page = {
        "imageScanFindings": {
            "findings": [basic("CVE-1", "HIGH", "openssl", "3.0.11"), basic("CVE-2", "LOW")],
            "enhancedFindings": [
                {
                    "severity": "CRITICAL",
                    "status": "SUPPRESSED",
                    "packageVulnerabilityDetails": {
                        "vulnerabilityId": "CVE-3",
                        "vulnerablePackages": [{"name": "glibc", "version": "2.36"}],
                    },
                },
                {"severity": "MEDIUM", "title": "a finding without an id", "findingArn": "arn:f"},
            ],
        }
    }
    assert findings_of(page) == [
        Finding("CVE-1", "HIGH", "openssl 3.0.11"),
        Finding("CVE-2", "LOW"),
        Finding("CVE-3", "CRITICAL", "glibc 2.36", "SUPPRESSED"),
        Finding("a finding without an id", "MEDIUM"),
    ]
    assert findings_of({}) == [] and findings_of({"imageScanStatus": {"status": "IN_PROGRESS"}}) == []
    assert str(Finding("CVE-1", "HIGH", "openssl 3.0.11")) == "CVE-1 (HIGH, openssl 3.0.11)"
    assert str(Finding("CVE-2", "LOW")) == "CVE-2 (LOW)"


def test_the_verdict_stops_at_the_severity_and_above_unless_accepted() -> None:
    found = [
        Finding("CVE-4", "HIGH"),
        Finding("CVE-1", "CRITICAL"),
        Finding("CVE-2", "MEDIUM"),
        Finding("CVE-3", "UNDEFINED"),
        Finding("CVE-5", "HIGH", status="CLOSED"),
        Finding("CVE-6", "UNTRIAGED"),
    ]
    counts = {"CRITICAL": 1, "HIGH": 2, "MEDIUM": 1, "UNDEFINED": 1, "UNTRIAGED": 1}
    verdict = judge(found, counts, "HIGH", ["cve-4 "])
    assert [f.name for f in verdict.blocking] == ["CVE-1"]  # most severe first; CVE-4 accepted, CVE-5 closed
    assert [f.name for f in verdict.accepted] == ["CVE-4"] and not verdict.passed
    assert verdict.counted() == "1 CRITICAL, 2 HIGH, 1 MEDIUM, 1 UNDEFINED, 1 UNTRIAGED"
    assert [f.name for f in judge(found, counts, "MEDIUM", []).blocking] == ["CVE-1", "CVE-4", "CVE-2"]
    assert judge(found, counts, "CRITICAL", ["CVE-1"]).passed
    assert [f.name for f in judge(found, counts, "INFORMATIONAL", []).blocking] == ["CVE-1", "CVE-4", "CVE-2"]
    assert judge([], {}, "LOW", []).counted() == "no findings"
    assert rank("CRITICAL") == 4 and rank("INFORMATIONAL") == 0 and rank("UNDEFINED") == rank("UNTRIAGED") == -1


def test_a_refusal_names_the_first_ten_findings_and_how_many_more() -> None:
    found = [Finding(f"CVE-{n:02d}", "HIGH", "pkg 1") for n in range(12)]
    message = refusal("car-rental-backend:abc", "HIGH", judge(found, {"HIGH": 12}, "HIGH", []))
    lines = message.splitlines()
    assert lines[0] == (
        "ECR's scan of car-rental-backend:abc has 12 finding(s) of HIGH or worse that deploy.toml does not accept "
        "(12 HIGH in all):"
    )
    assert lines[1:11] == [f"  CVE-{n:02d} (HIGH, pkg 1)" for n in range(10)]
    assert lines[11:] == ["  ... and 2 more"]


def test_the_image_scan_table_is_checked() -> None:
    config = parse_config(raw(), Path("deploy.toml"))
    assert not config.environment("dev").image_scan.on  # off unless set
    data = raw()
    data["environments"]["dev"]["image_scan"] = {"severity": "HIGH", "ignore": ["CVE-2023-4911"]}
    scan = parse_config(data, Path("deploy.toml")).environment("dev").image_scan
    assert (scan.on, scan.severity, scan.ignore, scan.timeout, scan.rescan_after_days) == (
        True,
        "HIGH",
        ("CVE-2023-4911",),
        600.0,
        0.0,
    )
    for bad, message in (
        ({"severity": "high"}, r"image_scan\.severity must be one of CRITICAL, HIGH, MEDIUM, LOW, INFORMATIONAL"),
        ({"severity": "HIGH", "timeout": 0}, r"image_scan\.timeout must be more than 0 seconds, not 0"),
        ({"severity": "HIGH", "rescan_after_days": -1}, r"image_scan\.rescan_after_days must be from 0 .* to 3650"),
        ({"severity": "HIGH", "ignore": [" "]}, r"image_scan\.ignore holds an empty name"),
        ({"severity": "HIGH", "ignore": "CVE-1"}, r"'environments\.dev\.image_scan\.ignore' must be a list of strings"),
        ({"level": "HIGH"}, r"unknown key 'environments\.dev\.image_scan\.level'"),
    ):
        data["environments"]["dev"]["image_scan"] = bad
        with pytest.raises(ConfigError, match=message) as refused:
            parse_config(data, Path("deploy.toml"))
        assert refused.value.exit_code == 2


# -- the sandbox's scans -----------------------------------------------------------------------------------------


def test_the_sandbox_scans_in_progress_then_complete_with_the_rehearsed_findings() -> None:
    scans = ImageScans()
    start = datetime(2026, 12, 1, 8, tzinfo=UTC)
    finding = {"name": "CVE-2026-1", "severity": "HIGH", "package": "openssl", "version": "3.0.11"}
    record = scans.start("repo", "sha256:" + "a" * 64, (finding,), 2.0, now=start)
    image = {"imageDigest": "sha256:" + "a" * 64, "imageTag": "abc"}
    early = scan_answer("1", "repo", image, record, start + timedelta(seconds=1))
    assert early["imageScanStatus"]["status"] == "IN_PROGRESS" and "imageScanFindings" not in early
    done = scan_answer("1", "repo", image, record, start + timedelta(seconds=2))
    assert done["imageScanStatus"]["status"] == "COMPLETE"
    assert done["imageScanFindings"]["findingSeverityCounts"] == {"HIGH": 1}
    assert findings_of(done) == [Finding("CVE-2026-1", "HIGH", "openssl 3.0.11")]  # as deploykit reads ECR's
    # StartImageScan: once a day
    with pytest.raises(LimitExceededException, match="scan quota"):
        scans.start("repo", "sha256:" + "a" * 64, (), 0, once_a_day=True, now=start + timedelta(hours=1))
    again = scans.start("repo", "sha256:" + "a" * 64, (), 0, once_a_day=True, now=start + timedelta(days=1))
    assert scans.get("repo", "sha256:" + "a" * 64) == again == ScanRecord(start + timedelta(days=1), 0, ())
    scans.forget("repo")
    assert scans.get("repo", "sha256:" + "a" * 64) is None


def test_the_faults_route_rehearses_scans_lists_them_and_clears_them() -> None:
    faults = Faults()
    finding = {"name": "CVE-2026-1", "severity": "HIGH", "package": "openssl"}
    code, listed = faults.control("POST", json.dumps({"scan_findings": {"findings": [finding], "seconds": 2}}).encode())
    assert code == 200 and listed["scan_findings"] == {"findings": [finding], "seconds": 2.0}
    assert faults.scan_findings == (finding,) and faults.scan_seconds == 2.0
    assert faults.describe() == "ECR's scans find CVE-2026-1 (HIGH), in 2s; clear: inv sandbox.throttle --clear"
    for bad, says in [
        ({"scan_findings": {"findings": [{"name": "CVE-1", "severity": "SEVERE"}]}}, "severity must be one of"),
        ({"scan_findings": {"findings": [{"name": "", "severity": "LOW"}]}}, "name not empty"),
        ({"scan_findings": {"findings": [{"name": "CVE-1", "severity": "LOW", "cvss": 9}]}}, "is not a finding"),
        ({"scan_findings": {"findings": "CVE-1"}}, "must be a list of findings"),
        ({"scan_findings": {"seconds": 601}}, "from 0 to 600"),
        ({"scan_findings": {"findings": [], "seconds": 0}, "lambda_update": {"seconds": -1}}, "from 0 to 300"),
        ({"scan_findings": []}, "is not a scan rehearsal"),
    ]:
        code, answer = faults.control("POST", json.dumps(bad).encode())
        assert code == 400 and says in answer["error"], answer
    assert faults.scan_findings == (finding,)  # refused: unchanged (all of a request or none of it)
    assert faults.control("POST", json.dumps({"scan_findings": {"findings": []}}).encode())[1] == {"throttle": []}
    faults.rehearse_scans([finding], 1)
    assert faults.control("DELETE", b"") == (200, {"cleared": 1, "throttle": []})
    assert faults.scan_findings == () and faults.scan_seconds == 0.0


def test_the_rehearsal_task_reads_findings_as_name_severity_package_version() -> None:
    from tasks import _finding

    assert _finding("CVE-2026-1:high:openssl@3.0.11") == {
        "name": "CVE-2026-1",
        "severity": "HIGH",
        "package": "openssl",
        "version": "3.0.11",
    }
    assert _finding("CVE-2026-2:LOW") == {"name": "CVE-2026-2", "severity": "LOW"}
    for bad in ("CVE-2026-1", "CVE-2026-1:SEVERE", ":HIGH"):
        with pytest.raises(UsageError, match="is not NAME:SEVERITY"):
            _finding(bad)
