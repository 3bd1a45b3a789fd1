"""The backend image really built on the Docker engine and pushed to a real registry on 127.0.0.1."""

from __future__ import annotations

import hashlib
import io
import json
import re
import tarfile
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path
from unittest.mock import Mock

import docker
import pytest

from deploykit import commands
from deploykit.app_chain import BuildImage, EnsureBaseImage, PushImage
from deploykit.clock import FakeClock
from deploykit.config import BaseImageSpec
from deploykit.errors import EnvironmentNotReady, StepFailed, UsageError
from deploykit.git import current_revision
from deploykit.images import BUILD_LABEL, created, prune_builds, remote_digest
from deploykit.output import Reporter
from deploykit.plan import Context, RunReport
from tests.conftest import git, make_project, quiet_runtime
from tests.integration.conftest import CA_DIR, LocalRegistry, free_port

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("base_image", "cleanup_images")]


def statuses(report: RunReport | None) -> dict[str, str]:
    assert report is not None
    return {r.step: r.status for r in report.records}


def wait_http(url: str, timeout: float = 30) -> bytes:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as answer:
                return bytes(answer.read())
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def file_in_image(client: docker.DockerClient, image: str, path: str) -> str:
    """A file of ``image``, read from a container made and never started."""
    container = client.containers.create(image)
    try:
        chunks, _ = container.get_archive(path)
        with tarfile.open(fileobj=io.BytesIO(b"".join(chunks))) as tar:
            member = tar.extractfile(tar.getmembers()[0])
            assert member is not None
            return member.read().decode()
    finally:
        container.remove(force=True)


def test_build_push_run_then_a_one_file_change_rebuilds_from_cache(
    tmp_path: Path, local_registry: LocalRegistry, repository_name: str, docker_engine: docker.DockerClient
) -> None:
    project = make_project(tmp_path / "p", registry=local_registry.host, repository=repository_name, ca_dir=CA_DIR)
    revision = current_revision(project)

    report = commands.app_chain(["build", "push"], runtime=quiet_runtime(project))
    assert statuses(report) == {"base-image": "skipped", "build": "done", "push": "done"}
    remote = f"{local_registry.host}/{repository_name}:{revision.tag}"
    assert remote_digest(docker_engine, remote, None) == report.outputs()["digest"]

    # the image runs, answers /health, and knows the commit it was built from
    port = free_port()
    container = docker_engine.containers.run(
        f"{repository_name}:{revision.tag}",
        detach=True,
        network_mode="host",
        environment={"HOST": "127.0.0.1", "PORT": str(port)},
    )
    try:
        assert json.loads(wait_http(f"http://127.0.0.1:{port}/health")) == {"status": "ok"}
        assert json.loads(wait_http(f"http://127.0.0.1:{port}/version")) == {"git_sha": revision.sha}
        assert container.attrs["Config"]["User"] == "app"
        assert container.attrs["Config"]["Healthcheck"]["Test"][0] == "CMD"
    finally:
        container.remove(force=True)
    # the local base merges /usr with mmdebstrap's hook: no usrmerge, and none of the perl it pulls in (read from the
    # image's dpkg status file: a container's output can be read before it is all written)
    installed = set(re.findall(r"^Package: (\S+)$", file_in_image(docker_engine, f"{repository_name}:{revision.tag}",
                                                                    "/var/lib/dpkg/status"), re.M))  # fmt: skip
    assert "python3" in installed and not {"usrmerge", "perl", "libperl5.36"} & installed

    # one source file changes: the dependency layers come from the cache
    main = project / "backend" / "app" / "main.py"
    main.write_text(main.read_text() + "\n# a one-line change\n")
    git(project, "commit", "-qam", "one-line change")
    started = time.monotonic()
    rebuilt = commands.app_chain(["build"], runtime=quiet_runtime(project))
    rebuild_seconds = time.monotonic() - started
    assert statuses(rebuilt)["build"] == "done"
    assert rebuilt is not None
    detail = rebuilt.records[-1].detail
    cached, steps = (int(n) for n in detail.split(", ")[-1].split(" ")[0].split("/"))
    # base, certificates, venv, requirements, pip install, user and settings from the cache: only the source, the
    # commit (ARG, ENV) and deploykit's three labels (the commit twice, the base) are built again (ARG BASE_IMAGE
    # and FROM never count as cached)
    assert steps - cached - 3 <= 5, detail
    print(f"\nwarm rebuild after a one-file change: {rebuild_seconds:.2f}s ({detail})")

    started = time.monotonic()
    pushed = commands.app_chain(["push"], runtime=quiet_runtime(project))
    print(f"push of that image: {time.monotonic() - started:.2f}s")
    assert statuses(pushed) == {"push": "done"}

    # pushing the same commit again is skipped: tags are immutable
    assert statuses(commands.app_chain(["push"], runtime=quiet_runtime(project))) == {"push": "skipped"}
    assert statuses(commands.app_chain(["build"], runtime=quiet_runtime(project)))["build"] == "skipped"


def test_dirty_tree_is_refused_and_allowed_dirty_builds_are_tagged_so(
    tmp_path: Path, local_registry: LocalRegistry, repository_name: str, docker_engine: docker.DockerClient
) -> None:
    project = make_project(tmp_path / "p", registry=local_registry.host, repository=repository_name, ca_dir=CA_DIR)
    (project / "backend" / "app" / "main.py").write_text(
        (project / "backend" / "app" / "main.py").read_text() + "\n# uncommitted\n"
    )
    before = {t for i in docker_engine.images.list() for t in i.tags}
    with pytest.raises(UsageError, match="uncommitted changes"):
        commands.app_chain(["build"], runtime=quiet_runtime(project))
    assert {t for i in docker_engine.images.list() for t in i.tags} == before  # nothing was built

    report = commands.app_chain(["build"], allow_dirty=True, runtime=quiet_runtime(project))
    assert report is not None
    tag = report.outputs()["image"].split(":")[-1]
    assert tag.startswith(current_revision(project, allow_dirty=True).short + "-dirty-")
    label = docker_engine.images.get(report.outputs()["image"]).labels["io.deploykit.git-sha"]
    assert label == tag


def test_a_build_error_names_the_instruction_and_shows_its_log(
    tmp_path: Path, local_registry: LocalRegistry, repository_name: str
) -> None:
    project = make_project(tmp_path / "p", registry=local_registry.host, repository=repository_name, ca_dir=CA_DIR)
    dockerfile = project / "backend" / "Dockerfile"
    dockerfile.write_text(
        dockerfile.read_text().replace("WORKDIR /app\n", "WORKDIR /app\nRUN echo 'compiling the fleet' && exit 3\n")
    )
    git(project, "commit", "-qam", "broken build")
    with pytest.raises(StepFailed) as err:
        commands.app_chain(["build"], runtime=quiet_runtime(project))
    text = str(err.value)
    assert "at 'RUN echo 'compiling the fleet' && exit 3'" in text
    assert "returned a non-zero code: 3" in text
    assert "| compiling the fleet" in text
    assert "inv build" in text


def test_push_to_a_registry_that_is_down_fails_clearly(tmp_path: Path, repository_name: str) -> None:
    project = make_project(
        tmp_path / "p", registry=f"127.0.0.1:{free_port()}", repository=repository_name, ca_dir=CA_DIR
    )
    with pytest.raises(StepFailed) as err:
        commands.app_chain(["build", "push"], runtime=quiet_runtime(project))
    assert "connection refused" in err.value.message
    assert "registry is not reachable" in (err.value.next_step or "")


def test_a_pulled_base_image_is_pulled_when_missing_and_again_once_older_than_pull_after_days(
    local_registry: LocalRegistry,
    repository_name: str,
    docker_engine: docker.DockerClient,
    base_image: str,
    cleanup_images: None,
) -> None:
    """A base image from a registry (here a real one on 127.0.0.1, as python:3.11-slim is on Docker Hub): pulled
    when missing and stamped; a week on (the step's clock), pulled again, unchanged or updated as the registry has
    it."""
    ref = f"{local_registry.host}/{repository_name}-base:1"
    repository, tag = ref.rsplit(":", 1)
    first = docker_engine.images.get(base_image)
    first.tag(repository, tag)
    docker_engine.images.push(repository, tag=tag)
    docker_engine.images.remove(ref, noprune=True)
    step = EnsureBaseImage(ref, BaseImageSpec(), "", pull_after_days=7)

    def run(days_on: float) -> tuple[str, str]:
        clock = FakeClock(start=datetime.now(UTC) + timedelta(days=days_on))
        ctx = Context(
            Mock(), Mock(), Mock(), clock, Reporter(io.StringIO(), tty=False, clock=clock), lambda: docker_engine
        )
        outcome = step.run(ctx)
        return outcome.status, outcome.detail

    assert run(0) == ("done", f"pulled {ref}")
    stamped = created(docker_engine.images.get(ref).attrs["Metadata"]["LastTagTime"])
    assert stamped is not None and abs(datetime.now(UTC) - stamped) < timedelta(minutes=1)
    assert run(6) == ("skipped", f"{ref} is present")
    assert run(8) == ("done", f"pulled {ref} again: unchanged")

    # the publisher builds it anew: a week on, the next build takes the new one
    newer, _ = docker_engine.images.build(
        fileobj=io.BytesIO(f"FROM {base_image}\nLABEL rebuilt=yes\n".encode()), tag=ref, rm=True
    )
    docker_engine.images.push(repository, tag=tag)
    first.tag(repository, tag)  # this machine's copy is the old one
    status, detail = run(8)
    assert status == "done" and detail.startswith(f"pulled {ref} again: updated (")
    assert docker_engine.images.get(ref).id == newer.id


def foreign_image(client: docker.DockerClient, ref: str, arch: str = "arm64") -> docker.models.images.Image:
    """An image for linux/``arch`` loaded into the engine (as a Mac's build of it would be; this engine's own
    builds are all for its platform): one small layer, a crafted config, through ``docker load``."""
    layer = io.BytesIO()
    with tarfile.open(fileobj=layer, mode="w") as tar:
        entry = tarfile.TarInfo("etc/built-on")
        entry.size = len(arch)
        tar.addfile(entry, io.BytesIO(arch.encode()))
    config = json.dumps(
        {
            "architecture": arch,
            "os": "linux",
            "created": "2026-11-29T00:00:00Z",
            "config": {"Labels": {"built-on": arch}},
            "rootfs": {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(layer.getvalue()).hexdigest()]},
        }
    ).encode()
    manifest = json.dumps([{"Config": "config.json", "RepoTags": [ref], "Layers": ["layer.tar"]}]).encode()
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w") as tar:
        for name, data in (("layer.tar", layer.getvalue()), ("config.json", config), ("manifest.json", manifest)):
            entry = tarfile.TarInfo(name)
            entry.size = len(data)
            tar.addfile(entry, io.BytesIO(data))
    client.images.load(archive.getvalue())
    return client.images.get(ref)


def test_an_image_for_another_platform_is_rebuilt_refused_or_never_pushed_over(
    tmp_path: Path, local_registry: LocalRegistry, repository_name: str, docker_engine: docker.DockerClient,
    base_image: str,
) -> None:  # fmt: skip
    """The task definition runs linux/amd64 ([build] platform): an arm64 image (built on a Mac) must not reach it,
    whether it is this engine's copy of the tag, the base the build starts FROM, the registry's copy of the tag, or
    a pulled base."""
    context = tmp_path / "context"
    context.mkdir()
    (context / "Dockerfile").write_text("ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\nLABEL app=tiny\n")
    out = io.StringIO()
    clock = FakeClock()
    ctx = Context(Mock(), Mock(), Mock(), clock, Reporter(out, tty=False, clock=clock), lambda: docker_engine)

    def build(tag: str, base: str) -> BuildImage:
        return BuildImage(str(context), "Dockerfile", f"{repository_name}:{tag}", base, "0" * 40, "", "linux/amd64")

    # this engine holds the tag for arm64 (built before [build] platform was set): built again, for amd64
    foreign_image(docker_engine, f"{repository_name}:mac")
    outcome = build("mac", base_image).run(ctx)
    assert outcome.status == "done" and "here is for linux/arm64: building it for linux/amd64" in out.getvalue()
    assert docker_engine.images.get(f"{repository_name}:mac").attrs["Architecture"] == "amd64"
    assert build("mac", base_image).run(ctx).status == "skipped"

    # FROM an arm64 base, Docker's builder makes an arm64 image even when asked for amd64: refused
    foreign_image(docker_engine, f"{repository_name}-base:arm")
    with pytest.raises(StepFailed, match=f"made {repository_name}:fromarm for linux/arm64, not linux/amd64"):
        build("fromarm", f"{repository_name}-base:arm").run(ctx)

    # the registry holds the tag for arm64 (pushed from a Mac): not skipped as "already there" (an AWS environment's
    # push; ctx.aws, a Mock, names a registry host: no ECR credentials)
    remote = f"{local_registry.host}/{repository_name}"
    docker_engine.images.get(f"{repository_name}-base:arm").tag(remote, "mac")
    docker_engine.images.push(remote, tag="mac")
    with pytest.raises(UsageError, match="is in the registry for linux/arm64, not for linux/amd64") as refused:
        PushImage(f"{repository_name}:mac", remote, "mac", "linux/amd64").run(ctx)
    assert "commit again" in (refused.value.next_step or "")
    # the sandbox (platform "": this machine's own, its tasks run here) takes what is there, as before
    assert PushImage(f"{repository_name}:mac", remote, "mac", "").run(ctx).status == "skipped"

    # a pulled base held for arm64 is pulled again for amd64: a registry that has it for arm64 alone fails the step
    docker_engine.images.get(f"{repository_name}-base:arm").tag(f"{remote}-base", "arm")
    docker_engine.images.push(f"{remote}-base", tag="arm")
    step = EnsureBaseImage(f"{remote}-base:arm", BaseImageSpec(), "", pull_after_days=7)
    with pytest.raises(EnvironmentNotReady, match="is in its registry only for linux/arm64, and images are built for"):
        step.run(ctx)
    assert "this copy is for linux/arm64, and images are built for linux/amd64" in out.getvalue()


def test_older_builds_are_removed_from_the_engine_newest_kept_and_those_a_container_uses(
    docker_engine: docker.DockerClient, repository_name: str, base_image: str, cleanup_images: None
) -> None:
    """Five builds of a repository (labelled as deploykit labels them, each also under the registry's name): the
    two newest and the one being deployed stay, the one a (stopped) container uses stays, the others go with both
    their tags; an image of the repository deploykit did not build, and a build of another repository, stay."""
    registry = f"127.0.0.1:{free_port()}/{repository_name}"

    def build(n: int, label: bool = True, repository: str = repository_name) -> str:
        lines = [f"FROM {base_image}", f"LABEL n={n}"] + ([f"LABEL {BUILD_LABEL}=sha{n}"] if label else [])
        image, _ = docker_engine.images.build(fileobj=io.BytesIO("\n".join(lines).encode()), tag=f"{repository}:t{n}")
        image.tag(registry if repository == repository_name else f"127.0.0.1:1/{repository}", f"t{n}")
        return f"{repository}:t{n}"

    made = [build(n) for n in range(5)]  # oldest first
    foreign, other = build(5, label=False), build(6, repository=f"{repository_name}-other")
    container = docker_engine.containers.create(made[1], command=["true"])
    try:
        used = docker_engine.images.get(made[1]).id
        # at most one tag: the oldest build's first (t0 is the one deployed now)
        first = prune_builds(docker_engine, repository_name, 2, current=made[0], limit=1)
        assert len(first) == 1 and first[0] in (made[1], f"{registry}:t1"), first
        removed = prune_builds(docker_engine, repository_name, 2, current=made[0])
        # t3, t4: the newest two; t1: a container uses it, so its image stays (with its other tag: the engine refuses
        # to take the last); t2 goes, both its tags, and its image with them
        assert sorted(removed) == sorted([made[2], f"{registry}:t2"]), removed
        with pytest.raises(docker.errors.ImageNotFound):
            docker_engine.images.get(f"{registry}:t2")
        assert len(docker_engine.images.get(used).tags) == 1
        tags = {tag for image in docker_engine.images.list() for tag in image.tags}
        kept = [made[0], made[3], made[4], f"{registry}:t0", f"{registry}:t3", f"{registry}:t4", foreign, other]
        assert set(kept) <= tags, tags
        assert prune_builds(docker_engine, repository_name, 2, current=made[0]) == []  # nothing more to take
    finally:
        container.remove()
