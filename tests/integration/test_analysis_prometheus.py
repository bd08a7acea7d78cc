"""`analyse` against a real Prometheus: broken and empty queries become verdicts, never passes."""

from __future__ import annotations

from canary.decision.analysis import AnalysisContext, analyse
from canary.decision.metrics import PrometheusProvider
from canary.decision.spec import ModelRolloutSpec
from tests.fixtures.prometheus import free_port

CTX = AnalysisContext("analysis-it", "default", "iris", "1", "2", "canary", 30)


def spec(*metrics) -> ModelRolloutSpec:
    return ModelRolloutSpec.model_validate({"model": {"name": "iris"}, "analysis": {"metrics": list(metrics)}})


def test_query_prometheus_rejects_is_an_error_with_its_message(prometheus_server):
    checks = spec({"name": "broken", "query": 'sum(rate(x{rollout="{{ rollout }}"}[{{ interval }}]) +', "max": 1})
    [result] = analyse(checks, CTX, PrometheusProvider(prometheus_server.url))
    assert result.verdict == "error"
    assert "parse error" in result.message and "broken" == result.name


def test_no_series_follows_no_data_policy(prometheus_server):
    provider = PrometheusProvider(prometheus_server.url)
    checks = spec(
        {"name": "strict", "template": "latency_p95", "max": 1, "noData": "fail"},
        {"name": "lenient", "template": "error_rate", "max": 0.1, "noData": "pass"},
        {"name": "default", "template": "accuracy", "min": 0.5},
    )
    verdicts = {r.name: (r.verdict, r.samples) for r in analyse(checks, CTX, provider)}
    assert verdicts == {"strict": ("fail", 0.0), "lenient": ("pass", 0.0), "default": ("inconclusive", 0.0)}


def test_unreachable_prometheus_is_an_error_for_every_check():
    provider = PrometheusProvider(f"http://127.0.0.1:{free_port()}", timeout=1)
    checks = spec({"name": "p95", "template": "latency_p95", "maxIncrease": "10%"}, {"name": "e", "template": "error_rate", "max": 0.1})
    results = analyse(checks, CTX, provider)
    assert [r.verdict for r in results] == ["error", "error"]
    assert all("127.0.0.1" in r.message for r in results)
