"""The sandbox's ECR: images pushed by the Docker engine through the registry front, ECR's API answering
for what the real registry holds (sandbox/ext/ecr_registry.py).

One harness per module: a distribution registry on a free port, the extension installed into a
Sandbox, its front on another free port, and moto's server app (``Sandbox.wsgi()``) on a third.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import http.client
import io
import json
import os
import re
import shutil
import stat
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import docker
import docker.errors
import pytest
from botocore.exceptions import ClientError
from moto.moto_server.werkzeug_app import MotoRequestHandler
from werkzeug.serving import make_server

from deploykit import images, oci
from sandbox.ext.ecr_registry import EcrRegistry, rewrite_location
from sandbox.server import Sandbox
from sandbox.settings import ACCOUNT_ID, Settings
from tests.integration.conftest import LocalRegistry, _unavailable, free_port

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("cleanup_images")]

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"


# -- the harness ------------------------------------------------------------------------------------------
@dataclass
class Harness:
    settings: Settings
    extension: EcrRegistry
    registry: LocalRegistry
    ecr: Any  # a boto3 ECR client on the sandbox's endpoint
    docker: docker.DockerClient
    images: dict[str, str]  # "a" / "b" → local image id (two tiny images with different digests)

    @property
    def front(self) -> str:
        return self.settings.registry_host

    def token(self) -> dict[str, str]:
        data = self.ecr.get_authorization_token()["authorizationData"][0]
        user, _, password = base64.b64decode(data["authorizationToken"]).decode().partition(":")
        return {"username": user, "password": password, "serveraddress": data["proxyEndpoint"]}

    def push(self, image: str, repository: str, tag: str, auth: dict[str, str] | None) -> tuple[str | None, str]:
        """Push local image ``image`` ("a"/"b") as front/repository:tag; (digest, error text)."""
        remote = f"{self.front}/{repository}"
        assert self.docker.images.get(self.images[image]).tag(remote, tag)
        digest, error = None, ""
        for chunk in self.docker.api.push(remote, tag=tag, stream=True, decode=True, auth_config=auth):
            error = chunk.get("error", error)
            digest = (chunk.get("aux") or {}).get("Digest", digest)
        return digest, error

    def backend(self, method: str, path: str, headers: dict[str, str] | None = None) -> tuple[int, bytes, Any]:
        """Ask the registry itself, behind the front."""
        conn = http.client.HTTPConnection("127.0.0.1", self.registry.port, timeout=30)
        try:
            conn.request(method, path, headers={"Accept": DOCKER_MANIFEST, **(headers or {})})
            answer = conn.getresponse()
            return answer.status, answer.read(), answer.headers
        finally:
            conn.close()

    def front_request(
        self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None, auth: bool = True
    ) -> tuple[int, bytes, Any]:
        """Ask the front, with the token's Basic auth unless ``auth`` is False."""
        sent = dict(headers or {})
        if auth:
            token = self.token()
            sent["Authorization"] = "Basic " + base64.b64encode(f"AWS:{token['password']}".encode()).decode()
        conn = http.client.HTTPConnection("127.0.0.1", self.settings.registry_port, timeout=60)
        try:
            conn.request(
                method, path, body=body, headers=sent, encode_chunked=sent.get("Transfer-Encoding") == "chunked"
            )
            answer = conn.getresponse()
            return answer.status, answer.read(), answer.headers
        finally:
            conn.close()


def build_image(client: docker.DockerClient, base: str, label: str) -> str:
    dockerfile = f"FROM {base}\nLABEL io.deploykit.sandbox-ecr-test={label}\n"
    image, _logs = client.images.build(
        fileobj=io.BytesIO(dockerfile.encode()), tag=f"sandbox-ecr-test:{label}", network_mode="host", rm=True
    )
    return str(image.id)


@pytest.fixture(scope="module")
def harness(
    tmp_path_factory: pytest.TempPathFactory, docker_engine: docker.DockerClient, base_image: str
) -> Iterator[Harness]:
    if shutil.which("docker-registry") is None:
        _unavailable("docker-registry is not installed (Debian package docker-registry)")
    root = tmp_path_factory.mktemp("sandbox-ecr")
    registry = LocalRegistry(root)
    registry.start()
    settings = Settings(root=root, aws_port=free_port(), registry_port=free_port(), registry_backend_port=registry.port)
    extension = EcrRegistry(settings)
    sandbox = Sandbox(settings, docker_engine, [extension])
    labels = {"a": f"a-{os.getpid()}", "b": f"b-{os.getpid()}"}
    images: dict[str, str] = {}
    server = None
    try:
        for key, label in labels.items():
            images[key] = build_image(docker_engine, base_image, label)
        extension.install(sandbox)
        extension.start()
        server = make_server(
            "127.0.0.1", settings.aws_port, sandbox.wsgi(), threaded=True, request_handler=MotoRequestHandler
        )
        threading.Thread(target=server.serve_forever, name="test-moto", daemon=True).start()
        ecr = boto3.client(
            "ecr",
            endpoint_url=settings.endpoint_url,
            region_name=settings.region,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )
        yield Harness(settings, extension, registry, ecr, docker_engine, images)
    finally:
        if server is not None:
            server.shutdown()
            server.server_close()
        extension.stop()
        registry.stop()
        sandbox.backend("ecr").reset()  # moto's backends are process-wide: leave no patched one behind
        for image_id in images.values():  # by id: pushes leave repo@digest references besides the tags
            with contextlib.suppress(docker.errors.APIError):
                docker_engine.images.remove(image_id, force=True)


@pytest.fixture
def repository_name(request: pytest.FixtureRequest) -> str:
    """This test's own repository, a valid ECR name (conftest's may end a truncated word with '-')."""
    stem = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower())[:40].strip("-")
    return f"it-{stem}-{os.getpid()}"


def create(harness: Harness, name: str, mutability: str = "MUTABLE") -> dict[str, Any]:
    repository: dict[str, Any] = harness.ecr.create_repository(repositoryName=name, imageTagMutability=mutability)[
        "repository"
    ]
    return repository


def manifest_of(harness: Harness, name: str, reference: str) -> tuple[str, dict[str, Any]]:
    status, body, headers = harness.backend("GET", f"/v2/{name}/manifests/{reference}")
    assert status == 200, body
    return headers["Docker-Content-Digest"], json.loads(body)


# -- the tests --------------------------------------------------------------------------------------------
def test_repository_uri_and_token_point_at_the_front(harness: Harness, repository_name: str) -> None:
    created = create(harness, repository_name)
    assert created["repositoryUri"] == f"127.0.0.1:{harness.settings.registry_port}/{repository_name}"
    described = harness.ecr.describe_repositories(repositoryNames=[repository_name])["repositories"][0]
    assert described["repositoryUri"] == created["repositoryUri"]

    data = harness.ecr.get_authorization_token()["authorizationData"][0]
    assert data["proxyEndpoint"] == f"http://127.0.0.1:{harness.settings.registry_port}"
    assert data["expiresAt"] > datetime.now(UTC)
    assert base64.b64decode(data["authorizationToken"]).decode() == f"AWS:{harness.extension.password}"
    password_file = harness.settings.state_dir / "registry-password"
    assert password_file.read_text().strip() == harness.extension.password
    assert stat.S_IMODE(password_file.stat().st_mode) == 0o600


def test_the_front_wants_the_token(harness: Harness, repository_name: str) -> None:
    create(harness, repository_name)
    for headers in ({}, {"Authorization": "Basic " + base64.b64encode(b"AWS:wrong").decode()}):
        status, body, answer = harness.front_request("GET", "/v2/", headers=headers, auth=False)
        assert status == 401
        assert answer["WWW-Authenticate"] == 'Basic realm="sandbox-ecr"'
        assert json.loads(body)["errors"][0]["code"] == "UNAUTHORIZED"
    assert harness.front_request("GET", "/v2/")[0] == 200

    digest, error = harness.push("a", repository_name, "v1", None)
    assert digest is None
    assert "no basic auth credentials" in error
    wrong = {**harness.token(), "password": "wrong"}
    started = time.monotonic()
    digest, error = harness.push("a", repository_name, "v1", wrong)
    assert digest is None
    assert error.startswith("unauthorized: invalid credentials")
    assert time.monotonic() - started < 10  # refused, not retried for a minute
    assert harness.ecr.list_images(repositoryName=repository_name)["imageIds"] == []


def test_a_push_is_what_ecr_describes(harness: Harness, repository_name: str) -> None:
    create(harness, repository_name)
    before = datetime.now(UTC)
    digest, error = harness.push("a", repository_name, "v1", harness.token())
    assert error == ""
    assert digest is not None

    registry_digest, manifest = manifest_of(harness, repository_name, "v1")
    assert registry_digest == digest
    size = manifest["config"]["size"] + sum(layer["size"] for layer in manifest["layers"])

    detail = harness.ecr.describe_images(repositoryName=repository_name)["imageDetails"]
    assert len(detail) == 1
    assert detail[0]["imageDigest"] == digest
    assert detail[0]["imageTags"] == ["v1"]
    assert detail[0]["imageSizeInBytes"] == size
    assert detail[0]["imageManifestMediaType"] == DOCKER_MANIFEST
    assert detail[0]["registryId"] == ACCOUNT_ID
    assert before.replace(microsecond=0) <= detail[0]["imagePushedAt"] <= datetime.now(UTC)

    by_tag = harness.ecr.describe_images(repositoryName=repository_name, imageIds=[{"imageTag": "v1"}])
    assert [d["imageDigest"] for d in by_tag["imageDetails"]] == [digest]
    assert harness.ecr.list_images(repositoryName=repository_name)["imageIds"] == [
        {"imageDigest": digest, "imageTag": "v1"}
    ]
    got = harness.ecr.batch_get_image(repositoryName=repository_name, imageIds=[{"imageTag": "v1"}])
    assert json.loads(got["images"][0]["imageManifest"]) == manifest
    assert got["images"][0]["imageId"] == {"imageDigest": digest, "imageTag": "v1"}

    with pytest.raises(ClientError) as missing:
        harness.ecr.describe_images(repositoryName=repository_name, imageIds=[{"imageTag": "nope"}])
    assert missing.value.response["Error"]["Code"] == "ImageNotFoundException"
    failures = harness.ecr.batch_get_image(repositoryName=repository_name, imageIds=[{"imageTag": "nope"}])
    assert failures["failures"][0]["failureCode"] == "ImageNotFound"

    [part] = harness.extension.status()
    assert part.healthy
    assert part.address == f"http://127.0.0.1:{harness.settings.registry_port}"
    assert part.detail.endswith(" images")


def test_an_immutable_tag_cannot_move(harness: Harness, repository_name: str) -> None:
    create(harness, repository_name, "IMMUTABLE")
    first, error = harness.push("a", repository_name, "v1", harness.token())
    assert error == ""

    moved, error = harness.push("b", repository_name, "v1", harness.token())
    assert moved is None
    assert (
        f"tag invalid: The image tag 'v1' already exists in the '{repository_name}' repository and cannot be "
        "overwritten because the repository is immutable." in error
    )
    again, error = harness.push("a", repository_name, "v1", harness.token())  # the same image: idempotent
    assert error == ""
    assert again == first
    other, error = harness.push("b", repository_name, "v2", harness.token())  # a new tag is fine
    assert error == ""

    tags = {
        d["imageDigest"]: d["imageTags"]
        for d in harness.ecr.describe_images(repositoryName=repository_name)["imageDetails"]
    }
    assert tags == {first: ["v1"], other: ["v2"]}


def test_a_mutable_tag_moves_and_leaves_the_old_image_untagged(harness: Harness, repository_name: str) -> None:
    create(harness, repository_name)
    first, _ = harness.push("a", repository_name, "latest", harness.token())
    second, error = harness.push("b", repository_name, "latest", harness.token())
    assert error == ""
    assert first != second
    tagged = harness.ecr.list_images(repositoryName=repository_name, filter={"tagStatus": "TAGGED"})["imageIds"]
    assert tagged == [{"imageDigest": second, "imageTag": "latest"}]
    untagged = harness.ecr.list_images(repositoryName=repository_name, filter={"tagStatus": "UNTAGGED"})["imageIds"]
    assert untagged == [{"imageDigest": first}]


def test_the_repositorys_lifecycle_policy_expires_what_it_selects_after_a_push(
    harness: Harness, repository_name: str
) -> None:
    """As ECR after a push: the registry stack's policy (cdk/stacks/registry_stack.py; here the newest one tagged
    image, untagged ones a day after their push) expires the older tagged image, in the registry too; the image just
    pushed stays."""
    create(harness, repository_name)
    rules = [
        {"tagStatus": "untagged", "countType": "sinceImagePushed", "countNumber": 1, "countUnit": "days"},
        {"tagStatus": "tagged", "tagPatternList": ["*"], "countType": "imageCountMoreThan", "countNumber": 1},
    ]
    text = {
        "rules": [{"rulePriority": i + 1, "selection": r, "action": {"type": "expire"}} for i, r in enumerate(rules)]
    }
    harness.ecr.put_lifecycle_policy(repositoryName=repository_name, lifecyclePolicyText=json.dumps(text))
    first, error = harness.push("a", repository_name, "one", harness.token())
    assert first and error == ""
    time.sleep(0.05)  # pushed later, to the microsecond
    second, error = harness.push("b", repository_name, "two", harness.token())
    assert second and second != first and error == ""
    deadline = time.monotonic() + 20  # applied in a thread of its own, after the push
    while True:
        details = harness.ecr.describe_images(repositoryName=repository_name)["imageDetails"]
        held = sorted((d["imageDigest"], tuple(d.get("imageTags", []))) for d in details)
        if held == [(second, ("two",))] or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert held == [(second, ("two",))]  # "one" is past the newest one tagged image: expired
    status, _, _ = harness.backend("GET", f"/v2/{repository_name}/manifests/{first}")
    assert status == 404


def test_an_untagged_image_a_tagged_index_names_is_never_expired_alone(harness: Harness, repository_name: str) -> None:
    """A multi-platform image is an index and its images, which are untagged: the registry stack's rule for untagged
    images (a day after their push) must not break it. An untagged image nothing names goes."""
    create(harness, repository_name)
    rule = {"tagStatus": "untagged", "countType": "sinceImagePushed", "countNumber": 1, "countUnit": "days"}
    text = {"rules": [{"rulePriority": 1, "selection": rule, "action": {"type": "expire"}}]}
    harness.ecr.put_lifecycle_policy(repositoryName=repository_name, lifecyclePolicyText=json.dumps(text))
    named, _ = harness.push("a", repository_name, "x", harness.token())
    alone, _ = harness.push("b", repository_name, "x", harness.token())  # the tag moves: "a" untagged
    size = len(harness.backend("GET", f"/v2/{repository_name}/manifests/{named}")[1])
    index = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {
                "mediaType": DOCKER_MANIFEST,
                "digest": named,
                "size": size,
                "platform": {"architecture": "amd64", "os": "linux"},
            }
        ],
    }
    code, answer, _ = harness.front_request(
        "PUT",
        f"/v2/{repository_name}/manifests/x",  # the tag moves to the index: "b" untagged too
        body=json.dumps(index).encode(),
        headers={"Content-Type": "application/vnd.oci.image.index.v1+json"},
    )
    assert code == 201, answer
    repository = harness.extension.repository(repository_name)
    assert repository is not None and repository.lifecycle_policy
    later = datetime.now(UTC) + timedelta(days=2)  # both untagged images are past their day
    assert harness.extension.apply_lifecycle_policy(repository, now=later) == [alone]
    assert harness.backend("GET", f"/v2/{repository_name}/manifests/{named}")[0] == 200


def test_batch_delete_image_really_deletes(harness: Harness, repository_name: str) -> None:
    create(harness, repository_name)
    digest, _ = harness.push("a", repository_name, "v1", harness.token())
    assert harness.push("a", repository_name, "v2", harness.token())[0] == digest

    # by tag, when the image has another tag: only that tag goes
    answer = harness.ecr.batch_delete_image(repositoryName=repository_name, imageIds=[{"imageTag": "v1"}])
    assert answer["imageIds"] == [{"imageDigest": digest, "imageTag": "v1"}]
    assert answer["failures"] == []
    [detail] = harness.ecr.describe_images(repositoryName=repository_name)["imageDetails"]
    assert detail["imageTags"] == ["v2"]
    assert json.loads(harness.backend("GET", f"/v2/{repository_name}/tags/list")[1])["tags"] == ["v2"]

    # the last tag: the image goes, from ECR's answers and from the registry
    answer = harness.ecr.batch_delete_image(repositoryName=repository_name, imageIds=[{"imageTag": "v2"}])
    assert answer["imageIds"] == [{"imageDigest": digest, "imageTag": "v2"}]
    with pytest.raises(ClientError) as gone:
        harness.ecr.describe_images(repositoryName=repository_name, imageIds=[{"imageTag": "v2"}])
    assert gone.value.response["Error"]["Code"] == "ImageNotFoundException"
    assert harness.ecr.describe_images(repositoryName=repository_name)["imageDetails"] == []
    assert harness.backend("HEAD", f"/v2/{repository_name}/manifests/{digest}")[0] == 404

    answer = harness.ecr.batch_delete_image(
        repositoryName=repository_name, imageIds=[{"imageTag": "v2"}, {"imageDigest": "sha256:nothex"}]
    )
    assert [f["failureCode"] for f in answer["failures"]] == ["ImageNotFound", "InvalidImageDigest"]


def test_delete_repository_with_force_deletes_its_images(harness: Harness, repository_name: str) -> None:
    create(harness, repository_name)
    digest, _ = harness.push("a", repository_name, "v1", harness.token())
    with pytest.raises(ClientError) as not_empty:
        harness.ecr.delete_repository(repositoryName=repository_name)
    assert not_empty.value.response["Error"]["Code"] == "RepositoryNotEmptyException"
    harness.ecr.delete_repository(repositoryName=repository_name, force=True)
    assert harness.backend("HEAD", f"/v2/{repository_name}/manifests/{digest}")[0] == 404
    digest, error = harness.push("a", repository_name, "v1", harness.token())
    assert digest is None
    assert "does not exist in the registry" in error


# (after the other pushes: a push refused for its repository makes the engine forget where it could mount
# layers from, and the next push uploads them again)
def test_a_push_to_a_repository_ecr_does_not_know_fails(harness: Harness, repository_name: str) -> None:
    digest, error = harness.push("a", repository_name, "v1", harness.token())
    assert digest is None
    assert (
        f"The repository with name '{repository_name}' does not exist in the registry with id '{ACCOUNT_ID}'" in error
    )
    assert harness.backend("GET", f"/v2/{repository_name}/tags/list")[0] == 404


def test_chunked_uploads_stream_through_the_front_and_put_image_uses_them(
    harness: Harness, repository_name: str, tmp_path: Path
) -> None:
    create(harness, repository_name)
    layer = os.urandom(3 * 1024 * 1024 + 17)
    config = json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": []}})

    def upload(data: bytes) -> str:
        status, body, headers = harness.front_request("POST", f"/v2/{repository_name}/blobs/uploads/")
        assert status == 202, body
        location = headers["Location"]
        assert location.startswith(f"http://127.0.0.1:{harness.settings.registry_port}/"), location
        path = location.split(str(harness.settings.registry_port), 1)[1]
        pieces = (data[i : i + 100_000] for i in range(0, len(data), 100_000))
        status, body, headers = harness.front_request(
            "PATCH",
            path,
            body=pieces,
            headers={"Transfer-Encoding": "chunked", "Content-Type": "application/octet-stream"},
        )
        assert status == 202, body
        assert headers["Range"] == f"0-{len(data) - 1}"
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        path = headers["Location"].split(str(harness.settings.registry_port), 1)[1]
        status, body, _ = harness.front_request("PUT", f"{path}&digest={digest}", body=b"")
        assert status == 201, body
        return digest

    layer_digest, config_digest = upload(layer), upload(config.encode())
    status, body, _headers = harness.front_request("GET", f"/v2/{repository_name}/blobs/{layer_digest}")
    assert status == 200
    assert body == layer

    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": DOCKER_MANIFEST,
            "config": {
                "mediaType": "application/vnd.docker.container.image.v1+json",
                "size": len(config),
                "digest": config_digest,
            },
            "layers": [
                {
                    "mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip",
                    "size": len(layer),
                    "digest": layer_digest,
                }
            ],
        }
    )
    put = harness.ecr.put_image(repositoryName=repository_name, imageManifest=manifest, imageTag="hand-made")["image"]
    digest = "sha256:" + hashlib.sha256(manifest.encode()).hexdigest()
    assert put["imageId"] == {"imageDigest": digest, "imageTag": "hand-made"}
    [detail] = harness.ecr.describe_images(repositoryName=repository_name)["imageDetails"]
    assert detail["imageDigest"] == digest
    assert detail["imageSizeInBytes"] == len(layer) + len(config)
    with pytest.raises(ClientError) as again:
        harness.ecr.put_image(repositoryName=repository_name, imageManifest=manifest, imageTag="hand-made")
    assert again.value.response["Error"]["Code"] == "ImageAlreadyExistsException"

    missing = manifest.replace(layer_digest, "sha256:" + "0" * 64)
    with pytest.raises(ClientError) as no_layers:
        harness.ecr.put_image(repositoryName=repository_name, imageManifest=missing, imageTag="broken")
    assert no_layers.value.response["Error"]["Code"] == "LayersNotFoundException"


def test_locations_naming_the_registry_are_rewritten_to_the_front() -> None:
    upload = "http://127.0.0.1:5001/v2/app/blobs/uploads/u-1?_state=abc"
    assert (
        rewrite_location(upload, 5001, "127.0.0.1:5000") == "http://127.0.0.1:5000/v2/app/blobs/uploads/u-1?_state=abc"
    )
    assert rewrite_location("http://localhost:5001/v2/x", 5001, "127.0.0.1:5000") == "http://127.0.0.1:5000/v2/x"
    assert rewrite_location("/v2/app/blobs/uploads/u-1", 5001, "127.0.0.1:5000") == "/v2/app/blobs/uploads/u-1"
    assert rewrite_location("http://127.0.0.1:5000/v2/x", 5001, "127.0.0.1:5000") == "http://127.0.0.1:5000/v2/x"


def test_an_image_is_promoted_byte_for_byte_within_the_registry_and_to_another(
    harness: Harness, repository_name: str, local_registry: LocalRegistry
) -> None:
    """deploykit.oci against the real front and registry: into another repository of the same registry (ECR-style
    auth, an immutable tag) the blobs are mounted, none sent; into another registry (no auth) they stream across.
    Each copy keeps the digest, which the Docker engine then pulls, and a second copy sends nothing."""
    dev, prod = f"{repository_name}-dev", f"{repository_name}-prod"
    create(harness, dev, "IMMUTABLE")
    create(harness, prod, "IMMUTABLE")
    digest, error = harness.push("a", dev, "abc123", harness.token())
    assert error == "" and digest is not None
    token = harness.token()
    front = oci.Registry(harness.front, (token["username"], token["password"]))

    within = oci.copy_image(front, dev, front, prod, "abc123", platform=images.engine_platform(harness.docker))
    assert within.digest == digest and within.sent == 0 and within.mounted > 0
    assert manifest_of(harness, prod, "abc123")[0] == digest
    detail = harness.ecr.describe_images(repositoryName=prod, imageIds=[{"imageTag": "abc123"}])["imageDetails"]
    assert [d["imageDigest"] for d in detail] == [digest]  # ECR's API answers for it
    assert oci.copy_image(front, dev, front, prod, "abc123").already

    elsewhere = oci.copy_image(front, dev, oci.Registry(local_registry.host), "promoted", "abc123")
    assert elsewhere.digest == digest and elsewhere.sent == within.mounted and elsewhere.sent_bytes > 0
    pulled = harness.docker.images.pull(f"{local_registry.host}/promoted", tag="abc123")
    assert pulled.id == harness.images["a"]  # the very image dev holds
    assert f"{local_registry.host}/promoted@{digest}" in pulled.attrs["RepoDigests"]
    harness.docker.images.remove(f"{local_registry.host}/promoted:abc123")

    stale = oci.Registry(harness.front, ("AWS", "not-the-token"))
    with pytest.raises(oci.RegistryError, match=r"refused to let us read the manifest .*-dev:abc123 \(401"):
        oci.copy_image(stale, dev, front, f"{repository_name}-other", "abc123")


def test_scans_of_images_on_push_and_asked_for_once_a_day(harness: Harness, repository_name: str) -> None:
    """A repository without scan on push: no scan until StartImageScan (IN_PROGRESS, then COMPLETE with the
    rehearsal's findings as they were when it started), and not twice a day; one with scan on push scans each push."""
    create(harness, repository_name)
    digest, error = harness.push("a", repository_name, "v1", harness.token())
    assert error == "" and digest is not None
    image = {"imageTag": "v1"}
    with pytest.raises(ClientError) as missing:
        harness.ecr.describe_image_scan_findings(repositoryName=repository_name, imageId=image)
    assert missing.value.response["Error"]["Code"] == "ScanNotFoundException"

    faults = harness.extension.sandbox.faults  # type: ignore[union-attr]
    faults.rehearse_scans([{"name": "CVE-2026-7", "severity": "CRITICAL", "package": "glibc"}], 0.5)
    started = harness.ecr.start_image_scan(repositoryName=repository_name, imageId=image)
    assert started["imageScanStatus"] == {"status": "IN_PROGRESS"}
    assert started["imageId"] == {"imageDigest": digest, "imageTag": "v1"}
    faults.rehearse_scans([], 0)  # a later change of the rehearsal leaves this scan as it started
    early = harness.ecr.describe_image_scan_findings(repositoryName=repository_name, imageId=image)
    assert early["imageScanStatus"]["status"] == "IN_PROGRESS"
    time.sleep(0.6)
    done = harness.ecr.describe_image_scan_findings(repositoryName=repository_name, imageId={"imageDigest": digest})
    assert done["imageScanStatus"]["status"] == "COMPLETE"
    assert done["imageScanFindings"]["findingSeverityCounts"] == {"CRITICAL": 1}
    [finding] = done["imageScanFindings"]["findings"]
    assert (finding["name"], finding["severity"]) == ("CVE-2026-7", "CRITICAL")
    assert finding["attributes"] == [{"key": "package_name", "value": "glibc"}]
    with pytest.raises(ClientError) as again:
        harness.ecr.start_image_scan(repositoryName=repository_name, imageId=image)
    assert again.value.response["Error"]["Code"] == "LimitExceededException"

    harness.ecr.put_image_scanning_configuration(
        repositoryName=repository_name, imageScanningConfiguration={"scanOnPush": True}
    )
    digest_b, error = harness.push("b", repository_name, "v2", harness.token())
    assert error == "" and digest_b is not None
    scanned = harness.ecr.describe_image_scan_findings(repositoryName=repository_name, imageId={"imageTag": "v2"})
    assert scanned["imageScanStatus"]["status"] == "COMPLETE" and scanned["imageScanFindings"]["findings"] == []
    with pytest.raises(ClientError) as unknown:
        harness.ecr.describe_image_scan_findings(repositoryName=repository_name, imageId={"imageTag": "nope"})
    assert unknown.value.response["Error"]["Code"] == "ImageNotFoundException"
