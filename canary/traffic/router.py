"""The router of one rollout on the local platform: what an Istio VirtualService does on a cluster.

Run as ``python -m canary.traffic.router --rollout NAME --port P [--host 127.0.0.1]``, or with
``--fd N`` on a listening socket held by controller/local/held_socket.py (as the local platform
runs it: a crash then costs clients a short wait, not refused connections). With
``--routing-file`` the accepted routing is kept there and restored at start.

Clients send KServe V1/V2 requests here instead of to a model server. The controller tells the
router where the versions are with ``PUT /admin/routing`` (re-sent every tick: applying the same
routing again changes nothing and resets nothing). Until then every client request gets 503.

- role ``canary``: ``candidateWeight``% of requests are served by the candidate, the rest by the
  stable (see canary/traffic/deck.py for how the share is dealt).
- role ``shadow``: every request is served by the stable; ``shadowPercent``% of them are copied
  to the shadow after the client's answer is ready (canary/traffic/mirror.py), and the shadow's
  predictions are compared with the stable's. With a ``baseline`` (a second server of the stable
  version), each copy goes to it too, at the same moment: the shadow's latency and errors are
  compared with the baseline's, timed on the same path (canary/traffic/mirror.py says why).

Regression predictions agree within the routing's ``comparison`` tolerance (the rollout's
``spec.shadow.comparison``; when the routing has none, the ``--rel-tolerance``/``--abs-tolerance``
flags). Feedback labels are scored by the same rule, so agreement and accuracy never disagree on
what "the same prediction" means. A new tolerance applies to requests served after it, without
resetting anything.

Every answer's predictions are remembered by request id for ``POST /feedback``
(canary/traffic/feedback.py); labels that come after the predictions were dropped are answered 200
and counted as late, with their reason. ``GET /metrics`` exports what canary/decision/templates.py
queries (canary/traffic/serving_metrics.py): traffic, agreement, accuracy, label lag, calibration and the
distribution of predictions per version and role.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import logging
import math
import re
import socket
import sys
import time
import urllib.parse
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import uvicorn
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic.alias_generators import to_camel
from starlette.types import ASGIApp, Receive, Scope, Send

from canary.decision.tolerance import Comparison, Tolerance, effective_tolerance
from canary.traffic.atomic_file import atomic_write
from canary.traffic.body_limit import BodySizeLimit, read_body
from canary.traffic.deck import ShareDeck
from canary.traffic.feedback import (
    FeedbackRequest,
    PredictionLog,
    apply_labels,
)
from canary.traffic.mirror import PASSED_HEADERS, Mirror, MirrorJob, Target
from canary.traffic.plain_answer import send_answer, send_error
from canary.traffic.predictions import Protocol, instances_from_body
from canary.traffic.serving_metrics import (
    BASELINE,
    CANARY,
    DEFAULT_MAX_CLASSES,
    EXPOSITION_CONTENT_TYPE,
    PREDICTION_VALUE_BUCKETS,
    SHADOW,
    STABLE,
    MetricFamilies,
    ServingMetrics,
    check_buckets,
)
from canary.traffic.startup_heap import freeze_startup_heap
from canary.traffic.upstream import Answer, UpstreamError, UpstreamPool, UpstreamTimeout

log = logging.getLogger("modelrollout.router")

DEFAULT_MAX_BODY_BYTES = 1 << 20
_REQUEST_ID = re.compile(r"[\x21-\x7e]{1,200}")


# --- the routing the controller sends -----------------------------------------------------------


class _Model(BaseModel):
    # camelCase on the wire, snake_case in Python, unknown fields are errors (as in canary/decision/spec.py).
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True)


class Upstream(_Model):
    """A model server for one version."""

    version: str = Field(min_length=1, max_length=64)
    url: str = Field(description="base URL of the model server, e.g. http://127.0.0.1:8081")

    @field_validator("url")
    @classmethod
    def _base_url(cls, value: str) -> str:
        parts = urllib.parse.urlsplit(value)
        try:
            parts.port  # noqa: B018 - raises ValueError on a bad port
        except ValueError as exc:
            raise ValueError(f"bad port in {value!r}") from exc
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"expected an http(s) base URL such as http://127.0.0.1:8081, got {value!r}")
        if parts.path not in ("", "/") or parts.query or parts.fragment:
            raise ValueError(f"expected a base URL without path, query or fragment, got {value!r}")
        return f"{parts.scheme}://{parts.netloc}"


class RoutingDocument(_Model):
    """Where a rollout's traffic goes; ``PUT /admin/routing`` body."""

    model: str = Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    stable: Upstream
    candidate: Upstream | None = None
    candidate_role: Literal["shadow", "canary"] | None = None
    baseline: Upstream | None = Field(
        None, description="role shadow: a second server of the stable version, sent every copy the shadow is"
    )
    candidate_weight: int = Field(0, ge=0, le=100, description="percent of client requests the canary serves")
    shadow_percent: int = Field(0, ge=0, le=100, description="percent of client requests mirrored to the shadow")
    comparison: Comparison | None = Field(
        None, description="tolerance of regression predictions; left out: the router's --rel/--abs-tolerance"
    )

    @model_validator(mode="after")
    def _consistent(self) -> RoutingDocument:
        if self.candidate is None:
            if self.candidate_role is not None or self.candidate_weight or self.shadow_percent:
                raise ValueError("candidateRole, candidateWeight and shadowPercent need a candidate")
            return self
        if self.candidate_role is None:
            raise ValueError("candidateRole is required with a candidate: 'shadow' or 'canary'")
        if self.candidate.version == self.stable.version:
            raise ValueError(f"candidate.version must differ from stable.version (both {self.stable.version!r})")
        if self.candidate_role == SHADOW and self.candidate_weight:
            raise ValueError("candidateWeight is only for candidateRole 'canary': a shadow serves no client")
        if self.candidate_role == CANARY and self.shadow_percent:
            raise ValueError("shadowPercent is only for candidateRole 'shadow'")
        if self.baseline is not None:
            if self.candidate_role != SHADOW:
                raise ValueError("baseline is only for candidateRole 'shadow': a canary is measured beside the stable")
            if self.baseline.version != self.stable.version:
                raise ValueError(
                    f"baseline.version must be the stable's ({self.stable.version!r}), got {self.baseline.version!r}"
                )
            if self.baseline.url == self.stable.url:
                raise ValueError("baseline.url must be a server of its own, not the stable's: it is timed apart from clients")
        return self

    def wire(self) -> dict[str, Any]:
        """The JSON document, without ``comparison`` or ``baseline`` when not given (as before they existed)."""
        unset = {name for name in ("comparison", "baseline") if getattr(self, name) is None}
        return self.model_dump(by_alias=True, mode="json", exclude=unset or None)

    def label_sets(self) -> list[tuple[str, str]]:
        """(version, role) of every version this routing sends requests to."""
        sets = [(self.stable.version, STABLE)]
        if self.candidate is not None and self.candidate_role is not None:
            sets.append((self.candidate.version, self.candidate_role))
        if self.baseline is not None:
            sets.append((self.baseline.version, BASELINE))
        return sets


# --- settings and state ---------------------------------------------------------------------------


@dataclass(frozen=True)
class RouterSettings:
    rollout: str
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    upstream_timeout_seconds: float = 10.0
    shadow_timeout_seconds: float = 5.0
    mirror_queue_size: int = 1000
    mirror_workers: int = 4
    feedback_max_entries: int = 50_000
    feedback_ttl_seconds: float = 3600.0
    rel_tolerance: float = 1e-6
    abs_tolerance: float = 1e-9
    max_classes: int = DEFAULT_MAX_CLASSES
    prediction_buckets: tuple[float, ...] = PREDICTION_VALUE_BUCKETS
    # Where every accepted routing is kept, and read back at start: a router restarted after a
    # crash serves its clients at once, without waiting for the controller to send it again.
    routing_file: Path | None = None


@dataclass
class _Applied:
    """A routing and the decks that deal its shares; replaced whole when the routing changes."""

    routing: RoutingDocument
    canary_deck: ShareDeck
    shadow_deck: ShareDeck
    tolerance: Tolerance  # the routing's comparison, else the process default

    def choose(self) -> tuple[Target, str]:
        r = self.routing
        if r.candidate is not None and r.candidate_role == CANARY and self.canary_deck.take():
            return Target(r.candidate.version, r.candidate.url), CANARY
        return Target(r.stable.version, r.stable.url), STABLE

    def shadow_for_this_request(self) -> tuple[Target, Target | None] | None:
        """The shadow (and the baseline, if any) a copy of this request goes to; None: no copy."""
        r = self.routing
        if r.candidate is not None and r.candidate_role == SHADOW and self.shadow_deck.take():
            baseline = Target(r.baseline.version, r.baseline.url) if r.baseline is not None else None
            return Target(r.candidate.version, r.candidate.url), baseline
        return None


class RouterState:
    """Everything one router process holds; shared by the endpoints on one event loop."""

    def __init__(self, settings: RouterSettings) -> None:
        self.settings = settings
        # The process default; each routing may bring its own (_Applied.tolerance).
        self.tolerance = Tolerance(rel=settings.rel_tolerance, abs=settings.abs_tolerance)
        self.metrics = ServingMetrics(
            settings.rollout, MetricFamilies(settings.prediction_buckets, settings.max_classes)
        )
        self.predictions = PredictionLog(
            max_entries=settings.feedback_max_entries,
            ttl_seconds=settings.feedback_ttl_seconds,
            tolerance=self.tolerance,
        )
        self.applied: _Applied | None = None
        self.mirror = Mirror(
            metrics=self.metrics,
            predictions=self.predictions,
            still_shadow=self.is_current_shadow,
            queue_size=settings.mirror_queue_size,
            workers=settings.mirror_workers,
            timeout_seconds=settings.shadow_timeout_seconds,
            tolerance=self.tolerance,
        )
        self.client: UpstreamPool | None = None

    def apply(self, routing: RoutingDocument) -> bool:
        """Make ``routing`` current; False (and nothing touched) when it already is."""
        current = self.applied
        if current is not None and current.routing == routing:
            return False
        # Keep a deck whose share did not change, so a partly dealt deck still evens out.
        canary = shadow = None
        if current is not None:
            if current.canary_deck.percent == routing.candidate_weight:
                canary = current.canary_deck
            if current.shadow_deck.percent == routing.shadow_percent:
                shadow = current.shadow_deck
        for version, role in routing.label_sets():
            self.metrics.prepare(routing.model, version, role)
        tolerance = effective_tolerance(routing.comparison, self.tolerance)
        self.applied = _Applied(
            routing=routing,
            canary_deck=canary if canary is not None else ShareDeck(routing.candidate_weight),
            shadow_deck=shadow if shadow is not None else ShareDeck(routing.shadow_percent),
            tolerance=tolerance,
        )
        # Labels are scored when they come, by the rule of the routing applied then.
        self.predictions.tolerance = tolerance
        log.info(
            "routing applied: %s (tolerance rel=%g abs=%g)", json.dumps(routing.wire()), tolerance.rel, tolerance.abs
        )
        if self.settings.routing_file is not None:
            # Not durable (no fsync): it must survive this process, not the machine.
            atomic_write(self.settings.routing_file, json.dumps(routing.wire()), durable=False)
        return True

    def restore(self) -> None:
        """Apply the routing kept in `routing_file` by an earlier run of this router, if any."""
        path = self.settings.routing_file
        if path is None or not path.exists():
            return
        try:
            routing = RoutingDocument.model_validate(json.loads(path.read_text()))
        except (OSError, ValueError) as exc:  # pydantic's ValidationError is a ValueError
            log.warning("routing in %s not restored (%s): waiting for the controller to send it", path, exc)
            return
        self.apply(routing)
        log.info("routing restored from %s", path)

    def is_current_shadow(self, target: Target) -> bool:
        r = self.applied.routing if self.applied else None
        return (
            r is not None
            and r.candidate_role == SHADOW
            and r.candidate is not None
            and (r.candidate.version, r.candidate.url) == (target.version, target.url)
        )


# --- HTTP plumbing ----------------------------------------------------------------------------------


def _from_loopback(request: Request) -> bool:
    host = request.client.host if request.client else ""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(status_code=status, content={"error": message}, headers=headers)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    problems: list[str] = []
    fields: list[str] = []
    for err in exc.errors():
        name = ".".join(str(p) for p in err.get("loc", ()) if p != "body") or "body"
        msg = str(err.get("msg", "invalid")).removeprefix("Value error, ")
        problems.append(f"{name}: {msg}")
        fields.append(name)
    return JSONResponse(
        status_code=422,
        content={"error": f"invalid body for {request.url.path}: " + "; ".join(problems[:10]), "fields": fields},
    )


class AdminFromThisMachineOnly:
    """/admin/routing decides where every client request goes: only the controller, on this
    machine, sets it, even when --host lets clients in from elsewhere. (Plain ASGI, not
    FastAPI's ``@app.middleware``, which wraps every request in extra tasks and streams.)"""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith("/admin") and not _from_loopback(Request(scope)):
            await _error(403, "the admin API answers this machine only (loopback)")(scope, receive, send)
            return
        await self.app(scope, receive, send)


# --- the app -------------------------------------------------------------------------------------------


# The predict endpoints, as FastAPI would match "/v1/models/{model}:predict" and "/v2/models/{model}/infer".
_PREDICT = re.compile(r"/v1/models/(?P<v1>[^/]+):predict|/v2/models/(?P<v2>[^/]+)/infer")


class RouterApp:
    """The router's ASGI app: client predictions on a lean path of their own, the rest in FastAPI.

    Every client request crosses the router, so its path is plain ASGI: no routing table, no
    middleware stack, no Request or Response objects, and the upstream call through
    canary/traffic/upstream.py. What the answer says (predictions for the metrics, the feedback
    log and the mirror's comparison) is read after the client's answer is sent. The admin API,
    metrics, feedback and health checks are FastAPI's (`rest`).
    """

    def __init__(self, state: RouterState, rest: ASGIApp) -> None:
        self.state = state
        self.rest = rest

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            match = _PREDICT.fullmatch(scope["path"])
            if match is not None:
                v1 = match["v1"]
                await _forward(self.state, scope, receive, send, *((v1, Protocol.V1) if v1 else (match["v2"], Protocol.V2)))
                return
        await self.rest(scope, receive, send)


def create_app(settings: RouterSettings) -> RouterApp:
    """The router's ASGI app; its lifespan owns the upstream connections and the mirror workers."""
    state = RouterState(settings)
    state.restore()

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        state.client = UpstreamPool(
            timeout=settings.upstream_timeout_seconds, connect_timeout=min(settings.upstream_timeout_seconds, 2.0)
        )
        await state.mirror.start()
        try:
            yield
        finally:
            await state.mirror.stop()
            await state.client.aclose()

    app = FastAPI(title=f"modelrollout router {settings.rollout}", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.add_middleware(AdminFromThisMachineOnly)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    app.add_exception_handler(RequestValidationError, _validation_error)

    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        """Liveness: the process answers (it may not serve yet, see /readyz)."""
        return {"status": "ok", "rollout": settings.rollout, "routing": state.applied is not None}

    @app.get("/readyz", response_model=None)
    async def readyz() -> dict[str, Any] | JSONResponse:
        """Readiness: 200 once a routing is applied (before it, every prediction is a 503), so a
        client or a load balancer can wait for it instead of starting into errors."""
        if state.applied is None:
            return _error(503, f"rollout {settings.rollout!r}: no routing configured yet")
        r = state.applied.routing
        return {"ready": True, "rollout": settings.rollout, "model": r.model, "stable": r.stable.version}

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(state.metrics.exposition(), media_type=EXPOSITION_CONTENT_TYPE)

    @app.put("/admin/routing")
    async def put_routing(routing: RoutingDocument) -> dict[str, Any]:
        changed = state.apply(routing)
        return {"changed": changed, "routing": routing.wire()}

    @app.get("/admin/routing", response_model=None)
    async def get_routing() -> dict[str, Any] | JSONResponse:
        if state.applied is None:
            return _error(404, f"rollout {settings.rollout!r}: no routing configured")
        return state.applied.routing.wire()

    @app.post("/feedback", response_model=None)
    async def feedback(body: FeedbackRequest) -> JSONResponse:
        status, answer = apply_labels([(state.predictions, state.metrics.observe_score, body.items)])
        return JSONResponse(answer, status_code=status)

    return RouterApp(state, app)


async def _forward(state: RouterState, scope: Scope, receive: Receive, send: Send, model: str, protocol: Protocol) -> None:
    """Serve one client request from the chosen version; mirror a copy when a shadow is set."""
    body = await read_body(scope, receive, send, state.settings.max_body_bytes)
    if body is None:
        return  # refused (400, 413) or the client left
    rollout = state.settings.rollout
    request_id = ""
    passed: dict[str, str] = {}  # only what describes the body travels: V2's binary extension needs its JSON-length header
    for raw_name, raw_value in scope["headers"]:
        name = raw_name.decode("latin-1")
        if name == "x-request-id":
            request_id = raw_value.decode("latin-1")
        elif name in PASSED_HEADERS:
            passed[name] = raw_value.decode("latin-1")
    request_id = request_id or uuid.uuid4().hex
    if not _REQUEST_ID.fullmatch(request_id):
        await send_error(send, 400, "x-request-id must be 1 to 200 visible ASCII characters")
        return
    id_header = (b"x-request-id", request_id.encode())
    applied = state.applied
    if applied is None:
        await send_error(send, 503, f"rollout {rollout!r}: no routing configured", [id_header])
        return
    routing = applied.routing
    if model != routing.model:
        message = f"model {model!r} is not served by rollout {rollout!r} (it serves {routing.model!r})"
        await send_error(send, 404, message, [id_header])
        return
    target, role = applied.choose()
    ours = [id_header, (b"x-model-version", target.version.encode()), (b"x-model-role", role.encode())]
    state.predictions.start(request_id)
    assert state.client is not None
    started = time.perf_counter()
    answer: Answer | None = None
    failure: UpstreamError | None = None
    try:
        answer = await state.client.post(target.url, protocol.path(model), body, {"x-request-id": request_id, **passed})
    except UpstreamError as exc:
        failure = exc
    elapsed = time.perf_counter() - started
    if answer is not None:
        status = answer.status
        passed_back = [(n.encode(), answer.headers[n].encode("latin-1")) for n in PASSED_HEADERS if n in answer.headers]
        await send_answer(send, status, answer.body, [*passed_back, *ours])
    elif isinstance(failure, UpstreamTimeout):
        status = 504
        await send_error(send, status, f"version {target.version} ({role}) at {target.url} timed out: {type(failure).__name__}", ours)
    else:
        status = 502
        reason = f"{type(failure).__name__}: {str(failure) or 'connection closed'}"
        await send_error(send, status, f"version {target.version} ({role}) at {target.url} unreachable: {reason}", ours)
    # The client has its answer: what it says is read now, off the client's path.
    stable_instances = None
    if answer is not None and 200 <= status < 300:
        instances = instances_from_body(protocol, answer.body)
        if instances is not None:
            state.metrics.observe_predictions(model, target.version, role, instances)
            state.predictions.record(request_id, model, target.version, role, instances)
            stable_instances = instances if role == STABLE else None
    state.metrics.observe_request(model, target.version, role, elapsed, failed=status >= 500)
    if role == STABLE:
        copy_to = applied.shadow_for_this_request()
        if copy_to is not None:
            shadow, baseline = copy_to
            state.mirror.offer(
                MirrorJob(
                    model=model,
                    protocol=protocol,
                    body=body,
                    headers=passed,
                    request_id=request_id,
                    shadow=shadow,
                    stable_instances=stable_instances,
                    tolerance=applied.tolerance,
                    baseline=baseline,
                )
            )


# --- the process -------------------------------------------------------------------------------------------


def _bucket_list(text: str) -> tuple[float, ...]:
    try:
        return check_buckets([float(part) for part in text.split(",") if part.strip()])
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r}: {exc}") from None


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    defaults = RouterSettings(rollout="")
    p = argparse.ArgumentParser(prog="python -m canary.traffic.router", description="The router of one rollout.")
    p.add_argument("--rollout", required=True, help="rollout name (the 'rollout' label of every metric)")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--port", type=int)
    where.add_argument("--fd", type=int, help="serve on this inherited listening socket (controller/local/held_socket.py)")
    p.add_argument("--routing-file", type=Path, help="keep the accepted routing here, and start from it")
    p.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    p.add_argument("--max-body-bytes", type=int, default=defaults.max_body_bytes)
    p.add_argument("--upstream-timeout", type=float, default=defaults.upstream_timeout_seconds, help="seconds")
    p.add_argument("--shadow-timeout", type=float, default=defaults.shadow_timeout_seconds, help="seconds")
    p.add_argument("--mirror-queue-size", type=int, default=defaults.mirror_queue_size)
    p.add_argument("--mirror-workers", type=int, default=defaults.mirror_workers)
    p.add_argument("--feedback-max-entries", type=int, default=defaults.feedback_max_entries)
    p.add_argument("--feedback-ttl", type=float, default=defaults.feedback_ttl_seconds, help="seconds")
    p.add_argument("--rel-tolerance", type=float, default=defaults.rel_tolerance)
    p.add_argument("--abs-tolerance", type=float, default=defaults.abs_tolerance)
    p.add_argument(
        "--max-classes",
        type=int,
        default=defaults.max_classes,
        help="distinct predicted classes counted per model; later ones count as __other__",
    )
    p.add_argument(
        "--prediction-buckets",
        type=_bucket_list,
        default=defaults.prediction_buckets,
        help=(
            "comma-separated increasing bounds of the regression-value histogram, e.g. "
            "--prediction-buckets=-1,0,1 (default: 0 and ±1, 2, 5 × 10^-2 … 10^5)"
        ),
    )
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    args = p.parse_args(argv)
    for name in ("max_body_bytes", "mirror_queue_size", "mirror_workers", "feedback_max_entries", "max_classes"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    for name in ("upstream_timeout", "shadow_timeout", "feedback_ttl"):
        if getattr(args, name) <= 0:
            p.error(f"--{name.replace('_', '-')} must be positive")
    for name in ("rel_tolerance", "abs_tolerance"):
        value = getattr(args, name)
        if not (value >= 0 and math.isfinite(value)):  # also NaN
            p.error(f"--{name.replace('_', '-')} must be 0 or more")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    settings = RouterSettings(
        rollout=args.rollout,
        routing_file=args.routing_file,
        max_body_bytes=args.max_body_bytes,
        upstream_timeout_seconds=args.upstream_timeout,
        shadow_timeout_seconds=args.shadow_timeout,
        mirror_queue_size=args.mirror_queue_size,
        mirror_workers=args.mirror_workers,
        feedback_max_entries=args.feedback_max_entries,
        feedback_ttl_seconds=args.feedback_ttl,
        rel_tolerance=args.rel_tolerance,
        abs_tolerance=args.abs_tolerance,
        max_classes=args.max_classes,
        prediction_buckets=args.prediction_buckets,
    )
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s")
    app = create_app(settings)
    freeze_startup_heap()
    config = uvicorn.Config(
        app,
        host=args.host,
        port=args.port or 0,
        log_level=args.log_level,
        access_log=False,
        timeout_graceful_shutdown=5,
    )
    if args.fd is None:
        uvicorn.Server(config).run()
    else:
        # socket(fileno=) reads the family from the descriptor (uvicorn's own --fd assumes AF_UNIX).
        uvicorn.Server(config).run(sockets=[socket.socket(fileno=args.fd)])
    return 0


if __name__ == "__main__":
    sys.exit(main())
