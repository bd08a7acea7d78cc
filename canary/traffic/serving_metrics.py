"""The Prometheus metrics of served and shadowed requests, per version and role.

Exported by the local platform's router and (on KServe) by the shadow comparator, with the same
names and labels: that is a contract, the templates in canary/decision/templates.py query them. Every
exporter has its own CollectorRegistry, so several of them (or tests) in one process never share
counters, and the exposition holds only these series.

Besides traffic (requests, errors, latency) they carry the quality signals, each as counters or
histograms so PromQL can take them over any window:

- agreement with the stable (shadow): ``modelrollout_shadow_{comparisons,agreements}_total``, and
  for regression values ``modelrollout_shadow_relative_error`` (``|a - b| / max(|a|, |b|)``);
- ground truth: ``modelrollout_feedback_{,correct_}total``, the label lag
  ``modelrollout_feedback_label_lag_seconds`` and labels that came too late
  ``modelrollout_feedback_late_labels_total{reason}``;
- calibration of probability predictions: ``modelrollout_feedback_brier_score`` (sum/count) and,
  per confidence bin, ``modelrollout_feedback_calibration_{,confidence_,correct_}total{bin}``;
- the distribution of predictions, for drift: ``modelrollout_predictions_total{class}`` and
  ``modelrollout_prediction_value`` (regression values on fixed buckets).

Series that can be known in advance are created at 0 when a version is prepared, so
``increase()`` counts their first events. Predicted classes cannot be known in advance: the first
time any version predicts a class, that class's series is created for every prepared version of
the rollout, so the others count it from their first prediction of it. At most ``max_classes``
distinct classes are tracked per rollout and model; later ones are counted as ``__other__``
(a string label longer than 64 characters too), which bounds the series per version.
"""

from __future__ import annotations

import math
from collections import Counter as Tally
from collections.abc import Callable, Iterable, Sequence
from itertools import pairwise
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from canary.traffic.calibration import BIN_LABELS
from canary.traffic.feedback import LATE_REASONS, Score
from canary.traffic.predictions import predicted_label, regression_value

STABLE = "stable"
CANARY = "canary"
SHADOW = "shadow"
# The stable's own second server in the shadow phase, sent the same copies as the shadow by the
# same mirror worker at the same moment: the shadow's latency and errors are compared with it,
# not with the stable's client path (canary/traffic/mirror.py).
BASELINE = "baseline"
ROLES = (STABLE, CANARY, SHADOW, BASELINE)

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

def _decades(low: int, high: int) -> list[float]:
    return [float(f"{m}e{k}") for k in range(low, high + 1) for m in (1, 2, 5)]


# Regression predictions can be on any scale, so the default buckets are a 1-2-5 ladder over
# eight decades on both sides of 0 (±0.01 … ±500000, and 0): a shift of 10-20% moves mass
# across a bound at any scale. Give an exporter finer bounds when the range is known.
PREDICTION_VALUE_BUCKETS = tuple(sorted(-v for v in _decades(-2, 5))) + (0.0,) + tuple(_decades(-2, 5))

# Labels arrive seconds (a test, an automatic check) to hours (a human review) after a request.
LABEL_LAG_BUCKETS = (
    0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0, 7200.0, 21600.0, 86400.0,
)  # fmt: skip

# Relative error in [0, 2]; the bound r reads "within a relative tolerance r" (math.isclose).
RELATIVE_ERROR_BUCKETS = (1e-6, 1e-4, 1e-3, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0)

# Per-instance Brier scores are in [0, 2]; the sum and count are what the templates use.
BRIER_BUCKETS = (0.01, 0.05, 0.1, 0.2, 0.5, 1.0, 1.5, 2.0)

DEFAULT_MAX_CLASSES = 50
OTHER_CLASS = "__other__"
_MAX_CLASS_LABEL_LENGTH = 64

EXPOSITION_CONTENT_TYPE = CONTENT_TYPE_LATEST


def check_buckets(bounds: Sequence[float]) -> tuple[float, ...]:
    """Histogram bounds as given: finite, strictly increasing, at least one; ValueError otherwise."""
    values = tuple(float(b) for b in bounds)
    if not values:
        raise ValueError("give at least one bucket bound")
    if not all(math.isfinite(b) for b in values):
        raise ValueError("bucket bounds must be finite numbers (+Inf is always added)")
    for lo, hi in pairwise(values):
        if hi <= lo:
            raise ValueError(f"bucket bounds must increase strictly: {lo:g} then {hi:g}")
    return values


def class_label(label: Any) -> str:
    """A predicted class as the ``class`` label value: ``true``/``false``, digits, or the string."""
    if isinstance(label, bool):
        return "true" if label else "false"
    text = str(label)
    return text if len(text) <= _MAX_CLASS_LABEL_LENGTH else OTHER_CLASS


class MetricFamilies:
    """The metric families in one registry; an exporter serving several rollouts shares one.

    ``prediction_buckets`` are the bounds of the regression value histogram; ``max_classes``
    caps the distinct predicted classes tracked per (rollout, model).
    """

    def __init__(
        self, prediction_buckets: Sequence[float] = PREDICTION_VALUE_BUCKETS, max_classes: int = DEFAULT_MAX_CLASSES
    ) -> None:
        if max_classes < 1:
            raise ValueError("max_classes must be at least 1")
        self.prediction_buckets = check_buckets(prediction_buckets)
        self.max_classes = max_classes
        # Shared by every ServingMetrics of a (rollout, model), so a comparator that re-creates
        # one when the candidate changes keeps the classes (and the cap) it already has.
        self.classes: dict[tuple[str, str], list[str]] = {}
        self.prepared: dict[tuple[str, str], set[tuple[str, str]]] = {}
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
        self.relative_error = Histogram(
            "modelrollout_shadow_relative_error",
            "Per mirrored instance with a regression value, |shadow - stable| / max(|shadow|, |stable|); "
            "2 when the shadow gave no matching answer",
            ("rollout", "model", "version"),
            buckets=RELATIVE_ERROR_BUCKETS,
            registry=reg,
        )
        self.label_lag = Histogram(
            "modelrollout_feedback_label_lag_seconds",
            "Time from a request to its ground-truth labels, per version that answered it (late labels included)",
            _VERSION_LABELS,
            buckets=LABEL_LAG_BUCKETS,
            registry=reg,
        )
        self.late_labels = Counter(
            "modelrollout_feedback_late_labels_total",
            "Labels that arrived after their request's predictions were dropped (expired: TTL; evicted: entry limit)",
            (*_VERSION_LABELS, "reason"),
            registry=reg,
        )
        self.brier = Histogram(
            "modelrollout_feedback_brier_score",
            "Multi-class Brier score of each labelled probability prediction (0 best, 2 worst)",
            _VERSION_LABELS,
            buckets=BRIER_BUCKETS,
            registry=reg,
        )
        self.calibration = Counter(
            "modelrollout_feedback_calibration_total",
            "Labelled probability predictions, by confidence bin (upper edge of the top probability)",
            (*_VERSION_LABELS, "bin"),
            registry=reg,
        )
        self.calibration_confidence = Counter(
            "modelrollout_feedback_calibration_confidence_total",
            "Sum of the top probabilities of labelled probability predictions, by confidence bin",
            (*_VERSION_LABELS, "bin"),
            registry=reg,
        )
        self.calibration_correct = Counter(
            "modelrollout_feedback_calibration_correct_total",
            "Labelled probability predictions whose top class was the label, by confidence bin",
            (*_VERSION_LABELS, "bin"),
            registry=reg,
        )
        self.predictions = Counter(
            "modelrollout_predictions_total",
            "Predicted instances by class (labels, or the argmax of probabilities); capped, rest as __other__",
            (*_VERSION_LABELS, "class"),
            registry=reg,
        )
        self.prediction_value = Histogram(
            "modelrollout_prediction_value",
            "Regression predictions (float values) of the version",
            _VERSION_LABELS,
            buckets=self.prediction_buckets,
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
        """Create a version's series at 0, so ``increase()`` counts their very first events."""
        f = self.families
        labels = (self.rollout, model, version, role)
        for family in (
            self.requests, self.errors, self.duration, self.feedback, self.feedback_correct,
            f.label_lag, f.brier, f.prediction_value,
        ):  # fmt: skip
            family.labels(*labels)
        for reason in LATE_REASONS:
            f.late_labels.labels(*labels, reason)
        for bin_label in BIN_LABELS:
            for family in (f.calibration, f.calibration_confidence, f.calibration_correct):
                family.labels(*labels, bin_label)
        for known in (*self.classes(model), OTHER_CLASS):
            f.predictions.labels(*labels, known)
        if role == SHADOW:
            self.comparisons.labels(self.rollout, model, version)
            self.agreements.labels(self.rollout, model, version)
            f.relative_error.labels(self.rollout, model, version)
        self.mirror_dropped.labels(self.rollout, model)
        f.prepared.setdefault((self.rollout, model), set()).add((version, role))

    def classes(self, model: str) -> list[str]:
        """The predicted classes tracked so far for a model (without ``__other__``)."""
        return list(self.families.classes.get((self.rollout, model), ()))

    def _class_series(self, model: str, label: Any) -> str:
        """The ``class`` label value to count a predicted label under; a new class is created for all."""
        f = self.families
        name = class_label(label)
        if name == OTHER_CLASS:
            return name
        known = f.classes.setdefault((self.rollout, model), [])
        if name in known:
            return name
        if len(known) >= f.max_classes:
            return OTHER_CLASS
        known.append(name)
        for version, role in f.prepared.get((self.rollout, model), ()):
            f.predictions.labels(self.rollout, model, version, role, name)
        return name

    def observe_request(self, model: str, version: str, role: str, seconds: float, failed: bool) -> None:
        labels = (self.rollout, model, version, role)
        self.requests.labels(*labels).inc()
        self.duration.labels(*labels).observe(seconds)
        if failed:
            self.errors.labels(*labels).inc()

    def observe_unanswered(self, model: str, version: str, role: str) -> None:
        """A failed request whose answer time is unknown (KServe's logger logged no response for it):
        counted in requests and errors, not in the latency histogram."""
        labels = (self.rollout, model, version, role)
        self.requests.labels(*labels).inc()
        self.errors.labels(*labels).inc()

    def observe_predictions(self, model: str, version: str, role: str, instances: Iterable[Any]) -> None:
        """Count one answer's predictions: classes by class, regression values into the histogram."""
        f = self.families
        labels = (self.rollout, model, version, role)
        by_class: Tally[str] = Tally()
        for instance in instances:
            label = predicted_label(instance)
            if label is not None:
                by_class[self._class_series(model, label)] += 1
                continue
            value = regression_value(instance)
            if value is not None:
                f.prediction_value.labels(*labels).observe(value)
        for name, count in by_class.items():
            f.predictions.labels(*labels, name).inc(count)

    def observe_comparison(self, model: str, version: str, compared: int, agreed: int) -> None:
        self.comparisons.labels(self.rollout, model, version).inc(compared)
        self.agreements.labels(self.rollout, model, version).inc(agreed)

    def observe_relative_errors(self, model: str, version: str, errors: Iterable[float]) -> None:
        histogram = self.families.relative_error.labels(self.rollout, model, version)
        for error in errors:
            histogram.observe(error)

    def observe_feedback(self, model: str, version: str, role: str, total: int, correct: int) -> None:
        labels = (self.rollout, model, version, role)
        self.feedback.labels(*labels).inc(total)
        self.feedback_correct.labels(*labels).inc(correct)

    def observe_score(self, score: Score) -> None:
        """Everything one version's labels on one request say: accuracy, lag, lateness, calibration."""
        f = self.families
        labels = (self.rollout, score.model, score.version, score.role)
        f.label_lag.labels(*labels).observe(max(0.0, score.lag_seconds))
        if score.late is not None:
            f.late_labels.labels(*labels, score.late).inc(score.total)
            return
        self.observe_feedback(score.model, score.version, score.role, score.total, score.correct)
        if not score.calibration:
            return
        brier = f.brier.labels(*labels)
        per_bin: dict[str, list[float]] = {}
        for c in score.calibration:
            brier.observe(c.brier)
            tally = per_bin.setdefault(BIN_LABELS[c.bin], [0.0, 0.0, 0.0])
            tally[0] += 1
            tally[1] += c.confidence
            tally[2] += int(c.correct)
        for bin_label, (count, confidence, correct) in per_bin.items():
            f.calibration.labels(*labels, bin_label).inc(count)
            f.calibration_confidence.labels(*labels, bin_label).inc(confidence)
            f.calibration_correct.labels(*labels, bin_label).inc(correct)

    def observe_dropped(self, model: str) -> None:
        self.mirror_dropped.labels(self.rollout, model).inc()

    def track_queue_depth(self, depth: Callable[[], int]) -> None:
        self.queue_depth.labels(self.rollout).set_function(depth)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
