"""A request-body size limit for every endpoint of an ASGI app (the router's, the comparator's,
the local model server's).

Endpoints that parse JSON through FastAPI read the whole body before any handler could check
its size; this middleware bounds it first, so no endpoint can be made to hold an unbounded body.
The one place bodies are bounded: an endpoint that needs a smaller bound than the app's (the
comparator's small admin documents) gets it here too, by path.
"""

from __future__ import annotations

from collections.abc import Mapping

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send


def _answer(status: int, message: str) -> JSONResponse:
    return JSONResponse(status_code=status, content={"error": message})


class BodySizeLimit:
    """Refuse bodies over ``max_bytes`` with 413 on every endpoint, before any handler runs.

    The body is read here (both apps need all of it anyway: to forward, mirror, pair or parse)
    and replayed to the app, so a chunked upload without Content-Length is bounded too.
    """

    def __init__(self, app: ASGIApp, max_bytes: int, path_limits: Mapping[str, int] | None = None) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.path_limits = dict(path_limits or {})  # exact path -> its own, usually smaller, bound

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        body = await read_body(scope, receive, send, self.path_limits.get(scope["path"], self.max_bytes))
        if body is None:
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


async def read_body(scope: Scope, receive: Receive, send: Send, limit: int) -> bytes | None:
    """The whole request body, at most `limit` bytes; None when it was refused (answered 400 or
    413 here) or the client left before sending it all. The router's predict path, which runs
    without this middleware, bounds its bodies with it too."""
    declared = None
    for name, value in scope["headers"]:
        if name == b"content-length":
            declared = value
    if declared is not None:
        try:
            size = int(declared)
        except ValueError:
            await _answer(400, "Content-Length is not an integer")(scope, receive, send)
            return None
        if size > limit:
            await _too_large(limit, scope, receive, send)
            return None
    chunks: list[bytes] = []
    total = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunk = message.get("body", b"")
        total += len(chunk)
        if total > limit:
            await _too_large(limit, scope, receive, send)
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


async def _too_large(limit: int, scope: Scope, receive: Receive, send: Send) -> None:
    await _answer(413, f"request body larger than {limit} bytes")(scope, receive, send)
