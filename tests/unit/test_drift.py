"""PSI, chi-square and KS on what Prometheus keeps: hand-computed values and scipy references."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import chi2_contingency, ks_2samp

from tests.reference.drift import (
    PSI_EPSILON,
    Binned,
    align,
    binned_psi,
    class_chi_square,
    class_psi,
    ks_statistic,
    ks_test,
    psi,
)


def test_psi_by_hand() -> None:
    # Proportions 0.5/0.3/0.2 against 0.4/0.4/0.2.
    expected = 0.1 * math.log(0.5 / 0.4) + (-0.1) * math.log(0.3 / 0.4) + 0.0
    assert psi([40, 40, 20], [50, 30, 20]) == pytest.approx(expected)
    assert psi([40, 40, 20], [50, 30, 20]) == pytest.approx(psi([50, 30, 20], [40, 40, 20]))  # symmetric
    assert psi([1, 2, 3], [10, 20, 30]) == 0.0  # same shares, any size


def test_an_empty_category_is_floored_not_infinite() -> None:
    # The candidate never predicts class 2: its share is taken as PSI_EPSILON.
    value = psi([50, 50], [100, 0])
    expected = (1 - 0.5) * math.log(1 / 0.5) + (PSI_EPSILON - 0.5) * math.log(PSI_EPSILON / 0.5)
    assert value == pytest.approx(expected)
    assert psi([50, 50], [100, 0], epsilon=0.01) < value


def test_class_psi_aligns_the_classes_of_both_sides() -> None:
    assert align({"a": 3, "b": 1}, {"b": 2, "c": 2}) == (["a", "b", "c"], [3.0, 1.0, 0.0], [0.0, 2.0, 2.0])
    assert class_psi({"0": 10, "1": 10}, {"1": 10, "0": 10}) == 0.0
    assert class_psi({"0": 40, "1": 40, "2": 20}, {"0": 50, "1": 30, "2": 20}) == pytest.approx(
        psi([40, 40, 20], [50, 30, 20])
    )


@pytest.mark.parametrize(
    ("baseline", "candidate", "message"),
    [
        ([1, 2], [1], "same categories"),
        ([], [], "zero categories"),
        ([0, 0], [1, 1], "no observations"),
        ([1, -1], [1, 1], "count 1"),
        ([1, math.nan], [1, 1], "count 1"),
        ([1, 1], [True, 1], "count 0"),
    ],
)
def test_bad_psi_inputs_are_refused(baseline: list, candidate: list, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        psi(baseline, candidate)


def test_chi_square_is_scipys_without_correction() -> None:
    baseline, candidate = {"0": 30, "1": 50, "2": 20}, {"0": 45, "1": 35, "2": 20, "3": 0}
    ours = class_chi_square(baseline, candidate)
    table = np.array([[30, 50, 20], [45, 35, 20]])
    statistic, pvalue, dof, _ = chi2_contingency(table, correction=False)
    assert (ours.statistic, ours.pvalue, ours.dof) == (pytest.approx(statistic), pytest.approx(pvalue), dof)
    assert class_chi_square({"a": 5}, {"a": 9}).pvalue == 1.0  # one class: nothing to compare


# --- binned values -----------------------------------------------------------------------------


def test_from_le_turns_cumulative_series_into_buckets() -> None:
    binned = Binned.from_le({"-1.0": 2, "0.0": 5, "1.0": 9, "+Inf": 10})
    assert binned == Binned((-1.0, 0.0, 1.0), (2.0, 3.0, 4.0, 1.0))
    assert binned.total == 10 and binned.cdf() == [0.2, 0.5, 0.9, 1.0]
    # increase() extrapolates each le series on its own: a small dip is flattened, not an error.
    assert Binned.from_le({"1": 5.2, "2": 5.1, "+Inf": 6}).counts == (5.2, 0.0, pytest.approx(0.8))


@pytest.mark.parametrize(
    ("series", "message"),
    [
        ({"1": 1}, r"\+Inf bucket is missing"),
        ({"x": 1, "+Inf": 1}, "not a number"),
        ({"NaN": 1, "+Inf": 1}, "not an upper bound"),
        ({"1": -1, "+Inf": 1}, "finite number >= 0"),
        ({"1": 1, "1.0": 1, "+Inf": 1}, "given twice"),
        ({"+Inf": 3}, "at least one finite bucket bound"),
    ],
)
def test_bad_bucket_series_are_refused(series: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Binned.from_le(series)


def test_binned_checks_its_shape() -> None:
    with pytest.raises(ValueError, match="increase strictly"):
        Binned((1.0, 1.0), (0, 0, 0))
    with pytest.raises(ValueError, match="need 3 counts"):
        Binned((1.0, 2.0), (0, 0))
    with pytest.raises(ValueError, match="different buckets"):
        ks_statistic(Binned((1.0,), (1, 1)), Binned((2.0,), (1, 1)))
    with pytest.raises(ValueError, match="no observations"):
        ks_test(Binned((1.0,), (0, 0)), Binned((1.0,), (1, 1)))


def test_binned_psi_by_hand() -> None:
    baseline = Binned((0.0, 1.0), (25, 50, 25))
    candidate = Binned((0.0, 1.0), (10, 50, 40))
    expected = (0.1 - 0.25) * math.log(0.1 / 0.25) + 0 + (0.4 - 0.25) * math.log(0.4 / 0.25)
    assert binned_psi(baseline, candidate) == pytest.approx(expected)


def _expand(binned: Binned) -> np.ndarray:
    # One value per observation at its bucket's upper bound (the +Inf bucket just above the last).
    points = [*binned.bounds, binned.bounds[-1] + 1]
    return np.repeat(points, [int(c) for c in binned.counts])


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_ks_is_scipys_asymptotic_two_sample_test_on_the_buckets(seed: int) -> None:
    rng = np.random.default_rng(seed)
    bounds = (-2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 2.0)
    base = np.histogram(rng.normal(0, 1, 400), bins=[-np.inf, *bounds, np.inf])[0]
    cand = np.histogram(rng.normal(0.3, 1.2, 150), bins=[-np.inf, *bounds, np.inf])[0]
    baseline, candidate = Binned(bounds, tuple(base.tolist())), Binned(bounds, tuple(cand.tolist()))
    ours = ks_test(baseline, candidate)
    reference = ks_2samp(_expand(baseline), _expand(candidate), method="asymp")
    assert ours.statistic == pytest.approx(reference.statistic, abs=1e-12)
    assert ours.pvalue == pytest.approx(reference.pvalue, rel=1e-9)
    assert (ours.baseline_n, ours.candidate_n) == (400, 150)


def test_ks_by_hand() -> None:
    baseline = Binned((1.0, 2.0), (5, 5, 0))  # CDF 0.5, 1, 1
    candidate = Binned((1.0, 2.0), (1, 2, 7))  # CDF 0.1, 0.3, 1
    assert ks_statistic(baseline, candidate) == pytest.approx(0.7)
    assert ks_statistic(baseline, baseline) == 0.0
    assert ks_test(baseline, baseline).pvalue == 1.0
    # Fractional counts from increase(): fine; under one effective observation is no evidence.
    assert ks_test(Binned((1.0,), (0.3, 0)), Binned((1.0,), (0, 0.4))).pvalue == 1.0
