"""`inv report`: the window of history records read from the artifacts bucket (moto's S3), commit times from git."""

from __future__ import annotations

import dataclasses
import io
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from deploykit import commands, history
from deploykit.aws import AwsFactory
from deploykit.clock import FakeClock
from deploykit.config import EnvConfig
from deploykit.errors import StepFailed, UsageError
from deploykit.plan import Plan, RunReport, StepRecord
from tests.conftest import git

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)


def run(ok: bool = True, seconds: float = 4.0, title: str = "deploy.auto") -> RunReport:
    records = [
        StepRecord("build", "docker build", "done", 0.5, "built"),
        StepRecord("roll-service", "update the service", "done", 0.1, "rolled"),
        StepRecord("wait-healthy", "wait", "done" if ok else "failed", 2.0, "healthy" if ok else "unhealthy"),
    ]
    error = None if ok else StepFailed("the rollout failed", next_step="look")
    return RunReport(Plan("dev", (), title), records, seconds, error)


def write(store: history.History, moment: datetime, head: str, **kwargs: object) -> history.Record:
    ok = bool(kwargs.get("ok", True))
    made = history.record_of(
        run(ok=ok, title=str(kwargs.get("title", "deploy.auto"))),
        components={"app": head},
        base={},
        head=head,
        who="ana@laptop",
        now=moment,
    )
    store.write(made)
    return made


def runtime_at(project: Path, now: datetime) -> commands.Runtime:
    return commands.Runtime(
        config_path=project / "deploy.toml", stdout=io.StringIO(), stderr=io.StringIO(), clock=FakeClock(now)
    )


def test_records_since_lists_only_the_window_oldest_first(bucket: str, dev_env: EnvConfig) -> None:
    store = history.History.of(AwsFactory(dev_env), dev_env)
    assert store is not None
    for days in (40, 10, 3, 1):
        write(store, NOW - timedelta(days=days), f"{days:012d}")
    found = store.records_since(NOW - timedelta(days=7))
    assert [r.head for r in found] == ["000000000003", "000000000001"]
    assert [r.head for r in store.records_since(NOW - timedelta(days=11))] == [
        "000000000010",
        "000000000003",
        "000000000001",
    ]
    assert store.records_since(NOW) == []


def test_inv_report_reads_the_window_and_times_commits_to_live(bucket: str, dev_env: EnvConfig, project: Path) -> None:
    store = history.History.of(AwsFactory(dev_env), dev_env)
    assert store is not None
    head = git(project, "rev-parse", "HEAD").strip()[:12]
    committed = datetime.fromtimestamp(int(git(project, "show", "-s", "--format=%ct", "HEAD")), UTC)
    live_at = committed + timedelta(minutes=5)
    write(store, live_at - timedelta(days=60), head)  # outside the window
    write(store, live_at, head)
    write(store, live_at + timedelta(minutes=1), "bbbbbbbbbbbb", ok=False)
    write(store, live_at + timedelta(minutes=1, seconds=7), head, title="automatic rollback: app")
    runtime = runtime_at(project, live_at + timedelta(hours=1))

    made = commands.deployment_report(env="dev", since="7d", as_json=True, runtime=runtime)

    assert len(made.records) == 3
    data = json.loads(runtime.stdout.getvalue())  # type: ignore[attr-defined]
    assert data["deployments"] == 1 and data["failed"] == 1 and data["rollbacks"] == 1
    assert data["restore"]["median_seconds"] == pytest.approx(7.0)
    assert data["lead_time"] == {"deployments": 1, "median_seconds": pytest.approx(300.0)}
    assert data["dashboard"] is None  # this registry stack has none (the sandbox's has: integration tests)
    printed = runtime.stderr.getvalue()  # type: ignore[attr-defined]
    assert "commit to live   median 5m 00s (1 deployment)" in printed
    assert "newest failed or refused runs:" in printed and "the rollout failed" in printed


def test_commit_to_live_reads_the_commit_time_a_record_keeps(bucket: str, dev_env: EnvConfig, project: Path) -> None:
    """A shallow CI clone lacks the commits deployed from laptops: the time the deploying clone kept is read, so
    every clone says the same; a record of before it was kept falls back to this clone's git."""
    store = history.History.of(AwsFactory(dev_env), dev_env)
    assert store is not None
    kept = dataclasses.replace(
        history.record_of(run(), components={"app": "c" * 12}, base={}, head="c" * 12, now=NOW - timedelta(hours=1)),
        committed=(NOW - timedelta(hours=1, minutes=10)).isoformat(timespec="seconds"),
    )
    store.write(kept)  # a commit this clone does not have
    runtime = runtime_at(project, NOW)

    commands.deployment_report(env="dev", since="7d", as_json=True, runtime=runtime)

    data = json.loads(runtime.stdout.getvalue())  # type: ignore[attr-defined]
    assert data["lead_time"] == {"deployments": 1, "median_seconds": pytest.approx(600.0)}
    assert history.Record.from_json(kept.to_json()).committed == kept.committed
    with pytest.raises(ValueError, match="names no time zone"):
        history.Record.from_json(kept.to_json() | {"committed": "2026-12-03T10:00:00"})


@pytest.mark.parametrize(
    ("since", "message"),
    [
        ("soon", "--since 'soon' is neither a duration nor a time"),
        ("2027-01-01", "--since 2027-01-01 is to come"),
        ("0s", "--since '0s' is not in the past"),
    ],
)
def test_a_window_that_is_no_window_is_a_usage_error(bucket: str, project: Path, since: str, message: str) -> None:
    with pytest.raises(UsageError, match=message) as raised:
        commands.deployment_report(env="dev", since=since, runtime=runtime_at(project, NOW))
    assert raised.value.exit_code == 2


def test_no_registry_stack_means_no_report(moto_aws: None, project: Path) -> None:
    with pytest.raises(UsageError, match="has no history: its registry stack is not deployed"):
        commands.deployment_report(env="dev", runtime=runtime_at(project, NOW))


def test_an_automatic_rollback_within_the_second_of_its_failed_run_restores_it(bucket: str, dev_env: EnvConfig) -> None:
    """Records keep their time to the second; their ids, to the microsecond, keep their order: a Lambda's automatic
    rollback (an alias moved back) ends in the second its failed run did, and restores it (it was "still failing")."""
    store = history.History.of(AwsFactory(dev_env), dev_env)
    assert store is not None
    failed_at = NOW - timedelta(hours=1)
    write(store, failed_at - timedelta(minutes=5), "aaaaaaaaaaaa")
    write(store, failed_at, "bbbbbbbbbbbb", ok=False)
    write(store, failed_at + timedelta(microseconds=600_000), "aaaaaaaaaaaa", title="automatic rollback: app")
    report = history_report(store)
    seconds, still = report.restores()
    assert (seconds, still) == ([0.0], [])


def history_report(store: history.History) -> Any:
    from deploykit.report import Report

    return Report("dev", NOW - timedelta(days=1), NOW, tuple(store.records_since(NOW - timedelta(days=1))))


def test_a_since_in_another_zone_is_shown_in_utc(bucket: str, dev_env: EnvConfig, project: Path) -> None:
    store = history.History.of(AwsFactory(dev_env), dev_env)
    assert store is not None
    write(store, NOW - timedelta(hours=3), "aaaaaaaaaaaa")
    runtime = runtime_at(project, NOW)
    commands.deployment_report(env="dev", since="2026-11-29T10:00:00+02:00", runtime=runtime)
    assert "2026-11-29 08:00 → 2026-11-29 12:00 UTC" in runtime.stderr.getvalue()  # type: ignore[attr-defined]
