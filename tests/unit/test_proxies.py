"""deploykit.proxies: this machine listed in NO_PROXY when a proxy is named; the proxy settings as the build's
arguments."""

from __future__ import annotations

import io
from pathlib import Path
from unittest.mock import Mock

import docker
import pytest

from deploykit import images, proxies

HERE = "localhost,127.0.0.1,::1,[::1]"


@pytest.mark.parametrize(
    ("environ", "listed"),
    [
        ({"HTTPS_PROXY": "http://proxy:3128"}, {"NO_PROXY": HERE, "no_proxy": HERE}),
        (
            {"http_proxy": "http://proxy:3128", "no_proxy": "127.0.0.1"},
            {"NO_PROXY": "127.0.0.1,localhost,::1,[::1]", "no_proxy": "127.0.0.1,localhost,::1,[::1]"},
        ),
        # each variable with what either listed: urllib and requests read the lower case one first
        (
            {"ALL_PROXY": "socks5://p", "NO_PROXY": ".corp", "no_proxy": "db.local, .corp"},
            {"NO_PROXY": f".corp,db.local,{HERE}", "no_proxy": f".corp,db.local,{HERE}"},
        ),
        # `*` is every host only as a variable's whole value (as clients read it): a `*` in a list is one more entry,
        # and a variable that is `*` stays so while the other, which a client may read first, gets this machine
        (
            {"HTTPS_PROXY": "http://p", "NO_PROXY": "corp,*"},
            {"NO_PROXY": f"corp,*,{HERE}", "no_proxy": f"corp,*,{HERE}"},
        ),
        (
            {"HTTPS_PROXY": "http://p", "NO_PROXY": "*", "no_proxy": "corp"},
            {"NO_PROXY": "*", "no_proxy": f"*,corp,{HERE}"},
        ),
    ],
)
def test_a_named_proxy_gets_this_machine_in_no_proxy(environ: dict[str, str], listed: dict[str, str]) -> None:
    proxies.bypass_loopback(environ)
    assert {k: environ[k] for k in ("NO_PROXY", "no_proxy")} == listed


@pytest.mark.parametrize(
    "environ",
    [{}, {"NO_PROXY": "corp"}, {"HTTP_PROXY": ""}, {"HTTPS_PROXY": "http://p", "no_proxy": " * ", "NO_PROXY": "*"}],
)
def test_no_proxy_or_a_proxy_bypassed_for_all_changes_nothing(environ: dict[str, str]) -> None:
    before = dict(environ)
    proxies.bypass_loopback(environ)
    assert environ == before


def test_the_build_gets_the_proxy_settings_as_dockers_predefined_arguments(tmp_path: Path) -> None:
    """pip inside the build had no way out behind a proxy: the shell's settings never reached it. Each goes in both
    cases (pip reads the lower case first); with proxies in ~/.docker/config.json (Docker's way: the address the
    engine reaches, which the docker SDK gives the build), the shell's are not given."""
    (tmp_path / "Dockerfile").write_text("FROM scratch\n")
    client = Mock(spec=docker.DockerClient)
    client.api = Mock(spec=docker.APIClient)
    client.api.build.return_value = iter([{"aux": {"ID": "sha256:" + "a" * 64}}])
    environ = {"HTTPS_PROXY": "http://u:p@proxy:3128", "no_proxy": "localhost", "PATH": "/bin", "HTTP_PROXY": ""}

    def built(environ: dict[str, str], configured: dict[str, str]) -> dict[str, str]:
        client.api._proxy_configs = Mock(get_environment=Mock(return_value=configured))
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
        return dict(client.api.build.call_args.kwargs["buildargs"])

    assert built(environ, {}) == {
        "HTTPS_PROXY": "http://u:p@proxy:3128",
        "https_proxy": "http://u:p@proxy:3128",
        "NO_PROXY": "localhost",
        "no_proxy": "localhost",
        "GIT_SHA": "abc",
    }
    assert built({"NO_PROXY": "corp"}, {}) == {"GIT_SHA": "abc"}  # no proxy in the shell
    assert built(environ, {"https_proxy": "http://host.docker.internal:3128"}) == {"GIT_SHA": "abc"}  # config.json's
