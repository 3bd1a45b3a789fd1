"""The deployment report (deploykit.report): figures, chains, steps and failures from history records alone."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from deploykit.history import Record, shipped
from deploykit.report import Report, chain, changed, duration, percentile, text, verb

T0 = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)


def step(name: str, seconds: float, status: str = "done", detail: str = "", inside: str = "") -> dict[str, Any]:
    found: dict[str, Any] = {"step": name, "status": status, "seconds": seconds, "detail": detail}
    return found | ({"in": inside} if inside else {})


def record(
    at: float,
    command: str = "deploy.auto",
    *,
    ok: bool = True,
    seconds: float = 4.0,
    deployed: dict[str, str] | None = None,
    steps: list[dict[str, Any]] | None = None,
    head: str = "aaaaaaaaaaaa",
    error: str | None = None,
    refused: bool = False,
) -> Record:
    """A record written ``at`` minutes after T0."""
    moment = T0 + timedelta(minutes=at)
    return Record(
        id=f"{moment:%Y%m%dT%H%M%S}-{int(at * 1000):08d}",
        env="dev",
        when=moment.isoformat(timespec="seconds"),
        who="ana@laptop",
        command=command,
        head=head,
        ok=ok,
        seconds=seconds,
        components=dict(deployed if deployed is not None else {"app": head}),
        steps=steps or [],
        error=error,
        refused=refused,
    )


def make(records: list[Record], commits: dict[str, datetime] | None = None, days: float = 7) -> Report:
    until = T0 + timedelta(days=days)
    return Report("dev", until - timedelta(days=days), until, tuple(records), commits or {})


APP_STEPS = [
    step("sequence", 0.7),
    step("build", 0.5, inside="sequence"),
    step("push", 0.2, inside="sequence"),
    step("roll-service", 0.1),
    step("wait-healthy", 2.0),
    step("smoke", 0.3),
]


def test_a_run_is_named_by_its_command_and_its_chain_by_what_it_deployed() -> None:
    assert verb(record(0, "deploy.stack CarRentalApiStack")) == "deploy.stack"
    assert verb(record(0, "automatic rollback: app")) == "automatic rollback"
    assert verb(record(0, "rollback app → aaaaaaaaaaaa")) == "rollback"
    assert verb(record(0, "build → push")) == "build → push"
    assert chain(record(0, deployed={"app": "a"})) == "app"
    assert chain(record(0, deployed={"lambda:login_handler": "a", "lambda:health_handler": "a"})) == "lambda"
    assert chain(record(0, deployed={"stack:api": "a"})) == "stack"
    assert chain(record(0, deployed={"stack:api": "a", "app": "a"})) == "mixed"
    assert chain(record(0, "deploy.full", deployed={"stack:api": "a", "app": "a"})) == "full"
    assert chain(record(0, deployed={})) == "nothing"
    no_changes = [step("deploy-stack", 0.1, "skipped", "CarRentalApiStack: no changes"), step("smoke", 0, "skipped")]
    assert (
        chain(record(0, "deploy.stack CarRentalApiStack", deployed={"stack:api": "a"}, steps=no_changes)) == "nothing"
    )


def test_the_four_figures_count_deploys_failures_restores_and_commit_to_live() -> None:
    records = [
        record(0, deployed={"app": "aaaaaaaaaaaa"}, head="aaaaaaaaaaaa"),
        record(10, ok=False, head="bbbbbbbbbbbb", error="the rollout failed"),
        record(10.1, "automatic rollback: app", head="aaaaaaaaaaaa"),  # 6 s after the failure
        record(20, deployed={"lambda:login_handler": "cccccccccccc"}, head="cccccccccccc"),
        # ran, changed nothing: not a deployment
        record(30, "deploy.stack CarRentalApiStack", deployed={"stack:api": "a"}, steps=[step("x", 0, "skipped")]),
        record(40, "destroy", deployed={}),
        record(50, ok=False, head="dddddddddddd", error="build failed"),  # nothing after it: still failing
    ]
    commits = {"aaaaaaaaaaaa": T0 - timedelta(minutes=30), "cccccccccccc": T0 + timedelta(minutes=18)}
    data = make(records, commits).to_json()
    assert data["records"] == 7
    assert data["deploy_runs"] == 5  # rollbacks and destroys are not deploy runs
    assert data["deployments"] == 2
    assert data["deployments_per_day"] == pytest.approx(2 / 7, abs=1e-3)
    assert data["failed"] == 2 and data["change_failure_rate"] == pytest.approx(0.4)
    assert data["rollbacks"] == 1
    assert data["restore"]["restored"] == 1 and data["restore"]["median_seconds"] == pytest.approx(6.0)
    assert data["restore"]["still_failing"] == [records[-1].id]
    # commit to live: 30 min for aaaa, 2 min for cccc; the automatic rollback is no deployment of a change
    assert data["lead_time"] == {"deployments": 2, "median_seconds": pytest.approx(960.0)}


def test_a_dirty_build_or_a_commit_git_does_not_know_has_no_commit_to_live() -> None:
    records = [record(0, head="aaaaaaaaaaaa-dirty-0123456789ab"), record(5, head="eeeeeeeeeeee")]
    data = make(records, {"aaaaaaaaaaaa": T0 - timedelta(minutes=1)}).to_json()
    assert data["lead_time"] == {"deployments": 0, "median_seconds": None}


def test_chains_give_the_wall_times_of_successful_runs_beside_the_goals() -> None:
    records = [record(i, seconds=s) for i, s in enumerate([3.0, 4.0, 5.0, 30.0])]
    records += [record(10, ok=False, seconds=99.0)]  # a failed run's time is not the chain's
    records += [record(11, deployed={"lambda:login_handler": "a"}, seconds=0.4)]
    records += [record(12, "deploy.full", deployed={"app": "a", "stack:api": "a"}, seconds=60.0)]
    rows = {row["chain"]: row for row in make(records).chains()}
    assert list(rows) == ["app", "lambda", "full"]
    assert rows["app"] == {"chain": "app", "runs": 4, "median": 4.5, "p90": 30.0, "max": 30.0, "goal": 75.0}
    assert rows["lambda"]["goal"] == 15.0 and rows["full"]["goal"] is None


def test_steps_say_where_the_time_goes_most_first_groups_left_out_stacks_by_name() -> None:
    records = [
        record(0, steps=APP_STEPS),
        record(1, steps=APP_STEPS),
        record(
            2,
            steps=[
                step("deploy-stack", 7.0, detail="CarRentalFargateStack: updated in 7.0s"),
                step("deploy-stack", 0.1, status="skipped", detail="CarRentalApiStack: no changes"),
                step("wait-healthy", 1.0, status="failed", detail="did not become healthy"),
                step("smoke", 0.0, status="not run"),
            ],
            ok=False,
        ),
    ]
    rows = make(records).steps()
    assert [r["step"] for r in rows] == [
        "deploy-stack:CarRentalFargateStack",
        "wait-healthy",
        "build",
        "smoke",
        "push",
        "roll-service",
    ]
    wait = rows[1]
    assert wait == {
        "step": "wait-healthy",
        "done": 2,
        "failed": 1,
        "refused": 0,
        "median": 2.0,
        "p90": 2.0,
        "max": 2.0,
        "total": 4.0,
    }


def test_a_run_that_changed_nothing_that_runs_is_no_deployment() -> None:
    """A deploy.stack whose change set was empty synthesized and smoked (done), and changed nothing: its record
    says so (changed: false); one kept before records said it is judged by its steps."""
    said = dataclasses.replace(record(0, steps=[step("synth", 2.0), step("smoke", 0.3)]), changed=False)
    kept_before = record(1, steps=[step("synth", 2.0), step("deploy-stack", 0.1, status="skipped"), step("smoke", 0.3)])
    deployed = record(2, steps=[step("synth", 2.0), step("deploy-stack", 3.0), step("smoke", 0.3)])
    assert [changed(r) for r in (said, kept_before, deployed)] == [False, False, True]
    assert make([said, kept_before, deployed]).to_json()["deployments"] == 1


def test_a_successful_rerun_that_found_the_release_in_place_restores_the_failure() -> None:
    """deploy.app failed at smoke with --no-rollback; its rerun found roll-service done and passed: restored, though
    it changed nothing."""
    failed = record(0, ok=False, error="smoke failed", steps=APP_STEPS)
    rerun = dataclasses.replace(record(10, steps=[step("wait-healthy", 1.0), step("smoke", 0.3)]), changed=False)
    assert make([failed, rerun]).restores() == ([600.0], [])


def test_a_step_that_only_ever_failed_is_listed_with_no_times() -> None:
    rows = make([record(0, ok=False, steps=[step("push", 0.3, status="failed", detail="denied")])]).steps()
    assert rows == [
        {"step": "push", "done": 0, "failed": 1, "refused": 0, "median": None, "p90": None, "max": None, "total": 0}
    ]


def test_a_step_that_refused_is_counted_apart_from_one_that_failed() -> None:
    """A guard's refusal changed nothing: the step's row counts it as refused, as the run counts as refused; so does
    a refused run's failed step recorded before steps said so, and a late refusal (a run that failed part way)."""
    data = "refusing to deploy CarRentalDataStack: the change set would replace BookingsTable"
    refusing = step("deploy-stack", 0.1, status="failed", detail=data)
    records = [
        record(0, ok=False, refused=True, steps=[dict(refusing, refused=True)]),
        record(1, ok=False, refused=True, steps=[refusing]),  # kept before steps said they refused
        record(2, ok=False, steps=[step("upload-lambda", 0.2), dict(refusing, refused=True)]),  # refused late
        record(3, ok=False, steps=[dict(refusing, detail="CarRentalDataStack: UPDATE_ROLLBACK_COMPLETE")]),
    ]
    rows = {r["step"]: (r["failed"], r["refused"]) for r in make(records).steps()}
    assert rows["deploy-stack"] == (0, 3) and rows["deploy-stack:CarRentalDataStack"] == (1, 0)
    header = next(line for line in text(make(records)).splitlines() if line.startswith("step "))
    assert header.split() == ["step", "done", "failed", "refused", "median", "p90", "max", "total"]


def test_failures_are_the_newest_failed_runs_with_the_step_that_failed() -> None:
    failed_steps = [step("parallel", 1.0, status="failed"), step("deploy-stack", 1.0, "failed", "x", "parallel")]
    records = [record(i, ok=False, steps=failed_steps, error=f"failure {i}\nmore") for i in range(7)]
    failures = make(records).failures()
    assert [f["error"] for f in failures] == ["failure 6", "failure 5", "failure 4", "failure 3", "failure 2"]
    assert failures[0]["step"] == "deploy-stack"  # the child that failed, not its group


def test_the_text_names_the_window_the_figures_and_each_table() -> None:
    records = [record(0, steps=APP_STEPS), record(3, ok=False, error="the rollout failed", steps=APP_STEPS)]
    printed = text(make(records, {"aaaaaaaaaaaa": T0 - timedelta(minutes=2)}))
    assert printed.startswith("dev, 2026-11-20 09:00 → 2026-11-27 09:00 UTC: 2 recorded runs")
    assert "deployments      1 (1.0 a week)" in printed  # once in the week: not "0.1 a day"
    assert "failed runs      1 of 2 deploy runs (50%)" in printed
    assert "1 not yet followed by a successful run" in printed
    assert "commit to live   median 2m 00s (1 deployment)" in printed
    assert "≤ 75s" in printed and "wait-healthy" in printed
    assert "newest failed or refused runs:" in printed and "❌ failed" in printed and "the rollout failed" in printed
    assert "refused runs  " not in printed  # said only when there are some


def test_a_refused_run_is_neither_a_deployment_nor_a_failure_and_needs_no_restore() -> None:
    refusal = [step("deploy-stack", 0.4, "failed", "refusing to deploy CarRentalFargateStack to a protected ...")]
    records = [
        record(0),
        record(5, ok=False, refused=True, steps=refusal, error="refusing to deploy CarRentalFargateStack"),
        record(9, ok=False, error="the rollout failed"),
    ]
    report = make(records)
    data = report.to_json()
    assert data["deploy_runs"] == 2 and data["failed"] == 1 and data["refused"] == 1
    assert data["change_failure_rate"] == pytest.approx(0.5)
    assert data["restore"]["still_failing"] == [records[2].id]  # the refusal broke nothing to restore
    assert [f["result"] for f in data["failures"]] == ["failed", "refused"]
    printed = text(report)
    assert "failed runs      1 of 2 deploy runs (50%)" in printed
    assert "refused runs     1 (a guard or bad input stopped them: counted nowhere else)" in printed
    assert "🛑 refused  deploy-stack" in printed


def test_a_refused_rollback_put_nothing_back_and_is_counted_as_refused() -> None:
    refusal = [step("deploy-stack", 0.4, "failed", "refusing to replace CarRentalDataStack's table ...")]
    records = [
        record(0),
        record(5, "rollback stack:data → aaaaaaaaaaaa", ok=False, refused=True, steps=refusal, error="refusing"),
        record(9, "rollback app → aaaaaaaaaaaa"),
    ]
    data = make(records).to_json()
    assert data["rollbacks"] == 1 and data["refused"] == 1 and data["deploy_runs"] == 1
    assert "refused runs     1 (a guard or bad input stopped them: counted nowhere else)" in text(make(records))
    from deploykit import metrics

    assert [d["MetricName"] for d in metrics.data(records[1])] == []  # no Rollbacks datum: nothing was put back
    assert [d["MetricName"] for d in metrics.data(records[2])] == ["Rollbacks"]


def test_a_restart_is_neither_a_deploy_run_nor_a_restore_but_its_failure_is_listed() -> None:
    restarted = [step("restart", 1.6, "failed", "the fresh tasks of car-rental-service did not become healthy")]
    records = [
        record(0),
        record(5, "restart app", ok=False, deployed={}, steps=restarted, error="did not become healthy"),
        record(7, ok=False, error="the rollout failed"),
        record(9, "restart app", deployed={}, steps=[step("restart", 1.5)]),
    ]
    data = make(records).to_json()
    assert data["deploy_runs"] == 2 and data["failed"] == 1 and data["deployments"] == 1
    assert data["restore"]["still_failing"] == [records[2].id]  # new tasks of the same code restore nothing
    assert [f["command"] for f in data["failures"]] == ["deploy.auto", "restart app"]


def test_a_window_of_hours_counts_an_hour_and_an_empty_one_says_so() -> None:
    assert "(2.0 an hour)" in text(make([record(0), record(1)], days=1 / 24))
    assert "(3.0 a day)" in text(make([record(i) for i in range(3)], days=1))
    assert "(1.0 a month)" in text(make([record(0)], days=30))  # a prod deploying monthly: not "0.0 a day"
    assert "(0.5 a month)" in text(make([record(0)], days=60))
    assert text(make([])) == "dev: no deployment recorded from 2026-11-20 09:00 → 2026-11-27 09:00 UTC\n"


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [
        (None, "-"),
        (0.04, "0.0s"),
        (59.94, "59.9s"),
        (60, "1m 00s"),
        (3599, "59m 59s"),
        (7260, "2h 01m"),
        (3 * 86400 + 4 * 3600, "3d 4h"),
    ],
)
def test_durations_read_short(seconds: float | None, shown: str) -> None:
    assert duration(seconds) == shown


def test_the_percentile_is_nearest_rank() -> None:
    assert percentile([5.0], 90) == 5.0
    assert percentile([float(i) for i in range(1, 11)], 90) == 9.0
    assert percentile([float(i) for i in range(1, 12)], 90) == 10.0
    assert percentile([3.0, 1.0, 2.0], 50) == 2.0


def test_the_text_shows_the_ten_steps_that_took_most_and_says_how_many_more() -> None:
    steps = [step(f"s{i:02d}", float(i)) for i in range(12)]
    printed = text(make([record(0, steps=steps)]))
    assert "s11" in printed and "s02" in printed and "s01 " not in printed
    assert "(and 2 steps that took less in all: --json has them)" in printed


def test_a_canary_that_took_itself_back_is_a_failure_restored_at_once() -> None:
    canary_failed = [
        step("sequence", 1.0, "failed", inside=""),
        step("canary", 0.8, "failed", "the canary of health_handler failed", "sequence"),
    ]
    records = [
        record(0, ok=False, steps=canary_failed, error="the canary ... back; live serves version 1 alone again"),
        record(60),
    ]
    data = make(records).to_json()
    assert data["failed"] == 1 and data["restore"] == {"restored": 1, "still_failing": [], "median_seconds": 0.0}


def test_a_canary_held_back_beside_the_one_that_failed_is_neither_the_failure_nor_a_failure_of_its_own() -> None:
    """A canary failed and took itself back; beside it another canary, and a function's chain before its publish,
    were held back (stopped by that failure, after it in the record): the held-back chain was named the run's failing
    step (the restore counted open), and the held-back canary a canary failure more."""
    held = {"held_back": True}
    steps = [
        step("parallel", 1.0, "failed"),
        step("sequence", 1.0, "failed", inside="parallel"),
        step("canary", 0.8, "failed", "the canary of login_handler failed", "sequence"),
        step("sequence", 1.0, "failed", inside="parallel") | held,
        step("canary", 0.8, "failed", "the canary of health_handler stopped unjudged", "sequence") | held,
        step("sequence", 1.0, "failed", inside="parallel") | held,
        step("update-code", 0.1, "done", inside="sequence"),
        step("publish-version", 0.0, "not run", inside="sequence"),
    ]
    records = [
        record(0, ok=False, steps=steps, error="the canary ... back; live serves version 1 alone again"),
        record(60),
    ]
    data = make(records).to_json()
    assert data["restore"] == {"restored": 1, "still_failing": [], "median_seconds": 0.0}
    assert [(row["step"], row["failed"]) for row in data["steps"] if row["failed"]] == [("canary", 1)]


def test_the_time_runs_waited_for_the_lock_is_counted_and_said_only_when_there_was_some() -> None:
    """Runs whose command waited for another deploy's lock first (DEPLOYKIT_LOCK_WAIT): what deploying one at a
    time costs the team, beside the four figures."""
    waited = [dataclasses.replace(record(0), waited=3.5), dataclasses.replace(record(5), waited=95.0), record(9)]
    report = make(waited)
    assert report.to_json()["lock_waits"] == {"runs": 2, "seconds": 98.5, "max_seconds": 95.0}
    assert "\nwaited for the lock  2 runs, 1m 38s in all (longest 1m 35s)\n" in text(report)
    assert make([record(0)]).to_json()["lock_waits"] == {"runs": 0, "seconds": 0, "max_seconds": 0}
    assert "waited for the lock" not in text(make([record(0)]))


def test_inv_history_commits_lists_what_each_successful_run_took_live() -> None:
    took = record(9, deployed={"app": "b" * 12})
    took.commits[:] = [
        {"sha": "b" * 12, "author": "ana", "subject": "Fleet: more cars"},
        {"sha": "c" * 12, "author": "bo", "subject": "Login: v2"},
    ]
    failed = record(5, ok=False, error="the rollout failed")
    failed.commits[:] = [{"sha": "d" * 12, "author": "ana", "subject": "Broken"}]
    text = shipped([took, failed, record(1)])
    assert text == (
        "\n2026-11-20T09:09:00Z deploy.auto by ana@laptop took 2 commits live:\n"
        "  bbbbbbbbbbbb Fleet: more cars · ana\n"
        "  cccccccccccc Login: v2 · bo\n"
        "\n(2 of the runs above took no commit live that their record names)\n"
    )
    assert shipped([]) == ""
