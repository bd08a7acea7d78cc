"""The report's page: one self-contained HTML file (inline CSS) that links the PNGs beside it.

Every text that comes from outside — reasons, event messages, check names, model names — is
escaped: a metric called `<script>` shows as text.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from html import escape

import yaml

from canary.decision.engine import PHASE_CONDITIONS
from canary.decision.spec import MetricStatus, Phase
from controller.report.metrics import CheckEvidence, LatencyEvidence, bucket_quantile
from controller.report.sources import RolloutRecord
from controller.report.timeline import Attempt, RolloutEvent

_PHASE_CLASS = {
    Phase.SUCCEEDED: "good",
    Phase.PROMOTING: "good",
    Phase.ROLLED_BACK: "bad",
    Phase.ROLLING_BACK: "bad",
    Phase.ABORTED: "warn",
    Phase.PAUSED: "warn",
}

# The engine starts most event messages with the version they are about: "v3: ...", "v2 is the ...".
_NAMED_VERSION = re.compile(r"^v(\d+)\b")

_CSS = """
body { font-family: system-ui, -apple-system, Segoe UI, sans-serif; margin: 2rem auto; max-width: 1020px;
       color: #222; line-height: 1.4; padding: 0 1rem; }
h1 { margin-bottom: .2rem; } h2 { margin-top: 2rem; border-bottom: 1px solid #ddd; padding-bottom: .2rem; }
.meta { color: #555; } table { border-collapse: collapse; width: 100%; font-size: .9rem; margin: .5rem 0; }
th, td { border-bottom: 1px solid #eee; padding: .3rem .5rem; text-align: left; vertical-align: top; }
th { background: #f6f6f6; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
.decision { border-radius: 6px; padding: 1rem 1.2rem; margin: 1rem 0; border-left: 8px solid #999; background: #f7f7f7; }
.decision.good { border-color: #2e7d32; background: #edf7ed; } .decision.bad { border-color: #b00020; background: #fdecee; }
.decision.warn { border-color: #ef6c00; background: #fff4e5; }
.phase { font-size: 1.5rem; font-weight: 700; } .reason { font-size: 1.05rem; margin-top: .3rem; }
.pass { color: #2e7d32; font-weight: 600; } .fail { color: #b00020; font-weight: 600; }
.inconclusive { color: #757575; font-weight: 600; } .error { color: #8e24aa; font-weight: 600; }
.Warning { color: #b00020; } img { max-width: 100%; border: 1px solid #eee; margin: .5rem 0; }
.note { color: #666; font-size: .85rem; } pre { background: #f6f6f6; padding: .8rem; overflow-x: auto; font-size: .8rem; }
"""


@dataclass(frozen=True)
class Page:
    """What the page shows; images are file names relative to the page."""

    record: RolloutRecord
    attempt: Attempt
    every_attempt: Sequence[Attempt]  # of the status, the reported one included
    now: datetime
    summary: str
    timeline_image: str
    checks: Sequence[tuple[CheckEvidence, str]]  # evidence and its image
    latency: Sequence[LatencyEvidence]
    latency_image: str | None
    metrics_note: str | None  # why there are no metric plots (--no-metrics), or None
    prometheus: str | None


def _v(value: float | None) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{value:.4g}"


def _t(moment: datetime | None) -> str:
    return "-" if moment is None else moment.strftime("%Y-%m-%d %H:%M:%S %Z").strip()


def _verdict(verdict: str) -> str:
    return f'<span class="{escape(verdict)}">{escape(verdict)}</span>'


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]], numeric: Sequence[int] = ()) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = "".join(
        "<tr>" + "".join(f'<td class="num">{c}</td>' if i in numeric else f"<td>{c}</td>" for i, c in enumerate(row)) + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def decision_reason(attempt: Attempt) -> str:
    """Why it ended as it did: the reason of the move into Promoting or RollingBack (the checks,
    the deadline, the user), else of the last transition."""
    for t in reversed(attempt.transitions):
        if t.to in (Phase.PROMOTING, Phase.ROLLING_BACK):
            return t.reason
    return attempt.transitions[-1].reason


def decided_in(attempt: Attempt) -> str | None:
    """The step the decision was taken in (the segment before Promoting/RollingBack)."""
    for before, after in zip(attempt.segments, attempt.segments[1:]):
        if after.phase in (Phase.PROMOTING.value, Phase.ROLLING_BACK.value):
            return before.label
    return None


def _is_latest(page: Page) -> bool:
    """The status' checks, conditions and rollback kind describe only the latest attempt."""
    return not any(o.start > page.attempt.start for o in page.every_attempt)


def _decision(page: Page) -> str:
    a, status = page.attempt, page.record.status
    phase = a.final_phase
    took = ((a.end or page.now) - a.start).total_seconds()
    where = decided_in(a)
    lines = [
        f'<div class="decision {_PHASE_CLASS.get(phase, "")}">',
        f'<div class="phase">{escape(phase.value)}</div>',
        f'<div class="reason">{escape(decision_reason(a))}</div>',
        '<div class="meta">'
        + escape(
            f"v{a.version} against v{a.stable_version or '?'}"
            + (f"; decided in {where}" if where else "")
            + (f"; {took:.0f} s from start to rest" if a.end else f"; running for {took:.0f} s")
        )
        + "</div>",
    ]
    if _is_latest(page) and status.rollback_kind and phase in (Phase.ROLLED_BACK, Phase.ABORTED, Phase.ROLLING_BACK):
        lines.append(f'<div class="meta">rollback kind: {escape(status.rollback_kind)}</div>')
    lines.append("</div>")
    return "\n".join(lines)


def _recorded_checks(checks: Sequence[MetricStatus]) -> str:
    rows = [
        [
            escape(c.name),
            _verdict(c.verdict),
            _v(c.candidate),
            _v(c.baseline),
            _v(c.samples),
            escape(c.threshold),
            str(c.failures),
            escape(c.message),
            escape(_t(c.checked_at)),
        ]
        for c in checks
    ]
    return _table(
        ["check", "verdict", "candidate", "stable", "samples", "threshold", "failures", "detail", "checked at"],
        rows,
        numeric=(2, 3, 4, 6),
    )


def _per_step(checks: Sequence[tuple[CheckEvidence, str]], attempt: Attempt) -> str:
    segments = attempt.analysed()
    if not segments or not checks:
        return ""
    rows = []
    for segment in segments:
        row = [escape(segment.label), escape(_t(segment.end))]
        for evidence, _ in checks:
            window = next((w for w in evidence.windows if w.segment == segment), None)
            result = window.at_end if window is not None else None
            if window is None:
                row.append('<span class="note">not in this phase</span>')
            elif result is None:
                row.append("-")
            else:
                base = f" vs {_v(result.baseline)}" if result.baseline is not None else ""
                row.append(f"{_v(result.candidate)}{base} {_verdict(result.verdict)}")
        rows.append(row)
    headers = ["step", "ended", *(e.check.name for e, _ in checks)]
    return (
        "<h3>Each check at the end of each step</h3>"
        '<p class="note">Re-measured from Prometheus at the instant each step ended, with the query and window the '
        "controller used (candidate vs stable). Prometheus evaluates at its own scrape times, so a value may differ "
        "slightly from the one the controller saw a moment earlier.</p>"
        + _table(headers, rows)
    )


def _latency_table(histograms: Sequence[LatencyEvidence], attempt: Attempt) -> str:
    rows = []
    for h in histograms:
        if not h.has_data:
            continue
        for who, counts in ((f"v{attempt.version} ({h.role})", h.candidate), (f"v{attempt.stable_version} (stable)", h.baseline)):
            total = counts[-1] if counts else 0.0
            rows.append(
                [escape(h.label), escape(who), f"{total:.0f}"]
                + [_v(bucket_quantile(h.bounds, counts, q)) for q in (0.5, 0.95, 0.99)]
            )
    if not rows:
        return ""
    return _table(["span", "version", "requests", "p50 (s)", "p95 (s)", "p99 (s)"], rows, numeric=(2, 3, 4, 5))


def _history(attempt: Attempt) -> str:
    rows = [
        [escape(x) for x in (_t(t.time), t.from_phase.value, t.to.value, f"v{t.version}" if t.version else "-", t.reason)]
        for t in attempt.transitions
    ]
    return _table(["time", "from", "to", "version", "reason"], rows)


def _events(events: Sequence[RolloutEvent]) -> str:
    if not events:
        return '<p class="note">No events recorded in this span.</p>'
    rows = [
        [escape(_t(e.time)), f'<span class="{escape(e.type)}">{escape(e.type)}</span>', escape(e.reason), escape(e.message)]
        for e in events
    ]
    return _table(["time", "type", "reason", "message"], rows)


def events_of(attempt: Attempt, events: Sequence[RolloutEvent], later: Sequence[Attempt]) -> list[RolloutEvent]:
    """The events of the attempt: from its start to the next attempt's, with a few seconds of slack
    (the local platform stamps an event when it records it, just after the tick that decided it),
    leaving out those that name another version (the previous candidate's `Promoted`)."""
    start = attempt.start - timedelta(seconds=2)
    nxt = min((a.start for a in later if a.start > attempt.start), default=None)
    mine = []
    for e in events:
        if e.time < start or (nxt is not None and e.time >= nxt - timedelta(seconds=1)):
            continue
        named = _NAMED_VERSION.match(e.message)
        if named is None or named.group(1) == attempt.version:
            mine.append(e)
    return mine


def render(page: Page) -> str:
    r, a = page.record, page.attempt
    spec = r.rollout.spec
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>Rollout report: {escape(r.name)} v{escape(a.version or '?')}</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>Rollout report: {escape(r.name)}</h1>",
        '<p class="meta">'
        + escape(
            f"model {spec.model.name}: candidate v{a.version} against stable v{a.stable_version or '?'}; "
            f"started {_t(a.start)}, {'rested ' + _t(a.end) if a.end else 'still running'}"
        )
        + "<br>"
        + escape(f"read from {r.source}; generated {_t(page.now)}")
        + (escape(f"; metrics from Prometheus at {page.prometheus}") if page.prometheus else "")
        + "</p>",
        "<h2>Decision</h2>",
        _decision(page),
        f'<p class="note" id="summary">Summary: {escape(page.summary)}</p>',
    ]
    latest = _is_latest(page)
    if latest and r.status.checks:
        parts += ["<h3>Last check results recorded by the controller</h3>", _recorded_checks(r.status.checks)]
    gate_checks = getattr(r.status, "gate_checks", None) if latest else None  # set when the spec has a gate
    if gate_checks:
        parts += ["<h3>Offline gate (MLflow run metrics, before any traffic)</h3>", _recorded_checks(gate_checks)]
    bad = [c for c in r.status.conditions if c.status != "True" and c.type not in PHASE_CONDITIONS] if latest else []
    if bad:
        parts.append(
            "<h3>Conditions not True</h3>"
            + _table(
                ["type", "status", "reason", "message"],
                [[escape(x) for x in (c.type, c.status, c.reason, c.message)] for c in bad],
            )
        )
    parts += [
        "<h2>Timeline</h2>",
        (
            '<p class="note">Phases and the traffic split in each, as the engine sets it from the spec '
            "(shadow: mirrored share; canary: each step's percent; promoting: all to the candidate).</p>"
        ),
        f'<img src="{escape(page.timeline_image)}" alt="timeline of phases and weights">',
        "<h2>Checks</h2>",
    ]
    if page.metrics_note:
        parts.append(f'<p class="note">{escape(page.metrics_note)}</p>')
    else:
        parts.append(_per_step(page.checks, a))
        if not page.checks:
            parts.append('<p class="note">The spec has no checks: the rollout advanced on time alone.</p>')
        for evidence, image in page.checks:
            c = evidence.check
            parts.append(f"<h3>{escape(c.name)}</h3>")
            detail = evidence.template.description + (f"; {evidence.problem}" if evidence.problem else "")
            parts.append(f'<p class="note">{escape(detail)}</p>')
            parts.append(f'<img src="{escape(image)}" alt="{escape(c.name)} over time against its threshold">')
        parts.append("<h2>Latency distributions</h2>")
        if page.latency_image is not None:
            parts.append(_latency_table(page.latency, a))
            parts.append(f'<img src="{escape(page.latency_image)}" alt="latency histograms, candidate and stable">')
    parts += ["<h2>History</h2>", _history(a)]
    others = [o for o in page.every_attempt if o.start != a.start]
    if others:
        listing = ", ".join(
            f"v{o.version} {o.final_phase.value} ({_t(o.start)})" for o in others
        )
        parts.append(f'<p class="note">Other attempts in this status ({escape(listing)}): '
                     "<code>modelrollout report NAME --version V</code> reports on one of them.</p>")  # fmt: skip
    later = [o for o in page.every_attempt if o.start > a.start]
    parts += ["<h2>Events</h2>", _events(events_of(a, r.events, later))]
    spec_yaml = yaml.safe_dump(spec.model_dump(mode="json", by_alias=True, exclude_none=True), sort_keys=False)
    parts += [
        "<h2>Spec</h2>",
        f"<details><summary>the spec the report was made with</summary><pre>{escape(spec_yaml)}</pre></details>",
        "</body></html>",
    ]
    return "\n".join(p for p in parts if p)
