"""KServe v0.20.0 in Standard mode (formerly RawDeployment), with the Kubernetes controllers it leans on.

Every behaviour below names where it comes from (kserve/kserve at `v0.20.0`, abbreviated as in
tests/kube/kserve_knative.py; the Deployment controller's conditions are Kubernetes'
`pkg/controller/deployment/util/deployment_util.go`); `tests/integration/test_kserve_conformance.py`
checks each one.

- **Objects** (`components/predictor.go` L159, L498-519; `reconcilers/deployment/deployment_reconciler.go`
  L145-172, L341-359; `reconcilers/service/service_reconciler.go` L104-192; `raw_kube_reconciler.go`
  L242): a Deployment and a Service `<isvc>-predictor` (or `<isvc>-<predictor.name>-predictor`),
  selector `app=isvc.<that name>`, one replica, RollingUpdate 25%/25%, progressDeadlineSeconds 600.
  The pod template carries the InferenceService's labels and annotations, the storageUri in
  `internal.serving.kserve.io/storage-initializer-sourceuri` (predictor.go L294-300) and the logger
  as `internal.serving.kserve.io/logger*` annotations (components/component.go L60-75): any change
  to them rolls the Deployment (a new pod; the old one serves until the new one is available). The
  Service's port 80 targets 8080, or the agent's 9081 as soon as the predictor has a logger — the
  Service is reconciled before the Deployment, so pods made before the logger are unreachable
  through it until they are replaced (service_reconciler.go L161-172). `spec.canary[]` entries
  (predictor.go L913-1040) get a Deployment and Service `<isvc>-<canary name>-predictor` each and
  **no traffic**: nothing in v0.20.0 splits by `trafficPercent` (the route weights of kserve#5912 are
  on master only).
- **PredictorReady** (`inference_service_status.go` `PropagateRawStatus` L360-458) from the
  Deployment's conditions: False with no reason on the first write (a Deployment just created has
  no status), False `MinimumReplicasUnavailable` while its pods start, True once available — and
  still True during a rolling update, while an old pod is available. `IngressReady` False `Predictor
  ingress not created` until then (kube_ingress_reconciler.go L239-245); `Ready` their living set, its
  reason the last dependent marked False. `status.url` / `.address` once the ingress exists
  (L130-172); `components.predictor.url` once ready, never cleared (L449-451).
- **observedGeneration** is the Deployment's `status.observedGeneration` (L455-457): 0 on the first
  write, and not the InferenceService's generation.
- **modelStatus** (L721-819) from the newest pod: storage initializer running → `Loading`; the
  InferenceService Ready → `Loaded`; the model container crash-looping → `BlockedByFailedLoad` with
  `lastFailureInfo {reason: ModelLoadFailed, message, exitCode}` (never cleared); else `Pending`.
- **canaryStatuses** (predictor.go L959-997): `name`, `ready` (AvailableReplicas > 0),
  `trafficPercent` as configured, `modelStatus` never filled (`{"transitionStatus": ""}`);
  `CanaryPredictorReady` True `AllCanariesReady` / False `CanariesNotReady`, no message, Info.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from kubernetes.client import AppsV1Api, CoreV1Api
from kubernetes.client.exceptions import ApiException

from tests.kube.conditions import FALSE, TRUE, UNKNOWN, Cond, living, model_status, written
from tests.kube.kserve_knative import Settle

STORAGE_URI_ANNOTATION = "internal.serving.kserve.io/storage-initializer-sourceuri"
LOGGER_ANNOTATIONS = "internal.serving.kserve.io/logger"
AGENT_PORT, CONTAINER_PORT = 9081, 8080


@dataclass
class Pod:
    name: str
    uri: str
    agent: bool  # KServe's agent container was injected (the template had the logger)
    logger: Mapping[str, Any] | None
    state: str = "pending"  # pending | ready | failed
    waited: int = 0
    made: float = field(default_factory=time.monotonic)
    failure: str = ""


@dataclass
class Deployment:
    name: str
    isvc: str  # the InferenceService it serves
    template: str | None = None
    generation: int = 0
    pods: list[Pod] = field(default_factory=list)  # oldest first; the newest is the current template's
    target_port: int = CONTAINER_PORT

    def available(self) -> list[Pod]:
        return [p for p in self.pods if p.state == "ready"]


@dataclass
class RawInferenceService:
    namespace: str
    seen: bool = False
    deployments: dict[str, Deployment] = field(default_factory=dict)
    predictor_url: str | None = None
    addressed: bool = False
    failure_info: dict[str, Any] | None = None
    loaded_once: bool = False


def predictor_name(isvc_name: str, predictor: Mapping[str, Any]) -> str:
    named = predictor.get("name")
    return f"{isvc_name}-{named}-predictor" if named else f"{isvc_name}-predictor"


class StandardKServe:
    """Standard mode for one namespace's InferenceServices, writing Deployments and Services too."""

    def __init__(self, api_client: Any, settle: Callable[[str], Settle], domain: str) -> None:
        self._apps, self._core = AppsV1Api(api_client), CoreV1Api(api_client)
        self._settle, self._domain = settle, domain
        self._by_uid: dict[str, RawInferenceService] = {}
        self._services: dict[tuple[str, str], Deployment] = {}  # (namespace, Service name) -> Deployment

    def forget(self, namespace: str, alive: set[str]) -> None:
        """InferenceServices of `namespace` gone (their Deployments and Services go with them: owner
        references, which the emulator's garbage collection follows)."""
        for uid in [u for u, s in self._by_uid.items() if s.namespace == namespace and u not in alive]:
            for name in self._by_uid.pop(uid).deployments:
                self._services.pop((namespace, name), None)

    def deployment(self, namespace: str, service: str) -> Deployment | None:
        """The Deployment behind a predictor Service (what a Service's endpoints are)."""
        return self._services.get((namespace, service))

    def status(self, isvc: Mapping[str, Any], ready: bool) -> dict[str, Any]:
        meta, spec = isvc["metadata"], isvc["spec"]
        name, namespace = meta["name"], meta["namespace"]
        state = self._by_uid.setdefault(meta["uid"], RawInferenceService(namespace))
        previous = (isvc.get("status") or {}).get("conditions")
        stable_name = predictor_name(name, spec["predictor"])
        wanted = {stable_name: spec["predictor"]}
        for entry in spec.get("canary") or []:
            # The canary's spec is the stable's with the entry laid over it (predictor.go L897-911).
            wanted[predictor_name(name, entry["predictor"])] = {**spec["predictor"], **entry["predictor"]}
        first = not state.seen
        state.seen = True
        for deployment_name, predictor in wanted.items():
            deployment = state.deployments.setdefault(deployment_name, Deployment(deployment_name, name))
            self._roll(deployment, isvc, predictor, ready and not first)
            self._services[(namespace, deployment_name)] = deployment
        for gone in set(state.deployments) - set(wanted):
            self._delete(namespace, gone)
            self._services.pop((namespace, gone), None)
            del state.deployments[gone]
        stable = state.deployments[stable_name]
        written_status = {n: self._write(namespace, isvc, d, wanted[n], first) for n, d in state.deployments.items()}
        predictor_ready = _predictor_ready(written_status[stable_name]) if not first else Cond(FALSE)
        if predictor_ready.status == TRUE and state.predictor_url is None:
            state.predictor_url = f"http://{stable_name}-{namespace}.{self._domain}"
        ingress = Cond(TRUE) if predictor_ready.status == TRUE else Cond(FALSE, "Predictor ingress not created")
        if ingress.status == TRUE:
            state.addressed = True
        conditions = {"PredictorReady": predictor_ready, "IngressReady": ingress, "Stopped": Cond(FALSE)}
        conditions["Ready"] = living((ingress, predictor_ready))  # the ingress is marked last
        status: dict[str, Any] = {
            "observedGeneration": written_status[stable_name]["observedGeneration"] if not first else 0,
            "deploymentMode": "Standard",
        }
        canaries = [entry["predictor"]["name"] for entry in spec.get("canary") or []]
        if canaries:
            statuses = []
            for entry in spec["canary"]:
                deployment = state.deployments[predictor_name(name, entry["predictor"])]
                statuses.append({
                    "name": entry["predictor"]["name"],
                    "ready": bool(deployment.available()) and not first,
                    "trafficPercent": entry["trafficPercent"],
                    "modelStatus": {"transitionStatus": ""},
                })  # fmt: skip
            status["canaryStatuses"] = statuses
            all_ready = all(s["ready"] for s in statuses)
            conditions["CanaryPredictorReady"] = Cond(TRUE, "AllCanariesReady") if all_ready else Cond(FALSE, "CanariesNotReady")
        status["conditions"] = written(conditions, "Ready", ("PredictorReady", "IngressReady"), previous)
        if state.predictor_url:
            status["components"] = {"predictor": {"url": state.predictor_url}}
        if state.addressed:
            status["url"] = f"http://{name}-{namespace}.{self._domain}"
            status["address"] = {"url": f"http://{stable_name}.{namespace}.svc.cluster.local"}
        status["modelStatus"] = self._model_status(state, stable, conditions["Ready"].status == TRUE)
        return status

    # -- the Deployment controller's part ----------------------------------------------------------

    def _roll(self, deployment: Deployment, isvc: Mapping[str, Any], predictor: Mapping[str, Any], ready: bool) -> None:
        meta = isvc["metadata"]
        template = json.dumps([predictor, meta.get("labels"), meta.get("annotations")], sort_keys=True)
        logger = predictor.get("logger")
        deployment.target_port = AGENT_PORT if logger else CONTAINER_PORT  # the Service follows at once
        if template != deployment.template:
            deployment.template = template
            deployment.generation += 1
            digest = hashlib.sha1(template.encode()).hexdigest()
            deployment.pods.append(Pod(f"{deployment.name}-{digest[:10]}-{digest[10:15]}",
                                       predictor["model"]["storageUri"], bool(logger), logger))  # fmt: skip
        newest = deployment.pods[-1]
        if newest.state == "pending" and ready:
            newest.waited += 1
            how = self._settle(newest.uri)
            if newest.waited >= how.rounds and time.monotonic() - newest.made >= how.seconds:
                newest.state, newest.failure = ("failed", how.failure) if how.failure else ("ready", "")
        if newest.state == "ready":
            deployment.pods = [newest]  # the rolling update scales the old ReplicaSet down

    def _write(self, namespace: str, isvc: Mapping[str, Any], deployment: Deployment, predictor: Mapping[str, Any],
               first: bool) -> dict[str, Any]:  # fmt: skip
        """Write the Deployment and its Service as KServe and the Deployment controller would; the
        Deployment's status as written (empty on KServe's first reconcile, as the created object is)."""
        labels = {**(isvc["metadata"].get("labels") or {}), **(predictor.get("labels") or {}),
                  "serving.kserve.io/inferenceservice": isvc["metadata"]["name"], "component": "predictor",
                  "app": f"isvc.{deployment.name}"}  # fmt: skip
        annotations = {**(isvc["metadata"].get("annotations") or {}), STORAGE_URI_ANNOTATION: predictor["model"]["storageUri"]}
        logger = predictor.get("logger")
        if logger:
            annotations.update({LOGGER_ANNOTATIONS: "true", f"{LOGGER_ANNOTATIONS}-sink-url": logger.get("url", ""),
                                f"{LOGGER_ANNOTATIONS}-mode": logger.get("mode", ""),
                                f"{LOGGER_ANNOTATIONS}-metadata-headers": ",".join(logger.get("metadataHeaders") or [])})  # fmt: skip
        body = {
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": deployment.name, "namespace": namespace, "labels": labels,
                         "ownerReferences": [_owner(isvc)]},
            "spec": {
                "replicas": 1, "progressDeadlineSeconds": 600, "revisionHistoryLimit": 10,
                "selector": {"matchLabels": {"app": f"isvc.{deployment.name}"}},
                "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}},
                "template": {
                    "metadata": {"labels": labels, "annotations": annotations},
                    "spec": {"containers": [{"name": "kserve-container", "image": "kserve/mlserver",
                                             "ports": [{"containerPort": CONTAINER_PORT, "protocol": "TCP"}]}]},
                },
            },
        }  # fmt: skip
        current = self._read(namespace, deployment.name)
        if current is None:
            current = self._plain(self._apps.create_namespaced_deployment(namespace, body))
        elif current["spec"]["template"] != body["spec"]["template"]:
            body["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
            current = self._plain(self._apps.replace_namespaced_deployment(deployment.name, namespace, body))
        self._service(namespace, isvc, deployment)
        if first:
            return {"observedGeneration": 0}
        status = _deployment_status(deployment, current["metadata"]["generation"])
        self._apps.patch_namespaced_deployment_status(deployment.name, namespace, {"status": status})
        return status

    def _service(self, namespace: str, isvc: Mapping[str, Any], deployment: Deployment) -> None:
        body = {
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": deployment.name, "namespace": namespace, "ownerReferences": [_owner(isvc)]},
            "spec": {"selector": {"app": f"isvc.{deployment.name}"},
                     "ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": deployment.target_port}]},
        }  # fmt: skip
        try:
            current = self._core.read_namespaced_service(deployment.name, namespace)
        except ApiException as err:
            if err.status != 404:
                raise
            self._core.create_namespaced_service(namespace, body)
            return
        if current.spec.ports[0].target_port != deployment.target_port:
            self._core.patch_namespaced_service(deployment.name, namespace, {"spec": body["spec"]})

    def _plain(self, obj: Any) -> dict[str, Any]:
        return self._apps.api_client.sanitize_for_serialization(obj)

    def _read(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return self._plain(self._apps.read_namespaced_deployment(name, namespace))
        except ApiException as err:
            if err.status == 404:
                return None
            raise

    def _delete(self, namespace: str, name: str) -> None:
        for delete in (self._apps.delete_namespaced_deployment, self._core.delete_namespaced_service):
            try:
                delete(name, namespace)
            except ApiException as err:
                if err.status != 404:
                    raise

    def _model_status(self, state: RawInferenceService, stable: Deployment, isvc_ready: bool) -> dict[str, Any]:
        pods = stable.pods
        ready_pods = len(stable.available())
        if not pods:
            target = "Pending"
        else:
            newest = pods[-1]
            if newest.state == "pending" and newest.waited == 0:
                target = "Loading"
            elif isvc_ready:
                target = "Loaded"
            elif newest.state == "failed":
                target = "FailedToLoad"
                state.failure_info = {"reason": "ModelLoadFailed", "message": newest.failure, "exitCode": 1}
            else:
                target = "Pending"
        if target == "Loaded":
            state.loaded_once = True
        return model_status(target, loaded_once=state.loaded_once, ready_pods=ready_pods, failure_info=state.failure_info)


def _owner(isvc: Mapping[str, Any]) -> dict[str, Any]:
    meta = isvc["metadata"]
    return {"apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService", "name": meta["name"],
            "uid": meta["uid"], "controller": True, "blockOwnerDeletion": True}  # fmt: skip


def _deployment_status(deployment: Deployment, generation: int) -> dict[str, Any]:
    """The Deployment controller's status (kubernetes pkg/controller/deployment)."""
    pods = deployment.pods
    newest = pods[-1]
    available = len(deployment.available())
    replica_set = newest.name.rsplit("-", 1)[0]
    if available:
        available_condition = {"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable",
                               "message": "Deployment has minimum availability."}  # fmt: skip
    else:
        available_condition = {"type": "Available", "status": "False", "reason": "MinimumReplicasUnavailable",
                               "message": "Deployment does not have minimum availability."}  # fmt: skip
    if newest.state == "ready" and len(pods) == 1:
        progressing = {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable",
                       "message": f'ReplicaSet "{replica_set}" has successfully progressed.'}  # fmt: skip
    else:
        progressing = {"type": "Progressing", "status": "True", "reason": "ReplicaSetUpdated",
                       "message": f'ReplicaSet "{replica_set}" is progressing.'}  # fmt: skip
    status: dict[str, Any] = {
        "observedGeneration": generation,
        "replicas": len(pods),
        "updatedReplicas": 1,
        "readyReplicas": available,
        "availableReplicas": available,
        "conditions": [available_condition, progressing],
    }
    if not available:
        status["unavailableReplicas"] = 1
    return status


def _predictor_ready(deployment_status: Mapping[str, Any]) -> Cond:
    """`PropagateRawStatus` over the Deployment's conditions (inference_service_status.go L372-453)."""
    by_type = {c["type"]: c for c in deployment_status.get("conditions") or []}
    available, progressing = by_type.get("Available", {}), by_type.get("Progressing", {})
    result = Cond(FALSE)
    if available.get("status") == "True":
        result = Cond(TRUE, available.get("reason", ""), available.get("message", ""))
    if progressing.get("status") == "False" and progressing.get("message"):
        result = Cond(FALSE, progressing.get("reason", ""), progressing.get("message", ""))
    elif progressing.get("status") == "True":
        if progressing.get("reason") == "NewReplicaSetAvailable":
            result = Cond(TRUE, progressing.get("reason", ""), progressing.get("message", ""))
        elif available.get("status") != "True":
            result = Cond(UNKNOWN, progressing.get("reason", ""), progressing.get("message", ""))
    if available.get("status") == "False":
        result = Cond(FALSE, available.get("reason", ""), available.get("message", ""))
    return result
