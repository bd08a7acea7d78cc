"""Calibration of probability predictions against ground-truth labels: Brier score and ECE.

Accuracy says how often the top class is right; calibration says whether the probabilities
mean what they say. A candidate can keep its accuracy and still become over-confident (a
retrain without the old temperature scaling), which hurts every consumer that thresholds or
ranks on the probabilities.

Only instances whose prediction is a probability vector (canary.traffic.predictions.probability_vector)
and whose label is a class index (an int >= 0, or a float with an integral value) are scored;
the rest have no calibration. Two measures, both exported as counters so PromQL can take them
over any window:

- **Brier score** (multi-class, Brier 1950): ``sum_k (p_k - y_k)^2`` with ``y`` the one-hot
  label — 0 for a certain right answer, 2 for a certain wrong one. It is the definition of
  sklearn's ``brier_score_loss`` for more than two classes; for two classes it is twice
  sklearn's default (which scores the positive class only). A label index beyond the vector
  means the model gave the true class probability 0: ``sum_k p_k^2 + 1``.
- **ECE** (expected calibration error): instances are put in CONFIDENCE_BINS equal-width bins
  by their top probability (the confidence); ``ECE = sum_b |correct_b - confidence_sum_b| / N``,
  the count-weighted gap between accuracy and confidence. Per bin the exporter keeps the count,
  the sum of confidences and the number correct, which is all the formula needs.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from canary.traffic.predictions import argmax, instance_probabilities

CONFIDENCE_BINS = 10
# Upper edges of the bins, (0, 0.1], (0.1, 0.2], ... (0.9, 1.0]; a confidence of 0 goes in the first.
BIN_EDGES = tuple((i + 1) / CONFIDENCE_BINS for i in range(CONFIDENCE_BINS))
# The `bin` label of the exported series: the bin's upper edge.
BIN_LABELS = tuple(f"{edge:.1f}" for edge in BIN_EDGES)


def class_index(label: Any) -> int | None:
    """A ground-truth label as a class index into a probability vector, or None when it is not one."""
    if isinstance(label, bool):
        return None
    if isinstance(label, int):
        return label if label >= 0 else None
    if isinstance(label, float) and math.isfinite(label) and label >= 0 and label.is_integer():
        return int(label)
    return None


def brier_score(probabilities: Sequence[float], label: int) -> float:
    """``sum_k (p_k - [k == label])^2``; a label beyond the vector had probability 0."""
    if label < 0:
        raise ValueError(f"a class index is >= 0, got {label}")
    score = math.fsum((p - (1.0 if k == label else 0.0)) ** 2 for k, p in enumerate(probabilities))
    return score + (1.0 if label >= len(probabilities) else 0.0)


def confidence_bin(confidence: float) -> int:
    """The bin of a top probability: i for (i/10, (i+1)/10], 0 for exactly 0."""
    if not 0.0 <= confidence <= 1.0:
        raise ValueError(f"a confidence is within [0, 1], got {confidence}")
    return min(bisect_left(BIN_EDGES, confidence), CONFIDENCE_BINS - 1)


@dataclass(frozen=True)
class Calibrated:
    """One scored probability prediction."""

    brier: float
    confidence: float  # the top probability
    correct: bool  # the top class is the label

    @property
    def bin(self) -> int:
        return confidence_bin(self.confidence)


def score_instances(predicted: Sequence[Any], labels: Sequence[Any]) -> tuple[Calibrated, ...]:
    """The calibration of every instance that has probabilities and a class-index label."""
    out = []
    for prediction, label in zip(predicted, labels, strict=True):
        probs = instance_probabilities(prediction)
        index = class_index(label)
        if probs is None or index is None:
            continue
        out.append(Calibrated(brier_score(probs, index), max(probs), argmax(probs) == index))
    return tuple(out)
