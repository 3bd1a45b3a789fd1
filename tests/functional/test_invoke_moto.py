"""inv invoke FN against moto's Lambda, S3 and CloudFormation (the functions as the API stack leaves them), where
what Lambda answers Invoke and GetFunctionConfiguration with is played by a botocore hook on the factory's session:
moto runs a function only in Docker, and cannot throttle. The hook short-circuits the call as botocore's Stubber
does, and reaches the clients the command makes itself (Invoke goes through a new client that is never retried)."""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.awsrequest import AWSResponse
from botocore.response import StreamingBody

from deploykit import commands
from deploykit.aws import AwsFactory
from deploykit.errors import StepFailed
from tests.functional.conftest import moto_runtime
from tests.functional.test_lambda_chain_moto import FUNCTIONS, environment, with_lambdas

__all__ = ["environment", "with_lambdas"]  # fixtures

Answer = Callable[[dict[str, Any]], tuple[int, dict[str, Any]]]


class Answers(dict[str, Answer]):
    """Operation name → what Lambda answers it with (HTTP status, parsed answer); an operation not named goes to moto.
    ``asked``: the operations answered here, in order."""

    def __init__(self) -> None:
        super().__init__()
        self.asked: list[str] = []


@pytest.fixture
def lambda_answers(factory: AwsFactory) -> Iterator[Answers]:
    answers = Answers()

    def answer(model: Any, params: dict[str, Any], **_: Any) -> tuple[AWSResponse, dict[str, Any]] | None:
        play = answers.get(model.name)
        if play is None:
            return None
        answers.asked.append(model.name)
        status, parsed = play(params)
        parsed.setdefault("ResponseMetadata", {})["HTTPStatusCode"] = status
        return AWSResponse("https://lambda.eu-west-1.amazonaws.com", status, {}, None), parsed

    # the clients made from now on (the command's unretried one for Invoke), and the cached one made already
    emitters = [factory.session.events, factory.client("lambda").meta.events]
    for events in emitters:
        events.register("before-call.lambda", answer, unique_id="test-invoke-answers")
    yield answers
    for events in emitters:
        events.unregister("before-call.lambda", unique_id="test-invoke-answers")


def refused(code: str, status: int, message: str) -> Answer:
    return lambda _params: (status, {"Error": {"Code": code, "Message": message}})


def ran(payload: dict[str, Any], version: str = "1", log: str = "START\nEND\n") -> Answer:
    def answer(params: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        data = json.dumps(payload).encode()
        return 200, {
            "StatusCode": 200,
            "ExecutedVersion": version,
            "LogResult": base64.b64encode(log.encode()).decode(),
            "Payload": StreamingBody(io.BytesIO(data), len(data)),
        }

    return answer


def test_a_throttled_invoke_is_said_as_such_and_the_function_did_not_run(
    with_lambdas: Path, factory: AwsFactory, environment: dict[str, str], lambda_answers: Answers
) -> None:
    lambda_answers["Invoke"] = refused("TooManyRequestsException", 429, "Rate Exceeded.")
    rt = moto_runtime(with_lambdas, factory)
    with pytest.raises(StepFailed) as failed:
        commands.invoke_function("health_handler", env="dev", runtime=rt)
    assert failed.value.message == (
        f"Lambda refused to call {FUNCTIONS['health_handler']}:live for now (its concurrency or rate limit): "
        "the function did not run"
    )
    assert failed.value.next_step == "run the command again in a moment"
    assert rt.stdout.getvalue() == ""  # type: ignore[attr-defined]


def test_the_answer_is_shown_when_the_version_that_gave_it_cannot_be_read(
    with_lambdas: Path, factory: AwsFactory, environment: dict[str, str], lambda_answers: Answers
) -> None:
    """The function ran: its answer is the point of the command, and a refused read of which commit it runs (the
    role may lack lambda:GetFunctionConfiguration) costs only the commit in the line that names the version."""
    lambda_answers["Invoke"] = ran({"statusCode": 200, "body": "ok"}, version="1", log="START\nhello\nEND\n")
    lambda_answers["GetFunctionConfiguration"] = refused("AccessDeniedException", 403, "not allowed")
    rt = moto_runtime(with_lambdas, factory)
    result = commands.invoke_function("health_handler", env="dev", runtime=rt)
    assert result.version == "1"
    assert json.loads(rt.stdout.getvalue()) == {"statusCode": 200, "body": "ok"}  # type: ignore[attr-defined]
    said = rt.stderr.getvalue()  # type: ignore[attr-defined]
    assert f"⚡ health_handler in dev: {FUNCTIONS['health_handler']}:live → version 1, status 200 in " in said
    assert "(git " not in said
    assert lambda_answers.asked == ["Invoke", "GetFunctionConfiguration"]  # the read was made, and refused
    assert "hello" in said  # the log's tail still shown


def test_the_version_that_answered_is_named_with_its_commit_when_it_can_be_read(
    with_lambdas: Path, factory: AwsFactory, environment: dict[str, str], lambda_answers: Answers
) -> None:
    """The same call with the read allowed (moto answers it): the version's description, as the fast path writes it,
    names the commit; the line says it. The test above fails on this line's ``(git ...)`` if the read is skipped."""
    lam = factory.client("lambda")
    name = FUNCTIONS["health_handler"]
    described = f"code s3://b/k.zip git {'a' * 12}"  # as the fast path describes the version it publishes
    lam.update_function_configuration(FunctionName=name, Description=described)
    version = lam.publish_version(FunctionName=name, Description=described)["Version"]
    lambda_answers["Invoke"] = ran({"ok": True}, version=version)
    rt = moto_runtime(with_lambdas, factory)
    commands.invoke_function("health_handler", env="dev", version=version, runtime=rt)
    said = rt.stderr.getvalue()  # type: ignore[attr-defined]
    assert f"{name}:{version} → version {version} (git {'a' * 12}), status 200 in " in said
