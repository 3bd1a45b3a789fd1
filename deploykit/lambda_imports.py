"""Whether a function's zip would import on Lambda, read from the zip before anything is uploaded.

A function that does not import fails every call (``Runtime.ImportModuleError``, ``Runtime.HandlerNotFound``). The
fast path would find out only after it published the version and moved ``live`` onto it: smoke fails, the automatic
rollback moves the alias back, and callers met the error meanwhile. On the sandbox it may never show: the sandbox runs
a function with its own interpreter's packages, so a module the zip lacks imports there and fails on AWS alone.

What is read, with Python's ``ast`` (nothing of the function is run: its import-time code might call AWS):

- **the handler:** the module of the function's Handler (``handler.handler``, as Lambda has it) is in the zip and binds
  the function at its top level, not as ``async def`` (Lambda's Python runtime calls it and gets a coroutine, not an
  answer). A function whose Handler is not known (not deployed yet: its stack gives it) is read from ``handler.py``,
  and whether it defines the function is not judged;
- **what it imports:** each module the handler imports at its top level, and each of the function's own modules those
  reach, in turn: the module must be in the zip (the function's own files, its vendored packages), in the standard
  library of the runtime's Python (:func:`stdlib`: ``imp`` is not there on 3.12), in what Lambda's Python runtime adds
  (:data:`RUNTIME_MODULES`: the AWS SDK), or in deploy.toml's ``[build] lambda_runtime_modules`` (a layer's). An
  import inside a function, under ``if`` (``TYPE_CHECKING``, a version test) or in a ``try`` that catches
  ``ImportError`` is not required: the code has chosen to do without it. A relative import in a top-level module
  (``from . import x`` in ``handler.py``) fails on Lambda, which imports it outside any package;
- **what the vendored packages need:** requirements are vendored with ``pip --no-deps``, so requirements.txt must list
  every package they need. Each vendored distribution's ``Requires-Dist`` (its markers for Lambda: Linux, the
  runtime's CPython, the function's architecture; no extras) must be vendored too, or be one the runtime has.

Syntax is :mod:`deploykit.syntax`'s; a file that does not parse is passed over here. A module the zip holds is not
read for the names it defines (``from mod import name``), and vendored code is not read at all: its imports are its
distribution's ``Requires-Dist``.
"""

from __future__ import annotations

import ast
import io
import sys
import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from email.parser import HeaderParser

from packaging.markers import InvalidMarker
from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from deploykit.packaging import DEFAULT_ARCHITECTURE, DEFAULT_PYTHON
from deploykit.switches import switch, switched_on

HANDLER_MODULE = "handler"  # handler.py, which every function folder has (deploykit.packaging)
SKIP_ENV = switch("DEPLOYKIT_SKIP_IMPORT_CHECK")
CONFIG_KEY = "[build] lambda_runtime_modules"

# What Lambda's Python runtimes import beside the standard library: the AWS SDK for Python and what it needs, as the
# runtime ships them in /var/runtime (boto3, botocore, s3transfer, jmespath, python-dateutil, six, urllib3), and the
# runtime interface client
RUNTIME_MODULES = frozenset(
    {"boto3", "botocore", "s3transfer", "jmespath", "dateutil", "six", "urllib3", "awslambdaric", "bootstrap"}
)
RUNTIME_DISTRIBUTIONS = frozenset(
    canonicalize_name(n) for n in ("boto3", "botocore", "s3transfer", "jmespath", "python-dateutil", "six", "urllib3")
)
# The standard library's modules Python took out, by the version that took them out, and those it added: the
# functions' runtime has what its Python has, whichever Python runs deploykit
DROPPED_FROM_STDLIB = {
    "3.12": ("asynchat", "asyncore", "distutils", "imp", "smtpd"),
    "3.13": (
        *("aifc", "audioop", "cgi", "cgitb", "chunk", "crypt", "imghdr", "lib2to3", "mailcap", "msilib", "nis"),
        *("nntplib", "ossaudiodev", "pipes", "sndhdr", "spwd", "sunau", "telnetlib", "uu", "xdrlib"),
    ),
}
_ADDED_TO_STDLIB = {"3.11": ("tomllib",), "3.14": ("annotationlib", "compression")}
# in sys.stdlib_module_names, and only on Windows: no Lambda runtime has them
_WINDOWS_ONLY = frozenset({"winreg", "winsound", "msvcrt", "_winapi", "_overlapped", "_msi", "msilib", "nt"})
# the import errors a ``try`` may catch to do without a module
_CAUGHT = frozenset({"ImportError", "ModuleNotFoundError", "Exception", "BaseException"})
_MACHINES = {"x86_64": "x86_64", "arm64": "aarch64"}
_SOURCE_SUFFIXES = (".py",)
_MODULE_SUFFIXES = (".py", ".pyc", ".so", ".pyd")


def _version(python: str) -> tuple[int, ...]:
    return tuple(int(part) for part in python.split(".")[:2])


def stdlib(python: str) -> frozenset[str]:
    """The top-level modules of CPython ``python``'s standard library (``3.12``)."""
    names = set(sys.stdlib_module_names)
    for version, dropped in DROPPED_FROM_STDLIB.items():
        names = names - set(dropped) if _version(python) >= _version(version) else names | set(dropped)
    for version, added in _ADDED_TO_STDLIB.items():
        names = names | set(added) if _version(python) >= _version(version) else names - set(added)
    return frozenset(names - _WINDOWS_ONLY)


def _dropped_by(module: str, python: str) -> str | None:
    """The Python that took ``module`` out of the standard library, when ``python`` is that one or later."""
    return next(
        (v for v, names in DROPPED_FROM_STDLIB.items() if module in names and _version(python) >= _version(v)), None
    )


def skipped() -> bool:
    """Whether ``DEPLOYKIT_SKIP_IMPORT_CHECK=1`` turns the check off."""
    return switched_on(SKIP_ENV)


@dataclass(frozen=True)
class Problem:
    """One reason the zip would not import: where (a path in the zip, its line), what."""

    path: str
    line: int | None
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.message}" if self.line else f"{self.path}: {self.message}"


@dataclass
class _Zip:
    """The zip's entries, told apart: the function's own files and what pip vendored (its ``.dist-info`` and the
    files their ``RECORD`` lists)."""

    names: frozenset[str]
    sources: dict[str, bytes]  # the function's own .py files
    metadata: dict[str, bytes] = field(default_factory=dict)  # each vendored .dist-info's METADATA

    @classmethod
    def read(cls, zip_bytes: bytes) -> _Zip:
        with zipfile.ZipFile(io.BytesIO(zip_bytes)) as zf:
            names = zf.namelist()
            vendored: set[str] = set()
            metadata: dict[str, bytes] = {}
            for name in names:
                info, _, leaf = name.rpartition("/")
                if not info.endswith(".dist-info") or "/" in info:
                    continue
                vendored.add(name)
                if leaf == "RECORD":
                    for line in zf.read(name).decode("utf-8", "replace").splitlines():
                        vendored.add(line.split(",", 1)[0])
                elif leaf == "METADATA":
                    metadata[info] = zf.read(name)
            sources = {n: zf.read(n) for n in names if n not in vendored and n.endswith(_SOURCE_SUFFIXES)}
        return cls(frozenset(names), sources, metadata)

    @property
    def top_level(self) -> frozenset[str]:
        """The names importable from the zip's root: its folders (packages, namespace packages or not) and modules."""
        found = set()
        for name in self.names:
            first, slash, _ = name.partition("/")
            if slash:
                if not first.endswith((".dist-info", ".data")) and first != "__pycache__":
                    found.add(first)
            elif first.endswith(_MODULE_SUFFIXES):
                found.add(first.split(".", 1)[0])
        return frozenset(found)

    def module_file(self, dotted: str) -> str | None:
        """The function's own file of module ``dotted`` (``a/b.py``, ``a/b/__init__.py``), or None."""
        base = dotted.replace(".", "/")
        for candidate in (f"{base}.py", f"{base}/__init__.py"):
            if candidate in self.sources:
                return candidate
        return None

    def has_module(self, dotted: str) -> bool:
        """Whether the zip holds module or package ``dotted``: a file of it, or a folder (a namespace package)."""
        base = dotted.replace(".", "/")
        return any(
            n == f"{base}.py"
            or n.startswith(f"{base}/")
            # a compiled one: name.pyc, name.cpython-312-x86_64-linux-gnu.so (not name.json: no module)
            or (n.startswith(f"{base}.") and "/" not in n[len(base) :] and n.endswith(_MODULE_SUFFIXES))
            for n in self.names
        )


def problems(
    zip_bytes: bytes,
    *,
    provided: Iterable[str] = (),
    architecture: str = DEFAULT_ARCHITECTURE,
    python: str = DEFAULT_PYTHON,
    handler: str | None = None,
) -> list[Problem]:
    """What would keep the function in ``zip_bytes`` from importing on Lambda (see the module's docstring), whatever
    ``$DEPLOYKIT_SKIP_IMPORT_CHECK`` says (:func:`skipped`: a deploy asks it first). ``provided``: the modules (and
    distributions) the runtime has beside :data:`RUNTIME_MODULES` (deploy.toml's ``[build] lambda_runtime_modules``: a
    layer's); ``architecture`` and ``python``: what the functions run on, for the vendored packages' markers.
    ``handler``: the function's Handler as Lambda has it (``handler.handler``), whose module and function are judged;
    None when it is not known (a function not deployed yet: its stack says it), when the imports of ``handler.py`` are,
    and not whether it defines the function."""
    found = _Zip.read(zip_bytes)
    extra = frozenset(provided)
    importable = found.top_level | stdlib(python) | RUNTIME_MODULES | extra
    module, _, function = (handler or f"{HANDLER_MODULE}.").rpartition(".")
    module = module.replace("/", ".")
    start = found.module_file(module)
    if start is None:
        return [
            Problem(
                f"{module.replace('.', '/')}.py",
                None,
                f"is not in the zip, and Lambda's Handler {handler} names it (Runtime.ImportModuleError)",
            )
        ]
    # the handler's module first, then the others by path, each by line
    result = sorted(
        _handler_problems(found, importable, python, module, start),
        key=lambda p: (p.path != start, p.path, p.line or 0),
    )
    if function:
        tree = _parse(found, start)
        result[:0] = _handler_defined(start, tree, f"{module}.{function}", function) if tree else []
    result += _closure_problems(found, extra, architecture, python)
    return result


def _handler_problems(
    found: _Zip, importable: frozenset[str], python: str, module: str, start: str
) -> Iterator[Problem]:
    """Each import of the handler's ``module`` (file ``start``) and of the function's own modules it reaches that
    nothing has."""
    seen: set[str] = set()
    todo = [(module, start)]
    while todo:
        module, path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        tree = _parse(found, path)
        if tree is None:
            continue
        package = module if path.endswith("/__init__.py") else module.rpartition(".")[0]
        for line, target, names, relative in _required_imports(tree.body, package):
            if relative is not None:
                yield Problem(path, line, relative)
                continue
            top = target.partition(".")[0]
            if top not in importable:
                dropped = _dropped_by(top, python)
                said = f"which Python {dropped} took out of the standard library (the runtime's is {python})"
                yield Problem(path, line, f"imports {target}, {said if dropped else 'which ' + _NOT_THERE}")
                continue
            if not _is_own(found, top):
                continue  # a vendored package's own imports are its distribution's Requires-Dist
            # the function's own package: each module the import runs (its packages' __init__ first), read in turn
            parts = target.split(".")
            for depth in range(1, len(parts) + 1):
                dotted = ".".join(parts[:depth])
                own = found.module_file(dotted)
                if own is not None:
                    todo.append((dotted, own))
                elif not found.has_module(dotted):
                    yield Problem(path, line, f"imports {target}, but the zip has no module {dotted}")
                    break
            else:
                # from package import submodule: the submodule runs too (a name that is none is not judged)
                todo += [(f"{target}.{n}", f) for n in names if (f := found.module_file(f"{target}.{n}"))]


_NOT_THERE = (
    "neither the zip (the function's files, its vendored requirements) nor Lambda's Python runtime (the standard "
    "library, the AWS SDK) has"
)


def _is_own(found: _Zip, top: str) -> bool:
    """Whether top-level ``top`` is the function's own (a file of it outside the vendored packages)."""
    return any(n == f"{top}.py" or n.startswith(f"{top}/") for n in found.sources)


def _parse(found: _Zip, path: str) -> ast.Module | None:
    try:
        return ast.parse(found.sources[path], filename=path)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return None  # deploykit.syntax says what does not compile


def _handler_defined(path: str, tree: ast.Module, handler: str, function: str) -> list[Problem]:
    """Whether the handler's module (``path``) binds ``function`` at its top level: where it does not (nor imports
    ``*``), or binds it with ``async def``, a problem."""
    bound: ast.stmt | None = None
    for node in _top_level(tree.body):
        if isinstance(node, ast.ImportFrom) and any(a.name == "*" for a in node.names):
            return []  # it may come from there
        if function in _bound_names(node):
            bound = node
    if bound is None:
        return [
            Problem(
                path, None, f"defines no {function}: Lambda calls {handler}(event, context) (Runtime.HandlerNotFound)"
            )
        ]
    if isinstance(bound, ast.AsyncFunctionDef):
        return [
            Problem(
                path,
                bound.lineno,
                f"defines {function} with async def: Lambda's Python runtime calls it and gets a coroutine, not an "
                "answer",
            )
        ]
    return []


def _top_level(body: list[ast.stmt]) -> Iterator[ast.stmt]:
    """Every statement run at the module's top level or maybe run there (in an ``if``, ``try``, ``with``, loop)."""
    for node in body:
        yield node
        if isinstance(node, _SCOPES):
            continue
        for name in ("body", "orelse", "finalbody"):
            yield from _top_level(getattr(node, name, []))
        for handler in getattr(node, "handlers", []):
            yield from _top_level(handler.body)


_SCOPES = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)


def _bound_names(node: ast.stmt) -> set[str]:
    """The names a top-level statement binds."""
    if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
        return {node.name}
    if isinstance(node, ast.Import | ast.ImportFrom):
        return {(a.asname or a.name).partition(".")[0] for a in node.names}
    targets: list[ast.expr] = []
    if isinstance(node, ast.Assign):
        targets = list(node.targets)
    elif isinstance(node, ast.AnnAssign | ast.AugAssign | ast.For | ast.AsyncFor):
        targets = [node.target]
    elif isinstance(node, ast.With | ast.AsyncWith):
        targets = [i.optional_vars for i in node.items if i.optional_vars is not None]
    return {n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)}


def _required_imports(body: list[ast.stmt], package: str) -> Iterator[tuple[int, str, tuple[str, ...], str | None]]:
    """(line, absolute module, the names taken from it, None) for each import run whenever the module is (not under
    ``if``, nor in a ``try`` catching import errors); (line, "", (), why) for a relative import that cannot be
    resolved. ``package``: the module's package ("" for a top-level module)."""
    for node in body:
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name, (), None
        elif isinstance(node, ast.ImportFrom):
            names = tuple(a.name for a in node.names if a.name != "*")
            if not node.level:
                if node.module != "__future__":
                    yield node.lineno, node.module or "", names, None
                continue
            parts = package.split(".") if package else []
            if node.level > len(parts):
                where = "a top-level module, which Lambda imports outside any package" if not parts else package
                yield node.lineno, "", (), f"imports relatively ({'.' * node.level}{node.module or ''}) from {where}"
                continue
            base = ".".join(parts[: len(parts) - node.level + 1])
            yield node.lineno, f"{base}.{node.module}" if node.module else base, names, None
        elif _always_runs_body(node):
            yield from _required_imports(node.body, package)  # type: ignore[attr-defined]


def _always_runs_body(node: ast.stmt) -> bool:
    """Whether a statement's body runs, whole or until an import in it fails, whenever the statement does: a ``with``,
    a ``try`` that does not catch import errors."""
    if isinstance(node, ast.With | ast.AsyncWith):
        return True
    return isinstance(node, ast.Try | ast.TryStar) and not any(_catches_import(h) for h in node.handlers)


def _catches_import(handler: ast.ExceptHandler) -> bool:
    if handler.type is None:
        return True
    types = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
    return any(
        (t.id if isinstance(t, ast.Name) else t.attr if isinstance(t, ast.Attribute) else "") in _CAUGHT for t in types
    )


def _closure_problems(found: _Zip, provided: frozenset[str], architecture: str, python: str) -> Iterator[Problem]:
    """Each vendored distribution's requirement (for Lambda's platform, no extras) that is neither vendored nor the
    runtime's."""
    environment = {
        "python_version": python,
        "python_full_version": f"{python}.0",
        "implementation_name": "cpython",
        "platform_python_implementation": "CPython",
        "implementation_version": f"{python}.0",
        "sys_platform": "linux",
        "platform_system": "Linux",
        "os_name": "posix",
        "platform_machine": _MACHINES.get(architecture, architecture),
        "extra": "",
    }
    headers = {info: HeaderParser().parsestr(raw.decode("utf-8", "replace")) for info, raw in found.metadata.items()}
    vendored = {canonicalize_name(h.get("Name") or info.split("-", 1)[0]) for info, h in headers.items()}
    there = vendored | RUNTIME_DISTRIBUTIONS | {canonicalize_name(p) for p in provided}
    for info, header in sorted(headers.items()):
        missing: dict[str, None] = {}
        for line in header.get_all("Requires-Dist") or []:
            try:
                requirement = Requirement(line)
                if requirement.marker is not None and not requirement.marker.evaluate(environment):
                    continue
            except (InvalidRequirement, InvalidMarker, ValueError):
                continue  # not judged here
            if canonicalize_name(requirement.name) not in there:
                missing[requirement.name] = None
        if missing:
            name, version = header.get("Name") or info, header.get("Version") or ""
            yield Problem(
                f"{info}/METADATA",
                None,
                f"{name} {version} needs {', '.join(missing)}, which {'is' if len(missing) == 1 else 'are'} neither "
                "vendored (requirements.txt is installed with pip --no-deps: it lists every package needed) nor in "
                "Lambda's Python runtime",
            )


def said(function: str, found: list[Problem]) -> str:
    """``lambda/<function> would not import on Lambda: <each problem>``."""
    return f"lambda/{function} would not import on Lambda: " + "; ".join(str(p) for p in found)


FIX = (
    "add what is missing to the function's requirements.txt, pinned, with everything it needs (pip-compile writes "
    f"them all); a module a layer gives the functions goes in deploy.toml's {CONFIG_KEY}"
)
NEXT_STEP = f"{FIX}; {SKIP_ENV}=1 skips the check. Nothing was uploaded or deployed"
