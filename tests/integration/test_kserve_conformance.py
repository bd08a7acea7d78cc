"""What the KServe/Knative doubles imitate, one case per behaviour, each naming the source it was read from.

The operator's tests run against doubles of what cannot run here: KServe's controller (with
Knative Serving's) and Knative's queue-proxy. A double that encodes a wrong belief passes every
test while the product fails on a real cluster, so each behaviour the doubles imitate was read in
the real component's repository at a release tag, and is pinned here. A case's docstring starts
with `source:` — repository, tag, file and lines. The last test fails when a case has none.

Releases: kserve/kserve `v0.20.0` (Standard mode with the Kubernetes Deployment controller's conditions); knative/serving `knative-v1.21.0` (the Serving release KServe
0.20's quick install pins, `kserve-deps.env`) and `knative-v1.18.0` for the legacy metrics; the
OpenTelemetry libraries Knative 1.21 vendors (knative/pkg 4a022ed9999a, opentelemetry-go
exporters/prometheus v0.61.0, prometheus/otlptranslator v1.0.0).
"""

from __future__ import annotations

import re
import sys
import threading
import urllib.request
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from kubernetes.client import AppsV1Api, CoreV1Api, CustomObjectsApi

from tests.kube.kserve_double import KServeDouble
from tests.kube.kserve_logger import REQUEST_EVENT, RESPONSE_EVENT, LoggerAgent
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


# -- Standard mode ---------------------------------------------------------------------------------


class Standard(Knative):
    def create(self, uri: str = URI1, **predictor: Any) -> None:
        body = {
            "apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService",
            "metadata": {"name": "iris", "annotations": {"serving.kserve.io/deploymentMode": "Standard"}},
            "spec": {"predictor": {"model": {"modelFormat": {"name": "mlflow"}, "storageUri": uri}, **predictor}},
        }  # fmt: skip
        self.custom.create_namespaced_custom_object(*ISVC[:2], self.namespace, ISVC[2], body)

    def deployment(self, name: str = "iris-predictor") -> dict[str, Any]:
        apps = AppsV1Api(self.custom.api_client)
        return apps.api_client.sanitize_for_serialization(apps.read_namespaced_deployment(name, self.namespace))


@pytest.fixture
def raw(kube_api: Any, kserve_crd: str, kube_namespace: str) -> Iterator[Standard]:
    with kube_api.api_client() as api_client:
        yield Standard(api_client, kube_namespace)


def test_standard_first_write_and_start_up_are_false_not_unknown(raw: Standard) -> None:
    """source: kserve v0.20.0 pkg/apis/serving/v1beta1/inference_service_status.go L373-377 (PredictorReady
    defaults to False), L430-438 (Available=False: MinimumReplicasUnavailable), L455-457 (observedGeneration
    is the Deployment's); reconcilers/deployment/deployment_reconciler.go L467-470 (the created object has no
    status); reconcilers/ingress/kube_ingress_reconciler.go L239-245 (IngressReady)."""
    raw.kserve.slow_start(URI1, rounds=3)
    raw.create()
    first = raw.reconcile()
    assert conditions(first)["PredictorReady"] == ("False", "", "") and first["status"]["observedGeneration"] == 0
    starting = conditions(raw.reconcile())
    assert starting["PredictorReady"][:2] == ("False", "MinimumReplicasUnavailable")
    assert starting["IngressReady"][:2] == ("False", "Predictor ingress not created")
    assert starting["Ready"][:2] == ("False", "Predictor ingress not created")  # the last dependent marked False


def test_standard_ready_addresses_and_the_deployment_it_reads(raw: Standard) -> None:
    """source: kserve v0.20.0 inference_service_status.go L379-387, L405-412 (True from the Deployment), L449-451;
    kube_ingress_reconciler.go L130-172 (status.url, status.address); components/predictor.go L294-300 (the
    storageUri annotation); deployment_reconciler.go L341-359 (RollingUpdate 25%/25%, deadline 600 s)."""
    raw.create()
    isvc = raw.reconcile(rounds=2)
    assert conditions(isvc)["PredictorReady"][:2] == ("True", "NewReplicaSetAvailable")
    ns = raw.namespace
    assert isvc["status"]["url"] == f"http://iris-{ns}.example.com"
    assert isvc["status"]["address"]["url"] == f"http://iris-predictor.{ns}.svc.cluster.local"
    assert "traffic" not in isvc["status"]["components"]["predictor"]  # Standard reports no split
    deployment = raw.deployment()
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["internal.serving.kserve.io/storage-initializer-sourceuri"] == URI1
    assert deployment["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": "25%", "maxUnavailable": "25%"}
    assert deployment["status"]["observedGeneration"] == deployment["metadata"]["generation"]


def test_standard_a_rolling_update_stays_ready_and_observed_generation_is_the_deployments(raw: Standard) -> None:
    """source: kserve v0.20.0 inference_service_status.go L379-387, L413-425 (Available=True during a rollout),
    L455-457; deployment_reconciler.go L267-271, L471-501 (a template change patches the Deployment)."""
    raw.kserve.slow_start(URI2, rounds=3)
    raw.create()
    raw.reconcile(rounds=2)
    for label in ("a", "b"):  # metadata edits: the InferenceService's generation stays, the Deployment's grows
        raw.patch({"metadata": {"labels": {"edit": label}}})
        raw.reconcile(rounds=2)
    raw.patch({"spec": {"predictor": {"model": {"storageUri": URI2}}}})
    isvc = raw.reconcile()
    assert conditions(isvc)["PredictorReady"][0] == "True"  # the old pod is still available
    assert isvc["metadata"]["generation"] == 2 and isvc["status"]["observedGeneration"] == 4
    deployment = raw.deployment()
    assert deployment["status"]["replicas"] == 2 and deployment["status"]["availableReplicas"] == 1


def test_standard_a_failed_load_is_a_crash_loop_not_a_deadline(raw: Standard) -> None:
    """source: kserve v0.20.0 inference_service_status.go L430-438 (MinimumReplicasUnavailable hides
    ProgressDeadlineExceeded on a first deploy), L795-817 (kserve-container CrashLoopBackOff: FailedToLoad)."""
    raw.kserve.fail_load(URI1, "could not find MLmodel")
    raw.create()
    isvc = raw.reconcile(rounds=3)
    assert conditions(isvc)["PredictorReady"][:2] == ("False", "MinimumReplicasUnavailable")
    model = isvc["status"]["modelStatus"]
    assert model["transitionStatus"] == "BlockedByFailedLoad" and model["lastFailureInfo"]["reason"] == "ModelLoadFailed"


def test_standard_a_logger_points_the_service_at_the_agent_before_any_pod_has_it(raw: Standard) -> None:
    """source: kserve v0.20.0 reconcilers/raw/raw_kube_reconciler.go L242 (the Service first),
    reconcilers/service/service_reconciler.go L161-172 (targetPort 9081 with a logger); the agent is
    injected into new pods only (pkg/webhook/admission/pod/agent_injector.go L177-512)."""
    raw.kserve.slow_start(URI1, rounds=4)
    raw.create()
    raw.reconcile(rounds=5)
    isvc = raw.get()
    [(before, _)] = raw.kserve.backends(raw.namespace, isvc)
    assert before.failure is None
    raw.patch({"spec": {"predictor": {"logger": {"mode": "all", "url": "http://comparator/"}}}})
    isvc = raw.reconcile()
    service = CoreV1Api(raw.custom.api_client).read_namespaced_service("iris-predictor", raw.namespace)
    assert service.spec.ports[0].target_port == 9081
    [(during, _)] = raw.kserve.backends(raw.namespace, isvc)
    assert during.failure is not None and "has no agent" in during.failure  # clients refused meanwhile


def test_standard_canary_entries_get_a_deployment_and_no_traffic(raw: Standard) -> None:
    """source: kserve v0.20.0 pkg/controller/v1beta1/inferenceservice/components/predictor.go L913-1040 (a
    Deployment and Service per entry), L959-997 (canaryStatuses, CanaryPredictorReady); nothing in
    reconcilers/ingress reads trafficPercent (the split of kserve#5912 is on master only)."""
    raw.kserve.slow_start(URI2, rounds=3)
    raw.create()
    raw.reconcile(rounds=2)
    entry = {"trafficPercent": 30, "predictor": {"name": "next", "model": {"name": "kserve-container",
             "modelFormat": {"name": "mlflow"}, "storageUri": URI2}}}  # fmt: skip
    raw.patch({"spec": {"canary": [entry]}})
    isvc = raw.reconcile()
    assert conditions(isvc)["CanaryPredictorReady"][:2] == ("False", "CanariesNotReady")
    assert isvc["status"]["canaryStatuses"] == [
        {"name": "next", "ready": False, "trafficPercent": 30, "modelStatus": {"transitionStatus": ""}}
    ]
    isvc = raw.reconcile(rounds=3)
    assert conditions(isvc)["CanaryPredictorReady"][:2] == ("True", "AllCanariesReady")
    assert raw.deployment("iris-next-predictor")["status"]["availableReplicas"] == 1
    assert [(b.workload, w) for b, w in raw.kserve.backends(raw.namespace, isvc)] == [("iris-predictor", 100)]


# -- KServe's logger agent ----------------------------------------------------------------------


class _Sink(BaseHTTPRequestHandler):
    events: list[tuple[dict[str, str], bytes]] = []

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        if self.path.startswith("/model"):
            status = 200 if b"ok" in body else 500
            self.send_response(status)
            self.send_header("content-type", "application/json; charset=utf-8")
            self.end_headers()
            self.wfile.write(b'{"predictions": [1]}')
            return
        type(self).events.append((dict(self.headers.items()), body))
        self.send_response(202)
        self.end_headers()

    def log_message(self, *_: object) -> None:
        pass


@pytest.fixture
def sink() -> Iterator[str]:
    _Sink.events = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Sink)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_logger_ids_by_ce_id_logs_responses_of_200_only_with_the_requests_content_type(sink: str) -> None:
    """source: kserve v0.20.0 pkg/logger/handler.go L131-140 (metadataHeaders, canonical names), L143 and
    L210-216 (Ce-Id, else a UUID), L183-207 (a response event only for 200), L144/L150/L188 (the request's
    content type on both); pkg/logger/worker.go L87-169 (binary mode, the ce- extensions)."""
    agent = LoggerAgent("ml")
    logger = {"mode": "all", "url": sink + "/events", "metadataHeaders": ["X-Request-Id"]}
    try:
        for body, headers in ((b'{"ok": 1}', {"Ce-Id": "client-1", "x-request-id": "r-1"}), (b'{"bad": 1}', {})):
            agent.proxy(logger, "iris", sink, "/model", body, {"content-type": "application/json", **headers})
    finally:
        agent.close()
    by_id: dict[str, list[dict[str, str]]] = {}
    for headers, _ in _Sink.events:
        lowered = {k.lower(): v for k, v in headers.items()}
        by_id.setdefault(lowered["ce-id"], []).append(lowered)
    assert sorted(e["ce-type"] for e in by_id["client-1"]) == [REQUEST_EVENT, RESPONSE_EVENT]
    assert all(e["content-type"] == "application/json" for e in by_id["client-1"])  # not the response's own
    assert all(e["ce-metadata"] == '{"X-Request-Id":["r-1"]}' for e in by_id["client-1"])
    assert all(e["ce-inferenceservicename"] == "iris" and e["ce-namespace"] == "ml" for e in by_id["client-1"])
    [other] = [i for i in by_id if i != "client-1"]
    assert uuid.UUID(other) and [e["ce-type"] for e in by_id[other]] == [REQUEST_EVENT]  # a 500: no response event


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
