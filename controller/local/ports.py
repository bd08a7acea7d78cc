"""Loopback ports for the processes of the local platform: picking a free one, checking one."""

from __future__ import annotations

import socket

LOOPBACK = "127.0.0.1"


def free_port(host: str = LOOPBACK) -> int:
    """A port that was free a moment ago on `host` (the kernel's pick for port 0).

    Nothing holds it afterwards: whoever binds it next wins, so callers that hand it to a child
    process must still cope with the child failing to bind.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_in_use(host: str, port: int) -> bool:
    """True when something listens on (or otherwise holds) `host:port`.

    The probe binds with SO_REUSEADDR, as uvicorn and the other servers do: only a live listener
    blocks, not connections of a dead predecessor lingering in TIME_WAIT.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False
