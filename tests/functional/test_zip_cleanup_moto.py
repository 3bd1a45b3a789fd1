"""inv lambda.cleanup's second half against moto: the Lambda zips and kept vendored packages in the artifacts bucket
that nothing runs any more go after the old versions; what a kept version, a ``$LATEST``, the API stack's code
parameter or an environment sharing the bucket runs stays, as does anything uploaded within the last day."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from moto.core import DEFAULT_ACCOUNT_ID
from moto.s3.models import s3_backends

from deploykit import commands, packaging, zip_cleanup
from deploykit.aws import AwsFactory
from deploykit.clock import FakeClock
from deploykit.config import EnvConfig
from deploykit.errors import StepFailed
from tests.conftest import git
from tests.functional.test_lambda_chain_moto import (  # noqa: F401 (fixtures)
    BUCKET,
    FUNCTIONS,
    MIB,
    environment,
    runtime,
    stack,
    vendored,
    with_lambdas,
)
from tests.functional.test_lambda_cleanup_moto import refuse_to_delete

HEALTH = FUNCTIONS["health_handler"]


def key_of(data: bytes) -> str:
    return f"lambda/health_handler/{hashlib.sha256(data).hexdigest()}.zip"


def later(project: Path, factory: AwsFactory, stdout: io.StringIO | None = None) -> commands.Runtime:
    """The command's runtime two days on: every object in the bucket is past the day's grace."""
    run = runtime(project, factory, stdout)
    run.clock = FakeClock(datetime.now(UTC) + timedelta(days=2))
    return run


def publish(factory: AwsFactory, n: int) -> str:
    """Code n of the health function: its zip put in the bucket, $LATEST updated from it, version published (as the
    fast path does, ``git <sha>``). Returns the zip's key."""
    data = packaging.build_zip({"handler.py": (f"def handler(event, context):\n    return {n}\n".encode(), False)})
    key = key_of(data)
    factory.client("s3").put_object(Bucket=BUCKET, Key=key, Body=data)
    lam = factory.client("lambda")
    lam.update_function_code(FunctionName=HEALTH, S3Bucket=BUCKET, S3Key=key)
    lam.publish_version(FunctionName=HEALTH, Description=f"git {n:012x}")
    return key


@pytest.fixture
def zips(environment: dict[str, str], factory: AwsFactory) -> dict[str, str]:  # noqa: F811
    """The health function at versions 1 (the API stack's code key) to 5, `live` on 4, $LATEST running 5's code;
    a zip nothing ever ran; a key deploykit does not name so. name → key."""
    keys = {"stack": environment["health_handler"], "login": environment["login_handler"]}
    keys |= {f"v{n}": publish(factory, n) for n in range(2, 6)}
    factory.client("lambda").update_alias(FunctionName=HEALTH, Name="live", FunctionVersion="4")
    stray = packaging.build_zip({"handler.py": (b"never deployed\n", False)})
    keys["stray"] = key_of(stray)
    keys["notes"] = "lambda/health_handler/notes.txt"
    for key, body in ((keys["stray"], stray), (keys["notes"], b"by hand")):
        factory.client("s3").put_object(Bucket=BUCKET, Key=key, Body=body)
    return keys


def there(factory: AwsFactory, key: str) -> bool:
    listed = factory.client("s3").list_objects_v2(Bucket=BUCKET, Prefix=key).get("Contents") or ()
    return any(o["Key"] == key for o in listed)


def rows(data: dict[str, Any]) -> dict[str, tuple[str, list[str]]]:
    return {o["key"]: (o["action"], o["why"]) for o in data["zips"]["objects"]}


def test_the_zips_of_deleted_versions_go_and_those_that_may_run_again_stay(
    zips: dict[str, str],
    factory: AwsFactory,
    with_lambdas: Path,  # noqa: F811
) -> None:
    """With --keep 2 versions 3, 2 and 1 go: the zips of 3 and 2 go with them, and the one nothing ever ran; 1's zip
    stays (the API stack's code parameter: CloudFormation rolls back to it), as do those of 4 and 5 ($LATEST)."""
    out = io.StringIO()
    run = later(with_lambdas, factory, out)
    commands.lambda_cleanup(env="dev", keep=2, dry_run=True, as_json=True, runtime=run)
    found = rows(json.loads(out.getvalue()))
    assert found[zips["stack"]] == ("keep", ["dev: CarRentalApiStack's HealthHandlerCodeKey"])
    assert found[zips["v4"]] == ("keep", ["health_handler version 4"])
    assert found[zips["v5"]] == ("keep", ["health_handler version 5", "health_handler $LATEST"])
    assert found[zips["login"]][0] == "keep"
    unrun = "nothing runs it: no kept version, no $LATEST, not a stack's code parameter"
    for name in ("v2", "v3", "stray"):
        assert found[zips[name]] == ("would delete", [unrun])
    assert zips["notes"] not in found  # not named by deploykit: left alone
    assert all(there(factory, key) for key in zips.values())  # a dry run
    said = run.stderr.getvalue()  # type: ignore[attr-defined]
    assert f"dry run: would delete 3 objects of 7 in s3://{BUCKET}" in said

    out = io.StringIO()
    commands.lambda_cleanup(env="dev", keep=2, as_json=True, runtime=later(with_lambdas, factory, out))
    data = json.loads(out.getvalue())["zips"]
    assert (data["to_delete"], data["deleted"], data["failures"]) == (3, 3, {})
    assert {name for name, key in zips.items() if not there(factory, key)} == {"v2", "v3", "stray"}


def test_anything_uploaded_within_the_last_day_stays(
    zips: dict[str, str],
    factory: AwsFactory,
    with_lambdas: Path,  # noqa: F811
) -> None:
    """A zip just uploaded may be about to be run (a deploy of another environment sharing the bucket, its update
    not made yet): the grace is a day."""
    out = io.StringIO()
    run = runtime(with_lambdas, factory, out)
    run.clock = FakeClock(datetime.now(UTC) + timedelta(hours=20))
    commands.lambda_cleanup(env="dev", keep=2, dry_run=True, as_json=True, runtime=run)
    found = rows(json.loads(out.getvalue()))
    assert found[zips["stray"]] == ("keep", ["uploaded 20 h ago, less than 1 day (a deploy may be about to use it)"])
    assert "nothing to delete in s3://" in run.stderr.getvalue()  # type: ignore[attr-defined]


def test_a_zip_a_deploy_renews_between_the_listing_and_the_deletion_stays(
    zips: dict[str, str],
    factory: AwsFactory,
    with_lambdas: Path,  # noqa: F811
) -> None:
    """Every object two days old; while the versions are deleted, a deploy of another environment finds the stray
    zip and renews it (CopyObject onto itself: stack_chain.RENEW_AFTER), so that a cleanup keeps it a day. Before,
    the cleanup deleted it all the same, as listed, and that deploy then failed with NoSuchKey. The keys are looked
    at again before their deletion: it stays, and its row says why."""
    bucket = s3_backends[DEFAULT_ACCOUNT_ID]["global"].buckets[BUCKET]
    for stored in bucket.keys.values():
        stored.last_modified = datetime.now(UTC).replace(tzinfo=None) - timedelta(days=2)
    s3 = factory.client("s3")
    lam = factory.client("lambda")
    real = lam.delete_function

    def and_a_deploy_meanwhile(**kwargs: Any) -> Any:
        stray = zips["stray"]
        s3.copy_object(
            Bucket=BUCKET, Key=stray, CopySource={"Bucket": BUCKET, "Key": stray}, MetadataDirective="REPLACE"
        )
        return real(**kwargs)

    lam.delete_function = and_a_deploy_meanwhile
    out = io.StringIO()
    run = runtime(with_lambdas, factory, out)
    run.clock = FakeClock(datetime.now(UTC))
    commands.lambda_cleanup(env="dev", keep=2, as_json=True, runtime=run)
    data = json.loads(out.getvalue())
    action, why = rows(data)[zips["stray"]]
    assert action == "keep" and len(why) == 1
    assert why[0].startswith("renewed meanwhile (") and why[0].endswith(
        " UTC: a deploy found it and copied it onto itself), kept for 1 day"
    )
    assert data["zips"]["renewed"] == [zips["stray"]]
    assert (data["zips"]["deleted"], data["zips"]["failures"]) == (2, {})
    assert there(factory, zips["stray"])
    assert not there(factory, zips["v2"]) and not there(factory, zips["v3"])
    assert "1 object renewed by a deploy meanwhile, kept" in run.stderr.getvalue()  # type: ignore[attr-defined]


def test_a_version_that_could_not_be_deleted_keeps_its_zip(
    zips: dict[str, str],
    factory: AwsFactory,
    with_lambdas: Path,  # noqa: F811
) -> None:
    refuse_to_delete(factory.client("lambda"), "3")
    with pytest.raises(StepFailed, match=r"1 of 3 version\(s\) could not be deleted"):
        commands.lambda_cleanup(env="dev", keep=2, runtime=later(with_lambdas, factory))
    assert there(factory, zips["v3"]) and not there(factory, zips["v2"]) and not there(factory, zips["stray"])


def test_one_function_looks_at_its_own_zips_only(
    zips: dict[str, str],
    factory: AwsFactory,
    with_lambdas: Path,  # noqa: F811
) -> None:
    out = io.StringIO()
    commands.lambda_cleanup(
        env="dev", function="login_handler", dry_run=True, as_json=True, runtime=later(with_lambdas, factory, out)
    )
    assert list(rows(json.loads(out.getvalue()))) == [zips["login"]]


def test_a_failed_object_deletion_is_reported_and_exits_1(
    zips: dict[str, str],
    factory: AwsFactory,
    with_lambdas: Path,  # noqa: F811
) -> None:
    s3 = factory.client("s3")
    real = s3.delete_objects

    def refuse_stray(**kwargs: Any) -> Any:
        objects = [o for o in kwargs["Delete"]["Objects"] if o["Key"] != zips["stray"]]
        answer = dict(real(**{**kwargs, "Delete": {**kwargs["Delete"], "Objects": objects}}))
        answer["Errors"] = [{"Key": zips["stray"], "Code": "AccessDenied", "Message": "Access Denied"}]
        return answer

    s3.delete_objects = refuse_stray
    with pytest.raises(StepFailed, match=rf"1 of 3 object\(s\) of s3://{BUCKET} could not be deleted") as failed:
        commands.lambda_cleanup(env="dev", keep=2, runtime=later(with_lambdas, factory))
    assert "AccessDenied: Access Denied" in failed.value.message
    assert failed.value.next_step == (
        f"give these credentials s3:DeleteObject on lambda/* and lambda-vendored/* of s3://{BUCKET} (see README, "
        "'Permissions'), then rerun: inv lambda.cleanup --env dev"
    )
    assert there(factory, zips["stray"]) and not there(factory, zips["v2"])


def refuse(client: Any, operation: str, code: str) -> None:
    """Every call of ``operation`` answers ``code``, as S3 does after the SDK's retries."""
    service = client.meta.service_model.service_id.hyphenize()

    def answer(**_: Any) -> Any:
        error = {"Error": {"Code": code, "Message": "Please reduce your request rate."}}
        return type("Response", (), {"status_code": 503, "headers": {}})(), error | {"ResponseMetadata": {}}

    client.meta.events.register(f"before-call.{service}.{operation}", answer)


def test_a_deletion_s3_refuses_whole_is_reported_per_object_after_the_versions(
    zips: dict[str, str],
    factory: AwsFactory,
    with_lambdas: Path,  # noqa: F811
) -> None:
    """Versions 3, 2 and 1 deleted, then DeleteObjects refused as a whole (SlowDown after its retries): the command
    ended on that one AWS error, and the three versions deleted for good were said nowhere. Now the versions' table
    and summary come first, then the zips' with each object's failure, and the run exits 1."""
    refuse(factory.client("s3"), "DeleteObjects", "SlowDown")
    out = io.StringIO()
    run = later(with_lambdas, factory, out)
    with pytest.raises(StepFailed, match=rf"3 of 3 object\(s\) of s3://{BUCKET} could not be deleted") as failed:
        commands.lambda_cleanup(env="dev", keep=2, as_json=True, runtime=run)
    assert failed.value.exit_code == 1 and "SlowDown" in failed.value.message
    said = run.stderr.getvalue()  # type: ignore[attr-defined]
    assert "deleted 3 versions, freed" in said
    assert said.count("FAILED") == 3 and all(there(factory, zips[name]) for name in ("v2", "v3", "stray"))
    data = json.loads(out.getvalue())
    assert data["deleted"] == 3 and len(data["zips"]["failures"]) == 3


def test_zips_that_cannot_be_read_still_report_the_versions_deleted(
    zips: dict[str, str],
    factory: AwsFactory,
    with_lambdas: Path,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The zip step reads what the big $LATEST zips were put together from (HeadObject) after the versions went: a
    refusal there ended the command on one AWS error with nothing of the versions said. Now their table and summary
    come first, then why the zips were left as they are, and the run exits 1."""
    monkeypatch.setattr("deploykit.commands.cleanup.PART_MIN", 1)  # every $LATEST zip is a big one
    refuse(factory.client("s3"), "HeadObject", "SlowDown")
    out = io.StringIO()
    run = later(with_lambdas, factory, out)
    with pytest.raises(StepFailed, match="SlowDown") as failed:
        commands.lambda_cleanup(env="dev", keep=2, as_json=True, runtime=run)
    assert failed.value.exit_code == 1
    said = run.stderr.getvalue()  # type: ignore[attr-defined]
    assert "deleted 3 versions, freed" in said
    assert f"the Lambda zips of s3://{BUCKET} were left as they are: " in said
    assert all(there(factory, key) for key in zips.values())
    data = json.loads(out.getvalue())
    assert data["deleted"] == 3 and "SlowDown" in data["zips_error"] and "zips" not in data


STAGING = """
[environments.staging]
region = "eu-west-1"
cluster = "car-rental-cluster"
service = "car-rental-staging"
container = "backend"
repository = "car-rental-backend"

[environments.staging.stacks]
registry = "CarRentalRegistryStack"
data = "CarRentalStagingDataStack"
auth = "CarRentalStagingAuthStack"
fargate = "CarRentalStagingFargateStack"
api = "CarRentalStagingApiStack"
"""


def test_what_an_environment_sharing_the_bucket_runs_stays(
    zips: dict[str, str],
    factory: AwsFactory,
    with_lambdas: Path,  # noqa: F811
) -> None:
    """staging keeps its live record in dev's bucket (one account, one registry stack): its function running
    version 2's code keeps that zip. An environment deploy.toml does not name keeps every zip."""
    with (with_lambdas / "deploy.toml").open("a") as toml:
        toml.write(STAGING)
    s3, lam = factory.client("s3"), factory.client("lambda")
    role = factory.client("iam").get_role(RoleName="fn-role")["Role"]["Arn"]
    code = {"S3Bucket": BUCKET, "S3Key": zips["v2"]}
    lam.create_function(FunctionName="staging-health", Runtime="python3.11", Role=role, Handler="h.h", Code=code)
    stack(factory, "CarRentalStagingApiStack", {"HealthHandlerFunctionName": "staging-health"})
    s3.put_object(Bucket=BUCKET, Key="deploykit/live/staging.json", Body=b"{}")

    out = io.StringIO()
    commands.lambda_cleanup(env="dev", keep=2, dry_run=True, as_json=True, runtime=later(with_lambdas, factory, out))
    found = rows(json.loads(out.getvalue()))
    assert found[zips["v2"]] == ("keep", ["staging: health_handler $LATEST"])
    assert found[zips["v3"]][0] == "would delete"

    s3.put_object(Bucket=BUCKET, Key="deploykit/live/qa.json", Body=b"{}")
    out = io.StringIO()
    commands.lambda_cleanup(env="dev", keep=2, dry_run=True, as_json=True, runtime=later(with_lambdas, factory, out))
    found = rows(json.loads(out.getvalue()))
    unknown = "environment 'qa', not in deploy.toml, keeps its live record in this bucket too"
    assert found[zips["v3"]] == ("keep", [unknown])
    assert all(action == "keep" for action, _ in found.values())


QA = """
[environments."qa-*"]
region = "eu-west-1"
cluster = "car-rental-{env}"
service = "car-rental-{env}"
container = "backend"
repository = "car-rental-backend-{env}"

[environments."qa-*".stacks]
registry = "CarRental-{env}-Registry"
data = "CarRental-{env}-Data"
auth = "CarRental-{env}-Auth"
fargate = "CarRental-{env}-Fargate"
api = "CarRental-{env}-Api"
"""


def test_an_environment_a_pattern_makes_sharing_the_bucket_is_read_too(
    zips: dict[str, str],
    factory: AwsFactory,
    with_lambdas: Path,  # noqa: F811
) -> None:
    """qa-bob, made from ``[environments."qa-*"]``, keeps its live record in dev's bucket: it was taken for an
    environment deploy.toml does not name, and every zip stayed. What it runs is read as for any environment."""
    with (with_lambdas / "deploy.toml").open("a") as toml:
        toml.write(QA)
    s3, lam = factory.client("s3"), factory.client("lambda")
    role = factory.client("iam").get_role(RoleName="fn-role")["Role"]["Arn"]
    code = {"S3Bucket": BUCKET, "S3Key": zips["v2"]}
    lam.create_function(FunctionName="qa-bob-health", Runtime="python3.11", Role=role, Handler="h.h", Code=code)
    stack(factory, "CarRental-qa-bob-Api", {"HealthHandlerFunctionName": "qa-bob-health"})
    s3.put_object(Bucket=BUCKET, Key="deploykit/live/qa-bob.json", Body=b"{}")
    out = io.StringIO()
    commands.lambda_cleanup(env="dev", keep=2, dry_run=True, as_json=True, runtime=later(with_lambdas, factory, out))
    found = rows(json.loads(out.getvalue()))
    assert found[zips["v2"]] == ("keep", ["qa-bob: health_handler $LATEST"])
    assert found[zips["v3"]][0] == "would delete"


def other_pip(requirements: Path, target: Path) -> None:
    """bigpkg 2.0: 6 MiB of other bytes."""
    (target / "bigpkg").mkdir()
    (target / "bigpkg" / "__init__.py").write_text("VALUE = 43\n")
    (target / "bigpkg" / "blob.bin").write_bytes(random.Random(8).randbytes(6 * MIB))


def test_the_vendored_packages_the_live_zip_was_made_from_stay_and_older_ones_go(
    vendored: Path,  # noqa: F811
    factory: AwsFactory,
    environment: dict[str, str],  # noqa: F811
) -> None:
    """Two deploys beside 6 MiB of vendored packages, the requirement upgraded between: each zip names the vendored
    packages it was put together from, and the cleanup keeps those of $LATEST's zip and deletes the others (only an
    upload's speed needs them; both zips stay, as versions run them). A $LATEST zip that does not name them (from
    before) keeps every vendored object."""
    project = vendored.parents[1]
    assert commands.deploy_lambda("health_handler", env="dev", smoke=False, runtime=runtime(project, factory))
    first = packaging.package_function(vendored)
    (vendored / "requirements.txt").write_text("bigpkg==2.0\n")
    second = packaging.package_function(
        vendored, requirements_cache=packaging.default_vendor_cache(), installer=other_pip
    )
    git(project, "commit", "-qam", "bigpkg 2.0")
    assert commands.deploy_lambda("health_handler", env="dev", smoke=False, runtime=runtime(project, factory))
    s3 = factory.client("s3")
    for package in (first, second):
        assert s3.head_object(Bucket=BUCKET, Key=package.key)["Metadata"] == {"vendored": package.prefix_sha256}

    out = io.StringIO()
    commands.lambda_cleanup(env="dev", as_json=True, runtime=later(project, factory, out))
    found = rows(json.loads(out.getvalue()))
    assert found[second.prefix_key] == ("keep", ["the zip health_handler's $LATEST runs was put together from it"])
    assert found[first.prefix_key][0] == "deleted" and not there(factory, first.prefix_key)
    assert found[first.key] == ("keep", ["health_handler version 2"])

    s3.copy_object(  # as a zip uploaded before zips named their vendored packages
        Bucket=BUCKET, Key=second.key, CopySource={"Bucket": BUCKET, "Key": second.key}, MetadataDirective="REPLACE"
    )
    s3.put_object(Bucket=BUCKET, Key=first.prefix_key, Body=b"an older one")
    out = io.StringIO()
    commands.lambda_cleanup(env="dev", dry_run=True, as_json=True, runtime=later(project, factory, out))
    [why] = rows(json.loads(out.getvalue()))[first.prefix_key][1]
    assert why.startswith("health_handler's $LATEST runs lambda/health_handler/") and "does not name" in why


def test_the_zips_the_code_parameters_of_a_stack_of_the_teams_own_name_stay(
    environment: dict[str, str],  # noqa: F811
    factory: AwsFactory,
    dev_env: EnvConfig,
) -> None:
    """A function may live in a stack of the team's own: CloudFormation rolls that stack back to the key its code
    parameter names, as the API stack's. The platform's other stacks hold no function: their parameters are not
    read."""
    jobs = dataclasses.replace(dev_env, stacks=dataclasses.replace(dev_env.stacks, own=(("jobs", "Jobs"),)))
    nightly = "lambda/nightly_job/" + "a" * 64 + ".zip"
    stack(factory, "Jobs", {"NightlyJobFunctionName": "jobs-nightly"}, {"NightlyJobCodeKey": nightly, "Tier": "x"})
    stack(factory, dev_env.stacks.data, {}, {"OddCodeKey": "lambda/odd/" + "b" * 64 + ".zip"})
    assert zip_cleanup.stack_code_keys(factory, jobs) == {
        environment["health_handler"]: ["dev: CarRentalApiStack's HealthHandlerCodeKey"],
        environment["login_handler"]: ["dev: CarRentalApiStack's LoginHandlerCodeKey"],
        nightly: ["dev: Jobs's NightlyJobCodeKey"],
    }
    assert nightly not in zip_cleanup.stack_code_keys(factory, dev_env)  # not named in deploy.toml: not read


def test_a_key_that_cannot_be_looked_at_again_is_not_deleted_and_is_its_failure(factory: AwsFactory) -> None:
    """Just before DeleteObjects each key is looked at again (HeadObject): one S3 refuses to show (AccessDenied) may
    have been renewed by a deploy meanwhile, so it is not deleted, and it is reported as that key's failure; the
    others go."""
    s3 = factory.client("s3")
    s3.create_bucket(Bucket="looked-at", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    objects = []
    for name in ("a", "b", "c"):
        key = f"lambda/health_handler/{name * 64}.zip"
        s3.put_object(Bucket="looked-at", Key=key, Body=name.encode())
        objects.append(zip_cleanup.Stored(key, 1, datetime.now(UTC), name * 64, "health_handler"))
    hidden = objects[1].key

    def refuse_hidden(params: dict[str, Any], **_: Any) -> Any:
        if not str(params.get("url_path", "")).endswith(hidden):  # the request, serialized: /bucket/key
            return None
        error = {"Error": {"Code": "AccessDenied", "Message": "Access Denied"}, "ResponseMetadata": {}}
        return type("Response", (), {"status_code": 403, "headers": {}})(), error

    s3.meta.events.register("before-call.s3.HeadObject", refuse_hidden)
    two_days_on = datetime.now(UTC) + timedelta(days=2)  # every object past the grace
    deletion = zip_cleanup.delete_objects(factory, "looked-at", objects, now=lambda: two_days_on)
    assert set(deletion.deleted) == {objects[0].key, objects[2].key}
    assert list(deletion.failed) == [hidden]
    assert deletion.failed[hidden].startswith("not deleted: it could not be looked at again first (")
    assert "AccessDenied" in deletion.failed[hidden]
    left = [o["Key"] for o in s3.list_objects_v2(Bucket="looked-at").get("Contents") or ()]
    assert left == [hidden]
