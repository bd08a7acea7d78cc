"""The generated ModelRollout CRD: committed as generated, structural, and as strict as OpenAPI allows.

Documents are validated with `jsonschema` against the CRD's `openAPIV3Schema` (through
`validation_schema`, which reads `nullable` and int-or-string as the API server does and refuses
unknown fields as kubectl's strict field validation does). Every document the schema refuses here
is refused by pydantic too; the rules only pydantic checks are tested as such at the end, so the
list in controller/kube/crd.py's docstring stays true.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from canary.decision.spec import Phase, RolloutStatus, SpecError, parse_rollout
from controller.demo.run import DEMO_ROLLOUT
from controller.kube import crd

ROOT = Path(__file__).resolve().parents[2]
REGENERATE = f"regenerate with `python -m controller.kube.crd > {crd.MANIFEST}`"

SCHEMA = crd.crd_document()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
VALIDATOR = jsonschema.Draft4Validator(crd.validation_schema(SCHEMA))


def schema_errors(document: dict[str, Any]) -> list[str]:
    return [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in VALIDATOR.iter_errors(document)]


def readme_rollout() -> dict[str, Any]:
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## The ModelRollout") :]
    block = re.search(r"```yaml\n(.*?)```", section, re.DOTALL)
    assert block, "README's ModelRollout section has no ```yaml block"
    return yaml.safe_load(block.group(1))


GOOD: dict[str, Any] = {
    "apiVersion": "modelrollout.io/v1alpha1",
    "kind": "ModelRollout",
    "metadata": {"name": "iris", "namespace": "models"},
    "spec": {
        "model": {"name": "iris"},
        "target": {
            "inferenceService": "iris",
            "deploymentMode": "Standard", "httpRoute": "iris-route",
            "predictor": {
                "runtime": "kserve-mlserver",
                "serviceAccountName": "mlflow-reader",
                "resources": {"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"cpu": 1, "nvidia.com/gpu": 1}},
            },
        },
        "shadow": {"duration": "10s", "percent": 50},
        "canary": {"steps": [10, 50], "interval": "10s"},
        "progressDeadline": "2m",
        "analysis": {
            "provider": "local",
            "metrics": [
                {"name": "p95", "template": "latency_p95", "maxIncrease": "50%", "failureLimit": 1},
                {"name": "errors", "template": "error_rate", "max": 0.01, "noData": "fail", "phases": ["canary"]},
                {"name": "custom", "query": 'up{job="{{ rollout }}"}', "min": 1, "minSamples": 0},
            ],
        },
    },
}

_DELETE = object()


def changed(path: str, value: Any, document: dict[str, Any] = GOOD) -> dict[str, Any]:
    doc = copy.deepcopy(document)
    *parents, last = path.split(".")
    node: Any = doc
    for key in parents:
        node = node[int(key)] if key.isdigit() else node.setdefault(key, {})
    if value is _DELETE:
        del node[int(last) if last.isdigit() else last]
    else:
        node[int(last) if last.isdigit() else last] = value
    return doc


def full_status() -> dict[str, Any]:
    now = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
    status = RolloutStatus.model_validate(
        {
            "phase": "Paused",
            "pausedFrom": "Canary",
            "stableVersion": "3",
            "candidateVersion": "4",
            "observedCandidateVersion": "4",
            "previousStableVersion": "2",
            "step": 1,
            "weights": {"stable": 75, "candidate": 25, "shadow": 0},
            "phaseStartedAt": now,
            "stepStartedAt": now,
            "windowStartedAt": now,
            "rollbackKind": "failure",
            "message": "paused by user",
            "lastCommandId": "c-1",
            "checks": [
                {"name": "p95", "verdict": "pass", "candidate": 0.2, "baseline": 0.19, "samples": 120.0,
                 "threshold": "<= +50%", "failures": 0, "checkedAt": now},
                {"name": "errors", "verdict": "inconclusive"},
            ],
            "conditions": [{"type": "RegistryAvailable", "status": "True", "lastTransitionTime": now}],
            "history": [{"time": now, "from": "Shadow", "to": "Canary", "version": "4", "reason": "checks passed"}],
        }
    )  # fmt: skip
    return status.model_dump(by_alias=True, mode="json")


# ---------------------------------------------------------------------------------------------
# The committed manifest


def test_committed_manifest_is_the_generated_one():
    committed = (ROOT / crd.MANIFEST).read_text()
    assert committed == crd.render(), f"{crd.MANIFEST} is stale: {REGENERATE}"
    assert yaml.safe_load(committed) == crd.crd_document(), REGENERATE


def test_module_entry_point_writes_the_manifest():
    result = subprocess.run(
        [sys.executable, "-m", "controller.kube.crd"], cwd=ROOT, capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout == crd.render()


def test_names_scope_columns_and_status_subresource():
    document = crd.crd_document()
    spec = document["spec"]
    assert document["metadata"]["name"] == "modelrollouts.modelrollout.io"
    assert (spec["group"], spec["scope"]) == ("modelrollout.io", "Namespaced")
    assert spec["names"] == {
        "kind": "ModelRollout",
        "listKind": "ModelRolloutList",
        "plural": "modelrollouts",
        "singular": "modelrollout",
        "shortNames": ["mro"],
    }
    [version] = spec["versions"]
    assert (version["name"], version["served"], version["storage"]) == ("v1alpha1", True, True)
    assert version["subresources"] == {"status": {}}
    columns = {c["name"]: (c["jsonPath"], c["type"]) for c in version["additionalPrinterColumns"]}
    assert columns == {
        "Model": (".spec.model.name", "string"),
        "Stable": (".status.stableVersion", "string"),
        "Candidate": (".status.candidateVersion", "string"),
        "Phase": (".status.phase", "string"),
        "Weight": (".status.weights.candidate", "integer"),
        "Age": (".metadata.creationTimestamp", "date"),
    }
    assert [c["name"] for c in version["additionalPrinterColumns"]] == list(columns)


def test_every_printer_column_points_at_a_schema_field():
    for column in crd.PRINTER_COLUMNS:
        node = SCHEMA
        for part in column["jsonPath"].lstrip(".").split("."):
            if node == {"type": "object"}:  # metadata: Kubernetes' own
                break
            node = node["properties"][part]
        else:
            expected = {"string": "string", "integer": "integer"}[column["type"]]
            assert node["type"] == expected, column


def test_kubectl_parses_the_manifest(tmp_path):
    # No API server here, so `apply --dry-run=client` (which needs discovery) cannot run; `--local`
    # makes kubectl decode the file as a Kubernetes object without one.
    kubectl = shutil.which("kubectl")
    assert kubectl, "kubectl is not on PATH"
    env = {**os.environ, "KUBECONFIG": str(tmp_path / "none")}
    result = subprocess.run(
        [kubectl, "label", "--local", "-f", str(ROOT / crd.MANIFEST), "checked=yes", "-o", "json"],
        capture_output=True, text=True, timeout=60, env=env, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    parsed = json.loads(result.stdout)
    assert parsed["metadata"].pop("labels") == {"checked": "yes"}
    assert parsed == crd.crd_document()


# ---------------------------------------------------------------------------------------------
# Structural: the rules the API server applies to a CRD schema

_KNOWN = {
    "type", "description", "format", "default", "nullable", "enum", "pattern", "not", "anyOf", "oneOf", "allOf",
    "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf", "minLength", "maxLength",
    "minItems", "maxItems", "minProperties", "maxProperties", "required", "items", "properties",
    "additionalProperties", "x-kubernetes-int-or-string", "x-kubernetes-preserve-unknown-fields",
    "x-kubernetes-list-type", "x-kubernetes-list-map-keys",
}  # fmt: skip
# Not allowed inside anyOf/oneOf/allOf/not in a structural schema.
_NOT_IN_JUNCTORS = {"type", "description", "default", "nullable", "additionalProperties", "properties", "items"}
_TYPES = {"object", "array", "string", "integer", "number", "boolean"}
_PY_TYPES = {"string": str, "integer": int, "number": (int, float), "boolean": bool}


def structural_problems(node: Any, path: str = "") -> list[str]:
    if not isinstance(node, dict):
        return [f"{path}: not a schema object"]
    problems = [f"{path}: keyword {k!r}" for k in node if k not in _KNOWN]
    int_or_string = node.get("x-kubernetes-int-or-string") is True
    preserve = node.get("x-kubernetes-preserve-unknown-fields") is True
    if "type" not in node and not (int_or_string or preserve):
        problems.append(f"{path}: no type")
    if "type" in node and node["type"] not in _TYPES:
        problems.append(f"{path}: type {node['type']!r}")
    if int_or_string and (preserve or "type" in node):
        problems.append(f"{path}: int-or-string with a type or preserve-unknown-fields")
    if "properties" in node and "additionalProperties" in node:
        problems.append(f"{path}: properties and additionalProperties together")
    if "additionalProperties" in node and not isinstance(node["additionalProperties"], dict):
        problems.append(f"{path}: additionalProperties is not a schema")
    if node.get("type") == "array" and not isinstance(node.get("items"), dict):
        problems.append(f"{path}: array without one items schema")
    for junctor in ("anyOf", "oneOf", "allOf"):
        for i, branch in enumerate(node.get(junctor, [])):
            problems += junctor_problems(branch, f"{path}.{junctor}[{i}]")
    if "not" in node:
        problems += junctor_problems(node["not"], f"{path}.not")
    if "enum" in node:
        expected = _PY_TYPES.get(node.get("type", ""), object)
        for value in node["enum"]:
            if value is None and not node.get("nullable"):
                problems.append(f"{path}: null in the enum of a field that is not nullable")
            elif value is not None and not isinstance(value, expected):
                problems.append(f"{path}: enum value {value!r} is not a {node.get('type')}")
        if node.get("nullable") and None not in node["enum"]:
            problems.append(f"{path}: nullable enum without null")
    if "default" in node:
        errors = list(jsonschema.Draft4Validator(crd.validation_schema(node)).iter_errors(node["default"]))
        problems += [f"{path}: default {node['default']!r}: {e.message}" for e in errors]
    if "pattern" in node:
        problems += pattern_problems(node["pattern"], path)
    if "format" in node and node["format"] not in {"date-time"}:
        problems.append(f"{path}: format {node['format']!r}")
    if node.get("x-kubernetes-list-type") == "map":
        item = node.get("items", {})
        for key in node.get("x-kubernetes-list-map-keys", []):
            if key not in item.get("required", []) and "default" not in item.get("properties", {}).get(key, {}):
                problems.append(f"{path}: list-map key {key!r} neither required nor defaulted")
    for name, child in node.get("properties", {}).items():
        problems += structural_problems(child, f"{path}.{name}")
    if isinstance(node.get("items"), dict):
        problems += structural_problems(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        problems += structural_problems(node["additionalProperties"], f"{path}.*")
    return problems


def junctor_problems(node: Any, path: str) -> list[str]:
    if not isinstance(node, dict):
        return [f"{path}: not a schema object"]
    problems = [f"{path}: {k!r} inside a junctor" for k in node if k in _NOT_IN_JUNCTORS or k not in _KNOWN]
    if "pattern" in node:
        problems += pattern_problems(node["pattern"], path)
    for junctor in ("anyOf", "oneOf", "allOf"):
        for i, branch in enumerate(node.get(junctor, [])):
            problems += junctor_problems(branch, f"{path}.{junctor}[{i}]")
    return problems


def pattern_problems(pattern: str, path: str) -> list[str]:
    try:
        re.compile(pattern)
    except re.error as err:
        return [f"{path}: pattern {pattern!r}: {err}"]
    # The API server's regular expressions are RE2: no look-around, no back-references.
    if re.search(r"\(\?[=!<]|\\[1-9]", pattern):
        return [f"{path}: pattern {pattern!r} is not RE2"]
    return []


def test_schema_is_structural():
    assert structural_problems(SCHEMA) == []
    assert SCHEMA["properties"]["metadata"] == {"type": "object"}
    assert "$ref" not in json.dumps(SCHEMA) and "$defs" not in json.dumps(SCHEMA)


@pytest.mark.parametrize(
    ("schema", "problem"),
    [
        ({"type": "object", "properties": {"a": {"description": "untyped"}}}, ".a: no type"),
        ({"type": "object", "properties": {"a": {"$ref": "#/x"}}}, ".a: keyword '$ref'"),
        ({"type": "string", "anyOf": [{"type": "string"}]}, ".anyOf[0]: 'type' inside a junctor"),
        ({"type": "string", "nullable": True, "enum": ["a"]}, ": nullable enum without null"),
        ({"type": "integer", "default": "x"}, ": default 'x'"),
        ({"type": "string", "pattern": "^(?!latest)$"}, "is not RE2"),
        ({"type": "object", "properties": {}, "additionalProperties": {"type": "string"}}, "together"),
    ],
)
def test_structural_check_catches(schema, problem):
    # The checker itself must see what it is for, or a clean result above means nothing.
    assert any(problem in p for p in structural_problems(schema)), structural_problems(schema)


def test_unsupported_pydantic_constructs_fail_generation():
    with pytest.raises(crd.SchemaError, match=r"spec.x: a union of \['boolean', 'string'\] has no structural form"):
        crd._convert({"anyOf": [{"type": "string"}, {"type": "boolean"}]}, {}, "spec.x")
    with pytest.raises(crd.SchemaError, match=r"spec.y: 'const' has no place"):
        crd._convert({"type": "string", "const": "a"}, {}, "spec.y")
    with pytest.raises(crd.SchemaError, match=r"spec.z: no type"):
        crd._convert({"description": "anything"}, {}, "spec.z")


# ---------------------------------------------------------------------------------------------
# Good documents: accepted by the schema and by pydantic


def _good_documents() -> dict[str, dict[str, Any]]:
    parsed = parse_rollout(GOOD)
    return {
        "readme": readme_rollout(),
        "demo": yaml.safe_load(DEMO_ROLLOUT),
        "full": GOOD,
        # What an operator writes back from pydantic: every default filled, unset fields as null.
        "pydantic-dump": parsed.model_dump(by_alias=True, mode="json"),
        "pydantic-dump-no-nulls": parsed.model_dump(by_alias=True, mode="json", exclude_none=True),
        "minimal": {"apiVersion": "modelrollout.io/v1alpha1", "kind": "ModelRollout", "metadata": {"name": "m"},
                    "spec": {"model": {"name": "m"}}},
        "knative-target-default": changed("spec.target", {"inferenceService": "a1-b"}),
        "relative-as-number": changed("spec.analysis.metrics.0.maxIncrease", 0.1),
        "relative-as-integer": changed("spec.analysis.metrics.0.maxIncrease", 1),
        "relative-as-ratio-string": changed("spec.analysis.metrics.0.maxIncrease", "0.25"),
        "relative-spaced-percent": changed("spec.analysis.metrics.0.maxIncrease", " 5 %"),
        "quantity-decimal-string": changed("spec.target.predictor.resources.requests.cpu", "1.5"),
        "quantity-exponent": changed("spec.target.predictor.resources.requests.memory", "1e9"),
        "longest-isvc-name": changed("spec.target", {"inferenceService": "a" * 46}),
        "longest-standard-isvc-name": changed("spec.target.inferenceService", "a" * 44),
        "status-full": changed("status", full_status()),
        "status-no-nulls": changed("status", {k: v for k, v in full_status().items() if v is not None}),
        "status-default": changed("status", RolloutStatus().model_dump(by_alias=True, mode="json")),
    }  # fmt: skip


GOOD_DOCUMENTS = _good_documents()


@pytest.mark.parametrize("name", sorted(GOOD_DOCUMENTS))
def test_good_document_is_accepted_by_both(name):
    document = GOOD_DOCUMENTS[name]
    assert schema_errors(document) == []
    parse_rollout(document, name)


def test_status_kopf_bookkeeping_is_kept():
    # kopf writes status.kopf; the schema keeps it (pydantic does not know it: the operator drops it
    # before parsing, or keeps kopf's progress in annotations).
    document = changed("status", {"phase": "Idle", "kopf": {"progress": {"on_create": {"retries": 1}}}})
    assert schema_errors(document) == []


# ---------------------------------------------------------------------------------------------
# Bad documents OpenAPI can catch: refused by the schema, and by pydantic too

BAD: list[tuple[str, Any, str]] = [
    ("spec.analysis.metrics.1.noData", "ignore", "is not one of"),
    ("spec.analysis.metrics.1.phases", ["prod"], "is not one of"),
    ("spec.analysis.provider", "datadog", "is not one of"),
    ("spec.canary.steps", [0, 10], "less than the minimum of 1"),
    ("spec.canary.steps", [10, 120], "greater than the maximum of 100"),
    ("spec.canary.steps", [], "should be non-empty"),
    ("spec.canary.steps", list(range(1, 22)), "is too long"),
    ("spec.canary.interval", "10", "does not match"),
    ("spec.shadow.duration", "1d", "does not match"),
    ("spec.progressDeadline", "ten minutes", "does not match"),
    ("spec.shadow.percent", 0, "less than the minimum of 1"),
    ("spec.shadow.percent", 101, "greater than the maximum of 100"),
    ("spec.analysis.metrics.0.failureLimit", -1, "less than the minimum of 0"),
    ("spec.analysis.metrics.0.minSamples", -5, "less than the minimum of 0"),
    ("spec.analysis.metrics.0.name", "", "should be non-empty"),
    ("spec.analysis.metrics.0.name", "n" * 64, "is too long"),
    ("spec.analysis.metrics.0.name", _DELETE, "'name' is a required property"),
    ("spec.analysis.metrics.0.maxIncrease", "fast", "does not match"),
    ("spec.analysis.metrics.0.maxIncrease", "-5%", "does not match"),
    ("spec.analysis.metrics.0.maxIncrease", -0.1, "less than the minimum of 0"),
    ("spec.analysis.metrics.0.max", "high", "is not of type"),
    ("spec.model.name", _DELETE, "'name' is a required property"),
    ("spec.model.name", "", "should be non-empty"),
    ("spec.model", _DELETE, "'model' is a required property"),
    ("spec", _DELETE, "'spec' is a required property"),
    ("spec.model.stableAlias", "latest", "should not be valid"),
    ("spec.model.candidateAlias", "v3", "should not be valid"),
    ("spec.model.stableAlias", "", "should be non-empty"),
    ("spec.canary.intervall", "10s", "'intervall' was unexpected"),
    ("spec.analysis.metrics.0.treshold", 1, "'treshold' was unexpected"),
    ("spec.extra", True, "'extra' was unexpected"),
    ("spec.target.deploymentMode", "Serverless", "is not one of"),
    ("spec.target.deploymentMode", "knative", "is not one of"),
    ("spec.target.inferenceService", _DELETE, "'inferenceService' is a required property"),
    ("spec.target.inferenceService", "1iris", "does not match"),
    ("spec.target.inferenceService", "Iris", "does not match"),
    ("spec.target.inferenceService", "iris-", "does not match"),
    ("spec.target.inferenceService", "a" * 47, "is too long"),
    ("spec.target.namespace", "other", "'namespace' was unexpected"),
    ("spec.target.predictor.image", "x", "'image' was unexpected"),
    ("spec.target.predictor.runtime", "KServe MLServer", "does not match"),
    ("spec.target.predictor.serviceAccountName", "Bad_SA", "does not match"),
    ("spec.target.predictor.resources.request", {"cpu": 1}, "'request' was unexpected"),
    ("spec.target.predictor.resources.requests.cpu", "lots", "does not match"),
    ("spec.target.predictor.resources.requests.cpu", "-1", "does not match"),
    ("spec.target.predictor.resources.requests.cpu", -1, "less than the minimum of 0"),
    ("spec.target.predictor.resources.requests.cpu", 0.5, "is not valid under any of the given schemas"),
    ("spec.target.predictor.resources.requests.cpu", True, "is not valid under any of the given schemas"),
    ("spec.target.predictor.resources.limits", ["cpu"], "is not of type 'object'"),
    ("status.phase", "Running", "is not one of"),
    ("status.pausedFrom", "Somewhere", "is not one of"),
    ("status.weights.candidate", "25%", "is not of type 'integer'"),
    ("status.history", [{"time": "2025-01-01T00:00:00Z", "to": "Canary"}], "'from' is a required property"),
    ("status.checks", [{"name": "p95", "verdict": "maybe"}], "is not one of"),
    ("status.conditions", [{"type": "Ready", "status": "Yes"}], "is not one of"),
    ("spec.analysis.metrics.0.maxIncrease", "inf", "does not match"),
]


@pytest.mark.parametrize(("path", "value", "message"), BAD, ids=[(f"{p} deleted" if v is _DELETE else f"{p}={v!r}")[:60] for p, v, _ in BAD])
def test_bad_document_is_refused_by_schema_and_pydantic(path, value, message):
    document = changed(path, value, changed("status", {"phase": "Idle"}))
    errors = schema_errors(document)
    assert any(message in e for e in errors), errors
    with pytest.raises(SpecError):
        parse_rollout(document)


# The schema is stricter than pydantic where pydantic's lax mode coerces strings, or where
# `relative_ratio` takes any float spelling: the API server refuses these, pydantic accepts them.
SCHEMA_ONLY: list[tuple[str, Any, str]] = [
    ("spec.canary.steps", ["10", "20"], "is not of type 'integer'"),
    ("spec.shadow.enabled", "yes", "is not of type 'boolean'"),
    ("spec.shadow.percent", "50", "is not of type 'integer'"),
    ("spec.analysis.metrics.0.maxIncrease", "1e-1", "does not match"),
]


@pytest.mark.parametrize(("path", "value", "message"), SCHEMA_ONLY, ids=[f"{p}={v!r}" for p, v, _ in SCHEMA_ONLY])
def test_schema_is_stricter_than_pydantic_on_spellings(path, value, message):
    document = changed(path, value)
    assert any(message in e for e in schema_errors(document)), schema_errors(document)
    parse_rollout(document)


def test_duplicate_metric_names_are_a_list_map_key():
    # jsonschema cannot check list-map keys; the API server does, from this marking.
    metrics = SCHEMA["properties"]["spec"]["properties"]["analysis"]["properties"]["metrics"]
    assert (metrics["x-kubernetes-list-type"], metrics["x-kubernetes-list-map-keys"]) == ("map", ["name"])
    duplicate = changed("spec.analysis.metrics.1.name", "p95")
    with pytest.raises(SpecError, match="appears twice"):
        parse_rollout(duplicate)


# ---------------------------------------------------------------------------------------------
# Rules only pydantic enforces (listed in controller/kube/crd.py's docstring): the schema accepts these

PYDANTIC_ONLY: list[tuple[str, Any, str]] = [
    ("spec.canary.steps", [50, 10], "steps must increase"),
    ("spec.canary.steps", [10, 10], "steps must increase"),
    ("spec.model.candidateAlias", "champion", "candidateAlias and stableAlias are both"),
    ("spec.analysis.metrics.0.query", "up", "exactly one of 'template' or 'query'"),
    ("spec.analysis.metrics.2.query", _DELETE, "exactly one of 'template' or 'query'"),
    ("spec.analysis.metrics.2.min", _DELETE, "give at least one threshold"),
    ("spec.analysis.metrics.2.max", 0, "min (1.0) is above max (0.0)"),
    ("spec.analysis.metrics.0.template", "latency_p42", "unknown template"),
    ("spec.analysis.metrics.1", {"name": "a", "template": "shadow_agreement", "maxDecrease": "5%"}, "no baseline"),
    ("spec.analysis.metrics.2.query", "up{x='{{ modle }}'}", "unknown variable(s) modle"),
    ("spec.progressDeadline", "5s", "must be longer than canary.interval"),
    ("spec.target.predictor.resources.requests", {"CPU cores": 1}, "invalid resource name 'CPU cores'"),
    ("metadata.name", "Bad_Name", "invalid name 'Bad_Name'"),
    ("spec.analysis.metrics.0.maxIncrease", ["10%"], "spec.analysis.metrics.0.maxIncrease"),
    ("spec.target.httpRoute", _DELETE, "deploymentMode Standard needs httpRoute"),
    ("spec.target.deploymentMode", "Knative", "httpRoute is for deploymentMode Standard"),
    ("spec.target.inferenceService", "a" * 45, "longer than 44 characters"),
]


@pytest.mark.parametrize(("path", "value", "message"), PYDANTIC_ONLY, ids=[p for p, _, _ in PYDANTIC_ONLY])
def test_rules_only_pydantic_enforces(path, value, message):
    document = changed(path, value)
    assert schema_errors(document) == []
    with pytest.raises(SpecError, match=re.escape(message)):
        parse_rollout(document)


def test_nullable_fields_take_null_and_required_ones_do_not():
    assert schema_errors(changed("spec.target.predictor", None)) == []
    assert schema_errors(changed("status", {"phase": "Idle", "pausedFrom": None, "rollbackKind": None})) == []
    assert any("None is not of type" in e for e in schema_errors(changed("spec.model.name", None)))
    assert any("None is not one of" in e or "None is not of type" in e for e in schema_errors(changed("status.phase", None)))
    assert Phase.PAUSED.value in SCHEMA["properties"]["status"]["properties"]["pausedFrom"]["enum"]


def test_schema_problems_name_what_the_api_server_would_refuse_that_the_model_coerces() -> None:
    lenient = copy.deepcopy(GOOD)
    lenient["spec"]["canary"] = {"steps": ["10", 50]}
    parse_rollout(lenient)  # the engine's model reads "10" as 10 ...
    assert crd.schema_problems(lenient) == ["spec.canary.steps[0]: '10' is not of type 'integer'"]  # ... the CRD does not
    assert crd.schema_problems(GOOD) == []
    assert crd.schema_problems({"spec": {"model": {"name": "m"}, "surprise": 1}}) == [
        "spec: Additional properties are not allowed ('surprise' was unexpected)"
    ]


def test_the_translation_reads_each_kubernetes_extension() -> None:
    schema = {
        "type": "object",
        "properties": {
            "mode": {"type": "string", "enum": ["a", "b"], "nullable": True},
            "size": {"x-kubernetes-int-or-string": True},
            "any": {"nullable": True, "properties": {"x": {"type": "integer"}}},
            "free": {"type": "object", "properties": {"x": {"type": "integer"}}, "x-kubernetes-preserve-unknown-fields": True},
        },
    }
    closed = jsonschema.Draft4Validator(crd.validation_schema(schema))
    opened = jsonschema.Draft4Validator(crd.validation_schema(schema, closed=False))
    for ok in ({"mode": None}, {"mode": "a"}, {"size": 3}, {"size": "3Gi"}, {"any": None}, {"free": {"x": 1, "y": 2}}):
        assert closed.is_valid(ok), ok
    for bad in ({"mode": "c"}, {"size": 1.5}, {"any": {"x": "1"}}, {"other": 1}):
        assert not closed.is_valid(bad), bad
    assert opened.is_valid({"other": 1})  # open: the emulator prunes undeclared fields instead
