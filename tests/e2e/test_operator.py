"""The operator end to end: `modelrollout operator` as a process, against the Kubernetes API emulator.

Real parts: the operator process (kopf), a real `mlflow server`, a real Prometheus scraping
Knative- and Istio-shaped series, the real shadow comparator, the real `kubectl`. Played: the API
server (the kmock-based emulator, validating every object against its CRD — ours and KServe's),
KServe's controller (`KServeDouble`) and the clients/queue-proxies (`KnativeTraffic`), see
tests/fixtures/kserve_stack.py.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import mlflow
import pytest
from kubernetes.client import CoreV1Api, CustomObjectsApi
from kubernetes.client.exceptions import ApiException

from controller.commands import command_patch
from controller.local.ports import free_port
from registry.artifacts import map_proxied_uri
from registry.webhooks import sign
from tests.fixtures.kserve_stack import Comparator, KnativeTraffic, KServeLoop, ServingSeries
from tests.kube.kserve_double import KServeDouble

GROUP, VERSION, PLURAL = "modelrollout.io", "v1alpha1", "modelrollouts"
ISVC = ("serving.kserve.io", "v1beta1")
SECRET = "webhook-secret-for-tests"
PEERING_CRD = Path(__file__).resolve().parents[2] / "manifests" / "crd" / "kopfpeerings.kopf.dev.yaml"
BUCKET = "s3://mlflow-tests/artifacts"  # the operator maps mlflow-artifacts:/ URIs onto it


class OperatorProcess:
    """`modelrollout operator` in a subprocess; its log is kept for failure messages."""

    def __init__(self, home: Path, kubeconfig: Path, namespace: str, mlflow_url: str, prometheus_url: str,
                 comparator_url: str | None, poll: str = "1s", peering: bool = False) -> None:  # fmt: skip
        self.home, self.port = home, free_port()
        self.log_path = home / f"operator-{time.monotonic_ns()}.log"
        command = [
            sys.executable, "-m", "controller.cli", "operator", "-n", namespace,
            *(["--peering", "modelrollout"] if peering else ["--standalone"]),
            "--mlflow-uri", mlflow_url, "--prometheus-url", prometheus_url, "--port", str(self.port),
            "--tick", "500ms", "--poll-interval", poll, "--artifacts-destination", BUCKET,
        ]  # fmt: skip
        if comparator_url:
            command += ["--comparator-url", comparator_url]
        env = {**os.environ, "KUBECONFIG": str(kubeconfig), "MODELROLLOUT_WEBHOOK_SECRET": SECRET, "COLUMNS": "200"}
        self._log = open(self.log_path, "w")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(command, stdout=self._log, stderr=subprocess.STDOUT, env=env)
        self.url = f"http://127.0.0.1:{self.port}"
        self.wait_ready()

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"the operator exited ({self.process.returncode}):\n{self.log()}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        pytest.fail(f"the operator was not ready within {timeout:g} s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-6000:]

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self._log.close()


class Stack:
    """One test's cluster: namespace, KServe double and traffic, MLflow model, operator(s)."""

    def __init__(self, kube_api: Any, namespace: str, mlflow_server: Any, prometheus_server: Any,
                 series: ServingSeries, comparator: Comparator, home: Path) -> None:  # fmt: skip
        self.kube_api, self.namespace, self.home = kube_api, namespace, home
        self.mlflow_url, self.prometheus_url, self.comparator = mlflow_server.url, prometheus_server.url, comparator
        self.api_client = kube_api.api_client()
        self.custom = CustomObjectsApi(self.api_client)
        self.core = CoreV1Api(self.api_client)
        self.double = KServeDouble(self.api_client)
        self.kserve = KServeLoop(self.double, namespace).start()
        self.traffic = KnativeTraffic(self.api_client, self.double, namespace, series).start()
        self.mlflow = mlflow.MlflowClient(tracking_uri=self.mlflow_url, registry_uri=self.mlflow_url)
        self.model = f"iris-{uuid.uuid4().hex[:8]}"
        self.operators: list[OperatorProcess] = []

    # -- parts --------------------------------------------------------------------------------

    def start_operator(self, poll: str = "1s", peering: bool = False) -> OperatorProcess:
        if peering:  # kopf's namespaced peering: its CRD (from manifests/) and the object it names
            self.kube_api.load_crds([PEERING_CRD])
            self.kube_api.apply({"apiVersion": "kopf.dev/v1", "kind": "KopfPeering",
                                 "metadata": {"name": "modelrollout", "namespace": self.namespace}})  # fmt: skip
        operator = OperatorProcess(self.home, self.kube_api.kubeconfig, self.namespace, self.mlflow_url,
                                   self.prometheus_url, self.comparator.url, poll, peering)  # fmt: skip
        self.operators.append(operator)
        return operator

    def register(self, model_uri: str, alias: str | None = None) -> str:
        version = str(mlflow.register_model(model_uri, self.model).version)
        if alias:
            self.alias(alias, version)
        return version

    def alias(self, alias: str, version: str) -> None:
        self.mlflow.set_registered_model_alias(self.model, alias, version)

    def uri(self, version: str) -> str:
        return map_proxied_uri(self.mlflow.get_model_version_download_uri(self.model, version), BUCKET)

    def create_rollout(self, name: str = "iris", **spec: Any) -> None:
        body = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "ModelRollout",
            "metadata": {"name": name},
            "spec": {
                "model": {"name": self.model},
                "target": {"inferenceService": "iris", "deploymentMode": "Knative"},
                "shadow": {"enabled": True, "duration": "3s", "percent": 100},
                "canary": {"steps": [20, 60], "interval": "3s"},
                "progressDeadline": "40s",
                "analysis": {
                    "provider": "knative",
                    "metrics": [
                        {"name": "p95", "template": "latency_p95", "max": 0.2},
                        {"name": "errors", "template": "error_rate", "max": 0.05},
                    ],
                },
                **spec,
            },
        }
        self.custom.create_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, body)

    # -- reads --------------------------------------------------------------------------------

    def rollout(self, name: str = "iris") -> dict[str, Any]:
        return self.custom.get_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, name)

    def status(self, name: str = "iris") -> dict[str, Any]:
        return self.rollout(name).get("status") or {}

    def phase(self, name: str = "iris") -> str | None:
        return self.status(name).get("phase")

    def isvc(self, name: str = "iris") -> dict[str, Any] | None:
        try:
            return self.custom.get_namespaced_custom_object(*ISVC, self.namespace, "inferenceservices", name)
        except ApiException as err:
            if err.status == 404:
                return None
            raise

    def predictor(self) -> dict[str, Any]:
        isvc = self.isvc()
        assert isvc is not None
        return isvc["spec"]["predictor"]

    def plugin(self, *args: str) -> subprocess.CompletedProcess[str]:
        """`kubectl modelrollout ARGS -n NAMESPACE` through the real kubectl, the plugin on PATH."""
        bin_dir = str(Path(sys.executable).parent)
        env = {**os.environ, "PATH": os.pathsep.join([bin_dir, os.environ.get("PATH", "")]),
               "KUBECONFIG": str(self.kube_api.kubeconfig), "COLUMNS": "200"}  # fmt: skip
        kubectl = shutil.which("kubectl", path=env["PATH"])
        assert kubectl is not None
        command = [kubectl, "modelrollout", *args, "-n", self.namespace]
        return subprocess.run(command, capture_output=True, text=True, env=env, timeout=90, check=False)

    def events(self, name: str = "iris") -> list[tuple[str, str, str]]:
        items = self.core.list_namespaced_event(self.namespace, field_selector=f"involvedObject.name={name}").items
        return [(e.type, e.reason, e.message) for e in items]

    def tags(self, version: str) -> dict[str, str]:
        return dict(self.mlflow.get_model_version(self.model, version).tags)

    def champion(self) -> str:
        return str(self.mlflow.get_model_version_by_alias(self.model, "champion").version)

    def wait(self, condition: Callable[[], Any], what: str, timeout: float = 60.0) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            value = condition()
            if value:
                return value
            if time.monotonic() > deadline:
                logs = "\n".join(op.log() for op in self.operators[-1:])
                pytest.fail(f"timed out after {timeout:g} s waiting until {what}; status: "
                            f"{json.dumps(self.status(), indent=1)[-3000:]}\noperator log:\n{logs}")  # fmt: skip
            time.sleep(0.2)

    def close(self) -> None:
        for operator in self.operators:
            operator.stop()
        self.traffic.stop()
        self.kserve.stop()
        self.api_client.close()
        assert self.kserve.errors == [] and self.traffic.errors == [], (self.kserve.errors, self.traffic.errors)


@pytest.fixture
def stack(kube_api: Any, kserve_crd: str, modelrollout_crd: str, kube_namespace: str, mlflow_server: Any,
          prometheus_server: Any, knative_exporter: Any, comparator: Comparator, tmp_path: Path) -> Iterator[Stack]:  # fmt: skip
    _, series = knative_exporter
    built = Stack(kube_api, kube_namespace, mlflow_server, prometheus_server, series, comparator, tmp_path)
    try:
        yield built
    finally:
        built.close()


def serving_v1(stack: Stack, iris_model_uri: str) -> tuple[str, str]:
    """v1 champion served by the InferenceService the operator created; v2 registered, no alias."""
    v1 = stack.register(iris_model_uri, alias="champion")
    v2 = stack.register(iris_model_uri)
    stack.create_rollout()
    stack.wait(lambda: stack.status().get("stableVersion") == v1, "the operator saw the stable version")
    stack.wait(
        lambda: (stack.isvc() or {}).get("status", {}).get("components", {}).get("predictor", {}).get("latestReadyRevision"),
        "the InferenceService serves v1",
    )
    assert stack.predictor()["model"]["storageUri"] == stack.uri(v1)
    return v1, v2


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
    registered = stack.wait(lambda: httpx.get(f"{stack.comparator.url}/admin/shadows").json(), "the comparator knows the shadow")
    assert registered[0]["inferenceService"] == "iris" and registered[0]["candidateVersion"] == v2
    assert registered[0]["shadowUrl"].startswith("http://iris-shadow-predictor.")

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
    assert httpx.get(f"{stack.comparator.url}/admin/shadows").json() == []
    assert stack.champion() == v2 and stack.tags(v2)["modelrollout.status"] == "promoted"
    status = stack.status()
    assert [(t["from"], t["to"]) for t in status["history"]] == [
        ("Idle", "Shadow"), ("Shadow", "Canary"), ("Canary", "Canary"), ("Canary", "Promoting"), ("Promoting", "Succeeded"),
    ]  # fmt: skip
    for reason in ("RolloutStarted", "StepAdvanced", "Promoting", "Promoted"):
        stack.wait(lambda: reason in [r for _, r, _ in stack.events()], f"a {reason} event")
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
    annotations = stack.rollout()["metadata"].get("annotations", {})
    assert "modelrollout.io/command" not in annotations and "modelrollout.io/command-id" not in annotations


@pytest.mark.parametrize("provider", ["knative", "istio"])
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


def test_a_candidate_that_fails_to_load_is_rolled_back_with_kserves_reason(stack: Stack, iris_model_uri: str) -> None:
    stack.start_operator()
    v1, v2 = serving_v1(stack, iris_model_uri)
    stack.double.fail_load(stack.uri(v2), "could not find MLmodel in /mnt/models")
    stack.alias("challenger", v2)
    stack.wait(lambda: stack.phase() == "RolledBack", "the rollout was rolled back")
    message = stack.status()["message"]
    assert "could not find MLmodel" in message, message
    assert stack.isvc("iris-shadow") is None and stack.champion() == v1


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
    finally:
        stack.mlflow.delete_webhook(webhook.webhook_id)


def test_an_invalid_spec_is_reported_and_the_state_kept(stack: Stack, iris_model_uri: str) -> None:
    stack.start_operator()
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
    stack.custom.patch_namespaced_custom_object(
        GROUP, VERSION, stack.namespace, PLURAL, "iris", {"spec": {"canary": {"steps": [20, 50]}}}
    )
    stack.wait(lambda: (condition() or {}).get("status") == "True", "SpecValid=True once fixed")


def test_kubectl_plugin_verbs_drive_the_operator(stack: Stack, iris_model_uri: str) -> None:
    stack.start_operator()
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
