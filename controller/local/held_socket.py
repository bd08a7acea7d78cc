"""Holds a server's listening socket across the server's crashes.

Run as ``python -m controller.local.held_socket --port P [--host H] -- COMMAND...``: binds H:P,
then runs ``COMMAND --fd N`` with the listening socket as descriptor N, and runs it again at once
when it dies. The socket belongs to this small process, not to the server, so while the server
is down and starting again the kernel keeps completing clients' connections into the backlog:
they wait for the new server instead of being refused (a SIGKILLed router used to refuse its
clients for the seconds the controller took to notice and start another). Only the requests the
dead server was answering fail.

A server that dies again within STABLE_AFTER_S of its start is restarted after a back-off (0.5 s
doubling to 8 s); after MAX_CRASHES_IN_A_ROW such crashes this process gives up and exits with
the server's code, its last stderr line saying why, so the platform's supervisor sees a dead
process and reports it (and applies its own back-off). SIGTERM and SIGINT are passed to the
server, which shuts down gracefully; then this process exits 0. If this process is killed, the
server gets SIGTERM (Linux parent-death signal) and lets go of the port for a new holder.
The server runs in a process group of its own, so each signal reaches it once.

Standard library only: this process must start and run on anything, and stay small.
"""

from __future__ import annotations

import argparse
import ctypes
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence

STABLE_AFTER_S = 10.0
MAX_CRASHES_IN_A_ROW = 5
BACKLOG = 1024  # connections the kernel completes and queues while no server accepts
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # runs in the child between fork and exec
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):  # not Linux: an orphaned server keeps the port until stopped
        pass


def _describe(code: int) -> str:
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


def backoff_s(crashes_in_a_row: int) -> float:
    """Wait before restart number `crashes_in_a_row` of a server that keeps dying young."""
    return 0.0 if crashes_in_a_row <= 1 else min(0.5 * 2 ** (crashes_in_a_row - 2), 8.0)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m controller.local.held_socket", description=__doc__.split("\n\n")[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", required=True, type=int)
    p.add_argument("command", nargs=argparse.REMAINDER, help="-- then the server's command; `--fd N` is appended")
    args = p.parse_args(argv)
    if args.command[:1] == ["--"]:
        args.command = args.command[1:]
    if not args.command:
        p.error("no server command after --")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listener.bind((args.host, args.port))
    except OSError as exc:
        print(f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}", file=sys.stderr, flush=True)
        return 1
    listener.listen(BACKLOG)
    fd = listener.fileno()
    command = [*args.command, "--fd", str(fd)]
    name = " ".join(args.command[:3])

    stopping = False
    server: subprocess.Popen[bytes] | None = None

    def stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        if server is not None and server.poll() is None:
            server.send_signal(signum)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)

    crashes = 0
    while True:
        started = time.monotonic()
        # Its own process group: a signal to this process's group (the supervisor stops it so)
        # reaches the server once, forwarded, not twice (uvicorn skips its graceful shutdown on a
        # second SIGTERM).
        server = subprocess.Popen(command, pass_fds=(fd,), process_group=0, preexec_fn=_die_with_parent)  # noqa: PLW1509
        code = server.wait()
        if stopping:
            return 0
        crashes = crashes + 1 if time.monotonic() - started < STABLE_AFTER_S else 1
        if crashes > MAX_CRASHES_IN_A_ROW:
            print(f"{name} crashed {crashes - 1} times in a row ({_describe(code)}); giving up", file=sys.stderr, flush=True)
            return code if code > 0 else 1
        wait = backoff_s(crashes)
        print(f"{name} {_describe(code)}; restarting it" + (f" in {wait:g} s" if wait else ""), file=sys.stderr, flush=True)
        deadline = time.monotonic() + wait
        while not stopping and time.monotonic() < deadline:
            time.sleep(min(0.1, deadline - time.monotonic()))
        if stopping:
            return 0


if __name__ == "__main__":
    sys.exit(main())
