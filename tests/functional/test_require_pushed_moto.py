"""An environment that takes only pushed commits (require_pushed = true): a plan deploying this checkout's HEAD is
refused before anything changes while no remote branch holds it, as is another commit of this clone no remote branch
holds (an older local build's image); a dry run says so; a clone with no remote, a rollback, and
$DEPLOYKIT_ALLOW_UNPUSHED=1 go through."""

from __future__ import annotations

import io
from pathlib import Path
from unittest.mock import Mock

import pytest

from deploykit import commands, planner
from deploykit.clock import FakeClock
from deploykit.config import load_config
from deploykit.errors import UsageError
from deploykit.plan import Plan
from tests.conftest import git
from tests.functional.test_lock_moto import Probe


@pytest.fixture
def strict(project: Path) -> Path:
    """The test project with its dev environment taking only pushed commits."""
    toml = project / "deploy.toml"
    toml.write_text(toml.read_text().replace("[environments.dev]\n", "[environments.dev]\nrequire_pushed = true\n", 1))
    git(project, "commit", "-qam", "dev takes only pushed commits")
    assert load_config(toml).environment("dev").require_pushed
    return project


def run(project: Path, sha: str, *, dry_run: bool = False, title: str = "deploy.auto") -> tuple[bool, str]:
    """A plan deploying ``sha`` to dev through run_plan: (whether its step ran, what it said)."""
    probe = Probe()
    runtime = commands.Runtime(
        config_path=project / "deploy.toml", stdout=io.StringIO(), stderr=io.StringIO(), clock=FakeClock()
    )
    config = load_config(project / "deploy.toml")
    plan = Plan("dev", (probe,), title, deploys=(("app", sha[:12]),))
    try:
        commands.run_plan(runtime, config, config.environment("dev"), plan, dry_run=dry_run, as_json=False)
    finally:
        said = runtime.stderr.getvalue()  # type: ignore[attr-defined]
    return bool(probe.seen), said


def head(project: Path) -> str:
    return git(project, "rev-parse", "HEAD").strip()


def test_only_a_commit_a_remote_branch_holds_is_deployed(
    bucket: str, strict: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert run(strict, head(strict))[0]  # no remote at all: nothing to push to
    remote = tmp_path / "origin.git"
    git(tmp_path, "init", "-q", "--bare", str(remote))
    git(strict, "remote", "add", "origin", str(remote))
    git(strict, "push", "-q", "origin", "main")
    assert run(strict, head(strict))[0]
    pushed = head(strict)

    (strict / "README.md").write_text("a local commit\n")
    git(strict, "add", "-A")
    git(strict, "commit", "-qm", "local only")
    with pytest.raises(UsageError) as err:
        run(strict, head(strict))
    short = head(strict)[:12]
    assert err.value.message == (
        f"dev takes only pushed commits (require_pushed = true), and HEAD {short} is on no remote branch (as this "
        "clone last fetched them): running there, it would stop each teammate's inv deploy.auto --env dev at a commit "
        "their clone cannot fetch"
    )
    assert err.value.next_step.startswith("git push (git fetch first, if it was pushed from elsewhere)")
    ran, said = run(strict, head(strict), dry_run=True)  # a dry run says so, and shows its plan
    assert not ran and "⚠️  dev takes only pushed commits" in said and "(the run would be refused)" in said
    assert "Plan for deploy.auto → dev (dry run" in said
    assert run(strict, pushed)[0]  # another commit than HEAD, pushed
    local = head(strict)
    (strict / "README.md").write_text("another local commit\n")
    git(strict, "commit", "-qam", "local too")
    with pytest.raises(UsageError, match=f"and commit {local[:12]} is on no remote branch"):
        run(strict, local)  # not HEAD, but on no remote branch either (an older local build's image): refused
    assert run(strict, local, title="rollback app")[0]  # back to what ran before: never held up
    assert run(strict, "0123456789ab")[0]  # a commit this clone does not have: nothing to tell
    monkeypatch.setenv("DEPLOYKIT_ALLOW_UNPUSHED", "1")
    ran, said = run(strict, head(strict))
    assert ran and "(DEPLOYKIT_ALLOW_UNPUSHED=1 lets it through)" in said
    monkeypatch.delenv("DEPLOYKIT_ALLOW_UNPUSHED")
    git(strict, "push", "-q", "origin", "main")
    ran, said = run(strict, head(strict))
    assert ran and "⚠️" not in said


def test_a_deploy_of_head_is_refused_before_the_environment_is_read(strict: Path, tmp_path: Path) -> None:
    """deploy.full, deploy.lambda, deploy.stack and deploy.app always deploy HEAD: git alone tells it is on no remote
    branch, before anything is read (or the sandbox started for it)."""
    remote = tmp_path / "origin.git"
    git(tmp_path, "init", "-q", "--bare", str(remote))
    git(strict, "remote", "add", "origin", str(remote))
    git(strict, "push", "-q", "origin", "main")
    (strict / "README.md").write_text("a local commit\n")
    git(strict, "add", "-A")
    git(strict, "commit", "-qm", "local only")
    runtime = commands.Runtime(
        config_path=strict / "deploy.toml",
        stdout=io.StringIO(),
        stderr=io.StringIO(),
        aws_factory=Mock(side_effect=AssertionError("the environment was read")),
    )
    for deploy in (
        lambda: commands.deploy_full(env="dev", runtime=runtime),
        lambda: commands.deploy_stack("CarRentalDataStack", env="dev", runtime=runtime),
        lambda: commands.app_chain(planner.APP_STAGES, env="dev", runtime=runtime),
    ):
        with pytest.raises(UsageError, match=f"and HEAD {head(strict)[:12]} is on no remote branch"):
            deploy()
