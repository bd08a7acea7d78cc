"""Readiness read from InferenceService status blobs shaped as KServe writes them.

Each blob is our own document (from `kserve_documents.desired`) plus a `status` written from
KServe's CRD and docs: Knative revision fields and `traffic[]`, the `PredictorReady` /
`IngressReady` / `Ready` conditions, `modelStatus` with `lastFailureInfo`, and for Standard
mode `canaryStatuses[]` with `CanaryPredictorReady`. Every blob is validated against the CRD
(strict) first, so a status field we invent or misspell fails the test, not the cluster.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest

from controller.kserve_documents import IsvcTarget, desired
from controller.kserve_status import (
    SUPERSEDED_REVISION_ANNOTATION,
    Readiness,
    TrafficShare,
    deployment_mode,
    knative_newest_revision_ready,
    predictor_readiness,
)
from controller.platform import Routing
from tests.kube.kserve_crd import assert_valid

URIS = {"1": "s3://models/iris/1/artifacts", "2": "s3://models/iris/2/artifacts"}
T0 = "2026-03-01T10:00:00Z"
R1, R2, R3 = "iris-predictor-00001", "iris-predictor-00002", "iris-predictor-00003"


def document(mode: str, routing: Routing, *, superseded: str | None = None, generation: int = 1) -> dict[str, Any]:
    the_target = IsvcTarget(rollout="iris-rollout", name="iris", namespace="ml", deployment_mode=mode)  # type: ignore[arg-type]
    doc = desired(the_target, routing, URIS, "http://comparator/events").primary
    doc["metadata"].update(uid="0d7c…", resourceVersion="1200", generation=generation, creationTimestamp=T0)
    if superseded:
        doc["metadata"]["annotations"][SUPERSEDED_REVISION_ANNOTATION] = superseded
    return doc


def stable() -> Routing:
    return Routing(model="iris", stable_version="1")


def canary(weight: int) -> Routing:
    return Routing(
        model="iris", stable_version="1", candidate_version="2", candidate_role="canary", candidate_weight=weight
    )


def condition(type_: str, status: str, reason: str | None = None, message: str | None = None) -> dict[str, Any]:
    entry: dict[str, Any] = {"type": type_, "status": status, "lastTransitionTime": T0}
    if reason:
        entry["reason"] = reason
    if message:
        entry["message"] = message
    if type_ not in ("Ready", "PredictorReady", "IngressReady"):
        entry["severity"] = "Info"
    return entry


def knative_status(
    *,
    created: str,
    ready_revision: str,
    rolled_out: str,
    traffic: list[dict[str, Any]],
    predictor_ready: dict[str, Any],
    overall: str,
    model_status: dict[str, Any],
) -> dict[str, Any]:
    return {
        "observedGeneration": 3,  # the Knative Service's generation, not ours
        "deploymentMode": "Knative",
        "url": "http://iris.ml.example.com",
        "address": {"url": "http://iris-predictor.ml.svc.cluster.local"},
        "conditions": [
            condition("IngressReady", "True"),
            condition("PredictorConfigurationReady", predictor_ready["status"]),
            predictor_ready,
            condition("PredictorRouteReady", "True"),
            condition("Ready", overall),
        ],
        "components": {
            "predictor": {
                "latestCreatedRevision": created,
                "latestReadyRevision": ready_revision,
                "latestRolledoutRevision": rolled_out,
                "previousRolledoutRevision": R1 if rolled_out != R1 else None,
                "url": "http://iris-predictor.ml.example.com",
                "address": {"url": "http://iris-predictor.ml.svc.cluster.local"},
                "traffic": traffic,
            }
        },
        "modelStatus": model_status,
    }


LOADED = {
    "transitionStatus": "UpToDate",
    "states": {"activeModelState": "Loaded", "targetModelState": "Loaded"},
    "copies": {"failedCopies": 0, "totalCopies": 1},
}
LOADING = {
    "transitionStatus": "InProgress",
    "states": {"activeModelState": "Loaded", "targetModelState": "Loading"},
    "copies": {"failedCopies": 0, "totalCopies": 1},
}


def with_status(doc: dict[str, Any], status: dict[str, Any]) -> dict[str, Any]:
    doc = copy.deepcopy(doc)
    status = copy.deepcopy(status)
    components = status.get("components", {}).get("predictor", {})
    for key in [k for k, v in components.items() if v is None]:
        del components[key]
    doc["status"] = status
    assert_valid(doc)
    return doc


# ---------------------------------------------------------------------------------------------
# Knative


def test_knative_fresh_service_ready() -> None:
    isvc = with_status(
        document("Knative", stable()),
        knative_status(
            created=R1,
            ready_revision=R1,
            rolled_out=R1,
            traffic=[{"revisionName": R1, "percent": 100, "latestRevision": True}],
            predictor_ready=condition("PredictorReady", "True"),
            overall="True",
            model_status=LOADED,
        ),
    )
    assert predictor_readiness(isvc, URIS["1"]) == Readiness(
        ready=True, candidate_ready=True, failure=None, traffic=(TrafficShare(R1, 100, None),)
    )
    # A version the spec does not ask for is neither ready nor failed.
    assert predictor_readiness(isvc, URIS["2"]).candidate_ready is False
    assert predictor_readiness(isvc, URIS["2"]).failure is None


def test_knative_canary_progressing_then_ready() -> None:
    doc = document("Knative", canary(10), superseded=R1)
    # The candidate revision exists but is not ready: Knative sends the "latest" share to the
    # latest *ready* revision, still the stable one.
    progressing = with_status(
        doc,
        knative_status(
            created=R2,
            ready_revision=R1,
            rolled_out=R1,
            traffic=[
                {"revisionName": R1, "percent": 10, "latestRevision": True, "tag": "latest"},
                {"revisionName": R1, "percent": 90, "latestRevision": False, "tag": "prev"},
            ],
            predictor_ready=condition("PredictorReady", "Unknown", "RevisionMissing", f"Revision {R2} is not ready"),
            overall="Unknown",
            model_status=LOADING,
        ),
    )
    result = predictor_readiness(progressing, URIS["2"])
    assert (result.ready, result.candidate_ready, result.failure) == (False, False, None)
    ready = with_status(
        doc,
        knative_status(
            created=R2,
            ready_revision=R2,
            rolled_out=R1,
            traffic=[
                {"revisionName": R2, "percent": 10, "latestRevision": True, "tag": "latest"},
                {"revisionName": R1, "percent": 90, "latestRevision": False, "tag": "prev"},
            ],
            predictor_ready=condition("PredictorReady", "True"),
            overall="True",
            model_status=LOADED,
        ),
    )
    assert predictor_readiness(ready, URIS["2"]) == Readiness(
        ready=True,
        candidate_ready=True,
        failure=None,
        traffic=(TrafficShare(R2, 10, "latest"), TrafficShare(R1, 90, "prev")),
    )


def test_knative_status_from_before_the_change_is_not_the_candidate() -> None:
    # Just patched to v2: KServe has not made the new revision, and the old one is ready.
    isvc = with_status(
        document("Knative", canary(10), superseded=R1),
        knative_status(
            created=R1,
            ready_revision=R1,
            rolled_out=R1,
            traffic=[{"revisionName": R1, "percent": 100, "latestRevision": True}],
            predictor_ready=condition("PredictorReady", "True"),
            overall="True",
            model_status=LOADED,
        ),
    )
    assert predictor_readiness(isvc, URIS["2"]).candidate_ready is False
    assert knative_newest_revision_ready(isvc) is False
    # Without the annotation (an object we created with this URI) the same status counts.
    del isvc["metadata"]["annotations"][SUPERSEDED_REVISION_ANNOTATION]
    assert knative_newest_revision_ready(isvc) is True


FAILED_LOAD = {
    "transitionStatus": "BlockedByFailedLoad",
    "states": {"activeModelState": "Loaded", "targetModelState": "FailedToLoad"},
    "copies": {"failedCopies": 1, "totalCopies": 1},
    "lastFailureInfo": {
        "reason": "ModelLoadFailed",
        "message": "Model iris failed to load:\nMlflowException: could not find MLmodel in /mnt/models",
        "location": "iris-predictor-00002-deployment-7c9f8d-x2x4q",
        "exitCode": 1,
        "modelRevisionName": R2,
        "time": T0,
    },
}


def test_knative_failed_model_load_names_kserves_reason() -> None:
    isvc = with_status(
        document("Knative", canary(10), superseded=R1),
        knative_status(
            created=R2,
            ready_revision=R1,
            rolled_out=R1,
            traffic=[
                {"revisionName": R1, "percent": 10, "latestRevision": True, "tag": "latest"},
                {"revisionName": R1, "percent": 90, "latestRevision": False, "tag": "prev"},
            ],
            predictor_ready=condition(
                "PredictorReady", "False", "RevisionFailed", f'Revision "{R2}" failed with message: Container failed.'
            ),
            overall="False",
            model_status=FAILED_LOAD,
        ),
    )
    result = predictor_readiness(isvc, URIS["2"])
    assert result.candidate_ready is False
    assert result.failure == (
        "InferenceService iris predictor: ModelLoadFailed: Model iris failed to load: MlflowException: could not "
        f"find MLmodel in /mnt/models (revision {R2}, exit code 1)"
    )
    assert "\n" not in result.failure
    # Without modelStatus details the failed revision's condition still names the cause.
    isvc["status"]["modelStatus"] = LOADING
    assert predictor_readiness(isvc, URIS["2"]).failure == (
        f'InferenceService iris predictor: RevisionFailed: Revision "{R2}" failed with message: Container failed.'
    )


def test_knative_failure_of_the_superseded_revision_is_not_ours() -> None:
    # Rolled back to v1 (superseded = the failed v2 revision): the old failure must not be
    # reported against v1 while KServe catches up.
    isvc = with_status(
        document("Knative", stable(), superseded=R2),
        knative_status(
            created=R2,
            ready_revision=R1,
            rolled_out=R1,
            traffic=[{"revisionName": R1, "percent": 100, "latestRevision": False, "tag": "prev"}],
            predictor_ready=condition("PredictorReady", "False", "RevisionFailed", f'Revision "{R2}" failed'),
            overall="False",
            model_status=FAILED_LOAD,
        ),
    )
    assert predictor_readiness(isvc, URIS["1"]) == Readiness(
        ready=False, candidate_ready=False, failure=None, traffic=(TrafficShare(R1, 100, "prev"),)
    )
    # Once the restored revision is up, v1 is served again.
    isvc["status"]["components"]["predictor"].update(latestCreatedRevision=R3, latestReadyRevision=R3)
    isvc["status"]["conditions"] = [condition("PredictorReady", "True"), condition("Ready", "True")]
    isvc["status"]["modelStatus"] = LOADED
    assert predictor_readiness(isvc, URIS["1"]).candidate_ready is True


def test_knative_invalid_spec_is_reported_although_no_revision_was_made() -> None:
    isvc = with_status(
        document("Knative", canary(10), superseded=R1),
        knative_status(
            created=R1,
            ready_revision=R1,
            rolled_out=R1,
            traffic=[{"revisionName": R1, "percent": 100, "latestRevision": True}],
            predictor_ready=condition("PredictorReady", "True"),
            overall="True",
            model_status={
                "transitionStatus": "InvalidSpec",
                "states": {"activeModelState": "Loaded", "targetModelState": "FailedToLoad"},
                "lastFailureInfo": {
                    "reason": "NoSupportingRuntime",
                    "message": "Specified runtime does not support specified framework/version",
                },
            },
        ),
    )
    result = predictor_readiness(isvc, URIS["2"])
    assert result.candidate_ready is False
    assert result.failure == (
        "InferenceService iris predictor: NoSupportingRuntime: Specified runtime does not support specified "
        "framework/version"
    )


# ---------------------------------------------------------------------------------------------
# Standard


def standard_status(
    *,
    observed: int,
    canaries: list[dict[str, Any]],
    canary_condition: dict[str, Any] | None,
    predictor_ready: dict[str, Any] | None = None,
    model_status: dict[str, Any] = LOADED,
) -> dict[str, Any]:
    conditions = [
        condition("IngressReady", "True"),
        predictor_ready or condition("PredictorReady", "True"),
        condition("Ready", "True" if (predictor_ready or {}).get("status", "True") == "True" else "False"),
    ]
    if canary_condition is not None:
        conditions.append(canary_condition)
    status: dict[str, Any] = {
        "observedGeneration": observed,
        "deploymentMode": "Standard",
        "url": "http://iris-ml.example.com",
        "address": {"url": "http://iris-predictor.ml.svc.cluster.local"},
        "conditions": conditions,
        "components": {"predictor": {"url": "http://iris-predictor-ml.example.com"}},
        "modelStatus": model_status,
    }
    if canaries:
        status["canaryStatuses"] = canaries
    return status


def test_standard_canary_progressing_then_ready() -> None:
    doc = document("Standard", canary(25), generation=2)
    progressing = with_status(
        doc,
        standard_status(
            observed=2,
            canaries=[{"name": "v2", "ready": False, "trafficPercent": 25, "modelStatus": LOADING}],
            canary_condition=condition("CanaryPredictorReady", "Unknown", "CanariesNotReady"),
        ),
    )
    result = predictor_readiness(progressing, URIS["2"])
    assert (result.ready, result.candidate_ready, result.failure) == (True, False, None)
    ready = with_status(
        doc,
        standard_status(
            observed=2,
            canaries=[{"name": "v2", "ready": True, "trafficPercent": 25, "modelStatus": LOADED}],
            canary_condition=condition("CanaryPredictorReady", "True", "AllCanariesReady"),
        ),
    )
    assert predictor_readiness(ready, URIS["2"]) == Readiness(
        ready=True,
        candidate_ready=True,
        failure=None,
        traffic=(TrafficShare("v1", 75, "stable"), TrafficShare("v2", 25, "canary")),
    )
    assert predictor_readiness(ready, URIS["1"]).candidate_ready is True  # the stable predictor


def test_standard_canary_failed_load() -> None:
    isvc = with_status(
        document("Standard", canary(25), generation=2),
        standard_status(
            observed=2,
            canaries=[{"name": "v2", "ready": False, "trafficPercent": 25, "modelStatus": FAILED_LOAD}],
            canary_condition=condition("CanaryPredictorReady", "False", "CanariesNotReady", "canary v2 is not ready"),
        ),
    )
    result = predictor_readiness(isvc, URIS["2"])
    assert result.candidate_ready is False
    assert result.failure is not None
    assert result.failure.startswith("InferenceService iris canary v2: ModelLoadFailed: Model iris failed to load")
    assert predictor_readiness(isvc, URIS["1"]).failure is None  # the stable still serves


def test_standard_canary_not_ready_condition_without_model_details() -> None:
    isvc = with_status(
        document("Standard", canary(25), generation=2),
        standard_status(
            observed=2,
            canaries=[{"name": "v2", "ready": False, "trafficPercent": 25}],
            canary_condition=condition(
                "CanaryPredictorReady", "False", "ProgressDeadlineExceeded", "image pull back-off"
            ),
        ),
    )
    assert predictor_readiness(isvc, URIS["2"]).failure == (
        "InferenceService iris canary v2: ProgressDeadlineExceeded: image pull back-off"
    )


def test_standard_status_of_an_older_generation_is_not_trusted() -> None:
    # Promoted (generation 3) but KServe still reports generation 2 with a failing predictor.
    promoted = document("Standard", canary(100), generation=3)
    stale = with_status(
        promoted,
        standard_status(
            observed=2,
            canaries=[],
            canary_condition=None,
            predictor_ready=condition("PredictorReady", "False", "MinimumReplicasUnavailable", "0/1 replicas"),
        ),
    )
    assert predictor_readiness(stale, URIS["2"]) == Readiness(
        ready=False, candidate_ready=False, failure=None, traffic=(TrafficShare("v2", 100, "stable"),)
    )
    fresh = copy.deepcopy(stale)
    fresh["status"]["observedGeneration"] = 3
    assert predictor_readiness(fresh, URIS["2"]).failure == (
        "InferenceService iris predictor: MinimumReplicasUnavailable: 0/1 replicas"
    )
    fresh["status"]["conditions"] = [condition("PredictorReady", "True"), condition("Ready", "True")]
    assert predictor_readiness(fresh, URIS["2"]).candidate_ready is True


def test_standard_invalid_spec_is_reported_even_before_the_generation_is_observed() -> None:
    isvc = with_status(
        document("Standard", stable(), generation=2),
        standard_status(
            observed=1,
            canaries=[],
            canary_condition=None,
            model_status={
                "transitionStatus": "InvalidSpec",
                "states": {"activeModelState": "", "targetModelState": "FailedToLoad"},
                "lastFailureInfo": {"reason": "RuntimeNotRecognized", "message": "runtime kserve-mlserver not found"},
            },
        ),
    )
    assert predictor_readiness(isvc, URIS["1"]).failure == (
        "InferenceService iris predictor: RuntimeNotRecognized: runtime kserve-mlserver not found"
    )


# ---------------------------------------------------------------------------------------------
# Modes and bad input


def test_deployment_mode_reads_status_then_annotation_and_old_names() -> None:
    doc = document("Knative", stable())
    assert deployment_mode(doc) == "Knative"
    doc["status"] = {"deploymentMode": "RawDeployment"}
    assert deployment_mode(doc) == "Standard"
    doc["status"] = {"deploymentMode": "Serverless"}
    assert deployment_mode(doc) == "Knative"
    del doc["metadata"]["annotations"]["serving.kserve.io/deploymentMode"]
    doc["status"] = {}
    with pytest.raises(ValueError, match="InferenceService 'iris' has no known deployment mode"):
        deployment_mode(doc)


def test_a_service_without_status_is_not_ready() -> None:
    for mode in ("Knative", "Standard"):
        assert predictor_readiness(document(mode, stable()), URIS["1"]) == Readiness(
            ready=False, candidate_ready=False, failure=None, traffic=()
        )


@pytest.mark.parametrize(
    ("isvc", "uri", "message"),
    [
        ({"spec": {}}, "", "want_version_uri must be a non-empty storage URI"),
        ({"spec": {}}, None, "want_version_uri must be a non-empty storage URI"),
        ({"metadata": {"name": "iris"}}, "s3://x", "needs an InferenceService object with a spec"),
        ([], "s3://x", "needs an InferenceService object with a spec"),
    ],
)
def test_bad_input(isvc: Any, uri: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        predictor_readiness(isvc, uri)
