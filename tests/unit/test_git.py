"""Image tags from git: the commit, and dirty trees refused unless allowed (then uniquely tagged)."""

from __future__ import annotations

import os
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest

from deploykit.errors import UsageError
from deploykit.git import commit_times, current_revision, dirty_paths, log, newest_first, unpushed
from tests.conftest import git


def test_clean_tree_is_tagged_with_the_short_sha(project: Path) -> None:
    revision = current_revision(project)
    assert revision.sha == git(project, "rev-parse", "HEAD").strip()
    assert revision.tag == revision.sha[:12] and not revision.dirty


def test_dirty_tree_is_refused_with_the_paths_and_the_way_out(project: Path) -> None:
    (project / "backend" / "app" / "main.py").write_text("# changed\n")
    with pytest.raises(UsageError) as err:
        current_revision(project)
    assert "backend/app/main.py" in err.value.message
    assert "--allow-dirty" in (err.value.next_step or "")
    assert err.value.exit_code == 2


def test_untracked_files_make_a_tree_dirty_but_ignored_ones_do_not(project: Path) -> None:
    (project / ".sandbox").mkdir()
    (project / ".sandbox" / "state").write_text("x")
    assert dirty_paths(project) == ()
    (project / "new.txt").write_text("x")
    assert dirty_paths(project) == ("new.txt",)


def test_allowed_dirty_tags_are_unique_to_the_diff(project: Path) -> None:
    main = project / "backend" / "app" / "main.py"
    main.write_text("# one\n")
    first = current_revision(project, allow_dirty=True)
    assert first.tag.startswith(first.short + "-dirty-")
    assert current_revision(project, allow_dirty=True).tag == first.tag  # same diff, same tag
    main.write_text("# two\n")
    second = current_revision(project, allow_dirty=True)
    assert second.tag != first.tag
    (project / "extra.py").write_text("x = 1\n")
    assert current_revision(project, allow_dirty=True).tag != second.tag


def test_an_untracked_file_made_executable_makes_a_new_dirty_tag(project: Path) -> None:
    """The build copies a file's mode with it (an entrypoint script made runnable): its tag must change, or the image
    built before the chmod is taken for built. (A tracked file's mode change is in git's diff already.)"""
    script = project / "backend" / "start.sh"
    script.write_text("#!/bin/sh\nexec python -m app\n")
    script.chmod(0o644)
    first = current_revision(project, allow_dirty=True).tag
    script.chmod(0o755)
    assert current_revision(project, allow_dirty=True).tag != first


@pytest.mark.parametrize("flag", ["--assume-unchanged", "--skip-worktree"])
def test_an_edit_of_a_file_git_is_told_to_pass_over_is_an_uncommitted_change(project: Path, flag: str) -> None:
    """git status and git diff say nothing of a file marked assume-unchanged or skip-worktree (a local settings
    file), but the build reads the work tree: an edit of it went into an image tagged with the commit's SHA."""
    main = project / "backend" / "app" / "main.py"
    git(project, "update-index", flag, "backend/app/main.py")
    assert dirty_paths(project) == ()  # marked, not edited
    main.write_text("# local\n")
    assert git(project, "status", "--porcelain") == ""  # git itself says nothing
    assert dirty_paths(project) == ("backend/app/main.py",)
    with pytest.raises(UsageError, match=r"backend/app/main.py \(git is told to pass over backend/app/main.py"):
        current_revision(project)
    first = current_revision(project, allow_dirty=True).tag
    main.write_text("# local, again\n")
    assert current_revision(project, allow_dirty=True).tag != first
    main.unlink()  # left out, as a sparse checkout leaves it: no change a build would take
    assert dirty_paths(project) == ()


def test_a_file_name_that_is_not_utf8_is_listed_as_the_file_it_is(project: Path) -> None:
    """A Latin-1 name (café.py written by an old editor): its path is the file's (its bytes kept), and a dirty
    build of it is tagged (a traceback before)."""
    with open(os.fsencode(project / "backend" / "app") + b"/caf\xe9.py", "wb") as out:
        out.write(b"X = 1\n")
    (name,) = dirty_paths(project)
    assert (project / name).is_file() and os.fsencode(name) == b"backend/app/caf\xe9.py"
    assert current_revision(project, allow_dirty=True).dirty


def test_a_file_taken_out_of_git_but_left_in_the_tree_is_listed_once(project: Path) -> None:
    """git rm --cached: git status lists it twice (deleted from the index, and untracked)."""
    git(project, "rm", "-q", "--cached", "backend/app/main.py")
    assert dirty_paths(project) == ("backend/app/main.py",)


def test_renames_are_listed_once(project: Path) -> None:
    git(project, "mv", "backend/app/server.py", "backend/app/serve.py")
    assert dirty_paths(project) == ("backend/app/serve.py",)


def test_commit_times_are_read_in_one_go_and_unknown_shas_left_out(project: Path) -> None:
    (project / "later.txt").write_text("x")
    git(project, "add", "later.txt")
    env_time = "2026-11-20T09:00:00+00:00"
    subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@example.invalid", "commit", "-q", "-m", "later"],
        cwd=project,
        check=True,
        env={**os.environ, "GIT_COMMITTER_DATE": env_time, "GIT_AUTHOR_DATE": "2026-01-01T00:00:00+00:00"},
    )
    head = git(project, "rev-parse", "HEAD").strip()
    first = git(project, "rev-parse", "HEAD~1").strip()[:12]
    found = commit_times(project, [head[:12], first, "0" * 12, "", "--all", head[:12], "HEAD"])
    assert found[head[:12]] == datetime(2026, 11, 20, 9, 0, tzinfo=UTC)  # the committer's time, not the author's
    assert found["HEAD"] == found[head[:12]]
    assert first in found and set(found) == {head[:12], first, "HEAD"}
    assert commit_times(project, []) == {}


def test_commits_are_put_in_one_order_and_histories_with_no_common_ancestor_give_none(project: Path) -> None:
    base = git(project, "rev-parse", "HEAD").strip()
    for name in ("one", "two"):
        (project / f"{name}.txt").write_text(name)
        git(project, "add", "-A")
        git(project, "commit", "-qm", f"add {name}")
    head = git(project, "rev-parse", "HEAD").strip()
    place = newest_first(project, head, [base])
    assert [c.subject for c in log(project, base, head)] == ["add two", "add one"]
    assert place[head] == 0 and len(place) == 2
    assert [c.subject for c in log(project, base, head, ["one.txt"])] == ["add one"]
    git(project, "checkout", "-q", "--orphan", "elsewhere")
    git(project, "commit", "-qm", "another history")
    orphan = git(project, "rev-parse", "HEAD").strip()
    assert newest_first(project, head, [base, orphan]) == {}  # no order to give: times decide


def test_unpushed_names_the_commits_no_remote_branch_holds_and_none_without_a_remote(
    project: Path, tmp_path: Path
) -> None:
    first = git(project, "rev-parse", "HEAD").strip()
    assert unpushed(project, [first]) is None  # no remote-tracking branch at all: nothing to tell
    git(tmp_path, "init", "-q", "--bare", str(tmp_path / "origin.git"))
    git(project, "remote", "add", "origin", str(tmp_path / "origin.git"))
    git(project, "push", "-q", "origin", "HEAD:main")
    (project / "a.txt").write_text("local\n")
    git(project, "add", "-A")
    git(project, "commit", "-qm", "local one")
    second = git(project, "rev-parse", "HEAD").strip()
    (project / "a.txt").write_text("local again\n")
    git(project, "commit", "-qam", "local two")
    third = git(project, "rev-parse", "HEAD").strip()
    assert unpushed(project, [third, first, second, third]) == [third, second]  # in their order, once each
    assert unpushed(project, [first]) == [] and unpushed(project, []) == []
    git(project, "push", "-q", "origin", "HEAD~1:main")
    assert unpushed(project, [first, second, third]) == [third]


def test_a_dirty_tag_is_of_the_changes_not_of_how_the_users_git_shows_a_diff(project: Path, tmp_path: Path) -> None:
    """diff.external (difftastic's own setup) or a textconv driver renders a diff for people: hashed, two different
    edits gave one tag (the second one's image never built, what is live not what the tree holds)."""
    same = tmp_path / "same.sh"
    same.write_text("#!/bin/sh\necho 'a difference'\n")
    same.chmod(0o755)
    git(project, "config", "diff.external", str(same))
    git(project, "config", "diff.flat.textconv", str(same))
    (project / ".gitattributes").write_text("*.bin diff=flat\n")
    (project / "data.bin").write_bytes(b"\x00one")
    git(project, "add", "-A")
    git(project, "commit", "-qm", "attributes")
    main = project / "backend" / "app" / "main.py"
    main.write_text("# one\n")
    first = current_revision(project, allow_dirty=True).tag
    main.write_text("# two\n")
    assert current_revision(project, allow_dirty=True).tag != first
    git(project, "checkout", "-q", "--", "backend/app/main.py")
    git(project, "config", "--unset", "diff.external")
    (project / "data.bin").write_bytes(b"\x00two")
    second = current_revision(project, allow_dirty=True).tag
    (project / "data.bin").write_bytes(b"\x00three")
    assert current_revision(project, allow_dirty=True).tag != second


def test_log_reads_signed_commits_whatever_log_show_signature_says(project: Path, tmp_path: Path) -> None:
    """log.showSignature = true (set by those who sign their commits) puts git's word on each signature before the
    commit's line: it was read into the SHA ("No signature\\n<sha>"), and the commits behind a deploy were named so."""
    base = git(project, "rev-parse", "HEAD").strip()
    tree = git(project, "write-tree").strip()
    signed = tmp_path / "signed"
    signed.write_text(
        f"tree {tree}\nparent {base}\nauthor t <t@example.invalid> 1700000000 +0000\n"
        "committer t <t@example.invalid> 1700000000 +0000\n"
        "gpgsig -----BEGIN SSH SIGNATURE-----\n U1NIU0lH\n -----END SSH SIGNATURE-----\n\nsigned\n"
    )
    head = git(project, "hash-object", "-t", "commit", "-w", str(signed)).strip()
    git(project, "config", "log.showSignature", "true")
    assert [(c.sha, c.subject) for c in log(project, base, head)] == [(head, "signed")]


def test_a_dirty_tag_takes_in_the_files_of_a_repository_cloned_inside_the_tree(project: Path) -> None:
    """A git clone inside the project, not a submodule (backend/lib): git lists its folder alone as untracked, and
    an edit of its files, which the build reads, left the tag as it was (the image taken for built, the edit not
    deployed)."""
    lib = project / "backend" / "lib"
    lib.mkdir()
    git(lib, "init", "-q")
    (lib / "m.py").write_text("X = 1\n")
    assert dirty_paths(project) == ("backend/lib/",)
    first = current_revision(project, allow_dirty=True).tag
    (lib / "m.py").write_text("X = 2\n")
    second = current_revision(project, allow_dirty=True).tag
    assert second != first
    git(lib, "add", "-A")
    git(lib, "commit", "-qm", "lib")
    (lib / "n.py").write_text("")
    assert current_revision(project, allow_dirty=True).tag not in (first, second)


def test_reading_the_work_tree_leaves_gits_index_alone(project: Path) -> None:
    """git status refreshes an index whose stat data is stale, writing it under .git/index.lock: the person's own
    git add or commit beside a deploy failed on that lock ("Unable to create '.git/index.lock': File exists", a
    helper's run: 35 of 597 commits). deploykit reads without git's optional locks."""
    touched = project / "deploy.toml"
    index = project / ".git" / "index"
    later = index.stat().st_mtime + 10
    os.utime(touched, (later, later))  # the same content, its stat data changed: git would refresh the index
    before = index.read_bytes()
    assert dirty_paths(project) == ()
    assert index.read_bytes() == before
