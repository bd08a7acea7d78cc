"""The patch formats of the Kubernetes API: JSON patch, JSON merge patch, strategic merge patch.

All functions are pure: they return a new document and never touch their inputs. A patch that
cannot apply raises `PatchError`; the emulator answers it with 422 as kube-apiserver does (kopf
relies on that for its `test /metadata/resourceVersion` guard).
"""

from __future__ import annotations

import copy
from typing import Any


class PatchError(ValueError):
    """The patch is well-formed but does not apply to this document (a failed `test`, a bad path)."""


class MalformedPatch(ValueError):
    """The patch document itself is not a patch of its declared type."""


# --- RFC 6902 JSON patch -------------------------------------------------------------------------


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise PatchError(f"invalid JSON pointer {path!r}: must start with '/'")
    return [token.replace("~1", "/").replace("~0", "~") for token in path[1:].split("/")]


def _index(container: list[Any], token: str, *, for_insert: bool) -> int:
    if token == "-" and for_insert:
        return len(container)
    if not token.isdigit() or (token != "0" and token.startswith("0")):
        raise PatchError(f"invalid array index {token!r}")
    index = int(token)
    if index > len(container) or (index == len(container) and not for_insert):
        raise PatchError(f"array index {index} out of bounds (length {len(container)})")
    return index


def _parent(doc: Any, tokens: list[str], path: str) -> tuple[Any, str]:
    node = doc
    for token in tokens[:-1]:
        if isinstance(node, dict) and token in node:
            node = node[token]
        elif isinstance(node, list):
            node = node[_index(node, token, for_insert=False)]
        else:
            raise PatchError(f"path {path!r} does not exist")
    return node, tokens[-1]


def _get(doc: Any, path: str) -> Any:
    node = doc
    for token in _pointer(path):
        if isinstance(node, dict) and token in node:
            node = node[token]
        elif isinstance(node, list):
            node = node[_index(node, token, for_insert=False)]
        else:
            raise PatchError(f"path {path!r} does not exist")
    return node


def _add(doc: Any, path: str, value: Any) -> Any:
    tokens = _pointer(path)
    if not tokens:
        return value
    parent, last = _parent(doc, tokens, path)
    if isinstance(parent, dict):
        parent[last] = value
    elif isinstance(parent, list):
        parent.insert(_index(parent, last, for_insert=True), value)
    else:
        raise PatchError(f"path {path!r} does not exist")
    return doc


def _remove(doc: Any, path: str) -> Any:
    tokens = _pointer(path)
    if not tokens:
        raise PatchError("cannot remove the whole document")
    parent, last = _parent(doc, tokens, path)
    if isinstance(parent, dict) and last in parent:
        del parent[last]
    elif isinstance(parent, list):
        del parent[_index(parent, last, for_insert=False)]
    else:
        raise PatchError(f"path {path!r} does not exist: unable to remove nonexistent key")
    return doc


def json_patch(doc: Any, ops: Any) -> Any:
    """Apply an RFC 6902 patch (add, remove, replace, move, copy, test)."""
    if not isinstance(ops, list) or not all(isinstance(op, dict) for op in ops):
        raise MalformedPatch("a JSON patch must be a list of operation objects")
    result = copy.deepcopy(doc)
    for op in ops:
        kind, path = op.get("op"), op.get("path")
        if not isinstance(path, str):
            raise MalformedPatch(f"operation {op!r} has no string 'path'")
        if kind in ("add", "replace", "test") and "value" not in op:
            raise MalformedPatch(f"operation {op!r} has no 'value'")
        if kind == "add":
            result = _add(result, path, copy.deepcopy(op["value"]))
        elif kind == "remove":
            result = _remove(result, path)
        elif kind == "replace":
            _get(result, path)  # must exist
            result = _add(_remove(result, path), path, copy.deepcopy(op["value"])) if path else op["value"]
        elif kind in ("move", "copy"):
            source = op.get("from")
            if not isinstance(source, str):
                raise MalformedPatch(f"operation {op!r} has no string 'from'")
            value = copy.deepcopy(_get(result, source))
            if kind == "move":
                result = _remove(result, source)
            result = _add(result, path, value)
        elif kind == "test":
            actual = _get(result, path)
            if (
                actual != op["value"]
                or type(actual) is not type(op["value"])
                and not _both_numbers(actual, op["value"])
            ):
                raise PatchError(f"testing value {path} failed: test failed")
        else:
            raise MalformedPatch(f"unknown JSON patch operation {kind!r}")
    return result


def _both_numbers(a: Any, b: Any) -> bool:
    return all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in (a, b))


# --- RFC 7386 JSON merge patch -------------------------------------------------------------------


def merge_patch(doc: Any, patch: Any) -> Any:
    """RFC 7386: objects merge recursively, `null` removes a key, anything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(doc) if isinstance(doc, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


# --- Strategic merge patch (built-in kinds only) --------------------------------------------------

# The real merge keys live in each built-in type's Go struct tags; `name` is the key of nearly all
# the lists a client patches (containers, ports, env, volumes, volumeMounts), so it stands for them.
_MERGE_KEY = "name"


def strategic_merge_patch(doc: Any, patch: Any) -> Any:
    """An approximation of strategic merge patch for built-in kinds.

    Like a merge patch, plus: lists of objects that all carry a `name` merge element-wise by name,
    `$patch: delete|replace` directives act on maps and list elements, and the bookkeeping keys
    kubectl sends (`$setElementOrder/...`, `$retainKeys`, `$deleteFromPrimitiveList/...`) are honoured
    or dropped. Merge keys other than `name` and list ordering are not modelled.
    """
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    directive = patch.get("$patch")
    if directive == "delete":
        return None
    if directive == "replace":
        return {k: copy.deepcopy(v) for k, v in patch.items() if k != "$patch"}
    result = copy.deepcopy(doc) if isinstance(doc, dict) else {}
    retain = patch.get("$retainKeys")
    for key, value in patch.items():
        if key in ("$patch", "$retainKeys") or key.startswith("$setElementOrder/"):
            continue
        if key.startswith("$deleteFromPrimitiveList/"):
            field = key.split("/", 1)[1]
            if isinstance(result.get(field), list):
                result[field] = [item for item in result[field] if item not in value]
            continue
        if value is None:
            result.pop(key, None)
        elif isinstance(value, list) and _mergeable(result.get(key), value):
            result[key] = _merge_named_lists(result[key], value)
        else:
            merged = strategic_merge_patch(result.get(key), value)
            if merged is None:
                result.pop(key, None)
            else:
                result[key] = merged
    if isinstance(retain, list):
        result = {k: v for k, v in result.items() if k in retain}
    return result


def _mergeable(current: Any, patch: list[Any]) -> bool:
    return (
        isinstance(current, list)
        and all(isinstance(item, dict) and _MERGE_KEY in item for item in current)
        and all(isinstance(item, dict) and _MERGE_KEY in item for item in patch)
    )


def _merge_named_lists(current: list[dict[str, Any]], patch: list[dict[str, Any]]) -> list[dict[str, Any]]:
    result = [copy.deepcopy(item) for item in current]
    for item in patch:
        position = next((i for i, old in enumerate(result) if old[_MERGE_KEY] == item[_MERGE_KEY]), None)
        if item.get("$patch") == "delete":
            if position is not None:
                del result[position]
        elif position is None:
            result.append({k: copy.deepcopy(v) for k, v in item.items() if k != "$patch"})
        else:
            result[position] = strategic_merge_patch(result[position], item)
    return result
