"""Reproducible Lambda packaging: same folder, same bytes; what goes in; vendoring; the real functions."""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import io
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any
from unittest.mock import Mock

import pytest

from deploykit import git, lambda_chain, local_lock, packaging, rollback, version_cleanup
from deploykit.config import Config
from deploykit.errors import DeployKitError, StepFailed, UsageError
from deploykit.packaging import FIXED_DATE_TIME, Package, build_zip, package_all, package_function, prune_vendored
from deploykit.testing import sample_env
from tests.conftest import git as run_git

REPO = Path(__file__).resolve().parents[2]
LAMBDA = REPO / "lambda"

FILES: dict[str, bytes] = {
    "handler.py": b"from lib.util import answer\n\ndef handler(event, context):\n    return answer()\n",
    "lib/__init__.py": b"",
    "lib/util.py": b"def answer():\n    return {'statusCode': 200, 'body': '42'}\n",
    "lib/data/table.json": b'{"a": 1}\n',
    "bin/run.sh": b"#!/bin/sh\necho hi\n",
    "README.md": b"# sample\n",
    # none of these belong in the zip
    "requirements.txt": b"# boto3 is in the Lambda runtime\n",
    "conftest.py": b"import pytest\n",
    "tests/test_sample.py": b"def test_it():\n    assert True\n",
    "tests/__pycache__/test_sample.cpython-311.pyc": b"\x00bytecode",
    "__pycache__/handler.cpython-311.pyc": b"\x00bytecode",
    "lib/__pycache__/util.cpython-311.pyc": b"\x00bytecode",
    "lib/stale.pyc": b"\x00bytecode",
    ".pytest_cache/v/cache/lastfailed": b"{}",
}
PACKAGED = ["README.md", "bin/run.sh", "handler.py", "lib/__init__.py", "lib/data/table.json", "lib/util.py"]
EXECUTABLE = {"bin/run.sh"}


def write_function(folder: Path, files: dict[str, bytes] = FILES, *, reverse: bool = False) -> Path:
    """Create the function folder, files in the given order (or reversed), executables marked so."""
    for rel in sorted(files, reverse=reverse):
        path = folder / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(files[rel])
        if rel in EXECUTABLE:
            path.chmod(path.stat().st_mode | 0o111)
    return folder


@pytest.fixture
def fn(tmp_path: Path) -> Path:
    return write_function(tmp_path / "a" / "sample_fn")


def entries(pkg: Package) -> list[zipfile.ZipInfo]:
    with zipfile.ZipFile(io.BytesIO(pkg.zip_bytes)) as zf:
        return zf.infolist()


def import_by_path(path: Path, name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


# -- same content, same bytes ---------------------------------------------------------------------------


def test_two_packagings_are_identical_bytes(fn: Path) -> None:
    first, second = package_function(fn), package_function(fn)

    assert first.zip_bytes == second.zip_bytes
    assert first.sha256 == second.sha256 == hashlib.sha256(first.zip_bytes).hexdigest()
    assert first.key == f"lambda/sample_fn/{first.sha256}.zip"
    assert first.code_sha256 == base64.b64encode(hashlib.sha256(first.zip_bytes).digest()).decode()


def test_mtimes_do_not_matter(fn: Path) -> None:
    before = package_function(fn)
    for i, path in enumerate(sorted(fn.rglob("*"))):
        os.utime(path, (1_700_000_000 + 7919 * i, 1_700_000_000 + 7919 * i))

    assert package_function(fn).zip_bytes == before.zip_bytes


def test_location_creation_order_and_umask_do_not_matter(fn: Path, tmp_path: Path) -> None:
    old = os.umask(0o077)  # files come out 0600/0700 instead of 0644/0755
    try:
        elsewhere = write_function(tmp_path / "somewhere" / "else" / "sample_fn", reverse=True)
    finally:
        os.umask(old)
    assert (elsewhere / "handler.py").stat().st_mode & 0o777 == 0o600

    assert package_function(elsewhere).zip_bytes == package_function(fn).zip_bytes


def test_walk_order_does_not_matter(fn: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    before = package_function(fn)
    real_walk = os.walk

    def reversed_walk(top: Any, *args: Any, **kwargs: Any) -> Iterator[tuple[str, list[str], list[str]]]:
        for dirpath, dirnames, filenames in real_walk(top, *args, **kwargs):
            dirnames.sort(reverse=True)  # in place, so pruning still works
            yield dirpath, dirnames, sorted(filenames, reverse=True)

    monkeypatch.setattr(os, "walk", reversed_walk)

    assert package_function(fn).zip_bytes == before.zip_bytes


def test_a_one_byte_change_changes_the_hash(fn: Path) -> None:
    before = package_function(fn)
    util = fn / "lib" / "util.py"
    util.write_bytes(util.read_bytes().replace(b"42", b"43"))

    changed = package_function(fn)
    assert changed.sha256 != before.sha256
    assert changed.key != before.key

    util.write_bytes(util.read_bytes().replace(b"43", b"42"))
    assert package_function(fn).sha256 == before.sha256


def test_an_executable_bit_changes_the_hash(fn: Path) -> None:
    before = package_function(fn)
    (fn / "lib" / "util.py").chmod(0o755)

    assert package_function(fn).sha256 != before.sha256


def test_an_executable_bit_counts_as_git_counts_it_the_owners(fn: Path) -> None:
    """git records a file as executable when its owner may run it (100755), else as 100644, whatever its group and
    others may do; a zip of a checkout whose file has an execute bit for its group alone (0654: copied from a share,
    or chmod g+x) was 0755 where a clean clone of the same commit (and the commit as inv rollback and deploy.auto
    package it, lambda_chain.code_at) gives 0644: the same commit, two zips."""
    before = package_function(fn)
    (fn / "lib" / "util.py").chmod(0o654)
    (fn / "README.md").chmod(0o645)
    assert package_function(fn).sha256 == before.sha256
    (fn / "lib" / "util.py").chmod(0o744)
    assert package_function(fn).sha256 != before.sha256


def test_excluded_files_do_not_change_the_hash(fn: Path) -> None:
    before = package_function(fn)
    (fn / "tests" / "test_sample.py").write_text("def test_other():\n    pass\n")
    (fn / "__pycache__" / "handler.cpython-311.pyc").write_bytes(b"other bytecode")
    (fn / "requirements.txt").write_text("# still nothing beyond boto3\n")

    assert package_function(fn).sha256 == before.sha256


# -- what is in the zip and how it is written --------------------------------------------------------------


def test_tests_caches_and_requirements_are_left_out(fn: Path) -> None:
    assert list(package_function(fn).files) == PACKAGED


def test_in_a_git_work_tree_the_files_git_ignores_are_left_out(fn: Path, tmp_path: Path) -> None:
    """A .env beside the handler, a build's output: git ignores them, a CI build of the commit would not have them,
    and deploy.auto never sees them change. An untracked file git does not ignore is packaged (and makes the build
    dirty, as any uncommitted change)."""
    outside = package_function(fn).sha256  # no git work tree (a commit exported to a folder): every file
    (tmp_path / ".gitignore").write_text(".env\nbuild/\n")
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    assert package_function(fn).sha256 == outside  # git sees every file of it: the same zip
    (fn / ".env").write_text("SECRET=1\n")
    (fn / "build").mkdir()
    (fn / "build" / "out.py").write_text("X = 1\n")
    assert package_function(fn).sha256 == outside
    (fn / "extra.py").write_text("Y = 1\n")
    assert "extra.py" in package_function(fn).files
    (tmp_path / ".gitignore").write_text(".env\nbuild/\na/\n")  # the folder ignored as a whole (cdk.out/ holds
    assert "build/out.py" in package_function(fn).files  # a commit's files exported there): every file counts


def test_a_git_file_or_folder_is_never_packaged(fn: Path, tmp_path: Path) -> None:
    """A function folder that is a git submodule holds a .git file (gitdir: ...) pointing into its parent's .git; a
    copy of it out of its parent (a CI job copying lambda/, an unpacked artifact) points nowhere, git then lists
    nothing and every file counted: the .git file went into the zip, and a clone's .git folder inside it with it."""
    outside = package_function(fn)
    (fn / ".git").write_text("gitdir: ../../.git/modules/lambda/sample_fn\n")  # leads nowhere here
    (fn / "lib" / "vendored" / ".git").mkdir(parents=True)  # a clone inside the function
    (fn / "lib" / "vendored" / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    packaged = package_function(fn)
    assert list(packaged.files) == PACKAGED and packaged.sha256 == outside.sha256

    # a real submodule: git lists its own files, never its .git; the zip is the one of the same files outside git
    shutil.rmtree(fn / "lib" / "vendored")
    (fn / ".git").unlink()
    sub = write_function(tmp_path / "sub" / "sample_fn")
    for args in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-q", "-m", "fn"]):
        run_git(sub, *args)
    parent = tmp_path / "parent"
    parent.mkdir()
    run_git(parent, "init", "-q", "-b", "main")
    run_git(parent, "-c", "protocol.file.allow=always", "submodule", "add", "-q", str(sub), "lambda/sample_fn")
    inside = parent / "lambda" / "sample_fn"
    assert (inside / ".git").is_file()
    packaged = package_function(inside)
    assert list(packaged.files) == PACKAGED and packaged.sha256 == outside.sha256


def git_repository(folder: Path, files: dict[str, bytes]) -> Path:
    """A git repository at ``folder`` holding ``files``, committed."""
    for rel, data in files.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_bytes(data)
    for args in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-q", "-m", "initial"]):
        run_git(folder, *args)
    return folder


def add_submodule(parent: Path, source: Path, path: str) -> Path:
    run_git(parent, "-c", "protocol.file.allow=always", "submodule", "add", "-q", str(source), path)
    run_git(parent, "commit", "-q", "-m", f"{path} as a submodule")
    return parent / path


LIB = {"__init__.py": b"", "util.py": b"X = 1\n"}


def function_with_submodule(tmp_path: Path) -> tuple[Path, Path]:
    """(the parent repository, the function folder) of lambda/sample_fn with lambda/sample_fn/vendor/lib as a git
    submodule of its own repository; committed."""
    lib = git_repository(tmp_path / "lib", LIB)
    parent = tmp_path / "parent"
    write_function(parent / "lambda" / "sample_fn")
    git_repository(parent, {".gitignore": b"__pycache__/\n.pytest_cache/\n*.pyc\n"})
    add_submodule(parent, lib, "lambda/sample_fn/vendor/lib")
    return parent, parent / "lambda" / "sample_fn"


def take_up_a_change(parent: Path, inside: Path) -> None:
    (inside / "util.py").write_bytes(b"X = 2\n")
    run_git(inside, "commit", "-q", "-am", "a change")
    run_git(parent, "commit", "-q", "-am", "take up the library")


def test_a_submodule_inside_a_function_is_packaged_as_checked_out(tmp_path: Path) -> None:
    """lambda/<fn>/vendor/lib as a git submodule: git lists its folder, not its files, so they were left out of the
    zip (the function could not import them, and a new commit of it taken up made the same zip). They are in it as
    the submodule's checkout holds them, byte for byte the zip of the same files outside git; one not checked out
    (its folder empty) is refused with the command that checks it out, not packaged without it."""
    parent, fn = function_with_submodule(tmp_path)
    first = package_function(fn)
    assert list(first.files) == sorted([*PACKAGED, "vendor/lib/__init__.py", "vendor/lib/util.py"])
    outside = tmp_path / "outside" / "sample_fn"
    shutil.copytree(fn, outside, ignore=shutil.ignore_patterns(".git"))
    assert package_function(outside).sha256 == first.sha256
    take_up_a_change(parent, fn / "vendor" / "lib")
    assert package_function(fn).sha256 != first.sha256

    run_git(parent, "submodule", "deinit", "-q", "-f", "lambda/sample_fn/vendor/lib")
    with pytest.raises(UsageError) as refused:
        package_function(fn)
    assert refused.value.message == (
        f"{fn}/vendor/lib is a git submodule that is not checked out here: its files are not there to package"
    )
    assert refused.value.exit_code == 2
    assert refused.value.next_step == (
        f"check it out at the commit recorded (git -C {fn} submodule update --init --recursive -- vendor/lib), "
        "then rerun"
    )
    run_git(
        fn, "-c", "protocol.file.allow=always", "submodule", "update", "-q", "--init", "--recursive", "--", "vendor/lib"
    )
    assert "vendor/lib/util.py" in package_function(fn).files


def test_a_submodule_inside_a_function_is_packaged_as_a_commit_records_it(tmp_path: Path) -> None:
    """A commit's package (inv rollback, the live code's commit) left the submodule's files out: git archive writes
    the parent's files only. It holds them as that commit records the submodule, read from the submodule's
    repository, checked out or not (git keeps it in .git/modules after git submodule deinit): the zip the work tree
    made at that commit."""
    parent, fn = function_with_submodule(tmp_path)
    first = package_function(fn)
    take_up_a_change(parent, fn / "vendor" / "lib")
    second = package_function(fn)
    for rev, made in (("HEAD~1", first), ("HEAD", second)):
        with tempfile.TemporaryDirectory() as out:
            assert git.export(parent, rev, "lambda/sample_fn", Path(out))
            assert package_function(Path(out) / "lambda" / "sample_fn").sha256 == made.sha256
        sha12 = run_git(parent, "rev-parse", rev).strip()[:12]
        assert lambda_chain.code_at(parent, "sample_fn", rev, "x86_64") == (sha12, made.code_sha256)
    run_git(parent, "submodule", "deinit", "-q", "-f", "lambda/sample_fn/vendor/lib")
    sha12 = run_git(parent, "rev-parse", "HEAD~1").strip()[:12]
    assert lambda_chain.code_at(parent, "sample_fn", "HEAD~1", "x86_64") == (sha12, first.code_sha256)


def test_a_commit_whose_submodule_this_clone_lacks_is_refused_not_packaged_without_it(tmp_path: Path) -> None:
    """A clone made without --recurse-submodules has no commit of the submodule inside a function: packaging the
    function as in a commit (inv rollback, the live code's commit) is refused with the way to get it, and writes
    nothing, rather than making a zip without the submodule's files; once fetched, the zip is the parent's."""
    lib = git_repository(tmp_path / "lib", LIB)
    parent = tmp_path / "parent"
    write_function(parent / "lambda" / "sample_fn", {"handler.py": FILES["handler.py"]})
    git_repository(parent, {})
    add_submodule(parent, lib, "lambda/sample_fn/vendor/lib")
    made = lambda_chain.code_at(parent, "sample_fn", "HEAD", "x86_64")
    clone = tmp_path / "clone"
    run_git(tmp_path, "clone", "-q", str(parent), str(clone))

    with tempfile.TemporaryDirectory() as out:
        with pytest.raises(UsageError) as refused:
            git.export(clone, "HEAD", "lambda/sample_fn", Path(out))
        assert list(Path(out).iterdir()) == []
    head = run_git(clone, "rev-parse", "HEAD").strip()
    recorded = run_git(lib, "rev-parse", "HEAD").strip()
    assert refused.value.message == (
        f"lambda/sample_fn/vendor/lib is a git submodule, at {recorded[:12]} in commit {head[:12]}, and this clone "
        "does not have that commit of it: its files cannot be packaged as in that commit, and nothing is packaged "
        "without them"
    )
    assert refused.value.exit_code == 2
    assert refused.value.next_step == (
        "check the submodule out (git submodule update --init --recursive), fetch its commits "
        "(git -C lambda/sample_fn/vendor/lib fetch origin), then rerun"
    )
    with pytest.raises(UsageError):
        lambda_chain.code_at(clone, "sample_fn", "HEAD", "x86_64")
    # what deploy.auto and the version cleanup read to judge what is live: not known, never a stop
    assert lambda_chain.code_known_at(clone, "sample_fn", "HEAD", "x86_64") is None
    code_of = version_cleanup.CodeOf(clone, "x86_64")
    assert code_of("sample_fn", "HEAD") is None
    assert "this clone does not have that commit of it" in code_of.unpackaged[("sample_fn", "HEAD")]
    run_git(clone, "-c", "protocol.file.allow=always", "submodule", "update", "-q", "--init", "--recursive")
    assert lambda_chain.code_at(clone, "sample_fn", "HEAD", "x86_64") == made


def committed_function(tmp_path: Path) -> tuple[Path, str, str, Mock]:
    """A repository with sample_fn committed: its folder, the commit, the function's code hash there, its config."""
    parent = tmp_path / "parent"
    write_function(parent / "lambda" / "sample_fn")
    git_repository(parent, {})
    sha12, code = lambda_chain.code_at(parent, "sample_fn", "HEAD", "x86_64") or ("", "")
    config = Mock(spec=Config, root=parent)
    config.lambda_target.return_value = {"architecture": "x86_64", "python": "3.11"}
    return parent, sha12, code, config


def test_a_rollback_packages_a_commits_function_again_over_a_folder_an_export_cut_short_or_an_older_one_left(
    tmp_path: Path,
) -> None:
    """inv rollback packages a function as in a commit from ``cdk.out/<env>@<sha>.lambda/``. A folder there that an
    export cut short left, or an older deploykit (whose export left a submodule's files out), is written again, not
    packaged as it is: the zip is the commit's. One this export finished is reused."""
    parent, sha12, code, config = committed_function(tmp_path)
    env = sample_env()
    left = parent / "cdk.out" / f"test@{sha12}.lambda" / "lambda" / "sample_fn"
    left.mkdir(parents=True)
    (left / "handler.py").write_bytes(FILES["handler.py"])  # the rest of the function is missing

    folder, package = rollback.package_at(config, env, "sample_fn", sha12)
    assert folder == left and package.code_sha256 == code
    (left / "written_after.txt").write_text("kept: the export finished, and is reused")
    assert rollback.package_at(config, env, "sample_fn", sha12)[1].code_sha256 != code


def test_a_rollback_exporting_a_function_another_command_is_exporting_waits_for_it(tmp_path: Path) -> None:
    """inv rollback --dry-run beside inv rollback, both to one commit: each removed and exported the function's
    folder at once, and one packaged the other's half-written folder (or copytree failed on a file just removed).
    The second waits for the first (the lock held here plays the first)."""
    parent, sha12, code, config = committed_function(tmp_path)
    packaged: list[str] = []
    lock = local_lock.lock_file(parent / "cdk.out", f"test@{sha12}.lambda-sample_fn")
    with local_lock.held(lock, what="the first command's export"):
        second = threading.Thread(
            target=lambda: packaged.append(rollback.package_at(config, sample_env(), "sample_fn", sha12)[1].code_sha256)
        )
        second.start()
        second.join(0.5)
        assert second.is_alive() and not (parent / "cdk.out" / f"test@{sha12}.lambda" / "lambda").exists()
    second.join(10)
    assert packaged == [code]


def test_a_function_of_a_lambda_submodule_is_packaged_as_in_a_commit(tmp_path: Path) -> None:
    """lambda/ as one submodule, holding a function with a submodule of its own: a commit's lambda/<fn> is in the
    submodule's repository, not the parent's, which has no such folder (the function was said not to exist in that
    commit). It is packaged as the commit records lambda/, and the submodule inside it, as its work tree is."""
    lib = git_repository(tmp_path / "lib", LIB)
    functions = tmp_path / "functions"
    write_function(functions / "sample_fn")
    git_repository(functions, {".gitignore": b"__pycache__/\n.pytest_cache/\n*.pyc\n"})
    add_submodule(functions, lib, "sample_fn/vendor/lib")
    parent = git_repository(tmp_path / "parent", {"README.md": b"# parent\n"})
    add_submodule(parent, functions, "lambda")
    run_git(parent, "-c", "protocol.file.allow=always", "submodule", "update", "-q", "--init", "--recursive")

    packaged = package_function(parent / "lambda" / "sample_fn")
    assert "vendor/lib/util.py" in packaged.files
    sha12 = run_git(parent, "rev-parse", "HEAD").strip()[:12]
    assert lambda_chain.code_at(parent, "sample_fn", "HEAD", "x86_64") == (sha12, packaged.code_sha256)
    assert lambda_chain.code_at(parent, "sample_fn", "HEAD~1", "x86_64") is None  # lambda/ not there yet


def test_a_function_of_a_project_in_a_subfolder_is_packaged_as_in_a_commit(tmp_path: Path) -> None:
    """A project in a subfolder of its repository (deploy.toml not at the top): a commit's lambda/<fn> was looked for
    at the top of the repository, so the function was said not to exist in any commit (inv rollback refused to bring
    it back, the live code's commit was never recognised)."""
    top = tmp_path / "top"
    write_function(top / "project" / "lambda" / "sample_fn")
    git_repository(top, {".gitignore": b"__pycache__/\n.pytest_cache/\n*.pyc\n"})
    root = top / "project"
    made = package_function(root / "lambda" / "sample_fn")
    sha12 = run_git(top, "rev-parse", "HEAD").strip()[:12]
    assert lambda_chain.code_at(root, "sample_fn", "HEAD", "x86_64") == (sha12, made.code_sha256)


def test_a_function_with_export_attributes_is_packaged_as_in_a_commit_as_its_work_tree(tmp_path: Path) -> None:
    """A commit's files were written by git archive, which applies .gitattributes' export-ignore (drops the file)
    and export-subst (rewrites $Format:...$), where a checkout does neither: the commit's zip (inv rollback, the live
    code's commit for deploy.auto and the version cleanup) had another CodeSha256 than the work tree's of that very
    commit, so the live code read as changed outside deploykit. They are the checkout's files, links and executable
    bits as they were."""
    files = {
        **FILES,
        ".gitattributes": b"settings.json export-ignore\nversion.py export-subst\n.gitattributes export-ignore\n",
        "settings.json": b'{"stage": "prod"}\n',
        "version.py": b'COMMIT = "$Format:%H$"\n',
    }
    parent = tmp_path / "parent"
    fn = write_function(parent / "lambda" / "sample_fn", files)
    (fn / "inner.py").symlink_to("handler.py")
    git_repository(parent, {".gitignore": b"__pycache__/\n.pytest_cache/\n*.pyc\n"})

    packaged = package_function(fn)
    assert {".gitattributes", "settings.json", "version.py", "inner.py", "bin/run.sh"} <= set(packaged.files)
    sha12 = run_git(parent, "rev-parse", "HEAD").strip()[:12]
    assert lambda_chain.code_at(parent, "sample_fn", "HEAD", "x86_64") == (sha12, packaged.code_sha256)
    with tempfile.TemporaryDirectory() as out:
        assert git.export(parent, "HEAD", "lambda/sample_fn", Path(out))
        written = Path(out) / "lambda" / "sample_fn"
        assert (written / "version.py").read_bytes() == files["version.py"]
        assert os.readlink(written / "inner.py") == "handler.py"
        assert os.access(written / "bin" / "run.sh", os.X_OK)


def test_a_commits_link_to_an_absolute_path_is_refused_as_in_the_work_tree(tmp_path: Path) -> None:
    """A link to an absolute path stopped a commit's packaging with tarfile's own error (the archive's extraction
    refused it), which is no UsageError: inv rollback and deploy.auto's reads of what is live stopped with a
    traceback. It is the work tree's refusal, a link to a file outside the function's folder."""
    parent = tmp_path / "parent"
    fn = write_function(parent / "lambda" / "sample_fn", {"handler.py": FILES["handler.py"]})
    (tmp_path / "shared.py").write_text("S = 1\n")
    (fn / "shared.py").symlink_to(tmp_path / "shared.py")
    git_repository(parent, {})
    with pytest.raises(UsageError, match="outside the function's folder"):
        package_function(fn)
    with pytest.raises(UsageError, match=r"shared\.py is a link to .*, outside the function's folder") as refused:
        lambda_chain.code_at(parent, "sample_fn", "HEAD", "x86_64")
    head = run_git(parent, "rev-parse", "HEAD").strip()[:12]
    # said of the commit's file, not of the temporary folder it was written to (gone since)
    assert refused.value.message.startswith(f"{head}:lambda/sample_fn/shared.py is a link to {tmp_path}/shared.py")
    assert lambda_chain.code_known_at(parent, "sample_fn", "HEAD", "x86_64") is None


def test_a_commit_is_packaged_with_the_conversions_its_checkout_applies(tmp_path: Path) -> None:
    """What a checkout writes is not always the blob: end-of-line conversion (text/eol attributes, core.autocrlf),
    ident, a filter driver's smudge. git archive of the function's folder alone read the attributes of that folder
    only, not the repository's top .gitattributes, so its zip differed from a checkout's work tree. A commit's zip is
    the one its checkout makes, with the attributes of that commit (not the work tree's, changed since) and this
    clone's configuration."""
    parent = tmp_path / "parent"
    fn = write_function(
        parent / "lambda" / "sample_fn",
        {**FILES, "notes.txt": b"one\ntwo\n", "data.dat": b"shouted\n", "ident.py": b'ID = "$Id$"\n'},
    )
    (parent / ".gitignore").write_bytes(b"__pycache__/\n.pytest_cache/\n*.pyc\n")
    (parent / ".gitattributes").write_bytes(b"*.txt text eol=crlf\n*.dat filter=upper\nident.py ident\n")
    run_git(parent, "init", "-q", "-b", "main")
    for key, value in (("filter.upper.smudge", "tr a-z A-Z"), ("filter.upper.clean", "tr A-Z a-z")):
        run_git(parent, "config", key, value)
    run_git(parent, "add", "-A")
    run_git(parent, "commit", "-q", "-m", "initial")

    def checkout() -> Package:
        """The function as a checkout of HEAD writes it."""
        shutil.rmtree(fn)
        run_git(parent, "checkout", "--", "lambda")
        return package_function(fn)

    first = checkout()
    assert (fn / "notes.txt").read_bytes() == b"one\r\ntwo\r\n"
    assert (fn / "data.dat").read_bytes() == b"SHOUTED\n"
    assert (fn / "ident.py").read_bytes() != b'ID = "$Id$"\n'
    sha12 = run_git(parent, "rev-parse", "HEAD").strip()[:12]
    assert lambda_chain.code_at(parent, "sample_fn", "HEAD", "x86_64") == (sha12, first.code_sha256)

    run_git(parent, "config", "core.autocrlf", "true")  # the clone's configuration counts, as for its checkout
    crlf = checkout()
    assert (fn / "handler.py").read_bytes() == FILES["handler.py"].replace(b"\n", b"\r\n")
    assert lambda_chain.code_at(parent, "sample_fn", "HEAD", "x86_64") == (sha12, crlf.code_sha256)
    run_git(parent, "config", "--unset", "core.autocrlf")

    # a later commit drops the attributes: the first commit keeps its own
    (parent / ".gitattributes").write_bytes(b"")
    run_git(parent, "commit", "-q", "-am", "no attributes")
    assert lambda_chain.code_at(parent, "sample_fn", "HEAD~1", "x86_64") == (sha12, first.code_sha256)
    second = checkout()
    assert second.code_sha256 != first.code_sha256
    assert lambda_chain.code_at(parent, "sample_fn", "HEAD", "x86_64") == (
        run_git(parent, "rev-parse", "HEAD").strip()[:12],
        second.code_sha256,
    )


def test_entries_are_sorted_with_fixed_dates_modes_and_compression(fn: Path) -> None:
    infos = entries(package_function(fn))

    names = [i.filename for i in infos]
    assert names == sorted(names)
    for info in infos:
        assert info.date_time == FIXED_DATE_TIME
        assert info.compress_type == zipfile.ZIP_DEFLATED
        assert info.create_system == 3
        assert not info.is_dir() and "\\" not in info.filename
        assert info.external_attr >> 16 == (0o100755 if info.filename in EXECUTABLE else 0o100644)
        assert info.comment == b"" and info.extra == b""


def test_zip_content_round_trips(fn: Path) -> None:
    with zipfile.ZipFile(io.BytesIO(package_function(fn).zip_bytes)) as zf:
        assert zf.testzip() is None
        assert {name: zf.read(name) for name in zf.namelist()} == {name: FILES[name] for name in PACKAGED}


def test_build_zip_sorts_whatever_order_it_is_given() -> None:
    forward = build_zip({"a.py": (b"a", False), "b/c.py": (b"c", True)})
    backward = build_zip({"b/c.py": (b"c", True), "a.py": (b"a", False)})

    assert forward == backward


# -- errors ---------------------------------------------------------------------------------------------


def test_missing_folder_is_a_usage_error_naming_the_functions(fn: Path) -> None:
    with pytest.raises(UsageError) as err:
        package_function(fn.parent / "no_such_fn")

    assert "does not exist" in err.value.message
    assert err.value.next_step is not None and "sample_fn" in err.value.next_step


def test_folder_without_handler_is_a_usage_error(tmp_path: Path) -> None:
    folder = tmp_path / "not_a_fn"
    folder.mkdir()
    (folder / "main.py").write_text("pass\n")

    with pytest.raises(UsageError) as err:
        package_function(folder)

    assert "handler.py" in err.value.message
    assert err.value.next_step


def test_directory_symlink_is_refused(fn: Path, tmp_path: Path) -> None:
    (tmp_path / "outside").mkdir()
    (fn / "linked").symlink_to(tmp_path / "outside", target_is_directory=True)

    with pytest.raises(UsageError, match="symbolic link"):
        package_function(fn)


def test_a_virtual_environment_git_ignores_is_passed_over_with_its_directory_link(fn: Path, tmp_path: Path) -> None:
    """``python -m venv .venv`` in the function's folder, to run its tests, makes .venv/lib64 a link to .venv/lib:
    in a folder git ignores, no file of the function's, it refused the whole package."""
    before = package_function(fn).sha256
    (tmp_path / ".gitignore").write_text(".venv/\n")
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    (fn / ".venv" / "lib" / "python3.11" / "site-packages").mkdir(parents=True)
    (fn / ".venv" / "lib" / "python3.11" / "site-packages" / "pkg.py").write_text("X = 1\n")
    (fn / ".venv" / "lib64").symlink_to("lib", target_is_directory=True)
    assert package_function(fn).sha256 == before
    (tmp_path / ".gitignore").write_text("")  # not ignored: the link is the function's, and refused
    with pytest.raises(UsageError, match="symbolic link to a directory"):
        package_function(fn)


def test_a_repository_cloned_into_the_function_is_packaged_with_its_files(fn: Path, tmp_path: Path) -> None:
    """git lists an untracked clone as its folder alone (vendored/): the zip left its files out, where the dirty
    build's hash counted them, so --allow-dirty shipped a function that could not import them."""
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    source = tmp_path / "elsewhere"
    source.mkdir()
    (source / "helpers.py").write_text("X = 1\n")
    for args in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-q", "-m", "lib"]):
        run_git(source, *args)
    run_git(tmp_path, "clone", "-q", str(source), str(fn / "vendored"))
    assert "vendored/" in (git.files_git_sees(fn) or ())  # the folder alone
    assert "vendored/helpers.py" in package_function(fn).files
    assert not [f for f in package_function(fn).files if ".git" in f.split("/")]


def test_a_link_to_a_file_outside_the_folder_is_refused_one_inside_is_packaged(fn: Path, tmp_path: Path) -> None:
    """A change to a file outside lambda/<fn>/ is not the function's for deploy.auto: linked in, it would ship in
    the zip and never deploy when it changes."""
    (fn / "inner.py").symlink_to("handler.py")
    assert "inner.py" in package_function(fn).files
    (tmp_path / "shared.py").write_text("S = 1\n")
    (fn / "shared.py").symlink_to(tmp_path / "shared.py")
    with pytest.raises(UsageError, match=r"shared\.py is a link to .*, outside the function's folder"):
        package_function(fn)
    with pytest.raises(UsageError, match="outside the function's folder"):
        packaging.check_function(fn)


def test_a_commits_modes_and_links_count_as_git_records_them_whatever_the_checkout_made_of_them(tmp_path: Path) -> None:
    """With core.fileMode=false (WSL on a Windows drive) a file made executable on disk is 100644 for git, status
    clean; with core.symlinks=false (Git for Windows) a link is checked out as a file holding its target's path.
    Each made another zip of the same commit: two keys for one commit (a redeploy, a promotion refused), and a
    link's zip entry holding a path where the code was expected."""
    repo = git_repository(
        tmp_path / "repo",
        {"fn/handler.py": b"from settings import X\ndef handler(e, c):\n    return X\n", "fn/prod.py": b"X = 1\n"},
    )
    fn = repo / "fn"
    (fn / "settings.py").symlink_to("prod.py")
    run_git(repo, "add", "-A")
    run_git(repo, "commit", "-q", "-m", "a link")
    clean = package_function(fn)
    assert clean.files == ("handler.py", "prod.py", "settings.py")
    run_git(repo, "config", "core.fileMode", "false")
    (fn / "handler.py").chmod(0o755)
    run_git(repo, "config", "core.symlinks", "false")
    (fn / "settings.py").unlink()
    (fn / "settings.py").write_text("prod.py")  # as such a checkout makes it
    assert run_git(repo, "status", "--porcelain") == ""  # nothing changed, as git sees it
    assert package_function(fn).sha256 == clean.sha256


def test_a_link_to_a_file_git_does_not_see_is_refused(fn: Path, tmp_path: Path) -> None:
    """settings.env → .env, the link committed and .env ignored: the secret shipped in the zip, unseen by any
    commit, and a CI checkout's link led nowhere."""
    (tmp_path / ".gitignore").write_text(".env\n")
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    (fn / ".env").write_text("DB_PASSWORD=hunter2\n")
    (fn / "settings.env").symlink_to(".env")
    with pytest.raises(UsageError, match=r"settings\.env is a link to .*\.env, which git does not track"):
        package_function(fn)


def test_a_file_name_that_is_not_utf8_is_refused_with_its_name(fn: Path) -> None:
    (fn / os.fsdecode(b"caf\xe9.txt")).write_text("menu\n")
    with pytest.raises(UsageError, match=r"is not a UTF-8 file name"):
        package_function(fn)


def test_package_all_finds_every_function_folder(fn: Path) -> None:
    write_function(fn.parent / "other_fn", {"handler.py": b"def handler(e, c):\n    return {}\n"})
    (fn.parent / "docs").mkdir()
    (fn.parent / "conftest.py").write_text("")

    packages = package_all(fn.parent)

    assert sorted(packages) == ["other_fn", "sample_fn"]
    assert packages["sample_fn"] == package_function(fn)
    assert packages["other_fn"].files == ("handler.py",)


def test_package_all_of_a_missing_root_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError):
        package_all(tmp_path / "lambda")


# -- vendored requirements --------------------------------------------------------------------------------


class FakePip:
    """Writes what pip --target writes, including what depends on the machine (bin/, RECORD, bytecode)."""

    def __init__(self) -> None:
        self.calls: list[tuple[Path, Path]] = []

    def __call__(self, requirements: Path, target: Path) -> None:
        self.calls.append((requirements, target))
        (target / "tinypkg").mkdir()
        (target / "tinypkg" / "__init__.py").write_text("VALUE = 42\n")
        (target / "tinypkg" / "__pycache__").mkdir()
        (target / "tinypkg" / "__pycache__" / "__init__.cpython-311.pyc").write_bytes(os.urandom(8))
        (target / "tinypkg-1.0.dist-info").mkdir()
        (target / "tinypkg-1.0.dist-info" / "RECORD").write_text(
            f"../../bin/tiny,sha256={os.urandom(4).hex()},165\ntinypkg/__init__.py,sha256=abc,11\n"
        )
        (target / "bin").mkdir()
        (target / "bin" / "tiny").write_text(f"#!{target}/python\n")


def test_requirements_are_vendored_at_the_root_reproducibly_and_cached(fn: Path, tmp_path: Path) -> None:
    (fn / "requirements.txt").write_text("tinypkg==1.0  # pinned, with its whole closure\n")
    pip, cache = FakePip(), tmp_path / "cache"

    first = package_function(fn, requirements_cache=cache, installer=pip)
    second = package_function(fn, requirements_cache=cache, installer=pip)
    uncached = package_function(fn, installer=pip)

    assert len(pip.calls) == 2  # the second run came from the cache
    assert first.zip_bytes == second.zip_bytes == uncached.zip_bytes
    # the vendored packages' zip first, then the function's own files, each sorted
    assert list(first.files) == ["tinypkg-1.0.dist-info/RECORD", "tinypkg/__init__.py", *sorted(PACKAGED)]
    with zipfile.ZipFile(io.BytesIO(first.zip_bytes)) as zf:
        assert zf.read("tinypkg-1.0.dist-info/RECORD") == b"tinypkg/__init__.py,sha256=abc,11\n"


def test_every_zip_of_the_same_requirements_begins_with_the_same_vendored_bytes(fn: Path, tmp_path: Path) -> None:
    """The upload has S3 copy a zip's vendored entries from a copy kept once: they must be the zip's first
    prefix_length bytes, the same whatever the handler holds, and the rest the function's own files and the
    directory. Without requirements there is no such prefix."""
    plain = package_function(fn)
    assert (plain.prefix_length, plain.prefix_sha256, plain.prefix_key) == (0, "", "")
    (fn / "requirements.txt").write_text("tinypkg==1.0\n")
    cache = tmp_path / "cache"
    first = package_function(fn, requirements_cache=cache, installer=FakePip())
    (fn / "handler.py").write_text((fn / "handler.py").read_text() + "\nCHANGED = True\n")
    second = package_function(fn, requirements_cache=cache, installer=FakePip())

    assert first.key != second.key and first.prefix_length == second.prefix_length > 0
    vendored = next(cache.glob("*.zip")).read_bytes()
    assert vendored[first.prefix_length : first.prefix_length + 4] == b"PK\x01\x02"  # its central directory
    assert first.zip_bytes[: first.prefix_length] == second.zip_bytes[: second.prefix_length]
    assert first.zip_bytes[: first.prefix_length] == vendored[: first.prefix_length]
    assert first.prefix_sha256 == hashlib.sha256(vendored[: first.prefix_length]).hexdigest() == second.prefix_sha256
    assert first.prefix_key == f"lambda-vendored/{first.prefix_sha256}.bin"
    # the function's own files begin where the prefix ends
    with zipfile.ZipFile(io.BytesIO(second.zip_bytes)) as zf:
        own = [info for info in zf.infolist() if info.header_offset >= second.prefix_length]
    assert sorted(info.filename for info in own) == sorted(PACKAGED)
    assert min(info.header_offset for info in own) == second.prefix_length


def test_a_deploy_packages_a_function_with_requirements_once_for_the_same_inputs(fn: Path) -> None:
    """A deploy packages a function when it plans and again in its upload step: with the same files and
    requirements.txt (and deploykit's cache and pip, as a deploy vendors) the process makes the zip once — not the
    vendored zip read again, 16 MB appended to and hashed twice. A changed file is packaged anew."""
    (fn / "requirements.txt").write_text("tinypkg==1.0\n")
    cache = packaging.default_vendor_cache()
    assert cache is not None
    package_function(fn, requirements_cache=cache, installer=FakePip())  # vendored into deploykit's cache
    first = package_function(fn)
    kept = next(cache.glob("*.zip"))
    kept.write_bytes(b"not a zip: not read again")
    assert package_function(fn) is first
    assert kept.read_bytes() == b"not a zip: not read again"

    handler = fn / "handler.py"
    original = handler.read_text()
    handler.write_text(original + "\nCHANGED = True\n")
    changed = package_function(fn)  # packaged anew: the kept vendored zip read, found broken, made again
    assert changed.key != first.key and changed.prefix_sha256 == first.prefix_sha256
    assert kept.read_bytes() != b"not a zip: not read again"
    handler.write_text(original)
    assert package_function(fn) is first


def test_a_package_says_which_architecture_its_vendored_compiled_code_is_for(fn: Path, tmp_path: Path) -> None:
    """Pure-Python requirements run on any Lambda architecture; an extension module (.so) only on the one its
    wheel was chosen for, which update-code checks against the function's."""
    assert package_function(fn).compiled_for == ""  # no requirements
    (fn / "requirements.txt").write_text("tinypkg==1.0\n")
    assert package_function(fn, requirements_cache=tmp_path / "c1", installer=FakePip()).compiled_for == ""

    def compiled(requirements: Path, target: Path) -> None:
        FakePip()(requirements, target)
        (target / "tinypkg" / "_speedups.cpython-311-x86_64-linux-gnu.so").write_bytes(b"\x7fELF")

    package = package_function(fn, requirements_cache=tmp_path / "c2", installer=compiled)
    assert package.compiled_for == package.architecture == packaging.DEFAULT_ARCHITECTURE == "x86_64"
    on_graviton = package_function(fn, architecture="arm64", requirements_cache=tmp_path / "c2", installer=compiled)
    assert (on_graviton.compiled_for, on_graviton.architecture) == ("arm64", "arm64")


def test_requirements_are_vendored_for_the_architecture_and_the_python_and_kept_apart(fn: Path, tmp_path: Path) -> None:
    """The same requirements.txt vendored for x86_64 and for arm64, or for CPython 3.11 and 3.12, are other wheels
    sets: kept under their own keys, and pip is asked for each platform's and each Python's wheels."""
    (fn / "requirements.txt").write_text("tinypkg==1.0\n")
    pip, cache = FakePip(), tmp_path / "cache"
    package_function(fn, requirements_cache=cache, installer=pip)
    package_function(fn, architecture="arm64", requirements_cache=cache, installer=pip)
    package_function(fn, architecture="arm64", requirements_cache=cache, installer=pip)
    newer = package_function(fn, architecture="arm64", python="3.12", requirements_cache=cache, installer=pip)
    assert newer.python == "3.12"
    assert len(pip.calls) == 3 and len(list(cache.glob("*.zip"))) == 3
    assert packaging.pip_platform_options("x86_64")[:2] == ("--platform", "manylinux2014_x86_64")
    assert packaging.pip_platform_options("arm64")[:2] == ("--platform", "manylinux2014_aarch64")
    assert packaging.pip_platform_options("arm64")[-2:] == ("--python-version", "3.11")
    assert packaging.pip_platform_options("arm64", "3.13")[-2:] == ("--python-version", "3.13")
    with pytest.raises(UsageError, match="'sparc' is not an architecture Lambda runs functions on"):
        package_function(fn, architecture="sparc", requirements_cache=cache, installer=pip)


def test_a_changed_requirements_file_is_vendored_again(fn: Path, tmp_path: Path) -> None:
    (fn / "requirements.txt").write_text("tinypkg==1.0\n")
    pip, cache = FakePip(), tmp_path / "cache"
    package_function(fn, requirements_cache=cache, installer=pip)
    (fn / "requirements.txt").write_text("tinypkg==1.0 --hash=sha256:" + "0" * 64 + "\n")

    package_function(fn, requirements_cache=cache, installer=pip)

    assert len(pip.calls) == 2
    assert len([p for p in cache.iterdir() if p.is_dir() and not p.name.startswith(".")]) == 2
    assert len(list(cache.glob("*.zip"))) == 2  # each tree's zip beside it


def test_a_change_to_the_function_beside_its_requirements_zips_only_its_own_files(fn: Path, tmp_path: Path) -> None:
    """The vendored packages are zipped once and kept; the function's files are appended to that zip, which is
    copied as it is (the same bytes open the package), not compressed again."""
    (fn / "requirements.txt").write_text("tinypkg==1.0\n")
    pip, cache = FakePip(), tmp_path / "cache"
    package_function(fn, requirements_cache=cache, installer=pip)
    [kept] = cache.glob("*.zip")
    vendored = kept.read_bytes()
    with zipfile.ZipFile(io.BytesIO(vendored)) as zf:
        members_end = zf.start_dir  # where its central directory begins: its members come before it
    (fn / "handler.py").write_text("def handler(event, context):\n    return 'changed'\n")

    changed = package_function(fn, requirements_cache=cache, installer=pip)

    assert len(pip.calls) == 1 and kept.read_bytes() == vendored
    assert changed.zip_bytes[:members_end] == vendored[:members_end]
    with zipfile.ZipFile(io.BytesIO(changed.zip_bytes)) as zf:
        assert zf.testzip() is None and zf.read("handler.py").endswith(b"'changed'\n")
        assert zf.read("tinypkg/__init__.py") == b"VALUE = 42\n"


def test_a_kept_vendored_zip_that_is_not_a_zip_is_made_again(fn: Path, tmp_path: Path) -> None:
    (fn / "requirements.txt").write_text("tinypkg==1.0\n")
    pip, cache = FakePip(), tmp_path / "cache"
    first = package_function(fn, requirements_cache=cache, installer=pip)
    [kept] = cache.glob("*.zip")
    kept.write_bytes(b"PK half a zip")  # as a full disk could leave it
    assert package_function(fn, requirements_cache=cache, installer=pip).zip_bytes == first.zip_bytes
    assert len(pip.calls) == 1 and zipfile.is_zipfile(kept)  # made again from the kept tree, mended


def test_a_cache_that_cannot_be_written_is_passed_over(fn: Path, tmp_path: Path) -> None:
    (fn / "requirements.txt").write_text("tinypkg==1.0\n")
    blocked = tmp_path / "a-file"
    blocked.write_text("not a folder")  # as a read-only home in a CI container refuses it
    pip = FakePip()
    first = package_function(fn, requirements_cache=blocked / "cache", installer=pip)
    second = package_function(fn, requirements_cache=blocked / "cache", installer=pip)
    assert first.zip_bytes == second.zip_bytes and len(pip.calls) == 2  # vendored each time, nothing failed


def test_vendored_trees_unused_for_a_month_go_once_a_day(tmp_path: Path) -> None:
    now = 2_000_000_000.0
    for key, days in (("old", 31), ("used", 2)):
        (tmp_path / key).mkdir()
        (tmp_path / key / "pkg.py").write_text("")
        (tmp_path / f"{key}.zip").write_bytes(b"")
        os.utime(tmp_path / f"{key}.zip", (now - days * 86400, now - days * 86400))
    assert prune_vendored(tmp_path, now) == ["old"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".pruned", "used", "used.zip"]
    os.utime(tmp_path / "used.zip", (now - 40 * 86400, now - 40 * 86400))
    assert prune_vendored(tmp_path, now + 3600) == []  # within the day
    assert prune_vendored(tmp_path, now + 86401) == ["used"]


@pytest.mark.parametrize(
    "line",
    [
        "requests",
        "requests>=2",
        "requests~=2.31",
        "requests==2.*",
        "-r base.txt",
        "-e .",
        "--constraint c.txt",
        "-rbase.txt",  # pip reads these as -r base.txt: what they include was never checked, nor in the hash
        "-r../common.txt",
        "-cc.txt",
        "-e.",
        "--requirement=base.txt",
    ],
)
def test_unpinned_or_included_requirements_are_refused(fn: Path, line: str) -> None:
    (fn / "requirements.txt").write_text(f"# deps\n{line}\n")
    pip = FakePip()

    with pytest.raises(UsageError) as err:
        package_function(fn, installer=pip)

    assert err.value.next_step
    assert pip.calls == []


def test_vendored_file_clashing_with_a_function_file_is_refused(fn: Path) -> None:
    (fn / "requirements.txt").write_text("tinypkg==1.0\n")
    (fn / "tinypkg").mkdir()
    (fn / "tinypkg" / "__init__.py").write_text("# mine\n")

    with pytest.raises(UsageError, match="clashes"):
        package_function(fn, installer=FakePip())


def test_pip_install_targets_the_lambda_platform(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    seen: list[list[str]] = []

    def run(command: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        seen.append(command)
        return subprocess.CompletedProcess(command, 1, "", "ERROR: No matching distribution found for nope==9\n")

    monkeypatch.setattr(subprocess, "run", run)

    with pytest.raises(UsageError) as refused:  # a pin no index has: the file's fault (exit 2)
        packaging.pip_install(tmp_path / "requirements.txt", tmp_path / "site")
    assert refused.value.exit_code == 2 and "no wheel of for manylinux2014_x86_64 / CPython 3.11: nope==9" in (
        refused.value.message
    )
    assert "pin a version the index has" in (refused.value.next_step or "")

    def unreachable(command: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        seen.append(command)
        return subprocess.CompletedProcess(command, 1, "", "ERROR: Could not install packages: connection refused\n")

    monkeypatch.setattr(subprocess, "run", unreachable)
    with pytest.raises(StepFailed) as err:  # anything else: a failure of the run (exit 1)
        packaging.pip_install(tmp_path / "requirements.txt", tmp_path / "site")
    assert not isinstance(err.value, UsageError) and err.value.exit_code == 1

    command = seen[0]
    assert command[:4] == [sys.executable, "-m", "pip", "install"]
    for option in ("--no-deps", "--no-compile", "--only-binary=:all:", "manylinux2014_x86_64", "3.11"):
        assert option in command
    assert command[command.index("--target") + 1] == str(tmp_path / "site")
    assert "connection refused" in err.value.message
    assert err.value.next_step is not None and "pip" in err.value.next_step

    with pytest.raises(StepFailed) as err:
        packaging.pip_installer("arm64")(tmp_path / "requirements.txt", tmp_path / "site")
    command = seen[-1]
    assert command[command.index("--platform") + 1] == "manylinux2014_aarch64" and "manylinux2014_x86_64" not in command
    assert "wheels for manylinux2014_aarch64 / CPython 3.11" in (err.value.next_step or "")


@pytest.mark.parametrize(
    ("fails", "exit_code"),
    [("ERROR: No matching distribution found for nope==9\n", 2), ("ERROR: connection refused\n", 1)],
)
def test_a_failed_vendoring_prints_a_pip_command_that_can_be_run_after_it(
    monkeypatch: pytest.MonkeyPatch, fn: Path, tmp_path: Path, fails: str, exit_code: int
) -> None:
    """The folder pip vendored into is deploykit's own, temporary, removed once it failed: the command printed to
    run by hand installs into <temp>/<function>-deps instead, quoted for a shell, and is otherwise the one run."""
    (fn / "requirements.txt").write_text("nope==9\n")
    run: list[list[str]] = []
    real_run = subprocess.run

    def pip(command: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        if command[1:3] != ["-m", "pip"]:  # git, listing the function's files
            return real_run(command, **kwargs)
        run.append(command)
        return subprocess.CompletedProcess(command, 1, "", fails)

    monkeypatch.setattr(subprocess, "run", pip)
    with pytest.raises(DeployKitError) as failed:
        package_function(fn, architecture="arm64", requirements_cache=tmp_path / "cache with a space")
    assert failed.value.exit_code == exit_code
    [command] = run
    used = Path(command[command.index("--target") + 1])
    assert not used.exists()  # what deploykit ran is no command to run again
    printed = shlex.split((failed.value.next_step or "").split("by hand: ", 1)[1])
    target = printed[printed.index("--target") + 1]
    assert target == str(Path(tempfile.gettempdir()) / "sample_fn-deps") and Path(target).parent.is_dir()
    assert printed[: printed.index("--target")] == command[: command.index("--target")]
    assert printed[printed.index("--target") + 2 :] == command[command.index("--target") + 2 :]
    assert printed[-1] == str(fn / "requirements.txt") and "manylinux2014_aarch64" in printed


# -- the real functions -----------------------------------------------------------------------------------


@pytest.mark.parametrize("function", ["login_handler", "health_handler"])
def test_real_function_packages_reproducibly(function: str) -> None:
    first, second = package_function(LAMBDA / function), package_function(LAMBDA / function)

    assert first.zip_bytes == second.zip_bytes
    assert "handler.py" in first.files
    assert not any(name.startswith("tests/") or "__pycache__" in name for name in first.files)


def test_real_login_handler_zip_imports_and_answers_400(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pkg = package_function(LAMBDA / "login_handler")
    with zipfile.ZipFile(io.BytesIO(pkg.zip_bytes)) as zf:
        zf.extractall(tmp_path / "task")
    monkeypatch.setenv("USER_POOL_CLIENT_ID", "client-id")
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    name = f"packaged_login_handler_{pkg.sha256[:12]}"
    try:
        module = import_by_path(tmp_path / "task" / "handler.py", name)
        response = module.handler({"httpMethod": "POST", "body": "not json", "isBase64Encoded": False}, None)
    finally:
        sys.modules.pop(name, None)

    assert response["statusCode"] == 400
    assert response["headers"]["content-type"] == "application/json"
    assert json.loads(response["body"])["code"] == "bad_request"


def test_package_all_of_the_repo_includes_login_handler() -> None:
    packages = package_all(LAMBDA)

    assert "login_handler" in packages
    assert packages["login_handler"].key.startswith("lambda/login_handler/")


def test_copy_of_the_real_function_elsewhere_gives_the_same_hash(tmp_path: Path) -> None:
    copy = tmp_path / "login_handler"
    shutil.copytree(LAMBDA / "login_handler", copy)

    assert package_function(copy).sha256 == package_function(LAMBDA / "login_handler").sha256


def make_wheel(directory: Path) -> Path:
    """A tiny pure-Python wheel with a console script, built by hand so pip needs no network."""
    files = {
        "tinypkg/__init__.py": b"VALUE = 42\n\ndef main():\n    print(VALUE)\n",
        "tinypkg-1.0.dist-info/METADATA": b"Metadata-Version: 2.1\nName: tinypkg\nVersion: 1.0\n",
        "tinypkg-1.0.dist-info/WHEEL": (
            b"Wheel-Version: 1.0\nGenerator: hand\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        ),
        "tinypkg-1.0.dist-info/entry_points.txt": b"[console_scripts]\ntiny = tinypkg:main\n",
    }
    record = [
        f"{name},sha256={base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b'=').decode()},{len(data)}"
        for name, data in files.items()
    ]
    files["tinypkg-1.0.dist-info/RECORD"] = ("\n".join([*record, "tinypkg-1.0.dist-info/RECORD,,"]) + "\n").encode()
    directory.mkdir(parents=True, exist_ok=True)
    wheel = directory / "tinypkg-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return wheel


@pytest.mark.slow
def test_real_pip_vendoring_is_reproducible(fn: Path, tmp_path: Path) -> None:
    """Runs pip twice (about a second each), offline against a local wheel: `-m "not slow"` leaves it out."""
    wheels = make_wheel(tmp_path / "wheels").parent
    (fn / "requirements.txt").write_text(f"--no-index\n--find-links {wheels}\ntinypkg==1.0\n")

    first = package_function(fn, requirements_cache=tmp_path / "cache")
    second = package_function(fn)  # no cache: a second real pip run

    assert first.zip_bytes == second.zip_bytes
    assert "tinypkg/__init__.py" in first.files
    assert "bin/tiny" not in first.files  # the console script: its shebang names this machine
    with zipfile.ZipFile(io.BytesIO(first.zip_bytes)) as zf:
        assert b"../" not in zf.read("tinypkg-1.0.dist-info/RECORD")


def test_a_key_named_by_a_sha256_is_shortened_for_people_any_other_as_it_is() -> None:
    digest = "ab" * 32
    assert packaging.short_key(f"lambda/fn/{digest}.zip") == "lambda/fn/abababababab….zip"
    assert packaging.short_key(f"lambda-vendored/{digest}.bin") == "lambda-vendored/abababababab….bin"
    assert packaging.short_key("lambda/fn/handmade.zip") == "lambda/fn/handmade.zip"
    assert packaging.short_key(f"{digest}.zip") == "abababababab….zip"


@pytest.mark.parametrize("encoding", ["utf-16", "utf-8-sig", "utf-32"])
def test_a_requirements_file_is_read_by_its_byte_order_mark_as_pip_reads_it(fn: Path, encoding: str) -> None:
    """PowerShell's `pip freeze > requirements.txt` writes UTF-16, its `Out-File -Encoding utf8` UTF-8 with a byte
    order mark: a UnicodeDecodeError ended inv diff and deploys, and a UTF-8 mark made the first line unpinned."""
    (fn / "requirements.txt").write_bytes("requests==2.32.3\n".encode(encoding))
    assert packaging.requirement_text(fn / "requirements.txt") == "requests==2.32.3\n"
    assert packaging._requirement_lines(fn / "requirements.txt") == ["requests==2.32.3"]


def test_a_requirements_file_neither_utf8_nor_marked_is_refused_not_a_traceback(fn: Path) -> None:
    (fn / "requirements.txt").write_bytes("# café\nrequests==2.32.3\n".encode("latin-1"))
    pip = FakePip()
    with pytest.raises(UsageError, match=r"requirements\.txt is not UTF-8 text \(byte 0xe9 at 5\), and no byte order"):
        package_function(fn, installer=pip)
    assert pip.calls == []


def test_a_link_that_leads_back_to_itself_is_refused_not_a_traceback(fn: Path) -> None:
    (fn / "loop").symlink_to("loop")
    with pytest.raises(UsageError, match=r"loop is a link that leads back to itself \(a loop\)"):
        package_function(fn)
