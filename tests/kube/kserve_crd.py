"""KServe's InferenceService CRD for tests: where it is, and a validator over its v1beta1 schema.

The CRD (KServe's `config/crd/full/serving.kserve.io_inferenceservices.yaml`, v0.20 line,
Apache-2.0) ships with the tests in `tests/kube/kserve/` (see the README there), so any checkout
runs them; `MODELROLLOUT_KSERVE_CRD` points at another copy, e.g. a newer KServe's. One place
resolves it, for the schema tests and for the API emulator alike.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from controller.kube.crd import validation_schema

CRD_ENV = "MODELROLLOUT_KSERVE_CRD"
_DEFAULT_CRD = Path(__file__).resolve().parent / "kserve" / "serving.kserve.io_inferenceservices.yaml"


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


@functools.cache
def inference_service_validator(strict: bool = True) -> jsonschema.protocols.Validator:
    # The product's one translation of openAPIV3Schema (OpenAPI 3.0's subset, read as draft 4).
    return jsonschema.Draft4Validator(validation_schema(inference_service_schema(), closed=strict))


def schema_errors(document: dict[str, Any], strict: bool = True) -> list[str]:
    """Every violation, as `path: message` lines (empty when the document is valid)."""
    errors = inference_service_validator(strict).iter_errors(document)
    return sorted(f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}" for e in errors)


def assert_valid(document: dict[str, Any]) -> None:
    errors = schema_errors(document)
    assert not errors, "invalid InferenceService:\n" + "\n".join(errors)


# ---------------------------------------------------------------------------------------------
# The validator itself
