"""A test double for KServe's controller: writes InferenceService `status` as KServe v0.20.0 does.

No pods run here; the double plays the part of KServe (and Knative) that the operator reads. Called
after each apply (`reconcile(namespace)`, or a `KServeLoop` a few times a second), it looks at every
InferenceService in the namespace and writes through the `/status` subresource (validated by the
emulator against KServe's CRD, and first here against it closed to undeclared fields: the emulator
would prune those silently, as a cluster does).

- **Knative mode**: tests/kube/kserve_knative.py, every behaviour with its source in KServe v0.20.0
  and Knative Serving 1.21.
- **Standard mode**: `observedGeneration` = the object's generation, `canaryStatuses[]` per
  `spec.canary` entry and the `CanaryPredictorReady` condition (being replaced: issue 10).

A revision or predictor settles on a reconcile with `ready=True`: ready, or failed for a storageUri
given to `fail_load`, after as many reconciles as `slow_start` says (default one); `ready=False`
leaves new ones starting.
"""

from __future__ import annotations

import copy
from typing import Any

from kubernetes.client import CustomObjectsApi

from tests.kube.kserve_crd import assert_valid
from tests.kube.kserve_knative import KnativeService, Revision, Settle, knative_status

GROUP, VERSION, PLURAL = "serving.kserve.io", "v1beta1", "inferenceservices"
T0 = "2026-03-01T10:00:00Z"
LOAD_FAILED_REASON = "ModelLoadFailed"


class KServeDouble:
    def __init__(self, api_client: Any, domain: str = "example.com") -> None:
        self._api = CustomObjectsApi(api_client)
        self._domain = domain
        self._failing: dict[str, str] = {}
        self._failing_revisions: dict[str, str] = {}
        self._rounds: dict[str, int] = {}
        self._addresses: dict[str, str] = {}
        self._knative: dict[str, KnativeService] = {}  # by uid
        self._loaded: dict[tuple[str, str], str] = {}  # (uid, predictor name) -> state, Standard

    def fail_load(self, storage_uri: str, message: str = "could not find MLmodel in /mnt/models") -> None:
        """Every model server of `storage_uri` exits while loading (a crash loop)."""
        self._failing[storage_uri] = message

    def slow_start(self, storage_uri: str, rounds: int) -> None:
        """Revisions and Deployments of `storage_uri` take `rounds` reconciles to become ready."""
        self._rounds[storage_uri] = rounds

    def serve_at(self, inference_service: str, url: str) -> None:
        """Report `url` (a real model server of the test's) as the InferenceService's `status.address.url`.

        The one thing the double makes up on purpose: a cluster's address would be
        `http://<name>.<namespace>.svc.cluster.local`, which nothing here resolves."""
        self._addresses[inference_service] = url

    def fail_revision(self, name: str, message: str) -> None:
        """The Knative revision `name` (whatever it serves) never starts: its container exits."""
        self._failing_revisions[name] = message

    def settle(self, revision: Revision) -> Settle:
        failure = self._failing_revisions.get(revision.name) or self._failing.get(revision.uri)
        return Settle(self._rounds.get(revision.uri, 1), failure)

    def revision(self, name: str) -> Revision | None:
        """A Knative revision by name (what a test's traffic simulator routes to)."""
        for state in list(self._knative.values()):
            for known in list(state.revisions):
                if known.name == name:
                    return known
        return None

    def revision_uri(self, name: str) -> str | None:
        """The storageUri a Knative revision serves."""
        revision = self.revision(name)
        return revision.uri if revision is not None else None

    def reconcile(self, namespace: str, *, ready: bool = True) -> None:
        listing = self._api.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)
        for isvc in listing["items"]:
            mode = isvc["metadata"].get("annotations", {}).get("serving.kserve.io/deploymentMode", "Knative")
            if mode == "Knative":
                ksvc = self._knative.setdefault(isvc["metadata"]["uid"], KnativeService())
                status = knative_status(isvc, ksvc, self.settle, ready, self._domain)
            else:
                status = self._standard_status(isvc, ready)
            override = self._addresses.get(isvc["metadata"]["name"])
            if override and "address" in status:
                status["address"] = {"url": override}
            body = copy.deepcopy(isvc)
            body["status"] = status
            assert_valid(body)  # strict: a status field KServe's CRD does not define fails here, not silently
            self._api.replace_namespaced_custom_object_status(
                GROUP, VERSION, namespace, PLURAL, isvc["metadata"]["name"], body
            )

    # -----------------------------------------------------------------------------------------

    def _settle(self, uri: str, state: str, ready: bool) -> str:
        if state != "pending" or not ready:
            return state
        return "failed" if uri in self._failing else "ready"

    def _standard_status(self, isvc: dict[str, Any], ready: bool) -> dict[str, Any]:
        meta, spec = isvc["metadata"], isvc["spec"]
        name, namespace = meta["name"], meta["namespace"]

        def settle(predictor: dict[str, Any]) -> tuple[str, str]:
            key = (meta["uid"], f"{predictor.get('name', 'predictor')}:{predictor['model']['storageUri']}")
            state = self._settle(predictor["model"]["storageUri"], self._loaded.get(key, "pending"), ready)
            self._loaded[key] = state
            return state, predictor["model"]["storageUri"]

        stable_state, stable_uri = settle(spec["predictor"])
        conditions = [
            _condition("IngressReady", "True" if stable_state == "ready" else "Unknown"),
            _predictor_condition("PredictorReady", stable_state, spec["predictor"].get("name", "predictor")),
        ]
        conditions.append(_condition("Ready", conditions[1]["status"]))
        status: dict[str, Any] = {
            "observedGeneration": meta["generation"],
            "deploymentMode": "Standard",
            "conditions": conditions,
            "components": {"predictor": {"url": f"http://{name}-predictor-{namespace}.{self._domain}"}},
            "modelStatus": self._model_status(isvc, stable_uri, stable_state, None),
        }
        canaries = []
        for entry in spec.get("canary") or []:
            state, uri = settle(entry["predictor"])
            canaries.append({
                "name": entry["predictor"]["name"],
                "ready": state == "ready",
                "trafficPercent": entry["trafficPercent"],
                "modelStatus": self._model_status(isvc, uri, state, None),
            })  # fmt: skip
        if canaries:
            status["canaryStatuses"] = canaries
            states = {c["ready"] for c in canaries}
            failed = any(c["modelStatus"]["transitionStatus"] == "BlockedByFailedLoad" for c in canaries)
            if states == {True}:
                conditions.append(_condition("CanaryPredictorReady", "True", "AllCanariesReady", severity=True))
            elif failed:
                conditions.append(
                    _condition("CanaryPredictorReady", "False", "CanariesNotReady", "a canary failed", severity=True)
                )
            else:
                conditions.append(_condition("CanaryPredictorReady", "Unknown", "CanariesNotReady", severity=True))
        if stable_state == "ready":
            status["url"] = f"http://{name}-{namespace}.{self._domain}"
        return status

    def _model_status(self, isvc: dict[str, Any], uri: str, state: str, revision: str | None) -> dict[str, Any]:
        if state == "ready":
            return {
                "transitionStatus": "UpToDate",
                "states": {"activeModelState": "Loaded", "targetModelState": "Loaded"},
                "copies": {"failedCopies": 0, "totalCopies": 1},
            }
        if state == "pending":
            return {
                "transitionStatus": "InProgress",
                "states": {"activeModelState": "Pending", "targetModelState": "Loading"},
                "copies": {"failedCopies": 0, "totalCopies": 1},
            }
        info: dict[str, Any] = {
            "reason": LOAD_FAILED_REASON,
            "message": f"Model {isvc['metadata']['name']} failed to load: {self._failing[uri]}",
            "exitCode": 1,
            "time": T0,
        }
        if revision:
            info["modelRevisionName"] = revision
            info["location"] = f"{revision}-deployment-7c9f8d-x2x4q"
        return {
            "transitionStatus": "BlockedByFailedLoad",
            "states": {"activeModelState": "Pending", "targetModelState": "FailedToLoad"},
            "copies": {"failedCopies": 1, "totalCopies": 1},
            "lastFailureInfo": info,
        }


def _predictor_condition(type_: str, state: str, name: str) -> dict[str, Any]:
    if state == "ready":
        return _condition(type_, "True")
    if state == "failed":
        return _condition(type_, "False", "ProgressDeadlineExceeded", f"predictor {name} failed")
    return _condition(type_, "Unknown", "PredictorNotReady", f"predictor {name} is not ready")


def _condition(
    type_: str, status: str, reason: str | None = None, message: str | None = None, *, severity: bool = False
) -> dict[str, Any]:
    entry: dict[str, Any] = {"type": type_, "status": status, "lastTransitionTime": T0}
    if reason:
        entry["reason"] = reason
    if message:
        entry["message"] = message
    if severity:
        entry["severity"] = "Info"
    return entry
