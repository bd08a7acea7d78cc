"""A Kubernetes API server for tests: kmock's `KubernetesEmulator` with the semantics clients rely on.

kmock 0.8 gives the HTTP plumbing (request records, reactions a test can inject with its DSL,
`objects` with their history, discovery from `resources`, the bundled list of built-in resources,
a broadcast `Bus`), but its emulator stores whatever it is sent: create answers 200, nothing is
stamped, PATCH is a naive dict merge, PUT is unknown, there is no resourceVersion conflict, no
status subresource, no schema, and `/api/v1/namespaces` is a 500. This subclass keeps the plumbing
and replaces the object semantics with those of kube-apiserver:

- create → 201, stamping uid / resourceVersion (one global counter) / generation / creationTimestamp,
  the namespace taken from the URL (and it must exist), `generateName`, 409 AlreadyExists;
- get / list (label and field selectors, kubectl's server-side `Table`) / watch (from a
  resourceVersion, replayed from a bounded change log, else 410 Expired; `timeoutSeconds`; the
  subscription is taken under the same lock as the snapshot so no change falls in between;
  objects leaving or entering a label selector appear as DELETED / ADDED; a final BOOKMARK);
- update (PUT) and patch (JSON patch with 422 on a failed `test`, JSON merge patch, strategic merge
  for built-ins; 415 for strategic merge on custom resources); server-side apply only where it
  creates (the object does not exist yet: created as the applied document, 201, which is how
  Helm v4 installs a release), 415 on an existing object;
- a stale `metadata.resourceVersion` → 409 Conflict; no-op writes change nothing and notify nobody;
  `generation` grows on spec changes only; main writes keep `status`, `/status` writes only status;
- delete honours finalizers (deletionTimestamp first, gone once the last finalizer goes),
  preconditions, cascades to a namespace's objects, a CRD's objects and ownerReference dependents;
- CustomResourceDefinitions are checked as apiextensions.k8s.io/v1 checks them and then served
  (discovery with kind, short names, namespaced, subresources) and every write of their objects is
  pruned, defaulted and validated against the version's `openAPIV3Schema` (422 naming the field);
- metadata validation (names, label keys and values, annotation size) like every kind gets;
- `/openapi/v3` just rich enough for kubectl to use server-side field validation.

What is not reproduced: server-side apply over an existing object (field ownership), admission webhooks, CEL rules (`x-kubernetes-validations`),
pagination (`limit` is ignored, every list is complete), RBAC/authentication, conversion webhooks
(other served versions of a CRD are relabelled storage objects), built-in kinds' own validation and
defaulting, and namespace termination (a deleted namespace goes at once).
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import datetime
import json
import logging
import re
import secrets
import traceback
import uuid
import warnings
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp.web
import attrs
import kmock
import yaml
from kmock import Bus, KubernetesEmulator, Request, Response, resource

from tests.kube import errors
from tests.kube.crds import CustomResourceDefinition, crd_errors, crd_status, parse_crd
from tests.kube.errors import FieldError, Target
from tests.kube.patches import (
    MalformedPatch,
    PatchError,
    json_patch,
    merge_patch,
    strategic_merge_patch,
)
from tests.kube.paths import Address, parse_path
from tests.kube.schemas import prune_metadata
from tests.kube.selectors import Predicate, field_predicate, label_predicate
from tests.kube.tables import table, wants_table

log = logging.getLogger(__name__)

CRD_RESOURCE = ("apiextensions.k8s.io", "customresourcedefinitions")
NAMESPACES = ("", "namespaces")
SYSTEM_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")
JSON_PATCH = "application/json-patch+json"
MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"
APPLY_PATCH = "application/apply-patch+yaml"
MAX_ANNOTATIONS_BYTES = 262144
GENERATION_KINDS = frozenset({
    ("apps", "deployments"), ("apps", "statefulsets"), ("apps", "daemonsets"), ("apps", "replicasets"),
    ("batch", "jobs"), ("batch", "cronjobs"), ("apiextensions.k8s.io", "customresourcedefinitions"),
    ("networking.k8s.io", "ingresses"), ("policy", "poddisruptionbudgets"), ("autoscaling", "horizontalpodautoscalers"),
    ("monitoring.coreos.com", "servicemonitors"),
})  # fmt: skip

_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_QUALIFIED_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")


def now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def clone(obj: Any) -> Any:
    """A deep copy; JSON documents only (faster than copy.deepcopy for them)."""
    return json.loads(json.dumps(obj))


@dataclass(frozen=True)
class Kind:
    """One served resource in one version: what the URL names and how its objects behave."""

    group: str
    version: str
    plural: str
    kind: str
    list_kind: str
    namespaced: bool
    subresources: frozenset[str]
    storage_version: str
    crd: CustomResourceDefinition | None = None

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def has_status(self) -> bool:
        return "status" in self.subresources

    @property
    def storage(self) -> kmock.resource:
        return resource(self.group, self.storage_version, self.plural)

    @property
    def tracks_generation(self) -> bool:
        """Custom resources and the built-ins whose controllers report observedGeneration."""
        return self.crd is not None or (self.group, self.plural) in GENERATION_KINDS

    def target(self, name: str | None) -> Target:
        return Target(group=self.group, plural=self.plural, kind=self.kind, name=name)


@dataclass(frozen=True)
class Change:
    """One committed write, kept for watches that resume from an older resourceVersion."""

    revision: int
    group: str
    plural: str
    namespace: str | None
    name: str
    type: str  # ADDED, MODIFIED, DELETED
    obj: dict[str, Any]
    previous: dict[str, Any] | None


@dataclass(frozen=True)
class WatchFilter:
    group: str
    plural: str
    namespace: str | None
    matches: Predicate

    def event(self, change: Change) -> str | None:
        """The event type this watcher sees for `change`, or None when it sees nothing."""
        if (change.group, change.plural) != (self.group, self.plural):
            return None
        if self.namespace is not None and change.namespace != self.namespace:
            return None
        now_matches = self.matches(change.obj)
        if change.type != "MODIFIED":
            return change.type if now_matches else None
        before = change.previous is not None and self.matches(change.previous)
        if before and now_matches:
            return "MODIFIED"
        if now_matches:
            return "ADDED"
        return "DELETED" if before else None


_SHUTDOWN = object()  # put on the change bus to end every open watch


@attrs.define(kw_only=True)
class ApiServerEmulator(KubernetesEmulator):
    """See the module docstring. Run it with `tests.kube.server.EmulatorServer`."""

    change_log_size: int = 5000  # how far back a watch may resume before it gets 410 Expired

    _revision: int = attrs.field(default=0, init=False)
    _log: collections.deque[Change] = attrs.field(init=False)
    _compacted: int = attrs.field(default=0, init=False)  # the newest revision no longer in _log
    _changes: Bus[Any] = attrs.field(factory=Bus, init=False)
    _crds: dict[tuple[str, str], CustomResourceDefinition] = attrs.field(factory=dict, init=False)
    _builtins: set[kmock.resource] = attrs.field(factory=set, init=False)
    # Unknown fields the server pruned (`Warn` mode), as "<kind> <ns>/<name>: <field>": tests may
    # assert it is empty to prove no document carries a field the schema would silently drop.
    warnings: list[str] = attrs.field(factory=list, init=False)
    # Tracebacks of 500s caused by the emulator itself rather than by a request: should stay empty.
    internal_errors: list[str] = attrs.field(factory=list, init=False)

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        self._log = collections.deque(maxlen=self.change_log_size)
        with warnings.catch_warnings():  # kmock reads its bundled list with a deprecated importlib call
            warnings.simplefilter("ignore", DeprecationWarning)
            self.resources.load_bundled()
        self._builtins = set(self.resources)
        # Higher than kmock's own fallbacks (so they never see object requests), lower than any
        # reaction a test adds to inject a fault.
        (self.fallback**1)[self._is_resource_request] << self._serve_resource
        self.fallback["get /openapi/v3"] << self._serve_openapi_root
        self.fallback["get", re.compile(r"/openapi/v3/.+")] << self._serve_openapi_group_version
        self.fallback["get", re.compile(r"/(healthz|readyz|livez)")] << b"ok"
        for name in SYSTEM_NAMESPACES:
            self._store_initial(self._builtin_kind("", "v1", "namespaces"), self._new_namespace(name))

    # --- HTTP entry ------------------------------------------------------------------------------

    async def __call__(self, raw_request: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        """kmock's entry point, with our own path parsing (kmock's fails on /api/v1/namespaces)."""
        body = await raw_request.read()
        address = parse_path(raw_request.path)
        method = kmock.method(raw_request.method)
        query = dict(raw_request.query)
        try:
            data = json.loads(body) if body else None
        except ValueError:
            data = None
        action = None
        if address.is_resource:
            if method == kmock.method.GET:
                watch = query.get("watch") in ("true", "1")
                action = kmock.action.WATCH if watch else kmock.action.FETCH if address.name else kmock.action.LIST
            elif method == kmock.method.POST and not address.name:
                action = kmock.action.CREATE
            elif method == kmock.method.PATCH and address.name:
                action = kmock.action.UPDATE
            elif method == kmock.method.DELETE and address.name:
                action = kmock.action.DELETE
        request = Request(
            id=len(self._requests), raw_request=raw_request, url=raw_request.url, method=method, params=query,
            headers=dict(raw_request.headers), cookies=dict(raw_request.cookies), body=body,
            text=body.decode("utf-8", "replace"), data=data, action=action,
            resource=None if address.group is None else resource(group=address.group, version=address.version, plural=address.plural),
            namespace=address.namespace, name=address.name, subresource=address.subresource,
        )  # fmt: skip
        self._requests.append(request)
        try:
            return await self._handle(request)
        except kmock.KubernetesError as exc:
            return await self._render_error(exc)
        except Exception as exc:  # noqa: BLE001 - a streaming failure or an emulator bug
            cause = exc.__cause__ if exc.__cause__ is not None else exc
            raw_response = exc.args[0] if exc.args and isinstance(exc.args[0], aiohttp.web.StreamResponse) else None
            if raw_response is not None and raw_response.prepared:
                await self._stream_error(cause, raw_response)
                return raw_response
            return await self._render_error(cause)

    async def _handle(self, request: Request) -> aiohttp.web.StreamResponse:
        # Skip KubernetesEmulator._handle: it would store every write its own way before routing.
        return await kmock.RawHandler._handle(self, request)

    async def _render_error(self, exc: Exception) -> aiohttp.web.StreamResponse:
        if not isinstance(exc, kmock.KubernetesError):
            self.internal_errors.append("".join(traceback.format_exception(exc)))
            log.error("kube emulator internal error", exc_info=exc)
            exc = errors.internal(f"emulator failure: {exc!r}")
        return aiohttp.web.json_response(errors.status(exc), status=exc.status)

    async def _stream_error(self, exc: Exception, raw_response: aiohttp.web.StreamResponse) -> None:
        if not isinstance(exc, kmock.KubernetesError):
            self.internal_errors.append("".join(traceback.format_exception(exc)))
            exc = errors.internal(f"emulator failure: {exc!r}")
        try:
            await raw_response.write(json.dumps({"type": "ERROR", "object": errors.status(exc)}).encode() + b"\n")
            await raw_response.write_eof()
        except ConnectionError:
            pass

    @staticmethod
    def _is_resource_request(request: Request) -> bool:
        return parse_path(request.url.path).is_resource

    # --- served kinds ----------------------------------------------------------------------------

    def _builtin_kind(self, group: str, version: str, plural: str) -> Kind:
        info = self.resources[resource(group, version, plural)]
        return Kind(
            group=group, version=version, plural=plural, kind=info.kind or plural.capitalize(),
            list_kind=f"{info.kind}List", namespaced=bool(info.namespaced),
            subresources=frozenset(info.subresources), storage_version=version,
        )  # fmt: skip

    def _kind_for(self, address: Address) -> Kind:
        assert address.group is not None and address.version is not None and address.plural is not None
        crd = self._crds.get((address.group, address.plural))
        if crd is not None:
            version = crd.versions.get(address.version)
            if version is None or not version.served:
                raise errors.no_such_resource()
            return self._crd_kind(crd, address.version)
        if resource(address.group, address.version, address.plural) in self._builtins:
            return self._builtin_kind(address.group, address.version, address.plural)
        raise errors.no_such_resource()

    @staticmethod
    def _crd_kind(crd: CustomResourceDefinition, version: str) -> Kind:
        served = crd.versions[version]
        subresources = {"status"} if served.status_subresource else set()
        subresources |= {"scale"} if served.scale_subresource else set()
        return Kind(
            group=crd.group, version=version, plural=crd.plural, kind=crd.kind, list_kind=crd.list_kind,
            namespaced=crd.namespaced, subresources=frozenset(subresources),
            storage_version=crd.storage_version, crd=crd,
        )  # fmt: skip

    def _register_crd(self, crd: CustomResourceDefinition) -> None:
        old = self._crds.get((crd.group, crd.plural))
        if old is not None and old.storage_version != crd.storage_version:
            # Objects stay where they are on a real server; here they are keyed by storage version.
            before = resource(crd.group, old.storage_version, crd.plural)
            for key in [k for k in self._objects if k[0] == before]:
                self._objects[resource(crd.group, crd.storage_version, crd.plural), key[1], key[2]] = list(
                    self._objects[key].history
                )
                del self._objects[key]
        self._unregister_crd(crd.group, crd.plural)
        self._crds[crd.group, crd.plural] = crd
        for version in crd.versions.values():
            if version.served:
                self.resources[resource(crd.group, version.name, crd.plural)] = kmock.ResourceInfo(
                    namespaced=crd.namespaced, kind=crd.kind, singular=crd.singular,
                    verbs={"create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"},
                    shortnames=set(crd.short_names), categories=set(crd.categories),
                    subresources={"status"} if version.status_subresource else set(),
                )  # fmt: skip

    def _unregister_crd(self, group: str, plural: str) -> None:
        old = self._crds.pop((group, plural), None)
        if old is not None:
            for version in old.versions:
                self.resources.pop(resource(group, version, plural), None)

    # --- reading ---------------------------------------------------------------------------------

    def _stored(self, kind: Kind, namespace: str | None, name: str) -> dict[str, Any] | None:
        key = (kind.storage, namespace if kind.namespaced else None, name)
        if key not in self._objects or self._objects[key].deleted:
            return None
        return self._objects[key].raw

    def _all(self, kind: Kind, namespace: str | None) -> list[dict[str, Any]]:
        found = [
            obj.raw
            for (res, ns, _), obj in self._objects.items()
            if res == kind.storage and not obj.deleted and (namespace is None or ns == namespace)
        ]
        return sorted(found, key=lambda o: (o["metadata"].get("namespace", ""), o["metadata"]["name"]))

    @staticmethod
    def _external(kind: Kind, obj: dict[str, Any]) -> dict[str, Any]:
        """The object as the requested version shows it (no conversion: CR versions are relabelled)."""
        shown = clone(obj)
        shown["apiVersion"] = kind.api_version
        shown["kind"] = kind.kind
        return shown

    # --- routing ---------------------------------------------------------------------------------

    async def _serve_resource(self, request: Request) -> Response:
        """Serve a collection or object request, always as a Response that sets every header.

        kmock renders a reaction's result by copying its status and merging its headers into the
        reaction's own Response object, which outlives the request: a 201 or a Warning would
        stick to later answers unless each answer states them all again.
        """
        result = await self._dispatch(request)
        if isinstance(result, Response):
            status, payload, headers = result.status or 200, result.payload, dict(result.headers or {})
        else:
            status, payload, headers = 200, result, {}
        return Response(status=status, payload=payload, headers={"Warning": None, "Content-Type": None, **headers})

    async def _dispatch(self, request: Request) -> Any:
        address = parse_path(request.url.path)
        kind = self._kind_for(address)
        if kind.namespaced is False and address.namespace is not None:
            raise errors.no_such_resource()
        if address.subresource is not None and (address.subresource != "status" or not kind.has_status):
            raise errors.no_such_resource()
        method, params = request.method, dict(request.params)
        if method == kmock.method.GET:
            if params.get("watch") in ("true", "1"):
                return await self._watch(kind, address, request)
            if address.name:
                return await self._get(kind, address, request)
            return await self._list(kind, address, request)
        if method == kmock.method.POST and not address.name:
            return await self._create(kind, address, request)
        if method == kmock.method.PUT and address.name:
            return await self._replace(kind, address, request)
        if method == kmock.method.PATCH and address.name:
            return await self._patch(kind, address, request)
        if method == kmock.method.DELETE:
            if address.name:
                return await self._delete(kind, address, request)
            if address.subresource is None:
                return await self._delete_collection(kind, address, request)
        raise errors.method_not_allowed(str(method.value))

    @staticmethod
    def _body(request: Request) -> Any:
        try:
            return json.loads(request.body) if request.body else None
        except ValueError as exc:
            content_type = request.headers.get("Content-Type", "")
            if "json" not in content_type and content_type:
                raise errors.unsupported_media_type(content_type, ["application/json"]) from exc
            raise errors.bad_request(f"couldn't decode the request body as JSON: {exc}") from exc

    # --- get / list ------------------------------------------------------------------------------

    async def _get(self, kind: Kind, address: Address, request: Request) -> Any:
        async with self._lock:
            obj = self._stored(kind, address.namespace, address.name or "")
        if obj is None:
            raise errors.not_found(kind.target(address.name))
        shown = self._external(kind, obj)
        if wants_table(request.headers.get("Accept", "")):
            return table(
                [shown],
                self._columns(kind),
                shown["metadata"]["resourceVersion"],
                request.params.get("includeObject", "Metadata"),
            )
        return shown

    async def _list(self, kind: Kind, address: Address, request: Request) -> Any:
        matches = self._predicate(request)
        async with self._lock:
            items = [self._external(kind, o) for o in self._all(kind, address.namespace) if matches(o)]
            revision = str(self._revision)
        if wants_table(request.headers.get("Accept", "")):
            return table(items, self._columns(kind), revision, request.params.get("includeObject", "Metadata"))
        return {
            "apiVersion": kind.api_version,
            "kind": kind.list_kind,
            "metadata": {"resourceVersion": revision},
            "items": items,
        }

    @staticmethod
    def _predicate(request: Request, name: str | None = None) -> Predicate:
        labels = label_predicate(request.params.get("labelSelector"))
        fields = field_predicate(request.params.get("fieldSelector"))
        return lambda obj: labels(obj) and fields(obj) and (name is None or obj["metadata"]["name"] == name)

    @staticmethod
    def _columns(kind: Kind) -> list[Any]:
        return [] if kind.crd is None else kind.crd.versions[kind.version].printer_columns

    # --- watch -----------------------------------------------------------------------------------

    async def _watch(self, kind: Kind, address: Address, request: Request) -> Response:
        params = request.params
        since = params.get("resourceVersion") or ""
        timeout = float(params["timeoutSeconds"]) if params.get("timeoutSeconds") else None
        as_table = wants_table(request.headers.get("Accept", ""))
        include = params.get("includeObject", "Metadata")
        watch_filter = WatchFilter(kind.group, kind.plural, address.namespace, self._predicate(request, address.name))

        def render(event_type: str, obj: dict[str, Any]) -> dict[str, Any]:
            shown = self._external(kind, obj)
            if as_table:
                shown = table([shown], self._columns(kind), shown["metadata"]["resourceVersion"], include)
            return {"type": event_type, "object": shown}

        # Snapshot and subscription under the lock that every write holds while it publishes:
        # nothing can happen between what the initial events show and what the stream delivers.
        # Streaming lists (kubectl >= 1.35 `wait`, client-go's WatchList): the current objects as
        # ADDED, then a bookmark annotated `k8s.io/initial-events-end`, then the changes.
        send_initial = params.get("sendInitialEvents") in ("true", "1")
        async with self._lock:
            mark = await self._changes.mark()
            snapshot_revision = str(self._revision)
            initial: list[dict[str, Any]] = []
            expired: str | None = None
            if since in ("", "0") or send_initial:
                initial = [render("ADDED", o) for o in self._all(kind, address.namespace) if watch_filter.matches(o)]
            else:
                try:
                    start = int(since)
                except ValueError:
                    await self._changes.unmark(mark)
                    raise errors.bad_request(f"invalid resource version: {since!r}") from None
                if start < self._compacted:
                    expired = f"too old resource version: {start} ({self._compacted + 1})"
                else:
                    for change in self._log:
                        if change.revision > start and (event_type := watch_filter.event(change)):
                            initial.append(render(event_type, change.obj))

        async def stream() -> AsyncIterator[Any]:
            try:
                yield b""  # send the headers now: a watch with nothing to say is still open
                if expired is not None:
                    yield {"type": "ERROR", "object": errors.status(errors.expired(expired))}
                    return
                for event in initial:
                    yield event
                if send_initial:
                    yield {
                        "type": "BOOKMARK",
                        "object": {
                            "kind": kind.kind,
                            "apiVersion": kind.api_version,
                            "metadata": {
                                "resourceVersion": snapshot_revision,
                                "annotations": {"k8s.io/initial-events-end": "true"},
                            },
                        },
                    }
                try:
                    async with asyncio.timeout(timeout):
                        async for change in self._changes.stream(since=mark):
                            if change is _SHUTDOWN:
                                return
                            if event_type := watch_filter.event(change):
                                yield render(event_type, change.obj)
                except TimeoutError:
                    pass
                if params.get("allowWatchBookmarks") in ("true", "1"):
                    yield {
                        "type": "BOOKMARK",
                        "object": {
                            "kind": kind.kind,
                            "apiVersion": kind.api_version,
                            "metadata": {"resourceVersion": str(self._revision)},
                        },
                    }
            finally:
                await self._changes.unmark(mark)

        return Response(status=200, headers={"Content-Type": "application/json"}, payload=stream())

    async def close_watches(self) -> None:
        """End every open watch (before the server shuts down, so it does not wait on them)."""
        await self._changes.put(_SHUTDOWN)

    # --- writes: create --------------------------------------------------------------------------

    async def _create(self, kind: Kind, address: Address, request: Request) -> Any:
        return await self._create_object(kind, address, self._body(request), request)

    async def _create_object(self, kind: Kind, address: Address, body: Any, request: Request) -> Any:
        if not isinstance(body, dict):
            raise errors.bad_request("the body of a create must be a JSON object")
        if kind.namespaced and address.namespace is None:
            raise errors.no_such_resource()
        if address.subresource is not None:
            raise errors.method_not_allowed("POST")
        obj = clone(body)
        self._check_type(kind, obj)
        meta = obj.setdefault("metadata", {})
        if not isinstance(meta, dict):
            raise errors.bad_request("metadata must be an object")
        if kind.namespaced:
            if meta.get("namespace") not in (None, "", address.namespace):
                raise errors.bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request"
                )
            meta["namespace"] = address.namespace
        else:
            meta.pop("namespace", None)
        if meta.get("resourceVersion"):
            raise errors.internal("resourceVersion should not be set on objects to be created")
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = f"{meta['generateName']}{secrets.token_hex(3)[:5]}"
        for key in (
            "uid",
            "generation",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "managedFields",
            "selfLink",
        ):
            meta.pop(key, None)
        if kind.has_status:
            obj.pop("status", None)
        headers = self._schema_pass(kind, obj, request)
        self._check_metadata(kind, obj)
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = now()
        if kind.tracks_generation:
            meta["generation"] = 1
        self._on_create(kind, obj)
        if request.params.get("dryRun") == "All":
            return Response(status=201, payload=self._external(kind, obj), headers=headers)
        async with self._lock:
            if self._stored(kind, address.namespace, meta["name"]) is not None:
                raise errors.already_exists(kind.target(meta["name"]))
            if (
                kind.namespaced
                and self._stored(self._builtin_kind("", "v1", "namespaces"), None, address.namespace or "") is None
            ):
                raise errors.not_found(Target(group="", plural="namespaces", kind="Namespace", name=address.namespace))
            stored = await self._commit(kind, "ADDED", obj, None)
            self._after_commit(kind, stored, None)
        return Response(status=201, payload=self._external(kind, stored), headers=headers)

    def _check_type(self, kind: Kind, obj: dict[str, Any]) -> None:
        api_version, obj_kind = obj.get("apiVersion"), obj.get("kind")
        if api_version not in (None, "", kind.api_version) or obj_kind not in (None, "", kind.kind):
            raise errors.bad_request(
                f"the API version in the data ({api_version}) does not match the expected API version ({kind.api_version})"
                if api_version not in (None, "", kind.api_version)
                else f"the kind in the data ({obj_kind}) does not match the expected kind ({kind.kind})"
            )
        obj["apiVersion"], obj["kind"] = kind.api_version, kind.kind

    def _on_create(self, kind: Kind, obj: dict[str, Any]) -> None:
        """What the built-in controllers or strategies add to new objects of a few kinds."""
        if (kind.group, kind.plural) == NAMESPACES:
            obj["metadata"].setdefault("labels", {})["kubernetes.io/metadata.name"] = obj["metadata"]["name"]
            obj.setdefault("spec", {"finalizers": ["kubernetes"]})
            obj["status"] = {"phase": "Active"}
        if (kind.group, kind.plural) == CRD_RESOURCE:
            obj["status"] = crd_status(obj, now())

    def _new_namespace(self, name: str) -> dict[str, Any]:
        return {
            "apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": name, "uid": str(uuid.uuid4()), "creationTimestamp": now(),
                         "labels": {"kubernetes.io/metadata.name": name}},
            "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"},
        }  # fmt: skip

    def _store_initial(self, kind: Kind, obj: dict[str, Any]) -> None:
        """Seed an object before the server runs (no watcher can exist yet)."""
        self._revision += 1
        obj["metadata"]["resourceVersion"] = str(self._revision)
        self._objects[kind.storage, obj["metadata"].get("namespace"), obj["metadata"]["name"]] = obj

    # --- writes: update and patch ----------------------------------------------------------------

    async def _replace(self, kind: Kind, address: Address, request: Request) -> Any:
        body = self._body(request)
        if not isinstance(body, dict):
            raise errors.bad_request("the body of an update must be a JSON object")
        meta = body.get("metadata") if isinstance(body.get("metadata"), dict) else {}
        if meta.get("name") not in (None, "", address.name):
            raise errors.bad_request(
                f"the name of the object ({meta.get('name')}) does not match the name on the URL ({address.name})"
            )
        if kind.namespaced and meta.get("namespace") not in (None, "", address.namespace):
            raise errors.bad_request(
                "the namespace of the provided object does not match the namespace sent on the request"
            )
        return await self._update(kind, address, request, lambda current: clone(body))

    async def _patch(self, kind: Kind, address: Address, request: Request) -> Any:
        content_type = request.headers.get("Content-Type", "").split(";")[0].strip()
        accepted = [JSON_PATCH, MERGE_PATCH, APPLY_PATCH] + ([] if kind.crd else [STRATEGIC_MERGE_PATCH])
        if content_type == APPLY_PATCH:
            return await self._apply(kind, address, request)
        if content_type not in accepted:
            raise errors.unsupported_media_type(content_type, accepted)
        patch = self._body(request)
        apply: Callable[[Any, Any], Any] = {
            JSON_PATCH: json_patch, MERGE_PATCH: merge_patch, STRATEGIC_MERGE_PATCH: strategic_merge_patch,
        }[content_type]  # fmt: skip
        if content_type != JSON_PATCH and not isinstance(patch, dict):
            raise errors.bad_request(f"a {content_type} patch must be a JSON object")

        def patched(current: dict[str, Any]) -> Any:
            try:
                return apply(current, patch)
            except MalformedPatch as exc:
                raise errors.bad_request(str(exc)) from exc
            except PatchError as exc:
                raise errors.unprocessable(str(exc), kind.target(address.name)) from exc

        return await self._update(kind, address, request, patched)

    async def _apply(self, kind: Kind, address: Address, request: Request) -> Any:
        """Server-side apply where it creates: the applied document becomes the object.

        As the API server: an apply to a missing object creates it (k8s.io/apiserver
        pkg/endpoints/handlers/patch.go, applyPatcher), and an apply without `fieldManager` is
        422 with the message of ValidatePatchOptions (kubernetes/kubernetes
        staging/src/k8s.io/apimachinery/pkg/apis/meta/v1/validation/validation.go, read at commit
        046d201c, not at a release tag: "fieldManager: Required value: is required for apply patch"). Over an existing object apply needs field ownership
        (managedFields) to decide what a re-apply removes; a merge would silently keep fields a
        real server deletes. Refused there.
        """
        if not request.params.get("fieldManager"):
            raise errors.unprocessable("PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch")
        async with self._lock:
            exists = self._stored(kind, address.namespace, address.name or "") is not None
        if exists or address.subresource is not None:
            raise errors.unsupported_media_type(
                f"{APPLY_PATCH} (over an existing object: not reproduced by the emulator)",
                [JSON_PATCH, MERGE_PATCH] + ([] if kind.crd else [STRATEGIC_MERGE_PATCH]),
            )
        try:  # client-go sends JSON, which is YAML too; kubectl may send YAML
            body = yaml.safe_load(request.body) if request.body else None
        except yaml.YAMLError as exc:
            raise errors.bad_request(f"error decoding YAML: {exc}") from exc
        if not isinstance(body, dict) or not body.get("apiVersion") or not body.get("kind"):
            raise errors.bad_request("an apply patch must be an object with apiVersion and kind")
        meta = body.get("metadata") if isinstance(body.get("metadata"), dict) else {}
        if meta.get("name") not in (None, "", address.name):
            raise errors.bad_request(
                f"the name of the object ({meta.get('name')}) does not match the name on the URL ({address.name})"
            )
        body.setdefault("metadata", {})["name"] = address.name
        return await self._create_object(kind, dataclasses.replace(address, name=None), body, request)

    async def _update(
        self, kind: Kind, address: Address, request: Request, change: Callable[[dict[str, Any]], Any]
    ) -> Any:
        """Everything PUT and PATCH share: read, change, keep what the endpoint may not touch, commit."""
        name = address.name or ""
        async with self._lock:
            current = self._stored(kind, address.namespace, name)
            if current is None:
                raise errors.not_found(kind.target(name))
            new = change(self._external(kind, current))
            if not isinstance(new, dict):
                raise errors.unprocessable("the result of the patch is not an object", kind.target(name))
            new_meta = new.get("metadata")
            if not isinstance(new_meta, dict):
                raise errors.bad_request("metadata must be an object")
            sent_version = new_meta.get("resourceVersion")
            if sent_version not in (None, "") and str(sent_version) != current["metadata"]["resourceVersion"]:
                raise errors.conflict(kind.target(name))
            self._check_type(kind, new)
            if address.subresource == "status":
                # A /status write changes status and nothing else.
                status = new.get("status")
                new = clone(current)
                if status is None:
                    new.pop("status", None)
                else:
                    new["status"] = status
            elif kind.has_status:
                new.pop("status", None)
                if "status" in current:
                    new["status"] = clone(current["status"])
            headers = self._schema_pass(kind, new, request)
            self._keep_server_fields(kind, current, new)
            self._check_metadata(kind, new, current)
            if self._same(current, new):
                return Response(status=200, payload=self._external(kind, current), headers=headers)
            if kind.tracks_generation and self._spec(kind, current) != self._spec(kind, new):
                new["metadata"]["generation"] = int(current["metadata"].get("generation", 1)) + 1
            if (kind.group, kind.plural) == CRD_RESOURCE:
                self._check_crd(new)
                new["status"] = crd_status(new, now())
            if request.params.get("dryRun") == "All":
                return Response(status=200, payload=self._external(kind, new), headers=headers)
            released = new["metadata"].get("deletionTimestamp") and not new["metadata"].get("finalizers")
            if released:
                stored = await self._commit(kind, "DELETED", new, current)
                await self._cascade(kind, stored)
            else:
                stored = await self._commit(kind, "MODIFIED", new, current)
                self._after_commit(kind, stored, current)
        return Response(status=200, payload=self._external(kind, stored), headers=headers)

    @staticmethod
    def _keep_server_fields(kind: Kind, current: dict[str, Any], new: dict[str, Any]) -> None:
        """Fields a client cannot change: identity, server stamps, the deletion mark."""
        meta, old = new["metadata"], current["metadata"]
        for key in ("name", "namespace", "uid", "creationTimestamp", "generation", "deletionTimestamp",
                    "deletionGracePeriodSeconds", "resourceVersion"):  # fmt: skip
            if key in old:
                meta[key] = old[key]
            else:
                meta.pop(key, None)
        meta.pop("managedFields", None)

    @staticmethod
    def _same(current: dict[str, Any], new: dict[str, Any]) -> bool:
        """A write that changes nothing: no new resourceVersion, no event (as on a real server)."""
        return {**current, "apiVersion": None} == {**new, "apiVersion": None}

    @staticmethod
    def _spec(kind: Kind, obj: dict[str, Any]) -> dict[str, Any]:
        ignored = {"metadata", "apiVersion", "kind"} | ({"status"} if kind.has_status else set())
        return {k: v for k, v in obj.items() if k not in ignored}

    # --- writes: delete --------------------------------------------------------------------------

    async def _delete(self, kind: Kind, address: Address, request: Request) -> Any:
        if address.subresource is not None:
            raise errors.method_not_allowed("DELETE")
        options = self._body(request) or {}
        name = address.name or ""
        async with self._lock:
            current = self._stored(kind, address.namespace, name)
            if current is None:
                raise errors.not_found(kind.target(name))
            preconditions = options.get("preconditions") or {} if isinstance(options, dict) else {}
            for key in ("uid", "resourceVersion"):
                if preconditions.get(key) and preconditions[key] != current["metadata"].get(key):
                    raise errors.conflict(
                        kind.target(name),
                        f"Precondition failed: {key}: {preconditions[key]}, {key} in object meta: {current['metadata'].get(key)}",
                    )
            if request.params.get("dryRun") == "All":
                return self._external(kind, current)
            stored = await self._delete_object(kind, current)
        return self._external(kind, stored)

    async def _delete_collection(self, kind: Kind, address: Address, request: Request) -> Any:
        matches = self._predicate(request)
        async with self._lock:
            gone = [await self._delete_object(kind, o) for o in self._all(kind, address.namespace) if matches(o)]
            revision = str(self._revision)
        return {"apiVersion": kind.api_version, "kind": kind.list_kind, "metadata": {"resourceVersion": revision},
                "items": [self._external(kind, o) for o in gone]}  # fmt: skip

    async def _delete_object(self, kind: Kind, current: dict[str, Any]) -> dict[str, Any]:
        """Delete now, or mark for deletion while finalizers remain. Call with the lock held."""
        meta = current["metadata"]
        if meta.get("finalizers"):
            if meta.get("deletionTimestamp"):
                return current
            marked = clone(current)
            marked["metadata"]["deletionTimestamp"] = now()
            marked["metadata"]["deletionGracePeriodSeconds"] = 0
            if kind.tracks_generation:
                marked["metadata"]["generation"] = int(meta.get("generation", 1)) + 1
            return await self._commit(kind, "MODIFIED", marked, current)
        gone = await self._commit(kind, "DELETED", clone(current), current)
        await self._cascade(kind, gone)
        return gone

    async def _cascade(self, kind: Kind, gone: dict[str, Any]) -> None:
        """What garbage collection and the namespace / CRD controllers delete after an object."""
        meta = gone["metadata"]
        if (kind.group, kind.plural) == NAMESPACES:
            for key, obj in list(self._objects.items()):
                if key[1] == meta["name"] and not obj.deleted:
                    await self._delete_object(self._stored_kind(key[0]), obj.raw)
        if (kind.group, kind.plural) == CRD_RESOURCE:
            crd = self._crds.get((gone["spec"]["group"], gone["spec"]["names"]["plural"]))
            if crd is not None:
                crd_kind = self._crd_kind(crd, crd.storage_version)
                for obj in self._all(crd_kind, None):
                    await self._commit(crd_kind, "DELETED", clone(obj), obj)
                self._unregister_crd(crd.group, crd.plural)
        for key, obj in list(self._objects.items()):
            if obj.deleted:
                continue
            owners = obj.raw["metadata"].get("ownerReferences") or []
            if any(ref.get("uid") == meta.get("uid") for ref in owners):
                await self._delete_object(self._stored_kind(key[0]), obj.raw)

    def _stored_kind(self, storage: kmock.resource) -> Kind:
        crd = self._crds.get((storage.group, storage.plural))
        if crd is not None:
            return self._crd_kind(crd, crd.storage_version)
        return self._builtin_kind(storage.group, storage.version, storage.plural)

    # --- commit and notify -----------------------------------------------------------------------

    async def _commit(
        self, kind: Kind, event: str, obj: dict[str, Any], previous: dict[str, Any] | None
    ) -> dict[str, Any]:
        """Store one change with the next resourceVersion and publish it. Call with the lock held."""
        self._revision += 1
        obj["metadata"]["resourceVersion"] = str(self._revision)
        obj["apiVersion"] = f"{kind.group}/{kind.storage_version}" if kind.group else kind.storage_version
        namespace = obj["metadata"].get("namespace") if kind.namespaced else None
        key = (kind.storage, namespace, obj["metadata"]["name"])
        if event == "DELETED":
            self._objects[key].delete()
        elif key in self._objects and self._objects[key].deleted:
            self._objects[key].create(obj)
        elif key in self._objects:
            self._objects[key].history.append(obj)
        else:
            self._objects[key] = obj
        change = Change(
            self._revision, kind.group, kind.plural, namespace, obj["metadata"]["name"], event, clone(obj), previous
        )
        if len(self._log) == self._log.maxlen:
            self._compacted = self._log[0].revision
        self._log.append(change)
        await self._changes.put(change)
        return clone(obj)

    def _after_commit(self, kind: Kind, stored: dict[str, Any], previous: dict[str, Any] | None) -> None:
        if (kind.group, kind.plural) == CRD_RESOURCE:
            self._register_crd(parse_crd(stored))

    # --- validation ------------------------------------------------------------------------------

    def _schema_pass(self, kind: Kind, obj: dict[str, Any], request: Request) -> dict[str, str]:
        """Prune, default and validate `obj` in place; returns the Warning header for pruned fields."""
        name = (obj.get("metadata") or {}).get("name") or (obj.get("metadata") or {}).get("generateName") or ""
        if kind.crd is not None:
            schema = kind.crd.versions[kind.version].schema
            unknown = schema.prune(obj)
            schema.apply_defaults(obj)
            problems = schema.validate(obj)
            if problems:
                raise errors.invalid(kind.target(name), problems)
        else:
            unknown = prune_metadata(obj)
        if (kind.group, kind.plural) == CRD_RESOURCE:
            self._check_crd(obj)
        if not unknown:
            return {}
        mode = request.params.get("fieldValidation", "Warn")
        if mode == "Strict":
            raise errors.bad_request("strict decoding error: " + ", ".join(f'unknown field "{f}"' for f in unknown))
        if mode == "Ignore":
            return {}
        namespace = (obj.get("metadata") or {}).get("namespace")
        self.warnings.extend(
            f"{kind.kind} {namespace + '/' if namespace else ''}{name}: unknown field {f!r}" for f in unknown
        )
        return {"Warning": ", ".join(f'299 - "unknown field \\"{f}\\""' for f in unknown)}

    @staticmethod
    def _check_crd(obj: dict[str, Any]) -> None:
        problems = crd_errors(obj)
        if problems:
            name = (obj.get("metadata") or {}).get("name") or ""
            raise errors.invalid(
                Target(
                    group="apiextensions.k8s.io",
                    plural="customresourcedefinitions",
                    kind="CustomResourceDefinition",
                    name=name,
                ),
                problems,
            )

    def _check_metadata(self, kind: Kind, obj: dict[str, Any], current: dict[str, Any] | None = None) -> None:
        """ObjectMeta validation every kind gets: name, label keys and values, annotation size."""
        meta, problems = obj["metadata"], []
        name = meta.get("name")
        label_only = (kind.group, kind.plural) == NAMESPACES
        if not name:
            problems.append(
                FieldError("metadata.name", "FieldValueRequired", "Required value: name or generateName is required")
            )
        elif label_only and (len(name) > 63 or not _LABEL.match(name)):
            problems.append(
                FieldError(
                    "metadata.name",
                    "FieldValueInvalid",
                    f"Invalid value: \"{name}\": a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character",
                )
            )
        elif len(name) > 253 or not _SUBDOMAIN.match(name):
            problems.append(
                FieldError(
                    "metadata.name",
                    "FieldValueInvalid",
                    f"Invalid value: \"{name}\": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character",
                )
            )
        for key, value in (meta.get("labels") or {}).items():
            problems.extend(_key_errors("metadata.labels", key))
            if not isinstance(value, str):
                raise errors.bad_request(
                    f"json: cannot unmarshal {type(value).__name__} into Go struct field ObjectMeta.metadata.labels of type string"
                )
            if value and (len(value) > 63 or not _QUALIFIED_NAME.match(value)):
                problems.append(
                    FieldError(
                        "metadata.labels",
                        "FieldValueInvalid",
                        f"Invalid value: \"{value}\": a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (at most 63 characters)",
                    )
                )
        annotations = meta.get("annotations") or {}
        for key, value in annotations.items():
            problems.extend(_key_errors("metadata.annotations", key))
            if not isinstance(value, str):
                raise errors.bad_request(
                    f"json: cannot unmarshal {type(value).__name__} into Go struct field ObjectMeta.metadata.annotations of type string"
                )
        if sum(len(k) + len(v) for k, v in annotations.items() if isinstance(v, str)) > MAX_ANNOTATIONS_BYTES:
            problems.append(
                FieldError(
                    "metadata.annotations",
                    "FieldValueTooLong",
                    f"Too long: must have at most {MAX_ANNOTATIONS_BYTES} bytes",
                )
            )
        if current is not None and current["metadata"].get("deletionTimestamp"):
            added = set(meta.get("finalizers") or []) - set(current["metadata"].get("finalizers") or [])
            if added:
                problems.append(
                    FieldError(
                        "metadata.finalizers",
                        "FieldValueForbidden",
                        f"Forbidden: no new finalizers can be added if the object is being deleted, found new finalizers {sorted(added)!r}",
                    )
                )
        if problems:
            raise errors.invalid(kind.target(name), problems)

    # --- discovery (kmock's says groupVersion "/v1" for the core group, which client-go drops) ----

    async def _serve_api(self, request: Request) -> Any:
        return {"kind": "APIVersions", "versions": ["v1"],
                "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": request.url.host or "127.0.0.1"}]}  # fmt: skip

    def _groups(self) -> dict[str, list[str]]:
        versions: dict[str, set[str]] = collections.defaultdict(set)
        for k in self._served_kinds():
            if k.group:
                versions[k.group].add(k.version)
        return {group: sorted(found, key=version_priority) for group, found in sorted(versions.items())}

    @staticmethod
    def _group_document(group: str, versions: list[str]) -> dict[str, Any]:
        entries = [{"groupVersion": f"{group}/{v}", "version": v} for v in versions]
        return {"name": group, "versions": entries, "preferredVersion": entries[0]}

    async def _serve_apis(self, request: Request) -> Any:
        groups = [self._group_document(g, vs) for g, vs in self._groups().items()]
        return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}

    async def _serve_group(self, request: Request) -> Any:
        address = parse_path(request.url.path)
        versions = self._groups().get(address.group or "")
        if not versions:
            raise errors.no_such_resource()
        return {"kind": "APIGroup", "apiVersion": "v1", **self._group_document(address.group or "", versions)}

    async def _serve_version(self, request: Request) -> Any:
        address = parse_path(request.url.path)
        kinds = [k for k in self._served_kinds() if (k.group, k.version) == (address.group, address.version)]
        if not kinds:
            raise errors.no_such_resource()
        entries: list[dict[str, Any]] = []
        for k in sorted(kinds, key=lambda k: k.plural):
            info = self.resources[resource(group=k.group, version=k.version, plural=k.plural)]
            entries.append({
                "name": k.plural, "singularName": info.singular or k.plural, "namespaced": k.namespaced,
                "kind": k.kind, "verbs": sorted(info.verbs), "shortNames": sorted(info.shortnames),
                "categories": sorted(info.categories),
            })  # fmt: skip
            for sub in sorted(info.subresources):
                entries.append({"name": f"{k.plural}/{sub}", "singularName": "", "namespaced": k.namespaced,
                                "kind": k.kind, "verbs": ["get", "patch", "update"]})  # fmt: skip
        group_version = f"{address.group}/{address.version}" if address.group else str(address.version)
        return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version, "resources": entries}

    # --- OpenAPI v3, for kubectl -----------------------------------------------------------------

    def _served_kinds(self) -> list[Kind]:
        kinds = [self._builtin_kind(r.group, r.version, r.plural) for r in self._builtins]
        kinds += [self._crd_kind(crd, v) for crd in self._crds.values() for v in crd.served_versions]
        return kinds

    async def _serve_openapi_root(self, request: Request) -> Any:
        group_versions = {("api/v1" if not k.group else f"apis/{k.group}/{k.version}") for k in self._served_kinds()}
        return {
            "paths": {
                gv: {"serverRelativeURL": f"/openapi/v3/{gv}?hash={self._revision}"} for gv in sorted(group_versions)
            }
        }

    async def _serve_openapi_group_version(self, request: Request) -> Any:
        """Just the PATCH operations with their `fieldValidation` parameter: kubectl looks for them
        to decide it may leave validation to the server (no schemas are published)."""
        gv = request.url.path.removeprefix("/openapi/v3/")
        paths: dict[str, Any] = {}
        for k in self._served_kinds():
            if gv != ("api/v1" if not k.group else f"apis/{k.group}/{k.version}"):
                continue
            prefix = f"/{gv}/namespaces/{{namespace}}" if k.namespaced else f"/{gv}"
            paths[f"{prefix}/{k.plural}/{{name}}"] = {
                "patch": {
                    "x-kubernetes-action": "patch",
                    "x-kubernetes-group-version-kind": {"group": k.group, "version": k.version, "kind": k.kind},
                    "parameters": [
                        {"name": n, "in": "query", "schema": {"type": "string"}}
                        for n in ("dryRun", "fieldManager", "fieldValidation", "force")
                    ],
                    "responses": {"200": {"description": "OK"}},
                }
            }
        if not paths:
            raise errors.no_such_resource()
        return {
            "openapi": "3.0.0",
            "info": {"title": "Kubernetes", "version": "v1.32.0"},
            "paths": paths,
            "components": {"schemas": {}},
        }

    # --- helpers for fixtures --------------------------------------------------------------------

    def served_crds(self) -> list[str]:
        return sorted(f"{crd.plural}.{crd.group}" for crd in self._crds.values())


def version_priority(version: str) -> tuple[int, int, int, str]:
    """Sort key putting the preferred version first: GA over beta over alpha, then newer first."""
    m = re.fullmatch(r"v(\d+)(?:(alpha|beta)(\d+))?", version)
    if m is None:
        return (3, 0, 0, version)
    stability = {None: 0, "beta": 1, "alpha": 2}[m[2]]
    return (stability, -int(m[1]), -int(m[3] or 0), version)


def _key_errors(where: str, key: str) -> list[FieldError]:
    prefix, _, name = key.rpartition("/")
    if (
        (prefix and (len(prefix) > 253 or not _SUBDOMAIN.match(prefix)))
        or not name
        or len(name) > 63
        or not _QUALIFIED_NAME.match(name)
    ):
        return [
            FieldError(
                where,
                "FieldValueInvalid",
                f"Invalid value: \"{key}\": name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (with an optional DNS subdomain prefix and '/', at most 63 characters in the name part)",
            )
        ]
    return []
