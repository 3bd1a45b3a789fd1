"""A stack's preview (inv diff, deploy.auto's dry run) says its health as inv health judges its status, with what a
deploy of it does first; a stack that is fine, or not there yet, says nothing more."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest

from deploykit import commands, markdown
from deploykit.commands.previews import show_preview
from deploykit.config import load_config
from deploykit.stacks import Change, no_preview


def preview(project: Path, stack: dict[str, Any] | None) -> tuple[str, dict[str, Any], tuple[str, ...]]:
    runtime = commands.Runtime(config_path=project / "deploy.toml", stdout=io.StringIO(), stderr=io.StringIO())
    env = load_config(project / "deploy.toml").environment("dev")
    found = None if stack is None else [Change("Fn", "AWS::Lambda::Function", "Modify", "False")]
    shown = show_preview(runtime, env, "CarRentalApiStack", found, stack)
    return runtime.stderr.getvalue(), shown.json, shown.section.attention  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("status", "line", "severity"),
    [
        (
            "UPDATE_ROLLBACK_COMPLETE",
            "  ⚠️  stack CarRentalApiStack: last update rolled back (UPDATE_ROLLBACK_COMPLETE); the previous version is "
            "serving → see why: aws cloudformation describe-stack-events --stack-name CarRentalApiStack",
            "warning",
        ),
        (
            "UPDATE_ROLLBACK_FAILED",
            "  ❌ stack CarRentalApiStack is UPDATE_ROLLBACK_FAILED: an update failed and so did its rollback; "
            "CloudFormation cannot update it → inv deploy.stack CarRentalApiStack --env dev (deploykit continues the "
            "rollback first, then deploys)",
            "broken",
        ),
        ("UPDATE_IN_PROGRESS", "  ⚠️  stack CarRentalApiStack is busy (UPDATE_IN_PROGRESS) → wait for it", "warning"),
    ],
)
def test_a_stack_that_is_not_well_says_so_above_its_changes(
    project: Path, status: str, line: str, severity: str
) -> None:
    said, shown, attention = preview(project, {"StackName": "CarRentalApiStack", "StackStatus": status})
    lines = said.splitlines()
    assert lines[1] == f"🐳 CarRentalApiStack ({status})"
    assert lines[2].startswith(line), lines
    assert lines[3].split()[0] == "resource"  # the changes below it
    assert shown["status"] == status and shown["health"]["severity"] == severity
    assert shown["health"]["what"] in attention  # --markdown's Needs attention


@pytest.mark.parametrize("stack", [{"StackName": "CarRentalApiStack", "StackStatus": "UPDATE_COMPLETE"}, None])
def test_a_stack_that_is_fine_or_not_there_says_nothing_more(project: Path, stack: dict[str, Any] | None) -> None:
    said, shown, attention = preview(project, stack)
    assert shown["health"] is None and attention == ()
    assert "⚠️" not in said and "❌" not in said


def test_a_stack_whose_status_takes_no_change_set_says_no_preview_not_would_be_created(project: Path) -> None:
    runtime = commands.Runtime(config_path=project / "deploy.toml", stdout=io.StringIO(), stderr=io.StringIO())
    env = load_config(project / "deploy.toml").environment("dev")
    stack = {"StackName": "CarRentalApiStack", "StackStatus": "UPDATE_ROLLBACK_FAILED"}
    shown = show_preview(runtime, env, "CarRentalApiStack", no_preview("UPDATE_ROLLBACK_FAILED"), stack)
    said = runtime.stderr.getvalue().splitlines()  # type: ignore[attr-defined]
    assert said[2].startswith("  ❌ stack CarRentalApiStack is UPDATE_ROLLBACK_FAILED")  # its health, then why
    assert said[3].startswith("  no preview: CloudFormation makes no change set until the failed rollback is ")
    assert "would be created" not in "\n".join(said)
    assert shown.json["changes"] is None and "continues it first" in shown.json["no_preview"]
    assert shown.section.no_preview and shown.section.changes is None
    review = markdown.Review("dev", None, "a" * 40, ["stack:api"], [], "inv deploy.auto", [shown.section])
    title = markdown.review(review)
    assert "#### 🐳 CarRentalApiStack · `UPDATE_ROLLBACK_FAILED` · no preview\n" in title  # not "would be created"


def test_a_stack_that_became_busy_after_it_was_read_says_its_status_now(project: Path) -> None:
    runtime = commands.Runtime(config_path=project / "deploy.toml", stdout=io.StringIO(), stderr=io.StringIO())
    env = load_config(project / "deploy.toml").environment("dev")
    stack = {"StackName": "CarRentalApiStack", "StackStatus": "UPDATE_COMPLETE"}
    show_preview(runtime, env, "CarRentalApiStack", no_preview("UPDATE_IN_PROGRESS"), stack)
    said = runtime.stderr.getvalue().splitlines()  # type: ignore[attr-defined]
    assert said[1] == "🐳 CarRentalApiStack (UPDATE_COMPLETE)"
    assert said[2].startswith("  no preview (it is UPDATE_IN_PROGRESS now): CloudFormation makes no change set while")
    assert said[2].endswith("(run inv diff again once it is done)")
