"""The local base image: built from the suite with its updates and security updates, and rebuilt when its spec
changes or once it is older than max_age_days (Docker's engine faked with Mock(spec=...))."""

from __future__ import annotations

import dataclasses
import io
import tomllib
from datetime import UTC, datetime, timedelta
from pathlib import Path
from unittest.mock import Mock

import docker
import docker.errors
import docker.models.images
import pytest

from deploykit import base_image
from deploykit.app_chain import EnsureBaseImage
from deploykit.clock import FakeClock
from deploykit.config import BaseImageSpec, parse_config
from deploykit.errors import ConfigError
from deploykit.output import Reporter
from deploykit.plan import Context
from tests.conftest import REPO

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
SPEC = BaseImageSpec()


def engine(spec: BaseImageSpec | None, built: datetime | str | None = None) -> Mock:
    """A Docker engine holding the base image built from ``spec`` at ``built`` (none when ``spec`` is None)."""
    client = Mock(spec=docker.DockerClient)
    client.images = Mock(spec=docker.models.images.ImageCollection)
    if spec is None:
        client.images.get.side_effect = docker.errors.ImageNotFound("no such image")
        return client
    image = Mock(spec=docker.models.images.Image)
    stamp = built.strftime("%Y-%m-%dT%H:%M:%S.123456789Z") if isinstance(built, datetime) else built
    image.attrs = {"Created": stamp, "Config": {"Labels": {base_image.SPEC_LABEL: base_image.spec_hash(spec, None)}}}
    client.images.get.return_value = image
    return client


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
    assert base_image.created("2026-11-29T08:32:24.15606724Z") == datetime(2026, 11, 29, 8, 32, 24, tzinfo=UTC)
    assert base_image.created("2026-11-29T17:00:00+01:00") == datetime(2026, 11, 29, 16, 0, tzinfo=UTC)
    for bad in ("", "garbage", "2026-13-29T17:00:00Z", None, 17):
        assert base_image.created(bad) is None


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
    raw["build"]["base"]["max_age_days"] = -1
    with pytest.raises(ConfigError, match=r"build\.base\.max_age_days must be 0"):
        parse_config(raw, Path("deploy.toml"))
