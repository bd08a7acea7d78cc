"""Prediction-distribution drift between a candidate and its baseline over the same window: the
reference, in Python, that the `prediction_psi` and `prediction_ks` templates are tested against.

A candidate that predicts a different mix of classes (or a shifted range of values) than the
stable on the same traffic has changed behaviour, whether or not labels ever arrive to say
which of the two is right. The router and the comparator export, per version and role (see
canary/traffic/serving_metrics.py):

- ``modelrollout_predictions_total{class}``: predicted classes (at most a fixed number of
  distinct classes per rollout, the rest as class ``__other__``);
- ``modelrollout_prediction_value_bucket{le}``: a histogram of regression predictions on fixed
  bucket bounds.

Over a window each becomes a vector query per version, which the functions here compare:

    sum by (class) (increase(modelrollout_predictions_total{<version>}[w]))     -> class_psi, class_chi_square
    sum by (le) (increase(modelrollout_prediction_value_bucket{<version>}[w]))  -> Binned.from_le -> binned_psi, ks_test

PSI (population stability index) is ``sum_i (c_i - b_i) * ln(c_i / b_i)`` over the two sides'
proportions, each floored at PSI_EPSILON so an empty category does not make it infinite; it is
symmetric. Rules of thumb: < 0.1 no shift, 0.1-0.25 moderate, > 0.25 large. It grows with noise
on small samples (about ``(k - 1) * (1/n + 1/m)`` for k categories), so give checks a minSamples.
The class PSI and the binned KS statistic are also builtin PromQL templates
(`prediction_psi`, `prediction_ks`); PSI over histogram buckets needs per-bucket counts, which
PromQL cannot take from cumulative ``le`` series, so it is only here.

KS is the two-sample Kolmogorov-Smirnov statistic on the binned values: the largest gap between
the two empirical CDFs at the bucket bounds (a lower bound of the unbinned statistic: within a
bucket the values are ties). Its p-value is scipy's asymptotic one, exactly what
``scipy.stats.ks_2samp(..., method="asymp")`` gives on the values expanded one per bucket.

Counts may be fractional (``increase()`` extrapolates); they must be finite and non-negative.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

PSI_EPSILON = 1e-4


def _check_counts(name: str, counts: Sequence[float]) -> float:
    for i, c in enumerate(counts):
        if isinstance(c, bool) or not isinstance(c, (int, float)) or not math.isfinite(c) or c < 0:
            raise ValueError(f"{name} count {i} must be a finite number >= 0, got {c!r}")
    total = math.fsum(counts)
    if total <= 0:
        raise ValueError(f"{name} has no observations in the window")
    return total


def psi(baseline: Sequence[float], candidate: Sequence[float], epsilon: float = PSI_EPSILON) -> float:
    """PSI of two aligned count vectors (same categories, same order), proportions floored at epsilon."""
    if len(baseline) != len(candidate):
        raise ValueError(f"PSI needs the same categories on both sides, got {len(baseline)} and {len(candidate)}")
    if not baseline:
        raise ValueError("PSI of zero categories is undefined")
    if not 0 < epsilon < 1:
        raise ValueError(f"epsilon must be within (0, 1), got {epsilon}")
    b_total = _check_counts("baseline", baseline)
    c_total = _check_counts("candidate", candidate)
    value = 0.0
    for b, c in zip(baseline, candidate, strict=True):
        pb, pc = max(b / b_total, epsilon), max(c / c_total, epsilon)
        value += (pc - pb) * math.log(pc / pb)
    return value


def align(baseline: Mapping[str, float], candidate: Mapping[str, float]) -> tuple[list[str], list[float], list[float]]:
    """The union of both sides' categories (sorted), with 0 where a side never predicted one."""
    keys = sorted(set(baseline) | set(candidate))
    return keys, [float(baseline.get(k, 0.0)) for k in keys], [float(candidate.get(k, 0.0)) for k in keys]


def class_psi(baseline: Mapping[str, float], candidate: Mapping[str, float], epsilon: float = PSI_EPSILON) -> float:
    """PSI of two {class: count} results of ``sum by (class) (increase(...))``."""
    _, b, c = align(baseline, candidate)
    return psi(b, c, epsilon)


@dataclass(frozen=True)
class ChiSquare:
    statistic: float
    pvalue: float
    dof: int


def class_chi_square(baseline: Mapping[str, float], candidate: Mapping[str, float]) -> ChiSquare:
    """Pearson's chi-square test that both sides predict classes in the same proportions.

    The 2 x k contingency test without continuity correction (scipy.stats.chi2_contingency with
    correction=False), over the classes either side predicted. With one class there is nothing
    to compare: statistic 0, p-value 1.
    """
    from scipy.stats import chi2  # imported here: the exporters never need scipy

    _, b, c = align(baseline, candidate)
    b_total, c_total = _check_counts("baseline", b), _check_counts("candidate", c)
    total = b_total + c_total
    columns = [(x, y) for x, y in zip(b, c, strict=True) if x + y > 0]
    dof = len(columns) - 1
    if dof < 1:
        return ChiSquare(0.0, 1.0, 0)
    statistic = 0.0
    for x, y in columns:
        column = x + y
        for observed, row_total in ((x, b_total), (y, c_total)):
            expected = row_total * column / total
            statistic += (observed - expected) ** 2 / expected
    return ChiSquare(statistic, float(chi2.sf(statistic, dof)), dof)


@dataclass(frozen=True)
class Binned:
    """Values in buckets: ``counts[i]`` in (bounds[i-1], bounds[i]], the last one above bounds[-1].

    The per-bucket (not cumulative) form of a Prometheus histogram over a window; bounds may be
    negative (regression predictions).
    """

    bounds: tuple[float, ...]
    counts: tuple[float, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "bounds", tuple(float(b) for b in self.bounds))
        object.__setattr__(self, "counts", tuple(self.counts))
        if not self.bounds:
            raise ValueError("binned values need at least one finite bucket bound")
        if any(not math.isfinite(b) for b in self.bounds):
            raise ValueError("bucket bounds must be finite (the +Inf bucket is the last count, not a bound)")
        for lo, hi in zip(self.bounds, self.bounds[1:]):
            if hi <= lo:
                raise ValueError(f"bucket bounds must increase strictly, got {lo:g} then {hi:g}")
        if len(self.counts) != len(self.bounds) + 1:
            raise ValueError(
                f"{len(self.bounds)} bounds need {len(self.bounds) + 1} counts (the last above the largest bound), "
                f"got {len(self.counts)}"
            )
        for i, c in enumerate(self.counts):
            if isinstance(c, bool) or not isinstance(c, (int, float)) or not math.isfinite(c) or c < 0:
                raise ValueError(f"bucket {i} count must be a finite number >= 0, got {c!r}")

    @classmethod
    def from_le(cls, cumulative: Mapping[str, float] | Mapping[float, float]) -> Binned:
        """From a ``sum by (le)`` result {le: cumulative count}, which must include "+Inf".

        Each ``le`` series' increase() is extrapolated on its own, so a cumulative count can dip
        a little below the one before it; dips are flattened (that bucket counts 0).
        """
        parsed: dict[float, float] = {}
        for le, value in cumulative.items():
            try:
                bound = float(le)
            except (TypeError, ValueError):
                raise ValueError(f"bucket label le={le!r} is not a number") from None
            if math.isnan(bound) or bound == -math.inf:
                raise ValueError(f"bucket label le={le!r} is not an upper bound")
            if bound in parsed:
                raise ValueError(f"bucket le={le!r} given twice")
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise ValueError(f"bucket le={le!r} count must be a finite number >= 0, got {value!r}")
            parsed[bound] = float(value)
        if math.inf not in parsed:
            raise ValueError("the +Inf bucket is missing (it holds the total count)")
        bounds = sorted(b for b in parsed if b != math.inf)
        counts, running = [], 0.0
        for bound in [*bounds, math.inf]:
            level = max(parsed[bound], running)
            counts.append(level - running)
            running = level
        return cls(tuple(bounds), tuple(counts))

    @property
    def total(self) -> float:
        return math.fsum(self.counts)

    def cdf(self) -> list[float]:
        """The share of values at or below each bound, then 1 (at +Inf)."""
        total = self.total
        if total <= 0:
            raise ValueError("no observations in the window")
        out, running = [], 0.0
        for c in self.counts:
            running += c
            out.append(running / total)
        return out


def _same_bounds(a: Binned, b: Binned) -> None:
    if a.bounds != b.bounds:
        raise ValueError(
            f"the two sides have different buckets ({len(a.bounds)} and {len(b.bounds)} bounds); "
            "compare series exported with the same prediction buckets"
        )


def binned_psi(baseline: Binned, candidate: Binned, epsilon: float = PSI_EPSILON) -> float:
    """PSI over the buckets of two value histograms with the same bounds."""
    _same_bounds(baseline, candidate)
    return psi(baseline.counts, candidate.counts, epsilon)


@dataclass(frozen=True)
class KsResult:
    statistic: float  # largest CDF gap at the bucket bounds, in [0, 1]
    pvalue: float  # two-sided, asymptotic
    baseline_n: float
    candidate_n: float


def ks_statistic(baseline: Binned, candidate: Binned) -> float:
    """The largest gap between the two empirical CDFs at the bucket bounds."""
    _same_bounds(baseline, candidate)
    return max(abs(x - y) for x, y in zip(baseline.cdf(), candidate.cdf(), strict=True))


def ks_test(baseline: Binned, candidate: Binned) -> KsResult:
    """Two-sample KS test on binned values: scipy's asymptotic two-sided p-value.

    ``kstwo.sf(D, round(n * m / (n + m)))``, as ``scipy.stats.ks_2samp(method="asymp")``; a
    window with under one effective observation has p-value 1 (no evidence either way).
    """
    from scipy.stats import kstwo  # imported here: the exporters never need scipy

    statistic = ks_statistic(baseline, candidate)
    n, m = baseline.total, candidate.total
    effective = round(n * m / (n + m))
    pvalue = 1.0 if effective < 1 else float(min(1.0, max(0.0, kstwo.sf(statistic, effective))))
    return KsResult(statistic, pvalue, n, m)
