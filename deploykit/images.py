"""Docker plumbing: the engine client, build and push through the Docker SDK, with their streams.

The SDK reports build and push errors as chunks of the stream, not as exceptions; the two parsers
below turn those chunks into progress for people and into a :class:`StepFailed` that shows the failing
instruction and the tail of its log.
"""

from __future__ import annotations

import io
import os
import re
import shlex
import tarfile
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from deploykit import git, proxies
from deploykit.errors import ConfigError, EnvironmentNotReady, StepFailed, UsageError

if TYPE_CHECKING:  # the docker package is imported when an image is touched, not by every command (40 ms)
    import docker
    import docker.models.images

CERTS_DIR = "certs"  # where extra CA certificates land inside the build context
_STEP_RE = re.compile(r"^Step (\d+)/(\d+) : (.*)$")
_ANSI_RE = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
START_DOCKER = (
    "start the Docker engine: ./dev does it for you (root on Debian), or run "
    "'dockerd --bridge=none --iptables=false --ip-masq=false &' as root, or start Docker Desktop"
)


def docker_client(timeout: int = 300) -> docker.DockerClient:
    """A client for the local Docker engine, or EnvironmentNotReady (exit 2) saying how to start one."""
    import docker.errors

    where = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    try:
        client = docker.from_env(timeout=timeout)
        client.ping()
    except docker.errors.DockerException as exc:
        raise EnvironmentNotReady(
            f"the Docker engine is not answering at {where}: {_short(exc)}", next_step=START_DOCKER
        ) from None
    except ValueError as exc:  # DOCKER_HOST that is no address (tcp://host:abc, a port out of range)
        raise UsageError(
            f"DOCKER_HOST={where!r} is not an address of a Docker engine: {_short(exc)}",
            next_step="fix DOCKER_HOST, or unset it",
        ) from None
    return client


_ARCH_ALIASES = {"x86_64": "amd64", "aarch64": "arm64"}  # as `uname -m` says them, which an engine may report


def platform_of(image: docker.models.images.Image) -> str:
    """The platform an image on this engine is for, as ``os/architecture`` (``linux/amd64``)."""
    attrs = image.attrs if isinstance(image.attrs, dict) else {}
    return platform_name(attrs.get("Os"), attrs.get("Architecture"))


def is_for(image: docker.models.images.Image, platform: str) -> bool:
    """Whether ``image`` is for ``platform`` (``""``: this engine's own, so any image here does)."""
    return not platform or platform_of(image) == platform


def engine_platform(client: docker.DockerClient) -> str:
    """The platform of the Docker engine's own machine (what it builds and runs natively)."""
    version = client.version()
    return platform_name(version.get("Os"), version.get("Arch"))


def platform_name(os_name: object, arch: object) -> str:
    """``os/architecture`` as Docker names a platform (``linux/amd64``), from an OS and an architecture as an engine, a
    registry or an image config says them (``x86_64`` is ``amd64``; none: ``linux``, ``unknown``)."""
    arch = str(arch or "unknown")
    return f"{os_name or 'linux'}/{_ARCH_ALIASES.get(arch, arch)}"


def image_exists(client: docker.DockerClient, ref: str) -> bool:
    return local_image(client, ref) is not None


def local_image(client: docker.DockerClient, ref: str) -> docker.models.images.Image | None:
    """The image ``ref`` names on this engine, or None."""
    import docker.errors

    try:
        return client.images.get(ref)
    except docker.errors.ImageNotFound:
        return None


def pull_again(
    image: docker.models.images.Image, ref: str, after_days: float, now: datetime, platform: str = ""
) -> str | None:
    """Why this engine's copy of the pulled base image ``ref`` is to be pulled again (for another platform than
    ``platform``, older than ``after_days``, or pulled at a time it does not know); None when it is recent enough,
    ``after_days`` is 0, or ``ref`` names a digest (that never changes). Its age is its ``LastTagTime``, which
    :func:`pull_stamped` sets."""
    if not is_for(image, platform):
        return f"this copy is for {platform_of(image)}, and images are built for {platform} ([build] platform)"
    if not after_days or "@" in ref:
        return None
    stamped = ((image.attrs.get("Metadata") or {}) if isinstance(image.attrs, dict) else {}).get("LastTagTime")
    moment = created(stamped)
    if moment is None or moment.year < 2000:  # never tagged here (Docker says 0001-01-01): pulled by hand
        return "when this copy was pulled is not known"
    age = now - moment
    if age <= timedelta(days=after_days):
        return None
    return (
        f"this copy was pulled {age / timedelta(days=1):.0f} days ago (pull_after_days = {after_days:g}): the "
        "security updates its publisher built since go in"
    )


def pull_stamped(client: docker.DockerClient, ref: str, platform: str | None = None) -> docker.models.images.Image:
    """Pull ``ref`` (for ``platform``: of a multi-platform image, that one's), then tag it again with its own name,
    so its ``LastTagTime`` says when it was pulled (a digest is not stamped: it is never pulled again)."""
    import docker.utils

    image = client.images.pull(ref, platform=platform)
    if "@" not in ref:
        repository, tag = docker.utils.parse_repository_tag(ref)
        image.tag(repository, tag or "latest")
    return image


def created(stamp: object) -> datetime | None:
    """A time as Docker gives it (RFC 3339 with nanoseconds, ``2026-11-29T17:00:00.123456789Z``: an image's
    ``Created``, its ``Metadata.LastTagTime``) as a datetime; None when it is not one."""
    found = _RFC3339.fullmatch(stamp.strip()) if isinstance(stamp, str) else None
    if found is None:
        return None
    zone = found["zone"] if found["zone"] not in (None, "Z", "z") else "+00:00"
    try:
        return datetime.fromisoformat(found["second"] + zone)
    except ValueError:
        return None


_RFC3339 = re.compile(r"(?P<second>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.\d+)?(?P<zone>[Zz]|[+-]\d\d:\d\d)?")


# -- build ----------------------------------------------------------------------------------------


GIT_EXCLUDED = (".git", "**/.git")  # .dockerignore patterns: a .git file or folder at the top or at any depth


def build_context(context: Path, dockerfile: str, extra_ca_dir: Path | None) -> io.BytesIO:
    """The build context as a tar: ``context`` less its .dockerignore and any ``.git``, plus the extra CA certificates.
    In a git work tree, only what git tracks or would track goes (and the Dockerfile): a file it ignores (a ``.env``
    beside the code, a local settings module) went into an image named after a commit that does not hold it, so a CI
    build of that commit differed, and a secret shipped; the Lambda zips leave such files out the same way.

    The certificates go under ``certs/`` in the context only (never into the work tree), so images
    trust a corporate TLS proxy and pip inside ``docker build`` can reach the package index.
    """
    from docker.utils.build import exclude_paths

    if not (context / dockerfile).is_file():
        raise UsageError(f"no {dockerfile} in {context}", next_step="fix [build] context / dockerfile in deploy.toml")
    ignore = context / ".dockerignore"
    patterns = (
        [p.strip() for p in ignore.read_text().splitlines() if p.strip() and not p.startswith("#")]
        if (ignore.is_file())
        else []
    )
    # .git is never sent, whatever the .dockerignore says (its own or a user's, last so no !.git brings it back): a
    # submodule's folder holds a .git file (gitdir: ../.git/modules/<name>) pointing outside the context, a clone's a
    # .git folder with its history; neither is the commit the image is named after
    patterns += GIT_EXCLUDED
    seen = git.seen_paths(context)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for rel in sorted(exclude_paths(str(context), patterns, dockerfile=dockerfile)):
            if rel.split("/", 1)[0] == CERTS_DIR and rel != CERTS_DIR:
                continue  # certificates come from extra_ca_dir below, never from the tree
            if seen is not None and rel != dockerfile and not seen(rel):
                continue
            tar.add(str(context / rel), arcname=rel, recursive=False)
        if CERTS_DIR not in tar.getnames():
            info = tarfile.TarInfo(CERTS_DIR)
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(info)
        folders = {CERTS_DIR}
        for cert in extra_ca_certificates(extra_ca_dir):
            assert extra_ca_dir is not None
            name = f"{CERTS_DIR}/{ca_name(cert, extra_ca_dir)}"  # a subfolder's file keeps its folder: no collision
            for parent in reversed(Path(name).parents[:-2]):
                if str(parent) not in folders:
                    folders.add(str(parent))
                    info = tarfile.TarInfo(str(parent))
                    info.type, info.mode = tarfile.DIRTYPE, 0o755
                    tar.addfile(info)
            data = cert.read_bytes()
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
    buffer.seek(0)
    return buffer


PEM_MARKS = (b"-----BEGIN CERTIFICATE-----", b"-----BEGIN TRUSTED CERTIFICATE-----")


def extra_ca_certificates(folder: Path | None) -> list[Path]:
    """The ``*.crt`` files of ``folder`` and its subfolders (update-ca-certificates reads only that suffix, and only
    PEM). A file that is no PEM certificate would be skipped inside the image without a word, and pip behind a TLS
    proxy then fail on a CA the user put there: ConfigError naming it, with the command that converts it."""
    if folder is None or not folder.is_dir():
        return []
    found = sorted(p for p in folder.rglob("*.crt") if p.is_file())
    for cert in found:
        try:
            data = cert.read_bytes()
        except OSError as exc:
            raise ConfigError(
                f"{cert} in [build] extra_ca_dir cannot be read: {exc.strerror}",
                next_step=f"make it readable (chmod a+r {shlex.quote(str(cert))}), or move it out of {folder}",
            ) from None
        if not any(mark in data for mark in PEM_MARKS):
            der = data[:1] == b"\x30"  # an ASN.1 SEQUENCE: a DER-encoded certificate
            quoted, pem = shlex.quote(str(cert)), shlex.quote(f"/tmp/{cert.stem}.pem")
            raise ConfigError(
                f"{cert} in [build] extra_ca_dir is not a PEM certificate ("
                + ("binary: DER-encoded, it seems" if der else "no -----BEGIN CERTIFICATE----- line")
                + "): update-ca-certificates would skip it inside the image without a word, and the image would not "
                "trust that CA (pip behind a TLS proxy fails with CERTIFICATE_VERIFY_FAILED)",
                next_step=(
                    f"convert it to PEM: openssl x509 -inform DER -in {quoted} -out {pem} && mv {pem} {quoted}"
                    if der
                    else f"replace it with the CA's PEM file, or move it out of {folder}"
                )
                + ' (or extra_ca_dir = "" in [build] of deploy.toml for no extra CA), then rerun',
            )
    return found


def ca_name(cert: Path, folder: Path) -> str:
    """Where ``cert`` of ``folder`` goes among the image's extra CA certificates: its path under ``folder``, so that
    two files of one name in two subfolders are both kept (update-ca-certificates reads subfolders)."""
    return cert.relative_to(folder).as_posix()


@dataclass
class BuildStream:
    """Consumes ``docker build`` chunks: progress out, the image id, and errors with context."""

    say: Callable[[str], None]
    status: Callable[[str], None]
    tail: deque[str] = field(default_factory=lambda: deque(maxlen=25))
    instruction: str = ""
    steps_total: int = 0
    steps_cached: int = 0
    image_id: str = ""

    def feed(self, chunk: dict[str, Any]) -> None:
        if "error" in chunk or "errorDetail" in chunk:
            detail = chunk.get("errorDetail") or {}
            message = str(detail.get("message") or chunk.get("error") or "unknown build error").strip()
            where = f" at '{self.instruction}'" if self.instruction else ""
            tail = "\n".join(f"    | {line}" for line in self.tail)
            raise StepFailed(
                f"docker build failed{where}: {message}" + (f"\n  last lines of its log:\n{tail}" if tail else ""),
                next_step="fix the failing instruction or the source it uses, then rerun the same command "
                "(inv build builds alone)",
            )
        aux = chunk.get("aux")
        if isinstance(aux, dict) and aux.get("ID"):
            self.image_id = str(aux["ID"])
        text = chunk.get("stream")
        if not isinstance(text, str):
            return
        for raw in _ANSI_RE.sub("", text).splitlines():
            line = raw.rstrip()
            if not line:
                continue
            step = _STEP_RE.match(line)
            if step:
                self.instruction = step.group(3)
                self.steps_total = int(step.group(2))
                self.tail.clear()
                self.say(f"  {line}")
                self.status(f"step {step.group(1)}/{step.group(2)}")
                continue
            if line.strip() == "---> Using cache":
                self.steps_cached += 1
                continue
            self.tail.append(line)
            if line.lstrip().startswith("--->") or line.startswith(("Successfully", "Removing intermediate")):
                continue
            self.status(line.strip()[:80])


def _has_proxies(client: docker.DockerClient) -> bool:
    """Whether ``~/.docker/config.json`` names proxies for the engine (as the docker SDK read it, for its builds)."""
    return bool(getattr(getattr(client.api, "_proxy_configs", None), "get_environment", dict)())


def build_image(
    client: docker.DockerClient,
    *,
    context: Path,
    dockerfile: str,
    tag: str,
    buildargs: dict[str, str],
    labels: dict[str, str],
    extra_ca_dir: Path | None,
    say: Callable[[str], None],
    status: Callable[[str], None],
    platform: str | None = None,
    environ: Mapping[str, str] = os.environ,
) -> BuildStream:
    """Build ``tag`` from ``context`` on the engine (host network: no bridge here), for ``platform``; the proxy
    settings of ``environ`` go along as Docker's predefined build arguments (:func:`proxies.build_args`)."""
    import docker.errors

    fileobj = build_context(context, dockerfile, extra_ca_dir)
    stream = BuildStream(say, status)
    try:
        chunks: Iterable[dict[str, Any]] = client.api.build(
            fileobj=fileobj,
            custom_context=True,
            dockerfile=dockerfile,
            tag=tag,
            buildargs={**proxies.build_args(environ, _has_proxies(client)), **buildargs},
            labels=labels,
            network_mode="host",
            rm=True,
            forcerm=True,
            pull=False,
            decode=True,
            platform=platform,
        )
        for chunk in chunks:
            stream.feed(chunk)
    except docker.errors.APIError as exc:
        raise StepFailed(
            f"docker build was refused by the engine: {_short(exc)}",
            next_step="check the Dockerfile and the base image, then rerun the same command (inv build builds alone)",
        ) from None
    if not stream.image_id:
        stream.image_id = str(client.images.get(tag).id)
    return stream


# -- push -----------------------------------------------------------------------------------------


@dataclass
class PushStream:
    """Consumes ``docker push`` chunks: per-layer progress, the pushed digest, errors."""

    say: Callable[[str], None]
    status: Callable[[str], None]
    layers: dict[str, str] = field(default_factory=dict)
    sizes: dict[str, tuple[int, int]] = field(default_factory=dict)
    digest: str = ""
    size: int = 0

    def feed(self, chunk: dict[str, Any]) -> None:
        if "error" in chunk or "errorDetail" in chunk:
            detail = chunk.get("errorDetail") or {}
            message = str(detail.get("message") or chunk.get("error") or "unknown push error").strip()
            raise push_failed("docker push", message, message)
        aux = chunk.get("aux")
        if isinstance(aux, dict) and aux.get("Digest"):
            self.digest, self.size = str(aux["Digest"]), int(aux.get("Size", 0))
            return
        layer, state = chunk.get("id"), str(chunk.get("status", ""))
        if not layer or not state:
            return
        previous = self.layers.get(layer)
        self.layers[layer] = state
        detail = chunk.get("progressDetail") or {}
        if detail.get("total"):
            self.sizes[layer] = (int(detail.get("current", 0)), int(detail["total"]))
        if state != previous and state in ("Pushed", "Layer already exists", "Mounted from"):
            size = self.sizes.get(layer, (0, 0))[1]
            sized = f" ({size / 1e6:.1f} MB)" if size else ""
            verb = "pushed" if state == "Pushed" else "already in the registry"
            self.say(f"  layer {layer[:12]} {verb}{sized}")
        self.status(self.progress())

    def progress(self) -> str:
        done = sum(
            1 for s in self.layers.values() if s in ("Pushed", "Layer already exists") or s.startswith("Mounted")
        )
        moving = [layer for layer, s in self.layers.items() if s == "Pushing"]
        current = sum(self.sizes.get(layer, (0, 0))[0] for layer in moving)
        total = sum(self.sizes.get(layer, (0, 0))[1] for layer in moving)
        text = f"layers {done}/{len(self.layers)} done"
        if moving:
            text += f", {len(moving)} pushing {current / 1e6:.1f}/{total / 1e6:.1f} MB"
        return text


# What the engine says when the registry does not answer: nothing listens (refused, no such host, a timeout), or
# a proxy in front of it answers for it (the sandbox's registry front, a load balancer: 502, 503, 504).
_UNREACHABLE = (
    "connection refused",
    "no such host",
    "dial tcp",
    "i/o timeout",
    "502 bad gateway",
    "503 service unavailable",
    "504 gateway timeout",
)
REGISTRY_DOWN_NEXT_STEP = (
    "the registry is not reachable: start it (the sandbox's: inv sandbox.up; inv sandbox.status shows its parts) "
    "or check the network to it, then rerun the same command: the image is already built and a push resumes"
)


def registry_unreachable(message: str) -> bool:
    """Whether a Docker engine's error says the registry did not answer (rather than refused or failed)."""
    lowered = message.lower()
    return any(marker in lowered for marker in _UNREACHABLE)


BUILD_LABEL = "io.deploykit.git-sha"  # on every image deploykit builds: the commit it is made from
BASE_LABEL = "org.opencontainers.image.base.name"  # on every image deploykit builds: the base it is built FROM


def labels_of(image: docker.models.images.Image) -> dict[str, str]:
    """The labels of an image on this engine ({} when it has none)."""
    attrs = image.attrs if isinstance(image.attrs, dict) else {}
    return dict((attrs.get("Config") or {}).get("Labels") or {})


def prune_builds(
    client: docker.DockerClient, repository: str, keep: int, current: str, limit: int | None = None
) -> list[str]:
    """Remove from this engine the tags of the older builds of ``repository`` (deploykit's images of it, by
    :data:`BUILD_LABEL`: the local name and the registry's, ``127.0.0.1:5000/car-rental-backend:TAG`` or an ECR
    repository's), keeping the ``keep`` newest builds and ``current``; returns the tags removed. An image goes with
    its last tag (with the build steps only it used); one a container uses, running or stopped, keeps it (the engine
    refuses: skipped). Tags of other repositories and other images are never touched. ``limit``: at most that many
    tags removed (the oldest builds' first)."""
    import docker.errors

    builds = []
    for image in client.images.list(filters={"label": BUILD_LABEL}):
        tags = [tag for tag in image.tags if _repository_part(tag) == repository]
        if tags:
            stamp = image.attrs.get("Created")
            when = created(stamp)  # to the second; its fraction (as Docker writes it) orders builds within one
            builds.append((when.timestamp() if when else 0.0, str(stamp), image, tags))
    builds.sort(key=lambda found: found[:2], reverse=True)
    removed: list[str] = []
    for _, _, image, tags in reversed(builds[keep:]):
        if current in image.tags:
            continue
        for tag in tags:
            if limit is not None and len(removed) >= limit:
                return removed
            try:
                client.images.remove(tag, noprune=False)
            except docker.errors.APIError:  # a container uses it (409), or it went meanwhile
                continue
            removed.append(tag)
    return removed


def _repository_part(tag: str) -> str:
    """``repository`` of ``[registry/]repository:tag``, the registry left out."""
    name = split_registry(tag)[1]
    return name.rsplit(":", 1)[0] if ":" in name.rsplit("/", 1)[-1] else name


def split_registry(ref: str) -> tuple[str, str]:
    """An image reference → (its registry host, "" when it names none, the rest): Docker's rule, the first path part
    is a host when it has a dot or a port, or is ``localhost`` (``127.0.0.1:5000/repo:tag`` → ``127.0.0.1:5000``)."""
    first, sep, rest = ref.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost"):
        return first, rest
    return "", ref


def registry_host(ref: str) -> str:
    """The registry part of an image reference; ``docker.io`` when it names none."""
    return split_registry(ref)[0] or "docker.io"


def _push_next_step(message: str) -> str:
    lowered = message.lower()
    if registry_unreachable(lowered):
        return REGISTRY_DOWN_NEXT_STEP
    if "unauthorized" in lowered or "denied" in lowered or "authentication" in lowered:
        return "refresh the AWS credentials of this environment (aws sso login) and rerun: inv push"
    if "tag invalid" in lowered or "immutable" in lowered:
        return "the tag already exists with other content (tags are immutable): commit and rebuild"
    return "rerun: inv push (a push resumes; layers already there are skipped)"


def remote_digest(client: docker.DockerClient, ref: str, auth: dict[str, str] | None) -> str | None:
    """The digest the registry holds for ``ref``, or None when the tag is not there."""
    found = remote_image(client, ref, auth)
    return found[0] if found else None


def remote_image(
    client: docker.DockerClient, ref: str, auth: dict[str, str] | None
) -> tuple[str, tuple[str, ...]] | None:
    """The digest the registry holds for ``ref`` and the platforms it is for (``linux/amd64``; of an image index,
    each of its images'), or None when the tag is not there."""
    import docker.errors

    try:
        answer = client.api.inspect_distribution(ref, auth_config=auth)
    except docker.errors.APIError as exc:
        text = _short(exc).lower()
        if exc.status_code in (401, 404) or "not found" in text or "manifest unknown" in text:
            if "unauthorized" in text and "not found" not in text and "manifest unknown" not in text:
                raise StepFailed(
                    f"the registry refused our credentials for {ref}: {_short(exc)}",
                    next_step="refresh the AWS credentials of this environment and rerun: inv push",
                ) from None
            return None
        if registry_unreachable(text):
            raise StepFailed(
                f"the registry {registry_host(ref)} is not answering ({_short(exc)}): cannot tell whether {ref} is "
                "in it",
                next_step=REGISTRY_DOWN_NEXT_STEP,
            ) from None
        raise StepFailed(
            f"cannot ask the registry about {ref}: {_short(exc)}",
            next_step=_push_next_step(text),
        ) from None
    platforms = tuple(platform_name(p.get("os"), p.get("architecture")) for p in answer.get("Platforms") or ())
    return str(answer["Descriptor"]["digest"]), platforms


def push_image(
    client: docker.DockerClient,
    *,
    repository: str,
    tag: str,
    auth: dict[str, str] | None,
    say: Callable[[str], None],
    status: Callable[[str], None],
) -> PushStream:
    """Push ``repository:tag`` (already tagged locally) and return the stream with its digest."""
    import docker.errors

    stream = PushStream(say, status)
    try:
        for chunk in client.api.push(repository, tag=tag, stream=True, decode=True, auth_config=auth):
            stream.feed(chunk)
    except docker.errors.APIError as exc:
        raise push_failed(f"docker push to {registry_host(repository)}", str(exc), _short(exc)) from None
    if not stream.digest:
        raise StepFailed(
            f"docker push of {repository}:{tag} ended without a digest",
            next_step="rerun: inv push (a push resumes; layers already there are skipped)",
        )
    return stream


def push_failed(what: str, message: str, shown: str) -> StepFailed:
    """A failed push, said as ``what failed[, the registry is not answering]: shown``, with its next step
    chosen from the engine's whole ``message``."""
    down = ", the registry is not answering" if registry_unreachable(message) else ""
    return StepFailed(f"{what} failed{down}: {shown}", next_step=_push_next_step(message))


def _short(exc: BaseException) -> str:
    import docker.errors

    if isinstance(exc, docker.errors.APIError) and exc.explanation:
        return str(exc.explanation)
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
