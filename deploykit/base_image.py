"""A local Debian/Python base image, for machines that cannot pull one (no Docker Hub, a TLS proxy).

``mmdebstrap`` writes a minimal Debian root file system as a tar to its stdout; the Docker SDK imports
that stream as an image. The host's extra CA certificates are copied in and trusted, so pip inside a
``docker build`` FROM this image works behind a TLS-intercepting proxy. The image carries a label
with the hash of what it was built from; it is rebuilt when that changes, when it is older than
``max_age_days`` (a week by default: the Debian security updates published since go in), or on ``--force``.
It is built from the suite, its ``-updates`` and its ``-security`` suites (``[build.base]``), so the image
has the security fixes of the day it was built, not only those of the suite's last point release.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shlex
import shutil
import subprocess
import threading
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from deploykit.config import BaseImageSpec
from deploykit.errors import EnvironmentNotReady, StepFailed
from deploykit.images import ca_name, created, extra_ca_certificates, local_image

if TYPE_CHECKING:  # imported when an image is touched (deploykit.images)
    import docker

SPEC_LABEL = "io.deploykit.base-spec"
CA_ENV = [
    "SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt",
    "REQUESTS_CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt",
    "PIP_CERT=/etc/ssl/certs/ca-certificates.crt",
]


# Debian 12's init-system-helpers depends on "usrmerge | usr-is-merged": apt takes usrmerge, and with it perl (46 MB,
# a quarter of the image, pushed and pulled with every image built FROM it). mmdebstrap's own hook makes /usr merged
# and installs usr-is-merged instead (for a suite that has it). Part of the spec's hash: a base built without it is
# built again once.
CA_HOOK_DIR = "usr/local/share/ca-certificates/deploykit"  # where the hook puts extra_ca_dir's certificates
MERGED_USR_HOOKS = Path("/usr/share/mmdebstrap/hooks/maybe-merged-usr")
_BUILD_FORMAT = "merged-usr-hook"


def spec_hash(spec: BaseImageSpec, extra_ca_dir: Path | None) -> str:
    digest = hashlib.sha256(repr((spec.suite, spec.sources(), sorted(spec.packages), _BUILD_FORMAT)).encode())
    for cert in extra_ca_certificates(extra_ca_dir):
        assert extra_ca_dir is not None
        digest.update(ca_name(cert, extra_ca_dir).encode() + b"\0" + cert.read_bytes())
    return digest.hexdigest()[:16]


def stale(client: docker.DockerClient, spec: BaseImageSpec, extra_ca_dir: Path | None, now: datetime) -> str | None:
    """Why the base image must be built (it is missing, was built from another spec or other certificates, or is
    older than ``spec.max_age_days``); None when it is current."""
    image = local_image(client, spec.name)
    if image is None:
        return "it is not on this Docker engine"
    labels = (image.attrs.get("Config") or {}).get("Labels") or {}
    if labels.get(SPEC_LABEL) != spec_hash(spec, extra_ca_dir):
        return "[build.base] or the CA certificates changed since it was built"
    built = created(image.attrs.get("Created"))
    if spec.max_age_days and built is not None and now - built > timedelta(days=spec.max_age_days):
        return (
            f"it was built {(now - built) / timedelta(days=1):.0f} days ago (max_age_days = {spec.max_age_days:g}): "
            "the Debian security updates published since go in"
        )
    return None


def mmdebstrap_command(spec: BaseImageSpec, extra_ca_dir: Path | None) -> list[str]:
    hooks = []
    certificates = extra_ca_certificates(extra_ca_dir)
    if certificates:
        assert extra_ca_dir is not None
        copies = []
        for cert in certificates:  # each by its path under the folder: two of one name in two subfolders both kept
            target = shlex.quote(f"{CA_HOOK_DIR}/{ca_name(cert, extra_ca_dir)}")
            copies.append(f'mkdir -p "$(dirname "$1/"{target})" && cp -- {shlex.quote(str(cert))} "$1/"{target}')
        hooks.append(" && ".join([*copies, 'chroot "$1" update-ca-certificates']))
    hooks.append('rm -rf "$1/var/lib/apt/lists/"* "$1/var/cache/apt/"*')
    command = [
        "mmdebstrap",
        "--variant=minbase",
        "--mode=auto",
        f"--include={','.join(spec.packages)}",
        '--aptopt=Acquire::Languages "none"',
        "--dpkgopt=path-exclude=/usr/share/doc/*",
        "--dpkgopt=path-exclude=/usr/share/man/*",
        "--dpkgopt=path-exclude=/usr/share/locale/*",
    ]
    command += [f"--customize-hook={hook}" for hook in hooks]
    if MERGED_USR_HOOKS.is_dir():
        command.append(f"--hook-dir={MERGED_USR_HOOKS}")
    return [*command, spec.suite, "-", *spec.sources()]


def build_base_image(
    client: docker.DockerClient,
    spec: BaseImageSpec,
    extra_ca_dir: Path | None,
    *,
    status: Callable[[str], None],
) -> str:
    """Build and import the base image; returns its id. Takes about a minute, once."""
    if shutil.which("mmdebstrap") is None:
        raise EnvironmentNotReady(
            "mmdebstrap is not installed (it builds the local base image)",
            next_step="run any command through ./dev (it installs it on Debian), or: apt-get install mmdebstrap",
        )
    repository, _, tag = spec.name.rpartition(":") if ":" in spec.name.split("/")[-1] else (spec.name, "", "latest")
    process = subprocess.Popen(mmdebstrap_command(spec, extra_ca_dir), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert process.stdout is not None and process.stderr is not None
    log: list[str] = []

    def follow_stderr() -> None:
        assert process.stderr is not None
        for raw in process.stderr:
            line = raw.decode(errors="replace").rstrip()
            log.append(line)
            if line.startswith("I:"):
                status(f"mmdebstrap {line[3:][:70]}")

    reader = threading.Thread(target=follow_stderr, daemon=True)
    reader.start()
    changes = [
        'CMD ["python3"]',
        "ENV LANG=C.UTF-8",
        *(f"ENV {pair}" for pair in CA_ENV),
        f"LABEL {SPEC_LABEL}={spec_hash(spec, extra_ca_dir)}",
    ]
    # the final tag is set only once mmdebstrap has succeeded; the staging tag is this build's own, so two builds at
    # once on one engine (two deploys finding the base a week old) never take each other's
    staging = f"{tag}-partial-{os.getpid()}-{threading.get_ident()}"
    import docker.errors  # the SDK's, once a build needs it (the module imports only its types)

    try:
        answer = client.api.import_image_from_stream(
            process.stdout, repository=repository, tag=staging, changes=changes
        )
    except BaseException as exc:  # the engine refused, its connection broke, an interrupt: mmdebstrap must not
        _stop(process)  # block for ever writing to a pipe nobody reads, which the wait below would wait for
        if not isinstance(exc, docker.errors.APIError):
            raise
        raise StepFailed(f"docker import of the base image failed: {exc}", next_step="rerun: inv base-image") from None
    finally:
        code = process.wait()
        reader.join(timeout=5)
    if code != 0:
        _remove(client, f"{repository}:{staging}")
        tail = "\n".join(f"    | {line}" for line in log[-15:])
        if any(line.startswith("E: command failed: ") and CA_HOOK_DIR in line for line in log):
            raise StepFailed(
                f"mmdebstrap failed (exit {code}) building {spec.name}, at its step that installs the CA certificates "
                f"of [build] extra_ca_dir ({extra_ca_dir}):\n{tail}",
                next_step=f"check that the *.crt files of {extra_ca_dir} can be read (ls -l "
                f"{shlex.quote(str(extra_ca_dir))}), or set extra_ca_dir in [build] of deploy.toml, then rerun: "
                "inv base-image",
            )
        raise StepFailed(
            f"mmdebstrap failed (exit {code}) building {spec.name}:\n{tail}",
            next_step=f"check that {' and '.join(dict.fromkeys(line.split()[1] for line in spec.sources()))} "
            "answer (apt-get update), then rerun: inv base-image (a mirror without the -updates and -security "
            "suites: set updates = false in [build.base])",
        )
    try:
        image = client.images.get(f"{repository}:{staging}")
    except docker.errors.ImageNotFound:
        raise StepFailed(
            f"the base image {spec.name} was not created: {str(answer)[-300:]}",
            next_step="rerun: inv base-image",
        ) from None
    image.tag(repository, tag)
    _remove(client, f"{repository}:{staging}")
    return str(image.id)


# seconds mmdebstrap has to end once asked (it unmounts what it mounted and removes its temporary tree) before it is
# killed
STOP_GRACE = 30.0


def _stop(process: subprocess.Popen[bytes]) -> None:
    """mmdebstrap ended before its time: asked first (SIGTERM; as root it bind-mounted /dev, /proc and /sys under its
    temporary folder, which its own handler unmounts and removes: SIGKILL left them), its pipe closed so that a write
    it is blocked in fails; killed only when it has not ended within :data:`STOP_GRACE` seconds."""
    process.terminate()
    if process.stdout is not None:
        with contextlib.suppress(OSError):
            process.stdout.close()
    try:
        process.wait(timeout=STOP_GRACE)
    except subprocess.TimeoutExpired:
        process.kill()


def _remove(client: docker.DockerClient, ref: str) -> None:
    import docker.errors

    with contextlib.suppress(docker.errors.APIError):
        client.images.remove(ref, noprune=True)
