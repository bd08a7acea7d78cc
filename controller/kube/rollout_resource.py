"""A ModelRollout custom resource read and written as the operator needs it: pure functions, no cluster.

The API server checks what the CRD's schema can say; the rest (listed in controller/kube/crd.py) only
pydantic knows, so every object read is parsed with `canary.decision.spec.parse_rollout` and a failure
becomes a `SpecValid=False` condition — the rollout's state is kept as it is, untouched, until
the spec is fixed. The status is the engine's `RolloutStatus`, camelCase, whole: a restarted
operator reads it back and continues from the same step.
"""

from __future__ import annotations

import socket
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from pydantic import ValidationError

from canary.decision.engine import RecordEvent
from canary.decision.spec import API_VERSION, KIND, Condition, ModelRollout, RolloutStatus, SpecError, parse_rollout
from controller.kserve.documents import IsvcTarget

SPEC_VALID = "SpecValid"
STATUS_VALID = "StatusValid"
EVENT_MESSAGE_MAX = 1024  # what kube-apiserver keeps of an Event message
_STATUS_FIELDS = {field.alias or name for name, field in RolloutStatus.model_fields.items()}


class ResourceError(ValueError):
    """The resource cannot be driven as it is; the message says what to fix."""


@dataclass(frozen=True)
class RolloutResource:
    """One ModelRollout object as read from the API server."""

    rollout: ModelRollout
    status: RolloutStatus
    resource_version: str
    uid: str
    annotations: Mapping[str, str]


def parse_spec(obj: Mapping[str, Any]) -> ModelRollout:
    """The object's spec checked by pydantic; SpecError (one line per problem) when it is invalid."""
    meta = obj.get("metadata") or {}
    document = {
        "apiVersion": obj.get("apiVersion", API_VERSION),
        "kind": obj.get("kind", KIND),
        "metadata": {
            "name": meta.get("name", ""),
            "namespace": meta.get("namespace", "default"),
            "labels": meta.get("labels") or {},
            "annotations": meta.get("annotations") or {},
        },
        "spec": obj.get("spec"),
    }
    source = f"{document['metadata']['namespace']}/{document['metadata']['name']}"
    rollout = parse_rollout(document, source)
    if rollout.spec.target is None:
        raise SpecError(f"{source}: spec.target: required on Kubernetes (the InferenceService to roll out on)")
    return rollout


def parse_status(raw: Mapping[str, Any] | None) -> RolloutStatus:
    """The engine's status from the object's; keys it does not know (kopf's) are not ours and ignored."""
    known = {k: v for k, v in (raw or {}).items() if k in _STATUS_FIELDS}
    try:
        return RolloutStatus.model_validate(known)
    except ValidationError as err:
        problem = err.errors()[0]
        where = ".".join(str(p) for p in problem["loc"])
        raise ResourceError(
            f"status.{where}: {problem['msg']}; the rollout's state cannot be read. Fix it, or clear it to "
            "start over: kubectl patch mro NAME --subresource=status --type=merge -p '{\"status\":null}'"
        ) from None


def read(obj: Mapping[str, Any]) -> RolloutResource:
    """Spec and status of a ModelRollout object; SpecError or ResourceError name the problem."""
    meta = obj.get("metadata") or {}
    rollout = parse_spec(obj)
    return RolloutResource(
        rollout=rollout,
        status=parse_status(obj.get("status")),
        resource_version=str(meta.get("resourceVersion", "")),
        uid=str(meta.get("uid", "")),
        annotations=dict(meta.get("annotations") or {}),
    )


def status_patch(status: RolloutStatus, resource_version: str | None = None) -> dict[str, Any]:
    """A merge patch writing the whole status; top-level fields now unset are removed (null).

    With `resource_version` the write fails (409) if the object changed since it was read, so an
    operator never saves a decision taken on a stale status.
    """
    body = status.model_dump(mode="json", by_alias=True, exclude_none=True)
    for name, field in RolloutStatus.model_fields.items():
        body.setdefault(field.alias or name, None)
    patch: dict[str, Any] = {"status": body}
    if resource_version:
        patch["metadata"] = {"resourceVersion": resource_version}
    return patch


def status_unchanged(raw_status: Mapping[str, Any] | None, status: RolloutStatus) -> bool:
    """Whether writing `status` over the object's `raw_status` would change nothing.

    Both sides are compared as `status_patch` writes them, so a timestamp the API server keeps as
    it was sent ("...T10:00:00Z") and the same instant parsed and written again ("+00:00", or
    microseconds) count as equal, and keys the engine does not own (kopf's) are not compared: the
    patch leaves them alone anyway. A status that does not parse is always rewritten.
    """
    try:
        current = parse_status(raw_status)
    except ResourceError:
        return False
    return status_patch(current)["status"] == status_patch(status)["status"]


def conditions_patch(
    raw_status: Mapping[str, Any] | None, condition: Condition, resource_version: str | None = None
) -> dict[str, Any]:
    """A merge patch setting one condition and touching nothing else of the status.

    Used when the status cannot be produced by the engine (invalid spec or status): the list is
    rewritten whole (merge patches replace lists), from what is there, with `condition` set.
    """
    conditions = [dict(c) for c in (raw_status or {}).get("conditions") or [] if isinstance(c, Mapping)]
    new = condition.model_dump(mode="json", by_alias=True, exclude_none=True)
    for existing in conditions:
        if existing.get("type") == condition.type:
            if existing.get("status") == new["status"] and "lastTransitionTime" in existing:
                new["lastTransitionTime"] = existing["lastTransitionTime"]
            existing.clear()
            existing.update(new)
            break
    else:
        conditions.append(new)
    patch: dict[str, Any] = {"status": {"conditions": conditions}}
    if resource_version:
        patch["metadata"] = {"resourceVersion": resource_version}
    return patch


def condition_of(raw_status: Mapping[str, Any] | None, type_: str) -> Mapping[str, Any] | None:
    return next(
        (c for c in (raw_status or {}).get("conditions") or [] if isinstance(c, Mapping) and c.get("type") == type_),
        None,
    )


def set_condition(status: RolloutStatus, condition: Condition) -> None:
    for existing in status.conditions:
        if existing.type == condition.type:
            if existing.status != condition.status:
                existing.last_transition_time = condition.last_transition_time
            existing.status, existing.reason, existing.message = condition.status, condition.reason, condition.message
            return
    status.conditions.append(condition)


def isvc_target(rollout: ModelRollout) -> IsvcTarget:
    target = rollout.spec.target
    if target is None:  # parse_spec refuses this; kept for callers holding a ModelRollout of their own
        raise ResourceError(f"{rollout.metadata.name}: spec.target is required on Kubernetes")
    predictor = target.predictor
    resources = None
    if predictor is not None and predictor.resources is not None:
        resources = predictor.resources.model_dump(exclude_defaults=True) or None
    kwargs: dict[str, Any] = {}
    if predictor is not None and predictor.runtime:
        kwargs["runtime"] = predictor.runtime
    return IsvcTarget(
        rollout=rollout.metadata.name,
        name=target.inference_service,
        namespace=rollout.metadata.namespace,
        deployment_mode=target.deployment_mode,
        resources=resources,
        service_account=predictor.service_account_name if predictor is not None else None,
        http_route=target.http_route,
        **kwargs,
    )


def event_body(
    involved: Mapping[str, Any], event: RecordEvent, now: datetime | None = None, component: str = "modelrollout"
) -> dict[str, Any]:
    """A core/v1 Event about a ModelRollout, as `kubectl describe` and `kubectl get events` show it."""
    meta = involved.get("metadata") or {}
    stamp = (now or datetime.now(timezone.utc)).strftime("%Y-%m-%dT%H:%M:%SZ")
    message = event.message if len(event.message) <= EVENT_MESSAGE_MAX else event.message[: EVENT_MESSAGE_MAX - 1] + "…"
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": f"{meta.get('name', 'modelrollout')}.", "namespace": meta.get("namespace")},
        "involvedObject": {
            "apiVersion": involved.get("apiVersion", API_VERSION),
            "kind": involved.get("kind", KIND),
            "name": meta.get("name"),
            "namespace": meta.get("namespace"),
            "uid": meta.get("uid"),
            "resourceVersion": meta.get("resourceVersion"),
        },
        "type": event.type,
        "reason": event.reason,
        "message": message,
        "source": {"component": component},
        "reportingComponent": component,
        "reportingInstance": socket.gethostname()[:128],
        "firstTimestamp": stamp,
        "lastTimestamp": stamp,
        "count": 1,
    }
