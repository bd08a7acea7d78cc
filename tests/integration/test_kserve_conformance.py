"""What the KServe/Knative doubles imitate, one case per behaviour, each naming the source it was read from.

The operator's tests run against doubles of what cannot run here: KServe's controller (with
Knative Serving's) and Knative's queue-proxy. A double that encodes a wrong belief passes every
test while the product fails on a real cluster, so each behaviour the doubles imitate was read in
the real component's repository at a release tag, and is pinned here. A case's docstring starts
with `source:` — repository, tag, file and lines. The last test fails when a case has none.

Releases: kserve/kserve `v0.20.0`; knative/serving `knative-v1.21.0` (the Serving release KServe
0.20's quick install pins, `kserve-deps.env`) and `knative-v1.18.0` for the legacy metrics; the
OpenTelemetry libraries Knative 1.21 vendors (knative/pkg 4a022ed9999a, opentelemetry-go
exporters/prometheus v0.61.0, prometheus/otlptranslator v1.0.0).
"""

from __future__ import annotations

import re
import sys
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes.client import CustomObjectsApi

from tests.kube.kserve_double import KServeDouble
from tests.kube.queue_proxy import QueueProxyPods

ISVC = ("serving.kserve.io", "v1beta1", "inferenceservices")
URI1, URI2 = "s3://models/iris/1", "s3://models/iris/2"


class Knative:
    """One InferenceService in Knative mode, written as a user (or the operator) would, and the double."""

    def __init__(self, api_client: Any, namespace: str) -> None:
        self.namespace, self.custom = namespace, CustomObjectsApi(api_client)
        self.kserve = KServeDouble(api_client)

    def create(self, uri: str = URI1, **predictor: Any) -> None:
        body = {
            "apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService",
            "metadata": {"name": "iris", "annotations": {"serving.kserve.io/deploymentMode": "Knative"}},
            "spec": {"predictor": {"model": {"modelFormat": {"name": "mlflow"}, "storageUri": uri}, **predictor}},
        }  # fmt: skip
        self.custom.create_namespaced_custom_object(*ISVC[:2], self.namespace, ISVC[2], body)

    def patch(self, patch: dict[str, Any]) -> None:
        self.custom.patch_namespaced_custom_object(*ISVC[:2], self.namespace, ISVC[2], "iris", patch)

    def reconcile(self, rounds: int = 1, ready: bool = True) -> dict[str, Any]:
        for _ in range(rounds):
            self.kserve.reconcile(self.namespace, ready=ready)
        return self.get()

    def get(self) -> dict[str, Any]:
        return self.custom.get_namespaced_custom_object(*ISVC[:2], self.namespace, ISVC[2], "iris")


def conditions(isvc: dict[str, Any]) -> dict[str, tuple[str, str, str]]:
    return {c["type"]: (c["status"], c.get("reason", ""), c.get("message", "")) for c in isvc["status"]["conditions"]}


def predictor(isvc: dict[str, Any]) -> dict[str, Any]:
    return isvc["status"]["components"]["predictor"]


@pytest.fixture
def knative(kube_api: Any, kserve_crd: str, kube_namespace: str) -> Iterator[Knative]:
    with kube_api.api_client() as api_client:
        yield Knative(api_client, kube_namespace)


# -- Knative mode: conditions ---------------------------------------------------------------------


def test_knative_first_reconcile_only_initialises_the_conditions(knative: Knative) -> None:
    """source: kserve v0.20.0 pkg/controller/v1beta1/inferenceservice/controller.go L226-228 (InitializeConditions),
    reconcilers/knative/ksvc_reconciler.go L307-311 (a created Knative Service's empty status);
    knative.dev/pkg apis/condition_set.go L416-436."""
    knative.create()
    isvc = knative.reconcile()
    got = conditions(isvc)
    assert got["Ready"] == got["PredictorReady"] == got["IngressReady"] == ("Unknown", "", "")
    assert isvc["status"]["observedGeneration"] == 0 and "components" not in isvc["status"]


def test_knative_a_starting_revision_is_unknown_not_false(knative: Knative) -> None:
    """source: knative/serving knative-v1.21.0 pkg/apis/serving/v1/configuration_lifecycle.go L74-81 (latest
    created not ready: ConfigurationsReady Unknown), route_lifecycle.go L128-131 (RevisionMissing);
    kserve v0.20.0 pkg/apis/serving/v1beta1/inference_service_status.go L612, L621-632 (copied verbatim)."""
    knative.create()
    isvc = knative.reconcile(rounds=3, ready=False)
    got = conditions(isvc)
    assert got["PredictorReady"][0] == "Unknown" and got["PredictorConfigurationReady"] == ("Unknown", "", "")
    assert got["PredictorRouteReady"][:2] == ("Unknown", "RevisionMissing")
    assert got["Ready"][0] == "Unknown" and got["IngressReady"][0] == "Unknown"


def test_knative_ready_conditions_urls_and_severities(knative: Knative) -> None:
    """source: kserve v0.20.0 inference_service_status.go L295-298 (Ready over PredictorReady and IngressReady),
    L546-565 (LatestDeploymentReady, RoutesReady), L613-620 (component URL and address while Ready);
    reconcilers/ingress/ingress_reconciler.go L103-123, L112-118, L191-235 (status.url, status.address);
    knative.dev/pkg apis/condition_set.go L220-225 (Info severity off the happy path)."""
    knative.create()
    isvc = knative.reconcile(rounds=2)
    got = conditions(isvc)
    assert {k: v[0] for k, v in got.items()} == {
        "IngressReady": "True", "LatestDeploymentReady": "True", "PredictorConfigurationReady": "True",
        "PredictorReady": "True", "PredictorRouteReady": "True", "Ready": "True", "RoutesReady": "True",
        "Stopped": "False",
    }  # fmt: skip
    severity = {c["type"]: c.get("severity", "") for c in isvc["status"]["conditions"]}
    assert severity["Ready"] == severity["PredictorReady"] == severity["IngressReady"] == ""
    assert severity["RoutesReady"] == severity["Stopped"] == "Info"
    ns = knative.namespace
    assert predictor(isvc)["url"] == f"http://iris-predictor.{ns}.example.com"
    assert isvc["status"]["url"] == f"http://iris.{ns}.example.com"
    assert isvc["status"]["address"]["url"] == f"http://iris.{ns}.svc.cluster.local"


def test_knative_a_failed_revision_is_false_revisionfailed_and_blocks_the_model(knative: Knative) -> None:
    """source: knative/serving knative-v1.21.0 configuration_lifecycle.go L94-101 (RevisionFailed, its message),
    pkg/reconciler/revision/reconcile_resources.go L113-125 (the container's exit); kserve v0.20.0
    inference_service_status.go L721-819 (PropagateModelStatus: BlockedByFailedLoad, lastFailureInfo without
    modelRevisionName, totalCopies = ready pods, failedCopies 0)."""
    knative.kserve.fail_load(URI1, "could not find MLmodel")
    knative.create()
    isvc = knative.reconcile(rounds=2)
    status, reason, message = conditions(isvc)["PredictorReady"]
    assert (status, reason) == ("False", "RevisionFailed")
    assert message == 'Revision "iris-predictor-00001" failed with message: Container failed with: could not find MLmodel.'
    model = isvc["status"]["modelStatus"]
    assert model["transitionStatus"] == "BlockedByFailedLoad"
    assert model["lastFailureInfo"] == {"reason": "ModelLoadFailed", "message": "could not find MLmodel", "exitCode": 1}
    assert model["copies"] == {"failedCopies": 0, "totalCopies": 0}


def test_knative_last_failure_info_is_never_cleared(knative: Knative) -> None:
    """source: kserve v0.20.0 inference_service_status.go L658-677, L694-700 (SetModelFailureInfo only sets)."""
    knative.kserve.fail_load(URI2, "boom")
    knative.create()
    knative.reconcile(rounds=2)
    knative.patch({"spec": {"predictor": {"model": {"storageUri": URI2}}}})
    knative.reconcile(rounds=2)
    knative.patch({"spec": {"predictor": {"model": {"storageUri": URI1}}}})
    model = knative.reconcile(rounds=3)["status"]["modelStatus"]
    assert model["transitionStatus"] == "UpToDate" and model["lastFailureInfo"]["message"] == "boom"
    assert model["states"] == {"activeModelState": "Loaded", "targetModelState": "Loaded"}


# -- Knative mode: revisions, traffic, generations ------------------------------------------------


def test_knative_canary_traffic_percent_splits_latest_ready_against_rolled_out(knative: Knative) -> None:
    """source: kserve v0.20.0 reconcilers/knative/ksvc_reconciler.go L132-164 (latest N%, prev 100-N tagged
    `prev`, no `latest` tag without serving.kserve.io/enable-tag-routing); knative/serving knative-v1.21.0
    (latestRevision resolves to the latest ready revision)."""
    knative.create()
    knative.reconcile(rounds=2)
    knative.patch({"spec": {"predictor": {"canaryTrafficPercent": 20, "model": {"storageUri": URI2}}}})
    starting = predictor(knative.reconcile(rounds=2, ready=False))
    # The new revision is not ready: both targets resolve to the rolled-out one.
    assert {(t["revisionName"], t["percent"]) for t in starting["traffic"]} == {("iris-predictor-00001", 20), ("iris-predictor-00001", 80)}
    ready = predictor(knative.reconcile())
    assert ready["traffic"] == [
        {"latestRevision": True, "percent": 20, "revisionName": "iris-predictor-00002"},
        {"latestRevision": False, "percent": 80, "revisionName": "iris-predictor-00001", "tag": "prev",
         "url": f"http://prev-iris-predictor.{knative.namespace}.example.com"},
    ]  # fmt: skip
    assert ready["latestRolledoutRevision"] == "iris-predictor-00001"  # moves only at 100%


def test_knative_rolled_out_revision_moves_at_100_and_remembers_the_previous(knative: Knative) -> None:
    """source: kserve v0.20.0 inference_service_status.go L582-606 (PropagateStatus)."""
    knative.create()
    knative.reconcile(rounds=2)
    knative.patch({"spec": {"predictor": {"canaryTrafficPercent": 20, "model": {"storageUri": URI2}}}})
    knative.reconcile(rounds=2)
    knative.patch({"spec": {"predictor": {"canaryTrafficPercent": None}}})
    components = predictor(knative.reconcile(rounds=2))
    assert components["latestRolledoutRevision"] == "iris-predictor-00002"
    assert components["previousRolledoutRevision"] == "iris-predictor-00001"


def test_knative_the_logger_and_metadata_make_new_revisions(knative: Knative) -> None:
    """source: kserve v0.20.0 pkg/controller/v1beta1/inferenceservice/components/component.go L60-75 (the logger
    becomes internal.serving.kserve.io/logger* pod annotations), reconcilers/knative/ksvc_reconciler.go
    L102-121, L192-205 (InferenceService labels and annotations go into the revision template)."""
    knative.create()
    knative.reconcile(rounds=2)
    knative.patch({"spec": {"predictor": {"logger": {"mode": "all", "url": "http://comparator/"}}}})
    isvc = knative.reconcile(ready=False)
    assert predictor(isvc)["latestCreatedRevision"] == "iris-predictor-00002"
    assert [t["revisionName"] for t in predictor(isvc)["traffic"]] == ["iris-predictor-00001"]  # until it is ready
    assert knative.kserve.revision("iris-predictor-00002").logger == {"mode": "all", "url": "http://comparator/"}
    knative.patch({"metadata": {"labels": {"team": "ml"}}})
    assert predictor(knative.reconcile(ready=False))["latestCreatedRevision"] == "iris-predictor-00003"
    knative.patch({"spec": {"predictor": {"canaryTrafficPercent": 50}}})  # traffic only: no revision
    assert predictor(knative.reconcile(ready=False))["latestCreatedRevision"] == "iris-predictor-00003"


def test_knative_observed_generation_is_the_knative_services_not_the_inference_services(knative: Knative) -> None:
    """source: kserve v0.20.0 inference_service_status.go L635 (ss.ObservedGeneration = serviceStatus.ObservedGeneration)."""
    knative.create()
    knative.reconcile(rounds=2)
    for label in ("a", "b", "c"):  # metadata: the InferenceService's generation stays, the Knative Service's grows
        knative.patch({"metadata": {"labels": {"edit": label}}})
        isvc = knative.reconcile()
    assert isvc["metadata"]["generation"] == 1
    assert isvc["status"]["observedGeneration"] > isvc["metadata"]["generation"]


# -- Knative queue-proxy metrics ------------------------------------------------------------------


@pytest.fixture(scope="module")
def pages(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    pools = {"1.21": QueueProxyPods(tmp_path_factory.mktemp("qp"), slots=1),
             "1.18": QueueProxyPods(tmp_path_factory.mktemp("qp18"), slots=1, legacy=True)}  # fmt: skip
    try:
        for pool in pools.values():
            pod = pool.pod("ns", "iris", "iris-predictor-00001")
            pod.serve(0.02, 200)
            pod.serve(1.5, 503)
        yield {
            release: urllib.request.urlopen(f"http://127.0.0.1:{pool.port}/pods/0/metrics", timeout=5).read().decode()
            for release, pool in pools.items()
        }
    finally:
        for pool in pools.values():
            pool.close()


def series(page: str, name: str) -> list[dict[str, str]]:
    rows = []
    for line in page.splitlines():
        if line.startswith(name + "{"):
            rows.append(dict(re.findall(r'(\w+)="([^"]*)"', line[len(name) :].split("}")[0])))
    return rows


def test_queue_proxy_1_21_exports_the_otel_histogram_in_seconds(pages: dict[str, str]) -> None:
    """source: knative/serving knative-v1.21.0 pkg/queue/request_metric.go L31-32, L60-65, L99-108 (name, unit s,
    bounds, only http.response.status_code); knative/pkg 4a022ed9999a observability/metrics/prometheus_enabled.go
    L33-35 (UnderscoreEscapingWithSuffixes); opentelemetry-go exporters/prometheus/v0.61.0 exporter.go L34-37,
    L238-240 (otel_scope_* on every series, empty values written)."""
    buckets = series(pages["1.21"], "kn_serving_invocation_duration_seconds_bucket")
    assert {b["le"] for b in buckets} == {"0.005", "0.01", "0.025", "0.05", "0.075", "0.1", "0.25", "0.5", "0.75", "1",
                                          "2.5", "5", "7.5", "10", "+Inf"}  # fmt: skip
    for row in buckets:
        assert set(row) == {"http_response_status_code", "le", "otel_scope_name", "otel_scope_schema_url", "otel_scope_version"}
        assert row["otel_scope_name"] == "knative.dev/serving/pkg/queue" and row["otel_scope_version"] == ""
    assert {r["http_response_status_code"] for r in series(pages["1.21"], "kn_serving_invocation_duration_seconds_count")} == {"200", "503"}


def test_queue_proxy_1_21_puts_the_revision_only_on_target_info(pages: dict[str, str]) -> None:
    """source: knative/serving knative-v1.21.0 pkg/queue/sharedmain/otel.go L91-129 (the resource attributes);
    opentelemetry-go exporters/prometheus/v0.61.0 exporter.go L196-220, L636-643 (target_info, no scope labels)."""
    [info] = series(pages["1.21"], "target_info")
    assert info["kn_revision_name"] == "iris-predictor-00001" and info["k8s_namespace_name"] == "ns"
    assert info["container_name"] == "queue-proxy" and info["kn_configuration_name"] == "iris-predictor"
    assert info["k8s_pod_name"].startswith("iris-predictor-00001-deployment-")
    assert not any(k.startswith("otel_scope") for k in info)
    for line in pages["1.21"].splitlines():
        if line.startswith("kn_serving"):
            assert "kn_revision_name" not in line and "k8s_namespace_name" not in line


def test_queue_proxy_1_18_exports_opencensus_milliseconds_with_the_revision_label(pages: dict[str, str]) -> None:
    """source: knative/serving knative-v1.18.0 pkg/queue/request_metric.go L37-39 (ms bounds), L50-57, L142-199;
    the vendored OpenCensus Prometheus exporter prometheus.go L151-173, L227-233 (no _total, resource labels)."""
    counts = series(pages["1.18"], "revision_app_request_count")
    assert {c["response_code_class"] for c in counts} == {"2xx", "5xx"}
    assert all(c["revision_name"] == "iris-predictor-00001" and c["namespace_name"] == "ns" for c in counts)
    bounds = {b["le"] for b in series(pages["1.18"], "revision_app_request_latencies_bucket")}
    assert {"5", "1000", "100000", "+Inf"} <= bounds
    assert "revision_app_request_count_total" not in pages["1.18"]


# -- every case names its source ------------------------------------------------------------------


def test_every_case_names_the_source_it_imitates() -> None:
    module = sys.modules[__name__]
    cases = [getattr(module, n) for n in dir(module) if n.startswith("test_") and n != "test_every_case_names_the_source_it_imitates"]
    unnamed = [c.__name__ for c in cases if not (c.__doc__ or "").startswith("source: ")]
    assert not unnamed, f"cases without a `source:` docstring: {unnamed}"
    tagged = re.compile(r"v0\.20\.0|knative-v1\.(18|21)\.0|4a022ed9999a|v0\.61\.0")
    assert all(tagged.search(c.__doc__ or "") for c in cases), "each source names its release tag or commit"
