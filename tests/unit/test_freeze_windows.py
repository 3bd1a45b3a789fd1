"""Freeze windows of deploy.toml: times that come back when deploys are refused (deploykit.config.FreezeWindow)."""

from __future__ import annotations

import tomllib
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from deploykit import freeze
from deploykit.config import Config, FreezeWindow, parse_config
from deploykit.errors import ConfigError
from tests.unit.test_notify_plugin import ENVIRONMENTS

BERLIN = ZoneInfo("Europe/Berlin")
WEEKEND = FreezeWindow("Fri 15:00", "Mon 08:00", "Europe/Berlin", "no deploys over the weekend")


def berlin(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=BERLIN)  # type: ignore[misc]


@pytest.mark.parametrize(
    ("now", "inside"),
    [
        (berlin(2026, 12, 4, 14, 59), False),  # Friday, before
        (berlin(2026, 12, 4, 15, 0), True),
        (berlin(2026, 12, 5, 11, 0), True),  # Saturday
        (berlin(2026, 12, 7, 7, 59), True),  # Monday, just before its end
        (berlin(2026, 12, 7, 8, 0), False),
        (berlin(2026, 12, 2, 12, 0), False),  # Wednesday
    ],
)
def test_a_weekly_window_wraps_over_the_weekend(now: datetime, inside: bool) -> None:
    around = WEEKEND.around(now.astimezone(UTC))  # the clock says UTC; the window is Berlin's
    if not inside:
        assert around is None
        return
    assert around == (berlin(2026, 12, 4, 15, 0), berlin(2026, 12, 7, 8, 0))


def test_a_daily_window_over_midnight_and_one_within_a_day() -> None:
    night = FreezeWindow("18:00", "08:00")
    assert night.around(datetime(2026, 12, 1, 19, 30, tzinfo=UTC)) == (
        datetime(2026, 12, 1, 18, 0, tzinfo=UTC),
        datetime(2026, 12, 2, 8, 0, tzinfo=UTC),
    )
    assert night.around(datetime(2026, 12, 2, 7, 0, tzinfo=UTC)) == (
        datetime(2026, 12, 1, 18, 0, tzinfo=UTC),
        datetime(2026, 12, 2, 8, 0, tzinfo=UTC),
    )
    assert night.around(datetime(2026, 12, 2, 12, 0, tzinfo=UTC)) is None
    lunch = FreezeWindow("Wednesday 12:00", "Wed 13:30")
    assert lunch.around(datetime(2026, 12, 2, 12, 45, 30, tzinfo=UTC)) == (
        datetime(2026, 12, 2, 12, 0, tzinfo=UTC),
        datetime(2026, 12, 2, 13, 30, tzinfo=UTC),
    )
    assert lunch.around(datetime(2026, 12, 9, 13, 30, tzinfo=UTC)) is None


def test_a_window_keeps_its_wall_clock_times_across_a_daylight_saving_change() -> None:
    # Berlin leaves summer time on Sunday 2026-10-25 at 03:00 (back to 02:00)
    overnight = FreezeWindow("Sat 22:00", "Sun 06:00", "Europe/Berlin")
    since, until = overnight.around(datetime(2026, 10, 25, 4, 0, tzinfo=UTC)) or (None, None)  # 05:00 CET
    assert since is not None and until is not None
    assert (since.isoformat(), until.isoformat()) == ("2026-10-24T22:00:00+02:00", "2026-10-25T06:00:00+01:00")


def config(windows: list[dict[str, str]]) -> Config:
    raw = tomllib.loads(ENVIRONMENTS)
    raw["environments"]["dev"]["freeze_windows"] = windows
    return parse_config(raw, Path("deploy.toml"))


def test_deploy_toml_takes_windows_as_a_list_of_tables() -> None:
    env = config([{"start": "Fri 15:00", "end": "Mon 08:00", "timezone": "Europe/Berlin", "reason": "weekend"}])
    assert env.environment("dev").freeze_windows == (
        FreezeWindow("Fri 15:00", "Mon 08:00", "Europe/Berlin", "weekend"),
    )


@pytest.mark.parametrize(
    ("window", "message"),
    [
        ({"start": "Fry 15:00", "end": "Mon 08:00"}, "'Fry 15:00' does not start with a day of the week"),
        ({"start": "Fri 25:00", "end": "Mon 08:00"}, "'Fri 25:00' is not a day and a time"),
        ({"start": "Fri 15:00", "end": "08:00"}, "start and end must both name a day (weekly) or neither"),
        ({"start": "18:00", "end": "18:00"}, "start and end are the same time"),
        ({"start": "18:00", "end": "08:00", "timezone": "Mars/Olympus"}, "timezone 'Mars/Olympus' is not a time"),
        ({"start": "18:00"}, "missing required key 'environments.dev.freeze_windows[0].end'"),
    ],
)
def test_a_window_that_cannot_be_read_is_a_configuration_error(window: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as refused:
        config([window])
    assert message in refused.value.message


def test_inv_freeze_s_freeze_comes_first_then_the_windows() -> None:
    env = config([{"start": "Fri 15:00", "end": "Mon 08:00", "timezone": "Europe/Berlin"}]).environment("dev")
    saturday = datetime(2026, 12, 5, 10, 0, tzinfo=UTC)
    found = freeze.in_force(None, env, saturday)
    assert found is not None and found.window == "Fri 15:00 – Mon 08:00 Europe/Berlin"
    assert found.describe("dev") == (
        "dev is frozen by deploy.toml's freeze window Fri 15:00 – Mon 08:00 Europe/Berlin since "
        "2026-12-04T15:00:00+01:00 until 2026-12-07T08:00:00+01:00: a freeze window of deploy.toml"
    )
    refused = freeze.refusal(found, env, "deploy.auto")
    assert "or change the window (freeze_windows of [environments.dev] in deploy.toml)" in (refused.next_step or "")
    stored = freeze.Freeze("lead", "audit", saturday, None)
    assert freeze.in_force(stored, env, saturday) == stored
    over = freeze.Freeze("lead", "audit", saturday, saturday)
    assert freeze.in_force(over, env, saturday) == found  # inv freeze's is over: the window still holds
    assert freeze.in_force(None, env, datetime(2026, 12, 2, 10, 0, tzinfo=UTC)) is None
