"""The Car Rental API (minimal until the application issue lands: health and version)."""

from __future__ import annotations

import os

from fastapi import FastAPI

app = FastAPI(title="Car Rental API")


@app.get("/health")
def health() -> dict[str, str]:
    """Shallow health: the process answers; no dependency is called."""
    return {"status": "ok"}


@app.get("/version")
def version() -> dict[str, str]:
    """The git SHA this image was built from."""
    return {"git_sha": os.environ.get("GIT_SHA", "unknown")}
