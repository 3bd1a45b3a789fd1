"""deploy.toml values that would load and then do something else than the file reads as: each refused as the file is
read (ConfigError, exit 2) naming the key, the value and the table it is in."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

import tasks
from deploykit.config import load_config, parse_config
from deploykit.endpoints import check_overrides
from deploykit.errors import ConfigError
from deploykit.plugins import check_tables, installed_names
from plugins.notify import Notifier
from sandbox.settings import SettingsError, load_settings
from tests.unit.test_config import personal, raw

HERE = Path("deploy.toml")


def refused(data: dict[str, Any]) -> ConfigError:
    with pytest.raises(ConfigError) as raised:
        parse_config(data, HERE)
    assert raised.value.exit_code == 2
    return raised.value


def with_dev(**changes: Any) -> dict[str, Any]:
    data = raw()
    data["environments"]["dev"].update(changes)
    return data


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
@pytest.mark.parametrize(
    "where",
    [("environments", "dev", "wait_timeout"), ("build", "pull_after_days"), ("release", "timeout")],
)
def test_nan_and_inf_are_no_number_of_seconds_or_days(where: tuple[str, ...], value: float) -> None:
    data = raw()
    table = data
    for key in where[:-1]:
        table = table.setdefault(key, {})
    table[where[-1]] = value
    error = refused(data)
    assert f"'{'.'.join(where)}' must be a number, not {value!r}" in error.message


@pytest.mark.parametrize(
    ("where", "value", "said"),
    [
        (("environments", "dev", "connect_timeout"), 1e20, "connect_timeout must be at most 3.16224e+07 seconds"),
        (("environments", "dev", "lock_wait"), 1e9, "lock_wait must be at most"),
        (("build", "pull_after_days"), 1e10, "build.pull_after_days must be from 0 (never by age) to 3650"),
        (("environments", "dev", "image_scan", "rescan_after_days"), 1e10, "rescan_after_days must be from 0"),
        (("environments", "dev", "context", "ratio"), float("nan"), "context.ratio holds a number JSON has no such"),
        (("environments", "dev", "context", "max"), float("inf"), "the CDK app's context (JSON) cannot carry"),
    ],
)
def test_a_number_no_clock_or_json_can_hold_is_refused(where: tuple[str, ...], value: float, said: str) -> None:
    """1e20 seconds to connect failed every AWS call (time_t), 1e10 days crashed a build (OverflowError), nan in the
    CDK app's context failed its synthesis (node's JSON.parse): refused as the file is read."""
    data = raw()
    table = data
    for key in where[:-1]:
        table = table.setdefault(key, {})
    table[where[-1]] = value
    assert said in refused(data).message


def test_a_relative_extra_ca_dir_is_deploy_tomls_folders_whatever_the_shells() -> None:
    data = raw()
    data.setdefault("build", {})["extra_ca_dir"] = "certs"
    assert parse_config(data, Path("/repo/deploy.toml")).build.extra_ca_dir == "/repo/certs"
    data["build"]["extra_ca_dir"] = ""
    assert parse_config(data, Path("/repo/deploy.toml")).build.extra_ca_dir == ""  # none


def test_a_features_table_may_hold_settings_for_when_it_is_turned_on() -> None:
    """inv scan reads [image_scan]'s ignore with no gate; --canary and --watch-errors turn the others on."""
    dev = parse_config(
        with_dev(
            image_scan={"ignore": ["CVE-2023-4911"]}, lambda_canary={"compare": False}, app_error_watch={"seconds": 0}
        ),
        HERE,
    ).environment("dev")
    assert dev.image_scan.ignore == ("CVE-2023-4911",) and not dev.image_scan.on and not dev.lambda_canary.on
    assert "did you mean 'severity'" in refused(with_dev(image_scan={"severty": "HIGH"})).message


@pytest.mark.parametrize(
    ("changes", "said"),
    [
        ({"region": "eu-west1"}, "region = 'eu-west1' is not an AWS region"),
        ({"region": "eu-west-1 "}, "is not an AWS region"),
        ({"cluster": ""}, "cluster = '' is not a name it can have"),
        ({"repository": "Car_Rental Backend"}, "repository = 'Car_Rental Backend' is not a name ECR takes"),
        ({"repository": "car-backend/"}, "repository = 'car-backend/' is not a name ECR takes"),
        ({"repository": "a..b"}, "repository = 'a..b' is not a name ECR takes"),
        ({"cluster": "car.rental"}, "cluster = 'car.rental' is not a name it can have: lower-case letters, digits"),
        ({"service": "car/rental"}, "service = 'car/rental' is not a name it can have"),
        ({"endpoint_url": ""}, "endpoint_url must be an http:// or https:// address with a host, not ''"),
        ({"endpoint_url": "http://"}, "with a host, not 'http://'"),
        ({"endpoint_url": "http://127.0.0.1:port"}, "with a host"),
        ({"registry": "http://127.0.0.1:5000"}, "registry = 'http://127.0.0.1:5000' is not a registry host"),
        ({"base_image": " "}, "environments.dev.base_image is empty"),
        ({"max_attempts": 21}, "max_attempts must be from 0 (no retry) to 20 retries, not 21"),
        ({"account": "١١١١١١١١١١١١"}, "account must be an AWS account id"),
        ({"stacks": {"data": "CarRentalRegistryStack"}}, "registry and data both name the stack"),
        ({"stacks": {"api": "CarRental_Api Stack"}}, "stacks.api = 'CarRental_Api Stack' is not a CloudFormation"),
    ],
)
def test_a_name_or_value_aws_or_the_cdk_app_would_refuse_is_refused_as_the_file_is_read(
    changes: dict[str, Any], said: str
) -> None:
    if "stacks" in changes:
        changes = {"stacks": {**raw()["environments"]["dev"]["stacks"], **changes["stacks"]}}
    error = refused(with_dev(**changes))
    assert said in error.message and error.message.startswith("deploy.toml: environments.dev")


def test_no_retry_is_a_number_of_retries() -> None:
    assert parse_config(with_dev(max_attempts=0), HERE).environment("dev").max_attempts == 0


def test_two_environments_with_a_stack_in_common_in_one_place_are_one_platform() -> None:
    data = raw()
    data["environments"]["staging"] = copy.deepcopy(data["environments"]["sandbox"])
    error = refused(data)
    assert "environments sandbox and staging both have the stack" in error.message
    assert "(http://127.0.0.1:4566, us-east-1)" in error.message
    for written in ("http://localhost:4566", "http://127.0.0.1:4566/", "HTTP://LOCALHOST:4566"):  # the same place
        data["environments"]["staging"]["endpoint_url"] = written
        assert "environments sandbox and staging both have the stack" in refused(data).message
    # one account, the same region and stack names: the same
    data = raw()
    data["environments"]["dev"]["account"] = "210987654321"
    data["environments"]["prod"] = {**copy.deepcopy(data["environments"]["dev"]), "protected": True}
    assert "environments dev and prod both have the stack" in refused(data).message
    # one profile, whatever else either names
    data["environments"]["dev"]["profile"] = "car-rental"
    data["environments"]["prod"].update(profile="car-rental", account="222222222222")
    assert "(profile car-rental, eu-west-1)" in refused(data).message
    # another region, or no account, profile or endpoint named (the shell's or CI job's credentials): not compared
    data["environments"]["prod"]["region"] = "eu-central-1"
    parse_config(data, HERE)
    data = raw()
    data["environments"]["prod"] = copy.deepcopy(data["environments"]["dev"])
    parse_config(data, HERE)


def test_rules_that_would_deploy_nothing_or_never_match_are_refused() -> None:
    data = raw()
    data["changes"] = {"rules": []}
    assert "changes.rules is empty: no change would deploy anything" in refused(data).message
    data["changes"] = {"rules": [{"paths": [" backend/**"], "to": "app"}]}
    assert "begins or ends with a space" in refused(data).message
    data["changes"] = {"rules": [{"paths": ["**"], "to": "none"}, {"paths": ["backend/**"], "to": "app"}]}
    error = refused(data)
    assert 'takes every path ("**"), so the 1 rule(s) after it never match' in error.message
    data["changes"]["rules"].reverse()  # last: what no rule before it takes
    parse_config(data, HERE)


@pytest.mark.parametrize("name", ["../../x", "my prod", ".hidden"])
def test_an_environment_name_that_cannot_name_a_folder_is_refused(name: str) -> None:
    data = raw()
    data["environments"][name] = data["environments"].pop("dev")
    assert "an environment's name is letters, digits" in refused(data).message


@pytest.mark.parametrize(
    ("key", "value", "said"),
    [
        ("context", "", "build.context = '' is empty"),
        ("dockerfile", " Dockerfile", "build.dockerfile = ' Dockerfile' is padded with spaces"),
        ("base_image", "", "build.base_image = '' is empty"),
    ],
)
def test_an_empty_build_setting_is_refused(key: str, value: str, said: str) -> None:
    data = raw()
    data.setdefault("build", {})[key] = value
    assert said in refused(data).message
    data = raw()
    data.setdefault("build", {})["base"] = {"packages": ["python3", ""]}
    assert "build.base.packages must list" in refused(data).message


def test_an_error_in_a_pattern_names_the_patterns_table_not_its_sample() -> None:
    error = refused(personal(promote_from="{env}"))
    assert 'environments."dev-*".promote_from goes round in a circle' in error.message
    error = refused(personal(wait_timeout=-1))
    assert 'environments."dev-*".wait_timeout must be greater than 0' in error.message
    error = refused(personal(lambda_canary={"percent": 200}))  # the next step too
    assert 'environments."dev-*".lambda_canary.percent' in error.message
    assert error.next_step == 'fix [environments."dev-*".lambda_canary]'
    with pytest.raises(ConfigError) as raised:
        check_overrides({"alb_ur": "x"}, "dev-*", 'environments."dev-*"')
    assert raised.value.next_step == 'fix [environments."dev-*".endpoints] in deploy.toml'
    # a plain environment of the sample's name does not hide the pattern's
    data = personal(promote_from="nowhere")
    data["environments"]["dev-x"] = {**data["environments"]["dev"]}
    data["environments"]["dev-x"].update(
        cluster="c-x",
        service="s-x",
        repository="r-x",
        stacks={r: f"X-{r}" for r in data["environments"]["dev"]["stacks"]},
    )
    assert "promote_from = 'nowhere' names no environment" in refused(data).message


@pytest.mark.parametrize("start", ["Fridge 15:00", "Fr 15:00", "Mondays 08:00", "Wedding 09:00"])
def test_a_freeze_window_names_a_day_whole_or_by_its_three_letters(start: str) -> None:
    window = {"start": start, "end": "Mon 08:00"}
    assert "does not start with a day of the week" in refused(with_dev(freeze_windows=[window])).message
    for day in ("Friday 15:00", "fri 15:00", "Thurs 18:00", "Tues 09:00", "Weds 09:00"):
        parse_config(with_dev(freeze_windows=[{"start": day, "end": "Monday 08:00"}]), HERE)


def test_a_file_that_cannot_be_read_as_utf8_toml_is_named(tmp_path: Path) -> None:
    text = (Path(__file__).resolve().parents[2] / "deploy.toml").read_text()
    latin = tmp_path / "latin.toml"
    latin.write_bytes(b"# caf\xe9 (Latin-1)\n" + text.encode())
    with pytest.raises(ConfigError, match=r"is not UTF-8 text: byte 0xe9 on line 1") as raised:
        load_config(latin)
    assert "save latin.toml as UTF-8" in (raised.value.next_step or "")
    with pytest.raises(ConfigError, match="is a folder, not a file"):
        load_config(tmp_path)
    marked = tmp_path / "deploy.toml"
    marked.write_bytes(b"\xef\xbb\xbf" + text.encode())  # a byte order mark: passed over, by the sandbox too
    assert load_config(marked).default_env == "sandbox"
    assert load_settings(marked).aws_port == 4566


@pytest.mark.parametrize(
    ("line", "said"),
    [
        ('listener_ports = { 80 = "abc" }', "listener_ports must be a table of port = port"),
        ("listener_ports = { http = 8080 }", "listener_ports must be a table of port = port"),
        ("listener_ports = { 80 = true }", "listener_ports must be a table of port = port"),
        ('tick = "fast"', "tick must be a number of seconds"),
        ("tick = 0", "tick must be a number of seconds"),
        ("tick = nan", "tick must be a number of seconds"),
        ("api_port = 70000", "api_port must be a port"),
        ("api_port = 5000", "sandbox.registry_port and sandbox.api_port are both port 5000"),
        ("api_port = 20001", "api_port = 20001 is within task_ports"),
        ("task_ports = [20999, 20000]", "the first port comes after the last"),
        ("circuit_breaker_threshold = 0", "circuit_breaker_threshold must be a whole number, 1 or more"),
        (
            "provisioned_concurrency_seconds = -1",
            "provisioned_concurrency_seconds must be a number of seconds, 0 to 600",
        ),
        ('provisioned_concurrency_seconds = "slow"', "provisioned_concurrency_seconds must be a number of seconds"),
        ("provisioned_concurrency_seconds = nan", "provisioned_concurrency_seconds must be a number of seconds"),
        ("provisioned_concurrency_seconds = true", "provisioned_concurrency_seconds must be a number of seconds"),
    ],
)
def test_the_sandbox_table_refuses_what_it_cannot_serve(tmp_path: Path, line: str, said: str) -> None:
    toml = tmp_path / "deploy.toml"
    toml.write_text(f'[environments.sandbox]\nendpoint_url = "http://127.0.0.1:4566"\n\n[sandbox]\n{line}\n')
    with pytest.raises(SettingsError, match=said.replace("(", r"\(").replace(")", r"\)")):
        load_settings(toml)


def test_the_sandbox_ports_changed_alone_are_refused_naming_the_urls_that_name_the_old_ones(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The README's advice for a second checkout: ports of its own in [sandbox]. Changed there alone, the sandbox
    environment's URLs named the first checkout's sandbox, and every command talked to it without a word (the sandbox
    of this checkout never started: its endpoint was not the environment's). Now deploy.toml is refused, exit 2."""
    text = (Path(__file__).resolve().parents[2] / "deploy.toml").read_text()
    toml = tmp_path / "deploy.toml"
    moved = text.replace("aws_port = 4566", "aws_port = 4666").replace("api_port = 4567", "api_port = 4667")
    toml.write_text(
        moved.replace("registry_port = 5000", "registry_port = 5100").replace("{ 80 = 8080 }", "{ 80 = 8180 }")
    )
    with pytest.raises(SettingsError) as raised:
        load_settings(toml)
    message = str(raised.value)
    assert "environments.sandbox names ports on this machine that the sandbox of [sandbox] does not listen on: " in (
        message
    )
    assert "endpoint_url = 'http://127.0.0.1:4566' (port 4566; [sandbox] aws_port: 4666)" in message
    assert "endpoints.alb_url = 'http://127.0.0.1:8080' (port 8080; [sandbox] listener_ports: 8180)" in message
    assert "endpoints.api_url = 'http://127.0.0.1:4567/restapis/{ApiId}/{ApiStageName}/_user_request_/' (port 4567" in (
        message
    )
    assert "endpoints.jwks_url = 'http://127.0.0.1:4566/{UserPoolId}/.well-known/jwks.json' (port 4566;" in message
    assert raised.value.next_step is not None
    assert raised.value.next_step.startswith(
        "give [environments.sandbox] the ports of [sandbox] (endpoint_url = 'http://127.0.0.1:4666', "
    )
    monkeypatch.setenv("DEPLOYKIT_CONFIG", str(toml))
    with pytest.raises(ConfigError) as refused:
        tasks._check_config()  # before any task: exit 2
    assert refused.value.exit_code == 2 and (refused.value.next_step or "").startswith("give [environments.sandbox]")
    # the URLs moved with it: accepted; so is the registry straight to the distribution registry
    agreed = moved.replace("127.0.0.1:4566", "127.0.0.1:4666").replace("127.0.0.1:4567", "127.0.0.1:4667")
    agreed = agreed.replace(
        'endpoint_url = "http://127.0.0.1:4666"\n',
        'endpoint_url = "http://127.0.0.1:4666"\nregistry = "localhost:5001"\n',
        1,
    )
    toml.write_text(agreed)
    assert load_settings(toml).aws_port == 4666
    # a plain registry of one's own on this machine, the sandbox's ports otherwise agreed: not the sandbox's
    toml.write_text(agreed.replace('registry = "localhost:5001"', 'registry = "localhost:5050"'))
    assert load_settings(toml).aws_port == 4666


def test_environments_that_point_elsewhere_are_not_the_sandboxs(tmp_path: Path) -> None:
    """Another local AWS on its own port (a prod on a LocalStack), AWS itself, and an environment without a local
    endpoint keep their URLs; one on the sandbox's endpoint (prod beside the sandbox) must name its other ports too."""
    toml = tmp_path / "deploy.toml"
    toml.write_text(
        '[environments.sandbox]\nendpoint_url = "http://127.0.0.1:4566"\n\n'
        '[environments.localstack]\nendpoint_url = "http://localhost:4599"\nregistry = "localhost:4510"\n'
        '[environments.localstack.endpoints]\napi_url = "http://localhost:4599/restapis/x/"\n\n'
        '[environments.aws]\nregion = "eu-west-1"\n[environments.aws.endpoints]\nalb_url = "http://127.0.0.1:9999"\n\n'
        '[environments.prod]\nendpoint_url = "http://localhost:4566"\n'
        '[environments.prod.endpoints]\nalb_url = "http://127.0.0.1:8081"\n'
    )
    assert load_settings(toml).aws_port == 4566  # prod's load balancer: the next free port, its own
    toml.write_text(toml.read_text() + 'jwks_url = "http://127.0.0.1:4666/{UserPoolId}/.well-known/jwks.json"\n')
    with pytest.raises(SettingsError, match=r"environments.prod names ports .*: endpoints.jwks_url = "):
        load_settings(toml)


def test_a_plugin_table_for_no_plugin_installed_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert "notify" in installed_names({}) and "blocked_one" in installed_names(
        {"DEPLOYKIT_BLOCK_PLUGINS": "blocked_one"}
    )
    text = (Path(__file__).resolve().parents[2] / "deploy.toml").read_text()
    toml = tmp_path / "deploy.toml"
    toml.write_text(text + '\n[plugins.notfy]\nwebhook_env = "DEPLOYKIT_CHAT_WEBHOOK"\n')
    config = load_config(toml)
    with pytest.raises(ConfigError, match=r"\[plugins.notfy\] is for no plugin installed here \(did you mean "
                       r"\[plugins.notify\]\?\)"):  # fmt: skip
        check_tables(config, installed_names({}))
    with pytest.raises(ConfigError) as raised:
        check_tables(config, installed_names({}))
    assert "DEPLOYKIT_BLOCK_PLUGINS=notfy" in (raised.value.next_step or "")  # a CI job without the team's plugin
    check_tables(config, ["notfy"])  # one the command was given (a test's)
    check_tables(config, installed_names({"DEPLOYKIT_BLOCK_PLUGINS": "notfy"}))
    monkeypatch.setenv("DEPLOYKIT_CONFIG", str(toml))
    with pytest.raises(ConfigError, match="is for no plugin installed here"):
        tasks._check_config()  # before any task: a dry run or inv diff too


def test_an_endpoint_override_of_no_endpoint_or_a_broken_template_is_refused_before_any_task(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(ConfigError, match=r"unknown endpoint override\(s\) for environment 'dev': alb_ur"):
        check_overrides({"alb_ur": "http://x"}, "dev")
    with pytest.raises(ConfigError, match=r"alb_url = '\{ApiID' of environment 'dev' is not a valid template"):
        check_overrides({"alb_url": "{ApiID"}, "dev")
    with pytest.raises(ConfigError, match=r"\{0\} is not a field"):
        check_overrides({"alb_url": "http://{0}/"}, "dev")
    check_overrides({"alb_url": "http://{ApiId}.{env}/{{literal}}", "functions.login_handler": "f"}, "dev")
    text = (Path(__file__).resolve().parents[2] / "deploy.toml").read_text()
    toml = tmp_path / "deploy.toml"
    toml.write_text(
        text.replace("[environments.sandbox.endpoints]\n", '[environments.sandbox.endpoints]\nalb_ur = "x"\n')
    )
    monkeypatch.setenv("DEPLOYKIT_CONFIG", str(toml))
    with pytest.raises(ConfigError, match="unknown endpoint override"):
        tasks._check_config()


def test_a_webhook_written_where_its_variables_name_goes_is_refused_without_echoing_it() -> None:
    data = raw()
    data["plugins"] = {"notify": {"webhook_env": "https://hooks.slack.com/services/T000/B000/XXXX"}}
    config = parse_config(data, HERE)
    with pytest.raises(ConfigError) as raised:
        Notifier().deploykit_configure(config)
    assert "webhook_env = 'https://hook...' is not the name of an environment variable" in raised.value.message
    assert "XXXX" not in raised.value.message + (raised.value.next_step or "")
    data["plugins"] = {"notify": {"webhook_env": "DEPLOYKIT_CHAT_WEBHOOK", "on": [["finished"]]}}
    with pytest.raises(ConfigError, match="on must be a list of"):
        Notifier().deploykit_configure(parse_config(data, HERE))
