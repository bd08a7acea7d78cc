"""What a model server answered, instance by instance, and whether two answers agree.

The router compares a shadow's answer with the stable's, and scores every version's answer
against ground-truth labels sent to ``POST /feedback``. Both need the same two things: the
answer split into one prediction per request instance (whatever the protocol), and one rule for
"these two predictions are the same" — labels (ints, strings, booleans) must be equal, floats
must be close within a relative/absolute tolerance, lists and objects agree element by element.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from enum import StrEnum
from typing import Any


class Protocol(StrEnum):
    """The two KServe inference protocols the router forwards."""

    V1 = "v1"
    V2 = "v2"

    def path(self, model: str) -> str:
        return f"/v1/models/{model}:predict" if self is Protocol.V1 else f"/v2/models/{model}/infer"


@dataclass(frozen=True)
class Tolerance:
    """How close two floats must be to count as the same prediction (math.isclose semantics)."""

    rel: float = 1e-6
    abs: float = 1e-9


DEFAULT_TOLERANCE = Tolerance()


def v1_instances(body: Any) -> list[Any] | None:
    """``{"predictions": [...]}`` -> the list, one item per instance; None when not that shape."""
    if isinstance(body, dict) and isinstance(body.get("predictions"), list):
        return body["predictions"]
    return None


def _flatten(data: Any) -> list[Any]:
    # V2 JSON allows tensor data either flat (row-major) or nested; normalise to flat.
    if not isinstance(data, list):
        return [data]
    flat: list[Any] = []
    for item in data:
        if isinstance(item, list):
            flat.extend(_flatten(item))
        else:
            flat.append(item)
    return flat


def v2_instances(body: Any) -> list[Any] | None:
    """V2 ``outputs`` -> one prediction per instance (the first dimension of every output).

    One output: each instance is that output's row (a scalar when the row has one value).
    Several outputs: each instance is ``{output name: row}``. None when the answer does not
    have that shape, or the outputs disagree on the number of instances.
    """
    if not isinstance(body, dict) or not isinstance(body.get("outputs"), list) or not body["outputs"]:
        return None
    per_output: dict[str, list[Any]] = {}
    count: int | None = None
    for output in body["outputs"]:
        if not isinstance(output, dict):
            return None
        shape, data = output.get("shape"), output.get("data")
        if not isinstance(shape, list) or not shape or not all(isinstance(d, int) and d >= 0 for d in shape):
            return None
        flat = _flatten(data)
        rows = shape[0]
        width = math.prod(shape[1:])
        if len(flat) != rows * width or (count is not None and rows != count):
            return None
        count = rows
        per_output[str(output.get("name", len(per_output)))] = [
            flat[i] if width == 1 else flat[i * width : (i + 1) * width] for i in range(rows)
        ]
    if len(per_output) == 1:
        return next(iter(per_output.values()))
    assert count is not None
    return [{name: rows[i] for name, rows in per_output.items()} for i in range(count)]


def instances_from_body(protocol: Protocol, content: bytes) -> list[Any] | None:
    """Parse a model server's 2xx body into per-instance predictions, or None if unusable."""
    try:
        body = json.loads(content)
    except (ValueError, UnicodeDecodeError):
        return None
    return v1_instances(body) if protocol is Protocol.V1 else v2_instances(body)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def values_agree(a: Any, b: Any, tolerance: Tolerance = DEFAULT_TOLERANCE) -> bool:
    """True when two predictions (or a prediction and a label) are the same.

    Integers, strings and booleans are labels: equal or not. When either side is a float the
    two are compared with math.isclose (two NaNs agree: the same model gives NaN twice).
    Lists agree element-wise and must have the same length; objects need the same keys.
    """
    if _is_number(a) and _is_number(b):
        if isinstance(a, int) and isinstance(b, int):
            return a == b
        fa, fb = float(a), float(b)
        if math.isnan(fa) or math.isnan(fb):
            return math.isnan(fa) and math.isnan(fb)
        return math.isclose(fa, fb, rel_tol=tolerance.rel, abs_tol=tolerance.abs)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(values_agree(x, y, tolerance) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(values_agree(a[k], b[k], tolerance) for k in a)
    if type(a) is not type(b) and not (_is_number(a) and _is_number(b)):
        return False
    return bool(a == b)


def count_agreements(reference: list[Any], other: list[Any] | None, tolerance: Tolerance = DEFAULT_TOLERANCE) -> int:
    """How many instances of ``other`` agree with ``reference``, position by position.

    An answer that is missing or has a different number of instances agrees on none: it
    could not be matched to the instances at all.
    """
    if other is None or len(other) != len(reference):
        return 0
    return sum(1 for x, y in zip(reference, other, strict=True) if values_agree(x, y, tolerance))
