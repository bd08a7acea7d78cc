"""What kube-apiserver does with a custom resource's `openAPIV3Schema` on every write.

In order: drop `null`s of non-nullable fields and prune fields the schema does not declare
(reported back, so `?fieldValidation=Strict` can refuse them and the default `Warn` can say so),
fill `default`s, then validate; each failure becomes a `FieldError` worded like the real server's
(`spec.predictor.minReplicas: Invalid value: -1: ... should be greater than or equal to 0`).
Validation itself is `jsonschema` (Draft 4, whose boolean `exclusiveMinimum` is OpenAPI 3.0's)
over the schema with the Kubernetes extensions translated: `nullable`, `x-kubernetes-int-or-string`,
`x-kubernetes-preserve-unknown-fields`. `structural_errors` checks a CRD's schema is structural,
which apiextensions.k8s.io/v1 requires before it serves anything.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import jsonschema

from controller.kube.crd import field_path, validation_schema
from tests.kube.errors import FieldError

# The fields of ObjectMeta. Anything else under an object's `metadata` is dropped by the decoder.
OBJECT_META_FIELDS = frozenset({
    "name", "generateName", "namespace", "selfLink", "uid", "resourceVersion", "generation",
    "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds", "labels", "annotations",
    "ownerReferences", "finalizers", "managedFields",
})  # fmt: skip

def _value(value: Any) -> str:
    if isinstance(value, dict):
        return '"object"'
    if isinstance(value, list):
        return '"array"'
    return json.dumps(value)


def _json_type(value: Any) -> str:
    return {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}.get(
        type(value), "integer" if isinstance(value, int) else "number"
    )


def to_json_schema(schema: Any) -> Any:
    """The schema as plain JSON Schema, open: the emulator prunes undeclared fields (as the API
    server does) before it validates, so none is left to refuse."""
    return validation_schema(schema, closed=False)


class StructuralSchema:
    """One version's `openAPIV3Schema`: prune, default and validate objects of that version."""

    def __init__(self, openapi: dict[str, Any]):
        self.openapi = openapi
        self._validator = jsonschema.Draft4Validator(to_json_schema(openapi))

    # --- pruning ---------------------------------------------------------------------------------

    def prune(self, obj: dict[str, Any]) -> list[str]:
        """Remove undeclared fields (in place); returns their paths, e.g. `spec.predictor.modle`."""
        removed: list[str] = []
        _prune(obj, self.openapi, [], removed, root=True)
        return removed

    # --- defaulting ------------------------------------------------------------------------------

    def apply_defaults(self, obj: dict[str, Any]) -> None:
        _default(obj, self.openapi, root=True)

    # --- validation ------------------------------------------------------------------------------

    def validate(self, obj: dict[str, Any]) -> list[FieldError]:
        found: list[FieldError] = []
        for error in sorted(self._validator.iter_errors(obj), key=lambda e: [str(p) for p in e.absolute_path]):
            found.extend(_field_errors(error))
        return found


def prune_metadata(obj: dict[str, Any]) -> list[str]:
    """Drop what ObjectMeta does not have (every kind's decoder does this, CRD or not)."""
    meta = obj.get("metadata")
    if not isinstance(meta, dict):
        return []
    unknown = [key for key in meta if key not in OBJECT_META_FIELDS]
    for key in unknown:
        del meta[key]
    return [f"metadata.{key}" for key in unknown]


def _prune(node: Any, schema: dict[str, Any], path: list[str | int], removed: list[str], root: bool = False) -> None:
    if isinstance(node, dict):
        properties = schema.get("properties") or {}
        additional = schema.get("additionalProperties")
        preserve = schema.get("x-kubernetes-preserve-unknown-fields") is True
        embedded = schema.get("x-kubernetes-embedded-resource") is True
        for key in list(node):
            if (root or embedded) and key in ("apiVersion", "kind"):
                continue
            if (root or embedded) and key == "metadata":
                removed.extend(field_path([*path, p]) for p in prune_metadata({"metadata": node[key]}))
                continue
            if key in properties:
                sub = properties[key]
            elif isinstance(additional, dict):
                sub = additional
            elif additional is True or preserve:
                continue
            else:
                del node[key]
                removed.append(field_path([*path, key]))
                continue
            if node[key] is None and not sub.get("nullable"):
                del node[key]  # the server drops nulls of non-nullable fields silently
                continue
            _prune(node[key], sub, [*path, key], removed)
    elif isinstance(node, list) and isinstance(schema.get("items"), dict):
        for index, item in enumerate(node):
            _prune(item, schema["items"], [*path, index], removed)


def _default(node: Any, schema: dict[str, Any], root: bool = False) -> None:
    if isinstance(node, dict):
        properties = schema.get("properties") or {}
        for key, sub in properties.items():
            if key not in node and "default" in sub and not (root and key == "metadata"):
                node[key] = copy.deepcopy(sub["default"])
        additional = schema.get("additionalProperties")
        for key, value in node.items():
            if root and key == "metadata":
                continue
            sub = properties.get(key, additional if isinstance(additional, dict) else None)
            if sub is not None:
                _default(value, sub)
    elif isinstance(node, list) and isinstance(schema.get("items"), dict):
        for item in node:
            _default(item, schema["items"])


def _field_errors(error: jsonschema.ValidationError) -> list[FieldError]:
    path = field_path(list(error.absolute_path))
    where = path or "<root>"
    value = error.instance
    match error.validator:
        case "required":
            missing = [name for name in error.validator_value if isinstance(value, dict) and name not in value]
            return [
                FieldError(field_path([*error.absolute_path, name]), "FieldValueRequired", "Required value")
                for name in missing
            ]
        case "type":
            expected = (
                error.validator_value if isinstance(error.validator_value, str) else ",".join(error.validator_value)
            )
            actual = _json_type(value)
            return [
                FieldError(
                    path,
                    "FieldValueTypeInvalid",
                    f'Invalid value: "{actual}": {where} in body must be of type {expected}: "{actual}"',
                )
            ]
        case "enum":
            supported = ", ".join(_value(v) for v in error.validator_value)
            return [
                FieldError(
                    path, "FieldValueNotSupported", f"Unsupported value: {_value(value)}: supported values: {supported}"
                )
            ]
        case "pattern":
            detail = f"{where} in body should match '{error.validator_value}'"
        case "minimum":
            exclusive = error.schema.get("exclusiveMinimum") is True
            detail = (
                f"{where} in body should be greater than {'' if exclusive else 'or equal to '}{error.validator_value}"
            )
        case "maximum":
            exclusive = error.schema.get("exclusiveMaximum") is True
            detail = f"{where} in body should be less than {'' if exclusive else 'or equal to '}{error.validator_value}"
        case "minLength":
            detail = f"{where} in body should be at least {error.validator_value} chars long"
        case "maxLength":
            return [
                FieldError(path, "FieldValueTooLong", f"Too long: may not be more than {error.validator_value} bytes")
            ]
        case "minItems":
            detail = f"{where} in body should have at least {error.validator_value} items"
        case "maxItems":
            return [
                FieldError(
                    path,
                    "FieldValueTooMany",
                    f"Too many: {len(value)}: must have at most {error.validator_value} items",
                )
            ]
        case "uniqueItems":
            detail = f"{where} in body shouldn't contain duplicates"
        case "anyOf" | "oneOf":
            # Kubernetes lists each alternative's complaint; the closest alternative's is enough here.
            best = jsonschema.exceptions.best_match(error.context) if error.context else None
            detail = best.message if best is not None else error.message
        case _:
            detail = error.message
    return [FieldError(path, "FieldValueInvalid", f"Invalid value: {_value(value)}: {detail}")]


# --- structural schema checks (what apiextensions.k8s.io/v1 refuses to serve) --------------------

_FORBIDDEN_IN_JUNCTORS = ("description", "type", "default", "additionalProperties", "nullable")


def structural_errors(schema: Any, path: str) -> list[FieldError]:
    """Why `schema` is not structural (an empty list when it is), with the API server's paths."""
    found: list[FieldError] = []
    if not isinstance(schema, dict):
        return [FieldError(path, "FieldValueRequired", "Required value: schemas are required")]
    if schema.get("type") != "object":
        found.append(
            FieldError(
                f"{path}.type",
                "FieldValueInvalid",
                f"Invalid value: {_value(schema.get('type', ''))}: must be object at the root",
            )
        )
    metadata = (schema.get("properties") or {}).get("metadata")
    if isinstance(metadata, dict):
        extra = [k for k in metadata if k not in ("type", "properties", "description")]
        extra += [f"properties[{k}]" for k in (metadata.get("properties") or {}) if k not in ("name", "generateName")]
        if extra or metadata.get("type", "object") != "object":
            found.append(FieldError(f"{path}.properties[metadata]", "FieldValueForbidden",
                                    "Forbidden: must not specify anything other than name and generateName, but metadata is implicitly specified"))  # fmt: skip
    _check_node(schema, path, found, in_junctor=False, int_or_string=False)
    return found


def _check_node(node: Any, path: str, found: list[FieldError], *, in_junctor: bool, int_or_string: bool) -> None:
    if not isinstance(node, dict):
        found.append(FieldError(path, "FieldValueInvalid", "Invalid value: must be a schema object"))
        return
    if "$ref" in node:
        found.append(FieldError(f"{path}.$ref", "FieldValueForbidden", "Forbidden: $ref is not supported"))
    this_int_or_string = node.get("x-kubernetes-int-or-string") is True
    preserve = node.get("x-kubernetes-preserve-unknown-fields") is True
    if in_junctor:
        for key in _FORBIDDEN_IN_JUNCTORS:
            if key in node and not (key == "type" and int_or_string):
                found.append(
                    FieldError(f"{path}.{key}", "FieldValueForbidden", "Forbidden: must be empty to be structural")
                )
    elif not node.get("type") and not this_int_or_string and not preserve:
        found.append(
            FieldError(
                f"{path}.type", "FieldValueRequired", "Required value: must not be empty for specified object fields"
            )
        )
    if "properties" in node and node.get("additionalProperties") not in (None, False):
        found.append(
            FieldError(
                f"{path}.additionalProperties",
                "FieldValueForbidden",
                "Forbidden: additionalProperties and properties are mutual exclusive",
            )
        )
    for name, sub in (node.get("properties") or {}).items():
        _check_node(sub, f"{path}.properties[{name}]", found, in_junctor=in_junctor, int_or_string=False)
    if "items" in node:
        _check_node(node["items"], f"{path}.items", found, in_junctor=in_junctor, int_or_string=False)
    if isinstance(node.get("additionalProperties"), dict):
        _check_node(
            node["additionalProperties"],
            f"{path}.additionalProperties",
            found,
            in_junctor=in_junctor,
            int_or_string=False,
        )
    declared = set(node.get("properties") or {})
    for junctor in ("allOf", "anyOf", "oneOf"):
        for index, sub in enumerate(node.get(junctor) or []):
            where = f"{path}.{junctor}[{index}]"
            _check_node(sub, where, found, in_junctor=True, int_or_string=this_int_or_string)
            for name in (sub.get("properties") or {}) if isinstance(sub, dict) else ():
                if name not in declared:
                    found.append(FieldError(f"{where}.properties[{name}]", "FieldValueRequired",
                                            "Required value: must be specified outside of the junctor too to be structural"))  # fmt: skip
    if isinstance(node.get("not"), dict):
        _check_node(node["not"], f"{path}.not", found, in_junctor=True, int_or_string=this_int_or_string)
    if "default" in node and not in_junctor:
        problems = list(jsonschema.Draft4Validator(to_json_schema(node)).iter_errors(node["default"]))
        if problems:
            found.append(
                FieldError(
                    f"{path}.default",
                    "FieldValueInvalid",
                    f"Invalid value: {_value(node['default'])}: {problems[0].message}",
                )
            )
