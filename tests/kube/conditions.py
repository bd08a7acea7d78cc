"""Knative's condition machinery as KServe's status uses it, and KServe's modelStatus (knative.dev/pkg `apis/condition_set.go`
at the commit knative-v1.21.0 and KServe v0.20.0 vendor, 4a022ed9999a).

A *living* condition set has a happy condition (`Ready`) and dependents: any dependent False makes
Ready False with that dependent's reason and message; else any Unknown makes it Unknown with its
reason; else Ready is True with no reason (L283-301, L354-412). Conditions are kept sorted by type
(L206-207); `lastTransitionTime` changes only when the status does (L197-201). Dependents carry an
empty severity (Error), every other condition `severity: Info` (L220-225).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

TRUE, FALSE, UNKNOWN = "True", "False", "Unknown"


@dataclass(frozen=True)
class Cond:
    status: str
    reason: str = ""
    message: str = ""


def living(dependents: Iterable[Cond]) -> Cond:
    """The happy condition over `dependents`, as a living condition set computes it."""
    dependents = list(dependents)
    for wanted in (FALSE, UNKNOWN):
        for condition in dependents:
            if condition.status == wanted:
                return Cond(wanted, condition.reason, condition.message)
    return Cond(TRUE)


def written(
    conditions: Mapping[str, Cond], happy: str, dependents: Iterable[str], previous: Iterable[Mapping[str, Any]] | None
) -> list[dict[str, Any]]:
    """The `status.conditions` list: sorted by type, Info severity off the happy path, and the
    previous `lastTransitionTime` kept where the status did not change."""
    before = {c.get("type"): c for c in previous or () if isinstance(c, Mapping)}
    now = datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")
    path = {happy, *dependents}
    rows = []
    for type_ in sorted(conditions):
        condition = conditions[type_]
        old = before.get(type_)
        row: dict[str, Any] = {
            "type": type_,
            "status": condition.status,
            "lastTransitionTime": old["lastTransitionTime"]
            if old and old.get("status") == condition.status and old.get("lastTransitionTime")
            else now,
        }
        if condition.reason:
            row["reason"] = condition.reason
        if condition.message:
            row["message"] = condition.message
        if type_ not in path:
            row["severity"] = "Info"
        rows.append(row)
    return rows


def model_status(target: str, *, loaded_once: bool, ready_pods: int, failure_info: Mapping[str, Any] | None) -> dict[str, Any]:
    """`status.modelStatus` as KServe v0.20.0 writes it (inference_service_status.go L658-677
    `UpdateModelRevisionStates`, L721-728): the transition follows the target state, the active state
    stays "" until the first load, `copies.totalCopies` counts ready pods, `failedCopies` is always 0,
    and `lastFailureInfo` is never cleared."""
    transition = {"Pending": "InProgress", "Loading": "InProgress", "Loaded": "UpToDate",
                  "FailedToLoad": "BlockedByFailedLoad"}[target]  # fmt: skip
    model: dict[str, Any] = {
        "transitionStatus": transition,
        "states": {"activeModelState": "Loaded" if loaded_once else "", "targetModelState": target},
        "copies": {"failedCopies": 0, "totalCopies": ready_pods},
    }
    if failure_info is not None:
        model["lastFailureInfo"] = dict(failure_info)
    return model
