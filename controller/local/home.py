"""Where the local platform keeps its state, and how `local up` / `local down` manage its services.

    .modelrollout/            (--home, or MODELROLLOUT_HOME)
      services.json           URLs of the MLflow server and Prometheus that `local up` started
      mlflow/                 sqlite database, artifacts, log, pid file
      prometheus/             generated config, targets/ (file_sd), TSDB, log, pid file
      state/                  one status file per rollout, its commands and events
      platform/               records and logs of model servers and routers
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from controller.local import mlflow_server, prometheus_server
from controller.local.ports import free_port
from controller.local.atomic_file import atomic_write

DEFAULT_HOME = ".modelrollout"


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
                f"local services in {self.root} are not running (stopped or crashed): run `modelrollout local up`"
            )
        return Services(mlflow=data["mlflow"], prometheus=data["prometheus"])

    def up(self, mlflow_port: int = 0, prometheus_port: int = 0, scrape_interval: str = "1s") -> tuple[Services, bool]:
        """Start whatever is not running; returns the services and whether anything was started."""
        started = False
        mlflow_record = mlflow_server.read_pidfile(self.mlflow_dir)
        if mlflow_record is None:
            server = mlflow_server.MlflowServer(self.mlflow_dir, mlflow_port or free_port())
            server.start()
            mlflow_url, started = server.url, True
        else:
            mlflow_url = mlflow_record.url
        prom_record = prometheus_server.read_pidfile(self.prometheus_dir)
        if prom_record is None:
            prom = prometheus_server.PrometheusServer(
                self.prometheus_dir, prometheus_port or free_port(), scrape_interval=scrape_interval
            )
            prom.start()
            prom_url, started = prom.url, True
        else:
            prom_url = prom_record.url
        services = Services(mlflow=mlflow_url, prometheus=prom_url)
        atomic_write(self.services_file, json.dumps({"mlflow": mlflow_url, "prometheus": prom_url}, indent=1))
        return services, started

    def down(self) -> list[str]:
        """Stop the services and every model server and router; returns what was stopped."""
        from controller.local.supervisor import Supervisor

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
        self.services_file.unlink(missing_ok=True)
        return stopped
