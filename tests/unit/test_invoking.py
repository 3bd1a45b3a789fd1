"""deploykit.invoking: the event read from the command line or a file, one synchronous Invoke and its answer."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import pytest

from deploykit import invoking
from deploykit.clock import FakeClock
from deploykit.errors import UsageError
from tests.conftest import aws_client


def test_an_event_is_json_given_or_read_from_a_file(tmp_path: Path) -> None:
    assert invoking.read_event('{"httpMethod": "GET"}', tmp_path) == b'{"httpMethod": "GET"}'
    (tmp_path / "events").mkdir()
    (tmp_path / "events" / "login.json").write_text('{"body": "{}"}')
    assert invoking.read_event("@events/login.json", tmp_path) == b'{"body": "{}"}'
    assert invoking.read_event(f"@{tmp_path / 'events' / 'login.json'}", Path("/elsewhere")) == b'{"body": "{}"}'


def test_an_event_that_is_not_json_or_cannot_be_read_is_refused_saying_how(tmp_path: Path) -> None:
    with pytest.raises(UsageError) as refused:
        invoking.read_event("{httpMethod: GET}", tmp_path)
    assert refused.value.message.startswith("the --event text is not JSON (")
    assert '--event \'{"httpMethod": "GET"}\'' in (refused.value.next_step or "")
    (tmp_path / "bad.json").write_text("GET /health")
    with pytest.raises(UsageError, match=r"bad\.json is not JSON"):
        invoking.read_event("@bad.json", tmp_path)
    with pytest.raises(UsageError) as refused:
        invoking.read_event("@missing.json", tmp_path)
    assert f"--event @missing.json: cannot read {tmp_path / 'missing.json'}" in refused.value.message
    (tmp_path / "big.json").write_text(json.dumps("x" * invoking.MAX_EVENT_BYTES))
    with pytest.raises(UsageError, match="a synchronous Invoke takes at most 6,291,456"):
        invoking.read_event("@big.json", tmp_path)


def answer(payload: bytes, *, error: str = "", log: str = "", version: str = "7") -> dict[str, object]:
    found: dict[str, object] = {"StatusCode": 200, "ExecutedVersion": version, "Payload": io.BytesIO(payload)}
    if error:
        found["FunctionError"] = error
    if log:
        found["LogResult"] = base64.b64encode(log.encode()).decode()
    return found


def test_an_invoke_asks_for_the_log_tail_and_reads_the_answer() -> None:
    client = aws_client("lambda")
    client.invoke.return_value = answer(b'{"statusCode": 200}', log="START\nhello\nEND\n")
    result = invoking.invoke(client, FakeClock(), "health_handler", "Api-Health", "live", b"{}")
    client.invoke.assert_called_once_with(
        FunctionName="Api-Health", Qualifier="live", Payload=b"{}", InvocationType="RequestResponse", LogType="Tail"
    )
    assert (result.version, result.status, result.function_error, result.error) == ("7", 200, "", "")
    assert result.answer == {"statusCode": 200} and result.log_tail == "START\nhello\nEND\n"
    assert result.to_json("sandbox") == {
        "environment": "sandbox",
        "function": "health_handler",
        "function_name": "Api-Health",
        "qualifier": "live",
        "version": "7",
        "status": 200,
        "function_error": None,
        "payload": {"statusCode": 200},
        "log_tail": "START\nhello\nEND\n",
        "seconds": 0.0,
    }


def test_a_function_that_raised_says_what_it_raised_and_a_payload_that_is_no_json_stays_text() -> None:
    client = aws_client("lambda")
    raised = {"errorType": "KeyError", "errorMessage": "'body'", "stackTrace": []}
    client.invoke.return_value = answer(json.dumps(raised).encode(), error="Unhandled")
    result = invoking.invoke(client, FakeClock(), "login_handler", "Api-Login", "live", b"{}")
    assert (result.function_error, result.error) == ("Unhandled", "KeyError: 'body'")
    client.invoke.return_value = answer(b"plain words")
    result = invoking.invoke(client, FakeClock(), "login_handler", "Api-Login", "3", b"{}")
    assert result.answer == "plain words" and result.log_tail == ""
