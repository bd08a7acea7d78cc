"""Fixed-sample statistics for comparing a candidate with its baseline on what Prometheus keeps.

Pure functions on `canary.decision.samples.Counts` and `canary.decision.samples.Histogram`; no I/O, numpy only
(the normal distribution comes from the standard library). The always-valid, repeatedly-peeked
decision built on them is in `canary.decision.sequential`; the functions here are its parts, and each is
tested against scipy on the same data.

Rates (errors, accuracy):
- `wilson_interval(counts, confidence)` -> (low, high): the Wilson score interval of one rate.
- `two_proportion_test(candidate, baseline, margin=0, alternative="greater")` -> ProportionTest:
  the z-test of `p_candidate - p_baseline` against `margin` (pooled standard error when the margin
  is 0, as the chi-square test of a 2x2 table; unpooled, Wald, otherwise).
- `rate_difference(candidate, baseline)` -> (difference, variance): the Agresti-Caffo estimate
  the sequential judge uses (one pseudo-success and one pseudo-failure added to each side, which
  keeps the variance honest when a window has no errors at all).

Latency, on histogram buckets:
- `mann_whitney(candidate, baseline, alternative="greater", continuity=True)` -> RankTest: the
  Mann-Whitney U of the candidate (pairs where the candidate is slower, a pair in the same bucket
  counting 1/2) with the tie-corrected normal approximation; observations in one bucket are ties,
  so this equals scipy.stats.mannwhitneyu(method="asymptotic") on samples expanded to one value
  per bucket. It also returns the effect size `effect` = U / (n_c * n_b), the probability that a
  random candidate request is slower than a random baseline request (ties 1/2): 0.5 when they
  are alike, and its variance without assuming equality (DeLong's placement estimator).
- `tail_bound(candidate, baseline, quantile)` -> float and `above(histogram, bound)` -> Counts:
  the share of "slow" requests, above the bucket bound just over the pooled p95 (say), as counts
  a rate test takes. It sees a regression confined to the tail, which moves the rank effect
  little (a wider spread makes some requests slower and others faster).
- `slowed(baseline, ratio)` -> Histogram: the baseline as if `ratio` times slower, in the same
  buckets (within a bucket observations are taken as spread evenly, as histogram_quantile
  assumes); `slowdown_effect(baseline, ratio)` -> float: the `effect - 0.5` such a candidate
  would show. They translate a tolerance users think in ("10% slower is fine") into each
  statistic's scale, from the baseline's own shape.

`statistics` here is the stdlib module (absolute imports), not this one.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from statistics import NormalDist
from typing import Literal

import numpy as np

from canary.decision.samples import Counts, Histogram, histogram_quantile, require_same_bounds

Alternative = Literal["greater", "less", "two-sided"]
_NORMAL = NormalDist()


def normal_sf(z: float) -> float:
    """P(Z > z) for a standard normal, accurate far in the tail (erfc, not 1 - cdf)."""
    return 0.5 * math.erfc(z / math.sqrt(2))


def check_confidence(confidence: float) -> float:
    """alpha for a confidence in (0, 1); a ValueError naming the bad value otherwise."""
    if isinstance(confidence, bool) or not isinstance(confidence, numbers.Real) or not 0 < confidence < 1:
        raise ValueError(f"confidence must be between 0 and 1 (e.g. 0.95), got {confidence!r}")
    return 1 - confidence


def _require_trials(counts: Counts, who: str) -> None:
    if counts.trials <= 0:
        raise ValueError(f"{who} has zero trials: no observations in the window to compare")


def _p_value(z: float, alternative: Alternative) -> float:
    if alternative == "greater":
        return normal_sf(z)
    if alternative == "less":
        return normal_sf(-z)
    if alternative == "two-sided":
        return min(1.0, 2 * normal_sf(abs(z)))
    raise ValueError(f"alternative must be 'greater', 'less' or 'two-sided', got {alternative!r}")


def wilson_interval(counts: Counts, confidence: float = 0.95) -> tuple[float, float]:
    """The two-sided Wilson score interval for `counts.events / counts.trials`."""
    alpha = check_confidence(confidence)
    _require_trials(counts, "the sample")
    z = _NORMAL.inv_cdf(1 - alpha / 2)
    n, p = counts.trials, counts.rate
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass(frozen=True)
class ProportionTest:
    difference: float  # p_candidate - p_baseline
    z: float
    p_value: float


def two_proportion_test(
    candidate: Counts, baseline: Counts, *, margin: float = 0.0, alternative: Alternative = "greater"
) -> ProportionTest:
    """z-test of p_candidate - p_baseline against `margin` ("greater": is the candidate's rate higher)."""
    _require_trials(candidate, "the candidate")
    _require_trials(baseline, "the baseline")
    p1, p2 = candidate.rate, baseline.rate
    n1, n2 = candidate.trials, baseline.trials
    if margin == 0:
        pooled = (candidate.events + baseline.events) / (n1 + n2)
        variance = pooled * (1 - pooled) * (1 / n1 + 1 / n2)
    else:
        variance = p1 * (1 - p1) / n1 + p2 * (1 - p2) / n2
    diff = p1 - p2
    if variance == 0:
        # Both rates at 0 or 1 with nothing to spread them: the difference is exact.
        z = 0.0 if diff == margin else math.copysign(math.inf, diff - margin)
    else:
        z = (diff - margin) / math.sqrt(variance)
    return ProportionTest(difference=diff, z=z, p_value=_p_value(z, alternative))


def rate_difference(candidate: Counts, baseline: Counts) -> tuple[float, float]:
    """Agresti-Caffo: (p~_candidate - p~_baseline, its variance) with p~ = (events + 1) / (trials + 2)."""
    _require_trials(candidate, "the candidate")
    _require_trials(baseline, "the baseline")
    p1 = (candidate.events + 1) / (candidate.trials + 2)
    p2 = (baseline.events + 1) / (baseline.trials + 2)
    variance = p1 * (1 - p1) / (candidate.trials + 2) + p2 * (1 - p2) / (baseline.trials + 2)
    return p1 - p2, variance


@dataclass(frozen=True)
class RankTest:
    u: float  # Mann-Whitney U of the candidate: pairs (candidate, baseline) where the candidate is slower, ties 1/2
    effect: float  # u / (n_candidate * n_baseline): P(candidate slower) + P(tie) / 2
    z: float  # tie-corrected normal approximation under "no difference"
    p_value: float
    variance: float  # of `effect`, DeLong's placement estimator (valid whether or not they differ)
    null_variance: float  # of `effect` when the versions do not differ, given the ties observed
    candidate_samples: float
    baseline_samples: float


def _arrays(candidate: Histogram, baseline: Histogram) -> tuple[np.ndarray, np.ndarray]:
    require_same_bounds(candidate, baseline)
    c = np.asarray(candidate.counts, dtype=float)
    b = np.asarray(baseline.counts, dtype=float)
    if c.sum() <= 0:
        raise ValueError("the candidate's histogram is empty: no requests in the window to compare")
    if b.sum() <= 0:
        raise ValueError("the baseline's histogram is empty: no requests in the window to compare")
    return c, b


def _effect(c: np.ndarray, b: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """(effect, candidate placements per bucket, baseline placements per bucket)."""
    n_c, n_b = c.sum(), b.sum()
    b_below = np.cumsum(b) - b  # baseline observations in faster buckets
    c_above = c.sum() - np.cumsum(c)  # candidate observations in slower buckets
    # A candidate request in bucket k is slower than the baseline's below k and ties with those in k.
    candidate_placement = (b_below + 0.5 * b) / n_b
    baseline_placement = (c_above + 0.5 * c) / n_c
    effect = float(np.dot(c, candidate_placement) / n_c)
    return effect, candidate_placement, baseline_placement


def mann_whitney(
    candidate: Histogram, baseline: Histogram, *, alternative: Alternative = "greater", continuity: bool = True
) -> RankTest:
    """Mann-Whitney U on two histograms with the same buckets ("greater": is the candidate slower)."""
    c, b = _arrays(candidate, baseline)
    n_c, n_b = float(c.sum()), float(b.sum())
    effect, cp, bp = _effect(c, b)
    u = effect * n_c * n_b
    n = n_c + n_b
    ties = c + b
    tie_term = float(np.sum(ties**3 - ties))
    var_u = n_c * n_b / 12 * ((n + 1) - (tie_term / (n * (n - 1)) if n > 1 else 0.0))
    var_u = max(var_u, 0.0)
    # scipy's convention: U of the side tested ("less" tests the baseline's U), continuity 0.5 toward the mean.
    u_tested = {"greater": u, "less": n_c * n_b - u, "two-sided": max(u, n_c * n_b - u)}.get(alternative)
    if u_tested is None:
        raise ValueError(f"alternative must be 'greater', 'less' or 'two-sided', got {alternative!r}")
    numerator = u_tested - n_c * n_b / 2 - (0.5 if continuity else 0.0)
    if var_u > 0:
        z = numerator / math.sqrt(var_u)
    else:  # every observation in one bucket: nothing tells them apart
        z = 0.0
    p = normal_sf(z) if alternative != "two-sided" else min(1.0, 2 * normal_sf(z))
    s10 = float(np.dot(c, (cp - effect) ** 2) / (n_c - 1)) if n_c > 1 else 0.0
    s01 = float(np.dot(b, (bp - effect) ** 2) / (n_b - 1)) if n_b > 1 else 0.0
    return RankTest(
        u=u,
        effect=effect,
        z=z,
        p_value=p,
        variance=s10 / n_c + s01 / n_b,
        null_variance=var_u / (n_c * n_b) ** 2,
        candidate_samples=n_c,
        baseline_samples=n_b,
    )


def slowed(baseline: Histogram, ratio: float) -> Histogram:
    """The baseline as if every request took `ratio` times as long, counted in the same buckets.

    Within a bucket observations are spread evenly (the first bucket from 0), as Prometheus's
    histogram_quantile assumes; what is in +Inf stays there.
    """
    if isinstance(ratio, bool) or not isinstance(ratio, numbers.Real) or not math.isfinite(ratio) or ratio <= 0:
        raise ValueError(f"slowdown ratio must be a positive number, got {ratio!r}")
    edges = np.concatenate(([0.0], np.asarray(baseline.bounds, dtype=float)))
    cumulative = np.concatenate(([0.0], np.cumsum(baseline.counts)[:-1]))
    # The slowed CDF at bound x is the baseline's CDF at x / ratio.
    moved = np.interp(edges[1:] / ratio, edges, cumulative)
    total = baseline.total
    per_bucket = np.diff(np.concatenate(([0.0], moved, [total])))
    return Histogram(baseline.bounds, tuple(float(max(v, 0.0)) for v in per_bucket))


def tail_bound(candidate: Histogram, baseline: Histogram, quantile: float) -> float:
    """The bucket bound just above the pooled `quantile` (the upper edge of the bucket holding it).

    The threshold of the "slow request" share: a bucket bound, so a share above it is counted
    exactly rather than interpolated; pooled, so that when the versions do not differ the choice
    favours neither; the largest finite bound when the quantile is in +Inf.
    """
    require_same_bounds(candidate, baseline)
    pooled = candidate + baseline
    q = histogram_quantile(pooled, quantile)
    return next((b for b in pooled.bounds if b >= q), pooled.bounds[-1])


def above(h: Histogram, bound: float) -> Counts:
    """Observations above a bucket bound, out of all: the share of slow requests."""
    if bound not in h.bounds:
        raise ValueError(f"{bound:g} is not one of the histogram's bucket bounds")
    index = h.bounds.index(bound)
    return Counts(float(sum(h.counts[index + 1 :])), h.total)


def slowdown_effect(baseline: Histogram, ratio: float) -> float:
    """`effect - 0.5` of a candidate `ratio` times slower than `baseline`, on the baseline's buckets."""
    if baseline.total <= 0:
        raise ValueError("the baseline's histogram is empty: cannot size a slowdown on it")
    c, b = _arrays(slowed(baseline, ratio), baseline)
    effect, _, _ = _effect(c, b)
    return effect - 0.5
