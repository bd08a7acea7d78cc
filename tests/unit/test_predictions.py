"""Per-instance predictions from V1/V2 answers, and when two predictions agree."""

from __future__ import annotations

import json
import math

import pytest

from canary.predictions import (
    Protocol,
    Tolerance,
    count_agreements,
    instances_from_body,
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
