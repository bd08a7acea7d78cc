"""InferenceService documents for a rollout's desired serving state (`patch` gets there).

Pure functions (no cluster calls): camelCase dicts exactly as KServe's v1beta1 CRD defines them,
sent through `CustomObjectsApi` by the KServe platform (the kserve 0.21 SDK's own create/patch,
on the kubernetes 37 client, send snake_case keys the CRD does not define). What each rollout
state becomes:

- **Knative** (`predictor.canaryTrafficPercent`, KServe's rollout docs and `ksvc_reconciler.go`):
  with the field set, the latest *ready* revision gets N% and `latestRolledoutRevision` the
  rest; without it the latest ready revision gets 100%. So: canary = candidate storageUri +
  field; promotion (weight 100) = candidate storageUri, field removed; no candidate = stable
  storageUri, no field. A rollback therefore creates a new revision of the stable model — and
  until that revision is ready, "no field" would send 100% to the latest ready revision, the
  failed candidate. Given the observed object, `desired` holds `canaryTrafficPercent: 0`
  (100% on the rolled-out stable revision) until the restored revision is ready, then drops it.
- **Standard** (KServe v0.20.0 splits no Standard-mode traffic: `spec.canary[]` entries get a
  Deployment and no request; the HTTPRoute weights of kserve#5912 are on master only): the split is
  the weights of the user's HTTPRoute (route) between the primary and a second
  InferenceService, `<name>-canary` serving the candidate. The primary keeps the stable until the
  promotion (weight 100), when it takes the candidate's storageUri: a rolling update, during which
  the route keeps everything on `<name>-canary`; the platform deletes that one only once the
  primary's Deployment has rolled out. A rollback just takes the weight back. The user's predictor
  is never renamed (KServe's webhook refuses a rename without a model change,
  `validatePredictorNameChange`).
- **Shadow** (both modes; KServe has no mirroring): `<name>-shadow` serves the candidate to the
  comparator only. The requests reach the comparator through a predictor `logger: {mode: all,
  url: <comparator>}` (request and response CloudEvents): in Knative mode on the primary (a new
  revision, which Knative routes to once ready); in Standard mode on `<name>-baseline`, a copy of the
  stable that takes the shadow's share of the route, because a logger on the serving primary would
  make its Service point at an agent port the old pods do not have. Knative's logger cannot sample:
  the comparator applies the shadow percentage; in Standard mode the route does.

KServe copies an InferenceService's labels and annotations into the pod template, so any change
to them makes a new Knative revision or rolls the Deployment. The metadata here is therefore
constant for a rollout's life; the version served is a *predictor* label
(`modelrollout.io/version`), which changes only together with the storageUri.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from controller.kserve.document_paths import value_at
from controller.kserve.patch import merge_patch
from controller.kserve.status import (
    SUPERSEDED_REVISION_ANNOTATION,
    knative_newest_revision_ready,
)
from controller.platform import Routing

GROUP = "serving.kserve.io"
VERSION = "v1beta1"
PLURAL = "inferenceservices"
KIND = "InferenceService"
API_VERSION = f"{GROUP}/{VERSION}"

DEPLOYMENT_MODE_ANNOTATION = "serving.kserve.io/deploymentMode"
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
ROLLOUT_LABEL = "modelrollout.io/rollout"
ROLE_LABEL = "modelrollout.io/role"
VERSION_LABEL = "modelrollout.io/version"
MODEL_ANNOTATION = "modelrollout.io/model"
DEFAULT_RUNTIME = "kserve-mlserver"
MODEL_CONTAINER = "kserve-container"
MODEL_NAME_ENV = "MLSERVER_MODEL_NAME"
SHADOW_SUFFIX = "-shadow"

DeploymentMode = Literal["Knative", "Standard"]

_DNS1035 = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
_DNS1123_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_DNS1123_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_LABEL_VALUE = re.compile(r"([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?")
# Kubernetes resource.Quantity, as KServe's CRD spells it.
_QUANTITY = re.compile(
    r"(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))"
    r"(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?"
)
# Schemes only MLflow resolves: KServe's storage initializer has no MLflow client to fetch them.
_MLFLOW_SCHEMES = ("models", "runs", "mlflow-artifacts")


@dataclass(frozen=True, kw_only=True)
class IsvcTarget:
    """The InferenceService a rollout drives, with the predictor overrides from its spec."""

    rollout: str  # the ModelRollout's name, recorded in a label
    name: str
    namespace: str
    deployment_mode: DeploymentMode
    runtime: str = DEFAULT_RUNTIME
    resources: Mapping[str, Mapping[str, str | int]] | None = None  # {"requests": {...}, "limits": {...}}
    service_account: str | None = None
    http_route: str | None = None  # Standard: the Gateway API HTTPRoute whose weights split the traffic

    def __post_init__(self) -> None:
        if self.deployment_mode not in ("Knative", "Standard"):
            hint = {"Serverless": " (now called 'Knative')", "RawDeployment": " (now called 'Standard')"}
            raise ValueError(
                f"target.deployment_mode must be 'Knative' or 'Standard', got {self.deployment_mode!r}"
                + hint.get(str(self.deployment_mode), "")
            )
        limit = 63 - len(SHADOW_SUFFIX)
        if not _full(_DNS1035, self.name) or len(self.name) > limit:
            raise ValueError(
                f"target.name {self.name!r} is not a valid InferenceService name: at most {limit} lower-case "
                f"letters, digits and '-', starting with a letter (so that '{SHADOW_SUFFIX}' still fits)"
            )
        if not _full(_DNS1123_LABEL, self.namespace) or len(self.namespace) > 63:
            raise ValueError(f"target.namespace {self.namespace!r} is not a valid namespace name")
        if not self.rollout or not _full(_LABEL_VALUE, self.rollout) or len(self.rollout) > 63:
            raise ValueError(f"target.rollout {self.rollout!r} cannot be a label value (at most 63 characters)")
        for field, value in (("runtime", self.runtime), ("service_account", self.service_account)):
            if value is not None and (not _full(_DNS1123_SUBDOMAIN, value) or len(value) > 253):
                raise ValueError(f"target.{field} {value!r} is not a valid Kubernetes object name")
        if self.resources is not None:
            object.__setattr__(self, "resources", _checked_resources(self.resources))
        if self.deployment_mode == "Standard" and not self.http_route:
            raise ValueError("target.http_route is required in Standard mode: it is what splits the traffic")
        if self.http_route is not None and (not _full(_DNS1123_SUBDOMAIN, self.http_route) or len(self.http_route) > 253):
            raise ValueError(f"target.http_route {self.http_route!r} is not a valid Kubernetes object name")


@dataclass(frozen=True)
class Desired:
    """The documents one rollout state needs; None means that InferenceService must not exist.

    Standard mode only: `canary` (`<name>-canary`, the candidate taking the route's canary share)
    and `baseline` (`<name>-baseline`, the stable with the logger, taking the route's shadow share).
    """

    primary: dict[str, Any]
    shadow: dict[str, Any] | None
    canary: dict[str, Any] | None = None
    baseline: dict[str, Any] | None = None


CANARY_SUFFIX = "-canary"
BASELINE_SUFFIX = "-baseline"


def shadow_logger(comparator_url: str) -> dict[str, Any]:
    """The predictor logger that feeds the comparator (KServe v0.20.0 `LoggerSpec`).

    `mode: all` sends the request and, for a 200, the response (pkg/logger/handler.go); the mode
    is spelled out because KServe's validation refuses an empty one. `metadataHeaders` copies the
    client's `X-Request-Id` into the events' `ce-metadata`, so labels may name a request by it as well
    as by the CloudEvent id (the client's `Ce-Id`); the logger matches header names in Go's
    canonical spelling, hence `X-Request-Id` exactly.
    """
    return {"mode": "all", "url": comparator_url, "metadataHeaders": ["X-Request-Id"]}


def shadow_name(name: str) -> str:
    return name + SHADOW_SUFFIX


def desired(
    target: IsvcTarget,
    routing: Routing,
    storage_uris: Mapping[str, str],
    comparator_url: str | None,
    *,
    observed_primary: Mapping[str, Any] | None = None,
    observed_shadow: Mapping[str, Any] | None = None,
) -> Desired:
    """The InferenceService documents serving `routing`.

    `storage_uris` maps each version named in `routing` to its fixed artifact location (never an
    alias). `comparator_url` is where the primary's logger sends CloudEvents in the shadow role.
    `observed_primary` / `observed_shadow` are the objects as last read (None when absent): in
    Knative mode they carry the revision that a storageUri change supersedes (see
    `status`) and let a rollback keep traffic on the stable revision until the restored
    one is ready. Without them the documents are those of a fresh create.
    """
    _check_routing(routing)
    _check_observed(observed_primary, target.namespace, target.name)
    _check_observed(observed_shadow, target.namespace, shadow_name(target.name))
    stable = routing.stable_version
    assert stable is not None  # _check_routing
    stable_uri = _storage_uri(storage_uris, stable, "stable")
    candidate = routing.candidate_version
    candidate_uri = _storage_uri(storage_uris, candidate, "candidate") if candidate else None
    role = routing.candidate_role if candidate else None
    logger = None
    if role == "shadow":
        logger = shadow_logger(_checked_comparator(comparator_url))
    shadow = None
    if role == "shadow":
        assert candidate is not None and candidate_uri is not None
        predictor = _predictor(target, candidate, candidate_uri, serve_as=target.name)
        superseded = _superseded_revision(target, observed_shadow, predictor)
        spec = {"predictor": predictor}
        shadow = _document(target, shadow_name(target.name), "shadow", routing.model, spec, superseded)
    if target.deployment_mode == "Knative":
        primary = _knative_primary(target, routing, stable_uri, candidate_uri, logger, observed_primary)
        return Desired(primary=primary, shadow=shadow)
    return _standard(target, routing, stable_uri, candidate_uri, logger, shadow)


def _knative_primary(
    target: IsvcTarget,
    routing: Routing,
    stable_uri: str,
    candidate_uri: str | None,
    logger: dict[str, str] | None,
    observed: Mapping[str, Any] | None,
) -> dict[str, Any]:
    percent: int | None = None
    version, uri = routing.stable_version, stable_uri
    if routing.candidate_role == "canary" and candidate_uri is not None:
        version, uri = routing.candidate_version, candidate_uri
        percent = routing.candidate_weight if routing.candidate_weight < 100 else None  # 100: promoted
    assert version is not None
    predictor = _predictor(target, version, uri)
    if percent is None and _hold_previous_revision(observed, uri):
        percent = 0
    if percent is not None:
        predictor = {"canaryTrafficPercent": percent, **predictor}
    if logger is not None:
        predictor["logger"] = logger
    superseded = _superseded_revision(target, observed, predictor)
    return _document(target, target.name, "primary", routing.model, {"predictor": predictor}, superseded)


def _hold_previous_revision(observed: Mapping[str, Any] | None, uri: str) -> bool:
    """Whether dropping `canaryTrafficPercent` now would route clients to the wrong revision.

    Dropping it sends 100% to the latest *ready* revision. While the storageUri is about to change
    (a rollback), or changed but its revision is not ready yet, that is still the old one — the
    candidate being rolled back. `canaryTrafficPercent: 0` instead keeps 100% on
    `latestRolledoutRevision`, the stable revision that served before the canary.
    """
    if observed is None:
        return False
    current = value_at(observed, "spec", "predictor", "canaryTrafficPercent")
    if current is None:
        return False
    if value_at(observed, "spec", "predictor", "model", "storageUri") != uri:
        return True
    return current == 0 and not knative_newest_revision_ready(observed)


def _standard(
    target: IsvcTarget,
    routing: Routing,
    stable_uri: str,
    candidate_uri: str | None,
    logger: dict[str, Any] | None,
    shadow: dict[str, Any] | None,
) -> Desired:
    """Standard mode: the primary serves the stable and is never touched but to promote; a second
    InferenceService takes the route's share (route): the candidate as `<name>-canary`, or in
    the shadow phase the stable again with the logger as `<name>-baseline`, so the primary never
    restarts for a logger. (Adding the logger to a serving Deployment would point its Service at the
    agent's port 9081 at once, before any pod has the agent: KServe v0.20.0 reconciles the Service
    first, raw_kube_reconciler.go L242, service_reconciler.go L161-172.)"""
    stable, candidate = routing.stable_version, routing.candidate_version
    assert stable is not None
    model = routing.model
    promoting = routing.candidate_role == "canary" and routing.candidate_weight == 100
    if promoting and candidate is not None and candidate_uri is not None:
        primary_predictor = _predictor(target, candidate, candidate_uri)  # the promotion's rolling update
    else:
        primary_predictor = _predictor(target, stable, stable_uri)
    primary = _document(target, target.name, "primary", model, {"predictor": primary_predictor}, None)
    canary = baseline = None
    if routing.candidate_role == "canary" and candidate is not None and candidate_uri is not None:
        spec = {"predictor": _predictor(target, candidate, candidate_uri, serve_as=target.name)}
        canary = _document(target, target.name + CANARY_SUFFIX, "canary", model, spec, None)
    if routing.candidate_role == "shadow" and logger is not None:
        spec = {"predictor": {**_predictor(target, stable, stable_uri, serve_as=target.name), "logger": logger}}
        baseline = _document(target, target.name + BASELINE_SUFFIX, "baseline", model, spec, None)
    return Desired(primary=primary, shadow=shadow, canary=canary, baseline=baseline)


def _predictor(target: IsvcTarget, version: str, uri: str, *, serve_as: str | None = None) -> dict[str, Any]:
    """`serve_as`: the model name the predictor serves under, for the InferenceServices we add beside
    the primary (`-shadow`, `-canary`, `-baseline`): clients and the comparator call them with the
    primary's path (`/v1/models/<primary>:predict`). KServe names an MLServer model after its
    InferenceService unless `MLSERVER_MODEL_NAME` is set (v0.20.0 inference_service_defaults.go
    L412-440, `AppendEnvVarIfNotExists`)."""
    model: dict[str, Any] = {
        # KServe's own name for the model container (the 0.20 CRD requires it in some places;
        # set everywhere, so every predictor we write has one shape).
        "name": MODEL_CONTAINER,
        "modelFormat": {"name": "mlflow"},
        "runtime": target.runtime,
        "protocolVersion": "v2",
        "storageUri": uri,
    }
    if target.resources is not None:
        model["resources"] = copy.deepcopy(dict(target.resources))
    if serve_as is not None:
        model["env"] = [{"name": MODEL_NAME_ENV, "value": serve_as}]
    predictor: dict[str, Any] = {}
    if not _full(_LABEL_VALUE, version) or len(version) > 63:
        raise ValueError(f"version {version!r} cannot be a label value (at most 63 letters, digits, '-', '_', '.')")
    predictor["labels"] = {VERSION_LABEL: version}
    predictor["model"] = model
    if target.service_account is not None:
        predictor["serviceAccountName"] = target.service_account
    return predictor


def _document(
    target: IsvcTarget, name: str, role: str, model: str, spec: dict[str, Any], superseded: str | None
) -> dict[str, Any]:
    annotations = {DEPLOYMENT_MODE_ANNOTATION: target.deployment_mode, MODEL_ANNOTATION: model}
    if superseded is not None:
        annotations[SUPERSEDED_REVISION_ANNOTATION] = superseded
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {
            "name": name,
            "namespace": target.namespace,
            "labels": {MANAGED_BY_LABEL: "modelrollout", ROLLOUT_LABEL: target.rollout, ROLE_LABEL: role},
            "annotations": annotations,
        },
        "spec": spec,
    }


def _superseded_revision(
    target: IsvcTarget, observed: Mapping[str, Any] | None, predictor: Mapping[str, Any]
) -> str | None:
    """Knative: the newest revision when the revision template last changed (kept until it changes again).

    KServe makes a new revision for any change of the predictor but `canaryTrafficPercent` (which
    goes to the route): a storageUri, and equally the logger, which becomes pod annotations
    (kserve v0.20.0 `components/component.go` L60-75). Whatever changes it, status about the revision
    before is stale until a newer one exists.
    """
    if target.deployment_mode != "Knative" or observed is None:
        return None
    if _template_changes(observed, predictor):
        created = value_at(observed, "status", "components", "predictor", "latestCreatedRevision")
        return created if isinstance(created, str) and created else None
    kept = value_at(observed, "metadata", "annotations", SUPERSEDED_REVISION_ANNOTATION)
    return kept if isinstance(kept, str) and kept else None


def _template_changes(observed: Mapping[str, Any], predictor: Mapping[str, Any]) -> bool:
    """Whether writing `predictor` over `observed` changes the Knative revision template."""
    want = {"metadata": dict(observed.get("metadata") or {}), "spec": {"predictor": dict(predictor)}}
    patch = merge_patch(observed, want) or {}
    changed = set(value_at(patch, "spec", "predictor") or {})
    return bool(changed - {"canaryTrafficPercent"})


# ---------------------------------------------------------------------------------------------
# Input checks: each names the field and the problem.


def _check_routing(routing: Routing) -> None:
    if not isinstance(routing, Routing):
        raise ValueError(f"routing must be a controller.platform.Routing, got {type(routing).__name__}")
    if routing.stable_version is None:
        raise ValueError(
            "routing has no stable version: an InferenceService needs a model to serve (tear it down instead)"
        )
    weight = routing.candidate_weight
    if isinstance(weight, bool) or not isinstance(weight, int) or not 0 <= weight <= 100:
        raise ValueError(f"routing.candidate_weight must be an integer from 0 to 100, got {weight!r}")
    if routing.candidate_version is not None and routing.candidate_role not in ("shadow", "canary"):
        raise ValueError(f"routing.candidate_role must be 'shadow' or 'canary', got {routing.candidate_role!r}")


def _check_observed(observed: Mapping[str, Any] | None, namespace: str, name: str) -> None:
    if observed is None:
        return
    where = (value_at(observed, "metadata", "namespace"), value_at(observed, "metadata", "name"))
    if where != (namespace, name):
        raise ValueError(f"observed object {where[0]}/{where[1]} is not {namespace}/{name}")


def _storage_uri(storage_uris: Mapping[str, str], version: str, role: str) -> str:
    if not isinstance(storage_uris, Mapping):
        raise ValueError(f"storage_uris must map versions to URIs, got {type(storage_uris).__name__}")
    if version not in storage_uris:
        raise ValueError(f"storage_uris has no entry for the {role} version {version!r}")
    uri = storage_uris[version]
    if not isinstance(uri, str) or not uri.strip():
        raise ValueError(f"storage URI of the {role} version {version!r} is empty")
    if any(c.isspace() for c in uri):
        raise ValueError(f"storage URI of the {role} version {version!r} contains whitespace: {uri!r}")
    scheme = uri.split(":", 1)[0].lower() if ":" in uri else ""
    if scheme in _MLFLOW_SCHEMES:
        alias = " and an alias moves" if "@" in uri else ""
        raise ValueError(
            f"storage URI of the {role} version {version!r} is {uri!r}: KServe cannot fetch {scheme}: URIs{alias}; "
            "give the fixed version's artifact location (s3://, gs://, pvc://, …)"
        )
    if "://" not in uri:
        raise ValueError(f"storage URI of the {role} version {version!r} has no scheme: {uri!r}")
    return uri


def _checked_comparator(url: str | None) -> str:
    if not isinstance(url, str) or not re.fullmatch(r"https?://[^\s/]+(/\S*)?", url):
        raise ValueError(f"the shadow role needs comparator_url, an http(s) URL for the logger; got {url!r}")
    return url


def _checked_resources(resources: Mapping[str, Any]) -> dict[str, dict[str, str | int]]:
    if not isinstance(resources, Mapping):
        raise ValueError(f"target.resources must be a mapping with 'requests' and/or 'limits', got {resources!r}")
    checked: dict[str, dict[str, str | int]] = {}
    for kind, amounts in resources.items():
        if kind not in ("requests", "limits"):
            raise ValueError(f"target.resources has unknown key {kind!r}: use 'requests' and 'limits'")
        if not isinstance(amounts, Mapping):
            raise ValueError(f"target.resources.{kind} must map resource names to quantities, got {amounts!r}")
        for resource, quantity in amounts.items():
            if not isinstance(resource, str) or not resource:
                raise ValueError(f"target.resources.{kind} has an empty or non-string resource name {resource!r}")
            valid = isinstance(quantity, (str, int)) and not isinstance(quantity, bool)
            if not valid or not _full(_QUANTITY, str(quantity)):
                raise ValueError(f"target.resources.{kind}.{resource} is not a Kubernetes quantity: {quantity!r}")
        checked[kind] = dict(amounts)
    return checked


def _full(pattern: re.Pattern[str], value: Any) -> bool:
    return isinstance(value, str) and pattern.fullmatch(value) is not None
