"""The KServe platform: `controller.platform.Platform` over InferenceServices in a cluster.

A thin layer of cluster calls around the pure modules: `kserve_documents.desired` says what the
primary InferenceService and its `<name>-shadow` must look like, `kserve_patch.merge_patch` how
to get there from what was read, `kserve_status.predictor_readiness` whether a version serves.
Objects are camelCase dicts sent through `CustomObjectsApi` (the kserve SDK's own calls send
snake_case with kubernetes 37 — REFERENCE.md).

What this layer adds is ordering and memory:
- Entering the shadow role, the shadow is created *before* the primary gets its logger, and
  leaving it the logger goes *before* the shadow is deleted, so the comparator never replays a
  request to an InferenceService that does not exist.
- The last routing and artifact URIs applied per rollout are kept in memory: `health` and
  `analysis_variables` need them to know which object (and which storageUri) serves a version.
  After a restart the controller applies again before it asks, so nothing is persisted here.
- The primary is the user's serving endpoint: `teardown` takes it back to the stable version
  alone, never deletes it. The shadow is deleted only when it carries our labels.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from kubernetes.client import CustomObjectsApi
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError

from controller.kserve_documents import (
    GROUP,
    MANAGED_BY_LABEL,
    PLURAL,
    ROLE_LABEL,
    VERSION,
    IsvcTarget,
    desired,
    shadow_name,
)
from controller.kserve_patch import PATCH_CONTENT_TYPE, merge_patch
from controller.kserve_status import (
    SUPERSEDED_REVISION_ANNOTATION,
    deployment_mode,
    predictor_readiness,
)
from controller.platform import Routing, VersionHealth

log = logging.getLogger(__name__)

Targets = Mapping[str, IsvcTarget] | Callable[[str], IsvcTarget]


class KServeError(RuntimeError):
    """A cluster call failed for a reason a retry on the next tick will not obviously fix."""


@dataclass(frozen=True)
class _Applied:
    target: IsvcTarget
    routing: Routing
    uris: Mapping[str, str]


@dataclass(frozen=True)
class _Served:
    """Which InferenceService serves a version, under which storageUri."""

    name: str
    uri: str
    is_shadow: bool


class KServePlatform:
    """Drives one InferenceService (plus a `-shadow` one in the shadow role) per rollout."""

    def __init__(self, api_client: Any, targets: Targets, comparator_url: str | None = None) -> None:
        self._api = CustomObjectsApi(api_client)
        self._targets = targets
        self._comparator_url = comparator_url
        self._applied: dict[str, _Applied] = {}
        self._lock = threading.Lock()

    # -----------------------------------------------------------------------------------------
    # Platform

    def apply(self, rollout: str, routing: Routing, artifact_uris: Mapping[str, str]) -> None:
        target = self._target(rollout)
        uris = {v: artifact_uris[v] for v in routing.versions if v in artifact_uris}
        # One retry on 409: someone (KServe, another tick) wrote between our read and our write.
        for attempt in (1, 2):
            primary = self._read(target, target.name)
            shadow = self._read(target, shadow_name(target.name))
            if shadow is not None:
                _check_ours(shadow)
            want = desired(
                target,
                routing,
                uris,
                self._comparator_url,
                observed_primary=primary,
                observed_shadow=shadow,
            )
            try:
                if want.shadow is not None:
                    self._converge(target, shadow, want.shadow)
                    self._converge(target, primary, want.primary)
                else:
                    self._converge(target, primary, want.primary)
                    if shadow is not None:
                        self._delete(target, shadow_name(target.name))
                break
            except ApiException as err:
                if err.status == 409 and attempt == 1:
                    log.info("%s: InferenceService changed while applying; reading it again", rollout)
                    continue
                raise _error(err, f"applying rollout {rollout!r} to InferenceService {_where(target)}") from err
            except HTTPError as err:
                raise KServeError(f"applying rollout {rollout!r}: API server unreachable: {err}") from err
        with self._lock:
            self._applied[rollout] = _Applied(target, routing, dict(uris))

    def health(self, rollout: str, version: str) -> VersionHealth:
        with self._lock:
            applied = self._applied.get(rollout)
        served = _serving(applied, version)
        if applied is None or served is None:
            return VersionHealth(ready=False)
        isvc = self._read(applied.target, served.name)
        if isvc is None:
            return VersionHealth(ready=False)
        routing = applied.routing
        if (
            version == routing.stable_version
            and routing.candidate_role == "canary"
            and served.uri != _get(isvc, "spec", "predictor", "model", "storageUri")
        ):
            # Knative canary: the stable is the rolled-out revision, not the spec's storageUri.
            rolled_out = _get(isvc, "status", "components", "predictor", "latestRolledoutRevision")
            return VersionHealth(ready=bool(rolled_out))
        readiness = predictor_readiness(isvc, served.uri)
        if readiness.failure is not None or not readiness.candidate_ready:
            return VersionHealth(ready=False, failure=readiness.failure)
        if served.is_shadow and applied.target.deployment_mode == "Knative":
            return self._logging_primary(applied)
        return VersionHealth(ready=True)

    def _logging_primary(self, applied: _Applied) -> VersionHealth:
        """Is the primary serving its clients from the revision that has the logger?

        The logger becomes pod annotations, so adding it makes a new Knative revision (KServe v0.20.0
        `components/component.go` L60-75); clients stay on the revision before until it is ready, and
        until then no request reaches the comparator: the shadow is not fed, so it is not ready.
        """
        target, stable = applied.target, applied.routing.stable_version
        primary = self._read(target, target.name)
        if primary is None or stable is None or stable not in applied.uris:
            return VersionHealth(ready=False)
        readiness = predictor_readiness(primary, applied.uris[stable])
        if readiness.failure is not None:
            return VersionHealth(ready=False, failure=f"the primary with the shadow's logger: {readiness.failure}")
        created = _get(primary, "status", "components", "predictor", "latestCreatedRevision")
        serving = [share for share in readiness.traffic if share.percent]
        logged = (
            readiness.candidate_ready
            and _get(primary, "spec", "predictor", "logger") is not None
            and [share.revision for share in serving] == [created]
        )
        return VersionHealth(ready=bool(logged))

    def endpoint(self, rollout: str) -> str | None:
        target = self._target(rollout)
        isvc = self._read(target, target.name)
        url = _get(isvc, "status", "url")
        return url if isinstance(url, str) and url else None

    def analysis_variables(self, rollout: str, version: str) -> Mapping[str, str]:
        with self._lock:
            applied = self._applied.get(rollout)
        served = _serving(applied, version)
        if applied is None or served is None:
            return {}
        variables = {"inference_service": served.name}
        isvc = self._read(applied.target, served.name)
        if isvc is None:
            return variables
        if deployment_mode(isvc) == "Knative":
            revision = _knative_revision(isvc, served, version == applied.routing.stable_version)
            if revision:
                variables["revision"] = revision
                variables["workload"] = f"{revision}-deployment"
        else:
            predictor = _standard_predictor(isvc, served.uri)
            if predictor is not None:
                name = predictor.get("name")
                variables["workload"] = f"{served.name}-{name}-predictor" if name else f"{served.name}-predictor"
        return variables

    def target(self, rollout: str) -> IsvcTarget:
        """The InferenceService the rollout drives (KServeError when none is known)."""
        return self._target(rollout)

    def shadow_address(self, rollout: str) -> str | None:
        """Base URL the comparator replays requests to: the `-shadow` InferenceService's in-cluster
        address (`status.address.url`, else `status.url`); None while it has none."""
        target = self._target(rollout)
        shadow = self._read(target, shadow_name(target.name))
        for path in (("status", "address", "url"), ("status", "url")):
            url = _get(shadow, *path)
            if isinstance(url, str) and url:
                return url
        return None

    def teardown(self, rollout: str) -> None:
        target = self._target(rollout)
        with self._lock:
            applied = self._applied.get(rollout)
        stable = applied.routing.stable_version if applied is not None else None
        if applied is not None and stable in applied.uris and self._read(target, target.name) is not None:
            # (A primary deleted by someone else is not brought back by a teardown.)
            assert stable is not None
            stable_only = Routing(model=applied.routing.model, stable_version=stable)
            self.apply(rollout, stable_only, {stable: applied.uris[stable]})
        else:
            self._strip_without_memory(target)
        shadow = self._read(target, shadow_name(target.name))
        if shadow is not None:
            _check_ours(shadow)
            self._delete(target, shadow_name(target.name))
        with self._lock:
            self._applied.pop(rollout, None)

    # -----------------------------------------------------------------------------------------
    # Cluster calls

    def _target(self, rollout: str) -> IsvcTarget:
        try:
            target = self._targets(rollout) if callable(self._targets) else self._targets[rollout]
        except KeyError:
            raise KServeError(f"no InferenceService target is known for rollout {rollout!r}") from None
        if not isinstance(target, IsvcTarget):
            raise KServeError(f"the target of rollout {rollout!r} is a {type(target).__name__}, not an IsvcTarget")
        return target

    def _read(self, target: IsvcTarget, name: str) -> dict[str, Any] | None:
        try:
            return self._api.get_namespaced_custom_object(GROUP, VERSION, target.namespace, PLURAL, name)
        except ApiException as err:
            if err.status == 404:
                return None
            raise _error(err, f"reading InferenceService {target.namespace}/{name}") from err
        except HTTPError as err:
            raise KServeError(f"reading InferenceService {target.namespace}/{name}: API server unreachable: {err}") from err

    def _converge(self, target: IsvcTarget, current: dict[str, Any] | None, want: dict[str, Any]) -> None:
        """Create `want`, or patch `current` to it; no write at all when nothing differs."""
        name = want["metadata"]["name"]
        if current is None:
            log.info("creating InferenceService %s/%s", target.namespace, name)
            self._api.create_namespaced_custom_object(GROUP, VERSION, target.namespace, PLURAL, want)
            return
        patch = merge_patch(current, want)
        if patch is None:
            return
        log.info("patching InferenceService %s/%s", target.namespace, name)
        self._api.patch_namespaced_custom_object(
            GROUP, VERSION, target.namespace, PLURAL, name, patch, _content_type=PATCH_CONTENT_TYPE
        )

    def _delete(self, target: IsvcTarget, name: str) -> None:
        try:
            log.info("deleting InferenceService %s/%s", target.namespace, name)
            self._api.delete_namespaced_custom_object(GROUP, VERSION, target.namespace, PLURAL, name)
        except ApiException as err:
            if err.status != 404:  # already gone is what we wanted
                raise _error(err, f"deleting InferenceService {target.namespace}/{name}") from err

    def _strip_without_memory(self, target: IsvcTarget) -> None:
        """Teardown after a restart, with no stable URI known: remove the logger and the canary.

        Standard: dropping `spec.canary` leaves the stable predictor alone. Knative: the stable's
        storageUri lives only in the rolled-out revision, so a canary share is pinned to 0
        (100% on that revision) rather than guessed.
        """
        primary = self._read(target, target.name)
        if primary is None:
            return
        predictor: dict[str, Any] = {}
        patch: dict[str, Any] = {"spec": {"predictor": predictor}}
        if _get(primary, "spec", "predictor", "logger") is not None:
            predictor["logger"] = None
        if _get(primary, "spec", "canary") is not None:
            patch["spec"]["canary"] = None
        percent = _get(primary, "spec", "predictor", "canaryTrafficPercent")
        if isinstance(percent, int) and percent > 0:
            predictor["canaryTrafficPercent"] = 0
        if not predictor and "canary" not in patch["spec"]:
            return
        patch["metadata"] = {"resourceVersion": primary["metadata"]["resourceVersion"]}
        try:
            self._api.patch_namespaced_custom_object(
                GROUP, VERSION, target.namespace, PLURAL, target.name, patch, _content_type=PATCH_CONTENT_TYPE
            )
        except ApiException as err:
            raise _error(err, f"tearing down InferenceService {_where(target)}") from err


# ---------------------------------------------------------------------------------------------
# Pure helpers


def _serving(applied: _Applied | None, version: str) -> _Served | None:
    """The InferenceService and storageUri serving `version` under the routing last applied."""
    if applied is None or version not in applied.routing.versions or version not in applied.uris:
        return None
    routing, name = applied.routing, applied.target.name
    if version == routing.candidate_version and routing.candidate_role == "shadow":
        return _Served(shadow_name(name), applied.uris[version], True)
    return _Served(name, applied.uris[version], False)


def _knative_revision(isvc: Mapping[str, Any], served: _Served, is_stable: bool) -> str | None:
    """The Knative revision serving `served`: rolled out for the stable, newest-made-from-our-spec else."""
    predictor = _get(isvc, "status", "components", "predictor") or {}
    spec_uri = _get(isvc, "spec", "predictor", "model", "storageUri")
    if is_stable and not served.is_shadow:
        if spec_uri == served.uri or _get(isvc, "spec", "predictor", "canaryTrafficPercent") is not None:
            rolled_out = predictor.get("latestRolledoutRevision") or predictor.get("latestReadyRevision")
            return rolled_out if isinstance(rolled_out, str) and rolled_out else None
        return None  # promoted: the stable's storageUri is served by no revision any more
    if spec_uri != served.uri:
        return None
    created = predictor.get("latestCreatedRevision")
    superseded = _get(isvc, "metadata", "annotations", SUPERSEDED_REVISION_ANNOTATION)
    if not isinstance(created, str) or not created or created == superseded:
        return None  # KServe has not made the revision for our storageUri yet
    return created


def _standard_predictor(isvc: Mapping[str, Any], uri: str) -> Mapping[str, Any] | None:
    for entry in _get(isvc, "spec", "canary") or []:
        if _get(entry, "predictor", "model", "storageUri") == uri:
            return entry.get("predictor")
    predictor = _get(isvc, "spec", "predictor")
    if _get(predictor, "model", "storageUri") == uri:
        return predictor
    return None


def _check_ours(shadow: Mapping[str, Any]) -> None:
    labels = _get(shadow, "metadata", "labels") or {}
    if labels.get(MANAGED_BY_LABEL) != "modelrollout" or labels.get(ROLE_LABEL) != "shadow":
        where = f"{_get(shadow, 'metadata', 'namespace')}/{_get(shadow, 'metadata', 'name')}"
        raise KServeError(
            f"InferenceService {where} exists but is not a shadow made by modelrollout "
            f"(labels {MANAGED_BY_LABEL}=modelrollout, {ROLE_LABEL}=shadow missing); rename it or the target"
        )


def _error(err: ApiException, doing: str) -> KServeError:
    message = err.reason or ""
    body = err.body
    if body:
        try:
            message = json.loads(body).get("message") or message
        except (ValueError, AttributeError):
            message = str(body)
    return KServeError(" ".join(f"{doing}: {err.status} {message}".split()))


def _where(target: IsvcTarget) -> str:
    return f"{target.namespace}/{target.name}"


def _get(obj: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(obj, Mapping):
            return None
        obj = obj.get(key)
    return obj
