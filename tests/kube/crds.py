"""CustomResourceDefinitions: checked like apiextensions.k8s.io/v1 checks them, then served.

A CRD the real server would refuse (no schema, a non-structural schema, two storage versions, a
name that is not `<plural>.<group>`) is refused here with the same field paths, so a CRD generated
by our own code cannot pass tests and then fail on a cluster.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from tests.kube.errors import FieldError
from tests.kube.schemas import StructuralSchema, structural_errors

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_COLUMN_TYPES = ("integer", "number", "string", "boolean", "date")


@dataclass(frozen=True)
class PrinterColumn:
    name: str
    type: str
    json_path: str
    priority: int = 0
    description: str = ""
    format: str = ""


@dataclass
class CrdVersion:
    name: str
    served: bool
    storage: bool
    schema: StructuralSchema
    status_subresource: bool
    scale_subresource: bool
    printer_columns: list[PrinterColumn]


@dataclass
class CustomResourceDefinition:
    group: str
    plural: str
    singular: str
    kind: str
    list_kind: str
    short_names: list[str]
    categories: list[str]
    namespaced: bool
    versions: dict[str, CrdVersion] = field(default_factory=dict)

    @property
    def storage_version(self) -> str:
        return next(v.name for v in self.versions.values() if v.storage)

    @property
    def served_versions(self) -> list[str]:
        return [v.name for v in self.versions.values() if v.served]


def crd_errors(doc: dict[str, Any]) -> list[FieldError]:
    """What kube-apiserver would reject in this CRD document (empty when it is acceptable)."""
    found: list[FieldError] = []
    spec = doc.get("spec") if isinstance(doc.get("spec"), dict) else {}
    names = spec.get("names") if isinstance(spec.get("names"), dict) else {}
    group, plural, kind = spec.get("group", ""), names.get("plural", ""), names.get("kind", "")
    name = (doc.get("metadata") or {}).get("name", "")

    if not group:
        found.append(FieldError("spec.group", "FieldValueRequired", "Required value"))
    elif "." not in group:
        found.append(
            FieldError(
                "spec.group", "FieldValueInvalid", f'Invalid value: "{group}": should be a domain with at least one dot'
            )
        )
    if not plural:
        found.append(FieldError("spec.names.plural", "FieldValueRequired", "Required value"))
    elif not _DNS_LABEL.match(plural):
        found.append(
            FieldError(
                "spec.names.plural",
                "FieldValueInvalid",
                f"Invalid value: \"{plural}\": a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-'",
            )
        )
    if not kind:
        found.append(FieldError("spec.names.kind", "FieldValueRequired", "Required value"))
    for index, short in enumerate(names.get("shortNames") or []):
        if not _DNS_LABEL.match(str(short)):
            found.append(
                FieldError(
                    f"spec.names.shortNames[{index}]",
                    "FieldValueInvalid",
                    f'Invalid value: "{short}": a lowercase RFC 1123 label',
                )
            )
    if group and plural and name != f"{plural}.{group}":
        found.append(
            FieldError(
                "metadata.name",
                "FieldValueInvalid",
                f'Invalid value: "{name}": must be spec.names.plural+"."+spec.group',
            )
        )
    if spec.get("scope") not in ("Namespaced", "Cluster"):
        found.append(
            FieldError(
                "spec.scope",
                "FieldValueNotSupported",
                f'Unsupported value: "{spec.get("scope", "")}": supported values: "Cluster", "Namespaced"',
            )
        )

    versions = spec.get("versions")
    if not isinstance(versions, list) or not versions:
        found.append(
            FieldError(
                "spec.versions",
                "FieldValueInvalid",
                "Invalid value: null: must have exactly one version marked as storage version",
            )
        )
        return found
    if sum(1 for v in versions if isinstance(v, dict) and v.get("storage")) != 1:
        found.append(
            FieldError(
                "spec.versions",
                "FieldValueInvalid",
                "Invalid value: must have exactly one version marked as storage version",
            )
        )
    for index, version in enumerate(versions):
        where = f"spec.versions[{index}]"
        if not isinstance(version, dict) or not version.get("name"):
            found.append(FieldError(f"{where}.name", "FieldValueRequired", "Required value"))
            continue
        schema = (version.get("schema") or {}).get("openAPIV3Schema")
        if schema is None:
            found.append(
                FieldError(
                    f"{where}.schema.openAPIV3Schema", "FieldValueRequired", "Required value: schemas are required"
                )
            )
        else:
            found.extend(structural_errors(schema, f"{where}.schema.openAPIV3Schema"))
        for c_index, column in enumerate(version.get("additionalPrinterColumns") or []):
            c_where = f"{where}.additionalPrinterColumns[{c_index}]"
            if not column.get("name"):
                found.append(FieldError(f"{c_where}.name", "FieldValueRequired", "Required value"))
            if column.get("type") not in _COLUMN_TYPES:
                found.append(
                    FieldError(
                        f"{c_where}.type",
                        "FieldValueNotSupported",
                        f'Unsupported value: "{column.get("type", "")}": supported values: '
                        + ", ".join(f'"{t}"' for t in _COLUMN_TYPES),
                    )
                )
            if not column.get("jsonPath"):
                found.append(FieldError(f"{c_where}.jsonPath", "FieldValueRequired", "Required value"))
    return found


def parse_crd(doc: dict[str, Any]) -> CustomResourceDefinition:
    """The served shape of a CRD that `crd_errors` accepted."""
    spec, names = doc["spec"], doc["spec"]["names"]
    crd = CustomResourceDefinition(
        group=spec["group"],
        plural=names["plural"],
        singular=names.get("singular") or names["kind"].lower(),
        kind=names["kind"],
        list_kind=names.get("listKind") or f"{names['kind']}List",
        short_names=list(names.get("shortNames") or []),
        categories=list(names.get("categories") or []),
        namespaced=spec["scope"] == "Namespaced",
    )
    for version in spec["versions"]:
        subresources = version.get("subresources") or {}
        crd.versions[version["name"]] = CrdVersion(
            name=version["name"],
            served=bool(version.get("served", True)),
            storage=bool(version.get("storage")),
            schema=StructuralSchema(version["schema"]["openAPIV3Schema"]),
            status_subresource="status" in subresources,
            scale_subresource="scale" in subresources,
            printer_columns=[
                PrinterColumn(
                    name=c["name"], type=c["type"], json_path=c["jsonPath"], priority=int(c.get("priority", 0)),
                    description=c.get("description", ""), format=c.get("format", ""),
                )
                for c in version.get("additionalPrinterColumns") or []
            ],
        )  # fmt: skip
    return crd


def crd_status(doc: dict[str, Any], now: str) -> dict[str, Any]:
    """The status the apiextensions controller writes once a CRD is served (immediately, here)."""
    spec, names = doc["spec"], dict(doc["spec"]["names"])
    names.setdefault("singular", names["kind"].lower())
    names.setdefault("listKind", f"{names['kind']}List")
    storage = next(v["name"] for v in spec["versions"] if v.get("storage"))
    previous = (doc.get("status") or {}).get("storedVersions") or []

    def condition(kind: str, reason: str, message: str) -> dict[str, Any]:
        return {"type": kind, "status": "True", "lastTransitionTime": now, "reason": reason, "message": message}

    return {
        "acceptedNames": names,
        "conditions": [
            condition("NamesAccepted", "NoConflicts", "no conflicts found"),
            condition("Established", "InitialNamesAccepted", "the initial names have been accepted"),
        ],
        "storedVersions": sorted(set(previous) | {storage}),
    }
