"""inv logs' pure parts: --since, who wrote a line, how a line is printed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from deploykit.errors import UsageError
from deploykit.logs import LogLine, LogSource, parse_since

NOW = datetime(2026, 11, 29, 6, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "back"),
    [("90s", timedelta(seconds=90)), ("10m", timedelta(minutes=10)), ("2h", timedelta(hours=2)), ("1d", timedelta(1))],
)
def test_since_takes_a_duration_back_from_now(text: str, back: timedelta) -> None:
    assert parse_since(text, NOW) == NOW - back


def test_since_takes_an_iso_time_utc_unless_it_names_its_zone() -> None:
    assert parse_since("2026-11-29T05:30:00Z", NOW) == datetime(2026, 11, 29, 5, 30, tzinfo=UTC)
    assert parse_since("2026-11-29T05:30:00", NOW) == datetime(2026, 11, 29, 5, 30, tzinfo=UTC)
    assert parse_since("2026-11-29T06:30:00+01:00", NOW) == datetime(2026, 11, 29, 5, 30, tzinfo=UTC)


@pytest.mark.parametrize(
    "text",
    # and times past the calendar's ends, or before 1970, which AWS refuses (a traceback, or exit 1, before)
    ["yesterday", "10", "5 m", "-1h", "", "99999999999d", "1000000d", "0001-01-01T00:00Z", "1969-12-31T23:59Z"],
)
def test_anything_else_is_refused_with_the_forms_it_takes(text: str) -> None:
    with pytest.raises(UsageError) as err:
        parse_since(text, NOW)
    assert err.value.exit_code == 2
    assert "30s, 10m, 2h, 1d" in (err.value.next_step or "")


def test_an_app_line_names_its_task_and_a_function_line_its_version() -> None:
    app = LogSource("app", "group", "backend/backend/")
    fn = LogSource("lambda:login_handler", "/aws/lambda/login")
    stamp = int(datetime(2026, 11, 29, 5, 57, 11, 376000, tzinfo=UTC).timestamp() * 1000)
    line = LogLine(stamp, "backend/backend/f7f276cd605348a7b63dc399ae295820", "RuntimeError: boom", "1")
    assert line.render(app) == "05:57:11.376  f7f276cd  RuntimeError: boom"
    assert line.to_json(app) == {
        "time": "2026-11-29T05:57:11.376Z",
        "stream": "backend/backend/f7f276cd605348a7b63dc399ae295820",
        "source": "f7f276cd",
        "message": "RuntimeError: boom",
    }
    assert fn.label("2026/11/29/[12]0123456789abcdef") == "[12]"
    assert fn.label("2026/11/29/[$LATEST]0123456789abcdef") == "[$LATEST]"
    assert fn.label("a-stream-of-another-shape") == "er-shape"


def test_a_time_to_come_is_refused_as_such() -> None:
    """Nothing was written since a time to come: said, rather than an empty listing."""
    assert parse_since("2026-11-29T06:00:00Z", NOW) == NOW  # now itself: a follow from now on
    with pytest.raises(UsageError, match="--since 2026-11-29T06:00:01Z is to come") as err:
        parse_since("2026-11-29T06:00:01Z", NOW)
    assert err.value.next_step == "pass a time before now (2026-11-29T06:00:00Z), or a duration back from now (10m, 2h)"


def test_a_message_of_several_lines_keeps_them_under_its_first() -> None:
    """One event holding a traceback: its further lines under the first, not at the margin as if another writer's."""
    app = LogSource("app", "/ecs/car-rental", "backend/backend/")
    message = "Traceback:\n  File x\nValueError\n"
    line = LogLine(int(NOW.timestamp() * 1000), "backend/backend/f7f276cd0001", message, "1")
    assert line.render(app).splitlines() == [
        "06:00:00.000  f7f276cd  Traceback:",
        "                          File x",
        "                        ValueError",
    ]
