"""Loading ModelRollout documents: good ones parse, bad ones name the field and the problem."""

from __future__ import annotations

import copy
import re

import pytest
import yaml

from canary.decision.durations import format_duration, parse_duration
from canary.decision.spec import RolloutStatus, SpecError, load_rollouts, parse_rollout, relative_ratio

GOOD = {
    "apiVersion": "modelrollout.io/v1alpha1",
    "kind": "ModelRollout",
    "metadata": {"name": "iris"},
    "spec": {
        "model": {"name": "iris"},
        "shadow": {"duration": "10s", "percent": 50},
        "canary": {"steps": [10, 50], "interval": "10s"},
        "progressDeadline": "2m",
        "analysis": {
            "provider": "local",
            "metrics": [
                {"name": "p95", "template": "latency_p95", "maxIncrease": "50%"},
                {"name": "custom", "query": 'up{job="{{ rollout }}"}', "max": 1, "noData": "fail"},
            ],
        },
    },
}


def with_change(path: str, value):
    doc = copy.deepcopy(GOOD)
    *parents, last = path.split(".")
    target = doc
    for key in parents:
        target = target[int(key)] if key.isdigit() else target[key]
    if value is _DELETE:
        del target[last]
    else:
        target[int(last) if last.isdigit() else last] = value
    return doc


_DELETE = object()


def test_good_document_and_defaults():
    rollout = parse_rollout(GOOD)
    spec = rollout.spec
    assert spec.model.candidate_alias == "challenger" and spec.model.stable_alias == "champion"
    assert spec.canary.steps == [10, 50]
    assert rollout.metadata.namespace == "default"
    # camelCase out, exactly what the user wrote for strings
    dumped = rollout.model_dump(by_alias=True, exclude_none=True)
    assert dumped["spec"]["progressDeadline"] == "2m"
    assert dumped["spec"]["analysis"]["metrics"][0]["maxIncrease"] == "50%"


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        ("apiVersion", "v1", "apiVersion: Input should be 'modelrollout.io/v1alpha1'"),
        ("kind", "Rollout", "kind: Input should be 'ModelRollout'"),
        ("metadata.name", "Bad_Name", "metadata.name: invalid name 'Bad_Name'"),
        ("spec.model", _DELETE, "spec.model: Field required"),
        ("spec.model.name", "", "spec.model.name: String should have at least 1 character"),
        ("spec.model.candidateAlias", "champion", "candidateAlias and stableAlias are both 'champion'"),
        ("spec.model.stableAlias", "v3", "alias 'v3' is reserved"),
        ("spec.shadow.duration", "10", "spec.shadow.duration: invalid duration '10'"),
        ("spec.shadow.percent", 0, "spec.shadow.percent: Input should be greater than or equal to 1"),
        ("spec.shadow.percent", 101, "spec.shadow.percent: Input should be less than or equal to 100"),
        ("spec.canary.steps", [], "spec.canary.steps: List should have at least 1 item"),
        ("spec.canary.steps", [50, 10], "steps must increase: step 1 (10%) is not above step 0 (50%)"),
        ("spec.canary.steps", [0, 10], "step 0 is 0%"),
        ("spec.canary.steps", [10, 120], "step 1 is 120%"),
        ("spec.canary.interval", "soon", "spec.canary.interval: invalid duration 'soon'"),
        ("spec.canary.intervall", "10s", "spec.canary.intervall: unknown field"),
        ("spec.progressDeadline", "5s", "progressDeadline (5s) must be longer than canary.interval (10s)"),
        ("spec.analysis.provider", "datadog", "unknown provider 'datadog'; known: istio, knative, knative-legacy, local"),
        ("spec.analysis.metrics.0.template", "latency_p42", "unknown template 'latency_p42' for provider 'local'; known:"),
        ("spec.analysis.metrics.0.maxIncrease", "fast", "invalid relative threshold 'fast'"),
        ("spec.analysis.metrics.0.failureLimit", -1, "failureLimit: Input should be greater than or equal to 0"),
        ("spec.analysis.metrics.1.noData", "ignore", "noData: Input should be 'fail', 'inconclusive' or 'pass'"),
        ("spec.analysis.metrics.1.query", "up{x='{{ modle }}'}", "unknown variable(s) modle in query"),
        ("spec.analysis.metrics.1.samplesQuery", "sum(x{v='{{ ver }}'})", "unknown variable(s) ver in query"),
        ("spec.analysis.metrics.0.samplesQuery", "sum(x)", "samplesQuery goes with a custom query"),
        ("spec.analysis.metrics.1.name", "p95", "metric name 'p95' appears twice"),
        ("spec.analysis.metrics.1.phases", ["prod"], "phases.0: Input should be 'shadow' or 'canary'"),
    ],
)
def test_bad_field_is_named(path, value, message):
    with pytest.raises(SpecError) as err:
        parse_rollout(with_change(path, value), "r.yaml")
    assert message in str(err.value), str(err.value)
    assert str(err.value).startswith("r.yaml: ")


def test_agreement_cannot_be_relative():
    doc = with_change("spec.analysis.metrics.0", {"name": "a", "template": "shadow_agreement", "maxDecrease": "5%"})
    with pytest.raises(SpecError, match="has no baseline value"):
        parse_rollout(doc)


def test_shadow_disabled_frees_the_deadline_from_its_duration():
    doc = with_change("spec.shadow", {"enabled": False, "duration": "1h"})
    assert not parse_rollout(doc).spec.shadow.enabled


def test_load_rollouts_yaml_errors():
    with pytest.raises(SpecError, match=r"f.yaml: line 1, column \d+: malformed YAML"):
        load_rollouts("spec: [1, 2", "f.yaml")
    with pytest.raises(SpecError, match="no ModelRollout document"):
        load_rollouts("", "f.yaml")
    with pytest.raises(SpecError, match="expected a mapping"):
        load_rollouts("- 1\n- 2\n", "f.yaml")
    two = yaml.safe_dump(GOOD) + "---\n" + yaml.safe_dump(GOOD)
    with pytest.raises(SpecError, match="rollout name\\(s\\) used twice: iris"):
        load_rollouts(two, "f.yaml")


def test_multi_document_errors_name_the_document():
    second = with_change("metadata.name", "other")
    second["spec"]["canary"]["steps"] = [5, 5]
    text = yaml.safe_dump(GOOD) + "---\n" + yaml.safe_dump(second)
    with pytest.raises(SpecError, match=r"f.yaml\[1\]: spec.canary.steps"):
        load_rollouts(text, "f.yaml")


@pytest.mark.parametrize(("text", "seconds"), [("30s", 30), ("2m", 120), ("1h30m", 5400), ("500ms", 0.5), ("1.5s", 1.5)])
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "10", "s", "1d", "-1s", "1 m", None])
def test_bad_durations(text):
    with pytest.raises(ValueError, match="invalid duration"):
        parse_duration(text)


def test_format_duration():
    assert [format_duration(s) for s in (0.25, 30, 90, 3600, 3725)] == ["250ms", "30s", "1m30s", "1h", "1h2m5s"]


def test_relative_forms():
    assert relative_ratio("10%") == pytest.approx(0.1) and relative_ratio(0.25) == 0.25 and relative_ratio("0.3") == 0.3


def test_status_defaults_are_idle():
    status = RolloutStatus()
    assert status.phase.value == "Idle" and status.weights.stable == 100


# ---------------------------------------------------------------------------------------------
# target: the KServe InferenceService (optional; the local platform ignores it)

TARGET = {
    "inferenceService": "iris",
    "predictor": {
        "runtime": "kserve-mlserver",
        "serviceAccountName": "mlflow-reader",
        "resources": {"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"cpu": 2, "nvidia.com/gpu": 1}},
    },
}


def with_target(target):
    doc = copy.deepcopy(GOOD)
    doc["spec"]["target"] = target
    return doc


def test_target_is_optional_and_defaults_to_knative():
    assert parse_rollout(GOOD).spec.target is None
    target = parse_rollout(with_target({"inferenceService": "iris"})).spec.target
    assert (target.inference_service, target.deployment_mode, target.predictor) == ("iris", "Knative", None)


def test_target_predictor_overrides_keep_what_was_written():
    rollout = parse_rollout(with_target({**TARGET, "deploymentMode": "Standard", "httpRoute": "iris-route"}))
    target = rollout.spec.target
    assert target.deployment_mode == "Standard"
    assert target.predictor.runtime == "kserve-mlserver" and target.predictor.service_account_name == "mlflow-reader"
    # quantities stay as written: strings as strings, YAML integers as integers
    assert target.predictor.resources.requests == {"cpu": "500m", "memory": "1Gi"}
    assert target.predictor.resources.limits == {"cpu": 2, "nvidia.com/gpu": 1}
    dumped = rollout.model_dump(by_alias=True, exclude_none=True)["spec"]["target"]
    assert dumped == {**TARGET, "deploymentMode": "Standard", "httpRoute": "iris-route"}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"deploymentMode": "Standard"}, "deploymentMode Standard needs httpRoute: KServe does not split Standard-mode traffic"),
        ({"httpRoute": "iris-route"}, "httpRoute is for deploymentMode Standard"),
        ({"deploymentMode": "Standard", "httpRoute": "Iris_Route"}, "spec.target.httpRoute: invalid HTTPRoute name"),
        ({"deploymentMode": "Standard", "httpRoute": "r", "inferenceService": "a" * 45},
         "longer than 44 characters: in Standard mode '<name>-baseline-predictor' must fit"),
    ],
)
def test_standard_mode_needs_a_route_the_split_is_ours(change, message):
    with pytest.raises(SpecError, match=re.escape(message) if "(" in message else message):
        parse_rollout(with_target({**TARGET, **change}))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"inferenceService": None}, "spec.target.inferenceService: Input should be a valid string"),
        ({"deploymentMode": "Serverless"}, "spec.target.deploymentMode: Input should be 'Knative' or 'Standard' (got 'Serverless')"),
        ({"deploymentMode": "knative"}, "Input should be 'Knative' or 'Standard'"),
        ({"inferenceService": "1iris"}, "spec.target.inferenceService: invalid InferenceService name '1iris'"),
        ({"inferenceService": "Iris"}, "invalid InferenceService name 'Iris'"),
        ({"inferenceService": "iris-"}, "invalid InferenceService name 'iris-'"),
        ({"inferenceService": "a" * 47}, "spec.target.inferenceService: String should have at most 46 characters"),
        ({"namespace": "other"}, "spec.target.namespace: unknown field"),
        ({"predictor": {"image": "x"}}, "spec.target.predictor.image: unknown field"),
        ({"predictor": {"runtime": "KServe MLServer"}}, "spec.target.predictor.runtime: invalid runtime name 'KServe MLServer'"),
        ({"predictor": {"serviceAccountName": "Bad_SA"}}, "invalid service account name 'Bad_SA'"),
        ({"predictor": {"resources": {"request": {"cpu": 1}}}}, "spec.target.predictor.resources.request: unknown field"),
        ({"predictor": {"resources": {"requests": {"cpu": "lots"}}}}, "invalid quantity 'lots'"),
        ({"predictor": {"resources": {"requests": {"cpu": "-1"}}}}, "invalid quantity '-1'"),
        ({"predictor": {"resources": {"requests": {"cpu": -1}}}}, "quantity -1 must not be negative"),
        ({"predictor": {"resources": {"requests": {"cpu": True}}}}, "expected a number or a string, not true/false"),
        ({"predictor": {"resources": {"requests": {"cpu": 0.5}}}}, "spec.target.predictor.resources.requests.cpu"),
        ({"predictor": {"resources": {"limits": {"CPU cores": 1}}}}, "invalid resource name 'CPU cores'"),
    ],
)
def test_bad_target_is_named(change, message):
    target = {**TARGET, **change}
    if change.get("inferenceService", "") is None:
        del target["inferenceService"]
        message = "spec.target.inferenceService: Field required"
    with pytest.raises(SpecError) as err:
        parse_rollout(with_target(target), "r.yaml")
    assert message in str(err.value), str(err.value)


@pytest.mark.parametrize("value", [True, "nan", "inf", -0.1])
def test_relative_thresholds_reject_booleans_and_non_finite(value):
    doc = with_change("spec.analysis.metrics.0.maxIncrease", value)
    with pytest.raises(SpecError, match="maxIncrease"):
        parse_rollout(doc)
