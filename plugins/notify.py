"""``notify``: deployments announced in a chat through its incoming webhook.

Slack, Mattermost, Rocket.Chat, Google Chat and Microsoft Teams' incoming webhooks all take a JSON POST of
``{"text": ...}``. Off until ``deploy.toml`` names the environment variable that holds the webhook's URL (a secret:
never in the file itself)::

    [plugins.notify]
    webhook_env = "DEPLOYKIT_CHAT_WEBHOOK"
    environments = ["dev", "prod"]   # default: every environment not on this machine (not the sandbox); a
                                     # pattern ("dev-*") names those it makes, which are left out otherwise
    on = ["finished", "failed", "freeze"]   # the default; "started": a line as each deploy begins; "freeze":
                                            # inv freeze and inv unfreeze; "refused": a deploy refused or
                                            # failed before its first step (a freeze, the lock, a guard)

A run that changed nothing is not announced; one from CI links its job (GitHub Actions, GitLab CI, Jenkins, or
$DEPLOYKIT_RUN_URL). Messages go out from a background thread, so a slow chat never
slows a deploy; each POST has TIMEOUT seconds in all (a chat that answers a byte at a time included), and only the
first ANSWER_READ bytes of its answer are read; at exit the process waits for the last ones, at most TIMEOUT seconds,
and says on stderr how many were not sent by then. A message the chat refuses (or a variable that is not set) is
said on stderr and fails nothing.
"""

from __future__ import annotations

import atexit
import http.client
import json
import os
import queue
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from typing import Any, TextIO

from deploykit.config import Config, pattern_matches
from deploykit.errors import ConfigError
from deploykit.history import actor
from deploykit.hookspecs import hookimpl
from plugins._support import variable_of

NAME = "notify"
EVENTS = ("started", "finished", "failed", "freeze", "refused")
DEFAULT_ON = ("finished", "failed", "freeze")
KEYS = ("webhook_env", "environments", "on")
TIMEOUT = 5.0  # seconds for one POST, in all; and at most, at exit, for the messages still queued
ANSWER_READ = 1024  # bytes of the chat's answer read (its status says whether it took the message)
SHOWN = 4  # components named in a message; the rest are counted


def post(url: str, text: str) -> None:
    """POST ``{"text": text}`` to ``url``; raises when nothing or an error answers."""
    request = urllib.request.Request(
        url, data=json.dumps({"text": text}).encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=TIMEOUT) as answer:
        answer.read(ANSWER_READ)  # not the whole of an answer that may be anything (200 MB, a byte every 2 s)


def within(send: Callable[[str, str], None], seconds: float) -> Callable[[str, str], None]:
    """``send``, ended after ``seconds`` in all: urllib's timeout bounds each read of the socket, not the POST (a
    chat answering a byte every 2 s held the sender for ever, every later message behind it). The POST goes on in a
    thread of its own, left behind (a daemon) when it is late; a ``TimeoutError`` is raised then."""

    def bounded(url: str, text: str) -> None:
        failure: list[Exception] = []

        def run() -> None:
            try:
                send(url, text)
            except Exception as exc:  # any: said by the sender as its own would be
                failure.append(exc)

        thread = threading.Thread(target=run, name="notify-post", daemon=True)
        thread.start()
        thread.join(seconds)
        if thread.is_alive():
            raise TimeoutError(f"no answer within {seconds:g}s")
        if failure:
            raise failure[0]

    return bounded


def _why(exc: Exception, variable: str) -> str:
    """What went wrong in a send, without the webhook's URL (its path is the secret): urllib's and the network's
    errors (OSErrors) name an HTTP status or a reason; others (a malformed URL's ValueError, http.client's InvalidURL)
    may quote the URL, and are named by their type alone."""
    if isinstance(exc, OSError):
        return f"{type(exc).__name__}: {exc}"
    if isinstance(exc, ValueError | http.client.InvalidURL):
        return f"{type(exc).__name__}; is ${variable} a whole https:// URL?"
    return type(exc).__name__


def run_url(environ: Mapping[str, str]) -> str:
    """The CI job that deploys, when there is one: $DEPLOYKIT_RUN_URL, else what GitHub Actions, GitLab CI or
    Jenkins say of their run; "" on a laptop."""
    if environ.get("DEPLOYKIT_RUN_URL"):
        return environ["DEPLOYKIT_RUN_URL"]
    if environ.get("CI_JOB_URL"):  # GitLab
        return environ["CI_JOB_URL"]
    if all(environ.get(k) for k in ("GITHUB_SERVER_URL", "GITHUB_REPOSITORY", "GITHUB_RUN_ID")):
        return f"{environ['GITHUB_SERVER_URL']}/{environ['GITHUB_REPOSITORY']}/actions/runs/{environ['GITHUB_RUN_ID']}"
    return environ.get("BUILD_URL", "")  # Jenkins


def _deploys(plan: Mapping[str, Any] | None) -> str:
    pairs = [f"{d['component']}@{str(d['sha'])[:12]}" for d in (plan or {}).get("deploys", [])]
    more = f" and {len(pairs) - SHOWN} more" if len(pairs) > SHOWN else ""
    return ", ".join(pairs[:SHOWN]) + more


def _commits(plan: Mapping[str, Any] | None) -> str:
    """The commits a run takes live, one line each (``SHOWN`` of them, then how many more): what is going out."""
    commits = list((plan or {}).get("commits") or ())
    lines = [f"• {c.get('sha', '?')} {c.get('subject', '')} ({c.get('author', '?')})" for c in commits[:SHOWN]]
    if len(commits) > SHOWN:
        lines.append(f"• and {len(commits) - SHOWN} more")
    return "".join(f"\n{line}" for line in lines)


MARKS = {"refused": "🛑", "failed": "❌", "interrupted": "⚠️"}  # how a deploy that did not succeed ended, as a mark


def how_it_ended(report: Mapping[str, Any]) -> str:
    """``refused``, ``interrupted`` or ``failed``: a failed run's report (exit code 2: a guard or bad input stopped the
    run, and the step that refused changed nothing; 130: Ctrl-C or SIGTERM, a cancelled CI job, stopped it)."""
    code = (report.get("error") or {}).get("exit_code")
    return {2: "refused", 130: "interrupted"}.get(code, "failed") if isinstance(code, int) else "failed"


def failed_step(report: Mapping[str, Any]) -> str:
    for step in report.get("steps", []):
        for child in step.get("children") or ():
            if child.get("status") == "failed":
                return str(child.get("step"))
        if step.get("status") == "failed":
            return str(step.get("step"))
    return "?"


class Notifier:
    """The plugin: hook implementations over one process's settings and its queue of messages."""

    def __init__(
        self,
        send: Callable[[str, str], None] = post,
        stderr: TextIO | None = None,
        who: Callable[[], str] = actor,
        environ: Mapping[str, str] | None = None,
        deadline: float = TIMEOUT,
    ) -> None:
        self.send = within(send, deadline)
        self.stderr = stderr
        self.who = who
        self.environ = os.environ if environ is None else environ
        self.variable = ""
        self.url = ""
        self.environments: frozenset[str] = frozenset()
        self.on: frozenset[str] = frozenset(DEFAULT_ON)
        self.plans: dict[str, Mapping[str, Any]] = {}
        self.warned = False
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._worker: threading.Thread | None = None
        self._unsent: list[str] = []  # queued or being sent, in order (appended here, removed by the worker)

    # -- settings ----------------------------------------------------------------------------------------------

    @hookimpl
    def deploykit_configure(self, config: Config) -> None:
        settings, where = config.plugin_settings(NAME, KEYS)
        variable = variable_of(settings, "webhook_env", "", where)
        environments = settings.get("environments", [n for n, e in config.environments.items() if not e.is_local])
        if not isinstance(environments, list) or not all(isinstance(e, str) for e in environments):
            raise ConfigError(f"{where}: environments must be a list of environment names")
        strangers = sorted(set(environments) - set(config.environments) - set(config.patterns))
        if strangers:
            raise ConfigError(
                f"{where}: environments names {strangers}, which deploy.toml does not define",
                next_step=f"use some of: {', '.join([*sorted(config.environments), *config.patterns])}",
            )
        on = settings.get("on", list(DEFAULT_ON))
        if not isinstance(on, list) or not all(isinstance(e, str) for e in on) or not set(on) <= set(EVENTS):
            raise ConfigError(f"{where}: on must be a list of {', '.join(EVENTS)}")
        self.variable = variable
        self.url = os.environ.get(variable, "") if variable else ""
        self.environments = frozenset(environments)
        self.on = frozenset(on)

    # -- the deployment hooks ----------------------------------------------------------------------------------

    @hookimpl
    def deploykit_deployment_started(self, env: str, plan: dict[str, Any]) -> None:
        self.plans[env] = plan
        if self._wanted(env, "started"):
            deploys = _deploys(plan)
            self._say(
                f"🚀 {env}: {plan.get('title')} by {self.who()}" + (f": {deploys}" if deploys else "") + _commits(plan)
            )

    @hookimpl
    def deploykit_deployment_finished(self, env: str, report: dict[str, Any]) -> None:
        plan = self.plans.pop(env, None)
        steps = report.get("steps", [])
        if not self._wanted(env, "finished") or not any(s.get("status") == "done" for s in steps):
            return  # a run that changed nothing says nothing
        deploys = _deploys(plan)
        went = "" if "started" in self.on else _commits(plan)  # what went live, said once: at the start when it is said
        self._say(
            f"✅ {env}: {report.get('title')} by {self.who()} in {float(report.get('seconds', 0)):.1f}s"
            + (f": {deploys}" if deploys else "")
            + went
        )

    @hookimpl
    def deploykit_deployment_failed(self, env: str, report: dict[str, Any], error: str) -> None:
        self.plans.pop(env, None)
        if not self._wanted(env, "failed"):
            return
        message, _, next_step = error.partition("\n  → next: ")
        what = how_it_ended(report)
        text = (
            f"{MARKS[what]} {env}: {report.get('title')} by {self.who()} {what} at {failed_step(report)} after "
            f"{float(report.get('seconds', 0)):.1f}s: {message.splitlines()[0] if message else '?'}"
        )
        self._say(text + (f"\n→ next: {next_step}" if next_step else ""))

    @hookimpl
    def deploykit_freeze_changed(self, env: str, freeze: dict[str, Any] | None) -> None:
        if not self._wanted(env, "freeze"):
            return
        if freeze is None:
            self._say(f"🌤 {env}: thawed by {self.who()}: deploys go again")
            return
        until = str(freeze.get("until") or "").replace("+00:00", "Z")
        self._say(
            f"❄️ {env}: frozen by {freeze.get('owner')} {f'until {until}' if until else 'until inv unfreeze'}: "
            f"{freeze.get('reason')} (deploys refused; rollbacks go on)"
        )

    @hookimpl
    def deploykit_deployment_not_run(self, env: str, report: dict[str, Any]) -> None:
        if report.get("outcome") == "nothing" or not self._wanted(env, "refused"):
            return  # nothing to deploy is no news
        what = str(report.get("outcome")) if report.get("outcome") in MARKS else "failed"
        message = str(report.get("message") or "?").splitlines()[0]
        next_step = str(report.get("next_step") or "")
        text = f"{MARKS[what]} {env}: {report.get('command')} by {self.who()} {what} before any step: {message}"
        self._say(text + (f"\n→ next: {next_step}" if next_step else ""))

    # -- sending -----------------------------------------------------------------------------------------------

    def _wanted(self, env: str, event: str) -> bool:
        named = env in self.environments or any(pattern_matches(p, env) for p in self.environments if "*" in p)
        if not self.variable or not named or event not in self.on:
            return False
        if not self.url:
            if not self.warned:
                self._warn(f"${self.variable} is not set: deploys to {env} are not announced")
                self.warned = True
            return False
        return True

    def _say(self, text: str) -> None:
        # what the chat reads as markup is escaped as Slack asks senders to (&, <, >): a commit's subject holding
        # <!channel> or <https://...|Approve the prod deploy> pinged everyone, or showed a link the bot vouched for
        text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
        link = run_url(self.environ)
        if link:
            first, newline, rest = text.partition("\n")
            text = f"{first} ({link}){newline}{rest}"
        if self._worker is None:
            self._worker = threading.Thread(target=self._run, name="notify", daemon=True)
            self._worker.start()
            atexit.register(self.flush_at_exit)
        self._unsent.append(text)
        self._queue.put(text)

    def _run(self) -> None:
        while (text := self._queue.get()) is not None:
            try:
                self.send(self.url, text)
            except Exception as exc:  # any: the sender must outlive it, or every later message is lost unsaid
                self._warn(f"the chat did not take a message ({_why(exc, self.variable)}); it was: {text[:80]}")
            finally:
                self._unsent.remove(text)
                self._queue.task_done()
        self._queue.task_done()

    def flush(self, timeout: float = TIMEOUT) -> bool:
        """Wait for the queued messages to go out, at most ``timeout`` seconds; whether they all did."""
        worker = self._worker
        if worker is None:
            return True
        self._worker = None
        self._queue.put(None)
        worker.join(timeout)
        return not worker.is_alive()

    def flush_at_exit(self, timeout: float = TIMEOUT) -> None:
        """:meth:`flush`, at the process's exit; the messages not sent by then are said on stderr (the worker, a
        daemon, ends with the process): how many, and the first."""
        if self.flush(timeout):
            return
        unsent = list(self._unsent)
        if unsent:
            many = f"{len(unsent)} message{'s' if len(unsent) > 1 else ''}"
            self._warn(
                f"{many} not sent to the chat within {timeout:g}s at exit (dropped); the first: {unsent[0][:80]}"
            )

    def _warn(self, text: str) -> None:
        (self.stderr or sys.stderr).write(f"⚠️  plugin {NAME!r}: {text}\n")
