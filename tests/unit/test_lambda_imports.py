"""deploykit.lambda_imports: what would keep a function's zip from importing on Lambda, read from the zip."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest

from deploykit import lambda_imports, packaging
from deploykit.lambda_imports import problems
from tests.conftest import REPO

MISSING = "which neither the zip (the function's files, its vendored requirements) nor Lambda's Python runtime"


def zipped(files: dict[str, str], *, vendored: dict[str, dict[str, str]] | None = None) -> bytes:
    """A zip of the function's own ``files`` and of vendored distributions (name → their files; each gets a
    .dist-info whose RECORD lists them and whose METADATA is the file ``METADATA`` given, or a plain one)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for dist, dist_files in (vendored or {}).items():
            info = f"{dist}-1.0.dist-info"
            metadata = dist_files.pop("METADATA", f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n")
            for path, text in dist_files.items():
                zf.writestr(path, text)
            zf.writestr(f"{info}/METADATA", metadata)
            zf.writestr(f"{info}/RECORD", "".join(f"{p},,\n" for p in [*dist_files, f"{info}/METADATA"]))
        for path, text in files.items():
            zf.writestr(path, text)
    return buffer.getvalue()


def said(found: list[lambda_imports.Problem]) -> list[str]:
    return [str(p) for p in found]


HANDLER = "def handler(event, context):\n    return 1\n"


@pytest.mark.parametrize("function", ["login_handler", "health_handler"])
def test_the_repositorys_own_functions_import(function: str) -> None:
    made = packaging.package_function(REPO / "lambda" / function)
    assert problems(made.zip_bytes) == []


def test_a_module_nothing_has_is_named_with_its_line_in_each_module_the_handler_reaches() -> None:
    """The standard library, the runtime's SDK, the zip's own modules and its vendored ones are there; a module the
    handler does not import (a script beside it) is not judged."""
    found = problems(
        zipped(
            {
                "handler.py": "import json\nimport boto3\nfrom botocore.exceptions import ClientError\n"
                "import requests\nimport yaml\nfrom lib import util\nimport lib.other\n" + HANDLER,
                "lib/__init__.py": "",
                "lib/util.py": "import os\nimport jose\n",
                "lib/other.py": "from . import sibling\n",
                "lib/sibling.py": "import attr\n",
                "scripts/seed.py": "import pandas\n",
            },
            vendored={"requests": {"requests/__init__.py": ""}},
        )
    )
    assert said(found) == [
        f"handler.py:5: imports yaml, {MISSING} (the standard library, the AWS SDK) has",
        f"lib/sibling.py:1: imports attr, {MISSING} (the standard library, the AWS SDK) has",
        f"lib/util.py:2: imports jose, {MISSING} (the standard library, the AWS SDK) has",
    ]


def test_an_import_the_code_can_do_without_is_not_required() -> None:
    """Under if (TYPE_CHECKING, a version test), in a try catching import errors, inside a function or a class: not
    required. A try that catches something else, and a with, run their imports."""
    source = (
        "from __future__ import annotations\n"
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    import mypy_boto3_s3\n"
        "try:\n    import orjson\nexcept ImportError:\n    orjson = None\n"
        "try:\n    import ujson\nexcept (ValueError, ModuleNotFoundError):\n    ujson = None\n"
        "try:\n    import simdjson\nexcept:  # noqa\n    simdjson = None\n"
        "def handler(event, context):\n    import pandas\n    return 1\n"
        "class Lazy:\n    import numpy\n"
        "try:\n    import sentry_sdk\nexcept KeyError:\n    pass\n"
        "with open(__file__):\n    import structlog\n"
    )
    assert said(problems(zipped({"handler.py": source}))) == [
        f"handler.py:23: imports sentry_sdk, {MISSING} (the standard library, the AWS SDK) has",
        f"handler.py:27: imports structlog, {MISSING} (the standard library, the AWS SDK) has",
    ]


def test_a_module_a_layer_gives_is_there_when_deploy_toml_names_it() -> None:
    zip_bytes = zipped({"handler.py": "import powertools_layer\n" + HANDLER})
    assert len(problems(zip_bytes)) == 1
    assert problems(zip_bytes, provided=["powertools_layer"]) == []


def test_a_relative_import_in_handler_py_fails_and_one_in_a_package_is_resolved() -> None:
    found = problems(
        zipped(
            {
                "handler.py": "from . import helpers\nfrom pkg import a\n" + HANDLER,
                "pkg/__init__.py": "from .b import thing\nfrom .. import up\n",
                "pkg/a.py": "from .gone import x\n",
                "pkg/b.py": "thing = 1\n",
            }
        )
    )
    assert said(found) == [
        "handler.py:1: imports relatively (.) from a top-level module, which Lambda imports outside any package",
        "pkg/__init__.py:2: imports relatively (..) from pkg",
        "pkg/a.py:1: imports pkg.gone, but the zip has no module pkg.gone",
    ]


def test_the_handler_lambda_has_is_judged_its_module_and_its_function() -> None:
    """The Handler as Lambda has it: its module must be in the zip and bind its function, not with async def; its
    module's imports are read from there. Not known (a function not deployed yet): handler.py's imports only."""
    main = zipped({"handler.py": "def main(event, context):\n    return 1\n"})
    assert said(problems(main, handler="handler.handler")) == [
        "handler.py: defines no handler: Lambda calls handler.handler(event, context) (Runtime.HandlerNotFound)"
    ]
    assert problems(main, handler="handler.main") == [] and problems(main) == []
    coroutine = zipped({"handler.py": "import asyncio\n\nasync def handler(event, context):\n    pass\n"})
    assert said(problems(coroutine, handler="handler.handler")) == [
        "handler.py:3: defines handler with async def: Lambda's Python runtime calls it and gets a coroutine, not an "
        "answer"
    ]
    elsewhere = zipped(
        {"handler.py": HANDLER, "app/__init__.py": "", "app/worker.py": "import yaml\ndef process(e, c):\n    pass\n"}
    )
    assert said(problems(elsewhere, handler="app/worker.process")) == [
        f"app/worker.py:1: imports yaml, {MISSING} (the standard library, the AWS SDK) has"
    ]
    assert said(problems(elsewhere, handler="app.gone.process")) == [
        "app/gone.py: is not in the zip, and Lambda's Handler app.gone.process names it (Runtime.ImportModuleError)"
    ]


@pytest.mark.parametrize(
    "source",
    [
        "from app import handler\n",
        "from app import main as handler\n",
        "from app import *\n",
        "import os\nhandler = os.getcwd\n",
        "import os\nif os.environ.get('X'):\n    def handler(e, c):\n        return 1\nelse:\n    handler = print\n",
        "class handler:\n    pass\n",
    ],
)
def test_a_handler_bound_any_way_at_the_top_level_is_there(source: str) -> None:
    zip_bytes = zipped({"handler.py": source, "app.py": "def handler(e, c):\n    return 1\nmain = handler\n"})
    assert problems(zip_bytes, handler="handler.handler") == []


def test_a_vendored_packages_requirement_must_be_vendored_too_or_the_runtimes() -> None:
    """Markers are Lambda's (Linux, CPython 3.11, the architecture); an extra not asked for is not needed; urllib3
    and the SDK are the runtime's; a layer's distribution named in deploy.toml is there."""
    metadata = (
        "Metadata-Version: 2.1\nName: requests\nVersion: 2.31.0\n"
        "Requires-Dist: charset-normalizer (<4,>=2)\n"
        "Requires-Dist: idna<4,>=2.5\n"
        "Requires-Dist: urllib3<3,>=1.21.1\n"
        "Requires-Dist: certifi>=2017.4.17\n"
        'Requires-Dist: PySocks!=1.5.7,>=1.5.6; extra == "socks"\n'
        'Requires-Dist: pywin32; sys_platform == "win32"\n'
        'Requires-Dist: typing-extensions; python_version < "3.8"\n'
        'Requires-Dist: graviton-only; platform_machine == "aarch64"\n'
        "Requires-Dist: layered\n"
    )
    zip_bytes = zipped(
        {"handler.py": "import requests\n" + HANDLER},
        vendored={
            "requests": {"requests/__init__.py": "", "METADATA": metadata},
            "Certifi": {"certifi/__init__.py": ""},
        },
    )
    tail = "neither vendored (requirements.txt is installed with pip --no-deps: it lists every package needed) nor in "
    assert said(problems(zip_bytes, provided=["layered"])) == [
        f"requests-1.0.dist-info/METADATA: requests 2.31.0 needs charset-normalizer, idna, which are {tail}"
        "Lambda's Python runtime"
    ]
    found = said(problems(zip_bytes, architecture="arm64"))
    assert found == [
        f"requests-1.0.dist-info/METADATA: requests 2.31.0 needs charset-normalizer, idna, graviton-only, layered, "
        f"which are {tail}Lambda's Python runtime"
    ]


def test_a_file_that_does_not_parse_is_left_to_the_syntax_check() -> None:
    assert problems(zipped({"handler.py": "import requests\ndef handler(:\n"})) == []
    assert len(problems(zipped({"handler.py": "import requests\n" + HANDLER}))) == 1


def test_a_vendored_modules_own_imports_are_not_read(tmp_path: Path) -> None:
    """Its distribution's Requires-Dist says what it needs; its code may import optional things at its top level."""
    zip_bytes = zipped(
        {"handler.py": "import vend\n" + HANDLER},
        vendored={"vend": {"vend/__init__.py": "import something_optional\n", "vend_ext.cpython-311.so": ""}},
    )
    assert problems(zip_bytes) == []
    assert problems(zipped({"handler.py": "import vend_ext\n" + HANDLER}, vendored={"x": {"vend_ext.so": ""}})) == []


def test_the_standard_library_is_that_of_the_runtimes_python() -> None:
    """imp and cgi left the standard library in 3.12 and 3.13: a function on those runtimes cannot import them, one
    on 3.11 can, whichever Python runs deploykit."""
    zip_bytes = zipped({"handler.py": "import imp\nimport cgi\nimport json\n" + HANDLER})
    assert problems(zip_bytes, python="3.11") == []
    assert said(problems(zip_bytes, python="3.12")) == [
        "handler.py:1: imports imp, which Python 3.12 took out of the standard library (the runtime's is 3.12)"
    ]
    assert said(problems(zip_bytes, python="3.13")) == [
        "handler.py:1: imports imp, which Python 3.12 took out of the standard library (the runtime's is 3.13)",
        "handler.py:2: imports cgi, which Python 3.13 took out of the standard library (the runtime's is 3.13)",
    ]
    assert "annotationlib" in lambda_imports.stdlib("3.14") and "annotationlib" not in lambda_imports.stdlib("3.13")


def test_what_no_lambda_runtime_has_is_no_standard_module_there() -> None:
    """tomllib is 3.11's; winreg is Windows' alone; a data file beside a package is no module of it."""

    def named(source: str, python: str = "3.12", **more: str) -> list[str]:
        return said(problems(zipped({"handler.py": source + HANDLER, **more}), python=python))

    assert len(named("import tomllib\n", "3.10")) == 1 and "tomllib" in named("import tomllib\n", "3.10")[0]
    assert named("import tomllib\n", "3.11") == []
    assert len(named("import winreg\n")) == 1 and "winreg" in named("import winreg\n")[0]
    found = named("import pkg.data\n", **{"pkg/__init__.py": "", "pkg/data.json": "{}"})
    assert len(found) == 1 and "pkg.data" in found[0]
