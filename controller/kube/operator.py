"""The Kubernetes operator: kopf around the same `reconcile` the local runner calls.

No second engine: each ModelRollout gets a kopf daemon that, every `tick` (or at once when its
model's aliases change, or one of its InferenceServices' status does), parses spec and status and
calls `controller.reconcile.reconcile` with the KServe platform behind the `Platform` port. The
whole rollout state is the CR's status, written before any action (with the resourceVersion read,
so a decision taken on a stale status is refused and retaken), so an operator restarted or moved
to another replica continues the same step. kopf peering keeps one replica acting.

An idle rollout costs the API server nothing: ModelRollouts and InferenceServices are read from
what kopf's watches keep in memory (`controller.kube.object_view`), a status that did not change
is not written, and a routing already in place is not either. A status write refused because the
copy read was behind (409) reads the object once from the API server and decides again.

Shared by all rollouts: one MLflow registry poll per interval (`RegistryPoller`), woken early by
verified MLflow webhooks; the KServe platform per namespace; the operator's own metrics.

User commands arrive as annotations (`controller.kube.commands`): carried out once, recorded in
`status.lastCommandId`, then removed.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import kopf
from kubernetes import client as k8s
from kubernetes import config as kube_config
from kubernetes.client.exceptions import ApiException

from canary.decision.engine import RecordEvent
from canary.decision.metrics import PrometheusProvider, without_credentials
from canary.decision.spec import Condition, RolloutStatus, SpecError
from controller.kserve.comparator import ComparedKServePlatform
from controller.kserve.documents import BASELINE_SUFFIX, CANARY_SUFFIX, IsvcTarget, shadow_name
from controller.kserve.documents import GROUP as ISVC_GROUP
from controller.kserve.documents import PLURAL as ISVC_PLURAL
from controller.kserve.documents import VERSION as ISVC_VERSION
from controller.kserve.platform import KServePlatform
from controller.kube.commands import COMMAND_ANNOTATION, COMMAND_ID_ANNOTATION, CommandRequest, clear_patch, read_command
from controller.kube.crd import GROUP, PLURAL, VERSION
from controller.kube.object_view import ObjectView
from controller.kube.operator_http import HttpServer, create_app
from controller.kube.operator_metrics import OperatorMetrics
from controller.kube.rollout_resource import (
    SPEC_VALID,
    STATUS_VALID,
    ResourceError,
    condition_of,
    conditions_patch,
    event_body,
    isvc_target,
    read,
    set_condition,
    status_patch,
    status_unchanged,
)
from controller.kube.series_catalog import SeriesCatalog
from controller.reconcile import Ports, reconcile
from controller.registry_poller import RegistryPoller
from registry.connection import connect
from registry.webhooks import WebhookEvent

log = logging.getLogger("modelrollout.operator")

MERGE_PATCH = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
ANNOTATION_PREFIX = "modelrollout.io"  # kopf's own bookkeeping annotations, instead of status.kopf
WEBHOOK_SECRET_ENV = "MODELROLLOUT_WEBHOOK_SECRET"
# Seconds a replica's peering record counts as alive without a keep-alive (kopf's default is 60).
PEERING_LIFETIME_S = 20
# The shortest time between two reconciles of one rollout that a wake can ask for: KServe writes an
# InferenceService's status several times while a revision starts, and a burst of them is then one
# reconcile, not one each; it also bounds a rollout and KServe answering each other's writes.
WAKE_GAP_S = 0.1

Key = tuple[str, str]  # (namespace, name)


@dataclass(frozen=True)
class OperatorConfig:
    mlflow_uri: str
    prometheus_url: str
    comparator_url: str | None = None
    artifacts_destination: str | None = None  # what `mlflow server --artifacts-destination` was given
    namespaces: tuple[str, ...] = ()  # empty: every namespace
    tick_s: float = 10.0
    poll_interval_s: float = 15.0
    host: str = "127.0.0.1"
    port: int = 8080
    webhook_secret: str | None = field(default=None, repr=False)  # never logged
    comparator_token: str | None = field(default=None, repr=False)  # the comparator's admin token
    peering: str | None = "modelrollout"  # None: standalone, no peering


def kubernetes_api_client() -> k8s.ApiClient:
    """In a pod: its service account; elsewhere: the kubeconfig (KUBECONFIG or ~/.kube/config)."""
    configuration = k8s.Configuration()
    if os.environ.get("KUBERNETES_SERVICE_HOST"):
        kube_config.load_incluster_config(client_configuration=configuration)
    else:
        kube_config.load_kube_config(client_configuration=configuration)
    return k8s.ApiClient(configuration)


class RolloutOperator:
    """What the kopf handlers share, and one reconcile of one ModelRollout (`reconcile_once`)."""

    def __init__(self, config: OperatorConfig, api_client: k8s.ApiClient) -> None:
        self.config = config
        self.api_client = api_client
        self.custom = k8s.CustomObjectsApi(api_client)
        self.core = k8s.CoreV1Api(api_client)
        self.client = connect(config.mlflow_uri, timeout_s=5, max_retries=0)
        self.metrics = OperatorMetrics()
        prometheus = PrometheusProvider(config.prometheus_url)
        self.provider = self.metrics.timed(prometheus)
        self.series = SeriesCatalog(prometheus.metric_names)
        self.poller = RegistryPoller(self.client, config.poll_interval_s, on_change=self._model_changed, observe=self.metrics.poll)
        self.artifact_uris: dict[tuple[str, str], str] = {}
        self._platforms: dict[str, ComparedKServePlatform] = {}
        self._targets: dict[Key, IsvcTarget] = {}
        self._owners: dict[Key, Key] = {}  # (namespace, InferenceService) -> the rollout that drives it
        # What kopf's watches keep (build_registry's handlers feed them) and the writes' answers.
        self.rollouts = ObjectView()
        self.inference_services = ObjectView()
        # Whether kopf watches InferenceServices (their CRD is served): else they are read per tick.
        self.isvcs_watched = False
        self._models: dict[Key, str] = {}
        self._wakers: dict[Key, Callable[[], None]] = {}
        self._reported: dict[Key, str] = {}  # last invalid-spec/status problem reported as an Event
        self._lock = threading.Lock()
        self.kopf_ready = threading.Event()

    # -- shared parts -----------------------------------------------------------------------------

    def platform(self, namespace: str) -> ComparedKServePlatform:
        with self._lock:
            if namespace not in self._platforms:
                kserve = KServePlatform(
                    self.api_client,
                    lambda rollout: self._targets[(namespace, rollout)],
                    self.config.comparator_url,
                    cache=self.inference_services if self.isvcs_watched else None,
                )
                self._platforms[namespace] = ComparedKServePlatform(
                    kserve, self.config.comparator_url, token=self.config.comparator_token
                )
            return self._platforms[namespace]

    def register_waker(self, key: Key, wake: Callable[[], None]) -> None:
        with self._lock:
            self._wakers[key] = wake

    def unregister_waker(self, key: Key) -> None:
        with self._lock:
            self._wakers.pop(key, None)

    def rollout_seen(self, body: Any) -> None:
        """A watch event of a ModelRollout: keep it, and wake the rollout when what it was asked to do
        changed (its spec, or a command from `kubectl modelrollout …`): acted on now, not next tick.

        Status writes (the operator's own) and kopf's bookkeeping annotations wake nothing.
        """
        update = self.rollouts.observe(body)
        if update.kept and update.previous is not None and _request_of(update.previous) != _request_of(body):
            meta = body.get("metadata") or {}
            self.wake((meta.get("namespace") or "", meta.get("name") or ""))

    def inference_service_seen(self, body: Any) -> None:
        """A watch event of an InferenceService: keep it, and wake its rollout when its status changed
        (Ready, a new revision, a failure): the rollout acts on it now, not at its next tick.

        The answer to the operator's own write is kept first, so the watch's echo of that write
        changes no status and wakes nobody.
        """
        update = self.inference_services.observe(body)
        if update.kept and (update.previous or {}).get("status") != body.get("status"):
            self._wake_owner(body)

    def inference_service_gone(self, body: Any) -> None:
        meta = body.get("metadata") or {}
        if self.inference_services.forget(meta.get("namespace") or "", meta.get("name") or "", meta.get("resourceVersion")):
            self._wake_owner(body)

    def _wake_owner(self, body: Any) -> None:
        meta = body.get("metadata") or {}
        with self._lock:
            owner = self._owners.get((meta.get("namespace") or "", meta.get("name") or ""))
        if owner is not None:
            self.wake(owner)

    def _set_target(self, key: Key, target: IsvcTarget) -> None:
        with self._lock:
            previous = self._targets.get(key)
            if previous == target:
                return
            if previous is not None:
                for name in _isvc_names(previous):
                    self._owners.pop((previous.namespace, name), None)
            self._targets[key] = target
            for name in _isvc_names(target):
                self._owners[(target.namespace, name)] = key

    def _model_changed(self, model: str) -> None:
        with self._lock:
            wakers = [w for key, w in self._wakers.items() if self._models.get(key) == model]
        for wake in wakers:
            wake()

    def on_webhook(self, event: WebhookEvent) -> None:
        """A verified MLflow delivery: poll now if it names a model we watch (the poll decides)."""
        with self._lock:
            watched = event.model in self._models.values()
        if watched:
            self.poller.wake()

    def liveness(self) -> str | None:
        return None if self.poller.alive else "the registry poll thread has stopped"

    def readiness(self) -> str | None:
        if not self.kopf_ready.is_set():
            return "kopf is not watching yet"
        if not self.poller.wait_polled(0):
            return "the registry has not been polled yet"
        return None

    # -- one rollout ------------------------------------------------------------------------------

    def reconcile_once(self, namespace: str, name: str, now: datetime | None = None) -> RolloutStatus | None:
        """One tick of one rollout; None when nothing could be decided (gone, invalid, conflict)."""
        key = (namespace, name)
        now = now or datetime.now(timezone.utc)
        obj = self.rollouts.get(namespace, name) or self._read_rollout(namespace, name)
        if obj is None:
            return None
        try:
            resource = read(obj)
            target = isvc_target(resource.rollout)
        except (SpecError, ValueError) as err:  # ResourceError is a ValueError too
            kind = STATUS_VALID if isinstance(err, ResourceError) else SPEC_VALID
            self._report_invalid(obj, kind, str(err), now)
            return None
        rollout, status = resource.rollout, resource.status
        # Written with this tick's status: a spec edit alone changes it, so the status is saved.
        status.observed_generation = obj["metadata"].get("generation")
        self._reported.pop(key, None)
        if (previous := condition_of(obj.get("status"), SPEC_VALID)) is not None and previous.get("status") != "True":
            set_condition(status, Condition(type=SPEC_VALID, status="True", reason="Valid", last_transition_time=now))
        self._set_target(key, target)
        with self._lock:
            self._models[key] = rollout.spec.model.name
        self.poller.watch(key, rollout.spec.model.name)
        snapshot, snapshot_error = self.poller.snapshot_for(rollout.spec.model.name)

        request = read_command(resource.annotations)
        commands = []
        if request is not None and request.command is not None and request.id != status.last_command_id:
            commands = [(request.id, request.command)]
        elif request is not None and request.problem is not None:
            self._post_event(obj, RecordEvent("Warning", "CommandIgnored", request.problem))

        ports = Ports(
            client=self.client,
            platform=self.platform(namespace),
            metrics=self.provider,
            save_status=lambda _name, new: self._save_status(obj, new),
            record_event=lambda _name, event: self._post_event(obj, event),
            artifact_uris=self.artifact_uris,
            artifacts_destination=self.config.artifacts_destination,
            series=self.series.check,
        )
        started = time.perf_counter()
        try:
            new_status = reconcile(rollout, status, snapshot, snapshot_error, commands, ports, now)
        except ApiException as err:
            if err.status == 409:  # changed since read (a command, an edit): read it, decide again
                log.info("%s/%s changed while reconciling; reconciling again", namespace, name)
                self._read_rollout(namespace, name)  # the watch may not have brought the change yet
                self.wake(key)
                return None
            raise
        finally:
            self.metrics.reconcile_seconds.observe(time.perf_counter() - started)
        if request is not None:
            self._clear_command(namespace, name, request)
        self.metrics.rollout(key, new_status)
        for transition in new_status.history:
            if transition.time == now:
                self.metrics.transitioned(transition.to)
        return new_status

    def reconcile_safely(self, namespace: str, name: str) -> None:
        """`reconcile_once` for the daemon: a failure is logged, and the next tick tries again."""
        try:
            self.reconcile_once(namespace, name)
        except Exception as err:  # noqa: BLE001 - one bad tick must not end the rollout's daemon
            log.warning("%s/%s: reconcile failed, retrying next tick: %s: %s", namespace, name, type(err).__name__, err)

    def wake(self, key: Key) -> None:
        with self._lock:
            wake = self._wakers.get(key)
        if wake is not None:
            wake()

    def on_deleted(self, namespace: str, name: str) -> None:
        """The ModelRollout is being deleted: the primary back to its stable alone, the shadow gone."""
        key = (namespace, name)
        try:
            if key in self._targets:
                self.platform(namespace).teardown(name)
        finally:
            with self._lock:
                target = self._targets.pop(key, None)
                for isvc in _isvc_names(target) if target is not None else ():
                    self._owners.pop((namespace, isvc), None)
                self._models.pop(key, None)
            self.poller.forget(key)
            self.metrics.rollout(key, None)

    def close(self) -> None:
        for platform in self._platforms.values():
            platform.close()

    # -- API calls --------------------------------------------------------------------------------

    def _read_rollout(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The ModelRollout from the API server (not in the view yet, or the view was behind)."""
        try:
            obj = self.custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
        except ApiException as err:
            if err.status == 404:
                return None
            raise
        self.rollouts.observe(obj)
        return obj

    def _save_status(self, obj: Mapping[str, Any], status: RolloutStatus) -> None:
        if status_unchanged(obj.get("status"), status):
            return  # no request: nothing to write, so nothing a stale copy could overwrite either
        meta = obj["metadata"]
        written = self.custom.patch_namespaced_custom_object_status(
            GROUP, VERSION, meta["namespace"], PLURAL, meta["name"],
            status_patch(status, meta.get("resourceVersion")), _content_type=MERGE_PATCH,
        )  # fmt: skip
        self.rollouts.observe(written)  # the next tick decides on what was written, not on the copy before

    def _post_event(self, obj: dict[str, Any], event: RecordEvent) -> None:
        meta = obj["metadata"]
        level = logging.WARNING if event.type == "Warning" else logging.INFO
        log.log(level, "%s/%s: %s: %s", meta["namespace"], meta["name"], event.reason, event.message)
        try:
            self.core.create_namespaced_event(meta["namespace"], event_body(obj, event))
        except ApiException as err:  # an Event is worth a log line, never a failed tick
            log.warning("could not post Event %s for %s/%s: HTTP %s", event.reason, meta["namespace"], meta["name"], err.status)

    def _clear_command(self, namespace: str, name: str, request: CommandRequest) -> None:
        try:
            self.rollouts.observe(
                self.custom.patch_namespaced_custom_object(
                    GROUP, VERSION, namespace, PLURAL, name, clear_patch(request.id), _content_type=JSON_PATCH
                )
            )
        except ApiException as err:
            if err.status != 422:  # 422: a newer command replaced it; the wake below runs it
                raise
        self.wake((namespace, name))

    def _report_invalid(self, obj: dict[str, Any], kind: str, problem: str, now: datetime) -> None:
        """Say what is wrong in a condition and (once per problem) an Event; keep the state as it is."""
        meta = obj["metadata"]
        key = (meta["namespace"], meta["name"])
        reason = "InvalidStatus" if kind == STATUS_VALID else "InvalidSpec"
        current = condition_of(obj.get("status"), kind)
        if not (current and current.get("status") == "False" and current.get("message") == problem):
            condition = Condition(type=kind, status="False", reason=reason, message=problem, last_transition_time=now)
            written = self.custom.patch_namespaced_custom_object_status(
                GROUP, VERSION, key[0], PLURAL, key[1], conditions_patch(obj.get("status"), condition),
                _content_type=MERGE_PATCH,
            )  # fmt: skip
            self.rollouts.observe(written)
        if self._reported.get(key) != problem:
            self._reported[key] = problem
            self._post_event(obj, RecordEvent("Warning", reason, problem))


def _request_of(obj: Mapping[str, Any]) -> tuple[Any, ...]:
    """What a user asks of a rollout: its spec and a pending command."""
    annotations = (obj.get("metadata") or {}).get("annotations") or {}
    return obj.get("spec"), annotations.get(COMMAND_ANNOTATION), annotations.get(COMMAND_ID_ANNOTATION)


def _isvc_names(target: IsvcTarget) -> tuple[str, ...]:
    """Every InferenceService a rollout may drive: the primary, the shadow, Standard mode's seconds."""
    return (target.name, shadow_name(target.name), target.name + CANARY_SUFFIX, target.name + BASELINE_SUFFIX)


def inference_services_served(api_client: k8s.ApiClient) -> bool:
    """Whether the API server serves InferenceServices (KServe's CRD is installed) for kopf to watch.

    kopf resolves the resources it watches once, at start-up (scanning is off): without the CRD then,
    nothing feeds the view, and the KServe platform reads InferenceServices per tick as it always could.
    """
    try:
        served = k8s.CustomObjectsApi(api_client).get_api_resources(ISVC_GROUP, ISVC_VERSION)
    except ApiException as err:
        if err.status == 404:
            return False
        raise
    return any(r.name == ISVC_PLURAL and {"list", "watch"} <= set(r.verbs or ()) for r in served.resources or ())


# ---------------------------------------------------------------------------------------------
# kopf


def build_registry(operator: RolloutOperator) -> kopf.OperatorRegistry:
    registry = kopf.OperatorRegistry()
    tick = operator.config.tick_s

    @kopf.on.login(registry=registry)
    def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        return kopf.login_via_client(**kwargs)

    @kopf.on.startup(registry=registry)
    def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
        # kopf's bookkeeping in annotations: the status is the rollout's alone.
        settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=ANNOTATION_PREFIX)
        settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
            prefix=ANNOTATION_PREFIX, key="last-handled-configuration"
        )
        settings.posting.level = logging.WARNING  # our Events are posted by reconcile, not kopf's log
        settings.watching.server_timeout = 300
        # A replica killed without a goodbye (SIGKILL, a lost node) leaves its peering record alive for
        # its lifetime, and kopf pauses the replica that replaces it until then: kopf's 60 s default
        # would leave every rollout unattended for a minute after a crash. Kept alive every ~10-15 s.
        settings.peering.lifetime = PEERING_LIFETIME_S
        # The CRD is ours and known: no cluster-wide CRD watch or namespace listing (least-privilege RBAC).
        settings.scanning.disabled = True
        operator.isvcs_watched = inference_services_served(operator.api_client)
        if not operator.isvcs_watched:
            log.warning("the API server serves no %s/%s %s: they are read per tick", ISVC_GROUP, ISVC_VERSION, ISVC_PLURAL)

    # The in-memory views. ModelRollouts: kopf calls event handlers before it spawns a daemon for the
    # same event, so a daemon's first tick finds its object. InferenceServices: fed by an index
    # handler, because kopf lists every indexed kind before it runs any other handler, daemons
    # included: a first tick never takes an InferenceService that exists for one that does not.
    # Nothing is stored in kopf's own index (the handler returns None). Async: no thread per event.
    @kopf.on.event(GROUP, VERSION, PLURAL, registry=registry)
    async def rollout_event(type: str | None, body: kopf.Body, **_: Any) -> None:
        if type == "DELETED":
            meta = body.get("metadata") or {}
            operator.rollouts.forget(meta.get("namespace") or "", meta.get("name") or "", meta.get("resourceVersion"))
        else:
            operator.rollout_seen(body)

    @kopf.index(ISVC_GROUP, ISVC_VERSION, ISVC_PLURAL, registry=registry)
    async def inference_services(body: kopf.Body, **_: Any) -> None:
        operator.inference_service_seen(body)

    @kopf.on.event(ISVC_GROUP, ISVC_VERSION, ISVC_PLURAL, registry=registry)
    async def inference_service_event(type: str | None, body: kopf.Body, **_: Any) -> None:
        # The index handler has kept every other event already (kopf drops deleted objects from it).
        if type == "DELETED":
            operator.inference_service_gone(body)
        elif type is None:  # a listing: what it does not show may have been deleted unseen
            operator.inference_services.listed(body)

    @kopf.daemon(GROUP, VERSION, PLURAL, registry=registry, cancellation_timeout=10.0)
    async def drive(namespace: str, name: str, stopped: kopf.DaemonStopped, **_: Any) -> None:
        key = (namespace, name)
        wake = asyncio.Event()
        loop = asyncio.get_running_loop()
        operator.register_waker(key, lambda: loop.call_soon_threadsafe(wake.set))
        try:
            while not stopped:
                wake.clear()
                began = loop.time()
                await asyncio.to_thread(operator.reconcile_safely, namespace, name)
                try:
                    await asyncio.wait_for(wake.wait(), timeout=tick)
                except asyncio.TimeoutError:
                    pass
                await asyncio.sleep(max(0.0, began + WAKE_GAP_S - loop.time()))
        finally:
            operator.unregister_waker(key)

    @kopf.on.delete(GROUP, VERSION, PLURAL, registry=registry)
    def deleted(namespace: str, name: str, **_: Any) -> None:
        operator.on_deleted(namespace, name)

    return registry


def run_operator(
    config: OperatorConfig,
    stop_flag: threading.Event | None = None,
    ready_flag: threading.Event | None = None,
    api_client: k8s.ApiClient | None = None,
) -> None:
    """Run until `stop_flag` (or SIGINT/SIGTERM in the main thread)."""
    operator = RolloutOperator(config, api_client or kubernetes_api_client())
    http = HttpServer(
        create_app(operator.metrics.registry, operator.liveness, operator.readiness, config.webhook_secret, operator.on_webhook),
        config.host,
        config.port,
    ).start()
    operator.poller.start()
    ready = ready_flag or threading.Event()
    watcher = threading.Thread(target=lambda: ready.wait() and operator.kopf_ready.set(), daemon=True)
    watcher.start()
    log.info(
        "operator: %s, MLflow %s, Prometheus %s, comparator %s, HTTP %s, tick %gs, poll %gs",
        ", ".join(config.namespaces) or "all namespaces", without_credentials(config.mlflow_uri),
        without_credentials(config.prometheus_url), without_credentials(config.comparator_url or "none"), http.url,
        config.tick_s, config.poll_interval_s,
    )  # fmt: skip
    try:
        asyncio.run(
            kopf.operator(
                registry=build_registry(operator),
                standalone=config.peering is None,
                peering_name=config.peering,
                clusterwide=not config.namespaces,
                namespaces=list(config.namespaces),
                stop_flag=stop_flag,
                ready_flag=ready,
            )
        )
    finally:
        operator.poller.stop()
        http.stop()
        operator.close()
