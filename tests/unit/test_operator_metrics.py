"""The operator's per-rollout series: phase and traffic as of each reconcile, gone with the rollout."""

from __future__ import annotations

from canary.decision.spec import Phase, RolloutStatus, Weights
from controller.kube.operator_metrics import OperatorMetrics


def sample(metrics: OperatorMetrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def test_a_rollouts_phase_and_weights_follow_its_status_and_leave_with_it() -> None:
    metrics = OperatorMetrics()
    key = ("models", "iris")
    metrics.rollout(key, RolloutStatus(phase=Phase.SHADOW, weights=Weights(shadow=50)))
    assert sample(metrics, "modelrollout_rollout_phase", namespace="models", rollout="iris", phase="Shadow") == 1
    assert sample(metrics, "modelrollout_rollout_phase", namespace="models", rollout="iris", phase="Canary") == 0
    assert sample(metrics, "modelrollout_rollout_weight", namespace="models", rollout="iris", role="shadow") == 50
    metrics.rollout(key, RolloutStatus(phase=Phase.CANARY, weights=Weights(stable=80, candidate=20)))
    assert sample(metrics, "modelrollout_rollout_phase", namespace="models", rollout="iris", phase="Shadow") == 0
    assert sample(metrics, "modelrollout_rollout_phase", namespace="models", rollout="iris", phase="Canary") == 1
    assert sample(metrics, "modelrollout_rollout_weight", namespace="models", rollout="iris", role="canary") == 20
    assert sample(metrics, "modelrollout_rollouts", phase="Canary") == 1
    metrics.rollout(key, None)
    assert sample(metrics, "modelrollout_rollout_phase", namespace="models", rollout="iris", phase="Canary") is None
    assert sample(metrics, "modelrollout_rollout_weight", namespace="models", rollout="iris", role="canary") is None
    assert sample(metrics, "modelrollout_rollouts", phase="Canary") == 0
    metrics.rollout(key, None)  # forgetting twice is harmless
