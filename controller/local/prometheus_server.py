"""A real Prometheus (Debian's `prometheus` binary) run as a child process of the local platform.

Everything lives in one data directory:

    prometheus.yml      generated config (written on every start)
    targets/*.json      scrape targets, one file per component (file_sd)
    tsdb/               the time-series database
    prometheus.log      the server's output
    prometheus.pid      {"pid", "host", "port"}: lets `local up` see that a server is already
                        running and lets `local down`, a different process, stop it

**Targets are files, not config.** The one scrape job discovers its targets with `file_sd_configs`
on `targets/*.json`, so the controller adds a router or a model server by writing a file and drops
it by deleting the file; Prometheus is never restarted or reloaded for that.

How fast a new file is scraped: Prometheus watches the directory with inotify and re-reads a changed
file at once (`refresh_interval` is only the fallback re-read where inotify is missing; it is set
low anyway). The delay comes from two fixed 5 s throttles in Prometheus 2.42 that neither the
command line nor the config file can change: the discovery manager forwards target updates at most
every 5 s, and the scrape manager applies them at most every 5 s. Then the first scrape comes
within one `scrape_interval`. Measured here (1 s interval, 8 new targets): first sample 2.2-5.9 s
after the file was written, 4.0 s on average; a removed target stopped being scraped after ~4 s.
The bound is ~5 s + one interval while the two tickers run in phase (they start together), up to
~10 s + one interval otherwise. The way to make it fast is to write the target file *before*
starting the process it points at (the controller picks the port first): Prometheus then already
scrapes the address (as `up == 0`) and takes the first real sample within one interval after the
process listens, usually while the model server is still loading its model.

**Exported labels win** (`honor_labels: true`): the router exports `rollout`, `model`, `version`
and `role` itself, and the labels written with a target (e.g. `component`) must never rename them
to `exported_rollout`.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from canary.decision.durations import parse_duration
from canary.traffic.atomic_file import atomic_write
from controller.local.service_process import (
    ServerRecord,
    ServiceLauncher,
    ServiceProcess,
    process_running,
)

BINARY = "prometheus"
CONFIG_NAME = "prometheus.yml"
PIDFILE_NAME = "prometheus.pid"
LOG_NAME = "prometheus.log"
TARGETS_DIR = "targets"
TSDB_DIR = "tsdb"
JOB_NAME = "modelrollout"
DEFAULT_SCRAPE_INTERVAL = "1s"
# Local rollouts last minutes; a day of history is plenty and keeps the data dir small.
DEFAULT_RETENTION = "1d"

# A target file's name becomes part of a path: keep it to one harmless path component.
_TARGET_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_LABEL_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_HOST_PORT = re.compile(r"[^\s/:]+:\d{1,5}")


class PrometheusServerError(RuntimeError):
    """Prometheus could not be started or stopped, or a target is invalid; the message says why."""


def prometheus_binary() -> str:
    """Path of the `prometheus` binary on PATH, or an error that says how to install it."""
    path = shutil.which(BINARY)
    if path is None:
        raise PrometheusServerError(
            "prometheus binary not found on PATH: install it with `apt-get install prometheus`"
        )
    return path


def _prometheus_duration(value: str | float) -> str:
    """A duration Prometheus accepts: integer units only, so 1.5 s becomes "1500ms"."""
    seconds = parse_duration(value) if isinstance(value, str) else float(value)
    millis = round(seconds * 1000)
    if millis <= 0:
        raise PrometheusServerError(f"scrape interval must be positive, got {value!r}")
    return f"{millis // 1000}s" if millis % 1000 == 0 else f"{millis}ms"


def render_config(data_dir: Path, scrape_interval: str | float = DEFAULT_SCRAPE_INTERVAL) -> str:
    """The prometheus.yml text: one file_sd job over `<data_dir>/targets/*.json`."""
    interval = _prometheus_duration(scrape_interval)
    config = {
        "global": {
            "scrape_interval": interval,
            # Must not exceed the interval; a local target that needs longer is broken anyway.
            "scrape_timeout": interval,
            "evaluation_interval": interval,
        },
        "scrape_configs": [
            {
                "job_name": JOB_NAME,
                "honor_labels": True,
                "file_sd_configs": [
                    {
                        "files": [str(Path(data_dir).absolute() / TARGETS_DIR / "*.json")],
                        # Fallback only: changes are seen at once through inotify.
                        "refresh_interval": "5s",
                    }
                ],
            }
        ],
    }
    return yaml.safe_dump(config, sort_keys=False)


def write_targets(
    data_dir: Path, name: str, targets: Sequence[str], labels: Mapping[str, str] | None = None
) -> Path:
    """Register `targets` ("host:port") for scraping under `name`, with `labels` on every series.

    Replaces any earlier file of the same name. The file is written to a temporary name that the
    `*.json` glob does not match and renamed into place, so Prometheus never reads half a file.
    `labels` may include Prometheus' meta labels such as `__metrics_path__`.
    """
    if not _TARGET_NAME.fullmatch(name):
        raise PrometheusServerError(
            f"invalid target file name {name!r}: use letters, digits, '_', '.', '-' (no '/')"
        )
    for target in targets:
        if not isinstance(target, str) or not _HOST_PORT.fullmatch(target):
            raise PrometheusServerError(f"invalid scrape target {target!r}: expected 'host:port'")
    labels = dict(labels or {})
    for key, value in labels.items():
        if not _LABEL_NAME.fullmatch(key):
            raise PrometheusServerError(f"invalid label name {key!r} for targets {name!r}")
        if not isinstance(value, str):
            raise PrometheusServerError(f"label {key!r} for targets {name!r} must be a string")
    directory = Path(data_dir) / TARGETS_DIR
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.json"
    text = json.dumps([{"targets": list(targets), "labels": labels}], indent=2)
    atomic_write(path, text, durable=False)  # rewritten on the next apply if lost
    return path


def remove_targets(data_dir: Path, name: str) -> bool:
    """Stop scraping the targets registered under `name`; True if there was such a file."""
    if not _TARGET_NAME.fullmatch(name):
        raise PrometheusServerError(f"invalid target file name {name!r}")
    path = Path(data_dir) / TARGETS_DIR / f"{name}.json"
    existed = path.exists()
    path.unlink(missing_ok=True)
    return existed


def _service(data_dir: Path) -> ServiceProcess:
    """The Prometheus of `data_dir`: one process, which flushes its head block on SIGTERM."""
    data_dir = Path(data_dir)
    return ServiceProcess(
        name="prometheus",
        error=PrometheusServerError,
        pidfile=data_dir / PIDFILE_NAME,
        log_path=data_dir / LOG_NAME,
        is_own=lambda pid: _is_live_prometheus(pid, data_dir),
        is_alive=process_running,
        send_signal=os.kill,
    )


def read_pidfile(data_dir: Path) -> ServerRecord | None:
    """The live Prometheus recorded in `data_dir`, or None when there is none or it has died.

    A pid file left by a crashed server, or whose pid now belongs to another program, reads as
    None: a stale file must never make `up` refuse to start or `down` kill a stranger.
    """
    return _service(data_dir).recorded()


def stop_from_pidfile(data_dir: Path, timeout: float = 10.0) -> bool:
    """Stop the Prometheus recorded in `data_dir` from any process; True if one was running."""
    return _service(data_dir).stop_recorded(timeout)


def _is_live_prometheus(pid: int, data_dir: Path) -> bool:
    """True when `pid` runs (not a zombie) with the config file of `data_dir`."""
    try:
        cmdline = (Path("/proc") / str(pid) / "cmdline").read_bytes()
    except OSError:
        return False
    config = str((data_dir / CONFIG_NAME).absolute()).encode()
    return config in cmdline and process_running(pid)


@dataclass
class PrometheusServer(ServiceLauncher):
    """One Prometheus whose config, targets and TSDB live in `data_dir`, on 127.0.0.1:`port`."""

    data_dir: Path
    port: int
    scrape_interval: str | float = DEFAULT_SCRAPE_INTERVAL
    retention: str = DEFAULT_RETENTION
    host: str = "127.0.0.1"
    _process: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self.data_dir = Path(self.data_dir).absolute()
        _prometheus_duration(self.scrape_interval)  # reject a bad interval before anything runs

    @property
    def config_path(self) -> Path:
        return self.data_dir / CONFIG_NAME

    @property
    def targets_dir(self) -> Path:
        return self.data_dir / TARGETS_DIR

    def command(self, binary: str) -> list[str]:
        return [
            binary,
            f"--config.file={self.config_path}",
            f"--storage.tsdb.path={self.data_dir / TSDB_DIR}",
            f"--storage.tsdb.retention.time={self.retention}",
            f"--web.listen-address={self.host}:{self.port}",
            # Lets `POST /-/reload` pick up a rewritten prometheus.yml without a restart.
            "--web.enable-lifecycle",
        ]

    def write_targets(
        self, name: str, targets: Sequence[str], labels: Mapping[str, str] | None = None
    ) -> Path:
        return write_targets(self.data_dir, name, targets, labels)

    def remove_targets(self, name: str) -> bool:
        return remove_targets(self.data_dir, name)

    def start(self, timeout: float = 30.0) -> None:
        """Start Prometheus and return once `GET /-/ready` answers 200.

        Raises PrometheusServerError, with the tail of the server log, when the binary is missing,
        a server is already recorded for `data_dir`, the process exits (e.g. the port is taken)
        or `timeout` passes.
        """
        existing = read_pidfile(self.data_dir)
        if existing is not None:
            raise PrometheusServerError(
                f"prometheus is already running for {self.data_dir} (pid {existing.pid}, {existing.url})"
            )
        binary = prometheus_binary()
        self.targets_dir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(render_config(self.data_dir, self.scrape_interval))
        self._process = self._service_process().start(
            self.command(binary),
            host=self.host,
            port=self.port,
            cwd=self.data_dir,
            env=None,
            ready_url=f"{self.url}/-/ready",
            exited_before=f"before it was ready on {self.url}",
            not_ready=f"was not ready on {self.url}/-/ready",
            timeout=timeout,
        )

    def _service_process(self) -> ServiceProcess:
        return _service(self.data_dir)
