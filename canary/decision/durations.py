"""Durations as users write them ("30s", "2m", "1h30m", "500ms") and as the engine needs them.

Kept as strings in the spec (they round-trip into the CRD unchanged, and `kubectl get -o yaml`
shows what the user wrote) and parsed to seconds where time is computed.
"""

from __future__ import annotations

import re

_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
# One or more number+unit parts, nothing else; the CRD schema carries the same pattern.
DURATION_PATTERN = r"^(\d+(\.\d+)?(ms|s|m|h))+$"


def parse_duration(text: str) -> float:
    """Seconds in a duration string; ValueError naming the accepted form otherwise."""
    if not isinstance(text, str) or not re.fullmatch(DURATION_PATTERN, text.strip()):
        raise ValueError(
            f"invalid duration {text!r}: use a number and a unit (ms, s, m, h), e.g. '30s', '2m', '1h30m'"
        )
    return sum(float(n) * _UNIT_SECONDS[u] for n, u in _PART.findall(text.strip()))


def format_duration(seconds: float) -> str:
    """The shortest readable form for a PromQL range or a message: 90 -> '1m30s'."""
    if seconds < 1:
        return f"{max(1, round(seconds * 1000))}ms"
    whole = int(round(seconds))
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [f"{hours}h" if hours else "", f"{minutes}m" if minutes else "", f"{secs}s" if secs else ""]
    return "".join(parts) or "0s"
