"""A registry in memory, on 127.0.0.1, speaking the part of the OCI distribution API an image copy uses: manifests
(GET, PUT), blobs (HEAD, GET), uploads (POST, with cross-repository mount; PATCH; PUT ?digest=). Optionally it asks
for credentials, as Basic (ECR's way) or with a Bearer challenge and a token service (most registries' way).

It checks what a real one checks (a blob's bytes against its digest, a manifest's blobs being there, a tag never
moved to other bytes when ``immutable``) and keeps a log of the calls, so a test sees what crossed the wire."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import secrets
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

PATH = re.compile(r"^/v2/(?P<name>.+?)/(?P<kind>manifests|blobs/uploads|blobs)/(?P<rest>.*)$")


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass
class Store:
    blobs: dict[str, dict[str, bytes]] = field(default_factory=dict)  # repository → digest → bytes
    manifests: dict[str, dict[str, tuple[bytes, str]]] = field(default_factory=dict)  # repository → ref → (body, type)
    uploads: dict[str, tuple[str, bytearray]] = field(default_factory=dict)  # id → (repository, bytes so far)
    calls: list[tuple[str, str]] = field(default_factory=list)  # (method, path with query)
    user: tuple[str, str] | None = None  # credentials asked for; None: anyone
    bearer: bool = False  # ask with a Bearer challenge (the token service is /token), not Basic
    immutable: bool = True
    # blobs are served elsewhere, as ECR does from S3: a GET or HEAD of one is redirected to ``redirect`` (another
    # server on this store), under a URL signed for GET: it refuses a HEAD, and any Authorization header
    redirect: str = ""
    unavailable: int = 0  # the next this many blob GETs are answered 503 (a registry that cannot now)
    tokens: set[str] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def put_blob(self, repository: str, data: bytes) -> str:
        digest = digest_of(data)
        self.blobs.setdefault(repository, {})[digest] = data
        return digest

    def put_image(self, repository: str, tag: str, layers: list[bytes], platform: str = "linux/amd64") -> str:
        """An image (config + layers) under ``tag``: its manifest's digest."""
        os_name, arch = platform.split("/")
        config = json.dumps({"os": os_name, "architecture": arch, "rootfs": {"type": "layers"}}).encode()
        manifest = {
            "schemaVersion": 2,
            "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
            "config": {
                "mediaType": "application/vnd.docker.container.image.v1+json",
                "size": len(config),
                "digest": self.put_blob(repository, config),
            },
            "layers": [
                {
                    "mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip",
                    "size": len(layer),
                    "digest": self.put_blob(repository, layer),
                }
                for layer in layers
            ],
        }
        body = json.dumps(manifest, indent=3).encode()  # a registry keeps the bytes as pushed: not re-serialised
        return self.put_manifest(repository, tag, body, manifest["mediaType"])

    def put_manifest(self, repository: str, tag: str, body: bytes, media_type: str) -> str:
        digest = digest_of(body)
        refs = self.manifests.setdefault(repository, {})
        refs[digest] = refs[tag] = (body, media_type)
        return digest

    def count(self, method: str, part: str = "") -> int:
        return sum(1 for m, path in self.calls if m == method and part in path)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _error(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        body = json.dumps({"errors": [{"code": code, "message": message}]}).encode()
        self._send(status, body, {"Content-Type": "application/json", **(headers or {})})

    def _body(self) -> bytes:
        if "chunked" in (self.headers.get("Transfer-Encoding") or ""):
            data = bytearray()
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    self.rfile.readline()
                    return bytes(data)
                data += self.rfile.read(size)
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _authorized(self) -> bool:
        store = self.server.store
        if store.user is None:
            return True
        given = self.headers.get("Authorization") or ""
        if store.bearer:
            return given.removeprefix("Bearer ") in store.tokens
        user, password = store.user
        return given == "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()

    def _handle(self) -> None:
        store = self.server.store
        url = urlsplit(self.path)
        with store.lock:
            store.calls.append((self.command, self.path))
        body = self._body() if self.command in ("PUT", "PATCH", "POST") else b""
        if url.path == "/token":
            return self._token(parse_qs(url.query))
        if url.path.startswith("/s3/"):
            return self._signed(url.path)
        if not self._authorized():
            host = f"127.0.0.1:{self.server.server_address[1]}"
            challenge = (
                f'Bearer realm="http://{host}/token",service="fake",scope="repository:x:pull"'
                if store.bearer
                else 'Basic realm="fake"'
            )
            return self._error(401, "UNAUTHORIZED", "authentication required", {"WWW-Authenticate": challenge})
        match = PATH.match(url.path)
        if match is None:
            return self._send(200, b"{}")
        name, kind, rest = match["name"], match["kind"], match["rest"]
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        with store.lock:
            if kind == "manifests":
                return self._manifest(name, rest, body)
            if kind == "blobs/uploads":
                return self._upload(name, rest, query, body)
            return self._blob(name, rest)

    do_GET = do_HEAD = do_PUT = do_PATCH = do_POST = _handle

    def _token(self, query: dict[str, list[str]]) -> None:
        store = self.server.store
        assert store.user is not None
        user, password = store.user
        if self.headers.get("Authorization") != "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode():
            return self._error(401, "UNAUTHORIZED", "bad credentials for a token")
        token = secrets.token_hex(8)
        store.tokens.add(token)
        self._send(200, json.dumps({"token": token}).encode(), {"Content-Type": "application/json"})

    def _manifest(self, name: str, reference: str, body: bytes) -> None:
        store = self.server.store
        refs = store.manifests.setdefault(name, {})
        if self.command in ("GET", "HEAD"):
            if reference not in refs:
                return self._error(404, "MANIFEST_UNKNOWN", f"manifest unknown: {reference}")
            data, media_type = refs[reference]
            return self._send(200, data, {"Content-Type": media_type, "Docker-Content-Digest": digest_of(data)})
        media_type = self.headers.get("Content-Type", "")
        data = json.loads(body)
        parts = [data.get("config") or {}, *(data.get("layers") or []), *(data.get("manifests") or [])]
        for part in parts:
            if part.get("digest") and part["digest"] not in store.blobs.get(name, {}) and part["digest"] not in refs:
                return self._error(400, "MANIFEST_BLOB_UNKNOWN", f"blob unknown: {part['digest']}")
        if store.immutable and reference in refs and digest_of(refs[reference][0]) != digest_of(body):
            return self._error(400, "TAG_INVALID", f"tag {reference} is immutable")
        digest = store.put_manifest(name, reference, body, media_type)
        self._send(201, b"", {"Docker-Content-Digest": digest, "Location": f"/v2/{name}/manifests/{digest}"})

    def _signed(self, path: str) -> None:
        _, _, name, digest = path.split("/", 3)
        data = self.server.store.blobs.get(name, {}).get(digest)
        if self.command != "GET" or self.headers.get("Authorization"):
            return self._send(403, b"SignatureDoesNotMatch")
        if data is None:
            return self._send(404, b"NoSuchKey")
        self._send(200, data, {"Content-Type": "application/octet-stream"})

    def _blob(self, name: str, digest: str) -> None:
        if self.command == "GET" and self.server.store.unavailable > 0:
            self.server.store.unavailable -= 1
            return self._error(503, "UNAVAILABLE", "slow down")
        data = self.server.store.blobs.get(name, {}).get(digest)
        if data is None:
            return self._error(404, "BLOB_UNKNOWN", f"blob unknown: {digest}")
        if self.server.store.redirect:
            return self._send(307, b"", {"Location": f"{self.server.store.redirect}/s3/{name}/{digest}?sig=get"})
        self._send(200, data, {"Docker-Content-Digest": digest, "Content-Type": "application/octet-stream"})

    def _upload(self, name: str, rest: str, query: dict[str, str], body: bytes) -> None:
        store = self.server.store
        if self.command == "POST":
            mount, source = query.get("mount"), query.get("from")
            if mount and source and mount in store.blobs.get(source, {}):
                store.blobs.setdefault(name, {})[mount] = store.blobs[source][mount]
                return self._send(201, b"", {"Docker-Content-Digest": mount, "Location": f"/v2/{name}/blobs/{mount}"})
            upload = secrets.token_hex(6)
            store.uploads[upload] = (name, bytearray())
            return self._send(202, b"", {"Location": f"/v2/{name}/blobs/uploads/{upload}?_state=abc"})
        if rest not in store.uploads:
            return self._error(404, "BLOB_UPLOAD_UNKNOWN", "no such upload")
        store.uploads[rest][1].extend(body)
        if self.command == "PATCH":
            return self._send(202, b"", {"Location": f"/v2/{name}/blobs/uploads/{rest}?_state=def"})
        data = bytes(store.uploads.pop(rest)[1])
        if digest_of(data) != query.get("digest"):
            return self._error(400, "DIGEST_INVALID", "the bytes do not match the digest")
        store.blobs.setdefault(name, {})[query["digest"]] = data
        self._send(201, b"", {"Docker-Content-Digest": query["digest"]})


class Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, store: Store) -> None:
        self.store = store
        super().__init__(("127.0.0.1", 0), Handler)

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.server_address[1]}"


@contextmanager
def running(store: Store | None = None) -> Iterator[Server]:
    server = Server(store or Store())
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
