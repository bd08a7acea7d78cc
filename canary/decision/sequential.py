"""The sequential statistical judge: candidate vs baseline, re-judged every interval, always valid.

How the controller uses it (canary/decision/sequential_check.py, for `judge: sequential` checks)
-------------------------------------------------------------------------------------
At the end of each analysis interval it reads, per version, the data accumulated SINCE THE STEP
STARTED (not just the last interval): `Counts` (an `increase()` of two counters over the step so
far) for error and accuracy checks, a `Histogram` (`sum by (le) (increase(..._bucket[...]))`)
for latency (see `canary.decision.samples`). It calls

    judge_rate(candidate, baseline, worse="higher", tolerance=0.01)      # error rate, +1 point
    judge_rate(candidate, baseline, worse="lower", tolerance=0.02)       # accuracy, -2 points
    judge_latency(candidate, baseline, tolerated_slowdown=0.10)          # 10% slower is fine

and acts on the returned `Decision.outcome`:

- ``fail``: the candidate is worse than the stable with confidence `confidence` (the
  always-valid interval excludes "no difference") AND the estimated regression is beyond the
  tolerance: roll back now; there is no need to wait for more failures (failureLimit 0).
- ``pass``: the candidate is at most `tolerance` worse, with confidence `confidence` (the
  interval's worse end is inside the tolerance): the step may advance early.
- ``continue``: not enough evidence either way, or fewer than `min_samples` per version: keep
  the step and judge again next interval. When the step's planned time is up, a `continue`
  means "no regression found" and should advance like a pass: at low traffic, evidence of
  ABSENCE (a tight interval) takes far longer than evidence of a regression (the benchmark: at
  30 canary requests an interval, an error rate never passes within 10 intervals).

The functions are stateless: each call judges the cumulative data it is given, so a controller
restart loses nothing. `Decision.message` is one line for the status and events, e.g.
``error rate +3.0 points [+0.3, +5.9] vs stable (4.0% of 600, stable 1.0% of 5400), tolerated +0.5,
evidence 47 (fail at 20): fail (worse than stable at 95% confidence, beyond tolerance)``.

What the guarantees cover: a candidate no worse than the stable is rolled back with probability
at most alpha over all looks; a candidate more than `tolerance` worse passes with probability at
most alpha. One worse than the stable but within the tolerance may go either way (it is worse,
so a `fail` is not false; near the tolerance the estimate decides). Requiring the interval to
clear the tolerance instead of 0 would make `fail` slower for every real regression.

Why a sequential test
---------------------
Judging accumulated data every interval with a fixed-level test (a z-test at 5%) peeks
repeatedly: over 20 looks about 22% of A/A rollouts "fail" instead of 5% (a test in
tests/unit/test_statistics.py shows it; the judge fails none of the same 400). The judge uses a
mixture sequential probability ratio test (mSPRT; Robbins 1970, "always valid inference" of
Johari, Pekelis & Walsh 2017): for a normal estimate `d ~ N(theta, V)` the likelihood ratio of "theta ~ N(theta0, tau^2)" against
"theta = theta0" is

    L(theta0) = sqrt(V / (V + tau^2)) * exp(tau^2 (d - theta0)^2 / (2 V (V + tau^2)))

a martingale under theta0, so by Ville's inequality P(ever L >= 1/alpha) <= alpha however often
and whenever one looks. Inverting it gives the confidence SEQUENCE

    d +- sqrt(V (V + tau^2) / tau^2 * (2 ln(1/alpha) + ln((V + tau^2) / V)))

which covers theta at every look at once with probability >= 1 - alpha. `fail` uses its lower
end (> 0, i.e. L(0) >= 1/alpha: the "evidence"), `pass` its upper end (< tolerance). Alpha
spending (O'Brien-Fleming, Pocock) was the alternative; it needs the number of looks and the
information at each planned in advance, and a canary step has neither: its length depends on
`progressDeadline`, inconclusive looks and traffic. The mSPRT needs no plan and a look costs
nothing; its price is a wider interval (about 3 standard errors instead of 1.96 at 95%).

The estimates are asymptotically normal with a plug-in variance, so the validity is asymptotic;
the benchmark (benchmarks/decisions.py) and the tests measure it on small, bucketed, rare-event
data.

- Rates: d = difference of Agresti-Caffo rates (`statistics.rate_difference`), whose variance
  stays positive with zero errors in a window; tau defaults to twice the tolerance: the mixture
  bets on regressions of the size one cares about.
- Latency: two statistics, each at alpha/2 so the check as a whole keeps alpha.
  * Rank ("the body"): d = the Mann-Whitney effect on the buckets minus 1/2 (P(a candidate
    request is slower than a baseline one) + ties/2 - 1/2), V = max(DeLong's variance, the
    tie-corrected null variance): DeLong's underestimates in small samples, and the null
    variance is the one false rollbacks hinge on. It uses every request, where a window's p95
    rests on a few (and between bucket bounds is interpolated). tau defaults to 0.1
    (P(slower) = 0.6, about a 20-30% slowdown of a typical latency distribution).
  * Tail: the share of requests above the bucket bound just over the pooled `quantile` (p95),
    compared as a rate (`statistics.tail_bound`, `statistics.above`). A regression confined
    to the tail (wider spread, same median) leaves the rank effect near 1/2, but not this.
    tau defaults to 0.05 (the slow share going from 5% to 10%).
  The tolerance is a slowdown ratio ("10% slower is fine") turned into each statistic's scale
  through the baseline's own histogram: the effect a baseline uniformly that much slower would
  show (`statistics.slowed`), so it means the same on any buckets. `fail` if either statistic
  fails, `pass` if both pass.

Confidence: 0.95 by default. Each check's false-rollback probability is then at most alpha
however many looks (and about alpha/2 by design, as only the regression side fails). Measured
(benchmarks/README.md): A/A runs with three checks over 10 looks roll back 0.1-0.2% of the time
at 0.95 and 0.0% at 0.99, because Ville's bound is loose for a handful of looks. So 0.95 meets
the <= 1% false-rollback target with room to spare and decides sooner; 0.99 turns the 1% into a
guarantee per check rather than a measurement, at the price of slower rollbacks (benchmarked too).
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Literal

from canary.decision.samples import Counts, Histogram, histogram_quantile, require_same_bounds
from canary.decision.statistics import (
    above,
    check_confidence,
    mann_whitney,
    rate_difference,
    slowdown_effect,
    slowed,
    tail_bound,
)

Outcome = Literal["pass", "fail", "continue"]
Worse = Literal["higher", "lower"]

DEFAULT_CONFIDENCE = 0.95
DEFAULT_MIN_SAMPLES = 20
DEFAULT_RANK_MIXING_SD = 0.1
DEFAULT_TAIL_MIXING_SD = 0.05
# A tolerance of 0 still needs a scale for the mixture: one point for rates.
_FALLBACK_RATE_MIXING_SD = 0.01


@dataclass(frozen=True)
class Decision:
    """One look's verdict on one statistic, or on a check made of several (`parts`).

    `estimate`, `lower`, `upper` and `tolerance` are candidate - baseline on the scale named by
    `statistic`: "rate difference" (0.01 = one point), "rank effect" (0.1 = the candidate is
    slower in 60% of pairs) or "tail share" (difference in the share of slow requests).
    `tolerance` carries the sign of "worse" (negative for accuracy). `evidence` is the mixture
    likelihood ratio against "no difference", `fail` needs at least `evidence_needed`. The
    numbers are None when the outcome is `continue` for lack of samples. A latency decision
    carries its rank and tail parts, and its own numbers are those of the part that decided it.
    """

    outcome: Outcome
    message: str
    statistic: str = ""
    estimate: float | None = None
    lower: float | None = None
    upper: float | None = None
    tolerance: float = 0.0
    evidence: float | None = None
    evidence_needed: float | None = None
    candidate_samples: float = 0.0
    baseline_samples: float = 0.0
    parts: tuple[Decision, ...] = ()


def mixture_likelihood_ratio(estimate: float, variance: float, mixing_sd: float, null: float = 0.0) -> float:
    """L(null): the mSPRT statistic for `estimate ~ N(theta, variance)` against theta = null."""
    _check_mixture(variance, mixing_sd)
    tau2 = mixing_sd**2
    exponent = tau2 * (estimate - null) ** 2 / (2 * variance * (variance + tau2))
    log_ratio = 0.5 * math.log(variance / (variance + tau2)) + exponent
    return math.exp(min(log_ratio, 700.0))


def confidence_sequence(estimate: float, variance: float, confidence: float, mixing_sd: float) -> tuple[float, float]:
    """The always-valid interval: every theta whose L(theta) is below 1 / alpha."""
    alpha = check_confidence(confidence)
    _check_mixture(variance, mixing_sd)
    tau2 = mixing_sd**2
    half = math.sqrt(variance * (variance + tau2) / tau2 * (2 * math.log(1 / alpha) + math.log((variance + tau2) / variance)))
    return estimate - half, estimate + half


def _check_mixture(variance: float, mixing_sd: float) -> None:
    if not math.isfinite(variance) or variance <= 0:
        raise ValueError(f"variance must be positive and finite, got {variance}")
    if not math.isfinite(mixing_sd) or mixing_sd <= 0:
        raise ValueError(f"mixing_sd must be positive and finite, got {mixing_sd}")


def _check_parameters(name: str, tolerance: float, min_samples: int) -> None:
    if isinstance(tolerance, bool) or not isinstance(tolerance, numbers.Real) or not math.isfinite(tolerance):
        raise ValueError(f"{name} must be a finite number, got {tolerance!r}")
    if tolerance < 0:
        raise ValueError(f"{name} must not be negative (give how much worse is tolerated), got {tolerance}")
    if isinstance(min_samples, bool) or not isinstance(min_samples, numbers.Integral) or min_samples < 2:
        raise ValueError(f"min_samples must be an integer >= 2 (a variance needs two), got {min_samples!r}")


def _check_mixing_sd(name: str, value: float | None) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) or value <= 0):
        raise ValueError(f"{name} must be a positive number, got {value!r}")


def _too_few(candidate_n: float, baseline_n: float, min_samples: int) -> str | None:
    for who, n in (("candidate", candidate_n), ("stable", baseline_n)):
        if n < min_samples:
            return f"{who} has {n:.0f} samples, minSamples is {min_samples}"
    return None


def _pct(confidence: float) -> str:
    return f"{confidence:.0%}" if abs(confidence * 100 - round(confidence * 100)) < 1e-9 else f"{confidence:.1%}"


@dataclass(frozen=True)
class _Sequential:
    outcome: Outcome
    reason: str
    lower: float
    upper: float
    evidence: float
    needed: float


def _sequential(
    shown: float, centre: float, variance: float, *, sign: int, tolerance: float, confidence: float, mixing_sd: float
) -> _Sequential:
    """The mSPRT verdict on candidate - baseline, where `sign` * difference > 0 is a regression.

    `centre` and `variance` make the interval and the evidence; `shown` is the estimate held
    against the tolerance (the raw difference for rates, whose interval is centred on the
    Agresti-Caffo one).
    """
    lower, upper = confidence_sequence(centre, variance, confidence, mixing_sd)
    evidence = mixture_likelihood_ratio(centre, variance, mixing_sd)
    worse_low, worse_high = sorted((sign * lower, sign * upper))
    if worse_low > 0 and sign * shown > tolerance:
        outcome: Outcome = "fail"
        reason = f"worse than stable at {_pct(confidence)} confidence, beyond tolerance"
    elif worse_high < tolerance:
        outcome, reason = "pass", f"within tolerance at {_pct(confidence)} confidence"
    else:
        outcome, reason = "continue", "not enough evidence yet"
    return _Sequential(outcome, reason, lower, upper, evidence, 1 / (1 - confidence))


def judge_rate(
    candidate: Counts,
    baseline: Counts,
    *,
    worse: Worse,
    tolerance: float,
    confidence: float = DEFAULT_CONFIDENCE,
    min_samples: int = DEFAULT_MIN_SAMPLES,
    mixing_sd: float | None = None,
    label: str = "rate",
) -> Decision:
    """Judge a rate (errors: worse="higher"; accuracy: worse="lower") on counts accumulated so far.

    `tolerance` is how much worse, in absolute proportion, is acceptable (0.01 = one point);
    `min_samples` is per version, in trials; `mixing_sd` defaults to 2 x tolerance.
    """
    check_confidence(confidence)
    if worse not in ("higher", "lower"):
        raise ValueError(f"worse must be 'higher' (e.g. errors) or 'lower' (e.g. accuracy), got {worse!r}")
    _check_parameters("tolerance", tolerance, min_samples)
    _check_mixing_sd("mixing_sd", mixing_sd)
    sign = 1 if worse == "higher" else -1
    short = _too_few(candidate.trials, baseline.trials, min_samples)
    if short is not None:
        return Decision(
            outcome="continue",
            message=f"{label}: {short}: continue",
            statistic="rate difference",
            tolerance=sign * tolerance,
            candidate_samples=candidate.trials,
            baseline_samples=baseline.trials,
        )
    tau = mixing_sd if mixing_sd is not None else (2 * tolerance if tolerance > 0 else _FALLBACK_RATE_MIXING_SD)
    centre, variance = rate_difference(candidate, baseline)
    raw = candidate.rate - baseline.rate
    v = _sequential(raw, centre, variance, sign=sign, tolerance=tolerance, confidence=confidence, mixing_sd=tau)
    message = (
        f"{label} {_points(raw)} points [{_points(v.lower)}, {_points(v.upper)}] vs stable "
        f"({candidate.rate:.1%} of {candidate.trials:.0f}, stable {baseline.rate:.1%} of {baseline.trials:.0f}), "
        f"tolerated {_points(sign * tolerance)}, evidence {_evidence(v.evidence)} (fail at {v.needed:.0f}): "
        f"{v.outcome} ({v.reason})"
    )
    return Decision(
        outcome=v.outcome,
        message=message,
        statistic="rate difference",
        estimate=raw,
        lower=v.lower,
        upper=v.upper,
        tolerance=sign * tolerance,
        evidence=v.evidence,
        evidence_needed=v.needed,
        candidate_samples=candidate.trials,
        baseline_samples=baseline.trials,
    )


def judge_latency(
    candidate: Histogram,
    baseline: Histogram,
    *,
    tolerated_slowdown: float = 0.10,
    confidence: float = DEFAULT_CONFIDENCE,
    min_samples: int = DEFAULT_MIN_SAMPLES,
    quantile: float = 0.95,
    rank_mixing_sd: float = DEFAULT_RANK_MIXING_SD,
    tail_mixing_sd: float = DEFAULT_TAIL_MIXING_SD,
    unit: str = "s",
    label: str = "latency",
) -> Decision:
    """Judge latency histograms accumulated so far: is the candidate slower than tolerated?

    `tolerated_slowdown` is a ratio (0.10 = 10% slower is fine), sized on the baseline's
    histogram at each look; `quantile` sets the tail's threshold (the bucket bound just above the
    pooled p95) and the quantile the message shows; `unit` is the buckets' unit, for the message.
    """
    alpha = check_confidence(confidence)
    _check_parameters("tolerated_slowdown", tolerated_slowdown, min_samples)
    _check_mixing_sd("rank_mixing_sd", rank_mixing_sd)
    _check_mixing_sd("tail_mixing_sd", tail_mixing_sd)
    if not 0 < quantile < 1:
        raise ValueError(f"quantile must be between 0 and 1 (e.g. 0.95), got {quantile!r}")
    require_same_bounds(candidate, baseline)
    n_c, n_b = candidate.total, baseline.total
    short = _too_few(n_c, n_b, min_samples)
    if short is not None:
        return Decision(
            outcome="continue",
            message=f"{label}: {short}: continue",
            statistic="rank effect",
            candidate_samples=n_c,
            baseline_samples=n_b,
        )
    # Each statistic at alpha/2: the check as a whole keeps alpha.
    part_confidence = 1 - alpha / 2
    ratio = 1 + tolerated_slowdown

    test = mann_whitney(candidate, baseline)
    rank_estimate = test.effect - 0.5
    # Floor at the smallest step U can take, so identical one-bucket data still gets an interval.
    rank_variance = max(test.variance, test.null_variance, 1 / (4 * n_c * n_b))
    rank_tolerance = slowdown_effect(baseline, ratio)
    rank = _sequential(
        rank_estimate, rank_estimate, rank_variance,
        sign=1, tolerance=rank_tolerance, confidence=part_confidence, mixing_sd=rank_mixing_sd,
    )  # fmt: skip

    bound = tail_bound(candidate, baseline, quantile)
    slow_c, slow_b = above(candidate, bound), above(baseline, bound)
    tail_tolerance = max(above(slowed(baseline, ratio), bound).rate - slow_b.rate, 0.0)
    centre, tail_variance = rate_difference(slow_c, slow_b)
    tail_raw = slow_c.rate - slow_b.rate
    tail = _sequential(
        tail_raw, centre, tail_variance,
        sign=1, tolerance=tail_tolerance, confidence=part_confidence, mixing_sd=tail_mixing_sd,
    )  # fmt: skip

    common = {"candidate_samples": n_c, "baseline_samples": n_b}
    rank_part = Decision(
        outcome=rank.outcome,
        message=(
            f"slower in {test.effect:.0%} of pairs [{0.5 + rank.lower:.0%}, {0.5 + rank.upper:.0%}] "
            f"(tolerated {0.5 + rank_tolerance:.0%})"
        ),
        statistic="rank effect",
        estimate=rank_estimate,
        lower=rank.lower,
        upper=rank.upper,
        tolerance=rank_tolerance,
        evidence=rank.evidence,
        evidence_needed=rank.needed,
        **common,
    )
    tail_part = Decision(
        outcome=tail.outcome,
        message=(
            f"{slow_c.rate:.1%} above {bound:g} {unit} vs stable {slow_b.rate:.1%}, {_points(tail_raw)} points "
            f"[{_points(tail.lower)}, {_points(tail.upper)}] (tolerated {_points(tail_tolerance)})"
        ),
        statistic="tail share",
        estimate=tail_raw,
        lower=tail.lower,
        upper=tail.upper,
        tolerance=tail_tolerance,
        evidence=tail.evidence,
        evidence_needed=tail.needed,
        **common,
    )
    parts = (rank_part, tail_part)
    failed = [p for p in parts if p.outcome == "fail"]
    if failed:
        outcome: Outcome = "fail"
        decisive = max(failed, key=lambda p: p.evidence or 0.0)
        reason = f"{decisive.statistic}: slower than stable at {_pct(part_confidence)} confidence, beyond tolerance"
    elif all(p.outcome == "pass" for p in parts):
        outcome, decisive = "pass", rank_part
        reason = f"both within tolerance at {_pct(part_confidence)} confidence"
    else:
        outcome = "continue"
        decisive = next(p for p in parts if p.outcome != "pass")
        reason = "not enough evidence yet"
    q = f"p{quantile * 100:g}"
    message = (
        f"{label}: {rank_part.message}; {tail_part.message}; {q} {histogram_quantile(candidate, quantile):.3g} {unit} "
        f"vs stable {histogram_quantile(baseline, quantile):.3g} {unit} ({n_c:.0f} vs {n_b:.0f} requests), "
        f"+{tolerated_slowdown:.0%} slower tolerated; evidence {_evidence(max(rank.evidence, tail.evidence))} "
        f"(fail at {rank.needed:.0f}): {outcome} ({reason})"
    )
    return Decision(
        outcome=outcome,
        message=message,
        statistic=decisive.statistic,
        estimate=decisive.estimate,
        lower=decisive.lower,
        upper=decisive.upper,
        tolerance=decisive.tolerance,
        evidence=decisive.evidence,
        evidence_needed=decisive.evidence_needed,
        parts=parts,
        **common,
    )


def _points(x: float) -> str:
    return f"{x * 100:+.1f}"


def _evidence(x: float) -> str:
    return f"{x:.2g}" if x < 10 else (f"{x:.0f}" if x < 1e6 else f"{x:.1e}")
