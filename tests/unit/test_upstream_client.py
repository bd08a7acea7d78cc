"""canary/traffic/upstream.py against scripted servers on 127.0.0.1: what it sends, how it reads
every way an HTTP/1.1 answer can end, and how each failure is named (the router puts the name
in its 502/504, so these names are what users read)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import pytest

from canary.traffic.upstream import (
    ConnectError,
    ConnectTimeout,
    PoolTimeout,
    ReadError,
    ReadTimeout,
    RemoteProtocolError,
    UpstreamPool,
)
from tests.fixtures.prometheus import free_port

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def read_request(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    """One request's head and body (by its Content-Length, as the client always sends one)."""
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:"))
    return head, await reader.readexactly(length)


@asynccontextmanager
async def serving(handler: Handler) -> AsyncIterator[tuple[str, list[asyncio.StreamWriter]]]:
    """A server on a free loopback port; yields its base URL and the connections it accepted."""
    accepted: list[asyncio.StreamWriter] = []

    async def on_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)
        try:
            await handler(reader, writer)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(on_connection, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}", accepted
    finally:
        server.close()
        for writer in accepted:
            writer.close()


def ok(body: bytes = b'{"predictions":[0]}', extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n" + extra + b"content-length: %d\r\n\r\n" % len(body) + body


def pool(timeout: float = 2.0, **kwargs: int) -> UpstreamPool:
    return UpstreamPool(timeout=timeout, connect_timeout=min(timeout, 1.0), **kwargs)


async def test_posts_the_body_with_its_headers_and_reuses_the_connection() -> None:
    seen: list[tuple[bytes, bytes]] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            seen.append(await read_request(reader))
            writer.write(ok(extra=b"Inference-Header-Content-Length: 7\r\n"))
            await writer.drain()

    async with serving(handler) as (url, accepted):
        client = pool()
        for i in range(3):
            answer = await client.post(url, "/v1/models/iris:predict", b'{"instances":[%d]}' % i, {"x-request-id": f"r{i}"})
            assert answer.status == 200 and answer.body == b'{"predictions":[0]}'
            assert answer.headers["inference-header-content-length"] == "7"  # names lower-cased
        await client.aclose()
    assert len(accepted) == 1  # kept alive
    head, body = seen[2]
    lines = head.decode().split("\r\n")
    assert lines[0] == "POST /v1/models/iris:predict HTTP/1.1"
    port = url.rsplit(":", 1)[1]
    assert f"host: 127.0.0.1:{port}" in lines and "x-request-id: r2" in lines and "content-length: 17" in lines
    assert body == b'{"instances":[2]}'


async def test_reads_chunked_and_until_close_answers_and_skips_interim_ones() -> None:
    answers = iter([
        b"HTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\n" + ok(b"after-interim"),
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
        b"HTTP/1.1 503 Service Unavailable\r\nconnection: close\r\n\r\nno length, ends with the connection",
    ])  # fmt: skip

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            await read_request(reader)
            answer = next(answers)
            writer.write(answer)
            await writer.drain()
            if b"connection: close" in answer:
                writer.close()
                return

    async with serving(handler) as (url, _):
        client = pool()
        first = await client.post(url, "/p", b"{}", {})
        assert (first.status, first.body) == (200, b"after-interim")
        assert (await client.post(url, "/p", b"{}", {})).body == b"hello world"
        last = await client.post(url, "/p", b"{}", {})
        assert (last.status, last.body) == (503, b"no length, ends with the connection")
        await client.aclose()


async def test_an_idle_connection_the_server_closed_is_not_reused() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(ok())
        await writer.drain()
        writer.close()  # as uvicorn does after its keep-alive timeout, with no Connection: close

    async with serving(handler) as (url, accepted):
        client = pool()
        for _ in range(3):
            assert (await client.post(url, "/p", b"{}", {})).status == 200
            await asyncio.sleep(0.05)  # the close reaches the client
        await client.aclose()
    assert len(accepted) == 3


async def test_a_request_on_a_connection_closed_as_it_was_sent_goes_again_once() -> None:
    # The server answers and then, without a word, drops the connection when the next request
    # comes: the client cannot have had an answer, so it sends it again on a new connection.
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(ok())
        await writer.drain()
        await reader.readuntil(b"\r\n\r\n")
        writer.transport.abort()

    async with serving(handler) as (url, accepted):
        client = pool()
        assert (await client.post(url, "/p", b"{}", {})).status == 200
        assert (await client.post(url, "/p", b"{}", {})).status == 200
        await client.aclose()
    assert len(accepted) == 2


@pytest.mark.parametrize(
    ("reply", "error", "words"),
    [
        (b"", RemoteProtocolError, "without sending a full answer"),
        (b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nshort", RemoteProtocolError, "without sending a full answer"),
        (b"NOT HTTP AT ALL\r\n\r\n", RemoteProtocolError, "malformed answer"),
        (b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n" + b"x" * 100, RemoteProtocolError, "larger than 64 bytes"),
    ],
    ids=["closed-at-once", "closed-mid-body", "garbage", "too-large"],
)
async def test_broken_answers_are_named_and_the_connection_dropped(reply: bytes, error: type[Exception], words: str) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(reply)
        await writer.drain()
        writer.close()

    async with serving(handler) as (url, _):
        client = pool(max_response_bytes=64)
        with pytest.raises(error, match=words):
            await client.post(url, "/p", b"{}", {})
        await client.aclose()


async def test_a_reset_connection_is_a_read_error() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nab")
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.transport.abort()  # RST

    async with serving(handler) as (url, _):
        client = pool()
        with pytest.raises((ReadError, RemoteProtocolError)):
            await client.post(url, "/p", b"{}", {})
        await client.aclose()


async def test_refused_and_slow_servers() -> None:
    client = pool(timeout=0.3)
    with pytest.raises(ConnectError, match="refused"):
        await client.post(f"http://127.0.0.1:{free_port()}", "/p", b"{}", {})

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        await asyncio.sleep(5)

    async with serving(silent) as (url, _):
        started = asyncio.get_running_loop().time()
        with pytest.raises(ReadTimeout, match="0.3 s"):
            await client.post(url, "/p", b"{}", {})
        assert asyncio.get_running_loop().time() - started < 1.0
    await client.aclose()


async def test_connect_timeout_is_its_own() -> None:
    # A listener that never accepts, with its one-place queue taken: the kernel drops further
    # SYNs, so a connect hangs as it does to a host that is down.
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    filler = [socket.socket() for _ in range(3)]
    for s in filler:
        s.setblocking(False)
        s.connect_ex(("127.0.0.1", port))  # in progress or done: either way they fill the queue
    try:
        client = UpstreamPool(timeout=2.0, connect_timeout=0.2)
        started = asyncio.get_running_loop().time()
        with pytest.raises(ConnectTimeout, match="0.2 s"):
            await client.post(f"http://127.0.0.1:{port}", "/p", b"{}", {})
        assert asyncio.get_running_loop().time() - started < 1.0
    finally:
        for s in filler:
            s.close()
        listener.close()


async def test_a_busy_pool_is_a_pool_timeout() -> None:
    client = pool(timeout=0.2, max_connections=1)
    await client._slots.acquire()  # the only connection, busy for longer than the timeout
    with pytest.raises(PoolTimeout, match="busy"):
        await client.post("http://127.0.0.1:9", "/p", b"{}", {})


async def test_header_values_that_could_split_the_request_are_refused() -> None:
    client = pool()
    for headers in ({"x-request-id": "a\r\nx-evil: 1"}, {"x-a\nb": "1"}, {"a:b": "1"}):
        with pytest.raises(ValueError, match="cannot be sent"):
            await client.post("http://127.0.0.1:9", "/p", b"{}", headers)
    with pytest.raises(ValueError, match="http"):
        await client.post("ftp://127.0.0.1:9", "/p", b"{}", {})


def test_settings_are_checked() -> None:
    for bad in ({"timeout": 0, "connect_timeout": 1}, {"timeout": 1, "connect_timeout": -1}):
        with pytest.raises(ValueError):
            UpstreamPool(**bad)
    with pytest.raises(ValueError):
        UpstreamPool(timeout=1, connect_timeout=1, max_connections=0)


async def test_servers_whose_connections_are_gone_are_forgotten() -> None:
    async def one_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(ok())
        await writer.drain()

    client = pool()
    async with serving(one_answer) as (old, _):
        assert (await client.post(old, "/p", b"{}", {})).status == 200
    await asyncio.sleep(0.05)  # the old server is gone: its kept connection is closed
    async with serving(one_answer) as (new, _):
        assert (await client.post(new, "/p", b"{}", {})).status == 200
        assert list(client._origins) == [new]
    await client.aclose()
