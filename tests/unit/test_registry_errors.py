"""How MLflow's exceptions become one-line registry errors, and version normalisation."""

from __future__ import annotations

import pytest
import requests
from mlflow.exceptions import MlflowException, RestException

from registry.errors import RegistryError, RegistryUnavailable, VersionNotFound, credentials_hidden, translate
from registry.names import normalise_version

URI = "http://127.0.0.1:5000"


def transport_failure(cause: BaseException) -> MlflowException:
    """An MlflowException raised the way MLflow's HTTP layer raises it: inside `except`."""
    try:
        try:
            raise requests.ConnectionError("Max retries exceeded") from cause
        except requests.ConnectionError as exc:
            raise MlflowException(f"API request to {URI}/x failed with exception {exc}")  # noqa: B904
    except MlflowException as outer:
        return outer


def test_not_found_names_model_and_version() -> None:
    exc = RestException({"error_code": "RESOURCE_DOES_NOT_EXIST", "message": "Model Version (name=iris, version=4) not found"})
    error = translate(exc, URI, "iris", "4")
    assert type(error) is VersionNotFound
    assert str(error).startswith(f"model 'iris' version 4 not found in MLflow at {URI} (")


def test_server_errors_mean_unavailable_and_client_errors_do_not() -> None:
    assert type(translate(RestException({"error_code": "INTERNAL_ERROR", "message": "db\nlocked"}), URI)) is RegistryUnavailable
    rejected = translate(RestException({"error_code": "INVALID_PARAMETER_VALUE", "message": "bad"}), URI, "iris")
    assert type(rejected) is RegistryError
    assert str(rejected) == f"MLflow at {URI} rejected the request for model 'iris': INVALID_PARAMETER_VALUE: bad"


def test_transport_failures_name_the_innermost_cause_on_one_line() -> None:
    error = translate(transport_failure(ConnectionRefusedError(111, "Connection\nrefused")), URI)
    assert type(error) is RegistryUnavailable
    assert str(error) == f"MLflow at {URI} is unreachable: [Errno 111] Connection refused"


def test_other_mlflow_failures_stay_generic() -> None:
    error = translate(MlflowException("x" * 1000), URI, "iris", "1")
    assert type(error) is RegistryError
    assert str(error).startswith(f"MLflow call for model 'iris' version 1 at {URI} failed: xxx")
    assert len(str(error)) < 400


@pytest.mark.parametrize(("given", "expected"), [(3, "3"), ("3", "3"), (" 12 ", "12"), ("007", "7")])
def test_versions_normalise_to_str(given: str | int, expected: str) -> None:
    assert normalise_version("iris", given) == expected


@pytest.mark.parametrize("bad", ["abc", "", "0", -1, "1.5", True, "champion", "²"])
def test_non_versions_are_not_found(bad: object) -> None:
    with pytest.raises(VersionNotFound, match=r"model 'iris' has no version .*: versions are positive integers"):
        normalise_version("iris", bad)  # type: ignore[arg-type]


def test_credentials_in_urls_inside_a_message_are_hidden() -> None:
    text = "API request to https://user:t0k3n@mlflow:5000/api failed; retry http://T0K3N@h/x; 's3://k:s@b/m'; a@b"
    hidden = credentials_hidden(text)
    assert hidden == "API request to https://***@mlflow:5000/api failed; retry http://***@h/x; 's3://***@b/m'; a@b"
    for secret in ("t0k3n", "T0K3N", "k:s"):
        assert secret not in hidden
