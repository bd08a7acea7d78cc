"""A failed check said in plain words, for the first line of a rollback's reason.

A check's own message is for the reader who wants the evidence (intervals, e-values, thresholds);
the person who sees "RolledBack" first wants to know what is wrong with the version, e.g.
"v4 answers less accurately than v2: 71% vs 96% of 291 labelled requests". The engine puts this
sentence first and the checks' messages after it (issue 11 item 4).

Only what the values say is said: a template's kind comes from its name (the builtin ones) or,
for a custom query, from nothing — then the sentence names the check and its values.
"""

from __future__ import annotations

from canary.decision.analysis import CheckResult


def _percent(value: float) -> str:
    return f"{value * 100:.3g}%"


def _seconds(value: float) -> str:
    return f"{value * 1000:.3g} ms" if value < 1 else f"{value:.3g} s"


def _of(samples: float | None, what: str) -> str:
    return f" of {samples:.0f} {what}" if samples else ""


def plain_sentence(template: str | None, result: CheckResult, candidate: str, stable: str) -> str:
    """What a failed check says about version `candidate` (compared with `stable`), in one sentence."""
    cand, base = result.candidate, result.baseline
    v, s = f"v{candidate}", f"v{stable}"
    name = template or ""
    if name.startswith("latency_p"):
        quantile = name.removeprefix("latency_")
        if cand is not None and base is not None:
            return f"{v} is slower than {s}: {quantile} {_seconds(cand)} vs {_seconds(base)}"
        if cand is not None:
            return f"{v} is too slow: {quantile} {_seconds(cand)}"
        return f"{v} is slower than {s} ({quantile})"
    if name == "error_rate":
        if cand is not None and base is not None:
            return f"{v} fails more requests than {s}: {_percent(cand)} vs {_percent(base)}{_of(result.samples, 'requests')}"
        if cand is not None:
            return f"{v} fails too many requests: {_percent(cand)}{_of(result.samples, 'requests')}"
        return f"{v} fails more requests than {s}"
    if name == "accuracy":
        if cand is not None and base is not None:
            return (
                f"{v} answers less accurately than {s}: {_percent(cand)} vs {_percent(base)}"
                f"{_of(result.samples, 'labelled requests')}"
            )
        if cand is not None:
            return f"{v} answers too inaccurately: {_percent(cand)} correct{_of(result.samples, 'labelled requests')}"
        return f"{v} answers less accurately than {s}"
    if name == "shadow_agreement":
        agreed = f" on only {_percent(cand)}" if cand is not None else ""
        return f"{v} disagrees with {s}{agreed}{_of(result.samples, 'compared predictions')}"
    values = f": {cand:.4g}" + (f" vs {base:.4g}" if base is not None else "") if cand is not None else ""
    return f"{v} fails check {result.name!r}{values}"
