"""The request body's size, bounded before the API reads it.

FastAPI reads and parses a route's whole body before its dependencies run, the token check among them: without a
bound, an anonymous request of a few megabytes of JSON costs the task tens of times its size in memory before the
401 (a task has 512 MiB). A body announced larger than the bound (Content-Length) is answered 413 at once, unread;
one sent without a length (chunked) is counted as it is read and answered 413 once it passes the bound.
"""

from __future__ import annotations

from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.errors import error_body


def _too_large(max_bytes: int) -> str:
    return f"the request body is larger than {max_bytes} bytes"


class BodyLimit:
    """ASGI middleware: request bodies of at most ``max_bytes``."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = Headers(scope=scope).get("content-length", "")
        if length.isdigit() and int(length) > self.max_bytes:
            response = JSONResponse(
                error_body("payload_too_large", _too_large(self.max_bytes)),
                status_code=413,
                headers={"Connection": "close"},  # the rest of the body is not read
            )
            await response(scope, receive, send)
            return
        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:  # the API's error handler answers it, as JSON
                    raise HTTPException(413, _too_large(self.max_bytes))
            return message

        await self.app(scope, counted, send)
