"""The operator's own Prometheus metrics (`GET /metrics` on its HTTP port).

Names are part of the install: manifests/ ships a PrometheusRule alerting on them, so renaming
one is a breaking change.

- `modelrollout_rollouts{phase}`: ModelRollouts by phase, as of each one's last reconcile.
- `modelrollout_rollout_phase` / `modelrollout_rollout_weight`: each rollout's phase and traffic
  shares (controller/rollout_metrics.py, shared with `local run`).
- `modelrollout_transitions_total{to}`: phase transitions carried out.
- `modelrollout_reconcile_seconds`: one reconcile (registry view, readiness, analysis, actions).
- `modelrollout_analysis_seconds` / `modelrollout_analysis_errors_total`: metric queries made
  for analysis, and those that failed (bad PromQL, Prometheus unreachable).
- `modelrollout_registry_poll_seconds` / `modelrollout_registry_poll_errors_total`: the shared
  MLflow poll.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Hashable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from canary.decision.metrics import MetricsError, MetricsProvider
from canary.decision.spec import Phase, RolloutStatus
from controller.rollout_metrics import RolloutMetrics

_FAST = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class OperatorMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.rollouts = Gauge("modelrollout_rollouts", "ModelRollouts by phase", ("phase",), registry=self.registry)
        self.transitions = Counter(
            "modelrollout_transitions", "Phase transitions carried out", ("to",), registry=self.registry
        )
        self.reconcile_seconds = Histogram(
            "modelrollout_reconcile_seconds", "Time for one reconcile of one rollout", buckets=_FAST, registry=self.registry
        )
        self.analysis_seconds = Histogram(
            "modelrollout_analysis_seconds", "Time for one analysis query", buckets=_FAST, registry=self.registry
        )
        self.analysis_errors = Counter(
            "modelrollout_analysis_errors", "Analysis queries that failed", registry=self.registry
        )
        self.poll_seconds = Histogram(
            "modelrollout_registry_poll_seconds", "Time for one MLflow registry poll", buckets=_FAST, registry=self.registry
        )
        self.poll_errors = Counter(
            "modelrollout_registry_poll_errors", "MLflow registry polls that failed", registry=self.registry
        )
        self.per_rollout = RolloutMetrics(self.registry)  # phase and weights per rollout
        self._phases: dict[Hashable, Phase] = {}
        self._lock = threading.Lock()
        for phase in Phase:
            self.rollouts.labels(phase.value).set(0)

    def phase(self, key: Hashable, phase: Phase | None) -> None:
        """Record a rollout's phase (None: the rollout is gone)."""
        with self._lock:
            if phase is None:
                self._phases.pop(key, None)
            else:
                self._phases[key] = phase
            counts = {p: 0 for p in Phase}
            for known in self._phases.values():
                counts[known] += 1
        for p, count in counts.items():
            self.rollouts.labels(p.value).set(count)

    def rollout(self, key: tuple[str, str], status: RolloutStatus | None) -> None:
        """Record a rollout's state as of its last reconcile (None: the rollout is gone)."""
        self.phase(key, None if status is None else status.phase)
        self.per_rollout.record(*key, status)

    def transitioned(self, to: Phase) -> None:
        self.transitions.labels(to.value).inc()

    def poll(self, seconds: float, ok: bool) -> None:
        self.poll_seconds.observe(seconds)
        if not ok:
            self.poll_errors.inc()

    def timed(self, provider: MetricsProvider) -> MetricsProvider:
        return _TimedProvider(provider, self)


class _TimedProvider:
    """A MetricsProvider that counts and times the queries it passes on."""

    def __init__(self, inner: MetricsProvider, metrics: OperatorMetrics) -> None:
        self.inner, self.metrics = inner, metrics

    def query_value(self, promql: str) -> float | None:
        started = time.perf_counter()
        try:
            return self.inner.query_value(promql)
        except MetricsError:
            self.metrics.analysis_errors.inc()
            raise
        finally:
            self.metrics.analysis_seconds.observe(time.perf_counter() - started)
