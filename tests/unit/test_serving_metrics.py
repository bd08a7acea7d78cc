"""The exported quality series: what each observation adds, series at 0, the class cap."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from canary.traffic.calibration import Calibrated
from canary.traffic.feedback import EVICTED, EXPIRED, Score
from canary.traffic.serving_metrics import (
    OTHER_CLASS,
    PREDICTION_VALUE_BUCKETS,
    MetricFamilies,
    ServingMetrics,
    check_buckets,
    class_label,
)

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def samples(metrics: ServingMetrics) -> Samples:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(metrics.exposition().decode())
        for s in family.samples
    }


def value(metrics: ServingMetrics, name: str, version: str = "1", role: str = "stable", **extra: str) -> float | None:
    labels = {"rollout": "r", "model": "m", "version": version, "role": role, **extra}
    return samples(metrics).get((name, frozenset(labels.items())))


def test_quality_series_exist_at_zero_once_prepared() -> None:
    metrics = ServingMetrics("r")
    metrics.prepare("m", "1", "stable")
    metrics.prepare("m", "2", "shadow")
    for version, role in (("1", "stable"), ("2", "shadow")):
        for name, extra in (
            ("modelrollout_feedback_label_lag_seconds_count", {}),
            ("modelrollout_feedback_label_lag_seconds_bucket", {"le": "60.0"}),
            ("modelrollout_feedback_late_labels_total", {"reason": EXPIRED}),
            ("modelrollout_feedback_late_labels_total", {"reason": EVICTED}),
            ("modelrollout_feedback_brier_score_sum", {}),
            ("modelrollout_feedback_brier_score_count", {}),
            ("modelrollout_feedback_calibration_total", {"bin": "0.1"}),
            ("modelrollout_feedback_calibration_confidence_total", {"bin": "1.0"}),
            ("modelrollout_feedback_calibration_correct_total", {"bin": "0.5"}),
            ("modelrollout_predictions_total", {"class": OTHER_CLASS}),
            ("modelrollout_prediction_value_count", {}),
            ("modelrollout_prediction_value_bucket", {"le": "-0.01"}),
        ):
            assert value(metrics, name, version, role, **extra) == 0.0, (name, version, extra)
    shadow_only = {"rollout": "r", "model": "m", "version": "2"}
    assert samples(metrics)[("modelrollout_shadow_relative_error_count", frozenset(shadow_only.items()))] == 0.0
    assert ("modelrollout_shadow_relative_error_count", frozenset({**shadow_only, "version": "1"}.items())) not in samples(metrics)


def test_predictions_are_counted_by_class_and_a_new_class_is_created_for_every_version() -> None:
    metrics = ServingMetrics("r")
    metrics.prepare("m", "1", "stable")
    metrics.prepare("m", "2", "canary")
    metrics.observe_predictions("m", "1", "stable", [0, 2, 2, [0.1, 0.9], {"label": "x"}, True, None, [5, 6]])
    assert value(metrics, "modelrollout_predictions_total", **{"class": "2"}) == 2
    assert value(metrics, "modelrollout_predictions_total", **{"class": "1"}) == 1  # argmax of probabilities
    assert value(metrics, "modelrollout_predictions_total", **{"class": "x"}) == 1
    assert value(metrics, "modelrollout_predictions_total", **{"class": "true"}) == 1
    # The canary has not predicted any of them yet, but its series exist at 0 for increase().
    for name in ("0", "1", "2", "x", "true"):
        assert value(metrics, "modelrollout_predictions_total", "2", "canary", **{"class": name}) == 0.0
    # A version prepared later gets the classes known by then.
    metrics.prepare("m", "3", "canary")
    assert value(metrics, "modelrollout_predictions_total", "3", "canary", **{"class": "x"}) == 0.0
    assert metrics.classes("m") == ["0", "2", "1", "x", "true"]


def test_distinct_classes_are_capped_per_rollout_and_model() -> None:
    families = MetricFamilies(max_classes=3)
    metrics = ServingMetrics("r", families)
    metrics.prepare("m", "1", "stable")
    metrics.observe_predictions("m", "1", "stable", [f"c{i}" for i in range(10)] + ["c0", "c9", "z" * 65])
    counted = {
        dict(labels)["class"]: v
        for (name, labels), v in samples(metrics).items()
        if name == "modelrollout_predictions_total"
    }
    assert counted == {"c0": 2, "c1": 1, "c2": 1, OTHER_CLASS: 9}
    # A comparator re-creates ServingMetrics when the candidate changes: the cap holds across them.
    again = ServingMetrics("r", families)
    again.prepare("m", "2", "shadow")
    again.observe_predictions("m", "2", "shadow", ["c5", "c1"])
    assert value(again, "modelrollout_predictions_total", "2", "shadow", **{"class": OTHER_CLASS}) == 1
    assert value(again, "modelrollout_predictions_total", "2", "shadow", **{"class": "c1"}) == 1
    # Another rollout in the same exposition has its own classes.
    other = ServingMetrics("other", families)
    other.prepare("m", "1", "stable")
    other.observe_predictions("m", "1", "stable", ["c7"])
    assert other.classes("m") == ["c7"]


def test_regression_values_go_to_the_value_histogram() -> None:
    metrics = ServingMetrics("r", MetricFamilies(prediction_buckets=(0.0, 1.0, 10.0)))
    metrics.prepare("m", "1", "stable")
    metrics.observe_predictions("m", "1", "stable", [-3.0, 0.5, 0.7, 5.0, 50.0, float("nan")])
    cumulative = [value(metrics, "modelrollout_prediction_value_bucket", le=le) for le in ("0.0", "1.0", "10.0", "+Inf")]
    assert cumulative == [1, 3, 4, 5]
    assert value(metrics, "modelrollout_prediction_value_sum") == pytest.approx(53.2)
    assert value(metrics, "modelrollout_predictions_total", **{"class": OTHER_CLASS}) == 0


def test_default_value_buckets_are_a_symmetric_1_2_5_ladder() -> None:
    assert len(PREDICTION_VALUE_BUCKETS) == 49
    assert PREDICTION_VALUE_BUCKETS[24] == 0.0
    assert PREDICTION_VALUE_BUCKETS[25:31] == (0.01, 0.02, 0.05, 0.1, 0.2, 0.5)
    assert PREDICTION_VALUE_BUCKETS[:24] == tuple(-b for b in reversed(PREDICTION_VALUE_BUCKETS[25:]))
    assert PREDICTION_VALUE_BUCKETS[-1] == 500000.0


@pytest.mark.parametrize(("bounds", "message"), [((), "at least one"), ((1, 1), "increase"), ((1, float("inf")), "finite")])
def test_bad_buckets_are_refused(bounds: tuple, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        check_buckets(bounds)
    with pytest.raises(ValueError, match=message):
        MetricFamilies(prediction_buckets=bounds)


def test_class_labels() -> None:
    assert [class_label(v) for v in (3, "setosa", False, "y" * 64)] == ["3", "setosa", "false", "y" * 64]
    assert class_label("y" * 65) == OTHER_CLASS
    with pytest.raises(ValueError):
        MetricFamilies(max_classes=0)


def test_a_score_adds_accuracy_lag_and_calibration() -> None:
    metrics = ServingMetrics("r")
    metrics.prepare("m", "1", "stable")
    calibration = (Calibrated(0.14, 0.7, True), Calibrated(0.06, 0.8, True), Calibrated(0.74, 0.4, False))
    metrics.observe_score(Score("m", "1", "stable", 3, 2, lag_seconds=75.0, calibration=calibration))
    assert value(metrics, "modelrollout_feedback_total") == 3
    assert value(metrics, "modelrollout_feedback_correct_total") == 2
    assert value(metrics, "modelrollout_feedback_label_lag_seconds_count") == 1
    assert value(metrics, "modelrollout_feedback_label_lag_seconds_bucket", le="60.0") == 0
    assert value(metrics, "modelrollout_feedback_label_lag_seconds_bucket", le="120.0") == 1
    assert value(metrics, "modelrollout_feedback_brier_score_sum") == pytest.approx(0.94)
    assert value(metrics, "modelrollout_feedback_brier_score_count") == 3
    assert value(metrics, "modelrollout_feedback_calibration_total", bin="0.7") == 1
    assert value(metrics, "modelrollout_feedback_calibration_confidence_total", bin="0.8") == pytest.approx(0.8)
    assert value(metrics, "modelrollout_feedback_calibration_correct_total", bin="0.4") == 0
    assert value(metrics, "modelrollout_feedback_calibration_total", bin="0.4") == 1


def test_a_late_score_counts_late_labels_and_lag_only() -> None:
    metrics = ServingMetrics("r")
    metrics.prepare("m", "1", "stable")
    metrics.observe_score(Score("m", "1", "stable", 4, 0, lag_seconds=4000.0, late=EXPIRED))
    assert value(metrics, "modelrollout_feedback_late_labels_total", reason=EXPIRED) == 4
    assert value(metrics, "modelrollout_feedback_late_labels_total", reason=EVICTED) == 0
    assert value(metrics, "modelrollout_feedback_total") == 0
    assert value(metrics, "modelrollout_feedback_label_lag_seconds_bucket", le="3600.0") == 0
    assert value(metrics, "modelrollout_feedback_label_lag_seconds_bucket", le="7200.0") == 1


def test_relative_errors_are_observed_per_shadow_version() -> None:
    metrics = ServingMetrics("r")
    metrics.prepare("m", "2", "shadow")
    metrics.observe_relative_errors("m", "2", [0.0, 0.004, 0.03, 2.0])
    got = samples(metrics)
    base = {"rollout": "r", "model": "m", "version": "2"}

    def bucket(le: str) -> float:
        return got[("modelrollout_shadow_relative_error_bucket", frozenset({**base, "le": le}.items()))]

    assert [bucket(le) for le in ("1e-06", "0.005", "0.05", "1.0", "2.0", "+Inf")] == [1, 2, 3, 3, 4, 4]
