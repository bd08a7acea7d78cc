"""KServe's real InferenceService CRD as a validator, and proof that it catches what a cluster would.

The CRD (KServe's `config/crd/full/serving.kserve.io_inferenceservices.yaml`, v0.20 line) lives
in the workplace's shared reference folder beside the repository; `MODELROLLOUT_KSERVE_CRD`
points elsewhere. `inference_service_validator(strict=True)` also rejects unknown fields, as an
API server does with `fieldValidation=Strict` (kubectl's default since 1.27) — without it a
misspelt field is silently pruned and the document means something else than it says.
"""

from __future__ import annotations

import copy
import functools
import os
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

CRD_ENV = "MODELROLLOUT_KSERVE_CRD"
_REPO = Path(__file__).resolve().parents[2]
_DEFAULT_CRD = _REPO.parent / "shared" / "reference" / "kserve" / "serving.kserve.io_inferenceservices.yaml"


def crd_path() -> Path:
    path = Path(os.environ.get(CRD_ENV) or _DEFAULT_CRD)
    if not path.is_file():
        raise FileNotFoundError(f"KServe's InferenceService CRD not found at {path} (set {CRD_ENV} to its path)")
    return path


@functools.cache
def _crd() -> dict[str, Any]:
    with crd_path().open("rb") as handle:
        return yaml.load(handle, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))  # C loader: ~0.7 s, not 10


def inference_service_schema(version: str = "v1beta1") -> dict[str, Any]:
    """The `openAPIV3Schema` of one served version of the CRD."""
    crd = _crd()
    if crd.get("kind") != "CustomResourceDefinition" or crd["spec"]["names"]["kind"] != "InferenceService":
        raise ValueError(f"{crd_path()} is not the InferenceService CRD")
    for entry in crd["spec"]["versions"]:
        if entry["name"] == version and entry.get("served", False):
            return entry["schema"]["openAPIV3Schema"]
    raise ValueError(f"{crd_path()} serves no version {version!r}")


def _closed(schema: Any) -> Any:
    """A copy where every object with declared properties rejects undeclared ones."""
    if isinstance(schema, dict):
        out = {key: _closed(value) for key, value in schema.items()}
        if (
            out.get("type") == "object"
            and "properties" in out
            and "additionalProperties" not in out
            and not out.get("x-kubernetes-preserve-unknown-fields")
        ):
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [_closed(item) for item in schema]
    return schema


@functools.cache
def inference_service_validator(strict: bool = True) -> jsonschema.protocols.Validator:
    schema = inference_service_schema()
    schema = _closed(copy.deepcopy(schema)) if strict else schema
    # openAPIV3Schema is OpenAPI 3.0's subset of JSON Schema: no $ref, nullable or exclusive*
    # in this CRD, so draft 7 reads it as the API server does.
    return jsonschema.Draft7Validator(schema)


def schema_errors(document: dict[str, Any], strict: bool = True) -> list[str]:
    """Every violation, as `path: message` lines (empty when the document is valid)."""
    errors = inference_service_validator(strict).iter_errors(document)
    return sorted(f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}" for e in errors)


def assert_valid(document: dict[str, Any]) -> None:
    errors = schema_errors(document)
    assert not errors, "invalid InferenceService:\n" + "\n".join(errors)


# ---------------------------------------------------------------------------------------------
# The validator itself


def _kserve_docs_example() -> dict[str, Any]:
    # KServe's canary rollout example (docs, "Canary Rollout Strategy"), verbatim in substance.
    return {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {"name": "sklearn-iris", "namespace": "kserve-test"},
        "spec": {
            "predictor": {
                "canaryTrafficPercent": 10,
                "model": {
                    "modelFormat": {"name": "sklearn"},
                    "storageUri": "gs://kfserving-examples/models/sklearn/1.0/model-2",
                    "resources": {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"cpu": "100m"}},
                },
            }
        },
    }


def test_loader_picks_the_served_v1beta1_schema() -> None:
    schema = inference_service_schema()
    assert schema["type"] == "object"
    assert {"apiVersion", "kind", "metadata", "spec", "status"} <= set(schema["properties"])
    predictor = schema["properties"]["spec"]["properties"]["predictor"]["properties"]
    assert {"canaryTrafficPercent", "logger", "model"} <= set(predictor)
    with pytest.raises(ValueError, match="serves no version 'v1alpha1'"):
        inference_service_schema("v1alpha1")


def test_kserves_own_example_is_valid() -> None:
    assert schema_errors(_kserve_docs_example()) == []


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda d: d["spec"]["predictor"]["model"].update(storageURI="s3://typo"), "storageURI"),
        (lambda d: d["spec"]["predictor"].update(canaryTrafficPercent="10"), "canaryTrafficPercent"),
        (lambda d: d["spec"]["predictor"].update(logger={"mode": "everything"}), "logger/mode"),
        (lambda d: d["spec"]["predictor"]["model"].update(modelFormat={}), "modelFormat"),
        (lambda d: d["spec"]["predictor"]["model"]["resources"]["limits"].update(cpu="lots"), "resources/limits/cpu"),
        (lambda d: d["spec"].update(canary=[{"trafficPercent": 101, "predictor": {}}]), "canary/0/trafficPercent"),
        (lambda d: d["spec"].update(canary=[{"predictor": {}}]), "'trafficPercent' is a required property"),
        (lambda d: d["spec"]["predictor"].update(name="V2"), "predictor/name"),
        (lambda d: d["spec"].pop("predictor"), "'predictor' is a required property"),
    ],
)
def test_invalid_documents_are_caught(mutate: Any, expected: str) -> None:
    document = _kserve_docs_example()
    mutate(document)
    errors = schema_errors(document)
    assert errors, "the validator accepted an invalid document"
    assert any(expected in line for line in errors), errors


def test_unknown_fields_pass_only_without_strict() -> None:
    document = _kserve_docs_example()
    document["spec"]["predictor"]["model"]["storageURI"] = "s3://typo"
    assert schema_errors(document, strict=False) == []
    assert schema_errors(document, strict=True)


def test_missing_crd_is_named(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(CRD_ENV, str(tmp_path / "nope.yaml"))
    with pytest.raises(FileNotFoundError, match=f"nope.yaml.*{CRD_ENV}"):
        crd_path()
