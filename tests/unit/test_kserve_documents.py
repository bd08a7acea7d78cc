"""InferenceService documents and merge patches for every rollout state, in both deployment modes.

Every document is validated against KServe's real CRD (strict: unknown fields fail). The
canary, promotion and rollback sequences are spelt out exactly, as KServe defines them
(module docstring of `controller.kserve.documents`), and patches are applied with RFC 7386
semantics to check that they really reach the documents — removed fields included.
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from controller.kserve.documents import Desired, IsvcTarget, desired, shadow_logger, shadow_name
from controller.kserve.patch import PATCH_CONTENT_TYPE, merge_patch
from controller.kserve.status import SUPERSEDED_REVISION_ANNOTATION
from controller.platform import Routing
from tests.kube.kserve_crd import assert_valid

URIS = {"1": "s3://models/iris/1/artifacts", "2": "s3://models/iris/2/artifacts", "3": "gs://bucket/iris/3"}
COMPARATOR = "http://modelrollout-shadow.modelrollout.svc:8080/events"
RESOURCES = {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"cpu": 1, "memory": "1Gi"}}
MODES = ("Knative", "Standard")


def target(mode: str = "Knative", **overrides: Any) -> IsvcTarget:
    fields: dict[str, Any] = {"rollout": "iris-rollout", "name": "iris", "namespace": "ml", "deployment_mode": mode}
    if mode == "Standard":
        fields["http_route"] = "iris-route"
    fields.update(overrides)
    return IsvcTarget(**fields)


def stable(version: str = "1") -> Routing:
    return Routing(model="iris", stable_version=version)


def shadow(candidate: str = "2", stable_version: str = "1") -> Routing:
    return Routing(
        model="iris",
        stable_version=stable_version,
        candidate_version=candidate,
        candidate_role="shadow",
        shadow_percent=100,
    )


def canary(weight: int, candidate: str = "2", stable_version: str = "1") -> Routing:
    return Routing(
        model="iris",
        stable_version=stable_version,
        candidate_version=candidate,
        candidate_role="canary",
        candidate_weight=weight,
    )


def build(mode: str, routing: Routing, observed: dict[str, Any] | None = None, **overrides: Any) -> Desired:
    return desired(target(mode, **overrides), routing, URIS, COMPARATOR, observed_primary=observed)


def apply_merge_patch(document: Any, patch: Any) -> Any:
    """RFC 7386, as the API server applies `application/merge-patch+json`."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(document) if isinstance(document, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = apply_merge_patch(result.get(key), value)
    return result


def predictor_of(version: str, *, serve_as: str | None = None) -> dict[str, Any]:
    """The predictor every version gets without overrides: MLflow format on MLServer, V2 protocol;
    beside the primary, the model served under the primary's name (`serve_as`)."""
    predictor: dict[str, Any] = {}
    predictor["labels"] = {"modelrollout.io/version": version}
    predictor["model"] = {
        "name": "kserve-container",
        "modelFormat": {"name": "mlflow"},
        "runtime": "kserve-mlserver",
        "protocolVersion": "v2",
        "storageUri": URIS[version],
    }
    if serve_as is not None:
        predictor["model"]["env"] = [{"name": "MLSERVER_MODEL_NAME", "value": serve_as}]
    return predictor


# ---------------------------------------------------------------------------------------------
# Every document validates against KServe's CRD


ROUTINGS = [stable(), shadow()] + [canary(w) for w in (0, 1, 10, 50, 99, 100)]
OVERRIDES = [{}, {"runtime": "mlserver-custom", "resources": RESOURCES, "service_account": "model-reader"}]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("routing", ROUTINGS, ids=lambda r: f"{r.candidate_role or 'stable'}-{r.candidate_weight}")
@pytest.mark.parametrize("overrides", OVERRIDES, ids=["defaults", "overrides"])
def test_every_document_is_valid_for_kserve(mode: str, routing: Routing, overrides: dict[str, Any]) -> None:
    result = build(mode, routing, **overrides)
    assert_valid(result.primary)
    if result.shadow is not None:
        assert_valid(result.shadow)
    for document in (result.primary, result.shadow):
        if document is None:
            continue
        assert document["apiVersion"] == "serving.kserve.io/v1beta1" and document["kind"] == "InferenceService"
        assert document["metadata"]["namespace"] == "ml"
        assert document["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == mode
        predictors = [document["spec"]["predictor"]] + [c["predictor"] for c in document["spec"].get("canary", [])]
        for predictor in predictors:
            model = predictor["model"]
            assert model["modelFormat"] == {"name": "mlflow"} and model["protocolVersion"] == "v2"
            assert model["name"] == "kserve-container"
            assert model["runtime"] == overrides.get("runtime", "kserve-mlserver")
            assert model["storageUri"] == URIS[predictor["labels"]["modelrollout.io/version"]]
            assert model.get("resources") == overrides.get("resources")
            assert predictor.get("serviceAccountName") == overrides.get("service_account")


@pytest.mark.parametrize("mode", MODES)
def test_metadata_stays_the_same_through_a_rollout(mode: str) -> None:
    # KServe copies InferenceService labels and annotations into the pod template: a change
    # would restart pods (Standard) or make a revision (Knative) for nothing.
    metadata = [build(mode, r).primary["metadata"] for r in [*ROUTINGS, stable("2")]]
    assert all(m == metadata[0] for m in metadata)
    assert metadata[0]["labels"] == {
        "app.kubernetes.io/managed-by": "modelrollout",
        "modelrollout.io/rollout": "iris-rollout",
        "modelrollout.io/role": "primary",
    }
    assert metadata[0]["annotations"] == {"serving.kserve.io/deploymentMode": mode, "modelrollout.io/model": "iris"}


# ---------------------------------------------------------------------------------------------
# Knative: canaryTrafficPercent on the predictor


def test_knative_canary_promote_sequence() -> None:
    specs = [build("Knative", r).primary["spec"] for r in (stable(), canary(10), canary(50), canary(100), stable("2"))]
    assert specs[0] == {"predictor": predictor_of("1")}
    # The candidate's storageUri with N%: the latest ready revision gets N, the rolled-out one the rest.
    assert specs[1] == {"predictor": {"canaryTrafficPercent": 10, **predictor_of("2")}}
    assert specs[2] == {"predictor": {"canaryTrafficPercent": 50, **predictor_of("2")}}
    # Promotion removes the field; the engine's next routing (stable = 2) is the same document.
    assert specs[3] == specs[4] == {"predictor": predictor_of("2")}


def test_knative_canary_at_zero_keeps_the_field() -> None:
    spec = build("Knative", canary(0)).primary["spec"]
    assert spec == {"predictor": {"canaryTrafficPercent": 0, **predictor_of("2")}}


def test_knative_rollback_restores_the_stable_storage_uri() -> None:
    # Without an observed object (a fresh create): the stable storageUri, no field.
    assert build("Knative", stable()).primary["spec"] == {"predictor": predictor_of("1")}


def knative_object(spec: dict[str, Any], *, superseded: str | None, created: str, ready: str, rolled_out: str) -> dict:
    """The primary as read back from the API server: our document plus KServe's status."""
    document = build("Knative", stable()).primary
    document["spec"] = copy.deepcopy(spec)
    document["metadata"].update(resourceVersion="41", generation=7)
    if superseded:
        document["metadata"]["annotations"][SUPERSEDED_REVISION_ANNOTATION] = superseded
    document["status"] = {
        "components": {
            "predictor": {
                "latestCreatedRevision": created,
                "latestReadyRevision": ready,
                "latestRolledoutRevision": rolled_out,
            }
        }
    }
    return document


def test_knative_rollback_keeps_traffic_on_the_stable_revision_until_the_restored_one_is_ready() -> None:
    # Canary at 25%: revision 00002 serves v2, 00001 (v1) is the rolled-out one.
    observed = knative_object(
        {"predictor": {"canaryTrafficPercent": 25, **predictor_of("2")}},
        superseded="iris-predictor-00001",
        created="iris-predictor-00002",
        ready="iris-predictor-00002",
        rolled_out="iris-predictor-00001",
    )
    # Tick 1, rollback: v1's storageUri, and 0% to the latest (ready = the candidate) revision,
    # 100% to the rolled-out stable one — dropping the field now would give the candidate 100%.
    first = build("Knative", stable(), observed).primary
    assert first["spec"] == {"predictor": {"canaryTrafficPercent": 0, **predictor_of("1")}}
    assert first["metadata"]["annotations"][SUPERSEDED_REVISION_ANNOTATION] == "iris-predictor-00002"
    assert merge_patch(observed, first) == {
        "metadata": {
            "annotations": {SUPERSEDED_REVISION_ANNOTATION: "iris-predictor-00002"},
            "resourceVersion": "41",
        },
        "spec": {
            "predictor": {
                "canaryTrafficPercent": 0,
                "labels": {"modelrollout.io/version": "1"},
                "model": {"storageUri": URIS["1"]},
            }
        },
    }
    observed = apply_merge_patch(observed, merge_patch(observed, first))
    # Tick 2: KServe has not made the new revision yet; tick 3: made, not ready. Nothing to send.
    for created, ready in (
        ("iris-predictor-00002", "iris-predictor-00002"),
        ("iris-predictor-00003", "iris-predictor-00002"),
    ):
        observed["status"]["components"]["predictor"].update(latestCreatedRevision=created, latestReadyRevision=ready)
        assert merge_patch(observed, build("Knative", stable(), observed).primary) is None
    # Tick 4: the restored revision is ready: drop the field, it takes 100%.
    observed["status"]["components"]["predictor"]["latestReadyRevision"] = "iris-predictor-00003"
    final = build("Knative", stable(), observed).primary
    assert final["spec"] == {"predictor": predictor_of("1")}
    assert merge_patch(observed, final) == {
        "metadata": {"resourceVersion": "41"},
        "spec": {"predictor": {"canaryTrafficPercent": None}},
    }


def test_knative_promotion_drops_the_field_at_once() -> None:
    observed = knative_object(
        {"predictor": {"canaryTrafficPercent": 50, **predictor_of("2")}},
        superseded="iris-predictor-00001",
        created="iris-predictor-00002",
        ready="iris-predictor-00002",
        rolled_out="iris-predictor-00001",
    )
    for routing in (canary(100), stable("2")):
        document = build("Knative", routing, observed).primary
        assert document["spec"] == {"predictor": predictor_of("2")}
        # The storageUri did not change: the superseded revision stays recorded as it was.
        assert document["metadata"]["annotations"][SUPERSEDED_REVISION_ANNOTATION] == "iris-predictor-00001"
        assert merge_patch(observed, document) == {
            "metadata": {"resourceVersion": "41"},
            "spec": {"predictor": {"canaryTrafficPercent": None}},
        }


def test_knative_new_storage_uri_records_the_revision_it_supersedes() -> None:
    observed = knative_object(
        {"predictor": predictor_of("1")},
        superseded=None,
        created="iris-predictor-00004",
        ready="iris-predictor-00004",
        rolled_out="iris-predictor-00004",
    )
    document = build("Knative", canary(10), observed).primary
    assert document["metadata"]["annotations"][SUPERSEDED_REVISION_ANNOTATION] == "iris-predictor-00004"
    assert document["spec"]["predictor"]["canaryTrafficPercent"] == 10  # not held: a canary, not a rollback


def test_knative_shadow_service_records_its_superseded_revision_too() -> None:
    # A newer candidate replaces the one in shadow: the shadow InferenceService changes storageUri.
    observed = build("Knative", shadow(candidate="3")).shadow
    assert observed is not None
    observed["status"] = {"components": {"predictor": {"latestCreatedRevision": "iris-shadow-predictor-00001"}}}
    result = desired(target(), shadow(candidate="2"), URIS, COMPARATOR, observed_shadow=observed)
    assert result.shadow is not None
    annotations = result.shadow["metadata"]["annotations"]
    assert annotations[SUPERSEDED_REVISION_ANNOTATION] == "iris-shadow-predictor-00001"


def test_standard_mode_needs_no_revision_bookkeeping() -> None:
    # Standard-mode readiness goes by Deployment names and generations, not Knative revisions.
    observed = build("Standard", stable()).primary
    observed["status"] = {"components": {"predictor": {"latestCreatedRevision": "whatever"}}}
    document = build("Standard", canary(10), observed).primary
    assert SUPERSEDED_REVISION_ANNOTATION not in document["metadata"]["annotations"]


# ---------------------------------------------------------------------------------------------
# Standard: a second InferenceService and the route's weights (controller/kserve/standard.py)


def test_standard_canary_promote_sequence() -> None:
    results = [build("Standard", r) for r in (stable(), canary(10), canary(50), canary(100), stable("2"))]
    v1, v2 = predictor_of("1"), predictor_of("2")
    # The primary keeps the stable, and is never named or given spec.canary (no release splits by it).
    assert [r.primary["spec"] for r in results] == [{"predictor": v1}] * 3 + [{"predictor": v2}] * 2
    assert [r.canary is not None for r in results] == [False, True, True, True, False]
    for result in results[1:4]:
        assert result.canary is not None and result.canary["metadata"]["name"] == "iris-canary"
        assert result.canary["metadata"]["labels"]["modelrollout.io/role"] == "canary"
        assert result.canary["spec"] == {"predictor": predictor_of("2", serve_as="iris")}  # the primary's path works
        assert result.baseline is None and result.shadow is None


def test_standard_rollback_leaves_the_primary_as_it_was() -> None:
    during = build("Standard", canary(50)).primary
    after = build("Standard", stable()).primary
    assert merge_patch(during, after) is None  # nothing to write: the route's weight is all there is


def test_standard_promotion_patch_changes_the_storage_uri_only() -> None:
    during = build("Standard", canary(50)).primary
    during["metadata"]["resourceVersion"] = "9"
    during["spec"]["predictor"]["name"] = "main"  # the user's own name stays
    patch = merge_patch(during, build("Standard", canary(100)).primary)
    assert patch == {
        "metadata": {"resourceVersion": "9"},
        "spec": {"predictor": {"labels": {"modelrollout.io/version": "2"}, "model": {"storageUri": URIS["2"]}}},
    }


def test_long_names_that_cannot_name_kubernetes_objects() -> None:
    odd = {**URIS, "2/b": "s3://x/2"}
    with pytest.raises(ValueError, match="version '2/b' cannot be a label value"):
        desired(target("Knative"), canary(10, candidate="2/b"), odd, None)


# ---------------------------------------------------------------------------------------------
# Shadow: a separate <name>-shadow InferenceService; the logger on the primary (Knative) or on a
# baseline copy of the stable (Standard)


def test_shadow_role_knative() -> None:
    result = build("Knative", shadow())
    assert result.primary["spec"] == {"predictor": {**predictor_of("1"), "logger": shadow_logger(COMPARATOR)}}
    assert result.shadow is not None
    assert result.shadow["metadata"]["name"] == shadow_name("iris") == "iris-shadow"
    assert result.shadow["metadata"]["labels"]["modelrollout.io/role"] == "shadow"
    # the candidate, no logger, no split, serving the model under the primary's name
    assert result.shadow["spec"] == {"predictor": predictor_of("2", serve_as="iris")}
    # Leaving the shadow role removes the logger and the shadow InferenceService.
    after = build("Knative", canary(10))
    assert after.shadow is None
    assert "logger" not in after.primary["spec"]["predictor"]
    assert merge_patch(result.primary, after.primary)["spec"]["predictor"]["logger"] is None


def test_shadow_role_standard_logs_from_a_baseline_and_never_touches_the_primary() -> None:
    result = build("Standard", shadow())
    assert result.primary["spec"] == {"predictor": predictor_of("1")}
    assert result.shadow is not None and result.shadow["spec"] == {"predictor": predictor_of("2", serve_as="iris")}
    assert result.baseline is not None and result.baseline["metadata"]["name"] == "iris-baseline"
    assert result.baseline["metadata"]["labels"]["modelrollout.io/role"] == "baseline"
    baseline = {**predictor_of("1", serve_as="iris"), "logger": shadow_logger(COMPARATOR)}
    assert result.baseline["spec"] == {"predictor": baseline}
    assert merge_patch(build("Standard", stable()).primary, result.primary) is None


# ---------------------------------------------------------------------------------------------
# Patches


def test_patch_leaves_server_defaults_and_foreign_metadata_alone() -> None:
    document = build("Knative", canary(25), resources={"limits": {"cpu": "1"}}).primary
    current = copy.deepcopy(document)
    current["metadata"]["labels"]["team"] = "fraud"
    current["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"] = "{}"
    current["spec"]["predictor"]["minReplicas"] = 2
    current["spec"]["predictor"]["model"]["resources"]["requests"] = {"cpu": "1", "memory": "2Gi"}  # KServe's webhook
    assert merge_patch(current, document) is None
    # A real change sends only what changed, and nothing it does not own.
    patch = merge_patch(current, build("Knative", canary(50), resources={"limits": {"cpu": "1"}}).primary)
    assert patch == {"spec": {"predictor": {"canaryTrafficPercent": 50}}}


def test_patch_replaces_an_owned_object_whole_and_removes_our_stale_keys() -> None:
    document = build("Knative", shadow()).primary
    current = copy.deepcopy(document)
    current["spec"]["predictor"]["logger"] = {"mode": "request", "url": "http://old", "marshallerUrl": "http://m"}
    current["spec"]["predictor"]["sklearn"] = {"storageUri": "gs://old"}  # an adopted, old-style predictor
    current["metadata"]["annotations"]["modelrollout.io/obsolete"] = "x"
    patch = merge_patch(current, document)
    assert patch == {
        "metadata": {"annotations": {"modelrollout.io/obsolete": None}},
        "spec": {
            "predictor": {
                "logger": {"mode": "all", "url": COMPARATOR, "metadataHeaders": ["X-Request-Id"], "marshallerUrl": None},
                "sklearn": None,
            }
        },
    }
    assert merge_patch(apply_merge_patch(current, patch), document) is None


def test_patch_refuses_another_object() -> None:
    current = build("Knative", stable()).primary
    with pytest.raises(ValueError, match="current is ml/iris but want is ml/iris-shadow"):
        merge_patch(current, build("Knative", shadow()).shadow)


def test_patch_content_type_is_json_merge_patch() -> None:
    assert PATCH_CONTENT_TYPE == "application/merge-patch+json"


def _kserve_defaults(document: dict[str, Any]) -> dict[str, Any]:
    """What KServe's webhook and other tools add after a write: must not cause another patch."""
    document = copy.deepcopy(document)
    document["metadata"].setdefault("labels", {})["team"] = "fraud"
    document["metadata"]["resourceVersion"] = str(int(document["metadata"].get("resourceVersion", "0")) + 1)
    model = document["spec"]["predictor"].setdefault("model", {})
    model.setdefault("resources", {}).setdefault("requests", {"cpu": "1", "memory": "2Gi"})
    return document


routings = st.one_of(
    st.builds(stable, st.sampled_from(["1", "2"])),
    st.builds(shadow, st.just("3"), st.sampled_from(["1", "2"])),
    st.builds(canary, st.integers(0, 100), st.just("3"), st.sampled_from(["1", "2"])),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    mode=st.sampled_from(MODES),
    steps=st.lists(routings, min_size=1, max_size=6),
    overrides=st.sampled_from(OVERRIDES),
)
def test_patches_reach_every_desired_state(mode: str, steps: list[Routing], overrides: dict[str, Any]) -> None:
    the_target = target(mode, **overrides)
    current: dict[str, Any] | None = None
    for routing in steps:
        want = desired(the_target, routing, URIS, COMPARATOR, observed_primary=current).primary
        if current is None:
            current = _kserve_defaults(want)  # created
        else:
            patch = merge_patch(current, want)
            if patch is not None:
                current = _kserve_defaults(apply_merge_patch(current, patch))
        assert_valid(current)
        # Everything we asked for is there; a second look finds nothing to send.
        again = desired(the_target, routing, URIS, COMPARATOR, observed_primary=current).primary
        assert merge_patch(current, again) is None
        owned = {k: v for k, v in current["spec"].items() if k in ("predictor", "canary")}
        assert _subset(again["spec"], owned)
        assert ("canary" in current["spec"]) == ("canary" in again["spec"])
        assert ("logger" in current["spec"]["predictor"]) == ("logger" in again["spec"]["predictor"])
        assert current["metadata"]["labels"]["team"] == "fraud"


def _subset(small: Any, big: Any) -> bool:
    if isinstance(small, dict):
        return isinstance(big, dict) and all(k in big and _subset(v, big[k]) for k, v in small.items())
    if isinstance(small, list):
        return isinstance(big, list) and len(small) == len(big) and all(map(_subset, small, big))
    return small == big


# ---------------------------------------------------------------------------------------------
# Bad input: a ValueError naming the problem


@pytest.mark.parametrize(
    ("uris", "routing", "message"),
    [
        ({**URIS, "1": ""}, stable(), "storage URI of the stable version '1' is empty"),
        ({**URIS, "1": "   "}, stable(), "storage URI of the stable version '1' is empty"),
        ({"1": URIS["1"]}, canary(10), "storage_uris has no entry for the candidate version '2'"),
        ({"2": URIS["2"]}, canary(10), "storage_uris has no entry for the stable version '1'"),
        ({**URIS, "2": "models:/iris@challenger"}, canary(10), "KServe cannot fetch models: URIs and an alias moves"),
        ({**URIS, "2": "mlflow-artifacts:/1/models/m-1/artifacts"}, shadow(), "KServe cannot fetch mlflow-artifacts:"),
        ({**URIS, "2": "/mnt/models/iris"}, canary(10), "storage URI of the candidate version '2' has no scheme"),
        ({**URIS, "2": "s3://bucket/my model"}, canary(10), "contains whitespace"),
        ([("1", URIS["1"])], stable(), "storage_uris must map versions to URIs"),
    ],
)
def test_bad_storage_uris(uris: Any, routing: Routing, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        desired(target(), routing, uris, COMPARATOR)


def test_bad_routing() -> None:
    with pytest.raises(ValueError, match="routing has no stable version"):
        desired(target(), Routing(model="iris", stable_version=None), URIS, None)
    # Routing refuses a weight out of range itself; one forced past its check is refused here too.
    with pytest.raises(ValueError, match="candidate_weight must be an integer from 0 to 100, got 101"):
        Routing(model="iris", stable_version="1", candidate_version="2", candidate_role="canary", candidate_weight=101)
    forced = canary(50)
    object.__setattr__(forced, "candidate_weight", 101)
    with pytest.raises(ValueError, match="routing.candidate_weight must be an integer from 0 to 100, got 101"):
        desired(target(), forced, URIS, None)
    with pytest.raises(ValueError, match="routing must be a controller.platform.Routing"):
        desired(target(), {"stable_version": "1"}, URIS, None)  # type: ignore[arg-type]


def test_observed_objects_must_be_the_targets() -> None:
    other = build("Knative", stable()).primary
    other["metadata"]["name"] = "fraud"
    with pytest.raises(ValueError, match="observed object ml/fraud is not ml/iris"):
        build("Knative", stable(), other)
    with pytest.raises(ValueError, match="observed object ml/iris is not ml/iris-shadow"):
        desired(target(), shadow(), URIS, COMPARATOR, observed_shadow=build("Knative", stable()).primary)


@pytest.mark.parametrize("url", [None, "", "ftp://x/events", "http://", "comparator:8080"])
def test_shadow_needs_a_comparator_url(url: str | None) -> None:
    with pytest.raises(ValueError, match="the shadow role needs comparator_url"):
        desired(target(), shadow(), URIS, url)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            {"deployment_mode": "Serverless"},
            "must be 'Knative' or 'Standard', got 'Serverless' \\(now called 'Knative'\\)",
        ),
        ({"deployment_mode": "RawDeployment"}, "\\(now called 'Standard'\\)"),
        ({"name": "Iris"}, "target.name 'Iris' is not a valid InferenceService name"),
        ({"name": "1iris"}, "starting with a letter"),
        ({"name": "a" * 57}, "at most 56"),
        ({"namespace": "ML"}, "target.namespace 'ML'"),
        ({"rollout": ""}, "target.rollout '' cannot be a label value"),
        ({"rollout": "r" * 64}, "cannot be a label value"),
        ({"runtime": "Kserve MLServer"}, "target.runtime 'Kserve MLServer' is not a valid Kubernetes object name"),
        ({"service_account": "sa/x"}, "target.service_account"),
        (
            {"resources": {"requests": {"cpu": "lots"}}},
            "target.resources.requests.cpu is not a Kubernetes quantity: 'lots'",
        ),
        ({"resources": {"limits": {"memory": True}}}, "target.resources.limits.memory is not a Kubernetes quantity"),
        ({"resources": {"request": {"cpu": "1"}}}, "target.resources has unknown key 'request'"),
        ({"resources": {"limits": "1"}}, "target.resources.limits must map resource names to quantities"),
        ({"resources": ["cpu"]}, "target.resources must be a mapping"),
    ],
)
def test_bad_targets(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        target(**overrides)


def test_target_is_immutable_and_keeps_a_copy_of_resources() -> None:
    resources = {"limits": {"cpu": "1"}}
    the_target = target(resources=resources)
    resources["limits"]["cpu"] = "64"
    assert the_target.resources == {"limits": {"cpu": "1"}}
    with pytest.raises(dataclasses.FrozenInstanceError):
        the_target.name = "other"  # type: ignore[misc]


def test_documents_are_fresh_objects() -> None:
    # The caller may mutate what it gets (e.g. add resourceVersion) without touching the next build.
    first, second = build("Knative", canary(10)), build("Knative", canary(10))
    first.primary["spec"]["predictor"]["model"]["storageUri"] = "s3://changed"
    assert second.primary["spec"]["predictor"]["model"]["storageUri"] == URIS["2"]
    assert list(first.primary) == ["apiVersion", "kind", "metadata", "spec"]
