"""The controller loop meeting broken candidates, with real MLflow, Prometheus and model servers:
each ends in a rollback whose reason names the cause, and MLflow records it where it can."""

from __future__ import annotations

import mlflow
import pytest

from canary.decision.spec import Phase, parse_rollout
from tests.fixtures.local import tick_until
from tests.fixtures.mlflow import TEST_EXPERIMENT


def rollout(name: str, model: str):
    return parse_rollout(
        {
            "apiVersion": "modelrollout.io/v1alpha1",
            "kind": "ModelRollout",
            "metadata": {"name": name},
            "spec": {
                "model": {"name": model},
                "shadow": {"duration": "5s"},
                "canary": {"steps": [50], "interval": "5s"},
                "progressDeadline": "60s",
                "analysis": {"metrics": [{"name": "p95", "template": "latency_p95", "maxIncrease": "50%"}]},
            },
        }
    )


@pytest.fixture
def make_runner(local_runner):
    return lambda name, model: local_runner(rollout(name, model))


def test_artifact_that_fails_to_load_rolls_back_with_the_load_error(make_runner, registered_model, mlflow_client):
    model = "broken-artifact"
    registered_model(model, alias="champion")
    # A version whose artifact is there but is not a loadable model (a truncated upload, say).
    mlflow.set_experiment(TEST_EXPERIMENT)
    with mlflow.start_run() as run:
        mlflow.log_text("flavors: {broken", "model/MLmodel")
    broken = str(mlflow.register_model(f"runs:/{run.info.run_id}/model", model).version)
    mlflow_client.set_registered_model_alias(model, "challenger", broken)
    runner = make_runner("broken", model)

    status = tick_until(runner, "broken", lambda s: s.phase is Phase.ROLLED_BACK)
    assert "candidate failed" in status.message and f"v{broken}" in status.message
    tags = mlflow_client.get_model_version(model, broken).tags
    assert tags["modelrollout.status"] == "rolled_back"
    assert "candidate failed" in tags["modelrollout.reason"]
    # The stable is unaffected: it serves (it may still be starting: a bad artifact fails faster).
    stable = status.stable_version
    status = tick_until(runner, "broken", lambda _: runner.platform.health("broken", stable).ready)
    assert status.phase is Phase.ROLLED_BACK


def test_candidate_deleted_mid_rollout_rolls_back_and_ends(make_runner, registered_model, mlflow_client):
    model = "deleted-candidate"
    registered_model(model, alias="champion")
    candidate = registered_model(model, alias="challenger")
    runner = make_runner("deleted", model)
    tick_until(runner, "deleted", lambda s: s.phase is Phase.SHADOW)

    mlflow_client.delete_model_version(model, candidate)  # MLflow drops its aliases with it
    status = tick_until(runner, "deleted", lambda s: s.phase is Phase.ROLLED_BACK)
    assert "alias 'challenger' was removed" in status.message or "not found" in status.message, status.message
    assert status.stable_version != candidate
    # Nothing is stuck waiting to tag a version that no longer exists.
    assert runner.tick()["deleted"].phase is Phase.ROLLED_BACK
