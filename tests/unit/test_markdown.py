"""deploykit.markdown: ``inv diff --markdown``, for a pull request's comment or a CI job's summary."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from unittest.mock import Mock

import pytest

from deploykit import commands, markdown
from deploykit.errors import UsageError
from deploykit.git import commit_url_base
from deploykit.markdown import Review, StackSection
from tests.conftest import git

TABLE = """resource              type                   action    replacement
--------------------  ---------------------  --------  -------------
LoginHandler5CDFBDA2  AWS::Lambda::Function  Modify    False
  ↳ MemorySize: 256 → 512"""


def review(**given: object) -> Review:
    fields: dict[str, object] = {
        "env": "dev",
        "base": "0123456789abcdef0123",
        "head": "fedcba9876543210fedc",
        "components": ["stack:api"],
        "analysis": ["🐳 Stack:    cdk/stacks/api_stack.py → inv deploy.stack CarRentalApiStack"],
        "command": "inv deploy.auto --env dev",
        "stacks": [StackSection("CarRentalApiStack", "UPDATE_COMPLETE", TABLE, 1)],
    }
    return Review(**(fields | given))  # type: ignore[arg-type]


def test_markup_in_plain_text_is_shown_as_it_is() -> None:
    assert markdown.escape("lambda/__init__.py | a*b [x](y) <b>") == r"lambda/\_\_init\_\_.py \| a\*b \[x\](y) \<b\>"
    assert markdown.escape("two\nlines") == "two lines"
    # a lone carriage return ends a line too (CommonMark): a subject with one closed the list and began a heading
    assert markdown.escape("fix\r\r# Security review: approved") == r"fix  # Security review: approved"
    assert len(markdown.table(["a"], [[markdown.escape("x\r\r| fake | row |")]]).splitlines()) == 3  # one row
    assert len(markdown.table(["a"], [["x\ry"]]).splitlines()) == 3
    assert markdown.code("a") == "`a`"
    assert markdown.code("a `b` c") == "``a `b` c``"
    assert markdown.code("`x") == "`` `x ``"
    assert markdown.block("x") == "```text\nx\n```"
    assert markdown.block("a\n````\nb\n") == "`````text\na\n````\nb\n`````"


def test_a_review_heads_with_what_deploys_and_shows_each_stack_as_the_terminal_does() -> None:
    text = markdown.review(review())
    lines = text.splitlines()
    assert lines[0] == "### 🔍 deploykit: what `inv deploy.auto --env dev` would deploy to `dev`"
    assert lines[2] == "`0123456789ab` → `fedcba987654` · **1 component changed**: `stack:api`"
    assert "**Needs attention**" not in text
    assert "#### Change Analysis\n\n```text\n🐳 Stack:    cdk/stacks/api_stack.py" in text
    assert "#### 🐳 CarRentalApiStack · `UPDATE_COMPLETE` · 1 resource change\n\n```text\n" + TABLE + "\n```" in text
    assert text.endswith("```\n")


def test_a_review_of_nothing_says_so_and_a_first_deploy_has_no_base() -> None:
    text = markdown.review(review(components=[], analysis=[], stacks=[], base=None))
    assert "up to `fedcba987654` (nothing deployed before) · **nothing to deploy**" in text
    assert "```text\nno change since what is live\n```" in text
    created = markdown.review(review(stacks=[StackSection("S", "not deployed", "  would be created", None)]))
    assert "#### 🐳 S · `not deployed` · would be created" in created


def test_what_needs_attention_comes_first_and_a_verdict_is_said() -> None:
    stack = StackSection("D", "UPDATE_COMPLETE", TABLE, 2, attention=("D: T (AWS::DynamoDB::Table) holds data",))
    text = markdown.review(review(stacks=[stack], attention=["app: live at 0123, ahead"], verdict=["stack:api x"]))
    head = text.split("#### Change Analysis")[0]
    assert "**Needs attention**\n\n- app: live at 0123, ahead\n- D: T (AWS::DynamoDB::Table) holds data" in head
    assert "❌ **`dev` does not run what this checkout would deploy**\n\n- stack:api x" in head
    assert "✅ `dev` runs what this checkout would deploy" in markdown.review(review(verdict=[]))


def test_a_long_table_is_folded_and_the_document_fits_a_comment() -> None:
    long = "\n".join(f"  ↳ Value{i}: 1 → 2" for i in range(markdown.FOLD_LINES + 1))
    text = markdown.review(review(stacks=[StackSection("A", "UPDATE_COMPLETE", long, 1)]))
    assert "<details><summary>the changes and their values</summary>\n\n```text\n  ↳ Value0" in text
    huge = "x" * (markdown.MAX_CHARS // 2)
    stacks = [StackSection(n, "UPDATE_COMPLETE", huge, 1) for n in ("First", "Second", "Third")]
    text = markdown.review(review(stacks=stacks))
    assert len(text) <= markdown.MAX_CHARS
    assert "#### 🐳 First · `UPDATE_COMPLETE`" in text  # the first kept whole, the last ones cut, saying so
    assert "#### 🐳 Third\n\n(cut to fit: `inv diff --json` lists its changes)" in text
    assert "#### 🐳 Second\n\n(cut to fit" in text
    paths = [f"📱 App code: backend/app/module_{i:05d}.py → inv deploy.app" for i in range(5000)]
    text = markdown.review(review(analysis=paths, stacks=stacks))
    assert len(text) <= markdown.MAX_CHARS
    assert "module_00000.py" in text and "module_04999.py" not in text
    assert re.search(r"\n… and \d+ more lines \(inv diff --json lists them\)\n```", text)


def test_a_table_keeps_each_cell_on_its_line_and_a_bar_escaped_once() -> None:
    cells = [markdown.escape("x|y"), "two\nlines"]
    assert markdown.table(["a", "b"], [cells]) == "| a | b |\n|---|---|\n| x\\|y | two lines |"


def test_json_and_markdown_together_are_refused_before_anything_is_read() -> None:
    with pytest.raises(UsageError, match="--json and --markdown both print on stdout") as refused:
        commands.diff(as_json=True, as_markdown=True, runtime=Mock(spec=commands.Runtime))
    assert refused.value.exit_code == 2


def test_the_commits_going_live_follow_the_analysis_linked_where_the_repository_is_known() -> None:
    commits = [
        {"sha": "1f75bd3b539f" + "0" * 28, "author": "ana", "subject": "Login: `v2` <fast>", "components": ["app"]},
        *({"sha": f"{i:040x}", "author": "bo", "subject": f"Fix {i}", "components": []} for i in range(31)),
    ]
    url = "https://github.com/acme/car-rental/commit/"
    text = markdown.review(review(commits=commits, commit_url=url))
    section = text.split("#### Commits going live (32)\n\n")[1]
    first = f"- [`1f75bd3b539f`]({url}1f75bd3b539f{'0' * 28}) Login: \\`v2\\` \\<fast\\> · ana · `app`\n"
    assert section.startswith(first)
    assert "\n- … and 2 more (`inv diff --json` lists them)\n" in section
    assert text.index("#### Change Analysis") < text.index("#### Commits going live") < text.index("#### 🐳")
    plain = markdown.review(review(commits=commits[:1]))
    assert "\n- `1f75bd3b539f` Login:" in plain  # no repository on the web known: not linked
    assert "Commits going live" not in markdown.review(review())


def test_where_a_commit_is_shown_on_the_web(tmp_path: Path) -> None:
    git(tmp_path, "init", "-q")
    assert commit_url_base(tmp_path, {}) == ""  # no origin
    expected = {
        "git@github.com:acme/car-rental.git": "https://github.com/acme/car-rental/commit/",
        "https://x-access-token@github.com/acme/car-rental": "https://github.com/acme/car-rental/commit/",
        "ssh://git@gitlab.com/acme/sub/car-rental.git": "https://gitlab.com/acme/sub/car-rental/-/commit/",
        "https://git.example.com/acme/car-rental.git": "",  # another host: no guess
    }
    for remote, base in expected.items():
        subprocess.run(["git", "-C", str(tmp_path), "remote", "remove", "origin"], capture_output=True)
        git(tmp_path, "remote", "add", "origin", remote)
        assert commit_url_base(tmp_path, {}) == base, remote
    actions = {"GITHUB_SERVER_URL": "https://github.example.com", "GITHUB_REPOSITORY": "acme/car-rental"}
    assert commit_url_base(tmp_path, actions) == "https://github.example.com/acme/car-rental/commit/"
    assert commit_url_base(tmp_path, {"CI_PROJECT_URL": "https://gl.example.com/a/b/"}) == (
        "https://gl.example.com/a/b/-/commit/"
    )
