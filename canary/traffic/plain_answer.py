"""Answers sent as plain ASGI messages, by the request paths that skip FastAPI (the router's
predictions, the comparator's logger events): a Response object per request costs more than the
two messages it ends up sending."""

from __future__ import annotations

import json

from starlette.types import Send

JSON = (b"content-type", b"application/json")


async def send_answer(send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
    """A whole answer: status, Content-Length, `headers`, then `body`."""
    await send({"type": "http.response.start", "status": status, "headers": [(b"content-length", b"%d" % len(body)), *headers]})
    await send({"type": "http.response.body", "body": body})


async def send_error(send: Send, status: int, message: str, headers: list[tuple[bytes, bytes]] | None = None) -> None:
    """``{"error": message}`` as Starlette's JSONResponse renders it, so these errors look like the FastAPI endpoints'."""
    body = json.dumps({"error": message}, ensure_ascii=False, separators=(",", ":")).encode()
    await send_answer(send, status, body, [JSON, *(headers or [])])
