"""Starting a rollout by moving its candidate alias in MLflow: `registry.candidate.propose`, then
the two verbs that call it, `modelrollout start` (a rollout file) and `kubectl modelrollout start`
(a ModelRollout in a cluster, through the real API emulator). A real `mlflow server` throughout."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import mlflow
import pytest
import yaml
from typer.testing import CliRunner

from controller.cli.kubectl import app as kubectl_app
from controller.cli.main import app
from controller.local.ports import free_port
from registry.candidate import AlreadyStable, propose
from registry.errors import VersionNotFound
from tests.fixtures.mlflow import RegisterModel

runner = CliRunner()


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def aliases(client: mlflow.MlflowClient, name: str) -> dict[str, str]:
    return {alias: str(version) for alias, version in (client.get_registered_model(name).aliases or {}).items()}


def test_propose_moves_the_candidate_alias_once_and_refuses_what_cannot_start(
    mlflow_client: mlflow.MlflowClient, registered_model: RegisterModel
) -> None:
    name = unique("iris")
    v1 = registered_model(name, alias="champion")
    v2 = registered_model(name)
    assert propose(mlflow_client, name, v2, "challenger", "champion") is True
    assert aliases(mlflow_client, name) == {"champion": v1, "challenger": v2}
    assert propose(mlflow_client, name, int(v2), "challenger", "champion") is False  # already there: no write
    with pytest.raises(AlreadyStable, match=f"version {v1} is already the stable version"):
        propose(mlflow_client, name, v1, "challenger", "champion")
    for missing in ("9", "abc", "0"):
        with pytest.raises(VersionNotFound):
            propose(mlflow_client, name, missing, "challenger", "champion")
    with pytest.raises(VersionNotFound):
        propose(mlflow_client, unique("no-such-model"), "1", "challenger", "champion")
    with pytest.raises(ValueError, match="reserved by MLflow"):
        propose(mlflow_client, name, v2, "latest", "champion")
    assert aliases(mlflow_client, name) == {"champion": v1, "challenger": v2}  # nothing else moved


def rollout_file(tmp_path: Path, model: str, **model_fields: Any) -> Path:
    document = {
        "apiVersion": "modelrollout.io/v1alpha1", "kind": "ModelRollout", "metadata": {"name": "iris"},
        "spec": {"model": {"name": model, "candidateAlias": "next", **model_fields}, "canary": {"steps": [50]}},
    }  # fmt: skip
    path = tmp_path / "rollout.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


def one_line(output: str) -> str:
    return " ".join(output.split())


def test_local_start_moves_the_rollouts_own_alias(
    tmp_path: Path, mlflow_server: Any, mlflow_client: mlflow.MlflowClient, registered_model: RegisterModel
) -> None:
    name = unique("iris")
    registered_model(name, alias="champion")
    v2 = registered_model(name)
    file = rollout_file(tmp_path, name)
    result = runner.invoke(app, ["start", "iris", v2, "-f", str(file), "--mlflow-uri", mlflow_server.url])
    assert result.exit_code == 0, result.output
    assert f"alias 'next' moved to version {v2}" in one_line(result.output)
    assert aliases(mlflow_client, name)["next"] == v2
    again = runner.invoke(app, ["start", "iris", v2, "-f", str(file), "--mlflow-uri", mlflow_server.url])
    assert again.exit_code == 0 and "already on" in again.output


@pytest.mark.parametrize(("args", "complaint"), [
    (["other", "2"], "no rollout named 'other' (it holds: iris)"),
    (["iris", "77"], "not found"),
    (["iris", "1"], "already the stable version"),
])  # fmt: skip
def test_local_start_refuses_with_one_line(
    tmp_path: Path, mlflow_server: Any, registered_model: RegisterModel, args: list[str], complaint: str
) -> None:
    name = unique("iris")
    registered_model(name, alias="champion")
    file = rollout_file(tmp_path, name)
    result = runner.invoke(app, ["start", *args, "-f", str(file), "--mlflow-uri", mlflow_server.url])
    assert result.exit_code == 2 and complaint in one_line(result.output), result.output
    assert "Traceback" not in result.output


def test_local_start_names_an_unreachable_mlflow_and_a_stage_rollout(tmp_path: Path) -> None:
    file = rollout_file(tmp_path, "iris")
    down = f"http://127.0.0.1:{free_port()}"
    result = runner.invoke(app, ["start", "iris", "2", "-f", str(file), "--mlflow-uri", down])
    assert result.exit_code == 2 and "unreachable" in one_line(result.output) and "Traceback" not in result.output
    staged = rollout_file(tmp_path, "iris", candidateStage="Staging")
    result = runner.invoke(app, ["start", "iris", "2", "-f", str(staged), "--mlflow-uri", down])
    assert result.exit_code == 2 and "follows the stage 'Staging'" in one_line(result.output)


def test_kubectl_start_reads_the_modelrollout_and_moves_its_alias(
    kube_api: Any, modelrollout_crd: str, kube_namespace: str, mlflow_server: Any,
    mlflow_client: mlflow.MlflowClient, registered_model: RegisterModel,
) -> None:  # fmt: skip
    name = unique("iris")
    registered_model(name, alias="champion")
    v2 = registered_model(name)
    kube_api.apply({
        "apiVersion": "modelrollout.io/v1alpha1", "kind": "ModelRollout",
        "metadata": {"name": "iris", "namespace": kube_namespace},
        "spec": {"model": {"name": name, "candidateAlias": "next"}, "target": {"inferenceService": "iris"}},
    })  # fmt: skip
    where = ["-n", kube_namespace, "--kubeconfig", str(kube_api.kubeconfig)]
    missing_uri = runner.invoke(kubectl_app, ["start", "iris", v2, *where], env={"MLFLOW_TRACKING_URI": ""})
    assert missing_uri.exit_code == 2 and "--mlflow-uri (or MLFLOW_TRACKING_URI) is required" in one_line(missing_uri.output)
    result = runner.invoke(kubectl_app, ["start", "iris", v2, *where, "--mlflow-uri", mlflow_server.url])
    assert result.exit_code == 0, result.output
    assert f"kubectl modelrollout status iris -n {kube_namespace} --watch" in one_line(result.output)
    assert aliases(mlflow_client, name)["next"] == v2
    unknown = runner.invoke(kubectl_app, ["start", "nope", v2, *where, "--mlflow-uri", mlflow_server.url])
    assert unknown.exit_code == 2 and "no ModelRollout named 'nope'" in one_line(unknown.output)
