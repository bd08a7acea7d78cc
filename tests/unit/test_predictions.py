"""Per-instance predictions from V1/V2 answers, and when two predictions agree."""

from __future__ import annotations

import json
import math

import pytest

from canary.decision.tolerance import Tolerance
from canary.traffic.predictions import (
    MAX_RELATIVE_ERROR,
    Protocol,
    count_agreements,
    instance_probabilities,
    instances_from_body,
    predicted_label,
    predictions_agree,
    probability_vector,
    regression_value,
    relative_error,
    relative_errors,
    v1_instances,
    v2_instances,
    values_agree,
)


def test_v1_predictions_are_the_instances() -> None:
    assert v1_instances({"predictions": [0, 2, 1]}) == [0, 2, 1]
    assert v1_instances({"predictions": [[0.1, 0.9], [0.8, 0.2]]}) == [[0.1, 0.9], [0.8, 0.2]]
    for not_v1 in ({"outputs": []}, {"predictions": 3}, [1, 2], None, "x"):
        assert v1_instances(not_v1) is None


def test_v2_one_output_splits_on_the_first_dimension() -> None:
    flat = {"outputs": [{"name": "p", "shape": [3], "datatype": "INT64", "data": [0, 2, 1]}]}
    assert v2_instances(flat) == [0, 2, 1]
    probabilities = {"outputs": [{"name": "p", "shape": [2, 3], "datatype": "FP64", "data": [1, 0, 0, 0, 0.5, 0.5]}]}
    assert v2_instances(probabilities) == [[1, 0, 0], [0, 0.5, 0.5]]
    nested = {"outputs": [{"name": "p", "shape": [2, 2], "datatype": "FP64", "data": [[1, 0], [0, 1]]}]}
    assert v2_instances(nested) == [[1, 0], [0, 1]]
    column = {"outputs": [{"name": "p", "shape": [2, 1], "datatype": "INT64", "data": [4, 5]}]}
    assert v2_instances(column) == [4, 5]


def test_v2_several_outputs_become_one_object_per_instance() -> None:
    body = {
        "outputs": [
            {"name": "label", "shape": [2], "datatype": "BYTES", "data": ["a", "b"]},
            {"name": "score", "shape": [2], "datatype": "FP32", "data": [0.9, 0.4]},
        ]
    }
    assert v2_instances(body) == [{"label": "a", "score": 0.9}, {"label": "b", "score": 0.4}]


@pytest.mark.parametrize(
    "body",
    [
        {"outputs": []},
        {"outputs": [{"name": "p", "shape": [3], "data": [1, 2]}]},  # data does not fill the shape
        {"outputs": [{"name": "p", "shape": [], "data": [1]}]},
        {"outputs": [{"name": "p", "shape": [-1], "data": [1]}]},
        {"outputs": [{"name": "a", "shape": [2], "data": [1, 2]}, {"name": "b", "shape": [3], "data": [1, 2, 3]}]},
        {"outputs": ["x"]},
        {"predictions": [1]},
    ],
)
def test_unusable_v2_answers_are_none(body: object) -> None:
    assert v2_instances(body) is None


def test_instances_from_body_parses_json_per_protocol() -> None:
    assert instances_from_body(Protocol.V1, json.dumps({"predictions": [1]}).encode()) == [1]
    assert instances_from_body(Protocol.V2, b'{"outputs": [{"name": "p", "shape": [1], "data": [7]}]}') == [7]
    assert instances_from_body(Protocol.V1, b"not json") is None
    assert instances_from_body(Protocol.V1, b"\xff\xfe") is None
    assert Protocol.V1.path("iris") == "/v1/models/iris:predict"
    assert Protocol.V2.path("iris") == "/v2/models/iris/infer"


@pytest.mark.parametrize(
    ("a", "b", "agree"),
    [
        (1, 1, True),
        (1, 2, False),
        ("setosa", "setosa", True),
        ("setosa", "virginica", False),
        (True, True, True),
        (True, 1, False),  # a boolean label is not the class 1
        ("1", 1, False),
        (0.5, 0.5 + 1e-12, True),
        (0.5, 0.5001, False),
        (1, 1.0, True),
        (1e-12, 0.0, True),  # within the absolute tolerance
        (math.nan, math.nan, True),
        (math.nan, 1.0, False),
        ([0.1, 0.9], [0.1, 0.9], True),
        ([0.1, 0.9], [0.1], False),
        ({"label": 1, "p": 0.3}, {"label": 1, "p": 0.3}, True),
        ({"label": 1}, {"label": 1, "p": 0.3}, False),
        (None, None, True),
        (None, 0, False),
    ],
)
def test_values_agree(a: object, b: object, agree: bool) -> None:
    assert values_agree(a, b) is agree
    assert values_agree(b, a) is agree


def test_tolerance_is_configurable() -> None:
    assert not values_agree(1.0, 1.01)
    assert values_agree(1.0, 1.01, Tolerance(rel=0.02))
    assert values_agree(0.0, 0.001, Tolerance(abs=0.01))


def test_count_agreements_by_position() -> None:
    assert count_agreements([0, 1, 2, 2], [0, 1, 1, 2]) == 3
    assert count_agreements([0, 1], None) == 0
    assert count_agreements([0, 1], [0, 1, 2]) == 0  # cannot be matched instance by instance


# --- probabilities, labels, values ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ([0.2, 0.8], (0.2, 0.8)),
        ([1, 0, 0], (1.0, 0.0, 0.0)),  # one-hot ints are probabilities too
        ([0.3333333, 0.3333333, 0.3333334], (0.3333333, 0.3333333, 0.3333334)),
        ([0.5004, 0.5], (0.5004, 0.5)),  # float32 rounding: off by < 1e-3
        ([0.6, 0.6], None),  # sums to 1.2
        ([0.5], None),  # one number is a score, not a vector
        ([1.5, -0.5], None),  # sums to 1 but not probabilities
        ([math.nan, 1.0], None),
        ([True, False], None),
        (["0.5", "0.5"], None),
        ([[0.5, 0.5]], None),
        (0.5, None),
        ([], None),
    ],
)
def test_probability_vector(value: object, expected: tuple[float, ...] | None) -> None:
    assert probability_vector(value) == expected


def test_v2_probability_outputs() -> None:
    one_output = {"outputs": [{"name": "predictions", "shape": [2, 3], "datatype": "FP64", "data": [0.1, 0.2, 0.7, 0.5, 0.5, 0.0]}]}
    first, second = v2_instances(one_output)
    assert predicted_label(first) == 2 and predicted_label(second) == 0  # a tie: the first class
    named = {
        "outputs": [
            {"name": "predict_proba", "shape": [1, 2], "datatype": "FP32", "data": [0.9, 0.1]},
            {"name": "score", "shape": [1], "datatype": "FP32", "data": [0.3]},
        ]
    }
    (instance,) = v2_instances(named)
    assert instance_probabilities(instance) == (0.9, 0.1) and predicted_label(instance) == 0
    with_label = {"label": "setosa", "probabilities": [0.1, 0.9]}
    assert predicted_label(with_label) == "setosa"  # the model's own label output wins
    assert instance_probabilities({"scores": [0.1, 0.9]}) is None  # no "prob" in the name
    assert predicted_label({"scores": [0.1, 0.9]}) is None


@pytest.mark.parametrize(
    ("value", "label"),
    [(2, 2), ("setosa", "setosa"), (True, True), (0.7, None), ([0.1, 0.5, 0.4], 1), ([1.0, 2.0], None), (None, None)],
)
def test_predicted_label(value: object, label: object) -> None:
    assert predicted_label(value) == label


def test_regression_value_is_a_finite_float() -> None:
    assert regression_value(2.5) == 2.5
    for not_a_value in (2, True, "2.5", math.inf, math.nan, [2.5], None):
        assert regression_value(not_a_value) is None


@pytest.mark.parametrize(
    ("a", "b", "agree"),
    [
        ([0.7, 0.2, 0.1], [0.6, 0.3, 0.1], True),  # same top class, different probabilities
        ([0.7, 0.2, 0.1], [0.2, 0.7, 0.1], False),
        ([0.7, 0.2, 0.1], 0, True),  # a probability prediction against its label
        ([0.7, 0.2, 0.1], 0.0, True),
        ([0.7, 0.2, 0.1], 1, False),
        ([0.7, 0.2, 0.1], "setosa", False),
        ({"label": 1, "score": 0.91}, {"label": 1, "score": 0.72}, True),
        ({"label": 1, "score": 0.91}, 1, True),
        ({"label": 1}, {"x": 1}, False),
        ({"x": 1.0}, {"x": 1.0}, True),  # no label: compared as values
        (1.0, 1.0 + 1e-9, True),
        (1.0, 1.05, False),
        ([1.0, 2.0], [1.0, 2.0], True),  # not probabilities: element by element
    ],
)
def test_predictions_agree(a: object, b: object, agree: bool) -> None:
    assert predictions_agree(a, b) is agree
    assert predictions_agree(b, a) is agree


def test_regression_agreement_is_a_relative_tolerance() -> None:
    within_5 = Tolerance(rel=0.05, abs=0.0)
    assert predictions_agree(100.0, 104.9, within_5)
    assert not predictions_agree(100.0, 105.3, within_5)
    assert count_agreements([100.0, 10.0, -3.0], [104.0, 11.0, -3.1], within_5) == 2
    # The same rule as relative_error <= r.
    for a, b in ((100.0, 104.9), (100.0, 105.3), (10.0, 11.0), (-3.0, -3.1), (0.0, 0.01)):
        assert values_agree(a, b, within_5) is (relative_error(a, b) <= 0.05)


@pytest.mark.parametrize(
    ("a", "b", "error"),
    [
        (100.0, 110.0, 10 / 110),
        (110.0, 100.0, 10 / 110),
        (-2.0, -1.0, 0.5),
        (1.0, -1.0, 2.0),
        (0.0, 0.0, 0.0),
        (0.0, 3.0, 1.0),
        (math.nan, math.nan, 0.0),
        (math.nan, 1.0, 2.0),
        (math.inf, math.inf, 0.0),
        (math.inf, 1.0, 2.0),
        (math.inf, -math.inf, 2.0),
    ],
)
def test_relative_error(a: float, b: float, error: float) -> None:
    assert relative_error(a, b) == pytest.approx(error)


def test_relative_errors_per_instance() -> None:
    assert relative_errors([1.0, 2.0, 4.0], [1.0, 3.0, 2.0]) == pytest.approx([0.0, 1 / 3, 0.5])
    # Labels have no relative error; a non-number answer to a value is as far as it gets.
    assert relative_errors([0, 1, 2], [0, 2, 2]) == []
    assert relative_errors([1.0, 2], [1.0, 2]) == [0.0]
    assert relative_errors([1.0, 2.0], [1.0, "x"]) == [0.0, MAX_RELATIVE_ERROR]
    # No answer, or one that cannot be matched instance by instance.
    assert relative_errors([1.0, 2.0], None) == [MAX_RELATIVE_ERROR] * 2
    assert relative_errors([1.0, 2.0], [1.0]) == [MAX_RELATIVE_ERROR] * 2
