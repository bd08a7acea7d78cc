"""The HTTP/1.1 client the router and the mirror call model servers with: keep-alive, POST only.

Why not httpx (used everywhere else in the project): the router makes one upstream call for every
client request, and a copy for every mirrored one, so the client's own CPU is most of the
router's cost. Measured on the project's 2-core machine, one POST of an iris row to a model
server on 127.0.0.1 costs about 0.9 ms of CPU with an ``httpx.AsyncClient``, 0.26 ms with
aiohttp and 0.07 ms with this (issue 15; ``python -m benchmarks.upstream_client`` measures the
three in one run). The router's whole budget per request is 1 ms.

It does one thing: POST a body known in advance to ``base URL + path`` and read the whole answer.
Responses are parsed by httptools (llhttp, as uvicorn parses requests): Content-Length,
chunked, or read-until-close bodies. Connections are kept per origin and reused; an idle one the
server closed is noticed (its ``connection_lost`` ran) and dropped before reuse, and a request
that finds its reused connection closed before any answer byte is sent again once on a new
connection (the server cannot have answered it). No redirects, proxies, cookies, compression or
HTTP/2: model servers answer plain HTTP/1.1.

Errors are named as httpx names them (``ConnectError``, ``ReadError``, ``RemoteProtocolError``,
``ConnectTimeout``, ``ReadTimeout``, ``PoolTimeout``), since the router puts the name in the 502
or 504 it answers, and users and tests read those names.
"""

from __future__ import annotations

import asyncio
import os
import ssl
import urllib.parse
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field

import httptools

DEFAULT_MAX_RESPONSE_BYTES = 64 << 20


class UpstreamError(Exception):
    """A request that got no usable answer; the class name says why (as httpx's do)."""


class ConnectError(UpstreamError):
    """No connection could be opened (refused, unresolvable, TLS failed)."""


class ReadError(UpstreamError):
    """The connection failed while sending or waiting for the answer (e.g. reset)."""


class RemoteProtocolError(UpstreamError):
    """The server broke HTTP: closed without a full answer, or sent something unparseable."""


class UpstreamTimeout(UpstreamError):
    """No answer in time."""


class ConnectTimeout(UpstreamTimeout):
    pass


class ReadTimeout(UpstreamTimeout):
    pass


class PoolTimeout(UpstreamTimeout):
    """Every connection the pool may open was busy for the whole timeout."""


@dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[str, str]  # names lower-cased; a repeated header keeps its last value
    body: bytes


@dataclass
class _Origin:
    host: str
    port: int
    tls: bool
    host_header: str
    idle: deque[_Connection] = field(default_factory=deque)


class _Connection(asyncio.Protocol):
    """One keep-alive connection; answers one request at a time (no pipelining)."""

    def __init__(self, max_body: int) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self._max_body = max_body
        self._parser = httptools.HttpResponseParser(self)
        self._waiter: asyncio.Future[Answer] | None = None
        self._received_any = False
        self._headers: dict[str, str] = {}
        self._chunks: list[bytes] = []
        self._size = 0
        self._until_close = False  # neither Content-Length nor chunked: the body ends with the connection

    # -- asyncio.Protocol --------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # An asyncio.Transport, though uvloop's transports are not registered as subclasses of it.
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self._received_any = True
        if self._waiter is None:  # bytes nobody asked for: the connection cannot be trusted
            self._fail(RemoteProtocolError("the server sent data without a request"))
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(RemoteProtocolError(f"malformed answer: {exc}"))

    def eof_received(self) -> bool:
        self._closed_by_peer()
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if exc is not None and self._waiter is not None and not self._waiter.done():
            self._fail(ReadError(str(exc) or type(exc).__name__))
        else:
            self._closed_by_peer()

    # -- httptools callbacks -----------------------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        h = self._headers
        self._until_close = "content-length" not in h and "chunked" not in h.get("transfer-encoding", "").lower()

    def on_body(self, body: bytes) -> None:
        self._size += len(body)
        if self._size > self._max_body:
            self._fail(RemoteProtocolError(f"answer larger than {self._max_body} bytes"))
            return
        self._chunks.append(body)

    def on_message_complete(self) -> None:
        status = self._parser.get_status_code()
        if 100 <= status < 200:  # an interim answer (e.g. 103): the real one follows
            self._headers = {}
            return
        if not self._parser.should_keep_alive():
            self._close()
        self._finish(Answer(status, self._headers, b"".join(self._chunks)))

    # -- one request -------------------------------------------------------------------------------

    def send(self, request: bytes) -> asyncio.Future[Answer]:
        assert self.transport is not None and self._waiter is None
        self._waiter = asyncio.get_running_loop().create_future()
        self._received_any = False
        self._headers, self._chunks, self._size, self._until_close = {}, [], 0, False
        self.transport.write(request)
        return self._waiter

    @property
    def received_any(self) -> bool:
        return self._received_any

    def reusable(self) -> bool:
        return not self.closed and self._waiter is None and self.transport is not None and not self.transport.is_closing()

    def _finish(self, answer: Answer) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(answer)

    def _fail(self, exc: UpstreamError) -> None:
        waiter, self._waiter = self._waiter, None
        self._close()
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)

    def _closed_by_peer(self) -> None:
        self.closed = True
        if self._waiter is None or self._waiter.done():
            return
        if self._until_close and self._received_any:
            self._finish(Answer(self._parser.get_status_code(), self._headers, b"".join(self._chunks)))
        else:
            self._fail(RemoteProtocolError("server disconnected without sending a full answer"))

    def _close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        """Drop the connection now (a request on it was cancelled or timed out mid-way)."""
        self._waiter = None
        self._close()


class UpstreamPool:
    """Keep-alive connections to model servers, shared by the tasks of one event loop.

    ``timeout`` bounds a whole request: waiting for a free connection, sending, and reading the
    whole answer; ``connect_timeout`` bounds opening a connection within it.
    """

    def __init__(
        self,
        *,
        timeout: float,
        connect_timeout: float,
        max_connections: int = 200,
        max_idle_per_origin: int = 50,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
    ) -> None:
        if timeout <= 0 or connect_timeout <= 0 or max_connections < 1 or max_idle_per_origin < 0:
            raise ValueError("timeouts must be positive, max_connections >= 1, max_idle_per_origin >= 0")
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.max_idle_per_origin = max_idle_per_origin
        self.max_response_bytes = max_response_bytes
        self._slots = asyncio.Semaphore(max_connections)
        self._origins: dict[str, _Origin] = {}
        self._tls: ssl.SSLContext | None = None
        self._closed = False

    async def post(self, base_url: str, path: str, body: bytes, headers: Mapping[str, str]) -> Answer:
        """POST ``body`` to ``base_url + path`` (``base_url`` without a path, as the routing has it)."""
        origin = self._origin(base_url)
        request = _request(origin.host_header, path, body, headers)
        waiting_for_a_slot = True
        try:
            async with asyncio.timeout(self.timeout):
                await self._slots.acquire()
                waiting_for_a_slot = False
                try:
                    return await self._exchange(origin, request)
                finally:
                    self._slots.release()
        except TimeoutError:
            if waiting_for_a_slot:
                raise PoolTimeout(f"every connection was busy for {self.timeout:g} s") from None
            raise ReadTimeout(f"no answer within {self.timeout:g} s") from None

    async def _exchange(self, origin: _Origin, request: bytes) -> Answer:
        while True:
            conn, reused = self._idle(origin), True
            if conn is None:
                conn, reused = await self._connect(origin), False
            try:
                answer = await conn.send(request)
            except (ReadError, RemoteProtocolError):
                if reused and not conn.received_any:
                    # The server closed this idle connection as we wrote on it: it cannot have
                    # answered, so the request goes again on a new connection (once: that one is fresh).
                    continue
                raise
            except BaseException:  # cancelled or timed out mid-way: the connection's state is unknown
                conn.abort()
                raise
            if conn.reusable() and len(origin.idle) < self.max_idle_per_origin and not self._closed:
                origin.idle.append(conn)
            else:
                conn.abort()
            return answer

    def _idle(self, origin: _Origin) -> _Connection | None:
        while origin.idle:
            conn = origin.idle.pop()  # the most recently used: the least likely to have timed out
            if conn.reusable():
                return conn
        return None

    async def _connect(self, origin: _Origin) -> _Connection:
        loop = asyncio.get_running_loop()
        tls: ssl.SSLContext | None = None
        if origin.tls:
            tls = self._tls = self._tls or ssl.create_default_context()
        try:
            async with asyncio.timeout(self.connect_timeout):
                _, conn = await loop.create_connection(
                    lambda: _Connection(self.max_response_bytes),
                    origin.host,
                    origin.port,
                    ssl=tls,
                    server_hostname=origin.host if tls else None,
                )
        except TimeoutError:
            raise ConnectTimeout(f"no connection to {origin.host}:{origin.port} within {self.connect_timeout:g} s") from None
        except OSError as exc:  # refused, unreachable, unresolvable (socket.gaierror), TLS (ssl.SSLError)
            # asyncio says "Connect call failed (...)"; the errno's own words say why.
            reason = f"[Errno {exc.errno}] {os.strerror(exc.errno)}" if exc.errno else (str(exc) or type(exc).__name__)
            raise ConnectError(reason) from None
        return conn

    def _origin(self, base_url: str) -> _Origin:
        origin = self._origins.get(base_url)
        if origin is None:
            parts = urllib.parse.urlsplit(base_url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError(f"expected an http(s) base URL, got {base_url!r}")
            tls = parts.scheme == "https"
            port = parts.port or (443 if tls else 80)
            default = port == (443 if tls else 80)
            host = parts.hostname
            shown = f"[{host}]" if ":" in host else host  # an IPv6 literal keeps its brackets in Host
            origin = _Origin(host=host, port=port, tls=tls, host_header=shown if default else f"{shown}:{port}")
            # Routings change (each version is a new server): forget servers whose connections are
            # all gone, so a long-lived router does not keep one entry per server it ever called.
            for url, known in list(self._origins.items()):
                if not any(conn.reusable() for conn in known.idle):
                    del self._origins[url]
            self._origins[base_url] = origin
        return origin

    async def aclose(self) -> None:
        self._closed = True
        for origin in self._origins.values():
            while origin.idle:
                origin.idle.pop().abort()


def _request(host: str, path: str, body: bytes, headers: Mapping[str, str]) -> bytes:
    lines = [f"POST {path} HTTP/1.1", f"host: {host}", f"content-length: {len(body)}"]
    for name, value in headers.items():
        # Values come from client requests the server already parsed (no CR or LF can be in
        # them); checked again because a header line is where a request could be smuggled.
        if "\r" in value or "\n" in value or "\r" in name or "\n" in name or ":" in name:
            raise ValueError(f"header {name!r} cannot be sent: it has a line break or a colon in its name")
        lines.append(f"{name}: {value}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
