"""Standard mode on released KServe: the InferenceServices of one rollout and the route's weights.

`documents` says which InferenceServices a routing needs (the primary; `<name>-shadow`
and `<name>-baseline` in the shadow role; `<name>-canary` in the canary role); this module decides,
from what was read, how much of the user's HTTPRoute (route.py) the second one gets:

- a second InferenceService gets its share only once it is ready for the storageUri asked (a
  starting or failed predictor is never routed to);
- at promotion (weight 100) the candidate's `<name>-canary` takes everything while the primary
  rolls to the candidate's storageUri; once the primary's Deployment has rolled out, the primary
  takes everything back and `<name>-canary` goes. The same hand-over holds on the ticks after the
  engine has moved on (the stable is then the promoted version): a `<name>-canary` that serves the
  stable's storageUri is kept, and routed to, until the primary serves it;
- a second InferenceService that serves another storageUri than asked (a superseded candidate) is
  deleted once the route has left it, and created afresh: its status is then about one
  storageUri only (status `_standard`).

Pure: the caller reads, calls `split`, writes in the order the answer gives.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from controller.kserve.documents import BASELINE_SUFFIX, CANARY_SUFFIX, Desired

PREDICTOR_SUFFIX = "-predictor"


def predictor_service(isvc: Mapping[str, Any]) -> str:
    """The Service (and Deployment) KServe v0.20.0 names for an InferenceService's predictor:
    `<isvc>-predictor`, or `<isvc>-<predictor.name>-predictor` when the predictor is named
    (constants.go `PredictorServiceName`, components/predictor.go L159)."""
    name = isvc["metadata"]["name"]
    named = (isvc.get("spec") or {}).get("predictor", {}).get("name")
    return f"{name}-{named}{PREDICTOR_SUFFIX}" if named else f"{name}{PREDICTOR_SUFFIX}"


def storage_uri(isvc: Mapping[str, Any] | None) -> str | None:
    if not isinstance(isvc, Mapping):
        return None
    return ((isvc.get("spec") or {}).get("predictor") or {}).get("model", {}).get("storageUri")


@dataclass(frozen=True)
class Split:
    """What to write: the second InferenceService the route shares with the primary and its weight,
    which second InferenceServices to keep (the others are deleted after the route is written)."""

    second: str | None  # the InferenceService name taking `weight`
    weight: int
    keep: frozenset[str]


@dataclass(frozen=True)
class Observed:
    """One second InferenceService as read: its storageUri and whether it is ready for it."""

    uri: str | None
    ready: bool


def split(
    name: str,
    want: Desired,
    target_weight: int,
    stable_uri: str,
    observed: Mapping[str, Observed],
    primary_serves: Mapping[str, bool],
) -> Split:
    """The route's split for `want` (Standard documents of rollout `name`).

    `target_weight`: the share the routing asks for the second InferenceService (the canary step,
    100 when promoting, the shadow percentage for the baseline). `observed` by InferenceService
    name; `primary_serves[uri]`: the primary's Deployment has rolled out to `uri`.
    """
    canary, baseline = name + CANARY_SUFFIX, name + BASELINE_SUFFIX
    keep: set[str] = set()
    wanted = {canary: want.canary, baseline: want.baseline}
    for second, document in wanted.items():
        if document is not None and observed.get(second, Observed(None, False)).uri in (None, _uri(document)):
            keep.add(second)
    if want.canary is not None:
        uri = _uri(want.canary)
        ready = observed.get(canary, Observed(None, False))
        fit = ready.uri == uri and ready.ready
        if target_weight == 100 and primary_serves.get(uri, False):
            return Split(None, 0, frozenset(keep))  # promoted: the primary serves the candidate
        return Split(canary if fit else None, target_weight if fit else 0, frozenset(keep))
    if want.baseline is not None:
        ready = observed.get(baseline, Observed(None, False))
        fit = ready.uri == _uri(want.baseline) and ready.ready
        return Split(baseline if fit else None, target_weight if fit else 0, frozenset(keep))
    # No candidate in the route's share: the hand-over after a promotion, if one is under way.
    handing = observed.get(canary)
    if handing is not None and handing.uri == stable_uri and handing.ready and not primary_serves.get(stable_uri, False):
        return Split(canary, 100, frozenset({canary}))
    return Split(None, 0, frozenset())


def _uri(document: Mapping[str, Any]) -> str | None:
    return storage_uri(document)
