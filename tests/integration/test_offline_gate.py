"""The offline gate against a real `mlflow server`: where a version's metrics come from, and the
gate run by the local controller loop (real MLflow, model servers and router), which rejects a
candidate without ever serving it and records why in MLflow and in the status."""

from __future__ import annotations

import time
from collections.abc import Mapping

import mlflow
import pytest

from canary.decision.spec import Phase, parse_rollout
from controller.demo.models import pip_requirements
from controller.local.platform import LocalPlatform
from controller.local.ports import free_port
from controller.local.runner import LocalRunner
from controller.platform import Routing
from registry.errors import RegistryUnavailable, VersionNotFound
from registry.run_metrics import version_metrics
from tests.fixtures.local import tick_until
from tests.fixtures.mlflow import TEST_EXPERIMENT, fit_iris

_seq = iter(range(1_000_000))


def unique(prefix: str) -> str:
    return f"{prefix}-{next(_seq)}-{time.monotonic_ns() % 100_000}"


@pytest.fixture(scope="module")
def champion_model(mlflow_server) -> tuple[str, str]:
    """A real sklearn model logged in a training run with validation metrics: (model URI, run id).

    Logged the MLflow 3 way (`log_model` inside a run, metrics before and after it, one of them
    at two steps), so its versions are what `register_model` gives users.
    """
    mlflow.set_experiment(TEST_EXPERIMENT)
    with mlflow.start_run() as run:
        mlflow.log_metric("val_accuracy", 0.90, step=0)
        info = mlflow.sklearn.log_model(
            fit_iris(), name="model", serialization_format="cloudpickle", pip_requirements=pip_requirements()
        )
        mlflow.log_metric("val_accuracy", 0.95, step=1)  # the run's latest value
        mlflow.log_metrics({"val_rmse": 0.40, "auc": 0.97})
    return str(info.model_uri), run.info.run_id


def register_champion(model: str, champion_model: tuple[str, str], client: mlflow.MlflowClient) -> str:
    version = str(mlflow.register_model(champion_model[0], model).version)
    client.set_registered_model_alias(model, "champion", version)
    return version


def register_candidate(model: str, metrics: Mapping[str, float], client: mlflow.MlflowClient) -> tuple[str, str]:
    """A version whose training run logged `metrics`; (version, run id). Its artifact is not a
    loadable model, which is the point: a rejected candidate must never be loaded."""
    mlflow.set_experiment(TEST_EXPERIMENT)
    with mlflow.start_run() as run:
        mlflow.log_metrics(dict(metrics))
        mlflow.log_text("flavors: {}", "model/MLmodel")
    version = str(mlflow.register_model(f"runs:/{run.info.run_id}/model", model).version)
    client.set_registered_model_alias(model, "challenger", version)
    return version, run.info.run_id


def dead_client() -> mlflow.MlflowClient:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    return mlflow.MlflowClient(tracking_uri=url, registry_uri=url)


# ---------------------------------------------------------------------------------------------
# Where the metrics come from


def test_a_version_registered_from_a_training_run_has_the_runs_latest_metrics(champion_model, mlflow_client):
    model = unique("gate-run")
    version = register_champion(model, champion_model, mlflow_client)
    read = version_metrics(mlflow_client, model, version)
    assert read.values == {"val_accuracy": 0.95, "val_rmse": 0.40, "auc": 0.97}
    assert read.run_id == champion_model[1]
    # MLflow 3: the version's source is the logged model, whose id MLflow leaves out of model_id.
    assert mlflow_client.get_model_version(model, version).source == champion_model[0]
    assert read.model_id is not None and champion_model[0].endswith(read.model_id)
    assert read.source.startswith(f"run {champion_model[1][:12]} + logged model m-")
    # A version number given as an int (a sqlite store's habit) reads the same.
    assert version_metrics(mlflow_client, model, int(version)).values == read.values


def test_logged_model_metrics_fill_in_what_the_run_lacks(mlflow_client):
    model = unique("gate-logged")
    mlflow.set_experiment(TEST_EXPERIMENT)
    with mlflow.start_run() as train:
        mlflow.log_metric("val_accuracy", 0.91)
        logged = mlflow.initialize_logged_model(name="model")
        mlflow.finalize_logged_model(logged.model_id, "READY")
    # An evaluation job, later and in its own run, logs against the model id.
    with mlflow.start_run():
        mlflow.log_metric("eval_auc", 0.88, model_id=logged.model_id)
        mlflow.log_metric("eval_auc", 0.89, model_id=logged.model_id, step=1)
        mlflow.log_metric("val_accuracy", 0.10, model_id=logged.model_id)
    version = str(mlflow.register_model(f"models:/{logged.model_id}", model).version)
    read = version_metrics(mlflow_client, model, version)
    assert read.run_id == train.info.run_id and read.model_id == logged.model_id
    # The training run's own value wins; the logged model adds what only it has, its latest value.
    assert read.values == {"val_accuracy": 0.91, "eval_auc": 0.89}


def test_a_version_with_no_run_reads_its_logged_model(mlflow_client):
    model = unique("gate-norun")
    mlflow.set_experiment(TEST_EXPERIMENT)
    logged = mlflow.initialize_logged_model(name="outside-a-run")
    mlflow.finalize_logged_model(logged.model_id, "READY")
    mlflow.log_metric("auc", 0.83, model_id=logged.model_id)
    mlflow.end_run()  # log_metric started a run of its own to hold the metric
    version = str(mlflow.register_model(f"models:/{logged.model_id}", model).version)
    assert mlflow_client.get_model_version(model, version).run_id in ("", None)
    read = version_metrics(mlflow_client, model, version)
    assert read.run_id is None and read.values == {"auc": 0.83}
    assert read.source == f"logged model {logged.model_id[:14]}"


def test_a_missing_version_and_an_unreachable_server_are_errors_not_empty_metrics(mlflow_client):
    model = unique("gate-missing")
    mlflow_client.create_registered_model(model)
    with pytest.raises(VersionNotFound, match=rf"model '{model}' version 7 not found"):
        version_metrics(mlflow_client, model, "7")
    started = time.monotonic()
    with pytest.raises(RegistryUnavailable, match="unreachable"):
        version_metrics(dead_client(), model, "1")
    assert time.monotonic() - started < 10


# ---------------------------------------------------------------------------------------------
# The gate in the controller loop


class RecordingPlatform:
    """The real local platform, with every routing it was asked to apply kept for the test."""

    def __init__(self, inner: LocalPlatform):
        self.inner = inner
        self.applied: list[Routing] = []

    def apply(self, rollout: str, routing: Routing, artifact_uris: Mapping[str, str]) -> None:
        self.applied.append(routing)
        self.inner.apply(rollout, routing, artifact_uris)

    def __getattr__(self, name: str):
        return getattr(self.inner, name)


def gate_rollout(name: str, model: str, gate: dict):
    return parse_rollout(
        {
            "apiVersion": "modelrollout.io/v1alpha1",
            "kind": "ModelRollout",
            "metadata": {"name": name},
            "spec": {
                "model": {"name": model},
                "shadow": {"duration": "30s"},
                "canary": {"steps": [50], "interval": "30s"},
                "progressDeadline": "2m",
                "gate": gate,
            },
        }
    )


GATE = {
    "metrics": [
        {"name": "val_accuracy", "maxDrop": 0.01},
        {"name": "val_rmse", "maxIncrease": "5%"},
        {"name": "auc", "min": 0.8},
    ]
}


@pytest.fixture
def make_runner(local_runner):
    def make(name: str, model: str, gate: dict = GATE) -> tuple[LocalRunner, RecordingPlatform]:
        runner = local_runner(gate_rollout(name, model, gate))
        recording = RecordingPlatform(runner.platform)
        runner.ports.platform = recording
        return runner, recording

    return make


def served_versions(platform: RecordingPlatform) -> set[str]:
    return {v for routing in platform.applied for v in routing.versions}


def test_failing_gate_rejects_the_candidate_without_serving_it(make_runner, champion_model, mlflow_client):
    model, name = unique("gate-reject"), "reject"
    stable = register_champion(model, champion_model, mlflow_client)
    candidate, _ = register_candidate(model, {"val_accuracy": 0.92, "val_rmse": 0.41, "auc": 0.96}, mlflow_client)
    runner, platform = make_runner(name, model)

    status = tick_until(runner, name, lambda s: s.phase is Phase.ROLLED_BACK)
    expected = f"offline gate failed: val_accuracy 0.92 on v{candidate} vs 0.95 on v{stable} (-0.03, maxDrop 0.01)"
    assert status.message == expected and status.rollback_kind == "rejected"
    assert [t.to for t in status.history] == [Phase.GATING, Phase.ROLLING_BACK, Phase.ROLLED_BACK]
    assert {c.name: c.verdict for c in status.gate_checks} == {"val_accuracy": "fail", "val_rmse": "pass", "auc": "pass"}
    gate_condition = next(c for c in status.conditions if c.type == "GatePassed")
    assert (gate_condition.status, gate_condition.reason) == ("False", "GateFailed")
    # Recorded in MLflow, where whoever moved the alias looks.
    tags = mlflow_client.get_model_version(model, candidate).tags
    assert tags["modelrollout.status"] == "rejected" and tags["modelrollout.reason"] == expected
    assert "modelrollout.rejected_at" in tags
    assert mlflow_client.get_model_version_by_alias(model, "champion").version == stable
    events = [e["reason"] for e in runner.store.events(name)]
    assert "Rejected" in events and "RollingBack" not in events
    # Never routed, never started: only the stable was ever asked for.
    assert served_versions(platform) == {stable}
    assert not runner.platform.supervisor.records(rollout=name, version=candidate)
    # Not judged again by itself while the alias stays on it.
    for _ in range(3):
        assert runner.tick()[name].phase is Phase.ROLLED_BACK
    assert served_versions(platform) == {stable}


def test_missing_metric_rejects_naming_the_metric_the_version_and_its_run(make_runner, champion_model, mlflow_client):
    model, name = unique("gate-missing"), "missing"
    register_champion(model, champion_model, mlflow_client)
    candidate, run_id = register_candidate(model, {"val_accuracy": 0.96, "auc": 0.96}, mlflow_client)
    runner, platform = make_runner(name, model)

    status = tick_until(runner, name, lambda s: s.phase is Phase.ROLLED_BACK)
    assert status.rollback_kind == "rejected"
    assert f"val_rmse not logged for candidate v{candidate} (run {run_id[:12]}" in status.message
    assert status.message.endswith("missing=fail")
    assert candidate not in served_versions(platform)


def test_passing_gate_deploys_the_shadow_and_missing_pass_skips_a_metric(make_runner, champion_model, mlflow_client):
    model, name = unique("gate-pass"), "pass"
    stable = register_champion(model, champion_model, mlflow_client)
    candidate, _ = register_candidate(model, {"val_accuracy": 0.945, "val_rmse": 0.38}, mlflow_client)
    gate = {"metrics": [*GATE["metrics"][:2], {"name": "auc", "min": 0.8, "missing": "pass"}]}
    runner, platform = make_runner(name, model, gate)

    status = tick_until(runner, name, lambda s: s.phase is Phase.SHADOW)
    assert [t.to for t in status.history] == [Phase.GATING, Phase.SHADOW]
    assert status.history[-1].reason == "offline gate passed (3 metrics)"
    assert [c.verdict for c in status.gate_checks] == ["pass", "pass", "pass"]
    assert "auc not logged for candidate" in status.gate_checks[2].message
    assert "GatePassed" in [e["reason"] for e in runner.store.events(name)]
    # Only now is the candidate served, as a shadow.
    shadow = [r for r in platform.applied if r.candidate_version == candidate]
    assert shadow and shadow[0].candidate_role == "shadow" and shadow[0].stable_version == stable
    assert mlflow_client.get_model_version(model, candidate).tags.get("modelrollout.status") is None


def test_unreachable_mlflow_during_the_gate_decides_nothing_until_it_answers(make_runner, champion_model, mlflow_client):
    model, name = unique("gate-down"), "down"
    register_champion(model, champion_model, mlflow_client)
    candidate, _ = register_candidate(model, {"val_accuracy": 0.80, "val_rmse": 0.40, "auc": 0.9}, mlflow_client)
    runner, platform = make_runner(name, model)
    status = tick_until(runner, name, lambda s: s.phase is Phase.GATING)

    # The registry poll still answers (it has its own client); the metric reads go to a dead port.
    runner.ports.client = dead_client()
    for _ in range(3):
        status = runner.tick()[name]
        assert status.phase is Phase.GATING and status.gate_checks == []
    condition = next(c for c in status.conditions if c.type == "GatePassed")
    assert (condition.status, condition.reason) == ("Unknown", "MetricsUnavailable")
    assert "is unreachable" in condition.message and "waits for MLflow" in status.message
    assert candidate not in served_versions(platform)
    assert mlflow_client.get_model_version(model, candidate).tags.get("modelrollout.status") is None

    runner.ports.client = runner.client  # MLflow answers again: the gate decides
    status = tick_until(runner, name, lambda s: s.phase is Phase.ROLLED_BACK)
    assert status.rollback_kind == "rejected" and "val_accuracy 0.8" in status.message


def test_retry_runs_the_gate_again_on_corrected_metrics(make_runner, champion_model, mlflow_client):
    model, name = unique("gate-retry"), "retry"
    register_champion(model, champion_model, mlflow_client)
    candidate, run_id = register_candidate(model, {"val_accuracy": 0.50, "val_rmse": 0.40, "auc": 0.9}, mlflow_client)
    runner, _ = make_runner(name, model)
    tick_until(runner, name, lambda s: s.phase is Phase.ROLLED_BACK)

    # The evaluation was wrong and is logged again (a later step is the run's latest value).
    mlflow_client.log_metric(run_id, "val_accuracy", 0.95, step=1)
    runner.store.add_command(name, "retry")
    status = tick_until(runner, name, lambda s: s.phase is Phase.SHADOW)
    assert [t.to for t in status.history][-2:] == [Phase.GATING, Phase.SHADOW]
    assert status.candidate_version == candidate
