"""deploykit.zip_cleanup's decision: which zips and vendored objects of the artifacts bucket go, and why."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta

from deploykit import stack_chain, zip_cleanup
from deploykit.zip_cleanup import Needed, ObjectDeletion, Stored, plan_objects

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
A, B, C = "a" * 64, "b" * 64, "c" * 64


def listed(key: str, days: float, size: int = 1000) -> dict[str, object]:
    return {"Key": key, "Size": size, "LastModified": NOW - timedelta(days=days)}


def stored(key: str, days: float, size: int = 1000) -> Stored:
    found = Stored.of(listed(key, days, size))
    assert found is not None
    return found


def test_only_keys_deploykit_names_are_looked_at() -> None:
    assert stored(f"lambda/fn/{A}.zip", 1).function == "fn"
    assert stored(f"lambda-vendored/{A}.bin", 1).kind == "vendored"
    for key in ("lambda/fn/notes.txt", f"lambda/{A}.zip", f"lambda/fn/sub/{A}.zip", f"lambda/fn/{A[:-1]}.zip"):
        assert Stored.of(listed(key, 1)) is None, key


def test_a_zip_is_kept_for_what_runs_it_names_it_or_may_and_goes_otherwise() -> None:
    needed = Needed(keys={f"lambda/fn/{B}.zip": ["dev: Api's FnCodeKey"]})
    needed.runs(base64.b64encode(bytes.fromhex(A)).decode(), "fn $LATEST")
    objects = [stored(f"lambda/fn/{key}.zip", days) for key, days in ((A, 5), (B, 9), (C, 3))]
    objects.append(stored(f"lambda/fn/{'d' * 64}.zip", 0.5))
    decision = plan_objects("bucket", objects, needed, now=NOW)
    why = {c.stored.sha256[:1]: (c.delete, c.reasons) for c in decision.choices}
    assert why["a"] == (False, ("fn $LATEST",))
    assert why["b"] == (False, ("dev: Api's FnCodeKey",))
    assert why["c"][0] and why["c"][1][0].startswith("nothing runs it")
    assert why["d"] == (False, ("uploaded 12 h ago, less than 1 day (a deploy may be about to use it)",))
    assert [c.stored.sha256[:1] for c in decision.choices] == ["d", "c", "a", "b"]  # newest first
    assert [s.sha256[:1] for s in decision.to_delete] == ["c"]


def test_vendored_objects_come_after_the_zips_and_are_kept_by_what_names_them() -> None:
    needed = Needed(vendored={A: ["made of it"]})
    objects = [
        stored(f"lambda-vendored/{A}.bin", 9),
        stored(f"lambda-vendored/{B}.bin", 9),
        stored(f"lambda/f/{C}.zip", 1),
    ]
    decision = plan_objects("bucket", objects, needed, now=NOW)
    assert [(c.stored.kind, c.delete) for c in decision.choices] == [
        ("zip", True),
        ("vendored", False),
        ("vendored", True),
    ]
    everything = Needed(every_zip=["shared"], every_vendored=["shared"])
    assert not plan_objects("bucket", objects, everything, now=NOW).to_delete


def test_big_zips_of_latest_and_what_they_name() -> None:
    objects = [stored(f"lambda/big/{A}.zip", 3, 6_000_000), stored(f"lambda/small/{B}.zip", 3, 2000)]
    latest = {fn: base64.b64encode(bytes.fromhex(sha)).decode() for fn, sha in (("big", A), ("small", B), ("gone", C))}
    big = zip_cleanup.big_zips(latest, objects, 5 * 1024 * 1024)
    assert list(big) == ["big"]
    assert zip_cleanup.vendored_needed(big, {"big": C}).vendored == {
        C: ["the zip big's $LATEST runs was put together from it"]
    }
    [why] = zip_cleanup.vendored_needed(big, {"big": ""}).every_vendored
    assert "does not name the vendored packages" in why
    assert zip_cleanup.vendored_needed(big, {"big": None}) == Needed()  # the zip is gone: nothing to tell


def test_the_summary_says_what_was_and_would_be_deleted() -> None:
    objects = [stored(f"lambda/fn/{A}.zip", 5, 2_500_000), stored(f"lambda/fn/{B}.zip", 5, 400)]
    decision = plan_objects("bkt", objects, Needed(), now=NOW)
    assert zip_cleanup.summary(decision, dry_run=True) == (
        "dry run: would delete 2 objects of 2 in s3://bkt (2.5 MB); nothing was deleted"
    )
    done = ObjectDeletion((objects[0].key,), {objects[1].key: "AccessDenied: no"})
    line = zip_cleanup.summary(decision, dry_run=False, deletion=done)
    assert line.startswith("deleted 1 object in s3://bkt (2.5 MB; S3 keeps them as noncurrent versions")
    assert line.endswith("; 1 object could not be deleted")
    assert zip_cleanup.summary(plan_objects("bkt", [], Needed(), now=NOW), dry_run=True).startswith("no Lambda zips")


def test_a_reused_zip_is_renewed_well_within_the_grace() -> None:
    """A deploy renews the date of a zip it finds there once it is RENEW_AFTER old: what it found then has at least
    GRACE - RENEW_AFTER left before lambda.cleanup may delete it, longer than any deploy runs."""
    assert stack_chain.RENEW_AFTER <= zip_cleanup.GRACE / 4
