"""Reading an InferenceService's status: is the version we asked for served, ready, or failed?

Pure functions over the camelCase dict the API server returns (no cluster calls). What KServe
reports, by deployment mode (REFERENCE.md, KServe section; field names from KServe's CRD):

- **Knative**: `status.components.predictor` names the revisions (`latestCreatedRevision`,
  `latestReadyRevision`, `latestRolledoutRevision`, `previousRolledoutRevision`) and the split
  (`traffic[]`); conditions `PredictorReady`, `IngressReady`, `Ready`; `status.modelStatus`
  (`transitionStatus`, `lastFailureInfo`) describes the model of the *current spec*.
- **Standard** (KServe >= 0.20): one Deployment per predictor, named after `predictor.name`;
  each `spec.canary[]` entry reports in `status.canaryStatuses[]` (by name) and in the aggregate
  condition `CanaryPredictorReady`.

The hard part is knowing that a ready revision serves *our* storageUri and not the one before
it: status lags behind a spec change by KServe's reconcile time. The rules, per mode:

- Knative: `status.observedGeneration` is copied from the Knative Service, not from the
  InferenceService (KServe's `PropagateStatus` sets it from `serviceStatus.ObservedGeneration`),
  so comparing it with `metadata.generation` proves nothing. Instead, whenever the operator
  changes the predictor's storageUri it records the then-newest revision in the annotation
  `modelrollout.io/superseded-revision` (see `kserve_documents.desired`). Knative creates a new
  revision for every template change, so a `latestCreatedRevision` other than that one was made
  from our spec; it serves our model once `latestReadyRevision` equals it.
- Standard: the canary Deployment is named after the candidate's version (`v<version>`), so
  `canaryStatuses[name=v<version>].ready` is about that version by construction. For the stable
  predictor, `status.observedGeneration >= metadata.generation`, the test KServe's own SDK
  applies (`KServeClient.wait_isvc_ready(expected_generation=…)`, used by KServe's Standard-mode
  canary e2e tests).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

SUPERSEDED_REVISION_ANNOTATION = "modelrollout.io/superseded-revision"

# Knative was called "Serverless" and Standard "RawDeployment" before KServe 0.15; status may
# still report the old names.
_MODE_ALIASES = {"Knative": "Knative", "Serverless": "Knative", "Standard": "Standard", "RawDeployment": "Standard"}
_FAILED_TRANSITIONS = ("BlockedByFailedLoad", "InvalidSpec")
_FAILURE_LINE_LIMIT = 400


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
    reported = _get(isvc, "status", "deploymentMode")
    asked = _get(isvc, "metadata", "annotations", "serving.kserve.io/deploymentMode")
    for value in (reported, asked):
        if isinstance(value, str) and value in _MODE_ALIASES:
            return _MODE_ALIASES[value]
    raise ValueError(
        f"InferenceService {_name(isvc)!r} has no known deployment mode "
        f"(status.deploymentMode={reported!r}, annotation serving.kserve.io/deploymentMode={asked!r})"
    )


def knative_newest_revision_ready(isvc: Mapping[str, Any]) -> bool:
    """True when the newest Knative revision was made after the last storageUri change and is ready."""
    predictor = _get(isvc, "status", "components", "predictor") or {}
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
        traffic = _component_traffic(isvc) or _standard_traffic(isvc)
    return Readiness(ready=ready, candidate_ready=candidate_ready, failure=failure, traffic=traffic)


# ---------------------------------------------------------------------------------------------
# Knative


def _knative(isvc: Mapping[str, Any], want: str) -> tuple[bool, str | None]:
    if _get(isvc, "spec", "predictor", "model", "storageUri") != want:
        return False, None  # not asked for (yet, or any more): neither ready nor failed
    predictor = _get(isvc, "status", "components", "predictor") or {}
    created = predictor.get("latestCreatedRevision")
    superseded = _superseded(isvc)
    # Status that is positively about the revision before our storageUri change is stale —
    # except an invalid spec, for which KServe makes no revision at all.
    stale = bool(superseded) and created == superseded
    failure = _model_failure(isvc, _get(isvc, "status", "modelStatus"), "predictor", superseded, stale)
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
    observed = _generation_observed(isvc)
    for entry in _get(isvc, "spec", "canary") or []:
        if _get(entry, "predictor", "model", "storageUri") == want:
            name = _get(entry, "predictor", "name")
            statuses = [s for s in _get(isvc, "status", "canaryStatuses") or [] if isinstance(s, Mapping)]
            status = next((s for s in statuses if s.get("name") == name), None)
            where = f"canary {name}"
            failure = _model_failure(isvc, (status or {}).get("modelStatus"), where, None, False)
            if failure is None and observed:
                failure = _condition_failure(isvc, "CanaryPredictorReady", where)
            ready = failure is None and observed and status is not None and status.get("ready") is True
            return ready, failure
    if _get(isvc, "spec", "predictor", "model", "storageUri") != want:
        return False, None
    # Until KServe has observed our change, status describes the spec before it.
    failure = _model_failure(isvc, _get(isvc, "status", "modelStatus"), "predictor", None, not observed)
    if failure is None and observed:
        failure = _condition_failure(isvc, "PredictorReady", "predictor")
    ready = failure is None and observed and _condition(isvc, "PredictorReady").get("status") == "True"
    return ready, failure


def _generation_observed(isvc: Mapping[str, Any]) -> bool:
    generation = _get(isvc, "metadata", "generation")
    observed = _get(isvc, "status", "observedGeneration")
    if isinstance(generation, int) and isinstance(observed, int):
        return observed >= generation
    return True  # a KServe that does not report it: rely on the conditions alone


def _standard_traffic(isvc: Mapping[str, Any]) -> tuple[TrafficShare, ...]:
    """The split as `canaryStatuses[]` reports it; the stable predictor takes the remainder."""
    canaries = [
        TrafficShare(str(s.get("name", "")), int(s.get("trafficPercent") or 0), "canary")
        for s in _get(isvc, "status", "canaryStatuses") or []
        if isinstance(s, Mapping)
    ]
    if not _get(isvc, "status"):
        return ()  # KServe has not reported yet
    stable = _get(isvc, "spec", "predictor", "name") or "predictor"
    remainder = max(0, 100 - sum(c.percent for c in canaries))
    return (TrafficShare(str(stable), remainder, "stable"), *canaries)


# ---------------------------------------------------------------------------------------------
# Shared readers


def _component_traffic(isvc: Mapping[str, Any]) -> tuple[TrafficShare, ...]:
    rows = _get(isvc, "status", "components", "predictor", "traffic") or []
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
    return _one_line(f"InferenceService {_name(isvc)} {where}: {reason}: {message}{extra}")


def _condition_failure(isvc: Mapping[str, Any], type_: str, where: str) -> str | None:
    condition = _condition(isvc, type_)
    if condition.get("status") != "False":
        return None  # Unknown is progress, not failure
    reason = condition.get("reason") or f"{type_}=False"
    message = condition.get("message") or "no message"
    return _one_line(f"InferenceService {_name(isvc)} {where}: {reason}: {message}")


def _condition(isvc: Mapping[str, Any], type_: str) -> Mapping[str, Any]:
    for condition in _get(isvc, "status", "conditions") or []:
        if isinstance(condition, Mapping) and condition.get("type") == type_:
            return condition
    return {}


def _superseded(isvc: Mapping[str, Any]) -> str | None:
    value = _get(isvc, "metadata", "annotations", SUPERSEDED_REVISION_ANNOTATION)
    return value if isinstance(value, str) and value else None


def _name(isvc: Mapping[str, Any]) -> str:
    return str(_get(isvc, "metadata", "name") or "?")


def _one_line(text: str) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= _FAILURE_LINE_LIMIT else flat[: _FAILURE_LINE_LIMIT - 1] + "…"


def _get(obj: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(obj, Mapping):
            return None
        obj = obj.get(key)
    return obj
