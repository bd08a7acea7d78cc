"""What a model server answered, instance by instance, and whether two answers agree.

The router compares a shadow's answer with the stable's, and scores every version's answer
against ground-truth labels sent to ``POST /feedback``. Both need the same two things: the
answer split into one prediction per request instance (whatever the protocol), and one rule for
"these two predictions are the same" — labels (ints, strings, booleans) must be equal, floats
must be close within a relative/absolute tolerance, lists and objects agree element by element.

What counts as what (the quality signals in canary/traffic/serving_metrics.py follow the same rules):

- a **class label**: an int, a string or a boolean;
- a **probability vector**: a list of two or more finite numbers in [0, 1] that sum to 1
  (within 1e-3) — V1 ``predictions`` as ``[[p0, p1, ...], ...]``, or a V2 output of shape
  ``[N, K]``. Its label is the index of the largest probability (the first on a tie), and it is
  compared with other predictions and with labels by that label: two retrained models never
  give identical probabilities, but they should give the same class. Ground-truth labels for a
  probability model are class indices;
- a V2 answer with several outputs is one object per instance; its label is the output named
  ``label``/``class``/``prediction(s)``/``predicted_class``, else the argmax of an output whose
  name contains ``prob`` (``probabilities``, ``predict_proba``) and holds a probability vector;
- a **regression value**: a float. Two agree when ``|a - b| <= max(rel * max(|a|, |b|), abs)``
  (math.isclose with the Tolerance's ``rel`` and ``abs``): the relative difference
  ``|a - b| / max(|a|, |b|)``, which the shadow's relative-error histogram measures, is within
  ``rel``, or the two are within ``abs`` of each other (for values near zero);
- anything else (lists that are not probabilities, objects without a label) is compared as a
  whole, element by element, and is neither a class nor a value for the drift signals.
"""

from __future__ import annotations

import json
import math
from enum import StrEnum
from typing import Any

from canary.decision.tolerance import DEFAULT_TOLERANCE, Tolerance


class Protocol(StrEnum):
    """The two KServe inference protocols the router forwards."""

    V1 = "v1"
    V2 = "v2"

    def path(self, model: str) -> str:
        return f"/v1/models/{model}:predict" if self is Protocol.V1 else f"/v2/models/{model}/infer"


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


# A probability vector may be off 1 by float32 rounding over many classes, not by more.
PROBABILITY_SUM_TOLERANCE = 1e-3
_LABEL_OUTPUTS = ("label", "labels", "class", "predicted_class", "prediction", "predictions")


def probability_vector(value: Any) -> tuple[float, ...] | None:
    """``value`` as class probabilities, or None when it is not a probability vector.

    Two or more finite numbers (booleans excluded), each in [0, 1], summing to 1 within
    PROBABILITY_SUM_TOLERANCE. One number is never a vector: a lone score in [0, 1] cannot be
    told apart from a regression value.
    """
    if not isinstance(value, list) or len(value) < 2 or not all(_is_number(v) for v in value):
        return None
    probs = tuple(float(v) for v in value)
    if not all(math.isfinite(p) and 0.0 <= p <= 1.0 for p in probs):
        return None
    if abs(math.fsum(probs) - 1.0) > PROBABILITY_SUM_TOLERANCE:
        return None
    return probs


def argmax(probs: tuple[float, ...]) -> int:
    """Index of the largest probability; the first one on a tie."""
    best = 0
    for i, p in enumerate(probs):
        if p > probs[best]:
            best = i
    return best


def instance_probabilities(value: Any) -> tuple[float, ...] | None:
    """The probability vector of one instance: the instance itself, or a V2 ``*prob*`` output."""
    probs = probability_vector(value)
    if probs is not None or not isinstance(value, dict):
        return probs
    for name, output in value.items():
        if "prob" in str(name).lower():
            probs = probability_vector(output)
            if probs is not None:
                return probs
    return None


def _is_label(value: Any) -> bool:
    return isinstance(value, (str, bool)) or (isinstance(value, int) and not isinstance(value, bool))


def predicted_label(value: Any) -> Any | None:
    """The class an instance predicts, or None when it predicts no class (a value, a list...).

    A label as is; a probability vector's argmax; a V2 object's label output, else the argmax of
    its probability output.
    """
    if _is_label(value):
        return value
    if isinstance(value, dict):
        for name in _LABEL_OUTPUTS:
            if name in value and _is_label(value[name]):
                return value[name]
    probs = instance_probabilities(value)
    return argmax(probs) if probs is not None else None


def regression_value(value: Any) -> float | None:
    """A float prediction as a number for the value histogram; None for labels and the rest."""
    if isinstance(value, float) and math.isfinite(value):
        return value
    return None


def _has_class_structure(value: Any) -> bool:
    """A probability vector, or an object with a label or probability output."""
    if isinstance(value, dict):
        return predicted_label(value) is not None
    return instance_probabilities(value) is not None


def predictions_agree(a: Any, b: Any, tolerance: Tolerance = DEFAULT_TOLERANCE) -> bool:
    """Whether two predictions (or a prediction and a label) are the same prediction.

    When either side carries probabilities (a probability vector, or an object with a label or
    probability output), the two agree when their labels do; otherwise as values_agree.
    """
    if _has_class_structure(a) or _has_class_structure(b):
        la, lb = _comparable_label(a), _comparable_label(b)
        if la is None or lb is None:
            return False
        # Labels compare exactly; a label 2.0 still names class index 2.
        return values_agree(la, lb, DEFAULT_TOLERANCE)
    return values_agree(a, b, tolerance)


def _comparable_label(value: Any) -> Any | None:
    label = predicted_label(value)
    return value if label is None and _is_number(value) else label


# The largest relative difference: two numbers of opposite signs (or one NaN).
MAX_RELATIVE_ERROR = 2.0


def relative_error(a: float, b: float) -> float:
    """``|a - b| / max(|a|, |b|)`` in [0, 2]: symmetric, 0 when equal, as math.isclose's rel_tol.

    ``values_agree(a, b, Tolerance(rel=r, abs=0))`` is the same rule as ``relative_error(a, b) <= r``.
    Two NaNs are the same (0), one NaN is as far as it gets (2).
    """
    if math.isnan(a) or math.isnan(b):
        return 0.0 if math.isnan(a) and math.isnan(b) else MAX_RELATIVE_ERROR
    if a == b:  # also both infinite with the same sign, and both zero
        return 0.0
    scale = max(abs(a), abs(b))
    if math.isinf(scale):  # unequal, and one of them infinite
        return MAX_RELATIVE_ERROR
    return abs(a - b) / scale


def relative_errors(reference: list[Any], other: list[Any] | None) -> list[float]:
    """Per instance, how far ``other``'s regression values are from ``reference``'s.

    Only instances where the reference is a float (a regression prediction) count. When the
    other answer is missing or cannot be matched instance by instance, each such instance is
    MAX_RELATIVE_ERROR: a version that cannot answer must not look close.
    """
    numeric = [i for i, r in enumerate(reference) if isinstance(r, float)]
    if not numeric:
        return []
    if other is None or len(other) != len(reference):
        return [MAX_RELATIVE_ERROR] * len(numeric)
    out = []
    for i in numeric:
        theirs = other[i]
        if _is_number(theirs):
            out.append(relative_error(float(reference[i]), float(theirs)))
        else:
            out.append(MAX_RELATIVE_ERROR)
    return out


def count_agreements(reference: list[Any], other: list[Any] | None, tolerance: Tolerance = DEFAULT_TOLERANCE) -> int:
    """How many instances of ``other`` agree with ``reference``, position by position.

    An answer that is missing or has a different number of instances agrees on none: it
    could not be matched to the instances at all. Probability answers agree on their labels
    (predictions_agree).
    """
    if other is None or len(other) != len(reference):
        return 0
    return sum(1 for x, y in zip(reference, other, strict=True) if predictions_agree(x, y, tolerance))
