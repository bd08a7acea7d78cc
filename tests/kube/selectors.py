"""Label and field selectors, as list and watch requests pass them in `?labelSelector=`/`?fieldSelector=`."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tests.kube import errors

Predicate = Callable[[dict[str, Any]], bool]

# One requirement of a label selector: `key`, `!key`, `key=v`, `key==v`, `key!=v`, `key in (a,b)`,
# `key notin (a,b)`. Commas inside the parentheses of a set belong to that set, not to the selector.
_SET = re.compile(r"^\s*(?P<key>[^\s!=(),]+)\s+(?P<op>in|notin)\s+\((?P<values>[^)]*)\)\s*$")
_EQUALITY = re.compile(r"^\s*(?P<key>[^\s!=(),]+)\s*(?P<op>==|=|!=)\s*(?P<value>[^\s!=(),]*)\s*$")
_EXISTS = re.compile(r"^\s*(?P<neg>!?)\s*(?P<key>[^\s!=(),]+)\s*$")


@dataclass(frozen=True)
class Requirement:
    key: str
    op: str  # in, notin, exists, !exists
    values: frozenset[str]

    def matches(self, labels: dict[str, str]) -> bool:
        if self.op == "exists":
            return self.key in labels
        if self.op == "!exists":
            return self.key not in labels
        if self.op == "in":
            return self.key in labels and labels[self.key] in self.values
        return self.key not in labels or labels[self.key] not in self.values  # notin


def _split(selector: str) -> list[str]:
    parts, depth, current = [], 0, ""
    for char in selector:
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    parts.append(current)
    return [p for p in parts if p.strip()]


def parse_label_selector(selector: str) -> list[Requirement]:
    requirements = []
    for part in _split(selector):
        if m := _SET.match(part):
            values = frozenset(v.strip() for v in m["values"].split(",") if v.strip())
            requirements.append(Requirement(m["key"], m["op"], values))
        elif m := _EQUALITY.match(part):
            op = "notin" if m["op"] == "!=" else "in"
            requirements.append(Requirement(m["key"], op, frozenset({m["value"]})))
        elif m := _EXISTS.match(part):
            requirements.append(Requirement(m["key"], "!exists" if m["neg"] else "exists", frozenset()))
        else:
            raise errors.bad_request(f"unable to parse requirement: {part.strip()!r} in labelSelector {selector!r}")
    return requirements


def label_predicate(selector: str | None) -> Predicate:
    if not selector:
        return lambda obj: True
    requirements = parse_label_selector(selector)

    def matches(obj: dict[str, Any]) -> bool:
        labels = (obj.get("metadata") or {}).get("labels") or {}
        return all(r.matches(labels) for r in requirements)

    return matches


# Field selectors: every resource supports metadata.name and metadata.namespace; a few built-ins
# add their own (events: involvedObject.*, reason, type) which clients use to find an object's events.
_FIELD_PATHS = {
    "metadata.name": ("metadata", "name"),
    "metadata.namespace": ("metadata", "namespace"),
    "involvedObject.kind": ("involvedObject", "kind"),
    "involvedObject.name": ("involvedObject", "name"),
    "involvedObject.namespace": ("involvedObject", "namespace"),
    "involvedObject.uid": ("involvedObject", "uid"),
    "reason": ("reason",),
    "type": ("type",),
    "status.phase": ("status", "phase"),
}


def _field(obj: dict[str, Any], path: tuple[str, ...]) -> str:
    node: Any = obj
    for key in path:
        node = node.get(key) if isinstance(node, dict) else None
    return "" if node is None else str(node)


def field_predicate(selector: str | None) -> Predicate:
    if not selector:
        return lambda obj: True
    checks: list[tuple[tuple[str, ...], bool, str]] = []
    for part in _split(selector):
        m = re.match(r"^\s*([^\s!=]+)\s*(==|=|!=)\s*(.*?)\s*$", part)
        if not m:
            raise errors.bad_request(f"invalid selector: {selector!r}; can't understand {part.strip()!r}")
        if m[1] not in _FIELD_PATHS:
            raise errors.bad_request(f"field label not supported: {m[1]}")
        checks.append((_FIELD_PATHS[m[1]], m[2] != "!=", m[3]))

    def matches(obj: dict[str, Any]) -> bool:
        return all((_field(obj, path) == value) is equal for path, equal, value in checks)

    return matches
