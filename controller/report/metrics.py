"""The report's evidence from Prometheus: each check re-measured over the attempt, and latency
histograms of candidate and baseline.

Queries are rendered exactly as the analysis renders them (`AnalysisContext.variables` and
`canary.decision.metrics.render`, per version and role), with the window of the phase they were judged in,
so a point at time t is what a check ending at t would have seen. At the end of each analysed
step the checks are judged again at that instant (`canary.decision.analysis.evaluate`, by each check's
judge): the verdicts the controller reached, recomputed from the data Prometheus still holds.

No data is not an error here (a plot says "no data"); a query Prometheus cannot run is recorded
as the check's problem; an unreachable Prometheus (`MetricsUnavailable`) propagates, because
nothing else in the report can be measured either.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime

from canary.decision.analysis import AnalysisContext, CheckResult, applicable_checks, evaluate
from canary.decision.durations import parse_duration
from canary.decision.metrics import (
    MetricsError,
    MetricsUnavailable,
    PrometheusProvider,
    RangeSeries,
    render,
)
from canary.decision.spec import MetricCheck, MetricStatus, ModelRolloutSpec
from canary.decision.templates import Template, lookup
from controller.report.sources import RolloutRecord
from controller.report.timeline import Attempt, Segment

# Points per plotted segment: enough for a smooth line, few enough for a quick query.
_POINTS_PER_SEGMENT = 300
_MIN_STEP_S = 0.5


@dataclass(frozen=True)
class Window:
    """One check over one analysed segment."""

    segment: Segment
    candidate: RangeSeries | None
    baseline: RangeSeries | None
    at_end: CheckResult | None  # judged again at the segment's end


@dataclass(frozen=True)
class CheckEvidence:
    check: MetricCheck
    template: Template
    windows: tuple[Window, ...]
    recorded: MetricStatus | None  # the last verdict the controller stored, for the latest attempt
    problem: str | None = None  # why it could not be re-measured

    @property
    def has_data(self) -> bool:
        return any(s is not None and s.has_data for w in self.windows for s in (w.candidate, w.baseline))


@dataclass(frozen=True)
class LatencyEvidence:
    """Requests per latency bucket over one candidate role's span, candidate and baseline."""

    role: str
    label: str
    seconds: float
    bounds: tuple[float, ...]  # upper bounds in seconds, +Inf last
    candidate: tuple[float, ...]  # cumulative counts per bound
    baseline: tuple[float, ...]
    problem: str | None = None

    @property
    def has_data(self) -> bool:
        return bool(self.bounds) and (max(self.candidate, default=0) > 0 or max(self.baseline, default=0) > 0)


@dataclass(frozen=True)
class _At:
    """A MetricsProvider that evaluates every query at one past instant."""

    provider: PrometheusProvider
    at: float

    def query_value(self, promql: str) -> float | None:
        return self.provider.query_value(promql, at=self.at)

    def query_vector(self, promql: str) -> list[tuple[dict[str, str], float]]:
        return self.provider.query_vector(promql, at=self.at)


def check_reachable(provider: PrometheusProvider) -> None:
    """MetricsUnavailable (one line) unless Prometheus answers a trivial query."""
    provider.check_query("vector(1)")


def window_seconds(spec: ModelRolloutSpec, role: str) -> float:
    return parse_duration(spec.shadow.duration if role == "shadow" else spec.canary.interval)


def analysis_context(record: RolloutRecord, attempt: Attempt, role: str) -> AnalysisContext:
    """The variables the controller rendered queries with in a segment where the candidate had
    `role`; in the post-promotion watch ("stable") the promoted version is the only one measured."""
    spec = record.rollout.spec
    stable = attempt.version if role == "stable" else attempt.stable_version
    return AnalysisContext(
        rollout=record.name,
        namespace=record.rollout.metadata.namespace,
        model=spec.model.name,
        stable_version=stable or "",
        candidate_version=attempt.version or "",
        candidate_role=role,
        window_seconds=window_seconds(spec, role),
    )


def checks_in(spec: ModelRolloutSpec, segment: Segment) -> list[MetricCheck]:
    """The checks the controller ran in a segment: the phase's, or the post-promotion watch's
    (absolute bounds only, `ModelRolloutSpec.watch_checks`)."""
    if segment.role is None:
        return []
    if segment.role == "stable":
        watch_checks = getattr(spec, "watch_checks", None)  # the watch is optional in the spec
        return list(watch_checks()) if callable(watch_checks) else []
    return applicable_checks(spec, segment.role)


def _judge_at(
    spec: ModelRolloutSpec, check: MetricCheck, ctx: AnalysisContext, provider: PrometheusProvider, at: float
) -> CheckResult:
    """The check judged as the controller would have at unix time `at` (a failing query: `error`)."""
    return evaluate(spec, check, ctx, _At(provider, at))


def _step(start: float, end: float) -> float:
    return max(_MIN_STEP_S, (end - start) / _POINTS_PER_SEGMENT)


def _one_series(found: list[RangeSeries]) -> RangeSeries | None:
    # A check's query aggregates to one series; several would be a spec problem the analysis
    # reports itself. Plot the first rather than nothing.
    return found[0] if found else None


def _range(provider: PrometheusProvider, query: str, variables: dict[str, str], start: float, end: float) -> RangeSeries | None:
    return _one_series(provider.query_range(render(query, variables), start, end, _step(start, end)))


def measure_checks(
    record: RolloutRecord, attempt: Attempt, provider: PrometheusProvider, now: datetime, latest: bool
) -> list[CheckEvidence]:
    """Every check of the spec over the attempt's analysed segments, each judged again at the end
    of every segment it ran in."""
    spec = record.rollout.spec
    recorded = {c.name: c for c in record.status.checks} if latest else {}
    evidence = []
    for check in spec.analysis.metrics:
        template = spec.analysis.template_for(check)
        windows, problem = [], None
        for segment in attempt.segments:
            ran = next((c for c in checks_in(spec, segment) if c.name == check.name), None)
            if ran is None or segment.role is None:
                continue
            ctx = analysis_context(record, attempt, segment.role)
            start, end = segment.start.timestamp(), (segment.end or now).timestamp()
            candidate = baseline = None
            try:
                candidate = _range(provider, template.query, ctx.variables(ctx.candidate_version, segment.role), start, end)
                # The watch measures the promoted version alone: the old stable serves nothing then.
                if template.has_baseline and segment.role != "stable" and attempt.stable_version:
                    baseline = _range(
                        provider, template.query, ctx.variables(ctx.stable_version, ctx.baseline_role(template)), start, end
                    )
            except MetricsUnavailable:
                raise
            except MetricsError as err:
                problem = problem or str(err)
            # A sequential check weighs the whole step (here from the segment's start, which is at
            # most the candidate's start-up earlier than the controller's).
            judged_ctx = replace(ctx, analysed_seconds=end - start)
            windows.append(Window(segment, candidate, baseline, _judge_at(spec, ran, judged_ctx, provider, end)))
        if check.uses_baseline and not attempt.stable_version and problem is None:
            problem = "the stable version this attempt was compared with is not recorded, so its baseline is not shown"
        evidence.append(CheckEvidence(check, template, tuple(windows), recorded.get(check.name), problem))
    return evidence


def latency_template(spec: ModelRolloutSpec) -> tuple[str, float] | None:
    """(bucket query with `{{ variables }}`, seconds per bucket unit) of the provider's latency
    histogram: what the sequential judge reads for `latency_p95`, so every provider is covered."""
    try:
        queries = lookup(spec.analysis.provider, "latency_p95").judge
    except KeyError:
        return None
    if queries is None or queries.kind != "latency":
        return None
    return queries.buckets, queries.bucket_scale


def measure_latency(
    record: RolloutRecord, attempt: Attempt, provider: PrometheusProvider, now: datetime
) -> list[LatencyEvidence]:
    """Per candidate role (shadow, canary): bucket counts of candidate and stable over the span the
    candidate held that role — the same requests the latency checks judged, summed over steps."""
    spec = record.rollout.spec
    shape = latency_template(spec)
    shape_template = lookup(spec.analysis.provider, "latency_p95") if shape is not None else None
    out = []
    for role in ("shadow", "canary"):
        spans = [s for s in attempt.analysed() if s.role == role]
        if not spans:
            continue
        start, end = spans[0].start, spans[-1].end or now
        seconds = max(1, math.ceil((end - start).total_seconds()))
        label = spans[0].label if role == "shadow" else f"canary steps {', '.join(str(s.weights.candidate) + '%' for s in spans)}"
        if shape is None:
            problem = f"provider {spec.analysis.provider!r} has no latency histogram template"
            out.append(LatencyEvidence(role, label, seconds, (), (), (), problem))
            continue
        query, scale = shape
        ctx = replace(analysis_context(record, attempt, role), window_seconds=seconds)
        try:
            cand = _buckets(provider, render(query, ctx.variables(ctx.candidate_version, role)), end.timestamp())
            base = (
                # The same baseline the latency checks compared with (the baseline server in the shadow).
                _buckets(provider, render(query, ctx.variables(ctx.stable_version, ctx.baseline_role(shape_template))), end.timestamp())
                if attempt.stable_version
                else {}
            )
        except MetricsUnavailable:
            raise
        except MetricsError as err:
            out.append(LatencyEvidence(role, label, seconds, (), (), (), str(err)))
            continue
        bounds = sorted(set(cand) | set(base))
        out.append(
            LatencyEvidence(
                role,
                label,
                seconds,
                tuple(b * scale if math.isfinite(b) else b for b in bounds),
                tuple(cand.get(b, 0.0) for b in bounds),
                tuple(base.get(b, 0.0) for b in bounds),
            )
        )
    return out


def _buckets(provider: PrometheusProvider, promql: str, at: float) -> dict[float, float]:
    counts = {}
    for labels, value in provider.query_vector(promql, at):
        try:
            bound = float(labels.get("le", ""))
        except ValueError:
            continue
        counts[bound] = value if math.isfinite(value) else 0.0
    return counts


def bucket_quantile(bounds: Sequence[float], cumulative: Sequence[float], q: float) -> float | None:
    """The q-quantile of one histogram as Prometheus' `histogram_quantile` estimates it: linear
    within the bucket that holds the rank, the first bucket starting at 0, and the last finite
    bound when the rank falls in +Inf. None for an empty histogram."""
    if not bounds or len(bounds) != len(cumulative) or cumulative[-1] <= 0 or not 0 <= q <= 1:
        return None
    rank = q * cumulative[-1]
    for i, (bound, count) in enumerate(zip(bounds, cumulative)):
        if count < rank:
            continue
        if math.isinf(bound):
            return bounds[i - 1] if i > 0 else None
        lower, below = (bounds[i - 1], cumulative[i - 1]) if i > 0 else (0.0, 0.0)
        if count <= below:
            return bound
        return lower + (bound - lower) * (rank - below) / (count - below)
    return None
