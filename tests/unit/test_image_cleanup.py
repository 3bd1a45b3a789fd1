"""inv images.cleanup: the pure decision (what to delete, why each image stays), references, batches."""

from __future__ import annotations

import json
import random
import re
from datetime import UTC, datetime, timedelta
from typing import Any
from unittest.mock import Mock

import pytest
from botocore.exceptions import ClientError

from deploykit import image_cleanup
from deploykit.aws import AwsFactory
from deploykit.config import EnvConfig, Stacks
from deploykit.errors import StepFailed
from deploykit.image_cleanup import Image, plan_cleanup, split_reference, tag_key
from tests.conftest import aws_client

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
SHA = "0123456789abcdef0123456789abcdef01234567"  # a full git SHA; its tag is the first 12 characters


def detail(tag: str | None, hours_ago: float, size: int = 1_000_000, digest: str | None = None) -> dict[str, Any]:
    """A DescribeImages imageDetail."""
    return {
        "imageDigest": digest or f"sha256:{(tag or 'untagged').encode().hex():0<64}"[:71],
        **({"imageTags": [tag]} if tag else {}),
        "imagePushedAt": NOW - timedelta(hours=hours_ago),
        "imageSizeInBytes": size,
        "imageManifestMediaType": "application/vnd.docker.distribution.manifest.v2+json",
    }


def history_of(n: int) -> list[dict[str, Any]]:
    """n tagged images img0 (newest) ... img<n-1> (oldest), one hour apart."""
    return [detail(f"img{i}", hours_ago=i) for i in range(n)]


def deleted_tags(decision: image_cleanup.Decision) -> list[str]:
    return [", ".join(i.tags) or i.digest for i in decision.to_delete]


def test_the_newest_n_tagged_images_are_kept_and_the_rest_deleted() -> None:
    decision = plan_cleanup(history_of(6), keep=3, in_use={}, recorded={}, now=NOW)
    assert [c.image.tags[0] for c in decision.choices] == [f"img{i}" for i in range(6)], "newest first"
    assert deleted_tags(decision) == ["img3", "img4", "img5"]
    assert decision.why(detail("img0", 0)["imageDigest"]) == ("newest 3",)
    assert decision.choices[3].reasons == ("older than the newest 3, not in use, not recorded",)
    assert decision.bytes_to_free == 3_000_000


def test_the_order_ecr_lists_images_in_does_not_matter() -> None:
    images = history_of(8)
    shuffled = list(images)
    random.Random(4).shuffle(shuffled)
    assert deleted_tags(plan_cleanup(shuffled, keep=3, in_use={}, recorded={}, now=NOW)) == deleted_tags(
        plan_cleanup(images, keep=3, in_use={}, recorded={}, now=NOW)
    )


def test_an_image_in_use_is_kept_by_tag_or_by_digest_whatever_its_age() -> None:
    images = history_of(6)
    by_digest = images[5]["imageDigest"]
    decision = plan_cleanup(
        images,
        keep=2,
        in_use={"img4": "in use by car-rental-backend:12 (PRIMARY)", by_digest: "in use by car-rental-backend:9"},
        recorded={},
        now=NOW,
    )
    assert deleted_tags(decision) == ["img2", "img3"]
    assert decision.why(images[4]["imageDigest"]) == ("in use by car-rental-backend:12 (PRIMARY)",)
    assert decision.why(by_digest) == ("in use by car-rental-backend:9",)


def test_a_newest_image_in_use_says_both_reasons() -> None:
    decision = plan_cleanup(history_of(2), keep=1, in_use={"img0": "in use by svc:3 (PRIMARY)"}, recorded={}, now=NOW)
    assert decision.choices[0].reasons == ("newest 1", "in use by svc:3 (PRIMARY)")


def test_recorded_shas_keep_their_images_full_or_short_and_dirty_tags_match_exactly() -> None:
    clean = SHA[:12]
    dirty = f"{clean}-dirty-5f2a9c0b1d3e"
    other_dirty = f"{clean}-dirty-000000000000"
    images = [
        detail("newest", 0),
        detail(clean, 10),
        detail(dirty, 11),
        detail(other_dirty, 12),
        detail("feedfacecafe", 13),
    ]
    decision = plan_cleanup(
        images,
        keep=1,
        in_use={},
        recorded={SHA: "deployed in dev at 2026-11-27 09:00 UTC", dirty: "deployed in sandbox at 2026-11-27 10:00 UTC"},
        now=NOW,
    )
    # the full SHA matches its 12-character tag; a recorded dirty tag keeps that image and no other
    assert deleted_tags(decision) == [other_dirty, "feedfacecafe"]
    assert decision.why(images[1]["imageDigest"]) == ("deployed in dev at 2026-11-27 09:00 UTC",)
    assert decision.why(images[2]["imageDigest"]) == ("deployed in sandbox at 2026-11-27 10:00 UTC",)


def test_a_recorded_clean_sha_does_not_keep_a_dirty_image_of_that_commit() -> None:
    dirty = f"{SHA[:12]}-dirty-5f2a9c0b1d3e"
    decision = plan_cleanup(
        [detail("newest", 0), detail(dirty, 5)], keep=1, in_use={}, recorded={SHA[:12]: "deployed"}, now=NOW
    )
    assert deleted_tags(decision) == [dirty]


def test_tag_key_compares_commits_by_their_first_12_characters() -> None:
    assert tag_key(SHA) == tag_key(SHA[:12]) == SHA[:12]
    assert tag_key(f"{SHA}-dirty-abc") == f"{SHA[:12]}-dirty-abc"
    assert tag_key("old") == "old" and tag_key("latest") == "latest"


def test_untagged_images_never_count_among_the_newest_and_go_after_a_day() -> None:
    images = [
        detail(None, 0.5, digest="sha256:" + "a" * 64),  # pushed half an hour ago: may be a push under way
        detail("img0", 1),
        detail(None, 30, size=7, digest="sha256:" + "b" * 64),
        detail("img1", 40),
        detail("img2", 50),
    ]
    decision = plan_cleanup(images, keep=2, in_use={}, recorded={}, now=NOW)
    assert [i.digest for i in decision.to_delete] == ["sha256:" + "b" * 64, images[4]["imageDigest"]]
    assert decision.why("sha256:" + "a" * 64) == ("untagged, pushed less than 1 day ago (a push may be under way)",)
    assert decision.why("sha256:" + "b" * 64) == ("untagged, pushed 1 day ago, not in use",)
    assert decision.why(images[3]["imageDigest"]) == ("newest 2",), "the untagged images took no slot"


def test_an_untagged_image_in_use_by_digest_is_kept() -> None:
    digest = "sha256:" + "c" * 64
    decision = plan_cleanup(
        [detail("img0", 0), detail(None, 100, digest=digest)],
        keep=1,
        in_use={digest: "in use by svc:2 (ACTIVE)"},
        recorded={},
        now=NOW,
    )
    assert decision.to_delete == ()


def test_images_pushed_at_the_same_moment_as_the_last_kept_one_are_all_kept() -> None:
    images = [detail("a", 0), detail("b", 1), detail("c", 1), detail("d", 1), detail("e", 2)]
    for order in (images, list(reversed(images))):
        decision = plan_cleanup(order, keep=2, in_use={}, recorded={}, now=NOW)
        assert deleted_tags(decision) == ["e"]
        assert [c.image.tags[0] for c in decision.choices] == ["a", "b", "c", "d", "e"], "ties ordered by tag"
        assert decision.choices[0].reasons == ("newest 2",)
        assert decision.choices[2].reasons == ("newest 2 (tied: pushed with the last of them)",)


def test_keep_at_least_the_number_of_images_deletes_nothing() -> None:
    for keep in (5, 6, 100):
        decision = plan_cleanup(history_of(5), keep=keep, in_use={}, recorded={}, now=NOW)
        assert decision.to_delete == () and decision.bytes_to_free == 0
        assert all(c.reasons == (f"newest {keep}",) for c in decision.choices)
    assert plan_cleanup([], keep=1, in_use={}, recorded={}, now=NOW).choices == ()


def test_keep_must_be_positive() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        plan_cleanup(history_of(2), keep=0, in_use={}, recorded={}, now=NOW)


def test_an_image_listed_once_per_tag_is_one_image() -> None:
    digest = "sha256:" + "d" * 64
    images = [detail("img0", 0), detail("x", 5, digest=digest), detail("y", 5, digest=digest)]
    decision = plan_cleanup(images, keep=1, in_use={}, recorded={}, now=NOW)
    assert len(decision.choices) == 2 and [i.digest for i in decision.to_delete] == [digest]


def test_the_platform_images_of_a_kept_index_stay_with_it() -> None:
    index = {**detail("multi", 0), "imageManifestMediaType": "application/vnd.oci.image.index.v1+json"}
    old_index = {
        **detail("oldmulti", 90, digest="sha256:" + "9" * 64),
        "imageManifestMediaType": "application/vnd.oci.image.index.v1+json",
    }
    amd, arm, old_amd = ("sha256:" + c * 64 for c in "ef1")
    images = [index, old_index, *(detail(None, 80, digest=d) for d in (amd, arm, old_amd))]
    decision = plan_cleanup(
        images,
        keep=1,
        in_use={},
        recorded={},
        parts={index["imageDigest"]: [amd, arm], old_index["imageDigest"]: [old_amd]},
        now=NOW,
    )
    assert decision.why(amd) == ("platform image of multi",)
    assert sorted(i.digest for i in decision.to_delete) == sorted([old_index["imageDigest"], old_amd])


def test_image_from_ecr_reads_sizes_and_times_in_every_shape() -> None:
    image = Image.from_ecr(
        {"imageDigest": "sha256:" + "0" * 64, "imageTags": ["b", "a"], "imagePushedAt": 1_764_000_000}
    )
    assert image.tags == ("a", "b") and image.size == 0 and image.pushed_at.tzinfo is not None
    assert image.short_digest == "sha256:000000000000"


@pytest.mark.parametrize(
    ("reference", "expected"),
    [
        ("123456789012.dkr.ecr.eu-west-1.amazonaws.com/car-rental-backend:abc", ("car-rental-backend", "abc", None)),
        ("127.0.0.1:5000/car-rental-backend:abc", ("car-rental-backend", "abc", None)),
        ("localhost/team/car-rental-backend@sha256:ff", ("team/car-rental-backend", None, "sha256:ff")),
        ("car-rental-backend:abc@sha256:ff", ("car-rental-backend", "abc", "sha256:ff")),
        ("public/python:3.11", ("public/python", "3.11", None)),
    ],
)
def test_split_reference(reference: str, expected: tuple[str, str | None, str | None]) -> None:
    assert split_reference(reference) == expected


def fake_aws(answers: list[dict[str, Any]]) -> tuple[AwsFactory, Mock]:
    env = EnvConfig("dev", "eu-west-1", "c", "s", "backend", "car-rental-backend", Stacks("r", "d", "a", "f", "p"))
    ecr = aws_client("ecr")
    ecr.batch_delete_image.side_effect = answers
    aws = Mock(spec=AwsFactory)
    aws.env = env
    aws.client.return_value = ecr
    return aws, ecr


def test_delete_images_goes_by_digest_in_batches_of_100_and_reports_each_failure() -> None:
    images = [Image(f"sha256:{i:064x}", (f"t{i}",), NOW, 10) for i in range(250)]
    answers = [
        {"imageIds": [{"imageDigest": i.digest, "imageTag": i.tags[0]} for i in images[:100]], "failures": []},
        {
            "imageIds": [{"imageDigest": i.digest} for i in images[100:199]],
            "failures": [
                {
                    "imageId": {"imageDigest": images[199].digest},
                    "failureCode": "ImageReferencedByManifestList",
                    "failureReason": "Requested image referenced by manifest list",
                }
            ],
        },
        # two left out of the answer: one gone (moto does that with untagged images), one still there
        {"imageIds": [{"imageDigest": i.digest} for i in images[200:248]], "failures": []},
    ]
    aws, ecr = fake_aws(answers)
    not_found = ClientError({"Error": {"Code": "ImageNotFoundException", "Message": "no"}}, "DescribeImages")
    ecr.describe_images.side_effect = [not_found, {"imageDetails": [{"imageDigest": images[249].digest}]}]
    result = image_cleanup.delete_images(aws, images)
    sizes = [len(call.kwargs["imageIds"]) for call in ecr.batch_delete_image.call_args_list]
    assert sizes == [100, 100, 50]
    assert ecr.batch_delete_image.call_args_list[0].kwargs["imageIds"][0] == {"imageDigest": images[0].digest}
    assert ecr.batch_delete_image.call_args_list[0].kwargs["repositoryName"] == "car-rental-backend"
    assert len(result.deleted) == 248 and images[248].digest in result.deleted
    assert result.failed == {
        images[199].digest: "ImageReferencedByManifestList: Requested image referenced by manifest list",
        images[249].digest: "not deleted, and no failure reported for it",
    }
    assert [c.kwargs["imageIds"] for c in ecr.describe_images.call_args_list] == [
        [{"imageDigest": images[248].digest}],
        [{"imageDigest": images[249].digest}],
    ]


def test_table_and_summary_say_what_happens_and_the_space() -> None:
    decision = plan_cleanup(
        [detail("img0", 0, size=2_500_000), detail("img1", 30, size=48_213_112)],
        keep=1,
        in_use={},
        recorded={},
        now=NOW,
    )
    text = image_cleanup.table(decision, dry_run=True)
    assert "would delete" in text and "img1" in text and "48.2 MB" in text and "2026-11-27 06:00" in text
    dry = image_cleanup.summary(decision, repository="repo", dry_run=True)
    assert dry == (
        "dry run: would delete 1 image of 2, freeing 48.2 MB (compressed size, as ECR reports it); nothing was deleted"
    )
    done = image_cleanup.Deletion((decision.to_delete[0].digest,), {})
    assert image_cleanup.summary(decision, repository="repo", dry_run=False, deletion=done) == (
        "deleted 1 image, freed 48.2 MB (compressed size, as ECR reports it)"
    )
    failed = image_cleanup.Deletion((), {decision.to_delete[0].digest: "ImageNotFound: gone"})
    assert "FAILED" in image_cleanup.table(decision, dry_run=False, deletion=failed)
    assert image_cleanup.summary(decision, repository="repo", dry_run=False, deletion=failed) == (
        "deleted 0 images, freed 0.0 MB (compressed size, as ECR reports it); 1 image could not be deleted"
    )


def test_the_registry_lifecycle_policy_never_deletes_more_than_the_cleanup() -> None:
    """cdk/stacks/registry_stack.py's lifecycle rules, read as text (deploykit never imports the CDK app)."""
    from tests.conftest import REPO

    source = (REPO / "cdk" / "stacks" / "registry_stack.py").read_text()
    keep_images = re.search(r"^KEEP_IMAGES = (\d+)$", source, re.MULTILINE)
    untagged_days = re.search(r"^UNTAGGED_DAYS = (\d+)$", source, re.MULTILINE)
    assert keep_images and untagged_days
    assert int(keep_images.group(1)) >= 3 * image_cleanup.DEFAULT_KEEP, "many more than the cleanup's default --keep"
    assert timedelta(days=int(untagged_days.group(1))) >= image_cleanup.UNTAGGED_GRACE


def test_the_registry_stack_expires_the_templates_where_deploy_stack_puts_them() -> None:
    """The templates' lifecycle rules (cdk/stacks/registry_stack.py, read as text) name deploykit's prefixes."""
    from deploykit.stack_chain import KEPT_TEMPLATES, STAGED_TEMPLATES
    from tests.conftest import REPO

    source = (REPO / "cdk" / "stacks" / "registry_stack.py").read_text().splitlines()
    assert f'KEPT_TEMPLATES = "{KEPT_TEMPLATES}"' in source and f'STAGED_TEMPLATES = "{STAGED_TEMPLATES}"' in source


def test_index_parts_reads_the_platform_images_of_each_image_index_only() -> None:
    aws, ecr = fake_aws([])
    index = {**detail("multi", 0), "imageManifestMediaType": "application/vnd.oci.image.index.v1+json"}
    manifest = {"manifests": [{"digest": "sha256:" + "e" * 64}, {"digest": "sha256:" + "f" * 64}]}
    ecr.batch_get_image.return_value = {
        "images": [{"imageId": {"imageDigest": index["imageDigest"]}, "imageManifest": json.dumps(manifest)}]
    }
    assert image_cleanup.index_parts(aws, [index, detail("single", 1)]) == {
        index["imageDigest"]: ["sha256:" + "e" * 64, "sha256:" + "f" * 64]
    }
    [call] = ecr.batch_get_image.call_args_list
    assert call.kwargs["imageIds"] == [{"imageDigest": index["imageDigest"]}]
    assert image_cleanup.index_parts(aws, [detail("single", 1)]) == {}
    assert ecr.batch_get_image.call_count == 1, "no call when there is no index"


def test_an_image_index_ecr_did_not_give_stops_the_cleanup_before_anything_is_deleted() -> None:
    """A failure for an index in BatchGetImage's answer (KmsError) left it out of the parts: its platform images,
    untagged, were planned for deletion under the kept index."""
    aws, ecr = fake_aws([])
    index = {**detail("multi", 0), "imageManifestMediaType": "application/vnd.oci.image.index.v1+json"}
    failure = {"failureCode": "KmsError", "failureReason": "the key is disabled"}
    ecr.batch_get_image.return_value = {
        "images": [],
        "failures": [{"imageId": {"imageDigest": index["imageDigest"]}, **failure}],
    }
    with pytest.raises(
        StepFailed, match=r"ECR did not give the image index sha256:.* \(KmsError: the key is disabled\)"
    ):
        image_cleanup.index_parts(aws, [index])
    gone = {"failureCode": "ImageNotFound", "failureReason": "Requested image not found"}
    ecr.batch_get_image.return_value = {
        "images": [],
        "failures": [{"imageId": {"imageDigest": index["imageDigest"]}, **gone}],
    }
    assert image_cleanup.index_parts(aws, [index]) == {}  # deleted since it was listed: nothing to keep under it
