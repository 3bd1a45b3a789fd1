"""ECR backed by the registry: images live in the CNCF distribution registry on 127.0.0.1, and ECR's API
answers for what that registry holds.

The distribution registry (``docker-registry serve``, started by ``inv sandbox.up``) listens on
``[sandbox] registry_backend_port``; clients never talk to it directly. They talk to the *registry
front* on ``registry_port``, a small streaming reverse proxy that adds what ECR does on its side.

What plain moto lacks, fixed here:

- ``registry_front``: a threaded HTTP reverse proxy on 127.0.0.1:``registry_port`` in front of the
  registry. Bodies stream in both directions (blobs can be hundreds of MB), chunked uploads pass
  through, ``Location`` headers that name the backend are rewritten to name the front.
- ``token_opens_the_registry``: GetAuthorizationToken hands out ``AWS:<password>`` (a random password
  made at install, kept in memory and in ``.sandbox/registry-password``, mode 0600) with the front as
  ``proxyEndpoint``; the front requires exactly that as HTTP Basic auth and answers 401 with a
  ``Basic`` challenge otherwise, so ``docker push`` without the token fails as it does on ECR. (moto
  answers GetAuthorizationToken in ``ECRResponse`` without asking the backend; that one method is
  wrapped to ask a backend that has its own answer, which only this sandbox's backend has.)
- ``repository_must_exist``: requests for a repository that ECR (moto) does not know are refused with
  404 NAME_UNKNOWN and ECR's message, so a push never creates a repository.
- ``tag_immutability``: in a repository whose imageTagMutability is IMMUTABLE (exclusion filters
  included), a manifest PUT that would move an existing tag to another digest is refused with 400
  TAG_INVALID and ECR's message; re-pushing the same manifest is accepted.
- ``repository_uri``: repositoryUri (DescribeRepositories, CreateRepository, CloudFormation's
  ``RepositoryUri``) is ``127.0.0.1:<registry_port>/<name>``, where ``docker push`` really goes.
- ``images_from_the_registry``: ListImages, DescribeImages and BatchGetImage read the registry (tags,
  manifests, real digests, sizes = config + layers, the manifest's media type); moto's own image store
  is never consulted. Untagged images are the manifests this sandbox saw pushed (through the front or
  PutImage) that the registry still holds; push times are kept in ``.sandbox/ecr-images.json``.
- ``put_image_into_the_registry``: PutImage PUTs the manifest into the registry (its layers must be
  there: LayersNotFoundException otherwise), with ECR's already-exists and immutability errors.
- ``batch_delete_really_deletes``: BatchDeleteImage deletes manifests from the registry. By digest the
  image goes with all its tags; by tag only that tag goes (the registry cannot untag, so the manifest is
  deleted and re-put under its remaining tags). Failures are reported per image id, as ECR does.
- ``delete_repository_deletes_images``: DeleteRepository refuses a repository with images unless
  ``force``, and with ``force`` deletes its images from the registry.
- ``image_scans``: StartImageScan and DescribeImageScanFindings answer for the registry's images, as ECR's basic
  scanning does: a repository with scanOnPush scans each image pushed to it (through the front or PutImage),
  StartImageScan scans one (once a day, LimitExceededException after that), a scan is IN_PROGRESS for a while,
  then COMPLETE with its findings; DescribeImageScanFindings of an image never scanned is ScanNotFoundException.
  The sandbox is no scanner: what a scan finds, and how long it takes (0 s unless set), is what the
  ``scan_findings`` rehearsal (``inv sandbox.scan-findings``) holds when the scan starts: none by default.

ECR API calls run inside moto's request handling, hence under the sandbox lock; they talk to the
registry with short timeouts. The front takes the sandbox lock only to read a repository's settings,
never while it streams.
"""

from __future__ import annotations

import base64
import fnmatch
import hashlib
import hmac
import http.client
import json
import logging
import os
import re
import secrets
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from moto.core.exceptions import ServiceException
from moto.core.responses import ActionResult
from moto.ecr.exceptions import (
    ImageAlreadyExistsException,
    ImageNotFoundException,
    InvalidParameterException,
    LimitExceededException,
    RepositoryNotEmptyException,
    ScanNotFoundException,
)
from moto.ecr.responses import ECRResponse

from sandbox.server import PartStatus, serving
from sandbox.settings import ACCOUNT_ID, Settings

if TYPE_CHECKING:
    from sandbox.server import Sandbox

log = logging.getLogger("sandbox.ecr")

REALM = "sandbox-ecr"
TOKEN_LIFETIME = timedelta(hours=12)  # as ECR's authorization tokens
CHUNK = 256 * 1024
MAX_MANIFEST = 4 * 1024 * 1024  # the distribution registry's own limit
API_TIMEOUT = 15.0  # seconds, for the registry calls made by ECR API calls (under the sandbox lock)
STREAM_TIMEOUT = 600.0  # seconds of silence tolerated on a proxied connection

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
MANIFEST_TYPES = (DOCKER_MANIFEST, OCI_MANIFEST, DOCKER_LIST, OCI_INDEX)
INDEX_TYPES = (DOCKER_LIST, OCI_INDEX)
ACCEPT = ", ".join(MANIFEST_TYPES)

DIGEST = re.compile(r"^[0-9a-zA-Z_+.-]+:[0-9a-fA-F]{64}$")
NAME = r"(?:[a-z0-9]+(?:[._-][a-z0-9]+)*/)*[a-z0-9]+(?:[._-][a-z0-9]+)*"
REPOSITORY_PATH = re.compile(rf"^/v2/(?P<name>{NAME})/(?P<kind>manifests|blobs|tags|referrers)(?:/(?P<rest>.*))?$")
HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade"}
NOT_FORWARDED = HOP_BY_HOP | {"authorization", "content-length", "expect", "proxy-authorization"}


# -- ECR errors moto does not define ---------------------------------------------------------------------
class ServerException(ServiceException):
    code = "ServerException"


class LayersNotFoundException(ServiceException):
    code = "LayersNotFoundException"


class ImageTagAlreadyExistsException(ServiceException):
    code = "ImageTagAlreadyExistsException"


class ImageDigestDoesNotMatchException(ServiceException):
    code = "ImageDigestDoesNotMatchException"


def immutable_message(tag: str, name: str) -> str:
    return (
        f"The image tag '{tag}' already exists in the '{name}' repository and cannot be overwritten "
        "because the repository is immutable."
    )


def missing_repository_message(name: str, registry_id: str = ACCOUNT_ID) -> str:
    return f"The repository with name '{name}' does not exist in the registry with id '{registry_id}'"


def image_id_text(image_id: dict[str, str]) -> str:
    """An image id as ECR's ImageNotFoundException prints it."""
    return f"{{imageDigest:'{image_id.get('imageDigest') or 'null'}', imageTag:'{image_id.get('imageTag') or 'null'}'}}"


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


# -- the registry's HTTP API ---------------------------------------------------------------------------
class RegistryError(Exception):
    """The registry answered with an error (``status``, its first error ``code``) or did not answer."""

    def __init__(self, message: str, status: int = 0, code: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.code = code


@dataclass(frozen=True)
class Manifest:
    digest: str
    media_type: str
    body: bytes

    @property
    def document(self) -> dict[str, Any]:
        value = json.loads(self.body)
        return value if isinstance(value, dict) else {}


class RegistryClient:
    """What the ECR API needs of the distribution registry's v2 API, on 127.0.0.1:``port``."""

    def __init__(self, port: int, timeout: float = API_TIMEOUT) -> None:
        self.port = port
        self.timeout = timeout
        self._manifests: dict[tuple[str, str], Manifest] = {}  # (name, digest) → manifest (immutable)
        self._cache_lock = threading.Lock()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def request(
        self, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None
    ) -> tuple[int, http.client.HTTPMessage, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            answer = conn.getresponse()
            return answer.status, answer.headers, answer.read()
        except OSError as exc:
            raise RegistryError(f"the registry at {self.address} does not answer: {exc}") from exc
        finally:
            conn.close()

    @staticmethod
    def error_of(status: int, body: bytes) -> RegistryError:
        code, message = "", body.decode(errors="replace").strip() or http.client.responses.get(status, "")
        with suppress(ValueError, KeyError, IndexError, TypeError, AttributeError):
            first = json.loads(body)["errors"][0]
            code, message = str(first.get("code", "")), str(first.get("message", message))
        return RegistryError(f"{code or status}: {message}", status, code)

    def ping(self) -> bool:
        try:
            status, _headers, _body = self.request("GET", "/v2/")
        except RegistryError:
            return False
        return status == 200

    def tags(self, name: str) -> list[str]:
        """The repository's tags; none when the registry has never seen the repository."""
        tags: list[str] = []
        path: str | None = f"/v2/{name}/tags/list?n=1000"
        while path:
            status, headers, body = self.request("GET", path)
            if status == 404:
                return tags
            if status != 200:
                raise self.error_of(status, body)
            tags.extend(json.loads(body).get("tags") or [])
            path = next_link(headers.get("Link"))
        return tags

    def head(self, name: str, reference: str) -> tuple[str, str] | None:
        """(digest, media type) of ``reference`` (a tag or digest), or None when it is not there."""
        status, headers, body = self.request("HEAD", f"/v2/{name}/manifests/{reference}", headers={"Accept": ACCEPT})
        if status == 404:
            return None
        if status != 200:
            raise self.error_of(status, body)
        digest = headers.get("Docker-Content-Digest") or ""
        return digest, (headers.get("Content-Type") or "").split(";")[0].strip()

    def manifest(self, name: str, reference: str) -> Manifest | None:
        """The manifest ``reference`` (tag or digest) names, or None. Always asks whether it is still there
        (anyone may delete through the front); only the body of a known digest comes from the cache."""
        found = self.head(name, reference)
        if found is None:
            return None
        with self._cache_lock:
            cached = self._manifests.get((name, found[0]))
        if cached is not None:
            return cached
        status, headers, body = self.request(
            "GET", f"/v2/{name}/manifests/{found[0] or reference}", headers={"Accept": ACCEPT}
        )
        if status == 404:
            return None
        if status != 200:
            raise self.error_of(status, body)
        media_type = (headers.get("Content-Type") or "").split(";")[0].strip()
        manifest = Manifest(headers.get("Docker-Content-Digest") or sha256_digest(body), media_type, body)
        with self._cache_lock:
            self._manifests[(name, manifest.digest)] = manifest
        return manifest

    def size(self, name: str, manifest: Manifest, depth: int = 0) -> int:
        """Bytes in the registry for an image: its config and layers (an index: its images')."""
        document = manifest.document
        if manifest.media_type in INDEX_TYPES or "manifests" in document:
            if depth > 2:
                return 0
            total = 0
            for entry in document.get("manifests") or []:
                child = self.manifest(name, str(entry.get("digest", "")))
                total += self.size(name, child, depth + 1) if child is not None else 0
            return total
        parts = [document.get("config") or {}, *(document.get("layers") or [])]
        return sum(int(part.get("size") or 0) for part in parts)

    def put_manifest(self, name: str, reference: str, body: bytes, media_type: str) -> str:
        status, headers, answer = self.request(
            "PUT", f"/v2/{name}/manifests/{reference}", body=body, headers={"Content-Type": media_type}
        )
        if status not in (200, 201):
            raise self.error_of(status, answer)
        return headers.get("Docker-Content-Digest") or sha256_digest(body)

    def delete_manifest(self, name: str, digest: str) -> None:
        status, _headers, body = self.request("DELETE", f"/v2/{name}/manifests/{digest}")
        if status not in (200, 202, 404):
            raise self.error_of(status, body)
        with self._cache_lock:
            self._manifests.pop((name, digest), None)


def next_link(link: str | None) -> str | None:
    """The path of a registry ``Link: </v2/...>; rel="next"`` header."""
    if not link:
        return None
    match = re.search(r"<([^>]+)>\s*;\s*rel=\"?next\"?", link)
    return urlsplit(match.group(1))._replace(scheme="", netloc="").geturl() if match else None


# -- what the sandbox remembers about pushes ------------------------------------------------------------
class PushRecords:
    """When each (repository, digest) was first seen: imagePushedAt, and the untagged images to list.

    Kept in ``.sandbox/ecr-images.json`` so push times survive a sandbox restart (the registry's data
    does too).
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._records: dict[str, dict[str, str]] = {}
        with suppress(OSError, ValueError):
            raw = json.loads(path.read_text())
            if isinstance(raw, dict):
                self._records = {str(k): {str(d): str(t) for d, t in v.items()} for k, v in raw.items()}

    def _save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_suffix(".tmp")
        temporary.write_text(json.dumps(self._records, indent=1, sort_keys=True))
        temporary.replace(self.path)

    def pushed_at(self, name: str, digest: str, when: datetime | None = None) -> datetime:
        """The recorded time, recording ``when`` (default now) for a digest not seen before."""
        with self._lock:
            known = self._records.setdefault(name, {})
            if digest not in known:
                known[digest] = (when or datetime.now(UTC)).isoformat()
                self._save()
            return datetime.fromisoformat(known[digest])

    def digests(self, name: str) -> list[str]:
        with self._lock:
            return list(self._records.get(name, {}))

    def forget(self, name: str, digest: str | None = None) -> None:
        with self._lock:
            if digest is None:
                self._records.pop(name, None)
            else:
                self._records.get(name, {}).pop(digest, None)
            self._save()


# -- image scans ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ScanRecord:
    """One scan of an image: when it started, how long it takes, what it finds (the rehearsal's findings then)."""

    started: datetime
    seconds: float
    findings: tuple[dict[str, str], ...]

    def complete(self, now: datetime) -> bool:
        return now >= self.started + timedelta(seconds=self.seconds)


class ImageScans:
    """The scans of images by (repository, digest), the latest of each; in memory, as moto's state is."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._scans: dict[tuple[str, str], ScanRecord] = {}

    def start(
        self,
        name: str,
        digest: str,
        findings: tuple[dict[str, str], ...],
        seconds: float,
        *,
        once_a_day: bool = False,
        now: datetime | None = None,
    ) -> ScanRecord:
        now = now or datetime.now(UTC)
        with self._lock:
            earlier = self._scans.get((name, digest))
            if once_a_day and earlier is not None and earlier.started.date() == now.date():
                raise LimitExceededException()
            record = self._scans[(name, digest)] = ScanRecord(now, seconds, findings)
        log.info("scan of %s@%s started: %d finding(s) in %gs", name, digest[:19], len(findings), seconds)
        return record

    def get(self, name: str, digest: str) -> ScanRecord | None:
        with self._lock:
            return self._scans.get((name, digest))

    def forget(self, name: str) -> None:
        with self._lock:
            for key in [key for key in self._scans if key[0] == name]:
                del self._scans[key]


def scan_answer(
    registry_id: str, name: str, image_id: dict[str, str], scan: ScanRecord, now: datetime
) -> dict[str, Any]:
    """DescribeImageScanFindings' answer for ``scan`` at ``now``: IN_PROGRESS, or COMPLETE with its findings
    (basic scanning's shape: name, uri, severity, the package as attributes)."""
    answer: dict[str, Any] = {"registryId": registry_id, "repositoryName": name, "imageId": image_id}
    if not scan.complete(now):
        return answer | {"imageScanStatus": {"status": "IN_PROGRESS", "description": "The scan is in progress."}}
    counts: dict[str, int] = {}
    findings = []
    for finding in scan.findings:
        counts[finding["severity"]] = counts.get(finding["severity"], 0) + 1
        attributes = [
            {"key": key, "value": finding[field_name]}
            for key, field_name in (("package_name", "package"), ("package_version", "version"))
            if finding.get(field_name)
        ]
        findings.append(
            {
                "name": finding["name"],
                "description": f"{finding['name']}, as the sandbox's scan rehearsal holds it",
                "uri": f"https://nvd.nist.gov/vuln/detail/{finding['name']}",
                "severity": finding["severity"],
                "attributes": attributes,
            }
        )
    done = scan.started + timedelta(seconds=scan.seconds)
    return answer | {
        "imageScanStatus": {"status": "COMPLETE", "description": "The scan was completed successfully."},
        "imageScanFindings": {
            "imageScanCompletedAt": done,
            "vulnerabilitySourceUpdatedAt": scan.started,
            "findingSeverityCounts": counts,
            "findings": findings,
        },
    }


# -- what the ECR API returns ---------------------------------------------------------------------------
@dataclass
class RegistryImage:
    """An ImageDetail (DescribeImages) and an ImageIdentifier source (ListImages) read from the registry."""

    registry_id: str
    repository_name: str
    image_digest: str
    image_tags: list[str]
    image_size_in_bytes: int
    image_pushed_at: datetime
    image_manifest_media_type: str
    artifact_media_type: str = ""


@dataclass
class RegistryManifest:
    """An Image (BatchGetImage, PutImage): the manifest as the registry holds it."""

    registry_id: str
    repository_name: str
    image_id: dict[str, str]
    image_manifest: str
    image_manifest_media_type: str


@dataclass
class RepositorySettings:
    """What the front needs of an ECR repository, read under the sandbox lock."""

    name: str
    mutability: str
    exclusions: list[str] = field(default_factory=list)
    scan_on_push: bool = False
    lifecycle_policy: str = ""  # its lifecycle policy's JSON text, "" for none

    def tag_is_immutable(self, tag: str) -> bool:
        immutable = self.mutability.startswith("IMMUTABLE")
        excluded = any(fnmatch.fnmatchcase(tag, pattern) for pattern in self.exclusions)
        return immutable != excluded


# -- lifecycle policies --------------------------------------------------------------------------------------
def expired_by_policy(policy_text: str, images: list[RegistryImage], now: datetime) -> list[str]:
    """The digests an ECR lifecycle policy (its JSON text) expires among ``images``, oldest push first, as ECR
    evaluates one: rules by ``rulePriority``; a rule selects by ``tagStatus`` (``tagged`` with ``tagPrefixList`` or
    ``tagPatternList``: each prefix or pattern matched by one of the image's tags; ``untagged``; ``any``), then
    expires those pushed more than ``countNumber`` days ago (``sinceImagePushed``) or those past the newest
    ``countNumber`` of its selection (``imageCountMoreThan``, the images higher rules matched counted too); an image
    that matched a rule of higher priority is never expired by a lower one."""
    rules = sorted(json.loads(policy_text).get("rules", []), key=lambda rule: int(rule["rulePriority"]))
    matched: set[str] = set()  # by a rule of higher priority
    expired: set[str] = set()
    for rule in rules:
        selection = rule["selection"]
        chosen = [image for image in images if _selects(selection, image.image_tags)]
        if str(selection.get("countType")) == "sinceImagePushed":
            before = now - timedelta(days=int(selection["countNumber"]))
            over = [image for image in chosen if image.image_pushed_at < before]
        else:  # imageCountMoreThan
            newest_first = sorted(chosen, key=lambda image: image.image_pushed_at, reverse=True)
            over = newest_first[int(selection["countNumber"]) :]
        if str((rule.get("action") or {}).get("type", "expire")) == "expire":
            expired.update(image.image_digest for image in over if image.image_digest not in matched)
        matched.update(image.image_digest for image in chosen)
    return [
        image.image_digest for image in sorted(images, key=lambda i: i.image_pushed_at) if image.image_digest in expired
    ]


def _selects(selection: dict[str, Any], tags: list[str]) -> bool:
    status = str(selection.get("tagStatus", "any")).lower()
    if status == "untagged":
        return not tags
    if status == "any":
        return True
    prefixes, patterns = selection.get("tagPrefixList") or [], selection.get("tagPatternList") or []
    return (
        bool(tags)
        and all(any(t.startswith(p) for t in tags) for p in prefixes)
        and all(any(fnmatch.fnmatchcase(t, p) for t in tags) for p in patterns)
    )


# -- the extension --------------------------------------------------------------------------------------
class EcrRegistry:
    name = "ecr registry"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.password = ""
        self.registry = RegistryClient(settings.registry_backend_port)
        self.records = PushRecords(settings.state_dir / "ecr-images.json")
        self.scans = ImageScans()
        self.sandbox: Sandbox | None = None
        self._server: FrontServer | None = None
        self._thread: threading.Thread | None = None
        self._repo_locks: dict[str, threading.RLock] = {}
        self._repo_locks_lock = threading.Lock()

    @property
    def front_address(self) -> str:
        return f"http://127.0.0.1:{self.settings.registry_port}"

    @property
    def password_path(self) -> Path:
        return self.settings.state_dir / "registry-password"

    def repo_lock(self, name: str) -> threading.RLock:
        """Serialises tag moves in one repository (front manifest PUTs, PutImage, BatchDeleteImage)."""
        with self._repo_locks_lock:
            return self._repo_locks.setdefault(name, threading.RLock())

    # -- install: ECR's API answers from the registry ---------------------------------------------------
    def install(self, sandbox: Sandbox) -> None:
        self.sandbox = sandbox
        self.password = secrets.token_urlsafe(32)
        self.settings.state_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.password_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(self.password + "\n")
        os.chmod(self.password_path, 0o600)

        backend = sandbox.backend("ecr")
        original_create = backend.create_repository
        original_delete = backend.delete_repository

        def create_repository(*args: Any, **kwargs: Any) -> Any:
            repository = original_create(*args, **kwargs)
            self._fix_uri(repository)
            return repository

        def delete_repository(repository_name: str, registry_id: str | None = None, force: bool = False) -> Any:
            backend._get_repository(repository_name, registry_id)
            with self.repo_lock(repository_name):
                images = self.images(repository_name)
                if images and not force:
                    raise RepositoryNotEmptyException(repository_name, registry_id or ACCOUNT_ID)
                for image in images:
                    self._call_registry(self.registry.delete_manifest, repository_name, image.image_digest)
                self.records.forget(repository_name)
                self.scans.forget(repository_name)
            return original_delete(repository_name, registry_id, True)

        def list_images(repository_name: str, registry_id: str | None = None, tag_status: str = "ANY") -> Any:
            backend._get_repository(repository_name, registry_id)
            images = self.images(repository_name)
            if tag_status == "TAGGED":
                return [image for image in images if image.image_tags]
            if tag_status == "UNTAGGED":
                return [image for image in images if not image.image_tags]
            return images

        def describe_images(
            repository_name: str, registry_id: str | None = None, image_ids: list[dict[str, str]] | None = None
        ) -> Any:
            backend._get_repository(repository_name, registry_id)
            images = self.images(repository_name)
            if not image_ids:
                return images
            chosen: dict[str, RegistryImage] = {}
            for image_id in image_ids:
                image = find_image(images, image_id)
                if image is None:
                    raise ImageNotFoundException(
                        image_id=image_id_text(image_id),
                        repository_name=repository_name,
                        registry_id=registry_id or ACCOUNT_ID,
                    )
                chosen.setdefault(image.image_digest, image)
            return list(chosen.values())

        def batch_get_image(
            repository_name: str, registry_id: str | None = None, image_ids: list[dict[str, Any]] | None = None
        ) -> dict[str, Any]:
            backend._get_repository(repository_name, registry_id)
            answer: dict[str, Any] = {"images": [], "failures": []}
            for image_id in image_ids or []:
                found, problem = self._resolve(repository_name, image_id)
                if problem is not None:
                    answer["failures"].append(problem)
                    continue
                assert found is not None
                manifest, tag = found
                wanted = {"imageDigest": manifest.digest, **({"imageTag": tag} if tag else {})}
                answer["images"].append(
                    RegistryManifest(
                        registry_id or ACCOUNT_ID,
                        repository_name,
                        wanted,
                        manifest.body.decode(),
                        manifest.media_type,
                    )
                )
            return answer

        def batch_delete_image(
            repository_name: str, registry_id: str | None = None, image_ids: list[dict[str, str]] | None = None
        ) -> dict[str, Any]:
            backend._get_repository(repository_name, registry_id)
            with self.repo_lock(repository_name):
                return self.delete_images(repository_name, image_ids or [])

        def put_image(
            repository_name: str,
            image_manifest: str,
            image_tag: str | None,
            image_manifest_mediatype: str | None = None,
            digest: str | None = None,
        ) -> RegistryManifest:
            repository = backend._get_repository(repository_name)
            with self.repo_lock(repository_name):
                return self.put_image(
                    self._settings_of(repository), image_manifest, image_tag, image_manifest_mediatype, digest
                )

        def get_authorization_token(registry_ids: list[str] | None = None) -> list[dict[str, Any]]:
            token = base64.b64encode(f"AWS:{self.password}".encode()).decode()
            expires = datetime.now(UTC) + TOKEN_LIFETIME
            return [
                {"authorizationToken": token, "expiresAt": expires, "proxyEndpoint": self.front_address}
                for _ in registry_ids or [ACCOUNT_ID]
            ]

        def start_image_scan(registry_id: str | None, repository_name: str, image_id: dict[str, str]) -> Any:
            backend._get_repository(repository_name, registry_id)
            manifest, tag = self._image_of(repository_name, image_id, registry_id)
            self.scan(repository_name, manifest.digest, by_hand=True)
            return {
                "registryId": registry_id or ACCOUNT_ID,
                "repositoryName": repository_name,
                "imageId": {"imageDigest": manifest.digest, **({"imageTag": tag} if tag else {})},
                "imageScanStatus": {"status": "IN_PROGRESS"},
            }

        def describe_image_scan_findings(
            registry_id: str | None, repository_name: str, image_id: dict[str, str]
        ) -> Any:
            backend._get_repository(repository_name, registry_id)
            manifest, tag = self._image_of(repository_name, image_id, registry_id)
            found = self.scans.get(repository_name, manifest.digest)
            if found is None:
                raise ScanNotFoundException(image_id_text(image_id), repository_name, registry_id or ACCOUNT_ID)
            image = {"imageDigest": manifest.digest, **({"imageTag": tag} if tag else {})}
            return scan_answer(registry_id or ACCOUNT_ID, repository_name, image, found, datetime.now(UTC))

        backend.start_image_scan = start_image_scan
        backend.describe_image_scan_findings = describe_image_scan_findings
        backend.create_repository = create_repository
        backend.delete_repository = delete_repository
        backend.list_images = list_images
        backend.describe_images = describe_images
        backend.batch_get_image = batch_get_image
        backend.batch_delete_image = batch_delete_image
        backend.put_image = put_image
        backend.get_authorization_token = get_authorization_token
        _answer_tokens_from_the_backend()
        with sandbox.lock:
            for repository in backend.repositories.values():
                self._fix_uri(repository)

    def _fix_uri(self, repository: Any) -> None:
        repository.uri = f"{self.settings.registry_host}/{repository.name}"

    @staticmethod
    def _settings_of(repository: Any) -> RepositorySettings:
        filters = repository.image_tag_mutability_exclusion_filters or []
        scanning = repository.image_scanning_configuration or {}  # the API's scanOnPush, CloudFormation's ScanOnPush
        return RepositorySettings(
            repository.name,
            str(getattr(repository.image_tag_mutability, "value", repository.image_tag_mutability)),
            [str(f.get("filter", "")) for f in filters],
            bool(scanning.get("scanOnPush", scanning.get("ScanOnPush", False))),
            str(repository.lifecycle_policy or ""),
        )

    def repository(self, name: str) -> RepositorySettings | None:
        """The ECR repository ``name`` (None when ECR does not know it), read under the sandbox lock."""
        assert self.sandbox is not None
        with self.sandbox.lock:
            repository = self.sandbox.backend("ecr").repositories.get(name)
            return None if repository is None else self._settings_of(repository)

    def _image_of(self, name: str, image_id: dict[str, str], registry_id: str | None) -> tuple[Manifest, str | None]:
        """(manifest, tag) of an image id of repository ``name``; ECR's ImageNotFoundException when it has none."""
        found, _problem = self._resolve(name, image_id)
        if found is None:
            raise ImageNotFoundException(
                image_id=image_id_text(image_id), repository_name=name, registry_id=registry_id or ACCOUNT_ID
            )
        return found

    def scan(self, name: str, digest: str, *, by_hand: bool = False) -> ScanRecord:
        """Start the scan of image ``digest`` of ``name`` with what the rehearsal holds now (sandbox.server.Faults
        .scan_findings); ``by_hand`` (StartImageScan): refused when the image was scanned today, as ECR refuses."""
        faults = self.sandbox.faults if self.sandbox is not None else None
        findings = tuple(faults.scan_findings) if faults is not None else ()
        seconds = faults.scan_seconds if faults is not None else 0.0
        return self.scans.start(name, digest, findings, seconds, once_a_day=by_hand)

    def pushed(self, repository: RepositorySettings, digest: str) -> None:
        """An image was pushed (through the front or PutImage): its push time recorded, scanned when the repository
        scans on push, and the repository's lifecycle policy applied, as ECR applies it after pushes: in a thread of
        its own, off the push's path (it reads every image of the repository)."""
        self.records.pushed_at(repository.name, digest)
        self.scanned_on_push(repository, digest)
        if repository.lifecycle_policy:
            threading.Thread(
                target=self.apply_lifecycle_policy, args=(repository,), name="ecr-lifecycle", daemon=True
            ).start()

    def apply_lifecycle_policy(self, repository: RepositorySettings, now: datetime | None = None) -> list[str]:
        """Expire the images of ``repository`` its lifecycle policy selects (:func:`expired_by_policy`); the digests
        expired. A policy the sandbox cannot read, or a registry that fails, is logged, and nothing is expired."""
        name = repository.name
        with self.repo_lock(name):
            try:
                images = self.images(name)
                gone = expired_by_policy(repository.lifecycle_policy, images, now or datetime.now(UTC))
                # an untagged image an index (a multi-platform image) names is part of that image: never expired
                # alone, whatever the rules count it as
                inside = self._indexed(name, [i for i in images if i.image_manifest_media_type in INDEX_TYPES])
                gone = [digest for digest in gone if digest not in inside]
            except (ServiceException, ValueError, KeyError, TypeError) as exc:
                log.warning("the lifecycle policy of %s was not applied: %s", name, exc)
                return []
            tags_of = {image.image_digest: image.image_tags for image in images}  # read under this lock: current
            for digest in gone:
                answer = self.delete_images(name, [{"imageDigest": digest}], tags_of)
                if answer["failures"]:
                    log.warning("lifecycle policy of %s: %s not expired: %s", name, digest, answer["failures"])
            if gone:
                log.info("lifecycle policy of %s: %d image(s) expired", name, len(gone))
            return gone

    def _indexed(self, name: str, indexes: list[RegistryImage]) -> set[str]:
        """The digests the manifests of ``indexes`` (images that are indexes) name."""
        named: set[str] = set()
        for index in indexes:
            manifest = self._call_registry(self.registry.manifest, name, index.image_digest)
            if manifest is not None:
                named.update(str(m.get("digest")) for m in manifest.document.get("manifests") or [])
        return named

    def scanned_on_push(self, repository: RepositorySettings, digest: str) -> None:
        """An image was pushed: scanned when its repository scans on push (once per digest, as ECR)."""
        if repository.scan_on_push and self.scans.get(repository.name, digest) is None:
            self.scan(repository.name, digest)

    def _call_registry(self, call: Callable[..., Any], *args: Any) -> Any:
        try:
            return call(*args)
        except RegistryError as exc:
            raise ServerException(f"the sandbox's registry failed: {exc}") from None

    # -- reading the registry -----------------------------------------------------------------------------
    def images(self, name: str) -> list[RegistryImage]:
        """Every image of repository ``name`` in the registry: tagged ones, then untagged ones we saw."""
        try:
            by_digest: dict[str, RegistryImage] = {}
            for tag in sorted(self.registry.tags(name)):
                manifest = self.registry.manifest(name, tag)
                if manifest is None:
                    continue
                image = by_digest.get(manifest.digest)
                if image is None:
                    image = by_digest[manifest.digest] = self._image(name, manifest)
                image.image_tags.append(tag)
            for digest in self.records.digests(name):
                if digest in by_digest:
                    continue
                manifest = self.registry.manifest(name, digest)
                if manifest is None:
                    self.records.forget(name, digest)
                    continue
                by_digest[digest] = self._image(name, manifest)
        except RegistryError as exc:
            raise ServerException(f"the sandbox's registry failed: {exc}") from None
        return sorted(by_digest.values(), key=lambda image: image.image_pushed_at)

    def _image(self, name: str, manifest: Manifest) -> RegistryImage:
        config = manifest.document.get("config") or {}
        return RegistryImage(
            registry_id=ACCOUNT_ID,
            repository_name=name,
            image_digest=manifest.digest,
            image_tags=[],
            image_size_in_bytes=self.registry.size(name, manifest),
            image_pushed_at=self.records.pushed_at(name, manifest.digest),
            image_manifest_media_type=manifest.media_type,
            artifact_media_type=str(config.get("mediaType", "")),
        )

    def _resolve(
        self, name: str, image_id: dict[str, str]
    ) -> tuple[tuple[Manifest, str | None] | None, dict[str, Any] | None]:
        """(manifest, tag) for an image id, or an ECR failure entry."""
        tag, digest = image_id.get("imageTag"), image_id.get("imageDigest")
        if not tag and not digest:
            return None, failure(
                image_id, "MissingDigestAndTag", "Invalid request parameters: both tag and digest cannot be null"
            )
        if digest and not DIGEST.match(digest):
            return None, failure(
                image_id,
                "InvalidImageDigest",
                "Invalid request parameters: image digest should satisfy the regex '[a-zA-Z0-9-_+.]+:[a-fA-F0-9]+'",
            )
        manifest = self._call_registry(self.registry.manifest, name, tag or digest)
        if manifest is None:
            return None, failure(image_id, "ImageNotFound", "Requested image not found")
        if tag and digest and manifest.digest != digest:
            return None, failure(
                image_id, "ImageTagDoesNotMatchDigest", "Invalid request parameters: image tag does not match digest"
            )
        return (manifest, tag), None

    # -- changing the registry ------------------------------------------------------------------------------
    def delete_images(
        self, name: str, image_ids: list[dict[str, str]], tags_of: dict[str, list[str]] | None = None
    ) -> dict[str, Any]:
        """BatchDeleteImage (hold the repository's lock). ``tags_of``: each digest's tags, when the caller read them
        under the same lock (:meth:`images`); else each image's are read from the registry (its tags, then one
        request per tag)."""
        answer: dict[str, Any] = {"imageIds": [], "failures": []}
        for image_id in image_ids:
            found, fail = self._resolve(name, image_id)
            if fail is not None:
                answer["failures"].append(fail)
                continue
            assert found is not None
            manifest, tag = found
            known = (tags_of or {}).get(manifest.digest)
            tags = list(known) if known is not None else self._tags_of(name, manifest.digest)
            remaining = [t for t in tags if t != tag] if tag else []
            try:
                self.registry.delete_manifest(name, manifest.digest)
                for other in remaining:  # the registry cannot untag: put the manifest back under the others
                    self.registry.put_manifest(name, other, manifest.body, manifest.media_type)
            except RegistryError as exc:
                reason = f"the sandbox's registry failed: {exc}"
                answer["failures"].append(failure(image_id, "UpstreamUnavailable", reason))
                continue
            if tag:
                answer["imageIds"].append({"imageDigest": manifest.digest, "imageTag": tag})
            else:
                answer["imageIds"].extend({"imageDigest": manifest.digest, "imageTag": t} for t in tags)
                if not tags:
                    answer["imageIds"].append({"imageDigest": manifest.digest})
            if not remaining:
                self.records.forget(name, manifest.digest)
        return answer

    def _tags_of(self, name: str, digest: str) -> list[str]:
        tags = []
        for tag in self._call_registry(self.registry.tags, name):
            found = self._call_registry(self.registry.head, name, tag)
            if found is not None and found[0] == digest:
                tags.append(tag)
        return tags

    def put_image(
        self,
        repository: RepositorySettings,
        image_manifest: str,
        image_tag: str | None,
        media_type: str | None,
        digest: str | None,
    ) -> RegistryManifest:
        """PutImage (hold the repository's lock)."""
        name = repository.name
        body = image_manifest.encode()
        try:
            document = json.loads(body)
        except ValueError:
            raise InvalidParameterException(
                "Invalid parameter at 'ImageManifest' failed to satisfy constraint: 'Invalid JSON syntax'"
            ) from None
        media_type = media_type or (document.get("mediaType") if isinstance(document, dict) else None)
        if not media_type:
            raise InvalidParameterException("image manifest mediatype not provided in manifest or parameter")
        computed = sha256_digest(body)
        if digest and digest != computed:
            raise ImageDigestDoesNotMatchException(
                f"Invalid parameter at 'imageDigest' failed to satisfy constraint: "
                f"'provided digest {digest} does not match the manifest's digest {computed}'"
            )
        if image_tag:
            existing = self._call_registry(self.registry.head, name, image_tag)
            if existing is not None and existing[0] == computed:
                raise ImageAlreadyExistsException(
                    repository_name=name, registry_id=ACCOUNT_ID, digest=computed, image_tag=image_tag
                )
            if existing is not None and repository.tag_is_immutable(image_tag):
                raise ImageTagAlreadyExistsException(immutable_message(image_tag, name))
        try:
            pushed = self.registry.put_manifest(name, image_tag or computed, body, media_type)
        except RegistryError as exc:
            if exc.code in ("MANIFEST_BLOB_UNKNOWN", "BLOB_UNKNOWN"):
                raise LayersNotFoundException(
                    f"Layers required for pushing image into repository with name '{name}' in registry with id "
                    f"'{ACCOUNT_ID}' do not exist: {exc}"
                ) from None
            raise InvalidParameterException(f"Invalid parameter at 'ImageManifest': {exc}") from None
        self.pushed(repository, pushed)
        image_id = {"imageDigest": pushed, **({"imageTag": image_tag} if image_tag else {})}
        return RegistryManifest(ACCOUNT_ID, name, image_id, image_manifest, media_type)

    # -- the front ------------------------------------------------------------------------------------------
    def authorized(self, header: str | None) -> bool:
        if not header or not self.password:
            return False
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            user, _, password = base64.b64decode(value.strip(), validate=True).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return False
        return user == "AWS" and hmac.compare_digest(password.encode(), self.password.encode())

    def start(self) -> None:
        self._server = FrontServer(("127.0.0.1", self.settings.registry_port), FrontHandler, self)
        self._thread = serving(self._server, "ecr-registry-front")
        log.info("registry front serving on %s (registry at %s)", self.front_address, self.registry.address)

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    def status(self) -> list[PartStatus]:
        assert self.sandbox is not None
        if self._server is None:
            return [PartStatus("ecr registry", self.front_address, False, "the registry front is not running")]
        if not self.registry.ping():
            detail = f"the registry behind it (127.0.0.1:{self.settings.registry_backend_port}) does not answer"
            return [PartStatus("ecr registry", self.front_address, False, detail)]
        with self.sandbox.lock:
            names = list(self.sandbox.backend("ecr").repositories)
        try:
            count = sum(len(self.images(name)) for name in names)
        except ServiceException as exc:
            return [PartStatus("ecr registry", self.front_address, False, str(exc))]
        return [PartStatus("ecr registry", self.front_address, True, f"{len(names)} repositories, {count} images")]


def find_image(images: list[RegistryImage], image_id: dict[str, str]) -> RegistryImage | None:
    tag, digest = image_id.get("imageTag"), image_id.get("imageDigest")
    for image in images:
        if (not tag or tag in image.image_tags) and (not digest or digest == image.image_digest):
            return image
    return None


def rewrite_location(value: str, backend_port: int, front_host: str) -> str:
    """A Location that names the registry itself (127.0.0.1 or localhost) made to name the front."""
    for host in ("127.0.0.1", "localhost"):
        backend = f"//{host}:{backend_port}"
        if backend in value:
            return value.replace(backend, f"//{front_host}", 1)
    return value


def failure(image_id: dict[str, str], code: str, reason: str) -> dict[str, Any]:
    return {"imageId": dict(image_id), "failureCode": code, "failureReason": reason}


def _answer_tokens_from_the_backend() -> None:
    """moto answers GetAuthorizationToken in its response class without asking the backend; make it ask
    backends that know better (ours), leaving every other backend's answer as moto's."""
    original = ECRResponse.get_authorization_token
    if getattr(original, "sandbox_patched", False):
        return

    def get_authorization_token(self: ECRResponse) -> ActionResult:
        answer = getattr(self.ecr_backend, "get_authorization_token", None)
        if answer is None:
            return original(self)
        return ActionResult({"authorizationData": answer(self._get_param("registryIds"))})

    get_authorization_token.sandbox_patched = True  # type: ignore[attr-defined]
    ECRResponse.get_authorization_token = get_authorization_token  # type: ignore[method-assign]


# -- the front: a streaming reverse proxy with ECR's checks -----------------------------------------------
class ClientGone(Exception):
    """The client's request body ended early or was malformed: nothing sensible can be answered."""


class FrontServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler], extension: EcrRegistry) -> None:
        self.extension = extension
        super().__init__(address, handler)


class FrontHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: FrontServer
    _body_read = False

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("front %s: " + format, self.client_address[0], *args)

    # -- routing ----------------------------------------------------------------------------------------
    def _handle(self) -> None:
        self._body_read = False
        extension = self.server.extension
        credentials = self.headers.get("Authorization")
        if not extension.authorized(credentials):
            # never exactly "authentication required" (the code's own text): docker then sees a bare error
            # code, not an error, and retries the push for a minute instead of failing at once
            message = (
                "invalid credentials: use user AWS and the password from ECR GetAuthorizationToken"
                if credentials
                else "authentication required: log in as AWS with the password from ECR GetAuthorizationToken"
            )
            self._refuse(401, "UNAUTHORIZED", message, {"WWW-Authenticate": f'Basic realm="{REALM}"'})
            return
        match = REPOSITORY_PATH.match(urlsplit(self.path).path)
        if match is None:
            self._forward(self._body())
            return
        name, kind, reference = match["name"], match["kind"], match["rest"] or ""
        repository = extension.repository(name)
        if repository is None:
            self._refuse(404, "NAME_UNKNOWN", missing_repository_message(name), detail={"name": name})
            return
        if kind == "manifests" and self.command == "PUT" and reference:
            self._put_manifest(repository, reference)
            return
        self._forward(self._body())

    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = _handle

    def _put_manifest(self, repository: RepositorySettings, reference: str) -> None:
        extension = self.server.extension
        length = self.headers.get("Content-Length")
        if length is not None and int(length) > MAX_MANIFEST:
            self._refuse(413, "SIZE_INVALID", f"manifest larger than {MAX_MANIFEST} bytes")
            return
        body = b"".join(self._body() or [])
        if len(body) > MAX_MANIFEST:
            self._refuse(413, "SIZE_INVALID", f"manifest larger than {MAX_MANIFEST} bytes")
            return
        name = repository.name
        with extension.repo_lock(name):
            if not DIGEST.match(reference) and repository.tag_is_immutable(reference):
                try:
                    existing = extension.registry.head(name, reference)
                except RegistryError as exc:
                    self._refuse(502, "UNAVAILABLE", str(exc))
                    return
                if existing is not None and existing[0] != sha256_digest(body):
                    self._refuse(400, "TAG_INVALID", immutable_message(reference, name), detail={"tag": reference})
                    return
            status, digest = self._forward([body], length=len(body))
        if status in (200, 201):
            extension.pushed(repository, digest or sha256_digest(body))

    # -- reading the client's body ---------------------------------------------------------------------------
    def _chunked_request(self) -> bool:
        return "chunked" in (self.headers.get("Transfer-Encoding") or "").lower()

    def _has_body(self) -> bool:
        return self._chunked_request() or int(self.headers.get("Content-Length") or 0) > 0

    def _body(self) -> Iterator[bytes] | None:
        """The request body as it arrives (de-chunked), or None when there is none."""
        if self._chunked_request():
            return self._chunks()
        length = int(self.headers.get("Content-Length") or 0)
        return self._whole(length) if length > 0 else None

    def _whole(self, length: int) -> Iterator[bytes]:
        yield from self._read(length)
        self._body_read = True

    def _chunks(self) -> Iterator[bytes]:
        while True:
            line = self.rfile.readline(1024)
            if not line:
                raise ClientGone("the client closed the connection mid-body")
            try:
                size = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                raise ClientGone(f"bad chunk size line {line[:40]!r}") from None
            if size == 0:
                while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                self._body_read = True
                return
            yield from self._read(size)
            self.rfile.readline(16)  # the CRLF that ends the chunk

    def _read(self, length: int) -> Iterator[bytes]:
        left = length
        while left > 0:
            piece = self.rfile.read(min(CHUNK, left))
            if not piece:
                raise ClientGone("the client closed the connection mid-body")
            left -= len(piece)
            yield piece

    # -- answering ---------------------------------------------------------------------------------------------
    def _refuse(
        self,
        status: int,
        code: str,
        message: str,
        headers: dict[str, str] | None = None,
        detail: Any = None,
    ) -> None:
        body = json.dumps({"errors": [{"code": code, "message": message, "detail": detail}]}).encode()
        if self._has_body() and not self._body_read:
            self.close_connection = True  # the unread body would be taken for the next request
        self.send_response_only(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Docker-Distribution-API-Version", "registry/2.0")
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
        self.log_request(status)

    def _forward(self, body: Iterable[bytes] | None, length: int | None = None) -> tuple[int, str | None]:
        """Send the request to the registry, streaming ``body``, and stream its answer back.

        ``length`` is the body's size when known; without it a body from a chunked request is sent
        chunked and any other body with the client's Content-Length.
        """
        settings = self.server.extension.settings
        if body is not None and length is None and not self._chunked_request():
            length = int(self.headers.get("Content-Length") or 0)
        chunked = body is not None and length is None
        conn = http.client.HTTPConnection("127.0.0.1", settings.registry_backend_port, timeout=STREAM_TIMEOUT)
        try:
            conn.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
            for key, value in self.headers.items():  # items(), not a dict: Accept may come several times
                if key.lower() not in NOT_FORWARDED:
                    conn.putheader(key, value)
            if self.headers.get("Host") is None:
                conn.putheader("Host", settings.registry_host)
            conn.putheader("X-Forwarded-For", self.client_address[0])
            conn.putheader("X-Forwarded-Proto", "http")
            if chunked:
                conn.putheader("Transfer-Encoding", "chunked")
            elif body is not None or self.command in ("POST", "PUT", "PATCH"):
                conn.putheader("Content-Length", str(length or 0))
            conn.endheaders()
            for piece in body or ():
                if piece:
                    conn.send(b"%X\r\n%b\r\n" % (len(piece), piece) if chunked else piece)
            if chunked:
                conn.send(b"0\r\n\r\n")
            answer = conn.getresponse()
        except ClientGone as exc:
            log.debug("front: %s %s: %s", self.command, self.path, exc)
            conn.close()
            self.close_connection = True
            return 0, None
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            self._refuse(502, "UNAVAILABLE", f"the registry at 127.0.0.1:{settings.registry_backend_port}: {exc}")
            return 502, None
        try:
            self._relay(answer)
        except OSError as exc:
            log.debug("front: relaying %s %s failed: %s", self.command, self.path, exc)
            self.close_connection = True
        finally:
            conn.close()
        return answer.status, answer.headers.get("Docker-Content-Digest")

    def _relay(self, answer: http.client.HTTPResponse) -> None:
        self.send_response_only(answer.status, answer.reason)
        sized = answer.headers.get("Content-Length") is not None
        no_body = self.command == "HEAD" or answer.status in (204, 304) or 100 <= answer.status < 200
        for key, value in answer.headers.items():
            lowered = key.lower()
            if lowered in HOP_BY_HOP:
                continue
            if lowered == "location":
                settings = self.server.extension.settings
                front = self.headers.get("Host") or settings.registry_host
                value = rewrite_location(value, settings.registry_backend_port, front)
            self.send_header(key, value)
        chunked = not sized and not no_body
        if chunked:
            self.send_header("Transfer-Encoding", "chunked")
        if answer.will_close and not sized and not chunked:
            self.close_connection = True
        self.end_headers()
        if not no_body:
            while piece := answer.read(CHUNK):
                self.wfile.write(b"%X\r\n%b\r\n" % (len(piece), piece) if chunked else piece)
            if chunked:
                self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()
        self.log_request(answer.status)
