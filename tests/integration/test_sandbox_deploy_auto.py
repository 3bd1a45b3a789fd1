"""deploy.auto on a private sandbox, from a clean deploy.full: each committed change runs just its chain and the new
code answers; a docs-only commit deploys nothing; --dry-run --json prints the plan CI reads."""

from __future__ import annotations

import dataclasses
import json
import re
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import docker
import pytest

from deploykit import commands, lookups, metrics
from deploykit.app_chain import PromoteImage
from deploykit.aws import AwsFactory
from deploykit.clock import FakeClock
from deploykit.config import load_config
from deploykit.endpoints import Endpoints
from deploykit.errors import StepFailed, UsageError
from deploykit.plan import Plan, RunReport, all_records
from sandbox import lifecycle
from sandbox.settings import load_settings
from tests.conftest import git, quiet_runtime, sandbox_client
from tests.integration.sandbox_support import deployed_sandbox_project, version_of

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("base_image")]


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory, docker_engine: docker.DockerClient) -> Iterator[Path]:
    with deployed_sandbox_project(tmp_path_factory.mktemp("auto")) as project:
        yield project


def auto(project: Path, **kwargs: object) -> tuple[RunReport | None, str, float]:
    runtime = quiet_runtime(project)
    started = time.monotonic()
    report = commands.deploy_auto(runtime=runtime, **kwargs)  # type: ignore[arg-type]
    return report, runtime.stderr.getvalue() + runtime.stdout.getvalue(), time.monotonic() - started  # type: ignore[attr-defined]


def no_docker() -> object:
    raise AssertionError("this needs no Docker engine")


def ran(report: RunReport | None) -> set[str]:
    """The steps that changed something (sub-steps of groups, and of groups in groups, included)."""
    assert report is not None and report.ok, report and report.error
    return {record.step for record in all_records(report.records) if not record.children and record.status == "done"}


def endpoints(project: Path) -> Endpoints:
    return commands.endpoints(runtime=quiet_runtime(project))


def test_right_after_deploy_full_there_is_nothing_to_deploy(project: Path) -> None:
    report, out, seconds = auto(project)
    assert report is None and "✅ nothing to deploy" in out, out
    print(f"\ndeploy.auto with nothing changed: {seconds:.2f}s")


def test_a_backend_change_runs_the_app_chain_alone(project: Path) -> None:
    routes = project / "backend" / "app" / "fleet.py"
    routes.write_text(routes.read_text() + "\n# a change deployed by deploy.auto\n")
    git(project, "commit", "-qam", "backend: a change")
    head = git(project, "rev-parse", "--short=12", "HEAD").strip()

    runtime = quiet_runtime(project)
    commands.deploy_auto(dry_run=True, as_json=True, runtime=runtime)
    plan = json.loads(runtime.stdout.getvalue())  # type: ignore[attr-defined]
    assert list(plan) == ["environment", "base", "head", "changes", "steps"]
    assert plan["changes"] == [{"path": "backend/app/fleet.py", "component": "app", "kind": "app"}]
    assert [s["name"] for s in plan["steps"]] == [
        "base-image",
        "build",
        "push",
        "register-taskdef",
        "roll-service",
        "wait-healthy",
        "smoke",
    ]

    report, out, seconds = auto(project)
    assert ran(report) == {"build", "push", "register-taskdef", "roll-service", "wait-healthy", "smoke"}
    assert "📱 App code: backend/app/fleet.py → inv deploy.app" in out
    assert f"📝 1 commit behind these changes, newest first:\n   {head} backend: a change · t · app" in out
    assert version_of(endpoints(project).alb_url.rstrip("/")) == git(project, "rev-parse", "HEAD").strip()
    assert head in out
    listing = quiet_runtime(project)
    [record] = commands.history_list(limit=1, commits=True, runtime=listing)
    assert record.commits == [{"sha": head, "author": "t", "subject": "backend: a change"}]  # what went live
    assert f"took 1 commit live:\n  {head} backend: a change · t\n" in listing.stderr.getvalue()  # type: ignore[attr-defined]
    print(f"\ndeploy.auto after one backend file: {seconds:.2f}s")


def test_a_lambda_change_runs_the_fast_path_alone(project: Path) -> None:
    handler = project / "lambda" / "health_handler" / "handler.py"
    text = handler.read_text()
    marker = 'body = {"status": "ok", '
    assert marker in text
    handler.write_text(text.replace(marker, marker + '"release": "auto-1", ', 1))
    git(project, "commit", "-qam", "lambda: health says its release")
    cfn = sandbox_client(project, "cloudformation")
    before = {s["StackName"]: s.get("LastUpdatedTime") for s in cfn.describe_stacks()["Stacks"]}

    report, out, seconds = auto(project)
    assert ran(report) == {"upload-lambda", "update-code", "publish-version", "move-alias", "smoke"}
    assert "🔧 Lambda:   lambda/health_handler/handler.py → inv deploy.lambda health_handler" in out
    with urllib.request.urlopen(endpoints(project).api_health_url, timeout=10) as answer:
        assert json.loads(answer.read())["release"] == "auto-1"
    after = {s["StackName"]: s.get("LastUpdatedTime") for s in cfn.describe_stacks()["Stacks"]}
    assert after == before  # no CloudFormation
    print(f"\ndeploy.auto after one Lambda handler: {seconds:.2f}s")


def test_a_stack_setting_runs_that_stack_alone(project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source = project / "cdk" / "stacks" / "fargate_stack.py"
    delay = "DEREGISTRATION_DELAY = Duration.seconds(5)"
    assert delay in source.read_text()
    source.write_text(source.read_text().replace(delay, "DEREGISTRATION_DELAY = Duration.seconds(4)"))
    git(project, "commit", "-qam", "fargate: drain for 4 s")

    # inv diff first: the change set it would make, never executed
    runtime = quiet_runtime(project)
    commands.diff(as_json=True, runtime=runtime)
    preview = json.loads(runtime.stdout.getvalue())  # type: ignore[attr-defined]
    assert preview["changes"] == [
        {"path": "cdk/stacks/fargate_stack.py", "component": "stack:fargate", "kind": "stack"}
    ]
    [commit] = preview["commits"]  # what the deploy takes live
    assert (commit["subject"], commit["components"]) == ("fargate: drain for 4 s", ["stack:fargate"])
    assert commit["sha"] == git(project, "rev-parse", "HEAD").strip()
    changed = preview["stacks"]["CarRentalFargateStack"]["changes"]
    group = [c for c in changed if c["type"] == "AWS::ElasticLoadBalancingV2::TargetGroup"]
    assert group and group[0]["action"] == "Modify", changed
    assert "🐳 CarRentalFargateStack (" in runtime.stderr.getvalue()  # type: ignore[attr-defined]
    # the same for a pull request's comment: the stack's table as the terminal shows it, in a code block
    runtime = quiet_runtime(project)
    commands.diff(as_markdown=True, runtime=runtime)
    review = runtime.stdout.getvalue()  # type: ignore[attr-defined]
    assert review.startswith("### 🔍 deploykit: what `inv deploy.auto --env sandbox` would deploy to `sandbox`\n")
    assert "**1 component changed**: `stack:fargate`" in review
    assert "```text\n🐳 Stack:    cdk/stacks/fargate_stack.py → inv deploy.stack CarRentalFargateStack\n" in review
    assert "#### Commits going live (1)\n\n- `" in review and "fargate: drain for 4 s · t · `stack:fargate`" in review
    assert "📝" not in review  # listed apart, not in the analysis' block too
    table = review.split("#### 🐳 CarRentalFargateStack · `")[1]
    assert "\n  ↳ TargetGroupAttributes[0].Value: 5 → 4\n" in table.split("```text\n")[1].split("```")[0], review

    page = tmp_path / "job-summary.md"  # a CI job's page: GitHub Actions names its file so
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(page))
    report, out, seconds = auto(project)
    monkeypatch.delenv("GITHUB_STEP_SUMMARY")
    assert report is not None
    stacks = [r for r in all_records(report.records) if r.step == "deploy-stack"]
    assert [(r.detail.split(":")[0], r.status) for r in stacks] == [("CarRentalFargateStack", "done")]
    assert not ran(report) & {"build", "push", "update-code", "register-taskdef"}
    assert "🐳 Stack:    cdk/stacks/fargate_stack.py → inv deploy.stack CarRentalFargateStack" in out
    elbv2 = sandbox_client(project, "elbv2")
    attributes = elbv2.describe_target_group_attributes(TargetGroupArn=endpoints(project).target_group_arn)
    values = {a["Key"]: a["Value"] for a in attributes["Attributes"]}
    assert values["deregistration_delay.timeout_seconds"] == "4"
    print(f"\ndeploy.auto after one stack setting: {seconds:.2f}s")
    # the history keeps what the update changed, value by value, and shows it for the stack
    runtime = quiet_runtime(project)
    [last] = commands.history_list(component="stack:fargate", limit=1, runtime=runtime)
    (step,) = [s for s in last.steps if s["step"] == "deploy-stack"]
    assert [line for line in step["changes"] if "TargetGroup" in line] == [
        f"{group[0]['logical_id']}: TargetGroupAttributes[0].Value: 5 → 4"
    ], step
    said = runtime.stderr.getvalue()  # type: ignore[attr-defined]
    assert f"  ↳ {group[0]['logical_id']}: TargetGroupAttributes[0].Value: 5 → 4\n" in said
    # and the job's page has the run: its steps, and what the update changed
    summary = page.read_text(encoding="utf-8")
    assert summary.startswith("### ✅ `sandbox` · deploy.auto by "), summary
    assert re.search(
        r"^\| (↳ )?deploy-stack \| ✅ done \| [\d.]+ s \| CarRentalFargateStack: updated in ", summary, re.M
    )
    assert f"- {group[0]['logical_id']}: TargetGroupAttributes\\[0\\].Value: 5 → 4\n" in summary, summary


def test_a_stack_goes_back_to_its_previous_commit_keeping_what_runs(project: Path) -> None:
    """After the stack setting above (drain 4 s): `inv rollback --component stack:fargate` deploys the stack as the
    commit of its previous deploy (deploy.full's) deployed it, drain 5 s: the template that deploy kept, not
    synthesized again, with the image that runs now; the history records it; the next deploy.auto deploys HEAD's
    stack again."""
    ecs = sandbox_client(project, "ecs")
    env = load_config(project / "deploy.toml").environment()

    def drain() -> str:
        return drain_seconds(project)

    def running() -> str:
        return str(ecs.describe_services(cluster=env.cluster, services=[env.service])["services"][0]["taskDefinition"])

    assert drain() == "4"
    revision, head = running(), git(project, "rev-parse", "--short=12", "HEAD").strip()
    # a dry run shows the change CloudFormation would make, and makes none
    runtime = quiet_runtime(project)
    assert commands.rollback(component="stack:fargate", dry_run=True, runtime=runtime) is None
    said = runtime.stderr.getvalue()  # type: ignore[attr-defined]
    assert "🐳 CarRentalFargateStack (UPDATE_COMPLETE)" in said, said
    lines = said.splitlines()
    assert [line.split()[1:3] for line in lines if "TargetGroup" in line and "↳" not in line] == [
        ["AWS::ElasticLoadBalancingV2::TargetGroup", "Modify"]
    ]
    # and the value it changes: the drain, 4 s back to 5
    assert [line for line in lines if "↳" in line] == ["  ↳ TargetGroupAttributes[0].Value: 4 → 5"], lines
    assert "dry run: nothing is changed" in runtime.stdout.getvalue() + said  # type: ignore[attr-defined]
    assert drain() == "4"
    runtime = quiet_runtime(project)
    report = commands.rollback(component="stack:fargate", runtime=runtime)
    assert report is not None and report.ok, report and report.error
    assert [(r.step, r.status) for r in report.records] == [("deploy-stack", "done"), ("smoke", "done")]
    said = runtime.stderr.getvalue()  # type: ignore[attr-defined]
    back_to = report.plan.deploys[0][1]
    assert f"⏪ rollback stack:fargate in sandbox: {head} → {back_to} [history: deploy.full at " in said
    assert drain() == "5"
    assert running() == revision  # what runs was kept: the same task definition, no rollout
    assert f"CarRentalFargateStack at {back_to}: the template it was deployed with then, kept in sandbox" in said
    assert f"⛔ HEAD ({head}) still has stack:fargate as it was at {head} (taken off by rollback " in said
    assert (project / "cdk.out" / f"sandbox@{back_to}.kept" / "CarRentalFargateStack.template.json").is_file()
    assert not (project / "cdk.out" / f"sandbox@{back_to}").exists()  # nothing synthesized
    assert not list((project / "cdk.out").glob(f".source-{back_to}*"))  # no copy of that commit's cdk/ made
    assert git(project, "status", "--porcelain") == ""  # the work tree was never touched
    listing = quiet_runtime(project)
    commands.history_list(limit=1, as_json=True, runtime=listing)
    listed = json.loads(listing.stdout.getvalue())  # type: ignore[attr-defined]
    assert listed["live"]["stack:fargate"]["sha"] == back_to
    assert listed["deployments"][0]["command"] == f"rollback stack:fargate → {back_to}"

    # HEAD still has the setting the rollback took the stack off: inv diff says so, deploy.auto refuses to bring
    # it back unasked
    runtime = quiet_runtime(project)
    commands.diff(as_json=True, runtime=runtime)
    assert list(json.loads(runtime.stdout.getvalue())["rolled_back"]) == ["stack:fargate"]  # type: ignore[attr-defined]
    assert "⛔ stack:fargate as it was at " in runtime.stderr.getvalue()  # type: ignore[attr-defined]
    with pytest.raises(
        UsageError, match="would bring back what a rollback took sandbox off: stack:fargate as it was at "
    ) as no:
        auto(project)
    assert no.value.exit_code == 2 and "--allow-rolled-back" in (no.value.next_step or "") and drain() == "5"
    again, _, _ = auto(project, allow_rolled_back=True)
    assert again is not None
    stacks = [r for r in all_records(again.records) if r.step == "deploy-stack"]
    assert [(r.detail.split(":")[0], r.status) for r in stacks] == [("CarRentalFargateStack", "done")]
    assert drain() == "4" and running() == revision


def test_a_docs_only_commit_deploys_nothing_and_history_lists_each_run(project: Path) -> None:
    (project / "NOTES.md").write_text("# notes\n")
    git(project, "add", "NOTES.md")
    git(project, "commit", "-qm", "docs")
    report, out, _seconds = auto(project)
    assert report is None and "✅ nothing to deploy" in out and "NOTES.md" in out
    runtime = quiet_runtime(project)
    commands.deploy_auto(as_json=True, runtime=runtime)
    printed = json.loads(runtime.stdout.getvalue())  # type: ignore[attr-defined]
    assert (printed["env"], printed["title"], printed["ok"], printed["steps"]) == ("sandbox", "deploy.auto", True, [])
    runtime = quiet_runtime(project)
    records = commands.history_list(runtime=runtime)
    back = records[1].components["stack:fargate"]
    assert [r.command for r in records[:6]] == [
        "deploy.auto",
        f"rollback stack:fargate → {back}",
        "deploy.auto",
        "deploy.auto",
        "deploy.auto",
        "deploy.full",
    ]
    assert all(r.ok for r in records[:6])
    # each run lists what it deployed; the rest is live at its commit too, and counted as unchanged (all but the
    # app, whose image tag says what runs)
    assert [set(r.deployed) for r in records[:5]] == [
        {"stack:fargate"},
        {"stack:fargate"},
        {"stack:fargate"},
        {"lambda:health_handler"},
        {"app"},
    ]
    assert all(set(r.components) | {"app"} == set(records[5].components) for r in records[2:5])


def test_the_report_and_the_deploy_dashboard_see_each_run(project: Path) -> None:
    """After deploy.full, the three one-chain deploys and the stack's rollback above: inv report counts them by chain,
    and the registry stack's dashboard draws every metric those runs put (the contract of deploykit/metrics.py with
    cdk/stacks/common/deploy_dashboard.py)."""
    runtime = quiet_runtime(project)
    made = commands.deployment_report(since="1d", as_json=True, runtime=runtime)
    data = json.loads(runtime.stdout.getvalue())  # type: ignore[attr-defined]
    assert len(made.records) >= 4 and data["failed"] == 0
    assert {"app", "lambda", "stack", "full"} <= {c["chain"] for c in data["chains"]}
    assert data["dashboard"] == "car-rental-sandbox-deploys"
    assert "the same over time: CloudWatch dashboard car-rental-sandbox-deploys" in runtime.stderr.getvalue()  # type: ignore[attr-defined]

    cloudwatch = sandbox_client(project, "cloudwatch")
    body = json.loads(cloudwatch.get_dashboard(DashboardName=data["dashboard"])["DashboardBody"])
    drawn = set()
    for widget in body["widgets"]:
        for line in widget.get("properties", {}).get("metrics", []):
            names = [part for part in line if isinstance(part, str)]
            drawn.add((names[0], names[1], tuple(sorted(zip(names[2::2], names[3::2], strict=True)))))
    put = {
        (metrics.NAMESPACE, m["MetricName"], tuple(sorted((d["Name"], d["Value"]) for d in m["Dimensions"])))
        for m in cloudwatch.list_metrics(Namespace=metrics.NAMESPACE)["Metrics"]
    }
    assert ("deploykit", "DeploySeconds", (("Chain", "app"), ("Environment", "sandbox"))) in put
    # every figure these runs put is on the dashboard, but the base image's build (once a machine)
    assert {p for p in put if p not in drawn} <= {
        ("deploykit", "StepSeconds", (("Environment", "sandbox"), ("Step", "base-image")))
    }


def drain_seconds(project: Path) -> str:
    """The deregistration delay of the app's target group (a setting of the Fargate stack)."""
    group = endpoints(project).target_group_arn
    attributes = sandbox_client(project, "elbv2").describe_target_group_attributes(TargetGroupArn=group)["Attributes"]
    return str(next(a["Value"] for a in attributes if a["Key"] == "deregistration_delay.timeout_seconds"))


PRICING = '''"""GET /pricing: the daily rate of each car class."""

import json


def handler(event, context):
    body = {"economy": 39, "suv": 79}
    return {"statusCode": 200, "headers": {"content-type": "application/json"}, "body": json.dumps(body)}
'''
LAST_ROUTE = """        description="Cheap check of the API stage; reports the version the alias serves",
    ),
"""
PRICING_ROUTE = (
    '    LambdaRoute(folder="pricing_handler", method="GET", path="/pricing", description="Daily rate by class"),\n'
)


def test_a_function_added_to_the_api_stack_is_found_and_its_removal_leaves_the_live_record(project: Path) -> None:
    folder = project / "lambda" / "pricing_handler"
    folder.mkdir()
    (folder / "handler.py").write_text(PRICING)
    api_stack = project / "cdk" / "stacks" / "api_stack.py"
    original = api_stack.read_text()
    assert LAST_ROUTE in original
    api_stack.write_text(original.replace(LAST_ROUTE, LAST_ROUTE + PRICING_ROUTE))
    git(project, "add", "-A")
    git(project, "commit", "-qm", "lambda: pricing_handler behind GET /pricing")

    report, out, seconds = auto(project)  # the API stack creates it
    assert {"upload-lambda", "deploy-stack"} <= ran(report) and "update-code" not in ran(report)
    assert "lambda:pricing_handler (not deployed yet) → inv deploy.auto" in out
    found = endpoints(project)
    assert "pricing_handler" in found.functions and "pricing_handler" in found.aliases
    with urllib.request.urlopen(found.api_url + "pricing", timeout=10) as answer:
        assert json.loads(answer.read())["suv"] == 79
    print(f"\ndeploy.auto of a new function through the API stack: {seconds:.2f}s")

    # the run that added it is undone whole: the API stack as before it, which takes the function out
    runtime = quiet_runtime(project)
    undone = commands.rollback(run="last", runtime=runtime)
    assert undone is not None and undone.ok, undone and undone.error
    assert "lambda:pricing_handler taken out (the run added it)" in runtime.stderr.getvalue()  # type: ignore[attr-defined]
    assert "pricing_handler" not in endpoints(project).functions
    newest = commands.history_list(limit=1, runtime=quiet_runtime(project))[0]
    assert newest.removed == ["lambda:pricing_handler"] and list(newest.deployed) == ["stack:api"]
    report, out, _seconds = auto(project, allow_rolled_back=True)  # this checkout still has it: created again
    assert "lambda:pricing_handler (not deployed yet) → inv deploy.auto" in out and "deploy-stack" in ran(report)

    (folder / "handler.py").write_text(PRICING.replace('"suv": 79', '"suv": 89'))
    git(project, "commit", "-qam", "pricing: suv 89")
    # found now: the fast path, no CloudFormation; with a canary of one second, which no request reaches
    report, out, seconds = auto(project, canary="50", bake="1s")
    assert ran(report) == {"upload-lambda", "update-code", "publish-version", "canary", "move-alias", "smoke"}
    assert "pricing_handler: version 2 took 50% for 1s: 0 requests, 0 errors" in out and "no request reached" in out
    with urllib.request.urlopen(found.api_url + "pricing", timeout=10) as answer:
        assert json.loads(answer.read())["suv"] == 89
    print(f"deploy.auto of that function's code, with a canary of 1 s: {seconds:.2f}s")

    git(project, "rm", "-rq", "lambda/pricing_handler")
    api_stack.write_text(original)
    git(project, "commit", "-qam", "pricing_handler removed")
    report, _out, _seconds = auto(project)  # the API stack deletes it
    assert "deploy-stack" in ran(report)
    assert "pricing_handler" not in endpoints(project).functions
    newest = commands.history_list(limit=1, runtime=quiet_runtime(project))[0]
    assert newest.removed == ["lambda:pricing_handler"]

    # the run that took it out is undone whole: the API stack as before it, the function back, packaged as it ran
    runtime = quiet_runtime(project)
    undone = commands.rollback(run="last", runtime=runtime)
    assert undone is not None and undone.ok, undone and undone.error
    assert "lambda:pricing_handler back at " in runtime.stderr.getvalue()  # type: ignore[attr-defined]
    assert [r.step for r in undone.records][:2] == ["upload-lambda", "deploy-stack"]
    with urllib.request.urlopen(endpoints(project).api_url + "pricing", timeout=10) as answer:
        assert json.loads(answer.read())["suv"] == 89
    newest = commands.history_list(limit=1, runtime=quiet_runtime(project))[0]
    assert "lambda:pricing_handler" in newest.deployed and "stack:api" in newest.deployed
    report, _out, _seconds = auto(project, allow_rolled_back=True)  # this checkout has it no more: out again
    assert "pricing_handler" not in endpoints(project).functions


def test_a_lambda_update_that_takes_seconds_to_apply_is_waited_out_before_the_publish(project: Path) -> None:
    """As on AWS, where Lambda applies an update in 1-5 s and refuses a publish meanwhile: the sandbox's fault."""
    handler = project / "lambda" / "health_handler" / "handler.py"
    handler.write_text(
        handler.read_text().replace('"release": "auto-1", ', '"release": "auto-1", "applied": "slowly", ', 1)
    )
    git(project, "commit", "-qam", "lambda: a release Lambda takes a second to apply")
    settings = load_settings(project / "deploy.toml")
    lifecycle.slow_lambda_updates(settings, 1.0)
    try:
        report, _out, _seconds = auto(project)
    finally:
        lifecycle.slow_lambda_updates(settings, 0)
    assert {"update-code", "publish-version", "move-alias"} <= ran(report)
    assert report is not None
    update = next(r for group in report.records for r in (group, *group.children) if r.step == "update-code")
    assert update.seconds >= 1.0, update  # it waited for Successful; publishing earlier is refused (409)
    with urllib.request.urlopen(endpoints(project).api_health_url, timeout=10) as answer:
        assert json.loads(answer.read())["applied"] == "slowly"
    print(f"\nupdate-code with an update Lambda applies in 1 s: {update.seconds:.2f}s")


def test_two_deploys_of_one_commit_at_once_deploy_it_once_the_second_waiting_for_the_lock(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two CI jobs (or two laptops) run deploy.auto for the same commit at the same moment, each allowed to wait for
    the lock ($DEPLOYKIT_LOCK_WAIT): one deploys; the other, refused the lock, waits until it is free, then starts
    again, reads what is live anew and finds nothing left to deploy, where it would have deployed the change a
    second time from what it read before."""
    handler = project / "lambda" / "health_handler" / "handler.py"
    handler.write_text(handler.read_text().replace('"applied": "slowly", ', '"applied": "once", ', 1))
    git(project, "commit", "-qam", "lambda: deployed by two jobs at once")
    monkeypatch.setenv("DEPLOYKIT_LOCK_WAIT", "60s")
    settings = load_settings(project / "deploy.toml")
    lifecycle.slow_lambda_updates(settings, 2.0)  # the first deploy holds the lock a few seconds
    outcomes: dict[int, tuple[RunReport | None, str]] = {}

    def job(n: int) -> None:
        runtime = quiet_runtime(project)
        report = commands.until_unlocked(lambda: commands.deploy_auto(runtime=runtime), runtime)
        outcomes[n] = report, runtime.stderr.getvalue()  # type: ignore[attr-defined]

    started = time.monotonic()
    try:
        jobs = [threading.Thread(target=job, args=(n,)) for n in (1, 2)]
        for thread in jobs:
            thread.start()
        for thread in jobs:
            thread.join(timeout=120)
    finally:
        lifecycle.slow_lambda_updates(settings, 0)
    seconds = time.monotonic() - started
    deployed = [n for n, (report, _) in outcomes.items() if report is not None]
    assert len(outcomes) == 2 and len(deployed) == 1, outcomes
    assert {"update-code", "publish-version", "move-alias"} <= ran(outcomes[deployed[0]][0])
    [waited] = [said for n, (_, said) in outcomes.items() if n not in deployed]
    assert "⏳ waiting up to 1m00s for the lock of 'sandbox'" in waited, waited
    assert "🔓 the lock of 'sandbox' is free after" in waited and "✅ nothing to deploy" in waited, waited
    with urllib.request.urlopen(endpoints(project).api_health_url, timeout=10) as answer:
        assert json.loads(answer.read())["applied"] == "once"
    print(f"\ntwo deploy.auto of one commit at once, one waiting for the lock: {seconds:.2f}s")
    print("\n".join(line for line in waited.splitlines() if line.startswith(("⏳", "🔓", "✅"))))


def test_a_deploy_that_ran_between_the_reads_and_the_lock_makes_deploy_auto_start_again(project: Path) -> None:
    """deploy.auto reads what is live, then takes the lock: another deploy of the same change that runs from start to
    end in between (here: a deploy.lambda run just before the lock's PutObject) leaves its plan stale. Under the lock
    the live record is read again: the run stops after its upload (an artifact), before it updates the function,
    starts again, and finds nothing to deploy. Without this it would have published the code a second time."""
    handler = project / "lambda" / "health_handler" / "handler.py"
    handler.write_text(handler.read_text().replace('"applied": "once", ', '"applied": "raced", ', 1))
    git(project, "commit", "-qam", "lambda: deployed twice at nearly the same moment")
    raced: list[str] = []

    def aws_factory(env: Any) -> AwsFactory:
        aws = AwsFactory(env)

        def meanwhile(params: dict[str, Any], **_: Any) -> None:
            if str(params.get("Key", "")).startswith("deploykit/lock/") and not raced:
                raced.append("deploy.lambda")  # the other deploy, start to end, with credentials of its own
                # with its smoke: one without would leave the function unverified, for deploy.auto to deploy again
                other = commands.deploy_lambda("health_handler", runtime=quiet_runtime(project))
                assert other is not None and other.ok

        aws.client("s3").meta.events.register("before-parameter-build.s3.PutObject", meanwhile)
        return aws

    runtime = dataclasses.replace(quiet_runtime(project), aws_factory=aws_factory)
    lam = sandbox_client(project, "lambda")
    function = endpoints(project).functions["health_handler"]
    before = int(lam.get_alias(FunctionName=function, Name="live")["FunctionVersion"])

    report = commands.until_unlocked(lambda: commands.deploy_auto(runtime=runtime), runtime)

    said = runtime.stderr.getvalue()  # type: ignore[attr-defined]
    assert report is None and raced == ["deploy.lambda"], said
    assert "🔁 what is live in 'sandbox' changed since this command read it: another deploy finished meanwhile" in said
    assert "(lambda:health_handler " in said and "✅ nothing to deploy" in said, said
    assert int(lam.get_alias(FunctionName=function, Name="live")["FunctionVersion"]) == before + 1  # published once
    with urllib.request.urlopen(endpoints(project).api_health_url, timeout=10) as answer:
        assert json.loads(answer.read())["applied"] == "raced"
    print("\n" + "\n".join(line for line in said.splitlines() if line.startswith(("🔁", "⏹", "✅ nothing"))))


def test_an_uncommitted_edit_deploys_once_and_an_edit_elsewhere_then_deploys_nothing(project: Path) -> None:
    """What deploy.auto --watch does on each save: --allow-dirty deploys of the work tree."""
    handler = project / "lambda" / "health_handler" / "handler.py"
    committed = handler.read_text()
    marker = 'body = {"status": "ok", '
    handler.write_text(committed.replace(marker, marker + '"saved": "not committed", ', 1))
    report, _out, _seconds = auto(project, allow_dirty=True)
    assert {"update-code", "publish-version", "move-alias"} <= ran(report)
    with urllib.request.urlopen(endpoints(project).api_health_url, timeout=10) as answer:
        assert json.loads(answer.read())["saved"] == "not committed"

    (project / "SCRATCH.md").write_text("notes while working\n")  # a save that touches no component
    report, out, seconds = auto(project, allow_dirty=True)
    assert report is None, out
    assert "✅ nothing to deploy: sandbox runs what the work tree (HEAD" in out
    print(f"\ndeploy.auto --allow-dirty after an edit outside every component: {seconds:.2f}s")

    (project / "SCRATCH.md").unlink()
    handler.write_text(committed)
    report, _out, _seconds = auto(project)  # the live build is in no commit: the committed code goes back
    assert "move-alias" in ran(report)
    assert auto(project)[0] is None


def test_a_protected_environment_deploys_a_change_of_access_only_approved(project: Path) -> None:
    """The access guard end to end: inv diff marks the row and says how to approve, deploy.auto refuses and changes
    nothing, deploy.stack --approve-access deploys it, after which deploy.auto has nothing left to do."""
    toml = project / "deploy.toml"
    plain = toml.read_text()
    toml.write_text(plain.replace("[environments.sandbox]\n", "[environments.sandbox]\nprotected = true\n", 1))
    git(project, "commit", "-qam", "sandbox: protected")  # the toolkit's file: nothing to deploy by itself
    stack = project / "cdk" / "stacks" / "fargate_stack.py"
    statement = 'sid="UserPool", actions=["cognito-idp:DescribeUserPool"]'
    assert statement in stack.read_text()
    stack.write_text(
        stack.read_text().replace(
            statement, 'sid="UserPool", actions=["cognito-idp:DescribeUserPool", "cognito-idp:ListUsers"]'
        )
    )
    git(project, "commit", "-qam", "task role: ListUsers")
    try:
        runtime = quiet_runtime(project)
        commands.diff(as_json=True, runtime=runtime)
        changed = json.loads(runtime.stdout.getvalue())["stacks"]["CarRentalFargateStack"]["changes"]  # type: ignore[attr-defined]
        assert [(c["type"], c["access"]) for c in changed] == [("AWS::IAM::Policy", True)], changed
        # which value of the policy changes, from what to what
        (detail,) = changed[0]["details"]
        assert re.fullmatch(r"PolicyDocument\.Statement\[\d+\]\.Action", detail["property"]), detail
        assert detail["before"] == "cognito-idp:DescribeUserPool"
        assert json.loads(detail["after"]) == ["cognito-idp:DescribeUserPool", "cognito-idp:ListUsers"]
        said = runtime.stderr.getvalue()  # type: ignore[attr-defined]
        assert f"  ↳ {detail['property']}: cognito-idp:DescribeUserPool → [" in said
        assert "🔐 access" in said
        assert "🔐 sandbox is protected: this change of access deploys only approved, inv deploy.stack " in said
        runtime = quiet_runtime(project)
        commands.diff(as_markdown=True, runtime=runtime)
        attention = runtime.stdout.getvalue().split("#### Change Analysis")[0]  # type: ignore[attr-defined]
        assert "**Needs attention**\n\n- CarRentalFargateStack: " in attention
        assert "(AWS::IAM::Policy) changes who may access what: a deploy to this protected environment needs " in (
            attention
        )

        cfn = sandbox_client(project, "cloudformation")
        before = cfn.describe_stacks(StackName="CarRentalFargateStack")["Stacks"][0].get("LastUpdatedTime")
        with pytest.raises(UsageError, match="refusing to deploy CarRentalFargateStack to a protected environment"):
            auto(project)
        assert cfn.describe_stacks(StackName="CarRentalFargateStack")["Stacks"][0].get("LastUpdatedTime") == before
        [refused] = commands.history_list(limit=1, runtime=quiet_runtime(project))
        assert refused.result == "refused"  # inv report counts it apart from the failed runs

        report = commands.deploy_stack("fargate", approve_access=True, runtime=quiet_runtime(project))
        assert report is not None and report.ok
        assert auto(project)[0] is None

        # going back takes the permission away: a change of access too, refused unapproved, naming the rollback
        approved = cfn.describe_stacks(StackName="CarRentalFargateStack")["Stacks"][0].get("LastUpdatedTime")
        with pytest.raises(UsageError) as refusal:
            commands.rollback(component="stack:fargate", runtime=quiet_runtime(project))
        assert "approve it: inv rollback --component stack:fargate --to " in (refusal.value.next_step or "")
        assert (refusal.value.next_step or "").endswith(" --env sandbox --approve-access")
        assert cfn.describe_stacks(StackName="CarRentalFargateStack")["Stacks"][0].get("LastUpdatedTime") == approved
    finally:
        toml.write_text(plain)
        git(project, "commit", "-qam", "sandbox: not protected")


def prod_beside_the_sandbox(project: Path) -> str:
    """deploy.toml's section of prod: promoted from the sandbox, on the same local AWS under names of its own (its
    load balancer's URL comes from its stack's output; API Gateway and Cognito as the sandbox's)."""
    sandbox = load_config(project / "deploy.toml").environment("sandbox")
    stacks = "".join(f'{role} = "Prod{role.title()}Stack"\n' for role in ("registry", "data", "auth", "fargate", "api"))
    return f"""
[environments.prod]
promote_from = "sandbox"
region = "{sandbox.region}"
endpoint_url = "{sandbox.endpoint_url}"
cluster = "prod-cluster"
service = "prod-service"
container = "backend"
repository = "prod-backend"

[environments.prod.endpoints]
api_url = "{sandbox.endpoints["api_url"]}"
jwks_url = "{sandbox.endpoints["jwks_url"]}"

[environments.prod.stacks]
{stacks}"""


def test_an_environment_promoted_from_the_sandbox_takes_only_what_the_sandbox_runs(project: Path) -> None:
    """prod (promote_from = "sandbox") on the same local AWS under its own stack names, never deployed: deploy.auto
    there would deploy everything, which it may while the sandbox runs all of HEAD. After a backend commit the
    sandbox has not had, deploy.auto and deploy.app to prod are refused, naming it, before anything is
    changed in prod (--unpromoted lets it through, said); once the sandbox runs it, prod may take it."""
    toml = project / "deploy.toml"
    plain = toml.read_text()
    toml.write_text(plain + prod_beside_the_sandbox(project))
    git(project, "commit", "-qam", "prod, promoted from the sandbox")  # the toolkit's file: nothing to deploy
    cfn = sandbox_client(project, "cloudformation")
    stacks_before = sorted(s["StackName"] for s in cfn.describe_stacks()["Stacks"])
    try:
        _, out, _ = auto(project, env="prod", dry_run=True, as_json=True)
        assert "✅ promoted from sandbox: it runs app, lambda:health_handler, lambda:login_handler, stack:api" in out

        fleet = project / "backend" / "app" / "fleet.py"
        fleet.write_text(fleet.read_text() + "\n# not in the sandbox yet\n")
        git(project, "commit", "-qam", "backend: a change for prod")
        with pytest.raises(UsageError) as refused:
            auto(project, env="prod", dry_run=True, as_json=True)
        assert "prod takes only what sandbox runs (promote_from = 'sandbox'), and sandbox does not run this " in str(
            refused.value
        )
        assert re.search(
            r"\n  app: sandbox runs it at [0-9a-f]{12}; changed since: backend/app/fleet.py$",
            str(refused.value.message),
        )
        assert refused.value.exit_code == 2 and "--unpromoted" in (refused.value.next_step or "")
        with pytest.raises(UsageError, match="sandbox does not run this checkout's app"):
            commands.app_chain(["build", "roll-service"], env="prod", runtime=quiet_runtime(project))
        _, out, _ = auto(project, env="prod", dry_run=True, as_json=True, unpromoted=True)
        said = "⚠️  deploying to prod what sandbox does not run (--unpromoted; its history record says so):\n  app:"
        assert said in out

        assert ran(auto(project)[0]) >= {"build", "roll-service"}  # the sandbox takes it
        _, out, _ = auto(project, env="prod", dry_run=True, as_json=True)
        assert "✅ promoted from sandbox" in out
        tag = git(project, "rev-parse", "--short=12", "HEAD").strip()
        assert f"📦 the app's image is the one sandbox runs, copied from there: {tag} (built once)" in out
        plan = json.loads(out[out.index("\n{") :])  # the pinned shape, prod not deployed yet as it is
        assert list(plan) == ["environment", "base", "head", "changes", "steps"]
        names = [step["name"] for step in plan["steps"]]
        assert "promote-image" in names and "build" not in names  # built once, in the sandbox
        assert sorted(s["StackName"] for s in cfn.describe_stacks()["Stacks"]) == stacks_before  # prod: untouched

        # the copy itself, through run_plan (prod's repository made by hand: prod's stacks cannot run beside the
        # sandbox's here, their load balancers wanting the same port)
        ecr = sandbox_client(project, "ecr")
        ecr.create_repository(repositoryName="prod-backend", imageTagMutability="IMMUTABLE")
        try:
            config = load_config(project / "deploy.toml")
            copy = Plan("prod", (PromoteImage("sandbox", tag, "", ""),), "promote")
            prod = config.environment("prod")
            runtime = dataclasses.replace(quiet_runtime(project), docker_factory=no_docker)  # none needed
            report = commands.run_plan(runtime, config, prod, copy, dry_run=False, as_json=False)
            assert ran(report) == {"promote-image"}
            images = {
                name: ecr.describe_images(repositoryName=name, imageIds=[{"imageTag": tag}])["imageDetails"][0]
                for name in ("car-rental-backend", "prod-backend")
            }
            assert images["prod-backend"]["imageDigest"] == images["car-rental-backend"]["imageDigest"]
            assert report is not None and "mounted" in report.records[0].detail  # one registry: nothing re-sent
        finally:
            ecr.delete_repository(repositoryName="prod-backend", force=True)
    finally:
        toml.write_text(plain)
        git(project, "commit", "-qam", "no prod")


def test_prod_beside_the_sandbox_runs_the_very_image_the_sandbox_runs(project: Path) -> None:
    """Build once, end to end: prod (promote_from = "sandbox", its own stacks on the same local AWS, its load
    balancer on a port of its own) is deployed whole with the sandbox's image copied, not built; after a backend
    commit the sandbox deploys, prod's deploy.auto copies the new image (mounted: one registry), rolls it and
    smoke-tests it, and both answer with the same release from images of one digest."""
    toml = project / "deploy.toml"
    plain = toml.read_text()
    toml.write_text(plain + prod_beside_the_sandbox(project))
    git(project, "commit", "-qam", "prod beside the sandbox")
    ecr = sandbox_client(project, "ecr")

    def digests(tag: str) -> set[str]:
        return {
            ecr.describe_images(repositoryName=name, imageIds=[{"imageTag": tag}])["imageDetails"][0]["imageDigest"]
            for name in ("car-rental-backend", "prod-backend")
        }

    try:
        report, _out, _ = auto(project, env="prod")
        assert report is not None and not {"base-image", "build", "push"} & ran(report)
        details = [c.detail for r in report.records for c in [r, *r.children]]
        assert any("car-rental-backend:" in d and "prod-backend:" in d and " mounted" in d for d in details)
        prod = commands.endpoints(env="prod", runtime=quiet_runtime(project))
        sandbox_alb = endpoints(project).alb_url.rstrip("/")
        assert prod.alb_url.rstrip("/") != sandbox_alb  # its own listener, found from its stack's output
        tag = version_of(sandbox_alb)[:12]
        assert version_of(prod.alb_url.rstrip("/"))[:12] == tag and len(digests(tag)) == 1

        fleet = project / "backend" / "app" / "fleet.py"
        fleet.write_text(fleet.read_text() + "\n# released to the sandbox, then to prod\n")
        git(project, "commit", "-qam", "backend: a release")
        assert "build" in ran(auto(project)[0])
        new = version_of(sandbox_alb)[:12]
        report, _out, _ = auto(project, env="prod")
        assert ran(report) >= {"promote-image", "register-taskdef", "roll-service"} and "build" not in ran(report)
        assert report is not None
        [copy] = [c for r in report.records for c in [r, *r.children] if c.step == "promote-image"]
        assert "0 blob(s) copied" in copy.detail and " mounted" in copy.detail
        assert version_of(prod.alb_url.rstrip("/"))[:12] == new != tag and len(digests(new)) == 1
    finally:
        commands.destroy(env="prod", runtime=quiet_runtime(project))  # its service and load balancer
        toml.write_text(plain)
        git(project, "commit", "-qam", "no prod")


def test_one_run_of_the_app_a_function_and_a_stack_goes_back_whole(project: Path) -> None:
    """`inv rollback --run last` after a deploy.auto that deployed the app, a Lambda function and a stack: each goes
    back to what ran before that run, in one plan in a deploy's order (the stack while the run's image still runs,
    so its template changes no image; then the function, then the app) with one smoke; a dry run says so first and
    changes nothing."""
    found = endpoints(project)
    alb = found.alb_url.rstrip("/")

    def release() -> object:
        with urllib.request.urlopen(found.api_health_url, timeout=10) as answer:
            return json.loads(answer.read()).get("release")

    app_before, release_before, drain_before = version_of(alb), release(), drain_seconds(project)
    assert (release_before, drain_before) == ("auto-1", "4")
    fleet = project / "backend" / "app" / "fleet.py"
    fleet.write_text(fleet.read_text() + "\n# released with a function and a stack\n")
    handler = project / "lambda" / "health_handler" / "handler.py"
    handler.write_text(handler.read_text().replace('"release": "auto-1"', '"release": "auto-2"', 1))
    stack = project / "cdk" / "stacks" / "fargate_stack.py"
    stack.write_text(stack.read_text().replace("Duration.seconds(4)", "Duration.seconds(3)", 1))
    git(project, "commit", "-qam", "app, health and drain together")
    report, _out, _seconds = auto(project)
    assert {"update-code", "deploy-stack"} <= ran(report)  # the image is built in a sequence beside them
    assert (release(), drain_seconds(project)) == ("auto-2", "3") and version_of(alb) != app_before

    runtime = quiet_runtime(project)
    assert commands.rollback(run="last", dry_run=True, as_json=True, runtime=runtime) is None
    plan = json.loads(runtime.stdout.getvalue())  # type: ignore[attr-defined]
    assert [s["step"] for s in plan["steps"]] == ["deploy-stack", "parallel", "smoke"]  # the code side by side
    assert [s["step"] for s in plan["steps"][1]["inputs"]["steps"]] == ["move-alias", "sequence"]
    names = ["deploy-stack", "parallel", "move-alias", "sequence", "register-taskdef", "roll-service", "wait-healthy"]
    names.append("smoke")
    assert (release(), drain_seconds(project)) == ("auto-2", "3")

    newest_before = commands.history_list(limit=1, runtime=quiet_runtime(project))[0]
    runtime = quiet_runtime(project)
    undone = commands.rollback(run="last", runtime=runtime)
    assert undone is not None and undone.ok, undone and undone.error
    assert [r.step for r in all_records(undone.records)] == names
    assert (version_of(alb), release(), drain_seconds(project)) == (app_before, "auto-1", "4")
    said = runtime.stderr.getvalue()  # type: ignore[attr-defined]
    assert "⏪ rollback run " in said and "⏪ rollback stack:fargate in sandbox" in said
    assert f"[live before run {newest_before.id}]" in said
    newest = commands.history_list(limit=1, runtime=quiet_runtime(project))[0]
    assert newest.command.startswith("rollback run ")
    assert set(newest.deployed) == {"app", "lambda:health_handler", "stack:fargate"}

    again, _out, _seconds = auto(project, allow_rolled_back=True)  # HEAD's release of all three, on purpose
    assert {"register-taskdef", "move-alias", "deploy-stack"} <= ran(again)
    assert (release(), drain_seconds(project)) == ("auto-2", "3")


def break_me(project: Path) -> None:
    """A bad release in the work tree: GET /me answers 500, which the smoke's auth check fails (the ALB's health
    check passes)."""
    routes = project / "backend" / "app" / "routes.py"
    before = routes.read_text()
    marker = '    """The caller, as the verified token says."""\n'
    assert marker in before
    routes.write_text(before.replace(marker, marker + '    raise RuntimeError("a bad release")\n', 1))


def test_a_bad_release_left_in_place_then_reverted_is_deployed_again(project: Path) -> None:
    """A release whose smoke fails, kept in place (--no-rollback), is not what the last deploy verified. Reverting
    its commit makes the checkout what was verified, yet the service runs the bad image: deploy.auto deploys the
    app again, says why, and the reverted commit's image answers."""
    alb = endpoints(project).alb_url.rstrip("/")
    good = git(project, "rev-parse", "--short=12", "HEAD").strip()
    break_me(project)
    git(project, "commit", "-qam", "backend: a bad release")
    bad = git(project, "rev-parse", "--short=12", "HEAD").strip()
    with pytest.raises(StepFailed, match="smoke failed"):
        auto(project, rollback=False)
    assert version_of(alb)[:12] == bad  # left in place for debugging
    git(project, "revert", "--no-edit", "HEAD")
    report, out, _seconds = auto(project)
    assert {"build", "register-taskdef", "roll-service", "wait-healthy", "smoke"} <= ran(report)
    assert f"runs {bad}, not {good} (what the last successful deploy left and smoked)" in out
    assert version_of(alb) == git(project, "rev-parse", "HEAD").strip()
    again, out, _seconds = auto(project)
    assert again is None and "✅ nothing to deploy" in out  # what runs now is what was verified


def test_a_bad_release_the_fargate_stacks_update_rolled_out_is_put_back(project: Path) -> None:
    """A commit that changes the backend (a bad release) and the Fargate stack (its drain): the stack's update rolls
    the new image, smoke fails, and the automatic rollback puts the image back — the app the live record had, on a
    fresh revision — while the stack's own change stays, said. After the commit is reverted, deploy.auto deploys
    the stack again (the failed run left it changed) and nothing else."""
    alb = endpoints(project).alb_url.rstrip("/")
    good, drain = version_of(alb), drain_seconds(project)
    break_me(project)
    stack = project / "cdk" / "stacks" / "fargate_stack.py"
    stack.write_text(stack.read_text().replace(f"Duration.seconds({drain})", "Duration.seconds(2)", 1))
    git(project, "commit", "-qam", "backend and drain: a bad release")
    with pytest.raises(StepFailed, match="smoke failed") as failed:
        auto(project)
    assert "CarRentalFargateStack's update rolled the new image out" in failed.value.message
    assert "automatic rollback: app ok" in failed.value.message
    assert (version_of(alb), drain_seconds(project)) == (good, "2")
    git(project, "revert", "--no-edit", "HEAD")
    report, out, _seconds = auto(project)
    assert "the last run that deployed it (deploy.auto at " in out
    assert ran(report) >= {"deploy-stack"} and "register-taskdef" not in ran(report)
    assert (version_of(alb), drain_seconds(project)) == (good, drain)


HOTFIX = """import json


def handler(event, context):
    return {"statusCode": 200, "body": json.dumps({"status": "ok", "release": "hotfix by hand"})}
"""


def test_a_stack_and_a_function_changed_outside_deploykit_are_deployed_again(project: Path) -> None:
    """A teammate's hand-made changes beside deploykit: the Fargate stack updated with the CloudFormation API (another
    drain), a version of the health function published from a zip and the alias moved to it. Both are live at the
    commits the live record names, yet run something else: `inv diff` says what changed outside deploykit, and
    deploy.auto deploys both again, as this checkout has them, and then nothing."""
    import io
    import zipfile

    first, _out, _seconds = auto(project)
    assert first is None, "the module's earlier tests left something to deploy"
    found = endpoints(project)

    def release() -> object:
        with urllib.request.urlopen(found.api_health_url, timeout=10) as answer:
            return json.loads(answer.read()).get("release")

    drain, released = drain_seconds(project), release()
    cfn = sandbox_client(project, "cloudformation")
    stack = load_config(project / "deploy.toml").environment().stacks.fargate
    template = cfn.get_template(StackName=stack)["TemplateBody"]
    groups = [r for r in template["Resources"].values() if r["Type"] == "AWS::ElasticLoadBalancingV2::TargetGroup"]
    for attribute in groups[0]["Properties"]["TargetGroupAttributes"]:
        if attribute["Key"] == "deregistration_delay.timeout_seconds":
            attribute["Value"] = "9"
    given = cfn.describe_stacks(StackName=stack)["Stacks"][0]["Parameters"]
    cfn.update_stack(
        StackName=stack,
        TemplateBody=json.dumps(template),
        Parameters=[{"ParameterKey": p["ParameterKey"], "UsePreviousValue": True} for p in given],
        Capabilities=["CAPABILITY_IAM", "CAPABILITY_NAMED_IAM"],
    )
    deadline = time.monotonic() + 60
    while cfn.describe_stacks(StackName=stack)["Stacks"][0]["StackStatus"] != "UPDATE_COMPLETE":
        assert time.monotonic() < deadline
        time.sleep(0.2)
    lam = sandbox_client(project, "lambda")
    function = found.functions["health_handler"]
    zipped = io.BytesIO()
    with zipfile.ZipFile(zipped, "w") as archive:
        archive.writestr("handler.py", HOTFIX)
    lam.update_function_code(FunctionName=function, ZipFile=zipped.getvalue())
    lam.get_waiter("function_updated_v2").wait(FunctionName=function)
    version = lam.publish_version(FunctionName=function, Description="hotfix by hand")["Version"]
    lam.update_alias(FunctionName=function, Name="live", FunctionVersion=version)
    assert (drain_seconds(project), release()) == ("9", "hotfix by hand")

    runtime = quiet_runtime(project)
    commands.diff(as_json=True, runtime=runtime)
    said = runtime.stderr.getvalue()  # type: ignore[attr-defined]
    assert f"{stack} was changed outside deploykit: CloudFormation updated it at " in said, said
    assert f"{function}'s alias live serves version {version}, which deploykit did not publish" in said, said
    reasons = json.loads(runtime.stdout.getvalue())["reasons"]  # type: ignore[attr-defined]
    assert (
        set(reasons) == {"stack:fargate", "lambda:health_handler"} and "outside deploykit" in reasons["stack:fargate"]
    )
    report, out, _seconds = auto(project)
    assert {"deploy-stack", "move-alias"} <= ran(report) and "register-taskdef" not in ran(report), out
    assert (drain_seconds(project), release()) == (drain, released)
    again, out, _seconds = auto(project)
    assert again is None and "✅ nothing to deploy" in out, out


def test_diff_verify_finds_what_the_live_record_cannot_tell(project: Path) -> None:
    """`inv diff --verify` previews every stack and compares every function's code, whatever the live record says:
    it passes on an environment that runs the checkout, and fails (exit 1) on a stack changed by hand that the
    record has nothing to tell by (deployed by a deploykit that kept no fingerprint), naming it; deploy.auto sees
    nothing to deploy there, and deploy.stack puts it back."""
    runtime = quiet_runtime(project)
    commands.diff(verify=True, as_json=True, runtime=runtime)
    verdict = json.loads(runtime.stdout.getvalue())["verify"]  # type: ignore[attr-defined]
    assert verdict["differs"] == [] and set(verdict["functions"]) == {"health_handler", "login_handler"}
    assert all(f["live"] == f["checkout"] for f in verdict["functions"].values())
    said = runtime.stderr.getvalue()  # type: ignore[attr-defined]
    assert said.count("nothing to change") == 5 and "✅ sandbox runs what this checkout would deploy" in said

    config = load_config(project / "deploy.toml")
    env = config.environment()
    s3, bucket = sandbox_client(project, "s3"), endpoints(project).outputs[env.stacks.registry]["ArtifactsBucketName"]
    key = f"deploykit/live/{env.name}.json"
    live = json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
    live["stack:fargate"] = {k: live["stack:fargate"][k] for k in ("sha", "when", "record")}
    s3.put_object(Bucket=bucket, Key=key, Body=json.dumps(live).encode())
    cfn = sandbox_client(project, "cloudformation")
    template = cfn.get_template(StackName=env.stacks.fargate)["TemplateBody"]
    drain = drain_seconds(project)
    groups = [r for r in template["Resources"].values() if r["Type"] == "AWS::ElasticLoadBalancingV2::TargetGroup"]
    for attribute in groups[0]["Properties"]["TargetGroupAttributes"]:
        if attribute["Key"] == "deregistration_delay.timeout_seconds":
            attribute["Value"] = "7"
    given = cfn.describe_stacks(StackName=env.stacks.fargate)["Stacks"][0]["Parameters"]
    cfn.update_stack(
        StackName=env.stacks.fargate,
        TemplateBody=json.dumps(template),
        Parameters=[{"ParameterKey": p["ParameterKey"], "UsePreviousValue": True} for p in given],
        Capabilities=["CAPABILITY_IAM", "CAPABILITY_NAMED_IAM"],
    )
    deadline = time.monotonic() + 60
    while cfn.describe_stacks(StackName=env.stacks.fargate)["Stacks"][0]["StackStatus"] != "UPDATE_COMPLETE":
        assert time.monotonic() < deadline
        time.sleep(0.2)
    report, out, _seconds = auto(project)
    assert report is None and "✅ nothing to deploy" in out, out  # the record cannot tell
    with pytest.raises(StepFailed) as differs:
        commands.diff(verify=True, runtime=quiet_runtime(project))
    assert differs.value.message == (
        f"sandbox does not run what this checkout would deploy: {env.stacks.fargate}: 1 change to make"
    )
    runtime = quiet_runtime(project)
    assert drain_seconds(project) == "7"
    fixed = commands.deploy_stack(env.stacks.fargate, runtime=runtime)
    assert fixed is not None and fixed.ok and drain_seconds(project) == drain
    commands.diff(verify=True, runtime=quiet_runtime(project))  # runs what the checkout would deploy again


def test_diff_verify_finds_a_function_setting_changed_by_hand(project: Path) -> None:
    """A function's memory raised by hand on $LATEST: `inv diff --verify` passes (nothing served differs) and says
    the next fast path would publish it. Published behind its alias, its code left as it was: no change set shows it
    (CloudFormation compares templates) and deploy.auto has nothing to deploy, but says it, as inv health does; `inv
    diff --verify` fails (exit 1) naming the setting and the remedy: deploy.stack --revert-drift puts it back on
    $LATEST and the alias on a version that has it, and the verdict passes."""
    lam = sandbox_client(project, "lambda")
    name = endpoints(project).functions["health_handler"]
    wanted = lam.get_function_configuration(FunctionName=name, Qualifier="live")["MemorySize"]
    lam.update_function_configuration(FunctionName=name, MemorySize=wanted * 2)
    _active(lam, name)
    runtime = quiet_runtime(project)  # on $LATEST only: not served, so the verdict passes, but it is said
    commands.diff(verify=True, as_json=True, runtime=runtime)
    assert (
        f"health_handler: ⚠️  its $LATEST has MemorySize {wanted * 2}, this checkout's template {wanted}: not served, "
        "but the next inv deploy.lambda health_handler (or deploy.auto of it) publishes it"
    ) in runtime.stderr.getvalue()  # type: ignore[attr-defined]
    staged = json.loads(runtime.stdout.getvalue())["verify"]["functions"]["health_handler"]  # type: ignore[attr-defined]
    assert staged["latest_settings"] == {"MemorySize": {"latest": wanted * 2, "checkout": wanted}}
    assert staged["settings"] == {}
    by_hand = lam.publish_version(FunctionName=name)["Version"]
    lam.update_alias(FunctionName=name, Name="live", FunctionVersion=by_hand)
    report, out, _seconds = auto(project)
    assert report is None and "✅ nothing to deploy" in out, out  # the code is the checkout's
    assert (  # but the analysis says it, as no deploy of its code puts it back
        f"⚠️  lambda:health_handler: version {by_hand}, which the alias serves, has settings other than those "
        f"CarRentalApiStack deployed: MemorySize {wanted * 2} (the stack's: {wanted}); changed by hand, and published"
    ) in out, out
    found = commands.health_report(runtime=quiet_runtime(project)).findings  # from the stack's template as deployed
    assert [(f.severity, f.what) for f in found if "Lambda health_handler" in f.what] == [
        (
            "warning",
            f"Lambda health_handler: version {by_hand}, which the alias serves, has settings other than those "
            f"CarRentalApiStack deployed: MemorySize {wanted * 2} (the stack's: {wanted}); changed by hand, and "
            "published",
        )
    ]
    runtime = quiet_runtime(project)
    with pytest.raises(StepFailed) as differs:
        commands.diff(verify=True, as_json=True, runtime=runtime)
    assert differs.value.message == (
        f"sandbox does not run what this checkout would deploy: health_handler runs with MemorySize {wanted * 2}, "
        f"not {wanted}"
    )
    assert (
        "health_handler's settings: inv deploy.stack CarRentalApiStack --env sandbox --revert-drift puts them back, "
        "and its alias on a version that has them"
    ) in (differs.value.next_step or "")
    verdict = json.loads(runtime.stdout.getvalue())["verify"]  # type: ignore[attr-defined]
    assert verdict["functions"]["health_handler"]["name"] == name
    assert verdict["functions"]["health_handler"]["settings"] == {
        "MemorySize": {"live": wanted * 2, "checkout": wanted}
    }
    assert verdict["functions"]["login_handler"]["settings"] == {}
    said = runtime.stderr.getvalue()  # type: ignore[attr-defined]
    assert f"health_handler: ❌ its live version has MemorySize {wanted * 2}, this checkout's template {wanted}" in said

    # the remedy the next step names: a drift-aware deploy of the stack puts $LATEST back, and the alias on a version
    # that has the stack's settings
    fixed = commands.deploy_stack("api", revert_drift=True, smoke=False, runtime=quiet_runtime(project))
    assert fixed is not None and fixed.ok
    assert lam.get_function_configuration(FunctionName=name, Qualifier="live")["MemorySize"] == wanted
    assert lam.get_function_configuration(FunctionName=name)["MemorySize"] == wanted
    commands.diff(verify=True, runtime=quiet_runtime(project))
    # nothing of the settings is left; on a day within 180 days of python3.11's deprecation, its functions are said
    soon = dataclasses.replace(quiet_runtime(project), clock=FakeClock(datetime(2027, 1, 15, tzinfo=UTC)))
    assert [f.what for f in commands.health_report(runtime=soon).findings if "Lambda" in f.what] == [
        "Lambdas health_handler, login_handler run python3.11, which AWS deprecates on 2027-06-30 (on Amazon Linux 2, "
        "past its end of life)"
    ]


def test_a_stack_change_held_back_is_deployed_by_the_next_deploy_auto_alone(project: Path) -> None:
    """A handler and a stack setting in one commit: --skip stack deploys the handler by the fast path and leaves the
    stack as it runs; the next deploy.auto deploys the stack alone (the handler is live at HEAD already)."""
    handler = project / "lambda" / "login_handler" / "handler.py"
    handler.write_text(handler.read_text() + "\n# held-back test\n")
    source = project / "cdk" / "stacks" / "fargate_stack.py"
    grace = "HEALTH_CHECK_GRACE_PERIOD = Duration.seconds(10)"
    assert grace in source.read_text()
    source.write_text(source.read_text().replace(grace, "HEALTH_CHECK_GRACE_PERIOD = Duration.seconds(11)"))
    git(project, "commit", "-qam", "a handler and a stack setting")
    ecs = sandbox_client(project, "ecs")

    def grace_seconds() -> int:
        service = ecs.describe_services(cluster="car-rental-cluster", services=["car-rental-service"])["services"][0]
        return int(service["healthCheckGracePeriodSeconds"])

    report, out, _seconds = auto(project, skip="stack")
    assert ran(report) == {"upload-lambda", "update-code", "publish-version", "move-alias", "smoke"}
    assert "⏸  held back (--only/--skip): stack:fargate: left as live, for a later inv deploy.auto" in out, out
    assert grace_seconds() == 10
    newest = commands.history_list(limit=1, runtime=quiet_runtime(project))[0]
    assert newest.held == ["stack:fargate"] and "stack:fargate" not in newest.components

    report, out, _seconds = auto(project)
    assert report is not None
    assert [r.detail.split(":")[0] for r in all_records(report.records) if r.step == "deploy-stack"] == [
        "CarRentalFargateStack"
    ]
    assert not ran(report) & {"upload-lambda", "update-code", "build"}
    assert "🐳 Stack:    cdk/stacks/fargate_stack.py → inv deploy.stack CarRentalFargateStack" in out
    assert "lambda/login_handler/handler.py" not in out
    assert grace_seconds() == 11


def with_dev_pattern(project: Path) -> str:
    """Commit deploy.toml with [environments."dev-*"]: an environment per developer on the sandbox's AWS, its stacks,
    cluster, repository and load balancer named after it. Returns deploy.toml as it was."""
    sandbox = load_config(project / "deploy.toml").environment("sandbox")
    stacks = "".join(
        f'{role} = "CarRental-{{env}}-{role.title()}"\n' for role in ("registry", "data", "auth", "fargate", "api")
    )
    toml = project / "deploy.toml"
    plain = toml.read_text()
    toml.write_text(
        plain
        + f"""
[environments."dev-*"]
region = "{sandbox.region}"
endpoint_url = "{sandbox.endpoint_url}"
base_image = "{sandbox.base_image}"
cluster = "car-rental-{{env}}"
service = "car-rental-{{env}}"
container = "backend"
repository = "car-rental-backend-{{env}}"
poll_interval = 0.5

[environments."dev-*".endpoints]
api_url = "{sandbox.endpoints["api_url"]}"
jwks_url = "{sandbox.endpoints["jwks_url"]}"

[environments."dev-*".stacks]
{stacks}"""
    )
    git(project, "commit", "-qam", "an environment per developer")
    return plain


def test_an_environment_of_ones_own_made_from_a_pattern_deploys_whole_beside_the_sandbox(project: Path) -> None:
    """[environments."dev-*"]: --env dev-alice is a whole platform of its own on the same local AWS (its stacks,
    cluster, repository, bucket and load balancer named after it), deployed by deploy.auto from nothing, smoke-tested,
    listed by inv envs beside the sandbox, and destroyed again."""
    toml = project / "deploy.toml"
    plain = with_dev_pattern(project)
    try:
        report, out, _ = auto(project, env="dev-alice")
        assert "🆕 dev-alice is not fully deployed yet: deploying everything (deploy.full)" in out
        deployed = {r.detail.split(":")[0] for r in all_records(report.records) if r.step == "deploy-stack"}  # type: ignore[union-attr]
        assert deployed == {
            f"CarRental-dev-alice-{role.title()}" for role in ("registry", "data", "auth", "fargate", "api")
        }
        assert "smoke" in ran(report)
        alice = commands.endpoints(env="dev-alice", runtime=quiet_runtime(project))
        assert alice.alb_url.rstrip("/") != endpoints(project).alb_url.rstrip("/")  # a load balancer of its own
        assert version_of(alice.alb_url.rstrip("/"))[:12] == git(project, "rev-parse", "--short=12", "HEAD").strip()
        views = commands.envs(runtime=quiet_runtime(project))
        assert [v.env for v in views] == ["sandbox", "dev-alice"]
        assert views[1].last_run is not None and views[1].last_run.command == "deploy.full"

        # taken down with its data, nothing of it is left to hold a name: it deploys whole again
        gone = commands.destroy(env="dev-alice", include_data=True, runtime=quiet_runtime(project))
        assert gone is not None and gone.ok
        details = " ".join(r.detail for r in all_records(gone.records) if r.step == "destroy-stack")
        assert "repository car-rental-backend-dev-alice deleted" in details and "object version(s) first" in details
        ecr = sandbox_client(project, "ecr")
        assert "car-rental-backend-dev-alice" not in {
            r["repositoryName"] for r in ecr.describe_repositories()["repositories"]
        }
        assert [v.env for v in commands.envs(runtime=quiet_runtime(project))] == ["sandbox"]
        # deployed whole again, now with a release command: no service to run it beside before the Fargate stack, so
        # it runs right after the stack created the service, in the revision of its tasks
        release_command(project, ["python", "-m", "app.release"])
        report, out, _ = auto(project, env="dev-alice")
        assert report is not None and report.ok and "smoke" in ran(report), out
        fargate = next(
            r for r in all_records(report.records) if r.step == "sequence" and r.description.startswith("fargate")
        )
        assert [(r.step, r.status) for r in fargate.children] == [
            ("release", "skipped"),
            ("deploy-stack", "done"),
            ("release", "done"),
        ], out
        assert "exited 0 after" in fargate.children[2].detail and "release: ok" in fargate.children[2].detail

        # its data stacks deleted without deploykit (the console, cdk destroy): what they kept is found among the
        # deleted stacks and goes with --include-data
        assert commands.destroy(env="dev-alice", runtime=quiet_runtime(project)).ok  # type: ignore[union-attr]
        cloudformation = sandbox_client(project, "cloudformation")
        for role in ("auth", "data", "registry"):
            name = f"CarRental-dev-alice-{role.title()}"
            cloudformation.delete_stack(StackName=name)
            cloudformation.get_waiter("stack_delete_complete").wait(StackName=name, WaiterConfig={"Delay": 1})
        assert "car-rental-backend-dev-alice" in {
            r["repositoryName"] for r in ecr.describe_repositories()["repositories"]
        }
        gone = commands.destroy(env="dev-alice", include_data=True, runtime=quiet_runtime(project))
        assert gone is not None and gone.ok
        details = " ".join(r.detail for r in all_records(gone.records) if r.step == "destroy-stack")
        assert (
            "CarRental-dev-alice-Registry was deleted before; what it kept: "
            "repository car-rental-backend-dev-alice deleted" in details
        )
        assert "car-rental-backend-dev-alice" not in {
            r["repositoryName"] for r in ecr.describe_repositories()["repositories"]
        }
    finally:
        commands.destroy(env="dev-alice", include_data=True, runtime=quiet_runtime(project))
        toml.write_text(plain)
        git(project, "commit", "-qam", "no dev-alice")
    assert [v.env for v in commands.envs(runtime=quiet_runtime(project))] == ["sandbox"]


def test_a_first_deploys_release_command_that_failed_runs_first_when_the_same_commit_is_deployed_again(
    project: Path,
) -> None:
    """dev-bob's first deploy, the backend's release command on and its user pool out of reach (DescribeUserPool
    throttled): the command fails after the Fargate stack created the service, which serves the image, tagged
    deploykit:release-pending. The pool back, deploy.auto of the very same commit runs the command first, takes the
    tag off, and deploys the rest."""
    toml = project / "deploy.toml"
    plain = with_dev_pattern(project)
    settings = load_settings(toml)
    try:
        release_command(project, ["python", "-m", "app.release"])
        head = git(project, "rev-parse", "--short=12", "HEAD").strip()
        lifecycle.inject_throttling(settings, "cognito-idp", "DescribeUserPool", count=20)
        with pytest.raises(StepFailed, match="exited with code 1") as failed:
            auto(project, env="dev-bob")
        message = failed.value.message
        assert f"car-rental-dev-bob runs {head} already: this first deploy's Fargate stack created it" in message
        assert f"tagged deploykit:release-pending={head}" in message
        assert "cognito:user_pool" in message or "not reachable" in message, message  # its last log line
        lifecycle.clear_faults(settings)

        report, out, _ = auto(project, env="dev-bob")
        assert report is not None and report.ok and "smoke" in ran(report), out
        releases = [r for r in all_records(report.records) if r.step == "release"]
        assert [r.status for r in releases][:1] == ["done"], out
        assert releases[0].detail.endswith("; deploykit:release-pending taken off the service"), releases[0].detail
        assert "release: ok" in releases[0].detail
        bob = commands.endpoints(env="dev-bob", runtime=quiet_runtime(project))
        assert version_of(bob.alb_url.rstrip("/"))[:12] == head
    finally:
        lifecycle.clear_faults(settings)
        commands.destroy(env="dev-bob", include_data=True, runtime=quiet_runtime(project))
        toml.write_text(plain)
        git(project, "commit", "-qam", "no dev-bob")
    assert [v.env for v in commands.envs(runtime=quiet_runtime(project))] == ["sandbox"]


def test_the_service_and_functions_put_on_graviton_stay_on_this_machines_cpu_in_the_sandbox(project: Path) -> None:
    """[build] platform = "linux/arm64" and lambda_architecture = "arm64" committed: deploy.auto builds the image and
    deploys the Fargate stack with it, and the API stack with the functions' zips (the Change Analysis names the
    settings); the sandbox runs them here, so they stay on this machine's architecture and answer as before."""
    toml = project / "deploy.toml"
    graviton = '[build]\nplatform = "linux/arm64"\nlambda_architecture = "arm64"\n'
    toml.write_text(toml.read_text().replace("[build]\n", graviton, 1))
    git(project, "commit", "-qam", "the service and the functions on Graviton")
    config = load_config(toml)
    sandbox = config.environment("sandbox")

    report, out, _ = auto(project)
    assert "📱 App code: deploy.toml ([build] platform changed) → inv deploy.auto" in out
    assert "🐳 Stack:    deploy.toml ([build] platform changed) → inv deploy.auto" in out
    assert "🔧 Lambda:   deploy.toml ([build] lambda_architecture changed) → inv deploy.auto" in out
    assert "🐳 Stack:    deploy.toml ([build] lambda_architecture changed) → inv deploy.auto" in out
    assert report is not None and report.ok and {"build", "push", "smoke"} <= ran(report)
    lam = sandbox_client(project, "lambda")
    for name in endpoints(project).functions.values():
        architectures = lam.get_function_configuration(FunctionName=name, Qualifier="live")["Architectures"]
        assert architectures == [config.lambda_architecture_for(sandbox)]
    ecs = sandbox_client(project, "ecs")
    service = ecs.describe_services(cluster=sandbox.cluster, services=[sandbox.service])["services"][0]
    task = ecs.describe_task_definition(taskDefinition=service["taskDefinition"])["taskDefinition"]
    assert task["runtimePlatform"]["cpuArchitecture"] == config.cpu_architecture_for(sandbox)
    head = git(project, "rev-parse", "HEAD").strip()
    assert version_of(endpoints(project).alb_url.rstrip("/")) == head  # the image built for it answers
    assert auto(project)[0] is None  # deployed: nothing left to do


def _active(lam: Any, name: str) -> None:
    """Wait until the function's last update has been applied (a publish meanwhile is refused, as on AWS)."""
    deadline = time.monotonic() + 30
    while lam.get_function_configuration(FunctionName=name).get("LastUpdateStatus") == "InProgress":
        assert time.monotonic() < deadline
        time.sleep(0.1)


def release_command(project: Path, command: list[str] | None) -> None:
    """Commit deploy.toml with ``[release] command`` (None: without the table)."""
    toml = project / "deploy.toml"
    text = toml.read_text().split("\n[release]\n", 1)[0]
    if command is not None:
        text += f"\n[release]\ncommand = {json.dumps(command)}\ntimeout = 60\n"
    toml.write_text(text)
    git(project, "commit", "-qam", f"release command: {command}")


def test_the_release_command_runs_in_the_new_image_before_it_takes_traffic(project: Path) -> None:
    """[release]: the backend's own release command (python -m app.release) runs in a one-off task of the new
    image, reaching its tables, bucket and user pool, before the service rolls; then one that fails (exit 3)
    stops deploy.auto with the service on the image it ran, the command's output in the failure."""
    alb = endpoints(project).alb_url.rstrip("/")
    fleet = project / "backend" / "app" / "fleet.py"
    release_command(project, ["python", "-m", "app.release"])
    fleet.write_text(fleet.read_text() + "\n# a release with a release command\n")
    git(project, "commit", "-qam", "backend: released with its command")
    report, out, _seconds = auto(project)
    assert report is not None and report.ok, out
    steps = [r.step for r in all_records(report.records) if not r.children]
    assert steps.index("register-taskdef") < steps.index("release") < steps.index("roll-service"), steps
    release = next(r for r in all_records(report.records) if r.step == "release")
    assert release.status == "done" and "exited 0 after" in release.detail and "release: ok" in release.detail
    ecs = sandbox_client(project, "ecs")
    cluster = load_config(project / "deploy.toml").environment("sandbox").cluster
    stopped = ecs.list_tasks(cluster=cluster, startedBy="deploykit-release", desiredStatus="STOPPED")["taskArns"]
    (task,) = ecs.describe_tasks(cluster=cluster, tasks=stopped[:1])["tasks"]
    assert task["containers"][0]["exitCode"] == 0
    good = git(project, "rev-parse", "HEAD").strip()
    assert version_of(alb) == good

    release_command(project, ["python", "-c", "import sys; print('migration 42 failed'); sys.exit(3)"])
    fleet.write_text(fleet.read_text() + "\n# a release whose command fails\n")
    git(project, "commit", "-qam", "backend: its release command fails")
    with pytest.raises(StepFailed, match="exited with code 3") as failed:
        auto(project)
    assert "migration 42 failed" in failed.value.message  # its last log line
    assert "car-rental-service was not changed" in failed.value.message
    assert "inv logs --component app --task" in (failed.value.next_step or "")
    assert version_of(alb) == good  # the old version serves on; nothing of the new image took a request

    # a new image through the Fargate stack's update (its drain changed too): the command runs first, beside the
    # service, in a revision made for it; the app chain's own, after the stack, finds the image live
    release_command(project, ["python", "-m", "app.release"])
    drain = drain_seconds(project)
    stack = project / "cdk" / "stacks" / "fargate_stack.py"
    stack.write_text(stack.read_text().replace(f"Duration.seconds({drain})", "Duration.seconds(2)", 1))
    git(project, "commit", "-qam", "backend and drain: released through the Fargate stack")
    report, out, _seconds = auto(project)
    assert report is not None and report.ok, out
    records = [r for r in all_records(report.records) if not r.children]
    order = [(r.step, r.status) for r in records if r.step in ("release", "deploy-stack", "roll-service")]
    assert order == [("release", "done"), ("deploy-stack", "done"), ("release", "skipped"), ("roll-service", "skipped")]
    assert "registered car-rental-service:" in out and "for the release command" in out
    assert drain_seconds(project) == "2" and version_of(alb) == git(project, "rev-parse", "HEAD").strip()

    release_command(project, None)  # the later tests' deploy.toml and drain, as they were
    stack.write_text(stack.read_text().replace("Duration.seconds(2)", f"Duration.seconds({drain})", 1))
    git(project, "commit", "-qam", "the drain as it was")
    report, out, _seconds = auto(project)
    assert report is not None and report.ok and "release" not in {r.step for r in all_records(report.records)}
    assert drain_seconds(project) == drain


def test_inv_run_runs_a_command_in_the_live_image_beside_the_service_and_shows_what_it_wrote(project: Path) -> None:
    """inv run: the backend's release command, by hand, in a one-off task of what the service runs (its environment:
    the stacks' tables, bucket and pool), its output followed; a command that fails fails it with its exit code."""
    runtime = quiet_runtime(project)
    result = commands.run_command("python -m app.release", runtime=runtime)
    out = runtime.stdout.getvalue()  # type: ignore[attr-defined]
    assert result["ok"] and result["exit_code"] == 0, out
    assert "release: dynamodb:cars ok" in out and out.splitlines()[-1].startswith("release: ok"), out
    assert result["image_tag"] == version_of(endpoints(project).alb_url.rstrip("/"))[:12]
    failing = quiet_runtime(project)
    with pytest.raises(StepFailed, match="exited with code 4") as failed:
        commands.run_command("python -c \"import sys; print('no such car'); sys.exit(4)\"", runtime=failing)
    assert failing.stdout.getvalue() == "no such car\n"  # type: ignore[attr-defined]
    assert "inv logs --env sandbox --task" in (failed.value.next_step or "")


def test_inv_restart_replaces_every_task_with_a_fresh_one_of_the_same_revision_without_a_failed_request(
    project: Path,
) -> None:
    """inv restart: new tasks of the revision the service runs, the old drained; the app answers all along; the run
    is in the history, the live record as it was; a service in the middle of a rollout is refused, untouched."""
    env = load_config(project / "deploy.toml").environment()
    ecs = sandbox_client(project, "ecs")
    url = endpoints(project).alb_url.rstrip("/")

    def service() -> dict[str, Any]:
        return dict(ecs.describe_services(cluster=env.cluster, services=[env.service])["services"][0])

    def tasks() -> set[str]:
        return set(ecs.list_tasks(cluster=env.cluster, serviceName=env.service, desiredStatus="RUNNING")["taskArns"])

    before, old_tasks, live_before = service(), tasks(), commands.live_record(AwsFactory(env), env)
    version = version_of(url)
    answers: list[int | str] = []
    done = threading.Event()

    def ask() -> None:  # the users' requests all along the restart
        while not done.is_set():
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=5) as answer:
                    answers.append(answer.status)
            except Exception as exc:  # any failed request counts
                answers.append(repr(exc))
            time.sleep(0.05)

    asking = threading.Thread(target=ask)
    asking.start()
    try:
        report = commands.restart_app(runtime=quiet_runtime(project))
    finally:
        done.set()
        asking.join()
    assert report is not None and report.ok, report and report.error
    after = service()
    assert after["taskDefinition"] == before["taskDefinition"]  # the same revision...
    assert tasks().isdisjoint(old_tasks) and len(tasks()) == after["desiredCount"]  # ...in fresh tasks only
    assert [d["id"] for d in after["deployments"]] == [report.records[0].outputs["deployment"]]
    assert version_of(url) == version
    assert answers and all(a == 200 for a in answers), [a for a in answers if a != 200]
    newest = commands.history_list(limit=1, runtime=quiet_runtime(project))[0]
    assert (newest.command, newest.head, newest.ok) == ("restart app", version[:12], True)
    # inv tasks: the fresh task serving, started by the PRIMARY deployment; the old ones stopped by it
    listed = commands.tasks_list(runtime=quiet_runtime(project))
    serving = [r for r in listed if r.status == "RUNNING"]
    assert [r.arn for r in serving] == sorted(tasks()) and serving[0].started_by == "PRIMARY deployment"
    assert serving[0].image_tag == version[:12] and serving[0].target.endswith(" healthy")
    replaced = [r for r in listed if r.arn in old_tasks]
    assert replaced and all(r.status == "STOPPED" and "stopped by deployment" in r.detail for r in replaced)
    assert commands.live_record(AwsFactory(env), env) == live_before

    ecs.update_service(cluster=env.cluster, service=env.service, forceNewDeployment=True)  # someone else's rollout
    with pytest.raises(UsageError, match="refusing to restart car-rental-service while it rolls out"):
        commands.restart_app(runtime=quiet_runtime(project))
    deadline = time.monotonic() + 60
    while not (len(service()["deployments"]) == 1 and service()["deployments"][0]["rolloutState"] == "COMPLETED"):
        assert time.monotonic() < deadline, service()["deployments"]  # the tests after this one find it steady
        time.sleep(0.5)


def test_a_paused_sandbox_serves_nothing_a_backend_deploy_wakes_it_and_resume_brings_it_back(project: Path) -> None:
    """inv pause: the service at 0 tasks, the ALB answering 503, inv health saying paused (not broken); deploy.auto
    of a backend change wakes it first (its own rollout waits) and the new version answers; paused again, inv resume
    brings the count back and waits until it serves."""
    env = load_config(project / "deploy.toml").environment()
    ecs = sandbox_client(project, "ecs")
    url = endpoints(project).alb_url.rstrip("/")

    def service() -> dict[str, Any]:
        return dict(ecs.describe_services(cluster=env.cluster, services=[env.service])["services"][0])

    def running() -> list[str]:
        return list(ecs.list_tasks(cluster=env.cluster, serviceName=env.service, desiredStatus="RUNNING")["taskArns"])

    def status() -> int:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=5) as answer:
                return int(answer.status)
        except urllib.error.HTTPError as refused:
            return refused.code

    count = service()["desiredCount"]
    started = time.monotonic()
    report = commands.pause_app(reason="the night", runtime=quiet_runtime(project))
    paused_in = time.monotonic() - started
    assert report is not None and report.ok and report.records[0].status == "done", report and report.error
    assert service()["desiredCount"] == 0 and service()["runningCount"] == 0 and running() == []
    assert status() == 503
    with pytest.raises(StepFailed, match="no registered targets") as smoked:  # said why, and what ends it
        commands.smoke(runtime=quiet_runtime(project))
    assert "is paused by" in (smoked.value.next_step or "") and "inv resume --env sandbox" in (
        smoked.value.next_step or ""
    )
    checked = quiet_runtime(project)
    health = commands.health_report(runtime=checked)  # not broken: paused
    assert [r.status for r in health.rows if r.part == "pause"] == ["paused"]
    assert any("is paused by" in f.what and "the night" in f.what for f in health.findings)

    routes = project / "backend" / "app" / "fleet.py"
    routes.write_text(routes.read_text() + "\n# deployed to a paused sandbox\n")
    git(project, "commit", "-qam", "backend: deployed while paused")
    planned = quiet_runtime(project)
    commands.deploy_auto(dry_run=True, as_json=True, runtime=planned)
    steps = json.loads(planned.stdout.getvalue())["steps"]  # type: ignore[attr-defined]
    assert steps[0] == {"name": "wake", "target": env.service} and steps[-1]["name"] == "smoke"
    assert service()["desiredCount"] == 0  # the dry run woke nothing
    report, out, seconds = auto(project)
    assert report is not None and report.ok, out
    assert [r.step for r in report.records] == [
        "wake",
        "sequence",
        "register-taskdef",
        "roll-service",
        "wait-healthy",
        "smoke",
    ], out
    assert "a deploy wakes it first" in out and "the rollout that follows waits for them" in out
    assert version_of(url) == git(project, "rev-parse", "HEAD").strip()
    assert service()["desiredCount"] == count and len(running()) == count

    commands.pause_app(runtime=quiet_runtime(project))
    assert status() == 503
    started = time.monotonic()
    report = commands.resume_app(runtime=quiet_runtime(project))
    resumed_in = time.monotonic() - started
    assert report is not None and report.ok and [r.step for r in report.records] == ["wake", "smoke"]
    assert report.records[0].detail.endswith("serve") and status() == 200
    assert service()["desiredCount"] == count
    newest = [r.command for r in commands.history_list(limit=4, runtime=quiet_runtime(project))]
    assert newest == ["resume app", "pause app", "deploy.auto", "pause app"]
    print(
        f"\npause: {paused_in:.2f}s; deploy.auto of a backend change, paused: {seconds:.2f}s; resume: {resumed_in:.2f}s"
    )


def test_taskdefs_cleanup_deregisters_old_revisions_and_keeps_what_runs_and_what_the_stack_holds(
    project: Path,
) -> None:
    """inv taskdefs.cleanup on the sandbox: the revisions deploys left go, the service's and the Fargate stack's
    stay, and what runs goes on (a one-off task of the service's revision starts after it)."""
    env = load_config(project / "deploy.toml").environment()
    ecs = sandbox_client(project, "ecs")
    running = ecs.describe_services(cluster=env.cluster, services=[env.service])["services"][0]["taskDefinition"]
    definition = ecs.describe_task_definition(taskDefinition=running)["taskDefinition"]
    fields = ("family", "containerDefinitions", "networkMode", "requiresCompatibilities", "cpu", "memory")
    for _ in range(4):  # what four more deploys would have left
        ecs.register_task_definition(**{k: definition[k] for k in fields if k in definition})
    held = [
        r["PhysicalResourceId"]
        for r in sandbox_client(project, "cloudformation").list_stack_resources(StackName=env.stacks.fargate)[
            "StackResourceSummaries"
        ]
        if r["ResourceType"] == "AWS::ECS::TaskDefinition"
    ]
    family = definition["family"]
    before = ecs.list_task_definitions(familyPrefix=family, status="ACTIVE")["taskDefinitionArns"]
    runtime = quiet_runtime(project)
    decision = commands.taskdefs_cleanup(keep=2, runtime=runtime)
    after = ecs.list_task_definitions(familyPrefix=family, status="ACTIVE")["taskDefinitionArns"]
    newest = sorted(before, key=lambda a: int(a.rsplit(":", 1)[1]))[-2:]
    assert set(after) == {running, *held, *newest}, runtime.stderr.getvalue()  # type: ignore[attr-defined]
    assert len(decision.to_deregister) == len(before) - len(after) >= 2
    gone = decision.to_deregister[0]
    assert ecs.describe_task_definition(taskDefinition=gone)["taskDefinition"]["status"] == "INACTIVE"
    result = commands.run_command("python -c 'print(42)'", runtime=quiet_runtime(project))
    assert result["ok"]
    assert version_of(endpoints(project).alb_url.rstrip("/"))


def test_a_new_cross_stack_reference_deploys_the_stack_that_now_exports_first(project: Path) -> None:
    """A commit that changes only the Fargate stack's code, to refer anew to a data stack table (its ARN): CDK adds
    an export to the data stack's template, which the Fargate stack imports. inv diff and deploy.auto count the data
    stack with it (deployed first, where the Fargate stack alone failed: "No export named ... found"); the diff
    previews the data stack's new output and the Fargate stack as waiting for it; the container gets the value."""
    source = project / "cdk" / "stacks" / "fargate_stack.py"
    table = '                "CARS_TABLE": cars_table.table_name,\n'
    assert table in source.read_text()
    source.write_text(source.read_text().replace(table, table + '                "CARS_ARN": cars_table.table_arn,\n'))
    git(project, "commit", "-qam", "fargate: the cars table's ARN too")

    runtime = quiet_runtime(project)
    commands.diff(as_json=True, runtime=runtime)
    preview = json.loads(runtime.stdout.getvalue())  # type: ignore[attr-defined]
    assert preview["changes"] == [
        {"path": "", "component": "stack:data", "kind": "stack"},
        {"path": "cdk/stacks/fargate_stack.py", "component": "stack:fargate", "kind": "stack"},
    ]
    data, fargate = preview["stacks"]["CarRentalDataStack"], preview["stacks"]["CarRentalFargateStack"]
    [output] = data["outputs"]
    export = output.split("(export ")[1].rstrip(")")
    assert output.startswith("+ ") and export.startswith("CarRentalDataStack:") and data["changes"] == []
    assert fargate["no_preview"] == f"No export named {export} found." and fargate["changes"] is None
    said = runtime.stderr.getvalue()  # type: ignore[attr-defined]
    assert f"🐳 Stack:    stack:data (its template now exports {export}, which CarRentalFargateStack imports" in said
    assert f"no preview yet: it imports {export}, which a stack deployed before it in the same run exports" in said

    report, out, _ = auto(project)
    assert report is not None and report.ok, out
    stacks = [r.detail.split(":")[0] for r in all_records(report.records) if r.step == "deploy-stack"]
    assert stacks == ["CarRentalDataStack", "CarRentalFargateStack"], out
    env = load_config(project / "deploy.toml").environment()
    ecs = sandbox_client(project, "ecs")
    running = ecs.describe_services(cluster=env.cluster, services=[env.service])["services"][0]["taskDefinition"]
    [container] = ecs.describe_task_definition(taskDefinition=running)["taskDefinition"]["containerDefinitions"]
    variables = {v["name"]: v["value"] for v in container["environment"]}
    assert variables["CARS_ARN"].startswith("arn:aws:dynamodb:") and ":table/" in variables["CARS_ARN"], variables
    report, out, _ = auto(project)
    assert report is None and "✅ nothing to deploy" in out, out  # both recorded live at this commit


def test_a_change_that_replaces_a_resource_another_stack_imports_is_refused_before_its_change_set_runs(
    project: Path,
) -> None:
    """A name given to the data stack's managed policy, whose ARN the Fargate stack imports: CloudFormation replaces
    the policy, then refuses to change the export in use and rolls the update back (exit 1, a create and a delete on
    AWS). It is refused before the change set is executed (exit 2), nothing changed."""
    data = project / "cdk" / "stacks" / "data_stack.py"
    described = '            "AppDataAccessPolicy",\n'
    assert described in data.read_text()
    data.write_text(
        data.read_text().replace(described, described + '            managed_policy_name="car-rental-app",\n')
    )
    git(project, "commit", "-qam", "data: the policy named")
    cfn = sandbox_client(project, "cloudformation")
    before = cfn.describe_stacks(StackName="CarRentalDataStack")["Stacks"][0]
    change_sets = cfn.list_change_sets(StackName="CarRentalDataStack")["Summaries"]
    try:
        runtime = quiet_runtime(project)
        commands.diff(as_json=True, runtime=runtime)
        preview = json.loads(runtime.stdout.getvalue())["stacks"]["CarRentalDataStack"]  # type: ignore[attr-defined]
        assert preview["export_in_use"].startswith("CarRentalDataStack's change set replaces AppDataAccessPolicy")
        said = runtime.stderr.getvalue()  # type: ignore[attr-defined]
        assert "would carry, which CarRentalFargateStack imports" in said and "(a deploy of it is refused)" in said
        with pytest.raises(UsageError) as refused:
            auto(project)
    finally:
        git(project, "revert", "--no-edit", "HEAD")
    assert refused.value.exit_code == 2
    assert "CarRentalDataStack's change set replaces AppDataAccessPolicy" in refused.value.message
    assert "which CarRentalFargateStack imports" in refused.value.message
    after = cfn.describe_stacks(StackName="CarRentalDataStack")["Stacks"][0]
    assert after["StackStatus"] == before["StackStatus"] and after.get("LastUpdatedTime") == before.get(
        "LastUpdatedTime"
    )
    assert cfn.list_change_sets(StackName="CarRentalDataStack")["Summaries"] == change_sets  # its own, deleted


def test_a_dropped_cross_stack_reference_beside_a_change_of_the_exporting_stack_deploys_keeping_the_export(
    project: Path,
) -> None:
    """CDK's "deadly embrace": a commit that drops the Fargate stack's use of a data stack resource (CDK then drops
    the export from the data stack's template) and changes the data stack. The data stack deploys first, as it
    must, and CloudFormation refused its update ("Export ... cannot be deleted as it is in use by
    CarRentalFargateStack"). Now it keeps the export, which the Fargate stack, deployed next, stops importing; the
    data stack's next deploy drops it."""
    fargate = project / "cdk" / "stacks" / "fargate_stack.py"
    table = '                "CARS_TABLE": cars_table.table_name,\n'
    arn = '                "CARS_ARN": cars_table.table_arn,\n'
    if arn not in fargate.read_text():  # the test before this one left it; run alone, this one adds it
        fargate.write_text(fargate.read_text().replace(table, table + arn))
        git(project, "commit", "-qam", "fargate: the cars table's ARN too")
        report, out, _ = auto(project)
        assert report is not None and report.ok, out
    cfn = sandbox_client(project, "cloudformation")
    [export] = [e["Name"] for e in cfn.list_exports()["Exports"] if "CarsTable" in e["Name"] and "Arn" in e["Name"]]
    data = project / "cdk" / "stacks" / "data_stack.py"
    days = re.search(r"ACCESS_LOG_DAYS = (\d+)", data.read_text())
    assert days is not None
    data.write_text(data.read_text().replace(days[0], f"ACCESS_LOG_DAYS = {int(days[1]) + 1}"))
    fargate.write_text(fargate.read_text().replace(arn, ""))
    git(project, "commit", "-qam", "fargate: no ARN; data: a setting")

    runtime = quiet_runtime(project)
    commands.diff(as_json=True, runtime=runtime)
    preview = json.loads(runtime.stdout.getvalue())  # type: ignore[attr-defined]
    assert preview["stacks"]["CarRentalDataStack"]["kept_exports"] == [export]
    assert preview["stacks"]["CarRentalDataStack"]["changes"], preview  # the setting
    assert preview["stacks"]["CarRentalFargateStack"]["kept_exports"] == []
    said = runtime.stderr.getvalue()  # type: ignore[attr-defined]
    assert f"keeps its export {export}, which CarRentalFargateStack still imports" in said

    report, out, _ = auto(project)
    assert report is not None and report.ok, out
    details = [r.detail for r in all_records(report.records) if r.step == "deploy-stack"]
    assert [d.split(":")[0] for d in details] == ["CarRentalDataStack", "CarRentalFargateStack"], out
    assert f"kept its export {export}, which CarRentalFargateStack still imports" in details[0], out
    assert "kept its export" not in details[1], out
    assert export in {e["Name"] for e in cfn.list_exports()["Exports"]}  # kept, nothing imports it now
    with pytest.raises(Exception, match="is not imported by any stack"):
        cfn.list_imports(ExportName=export)
    env = load_config(project / "deploy.toml").environment()
    ecs = sandbox_client(project, "ecs")
    running = ecs.describe_services(cluster=env.cluster, services=[env.service])["services"][0]["taskDefinition"]
    [container] = ecs.describe_task_definition(taskDefinition=running)["taskDefinition"]["containerDefinitions"]
    assert "CARS_ARN" not in {v["name"] for v in container["environment"]}

    data.write_text(data.read_text().replace(f"ACCESS_LOG_DAYS = {int(days[1]) + 1}", f"ACCESS_LOG_DAYS = {days[1]}"))
    git(project, "commit", "-qam", "data: the setting back")
    report, out, _ = auto(project)
    assert report is not None and report.ok, out
    [detail] = [r.detail for r in all_records(report.records) if r.step == "deploy-stack"]
    assert detail.startswith("CarRentalDataStack") and "kept its export" not in detail, out
    assert export not in {e["Name"] for e in cfn.list_exports()["Exports"]}  # its next deploy dropped it


def test_a_value_the_cdk_app_looks_up_is_refused_until_inv_lookup_writes_it_and_it_is_committed(
    project: Path,
) -> None:
    """``StringParameter.value_from_lookup`` in the data stack: the CDK app synthesizes ``dummy-value-for-...`` in
    its place (the CDK CLI looks it up; deploykit runs the app itself). deploy.auto refuses that template (exit 2,
    nothing deployed); inv lookup asks the sandbox and writes cdk/cdk.context.json; committed, the stack deploys the
    parameter's value."""
    data = project / "cdk" / "stacks" / "data_stack.py"
    imports, last = "from aws_cdk import aws_s3 as s3\n", '        output(self, "KycAccessLogsBucketName"'
    text = data.read_text()
    assert imports in text and last in text
    looked_up = (
        '        tier = ssm.StringParameter.value_from_lookup(self, "/car-rental/support-tier")\n'
        '        output(self, "SupportTier", tier, "The support tier, looked up at synthesis")\n'
    )
    text = text.replace(imports, imports + "from aws_cdk import aws_ssm as ssm\n")
    data.write_text(text.replace(last, looked_up + last))
    git(project, "commit", "-qam", "data: the support tier, looked up")
    cfn = sandbox_client(project, "cloudformation")

    def outputs() -> dict[str, str]:
        stack = cfn.describe_stacks(StackName="CarRentalDataStack")["Stacks"][0]
        return {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])}

    with pytest.raises(lookups.MissingLookups) as refused:
        auto(project)
    assert refused.value.exit_code == 2 and "SSM parameter /car-rental/support-tier" in refused.value.message
    assert str(refused.value.next_step).startswith("inv lookup --env sandbox ")
    assert "SupportTier" not in outputs()
    with pytest.raises(UsageError, match="SSM parameter /car-rental/support-tier does not exist"):
        commands.lookup(runtime=quiet_runtime(project))
    assert not (project / lookups.CONTEXT_FILE).exists()

    sandbox_client(project, "ssm").put_parameter(Name="/car-rental/support-tier", Value="gold", Type="String")
    written = commands.lookup(runtime=quiet_runtime(project))
    [(key, value)] = written.items()
    assert key.startswith("ssm:account=") and "parameterName=/car-rental/support-tier" in key and value == "gold"
    assert git(project, "status", "--porcelain") == f"?? {lookups.CONTEXT_FILE}\n"
    git(project, "add", lookups.CONTEXT_FILE)
    git(project, "commit", "-qm", "lookups for the sandbox")
    report, out, _ = auto(project)
    assert report is not None and report.ok, out
    assert outputs()["SupportTier"] == "gold"


def name_in_deploy_toml(project: Path, role: str, title: str) -> None:
    """``role`` named in every environment's table of deploy.toml: CarRental<title>Stack in the sandbox; another
    environment's name for it has the environment's, a pattern's ``{env}``."""

    def add(found: re.Match[str]) -> str:
        env = found.group(2)
        name = f"CarRental-{{env}}-{title}" if "*" in env else f"CarRental{title}Stack"
        if env != "sandbox" and "*" not in env:
            name += "-" + re.sub(r"[^A-Za-z0-9-]", "-", env)
        return f'{found.group(1)}{role} = "{name}"\n'

    toml = project / "deploy.toml"
    table = r"^(\[environments\.(\"[^\"]*\"|[^.\]]+)\.stacks\]\n(?:[^\[\n].*\n)*)"  # its header and lines: added last
    toml.write_text(re.sub(table, add, toml.read_text(), flags=re.M))


NOTIFICATIONS_STACK = '''"""CarRentalNotificationsStack: a stack of the team's own, beside the platform's five."""

from __future__ import annotations

from typing import Any

from aws_cdk import Duration, Stack
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from stacks.common.nag import suppress
from stacks.common.outputs import output
from stacks.common.settings import Settings


class CarRentalNotificationsStack(Stack):
    def __init__(self, scope: Construct, construct_id: str, *, settings: Settings, **kwargs: Any) -> None:
        super().__init__(scope, construct_id, **kwargs)
        queue = sqs.Queue(self, "Notifications", retention_period=Duration.days(4), enforce_ssl=True)
        suppress(queue, "AwsSolutions-SQS3", "Notifications are best effort here: no dead-letter queue yet.")
        output(self, "NotificationsQueueUrl", queue.queue_url, "Where booking notifications go")
'''


ALERTS_STACK = '''"""CarRentalAlertsStack: tells on-call where the notifications queue is (from its stack)."""

from __future__ import annotations

from typing import Any

from aws_cdk import Stack
from aws_cdk import aws_sqs as sqs
from aws_cdk import aws_ssm as ssm
from constructs import Construct

from stacks.common.settings import Settings


class CarRentalAlertsStack(Stack):
    def __init__(
        self, scope: Construct, construct_id: str, *, settings: Settings, queue: sqs.IQueue, **kwargs: Any
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)
        ssm.StringParameter(self, "QueueUrl", parameter_name="/car-rental/alerts/queue", string_value=queue.queue_url)
'''

AUDIT_STACK = '''"""CarRentalAuditStack: an audit topic, independent of the other stacks."""

from __future__ import annotations

from typing import Any

from aws_cdk import Stack
from aws_cdk import aws_sns as sns
from constructs import Construct

from stacks.common.nag import suppress
from stacks.common.outputs import output
from stacks.common.settings import Settings


class CarRentalAuditStack(Stack):
    def __init__(self, scope: Construct, construct_id: str, *, settings: Settings, **kwargs: Any) -> None:
        super().__init__(scope, construct_id, **kwargs)
        topic = sns.Topic(self, "Audit", enforce_ssl=True)
        suppress(topic, "AwsSolutions-SNS2", "Audit events carry no personal data, only ids and times.")
        output(self, "AuditTopicArn", topic.topic_arn, "Where audit events go")
'''


def test_a_stack_deploys_with_the_service_role_deploy_toml_names_and_one_cloudformation_cannot_take_is_refused(
    project: Path,
) -> None:
    """[environments.sandbox] cloudformation_role_arn: its change deploys nothing; a stack change then goes through
    a change set naming the role, refused (exit 2, nothing changed) while the role does not trust CloudFormation,
    and the stack's once it does."""
    iam, cfn = sandbox_client(project, "iam"), sandbox_client(project, "cloudformation")
    trust = {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Principal": {"Service": "SERVICE"}, "Action": "sts:AssumeRole"}],
    }

    def role(name: str, service: str) -> str:
        policy = json.dumps(trust).replace("SERVICE", service)
        return str(iam.create_role(RoleName=name, AssumeRolePolicyDocument=policy)["Role"]["Arn"])

    untrusting, cfn_exec = role("ec2-only", "ec2.amazonaws.com"), role("cfn-exec", "cloudformation.amazonaws.com")
    toml, table = project / "deploy.toml", "[environments.sandbox]\n"
    plain = toml.read_text()

    def with_role(arn: str) -> None:
        toml.write_text(plain.replace(table, f'{table}cloudformation_role_arn = "{arn}"\n', 1))
        git(project, "commit", "-qam", f"the stacks' service role: {arn}")

    with_role(untrusting)
    report, out, _ = auto(project)
    assert report is None and "✅ nothing to deploy" in out, out  # each stack takes it at its next deploy
    source = project / "cdk" / "stacks" / "fargate_stack.py"
    grace = re.search(r"HEALTH_CHECK_GRACE_PERIOD = Duration.seconds\((\d+)\)", source.read_text())
    assert grace is not None
    source.write_text(
        source.read_text().replace(grace[0], f"HEALTH_CHECK_GRACE_PERIOD = Duration.seconds({int(grace[1]) + 1})")
    )
    git(project, "commit", "-qam", "fargate: a second more of grace")
    before = cfn.describe_stacks(StackName="CarRentalFargateStack")["Stacks"][0]
    with pytest.raises(UsageError) as refused:
        auto(project)
    assert refused.value.exit_code == 2
    assert refused.value.message.startswith(f"CloudFormation cannot act with role {untrusting} (the role of ")
    assert "cloudformation_role_arn of [environments.sandbox]" in (refused.value.next_step or "")
    after = cfn.describe_stacks(StackName="CarRentalFargateStack")["Stacks"][0]
    assert after.get("LastUpdatedTime") == before.get("LastUpdatedTime") and "RoleARN" not in after

    with_role(cfn_exec)
    report, out, _ = auto(project)
    assert report is not None and report.ok, out
    assert cfn.describe_stacks(StackName="CarRentalFargateStack")["Stacks"][0]["RoleARN"] == cfn_exec
    toml.write_text(plain)  # the key taken out: the stack keeps the role, which stays there for the deploys after
    git(project, "commit", "-qam", "no service role named")


def test_the_stacks_send_their_events_to_the_topics_deploy_toml_names_and_keep_them_once_it_names_none(
    project: Path,
) -> None:
    """[environments.sandbox] notification_arns, committed: deploy.auto deploys every stack (a change set of the topics
    alone), each says where its events go now, and a queue subscribed to the topic receives their events; the key
    taken out, there is nothing to deploy and the stacks keep the topic."""
    sns, sqs, cfn = (sandbox_client(project, name) for name in ("sns", "sqs", "cloudformation"))
    topic = sns.create_topic(Name="deploy-events")["TopicArn"]
    queue = sqs.create_queue(QueueName="deploy-events-inbox")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=queue_arn, Attributes={"RawMessageDelivery": "true"})
    toml = project / "deploy.toml"
    plain = toml.read_text()
    table = "[environments.sandbox]\n"
    assert table in plain
    toml.write_text(plain.replace(table, f'{table}notification_arns = ["{topic}"]\n', 1))
    git(project, "commit", "-qam", "the stacks' events to the team's topic")
    names = load_config(project / "deploy.toml").environment("sandbox").stacks.roles().values()
    runtime = quiet_runtime(project)
    commands.diff(as_json=True, runtime=runtime)
    preview = json.loads(runtime.stdout.getvalue())  # type: ignore[attr-defined]
    assert {name: stack["topics"] for name, stack in preview["stacks"].items()} == dict.fromkeys(
        names, "SNS topic deploy-events"
    )
    shown = runtime.stderr.getvalue()  # type: ignore[attr-defined]
    assert "  no resource changes; its events would go to SNS topic deploy-events (a setting of the stack)" in shown
    assert "no CloudFormation change" not in shown, shown

    report, out, _ = auto(project)

    assert report is not None and report.ok, out
    deployed = [r.detail for r in all_records(report.records) if r.step == "deploy-stack"]
    assert sorted(detail.split(":")[0] for detail in deployed) == sorted(names), deployed
    assert all("updated" in d and "its events go to SNS topic deploy-events" in d for d in deployed), deployed
    assert "deploy.toml ([environments.sandbox] notification_arns changed)" in out, out
    assert not ran(report) & {"build", "upload-lambda", "update-code"}
    for name in names:
        assert cfn.describe_stacks(StackName=name)["Stacks"][0]["NotificationARNs"] == [topic]
    told = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10)["Messages"]
    assert any("ResourceStatus='UPDATE_COMPLETE'" in m["Body"] for m in told), told

    toml.write_text(plain)
    git(project, "commit", "-qam", "the key taken out: the stacks keep the topic")
    report, out, _ = auto(project)
    assert report is None and "✅ nothing to deploy" in out, out
    for name in names:
        assert cfn.describe_stacks(StackName=name)["Stacks"][0]["NotificationARNs"] == [topic]


def test_a_stack_added_to_the_app_deploys_once_deploy_toml_names_it_and_then_alone(project: Path) -> None:
    """A stack of the team's own, added to the CDK app (its module, its StackNames field, its construction): until
    deploy.toml names it, deploy.auto refuses (exit 2, nothing deployed), where it deployed the five and never the
    new one; named, it is created and recorded live, and a change to its module deploys it alone (a replacement of
    its queue only with --allow-replace); deleted alone by destroy --stack. Two more, one importing from it: the three
    deploy side by side as far as the app's dependencies let them."""
    cdk = project / "cdk"
    (cdk / "stacks" / "notifications_stack.py").write_text(NOTIFICATIONS_STACK)
    settings = cdk / "stacks" / "common" / "settings.py"
    field = '    api: str = "CarRentalApiStack"\n'
    assert field in settings.read_text()
    settings.write_text(
        settings.read_text().replace(field, field + '    notifications: str = "CarRentalNotificationsStack"\n')
    )
    app = cdk / "app.py"
    imports, tags = "from stacks.registry_stack import", '    Tags.of(app).add("Project", PROJECT_TAG)\n'
    text = app.read_text()
    assert imports in text and tags in text
    text = text.replace(
        imports, "from stacks.notifications_stack import CarRentalNotificationsStack  # noqa: E402\n" + imports
    )
    made = (
        '    CarRentalNotificationsStack(app, names.notifications, settings=settings, **stack_props("notifications"))\n'
    )
    app.write_text(text.replace(tags, made + tags))
    git(project, "add", "-A")
    git(project, "commit", "-qm", "notifications: a stack of our own")
    cfn = sandbox_client(project, "cloudformation")

    def stacks() -> dict[str, str]:
        return {s["StackName"]: s["StackStatus"] for s in cfn.describe_stacks()["Stacks"]}

    report, out, _ = auto(project, dry_run=True)  # its plan synthesizes: the refusal is said beside the plan
    assert report is None and "⚠️  the CDK app makes the stack CarRentalNotificationsStack, which" in out, out
    assert "the deploy would be refused at its synthesis\n  → next: name it there" in out and "(dry run" in out
    with pytest.raises(UsageError) as refused:
        auto(project)
    assert refused.value.exit_code == 2
    assert (
        "the CDK app makes the stack CarRentalNotificationsStack, which [environments.sandbox.stacks]"
        in refused.value.message
    )
    assert 'notifications = "CarRentalNotificationsStack"' in str(refused.value.next_step)
    assert "CarRentalNotificationsStack" not in stacks()

    name_in_deploy_toml(project, "notifications", "Notifications")
    git(project, "commit", "-qam", "deploy.toml: our notifications stack")
    report, out, _ = auto(project)
    assert report is not None and report.ok, out
    done = [
        r.detail.split(":")[0] for r in all_records(report.records) if r.step == "deploy-stack" and r.status == "done"
    ]
    assert done == ["CarRentalNotificationsStack"], out  # the five: their templates are the same ("no changes")
    assert stacks()["CarRentalNotificationsStack"] == "CREATE_COMPLETE"
    assert (
        "/CarRentalNotificationsStack-Notifications"
        in endpoints(project).outputs["CarRentalNotificationsStack"]["NotificationsQueueUrl"]
    )  # for the team's check plugin: ctx.endpoints.outputs
    [record] = commands.history_list(limit=1, runtime=quiet_runtime(project))
    assert "stack:notifications" in record.deployed
    report, out, _ = auto(project)
    assert report is None and "✅ nothing to deploy" in out, out  # recorded live at this commit

    module = cdk / "stacks" / "notifications_stack.py"
    module.write_text(module.read_text().replace("Duration.days(4)", "Duration.days(5)"))
    git(project, "commit", "-qam", "notifications: five days")
    # the queue's retention changes in place, as on AWS: the same queue, its URL (what a stack may import) kept
    url = endpoints(project).outputs["CarRentalNotificationsStack"]["NotificationsQueueUrl"]
    report, out, _ = auto(project)
    assert report is not None and report.ok, out
    [detail] = [r.detail for r in all_records(report.records) if r.step == "deploy-stack"]
    assert detail.startswith("CarRentalNotificationsStack: updated") and "(1 change)" in detail, detail
    assert endpoints(project).outputs["CarRentalNotificationsStack"]["NotificationsQueueUrl"] == url
    sqs = sandbox_client(project, "sqs")
    kept = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["MessageRetentionPeriod"])["Attributes"]
    assert kept["MessageRetentionPeriod"] == str(5 * 86400)
    # a name for the queue replaces it (on AWS too): the data guard knows a queue
    named = 'retention_period=Duration.days(5), queue_name=f"car-rental-{settings.environment}-notifications",'
    module.write_text(module.read_text().replace("retention_period=Duration.days(5),", named))
    git(project, "commit", "-qam", "notifications: its queue named")
    with pytest.raises(UsageError) as refused:
        auto(project)
    assert refused.value.exit_code == 2
    assert (
        "resources that hold data: Notifications" in refused.value.message
        and "AWS::SQS::Queue" in refused.value.message
    )
    report = commands.deploy_stack("notifications", allow_replace=True, runtime=quiet_runtime(project))
    assert report is not None and report.ok
    assert [r.detail.split(":")[0] for r in all_records(report.records) if r.step == "deploy-stack"] == [
        "CarRentalNotificationsStack"
    ]
    report, out, _ = auto(project)
    assert report is None and "✅ nothing to deploy" in out, out  # deploy.stack recorded it live at this commit

    # taken out of the environment alone (before it is taken out of the app): it leaves the live record
    report = commands.destroy(stack="notifications", runtime=quiet_runtime(project))
    assert report is not None and report.ok
    assert "CarRentalNotificationsStack" not in {n for n, status in stacks().items() if status != "DELETE_COMPLETE"}
    [record] = commands.history_list(limit=1, runtime=quiet_runtime(project))
    assert record.command == "destroy" and record.removed == ["stack:notifications"]
    assert "stack:notifications (not deployed yet)" in auto(project, dry_run=True)[1]

    # two more: alerts imports the queue's URL from it (a cross-stack reference), audit imports nothing: the three go
    # beside the platform's last stacks, audit beside notifications, alerts once notifications is created
    module.write_text(
        module.read_text().replace("        queue = sqs.Queue(", "        self.queue = queue = sqs.Queue(")
    )
    (cdk / "stacks" / "alerts_stack.py").write_text(ALERTS_STACK)
    (cdk / "stacks" / "audit_stack.py").write_text(AUDIT_STACK)
    more = '    alerts: str = "CarRentalAlertsStack"\n    audit: str = "CarRentalAuditStack"\n'
    settings.write_text(settings.read_text().replace(field, field + more))
    made_more = (
        "    notifications = " + made.strip() + "\n"
        "    CarRentalAlertsStack(\n"
        '        app, names.alerts, settings=settings, queue=notifications.queue, **stack_props("alerts")\n'
        "    )\n"
        '    CarRentalAuditStack(app, names.audit, settings=settings, **stack_props("audit"))\n'
    )
    imported = (
        "from stacks.alerts_stack import CarRentalAlertsStack  # noqa: E402\n"
        "from stacks.audit_stack import CarRentalAuditStack  # noqa: E402\n"
    )
    app.write_text(app.read_text().replace(made, made_more).replace(imports, imported + imports))
    name_in_deploy_toml(project, "alerts", "Alerts")
    name_in_deploy_toml(project, "audit", "Audit")
    git(project, "add", "-A")
    git(project, "commit", "-qm", "alerts and audit: two more stacks of our own")
    report, out, _ = auto(project)
    assert report is not None and report.ok, out
    assert "▶ parallel: side by side, each after the stacks it depends on: deploy-stack ×5" in out, out
    [group] = [r for r in report.records if r.step == "parallel" and len(r.children) == 5]
    assert [(c.detail.split(":")[0], c.status) for c in group.children] == [
        ("CarRentalFargateStack", "skipped"),
        ("CarRentalApiStack", "skipped"),
        ("CarRentalNotificationsStack", "done"),
        ("CarRentalAlertsStack", "done"),
        ("CarRentalAuditStack", "done"),
    ]

    def events(stack: str) -> list[tuple[datetime, str, str]]:
        found = cfn.describe_stack_events(StackName=stack)["StackEvents"]
        return sorted((e["Timestamp"], e["LogicalResourceId"], e["ResourceStatus"]) for e in found)

    created = next(t for t, logical, status in events("CarRentalNotificationsStack") if status == "CREATE_COMPLETE"
                   and logical == "CarRentalNotificationsStack")  # fmt: skip
    assert events("CarRentalAlertsStack")[0][0] >= created  # it waited: it imports from notifications

    # audit taken out of the app and deploy.toml without inv destroy --stack: its stack stays, and deploy.auto says so
    audit = '    CarRentalAuditStack(app, names.audit, settings=settings, **stack_props("audit"))\n'
    app.write_text(app.read_text().replace(audit, "").replace(imported, imported.splitlines(keepends=True)[0]))
    toml = project / "deploy.toml"
    toml.write_text(toml.read_text().replace('audit = "CarRentalAuditStack"\n', ""))
    git(project, "commit", "-qam", "audit: not ours any more")
    _, out, _ = auto(project, dry_run=True)
    assert "⚠️  stack:audit is in sandbox's live record (deployed at " in out, out
    assert "(next: name it again in every environment's [environments.NAME.stacks]" in out
    assert "then inv destroy --stack audit --env sandbox deletes it" in out

    # notifications alone: refused as it starts (alerts imports from it), naming the command that deletes both
    with pytest.raises(UsageError) as refused:
        commands.destroy(stack="notifications", runtime=quiet_runtime(project))
    assert refused.value.exit_code == 2 and "by CarRentalAlertsStack): it cannot go while they do" in str(refused.value)
    assert str(refused.value.next_step).endswith("delete them with it: inv destroy --stack alerts,notifications --env "
                                                 "sandbox")  # fmt: skip
    assert stacks()["CarRentalNotificationsStack"] == "CREATE_COMPLETE"

    # inv destroy: alerts, fargate and api go at once (nothing imports from them), notifications once alerts is gone
    ids = {name: cfn.describe_stacks(StackName=name)["Stacks"][0]["StackId"] for name in ("CarRentalAlertsStack",
           "CarRentalNotificationsStack")}  # fmt: skip  # a deleted stack's events are read by its id
    report = commands.destroy(runtime=quiet_runtime(project))
    assert report is not None and report.ok
    [group] = [r for r in report.records if r.step == "parallel" and len(r.children) == 4]
    assert [(c.detail.split(" ")[0], c.status) for c in group.children] == [
        ("CarRentalAlertsStack", "done"),
        ("CarRentalNotificationsStack", "done"),
        ("CarRentalFargateStack", "done"),
        ("CarRentalApiStack", "done"),
    ]
    gone = next(t for t, logical, status in events(ids["CarRentalAlertsStack"]) if status == "DELETE_COMPLETE"
                and logical == "CarRentalAlertsStack")  # fmt: skip
    deleting = [t for t, _, status in events(ids["CarRentalNotificationsStack"]) if status == "DELETE_IN_PROGRESS"]
    assert deleting and min(deleting) >= gone  # it waited: alerts imported its queue's URL
