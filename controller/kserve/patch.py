"""The patch that takes an InferenceService as read to the document `documents` wants.

JSON merge patch (RFC 7386), sent with `PATCH_CONTENT_TYPE`: custom resources accept no
strategic merge patch, and a JSON patch would have to know the current layout path by path. In a
merge patch an object is merged key by key, so a field that must go is sent as an explicit null
(omitting it would keep it); lists are replaced whole, which is what `spec.canary` (an atomic
list in KServe's CRD) needs. The kubernetes client's `CustomObjectsApi.patch_namespaced_custom_object`
sends this content type by default for a dict body and keeps None values as JSON null.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from controller.kserve.document_paths import value_at

PATCH_CONTENT_TYPE = "application/merge-patch+json"

_PREDICTOR = ("spec", "predictor")
# KServe's older per-framework predictor fields: one implementation per predictor, and ours is `model`.
_FRAMEWORKS = (
    "sklearn",
    "xgboost",
    "tensorflow",
    "pytorch",
    "triton",
    "onnx",
    "pmml",
    "lightgbm",
    "paddle",
    "huggingface",
)
# Fields this module owns, each replaced whole (set, or removed with a null when not desired).
# Not `predictor.name` (the user's; KServe refuses a rename without a model change) nor `spec.canary`
# (no released KServe splits traffic by it; an entry someone else wrote is theirs).
_OWNED = (
    (*_PREDICTOR, "canaryTrafficPercent"),
    (*_PREDICTOR, "logger"),
    (*_PREDICTOR, "model", "name"),
    (*_PREDICTOR, "model", "modelFormat"),
    (*_PREDICTOR, "model", "runtime"),
    (*_PREDICTOR, "model", "protocolVersion"),
    (*_PREDICTOR, "model", "storageUri"),
    *((*_PREDICTOR, framework) for framework in _FRAMEWORKS),
)
# Overrides: set when the spec gives them, else left alone (KServe's webhook defaults resources).
_OWNED_WHEN_SET = (
    (*_PREDICTOR, "serviceAccountName"),
    (*_PREDICTOR, "model", "resources"),
    (*_PREDICTOR, "model", "env"),
)
# Maps others write too: we own the keys we set and any key under our prefix.
_KEYED = (("metadata", "labels"), ("metadata", "annotations"), (*_PREDICTOR, "labels"))
_OUR_PREFIX = "modelrollout.io/"
_MISSING = object()


def merge_patch(current: Mapping[str, Any], want: Mapping[str, Any]) -> dict[str, Any] | None:
    """The JSON merge patch (send as `PATCH_CONTENT_TYPE`) taking `current` to `want`; None if nothing differs.

    Only the fields this module owns are compared: KServe's defaults and other tools' labels
    are left alone, and a dict-valued field that already contains everything wanted (plus
    server defaults) is not re-sent, so a steady state costs no write. A field that must go is
    sent as null — a merge patch merges objects, so omitting it would keep it. The patch carries
    `current`'s `metadata.resourceVersion`: if the object changed since it was read, the API
    server answers 409 and the caller re-reads instead of overwriting a change it never saw.
    """
    for key in ("name", "namespace"):
        if value_at(current, "metadata", key) != value_at(want, "metadata", key):
            raise ValueError(
                f"merge_patch: current is {value_at(current, 'metadata', 'namespace')}/{value_at(current, 'metadata', 'name')} "
                f"but want is {value_at(want, 'metadata', 'namespace')}/{value_at(want, 'metadata', 'name')}"
            )
    patch: dict[str, Any] = {}
    for path in _OWNED + _OWNED_WHEN_SET:
        wanted, present = _at(want, path), _at(current, path)
        if wanted is _MISSING:
            if path in _OWNED and present is not _MISSING and present is not None:
                _put(patch, path, None)
        elif present is _MISSING or not _covers(present, wanted):
            _put(patch, path, _replacement(present, wanted))
    for path in _KEYED:
        wanted_map, present_map = _at(want, path), _at(current, path)
        wanted_map = wanted_map if isinstance(wanted_map, Mapping) else {}
        present_map = present_map if isinstance(present_map, Mapping) else {}
        ours = set(wanted_map) | {k for k in present_map if k.startswith(_OUR_PREFIX)}
        for key in sorted(ours):
            if key not in wanted_map:
                _put(patch, (*path, key), None)
            elif present_map.get(key, _MISSING) != wanted_map[key]:
                _put(patch, (*path, key), wanted_map[key])
    if not patch:
        return None
    resource_version = value_at(current, "metadata", "resourceVersion")
    if resource_version is not None:
        patch.setdefault("metadata", {})["resourceVersion"] = resource_version
    return patch


def _covers(present: Any, wanted: Any) -> bool:
    """`present` holds everything in `wanted` (it may hold more: defaults the server added)."""
    if isinstance(wanted, Mapping):
        return isinstance(present, Mapping) and all(k in present and _covers(present[k], v) for k, v in wanted.items())
    if isinstance(wanted, list):
        return isinstance(present, list) and len(present) == len(wanted) and all(map(_covers, present, wanted))
    return type(present) is type(wanted) and present == wanted


def _replacement(present: Any, wanted: Any) -> Any:
    """The merge-patch value that makes `present` exactly `wanted`: extra object keys become null."""
    if isinstance(wanted, Mapping) and isinstance(present, Mapping):
        value = {k: _replacement(present.get(k, _MISSING), v) for k, v in wanted.items()}
        value.update({k: None for k in present if k not in wanted})
        return value
    return copy.deepcopy(wanted)


def _at(obj: Any, path: tuple[str, ...]) -> Any:
    for key in path:
        if not isinstance(obj, Mapping) or key not in obj:
            return _MISSING
        obj = obj[key]
    return obj


def _put(patch: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    node = patch
    for key in path[:-1]:
        node = node.setdefault(key, {})
    node[path[-1]] = value
