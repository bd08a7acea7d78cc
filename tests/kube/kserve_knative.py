"""KServe v0.20.0 in Knative mode, as its controller and Knative Serving 1.21 write an InferenceService's status.

Every behaviour below names where it comes from (kserve/kserve at `v0.20.0`, knative/serving at
`knative-v1.21.0`); `tests/integration/test_kserve_conformance.py` checks each one.

- **Revisions** (knative/serving `pkg/reconciler/configuration`, KServe
  `reconcilers/knative/ksvc_reconciler.go` L102-121, L192-205): KServe builds the Knative Service's
  revision template from the predictor (without `canaryTrafficPercent`, which goes to the route),
  the InferenceService's labels and annotations and the logger, which `components/component.go`
  L60-75 turns into `internal.serving.kserve.io/logger*` annotations. Any change to that template
  makes a new revision `<isvc>-predictor-0000N`; the Knative Service's generation grows with each
  spec change, template or traffic.
- **Traffic** (`ksvc_reconciler.go` L132-164): with `canaryTrafficPercent` N set and a
  `latestRolledoutRevision` known, the route is `{latestRevision: true, percent: N}` plus, if N <
  100, `{revisionName: <latestRolledoutRevision>, percent: 100 - N, tag: prev}`; otherwise one
  `{latestRevision: true, percent: 100}`. Knative resolves `latestRevision` to the latest *ready*
  revision, so a revision still starting (or failed) gets no request.
- **Rolled-out revisions** (`pkg/apis/serving/v1beta1/inference_service_status.go` L567-636,
  `PropagateStatus`): `latestRolledoutRevision` moves to the latest ready revision when its
  `latestRevision` target carries 100%; `previousRolledoutRevision` keeps the one before; a latest
  target below 100% over a revision that has 100% in all goes back to the previous one.
- **Conditions**: `PredictorReady` is the Knative Service's `Ready` copied verbatim (L612, L621-622),
  `PredictorConfigurationReady` / `PredictorRouteReady` its `ConfigurationsReady` / `RoutesReady`
  (L624-632); `LatestDeploymentReady` / `RoutesReady` aggregate them (L546-565, controller.go
  L340-353); `IngressReady` (reconcilers/ingress/ingress_reconciler.go L103-123, L484-498, Istio's
  VirtualService present): Unknown while PredictorReady is Unknown, False `Predictor ingress not
  created` while it is False, True once the predictor has a URL (never cleared); `Ready` the
  living set of PredictorReady and IngressReady; `Stopped` False (controller.go L309-317). Before
  KServe has read the Knative Service, Ready, PredictorReady and IngressReady are Unknown with no
  reason (`InitializeConditions`, controller.go L226-228): a starting predictor is **Unknown**.
  Knative's side (pkg/apis/serving/v1 at `knative-v1.21.0`): a configuration whose latest revision
  is not ready yet is Unknown with no reason (`configuration_lifecycle.go` L74-81); a failed one
  False `RevisionFailed` `Revision "<name>" failed with message: <message>.` (L94-101), the message
  from the container's exit (`pkg/reconciler/revision/reconcile_resources.go` L113-125,
  `Container failed with: …`); a route without a ready revision Unknown `RevisionMissing`
  (`route_lifecycle.go` L128-131). The Knative Service's Ready is the living set of both
  (`service_lifecycle.go` L33-36).
- **observedGeneration** is the Knative Service's (`inference_service_status.go` L635), not the
  InferenceService's: 0 on the first write, then the Knative Service's own counter.
- **URLs**: `components.predictor.url` / `.address` only while the Knative Service is Ready and
  never cleared (L613-620); `status.url` = `http://<isvc>.<ns>.<domain>` and `status.address.url` =
  `http://<isvc>.<ns>.svc.cluster.local` once the predictor has a URL (ingress_reconciler.go
  L112-118, L191-235, L751-759).
- **modelStatus** (`PropagateModelStatus`, L721-819) about the pods of `latestCreatedRevision`:
  storage initializer running → `Loading`/`InProgress`; the InferenceService Ready and latest
  created = latest ready → `Loaded`/`UpToDate`; the model container crash-looping →
  `FailedToLoad`/`BlockedByFailedLoad` with `lastFailureInfo {reason: ModelLoadFailed, message,
  exitCode}` (never `modelRevisionName`, never cleared); otherwise `Pending`/`InProgress`.
  `copies.totalCopies` counts ready pods, `failedCopies` is always 0; `states.activeModelState`
  stays "" until the first load.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from tests.kube.conditions import FALSE, TRUE, UNKNOWN, Cond, living, model_status, written

@dataclass
class Revision:
    name: str
    uri: str
    logger: Mapping[str, Any] | None  # the predictor's logger spec this revision was made with
    state: str = "pending"  # pending | ready | failed
    waited: int = 0
    made: float = field(default_factory=time.monotonic)  # reconciles seen while pending
    failure: str = ""


@dataclass
class KnativeService:
    """What KServe's Knative Service and its revisions are for one InferenceService."""

    generation: int = 0
    template: str | None = None
    traffic_spec: str | None = None
    revisions: list[Revision] = field(default_factory=list)
    latest_ready: str | None = None
    rolled_out: str | None = None
    previous: str | None = None
    predictor_url: str | None = None  # set once the Knative Service was Ready, never cleared
    failure_info: dict[str, Any] | None = None  # lastFailureInfo, never cleared
    loaded_once: bool = False
    seen: bool = False


@dataclass(frozen=True)
class Settle:
    """How a revision of a storageUri starts: after `rounds` reconciles, ready or failed with `failure`."""

    rounds: int = 1
    failure: str | None = None
    seconds: float = 0.0  # and at least this long since it was made


def knative_status(
    isvc: Mapping[str, Any], ksvc: KnativeService, settle: Callable[[Revision], Settle], ready: bool, domain: str
) -> dict[str, Any]:
    """One KServe reconcile of `isvc` in Knative mode; `ksvc` is updated in place."""
    meta, predictor = isvc["metadata"], isvc["spec"]["predictor"]
    name, namespace = meta["name"], meta["namespace"]
    previous_conditions = (isvc.get("status") or {}).get("conditions")
    if not ksvc.seen:
        # The first reconcile creates the Knative Service and propagates its still-empty status.
        ksvc.seen = True
        _template_changed(isvc, ksvc)
        return {
            "observedGeneration": 0,
            "deploymentMode": "Knative",
            "conditions": written(
                {"IngressReady": Cond(UNKNOWN), "PredictorReady": Cond(UNKNOWN), "Ready": Cond(UNKNOWN),
                 "Stopped": Cond(FALSE)},  # fmt: skip
                "Ready", ("PredictorReady", "IngressReady"), previous_conditions,
            ),
            "modelStatus": _model_status(ksvc, "Pending", pods=0),
        }
    _template_changed(isvc, ksvc)
    for revision in ksvc.revisions:
        if revision.state == "pending" and ready:
            revision.waited += 1
            how = settle(revision)
            if revision.waited >= how.rounds and time.monotonic() - revision.made >= how.seconds:
                revision.state = "failed" if how.failure else "ready"
                revision.failure = how.failure or ""
    newest = ksvc.revisions[-1]
    # Knative's latest ready revision only moves forward (a newer failed one leaves it where it was).
    for revision in ksvc.revisions:
        if revision.state == "ready":
            ksvc.latest_ready = revision.name
    percent = predictor.get("canaryTrafficPercent")
    spec_traffic: list[dict[str, Any]]
    if percent is not None and ksvc.rolled_out:
        spec_traffic = [{"latestRevision": True, "percent": percent}]
        if percent < 100:
            spec_traffic.append({"revisionName": ksvc.rolled_out, "latestRevision": False, "percent": 100 - percent, "tag": "prev"})
    else:
        spec_traffic = [{"latestRevision": True, "percent": 100}]
    key = json.dumps(spec_traffic, sort_keys=True)
    if key != ksvc.traffic_spec:
        ksvc.traffic_spec = key
        ksvc.generation += 1
    traffic = []
    if ksvc.latest_ready is not None:
        for target in spec_traffic:
            row = {**target, "revisionName": target.get("revisionName") or ksvc.latest_ready}
            if row.get("tag"):
                row["url"] = f"http://{row['tag']}-{name}-predictor.{namespace}.{domain}"
            traffic.append(row)
    _roll_out(ksvc, traffic)

    if newest.state == "ready":
        configuration = Cond(TRUE)
    elif newest.state == "failed":
        message = f"Container failed with: {newest.failure}"
        configuration = Cond(FALSE, "RevisionFailed", f'Revision "{newest.name}" failed with message: {message}.')
    else:
        configuration = Cond(UNKNOWN)
    route = Cond(TRUE) if ksvc.latest_ready else Cond(
        UNKNOWN, "RevisionMissing", f'Configuration "{name}-predictor" is waiting for a Revision to become ready.'
    )
    service_ready = living((configuration, route))
    if service_ready.status == TRUE and ksvc.predictor_url is None:
        ksvc.predictor_url = f"http://{name}-predictor.{namespace}.{domain}"
    ingress = (
        Cond(TRUE) if ksvc.predictor_url
        else Cond(service_ready.status if service_ready.status == UNKNOWN else FALSE,
                  "" if service_ready.status == UNKNOWN else "Predictor ingress not created")
    )  # fmt: skip
    conditions = {
        "PredictorReady": service_ready,
        "PredictorConfigurationReady": configuration,
        "PredictorRouteReady": route,
        "LatestDeploymentReady": _aggregate(configuration, "PredictorConfigurationReady"),
        "RoutesReady": _aggregate(route, "PredictorRouteReady"),
        "IngressReady": ingress,
        "Stopped": Cond(FALSE),
    }
    conditions["Ready"] = living((conditions["PredictorReady"], conditions["IngressReady"]))
    components: dict[str, Any] = {"latestCreatedRevision": newest.name, "traffic": traffic}
    for key_, value in (("latestReadyRevision", ksvc.latest_ready), ("latestRolledoutRevision", ksvc.rolled_out),
                        ("previousRolledoutRevision", ksvc.previous)):  # fmt: skip
        if value:
            components[key_] = value
    if ksvc.predictor_url:
        components["url"] = ksvc.predictor_url
        components["address"] = {"url": f"http://{name}-predictor.{namespace}.svc.cluster.local"}
    status: dict[str, Any] = {
        "observedGeneration": ksvc.generation,
        "deploymentMode": "Knative",
        "conditions": written(conditions, "Ready", ("PredictorReady", "IngressReady"), previous_conditions),
        "components": {"predictor": components},
    }
    if ksvc.predictor_url:
        status["url"] = f"http://{name}.{namespace}.{domain}"
        status["address"] = {"url": f"http://{name}.{namespace}.svc.cluster.local"}
    isvc_ready = conditions["Ready"].status == TRUE
    if newest.state == "failed":
        ksvc.failure_info = {"reason": "ModelLoadFailed", "message": newest.failure, "exitCode": 1}
        status["modelStatus"] = _model_status(ksvc, "FailedToLoad", pods=0)
    elif newest.state == "pending":
        status["modelStatus"] = _model_status(ksvc, "Loading", pods=0)
    elif isvc_ready and ksvc.latest_ready == newest.name:
        ksvc.loaded_once = True
        status["modelStatus"] = _model_status(ksvc, "Loaded", pods=1)
    else:
        status["modelStatus"] = _model_status(ksvc, "Pending", pods=1)
    return status


def _template_changed(isvc: Mapping[str, Any], ksvc: KnativeService) -> None:
    meta, predictor = isvc["metadata"], isvc["spec"]["predictor"]
    template = {k: v for k, v in predictor.items() if k != "canaryTrafficPercent"}
    key = json.dumps([template, meta.get("labels"), meta.get("annotations")], sort_keys=True)
    if key == ksvc.template:
        return
    ksvc.template = key
    ksvc.generation += 1
    number = len(ksvc.revisions) + 1
    ksvc.revisions.append(
        Revision(f"{meta['name']}-predictor-{number:05d}", predictor["model"]["storageUri"], predictor.get("logger"))
    )


def _roll_out(ksvc: KnativeService, traffic: list[dict[str, Any]]) -> None:
    """`PropagateStatus`'s bookkeeping of the rolled-out revisions (see the module docstring)."""
    totals: dict[str, int] = {}
    for row in traffic:
        totals[row["revisionName"]] = totals.get(row["revisionName"], 0) + row["percent"]
    newest = ksvc.revisions[-1].name
    for row in traffic:
        if row["revisionName"] != ksvc.latest_ready or not row.get("latestRevision"):
            continue
        if ksvc.rolled_out != ksvc.latest_ready:
            if row["percent"] == 100:
                ksvc.previous, ksvc.rolled_out = ksvc.rolled_out, ksvc.latest_ready
        elif ksvc.latest_ready == newest and row["percent"] < 100:
            if totals.get(row["revisionName"]) == 100 and ksvc.previous:
                ksvc.rolled_out = ksvc.previous


def _aggregate(component: Cond, name: str) -> Cond:
    if component.status == TRUE:
        return Cond(TRUE)
    return Cond(component.status if component.status == UNKNOWN else FALSE, f"{name} not ready")


def _model_status(ksvc: KnativeService, state: str, pods: int) -> dict[str, Any]:
    return model_status(state, loaded_once=ksvc.loaded_once, ready_pods=pods, failure_info=ksvc.failure_info)
