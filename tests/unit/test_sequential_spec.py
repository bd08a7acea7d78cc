"""`judge: sequential` in the spec, the engine and the analysis context.

The spec: every rule that keeps a sequential check meaningful (a builtin template with judge
queries, `tolerance` instead of thresholds, settings that are its alone, a progressDeadline that
outlasts `maxIntervals` windows) is an error naming the metric and the field. The engine: the
step's analysis start (`analysisStartedAt`) is set when the candidate is ready and cleared by each
new step, since the judge weighs everything since then. The context: how many windows the step
has been judged, and `{{ interval }}` as the step so far.
"""

from __future__ import annotations

import copy
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
import yaml

from canary.decision.analysis import AnalysisContext, CheckResult, describe_thresholds
from canary.decision.engine import CandidateHealth, Command, Observation, RegistryView, analysed_seconds, step
from canary.decision.spec import (
    DEFAULT_CONFIDENCE,
    DEFAULT_MAX_INTERVALS,
    ModelRolloutSpec,
    Phase,
    RolloutStatus,
    SpecError,
    load_rollouts,
    parse_rollout,
)
from canary.decision.templates import PROVIDERS

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
LATENCY = {"name": "p95", "template": "latency_p95", "judge": "sequential", "tolerance": "10%"}
JUDGED = ("accuracy", "error_rate", "latency_p50", "latency_p95", "latency_p99")


def document(*metrics: dict[str, Any], provider: str = "local", **spec: Any) -> dict[str, Any]:
    """A rollout whose windows (30 s) fit the default maxIntervals (3) in its 2 m deadline."""
    body: dict[str, Any] = {
        "model": {"name": "iris"},
        "shadow": {"duration": "30s"},
        "canary": {"steps": [10, 50], "interval": "30s"},
        "progressDeadline": "2m",
        "analysis": {"provider": provider, "metrics": [copy.deepcopy(m) for m in metrics]},
    }
    if provider != "local":
        body["target"] = {"inferenceService": "iris"}
    body.update(spec)
    return {"apiVersion": "modelrollout.io/v1alpha1", "kind": "ModelRollout", "metadata": {"name": "iris"}, "spec": body}


def changed(metric: dict[str, Any], **changes: Any) -> dict[str, Any]:
    """`metric` with fields set, or removed where the value is None."""
    out = dict(metric)
    for key, value in changes.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = value
    return out


def rejected(doc: dict[str, Any]) -> str:
    with pytest.raises(SpecError) as err:
        parse_rollout(doc)
    return str(err.value)


# ---------------------------------------------------------------------------------------------
# A good spec


def test_sequential_checks_parse_with_defaults_and_round_trip():
    doc = document(
        LATENCY,
        {"name": "errors", "template": "error_rate", "judge": "sequential", "tolerance": 0.01,
         "confidence": 0.99, "maxIntervals": 2, "noData": "fail", "minSamples": 50},
        {"name": "acc", "template": "accuracy", "judge": "sequential", "tolerance": "2%", "phases": ["shadow"]},
    )  # fmt: skip
    rollout = parse_rollout(doc)
    p95, errors, acc = rollout.spec.analysis.metrics
    assert (p95.judge, p95.confidence, p95.max_intervals) == ("sequential", None, None)
    assert p95.sequential_confidence == DEFAULT_CONFIDENCE
    assert rollout.spec.max_intervals(p95, "canary") == DEFAULT_MAX_INTERVALS
    assert (errors.sequential_confidence, rollout.spec.max_intervals(errors, "canary")) == (0.99, 2)
    assert all(c.uses_baseline for c in (p95, errors, acc))
    assert rollout.spec.analysis.phases_for(acc) == ("shadow",)

    dumped = rollout.model_dump(by_alias=True, exclude_none=True, mode="json")
    written = dumped["spec"]["analysis"]["metrics"]
    assert written[0] == {**LATENCY, "failureLimit": 0, "consecutive": False, "noData": "inconclusive", "minSamples": 10}
    assert {k: written[1][k] for k in ("judge", "tolerance", "confidence", "maxIntervals")} == {
        "judge": "sequential", "tolerance": 0.01, "confidence": 0.99, "maxIntervals": 2,
    }  # fmt: skip
    # What is written back (a CRD's status update, `get -o yaml`) loads into the same rollout.
    assert parse_rollout(dumped) == rollout
    assert load_rollouts(yaml.safe_dump(dumped))[0] == rollout


def test_threshold_is_the_default_judge():
    [check] = parse_rollout(document({"name": "p95", "template": "latency_p95", "max": 1})).spec.analysis.metrics
    assert check.judge == "threshold" and not check.uses_baseline


@pytest.mark.parametrize("provider", sorted(PROVIDERS))
def test_every_template_with_judge_queries_can_be_judged_sequentially(provider):
    judged = sorted(name for name, template in PROVIDERS[provider].items() if template.judge is not None)
    assert judged == list(JUDGED)
    for name in judged:
        check = changed(LATENCY, name=name.replace("_", "-"), template=name)
        assert parse_rollout(document(check, provider=provider)).spec.analysis.metrics[0].template == name


@pytest.mark.parametrize(
    ("metric", "text"),
    [
        (LATENCY, "sequential: at most 10% slower than stable at 95% confidence"),
        (changed(LATENCY, template="latency_p50", tolerance=0.25, confidence=0.99, maxIntervals=2),
         "sequential: at most 25% slower than stable at 99% confidence"),
        (changed(LATENCY, name="errors", template="error_rate", tolerance="0.5%"),
         "sequential: at most 0.5 points above stable at 95% confidence"),
        (changed(LATENCY, name="acc", template="accuracy", tolerance="2%"),
         "sequential: at most 2 points below stable at 95% confidence"),
    ],
)  # fmt: skip
def test_describe_thresholds_words_the_sequential_bound(metric, text):
    [check] = parse_rollout(document(metric)).spec.analysis.metrics
    assert describe_thresholds(check) == text
    assert describe_thresholds(check, baseline=0.2) == text  # a baseline value does not make a bound


# ---------------------------------------------------------------------------------------------
# Bad sequential checks: each names the metric (or its field) and what to do


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"tolerance": None}, "spec.analysis.metrics.0: metric 'p95' (judge: sequential): give `tolerance`"),
        ({"maxIncrease": "5%"}, "metric 'p95' (judge: sequential): maxIncrease belong to judge: threshold"),
        ({"max": 1, "min": 0.5}, "metric 'p95' (judge: sequential): max, min belong to judge: threshold"),
        ({"maxDecrease": 0.1}, "maxDecrease belong to judge: threshold; the sequential judge's bound is `tolerance`"),
        ({"failureLimit": 1}, "metric 'p95' (judge: sequential): failureLimit and consecutive do not apply"),
        ({"consecutive": True}, "metric 'p95' (judge: sequential): failureLimit and consecutive do not apply"),
        ({"minSamples": 1}, "metric 'p95' (judge: sequential): minSamples must be at least 2"),
        ({"minSamples": -1}, "spec.analysis.metrics.0.minSamples: Input should be greater than or equal to 0"),
        ({"template": None, "query": 'sum(rate(x{version="{{ version }}"}[{{ interval }}]))'},
         "metric 'p95' (judge: sequential): needs a builtin template (latency_p50/p95/p99, error_rate, accuracy)"),
        ({"query": "up"}, "metric 'p95': give exactly one of 'template' or 'query'"),
        ({"judge": "bayesian"}, "spec.analysis.metrics.0.judge: Input should be 'threshold' or 'sequential' (got 'bayesian')"),
        ({"tolerance": "-5%"}, "spec.analysis.metrics.0.tolerance: invalid relative threshold '-5%'"),
        ({"tolerance": -0.1}, "spec.analysis.metrics.0.tolerance: relative threshold -0.1 must be a finite, non-negative"),
        ({"tolerance": "ten"}, "spec.analysis.metrics.0.tolerance: invalid relative threshold 'ten'"),
        ({"tolerance": True}, "spec.analysis.metrics.0.tolerance: expected a number or a string, not true/false"),
        ({"confidence": 0.5}, "spec.analysis.metrics.0.confidence: Input should be greater than 0.5"),
        ({"confidence": 0.2}, "spec.analysis.metrics.0.confidence: Input should be greater than 0.5"),
        ({"confidence": 1}, "spec.analysis.metrics.0.confidence: Input should be less than 1"),
        ({"confidence": 95}, "spec.analysis.metrics.0.confidence: Input should be less than 1"),
        ({"confidence": "high"}, "spec.analysis.metrics.0.confidence: Input should be a valid number"),
        ({"confidence": True}, "spec.analysis.metrics.0.confidence: expected a number or a string, not true/false"),
        ({"maxIntervals": 0}, "spec.analysis.metrics.0.maxIntervals: Input should be greater than or equal to 1"),
        ({"maxIntervals": 101}, "spec.analysis.metrics.0.maxIntervals: Input should be less than or equal to 100"),
        ({"maxIntervals": 2.5}, "spec.analysis.metrics.0.maxIntervals: Input should be a valid integer"),
        ({"maxIntervals": True}, "spec.analysis.metrics.0.maxIntervals: expected a number or a string, not true/false"),
        ({"maxIntervalls": 3}, "spec.analysis.metrics.0.maxIntervalls: unknown field"),
    ],
)  # fmt: skip
def test_bad_sequential_check_is_named(changes, message):
    assert message in rejected(document(changed(LATENCY, **changes)))


@pytest.mark.parametrize("judge", [None, "threshold"], ids=["default", "explicit"])
def test_threshold_checks_reject_the_sequential_settings(judge):
    base = changed({"name": "p95", "template": "latency_p95", "maxIncrease": "20%"}, judge=judge)
    for field, value in (("tolerance", "10%"), ("confidence", 0.99), ("maxIntervals", 3)):
        message = rejected(document(changed(base, **{field: value})))
        assert (
            f"spec.analysis.metrics.0: metric 'p95': {field} only apply with judge: sequential "
            "(this check's judge is threshold)"
        ) in message
    all_three = changed(base, tolerance="10%", confidence=0.99, maxIntervals=3)
    assert "metric 'p95': tolerance, confidence, maxIntervals only apply with judge: sequential" in rejected(document(all_three))


@pytest.mark.parametrize("provider", sorted(PROVIDERS))
@pytest.mark.parametrize("template", ["shadow_agreement", "brier_score", "prediction_psi", "label_lag_p95"])
def test_templates_without_judge_queries_are_rejected_listing_those_that_can(provider, template):
    message = rejected(document(changed(LATENCY, name="quality", template=template), provider=provider))
    assert (
        f"spec.analysis: metric 'quality': template {template!r} cannot be judged sequentially; "
        f"templates that can: {', '.join(JUDGED)}"
    ) in message


def test_unknown_template_is_named_before_the_judge():
    message = rejected(document(changed(LATENCY, template="latency_p90")))
    assert "metric 'p95': unknown template 'latency_p90' for provider 'local'" in message


# ---------------------------------------------------------------------------------------------
# progressDeadline must outlast maxIntervals windows of each phase the check runs in


def test_deadline_must_outlast_max_intervals_windows():
    # 3 x 30 s < 2 m: fine; 4 x 30 s = 2 m is not shorter, the deadline would cut the fourth look.
    assert parse_rollout(document(changed(LATENCY, maxIntervals=3)))
    message = rejected(document(changed(LATENCY, maxIntervals=4)))
    assert (
        "spec: metric 'p95': maxIntervals (4) x shadow.duration (30s) is not shorter than progressDeadline (2m)"
    ) in message
    # The canary interval alone: shadow disabled.
    message = rejected(document(changed(LATENCY, maxIntervals=4), shadow={"enabled": False}))
    assert "metric 'p95': maxIntervals (4) x canary.interval (30s) is not shorter than progressDeadline (2m)" in message


def test_deadline_rule_uses_each_phase_window():
    long_shadow = {"duration": "50s"}  # 3 x 50 s = 2m30s: too long; the canary's 3 x 30 s fits
    message = rejected(document(changed(LATENCY, maxIntervals=3), shadow=long_shadow))
    assert "metric 'p95': maxIntervals (3) x shadow.duration (50s) is not shorter than progressDeadline (2m)" in message
    # A check that does not run in the shadow phase is not held to the shadow's window.
    assert parse_rollout(document(changed(LATENCY, maxIntervals=3, phases=["canary"]), shadow=long_shadow))
    # Nor is one in a rollout without a shadow phase.
    assert parse_rollout(document(changed(LATENCY, maxIntervals=3), shadow={"enabled": False, "duration": "50s"}))


@pytest.mark.parametrize(
    ("shadow", "interval", "deadline", "shadow_looks", "canary_looks"),
    [
        ("5m", "1m", "10m", 1, 3),  # the defaults: one 5m shadow window ends before 10m, three 1m windows
        ("30s", "30s", "2m", 3, 3),
        ("50s", "30s", "2m", 2, 3),  # 2 x 50 s ends before 2m, a third would not
        ("30s", "1m", "1m30s", 2, 1),
    ],
)
def test_default_max_intervals_fits_in_the_deadline(shadow, interval, deadline, shadow_looks, canary_looks):
    doc = document(LATENCY, shadow={"duration": shadow}, canary={"steps": [10, 50], "interval": interval})
    doc["spec"]["progressDeadline"] = deadline
    spec = parse_rollout(doc).spec
    [check] = spec.analysis.metrics
    assert (spec.max_intervals(check, "shadow"), spec.max_intervals(check, "canary")) == (shadow_looks, canary_looks)
    # Given explicitly, it is the check's own: held to the deadline rule above instead.
    explicit = parse_rollout(document(changed(LATENCY, maxIntervals=2))).spec
    assert explicit.max_intervals(explicit.analysis.metrics[0], "shadow") == 2


def test_the_default_shadow_and_deadline_take_a_sequential_check():
    doc = document(LATENCY)
    del doc["spec"]["shadow"], doc["spec"]["progressDeadline"], doc["spec"]["canary"]
    spec = parse_rollout(doc).spec
    assert (spec.shadow.duration, spec.progress_deadline) == ("5m", "10m")


def test_shadow_only_template_is_held_to_the_shadow_window_only():
    # On KServe, accuracy comes from the shadow comparator: it never waits on canary intervals.
    slow_canary = {"steps": [10, 50], "interval": "1m"}  # 3 x 1m is not shorter than 2m
    accuracy = changed(LATENCY, name="acc", template="accuracy", tolerance="2%", maxIntervals=3)
    assert parse_rollout(document(accuracy, provider="knative", canary=slow_canary))
    message = rejected(document(changed(LATENCY, maxIntervals=3), provider="knative", canary=slow_canary))
    assert "metric 'p95': maxIntervals (3) x canary.interval (1m) is not shorter than progressDeadline (2m)" in message


def test_threshold_checks_are_not_held_to_max_intervals():
    threshold = {"name": "p95", "template": "latency_p95", "max": 1}
    assert parse_rollout(document(threshold, canary={"steps": [10], "interval": "1m"}, shadow={"enabled": False}))


# ---------------------------------------------------------------------------------------------
# The engine: when the step's analysis began


def sequential_spec() -> ModelRolloutSpec:
    return parse_rollout(document(LATENCY)).spec


def registry() -> RegistryView:
    return RegistryView(model_exists=True, stable_version="1", candidate_version="2")


class Ticks:
    """The engine driven tick by tick, as the runner does (status kept, time advanced)."""

    def __init__(self) -> None:
        self.spec = sequential_spec()
        self.status = RolloutStatus()
        self.now = T0

    def tick(self, seconds: float = 0.0, **observed: Any) -> RolloutStatus:
        self.now += timedelta(seconds=seconds)
        observed.setdefault("registry", registry())
        self.status = step(self.spec, self.status, Observation(**observed), self.now).status
        return self.status


READY = CandidateHealth(ready=True)


def verdicts(verdict: str) -> list[CheckResult]:
    return [CheckResult(name="p95", verdict=verdict, message=f"judged {verdict}")]  # type: ignore[arg-type]


def test_analysis_start_is_set_when_ready_and_cleared_by_each_step():
    t = Ticks()
    status = t.tick()
    assert status.phase is Phase.SHADOW and status.analysis_started_at is None
    status = t.tick(5, candidate=CandidateHealth(ready=False))
    assert status.analysis_started_at is None and analysed_seconds(status, t.now) is None
    status = t.tick(2, candidate=READY)
    ready_at = t.now
    assert status.analysis_started_at == ready_at == status.window_started_at

    # An inconclusive window: the next window starts, the step's analysis keeps its start.
    status = t.tick(30, candidate=READY, checks=verdicts("inconclusive"))
    assert status.phase is Phase.SHADOW
    assert status.window_started_at == t.now and status.analysis_started_at == ready_at
    assert analysed_seconds(status, t.now + timedelta(seconds=30)) == 60.0

    # The check passes: the first canary step starts, and its analysis waits for readiness again.
    status = t.tick(30, candidate=READY, checks=verdicts("pass"))
    assert (status.phase, status.step) == (Phase.CANARY, 0)
    assert status.analysis_started_at is None and analysed_seconds(status, t.now) is None
    status = t.tick(3, candidate=READY)
    assert status.analysis_started_at == t.now

    # Promoted a step by hand: the new step starts from nothing too, until the candidate is
    # reported ready at its new weight.
    status = t.tick(10, commands=[Command("promote")])
    assert (status.phase, status.step, status.analysis_started_at) == (Phase.CANARY, 1, None)
    status = t.tick(1, candidate=READY)
    assert status.analysis_started_at == t.now


def test_analysis_start_survives_a_status_round_trip():
    t = Ticks()
    t.tick()
    status = t.tick(1, candidate=READY)
    dumped = status.model_dump(by_alias=True, mode="json")
    assert dumped["analysisStartedAt"] == T0.replace(second=1).isoformat().replace("+00:00", "Z")
    assert RolloutStatus.model_validate(dumped).analysis_started_at == status.analysis_started_at
    assert RolloutStatus().analysis_started_at is None


def test_analysed_seconds():
    status = RolloutStatus(analysis_started_at=T0)
    assert analysed_seconds(status, T0 + timedelta(seconds=95.5)) == 95.5
    assert analysed_seconds(status, T0) == 0.0
    assert analysed_seconds(status, T0 - timedelta(seconds=3)) == 0.0  # a clock step back is not negative time
    assert analysed_seconds(RolloutStatus(), T0) is None


# ---------------------------------------------------------------------------------------------
# The analysis context: looks and the whole step's `{{ interval }}`


def context(window: float, analysed: float | None) -> AnalysisContext:
    return AnalysisContext("iris", "default", "iris", "1", "2", "canary", window, analysed_seconds=analysed)


@pytest.mark.parametrize(
    ("window", "analysed", "looks"),
    [
        (60, None, 1),  # outside an analysed step: one window
        (60, 0, 1),
        (60, 30, 1),
        (60, 61, 1),  # the first look, a tick late
        (60, 118, 1),  # not yet two whole windows
        (60, 121, 2),
        (60, 183, 3),
        (60, 199, 3),  # three windows each a few seconds late: still three, not rounded up to four
        (60, 600, 10),
        (0, 600, 1),  # no window length: never divide by it
    ],
)
def test_looks_counts_the_windows_judged(window, analysed, looks):
    assert context(window, analysed).looks == looks


def test_whole_step_interval_is_the_step_so_far():
    ctx = context(30, 95)
    assert ctx.variables("2", "canary")["interval"] == "30s"
    assert ctx.variables("2", "canary", whole_step=True)["interval"] == "1m35s"
    assert ctx.variables("1", "stable", whole_step=True) == {
        "rollout": "iris", "namespace": "default", "model": "iris", "stable_version": "1",
        "candidate_version": "2", "version": "1", "role": "stable", "interval": "1m35s",
    }  # fmt: skip
    # Without an analysis start the whole step is one window.
    assert context(30, None).variables("2", "canary", whole_step=True)["interval"] == "30s"
    # Just after the start: still a range Prometheus accepts, never "0s".
    assert context(30, 0.2).variables("2", "canary", whole_step=True)["interval"] == "200ms"
    assert context(30, 0).variables("2", "canary", whole_step=True)["interval"] == "1ms"
