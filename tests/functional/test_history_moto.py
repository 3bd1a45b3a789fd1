"""The deployment history and the live record in the environment's artifacts bucket (moto's S3 and CFN)."""

from __future__ import annotations

import contextlib
import io
import json
import os
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from deploykit import commands, freeze, history, lock
from deploykit.aws import AwsFactory
from deploykit.commands import core
from deploykit.config import EnvConfig, load_config
from deploykit.errors import StepFailed, UsageError
from deploykit.plan import NOT_RUN_NOTHING_CHANGED, Context, Outcome, Plan, RunReport, Step, StepRecord
from deploykit.stack_chain import DestroyStack, action_key
from tests.functional.conftest import ARTIFACTS_BUCKET as BUCKET
from tests.functional.conftest import Deploy, asked, held_each, held_together


def report(ok: bool = True, seconds: float = 12.0) -> RunReport:
    records = [
        StepRecord("build", "docker build", "done", 8.0, "built"),
        StepRecord("deploy-stack", "stack", "skipped", 0.3, "CarRentalApiStack: no changes"),
        StepRecord(
            "parallel",
            "group",
            "done",
            4.0,
            "1 of 1",
            children=[
                StepRecord("deploy-stack", "stack", "done", 4.0, "CarRentalFargateStack: updated in 4.0s"),
            ],
        ),
        StepRecord("smoke", "checks", "done" if ok else "not run", 0.5, "4 passed" if ok else ""),
    ]
    error = None if ok else StepFailed("the rollout failed", next_step="look")
    return RunReport(Plan("dev", (), "deploy.app"), records, seconds, error)


def test_records_are_listed_newest_first_and_feed_the_live_record(bucket: str, dev_env: EnvConfig) -> None:
    store = history.History.of(AwsFactory(dev_env), dev_env)
    assert store is not None and store.bucket == BUCKET
    t0 = datetime(2026, 11, 28, 9, 0, tzinfo=UTC)
    first = history.record_of(
        report(), components={"app": "aaaaaaaaaaaa"}, base={"app": None}, head="aaaaaaaaaaaa", who="ana@laptop", now=t0
    )
    store.write(first)
    failed = history.record_of(
        report(ok=False),
        components={"app": "bbbbbbbbbbbb"},
        base={"app": "aaaaaaaaaaaa"},
        head="bbbbbbbbbbbb",
        who="ci",
        now=t0 + timedelta(minutes=5),
    )
    store.write(failed)
    again = history.record_of(
        report(),
        components={"app": "aaaaaaaaaaaa", "stack:api": "aaaaaaaaaaaa"},
        base={},
        head="aaaaaaaaaaaa",
        who="ana@laptop",
        now=t0 + timedelta(minutes=9),
    )
    store.write(again)

    records = store.records()
    assert [(r.who, r.ok, r.head) for r in records] == [
        ("ana@laptop", True, "aaaaaaaaaaaa"),
        ("ci", False, "bbbbbbbbbbbb"),
        ("ana@laptop", True, "aaaaaaaaaaaa"),
    ]
    assert records[1].error == "the rollout failed" and records[1].base == {"app": "aaaaaaaaaaaa"}
    assert [s["step"] for s in records[0].steps] == ["build", "deploy-stack", "parallel", "deploy-stack", "smoke"]
    assert store.records(limit=1)[0].id == again.id
    live = store.live()
    # a failed deploy never moves the live record; redeploying the same SHA keeps its "since"
    assert live["app"] == {"sha": "aaaaaaaaaaaa", "when": first.when, "record": first.id}
    assert live["stack:api"]["record"] == again.id

    # the records' bodies are fetched together: each GetObject waits until all three are in flight (read again
    # from S3, not from this machine's cache of the reads above)
    store.cache = history.RecordCache(None)
    held_together(store.s3, "GetObject", 3)
    assert [r.id for r in store.records()] == [again.id, failed.id, first.id]


def test_the_newest_records_are_listed_from_the_recent_windows_not_the_whole_history(
    bucket: str, dev_env: EnvConfig
) -> None:
    """S3 lists keys oldest first, 1000 a page: the newest records come from the last week's keys when it holds
    enough of them, from the last 90 days' next, from the whole history last, and always in the right order."""
    store = history.History.of(AwsFactory(dev_env), dev_env)
    assert store is not None
    now = datetime.now(UTC)
    ages = [timedelta(days=400), timedelta(days=300), timedelta(days=30), timedelta(days=20), timedelta(days=10)]
    ages += [timedelta(hours=hours) for hours in range(100, 0, -5)]  # 20 in the last week, the newest last
    written = []
    for n, age in enumerate(ages):
        made = history.record_of(report(), components={}, base={}, head=f"{n:012d}", who="ci", now=now - age)
        store.write(made)
        written.append(made.id)
    listed: list[int] = []  # keys in each ListObjectsV2 answer

    def count(parsed: dict[str, object], **_: object) -> None:
        listed.append(len(parsed.get("Contents") or ()))  # type: ignore[arg-type]

    store.s3.meta.events.register("after-call.s3.ListObjectsV2", count)
    newest_first = written[::-1]
    store.first_page = 10  # a first page of ten keys: this history is longer
    # each time the oldest ten keys beside the first window, at the same time
    assert [r.id for r in store.records(20)] == newest_first[:20]
    assert sorted(listed) == [10, 20]  # the last week alone: none of the older keys listed
    listed.clear()
    assert [r.id for r in store.records(22)] == newest_first[:22]
    assert sorted(listed) == [10, 20, 23]  # the week held too few: the last 90 days
    listed.clear()
    assert [r.id for r in store.records(100)] == newest_first
    assert sorted(listed) == [10, 20, 23, 25]  # fewer than asked in 90 days: the whole history
    listed.clear()
    assert store.records(0) == [] and listed == []
    # the 25 records' bodies in one round trip: each GetObject waits until all 25 are in flight (from S3, not from
    # the cache of the reads above)
    store.cache = history.RecordCache(None)
    held_together(store.s3, "GetObject", 25)
    assert [r.id for r in store.records(100)] == newest_first


def test_a_history_of_one_page_is_read_in_one_round_trip_however_old(bucket: str, dev_env: EnvConfig) -> None:
    """Fewer records than asked, a year apart: the first page of the whole history holds them all."""
    store = history.History.of(AwsFactory(dev_env), dev_env)
    assert store is not None
    now = datetime.now(UTC)
    for hours in (9000, 5000, 10):
        store.write(
            history.record_of(
                report(), components={}, base={}, head="a" * 12, who="ci", now=now - timedelta(hours=hours)
            )
        )
    calls: list[str] = []
    store.s3.meta.events.register("before-call.s3.ListObjectsV2", lambda **kw: calls.append("list"))
    held_together(store.s3, "ListObjectsV2", 2)  # the first page and the last week: asked at the same time
    assert len(store.records(30)) == 3
    assert calls == ["list", "list"]


def fetched(client: object) -> list[str]:
    """The key of each GetObject ``client`` makes from now on."""
    return asked(client, "GetObject", "Key")


def test_records_read_before_are_read_from_this_machine_under_the_etag_listed_now(
    bucket: str, dev_env: EnvConfig, record_cache: Path
) -> None:
    """A record never changes once written: one this machine wrote is kept as it was written, one another machine
    wrote is fetched once; the second read, by a new command (a new History), lists the keys and fetches no body;
    an object written again under its key (another ETag) is fetched again."""
    t0 = datetime(2026, 11, 28, 9, 0, tzinfo=UTC)
    written = [
        history.record_of(
            report(),
            components={"app": f"{n:012d}"},
            base={},
            head=f"{n:012d}",
            who="ci",
            now=t0 + timedelta(minutes=n),
        )
        for n in range(3)
    ]
    first = history.History.of(AwsFactory(dev_env), dev_env)
    assert first is not None
    for record in written[:2]:
        first.write(record)
    written_elsewhere(dev_env, written[2])
    gets = fetched(first.s3)
    assert [r.id for r in first.records()] == [r.id for r in reversed(written)]
    assert gets == [f"{first.prefix}{written[2].id}.json"]  # this machine's two were kept as they were written
    assert len(list((record_cache / "history" / BUCKET).rglob("*.json.*"))) == 3

    again = history.History.of(AwsFactory(dev_env), dev_env)
    assert again is not None
    gets = fetched(again.s3)
    assert [r.to_json() for r in again.records()] == [r.to_json() for r in reversed(written)]
    assert gets == []  # none fetched: all three from the cache
    assert [r.head for r in again.records_since(t0)] == ["000000000000", "000000000001", "000000000002"]
    assert gets == []

    # the middle record's object written again, other content, same key: that one alone is fetched
    key = f"{again.prefix}{written[1].id}.json"
    changed = {**written[1].to_json(), "who": "someone else"}
    again.s3.put_object(Bucket=BUCKET, Key=key, Body=json.dumps(changed).encode())
    assert [r.who for r in again.records()] == ["ci", "someone else", "ci"]
    assert gets == [key]


def written_elsewhere(env: EnvConfig, record: history.Record) -> None:
    """``record`` written by another machine: this one's cache does not hold it."""
    history.History(AwsFactory(env), env, BUCKET, cache=history.RecordCache(None)).write(record)


def test_a_cache_that_cannot_be_used_is_passed_over(
    bucket: str, dev_env: EnvConfig, record_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cached body that is not a record is fetched again (and mended); a cache that cannot be written (here its
    root is a file), or one turned off, leaves every read to S3 and fails nothing."""
    store = history.History.of(AwsFactory(dev_env), dev_env)
    assert store is not None
    record = history.record_of(report(), components={"app": "a" * 12}, base={}, head="a" * 12, who="ci")
    written_elsewhere(dev_env, record)  # another machine's: this one fetches it
    gets = fetched(store.s3)
    assert [r.id for r in store.records()] == [record.id] and len(gets) == 1
    [kept] = (record_cache / "history").rglob("*.json.*")
    kept.write_bytes(b'{"id": "half a rec')  # as a disk that filled up could leave it
    assert [r.id for r in store.records()] == [record.id] and len(gets) == 2
    assert json.loads(kept.read_bytes())["id"] == record.id  # mended
    assert [r.id for r in store.records()] == [record.id] and len(gets) == 2

    blocked = record_cache / "a-file"
    blocked.write_text("not a folder")
    monkeypatch.setenv("DEPLOYKIT_CACHE_DIR", str(blocked))
    unwritable = history.History.of(AwsFactory(dev_env), dev_env)
    assert unwritable is not None
    gets = fetched(unwritable.s3)
    for _ in range(2):
        assert [r.id for r in unwritable.records()] == [record.id]
    assert len(gets) == 2

    monkeypatch.setenv("DEPLOYKIT_CACHE_DIR", str(record_cache))
    monkeypatch.setenv("DEPLOYKIT_NO_CACHE", "1")
    off = history.History.of(AwsFactory(dev_env), dev_env)
    assert off is not None and off.cache.root is None
    gets = fetched(off.s3)
    assert [r.id for r in off.records()] == [record.id] and len(gets) == 1


def test_what_was_kept_long_ago_goes_once_a_day_after_a_read_that_fetched(
    bucket: str, dev_env: EnvConfig, record_cache: Path
) -> None:
    store = history.History.of(AwsFactory(dev_env), dev_env)
    assert store is not None
    for n in range(2):
        written_elsewhere(
            dev_env, history.record_of(report(), components={"app": f"{n:012d}"}, base={}, head=f"{n:012d}", who="ci")
        )
    assert len(store.records()) == 2
    folder = record_cache / "history" / BUCKET
    old, young = sorted(folder.rglob("*.json.*"))
    long_ago = time.time() - (history.CACHE_KEEP_DAYS + 1) * 86400
    os.utime(old, (long_ago, long_ago))
    assert (folder / ".pruned").exists()  # the first read fetched, and pruned (nothing was old)

    # within the day: nothing is looked at, however old
    written_elsewhere(
        dev_env, history.record_of(report(), components={"app": "2" * 12}, base={}, head="2" * 12, who="ci")
    )
    assert len(store.records()) == 3 and old.exists()
    # a day later, a read that fetches prunes: the old body goes, the young ones and the new one stay
    os.utime(folder / ".pruned", (time.time() - 86401, time.time() - 86401))
    written_elsewhere(
        dev_env, history.record_of(report(), components={"app": "3" * 12}, base={}, head="3" * 12, who="ci")
    )
    assert len(store.records()) == 4 and not old.exists() and young.exists()
    assert len(list(folder.rglob("*.json.*"))) == 3
    gets = fetched(store.s3)
    assert len(store.records()) == 4 and len(gets) == 1  # the pruned one is fetched once more, and kept anew
    assert len(list(folder.rglob("*.json.*"))) == 4


def test_pruning_counts_what_it_deletes_and_passes_over_what_it_cannot_read(tmp_path: Path) -> None:
    cache = history.RecordCache(tmp_path)
    now = 1_000_000_000.0
    folder = tmp_path / "history" / "b" / "deploykit" / "history" / "dev"
    folder.mkdir(parents=True)
    for name, age_days in (("a.json.1", 100), ("b.json.2", 89), ("c.json.3", 91)):
        (folder / name).write_text("{}")
        os.utime(folder / name, (now - age_days * 86400, now - age_days * 86400))
    assert cache.prune("b", now) == 2 and [p.name for p in folder.iterdir()] == ["b.json.2"]
    assert cache.prune("b", now + 3600) == 0  # within the day
    assert history.RecordCache(None).prune("b", now) == 0
    assert history.RecordCache(tmp_path / "missing").prune("b", now) == 0


def test_where_the_cache_lives_and_what_it_keeps(tmp_path: Path) -> None:
    home = Path.home()
    assert history.RecordCache.default({}).root == home / ".cache" / "deploykit"
    assert history.RecordCache.default({"XDG_CACHE_HOME": "/x"}).root == Path("/x/deploykit")
    assert history.RecordCache.default({"XDG_CACHE_HOME": "/x", "DEPLOYKIT_CACHE_DIR": "/y"}).root == Path("/y")
    assert history.RecordCache.default({"DEPLOYKIT_CACHE_DIR": "/y", "DEPLOYKIT_NO_CACHE": "1"}).root is None
    assert history.RecordCache.default({"DEPLOYKIT_NO_CACHE": "0"}).root == home / ".cache" / "deploykit"

    cache = history.RecordCache(tmp_path)
    key = "deploykit/history/dev/20261128T090000.000000-abcd.json"
    assert (
        cache.path("b", key, '"0123abcd"')
        == tmp_path / "history/b/deploykit/history/dev/20261128T090000.000000-abcd.json.0123abcd"
    )
    assert cache.path("b", key, '"9f86d081-2"') is not None  # a multipart upload's ETag
    # nothing kept for what would leave the cache, nor without an ETag
    for bucket, odd, etag in (
        ("b", "deploykit/../../x.json", "e"),
        ("b", "/x.json", "e"),
        ("../b", key, "e"),
        ("b", key, ""),
        ("b", key, '"a/b"'),
        ("b", key, None),
    ):
        assert cache.path(bucket, odd, etag) is None
        cache.put(bucket, odd, etag, b"{}")
        assert cache.get(bucket, odd, etag) is None
    assert [p.name for p in tmp_path.rglob("*") if p.is_file()] == []
    cache.put("b", key, '"e1"', b'{"id": "1"}')
    assert cache.get("b", key, '"e1"') == b'{"id": "1"}' and cache.get("b", key, '"e2"') is None
    assert history.RecordCache(None).get("b", key, '"e1"') is None


def test_without_a_home_there_is_no_cache_and_no_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    """A container's arbitrary user: no $HOME, no passwd entry (Path.home raises)."""

    def nowhere() -> Path:
        raise RuntimeError("Could not determine home directory.")

    monkeypatch.setattr(Path, "home", staticmethod(nowhere))
    assert history.RecordCache.default({}).root is None
    assert history.RecordCache.default({"XDG_CACHE_HOME": "/x"}).root == Path("/x/deploykit")


def test_the_table_names_a_dirty_build_deployed_by_its_whole_tag(bucket: str, dev_env: EnvConfig) -> None:
    """A build of uncommitted changes (--allow-dirty) is in no commit: the table's deployed column says its tag, as
    --json does, never the commit under it (which reads as a clean deploy of that commit to the next clone)."""
    store = history.History.of(AwsFactory(dev_env), dev_env)
    assert store is not None
    dirty = f"{'d' * 12}-dirty-{'e' * 12}"
    run = RunReport(Plan("dev", (), "deploy.auto"), [StepRecord("build", "docker build", "done", 1.0, "built")], 1.5)
    store.write(history.record_of(run, components={"app": dirty}, base={}, head=dirty, who="ana"))
    [read] = store.records()
    assert read.to_json()["components"] == {"app": dirty}
    assert f"app@{dirty}" in history.table([read]).splitlines()[-1]
    full = "f" * 40  # a full SHA is still cut to its 12 first digits
    store.write(history.record_of(run, components={"app": full}, base={}, head=full, who="ana"))
    assert f"app@{'f' * 12} " in history.table(store.records()[:1]).splitlines()[-1] + " "


def test_a_run_a_guard_stopped_is_recorded_as_refused_and_moves_nothing(bucket: str, dev_env: EnvConfig) -> None:
    store = history.History.of(AwsFactory(dev_env), dev_env)
    assert store is not None
    refusal = RunReport(
        Plan("dev", (), "deploy.stack CarRentalFargateStack"),
        [StepRecord("deploy-stack", "stack", "failed", 0.4, "refusing to deploy CarRentalFargateStack")],
        0.5,
        UsageError("refusing to deploy CarRentalFargateStack to a protected environment unapproved"),
    )
    failed = history.record_of(report(ok=False), components={"app": "b" * 12}, base={}, head="b" * 12, who="ci")
    refused = history.record_of(refusal, components={"stack:fargate": "c" * 12}, base={}, head="c" * 12, who="ci")
    assert (failed.refused, failed.result) == (False, "failed")
    assert (refused.refused, refused.result) == (True, "refused")
    store.write(refused)
    [read] = store.records()
    assert read.refused and store.live() == {} and read.to_json()["result"] == "refused"
    assert "🛑 refused" in history.table([read]) and "❌ failed" in history.table([failed])
    # records written before the field existed read as not refused
    assert not history.Record.from_json({k: v for k, v in read.to_json().items() if k != "refused"}).refused


def test_a_successful_record_is_written_while_the_live_record_is_read(bucket: str, dev_env: EnvConfig) -> None:
    """Two independent calls, one round trip: the record's PutObject and the live record's GetObject wait until
    both are in flight; then the live record is written."""
    store = history.History.of(AwsFactory(dev_env), dev_env)
    assert store is not None
    held_together(store.s3, ("PutObject", "GetObject"), 2)
    record = history.record_of(report(), components={"app": "aaaaaaaaaaaa"}, base={}, head="aaaaaaaaaaaa", who="ci")
    store.write(record)
    assert store.live()["app"]["record"] == record.id and [r.id for r in store.records()] == [record.id]


def test_given_the_live_record_read_under_the_lock_the_record_is_written_then_it_and_nothing_read(
    bucket: str, dev_env: EnvConfig
) -> None:
    """The run read the live record while holding the lock: the record is put, then the new live record (never one
    naming a run whose record is not there yet: a rollback reads the live record, then the history), and the live
    record is not read again; the given one is not changed in place."""
    store = history.History.of(AwsFactory(dev_env), dev_env)
    assert store is not None
    first = history.record_of(report(), components={"app": "a" * 12}, base={}, head="a" * 12, who="ci")
    store.write(first)
    read = store.live()
    reads = fetched(store.s3)
    puts: list[str] = []
    store.s3.meta.events.register("before-parameter-build.s3.PutObject", lambda params, **_: puts.append(params["Key"]))
    store.s3.meta.events.register("after-call.s3.PutObject", lambda **_: puts.append("done"))
    second = history.record_of(
        report(), components={"lambda:login_handler": "b" * 12}, base={}, head="b" * 12, who="ci"
    )
    store.write(second, live=read)
    assert reads == []
    assert puts == [f"{store.prefix}{second.id}.json", "done", store.live_key, "done"]
    assert store.live() == {
        "app": {"sha": "a" * 12, "when": first.when, "record": first.id},
        "lambda:login_handler": {"sha": "b" * 12, "when": second.when, "record": second.id},
    }
    assert list(read) == ["app"]


def test_taking_the_unsmoked_mark_off_raises_a_refusal_and_says_false_only_for_a_write_meanwhile(
    bucket: str, dev_env: EnvConfig
) -> None:
    """clear_unsmoked's conditional PutObject: refused (AccessDenied), the error is raised (inv smoke: 'its history
    could not be read or written (...)'), not taken for a deploy that ran while the checks ran (False); the live
    record written since the read (PreconditionFailed) is that False. The mark stays either way."""
    store = history.History.of(AwsFactory(dev_env), dev_env)
    assert store is not None
    done = RunReport(Plan("dev", (), "deploy.app"), [StepRecord("roll-service", "roll", "done", 1.0)], 1.0)
    store.write(history.record_of(done, components={"app": "a" * 12}, base={}, head="a" * 12))
    before = store.live()
    assert before["app"].get("unsmoked") == "true"

    def refuse(params: dict[str, Any], **_: Any) -> Any:
        if not str(params.get("url_path", "")).endswith(store.live_key):
            return None
        error = {"Error": {"Code": "AccessDenied", "Message": "Access Denied"}, "ResponseMetadata": {}}
        return type("Response", (), {"status_code": 403, "headers": {}})(), error

    store.s3.meta.events.register("before-call.s3.PutObject", refuse)
    with pytest.raises(ClientError) as refused:
        store.clear_unsmoked(before)
    assert refused.value.response["Error"]["Code"] == "AccessDenied"
    store.s3.meta.events.unregister("before-call.s3.PutObject", refuse)
    assert store.live()["app"].get("unsmoked") == "true"

    store.write(history.record_of(done, components={"app": "b" * 12}, base={}, head="b" * 12))  # a deploy meanwhile
    assert store.clear_unsmoked(before) is False
    entry = store.live()["app"]
    assert (entry["sha"], entry.get("unsmoked")) == ("b" * 12, "true")


def test_a_component_deployed_without_its_smoke_is_marked_in_the_live_record_until_a_smoke_passes(
    bucket: str, dev_env: EnvConfig
) -> None:
    """What a run without its smoke (--no-smoke) deployed was never verified there: its live record entry says so (a
    promotion does not count it) until a run's smoke passes; one whose smoke was skipped leaves it, whatever commit it
    names. A rollback (back to what ran before) and a component carried unchanged are not marked."""
    store = history.History.of(AwsFactory(dev_env), dev_env)
    assert store is not None
    rolled = [StepRecord("roll-service", "roll", "done", 1.0)]

    def run(components: dict[str, str], steps: list[StepRecord], command: str = "deploy.app", **more: Any) -> None:
        done = RunReport(Plan("dev", (), command), steps, 1.0)
        store.write(history.record_of(done, components=components, base={}, head="h" * 12, **more))

    def marked() -> list[str]:
        return sorted(c for c, entry in store.live().items() if entry.get("unsmoked") == "true")

    run({"app": "a" * 12, "stack:api": "a" * 12}, rolled, unchanged=["stack:api"])
    assert marked() == ["app"]  # the stack, carried, was not deployed
    run({"app": "a" * 12}, rolled)  # the same commit again: still never smoked
    assert marked() == ["app"]
    skipped = [*rolled, StepRecord("smoke", "checks", "skipped", 0.0)]  # everything found in place
    run({"app": "a" * 12}, skipped)
    run({"app": "e" * 12}, skipped)  # a later commit of the same code: what serves was still never smoked
    assert marked() == ["app"]
    run({"lambda:fn": "b" * 12}, skipped)  # its smoke skipped
    assert marked() == ["app"]
    run({"lambda:fn": "c" * 12}, [*rolled, StepRecord("smoke", "checks", "done", 1.0)])
    assert marked() == []  # a smoke checks everything the environment runs
    run({"app": "d" * 12}, rolled, command="rollback app → " + "d" * 12)
    assert marked() == []


def test_a_live_record_another_deploy_wrote_meanwhile_keeps_its_entries(bucket: str, dev_env: EnvConfig) -> None:
    """A deploy whose lock was broken or taken over may not know it yet (the lock is read back every 15 s): its live
    record, read when the run began, is written on condition that it is still so. Found changed (another deploy
    wrote it), it is read again and its entries kept, this run's put over them, said; as when the other deploy made
    the first live record meanwhile."""
    said: list[str] = []
    store = history.History.of(AwsFactory(dev_env), dev_env, warn=said.append)
    assert store is not None
    empty = store.live()
    assert empty == {} and empty.etag is None
    other = history.record_of(report(), components={"lambda:fn": "b" * 12}, base={}, head="b" * 12, who="ci")
    store.write(other)  # the other deploy, meanwhile
    ours = history.record_of(report(), components={"app": "a" * 12}, base={}, head="a" * 12, who="laptop")
    store.write(ours, live=empty)
    assert {c: v["sha"] for c, v in store.live().items()} == {"app": "a" * 12, "lambda:fn": "b" * 12}
    assert len(said) == 1 and "changed since this run read it under its lock" in said[0]

    read = store.live()
    again = history.record_of(report(), components={"lambda:fn": "c" * 12}, base={}, head="c" * 12, who="ci")
    store.write(again)
    late = history.record_of(report(), components={"app": "d" * 12}, base={}, head="d" * 12, who="laptop")
    store.write(late, live=read)
    assert {c: v["sha"] for c, v in store.live().items()} == {"app": "d" * 12, "lambda:fn": "c" * 12}
    assert len(said) == 2
    # as it read it: written at once, nothing said
    store.write(
        history.record_of(report(), components={"app": "e" * 12}, base={}, head="e" * 12, who="ci"), live=store.live()
    )
    assert store.live()["app"]["sha"] == "e" * 12 and len(said) == 2


class ReadsTheBucket(Step):
    """A step that reads an object of the artifacts bucket (its first call)."""

    name = "read"

    def describe(self) -> str:
        return "read"

    def run(self, ctx: Context) -> Outcome:
        with contextlib.suppress(ctx.aws.client("s3").exceptions.NoSuchKey):
            ctx.aws.client("s3").get_object(Bucket=BUCKET, Key="deploykit/elsewhere.json")
        return Outcome.done("read")

    def inputs(self) -> dict[str, object]:
        return {}


def test_a_run_reads_the_live_record_once_while_its_first_step_runs(
    bucket: str, dev_env: EnvConfig, project: Path
) -> None:
    """What was live before a run is read under its lock at the same time as the plan's first step runs (both
    reads are held until both are in flight), and once: the live record written after it is that one, updated."""
    runtime = commands.Runtime(config_path=project / "deploy.toml", stdout=io.StringIO(), stderr=io.StringIO())
    config = load_config(project / "deploy.toml")
    aws = AwsFactory(dev_env)
    store = history.History.of(aws, dev_env)
    assert store is not None
    store.write(history.record_of(report(), components={"app": "a" * 12}, base={}, head="a" * 12, who="ci"))
    keys = fetched(aws.client("s3"))
    # the first two reads pass: the environment's freeze and pause, read while the lock is taken (deploykit.freeze,
    # deploykit.pause)
    held_together(aws.client("s3"), "GetObject", 2, passing=2)
    plan = Plan("dev", (ReadsTheBucket(),), "deploy.demo", deploys=(("lambda:login_handler", "dddddddddddd"),))
    commands.run_plan(runtime, config, dev_env, plan, dry_run=False, as_json=False, aws=aws)
    assert sorted(keys[:2]) == ["deploykit/freeze/dev.json", "deploykit/pause/dev.json"]
    assert sorted(keys[2:]) == sorted(["deploykit/elsewhere.json", store.live_key])
    [record, _] = store.records()
    assert record.base == {"lambda:login_handler": None}
    assert {c: v["sha"] for c, v in store.live().items()} == {"app": "a" * 12, "lambda:login_handler": "d" * 12}


def test_estimates_are_the_median_of_the_steps_that_ran_skips_included() -> None:
    runs = [
        history.Record.from_json(
            {
                "id": str(i),
                "env": "dev",
                "when": "2026-11-29T10:00:00+00:00",
                "steps": [
                    {"step": "build", "status": "done", "seconds": s},
                    {
                        "step": "deploy-stack",
                        "status": "done",
                        "seconds": s * 2,
                        "detail": "CarRentalApiStack: updated",
                    },
                    {"step": "push", "status": "skipped", "seconds": 0.1},
                    # the first run built the base image; the others found it current
                    {"step": "base-image", "status": "done", "seconds": 60.0}
                    if s == 10.0
                    else {"step": "base-image", "status": "skipped", "seconds": 0.04},
                    {"step": "smoke", "status": "failed", "seconds": 30.0},  # cut short: says nothing of its time
                ],
            }
        )
        for i, s in enumerate((1.0, 3.0, 10.0))
    ]
    assert history.estimates(runs) == {
        "build": 3.0,
        "deploy-stack:CarRentalApiStack": 6.0,
        "push": 0.1,
        "base-image": 0.0,  # not the build's minute
    }


def test_a_smoke_the_executor_did_not_run_is_no_estimate_of_its_time() -> None:
    """A deploy.stack with no change skips its smoke (nothing changed before it): 0 s, which is no time smoke takes.
    Two of them beside one smoke of 5 s made deploy.auto's smoke (which always runs) estimated at 0.0 s."""
    not_run = {"step": "smoke", "status": "skipped", "seconds": 0.0, "detail": NOT_RUN_NOTHING_CHANGED}
    runs = [
        history.Record.from_json({"id": str(i), "env": "dev", "when": "2026-11-29T10:00:00+00:00", "steps": [step]})
        for i, step in enumerate([not_run, not_run, {"step": "smoke", "status": "done", "seconds": 5.0}])
    ]
    assert history.estimates(runs) == {"smoke": 5.0}


def test_a_stacks_creation_is_not_the_estimate_of_its_updates_while_there_are_some() -> None:
    """The first deploy.full created every stack (on AWS minutes more than an update): a plan's deploy-stack is an
    update, estimated by the updates recorded; by the creation only while there is nothing else."""

    def run(i: int, detail: str, seconds: float) -> history.Record:
        step = {"step": "deploy-stack", "status": "done", "seconds": seconds, "detail": detail}
        return history.Record.from_json({"id": str(i), "env": "dev", "when": "2026-11-29T10:00:00Z", "steps": [step]})

    created = run(0, "CarRentalFargateStack: created in 600.0s (30 changes)", 600.0)
    assert history.estimates([created]) == {"deploy-stack:CarRentalFargateStack": 600.0}
    updated = run(1, "CarRentalFargateStack: updated in 90.0s (3 changes)", 90.0)
    assert history.estimates([updated, created]) == {"deploy-stack:CarRentalFargateStack": 90.0}
    unchanged = run(2, "CarRentalFargateStack: no changes", 2.0)
    assert history.estimates([unchanged, updated, created]) == {"deploy-stack:CarRentalFargateStack": 46.0}


def test_inv_history_prints_the_table_and_json_and_needs_the_registry_stack(
    bucket: str, dev_env: EnvConfig, project: Path
) -> None:
    store = history.History.of(AwsFactory(dev_env), dev_env)
    assert store is not None
    store.write(
        history.record_of(report(), components={"app": "cccccccccccc"}, base={}, head="cccccccccccc", who="ana@laptop")
    )
    runtime = commands.Runtime(config_path=project / "deploy.toml", stdout=io.StringIO(), stderr=io.StringIO())
    records = commands.history_list(env="dev", as_json=True, runtime=runtime)
    assert len(records) == 1
    printed = runtime.stderr.getvalue()  # type: ignore[attr-defined]
    assert "ana@laptop" in printed and "deploy.app" in printed and "app@cccccccccccc" in printed
    assert "live now:" in printed
    data = json.loads(runtime.stdout.getvalue())  # type: ignore[attr-defined]
    assert data["live"]["app"]["sha"] == "cccccccccccc" and data["deployments"][0]["who"] == "ana@laptop"
    assert "no smoke yet" not in printed  # its smoke passed
    unsmoked = RunReport(Plan("dev", (), "deploy.app"), [StepRecord("build", "docker build", "done", 8.0)], 9.0)
    store.write(history.record_of(unsmoked, components={"app": "d" * 12}, base={}, head="d" * 12, who="ana"))
    commands.history_list(env="dev", runtime=runtime)  # the next commit, with --no-smoke: proven by nothing
    printed = runtime.stderr.getvalue()  # type: ignore[attr-defined]
    assert (
        "dddddddddddd (no smoke yet)" in printed
        and "(no smoke yet): deployed by a run without its smoke (--no-smoke), and no smoke passed since: an "
        "environment promoted from dev does not take it; inv smoke --env dev proves it\n"
        in printed
    )


def test_inv_history_of_one_component_lists_the_runs_that_deployed_it(
    bucket: str, dev_env: EnvConfig, project: Path
) -> None:
    """Carried unchanged is not a deploy of it; a failed attempt and a destroy are. Fewer than asked among the newest
    records: four times as many are read, the whole history at most."""
    store = history.History.of(AwsFactory(dev_env), dev_env)
    assert store is not None
    t0 = datetime(2026, 11, 28, 9, 0, tzinfo=UTC)
    runs = [
        ({"app": "a" * 12, "stack:fargate": "a" * 12}, (), (), True),  # deploy.full
        ({"app": "b" * 12, "stack:fargate": "b" * 12}, ("stack:fargate",), (), True),  # app only: stack carried
        ({"stack:fargate": "c" * 12}, (), (), False),  # a failed stack deploy
        ({"app": "d" * 12}, (), (), True),
        ({"stack:fargate": "e" * 12}, (), (), True),
        ({}, (), ("stack:fargate",), True),  # destroy
        ({"app": "f" * 12}, (), (), True),
    ]
    for n, (components, unchanged, removed, ok) in enumerate(runs):
        store.write(
            history.record_of(
                report(ok=ok), components=components, base={}, head=f"{n:012d}", who="ci",
                unchanged=unchanged, removed=removed, now=t0 + timedelta(minutes=n),
            )
        )  # fmt: skip
    assert [r.head for r in store.records_of("stack:fargate", 10, first=1)] == [f"{n:012d}" for n in (5, 4, 2, 0)]
    assert [r.head for r in store.records_of("stack:fargate", 2, first=1)] == [f"{n:012d}" for n in (5, 4)]
    assert [r.head for r in store.records_of("app", 2)] == [f"{n:012d}" for n in (6, 3)]
    assert store.records_of("lambda:login_handler", 3) == []

    runtime = commands.Runtime(config_path=project / "deploy.toml", stdout=io.StringIO(), stderr=io.StringIO())
    records = commands.history_list(
        env="dev", component="stack:CarRentalFargateStack", limit=3, as_json=True, runtime=runtime
    )
    assert [r.head for r in records] == [f"{n:012d}" for n in (5, 4, 2)]
    data = json.loads(runtime.stdout.getvalue())  # type: ignore[attr-defined]
    assert data["component"] == "stack:fargate" and list(data["live"]) == []  # destroyed: not live
    runtime = commands.Runtime(config_path=project / "deploy.toml", stdout=io.StringIO(), stderr=io.StringIO())
    commands.history_list(env="dev", component="app", runtime=runtime)
    printed = runtime.stderr.getvalue()  # type: ignore[attr-defined]
    listed, live = printed.split("live now:")
    assert "app@ffffffffffff" in listed and "stack:fargate" not in live  # the live table: app alone
    assert "ffffffffffff" in live
    with pytest.raises(UsageError, match="unknown component 'db' for history"):
        commands.history_list(env="dev", component="db", runtime=runtime)


def test_inv_history_of_a_function_whose_folder_is_gone_lists_its_runs_and_of_one_never_run_refuses(
    bucket: str, dev_env: EnvConfig, project: Path
) -> None:
    """lambda:<fn> of a function removed from lambda/ since: the runs the history has of it, and its live entry;
    a name neither lambda/ nor the history knows (a typo) is a usage error naming the components, not an empty
    listing."""
    (project / "lambda" / "login_handler").mkdir(parents=True)
    (project / "lambda" / "login_handler" / "handler.py").write_text("def handler(event, context): ...\n")
    store = history.History.of(AwsFactory(dev_env), dev_env)
    assert store is not None
    t0 = datetime(2026, 11, 28, 9, 0, tzinfo=UTC)
    for n, fn in enumerate(["gone_handler", "login_handler", "gone_handler"]):
        store.write(
            history.record_of(
                report(), components={f"lambda:{fn}": f"{n:012d}"}, base={}, head=f"{n:012d}", who="ci",
                now=t0 + timedelta(minutes=n),
            )
        )  # fmt: skip

    runtime = commands.Runtime(config_path=project / "deploy.toml", stdout=io.StringIO(), stderr=io.StringIO())
    records = commands.history_list(env="dev", component="lambda:gone_handler", as_json=True, runtime=runtime)
    assert [r.head for r in records] == [f"{n:012d}" for n in (2, 0)]
    data = json.loads(runtime.stdout.getvalue())  # type: ignore[attr-defined]
    assert data["component"] == "lambda:gone_handler" and data["live"]["lambda:gone_handler"]["sha"] == "0" * 11 + "2"
    assert [d["head"] for d in data["deployments"]] == [f"{n:012d}" for n in (2, 0)]

    runtime = commands.Runtime(config_path=project / "deploy.toml", stdout=io.StringIO(), stderr=io.StringIO())
    with pytest.raises(UsageError) as raised:
        commands.history_list(env="dev", component="lambda:login_handlr", as_json=True, runtime=runtime)
    assert raised.value.exit_code == 2
    assert "unknown component 'lambda:login_handlr' for history" in str(raised.value)
    assert "no run of it is recorded in dev" in str(raised.value)
    assert raised.value.next_step is not None
    assert "app, lambda:login_handler, stack:" in raised.value.next_step
    assert runtime.stdout.getvalue() == ""  # type: ignore[attr-defined]


def test_what_a_stack_deploy_changed_is_kept_and_inv_history_of_the_stack_shows_it(
    bucket: str, dev_env: EnvConfig, project: Path
) -> None:
    """The deploy-stack step's changes (each value before and after) go into the record; `inv history --component
    stack:...` lists them under the table, run by run; other steps' records carry none."""
    store = history.History.of(AwsFactory(dev_env), dev_env)
    assert store is not None
    changed = report()
    group = changed.records[2]
    group.children[0].changes = ["LoginHandler: MemorySize: 256 → 512", "Topic (AWS::SNS::Topic): add"]
    t0 = datetime(2026, 11, 28, 9, 0, tzinfo=UTC)
    store.write(
        history.record_of(changed, components={"stack:fargate": "a" * 12}, base={}, head="a" * 12, who="ci", now=t0)
    )
    written = store.records(1)[0]
    (step,) = [s for s in written.steps if s["step"] == "deploy-stack" and s.get("in") == "parallel"]
    assert step["changes"] == ["LoginHandler: MemorySize: 256 → 512", "Topic (AWS::SNS::Topic): add"]
    assert all("changes" not in s for s in written.steps if s is not step)
    assert history.stack_changes([written], "CarRentalFargateStack") == [
        (written, ["LoginHandler: MemorySize: 256 → 512", "Topic (AWS::SNS::Topic): add"])
    ]
    assert history.stack_changes([written], "CarRentalApiStack") == []  # skipped there: nothing changed

    runtime = commands.Runtime(config_path=project / "deploy.toml", stdout=io.StringIO(), stderr=io.StringIO())
    commands.history_list(env="dev", component="stack:fargate", runtime=runtime)
    printed = runtime.stderr.getvalue()  # type: ignore[attr-defined]
    assert (
        "\n2026-11-28T09:00:00Z deploy.app changed CarRentalFargateStack:\n"
        "  ↳ LoginHandler: MemorySize: 256 → 512\n"
        "  ↳ Topic (AWS::SNS::Topic): add\n"
    ) in printed
    runtime = commands.Runtime(config_path=project / "deploy.toml", stdout=io.StringIO(), stderr=io.StringIO())
    commands.history_list(env="dev", runtime=runtime)  # the whole history: the table alone
    assert "changed CarRentalFargateStack" not in runtime.stderr.getvalue()  # type: ignore[attr-defined]


@pytest.mark.parametrize("limit", [0, -1])
def test_a_limit_under_one_is_a_usage_error(bucket: str, project: Path, limit: int) -> None:
    runtime = commands.Runtime(config_path=project / "deploy.toml", stdout=io.StringIO(), stderr=io.StringIO())
    with pytest.raises(UsageError, match=f"--limit must be at least 1 \\(got {limit}\\)") as raised:
        commands.history_list(env="dev", limit=limit, runtime=runtime)
    assert raised.value.exit_code == 2


def test_no_registry_stack_is_a_clear_error(moto_aws: None, project: Path) -> None:
    runtime = commands.Runtime(config_path=project / "deploy.toml", stdout=io.StringIO(), stderr=io.StringIO())
    with pytest.raises(UsageError, match="has no history: its registry stack is not deployed"):
        commands.history_list(env="dev", runtime=runtime)


QUIET = {"dry_run": False, "as_json": False}


def test_every_executed_plan_that_deploys_leaves_a_record(bucket: str, dev_env: EnvConfig, project: Path) -> None:
    runtime = commands.Runtime(config_path=project / "deploy.toml", stdout=io.StringIO(), stderr=io.StringIO())
    config = load_config(project / "deploy.toml")
    plan = Plan("dev", (Deploy(),), "deploy.demo", deploys=(("lambda:login_handler", "dddddddddddd"),))
    commands.run_plan(runtime, config, dev_env, plan, dry_run=True, as_json=False)  # a dry run records nothing
    store = history.History.of(AwsFactory(dev_env), dev_env)
    assert store is not None and store.records() == []
    commands.run_plan(runtime, config, dev_env, plan, dry_run=False, as_json=False)
    [record] = store.records()
    assert (record.command, record.components, record.base) == (
        "deploy.demo",
        {"lambda:login_handler": "dddddddddddd"},
        {"lambda:login_handler": None},
    )
    assert store.live()["lambda:login_handler"]["sha"] == "dddddddddddd"
    assert record.changed is True  # a step that changes what runs was done: a deployment for inv report
    # when it began changing what runs (inv perf: its release served from then), kept as the record is read back
    changing = datetime.fromisoformat(str(record.changing))
    assert changing.tzinfo is not None and abs(changing - datetime.fromisoformat(record.when)) < timedelta(seconds=5)
    assert history.Record.from_json(record.to_json()).changing == record.changing
    assert history.Record.from_json({k: v for k, v in record.to_json().items() if k != "changing"}).changing is None
    with pytest.raises(ValueError, match="names no time zone"):
        history.Record.from_json(record.to_json() | {"changing": "2026-12-01T10:00:00"})


def test_components_carried_without_a_deploy_are_live_at_head_but_not_listed_as_deployed(
    bucket: str, dev_env: EnvConfig, project: Path
) -> None:
    """deploy.auto records the components with no change as live at HEAD (later diffs start there); the history
    still tells them apart from what the run deployed."""
    runtime = commands.Runtime(config_path=project / "deploy.toml", stdout=io.StringIO(), stderr=io.StringIO())
    config = load_config(project / "deploy.toml")
    head = "eeeeeeeeeeee"
    plan = Plan(
        "dev",
        (Deploy(),),
        "deploy.auto",
        deploys=(("app", head),),
        carried=(("lambda:login_handler", head), ("stack:api", head)),
    )
    commands.run_plan(runtime, config, dev_env, plan, dry_run=False, as_json=False)
    store = history.History.of(AwsFactory(dev_env), dev_env)
    assert store is not None
    [record] = store.records()
    assert record.components == {"app": head, "lambda:login_handler": head, "stack:api": head}
    assert record.unchanged == ["lambda:login_handler", "stack:api"] and record.deployed == {"app": head}
    assert {c: v["sha"] for c, v in store.live().items()} == record.components
    row = history.table([record]).splitlines()[-1]
    assert row.endswith(f"app@{head} (+2 unchanged)") and "stack:api@" not in row
    # a record written before the field existed reads as one that deployed all it names
    old = history.Record.from_json({k: v for k, v in record.to_json().items() if k != "unchanged"})
    assert old.unchanged == [] and old.deployed == record.components


def test_components_held_back_are_recorded_so_and_stay_live_as_they_were(
    bucket: str, dev_env: EnvConfig, project: Path
) -> None:
    """deploy.auto --skip: the record names what it held back; the live record keeps their commit."""
    runtime = commands.Runtime(config_path=project / "deploy.toml", stdout=io.StringIO(), stderr=io.StringIO())
    config = load_config(project / "deploy.toml")
    store = history.History.of(AwsFactory(dev_env), dev_env)
    assert store is not None
    first = Plan("dev", (Deploy(),), "deploy.auto", deploys=(("app", "a" * 12), ("stack:fargate", "a" * 12)))
    commands.run_plan(runtime, config, dev_env, first, dry_run=False, as_json=False)
    head = "eeeeeeeeeeee"
    plan = Plan(
        "dev",
        (Deploy(),),
        "deploy.auto",
        deploys=(("app", head),),
        carried=(("stack:api", head),),
        held=("stack:fargate",),
    )
    commands.run_plan(runtime, config, dev_env, plan, dry_run=False, as_json=False)
    record = store.records()[0]
    assert record.held == ["stack:fargate"] and "stack:fargate" not in record.components
    assert {c: v["sha"] for c, v in store.live().items()} == {"app": head, "stack:api": head, "stack:fargate": "a" * 12}
    assert history.table([record]).splitlines()[-1].endswith(f"app@{head} (+1 unchanged, 1 held back)")
    assert history.Record.from_json(record.to_json()).held == ["stack:fargate"]
    assert history.Record.from_json({k: v for k, v in record.to_json().items() if k != "held"}).held == []


def test_the_live_record_keeps_what_a_deploy_left_a_stack_as_until_another_deploy_of_it(
    bucket: str, dev_env: EnvConfig
) -> None:
    """What a run's deploy-stack steps left a stack as (when CloudFormation last changed it, its template's
    fingerprint) goes into the live record: a later run that only carries the stack to its commit keeps it, one
    that deploys the stack again (the same commit too) replaces it, one that deploys something else leaves it."""
    store = history.History.of(AwsFactory(dev_env), dev_env)
    assert store is not None
    t0 = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)
    first_left = {"updated": "2026-11-30T09:00:03.120000+00:00", "template": "0123456789abcdef"}

    def run(minutes: int, components: dict[str, str], **kwargs: object) -> history.Record:
        record = history.record_of(
            report(), components=components, base={}, head="x", now=t0 + timedelta(minutes=minutes), **kwargs
        )
        store.write(record)
        return record

    first = run(0, {"stack:data": "aaaaaaaaaaaa"}, left={"stack:data": first_left})
    assert first.left == {"stack:data": first_left} and history.Record.from_json(first.to_json()).left == first.left
    assert store.live()["stack:data"] == {"sha": "aaaaaaaaaaaa", "when": first.when, "record": first.id} | first_left
    carried = run(1, {"app": "bbbbbbbbbbbb", "stack:data": "bbbbbbbbbbbb"}, unchanged=["stack:data"])
    assert store.live()["stack:data"] == {"sha": "bbbbbbbbbbbb", "when": carried.when, "record": carried.id} | (
        first_left
    )
    run(2, {"app": "cccccccccccc"})  # deploys something else
    assert store.live()["stack:data"]["template"] == "0123456789abcdef"
    again_left = {"updated": "2026-11-30T10:00:00+00:00", "template": "fedcba9876543210"}
    run(3, {"stack:data": "bbbbbbbbbbbb"}, left={"stack:data": again_left})  # the same commit, deployed again
    assert store.live()["stack:data"] == {"sha": "bbbbbbbbbbbb", "when": carried.when, "record": carried.id} | (
        again_left
    )
    run(4, {"stack:data": "dddddddddddd"})  # a deploy that left nothing said (a record of older code): none kept
    assert set(store.live()["stack:data"]) == {"sha", "when", "record"}


def test_a_deploy_let_through_unpromoted_says_so_in_its_record_and_in_inv_history(
    bucket: str, dev_env: EnvConfig, project: Path
) -> None:
    """--unpromoted (an emergency fix the promote_from environment never ran) leaves an audit trail."""
    runtime = commands.Runtime(config_path=project / "deploy.toml", stdout=io.StringIO(), stderr=io.StringIO())
    config = load_config(project / "deploy.toml")
    plan = Plan("dev", (Deploy(),), "deploy.app", deploys=(("app", "f" * 12),), unpromoted=("app",))
    commands.run_plan(runtime, config, dev_env, plan, dry_run=False, as_json=False)
    store = history.History.of(AwsFactory(dev_env), dev_env)
    assert store is not None
    [record] = store.records()
    assert record.unpromoted == ["app"] and record.to_json()["unpromoted"] == ["app"]
    assert history.table([record]).splitlines()[-1].endswith(f"⚠️ unpromoted app; app@{'f' * 12}")
    old = history.Record.from_json({k: v for k, v in record.to_json().items() if k != "unpromoted"})
    assert old.unpromoted == []  # written before the field existed


def test_a_destroy_is_recorded_and_drops_what_it_removed_from_the_live_record(
    bucket: str, dev_env: EnvConfig, project: Path
) -> None:
    runtime = commands.Runtime(config_path=project / "deploy.toml", stdout=io.StringIO(), stderr=io.StringIO())
    config = load_config(project / "deploy.toml")
    deployed = (("app", "aaaaaaaaaaaa"), ("stack:api", "aaaaaaaaaaaa"), ("stack:data", "aaaaaaaaaaaa"))
    commands.run_plan(runtime, config, dev_env, Plan("dev", (Deploy(),), "deploy.full", deploys=deployed), **QUIET)
    destroy = Plan("dev", (Deploy(),), "destroy", removes=("app", "stack:api"))
    commands.run_plan(runtime, config, dev_env, destroy, **QUIET)
    store = history.History.of(AwsFactory(dev_env), dev_env)
    assert store is not None
    newest = store.records()[0]
    assert (newest.command, newest.removed, newest.components) == ("destroy", ["app", "stack:api"], {})
    assert newest.base == {"app": "aaaaaaaaaaaa", "stack:api": "aaaaaaaaaaaa"}  # what each ran when it went
    assert set(store.live()) == {"stack:data"}
    assert history.table([newest]).splitlines()[-1].endswith("removed app, stack:api")


def test_destroy_with_data_refuses_a_registry_stack_another_environment_keeps_its_live_record_in(
    bucket: str, dev_env: EnvConfig, project: Path
) -> None:
    """staging's live record is in dev's bucket: the registry stack is staging's too, and deleting it (the
    repository and the bucket, forced) would take staging's images, history and lock. Refused, nothing deleted, in a
    dry run too; without --include-data the registry stack stays, and nothing is refused."""
    s3 = boto3.client("s3", region_name="eu-west-1")
    s3.put_object(Bucket=bucket, Key=f"{history.LIVE_PREFIX}staging.json", Body=b"{}")
    runtime = commands.Runtime(config_path=project / "deploy.toml", stdout=io.StringIO(), stderr=io.StringIO())
    for dry_run in (True, False):
        with pytest.raises(UsageError) as refused:
            commands.destroy(env="dev", include_data=True, dry_run=dry_run, runtime=runtime)
        assert refused.value.message == (
            f"CarRentalRegistryStack's bucket {bucket} holds the live record of staging too: its registry stack is "
            "theirs as well, and destroy --include-data would delete their images, history and lock with it; nothing "
            "was deleted"
        )
    assert boto3.client("cloudformation", region_name="eu-west-1").describe_stacks(StackName=dev_env.stacks.registry)
    commands.destroy(env="dev", dry_run=True, runtime=runtime)  # the registry stack stays: not refused


def test_a_destroy_dry_run_says_a_stack_protected_from_deletion_would_be_refused(
    bucket: str, dev_env: EnvConfig, project: Path
) -> None:
    """The dry run listed "delete CarRentalRegistryStack, then the data it keeps" and nothing more; the run then
    refused it (its termination protection on, exit 2). The dry run says so, with the next step."""
    factory = AwsFactory(dev_env)

    def protected(parsed: dict[str, Any], **_: Any) -> None:  # moto has no UpdateTerminationProtection
        for stack in parsed.get("Stacks", []):
            stack["EnableTerminationProtection"] = stack["StackName"] == dev_env.stacks.registry

    factory.client("cloudformation").meta.events.register("after-call.cloudformation.DescribeStacks", protected)
    runtime = commands.Runtime(
        config_path=project / "deploy.toml",
        stdout=io.StringIO(),
        stderr=io.StringIO(),
        aws_factory=lambda _env: factory,
    )
    commands.destroy(env="dev", include_data=True, dry_run=True, runtime=runtime)
    said = runtime.stderr.getvalue()  # type: ignore[attr-defined]
    assert (
        "⚠️  CarRentalRegistryStack is protected from deletion (its termination protection is on): the run would be "
        "refused, nothing deleted\n    → next: if it is to go, turn it off:"
    ) in said, said
    with pytest.raises(UsageError, match="CarRentalRegistryStack is protected from deletion") as refused:
        commands.destroy(env="dev", include_data=True, runtime=runtime)
    assert (
        "or by hand: aws cloudformation update-termination-protection --no-enable-termination-protection "
        "--stack-name CarRentalRegistryStack; then rerun inv destroy"
    ) in (refused.value.next_step or "")


def test_a_destroy_dry_run_whose_look_at_a_stacks_protection_fails_says_the_others(
    bucket: str, dev_env: EnvConfig, project: Path
) -> None:
    """The dry run's look at whether each stack it would delete is protected is refused for one (its DescribeStacks
    denied): that one is left to the run (whose preflight reads it again), the protected one after it still said."""
    factory = AwsFactory(dev_env)

    def protected(parsed: dict[str, Any], **_: Any) -> None:  # moto has no UpdateTerminationProtection
        for stack in parsed.get("Stacks", []):
            stack["EnableTerminationProtection"] = True

    def denied(params: dict[str, Any], **_: Any) -> None:
        if params.get("StackName") == dev_env.stacks.api:
            raise ClientError({"Error": {"Code": "AccessDenied", "Message": "no"}}, "DescribeStacks")

    cfn = factory.client("cloudformation")
    cfn.meta.events.register("after-call.cloudformation.DescribeStacks", protected)
    cfn.meta.events.register("before-parameter-build.cloudformation.DescribeStacks", denied)
    runtime = commands.Runtime(config_path=project / "deploy.toml", stdout=io.StringIO(), stderr=io.StringIO())
    plan = Plan("dev", (DestroyStack(dev_env.stacks.api), DestroyStack(dev_env.stacks.registry)), "destroy")
    core.say_protected(runtime, dev_env, plan, factory)
    said = runtime.stderr.getvalue()  # type: ignore[attr-defined]
    assert said.startswith("⚠️  CarRentalRegistryStack is protected from deletion"), said
    assert said.count("⚠️") == 1, said


def test_destroy_with_data_judges_a_registry_stack_deleted_before_by_the_bucket_it_kept(
    moto_aws: None, dev_env: EnvConfig, project: Path
) -> None:
    """The registry stack was deleted by hand (its bucket and repository retained, as the CDK app keeps them): the
    bucket it kept, which destroy --include-data would delete, holds staging's live record: refused, nothing deleted.
    A kept bucket gone since refuses nothing."""
    region, shared = "eu-west-1", "shared-artifacts-1"
    retained = {"Type": "AWS::S3::Bucket", "DeletionPolicy": "Retain", "Properties": {"BucketName": shared}}
    cfn = boto3.client("cloudformation", region_name=region)
    cfn.create_stack(StackName=dev_env.stacks.registry, TemplateBody=json.dumps({"Resources": {"Artifacts": retained}}))
    s3 = boto3.client("s3", region_name=region)
    s3.put_object(Bucket=shared, Key=f"{history.LIVE_PREFIX}staging.json", Body=b"{}")
    cfn.delete_stack(StackName=dev_env.stacks.registry)
    runtime = commands.Runtime(config_path=project / "deploy.toml", stdout=io.StringIO(), stderr=io.StringIO())
    for dry_run in (True, False):
        with pytest.raises(UsageError) as refused:
            commands.destroy(env="dev", include_data=True, dry_run=dry_run, runtime=runtime)
        assert refused.value.message.startswith(f"CarRentalRegistryStack's bucket {shared} holds the live record of ")
    assert s3.list_objects_v2(Bucket=shared)["KeyCount"] == 1
    s3.delete_object(Bucket=shared, Key=f"{history.LIVE_PREFIX}staging.json")
    s3.delete_bucket(Bucket=shared)
    commands.destroy(env="dev", include_data=True, dry_run=True, runtime=runtime)  # gone: nothing to refuse


def test_a_function_whose_folder_is_gone_leaves_the_live_record_with_the_api_stack_deploy(
    bucket: str, dev_env: EnvConfig, project: Path
) -> None:
    runtime = commands.Runtime(config_path=project / "deploy.toml", stdout=io.StringIO(), stderr=io.StringIO())
    config = load_config(project / "deploy.toml")
    (project / "lambda" / "login_handler").mkdir(parents=True)
    (project / "lambda" / "login_handler" / "handler.py").write_text("def handler(e, c):\n    return {}\n")
    first = (("app", "a" * 12), ("lambda:login_handler", "a" * 12), ("lambda:pricing_handler", "a" * 12))
    commands.run_plan(runtime, config, dev_env, Plan("dev", (Deploy(),), "deploy.full", deploys=first), **QUIET)
    # lambda/pricing_handler is gone from the checkout: a deploy that leaves the API stack alone keeps it
    commands.run_plan(runtime, config, dev_env, Plan("dev", (Deploy(),), "deploy.app", (("app", "b" * 12),)), **QUIET)
    store = history.History.of(AwsFactory(dev_env), dev_env)
    assert store is not None and "lambda:pricing_handler" in store.live()
    # nor does a rollback of the API stack: it deploys a kept or older template, with every function that runs
    back = Plan("dev", (Deploy(),), f"rollback stack:api → {'a' * 12}", (("stack:api", "a" * 12),))
    commands.run_plan(runtime, config, dev_env, back, **QUIET)
    assert store.records()[0].removed == [] and "lambda:pricing_handler" in store.live()
    # the API stack, synthesized from this checkout, no longer has it
    api = Plan("dev", (Deploy(),), "deploy.stack CarRentalApiStack", (("stack:api", "c" * 12),))
    commands.run_plan(runtime, config, dev_env, api, **QUIET)
    newest = store.records()[0]
    assert newest.removed == ["lambda:pricing_handler"] and newest.base["lambda:pricing_handler"] == "a" * 12
    assert set(store.live()) == {"app", "lambda:login_handler", "stack:api"}


def test_inv_health_shows_the_last_run_and_who_holds_the_lock(bucket: str, dev_env: EnvConfig, project: Path) -> None:
    store = history.History.of(AwsFactory(dev_env), dev_env)
    assert store is not None
    store.write(history.record_of(report(ok=False), components={"app": "b" * 12}, base={}, head="b" * 12, who="ci"))
    held = lock.EnvLock.of(AwsFactory(dev_env), dev_env)
    assert held is not None
    held.acquire("deploy.full")
    runtime = commands.Runtime(config_path=project / "deploy.toml", stdout=io.StringIO(), stderr=io.StringIO())
    with pytest.raises(StepFailed):  # nothing else of dev is deployed here
        commands.health_report(env="dev", runtime=runtime)
    printed = runtime.stderr.getvalue()  # type: ignore[attr-defined]
    [last] = [line.split() for line in printed.splitlines() if line.startswith("last run")]
    assert last[2:4] == ["deploy.app", "failed"] and "bbbbbbbbbbbb," in last
    [locked] = [line for line in printed.splitlines() if line.startswith("deploy lock")]
    assert " held " in locked and "'deploy.full'" in locked
    assert "the last run in dev failed: deploy.app by ci (the rollout failed)" in printed
    assert "deploy freeze" not in printed  # none: no row
    since = datetime.now(UTC)
    freeze.write(AwsFactory(dev_env), dev_env, freeze.Freeze("lead", "audit", since, since + timedelta(hours=1)))
    runtime = commands.Runtime(config_path=project / "deploy.toml", stdout=io.StringIO(), stderr=io.StringIO())
    with pytest.raises(StepFailed):
        commands.health_report(env="dev", runtime=runtime)
    printed = runtime.stderr.getvalue()  # type: ignore[attr-defined]
    [frozen] = [line.split() for line in printed.splitlines() if line.startswith("deploy freeze")]
    assert frozen[2:8] == ["lead", "frozen", "dev", "is", "frozen", "by"]


def test_inv_health_reads_the_deploys_beside_the_environments_parts(
    bucket: str, dev_env: EnvConfig, project: Path
) -> None:
    """The history's newest run (an S3 listing) is asked while the environment's parts are (the service): one
    round trip for both, where the history waited for every part before."""
    factory = AwsFactory(dev_env)
    held_each((factory.client("s3"), "ListObjectsV2"), (factory.client("ecs"), "DescribeServices"))
    runtime = commands.Runtime(
        config_path=project / "deploy.toml",
        stdout=io.StringIO(),
        stderr=io.StringIO(),
        aws_factory=lambda _env: factory,
    )
    with pytest.raises(StepFailed):  # nothing else of dev is deployed here
        commands.health_report(env="dev", runtime=runtime)
    assert "last run" in runtime.stderr.getvalue()  # type: ignore[attr-defined]


def test_a_live_record_deploykit_did_not_write_stops_a_deploy_and_inv_history_still_lists_the_runs(
    bucket: str, dev_env: EnvConfig, project: Path
) -> None:
    """A live record edited by hand into something else (not JSON, an entry without its commit) is a UsageError
    (exit 2) that names the object and what to do, before anything changes; `inv history` says so and lists the
    runs (it is how one looks into it)."""
    import boto3

    store = history.History.of(AwsFactory(dev_env), dev_env)
    assert store is not None
    store.write(history.record_of(report(), components={"app": "a" * 12}, base={}, head="a" * 12))
    s3 = boto3.client("s3", region_name="eu-west-1")
    where = f"s3://{BUCKET}/{store.live_key}"
    for body, why in (
        ('{"app": {"sha": "aaaaaaaaaaaa"}', "not JSON: Expecting ',' delimiter"),
        ('["app"]', "a JSON list, not an object"),
        ('{"app": "aaaaaaaaaaaa"}', 'its entry \'app\' is "aaaaaaaaaaaa", not {"sha": ...}'),
    ):
        s3.put_object(Bucket=BUCKET, Key=store.live_key, Body=body.encode())
        with pytest.raises(UsageError) as refused:
            store.live()
        assert refused.value.message.startswith(f"the live record of dev, {where}, is not one deploykit wrote ({why}")
        assert refused.value.next_step is not None and f"delete it (aws s3 rm {where})" in refused.value.next_step
        runtime = commands.Runtime(config_path=project / "deploy.toml", stdout=io.StringIO(), stderr=io.StringIO())
        with pytest.raises(UsageError, match="is not one deploykit wrote"):
            commands.deploy_auto(env="dev", dry_run=True, runtime=runtime)
        runtime = commands.Runtime(config_path=project / "deploy.toml", stdout=io.StringIO(), stderr=io.StringIO())
        assert len(commands.history_list(env="dev", runtime=runtime)) == 1
        said = runtime.stderr.getvalue()  # type: ignore[attr-defined]
        assert f"⚠️  the live record of dev, {where}, is not one deploykit wrote" in said and "live now" not in said
    # a deploy that does not read it first (deploy.app, deploy.lambda...) worked: its history record is written, and
    # the live record is left as it is, said
    runtime = commands.Runtime(config_path=project / "deploy.toml", stdout=io.StringIO(), stderr=io.StringIO())
    plan = Plan("dev", (Deploy(),), "deploy.demo", deploys=(("lambda:login_handler", "dddddddddddd"),))
    config = load_config(project / "deploy.toml")
    report_of_run = commands.run_plan(runtime, config, dev_env, plan, dry_run=False, as_json=False)
    assert report_of_run is not None and report_of_run.ok
    said = runtime.stderr.getvalue()  # type: ignore[attr-defined]
    assert f"⚠️  its history record was written, but not the live record: the live record of dev, {where}" in said
    assert [r.command for r in store.records()] == ["deploy.demo", "deploy.app"]
    assert s3.get_object(Bucket=BUCKET, Key=store.live_key)["Body"].read() == b'{"app": "aaaaaaaaaaaa"}'


def test_a_history_record_that_cannot_be_read_is_passed_over_and_said_once(
    bucket: str, dev_env: EnvConfig, project: Path
) -> None:
    import boto3

    warned: list[str] = []
    store = history.History.of(AwsFactory(dev_env), dev_env, warn=warned.append)
    assert store is not None
    t0 = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)
    good = history.record_of(report(), components={"app": "a" * 12}, base={}, head="a" * 12, now=t0)
    store.write(good)
    broken = f"{store.prefix}20261130T090500.000000-0badf00d.json"
    boto3.client("s3", region_name="eu-west-1").put_object(Bucket=BUCKET, Key=broken, Body=b'{"id": "x", "truncat')
    assert [r.id for r in store.records()] == [good.id] and [r.id for r in store.records()] == [good.id]
    assert len(warned) == 1 and warned[0].startswith(f"⚠️  passed over s3://{BUCKET}/{broken}: not a history record")
    assert set(store.unreadable) == {broken}
    runtime = commands.Runtime(config_path=project / "deploy.toml", stdout=io.StringIO(), stderr=io.StringIO())
    assert [r.id for r in commands.history_list(env="dev", runtime=runtime)] == [good.id]
    assert f"passed over s3://{BUCKET}/{broken}" in runtime.stderr.getvalue()  # type: ignore[attr-defined]


def test_inv_health_warns_of_a_stack_changed_outside_deploykit(bucket: str, dev_env: EnvConfig, project: Path) -> None:
    """A stack CloudFormation changed since deploykit's deploy left it, to another template: a warning that says so
    and what to run, as `inv diff` and deploy.auto see it."""
    import boto3

    from deploykit.stacks import template_fingerprint, updated_of

    cfn = boto3.client("cloudformation", region_name="eu-west-1")
    registry = dev_env.stacks.registry
    described = cfn.describe_stacks(StackName=registry)["Stacks"][0]
    deployed = template_fingerprint(cfn.get_template(StackName=registry)["TemplateBody"])
    store = history.History.of(AwsFactory(dev_env), dev_env)
    assert store is not None

    def health_said(left: dict[str, str]) -> str:
        record = history.record_of(
            report(), components={"stack:registry": "a" * 12}, base={}, head="a" * 12, left={"stack:registry": left}
        )
        store.write(record)
        runtime = commands.Runtime(config_path=project / "deploy.toml", stdout=io.StringIO(), stderr=io.StringIO())
        with pytest.raises(StepFailed):  # nothing else of dev is deployed here
            commands.health_report(env="dev", runtime=runtime)
        return runtime.stderr.getvalue()  # type: ignore[attr-defined, no-any-return]

    assert "outside deploykit" not in health_said({"updated": updated_of(described), "template": deployed})
    said = health_said({"updated": "2026-11-30T09:00:00+00:00", "template": "0123456789abcdef"})
    assert f"{registry} was changed outside deploykit: CloudFormation updated it at " in said, said
    assert "inv deploy.auto --env dev deploys stack:registry again as the checkout has it" in said
    assert "did not deploy: deployed again" not in said  # deploy.auto's answer is not health's
    # changed since, to the template deploykit deployed: nothing said
    assert "outside deploykit" not in health_said({"updated": "2026-11-30T09:00:00+00:00", "template": deployed})

    # changed since by a run that failed after its change set went through (an express update whose rollout failed):
    # what that run left, said so, not a change made outside deploykit
    health_said({"updated": "2026-11-30T09:00:00+00:00", "template": "0123456789abcdef"})
    failed = history.record_of(
        report(ok=False), components={"stack:registry": "b" * 12}, base={"stack:registry": "a" * 12}, head="b" * 12
    )
    store.write(failed)
    runtime = commands.Runtime(config_path=project / "deploy.toml", stdout=io.StringIO(), stderr=io.StringIO())
    with pytest.raises(StepFailed):
        commands.health_report(env="dev", runtime=runtime)
    said = runtime.stderr.getvalue()  # type: ignore[attr-defined]
    assert "outside deploykit" not in said, said
    assert f"the last run that deployed it ({failed.command} at {failed.when}, {'b' * 12}) failed" in said, said
    assert "inv history --env dev says how it failed; inv deploy.auto --env dev deploys stack:registry again" in said


class ChangedStack(Step):
    """Says what DeployStack says when its change set went through."""

    name = "deploy-stack"

    def describe(self) -> str:
        return "a stack"

    def run(self, ctx: Context) -> Outcome:
        return Outcome.done(
            "CarRentalFargateStack: updated in 2.0s (1 change)", **{action_key("CarRentalFargateStack"): "updated"}
        )

    def inputs(self) -> dict[str, object]:
        return {}


class FailingSmoke(Step):
    name = "smoke"

    def describe(self) -> str:
        return "checks"

    def run(self, ctx: Context) -> Outcome:
        raise StepFailed("smoke failed (4 passed, 1 failed)", next_step="see the failed check above")

    def inputs(self) -> dict[str, object]:
        return {}


def test_a_run_that_fails_after_changing_a_stack_names_the_rollback_of_that_stack(
    bucket: str, dev_env: EnvConfig, project: Path
) -> None:
    runtime = commands.Runtime(config_path=project / "deploy.toml", stdout=io.StringIO(), stderr=io.StringIO())
    config = load_config(project / "deploy.toml")
    plan = Plan("dev", (ChangedStack(), FailingSmoke()), "deploy.stack", deploys=(("stack:fargate", "d" * 12),))
    with pytest.raises(StepFailed) as err:
        commands.run_plan(runtime, config, dev_env, plan, **QUIET)
    assert err.value.next_step == (
        "see the failed check above; if a stack change of this run broke it: "
        "inv rollback --env dev --component stack:fargate"
    )


@pytest.mark.parametrize(
    "edit",
    [
        {"when": "2026-11-29T11:00:00"},  # no zone: compared with aware times, a TypeError in inv report
        {"when": "yesterday"},
        {"error": {"message": "x"}},  # not text: its first line read for the tables
        {"steps": ["build"]},
        {"steps": [{"step": "build", "status": "done", "seconds": None}]},
        {"components": {"app": None}},  # no SHA to print
    ],
)
def test_a_record_edited_into_what_no_deploykit_writes_is_passed_over(
    bucket: str, dev_env: EnvConfig, project: Path, edit: dict[str, object]
) -> None:
    """Valid JSON, yet not a record: passed over with a warning, as a record that is not JSON is, where the views
    raised a traceback reading it (inv report, inv health, inv history)."""
    store = history.History.of(AwsFactory(dev_env), dev_env)
    assert store is not None
    good = history.record_of(report(), components={"app": "a" * 12}, base={}, head="a" * 12, who="ci")
    store.write(good)
    bad = history.record_of(report(), components={"app": "b" * 12}, base={}, head="b" * 12, who="ci")
    body = bad.to_json() | edit
    store.s3.put_object(Bucket=BUCKET, Key=f"{store.prefix}{bad.id}.json", Body=json.dumps(body).encode())
    assert [r.id for r in store.records()] == [good.id]


def test_an_object_that_is_no_record_takes_no_place_among_the_newest(bucket: str, dev_env: EnvConfig) -> None:
    store = history.History.of(AwsFactory(dev_env), dev_env)
    assert store is not None
    made = [history.record_of(report(), components={"app": c * 12}, base={}, head=c * 12, who="ci") for c in "abc"]
    for record in made:
        store.write(record)
        time.sleep(0.001)
    store.s3.put_object(Bucket=BUCKET, Key=f"{store.prefix}notes.txt", Body=b"see the wiki")
    assert [r.head for r in store.records(2)] == [made[2].head, made[1].head]  # was: one, notes.txt taking a place


def test_a_sha_of_digits_is_printed_as_it_is_not_as_a_number() -> None:
    record = history.record_of(report(), components={"app": "123456789e12"}, base={}, head="123456789e12", who="ci")
    assert "123456789e12" in history.table([record]) and "e+20" not in history.table([record])


def test_inv_health_shows_a_live_record_it_cannot_read_as_a_row(bucket: str, dev_env: EnvConfig, project: Path) -> None:
    """Each part of the report in its own rows: a live record edited by hand is one, not the end of the report."""
    store = history.History.of(AwsFactory(dev_env), dev_env)
    assert store is not None
    store.s3.put_object(Bucket=BUCKET, Key=store.live_key, Body=b'["app"]')
    runtime = commands.Runtime(config_path=project / "deploy.toml", stdout=io.StringIO(), stderr=io.StringIO())
    with pytest.raises(StepFailed):  # nothing else of dev is deployed here
        commands.health_report(env="dev", runtime=runtime)
    [row] = [line for line in runtime.stderr.getvalue().splitlines() if line.startswith("last deploy")]  # type: ignore[attr-defined]
    assert "the history cannot be read" in row


def test_a_record_that_cannot_be_read_takes_no_place_among_the_newest(bucket: str, dev_env: EnvConfig) -> None:
    """inv history --limit 2 with an unreadable record among the newest two listed one run (and --limit 1 none)."""
    warned: list[str] = []
    store = history.History.of(AwsFactory(dev_env), dev_env, warn=warned.append)
    assert store is not None
    made = [history.record_of(report(), components={"app": c * 12}, base={}, head=c * 12, who="ci") for c in "abc"]
    for record in made:
        store.write(record)
        time.sleep(0.001)
    broken = f"{store.prefix}{datetime.now(UTC).strftime('%Y%m%dT%H%M%S')}.999999-0badf00d.json"
    store.s3.put_object(Bucket=BUCKET, Key=broken, Body=b'{"id": "x", "truncat')
    assert [r.head for r in store.records(2)] == [made[2].head, made[1].head]
    assert [r.head for r in store.records(1)] == [made[2].head]
    assert [r.head for r in store.records(5)] == [m.head for m in reversed(made)]
    assert len(warned) == 1 and broken in warned[0]


def test_inv_health_warns_of_a_stack_taken_out_of_the_app_and_destroy_stack_takes_it_out_of_the_live_record(
    bucket: str, dev_env: EnvConfig, project: Path
) -> None:
    """A stack of the team's own taken out of the app and deploy.toml without inv destroy --stack first: its entry
    stays in the live record, and its stack may still run. inv health says so; named again, inv destroy --stack
    deletes it (here: gone already) and takes it out of the live record."""
    store = history.History.of(AwsFactory(dev_env), dev_env)
    assert store is not None
    store.write(history.record_of(report(), components={"stack:notifications": "a" * 12}, base={}, head="a" * 12))

    def health_said() -> str:
        runtime = commands.Runtime(config_path=project / "deploy.toml", stdout=io.StringIO(), stderr=io.StringIO())
        with pytest.raises(StepFailed):  # nothing else of dev is deployed here
            commands.health_report(env="dev", runtime=runtime)
        return runtime.stderr.getvalue()  # type: ignore[attr-defined, no-any-return]

    said = health_said()
    assert (
        f"stack:notifications is in dev's live record (deployed at {'a' * 12}), and deploy.toml names no such" in said
    )
    assert "then inv destroy --stack notifications --env dev deletes it" in said
    toml = project / "deploy.toml"
    for env in ("sandbox", "dev"):
        table = f"[environments.{env}.stacks]\n"
        toml.write_text(toml.read_text().replace(table, f'{table}notifications = "Notify{env.title()}"\n'))
    runtime = commands.Runtime(config_path=toml, stdout=io.StringIO(), stderr=io.StringIO())
    destroyed = commands.destroy(env="dev", stack="notifications", runtime=runtime)
    assert destroyed is not None and destroyed.ok, runtime.stderr.getvalue()  # type: ignore[attr-defined]
    assert "stack:notifications" not in store.live()
    toml.write_text(toml.read_text().replace('notifications = "NotifySandbox"\n', "").replace(
        'notifications = "NotifyDev"\n', ""))  # fmt: skip
    assert "stack:notifications" not in health_said()
