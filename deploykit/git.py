"""The git facts a deploy is named after: the HEAD SHA, and whether the work tree is clean.

Images are immutable and named by the commit they were built from. A build from a dirty tree is
refused unless asked for; then its tag says so and carries a hash of the uncommitted diff, so two
different dirty trees never share a tag.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath

from deploykit.errors import UsageError

SHORT_SHA = 12
# Every git status and git diff of deploykit's sees every change of a submodule: a build reads the submodule's work
# tree, so what the dirty check, the changed paths and the dirty hash leave out would ship unseen, under a tag that
# does not say it (HEAD's commit, a hash without it), or not ship at all (a commit of it taken up deploying nothing).
# A user's submodule.<name>.ignore (in .gitmodules or .git/config: untracked, dirty, all) or diff.ignoreSubmodules
# is for their own git status, and is overridden here, for the three alike.
IGNORE_NO_SUBMODULE = "--ignore-submodules=none"
# the most hex digits a commit's name has: 64 in a repository of SHA-256 objects (40 in SHA-1's)
SHA_DIGITS = 64
DIRTY = "-dirty-"  # in the tag of a build from uncommitted changes: <sha12>-dirty-<hash of the diff>


def _git(root: Path, *args: str, stdin: bytes | None = None, env: Mapping[str, str] | None = None) -> bytes:
    try:
        # no optional locks: git status refreshes the index under .git/index.lock when it can, and the person's own
        # git add or commit beside a deploy failed on it ("Unable to create '.git/index.lock': File exists")
        done = subprocess.run(
            ["git", "--no-optional-locks", *args], cwd=root, input=stdin, capture_output=True, check=False, env=env
        )
    except FileNotFoundError:
        raise UsageError("git is not installed", next_step="install git (apt-get install git)") from None
    if done.returncode != 0:
        err = done.stderr.decode(errors="replace").strip()
        raise UsageError(
            f"git {' '.join(args)} failed in {root}: {err}",
            next_step="run deploykit from a git checkout with at least one commit",
        )
    return done.stdout


@dataclass(frozen=True)
class Revision:
    """What is being deployed: a commit, plus the uncommitted changes if any were allowed."""

    sha: str
    dirty_paths: tuple[str, ...] = ()
    dirty_hash: str = ""
    # the components the uncommitted changes touch (deploykit.changes.scope); None: not worked out, so every one
    touches: frozenset[str] | None = None
    # (component, its uncommitted paths, their hash) for each touched component: its build is named by its own
    # changes, so an edit elsewhere (a README) leaves its tag, and what is live for it, as they are
    parts: tuple[tuple[str, tuple[str, ...], str], ...] = ()

    @property
    def short(self) -> str:
        return self.sha[:SHORT_SHA]

    @property
    def dirty(self) -> bool:
        return bool(self.dirty_paths)

    @property
    def tag(self) -> str:
        """The image tag: ``<sha12>``, or ``<sha12>-dirty-<hash of the diff>``."""
        if self.dirty:
            return f"{self.short}{DIRTY}{self.dirty_hash[:SHORT_SHA]}"
        return self.short

    def of(self, component: str) -> Revision:
        """What ``component`` (app, lambda:<fn>, stack:<role>) is built from: this revision, or HEAD's commit alone
        when the uncommitted changes do not touch it; its artifact is then the commit's, and named so."""
        if not self.dirty or self.touches is None:
            return self
        if component not in self.touches:
            return Revision(self.sha)
        for name, paths, digest in self.parts:
            if name == component:
                return Revision(self.sha, paths, digest, frozenset({component}))
        return self


def head_sha(root: Path) -> str:
    return _git(root, "rev-parse", "HEAD").decode().strip()


def dirty_paths(root: Path) -> tuple[str, ...]:
    """Paths with uncommitted changes, untracked files included (ignored files are not), relative to ``root``: a
    project in a subfolder of its repository has those under it only, as :func:`changed_paths` has. A submodule's
    folder is one when its work tree differs in any way, whatever ``submodule.<name>.ignore`` says
    (:data:`IGNORE_NO_SUBMODULE`)."""
    # git status names paths from the top of the repository, whatever folder it runs in: the subfolder's prefix
    prefix = _git(root, "rev-parse", "--show-prefix").decode(errors="surrogateescape").rstrip("\n")
    # a name that is not UTF-8 kept as its bytes (surrogateescape): the path of a file that is there
    listed = _git(root, "status", "--porcelain=v1", "-z", "--untracked-files=all", IGNORE_NO_SUBMODULE, "--", ".")
    out = listed.decode(errors="surrogateescape")
    paths = []
    entries = iter(out.split("\0"))
    for entry in entries:
        if not entry:
            continue
        status, path = entry[:2], entry[3:]
        if path.startswith(prefix) and not (status == "??" and _own_output(root / path[len(prefix) :])):
            paths.append(path[len(prefix) :])
        if "R" in status or "C" in status:
            next(entries, None)  # the rename's source path follows
    return tuple(sorted({*paths, *hidden_edits(root)}))


def _own_output(path: Path) -> bool:
    """Whether the untracked file ``path`` is where this command's own output goes (``inv deploy.auto --json >
    deploy.json`` in the checkout: the shell made the file before deploykit started), which is no change of the
    project's: the same file as the process's stdout or stderr."""
    try:
        found = path.stat()
    except OSError:
        return False
    for fd in (1, 2):
        try:
            out = os.fstat(fd)
        except OSError:
            continue
        if (out.st_dev, out.st_ino) == (found.st_dev, found.st_ino):
            return True
    return False


def hidden_edits(root: Path, spec: tuple[str, ...] = (".",)) -> tuple[str, ...]:
    """The files under ``spec`` that git is told to pass over (``git update-index --assume-unchanged`` or
    ``--skip-worktree``, a local settings file kept out of commits) whose work-tree content differs from the index:
    git status and git diff say nothing of them, but a build of the work tree reads them, so they are uncommitted
    changes all the same (an image tagged with the commit's SHA held them). One that is not there (left out of a
    sparse checkout) is not. Paths relative to ``root``, sorted."""
    listed = _git(root, "--literal-pathspecs", "ls-files", "-v", "-z", "--", *spec).decode(errors="surrogateescape")
    flagged = [e[2:] for e in listed.split("\0") if len(e) > 2 and (e[0] == "S" or e[0].islower())]
    present = [p for p in flagged if (root / p).is_file() and not (root / p).is_symlink()]
    if not present:
        return ()
    staged = _git(root, "--literal-pathspecs", "ls-files", "-s", "-z", "--", *present).decode(errors="surrogateescape")
    index = {path: meta.split()[1] for meta, _, path in (e.partition("\t") for e in staged.split("\0") if e)}
    hashed = _git(root, "--literal-pathspecs", "hash-object", "--", *present).decode().split()
    return tuple(sorted(p for p, sha in zip(present, hashed, strict=True) if index.get(p) != sha))


def dirty_hash(root: Path, paths: tuple[str, ...]) -> str:
    """A hash of the uncommitted diff against HEAD, untracked files' contents included: of the files under ``root``
    alone, as :func:`dirty_paths` lists them (a project in a subfolder of its repository: an edit elsewhere in the
    repository leaves it as it is)."""
    return _uncommitted_hash(root, paths, ())


def paths_hash(root: Path, paths: tuple[str, ...]) -> str:
    """A hash of the uncommitted changes of ``paths`` alone: their diff against HEAD, untracked ones' contents."""
    return _uncommitted_hash(root, paths, paths)


def _uncommitted_hash(root: Path, paths: tuple[str, ...], only: tuple[str, ...]) -> str:
    """The diff against HEAD and the untracked files' contents, of ``only`` (every path under ``root`` when empty),
    and ``paths``."""
    # "." when empty: git diff run in a subfolder of the repository diffs the whole repository unless told otherwise
    spec = only or (".",)
    # a submodule's diff is the commit its folder is at, "-dirty" when its work tree has changes (untracked files
    # too, as git status tells them: IGNORE_NO_SUBMODULE); what those are is hashed from the submodule itself
    # git's own diff of the content: a user's diff.external (difftastic) or textconv driver renders one for people,
    # the same text for different edits
    diff = ["--literal-pathspecs", "diff", "HEAD", IGNORE_NO_SUBMODULE, "--no-ext-diff", "--no-textconv"]
    digest = hashlib.sha256(_git(root, *diff, "--binary", "--", *spec))
    listed = _git(root, "--literal-pathspecs", "ls-files", "--others", "--exclude-standard", "-z", "--", *spec)
    for rel in sorted(p for p in listed.decode(errors="surrogateescape").split("\0") if p):
        file = root / rel
        if _own_output(file):  # as dirty_paths passes it over: what this command writes is no change of the tree
            continue
        digest.update(rel.encode(errors="surrogateescape") + b"\0")
        if file.is_file():  # its executable bit too, as git keeps it (a build copies it: a script made runnable)
            digest.update(b"x" if os.access(file, os.X_OK) else b"-")
            digest.update(file.read_bytes())
        elif (file / ".git").exists():  # a repository of its own, untracked (a clone): git lists its folder alone
            for inside in worktree_files(file, "."):
                digest.update(inside.encode(errors="surrogateescape") + b"\0" + (file / inside).read_bytes())
    for rel in hidden_edits(root, spec):  # what git diff passes over (assume-unchanged, skip-worktree)
        digest.update(b"hidden\0" + rel.encode(errors="surrogateescape") + b"\0" + (root / rel).read_bytes())
    for change in _raw_changes(_git(root, "-c", "core.quotepath=off", *diff, "--raw", "-z", "--relative", "--", *spec)):
        folder = root / change.path
        if change.submodule and (folder / ".git").exists():  # checked out: its own uncommitted changes
            digest.update(change.path.encode(errors="surrogateescape") + b"\0")
            digest.update(_uncommitted_hash(folder, (), ()).encode())
    digest.update("\0".join(paths).encode(errors="surrogateescape"))
    return digest.hexdigest()


def worktree_files(root: Path, folder: str) -> list[str]:
    """The files under ``folder`` a build of the work tree sees: tracked ones that are there, and untracked ones git
    does not ignore (paths relative to ``root``, sorted); in a submodule checked out there, those of its own."""
    found: set[str] = set()
    for path in _files_seen(root, "--", folder):
        if (root / path).is_file():
            found.add(path)
        elif (root / path / ".git").exists():  # a submodule's folder: git lists the folder, not its files
            found.update(f"{path}/{inside}" for inside in worktree_files(root / path, "."))
    return sorted(found)


def files_git_sees(folder: Path) -> set[str] | None:
    """The files under ``folder`` that git tracks or would (untracked, not ignored), relative to it; None when
    ``folder`` is in no git work tree, or git sees none of its files (a commit's files exported to a temporary
    folder, or to one git ignores). A submodule under ``folder`` (which git lists as its folder alone) counts for
    the files its checkout holds, listed the same way; UsageError for one not checked out (its folder empty): what
    it holds is not there to read."""
    try:
        listed, gitlinks = _files_and_gitlinks(folder)
    except UsageError:  # no git work tree there
        return None
    # nothing seen: a folder git ignores as a whole (a commit's files exported under cdk.out/), where every file counts
    if not listed:
        return None
    for path in sorted(gitlinks):
        inside = folder / path
        if (inside / ".git").exists():  # checked out: what its checkout holds
            listed.update(f"{path}/{held}" for held in files_git_sees(inside) or ())
        elif inside.is_dir() and not inside.is_symlink():  # its folder empty: never checked out, or deinit
            raise UsageError(
                f"{inside} is a git submodule that is not checked out here: its files are not there to package",
                next_step=f"check it out at the commit recorded (git -C {folder} submodule update --init --recursive "
                f"-- {path}), then rerun",
            )
        # no folder at all: deleted from the work tree, an uncommitted change, as a file deleted is
    return listed


def seen_paths(folder: Path) -> Callable[[str], bool] | None:
    """Whether git sees a path of ``folder`` (relative to it, a file or a folder): a file it tracks or would track
    (:func:`files_git_sees`), a folder holding one, or anything inside a repository cloned there, which git lists as
    its folder alone (``vendor/lib/``; the dirty hash reads its files: an uncommitted change, deployed with
    --allow-dirty). None where git sees no file of ``folder`` (no work tree, a commit exported to a folder git
    ignores): then every path counts."""
    seen = files_git_sees(folder)
    if seen is None:
        return None
    held = seen | folders_of(seen)
    clones = tuple(p for p in seen if p.endswith("/"))
    return lambda path: path in held or (path + "/").startswith(clones)


def staged_modes(folder: Path) -> dict[str, str]:
    """path (relative to ``folder``) → the mode git's index records for it (``100644``, ``100755``, ``120000``: a
    symbolic link), for the files it tracks there; {} outside a work tree. What a commit holds, whatever the
    checkout made of it (``core.fileMode=false`` keeps a file's executable bit from git's; ``core.symlinks=false``
    checks a link out as a file holding its target's path)."""
    try:
        listed = _git(folder, "ls-files", "--stage", "-z")
    except UsageError:
        return {}
    found = (_STAGED.fullmatch(entry) for entry in listed.decode(errors="surrogateescape").split("\0"))
    return {staged.group(2): staged.group(1) for staged in found if staged}


def folders_of(files: Iterable[str]) -> set[str]:
    """Each folder holding one of ``files`` (posix paths relative to one folder), at any depth, as
    ``os.path.relpath`` names it ("." for that folder itself): a walk goes into those alone."""
    return {str(folder) for file in files for folder in PurePosixPath(file).parents}


# an entry of ``git ls-files --stage``: mode, object, stage, then the path (an untracked file's is its path alone)
_STAGED = re.compile(r"(\d{6}) [0-9a-f]{40,64} \d\t(.*)", re.DOTALL)


def _files_and_gitlinks(cwd: Path) -> tuple[set[str], set[str]]:
    """What git tracks or would track under ``cwd`` (:func:`_files_seen`), and of those the submodules its index
    records (their folders), relative to it: one ``git ls-files``, where it took two."""
    listed = _git(cwd, "ls-files", "--stage", "--cached", "--others", "--exclude-standard", "-z")
    files: set[str] = set()
    gitlinks: set[str] = set()
    for entry in listed.decode(errors="surrogateescape").split("\0"):
        staged = _STAGED.fullmatch(entry)
        path = staged.group(2) if staged else entry
        if path:
            files.add(path)
        if staged and staged.group(1) == GITLINK:
            gitlinks.add(path)
    return files, gitlinks


def _files_seen(cwd: Path, *pathspec: str) -> set[str]:
    """What git tracks or would track (untracked files it does not ignore), relative to ``cwd``, under ``pathspec``
    (default: all of ``cwd``); tracked files deleted from the work tree included."""
    listed = _git(cwd, "--literal-pathspecs", "ls-files", "--cached", "--others", "--exclude-standard", "-z", *pathspec)
    return {p for p in listed.decode(errors="surrogateescape").split("\0") if p}


def worktree_state(root: Path) -> tuple[str, str]:
    """What a deploy of the work tree would build from, as (HEAD's SHA, a hash of the uncommitted changes): it
    changes with a commit, a checkout, or any edit of a file git does not ignore (``inv deploy.auto --watch``)."""
    paths = dirty_paths(root)
    return head_sha(root), dirty_hash(root, paths) if paths else ""


def current_revision(root: Path, *, allow_dirty: bool = False) -> Revision:
    """The revision to deploy. Refuses a dirty tree unless ``allow_dirty``."""
    sha = head_sha(root)
    paths = dirty_paths(root)
    if not paths:
        return Revision(sha)
    if not allow_dirty:
        shown = ", ".join(paths[:5]) + (f" and {len(paths) - 5} more" if len(paths) > 5 else "")
        hidden = hidden_edits(root)
        if hidden:  # git status shows none of them
            shown += f" (git is told to pass over {', '.join(hidden[:5])}: assume-unchanged or skip-worktree)"
        raise UsageError(
            f"the work tree has uncommitted changes: {shown}",
            next_step="commit or stash them, or pass --allow-dirty to deploy them as a dirty build (sha12-dirty-hash)",
        )
    return Revision(sha, paths, dirty_hash(root, paths))


# -- history: what changed between two commits (deploykit.changes) ---------------------------------------------


GITLINK = "160000"  # the mode git gives a submodule's entry: the commit the folder is checked out at
SYMLINK = "120000"  # ... a symbolic link's (its content the target's path)
EXECUTABLE = "100755"  # ... an executable file's
REGULAR = "100644"  # ... any other file's


@dataclass(frozen=True)
class PathChange:
    """One changed path of ``git diff``: A, M, D, T (type change) or R (renamed from ``old_path``).

    ``submodule``: the path is a submodule's folder (a gitlink, on either side): a commit of the submodule taken up,
    or its work tree changed, is this one change of the folder's path, none of the files under it.
    """

    status: str
    path: str
    old_path: str | None = None
    submodule: bool = False


def _git_ok(root: Path, *args: str) -> bool:
    """Whether a git command succeeds (for questions, not actions)."""
    try:
        done = subprocess.run(["git", *args], cwd=root, capture_output=True, check=False)
    except FileNotFoundError:
        raise UsageError("git is not installed", next_step="install git (apt-get install git)") from None
    return done.returncode == 0


def _refuse_option(rev: str) -> None:
    if not rev or rev.startswith("-"):
        raise UsageError(f"{rev!r} is not a git revision", next_step="pass a commit SHA, a tag or a branch name")


def is_sha(value: str, *, least: int = 7) -> bool:
    """Whether ``value`` is a commit's name or the start of one: ``least`` to :data:`SHA_DIGITS` lower-case hex
    digits."""
    return re.fullmatch(f"[0-9a-f]{{{least},{SHA_DIGITS}}}", value) is not None


def is_known_commit(root: Path, sha: str) -> bool:
    """Whether ``sha`` (full or abbreviated) names a commit in the local history."""
    _refuse_option(sha)
    return _git_ok(root, "cat-file", "-e", f"{sha}^{{commit}}")


def is_ambiguous(root: Path, rev: str) -> bool:
    """Whether ``rev`` is an abbreviated SHA more than one commit of the clone at ``root`` starts with (objects of
    other kinds sharing it do not count: git tells a commit from them)."""
    if not re.fullmatch(f"[0-9a-fA-F]{{4,{SHA_DIGITS - 1}}}", rev):  # a whole SHA names one commit
        return False
    candidates = _git(root, "rev-parse", f"--disambiguate={rev.lower()}").decode().split()
    if len(candidates) < 2:
        return False
    kinds = _git(root, "cat-file", "--batch-check=%(objecttype)", stdin="".join(f"{c}\n" for c in candidates).encode())
    return kinds.decode().split().count("commit") > 1


def resolve_commit(root: Path, rev: str) -> str | None:
    """The full SHA of the commit ``rev`` names (a SHA, a tag, a branch, HEAD~2), or None if there is none."""
    return resolve_commits(root, [rev])[rev]


def resolve_commits(root: Path, revs: Sequence[str]) -> dict[str, str | None]:
    """rev → the full SHA of the commit it names, None when none (or an abbreviation that is ambiguous), for each of
    ``revs``, in one git process."""
    wanted = list(dict.fromkeys(revs))
    for rev in wanted:
        _refuse_option(rev)
    asked = [rev for rev in wanted if "\n" not in rev]
    found: dict[str, str | None] = dict.fromkeys(wanted)
    if asked:
        out = _git(root, "cat-file", "--batch-check", stdin="".join(f"{rev}^{{commit}}\n" for rev in asked).encode())
        for rev, line in zip(asked, out.decode().splitlines(), strict=True):
            parts = line.split()  # "<sha> commit <size>", or "<rev>^{commit} missing" / "... ambiguous"
            found[rev] = parts[0] if len(parts) == 3 and parts[1] == "commit" else None
    return found


def unpushed(root: Path, shas: Sequence[str]) -> list[str] | None:
    """Those of commits ``shas`` (full SHAs) that no remote-tracking branch of this clone (``refs/remotes/*``, as last
    fetched: no network) holds, in their order; None when the clone has no remote-tracking branch at all."""
    unique = list(dict.fromkeys(shas))
    for sha in unique:
        _refuse_option(sha)
    if not _git(root, "for-each-ref", "--count=1", "--format=%(refname)", "refs/remotes").strip():
        return None
    if not unique:
        return []
    ahead = set(_git(root, "rev-list", *unique, "--not", "--remotes").decode().split())  # no remote holds them
    return [sha for sha in unique if sha in ahead]


def export(root: Path, rev: str, folder: str, dest: Path) -> bool:
    """Write the files under ``folder`` (relative to ``root``) in commit ``rev`` into ``dest``, at the same relative
    paths, as a checkout of that commit writes them into its work tree (:func:`_check_out`: executable bits and
    symbolic links kept, end-of-line conversion and filters applied, ``export-ignore`` and ``export-subst`` not);
    False when that commit has no such folder.

    A submodule under ``folder``, or ``folder`` inside one (``lambda`` as one submodule), is written as the commit
    ``rev`` records for it, from the submodule's own repository (its checkout's, or the one git keeps in
    ``.git/modules`` for one not checked out), as a package of the work tree reads its checkout: a commit's files are
    not only those its own repository holds. UsageError, before anything is written, when this clone lacks that
    commit of a submodule (never checked out, or not fetched)."""
    _refuse_option(rev)
    commit = resolve_commit(root, rev)
    if commit is None:
        return False
    # one a line, in this order (--show-prefix gives an empty line at the top of the repository)
    where = _git(root, "rev-parse", "--show-prefix", "--show-toplevel", "--absolute-git-dir")
    prefix, toplevel, gitdir = where.decode(errors="surrogateescape").split("\n")[:3]
    top = _Source(Path(toplevel), (), Path(toplevel), prefix, "", Path(gitdir))
    parts = _export_parts(top, commit, prefix + folder.strip("/"))
    if parts is None:
        return False
    with tempfile.TemporaryDirectory(prefix="deploykit-export-") as tmp:
        for index, (source, at, path, files) in enumerate(parts):
            checkout = Path(tmp) / str(index)
            _check_out(source, at, files, checkout, Path(tmp) / f"{index}.index")
            placed = dest / (source.place + path.removeprefix(source.strip))
            placed.mkdir(parents=True, exist_ok=True)
            written = checkout / path if path else checkout
            if written.is_dir():
                shutil.copytree(written, placed, symlinks=True, dirs_exist_ok=True)
    return True


def _check_out(source: _Source, commit: str, files: Sequence[str], into: Path, index: Path) -> None:
    """Write ``files`` of ``commit``'s tree (:func:`_export_parts` lists them) into the empty folder ``into`` (at
    their paths in that tree) as ``git checkout`` of that commit writes them: git's own checkout (checkout-index)
    from a temporary index holding the commit's tree, into ``into`` as a temporary work tree; the repository's own
    index and work tree are not read, nor touched.

    So what a checkout applies is applied: the attributes of that commit's ``.gitattributes`` (at every level, the
    repository's top too) and of ``$GIT_DIR/info/attributes`` and ``core.attributesFile``, with this clone's
    configuration: end-of-line conversion (``text``, ``eol``, ``core.autocrlf``, ``core.eol``), ``ident``,
    ``working-tree-encoding``, filter drivers' smudge (git-lfs's, where it is installed: the file, not its pointer,
    fetched as a checkout fetches it); executable bits, and symbolic links as links (files holding their target with
    ``core.symlinks = false``). And what ``git archive`` applies and a checkout does not is not: ``export-ignore`` (it
    left files out) and ``export-subst`` (it rewrote ``$Format:...$``), which made a commit's zip differ from the one
    its checkout's work tree makes. A submodule's folder is not written here: :func:`export` writes it from the
    submodule's repository."""
    into.mkdir()
    # the temporary index alone: no fsmonitor hook or sparse checkout of the user's applies to it
    git = (
        f"--git-dir={source.gitdir}",
        f"--work-tree={into}",
        "-c",
        "core.fsmonitor=false",
        "-c",
        "core.sparseCheckout=false",
    )
    env = {**os.environ, "GIT_INDEX_FILE": str(index)}
    _git(into, *git, "read-tree", commit, env=env)
    if files:
        stdin = "".join(f"{name}\0" for name in files).encode(errors="surrogateescape")
        _git(into, *git, "checkout-index", "-z", "--stdin", stdin=stdin, env=env)


@dataclass(frozen=True)
class _Source:
    """A repository :func:`export` reads a commit's files from: the project's, or a submodule's."""

    cwd: Path  # where its git commands run: the project's root, or the submodule's git directory
    git: tuple[str, ...]  # git's options naming it: none for the project's, --git-dir for a submodule's
    checkout: Path  # its work tree's root (a submodule's folder, checked out or not)
    strip: str  # the part of its tree's paths above the project's root (a project in a subfolder of its repository)
    place: str  # where its root is written, relative to the project's root ("" or "lambda/fn/vendor/lib/")
    gitdir: Path  # its git directory (the project's, a worktree's, or the submodule's)


def _export_parts(source: _Source, commit: str, path: str) -> list[tuple[_Source, str, str, list[str]]] | None:
    """(repository, commit, folder of its tree, the files under it) for each tree :func:`export` writes for ``path``
    in ``commit`` of ``source``: the folder, the submodules it holds (at any depth), or the submodule it is in; None
    when there is no such folder. The files are those of that repository's tree alone (a submodule's folder is its
    own part)."""
    parts = path.split("/") if path else []
    for index in range(len(parts)):
        here = "/".join(parts[: index + 1])
        entry = _tree_entry(source, commit, here)
        if entry is None:
            return None
        mode, kind, sha = entry
        if mode == GITLINK:  # the folder is in a submodule: its repository holds the rest of the path
            return _export_parts(_submodule_source(source, commit, here, sha), sha, "/".join(parts[index + 1 :]))
        if kind != "tree":
            return None
    files: list[str] = []
    found = [(source, commit, path, files)]
    spec = ("--", path) if path else ()
    listing = _git(source.cwd, *source.git, "ls-tree", "-r", "-z", "--full-tree", commit, *spec)
    for line in listing.decode(errors="surrogateescape").split("\0"):
        meta, _, inside = line.partition("\t")
        if meta.startswith(f"{GITLINK} "):
            recorded = meta.split()[2]
            more = _export_parts(_submodule_source(source, commit, inside, recorded), recorded, "")
            found += more or []
        elif inside:
            files.append(inside)
    return found


def _tree_entry(source: _Source, commit: str, path: str) -> tuple[str, str, str] | None:
    """(mode, kind, object) of ``path`` in ``commit``'s tree; None when it has none."""
    listing = _git(source.cwd, *source.git, "ls-tree", "-z", "--full-tree", commit, "--", path)
    for line in listing.decode(errors="surrogateescape").split("\0"):
        meta, _, named = line.partition("\t")
        if named == path:
            mode, kind, sha = meta.split()
            return mode, kind, sha
    return None


def _submodule_source(source: _Source, commit: str, path: str, sha: str) -> _Source:
    """The repository of the submodule at ``path`` of ``source``'s ``commit``, which records it at ``sha``: its
    checkout's, else the one git keeps for it (``<git dir>/modules/<name>``, the name ``.gitmodules`` gives it in
    that commit); UsageError when neither has that commit."""
    place = source.place + path.removeprefix(source.strip)
    checkout = source.checkout / path
    candidates = []
    if (checkout / ".git").exists():
        with contextlib.suppress(UsageError):  # a .git file that points nowhere: the one git keeps, if any
            candidates.append(Path(_git(checkout, "rev-parse", "--absolute-git-dir").decode().strip()))
    candidates.append(source.gitdir / "modules" / _submodule_name(source, commit, path))
    for gitdir in candidates:
        if gitdir.is_dir() and _git_ok(gitdir, f"--git-dir={gitdir}", "cat-file", "-e", f"{sha}^{{commit}}"):
            return _Source(gitdir, (f"--git-dir={gitdir}",), checkout, "", f"{place}/", gitdir)
    raise UsageError(
        f"{place} is a git submodule, at {sha[:SHORT_SHA]} in commit {commit[:SHORT_SHA]}, and this clone does not "
        "have that commit of it: its files cannot be packaged as in that commit, and nothing is packaged without them",
        next_step=f"check the submodule out (git submodule update --init --recursive), fetch its commits "
        f"(git -C {place} fetch origin), then rerun",
    )


def _submodule_name(source: _Source, commit: str, path: str) -> str:
    """The name ``commit``'s ``.gitmodules`` gives the submodule at ``path`` (where git keeps its repository,
    ``.git/modules/<name>``); ``path`` itself, git's default, when it names none."""
    try:
        listed = _git(
            source.cwd, *source.git, "config", "-z", "--blob", f"{commit}:.gitmodules", "--get-regexp", r"\.path$"
        )
    except UsageError:  # no .gitmodules in that commit, or no path in it
        return path
    for entry in listed.decode(errors="surrogateescape").split("\0"):
        key, _, value = entry.partition("\n")
        if value == path and key.startswith("submodule.") and key.endswith(".path"):
            return key[len("submodule.") : -len(".path")]
    return path


def commits_ahead(root: Path, commit: str, of: str) -> int:
    """How many commits ``commit`` has that ``of`` lacks when ``of`` is one of its ancestors (``commit`` is newer on
    the same line of history); 0 otherwise: the same commit, an older one, or one on another branch."""
    _refuse_option(commit)
    _refuse_option(of)
    if commit == of or not _git_ok(root, "merge-base", "--is-ancestor", of, commit):
        return 0
    return int(_git(root, "rev-list", "--count", f"{of}..{commit}").decode().strip())


def divergence(root: Path, a: str, b: str) -> tuple[int, int]:
    """(how many commits ``a`` has that ``b`` lacks, how many ``b`` has that ``a`` lacks): (0, 3) when ``b`` is 3
    commits ahead of ``a`` on the same line of history."""
    _refuse_option(a)
    _refuse_option(b)
    left, right = _git(root, "rev-list", "--left-right", "--count", f"{a}...{b}").decode().split()
    return int(left), int(right)


def commit_times(root: Path, shas: Sequence[str]) -> dict[str, datetime]:
    """sha (as given, full or abbreviated) → its committer time, for the commits the local history has; one git
    process for all. A SHA git does not know (or finds ambiguous) is left out."""
    wanted = [s for s in dict.fromkeys(shas) if s and not s.startswith("-") and "\n" not in s]
    if not wanted:
        return {}
    out = _git(root, "cat-file", "--batch", stdin="".join(f"{s}^{{commit}}\n" for s in wanted).encode())
    found: dict[str, datetime] = {}
    for sha in wanted:
        header, _, out = out.partition(b"\n")
        parts = header.split()
        if len(parts) != 3 or parts[1] != b"commit":  # "<sha>^{commit} missing", "... ambiguous"
            continue
        size = int(parts[2])
        body, out = out[:size], out[size + 1 :]  # the object, then a newline
        for line in body.split(b"\n"):
            if not line:
                break  # the headers end at the first empty line
            if line.startswith(b"committer "):
                stamp = int(line.rsplit(b" ", 2)[1])
                found[sha] = datetime.fromtimestamp(stamp, UTC)
    return found


@dataclass(frozen=True)
class Commit:
    """One commit as ``git log`` tells it."""

    sha: str  # full
    author: str
    when: datetime  # the author's time
    subject: str


LOG_PATHS = 500  # more paths than this go to git on its standard input, not its command line (whose size is limited)


def log(root: Path, base: str, head: str, paths: Sequence[str] = ()) -> list[Commit]:
    """The commits of ``base..head`` (those ``head`` has that ``base`` lacks), newest first; with ``paths``, only
    those that change one of them (git's history simplification: a merge that changes nothing of them is left out).
    One git process."""
    _refuse_option(base)
    _refuse_option(head)
    only = ["--", *paths] if paths and len(paths) <= LOG_PATHS else []
    # more: one a line after a "--" line on its standard input (--stdin); a path holding a newline cannot be given so,
    # and the range's every commit is listed then
    piped = len(paths) > LOG_PATHS and not any("\n" in p for p in paths)
    stdin = "".join(f"{p}\n" for p in ("--", *paths)).encode(errors="surrogateescape") if piped else None
    # --literal-pathspecs: a path is a path (backend/app/[id].py is no pattern matching backend/app/i.py)
    out = _git(
        root,
        "--literal-pathspecs",
        "log",
        "--no-show-signature",  # log.showSignature = true writes each signature's check before the commit's line
        "--format=%H%x1f%an%x1f%at%x1f%s%x1e",
        *(["--stdin"] if piped else []),
        f"{base}..{head}",
        *only,
        stdin=stdin,
    ).decode(errors="replace")
    found: list[Commit] = []
    for entry in out.split("\x1e"):
        parts = entry.strip("\n").split("\x1f")
        if len(parts) == 4 and parts[2].isdigit():
            found.append(Commit(parts[0], parts[1], datetime.fromtimestamp(int(parts[2]), UTC), parts[3]))
    return found


def newest_first(root: Path, head: str, bases: Sequence[str]) -> dict[str, int]:
    """Full SHA → its place among the commits ``head`` has that every one of ``bases`` lacks' common ancestor has
    not (0: ``head`` itself), in git's topological order: children before their parents, which commit times (a
    second apart at best) cannot always tell."""
    for rev in (head, *bases):
        _refuse_option(rev)
    if not bases:
        return {}
    try:
        oldest = (
            _git(root, "merge-base", "--octopus", *dict.fromkeys(bases)).decode().strip()
            if len(bases) > 1
            else bases[0]
        )
        listed = _git(root, "rev-list", "--topo-order", head, f"^{oldest}").decode().split()
    except UsageError:  # no common ancestor (an orphan branch): no order to give; the caller falls back on times
        return {}
    return {sha: index for index, sha in enumerate(listed)}


def github_commit_url(environ: Mapping[str, str]) -> str:
    """Where GitHub shows a commit of the repository a GitHub Actions job runs for, the SHA to append ("" outside
    GitHub Actions)."""
    server, repository = environ.get("GITHUB_SERVER_URL", ""), environ.get("GITHUB_REPOSITORY", "")
    return f"{server.rstrip('/')}/{repository}/commit/" if server and repository else ""


def commit_url_base(root: Path, environ: Mapping[str, str]) -> str:
    """Where a commit of this repository is shown on the web, the SHA to append: the CI's own repository (GitHub
    Actions: ``$GITHUB_SERVER_URL/$GITHUB_REPOSITORY``; GitLab CI: ``$CI_PROJECT_URL``), else the ``origin`` remote
    when it is on github.com or gitlab.com; "" otherwise (another host: no guess)."""
    github = github_commit_url(environ)
    if github:
        return github
    if environ.get("CI_PROJECT_URL"):
        return f"{environ['CI_PROJECT_URL'].rstrip('/')}/-/commit/"
    try:
        remote = _git(root, "remote", "get-url", "origin").decode().strip()
    except UsageError:  # no origin
        return ""
    found = re.fullmatch(
        r"(?:https://(?:[^@/]+@)?|ssh://git@|git@)(github\.com|gitlab\.com)[:/](.+?)(?:\.git)?/?", remote
    )
    if not found:
        return ""
    host, path = found.groups()
    return f"https://{host}/{path}/commit/" if host == "github.com" else f"https://{host}/{path}/-/commit/"


def is_shallow(root: Path) -> bool:
    """Whether this clone has only part of the history (CI checkouts often do)."""
    return _git(root, "rev-parse", "--is-shallow-repository").decode().strip() == "true"


def changed_paths(root: Path, base: str, head: str | None = "HEAD") -> list[PathChange]:
    """The paths that differ between commit ``base`` and ``head`` (None: the work tree, untracked files included).

    In the work tree, an edit of a file git is told to pass over (assume-unchanged, skip-worktree) is one too.
    Paths are relative to ``root`` (a project in a subfolder of its repository sees only its own files). Renames
    are detected (``-M``) and listed once, with their old path. A submodule is its folder's path, marked so (the
    modes ``--raw`` gives tell it); in the work tree it counts as changed when ``git status`` says so, untracked
    files in it included (which ``git diff`` leaves out unless told); a user's ``submodule.<name>.ignore`` hides
    nothing (:data:`IGNORE_NO_SUBMODULE`).
    """
    _refuse_option(base)
    args = ["-c", "core.quotepath=off", "diff", "--raw", "-z", "-M", "--relative", "--no-ext-diff", "--no-textconv"]
    # between two commits too: submodule.<name>.ignore = all hid a commit of the submodule taken up
    args += [IGNORE_NO_SUBMODULE, base]
    if head is not None:
        _refuse_option(head)
        args.append(head)
    changes = _raw_changes(_git(root, *args, "--"))
    if head is None:
        untracked = _git(root, "ls-files", "--others", "--exclude-standard", "-z").decode(errors="surrogateescape")
        changes.extend(PathChange("A", path) for path in untracked.split("\0") if path)
        # edits git is told to pass over: git diff says nothing of them, yet the dirty check refused them and a build
        # of the work tree reads them (:func:`hidden_edits`)
        listed = {c.path for c in changes}
        changes.extend(PathChange("M", path) for path in hidden_edits(root) if path not in listed)
    return sorted(changes, key=lambda c: (c.path, c.old_path or ""))


def _raw_changes(out: bytes) -> list[PathChange]:
    """The changes ``git diff --raw -z`` lists."""
    fields = out.decode(errors="surrogateescape").split("\0")
    changes: list[PathChange] = []
    index = 0
    while index < len(fields) and fields[index]:
        # :<old mode> <new mode> <old object> <new object> <status>[<score>], then the path (two: a rename's)
        old_mode, new_mode, _old, _new, status = fields[index].lstrip(":").split()
        submodule = GITLINK in (old_mode, new_mode)
        if status[0] in "RC":
            changes.append(PathChange(status[0], fields[index + 2], fields[index + 1], submodule))
            index += 3
        else:
            changes.append(PathChange(status[0], fields[index + 1], submodule=submodule))
            index += 2
    return changes


def files_at(root: Path, rev: str, folder: str, suffix: str = "") -> dict[str, bytes]:
    """The files under ``folder`` (relative to ``root``) in commit ``rev`` whose name ends with ``suffix``."""
    _refuse_option(rev)
    listing = _git(root, "ls-tree", "-r", "-z", rev, "--", folder).decode(errors="surrogateescape")
    blobs: list[tuple[str, str]] = []
    for entry in listing.split("\0"):
        if not entry:
            continue
        meta, path = entry.split("\t", 1)
        _mode, kind, sha = meta.split()
        if kind == "blob" and path.endswith(suffix):
            blobs.append((path, sha))
    if not blobs:
        return {}
    out = _git(root, "cat-file", "--batch", stdin="".join(f"{sha}\n" for _, sha in blobs).encode())
    files: dict[str, bytes] = {}
    offset = 0
    for path, _sha in blobs:
        header_end = out.index(b"\n", offset)
        size = int(out[offset:header_end].split()[2])
        files[path] = out[header_end + 1 : header_end + 1 + size]
        offset = header_end + 1 + size + 1  # the content is followed by a newline
    return files
