"""Entry point: serve the API on HOST:PORT from the environment."""

from __future__ import annotations

import logging
import os

import uvicorn


def main() -> None:
    logging.basicConfig(
        level=os.environ.get("LOG_LEVEL", "INFO").upper(),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    uvicorn.run(
        "app.main:app",
        host=os.environ.get("HOST", "127.0.0.1"),
        port=int(os.environ.get("PORT", "8000")),
        access_log=False,  # app.access logs method, path, status and latency; never headers or bodies
        log_config=None,  # keep the logging set up above
    )


if __name__ == "__main__":
    main()
