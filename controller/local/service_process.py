"""The lifecycle shared by the local platform's long-lived services (`mlflow server`, Prometheus).

Each service keeps its state in one data directory, next to a log and a pid file holding
`{"pid", "host", "port"}`. The pid file is what lets `local up` see that a server is already
running and lets `local down`, a different process, stop it. A service runs in its own session, so
a Ctrl-C in the terminal that started it does not reach it.

What differs between services stays with them and is handed in as a `ServiceProcess`: how to tell
that a recorded pid is still *their* server (pids are reused), what to signal (one process or its
whole group) and what counts as gone. A launcher class gets the rest of its lifecycle (`url`, the
paths, `is_running`, `stop`) from `ServiceLauncher`.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from canary.traffic.atomic_file import atomic_write

LOG_TAIL_LINES = 20
_EXIT_POLL_S = 0.1
_KILL_WAIT_S = 5.0


@dataclass(frozen=True)
class ServerRecord:
    """What the pid file says about a server started by some (possibly other) process."""

    pid: int
    host: str
    port: int

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"


def proc_stat_fields(proc: Path) -> list[str] | None:
    """The fields of `<proc>/stat` after the command name: state, ppid, pgrp, ...; None if gone.

    The command name is parenthesised and may hold spaces, so the split starts after its `)`.
    """
    try:
        return (proc / "stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def process_running(pid: int) -> bool:
    """True while `pid` exists and is not a zombie (dead but not yet reaped)."""
    fields = proc_stat_fields(Path("/proc") / str(pid))
    return bool(fields) and fields[0] not in ("Z", "X")


def http_ok(url: str) -> bool:
    """True when `GET url` answers 200 within a second."""
    try:
        with urllib.request.urlopen(url, timeout=1.0) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:]) or "(log is empty)"


def read_record(pidfile: Path) -> ServerRecord | None:
    """The pid file's record as written, or None when it is missing or unreadable."""
    try:
        raw = json.loads(Path(pidfile).read_text())
        return ServerRecord(pid=int(raw["pid"]), host=str(raw["host"]), port=int(raw["port"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def write_record(pidfile: Path, record: ServerRecord) -> None:
    # Written atomically so a concurrent `down` never reads half a file.
    atomic_write(pidfile, json.dumps({"pid": record.pid, "host": record.host, "port": record.port}))


@dataclass(frozen=True)
class ServiceProcess:
    """One service's pid file and log, and how to recognise, signal and wait out its process."""

    name: str  # how messages name the service, e.g. "prometheus"
    error: type[Exception]  # what every failure is raised as
    pidfile: Path
    log_path: Path
    is_own: Callable[[int], bool]  # the recorded pid still runs this service, not a stranger
    is_alive: Callable[[int], bool]  # something of the service is left after a signal
    send_signal: Callable[[int, int], None]  # os.kill for one process, os.killpg for a group
    ready_poll_s: float = 0.1

    def recorded(self) -> ServerRecord | None:
        """The live server in the pid file, or None: a stale record must never make `up` refuse
        to start or `down` kill a stranger."""
        record = read_record(self.pidfile)
        return record if record is not None and self.is_own(record.pid) else None

    def stop_recorded(self, timeout: float) -> bool:
        """Stop the server the pid file records, from any process; True if one was running."""
        record = self.recorded()
        if record is not None:
            self._terminate(record.pid, timeout, child=None)
        self.pidfile.unlink(missing_ok=True)
        return record is not None

    def start(
        self,
        command: Sequence[str],
        *,
        host: str,
        port: int,
        cwd: Path,
        env: Mapping[str, str] | None,
        ready_url: str,
        exited_before: str,
        not_ready: str,
        timeout: float,
    ) -> subprocess.Popen[bytes]:
        """Start `command`, record it in the pid file and return it once `ready_url` answers 200.

        On death or timeout the process is stopped, the pid file removed and `error` raised with
        the tail of the log: "<name> exited with code N <exited_before>; ..." or
        "<name> <not_ready> within T s; ...".
        """
        with self.log_path.open("ab") as log:
            process = subprocess.Popen(
                list(command),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=None if env is None else dict(env),
                cwd=cwd,  # whatever the server writes relative to cwd stays in its data dir
                start_new_session=True,
            )
        write_record(self.pidfile, ServerRecord(pid=process.pid, host=host, port=port))
        try:
            deadline = time.monotonic() + timeout
            while (code := process.poll()) is None and not http_ok(ready_url):
                if time.monotonic() >= deadline:
                    raise self.error(f"{self.name} {not_ready} within {timeout:g} s; {self._log_lines()}")
                time.sleep(self.ready_poll_s)
            if code is not None:
                raise self.error(f"{self.name} exited with code {code} {exited_before}; {self._log_lines()}")
        except BaseException:
            self.stop(process, timeout=10.0)
            raise
        return process

    def _log_lines(self) -> str:
        return f"last lines of {self.log_path}:\n{log_tail(self.log_path)}"

    def is_running(self, process: subprocess.Popen[bytes] | None, port: int) -> bool:
        """Whether our own child runs or, without one, whether the pid file records `port`."""
        if process is not None:
            return process.poll() is None
        record = self.recorded()
        return record is not None and record.port == port

    def stop(self, process: subprocess.Popen[bytes] | None, timeout: float) -> None:
        """Stop our own child, or without one the server the pid file records; drop the pid file."""
        if process is not None:
            self._terminate(process.pid, timeout, child=process)
            self.pidfile.unlink(missing_ok=True)
        else:
            self.stop_recorded(timeout)

    def _terminate(self, pid: int, timeout: float, child: subprocess.Popen[bytes] | None) -> None:
        """SIGTERM, wait up to `timeout`, then SIGKILL what is left; reap our own child."""
        for sig, wait_s in ((signal.SIGTERM, timeout), (signal.SIGKILL, _KILL_WAIT_S)):
            try:
                self.send_signal(pid, sig)
            except ProcessLookupError:
                break
            if self._wait_gone(pid, wait_s, child):
                break
        if child is not None:
            try:
                child.wait(timeout=_KILL_WAIT_S)
            except subprocess.TimeoutExpired as exc:
                raise self.error(f"{self.name} pid {pid} did not exit after SIGKILL") from exc

    def _wait_gone(self, pid: int, wait_s: float, child: subprocess.Popen[bytes] | None) -> bool:
        deadline = time.monotonic() + wait_s
        while True:
            if child is not None:
                child.poll()  # reap as we go, so a dead child does not linger as a zombie
            if not self.is_alive(pid):
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(_EXIT_POLL_S)


class ServiceLauncher:
    """The lifecycle half of a launcher dataclass: its URL, paths, `is_running` and `stop`.

    A plain base with no dataclass fields, so each launcher keeps its own fields in its own
    (positional) order; it supplies the attributes below and its `ServiceProcess`.
    """

    data_dir: Path
    host: str
    port: int
    _process: subprocess.Popen[bytes] | None

    def _service_process(self) -> ServiceProcess:
        raise NotImplementedError

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def log_path(self) -> Path:
        return self._service_process().log_path

    @property
    def pidfile_path(self) -> Path:
        return self._service_process().pidfile

    def is_running(self) -> bool:
        return self._service_process().is_running(self._process, self.port)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the server (ours, or the one the pid file records) and remove the pid file."""
        self._service_process().stop(self._process, timeout)
        self._process = None
