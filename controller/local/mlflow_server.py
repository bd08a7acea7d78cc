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

import os
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from controller.local.ports import port_in_use
from controller.local.service_process import (
    ServerRecord,
    ServiceLauncher,
    ServiceProcess,
    proc_stat_fields,
)

PIDFILE_NAME = "mlflow.pid"
LOG_NAME = "mlflow.log"
DB_NAME = "mlflow.db"
ARTIFACTS_DIR = "artifacts"
_POLL_INTERVAL_S = 0.25


class MlflowServerError(RuntimeError):
    """The MLflow server could not be started or stopped; the message says why."""


def mlflow_executable() -> Path:
    """The `mlflow` script of the interpreter's own environment.

    The parent of `sys.executable` is used without resolving symlinks: in a venv the interpreter
    is a symlink to the base Python, whose directory holds no (or another) `mlflow`.
    """
    return Path(sys.executable).parent / "mlflow"


def _service(data_dir: Path) -> ServiceProcess:
    """The server of `data_dir`: recognised, signalled and waited for as a process group."""
    data_dir = Path(data_dir)
    return ServiceProcess(
        name="mlflow server",
        error=MlflowServerError,
        pidfile=data_dir / PIDFILE_NAME,
        log_path=data_dir / LOG_NAME,
        is_own=_mlflow_group_alive,
        is_alive=_group_alive,
        send_signal=os.killpg,
        ready_poll_s=_POLL_INTERVAL_S,
    )


def read_pidfile(data_dir: Path) -> ServerRecord | None:
    """The live server recorded in `data_dir`, or None when there is none or it has died.

    A pid file left by a crashed server, or whose pid now belongs to an unrelated process, reads
    as None: a stale file must never make `up` refuse to start or `down` kill a stranger. A
    server whose top process died but whose uvicorn worker still holds the port counts as live.
    """
    return _service(data_dir).recorded()


def stop_from_pidfile(data_dir: Path, timeout: float = 10.0) -> bool:
    """Stop the server recorded in `data_dir`'s pid file; True if one was running.

    Works from any process (it signals the server's process group), and removes the pid file.
    """
    return _service(data_dir).stop_recorded(timeout)


def _group_members(pgid: int) -> list[Path] | None:
    """/proc entries of the live (non-zombie) processes in group `pgid`; None without /proc."""
    proc_root = Path("/proc")
    if not proc_root.is_dir():
        return None
    members = []
    for proc in proc_root.iterdir():
        if not proc.name.isdigit():
            continue
        fields = proc_stat_fields(proc)  # state, ppid, pgrp, ...
        if fields is not None and int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
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


@dataclass
class MlflowServer(ServiceLauncher):
    """One `mlflow server` whose state lives in `data_dir`, listening on `host:port`.

    `extra_env` is added to the server's environment, on top of this process's: MLflow reads
    some server settings only from there, e.g. the `MLFLOW_WEBHOOK_*` variables that let it
    deliver webhooks to a loopback receiver at all. It is left out of `repr`, as it may hold a
    key (`MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY`).
    """

    data_dir: Path
    port: int
    host: str = "127.0.0.1"
    extra_env: Mapping[str, str] = field(default_factory=dict, repr=False)
    _process: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self.data_dir = Path(self.data_dir).absolute()

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
        if port_in_use(self.host, self.port):
            raise MlflowServerError(
                f"cannot start mlflow server: port {self.port} on {self.host} is already in use"
            )
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.artifacts_destination.mkdir(exist_ok=True)
        self._process = self._service_process().start(
            self.command(),
            host=self.host,
            port=self.port,
            cwd=self.data_dir,
            env={
                **os.environ,
                "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
                "PYTHONUNBUFFERED": "1",
                **self.extra_env,
            },
            ready_url=f"{self.url}/health",
            exited_before=f"before answering {self.url}/health",
            not_ready=f"did not answer {self.url}/health",
            timeout=timeout,
        )

    def _service_process(self) -> ServiceProcess:
        return _service(self.data_dir)
