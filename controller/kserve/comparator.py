"""The KServe platform with its shadow comparator kept in step.

On KServe the shadow is a `<name>-shadow` InferenceService that no client calls; the primary's
logger sends every request/response pair to the comparator (`canary/traffic/comparator.py`), which replays
the request to the shadow. The comparator must therefore know, for each shadowed primary, the
shadow's address, the versions and the rollout's comparison tolerance: this wrapper tells it on
every `apply` (`PUT /admin/shadows`, idempotent, so a restarted comparator is reconfigured within
one tick) and withdraws it when the rollout leaves the shadow role or is torn down
(`DELETE /admin/shadows/{namespace}/{name}`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import httpx

from canary.decision.tolerance import Comparison
from canary.traffic.comparator import ShadowTarget
from controller.kserve.platform import KServeError, KServePlatform
from controller.platform import Routing, VersionHealth

log = logging.getLogger("modelrollout.kserve")


class ComparatorError(KServeError):
    """The comparator could not be told about a shadow; retried on the next tick."""


class ComparedKServePlatform:
    """`controller.platform.Platform`: KServePlatform plus the comparator's shadow registrations."""

    def __init__(
        self, platform: KServePlatform, comparator_url: str | None, timeout_s: float = 3.0, token: str | None = None
    ) -> None:
        self.platform = platform
        self.comparator_url = comparator_url.rstrip("/") if comparator_url else None
        # The comparator's admin token (canary/traffic/comparator.py ADMIN_TOKEN_ENV), sent on every call.
        headers = {"authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(timeout=timeout_s, headers=headers)
        # Rollouts known to have no registration; after a restart nobody is, so each is withdrawn once.
        self._withdrawn: set[str] = set()

    def apply(self, rollout: str, routing: Routing, artifact_uris: Mapping[str, str]) -> None:
        self.platform.apply(rollout, routing, artifact_uris)
        if self.comparator_url is None:
            return
        target = self.platform.target(rollout)
        if routing.candidate_role == "shadow" and routing.candidate_version and routing.stable_version:
            address = self.platform.shadow_address(rollout)
            if address is None:
                return  # the shadow has no address yet; the candidate is not ready either
            logged, percent = self.platform.logged_service(rollout, routing)
            registration = ShadowTarget(
                rollout=rollout,
                namespace=target.namespace,
                inference_service=logged,
                model=routing.model,
                stable_version=routing.stable_version,
                candidate_version=routing.candidate_version,
                shadow_url=address,
                shadow_model=target.name,  # every InferenceService of the rollout serves the primary's model name
                percent=percent,
                comparison=Comparison.of(routing.tolerance),
            )
            self._send("PUT", "/admin/shadows", registration.model_dump(mode="json", by_alias=True, exclude_none=True))
            self._withdrawn.discard(rollout)
        elif rollout not in self._withdrawn:
            self._withdraw(rollout)
            self._withdrawn.add(rollout)

    def health(self, rollout: str, version: str) -> VersionHealth:
        return self.platform.health(rollout, version)

    def endpoint(self, rollout: str) -> str | None:
        return self.platform.endpoint(rollout)

    def analysis_variables(self, rollout: str, version: str) -> Mapping[str, str]:
        return self.platform.analysis_variables(rollout, version)

    def teardown(self, rollout: str) -> None:
        self.platform.teardown(rollout)
        if self.comparator_url is not None:
            self._withdraw(rollout)
        self._withdrawn.discard(rollout)

    def _withdraw(self, rollout: str) -> None:
        target = self.platform.target(rollout)
        logged, _ = self.platform.logged_service(rollout, Routing(model="-", stable_version=None))
        self._send("DELETE", f"/admin/shadows/{target.namespace}/{logged}")

    def close(self) -> None:
        self._http.close()

    def _send(self, method: str, path: str, body: dict | None = None) -> None:
        url = f"{self.comparator_url}{path}"
        try:
            response = self._http.request(method, url, json=body)
        except httpx.HTTPError as err:
            raise ComparatorError(f"shadow comparator at {self.comparator_url} unreachable: {err}") from err
        if response.status_code >= 300:
            raise ComparatorError(f"shadow comparator refused {method} {path}: HTTP {response.status_code} {response.text[:200]}")
