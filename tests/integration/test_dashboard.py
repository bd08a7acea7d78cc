"""The Grafana dashboard (charts/modelrollout/dashboards/modelrollout.json) against a real Prometheus
holding data: every panel's query and every variable's values return something, from the series
the operator (`OperatorMetrics`) and the router/comparator (`MetricFamilies`) really export, with
the labels they really carry, and tell candidate and stable apart. Grafana's own variables are
substituted as Grafana would. (tests/e2e/test_rollouts.py runs every panel once more on the
Prometheus of a real `local run` with labelled traffic.)"""

from __future__ import annotations

import json
import math
import re
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from canary.decision.spec import Phase, RolloutStatus, Weights
from canary.traffic.serving_metrics import CANARY, SHADOW, STABLE, MetricFamilies, ServingMetrics
from controller.kube.operator_metrics import OperatorMetrics
from controller.local.prometheus_server import remove_targets, write_targets
from tests.fixtures.prometheus import query, start_exporter, wait_for_target_up
from tests.grafana_dashboard import dashboard, panel_queries, substituted

NAMESPACE, ROLLOUT, MODEL = "models", "dash-iris", "iris"


def grafana_substituted(expr: str) -> str:
    return substituted(expr, NAMESPACE, ROLLOUT, "30s")


@pytest.fixture(scope="module")
def data(prometheus_server: Any) -> Iterator[str]:
    """Both exporters scraped by the session's Prometheus, fed like a rollout in its canary step."""
    operator, families = OperatorMetrics(), MetricFamilies()
    exporters = [start_exporter(operator.registry), start_exporter(families.registry)]
    write_targets(prometheus_server.data_dir, "dashboard", [e.target for e in exporters], {})
    serving = ServingMetrics(ROLLOUT, families)
    for version, role in (("1", STABLE), ("2", CANARY), ("2", SHADOW)):
        serving.prepare(MODEL, version, role)  # as the router and the comparator do for every routed version
    stop = threading.Event()

    def feed() -> None:
        while not stop.is_set():
            operator.rollout((NAMESPACE, ROLLOUT), RolloutStatus(phase=Phase.CANARY, weights=Weights(stable=80, candidate=20)))
            for version, role, seconds in (("1", STABLE, 0.02), ("2", CANARY, 0.03), ("2", SHADOW, 0.03)):
                for i in range(5):
                    serving.observe_request(MODEL, version, role, seconds * (1 + i / 10), failed=(i == 0 and role == CANARY))
                serving.observe_feedback(MODEL, version, role, total=4, correct=3)
            serving.observe_comparison(MODEL, "2", compared=5, agreed=4)
            stop.wait(0.2)

    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()
    try:
        for exporter in exporters:
            wait_for_target_up(prometheus_server.url, exporter.target)
        time.sleep(3.5)  # a few scrapes (1 s apart) with rising counters, so rate() has two points
        yield prometheus_server.url
    finally:
        stop.set()
        feeder.join(5)
        remove_targets(prometheus_server.data_dir, "dashboard")
        for exporter in exporters:
            exporter.stop()


@pytest.mark.parametrize(("title", "expr"), panel_queries())
def test_every_panel_query_returns_numbers(data: str, title: str, expr: str) -> None:
    result = query(data, grafana_substituted(expr))
    values = [float(r["value"][1]) for r in result]
    assert values, f"{title}: no series for {grafana_substituted(expr)}"
    assert all(math.isfinite(v) for v in values), f"{title}: {result}"


def test_the_panels_tell_candidate_and_stable_apart(data: str) -> None:
    by_title = dict(panel_queries())
    latency = query(data, grafana_substituted(by_title["Latency p95, candidate vs stable"]))
    assert {(r["metric"]["version"], r["metric"]["role"]) for r in latency} >= {("1", STABLE), ("2", CANARY)}
    errors = {r["metric"]["role"]: float(r["value"][1]) for r in query(data, grafana_substituted(by_title["Error rate, candidate vs stable"]))}
    assert errors[CANARY] == pytest.approx(0.2, abs=0.05) and errors[STABLE] == 0  # 1 in 5 canary requests failed
    weights = {r["metric"]["role"]: float(r["value"][1]) for r in query(data, grafana_substituted(by_title["Traffic to the candidate"]))}
    assert weights == {"canary": 20.0, "shadow": 0.0}
    [phase] = query(data, grafana_substituted(by_title["Phase"]))
    assert phase["metric"]["phase"] == "Canary"


def test_every_variable_offers_the_rollout(data: str) -> None:
    offered = {}
    for variable in dashboard()["templating"]["list"]:
        if variable["type"] != "query":
            continue
        found = re.fullmatch(r"label_values\((.+), (\w+)\)", grafana_substituted(variable["query"]["query"]))
        assert found, variable
        params = urllib.parse.urlencode({"match[]": found.group(1)})
        with urllib.request.urlopen(f"{data}/api/v1/label/{found.group(2)}/values?{params}", timeout=5) as response:
            offered[variable["name"]] = json.load(response)["data"]
    assert NAMESPACE in offered["namespace"] and ROLLOUT in offered["rollout"]


def test_the_dashboard_is_well_formed() -> None:
    board = dashboard()
    ids = [panel["id"] for panel in board["panels"]]
    assert len(ids) == len(set(ids))
    for panel in board["panels"]:
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert panel["targets"] and all(t["expr"] for t in panel["targets"]), panel["title"]
    names = {v["name"] for v in board["templating"]["list"]}
    assert names == {"datasource", "namespace", "rollout"}
