"""How a rollout's status reads in a terminal: `modelrollout status` and `kubectl modelrollout status`."""

from __future__ import annotations

from rich.console import Group
from rich.table import Table
from rich.text import Text

from canary.decision.engine import PHASE_CONDITIONS
from canary.decision.spec import MetricStatus, Phase, RolloutStatus

_PHASE_STYLE = {
    Phase.SUCCEEDED: "green",
    Phase.ROLLED_BACK: "red",
    Phase.ROLLING_BACK: "red",
    Phase.ABORTED: "yellow",
    Phase.PAUSED: "yellow",
    Phase.WATCHING: "green",
}
_VERDICT_STYLE = {"pass": "green", "fail": "red", "inconclusive": "yellow", "error": "magenta"}


def _value(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


def position(status: RolloutStatus) -> str:
    if status.phase is Phase.CANARY and status.step is not None:
        return f"Canary step {status.step + 1} ({status.weights.candidate}%)"
    if status.phase is Phase.SHADOW:
        return f"Shadow ({status.weights.shadow}% mirrored)"
    if status.phase is Phase.PAUSED and status.paused_from is not None:
        return f"Paused (in {status.paused_from.value})"
    if status.phase is Phase.GATING:
        return "Gating (offline metrics; not deployed)"
    if status.phase is Phase.WATCHING:
        return "Watching (promoted; a breach undoes it)"
    if status.phase is Phase.ROLLED_BACK and status.rollback_kind == "rejected":
        return "RolledBack (rejected by the offline gate)"
    return status.phase.value


def _metric_table(title: str, rows: list[MetricStatus], with_failures: bool) -> Table:
    table = Table(title=title, title_justify="left", box=None, pad_edge=False)
    columns = ["metric", "verdict", "candidate", "stable", "threshold"] + (["failures"] if with_failures else []) + ["detail"]
    for column in columns:
        table.add_column(column)
    for check in rows:
        cells = [
            check.name,
            Text(check.verdict, style=_VERDICT_STYLE.get(check.verdict, "")),
            _value(check.candidate),
            _value(check.baseline),
            check.threshold,
        ]
        table.add_row(*cells, *([str(check.failures)] if with_failures else []), check.message)
    return table


def render_status(name: str, status: RolloutStatus, events: list[dict], endpoint: str | None = None) -> Group:
    header = Text()
    header.append(f"{name}  ", style="bold")
    header.append(position(status), style=_PHASE_STYLE.get(status.phase, "cyan"))
    header.append(
        f"   stable v{status.stable_version or '-'}   candidate v{status.candidate_version or '-'}"
        f"   weights stable {status.weights.stable}% / candidate {status.weights.candidate}%"
    )
    parts: list = [header]
    if status.message:
        parts.append(Text(f"  {status.message}"))
    if endpoint:
        parts.append(Text(f"  endpoint {endpoint}"))

    if status.gate_checks:
        parts.append(_metric_table("offline gate (MLflow metrics)", status.gate_checks, with_failures=False))
    if status.checks:
        parts.append(_metric_table("checks", status.checks, with_failures=True))

    bad = [c for c in status.conditions if c.status != "True" and c.type not in PHASE_CONDITIONS]
    for condition in bad:
        parts.append(Text(f"  condition {condition.type}={condition.status}: {condition.message or condition.reason}", style="yellow"))

    if status.history:
        history = Table(title="history", title_justify="left", box=None, pad_edge=False)
        for column in ("time", "from", "to", "version", "reason"):
            history.add_column(column)
        for item in status.history[-10:]:
            history.add_row(
                item.time.strftime("%H:%M:%S"), item.from_phase.value, item.to.value, f"v{item.version}" if item.version else "-", item.reason
            )
        parts.append(history)

    if events:
        recent = Table(title="events", title_justify="left", box=None, pad_edge=False)
        for column in ("time", "type", "reason", "message"):
            recent.add_column(column)
        for event in events:
            recent.add_row(event["time"][11:19], event["type"], event["reason"], event["message"])
        parts.append(recent)
    return Group(*parts, Text(""))
