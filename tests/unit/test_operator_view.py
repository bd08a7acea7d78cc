"""The operator at rest: objects read from the watches' view, no write that changes nothing, a stale
write still refused, and a rollout woken when one of its InferenceServices changes status.

The operator's calls go to a fake CustomObjectsApi that keeps one ModelRollout as the API server
would (a resourceVersion that grows per write, 409 for a patch carrying an older one) and counts
every call; `reconcile` itself is replaced by a stand-in that saves the status it is told to.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

import pytest
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from canary.decision.spec import RolloutStatus
from controller.kube import operator as operator_module
from controller.kube.commands import COMMAND_ANNOTATION, COMMAND_ID_ANNOTATION
from controller.kube.object_view import GONE_KEPT_S, ObjectView, resource_version_order
from controller.kube.operator import OperatorConfig, RolloutOperator
from tests.kube.patches import merge_patch as apply_merge_patch

NS, NAME = "ml", "iris"
T0 = datetime(2026, 11, 28, 12, 0, tzinfo=timezone.utc)


def meta(name: str, version: int | str, namespace: str = NS) -> dict[str, Any]:
    return {"name": name, "namespace": namespace, "resourceVersion": str(version)}


# -- the view ------------------------------------------------------------------------------------


def test_resource_versions_order_as_kep_5504_integers_and_otherwise_not_at_all() -> None:
    assert resource_version_order("9", "10") == -1  # by value, not as strings
    assert resource_version_order("10", "10") == 0
    assert resource_version_order("123456789012345678901", "99") == 1
    for a, b in [("abc", "1"), ("01", "1"), ("", "1"), (None, "1"), ("1", None), ("1.5", "1")]:
        assert resource_version_order(a, b) is None, (a, b)


def test_a_newer_copy_replaces_an_older_one_and_never_the_reverse() -> None:
    view = ObjectView()
    assert view.observe({"metadata": meta("a", 5), "spec": {"x": 1}}).kept
    # The answer to our own write (rv 7), then the watch's event from before it (rv 6) arrives late.
    assert view.observe({"metadata": meta("a", 7), "spec": {"x": 3}}).kept
    late = view.observe({"metadata": meta("a", 6), "spec": {"x": 2}})
    assert not late.kept and late.previous is not None
    assert view.get(NS, "a") == {"metadata": meta("a", 7), "spec": {"x": 3}}
    # The watch's echo of our write (the same version) is kept, and changes nothing.
    echo = view.observe({"metadata": meta("a", 7), "spec": {"x": 3}})
    assert echo.kept and echo.previous == view.get(NS, "a")
    assert view.get("other", "a") is None and len(view) == 1


def test_a_copy_is_the_views_own_the_source_may_change_afterwards() -> None:
    view = ObjectView()
    source = {"metadata": meta("a", 1), "status": {"ready": False}}
    view.observe(source)
    source["status"]["ready"] = True
    assert view.get(NS, "a")["status"] == {"ready": False}  # type: ignore[index]


def test_versions_that_cannot_be_ordered_let_the_latest_arrival_win() -> None:
    view = ObjectView()
    view.observe({"metadata": meta("a", "b7"), "spec": 1})
    assert view.observe({"metadata": meta("a", "a1"), "spec": 2}).kept
    assert view.get(NS, "a")["spec"] == 2  # type: ignore[index]


def test_a_deleted_object_is_not_brought_back_by_an_event_from_before_the_deletion() -> None:
    view = ObjectView()
    view.observe({"metadata": meta("a", 5)})
    assert view.forget(NS, "a", "8") == {"metadata": meta("a", 5)}
    assert view.get(NS, "a") is None
    assert not view.observe({"metadata": meta("a", 6)}).kept  # a MODIFIED still on its way
    assert not view.observe({"metadata": meta("a", 8)}).kept
    assert view.observe({"metadata": meta("a", 9)}).kept  # made again since: a new object
    assert view.get(NS, "a") == {"metadata": meta("a", 9)}
    # A deletion older than the copy held is of the object before this one: the copy stays.
    assert view.forget(NS, "a", "8") is None and view.get(NS, "a") is not None
    # Deleted with no version known: at the version held.
    assert view.forget(NS, "a") is not None
    assert not view.observe({"metadata": meta("a", 9)}).kept


def test_deletions_are_remembered_for_a_while_not_for_ever() -> None:
    """A long-lived operator sees objects deleted all the time: their records must not pile up."""
    now = [0.0]
    view = ObjectView(clock=lambda: now[0])
    for i in range(1000):
        view.observe({"metadata": meta(f"isvc-{i}", 10)})
        view.forget(NS, f"isvc-{i}", "11")
        now[0] += 1.0
    assert len(view._gone) <= GONE_KEPT_S + 1, "every deletion ever seen is still held"
    # Recent deletions still keep late events out; one deleted long ago may be made again.
    assert not view.observe({"metadata": meta("isvc-999", 10)}).kept
    assert view.observe({"metadata": meta("isvc-0", 10)}).kept
    # Deleted again: it is the newest record, and the older ones are dropped behind it, never it.
    view.forget(NS, "isvc-0", "12")
    now[0] += GONE_KEPT_S + 1
    view.forget(NS, "other", "1")
    assert set(view._gone) == {(NS, "other")}


def test_a_copy_the_latest_listing_did_not_show_is_doubtful() -> None:
    """kopf lists again after its watch failed and never reports what was deleted meanwhile."""
    now = [100.0]
    view = ObjectView(clock=lambda: now[0])
    view.listed({"metadata": meta("a", 1)})  # the first listing
    view.listed({"metadata": meta("b", 2)})
    view.observe({"metadata": meta("c", 3)})  # created since, seen by the watch
    assert not any(view.doubtful(NS, n) for n in "abc")
    now[0] += 600  # the watch fails; the listing after it shows `a` and `c` only
    view.listed({"metadata": meta("a", 1)})
    now[0] += 1
    view.listed({"metadata": meta("c", 3)})
    assert not view.doubtful(NS, "a") and not view.doubtful(NS, "c")
    assert view.doubtful(NS, "b"), "not shown by the listing: maybe deleted unseen"
    assert not view.doubtful(NS, "nothing"), "nothing held, nothing to doubt"
    view.observe({"metadata": meta("b", 2)})  # read from the API server: it exists after all
    assert not view.doubtful(NS, "b")


# -- the operator --------------------------------------------------------------------------------


class FakeApiServer:
    """CustomObjectsApi for one ModelRollout, as the API server answers; every call is counted."""

    def __init__(self, obj: dict[str, Any]) -> None:
        self.obj = obj
        self.calls: list[str] = []

    def _bump(self) -> dict[str, Any]:
        self.obj["metadata"]["resourceVersion"] = str(int(self.obj["metadata"]["resourceVersion"]) + 1)
        return copy.deepcopy(self.obj)

    def edit(self, change: Callable[[dict[str, Any]], None]) -> None:
        """Someone else's write (a user, kopf): the view has not seen it."""
        change(self.obj)
        self._bump()

    def get_namespaced_custom_object(self, group: str, version: str, namespace: str, plural: str, name: str) -> Any:
        self.calls.append("get")
        return copy.deepcopy(self.obj)

    def patch_namespaced_custom_object_status(
        self, group: str, version: str, namespace: str, plural: str, name: str, body: dict[str, Any], **_: Any
    ) -> Any:
        self.calls.append("patch status")
        sent = (body.get("metadata") or {}).get("resourceVersion")
        if sent and sent != self.obj["metadata"]["resourceVersion"]:
            raise ApiException(status=409, reason="Conflict")
        self.obj["status"] = apply_merge_patch({"status": self.obj.get("status")}, {"status": body["status"]})["status"]
        return self._bump()


def rollout_object() -> dict[str, Any]:
    return {
        "apiVersion": "modelrollout.io/v1alpha1",
        "kind": "ModelRollout",
        "metadata": {**meta(NAME, 10), "generation": 1, "uid": "u-1"},
        "spec": {"model": {"name": "iris"}, "target": {"inferenceService": "iris"}},
    }


@pytest.fixture
def operator() -> RolloutOperator:
    config = OperatorConfig(mlflow_uri="http://127.0.0.1:9", prometheus_url="http://127.0.0.1:9")
    op = RolloutOperator(config, k8s.ApiClient())
    op.custom = FakeApiServer(rollout_object())  # type: ignore[assignment]
    return op


def saving(message: Callable[[], str] | None = None) -> Callable[..., RolloutStatus]:
    """A stand-in for `controller.reconcile.reconcile`: saves the status (with `message()`), returns it."""

    def reconcile(rollout: Any, status: RolloutStatus, snapshot: Any, error: Any, commands: Any, ports: Any, now: Any) -> RolloutStatus:
        if message is not None:
            status.message = message()
        ports.save_status(rollout.metadata.name, status)
        return status

    return reconcile


def test_an_idle_tick_reads_the_view_and_writes_nothing(operator: RolloutOperator, monkeypatch: pytest.MonkeyPatch) -> None:
    api: FakeApiServer = operator.custom  # type: ignore[assignment]
    monkeypatch.setattr(operator_module, "reconcile", saving())
    operator.rollouts.observe(api.obj)  # what kopf's watch handler does
    # First tick: observedGeneration is new, so the status is written, with the version read.
    assert operator.reconcile_once(NS, NAME, now=T0) is not None
    assert api.calls == ["patch status"]
    assert api.obj["status"]["observedGeneration"] == 1
    # The write's answer is the view's copy now: the next ticks decide on it, and it says the same.
    for _ in range(3):
        assert operator.reconcile_once(NS, NAME, now=T0) is not None
    assert api.calls == ["patch status"], "an idle tick made an API request"


def test_timestamps_written_in_another_form_are_no_change(operator: RolloutOperator, monkeypatch: pytest.MonkeyPatch) -> None:
    api: FakeApiServer = operator.custom  # type: ignore[assignment]
    api.obj["status"] = {
        "phase": "Succeeded", "stableVersion": "1", "observedGeneration": 1, "phaseStartedAt": "2026-11-28T12:00:00.000000+00:00",
        "history": [{"time": "2026-11-28T12:00:00Z", "from": "Promoting", "to": "Succeeded", "version": "1"}],
        "unknownToTheEngine": {"kept": True},
    }  # fmt: skip
    operator.rollouts.observe(api.obj)
    monkeypatch.setattr(operator_module, "reconcile", saving())
    operator.reconcile_once(NS, NAME, now=T0)
    assert api.calls == []
    # A real change is written.
    monkeypatch.setattr(operator_module, "reconcile", saving(lambda: "changed"))
    operator.reconcile_once(NS, NAME, now=T0)
    assert api.calls == ["patch status"] and api.obj["status"]["message"] == "changed"


def test_a_status_decided_on_a_stale_copy_is_refused_then_decided_again(
    operator: RolloutOperator, monkeypatch: pytest.MonkeyPatch
) -> None:
    api: FakeApiServer = operator.custom  # type: ignore[assignment]
    operator.rollouts.observe(api.obj)  # rv 10
    api.edit(lambda obj: obj["metadata"].setdefault("annotations", {}).update({"note": "a user's edit"}))  # rv 11, unseen
    woken: list[str] = []
    operator.register_waker((NS, NAME), lambda: woken.append("woken"))
    monkeypatch.setattr(operator_module, "reconcile", saving(lambda: "decided"))

    assert operator.reconcile_once(NS, NAME, now=T0) is None, "a write on a stale copy must not count as saved"
    assert api.calls == ["patch status", "get"]  # refused (409), then read once from the API server
    assert "message" not in (api.obj.get("status") or {})
    assert woken == ["woken"], "the rollout is decided again at once, not at the next tick"
    assert operator.rollouts.get(NS, NAME)["metadata"]["resourceVersion"] == "11"  # type: ignore[index]

    assert operator.reconcile_once(NS, NAME, now=T0) is not None
    assert api.calls[-1] == "patch status" and api.obj["status"]["message"] == "decided"
    assert api.obj["metadata"]["annotations"] == {"note": "a user's edit"}


def test_a_rollout_missing_from_the_view_is_read_once(operator: RolloutOperator, monkeypatch: pytest.MonkeyPatch) -> None:
    api: FakeApiServer = operator.custom  # type: ignore[assignment]
    monkeypatch.setattr(operator_module, "reconcile", saving())
    operator.reconcile_once(NS, NAME, now=T0)
    operator.reconcile_once(NS, NAME, now=T0)
    assert api.calls == ["get", "patch status"]


def isvc(name: str, version: int, ready: bool | None, namespace: str = NS) -> dict[str, Any]:
    obj: dict[str, Any] = {"metadata": meta(name, version, namespace), "spec": {"predictor": {}}}
    if ready is not None:
        obj["status"] = {"conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}
    return obj


def test_a_rollout_is_woken_when_one_of_its_inference_services_changes_status(
    operator: RolloutOperator, monkeypatch: pytest.MonkeyPatch
) -> None:
    api: FakeApiServer = operator.custom  # type: ignore[assignment]
    operator.rollouts.observe(api.obj)
    monkeypatch.setattr(operator_module, "reconcile", saving())
    operator.reconcile_once(NS, NAME, now=T0)  # learns the rollout's target: InferenceService `iris`
    woken: list[int] = []
    operator.register_waker((NS, NAME), lambda: woken.append(1))

    def wakes(event: Callable[[], None]) -> bool:
        before = len(woken)
        event()
        return len(woken) > before

    assert wakes(lambda: operator.inference_service_seen(isvc("iris", 20, ready=False)))  # first seen
    assert not wakes(lambda: operator.inference_service_seen(isvc("iris", 21, ready=False))), "same status"
    assert wakes(lambda: operator.inference_service_seen(isvc("iris", 22, ready=True)))
    assert not wakes(lambda: operator.inference_service_seen(isvc("iris", 21, ready=False))), "older than held"
    # The shadow: created by the operator (its answer kept first), then the watch's echo, then Ready.
    operator.inference_services.observe(isvc("iris-shadow", 30, ready=None))
    assert not wakes(lambda: operator.inference_service_seen(isvc("iris-shadow", 30, ready=None))), "our own write"
    assert wakes(lambda: operator.inference_service_seen(isvc("iris-shadow", 31, ready=True)))
    # Standard mode's second InferenceServices are the rollout's too; other ones are not.
    assert wakes(lambda: operator.inference_service_seen(isvc("iris-canary", 32, ready=True)))
    assert not wakes(lambda: operator.inference_service_seen(isvc("other", 33, ready=True)))
    assert not wakes(lambda: operator.inference_service_seen(isvc("iris", 34, ready=True, namespace="elsewhere")))
    # Deleted (by someone else, say): woken, and gone from the view.
    assert wakes(lambda: operator.inference_service_gone(isvc("iris-shadow", 35, ready=True)))
    assert operator.inference_services.get(NS, "iris-shadow") is None
    # Once the rollout is deleted, its InferenceServices wake nobody.
    torn_down: list[str] = []
    monkeypatch.setattr(operator, "platform", lambda namespace: type("Stub", (), {"teardown": staticmethod(torn_down.append)})())
    operator.on_deleted(NS, NAME)
    assert torn_down == [NAME]
    assert not wakes(lambda: operator.inference_service_seen(isvc("iris", 36, ready=False)))


def test_a_rollout_is_woken_when_its_spec_or_a_command_changes_not_by_its_own_writes(
    operator: RolloutOperator, monkeypatch: pytest.MonkeyPatch
) -> None:
    api: FakeApiServer = operator.custom  # type: ignore[assignment]
    woken: list[int] = []
    operator.register_waker((NS, NAME), lambda: woken.append(1))

    def wakes(change: Callable[[dict[str, Any]], None] | None = None) -> bool:
        """Someone's write (or none), then the watch's event of the object as the API server has it."""
        if change is not None:
            api.edit(change)
        before = len(woken)
        operator.rollout_seen(copy.deepcopy(api.obj))
        return len(woken) > before

    assert not wakes(), "first seen: its daemon is starting and decides on it anyway"
    assert not wakes(), "the same copy again"
    # The operator's own status write: its answer is kept first, so the watch's echo is no change.
    monkeypatch.setattr(operator_module, "reconcile", saving(lambda: "decided"))
    operator.reconcile_once(NS, NAME, now=T0)
    assert not wakes()
    assert not wakes(lambda obj: obj.setdefault("status", {}).update({"message": "someone else's"})), "status only"
    kopfs_bookkeeping = {"modelrollout.io/last-handled-configuration": "{}"}
    assert not wakes(lambda obj: obj["metadata"].setdefault("annotations", {}).update(kopfs_bookkeeping))
    assert wakes(lambda obj: obj["spec"].update({"analysis": {"interval": "30s"}})), "the spec edited"
    assert wakes(lambda obj: obj["metadata"]["annotations"].update({COMMAND_ANNOTATION: "promote", COMMAND_ID_ANNOTATION: "c1"}))
    assert wakes(lambda obj: obj["metadata"]["annotations"].update({COMMAND_ID_ANNOTATION: "c2"})), "the same verb again"
    before = len(woken)
    operator.rollout_seen({**copy.deepcopy(api.obj), "metadata": {**api.obj["metadata"], "resourceVersion": "1"}})
    assert len(woken) == before, "an event older than the copy held"
