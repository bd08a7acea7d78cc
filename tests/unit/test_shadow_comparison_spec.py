"""`spec.shadow.comparison`: the rollout's tolerance for regression predictions, from the document
to the platform-neutral Routing the reconcile hands to a platform, and the wire forms that carry it
to the router (`PUT /admin/routing`) and the shadow comparator (`PUT /admin/shadows`)."""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from typing import Any

import jsonschema
import mlflow
import pytest
from pydantic import ValidationError

from canary.decision.engine import ApplyRouting
from canary.decision.spec import ModelRollout, SpecError, load_rollouts, parse_rollout
from canary.decision.tolerance import Comparison, Tolerance, effective_tolerance
from canary.traffic.comparator import ShadowTarget
from canary.traffic.predictions import values_agree
from canary.traffic.router import RoutingDocument
from controller.kube import crd
from controller.platform import Routing, VersionHealth
from controller.reconcile import Ports, carry_out

DOC: dict[str, Any] = {
    "apiVersion": "modelrollout.io/v1alpha1",
    "kind": "ModelRollout",
    "metadata": {"name": "prices"},
    "spec": {"model": {"name": "prices"}, "shadow": {"duration": "10s"}},
}
FIELD = "spec.shadow.comparison.relativeTolerance"


def with_comparison(comparison: Any) -> dict[str, Any]:
    doc = copy.deepcopy(DOC)
    doc["spec"]["shadow"]["comparison"] = comparison
    return doc


def refused(doc: dict[str, Any]) -> str:
    with pytest.raises(SpecError) as caught:
        parse_rollout(doc, "prices.yaml")
    return str(caught.value)


# --- the spec field -------------------------------------------------------------------------------


def test_defaults_are_the_comparison_rule_of_before() -> None:
    comparison = parse_rollout(DOC).spec.shadow.comparison
    assert (comparison.relative_tolerance, comparison.absolute_tolerance) == (1e-6, 1e-9)
    # What the defaults mean: a 1e-7 relative difference agrees, 1e-5 does not.
    tolerance = Tolerance(comparison.relative_tolerance, comparison.absolute_tolerance)
    assert values_agree(100.0, 100.0 * (1 + 1e-7), tolerance)
    assert not values_agree(100.0, 100.0 * (1 + 1e-5), tolerance)


def test_values_from_yaml_including_integers_and_zero() -> None:
    [rollout] = load_rollouts(
        "apiVersion: modelrollout.io/v1alpha1\nkind: ModelRollout\nmetadata: {name: prices}\n"
        "spec:\n  model: {name: prices}\n  shadow:\n    comparison: {relativeTolerance: 0.05, absoluteTolerance: 0}\n"
    )
    comparison = rollout.spec.shadow.comparison
    assert comparison.relative_tolerance == 0.05
    assert comparison.absolute_tolerance == 0.0 and isinstance(comparison.absolute_tolerance, float)
    # One field given: the other keeps its default.
    only_abs = parse_rollout(with_comparison({"absoluteTolerance": 1})).spec.shadow.comparison
    assert (only_abs.relative_tolerance, only_abs.absolute_tolerance) == (1e-6, 1.0)
    # Written back camelCase, as given.
    dumped = rollout.model_dump(by_alias=True)["spec"]["shadow"]["comparison"]
    assert dumped == {"relativeTolerance": 0.05, "absoluteTolerance": 0.0}


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (-0.01, "expected a finite number >= 0, got -0.01"),
        (math.nan, "expected a finite number >= 0, got nan"),
        (math.inf, "expected a finite number >= 0, got inf"),
        (-math.inf, "expected a finite number >= 0, got -inf"),
        (True, "expected a number, got bool True"),
        ("abc", "expected a number, got the string 'abc'"),
        ("0.05", "expected a number, got the string '0.05' (write it without quotes)"),
        (None, "expected a number, got NoneType None"),
        ([0.1], "expected a number, got list [0.1]"),
    ],
)
def test_bad_relative_tolerance_is_refused_naming_the_field(value: Any, message: str) -> None:
    error = refused(with_comparison({"relativeTolerance": value}))
    assert error == f"prices.yaml: {FIELD}: {message}"


@pytest.mark.parametrize("value", [-1, math.nan, math.inf, False, "1e-9"])
def test_bad_absolute_tolerance_is_refused_naming_the_field(value: Any) -> None:
    error = refused(with_comparison({"absoluteTolerance": value}))
    assert error.startswith("prices.yaml: spec.shadow.comparison.absoluteTolerance: expected a ")


def test_yaml_exponents_without_a_dot_are_numbers_as_in_kubernetes() -> None:
    # YAML 1.1 (plain PyYAML) would read 1e-3 as text; the spec loader reads it as YAML 1.2 and
    # Kubernetes do. A quoted "1e-3" is text on purpose, and is refused saying so.
    text = (
        "apiVersion: modelrollout.io/v1alpha1\nkind: ModelRollout\nmetadata: {name: prices}\n"
        "spec:\n  model: {name: prices}\n  shadow:\n    comparison: {relativeTolerance: 1e-3, absoluteTolerance: 5E-9}\n"
    )
    [rollout] = load_rollouts(text, "prices.yaml")
    assert (rollout.spec.shadow.comparison.relative_tolerance, rollout.spec.shadow.comparison.absolute_tolerance) == (1e-3, 5e-9)
    with pytest.raises(SpecError, match=r"relativeTolerance: expected a number, got the string '1e-3'"):
        load_rollouts(text.replace("1e-3", "'1e-3'"), "prices.yaml")
    # Integers stay integers (minSamples must not turn into 10.0).
    assert load_rollouts(text.replace("shadow:", "analysis: {metrics: [{name: e, template: error_rate, max: 1e-2, minSamples: 10}]}\n  shadow:"))[0].spec.analysis.metrics[0].min_samples == 10


def test_unknown_fields_and_non_objects_are_refused() -> None:
    assert refused(with_comparison({"relTolerance": 0.1})) == (
        "prices.yaml: spec.shadow.comparison.relTolerance: unknown field"
    )
    assert "spec.shadow.comparison" in refused(with_comparison(0.05))


def test_crd_states_type_and_bound_but_no_default() -> None:
    schema = crd.crd_document()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    node = schema["properties"]["spec"]["properties"]["shadow"]["properties"]["comparison"]
    for name in ("relativeTolerance", "absoluteTolerance"):
        field = node["properties"][name]
        assert field["type"] == "number" and field["minimum"] == 0
        # No default in the CRD: Go would write it 1e-06, which YAML 1.1 readers take for text.
        assert "default" not in field and "default" in field["description"]
    assert "|a-b| <= max(relativeTolerance x max(|a|,|b|), absoluteTolerance)" in node["properties"][
        "relativeTolerance"
    ]["description"]
    validator = jsonschema.Draft4Validator(crd.validation_schema(schema))
    for bad in (-0.5, "0.05", True):
        assert list(validator.iter_errors(with_comparison({"relativeTolerance": bad}))), bad
    assert not list(validator.iter_errors(with_comparison({"relativeTolerance": 0.05, "absoluteTolerance": 0})))


# --- the platform-neutral Routing and the reconcile that fills it ------------------------------------


def test_platform_routing_carries_one_checked_tolerance() -> None:
    plain = Routing("prices", "1", "2", "shadow", shadow_percent=100)
    assert plain.tolerance == Tolerance(1e-6, 1e-9)
    assert Routing("prices", "1", tolerance=Tolerance(rel=0.05, abs=0)).tolerance.rel == 0.05
    for name, value, message in (
        ("rel", -1.0, "Tolerance.rel: expected a finite number >= 0, got -1.0"),
        ("rel", math.nan, "Tolerance.rel: expected a finite number >= 0, got nan"),
        ("abs", True, "Tolerance.abs: expected a number, got bool True"),
        ("abs", "0", "Tolerance.abs: expected a number, got the string '0'"),
    ):
        with pytest.raises(ValueError) as caught:
            Routing("prices", "1", tolerance=Tolerance(**{name: value}))
        assert str(caught.value).startswith(message), caught.value
    with pytest.raises(ValueError, match=r"routing.tolerance must be a Tolerance, got 0.05"):
        Routing("prices", "1", tolerance=0.05)  # type: ignore[arg-type]


class RecordingPlatform:
    """A Platform that keeps what it is asked to apply: the reconcile's output, nothing served."""

    def __init__(self) -> None:
        self.applied: list[tuple[str, Routing, dict[str, str]]] = []

    def apply(self, rollout: str, routing: Routing, artifact_uris: Mapping[str, str]) -> None:
        self.applied.append((rollout, routing, dict(artifact_uris)))

    def health(self, rollout: str, version: str) -> VersionHealth:
        return VersionHealth(ready=True)

    def endpoint(self, rollout: str) -> str | None:
        return None

    def analysis_variables(self, rollout: str, version: str) -> Mapping[str, str]:
        return {}

    def teardown(self, rollout: str) -> None:
        pass


def test_reconcile_fills_the_routing_from_the_spec() -> None:
    rollout: ModelRollout = parse_rollout(with_comparison({"relativeTolerance": 0.05, "absoluteTolerance": 0.001}))
    platform = RecordingPlatform()
    ports = Ports(
        # Never called: both artifact URIs are known already.
        client=mlflow.MlflowClient("http://127.0.0.1:9"),
        platform=platform,
        metrics=None,  # type: ignore[arg-type]  # routing needs no metrics
        save_status=lambda name, status: None,
        record_event=lambda name, event: None,
        artifact_uris={("prices", "1"): "file:///m/1", ("prices", "2"): "file:///m/2"},
    )
    carry_out(rollout, ApplyRouting("1", "2", "shadow", 0, 100), ports)
    [(name, routing, uris)] = platform.applied
    assert name == "prices" and uris == {"1": "file:///m/1", "2": "file:///m/2"}
    assert routing == Routing("prices", "1", "2", "shadow", 0, 100, tolerance=Tolerance(rel=0.05, abs=0.001))


# --- the wire forms -----------------------------------------------------------------------------------


def test_comparison_wire_form_and_its_defaults() -> None:
    flags = Tolerance(rel=0.2, abs=0.3)
    assert effective_tolerance(None, flags) is flags
    assert effective_tolerance(Comparison(), flags) == flags
    assert effective_tolerance(Comparison.model_validate({"relativeTolerance": 0.05}), flags) == Tolerance(0.05, 0.3)
    assert effective_tolerance(Comparison(absolute_tolerance=0), flags) == Tolerance(0.2, 0.0)
    with pytest.raises(ValidationError) as caught:
        Comparison.model_validate({"relativeTolerance": -1, "absoluteTolerance": "x", "rel": 1})
    assert sorted(".".join(map(str, e["loc"])) for e in caught.value.errors()) == [
        "absoluteTolerance", "rel", "relativeTolerance"
    ]  # fmt: skip
    with pytest.raises(ValueError, match=r"Tolerance.rel: expected a finite number >= 0, got -0.1"):
        Tolerance(rel=-0.1)


def test_router_routing_and_shadow_target_take_an_optional_comparison() -> None:
    base = {"model": "prices", "stable": {"version": "1", "url": "http://127.0.0.1:8001"}}
    old = RoutingDocument.model_validate(base)
    assert old.comparison is None and "comparison" not in old.wire()  # an old payload, as before
    new = RoutingDocument.model_validate({**base, "comparison": {"relativeTolerance": 0.05}})
    assert new.wire()["comparison"] == {"relativeTolerance": 0.05, "absoluteTolerance": None}
    assert new != old
    target = {
        "rollout": "prices", "namespace": "ml", "inferenceService": "prices", "model": "prices",
        "stableVersion": "1", "candidateVersion": "2", "shadowUrl": "http://127.0.0.1:9",
    }  # fmt: skip
    plain = ShadowTarget.model_validate(target)
    tolerant = ShadowTarget.model_validate({**target, "comparison": {"absoluteTolerance": 0.5}})
    assert plain.comparison is None and tolerant.comparison == Comparison(absolute_tolerance=0.5)
    assert plain != tolerant and plain.same_shadow(tolerant)
    assert not plain.same_shadow(ShadowTarget.model_validate({**target, "candidateVersion": "3"}))
