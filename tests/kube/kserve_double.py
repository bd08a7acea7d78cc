"""A test double for KServe's controller: writes InferenceService `status` as KServe v0.20.0 does.

No pods run here; the double plays the part of KServe (and Knative) that the operator reads. Called
after each apply (`reconcile(namespace)`, or a `KServeLoop` a few times a second), it looks at every
InferenceService in the namespace and writes through the `/status` subresource (validated by the
emulator against KServe's CRD, and first here against it closed to undeclared fields: the emulator
would prune those silently, as a cluster does).

- **Knative mode**: tests/kube/kserve_knative.py, every behaviour with its source in KServe v0.20.0
  and Knative Serving 1.21.
- **Standard mode**: tests/kube/kserve_standard.py, KServe v0.20.0 and the Deployment controller:
  it writes the Deployments and Services KServe makes, and their status.

A revision or predictor settles on a reconcile with `ready=True`: ready, or failed for a storageUri
given to `fail_load`, after as many reconciles as `slow_start` says (default one); `ready=False`
leaves new ones starting.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from kubernetes.client import CustomObjectsApi
from kubernetes.client.exceptions import ApiException

from tests.kube.kserve_crd import assert_valid
from tests.kube.kserve_knative import KnativeService, Revision, Settle, knative_status
from tests.kube.kserve_standard import AGENT_PORT, StandardKServe, predictor_name

GROUP, VERSION, PLURAL = "serving.kserve.io", "v1beta1", "inferenceservices"
T0 = "2026-03-01T10:00:00Z"
LOAD_FAILED_REASON = "ModelLoadFailed"


@dataclass(frozen=True)
class Backend:
    """Where one client request lands: a Knative revision's pods, or a Standard Deployment's newest
    available pod behind its Service. `failure` says why the request fails there (None: served)."""

    inference_service: str
    workload: str  # the Deployment (Knative: `<revision>-deployment`), as Istio names the destination
    uri: str
    logger: Mapping[str, Any] | None
    revision: str | None = None
    failure: str | None = None
    starting: bool = False  # routed to a revision or pod that is not ready


ROUTES = ("gateway.networking.k8s.io", "v1", "httproutes")


class KServeDouble:
    def __init__(self, api_client: Any, domain: str = "example.com") -> None:
        self._api = CustomObjectsApi(api_client)
        self._domain = domain
        self._failing: dict[str, str] = {}
        self._failing_revisions: dict[str, str] = {}
        self._rounds: dict[str, tuple[int, float]] = {}
        self._addresses: dict[str, str] = {}
        self._knative: dict[str, KnativeService] = {}  # by uid
        self.standard = StandardKServe(api_client, self._settle_uri, domain)

    def fail_load(self, storage_uri: str, message: str = "could not find MLmodel in /mnt/models") -> None:
        """Every model server of `storage_uri` exits while loading (a crash loop)."""
        self._failing[storage_uri] = message

    def slow_start(self, storage_uri: str, rounds: int = 1, seconds: float = 0.0) -> None:
        """Revisions and pods of `storage_uri` take `rounds` reconciles and `seconds` to become ready."""
        self._rounds[storage_uri] = (rounds, seconds)

    def serve_at(self, inference_service: str, url: str) -> None:
        """Report `url` (a real model server of the test's) as the InferenceService's `status.address.url`.

        The one thing the double makes up on purpose: a cluster's address would be
        `http://<name>.<namespace>.svc.cluster.local`, which nothing here resolves."""
        self._addresses[inference_service] = url

    def fail_revision(self, name: str, message: str) -> None:
        """The Knative revision `name` (whatever it serves) never starts: its container exits."""
        self._failing_revisions[name] = message

    def _settle_uri(self, uri: str) -> Settle:
        rounds, seconds = self._rounds.get(uri, (1, 0.0))
        return Settle(rounds, self._failing.get(uri), seconds)

    def settle(self, revision: Revision) -> Settle:
        failure = self._failing_revisions.get(revision.name) or self._failing.get(revision.uri)
        rounds, seconds = self._rounds.get(revision.uri, (1, 0.0))
        return Settle(rounds, failure, seconds)

    def revision(self, name: str) -> Revision | None:
        """A Knative revision by name (what a test's traffic simulator routes to)."""
        for state in list(self._knative.values()):
            for known in list(state.revisions):
                if known.name == name:
                    return known
        return None

    def backends(self, namespace: str, isvc: Mapping[str, Any]) -> list[tuple[Backend, int]]:
        """Where clients of the primary `isvc` land, with the percent each gets.

        Knative: the revisions of `status.components.predictor.traffic[]` (Knative's route). Standard:
        the Services of the first HTTPRoute rule that reaches the predictor's Service (KServe's own
        Ingress, without one), each to its Deployment's newest available pod; a Service that targets
        the agent's port on a pod without the agent, or has no available pod, fails the request.
        """
        name = isvc["metadata"]["name"]
        if (isvc["metadata"].get("annotations") or {}).get("serving.kserve.io/deploymentMode") != "Standard":
            traffic = (isvc.get("status") or {}).get("components", {}).get("predictor", {}).get("traffic") or []
            rows = []
            for target in traffic:
                revision = self.revision(target["revisionName"]) if target.get("percent") else None
                if revision is not None:
                    backend = Backend(name, f"{revision.name}-deployment", revision.uri, revision.logger, revision.name,
                                      starting=revision.state != "ready")  # fmt: skip
                    rows.append((backend, int(target["percent"])))
            return rows
        service = predictor_name(name, isvc["spec"]["predictor"])
        return [(self._service_backend(namespace, svc), weight) for svc, weight in self._route(namespace, service) if weight]

    def shadow_backend(self, namespace: str, primary: str, mode: str) -> Backend | None:
        """The shadow InferenceService's serving backend (what the comparator's replays reach)."""
        if mode == "Standard":
            backend = self._service_backend(namespace, f"{primary}-shadow-predictor")
            return None if backend.failure else backend
        for state in list(self._knative.values()):
            ready = [r for r in state.revisions if r.state == "ready" and r.name.startswith(f"{primary}-shadow-predictor-")]
            if ready:
                return Backend(f"{primary}-shadow", f"{ready[-1].name}-deployment", ready[-1].uri, None, ready[-1].name)
        return None

    def _route(self, namespace: str, service: str) -> list[tuple[str, int]]:
        try:
            routes = self._api.list_namespaced_custom_object(*ROUTES[:2], namespace, ROUTES[2])["items"]
        except ApiException as err:
            if err.status != 404:
                raise
            routes = []
        for route in routes:
            for rule in route.get("spec", {}).get("rules") or []:
                refs = rule.get("backendRefs") or []
                if any(ref.get("name") == service for ref in refs):
                    return [(ref["name"], int(ref.get("weight", 1))) for ref in refs]
        return [(service, 100)]  # KServe's own Ingress: the predictor's Service

    def _service_backend(self, namespace: str, service: str) -> Backend:
        deployment = self.standard.deployment(namespace, service)
        if deployment is None:
            return Backend(service, service, "", None, failure=f"Service {service} does not exist")
        available = deployment.available()
        if not available:
            newest = deployment.pods[-1] if deployment.pods else None
            uri = newest.uri if newest else ""
            return Backend(deployment.isvc, service, uri, None, failure=f"no available endpoint behind {service}", starting=True)
        pod = available[-1]
        failure = None
        if deployment.target_port == AGENT_PORT and not pod.agent:
            failure = f"connection refused: {service} targets port {AGENT_PORT} and pod {pod.name} has no agent"
        return Backend(deployment.isvc, service, pod.uri, pod.logger, failure=failure)

    def revision_uri(self, name: str) -> str | None:
        """The storageUri a Knative revision serves."""
        revision = self.revision(name)
        return revision.uri if revision is not None else None

    def reconcile(self, namespace: str, *, ready: bool = True) -> None:
        listing = self._api.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)
        self.standard.forget(namespace, {i["metadata"]["uid"] for i in listing["items"]})
        for isvc in listing["items"]:
            mode = isvc["metadata"].get("annotations", {}).get("serving.kserve.io/deploymentMode", "Knative")
            if mode == "Knative":
                ksvc = self._knative.setdefault(isvc["metadata"]["uid"], KnativeService())
                status = knative_status(isvc, ksvc, self.settle, ready, self._domain)
            else:
                status = self.standard.status(isvc, ready)
            override = self._addresses.get(isvc["metadata"]["name"])
            if override and "address" in status:
                status["address"] = {"url": override}
            body = copy.deepcopy(isvc)
            body["status"] = status
            assert_valid(body)  # strict: a status field KServe's CRD does not define fails here, not silently
            self._api.replace_namespaced_custom_object_status(
                GROUP, VERSION, namespace, PLURAL, isvc["metadata"]["name"], body
            )

