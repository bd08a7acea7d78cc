"""Reach a cluster the way kubectl does, for `kubectl modelrollout`.

kubectl passes none of its own flags to a plugin, so the plugin finds the cluster itself with
kubectl's rules: `--kubeconfig`, else `$KUBECONFIG` (a `:`-separated list of files, merged), else
`~/.kube/config`; `--context`, else the current context; `-n`, else the context's namespace, else
`default`. Every failure to reach the API server becomes a `ClusterAccessError` with one line that
names the cause (missing kubeconfig, unknown context, the URL that cannot be reached).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Seconds before a request to an API server that accepts connections but never answers gives up.
REQUEST_TIMEOUT = 15.0
DEFAULT_KUBECONFIG = "~/.kube/config"


class ClusterAccessError(Exception):
    """The cluster cannot be reached or the kubeconfig cannot be used; the message is one line."""


@dataclass(frozen=True)
class Cluster:
    """An API client for one context, and the namespace commands act in."""

    api: Any  # kubernetes.client.ApiClient (imported lazily: `lint` needs no cluster)
    namespace: str
    server: str
    context: str


def kubeconfig_files(kubeconfig: Path | None = None) -> list[Path]:
    """The kubeconfig files kubectl would read, in merge order (existing or not)."""
    if kubeconfig is not None:
        return [kubeconfig.expanduser()]
    listed = os.environ.get("KUBECONFIG", "")
    if listed.strip():
        return [Path(p).expanduser() for p in listed.split(os.pathsep) if p.strip()]
    return [Path(DEFAULT_KUBECONFIG).expanduser()]


def connect(kubeconfig: Path | None = None, context: str | None = None, namespace: str | None = None) -> Cluster:
    """An API client and the namespace to use, resolved like kubectl resolves them."""
    import yaml
    from kubernetes import config
    from kubernetes.config.config_exception import ConfigException

    # A refused connection is retried by urllib3, which logs each retry as a warning: that would
    # print lines beyond our one-line error (Python's last-resort handler writes warnings to stderr).
    logging.getLogger("urllib3").setLevel(logging.ERROR)

    files = kubeconfig_files(kubeconfig)
    existing = [f for f in files if f.is_file()]
    if not existing:
        where = ", ".join(str(f) for f in files)
        source = (
            "--kubeconfig" if kubeconfig is not None else "KUBECONFIG" if os.environ.get("KUBECONFIG") else "default"
        )
        raise ClusterAccessError(f"no kubeconfig found at {where} ({source}); pass --kubeconfig FILE or set KUBECONFIG")
    config_file = os.pathsep.join(str(f) for f in existing)
    try:
        contexts, current = config.list_kube_config_contexts(config_file=config_file)
        chosen = _context(contexts or [], current, context, config_file)
        api = config.new_client_from_config(config_file=config_file, context=chosen["name"], persist_config=False)
    except ConfigException as err:
        raise ClusterAccessError(f"kubeconfig {config_file}: {_first_line(str(err))}") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ClusterAccessError(
            f"kubeconfig {config_file}: malformed YAML{where}: {getattr(err, 'problem', '') or err}"
        ) from None
    except (TypeError, AttributeError):  # e.g. a YAML list where kubectl expects a mapping
        raise ClusterAccessError(
            f"kubeconfig {config_file}: not a kubeconfig (expected a mapping with clusters, users and contexts)"
        ) from None
    except (OSError, ValueError) as err:  # unreadable file, bad certificate data
        raise ClusterAccessError(f"kubeconfig {config_file}: {_first_line(str(err))}") from None
    resolved = namespace or (chosen.get("context") or {}).get("namespace") or "default"
    return Cluster(api=api, namespace=resolved, server=api.configuration.host, context=chosen["name"])


def _context(contexts: list[dict], current: dict | None, wanted: str | None, config_file: str) -> dict:
    if wanted is None:
        if not current:
            raise ClusterAccessError(f"kubeconfig {config_file}: no current context; pass --context NAME")
        return current
    for candidate in contexts:
        if candidate.get("name") == wanted:
            return candidate
    known = ", ".join(sorted(c.get("name", "?") for c in contexts)) or "none"
    raise ClusterAccessError(f"kubeconfig {config_file}: no context named {wanted!r} (known: {known})")


def get_json(
    cluster: Cluster, path: str, path_params: dict[str, str] | None = None, query: list[tuple[str, str]] | None = None
) -> Any:
    """GET a path of the API as JSON; ApiException when not 2xx. The path's `{placeholders}` are
    filled from `path_params`, quoted (`/api/v1/namespaces/{namespace}/events`).

    For core resources read as plain dicts: the typed CoreV1Api takes a second to import (its
    models), more than the whole rest of a plugin command.
    """
    from kubernetes.client.exceptions import ApiException

    request = cluster.api.param_serialize(
        "GET",
        path,
        path_params=path_params or {},
        query_params=query or [],
        header_params={"Accept": "application/json"},
        auth_settings=["BearerToken"],
    )
    with reaching(cluster):
        response = cluster.api.call_api(*request, _request_timeout=REQUEST_TIMEOUT)
        response.read()
    if not 200 <= response.status <= 299:
        raise ApiException.from_response(http_resp=response, body=None, data=None)
    return json.loads(response.data)


@contextmanager
def reaching(cluster: Cluster) -> Iterator[None]:
    """Turn transport failures (refused, timed out, dropped) into one line naming the server."""
    from urllib3.exceptions import HTTPError, MaxRetryError

    try:
        yield
    except MaxRetryError as err:
        raise ClusterAccessError(
            f"cannot reach the Kubernetes API server at {cluster.server}: {_reason(err.reason)}"
        ) from None
    except HTTPError as err:
        raise ClusterAccessError(f"lost the Kubernetes API server at {cluster.server}: {_reason(err)}") from None


def _reason(err: BaseException | None) -> str:
    text = str(err) if err is not None else "no answer"
    # urllib3 wraps the OS error: "<urllib3.connection.HTTPConnection object at 0x…>: Failed to
    # establish a new connection: [Errno 111] Connection refused" -> keep the part after the object.
    if "Failed to establish a new connection:" in text:
        text = text.split("Failed to establish a new connection:", 1)[1].strip()
    return _first_line(text) or type(err).__name__


def _first_line(text: str) -> str:
    return next((line.strip() for line in text.splitlines() if line.strip()), "")
