"""Brier score and expected calibration error, against hand-computed values and sklearn."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import brier_score_loss

from canary.traffic.calibration import (
    BIN_LABELS,
    CONFIDENCE_BINS,
    Calibrated,
    brier_score,
    class_index,
    confidence_bin,
    score_instances,
)
from tests.reference.calibration import (
    BinTally,
    bin_tallies,
    expected_calibration_error,
    mean_brier,
)


def test_brier_score_by_hand() -> None:
    assert brier_score([0.7, 0.2, 0.1], 0) == pytest.approx(0.09 + 0.04 + 0.01)
    assert brier_score([0.7, 0.2, 0.1], 2) == pytest.approx(0.49 + 0.04 + 0.81)
    assert brier_score([1.0, 0.0], 0) == 0.0
    assert brier_score([0.0, 1.0], 0) == 2.0  # certain and wrong: the worst
    assert brier_score([0.5, 0.5], 3) == pytest.approx(0.25 + 0.25 + 1)  # the true class had probability 0
    with pytest.raises(ValueError):
        brier_score([0.5, 0.5], -1)


def test_mean_brier_is_sklearns_multiclass_brier_score() -> None:
    rng = np.random.default_rng(7)
    probs = rng.dirichlet([1.0, 2.0, 0.5, 1.0], size=200)
    labels = rng.integers(0, 4, size=200)
    ours = mean_brier(score_instances(probs.tolist(), labels.tolist()))
    assert ours == pytest.approx(brier_score_loss(labels, probs, labels=[0, 1, 2, 3]), rel=1e-12)
    # With two classes, sklearn's default scores the positive class only: half of ours.
    two = rng.dirichlet([1.0, 1.0], size=50)
    y = rng.integers(0, 2, size=50)
    assert mean_brier(score_instances(two.tolist(), y.tolist())) == pytest.approx(
        2 * brier_score_loss(y, two[:, 1]), rel=1e-12
    )


@pytest.mark.parametrize(
    ("label", "index"),
    [(0, 0), (3, 3), (2.0, 2), (-1, None), (1.5, None), (True, None), ("1", None), (None, None), (float("nan"), None)],
)
def test_class_index(label: object, index: int | None) -> None:
    assert class_index(label) == index


@pytest.mark.parametrize(
    ("confidence", "bin_index"),
    [(0.0, 0), (0.05, 0), (0.1, 0), (0.1000001, 1), (0.35, 3), (0.5, 4), (0.95, 9), (1.0, 9)],
)
def test_confidence_bins_are_closed_above(confidence: float, bin_index: int) -> None:
    assert confidence_bin(confidence) == bin_index


def test_bin_labels_and_bad_confidences() -> None:
    assert len(BIN_LABELS) == CONFIDENCE_BINS and BIN_LABELS[0] == "0.1" and BIN_LABELS[-1] == "1.0"
    for bad in (-0.1, 1.1, float("nan")):
        with pytest.raises(ValueError):
            confidence_bin(bad)


def test_score_instances_keeps_what_can_be_calibrated() -> None:
    scored = score_instances(
        [[0.9, 0.1], [0.2, 0.8], 1, {"label": 0, "probabilities": [0.6, 0.4]}, [0.5, 0.5]],
        [0, 0, 1, 1, "a"],
    )
    assert scored == (
        Calibrated(pytest.approx(0.02), 0.9, True),
        Calibrated(pytest.approx(1.28), 0.8, False),
        Calibrated(pytest.approx(0.72), 0.6, False),  # the probabilities, not the label output, are scored
    )
    with pytest.raises(ValueError):
        score_instances([[0.5, 0.5]], [0, 1])  # one label per prediction


def test_ece_by_hand() -> None:
    instances = [
        Calibrated(0.0, 0.95, True),
        Calibrated(0.0, 0.95, True),
        Calibrated(0.0, 0.95, False),
        Calibrated(0.0, 0.95, True),  # bin 1.0: accuracy 0.75, confidence 0.95 -> gap 0.2 over 4
        Calibrated(0.0, 0.55, True),
        Calibrated(0.0, 0.55, False),  # bin 0.6: accuracy 0.5, confidence 0.55 -> gap 0.05 over 2
    ]
    bins = bin_tallies(instances)
    assert bins[9] == BinTally(4, pytest.approx(3.8), 3) and bins[5] == BinTally(2, pytest.approx(1.1), 1)
    assert sum(b.count for b in bins) == 6
    assert expected_calibration_error(bins) == pytest.approx((4 * 0.2 + 2 * 0.05) / 6)


def test_ece_matches_a_direct_computation_on_samples() -> None:
    rng = np.random.default_rng(11)
    probs = rng.dirichlet([0.6, 0.6, 0.6], size=500)
    labels = rng.integers(0, 3, size=500)
    instances = score_instances(probs.tolist(), labels.tolist())
    confidence = probs.max(axis=1)
    correct = probs.argmax(axis=1) == labels
    which = np.clip(np.ceil(confidence * 10).astype(int) - 1, 0, 9)
    direct = sum(
        abs(correct[which == b].mean() - confidence[which == b].mean()) * (which == b).sum()
        for b in range(10)
        if (which == b).any()
    ) / len(labels)
    assert expected_calibration_error(bin_tallies(instances)) == pytest.approx(direct, rel=1e-9)


def test_fractional_window_counts_and_empty_windows() -> None:
    # increase() gives fractional counts: the formula takes them as they are.
    assert expected_calibration_error([BinTally(2.5, 2.0, 2.5), BinTally(0, 0, 0)]) == pytest.approx(0.2)
    with pytest.raises(ValueError):
        expected_calibration_error([BinTally(0, 0, 0)])
    with pytest.raises(ValueError):
        mean_brier([])
