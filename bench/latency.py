"""Run an invoke task with every AWS call delayed, as if the sandbox were as far away as AWS.

    python bench/latency.py SECONDS TASK [ARGS...]     e.g.  python bench/latency.py 0.1 deploy.auto

On the sandbox an AWS call answers in about 10 ms; from a laptop AWS answers in 50-200 ms. Each call made
through botocore waits SECONDS before it is sent, so what deploy.auto does one call after the other shows up
as it would on AWS. For the benchmark (bench/deploy_auto.py), never for a deploy that matters.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any

import botocore.client


def delayed(seconds: float) -> Callable[[], None]:
    """Delay every botocore call by ``seconds`` from now on; returns what undoes it."""
    send = botocore.client.BaseClient._make_api_call

    def call(self: botocore.client.BaseClient, operation_name: str, api_params: dict[str, Any]) -> Any:
        time.sleep(seconds)
        return send(self, operation_name, api_params)

    botocore.client.BaseClient._make_api_call = call  # type: ignore[method-assign]

    def undo() -> None:
        botocore.client.BaseClient._make_api_call = send  # type: ignore[method-assign]

    return undo


if __name__ == "__main__":
    if len(sys.argv) < 3:
        raise SystemExit(__doc__)
    delayed(float(sys.argv[1]))
    sys.argv = ["invoke", *sys.argv[2:]]
    from invoke.main import program

    program.run()
