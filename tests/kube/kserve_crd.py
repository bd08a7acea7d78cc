"""KServe's InferenceService CRD for tests: where it is, and a validator over its v1beta1 schema.

The CRD (KServe's `config/crd/full/serving.kserve.io_inferenceservices.yaml`, v0.20 line,
Apache-2.0) ships with the tests in `tests/kube/kserve/` (see the README there), so any checkout
runs them; `MODELROLLOUT_KSERVE_CRD` points at another copy, e.g. a newer KServe's. One place
resolves it, for the schema tests and for the API emulator alike.
"""

from __future__ import annotations

import copy
import functools
import os
from pathlib import Path
from typing import Any

import jsonschema
import yaml

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
