"""deploykit.proxies: this machine listed in NO_PROXY when a proxy is named; the proxy settings as the build's
arguments."""

from __future__ import annotations

import io
from pathlib import Path
from unittest.mock import Mock

import docker
import pytest

from deploykit import images, proxies


@pytest.mark.parametrize(
    ("environ", "listed"),
    [
        ({"HTTPS_PROXY": "http://proxy:3128"}, "localhost,127.0.0.1,::1"),
        ({"http_proxy": "http://proxy:3128", "no_proxy": "127.0.0.1"}, "127.0.0.1,localhost,::1"),
        # each variable with what either listed: urllib and requests read the lower case one first
        (
            {"ALL_PROXY": "socks5://p", "NO_PROXY": ".corp", "no_proxy": "db.local, .corp"},
            ".corp,db.local,localhost,127.0.0.1,::1",
        ),
    ],
)
def test_a_named_proxy_gets_this_machine_in_no_proxy(environ: dict[str, str], listed: str) -> None:
    proxies.bypass_loopback(environ)
    assert environ["NO_PROXY"] == environ["no_proxy"] == listed


@pytest.mark.parametrize(
    "environ", [{}, {"NO_PROXY": "corp"}, {"HTTP_PROXY": ""}, {"HTTPS_PROXY": "http://p", "no_proxy": "*"}]
)
def test_no_proxy_or_a_proxy_bypassed_for_all_changes_nothing(environ: dict[str, str]) -> None:
    before = dict(environ)
    proxies.bypass_loopback(environ)
    assert environ == before


def test_the_build_gets_the_proxy_settings_as_dockers_predefined_arguments(tmp_path: Path) -> None:
    """pip inside the build had no way out behind a proxy: the shell's settings never reached it."""
    (tmp_path / "Dockerfile").write_text("FROM scratch\n")
    client = Mock(spec=docker.DockerClient)
    client.api = Mock(spec=docker.APIClient)
    client.api.build.return_value = iter([{"aux": {"ID": "sha256:" + "a" * 64}}])
    environ = {"HTTPS_PROXY": "http://u:p@proxy:3128", "no_proxy": "localhost", "PATH": "/bin", "HTTP_PROXY": ""}
    images.build_image(
        client,
        context=tmp_path,
        dockerfile="Dockerfile",
        tag="app:abc",
        buildargs={"GIT_SHA": "abc"},
        labels={},
        extra_ca_dir=None,
        say=io.StringIO().write,
        status=io.StringIO().write,
        environ=environ,
    )
    assert client.api.build.call_args.kwargs["buildargs"] == {
        "HTTPS_PROXY": "http://u:p@proxy:3128",
        "no_proxy": "localhost",
        "GIT_SHA": "abc",
    }
