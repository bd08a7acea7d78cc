"""The operator end to end: `modelrollout operator` as a process, against the Kubernetes API emulator.

Real parts: the operator process (kopf), a real `mlflow server`, a real Prometheus scraping
Knative- and Istio-shaped series, the real shadow comparator, the real `kubectl`. Played: the API
server (the kmock-based emulator, validating every object against its CRD — ours and KServe's),
KServe's controller (`KServeDouble`) and the clients/queue-proxies (`ServingTraffic`), see
tests/fixtures/kserve_stack.py. The operator process and the test's view of its cluster
(`OperatorProcess`, `Stack`) are in tests/fixtures/operator.py, shared with the crash tests.

The last tests check the emulator's record of who called what, then compare the operator's calls
in these runs (one namespace, `-n`) with its ClusterRole in manifests/.
"""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import yaml
from sklearn.linear_model import LogisticRegression

from controller.kube.commands import command_patch
from registry.webhooks import sign
from tests.argocd_health import health
from tests.fixtures.kserve_stack import Comparator, LabelledClients
from tests.fixtures.mlflow import log_sklearn_model
from tests.fixtures.modelserver import fit_logistic, iris, save_sklearn, start_model_servers
from tests.fixtures.operator import (
    GROUP,
    OPERATOR_USER,
    PEERING_GET,
    PLURAL,
    SECRET,
    VERSION,
    WATCHED_GETS,
    Stack,
    cluster_role_triples,
    rbac_check,
    serving_v1,
)
from tests.kube.server import ANONYMOUS, UNKNOWN_TOKEN


@pytest.fixture
def stack(kube_api: Any, kserve_crd: str, httproute_crd: str, modelrollout_crd: str, kube_namespace: str, mlflow_server: Any,
          prometheus_server: Any, knative_exporter: Any, comparator: Comparator, tmp_path: Path) -> Iterator[Stack]:  # fmt: skip
    _, series = knative_exporter
    built = Stack(kube_api, kube_namespace, mlflow_server, prometheus_server, series, comparator, tmp_path)
    try:
        yield built
    finally:
        built.close()


# ---------------------------------------------------------------------------------------------


def test_promote_path_then_undo(stack: Stack, iris_model_uri: str) -> None:
    operator = stack.start_operator(peering=True)  # as installed: kopf peering, one replica acts
    v1, v2 = serving_v1(stack, iris_model_uri)
    stack.alias("challenger", v2)

    # Shadow: a -shadow InferenceService with v2, the primary's logger at the comparator, which
    # knows the shadow's address.
    stack.wait(lambda: stack.phase() == "Shadow", "the rollout entered Shadow")
    shadow = stack.wait(lambda: stack.isvc("iris-shadow"), "the shadow InferenceService exists")
    assert shadow["spec"]["predictor"]["model"]["storageUri"] == stack.uri(v2)
    stack.wait(lambda: stack.predictor().get("logger", {}).get("url") == stack.comparator.url, "the logger points at the comparator")
    admin = stack.comparator.admin_headers  # the comparator's admin API wants the token the operator was given
    assert httpx.get(f"{stack.comparator.url}/admin/shadows").status_code == 401
    registered = stack.wait(lambda: httpx.get(f"{stack.comparator.url}/admin/shadows", headers=admin).json(), "the comparator knows the shadow")
    assert registered[0]["inferenceService"] == "iris" and registered[0]["candidateVersion"] == v2
    # KServe's address of an InferenceService behind Istio's VirtualService (ingress_reconciler.go at v0.20.0)
    assert registered[0]["shadowUrl"] == f"http://iris-shadow.{stack.namespace}.svc.cluster.local"

    # Canary: the weights follow the plan, then the field goes and v2 is champion.
    seen: list[int | None] = []

    def promoted() -> bool:
        percent = stack.predictor().get("canaryTrafficPercent")
        if not seen or seen[-1] != percent:
            seen.append(percent)
        return stack.phase() == "Succeeded"

    stack.wait(promoted, "the rollout succeeded", timeout=90)
    canary_steps = [p for p in seen if p is not None]
    assert canary_steps and canary_steps == sorted(canary_steps) and set(canary_steps) <= {20, 60}, seen
    assert 60 in canary_steps, seen
    predictor = stack.predictor()
    assert "canaryTrafficPercent" not in predictor and "logger" not in predictor
    assert predictor["model"]["storageUri"] == stack.uri(v2)
    assert stack.isvc("iris-shadow") is None
    assert httpx.get(f"{stack.comparator.url}/admin/shadows", headers=admin).json() == []
    assert stack.champion() == v2 and stack.tags(v2)["modelrollout.status"] == "promoted"
    status = stack.status()
    assert [(t["from"], t["to"]) for t in status["history"]] == [
        ("Idle", "Shadow"), ("Shadow", "Canary"), ("Canary", "Canary"), ("Canary", "Promoting"), ("Promoting", "Succeeded"),
    ]  # fmt: skip
    for reason in ("RolloutStarted", "StepAdvanced", "Promoting", "Promoted"):
        stack.wait(lambda: reason in [r for _, r, _ in stack.events()], f"a {reason} event")
    # GitOps: the real kubectl waits on the Promoted condition; Argo CD's health check says Healthy.
    mro = ("modelrollouts.modelrollout.io/iris", "-n", stack.namespace, "--timeout=20s")
    stack.kube_api.kubectl("wait", "--for=condition=Promoted", *mro)
    stack.kube_api.kubectl("wait", "--for=condition=Ready", *mro)
    obj = stack.rollout()
    assert obj["status"]["observedGeneration"] == obj["metadata"]["generation"]
    assert health(obj) == ("Healthy", f"Succeeded: {obj['status']['message']}")
    metrics = httpx.get(f"{operator.url}/metrics").text
    assert 'modelrollout_rollouts{phase="Succeeded"} 1.0' in metrics
    assert 'modelrollout_transitions_total{to="Succeeded"} 1.0' in metrics
    assert "modelrollout_registry_poll_seconds_count" in metrics

    peering = stack.custom.get_namespaced_custom_object("kopf.dev", "v1", stack.namespace, "kopfpeerings", "modelrollout")
    assert peering.get("status"), "the operator keeps its alive-record in the peering object"

    # undo: back to v1 in the InferenceService and in MLflow; v2 marked.
    stack.custom.patch_namespaced_custom_object(GROUP, VERSION, stack.namespace, PLURAL, "iris", command_patch("undo"))
    stack.wait(lambda: stack.phase() == "RolledBack", "the undo finished")
    assert stack.champion() == v1 and stack.predictor()["model"]["storageUri"] == stack.uri(v1)
    assert stack.tags(v2)["modelrollout.status"] == "rolled_back"
    assert "undone by user" in stack.tags(v2)["modelrollout.reason"]
    stack.kube_api.kubectl("wait", "--for=condition=Promoted=False", *mro)
    assert health(stack.rollout())[0] == "Degraded"
    annotations = stack.rollout()["metadata"].get("annotations", {})
    assert "modelrollout.io/command" not in annotations and "modelrollout.io/command-id" not in annotations


@pytest.mark.parametrize("provider", ["knative", "knative-legacy", "istio"])
def test_slo_breach_in_canary_is_rolled_back(stack: Stack, iris_model_uri: str, provider: str) -> None:
    stack.start_operator()
    v1, v2 = serving_v1(stack, iris_model_uri)
    stack.traffic.behave(stack.uri(v2), latency_ms=400)
    stack.custom.patch_namespaced_custom_object(
        GROUP, VERSION, stack.namespace, PLURAL, "iris",
        {"spec": {"shadow": {"enabled": False}, "analysis": {"provider": provider}}},
    )  # fmt: skip
    stack.alias("challenger", v2)
    stack.wait(lambda: stack.predictor().get("canaryTrafficPercent") == 20, "v2 took 20% of the traffic")
    stack.wait(lambda: stack.phase() == "RolledBack", "the rollout was rolled back", timeout=60)
    predictor = stack.predictor()
    assert predictor["model"]["storageUri"] == stack.uri(v1) and "canaryTrafficPercent" not in predictor
    message = stack.status()["message"]
    assert "p95" in message and "failureLimit" in message, message
    assert stack.tags(v2)["modelrollout.status"] == "rolled_back" and "p95" in stack.tags(v2)["modelrollout.reason"]
    assert stack.champion() == v1
    stack.wait(
        lambda: any(kind == "Warning" and reason == "RolledBack" and "p95" in text for kind, reason, text in stack.events()),
        "a Warning event saying why",
    )


def test_a_candidate_never_ready_is_rolled_back_at_the_progress_deadline(stack: Stack, iris_model_uri: str) -> None:
    stack.start_operator()
    v1, v2 = serving_v1(stack, iris_model_uri)
    stack.custom.patch_namespaced_custom_object(
        GROUP, VERSION, stack.namespace, PLURAL, "iris", {"spec": {"progressDeadline": "6s"}}
    )
    stack.kserve.ready = False  # new revisions stay in progress
    stack.alias("challenger", v2)
    stack.wait(lambda: stack.phase() == "RolledBack", "the rollout was rolled back")
    assert "not ready within progressDeadline (6s)" in stack.status()["message"]
    assert stack.isvc("iris-shadow") is None and stack.predictor()["model"]["storageUri"] == stack.uri(v1)


# -- Standard mode: a second InferenceService and the user's HTTPRoute --------------------------


def standard(stack: Stack, rollout: str = "iris") -> dict[str, Any]:
    """Spec overrides for a Standard-mode rollout: its route created, Istio's series for analysis."""
    route = stack.create_route(rollout)
    return {
        "target": {"inferenceService": rollout, "deploymentMode": "Standard", "httpRoute": route},
        "analysis": {"provider": "istio", "metrics": [
            {"name": "p95", "template": "latency_p95", "max": 0.2},
            {"name": "errors", "template": "error_rate", "max": 0.05},
        ]},
    }  # fmt: skip


def test_standard_shadow_canary_promotion_through_the_route(stack: Stack, iris_model_uri: str) -> None:
    stack.start_operator()
    v1, v2 = serving_v1(stack, iris_model_uri, candidate_uri=log_sklearn_model(fit_logistic()), **standard(stack))
    seen: list[tuple[tuple[str, int], ...]] = []

    def promoted() -> bool:
        split = tuple(stack.split())
        if not seen or seen[-1] != split:
            seen.append(split)
        return stack.phase() == "Succeeded"

    stack.alias("challenger", v2)
    stack.wait(promoted, "the Standard rollout succeeded", timeout=120)
    # The shadow's share went to the baseline (the stable with the logger), then the canary steps.
    assert (("iris-predictor", 0), ("iris-baseline-predictor", 100)) in seen, seen
    assert (("iris-predictor", 80), ("iris-canary-predictor", 20)) in seen, seen
    assert (("iris-predictor", 40), ("iris-canary-predictor", 60)) in seen, seen
    stack.wait(lambda: stack.split() == [("iris-predictor", 100)], "the route is the primary's again")
    stack.wait(lambda: stack.isvc("iris-canary") is None, "the canary is gone after the hand-over")
    assert stack.isvc("iris-baseline") is None and stack.isvc("iris-shadow") is None
    assert stack.predictor()["model"]["storageUri"] == stack.uri(v2) and "logger" not in stack.predictor()
    assert stack.champion() == v2
    # No client request failed or reached a starting pod: nothing was routed before it was ready,
    # and the serving primary never got the logger (its Service would have pointed at an agent port).
    assert stack.traffic.failed == {} and stack.traffic.starting == {}, (stack.traffic.failed, stack.traffic.starting)
    assert stack.traffic.served.get("iris-baseline-predictor") and stack.traffic.served.get("iris-canary-predictor")


def test_standard_latency_breach_is_rolled_back_to_the_primary(stack: Stack, iris_model_uri: str) -> None:
    stack.start_operator()
    v1, v2 = serving_v1(stack, iris_model_uri, candidate_uri=log_sklearn_model(fit_logistic()),
                        shadow={"enabled": False}, **standard(stack))  # fmt: skip
    stack.traffic.behave(stack.uri(v2), latency_ms=400)
    stack.alias("challenger", v2)
    stack.wait(lambda: stack.phase() == "RolledBack", "the rollout was rolled back", timeout=60)
    assert "p95" in stack.status()["message"]
    stack.wait(lambda: stack.split() == [("iris-predictor", 100)] and stack.isvc("iris-canary") is None, "the weight back")
    assert stack.predictor()["model"]["storageUri"] == stack.uri(v1) and stack.champion() == v1
    assert stack.traffic.served.get("iris-canary-predictor")  # it did serve, and was measured, before
    assert stack.traffic.failed == {}


@pytest.mark.parametrize("mode", ["Knative", "Standard"])
def test_a_failed_model_load_is_rolled_back_with_kserves_reason(stack: Stack, iris_model_uri: str, mode: str) -> None:
    stack.start_operator()
    spec = standard(stack) if mode == "Standard" else {}
    v1, v2 = serving_v1(stack, iris_model_uri, candidate_uri=log_sklearn_model(fit_logistic()), **spec)
    stack.double.fail_load(stack.uri(v2), "could not find MLmodel in /mnt/models")
    stack.alias("challenger", v2)
    stack.wait(lambda: stack.phase() == "RolledBack", "the rollout was rolled back")
    message = stack.status()["message"]
    assert "ModelLoadFailed: could not find MLmodel" in message, message
    assert stack.isvc("iris-shadow") is None and stack.champion() == v1
    assert stack.traffic.failed == {}


@pytest.mark.parametrize("mode", ["Knative", "Standard"])
def test_a_candidate_slow_to_start_is_waited_for_not_rolled_back(stack: Stack, iris_model_uri: str, mode: str) -> None:
    stack.start_operator()
    spec = standard(stack) if mode == "Standard" else {}
    v1, v2 = serving_v1(stack, iris_model_uri, candidate_uri=log_sklearn_model(fit_logistic()),
                        shadow={"enabled": False}, canary={"steps": [50], "interval": "3s"}, **spec)  # fmt: skip
    # 8 s of starting, longer than two canary intervals, during which Standard's PredictorReady reads
    # False (MinimumReplicasUnavailable) and Knative's Unknown: neither is a failure.
    stack.double.slow_start(stack.uri(v2), seconds=8)
    stack.alias("challenger", v2)
    stack.wait(lambda: stack.status().get("candidateVersion") == v2, "the canary started")
    started = time.monotonic()
    stack.wait(lambda: stack.phase() in ("Succeeded", "RolledBack"), "the rollout ended", timeout=90)
    assert stack.phase() == "Succeeded", stack.status()["message"]
    assert time.monotonic() - started > 6  # it did wait for the start
    assert stack.champion() == v2 and stack.traffic.failed == {} and stack.traffic.starting == {}


@pytest.mark.parametrize("mode", ["Knative", "Standard"])
def test_labelled_feedback_through_the_comparator_rolls_a_worse_shadow_back(stack: Stack, tmp_path: Path, mode: str) -> None:
    """Real clients label their requests by the Ce-Id they sent; KServe's logger (its agent, as a
    double) ids its events by it, from the primary's logged revision (Knative) or the baseline that
    takes the shadow's share of the route (Standard); the comparator scores stable and shadow on those
    labels; the shadow, trained on shuffled labels, is rolled back on accuracy. Real model servers."""
    features, labels = iris()
    poor = LogisticRegression(max_iter=500).fit(features, np.random.default_rng(5).permutation(labels))
    good = fit_logistic()
    stack.start_operator()
    accuracy = {"name": "accuracy", "template": "accuracy", "maxDecrease": "20%", "minSamples": 20}
    if mode == "Standard":
        spec = standard(stack)
        spec["analysis"]["metrics"] = [accuracy]
        percent = 50
    else:
        spec = {"analysis": {"provider": "knative", "metrics": [accuracy, {"name": "errors", "template": "error_rate", "max": 0.05}]}}
        percent = 100
    v1, v2 = serving_v1(stack, log_sklearn_model(good), candidate_uri=log_sklearn_model(poor), progressDeadline="45s",
                        shadow={"enabled": True, "duration": "8s", "percent": percent}, **spec)  # fmt: skip
    stable, shadow = start_model_servers(
        [("iris", save_sklearn(good, tmp_path / "good"), v1), ("iris", save_sklearn(poor, tmp_path / "poor"), v2)], tmp_path
    )
    clients = LabelledClients(stack.api_client, stack.double, stack.namespace, "iris", {stack.uri(v1): stable.url},
                              stack.comparator.url)  # fmt: skip
    try:
        stack.double.serve_at("iris-shadow", shadow.url)  # the comparator replays to the real shadow server
        clients.start()
        stack.alias("challenger", v2)
        stack.wait(lambda: stack.phase() == "RolledBack", "the shadow was rolled back", timeout=90)
    finally:
        clients.stop()
        stable.stop()
        shadow.stop()
    message = stack.status()["message"]
    assert "accuracy" in message, message
    assert stack.tags(v2)["modelrollout.status"] == "rolled_back" and stack.champion() == v1
    # The labels were scored under the ids the clients chose, for both versions.
    assert len(clients.scored) >= 20, (clients.sent, clients.unknown_labels)
    assert all({v["version"] for v in row["versions"]} == {v1, v2} for row in clients.scored[-10:])
    # No client request failed, none reached something still starting (the logger's revision of the
    # stable, or the baseline, took traffic only once ready).
    assert clients.failed == 0 and clients.half_configured == 0, (clients.failed, clients.half_configured)
    assert clients.errors == [] and clients.agent.failed_deliveries == 0
    if mode == "Standard":
        assert stack.traffic.served.get("iris-baseline-predictor"), stack.traffic.served


def test_an_operator_killed_mid_canary_resumes_the_same_step(stack: Stack, iris_model_uri: str) -> None:
    operator = stack.start_operator()
    v1, v2 = serving_v1(stack, iris_model_uri)
    stack.custom.patch_namespaced_custom_object(
        GROUP, VERSION, stack.namespace, PLURAL, "iris",
        {"spec": {"shadow": {"enabled": False}, "canary": {"steps": [20, 60], "interval": "6s"}}},
    )  # fmt: skip
    stack.alias("challenger", v2)
    stack.wait(lambda: stack.status().get("step") == 0 and stack.phase() == "Canary", "canary step 1")
    operator.kill()
    before = stack.status()
    assert before["phase"] == "Canary" and before["step"] == 0
    stack.start_operator()
    stack.wait(lambda: stack.phase() == "Succeeded", "the rollout succeeded after the restart", timeout=90)
    history = [(t["from"], t["to"]) for t in stack.status()["history"]]
    assert history == [("Idle", "Canary"), ("Canary", "Canary"), ("Canary", "Promoting"), ("Promoting", "Succeeded")]
    assert stack.champion() == v2
    # Events are posted after the status is saved: wait for it, then make sure it is not doubled.
    stack.wait(lambda: "Promoted" in [r for _, r, _ in stack.events()], "the Promoted event")
    time.sleep(1.0)
    assert [r for _, r, _ in stack.events()].count("Promoted") == 1


def test_mlflows_webhook_wakes_the_poll_and_bad_deliveries_are_refused(stack: Stack, iris_model_uri: str) -> None:
    operator = stack.start_operator(poll="10m")  # only the start-up poll and webhooks read MLflow
    v1, v2 = serving_v1(stack, iris_model_uri)
    v3 = stack.register(iris_model_uri)
    stack.alias("challenger", v2)
    time.sleep(2.0)
    assert stack.phase() == "Idle", "without a webhook the alias move is seen only at the next poll"

    # Hand-made deliveries: forged, stale, then a good one and its replay.
    body = json.dumps({"entity": "model_version_alias", "action": "created",
                       "data": {"name": stack.model, "alias": "challenger", "version": v2}}).encode()  # fmt: skip

    def deliver(delivery: str, timestamp: int, secret: str = SECRET) -> httpx.Response:
        headers = {
            "content-type": "application/json",
            "x-mlflow-delivery-id": delivery,
            "x-mlflow-timestamp": str(timestamp),
            "x-mlflow-signature": sign(secret, delivery, str(timestamp), body),
        }
        return httpx.post(f"{operator.url}/webhooks/mlflow", content=body, headers=headers)

    now = int(time.time())
    forged = deliver("d-1", now, secret="not-the-secret")
    assert forged.status_code == 401 and "signature" in forged.json()["detail"]
    stale = deliver("d-2", now - 3600)
    assert stale.status_code == 401 and "replay window" in stale.json()["detail"]
    time.sleep(1.0)
    assert stack.phase() == "Idle"
    good = deliver("d-3", now)
    assert good.status_code == 200 and good.json()["status"] == "accepted"
    stack.wait(lambda: stack.phase() == "Shadow", "the webhook woke the poll", timeout=10)
    again = deliver("d-3", now)
    assert again.status_code == 200 and again.json()["duplicate"] is True

    # MLflow's own delivery: a webhook registered in MLflow, the alias moved again -> superseded.
    webhook = stack.mlflow.create_webhook(
        name=f"operator-{stack.namespace}", url=f"{operator.url}/webhooks/mlflow",
        events=["model_version_alias.created"], secret=SECRET,
    )  # fmt: skip
    try:
        time.sleep(1.5)  # past MLflow's webhook cache (MLFLOW_WEBHOOK_CACHE_TTL=1 in the fixture)
        moved = time.monotonic()
        stack.alias("challenger", v3)
        stack.wait(lambda: stack.status().get("candidateVersion") == v3, "MLflow's delivery woke the poll", timeout=15)
        assert time.monotonic() - moved < 15  # the 10-minute poll interval was not waited for
        assert any("superseded" in t["reason"] for t in stack.status()["history"])
        stack.wait(lambda: stack.phase() == "Shadow" and stack.status().get("candidateVersion") == v3, f"v{v3} in its shadow")

        # Flapped: v3 -> v4 -> v3, each move delivered at once. Whatever the operator saw of v4, the
        # alias's last word (v3) is rolled out again, and v4 is accounted for, never dropped unsaid.
        v4 = stack.register(iris_model_uri)
        stack.alias("challenger", v4)
        stack.wait(
            lambda: v4 in (stack.status().get("candidateVersion"), stack.status().get("nextCandidateVersion")),
            f"v{v4} seen (webhook)", timeout=15,
        )  # fmt: skip
        stack.alias("challenger", v3)

        def v3_again() -> bool:
            status = stack.status()
            starts = [t for t in status.get("history", []) if t.get("version") == v3 and t["to"] == "Shadow"]
            return status.get("phase") == "Shadow" and status.get("candidateVersion") == v3 and len(starts) == 2

        stack.wait(v3_again, f"v{v3} in its shadow again", timeout=30)
        assert stack.status()["observedCandidateVersion"] == v3
        tags = stack.tags(v3)
        assert tags["modelrollout.status"] == "skipped" and f"moved to v{v4}" in tags["modelrollout.reason"], tags
        v4_tags = stack.tags(v4)
        if any(t.get("version") == v4 for t in stack.status()["history"]):
            assert v4_tags["modelrollout.status"] == "skipped", v4_tags  # started, then superseded by v3
        else:
            assert "modelrollout.status" not in v4_tags, v4_tags
            stack.wait(
                lambda: any(r == "CandidateSkipped" and m.startswith(f"v{v4} skipped") for _, r, m in stack.events()),
                f"the event saying v{v4} was skipped",
            )  # fmt: skip
    finally:
        stack.mlflow.delete_webhook(webhook.webhook_id)


def test_an_invalid_spec_is_reported_and_the_state_kept(stack: Stack, iris_model_uri: str) -> None:
    # Also: with --log-format json every line the operator writes is one JSON record.
    operator = stack.start_operator(extra_args=("--log-format", "json", "--log-level", "debug"))
    v1, _ = serving_v1(stack, iris_model_uri)
    # The schema accepts decreasing steps; only pydantic refuses them.
    stack.custom.patch_namespaced_custom_object(
        GROUP, VERSION, stack.namespace, PLURAL, "iris", {"spec": {"canary": {"steps": [50, 20]}}}
    )

    def condition() -> dict[str, Any] | None:
        return next((c for c in stack.status().get("conditions", []) if c["type"] == "SpecValid"), None)

    stack.wait(lambda: (condition() or {}).get("status") == "False", "SpecValid=False")
    assert "spec.canary.steps: steps must increase" in condition()["message"]
    assert stack.status()["stableVersion"] == v1  # the state is kept
    stack.wait(lambda: any(reason == "InvalidSpec" for _, reason, _ in stack.events()), "an InvalidSpec event")
    state, message = health(stack.rollout())
    assert state == "Degraded" and "steps must increase" in message
    stack.custom.patch_namespaced_custom_object(
        GROUP, VERSION, stack.namespace, PLURAL, "iris", {"spec": {"canary": {"steps": [20, 50]}}}
    )
    stack.wait(lambda: (condition() or {}).get("status") == "True", "SpecValid=True once fixed")
    records = [json.loads(line) for line in operator.log_path.read_text().splitlines()]
    assert records and all({"time", "level", "logger", "message"} <= r.keys() for r in records)
    assert {"debug", "info", "warning"} <= {r["level"] for r in records}  # --log-level debug let debug through
    assert any("steps must increase" in r["message"] for r in records if r["level"] == "warning")


def test_kubectl_plugin_verbs_drive_the_operator(stack: Stack, iris_model_uri: str) -> None:
    # A tick longer than every wait below: a command, a spec edit, a new version and an InferenceService
    # turning Ready each wake the rollout, so nothing here waits for a tick.
    stack.start_operator(extra_args=("--tick", "5m"))
    v1, v2 = serving_v1(stack, iris_model_uri)
    stack.custom.patch_namespaced_custom_object(
        GROUP, VERSION, stack.namespace, PLURAL, "iris",
        {"spec": {"shadow": {"enabled": False}, "canary": {"steps": [20, 60], "interval": "1h"}, "progressDeadline": "2h"}},
    )  # fmt: skip
    stack.alias("challenger", v2)
    stack.wait(lambda: stack.predictor().get("canaryTrafficPercent") == 20, "canary step 1 (20%)")

    def kubectl(*args: str) -> subprocess.CompletedProcess[str]:
        result = stack.plugin(*args)
        assert result.returncode == 0, result.stderr
        return result

    kubectl("pause", "iris")
    stack.wait(lambda: stack.phase() == "Paused", "paused")
    refused = stack.plugin("pause", "iris")
    assert refused.returncode == 2 and "pause: not possible in phase Paused" in refused.stderr
    kubectl("resume", "iris")
    stack.wait(lambda: stack.phase() == "Canary", "resumed")
    kubectl("promote", "iris")  # one step: the hour-long interval is not waited for
    stack.wait(lambda: stack.predictor().get("canaryTrafficPercent") == 60, "canary step 2 (60%)")
    kubectl("promote", "iris", "--full")
    watched = stack.plugin("status", "iris", "--watch", "--timeout", "60s")
    assert watched.returncode == 0, watched.stdout + watched.stderr
    assert "Succeeded" in watched.stdout and stack.champion() == v2
    shown = kubectl("status", "iris").stdout
    for text in ("Succeeded", "Promoted", "step promoted by user", "promoted by user (full)"):
        assert text in shown, shown
    listed = stack.kube_api.kubectl("get", "mro", "-n", stack.namespace).stdout
    assert "Succeeded" in listed.splitlines()[1] and stack.model in listed


# -- RBAC from the calls ----------------------------------------------------------------------
# These read what the emulator recorded for the operator processes of the tests above (by the
# bearer token of their kubeconfig, see tests/fixtures/operator.py): xdist runs a file's tests
# in order on one worker, so they come last. The cluster-wide mode, as installed, is checked
# the same way in tests/reliability/test_operator_crash.py.

# Granted by the ClusterRole, not called by an operator watching one namespace, and why.
UNUSED_NAMESPACED = {
    **{("kopf.dev", "clusterkopfpeerings", verb): "cluster-wide peering (`--all-namespaces`): tests/reliability/test_operator_crash.py"
       for verb in ("get", "list", "watch", "patch")},
    ("kopf.dev", "kopfpeerings", "get"): PEERING_GET,
    **WATCHED_GETS,
}  # fmt: skip


def test_the_emulator_records_each_caller_and_the_rbac_verb_of_each_call(kube_api: Any, tmp_path: Path) -> None:
    """The recorder the RBAC test relies on: who (by bearer token) and what (verb, resource)."""
    tag = uuid.uuid4().hex[:8]
    user = f"system:serviceaccount:recorder:{tag}"
    kubeconfig = yaml.safe_load(kube_api.kubeconfig_for(user, tmp_path / "kubeconfig").read_text())
    token = kubeconfig["users"][0]["user"]["token"]
    assert kube_api.kubeconfig_for(user, tmp_path / "again").read_text() == (tmp_path / "kubeconfig").read_text()
    collection = "/apis/modelrollout.io/v1alpha1/namespaces/nowhere/modelrollouts"
    headers = {"Authorization": f"Bearer {token}", "User-Agent": f"recorder-{tag}/1.0"}
    with httpx.Client(base_url=kube_api.url, timeout=10.0, headers=headers) as http:
        for method, path, params in [
            ("GET", collection, {}),
            ("GET", collection, {"watch": "true", "timeoutSeconds": "1"}),
            ("GET", "/apis/modelrollout.io/v1alpha1/watch/namespaces/nowhere/modelrollouts", {"timeoutSeconds": "1"}),
            ("GET", f"{collection}/x", {}),
            ("GET", "/apis/modelrollout.io/v1alpha1/modelrollouts", {}),  # every namespace: cluster-scoped
            ("POST", collection, {}),
            ("PUT", f"{collection}/x", {}),
            ("PATCH", f"{collection}/x/status", {}),
            ("DELETE", f"{collection}/x", {}),
            ("DELETE", collection, {}),
            ("GET", "/apis", {}),
        ]:
            # Refused (404, 400...) or not, each is a call RBAC would have authorised first.
            http.request(method, path, params=params, json={} if method in ("POST", "PUT", "PATCH") else None)
    assert {(c.method, c.verb, c.group, c.resource, c.namespaced) for c in kube_api.calls(user)} == {
        ("GET", "list", "modelrollout.io", "modelrollouts", True),
        ("GET", "watch", "modelrollout.io", "modelrollouts", True),
        ("GET", "get", "modelrollout.io", "modelrollouts", True),
        ("GET", "list", "modelrollout.io", "modelrollouts", False),
        ("POST", "create", "modelrollout.io", "modelrollouts", True),
        ("PUT", "update", "modelrollout.io", "modelrollouts", True),
        ("PATCH", "patch", "modelrollout.io", "modelrollouts/status", True),
        ("DELETE", "delete", "modelrollout.io", "modelrollouts", True),
        ("DELETE", "deletecollection", "modelrollout.io", "modelrollouts", True),
        ("GET", "get", None, "/apis", False),
    }
    assert {c.agent for c in kube_api.calls(user)} == {f"recorder-{tag}"}
    assert token not in repr(kube_api.calls())  # the record names users, never their tokens

    # Without a token, or with one the server never handed out: not this user's calls.
    httpx.get(f"{kube_api.url}/apis", headers={"User-Agent": f"anonymous-{tag}"}, timeout=10.0)
    httpx.get(f"{kube_api.url}/apis", headers={"Authorization": f"Bearer {token}x", "User-Agent": f"forged-{tag}"}, timeout=10.0)
    agents = {c.agent: c.user for c in kube_api.calls() if c.agent in (f"anonymous-{tag}", f"forged-{tag}")}
    assert agents == {f"anonymous-{tag}": ANONYMOUS, f"forged-{tag}": UNKNOWN_TOKEN}
    assert len(kube_api.calls(user)) == 10


def test_the_operators_calls_in_one_namespace_are_what_its_role_grants(kube_api: Any) -> None:
    calls = kube_api.calls(OPERATOR_USER)
    assert calls, "no operator calls recorded: run this module whole (its tests above run the operator)"
    report = rbac_check(calls, cluster_role_triples(), UNUSED_NAMESPACED)
    report.assert_least_privilege("UNUSED_NAMESPACED")
    # With `-n NAMESPACE` every call names the namespace: the chart's per-namespace Role suffices.
    assert not report.cluster_scoped, f"cluster-scoped calls in namespaced mode: {sorted(report.cluster_scoped)}"
    assert {c.agent for c in calls} == {"kopf", "OpenAPI-Generator"}, {c.agent for c in calls}
