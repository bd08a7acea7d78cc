"""Kubernetes `Status` failures, shaped as a real API server sends them.

Clients act on `code` and `reason` (the official client raises `ApiException(status=...)`, kopf maps
422 to "retry the patch next cycle", kubectl prints `message`), so each constructor below keeps the
reason and the message wording of kube-apiserver for the same failure.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kmock import KubernetesError


@dataclass(frozen=True)
class Target:
    """What a failure is about: `inferenceservices.serving.kserve.io "name"` in messages."""

    group: str
    plural: str
    kind: str
    name: str | None = None

    @property
    def qualified(self) -> str:
        return f"{self.plural}.{self.group}" if self.group else self.plural

    def details(self, **extra: Any) -> dict[str, Any]:
        details: dict[str, Any] = {"group": self.group, "kind": self.plural}
        if self.name:
            details["name"] = self.name
        return {**details, **extra}


def status(exc: KubernetesError) -> dict[str, Any]:
    """The `Status` document of a failure."""
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": exc.message or "",
        "reason": exc.reason or "",
        "details": exc.details or {},
        "code": exc.status,
    }


def bad_request(message: str) -> KubernetesError:
    return KubernetesError(status=400, reason="BadRequest", message=message, details={})


def not_found(target: Target) -> KubernetesError:
    return KubernetesError(
        status=404, reason="NotFound", message=f'{target.qualified} "{target.name}" not found', details=target.details()
    )


def no_such_resource() -> KubernetesError:
    return KubernetesError(
        status=404, reason="NotFound", message="the server could not find the requested resource", details={}
    )


def method_not_allowed(method: str) -> KubernetesError:
    return KubernetesError(
        status=405,
        reason="MethodNotAllowed",
        message=f"the server does not allow this method on the requested resource ({method})",
        details={},
    )


def already_exists(target: Target) -> KubernetesError:
    return KubernetesError(
        status=409,
        reason="AlreadyExists",
        message=f'{target.qualified} "{target.name}" already exists',
        details=target.details(),
    )


def conflict(
    target: Target,
    why: str = "the object has been modified; please apply your changes to the latest version and try again",
) -> KubernetesError:
    return KubernetesError(
        status=409,
        reason="Conflict",
        message=f'Operation cannot be fulfilled on {target.qualified} "{target.name}": {why}',
        details=target.details(),
    )


def expired(message: str) -> KubernetesError:
    return KubernetesError(status=410, reason="Expired", message=message, details={})


def unsupported_media_type(content_type: str, accepted: list[str]) -> KubernetesError:
    return KubernetesError(
        status=415,
        reason="UnsupportedMediaType",
        message=f"the body of the request was in an unknown format - accepted media types include: {', '.join(accepted)}"
        + (f" (got {content_type!r})" if content_type else ""),
        details={},
    )


def unprocessable(message: str, target: Target | None = None) -> KubernetesError:
    """A 422 that is not a field validation: e.g. a JSON-patch `test` op that failed."""
    return KubernetesError(status=422, reason="Invalid", message=message, details=target.details() if target else {})


@dataclass(frozen=True)
class FieldError:
    """One `field: problem` of an Invalid status, as `field.Error` renders it in Go."""

    field: str
    reason: str  # FieldValueInvalid, FieldValueRequired, FieldValueNotSupported, FieldValueForbidden, ...
    detail: str  # the text after the field, e.g. 'Required value' or 'Invalid value: -1: must be ...'

    def __str__(self) -> str:
        return f"{self.field}: {self.detail}" if self.field else self.detail


def invalid(target: Target, errors: list[FieldError]) -> KubernetesError:
    """422 Invalid: `Kind.group "name" is invalid: field: problem` (several go in brackets)."""
    kind = f"{target.kind}.{target.group}" if target.group else target.kind
    summary = str(errors[0]) if len(errors) == 1 else "[" + ", ".join(str(e) for e in errors) + "]"
    causes = [{"reason": e.reason, "message": e.detail, "field": e.field} for e in errors]
    return KubernetesError(
        status=422,
        reason="Invalid",
        message=f'{kind} "{target.name}" is invalid: {summary}',
        details={"name": target.name or "", "group": target.group, "kind": target.kind, "causes": causes},
    )


def internal(message: str) -> KubernetesError:
    return KubernetesError(status=500, reason="InternalError", message=message, details={})
