"""``summary``: each deployment, and each smoke run of its own, as Markdown on the CI job's page (GitHub Actions').

GitHub Actions shows on a run's page the Markdown its steps append to the file ``$GITHUB_STEP_SUMMARY`` names.
This plugin appends there, as each deployment ends, what the terminal's table says: the environment, who, how
long, each step with its status, time and detail, what each stack update changed, and a failure's message and next
step. The automatic rollback after a failed deploy is a deployment of its own, so it follows as its own section. A
smoke run of its own (``inv smoke``, ``nox -s smoke``) writes its checks' table; a deploy that ran no step says
why: nothing to deploy, or refused (a freeze, the lock, a guard) or failed before its first step, with what to do.
On a laptop the variable is not set and the plugin does nothing. Another CI's page that takes Markdown from a file::

    [plugins.summary]
    file_env = "GITHUB_STEP_SUMMARY"   # the default: the environment variable naming the file; "" turns it off
    annotations = true                 # the default: in GitHub Actions, a failure is an error annotation too

In GitHub Actions (``$GITHUB_ACTIONS`` is ``true``) a deployment that failed or was refused, before its first step
or at one, and a smoke run that failed also print a workflow command, ``::error title=...::message``, on stderr:
the runner reads those on stderr as on stdout in a ``run:`` step, and shows the error on the run's page and in the
pull request's checks. A deployment interrupted at a step (Ctrl-C, or SIGTERM from a cancelled job: exit 130) is a
``::warning`` of what it left instead (one interrupted before its first step changed nothing, and prints none).

A file that cannot be written is said on stderr and fails nothing.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator, Mapping
from typing import Any, TextIO

from deploykit.checks import CheckResult
from deploykit.config import Config
from deploykit.errors import ConfigError
from deploykit.git import github_commit_url
from deploykit.history import actor
from deploykit.hookspecs import hookimpl
from deploykit.markdown import code, escape, table
from deploykit.output import escaped_controls
from deploykit.plan import nested_name
from deploykit.smoke import summary
from plugins._support import variable_of
from plugins.notify import MARKS, failed_step, how_it_ended

NAME = "summary"
KEYS = ("file_env", "annotations")
DEFAULT_VARIABLE = "GITHUB_STEP_SUMMARY"
COMMITS_SHOWN = 20  # the commits a run takes live, listed on the page
CHANGES_SHOWN = 40  # lines of one stack update's changes in the summary (the history keeps up to 100)
ICONS = {"done": "✅ done", "skipped": "⏭ skipped", "failed": "❌ failed", "not run": "· not run"}


def run_markdown(
    report: Mapping[str, Any], plan: Mapping[str, Any] | None, who: str, error: str = "", commit_url: str = ""
) -> str:
    """A deployment (``report``: the run as ``--json`` prints it; ``plan``: as ``--dry-run --json`` does) as a
    section of Markdown: a heading with the result, what it deploys, a table of its steps, each stack update's
    changes (folded), and a failure's message and next step."""
    env, title, seconds = report.get("env", "?"), report.get("title", "?"), float(report.get("seconds", 0))
    failure = report.get("error") or {}
    if report.get("ok", not failure):
        heading = f"### ✅ {code(str(env))} · {escape(str(title))} by {escape(who)} · {seconds:.1f} s"
    else:
        what = how_it_ended(report)
        heading = (
            f"### {MARKS[what]} {code(str(env))} · {escape(str(title))} by {escape(who)} · {what} at "
            f"{code(failed_step(report))} after {seconds:.1f} s"
        )
    parts = [heading]
    deploys = [f"{code(str(d['component']))} at {code(str(d['sha'])[:12])}" for d in (plan or {}).get("deploys", [])]
    if deploys:
        parts.append("Deploys " + ", ".join(deploys) + ".")
    commits = list((plan or {}).get("commits") or ())
    if commits:
        listed = []
        for c in commits[:COMMITS_SHOWN]:
            sha = str(c.get("sha", "?"))
            linked = f"[{code(sha)}]({commit_url}{sha})" if commit_url else code(sha)
            listed.append(f"- {linked} {escape(str(c.get('subject', '')))} ({escape(str(c.get('author', '')))})")
        if len(commits) > COMMITS_SHOWN:
            listed.append(f"- and {len(commits) - COMMITS_SHOWN} more")
        parts.append(f"{len(commits)} commit{'s' if len(commits) > 1 else ''} going live:\n\n" + "\n".join(listed))
    if report.get("held"):
        parts.append("Held back (`--only`/`--skip`): " + ", ".join(code(str(c)) for c in report["held"]) + ".")
    if not report.get("ok", not failure):
        message, _, next_step = (error or str(failure.get("message", ""))).partition("\n  → next: ")
        next_step = next_step or str(failure.get("next_step") or "")
        parts.append("\n".join(f"> {escape(line)}" for line in message.splitlines() or ["?"]))
        if next_step:
            parts.append(f"**Next:** {escape(next_step)}")
    rows = [
        [escape(name), _status(s), _seconds(s), escape(detail)] for name, s, detail in _steps(report.get("steps", []))
    ]
    if rows:
        parts.append(table(["step", "status", "time", "detail"], rows))
    for _name, step, _detail in _steps(report.get("steps", [])):
        changes = [str(c) for c in step.get("changes") or ()]
        if not changes:
            continue
        shown = changes[:CHANGES_SHOWN]
        more = len(changes) - len(shown)
        items = [f"- {escape(c)}" for c in shown] + ([f"- … and {more} more (`inv history`)"] if more > 0 else [])
        # a step's description starts with what it acts on: "CarRentalApiStack: change set from ..."
        what = escape(str(step.get("description") or step.get("step")).partition(": ")[0])
        parts.append(f"<details><summary>{what}: what it changed</summary>\n\n" + "\n".join(items) + "\n\n</details>")
    return "\n\n".join(parts) + "\n\n"


NOT_RUN = {"nothing": ("✅", "nothing to deploy"), **{what: (mark, what) for what, mark in MARKS.items()}}


def not_run_markdown(report: Mapping[str, Any], who: str) -> str:
    """A deploy command that ended before any step ran (``report``: as deploykit_deployment_not_run gives it) as a
    section of Markdown: nothing to deploy, or why it was refused or failed and what to do."""
    mark, what = NOT_RUN.get(str(report.get("outcome")), ("❌", escape(str(report.get("outcome")))))
    env, head = str(report.get("env", "?")), str(report.get("head") or "")
    when = "" if report.get("outcome") == "nothing" else " before any step"
    parts = [f"### {mark} {code(env)} · {escape(str(report.get('command', '?')))} by {escape(who)} · {what}{when}"]
    if report.get("outcome") == "nothing":
        parts.append(f"{code(env)} runs what {code(head) if head else 'the checkout'} would deploy.")
    else:
        parts.append("\n".join(f"> {escape(line)}" for line in str(report.get("message") or "?").splitlines()))
        if report.get("next_step"):
            parts.append(f"**Next:** {escape(str(report['next_step']))}")
    if report.get("held"):
        parts.append("Held back (`--only`/`--skip`): " + ", ".join(code(str(c)) for c in report["held"]) + ".")
    return "\n\n".join(parts) + "\n\n"


CHECK_ICONS = {"passed": "✅ passed", "failed": "❌ failed", "skipped": "⏭ skipped"}


def annotation(title: str, message: str, level: str = "error") -> str:
    """A GitHub Actions workflow command for an annotation: ``::error title=TITLE::MESSAGE`` (``level``: ``error``
    or ``warning``), each escaped as
    the runner unescapes it (``%``, CR and LF in both; ``:`` and ``,`` in the title, a property); a control character
    (an escape sequence an app answered with, in a check's detail) written as its escape, as everything deploykit
    prints is (the command itself is written as it is: GuardedStream.command)."""

    def data(text: str) -> str:
        return escaped_controls(text).replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")

    return f"::{level} title={data(title).replace(':', '%3A').replace(',', '%2C')}::{data(message)}\n"


def smoke_markdown(report: Mapping[str, Any], who: str) -> str:
    """A smoke run of its own (``report``: as ``inv smoke --json`` prints it) as a section of Markdown: a heading with
    the result and the counts, a table of the checks."""
    checks = [CheckResult(str(c["name"]), c["status"], float(c["seconds"]), str(c["detail"])) for c in report["checks"]]
    mark = "✅" if report.get("ok") else "❌"
    heading = f"### {mark} {code(str(report.get('env')))} · smoke by {escape(who)} · {summary(checks) or 'no checks'}"
    rows = [[escape(c.name), CHECK_ICONS[c.status], f"{c.seconds:.2f} s", escape(c.detail)] for c in checks]
    return "\n\n".join([heading, table(["check", "result", "time", "detail"], rows)]) + "\n\n"


def _steps(steps: list[dict[str, Any]], depth: int = 0) -> Iterator[tuple[str, dict[str, Any], str]]:
    """(name as the table shows it, the step, its detail) for each step, a group's steps under it (``↳``)."""
    for step in steps:
        yield nested_name(str(step.get("step", "?")), depth), step, str(step.get("detail") or "")
        yield from _steps(step.get("children") or [], depth + 1)


def _status(step: Mapping[str, Any]) -> str:
    """A step's status as the table shows it: a failure that was a refusal (a guard: it changed nothing) as one."""
    status = str(step.get("status"))
    return "🛑 refused" if step.get("refused") else ICONS.get(status, escape(status))


def _seconds(step: Mapping[str, Any]) -> str:
    return "" if step.get("status") == "not run" else f"{float(step.get('seconds', 0)):.1f} s"


class Summary:
    """The plugin: hook implementations over one process's settings."""

    def __init__(
        self,
        stderr: TextIO | None = None,
        who: Callable[[], str] = actor,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.stderr = stderr
        self.who = who
        self.environ = os.environ if environ is None else environ
        self.variable = DEFAULT_VARIABLE
        self.annotations = True
        self.plans: dict[str, Mapping[str, Any]] = {}

    @hookimpl
    def deploykit_configure(self, config: Config) -> None:
        settings, where = config.plugin_settings(NAME, KEYS)
        self.variable = variable_of(settings, "file_env", DEFAULT_VARIABLE, where)
        self.annotations = settings.get("annotations", True)
        if not isinstance(self.annotations, bool):
            raise ConfigError(f"{where}: annotations must be true or false", next_step="fix it in deploy.toml")

    @hookimpl
    def deploykit_deployment_started(self, env: str, plan: dict[str, Any]) -> None:
        self.plans[env] = plan

    @hookimpl
    def deploykit_deployment_finished(self, env: str, report: dict[str, Any]) -> None:
        self._write(run_markdown(report, self.plans.pop(env, None), self.who(), commit_url=self._commit_url()))

    @hookimpl
    def deploykit_deployment_failed(self, env: str, report: dict[str, Any], error: str) -> None:
        self._write(run_markdown(report, self.plans.pop(env, None), self.who(), error, self._commit_url()))
        what = how_it_ended(report)
        self._annotate(
            f"deploykit: {report.get('title')} to {env} {what} at {failed_step(report)}",
            error,
            "warning" if what == "interrupted" else "error",  # a cancelled job: what it left, not a failure of its own
        )

    @hookimpl
    def deploykit_deployment_not_run(self, env: str, report: dict[str, Any]) -> None:
        self._write(not_run_markdown(report, self.who()))
        if report.get("outcome") in ("refused", "failed"):
            message = str(report.get("message") or "?")
            if report.get("next_step"):
                message += f"\n  → next: {report['next_step']}"
            self._annotate(f"deploykit: {report.get('command')} to {env} {report['outcome']} before any step", message)

    @hookimpl
    def deploykit_smoke_finished(self, env: str, report: dict[str, Any]) -> None:
        self._write(smoke_markdown(report, self.who()))
        failed = [c for c in report.get("checks", []) if c.get("status") == "failed"]
        if not report.get("ok") and failed:
            lines = [f"{c.get('name')}: {c.get('detail')}" for c in failed]
            self._annotate(f"deploykit: smoke of {env} failed ({len(failed)} check(s))", "\n".join(lines))

    def _commit_url(self) -> str:
        """Where GitHub shows a commit of the job's repository, the SHA to append ("" outside GitHub Actions)."""
        return github_commit_url(self.environ)

    def _annotate(self, title: str, message: str, level: str = "error") -> None:
        """An annotation, in GitHub Actions only (see the module's doc)."""
        if self.annotations and self.environ.get("GITHUB_ACTIONS") == "true":
            out = self.stderr or sys.stderr
            getattr(out, "command", out.write)(annotation(title, message, level))  # as it is: deploykit's own command
            out.flush()

    def _write(self, text: str) -> None:
        path = self.environ.get(self.variable, "") if self.variable else ""
        if not path:
            return
        try:
            # a lone surrogate (a check quoting bytes it decoded so) is escaped, not the whole section lost
            with open(path, "a", encoding="utf-8", errors="backslashreplace") as out:
                out.write(text)
        except OSError as exc:
            (self.stderr or sys.stderr).write(
                f"⚠️  plugin {NAME!r}: could not write the job summary to {path} (${self.variable}): {exc}\n"
            )
