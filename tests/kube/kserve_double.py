"""A test double for KServe's controller: writes InferenceService `status` as KServe would.

No pods run here; the double only plays the part of KServe that the operator reads. Called
explicitly after each apply (`reconcile(namespace)`), it looks at every InferenceService in the
namespace and writes through the `/status` subresource (validated by the emulator against
KServe's CRD):

- **Knative**: a new revision `<name>-predictor-0000N` whenever the revision template changes —
  the predictor without `canaryTrafficPercent` (KServe puts that in the route, not the
  template) plus the object's labels and annotations (KServe copies them into the pod
  template). `latestCreatedRevision` / `latestReadyRevision` / `latestRolledoutRevision` /
  `previousRolledoutRevision` and `traffic[]` follow `ksvc_reconciler.go`: with
  `canaryTrafficPercent` N the latest ready revision gets N% (tag `latest`) and the rolled-out
  one the rest (tag `prev`); without it the latest ready revision gets 100% and becomes the
  rolled-out one.
- **Standard**: `observedGeneration` = the object's generation, `canaryStatuses[]` per
  `spec.canary` entry and the `CanaryPredictorReady` condition.

A revision or predictor becomes ready on the first reconcile with `ready=True`; `ready=False`
leaves new ones in progress. `fail_load(storage_uri)` makes every model load of that URI fail
with `modelStatus.transitionStatus: BlockedByFailedLoad` and a `lastFailureInfo`. Every object
written is first checked against the CRD's schema closed to undeclared fields (the emulator
would prune those silently, as a cluster does).
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from typing import Any

from kubernetes.client import CustomObjectsApi

from tests.kube.kserve_crd import assert_valid

GROUP, VERSION, PLURAL = "serving.kserve.io", "v1beta1", "inferenceservices"
T0 = "2026-03-01T10:00:00Z"
LOAD_FAILED_REASON = "ModelLoadFailed"


@dataclass
class _Revision:
    name: str
    uri: str
    state: str = "pending"  # pending | ready | failed


@dataclass
class _Knative:
    template: str | None = None
    revisions: list[_Revision] = field(default_factory=list)
    rolled_out: str | None = None
    previous: str | None = None


class KServeDouble:
    def __init__(self, api_client: Any, domain: str = "example.com") -> None:
        self._api = CustomObjectsApi(api_client)
        self._domain = domain
        self._failing: dict[str, str] = {}
        self._knative: dict[str, _Knative] = {}  # by uid
        self._loaded: dict[tuple[str, str], str] = {}  # (uid, predictor name) -> state, Standard

    def fail_load(self, storage_uri: str, message: str = "could not find MLmodel in /mnt/models") -> None:
        self._failing[storage_uri] = message

    def revision_uri(self, revision: str) -> str | None:
        """The storageUri a Knative revision serves (what a test's traffic simulator needs)."""
        for state in list(self._knative.values()):
            for known in list(state.revisions):
                if known.name == revision:
                    return known.uri
        return None

    def reconcile(self, namespace: str, *, ready: bool = True) -> None:
        listing = self._api.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)
        for isvc in listing["items"]:
            mode = isvc["metadata"].get("annotations", {}).get("serving.kserve.io/deploymentMode", "Knative")
            status = self._knative_status(isvc, ready) if mode == "Knative" else self._standard_status(isvc, ready)
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

    def _knative_status(self, isvc: dict[str, Any], ready: bool) -> dict[str, Any]:
        meta, predictor_spec = isvc["metadata"], isvc["spec"]["predictor"]
        name, namespace = meta["name"], meta["namespace"]
        state = self._knative.setdefault(meta["uid"], _Knative())
        template = {k: v for k, v in predictor_spec.items() if k != "canaryTrafficPercent"}
        key = json.dumps([template, meta.get("labels"), meta.get("annotations")], sort_keys=True)
        if key != state.template:
            state.template = key
            number = len(state.revisions) + 1
            state.revisions.append(_Revision(f"{name}-predictor-{number:05d}", predictor_spec["model"]["storageUri"]))
        for revision in state.revisions:
            revision.state = self._settle(revision.uri, revision.state, ready)
        newest = state.revisions[-1]
        ready_revisions = [r for r in state.revisions if r.state == "ready"]
        latest_ready = ready_revisions[-1].name if ready_revisions else None
        percent = predictor_spec.get("canaryTrafficPercent")
        # Without a canary percentage the latest ready revision is rolled out; with one, the
        # rolled-out revision stays (the very first one excepted: it has nothing to keep).
        rolls_out = percent is None or state.rolled_out is None
        if latest_ready is not None and rolls_out and state.rolled_out != latest_ready:
            state.previous, state.rolled_out = state.rolled_out, latest_ready
        traffic: list[dict[str, Any]] = []
        if latest_ready is not None:
            if percent is None or state.rolled_out == latest_ready and percent in (0, 100):
                traffic = [{"revisionName": latest_ready, "percent": 100, "latestRevision": True}]
            else:
                traffic = [
                    {"revisionName": latest_ready, "percent": percent, "latestRevision": True, "tag": "latest"},
                    {"revisionName": state.rolled_out, "percent": 100 - percent, "latestRevision": False, "tag": "prev"},
                ]
        components: dict[str, Any] = {"latestCreatedRevision": newest.name, "traffic": traffic}
        if latest_ready:
            components["latestReadyRevision"] = latest_ready
        if state.rolled_out:
            components["latestRolledoutRevision"] = state.rolled_out
        if state.previous:
            components["previousRolledoutRevision"] = state.previous
        if newest.state == "ready":
            predictor_ready = _condition("PredictorReady", "True")
        elif newest.state == "failed":
            predictor_ready = _condition(
                "PredictorReady",
                "False",
                "RevisionFailed",
                f'Revision "{newest.name}" failed with message: Container failed.',
            )
        else:
            predictor_ready = _condition("PredictorReady", "Unknown", "RevisionMissing", f"Revision {newest.name} is not ready")
        ingress = "True" if latest_ready else "Unknown"
        overall = predictor_ready["status"] if ingress == "True" else "Unknown"
        status = {
            "observedGeneration": len(state.revisions),  # the Knative Service's, as KServe copies it
            "deploymentMode": "Knative",
            "conditions": [_condition("IngressReady", ingress), predictor_ready, _condition("Ready", overall)],
            "components": {"predictor": components},
            "modelStatus": self._model_status(isvc, newest.uri, newest.state, newest.name),
        }
        if latest_ready:
            status["url"] = f"http://{name}.{namespace}.{self._domain}"
            status["address"] = {"url": f"http://{name}-predictor.{namespace}.svc.cluster.local"}
        return status

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
