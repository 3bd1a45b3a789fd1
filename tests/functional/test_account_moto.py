"""The account an environment lives in (``account`` in deploy.toml) and the profile CI replaces
($DEPLOYKIT_AWS_PROFILE): nothing is changed with another account's credentials (moto's STS: 123456789012)."""

from __future__ import annotations

import dataclasses
import io
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import boto3
import pytest

from deploykit import commands, history, lock
from deploykit.aws import PROFILE_ENV, AwsFactory
from deploykit.clock import FakeClock, SystemClock
from deploykit.config import EnvConfig, load_config, parse_config
from deploykit.errors import ConfigError, StepFailed, UsageError
from deploykit.plan import Plan
from tests.conftest import git
from tests.functional.conftest import Deploy

MOTO_ACCOUNT = "123456789012"


def run(project: Path, env: EnvConfig) -> None:
    runtime = commands.Runtime(config_path=project / "deploy.toml", stdout=io.StringIO(), stderr=io.StringIO())
    config = dataclasses.replace(load_config(project / "deploy.toml"), environments={env.name: env})
    plan = Plan(env.name, (Deploy(),), "deploy.auto", deploys=(("app", "aaaaaaaaaaaa"),))
    commands.run_plan(runtime, config, env, plan, dry_run=False, as_json=False)


def test_credentials_of_another_account_change_nothing(bucket: str, dev_env: EnvConfig, project: Path) -> None:
    pinned = dataclasses.replace(dev_env, account="210987654321")
    Deploy.ran = 0
    with pytest.raises(UsageError) as raised:
        run(project, pinned)
    assert raised.value.exit_code == 2
    assert raised.value.message == (
        "the credentials for environment 'dev' act in AWS account 123456789012, but deploy.toml pins 210987654321 "
        "for it: nothing was changed"
    )
    assert "use credentials of account 210987654321" in (raised.value.next_step or "")
    assert Deploy.ran == 0
    store = history.History.of(AwsFactory(pinned), pinned)
    assert store is not None and store.records() == []
    objects = boto3.client("s3", region_name="eu-west-1").list_objects_v2(Bucket=bucket).get("Contents", [])
    assert not [o["Key"] for o in objects if o["Key"].startswith("deploykit/lock/")]  # the lock was never taken


def test_the_right_account_deploys_and_is_asked_once(bucket: str, dev_env: EnvConfig, project: Path) -> None:
    pinned = dataclasses.replace(dev_env, account=MOTO_ACCOUNT)
    Deploy.ran = 0
    run(project, pinned)
    assert Deploy.ran == 1
    factory = AwsFactory(pinned)
    calls: list[str] = []
    factory.client("sts").meta.events.register("before-call.sts", lambda **kw: calls.append("sts"))
    assert factory.account() == factory.account() == MOTO_ACCOUNT and calls == ["sts"]


def test_unlock_in_another_account_breaks_nothing(bucket: str, dev_env: EnvConfig, project: Path) -> None:
    held = lock.EnvLock.of(AwsFactory(dev_env), dev_env)
    assert held is not None
    held.acquire("deploy.auto")
    toml = project / "deploy.toml"
    toml.write_text(toml.read_text().replace("[environments.dev]\n", '[environments.dev]\naccount = "210987654321"\n'))
    runtime = commands.Runtime(config_path=toml, stdout=io.StringIO(), stderr=io.StringIO())
    with pytest.raises(UsageError, match="act in AWS account 123456789012"):
        commands.unlock(env="dev", confirm=lambda info: True, runtime=runtime)
    assert held.read() is not None


def test_smoke_in_another_account_runs_no_check(bucket: str, project: Path) -> None:
    """The checks sign up throwaway users and open KYC cases: never in an account the environment does not pin."""
    toml = project / "deploy.toml"
    toml.write_text(toml.read_text().replace("[environments.dev]\n", '[environments.dev]\naccount = "210987654321"\n'))
    runtime = commands.Runtime(config_path=toml, stdout=io.StringIO(), stderr=io.StringIO())
    with pytest.raises(UsageError, match=r"act in AWS account 123456789012, but deploy\.toml pins 210987654321"):
        commands.smoke(env="dev", runtime=runtime)
    assert runtime.stderr.getvalue() == ""  # type: ignore[attr-defined]  # no check ran, no table


@pytest.mark.parametrize("value", ['"12345"', '"12345678901a"', "123456789012"])
def test_an_account_is_twelve_digits_in_quotes(project: Path, value: str) -> None:
    import tomllib

    raw = tomllib.loads((project / "deploy.toml").read_text())
    raw["environments"]["dev"]["account"] = tomllib.loads(f"v = {value}")["v"]
    with pytest.raises(ConfigError, match="account"):
        parse_config(raw, project / "deploy.toml")


def test_ci_replaces_the_profile_with_the_environment_s_credentials(moto_aws: None, dev_env: EnvConfig) -> None:
    laptop = dataclasses.replace(dev_env, profile="car-rental-dev-not-here")
    with pytest.raises(UsageError) as raised:
        AwsFactory(laptop, environ={}).client("sts")
    assert "AWS profile 'car-rental-dev-not-here' (environment 'dev', from 'profile' in deploy.toml)" in str(
        raised.value
    )
    assert f'{PROFILE_ENV}=""' in (raised.value.next_step or "")

    ci = AwsFactory(laptop, environ={PROFILE_ENV: ""})
    assert ci.profile is None and ci.account() == MOTO_ACCOUNT  # boto3's default chain: the environment's keys

    with pytest.raises(UsageError, match=f"AWS profile 'other' \\(environment 'dev', from \\${PROFILE_ENV}\\)"):
        AwsFactory(laptop, environ={PROFILE_ENV: "other"}).client("sts")


def test_the_sandbox_keeps_its_own_credentials_whatever_ci_says(moto_aws: None, dev_env: EnvConfig) -> None:
    sandbox = dataclasses.replace(dev_env, endpoint_url="http://127.0.0.1:4566")
    assert AwsFactory(sandbox, environ={PROFILE_ENV: "other"}).profile is None


def test_inv_health_says_which_account_to_pin_or_that_the_credentials_are_of_another(
    moto_aws: None, project: Path
) -> None:
    runtime = commands.Runtime(config_path=project / "deploy.toml", stdout=io.StringIO(), stderr=io.StringIO())
    with pytest.raises(StepFailed):  # nothing of dev is deployed here
        commands.health_report(env="dev", runtime=runtime)
    said = runtime.stderr.getvalue()  # type: ignore[attr-defined]
    assert '💡 account: not pinned → "123456789012"' in said
    assert 'change it in deploy.toml, [environments.dev]: account = "123456789012"' in said

    toml = project / "deploy.toml"
    toml.write_text(toml.read_text().replace("[environments.dev]\n", '[environments.dev]\naccount = "210987654321"\n'))
    runtime = commands.Runtime(config_path=toml, stdout=io.StringIO(), stderr=io.StringIO())
    with pytest.raises(StepFailed) as raised:
        commands.health_report(env="dev", runtime=runtime)
    assert (
        "these credentials act in AWS account 123456789012, but deploy.toml pins 210987654321" in raised.value.message
    )


def test_a_promoted_environment_reads_its_source_with_that_accounts_credentials(moto_aws: None, project: Path) -> None:
    """prod takes what dev runs: read with prod's credentials (another account), dev would look empty and every
    component "not run there". The source's pinned account is checked first, and named."""
    toml = project / "deploy.toml"
    text = toml.read_text().replace("[environments.dev]\n", '[environments.dev]\naccount = "210987654321"\n', 1)
    prod = text[text.index("[environments.dev]") :].replace("environments.dev", "environments.prod")
    prod = prod.replace('account = "210987654321"\n', "", 1)  # another account's (the stacks named as dev's)
    toml.write_text(text + "\n" + prod.replace("[environments.prod]\n", '[environments.prod]\npromote_from = "dev"\n'))
    git(project, "commit", "-qam", "prod, promoted from dev")
    runtime = commands.Runtime(config_path=toml, stdout=io.StringIO(), stderr=io.StringIO())
    for deploy in (
        lambda: commands.deploy_auto(env="prod", dry_run=True, runtime=runtime),
        lambda: commands.deploy_full(env="prod", runtime=runtime),
        lambda: commands.app_chain(["roll-service"], env="prod", runtime=runtime),
    ):
        with pytest.raises(UsageError, match=r"the credentials for environment 'dev' act in AWS account "
                           r"123456789012, but deploy\.toml pins 210987654321") as raised:  # fmt: skip
            deploy()
        assert raised.value.exit_code == 2


def test_inv_health_warns_of_a_clock_apart_from_awss(moto_aws: None, project: Path) -> None:
    """This machine's clock two minutes ahead of AWS's (the Date of STS's answer, read beside the other parts): a
    warning, with what it puts off and how to set it right. A clock that agrees is not said."""
    ahead = FakeClock(start=datetime.now(UTC) + timedelta(seconds=120))
    for clock, warned in ((ahead, True), (SystemClock(), False)):
        runtime = commands.Runtime(
            config_path=project / "deploy.toml", stdout=io.StringIO(), stderr=io.StringIO(), clock=clock
        )
        with pytest.raises(StepFailed):  # nothing of dev is deployed here
            commands.health_report(env="dev", runtime=runtime)
        said = runtime.stderr.getvalue()  # type: ignore[attr-defined]
        assert (
            bool(re.search(r"this machine's clock is about 1[12]\ds ahead of AWS's \(the Date of its", said)) is warned
        )
        assert ("set the clock right: timedatectl set-ntp true" in said) is warned
