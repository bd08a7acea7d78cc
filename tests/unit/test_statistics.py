"""The statistical judge's parts against scipy and hand-computed values, and its error rates by simulation."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from canary.decision.samples import Counts, Histogram, histogram_quantile
from canary.decision.sequential import (
    confidence_sequence,
    judge_latency,
    judge_rate,
    mixture_likelihood_ratio,
)
from canary.decision.statistics import (
    above,
    mann_whitney,
    rate_difference,
    slowdown_effect,
    slowed,
    tail_bound,
    two_proportion_test,
    wilson_interval,
)
from canary.traffic.serving_metrics import LATENCY_BUCKETS

BOUNDS = tuple(LATENCY_BUCKETS)


def bucketed(seconds: np.ndarray, bounds: tuple[float, ...] = BOUNDS) -> Histogram:
    index = np.searchsorted(bounds, seconds, side="left")
    return Histogram(bounds, tuple(float(c) for c in np.bincount(index, minlength=len(bounds) + 1)))


def expanded(h: Histogram) -> np.ndarray:
    """One value per observation, the bucket's index: ties within a bucket, order between them."""
    return np.repeat(np.arange(len(h.counts)), np.asarray(h.counts, dtype=int))


def latency(rng: np.random.Generator, n: int, scale: float = 1.0, sigma: float = 0.5) -> Histogram:
    return bucketed(scale * rng.lognormal(math.log(0.04), sigma, n))


# --- samples -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("bounds", "counts", "problem"),
    [
        ((0.1, 0.2), (1, -1, 0), "must not be negative"),
        ((0.1, 0.2), (1, 2), "need 3 per-bucket counts"),
        ((0.2, 0.1), (1, 2, 3), "increase strictly"),
        ((0.1, 0.1), (1, 2, 3), "increase strictly"),
        ((), (1,), "at least one finite bucket bound"),
        ((0.1, math.inf), (1, 2, 3), "finite number"),
        ((-1.0, 0.1), (1, 2, 3), "must not be negative"),
        ((0.1, 0.2), (1, math.nan, 3), "must be finite"),
        ((0.1, 0.2), (1, "2", 3), "must be a number"),
    ],
)
def test_histogram_rejects_bad_input(bounds, counts, problem) -> None:
    with pytest.raises(ValueError, match=problem):
        Histogram(bounds, counts)


@pytest.mark.parametrize(
    ("events", "trials", "problem"),
    [(-1, 10, "events must not be negative"), (1, -1, "trials must not be negative"),
     (11, 10, "exceed trials"), (math.nan, 10, "finite"), (True, 10, "must be a number")],
)  # fmt: skip
def test_counts_reject_bad_input(events, trials, problem) -> None:
    with pytest.raises(ValueError, match=problem):
        Counts(events, trials)


def test_numpy_numbers_are_accepted() -> None:
    h = Histogram(tuple(np.array([0.1, 0.2])), tuple(np.array([1, 2, 3], dtype=np.int64)))
    assert h.total == 6
    assert Counts(np.int64(2), np.float64(10.5)).rate == pytest.approx(2 / 10.5)


def test_from_cumulative_takes_prometheus_le_series() -> None:
    h = Histogram.from_cumulative((0.1, 0.2, 0.5), (10, 40, 90, 100))
    assert h.counts == (10, 30, 50, 10)
    assert h.cumulative() == (10, 40, 90, 100)
    assert Histogram.from_le({"0.2": 40, "+Inf": 100, "0.1": 10, "0.5": 90}) == h
    assert Histogram.from_le({0.1: 10, 0.2: 40, 0.5: 90, math.inf: 100}) == h


def test_from_cumulative_flattens_extrapolation_dips_and_rejects_real_decreases() -> None:
    # increase() extrapolates each `le` series on its own: 40.2 then 39.9 is noise, not data.
    h = Histogram.from_cumulative((0.1, 0.2, 0.5), (10.0, 40.2, 39.9, 100.0))
    assert h.counts == pytest.approx((10.0, 30.2, 0.0, 59.8))
    with pytest.raises(ValueError, match=r"must not decrease: le=0.5 has 20 after 40"):
        Histogram.from_cumulative((0.1, 0.2, 0.5), (10, 40, 20, 100))
    with pytest.raises(ValueError, match="need 4 cumulative counts"):
        Histogram.from_cumulative((0.1, 0.2, 0.5), (10, 40, 100))
    with pytest.raises(ValueError, match=r"\+Inf bucket is missing"):
        Histogram.from_le({"0.1": 1, "0.2": 2})
    with pytest.raises(ValueError, match="le='fast' is not a number"):
        Histogram.from_le({"fast": 1, "+Inf": 2})


def test_histogram_quantile_interpolates_as_prometheus() -> None:
    h = Histogram((0.1, 0.2, 0.5), (10, 30, 50, 10))
    assert histogram_quantile(h, 0.05) == pytest.approx(0.05)  # rank 5 of 10 in [0, 0.1]
    assert histogram_quantile(h, 0.5) == pytest.approx(0.26)  # rank 50: 10 of 50 into (0.2, 0.5]
    assert histogram_quantile(h, 0.9) == pytest.approx(0.5)
    assert histogram_quantile(h, 0.95) == 0.5  # in +Inf: the largest finite bound
    assert histogram_quantile(Histogram((0.1, 0.2), (0, 0, 5)), 0.5) == 0.2
    with pytest.raises(ValueError, match="empty histogram"):
        histogram_quantile(Histogram((0.1,), (0, 0)), 0.5)
    with pytest.raises(ValueError, match="within"):
        histogram_quantile(h, 1.5)


def test_adding_histograms_requires_the_same_buckets() -> None:
    a = Histogram((0.1, 0.2), (1, 2, 3))
    assert (a + a).counts == (2, 4, 6)
    with pytest.raises(ValueError, match="different buckets"):
        a + Histogram((100.0, 200.0), (1, 2, 3))  # milliseconds against seconds


# --- rates ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("k", "n", "confidence"), [(0, 20, 0.95), (3, 40, 0.95), (17, 20, 0.99), (250, 1000, 0.9)])
def test_wilson_interval_matches_scipy(k, n, confidence) -> None:
    expected = stats.binomtest(k, n).proportion_ci(confidence_level=confidence, method="wilson")
    assert wilson_interval(Counts(k, n), confidence) == pytest.approx((expected.low, expected.high), abs=1e-12)


def test_two_proportion_test_matches_chi_square_and_hand_computed_wald() -> None:
    cand, base = Counts(30, 200), Counts(40, 400)
    chi2, p, _, _ = stats.chi2_contingency([[30, 170], [40, 360]], correction=False)
    test = two_proportion_test(cand, base, alternative="two-sided")
    assert test.difference == pytest.approx(0.05)
    assert test.z**2 == pytest.approx(chi2)
    assert test.p_value == pytest.approx(p)
    assert two_proportion_test(cand, base).p_value == pytest.approx(p / 2)  # one-sided, same direction
    # Non-zero margin: unpooled (Wald) standard error, computed by hand.
    se = math.sqrt(0.15 * 0.85 / 200 + 0.1 * 0.9 / 400)
    z = (0.05 - 0.02) / se
    margin = two_proportion_test(cand, base, margin=0.02)
    assert margin.z == pytest.approx(z)
    assert margin.p_value == pytest.approx(stats.norm.sf(z))
    assert two_proportion_test(cand, base, margin=0.02, alternative="less").p_value == pytest.approx(stats.norm.cdf(z))


def test_rate_statistics_reject_zero_trials_and_bad_confidence() -> None:
    with pytest.raises(ValueError, match="candidate has zero trials"):
        two_proportion_test(Counts(0, 0), Counts(1, 10))
    with pytest.raises(ValueError, match="baseline has zero trials"):
        rate_difference(Counts(1, 10), Counts(0, 0))
    with pytest.raises(ValueError, match="zero trials"):
        wilson_interval(Counts(0, 0))
    with pytest.raises(ValueError, match="confidence must be between 0 and 1"):
        wilson_interval(Counts(1, 10), 95)
    with pytest.raises(ValueError, match="alternative"):
        two_proportion_test(Counts(1, 10), Counts(1, 10), alternative="bigger")


def test_agresti_caffo_difference_by_hand() -> None:
    diff, var = rate_difference(Counts(0, 30), Counts(5, 498))
    p1, p2 = 1 / 32, 6 / 500
    assert diff == pytest.approx(p1 - p2)
    assert var == pytest.approx(p1 * (1 - p1) / 32 + p2 * (1 - p2) / 500)


# --- latency on buckets ---------------------------------------------------------------------


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("alternative", ["greater", "less", "two-sided"])
@pytest.mark.parametrize("continuity", [True, False])
def test_mann_whitney_on_buckets_matches_scipy_on_expanded_samples(seed, alternative, continuity) -> None:
    rng = np.random.default_rng(seed)
    cand, base = latency(rng, 70, scale=1.2), latency(rng, 400)
    ours = mann_whitney(cand, base, alternative=alternative, continuity=continuity)
    ref = stats.mannwhitneyu(
        expanded(cand), expanded(base), alternative=alternative, use_continuity=continuity, method="asymptotic"
    )
    u1 = stats.mannwhitneyu(expanded(cand), expanded(base), alternative="greater").statistic
    assert ours.u == pytest.approx(u1)
    assert ours.effect == pytest.approx(u1 / (70 * 400))
    assert ours.p_value == pytest.approx(ref.pvalue, rel=1e-9, abs=1e-15)


def test_rank_variances_match_placements_computed_pair_by_pair() -> None:
    rng = np.random.default_rng(7)
    cand, base = latency(rng, 40, scale=1.5), latency(rng, 90)
    x, y = expanded(cand), expanded(base)
    psi = (x[:, None] > y[None, :]) + 0.5 * (x[:, None] == y[None, :])
    v10, v01 = psi.mean(axis=1), psi.mean(axis=0)
    delong = v10.var(ddof=1) / len(x) + v01.var(ddof=1) / len(y)
    ours = mann_whitney(cand, base)
    assert ours.effect == pytest.approx(psi.mean())
    assert ours.variance == pytest.approx(delong)
    # Under "no difference", the permutation variance of U given the ties (scipy's formula).
    n1, n2 = len(x), len(y)
    _, t = np.unique(np.concatenate([x, y]), return_counts=True)
    var_u = n1 * n2 / 12 * ((n1 + n2 + 1) - (t**3 - t).sum() / ((n1 + n2) * (n1 + n2 - 1)))
    assert ours.null_variance == pytest.approx(var_u / (n1 * n2) ** 2)


def test_mann_whitney_rejects_mismatched_buckets_and_empty_histograms() -> None:
    seconds = Histogram((0.1, 0.2), (1, 2, 3))
    with pytest.raises(ValueError, match="different buckets"):
        mann_whitney(seconds, Histogram((100.0, 200.0), (1, 2, 3)))
    with pytest.raises(ValueError, match="candidate's histogram is empty"):
        mann_whitney(Histogram((0.1, 0.2), (0, 0, 0)), seconds)
    with pytest.raises(ValueError, match="baseline's histogram is empty"):
        mann_whitney(seconds, Histogram((0.1, 0.2), (0, 0, 0)))


def test_slowed_moves_mass_as_an_even_spread_within_buckets() -> None:
    h = Histogram((1.0, 2.0, 4.0), (10, 10, 10, 5))
    # Twice as slow: below 1 is what was below 0.5 (half the first bucket), below 2 what was below 1...
    assert slowed(h, 2.0).counts == pytest.approx((5, 5, 10, 15))
    assert slowed(h, 1.0).counts == pytest.approx(h.counts)
    with pytest.raises(ValueError, match="positive"):
        slowed(h, 0)


def test_slowdown_effect_on_fine_buckets_matches_the_lognormal_closed_form() -> None:
    # Expected counts of a lognormal(sigma 0.5) in fine buckets: a ratio r shifts log-latency by
    # ln r, so P(slowed > original) = Phi(ln r / (sigma sqrt 2)).
    bounds = tuple(float(b) for b in np.exp(np.linspace(math.log(0.005), math.log(2.0), 400)))
    cdf = stats.lognorm.cdf(bounds, s=0.5, scale=0.04)
    counts = np.diff(np.concatenate([[0.0], cdf, [1.0]])) * 1e6
    h = Histogram(bounds, tuple(counts))
    for ratio in (1.1, 1.2, 1.5):
        expected = stats.norm.cdf(math.log(ratio) / (0.5 * math.sqrt(2))) - 0.5
        assert slowdown_effect(h, ratio) == pytest.approx(expected, abs=0.003)
    assert slowdown_effect(h, 1.0) == pytest.approx(0.0, abs=1e-12)
    assert slowdown_effect(h, 0.9) < 0


def test_tail_bound_is_the_bucket_edge_above_the_pooled_quantile() -> None:
    cand = Histogram((0.1, 0.2, 0.5), (0, 5, 3, 2))
    base = Histogram((0.1, 0.2, 0.5), (50, 30, 8, 2))
    # Pooled: 50, 35, 11, 4 of 100; the p95 (rank 95) is in (0.2, 0.5].
    assert tail_bound(cand, base, 0.95) == 0.5
    assert tail_bound(cand, base, 0.6) == 0.2
    assert tail_bound(cand, base, 0.5) == 0.1  # exactly at a bound: that bound
    assert above(cand, 0.2) == Counts(5, 10)
    with pytest.raises(ValueError, match="not one of the histogram's bucket bounds"):
        above(cand, 0.3)


# --- the sequential judge --------------------------------------------------------------------


def test_confidence_sequence_by_hand_and_its_duality_with_the_evidence() -> None:
    d, v, tau, alpha = 0.03, 1e-4, 0.02, 0.05
    half = math.sqrt(v * (v + tau**2) / tau**2 * (2 * math.log(1 / alpha) + math.log((v + tau**2) / v)))
    assert confidence_sequence(d, v, 0.95, tau) == pytest.approx((d - half, d + half))
    assert mixture_likelihood_ratio(d, v, tau) == pytest.approx(
        math.sqrt(v / (v + tau**2)) * math.exp(tau**2 * d**2 / (2 * v * (v + tau**2)))
    )
    # Lower end above 0 exactly when the evidence against "no difference" reaches 1/alpha.
    rng = np.random.default_rng(0)
    for d in rng.normal(0, 0.05, 200):
        low, _ = confidence_sequence(d, v, 0.95, tau)
        assert (low > 0) == (d > 0 and mixture_likelihood_ratio(d, v, tau) >= 1 / alpha)
    with pytest.raises(ValueError, match="variance must be positive"):
        confidence_sequence(0.0, 0.0, 0.95, tau)


def _looks(rng, looks, n_c, n_b, p_c, p_b):
    """Cumulative counts at each look of one simulated step."""
    e_c = np.cumsum(rng.binomial(n_c, p_c, looks))
    e_b = np.cumsum(rng.binomial(n_b, p_b, looks))
    return [(Counts(float(e_c[i]), n_c * (i + 1)), Counts(float(e_b[i]), n_b * (i + 1))) for i in range(looks)]


def test_peeking_every_interval_keeps_false_rollbacks_below_alpha_where_a_fixed_test_does_not() -> None:
    rng = np.random.default_rng(20240604)
    runs, looks = 400, 20
    judge_fails = naive_fails = 0
    for _ in range(runs):
        judged = naive = False
        for cand, base in _looks(rng, looks, 60, 540, 0.05, 0.05):
            judged |= judge_rate(cand, base, worse="higher", tolerance=0.01).outcome == "fail"
            naive |= two_proportion_test(cand, base).p_value < 0.05
        judge_fails += judged
        naive_fails += naive
    assert judge_fails / runs <= 0.025  # one side of a 95% sequence, at any number of looks
    assert naive_fails / runs > 0.15  # the fixed 5% test, peeked at 20 times


def test_latency_false_rollbacks_stay_below_alpha_over_many_looks() -> None:
    rng = np.random.default_rng(11)
    runs, looks, fails = 250, 10, 0
    for _ in range(runs):
        cand, base = latency(rng, 30), latency(rng, 570)
        for _ in range(looks):
            if judge_latency(cand, base).outcome == "fail":
                fails += 1
                break
            cand, base = cand + latency(rng, 30), base + latency(rng, 570)
    assert fails / runs <= 0.05


def test_clear_regressions_fail_within_a_few_looks() -> None:
    rng = np.random.default_rng(5)
    caught = 0
    for _ in range(100):
        for i, (cand, base) in enumerate(_looks(rng, 5, 60, 540, 0.08, 0.01)):
            if judge_rate(cand, base, worse="higher", tolerance=0.01).outcome == "fail":
                caught += i < 5
                break
    assert caught >= 95
    slow = [judge_latency(latency(rng, 60, scale=2.0), latency(rng, 540)).outcome for _ in range(50)]
    assert slow.count("fail") >= 48


def test_error_rate_decision_and_message() -> None:
    d = judge_rate(Counts(24, 600), Counts(54, 5400), worse="higher", tolerance=0.005, label="error rate")
    assert d.outcome == "fail"
    assert d.estimate == pytest.approx(0.03)
    assert d.lower > 0 and d.evidence >= d.evidence_needed == pytest.approx(20)
    assert d.message.startswith("error rate +3.0 points [+")
    assert "(4.0% of 600, stable 1.0% of 5400), tolerated +0.5" in d.message
    assert d.message.endswith("fail (worse than stable at 95% confidence, beyond tolerance)")


def test_a_significant_regression_within_tolerance_does_not_fail() -> None:
    # +0.5 point, certainly worse than the stable, but tolerated up to +1: never a rollback.
    d = judge_rate(Counts(1500, 100_000), Counts(1000, 100_000), worse="higher", tolerance=0.01)
    assert d.lower > 0
    assert d.outcome == "pass"


def test_accuracy_is_worse_when_lower() -> None:
    drop = judge_rate(Counts(8000, 10_000), Counts(27_000, 30_000), worse="lower", tolerance=0.02, label="accuracy")
    assert drop.outcome == "fail"
    assert drop.tolerance == -0.02
    assert drop.message.startswith("accuracy -10.0 points")
    assert "tolerated -2.0" in drop.message
    better = judge_rate(Counts(9500, 10_000), Counts(27_000, 30_000), worse="lower", tolerance=0.02)
    assert better.outcome == "pass"


def test_identical_versions_pass_once_the_evidence_is_tight() -> None:
    assert judge_rate(Counts(100, 10_000), Counts(300, 30_000), worse="higher", tolerance=0.01).outcome == "pass"
    rng = np.random.default_rng(3)
    d = judge_latency(latency(rng, 20_000), latency(rng, 60_000))
    assert d.outcome == "pass"
    assert [p.statistic for p in d.parts] == ["rank effect", "tail share"]
    assert all(p.outcome == "pass" for p in d.parts)


def test_latency_decision_message_and_units() -> None:
    rng = np.random.default_rng(9)
    d = judge_latency(latency(rng, 120, scale=1.5), latency(rng, 1080))
    assert d.outcome == "fail"
    assert d.message.startswith("latency: slower in ")
    assert "p95 " in d.message and "(120 vs 1080 requests), +10% slower tolerated" in d.message
    assert "(fail at 40)" in d.message  # each of the two statistics at alpha / 2
    ms = Histogram(tuple(b * 1000 for b in BOUNDS), latency(rng, 100).counts)
    assert " ms vs stable " in judge_latency(ms, ms, unit="ms").message


def test_a_tail_only_regression_is_caught_by_the_tail_share() -> None:
    # Same median, spread widened until p95 is x1.5: ranks barely move, the slow share does.
    rng = np.random.default_rng(21)
    wide = 0.5 + math.log(1.5) / stats.norm.ppf(0.95)
    d = judge_latency(latency(rng, 600, sigma=wide), latency(rng, 5400))
    rank, tail = d.parts
    assert rank.outcome != "fail"
    assert tail.outcome == "fail"
    assert d.outcome == "fail" and d.statistic == "tail share"


def test_one_bucket_data_is_judged_not_crashed() -> None:
    h = Histogram((0.1, 0.2), (500, 0, 0))
    assert judge_latency(h, Histogram((0.1, 0.2), (5000, 0, 0))).outcome == "pass"


def test_too_few_samples_continue_and_say_who() -> None:
    d = judge_rate(Counts(0, 5), Counts(3, 500), worse="higher", tolerance=0.01, label="error rate")
    assert d.outcome == "continue"
    assert d.message == "error rate: candidate has 5 samples, minSamples is 20: continue"
    assert d.estimate is None
    empty = Histogram(BOUNDS, (0,) * (len(BOUNDS) + 1))
    d = judge_latency(latency(np.random.default_rng(1), 50), empty)
    assert d.outcome == "continue" and "stable has 0 samples" in d.message


@pytest.mark.parametrize(
    ("kwargs", "problem"),
    [
        ({"worse": "up", "tolerance": 0.01}, "worse must be 'higher'"),
        ({"worse": "higher", "tolerance": -0.01}, "tolerance must not be negative"),
        ({"worse": "higher", "tolerance": math.nan}, "tolerance must be a finite number"),
        ({"worse": "higher", "tolerance": 0.01, "min_samples": 1}, "min_samples must be an integer >= 2"),
        ({"worse": "higher", "tolerance": 0.01, "confidence": 1.0}, "confidence must be between 0 and 1"),
        ({"worse": "higher", "tolerance": 0.01, "mixing_sd": 0}, "mixing_sd must be a positive number"),
    ],
)
def test_judge_rate_rejects_bad_parameters(kwargs, problem) -> None:
    with pytest.raises(ValueError, match=problem):
        judge_rate(Counts(1, 100), Counts(5, 500), **kwargs)


@pytest.mark.parametrize(
    ("kwargs", "problem"),
    [
        ({"tolerated_slowdown": -0.1}, "tolerated_slowdown must not be negative"),
        ({"quantile": 1.0}, "quantile must be between 0 and 1"),
        ({"confidence": 0}, "confidence must be between 0 and 1"),
        ({"rank_mixing_sd": -1}, "rank_mixing_sd must be a positive number"),
    ],
)
def test_judge_latency_rejects_bad_parameters(kwargs, problem) -> None:
    h = latency(np.random.default_rng(2), 100)
    with pytest.raises(ValueError, match=problem):
        judge_latency(h, h, **kwargs)


def test_judge_latency_rejects_mismatched_buckets() -> None:
    h = latency(np.random.default_rng(2), 100)
    with pytest.raises(ValueError, match="different buckets"):
        judge_latency(h, Histogram(tuple(b * 1000 for b in BOUNDS), h.counts))
