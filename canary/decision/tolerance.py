"""When two regression predictions count as the same: the comparison tolerance, in one place.

`Tolerance` is the value (math.isclose's ``rel`` and ``abs``) every part that compares predictions
uses: the spec's `shadow.comparison` turns into one (`ShadowComparison.tolerance`), the engine's
routing carries one (`controller.platform.Routing.tolerance`), and it travels to the router and the
shadow comparator as a `Comparison`, the wire form whose left-out fields are that process's own
default. `tolerance_value` is the one validation of a tolerance number, for all of them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field
from pydantic.alias_generators import to_camel


def tolerance_value(value: Any) -> float:
    """``value`` as a tolerance: a finite number >= 0; ValueError saying what is wrong otherwise.

    Booleans and strings are refused rather than coerced: ``true`` is no tolerance, and a quoted
    number is text to a Kubernetes API server too (the spec loader reads an unquoted ``1e-6`` as
    the number it is, as YAML 1.2 does).
    """
    if isinstance(value, str):
        try:
            float(value)
        except ValueError:
            raise ValueError(f"expected a number, got the string {value!r}") from None
        raise ValueError(f"expected a number, got the string {value!r} (write it without quotes)")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"expected a number, got {type(value).__name__} {value!r}")
    number = float(value)
    if not math.isfinite(number) or number < 0:
        raise ValueError(f"expected a finite number >= 0, got {value!r}")
    return number


# A tolerance field of a pydantic model. The bound is stated for the JSON schema (and the CRD);
# tolerance_value is the authority and runs first, so its message is the one users see.
ToleranceValue = Annotated[float, Field(ge=0), BeforeValidator(tolerance_value)]


@dataclass(frozen=True)
class Tolerance:
    """How close two floats must be to count as the same prediction (math.isclose semantics):
    ``|a - b| <= max(rel * max(|a|, |b|), abs)``."""

    rel: float = 1e-6
    abs: float = 1e-9

    def __post_init__(self) -> None:
        for name in ("rel", "abs"):
            try:
                tolerance_value(getattr(self, name))
            except ValueError as exc:
                raise ValueError(f"Tolerance.{name}: {exc}") from None


DEFAULT_TOLERANCE = Tolerance()


class Comparison(BaseModel):
    """One rollout's tolerance as sent to the component that compares its predictions.

    The body part ``comparison`` of the router's ``PUT /admin/routing`` and of the shadow
    comparator's ``PUT /admin/shadows``: it travels with the routing, so each rollout (each
    routing applied) has its own without restarting anything. A field left out is the process's
    default (its ``--rel-tolerance``/``--abs-tolerance``).
    """

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True)

    relative_tolerance: ToleranceValue | None = Field(
        None, description="rel: regression predictions agree when |a-b| <= max(rel x max(|a|,|b|), abs)"
    )
    absolute_tolerance: ToleranceValue | None = Field(None, description="abs, for values near zero")

    @classmethod
    def of(cls, tolerance: Tolerance) -> Comparison:
        """The comparison that asks for exactly ``tolerance`` (both fields set)."""
        return cls(relative_tolerance=tolerance.rel, absolute_tolerance=tolerance.abs)

    def tolerance(self, default: Tolerance) -> Tolerance:
        """This comparison's tolerance, ``default``'s value for each field left out."""
        return Tolerance(
            rel=default.rel if self.relative_tolerance is None else self.relative_tolerance,
            abs=default.abs if self.absolute_tolerance is None else self.absolute_tolerance,
        )


def effective_tolerance(comparison: Comparison | None, default: Tolerance) -> Tolerance:
    """The tolerance a routing asks for: its ``comparison``, else the process default."""
    return default if comparison is None else comparison.tolerance(default)
