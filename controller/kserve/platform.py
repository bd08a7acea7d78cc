"""The KServe platform: `controller.platform.Platform` over InferenceServices in a cluster.

A thin layer of cluster calls around the pure modules: `documents.desired` says what the
primary InferenceService and its `<name>-shadow` must look like, `patch.merge_patch` how
to get there from what was read, `status.predictor_readiness` whether a version serves.
Objects are camelCase dicts sent through `CustomObjectsApi` (the kserve SDK's own calls, on the
kubernetes 37 client, send snake_case keys the CRD does not define).

What this layer adds is ordering and memory:
- Entering the shadow role, the shadow is created *before* the primary gets its logger, and
  leaving it the logger goes *before* the shadow is deleted, so the comparator never replays a
  request to an InferenceService that does not exist.
- The last routing and artifact URIs applied per rollout are kept in memory: `health` and
  `analysis_variables` need them to know which object (and which storageUri) serves a version.
  After a restart the controller applies again before it asks, so nothing is persisted here.
- The primary is the user's serving endpoint: `teardown` takes it back to the stable version
  alone, never deletes it. The shadow is deleted only when it carries our labels.
- Given a `cache` (the operator's copy of the InferenceServices its watch sees), InferenceServices
  are read from it instead of the API server, so an idle rollout costs no request; every write's
  answer goes into it, so the next read sees the write. Patches carry the resourceVersion read, so
  one decided on a copy the watch has not caught up with yet is refused (409); `apply` then reads
  the InferenceServices from the API server once and decides again.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from kubernetes.client import AppsV1Api, CustomObjectsApi
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError

from controller.kserve import route as kserve_route
from controller.kserve.document_paths import value_at
from controller.kserve.documents import (
    BASELINE_SUFFIX,
    CANARY_SUFFIX,
    GROUP,
    MANAGED_BY_LABEL,
    PLURAL,
    ROLE_LABEL,
    VERSION,
    IsvcTarget,
    desired,
    shadow_name,
)
from controller.kserve.patch import PATCH_CONTENT_TYPE, merge_patch
from controller.kserve.standard import PREDICTOR_SUFFIX, Observed, predictor_service, split, storage_uri
from controller.kserve.status import (
    SUPERSEDED_REVISION_ANNOTATION,
    deployment_rolled_out,
    predictor_readiness,
)
from controller.platform import Routing, VersionHealth

log = logging.getLogger(__name__)

Targets = Mapping[str, IsvcTarget] | Callable[[str], IsvcTarget]


class InferenceServiceCache(Protocol):
    """The InferenceServices a watch keeps (controller/kube/object_view.py `ObjectView`)."""

    def get(self, namespace: str, name: str) -> Mapping[str, Any] | None: ...

    def observe(self, obj: Mapping[str, Any]) -> object: ...

    def forget(self, namespace: str, name: str, resource_version: str | None = None) -> object: ...

    def doubtful(self, namespace: str, name: str) -> bool: ...


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

    def __init__(
        self, api_client: Any, targets: Targets, comparator_url: str | None = None, cache: InferenceServiceCache | None = None
    ) -> None:
        self._api = CustomObjectsApi(api_client)
        self._apps = AppsV1Api(api_client)
        self._targets = targets
        self._comparator_url = comparator_url
        self._cache = cache
        self._applied: dict[str, _Applied] = {}
        self._lock = threading.Lock()

    # -----------------------------------------------------------------------------------------
    # Platform

    def apply(self, rollout: str, routing: Routing, artifact_uris: Mapping[str, str]) -> None:
        target = self._target(rollout)
        uris = {v: artifact_uris[v] for v in routing.versions if v in artifact_uris}
        # One retry, reading from the API server: on 409, someone (KServe, another tick) wrote between
        # our read and our write; on 404 with a cache, the watch showed an object since deleted (a
        # watch that resumes from a fresh list reports no deletion it missed).
        write = self._apply_standard if target.deployment_mode == "Standard" else self._apply_knative
        for attempt in (1, 2):
            try:
                write(target, routing, uris, fresh=attempt == 2)
                break
            except kserve_route.RouteError as err:
                raise KServeError(f"applying rollout {rollout!r}: {err}") from err
            except ApiException as err:
                if err.status == 409 and attempt == 1:
                    log.info("%s: an InferenceService or the HTTPRoute changed while applying; reading again", rollout)
                    continue
                if err.status == 404 and attempt == 1 and self._cache is not None:
                    log.info("%s: an InferenceService the watch showed is gone; reading again", rollout)
                    continue
                raise _error(err, f"applying rollout {rollout!r} to InferenceService {_where(target)}") from err
            except HTTPError as err:
                raise KServeError(f"applying rollout {rollout!r}: API server unreachable: {err}") from err
        with self._lock:
            self._applied[rollout] = _Applied(target, routing, dict(uris))

    def health(self, rollout: str, version: str) -> VersionHealth:
        with self._lock:
            applied = self._applied.get(rollout)
        if applied is not None and applied.target.deployment_mode == "Standard":
            return self._standard_health(applied, version)
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
            and served.uri != value_at(isvc, "spec", "predictor", "model", "storageUri")
        ):
            # Knative canary: the stable is the rolled-out revision, not the spec's storageUri.
            rolled_out = value_at(isvc, "status", "components", "predictor", "latestRolledoutRevision")
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
        created = value_at(primary, "status", "components", "predictor", "latestCreatedRevision")
        serving = [share for share in readiness.traffic if share.percent]
        logged = (
            readiness.candidate_ready
            and value_at(primary, "spec", "predictor", "logger") is not None
            and [share.revision for share in serving] == [created]
        )
        return VersionHealth(ready=bool(logged))

    def endpoint(self, rollout: str) -> str | None:
        target = self._target(rollout)
        if target.http_route is not None:
            host = kserve_route.hostname(self._read_route(target, required=False))
            if host:
                return f"http://{host}"
        isvc = self._read(target, target.name)
        url = value_at(isvc, "status", "url")
        return url if isinstance(url, str) and url else None

    def analysis_variables(self, rollout: str, version: str) -> Mapping[str, str]:
        with self._lock:
            applied = self._applied.get(rollout)
        if applied is not None and applied.target.deployment_mode == "Standard":
            return self._standard_variables(applied, version)
        served = _serving(applied, version)
        if applied is None or served is None:
            return {}
        variables = {"inference_service": served.name}
        isvc = self._read(applied.target, served.name)
        if isvc is None:
            return variables
        revision = _knative_revision(isvc, served, version == applied.routing.stable_version)
        if revision:
            variables["revision"] = revision
            variables["workload"] = f"{revision}-deployment"
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
            url = value_at(shadow, *path)
            if isinstance(url, str) and url:
                return url
        return None

    def _apply_knative(self, target: IsvcTarget, routing: Routing, uris: Mapping[str, str], fresh: bool = False) -> None:
        read = self._fetch if fresh else self._read
        primary = read(target, target.name)
        shadow = read(target, shadow_name(target.name))
        if shadow is not None:
            _check_ours(shadow)
        want = desired(target, routing, uris, self._comparator_url, observed_primary=primary, observed_shadow=shadow)
        if want.shadow is not None:
            self._converge(target, shadow, want.shadow)
            self._converge(target, primary, want.primary)
        else:
            self._converge(target, primary, want.primary)
            if shadow is not None:
                self._delete(target, shadow_name(target.name))

    def logged_service(self, rollout: str, routing: Routing) -> tuple[str, int]:
        """Which InferenceService's logger feeds the comparator in the shadow role, and the share of
        its requests to replay: Knative: the primary's, `shadow_percent` of them (the logger cannot
        sample); Standard: `<name>-baseline`'s, all of them (the route sent it only its share)."""
        target = self._target(rollout)
        if target.deployment_mode == "Standard":
            return target.name + BASELINE_SUFFIX, 100
        return target.name, max(1, routing.shadow_percent)

    # -----------------------------------------------------------------------------------------
    # Standard mode (controller.kserve.standard, controller.kserve.route)

    def _apply_standard(self, target: IsvcTarget, routing: Routing, uris: Mapping[str, str], fresh: bool = False) -> None:
        shadow, canary, baseline = shadow_name(target.name), target.name + CANARY_SUFFIX, target.name + BASELINE_SUFFIX
        read = self._fetch if fresh else self._read
        primary = read(target, target.name)
        seconds = {name: read(target, name) for name in (shadow, canary, baseline)}
        for obj in seconds.values():
            if obj is not None:
                _check_ours(obj)
        route = self._read_route(target)
        want = desired(target, routing, uris, self._comparator_url, observed_primary=primary, observed_shadow=seconds[shadow])
        self._converge(target, primary, want.primary)
        for document in (want.shadow, want.canary, want.baseline):
            if document is None:
                continue
            current = seconds[document["metadata"]["name"]]
            if current is None or storage_uri(current) == storage_uri(document):
                self._converge(target, current, document)  # else: re-created once the route has left it
        primary_service = predictor_service(primary or want.primary)
        stable_uri = uris[routing.stable_version or ""]
        observed = {
            name: Observed(storage_uri(obj), _fresh_ready(obj))
            for name, obj in seconds.items()
            if obj is not None and name != shadow
        }
        serves = {uri: self._primary_rolled_out(target, primary_service, uri) for uri in set(uris.values())}
        weight = routing.candidate_weight if routing.candidate_role == "canary" else routing.shadow_percent
        decided = split(target.name, want, weight, stable_uri, observed, serves)
        second = decided.second + PREDICTOR_SUFFIX if decided.second else None
        rules = kserve_route.split_rules(
            route, primary_service, second, decided.weight, (canary + PREDICTOR_SUFFIX, baseline + PREDICTOR_SUFFIX)
        )
        if self._write_route(target, route, rules):
            log.info("HTTPRoute %s/%s: %s%% to %s", target.namespace, target.http_route, decided.weight, second or "-")
        for name in (canary, baseline):
            if seconds[name] is not None and name not in decided.keep:
                self._delete(target, name)
        current_shadow = seconds[shadow]
        if current_shadow is not None and (want.shadow is None or storage_uri(current_shadow) != storage_uri(want.shadow)):
            self._delete(target, shadow)

    def _standard_health(self, applied: _Applied, version: str) -> VersionHealth:
        target, routing = applied.target, applied.routing
        uri = applied.uris.get(version)
        if uri is None or version not in routing.versions:
            return VersionHealth(ready=False)
        route = self._read_route(target, required=False)
        primary = self._read(target, target.name)
        if primary is None:
            return VersionHealth(ready=False)
        canary_name = target.name + CANARY_SUFFIX
        if version != routing.candidate_version:
            # The stable: the primary serves it, or (a promotion's hand-over) `<name>-canary` does.
            if self._primary_rolled_out(target, predictor_service(primary), uri):
                return VersionHealth(ready=True)
            canary = self._read(target, canary_name)
            handing = canary is not None and storage_uri(canary) == uri and _fresh_ready(canary)
            return VersionHealth(ready=handing and kserve_route.weight_of(route, canary_name + PREDICTOR_SUFFIX) == 100)
        if routing.candidate_role == "shadow":
            shadow = self._read(target, shadow_name(target.name))
            readiness = predictor_readiness(shadow, uri) if shadow is not None else None
            if readiness is None or readiness.failure is not None or not readiness.candidate_ready:
                return VersionHealth(ready=False, failure=readiness.failure if readiness else None)
            baseline_name = target.name + BASELINE_SUFFIX
            baseline = self._read(target, baseline_name)
            stable_uri = applied.uris.get(routing.stable_version or "")
            if baseline is None or stable_uri is None:
                return VersionHealth(ready=False)
            fed = predictor_readiness(baseline, stable_uri)
            if fed.failure is not None:
                return VersionHealth(ready=False, failure=f"{baseline_name} (the stable with the shadow's logger): {fed.failure}")
            routed = kserve_route.weight_of(route, baseline_name + PREDICTOR_SUFFIX) == routing.shadow_percent
            return VersionHealth(ready=fed.candidate_ready and routed)
        canary = self._read(target, canary_name)
        readiness = predictor_readiness(canary, uri) if canary is not None else None
        if readiness is not None and readiness.failure is not None:
            return VersionHealth(ready=False, failure=readiness.failure)
        ready = readiness is not None and readiness.candidate_ready
        weight = kserve_route.weight_of(route, canary_name + PREDICTOR_SUFFIX)
        if routing.candidate_weight == 100:
            promoted = self._primary_rolled_out(target, predictor_service(primary), uri)
            return VersionHealth(ready=promoted or (ready and weight == 100))
        return VersionHealth(ready=ready and weight == routing.candidate_weight)

    def _standard_variables(self, applied: _Applied, version: str) -> Mapping[str, str]:
        """The InferenceService and workload (its Deployment) measured for `version` in the current role."""
        target, routing = applied.target, applied.routing
        if version not in routing.versions:
            return {}
        if version == routing.candidate_version:
            name = shadow_name(target.name) if routing.candidate_role == "shadow" else target.name + CANARY_SUFFIX
            return {"inference_service": name, "workload": name + PREDICTOR_SUFFIX}
        if routing.candidate_role == "shadow":  # measured on the same requests as the shadow
            name = target.name + BASELINE_SUFFIX
            return {"inference_service": name, "workload": name + PREDICTOR_SUFFIX}
        canary = self._read(target, target.name + CANARY_SUFFIX)
        route = self._read_route(target, required=False)
        if (
            routing.candidate_version is None
            and canary is not None
            and storage_uri(canary) == applied.uris.get(version)
            and kserve_route.weight_of(route, target.name + CANARY_SUFFIX + PREDICTOR_SUFFIX) > 0
        ):
            name = target.name + CANARY_SUFFIX  # the promotion's hand-over: it serves the new stable
            return {"inference_service": name, "workload": name + PREDICTOR_SUFFIX}
        primary = self._read(target, target.name)
        workload = predictor_service(primary) if primary is not None else target.name + PREDICTOR_SUFFIX
        return {"inference_service": target.name, "workload": workload}

    def _standard_teardown(self, target: IsvcTarget) -> None:
        """Everything back on the primary: the route's share taken back first, then ours deleted."""
        primary = self._read(target, target.name)
        route = self._read_route(target, required=False)
        names = (target.name + CANARY_SUFFIX, target.name + BASELINE_SUFFIX)
        if primary is not None and route is not None:
            rules = kserve_route.split_rules(
                route, predictor_service(primary), None, 0, tuple(n + PREDICTOR_SUFFIX for n in names)
            )
            self._write_route(target, route, rules)
        for name in names:
            obj = self._read(target, name)
            if obj is not None:
                _check_ours(obj)
                self._delete(target, name)

    def _write_route(self, target: IsvcTarget, route: Mapping[str, Any], rules: list[dict[str, Any]]) -> bool:
        """Replaces the route's rules if they differ; True if written. The read's resourceVersion
        goes with the patch, so a route changed since (by its owner, say) is a 409, read again."""
        if rules == (route.get("spec") or {}).get("rules"):
            return False
        patch = {"metadata": {"resourceVersion": route["metadata"]["resourceVersion"]}, "spec": {"rules": rules}}
        self._api.patch_namespaced_custom_object(
            kserve_route.GROUP, kserve_route.VERSION, target.namespace, kserve_route.PLURAL, target.http_route,
            patch, _content_type=PATCH_CONTENT_TYPE,
        )  # fmt: skip
        return True

    def _read_route(self, target: IsvcTarget, required: bool = True) -> dict[str, Any] | None:
        name = target.http_route
        if name is None:
            return None
        route = self._get_or_none(
            f"HTTPRoute {target.namespace}/{name}",
            lambda: self._api.get_namespaced_custom_object(
                kserve_route.GROUP, kserve_route.VERSION, target.namespace, kserve_route.PLURAL, name
            ),
        )
        if route is None and required:
            raise KServeError(
                f"HTTPRoute {target.namespace}/{name} (spec.target.httpRoute) does not exist: create it with a "
                f"rule whose backendRefs reach Service {target.name}-predictor, and send clients through it"
            )
        return route

    def _primary_rolled_out(self, target: IsvcTarget, deployment: str, uri: str) -> bool:
        """Whether the primary's Deployment serves `uri` with every pod (status.deployment_rolled_out)."""
        read = self._get_or_none(
            f"Deployment {target.namespace}/{deployment}",
            lambda: self._apps.read_namespaced_deployment(deployment, target.namespace),
        )
        return read is not None and deployment_rolled_out(self._apps.api_client.sanitize_for_serialization(read), uri)

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
        if target.deployment_mode == "Standard":
            self._standard_teardown(target)
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

    def _read(self, target: IsvcTarget, name: str) -> Mapping[str, Any] | None:
        """The InferenceService: from the cache when there is one, else from the API server (and for
        a copy the cache doubts: one its watch's latest listing did not show, maybe deleted since)."""
        if self._cache is not None and not self._cache.doubtful(target.namespace, name):
            return self._cache.get(target.namespace, name)
        return self._fetch(target, name)

    def _fetch(self, target: IsvcTarget, name: str) -> Mapping[str, Any] | None:
        """The InferenceService from the API server (into the cache, if any)."""
        read = self._get_or_none(
            f"InferenceService {target.namespace}/{name}",
            lambda: self._api.get_namespaced_custom_object(GROUP, VERSION, target.namespace, PLURAL, name),
        )
        if read is not None:
            self._remember(read)
        elif self._cache is not None:
            self._cache.forget(target.namespace, name)  # gone, whatever the watch has said so far
        return read

    def _remember(self, written: Any) -> None:
        """An InferenceService as the API server answered a read or a write, for the next read."""
        if self._cache is not None and isinstance(written, Mapping) and "metadata" in written:
            self._cache.observe(written)

    @staticmethod
    def _get_or_none(what: str, call: Callable[[], Any]) -> Any:
        """One read of the API server: None when `what` does not exist, a KServeError naming it otherwise."""
        try:
            return call()
        except ApiException as err:
            if err.status == 404:
                return None
            raise _error(err, f"reading {what}") from err
        except HTTPError as err:
            raise KServeError(f"reading {what}: API server unreachable: {err}") from err

    def _converge(self, target: IsvcTarget, current: Mapping[str, Any] | None, want: dict[str, Any]) -> None:
        """Create `want`, or patch `current` to it; no write at all when nothing differs."""
        name = want["metadata"]["name"]
        if current is None:
            log.info("creating InferenceService %s/%s", target.namespace, name)
            self._remember(self._api.create_namespaced_custom_object(GROUP, VERSION, target.namespace, PLURAL, want))
            return
        patch = merge_patch(current, want)
        if patch is None:
            return
        log.info("patching InferenceService %s/%s", target.namespace, name)
        self._remember(
            self._api.patch_namespaced_custom_object(
                GROUP, VERSION, target.namespace, PLURAL, name, patch, _content_type=PATCH_CONTENT_TYPE
            )
        )

    def _delete(self, target: IsvcTarget, name: str) -> None:
        gone: Any = None
        try:
            log.info("deleting InferenceService %s/%s", target.namespace, name)
            gone = self._api.delete_namespaced_custom_object(GROUP, VERSION, target.namespace, PLURAL, name)
        except ApiException as err:
            if err.status != 404:  # already gone is what we wanted
                raise _error(err, f"deleting InferenceService {target.namespace}/{name}") from err
        if self._cache is not None:
            if isinstance(gone, Mapping) and (gone.get("metadata") or {}).get("deletionTimestamp"):
                self._cache.observe(gone)  # finalizers hold it: it exists, being deleted, until the watch says gone
            else:
                version = (gone.get("metadata") or {}).get("resourceVersion") if isinstance(gone, Mapping) else None
                self._cache.forget(target.namespace, name, version)

    def _strip_without_memory(self, target: IsvcTarget) -> None:
        """Teardown after a restart, with no stable URI known: remove the logger and the canary share.

        Standard: the route's share goes back to the primary (`teardown` does it) and the primary is
        left alone. Knative: the stable's storageUri lives only in the rolled-out revision, so a canary
        share is pinned to 0 (100% on that revision) rather than guessed.
        """
        primary = self._read(target, target.name)
        if primary is None or target.deployment_mode == "Standard":
            return
        predictor: dict[str, Any] = {}
        if value_at(primary, "spec", "predictor", "logger") is not None:
            predictor["logger"] = None
        percent = value_at(primary, "spec", "predictor", "canaryTrafficPercent")
        if isinstance(percent, int) and percent > 0:
            predictor["canaryTrafficPercent"] = 0
        if not predictor:
            return
        patch = {"spec": {"predictor": predictor}, "metadata": {"resourceVersion": primary["metadata"]["resourceVersion"]}}
        try:
            self._remember(
                self._api.patch_namespaced_custom_object(
                    GROUP, VERSION, target.namespace, PLURAL, target.name, patch, _content_type=PATCH_CONTENT_TYPE
                )
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
    predictor = value_at(isvc, "status", "components", "predictor") or {}
    spec_uri = value_at(isvc, "spec", "predictor", "model", "storageUri")
    if is_stable and not served.is_shadow:
        if spec_uri == served.uri or value_at(isvc, "spec", "predictor", "canaryTrafficPercent") is not None:
            rolled_out = predictor.get("latestRolledoutRevision") or predictor.get("latestReadyRevision")
            return rolled_out if isinstance(rolled_out, str) and rolled_out else None
        return None  # promoted: the stable's storageUri is served by no revision any more
    if spec_uri != served.uri:
        return None
    created = predictor.get("latestCreatedRevision")
    superseded = value_at(isvc, "metadata", "annotations", SUPERSEDED_REVISION_ANNOTATION)
    if not isinstance(created, str) or not created or created == superseded:
        return None  # KServe has not made the revision for our storageUri yet
    return created


def _check_ours(isvc: Mapping[str, Any]) -> None:
    """`isvc` (named like our shadow, canary or baseline) was made by modelrollout in that role."""
    name = str(value_at(isvc, "metadata", "name") or "")
    role = next((r for r in ("shadow", "canary", "baseline") if name.endswith(f"-{r}")), "shadow")
    labels = value_at(isvc, "metadata", "labels") or {}
    if labels.get(MANAGED_BY_LABEL) != "modelrollout" or labels.get(ROLE_LABEL) != role:
        where = f"{value_at(isvc, 'metadata', 'namespace')}/{name}"
        raise KServeError(
            f"InferenceService {where} exists but is not a {role} made by modelrollout "
            f"(labels {MANAGED_BY_LABEL}=modelrollout, {ROLE_LABEL}={role} missing); rename it or the target"
        )


def _fresh_ready(isvc: Mapping[str, Any]) -> bool:
    """A second InferenceService (made for one storageUri) ready for that storageUri."""
    uri = storage_uri(isvc)
    return bool(uri) and predictor_readiness(isvc, uri).candidate_ready


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
