"""Markdown for reviews: ``inv diff --markdown``, a pull request's comment or a CI job's summary page.

GitHub, GitLab and Bitbucket render the same subset: headings, tables, fenced code blocks, block quotes and
``<details>``. The Change Analysis and each stack's table are put in code blocks exactly as the terminal shows them
(their columns line up there, and a reviewer reads what the deploying developer reads); what a reviewer must not
miss (a refusal, data replaced, access changed) is listed above them, outside any block.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

MAX_CHARS = 60_000  # GitHub takes a comment of 65,536 characters at most, and a job summary of 1 MiB
FOLD_LINES = 30  # a stack's table longer than this is folded (<details>: opened with a click)
COMMITS_LISTED = 30  # the commits going live, listed at most
# what is markup anywhere in a line; what is markup only at a line's start (#, -, 1.) is never escaped, as the text
# escaped here always follows something ("- ", "> ", a heading's words)
_SPECIAL = re.compile(r"([\\`*_\[\]<>|~])")


def escape(text: str) -> str:
    """``text`` as Markdown shows it literally: each character Markdown would read as markup backslash-escaped (a
    path's ``__init__.py`` is not bold, a ``|`` does not end a table's cell)."""
    return _SPECIAL.sub(r"\\\1", " ".join(text.splitlines()))  # a lone \r ends a line too (CommonMark)


def code(text: str) -> str:
    """``text`` as inline code, whatever backticks it holds."""
    run = max((len(r) for r in re.findall(r"`+", text)), default=0)
    fence = "`" * (run + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def block(text: str, info: str = "text") -> str:
    """``text`` as a fenced code block, with a fence longer than any run of backticks inside it."""
    run = max((len(r) for r in re.findall(r"`{3,}", text)), default=2)
    fence = "`" * (run + 1)
    return f"{fence}{info}\n{text.rstrip()}\n{fence}"


@dataclass(frozen=True)
class StackSection:
    """A stack's part of the review: its name and status, its preview as printed, and what stands out in it."""

    name: str
    status: str
    text: str  # the preview as the terminal shows it (the changes' table, their values under them)
    changes: int | None  # resource changes; None: the stack would be created
    attention: tuple[str, ...] = ()  # what a reviewer must not miss in it (said above every block)
    no_preview: bool = False  # its status takes no change set (busy, a failed rollback): changes unknown, not None


@dataclass(frozen=True)
class Review:
    """What ``inv diff --markdown`` renders: an environment's changes since what it runs, and each stack's."""

    env: str
    base: str | None
    head: str
    components: Sequence[str]  # those the analysis counts changed
    analysis: Sequence[str]  # the Change Analysis' lines, as printed
    command: str  # the command that deploys them all
    stacks: Sequence[StackSection] = ()
    attention: Sequence[str] = ()  # outside the stacks (a component deploy.auto refuses to bring back, ...)
    verdict: Sequence[str] | None = None  # --verify: what differs (empty: nothing does); None: not asked
    # the commits behind the changes, newest first ({"sha", "author", "subject", "components"}), and where one is
    # shown on the web, its SHA appended ("": not linked)
    commits: Sequence[Mapping[str, Any]] = ()
    commit_url: str = ""


def review(data: Review) -> str:
    """The review as one Markdown document, at most :data:`MAX_CHARS` long: the Change Analysis takes half of it at
    most, and the stacks' tables are cut to fit, the last first, each saying so."""
    head = data.head[:12]
    base = data.base[:12] if data.base else None
    lines = [f"### 🔍 deploykit: what {code(data.command)} would deploy to {code(data.env)}", ""]
    span = f"{code(base)} → {code(head)}" if base else f"up to {code(head)} (nothing deployed before)"
    if data.components:
        count = len(data.components)
        listed = ", ".join(code(c) for c in data.components)
        lines.append(f"{span} · **{count} component{'s' if count > 1 else ''} changed**: {listed}")
    else:
        lines.append(f"{span} · **nothing to deploy**: no component changed since what {code(data.env)} runs")
    attention = [*data.attention, *(a for s in data.stacks for a in s.attention)]
    if attention:
        lines += ["", "**Needs attention**", ""] + [f"- {escape(a)}" for a in attention]
    if data.verdict is not None:
        lines.append("")
        if data.verdict:
            lines += [f"❌ **{code(data.env)} does not run what this checkout would deploy**", ""]
            lines += [f"- {escape(d)}" for d in data.verdict]
        else:
            lines.append(f"✅ {code(data.env)} runs what this checkout would deploy")
    lines += ["", "#### Change Analysis", "", block(_within(data.analysis, MAX_CHARS // 2))]
    lines += _commits(data.commits, data.commit_url)
    top = "\n".join(lines)
    sections = [_stack(s) for s in data.stacks]
    room = MAX_CHARS - len(top) - 2 * len(sections)
    for i in reversed(range(len(sections))):  # the last stacks give way first
        if sum(len(s) for s in sections) <= room:
            break
        cut = f"#### 🐳 {escape(data.stacks[i].name)}\n\n(cut to fit: `inv diff --json` lists its changes)"
        sections[i] = cut
    return "\n\n".join([top, *sections]) + "\n"


def _commits(commits: Sequence[Mapping[str, Any]], url: str) -> list[str]:
    """The commits going live as a list, each linked where the repository is known to be shown, :data:`COMMITS_LISTED`
    of them at most."""
    if not commits:
        return []
    lines = ["", f"#### Commits going live ({len(commits)})", ""]
    for commit in commits[:COMMITS_LISTED]:
        sha = str(commit.get("sha", ""))
        shown = f"[{code(sha[:12])}]({url}{sha})" if url and sha else code(sha[:12])
        components = ", ".join(code(str(c)) for c in commit.get("components") or ())
        lines.append(f"- {shown} {escape(str(commit.get('subject', '')))} · {escape(str(commit.get('author', '')))}")
        lines[-1] += f" · {components}" if components else ""
    if len(commits) > COMMITS_LISTED:
        lines.append(f"- … and {len(commits) - COMMITS_LISTED} more (`inv diff --json` lists them)")
    return lines


def _within(analysis: Sequence[str], room: int) -> str:
    """The Change Analysis' lines, as many as ``room`` characters hold (a change to thousands of files), then how
    many more there are."""
    kept: list[str] = []
    used = 0
    for line in analysis:
        used += len(line) + 1
        if used > room:
            return "\n".join([*kept, f"… and {len(analysis) - len(kept)} more lines (inv diff --json lists them)"])
        kept.append(line)
    return "\n".join(kept) or "no change since what is live"


def _stack(section: StackSection) -> str:
    if section.no_preview:
        what = "no preview"
    elif section.changes is None:
        what = "would be created"
    elif section.changes:
        what = f"{section.changes} resource change{'s' if section.changes > 1 else ''}"
    else:
        what = "no resource change"
    title = f"#### 🐳 {escape(section.name)} · {code(section.status)} · {what}"
    body = block(section.text)
    if section.text.count("\n") + 1 > FOLD_LINES:
        body = f"<details><summary>the changes and their values</summary>\n\n{body}\n\n</details>"
    return f"{title}\n\n{body}"


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A Markdown table; each cell is taken as Markdown already, on one line (escape plain text first: that escapes
    its ``|`` too)."""

    def cell(text: str) -> str:
        return " ".join(text.splitlines())  # a lone \r too: CommonMark ends a line at it, and the row with it

    out = ["| " + " | ".join(cell(h) for h in headers) + " |", "|" + "---|" * len(headers)]
    out += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
    return "\n".join(out)
