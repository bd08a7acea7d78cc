"""Where a model version's files are, as a URI a model server can load.

The URI comes from `get_model_version_download_uri`, never from `ModelVersion.source`: in MLflow 3
`source` is `models:/m-<id>`, which only an MLflow client holding the tracking URI can resolve.

A server that proxies artifacts (`mlflow server --artifacts-destination D`) hands out
`mlflow-artifacts:/<path>`, which again only an MLflow client talking to that server can read; a
KServe storage initializer cannot. Such a URI names `<D>/<path>` on the server's own storage, so
when the caller knows `D` (an `s3://bucket/prefix`, a `gs://` URL, or the local platform's artifact
directory), `resolve_artifact_uri` rewrites the URI onto it: the model server then reads the
files straight from storage, without a hop through MLflow.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlparse

import mlflow

from registry.errors import RegistryError, translated
from registry.names import normalise_version

PROXIED_SCHEME = "mlflow-artifacts"


def map_proxied_uri(uri: str, artifacts_destination: str | Path) -> str:
    """`mlflow-artifacts:/<path>` (or `mlflow-artifacts://host:port/<path>`) -> `<dest>/<path>`.

    Any other URI is returned unchanged. A local-path destination gives a local path.
    """
    parsed = urlparse(uri)
    if parsed.scheme != PROXIED_SCHEME:
        return uri
    path = parsed.path.strip("/")
    if ".." in path.split("/"):
        raise RegistryError(f"refusing artifact URI {uri!r}: it climbs out of the artifact store")
    destination = str(artifacts_destination).rstrip("/")
    return f"{destination}/{path}" if path else destination


def resolve_artifact_uri(
    client: mlflow.MlflowClient,
    name: str,
    version: str | int,
    artifacts_destination: str | Path | None = None,
) -> str:
    """The artifact URI of `name` version `version`; VersionNotFound if there is no such version.

    Always a fixed version, never an alias: a storage URI that followed an alias would change
    what a running rollout serves when the alias moves. With `artifacts_destination`, a proxied
    `mlflow-artifacts:` URI is mapped onto that destination (see the module docstring).
    """
    version = normalise_version(name, version)
    with translated(client, name, version):
        uri = client.get_model_version_download_uri(name, version)
    if artifacts_destination is not None:
        return map_proxied_uri(uri, artifacts_destination)
    return uri
