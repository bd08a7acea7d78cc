"""Readiness read from InferenceService status blobs shaped as KServe writes them.

Each blob is our own document (from `controller.kserve.documents.desired`) plus a `status` written from
KServe's CRD and docs: Knative revision fields and `traffic[]`, the `PredictorReady` /
`IngressReady` / `Ready` conditions, `modelStatus` with `lastFailureInfo`, and for Standard
mode the conditions KServe copies from the predictor's Deployment. Every blob is validated against the CRD
(strict) first, so a status field we invent or misspell fails the test, not the cluster.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest

from controller.kserve.documents import IsvcTarget, desired
from controller.kserve.status import (
    STORAGE_URI_ANNOTATION,
    SUPERSEDED_REVISION_ANNOTATION,
    Readiness,
    TrafficShare,
    deployment_mode,
    deployment_rolled_out,
    knative_newest_revision_ready,
    predictor_readiness,
)
from controller.platform import Routing
from tests.kube.kserve_crd import assert_valid

URIS = {"1": "s3://models/iris/1/artifacts", "2": "s3://models/iris/2/artifacts"}
T0 = "2026-03-01T10:00:00Z"
R1, R2, R3 = "iris-predictor-00001", "iris-predictor-00002", "iris-predictor-00003"


def document(mode: str, routing: Routing, *, superseded: str | None = None, generation: int = 1) -> dict[str, Any]:
    route = "iris-route" if mode == "Standard" else None
    the_target = IsvcTarget(rollout="iris-rollout", name="iris", namespace="ml", deployment_mode=mode, http_route=route)  # type: ignore[arg-type]
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
# Standard: InferenceServices made for one storageUri; the primary's Deployment at promotion


def standard_status(predictor_ready: dict[str, Any], model_status: dict[str, Any] = LOADED, observed: int = 1) -> dict[str, Any]:
    """As KServe v0.20.0 writes it: PredictorReady from the Deployment, observedGeneration the Deployment's."""
    ready = predictor_ready["status"] == "True"
    ingress = condition("IngressReady", "True") if ready else condition("IngressReady", "False", "Predictor ingress not created")
    return {
        "observedGeneration": observed,
        "deploymentMode": "Standard",
        "conditions": [ingress, predictor_ready, condition("Ready", "True" if ready else "False")],
        "modelStatus": model_status,
    }


STARTING = condition("PredictorReady", "False", "MinimumReplicasUnavailable", "Deployment does not have minimum availability.")


def test_standard_starting_is_false_and_not_a_failure() -> None:
    for starting in (condition("PredictorReady", "False"), STARTING):  # first write: no reason yet
        isvc = with_status(document("Standard", stable()), standard_status(starting, LOADING, observed=0))
        assert predictor_readiness(isvc, URIS["1"]) == Readiness(ready=False, candidate_ready=False, failure=None, traffic=())
    ready = with_status(document("Standard", stable()), standard_status(condition("PredictorReady", "True", "NewReplicaSetAvailable")))
    assert predictor_readiness(ready, URIS["1"]).candidate_ready is True
    assert predictor_readiness(ready, URIS["2"]).candidate_ready is False  # another storageUri: not asked for


def test_standard_failed_load_and_terminal_conditions_are_failures() -> None:
    failed = with_status(document("Standard", stable()), standard_status(STARTING, FAILED_LOAD))
    failure = predictor_readiness(failed, URIS["1"]).failure
    assert failure is not None and failure.startswith("InferenceService iris predictor: ModelLoadFailed: Model iris failed to load")
    for reason in ("ProgressDeadlineExceeded", "FailedCreate"):
        stuck = with_status(document("Standard", stable()), standard_status(condition("PredictorReady", "False", reason, "why"), LOADING))
        assert predictor_readiness(stuck, URIS["1"]).failure == f"InferenceService iris predictor: {reason}: why"


def test_standard_invalid_spec_is_a_failure() -> None:
    isvc = with_status(
        document("Standard", stable()),
        standard_status(
            condition("PredictorReady", "False"),
            {
                "transitionStatus": "InvalidSpec",
                "states": {"activeModelState": "", "targetModelState": "FailedToLoad"},
                "lastFailureInfo": {"reason": "RuntimeNotRecognized", "message": "runtime kserve-mlserver not found"},
            },
        ),
    )
    assert predictor_readiness(isvc, URIS["1"]).failure == (
        "InferenceService iris predictor: RuntimeNotRecognized: runtime kserve-mlserver not found"
    )


def deployment(uri: str, *, generation: int = 2, observed: int = 2, replicas: int = 1, updated: int = 1,
               available: int = 1) -> dict[str, Any]:  # fmt: skip
    return {
        "metadata": {"name": "iris-predictor", "generation": generation},
        "spec": {"replicas": 1, "template": {"metadata": {"annotations": {STORAGE_URI_ANNOTATION: uri}}}},
        "status": {"observedGeneration": observed, "replicas": replicas, "updatedReplicas": updated,
                   "availableReplicas": available},
    }  # fmt: skip


def test_the_primarys_deployment_says_when_a_promotion_rolled_out() -> None:
    assert deployment_rolled_out(deployment(URIS["2"]), URIS["2"]) is True
    assert deployment_rolled_out(deployment(URIS["1"]), URIS["2"]) is False  # KServe has not rewritten it yet
    assert deployment_rolled_out(deployment(URIS["2"], observed=1), URIS["2"]) is False  # not observed yet
    assert deployment_rolled_out(deployment(URIS["2"], replicas=2), URIS["2"]) is False  # the old pod still runs
    assert deployment_rolled_out(deployment(URIS["2"], available=0), URIS["2"]) is False  # the new one is not up
    assert deployment_rolled_out(deployment(URIS["2"], updated=0), URIS["2"]) is False
    assert deployment_rolled_out(None, URIS["2"]) is False


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
