"""Entry point: serve the API on HOST:PORT from the environment.

The listening socket is opened first, before the app and its dependencies are imported (about a second):
a connection made while the process starts, such as the load balancer's first health check of a new task,
waits in the socket's backlog and is answered as soon as the app is up, instead of being refused and
retried one health-check interval (5 s or more) later.
"""

from __future__ import annotations

import logging
import os
import socket


def listening_socket(host: str, port: int) -> socket.socket:
    """A socket bound to (host, port) and listening, as uvicorn would open it."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    return socket.create_server((host, port), family=family, backlog=2048)


def main() -> None:
    logging.basicConfig(
        level=os.environ.get("LOG_LEVEL", "INFO").upper(),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    sock = listening_socket(os.environ.get("HOST", "127.0.0.1"), int(os.environ.get("PORT", "8000")))

    import uvicorn  # after the socket is open: see the module docstring

    config = uvicorn.Config(
        "app.main:app",
        access_log=False,  # app.access logs method, path, status and latency; never headers or bodies
        log_config=None,  # keep the logging set up above
    )
    uvicorn.Server(config).run(sockets=[sock])


if __name__ == "__main__":
    main()
