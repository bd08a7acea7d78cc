"""The offline gate: the candidate's own MLflow metrics against the stable version's, before traffic.

Pure, like the engine that calls it: the controller reads each version's metrics from MLflow
(`registry/run_metrics.py`) and hands them in; this module only compares numbers. A version whose
metrics could not be read is absent from the mapping, and then there is no verdict at all (the
engine waits): an unreadable registry never counts as a pass, nor as a failure.

Bounds (canary/decision/spec.py GateMetric):
- `min`, `max`: on the candidate's value alone;
- `maxDrop`, `maxRise`: the candidate may fall below / rise above the stable's value by at most
  this amount, in the metric's own units (`maxDrop: 0.01` on accuracy = one point);
- `maxDecrease`, `maxIncrease`: the same relative to the stable's value, a percentage of its
  magnitude (`"5%"` on an RMSE of 0.40 allows 0.42), so negative metrics (log-likelihoods) work too;
  from a stable value of 0 any change in that direction is too much.
A bound met exactly passes ("may not drop by more than 0.01" allows a drop of 0.01), with a
rounding tolerance so that 0.95 - 0.94 is not read as more than 0.01.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from canary.decision.spec import GateMetric, GateSpec, relative_ratio

# Relative tolerance for float comparisons against a bound: far below any meaningful difference in a
# logged metric, far above binary rounding.
_TOLERANCE = 1e-9


@dataclass(frozen=True)
class OfflineMetrics:
    """One version's metrics as MLflow holds them, and where they came from (named in messages)."""

    values: Mapping[str, float]
    source: str = ""  # e.g. "run 3f2a1b0c", "no run: registered from a logged model"


@dataclass(frozen=True)
class GateResult:
    name: str
    verdict: Literal["pass", "fail"]
    candidate: float | None = None
    baseline: float | None = None
    threshold: str = ""
    message: str = ""


def versions_needed(gate: GateSpec, candidate: str, stable: str | None) -> tuple[str, ...]:
    """Whose metrics the gate needs: the candidate's, and the stable's when a bound is relative to it."""
    if stable is not None and any(m.uses_baseline for m in gate.metrics):
        return (candidate, stable)
    return (candidate,)


def _fmt(value: float) -> str:
    return f"{value:.4g}"


def _signed(value: float) -> str:
    return f"{value:+.4g}"


def describe_bounds(metric: GateMetric, baseline: float | None = None) -> str:
    """The bounds as a reader checks them, with the stable-derived limit when its value is known."""
    parts = []
    if metric.min is not None:
        parts.append(f">= {_fmt(metric.min)}")
    if metric.max is not None:
        parts.append(f"<= {_fmt(metric.max)}")
    relative = [
        (">= stable -", metric.max_drop, metric.max_drop, -1),
        ("<= stable +", metric.max_rise, metric.max_rise, 1),
        (">= stable -", metric.max_decrease, None if metric.max_decrease is None else relative_ratio(metric.max_decrease), -1),
        ("<= stable +", metric.max_increase, None if metric.max_increase is None else relative_ratio(metric.max_increase), 1),
    ]
    for i, (text, written, amount, sign) in enumerate(relative):
        if written is None or amount is None:
            continue
        if baseline is not None:
            # The first two are amounts in the metric's units, the last two ratios of the stable's magnitude.
            step = amount if i < 2 else amount * abs(baseline)
            text += f"{written if i >= 2 else _fmt(amount)} ({_fmt(baseline + sign * step)})"
        else:
            text += written if i >= 2 else _fmt(amount)
        parts.append(text)
    return ", ".join(parts)


def _below(value: float, limit: float) -> bool:
    return value < limit - _TOLERANCE * max(1.0, abs(limit))


def _above(value: float, limit: float) -> bool:
    return value > limit + _TOLERANCE * max(1.0, abs(limit))


def _breaches(metric: GateMetric, value: float, baseline: float | None) -> list[str]:
    found = []
    if metric.min is not None and _below(value, metric.min):
        found.append(f"below min {_fmt(metric.min)}")
    if metric.max is not None and _above(value, metric.max):
        found.append(f"above max {_fmt(metric.max)}")
    if baseline is None:
        return found
    change = value - baseline
    if metric.max_drop is not None and _below(value, baseline - metric.max_drop):
        found.append(f"{_signed(change)}, maxDrop {_fmt(metric.max_drop)}")
    if metric.max_rise is not None and _above(value, baseline + metric.max_rise):
        found.append(f"{_signed(change)}, maxRise {_fmt(metric.max_rise)}")
    relative = f"{change / abs(baseline):+.1%}" if baseline else f"{_signed(change)} from 0"
    if metric.max_decrease is not None:
        ratio = relative_ratio(metric.max_decrease)
        if _below(value, baseline - ratio * abs(baseline)):
            found.append(f"{relative}, maxDecrease {metric.max_decrease}")
    if metric.max_increase is not None:
        ratio = relative_ratio(metric.max_increase)
        if _above(value, baseline + ratio * abs(baseline)):
            found.append(f"{relative}, maxIncrease {metric.max_increase}")
    return found


def _where(version: str, metrics: OfflineMetrics) -> str:
    return f"v{version}" + (f" ({metrics.source})" if metrics.source else "")


def judge_metric(
    gate: GateSpec, metric: GateMetric, candidate: str, stable: str | None, metrics: Mapping[str, OfflineMetrics]
) -> GateResult:
    """One metric's verdict. Every version in `versions_needed` must be in `metrics`."""
    mine = metrics[candidate]
    theirs = metrics.get(stable) if stable is not None and metric.uses_baseline else None
    value = mine.values.get(metric.name)
    baseline = theirs.values.get(metric.name) if theirs is not None else None
    threshold = describe_bounds(metric, baseline if baseline is not None and math.isfinite(baseline) else None)
    base = {"name": metric.name, "candidate": value, "baseline": baseline, "threshold": threshold}

    absent = []
    if value is None:
        absent.append(f"candidate {_where(candidate, mine)}")
    if metric.uses_baseline and baseline is None:
        absent.append(
            f"stable {_where(stable, theirs)}" if stable is not None and theirs is not None else "the stable (no stable version)"
        )
    if absent:
        policy = gate.missing_for(metric)
        message = f"{metric.name} not logged for {' nor '.join(absent)}; missing={policy}"
        return GateResult(verdict="fail" if policy == "fail" else "pass", message=message, **base)
    assert value is not None
    # A NaN compares false with everything and would pass every bound; it is a broken run, not a value.
    for who, number in (("candidate", value), ("stable", baseline)):
        if number is not None and math.isnan(number):
            return GateResult(verdict="fail", message=f"{metric.name} is NaN for the {who}", **base)

    breaches = _breaches(metric, value, baseline)
    against = f" vs {_fmt(baseline)} on v{stable}" if baseline is not None else ""
    if breaches:
        return GateResult(
            verdict="fail", message=f"{metric.name} {_fmt(value)} on v{candidate}{against} ({'; '.join(breaches)})", **base
        )
    return GateResult(verdict="pass", message=f"{metric.name} {_fmt(value)} on v{candidate}{against}: within {threshold}", **base)


def evaluate(
    gate: GateSpec, candidate: str, stable: str | None, metrics: Mapping[str, OfflineMetrics]
) -> list[GateResult] | None:
    """Every metric's verdict, or None when a needed version's metrics were not read (no decision)."""
    if any(version not in metrics for version in versions_needed(gate, candidate, stable)):
        return None
    return [judge_metric(gate, metric, candidate, stable, metrics) for metric in gate.metrics]
