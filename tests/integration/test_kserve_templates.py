"""The knative and istio templates against a real Prometheus scraping Knative- and Istio-shaped
series (queue-proxy and sidecar names, labels and millisecond buckets) with known values."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from prometheus_client import Counter, Gauge, Histogram

from canary.analysis import AnalysisContext
from canary.metrics import PrometheusProvider, QueryError, render
from canary.spec import SpecError, parse_rollout
from canary.templates import ISTIO, KNATIVE
from tests.fixtures.prometheus import wait_for_sample

NAMESPACE = f"ns-{uuid.uuid4().hex[:6]}"
MS_BUCKETS = (50.0, 100.0, 250.0, 500.0, 1000.0)
WINDOW = 120  # seconds: longer than the module runs, so every window starts before the first sample
STABLE_REV, CANDIDATE_REV = "iris-predictor-00001", "iris-predictor-00002"
STABLE_WL, CANDIDATE_WL = "iris-predictor-00001-deployment", "iris-shadow-predictor-00001-deployment"


@dataclass(frozen=True)
class Scraped:
    url: str
    at: float


def context(role: str = "canary") -> AnalysisContext:
    return AnalysisContext(
        "iris", NAMESPACE, "iris", "1", "2", role, WINDOW,
        platform={
            "1": {"revision": STABLE_REV, "workload": STABLE_WL, "inference_service": "iris"},
            "2": {"revision": CANDIDATE_REV, "workload": CANDIDATE_WL, "inference_service": "iris"},
        },
    )  # fmt: skip


@pytest.fixture(scope="module")
def scraped(prometheus_server, metrics_exporter) -> Iterator[Scraped]:
    registry = metrics_exporter.registry
    # Queue-proxy's counter has no `_total` suffix, which prometheus_client adds to every Counter:
    # a Gauge that only goes up exposes the exact name (rate() does not look at the type).
    kn_count = Gauge(
        "revision_app_request_count", "queue-proxy requests",
        ("namespace_name", "revision_name", "configuration_name", "response_code_class"), registry=registry,
    )  # fmt: skip
    kn_latency = Histogram(
        "revision_app_request_latencies", "queue-proxy latency, ms",
        ("namespace_name", "revision_name", "configuration_name"), buckets=MS_BUCKETS, registry=registry,
    )  # fmt: skip
    istio_count = Counter(
        "istio_requests", "sidecar requests",
        ("reporter", "destination_workload", "destination_workload_namespace", "response_code"), registry=registry,
    )  # fmt: skip
    istio_latency = Histogram(
        "istio_request_duration_milliseconds", "sidecar latency, ms",
        ("reporter", "destination_workload", "destination_workload_namespace"), buckets=MS_BUCKETS, registry=registry,
    )  # fmt: skip
    families = (kn_count, kn_latency, istio_count, istio_latency)
    try:
        # Series at zero first, scraped, then the traffic: the first sample of every series is 0.
        for rev in (STABLE_REV, CANDIDATE_REV):
            kn_count.labels(NAMESPACE, rev, "iris-predictor", "2xx")
            kn_latency.labels(NAMESPACE, rev, "iris-predictor")
        kn_count.labels(NAMESPACE, CANDIDATE_REV, "iris-predictor", "5xx")
        for wl in (STABLE_WL, CANDIDATE_WL):
            istio_count.labels("destination", wl, NAMESPACE, "200")
            istio_latency.labels("destination", wl, NAMESPACE)
        # A series born mid-window loses its first increment to rate() (templates.py says so):
        # here the 503 series exists from an earlier failure, as it would in a running mesh.
        istio_count.labels("destination", CANDIDATE_WL, NAMESPACE, "503")
        istio_count.labels("source", STABLE_WL, NAMESPACE, "200")  # the client side: must not count
        url = prometheus_server.url
        wait_for_sample(url, f'istio_requests_total{{reporter="source",destination_workload_namespace="{NAMESPACE}"}}', 0.0)

        # Knative: the stable answers 30 in 80 ms; the candidate 16 in 80 ms and 4 in 400 ms, 4 of them 5xx.
        for _ in range(30):
            kn_count.labels(NAMESPACE, STABLE_REV, "iris-predictor", "2xx").inc()
            kn_latency.labels(NAMESPACE, STABLE_REV, "iris-predictor").observe(80)
        for ms in [80] * 16 + [400] * 4:
            kn_latency.labels(NAMESPACE, CANDIDATE_REV, "iris-predictor").observe(ms)
        kn_count.labels(NAMESPACE, CANDIDATE_REV, "iris-predictor", "2xx").inc(16)
        kn_count.labels(NAMESPACE, CANDIDATE_REV, "iris-predictor", "5xx").inc(4)
        # Istio: same shapes on the workloads, plus client-side noise.
        for _ in range(30):
            istio_count.labels("destination", STABLE_WL, NAMESPACE, "200").inc()
            istio_latency.labels("destination", STABLE_WL, NAMESPACE).observe(80)
        for ms in [80] * 16 + [400] * 4:
            istio_latency.labels("destination", CANDIDATE_WL, NAMESPACE).observe(ms)
        istio_count.labels("destination", CANDIDATE_WL, NAMESPACE, "200").inc(16)
        istio_count.labels("destination", CANDIDATE_WL, NAMESPACE, "503").inc(4)
        istio_count.labels("source", STABLE_WL, NAMESPACE, "200").inc(1000)

        stamps = [
            wait_for_sample(url, f'revision_app_request_count{{revision_name="{CANDIDATE_REV}",response_code_class="5xx",namespace_name="{NAMESPACE}"}}', 4.0),
            wait_for_sample(url, f'revision_app_request_latencies_count{{revision_name="{STABLE_REV}",namespace_name="{NAMESPACE}"}}', 30.0),
            wait_for_sample(url, f'revision_app_request_latencies_count{{revision_name="{CANDIDATE_REV}",namespace_name="{NAMESPACE}"}}', 20.0),
            wait_for_sample(url, f'istio_requests_total{{response_code="503",destination_workload_namespace="{NAMESPACE}"}}', 4.0),
            wait_for_sample(url, f'istio_request_duration_milliseconds_count{{destination_workload="{CANDIDATE_WL}",destination_workload_namespace="{NAMESPACE}"}}', 20.0),
            wait_for_sample(url, f'istio_request_duration_milliseconds_count{{destination_workload="{STABLE_WL}",destination_workload_namespace="{NAMESPACE}"}}', 30.0),
            wait_for_sample(url, f'istio_requests_total{{reporter="source",destination_workload_namespace="{NAMESPACE}"}}', 1000.0),
        ]  # fmt: skip
        yield Scraped(url, max(s.timestamp for s in stamps))
    finally:
        for family in families:
            registry.unregister(family)


# Same traffic on both stacks, so the same answers: histogram_quantile interpolates inside the
# 50-100 ms and 250-500 ms buckets (see test_metrics.py for the arithmetic), in seconds.
EXPECTED = {
    ("latency_p50", "2"): 0.08125,
    ("latency_p95", "2"): 0.4375,
    ("error_rate", "2"): 4 / 20,
    ("latency_p95", "1"): 0.0975,
    ("error_rate", "1"): 0.0,  # never failed: no 5xx series at all, still 0 rather than no data
}


@pytest.mark.parametrize("templates", [KNATIVE, ISTIO], ids=["knative", "istio"])
@pytest.mark.parametrize(("name", "version"), sorted(EXPECTED))
def test_kserve_templates_give_the_driven_values(scraped, templates, name, version):
    template = templates[name]
    role = "stable" if version == "1" else "canary"
    variables = context().variables(version, role)
    with PrometheusProvider(scraped.url) as provider:
        value = provider.query_value(render(template.query, variables), at=scraped.at)
        samples = provider.query_value(render(template.samples, variables), at=scraped.at)
    assert value == pytest.approx(EXPECTED[(name, version)], abs=1e-6)
    assert samples == pytest.approx(30 if version == "1" else 20)  # sidecar client-side series excluded


def test_missing_platform_variable_is_named():
    ctx = AnalysisContext("iris", NAMESPACE, "iris", "1", "2", "canary", WINDOW)  # no platform names
    with pytest.raises(QueryError, match="revision"):
        render(KNATIVE["latency_p95"].query, ctx.variables("2", "canary"))


def test_kserve_providers_need_a_target():
    doc = {
        "apiVersion": "modelrollout.io/v1alpha1", "kind": "ModelRollout", "metadata": {"name": "r"},
        "spec": {"model": {"name": "iris"}, "analysis": {"provider": "knative",
                 "metrics": [{"name": "p95", "template": "latency_p95", "maxIncrease": "20%"}]}},
    }  # fmt: skip
    with pytest.raises(SpecError, match="provider 'knative' reads KServe metrics: it needs spec.target"):
        parse_rollout(doc)
    doc["spec"]["target"] = {"inferenceService": "iris"}
    assert parse_rollout(doc).spec.analysis.provider == "knative"
