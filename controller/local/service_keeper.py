"""Keeps `local up`'s MLflow and Prometheus running while `local run` runs.

The model servers and routers are supervised by the platform (supervisor.py); these two were not,
so a crashed Prometheus failed every later analysis, and a crashed MLflow every registry read and
write-back, until someone ran `local up` again. The keeper checks once a second from its own thread
(an MLflow start takes seconds, and the controller's ticks must not wait for it) and brings a dead
service back through `LocalHome.up`, on the port services.json records: every URL handed out --
the controller's, the model servers' MLFLOW_TRACKING_URI, the user's export -- stays valid.

A service stopped by `local down` is left stopped: `down` removes services.json first.
"""

from __future__ import annotations

import logging
import threading

from controller.local.home import LocalHome
from controller.local.mlflow_server import MlflowServerError
from controller.local.prometheus_server import PrometheusServerError

log = logging.getLogger("modelrollout")

CHECK_EVERY_S = 1.0


class ServiceKeeper:
    def __init__(self, home: LocalHome, check_every_s: float = CHECK_EVERY_S):
        self.home = home
        self.check_every_s = check_every_s
        self.last_error: str | None = None

    def check(self) -> list[str]:
        """Restart the recorded services that are not running; returns those restarted."""
        dead = self.home.dead_services()
        if not dead:
            return []
        log.warning("%s not running: restarting on the recorded address", " and ".join(dead))
        try:
            services, _ = self.home.up()
        except (MlflowServerError, PrometheusServerError, OSError) as err:
            # Port taken, binary gone, a start that timed out: say it once, try again next check.
            if str(err) != self.last_error:
                log.error("could not restart %s: %s", " and ".join(dead), err)
            self.last_error = str(err)
            return []
        self.last_error = None
        urls = {"mlflow": services.mlflow, "prometheus": services.prometheus}
        log.info("restarted %s", ", ".join(f"{name} at {urls[name]}" for name in dead))
        return dead

    def run(self, stop: threading.Event) -> None:
        while not stop.wait(self.check_every_s):
            try:
                self.check()
            except Exception:  # noqa: BLE001 - the keeper must outlive any one failed check
                log.exception("checking the local services failed; checking again")

    def start(self, stop: threading.Event) -> threading.Thread:
        thread = threading.Thread(target=self.run, args=(stop,), name="service-keeper", daemon=True)
        thread.start()
        return thread
