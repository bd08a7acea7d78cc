"""A `judge: sequential` check: read the step's raw counts per version, ask canary.decision.sequential, and
turn its decision into the verdict the engine acts on.

The judge weighs everything since the step's analysis began (the queries' `{{ interval }}` is
that whole time), once per interval. Its decision maps onto the engine's verdicts as follows:

- `fail` -> fail: the candidate is worse than the stable with the check's confidence and beyond
  its tolerance; the rollout rolls back at once (the judge's error rate already covers judging
  again every interval, which is why `failureLimit` does not apply).
- `pass` -> pass: at most `tolerance` worse, with that confidence; the step may advance early.
- `continue` -> inconclusive while the step has had fewer than `maxIntervals` intervals, so the
  step waits and the judge looks again with more data. From then on, a `continue` with enough
  samples is a pass ("no regression found"): at low traffic, evidence of *absence* takes far
  longer than evidence of a regression (benchmarks/README.md), and a rollout must advance. Too
  few samples is "no data", judged by the check's `noData` from then on (not before: a slow
  start is not yet missing data).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from canary.decision.metrics import MetricsProvider, UnexpectedResult
from canary.decision.samples import Counts, Histogram, histogram_quantile
from canary.decision.sequential import Decision, judge_latency, judge_rate
from canary.decision.spec import MetricCheck, Verdict, relative_ratio
from canary.decision.templates import JudgeQueries


@dataclass(frozen=True)
class SequentialVerdict:
    verdict: Verdict
    message: str
    threshold: str
    candidate: float | None = None  # the template's value (p95, error rate, accuracy) over the step
    baseline: float | None = None
    samples: float | None = None  # candidate requests (latency, errors) or labelled predictions


def describe(check: MetricCheck, queries: JudgeQueries | None) -> str:
    """The check's bound in words, for the status's threshold column."""
    tolerance = relative_ratio(check.tolerance) if check.tolerance is not None else 0.0
    if queries is not None and queries.kind == "latency":
        bound = f"at most {tolerance:.0%} slower than stable"
    elif queries is not None and queries.worse == "lower":
        bound = f"at most {tolerance * 100:.3g} points below stable"
    else:
        bound = f"at most {tolerance * 100:.3g} points above stable"
    return f"sequential: {bound} at {check.sequential_confidence:.0%} confidence"


def judge_check(
    check: MetricCheck,
    queries: JudgeQueries,
    provider: MetricsProvider,
    candidate_query: dict[str, str],
    baseline_query: dict[str, str],
    looks: int,
    max_intervals: int,
) -> SequentialVerdict:
    """Judge one check. `candidate_query` / `baseline_query` map the JudgeQueries' fields
    (`buckets`, or `events` and `trials`) to PromQL already rendered for that version over the
    step so far; `looks` is how many intervals the step has been judged, this one included;
    `max_intervals` how many it may wait for a clear verdict (ModelRolloutSpec.max_intervals).

    Raises canary.decision.metrics.MetricsError when a query fails; bad data (buckets that do not match,
    counts that make no histogram) is an `error` verdict naming it.
    """
    threshold = describe(check, queries)
    tolerance = relative_ratio(check.tolerance) if check.tolerance is not None else 0.0
    try:
        if queries.kind == "latency":
            candidate = _histogram(provider, candidate_query["buckets"], queries.bucket_scale)
            baseline = _histogram(provider, baseline_query["buckets"], queries.bucket_scale)
            if candidate is None or baseline is None:
                return _no_data(check, looks, max_intervals, threshold, candidate, baseline)
            decision = judge_latency(
                candidate,
                baseline,
                tolerated_slowdown=tolerance,
                confidence=check.sequential_confidence,
                min_samples=check.min_samples,
                quantile=queries.quantile,
                label="vs stable",
            )
            values = _quantile(candidate, queries.quantile), _quantile(baseline, queries.quantile)
        else:
            candidate_counts = _counts(provider, candidate_query)
            baseline_counts = _counts(provider, baseline_query)
            decision = judge_rate(
                candidate_counts,
                baseline_counts,
                worse=queries.worse,
                tolerance=tolerance,
                confidence=check.sequential_confidence,
                min_samples=check.min_samples,
                label="difference",
            )
            values = _rate(candidate_counts), _rate(baseline_counts)
    except ValueError as err:  # data the statistics refuse: name it rather than guess
        return SequentialVerdict(verdict="error", message=f"cannot judge {check.name}: {err}", threshold=threshold)
    return _verdict(check, decision, looks, max_intervals, threshold, values)


def _verdict(
    check: MetricCheck,
    decision: Decision,
    looks: int,
    limit: int,
    threshold: str,
    values: tuple[float | None, float | None],
) -> SequentialVerdict:
    common = dict(threshold=threshold, candidate=values[0], baseline=values[1], samples=decision.candidate_samples)
    at = f"(interval {looks}/{limit})"
    if decision.outcome in ("fail", "pass"):
        return SequentialVerdict(verdict=decision.outcome, message=f"{decision.message} {at}", **common)
    if decision.estimate is None:  # fewer than minSamples on one side
        if looks < limit:
            return SequentialVerdict(verdict="inconclusive", message=f"{decision.message} {at}", **common)
        verdict: Verdict = {"fail": "fail", "pass": "pass", "inconclusive": "inconclusive"}[check.no_data]
        return SequentialVerdict(
            verdict=verdict, message=f"no data after {looks} intervals ({decision.message}); noData={check.no_data}", **common
        )
    if looks < limit:
        return SequentialVerdict(verdict="inconclusive", message=f"{decision.message} {at}", **common)
    return SequentialVerdict(
        verdict="pass", message=f"{decision.message}; no regression found in {looks} intervals", **common
    )


def _no_data(
    check: MetricCheck,
    looks: int,
    limit: int,
    threshold: str,
    candidate: Histogram | None,
    baseline: Histogram | None,
) -> SequentialVerdict:
    """A side without any latency series yet: as the judge's too-few-samples case."""
    who = "candidate" if candidate is None else "stable"
    reason = f"{who} has no latency buckets yet"
    decision = Decision(
        outcome="continue",
        message=reason,
        candidate_samples=candidate.total if candidate is not None else 0.0,
        baseline_samples=baseline.total if baseline is not None else 0.0,
    )
    return _verdict(check, decision, looks, limit, threshold, (None, None))


def _histogram(provider: MetricsProvider, promql: str, scale: float) -> Histogram | None:
    """The `sum by (le)` result as a Histogram in seconds; None when there is no series."""
    series = provider.query_vector(promql)
    if not series:
        return None
    buckets: dict[str, float] = {}
    for labels, value in series:
        if "le" not in labels:
            raise UnexpectedResult(f"a latency bucket series has no `le` label: {labels}; the query must be `sum by (le)`")
        # increase() of a series with one sample is NaN-free but may be absent; NaN means no data.
        buckets[labels["le"]] = 0.0 if math.isnan(value) else value
    histogram = Histogram.from_le(buckets)
    if scale == 1.0:
        return histogram
    return Histogram(tuple(bound * scale for bound in histogram.bounds), histogram.counts)


def _counts(provider: MetricsProvider, queries: dict[str, str]) -> Counts:
    """Events out of trials; a counter with no series yet has counted nothing."""
    trials = provider.query_value(queries["trials"]) or 0.0
    events = provider.query_value(queries["events"]) or 0.0
    # Each increase() is extrapolated on its own, so events may read a hair above trials.
    trials, events = max(trials, 0.0), max(events, 0.0)
    return Counts(events=min(events, trials), trials=trials)


def _quantile(histogram: Histogram, q: float) -> float | None:
    return histogram_quantile(histogram, q) if histogram.total > 0 else None


def _rate(counts: Counts) -> float | None:
    return counts.rate if counts.trials > 0 else None
