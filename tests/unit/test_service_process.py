"""The shared service lifecycle against real child processes, and the loopback port helpers.

The services here are small Python programs (an `http.server`, a sleeper, a crasher) so every path
of start / ready / death / timeout / stop runs in about a second; the real `mlflow server` and
Prometheus go through the same code in tests/integration.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from controller.local.ports import free_port, port_in_use
from controller.local.service_process import (
    ServerRecord,
    ServiceProcess,
    log_tail,
    process_running,
    read_record,
    write_record,
)

PY = sys.executable
MARKER = "service-process-test"  # in every command line here, so `is_own` can recognise ours


class ToyError(RuntimeError):
    pass


def is_ours(pid: int) -> bool:
    try:
        cmdline = (Path("/proc") / str(pid) / "cmdline").read_bytes()
    except OSError:
        return False
    return MARKER.encode() in cmdline and process_running(pid)


def service(tmp_path: Path) -> ServiceProcess:
    return ServiceProcess(
        name="toy",
        error=ToyError,
        pidfile=tmp_path / "toy.pid",
        log_path=tmp_path / "toy.log",
        is_own=is_ours,
        is_alive=process_running,
        send_signal=os.kill,
        ready_poll_s=0.05,
    )


def program(code: str) -> list[str]:
    return [PY, "-c", f"# {MARKER}\n{code}"]


def http_server(port: int) -> list[str]:
    return program(
        "import http.server, sys\n"
        "print('serving', flush=True)\n"
        f"http.server.HTTPServer(('127.0.0.1', {port}), http.server.SimpleHTTPRequestHandler).serve_forever()"
    )


def start(svc: ServiceProcess, command: list[str], port: int, timeout: float = 10.0) -> subprocess.Popen[bytes]:
    return svc.start(
        command,
        host="127.0.0.1",
        port=port,
        cwd=svc.pidfile.parent,
        env=None,
        ready_url=f"http://127.0.0.1:{port}/",
        exited_before="before answering",
        not_ready="did not answer",
        timeout=timeout,
    )


@pytest.fixture
def started(tmp_path: Path) -> Iterator[tuple[ServiceProcess, subprocess.Popen[bytes], int]]:
    svc, port = service(tmp_path), free_port()
    process = start(svc, http_server(port), port)
    try:
        yield svc, process, port
    finally:
        svc.stop(process, timeout=5.0)


def test_started_service_is_recorded_and_stops_from_the_record(
    started: tuple[ServiceProcess, subprocess.Popen[bytes], int],
) -> None:
    svc, process, port = started
    assert svc.recorded() == ServerRecord(pid=process.pid, host="127.0.0.1", port=port)
    assert svc.recorded().url == f"http://127.0.0.1:{port}"  # type: ignore[union-attr]
    assert svc.is_running(process, port) and svc.is_running(None, port)
    assert not svc.is_running(None, port + 1)  # the record names another port
    assert port_in_use("127.0.0.1", port)

    # As `local down` does it: no Popen, only the pid file.
    assert svc.stop_recorded(timeout=5.0) is True
    assert process.wait(timeout=5.0) is not None
    assert not svc.pidfile.exists() and svc.recorded() is None
    assert not svc.is_running(None, port)
    assert svc.stop_recorded(timeout=5.0) is False  # twice is fine


def test_process_that_dies_is_reported_with_its_log_and_cleaned_up(tmp_path: Path) -> None:
    svc = service(tmp_path)
    with pytest.raises(ToyError, match=r"^toy exited with code 3 before answering; last lines of .*toy\.log") as caught:
        start(svc, program("print('no config here', flush=True); raise SystemExit(3)"), free_port())
    assert caught.value.args[0].endswith("\nno config here")
    assert not svc.pidfile.exists()


def test_process_that_never_answers_is_stopped_at_the_timeout(tmp_path: Path) -> None:
    svc = service(tmp_path)
    command = program("import time; print('thinking', flush=True); time.sleep(60)")
    with pytest.raises(ToyError, match=r"^toy did not answer within 0\.3 s; last lines of") as caught:
        start(svc, command, free_port(), timeout=0.3)
    assert not svc.pidfile.exists()
    # The log tail is what the process wrote before it was stopped (or says there was nothing yet).
    assert caught.value.args[0].rsplit("\n", 1)[1] in ("thinking", "(log is empty)")


def test_a_process_ignoring_sigterm_is_killed(tmp_path: Path) -> None:
    svc, port = service(tmp_path), free_port()
    stubborn = program(
        "import signal, http.server\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        f"http.server.HTTPServer(('127.0.0.1', {port}), http.server.SimpleHTTPRequestHandler).serve_forever()"
    )
    process = start(svc, stubborn, port)
    svc.stop(process, timeout=0.2)
    assert process.returncode == -9
    assert not svc.pidfile.exists() and not process_running(process.pid)


def test_stale_or_foreign_or_broken_pidfile_reads_as_no_server(tmp_path: Path) -> None:
    svc = service(tmp_path)
    finished = subprocess.run([PY, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True)
    write_record(svc.pidfile, ServerRecord(pid=int(finished.stdout), host="127.0.0.1", port=1))
    assert read_record(svc.pidfile) == ServerRecord(pid=int(finished.stdout), host="127.0.0.1", port=1)
    assert svc.recorded() is None

    # A live process that is not ours (the test itself) must never be signalled.
    write_record(svc.pidfile, ServerRecord(pid=os.getpid(), host="127.0.0.1", port=1))
    assert svc.recorded() is None
    assert svc.stop_recorded(timeout=1.0) is False
    assert not svc.pidfile.exists()

    for garbage in ("not json", "{}", '{"pid": "x", "host": "h", "port": 1}', "[1, 2]"):
        svc.pidfile.write_text(garbage)
        assert read_record(svc.pidfile) is None, garbage
    assert read_record(tmp_path / "missing.pid") is None


def test_log_tail(tmp_path: Path) -> None:
    log = tmp_path / "x.log"
    assert log_tail(log) == "(no log)"
    log.write_text("")
    assert log_tail(log) == "(log is empty)"
    log.write_bytes(b"".join(b"line %d\n" % i for i in range(30)) + b"\xff bad byte\n")
    tail = log_tail(log, lines=3).splitlines()
    assert tail[:2] == ["line 28", "line 29"] and tail[2].endswith(" bad byte")


def test_free_port_is_bindable_and_port_in_use_sees_a_listener() -> None:
    port = free_port()
    assert 1024 <= port <= 65535
    assert not port_in_use("127.0.0.1", port)
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", port))
        listener.listen(1)
        assert port_in_use("127.0.0.1", port)
    assert not port_in_use("127.0.0.1", port)
