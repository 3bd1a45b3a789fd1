"""The local base image: built from the suite with its updates and security updates, and rebuilt when its spec
changes or once it is older than max_age_days (Docker's engine faked with Mock(spec=...))."""

from __future__ import annotations

import dataclasses
import io
import os
import subprocess
import tomllib
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from unittest.mock import Mock

import docker
import docker.errors
import docker.models.images
import pytest

from deploykit import base_image, images
from deploykit.app_chain import BuildImage, EnsureBaseImage
from deploykit.clock import FakeClock
from deploykit.config import BaseImageSpec, parse_config
from deploykit.errors import ConfigError, EnvironmentNotReady, StepFailed, UsageError
from deploykit.output import Reporter
from deploykit.plan import Context
from tests.conftest import REPO

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
SPEC = BaseImageSpec()


def engine(spec: BaseImageSpec | None, built: datetime | str | None = None, arch: str = "amd64") -> Mock:
    """A Docker engine on an ``arch`` machine holding the base image built from ``spec`` at ``built`` (none when
    ``spec`` is None)."""
    client = Mock(spec=docker.DockerClient)
    client.version.return_value = {"Os": "linux", "Arch": arch, "Version": "28.2.2"}
    client.images = Mock(spec=docker.models.images.ImageCollection)
    if spec is None:
        client.images.get.side_effect = docker.errors.ImageNotFound("no such image")
        return client
    image = Mock(spec=docker.models.images.Image)
    stamp = built.strftime("%Y-%m-%dT%H:%M:%S.123456789Z") if isinstance(built, datetime) else built
    image.attrs = {"Created": stamp, "Config": {"Labels": {base_image.SPEC_LABEL: base_image.spec_hash(spec, None)}}}
    client.images.get.return_value = image
    return client


def test_usr_is_merged_by_mmdebstraps_hook_not_by_usrmerge_and_its_perl(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(base_image, "MERGED_USR_HOOKS", tmp_path)
    assert f"--hook-dir={tmp_path}" in base_image.mmdebstrap_command(SPEC, None)
    monkeypatch.setattr(base_image, "MERGED_USR_HOOKS", tmp_path / "absent")  # an mmdebstrap without it
    assert not any(arg.startswith("--hook-dir") for arg in base_image.mmdebstrap_command(SPEC, None))
    assert "python3-pip" not in SPEC.packages  # the venv's pip comes from python3-venv


def test_it_is_built_from_the_suite_its_updates_and_its_security_updates() -> None:
    assert SPEC.sources() == (
        "deb http://deb.debian.org/debian bookworm main",
        "deb http://deb.debian.org/debian bookworm-updates main",
        "deb http://deb.debian.org/debian-security bookworm-security main",
    )
    command = base_image.mmdebstrap_command(SPEC, None)
    assert command[-5:] == ["bookworm", "-", *SPEC.sources()]
    only_suite = dataclasses.replace(SPEC, updates=False)
    assert only_suite.sources() == ("deb http://deb.debian.org/debian bookworm main",)
    no_security = dataclasses.replace(SPEC, security_mirror="")
    assert [line.split()[2] for line in no_security.sources()] == ["bookworm", "bookworm-updates"]
    # another source is another image
    assert base_image.spec_hash(only_suite, None) != base_image.spec_hash(SPEC, None)


PEM = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"


def _customize_hook(command: list[str]) -> str:
    return next(arg.split("=", 1)[1] for arg in command if arg.startswith("--customize-hook=") and "ca-cert" in arg)


def _run_hook(hook: str, target: Path, tools: Path) -> subprocess.CompletedProcess[str]:
    """The hook as mmdebstrap runs it (sh -c HOOK exec TARGET), with a stub for chroot."""
    tools.mkdir(exist_ok=True)
    (tools / "chroot").write_text("#!/bin/sh\nexit 0\n")
    (tools / "chroot").chmod(0o755)
    environ = dict(os.environ, PATH=f"{tools}:{os.environ['PATH']}")
    return subprocess.run(["sh", "-c", hook, "exec", str(target)], capture_output=True, text=True, env=environ)


def test_an_extra_ca_dir_with_a_space_in_its_path_is_copied_into_the_base(tmp_path: Path) -> None:
    """Unquoted, '/home/me/my certs' was two arguments of find: the hook failed, and the error blamed the mirror."""
    folder = tmp_path / "my certs"
    folder.mkdir()
    (folder / "proxy.crt").write_text(PEM)
    target = tmp_path / "root"
    done = _run_hook(_customize_hook(base_image.mmdebstrap_command(SPEC, folder)), target, tmp_path / "bin")
    assert done.returncode == 0, done.stderr
    assert (target / base_image.CA_HOOK_DIR / "proxy.crt").read_text() == PEM


def test_ca_certificates_of_one_name_in_two_subfolders_both_go_into_the_base(tmp_path: Path) -> None:
    folder = tmp_path / "cas"
    for sub in ("corp", "lab"):
        (folder / sub).mkdir(parents=True)
        (folder / sub / "root.crt").write_text(PEM.replace("MIIB", sub))
    target = tmp_path / "root"
    done = _run_hook(_customize_hook(base_image.mmdebstrap_command(SPEC, folder)), target, tmp_path / "bin")
    assert done.returncode == 0, done.stderr
    for sub in ("corp", "lab"):
        assert sub in (target / base_image.CA_HOOK_DIR / sub / "root.crt").read_text()
    with pytest.raises(ConfigError, match="is not a PEM certificate"):
        (folder / "lab" / "root.crt").write_bytes(bytes.fromhex("3082"))
        base_image.mmdebstrap_command(SPEC, folder)


def test_a_failed_ca_step_of_mmdebstrap_is_said_as_such_not_as_the_mirror(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tools = tmp_path / "bin"
    tools.mkdir()
    failed = f'E: command failed: mkdir -p "$1/{base_image.CA_HOOK_DIR}" && find ...'
    (tools / "mmdebstrap").write_text(
        f"#!/bin/sh\necho 'I: running --customize-hook' >&2\necho '{failed}' >&2\nexit 1\n"
    )
    (tools / "mmdebstrap").chmod(0o755)
    monkeypatch.setenv("PATH", f"{tools}:{os.environ['PATH']}")
    client = engine(None)
    client.api = Mock()
    client.api.import_image_from_stream.side_effect = lambda stream, **_: stream.read()
    with pytest.raises(StepFailed) as raised:
        base_image.build_base_image(client, SPEC, tmp_path, status=lambda _: None)
    assert raised.value.message.startswith(
        f"mmdebstrap failed (exit 1) building {SPEC.name}, at its step that installs the CA certificates of [build] "
        f"extra_ca_dir ({tmp_path}):"
    )
    assert "can be read" in (raised.value.next_step or "") and "apt-get update" not in (raised.value.next_step or "")


def test_an_import_the_engine_refused_stops_mmdebstrap_and_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The engine refused the import, or made no image of it: a NameError (the SDK's errors were not imported), and
    mmdebstrap, blocked writing more than a pipe holds that nobody read, waited for for ever."""
    import docker.errors

    tools = tmp_path / "bin"
    tools.mkdir()
    (tools / "mmdebstrap").write_text("#!/bin/sh\nhead -c 1048576 /dev/zero\n")  # more than a pipe holds
    (tools / "mmdebstrap").chmod(0o755)
    monkeypatch.setenv("PATH", f"{tools}:{os.environ['PATH']}")
    client = engine(None)
    client.api = Mock()
    client.api.import_image_from_stream.side_effect = docker.errors.APIError("engine refused the import")
    with pytest.raises(StepFailed, match="docker import of the base image failed: engine refused the import"):
        base_image.build_base_image(client, SPEC, None, status=lambda _: None)
    client.api.import_image_from_stream.side_effect = lambda stream, **_: stream.read()
    client.images.get.side_effect = docker.errors.ImageNotFound("no such image")
    with pytest.raises(StepFailed, match=f"the base image {SPEC.name} was not created"):
        base_image.build_base_image(client, SPEC, None, status=lambda _: None)


def test_mmdebstrap_stopped_early_is_asked_to_end_so_that_it_cleans_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As root it mounts /dev, /proc and /sys under its temporary folder; its handler of SIGTERM unmounts them and
    removes the folder. It was killed (SIGKILL: no handler runs), and left them."""
    import docker.errors

    cleaned = tmp_path / "cleaned"
    tools = tmp_path / "bin"
    tools.mkdir()
    (tools / "mmdebstrap").write_text(
        f"#!/bin/sh\ntrap 'echo unmounted > {cleaned}; exit 143' TERM\nhead -c 1048576 /dev/zero\nsleep 60\n"
    )
    (tools / "mmdebstrap").chmod(0o755)
    monkeypatch.setenv("PATH", f"{tools}:{os.environ['PATH']}")
    client = engine(None)
    client.api = Mock()

    def refused(stream: Any, **_: Any) -> None:
        stream.read(1)  # mmdebstrap is under way
        raise docker.errors.APIError("engine refused the import")

    client.api.import_image_from_stream.side_effect = refused
    with pytest.raises(StepFailed, match="docker import of the base image failed"):
        base_image.build_base_image(client, SPEC, None, status=lambda _: None)
    assert cleaned.read_text() == "unmounted\n"


@pytest.mark.parametrize(
    ("held", "built", "why"),
    [
        (None, None, "not on this Docker engine"),
        (dataclasses.replace(SPEC, updates=False), NOW, "[build.base] or the CA certificates changed"),
        (SPEC, NOW - timedelta(days=8), "built 8 days ago (max_age_days = 7): the Debian security updates"),
        (SPEC, NOW - timedelta(days=6, hours=23), None),
        (SPEC, "not a time", None),  # an engine that says no time: the spec decides
    ],
)
def test_it_is_stale_when_missing_built_otherwise_or_older_than_max_age(
    held: BaseImageSpec | None, built: datetime | str | None, why: str | None
) -> None:
    found = base_image.stale(engine(held, built), SPEC, None, NOW)
    assert found is None if why is None else why in (found or "")


def test_max_age_0_rebuilds_only_when_the_spec_changes() -> None:
    forever = dataclasses.replace(SPEC, max_age_days=0)
    assert base_image.stale(engine(forever, NOW - timedelta(days=400)), forever, None, NOW) is None


def test_dockers_created_time_is_read_with_its_nanoseconds_and_zone() -> None:
    assert images.created("2026-11-29T08:32:24.15606724Z") == datetime(2026, 11, 29, 8, 32, 24, tzinfo=UTC)
    assert images.created("2026-11-29T17:00:00+01:00") == datetime(2026, 11, 29, 16, 0, tzinfo=UTC)
    for bad in ("", "garbage", "2026-13-29T17:00:00Z", None, 17):
        assert images.created(bad) is None


def test_the_step_skips_a_current_image_and_says_why_it_builds_a_stale_one(monkeypatch: pytest.MonkeyPatch) -> None:
    built: list[BaseImageSpec] = []

    def build(client: object, spec: BaseImageSpec, ca: object, *, status: object) -> str:
        built.append(spec)  # mmdebstrap itself is the integration tests' (the base_image fixture)
        return "sha256:0123456789abcdef"

    monkeypatch.setattr(base_image, "build_base_image", build)
    step = EnsureBaseImage(SPEC.name, SPEC, "")
    out = io.StringIO()

    def context(client: Mock) -> Context:
        clock = FakeClock(start=NOW)
        return Context(Mock(), Mock(), Mock(), clock, Reporter(out, tty=False, clock=clock), lambda: client)

    assert step.run(context(engine(SPEC, NOW - timedelta(days=1)))).status == "skipped" and not built
    outcome = step.run(context(engine(SPEC, NOW - timedelta(days=30))))
    assert outcome.status == "done" and built == [SPEC]
    assert "built 30 days ago (max_age_days = 7)" in outcome.detail
    assert f"🐧 building {SPEC.name} (about a minute): it was built 30 days ago" in out.getvalue()


def test_max_age_days_is_read_from_deploy_toml_and_a_negative_one_is_refused() -> None:
    raw = tomllib.loads((REPO / "deploy.toml").read_text())
    config = parse_config(raw, Path("deploy.toml"))
    assert config.build.base == SPEC  # the repository's file says what the defaults are
    assert config.build.pull_after_days == 7
    raw["build"]["base"]["max_age_days"] = -1
    with pytest.raises(ConfigError, match=r"build\.base\.max_age_days must be from 0"):
        parse_config(raw, Path("deploy.toml"))
    raw["build"]["base"]["max_age_days"], raw["build"]["pull_after_days"] = 7, -2
    ranged = r"build\.pull_after_days must be from 0 \(never by age\) to 3650, not -2"
    with pytest.raises(ConfigError, match=ranged) as err:
        parse_config(raw, Path("deploy.toml"))
    assert err.value.next_step == "fix [build] pull_after_days in deploy.toml"
    raw["build"]["pull_after_days"] = 7
    assert parse_config(raw, Path("deploy.toml")).build.keep_local_images == 10
    raw["build"]["keep_local_images"] = -1
    with pytest.raises(ConfigError, match=r"build\.keep_local_images must be 0 \(never remove\) or more, not -1"):
        parse_config(raw, Path("deploy.toml"))


# -- a base image pulled from a registry (python:3.11-slim) ---------------------------------------------------


def pulled_image(image_id: str, tagged: str | None, arch: str = "amd64") -> Mock:
    image = Mock(spec=docker.models.images.Image)
    image.id, image.short_id = image_id, image_id[:17]
    image.attrs = {
        "Id": image_id,
        "Os": "linux",
        "Architecture": arch,
        "Metadata": {"LastTagTime": tagged} if tagged else {},
    }
    return image


def registry_engine(held: Mock | None, pulled: Mock | Exception) -> Mock:
    client = Mock(spec=docker.DockerClient)
    client.images = Mock(spec=docker.models.images.ImageCollection)
    client.images.get.side_effect = (lambda ref: held) if held else docker.errors.ImageNotFound("no such image")
    if isinstance(pulled, Exception):
        client.images.pull.side_effect = pulled
    else:
        client.images.pull.return_value = pulled
    return client


def pull_step(after_days: float = 7, image: str = "python:3.11-slim") -> EnsureBaseImage:
    return EnsureBaseImage(image, SPEC, "", pull_after_days=after_days)


def run_with(step: EnsureBaseImage, client: Mock) -> tuple[str, str, str]:
    out = io.StringIO()
    clock = FakeClock(start=NOW)
    ctx = Context(Mock(), Mock(), Mock(), clock, Reporter(out, tty=False, clock=clock), lambda: client)
    outcome = step.run(ctx)
    return outcome.status, outcome.detail, out.getvalue()


def test_a_pulled_base_is_pulled_again_once_older_than_pull_after_days_and_stamped() -> None:
    old = pulled_image("sha256:" + "a" * 64, "2026-11-20T12:00:00.5Z")  # 9 days before NOW
    new = pulled_image("sha256:" + "b" * 64, None)
    client = registry_engine(old, new)
    status, detail, said = run_with(pull_step(), client)
    assert status == "done" and detail == "pulled python:3.11-slim again: updated (aaaaaaaaaa → bbbbbbbbbb)"
    assert "🐳 pulling python:3.11-slim again: this copy was pulled 9 days ago (pull_after_days = 7)" in said
    client.images.pull.assert_called_once_with("python:3.11-slim", platform="linux/amd64")
    new.tag.assert_called_once_with("python", "3.11-slim")  # its LastTagTime now says when it was pulled

    same = registry_engine(old, old)
    assert run_with(pull_step(), same)[1] == "pulled python:3.11-slim again: unchanged"


def test_the_plan_says_when_the_base_is_pulled() -> None:
    assert pull_step().describe() == "base image python:3.11-slim: pull it if missing or pulled more than 7 days ago"
    assert pull_step(after_days=0).describe() == "base image python:3.11-slim: pull it if missing"
    assert (
        EnsureBaseImage(SPEC.name, SPEC, "").describe().endswith("build it locally with mmdebstrap if missing or stale")
    )


def test_a_recent_copy_a_digest_or_pull_after_days_0_is_not_pulled_again() -> None:
    recent = pulled_image("sha256:" + "a" * 64, "2026-11-25T12:00:00Z")
    old = pulled_image("sha256:" + "a" * 64, "2026-01-01T00:00:00Z")
    for step, held in (
        (pull_step(), recent),
        (pull_step(after_days=0), old),
        (pull_step(image="python@sha256:" + "c" * 64), old),
    ):
        client = registry_engine(held, AssertionError("no pull"))
        assert run_with(step, client)[0] == "skipped"
        client.images.pull.assert_not_called()


def test_a_copy_pulled_by_hand_is_pulled_again_once_and_a_failed_pull_keeps_the_copy() -> None:
    by_hand = pulled_image("sha256:" + "a" * 64, "0001-01-01T00:00:00Z")  # what Docker says of a never-tagged image
    offline = registry_engine(by_hand, docker.errors.APIError("connection refused"))
    status, detail, said = run_with(pull_step(), offline)
    assert status == "skipped" and "pulling python:3.11-slim again failed (connection refused)" in detail
    assert "when this copy was pulled is not known" in said and "building from this copy" in said


def test_a_missing_base_that_cannot_be_pulled_is_refused_with_the_local_base_as_the_way_out() -> None:
    client = registry_engine(None, docker.errors.APIError("no route to registry-1.docker.io"))
    with pytest.raises(EnvironmentNotReady, match="cannot be pulled for linux/amd64: no route") as refused:
        run_with(pull_step(), client)
    assert refused.value.exit_code == 2 and "inv base-image" in (refused.value.next_step or "")
    assert "docker pull --platform linux/amd64 python:3.11-slim" in (refused.value.next_step or "")
    # on the sandbox, images are built for this engine's own platform: none is named
    with pytest.raises(EnvironmentNotReady) as refused:
        run_with(dataclasses.replace(pull_step(), platform=""), client)
    assert refused.value.message == (
        "base image python:3.11-slim is not on this Docker engine and cannot be pulled: "
        "no route to registry-1.docker.io"
    )
    assert "(docker pull python:3.11-slim)" in (refused.value.next_step or "")


# -- the platform images are built for ([build] platform) -------------------------------------------------------


def test_the_local_base_is_refused_on_a_machine_of_another_platform(monkeypatch: pytest.MonkeyPatch) -> None:
    """mmdebstrap builds for the machine it runs on: an arm64 laptop cannot make the linux/amd64 base."""
    monkeypatch.setattr(base_image, "build_base_image", Mock(side_effect=AssertionError("no build")))
    step = EnsureBaseImage(SPEC.name, SPEC, "")
    with pytest.raises(UsageError, match="built for this machine's platform, linux/arm64, but images are built for "
                       r"linux/amd64 \(\[build\] platform") as refused:  # fmt: skip
        run_with(step, engine(None, arch="aarch64"))  # as `uname -m` says it: the same platform
    assert refused.value.exit_code == 2 and "base_image = 'python:3.11-slim'" in (refused.value.next_step or "")
    arm = dataclasses.replace(step, platform="linux/arm64")
    assert run_with(arm, engine(SPEC, NOW, arch="arm64"))[0] == "skipped"


def test_a_pulled_base_for_another_platform_is_pulled_again_for_this_one() -> None:
    """A Mac's python:3.11-slim is its arm64 image: built FROM it, the task would not start on X86_64 Fargate."""
    arm = pulled_image("sha256:" + "a" * 64, "2026-11-28T12:00:00Z", arch="arm64")  # a day old: recent
    amd = pulled_image("sha256:" + "b" * 64, None)
    client = registry_engine(arm, amd)
    status, detail, said = run_with(pull_step(), client)
    assert status == "done" and detail.startswith("pulled python:3.11-slim again: updated")
    assert "this copy is for linux/arm64, and images are built for linux/amd64 ([build] platform)" in said
    client.images.pull.assert_called_once_with("python:3.11-slim", platform="linux/amd64")
    # offline, the copy at hand does not do: it is for another platform
    offline = registry_engine(arm, docker.errors.APIError("connection refused"))
    with pytest.raises(EnvironmentNotReady, match="is here only for linux/arm64 and cannot be pulled for linux/amd64"):
        run_with(pull_step(), offline)


def test_the_platform_is_read_from_deploy_toml_and_an_unknown_one_is_refused() -> None:
    raw = tomllib.loads((REPO / "deploy.toml").read_text())
    assert parse_config(raw, Path("deploy.toml")).build.platform == "linux/amd64"
    raw["build"]["platform"] = "linux/arm/v7"
    with pytest.raises(ConfigError, match=r"build\.platform = 'linux/arm/v7' is not a platform") as err:
        parse_config(raw, Path("deploy.toml"))
    assert err.value.next_step and "linux/amd64, linux/arm64" in err.value.next_step


def test_aws_environments_build_for_the_platform_and_the_sandbox_for_this_machine(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The sandbox runs its tasks on this engine: natively, on an arm64 machine too; AWS runs what the task
    definition says."""
    from deploykit import planner

    raw = tomllib.loads((REPO / "deploy.toml").read_text())
    raw["environments"]["dev"] = {k: v for k, v in raw["environments"]["sandbox"].items() if k != "endpoint_url"}
    config = parse_config(raw, Path("deploy.toml"))
    assert planner.build_platform(config, config.environment("sandbox")) == ""
    assert planner.build_platform(config, config.environment("dev")) == "linux/amd64"
    step = planner.base_image_plan(config, config.environment("sandbox")).steps[0]
    assert isinstance(step, EnsureBaseImage) and step.platform == ""
    monkeypatch.setattr(base_image, "build_base_image", Mock(side_effect=AssertionError("no build")))
    current = dataclasses.replace(step, extra_ca_dir="")  # as engine() labels it
    assert run_with(current, engine(SPEC, NOW, arch="arm64"))[0] == "skipped"  # an arm64 machine's sandbox: its own


# -- older builds on this engine ([build] keep_local_images) --------------------------------------------------------


def test_older_builds_are_pruned_after_a_build_once_a_day_and_never_with_keep_0(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DEPLOYKIT_CACHE_DIR", str(tmp_path / "cache"))
    engine = Mock(spec=docker.DockerClient)
    engine.images = Mock(spec=docker.models.images.ImageCollection)
    engine.images.list.return_value = []
    clock = FakeClock(start=datetime(2026, 12, 1, 9, tzinfo=UTC))
    ctx = Context(Mock(), Mock(), Mock(), clock, Reporter(io.StringIO(), tty=False, clock=clock), lambda: engine)
    step = BuildImage("backend", "Dockerfile", "car-rental-backend:abc", SPEC.name, "abc", "", keep_local=3)
    assert step._prune(ctx) == ""
    engine.images.list.assert_called_once_with(filters={"label": "io.deploykit.git-sha"})
    clock.advance(6 * 3600)
    step._prune(ctx)  # the same day: not asked again
    assert engine.images.list.call_count == 1
    clock.advance(19 * 3600)
    step._prune(ctx)
    assert engine.images.list.call_count == 2
    clock.advance(2 * 86400)
    assert dataclasses.replace(step, keep_local=0)._prune(ctx) == ""
    assert engine.images.list.call_count == 2
    assert (tmp_path / "cache" / "local-builds" / "car-rental-backend" / ".pruned").exists()


def test_a_first_prune_of_many_builds_goes_on_over_the_next_builds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A machine holding 60 builds: a build removes the oldest 40 tags and leaves the day's stamp off, so the next
    build, the same hour, removes the rest but the newest 3; the one after that waits a day."""
    monkeypatch.setenv("DEPLOYKIT_CACHE_DIR", str(tmp_path / "cache"))
    held: dict[str, Mock] = {}
    for n in range(60):
        image = Mock(spec=docker.models.images.Image)
        image.tags, image.attrs = (
            [f"car-rental-backend:t{n:02}"],
            {"Created": f"2026-11-{1 + n // 10:02}T10:00:{n:02}Z"},
        )
        held[image.tags[0]] = image
    engine = Mock(spec=docker.DockerClient)
    engine.images = Mock(spec=docker.models.images.ImageCollection)
    engine.images.list.side_effect = lambda **_: list(held.values())
    engine.images.remove.side_effect = lambda tag, noprune: held.pop(tag)
    clock = FakeClock(start=datetime(2026, 12, 1, 9, tzinfo=UTC))
    ctx = Context(Mock(), Mock(), Mock(), clock, Reporter(io.StringIO(), tty=False, clock=clock), lambda: engine)
    step = BuildImage("backend", "Dockerfile", "car-rental-backend:t59", SPEC.name, "t59", "", keep_local=3)
    assert step._prune(ctx) == "; 40 tag(s) of older builds removed from this engine (keep_local_images = 3)"
    assert sorted(held)[0] == "car-rental-backend:t40"  # the oldest went first
    clock.advance(60)
    assert step._prune(ctx) == "; 17 tag(s) of older builds removed from this engine (keep_local_images = 3)"
    assert sorted(held) == ["car-rental-backend:t57", "car-rental-backend:t58", "car-rental-backend:t59"]
    clock.advance(60)
    step._prune(ctx)
    assert engine.images.list.call_count == 2


# -- this engine's build of the commit ------------------------------------------------------------------------------


def test_the_commit_built_from_another_environments_base_is_built_again_from_this_ones(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The sandbox and dev both push to a repository named car-rental-backend, so both build the local image
    car-rental-backend:<sha12>; the sandbox builds it FROM the local base, dev FROM python:3.11-slim. Deployed to the
    sandbox first, the commit's build here is the sandbox's: dev's build step skipped it as 'already built' and dev
    got the image FROM the sandbox's base, while its plan said FROM python:3.11-slim."""
    held: dict[str, Mock] = {}
    built: list[dict[str, str]] = []

    def build_image(client: Mock, *, tag: str, buildargs: dict[str, str], labels: dict[str, str], **_: object) -> Mock:
        built.append(buildargs)
        image = Mock(spec=docker.models.images.Image)
        image.attrs = {"Os": "linux", "Architecture": "amd64", "Config": {"Labels": dict(labels)}}
        held[tag] = image
        return Mock(image_id="sha256:" + "c" * 64, steps_total=21, steps_cached=21)

    def get(ref: str) -> Mock:
        if ref not in held:
            raise docker.errors.ImageNotFound("no such image")
        return held[ref]

    monkeypatch.setattr(images, "build_image", build_image)
    client = Mock(spec=docker.DockerClient)
    client.images = Mock(spec=docker.models.images.ImageCollection)
    client.images.get.side_effect = get
    clock = FakeClock(start=NOW)
    ctx = Context(Mock(), Mock(), Mock(), clock, Reporter(io.StringIO(), tty=False, clock=clock), lambda: client)
    sandbox = BuildImage("backend", "Dockerfile", "car-rental-backend:abc", SPEC.name, "abc", "", platform="")
    dev = dataclasses.replace(sandbox, base_image="python:3.11-slim", platform="linux/amd64")

    assert sandbox.run(ctx).status == "done"
    assert dev.run(ctx).status == "done"
    assert [b["BASE_IMAGE"] for b in built] == [SPEC.name, "python:3.11-slim"]
    assert dev.run(ctx).status == "skipped"  # dev's build, again: tags are immutable
    assert sandbox.run(ctx).status == "done" and len(built) == 3
