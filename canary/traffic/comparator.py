"""The shadow comparator: KServe has no native shadow, so this service makes one.

Run as `modelrollout shadow-server`. The predictor `logger` (`mode: all`) of the InferenceService
clients call posts its requests and responses here as CloudEvents, as KServe v0.20.0's agent sends
them (pkg/logger/handler.go, worker.go): binary mode, `ce-type`
`org.kubeflow.serving.inference.request` / `.response`, `ce-inferenceservicename`, `ce-namespace`,
`ce-metadata`; the body is the payload, and both events carry the *request's* content type. The
comparator pairs the two halves by `ce-id` in whichever order they come (the agent's workers send
concurrently), replays a share of the requests to the candidate's shadow InferenceService,
compares the answers instance by instance (V1 and V2; regression values within the target's
`comparison` tolerance, else the settings' default), and exports the same metrics as the local
router (canary/traffic/serving_metrics.py): requests, errors and latency of the shadow, agreement with the
stable (and the relative error of regression values), the predicted classes and values of both for
drift, and accuracy, calibration and label lag against labels sent to `POST /feedback`. The label
lag is measured from when the comparator paired the request's two events, which trails the
request by the logger's delivery time.

Which request a label is for: the agent ids both events by the request's `Ce-Id` header, else a
random UUID it tells nobody; so clients that send labels send `Ce-Id: <their id>` with the
inference request and post the label under that id. The operator's logger also names
`X-Request-Id` in `metadataHeaders`, so a client's `X-Request-Id` reaches the events' `ce-metadata`
and labels may name the request by it instead.

The agent logs a response only for a 200. A request whose response has not come within the
pending TTL was answered otherwise: it counts as a failed request of the stable (not a comparison,
never an agreement), and its copy still goes to the shadow, so both are judged on the same requests.
A response whose request never came is a drop.

The primary never waits on any of this: the logger is asynchronous, every event is answered
202 at once, unpaired halves and queued copies are bounded (oldest dropped, counted), and one
bounded mirror queue per rollout keeps a slow shadow from starving the others.

The operator says which InferenceService is shadowed by whom with `PUT /admin/shadows`
(re-sent every reconcile, idempotent) and `DELETE /admin/shadows/{namespace}/{name}`. A target
that differs only in its `comparison` keeps its queue, feedback memory and pending pairs: the new
tolerance applies to requests paired from then on, and to labels scored from then on.
"""

from __future__ import annotations

import hmac
import json
import logging
import time
from collections import OrderedDict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import generate_latest
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic.alias_generators import to_camel
from starlette.types import ASGIApp, Receive, Scope, Send

from canary.decision.tolerance import DEFAULT_TOLERANCE, Comparison, Tolerance, effective_tolerance
from canary.traffic.body_limit import BodySizeLimit, read_body
from canary.traffic.deck import ShareDeck
from canary.traffic.feedback import (
    FeedbackItem,
    FeedbackRequest,
    PredictionLog,
    apply_labels,
)
from canary.traffic.mirror import Mirror, MirrorJob, Target
from canary.traffic.plain_answer import JSON, send_answer
from canary.traffic.predictions import Protocol, instances_from_body
from canary.traffic.serving_metrics import (
    DEFAULT_MAX_CLASSES,
    EXPOSITION_CONTENT_TYPE,
    PREDICTION_VALUE_BUCKETS,
    SHADOW,
    STABLE,
    MetricFamilies,
    ServingMetrics,
)

log = logging.getLogger("modelrollout.shadow")

REQUEST_EVENT = "org.kubeflow.serving.inference.request"
RESPONSE_EVENT = "org.kubeflow.serving.inference.response"


class ShadowTarget(BaseModel):
    """Which InferenceService is shadowed, by which version; `PUT /admin/shadows` body."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True)
    rollout: str = Field(min_length=1, max_length=253)
    namespace: str = Field(min_length=1, max_length=63)
    inference_service: str = Field(min_length=1, max_length=253, description="the primary InferenceService")
    model: str = Field(min_length=1, description="registered model name: the metrics' model label")
    stable_version: str = Field(min_length=1)
    candidate_version: str = Field(min_length=1)
    shadow_url: str = Field(pattern=r"^https?://[^/\s]+/?$", description="base URL of the shadow InferenceService")
    shadow_model: str | None = Field(None, description="model name in the shadow's URL; default <inferenceService>-shadow")
    percent: int = Field(100, ge=1, le=100, description="share of paired requests replayed to the shadow")
    comparison: Comparison | None = Field(
        None, description="tolerance of regression predictions; left out: the comparator's default"
    )

    @property
    def key(self) -> tuple[str, str]:
        return (self.namespace, self.inference_service)

    def same_shadow(self, other: ShadowTarget) -> bool:
        """The same shadow of the same primary, whatever the tolerance of the comparison."""
        return self.model_copy(update={"comparison": None}) == other.model_copy(update={"comparison": None})

    @property
    def path_model(self) -> str:
        return self.shadow_model or f"{self.inference_service}-shadow"


TARGET_MAX_BYTES = 64 << 10  # a `PUT /admin/shadows` body
# The admin API's bearer token, shared with the operator through a Secret. From the environment only:
# a flag would show in `ps`.
ADMIN_TOKEN_ENV = "MODELROLLOUT_COMPARATOR_TOKEN"


@dataclass(frozen=True)
class ComparatorSettings:
    max_body_bytes: int = 1 << 20
    pending_max: int = 10_000  # request/response halves waiting for their other half
    pending_ttl_seconds: float = 30.0
    mirror_queue_size: int = 1000
    mirror_workers: int = 4
    shadow_timeout_seconds: float = 5.0
    feedback_max_entries: int = 50_000
    feedback_ttl_seconds: float = 3600.0
    tolerance: Tolerance = DEFAULT_TOLERANCE
    max_classes: int = DEFAULT_MAX_CLASSES  # distinct predicted classes counted per rollout
    prediction_buckets: tuple[float, ...] = PREDICTION_VALUE_BUCKETS  # regression-value histogram bounds
    # `/admin/*` (which decides where copies of live requests go) answers only `Authorization: Bearer
    # <admin_token>`; None leaves it open, for a comparator on loopback.
    admin_token: str | None = field(default=None, repr=False)


@dataclass
class _Half:
    created: float
    # The rollout the pair belongs to: a half that expires unpaired is counted on its account, not
    # on whichever rollout's event happened to expire it.
    owner: _Shadowed
    request: bytes | None = None
    response: bytes | None = None
    request_time: datetime | None = None
    response_time: datetime | None = None
    content_type: str | None = None  # the request's; KServe's logger gives the response event the same
    request_id: str | None = None  # the client's X-Request-Id, when the logger's metadataHeaders carry it


@dataclass
class _Shadowed:
    """One rollout's shadow: its target, metrics, mirror queue and prediction memory."""

    target: ShadowTarget
    metrics: ServingMetrics
    mirror: Mirror
    predictions: PredictionLog
    tolerance: Tolerance  # the target's comparison, else the settings' default
    # Which paired requests are replayed: the router's shuffled deck, so the shadow sees exactly
    # `percent`% of them without a periodic pattern a cycling client would turn into a bias.
    deck: ShareDeck


@dataclass
class _State:
    settings: ComparatorSettings
    families: MetricFamilies
    shadows: dict[tuple[str, str], _Shadowed] = field(default_factory=dict)
    pending: OrderedDict[str, _Half] = field(default_factory=OrderedDict)
    ignored: int = 0  # events for InferenceServices nobody shadows
    # A client's X-Request-Id -> the CloudEvent id its request was logged under (bounded, oldest out).
    aliases: OrderedDict[str, str] = field(default_factory=OrderedDict)

    def remember_alias(self, request_id: str, event_id: str) -> None:
        if request_id == event_id:
            return
        self.aliases.pop(request_id, None)
        self.aliases[request_id] = event_id
        while len(self.aliases) > self.settings.feedback_max_entries:
            self.aliases.popitem(last=False)


def _protocol_of(body: bytes) -> Protocol | None:
    """V1 bodies carry `instances`, V2 bodies `inputs`; anything else cannot be replayed."""
    try:
        payload = json.loads(body)
    except ValueError:
        return None
    if isinstance(payload, dict) and "instances" in payload:
        return Protocol.V1
    if isinstance(payload, dict) and "inputs" in payload:
        return Protocol.V2
    return None


def _event_time(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def _request_id_of(metadata: str | None) -> str | None:
    """The client's X-Request-Id from the logger's `ce-metadata` extension: JSON of the request headers
    named in the logger's `metadataHeaders`, as `{"X-Request-Id": ["…"]}` (kserve v0.20.0
    pkg/logger/handler.go L131-140, worker.go L126-146). Anything else: None."""
    if not metadata:
        return None
    try:
        headers = json.loads(metadata)
    except ValueError:
        return None
    if not isinstance(headers, dict):
        return None
    for name, values in headers.items():
        if isinstance(name, str) and name.lower() == "x-request-id" and isinstance(values, list) and values:
            value = values[0]
            if isinstance(value, str) and 0 < len(value) <= 200:
                return value
    return None


def create_app(settings: ComparatorSettings | None = None) -> ComparatorApp:
    settings = settings or ComparatorSettings()
    state = _State(settings, MetricFamilies(settings.prediction_buckets, settings.max_classes))

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        for shadow in list(state.shadows.values()):
            await shadow.mirror.stop()

    app = FastAPI(title="modelrollout shadow comparator", lifespan=lifespan)
    app.state.comparator = state
    # Every endpoint, /feedback and /admin included: FastAPI would read any body whole.
    # A shadow target is a small document: its endpoint gets a bound of its own.
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes, path_limits={"/admin/shadows": TARGET_MAX_BYTES})
    app.add_middleware(AdminOnlyWithTheToken, token=settings.admin_token)

    async def _install(target: ShadowTarget) -> bool:
        current = state.shadows.get(target.key)
        if current is not None and current.target == target:
            return False
        tolerance = effective_tolerance(target.comparison, state.settings.tolerance)
        if current is not None and current.target.same_shadow(target):
            # Only the tolerance changed: nothing to restart, no memory to lose.
            current.target, current.tolerance = target, tolerance
            current.predictions.tolerance = tolerance
            log.info(
                "shadow of %s/%s: tolerance rel=%g abs=%g",
                target.namespace, target.inference_service, tolerance.rel, tolerance.abs,
            )  # fmt: skip
            return True
        if current is not None:
            await current.mirror.stop()
        metrics = ServingMetrics(target.rollout, state.families)
        metrics.prepare(target.model, target.stable_version, STABLE)
        metrics.prepare(target.model, target.candidate_version, SHADOW)
        s = state.settings
        predictions = PredictionLog(s.feedback_max_entries, s.feedback_ttl_seconds, tolerance)

        def still_shadow(t: Target) -> bool:
            live = state.shadows.get(target.key)
            return live is not None and live.target.candidate_version == t.version and live.target.shadow_url.rstrip("/") == t.url

        mirror = Mirror(
            metrics=metrics,
            predictions=predictions,
            still_shadow=still_shadow,
            queue_size=s.mirror_queue_size,
            workers=s.mirror_workers,
            timeout_seconds=s.shadow_timeout_seconds,
            tolerance=tolerance,
        )
        await mirror.start()
        state.shadows[target.key] = _Shadowed(target, metrics, mirror, predictions, tolerance, ShareDeck(target.percent))
        log.info("shadowing %s/%s: v%s mirrors v%s", target.namespace, target.inference_service, target.candidate_version, target.stable_version)
        return True

    @app.put("/admin/shadows")
    async def put_shadow(request: Request) -> JSONResponse:
        try:
            target = ShadowTarget.model_validate_json(await request.body())  # bounded by BodySizeLimit
        except ValidationError as err:
            fields = [".".join(str(p) for p in e["loc"]) for e in err.errors()]
            # Only loc, msg and type: a validator's `ctx` holds the exception itself, not JSON.
            detail = [{"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in err.errors()]
            problems = "; ".join(
                f"{f or 'body'}: {e['msg'].removeprefix('Value error, ')}" for f, e in zip(fields, detail, strict=True)
            )
            return JSONResponse(
                {"error": f"invalid shadow target: {problems}", "fields": fields, "detail": detail}, status_code=422
            )
        changed = await _install(target)
        return JSONResponse({"changed": changed, "shadow": target.model_dump(by_alias=True)})

    @app.get("/admin/shadows")
    async def list_shadows() -> list[dict[str, Any]]:
        return [s.target.model_dump(by_alias=True) for s in state.shadows.values()]

    @app.delete("/admin/shadows/{namespace}/{name}")
    async def delete_shadow(namespace: str, name: str) -> Response:
        shadow = state.shadows.pop((namespace, name), None)
        if shadow is not None:
            await shadow.mirror.stop()
        return Response(status_code=204)

    async def event(scope: Scope, receive: Receive, send: Send) -> None:
        body = await read_body(scope, receive, send, settings.max_body_bytes)
        if body is None:
            return  # refused (400, 413) or the logger left
        headers = {name.decode("latin-1"): value.decode("latin-1") for name, value in scope["headers"]}
        event_id, kind = headers.get("ce-id"), headers.get("ce-type")
        if not event_id or kind not in (REQUEST_EVENT, RESPONSE_EVENT):
            await send_answer(send, 400, _NOT_AN_EVENT, [JSON])
            return
        shadow = state.shadows.get((headers.get("ce-namespace", ""), headers.get("ce-inferenceservicename", "")))
        if shadow is None:
            state.ignored += 1
            await send_answer(send, 202, _NOT_SHADOWED, [JSON])
            return
        # The logger has its answer before the pairing, comparison and replay of the event start.
        await send_answer(send, 202, _ACCEPTED, [JSON])
        _accept_half(shadow, event_id, kind, body, _event_time(headers.get("ce-time")), headers)

    def _accept_half(
        shadow: _Shadowed, event_id: str, kind: str, body: bytes, at: datetime | None, headers: Any
    ) -> None:
        now = time.monotonic()
        pending = state.pending
        while pending:  # expire halves whose other half never came
            oldest_id, oldest = next(iter(pending.items()))
            if now - oldest.created < state.settings.pending_ttl_seconds:
                break
            pending.popitem(last=False)
            if oldest.request is not None:
                # KServe's logger sends the response event only for a 200 (handler.go L183 at v0.20.0):
                # a request logged alone was answered otherwise.
                _unanswered(oldest.owner, oldest_id, oldest)
            else:
                oldest.owner.metrics.observe_dropped(oldest.owner.target.model)
        half = pending.get(event_id) or _Half(created=now, owner=shadow)
        if kind == REQUEST_EVENT:
            half.request, half.request_time = body, at
            half.content_type = headers.get("content-type")
            half.request_id = _request_id_of(headers.get("ce-metadata"))
        else:
            half.response, half.response_time = body, at
        if half.request is None or half.response is None:
            pending[event_id] = half
            while len(pending) > state.settings.pending_max:
                _, evicted = pending.popitem(last=False)
                evicted.owner.metrics.observe_dropped(evicted.owner.target.model)
            return
        pending.pop(event_id, None)
        _paired(shadow, event_id, half)

    def _paired(shadow: _Shadowed, event_id: str, half: _Half) -> None:
        target = shadow.target
        assert half.request is not None and half.response is not None
        protocol = _protocol_of(half.request)
        if protocol is None:
            return  # not a predict/infer payload (e.g. explain): nothing to compare
        # The response is read as the request's content type, which is what the logger labels it with.
        stable = instances_from_body(protocol, half.response)
        if half.request_time and half.response_time:
            # The logger stamps both events; their gap is the primary's answer time as it saw it.
            seconds = max(0.0, (half.response_time - half.request_time).total_seconds())
            shadow.metrics.observe_request(target.model, target.stable_version, STABLE, seconds, False)
        _remember(shadow, event_id, half)
        if stable is not None:
            shadow.metrics.observe_predictions(target.model, target.stable_version, STABLE, stable)
            score = shadow.predictions.record(event_id, target.model, target.stable_version, STABLE, stable)
            assert score is None  # labels cannot precede the request's first record
        _replay(shadow, event_id, half, protocol, stable)

    def _unanswered(shadow: _Shadowed, event_id: str, half: _Half) -> None:
        """A request whose response was never logged: the stable answered it with a non-200. Counted
        as the stable's failed request, never as an agreement; the shadow still gets its copy, so both
        sides are judged on the same requests."""
        assert half.request is not None
        target = shadow.target
        shadow.metrics.observe_unanswered(target.model, target.stable_version, STABLE)
        protocol = _protocol_of(half.request)
        if protocol is None:
            return
        _remember(shadow, event_id, half)
        _replay(shadow, event_id, half, protocol, None)

    def _remember(shadow: _Shadowed, event_id: str, half: _Half) -> None:
        shadow.predictions.start(event_id)
        if half.request_id is not None:
            state.remember_alias(half.request_id, event_id)

    def _replay(shadow: _Shadowed, event_id: str, half: _Half, protocol: Protocol, stable: list[Any] | None) -> None:
        assert half.request is not None
        if not shadow.deck.take():
            return
        target = shadow.target
        shadow.mirror.offer(
            MirrorJob(
                model=target.model,
                protocol=protocol,
                body=half.request,
                headers={"content-type": half.content_type or "application/json"},
                request_id=event_id,
                shadow=Target(target.candidate_version, target.shadow_url.rstrip("/")),
                stable_instances=stable,
                path_model=target.path_model,
                tolerance=shadow.tolerance,
            )
        )

    @app.post("/feedback", response_model=None)
    async def feedback(body: FeedbackRequest) -> JSONResponse:
        # A label names its request by the CloudEvent id (the client's Ce-Id) or by the client's
        # X-Request-Id; each rollout remembers its own requests: route every label to the one that knows it.
        by_shadow: dict[tuple[str, str], list[FeedbackItem]] = {}
        unknown, asked_as = [], {}
        for item in body.items:
            event_id = item.request_id
            owner = next((k for k, s in state.shadows.items() if event_id in s.predictions), None)
            if owner is None and item.request_id in state.aliases:
                event_id = state.aliases[item.request_id]
                owner = next((k for k, s in state.shadows.items() if event_id in s.predictions), None)
            if owner is None:
                unknown.append(item.request_id)
                continue
            asked_as[event_id] = item.request_id
            by_shadow.setdefault(owner, []).append(item.model_copy(update={"request_id": event_id}))
        if unknown:
            listed = ", ".join(repr(u) for u in unknown)
            message = (
                f"no predictions remembered for request id(s) {listed} "
                "(unknown, or dropped from the feedback memory long ago)"
            )
            return JSONResponse({"error": message}, status_code=404)
        # All or nothing per rollout; a batch spanning rollouts is rare and not atomic across them.
        batches = [
            (state.shadows[key].predictions, state.shadows[key].metrics.observe_score, items)
            for key, items in by_shadow.items()
        ]
        status, answer = apply_labels(batches, asked_as)
        return JSONResponse(answer, status_code=status)

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(generate_latest(state.families.registry), media_type=EXPOSITION_CONTENT_TYPE)

    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        return {"ok": True, "shadows": len(state.shadows), "pending": len(state.pending), "ignored": state.ignored}

    return ComparatorApp(event, app)


# The logger's only two paths: KServe's agent posts to the URL the InferenceService's logger names.
EVENT_PATHS = frozenset({"/", "/events"})
_NOT_AN_EVENT = b'{"error":"expected a KServe inference CloudEvent (ce-id, ce-type)"}'
_NOT_SHADOWED = b'{"accepted":false,"reason":"not shadowed"}'
_ACCEPTED = b'{"accepted":true}'


class ComparatorApp:
    """The comparator's ASGI app: logger events on a lean path of their own, the rest in FastAPI.

    KServe's logger sends two events for every request of the primary, whatever share is
    replayed, so the event path is plain ASGI (no routing table, middleware stack, Request or
    Response objects) and answers before it pairs. The admin API, feedback, metrics and health
    checks are FastAPI's (`rest`), which also owns the lifespan.
    """

    def __init__(self, event: ASGIApp, rest: FastAPI) -> None:
        self.event = event
        self.rest = rest

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST" and scope["path"] in EVENT_PATHS:
            await self.event(scope, receive, send)
            return
        await self.rest(scope, receive, send)


class AdminOnlyWithTheToken:
    """`/admin/*` answers only `Authorization: Bearer <token>` (compared in constant time); None
    leaves it open. Plain ASGI: FastAPI's `@app.middleware` wraps every request in extra tasks."""

    def __init__(self, app: ASGIApp, token: str | None) -> None:
        self.app = app
        self.token = token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.token is not None and scope["type"] == "http" and scope["path"].startswith("/admin"):
            authorization = Request(scope).headers.get("authorization", "")
            scheme, _, given = authorization.partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(given.encode(), self.token.encode()):
                refusal = JSONResponse(
                    {"error": "the admin API needs the comparator's bearer token (Authorization: Bearer ...)"},
                    status_code=401,
                    headers={"www-authenticate": "Bearer"},
                )
                await refusal(scope, receive, send)
                return
        await self.app(scope, receive, send)

