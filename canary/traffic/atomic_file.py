"""Whole-or-nothing file writes for everything the local platform keeps on disk.

Status files, process records, pid files, routing records and Prometheus target files are read
by other processes (a restarted controller, `local down`, Prometheus' file watcher) at any
moment, and a controller may be killed mid-write. Writing a temp file in the same folder and
renaming it over the target means a reader sees the old content or the new, never half.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def atomic_write(path: Path, text: str, durable: bool = True) -> None:
    """Replace `path` with `text` atomically; `durable` also survives a power cut (fsync).

    The temp file ends in `.tmp`, so watchers globbing for `*.json` never see it.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            if durable:
                handle.flush()
                os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    if durable:
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
