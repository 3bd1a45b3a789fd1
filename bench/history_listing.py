"""How reading the newest history records grows with the history: the whole listing against the recent windows.

    python bench/history_listing.py [--sizes 1000,5000,20000] [--delay 0.1] [--json]

A team deploying many times a day writes thousands of records a year into its artifacts bucket. `deploy.auto`
reads the newest 30 for its estimates, `inv history` the newest 20, `inv rollback` the newest 100. S3 lists keys
oldest first, 1000 a page, so listing them all costs a page per thousand records, every deploy. This script fills
moto's S3 (in this process) with histories of each size, spread evenly over a year, and reads the newest 30
records both ways in the same process: "whole" (every key listed, then the newest taken) and "windows"
(`History.records`: the last week first, then 90 days, then everything). Each AWS call waits --delay seconds
first (bench/latency.py), as from a laptop to AWS. It reports the list calls, the keys listed and the wall time
of each. Then the same newest 30 once more with this machine's record cache warm (`RecordCache`: the keys listed,
no body fetched), and the last 30 days' records (what `inv report` reads by default) from S3 and from the cache.
Figures, not a test: nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tabulate import tabulate

from bench.latency import delayed
from deploykit import history
from deploykit.aws import AwsFactory
from deploykit.config import parse_config

BUCKET = "bench-artifacts"
NEWEST = 30  # what deploy.auto reads for its estimates
CONFIG = {
    "default_env": "bench",
    "environments": {
        "bench": {
            "region": "eu-west-1",
            "cluster": "car-rental-cluster",
            "service": "car-rental-service",
            "container": "backend",
            "repository": "car-rental-backend",
            "stacks": {
                "registry": "CarRentalRegistryStack",
                "data": "CarRentalDataStack",
                "auth": "CarRentalAuthStack",
                "fargate": "CarRentalFargateStack",
                "api": "CarRentalApiStack",
            },
        }
    },
}


def fill(s3: Any, prefix: str, size: int, now: datetime) -> None:
    """``size`` records, one every year/size, the newest a minute old; each body a real record."""
    body = history.Record(
        id="", env="bench", when="", who="ci", command="deploy.auto", head="a" * 12, ok=True, seconds=3.0
    )
    step = timedelta(days=365) / size
    for n in range(size):
        moment = now - timedelta(minutes=1) - step * n
        record_id = f"{moment.strftime('%Y%m%dT%H%M%S.%f')}-{n:08x}"
        data = {**body.to_json(), "id": record_id, "when": moment.isoformat(timespec="seconds")}
        s3.put_object(Bucket=BUCKET, Key=f"{prefix}{record_id}.json", Body=json.dumps(data).encode())


def whole_listing(store: history.History) -> list[history.Record]:
    """The newest records as deploykit read them before the windows: every key listed, the newest taken."""
    return store._load(sorted(store._keys(), reverse=True)[:NEWEST])


def newest(store: history.History) -> list[history.Record]:
    return store.records(NEWEST)


def month(store: history.History) -> list[history.Record]:
    return store.records_since(datetime.now(UTC) - timedelta(days=30))


def measure(store: history.History, read: Callable[[history.History], list[history.Record]]) -> dict[str, Any]:
    calls = {"list": 0, "keys": 0, "get": 0}

    def count(parsed: dict[str, Any], **_: Any) -> None:
        calls["list"] += 1
        calls["keys"] += len(parsed.get("Contents") or ())

    def fetched(**_: Any) -> None:
        calls["get"] += 1

    store.s3.meta.events.register("after-call.s3.ListObjectsV2", count)
    store.s3.meta.events.register("after-call.s3.GetObject", fetched)
    try:
        start = time.perf_counter()
        found = read(store)
        seconds = time.perf_counter() - start
    finally:
        store.s3.meta.events.unregister("after-call.s3.ListObjectsV2", count)
        store.s3.meta.events.unregister("after-call.s3.GetObject", fetched)
    return {
        "list_calls": calls["list"],
        "keys_listed": calls["keys"],
        "fetched": calls["get"],
        "records": len(found),
        "seconds": round(seconds, 3),
        "ids": [r.id for r in found],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1000,5000,20000", help="history sizes, comma-separated")
    parser.add_argument("--delay", type=float, default=0.1, help="seconds each AWS call waits (default 0.1)")
    parser.add_argument("--json", action="store_true", help="the figures as JSON only")
    args = parser.parse_args()
    os.environ.update(
        {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION": "eu-west-1"}
    )
    os.environ.pop("AWS_PROFILE", None)
    from moto import mock_aws

    env = parse_config(CONFIG, Path("bench.toml")).environment("bench")
    rows: list[dict[str, Any]] = []
    for size in (int(s) for s in args.sizes.split(",")):
        with mock_aws(), tempfile.TemporaryDirectory(prefix="record-cache-") as kept:
            aws = AwsFactory(env, environ={})
            store = history.History(aws, env, BUCKET, cache=history.RecordCache(None))  # every body from S3
            store.s3.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
            fill(store.s3, store.prefix, size, datetime.now(UTC))
            cached = history.History(aws, env, BUCKET, cache=history.RecordCache(Path(kept)))
            undo = delayed(args.delay)
            try:
                row = {"records": size, "whole": measure(store, whole_listing), "windows": measure(store, newest)}
                measure(cached, newest)  # into the cache, as an earlier deploy.auto on this machine read them
                row["cached"] = measure(cached, newest)
                row["month"] = measure(store, month)
                measure(cached, month)
                row["month_cached"] = measure(cached, month)
            finally:
                undo()
        if len({tuple(row[way].pop("ids")) for way in ("whole", "windows", "cached")}) != 1:
            raise SystemExit(f"the ways read different records at {size}")
        if row["windows"]["records"] != NEWEST:
            raise SystemExit(f"{row['windows']['records']} records read at {size}, not {NEWEST}")
        if row["month"].pop("ids") != row["month_cached"].pop("ids"):
            raise SystemExit(f"the month read from the cache differs at {size}")
        rows.append(row)
        if not args.json:
            print(f"… {size} records measured", file=sys.stderr)
    if args.json:
        print(json.dumps({"newest": NEWEST, "delay": args.delay, "rows": rows}, indent=2))
        return
    table = [
        [
            r["records"],
            f"{r['whole']['list_calls']} / {r['whole']['keys_listed']}",
            f"{r['whole']['seconds']:.2f} s",
            f"{r['windows']['list_calls']} / {r['windows']['keys_listed']}",
            f"{r['windows']['seconds']:.2f} s",
            f"{r['whole']['seconds'] / max(r['windows']['seconds'], 1e-9):.1f}×",
            f"{r['cached']['seconds']:.2f} s ({r['cached']['fetched']} fetched)",
        ]
        for r in rows
    ]
    headers = ["records", "whole: lists / keys", "whole", "windows: lists / keys", "windows", "whole / windows"]
    print(f"the newest {NEWEST} records, each AWS call {args.delay * 1000:.0f} ms later:")
    print(tabulate(table, headers=[*headers, "windows, cached"], tablefmt="github"))
    table = [
        [
            r["records"],
            r["month"]["records"],
            f"{r['month']['seconds']:.2f} s ({r['month']['fetched']} fetched)",
            f"{r['month_cached']['seconds']:.2f} s ({r['month_cached']['fetched']} fetched)",
            f"{r['month']['seconds'] / max(r['month_cached']['seconds'], 1e-9):.1f}×",
        ]
        for r in rows
    ]
    print("\nthe last 30 days' records (inv report):")
    print(tabulate(table, headers=["records", "in 30 days", "from S3", "cached", "S3 / cached"], tablefmt="github"))


if __name__ == "__main__":
    main()
