"""What the statistical judge is given per version: event counts and latency histograms.

Prometheus cannot hand back raw requests, only what its counters and histograms accumulated. Over
a window the controller can read, per version:

- `Counts(events, trials)`: an `increase()` of two counters, e.g. errors out of requests, or
  correct predictions out of labelled ones (`modelrollout_feedback_correct_total` /
  `modelrollout_feedback_total`);
- `Histogram(bounds, counts)`: the `increase()` of a latency histogram's `_bucket` series,
  `sum by (le)`. `bounds` are the finite `le` upper bounds, ascending; `counts` are PER BUCKET
  (not cumulative) and have one more entry than `bounds`: the last one is the `+Inf` bucket
  (above the largest bound). `Histogram.from_cumulative` / `from_le` turn Prometheus's
  cumulative `le` series into this form.

Counts may be fractional: `increase()` extrapolates to the window's edges, so it rarely returns
whole numbers. The statistics only need them non-negative and finite. Units do not matter as long
as candidate and baseline share them (Knative and Istio buckets are in milliseconds, the router's
in seconds); comparing two histograms requires identical bounds, and a mismatch is a ValueError.
"""

from __future__ import annotations

import itertools
import math
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass


def _check_count(name: str, value: float) -> None:
    # numbers.Real: numpy's integers and floats are welcome, a bool or a string is a mistake.
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a number, got {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    if value < 0:
        raise ValueError(f"{name} must not be negative, got {value}")


@dataclass(frozen=True)
class Counts:
    """`events` out of `trials` in one version over one window (errors of requests, correct of labelled)."""

    events: float
    trials: float

    def __post_init__(self) -> None:
        _check_count("events", self.events)
        _check_count("trials", self.trials)
        if self.events > self.trials:
            raise ValueError(f"events ({self.events:g}) exceed trials ({self.trials:g})")

    @property
    def rate(self) -> float:
        if self.trials == 0:
            raise ValueError("rate of zero trials is undefined")
        return self.events / self.trials

    def __add__(self, other: Counts) -> Counts:
        return Counts(self.events + other.events, self.trials + other.trials)


# A cumulative bucket may dip below the one before it by this much before it is called invalid:
# Prometheus extrapolates each `le` series' increase() separately, so small dips are normal.
_CUMULATIVE_SLACK_ABS = 1.0
_CUMULATIVE_SLACK_REL = 0.01


@dataclass(frozen=True)
class Histogram:
    """Per-bucket counts: `counts[i]` observations in (bounds[i-1], bounds[i]], the last above bounds[-1]."""

    bounds: tuple[float, ...]
    counts: tuple[float, ...]

    def __post_init__(self) -> None:
        bounds, counts = tuple(self.bounds), tuple(self.counts)
        object.__setattr__(self, "bounds", bounds)
        object.__setattr__(self, "counts", counts)
        if not bounds:
            raise ValueError("a histogram needs at least one finite bucket bound")
        for i, b in enumerate(bounds):
            if isinstance(b, bool) or not isinstance(b, numbers.Real) or not math.isfinite(b):
                raise ValueError(f"bucket bound {i} must be a finite number, got {b!r} (give +Inf as the last count, not a bound)")
        if bounds[0] < 0:
            raise ValueError(f"bucket bounds must not be negative (latencies), got {bounds[0]:g}")
        for lo, hi in itertools.pairwise(bounds):
            if hi <= lo:
                raise ValueError(f"bucket bounds must increase strictly, got {lo:g} then {hi:g}")
        if len(counts) != len(bounds) + 1:
            raise ValueError(
                f"{len(bounds)} bounds need {len(bounds) + 1} per-bucket counts (the last for +Inf), got {len(counts)}"
            )
        for i, c in enumerate(counts):
            _check_count(f"bucket {i} count", c)

    @classmethod
    def from_cumulative(cls, bounds: Sequence[float], cumulative: Sequence[float]) -> Histogram:
        """From Prometheus's cumulative `le` counts: one per bound plus the `+Inf` total.

        Small dips between neighbours (each `le` series' increase() is extrapolated on its own)
        are flattened; a dip larger than one count and 1% of the total is an error, since it
        means the series do not belong together.
        """
        if len(cumulative) != len(bounds) + 1:
            raise ValueError(
                f"{len(bounds)} bounds need {len(bounds) + 1} cumulative counts (the last for +Inf), got {len(cumulative)}"
            )
        for i, c in enumerate(cumulative):
            _check_count(f"cumulative count {i}", c)
        total = cumulative[-1]
        slack = max(_CUMULATIVE_SLACK_ABS, _CUMULATIVE_SLACK_REL * total)
        counts, running = [], 0.0
        for i, c in enumerate(cumulative):
            if c < running - slack:
                where = f"le={bounds[i]:g}" if i < len(bounds) else "le=+Inf"
                raise ValueError(f"cumulative counts must not decrease: {where} has {c:g} after {running:g}")
            level = max(c, running)
            counts.append(level - running)
            running = level
        return cls(tuple(float(b) for b in bounds), tuple(counts))

    @classmethod
    def from_le(cls, buckets: Mapping[str, float] | Mapping[float, float]) -> Histogram:
        """From a `sum by (le)` result: {le label: cumulative count}, with a "+Inf" entry."""
        parsed: dict[float, float] = {}
        for le, value in buckets.items():
            try:
                bound = float(le)
            except (TypeError, ValueError):
                raise ValueError(f"bucket label le={le!r} is not a number") from None
            if math.isnan(bound):
                raise ValueError("bucket label le=NaN is not a bound")
            if bound in parsed:
                raise ValueError(f"bucket le={le!r} given twice")
            parsed[bound] = value
        if math.inf not in parsed:
            raise ValueError("the +Inf bucket is missing (it holds the total count)")
        finite = sorted(b for b in parsed if b != math.inf)
        return cls.from_cumulative(finite, [parsed[b] for b in finite] + [parsed[math.inf]])

    @property
    def total(self) -> float:
        return float(sum(self.counts))

    def cumulative(self) -> tuple[float, ...]:
        """Counts at or below each bound, then the total (Prometheus's `le` series)."""
        out, running = [], 0.0
        for c in self.counts:
            running += c
            out.append(running)
        return tuple(out)

    def __add__(self, other: Histogram) -> Histogram:
        require_same_bounds(self, other)
        return Histogram(self.bounds, tuple(a + b for a, b in zip(self.counts, other.counts)))


def require_same_bounds(a: Histogram, b: Histogram) -> None:
    if a.bounds != b.bounds:
        raise ValueError(
            f"histograms have different buckets ({len(a.bounds)} bounds {a.bounds[0]:g}..{a.bounds[-1]:g} vs "
            f"{len(b.bounds)} bounds {b.bounds[0]:g}..{b.bounds[-1]:g}); compare series with the same `le` labels"
        )


def histogram_quantile(h: Histogram, q: float) -> float:
    """The q-quantile as Prometheus's histogram_quantile() computes it.

    Linear interpolation inside the bucket that holds it, the first bucket starting at 0; a
    quantile that falls in the +Inf bucket is the largest finite bound. So what this returns for a
    window is exactly what a `histogram_quantile(0.95, ...)` threshold check would have seen.
    """
    if not 0 <= q <= 1 or math.isnan(q):
        raise ValueError(f"quantile must be within [0, 1], got {q}")
    total = h.total
    if total <= 0:
        raise ValueError("quantile of an empty histogram (no observations in the window)")
    rank = q * total
    cumulative = h.cumulative()
    # The first finite bucket whose cumulative count reaches the rank, as Prometheus searches.
    index = next((i for i in range(len(h.bounds)) if cumulative[i] >= rank), None)
    if index is None:
        return h.bounds[-1]
    if index == 0 and h.bounds[0] <= 0:
        return h.bounds[0]
    start = 0.0 if index == 0 else h.bounds[index - 1]
    below = 0.0 if index == 0 else cumulative[index - 1]
    count = cumulative[index] - below
    if count <= 0:  # only when q = 0 and the first bucket is empty
        return start
    return start + (h.bounds[index] - start) * (rank - below) / count
