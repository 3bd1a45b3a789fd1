"""``inv alarms`` (deploykit.commands.alarms) against moto's CloudWatch: the alarm watch's alarms as CloudWatch has
them, and ``--wait`` until none is in ALARM.

CloudWatch's evaluation is played by the clock, as in test_watch_alarms_moto: on a given sleep an alarm's state is
set (SetAlarmState), as CloudWatch would set it on its metric.
"""

from __future__ import annotations

import io
import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from botocore.stub import Stubber

from deploykit import commands
from deploykit.aws import AwsFactory
from deploykit.clock import FakeClock
from deploykit.errors import StepFailed, UsageError
from tests.functional.conftest import moto_runtime
from tests.functional.test_watch_alarms_moto import NAMES, Evaluating, put_alarm, set_state


def watching(project: Path, *names: str) -> None:
    """The test project's dev environment judges deploys by the alarms ``names``."""
    toml = project / "deploy.toml"
    listed = ", ".join(f'"{name}"' for name in names)
    toml.write_text(toml.read_text() + f"\n[environments.dev.alarm_watch]\nalarms = [{listed}]\n")


@pytest.fixture
def two_alarms(project: Path, factory: AwsFactory) -> None:
    for name in NAMES:
        put_alarm(factory, name)
    watching(project, *NAMES)


def test_the_alarms_are_shown_in_deploy_tomls_order_with_their_state_since_when_and_why(
    project: Path, factory: AwsFactory
) -> None:
    """A name's alarm, a start's alarms by their names, and a name CloudWatch does not have, where deploy.toml has
    it; --json holds the same rows; one in ALARM is pointed at --wait, with a time its periods need."""
    for name in (*NAMES, "other-5xx"):
        put_alarm(factory, name)
    set_state(factory, "car-rental-latency", "ALARM", "Threshold Crossed: 1 datapoint [12.0] was >= 5.0")
    watching(project, "other-5xx", "car-rental-*", "car-rental-typo")
    out = io.StringIO()
    runtime = moto_runtime(project, factory, stdout=out, clock=Evaluating())
    waited = commands.alarms(env="dev", as_json=True, runtime=runtime)
    assert not waited.clear and runtime.clock.sleeps == []  # type: ignore[attr-defined]
    document = json.loads(out.getvalue())
    assert (document["env"], document["clear"], document["waited"]) == ("dev", False, None)
    assert [(a["name"], a["state"], a["kind"]) for a in document["alarms"]] == [
        ("other-5xx", "OK", "metric"),
        ("car-rental-5xx", "OK", "metric"),
        ("car-rental-latency", "ALARM", "metric"),
        ("car-rental-typo", "MISSING", ""),
    ]
    latency = document["alarms"][2]
    assert latency["reason"] == "Threshold Crossed: 1 datapoint [12.0] was >= 5.0" and latency["since"].endswith("Z")
    assert document["alarms"][3]["reason"] == "not in CloudWatch (eu-west-1)"
    said = runtime.stderr.getvalue()  # type: ignore[attr-defined]
    assert said.startswith("Alarms of dev ([environments.dev.alarm_watch])\n")
    table = said.splitlines()
    assert [line.split()[0] for line in table[3:7]] == ["other-5xx", "car-rental-5xx", "🔔", "car-rental-typo"]
    assert " ago)" in table[5]
    # its period (60s) and one evaluation period, and AWS's minute late: 2 minutes, twice
    assert said.endswith("\n🔔 1 in ALARM: to wait until none is, inv alarms --env dev --wait 4m\n")


def test_wait_reads_until_none_is_in_alarm_and_says_each_that_left_it(
    project: Path, factory: AwsFactory, two_alarms: None
) -> None:
    set_state(factory, NAMES[0], "ALARM")
    set_state(factory, NAMES[1], "ALARM")
    clock = Evaluating(
        [lambda: set_state(factory, NAMES[1], "OK", "back"), lambda: None, lambda: set_state(factory, NAMES[0], "OK")]
    )
    out = io.StringIO()
    runtime = moto_runtime(project, factory, stdout=out, clock=clock)
    waited = commands.alarms(env="dev", wait="10m", as_json=True, runtime=runtime)
    assert waited.clear and waited.seconds == 15.0 and clock.sleeps == [5.0, 5.0, 5.0]  # dev's poll: 5 s
    said = runtime.stderr.getvalue()  # type: ignore[attr-defined]
    assert f"✅ {NAMES[1]}: OK at " in said and f"✅ {NAMES[0]}: OK at " in said
    assert said.index(f"✅ {NAMES[1]}") < said.index(f"✅ {NAMES[0]}")  # as each left ALARM
    assert said.endswith("✅ none in ALARM after 15s\n")
    assert json.loads(out.getvalue())["clear"] is True and json.loads(out.getvalue())["waited"] == 15.0


def test_wait_with_none_in_alarm_reads_once(project: Path, factory: AwsFactory, two_alarms: None) -> None:
    runtime = moto_runtime(project, factory, clock=Evaluating())
    assert commands.alarms(env="dev", wait="10m", runtime=runtime).clear
    assert runtime.clock.sleeps == []  # type: ignore[attr-defined]
    assert runtime.stderr.getvalue().endswith("✅ none in ALARM\n")  # type: ignore[attr-defined]


def test_wait_that_ends_with_an_alarm_still_in_alarm_fails_and_names_it(
    project: Path, factory: AwsFactory, two_alarms: None
) -> None:
    """One still in ALARM when the time is up fails (exit 1), its reason said; one that went to ALARM meanwhile is
    said as it did; --json still says how it ended."""
    set_state(factory, NAMES[0], "ALARM", "Threshold Crossed: 3 datapoints [9.0, 8.0, 7.0]")
    clock = Evaluating([lambda: set_state(factory, NAMES[1], "ALARM", "slow")])
    out = io.StringIO()
    runtime = moto_runtime(project, factory, stdout=out, clock=clock)
    with pytest.raises(StepFailed) as failed:
        commands.alarms(env="dev", wait="12s", as_json=True, runtime=runtime)
    assert failed.value.exit_code == 1 and clock.sleeps == [5.0, 5.0, 2.0]
    assert failed.value.message.startswith(
        f"alarm {NAMES[0]} (and {NAMES[1]}) is still in ALARM after 12s of waiting (since "
    )
    assert failed.value.message.endswith(": Threshold Crossed: 3 datapoints [9.0, 8.0, 7.0]")
    assert f"aws cloudwatch describe-alarms --alarm-names {NAMES[0]}" in str(failed.value.next_step)
    assert "inv alarms --env dev --wait 4m" in str(failed.value.next_step)
    assert f"🔔 {NAMES[1]}: went to ALARM at " in runtime.stderr.getvalue()  # type: ignore[attr-defined]
    assert json.loads(out.getvalue())["clear"] is False


def test_what_cannot_be_shown_is_refused(project: Path, factory: AwsFactory) -> None:
    with pytest.raises(UsageError, match=r"\[environments.dev.alarm_watch\] names no alarms in deploy.toml"):
        commands.alarms(env="dev", runtime=moto_runtime(project, factory))
    with pytest.raises(UsageError, match="--wait 'soon' is not a duration"):  # the malformed option said first
        commands.alarms(env="dev", wait="soon", runtime=moto_runtime(project, factory))
    watching(project, *NAMES)
    with pytest.raises(UsageError, match="--wait 'soon' is not a duration"):
        commands.alarms(env="dev", wait="soon", runtime=moto_runtime(project, factory))


def test_alarms_these_credentials_may_not_read_are_refused_with_the_permission_to_add(
    project: Path, factory: AwsFactory, two_alarms: None
) -> None:
    cloudwatch = factory.client("cloudwatch")
    with Stubber(cloudwatch) as stub:
        stub.add_client_error("describe_alarms", "AccessDenied", "not authorized", http_status_code=403)
        with pytest.raises(UsageError) as refused:
            commands.alarms(env="dev", runtime=moto_runtime(project, factory))
    assert refused.value.exit_code == 2 and refused.value.message.endswith("names: AccessDenied")
    assert "allow cloudwatch:DescribeAlarms" in str(refused.value.next_step)


def test_how_long_ago_counts_in_awss_time_on_a_clock_that_is_off(
    project: Path, factory: AwsFactory, two_alarms: None
) -> None:
    """A clock two minutes ahead would put an alarm that changed just now two minutes back: the answer's Date
    corrects it, and the clock is said."""
    set_state(factory, NAMES[0], "ALARM")
    clock = FakeClock(start=datetime.now(UTC) + timedelta(minutes=2))
    runtime = moto_runtime(project, factory, clock=clock)
    commands.alarms(env="dev", runtime=runtime)
    said = runtime.stderr.getvalue()  # type: ignore[attr-defined]
    ago = re.search(r"UTC \((\d+)s ago\)", said)
    assert ago is not None and int(ago[1]) <= 3, said
    assert re.search(r"this machine's clock is about 1[12]\ds ahead of AWS's: how long ago counts in AWS's time", said)


def test_an_alarm_deleted_during_the_wait_cannot_say_it_left_alarm(
    project: Path, factory: AwsFactory, two_alarms: None
) -> None:
    set_state(factory, NAMES[0], "ALARM")
    clock = Evaluating([lambda: factory.client("cloudwatch").delete_alarms(AlarmNames=[NAMES[0]])])
    runtime = moto_runtime(project, factory, clock=clock)
    with pytest.raises(StepFailed) as failed:
        commands.alarms(env="dev", wait="10m", runtime=runtime)
    assert failed.value.message == (
        f"alarm {NAMES[0]} is gone from CloudWatch (deleted during the wait): it cannot say whether it left ALARM"
    )
    assert clock.sleeps == [5.0]


def test_a_wait_for_alarms_cloudwatch_has_none_of_is_refused(project: Path, factory: AwsFactory) -> None:
    """A typo, another region: none in ALARM would say nothing of them."""
    watching(project, "car-rental-typo", "nope-*")
    with pytest.raises(UsageError) as refused:
        commands.alarms(env="dev", wait="10m", runtime=moto_runtime(project, factory))
    assert refused.value.message == (
        "CloudWatch has none of the alarms [environments.dev.alarm_watch] names in eu-west-1: nothing to wait for"
    )
    shown = moto_runtime(project, factory)
    assert commands.alarms(env="dev", runtime=shown).clear  # shown, each MISSING, without a wait
    assert shown.stderr.getvalue().count("MISSING") == 2  # type: ignore[attr-defined]


def test_an_alarm_that_left_alarm_for_want_of_data_is_said_so(
    project: Path, factory: AwsFactory, two_alarms: None
) -> None:
    set_state(factory, NAMES[0], "ALARM")
    clock = Evaluating([lambda: set_state(factory, NAMES[0], "INSUFFICIENT_DATA", "no data")])
    runtime = moto_runtime(project, factory, clock=clock)
    assert commands.alarms(env="dev", wait="1m", runtime=runtime).clear
    assert runtime.stderr.getvalue().endswith(  # type: ignore[attr-defined]
        f"✅ none in ALARM after 5s ({NAMES[0]} in INSUFFICIENT_DATA: no data to judge by, which a service taking no "
        "request says too)\n"
    )


def test_a_wait_of_0_reads_once_and_one_beyond_3_hours_is_refused(
    project: Path, factory: AwsFactory, two_alarms: None
) -> None:
    set_state(factory, NAMES[1], "ALARM")
    clock = Evaluating()
    with pytest.raises(StepFailed, match=rf"^alarm {NAMES[1]} is still in ALARM after 0s of waiting"):
        commands.alarms(env="dev", wait="0", runtime=moto_runtime(project, factory, clock=clock))
    assert clock.sleeps == []
    with pytest.raises(UsageError, match="--wait 4h is longer than 3 hours, the alarm watch's longest"):
        commands.alarms(env="dev", wait="4h", runtime=moto_runtime(project, factory))
