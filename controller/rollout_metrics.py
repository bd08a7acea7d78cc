"""Each rollout's phase and traffic shares as Prometheus series, for dashboards.

The operator serves them on its `/metrics`; `local run` on a loopback port of its own that the
local Prometheus scrapes. The same names and labels in both, so one Grafana dashboard
(charts/modelrollout/dashboards/modelrollout.json) reads either:

- `modelrollout_rollout_phase{namespace, rollout, phase}`: 1 for the rollout's current phase, 0 for
  the others, as of its last reconcile;
- `modelrollout_rollout_weight{namespace, rollout, role}`: percent of client requests the candidate
  answers (`role="canary"`) and percent mirrored to a shadow (`role="shadow"`).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Gauge

from canary.decision.spec import Phase, RolloutStatus

_ROLES = ("canary", "shadow")


class RolloutMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.phase = Gauge(
            "modelrollout_rollout_phase", "1 for the rollout's current phase", ("namespace", "rollout", "phase"),
            registry=registry,
        )  # fmt: skip
        self.weight = Gauge(
            "modelrollout_rollout_weight", "Percent of requests the candidate serves (canary) or sees mirrored (shadow)",
            ("namespace", "rollout", "role"), registry=registry,
        )  # fmt: skip

    def record(self, namespace: str, rollout: str, status: RolloutStatus | None) -> None:
        """The rollout's state as of its last reconcile; None: the rollout is gone, and so are its series."""
        if status is None:
            for phase in Phase:
                _forget(self.phase, namespace, rollout, phase.value)
            for role in _ROLES:
                _forget(self.weight, namespace, rollout, role)
            return
        for phase in Phase:
            self.phase.labels(namespace, rollout, phase.value).set(1 if phase is status.phase else 0)
        self.weight.labels(namespace, rollout, "canary").set(status.weights.candidate)
        self.weight.labels(namespace, rollout, "shadow").set(status.weights.shadow)


def _forget(gauge: Gauge, *labels: str) -> None:
    try:
        gauge.remove(*labels)
    except KeyError:
        pass  # never set
