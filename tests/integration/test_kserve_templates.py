"""The KServe providers' templates against a real Prometheus scraping what each stack really exports.

- `knative`: Knative >= 1.19 queue-proxies (tests/kube/queue_proxy.py: the OpenTelemetry histogram in
  seconds, the revision only on each pod's `target_info`), one scrape target per pod; and the same
  series as an OpenTelemetry Collector forwards them with the resource attributes copied onto every
  series (no `target_info`), which the templates read too.
- `knative-legacy`: Knative <= 1.18 queue-proxies (OpenCensus, milliseconds, the revision a label).
- `istio`: sidecar series by `destination_workload`, Istio's default millisecond buckets.

The same traffic everywhere: the stable answers 30 requests in 85 ms; the candidate 16 in 85 ms and
4 in 420 ms, those 4 answered 503. Each stack's bucket bounds give its own interpolated quantiles.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from prometheus_client import Counter, Histogram
from prometheus_client.core import HistogramMetricFamily

from canary.decision.analysis import AnalysisContext
from canary.decision.metrics import PrometheusProvider, QueryError, render
from canary.decision.spec import SpecError, parse_rollout
from canary.decision.templates import ISTIO, KNATIVE, KNATIVE_LEGACY
from tests.fixtures.prometheus import wait_for_sample
from tests.kube.queue_proxy import LATENCY_BOUNDS, QueueProxyPods

RUN = uuid.uuid4().hex[:6]
NAMESPACE = f"ns-{RUN}"
COLLECTOR_NAMESPACE = f"ns-{RUN}-otelcol"  # the same series, resource attributes on every series
# Istio's default duration buckets (ms), istio/istio pilot's stats filter defaults.
ISTIO_MS = (0.5, 1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0)
WINDOW = 120  # seconds: longer than the module runs, so every window starts before the first sample
STABLE_REV, CANDIDATE_REV = "iris-predictor-00001", "iris-predictor-00002"
STABLE_WL, CANDIDATE_WL = "iris-predictor-00001-deployment", "iris-shadow-predictor-00001-deployment"
TRAFFIC = {STABLE_REV: [(0.085, 200)] * 30, CANDIDATE_REV: [(0.085, 200)] * 16 + [(0.42, 503)] * 4}


@dataclass(frozen=True)
class Scraped:
    url: str
    at: dict[tuple[str, str], float]  # (stack, version) -> a scrape of its series after all traffic


def scrape_of(pods: QueueProxyPods, revision: str) -> str:
    """The `up` series of the scrape target that is `revision`'s pod."""
    [instance] = [address for pod, address in pods.addresses() if pod.namespace == NAMESPACE and pod.revision == revision]
    return f'up{{instance="{instance}"}}'


def context(namespace: str = NAMESPACE) -> AnalysisContext:
    return AnalysisContext(
        "iris", namespace, "iris", "1", "2", "canary", WINDOW,
        platform={
            "1": {"revision": STABLE_REV, "workload": STABLE_WL, "inference_service": "iris"},
            "2": {"revision": CANDIDATE_REV, "workload": CANDIDATE_WL, "inference_service": "iris"},
        },
    )  # fmt: skip


class CollectorForwarded:
    """Queue-proxy series after an OpenTelemetry Collector with `resource_to_telemetry_conversion`:
    the resource attributes are labels of every series and there is no `target_info`."""

    def __init__(self) -> None:
        self.rows: dict[tuple[str, int], list[float]] = {}

    def collect(self) -> Iterator[HistogramMetricFamily]:
        family = HistogramMetricFamily(
            "kn_serving_invocation_duration_seconds", "The duration of task execution",
            labels=("http_response_status_code", "k8s_namespace_name", "kn_revision_name", "otel_scope_name"),
        )  # fmt: skip
        for (revision, status), values in sorted(self.rows.items()):
            cumulative = [(format(b, "g"), float(sum(v <= b for v in values))) for b in LATENCY_BOUNDS]
            cumulative.append(("+Inf", float(len(values))))
            labels = [str(status), COLLECTOR_NAMESPACE, revision, "knative.dev/serving/pkg/queue"]
            family.add_metric(labels, cumulative, sum(values))
        yield family


@pytest.fixture(scope="module")
def scraped(prometheus_server, metrics_exporter) -> Iterator[Scraped]:
    url, registry = prometheus_server.url, metrics_exporter.registry
    otel = QueueProxyPods(prometheus_server.data_dir, slots=2)
    legacy = QueueProxyPods(prometheus_server.data_dir, slots=2, legacy=True)
    forwarded = CollectorForwarded()
    istio_count = Counter(
        "istio_requests", "sidecar requests",
        ("reporter", "destination_workload", "destination_workload_namespace", "response_code"), registry=registry,
    )  # fmt: skip
    istio_latency = Histogram(
        "istio_request_duration_milliseconds", "sidecar latency, ms",
        ("reporter", "destination_workload", "destination_workload_namespace"), buckets=ISTIO_MS, registry=registry,
    )  # fmt: skip
    registry.register(forwarded)
    try:
        otel.wait_scraped(url)
        legacy.wait_scraped(url)
        # Series at zero first, scraped, then the traffic: the first sample of every series is 0.
        # (A series born mid-window loses its first increment to rate(): templates.py says so.)
        for workload in (STABLE_WL, CANDIDATE_WL):
            istio_count.labels("destination", workload, NAMESPACE, "200")
            istio_latency.labels("destination", workload, NAMESPACE)
        istio_count.labels("destination", CANDIDATE_WL, NAMESPACE, "503")
        istio_count.labels("source", STABLE_WL, NAMESPACE, "200")  # the client side: must not count
        pods = {(stack, rev): stack.pod(NAMESPACE, "iris", rev) for stack in (otel, legacy) for rev in TRAFFIC}
        for (stack, rev), pod in pods.items():
            for status in {s for _, s in TRAFFIC[rev]}:
                pod.prepare(status)
        for rev in TRAFFIC:
            for status in {s for _, s in TRAFFIC[rev]}:
                forwarded.rows[(rev, status)] = []
        wait_for_sample(url, f'istio_requests_total{{reporter="source",destination_workload_namespace="{NAMESPACE}"}}', 0.0)
        wait_for_sample(url, f'count(target_info{{k8s_namespace_name="{NAMESPACE}"}})', 2.0)
        wait_for_sample(url, f'count(revision_app_request_count{{namespace_name="{NAMESPACE}"}})', 3.0)
        wait_for_sample(url, f'count(kn_serving_invocation_duration_seconds_count{{k8s_namespace_name="{COLLECTOR_NAMESPACE}"}})', 3.0)

        for rev, requests in TRAFFIC.items():
            workload = STABLE_WL if rev == STABLE_REV else CANDIDATE_WL
            for seconds, status in requests:
                for stack in (otel, legacy):
                    pods[(stack, rev)].serve(seconds, status)
                forwarded.rows[(rev, status)].append(seconds)
                istio_count.labels("destination", workload, NAMESPACE, str(status)).inc()
                istio_latency.labels("destination", workload, NAMESPACE).observe(seconds * 1000)
        istio_count.labels("source", STABLE_WL, NAMESPACE, "200").inc(1000)
        # Every pod is a scrape target of its own, scraped at its own instants: each (stack, version) is
        # evaluated at the scrape of its series that carries the whole traffic, so increase() over the
        # window counts exactly what was driven (from a 0 sample to that one, no extrapolation).
        expected = {STABLE_REV: 30.0, CANDIDATE_REV: 20.0}
        at: dict[tuple[str, str], float] = {}
        for rev, version in ((STABLE_REV, "1"), (CANDIDATE_REV, "2")):
            workload = STABLE_WL if rev == STABLE_REV else CANDIDATE_WL
            sources = {
                "knative": (f'sum(kn_serving_invocation_duration_seconds_count * on(job, instance) group_left() target_info{{kn_revision_name="{rev}",k8s_namespace_name="{NAMESPACE}"}})',
                            scrape_of(otel, rev)),
                "knative-otel-collector": (f'sum(kn_serving_invocation_duration_seconds_count{{kn_revision_name="{rev}",k8s_namespace_name="{COLLECTOR_NAMESPACE}"}})',
                                           f'up{{instance="{metrics_exporter.target}"}}'),
                "knative-legacy": (f'sum(revision_app_request_latencies_count{{revision_name="{rev}",namespace_name="{NAMESPACE}"}})',
                                   scrape_of(legacy, rev)),
                "istio": (f'sum(istio_request_duration_milliseconds_count{{destination_workload="{workload}",destination_workload_namespace="{NAMESPACE}"}})',
                          f'up{{instance="{metrics_exporter.target}"}}'),
            }  # fmt: skip
            for stack, (count, scrape) in sources.items():
                wait_for_sample(url, count, expected[rev], timeout=20)
                at[(stack, version)] = wait_for_sample(url, scrape).timestamp
        wait_for_sample(url, f'istio_requests_total{{reporter="source",destination_workload_namespace="{NAMESPACE}"}}', 1000.0)
        yield Scraped(url, at)
    finally:
        for collector in (istio_count, istio_latency, forwarded):
            registry.unregister(collector)
        otel.close()
        legacy.close()


# histogram_quantile interpolates linearly inside the bucket holding the rank, so each stack's bounds
# give their own values: p50 of the candidate = lower + width * 10/16; p95 = 0.25 + 0.25 * 3/4 (or
# 0.40 + 0.05 * 3/4 on Knative 1.18's bounds); the stable's p95 = lower + width * 28.5/30.
EXPECTED = {
    "knative": {("latency_p50", "2"): 0.075 + 0.025 * 10 / 16, ("latency_p95", "2"): 0.4375,
                ("latency_p95", "1"): 0.075 + 0.025 * 28.5 / 30},
    "knative-legacy": {("latency_p50", "2"): 0.080 + 0.020 * 10 / 16, ("latency_p95", "2"): 0.4375,
                       ("latency_p95", "1"): 0.080 + 0.020 * 28.5 / 30},
    "istio": {("latency_p50", "2"): 0.050 + 0.050 * 10 / 16, ("latency_p95", "2"): 0.4375,
              ("latency_p95", "1"): 0.050 + 0.050 * 28.5 / 30},
}  # fmt: skip
for expected in EXPECTED.values():
    # a revision that never failed has no 5xx series at all: 0, not "no data"
    expected.update({("error_rate", "2"): 4 / 20, ("error_rate", "1"): 0.0})
STACKS = {
    "knative": (KNATIVE, NAMESPACE),
    "knative-otel-collector": (KNATIVE, COLLECTOR_NAMESPACE),
    "knative-legacy": (KNATIVE_LEGACY, NAMESPACE),
    "istio": (ISTIO, NAMESPACE),
}


def value(scraped: Scraped, stack: str, name: str, version: str) -> tuple[float | None, float | None]:
    templates, namespace = STACKS[stack]
    template, at = templates[name], scraped.at[(stack, version)]
    variables = context(namespace).variables(version, "stable" if version == "1" else "canary")
    with PrometheusProvider(scraped.url) as provider:
        return (
            provider.query_value(render(template.query, variables), at=at),
            provider.query_value(render(template.samples, variables), at=at),
        )


@pytest.mark.parametrize("stack", sorted(STACKS))
@pytest.mark.parametrize(("name", "version"), sorted(EXPECTED["istio"]))
def test_kserve_templates_give_the_driven_values(scraped, stack, name, version):
    got, samples = value(scraped, stack, name, version)
    want = EXPECTED[stack.removesuffix("-otel-collector")][(name, version)]
    assert got == pytest.approx(want, abs=1e-6)
    assert samples == pytest.approx(30 if version == "1" else 20)  # sidecar client-side series excluded


@pytest.mark.parametrize("stack", ["knative", "knative-legacy", "istio"])
def test_the_sequential_judges_buckets_are_seconds(scraped, stack):
    templates, namespace = STACKS[stack]
    judge = templates["latency_p95"].judge
    variables = context(namespace).variables("2", "canary")
    with PrometheusProvider(scraped.url) as provider:
        rows = provider.query_vector(render(judge.buckets, variables), at=scraped.at[(stack, "2")])
    bounds = sorted(float(labels["le"]) * judge.bucket_scale for labels, _ in rows)
    assert 0.1 in [pytest.approx(b) for b in bounds] and bounds[-1] == float("inf")
    assert max(v for _, v in rows) == pytest.approx(20)


def test_another_namespaces_revision_of_the_same_name_is_not_counted(scraped):
    # Revision names repeat across namespaces (iris-predictor-00001 everywhere): the namespace selects.
    variables = context(f"ns-{RUN}-elsewhere").variables("2", "canary")
    with PrometheusProvider(scraped.url) as provider:
        assert provider.query_value(render(KNATIVE["error_rate"].samples, variables), at=scraped.at[("knative", "2")]) is None


def test_missing_platform_variable_is_named():
    ctx = AnalysisContext("iris", NAMESPACE, "iris", "1", "2", "canary", WINDOW)  # no platform names
    for templates in (KNATIVE, KNATIVE_LEGACY):
        with pytest.raises(QueryError, match="revision"):
            render(templates["latency_p95"].query, ctx.variables("2", "canary"))


def test_each_kserve_template_names_the_platform_series_it_reads():
    for templates, prefix in ((KNATIVE, "kn_serving_invocation_duration_seconds"), (KNATIVE_LEGACY, "revision_app_request"),
                              (ISTIO, "istio_request")):  # fmt: skip
        for name in ("latency_p50", "latency_p95", "latency_p99", "error_rate"):
            template = templates[name]
            assert template.series and all(s in template.query + (template.samples or "") for s in template.series)
            assert any(s.startswith(prefix) for s in template.series)
        assert templates["shadow_agreement"].series == ()  # the comparator's, always there when it shadows


def test_kserve_providers_need_a_target():
    doc = {
        "apiVersion": "modelrollout.io/v1alpha1", "kind": "ModelRollout", "metadata": {"name": "r"},
        "spec": {"model": {"name": "iris"}, "analysis": {"provider": "knative",
                 "metrics": [{"name": "p95", "template": "latency_p95", "maxIncrease": "20%"}]}},
    }  # fmt: skip
    with pytest.raises(SpecError, match="provider 'knative' reads KServe metrics: it needs spec.target"):
        parse_rollout(doc)
    doc["spec"]["analysis"]["provider"] = "knative-legacy"
    with pytest.raises(SpecError, match="provider 'knative-legacy' reads KServe metrics"):
        parse_rollout(doc)
    doc["spec"]["target"] = {"inferenceService": "iris"}
    assert parse_rollout(doc).spec.analysis.provider == "knative-legacy"
