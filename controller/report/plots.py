"""The report's figures, drawn with matplotlib's object API onto Agg canvases.

No pyplot: it keeps global figure state and picks a GUI backend when one is around; a `Figure`
saved directly renders with Agg, headless and safe to call from any thread. Each function writes
one PNG and never fails for want of data — an empty series draws "no data" instead.

Time runs left to right from the attempt's start (seconds, minutes or hours, whichever reads
best); the phases are shaded behind every time plot in the same colours, so a latency jump can be
read against the step that caused it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

from matplotlib.axes import Axes
from matplotlib.figure import Figure

from canary.decision.analysis import describe_thresholds
from canary.decision.spec import Phase, relative_ratio
from controller.report.metrics import CheckEvidence, LatencyEvidence, bucket_quantile
from controller.report.timeline import Attempt, Segment

STABLE_COLOUR = "#1f77b4"
CANDIDATE_COLOUR = "#e4572e"
SHADOW_COLOUR = "#7b61ff"
THRESHOLD_COLOUR = "#b00020"
VERDICT_COLOUR = {"pass": "#2e7d32", "fail": "#b00020", "inconclusive": "#9e9e9e", "error": "#8e24aa"}
PHASE_COLOUR = {
    Phase.SHADOW.value: "#e3dcff",
    Phase.CANARY.value: "#ffe9b3",
    Phase.PROMOTING.value: "#cdeccd",
    Phase.SUCCEEDED.value: "#a5d6a7",
    Phase.ROLLING_BACK.value: "#ffcdd2",
    Phase.ROLLED_BACK.value: "#ef9a9a",
    Phase.ABORTED.value: "#ffccbc",
    Phase.PAUSED.value: "#e0e0e0",
    "Gating": "#d6eef8",
    "Watching": "#dcedc8",
}
_OTHER_PHASE_COLOUR = "#eeeeee"
_DPI = 110
# Share of the time axis given to the resting phase at the end (an instant, drawn as a band).
_REST_WIDTH = 0.04


class TimeAxis:
    """Seconds since the attempt's start, shown in the unit that fits its length."""

    def __init__(self, start: datetime, end: datetime):
        self.start = start
        span = max((end - start).total_seconds(), 1.0)
        self.unit, self.per = ("s", 1.0) if span <= 240 else ("min", 60.0) if span <= 4 * 3600 else ("h", 3600.0)
        self.end = self(end)

    def __call__(self, moment: datetime | float) -> float:
        seconds = moment - self.start.timestamp() if isinstance(moment, (int, float)) else (moment - self.start).total_seconds()
        return seconds / self.per

    @property
    def label(self) -> str:
        return f"{self.unit} since {self.start.strftime('%Y-%m-%d %H:%M:%S %Z').strip()}"


def _figure(width: float, height: float) -> Figure:
    return Figure(figsize=(width, height), dpi=_DPI, layout="constrained")


def _shade(ax: Axes, attempt: Attempt, axis: TimeAxis, now: datetime, labels: bool = False) -> None:
    for segment in attempt.segments:
        left, right = axis(segment.start), axis(segment.end or now)
        if right <= left:
            right = left + axis.end * _REST_WIDTH  # the instant the attempt rests still shows
        ax.axvspan(left, right, color=PHASE_COLOUR.get(segment.phase, _OTHER_PHASE_COLOUR), alpha=0.55, lw=0, zorder=0)
        if labels:
            # A phase too short for its name across (Promoting, the final rest) gets it upright.
            narrow = right - left < 0.08 * max(axis.end, 1e-9)
            ax.text((left + right) / 2, 0.5, _short(segment).replace("\n", " ") if narrow else _short(segment),
                    ha="center", va="center", fontsize=7 if narrow else 8, rotation=90 if narrow else 0,
                    transform=ax.get_xaxis_transform(), clip_on=True)  # fmt: skip


def _role_name(role: str | None) -> str:
    return "promoted, watched" if role == "stable" else role or "?"


def _short(segment: Segment) -> str:
    if segment.phase == Phase.CANARY.value and segment.step is not None:
        return f"Canary\n{segment.weights.candidate}%"
    if segment.phase == Phase.SHADOW.value:
        return "Shadow"
    return segment.phase


def _no_data(ax: Axes, text: str = "no data") -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", fontsize=13, color="#555555", transform=ax.transAxes,
            bbox={"boxstyle": "round", "fc": "white", "ec": "#bbbbbb"}, wrap=True)  # fmt: skip


def timeline(attempt: Attempt, now: datetime, path: Path) -> None:
    """Phases as coloured bands over time, and the traffic split the engine set in each."""
    end = attempt.end or now
    axis = TimeAxis(attempt.start, end)
    fig = _figure(9, 4.2)
    bands, weights = fig.subplots(2, 1, sharex=True, height_ratios=[1, 3])
    _shade(bands, attempt, axis, now, labels=True)
    bands.set_yticks([])
    bands.set_title(f"v{attempt.version or '?'} against v{attempt.stable_version or '?'}: phases and traffic", fontsize=11)

    times, stable, candidate, mirrored = [], [], [], []
    for segment in attempt.segments:
        times.append(axis(segment.start))
        stable.append(segment.weights.stable)
        candidate.append(segment.weights.candidate)
        mirrored.append(segment.weights.shadow)
    times.append(axis(end))
    for values, colour, label in (
        (stable, STABLE_COLOUR, f"v{attempt.stable_version or '?'} (stable) traffic %"),
        (candidate, CANDIDATE_COLOUR, f"v{attempt.version or '?'} (candidate) traffic %"),
        (mirrored, SHADOW_COLOUR, "requests mirrored to the shadow %"),
    ):
        weights.stairs(values, times, color=colour, lw=2.2, label=label, baseline=None)
    _shade(weights, attempt, axis, now)
    for segment in attempt.segments[1:]:
        weights.axvline(axis(segment.start), color="#777777", lw=0.6, ls=":")
    weights.set_ylim(-5, 105)
    weights.set_ylabel("percent")
    weights.set_xlim(0, max(axis.end, 1e-9) * (1 + _REST_WIDTH))
    weights.set_xlabel(axis.label)
    weights.legend(loc="center left", fontsize=8, framealpha=0.9)
    weights.grid(axis="y", alpha=0.3)
    fig.savefig(path)


def check(evidence: CheckEvidence, attempt: Attempt, now: datetime, path: Path) -> None:
    """One check: candidate and stable over time against its threshold(s), the verdict at each
    step's end as a dot, and the controller's recorded last value as a star."""
    c = evidence.check
    end = attempt.end or now
    axis = TimeAxis(attempt.start, end)
    fig = _figure(9, 3.8)
    ax = fig.subplots()
    _shade(ax, attempt, axis, now)
    ax.set_title(f"{c.name} ({c.template or 'custom query'}): {describe_thresholds(c)}", fontsize=11)
    drawn: set[str] = set()

    def once(label: str) -> str:
        if label in drawn:
            return "_nolegend_"
        drawn.add(label)
        return label

    for window in evidence.windows:
        for series, colour, who in (
            (window.baseline, STABLE_COLOUR, f"v{attempt.stable_version} (stable)"),
            (window.candidate, CANDIDATE_COLOUR, f"v{attempt.version} ({_role_name(window.segment.role)})"),
        ):
            if series is None or not series.points:
                continue
            xs = [axis(t) for t, _ in series.points]
            ys = [v for _, v in series.points]
            style = "-." if series is window.candidate and window.segment.role == "shadow" else "-"
            ax.plot(xs, ys, color=colour, lw=1.6, ls=style, label=once(who))
            if series is window.baseline:
                for ratio_field, sign, name in ((c.max_increase, 1, "maxIncrease"), (c.max_decrease, -1, "maxDecrease")):
                    if ratio_field is not None:
                        ratio = relative_ratio(ratio_field)
                        ax.plot(xs, [v * (1 + sign * ratio) for v in ys], color=THRESHOLD_COLOUR, lw=1.2, ls="--",
                                label=once(f"{name} {ratio:.0%} (from stable)"))  # fmt: skip
        if window.at_end is not None and window.at_end.candidate is not None:
            colour = VERDICT_COLOUR.get(window.at_end.verdict, "#000000")
            ax.scatter([axis(window.segment.end or now)], [window.at_end.candidate], s=46, color=colour, zorder=5,
                       edgecolors="white", label=once(f"end of step: {window.at_end.verdict}"))  # fmt: skip
    for bound, name in ((c.max, "max"), (c.min, "min")):
        if bound is not None:
            ax.axhline(bound, color=THRESHOLD_COLOUR, lw=1.2, ls="--", label=once(f"{name} {bound:g}"))
    recorded = evidence.recorded
    if recorded is not None and recorded.candidate is not None and recorded.checked_at is not None:
        ax.scatter([axis(recorded.checked_at)], [recorded.candidate], marker="*", s=150, zorder=6,
                   color=VERDICT_COLOUR.get(recorded.verdict, "#000000"), edgecolors="black", linewidths=0.6,
                   label=f"recorded by the controller: {recorded.verdict}")  # fmt: skip
    if not evidence.has_data:
        _no_data(ax, "no data" + (f"\n{_wrap(evidence.problem)}" if evidence.problem else ""))
    elif evidence.problem:
        ax.text(0.01, 0.02, _wrap(evidence.problem), transform=ax.transAxes, fontsize=7, color="#8e24aa", va="bottom")
    ax.set_xlim(0, max(axis.end, 1e-9) * (1 + _REST_WIDTH))
    ax.set_xlabel(axis.label)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="best", fontsize=8, framealpha=0.9)
    fig.savefig(path)


def latency(histograms: Sequence[LatencyEvidence], attempt: Attempt, path: Path) -> None:
    """Per candidate role, the share of requests in each latency bucket, candidate beside stable."""
    rows = max(len(histograms), 1)
    fig = _figure(9, 3.4 * rows)
    axes = fig.subplots(rows, 1, squeeze=False)[:, 0]
    if not histograms:
        _no_data(axes[0], "no analysed phase: no latency to compare")
        axes[0].set_axis_off()
    for ax, h in zip(axes, histograms):
        ax.set_title(f"latency, {h.label} ({h.seconds:g} s)", fontsize=11)
        if not h.has_data:
            _no_data(ax, "no data" + (f"\n{_wrap(h.problem)}" if h.problem else ""))
            ax.set_xticks([])
            ax.set_yticks([])
            continue
        shares = [_shares(h.candidate), _shares(h.baseline)]
        used = [i for i in range(len(h.bounds)) if shares[0][i] > 0 or shares[1][i] > 0]
        lo, hi = max(min(used) - 1, 0), max(used) + 1
        positions = list(range(hi - lo))
        width = 0.4
        for offset, values, colour, who, counts in (
            (-width / 2, shares[1], STABLE_COLOUR, f"v{attempt.stable_version} (stable)", h.baseline),
            (width / 2, shares[0], CANDIDATE_COLOUR, f"v{attempt.version} ({h.role})", h.candidate),
        ):
            total = counts[-1] if counts else 0
            p50, p95 = bucket_quantile(h.bounds, counts, 0.5), bucket_quantile(h.bounds, counts, 0.95)
            label = f"{who}: {total:.0f} requests, p50 {_seconds(p50)}, p95 {_seconds(p95)}"
            ax.bar([p + offset for p in positions], values[lo:hi], width=width, color=colour, label=label)
        ax.set_xticks(positions, [_bucket_label(h.bounds, i) for i in range(lo, hi)], rotation=45, fontsize=7)
        ax.set_ylim(0, max(max(shares[0]), max(shares[1])) * 1.3)  # room for the legend above the bars
        ax.set_ylabel("share of requests")
        ax.set_xlabel("latency bucket (upper bound)")
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=8, loc="upper right", framealpha=0.9)
    fig.savefig(path)


def _shares(cumulative: Sequence[float]) -> list[float]:
    per_bucket = [b - a for a, b in zip([0.0, *cumulative[:-1]], cumulative)]
    total = cumulative[-1] if cumulative else 0.0
    return [max(v, 0.0) / total if total > 0 else 0.0 for v in per_bucket]


def _bucket_label(bounds: Sequence[float], i: int) -> str:
    return "+Inf" if math.isinf(bounds[i]) else f"≤{_seconds(bounds[i])}"


def _seconds(value: float | None) -> str:
    if value is None or not math.isfinite(value):
        return "-"
    return f"{value * 1000:.3g} ms" if value < 1 else f"{value:.3g} s"


def _wrap(text: str, width: int = 90) -> str:
    words, lines, line = text.split(), [], ""
    for word in words:
        if line and len(line) + len(word) + 1 > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}".strip()
    lines.append(line)
    return "\n".join(lines[:4])
