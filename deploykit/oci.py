"""Copy an image from one registry to another by its bytes, over the registry's own API (OCI distribution).

Promotion (``promote_from``) puts into prod's repository the very image dev runs. Through the Docker engine
(pull, tag, push) the engine compresses the layers again on the push, and what it sends need not be the bytes dev
holds: another engine, another digest. Here the manifest and every blob go across unchanged, so prod's image has
dev's digest, and no Docker engine is needed. A blob the target already holds is not sent; within one registry
(two repositories of one ECR registry, with blob mounting on; the sandbox) it is mounted, not copied; the rest is
streamed, never held in memory.

This is the one place deploykit speaks HTTP to a registry itself (everything else about images goes through the
Docker engine): the engine has no call that copies an image between registries. A stack deploy also reads here
which platforms an image is for (:func:`image_platforms`), without a Docker engine. Its TLS trusts what boto3
trusts: ``AWS_CA_BUNDLE`` (a corporate proxy's CA), unless requests' own ``REQUESTS_CA_BUNDLE`` says otherwise.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode, urljoin, urlsplit, urlunsplit

from deploykit import images
from deploykit.errors import StepFailed, UsageError

if TYPE_CHECKING:  # imported when a registry is first spoken to (_requests), not by every command
    import requests

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
INDEXES = (OCI_INDEX, DOCKER_LIST)
MANIFESTS = (OCI_MANIFEST, DOCKER_MANIFEST)
ACCEPT = ", ".join((*MANIFESTS, *INDEXES))
CHUNK = 1 << 20
PARALLEL_BLOBS = 4
BLOB_RETRIES = (1.0, 3.0)  # seconds before each further try of a blob whose registry did not answer
_CHALLENGE_PARAM = re.compile(r'(\w+)="([^"]*)"')


class RegistryError(StepFailed):
    """A registry answered something other than what the copy needs (or did not answer)."""


class RegistryRefusal(RegistryError):
    """What the copy found, before it sent anything, that no rerun changes (the source image gone, one for another
    platform): a state to fix first, exit 2 as the other refusals, nothing copied."""

    exit_code = 2


class RegistryUnavailable(RegistryError):
    """A registry did not answer, or answered that it could not now (429, 5xx): worth another try."""


def is_loopback(host: str) -> bool:
    """Whether ``host`` (``127.0.0.1:5000``) is this machine: spoken to over plain HTTP, as Docker does."""
    name = host.rsplit(":", 1)[0] if not host.startswith("[") else host.split("]", 1)[0] + "]"
    return name in ("localhost", "[::1]") or name.startswith("127.")


@dataclass(frozen=True)
class Manifest:
    """A manifest as the registry holds it: its exact bytes (what its digest is of), media type and digest."""

    body: bytes
    media_type: str
    digest: str

    @property
    def data(self) -> dict[str, Any]:
        value = json.loads(self.body)
        return value if isinstance(value, dict) else {}

    @property
    def is_index(self) -> bool:
        return self.media_type in INDEXES

    def blobs(self) -> list[tuple[str, int]]:
        """(digest, size) of the config and layers of an image manifest (an index has none of its own)."""
        if self.is_index:
            return []
        data = self.data
        parts = [data.get("config") or {}, *(data.get("layers") or [])]
        return [(str(p["digest"]), int(p.get("size") or 0)) for p in parts if p.get("digest")]

    def children(self) -> list[dict[str, Any]]:
        """The image manifests an index lists (each with its digest and platform)."""
        return list(self.data.get("manifests") or []) if self.is_index else []


def _requests() -> Any:
    """The requests package, imported when a registry is first spoken to: not on every command's start (20 ms)."""
    import requests

    return requests


def _session() -> requests.Session:
    """A session whose TLS trusts what the command's AWS calls trust: ``AWS_CA_BUNDLE`` (boto3's variable: where a
    corporate proxy re-signs TLS, the one setting covers ECR's registry too), unless ``REQUESTS_CA_BUNDLE`` is set
    (requests reads that one itself)."""
    session: requests.Session = _requests().Session()
    bundle = os.environ.get("AWS_CA_BUNDLE")
    if bundle and not os.environ.get("REQUESTS_CA_BUNDLE"):
        session.verify = bundle
    return session


@dataclass
class Registry:
    """One registry host, with the credentials to use there (``user``, ``password``; None: anonymous). Answers a
    ``Bearer`` challenge (most registries) by asking its token service; ECR and the sandbox take Basic."""

    host: str
    credentials: tuple[str, str] | None = None
    timeout: float = 60.0
    session: requests.Session = field(default_factory=_session)
    _bearer: str | None = field(default=None, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    @property
    def base(self) -> str:
        return f"{'http' if is_loopback(self.host) else 'https'}://{self.host}"

    def url(self, repository: str, path: str) -> str:
        return f"{self.base}/v2/{repository}/{path}"

    # -- reading --------------------------------------------------------------------------------------------
    def manifest(self, repository: str, reference: str) -> Manifest | None:
        """The manifest ``reference`` (a tag or digest) names, or None when the registry has no such one."""
        answer = self.request("GET", self.url(repository, f"manifests/{reference}"), headers={"Accept": ACCEPT})
        if answer.status_code == 404:
            return None
        self.expect(answer, (200,), f"read the manifest {repository}:{reference}")
        body = answer.content
        digest = "sha256:" + hashlib.sha256(body).hexdigest()
        said = answer.headers.get("Docker-Content-Digest")
        if said and said != digest and said.startswith("sha256:"):
            raise RegistryError(
                f"{self.host} sent a manifest for {repository}:{reference} whose bytes are {digest}, not the "
                f"{said} it said",
                next_step="rerun; if it says so again, a proxy between here and the registry changes what it sends",
            )
        media_type = answer.headers.get("Content-Type", "").split(";", 1)[0].strip()
        if media_type not in (*MANIFESTS, *INDEXES):
            media_type = str(json.loads(body).get("mediaType") or media_type)
        if media_type not in (*MANIFESTS, *INDEXES):
            raise RegistryError(
                f"{repository}:{reference} on {self.host} is a {media_type or 'manifest of no known type'}, which "
                "cannot be copied (schema 2 and OCI images can)",
                next_step="push the image again with a current Docker or buildkit, then rerun",
            )
        return Manifest(body, media_type, digest)

    def blob_json(self, repository: str, digest: str) -> dict[str, Any]:
        """A small JSON blob (an image's config)."""
        answer = self.request("GET", self.url(repository, f"blobs/{digest}"))
        self.expect(answer, (200,), f"read the blob {digest[:19]} of {repository}")
        value = answer.json()
        return value if isinstance(value, dict) else {}

    def has_blob(self, repository: str, digest: str) -> bool:
        # not followed: a registry that keeps blobs elsewhere redirects to a URL signed for GET (ECR: to S3), which a
        # HEAD would be refused by; the redirect itself says the blob is there
        answer = self.request("HEAD", self.url(repository, f"blobs/{digest}"), allow_redirects=False)
        if answer.status_code == 404:
            return False
        self.expect(answer, (200, 302, 307), f"look for the blob {digest[:19]} in {repository}")
        return True

    def stream_blob(self, repository: str, digest: str) -> requests.Response:
        """The blob's bytes as a stream (ECR redirects to S3: followed, without our credentials)."""
        answer = self.request("GET", self.url(repository, f"blobs/{digest}"), stream=True)
        self.expect(answer, (200,), f"read the blob {digest[:19]} of {repository}")
        return answer

    # -- writing --------------------------------------------------------------------------------------------
    def start_upload(self, repository: str, digest: str, mount_from: str | None) -> str | None:
        """Begin putting the blob ``digest`` into ``repository``: None when the registry mounted it from
        ``mount_from`` (a repository of the same registry), else the upload's location."""
        params = {"mount": digest, "from": mount_from} if mount_from else {}
        answer = self.request("POST", self.url(repository, "blobs/uploads/"), params=params)
        if answer.status_code == 201 and mount_from:
            return None
        self.expect(answer, (202,), f"start an upload to {repository}")
        return urljoin(self.base + "/", answer.headers["Location"])

    def upload(self, location: str, digest: str, body: Iterator[bytes]) -> None:
        """Send the blob's bytes to the upload at ``location`` (one streamed PATCH, as ``docker push`` does), then
        close it under ``digest`` (the registry checks the bytes against it)."""
        answer = self.request(
            "PATCH", location, data=body, headers={"Content-Type": "application/octet-stream"}, retry=False
        )
        self.expect(answer, (202, 204), f"send the blob {digest[:19]}")
        location = urljoin(self.base + "/", answer.headers.get("Location") or location)
        answer = self.request("PUT", _with_query(location, digest=digest), headers={"Content-Length": "0"})
        self.expect(answer, (201,), f"close the upload of the blob {digest[:19]}")

    def put_manifest(self, repository: str, reference: str, manifest: Manifest) -> str:
        """Put ``manifest``'s exact bytes under ``reference``; the digest the registry says it stored."""
        answer = self.request(
            "PUT",
            self.url(repository, f"manifests/{reference}"),
            data=manifest.body,
            headers={"Content-Type": manifest.media_type},
        )
        self.expect(answer, (201, 200), f"put the manifest {repository}:{reference}")
        return answer.headers.get("Docker-Content-Digest") or manifest.digest

    # -- HTTP -----------------------------------------------------------------------------------------------
    def request(
        self, method: str, url: str, *, retry: bool = True, headers: Mapping[str, str] | None = None, **kwargs: Any
    ) -> requests.Response:
        """One call, authorized: Basic with the credentials, or the Bearer token a challenge asked for (fetched
        once, then reused). ``retry`` False: a body that streams cannot be sent twice, so no second try."""
        sent = dict(headers or {})
        try:
            answer = self.session.request(
                method, url, headers={**sent, **self._authorization()}, timeout=self.timeout, **kwargs
            )
            if answer.status_code == 401 and retry and self._answer_challenge(answer):
                answer = self.session.request(
                    method, url, headers={**sent, **self._authorization()}, timeout=self.timeout, **kwargs
                )
        except _requests().RequestException as exc:
            raise RegistryUnavailable(
                f"the registry {self.host} is not answering: {_reason(exc)}",
                next_step="check the network to it (the sandbox's registry: inv sandbox.status), then rerun the same "
                "command: blobs already copied are not sent again",
            ) from None
        return answer

    def _authorization(self) -> dict[str, str]:
        if self._bearer:
            return {"Authorization": f"Bearer {self._bearer}"}
        if self.credentials is not None:  # at once: ECR and the sandbox take it; others answer with a challenge
            user, password = self.credentials
            return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}
        return {}

    def _answer_challenge(self, answer: requests.Response) -> bool:
        """Take the credentials a 401's challenge asks for; False when there is nothing more to try."""
        scheme, _, rest = answer.headers.get("WWW-Authenticate", "").partition(" ")
        if scheme.lower() != "bearer":  # Basic: the credentials, if any, went with the call already
            return False
        params = dict(_CHALLENGE_PARAM.findall(rest))
        realm = params.pop("realm", "")
        if not realm:
            return False
        with self._lock:
            token = _requests().get(realm, params=params, auth=self.credentials, timeout=self.timeout)
            if token.status_code != 200:
                return False
            data = token.json()
            self._bearer = str(data.get("token") or data.get("access_token") or "") or None
        return self._bearer is not None

    def expect(self, answer: requests.Response, statuses: tuple[int, ...], doing: str) -> None:
        if answer.status_code in statuses:
            return
        detail = _error_detail(answer)
        if answer.status_code in (401, 403):
            raise RegistryError(
                f"{self.host} refused to let us {doing} ({answer.status_code}: {detail})",
                next_step="refresh the credentials of the environment that registry belongs to (aws sso login); "
                "copying needs ecr:BatchGetImage and ecr:GetDownloadUrlForLayer on the source repository, "
                "ecr:InitiateLayerUpload, ecr:UploadLayerPart, ecr:CompleteLayerUpload and ecr:PutImage on the target",
            )
        if answer.status_code in (429, 500, 502, 503, 504):
            raise RegistryUnavailable(
                f"the registry {self.host} is not answering: could not {doing} ({answer.status_code}: {detail})",
                next_step="rerun the same command once it answers: blobs already copied are not sent again",
            )
        raise RegistryError(
            f"{self.host} would not {doing}: {answer.status_code} {detail}",
            next_step="rerun the same command; if it fails again, the registry's message above says why",
        )


def _error_detail(answer: requests.Response) -> str:
    try:
        errors = answer.json().get("errors") or []
        text = "; ".join(f"{e.get('code', '')} {e.get('message', '')}".strip() for e in errors)
    except (ValueError, AttributeError):
        text = answer.text[:200]
    return text.strip() or answer.reason or "no reason given"


def _reason(exc: BaseException) -> str:
    text = str(exc)
    return text.splitlines()[0][:200] if text else type(exc).__name__


def _with_query(url: str, **params: str) -> str:
    parts = urlsplit(url)
    query = "&".join(filter(None, (parts.query, urlencode(params))))
    return urlunsplit(parts._replace(query=query))


# -- the copy -------------------------------------------------------------------------------------------------


@dataclass
class Copied:
    """What :func:`copy_image` did."""

    digest: str
    already: bool = False  # the tag was there, with this digest: nothing was sent
    there: str = ""  # the tag was there with another image (its digest): nothing was sent
    sent: int = 0  # blobs streamed across, and their bytes
    sent_bytes: int = 0
    mounted: int = 0  # blobs the registry mounted from the source repository
    present: int = 0  # blobs the target already held


def copy_image(
    source: Registry,
    source_repository: str,
    target: Registry,
    target_repository: str,
    tag: str,
    *,
    platform: str = "",
    say: Callable[[str], None] = lambda _line: None,
    status: Callable[[str], None] = lambda _text: None,
    sleep: Callable[[float], None] = time.sleep,
    before: Callable[[], None] = lambda: None,
) -> Copied:
    """Copy ``source_repository:tag`` to ``target_repository:tag``, byte for byte (same digest). A tag already in the
    target is left as it is (tags are immutable on ECR): :attr:`Copied.already` when it is this very image,
    :attr:`Copied.there` (its digest) when it is another. ``platform`` (``linux/amd64``; "": not checked): the
    image, or one image of an index, must be for it, else :class:`RegistryError` before anything is sent; so must
    the one a tag already in the target holds (the image its manifest's config names, or an image of its index),
    else UsageError (:func:`_check_kept`). A blob whose
    copy meets a registry that does not answer, or cannot now, is tried again (:data:`BLOB_RETRIES`, ``sleep``
    between). ``before`` is called once it is known that something is to be copied, before the first blob is sent:
    what it raises ends the copy there, nothing sent."""
    manifest = source.manifest(source_repository, tag)
    if manifest is None:
        raise RegistryRefusal(
            f"{source_repository}:{tag} is not in {source.host}, though its environment's task definition runs it",
            next_step="an image cleanup or a lifecycle rule may have deleted it: deploy it there again, then rerun",
        )
    existing = target.manifest(target_repository, tag)
    if existing is not None:
        if platform:  # kept as it is, so it must be for the platform as a copy would be
            _check_kept(target, target_repository, tag, existing, platform)
        if existing.digest == manifest.digest:
            return Copied(manifest.digest, already=True)
        return Copied(manifest.digest, there=existing.digest)
    images = [manifest] if not manifest.is_index else _children(source, source_repository, manifest)
    if platform:
        _check_platform(source, source_repository, tag, manifest, platform)
    before()
    done = Copied(manifest.digest)
    blobs = list(dict.fromkeys(blob for image in images for blob in image.blobs()))
    mount_from = source_repository if source.host == target.host else None
    progress = threading.Lock()

    def one(blob: tuple[str, int]) -> None:
        digest, size = blob
        for wait in (*BLOB_RETRIES, None):
            try:
                how = _copy_blob(source, source_repository, target, target_repository, digest, mount_from)
                break
            except RegistryUnavailable as exc:
                if wait is None:
                    raise
                say(f"  blob {digest.removeprefix('sha256:')[:12]}: {exc.message}; trying again in {wait:g} s")
                sleep(wait)
        with progress:
            if how == "present":
                done.present += 1
            elif how == "mounted":
                done.mounted += 1
            else:
                done.sent, done.sent_bytes = done.sent + 1, done.sent_bytes + size
            verb = {"present": "already there", "mounted": "mounted"}.get(how, "copied")
            say(f"  blob {digest.removeprefix('sha256:')[:12]} {verb} ({size / 1e6:.1f} MB)")
            status(f"blobs {done.present + done.mounted + done.sent}/{len(blobs)} done")

    with ThreadPoolExecutor(max_workers=PARALLEL_BLOBS) as pool:
        list(pool.map(one, blobs))  # the first failure is raised here
    for image in images if manifest.is_index else []:
        target.put_manifest(target_repository, image.digest, image)
    stored = target.put_manifest(target_repository, tag, manifest)
    if stored != manifest.digest:
        raise RegistryError(
            f"{target.host} stored {target_repository}:{tag} as {stored}, not as {manifest.digest} (the source's)",
            next_step="the registry rewrote the manifest: promotion needs one that stores it as sent",
        )
    return done


def _children(registry: Registry, repository: str, index: Manifest) -> list[Manifest]:
    found = []
    for child in index.children():
        manifest = registry.manifest(repository, str(child["digest"]))
        if manifest is None:  # before anything is sent: a state no rerun mends
            raise RegistryRefusal(
                f"{repository} on {registry.host} lists {child['digest'][:19]} in an index but does not hold it",
                next_step="push the image again, then rerun",
            )
        found.append(manifest)
    return found


def platform_of(config: Mapping[str, Any] | None) -> str:
    """``os/architecture`` of an image config, or of an index entry's ``platform``."""
    config = config or {}
    return images.platform_name(config.get("os"), config.get("architecture"))


def image_platforms(registry: Registry, repository: str, reference: str) -> list[str] | None:
    """The platforms (``linux/amd64``...) the image ``repository:reference`` is for, as the registry holds it (an
    index: each of its images'; an image: its config's); None when the registry has no such image."""
    manifest = registry.manifest(repository, reference)
    return None if manifest is None else _platforms(registry, repository, manifest)


def _platforms(registry: Registry, repository: str, manifest: Manifest) -> list[str]:
    if manifest.is_index:
        return [platform_of(child.get("platform")) for child in manifest.children()]
    return [platform_of(registry.blob_json(repository, str(manifest.data["config"]["digest"])))]


def _check_platform(registry: Registry, repository: str, tag: str, manifest: Manifest, platform: str) -> None:
    platforms = _platforms(registry, repository, manifest)
    if platform not in platforms:
        raise RegistryRefusal(
            f"{repository}:{tag} is for {', '.join(platforms) or 'no platform'}, not for {platform} ([build] "
            "platform, what the task definition runs): a task would not start from it",
            next_step="deploy with --unpromoted to build it here for the right platform, or set [build] platform",
        )


def _check_kept(registry: Registry, repository: str, tag: str, manifest: Manifest, platform: str) -> None:
    """UsageError when the image (or image index) ``repository:tag`` the target registry holds already, and a copy
    keeps, is not for ``platform``: as a push of it would be refused (app_chain.PushImage)."""
    platforms = _platforms(registry, repository, manifest)
    if platform not in platforms:
        held = ", ".join(platforms) or "no platform"
        raise UsageError(
            f"{registry.host}/{repository}:{tag} is in the registry already, for {held}, not for {platform} ([build] "
            "platform, what the task definition runs): a task would not start from it, and the tag is kept as it is "
            "(tags are immutable), so nothing was copied",
            next_step=f"deploy a new commit (a new tag) to the environment promoted from, then here; or, if nothing "
            f"runs {tag} here, delete that image from {repository} and rerun; if the tasks are to run "
            f"{platforms[0] if platforms else 'another platform'}, set [build] platform in deploy.toml",
        )


def _copy_blob(
    source: Registry,
    source_repository: str,
    target: Registry,
    target_repository: str,
    digest: str,
    mount_from: str | None,
) -> str:
    """``present``, ``mounted`` or ``sent``."""
    if target.has_blob(target_repository, digest):
        return "present"
    location = target.start_upload(target_repository, digest, mount_from)
    if location is None:
        return "mounted"
    answer = source.stream_blob(source_repository, digest)
    try:
        target.upload(location, digest, answer.iter_content(CHUNK))
    finally:
        answer.close()
    return "sent"
