"""The sandbox's ECR applies a repository's lifecycle policy as ECR does (sandbox.ext.ecr_registry.expired_by_policy):
the registry stack's own policy, rule priority, selections by tag prefix and pattern, ages and counts."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from sandbox.ext.ecr_registry import RegistryImage, expired_by_policy

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def image(digest: str, hours_ago: float, *tags: str) -> RegistryImage:
    return RegistryImage("000000000000", "repo", digest, list(tags), 1, NOW - timedelta(hours=hours_ago), "m")


def policy(*rules: dict[str, Any]) -> str:
    return json.dumps(
        {"rules": [{"rulePriority": i + 1, "selection": r, "action": {"type": "expire"}} for i, r in enumerate(rules)]}
    )


# the registry stack's (cdk/stacks/registry_stack.py), with 3 in place of its 30
STACKS = policy(
    {"tagStatus": "untagged", "countType": "sinceImagePushed", "countNumber": 1, "countUnit": "days"},
    {"tagStatus": "tagged", "tagPatternList": ["*"], "countType": "imageCountMoreThan", "countNumber": 3},
)


def test_the_registry_stacks_policy_keeps_the_newest_tagged_and_untagged_images_of_less_than_a_day() -> None:
    images = [image(f"sha256:{i}", 10 * i, f"tag{i}") for i in range(6)]  # pushed 0-50 hours ago
    images += [image("sha256:left-over", 35), image("sha256:fresh-left-over", 2)]
    assert expired_by_policy(STACKS, images, NOW) == ["sha256:5", "sha256:4", "sha256:left-over", "sha256:3"]
    assert expired_by_policy(STACKS, images[:3], NOW) == []  # three tagged: none past the count


def test_a_higher_rule_s_image_is_counted_by_a_lower_one_but_never_expired_by_it() -> None:
    """release-* images are kept by rule 1 (the newest 5 of them); rule 2 (any tag, the newest 2) counts them among
    its newest, but expires only those rule 1 did not select."""
    rules = policy(
        {"tagStatus": "tagged", "tagPrefixList": ["release-"], "countType": "imageCountMoreThan", "countNumber": 5},
        {"tagStatus": "any", "countType": "imageCountMoreThan", "countNumber": 2},
    )
    images = [
        image("sha256:r1", 1, "release-1"),
        image("sha256:d1", 2, "dev-1"),
        image("sha256:r2", 3, "release-2", "dev-2"),
        image("sha256:d3", 4, "dev-3"),
        image("sha256:u", 5),
    ]
    assert expired_by_policy(rules, images, NOW) == ["sha256:u", "sha256:d3"]


def test_every_prefix_and_every_pattern_of_a_selection_must_be_matched_by_a_tag() -> None:
    rules = policy(
        {
            "tagStatus": "tagged",
            "tagPatternList": ["prod*", "*-ok"],
            "countType": "sinceImagePushed",
            "countNumber": 1,
            "countUnit": "days",
        },
    )
    images = [
        image("sha256:both", 48, "prod-1", "x-ok"),
        image("sha256:one", 48, "prod-2"),
        image("sha256:new", 1, "prod-3", "y-ok"),
    ]
    assert expired_by_policy(rules, images, NOW) == ["sha256:both"]
    assert expired_by_policy(policy(), images, NOW) == []  # no rule: nothing expires
