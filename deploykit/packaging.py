"""Reproducible Lambda packages: the same function folder gives the same zip, byte for byte.

A function is a folder under ``lambda/`` holding ``handler.py`` (Lambda handler ``handler.handler``), its
``requirements.txt`` if it needs anything beyond the runtime's boto3, and its ``tests/``. The zip's SHA-256
names it (``lambda/<name>/<sha256>.zip``), so an upload can be skipped when that key already exists and a
later stack deploy can point at exactly the code that is live.

What goes in the zip:

- every file of the folder except ``tests/`` and ``conftest.py`` at its top, caches and ``.git`` at any depth
  (``__pycache__/``, ``.pytest_cache/``, ``.mypy_cache/``, ``.ruff_cache/``, ``*.pyc``, ``*.pyo``; a submodule's
  ``.git`` file, a clone's ``.git`` folder) and
  ``requirements.txt`` itself: it is a build input, and what it asks for is in the zip as vendored packages; a git
  submodule inside the folder (``lambda/<fn>/vendor/lib``), whose folder alone git lists, is there with the files its
  checkout holds (at the commit the parent records, or the tree is dirty), chosen as the folder's own are; one not
  checked out (its folder empty) is refused, not packaged without its files;
- the packages ``requirements.txt`` lists, vendored at the zip's root by ``pip install --target`` for the
  Lambda platform (manylinux2014, wheels only) of the functions' runtime, CPython 3.11 by default (``[build]
  lambda_runtime``), on their architecture, x86_64 or arm64 (``[build] lambda_architecture``). Vendoring is
  deterministic only if the input is: every requirement must be pinned (``name==version`` or ``name @ url``) and,
  because pip runs with ``--no-deps``, the file must list the whole dependency closure (as ``pip-compile`` or ``pip
  freeze`` write it). ``-r``/``-c``/``-e`` lines are refused (the cache key would not see the included file).
  Console scripts (``bin/``, whose shebang names this machine's interpreter) are dropped, and so are their
  lines in the ``RECORD`` files. The vendored tree, and its zip, are kept under ``requirements_cache`` (by
  default ``lambda-vendor/`` in deploykit's cache, :mod:`deploykit.cachedir`) by the hash of ``requirements.txt``
  and the pip platform options, and dropped once unused for :data:`VENDOR_KEEP_DAYS` days.

A function with requirements is zipped as its vendored packages' zip, made once, with the function's own files
appended: a change to a handler beside 16 MB of numpy zips the handler alone (about 0.1 s), not everything again
(about 3 s). The entries are then the vendored ones, sorted, then the function's own, sorted. So every zip of a
function with the same requirements begins with the same bytes, the vendored entries (:attr:`Package.prefix_length`
of them, up to where the vendored zip's own central directory began): the upload sends those once and has S3 copy
them into each new zip (:class:`deploykit.stack_chain.UploadLambdaCode`), so a handler change beside numpy sends
kilobytes, not 16 MB.

How it is written: entries sorted by path (forward slashes), no directory entries, every date
1980-01-01 00:00:00, Unix permissions 0644 (0755 when its owner may run the source file, as git records it),
ZIP_DEFLATED at level 6, no comment. File mtimes, the order the file system lists entries, the umask and the folder's
location do not change a byte. (The deflate output is zlib's: two machines agree when their zlib does,
which the standard zlib does; a machine that differs only re-uploads the same code under another name.)
Symbolic links to files are packaged as the files they point at; links to directories are refused.
"""

from __future__ import annotations

import base64
import codecs
import contextlib
import hashlib
import io
import os
import re
import shlex
import shutil
import stat
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from functools import cached_property, partial
from pathlib import Path
from typing import Any, TypedDict

from deploykit import git
from deploykit.cachedir import DAY, cache_root, prune_due
from deploykit.errors import StepFailed, UsageError

HANDLER_MODULE = "handler.py"
REQUIREMENTS = "requirements.txt"
FIXED_DATE_TIME = (1980, 1, 1, 0, 0, 0)
COMPRESSLEVEL = 6
FILE_MODE = 0o644
EXECUTABLE_MODE = 0o755
KEY_PREFIX = "lambda"
VENDORED_KEY_PREFIX = "lambda-vendored"
# a zip put together in S3 from its kept vendored entries names their SHA-256 in this metadata field (S3's
# x-amz-meta-vendored), so that inv lambda.cleanup knows which kept entries a live zip was made from
VENDORED_METADATA = "vendored"
VENDOR_KEEP_DAYS = 30  # a vendored tree and its zip go once no package used them for this long

# The Lambda runtime the vendored wheels are chosen for, on each architecture a function may run on (a function's
# Architectures, [build] lambda_architecture): compiled modules vendored for x86_64 do not import on arm64
# (Graviton), nor the reverse. Part of the vendoring cache key.
ARCHITECTURES = {"x86_64": "manylinux2014_x86_64", "arm64": "manylinux2014_aarch64"}
DEFAULT_ARCHITECTURE = "x86_64"
# The Python of the functions' runtime ([build] lambda_runtime, python3.11 by default): compiled modules vendored for
# one CPython do not import on another. Part of the vendoring cache key too.
DEFAULT_PYTHON = "3.11"


def pip_platform_options(architecture: str = DEFAULT_ARCHITECTURE, python: str = DEFAULT_PYTHON) -> tuple[str, ...]:
    """pip's options choosing wheels for the Lambda runtime of CPython ``python`` (``3.12``) on ``architecture``
    (``x86_64``, ``arm64``)."""
    if architecture not in ARCHITECTURES:
        raise UsageError(
            f"{architecture!r} is not an architecture Lambda runs functions on",
            next_step=f"set [build] lambda_architecture in deploy.toml to one of: {', '.join(ARCHITECTURES)}",
        )
    platform = ARCHITECTURES[architecture]
    return ("--platform", platform, "--only-binary=:all:", "--implementation", "cp", "--python-version", python)


_COMPILED_RE = re.compile(r"\.so(\.\d+)*$")  # a Python extension module or a shared library it loads
_VENDOR_FORMAT = "deploykit-vendor-v1"  # bump when the vendored tree's normalisation, or how it is zipped, changes

_EXCLUDED_TOP_LEVEL = frozenset({"tests", "conftest.py", REQUIREMENTS})
_EXCLUDED_DIRS = frozenset({"__pycache__", ".pytest_cache", ".mypy_cache", ".ruff_cache"})
# never in a zip, at any depth, a file or a folder, whatever git says: a submodule's .git file (gitdir: ...) points
# into the parent repository (and git, when that pointer leads nowhere, lists nothing, so every file counts), a
# clone's .git folder is its history; neither is the function's code
_GIT = ".git"
_EXCLUDED_SUFFIXES = (".pyc", ".pyo")
_NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_PINNED_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(\[[^\]]*\])?\s*(===?\s*[^\s,;*]+|@\s*\S+)\s*(;.*)?$")
_REFUSED_OPTIONS = ("-r", "--requirement", "-c", "--constraint", "-e", "--editable")


class Target(TypedDict):
    """What a function's zip is made for, as :func:`package_function` takes it (``**target``): the architecture it
    runs on and the CPython of its runtime (``3.12``)."""

    architecture: str
    python: str


# Lambda's Python runtimes, as [build] lambda_runtime names one
LAMBDA_RUNTIMES = ("python3.10", "python3.11", "python3.12", "python3.13", "python3.14")


def python_of(runtime: str) -> str:
    """The CPython version of a Lambda runtime's name (python3.12 → 3.12)."""
    return runtime.removeprefix("python")


# When AWS deprecates each runtime (its table of runtimes, "Deprecation date", as read in 2026-07): from then, no
# security patches, and later AWS blocks creating, then updating, its functions. AWS has moved such dates before, so
# they are planning dates, said as such. python3.10 and python3.11 run on Amazon Linux 2, whose end of life was
# 2026-06-30; the later ones on Amazon Linux 2023.
RUNTIME_DEPRECATION = {
    "python3.10": date(2026, 10, 31),
    "python3.11": date(2027, 6, 30),
    "python3.12": date(2028, 10, 31),
    "python3.13": date(2029, 6, 30),
    "python3.14": date(2029, 6, 30),
}
AMAZON_LINUX_2 = frozenset({"python3.10", "python3.11"})
DEPRECATION_NOTICE = timedelta(days=180)  # AWS tells a runtime's users this long before its deprecation


def runtime_deprecation(runtime: str, today: date) -> str | None:
    """What to say of a function's runtime that AWS deprecated, or deprecates within :data:`DEPRECATION_NOTICE`
    (``python3.10, which AWS deprecated on 2026-10-31``); None for a later one and for a runtime not listed."""
    deprecated = RUNTIME_DEPRECATION.get(runtime)
    if deprecated is None or today < deprecated - DEPRECATION_NOTICE:
        return None
    said = f"{runtime}, which AWS {'deprecated' if today >= deprecated else 'deprecates'} on {deprecated.isoformat()}"
    return said + (" (on Amazon Linux 2, past its end of life)" if runtime in AMAZON_LINUX_2 else "")


def runtimes_to_move_to(today: date) -> list[str]:
    """The runtimes of :data:`LAMBDA_RUNTIMES` to move functions to on ``today``: on Amazon Linux 2023, as AWS
    advises, and not deprecated within :data:`DEPRECATION_NOTICE`."""
    return [
        runtime
        for runtime in LAMBDA_RUNTIMES
        if runtime not in AMAZON_LINUX_2 and runtime_deprecation(runtime, today) is None
    ]


Installer = Callable[[Path, Path], None]
"""Installs the requirements file (first argument) into the target directory (second argument)."""


@dataclass(frozen=True)
class Package:
    """One function's zip and the names derived from its content."""

    name: str
    zip_bytes: bytes = field(repr=False)
    sha256: str  # hex digest of zip_bytes
    key: str  # S3 key: lambda/<name>/<sha256>.zip
    # the Lambda architecture its vendored compiled code is for (the one it was packaged for); "" when it has none,
    # and runs on any
    compiled_for: str = ""
    architecture: str = DEFAULT_ARCHITECTURE  # the one it was packaged for
    python: str = DEFAULT_PYTHON  # the CPython it was packaged for (its vendored wheels')
    # how many of zip_bytes' first bytes are the vendored packages' entries, the same in every zip of a function with
    # the same requirements.txt (and of another function with the same file); 0 without requirements
    prefix_length: int = 0

    @cached_property
    def prefix_sha256(self) -> str:
        """The hex SHA-256 of the vendored entries (the first :attr:`prefix_length` bytes; 16 MB of numpy: about
        30 ms, worked out once); "" without them."""
        return (
            hashlib.sha256(memoryview(self.zip_bytes)[: self.prefix_length]).hexdigest() if self.prefix_length else ""
        )

    @property
    def prefix_key(self) -> str:
        """The S3 key the vendored entries are kept under, by their content, for the upload to copy from
        (``lambda-vendored/<sha256>.bin``: outside ``lambda/``, whose folders are functions); "" without them."""
        return f"{VENDORED_KEY_PREFIX}/{self.prefix_sha256}.bin" if self.prefix_length else ""

    @property
    def code_sha256(self) -> str:
        """The digest as Lambda reports it (``CodeSha256``: base64 of the raw SHA-256)."""
        return code_sha256_of(self.sha256)

    @property
    def files(self) -> tuple[str, ...]:
        """The zip's entry names, in order."""
        with zipfile.ZipFile(io.BytesIO(self.zip_bytes)) as zf:
            return tuple(zf.namelist())


def zip_key(name: str, sha256: str) -> str:
    """The S3 key of function ``name``'s zip whose SHA-256 (hex) is ``sha256``: ``lambda/<name>/<sha256>.zip``."""
    return f"{KEY_PREFIX}/{name}/{sha256}.zip"


def short_key(key: str) -> str:
    """A key named by a SHA-256, for people: ``lambda/fn/<64 hex>.zip`` → ``lambda/fn/<12 hex>….zip`` (and
    ``lambda-vendored/<64 hex>.bin`` likewise); any other key as it is. Inputs keep the whole key."""
    folder, _, name = key.rpartition("/")
    stem, dot, suffix = name.partition(".")
    if len(stem) == 64 and all(c in "0123456789abcdef" for c in stem):
        name = f"{stem[:12]}…{dot}{suffix}"
    return f"{folder}/{name}" if folder else name


def code_sha256_of(sha256: str) -> str:
    """A zip's SHA-256 (hex) as Lambda reports it (``CodeSha256``: base64 of the raw digest)."""
    return base64.b64encode(bytes.fromhex(sha256)).decode("ascii")


def sha256_of(code_sha256: str) -> str:
    """Lambda's ``CodeSha256`` (base64) as the hex SHA-256 that names a zip: :func:`code_sha256_of` undone."""
    return base64.b64decode(code_sha256).hex()


def package_function(
    folder: Path,
    *,
    architecture: str = DEFAULT_ARCHITECTURE,
    python: str = DEFAULT_PYTHON,
    requirements_cache: Path | None = None,
    installer: Installer | None = None,
) -> Package:
    """Package the function in ``folder`` reproducibly, its requirements vendored for ``architecture`` and CPython
    ``python``.

    ``requirements_cache`` keeps vendored requirements between runs (by the hash of requirements.txt and the
    architecture's pip options); without it they are vendored into a temporary directory each time. ``installer``
    replaces :func:`pip_installer`'s (tests use it to avoid the network).
    """
    options = pip_platform_options(architecture, python)
    folder = Path(folder)
    _check_function_folder(folder)
    name = folder.name
    entries = dict(_function_files(folder))
    requirements = folder / REQUIREMENTS
    compiled_for, keep, inputs = "", False, ""
    if requirements.is_file() and _requirement_lines(requirements):
        cache = requirements_cache if requirements_cache is not None else default_vendor_cache()
        # kept only as a deploy packages: its vendoring left to deploykit's cache and pip (a caller naming either
        # wants what they do, each time)
        keep = requirements_cache is None and installer is None
        inputs = _inputs_digest(name, entries, requirements.read_bytes(), cache, options) if keep else ""
        with _MADE_LOCK:
            made = _MADE.get(inputs) if keep else None
        if made is not None:
            return made
        vendored = _vendored_zip(requirements, cache, installer or pip_installer(architecture, python), options)
        with zipfile.ZipFile(io.BytesIO(vendored)) as zf:
            names = zf.namelist()
            # where its central directory begins: append_zip writes the function's files from there on
            prefix_length = int(zf.start_dir)
        clashes = sorted(set(entries) & set(names))
        if any(_COMPILED_RE.search(entry) for entry in names):
            compiled_for = architecture
        if clashes:
            raise UsageError(
                f"{folder / clashes[0]} clashes with a file of the same path vendored from {requirements}",
                next_step=f"rename {clashes[0]} in {folder}, or drop the requirement that provides it",
            )
        zip_bytes = append_zip(vendored, entries)
        if (
            memoryview(zip_bytes)[:prefix_length] != memoryview(vendored)[:prefix_length]
        ):  # not as append_zip writes: no prefix to share
            prefix_length = 0
    else:
        zip_bytes = build_zip(entries)
        prefix_length = 0
    digest = hashlib.sha256(zip_bytes).hexdigest()
    key = zip_key(name, digest)
    package = Package(
        name=name,
        zip_bytes=zip_bytes,
        sha256=digest,
        key=key,
        compiled_for=compiled_for,
        architecture=architecture,
        python=python,
        prefix_length=prefix_length,
    )
    if prefix_length and keep:
        with _MADE_LOCK:
            _MADE[inputs] = package
            while len(_MADE) > MADE_KEPT:
                del _MADE[next(iter(_MADE))]
    return package


MADE_KEPT = 4
"""How many packages with requirements a process keeps, by their inputs: a deploy packages a function when it plans
and again in its upload step (to check it is still what was planned); beside 16 MB of numpy that is 0.15 s each
time (the vendored zip read, the function's files appended, 16 MB hashed twice), and the same inputs give the same
bytes. A function without requirements is packaged again each time (a few milliseconds); so is one packaged with a
cache or an installer of the caller's (tests)."""
_MADE: dict[str, Package] = {}
_MADE_LOCK = threading.Lock()


def _inputs_digest(
    name: str, entries: dict[str, tuple[bytes, bool]], requirements: bytes, cache: Path | None, options: Sequence[str]
) -> str:
    """What a package with requirements is made from: the function's name and files, its requirements.txt, the pip
    options (the architecture) and the cache its vendored packages come from."""
    digest = hashlib.sha256(f"{name}\0{cache}\0{chr(0).join(options)}\0".encode() + requirements)
    for path in sorted(entries):
        data, executable = entries[path]
        digest.update(f"\0{path}\0{int(executable)}\0{len(data)}\0".encode())
        digest.update(data)
    return digest.hexdigest()


def package_all(
    root: Path,
    *,
    architecture: str = DEFAULT_ARCHITECTURE,
    python: str = DEFAULT_PYTHON,
    requirements_cache: Path | None = None,
    installer: Installer | None = None,
) -> dict[str, Package]:
    """Package every function folder (a folder with handler.py) directly under ``root`` (the repo's lambda/), for
    ``architecture`` and CPython ``python``."""
    root = Path(root)
    if not root.is_dir():
        raise UsageError(
            f"Lambda folder {root} does not exist",
            next_step="run from the repository root, where lambda/ holds one folder per function",
        )
    return {
        name: package_function(
            root / name,
            architecture=architecture,
            python=python,
            requirements_cache=requirements_cache,
            installer=installer,
        )
        for name in function_folders(root)
    }


def function_folders(root: Path) -> list[str]:
    """The function folders directly under ``root`` (the repo's lambda/): those holding a handler.py, by name."""
    if not root.is_dir():
        return []
    return sorted(child.name for child in root.iterdir() if child.is_dir() and (child / HANDLER_MODULE).is_file())


def build_zip(entries: dict[str, tuple[bytes, bool]]) -> bytes:
    """A deterministic zip of ``{posix path: (content, executable)}``: sorted, fixed dates and modes."""
    return append_zip(b"", entries)


def append_zip(base: bytes, entries: dict[str, tuple[bytes, bool]]) -> bytes:
    """``base`` (a zip, or nothing) with ``entries`` added after its own, sorted, with fixed dates and modes: the
    same bytes for the same ``base`` and entries. ``base``'s members are copied as they are, not compressed again."""
    buf = io.BytesIO(base)
    options: dict[str, Any] = {"compression": zipfile.ZIP_DEFLATED, "compresslevel": COMPRESSLEVEL}
    with zipfile.ZipFile(buf, "a", **options) if base else zipfile.ZipFile(buf, "w", **options) as zf:
        for path in sorted(entries):
            data, executable = entries[path]
            try:
                path.encode("utf-8")
            except UnicodeEncodeError:  # a name not in UTF-8 (a Latin-1 file system's): no zip entry can hold it
                raise UsageError(
                    f"{path!r} is not a UTF-8 file name: a zip cannot hold it, nor Lambda read it",
                    next_step="rename it (git mv) to a UTF-8 name",
                ) from None
            info = zipfile.ZipInfo(path, date_time=FIXED_DATE_TIME)
            info.create_system = 3  # Unix, so external_attr carries the permissions
            info.external_attr = (stat.S_IFREG | (EXECUTABLE_MODE if executable else FILE_MODE)) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, data, compress_type=zipfile.ZIP_DEFLATED, compresslevel=COMPRESSLEVEL)
    return buf.getvalue()


def default_vendor_cache() -> Path | None:
    """Where vendored requirements are kept between runs: ``lambda-vendor/`` in deploykit's cache (None: none)."""
    root = cache_root()
    return root / "lambda-vendor" if root is not None else None


# what pip says of a requirement no index has (as a wheel for the platform asked)
_NO_DISTRIBUTION = re.compile(r"No matching distribution found for (\S+)")


def pip_installer(architecture: str = DEFAULT_ARCHITECTURE, python: str = DEFAULT_PYTHON) -> Installer:
    """An installer vendoring a requirements file for the Lambda runtime of ``python`` on ``architecture`` with pip."""
    return partial(pip_install, architecture=architecture, python=python)


def pip_install(
    requirements: Path, target: Path, *, architecture: str = DEFAULT_ARCHITECTURE, python: str = DEFAULT_PYTHON
) -> None:
    """Vendor ``requirements`` into ``target`` for the Lambda runtime of ``python`` on ``architecture`` with pip, or
    StepFailed with pip's output."""
    options = pip_platform_options(architecture, python)
    command = [
        sys.executable,
        "-m",
        "pip",
        "install",
        "--target",
        str(target),
        "--no-compile",
        "--no-deps",
        *options,
        "--disable-pip-version-check",
        "--no-input",
        "--quiet",
        "--requirement",
        str(requirements),
    ]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-15:])
        platform = f"{ARCHITECTURES[architecture]} / CPython {python}"
        missing = _NO_DISTRIBUTION.findall(done.stderr or done.stdout or "")
        # ``target`` is a temporary folder, gone once this fails: the command to run by hand vendors into one the
        # user can look into, the rest as run
        by_hand = command.copy()
        by_hand[by_hand.index("--target") + 1] = str(by_hand_target(requirements))
        if missing:  # the file asks for what the index has not: bad input, nothing was changed
            raise UsageError(
                f"{requirements} asks for what the package index has no wheel of for {platform}: "
                f"{', '.join(missing)}\n{tail}",
                next_step=f"pin a version the index has as a wheel for {platform} (pip index versions NAME lists "
                f"them), commit it and rerun; or run pip by hand: {shlex.join(by_hand)}",
            )
        raise StepFailed(
            f"pip could not vendor {requirements} (exit {done.returncode}):\n{tail}",
            next_step=f"check the pins exist as wheels for {platform}, or run it by hand: {shlex.join(by_hand)}",
        )


def by_hand_target(requirements: Path) -> Path:
    """Where the pip command a failed vendoring prints installs: ``<temp>/<function>-deps``, a folder that stays
    (deploykit's own, temporary, is gone by the time the command is read)."""
    return Path(tempfile.gettempdir()) / f"{Path(requirements).parent.name}-deps"


# -- the function's own files -----------------------------------------------------------------------


def check_function(folder: Path) -> None:
    """What :func:`package_function` would refuse in ``folder`` before it packages anything: a folder that is no
    function, a name no function can have, a link to a directory, a requirement not pinned or an option refused. In
    milliseconds (pip is not run): checked before a deploy reads the environment."""
    _check_function_folder(folder)
    for _path, _source in _function_sources(folder):
        pass  # refuses a link to a directory, or to a file outside the folder
    requirements = folder / REQUIREMENTS
    if requirements.is_file():
        _requirement_lines(requirements)


def _check_function_folder(folder: Path) -> None:
    if not folder.is_dir():
        known = _function_names(folder.parent)
        hint = f"the functions in {folder.parent} are: {', '.join(known)}" if known else "check the path"
        raise UsageError(f"Lambda function folder {folder} does not exist", next_step=hint)
    if not _NAME_RE.match(folder.name):
        raise UsageError(
            f"Lambda function folder name {folder.name!r} is not usable as a function name",
            next_step="rename the folder with letters, digits, '-' and '_' only (at most 64)",
        )
    if not (folder / HANDLER_MODULE).is_file():
        raise UsageError(
            f"{folder} has no {HANDLER_MODULE}: it is not a Lambda function folder",
            next_step=f"add {folder / HANDLER_MODULE} defining handler(event, context), or point at another folder",
        )


def _function_names(root: Path) -> list[str]:
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if p.is_dir() and (p / HANDLER_MODULE).is_file())


def _function_files(folder: Path) -> Iterator[tuple[str, tuple[bytes, bool]]]:
    """The files of the function's zip: in a git work tree, those git tracks or would (a file it ignores, a .env or
    a build's output, is left out: it would ship a secret, differ from a CI build of the same commit, and change
    the code without deploy.auto seeing a change), a submodule's checked-out files included; the tests, conftest.py
    and requirements.txt left out."""
    modes = git.staged_modes(folder)
    for path, source in _function_sources(folder, modes):
        yield path, _read(source, modes.get(path))


def _function_sources(folder: Path, modes: Mapping[str, str] | None = None) -> Iterator[tuple[str, Path]]:
    """(path in the zip, file) of :func:`_function_files`; UsageError for a link to a file outside the folder (its
    changes would not be the function's: deploy.auto counts what changes under lambda/<fn>/), or to one git does not
    see (a .env it ignores: shipped unseen, and missing from a CI checkout). A link git records (``modes``: its index,
    :func:`deploykit.git.staged_modes`) that the checkout made a file holding the target's path
    (``core.symlinks=false``, Git for Windows' default) is read as the link: its target."""
    seen = git.seen_paths(folder)
    inside = folder.resolve()
    for path, source in _walk(folder, seen):
        if path.split("/", 1)[0] in _EXCLUDED_TOP_LEVEL:
            continue
        try:
            target = source.resolve() if source.is_symlink() else None
            if target is None and (modes or {}).get(path) == git.SYMLINK:
                target = (source.parent / source.read_text(encoding="utf-8", errors="surrogateescape")).resolve()
        except RuntimeError:  # resolve() of a link that leads back to itself (Python 3.11, 3.12)
            target = source
        if target is not None and target.is_symlink():  # a loop: Python 3.13's resolve() gives the link, no error
            raise UsageError(
                f"{source} is a link that leads back to itself (a loop): there is no file to package",
                next_step="remove the link (git rm it) or point it at a file of the function's folder",
            )
        if target is not None:
            if not target.is_relative_to(inside):
                raise UsageError(
                    f"{source} is a link to {target}, outside the function's folder: a change there would not deploy "
                    "the function",
                    next_step="copy the file into the folder, or vendor it through requirements.txt",
                )
            if (seen is not None and not seen(target.relative_to(inside).as_posix())) or not target.is_file():
                raise UsageError(
                    f"{source} is a link to {target}, which git does not track (or is not there): it would ship "
                    "unseen by a commit, and be missing from a CI checkout",
                    next_step="commit the file it links to, or take the link out",
                )
            source = target
        yield path, source


def _walk(root: Path, seen: Callable[[str], bool] | None = None) -> Iterator[tuple[str, Path]]:
    """(posix path relative to root, file) for each file, caches pruned, and when ``seen`` (whether git sees a path:
    :func:`deploykit.git.seen_paths`) is given the files and folders it does not see (a virtual environment git
    ignores, whose lib64 links to its lib, is no folder of the function's); order does not matter."""
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        for d in list(dirnames):
            path = f"{(here / d).relative_to(root)}"
            if d in _EXCLUDED_DIRS or d == _GIT or (seen is not None and not seen(path)):
                dirnames.remove(d)
            elif (here / d).is_symlink():  # git lists it as a file: the link itself
                raise UsageError(
                    f"{here / d} is a symbolic link to a directory, which packaging does not follow",
                    next_step="replace the link with the directory's content, or vendor it through requirements.txt",
                )
        for f in filenames:
            source = here / f
            path = source.relative_to(root).as_posix()
            if f.endswith(_EXCLUDED_SUFFIXES) or f == _GIT or (seen is not None and not seen(path)):
                continue
            yield path, source


def _read(source: Path, staged: str | None = None) -> tuple[bytes, bool]:
    """The file's bytes and whether it is executable: as git's index records it (``staged``: 100755), whatever the
    checkout made of it (``core.fileMode=false``: a file made executable on disk, git none the wiser); a file git
    does not track yet, by its owner's bit."""
    try:
        data = source.read_bytes()
        mode = source.stat().st_mode
    except OSError as exc:
        raise UsageError(f"cannot read {source}: {exc.strerror or exc}", next_step=f"fix or remove {source}") from None
    if staged in (git.EXECUTABLE, git.REGULAR):
        return data, staged == git.EXECUTABLE
    return data, bool(mode & stat.S_IXUSR)


# -- vendored requirements --------------------------------------------------------------------------


# the byte order marks pip reads a requirements file by (pip._internal.utils.encoding.auto_decode), longest first
_BOMS = (
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF32_LE, "utf-32-le"),
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
)


def requirement_text(requirements: Path) -> str:
    """requirements.txt as pip reads it: by its byte order mark (PowerShell's `pip freeze > requirements.txt` writes
    UTF-16 with one, its `Out-File -Encoding utf8` UTF-8 with one), else UTF-8; UsageError for other bytes."""
    data = requirements.read_bytes()
    marked = next(((bom, encoding) for bom, encoding in _BOMS if data.startswith(bom)), None)
    used = marked[1] if marked else "utf-8"
    try:
        return data[len(marked[0]) if marked else 0 :].decode(used)
    except UnicodeDecodeError as exc:
        byte = f"byte {exc.object[exc.start]:#04x} at {exc.start}"
        unmarked = "" if marked else ", and no byte order mark says another encoding"
        raise UsageError(
            f"{requirements} is not {used.upper()} text ({byte}){unmarked}",
            next_step=f"save {requirements.name} as UTF-8 (your editor's encoding setting), then commit it",
        ) from None


def _requirement_lines(requirements: Path) -> list[str]:
    """The logical lines of requirements.txt that ask for something, after checking each is pinned."""
    text = requirement_text(requirements).replace("\\\n", " ")
    wanted: list[str] = []
    for raw in text.splitlines():
        line = re.sub(r"(^|\s)#.*$", "", raw).strip()
        if not line:
            continue
        if line.startswith("-"):
            option = line.split("=", 1)[0].split()[0]
            attached = not option.startswith("--") and option[:2] in _REFUSED_OPTIONS  # -rbase.txt, as pip reads it
            if option in _REFUSED_OPTIONS or attached:
                option = option[:2] if attached else option
                raise UsageError(
                    f"{requirements}: {option} is not supported in a Lambda requirements file",
                    next_step="list the pinned requirements in this file itself (pip-compile writes such a file)",
                )
            continue  # index options (--index-url, --find-links, --no-index...) are part of the file's hash
        requirement = re.split(r"\s--hash[=\s]", line, maxsplit=1)[0].strip()
        if not _PINNED_RE.match(requirement):
            raise UsageError(
                f"{requirements}: {requirement!r} is not pinned, so the package would change with the day",
                next_step="pin every requirement with == (pip-compile or 'pip freeze' write such a file), "
                "including their own dependencies: vendoring runs pip with --no-deps",
            )
        wanted.append(requirement)
    return wanted


def _vendored_zip(requirements: Path, cache: Path | None, installer: Installer, options: Sequence[str]) -> bytes:
    """The zip of what ``requirements`` vendors (:func:`build_zip`): kept as ``<cache>/<key>.zip`` beside the tree,
    made from it once; without a cache, vendored into a temporary folder and zipped each time."""
    content = requirements.read_bytes()
    key = hashlib.sha256("\0".join((_VENDOR_FORMAT, *options)).encode() + b"\0" + content).hexdigest()
    if cache is not None and not _usable(Path(cache)):
        cache = None  # a read-only home (a CI container): vendored each time, as without a cache
    if cache is None:
        return build_zip(dict(_vendored_files(requirements, None, key, installer)))
    kept = Path(cache) / f"{key}.zip"
    with contextlib.suppress(OSError, zipfile.BadZipFile):
        body = kept.read_bytes()
        with zipfile.ZipFile(io.BytesIO(body)) as zf:
            zf.namelist()  # a zip (a kept file that is not one is made again)
        os.utime(kept)  # in use: kept from pruning
        return body
    body = build_zip(dict(_vendored_files(requirements, Path(cache), key, installer)))
    with contextlib.suppress(OSError):  # written whole or not at all; a cache that cannot be written is passed over
        fd, temporary = tempfile.mkstemp(dir=cache, prefix=f".{key[:12]}-", suffix=".zip")
        with os.fdopen(fd, "wb") as out:
            out.write(body)
        os.replace(temporary, kept)
    prune_vendored(Path(cache))
    return body


def _usable(cache: Path) -> bool:
    """Whether ``cache`` is (or can be made) a folder this process can write in."""
    try:
        cache.mkdir(parents=True, exist_ok=True)
    except OSError:
        return False
    return os.access(cache, os.W_OK | os.X_OK)


def prune_vendored(cache: Path, now: float | None = None) -> list[str]:
    """Drop the vendored trees and zips of ``cache`` unused for :data:`VENDOR_KEEP_DAYS` days (a zip's time is
    when it was last used; a tree goes with its zip), at most once a day; the keys dropped. Never fails."""
    now = time.time() if now is None else now
    if not prune_due(cache, now):
        return []
    dropped = []
    with contextlib.suppress(OSError):
        for kept in sorted(cache.glob("*.zip")):
            with contextlib.suppress(OSError):
                if now - kept.stat().st_mtime > VENDOR_KEEP_DAYS * DAY:
                    kept.unlink()
                    shutil.rmtree(cache / kept.stem, ignore_errors=True)
                    dropped.append(kept.stem)
    return dropped


def _vendored_files(
    requirements: Path, cache: Path | None, key: str, installer: Installer
) -> Iterator[tuple[str, tuple[bytes, bool]]]:
    if cache is None:
        with tempfile.TemporaryDirectory(prefix="deploykit-vendor-") as tmp:
            tree = Path(tmp) / "site"
            _vendor(requirements, tree, installer)
            yield from ((path, _read(source)) for path, source in _walk(tree))
        return
    tree = Path(cache) / key
    if not tree.is_dir():
        Path(cache).mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{key[:12]}-", dir=cache))
        try:
            _vendor(requirements, staging / "site", installer)
            try:
                (staging / "site").rename(tree)  # atomic: a tree in the cache is always complete
            except OSError:
                if not tree.is_dir():  # not another run finishing first: a real failure
                    raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    yield from ((path, _read(source)) for path, source in _walk(tree))


def _vendor(requirements: Path, target: Path, installer: Installer) -> None:
    target.mkdir(parents=True)
    installer(requirements, target)
    _normalise_vendored(target)


def _normalise_vendored(target: Path) -> None:
    """Drop what pip writes that depends on this machine: console scripts and their RECORD lines, bytecode."""
    shutil.rmtree(target / "bin", ignore_errors=True)
    for record in target.glob("*.dist-info/RECORD"):
        lines = record.read_text(encoding="utf-8").splitlines(keepends=True)
        kept = [line for line in lines if not line.startswith(("../", "bin/"))]
        if kept != lines:
            record.write_text("".join(kept), encoding="utf-8")
    for cache_dir in sorted(target.rglob("__pycache__"), reverse=True):
        shutil.rmtree(cache_dir, ignore_errors=True)
