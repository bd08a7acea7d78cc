"""The targets a benchmark states, printed with what it measured and whether each is met.

Every benchmark ends its report with a ``targets:`` block of such lines, so that ``make bench``
shows each target beside its figure (issue 15): one format for all, read by people and by the
smoke tests (tests/integration/test_benchmarks_smoke.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class Target:
    what: str  # e.g. "router CPU per request (8 clients)"
    op: Literal["<=", ">=", "<"]
    limit: float
    measured: float
    unit: str = ""  # e.g. " ms", "x"
    note: str = ""  # how it was measured, when the line alone does not say

    @property
    def met(self) -> bool:
        if not math.isfinite(self.measured):
            return False
        if self.op == "<=":
            return self.measured <= self.limit
        if self.op == "<":
            return self.measured < self.limit
        return self.measured >= self.limit

    def line(self) -> str:
        note = f" ({self.note})" if self.note else ""
        return (
            f"target: {self.what} {self.op} {self.limit:g}{self.unit}: measured {self.measured:.3g}{self.unit}{note}"
            f" — {'met' if self.met else 'NOT met'}"
        )


def render(targets: list[Target]) -> str:
    return "\n".join(["targets:", *(t.line() for t in targets)])
