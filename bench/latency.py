"""Run an invoke task with every AWS call delayed, as if the sandbox were as far away as AWS.

    python bench/latency.py SECONDS [--uplink MBIT] TASK [ARGS...]     e.g.  python bench/latency.py 0.1 deploy.auto

On the sandbox an AWS call answers in about 10 ms; from a laptop AWS answers in 50-200 ms. Each call made
through botocore waits SECONDS before it is sent, so what deploy.auto does one call after the other shows up
as it would on AWS. With ``--uplink MBIT`` a call that sends a body (an S3 object, a part of one) also waits as
long as sending it takes at MBIT megabits a second, as a laptop's or an office's uplink sends it (loopback sends
it in no time). For the benchmark (bench/deploy_auto.py), never for a deploy that matters.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any

import botocore.client


def delayed(seconds: float, uplink_mbit: float = 0.0) -> Callable[[], None]:
    """Delay every botocore call by ``seconds`` from now on, and one sending a body by its time at ``uplink_mbit``
    (0: none); returns what undoes it."""
    send = botocore.client.BaseClient._make_api_call

    def call(self: botocore.client.BaseClient, operation_name: str, api_params: dict[str, Any]) -> Any:
        body = api_params.get("Body")
        sending = len(body) * 8 / (uplink_mbit * 1e6) if uplink_mbit and isinstance(body, bytes | bytearray) else 0.0
        time.sleep(seconds + sending)
        return send(self, operation_name, api_params)

    botocore.client.BaseClient._make_api_call = call  # type: ignore[method-assign]

    def undo() -> None:
        botocore.client.BaseClient._make_api_call = send  # type: ignore[method-assign]

    return undo


if __name__ == "__main__":
    if len(sys.argv) < 3:
        raise SystemExit(__doc__)
    args = sys.argv[2:]
    uplink = 0.0
    if args[:1] == ["--uplink"]:
        uplink, args = float(args[1]), args[2:]
    delayed(float(sys.argv[1]), uplink)
    sys.argv = ["invoke", *args]
    from invoke.main import program

    program.run()
