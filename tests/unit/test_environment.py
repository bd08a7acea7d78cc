"""The installed environment is complete: no library falls back to a failed import on every call."""

from __future__ import annotations

import asyncio
import sys


def test_httpcore_finds_sniffio_once_instead_of_failing_to_import_it_on_every_lock() -> None:
    from httpcore import _synchronization

    async def ask() -> str:
        return _synchronization.current_async_library()

    assert asyncio.run(ask()) == "asyncio"
    assert "sniffio" in sys.modules  # imported once and kept: a failed import is searched again every time


def test_uvicorn_serves_the_router_on_uvloop_and_httptools() -> None:
    # uvicorn picks them only when they import ("auto"); without them the router's request path
    # falls back to asyncio and h11, several times slower (benchmarks/router_overhead.py).
    import uvicorn

    from canary.traffic.router import RouterSettings, create_app

    config = uvicorn.Config(create_app(RouterSettings(rollout="r")))
    config.load()
    assert config.http_protocol_class.__module__ == "uvicorn.protocols.http.httptools_impl"
    assert config.get_loop_factory() is not None and "uvloop" in config.get_loop_factory().__module__
