"""cdk-nag's AwsSolutions pack: no unacknowledged finding, every acknowledgement reasoned and still needed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from aws_cdk import App, Stack
from aws_cdk import aws_s3 as s3
from cdk_helpers import STACK_KEYS, Synthesized, load_app_module
from stacks.common import nag

ACKNOWLEDGED_PREFIX = "Annotation::AwsSolutions-"

# Every acknowledged finding, by construct. Adding one is a decision a reviewer should see in the diff.
EXPECTED_ACKNOWLEDGEMENTS = {
    ("CarRentalRegistryStack/ArtifactsBucket", "AwsSolutions-S1"),
    (
        "CarRentalDataStack/AppDataAccessPolicy",
        "AwsSolutions-IAM5[Resource::<KycDocumentsBucketBD09E66F.Arn>/kyc/*]",
    ),
    ("CarRentalAuthStack/UserPool", "AwsSolutions-COG2"),
    ("CarRentalAuthStack/UserPool", "AwsSolutions-COG8"),
    ("CarRentalFargateStack/LoadBalancerSecurityGroup", "AwsSolutions-EC23"),
    ("CarRentalFargateStack/LoadBalancer", "AwsSolutions-ELB2"),
    ("CarRentalFargateStack/TaskDefinition", "AwsSolutions-ECS2"),
    ("CarRentalFargateStack/TaskDefinition", "AwsSolutions-IAM5[Resource::*]"),
    ("CarRentalApiStack/Api", "AwsSolutions-APIG3"),
    (
        "CarRentalApiStack/Api",
        "AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AmazonAPIGatewayPushToCloudWatchLogs]",
    ),
    ("CarRentalApiStack/LoginHandler", "AwsSolutions-L1"),
    ("CarRentalApiStack/HealthHandler", "AwsSolutions-L1"),
    ("CarRentalApiStack/Api/Default/health/GET", "AwsSolutions-APIG4"),
    ("CarRentalApiStack/Api/Default/health/GET", "AwsSolutions-COG4"),
    ("CarRentalApiStack/Api/Default/auth/login/POST", "AwsSolutions-APIG4"),
    ("CarRentalApiStack/Api/Default/auth/login/POST", "AwsSolutions-COG4"),
}


def acknowledgements(synthesized: Synthesized) -> dict[tuple[str, str], str]:
    """(construct path, rule id) -> reason, for every AwsSolutions rule acknowledged in the app."""
    found: dict[tuple[str, str], str] = {}
    for key in STACK_KEYS:
        for path, entries in synthesized.metadata(key).items():
            for entry in entries:
                if entry["type"] != "aws:cdk:acknowledged-rules":
                    continue
                for rule, reason in entry["data"].items():
                    if rule.startswith(ACKNOWLEDGED_PREFIX):
                        found[(path.lstrip("/"), rule.removeprefix("Annotation::"))] = reason
    return found


def violations(outdir: Path) -> set[tuple[str, str]]:
    """(construct path, rule id) of every AwsSolutions finding in a validation report."""
    report = json.loads((outdir / "validation-report.json").read_text())
    return {
        (construct["constructPath"], violation["ruleName"])
        for plugin in report["pluginReports"]
        if plugin["pluginName"] == "AwsSolutions"
        for violation in plugin["violations"]
        for construct in violation["violatingConstructs"]
    }


def test_no_unacknowledged_findings(synthesized: Synthesized) -> None:
    # An unacknowledged error would already have failed synthesis; this also catches warnings.
    assert violations(synthesized.outdir) == set()


def test_the_acknowledged_findings(synthesized: Synthesized) -> None:
    assert set(acknowledgements(synthesized)) == EXPECTED_ACKNOWLEDGEMENTS


def test_every_acknowledgement_has_a_written_reason(synthesized: Synthesized) -> None:
    for (path, rule), reason in acknowledgements(synthesized).items():
        assert len(reason.strip()) >= nag.MIN_REASON_LENGTH, f"{path} {rule}: {reason!r}"
        assert reason.strip()[-1] in ".)", f"{path} {rule}: write the reason as a sentence"


def test_every_acknowledgement_silences_a_real_finding(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The same app with no acknowledgements at all: each acknowledged finding must show up (no stale ones).
    module = load_app_module()
    for name in ("registry_stack", "data_stack", "auth_stack", "fargate_stack", "api_stack", "common.functions"):
        monkeypatch.setattr(f"stacks.{name}.suppress", lambda *args, **kwargs: None)
    built = module.build_app(outdir=tmp_path, context={"@aws-cdk/core:failSynthOnValidationErrors": False}, environ={})
    built.app.synth()
    found = violations(tmp_path)
    for path, rule in EXPECTED_ACKNOWLEDGEMENTS:
        assert [p for p, r in found if r == rule and (p == path or p.startswith(path + "/"))], (
            f"{rule} on {path} is acknowledged but cdk-nag no longer reports it: remove the acknowledgement"
        )


def test_nag_fails_synthesis_on_a_finding(tmp_path: Path) -> None:
    module = load_app_module()
    app = App(outdir=str(tmp_path), analytics_reporting=False, builtin_cloud_formation_validation=False)
    stack = Stack(app, "Insecure")
    s3.Bucket(stack, "Open")  # no TLS-only policy, no access logs
    module.apply_nag(app)
    with pytest.raises(Exception, match="AwsSolutions-S10"):
        app.synth()


def test_suppress_demands_a_reason() -> None:
    app = App()
    with pytest.raises(ValueError, match="must say why"):
        nag.suppress(app, "AwsSolutions-S1", "not needed")
    with pytest.raises(ValueError, match="bare AwsSolutions rule id"):
        nag.suppress(app, "AwsSolutions-IAM5[Resource::*]", "x" * 50)
