"""inv lambda.cleanup against moto: two functions of the API stack with published versions, an alias serving one
and routing a canary's share to another, the history recording others. Moto's CloudFormation leaves an
``AWS::Lambda::Version`` resource without its physical id, so the API stack's own versions are read through a
Stubber (and on the sandbox, in tests/integration/test_sandbox_lambda_fast_path.py)."""

from __future__ import annotations

import dataclasses
import io
import json
import shutil
import zipfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from unittest.mock import Mock

import pytest
from botocore.exceptions import ClientError
from botocore.stub import Stubber

from deploykit import commands, history, lock, packaging, rollback, version_cleanup
from deploykit.aws import AwsFactory
from deploykit.clock import FakeClock
from deploykit.config import EnvConfig
from deploykit.errors import StepFailed, UsageError
from deploykit.plan import Plan, RunReport
from tests.conftest import REPO, git
from tests.functional.test_cli import inv
from tests.functional.test_endpoints import create_stack
from tests.functional.test_lambda_chain_moto import runtime  # Docker must not be touched here either

HEALTH = "car-rental-dev-health"
IGNORED = shutil.ignore_patterns("__pycache__", "tests")
LOGIN = "car-rental-dev-login"


def sha(n: int) -> str:
    return f"{n:x}" * 12


def code(text: str) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("handler.py", f"def handler(event, context):\n    return {text!r}\n")
    return buffer.getvalue()


def publish(lam: Any, name: str, count: int) -> None:
    """Versions 1..count, version n described ``git <sha(n)>`` as the fast path describes its versions."""
    for n in range(1, count + 1):
        lam.update_function_code(FunctionName=name, ZipFile=code(f"v{n}"))
        assert lam.publish_version(FunctionName=name, Description=f"git {sha(n)}")["Version"] == str(n)


def versions(lam: Any, name: str) -> list[str]:
    listed = lam.list_versions_by_function(FunctionName=name)["Versions"]
    return [v["Version"] for v in listed if v["Version"] != "$LATEST"]


@pytest.fixture
def functions(bucket: str, factory: AwsFactory, dev_env: EnvConfig) -> Any:
    """health: versions 1-8, `live` on 6 routing 10% to 7, the history recording 3 (live) and 2 (before it);
    login: versions 1-2, `live` on 2."""
    role = factory.client("iam").create_role(RoleName="fn-role", AssumeRolePolicyDocument="{}")["Role"]["Arn"]
    lam = factory.client("lambda")
    for name in (HEALTH, LOGIN):
        lam.create_function(
            FunctionName=name, Runtime="python3.11", Role=role, Handler="handler.handler", Code={"ZipFile": code("0")}
        )
    publish(lam, HEALTH, 8)
    publish(lam, LOGIN, 2)
    lam.create_alias(
        FunctionName=HEALTH, Name="live", FunctionVersion="6", RoutingConfig={"AdditionalVersionWeights": {"7": 0.1}}
    )
    lam.create_alias(FunctionName=LOGIN, Name="live", FunctionVersion="2")
    outputs = {"HealthHandlerFunctionName": HEALTH, "LoginHandlerFunctionName": LOGIN}
    create_stack(factory.client("cloudformation"), dev_env.stacks.api, outputs)
    store = history.History.of(factory, dev_env)
    assert store is not None
    store.write(
        history.record_of(
            RunReport(Plan("dev", (), "deploy.lambda health_handler"), [], 1.0),
            components={"lambda:health_handler": sha(3)},
            base={"lambda:health_handler": sha(2)},
            head=sha(3),
            who="ana@laptop",
        )
    )
    return lam


def test_a_dry_run_says_what_it_would_delete_and_why_and_deletes_nothing(
    functions: Any, factory: AwsFactory, project: Path
) -> None:
    out = io.StringIO()
    run = runtime(project, factory, out)
    decision = commands.lambda_cleanup(env="dev", keep=2, dry_run=True, as_json=True, runtime=run)
    data = json.loads(out.getvalue())
    rows = {(v["function"], v["version"]): (v["action"], v["why"]) for v in data["versions"]}
    assert rows[("health_handler", 8)] == ("keep", ["newest 2"])
    canary = "alias live routes 10% of its requests to it (a canary)"
    assert rows[("health_handler", 7)] == ("keep", ["newest 2", canary])
    assert rows[("health_handler", 6)] == ("keep", ["alias live"])
    live, before = rows[("health_handler", 3)], rows[("health_handler", 2)]
    assert live[0] == "keep" and live[1][0].startswith("live in dev since")
    assert before[0] == "keep" and before[1][0].startswith("live in dev before")
    doomed = [key for key, (action, _) in rows.items() if action == "would delete"]
    assert doomed == [("health_handler", 5), ("health_handler", 4), ("health_handler", 1)]
    assert rows[("login_handler", 1)] == ("keep", ["newest 2"])
    assert (data["to_delete"], data["deleted"], data["dry_run"]) == (3, 0, True)
    assert [v.number for v in decision.to_delete] == [5, 4, 1]
    assert versions(functions, HEALTH) == [str(n) for n in range(1, 9)]  # nothing deleted
    assert "dry run: would delete 3 versions of 10" in run.stderr.getvalue()  # type: ignore[attr-defined]


def deploy_record(store: history.History, components: dict[str, str], base: dict[str, str], minute: int) -> None:
    """A successful run's record, ``minute`` minutes after the first one."""
    when = datetime.now(UTC) - timedelta(hours=6) + timedelta(minutes=minute)
    title = "deploy.app" if "app" in components else "deploy.lambda health_handler"
    report = RunReport(Plan("dev", (), title), [], 1.0)
    store.write(history.record_of(report, components=components, base=base, head="x", who="ci", now=when))


@pytest.mark.parametrize("others", [30, 101], ids=["30-others", "101-others"])
@pytest.mark.parametrize("gone", [None, "4"], ids=["the-deploy-before", "its-version-deleted-by-hand"])
def test_the_version_inv_rollback_goes_back_to_stays_however_many_other_deploys_came_since(
    gone: str | None, others: int, bucket: str, factory: AwsFactory, project: Path, dev_env: EnvConfig
) -> None:
    """``inv rollback lambda:health_handler`` (no --to) reads the newest 100 records and goes back to the function's
    newest successful deploy before the live one that has a version (2, 3, 4, then 5 live). 30 app deploys since
    pushed it out of the newest 30 records the cleanup read: its version was deleted, and the rollback then refused.
    It stays and says why, and so does the deploy before it when a person deleted that one's version (rollback
    passes over it); older versions still go. With 101 since, none of the function's deploys is among the newest 100
    records: the rollback reads its own records further back, and so does the cleanup."""
    role = factory.client("iam").create_role(RoleName="fn-role", AssumeRolePolicyDocument="{}")["Role"]["Arn"]
    lam = factory.client("lambda")
    lam.create_function(
        FunctionName=HEALTH, Runtime="python3.11", Role=role, Handler="handler.handler", Code={"ZipFile": code("0")}
    )
    publish(lam, HEALTH, 5)
    lam.create_alias(FunctionName=HEALTH, Name="live", FunctionVersion="5")
    if gone:
        lam.delete_function(FunctionName=HEALTH, Qualifier=gone)
    create_stack(factory.client("cloudformation"), dev_env.stacks.api, {"HealthHandlerFunctionName": HEALTH})
    store = history.History.of(factory, dev_env)
    assert store is not None
    fn = "lambda:health_handler"
    for n in (2, 3, 4, 5):
        deploy_record(store, {fn: sha(n)}, {fn: sha(n - 1)}, n)
    for k in range(others):
        deploy_record(store, {"app": f"{k + 1:012x}"}, {"app": f"{k:012x}"}, 10 + k)
    target = "3" if gone else "4"
    component = rollback.Component("lambda", "health_handler")
    assert rollback.resolve_lambda(factory, dev_env, component, None)[0].version == target

    decision = commands.lambda_cleanup(env="dev", keep=1, runtime=runtime(project, factory))
    why = {c.version.number: (c.delete, "; ".join(c.reasons)) for c in decision.choices}
    assert not why[int(target)][0]
    assert why[int(target)][1].endswith(", what inv rollback may go back to")
    assert versions(lam, HEALTH) == (["3", "5"] if gone else ["4", "5"])
    assert rollback.resolve_lambda(factory, dev_env, component, None)[0].version == target


def test_a_version_a_queue_invokes_is_kept(functions: Any, factory: AwsFactory, project: Path) -> None:
    """An event source mapping may name a version itself: deleting it would stop the queue's deliveries."""
    sqs = factory.client("sqs")
    url = sqs.create_queue(QueueName="bookings")["QueueUrl"]
    queue = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    version_4 = f"{functions.get_function(FunctionName=HEALTH)['Configuration']['FunctionArn']}:4"
    functions.create_event_source_mapping(EventSourceArn=queue, FunctionName=version_4)
    decision = commands.lambda_cleanup(env="dev", keep=2, dry_run=True, runtime=runtime(project, factory))
    why = {c.version.number: c.reasons for c in decision.choices if c.version.function == "health_handler"}
    assert [v.number for v in decision.to_delete] == [5, 1]
    [mapping] = why[4]
    assert mapping.startswith("event source mapping ") and mapping.endswith(" (bookings) invokes it")


def test_a_real_run_deletes_under_the_lock_and_a_later_publish_goes_on(
    functions: Any, factory: AwsFactory, project: Path, dev_env: EnvConfig
) -> None:
    env_lock = lock.EnvLock.of(factory, dev_env, clock=FakeClock())
    assert env_lock is not None
    held = env_lock.acquire("deploy.lambda health_handler")  # a deploy publishing right now
    with pytest.raises(UsageError, match="another deploy holds the lock of environment 'dev'"):
        commands.lambda_cleanup(env="dev", keep=2, runtime=runtime(project, factory))
    assert versions(functions, HEALTH) == [str(n) for n in range(1, 9)]
    held.release()
    run = runtime(project, factory)
    commands.lambda_cleanup(env="dev", function="health_handler", keep=2, runtime=run)
    assert versions(functions, HEALTH) == ["2", "3", "6", "7", "8"]
    assert versions(functions, LOGIN) == ["1", "2"]  # --function: the other one is not touched
    assert "deleted 3 versions" in run.stderr.getvalue()  # type: ignore[attr-defined]
    assert env_lock.read() is None, "the cleanup let the lock go"
    commands.lambda_cleanup(env="dev", function="health_handler", keep=2, runtime=runtime(project, factory))
    assert versions(functions, HEALTH) == ["2", "3", "6", "7", "8"]  # nothing more to delete


def refuse_to_delete(lam: Any, version: str) -> None:
    """DeleteFunction of that version refused from now on, as AWS answers when an alias moved onto it meanwhile."""
    real_delete = lam.delete_function

    def delete(**kwargs: Any) -> Any:
        if kwargs["Qualifier"] == version:
            error = {"Error": {"Code": "ResourceConflictException", "Message": "aliases reference it: [live]"}}
            raise lam.exceptions.ResourceConflictException(error, "DeleteFunction")
        return real_delete(**kwargs)

    lam.delete_function = delete


def test_a_version_that_cannot_be_deleted_is_reported_and_the_others_go(
    functions: Any, factory: AwsFactory, project: Path
) -> None:
    refuse_to_delete(factory.client("lambda"), "4")
    with pytest.raises(StepFailed, match=r"1 of 3 version\(s\) could not be deleted .*car-rental-dev-health:4"):
        commands.lambda_cleanup(env="dev", keep=2, runtime=runtime(project, factory))
    assert versions(functions, HEALTH) == ["2", "3", "4", "6", "7", "8"]


def test_a_version_already_gone_counts_as_deleted(functions: Any, factory: AwsFactory, project: Path) -> None:
    """Another cleanup (or a person) deleted version 4 between the listing and the deletion: DeleteFunction answers
    ResourceNotFoundException. That was a FAILED row and exit 1 for a version gone as wanted; now it is deleted,
    said as already gone, and the run exits 0."""
    lam = factory.client("lambda")
    real_delete = lam.delete_function

    def delete(**kwargs: Any) -> Any:
        if kwargs["Qualifier"] == "4":
            real_delete(**kwargs)  # someone else, first
        return real_delete(**kwargs)

    lam.delete_function = delete
    out = io.StringIO()
    run = runtime(project, factory, out)
    commands.lambda_cleanup(env="dev", function="health_handler", keep=2, as_json=True, runtime=run)
    assert versions(functions, HEALTH) == ["2", "3", "6", "7", "8"]
    printed = run.stderr.getvalue()  # type: ignore[attr-defined]
    [row] = [line for line in printed.splitlines() if line.startswith("health_handler          4")]
    assert " deleted " in row and "already gone (another cleanup, or a person, deleted it first)" in row
    assert "deleted 3 versions, freed" in printed and "; 1 of them already gone" in printed
    data = json.loads(out.getvalue())
    assert data["failures"] == {} and data["already_gone"] == [f"{HEALTH}:4"] and data["deleted"] == 3
    sizes = {v["version"]: v["code_bytes"] for v in data["versions"] if v["action"] == "deleted"}
    assert data["freed_bytes"] == sum(sizes.values()) - sizes[4] > 0  # version 4's bytes: the other one freed them


def test_a_lock_lost_midway_stops_the_deletions_after_reporting_those_done(
    functions: Any, factory: AwsFactory, project: Path
) -> None:
    """The cleanup's lease ran out unrenewed while it deleted (another deploy may hold the lock now, and move an
    alias onto a version about to go): it went on deleting. Now the lease is checked before each version: the rest
    is not done, each row says so, the zips are left as they are, and the run stops with LockLost (exit 1)."""
    run = runtime(project, factory)
    clock = run.clock
    assert isinstance(clock, FakeClock)

    def renewals_fail(**_: Any) -> None:  # after this deletion, the lease has run out
        clock.advance(lock.LEASE_SECONDS + 1)

    factory.client("lambda").meta.events.register("after-call.lambda.DeleteFunction", renewals_fail)
    with pytest.raises(lock.LockLost, match="ran out") as lost:
        commands.lambda_cleanup(env="dev", keep=2, runtime=run)
    assert lost.value.exit_code == 1
    assert versions(functions, HEALTH) == ["1", "2", "3", "4", "6", "7", "8"]  # 5 went, then it stopped
    printed = run.stderr.getvalue()  # type: ignore[attr-defined]
    assert "deleted 1 version, freed" in printed and "; 2 versions could not be deleted" in printed
    assert printed.count(lock.STOPPED) == 2


def test_a_recorded_commit_cloudformation_published_keeps_the_version_running_its_code(
    functions: Any, factory: AwsFactory, project: Path, dev_env: EnvConfig
) -> None:
    """deploy.full's versions name their code, not a commit: the version running the recorded commit's code (as
    packaged from this clone) stays; a recorded commit this clone lacks keeps every version no commit names."""
    shutil.copytree(REPO / "lambda" / "health_handler", project / "lambda" / "health_handler", ignore=IGNORED)
    git(project, "add", "-A")
    git(project, "commit", "-qm", "the health function")
    head = git(project, "rev-parse", "--short=12", "HEAD").strip()
    built = packaging.package_function(project / "lambda" / "health_handler")
    lam = factory.client("lambda")
    for n, zipped in ((9, built.zip_bytes), (10, code("v10"))):  # as CloudFormation describes its versions
        lam.update_function_code(FunctionName=HEALTH, ZipFile=zipped)
        assert lam.publish_version(FunctionName=HEALTH, Description=f"code s3://b/k{n}.zip")["Version"] == str(n)
    for n in (11, 12):
        lam.update_function_code(FunctionName=HEALTH, ZipFile=code(f"v{n}"))
        lam.publish_version(FunctionName=HEALTH, Description=f"git {sha(n)}")
    store = history.History.of(factory, dev_env)
    assert store is not None
    full = RunReport(Plan("dev", (), "deploy.full"), [], 9.0)
    store.write(history.record_of(full, components={"lambda:health_handler": head}, base={}, head=head, who="ci"))

    def decided() -> dict[int, tuple[bool, str]]:
        decision = commands.lambda_cleanup(
            env="dev", function="health_handler", keep=2, dry_run=True, runtime=runtime(project, factory)
        )
        return {c.version.number: (c.delete, "; ".join(c.reasons)) for c in decision.choices}

    why = decided()
    since = history.when_utc(store.records(1)[0].when)
    assert why[9] == (False, f"runs the code of {head} (live in dev since {since})")
    assert why[10][0] and why[5][0]  # CloudFormation's other version, and an old fast-path one

    gone = "0123456789ab"  # recorded, but not in this clone
    store.write(history.record_of(full, components={"lambda:health_handler": gone}, base={}, head=gone, who="ci"))
    why = decided()
    assert not why[10][0] and f"names no commit, and {gone}" in why[10][1] and "not in this clone" in why[10][1]
    assert why[5][0]  # named by its commit: known not to be it


def test_a_dirty_deploy_is_matched_whole_to_the_version_it_published(
    functions: Any, factory: AwsFactory, project: Path, dev_env: EnvConfig
) -> None:
    dirty = "999999999999-dirty-abcdefabcdef"
    lam = factory.client("lambda")
    for n, described in ((9, f"git {dirty}"), (10, "git 999999999999")):  # the clean commit is another version
        lam.update_function_code(FunctionName=HEALTH, ZipFile=code(f"v{n}"))
        assert lam.publish_version(FunctionName=HEALTH, Description=described)["Version"] == str(n)
    lam.update_function_code(FunctionName=HEALTH, ZipFile=code("v11"))
    lam.publish_version(FunctionName=HEALTH, Description=f"git {sha(11)}")
    store = history.History.of(factory, dev_env)
    assert store is not None
    run = RunReport(Plan("dev", (), "deploy.lambda health_handler --allow-dirty"), [], 1.0)
    store.write(history.record_of(run, components={"lambda:health_handler": dirty}, base={}, head=dirty, who="ci"))
    decision = commands.lambda_cleanup(
        env="dev", function="health_handler", keep=1, dry_run=True, runtime=runtime(project, factory)
    )
    why = {c.version.number: (c.delete, "; ".join(c.reasons)) for c in decision.choices}
    assert not why[9][0] and why[9][1].startswith("live in dev since")
    assert why[10][0]  # its clean commit was never recorded


def test_bad_input_is_a_usage_error_that_changes_nothing(functions: Any, factory: AwsFactory, project: Path) -> None:
    with pytest.raises(UsageError, match="no Lambda function 'nope'") as found:
        commands.lambda_cleanup(env="dev", function="nope", runtime=runtime(project, factory))
    assert "health_handler, login_handler" in (found.value.next_step or "")
    with pytest.raises(UsageError, match="--keep must be at least 1"):
        commands.lambda_cleanup(env="dev", keep=0, runtime=runtime(project, factory))
    assert versions(functions, HEALTH) == [str(n) for n in range(1, 9)]


def test_the_inv_task_exits_2_on_a_bad_keep(project: Path) -> None:
    done = inv(project, "lambda.cleanup", "--env", "dev", "--keep", "0")
    assert done.returncode == 2, done.stderr
    assert "--keep must be at least 1" in done.stderr and "→ next:" in done.stderr


def test_the_api_stacks_own_versions_are_kept(factory: AwsFactory, dev_env: EnvConfig) -> None:
    cfn = factory.client("cloudformation")
    summaries = [
        {
            "LogicalResourceId": "HealthHandlerCurrentVersionAbc",
            "PhysicalResourceId": f"arn:aws:lambda:eu-west-1:123456789012:function:{HEALTH}:4",
            "ResourceType": "AWS::Lambda::Version",
            "LastUpdatedTimestamp": "2026-11-29T12:00:00Z",
            "ResourceStatus": "CREATE_COMPLETE",
        },
        {
            "LogicalResourceId": "HealthHandlerAlias",
            "PhysicalResourceId": f"arn:aws:lambda:eu-west-1:123456789012:function:{HEALTH}:live",
            "ResourceType": "AWS::Lambda::Alias",
            "LastUpdatedTimestamp": "2026-11-29T12:00:00Z",
            "ResourceStatus": "CREATE_COMPLETE",
        },
    ]
    with Stubber(cfn) as stub:
        stub.add_response(
            "list_stack_resources", {"StackResourceSummaries": summaries}, {"StackName": dev_env.stacks.api}
        )
        held = version_cleanup.stack_versions(factory, dev_env)
    assert held == {(HEALTH, 4): ["held by CarRentalApiStack (HealthHandlerCurrentVersionAbc)"]}
    found = [version_cleanup.Version("health_handler", HEALTH, n, "", 10, "") for n in (1, 4, 5)]
    decision = version_cleanup.plan_cleanup(found, keep=1, held=held, recorded={})
    assert [(c.version.number, c.delete) for c in decision.choices] == [(5, False), (4, False), (1, True)]


def test_the_versions_a_stack_of_the_teams_own_holds_are_kept_and_a_stack_not_there_holds_none(
    dev_env: EnvConfig,
) -> None:
    """A function may live in a stack of the team's own (stacks/common/functions.py): the versions that stack holds
    are CloudFormation's as the API stack's are. The platform's other stacks hold no function and are not read."""
    jobs = dataclasses.replace(dev_env, stacks=dataclasses.replace(dev_env.stacks, own=(("jobs", "Jobs"),)))
    version = {
        "LogicalResourceId": "NightlyJobCurrentVersionAbc",
        "PhysicalResourceId": "arn:aws:lambda:eu-west-1:123456789012:function:jobs-nightly:3",
        "ResourceType": "AWS::Lambda::Version",
    }
    missing = ClientError({"Error": {"Code": "ValidationError", "Message": "Stack with id X does not exist"}}, "List")
    read: list[str] = []

    def paginate(StackName: str) -> list[dict[str, Any]]:  # boto3's name
        read.append(StackName)
        if StackName != "Jobs":
            raise missing  # the API stack, destroyed
        return [{"StackResourceSummaries": [version]}]

    paginator = Mock(spec=["paginate"], paginate=paginate)
    cfn = Mock(spec=["get_paginator"], get_paginator=Mock(return_value=paginator))
    aws = Mock(spec=AwsFactory, client=Mock(return_value=cfn))
    held = version_cleanup.stack_versions(aws, jobs)
    assert held == {("jobs-nightly", 3): ["held by Jobs (NightlyJobCurrentVersionAbc)"]}
    assert sorted(read) == ["CarRentalApiStack", "Jobs"]
