"""The built-in ``notify`` plugin: deployments announced in a chat through its incoming webhook."""

from __future__ import annotations

import http.client
import io
import json
import threading
import time
import tomllib
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any
from unittest.mock import Mock

import pytest

from deploykit.aws import AwsFactory
from deploykit.clock import FakeClock
from deploykit.config import Config, parse_config
from deploykit.errors import ConfigError, StepFailed, UsageError
from deploykit.output import Reporter
from deploykit.plan import Context, Executor, Outcome, Plan, Step
from deploykit.plugins import get_plugin_manager
from plugins import notify
from plugins.notify import Notifier

ENVIRONMENTS = """
[environments.sandbox]
region = "us-east-1"
endpoint_url = "http://127.0.0.1:4566"
cluster = "c"
service = "s"
container = "backend"
repository = "r"
[environments.sandbox.stacks]
registry = "R"
data = "D"
auth = "A"
fargate = "F"
api = "P"

[environments.dev]
region = "eu-west-1"
cluster = "c"
service = "s"
container = "backend"
repository = "r"
[environments.dev.stacks]
registry = "R"
data = "D"
auth = "A"
fargate = "F"
api = "P"
"""


def config(**settings: Any) -> Config:
    raw = tomllib.loads(ENVIRONMENTS)
    raw["plugins"] = {"notify": settings}
    return parse_config(raw, Path("deploy.toml"))


class Sent:
    """A chat that records what it is sent (or refuses it)."""

    def __init__(self, refuse: int = 0) -> None:
        self.texts: list[tuple[str, str]] = []
        self.refuse = refuse

    def __call__(self, url: str, text: str) -> None:
        if self.refuse:
            self.refuse -= 1
            raise OSError("HTTP Error 404: no_service")
        self.texts.append((url, text))


@pytest.fixture
def chat(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Notifier, Sent, io.StringIO]]:
    monkeypatch.setenv("TEST_CHAT_WEBHOOK", "https://hooks.example.test/T000/B000/secret")
    sent, stderr = Sent(), io.StringIO()
    notifier = Notifier(send=sent, stderr=stderr, who=lambda: "ana@laptop", environ={})  # not in CI
    yield notifier, sent, stderr
    notifier.flush()


class Works(Step):
    name = "build"

    def __init__(self, status: str = "done", fail: bool = False, refuse: bool = False, stop: bool = False) -> None:
        self.status, self.fail, self.refuse, self.stop = status, fail, refuse, stop

    def describe(self) -> str:
        return "build"

    def run(self, ctx: Context) -> Outcome:
        if self.fail:
            raise StepFailed("the image did not build: no space left", next_step="free disk space, then rerun")
        if self.refuse:
            raise UsageError("the Docker engine is not running", next_step="start it, then rerun")
        if self.stop:
            raise KeyboardInterrupt  # Ctrl-C, or the task's SIGTERM (a cancelled CI job)
        return Outcome.done("built") if self.status == "done" else Outcome.skipped("cached")

    def inputs(self) -> dict[str, object]:
        return {}


def deploy(notifier: Notifier, cfg: Config, env: str = "dev", **step: Any) -> None:
    plugins = get_plugin_manager(entry_points=[], extra=[("notify", notifier)], environ={})
    plugins.manager.hook.deploykit_configure(config=cfg)
    clock = FakeClock()
    ctx = Context(
        cfg,
        cfg.environment(env),
        Mock(spec=AwsFactory),
        clock,
        Reporter(io.StringIO(), tty=False, clock=clock),
        Mock(side_effect=AssertionError("no Docker here")),
        plugins=plugins,
    )
    plan = Plan(env, (Works(**step),), "deploy.auto", deploys=(("app", "0123456789abcdef"), ("stack:api", "0" * 40)))
    Executor(ctx).execute(plan)


def test_a_deploy_and_a_failure_are_announced_through_the_executor(chat: tuple[Notifier, Sent, io.StringIO]) -> None:
    notifier, sent, _ = chat
    cfg = config(webhook_env="TEST_CHAT_WEBHOOK", on=["started", "finished", "failed"])
    deploy(notifier, cfg)
    deploy(notifier, cfg, fail=True)
    assert notifier.flush()
    url = "https://hooks.example.test/T000/B000/secret"
    texts = [text for u, text in sent.texts if u == url]
    assert texts[0] == "🚀 dev: deploy.auto by ana@laptop: app@0123456789ab, stack:api@000000000000"
    assert texts[1].startswith("✅ dev: deploy.auto by ana@laptop in ") and texts[1].endswith(
        "s: app@0123456789ab, stack:api@000000000000"
    )
    assert texts[3].startswith("❌ dev: deploy.auto by ana@laptop failed at build after ")
    assert texts[3].endswith("s: the image did not build: no space left\n→ next: free disk space, then rerun")
    assert len(texts) == 4
    deploy(notifier, cfg, refuse=True)  # exit 2: stopped before it changed anything, said as such
    assert notifier.flush()
    assert sent.texts[-1][1].startswith("🛑 dev: deploy.auto by ana@laptop refused at build after ")


def test_a_deploy_interrupted_at_a_step_is_announced_as_interrupted(chat: tuple[Notifier, Sent, io.StringIO]) -> None:
    """Exit 130 (Ctrl-C, a cancelled CI job) was announced "❌ failed", as a step's failure is."""
    notifier, sent, _ = chat
    deploy(
        notifier, config(webhook_env="TEST_CHAT_WEBHOOK"), stop=True
    )  # exit 130: the executor ends the plan, its report says so
    assert notifier.flush()
    assert sent.texts[-1][1].startswith("⚠️ dev: deploy.auto by ana@laptop interrupted at build after ")


def test_the_start_of_a_deploy_lists_the_commits_it_takes_live(chat: tuple[Notifier, Sent, io.StringIO]) -> None:
    notifier, sent, _ = chat
    notifier.deploykit_configure(config=config(webhook_env="TEST_CHAT_WEBHOOK", on=["started", "finished"]))
    commits = [{"sha": f"{i:012x}", "author": "ana", "subject": f"Fix {i}"} for i in range(6)]
    notifier.deploykit_deployment_started(
        env="dev", plan={"title": "deploy.auto", "deploys": [{"component": "app", "sha": "0" * 12}], "commits": commits}
    )
    notifier.flush()
    [(_, text)] = sent.texts
    assert text.splitlines() == [
        "🚀 dev: deploy.auto by ana@laptop: app@000000000000",
        "• 000000000000 Fix 0 (ana)",
        "• 000000000001 Fix 1 (ana)",
        "• 000000000002 Fix 2 (ana)",
        "• 000000000003 Fix 3 (ana)",
        "• and 2 more",
    ]
    # said once: not again as it ends; a chat told only of the ends (the default) reads them there
    report = {"title": "deploy.auto", "seconds": 3.0, "steps": [{"step": "build", "status": "done"}]}
    notifier.deploykit_deployment_finished(env="dev", report=report)
    notifier.deploykit_configure(config=config(webhook_env="TEST_CHAT_WEBHOOK"))
    notifier.deploykit_deployment_started(env="dev", plan={"title": "deploy.auto", "deploys": [], "commits": commits})
    notifier.deploykit_deployment_finished(env="dev", report=report)
    notifier.flush()
    assert [text.count("•") for _, text in sent.texts[1:]] == [0, 5]
    assert sent.texts[-1][1].startswith("✅ dev: deploy.auto by ana@laptop in 3.0s\n• 000000000000 Fix 0 (ana)")


def test_a_commit_subject_holding_chat_markup_is_said_as_text(chat: tuple[Notifier, Sent, io.StringIO]) -> None:
    """A contributor's subject holding <!channel> pinged the whole channel, and <https://...|Approve the prod deploy>
    showed a link the deploy bot vouched for: &, < and > are escaped, as Slack asks senders to."""
    notifier, sent, _ = chat
    notifier.deploykit_configure(config=config(webhook_env="TEST_CHAT_WEBHOOK", on=["started"]))
    subject = "Health: v2 <!channel> <https://evil.example/login|Approve the prod deploy> & more"
    commits = [{"sha": "0" * 12, "author": "eve", "subject": subject}]
    notifier.deploykit_deployment_started(env="dev", plan={"title": "deploy.auto", "deploys": [], "commits": commits})
    notifier.flush()
    [(_, text)] = sent.texts
    assert text.splitlines()[1] == (
        "• 000000000000 Health: v2 &lt;!channel&gt; &lt;https://evil.example/login|Approve the prod deploy&gt; "
        "&amp; more (eve)"
    )


def test_by_default_only_the_end_of_a_deploy_that_changed_something_is_said(
    chat: tuple[Notifier, Sent, io.StringIO],
) -> None:
    notifier, sent, _ = chat
    cfg = config(webhook_env="TEST_CHAT_WEBHOOK")
    deploy(notifier, cfg, status="skipped")  # nothing changed
    deploy(notifier, cfg)
    notifier.flush()
    assert [text[:24] for _, text in sent.texts] == ["✅ dev: deploy.auto by an"]


def test_environments_on_this_machine_are_left_out_unless_named(chat: tuple[Notifier, Sent, io.StringIO]) -> None:
    notifier, sent, _ = chat
    deploy(notifier, config(webhook_env="TEST_CHAT_WEBHOOK"), env="sandbox")
    notifier.flush()
    assert sent.texts == []
    deploy(notifier, config(webhook_env="TEST_CHAT_WEBHOOK", environments=["sandbox"]), env="sandbox")
    notifier.flush()
    assert [text[:22] for _, text in sent.texts] == ["✅ sandbox: deploy.auto"]


PERSONAL = """
[environments."dev-*"]
region = "eu-west-1"
cluster = "c-{env}"
service = "s-{env}"
container = "backend"
repository = "r-{env}"
[environments."dev-*".stacks]
registry = "R-{env}"
data = "D-{env}"
auth = "A-{env}"
fargate = "F-{env}"
api = "P-{env}"
"""


def test_ones_own_environments_are_left_out_unless_their_pattern_is_named(
    chat: tuple[Notifier, Sent, io.StringIO],
) -> None:
    """Each developer's deploys to their own environment would fill the team's chat: said only when asked for."""
    notifier, sent, _ = chat

    def personal(**settings: Any) -> Config:
        raw = tomllib.loads(ENVIRONMENTS + PERSONAL)
        raw["plugins"] = {"notify": {"webhook_env": "TEST_CHAT_WEBHOOK", **settings}}
        return parse_config(raw, Path("deploy.toml"))

    deploy(notifier, personal(), env="dev-alice")
    notifier.flush()
    assert sent.texts == []
    deploy(notifier, personal(environments=["dev", "dev-*"]), env="dev-alice")
    notifier.flush()
    assert [text[:24] for _, text in sent.texts] == ["✅ dev-alice: deploy.auto"]
    with pytest.raises(ConfigError, match=r"environments names \['qa-\*'\], which deploy.toml does not define"):
        deploy(notifier, personal(environments=["qa-*"]), env="dev-alice")


def test_without_settings_it_is_off_and_an_unset_variable_is_said_once(
    chat: tuple[Notifier, Sent, io.StringIO], monkeypatch: pytest.MonkeyPatch
) -> None:
    notifier, sent, stderr = chat
    deploy(notifier, config())
    monkeypatch.delenv("TEST_CHAT_WEBHOOK")
    cfg = config(webhook_env="TEST_CHAT_WEBHOOK")
    deploy(notifier, cfg)
    deploy(notifier, cfg, fail=True)
    notifier.flush()
    assert sent.texts == []
    assert stderr.getvalue() == "⚠️  plugin 'notify': $TEST_CHAT_WEBHOOK is not set: deploys to dev are not announced\n"


def test_a_refused_message_is_said_and_the_next_one_still_goes(chat: tuple[Notifier, Sent, io.StringIO]) -> None:
    notifier, sent, stderr = chat
    sent.refuse = 1
    cfg = config(webhook_env="TEST_CHAT_WEBHOOK")
    deploy(notifier, cfg)
    deploy(notifier, cfg)
    notifier.flush()
    assert len(sent.texts) == 1
    said = stderr.getvalue()
    assert "the chat did not take a message (OSError: HTTP Error 404: no_service)" in said
    assert "secret" not in said  # the webhook URL is a secret: never printed


def test_a_chat_that_does_not_answer_in_time_is_given_up_said_and_the_next_message_goes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A chat answering a byte every 2 s held the sender for ever (urllib's timeout is per read), every message
    after it lost unsaid."""
    monkeypatch.setenv("TEST_CHAT_WEBHOOK", "https://hooks.example.test/T000/B000/secret")
    sent, stderr, answer, calls = Sent(), io.StringIO(), threading.Event(), []

    def send(url: str, text: str) -> None:
        calls.append(text)
        if len(calls) == 1:
            answer.wait(30)  # the first: no answer
            return
        sent(url, text)

    notifier = Notifier(send=send, stderr=stderr, who=lambda: "ana", environ={}, deadline=0.2)
    cfg = config(webhook_env="TEST_CHAT_WEBHOOK")
    deploy(notifier, cfg, fail=True)
    deploy(notifier, cfg)
    try:
        assert notifier.flush(5)
    finally:
        answer.set()
    assert [text[:28] for _, text in sent.texts if "deploy.auto by ana in" in text] == ["✅ dev: deploy.auto by ana in"]
    said = stderr.getvalue()
    assert "the chat did not take a message (TimeoutError: no answer within 0.2s); it was: ❌ dev: " in said
    assert "secret" not in said


def test_messages_not_sent_by_the_exit_are_said_on_stderr(monkeypatch: pytest.MonkeyPatch) -> None:
    """The wait at exit returned False unheard: the deploy's only message dropped, nothing said."""
    monkeypatch.setenv("TEST_CHAT_WEBHOOK", "https://hooks.example.test/T000/B000/secret")
    stderr, answer = io.StringIO(), threading.Event()
    notifier = Notifier(send=lambda _url, _text: answer.wait(30), stderr=stderr, who=lambda: "ana", environ={})
    deploy(notifier, config(webhook_env="TEST_CHAT_WEBHOOK"), fail=True)
    try:
        notifier.flush_at_exit(0.2)
    finally:
        answer.set()
    assert stderr.getvalue().startswith(
        "⚠️  plugin 'notify': 1 message not sent to the chat within 0.2s at exit (dropped); the first: ❌ dev: "
        "deploy.auto by ana failed at build after "
    )
    quiet = Notifier(send=Sent(), stderr=io.StringIO(), who=lambda: "ana", environ={})
    deploy(quiet, config(webhook_env="TEST_CHAT_WEBHOOK"))
    quiet.flush_at_exit(5)  # all sent: nothing said
    assert quiet.stderr is not None and quiet.stderr.getvalue() == ""


def test_the_messages_said_at_exit_are_those_not_sent_the_first_of_them_named(monkeypatch: pytest.MonkeyPatch) -> None:
    """A deploy's message sent, then a failed one's the chat does not answer: at exit one message is not sent, the
    failure's; the one the chat took is neither counted nor named."""
    monkeypatch.setenv("TEST_CHAT_WEBHOOK", "https://hooks.example.test/T000/B000/secret")
    sent, stderr, sending, answer = Sent(), io.StringIO(), threading.Event(), threading.Event()

    def send(url: str, text: str) -> None:
        if text.startswith("❌"):
            sending.set()
            answer.wait(30)  # no answer
            return
        sent(url, text)

    notifier = Notifier(send=send, stderr=stderr, who=lambda: "ana", environ={})
    cfg = config(webhook_env="TEST_CHAT_WEBHOOK")
    deploy(notifier, cfg)
    deploy(notifier, cfg, fail=True)
    try:
        assert sending.wait(5), "the worker took the failure's message, the deploy's sent before it"
        notifier.flush_at_exit(0.2)
    finally:
        answer.set()
    assert [text[:28] for _, text in sent.texts] == ["✅ dev: deploy.auto by ana in"]
    assert stderr.getvalue().startswith(
        "⚠️  plugin 'notify': 1 message not sent to the chat within 0.2s at exit (dropped); the first: ❌ dev: "
        "deploy.auto by ana failed at build after "
    )


def test_a_send_failing_otherwise_is_said_without_the_url_and_the_sender_goes_on(
    chat: tuple[Notifier, Sent, io.StringIO],
) -> None:
    """A webhook variable without its scheme (urllib's ValueError quotes the URL, its secret path in it), an answer
    cut short (http.client's IncompleteRead, no OSError): each said by its type, and the messages after it still go;
    before, the first stopped the sender for good and the second printed the URL."""
    notifier, sent, stderr = chat
    failures = [ValueError("unknown url type: 'hooks.example.test/T000/B000/secret'"), http.client.IncompleteRead(b"")]

    def send(url: str, text: str) -> None:
        if failures:
            raise failures.pop(0)
        sent(url, text)

    notifier.send = send
    cfg = config(webhook_env="TEST_CHAT_WEBHOOK")
    for _ in range(3):
        deploy(notifier, cfg)
    assert notifier.flush()
    assert len(sent.texts) == 1
    said = stderr.getvalue()
    assert "(ValueError; is $TEST_CHAT_WEBHOOK a whole https:// URL?)" in said
    assert "(IncompleteRead)" in said
    assert "secret" not in said


def test_a_freeze_and_its_end_are_announced_unless_left_out(chat: tuple[Notifier, Sent, io.StringIO]) -> None:
    notifier, sent, _ = chat
    notifier.deploykit_configure(config=config(webhook_env="TEST_CHAT_WEBHOOK"))  # the default: freeze announced
    made = {"owner": "lead", "reason": "Black Friday", "since": "2026-12-01T09:00:00+00:00"}
    notifier.deploykit_freeze_changed(env="dev", freeze={**made, "until": "2026-12-04T09:00:00+00:00"})
    notifier.deploykit_freeze_changed(env="dev", freeze={**made, "until": None})
    notifier.deploykit_freeze_changed(env="dev", freeze=None)
    notifier.deploykit_freeze_changed(env="sandbox", freeze=None)  # not an environment it announces
    assert notifier.flush()
    assert [text for _url, text in sent.texts] == [
        "❄️ dev: frozen by lead until 2026-12-04T09:00:00Z: Black Friday (deploys refused; rollbacks go on)",
        "❄️ dev: frozen by lead until inv unfreeze: Black Friday (deploys refused; rollbacks go on)",
        "🌤 dev: thawed by ana@laptop: deploys go again",
    ]
    notifier.deploykit_configure(config=config(webhook_env="TEST_CHAT_WEBHOOK", on=["finished", "failed"]))
    notifier.deploykit_freeze_changed(env="dev", freeze=None)
    assert notifier.flush() and len(sent.texts) == 3


def test_a_deploy_that_ran_no_step_is_announced_only_when_asked(chat: tuple[Notifier, Sent, io.StringIO]) -> None:
    notifier, sent, _ = chat
    refused = {
        "env": "dev",
        "command": "deploy.auto",
        "outcome": "refused",
        "head": "0123456789ab",
        "message": "refusing to deploy to dev: dev is frozen by lead\nsecond line",
        "next_step": "wait until it is over",
        "held": [],
    }
    notifier.deploykit_configure(config=config(webhook_env="TEST_CHAT_WEBHOOK"))  # the default: not announced
    notifier.deploykit_deployment_not_run(env="dev", report=refused)
    assert notifier.flush() and sent.texts == []
    notifier.deploykit_configure(config=config(webhook_env="TEST_CHAT_WEBHOOK", on=["refused"]))
    notifier.deploykit_deployment_not_run(env="dev", report=refused)
    notifier.deploykit_deployment_not_run(env="dev", report={**refused, "outcome": "failed", "next_step": ""})
    notifier.deploykit_deployment_not_run(env="dev", report={**refused, "outcome": "nothing"})  # no news
    stopped = {**refused, "outcome": "interrupted", "message": "interrupted before any step ran: nothing was changed"}
    notifier.deploykit_deployment_not_run(env="dev", report={**stopped, "next_step": ""})
    assert notifier.flush()
    assert [text for _url, text in sent.texts] == [
        "🛑 dev: deploy.auto by ana@laptop refused before any step: refusing to deploy to dev: dev is frozen by lead"
        "\n→ next: wait until it is over",
        "❌ dev: deploy.auto by ana@laptop failed before any step: refusing to deploy to dev: dev is frozen by lead",
        "⚠️ dev: deploy.auto by ana@laptop interrupted before any step: interrupted before any step ran: nothing was "
        "changed",
    ]


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"webhook": "X"}, "unknown keys ['webhook']"),
        ({"webhook_env": 3}, "webhook_env must be the name of an environment variable"),
        ({"webhook_env": "X", "environments": "dev"}, "environments must be a list"),
        ({"webhook_env": "X", "environments": ["staging"]}, "names ['staging'], which deploy.toml does not define"),
        ({"webhook_env": "X", "on": ["done"]}, "on must be a list of started, finished, failed, freeze, refused"),
    ],
)
def test_bad_settings_are_a_config_error(settings: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")) as raised:
        Notifier().deploykit_configure(config=config(**settings))
    assert raised.value.exit_code == 2


@pytest.fixture
def webhook() -> Iterator[tuple[str, list[tuple[str, str, dict[str, Any]]]]]:
    """A chat's webhook on 127.0.0.1: /hooks/* takes a message, anything else is 404."""
    got: list[tuple[str, str, dict[str, Any]]] = []

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            if not self.path.startswith("/hooks/"):
                self.send_response(404)
                self.end_headers()
                return
            got.append((self.path, self.headers["Content-Type"], json.loads(body)))
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_port}", got
    finally:
        server.shutdown()
        server.server_close()


def test_post_sends_the_text_as_json_and_a_refusal_raises(
    webhook: tuple[str, list[tuple[str, str, dict[str, Any]]]],
) -> None:
    base, got = webhook
    notify.post(f"{base}/hooks/T000", "✅ dev: deploy.auto")
    assert got == [("/hooks/T000", "application/json", {"text": "✅ dev: deploy.auto"})]
    with pytest.raises(OSError, match="404"):
        notify.post(f"{base}/gone", "x")


def test_post_reads_only_the_start_of_the_answer() -> None:
    """An answer of 200 MB was read whole (in memory) before the next message; one that says it is long and stops
    held the sender until urllib's timeout, and was said as a failure."""

    class Long(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["Content-Length"]))
            self.send_response(200)
            self.send_header("Content-Length", str(200 * 1024 * 1024))
            self.end_headers()
            self.wfile.write(b"x" * 65536)
            self.wfile.flush()
            stop.wait(10)  # the rest never comes

        def log_message(self, *args: object) -> None:
            pass

    stop = threading.Event()
    server = HTTPServer(("127.0.0.1", 0), Long)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        started = time.monotonic()
        notify.post(f"http://127.0.0.1:{server.server_port}/hooks/T000", "✅ dev: deploy.auto")
        assert time.monotonic() - started < 2
    finally:
        stop.set()
        server.shutdown()
        server.server_close()


def test_the_plugin_as_installed_posts_to_the_chat(
    webhook: tuple[str, list[tuple[str, str, dict[str, Any]]]], monkeypatch: pytest.MonkeyPatch
) -> None:
    base, got = webhook
    monkeypatch.setenv("TEST_CHAT_WEBHOOK", f"{base}/hooks/T000")
    notifier = Notifier(who=lambda: "ci", environ={})  # the real send
    deploy(notifier, config(webhook_env="TEST_CHAT_WEBHOOK"))
    assert notifier.flush()
    assert [text["text"][:25] for _, _, text in got] == ["✅ dev: deploy.auto by ci "]


def test_a_run_from_ci_links_its_job(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_CHAT_WEBHOOK", "https://hooks.example.test/x")
    github = {"GITHUB_SERVER_URL": "https://github.com", "GITHUB_REPOSITORY": "team/car-rental", "GITHUB_RUN_ID": "42"}
    sent = Sent()
    notifier = Notifier(send=sent, stderr=io.StringIO(), who=lambda: "ci", environ=github)
    deploy(notifier, config(webhook_env="TEST_CHAT_WEBHOOK"), fail=True)
    notifier.flush()
    [(_, text)] = sent.texts
    first, second = text.split("\n")
    assert first.endswith("no space left (https://github.com/team/car-rental/actions/runs/42)")
    assert second == "→ next: free disk space, then rerun"
    assert notify.run_url({"CI_JOB_URL": "https://gitlab.example/j/7", **github}) == "https://gitlab.example/j/7"
    assert notify.run_url({"DEPLOYKIT_RUN_URL": "https://ci.example/r/1", **github}) == "https://ci.example/r/1"
    assert notify.run_url({"BUILD_URL": "https://jenkins.example/job/9/"}) == "https://jenkins.example/job/9/"
    assert notify.run_url({}) == ""
