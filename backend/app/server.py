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


def configure_logging(level: str) -> None:
    """The app's logging at ``level`` (LOG_LEVEL). botocore and urllib3 log whole requests at DEBUG: the task's
    session token, the users' items; they stay at INFO whatever it says (as the login function keeps them)."""
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s")
    for name in ("botocore", "boto3", "urllib3", "s3transfer"):
        logging.getLogger(name).setLevel(max(logging.INFO, logging.getLogger(name).level))


def main() -> None:
    configure_logging(os.environ.get("LOG_LEVEL", "INFO"))
    sock = listening_socket(os.environ.get("HOST", "127.0.0.1"), int(os.environ.get("PORT", "8000")))

    import uvicorn  # after the socket is open: see the module docstring

    config = uvicorn.Config(
        "app.main:app",
        access_log=False,  # app.access logs method, path, status and latency; never headers or bodies
        log_config=None,  # keep the logging set up above
        # longer than the load balancer's idle timeout (60 s): uvicorn's 5 s default closed connections the ALB
        # then reused, which it answers with a 502 (AWS: a target's keep-alive must outlast the idle timeout)
        timeout_keep_alive=65,
    )
    uvicorn.Server(config).run(sockets=[sock])


if __name__ == "__main__":
    main()
