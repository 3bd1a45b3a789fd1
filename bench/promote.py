"""Benchmark: how prod gets its image, built once and copied (promotion) or built and pushed again.

    ./dev python bench/promote.py             # table on stderr, JSON on stdout
    ./dev python bench/promote.py --runs 5    # more runs per row (default 3; the median is shown)

dev's image is this checkout's backend/ built on the local base image and pushed to a "dev" registry; then, each
run into empty registries of its own (plain distribution registries on free 127.0.0.1 ports, started and stopped
here by pid):

  copy, one registry:   dev's image copied to another repository of dev's registry (deploykit.oci): the layers
                        are mounted, none sent (ECR with blob mounting on: dev and prod in one account and region);
  copy, two registries: copied into another registry: every blob streamed across (two accounts, two regions);
  push of dev's build:  `docker push` of the same image to another registry (the engine compresses the layers
                        again on the push: the digest it reports is compared with dev's);
  build + push, warm:   what prod's job did before promotion on a machine that built the image before: a build
                        with a one-line change (layer cache warm), then the push;
  build + push, cold:   the same on a machine that never built it (no layer cache, the base image present): a CI
                        runner's first build.

It prints figures, it asserts nothing: timing on a shared machine is noisy. The ratios compare rows of the same run.
"""

from __future__ import annotations

import argparse
import io
import itertools
import json
import os
import shutil
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run as a script: deploykit from this checkout

from deploykit import commands, images, oci  # noqa: E402
from deploykit.config import load_config  # noqa: E402
from deploykit.proxies import bypass_loopback  # noqa: E402
from sandbox import lifecycle  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Registry:
    """A distribution registry of its own, in ``root``, stopped by its pid."""

    def __init__(self, root: Path) -> None:
        self.root, self.port = root, free_port()
        self.process = lifecycle.Process("benchmark registry", root / "registry.pid", root / "registry.log")
        try:
            lifecycle.start_registry(self.process, root, self.port, root)
        except lifecycle.SandboxError as exc:
            raise SystemExit(f"{exc.message}\n  → next: {exc.next_step}") from None

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.process.stop(timeout=10)


def _ca_dir(path: str) -> Path | None:
    return Path(path) if path else None


def main() -> int:
    bypass_loopback(os.environ)  # behind a proxy, the sandbox is asked directly, as inv asks it
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="runs per row (the median is shown)")
    args = parser.parse_args()
    say = sys.stderr.write
    if shutil.which("docker-registry") is None:
        say("❌ docker-registry is not installed\n  → next: run it through ./dev (it installs it on Debian)\n")
        return 2
    client = images.docker_client()
    config = load_config(REPO / "deploy.toml")
    commands.base_image(runtime=commands.Runtime(config_path=REPO / "deploy.toml", stderr=io.StringIO()))
    base = config.build.base.name
    work = Path(tempfile.mkdtemp(prefix="deploykit-bench-promote-"))
    context = work / "backend"
    shutil.copytree(REPO / "backend", context, ignore=shutil.ignore_patterns("__pycache__", ".pytest_cache"))
    quiet: Callable[[str], None] = lambda _line: None  # noqa: E731
    registries: list[Registry] = []
    numbers = itertools.count()

    def registry(name: str) -> Registry:
        registries.append(Registry(work / f"{name}-{next(numbers)}"))
        return registries[-1]

    def build(tag: str) -> str:
        stream = images.build_image(
            client,
            context=context,
            dockerfile="Dockerfile",
            tag=tag,
            buildargs={"BASE_IMAGE": base, "GIT_SHA": tag.rsplit(":", 1)[-1]},
            labels={},
            extra_ca_dir=_ca_dir(config.build.extra_ca_dir),
            say=quiet,
            status=quiet,
        )
        return stream.image_id

    def build_cold(tag: str) -> None:
        fileobj = images.build_context(context, "Dockerfile", _ca_dir(config.build.extra_ca_dir))
        for chunk in client.api.build(
            fileobj=fileobj,
            custom_context=True,
            tag=tag,
            buildargs={"BASE_IMAGE": base, "GIT_SHA": "cold"},
            network_mode="host",
            rm=True,
            forcerm=True,
            nocache=True,
            decode=True,
        ):
            if "error" in chunk:
                raise SystemExit(f"docker build failed: {chunk['error']}")

    def push(image: str, target: Registry, repository: str, tag: str) -> str:
        client.api.tag(image, f"{target.host}/{repository}", tag)
        return images.push_image(
            client, repository=f"{target.host}/{repository}", tag=tag, auth=None, say=quiet, status=quiet
        ).digest

    rows: dict[str, list[float]] = {}
    notes: dict[str, Any] = {}
    dev_digest = ""

    def row(name: str, started: float) -> None:
        rows.setdefault(name, []).append(time.perf_counter() - started)

    def one_run(run: int) -> None:
        started = time.perf_counter()
        copied = oci.copy_image(oci.Registry(dev.host), "dev-backend", oci.Registry(dev.host), f"prod-{run}", "dev")
        row("copy, one registry (layers mounted)", started)
        assert copied.digest == dev_digest and copied.sent == 0, copied
        prod = registry("prod")
        started = time.perf_counter()
        copied = oci.copy_image(oci.Registry(dev.host), "dev-backend", oci.Registry(prod.host), "prod", "dev")
        row("copy, two registries (every blob streamed)", started)
        assert copied.digest == dev_digest, copied
        notes["streamed_mb"] = round(copied.sent_bytes / 1e6, 1)
        other = registry("push")
        started = time.perf_counter()
        pushed = push(dev_image, other, "prod", "dev")
        row("docker push of dev's build to an empty registry", started)
        notes["docker_push_keeps_the_digest"] = pushed == dev_digest
        fleet = context / "app" / "fleet.py"
        fleet.write_text(fleet.read_text() + f"\n# bench {run}\n")
        other = registry("warm")
        started = time.perf_counter()
        push(build(f"bench-promote:warm-{run}"), other, "prod", "warm")
        row("build (one file changed, warm cache) + push", started)
        other = registry("cold")
        started = time.perf_counter()
        build_cold(f"bench-promote:cold-{run}")
        push(f"bench-promote:cold-{run}", other, "prod", "cold")
        row("build (no cache) + push", started)

    try:
        say(f"🏁 benchmark in {work}: dev's image built and pushed\n")
        dev = registry("dev")
        dev_image = build("bench-promote:dev")
        dev_digest = push(dev_image, dev, "dev-backend", "dev")
        notes["image_mb"] = round(client.images.get(dev_image).attrs["Size"] / 1e6, 1)
        for run in range(args.runs):
            say(f"  run {run + 1} of {args.runs}\n")
            one_run(run)
            for r in registries[1:]:
                r.stop()
            del registries[1:]
    finally:
        for r in registries:
            r.stop()
        for image in client.images.list(name="bench-promote"):
            for tag in image.tags:
                client.images.remove(tag, force=True)
        for image in client.images.list():
            for tag in image.tags:
                if tag.startswith("127.0.0.1:") and any(part in tag for part in ("/dev-backend:", "/prod:", "/p:")):
                    client.images.remove(tag, force=True)
        shutil.rmtree(work, ignore_errors=True)

    medians = {name: statistics.median(values) for name, values in rows.items()}
    copy_across = medians["copy, two registries (every blob streamed)"]
    ratios = {
        "build (no cache) + push / copy, two registries": medians["build (no cache) + push"] / copy_across,
        "build (warm) + push / copy, two registries": medians["build (one file changed, warm cache) + push"]
        / copy_across,
    }
    lines = [
        f"{name:<52} {seconds:7.2f} s  ({', '.join(f'{v:.2f}' for v in rows[name])})"
        for name, seconds in medians.items()
    ]
    lines += [f"{name:<52} {value:7.1f} ×" for name, value in ratios.items()]
    lines.append(
        f"image {notes['image_mb']} MB on the engine, {notes['streamed_mb']} MB streamed (compressed); docker push "
        f"of dev's build {'kept' if notes['docker_push_keeps_the_digest'] else 'did not keep'} dev's digest"
    )
    say("\n".join(["", f"{'prod gets its image by':<52} {'median':>9}  (runs)", "-" * 90, *lines]) + "\n")
    data = {
        "seconds": {k: round(v, 2) for k, v in medians.items()},
        "runs": {k: [round(x, 2) for x in v] for k, v in rows.items()},
        "ratios": {k: round(v, 2) for k, v in ratios.items()},
        **notes,
    }
    print(json.dumps(data, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
