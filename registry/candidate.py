"""Starting a rollout from outside MLflow's UI: the candidate alias moved onto a version.

MLflow stays the source of truth: a rollout starts because the alias moved there, whoever moved it,
and the controller notices on its next registry read (or at once, with a webhook). This is the
move a `start` command makes on a user's behalf.
"""

from __future__ import annotations

import mlflow

from registry.errors import RegistryError, translated
from registry.names import check_alias, normalise_version


class AlreadyStable(RegistryError):
    """The version asked for is the stable one already: there is nothing to roll out."""


def propose(client: mlflow.MlflowClient, name: str, version: str | int, candidate_alias: str, stable_alias: str) -> bool:
    """Point `candidate_alias` of model `name` at `version`; True if it moved, False if it pointed
    there already. VersionNotFound for a version (or model) that does not exist; AlreadyStable
    when `stable_alias` is on it."""
    check_alias(candidate_alias, "candidate alias")
    check_alias(stable_alias, "stable alias")
    version = normalise_version(name, version)
    with translated(client, name, version):
        client.get_model_version(name, version)  # a missing version fails here, named
        aliases = client.get_registered_model(name).aliases or {}
        if str(aliases.get(stable_alias)) == version:
            raise AlreadyStable(f"model {name!r} version {version} is already the stable version ({stable_alias!r})")
        if str(aliases.get(candidate_alias)) == version:
            return False
        client.set_registered_model_alias(name, candidate_alias, version)
    return True
