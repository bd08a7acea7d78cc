"""Checks: measure each metric for candidate and baseline, then judge it.

Two judges (`MetricCheck.judge`): `threshold` holds one interval's value against max/min/
maxIncrease/maxDecrease; `judge` below is that rule, pure (values in, verdict out) so it is
unit-tested without Prometheus. `sequential` weighs everything since the step began with an
always-valid statistical test (canary/decision/sequential_check.py). `evaluate` runs one check of either
kind, `analyse` every check of a phase. A query that fails is an `error` verdict, never a pass;
missing data is judged by the check's `noData` policy.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from canary.decision import sequential_check, templates
from canary.decision.durations import format_duration
from canary.decision.metrics import MetricsError, MetricsProvider, render
from canary.decision.spec import MetricCheck, ModelRolloutSpec, Verdict, relative_ratio


@dataclass(frozen=True)
class Measurement:
    candidate: float | None
    baseline: float | None = None
    candidate_samples: float | None = None
    baseline_samples: float | None = None


@dataclass(frozen=True)
class CheckResult:
    name: str
    verdict: Verdict
    candidate: float | None = None
    baseline: float | None = None
    samples: float | None = None
    threshold: str = ""
    message: str = ""


@dataclass(frozen=True)
class AnalysisContext:
    """What a query may refer to: the `{{ variables }}` of templates."""

    rollout: str
    namespace: str
    model: str
    stable_version: str
    candidate_version: str
    candidate_role: str  # "shadow" or "canary"
    window_seconds: float
    # Per version, what serves it on the platform (templates.PLATFORM_VARIABLES: the Knative
    # revision, the workload, the InferenceService); empty on the local platform.
    platform: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    # Time since the step's analysis began (engine.analysed_seconds): the sequential judge's
    # window. None: one window.
    analysed_seconds: float | None = None

    def variables(self, version: str, role: str, *, whole_step: bool = False) -> dict[str, str]:
        """A query's variables; `whole_step` makes `{{ interval }}` the step so far, not one window."""
        window = self.analysed_seconds if whole_step and self.analysed_seconds is not None else self.window_seconds
        return {
            **self.platform.get(version, {}),
            "rollout": self.rollout,
            "namespace": self.namespace,
            "model": self.model,
            "stable_version": self.stable_version,
            "candidate_version": self.candidate_version,
            "version": version,
            "role": role,
            "interval": format_duration(window),
        }

    def baseline_role(self, template: templates.Template) -> str:
        """The role the baseline side of `template` is measured under: in the shadow phase, the
        stable's baseline server for signals timed on the request path (canary/traffic/mirror.py)."""
        if self.candidate_role == templates.SHADOW and template.shadow_baseline:
            return templates.BASELINE
        return templates.STABLE

    @property
    def looks(self) -> int:
        """How many windows the step has been judged, this one included.

        Rounded down: a window ends at the first tick after its length, so k windows take a little
        longer than k lengths (rounding to nearest would count a look too many after a few).
        """
        if self.analysed_seconds is None or self.window_seconds <= 0:
            return 1
        return max(1, math.floor(self.analysed_seconds / self.window_seconds + 1e-9))


def _fmt(value: float | None) -> str:
    return "none" if value is None else f"{value:.4g}"


def describe_thresholds(check: MetricCheck, baseline: float | None = None) -> str:
    """Human-readable thresholds, with the baseline-derived bound when the baseline is known."""
    if check.judge == "sequential":
        return sequential_check.describe(check, _judge_queries(check))
    parts = []
    if check.max is not None:
        parts.append(f"<= {_fmt(check.max)}")
    if check.min is not None:
        parts.append(f">= {_fmt(check.min)}")
    if check.max_increase is not None:
        ratio = relative_ratio(check.max_increase)
        bound = f" ({_fmt(baseline * (1 + ratio))})" if baseline is not None else ""
        parts.append(f"<= stable +{ratio:.0%}{bound}")
    if check.max_decrease is not None:
        ratio = relative_ratio(check.max_decrease)
        bound = f" ({_fmt(baseline * (1 - ratio))})" if baseline is not None else ""
        parts.append(f">= stable -{ratio:.0%}{bound}")
    return ", ".join(parts)


def _judge_queries(check: MetricCheck) -> templates.JudgeQueries | None:
    """A sequential check's judge queries, found by template name alone: the kind (latency or a
    rate) and which direction is worse are the same in every provider, so the bound reads right
    ("10% slower", "2 points below") where the spec's provider is not at hand."""
    for provider in templates.PROVIDERS.values():
        template = provider.get(check.template or "")
        if template is not None and template.judge is not None:
            return template.judge
    return None


def _missing(check: MetricCheck, m: Measurement) -> str | None:
    """Why there is not enough data to judge, or None when there is."""
    needs_baseline = check.uses_baseline
    if m.candidate_samples is not None and m.candidate_samples < check.min_samples:
        return f"candidate has {m.candidate_samples:.0f} samples, minSamples is {check.min_samples}"
    if needs_baseline and m.baseline_samples is not None and m.baseline_samples < check.min_samples:
        return f"stable has {m.baseline_samples:.0f} samples, minSamples is {check.min_samples}"
    if m.candidate is None:
        return "no data for the candidate"
    if needs_baseline and m.baseline is None:
        return "no data for the stable baseline"
    return None


def judge(check: MetricCheck, m: Measurement) -> CheckResult:
    threshold = describe_thresholds(check, m.baseline)
    base = dict(name=check.name, candidate=m.candidate, baseline=m.baseline, samples=m.candidate_samples, threshold=threshold)
    missing = _missing(check, m)
    if missing is not None:
        verdict: Verdict = {"fail": "fail", "pass": "pass", "inconclusive": "inconclusive"}[check.no_data]
        return CheckResult(verdict=verdict, message=f"no data ({missing}); noData={check.no_data}", **base)

    value = m.candidate
    assert value is not None
    breaches = []
    if check.max is not None and value > check.max:
        breaches.append(f"{_fmt(value)} > max {_fmt(check.max)}")
    if check.min is not None and value < check.min:
        breaches.append(f"{_fmt(value)} < min {_fmt(check.min)}")
    if check.max_increase is not None:
        assert m.baseline is not None
        ratio = relative_ratio(check.max_increase)
        if value > m.baseline * (1 + ratio) and value > m.baseline:
            change = "from 0" if m.baseline == 0 else f"+{(value / m.baseline - 1):.0%}"
            breaches.append(
                f"{_fmt(value)} vs stable {_fmt(m.baseline)} ({change}, maxIncrease {ratio:.0%})"
            )
    if check.max_decrease is not None:
        assert m.baseline is not None
        ratio = relative_ratio(check.max_decrease)
        if value < m.baseline * (1 - ratio):
            change = f"-{(1 - value / m.baseline):.0%}" if m.baseline else "below 0"
            breaches.append(
                f"{_fmt(value)} vs stable {_fmt(m.baseline)} ({change}, maxDecrease {ratio:.0%})"
            )
    if breaches:
        return CheckResult(verdict="fail", message="; ".join(breaches), **base)
    return CheckResult(verdict="pass", message=f"{_fmt(value)} within {threshold}", **base)


def _value(provider: MetricsProvider, query: str | None, variables: dict[str, str]) -> float | None:
    if query is None:
        return None
    value = provider.query_value(render(query, variables))
    if value is not None and not math.isfinite(value):
        return None
    return value


def _samples(provider: MetricsProvider, query: str | None, variables: dict[str, str]) -> float | None:
    """Observations behind a value; a counter with no series yet has counted nothing (0, not unknown).

    Prometheus extrapolates `increase()` to the window's edges, so with few scrapes this reads
    high (up to ~2x with two samples): `minSamples` is a floor on evidence, not an exact count.
    """
    if query is None:
        return None
    value = _value(provider, query, variables)
    return 0.0 if value is None else value


def measure(spec: ModelRolloutSpec, check: MetricCheck, ctx: AnalysisContext, provider: MetricsProvider) -> Measurement:
    template = spec.analysis.template_for(check)
    cand_vars = ctx.variables(ctx.candidate_version, ctx.candidate_role)
    measurement = Measurement(
        candidate=_value(provider, template.query, cand_vars),
        candidate_samples=_samples(provider, template.samples, cand_vars),
    )
    if not template.has_baseline:
        return measurement
    base_vars = ctx.variables(ctx.stable_version, ctx.baseline_role(template))
    return Measurement(
        candidate=measurement.candidate,
        candidate_samples=measurement.candidate_samples,
        baseline=_value(provider, template.query, base_vars),
        baseline_samples=_samples(provider, template.samples, base_vars),
    )


def applicable_checks(spec: ModelRolloutSpec, phase: str) -> list[MetricCheck]:
    """The checks that run in a phase ("shadow" or "canary")."""
    return [c for c in spec.analysis.metrics if phase in spec.analysis.phases_for(c)]


def judge_sequentially(
    spec: ModelRolloutSpec, check: MetricCheck, ctx: AnalysisContext, provider: MetricsProvider
) -> CheckResult:
    """A `judge: sequential` check on the step so far (raises MetricsError when a query fails)."""
    template = spec.analysis.template_for(check)
    queries = template.judge
    assert queries is not None, "the spec accepts judge: sequential only on templates with judge queries"
    fields = ("buckets",) if queries.kind == "latency" else ("events", "trials")

    def rendered(version: str, role: str) -> dict[str, str]:
        variables = ctx.variables(version, role, whole_step=True)
        return {name: render(getattr(queries, name), variables) for name in fields}

    result = sequential_check.judge_check(
        check,
        queries,
        provider,
        candidate_query=rendered(ctx.candidate_version, ctx.candidate_role),
        baseline_query=rendered(ctx.stable_version, ctx.baseline_role(template)),
        looks=ctx.looks,
        max_intervals=spec.max_intervals(check, ctx.candidate_role),
    )
    return CheckResult(
        name=check.name,
        verdict=result.verdict,
        candidate=result.candidate,
        baseline=result.baseline,
        samples=result.samples,
        threshold=result.threshold,
        message=result.message,
    )


def evaluate(spec: ModelRolloutSpec, check: MetricCheck, ctx: AnalysisContext, provider: MetricsProvider) -> CheckResult:
    """One check's verdict by its judge; a failing query is an `error` verdict naming it."""
    try:
        if check.judge == "sequential":
            return judge_sequentially(spec, check, ctx, provider)
        return judge(check, measure(spec, check, ctx, provider))
    except MetricsError as err:
        return CheckResult(name=check.name, verdict="error", threshold=describe_thresholds(check), message=str(err))


def analyse(spec: ModelRolloutSpec, ctx: AnalysisContext, provider: MetricsProvider) -> list[CheckResult]:
    """One verdict per check that applies to the candidate's role; a failing query is an `error`."""
    return [evaluate(spec, check, ctx, provider) for check in applicable_checks(spec, ctx.candidate_role)]
