"""controller/local/held_socket.py with real processes: a server that keeps dying is given up on
with its exit code and a line saying so; a stop reaches the server once and ends both cleanly.
(A router SIGKILLed under traffic: tests/integration/test_local_platform.py.)"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest

from controller.local.held_socket import backoff_s, parse_args
from controller.local.ports import free_port

HOLDER = [sys.executable, "-m", "controller.local.held_socket"]
# A server on the inherited socket, answering every connection with one HTTP line; it records
# each SIGTERM it gets in a file, so the test can count them.
SERVER = """
import signal, socket, sys, time
fd = int(sys.argv[sys.argv.index("--fd") + 1])
log = sys.argv[1]
def term(*_):
    open(log, "a").write("TERM\\n")
    sys.exit(0)
signal.signal(signal.SIGTERM, term)
listener = socket.socket(fileno=fd)
while True:
    conn, _ = listener.accept()
    conn.recv(1024)
    conn.sendall(b"HTTP/1.1 200 OK\\r\\ncontent-length: 2\\r\\nconnection: close\\r\\n\\r\\nok")
    conn.close()
"""


def test_backoff_is_none_for_a_first_crash_then_doubles_to_a_cap() -> None:
    assert [backoff_s(n) for n in range(1, 8)] == [0.0, 0.5, 1.0, 2.0, 4.0, 8.0, 8.0]


def test_arguments_need_a_port_and_a_command() -> None:
    assert parse_args(["--port", "80", "--", "srv", "-x"]).command == ["srv", "-x"]
    for bad in (["--port", "80"], ["--port", "80", "--"], ["--", "srv"]):
        with pytest.raises(SystemExit):
            parse_args(bad)


def test_a_server_that_keeps_dying_young_is_given_up_on_with_its_code() -> None:
    started = time.monotonic()
    holder = subprocess.run(
        [*HOLDER, "--port", str(free_port()), "--", sys.executable, "-c", "import sys; sys.exit(3)"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert holder.returncode == 3
    lines = holder.stderr.strip().splitlines()
    assert lines[-1].endswith("crashed 5 times in a row (exit code 3); giving up"), lines
    assert lines[0].endswith("exit code 3; restarting it") and lines[1].endswith("restarting it in 0.5 s"), lines
    assert time.monotonic() - started >= sum(backoff_s(n) for n in range(1, 6))  # it waited between


def test_a_port_taken_is_one_line_and_exit_1() -> None:
    port = free_port()
    with psutil.Popen([sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"], stderr=subprocess.DEVNULL) as squatter:
        try:
            deadline = time.monotonic() + 10
            while not _answers(port) and time.monotonic() < deadline:
                time.sleep(0.05)
            holder = subprocess.run([*HOLDER, "--port", str(port), "--", "true"], capture_output=True, text=True, timeout=10)
        finally:
            squatter.kill()
    assert holder.returncode == 1 and holder.stderr.strip().startswith(f"cannot listen on 127.0.0.1:{port}:"), holder.stderr


def test_a_stop_reaches_the_server_once_and_both_exit_cleanly(tmp_path: Path) -> None:
    log, port = tmp_path / "signals", free_port()
    holder = psutil.Popen([*HOLDER, "--port", str(port), "--", sys.executable, "-c", SERVER, str(log)], start_new_session=True)
    try:
        deadline = time.monotonic() + 10
        while not _answers(port):
            assert time.monotonic() < deadline, "the server never answered"
            time.sleep(0.05)
        (server,) = holder.children()
        # As the supervisor stops it: SIGTERM to the holder's whole process group.
        os.killpg(holder.pid, signal.SIGTERM)
        assert holder.wait(10) == 0
        server.wait(10)  # not our child: psutil waits for it to be gone
    finally:
        if holder.is_running():
            holder.kill()
    assert log.read_text() == "TERM\n"  # once: forwarded by the holder, not also by the group signal


def _answers(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False
