"""The ModelRollout CustomResourceDefinition, generated from the pydantic models in canary/decision/spec.py.

`python -m controller.kube.crd > manifests/crd/modelrollouts.modelrollout.io.yaml` writes the committed
manifest (a test fails when the two differ), as controller-gen does from Go types: one source of
truth for the API.

The schema is *structural* (Kubernetes' rules: every node typed, no `$ref`, nothing typed inside
`anyOf`/`oneOf`) and carries what OpenAPI can say — enums, bounds, item counts, required fields,
patterns for durations and names, plain defaults — so the API server turns away most bad specs.
Some rules only pydantic can check; the operator must run `canary.decision.spec.parse_rollout` on every
object it reads and report failures in the status, because the API server accepts these:

- `canary.steps` strictly increasing (the schema checks each step is 1–100, not the order);
- `model.candidateAlias` differs from `model.stableAlias` (each alone is checked: not `latest`, not
  `v<digits>`);
- a metric has exactly one of `template` / `query` and at least one threshold, and `min <= max`
  (OpenAPI could say "exactly one" with `oneOf`/`required`, but a `null` counts as present there
  while pydantic reads it as unset — a spec written back from a pydantic dump would be refused);
- a metric's `template` exists for the chosen `analysis.provider`, and `maxIncrease`/`maxDecrease`
  only on templates with a baseline;
- `{{ variables }}` in `query`/`samplesQuery` are known ones;
- `progressDeadline` is longer than `canary.interval` and (shadow enabled) `shadow.duration`;
- resource names in `target.predictor.resources` (Kubernetes schemas cannot constrain map keys);
- `metadata.name` is a DNS label of at most 63 characters (Kubernetes owns `metadata`; it only
  checks a DNS subdomain);
- `target` is present: optional in the schema because the local platform ignores it, required by
  the KServe platform;
- `target.httpRoute` is given with `deploymentMode: Standard` and only then, and a Standard-mode
  `inferenceService` leaves room for `-baseline-predictor` (44 characters);
- `maxIncrease`/`maxDecrease` are a number or a string: the schema node is untyped (see `_union`),
  so the API server lets a list or an object through;
- `gate`: relative bounds (`maxDecrease`/`maxIncrease`) written as "N%" (a bare number is refused),
  unique gate metric names, `min <= max`;
- `postPromotion.watch` at least `canary.interval`, with at least one canary check having `max`/`min`.

The other way round, the schema is stricter than pydantic's lax parsing: `"10"` for an integer,
`"yes"` for a boolean, or `"1e-1"` for a relative bound pass pydantic but not the API server.

Metric names are unique in both: pydantic checks it, and `x-kubernetes-list-type: map` keyed by
`name` makes the API server check it (plain JSON Schema validators cannot; see `validation_schema`).
"""

from __future__ import annotations

import copy
import functools
import sys
from typing import Any

import yaml

from canary.decision.spec import API_VERSION, KIND, ModelRollout

# The resource's names: its apiVersion and kind are canary/decision/spec.py's, the rest are the CRD's.
GROUP, _, VERSION = API_VERSION.partition("/")
PLURAL = "modelrollouts"
SINGULAR = "modelrollout"
SHORT_NAMES = ["mro"]
CRD_NAME = f"{PLURAL}.{GROUP}"
MANIFEST = f"manifests/crd/{CRD_NAME}.yaml"

HEADER = (
    "# Generated from canary/decision/spec.py by `python -m controller.kube.crd`; do not edit.\n"
    f"# Regenerate: python -m controller.kube.crd > {MANIFEST}\n"
)

PRINTER_COLUMNS: list[dict[str, str]] = [
    {"name": "Model", "type": "string", "jsonPath": ".spec.model.name", "description": "Registered model in MLflow"},
    {"name": "Stable", "type": "string", "jsonPath": ".status.stableVersion", "description": "Serving version"},
    {"name": "Candidate", "type": "string", "jsonPath": ".status.candidateVersion", "description": "Version rolling out"},
    {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
    {
        "name": "Weight",
        "type": "integer",
        "jsonPath": ".status.weights.candidate",
        "description": "Percent of client traffic the candidate receives",
    },
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
]

# Keywords copied as they are: Kubernetes' JSONSchemaProps has them and they mean the same there.
_KEPT = {
    "type", "description", "required", "enum", "pattern", "format", "not",
    "minimum", "maximum", "multipleOf", "minLength", "maxLength", "minItems", "maxItems",
    "minProperties", "maxProperties",
    "x-kubernetes-list-type", "x-kubernetes-list-map-keys",
    "x-kubernetes-int-or-string", "x-kubernetes-preserve-unknown-fields",
}  # fmt: skip
# Pydantic's presentation only.
_DROPPED = {"title"}
# Formats the API server knows and pydantic emits for our types.
_FORMATS = {"date-time"}


class SchemaError(ValueError):
    """The pydantic schema holds something the CRD schema cannot say; names the field and the construct."""


def _resolve(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    """Inline a `$ref` (structural schemas have none); keys beside it (default, description) win."""
    while "$ref" in node:
        rest = dict(node)
        target = defs[rest.pop("$ref").rsplit("/", 1)[-1]]
        node = {**target, **rest}
    return node


def _union(node: dict[str, Any], defs: dict[str, Any], path: str) -> tuple[dict[str, Any], bool]:
    """Fold `anyOf` into one structural node; returns it and whether `null` was a branch."""
    rest = dict(node)
    branches = [_resolve(b, defs) for b in rest.pop("anyOf")]
    values = [b for b in branches if b != {"type": "null"}]
    nullable = len(values) < len(branches)
    if len(values) == 1:
        merged = {**values[0], **rest}
        if "anyOf" in merged:
            merged, inner_nullable = _union(merged, defs, path)
            nullable = nullable or inner_nullable
        return merged, nullable
    if any(set(b) != {"type"} for b in values):
        raise SchemaError(f"{path}: a union of {values} has no structural form; constrain the union as a whole")
    types = {b["type"] for b in values}
    if types == {"string", "integer"}:
        # Kubernetes' own int-or-string (as resource quantities are): the API server accepts an
        # integer or a string; `pattern` applies to the string and `minimum` to the integer.
        return {**rest, "x-kubernetes-int-or-string": True}, nullable
    if types == {"string", "number"}:
        # Number-or-string (`maxIncrease: "10%"` or `maxIncrease: 0.1`). `x-kubernetes-int-or-string`
        # would refuse 0.1 (integers only) and `type: string` would refuse it unquoted, both of which
        # the README shows. A structural node may omit `type` only with one of those two extensions,
        # so the node is untyped and marked preserve-unknown-fields (which matters for objects only,
        # not for a scalar). Its `pattern` then checks strings and its `minimum` numbers: each
        # keyword applies only to values of its own type, in Kubernetes as in JSON Schema. What it
        # cannot refuse is a boolean, list or object; pydantic does (see the module docstring).
        return {**rest, "x-kubernetes-preserve-unknown-fields": True}, nullable
    raise SchemaError(f"{path}: a union of {sorted(types)} has no structural form")


def _convert(node: dict[str, Any], defs: dict[str, Any], path: str) -> dict[str, Any]:
    node = _resolve(node, defs)
    nullable = False
    if "anyOf" in node:
        node, nullable = _union(node, defs, path)
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROPPED:
            continue
        if key == "properties":
            out[key] = {name: _convert(child, defs, f"{path}.{name}") for name, child in value.items()}
        elif key == "items":
            out[key] = _convert(value, defs, f"{path}[]")
        elif key == "additionalProperties":
            if isinstance(value, dict):
                out[key] = _convert(value, defs, f"{path}.*")
            elif value is True:
                out["x-kubernetes-preserve-unknown-fields"] = True
            # `false` is dropped: Kubernetes forbids it beside `properties`. Unknown fields are still
            # refused — kubectl asks for strict field validation — or else pruned, never kept.
        elif key == "default":
            # Only plain values: an object or list default would make the API server write out
            # sub-objects the user never wrote; pydantic fills those in anyway.
            if isinstance(value, (str, int, float, bool)):
                out[key] = value
        elif key in ("exclusiveMinimum", "exclusiveMaximum"):
            # JSON Schema's number form; OpenAPI 3.0 (and Kubernetes) take the bound plus a flag.
            out["minimum" if key == "exclusiveMinimum" else "maximum"] = value
            out[key] = True
        elif key == "format" and value not in _FORMATS:
            raise SchemaError(f"{path}: format {value!r} is not one the CRD schema uses")
        elif key in _KEPT:
            out[key] = copy.deepcopy(value)
        else:
            raise SchemaError(f"{path}: {key!r} has no place in a structural CRD schema")
    if not (
        "type" in out or out.get("x-kubernetes-int-or-string") or out.get("x-kubernetes-preserve-unknown-fields")
    ):
        raise SchemaError(f"{path}: no type")
    if nullable:
        out["nullable"] = True
        if "enum" in out:
            # OpenAPI 3.0.3: `nullable` does not widen an `enum`; null must be listed to be accepted.
            out["enum"] = [*out["enum"], None]
    return out


def openapi_schema() -> dict[str, Any]:
    """The `openAPIV3Schema` of ModelRollout: spec and status from pydantic, the rest Kubernetes'."""
    raw = ModelRollout.model_json_schema(by_alias=True)
    defs = raw.get("$defs", {})
    fields = set(raw["properties"])
    if fields != {"apiVersion", "kind", "metadata", "spec", "status"}:
        raise SchemaError(f"ModelRollout has fields {sorted(fields)}; the CRD knows apiVersion, kind, metadata, spec, status")
    spec = _convert(raw["properties"]["spec"], defs, "spec")
    spec["description"] = "What to roll out and how: the model, the shadow and canary plan, the analysis."
    status = _convert(raw["properties"]["status"], defs, "status")
    status["description"] = "Written by the operator: the rollout's whole state, so a restarted operator resumes it."
    # kopf keeps its own progress records under status.kopf; without this the API server would prune
    # them and kopf would keep re-writing them.
    status["properties"]["kopf"] = {
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": True,
        "description": "The operator framework's (kopf) own bookkeeping.",
    }
    return {
        "type": "object",
        "description": "A progressive rollout of MLflow model versions: shadow, then canary steps judged on "
        "Prometheus metrics, then promotion or rollback.",
        "properties": {
            # Kubernetes checks these three itself.
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object"},
            "spec": spec,
            "status": status,
        },
        "required": ["spec"],
    }


def crd_document() -> dict[str, Any]:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": CRD_NAME},
        "spec": {
            "group": GROUP,
            "names": {
                "kind": KIND,
                "listKind": f"{KIND}List",
                "plural": PLURAL,
                "singular": SINGULAR,
                "shortNames": list(SHORT_NAMES),
            },
            "scope": "Namespaced",
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": copy.deepcopy(PRINTER_COLUMNS),
                    "schema": {"openAPIV3Schema": openapi_schema()},
                }
            ],
        },
    }


def render() -> str:
    """The manifest text: the header and the CRD as YAML."""
    # Keys sorted, as controller-gen writes them: a stable order for diffs.
    return HEADER + yaml.safe_dump(crd_document(), sort_keys=True, width=100)


# Schema keys that describe or default a value and never refuse one.
_NOT_VALIDATION = ("nullable", "default", "description", "example", "externalDocs", "format", "title")


def validation_schema(schema: Any, closed: bool = True) -> Any:
    """A CRD's `openAPIV3Schema` as plain JSON Schema (draft 4, whose boolean `exclusiveMinimum`
    is OpenAPI 3.0's), refusing what the API server refuses.

    The one translation of the Kubernetes extensions, for everything without an API server: `lint`
    and `local run` (`schema_problems`), and the tests' Kubernetes emulator and KServe schema.
    `nullable` admits null (to an enum too); `x-kubernetes-int-or-string` is integer or string;
    with `closed`, an object listing its properties refuses others unless it preserves unknown
    fields, as strict field validation (kubectl's default) does -- the emulator prunes instead, so
    it asks for an open schema. Not expressible, so not checked: the uniqueness of
    `x-kubernetes-list-type` map keys and sets, and CEL rules.
    """
    if not isinstance(schema, dict):
        return schema
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key.startswith("x-kubernetes-") or key in _NOT_VALIDATION:
            continue
        if key == "properties":
            out[key] = {name: validation_schema(sub, closed) for name, sub in value.items()}
        elif key in ("items", "additionalProperties", "not") and isinstance(value, dict):
            out[key] = validation_schema(value, closed)
        elif key in ("allOf", "anyOf", "oneOf"):
            out[key] = [validation_schema(sub, closed) for sub in value]
        else:
            out[key] = value
    if (
        closed
        and out.get("type") == "object"
        and "properties" in out
        and "additionalProperties" not in out
        and not schema.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    if schema.get("x-kubernetes-int-or-string") is True and "type" not in out and "anyOf" not in out:
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if schema.get("nullable") is True:
        # Only what constrains every value must let null through: type, enum and anyOf (the
        # keywords of one type, e.g. a pattern or properties, pass a null by themselves).
        if isinstance(out.get("type"), str):
            out["type"] = [out["type"], "null"]
        if "enum" in out:
            out["enum"] = [*out["enum"], None]
        if "anyOf" in out:
            out["anyOf"] = [*out["anyOf"], {"type": "null"}]
    return out


def field_path(parts: Any) -> str:
    """`spec.canary.steps[0]`: a location the way the API server (Go's field.Path) prints it."""
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


@functools.cache
def _validator() -> Any:
    import jsonschema  # only for the commands that check files

    return jsonschema.Draft4Validator(validation_schema(openapi_schema()))


def schema_problems(document: Any) -> list[str]:
    """What the API server's validation of this CRD would refuse in `document` (a ModelRollout as
    read from YAML), one `path: problem` line each, sorted; empty when it would accept it. Catches
    what the engine's own model coerces quietly, e.g. `steps: ["10"]`."""
    problems = []
    for error in _validator().iter_errors(document):
        where = field_path(error.absolute_path) or "(document)"
        problems.append(f"{where}: {error.message}")
    return sorted(problems)


def main() -> None:
    sys.stdout.write(render())


if __name__ == "__main__":
    main()
