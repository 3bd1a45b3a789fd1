"""deploykit.oci: an image copied between registries byte for byte, against an in-memory registry speaking the
distribution API (tests/unit/fake_registry.py)."""

from __future__ import annotations

import dataclasses
import io
import json
import socket
from unittest.mock import Mock

import pytest

from deploykit import oci
from deploykit.app_chain import PromoteImage
from deploykit.aws import AwsFactory
from deploykit.clock import FakeClock
from deploykit.errors import UsageError
from deploykit.output import Reporter
from deploykit.plan import Context
from deploykit.testing import sample_env
from tests.unit.fake_registry import Store, digest_of, running

LAYERS = [b"base layer " * 1000, b"dependencies " * 3000, b"app source"]


def test_an_image_crosses_to_another_registry_with_its_digest_and_bytes() -> None:
    source, target = Store(user=("AWS", "dev-token")), Store(user=("AWS", "prod-token"))
    digest = source.put_image("dev-backend", "abc123", LAYERS)
    lines: list[str] = []
    with running(source) as dev, running(target) as prod:
        copied = oci.copy_image(
            oci.Registry(dev.host, ("AWS", "dev-token")),
            "dev-backend",
            oci.Registry(prod.host, ("AWS", "prod-token")),
            "prod-backend",
            "abc123",
            platform="linux/amd64",
            say=lines.append,
        )
    assert copied.digest == digest and (copied.sent, copied.mounted, copied.present) == (4, 0, 0)
    assert copied.sent_bytes == sum(len(blob) for blob in source.blobs["dev-backend"].values())
    assert target.manifests["prod-backend"]["abc123"] == source.manifests["dev-backend"]["abc123"]  # the same bytes
    assert target.blobs["prod-backend"] == source.blobs["dev-backend"]
    assert len(lines) == 4 and all(" copied (" in line for line in lines)
    assert target.count("PATCH") == 4 and target.count("PUT", "/manifests/abc123") == 1


def test_a_second_copy_sends_nothing() -> None:
    source, target = Store(), Store()
    source.put_image("dev-backend", "abc123", LAYERS)
    with running(source) as dev, running(target) as prod:
        first = oci.copy_image(oci.Registry(dev.host), "dev-backend", oci.Registry(prod.host), "prod", "abc123")
        calls = len(target.calls)
        again = oci.copy_image(oci.Registry(dev.host), "dev-backend", oci.Registry(prod.host), "prod", "abc123")
    assert not first.already and again.already and again.digest == first.digest and again.sent == 0
    assert [m for m, _ in target.calls[calls:]] == ["GET"]  # the tag, found with this digest


def test_what_is_called_before_the_first_blob_may_end_the_copy_with_nothing_sent() -> None:
    """``before`` (the promotion's refusals ahead, Context.refuse_ahead) is called once something is to be copied,
    and what it raises ends the copy before a blob or a manifest is sent; a tag already there calls nothing."""
    source, target = Store(), Store()
    source.put_image("dev-backend", "abc123", LAYERS)
    calls: list[str] = []

    def refused() -> None:
        calls.append("before")
        raise UsageError("register-taskdef would refuse its revision")

    with running(source) as dev, running(target) as prod:
        with pytest.raises(UsageError, match="would refuse"):
            oci.copy_image(
                oci.Registry(dev.host), "dev-backend", oci.Registry(prod.host), "prod", "abc123", before=refused
            )
        assert calls == ["before"] and target.count("PATCH") == target.count("PUT") == target.count("POST") == 0
        oci.copy_image(
            oci.Registry(dev.host), "dev-backend", oci.Registry(prod.host), "prod", "abc123", before=lambda: None
        )
        again = oci.copy_image(
            oci.Registry(dev.host), "dev-backend", oci.Registry(prod.host), "prod", "abc123", before=refused
        )
    assert again.already and calls == ["before"]


def test_within_one_registry_blobs_are_mounted_not_copied() -> None:
    store = Store(user=("AWS", "token"))
    digest = store.put_image("dev-backend", "abc123", LAYERS)
    with running(store) as registry:
        copied = oci.copy_image(
            oci.Registry(registry.host, ("AWS", "token")),
            "dev-backend",
            oci.Registry(registry.host, ("AWS", "token")),
            "prod-backend",
            "abc123",
        )
    assert (copied.sent, copied.mounted) == (0, 4) and copied.digest == digest
    assert store.count("POST", "mount=") == 4 and store.count("PATCH") == 0
    assert store.count("GET", "/blobs/") == 0  # no blob was read: the registry linked them
    assert store.manifests["prod-backend"]["abc123"] == store.manifests["dev-backend"]["abc123"]


def test_blobs_the_target_holds_already_are_not_sent() -> None:
    source, target = Store(), Store()
    source.put_image("dev", "new", LAYERS)
    target.put_image("prod", "old", LAYERS[:2])  # the base and the dependencies, from an earlier release
    with running(source) as dev, running(target) as prod:
        copied = oci.copy_image(oci.Registry(dev.host), "dev", oci.Registry(prod.host), "prod", "new")
    assert (copied.present, copied.sent) == (3, 1)  # the app layer goes; the config (the same) and the rest are there
    assert copied.sent_bytes == len(LAYERS[2])
    assert target.count("GET", f"/blobs/{digest_of(LAYERS[0])}") == 0


def test_blobs_a_registry_keeps_elsewhere_are_followed_there_without_our_credentials() -> None:
    """ECR answers a blob's GET and HEAD with a redirect to S3, signed for GET: the copy follows it for a GET,
    leaving the registry's Authorization behind, and takes the redirect of a HEAD itself as "it is there"."""
    source, target = Store(user=("AWS", "dev")), Store(user=("AWS", "prod"))
    digest = source.put_image("dev", "abc123", LAYERS)
    target.put_image("prod", "old", LAYERS[:1])
    with running(source) as dev, running(source) as dev_s3, running(target) as prod, running(target) as prod_s3:
        source.redirect, target.redirect = f"http://{dev_s3.host}", f"http://{prod_s3.host}"
        copied = oci.copy_image(
            oci.Registry(dev.host, ("AWS", "dev")), "dev", oci.Registry(prod.host, ("AWS", "prod")), "prod", "abc123"
        )
    assert copied.digest == digest and (copied.present, copied.sent) == (2, 2)  # config and base there; 2 sent
    assert target.manifests["prod"]["abc123"] == source.manifests["dev"]["abc123"]


def test_a_blob_whose_registry_cannot_answer_now_is_tried_again() -> None:
    source, target = Store(), Store()
    digest = source.put_image("dev", "abc123", LAYERS[:1])
    slept: list[float] = []
    lines: list[str] = []
    with running(source) as dev, running(target) as prod:
        source.unavailable = 1
        copied = oci.copy_image(
            oci.Registry(dev.host), "dev", oci.Registry(prod.host), "p", "abc123", say=lines.append, sleep=slept.append
        )
        assert copied.digest == digest and copied.sent == 2 and slept == [1.0]
        assert [line for line in lines if "trying again in 1 s" in line and "503: UNAVAILABLE slow down" in line]
        source.unavailable, slept[:] = 100, []  # it never answers: each blob is tried three times, then it fails
        with pytest.raises(oci.RegistryUnavailable, match=r"is not answering: could not read the blob"):
            oci.copy_image(oci.Registry(dev.host), "dev", oci.Registry(prod.host), "q", "abc123", sleep=slept.append)
    assert sorted(slept)[-2:] == [3.0, 3.0] and slept.count(1.0) == 2  # two blobs, 1 s then 3 s each


def test_an_image_for_another_platform_is_refused_before_anything_is_sent() -> None:
    source, target = Store(), Store()
    source.put_image("dev", "abc123", LAYERS, platform="linux/arm64")
    with running(source) as dev, running(target) as prod, pytest.raises(oci.RegistryError) as refused:
        oci.copy_image(oci.Registry(dev.host), "dev", oci.Registry(prod.host), "prod", "abc123", platform="linux/amd64")
    assert "dev:abc123 is for linux/arm64, not for linux/amd64 ([build] platform" in refused.value.message
    assert "--unpromoted" in (refused.value.next_step or "")
    assert refused.value.exit_code == 2  # a state to fix first, nothing sent: a refusal, as the others
    assert not any(method in ("POST", "PATCH", "PUT") for method, _ in target.calls)


def test_a_tag_the_target_holds_with_another_image_is_left_alone() -> None:
    source, target = Store(), Store()
    source.put_image("dev", "abc123", LAYERS)
    theirs = target.put_image("prod", "abc123", [b"built apart"])
    with running(source) as dev, running(target) as prod:
        copied = oci.copy_image(oci.Registry(dev.host), "dev", oci.Registry(prod.host), "prod", "abc123")
    assert copied.there == theirs and not copied.already and copied.sent == 0
    assert target.count("POST") == 0 and target.count("PUT") == 0


@pytest.mark.parametrize("theirs", ["linux/arm64", "dev's own"])
def test_a_tag_the_target_holds_for_another_platform_is_refused_not_kept(theirs: str) -> None:
    """Kept as it is, a tag the target holds must be for the platform a copy would have to be for: an image built apart
    for arm64, or dev's very image (once copied there, as it was for arm64), is refused, exit 2, nothing sent (it
    was kept, and the task would not start from it)."""
    source, target = Store(), Store()
    source.put_image("dev", "abc123", LAYERS, platform="linux/arm64")
    target.put_image("prod", "abc123", LAYERS if theirs == "dev's own" else [b"built apart"], platform="linux/arm64")
    with running(source) as dev, running(target) as prod, pytest.raises(UsageError) as refused:
        oci.copy_image(oci.Registry(dev.host), "dev", oci.Registry(prod.host), "prod", "abc123", platform="linux/amd64")
    assert refused.value.exit_code == 2
    assert refused.value.message.startswith(
        f"{prod.host}/prod:abc123 is in the registry already, for linux/arm64, not for linux/amd64 ([build] platform"
    )
    assert "nothing was copied" in refused.value.message
    assert "deploy a new commit (a new tag)" in (refused.value.next_step or "")
    assert "set [build] platform" in (refused.value.next_step or "")
    assert not any(method in ("POST", "PATCH", "PUT") for method, _ in target.calls)


def test_a_tag_the_target_holds_as_an_index_is_kept_when_one_of_its_images_is_for_the_platform() -> None:
    source, target = Store(), Store()
    source.put_image("dev", "abc123", LAYERS, platform="linux/arm64")
    amd = target.put_image("prod", "amd", [b"amd layer"], platform="linux/amd64")
    entry = {
        "mediaType": oci.DOCKER_MANIFEST,
        "digest": amd,
        "size": len(target.manifests["prod"][amd][0]),
        "platform": {"os": "linux", "architecture": "amd64"},
    }
    index = json.dumps({"schemaVersion": 2, "mediaType": oci.DOCKER_LIST, "manifests": [entry]}).encode()
    theirs = target.put_manifest("prod", "abc123", index, oci.DOCKER_LIST)
    with running(source) as dev, running(target) as prod:
        kept = oci.copy_image(
            oci.Registry(dev.host), "dev", oci.Registry(prod.host), "prod", "abc123", platform="linux/amd64"
        )
        wrong = r"prod:abc123 is in the registry already, for linux/amd64, not for linux/arm64"
        with pytest.raises(UsageError, match=wrong):
            oci.copy_image(
                oci.Registry(dev.host), "dev", oci.Registry(prod.host), "prod", "abc123", platform="linux/arm64"
            )
    assert kept.there == theirs and kept.sent == 0
    assert not any(method in ("POST", "PATCH", "PUT") for method, _ in target.calls)


def test_a_registry_that_answers_with_a_bearer_challenge_gets_a_token() -> None:
    source, target = Store(), Store(user=("robot", "secret"), bearer=True)
    digest = source.put_image("dev", "abc123", LAYERS)
    with running(source) as dev, running(target) as prod:
        copied = oci.copy_image(
            oci.Registry(dev.host), "dev", oci.Registry(prod.host, ("robot", "secret")), "prod", "abc123"
        )
    assert copied.digest == digest and target.manifests["prod"]["abc123"][0] == source.manifests["dev"]["abc123"][0]
    assert target.count("GET", "/token") == 1  # asked once, then reused for every call


def test_wrong_credentials_are_said_with_the_permissions_a_copy_needs() -> None:
    source = Store(user=("AWS", "right"))
    source.put_image("dev", "abc123", LAYERS)
    with running(source) as dev, running(Store()) as prod, pytest.raises(oci.RegistryError) as refused:
        oci.copy_image(oci.Registry(dev.host, ("AWS", "stale")), "dev", oci.Registry(prod.host), "p", "abc123")
    assert f"{dev.host} refused to let us read the manifest dev:abc123 (401: UNAUTHORIZED" in refused.value.message
    assert "ecr:GetDownloadUrlForLayer" in (refused.value.next_step or "")


def test_an_image_the_source_no_longer_holds_is_said() -> None:
    gone = pytest.raises(oci.RegistryError, match=r"dev:gone is not in 127\.0\.0\.1:\d+, though its environment")
    with running(Store()) as dev, running(Store()) as prod, gone as refused:
        oci.copy_image(oci.Registry(dev.host), "dev", oci.Registry(prod.host), "prod", "gone")
    assert refused.value.exit_code == 2  # a missing image: exit 2, as everywhere


def test_a_multi_platform_index_goes_with_each_of_its_images() -> None:
    source, target = Store(), Store()
    amd = source.put_image("dev", "amd", LAYERS[:2], platform="linux/amd64")
    arm = source.put_image("dev", "arm", [b"arm layer"], platform="linux/arm64")
    entries = [
        {
            "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
            "digest": digest,
            "size": len(source.manifests["dev"][digest][0]),
            "platform": {"os": "linux", "architecture": arch},
        }
        for digest, arch in ((amd, "amd64"), (arm, "arm64"))
    ]
    index = json.dumps({"schemaVersion": 2, "mediaType": oci.DOCKER_LIST, "manifests": entries}).encode()
    digest = source.put_manifest("dev", "multi", index, oci.DOCKER_LIST)
    with running(source) as dev, running(target) as prod:
        copied = oci.copy_image(
            oci.Registry(dev.host), "dev", oci.Registry(prod.host), "prod", "multi", platform="linux/arm64"
        )
        with pytest.raises(oci.RegistryError, match="is for linux/amd64, linux/arm64, not for linux/s390x"):
            oci.copy_image(
                oci.Registry(dev.host), "dev", oci.Registry(prod.host), "prod2", "multi", platform="linux/s390x"
            )
    assert copied.digest == digest and target.manifests["prod"]["multi"][0] == index
    assert {amd, arm} <= set(target.manifests["prod"])  # each image of the index, by its digest
    assert copied.sent == 5  # two configs, three layers


def test_an_index_naming_an_image_its_registry_lacks_is_refused_before_anything_is_sent() -> None:
    """A state no rerun mends (exit 2, as the copy's other refusals), where it was a failure (exit 1)."""
    source, target = Store(), Store()
    amd = source.put_image("dev", "amd", LAYERS[:2], platform="linux/amd64")
    entries = [
        {"mediaType": "application/vnd.docker.distribution.manifest.v2+json", "digest": digest, "size": 1}
        for digest in (amd, "sha256:" + "1" * 64)  # the second: deleted by hand, or never pushed
    ]
    index = json.dumps({"schemaVersion": 2, "mediaType": oci.DOCKER_LIST, "manifests": entries}).encode()
    source.put_manifest("dev", "multi", index, oci.DOCKER_LIST)
    refused = pytest.raises(oci.RegistryRefusal, match="lists sha256:111111111111 in an index but does not hold it")
    with running(source) as dev, running(target) as prod, refused:
        oci.copy_image(oci.Registry(dev.host), "dev", oci.Registry(prod.host), "prod", "multi")
    assert target.count("PATCH") == 0 and target.count("PUT") == 0


def test_a_registry_that_does_not_answer_is_said() -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    with running(Store()) as prod, pytest.raises(oci.RegistryError) as down:
        oci.copy_image(oci.Registry(f"127.0.0.1:{port}", timeout=2), "dev", oci.Registry(prod.host), "p", "t")
    assert f"the registry 127.0.0.1:{port} is not answering" in down.value.message


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1:5000", True),
        ("localhost:5000", True),
        ("[::1]:5000", True),
        ("123456789012.dkr.ecr.eu-west-1.amazonaws.com", False),
        ("registry.example.com:443", False),
    ],
)
def test_loopback_registries_are_spoken_to_over_plain_http(host: str, loopback: bool) -> None:
    assert oci.is_loopback(host) is loopback
    assert oci.Registry(host).base.startswith("http://" if loopback else "https://")


# -- the step ---------------------------------------------------------------------------------------------------


def _promote_ctx(out: io.StringIO, dev_host: str, prod_host: str) -> tuple[Context, list[str]]:
    """A Context for prod, whose source dev has its own registry; both plain (``registry``), so no ECR token."""
    asked: list[str] = []

    def factory(host: str, name: str) -> AwsFactory:
        aws = Mock(spec=AwsFactory)
        aws.env = dataclasses.replace(sample_env(), name=name, registry=host, repository=f"{name}-backend")
        return aws

    def aws_of(name: str) -> AwsFactory:
        asked.append(name)
        return factory(dev_host, name)

    clock = FakeClock()
    prod = factory(prod_host, "prod")
    ctx = Context(Mock(), prod.env, prod, clock, Reporter(out, tty=False, clock=clock), Mock(), None, aws_of)
    return ctx, asked


def test_promote_image_copies_what_the_source_runs_into_this_environments_repository() -> None:
    source, target = Store(), Store()
    digest = source.put_image("dev-backend", "abc123def456", LAYERS)
    out = io.StringIO()
    with running(source) as dev, running(target) as prod:
        ctx, asked = _promote_ctx(out, dev.host, prod.host)
        step = PromoteImage("dev", "abc123def456", f"{prod.host}/prod-backend")
        outcome = step.run(ctx)
        again = step.run(ctx)
    assert asked == ["dev", "dev"]  # dev's registry, found with dev's own AWS
    assert outcome.status == "done" and outcome.outputs["digest"] == digest
    assert outcome.detail.startswith(f"{dev.host}/dev-backend:abc123def456 → {prod.host}/prod-backend:abc123def456 ")
    assert "(4 blob(s) copied" in outcome.detail
    assert again.status == "skipped" and again.detail.endswith(f"is already dev's image ({digest[:19]})")
    assert target.manifests["prod-backend"]["abc123def456"] == source.manifests["dev-backend"]["abc123def456"]


def test_promote_image_keeps_a_tag_built_apart_and_says_so() -> None:
    source, target = Store(), Store()
    source.put_image("dev-backend", "abc123def456", LAYERS)
    theirs = target.put_image("prod-backend", "abc123def456", [b"prod built this commit itself"])
    with running(source) as dev, running(target) as prod:
        ctx, _ = _promote_ctx(io.StringIO(), dev.host, prod.host)
        outcome = PromoteImage("dev", "abc123def456", f"{prod.host}/prod-backend").run(ctx)
    assert outcome.status == "skipped" and outcome.outputs["digest"] == theirs
    assert "is already in the registry, built apart" in outcome.detail


def test_promote_image_refuses_a_tag_its_registry_holds_for_another_platform() -> None:
    source, target = Store(), Store()
    source.put_image("dev-backend", "abc123def456", LAYERS, platform="linux/arm64")
    target.put_image("prod-backend", "abc123def456", [b"prod built this commit itself"], platform="linux/amd64")
    with running(source) as dev, running(target) as prod:
        ctx, _ = _promote_ctx(io.StringIO(), dev.host, prod.host)
        step = PromoteImage("dev", "abc123def456", f"{prod.host}/prod-backend", platform="linux/arm64")
        with pytest.raises(UsageError) as refused:
            step.run(ctx)
    assert refused.value.exit_code == 2
    assert (
        f"{prod.host}/prod-backend:abc123def456 is in the registry already, for linux/amd64, not for linux/arm64"
    ) in refused.value.message
    assert target.count("PUT") == 0


def test_the_registry_trusts_the_ca_bundle_the_aws_calls_trust(monkeypatch: pytest.MonkeyPatch) -> None:
    """Behind a TLS proxy, AWS_CA_BUNDLE (boto3's) covers ECR's registry too; requests' own variable wins."""
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("AWS_CA_BUNDLE", raising=False)
    assert oci.Registry("123456789012.dkr.ecr.eu-west-1.amazonaws.com").session.verify is True
    monkeypatch.setenv("AWS_CA_BUNDLE", "/etc/ssl/proxy-ca.pem")
    assert oci.Registry("123456789012.dkr.ecr.eu-west-1.amazonaws.com").session.verify == "/etc/ssl/proxy-ca.pem"
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/etc/ssl/other.pem")  # requests reads it per request
    assert oci.Registry("123456789012.dkr.ecr.eu-west-1.amazonaws.com").session.verify is True
