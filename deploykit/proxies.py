"""A proxy in the environment (``HTTP_PROXY``, ``HTTPS_PROXY``...): what the toolkit does with it.

Behind a corporate proxy those variables are set in every shell, and seldom a ``NO_PROXY`` naming this machine. Every
HTTP client deploykit uses (botocore, urllib, requests; a plugin's too) sends a call to ``127.0.0.1`` through the proxy
then: the sandbox's AWS, registry and load balancers answered with the proxy's 502, and the sandbox said its ports were
"taken by another program". So this machine's names are added to ``NO_PROXY`` before any client is made. The image
build gets the proxy settings too, as Docker's predefined build arguments: pip inside it has no other way out, and
Docker keeps these out of the image's history and its build cache's key (the image is the same, proxy or not).
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping

# the variables that name a proxy (each read in upper or lower case, the lower one first, as Python's clients do)
PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "FTP_PROXY", "ALL_PROXY")
NO_PROXY = ("NO_PROXY", "no_proxy")
# this machine: the sandbox's endpoints, the local registry (urllib matches "[::1]:4566" by its brackets' form)
LOOPBACK = ("localhost", "127.0.0.1", "::1", "[::1]")


def proxied(environ: Mapping[str, str]) -> bool:
    """Whether ``environ`` names a proxy."""
    return any(environ.get(name) or environ.get(name.lower()) for name in PROXY_VARIABLES)


def _entries(*values: str) -> list[str]:
    """The hosts of ``NO_PROXY`` values, once each, in order."""
    return list(dict.fromkeys(entry.strip() for value in values for entry in value.split(",") if entry.strip()))


def bypass_loopback(environ: MutableMapping[str, str]) -> None:
    """When ``environ`` names a proxy, list this machine in ``NO_PROXY`` and ``no_proxy`` both (each with what either
    listed: a client reads one or the other). Nothing changes without a proxy; a variable that is ``*`` (every host
    bypasses the proxy, as clients read it: the whole value) is left so."""
    if not proxied(environ):
        return
    listed = _entries(*(environ.get(name, "") for name in NO_PROXY))
    value = ",".join([*listed, *(host for host in LOOPBACK if host not in listed)])
    for name in NO_PROXY:
        if environ.get(name, "").strip() != "*":
            environ[name] = value


def build_args(environ: Mapping[str, str], configured: bool = False) -> dict[str, str]:
    """The proxy settings of ``environ`` as Docker's predefined build arguments, each in both cases (pip reads the
    lower case first); none when ``environ`` names no proxy, or when the engine's client has proxies of its own
    (``configured``: ``~/.docker/config.json``'s, which the docker SDK gives the build: Docker's documented way, and
    the address there is the one the engine reaches, where the shell's may be this machine's alone)."""
    if configured or not proxied(environ):
        return {}
    args: dict[str, str] = {}
    for upper in PROXY_VARIABLES:
        if value := environ.get(upper.lower()) or environ.get(upper):
            args[upper] = args[upper.lower()] = value
    if bypassed := ",".join(_entries(*(environ.get(name, "") for name in NO_PROXY))):
        args["NO_PROXY"] = args["no_proxy"] = bypassed
    return args
