"""The README's example ModelRollout, as a user copies it, run end to end on the local platform
with real processes: an identical retrain must promote, and a slower, a less accurate and a
failing candidate must each roll back naming the check that caught it.

The spec is read from README.md itself, so the example cannot drift from what is tested. Only
what a copy on this machine cannot keep is changed: windows are compressed (5 s shadow and canary
windows, a 5 s post-promotion watch), and the parts that need the user's own data are left
out: the offline gate (metrics `val_rmse` and `auc` the iris models do not log) and the `custom`
query (`my_metric` is the user's series).
"""

from __future__ import annotations

import re
from pathlib import Path

import mlflow
import yaml

from canary.decision.spec import Phase
from controller.demo.models import (
    FlakyModel,
    SlowModel,
    champion_estimator,
    less_accurate_estimator,
    log_pyfunc,
    log_sklearn,
)
from controller.local.state import StateStore
from registry.connection import connect
from tests.e2e.test_rollouts import finished, start_traffic
from tests.fixtures.local import wait_for_status

README = Path(__file__).resolve().parents[2] / "README.md"
# What the reason's first sentence says for each check of the example (canary/decision/plain_reason.py).
PLAIN_LEAD = {
    "latency-p95": "is slower than",
    "latency": "is slower than",
    "errors": "fails",
    "agreement": "disagrees with",
    "accuracy": "answers less accurately",
}


def readme_example() -> dict:
    text = README.read_text()
    block = re.search(r"```yaml\n(apiVersion: modelrollout\.io/v1alpha1\nkind: ModelRollout\n.*?)```", text, re.S)
    assert block is not None, "README.md has no ModelRollout example"
    return yaml.safe_load(block.group(1))


def test_the_readme_example_is_what_this_test_runs() -> None:
    # If the example loses the checks the issue names, the test below no longer proves they are safe.
    metrics = {m["name"]: m for m in readme_example()["spec"]["analysis"]["metrics"]}
    p95 = metrics["latency-p95"]
    assert p95["maxIncrease"] == "50%" and p95["failureLimit"] == 2 and p95["consecutive"] is True
    assert metrics["latency"]["judge"] == "sequential" and metrics["latency"]["tolerance"] == "10%"
    assert metrics["errors"]["max"] == 0.01
    assert metrics["agreement"]["min"] == 0.95
    assert "accuracy" in metrics


def compressed(name: str, model: str) -> str:
    doc = readme_example()
    doc["metadata"]["name"] = name
    spec = doc["spec"]
    spec["model"]["name"] = model
    spec["shadow"]["duration"] = "5s"
    spec["canary"]["interval"] = "5s"
    spec["progressDeadline"] = "60s"
    spec["postPromotion"]["watch"] = "5s"
    del spec["gate"]
    spec["analysis"]["metrics"] = [m for m in spec["analysis"]["metrics"] if m["name"] != "custom"]
    return yaml.safe_dump(doc)


def test_readme_example_promotes_an_identical_retrain_and_rolls_back_each_regression(
    local_home, controller, iris_data
) -> None:
    home, services = local_home
    model, rollout = "iris-readme", "readme"
    mlflow.set_experiment("readme-example")
    data = iris_data
    client = connect(services.mlflow)
    v1 = log_sklearn(model, champion_estimator(data), data, "champion")
    client.set_registered_model_alias(model, "champion", v1)
    control = controller(compressed(rollout, model))
    store = StateStore(home.state_dir)
    traffic = start_traffic(home, services, rollout, model, data)
    try:
        retrain = log_sklearn(model, champion_estimator(data), data, "identical-retrain")
        client.set_registered_model_alias(model, "challenger", retrain)
        status = wait_for_status(store, rollout, finished(retrain), 150, "the identical retrain's rollout")
        assert status.phase is Phase.SUCCEEDED, status.message
        assert client.get_model_version_by_alias(model, "champion").version == retrain

        regressions = [
            # 20 ms more per prediction: every answer several times slower.
            (log_pyfunc(model, SlowModel(champion_estimator(data), 0.02), data, "slower"), {"latency-p95", "latency"}),
            # 83% against 93% on the held-out rows; agrees with the stable on 87% of them.
            (log_sklearn(model, less_accurate_estimator(data), data, "less-accurate"), {"agreement", "accuracy"}),
            # One prediction in five fails (the model server answers 500).
            (log_pyfunc(model, FlakyModel(champion_estimator(data), 0.2), data, "failing"), {"errors"}),
        ]
        for version, checks in regressions:
            client.set_registered_model_alias(model, "challenger", version)
            status = wait_for_status(store, rollout, finished(version), 120, f"v{version}'s rollout")
            assert status.phase is Phase.ROLLED_BACK, status.message
            lead, _, evidence = status.message.partition(" — ")
            deciding = evidence.split()[0]
            # The checks that caught it are among those breached in the deciding window (one that
            # fails 20% of requests may also be slower in that window, and latency is listed first).
            assert any(f"{check} " in f" {evidence}" for check in checks), status.message
            assert PLAIN_LEAD[deciding] in lead, status.message
            assert client.get_model_version(model, version).tags["modelrollout.status"] == "rolled_back"
        assert client.get_model_version_by_alias(model, "champion").version == retrain
    finally:
        stats = traffic.stop()
    assert control.process.poll() is None, control.log_text()[-2000:]
    # Every regression was caught while a shadow: clients only ever saw the two stables, and no
    # request failed.
    assert set(stats.by_version) == {v1, retrain}, stats.by_version
    assert stats.failed == 0, stats.failures
