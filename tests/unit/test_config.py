"""deploy.toml validation: every problem is a ConfigError (exit 2) naming the key."""

from __future__ import annotations

import dataclasses
import platform
import sys
import tomllib
from pathlib import Path

import pytest

import tasks
from deploykit import lock
from deploykit.config import ImageScan, load_config, parse_config
from deploykit.errors import ConfigError, UsageError
from deploykit.testing import sample_env
from tests.conftest import REPO, SANDBOX_TOML


def raw(**fmt: str) -> dict:
    return tomllib.loads(SANDBOX_TOML.format(registry="127.0.0.1:5000", repository="r", ca_dir="", **fmt))


def test_the_repository_deploy_toml_is_valid() -> None:
    config = load_config(REPO / "deploy.toml")
    env = config.environment()
    assert env.name == "sandbox" and env.is_local
    assert env.poll_seconds <= 1.0
    assert config.base_image_for(env) == config.build.base.name


def test_the_functions_architecture_is_x86_64_or_arm64() -> None:
    raw = tomllib.loads((REPO / "deploy.toml").read_text())
    assert parse_config(raw, Path("deploy.toml")).build.lambda_architecture == "x86_64"
    raw["build"]["lambda_architecture"] = "arm64"
    assert parse_config(raw, Path("deploy.toml")).build.lambda_architecture == "arm64"
    raw["build"]["lambda_architecture"] = "aarch64"
    with pytest.raises(ConfigError) as refused:
        parse_config(raw, Path("deploy.toml"))
    assert refused.value.message == (
        "deploy.toml: build.lambda_architecture = 'aarch64' is not an architecture Lambda runs functions on"
    )
    assert refused.value.next_step == "set [build] lambda_architecture to one of: x86_64, arm64"


def test_the_functions_runtime_is_one_of_lambdas_python_runtimes_and_the_sandbox_s_is_this_python_s() -> None:
    raw = tomllib.loads((REPO / "deploy.toml").read_text())
    assert parse_config(raw, Path("deploy.toml")).build.lambda_runtime == "python3.11"
    raw["build"]["lambda_runtime"] = "python3.13"
    config = parse_config(raw, Path("deploy.toml"))
    here = f"{sys.version_info.major}.{sys.version_info.minor}"
    assert config.lambda_target(config.environment("sandbox")) == {"architecture": "x86_64", "python": here}
    on_aws = dataclasses.replace(config.environment("sandbox"), endpoint_url=None)
    assert config.lambda_target(on_aws) == {"architecture": "x86_64", "python": "3.13"}
    raw["build"]["lambda_runtime"] = "python3.9"
    with pytest.raises(ConfigError) as refused:
        parse_config(raw, Path("deploy.toml"))
    assert (
        refused.value.message == "deploy.toml: build.lambda_runtime = 'python3.9' is not a Python runtime of Lambda's"
    )
    assert refused.value.next_step == (
        "set [build] lambda_runtime to one of: python3.10, python3.11, python3.12, python3.13, python3.14"
    )


def test_the_modules_a_layer_gives_the_functions_are_module_names() -> None:
    raw = tomllib.loads((REPO / "deploy.toml").read_text())
    assert parse_config(raw, Path("deploy.toml")).build.lambda_runtime_modules == ()
    raw["build"]["lambda_runtime_modules"] = ["aws_lambda_powertools", "yaml"]
    assert parse_config(raw, Path("deploy.toml")).build.lambda_runtime_modules == ("aws_lambda_powertools", "yaml")
    raw["build"]["lambda_runtime_modules"] = ["yaml", "aws-lambda-powertools"]
    with pytest.raises(ConfigError) as refused:
        parse_config(raw, Path("deploy.toml"))
    assert refused.value.message == (
        "deploy.toml: build.lambda_runtime_modules holds 'aws-lambda-powertools', which is not a module's name"
    )
    raw["build"]["lambda_runtime_modules"] = "yaml"
    with pytest.raises(ConfigError, match=r"'build\.lambda_runtime_modules' must be a list of strings"):
        parse_config(raw, Path("deploy.toml"))


def test_functions_on_this_machine_run_on_its_architecture(monkeypatch: pytest.MonkeyPatch) -> None:
    """As the sandbox builds images for this engine's platform, its functions run (and their compiled requirements
    are vendored for) this machine's CPU: it runs them here."""
    raw = tomllib.loads((REPO / "deploy.toml").read_text())
    raw["build"]["lambda_architecture"] = "arm64"
    config = parse_config(raw, Path("deploy.toml"))
    on_aws = sample_env(name="dev")
    assert config.lambda_architecture_for(on_aws) == "arm64"
    for machine, architecture in (("x86_64", "x86_64"), ("aarch64", "arm64"), ("arm64", "arm64")):
        monkeypatch.setattr(platform, "machine", lambda machine=machine: machine)
        assert config.lambda_architecture_for(config.environment("sandbox")) == architecture
        assert config.lambda_architecture_for(on_aws) == "arm64"
        assert config.cpu_architecture_for(config.environment("sandbox")) == architecture.upper()
        assert config.cpu_architecture_for(on_aws) == "X86_64"  # [build] platform: linux/amd64


def test_environment_fields_and_defaults() -> None:
    config = parse_config(raw(), Path("deploy.toml"))
    dev = config.environment("dev")
    assert dev.region == "eu-west-1" and dev.endpoint_url is None and not dev.is_local
    assert dev.poll_seconds == 5.0  # AWS default
    assert dev.stacks.fargate == "CarRentalFargateStack"
    assert config.environment("sandbox").poll_seconds == 0.5  # configured
    assert config.base_image_for(dev) == "python:3.11-slim"


def test_unknown_key_is_named_with_a_suggestion() -> None:
    data = raw()
    data["environments"]["sandbox"]["clustr"] = "x"
    with pytest.raises(ConfigError) as err:
        parse_config(data, Path("deploy.toml"))
    assert "environments.sandbox.clustr" in err.value.message
    assert "did you mean 'cluster'" in err.value.message
    assert err.value.exit_code == 2


def test_unknown_nested_and_top_level_keys() -> None:
    data = raw()
    data["environments"]["dev"]["endpoints"] = {}
    data["environments"]["dev"]["endpoint"] = "x"
    with pytest.raises(ConfigError, match=r"environments\.dev\.endpoint'.*did you mean 'endpoints'"):
        parse_config(data, Path("deploy.toml"))
    data = raw()
    data["defaults"] = {}
    with pytest.raises(ConfigError, match="unknown key 'defaults'") as unknown:
        parse_config(data, Path("deploy.toml"))
    data = raw()
    data["bogus"] = 1
    with pytest.raises(ConfigError, match="unknown key 'bogus'") as unknown:
        parse_config(data, Path("deploy.toml"))
    assert "environments" in unknown.value.message  # among the known keys of the file's top


def test_an_empty_environment_name_is_refused_not_taken_for_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    """`--env "$TARGET"` with TARGET unset must not deploy to default_env."""
    config = parse_config(raw(), Path("deploy.toml"))
    monkeypatch.delenv("DEPLOYKIT_ENV", raising=False)
    with pytest.raises(ConfigError, match=r"the environment's name is empty \(--env is ''\): an unset variable\?"):
        config.environment("")
    monkeypatch.setenv("DEPLOYKIT_ENV", " ")
    with pytest.raises(ConfigError, match=r"\(\$DEPLOYKIT_ENV is ''\)"):
        config.environment()
    assert config.environment("dev").name == "dev"  # --env given: the variable is not read
    monkeypatch.delenv("DEPLOYKIT_ENV")
    assert config.environment().name == config.default_env


def test_an_unknown_environment_names_the_table_to_add_as_toml_takes_it() -> None:
    config = parse_config(raw(), Path("deploy.toml"))
    with pytest.raises(ConfigError) as unknown:
        config.environment("qa")
    assert "or add [environments.qa] to " in (unknown.value.next_step or "")
    with pytest.raises(ConfigError) as unknown:
        config.environment("zz-*")
    assert 'or add [environments."zz-*"] to ' in (unknown.value.next_step or "")


def test_missing_field_is_named() -> None:
    data = raw()
    del data["environments"]["dev"]["service"]
    with pytest.raises(ConfigError) as err:
        parse_config(data, Path("deploy.toml"))
    assert "missing required key 'environments.dev.service'" in err.value.message
    assert "add service" in (err.value.next_step or "")


def test_wrong_types_are_refused() -> None:
    data = raw()
    data["environments"]["dev"]["wait_timeout"] = "ten minutes"
    with pytest.raises(ConfigError, match="wait_timeout' must be float"):
        parse_config(data, Path("deploy.toml"))
    data = raw()
    data["environments"]["dev"]["protected"] = 1
    with pytest.raises(ConfigError, match="protected' must be bool"):
        parse_config(data, Path("deploy.toml"))
    data = raw()
    data["environments"]["dev"]["max_attempts"] = True
    with pytest.raises(ConfigError, match="max_attempts' must be int"):
        parse_config(data, Path("deploy.toml"))


def test_values_are_range_checked() -> None:
    data = raw()
    data["environments"]["dev"]["retry_mode"] = "aggressive"
    with pytest.raises(ConfigError, match="retry_mode"):
        parse_config(data, Path("deploy.toml"))
    data = raw()
    data["environments"]["dev"]["endpoint_url"] = "127.0.0.1:4566"
    with pytest.raises(ConfigError, match="endpoint_url must be an http:// or https:// address"):
        parse_config(data, Path("deploy.toml"))


def test_stack_mode_is_standard_unless_set_and_never_express_in_a_protected_environment() -> None:
    assert parse_config(raw(), Path("deploy.toml")).environments["dev"].stack_mode == "standard"
    data = raw()
    data["environments"]["dev"]["stack_mode"] = "express"
    assert parse_config(data, Path("deploy.toml")).environments["dev"].stack_mode == "express"
    data["environments"]["dev"]["stack_mode"] = "fast"
    with pytest.raises(ConfigError) as err:
        parse_config(data, Path("deploy.toml"))
    assert "environments.dev.stack_mode must be standard or express, not 'fast'" in err.value.message
    assert 'stack_mode = "express"' in (err.value.next_step or "")
    data["environments"]["dev"] |= {"stack_mode": "express", "protected": True}
    with pytest.raises(ConfigError) as err:
        parse_config(data, Path("deploy.toml"))
    assert "a protected environment updates its stacks in standard mode" in err.value.message
    assert 'remove stack_mode = "express" from [environments.dev]' in (err.value.next_step or "")


def test_the_service_size_is_unset_unless_set_and_checked_against_fargate_s_sizes() -> None:
    """[environments.NAME] desired_count, task_cpu and task_memory: unset, the CDK app's defaults (1 task of 256 and
    512); a count under 1, a CPU Fargate does not have or a memory that does not go with the CPU is refused (exit 2),
    naming the key and the valid choices."""
    dev = parse_config(raw(), Path("deploy.toml")).environments["dev"]
    assert (dev.desired_count, dev.task_cpu, dev.task_memory) == (None, None, None)
    data = raw()
    data["environments"]["dev"] |= {"desired_count": 3, "task_cpu": 1024, "task_memory": 2048}
    dev = parse_config(data, Path("deploy.toml")).environments["dev"]
    assert (dev.desired_count, dev.task_cpu, dev.task_memory) == (3, 1024, 2048)
    for cpu, memory in ((256, 2048), (512, 4096), (4096, 30720), (8192, 61440), (16384, 122880), (2048, 5120)):
        data["environments"]["dev"] |= {"task_cpu": cpu, "task_memory": memory}
        assert parse_config(data, Path("deploy.toml")).environments["dev"].task_memory == memory
    refused = [
        ({"desired_count": 0}, "environments.dev.desired_count must be 1 or more tasks, not 0", "1 or more"),
        ({"task_cpu": 300}, "environments.dev.task_cpu = 300 is not a Fargate task's CPU", "256, 512, 1024, 2048"),
        (
            {"task_cpu": 1024, "task_memory": 1024},
            "environments.dev.task_memory = 1024 does not go with task_cpu = 1024 on Fargate",
            "with task_cpu = 1024, task_memory is 2048 to 8192 in steps of 1024 (MiB)",
        ),
        (
            {"task_cpu": 512},
            "task_memory = 512 (the default) does not go with task_cpu = 512 on Fargate",
            "task_memory is 1024 to 4096 in steps of 1024",
        ),
        (
            {"task_memory": 4096},
            "task_memory = 4096 does not go with task_cpu = 256 (the default) on Fargate",
            "with task_cpu = 256, task_memory is 512, 1024 or 2048 (MiB)",
        ),
        ({"task_cpu": 8192, "task_memory": 18432}, "does not go with task_cpu = 8192", "16384 to 61440 in steps"),
        ({"task_cpu": 16384, "task_memory": 36864}, "does not go with", "32768 to 122880 in steps of 8192"),
    ]
    for values, said, choices in refused:
        data = raw()
        data["environments"]["dev"] |= values
        with pytest.raises(ConfigError) as err:
            parse_config(data, Path("deploy.toml"))
        assert said in err.value.message and err.value.exit_code == 2
        assert choices in (err.value.next_step or "") and "[environments.dev]" in (err.value.next_step or "")
    data = raw()
    data["environments"]["dev"]["desired_count"] = 2.5
    with pytest.raises(ConfigError, match="desired_count' must be int"):
        parse_config(data, Path("deploy.toml"))


def test_a_pattern_s_service_size_is_checked_and_given_to_each_environment_it_makes() -> None:
    data = personal()
    data["environments"]["dev-*"] |= {"desired_count": 2, "task_cpu": 512, "task_memory": 1024}
    alice = parse_config(data, Path("deploy.toml")).environment("dev-alice")
    assert (alice.desired_count, alice.task_cpu, alice.task_memory) == (2, 512, 1024)
    data["environments"]["dev-*"]["task_memory"] = 512
    with pytest.raises(ConfigError) as err:
        parse_config(data, Path("deploy.toml"))
    assert 'environments."dev-*".task_memory = 512 does not go with task_cpu = 512' in err.value.message
    assert '[environments."dev-*"]' in (err.value.next_step or "")


def test_a_lock_wait_is_none_unless_set_and_the_environment_variable_overrides_it() -> None:
    data = raw()
    data["environments"]["dev"]["lock_wait"] = 300
    config = parse_config(data, Path("deploy.toml"))
    dev, sandbox = config.environment("dev"), config.environment("sandbox")
    assert (dev.lock_wait, sandbox.lock_wait) == (300.0, 0.0)
    assert lock.wait_seconds(dev, {}) == 300.0 and lock.wait_seconds(sandbox, {lock.WAIT_ENV: " "}) == 0.0
    for text, seconds in (("600", 600.0), ("90s", 90.0), ("15m", 900.0), ("1h", 3600.0), ("0", 0.0)):
        assert lock.wait_seconds(dev, {lock.WAIT_ENV: text}) == seconds
    with pytest.raises(UsageError, match="DEPLOYKIT_LOCK_WAIT='5 minutes' is not a duration"):
        lock.wait_seconds(dev, {lock.WAIT_ENV: "5 minutes"})
    data["environments"]["dev"]["lock_wait"] = -1
    with pytest.raises(ConfigError, match=r"environments\.dev\.lock_wait must be 0 \(refused at once\) or more"):
        parse_config(data, Path("deploy.toml"))


def test_unknown_environment_lists_the_known_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DEPLOYKIT_ENV", raising=False)
    config = parse_config(raw(), Path("deploy.toml"))
    with pytest.raises(ConfigError) as err:
        config.environment("staging")
    assert "unknown environment 'staging'" in err.value.message
    assert "dev, sandbox" in err.value.message


def test_environment_variable_selects_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    config = parse_config(raw(), Path("deploy.toml"))
    monkeypatch.setenv("DEPLOYKIT_ENV", "dev")
    assert config.environment().name == "dev"
    assert config.environment("sandbox").name == "sandbox"  # --env wins


def test_default_env_must_exist() -> None:
    data = raw()
    data["default_env"] = "qa"
    with pytest.raises(ConfigError, match="default_env = 'qa' names no environment"):
        parse_config(data, Path("deploy.toml"))


def test_a_value_of_the_wrong_kind_names_the_key_and_the_next_step(tmp_path: Path) -> None:
    """Each message names the key; those whose message alone says what to do get the same next step: the file."""
    bad = tmp_path / "deploy.toml"
    text = (REPO / "deploy.toml").read_text()
    assert text.count("\npoll_interval = 0.5\n") == 1  # the sandbox's
    bad.write_text(text.replace("\npoll_interval = 0.5\n", "\npoll_interval = 90\n"))
    with pytest.raises(ConfigError, match=r"sandbox\.poll_interval must be between 0 and 60 seconds") as refused:
        load_config(bad)
    assert refused.value.next_step == f"fix it in {bad} (README, 'deploy.toml', says what each key takes)"


def test_malformed_toml_and_missing_file(tmp_path: Path) -> None:
    bad = tmp_path / "deploy.toml"
    bad.write_text("[environments.sandbox\nregion = 'x'\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad)
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.toml")


def test_toml_past_what_python_reads_and_links_that_loop_are_refused_not_a_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A ValueError (an integer of 5,001 digits), a RecursionError (arrays nested 2,000 deep), a RuntimeError (a link
    loop) escaped as tracebacks, exit 1; a folder named deploy.toml is said as passed over."""
    bad = tmp_path / "deploy.toml"
    bad.write_text("wait_timeout = " + "1" * 5001 + "\n")
    with pytest.raises(ConfigError, match=r"deploy\.toml could not be read: Exceeds the limit \(4300 digits\)"):
        load_config(bad)
    bad.write_text("x = " + "[" * 2000 + "]" * 2000 + "\n")
    with pytest.raises(ConfigError, match=r"deploy\.toml could not be read: nested too deep") as refused:
        load_config(bad)
    assert refused.value.exit_code == 2
    loop = tmp_path / "loop.toml"
    loop.symlink_to(loop)
    monkeypatch.setenv("DEPLOYKIT_CONFIG", str(loop))
    with pytest.raises(ConfigError, match=r"loop\.toml cannot be read: "):
        load_config()
    monkeypatch.delenv("DEPLOYKIT_CONFIG")
    bad.unlink()
    bad.mkdir()
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=r"no deploy\.toml found in .* \(passed over: .*deploy\.toml, no file\)"):
        load_config()


def test_config_is_found_upwards(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "deploy.toml").write_text(SANDBOX_TOML.format(registry="r:1", repository="r", ca_dir=""))
    deep = tmp_path / "a" / "b"
    deep.mkdir(parents=True)
    monkeypatch.chdir(deep)
    monkeypatch.delenv("DEPLOYKIT_CONFIG", raising=False)
    assert load_config().root == tmp_path.resolve()


def test_a_lambda_canary_is_off_unless_set_and_its_values_are_checked() -> None:
    config = parse_config(raw(), Path("deploy.toml"))
    assert not config.environment("dev").lambda_canary.on
    data = raw()
    data["environments"]["dev"]["lambda_canary"] = {"percent": 10, "seconds": 120}
    canary = parse_config(data, Path("deploy.toml")).environment("dev").lambda_canary
    assert (canary.on, canary.percent, canary.seconds, canary.max_error_rate) == (True, 10.0, 120.0, 0.0)
    for bad, message in (
        ({"percent": 100}, r"lambda_canary\.percent must be at least 0 \(no canary\) and under 100, not 100"),
        ({"percent": 10, "seconds": 0}, r"lambda_canary\.seconds must be greater than 0"),
        ({"percent": 10, "max_error_rate": 5}, r"lambda_canary\.max_error_rate must be at least 0 and under 1"),
        ({"percnt": 10}, r"unknown key 'environments\.dev\.lambda_canary\.percnt' \(did you mean 'percent'\?\)"),
        ({"percent": "10%"}, r"'environments\.dev\.lambda_canary\.percent' must be float"),
    ):
        data["environments"]["dev"]["lambda_canary"] = bad
        with pytest.raises(ConfigError, match=message):
            parse_config(data, Path("deploy.toml"))


def test_an_error_watch_is_off_unless_set_and_its_values_are_checked() -> None:
    config = parse_config(raw(), Path("deploy.toml"))
    assert not config.environment("dev").app_error_watch.on
    data = raw()
    data["environments"]["dev"]["app_error_watch"] = {"seconds": 180}
    watch = parse_config(data, Path("deploy.toml")).environment("dev").app_error_watch
    assert (watch.on, watch.seconds, watch.max_error_rate, watch.max_slowdown) == (True, 180.0, 0.01, 0.0)
    data["environments"]["dev"]["app_error_watch"] = {"seconds": 180, "max_slowdown": 1.5}
    assert parse_config(data, Path("deploy.toml")).environment("dev").app_error_watch.max_slowdown == 1.5
    for bad, message in (
        ({"seconds": -1}, r"app_error_watch\.seconds must be at least 0 \(no watch\), not -1"),
        ({"seconds": 120, "max_slowdown": 1}, r"app_error_watch\.max_slowdown must be 0 \(not judged\) or more than 1"),
        ({"seconds": 120, "max_slowdown": float("nan")}, r"max_slowdown' must be a number, not nan"),
        ({"seconds": 120, "max_slowdown": 2, "compare": False}, r"max_slowdown judges a release against the release"),
        ({"seconds": 60, "max_slowdown": 2}, r"max_slowdown needs seconds = 120 at least \(not 60\)"),
        ({"seconds": 60, "max_error_rate": 1}, r"app_error_watch\.max_error_rate must be at least 0 and under 1"),
    ):
        data["environments"]["dev"]["app_error_watch"] = bad
        with pytest.raises(ConfigError, match=message):
            parse_config(data, Path("deploy.toml"))


def test_an_alarm_watch_is_off_unless_alarms_are_named_and_its_values_are_checked() -> None:
    config = parse_config(raw(), Path("deploy.toml"))
    assert not config.environment("dev").alarm_watch.on
    data = raw()
    data["environments"]["dev"]["alarm_watch"] = {"alarms": ["car-rental-5xx"], "seconds": 120}
    watch = parse_config(data, Path("deploy.toml")).environment("dev").alarm_watch
    assert (watch.on, watch.alarms, watch.seconds) == (True, ("car-rental-5xx",), 120.0)
    data["environments"]["dev"]["alarm_watch"] = {"alarms": ["car-rental-5xx"]}
    assert parse_config(data, Path("deploy.toml")).environment("dev").alarm_watch.seconds == 0  # read once
    data["environments"]["dev"]["alarm_watch"] = {"alarms": ["car-rental-dev-*"]}  # every alarm named so
    assert parse_config(data, Path("deploy.toml")).environment("dev").alarm_watch.alarms == ("car-rental-dev-*",)
    for bad, message in (
        ({"alarms": ["a"], "seconds": -1}, r"alarm_watch\.seconds must be from 0 \(read once, after smoke\) to 10800"),
        ({"alarms": ["a"], "seconds": 10801}, r"alarm_watch\.seconds must be from 0 .* not 10801"),
        ({"alarms": [""]}, r"alarm_watch\.alarms: '' is no CloudWatch alarm's name"),
        ({"alarms": ["a" * 256]}, r"alarm_watch\.alarms: 'a{256}' is no CloudWatch alarm's name"),
        ({"alarms": [" a"]}, r"alarm_watch\.alarms: ' a' is no CloudWatch alarm's name"),
        ({"alarms": ["a", "b", "a"]}, r"alarm_watch\.alarms names 'a' twice"),
        ({"alarms": ["car-*-5xx"]}, r"alarm_watch\.alarms: 'car-\*-5xx': a \* stands only at the end of a name"),
        ({"alarms": ["*"]}, r"alarm_watch\.alarms: '\*': a \* stands only at the end"),
        ({"alarms": [f"a{i}" for i in range(101)]}, r"alarm_watch\.alarms names 101 alarms; at most 100"),
        ({"alarms": "car-rental-5xx"}, r"'environments\.dev\.alarm_watch\.alarms' must be a list of strings"),
        ({"alarm": ["a"]}, r"unknown key 'environments\.dev\.alarm_watch\.alarm' \(did you mean 'alarms'\?\)"),
    ):
        data["environments"]["dev"]["alarm_watch"] = bad
        with pytest.raises(ConfigError, match=message):
            parse_config(data, Path("deploy.toml"))


def test_a_patterns_alarm_names_hold_the_environments_name() -> None:
    data = raw()
    data["environments"]["dev-*"] = {
        **{key: "car-rental-{env}" for key in ("cluster", "service", "repository")},
        "region": "eu-west-1",
        "container": "backend",
        "stacks": {role: f"CarRental-{{env}}-{role}" for role in ("registry", "data", "auth", "fargate", "api")},
        "alarm_watch": {"alarms": ["car-rental-{env}-5xx"]},
    }
    alice = parse_config(data, Path("deploy.toml")).environment("dev-alice")
    assert alice.alarm_watch.alarms == ("car-rental-dev-alice-5xx",)


def test_promote_from_names_another_environment_never_in_a_circle() -> None:
    data = raw()
    data["environments"]["prod"] = {**data["environments"]["dev"], "promote_from": "dev"}
    config = parse_config(data, Path("deploy.toml"))
    assert config.environment("prod").promote_from == "dev" and config.environment("dev").promote_from == ""
    data["environments"]["prod"]["promote_from"] = "staging"
    with pytest.raises(ConfigError, match=r"environments\.prod\.promote_from = 'staging' names no environment"):
        parse_config(data, Path("deploy.toml"))
    data["environments"]["prod"]["promote_from"] = "prod"
    with pytest.raises(ConfigError, match="promote_from goes round in a circle: prod → prod"):
        parse_config(data, Path("deploy.toml"))
    data["environments"]["prod"]["promote_from"] = "dev"
    data["environments"]["dev"]["promote_from"] = "prod"
    with pytest.raises(ConfigError, match="promote_from goes round in a circle: dev → prod → dev"):
        parse_config(data, Path("deploy.toml"))


@pytest.mark.parametrize(
    ("name", "endpoint", "on_it"),
    [
        ("sandbox", "http://127.0.0.1:4566", True),
        ("prod", "http://127.0.0.1:4566/", True),  # another environment on the sandbox's AWS: prod beside it
        ("prod", "http://127.0.0.1:4599", False),  # some other local AWS
        ("prod", None, False),  # AWS
        ("dev", "http://localhost:4566", True),  # the same address, by another name
        ("dev", "http://[::1]:4566/", False),  # the sandbox listens on 127.0.0.1 alone
        ("sandbox", "http://127.0.0.1:4599", False),  # the name alone: starting the sandbox would not help it
        ("dev", "http://10.0.0.5:4566", False),
    ],
)
def test_the_tasks_start_the_sandbox_for_it_and_for_an_environment_on_its_endpoint(
    name: str, endpoint: str | None, on_it: bool
) -> None:
    environment = dataclasses.replace(sample_env(), name=name, endpoint_url=endpoint)
    assert tasks.on_the_sandbox(environment, "http://127.0.0.1:4566") is on_it


# -- environments made from a pattern ------------------------------------------------------------------------------


def personal(**changes: object) -> dict:
    """deploy.toml with [environments."dev-*"]: every name of it holds {env}."""
    data = raw()
    body = {
        **data["environments"]["dev"],
        "cluster": "car-rental-{env}",
        "service": "car-rental-{env}",
        "repository": "car-rental-backend-{env}",
        "stacks": {
            role: f"CarRental-{{env}}-{role.capitalize()}" for role in ("registry", "data", "auth", "fargate", "api")
        },
        "endpoints": {"api_url": "https://{ApiId}.example/{env}/"},
    }
    data["environments"]["dev-*"] = {**body, **changes}
    return data


def test_a_pattern_makes_an_environment_per_name_with_its_names_filled_in(monkeypatch: pytest.MonkeyPatch) -> None:
    config = parse_config(personal(), Path("deploy.toml"))
    alice = config.environment("dev-alice")
    assert (alice.name, alice.cluster, alice.service, alice.repository) == (
        "dev-alice",
        "car-rental-dev-alice",
        "car-rental-dev-alice",
        "car-rental-backend-dev-alice",
    )
    assert alice.stacks.registry == "CarRental-dev-alice-Registry" and alice.stacks.api == "CarRental-dev-alice-Api"
    assert alice.endpoints == {"api_url": "https://{ApiId}.example/dev-alice/"}  # the outputs' fields stay
    assert alice.region == "eu-west-1" and config.environment("dev-alice") is alice  # made once per command
    assert config.environment("dev") is config.environments["dev"]  # a plain one wins over a pattern
    monkeypatch.setenv("DEPLOYKIT_ENV", "dev-bob7")
    assert config.environment().cluster == "car-rental-dev-bob7"


@pytest.mark.parametrize("name", ["dev-", "dev-Alice", "dev-a.b", "dev-" + "a" * 21, "prod-alice"])
def test_a_name_no_pattern_makes_is_unknown_naming_the_patterns(name: str) -> None:
    config = parse_config(personal(), Path("deploy.toml"))
    with pytest.raises(ConfigError) as unknown:
        config.environment(name)
    assert unknown.value.message == (
        f"unknown environment {name!r} (deploy.toml defines: dev, sandbox, dev-<name> (from 'dev-*'))"
    )


def test_a_name_two_patterns_make_is_refused() -> None:
    data = personal()
    data["environments"]["*-test"] = {**data["environments"]["dev-*"]}
    config = parse_config(data, Path("deploy.toml"))
    assert config.environment("ci-test").cluster == "car-rental-ci-test"
    with pytest.raises(ConfigError, match=r"environment 'dev-test' matches more than one pattern of deploy\.toml"):
        config.environment("dev-test")


@pytest.mark.parametrize(
    ("changes", "said"),
    [
        ({"cluster": "car-rental"}, "these names would be the same for all of them: cluster"),
        (
            {
                "repository": "r",
                "stacks": {**{r: f"S-{{env}}-{r}" for r in ("data", "auth", "fargate", "api")}, "registry": "Reg"},
            },
            "these names would be the same for all of them: repository, stacks.registry",
        ),
        ({"clustr": "x-{env}"}, "unknown key 'environments.\"dev-*\".clustr' (did you mean 'cluster'?)"),
        ({"account": "123"}, "account must be an AWS account id, 12 digits in quotes"),
        ({"promote_from": "nowhere"}, "promote_from = 'nowhere' names no environment"),
    ],
)
def test_a_pattern_is_checked_as_deploy_toml_is_read(changes: dict, said: str) -> None:
    with pytest.raises(ConfigError) as bad:
        parse_config(personal(**changes), Path("deploy.toml"))
    assert said in bad.value.message and bad.value.exit_code == 2


@pytest.mark.parametrize("pattern", ["dev-**", "dev", "Dev-*", "dev-*-*", "*"])
def test_a_pattern_has_one_star_among_lowercase_letters(pattern: str) -> None:
    data = personal()
    body = data["environments"].pop("dev-*")
    data["environments"][pattern] = body
    if "*" not in pattern:  # a plain name: an environment of its own, where {env} is no placeholder
        with pytest.raises(ConfigError, match=r"cluster = 'car-rental-\{env\}' is not a name it can have"):
            parse_config(data, Path("deploy.toml"))
        return
    with pytest.raises(ConfigError, match="a pattern's name has one \\*"):
        parse_config(data, Path("deploy.toml"))


def test_a_pattern_promoted_from_a_plain_environment() -> None:
    config = parse_config(personal(promote_from="sandbox"), Path("deploy.toml"))
    assert config.environment("dev-alice").promote_from == "sandbox"


def test_the_commented_environments_of_the_repositorys_deploy_toml_are_valid_once_uncommented() -> None:
    """dev, one per developer (dev-*) and prod, as deploy.toml shows them commented out."""
    text = (REPO / "deploy.toml").read_text()
    commented = text[text.index("# [environments.dev]") :]
    uncommented = "\n".join(line[2:] if line.startswith("# ") else line.lstrip("#") for line in commented.splitlines())
    config = parse_config(tomllib.loads(text + "\n" + uncommented), REPO / "deploy.toml")
    assert {"dev", "prod"} <= set(config.environments) and list(config.patterns) == ["dev-*"]
    assert config.environment("prod").image_scan == ImageScan("HIGH", (), 600.0, 7.0)
    prod = config.environment("prod")
    assert (prod.desired_count, prod.task_cpu, prod.task_memory) == (3, 1024, 2048)
    alice = config.environment("dev-alice")
    assert (alice.cluster, alice.stacks.registry, alice.promote_from) == (
        "car-rental-dev-alice",
        "CarRental-dev-alice-Registry",
        "dev",
    )


# -- the team's own stacks ----------------------------------------------------------------------------------------


def with_own_stacks(**names: str) -> dict:
    """deploy.toml whose environments (sandbox and dev) name the stacks ``names`` (role → name) besides the five."""
    data = raw()
    for env in ("sandbox", "dev"):
        data["environments"][env]["stacks"] |= names
    return data


def test_an_environment_names_stacks_of_the_teams_own_after_the_platforms() -> None:
    config = parse_config(with_own_stacks(notifications="Notify", search="Search"), Path("deploy.toml"))
    dev = config.environment("dev")
    assert dev.stacks.own == (("notifications", "Notify"), ("search", "Search"))
    assert list(dev.stacks.roles()) == ["registry", "data", "auth", "fargate", "api", "notifications", "search"]
    assert config.stack_roles == ("registry", "data", "auth", "fargate", "api", "notifications", "search")
    # deployed after the five, one at a time in deploy.toml's order: each may import from any stack before it
    assert dev.stacks.levels() == [
        ("registry", "data", "auth"),
        ("fargate", "api"),
        ("notifications",),
        ("search",),
    ]
    assert dev.stacks.dependencies()["search"] == ("registry", "data", "auth", "fargate", "api", "notifications")
    assert dev.stacks.dependencies()["fargate"] == ("registry", "data", "auth")
    assert parse_config(raw(), Path("deploy.toml")).environment("dev").stacks.own == ()


def test_a_stack_of_the_teams_own_is_a_component_its_module_maps_to() -> None:
    config = parse_config(with_own_stacks(notifications="Notify"), Path("deploy.toml"))
    assert config.changes.match("cdk/stacks/notifications_stack.py", config.stack_roles)[2] == "stack:notifications"
    without = parse_config(raw(), Path("deploy.toml"))
    assert without.changes.match("cdk/stacks/notifications_stack.py", without.stack_roles)[2] == "stacks:shared"
    data = with_own_stacks(notifications="Notify")
    data["changes"] = {"rules": [{"paths": ["infra/queues/**"], "to": "stack:notifications"}]}
    assert parse_config(data, Path("deploy.toml")).changes.rules[0].to == "stack:notifications"
    data = raw()
    data["changes"] = {"rules": [{"paths": ["infra/queues/**"], "to": "stack:notifications"}]}
    with pytest.raises(
        ConfigError, match=r"'notifications' is not a stack role \(registry, data, auth, fargate, api\)"
    ):
        parse_config(data, Path("deploy.toml"))


@pytest.mark.parametrize(
    ("role", "value", "said"),
    [
        ("fargte", "X", "did you mean 'fargate'?"),  # a platform role mistyped is not a stack of its own
        ("Notifications", "X", "a role is lower-case letters, digits and _"),
        ("notifications", 5, "must be str, not int"),
    ],
)
def test_a_stack_role_that_cannot_be_one_is_refused(role: str, value: object, said: str) -> None:
    with pytest.raises(ConfigError) as refused:
        parse_config(with_own_stacks(**{role: value}), Path("deploy.toml"))  # type: ignore[arg-type]
    assert f"'environments.sandbox.stacks.{role}'" in refused.value.message
    assert said in refused.value.message


def test_every_environment_names_the_same_stacks_of_the_teams_own() -> None:
    data = with_own_stacks(notifications="Notify")
    del data["environments"]["dev"]["stacks"]["notifications"]
    with pytest.raises(ConfigError) as refused:
        parse_config(data, Path("deploy.toml"))
    assert refused.value.message == (
        "deploy.toml: [environments.sandbox.stacks] names the stack role 'notifications' and "
        "[environments.dev.stacks] does not: every environment runs the same CDK app, so each names the same stacks"
    )
    assert refused.value.next_step == (
        'add notifications = "<its stack name there>" to [environments.dev.stacks] (or remove it from both)'
    )
    data = with_own_stacks(notifications="Notify", search="Search")
    data["environments"]["dev"]["stacks"]["notifications"] = "Notify2"  # another name: fine; another place, too
    data["environments"]["dev"]["stacks"]["search"] = "Search2"
    data["environments"]["dev"]["stacks"]["registry"] = "Registry2"
    parse_config(data, Path("deploy.toml"))


def test_the_table_that_makes_an_environment_is_named_as_deploy_toml_writes_it() -> None:
    config = parse_config(personal(), Path("deploy.toml"))
    assert config.table_of("dev") == "environments.dev"
    assert config.table_of("dev-alice") == 'environments."dev-*"'
    assert config.table_of("nowhere") == "environments.nowhere"


def test_a_pattern_names_the_teams_own_stacks_too_each_with_its_placeholder() -> None:
    data = personal()
    data = {**data, "environments": {**data["environments"]}}
    for env in ("sandbox", "dev"):
        data["environments"][env]["stacks"]["notifications"] = f"Notify-{env}"
    with pytest.raises(ConfigError, match=r"\[environments.\"dev-\*\".stacks\] does not"):
        parse_config(data, Path("deploy.toml"))
    data["environments"]["dev-*"]["stacks"] = {**data["environments"]["dev-*"]["stacks"], "notifications": "Notify"}
    with pytest.raises(ConfigError, match=r"same for all of them: stacks\.notifications"):
        parse_config(data, Path("deploy.toml"))
    data["environments"]["dev-*"]["stacks"]["notifications"] = "CarRental-{env}-Notify"
    alice = parse_config(data, Path("deploy.toml")).environment("dev-alice")
    assert alice.stacks.roles()["notifications"] == "CarRental-dev-alice-Notify"


def test_two_roles_naming_one_stack_are_refused_the_teams_own_too() -> None:
    with pytest.raises(ConfigError, match=r"data and notifications both name the stack 'CarRentalDataStack'"):
        parse_config(with_own_stacks(notifications="CarRentalDataStack"), Path("deploy.toml"))


TOPIC = "arn:aws:sns:eu-west-1:123456789012:deploy-events"
ROLE = "arn:aws:iam::123456789012:role/deploy/cfn-exec"


@pytest.mark.parametrize(
    ("key", "good", "read", "wrongs", "what"),
    [
        (
            "notification_arns",
            [TOPIC],
            (TOPIC,),
            ("arn:aws:sqs:eu-west-1:123456789012:deploy-events", "deploy-events", "arn:aws:sns:eu-west-1:1:x"),
            "the ARN of an SNS topic (arn:aws:sns:REGION:ACCOUNT:NAME)",
        ),
        (
            "cloudformation_role_arn",
            ROLE,
            ROLE,
            ("cfn-exec", "arn:aws:iam::123456789012:user/cfn-exec", "arn:aws:iam::1234:role/x"),
            "the ARN of an IAM role (arn:aws:iam::ACCOUNT:role/NAME)",
        ),
    ],
)
def test_the_stacks_event_topics_and_service_role_are_unset_unless_set_and_each_an_arn_of_its_kind(
    key: str, good: object, read: object, wrongs: tuple[str, ...], what: str
) -> None:
    """[environments.NAME] notification_arns (a list of SNS topics; [] said too: the topics taken off) and
    cloudformation_role_arn (an IAM role): None unless set, and anything else refused naming the value."""
    assert getattr(parse_config(raw(), Path("deploy.toml")).environments["dev"], key) is None
    data = raw()
    data["environments"]["dev"][key] = good
    assert getattr(parse_config(data, Path("deploy.toml")).environments["dev"], key) == read
    for wrong in wrongs:
        data["environments"]["dev"][key] = [TOPIC, wrong] if isinstance(good, list) else wrong
        with pytest.raises(ConfigError) as err:
            parse_config(data, Path("deploy.toml"))
        assert err.value.message.endswith(f"environments.dev.{key}: {wrong!r} is not {what}")
        assert "[environments.dev]" in (err.value.next_step or "")


def test_an_empty_list_of_topics_is_said_and_one_topic_alone_is_no_list() -> None:
    data = raw()
    data["environments"]["dev"]["notification_arns"] = []  # said: the stacks' topics are taken off
    assert parse_config(data, Path("deploy.toml")).environments["dev"].notification_arns == ()
    data["environments"]["dev"]["notification_arns"] = TOPIC
    with pytest.raises(ConfigError, match="must be a list of strings"):
        parse_config(data, Path("deploy.toml"))


def test_an_environment_s_context_is_its_own_and_never_one_of_deploykit_s_keys() -> None:
    """[environments.NAME.context]: any JSON value by key (a pattern's with {env} filled in); a key deploykit gives
    the app itself, or a TOML date, is refused naming where it belongs."""
    data = raw()
    data["environments"]["dev"]["context"] = {"audit_retention_days": 30, "audit": {"topics": ["a", "b"]}}
    dev = parse_config(data, Path("deploy.toml")).environments["dev"]
    assert dev.context == {"audit_retention_days": 30, "audit": {"topics": ["a", "b"]}}
    assert parse_config(raw(), Path("deploy.toml")).environments["dev"].context == {}
    data["environments"]["dev"]["context"] = {"region": "eu-central-1"}
    with pytest.raises(ConfigError) as err:
        parse_config(data, Path("deploy.toml"))
    assert err.value.message.endswith(
        "environments.dev.context.region is a key deploykit gives the CDK app itself, from region"
    )
    assert err.value.next_step == "set it there, or give your value another key in [environments.dev.context]"
    data["environments"]["dev"]["context"] = {"audit": {"since": tomllib.loads("d = 2026-01-01")["d"]}}
    with pytest.raises(ConfigError, match=r"context\.audit holds a date \(datetime\.date\(2026, 1, 1\)\)"):
        parse_config(data, Path("deploy.toml"))
    data["environments"]["dev"]["context"] = "audit_retention_days=30"
    with pytest.raises(ConfigError, match="must be a table"):
        parse_config(data, Path("deploy.toml"))


def test_a_pattern_s_context_names_each_environment_it_makes() -> None:
    data = raw()
    pattern = {**data["environments"]["dev"], "context": {"audit_parameter": "/audit/{env}/days"}}
    pattern |= {key: f"{data['environments']['dev'][key]}-{{env}}" for key in ("cluster", "service", "repository")}
    pattern["stacks"] = {role: f"{name}-{{env}}" for role, name in data["environments"]["dev"]["stacks"].items()}
    data["environments"]["zz-*"] = pattern
    made = parse_config(data, Path("deploy.toml")).environment("zz-alice")
    assert made.context == {"audit_parameter": "/audit/zz-alice/days"}
