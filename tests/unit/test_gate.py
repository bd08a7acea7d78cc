"""The offline gate's spec and its verdicts, with plain values (the MLflow side is in
tests/integration/test_offline_gate.py); and the spec of the post-promotion watch."""

from __future__ import annotations

import math

import pytest

from canary.decision.gate import OfflineMetrics, describe_bounds, evaluate, versions_needed
from canary.decision.spec import GateSpec, ModelRolloutSpec, SpecError, parse_rollout


def rollout(**spec):
    return parse_rollout(
        {
            "apiVersion": "modelrollout.io/v1alpha1",
            "kind": "ModelRollout",
            "metadata": {"name": "r"},
            "spec": {"model": {"name": "m"}, **spec},
        }
    )


def gate(*metrics, **options) -> GateSpec:
    return GateSpec.model_validate({"metrics": list(metrics), **options})


def one(spec: GateSpec, candidate: dict, stable: dict | None = None):
    metrics = {"2": OfflineMetrics(candidate, "run aaa")}
    if stable is not None:
        metrics["1"] = OfflineMetrics(stable, "run bbb")
    results = evaluate(spec, "2", "1", metrics)
    assert results is not None and len(results) == 1
    return results[0]


# ---------------------------------------------------------------------------------------------
# The spec


def test_the_readme_gate_parses():
    spec = rollout(
        gate={
            "metrics": [
                {"name": "val_accuracy", "maxDrop": 0.01},
                {"name": "val_rmse", "maxIncrease": "5%"},
                {"name": "auc", "min": 0.8, "missing": "pass"},
            ]
        }
    ).spec
    assert spec.gate is not None and spec.gate.missing == "fail"
    assert [m.uses_baseline for m in spec.gate.metrics] == [True, True, False]
    assert spec.gate.missing_for(spec.gate.metrics[2]) == "pass"
    assert spec.gate.missing_for(spec.gate.metrics[0]) == "fail"


@pytest.mark.parametrize(
    ("gate_doc", "message"),
    [
        # A bare number is refused for relative bounds: it would mean 1 % to the analysis checks
        # and one point to a data scientist.
        ({"metrics": [{"name": "acc", "maxDecrease": 0.01}]}, "gate.metrics.0.maxDecrease: 0.01 is ambiguous in the gate: write a percentage such as '1%'"),
        ({"metrics": [{"name": "acc", "maxDecrease": 0.01}]}, "or maxDrop: 0.01 for an absolute amount"),
        ({"metrics": [{"name": "rmse", "maxIncrease": 1}]}, "or maxRise: 1 for an absolute amount"),
        ({"metrics": [{"name": "acc", "maxDrop": "1%"}]}, "maxDrop: '1%': maxDrop is an absolute number in the metric's units; write maxDecrease: '1%'"),
        ({"metrics": [{"name": "acc", "min": "80%"}]}, "min: '80%': min is an absolute number"),
        ({"metrics": [{"name": "acc", "maxIncrease": "five%"}]}, "invalid relative bound 'five%'"),
        ({"metrics": [{"name": "acc", "maxIncrease": "-5%"}]}, "invalid relative bound '-5%'"),
        ({"metrics": [{"name": "acc", "maxDrop": -0.1}]}, "maxDrop: Input should be greater than or equal to 0"),
        ({"metrics": [{"name": "acc", "maxRise": True}]}, "maxRise: expected a number, not true/false"),
        ({"metrics": [{"name": "acc", "min": "nan"}]}, "min: Input should be a finite number"),
        ({"metrics": [{"name": "acc"}]}, "gate metric 'acc': give at least one bound"),
        ({"metrics": [{"name": "acc", "min": 0.9, "max": 0.8}]}, "min (0.9) is above max (0.8)"),
        ({"metrics": [{"name": "acc", "min": 0.9}, {"name": "acc", "max": 1}]}, "gate metric 'acc' appears twice"),
        ({"metrics": [{"name": "acc", "min": 0.9, "maxDrp": 0.1}]}, "gate.metrics.0.maxDrp: unknown field"),
        ({"metrics": [{"name": "", "min": 0.9}]}, "gate.metrics.0.name"),
        ({"metrics": [{"name": "acc", "min": 0.9}], "missing": "skip"}, "gate.missing: Input should be 'fail' or 'pass' (got 'skip')"),
        ({"metrics": [{"name": "acc", "min": 0.9, "missing": "ignore"}]}, "metrics.0.missing: Input should be 'fail' or 'pass'"),
        ({"metrics": []}, "gate.metrics: List should have at least 1 item"),
        ({}, "gate.metrics: Field required"),
        ({"metrics": [{"name": "acc", "min": 0.9}], "onMissing": "pass"}, "gate.onMissing: unknown field"),
    ],
)
def test_bad_gates_are_refused_naming_the_field(gate_doc, message):
    with pytest.raises(SpecError) as err:
        rollout(gate=gate_doc)
    assert message in str(err.value)


WATCHED = {"metrics": [{"name": "errors", "template": "error_rate", "max": 0.01}]}


def test_post_promotion_watch_parses():
    spec = rollout(postPromotion={"watch": "10m"}, analysis=WATCHED).spec
    assert spec.post_promotion is not None and spec.post_promotion.watch == "10m"


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"postPromotion": {"watch": "30s"}, "analysis": WATCHED}, "postPromotion.watch (30s) is shorter than canary.interval (1m)"),
        ({"postPromotion": {"watch": "ten minutes"}, "analysis": WATCHED}, "postPromotion.watch: invalid duration 'ten minutes'"),
        ({"postPromotion": {}, "analysis": WATCHED}, "postPromotion.watch: Field required"),
        ({"postPromotion": {"watch": "5m", "undo": True}, "analysis": WATCHED}, "postPromotion.undo: unknown field"),
        # Nothing the watch could judge: relative checks and shadow-only checks do not run after promotion.
        (
            {
                "postPromotion": {"watch": "5m"},
                "analysis": {
                    "metrics": [
                        {"name": "p95", "template": "latency_p95", "maxIncrease": "20%"},
                        {"name": "agree", "template": "shadow_agreement", "min": 0.9},
                    ]
                },
            },
            "postPromotion.watch needs a check to run",
        ),
        ({"postPromotion": {"watch": "5m"}}, "postPromotion.watch needs a check to run"),
    ],
)
def test_bad_watches_are_refused(doc, message):
    with pytest.raises(SpecError) as err:
        rollout(**doc)
    assert message in str(err.value)


def test_watch_checks_keep_absolute_bounds_of_canary_checks_only():
    spec = ModelRolloutSpec.model_validate(
        {
            "model": {"name": "m"},
            "analysis": {
                "metrics": [
                    {"name": "p95", "template": "latency_p95", "maxIncrease": "20%", "max": 0.5, "failureLimit": 1},
                    {"name": "p99", "template": "latency_p99", "maxIncrease": "20%"},
                    {"name": "agree", "template": "shadow_agreement", "min": 0.9},
                    {"name": "acc", "template": "accuracy", "maxDecrease": "2%", "min": 0.8, "phases": ["shadow"]},
                    {"name": "errors", "template": "error_rate", "max": 0.01},
                ]
            },
        }
    )
    checks = spec.watch_checks()
    assert [c.name for c in checks] == ["p95", "errors"]
    p95 = checks[0]
    assert (p95.max, p95.max_increase, p95.max_decrease, p95.failure_limit) == (0.5, None, None, 1)
    # The spec's own checks are untouched.
    assert spec.analysis.metrics[0].max_increase == "20%"


# ---------------------------------------------------------------------------------------------
# Verdicts


def test_versions_needed_only_include_the_stable_for_relative_bounds():
    assert versions_needed(gate({"name": "auc", "min": 0.8}), "2", "1") == ("2",)
    assert versions_needed(gate({"name": "auc", "min": 0.8}, {"name": "acc", "maxDrop": 0.01}), "2", "1") == ("2", "1")
    assert versions_needed(gate({"name": "acc", "maxDrop": 0.01}), "2", None) == ("2",)


def test_max_drop_is_absolute_and_its_bound_is_allowed():
    spec = gate({"name": "val_accuracy", "maxDrop": 0.01})
    # 0.95 - 0.94 is 0.010000000000000009 in binary: still "a drop of 0.01", so allowed.
    exactly = one(spec, {"val_accuracy": 0.94}, {"val_accuracy": 0.95})
    assert exactly.verdict == "pass", exactly.message
    assert exactly.threshold == ">= stable -0.01 (0.94)"
    worse = one(spec, {"val_accuracy": 0.93}, {"val_accuracy": 0.95})
    assert worse.verdict == "fail"
    assert worse.message == "val_accuracy 0.93 on v2 vs 0.95 on v1 (-0.02, maxDrop 0.01)"
    assert (worse.candidate, worse.baseline) == (0.93, 0.95)
    assert one(spec, {"val_accuracy": 0.99}, {"val_accuracy": 0.95}).verdict == "pass"


def test_max_rise_is_absolute():
    spec = gate({"name": "val_rmse", "maxRise": 0.05})
    assert one(spec, {"val_rmse": 0.45}, {"val_rmse": 0.40}).verdict == "pass"
    failed = one(spec, {"val_rmse": 0.46}, {"val_rmse": 0.40})
    assert failed.verdict == "fail" and "+0.06, maxRise 0.05" in failed.message


def test_max_increase_is_relative_to_the_stables_value():
    spec = gate({"name": "val_rmse", "maxIncrease": "5%"})
    assert one(spec, {"val_rmse": 0.42}, {"val_rmse": 0.40}).verdict == "pass"  # exactly +5 %
    failed = one(spec, {"val_rmse": 0.43}, {"val_rmse": 0.40})
    assert failed.verdict == "fail" and "(+7.5%, maxIncrease 5%)" in failed.message
    assert failed.threshold == "<= stable +5% (0.42)"


def test_max_decrease_is_relative_to_the_magnitude_of_a_negative_stable():
    spec = gate({"name": "log_likelihood", "maxDecrease": "10%"})
    # Stable -1.0: 10 % of its magnitude allows down to -1.1, never "up to -0.9".
    assert one(spec, {"log_likelihood": -1.1}, {"log_likelihood": -1.0}).verdict == "pass"
    failed = one(spec, {"log_likelihood": -1.2}, {"log_likelihood": -1.0})
    assert failed.verdict == "fail" and "-20.0%, maxDecrease 10%" in failed.message


def test_relative_bounds_from_a_stable_of_zero_allow_no_change():
    spec = gate({"name": "errors", "maxIncrease": "50%"})
    assert one(spec, {"errors": 0.0}, {"errors": 0.0}).verdict == "pass"
    failed = one(spec, {"errors": 0.001}, {"errors": 0.0})
    assert failed.verdict == "fail" and "+0.001 from 0" in failed.message


def test_min_and_max_need_no_stable_metrics():
    spec = gate({"name": "auc", "min": 0.8, "max": 0.99})
    results = evaluate(spec, "2", "1", {"2": OfflineMetrics({"auc": 0.79})})
    assert results is not None
    assert results[0].verdict == "fail" and results[0].message == "auc 0.79 on v2 (below min 0.8)"
    assert one(spec, {"auc": 0.995}).message == "auc 0.995 on v2 (above max 0.99)"
    assert one(spec, {"auc": 0.9}).verdict == "pass"


def test_every_bound_of_a_metric_must_hold():
    spec = gate({"name": "acc", "min": 0.9, "maxDrop": 0.01})
    failed = one(spec, {"acc": 0.85}, {"acc": 0.95})
    assert failed.verdict == "fail" and "below min 0.9" in failed.message and "maxDrop 0.01" in failed.message


def test_missing_candidate_metric_fails_naming_metric_version_and_source():
    spec = gate({"name": "val_accuracy", "maxDrop": 0.01})
    failed = one(spec, {"other": 1.0}, {"val_accuracy": 0.95})
    assert failed.verdict == "fail"
    assert failed.message == "val_accuracy not logged for candidate v2 (run aaa); missing=fail"


def test_missing_stable_metric_fails_too():
    spec = gate({"name": "val_accuracy", "maxDrop": 0.01})
    failed = one(spec, {"val_accuracy": 0.95}, {})
    assert failed.verdict == "fail" and "not logged for stable v1 (run bbb)" in failed.message


def test_missing_on_both_sides_names_both():
    failed = one(gate({"name": "acc", "maxDrop": 0.01}), {}, {})
    assert "not logged for candidate v2 (run aaa) nor stable v1 (run bbb)" in failed.message


def test_missing_pass_skips_the_metric_and_a_metric_may_override_the_gate():
    skipped = one(gate({"name": "acc", "maxDrop": 0.01}, missing="pass"), {}, {"acc": 0.9})
    assert skipped.verdict == "pass" and "missing=pass" in skipped.message
    strict = one(gate({"name": "acc", "maxDrop": 0.01, "missing": "fail"}, missing="pass"), {}, {"acc": 0.9})
    assert strict.verdict == "fail"
    lenient = one(gate({"name": "acc", "maxDrop": 0.01, "missing": "pass"}), {}, {"acc": 0.9})
    assert lenient.verdict == "pass"


def test_nan_fails_whatever_the_missing_policy():
    spec = gate({"name": "acc", "min": 0.5}, missing="pass")
    failed = one(spec, {"acc": math.nan})
    assert failed.verdict == "fail" and failed.message == "acc is NaN for the candidate"
    stable_nan = one(gate({"name": "acc", "maxDrop": 0.1}), {"acc": 0.9}, {"acc": math.nan})
    assert stable_nan.verdict == "fail" and "NaN for the stable" in stable_nan.message


def test_infinite_values_compare_as_numbers():
    assert one(gate({"name": "rmse", "max": 1.0}), {"rmse": math.inf}).verdict == "fail"
    assert one(gate({"name": "rmse", "maxRise": 0.1}), {"rmse": 5.0}, {"rmse": math.inf}).verdict == "pass"


def test_no_verdict_without_the_metrics_of_a_needed_version():
    spec = gate({"name": "acc", "maxDrop": 0.01})
    assert evaluate(spec, "2", "1", {}) is None
    assert evaluate(spec, "2", "1", {"2": OfflineMetrics({"acc": 0.9})}) is None  # the stable was not read
    assert evaluate(spec, "2", "1", {"1": OfflineMetrics({"acc": 0.9})}) is None


def test_no_stable_version_counts_as_missing():
    spec = gate({"name": "acc", "maxDrop": 0.01})
    (result,) = evaluate(spec, "2", None, {"2": OfflineMetrics({"acc": 0.9})}) or []
    assert result.verdict == "fail" and "the stable (no stable version)" in result.message


def test_results_keep_the_spec_order_and_every_metric():
    spec = gate({"name": "b", "min": 0}, {"name": "a", "max": 1})
    results = evaluate(spec, "2", "1", {"2": OfflineMetrics({"a": 0.5, "b": 0.5})}) or []
    assert [r.name for r in results] == ["b", "a"]


def test_describe_bounds():
    spec = gate({"name": "acc", "min": 0.8, "max": 1, "maxDrop": 0.01, "maxRise": 0.2, "maxDecrease": "2%", "maxIncrease": "10%"})
    metric = spec.metrics[0]
    assert describe_bounds(metric) == (
        ">= 0.8, <= 1, >= stable -0.01, <= stable +0.2, >= stable -2%, <= stable +10%"
    )
    assert describe_bounds(metric, 0.5) == (
        ">= 0.8, <= 1, >= stable -0.01 (0.49), <= stable +0.2 (0.7), >= stable -2% (0.49), <= stable +10% (0.55)"
    )


# ---------------------------------------------------------------------------------------------
# How the gate reads in `modelrollout status` / `kubectl modelrollout status`


def rendered(status) -> str:
    from rich.console import Console

    from controller.cli.status_view import render_status

    console = Console(record=True, width=200)
    console.print(render_status("r", status, []))
    return console.export_text()


def test_status_shows_the_gate_verdicts_and_the_rejection():
    from canary.decision.spec import MetricStatus, Phase, RolloutStatus

    status = RolloutStatus(
        phase=Phase.ROLLED_BACK,
        rollback_kind="rejected",
        stable_version="1",
        candidate_version="2",
        message="offline gate failed: val_accuracy 0.9 on v2 vs 0.95 on v1 (-0.05, maxDrop 0.01)",
        gate_checks=[
            MetricStatus(name="val_accuracy", verdict="fail", candidate=0.9, baseline=0.95, threshold=">= stable -0.01 (0.94)"),
            MetricStatus(name="auc", verdict="pass", candidate=0.9, threshold=">= 0.8"),
        ],
    )
    text = rendered(status)
    assert "RolledBack (rejected by the offline gate)" in text
    assert "offline gate (MLflow metrics)" in text
    assert "val_accuracy  fail" in text and ">= stable -0.01 (0.94)" in text
    assert "failures" not in text  # the canary checks' table (with its failures column) is not shown: none ran
    assert "Gating (offline metrics; not deployed)" in rendered(RolloutStatus(phase=Phase.GATING, candidate_version="2"))
    assert "Watching (promoted; a breach undoes it)" in rendered(RolloutStatus(phase=Phase.WATCHING, stable_version="2"))
