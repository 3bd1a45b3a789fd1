"""``python -m sandbox serve --config deploy.toml``: the sandbox process (started by ``inv sandbox.up``)."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

import docker

from sandbox.ext import extensions
from sandbox.server import Sandbox
from sandbox.settings import load_settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sandbox")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the sandbox's AWS endpoint and runtimes in the foreground")
    serve.add_argument("--config", type=Path, default=Path("deploy.toml"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    settings = load_settings(args.config)
    # moto's EC2 loads its ~1,300 default AMIs into each region's backend, which CloudFormation's VPC makes here:
    # a third of a second and memory for images no Fargate task or function runs on
    os.environ.setdefault("MOTO_EC2_LOAD_DEFAULT_AMIS", "false")
    Sandbox(settings, docker.from_env(), extensions(settings)).serve()
    return 0


if __name__ == "__main__":
    code = main()
    # Stopped: its containers, workers and servers ended, its state written as it changed, nothing left for exit to
    # do but the interpreter's teardown of moto's thousands of objects, which took 0.7 s of each `inv sandbox.down`.
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
