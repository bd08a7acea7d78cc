"""A rollout report attached to the MLflow model version it is about.

Two things land on the version, where the person who promoted it looks:

- a tag `modelrollout.report_summary` with the one-line decision (outcome, versions, reason) and
  `modelrollout.report_artifacts` with where the report's files are. Tags rather than the version's
  description: the description is the data scientist's own text and is not ours to overwrite;
  `modelrollout.summary` is the promotion's own record (written with the alias move) and stays so.
- the report directory (index.html and its PNGs), logged as artifacts of the run that produced
  the version, under `modelrollout-report/<rollout>/v<version>/` (several versions may come from
  one run), where the MLflow UI shows them beside the model. A version with no run (MLflow 3 logs
  a model outside any run when none is active) gets a run of its own for the report, in the
  experiment `modelrollout-reports`, named after the rollout and version.

Writing again replaces both (the artifacts are overwritten file by file, in the same run: the
artifacts tag says which), so a report made twice leaves the latest one.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import mlflow
from mlflow.environment_variables import MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT
from mlflow.exceptions import MlflowException

from registry.errors import translated
from registry.names import normalise_version
from registry.writeback import TAG_PREFIX, truncate_tag_value

REPORT_SUMMARY_TAG = f"{TAG_PREFIX}report_summary"
REPORT_ARTIFACTS_TAG = f"{TAG_PREFIX}report_artifacts"
ARTIFACT_ROOT = "modelrollout-report"
REPORT_EXPERIMENT = "modelrollout-reports"


@dataclass(frozen=True)
class Uploaded:
    run_id: str
    own_run: bool  # True: the version has no run, the report got one in REPORT_EXPERIMENT
    artifact_uri: str  # runs:/<run>/modelrollout-report/<rollout>/v<version>


def upload_report(
    client: mlflow.MlflowClient, model: str, version: str | int, rollout: str, directory: Path, summary: str
) -> Uploaded:
    """Log `directory` under the version's run (or a run of its own) and tag the version with
    `summary` and the artifacts' location.

    RegistryError (one line, naming the model and version) when MLflow refuses or cannot be reached;
    FileNotFoundError when `directory` does not exist.
    """
    if not directory.is_dir():
        raise FileNotFoundError(2, "report directory not found", str(directory))
    version = normalise_version(model, version)
    artifact_path = f"{ARTIFACT_ROOT}/{rollout}/v{version}"
    with translated(client, model, version):
        found = client.get_model_version(model, version)
        run_id, own_run = found.run_id or None, False
        if run_id is None:
            run_id, own_run = _report_run(client, model, version, rollout, (found.tags or {}).get(REPORT_ARTIFACTS_TAG)), True
        client.log_artifacts(run_id, str(directory), artifact_path=artifact_path)
        if own_run:
            with _run_link_not_printed():
                client.set_terminated(run_id, "FINISHED")
        artifact_uri = f"runs:/{run_id}/{artifact_path}"
        client.set_model_version_tag(model, version, REPORT_ARTIFACTS_TAG, artifact_uri)
        # Last, so a summary is only ever seen once its report is in place.
        client.set_model_version_tag(model, version, REPORT_SUMMARY_TAG, truncate_tag_value(summary))
    return Uploaded(run_id, own_run, artifact_uri)


@contextmanager
def _run_link_not_printed() -> Iterator[None]:
    """MLflow prints a link to a run as it ends, made from the tracking URI with any credentials in
    it (`https://user:token@host`); the CLI says where the report went itself."""
    name = MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT.name
    before = os.environ.get(name)
    os.environ[name] = "true"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = before


def _report_run(client: mlflow.MlflowClient, model: str, version: str, rollout: str, earlier: str | None) -> str:
    """The run holding reports of a version that has none: the one an earlier report made, else a new one."""
    match = re.fullmatch(r"runs:/([0-9a-f]+)/.*", earlier or "")
    if match:
        try:
            run = client.get_run(match.group(1))
            if run.info.lifecycle_stage == "active":
                return run.info.run_id
        except MlflowException:
            pass  # deleted or purged: make a new one
    experiment = client.get_experiment_by_name(REPORT_EXPERIMENT)
    experiment_id = experiment.experiment_id if experiment is not None else client.create_experiment(REPORT_EXPERIMENT)
    run = client.create_run(
        experiment_id,
        run_name=f"{rollout}-v{version}",
        tags={f"{TAG_PREFIX}rollout": rollout, f"{TAG_PREFIX}model": model, f"{TAG_PREFIX}version": version},
    )
    return run.info.run_id
