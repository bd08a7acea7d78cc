"""A real `mlflow server` run as a child process of the local platform.

The local platform keeps its MLflow state in one data directory: the sqlite backend store
(`mlflow.db`), the artifacts (`artifacts/`), the server log (`mlflow.log`) and a pid file
(`mlflow.pid`). The pid file is what lets `local up` see that a server is already running and lets
`local down`, a different process, stop it.

Artifacts are *proxied* (`--artifacts-destination`), not written straight to a
`--default-artifact-root`: clients then upload and download through the server, as they do against
a real deployment, and registry URIs come back as `mlflow-artifacts:/...`. The local platform sees
exactly the URIs a cluster sees, so the mapping of that scheme onto the destination
(`registry.artifacts`) is exercised here rather than only in production; and no client needs write
access to the directory.

`mlflow server` starts uvicorn as a further child process, so the server runs in its own session
(process group) and is stopped as a group: signalling only the top pid would orphan the worker that
holds the port.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

PIDFILE_NAME = "mlflow.pid"
LOG_NAME = "mlflow.log"
DB_NAME = "mlflow.db"
ARTIFACTS_DIR = "artifacts"
LOG_TAIL_LINES = 20
_POLL_INTERVAL_S = 0.25


class MlflowServerError(RuntimeError):
    """The MLflow server could not be started or stopped; the message says why."""


@dataclass(frozen=True)
class ServerRecord:
    """What the pid file says about a server started by some (possibly other) process."""

    pid: int
    host: str
    port: int

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"


def mlflow_executable() -> Path:
    """The `mlflow` script of the interpreter's own environment.

    The parent of `sys.executable` is used without resolving symlinks: in a venv the interpreter
    is a symlink to the base Python, whose directory holds no (or another) `mlflow`.
    """
    return Path(sys.executable).parent / "mlflow"


def _parse_pidfile(data_dir: Path) -> ServerRecord | None:
    try:
        raw = json.loads((Path(data_dir) / PIDFILE_NAME).read_text())
        return ServerRecord(pid=int(raw["pid"]), host=str(raw["host"]), port=int(raw["port"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def read_pidfile(data_dir: Path) -> ServerRecord | None:
    """The live server recorded in `data_dir`, or None when there is none or it has died.

    A pid file left by a crashed server, or whose pid now belongs to an unrelated process, reads
    as None: a stale file must never make `up` refuse to start or `down` kill a stranger. A
    server whose top process died but whose uvicorn worker still holds the port counts as live.
    """
    record = _parse_pidfile(data_dir)
    return record if record is not None and _mlflow_group_alive(record.pid) else None


def stop_from_pidfile(data_dir: Path, timeout: float = 10.0) -> bool:
    """Stop the server recorded in `data_dir`'s pid file; True if one was running.

    Works from any process (it signals the server's process group), and removes the pid file.
    """
    record = read_pidfile(data_dir)
    if record is not None:
        _terminate_group(record.pid, timeout, child=None)
    (Path(data_dir) / PIDFILE_NAME).unlink(missing_ok=True)
    return record is not None


def _group_members(pgid: int) -> list[Path] | None:
    """/proc entries of the live (non-zombie) processes in group `pgid`; None without /proc."""
    proc_root = Path("/proc")
    if not proc_root.is_dir():
        return None
    members = []
    for proc in proc_root.iterdir():
        if not proc.name.isdigit():
            continue
        try:
            # After the parenthesised command name (which may hold spaces): state, ppid, pgrp.
            fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            members.append(proc)
    return members


def _killpg_reaches(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _group_alive(pgid: int) -> bool:
    """True while any non-zombie process is left in group `pgid`.

    killpg alone is not enough: it still succeeds while only zombies are left (our own child
    before it is reaped).
    """
    members = _group_members(pgid)
    return _killpg_reaches(pgid) if members is None else bool(members)


def _mlflow_group_alive(pgid: int) -> bool:
    """True when group `pgid` has a live process whose command line mentions mlflow.

    The command-line check guards against pid reuse: once our group is gone, the number may
    name an unrelated process group.
    """
    members = _group_members(pgid)
    if members is None:  # not Linux: the best available check is that the group exists
        return _killpg_reaches(pgid)
    for proc in members:
        try:
            if b"mlflow" in (proc / "cmdline").read_bytes():
                return True
        except OSError:
            continue
    return False


def _terminate_group(pgid: int, timeout: float, child: subprocess.Popen[bytes] | None) -> None:
    """SIGTERM the group, wait up to `timeout`, then SIGKILL what is left; reap our own child."""
    for sig, wait_s in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            break
        deadline = time.monotonic() + wait_s
        while _group_alive(pgid) and time.monotonic() < deadline:
            if child is not None:
                child.poll()  # reap as we go, so a dead child does not linger as a zombie
            time.sleep(0.1)
        if not _group_alive(pgid):
            break
    if child is not None:
        try:
            child.wait(timeout=5.0)
        except subprocess.TimeoutExpired as exc:
            raise MlflowServerError(f"mlflow server pid {pgid} did not exit after SIGKILL") from exc


def _port_in_use(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # SO_REUSEADDR as uvicorn sets it: only a live listener, not a TIME_WAIT leftover, blocks.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


def _health_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=1.0) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def _tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:]) or "(log is empty)"


@dataclass
class MlflowServer:
    """One `mlflow server` whose state lives in `data_dir`, listening on `host:port`."""

    data_dir: Path
    port: int
    host: str = "127.0.0.1"
    _process: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self.data_dir = Path(self.data_dir).absolute()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.data_dir / LOG_NAME

    @property
    def pidfile_path(self) -> Path:
        return self.data_dir / PIDFILE_NAME

    @property
    def backend_store_uri(self) -> str:
        return f"sqlite:///{self.data_dir / DB_NAME}"

    @property
    def artifacts_destination(self) -> Path:
        """Where the server keeps artifacts; `mlflow-artifacts:/x` maps to `<this>/x`."""
        return self.data_dir / ARTIFACTS_DIR

    def command(self) -> list[str]:
        return [
            str(mlflow_executable()),
            "server",
            "--backend-store-uri", self.backend_store_uri,
            "--artifacts-destination", str(self.artifacts_destination),
            "--host", self.host,
            "--port", str(self.port),
            # One worker and no job runner: ready in ~5 s at ~0.5 GB instead of ~12 s and ~3 GB.
            "--workers", "1",
        ]  # fmt: skip

    def start(self, timeout: float = 60.0) -> None:
        """Start the server and return once `GET /health` answers.

        Raises MlflowServerError, with the tail of the server log, when the port is taken, a
        server is already recorded for `data_dir`, the process dies, or `timeout` passes.
        """
        existing = read_pidfile(self.data_dir)
        if existing is not None:
            raise MlflowServerError(
                f"an mlflow server is already running for {self.data_dir} "
                f"(pid {existing.pid}, {existing.url})"
            )
        executable = mlflow_executable()
        if not executable.exists():
            raise MlflowServerError(f"mlflow executable not found at {executable}")
        if _port_in_use(self.host, self.port):
            raise MlflowServerError(
                f"cannot start mlflow server: port {self.port} on {self.host} is already in use"
            )
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.artifacts_destination.mkdir(exist_ok=True)
        env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", "PYTHONUNBUFFERED": "1"}
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(
                self.command(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=self.data_dir,  # whatever the server writes relative to cwd stays in data_dir
                start_new_session=True,
            )
        self._write_pidfile(self._process.pid)
        try:
            self._wait_healthy(timeout)
        except BaseException:
            self.stop()
            raise

    def _wait_healthy(self, timeout: float) -> None:
        assert self._process is not None
        deadline = time.monotonic() + timeout
        while True:
            code = self._process.poll()
            if code is not None:
                raise MlflowServerError(
                    f"mlflow server exited with code {code} before answering {self.url}/health; "
                    f"last lines of {self.log_path}:\n{_tail(self.log_path)}"
                )
            if _health_ok(self.url):
                return
            if time.monotonic() >= deadline:
                raise MlflowServerError(
                    f"mlflow server did not answer {self.url}/health within {timeout:g} s; "
                    f"last lines of {self.log_path}:\n{_tail(self.log_path)}"
                )
            time.sleep(_POLL_INTERVAL_S)

    def _write_pidfile(self, pid: int) -> None:
        # Written atomically so a concurrent `down` never reads half a file.
        tmp = self.pidfile_path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"pid": pid, "host": self.host, "port": self.port}))
        tmp.replace(self.pidfile_path)

    def is_running(self) -> bool:
        if self._process is not None:
            return self._process.poll() is None
        record = read_pidfile(self.data_dir)
        return record is not None and record.port == self.port

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the server (ours, or the one the pid file records) and remove the pid file."""
        if self._process is not None:
            _terminate_group(self._process.pid, timeout, child=self._process)
            self._process = None
            self.pidfile_path.unlink(missing_ok=True)
        else:
            stop_from_pidfile(self.data_dir, timeout)
