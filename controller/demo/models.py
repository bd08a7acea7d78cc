"""The four model versions of `modelrollout demo`, trained on scikit-learn's bundled iris data.

v1 the champion; v2 a good challenger; v3 the same predictions answered slowly (a model whose
inference got expensive); v4 fast but trained on shuffled labels (a broken training run). Small
on purpose: the demo shows the rollout, not the modelling.

The same parts make the candidates of the live decision benchmark and the end-to-end tests: an
identical retrain (`champion_estimator` again), a less accurate one, a slower one (`SlowModel`)
and one that fails a share of its predictions (`FlakyModel`). The PythonModels live here, in the
package, because a model server unpickles them by importing this module.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass

import mlflow
import numpy as np
from mlflow.models import infer_signature
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split


class SlowModel(mlflow.pyfunc.PythonModel):
    """A classifier that takes `delay` seconds per call before answering."""

    def __init__(self, estimator, delay: float):
        self.estimator = estimator
        self.delay = delay

    # np.ndarray: a hint MLflow accepts without adding validation of its own (the signature does that).
    def predict(self, context, model_input: np.ndarray, params=None):
        time.sleep(self.delay)
        return self.estimator.predict(np.asarray(model_input, dtype=float))


class FlakyModel(mlflow.pyfunc.PythonModel):
    """A classifier that fails a random `error_rate` share of its calls (the model server answers
    500): a candidate with a bug on some inputs, for the benchmarks and end-to-end tests."""

    def __init__(self, estimator, error_rate: float):
        self.estimator = estimator
        self.error_rate = error_rate

    def predict(self, context, model_input: np.ndarray, params=None):
        if random.random() < self.error_rate:
            raise RuntimeError(f"failing {self.error_rate:.0%} of predictions on purpose")
        return self.estimator.predict(np.asarray(model_input, dtype=float))


@dataclass(frozen=True)
class Dataset:
    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray


def iris() -> Dataset:
    x, y = load_iris(return_X_y=True)
    train_x, test_x, train_y, test_y = train_test_split(x, y, test_size=0.4, random_state=7, stratify=y)
    return Dataset(train_x, train_y, test_x, test_y)


@dataclass(frozen=True)
class DemoVersion:
    label: str
    version: str
    expected: str  # "Succeeded" or "RolledBack"
    expected_reason: str  # which check should decide, for the final table


def pip_requirements() -> list[str]:
    """What a logged iris model needs besides MLflow (which adds itself): stated, because MLflow
    otherwise infers them by loading the model in a subprocess, ~5 s per model saved or logged."""
    import cloudpickle
    import sklearn

    return [f"scikit-learn=={sklearn.__version__}", f"cloudpickle=={cloudpickle.__version__}"]


def log_sklearn(model_name: str, estimator, data: Dataset, run_name: str) -> str:
    """Log `estimator` as an MLflow sklearn model with its held-out accuracy, register it under
    `model_name` (in the current experiment of MLFLOW_TRACKING_URI); return the version."""
    with mlflow.start_run(run_name=run_name):
        mlflow.log_metric("val_accuracy", float(estimator.score(data.test_x, data.test_y)))
        info = mlflow.sklearn.log_model(
            estimator,
            name="model",
            signature=_signature(data),
            registered_model_name=model_name,
            serialization_format="cloudpickle",
            pip_requirements=pip_requirements(),
        )
    return str(info.registered_model_version)


def log_pyfunc(model_name: str, python_model: mlflow.pyfunc.PythonModel, data: Dataset, run_name: str) -> str:
    """Log a PythonModel of this module (the model server imports it from here), register it; return the version."""
    with mlflow.start_run(run_name=run_name):
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=python_model,
            signature=_signature(data),
            registered_model_name=model_name,
            pip_requirements=pip_requirements(),
        )
    return str(info.registered_model_version)


def champion_estimator(data: Dataset) -> LogisticRegression:
    """The demo's v1; fitting it again on the same data is an identical retrain (lbfgs is deterministic)."""
    return LogisticRegression(max_iter=500).fit(data.train_x, data.train_y)


def less_accurate_estimator(data: Dataset) -> LogisticRegression:
    """An over-regularised retrain (C=0.01): on the held-out rows 83% accurate against the champion's
    93%, and agreeing with it on 87% of them."""
    return LogisticRegression(max_iter=500, C=0.01).fit(data.train_x, data.train_y)


def _signature(data: Dataset):
    return infer_signature(data.train_x, data.train_y)  # the labels: what predict returns, as int64


def register_versions(model_name: str, data: Dataset, slow_delay: float = 0.05) -> list[DemoVersion]:
    """Log and register v1..v4 in the MLflow of MLFLOW_TRACKING_URI; return them in order."""
    mlflow.set_experiment("modelrollout-demo")
    good = champion_estimator(data)
    better = LogisticRegression(max_iter=500, C=2.0).fit(data.train_x, data.train_y)
    shuffled = np.random.default_rng(3).permutation(data.train_y)
    broken = LogisticRegression(max_iter=500).fit(data.train_x, shuffled)
    return [
        DemoVersion("champion", log_sklearn(model_name, good, data, "v1-champion"), "Succeeded", ""),
        DemoVersion("good challenger", log_sklearn(model_name, better, data, "v2-good"), "Succeeded", ""),
        DemoVersion(
            "slow challenger",
            log_pyfunc(model_name, SlowModel(better, slow_delay), data, "v3-slow"),
            "RolledBack",
            "latency",
        ),
        DemoVersion("poor challenger", log_sklearn(model_name, broken, data, "v4-shuffled-labels"), "RolledBack", "quality"),
    ]
