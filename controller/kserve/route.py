"""The traffic split of a Standard-mode rollout: weights on a Gateway API HTTPRoute the user owns.

KServe v0.20.0 splits no Standard-mode traffic (a `spec.canary[]` entry gets its own Deployment
and Service but no request: the HTTPRoute weights of kserve#5912 and the readiness gating of
#5984 are on master only, and even there only KServe's own Gateway-API routes split). So the split
is ours, as Flagger's Gateway-API router and Argo Rollouts' plugin do it: the user's HTTPRoute
(hostnames, gateways, matches: theirs) sends clients to the InferenceService's predictor Service;
in every rule that does, modelrollout owns the `backendRefs`: the predictor Service with weight
100 - w, and the second InferenceService's predictor Service (`<name>-canary` or `<name>-baseline`)
with w. Rules that reach other Services are left alone. A second backend at weight 0 is removed
from the rule, so at rest the route is the user's again.

Pure functions over the dicts the API server returns (no cluster calls).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

GROUP = "gateway.networking.k8s.io"
VERSION = "v1"
PLURAL = "httproutes"


class RouteError(ValueError):
    """The HTTPRoute cannot carry the split (names the route and what is missing)."""


def _is_service(ref: Mapping[str, Any], name: str) -> bool:
    return ref.get("name") == name and ref.get("kind", "Service") == "Service" and ref.get("group", "") in ("", "core")


def _ours(rule: Mapping[str, Any], services: tuple[str, ...]) -> bool:
    refs = rule.get("backendRefs") or []
    return bool(refs) and all(any(_is_service(ref, s) for s in services) for ref in refs)


def split_rules(
    route: Mapping[str, Any], primary_service: str, second_service: str | None, weight: int, managed: tuple[str, ...]
) -> list[dict[str, Any]]:
    """`spec.rules` with every rule that reaches only `managed` Services (the primary's and our second
    InferenceServices') sending 100 - `weight` to `primary_service` and `weight` to `second_service`.

    Raises RouteError when no rule reaches the primary's Service: clients would never see the split.
    """
    if not 0 <= weight <= 100:
        raise ValueError(f"weight must be 0..100, got {weight}")
    if weight and second_service is None:
        raise ValueError("a weight for the second backend needs its Service name")
    rules = copy.deepcopy(list((route.get("spec") or {}).get("rules") or []))
    services = (primary_service, *managed)
    where = f"HTTPRoute {route.get('metadata', {}).get('namespace')}/{route.get('metadata', {}).get('name')}"
    touched = 0
    for rule in rules:
        if not _ours(rule, services):
            continue
        refs = rule["backendRefs"]
        template = next((r for r in refs if _is_service(r, primary_service)), refs[0])
        primary = {**copy.deepcopy(template), "name": primary_service, "weight": 100 - weight}
        rule["backendRefs"] = [primary]
        if weight:
            rule["backendRefs"].append({**copy.deepcopy(template), "name": second_service, "weight": weight})
        touched += 1
    if not touched:
        raise RouteError(
            f"{where} has no rule whose backendRefs reach only Service {primary_service} (the InferenceService's "
            "predictor): add one, and send clients through the route"
        )
    return rules


def weight_of(route: Mapping[str, Any] | None, service: str) -> int:
    """The weight the route's first rule that names `service` gives it (0 when none does)."""
    for rule in (route or {}).get("spec", {}).get("rules") or []:
        refs = rule.get("backendRefs") or []
        for ref in refs:
            if _is_service(ref, service):
                # Gateway API: an omitted weight is 1, proportionally (here: all, when alone).
                total = sum(int(r.get("weight", 1)) for r in refs)
                return round(100 * int(ref.get("weight", 1)) / total) if total else 0
    return 0


def hostname(route: Mapping[str, Any] | None) -> str | None:
    names = (route or {}).get("spec", {}).get("hostnames") or []
    return str(names[0]) if names else None
