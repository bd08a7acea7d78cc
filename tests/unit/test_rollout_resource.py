"""Reading and writing a ModelRollout object, and the command annotations: pure, no cluster."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from canary.decision.engine import Command, RecordEvent
from canary.decision.spec import Condition, Phase, RolloutStatus, SpecError, Weights
from controller.kube.commands import (
    COMMAND_ANNOTATION,
    COMMAND_ID_ANNOTATION,
    clear_patch,
    command_patch,
    read_command,
)
from controller.kube.rollout_resource import (
    EVENT_MESSAGE_MAX,
    SPEC_VALID,
    ResourceError,
    conditions_patch,
    event_body,
    isvc_target,
    parse_status,
    read,
    status_patch,
    status_unchanged,
)
from tests.kube.patches import json_patch as apply_json_patch
from tests.kube.patches import merge_patch as apply_merge_patch

T0 = datetime(2026, 11, 28, 12, 0, tzinfo=timezone.utc)


def obj(spec_overrides: dict | None = None, status: dict | None = None, annotations: dict | None = None) -> dict:
    spec = {
        "model": {"name": "iris"},
        "target": {"inferenceService": "iris", "deploymentMode": "Standard", "httpRoute": "iris-route",
                   "predictor": {"runtime": "kserve-mlserver", "serviceAccountName": "models",
                                 "resources": {"limits": {"memory": "2Gi"}}}},
        "canary": {"steps": [10, 50], "interval": "1m"},
    }  # fmt: skip
    spec.update(spec_overrides or {})
    body = {
        "apiVersion": "modelrollout.io/v1alpha1",
        "kind": "ModelRollout",
        "metadata": {"name": "iris", "namespace": "ml", "uid": "u-1", "resourceVersion": "42",
                     "annotations": annotations or {}},
        "spec": spec,
    }  # fmt: skip
    if status is not None:
        body["status"] = status
    return body


def test_read_gives_spec_status_and_the_version_read() -> None:
    resource = read(obj(status={"phase": "Canary", "step": 1, "stableVersion": "3", "kopf": {"progress": {}}}))
    assert resource.rollout.metadata.namespace == "ml" and resource.resource_version == "42"
    assert resource.status.phase is Phase.CANARY and resource.status.step == 1  # kopf's key ignored


def test_a_missing_status_is_a_fresh_rollout() -> None:
    assert read(obj()).status == RolloutStatus()


@pytest.mark.parametrize(
    ("overrides", "problem"),
    [
        ({"canary": {"steps": [50, 10]}}, "ml/iris: spec.canary.steps: steps must increase"),
        ({"target": None}, "spec.target: required on Kubernetes"),
        ({"model": {"name": "iris", "candidateAlias": "champion"}}, "candidateAlias"),
        ({"unknownField": 1}, "spec.unknownField: unknown field"),
    ],
)
def test_specs_the_api_server_accepts_but_pydantic_refuses_name_the_field(overrides: dict, problem: str) -> None:
    with pytest.raises(SpecError) as err:
        read(obj(overrides))
    assert problem in str(err.value)


def test_an_unreadable_status_says_how_to_start_over() -> None:
    with pytest.raises(ResourceError) as err:
        parse_status({"phase": "Sideways"})
    assert "status.phase" in str(err.value) and "--subresource=status" in str(err.value)


def test_status_patch_writes_everything_and_removes_what_is_now_unset() -> None:
    status = RolloutStatus(phase=Phase.CANARY, step=0, stable_version="1", candidate_version="2",
                           weights=Weights(stable=90, candidate=10))  # fmt: skip
    patch = status_patch(status, "42")
    assert patch["metadata"] == {"resourceVersion": "42"}
    assert patch["status"]["phase"] == "Canary" and patch["status"]["weights"]["candidate"] == 10
    assert patch["status"]["pausedFrom"] is None and patch["status"]["rollbackKind"] is None
    stored = apply_merge_patch({"status": {"pausedFrom": "Shadow", "kopf": {"x": 1}}}, patch)["status"]
    assert "pausedFrom" not in stored and stored["kopf"] == {"x": 1}  # others' keys untouched
    assert parse_status(stored) == status  # round trip


def test_conditions_patch_sets_one_condition_and_keeps_the_others() -> None:
    raw = {"phase": "Canary", "conditions": [
        {"type": "RegistryAvailable", "status": "True", "reason": "Reachable", "message": ""},
        {"type": SPEC_VALID, "status": "False", "reason": "InvalidSpec", "message": "old", "lastTransitionTime": "2026-01-01T00:00:00Z"},
    ]}  # fmt: skip
    condition = Condition(type=SPEC_VALID, status="False", reason="InvalidSpec", message="new", last_transition_time=T0)
    patch = conditions_patch(raw, condition)
    assert set(patch) == {"status"} and set(patch["status"]) == {"conditions"}
    first, second = patch["status"]["conditions"]
    assert first["type"] == "RegistryAvailable"
    assert second["message"] == "new" and second["lastTransitionTime"] == "2026-01-01T00:00:00Z"  # same status
    fixed = Condition(type=SPEC_VALID, status="True", reason="Valid", last_transition_time=T0)
    assert conditions_patch(raw, fixed)["status"]["conditions"][1]["lastTransitionTime"] == "2026-11-28T12:00:00Z"
    assert conditions_patch(None, fixed)["status"]["conditions"][0]["type"] == SPEC_VALID


def test_the_target_carries_the_predictor_overrides() -> None:
    target = isvc_target(read(obj()).rollout)
    assert (target.name, target.namespace, target.deployment_mode, target.rollout) == ("iris", "ml", "Standard", "iris")
    assert target.http_route == "iris-route"
    assert target.runtime == "kserve-mlserver" and target.service_account == "models"
    assert target.resources == {"limits": {"memory": "2Gi"}}


def test_events_name_the_rollout_and_are_cut_to_what_the_api_server_keeps() -> None:
    body = event_body(obj(), RecordEvent("Warning", "RollingBack", "x" * 5000), now=T0)
    assert body["involvedObject"] == {
        "apiVersion": "modelrollout.io/v1alpha1", "kind": "ModelRollout", "name": "iris", "namespace": "ml",
        "uid": "u-1", "resourceVersion": "42",
    }  # fmt: skip
    assert body["type"] == "Warning" and body["reason"] == "RollingBack"
    assert len(body["message"]) == EVENT_MESSAGE_MAX and body["message"].endswith("…")
    assert body["metadata"] == {"generateName": "iris.", "namespace": "ml"} and body["lastTimestamp"] == "2026-11-28T12:00:00Z"


# --- commands ------------------------------------------------------------------------------------


def test_a_command_patch_reads_back_as_the_command() -> None:
    patch = command_patch("promote", full=True, command_id="c-1")
    assert patch == {"metadata": {"annotations": {COMMAND_ANNOTATION: "promote-full", COMMAND_ID_ANNOTATION: "c-1"}}}
    request = read_command(patch["metadata"]["annotations"])
    assert request is not None and request.id == "c-1" and request.command == Command("promote", full=True)
    assert read_command({COMMAND_ANNOTATION: "undo", COMMAND_ID_ANNOTATION: "7"}).command == Command("undo")
    assert read_command({"other": "x"}) is None and read_command(None) is None


def test_command_ids_differ_and_sort_in_time() -> None:
    first = command_patch("pause")["metadata"]["annotations"][COMMAND_ID_ANNOTATION]
    second = command_patch("pause")["metadata"]["annotations"][COMMAND_ID_ANNOTATION]
    assert first < second


@pytest.mark.parametrize(
    ("annotations", "problem"),
    [
        ({COMMAND_ANNOTATION: "promote"}, "has no modelrollout.io/command-id"),
        ({COMMAND_ANNOTATION: "rollback", COMMAND_ID_ANNOTATION: "1"}, "unknown command 'rollback' (one of: promote,"),
        ({COMMAND_ANNOTATION: "abort-full", COMMAND_ID_ANNOTATION: "1"}, "unknown command 'abort-full'"),
    ],
)
def test_bad_commands_are_named(annotations: dict, problem: str) -> None:
    request = read_command(annotations)
    assert request is not None and request.command is None and problem in (request.problem or "")


def test_only_promote_has_a_full_form() -> None:
    with pytest.raises(ValueError, match="only promote"):
        command_patch("abort", full=True)


def test_clearing_removes_the_command_only_if_it_is_still_the_same() -> None:
    annotations = {COMMAND_ANNOTATION: "pause", COMMAND_ID_ANNOTATION: "c-1", "keep": "me"}
    cleared = apply_json_patch({"metadata": {"annotations": dict(annotations)}}, clear_patch("c-1"))
    assert cleared["metadata"]["annotations"] == {"keep": "me"}
    newer = {"metadata": {"annotations": {**annotations, COMMAND_ID_ANNOTATION: "c-2"}}}
    with pytest.raises(ValueError, match="test"):
        apply_json_patch(newer, clear_patch("c-1"))


def test_status_unchanged_compares_what_the_patch_would_write() -> None:
    status = RolloutStatus(phase=Phase.SUCCEEDED, stable_version="1", phase_started_at=T0)
    written = status_patch(status)["status"]
    assert status_unchanged(written, status)
    # The same instant in another form, and keys the engine does not own (kopf's): no change.
    assert status_unchanged({**written, "phaseStartedAt": "2026-11-28T12:00:00.000+00:00", "kopf": {"x": 1}}, status)
    assert not status_unchanged({**written, "phaseStartedAt": "2026-11-28T12:00:01Z"}, status)
    assert not status_unchanged({**written, "message": "something else"}, status)
    assert not status_unchanged(None, status)
    assert status_unchanged(None, RolloutStatus())  # nothing written yet, nothing to write
    assert not status_unchanged({"phase": "NoSuchPhase"}, status)  # unreadable: rewritten
