"""The Car Rental API: ``create_app`` wires settings, AWS clients and routes; ``app`` is the process's app."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable

from fastapi import FastAPI, Request, Response

from app.auth import JwksCache, TokenVerifier
from app.aws import AwsClients, make_clients
from app.config import Settings
from app.errors import install_error_handlers
from app.kyc import KycService
from app.limits import BodyLimit
from app.routes import router
from app.services import Services
from app.store import Store

log = logging.getLogger("app.access")


def create_app(settings: Settings | None = None, clients: AwsClients | None = None) -> FastAPI:
    """The API for ``settings`` (default: from the environment) and ``clients`` (default: made here)."""
    settings = settings or Settings.from_env()
    clients = clients or make_clients(settings)
    store = Store(
        clients.dynamodb,
        cars_table=settings.cars_table,
        bookings_table=settings.bookings_table,
        kyc_table=settings.kyc_table,
    )
    kyc = KycService(
        store,
        clients.s3,
        clients.s3_presign,
        bucket=settings.kyc_bucket,
        max_bytes=settings.kyc_max_bytes,
        url_ttl=settings.kyc_upload_ttl,
    )
    verifier = TokenVerifier(
        JwksCache(settings.jwks_url, timeout=settings.jwks_timeout), settings.issuer, settings.client_id
    )

    # The interactive docs and the schema only where asked for (API_DOCS): served to anyone, they list every route
    # and the build's commit, and the docs pages load their scripts from a CDN
    docs = settings.api_docs
    app = FastAPI(
        title="Car Rental API",
        version=settings.git_sha,
        docs_url="/docs" if docs else None,
        redoc_url="/redoc" if docs else None,
        openapi_url="/openapi.json" if docs else None,
    )
    app.state.services = Services(settings=settings, clients=clients, store=store, kyc=kyc, verifier=verifier)
    install_error_handlers(app)
    app.include_router(router)
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)

    @app.middleware("http")
    async def access_log(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        # Method, path and status only: never headers (Authorization), query strings or bodies.
        started = time.perf_counter()
        response = await call_next(request)
        elapsed = (time.perf_counter() - started) * 1000
        level = logging.DEBUG if request.url.path == "/health" else logging.INFO  # the HEALTHCHECK polls it
        log.log(level, "%s %s %d %.1fms", request.method, request.url.path, response.status_code, elapsed)
        return response

    return app


app = create_app()
