"""The sandbox process: moto in server mode on 127.0.0.1, extended, plus the runtimes it drives.

One process holds moto's in-memory backends and the extensions that make them real (ECS tasks as
containers, ALB listeners, the registry front, API Gateway stages). Moto's request handling and the
extensions' reconcilers share one lock, so a reconciler never sees a half-applied API call.

Run by ``inv sandbox.up`` as ``python -m sandbox serve --config deploy.toml``.
"""

from __future__ import annotations

import json
import logging
import signal
import threading
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from typing import Any, Protocol

import docker
from moto.backends import get_backend
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
from werkzeug.serving import BaseWSGIServer, make_server

from sandbox.settings import ACCOUNT_ID, STATUS_PATH, Settings

log = logging.getLogger("sandbox")

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


@dataclass(frozen=True)
class PartStatus:
    part: str
    address: str
    healthy: bool
    detail: str = ""


class Extension(Protocol):
    """One thing moto falls short on, fixed. Installed before the server starts serving."""

    name: str

    def install(self, sandbox: Sandbox) -> None:
        """Patch moto (before any request)."""

    def start(self) -> None:
        """Start threads and servers."""

    def stop(self) -> None:
        """Stop them, and everything they started (containers included)."""

    def status(self) -> list[PartStatus]:
        """Parts for ``inv sandbox.status``."""


class Sandbox:
    def __init__(self, settings: Settings, docker_client: docker.DockerClient, extensions: list[Extension]) -> None:
        self.settings = settings
        self.docker = docker_client
        self.lock = threading.RLock()
        self.extensions = extensions
        self._server: BaseWSGIServer | None = None
        self._stopped = threading.Event()

    def backend(self, service: str) -> Any:
        """Moto's backend of ``service`` for the sandbox's account and region."""
        return get_backend(service)[ACCOUNT_ID][self.settings.region]  # type: ignore[call-overload]

    # -- the WSGI app: moto behind the lock, plus the status endpoint -----------------------------
    def wsgi(self) -> WSGIApp:
        moto_app = DomainDispatcherApplication(create_backend_app)

        def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
            if environ.get("PATH_INFO") == STATUS_PATH:
                body = json.dumps([asdict(p) for p in self.status()]).encode()
                start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
                return [body]
            with self.lock:
                return list(moto_app(environ, start_response))

        return app

    def status(self) -> list[PartStatus]:
        parts = [PartStatus("aws endpoint", self.settings.endpoint_url, True, "moto, extended")]
        for extension in self.extensions:
            try:
                parts.extend(extension.status())
            except Exception as exc:  # a broken part must not hide the others
                parts.append(PartStatus(extension.name, "", False, f"status failed: {exc}"))
        return parts

    # -- lifecycle -------------------------------------------------------------------------------------
    def serve(self) -> None:
        for extension in self.extensions:
            extension.install(self)
        self._server = make_server(
            "127.0.0.1", self.settings.aws_port, self.wsgi(), threaded=True, request_handler=MotoRequestHandler
        )
        for extension in self.extensions:
            extension.start()
        signal.signal(signal.SIGTERM, lambda *_: self.shutdown())
        signal.signal(signal.SIGINT, lambda *_: self.shutdown())
        log.info("sandbox serving AWS on %s", self.settings.endpoint_url)
        thread = threading.Thread(target=self._server.serve_forever, name="moto", daemon=True)
        thread.start()
        self._stopped.wait()
        log.info("sandbox stopping")
        for extension in reversed(self.extensions):
            try:
                extension.stop()
            except Exception:
                log.exception("stopping %s failed", extension.name)
        self._server.shutdown()
        thread.join(timeout=10)
        log.info("sandbox stopped")

    def shutdown(self) -> None:
        self._stopped.set()
