"""The metrics MLflow holds for a model version: what its run logged, and what its logged model holds.

The offline gate compares these between the candidate and the stable version. Where they live
depends on how the version was made, checked on MLflow 3.17:

- `mlflow.register_model("runs:/<run>/model", …)` and `register_model(<log_model's models:/m-…>)`
  both give a version whose `run_id` is the training run and whose `source` is `models:/m-<id>`,
  the MLflow 3 *logged model*; `model_version.model_id` comes back empty (REST and sqlite alike),
  so the logged model's id is taken from `source`.
- Metrics logged in that run (`mlflow.log_metric`) are the run's `data.metrics`, one value per key
  (the latest step). MLflow 3 also links them to the run's logged model.
- A model registered from a logged model made outside a run (`mlflow.initialize_logged_model`) has
  `run_id == ""`: its metrics are only on the logged model (`log_metric(…, model_id=…)`), and so are
  metrics an evaluation job logs later against the model id from another run.

So the run's metrics come first (they are what MLflow's UI shows for the run), and the logged
model's fill in the names the run lacks, the latest value of each (by timestamp, then step) when it
was logged more than once or on several datasets. Both are read; a missing run or logged model is
noted, not an error, and simply leaves its metrics absent (the gate's `missing` policy decides).
An unreachable server raises `RegistryUnavailable`: the caller retries, no decision is taken.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

import mlflow
from mlflow.exceptions import MlflowException

from registry.errors import VersionNotFound, registry_uri, translate, translated
from registry.names import normalise_version

_LOGGED_MODEL_SOURCE = re.compile(r"^models:/(m-[0-9a-f]+)/?$")
T = TypeVar("T")


@dataclass(frozen=True)
class VersionMetrics:
    model: str
    version: str
    values: dict[str, float]
    run_id: str | None = None
    model_id: str | None = None
    # Why some source contributed nothing, e.g. "run 1a2b… not found".
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def source(self) -> str:
        """Where the values came from, short enough for a status message."""
        parts = []
        if self.run_id:
            parts.append(f"run {self.run_id[:12]}")
        if self.model_id:
            parts.append(f"logged model {self.model_id[:14]}")
        text = " + ".join(parts) or "no run and no logged model"
        return text + (f"; {'; '.join(self.notes)}" if self.notes else "")


def logged_model_id(model_version: object) -> str | None:
    """The MLflow 3 logged model behind a version: `model_id` when the server fills it, else the
    `models:/m-<id>` of its source; None for versions registered from a path (MLflow 2 style)."""
    model_id = getattr(model_version, "model_id", None)
    if model_id:
        return str(model_id)
    match = _LOGGED_MODEL_SOURCE.match(str(getattr(model_version, "source", "") or ""))
    return match.group(1) if match else None


def _optional(client: mlflow.MlflowClient, what: str, call: Callable[[], T]) -> tuple[T | None, str | None]:
    """Run `call`; a resource that does not exist gives (None, note), anything else is raised."""
    try:
        return call(), None
    except MlflowException as exc:
        error = translate(exc, registry_uri(client))
        if isinstance(error, VersionNotFound):
            return None, f"{what} not found"
        raise error from exc


def version_metrics(client: mlflow.MlflowClient, name: str, version: str | int) -> VersionMetrics:
    """The metrics of one model version (see the module docstring for where they come from).

    Raises VersionNotFound when the version does not exist, RegistryUnavailable when MLflow cannot
    be reached, RegistryError for any other refusal.
    """
    version = normalise_version(name, version)
    with translated(client, name, version):
        model_version = client.get_model_version(name, version)
    run_id = str(model_version.run_id or "") or None
    model_id = logged_model_id(model_version)
    values: dict[str, float] = {}
    notes: list[str] = []

    if run_id is not None:
        run, note = _optional(client, f"run {run_id}", lambda: client.get_run(run_id))
        if run is not None:
            values.update({key: float(value) for key, value in run.data.metrics.items()})
        if note:
            notes.append(note)

    if model_id is not None:
        logged, note = _optional(client, f"logged model {model_id}", lambda: client.get_logged_model(model_id))
        if logged is not None:
            latest: dict[str, tuple[int, int, float]] = {}
            for metric in logged.metrics or []:
                rank = (int(metric.timestamp or 0), int(metric.step or 0), float(metric.value))
                if metric.key not in latest or rank[:2] >= latest[metric.key][:2]:
                    latest[metric.key] = rank
            for key, (_, _, value) in latest.items():
                values.setdefault(key, value)
        if note:
            notes.append(note)

    return VersionMetrics(model=name, version=version, values=values, run_id=run_id, model_id=model_id, notes=tuple(notes))
