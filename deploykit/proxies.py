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
# this machine: the sandbox's endpoints, the local registry
LOOPBACK = ("localhost", "127.0.0.1", "::1")
# Docker's predefined build arguments: usable in any RUN without an ARG line, and never in `docker history`
BUILD_ARGS = tuple(name for upper in (*PROXY_VARIABLES, "NO_PROXY") for name in (upper, upper.lower()))


def proxied(environ: Mapping[str, str]) -> bool:
    """Whether ``environ`` names a proxy."""
    return any(environ.get(name) or environ.get(name.lower()) for name in PROXY_VARIABLES)


def bypass_loopback(environ: MutableMapping[str, str]) -> None:
    """When ``environ`` names a proxy, list this machine in ``NO_PROXY`` and ``no_proxy`` both (each with what either
    listed: a client reads one or the other). Nothing changes without a proxy, or with ``NO_PROXY=*``."""
    if not proxied(environ):
        return
    entries = (entry.strip() for name in NO_PROXY for entry in environ.get(name, "").split(","))
    listed = list(dict.fromkeys(entry for entry in entries if entry))
    if "*" in listed:
        return
    value = ",".join([*listed, *(host for host in LOOPBACK if host not in listed)])
    for name in NO_PROXY:
        environ[name] = value


def build_args(environ: Mapping[str, str]) -> dict[str, str]:
    """The proxy settings of ``environ`` as Docker's predefined build arguments (those set, in the case set)."""
    return {name: environ[name] for name in BUILD_ARGS if environ.get(name)}
