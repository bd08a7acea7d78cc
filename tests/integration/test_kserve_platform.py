"""KServePlatform against the Kubernetes API emulator with KServe's real CRD (invalid documents: 422).

KServe's controller is played by `tests.kube.kserve_double.KServeDouble`, called after each
apply: it writes the status KServe v0.20.0 would (its first reconcile of a new object only
initialises the conditions; a new revision is ready one reconcile later), and the platform reads
health, endpoint and analysis variables from it. Every test drives a rollout the way the engine
does, tick by tick.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes.client import CustomObjectsApi

from controller.kserve.documents import IsvcTarget, shadow_logger
from controller.kserve.platform import KServeError, KServePlatform
from controller.platform import Platform, Routing, VersionHealth
from tests.kube.kserve_double import KServeDouble

URIS = {"1": "s3://models/iris/1/artifacts", "2": "s3://models/iris/2/artifacts", "3": "s3://models/iris/3/artifacts"}
COMPARATOR = "http://comparator.modelrollout.svc:8080/events"
ISVC = ("serving.kserve.io", "v1beta1")


def stable() -> Routing:
    return Routing(model="iris", stable_version="1")


def shadow() -> Routing:
    return Routing(model="iris", stable_version="1", candidate_version="2", candidate_role="shadow", shadow_percent=50)


def canary(weight: int) -> Routing:
    return Routing(
        model="iris", stable_version="1", candidate_version="2", candidate_role="canary", candidate_weight=weight
    )


class Cluster:
    """The platform under test, KServe's double and a raw client, all on one namespace."""

    def __init__(self, api_client: Any, namespace: str, mode: str) -> None:
        self.namespace = namespace
        route = "iris-route" if mode == "Standard" else None
        self.target = IsvcTarget(rollout="iris", name="iris", namespace=namespace, deployment_mode=mode, http_route=route)  # type: ignore[arg-type]
        self.platform = KServePlatform(api_client, {"iris": self.target}, COMPARATOR)
        self.kserve = KServeDouble(api_client)
        self.custom = CustomObjectsApi(api_client)

    def tick(self, routing: Routing, *, ready: bool = True, rounds: int = 3) -> None:
        """One apply, then `rounds` reconciles of KServe's (it reconciles again after each status write)."""
        self.platform.apply("iris", routing, URIS)
        self.reconcile(ready=ready, rounds=rounds)

    def settle(self, routing: Routing, *, rounds: int = 3) -> None:
        """A tick, then the next tick's apply: what the platform decides once KServe has reported."""
        self.tick(routing, rounds=rounds)
        self.platform.apply("iris", routing, URIS)

    def reconcile(self, *, ready: bool = True, rounds: int = 1) -> None:
        for _ in range(rounds):
            self.kserve.reconcile(self.namespace, ready=ready)

    def get(self, name: str = "iris") -> dict[str, Any] | None:
        from kubernetes.client.exceptions import ApiException

        try:
            return self.custom.get_namespaced_custom_object(*ISVC, self.namespace, "inferenceservices", name)
        except ApiException as err:
            if err.status == 404:
                return None
            raise

    def predictor(self, name: str = "iris") -> dict[str, Any]:
        isvc = self.get(name)
        assert isvc is not None, f"{name} does not exist"
        return isvc["spec"]["predictor"]

    def version(self) -> str:
        return self.get()["metadata"]["resourceVersion"]  # type: ignore[index]

    def split(self) -> list[tuple[str, int]]:
        """The (Service, weight) pairs of the route's first rule; the second rule is the user's own."""
        route = self.custom.get_namespaced_custom_object(*ROUTE[:2], self.namespace, ROUTE[2], "iris-route")
        assert route["spec"]["rules"][1]["backendRefs"] == [
            {"group": "", "kind": "Service", "name": "docs", "port": 8080, "weight": 1}
        ], "a rule reaching other Services is left alone"
        return [(ref["name"], ref.get("weight", 1)) for ref in route["spec"]["rules"][0]["backendRefs"]]


@pytest.fixture
def knative(kube_api: Any, kserve_crd: str, kube_namespace: str) -> Iterator[Cluster]:
    with kube_api.api_client() as api_client:
        yield Cluster(api_client, kube_namespace, "Knative")
    assert kube_api.emulator.internal_errors == []
    assert [w for w in kube_api.emulator.warnings if kube_namespace in w] == []  # no field KServe would drop


ROUTE = ("gateway.networking.k8s.io", "v1", "httproutes")


def create_route(custom: CustomObjectsApi, namespace: str, service: str = "iris-predictor") -> None:
    """The user's HTTPRoute: their gateway and hostname, one rule to the InferenceService's predictor."""
    body = {
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute", "metadata": {"name": "iris-route"},
        "spec": {"parentRefs": [{"name": "public", "namespace": "gateways"}], "hostnames": ["iris.example.com"],
                 "rules": [{"matches": [{"path": {"type": "PathPrefix", "value": "/v1"}}],
                            "backendRefs": [{"name": service, "port": 80}]},
                           {"matches": [{"path": {"type": "PathPrefix", "value": "/docs"}}],
                            "backendRefs": [{"name": "docs", "port": 8080}]}]},
    }  # fmt: skip
    custom.create_namespaced_custom_object(*ROUTE[:2], namespace, ROUTE[2], body)


@pytest.fixture
def standard(kube_api: Any, kserve_crd: str, httproute_crd: str, kube_namespace: str) -> Iterator[Cluster]:
    with kube_api.api_client() as api_client:
        cluster = Cluster(api_client, kube_namespace, "Standard")
        create_route(cluster.custom, kube_namespace)
        yield cluster
    assert [w for w in kube_api.emulator.warnings if kube_namespace in w] == []


def test_with_the_watchs_cache_reads_cost_nothing_and_a_stale_copy_is_refused_then_read_again(
    kube_api: Any, kserve_crd: str, kube_namespace: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The operator's platform reads InferenceServices from its watch's view (`ObjectView`, fed here
    by the writes' answers only: no watch runs). A patch decided on a copy someone has written past
    carries that copy's resourceVersion, is refused (409), and the retry reads from the API server."""
    from controller.kube.object_view import ObjectView

    def isvc_gets() -> int:
        return sum(n for c, n in kube_api.call_counts().items() if c.rbac == ("serving.kserve.io", "inferenceservices", "get"))

    with kube_api.api_client() as api_client:
        cluster = Cluster(api_client, kube_namespace, "Knative")
        cache = ObjectView()
        platform = KServePlatform(api_client, {"iris": cluster.target}, COMPARATOR, cache=cache)
        platform.apply("iris", stable(), URIS)  # created: the answer is the cache's copy
        assert cache.get(kube_namespace, "iris") == cluster.get()
        cluster.reconcile(rounds=3)  # KServe reports Ready; with no watch, the cache does not see it
        before, gets = cluster.version(), isvc_gets()
        platform.apply("iris", stable(), URIS)
        assert platform.health("iris", "1") == VersionHealth(ready=False)  # what the cache says: not yet
        assert isvc_gets() == gets, "the platform read the API server, not its cache"
        assert cluster.version() == before, "nothing to change: no write"

        cluster.custom.patch_namespaced_custom_object(
            *ISVC, kube_namespace, "inferenceservices", "iris", {"metadata": {"labels": {"team": "ml"}}}
        )
        with caplog.at_level("INFO", logger="controller.kserve.platform"):
            platform.apply("iris", shadow(), URIS)
        assert "changed while applying; reading again" in caplog.text  # the stale copy's patch: 409
        assert cluster.predictor()["logger"] == shadow_logger(COMPARATOR)
        assert cluster.get()["metadata"]["labels"]["team"] == "ml"  # type: ignore[index] - the other write is kept
        assert cache.get(kube_namespace, "iris") == cluster.get()
        assert cache.get(kube_namespace, "iris-shadow") == cluster.get("iris-shadow")

        platform.apply("iris", stable(), URIS)  # the shadow goes: deleted, and gone from the cache
        assert cluster.get("iris-shadow") is None and cache.get(kube_namespace, "iris-shadow") is None

        # A deletion the watch never reported: someone deletes the shadow while kopf's watch is down,
        # and kopf lists again. The copy left behind is one the listing did not show, so it is read
        # from the API server (404), forgotten, and the shadow is made anew.
        def delete_shadow_unseen() -> None:
            cluster.custom.delete_namespaced_custom_object(*ISVC, kube_namespace, "inferenceservices", "iris-shadow")

        platform.apply("iris", shadow(), URIS)
        delete_shadow_unseen()
        cache.listed(cluster.get())  # the listing after the watch failed: the primary, not the shadow
        assert cache.doubtful(kube_namespace, "iris-shadow") and not cache.doubtful(kube_namespace, "iris")
        platform.apply("iris", shadow(), URIS)
        assert cluster.predictor("iris-shadow")["model"]["storageUri"] == URIS["2"]
        assert cache.get(kube_namespace, "iris-shadow") == cluster.get("iris-shadow")
        assert not cache.doubtful(kube_namespace, "iris-shadow")

        # And a copy of a deleted object that a write needs (no listing doubted it): 404, and the
        # retry reads the API server.
        delete_shadow_unseen()
        third = Routing(model="iris", stable_version="1", candidate_version="3", candidate_role="shadow", shadow_percent=50)
        with caplog.at_level("INFO", logger="controller.kserve.platform"):
            platform.apply("iris", third, URIS)
        assert "the watch showed is gone; reading again" in caplog.text
        assert cluster.predictor("iris-shadow")["model"]["storageUri"] == URIS["3"]
        assert cache.get(kube_namespace, "iris-shadow") == cluster.get("iris-shadow")


def test_knative_rollout_shadow_canary_promote(knative: Cluster) -> None:
    platform = knative.platform
    assert isinstance(platform, Platform)
    assert platform.endpoint("iris") is None  # before the first apply
    assert platform.health("iris", "1") == VersionHealth(ready=False)

    platform.apply("iris", stable(), URIS)
    knative.reconcile()  # KServe's first reconcile: conditions Unknown, no revision reported yet
    assert platform.health("iris", "1") == VersionHealth(ready=False)
    knative.reconcile(rounds=2)
    assert knative.predictor()["model"]["storageUri"] == URIS["1"]
    assert platform.health("iris", "1") == VersionHealth(ready=True)
    assert platform.endpoint("iris") == f"http://iris.{knative.namespace}.example.com"
    assert platform.analysis_variables("iris", "1") == {
        "inference_service": "iris",
        "revision": "iris-predictor-00001",
        "workload": "iris-predictor-00001-deployment",
    }

    # Shadow: the candidate gets its own InferenceService; the primary only gains the logger, which
    # makes a new revision of the stable (the logger is pod annotations).
    platform.apply("iris", shadow(), URIS)
    assert knative.predictor("iris-shadow")["model"]["storageUri"] == URIS["2"]
    assert knative.predictor()["logger"] == shadow_logger(COMPARATOR)
    assert knative.predictor()["model"]["storageUri"] == URIS["1"]
    assert platform.health("iris", "2") == VersionHealth(ready=False)  # KServe has not reported yet
    knative.reconcile(rounds=3, ready=False)  # the shadow and the primary's new revision keep starting
    assert platform.health("iris", "2") == VersionHealth(ready=False)
    components = knative.get()["status"]["components"]["predictor"]  # type: ignore[index]
    assert components["latestCreatedRevision"] == "iris-predictor-00002"
    assert components["traffic"] == [{"revisionName": "iris-predictor-00001", "percent": 100, "latestRevision": True}]
    knative.reconcile(rounds=2)
    assert platform.health("iris", "2") == VersionHealth(ready=True)
    assert platform.analysis_variables("iris", "2") == {
        "inference_service": "iris-shadow",
        "revision": "iris-shadow-predictor-00001",
        "workload": "iris-shadow-predictor-00001-deployment",
    }
    # The logger's revision now serves the stable version.
    assert platform.analysis_variables("iris", "1")["revision"] == "iris-predictor-00002"

    # Canary 10%: the shadow goes, the primary gets the candidate and the traffic split.
    knative.tick(canary(10), ready=False)
    assert knative.get("iris-shadow") is None
    predictor = knative.predictor()
    assert predictor["canaryTrafficPercent"] == 10 and predictor["model"]["storageUri"] == URIS["2"]
    assert "logger" not in predictor
    assert platform.health("iris", "2") == VersionHealth(ready=False)  # revision 3 still starting
    assert platform.health("iris", "1") == VersionHealth(ready=True)  # the rolled-out revision serves
    knative.reconcile(rounds=2)
    assert platform.health("iris", "2") == VersionHealth(ready=True)
    assert platform.analysis_variables("iris", "2")["revision"] == "iris-predictor-00003"
    assert platform.analysis_variables("iris", "1")["revision"] == "iris-predictor-00002"
    traffic = knative.get()["status"]["components"]["predictor"]["traffic"]  # type: ignore[index]
    assert {(t["revisionName"], t["percent"]) for t in traffic} == {
        ("iris-predictor-00003", 10),
        ("iris-predictor-00002", 90),
    }

    knative.tick(canary(50))
    assert knative.predictor()["canaryTrafficPercent"] == 50

    # Promotion: the field goes, the candidate's revision takes all traffic.
    knative.tick(canary(100))
    assert "canaryTrafficPercent" not in knative.predictor()
    assert platform.health("iris", "2") == VersionHealth(ready=True)
    components = knative.get()["status"]["components"]["predictor"]  # type: ignore[index]
    assert components["latestRolledoutRevision"] == "iris-predictor-00003"
    assert components["previousRolledoutRevision"] == "iris-predictor-00002"
    assert components["traffic"] == [{"revisionName": "iris-predictor-00003", "percent": 100, "latestRevision": True}]

    knative.tick(Routing(model="iris", stable_version="2"))
    assert knative.predictor()["model"]["storageUri"] == URIS["2"]
    assert platform.health("iris", "2") == VersionHealth(ready=True)
    assert platform.health("iris", "1") == VersionHealth(ready=False)  # no longer part of the rollout


def test_knative_rollback_restores_the_stable_and_holds_traffic_until_ready(knative: Cluster) -> None:
    platform = knative.platform
    knative.tick(stable())
    knative.tick(canary(10))
    assert platform.health("iris", "2").ready

    knative.tick(stable(), ready=False)  # rollback: a new revision of the stable model is starting
    predictor = knative.predictor()
    assert predictor["model"]["storageUri"] == URIS["1"]
    assert predictor["canaryTrafficPercent"] == 0  # 100% stays on the rolled-out stable revision
    traffic = knative.get()["status"]["components"]["predictor"]["traffic"]  # type: ignore[index]
    assert {(t["revisionName"], t["percent"]) for t in traffic} == {
        ("iris-predictor-00002", 0),
        ("iris-predictor-00001", 100),
    }
    assert platform.health("iris", "1") == VersionHealth(ready=False)

    knative.reconcile()  # the restored revision is ready
    assert platform.health("iris", "1") == VersionHealth(ready=True)
    knative.tick(stable())
    assert "canaryTrafficPercent" not in knative.predictor()
    assert knative.get()["status"]["components"]["predictor"]["latestRolledoutRevision"] == "iris-predictor-00003"  # type: ignore[index]


def test_a_failed_model_load_names_kserves_reason(knative: Cluster) -> None:
    knative.tick(stable())
    knative.kserve.fail_load(URIS["2"], "MlflowException: could not find MLmodel in /mnt/models")
    knative.tick(canary(10))

    health = knative.platform.health("iris", "2")
    assert health.ready is False
    assert health.failure == (
        "InferenceService iris predictor: ModelLoadFailed: MlflowException: could not find MLmodel in /mnt/models "
        "(exit code 1)"
    )
    assert knative.platform.health("iris", "1") == VersionHealth(ready=True)

    # Same in the shadow role, where the failure is the shadow InferenceService's.
    knative.tick(shadow())
    failure = knative.platform.health("iris", "2").failure
    assert failure is not None and failure.startswith("InferenceService iris-shadow predictor: ModelLoadFailed:")


def test_a_slow_revision_is_starting_not_failed(knative: Cluster) -> None:
    knative.tick(stable())
    knative.kserve.slow_start(URIS["2"], rounds=6)
    knative.tick(canary(10), rounds=4)
    conditions = {c["type"]: c for c in knative.get()["status"]["conditions"]}  # type: ignore[index]
    assert conditions["PredictorReady"]["status"] == "Unknown"  # Knative: a starting revision is Unknown
    assert knative.platform.health("iris", "2") == VersionHealth(ready=False)
    knative.reconcile(rounds=3)
    assert knative.platform.health("iris", "2") == VersionHealth(ready=True)


def test_a_primary_whose_logger_revision_fails_fails_the_shadow_with_the_cause(knative: Cluster) -> None:
    knative.tick(stable())
    # The logger's revision of the stable cannot start (say, the agent's image cannot be pulled):
    # the shadow is never fed, and the rollout is told why rather than waiting for its deadline.
    knative.kserve.fail_revision("iris-predictor-00002", "agent: ImagePullBackOff")
    knative.tick(shadow())
    health = knative.platform.health("iris", "2")
    assert health.ready is False and health.failure is not None
    assert health.failure.startswith("the primary with the shadow's logger: InferenceService iris predictor:")
    assert "agent: ImagePullBackOff" in health.failure


def test_a_second_apply_with_nothing_changed_writes_nothing(knative: Cluster) -> None:
    for routing in (stable(), shadow(), canary(10)):
        knative.tick(routing)
        before = (knative.version(), knative.get("iris-shadow"))
        knative.platform.apply("iris", routing, URIS)
        after = (knative.version(), knative.get("iris-shadow"))
        assert after == before, f"a second apply of {routing} wrote"


def test_a_conflicting_write_is_read_again_and_retried_once(
    knative: Cluster, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    knative.tick(stable())
    platform = knative.platform
    real_read = platform._read
    interfered = []

    def read_then_someone_writes(target: IsvcTarget, name: str) -> dict[str, Any] | None:
        obj = real_read(target, name)
        if name == "iris" and not interfered:
            interfered.append(name)  # another writer bumps resourceVersion after our read
            knative.custom.patch_namespaced_custom_object(
                *ISVC, knative.namespace, "inferenceservices", "iris", {"metadata": {"labels": {"team": "ml"}}}
            )
        return obj

    monkeypatch.setattr(platform, "_read", read_then_someone_writes)
    with caplog.at_level("INFO", logger="controller.kserve.platform"):
        platform.apply("iris", canary(10), URIS)
    assert "changed while applying; reading again" in caplog.text  # the 409 happened
    assert interfered and knative.predictor()["canaryTrafficPercent"] == 10
    assert knative.get()["metadata"]["labels"]["team"] == "ml"  # the other writer's change is kept


def test_standard_canary_is_a_second_inference_service_weighted_on_the_users_route(standard: Cluster) -> None:
    platform = standard.platform
    standard.tick(stable())
    assert "name" not in standard.predictor() and "canary" not in standard.get()["spec"]  # type: ignore[index]
    assert platform.health("iris", "1") == VersionHealth(ready=True)  # its Deployment rolled out
    assert platform.analysis_variables("iris", "1") == {"inference_service": "iris", "workload": "iris-predictor"}
    assert platform.endpoint("iris") == "http://iris.example.com"  # the route's: what clients use
    assert standard.split() == [("iris-predictor", 100)]

    # The canary starts: it gets no request until it is ready.
    standard.tick(canary(25), ready=False)
    assert standard.predictor("iris-canary")["model"]["storageUri"] == URIS["2"]
    assert standard.predictor()["model"]["storageUri"] == URIS["1"]  # the primary is not touched
    assert standard.split() == [("iris-predictor", 100)]
    assert platform.health("iris", "2") == VersionHealth(ready=False)
    conditions = {c["type"]: c for c in standard.get("iris-canary")["status"]["conditions"]}  # type: ignore[index]
    assert conditions["PredictorReady"]["status"] == "False"  # KServe: a starting Deployment is False…
    assert platform.health("iris", "2").failure is None  # …which is not a failure
    standard.settle(canary(25))
    assert standard.split() == [("iris-predictor", 75), ("iris-canary-predictor", 25)]
    assert platform.health("iris", "2") == VersionHealth(ready=True)
    assert platform.analysis_variables("iris", "2") == {"inference_service": "iris-canary", "workload": "iris-canary-predictor"}

    # Promotion: everything to the canary while the primary rolls to the candidate's storageUri
    # (its new pod takes three reconciles to start).
    standard.kserve.slow_start(URIS["2"], rounds=3)
    standard.settle(canary(100), rounds=1)
    assert standard.predictor()["model"]["storageUri"] == URIS["2"]
    assert standard.split() == [("iris-predictor", 0), ("iris-canary-predictor", 100)]
    conditions = {c["type"]: c for c in standard.get()["status"]["conditions"]}  # type: ignore[index]
    assert conditions["PredictorReady"]["status"] == "True"  # the old pod still serves: stale, not promoted
    assert platform.health("iris", "2") == VersionHealth(ready=True)  # served by the canary meanwhile
    standard.tick(Routing(model="iris", stable_version="2"), rounds=0)  # the engine moved on: hand-over
    assert standard.get("iris-canary") is not None and standard.split() == [("iris-predictor", 0), ("iris-canary-predictor", 100)]
    assert platform.analysis_variables("iris", "2")["inference_service"] == "iris-canary"
    standard.reconcile(rounds=2)  # the primary's new pod is available: the rolling update is done
    standard.settle(Routing(model="iris", stable_version="2"))
    assert standard.split() == [("iris-predictor", 100)]
    assert standard.get("iris-canary") is None
    assert platform.health("iris", "2") == VersionHealth(ready=True)
    assert platform.analysis_variables("iris", "2") == {"inference_service": "iris", "workload": "iris-predictor"}


def test_standard_rollback_takes_the_weight_back_and_never_restarts_the_primary(standard: Cluster) -> None:
    standard.tick(stable())
    before = standard.version()
    standard.settle(canary(25))
    assert standard.split() == [("iris-predictor", 75), ("iris-canary-predictor", 25)]
    standard.tick(stable())
    assert standard.split() == [("iris-predictor", 100)] and standard.get("iris-canary") is None
    assert standard.get()["metadata"]["resourceVersion"] == before or standard.predictor()["model"]["storageUri"] == URIS["1"]  # type: ignore[index]
    deployment = standard.kserve.standard.deployment(standard.namespace, "iris-predictor")
    assert deployment is not None and deployment.generation == 1  # one template all along: no rolling update


def test_standard_shadow_feeds_the_comparator_from_a_baseline_not_the_primary(standard: Cluster) -> None:
    platform = standard.platform
    standard.tick(stable())
    standard.tick(shadow(), ready=False)
    assert standard.predictor("iris-shadow")["model"]["storageUri"] == URIS["2"]
    baseline = standard.predictor("iris-baseline")
    assert baseline["model"]["storageUri"] == URIS["1"] and baseline["logger"] == shadow_logger(COMPARATOR)
    assert "logger" not in standard.predictor()  # the serving primary never gets the logger
    assert standard.split() == [("iris-predictor", 100)]  # the baseline is still starting
    assert platform.logged_service("iris", shadow()) == ("iris-baseline", 100)
    standard.settle(shadow())
    assert standard.split() == [("iris-predictor", 50), ("iris-baseline-predictor", 50)]
    assert platform.health("iris", "2") == VersionHealth(ready=True)
    assert platform.analysis_variables("iris", "1") == {"inference_service": "iris-baseline", "workload": "iris-baseline-predictor"}
    assert platform.analysis_variables("iris", "2") == {"inference_service": "iris-shadow", "workload": "iris-shadow-predictor"}
    standard.tick(canary(10))
    assert standard.get("iris-baseline") is None and standard.get("iris-shadow") is None


def test_standard_a_failed_model_load_is_kserves_reason_and_a_slow_start_is_not(standard: Cluster) -> None:
    standard.tick(stable())
    standard.kserve.fail_load(URIS["2"], "could not find MLmodel")
    standard.tick(canary(10))
    failure = standard.platform.health("iris", "2").failure
    assert failure == "InferenceService iris-canary predictor: ModelLoadFailed: could not find MLmodel (exit code 1)"
    assert standard.split() == [("iris-predictor", 100)]  # never routed to
    standard.tick(stable())
    assert standard.get("iris-canary") is None

    standard.kserve.slow_start(URIS["3"], rounds=5)
    uris = {**URIS, "3": URIS["3"]}
    routing = Routing(model="iris", stable_version="1", candidate_version="3", candidate_role="canary", candidate_weight=10)
    standard.platform.apply("iris", routing, uris)
    standard.reconcile(rounds=4)
    health = standard.platform.health("iris", "3")
    assert health == VersionHealth(ready=False)
    conditions = {c["type"]: c for c in standard.get("iris-canary")["status"]["conditions"]}  # type: ignore[index]
    assert (conditions["PredictorReady"]["status"], conditions["PredictorReady"]["reason"]) == ("False", "MinimumReplicasUnavailable")
    standard.reconcile(rounds=2)
    standard.platform.apply("iris", routing, uris)
    assert standard.platform.health("iris", "3") == VersionHealth(ready=True)


def test_standard_adopts_a_named_predictor_without_renaming_it(standard: Cluster) -> None:
    # A user's InferenceService whose predictor is named: KServe's webhook refuses a rename without a
    # model change (validatePredictorNameChange), and its Service is iris-main-predictor.
    user = {
        "apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService",
        "metadata": {"name": "iris", "annotations": {"serving.kserve.io/deploymentMode": "Standard"}},
        "spec": {"predictor": {"name": "main", "model": {"modelFormat": {"name": "mlflow"}, "storageUri": URIS["1"]}}},
    }  # fmt: skip
    standard.custom.create_namespaced_custom_object(*ISVC, standard.namespace, "inferenceservices", user)
    standard.custom.patch_namespaced_custom_object(
        *ROUTE[:2], standard.namespace, ROUTE[2], "iris-route",
        {"spec": {"rules": [{"backendRefs": [{"name": "iris-main-predictor", "port": 80}]},
                            {"backendRefs": [{"name": "docs", "port": 8080}]}]}},
    )  # fmt: skip
    standard.tick(stable())
    standard.settle(canary(20))
    assert standard.predictor()["name"] == "main"
    assert standard.split() == [("iris-main-predictor", 80), ("iris-canary-predictor", 20)]
    assert standard.platform.analysis_variables("iris", "1")["workload"] == "iris-main-predictor"


def test_standard_without_its_route_names_what_to_create(standard: Cluster) -> None:
    standard.custom.delete_namespaced_custom_object(*ROUTE[:2], standard.namespace, ROUTE[2], "iris-route")
    with pytest.raises(KServeError, match=r"HTTPRoute .*/iris-route \(spec.target.httpRoute\) does not exist: create it"):
        standard.platform.apply("iris", stable(), URIS)
    create_route(standard.custom, standard.namespace, service="somewhere-else")
    with pytest.raises(KServeError, match="has no rule whose backendRefs reach only Service iris-predictor"):
        standard.platform.apply("iris", stable(), URIS)


def test_teardown_removes_the_shadow_and_the_logger_but_keeps_the_primary(knative: Cluster) -> None:
    knative.tick(stable())
    knative.tick(shadow())
    knative.platform.teardown("iris")
    assert knative.get("iris-shadow") is None
    predictor = knative.predictor()
    assert "logger" not in predictor and predictor["model"]["storageUri"] == URIS["1"]
    knative.platform.teardown("iris")  # safe to repeat
    assert knative.get() is not None
    assert knative.platform.health("iris", "1") == VersionHealth(ready=False)  # forgotten


def test_teardown_after_a_restart_pins_a_canary_to_the_stable_revision(knative: Cluster, kube_api: Any) -> None:
    knative.tick(stable())
    knative.tick(canary(30))
    with kube_api.api_client() as api_client:
        restarted = KServePlatform(api_client, lambda rollout: knative.target, COMPARATOR)
        restarted.teardown("iris")
    assert knative.predictor()["canaryTrafficPercent"] == 0


def test_bad_input_and_foreign_objects_fail_with_a_clear_error(knative: Cluster) -> None:
    with pytest.raises(KServeError, match="no InferenceService target is known for rollout 'wine'"):
        knative.platform.apply("wine", stable(), URIS)
    with pytest.raises(ValueError, match="storage_uris has no entry for the candidate version '2'"):
        knative.platform.apply("iris", canary(10), {"1": URIS["1"]})
    with pytest.raises(ValueError, match="KServe cannot fetch models: URIs"):
        knative.platform.apply("iris", stable(), {"1": "models:/iris@champion"})
    assert knative.get() is None  # nothing was written

    no_comparator = KServePlatform(knative.platform._api.api_client, {"iris": knative.target}, None)
    with pytest.raises(ValueError, match="the shadow role needs comparator_url"):
        no_comparator.apply("iris", shadow(), URIS)

    # A user's own InferenceService that happens to be named like our shadow is never touched.
    foreign = {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {"name": "iris-shadow"},
        "spec": {"predictor": {"model": {"modelFormat": {"name": "sklearn"}, "storageUri": "s3://other/model"}}},
    }
    knative.custom.create_namespaced_custom_object(*ISVC, knative.namespace, "inferenceservices", foreign)
    with pytest.raises(KServeError, match="iris-shadow exists but is not a shadow made by modelrollout"):
        knative.platform.apply("iris", shadow(), URIS)
    assert knative.predictor("iris-shadow")["model"]["storageUri"] == "s3://other/model"


def test_the_api_server_rejecting_a_document_is_a_one_line_error(knative: Cluster) -> None:
    # A namespace that does not exist: the API server answers 404 on create.
    missing = IsvcTarget(rollout="iris", name="iris", namespace="no-such-namespace", deployment_mode="Knative")
    platform = KServePlatform(knative.platform._api.api_client, {"iris": missing}, COMPARATOR)
    with pytest.raises(KServeError) as caught:
        platform.apply("iris", stable(), URIS)
    assert "\n" not in str(caught.value)
    assert str(caught.value).startswith("applying rollout 'iris' to InferenceService no-such-namespace/iris: 404")


def test_teardown_does_not_bring_back_a_primary_deleted_by_someone_else(knative: Cluster) -> None:
    knative.tick(stable())
    knative.tick(shadow())
    knative.custom.delete_namespaced_custom_object(*ISVC, knative.namespace, "inferenceservices", "iris")
    knative.platform.teardown("iris")
    assert knative.get() is None and knative.get("iris-shadow") is None


def test_an_unreachable_api_server_fails_fast_naming_the_cause(knative: Cluster) -> None:
    import socket

    from kubernetes.client import ApiClient, Configuration

    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = Configuration()
    config.host = f"http://127.0.0.1:{port}"
    config.retries = 0
    with ApiClient(config) as api_client:
        platform = KServePlatform(api_client, {"iris": knative.target}, COMPARATOR)
        with pytest.raises(KServeError, match=r"^reading InferenceService .*/iris: API server unreachable: ") as caught:
            platform.apply("iris", stable(), URIS)
        assert "\n" not in str(caught.value)
        with pytest.raises(KServeError, match="API server unreachable"):
            platform.endpoint("iris")
