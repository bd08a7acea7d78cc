"""Server-side printing: the `Table` kubectl asks for (`Accept: ...;as=Table;g=meta.k8s.io`).

`kubectl get mro` shows the CRD's `additionalPrinterColumns` only because the server renders them;
without a Table it would print names alone. Columns use the small JSONPath subset that printer
columns use in practice: `.a.b`, `.a[0]`, `.a[*].b` and filters like `[?(@.type=='Ready')]`.
"""

from __future__ import annotations

import datetime
import re
from typing import Any

from tests.kube.crds import PrinterColumn

_SEGMENT = re.compile(
    r"""\.(?P<key>[A-Za-z0-9_\-$]+)"""  # .key
    r"""|\[(?P<index>-?\d+|\*)\]"""  # [0] / [*]
    r"""|\[\?\(@\.(?P<fkey>[A-Za-z0-9_.\-]+)\s*==\s*(?P<fvalue>'[^']*'|"[^"]*"|true|false|-?\d+(?:\.\d+)?)\)\]"""
)


def _literal(text: str) -> Any:
    if text[0] in "'\"":
        return text[1:-1]
    if text in ("true", "false"):
        return text == "true"
    return float(text) if "." in text else int(text)


def json_path(obj: Any, expression: str) -> list[Any]:
    """All values `expression` selects in `obj` (curly braces optional, as in printer columns)."""
    expression = expression.strip()
    if expression.startswith("{") and expression.endswith("}"):
        expression = expression[1:-1]
    nodes, position = [obj], 0
    while position < len(expression):
        match = _SEGMENT.match(expression, position)
        if match is None:
            raise ValueError(f"unsupported JSONPath {expression!r} at {expression[position:]!r}")
        position = match.end()
        selected: list[Any] = []
        for node in nodes:
            if match["key"] is not None:
                if isinstance(node, dict) and match["key"] in node:
                    selected.append(node[match["key"]])
            elif match["index"] is not None:
                if isinstance(node, list):
                    if match["index"] == "*":
                        selected.extend(node)
                    elif -len(node) <= int(match["index"]) < len(node):
                        selected.append(node[int(match["index"])])
            elif isinstance(node, list):
                wanted, path = _literal(match["fvalue"]), match["fkey"].split(".")
                for item in node:
                    value: Any = item
                    for key in path:
                        value = value.get(key) if isinstance(value, dict) else None
                    if value == wanted:
                        selected.append(item)
        nodes = selected
    return nodes


def human_age(timestamp: str, now: datetime.datetime | None = None) -> str:
    """`5s`, `3m12s`, `2h5m`, `4d`: the compact duration kubectl shows in AGE."""
    try:
        then = datetime.datetime.fromisoformat(timestamp)  # 3.11 reads the "Z" suffix
    except ValueError:
        return "<invalid>"
    seconds = max(0, int(((now or datetime.datetime.now(datetime.UTC)) - then).total_seconds()))
    if seconds < 120:
        return f"{seconds}s"
    minutes = seconds // 60
    if minutes < 10:
        return f"{minutes}m{seconds % 60}s" if seconds % 60 else f"{minutes}m"
    if minutes < 180:
        return f"{minutes}m"
    hours = minutes // 60
    if hours < 48:
        return f"{hours}h{minutes % 60}m" if hours < 8 and minutes % 60 else f"{hours}h"
    return f"{hours // 24}d"


def wants_table(accept: str) -> bool:
    return any("as=Table" in part and "g=meta.k8s.io" in part for part in accept.split(","))


_AGE = PrinterColumn(name="Age", type="date", json_path=".metadata.creationTimestamp")


def _cell(column: PrinterColumn, obj: dict[str, Any]) -> Any:
    try:
        values = json_path(obj, column.json_path)
    except ValueError:
        return None
    if not values or values[0] is None:
        return None
    value = values[0]
    if column.type == "date":
        return human_age(str(value))
    if column.type == "integer":
        return value if isinstance(value, int) and not isinstance(value, bool) else None
    if column.type == "number":
        return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None
    if column.type == "boolean":
        return value if isinstance(value, bool) else None
    return value if isinstance(value, str) else str(value)


def table(
    objects: list[dict[str, Any]], columns: list[PrinterColumn], resource_version: str, include_object: str = "Metadata"
) -> dict[str, Any]:
    """A meta.k8s.io/v1 Table of `objects`: Name, then the printer columns (or Age when none)."""
    columns = columns or [_AGE]
    definitions = [
        {"name": "Name", "type": "string", "format": "name", "description": "Name of the object", "priority": 0}
    ]
    definitions += [
        {"name": c.name, "type": c.type, "format": c.format, "description": c.description, "priority": c.priority}
        for c in columns
    ]
    rows = []
    for obj in objects:
        row: dict[str, Any] = {"cells": [obj["metadata"].get("name"), *(_cell(c, obj) for c in columns)]}
        if include_object == "Object":
            row["object"] = obj
        elif include_object != "None":
            row["object"] = {
                "kind": "PartialObjectMetadata",
                "apiVersion": "meta.k8s.io/v1",
                "metadata": obj["metadata"],
            }
        rows.append(row)
    return {
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": resource_version},
        "columnDefinitions": definitions,
        "rows": rows,
    }
