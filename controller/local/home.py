"""Where the local platform keeps its state, and how `local up` / `local down` manage its services.

    .modelrollout/            (--home, or MODELROLLOUT_HOME)
      services.json           URLs of the MLflow server and Prometheus that `local up` started (and the
                              scrape interval): a crashed service comes back at the same URL
      mlflow/                 sqlite database, artifacts, log, pid file
      prometheus/             generated config, targets/ (file_sd), TSDB, log, pid file
      state/                  one status file per rollout, its commands and events
      platform/               records and logs of model servers and routers
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from canary.traffic.atomic_file import atomic_write
from controller.local import mlflow_server, prometheus_server
from controller.local.ports import free_port, port_in_use

DEFAULT_HOME = ".modelrollout"
# How long a recorded port may stay taken after its service was seen dead before `up` refuses.
PORT_RELEASE_GRACE_S = 3.0


class ServicesNotRunning(RuntimeError):
    """`local run` or a command needs the services of `local up`; the message says how to start them."""


@dataclass(frozen=True)
class Services:
    mlflow: str
    prometheus: str


@dataclass(frozen=True)
class LocalHome:
    root: Path

    @classmethod
    def resolve(cls, home: str | Path | None = None) -> LocalHome:
        return cls(Path(home or os.environ.get("MODELROLLOUT_HOME") or DEFAULT_HOME).absolute())

    @property
    def mlflow_dir(self) -> Path:
        return self.root / "mlflow"

    @property
    def prometheus_dir(self) -> Path:
        return self.root / "prometheus"

    @property
    def targets_dir(self) -> Path:
        return self.prometheus_dir / prometheus_server.TARGETS_DIR

    @property
    def state_dir(self) -> Path:
        return self.root / "state"

    @property
    def platform_dir(self) -> Path:
        return self.root / "platform"

    @property
    def services_file(self) -> Path:
        return self.root / "services.json"

    def services(self) -> Services:
        """The running services, or ServicesNotRunning naming the fix."""
        if not self.services_file.exists():
            raise ServicesNotRunning(f"no local services in {self.root}: run `modelrollout local up` first")
        data = json.loads(self.services_file.read_text())
        if mlflow_server.read_pidfile(self.mlflow_dir) is None or prometheus_server.read_pidfile(self.prometheus_dir) is None:
            raise ServicesNotRunning(
                f"local services in {self.root} are not running (stopped or crashed): run `modelrollout local up` "
                "(it starts them again on their recorded addresses)"
            )
        return Services(mlflow=data["mlflow"], prometheus=data["prometheus"])

    def recorded(self) -> dict[str, str]:
        """What services.json says (`mlflow`, `prometheus` URLs, `scrape_interval`), {} without it."""
        try:
            data = json.loads(self.services_file.read_text())
        except (OSError, ValueError):
            return {}
        return {k: v for k, v in data.items() if isinstance(v, str)} if isinstance(data, dict) else {}

    def up(
        self, mlflow_port: int = 0, prometheus_port: int = 0, scrape_interval: str | None = None
    ) -> tuple[Services, bool]:
        """Start whatever is not running; returns the services and whether anything was started.

        A service services.json records comes back on its recorded port (unless a port is given):
        its URL is a contract -- a running `local run`, the model servers and routers, and the
        user's exported MLFLOW_TRACKING_URI all hold it. If something else took that port, this
        refuses, naming it, rather than move the service where nobody looks.
        """
        recorded = self.recorded()
        scrape = scrape_interval or recorded.get("scrape_interval") or prometheus_server.DEFAULT_SCRAPE_INTERVAL
        started = False
        mlflow_record = mlflow_server.read_pidfile(self.mlflow_dir)
        if mlflow_record is None:
            port = self._port("mlflow", mlflow_port, recorded)
            server = mlflow_server.MlflowServer(self.mlflow_dir, port)
            server.start()
            mlflow_url, started = server.url, True
        else:
            mlflow_url = mlflow_record.url
        prom_record = prometheus_server.read_pidfile(self.prometheus_dir)
        if prom_record is None:
            port = self._port("prometheus", prometheus_port, recorded)
            prom = prometheus_server.PrometheusServer(self.prometheus_dir, port, scrape_interval=scrape)
            prom.start()
            prom_url, started = prom.url, True
        else:
            prom_url = prom_record.url
        services = Services(mlflow=mlflow_url, prometheus=prom_url)
        document = {"mlflow": mlflow_url, "prometheus": prom_url, "scrape_interval": scrape}
        atomic_write(self.services_file, json.dumps(document, indent=1))
        return services, started

    def dead_services(self) -> list[str]:
        """The services services.json records whose process is gone (crashed or killed)."""
        if not self.services_file.exists():
            return []  # never started, or stopped on purpose by `local down`
        return [
            name
            for name, running in (
                ("mlflow", mlflow_server.read_pidfile(self.mlflow_dir)),
                ("prometheus", prometheus_server.read_pidfile(self.prometheus_dir)),
            )
            if running is None
        ]

    def _port(self, name: str, requested: int, recorded: dict[str, str]) -> int:
        if requested:
            return requested
        url = recorded.get(name)
        if not url:
            return free_port()
        port = urlsplit(url).port or 0
        if port and self._held("127.0.0.1", port):
            error = mlflow_server.MlflowServerError if name == "mlflow" else prometheus_server.PrometheusServerError
            raise error(
                f"cannot restart {name} on its recorded address {url} ({self.services_file}): port {port} is taken "
                f"by another process; stop that process, or run `modelrollout local down` and `local up` for new ports"
            )
        return port or free_port()

    @staticmethod
    def _held(host: str, port: int, grace_s: float = PORT_RELEASE_GRACE_S) -> bool:
        """Whether `port` stays taken: a process just killed lets go of its sockets a moment after
        it is seen dead (its threads are still being torn down), so give it that moment."""
        deadline = time.monotonic() + grace_s
        while port_in_use(host, port):
            if time.monotonic() >= deadline:
                return True
            time.sleep(0.05)
        return False

    def down(self) -> list[str]:
        """Stop the services and every model server and router; returns what was stopped."""
        from controller.local.supervisor import Supervisor

        # First, so a `local run` keeping the services sees them stopped on purpose, not crashed.
        self.services_file.unlink(missing_ok=True)
        stopped = []
        supervisor = Supervisor(self.platform_dir / "processes")
        for record in supervisor.records():
            if not record.dead:
                stopped.append(record.name)
            supervisor.stop(record.name)
        if prometheus_server.stop_from_pidfile(self.prometheus_dir):
            stopped.append("prometheus")
        if mlflow_server.stop_from_pidfile(self.mlflow_dir):
            stopped.append("mlflow")
        return stopped
