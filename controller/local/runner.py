"""`modelrollout local run`: the controller loop of the local platform.

Every tick: one registry poll shared by all rollouts (backed off while MLflow is unreachable),
then one `reconcile` per rollout. All state is in the status files, so the loop itself holds
nothing worth losing: kill it at any point and start it again.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, start_http_server

from canary.decision.analysis import AnalysisContext
from canary.decision.metrics import MetricsError, PrometheusProvider, render
from canary.decision.spec import ModelRollout, RolloutStatus
from canary.traffic.atomic_file import atomic_write
from controller.backoff import Backoff
from controller.local.home import LocalHome, Services
from controller.local.platform import LocalPlatform
from controller.local.state import StateError, StateStore
from controller.reconcile import Ports, reconcile, watched_model
from controller.registry_poller import RegistryPoller
from controller.rollout_metrics import RolloutMetrics
from registry.connection import connect
from registry.errors import RegistryError
from registry.watcher import RegistryWatcher, Snapshot

log = logging.getLogger("modelrollout")


@dataclass
class PreflightProblem:
    where: str
    message: str

    def __str__(self) -> str:
        return f"{self.where}: {self.message}"


class LocalRunner:
    def __init__(self, rollouts: Sequence[ModelRollout], home: LocalHome, services: Services | None = None):
        services = services or home.services()
        self.rollouts = list(rollouts)
        self.home = home
        self.client = connect(services.mlflow, timeout_s=5, max_retries=0)
        self.watcher = RegistryWatcher(self.client, [watched_model(r) for r in self.rollouts])
        self.platform = LocalPlatform(home.platform_dir, services.mlflow, prometheus_targets_dir=home.targets_dir)
        self.metrics = PrometheusProvider(services.prometheus)
        self.store = StateStore(home.state_dir)
        self.ports = Ports(
            client=self.client,
            platform=self.platform,
            metrics=self.metrics,
            save_status=self.store.save,
            record_event=self.store.record_event,
        )
        # The operator's poll, run in this loop's thread: one read per tick, backed off while MLflow fails.
        self.poller = RegistryPoller(self.client, interval_s=0, backoff=Backoff())
        for rollout in self.rollouts:
            self.poller.watch(rollout.metadata.name, rollout.spec.model.name)
        self.last_snapshot: Snapshot | None = None
        # Each rollout's phase and weights as Prometheus series, as the operator exports them.
        self.metrics_registry = CollectorRegistry()
        self.rollout_metrics = RolloutMetrics(self.metrics_registry)
        self._metrics_server: Any = None

    def preflight(self) -> list[PreflightProblem]:
        """What would make every tick fail: unreadable status, unreachable services, rejected PromQL."""
        problems = []
        for rollout in self.rollouts:
            try:
                self.store.load(rollout.metadata.name)
            except StateError as err:
                problems.append(PreflightProblem(rollout.metadata.name, str(err)))
        try:
            self.watcher.poll()
        except RegistryError as err:  # unreachable, or not an MLflow registry at that URL
            problems.append(PreflightProblem("mlflow", str(err)))
        for rollout in self.rollouts:
            spec = rollout.spec
            ctx = AnalysisContext(
                rollout=rollout.metadata.name,
                namespace=rollout.metadata.namespace,
                model=spec.model.name,
                stable_version="0",
                candidate_version="0",
                candidate_role="canary",
                window_seconds=60,
            )
            for check in spec.analysis.metrics:
                template = spec.analysis.template_for(check)
                judged = template.judge
                judge_queries = (judged.buckets, judged.events, judged.trials) if judged is not None and check.judge == "sequential" else ()
                for query in filter(None, (template.query, template.samples, *judge_queries)):
                    try:
                        self.metrics.check_query(render(query, ctx.variables("0", "stable")))
                    except MetricsError as err:
                        problems.append(PreflightProblem(f"{rollout.metadata.name}: metric {check.name!r}", str(err)))
                        break
        return problems

    def poll(self) -> tuple[Snapshot | None, str | None]:
        """This tick's registry snapshot, or None and why (MLflow failing: polled with back-off)."""
        self.poller.poll_once()
        snapshot, error = self.poller.latest()
        if snapshot is not None and snapshot is not self.last_snapshot:
            for move in self.watcher.changes(self.last_snapshot, snapshot):
                log.info("%s: %s %r: v%s -> v%s", move.model, move.via, move.alias, move.old_version or "-", move.new_version or "-")
            self.last_snapshot = snapshot
        return snapshot, error

    def tick(self, now: datetime | None = None) -> dict[str, RolloutStatus]:
        now = now or datetime.now(timezone.utc)
        snapshot, registry_error = self.poll()
        statuses = {}
        for rollout in self.rollouts:
            name = rollout.metadata.name
            # One rollout's broken status file or full disk must not freeze the others.
            try:
                status = self.store.load(name)
                pending = self.store.pending_commands(name, status.last_command_id)
                statuses[name] = reconcile(
                    rollout,
                    status,
                    snapshot,
                    None if snapshot is not None else registry_error or "registry poll backed off",
                    [(p.id, p.command) for p in pending],
                    self.ports,
                    now,
                )
                if pending:
                    self.store.drop_commands(name, pending[-1].id)
                self.rollout_metrics.record(rollout.metadata.namespace, name, statuses[name])
            except (StateError, OSError) as err:
                log.error("%s: skipped this tick: %s", name, err)
        return statuses

    def serve_metrics(self) -> str:
        """Serve the rollouts' series on a free loopback port that the local Prometheus scrapes
        (a target file beside the routers'); returns "host:port". `stop_serving` undoes both."""
        server, _thread = start_http_server(0, addr="127.0.0.1", registry=self.metrics_registry)
        self._metrics_server = server
        address = f"127.0.0.1:{server.server_port}"
        self.home.targets_dir.mkdir(parents=True, exist_ok=True)
        atomic_write(self._metrics_target, json.dumps([{"targets": [address], "labels": {"component": "controller"}}]))
        log.info("rollout metrics (phase, weights) on http://%s/metrics", address)
        return address

    def stop_serving(self) -> None:
        self._metrics_target.unlink(missing_ok=True)
        if self._metrics_server is not None:
            self._metrics_server.shutdown()
            self._metrics_server.server_close()
            self._metrics_server = None

    @property
    def _metrics_target(self) -> Path:
        # Not a rollout's name (those are DNS labels, no '_'), so never a router's target file.
        return self.home.targets_dir / "_controller.json"

    def run(self, stop: threading.Event, tick_seconds: float = 1.0, on_tick: Callable[[dict], None] | None = None) -> None:
        while not stop.is_set():
            started = time.monotonic()
            try:
                statuses = self.tick()
                if on_tick is not None:
                    on_tick(statuses)
            except Exception:  # noqa: BLE001 - a bad tick must not end the controller
                log.exception("tick failed; retrying")
            stop.wait(max(0.0, tick_seconds - (time.monotonic() - started)))
