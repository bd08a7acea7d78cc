"""ECE and the mean Brier score, computed in Python over what the router exports per confidence bin
(count, confidence sum, correct count) and per instance: the reference for the `calibration_error`
and `brier_score` templates (canary/traffic/calibration.py defines the scores and the bins)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from canary.traffic.calibration import CONFIDENCE_BINS, Calibrated


@dataclass(frozen=True)
class BinTally:
    """One confidence bin over a window: what ECE needs from it."""

    count: float
    confidence_sum: float
    correct: float


def bin_tallies(instances: Iterable[Calibrated]) -> tuple[BinTally, ...]:
    """Per confidence bin (CONFIDENCE_BINS of them), the count, confidence sum and correct count."""
    count = [0] * CONFIDENCE_BINS
    confidence = [0.0] * CONFIDENCE_BINS
    correct = [0] * CONFIDENCE_BINS
    for c in instances:
        b = c.bin
        count[b] += 1
        confidence[b] += c.confidence
        correct[b] += int(c.correct)
    return tuple(BinTally(n, s, k) for n, s, k in zip(count, confidence, correct, strict=True))


def expected_calibration_error(bins: Sequence[BinTally]) -> float:
    """``sum_b |correct_b - confidence_sum_b| / sum_b count_b``; ValueError when nothing was scored.

    Takes counts (possibly fractional increase() values), not accuracies, so bins read from
    Prometheus over a window go in as they are.
    """
    total = math.fsum(b.count for b in bins)
    if total <= 0:
        raise ValueError("expected calibration error of zero scored predictions is undefined")
    return math.fsum(abs(b.correct - b.confidence_sum) for b in bins) / total


def mean_brier(instances: Sequence[Calibrated]) -> float:
    """The Brier score of a set of predictions: the mean of the per-instance scores."""
    if not instances:
        raise ValueError("Brier score of zero scored predictions is undefined")
    return math.fsum(c.brier for c in instances) / len(instances)
