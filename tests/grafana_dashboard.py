"""The Grafana dashboard as the tests read it: its panels' queries with Grafana's variables
substituted as Grafana would, run against a real Prometheus."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from tests.fixtures.prometheus import query

DASHBOARD = Path(__file__).resolve().parents[1] / "charts" / "modelrollout" / "dashboards" / "modelrollout.json"


def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def panel_queries() -> list[tuple[str, str]]:
    """(panel title, PromQL as written) of every target of every panel."""
    return [(panel["title"], target["expr"]) for panel in dashboard()["panels"] for target in panel["targets"]]


def substituted(expr: str, namespace: str, rollout: str, rate_interval: str) -> str:
    for variable, value in (("$namespace", namespace), ("$rollout", rollout), ("$__rate_interval", rate_interval)):
        expr = expr.replace(variable, value)
    assert "$" not in expr, f"a variable the tests do not know: {expr}"
    return expr


def empty_panels(prometheus_url: str, namespace: str, rollout: str, rate_interval: str) -> list[str]:
    """The panels whose query returns no finite number for this rollout (every panel: none)."""
    empty = []
    for title, expr in panel_queries():
        values = [float(r["value"][1]) for r in query(prometheus_url, substituted(expr, namespace, rollout, rate_interval))]
        if not any(math.isfinite(v) for v in values):
            empty.append(f"{title}: {values}")
    return empty
