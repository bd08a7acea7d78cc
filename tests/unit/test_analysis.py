"""Threshold rules of a check, judged on plain values (no Prometheus needed)."""

from __future__ import annotations

import pytest

from canary.decision.analysis import AnalysisContext, Measurement, applicable_checks, describe_thresholds, judge
from canary.decision.metrics import render
from canary.decision.spec import MetricCheck, ModelRolloutSpec
from canary.decision.templates import LOCAL


def check(**fields) -> MetricCheck:
    fields.setdefault("name", "m")
    fields.setdefault("template", "latency_p95")
    fields.setdefault("minSamples", 10)
    return MetricCheck.model_validate(fields)


def ok(candidate, baseline=None, samples=100.0):
    return Measurement(candidate=candidate, baseline=baseline, candidate_samples=samples, baseline_samples=samples)


@pytest.mark.parametrize(
    ("fields", "candidate", "baseline", "verdict"),
    [
        ({"max": 0.5}, 0.5, None, "pass"),
        ({"max": 0.5}, 0.51, None, "fail"),
        ({"min": 0.9}, 0.9, None, "pass"),
        ({"min": 0.9}, 0.89, None, "fail"),
        ({"maxIncrease": "50%"}, 0.15, 0.10, "pass"),
        ({"maxIncrease": "50%"}, 0.16, 0.10, "fail"),
        ({"maxIncrease": 0.5}, 0.16, 0.10, "fail"),
        ({"maxDecrease": "2%"}, 0.98, 1.0, "pass"),
        ({"maxDecrease": "2%"}, 0.97, 1.0, "fail"),
        ({"maxIncrease": "10%"}, 0.0, 0.0, "pass"),  # nothing to nothing
        ({"maxIncrease": "10%"}, 0.01, 0.0, "fail"),  # any rise from zero is unbounded
        ({"max": 1.0, "maxIncrease": "10%"}, 0.5, 0.1, "fail"),  # every threshold must hold
    ],
)
def test_thresholds(fields, candidate, baseline, verdict):
    assert judge(check(**fields), ok(candidate, baseline)).verdict == verdict


def test_failure_message_names_values_and_threshold():
    result = judge(check(maxIncrease="50%"), ok(0.3, 0.1))
    assert result.verdict == "fail"
    assert "0.3 vs stable 0.1" in result.message and "+200%" in result.message and "maxIncrease 50%" in result.message
    assert result.threshold == "<= stable +50% (0.15)"


@pytest.mark.parametrize(("policy", "verdict"), [("fail", "fail"), ("pass", "pass"), ("inconclusive", "inconclusive")])
def test_no_data_follows_policy(policy, verdict):
    result = judge(check(max=1, noData=policy), Measurement(candidate=None, candidate_samples=None))
    assert result.verdict == verdict and "no data" in result.message


def test_too_few_samples_is_no_data_even_with_a_value():
    result = judge(check(max=1, minSamples=20), ok(0.1, samples=19))
    assert result.verdict == "inconclusive" and "19 samples" in result.message


def test_baseline_samples_only_matter_for_relative_thresholds():
    m = Measurement(candidate=0.1, baseline=0.1, candidate_samples=50, baseline_samples=2)
    assert judge(check(max=1), m).verdict == "pass"
    assert judge(check(maxIncrease="10%"), m).verdict == "inconclusive"


def test_missing_baseline_value_is_no_data_for_relative():
    result = judge(check(maxIncrease="10%"), Measurement(candidate=0.1, baseline=None, candidate_samples=50, baseline_samples=50))
    assert result.verdict == "inconclusive" and "stable baseline" in result.message


def test_describe_thresholds_lists_all():
    assert describe_thresholds(check(max=2, min=1)) == "<= 2, >= 1"


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ({"maxIncrease": "ten"}, "invalid relative threshold"),
        ({"maxIncrease": "-5%"}, "invalid relative threshold"),
        ({"max": 1, "min": 2}, "min (2.0) is above max (1.0)"),
        ({}, "at least one threshold"),
        ({"max": 1, "query": "up"}, "exactly one of 'template' or 'query'"),
    ],
)
def test_bad_checks_are_rejected_with_the_cause(bad, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        check(**bad)


def test_every_local_template_renders_for_both_roles():
    ctx = AnalysisContext("r", "default", "iris", "1", "2", "shadow", 30)
    for name, template in LOCAL.items():
        for version, role in (("2", "shadow"), ("1", "stable")):
            text = render(template.query, ctx.variables(version, role))
            assert "{{" not in text and "[30s]" in text, name
            assert f'version="{version}"' in text


def test_phases_default_from_template_and_can_be_overridden():
    spec = ModelRolloutSpec.model_validate(
        {
            "model": {"name": "iris"},
            "analysis": {
                "metrics": [
                    {"name": "agree", "template": "shadow_agreement", "min": 0.9},
                    {"name": "p95", "template": "latency_p95", "max": 1},
                    {"name": "acc", "template": "accuracy", "min": 0.8, "phases": ["canary"]},
                ]
            },
        }
    )
    assert [c.name for c in applicable_checks(spec, "shadow")] == ["agree", "p95"]
    assert [c.name for c in applicable_checks(spec, "canary")] == ["p95", "acc"]


class RecordingProvider:
    """Answers every query with 1 and keeps the PromQL it was asked."""

    def __init__(self) -> None:
        self.queries: list[str] = []

    def query_value(self, promql: str) -> float | None:
        self.queries.append(promql)
        return 1.0

    def query_vector(self, promql: str) -> list[tuple[dict[str, str], float]]:
        self.queries.append(promql)
        return [({}, 1.0)]


@pytest.mark.parametrize(
    ("template", "phase", "baseline_role"),
    [
        # Timed on the request path: in the shadow phase, the baseline server beside the shadow.
        ("latency_p95", "shadow", "baseline"),
        ("error_rate", "shadow", "baseline"),
        # In the canary phase both sides are client requests through the same router.
        ("latency_p95", "canary", "stable"),
        ("error_rate", "canary", "stable"),
        # Accuracy scores what each version told the client (or the shadow's copy): the stable's answers.
        ("accuracy", "shadow", "stable"),
    ],
)
def test_the_baseline_side_is_measured_where_the_candidate_is(template, phase, baseline_role):
    from canary.decision.analysis import measure

    spec = ModelRolloutSpec.model_validate(
        {"model": {"name": "iris"}, "analysis": {"metrics": [{"name": "m", "template": template, "maxIncrease": "10%"}]}}
    )
    provider = RecordingProvider()
    measure(spec, spec.analysis.metrics[0], AnalysisContext("r", "default", "iris", "1", "2", phase, 30), provider)
    baseline_queries = [q for q in provider.queries if 'version="1"' in q]
    assert baseline_queries and all(f'role="{baseline_role}"' in q for q in baseline_queries)
    assert all(f'role="{phase}"' in q for q in provider.queries if 'version="2"' in q)
