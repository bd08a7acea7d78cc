"""Child processes that outlive the controller.

The local platform runs a router and model servers as separate processes. Client traffic flows
through them, so a controller that is killed (even with SIGKILL) must not take them down, and a
controller that starts again must find and re-adopt them instead of starting duplicates that
would fight over ports. Hence:

- every child runs in its own session (`start_new_session=True`): no signal sent to the
  controller's terminal or process group reaches it, and the child's process group id equals
  its pid, so `stop` can signal the child together with anything it forked;
- every child has a JSON record in the state directory (name, pid, port, argv, start time,
  log path), written atomically (temp file + rename), so a crash never leaves half a record;
- a record is trusted only if its pid is alive *and* is the same process: pids are reused, so
  the process's create time and command line must match what was recorded. A stale record is
  never adopted and its pid is never signalled.

A child that dies is restarted by `ensure`: at once after a first crash (whatever listens on
its port is refused meanwhile; a router's own crashes never get here, its socket holder restarts
it within the second, see held_socket.py), then after a back-off that doubles on each consecutive crash
(like a Kubernetes CrashLoopBackOff), and its last stderr line is kept so the platform can say
why it died. Relies on psutil (a dependency of kserve) for process identity.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import json
import logging
import os
import re
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from canary.traffic.atomic_file import atomic_write
from controller.local.ports import LOOPBACK, free_port, port_in_use

log = logging.getLogger(__name__)

# Names become file names: keep them to a safe, unambiguous alphabet.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")
# Two readings of one process's create time differ only by clock rounding; a reused pid would
# have to start within this window *and* with the same command line to be mistaken for ours.
_CREATE_TIME_TOLERANCE = 1.0
# How much of the end of a log is read to find its last line.
_TAIL_BYTES = 8192

ArgvBuilder = Callable[[int], Sequence[str]]


@dataclass(frozen=True)
class ProcessRecord:
    """What the state directory remembers about one child process."""

    name: str
    pid: int
    create_time: float  # as psutil reports it: identifies the process together with the pid
    port: int
    argv: tuple[str, ...]
    started_at: float  # wall clock, seconds since the epoch
    log_path: str  # the child's stderr; its stdout goes next to it with suffix .out
    labels: Mapping[str, str] = field(default_factory=dict)
    env_digest: str = ""
    restarts: int = 0  # consecutive crashes before this start; drives the back-off
    # Filled in once the process is seen dead.
    exited_at: float | None = None
    exit_code: int | None = None  # None when it died while adopted (only the parent learns it)
    # Why the last run ended unexpectedly; kept across a restart until the next clean start.
    failure: str | None = None

    @property
    def dead(self) -> bool:
        return self.exited_at is not None

    def to_json(self) -> dict[str, object]:
        data = dataclasses.asdict(self)
        data["argv"] = list(self.argv)
        data["labels"] = dict(self.labels)
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, object]) -> ProcessRecord:
        known = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        values["argv"] = tuple(values["argv"])  # type: ignore[arg-type]
        values["labels"] = dict(values.get("labels") or {})  # type: ignore[call-overload]
        return cls(**values)  # type: ignore[arg-type]


class Supervisor:
    """Starts, re-adopts, restarts and stops named child processes recorded in `state_dir`.

    Safe to use from several threads; several controllers on one state directory are
    serialised by a file lock around each start or stop.
    """

    def __init__(
        self,
        state_dir: Path | str,
        *,
        stop_timeout: float = 5.0,
        backoff_initial: float = 1.0,
        backoff_max: float = 30.0,
        stable_after: float = 60.0,
    ) -> None:
        self.state_dir = Path(state_dir)
        self.log_dir = self.state_dir / "logs"
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(exist_ok=True)
        self.stop_timeout = stop_timeout
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        # A run that lasted this long was healthy: its crash starts the back-off afresh.
        self.stable_after = stable_after
        self._lock = threading.RLock()
        # Children started by this object: only their parent can reap them and learn the code.
        self._children: dict[str, subprocess.Popen[bytes]] = {}

    # ---- public API -------------------------------------------------------------------------

    def ensure(
        self,
        name: str,
        argv_builder: ArgvBuilder,
        *,
        env: Mapping[str, str] | None = None,
        labels: Mapping[str, str] | None = None,
    ) -> ProcessRecord:
        """Make sure `name` runs `argv_builder(port)`; return its current record.

        A live process with the same command line, env overrides and labels is kept (adopted if
        another Supervisor started it). One whose spec changed is replaced. A dead one is
        restarted once its back-off has passed, on its old port if that is still free; until
        then the dead record is returned, so callers can read `failure`.
        `env` holds overrides on top of the controller's environment.
        """
        _check_name(name)
        env = dict(env or {})
        labels = dict(labels or {})
        digest = _env_digest(env)
        with self._locked():
            record = self._observe(self._load(name))
            restarts, failure, port = 0, None, None
            if record is not None:
                same_spec = (
                    tuple(argv_builder(record.port)) == record.argv
                    and record.env_digest == digest
                    and dict(record.labels) == labels
                )
                if same_spec and not record.dead:
                    return record
                if same_spec:  # crashed: restart after the back-off, keep the failure visible
                    assert record.exited_at is not None
                    if time.time() < record.exited_at + self._backoff(record.restarts):
                        return record
                    restarts, failure, port = record.restarts + 1, record.failure, record.port
                else:  # spec changed: replace it, a fresh start without back-off
                    self._terminate(record)
                    port = record.port
            if port is None or not self._port_free(port, exclude=name):
                port = self._free_port(exclude=name)
            return self._start(name, tuple(argv_builder(port)), port, env, digest, labels, restarts, failure)

    def get(self, name: str) -> ProcessRecord | None:
        """The current record of `name`, with its exit filled in if it has died; None if unknown."""
        _check_name(name)
        with self._lock:
            return self._observe(self._load(name))

    def alive(self, name: str) -> bool:
        record = self.get(name)
        return record is not None and not record.dead

    def exit_failure(self, name: str) -> str | None:
        """Why `name` died, e.g. "exited (code 1): ValueError: bad model"; None if it runs or is unknown."""
        record = self.get(name)
        if record is None or not record.dead:
            return None
        return record.failure

    def records(self, **labels: str) -> list[ProcessRecord]:
        """Records whose labels include all of `labels`, observed (dead ones marked)."""
        with self._lock:
            found = []
            for record in self._read_all():
                record = self._observe(record)
                if record is not None and all(record.labels.get(k) == v for k, v in labels.items()):
                    found.append(record)
            return found

    def stop(self, name: str) -> None:
        """Stop `name` (SIGTERM to its process group, SIGKILL after `stop_timeout`) and forget it.

        Stopping an unknown or already dead process is not an error; a stale record (pid reused
        by another program) is dropped without signalling anybody.
        """
        _check_name(name)
        with self._locked():
            record = self._observe(self._load(name))
            if record is not None:
                self._terminate(record)
            self._record_path(name).unlink(missing_ok=True)
            self._children.pop(name, None)

    def stop_all(self) -> None:
        for record in self.records():
            self.stop(record.name)

    # ---- records ----------------------------------------------------------------------------

    def _record_path(self, name: str) -> Path:
        return self.state_dir / f"{name}.json"

    def _load(self, name: str) -> ProcessRecord | None:
        return self._read(self._record_path(name))

    def _read(self, path: Path) -> ProcessRecord | None:
        try:
            text = path.read_text()
        except FileNotFoundError:
            return None
        try:
            return ProcessRecord.from_json(json.loads(text))
        except (ValueError, TypeError, KeyError) as exc:
            # Records are written atomically, so this is tampering: refuse rather than risk a
            # duplicate process next to the one the record described.
            raise ValueError(f"corrupt process record {path}: {exc}") from exc

    def _read_all(self) -> list[ProcessRecord]:
        """Every readable record; a corrupt one is logged and skipped so it blocks only its own name."""
        found = []
        for path in sorted(self.state_dir.glob("*.json")):
            try:
                record = self._read(path)
            except ValueError as exc:
                log.warning("%s", exc)
                continue
            if record is not None:
                found.append(record)
        return found

    def _save(self, record: ProcessRecord) -> None:
        atomic_write(self._record_path(record.name), json.dumps(record.to_json(), indent=2))

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """Thread lock plus a file lock, so two controllers on one directory cannot both start."""
        with self._lock, open(self.state_dir / ".lock", "a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    # ---- process state ----------------------------------------------------------------------

    def _observe(self, record: ProcessRecord | None) -> ProcessRecord | None:
        """Return `record`, marked dead (with exit code and failure) if its process is gone."""
        if record is None or record.dead:
            return record
        running, code = self._probe(record)
        if running:
            return record
        now = time.time()
        restarts = 0 if now - record.started_at >= self.stable_after else record.restarts
        record = dataclasses.replace(
            record,
            exited_at=now,
            exit_code=code,
            restarts=restarts,
            failure=_describe_exit(code, _last_line(Path(record.log_path))),
        )
        self._save(record)
        self._children.pop(record.name, None)
        return record

    def _probe(self, record: ProcessRecord) -> tuple[bool, int | None]:
        """(is the recorded process still running, its exit code if known)."""
        child = self._children.get(record.name)
        if child is not None and child.pid == record.pid:
            code = child.poll()
            return code is None, code
        try:
            proc = psutil.Process(record.pid)
            if abs(proc.create_time() - record.create_time) > _CREATE_TIME_TOLERANCE:
                return False, None  # the pid now belongs to someone else
            if proc.status() == psutil.STATUS_ZOMBIE:
                return False, _reap(record.pid)
            with contextlib.suppress(psutil.AccessDenied):
                if tuple(proc.cmdline()) != record.argv:
                    return False, None
            return True, None
        except psutil.NoSuchProcess:
            return False, None

    def _terminate(self, record: ProcessRecord) -> None:
        """SIGTERM the record's process group, SIGKILL it after the timeout. Only if it is ours.

        A dead record gets no signal at all: its pid, and so its group id, may belong to
        another program by now.
        """
        if record.dead:
            return
        # Collected while the leader is alive and verified; psutil re-checks each one's
        # identity before signalling, so the sweep below cannot hit a reused pid.
        descendants = _descendants(record.pid)
        _signal_group(record.pid, signal.SIGTERM)
        if not self._wait_exit(record, self.stop_timeout):
            _signal_group(record.pid, signal.SIGKILL)
            self._wait_exit(record, self.stop_timeout)
        for proc in descendants:  # anything the leader forked and left behind
            with contextlib.suppress(psutil.Error):
                proc.kill()
        self._children.pop(record.name, None)

    def _wait_exit(self, record: ProcessRecord, timeout: float) -> bool:
        child = self._children.get(record.name)
        if child is not None and child.pid == record.pid:
            try:
                child.wait(timeout)
                return True
            except subprocess.TimeoutExpired:
                return False
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            running, _ = self._probe(record)
            if not running:
                return True
            time.sleep(0.05)
        return False

    def _start(
        self,
        name: str,
        argv: tuple[str, ...],
        port: int,
        env: dict[str, str],
        digest: str,
        labels: dict[str, str],
        restarts: int,
        failure: str | None,
    ) -> ProcessRecord:
        log_path = self.log_dir / f"{name}.log"
        out_path = self.log_dir / f"{name}.out"
        # Keep the previous run's logs one generation back: its last line explains the crash.
        for path in (log_path, out_path):
            if path.exists():
                os.replace(path, path.with_name(path.name + ".1"))
        with open(log_path, "ab") as err, open(out_path, "ab") as out:
            child = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                env={**os.environ, **env},
                start_new_session=True,  # survives the controller; own process group for stop
            )
        try:
            create_time = psutil.Process(child.pid).create_time()
        except psutil.NoSuchProcess:  # died at once; still record it so the failure is reported
            create_time = time.time()
        record = ProcessRecord(
            name=name,
            pid=child.pid,
            create_time=create_time,
            port=port,
            argv=argv,
            started_at=time.time(),
            log_path=str(log_path),
            labels=labels,
            env_digest=digest,
            restarts=restarts,
            failure=failure,
        )
        self._children[name] = child
        self._save(record)
        return record

    # ---- ports and back-off -----------------------------------------------------------------

    def _reserved_ports(self, exclude: str) -> set[int]:
        """Ports of other recorded processes: a child may not have bound its port yet."""
        return {record.port for record in self._read_all() if record.name != exclude}

    def _port_free(self, port: int, exclude: str) -> bool:
        # Only ports the kernel could have handed out (never 0 or a privileged one from a
        # hand-edited record), not promised to another recorded process.
        if port < 1024 or port > 65535 or port in self._reserved_ports(exclude):
            return False
        # Probed as the servers themselves bind: connections of a dead predecessor lingering in
        # TIME_WAIT must not push a restarted router off the port its clients know.
        return not port_in_use(LOOPBACK, port)

    def _free_port(self, exclude: str) -> int:
        reserved = self._reserved_ports(exclude)
        for _ in range(100):
            port = free_port()
            if port not in reserved:
                return port
        raise RuntimeError("no free port on 127.0.0.1 after 100 attempts")

    def _backoff(self, restarts: int) -> float:
        """Seconds before restarting a child that crashed after `restarts` restarts in a row: none
        the first time, then `backoff_initial` doubling up to `backoff_max`."""
        if restarts == 0:
            return 0.0
        return float(min(self.backoff_initial * 2 ** (restarts - 1), self.backoff_max))


def _check_name(name: str) -> None:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ValueError(
            f"invalid process name {name!r}: use letters, digits, '.', '_' and '-' "
            "(starting with a letter or digit, at most 200 characters)"
        )


def _env_digest(env: Mapping[str, str]) -> str:
    # A digest, not the values: overrides may carry credentials and records are plain files.
    return hashlib.sha256(json.dumps(sorted(env.items())).encode()).hexdigest()


def _reap(pid: int) -> int | None:
    """Reap a zombie if it is our child (then its exit code is known)."""
    try:
        waited, status = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return None
    return os.waitstatus_to_exitcode(status) if waited == pid else None


def _descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return []


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    # Only called while the group leader is alive and verified as ours.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _last_line(path: Path) -> str | None:
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - _TAIL_BYTES))
            tail = fh.read().decode("utf-8", errors="replace")
    except FileNotFoundError:
        return None
    lines = [line.strip() for line in tail.splitlines() if line.strip()]
    return lines[-1] if lines else None


def _describe_exit(code: int | None, last_line: str | None) -> str:
    if code is None:
        how = "exited (code unknown)"
    elif code < 0:
        try:
            how = f"killed by {signal.Signals(-code).name}"
        except ValueError:
            how = f"killed by signal {-code}"
    else:
        how = f"exited (code {code})"
    if not last_line:
        return f"{how} with nothing on stderr"
    if code is not None and code < 0:
        # Killed from outside (OOM killer, an operator): the log's last line is whatever the server
        # was doing, often an access line, so it is shown as that, not as the cause.
        return f"{how} (last line of its log: {last_line})"
    return f"{how}: {last_line}"
