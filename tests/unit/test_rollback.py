"""Resolving a rollback's target from fake history records, fake ECR and fake Lambda answers (deploykit.rollback)."""

from __future__ import annotations

import dataclasses
import io
import os
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from unittest.mock import Mock

import pytest

from deploykit import auto, history, lambda_chain, planner
from deploykit import git as git_module
from deploykit import rollback as rb
from deploykit.app_chain import RegisterTaskDef, RollService, WaitHealthy
from deploykit.aws import AwsFactory
from deploykit.config import EnvConfig, load_config
from deploykit.errors import Interrupted, RolledBackByEcs, StepFailed, UsageError
from deploykit.plan import Parallel, Plan, RunReport, Step, StepRecord
from deploykit.plan import Sequence as StepSequence
from deploykit.smoke import Smoke
from deploykit.stack_chain import DeployStack, action_key, was_key
from tests.conftest import aws_client, git
from tests.unit.test_stack_plans import with_lambdas  # noqa: F401 - a fixture

A = "aaaaaaa11111"
B = "bbbbbbb22222"
C = "ccccccc33333"
DIRTY_B = f"{B}-dirty-0123abcd"


def record(sha: str, *, ok: bool = True, component: str = "app", n: int = 0) -> history.Record:
    when = (datetime(2026, 1, 1, tzinfo=UTC) + timedelta(minutes=n)).isoformat()
    return history.Record(
        id=f"r{n}", env="dev", when=when, who="ana", command="deploy.app", head=sha, ok=ok, seconds=1.0,
        components={component: sha},
    )  # fmt: skip


@pytest.fixture
def env(project: Path) -> EnvConfig:
    return load_config(project / "deploy.toml").environment("dev")


# -- --to -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", ["abc", "xyz1234", "a" * 65, "", "3e2532e-dirty-"])
def test_to_must_be_a_hex_prefix(bad: str) -> None:
    with pytest.raises(UsageError, match="is not a commit"):
        rb.normalize_to(bad)


def test_to_takes_a_whole_sha_256_commit() -> None:
    """`git rev-parse HEAD` of a repository of SHA-256 objects (git init --object-format=sha256) is 64 hex digits:
    it was "not a commit" (7 to 40)."""
    assert rb.normalize_to("B" * 64) == "b" * 64
    assert rb.pick(rb.normalize_to("bbbbbbb22222" + "f" * 52), [C, B, A], what="x") == B


def test_to_matches_a_prefix_a_whole_sha_and_prefers_the_clean_build() -> None:
    tags = [DIRTY_B, C, B, A, "latest"]
    assert rb.pick("bbbbbbb", tags, what="x") == B
    assert rb.pick(rb.normalize_to("BBBBBBB22222" + "f" * 28), tags, what="x") == B  # a whole 40-digit SHA
    assert rb.pick("ccccccc3", tags, what="x") == C
    assert rb.pick("ddddddd", tags, what="x") is None


def test_to_matches_a_dirty_build_alone_or_by_its_whole_tag() -> None:
    assert rb.pick("bbbbbbb", [DIRTY_B, A], what="x") == DIRTY_B
    assert rb.pick(DIRTY_B, [DIRTY_B, B], what="x") == DIRTY_B
    with pytest.raises(UsageError, match="2 uncommitted builds") as err:
        rb.pick("bbbbbbb", [DIRTY_B, f"{B}-dirty-99"], what="x")
    assert DIRTY_B in (err.value.next_step or "")


def test_an_exact_pick_is_the_build_named_never_another_of_its_commit() -> None:
    """What was live before a run being undone is that very build: a build of uncommitted changes of the same
    commit (still in the registry when the clean one is gone) is another release."""
    assert rb.pick(B, [DIRTY_B, A], what="x") == DIRTY_B  # --to: any build of the commit
    assert rb.pick(B, [DIRTY_B, A], what="x", exact=True) is None
    assert rb.pick(B, [DIRTY_B, B], what="x", exact=True) == B
    assert rb.pick(DIRTY_B, [DIRTY_B, B], what="x", exact=True) == DIRTY_B


def test_an_ambiguous_prefix_is_refused_naming_the_commits() -> None:
    with pytest.raises(UsageError, match="ambiguous") as err:
        rb.pick("abcdef0", ["abcdef011111", "abcdef022222"], what="the images")
    assert "abcdef011111, abcdef022222" in err.value.message


# -- the previous successful deploy -----------------------------------------------------------------------------


def test_previous_deploy_skips_failed_records_and_the_live_one() -> None:
    records = [record(C, ok=False, n=3), record(B, n=2), record(A, n=1)]  # newest first; live is B
    found = rb.previous_deploy(records, "app", B)
    assert found is not None and found.components["app"] == A


def test_previous_deploy_ignores_other_components() -> None:
    records = [record(C, component="lambda:login_handler", n=3), record(B, n=2), record(A, n=1)]
    found = rb.previous_deploy(records, "lambda:login_handler", live="zzzzzzzzzzzz")
    assert found is not None and found.components == {"lambda:login_handler": C}
    assert rb.previous_deploy(records, "lambda:login_handler", live=C) is None


@pytest.mark.parametrize("live", [A, B, C, "zzzzzzzzzzzz", None])
@pytest.mark.parametrize("there", [{A, B, C}, {A, C}, {A}, set()])
def test_what_a_cleanup_keeps_holds_what_rollback_goes_back_to_whatever_is_live(
    live: str | None, there: set[str]
) -> None:
    """history.rollback_targets (what lambda.cleanup and images.cleanup keep) holds previous_deploy's pick for any
    live commit and any commits still there to go back to, and not every deploy."""
    records = [
        record(C, n=9), record(B, ok=False, n=8), record(B, n=7), record(C, n=6), record(B, n=5),
        record(A, component="lambda:login_handler", n=4), record(A, n=3), record(B, n=2), record(A, n=1),
    ]  # fmt: skip
    kept = history.rollback_targets(records, "app", lambda _c, sha: sha in there)
    picked = rb.previous_deploy(records, "app", live, lambda sha: sha in there)
    assert picked is None or picked.components["app"] in {r.components["app"] for r in kept}
    if there == {A, B, C}:
        assert [r.id for r in kept] == ["r9", "r7"], "the newest two commits' deploys, no further"


def test_what_a_cleanup_keeps_holds_the_deploy_before_a_release_a_rollback_took_off() -> None:
    """A, B, C deployed, C rolled back by hand to B: rolling back again goes to A (C was taken off), so a cleanup
    keeps A's image too, not the newest two commits B and C alone."""
    back = dataclasses.replace(record(B, n=4), command=f"rollback app → {B}", base={"app": C})
    records = [back, record(C, n=3), record(B, n=2), record(A, n=1), record(C, n=0)]
    kept = history.rollback_targets(records, "app")
    picked = rb.previous_deploy(records, "app", B)
    assert picked is records[3] and picked in kept
    assert records[4] not in kept  # A and B counted: no further


def test_nothing_to_go_back_to() -> None:
    assert rb.previous_deploy([], "app", A) is None
    assert rb.previous_deploy([record(A, n=2), record(A, n=1), record(B, ok=False)], "app", A) is None


# -- the app, with fake ECR / ECS / history --------------------------------------------------------------------


def fake_aws(env: EnvConfig, *, live_tag: str | None, tags: list[str], records: list[history.Record]) -> Mock:
    aws = Mock(spec=AwsFactory)
    aws.env = env
    clients: dict[str, Mock] = {name: aws_client(name) for name in ("ecs", "ecr", "cloudformation", "s3")}
    aws.client.side_effect = lambda name: clients[name]
    now = datetime(2026, 2, 1, tzinfo=UTC)
    details = [  # ECR answers in no particular order: the newest push comes first once sorted
        {"imageTags": [t], "imagePushedAt": now - timedelta(hours=i)} for i, t in reversed(list(enumerate(tags)))
    ]
    clients["ecr"].get_paginator.return_value.paginate.return_value = [{"imageDetails": details}]
    clients["s3"].get_paginator.return_value.paginate.return_value = [{"KeyCount": 0}]  # no template kept
    aws.history = Mock(spec=history.History)
    aws.history.records.return_value = records
    # a component's records further back: those of the history (as History.records_of finds them)
    aws.history.records_of.side_effect = lambda component, limit: [
        r for r in aws.history.records.return_value if component in r.deployed or component in r.removed
    ][:limit]
    aws.history.live.return_value = {}
    aws.live_tag = live_tag
    return aws


@pytest.fixture
def patched(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(auto, "live_image_tag_or_empty", lambda aws, env: aws.live_tag or "")
    monkeypatch.setattr(history.History, "of", classmethod(lambda cls, aws, env: aws.history))


def test_app_goes_back_to_the_previous_successful_deploy(env: EnvConfig, patched: None) -> None:
    aws = fake_aws(env, live_tag=C, tags=[C, B, A], records=[record(C, n=3), record(B, ok=False, n=2), record(A, n=1)])
    target = rb.resolve_app(aws, env, None)
    assert (target.live, target.sha) == (C, A)
    assert target.source.startswith("history: deploy.app at ") and "(r1)" in target.source


def test_app_with_to_resolves_a_tag_in_the_repository(env: EnvConfig, patched: None) -> None:
    aws = fake_aws(env, live_tag=C, tags=[C, DIRTY_B, A], records=[])
    target = rb.resolve_app(aws, env, "bbbbbbb2")
    assert target.sha == DIRTY_B and target.source == "--to bbbbbbb2"
    aws.history.records.assert_not_called()


def test_app_image_no_longer_in_the_registry_is_refused_naming_those_there(env: EnvConfig, patched: None) -> None:
    aws = fake_aws(env, live_tag=C, tags=[C, B], records=[record(C, n=2), record(A, n=1)])
    with pytest.raises(UsageError, match=f"image car-rental-backend:{A} is not in the registry") as err:
        rb.resolve_app(aws, env, None)
    assert err.value.exit_code == 2
    assert f"it holds: {C}, {B}" in err.value.message  # newest first
    with pytest.raises(UsageError, match="is not in the registry"):
        rb.resolve_app(aws, env, "ddddddd")


def test_app_with_nothing_to_go_back_to(env: EnvConfig, patched: None) -> None:
    aws = fake_aws(env, live_tag=A, tags=[A], records=[record(A, n=1)])
    with pytest.raises(UsageError, match="nothing to go back to"):
        rb.resolve_app(aws, env, None)


def test_app_without_history_says_so(env: EnvConfig, monkeypatch: pytest.MonkeyPatch) -> None:
    aws = fake_aws(env, live_tag=A, tags=[A], records=[])
    monkeypatch.setattr(auto, "live_image_tag_or_empty", lambda aws, env: A)
    monkeypatch.setattr(history.History, "of", classmethod(lambda cls, aws, env: None))
    with pytest.raises(UsageError, match="has no history"):
        rb.resolve_app(aws, env, None)


def test_app_plan_registers_a_fresh_revision_then_rolls_waits_and_smokes(env: EnvConfig) -> None:
    plan = rb.app_plan(env, "123.dkr.ecr/car-rental-backend", A)
    assert [type(s) for s in plan.steps] == [RegisterTaskDef, RollService, WaitHealthy, Smoke]
    register = plan.steps[0]
    assert isinstance(register, RegisterTaskDef) and register.image == f"123.dkr.ecr/car-rental-backend:{A}"
    assert not register.from_stack  # what ran is put back, never a template an express update left unrolled
    assert plan.title == f"rollback app → {A}" and plan.deploys == (("app", A),)
    assert plan.rollback and not dataclasses.replace(plan, title="deploy.app").rollback
    assert [s.name for s in rb.app_plan(env, "r", A, smoke=False).steps][-1] == "wait-healthy"


# -- a Lambda function ------------------------------------------------------------------------------------------


def versions(*described: tuple[str, str]) -> list[dict[str, Any]]:
    return [{"Version": "$LATEST", "Description": ""}] + [{"Version": v, "Description": d} for v, d in described]


def test_the_newest_version_tagged_with_the_sha_is_chosen() -> None:
    found = [
        v
        for v in versions(("1", "code s3://b/k1"), ("2", f"code s3://b/k2 git {A}"), ("3", f"code s3://b/k2 git {A}"))
        if v["Version"] != "$LATEST"
    ]
    found.sort(key=lambda v: int(v["Version"]), reverse=True)
    assert rb.version_for(found, A) == "3"
    assert rb.version_for(found, B) is None


def fake_lambda_aws(env: EnvConfig, listed: list[dict[str, Any]], live_version: str) -> Mock:
    aws = Mock(spec=AwsFactory)
    aws.env = env
    lam = aws_client("lambda")
    lam.get_paginator.return_value.paginate.return_value = [{"Versions": listed}]
    lam.get_alias.return_value = {"FunctionVersion": live_version}
    by_version = {v["Version"]: v for v in listed}
    lam.get_function_configuration.side_effect = lambda FunctionName, Qualifier: by_version[
        live_version if Qualifier == "live" else Qualifier
    ]
    clients = {"lambda": lam, "cloudformation": aws_client("cloudformation")}
    aws.client.side_effect = lambda name: clients[name]
    return aws


def test_lambda_goes_back_by_sha_prefix_and_from_history(
    env: EnvConfig, monkeypatch: pytest.MonkeyPatch, project: Path
) -> None:
    monkeypatch.setattr(lambda_chain, "deployed_functions", lambda cfn, env: {"login_handler": "fn-login"})
    listed = versions(("1", "code s3://b/k0"), ("2", f"code s3://b/k1 git {A}"), ("3", f"code s3://b/k2 git {B}"))
    aws = fake_lambda_aws(env, listed, live_version="3")
    component = rb.Component("lambda", "login_handler")
    target, name = rb.resolve_lambda(aws, env, component, "aaaaaaa")
    assert (name, target.live, target.sha, target.version) == ("fn-login", B, A, "2")

    store = Mock(spec=history.History)
    store.records.return_value = [record(B, component="lambda:login_handler", n=2), record(A, n=1)]
    store.records.return_value.append(record(A, component="lambda:login_handler", n=0))
    monkeypatch.setattr(history.History, "of", classmethod(lambda cls, aws, env: store))
    target, _ = rb.resolve_lambda(aws, env, component, None)
    assert (target.sha, target.version) == (A, "2") and "(r0)" in target.source

    plan = rb.lambda_plan(env, target, name)
    assert [s.name for s in plan.steps] == ["move-alias", "smoke"]
    assert plan.title == f"rollback lambda:login_handler → {A}"
    assert plan.deploys == (("lambda:login_handler", A),)


def test_lambda_version_missing_is_refused_naming_the_shas_there(
    env: EnvConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(lambda_chain, "deployed_functions", lambda cfn, env: {"login_handler": "fn-login"})
    listed = versions(("1", "code s3://b/k0"), ("2", f"code s3://b/k1 git {A}"), ("3", f"code s3://b/k2 git {B}"))
    aws = fake_lambda_aws(env, listed, live_version="3")
    with pytest.raises(UsageError, match="no published version of fn-login") as err:
        rb.resolve_lambda(aws, env, rb.Component("lambda", "login_handler"), "ccccccc")
    assert f"its versions name: {B}, {A}" in err.value.message
    assert "--component lambda:login_handler" in (err.value.next_step or "")


def test_lambda_from_history_passes_over_records_that_only_carried_it(
    env: EnvConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """deploy.auto records the Lambdas a backend change did not touch as live at its commit; no version is tagged
    with that commit, so going back means going to the one deployed before."""
    monkeypatch.setattr(lambda_chain, "deployed_functions", lambda cfn, env: {"login_handler": "fn-login"})
    listed = versions(("1", f"code s3://b/k1 git {A}"), ("2", f"code s3://b/k2 git {B}"))
    aws = fake_lambda_aws(env, listed, live_version="2")
    key = "lambda:login_handler"
    carried = dataclasses.replace(record(C, n=2), components={"app": C, key: C}, unchanged=[key])
    old_style = dataclasses.replace(record(C, n=1), components={"app": C, key: C})  # written before `unchanged`
    store = Mock(spec=history.History)
    store.records.return_value = [record(B, component=key, n=3), carried, old_style, record(A, component=key, n=0)]
    monkeypatch.setattr(history.History, "of", classmethod(lambda cls, aws, env: store))
    assert rb.previous_deploy(store.records.return_value, key, B) is old_style  # no version to check: the first
    target, _ = rb.resolve_lambda(aws, env, rb.Component("lambda", "login_handler"), None)
    assert (target.live, target.sha, target.version) == (B, A, "1") and "(r0)" in target.source


def test_lambda_goes_back_to_a_version_cloudformation_published_by_its_code(
    env: EnvConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """deploy.full publishes through the API stack, whose versions name their code, not a commit: the first fast-path
    deploy after it goes back to the version whose CodeSha256 is the function's as packaged in that commit."""
    monkeypatch.setattr(lambda_chain, "deployed_functions", lambda cfn, env: {"login_handler": "fn-login"})
    listed = versions(("1", "code s3://b/k1"), ("2", f"code s3://b/k2 git {B}"))
    listed[1]["CodeSha256"], listed[2]["CodeSha256"] = "code-of-A=", "code-of-B="
    aws = fake_lambda_aws(env, listed, live_version="2")
    key = "lambda:login_handler"
    store = Mock(spec=history.History)
    full = dataclasses.replace(record(A, n=1), command="deploy.full", components={"app": A, key: A})
    store.records.return_value = [record(B, component=key, n=2), full]
    monkeypatch.setattr(history.History, "of", classmethod(lambda cls, aws, env: store))
    asked: list[str] = []

    def code_at(commit: str) -> tuple[str, str] | None:
        asked.append(commit)
        return {A: (A, "code-of-A="), C: (C, "code-of-C=")}.get(commit)

    component = rb.Component("lambda", "login_handler")
    target, _ = rb.resolve_lambda(aws, env, component, None, code_at)
    assert (target.live, target.sha, target.version) == (B, A, "1") and asked == [A]
    by_prefix, _ = rb.resolve_lambda(aws, env, component, "aaaaaaa", lambda commit: code_at(A))
    assert (by_prefix.sha, by_prefix.version) == (A, "1")
    with pytest.raises(UsageError, match="nor runs its code \\(CodeSha256 code-of-C=\\)"):
        rb.resolve_lambda(aws, env, component, C, code_at)
    with pytest.raises(UsageError, match="commit not in this clone to compare"):
        rb.resolve_lambda(aws, env, component, "ddddddd", code_at)


def one_version_by_cloudformation(env: EnvConfig, monkeypatch: pytest.MonkeyPatch, code: str) -> tuple[Mock, Mock]:
    """login_handler (fn-login) with one version, CloudFormation's (naming no commit), running ``code`` and served;
    and the history to give its records (Mock, spec History)."""
    monkeypatch.setattr(lambda_chain, "deployed_functions", lambda cfn, env: {"login_handler": "fn-login"})
    listed = versions(("1", "code s3://b/k1"))
    listed[1]["CodeSha256"] = code
    return fake_lambda_aws(env, listed, live_version="1"), Mock(spec=history.History)


def test_a_lambda_whose_only_version_runs_the_previous_deploys_code_has_nothing_to_roll_back(
    env: EnvConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Version 1 from deploy.full at A is live; later runs only carried the function (its code unchanged)."""
    aws, store = one_version_by_cloudformation(env, monkeypatch, "code-of-A=")
    key = "lambda:login_handler"
    full = dataclasses.replace(record(A, n=1), command="deploy.full", components={"app": A, key: A})
    store.records.return_value = [full]
    store.records_of.return_value = [full]  # its own records, further back: the same
    store.live.return_value = {key: {"sha": C}}  # carried to C by a later deploy.auto
    monkeypatch.setattr(history.History, "of", classmethod(lambda cls, aws, env: store))
    target, _ = rb.resolve_lambda(aws, env, rb.Component("lambda", "login_handler"), None, lambda _c: (A, "code-of-A="))
    assert (target.live, target.sha, target.version) == (A, A, "1")  # commands.rollback: "nothing to roll back"


def test_the_deploy_to_go_back_to_is_never_one_a_person_s_rollback_took_off_since() -> None:
    """A deployed, B deployed, B rolled back by hand to A: going back again from A is to what ran before A, not to
    B, the release put back as bad (--to B still names it)."""
    key = "lambda:login_handler"
    taken = dataclasses.replace(record(A, component=key, n=3), command=f"rollback {key} → {A}", base={key: B})
    assert taken.rollback_by_hand
    records = [taken, record(B, component=key, n=2), record(A, component=key, n=1), record(C, component=key, n=0)]
    assert rb.previous_deploy(records, key, A) is records[3]
    assert rb.previous_deploy(records[1:], key, A) is records[1]  # without the rollback: B, as before


def test_a_rollback_that_failed_after_it_put_its_release_live_took_the_one_before_off_too(env: EnvConfig) -> None:
    """B deployed, then rolled back by hand to A, whose smoke failed after the service rolled (nothing undid it):
    A runs, and going back again is not forward to B, the release that rollback put back as bad."""
    rolled = [{"step": "roll-service", "status": "done", "seconds": 1.0}, {"step": "smoke", "status": "failed"}]
    back = dataclasses.replace(record(A, ok=False, n=3), command=f"rollback app → {A}", base={"app": B}, steps=rolled)
    records = [back, record(B, n=2), record(A, n=1), record(C, n=0)]
    assert back.failed_live("app") and history.took_off(back, "app") == B
    assert rb.previous_deploy(records, "app", A) is records[3]
    with pytest.raises(UsageError, match=f"but those a rollback took off as bad \\({B}: --to names one\\)"):
        rb._history_target(Mock(spec=AwsFactory), env, rb.Component("app"), A, records=records[:3])
    # one that failed before the service rolled put nothing live: B is still the deploy before
    early = dataclasses.replace(back, steps=[{"step": "register-taskdef", "status": "failed"}])
    assert not early.failed_live("app") and history.took_off(early, "app") is None
    assert rb.previous_deploy([early, *records[1:]], "app", A) is records[1]
    # a function's: its alias moved (its record's left names the version)
    key = "lambda:login_handler"
    moved = dataclasses.replace(
        record(A, ok=False, component=key, n=3), command=f"rollback {key} → {A}", base={key: B}, left={key: {"1": "1"}}
    )
    assert rb.previous_deploy([moved, record(B, component=key, n=2), record(A, component=key, n=1)], key, A) is None


def test_a_version_of_the_code_the_alias_serves_is_no_release_to_go_back_to(
    env: EnvConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """B's fast-path version 2, then deploy.full at C that left the function's code as it was: CloudFormation
    published version 3 of the same code, which the alias serves. Going back from C is to A's code, not to version 2
    (the same code again, recorded as C taken off); --to B is nothing to roll back."""
    monkeypatch.setattr(lambda_chain, "deployed_functions", lambda cfn, env: {"login_handler": "fn-login"})
    listed = versions(("1", f"code s3://b/a git {A}"), ("2", f"code s3://b/b git {B}"), ("3", "code s3://b/b"))
    for version, code in zip(listed, ["code-of-B=", "code-of-A=", "code-of-B=", "code-of-B="], strict=True):
        version["CodeSha256"] = code
    aws = fake_lambda_aws(env, listed, live_version="3")
    key = "lambda:login_handler"
    store = Mock(spec=history.History)
    full = dataclasses.replace(record(C, n=3), command="deploy.full", components={"app": C, key: C}, base={key: B})
    store.records.return_value = [full, record(B, component=key, n=2), record(A, component=key, n=1)]
    store.records_of.return_value = store.records.return_value
    store.live.return_value = {key: {"sha": C}}
    monkeypatch.setattr(history.History, "of", classmethod(lambda cls, aws, env: store))
    component = rb.Component("lambda", "login_handler")
    code = {A: (A, "code-of-A="), B: (B, "code-of-B="), C: (C, "code-of-B=")}
    target, _ = rb.resolve_lambda(aws, env, component, None, code.get)
    assert (target.live, target.sha, target.version) == (C, A, "1")
    again, _ = rb.resolve_lambda(aws, env, component, "bbbbbbb", code.get)
    assert (again.live, again.sha, again.version) == (B, B, "2")  # commands.rollback: "nothing to roll back"


def test_a_function_made_anew_goes_back_to_the_previous_deploy_s_code_published_again(
    env: EnvConfig, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """login_handler moved to another stack: its new function has one version, CloudFormation's, running B's code.
    The deploy before B's (at A) has no version there: the rollback goes back to A all the same, publishing A's code
    again as the fast path would, rather than saying B's deploy, whose code runs, is nothing to roll back."""
    from deploykit import packaging

    aws, store = one_version_by_cloudformation(env, monkeypatch, "code-of-B=")
    key = "lambda:login_handler"
    store.records.return_value = [record(B, component=key, n=2), record(A, component=key, n=1)]
    store.records_of.return_value = store.records.return_value  # its own records, further back: the same
    store.live.return_value = {key: {"sha": C}}  # carried to C by the deploy that moved it
    monkeypatch.setattr(history.History, "of", classmethod(lambda cls, aws, env: store))
    code = {A: (A, "code-of-A="), B: (B, "code-of-B=")}
    component = rb.Component("lambda", "login_handler")
    target, name = rb.resolve_lambda(aws, env, component, None, code.get)
    assert (target.live, target.sha, target.version, target.republish) == (C, A, "", True)
    assert "passed over" not in target.source  # B's code runs: it is not passed over, it is live
    folder = tmp_path / "login_handler"
    folder.mkdir()
    (folder / "handler.py").write_text("def handler(event, context):\n    return 'A'\n")
    made = packaging.package_function(folder)
    plan = rb.lambda_plan(env, target, name, package=lambda commit: (folder, made))
    assert [s.name for s in plan.steps] == ["upload-lambda", "update-code", "publish-version", "move-alias", "smoke"]
    assert plan.steps[2].git_sha == A and plan.deploys == ((key, A),)  # type: ignore[attr-defined]
    # a commit --to names, which may never have run, is not published: refused as before
    with pytest.raises(UsageError, match="nor runs its code \\(CodeSha256 code-of-A=\\)") as refused:
        rb.resolve_lambda(aws, env, component, A, code.get)
    assert refused.value.next_step == (
        "without --to, the rollback publishes the previous deploy's code again: "
        f"inv rollback --env {env.name} --component lambda:login_handler"
    )
    # but what was live before a run being undone did run: published again
    undone, _ = rb.resolve_lambda(aws, env, component, A, code.get, ran=True)
    assert (undone.sha, undone.version, undone.republish) == (A, "", True)


def test_the_code_of_a_function_in_a_commit_is_its_package_then(with_lambdas: Path) -> None:  # noqa: F811
    from deploykit import packaging

    folder = with_lambdas / "lambda" / "login_handler"
    first = git(with_lambdas, "rev-parse", "HEAD").strip()
    then = packaging.package_function(folder).code_sha256
    (folder / "handler.py").write_text((folder / "handler.py").read_text() + "\n# later\n")
    git(with_lambdas, "commit", "-qam", "later")
    assert packaging.package_function(folder).code_sha256 != then
    assert lambda_chain.code_at(with_lambdas, "login_handler", first[:7], "x86_64") == (first[:12], then)
    assert lambda_chain.code_at(with_lambdas, "no_such_function", first, "x86_64") is None
    assert lambda_chain.code_at(with_lambdas, "login_handler", "0" * 40, "x86_64") is None


def test_component_names(project: Path) -> None:
    config = load_config(project / "deploy.toml")
    assert rb.parse_component("app", config) == rb.Component("app")
    assert rb.Component("lambda", "login_handler").key == "lambda:login_handler"
    with pytest.raises(UsageError, match="unknown component 'db'"):
        rb.parse_component("db", config)
    with pytest.raises(UsageError, match="unknown Lambda function"):
        rb.parse_component("lambda:nope", config)
    # stacks, by role or by name, where the environment is given (a rollback; logs have none)
    dev = config.environment("dev")
    fargate = rb.Component("stack", role="fargate")
    assert rb.parse_component("stack:fargate", config, env=dev) == fargate
    assert rb.parse_component("stack:CarRentalFargateStack", config, env=dev) == fargate
    assert fargate.key == "stack:fargate"
    with pytest.raises(UsageError, match="unknown stack 'nope'") as err:
        rb.parse_component("stack:nope", config, env=dev)
    assert "CarRentalFargateStack" in (err.value.next_step or "")
    with pytest.raises(UsageError, match="unknown component 'stack:fargate' for logs") as err:
        rb.parse_component("stack:fargate", config, purpose="logs")
    assert "stack:" not in (err.value.next_step or "")
    with pytest.raises(UsageError) as err:
        rb.parse_component("db", config, env=dev)
    assert "stack:fargate" in (err.value.next_step or "")


# -- a stack ----------------------------------------------------------------------------------------------------


def stack_record(sha: str, *, n: int, role: str = "fargate", ok: bool = True, carried: bool = False) -> history.Record:
    made = record(sha, ok=ok, component=f"stack:{role}", n=n)
    return dataclasses.replace(made, unchanged=[f"stack:{role}"]) if carried else made


def commits(project: Path, count: int) -> list[str]:
    """``count`` new commits of ``project``, oldest first, their SHA12s."""
    made = []
    for n in range(count):
        (project / f"note{n}.md").write_text(f"{n}\n")
        git(project, "add", "-A")
        git(project, "commit", "-qm", f"note {n}")
        made.append(git(project, "rev-parse", "--short=12", "HEAD").strip())
    return made


def test_a_stack_goes_back_to_the_previous_deploy_of_it_whose_commit_this_clone_has(
    project: Path, env: EnvConfig, patched: None
) -> None:
    config = load_config(project / "deploy.toml")
    first, second, third = commits(project, 3)
    stack = rb.Component("stack", role="fargate")
    records = [
        stack_record(third, n=5),
        stack_record(second, n=4, carried=True),  # carried unchanged: not a deploy of it
        stack_record(f"{second}-dirty-0123abcd", n=3),  # uncommitted: its cdk/ is not in git
        stack_record("d" * 12, n=2),  # a commit this clone lacks (another branch, rewritten)
        stack_record(first, n=1, ok=False),
        stack_record(first, n=0),
    ]
    aws = fake_aws(env, live_tag=None, tags=[], records=records)
    aws.history.live.return_value = {"stack:fargate": {"sha": third}}
    target = rb.resolve_stack(aws, config, env, stack, None)
    assert (target.live, target.sha) == (third, first) and "(r0)" in target.source
    # further back than the deploy before: said, with what was passed over (the plan prints it before any change)
    assert target.source.endswith(f"; passed over, as they cannot be put back: {second}-dirty-0123abcd, {'d' * 12}")
    assert target.title == f"rollback stack:fargate → {first}"
    # what a whole run's rollback read already is not read again
    aws.history.records.reset_mock()
    aws.history.live.reset_mock()
    known = (records, {"stack:fargate": {"sha": third}})
    assert rb.resolve_stack(aws, config, env, stack, None, known=known) == target
    aws.history.records.assert_not_called()
    aws.history.live.assert_not_called()

    # --to: any commit of this clone (its SHA12), live from the live record
    target = rb.resolve_stack(aws, config, env, stack, second[:7])
    assert (target.live, target.sha, target.source) == (third, second, f"--to {second[:7]}")
    assert rb.resolve_stack(aws, config, env, stack, "HEAD~2").sha == first  # any revision git knows
    with pytest.raises(UsageError, match=f"commit {'e' * 7} is not in this clone") as err:
        rb.resolve_stack(aws, config, env, stack, "e" * 7)
    # a complete clone is told to fetch the commit's branch: git refuses --unshallow there
    assert err.value.exit_code == 2 and "git fetch origin" in (err.value.next_step or "")
    assert "--unshallow" not in (err.value.next_step or "")
    with pytest.raises(UsageError, match="uncommitted changes"):
        rb.resolve_stack(aws, config, env, stack, f"{second}-dirty-0123abcd")
    with pytest.raises(UsageError, match="too few digits to name a commit") as short:
        rb.resolve_stack(aws, config, env, stack, "e" * 5)
    assert short.value.exit_code == 2
    assert rb.resolve_stack(aws, config, env, stack, second[:5]).sha == second  # git resolves it: a commit

    # only what this clone cannot synthesize before it: named as missing
    aws.history.records.return_value = records[2:4]
    with pytest.raises(UsageError, match="uncommitted changes"):
        rb.resolve_stack(aws, config, env, stack, None)
    aws.history.records.return_value = records[3:4]
    with pytest.raises(UsageError, match=f"commit {'d' * 12} is not in this clone, and dev kept no template"):
        rb.resolve_stack(aws, config, env, stack, None)

    # a commit this clone lacks whose template the environment kept: the template will do
    prefix = "deploykit/templates/dev/CarRentalFargateStack/"
    listed = [{"Contents": [{"Key": f"{prefix}{'d' * 12}.json"}, {"Key": f"{prefix}{'e' * 12}.json"}]}]
    aws.client("s3").get_paginator.return_value.paginate.return_value = listed
    assert rb.resolve_stack(aws, config, env, stack, None).sha == "d" * 12
    assert rb.resolve_stack(aws, config, env, stack, "e" * 7).sha == "e" * 12
    assert rb.resolve_stack(aws, config, env, stack, "E" * 40).sha == "e" * 12


# a run whose change set of the Fargate stack went through, then failed at smoke
THROUGH = [
    {"step": "deploy-stack", "status": "done", "detail": "CarRentalFargateStack: updated in 2.1s (1 change)"},
    {"step": "smoke", "status": "failed", "detail": "alb: 502"},
]


def test_a_stack_s_to_that_more_than_one_commit_starts_with_is_said_ambiguous(
    project: Path, env: EnvConfig, patched: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not 'not in this clone, fetch it': git resolves an ambiguous prefix to nothing. (Seven digits two commits
    share take some 16,000 commits to make: git's answer is played.)"""
    config = load_config(project / "deploy.toml")
    (first,) = commits(project, 1)
    aws = fake_aws(env, live_tag=None, tags=[], records=[stack_record(first, n=1)])
    monkeypatch.setattr(git_module, "resolve_commit", lambda root, rev: None)
    monkeypatch.setattr(git_module, "is_ambiguous", lambda root, rev: rev == first[:7])
    with pytest.raises(UsageError, match=f"--to {first[:7]} is ambiguous") as err:
        rb.resolve_stack(aws, config, env, rb.Component("stack", role="fargate"), first[:7])
    assert "more digits" in (err.value.next_step or "")


def test_after_a_rollback_of_a_stack_failed_past_its_change_set_it_never_goes_forward_to_the_release_it_took_off(
    project: Path, env: EnvConfig, patched: None
) -> None:
    """first, second, third deployed; a person's rollback of the stack to second failed at smoke after its change
    set went through: second runs, the live record still says third. Going back again is to first, not 'back' to
    third, the release that rollback took off as bad."""
    config = load_config(project / "deploy.toml")
    first, second, third = commits(project, 3)
    stack = rb.Component("stack", role="fargate")
    back = dataclasses.replace(
        stack_record(second, n=4, ok=False), command=f"rollback stack:fargate → {second}", base={"stack:fargate": third}
    )
    earlier = [stack_record(c, n=n) for n, c in ((3, third), (2, second), (1, first))]

    def resolved(newest: history.Record) -> tuple[str | None, str]:
        records = [newest, *earlier]
        aws = fake_aws(env, live_tag=None, tags=[], records=records)
        target = rb.resolve_stack(aws, config, env, stack, None, known=(records, {"stack:fargate": {"sha": third}}))
        return target.live, target.sha

    assert resolved(dataclasses.replace(back, steps=THROUGH)) == (second, first)
    # one a guard refused before its change set took nothing off: third runs, second is the deploy before
    assert resolved(dataclasses.replace(back, refused=True, steps=THROUGH)) == (third, second)


def test_after_a_failed_run_deployed_a_stack_it_goes_back_to_the_live_records_commit(
    project: Path, env: EnvConfig, patched: None
) -> None:
    """A failed run never moves the live record, yet its change set may have gone through before smoke failed:
    what runs may be the failed run's commit. Without --to the stack goes back to the live record's; with --to
    that commit, it is not 'nothing to roll back'."""
    config = load_config(project / "deploy.toml")
    first, second, third = commits(project, 3)
    stack = rb.Component("stack", role="fargate")
    failed = dataclasses.replace(stack_record(third, n=3, ok=False), steps=THROUGH)
    records = [failed, stack_record(second, n=2), stack_record(first, n=1)]
    aws = fake_aws(env, live_tag=None, tags=[], records=records)
    aws.history.live.return_value = {"stack:fargate": {"sha": second}}
    target = rb.resolve_stack(aws, config, env, stack, None)
    assert (target.live, target.sha) == (third, second)
    assert target.source.startswith("the last successful deploy; deploy.app at ") and "(r3)" in target.source
    # a run refused since, or one that failed before its stack step (a build) or at another stack, changed nothing
    # of it: not taken for what runs (it was, and the rerun a guard's refusal names did nothing)
    before = [{"step": "build", "status": "failed", "detail": "no space left"}]
    other = [
        {"step": "deploy-stack", "status": "done", "detail": "CarRentalAuthStack: updated in 1.0s (1 change)"},
        {"step": "deploy-stack", "status": "failed", "detail": "refusing to deploy CarRentalDataStack: it replaces"},
    ]
    for newer in (
        dataclasses.replace(stack_record(first, n=5, ok=False), refused=True, steps=THROUGH),
        dataclasses.replace(stack_record(first, n=5, ok=False), steps=before),
        dataclasses.replace(stack_record(first, n=5, ok=False), steps=other),
    ):
        target = rb.resolve_stack(aws, config, env, stack, None, known=([newer, *records], {}))
        assert (target.live, target.sha) == (third, second)  # the failed run's, found past the newer one
        known = ([newer, *records[1:]], {"stack:fargate": {"sha": second}})
        target = rb.resolve_stack(aws, config, env, stack, None, known=known)
        assert (target.live, target.sha) == (second, first)
    # a failure whose message names none of the environment's stacks may have gone through, as may an interrupted
    # stack step or group (CloudFormation goes on by itself): counted
    every = ["CarRentalDataStack", "CarRentalFargateStack"]
    for steps in (
        [{"step": "deploy-stack", "status": "failed", "detail": "the change set failed: Throttling"}],
        [{"step": "deploy-stack", "status": "failed", "detail": "interrupted"}],
        [{"step": "parallel", "status": "failed", "detail": "interrupted"}],
        [
            {
                "step": "deploy-stack",
                "status": "failed",
                "detail": "could not make a change set for CarRentalFargateStack: x",
            }
        ],
    ):
        assert rb.may_have_changed(dataclasses.replace(failed, steps=steps), "CarRentalFargateStack", every)
    assert not rb.may_have_changed(dataclasses.replace(failed, steps=other), "CarRentalFargateStack", every)
    assert history.step_name({"step": "deploy-stack", "status": "failed", "detail": "interrupted"}) == "deploy-stack"
    target = rb.resolve_stack(aws, config, env, stack, second)
    assert (target.live, target.sha) == (third, second)
    # once a run deployed it successfully again, the live record is what runs
    records.insert(0, stack_record(third, n=4))
    aws.history.live.return_value = {"stack:fargate": {"sha": third}}
    again = rb.resolve_stack(aws, config, env, stack, None)
    assert (again.live, again.sha) == (third, second) and again.source.startswith("history: ")


TEMPLATE = {
    "Parameters": {
        "ImageTag": {"Type": "String"},
        "LoginHandlerCodeKey": {"Type": "String"},
        "Stage": {"Type": "String", "Default": "v1"},
    },
    "Resources": {},
}


def test_a_stacks_template_gets_the_inputs_live_now() -> None:
    live = {"ImageTag": B, "LoginHandlerCodeKey": "lambda/login_handler/x.zip", "HealthHandlerCodeKey": "h.zip"}
    parameters = rb.template_parameters(TEMPLATE, live, stack="S", sha=A)
    # only what the template declares; a declared default stays the template's
    assert parameters == (("ImageTag", B), ("LoginHandlerCodeKey", "lambda/login_handler/x.zip"))
    with pytest.raises(UsageError, match=f"S at {A} asks for LoginHandlerCodeKey, which nothing live gives") as err:
        rb.template_parameters(TEMPLATE, {"ImageTag": B}, stack="S", sha=A)
    assert f"git checkout {A}" in (err.value.next_step or "")
    assert rb.template_parameters({"Resources": {}}, live, stack="S", sha=A) == ()
    # undoing the run that added a function: the template before it takes the function out, as it should...
    assert rb.template_parameters(TEMPLATE, live, stack="S", sha=A, removing=["health_handler"])
    # ... and one that has the function still would keep it: refused
    with pytest.raises(UsageError, match=f"S at {A} has function login_handler too: going back to it would keep it"):
        rb.template_parameters(TEMPLATE, live, stack="S", sha=A, removing=["login_handler"])


def test_a_stack_going_back_never_deletes_a_function_deployed_since_nor_runs_one_twice_unless_it_moves_back() -> None:
    # TEMPLATE (the API stack at A) holds login_handler; health_handler was added since, nightly_job is the jobs stack's
    hosts = {"login_handler": "Api", "health_handler": "Api", "nightly_job": "Jobs"}
    moves = rb.stack_moves(TEMPLATE, hosts, stack="Api", sha=A)
    assert (moves.deletes, moves.takes) == ({"health_handler"}, {})
    with pytest.raises(UsageError, match=f"Api at {A} has no function health_handler, deployed since") as err:
        rb.refuse_moves([moves])
    assert err.value.exit_code == 2 and "would delete it, nothing was changed" in err.value.message
    assert "if it moved here from another stack, undo the run that moved it" in (err.value.next_step or "")
    # the undo of the run that added it takes it out: nothing to refuse
    assert not rb.stack_moves(TEMPLATE, hosts, stack="Api", sha=A, removing=["health_handler"]).deletes
    # login_handler moved to the jobs stack since: its template at A would run it a second time, beside the jobs one
    moved = {"login_handler": "Jobs"}
    back = rb.stack_moves(TEMPLATE, moved, stack="Api", sha=A)
    assert (back.deletes, back.takes) == (set(), {"login_handler": "Jobs"})
    with pytest.raises(UsageError, match=f"Api at {A} has function login_handler, which Jobs holds now") as err:
        rb.refuse_moves([back])
    assert "would run it twice, in two stacks" in err.value.message and "rollback --run" in (err.value.next_step or "")
    # ... unless the jobs stack goes back too, without it: the undo of the run that moved it moves it back
    jobs = rb.stack_moves({"Parameters": {}}, moved, stack="Jobs", sha=A)
    assert (jobs.deletes, jobs.takes) == ({"login_handler"}, {})
    rb.refuse_moves([back, jobs])
    with pytest.raises(UsageError, match=f"Jobs at {A} has no function login_handler, deployed since"):
        rb.refuse_moves([jobs])
    # two stacks taking it back would run it twice still
    with pytest.raises(UsageError, match="which Jobs holds now"):
        rb.refuse_moves([back, jobs, rb.stack_moves(TEMPLATE, moved, stack="Other", sha=A)])


def test_a_stacks_plan_deploys_that_template_with_the_guards_then_smokes(env: EnvConfig, tmp_path: Path) -> None:
    target = rb.Target(rb.Component("stack", role="data"), B, A, "--to aaaaaaa")
    template = tmp_path / "CarRentalDataStack.template.json"
    plan = rb.stack_plan(env, target, template, (("P", "v"),), allow_replace=True, approve_access=True)
    [deploy, smoke] = plan.steps
    assert isinstance(deploy, DeployStack) and isinstance(smoke, Smoke)
    assert (deploy.stack, deploy.template, deploy.parameters) == ("CarRentalDataStack", str(template), (("P", "v"),))
    assert deploy.allow_replace and deploy.approve_access
    assert (plan.title, plan.deploys) == (f"rollback stack:data → {A}", (("stack:data", A),))
    assert deploy.rerun == ""  # deploy.stack's own command, unless the rollback names itself
    again = rb.stack_plan(env, target, template, (), rerun="inv rollback --component stack:data --to aaaaaaa")
    assert again.steps[0].rerun == "inv rollback --component stack:data --to aaaaaaa"  # type: ignore[attr-defined]
    plain = rb.stack_plan(env, target, template, (), smoke=False)
    assert [type(s) for s in plain.steps] == [DeployStack]
    assert not plain.steps[0].allow_replace and not plain.steps[0].approve_access  # type: ignore[attr-defined]


# -- automatic rollback (undo_plan) ------------------------------------------------------------------------------


def failed_run(env: EnvConfig, *records: StepRecord, error: Exception | None = None, smoke: bool = True) -> RunReport:
    steps: tuple[Step, ...] = (Smoke(),) if smoke else ()
    failure = error if error is not None else StepFailed("smoke: 1 of 5 checks failed", next_step="fix it")
    return RunReport(Plan(env.name, steps, "deploy.auto"), list(records), 9.0, failure)  # type: ignore[arg-type]


ROLLED = StepRecord(
    "roll-service",
    "",
    "done",
    outputs={"previous_image": "registry.test/car-rental-backend:" + A, "task_definition": "x"},
)
MOVED = StepRecord(
    "move-alias",
    "",
    "done",
    outputs={
        "health_handler.version": "7",
        "health_handler.previous_version": "5",
        "health_handler.function_name": "car-rental-dev-health",
        "health_handler.alias": "live",
    },
)
SMOKE_FAILED = StepRecord("smoke", "", "failed")


class FakeLambda:
    """get_function_configuration of a version: its description names the commit it was published from."""

    def __init__(self) -> None:
        self.asked: list[tuple[str, str]] = []

    def get_function_configuration(self, *, FunctionName: str, Qualifier: str) -> dict[str, str]:
        self.asked.append((FunctionName, Qualifier))
        return {"Description": f"code s3://bucket/health_handler/abc.zip git {B}"}


def test_a_failed_smoke_puts_back_the_app_and_the_lambda_this_run_replaced(env: EnvConfig) -> None:
    fake = FakeLambda()
    undo = rb.undo_plan(env, failed_run(env, MOVED, ROLLED, SMOKE_FAILED), fake)
    assert undo is not None
    assert [type(s) for s in undo.plan.steps] == [rb.PointAlias, RegisterTaskDef, RollService, WaitHealthy, Smoke]
    point = undo.plan.steps[0]
    assert isinstance(point, rb.PointAlias)
    assert (point.function_name, point.alias, point.version, point.git_sha) == ("car-rental-dev-health", "live", "5", B)
    register = undo.plan.steps[1]
    assert isinstance(register, RegisterTaskDef)
    assert (register.repository, register.tag) == ("registry.test/car-rental-backend", A)
    assert undo.plan.deploys == (("lambda:health_handler", B), ("app", A))
    assert undo.plan.title == "automatic rollback: lambda:health_handler, app"
    assert undo.plan.rollback
    assert undo.replaced == ("lambda:health_handler (was version 5)", f"app (was {A})")
    assert undo.components == ("lambda:health_handler", "app")
    assert fake.asked == [("car-rental-dev-health", "5")]


def test_an_image_the_fargate_stacks_update_rolled_out_is_put_back_and_the_stack_left(env: EnvConfig) -> None:
    """A commit that changes the app and the Fargate stack: deploy.auto's stack update rolls the new image (its
    ImageTag parameter), so roll-service has nothing to do and names nothing it replaced; the app the live record
    had before the run is what goes back, to the plan's repository, and the stack's own changes stay (said)."""
    stack = planner.stack_roles(env)["fargate"]
    updated = StepRecord(
        "deploy-stack",
        "",
        "done",
        outputs={action_key(stack): "updated", was_key(stack, "ImageTag"): C, was_key(stack, "Other"): "x"},
    )
    skipped = StepRecord("roll-service", "", "skipped", outputs={"task_definition": "x"})
    wait = WaitHealthy(env.cluster, env.service, env.container, f"registry.test/car-rental-backend:{B}", 60, 1)
    report = RunReport(
        Plan(env.name, (StepSequence("app", (wait,)), Smoke()), "deploy.auto", (("app", B),)),
        [updated, skipped, SMOKE_FAILED],
        9.0,
        StepFailed("smoke: 1 of 5 checks failed", next_step="fix it"),
    )
    # the tag is what the live record verified before the run, not the stack's former parameter (C: an image
    # that ran once, unverified, and was taken back since)
    assert rb.undo_plan(env, report, None) is None  # what ran before is not known
    undo = rb.undo_plan(env, report, None, before={"app": A, "stack:fargate": B})
    assert undo is not None and undo.plan.title == "automatic rollback: app"
    assert [type(s) for s in undo.plan.steps] == [RegisterTaskDef, RollService, WaitHealthy, Smoke]
    register = undo.plan.steps[0]
    assert isinstance(register, RegisterTaskDef)
    assert (register.repository, register.tag) == ("registry.test/car-rental-backend", A)
    assert undo.plan.deploys == (("app", A),)
    # said as the stack's doing (roll-service, skipped, found the release in place: the stack had rolled it out)
    assert len(undo.notes) == 1
    assert f"{stack}'s update rolled the new image out" in undo.notes[0] and "stack:fargate" in undo.notes[0]
    # a stack update that left the image as it was replaced no app: roll-service found B in place, which ran before
    # the run and no deploy verified (an earlier run's): A, what the live record verified, goes back, said so
    same = dataclasses.replace(updated, outputs={action_key(stack): "updated", was_key(stack, "Other"): "x"})
    unchanged = dataclasses.replace(report, records=[same, skipped, SMOKE_FAILED])
    earlier = rb.undo_plan(env, unchanged, None, before={"app": A})
    assert earlier is not None and earlier.plan.deploys == (("app", A),)
    assert earlier.notes == (
        f"car-rental-service ran {B} before this run, which no deploy verified (an earlier run rolled it out and "
        f"failed, or was interrupted): {A}, the last that passed, goes back",
    )
    assert rb.undo_plan(env, unchanged, None, before={"app": B}) is None  # B is what was verified


def test_an_image_that_never_passed_is_not_put_back_the_last_verified_release_is(env: EnvConfig) -> None:
    """The service ran C before the run (a failed release kept with --no-rollback), the live record names A, the
    last release that passed: A goes back, said; when what ran is what the record names, it goes back as before."""
    ran_c = StepRecord("roll-service", "", "done", outputs={"previous_image": "registry.test/car-rental-backend:" + C})
    undo = rb.undo_plan(env, failed_run(env, ran_c, SMOKE_FAILED), None, before={"app": A})
    assert undo is not None and undo.plan.deploys == (("app", A),)
    register = undo.plan.steps[0]
    assert isinstance(register, RegisterTaskDef) and register.tag == A
    assert f"ran {C} before this run, which no deploy verified" in undo.notes[0] and f"{A}, the last" in undo.notes[0]
    same = rb.undo_plan(env, failed_run(env, ran_c, SMOKE_FAILED), None, before={"app": C})
    assert same is not None and same.plan.deploys == (("app", C),) and same.notes == ()


@dataclasses.dataclass(frozen=True)
class Played(Step):
    """A step that did what ``record`` says, or failed as it did."""

    record: StepRecord
    error: Exception | None = None

    @property
    def name(self) -> str:  # type: ignore[override]
        return self.record.step

    def describe(self) -> str:
        return self.record.step

    def run(self, ctx: Any) -> Any:
        from deploykit.plan import Outcome

        if self.error is not None:
            raise self.error
        return Outcome.done(self.record.step, **self.record.outputs)


def test_a_release_failed_beside_a_lambda_update_puts_back_both(env: EnvConfig) -> None:
    """deploy.auto runs a function's fast path beside the app's rollout: when the rollout fails, what both changed
    is known from the group's record (its steps' records and outputs, carried by the failure), and goes back."""
    from deploykit.clock import FakeClock
    from deploykit.output import Reporter
    from deploykit.plan import Context, Executor

    error = StepFailed("car-rental-service did not become healthy", next_step="logs")
    lambda_path = StepSequence("lambda health_handler", (Played(MOVED),))
    rollout = StepSequence("app", (Played(ROLLED), Played(StepRecord("wait-healthy", "", "failed"), error)))
    plan = Plan(env.name, (Parallel((lambda_path, rollout)), Smoke()), "deploy.auto")
    clock = FakeClock()
    ctx = Context(Mock(), env, Mock(), clock, Reporter(io.StringIO(), tty=False, clock=clock), Mock())
    report = Executor(ctx).execute(plan)
    assert report.error is error
    failed = rb.failed_step(report)
    assert failed is not None and failed.step == "wait-healthy"
    group = report.records[0]
    assert [(c.step, c.status) for c in group.children] == [("sequence", "done"), ("sequence", "failed")]
    assert [(c.step, c.status) for c in group.children[1].children] == [
        ("roll-service", "done"),
        ("wait-healthy", "failed"),
    ]
    undo = rb.undo_plan(env, report, FakeLambda())
    assert undo is not None and undo.plan.title == "automatic rollback: lambda:health_handler, app"
    assert [type(s) for s in undo.plan.steps] == [rb.PointAlias, RegisterTaskDef, RollService, WaitHealthy, Smoke]


def test_a_service_being_deleted_is_not_rolled_back_what_moved_beside_it_is(env: EnvConfig) -> None:
    """The wait found the service being deleted (inv destroy, its stack deleted) after roll-service and a function's
    alias moved: the run failed (exit 1), and its rollback puts the alias back but not the app, which nothing can roll
    out (register-taskdef would refuse it), nor smokes what is left (the app's checks fail on it), and says so."""
    from deploykit.clock import FakeClock
    from deploykit.ecs import being_deleted
    from deploykit.output import Reporter
    from deploykit.plan import Context, Executor

    def run(*beside: Step) -> RunReport:
        gone = being_deleted(env.service, env.cluster, env, "DRAINING", so="its rollout cannot finish")
        rollout = StepSequence("app", (Played(ROLLED), Played(StepRecord("wait-healthy", "", "failed"), gone)))
        plan = Plan(env.name, (Parallel((*beside, rollout)) if beside else rollout, Smoke()), "deploy.auto")
        clock = FakeClock()
        ctx = Context(Mock(), env, Mock(), clock, Reporter(io.StringIO(), tty=False, clock=clock), Mock())
        report = Executor(ctx).execute(plan)
        assert report.error is gone and report.error.exit_code == 1  # after roll-service: a failed run
        return report

    undo = rb.undo_plan(env, run(StepSequence("lambda health_handler", (Played(MOVED),))), FakeLambda())
    assert undo is not None and undo.plan.title == "automatic rollback: lambda:health_handler"
    assert [type(s) for s in undo.plan.steps] == [rb.PointAlias]
    assert undo.notes == (
        f"ECS is deleting {env.service} or has deleted it: the app is not put back (nothing can be rolled out on "
        "it), and no smoke follows",
    )
    assert rb.undo_plan(env, run(), FakeLambda()) is None  # the app alone: nothing to put back


def test_too_many_errors_after_the_rollout_put_the_previous_release_back(env: EnvConfig) -> None:
    error = StepFailed("car-rental-service answered 9 of 100 requests with a 5xx", next_step="logs")
    undo = rb.undo_plan(env, failed_run(env, ROLLED, StepRecord("watch-errors", "", "failed"), error=error), None)
    assert undo is not None and undo.plan.title == "automatic rollback: app"
    assert [type(s) for s in undo.plan.steps] == [RegisterTaskDef, RollService, WaitHealthy, Smoke]


def test_a_circuit_breaker_rollback_is_only_waited_for(env: EnvConfig) -> None:
    error = RolledBackByEcs("circuit breaker rolled the service back", next_step="fix")
    undo = rb.undo_plan(env, failed_run(env, ROLLED, StepRecord("wait-healthy", "", "failed"), error=error), None)
    assert undo is not None
    assert [type(s) for s in undo.plan.steps] == [WaitHealthy, Smoke]
    assert "not repeated" in undo.notes[0]


def test_a_circuit_breaker_that_put_back_a_release_that_never_passed_is_followed_by_the_last_verified_one(
    env: EnvConfig,
) -> None:
    """The service ran C before the run (a release that failed its smoke, kept with --no-rollback: ECS saw it
    COMPLETED), the live record names A. The run's release failed and ECS's circuit breaker put back C, the last
    deployment ECS saw complete: waiting for C (its smoke failing again) left the release that never passed
    serving; A goes back on a fresh revision made from what ran, said. When ECS put back what the record names, it
    is only waited for."""
    error = RolledBackByEcs("circuit breaker rolled the service back", next_step="fix")
    ran_c = StepRecord(
        "roll-service",
        "",
        "done",
        outputs={"previous_image": "registry.test/car-rental-backend:" + C, "previous_task_definition": "td:7"},
    )
    failed = failed_run(env, ran_c, StepRecord("wait-healthy", "", "failed"), error=error)
    undo = rb.undo_plan(env, failed, None, before={"app": A})
    assert undo is not None and undo.plan.deploys == (("app", A),)
    assert [type(s) for s in undo.plan.steps] == [RegisterTaskDef, RollService, WaitHealthy, Smoke]
    register = undo.plan.steps[0]
    assert isinstance(register, RegisterTaskDef) and (register.tag, register.base) == (A, "td:7")
    assert any(f"ran {C} before this run, which no deploy verified" in note for note in undo.notes)
    same = rb.undo_plan(env, failed, None, before={"app": C})
    assert same is not None and [type(s) for s in same.plan.steps] == [WaitHealthy, Smoke]
    assert same.plan.deploys == (("app", C),) and "not repeated" in same.notes[0]


@pytest.mark.parametrize(
    ("records", "error"),
    [
        ((StepRecord("push", "", "failed"),), None),  # before the service rolled: nothing to put back
        ((ROLLED, SMOKE_FAILED), Interrupted("interrupted during smoke")),  # Ctrl-C: the message says what to run
        ((StepRecord("roll-service", "", "skipped"), SMOKE_FAILED), None),  # this run replaced nothing
        ((ROLLED, SMOKE_FAILED), UsageError("bad input")),
    ],
)
def test_no_automatic_rollback(env: EnvConfig, records: tuple[StepRecord, ...], error: Exception | None) -> None:
    assert rb.undo_plan(env, failed_run(env, *records, error=error), FakeLambda()) is None


def test_a_failed_sub_step_of_a_group_is_what_failed(env: EnvConfig) -> None:
    group = StepRecord("parallel", "", "failed", children=[StepRecord("smoke", "", "failed")])
    assert rb.failed_step(failed_run(env, group)) is group.children[0]


def test_the_failed_step_of_a_group_is_the_failure_it_raised_not_a_refusal_or_a_step_held_back(env: EnvConfig) -> None:
    """The group raises a failure before a refusal, whatever their order, and never a step it held back: the failed
    step named (whose log the run shows, whether stacks count) was the first failed child in the group's order."""
    refused = StepRecord("sequence", "", "failed", refused=True, children=[StepRecord("x", "", "failed", refused=True)])
    held = StepRecord("sequence", "", "failed", held_back=True)
    canary = StepRecord("canary", "", "failed")
    group = StepRecord("parallel", "", "failed", children=[held, refused, canary])
    assert rb.failed_step(failed_run(env, group)) is canary
    throttled = StepRecord("roll-service", "", "failed", raw=True)  # an AWS call's failure: the canary's verdict first
    group = StepRecord("parallel", "", "failed", children=[throttled, canary])
    assert rb.failed_step(failed_run(env, group)) is canary
    assert rb.split_image("127.0.0.1:5001/repo:" + A) == ("127.0.0.1:5001/repo", A)
    assert rb.split_image("127.0.0.1:5001/repo") is None


# -- a whole run ------------------------------------------------------------------------------------------------


def run_record(n: int, deployed: dict[str, str], base: dict[str, str | None], **kw: Any) -> history.Record:
    when = datetime(2026, 11, 29, 15, 0, tzinfo=UTC) + timedelta(minutes=n)
    return history.Record(
        id=f"{when:%Y%m%dT%H%M%S}.000000-{n:08x}", env="dev", when=when.isoformat(timespec="seconds"), who="ana",
        command=kw.pop("command", "deploy.auto"), head=A, ok=kw.pop("ok", True), seconds=1.0,
        components=dict(deployed), base=dict(base), **kw,
    )  # fmt: skip


def test_a_run_is_named_by_last_its_id_or_the_time_inv_history_shows(env: EnvConfig) -> None:
    records = [
        run_record(3, {}, {}),  # deployed nothing
        run_record(2, {"app": C}, {"app": B}, ok=False),
        run_record(1, {"app": B}, {"app": A}),
        run_record(0, {"app": A}, {}),
    ]
    assert rb.find_run(records, "last", env) is records[2]
    assert rb.find_run(records, records[3].id, env) is records[3]
    assert rb.find_run(records, records[1].id[:17], env) is records[1]
    assert rb.find_run(records, "2026-11-29T15:01:00Z", env) is records[2]  # as inv history shows it
    assert rb.find_run(records, "2026-11-29T16:01:00+01:00", env) is records[2]
    with pytest.raises(UsageError, match="no run '2026-11-29T15:09:00Z' among dev's newest 4 records"):
        rb.find_run(records, "2026-11-29T15:09:00Z", env)
    with pytest.raises(UsageError, match="'20261129T150' names 4 runs"):
        rb.find_run(records, "20261129T150", env)
    with pytest.raises(UsageError, match="no successful deploy"):
        rb.find_run(records[:2], "last", env)
    # the history since the time named (a run older than the newest records): said so, not as the newest 0
    since = datetime(2027, 1, 1, tzinfo=UTC)
    with pytest.raises(UsageError, match=r"^no run '2027-01-01T00:00:00Z' among dev's 0 records since 2027-01-01T00"):
        rb.find_run([], "2027-01-01T00:00:00Z", env, since=since)
    # a rerun whose steps were all skipped changed nothing: last is the run before it
    rerun = run_record(4, {"app": B}, {"app": B})
    assert rb.find_run([rerun, *records], "last", env) is records[2]
    # an id is never read as a time: its suffix may read as a UTC offset (-12:34:56.78)
    odd = dataclasses.replace(records[0], id="20261130T055550.397211-12345678")
    assert rb.find_run([odd, *records[1:]], odd.id, env) is odd
    assert rb.find_run([odd, *records[1:]], "20261130T0555", env) is odd  # the start of one
    with pytest.raises(UsageError, match="there is no such time") as raised:  # not a traceback
        rb.find_run(records, "2026-02-30T10:00:00Z", env)
    assert raised.value.exit_code == 2


def test_last_is_never_a_rollback_and_a_run_a_rollback_put_back_is_undone_already(env: EnvConfig) -> None:
    """Undoing a rollback would deploy again what it took away (after an automatic rollback: the release that
    failed): ``last`` passes over rollbacks, and the deploy it finds, once a rollback put it back, is said to be
    undone already; a rollback is undone only when named."""
    deploy = run_record(1, {"app": B}, {"app": A})
    failed = run_record(2, {"app": C}, {"app": B}, ok=False)
    automatic = run_record(3, {"app": B}, {"app": C}, command="automatic rollback: app")
    by_hand = run_record(4, {"app": A}, {"app": B}, command="rollback app → " + A)
    records = [by_hand, automatic, failed, deploy]
    assert [r.rollback for r in records] == [True, True, False, False]
    assert rb.find_run(records, "last", env) is deploy
    assert rb.find_run(records, by_hand.id, env) is by_hand
    # the automatic rollback put the deploy's release back: the deploy is what runs, and goes back as before
    assert rb.undo_targets(deploy, [automatic, failed], {"app": {"sha": B}}, env) == [("app", A)]
    with pytest.raises(UsageError, match=r"is undone already: app \(put back by rollback app → ") as err:
        rb.undo_targets(deploy, [by_hand, automatic, failed], {"app": {"sha": A}}, env)
    assert "nothing was changed" in err.value.message and "--run ID" in (err.value.next_step or "")
    with pytest.raises(UsageError, match="no successful deploy"):
        rb.find_run([by_hand, automatic, failed], "last", env)


def test_last_passes_over_a_run_that_changed_nothing(env: EnvConfig) -> None:
    """A deploy.auto of a comment in cdk/app.py: every stack's change set empty, its record changed nothing. Undoing
    it would be 'nothing to roll back' while the deploy before it stays; last is that deploy."""
    real = run_record(1, {"app": B}, {"app": A}, changed=True)
    quiet = run_record(2, {"stack:api": C}, {"stack:api": B}, changed=False)
    assert rb.find_run([quiet, real], "last", env) is real
    assert rb.find_run([quiet, real], quiet.id, env) is quiet  # named, it is still found


def test_a_run_partly_undone_by_a_rollback_is_undone_for_the_rest(env: EnvConfig) -> None:
    """A run deployed the app and a function; a person's rollback put the app back alone: undoing the run moves the
    function back, and says the app is undone already."""
    key = "lambda:login_handler"
    run = run_record(1, {"app": B, key: B}, {"app": A, key: A})
    back = run_record(2, {"app": A}, {"app": B}, command=f"rollback app → {A}")
    live = {"app": {"sha": A}, key: {"sha": B}}
    assert rb.undo_targets(run, [back], live, env) == [(key, A)]
    assert list(rb.put_back_since(run, [back], live)) == ["app"]
    both = run_record(3, {key: A}, {key: B}, command=f"rollback {key} → {A}")
    with pytest.raises(UsageError, match=r"is undone already: app .*; lambda:login_handler"):
        rb.undo_targets(run, [both, back], {"app": {"sha": A}, key: {"sha": A}}, env)


def test_a_runs_components_go_back_to_what_was_live_before_it_in_a_deploys_order(env: EnvConfig) -> None:
    deployed = {"stack:registry": B, "stack:fargate": B, "lambda:login_handler": B, "app": B, "stack:api": B}
    record = run_record(1, deployed | {"stack:data": B}, {c: A for c in deployed}, unchanged=["stack:data"])
    live = {c: {"sha": B} for c in deployed}
    # the stacks first (registry before those importing from it), while the run's image and code still run; then
    # the functions, then the app
    assert rb.undo_targets(record, [], live, env) == [
        ("stack:registry", A),
        ("stack:api", A),
        ("stack:fargate", A),
        ("lambda:login_handler", A),
        ("app", A),
    ]
    # a newer run that carried a component unchanged did not deploy it; one that deployed it did
    carried = run_record(2, {"stack:fargate": C}, {"stack:fargate": B}, unchanged=["stack:fargate"])
    assert len(rb.undo_targets(record, [carried], live, env)) == 5
    again = run_record(3, {"app": C}, {"app": B})
    failed = run_record(4, {"stack:api": C}, {"stack:api": B}, ok=False)
    with pytest.raises(UsageError, match=r"deployed again since, or taken out: app \(by deploy.auto at ") as err:
        rb.undo_targets(record, [failed, again, carried], live, env)
    assert "stack:api" not in err.value.message  # a failed newer run moved nothing
    with pytest.raises(UsageError, match=r"stack:fargate \(not live any more\)"):
        rb.undo_targets(record, [], {c: v for c, v in live.items() if c != "stack:fargate"}, env)


def test_the_stacks_a_runs_deploy_changed_nothing_in_are_carried_back_not_deployed_by_its_undo(env: EnvConfig) -> None:
    """A run that changed cdk/app.py deploys every stack, most with nothing to change: its undo carries those back
    to what was live before it, no change set made; a stack one of whose steps changed something or failed is not."""
    stacks = planner.stack_roles(env)
    deployed = {f"stack:{role}": B for role in ("registry", "data", "auth", "fargate", "api")}

    def step(role: str, status: str, said: str = "no changes") -> dict[str, Any]:
        return {"step": "deploy-stack", "status": status, "seconds": 0.1, "detail": f"{stacks[role]}: {said}"}

    steps = [
        {"step": "synth", "status": "done", "seconds": 1.0, "detail": "5 templates in 1.0s"},
        step("registry", "skipped"),
        {"step": "parallel", "status": "done", "seconds": 0.3, "detail": "1 of 2 changed"},
        step("data", "skipped"),
        step("auth", "done", "updated in 0.2s (1 change)"),
        step("fargate", "skipped"),
        step("fargate", "done", "no changes to the stack; car-rental-service rolled out again"),  # in express mode
        {"step": "upload-lambda", "status": "skipped", "seconds": 0.0, "detail": "login_handler: s3://b/k is there"},
    ]
    record = dataclasses.replace(run_record(1, deployed, {c: A for c in deployed}), steps=steps)
    assert rb.unchanged_by(record, stacks) == {"stack:registry", "stack:data"}  # api: no step recorded, not known
    carried = rb.run_plan_of(env, record, [], carried=[("stack:data", A)])
    assert carried.carried == (("stack:data", A),) and carried.deploys == ()


@pytest.mark.parametrize(
    ("record", "problem"),
    [
        (run_record(1, {"app": B}, {"app": A}, ok=False), "did not succeed"),
        (run_record(1, {"app": B}, {"app": A}, unchanged=["app"]), "deployed nothing"),
        (run_record(1, {"app": B, "lambda:new_handler": B}, {"app": A}), "deployed lambda:new_handler for the first"),
    ],
)
def test_what_a_run_cannot_be_undone_for_is_refused(env: EnvConfig, record: history.Record, problem: str) -> None:
    with pytest.raises(UsageError, match=problem) as err:
        rb.undo_targets(record, [], {"app": {"sha": B}, "lambda:new_handler": {"sha": B}}, env)
    assert err.value.exit_code == 2


def test_a_run_that_added_a_function_with_its_route_is_undone_by_the_api_stack_which_takes_it_out(
    env: EnvConfig, tmp_path: Path
) -> None:
    record = run_record(1, {"stack:api": B, "lambda:new_handler": B, "app": B}, {"stack:api": A, "app": A})
    live = {c: {"sha": B} for c in record.deployed}
    assert rb.taken_out(record) == ("lambda:new_handler",)
    assert rb.undo_targets(record, [], live, env) == [("stack:api", A), ("app", A)]
    api = rb.stack_plan(env, rb.Target(rb.Component("stack", role="api"), B, A, ""), tmp_path / "t.json", ())
    app = rb.app_plan(env, "123.dkr.ecr/car-rental-backend", A, smoke=False)
    plan = rb.run_plan_of(env, record, [("stack:api", api), ("app", app)])
    assert plan.removes == ("lambda:new_handler",) and plan.deploys == (("stack:api", A), ("app", A))
    assert rb.run_plan_of(env, record, [("app", app)]).removes == ()  # the stack at its target already
    # a newer run that deployed the function again moved it: refused, as for any component
    again = run_record(2, {"lambda:new_handler": C}, {"lambda:new_handler": B})
    with pytest.raises(UsageError, match=r"deployed again since, or taken out: lambda:new_handler \(by deploy.auto"):
        rb.undo_targets(record, [again], live, env)
    # the API stack created by the same run (or not deployed by it): nothing takes the function out
    created = run_record(1, {"stack:api": B, "lambda:new_handler": B}, {})
    with pytest.raises(UsageError, match="deployed lambda:new_handler, stack:api for the first time"):
        rb.undo_targets(created, [], live, env)
    assert rb.taken_out(created) == ()


def test_a_stack_counted_unchanged_at_a_commit_was_deployed_from_the_commit_it_was_carried_from() -> None:
    key = "stack:fargate"
    records = [  # newest first: deployed at A, carried to B then to C (a failed run deployed it at C: not live)
        run_record(4, {key: C}, {key: B}, ok=False),
        run_record(3, {"app": C, key: C}, {"app": B, key: B}, unchanged=[key]),
        run_record(2, {"app": B, key: B}, {"app": A, key: A}, unchanged=[key]),
        run_record(1, {key: A}, {}),
    ]
    assert [rb.deployed_from(records, key, sha) for sha in (C, B, A)] == [A, A, A]
    assert rb.deployed_from(records, key, "ddddddd44444") is None  # no run says anything of it
    assert rb.deployed_from(records[:3], key, C) is None  # the deploy it was carried from is older than the records
    assert rb.deployed_from(records, "app", C) == C
    loop = [run_record(2, {key: B}, {key: A}, unchanged=[key]), run_record(1, {key: A}, {key: B}, unchanged=[key])]
    assert rb.deployed_from(loop, key, B) is None  # records that make a loop end it


def test_a_run_that_took_a_function_out_brings_it_back_at_the_commit_it_ran(env: EnvConfig) -> None:
    record = run_record(1, {"stack:api": B}, {"stack:api": A, "lambda:old_handler": C}, removed=["lambda:old_handler"])
    assert rb.restored(record) == {"lambda:old_handler": C}
    live = {"stack:api": {"sha": B}}  # the function is not live: the run took it out
    assert rb.undo_targets(record, [], live, env) == [("stack:api", A)]
    # a newer run that brought it back (or took it out again) moved it: refused, as for any component
    again = run_record(2, {"lambda:old_handler": "ddddddd44444"}, {})
    with pytest.raises(UsageError, match=r"deployed again since, or taken out: lambda:old_handler \(by deploy.auto"):
        rb.undo_targets(record, [again], live, env)
    # taken out with the API stack deployed for the first time, or without it: nothing to bring it back with
    assert rb.restored(run_record(1, {"stack:api": B}, {}, removed=["lambda:old_handler"])) == {}
    assert rb.restored(run_record(1, {"app": B}, {"app": A, "lambda:old_handler": C}, removed=["lambda:x"])) == {}


def test_the_functions_a_run_added_or_took_out_come_and_go_with_any_stack_that_may_hold_them() -> None:
    """A stack of the team's own holds functions as the API stack does; the platform's others hold none."""
    added = run_record(1, {"stack:jobs": B, "lambda:nightly": B}, {"stack:jobs": A})
    assert rb.taken_out(added) == ("lambda:nightly",)
    took = run_record(1, {"stack:jobs": B}, {"stack:jobs": A, "lambda:nightly": C}, removed=["lambda:nightly"])
    assert rb.restored(took) == {"lambda:nightly": C}
    assert rb.taken_out(run_record(1, {"stack:data": B, "lambda:nightly": B}, {"stack:data": A})) == ()
    assert rb.restored(run_record(1, {"stack:data": B}, {"stack:data": A, "lambda:x": C}, removed=["lambda:x"])) == {}


def test_the_functions_of_a_template_are_named_by_their_code_parameters() -> None:
    template = {"Parameters": {"ImageTag": {}, "LoginHandlerCodeKey": {}, "PricingHandlerCodeKey": {}, "XCodeKey": {}}}
    assert planner.code_parameters(template) == {
        "login_handler": "LoginHandlerCodeKey",
        "pricing_handler": "PricingHandlerCodeKey",
        "x": "XCodeKey",
    }
    assert planner.code_parameters({"Parameters": {"Weird_CodeKey": {}}}) == {}
    # a function being brought back must be in the template it goes back to
    live = {"LoginHandlerCodeKey": "k"}
    with pytest.raises(UsageError, match=f"S at {A} has no function old_handler, though it ran before"):
        rb.template_parameters(TEMPLATE, live, stack="S", sha=A, restoring=["old_handler"])
    assert rb.template_parameters(TEMPLATE, live | {"ImageTag": B}, stack="S", sha=A, restoring=["login_handler"])


def test_a_runs_plan_is_its_components_plans_with_one_smoke(env: EnvConfig, tmp_path: Path) -> None:
    record = run_record(1, {"app": B, "stack:data": B}, {"app": A, "stack:data": A})
    app = rb.app_plan(env, "123.dkr.ecr/car-rental-backend", A, smoke=False)
    data = rb.stack_plan(
        env, rb.Target(rb.Component("stack", role="data"), B, A, ""), tmp_path / "t.json", (), smoke=False
    )
    plan = rb.run_plan_of(env, record, [("stack:data", data), ("app", app)])
    assert [type(s) for s in plan.steps] == [DeployStack, RegisterTaskDef, RollService, WaitHealthy, Smoke]
    assert plan.title == f"rollback run {record.id}" and plan.deploys == (("stack:data", A), ("app", A))
    assert [type(s) for s in rb.run_plan_of(env, record, [("app", app)], smoke=False).steps][-1] is WaitHealthy


def test_a_runs_independent_components_go_back_side_by_side_as_a_deploy_runs_them(
    env: EnvConfig, tmp_path: Path
) -> None:
    """The stacks of one dependency level together, then the functions and the app together."""

    def stack(role: str) -> tuple[str, Plan]:
        target = rb.Target(rb.Component("stack", role=role), B, A, "")
        return f"stack:{role}", rb.stack_plan(env, target, tmp_path / f"{role}.json", (), smoke=False)

    def function(fn: str) -> tuple[str, Plan]:
        target = rb.Target(rb.Component("lambda", fn), B, A, "", version="3")
        return f"lambda:{fn}", rb.lambda_plan(env, target, f"Fn-{fn}", smoke=False)

    components = {"stack:data": B, "stack:auth": B, "stack:fargate": B, "lambda:a": B, "lambda:b": B, "app": B}
    record = run_record(1, components, {c: A for c in components})
    app = ("app", rb.app_plan(env, "123.dkr.ecr/car-rental-backend", A, smoke=False))
    plans = [stack("auth"), stack("data"), stack("fargate"), function("a"), function("b"), app]
    plan = rb.run_plan_of(env, record, plans)
    first, fargate, code, smoke = plan.steps
    assert isinstance(first, Parallel) and [s.stack for s in first.steps] == [  # type: ignore[attr-defined]
        env.stacks.auth,
        env.stacks.data,
    ]
    assert isinstance(fargate, DeployStack) and fargate.stack == env.stacks.fargate  # the level after theirs
    assert isinstance(code, Parallel) and isinstance(smoke, Smoke)
    functions, rollout = code.steps[:2], code.steps[2]
    assert [s.function for s in functions] == ["a", "b"]  # type: ignore[attr-defined]
    assert isinstance(rollout, StepSequence) and rollout.label == "app"
    assert [type(s) for s in rollout.steps] == [RegisterTaskDef, RollService, WaitHealthy]
    assert {c for c, _ in plan.deploys} == set(components)
    assert [rb.component_of(c).key for c in ("app", "lambda:x", "stack:api")] == ["app", "lambda:x", "stack:api"]


def test_a_run_that_failed_after_changing_stacks_names_them_for_a_rollback(env: EnvConfig) -> None:
    """The automatic rollback puts back code only: the stacks the run changed are named for inv rollback."""

    def deployed(stack: str, action: str, status: str = "done") -> StepRecord:
        return StepRecord("deploy-stack", "", status, detail=f"{stack}: ...", outputs={f"deploy-stack.{stack}": action})

    changed = deployed("CarRentalFargateStack", "updated")
    same = deployed("CarRentalApiStack", "unchanged", "skipped")
    group = StepRecord("parallel", "", "done", children=[changed, same])
    assert rb.changed_stacks(failed_run(env, group, ROLLED, SMOKE_FAILED), env) == ["fargate"]
    assert rb.changed_stacks(failed_run(env, changed, SMOKE_FAILED), env) == ["fargate"]
    created = deployed("CarRentalApiStack", "created")
    assert rb.changed_stacks(failed_run(env, created, changed, SMOKE_FAILED), env) == ["fargate"]  # nothing before
    # failed in the stack's own deploy (CloudFormation rolled it back), or before it: nothing to name
    stack_failed = StepRecord("deploy-stack", "", "failed", detail="CarRentalFargateStack: UPDATE_ROLLBACK_COMPLETE")
    assert rb.changed_stacks(failed_run(env, stack_failed), env) == []
    assert rb.changed_stacks(failed_run(env, changed, SMOKE_FAILED, error=Interrupted("stopped")), env) == []


def test_a_commits_cdk_app_is_synthesized_from_a_folder_of_the_call_s_own(
    project: Path, env: EnvConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two rollbacks to one commit at once (two environments', a dry run beside a rollback) shared
    cdk.out/.source-<sha> and removed each other's mid-synthesis: the app "does not synthesize here", or "refused the
    settings of environment" (deploy.toml blamed). Each has its own now, and leaves another's alone."""
    (project / "cdk").mkdir()
    (project / "cdk" / "app.py").write_text("# the app\n")
    git(project, "add", "-A")
    git(project, "commit", "-q", "-m", "cdk")
    sha = git(project, "rev-parse", "--short=12", "HEAD").strip()
    others = project / "cdk.out" / f".source-{sha}"  # another command's, mid-synthesis
    (others / "cdk").mkdir(parents=True)
    (others / "cdk" / "app.py").write_text("# the app\n")
    killed = project / "cdk.out" / f".source-{sha}-left"  # a killed command's, older than any synthesis lasts
    killed.mkdir()
    os.utime(killed, (time.time() - 3 * 3600, time.time() - 3 * 3600))
    seen: list[Path] = []

    def synthesize(config: Any, environment: EnvConfig, **kwargs: Any) -> Any:
        seen.append(config.root)
        assert (config.root / "cdk" / "app.py").read_text() == "# the app\n"
        return "synthesized"

    monkeypatch.setattr(rb.synth, "synthesize", synthesize)
    config = load_config(project / "deploy.toml")
    assert rb.synthesize_at(config, env, sha, account="123456789012", ecr=None) == "synthesized"
    assert seen[0] != others and seen[0].parent == project / "cdk.out" and not seen[0].exists()
    assert (others / "cdk" / "app.py").is_file()
    assert not killed.exists()
