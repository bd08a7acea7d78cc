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
