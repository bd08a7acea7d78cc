"""Mapping proxied `mlflow-artifacts:` URIs onto the server's artifact destination."""

from __future__ import annotations

from pathlib import Path

import pytest

from registry.artifacts import map_proxied_uri
from registry.errors import RegistryError


@pytest.mark.parametrize(
    ("uri", "destination", "expected"),
    [
        ("mlflow-artifacts:/0/models/m-1/artifacts", "s3://bucket/mlflow", "s3://bucket/mlflow/0/models/m-1/artifacts"),
        ("mlflow-artifacts:/0/models/m-1/artifacts", "s3://bucket/mlflow/", "s3://bucket/mlflow/0/models/m-1/artifacts"),
        ("mlflow-artifacts://mlflow:5000/3/models/m-2/artifacts", "gs://b", "gs://b/3/models/m-2/artifacts"),
        ("mlflow-artifacts:/0/models/m-1/artifacts", Path("/data/artifacts"), "/data/artifacts/0/models/m-1/artifacts"),
        ("mlflow-artifacts:/", "s3://bucket", "s3://bucket"),
        # Not proxied: already something a model server can fetch.
        ("s3://elsewhere/0/models/m-1/artifacts", "s3://bucket", "s3://elsewhere/0/models/m-1/artifacts"),
        ("/local/path/artifacts", "s3://bucket", "/local/path/artifacts"),
    ],
)
def test_proxied_uris_map_onto_the_destination(uri: str, destination: str | Path, expected: str) -> None:
    assert map_proxied_uri(uri, destination) == expected


def test_uri_that_climbs_out_of_the_store_is_refused() -> None:
    with pytest.raises(RegistryError, match="climbs out of the artifact store"):
        map_proxied_uri("mlflow-artifacts:/0/../../etc", "/data/artifacts")
