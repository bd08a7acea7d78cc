"""Reading a value deep inside a Kubernetes document (a dict from the API), where any level may be
missing or of another shape: `value_at(isvc, "status", "components", "predictor")`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def value_at(obj: Any, *path: str) -> Any:
    """The value at `path` in `obj`, or None when a level is missing or not a mapping."""
    for key in path:
        if not isinstance(obj, Mapping):
            return None
        obj = obj.get(key)
    return obj
