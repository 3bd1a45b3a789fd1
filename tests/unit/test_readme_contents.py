"""The README's contents: a list of its sections and of each task's, linked as GitHub anchors them, kept the same as
the headings. `python -m tests.unit.test_readme_contents` writes it anew after a heading changed."""

from __future__ import annotations

import re
import sys

from tests.conftest import REPO

README = REPO / "README.md"
START, END = "<!-- contents: python -m tests.unit.test_readme_contents -->", "<!-- /contents -->"


def headings(text: str) -> list[tuple[int, str]]:
    """(level, text) of each ``##`` and ``###`` heading outside code blocks."""
    found, fenced = [], False
    for line in text.splitlines():
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and (match := re.match(r"(#{2,3}) (.+)", line)):
            found.append((len(match.group(1)), match.group(2).strip()))
    return found


def anchor(heading: str) -> str:
    """The anchor GitHub gives a heading: lowercase, punctuation (backquotes, dots, brackets...) dropped, each space
    a hyphen."""
    return re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")


def label(heading: str) -> str:
    """A task's heading without its options: `inv deploy.auto [--dry-run] ...` → `inv deploy.auto`."""
    return re.sub(r"`((?:inv|nox -s) [^ `]+)[^`]*`", r"`\1`", heading)


def contents(text: str) -> str:
    lines = [START]
    for level, heading in headings(text):
        lines.append(f"{'  ' * (level - 2)}- [{label(heading)}](#{anchor(heading)})")
    return "\n".join([*lines, END])


def test_the_contents_list_every_section_and_task_and_link_to_them() -> None:
    text = README.read_text(encoding="utf-8")
    assert START in text and END in text, "README has no contents: python -m tests.unit.test_readme_contents"
    shown = text[text.index(START) : text.index(END) + len(END)]
    assert shown == contents(text), "the contents differ from the headings: python -m tests.unit.test_readme_contents"
    anchors = [anchor(h) for _, h in headings(text)]
    assert len(anchors) == len(set(anchors)), "two headings, one anchor: GitHub would number the second"


def test_anchors_and_labels_as_github_and_the_list_show_them() -> None:
    assert anchor("`inv deploy.auto [--dry-run] [--only C,...]`") == "inv-deployauto---dry-run---only-c"
    assert anchor("Exit codes and `--json`") == "exit-codes-and---json"
    assert anchor("`./dev`") == "dev"
    assert label("`inv freeze --reason TEXT [--until WHEN]` and `inv unfreeze`: a deploy freeze") == (
        "`inv freeze` and `inv unfreeze`: a deploy freeze"
    )
    assert label("`nox -s smoke -- --env ENV`") == "`nox -s smoke`"


if __name__ == "__main__":
    text = README.read_text(encoding="utf-8")
    if START not in text:
        sys.exit(f"put {START} and {END} where the contents go")
    new = text[: text.index(START)] + contents(text) + text[text.index(END) + len(END) :]
    README.write_text(new, encoding="utf-8")
