"""Errors raised by the registry package, and the translation of MLflow's exceptions into them.

Callers catch `RegistryError` to handle every registry failure in one place, and the subclasses
where the response differs: an unavailable registry is retried on the next poll, a missing version
is a user error that fails the rollout. Every message is one line naming the registry URL, and the
model and version when there is one.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit, urlunsplit

import mlflow
import requests
from mlflow.exceptions import MlflowException, RestException

_MAX_CAUSE_CHARS = 300
# `scheme://userinfo@` anywhere in a text.
_URL_CREDENTIALS = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.-]*://)[^/\s@'\"]+@")


class RegistryError(Exception):
    """Base class of every error this package raises."""


class RegistryUnavailable(RegistryError):
    """MLflow could not be reached or answered with a server error; worth retrying later."""


class VersionNotFound(RegistryError):
    """The registered model, or the version of it, does not exist (or was deleted)."""


def registry_uri(client: mlflow.MlflowClient) -> str:
    """The URL the client talks to for registry calls, for error messages: credentials in it
    (`https://user:token@host`) are shown as `***@`, since messages reach the status, Events and
    MLflow tags."""
    # MlflowClient keeps the resolved registry URI only in a private attribute; the tracking
    # URI is the same for every deployment this project supports, so it is the fallback.
    uri = str(getattr(client, "_registry_uri", None) or client.tracking_uri)
    parts = urlsplit(uri)
    if "@" not in parts.netloc:
        return uri
    return urlunsplit(parts._replace(netloc="***@" + parts.netloc.rsplit("@", 1)[1]))


def credentials_hidden(text: str) -> str:
    """`text` with the credentials of every URL in it shown as `***@`: MLflow's own messages may
    quote the tracking URI whole ("API request to https://user:token@host/... failed")."""
    return _URL_CREDENTIALS.sub(r"\g<scheme>***@", text)


def _one_line(text: str) -> str:
    line = credentials_hidden(" ".join(text.split()))
    return line if len(line) <= _MAX_CAUSE_CHARS else line[: _MAX_CAUSE_CHARS - 1] + "…"


def _root_cause(exc: BaseException) -> BaseException:
    """The innermost exception: `[Errno 111] Connection refused` rather than five wrappers."""
    seen: set[int] = set()
    while id(exc) not in seen:
        seen.add(id(exc))
        inner = exc.__cause__ or exc.__context__ or getattr(exc, "reason", None)
        if not isinstance(inner, BaseException):
            break
        exc = inner
    return exc


def _is_transport_failure(exc: MlflowException) -> bool:
    """True when the request never got an MLflow answer (refused, timed out, 5xx retries)."""
    cause: BaseException | None = exc
    seen: set[int] = set()
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        if isinstance(cause, (requests.RequestException, ConnectionError, TimeoutError)):
            return True
        cause = cause.__cause__ or cause.__context__
    return False


def translate(
    exc: MlflowException, uri: str, model: str | None = None, version: str | None = None
) -> RegistryError:
    """The RegistryError that says what `exc` means for this model/version at `uri`."""
    subject = ""
    if model is not None:
        subject = f"model {model!r}" + (f" version {version}" if version is not None else "")
    if isinstance(exc, RestException):
        server_says = _one_line(exc.message)
        status = exc.get_http_status_code()
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            return VersionNotFound(f"{subject or 'resource'} not found in MLflow at {uri} ({server_says})")
        if status >= 500:
            return RegistryUnavailable(f"MLflow at {uri} answered HTTP {status}: {server_says}")
        return RegistryError(f"MLflow at {uri} rejected the request for {subject or 'registry'}: {server_says}")
    if _is_transport_failure(exc):
        cause = _root_cause(exc)
        return RegistryUnavailable(
            f"MLflow at {uri} is unreachable: {_one_line(str(cause) or type(cause).__name__)}"
        )
    return RegistryError(f"MLflow call for {subject or 'registry'} at {uri} failed: {_one_line(exc.message)}")


@contextmanager
def translated(
    client: mlflow.MlflowClient, model: str | None = None, version: str | None = None
) -> Iterator[None]:
    """Run MLflow calls, re-raising their exceptions as RegistryError subclasses."""
    try:
        yield
    except MlflowException as exc:
        raise translate(exc, registry_uri(client), model, version) from exc
