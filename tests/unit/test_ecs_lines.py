"""What of a task's log a failure's message quotes (deploykit.ecs.last_line): its last line, credentials masked."""

from __future__ import annotations

import pytest

from deploykit.ecs import TaskLog, last_line, quoted_line


def log(*lines: str) -> TaskLog:
    return TaskLog("t1", "group", "backend/backend/t1", list(lines))


@pytest.mark.parametrize(
    ("written", "quoted"),
    [
        (
            "ArgumentError: Could not parse SQLAlchemy URL from string 'postgresql+psycopg://app:hunter2!@db:5432'",
            "ArgumentError: Could not parse SQLAlchemy URL from string 'postgresql+psycopg://app:***@db:5432'",
        ),
        ("login failed: password=s3cr3t user=bob", "login failed: password=*** user=bob"),
        (
            "connecting to redis://:s3cr3tRedisPw@cache.internal:6379/0",
            "connecting to redis://:***@cache.internal:6379/0",
        ),
        (
            'config: {"client_secret": "abc", "region": "eu-west-1"}',
            'config: {"client_secret": "***", "region": "eu-west-1"}',
        ),
        ("GET /auth Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.e30.x", "GET /auth Authorization: ***"),
        ("API_KEY: 12345 missing scope", "API_KEY: *** missing scope"),
        ("KeyError: 'CLIENT_ID'", "KeyError: 'CLIENT_ID'"),  # names no value: as it is
        ("GET /cars?city=paris 200 in 3 ms", "GET /cars?city=paris 200 in 3 ms"),
    ],
)
def test_the_last_line_quoted_in_a_failure_masks_what_it_holds_of_a_credential(written: str, quoted: str) -> None:
    """A crash on a malformed DATABASE_URL secret put its password in the failure's message: the history record
    keeps it and the chat is sent it, read by all who may not read the log group."""
    assert quoted_line(log("Traceback (most recent call last):", written), 200) == quoted
    assert last_line(log(written)) == f"; its last log line: {quoted}"


def test_no_line_is_quoted_of_a_task_that_wrote_none() -> None:
    assert quoted_line(None, 200) == "" and last_line(log()) == ""
