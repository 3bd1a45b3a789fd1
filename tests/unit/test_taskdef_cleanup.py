"""Which revisions inv taskdefs.cleanup deregisters, and how it says so (pure logic, no AWS)."""

from __future__ import annotations

import pytest

from deploykit.taskdef_cleanup import Deregistration, plan_cleanup, spans, summary

TD = "arn:aws:ecs:eu-west-1:1:task-definition/app:{}"


def test_the_newest_stay_and_a_needed_revision_is_matched_by_arn_or_by_family_and_revision() -> None:
    decision = plan_cleanup(
        "app",
        [TD.format(n) for n in (3, 1, 7, 5, 2, 6, 4)],
        keep=2,
        needed={TD.format(1): ["the service runs it"], "app:4": ["held by CarRentalFargateStack"]},
    )
    assert [c.revision for c in decision.choices] == [7, 6, 5, 4, 3, 2, 1]  # newest first, by revision number
    assert {c.revision: c.reasons for c in decision.kept} == {
        7: ("newest 2",),
        6: ("newest 2",),
        4: ("held by CarRentalFargateStack",),
        1: ("the service runs it",),
    }
    assert decision.to_deregister == (TD.format(5), TD.format(3), TD.format(2))
    assert decision.choices[2].reasons == ("older than the newest 2, not in use, not held, not recorded",)


def test_a_newest_revision_also_in_use_says_both_and_keep_must_be_positive() -> None:
    decision = plan_cleanup("app", [TD.format(1)], keep=1, needed={TD.format(1): ["1 task(s) run it"]})
    assert decision.kept[0].reasons == ("newest 1", "1 task(s) run it")
    with pytest.raises(ValueError):
        plan_cleanup("app", [], keep=0, needed={})


@pytest.mark.parametrize(
    ("numbers", "shown"),
    [([], ""), ([4], "4"), ([3, 1, 2], "1-3"), ([1, 2, 3, 5, 7, 8, 12], "1-3, 5, 7-8, 12"), ([2, 2, 3], "2-3")],
)
def test_revisions_read_as_runs(numbers: list[int], shown: str) -> None:
    assert spans(numbers) == shown


def test_the_closing_line_says_what_went_and_what_could_not() -> None:
    decision = plan_cleanup("app", [TD.format(n) for n in range(1, 6)], keep=2, needed={})
    assert summary(decision, dry_run=True, done=None) == (
        "dry run: would deregister 3 of 5 ACTIVE revision(s) of app (1-3); nothing was changed"
    )
    done = Deregistration((TD.format(3), TD.format(1)), {TD.format(2): "ClientException: throttled"})
    assert summary(decision, dry_run=False, done=done) == (
        "deregistered 2 of 5 ACTIVE revision(s) of app (1, 3); 1 could not be"
    )
    kept = plan_cleanup("app", [TD.format(1)], keep=3, needed={})
    assert summary(kept, dry_run=False, done=None) == "nothing to deregister: all 1 ACTIVE revision(s) of app are kept"
    assert summary(plan_cleanup("app", [], keep=3, needed={}), dry_run=False, done=None) == (
        "no ACTIVE revision of app: nothing to deregister"
    )
