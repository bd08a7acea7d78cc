"""The Prometheus metrics of served and shadowed requests, per version and role.

Exported by the local platform's router and (on KServe) by the shadow comparator, with the same
names and labels: that is a contract, the templates in canary/templates.py query them. Every
exporter has its own CollectorRegistry, so several of them (or tests) in one process never share
counters, and the exposition holds only these series.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

STABLE = "stable"
CANARY = "canary"
SHADOW = "shadow"
ROLES = (STABLE, CANARY, SHADOW)

_VERSION_LABELS = ("rollout", "model", "version", "role")

# Model latencies on loopback run from about a millisecond to seconds; a histogram_quantile
# is only as fine as its buckets, so they are dense below 100 ms where most answers fall.
LATENCY_BUCKETS = (
    0.001,
    0.002,
    0.003,
    0.005,
    0.0075,
    0.01,
    0.015,
    0.02,
    0.03,
    0.05,
    0.075,
    0.1,
    0.15,
    0.2,
    0.3,
    0.5,
    0.75,
    1.0,
    1.5,
    2.0,
    3.0,
    5.0,
    10.0,
)

EXPOSITION_CONTENT_TYPE = CONTENT_TYPE_LATEST


class MetricFamilies:
    """The metric families in one registry; an exporter serving several rollouts shares one."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        reg = self.registry
        self.requests = Counter(
            "modelrollout_requests_total",
            "Requests forwarded to a model version (mirrored ones under role shadow)",
            _VERSION_LABELS,
            registry=reg,
        )
        self.errors = Counter(
            "modelrollout_request_errors_total",
            "Requests to a model version that failed: 5xx answer, timeout or connection error",
            _VERSION_LABELS,
            registry=reg,
        )
        self.duration = Histogram(
            "modelrollout_request_duration_seconds",
            "Time for the model version to answer, seen by the router",
            _VERSION_LABELS,
            buckets=LATENCY_BUCKETS,
            registry=reg,
        )
        self.comparisons = Counter(
            "modelrollout_shadow_comparisons_total",
            "Mirrored instances whose shadow prediction was compared",
            ("rollout", "model", "version"),
            registry=reg,
        )
        self.agreements = Counter(
            "modelrollout_shadow_agreements_total",
            "Mirrored instances where the shadow agreed with the stable",
            ("rollout", "model", "version"),
            registry=reg,
        )
        self.feedback = Counter(
            "modelrollout_feedback_total",
            "Predictions scored against a ground-truth label",
            _VERSION_LABELS,
            registry=reg,
        )
        self.feedback_correct = Counter(
            "modelrollout_feedback_correct_total",
            "Predictions that matched their ground-truth label",
            _VERSION_LABELS,
            registry=reg,
        )
        self.mirror_dropped = Counter(
            "modelrollout_mirror_dropped_total",
            "Mirrored copies dropped: queue full or shadow gone",
            ("rollout", "model"),
            registry=reg,
        )
        self.queue_depth = Gauge(
            "modelrollout_mirror_queue_depth",
            "Mirrored copies waiting to be sent to the shadow",
            ("rollout",),
            registry=reg,
        )


class ServingMetrics:
    """Counters per (model, version, role) for one rollout; the rollout label is fixed.

    Its own registry by default (the local router serves one rollout); give `families` to share
    one exposition between rollouts (the shadow comparator serves many).
    """

    def __init__(self, rollout: str, families: MetricFamilies | None = None) -> None:
        self.rollout = rollout
        f = families or MetricFamilies()
        self.families = f
        self.registry = f.registry
        self.requests, self.errors, self.duration = f.requests, f.errors, f.duration
        self.comparisons, self.agreements = f.comparisons, f.agreements
        self.feedback, self.feedback_correct = f.feedback, f.feedback_correct
        self.mirror_dropped, self.queue_depth = f.mirror_dropped, f.queue_depth

    def prepare(self, model: str, version: str, role: str) -> None:
        """Create a version's series at 0, so ``increase()`` counts its very first requests."""
        labels = (self.rollout, model, version, role)
        for family in (self.requests, self.errors, self.duration, self.feedback, self.feedback_correct):
            family.labels(*labels)
        if role == SHADOW:
            self.comparisons.labels(self.rollout, model, version)
            self.agreements.labels(self.rollout, model, version)
        self.mirror_dropped.labels(self.rollout, model)

    def observe_request(self, model: str, version: str, role: str, seconds: float, failed: bool) -> None:
        labels = (self.rollout, model, version, role)
        self.requests.labels(*labels).inc()
        self.duration.labels(*labels).observe(seconds)
        if failed:
            self.errors.labels(*labels).inc()

    def observe_comparison(self, model: str, version: str, compared: int, agreed: int) -> None:
        self.comparisons.labels(self.rollout, model, version).inc(compared)
        self.agreements.labels(self.rollout, model, version).inc(agreed)

    def observe_feedback(self, model: str, version: str, role: str, total: int, correct: int) -> None:
        labels = (self.rollout, model, version, role)
        self.feedback.labels(*labels).inc(total)
        self.feedback_correct.labels(*labels).inc(correct)

    def observe_dropped(self, model: str) -> None:
        self.mirror_dropped.labels(self.rollout, model).inc()

    def track_queue_depth(self, depth: Callable[[], int]) -> None:
        self.queue_depth.labels(self.rollout).set_function(depth)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
