"""KServe's real InferenceService CRD as a validator, and proof that it catches what a cluster would.

The CRD (KServe's `config/crd/full/serving.kserve.io_inferenceservices.yaml`, v0.20 line) ships
with the tests (tests/kube/kserve/, loaded by tests/kube/kserve_crd.py); `MODELROLLOUT_KSERVE_CRD`
points elsewhere. `inference_service_validator(strict=True)` also rejects unknown fields, as an
API server does with `fieldValidation=Strict` (kubectl's default since 1.27) — without it a
misspelt field is silently pruned and the document means something else than it says.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.kube.kserve_crd import (
    CRD_ENV,
    crd_path,
    inference_service_schema,
    schema_errors,
)


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
