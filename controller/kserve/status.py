"""Reading an InferenceService's status: is the version we asked for served, ready, or failed?

Pure functions over the camelCase dicts the API server returns (no cluster calls). What KServe
v0.20.0 reports, by deployment mode (field names from KServe's CRD):

- **Knative**: `status.components.predictor` names the revisions (`latestCreatedRevision`,
  `latestReadyRevision`, `latestRolledoutRevision`, `previousRolledoutRevision`) and the split
  (`traffic[]`); conditions `PredictorReady` (the Knative Service's Ready: Unknown while a revision
  starts, False when it failed), `IngressReady`, `Ready`; `status.modelStatus` (`transitionStatus`,
  `lastFailureInfo`) describes the pods of the latest created revision.
- **Standard**: one Deployment per InferenceService; `PredictorReady` copies its conditions (False
  while pods start), `modelStatus` reads its newest pod, `observedGeneration` is the Deployment's.

The hard part is knowing that a ready status is about *our* storageUri and not the one before it:
status lags behind a spec change by KServe's reconcile time. The rules, per mode:

- Knative: `status.observedGeneration` is copied from the Knative Service, not from the
  InferenceService (KServe's `PropagateStatus`), so comparing it with `metadata.generation` proves
  nothing. Instead, whenever the operator changes the revision template (storageUri, logger) it
  records the then-newest revision in the annotation `modelrollout.io/superseded-revision` (see
  `documents.desired`). Knative creates a new revision for every template change, so a
  `latestCreatedRevision` other than that one was made from our spec; it serves our model once
  `latestReadyRevision` equals it.
- Standard: the InferenceServices the operator creates for a candidate (or the baseline) are made
  for one storageUri and re-created rather than re-pointed, so their status is about it alone. The
  one whose storageUri does change, the primary at promotion, is judged by its Deployment
  (`deployment_rolled_out`): KServe keeps `PredictorReady` True through a rolling update.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

from controller.kserve.document_paths import value_at
from controller.platform import failure_line

SUPERSEDED_REVISION_ANNOTATION = "modelrollout.io/superseded-revision"

# Knative was called "Serverless" and Standard "RawDeployment" before KServe 0.15; status may
# still report the old names.
_MODE_ALIASES = {"Knative": "Knative", "Serverless": "Knative", "Standard": "Standard", "RawDeployment": "Standard"}
_FAILED_TRANSITIONS = ("BlockedByFailedLoad", "InvalidSpec")
# Standard mode: the Deployment conditions KServe copies that will not pass by waiting.
_STANDARD_TERMINAL = ("ProgressDeadlineExceeded", "FailedCreate")
# Where KServe puts a predictor's storageUri in its pod template (pkg/.../components/predictor.go L294-300).
STORAGE_URI_ANNOTATION = "internal.serving.kserve.io/storage-initializer-sourceuri"


class TrafficShare(NamedTuple):
    """One row of the split KServe reports: which revision (or Deployment) gets what share."""

    revision: str
    percent: int
    tag: str | None


@dataclass(frozen=True)
class Readiness:
    """What one InferenceService says about serving one storageUri.

    `ready`: KServe's `Ready` condition — the service answers clients at all.
    `candidate_ready`: the revision (Knative) or Deployment (Standard) that serves
    `want_version_uri` is ready; False while the spec does not ask for that URI.
    `failure`: one line naming KServe's reason and message when serving that URI failed
    (a failed model load, an invalid spec, a failed revision); None otherwise.
    """

    ready: bool
    candidate_ready: bool
    failure: str | None
    traffic: tuple[TrafficShare, ...]


def deployment_mode(isvc: Mapping[str, Any]) -> str:
    """'Knative' or 'Standard': what KServe reports in status, else what the annotation asks."""
    reported = value_at(isvc, "status", "deploymentMode")
    asked = value_at(isvc, "metadata", "annotations", "serving.kserve.io/deploymentMode")
    for value in (reported, asked):
        if isinstance(value, str) and value in _MODE_ALIASES:
            return _MODE_ALIASES[value]
    raise ValueError(
        f"InferenceService {_name(isvc)!r} has no known deployment mode "
        f"(status.deploymentMode={reported!r}, annotation serving.kserve.io/deploymentMode={asked!r})"
    )


def knative_newest_revision_ready(isvc: Mapping[str, Any]) -> bool:
    """True when the newest Knative revision was made after the last storageUri change and is ready."""
    predictor = value_at(isvc, "status", "components", "predictor") or {}
    created = predictor.get("latestCreatedRevision")
    if not created or created == _superseded(isvc):
        return False
    return predictor.get("latestReadyRevision") == created


def predictor_readiness(isvc: Mapping[str, Any], want_version_uri: str) -> Readiness:
    """Readiness of the part of `isvc` that serves `want_version_uri` (module docstring: the rules)."""
    if not isinstance(want_version_uri, str) or not want_version_uri.strip():
        raise ValueError(f"want_version_uri must be a non-empty storage URI, got {want_version_uri!r}")
    if not isinstance(isvc, Mapping) or not isinstance(isvc.get("spec"), Mapping):
        raise ValueError("predictor_readiness needs an InferenceService object with a spec")
    ready = _condition(isvc, "Ready").get("status") == "True"
    if deployment_mode(isvc) == "Knative":
        candidate_ready, failure = _knative(isvc, want_version_uri)
        traffic = _component_traffic(isvc)
    else:
        candidate_ready, failure = _standard(isvc, want_version_uri)
        traffic = ()  # Standard mode splits nothing itself: the split is the HTTPRoute's
    return Readiness(ready=ready, candidate_ready=candidate_ready, failure=failure, traffic=traffic)


# ---------------------------------------------------------------------------------------------
# Knative


def _knative(isvc: Mapping[str, Any], want: str) -> tuple[bool, str | None]:
    if value_at(isvc, "spec", "predictor", "model", "storageUri") != want:
        return False, None  # not asked for (yet, or any more): neither ready nor failed
    predictor = value_at(isvc, "status", "components", "predictor") or {}
    created = predictor.get("latestCreatedRevision")
    superseded = _superseded(isvc)
    # Status that is positively about the revision before our storageUri change is stale —
    # except an invalid spec, for which KServe makes no revision at all.
    stale = bool(superseded) and created == superseded
    failure = _model_failure(isvc, value_at(isvc, "status", "modelStatus"), "predictor", superseded, stale)
    if failure is None and not stale:
        failure = _condition_failure(isvc, "PredictorReady", "predictor")
    ready = (
        failure is None
        and knative_newest_revision_ready(isvc)
        and _condition(isvc, "PredictorReady").get("status") == "True"
    )
    return ready, failure


# ---------------------------------------------------------------------------------------------
# Standard


def _standard(isvc: Mapping[str, Any], want: str) -> tuple[bool, str | None]:
    """Readiness of an InferenceService the operator created for this one URI (the canary, the
    shadow, the baseline: re-created, never re-pointed, so its status is about `want` alone).

    KServe v0.20.0 (`inference_service_status.go` L360-458) copies the Deployment's conditions:
    `PredictorReady` is False while pods start (reason "" on the first write, then
    `MinimumReplicasUnavailable`) — ordinary start-up, not a failure, which the rollout's
    `progressDeadline` bounds. Terminal are a failed model load (`modelStatus` BlockedByFailedLoad
    from a crash-looping container, L721-819), an invalid spec, and the Deployment's
    `ProgressDeadlineExceeded` or `FailedCreate`.
    """
    if value_at(isvc, "spec", "predictor", "model", "storageUri") != want:
        return False, None
    failure = _model_failure(isvc, value_at(isvc, "status", "modelStatus"), "predictor", None, False)
    if failure is None:
        condition = _condition(isvc, "PredictorReady")
        if condition.get("status") == "False" and condition.get("reason") in _STANDARD_TERMINAL:
            failure = _condition_failure(isvc, "PredictorReady", "predictor")
    ready = failure is None and _condition(isvc, "PredictorReady").get("status") == "True"
    return ready, failure


def deployment_rolled_out(deployment: Mapping[str, Any] | None, uri: str) -> bool:
    """Whether a predictor's Deployment serves `uri` with every pod: its template is KServe's for
    that storageUri and the rollout is complete, as `kubectl rollout status` decides it.

    Needed for an InferenceService whose storageUri changed (the primary, at promotion): KServe's
    `PredictorReady` stays True through a rolling update (the old pods are available) and its
    `observedGeneration` is the Deployment's, not the InferenceService's.
    """
    if not isinstance(deployment, Mapping):
        return False
    annotations = value_at(deployment, "spec", "template", "metadata", "annotations") or {}
    if annotations.get(STORAGE_URI_ANNOTATION) != uri:
        return False  # KServe has not rewritten the Deployment for this storageUri yet
    generation = value_at(deployment, "metadata", "generation")
    status = deployment.get("status") or {}
    if not isinstance(generation, int) or (status.get("observedGeneration") or 0) < generation:
        return False
    replicas = value_at(deployment, "spec", "replicas")
    replicas = replicas if isinstance(replicas, int) else 1
    updated = status.get("updatedReplicas") or 0
    return updated >= replicas and (status.get("replicas") or 0) <= updated and (status.get("availableReplicas") or 0) >= updated


# ---------------------------------------------------------------------------------------------
# Shared readers


def _component_traffic(isvc: Mapping[str, Any]) -> tuple[TrafficShare, ...]:
    rows = value_at(isvc, "status", "components", "predictor", "traffic") or []
    return tuple(
        TrafficShare(str(row.get("revisionName", "")), int(row.get("percent") or 0), row.get("tag"))
        for row in rows
        if isinstance(row, Mapping)
    )


def _model_failure(
    isvc: Mapping[str, Any], model_status: Any, where: str, superseded: str | None, stale: bool
) -> str | None:
    """A failed model load or invalid spec from a `modelStatus` block, as one line.

    A failed load reported by `stale` status is about the model before ours; an invalid spec is
    not: the runtime and format it complains about are the same for every version.
    """
    if not isinstance(model_status, Mapping):
        return None
    transition = model_status.get("transitionStatus")
    if transition not in _FAILED_TRANSITIONS or (stale and transition == "BlockedByFailedLoad"):
        return None
    info = model_status.get("lastFailureInfo") or {}
    revision = info.get("modelRevisionName")
    if superseded and revision == superseded:
        return None  # a failure of the revision we already replaced
    details = []
    if revision:
        details.append(f"revision {revision}")
    if "exitCode" in info:
        details.append(f"exit code {info['exitCode']}")
    extra = f" ({', '.join(details)})" if details else ""
    reason = info.get("reason") or transition
    message = info.get("message") or f"modelStatus.transitionStatus is {transition}"
    return failure_line(f"InferenceService {_name(isvc)} {where}: {reason}: {message}{extra}")


def _condition_failure(isvc: Mapping[str, Any], type_: str, where: str) -> str | None:
    condition = _condition(isvc, type_)
    if condition.get("status") != "False":
        return None  # Unknown is progress, not failure
    reason = condition.get("reason") or f"{type_}=False"
    message = condition.get("message") or "no message"
    return failure_line(f"InferenceService {_name(isvc)} {where}: {reason}: {message}")


def _condition(isvc: Mapping[str, Any], type_: str) -> Mapping[str, Any]:
    for condition in value_at(isvc, "status", "conditions") or []:
        if isinstance(condition, Mapping) and condition.get("type") == type_:
            return condition
    return {}


def _superseded(isvc: Mapping[str, Any]) -> str | None:
    value = value_at(isvc, "metadata", "annotations", SUPERSEDED_REVISION_ANNOTATION)
    return value if isinstance(value, str) and value else None


def _name(isvc: Mapping[str, Any]) -> str:
    return str(value_at(isvc, "metadata", "name") or "?")
