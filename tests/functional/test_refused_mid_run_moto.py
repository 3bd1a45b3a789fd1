"""A step refused as bad input (exit 2: a plugin's review of a later stack) after an earlier step changed what is
live ends the run with exit 1, as a run that failed part way: exit 2 says nothing changed, and here it did."""

from __future__ import annotations

import dataclasses
import io
from pathlib import Path
from typing import ClassVar

import pytest

from deploykit import commands
from deploykit.config import EnvConfig, load_config
from deploykit.errors import UsageError
from deploykit.plan import Context, Outcome, Parallel, Plan, Step
from tests.functional.conftest import Deploy


@dataclasses.dataclass(frozen=True)
class Refused(Step):
    """A step refused before it changes anything (as deploy-stack is by a plugin's review)."""

    name: ClassVar[str] = "refused"

    def describe(self) -> str:
        return "refused"

    def run(self, ctx: Context) -> Outcome:
        raise UsageError("the team's check plugins refuse its change set", next_step="look at inv diff")


@dataclasses.dataclass(frozen=True)
class Build(Step):
    """An artifact only: it changes nothing that is live."""

    name: ClassVar[str] = "build"
    artifacts_only: ClassVar[bool] = True

    def describe(self) -> str:
        return "build"

    def run(self, ctx: Context) -> Outcome:
        return Outcome.done("built")


@dataclasses.dataclass(frozen=True)
class Register(Step):
    """Done, it leaves what runs as it was (as register-taskdef's revision, which no service runs yet)."""

    name: ClassVar[str] = "register"
    changes_what_runs: ClassVar[bool] = False

    def describe(self) -> str:
        return "register"

    def run(self, ctx: Context) -> Outcome:
        return Outcome.done("registered")


def run(project: Path, env: EnvConfig, *steps: Step) -> UsageError:
    runtime = commands.Runtime(config_path=project / "deploy.toml", stdout=io.StringIO(), stderr=io.StringIO())
    config = dataclasses.replace(load_config(project / "deploy.toml"), environments={env.name: env})
    plan = Plan(env.name, steps, "deploy.full", deploys=(("stack:data", "a" * 12),))
    with pytest.raises(UsageError) as refused:
        commands.run_plan(runtime, config, env, plan, dry_run=False, as_json=False)
    return refused.value


@pytest.mark.parametrize(
    ("steps", "code"),
    [
        ((Refused(),), 2),  # nothing ran before it
        ((Build(), Refused()), 2),  # an artifact only: nothing live changed
        ((Build(), Register(), Refused()), 2),  # a revision nothing runs yet (the scan gate refuses there)
        ((Deploy(), Refused()), 1),  # a stack deployed before it
        ((Parallel((Deploy(), Refused())),), 1),  # one beside it, in the same group
    ],
    ids=["first", "after-an-artifact", "after-a-revision", "after-a-deploy", "beside-a-deploy"],
)
def test_a_refusal_after_a_step_changed_what_is_live_exits_1(
    bucket: str, dev_env: EnvConfig, project: Path, steps: tuple[Step, ...], code: int
) -> None:
    error = run(project, dev_env, *steps)
    assert error.message.startswith("the team's check plugins refuse its change set")
    assert error.exit_code == code
    # its "nothing was changed" is the refusing step's alone: said when the steps before it changed what runs
    assert error.message.endswith("the steps before it changed what runs, as the table shows)") == (code == 1)
    runtime = commands.Runtime(config_path=project / "deploy.toml", stdout=io.StringIO(), stderr=io.StringIO())
    [record] = commands.history_list(env="dev", limit=1, runtime=runtime)
    assert record.result == ("refused" if code == 2 else "failed")  # the history says it as the exit code does
