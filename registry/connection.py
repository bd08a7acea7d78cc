"""An MlflowClient that fails fast when the tracking server is down.

MLflow's HTTP client retries a failed request 7 times with exponential backoff, and waits up to
120 s for an answer: an unreachable server blocks a poll for minutes. It reads its retry and
timeout settings from the process environment on every request (there is no per-client setting),
so bounding them means setting those variables for the whole process.
"""

from __future__ import annotations

import os

import mlflow

DEFAULT_TIMEOUT_S = 10
DEFAULT_MAX_RETRIES = 1


def fail_fast_environment(
    timeout_s: int = DEFAULT_TIMEOUT_S, max_retries: int = DEFAULT_MAX_RETRIES
) -> dict[str, str]:
    """The MLflow environment variables that bound one request to about `timeout_s` per try."""
    if timeout_s < 1 or max_retries < 0:
        raise ValueError(f"timeout_s must be >= 1 and max_retries >= 0, got {timeout_s}, {max_retries}")
    return {
        "MLFLOW_HTTP_REQUEST_TIMEOUT": str(timeout_s),
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": str(max_retries),
        # urllib3 waits 0 s before the first retry whatever the factor; 1 keeps later ones short.
        "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
        "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": "0",
    }


def connect(
    tracking_uri: str,
    *,
    timeout_s: int = DEFAULT_TIMEOUT_S,
    max_retries: int = DEFAULT_MAX_RETRIES,
) -> mlflow.MlflowClient:
    """A client for `tracking_uri` (also used as registry URI), with fail-fast HTTP settings.

    Sets the process-wide variables from `fail_fast_environment`: call it once at start-up.
    """
    os.environ.update(fail_fast_environment(timeout_s, max_retries))
    return mlflow.MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
