"""The MLflow webhook receiver: verifies a delivery and turns it into a hint to poll a model now.

MLflow (>= 3.3, SQL backend) POSTs a JSON body with three headers: `x-mlflow-delivery-id`,
`x-mlflow-timestamp` (unix seconds) and `x-mlflow-signature: v1,<base64 HMAC-SHA256>`, where the
HMAC keyed by the webhook's secret covers `"<delivery id>.<timestamp>."` followed by the raw body.
The signature binds the delivery id and the timestamp to the body, so:

- the timestamp check (a replay window) bounds how long a captured delivery can be replayed, and
- the delivery log (every id seen within that window) catches a replay inside the window.

MLflow retries a delivery that failed with a connection error, 429 or 5xx up to 3 times with the
*same* headers (same delivery id and timestamp), after at most ~2 minutes, well inside the default
300 s window. A repeated id is therefore answered 200 (`duplicate: true`) and not acted on: an
error would only make MLflow log a failure for a delivery that did arrive. A 4xx answer is final
for MLflow (it never retries one), which is what every rejection here wants.

Deliveries are a hint, never the truth: they are not persisted, not ordered, and not sent for
stage transitions. The registry poll (`registry.watcher`) remains the source of truth; a verified
event only wakes it early for one model. That is also why the bounded delivery log may forget an
id under a flood: the worst a replayed genuine delivery can cause is one extra poll.

Nothing here logs the secret or a signature, and nothing imports MLflow: the receiver runs in the
operator's HTTP server and only needs the wire format.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import logging
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

_log = logging.getLogger(__name__)

DELIVERY_ID_HEADER = "x-mlflow-delivery-id"
TIMESTAMP_HEADER = "x-mlflow-timestamp"
SIGNATURE_HEADER = "x-mlflow-signature"
SIGNATURE_VERSION = "v1"

WEBHOOK_PATH = "/webhooks/mlflow"
DEFAULT_REPLAY_WINDOW_S = 300.0
# An alias event is ~150 bytes; `model_version.created` carries the version's tags and
# description, which stay far below this. The limit applies before the signature is checked, so it
# is what an unauthenticated sender can make the receiver buffer.
DEFAULT_MAX_BODY_BYTES = 256 * 1024
DEFAULT_DELIVERY_LOG_SIZE = 10_000
_MAX_DELIVERY_ID_CHARS = 128
_MAX_TIMESTAMP_DIGITS = 12  # unix seconds until the year 33658; more would overflow a float

# Entities whose payload names a registered model (`data.name`): an event for one of them wakes
# the poll for that model. Prompt and budget-policy events, and entities newer MLflow versions
# add, are acknowledged and ignored.
MODEL_ENTITIES = frozenset(
    {"registered_model", "model_version", "model_version_tag", "model_version_alias"}
)

# Outcomes counted by `WebhookCounters`; a rejection is counted as `rejected_<status code>`.
ACCEPTED = "accepted"
DUPLICATE = "duplicate"
IGNORED = "ignored"
HANDLER_FAILED = "handler_failed"
# Every outcome, e.g. for the operator to create its metric series at zero.
OUTCOMES = (ACCEPTED, DUPLICATE, IGNORED, HANDLER_FAILED, "rejected_400", "rejected_401", "rejected_413")


class WebhookRejected(Exception):
    """A delivery that is not acted on, with the HTTP status to answer and a one-line reason.

    400: headers or body malformed or missing; 401: signature wrong or timestamp outside the
    replay window; 413: body too large. The reason never quotes the secret or a signature.
    """

    def __init__(self, status_code: int, reason: str) -> None:
        super().__init__(f"HTTP {status_code}: {reason}")
        self.status_code = status_code
        self.reason = reason


@dataclass(frozen=True)
class WebhookEvent:
    """One verified MLflow webhook delivery.

    `model` is the registered model's name for the entities in MODEL_ENTITIES (None for others);
    `alias` and `version` are set when the payload has them (`model_version_alias.deleted` has no
    version). Versions are strings, as MLflow's REST API sends them.
    """

    entity: str
    action: str
    model: str | None
    alias: str | None
    version: str | None
    delivery_id: str

    @property
    def event_type(self) -> str:
        """MLflow's name for the event, e.g. `model_version_alias.created`."""
        return f"{self.entity}.{self.action}"

    @property
    def names_model(self) -> bool:
        """True when the event concerns a registered model, i.e. may move what the poll sees."""
        return self.model is not None


def _secrets(secret: str | Sequence[str]) -> list[bytes]:
    """The secret(s) as bytes; more than one lets a secret be rotated without losing deliveries."""
    candidates = [secret] if isinstance(secret, str) else list(secret)
    if not candidates or any(not isinstance(s, str) or not s for s in candidates):
        raise ValueError("webhook secret must be a non-empty string (or a list of them)")
    return [s.encode("utf-8") for s in candidates]


def sign(secret: str, delivery_id: str, timestamp: str, raw_body: bytes) -> str:
    """The `x-mlflow-signature` value MLflow sends for this delivery (`v1,<base64>`)."""
    digest = _digest(secret.encode("utf-8"), delivery_id, timestamp, raw_body)
    return f"{SIGNATURE_VERSION},{base64.b64encode(digest).decode('ascii')}"


def _digest(secret: bytes, delivery_id: str, timestamp: str, raw_body: bytes) -> bytes:
    signed = f"{delivery_id}.{timestamp}.".encode() + raw_body
    return hmac.new(secret, signed, hashlib.sha256).digest()


def _offered_signatures(header: str) -> list[bytes]:
    """The decoded `v1` signatures of a signature header.

    Standard Webhooks (which MLflow follows) allows several space-separated `version,signature`
    pairs; MLflow sends one. Pairs of another version are skipped; one that is not valid base64
    is kept as an empty digest, which matches nothing: it is a wrong signature, not a missing one.
    """
    offered = []
    for pair in header.split():
        version, _, encoded = pair.partition(",")
        if version != SIGNATURE_VERSION or not encoded:
            continue
        try:
            offered.append(base64.b64decode(encoded, validate=True))
        except (binascii.Error, ValueError):
            offered.append(b"")
    return offered


def _required_header(headers: Mapping[str, str], name: str) -> str:
    value = headers.get(name, "").strip()
    if not value:
        raise WebhookRejected(400, f"missing header {name}")
    return value


def _optional_str(data: Mapping[str, Any], key: str) -> str | None:
    value = data.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise WebhookRejected(400, f"malformed body: data.{key} must be a string")
    return str(value)


def _parse_body(raw_body: bytes, delivery_id: str) -> WebhookEvent:
    try:
        body = json.loads(raw_body)
    except (UnicodeDecodeError, ValueError):
        raise WebhookRejected(400, "malformed body: not JSON") from None
    if not isinstance(body, dict):
        raise WebhookRejected(400, "malformed body: not a JSON object")
    entity, action, data = body.get("entity"), body.get("action"), body.get("data")
    if not isinstance(entity, str) or not entity or not isinstance(action, str) or not action:
        raise WebhookRejected(400, "malformed body: 'entity' and 'action' must be non-empty strings")
    if not isinstance(data, dict):
        raise WebhookRejected(400, "malformed body: 'data' must be an object")
    if entity not in MODEL_ENTITIES:
        # Not ours to interpret: its payload may have any shape in a newer MLflow.
        return WebhookEvent(entity, action, model=None, alias=None, version=None, delivery_id=delivery_id)
    model = data.get("name")
    if not isinstance(model, str) or not model.strip():
        raise WebhookRejected(400, f"malformed body: {entity}.{action} without data.name")
    return WebhookEvent(
        entity=entity,
        action=action,
        model=model,
        alias=_optional_str(data, "alias"),
        version=_optional_str(data, "version"),
        delivery_id=delivery_id,
    )


def verify(
    secret: str | Sequence[str],
    headers: Mapping[str, str],
    raw_body: bytes,
    now: float,
    *,
    replay_window_s: float = DEFAULT_REPLAY_WINDOW_S,
) -> WebhookEvent:
    """The event of a delivery whose signature and timestamp hold; WebhookRejected otherwise.

    `headers` are matched case-insensitively; `raw_body` must be the bytes as received (the
    signature covers them, not a re-serialisation); `now` is unix seconds. The signature is
    checked before the timestamp, so "outside the replay window" tells the operator the sender
    knows the secret but its clock is off, or the delivery is a replay. `secret` may list several
    secrets during a rotation; any one of them verifies. Repeated delivery ids are not this
    function's business: see DeliveryLog.
    """
    keys = _secrets(secret)
    if replay_window_s <= 0:
        raise ValueError(f"replay_window_s must be positive, got {replay_window_s}")
    lowered = {name.lower(): value for name, value in headers.items()}
    delivery_id = _required_header(lowered, DELIVERY_ID_HEADER)
    timestamp = _required_header(lowered, TIMESTAMP_HEADER)
    signature = _required_header(lowered, SIGNATURE_HEADER)
    if len(delivery_id) > _MAX_DELIVERY_ID_CHARS or not delivery_id.isprintable():
        raise WebhookRejected(400, f"malformed header {DELIVERY_ID_HEADER}")
    if not (timestamp.isascii() and timestamp.isdigit()) or len(timestamp) > _MAX_TIMESTAMP_DIGITS:
        raise WebhookRejected(400, f"malformed header {TIMESTAMP_HEADER}: not unix seconds")

    offered = _offered_signatures(signature)
    if not offered:
        raise WebhookRejected(401, f"no {SIGNATURE_VERSION} signature in {SIGNATURE_HEADER}")
    expected = [_digest(key, delivery_id, timestamp, raw_body) for key in keys]
    # Every pair is compared, in constant time, so timing tells nothing about which one was close.
    matched = False
    for digest in expected:
        for candidate in offered:
            matched |= hmac.compare_digest(digest, candidate)
    if not matched:
        raise WebhookRejected(401, "signature does not match")

    skew = now - int(timestamp)
    if skew > replay_window_s:
        raise WebhookRejected(
            401, f"timestamp is {skew:.0f} s old, outside the {replay_window_s:g} s replay window"
        )
    if skew < -replay_window_s:
        raise WebhookRejected(
            401, f"timestamp is {-skew:.0f} s in the future, outside the {replay_window_s:g} s replay window"
        )
    return _parse_body(raw_body, delivery_id)


class DeliveryLog:
    """The delivery ids seen recently: bounded in size, each remembered for `ttl_s`.

    `ttl_s` should be at least twice the replay window: a delivery stamped up to a window in the
    future is accepted, and can then be replayed until a window after its stamp. When full, the
    oldest id is forgotten first (see the module docstring for why that is safe). Thread-safe.
    """

    def __init__(
        self, ttl_s: float = 2 * DEFAULT_REPLAY_WINDOW_S, max_entries: int = DEFAULT_DELIVERY_LOG_SIZE
    ) -> None:
        if ttl_s <= 0 or max_entries < 1:
            raise ValueError(f"ttl_s must be positive and max_entries >= 1, got {ttl_s}, {max_entries}")
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self._expiry: OrderedDict[str, float] = OrderedDict()  # id -> expiry, oldest first
        self._lock = threading.Lock()

    def first_time(self, delivery_id: str, now: float) -> bool:
        """Record `delivery_id`; True unless it was already recorded and has not expired."""
        with self._lock:
            self._drop_expired(now)
            if delivery_id in self._expiry:
                return False
            while len(self._expiry) >= self.max_entries:
                self._expiry.popitem(last=False)
            self._expiry[delivery_id] = now + self.ttl_s
            return True

    def forget(self, delivery_id: str) -> None:
        """Drop `delivery_id`, so MLflow's retry of a delivery we failed to handle is acted on."""
        with self._lock:
            self._expiry.pop(delivery_id, None)

    def __len__(self) -> int:
        with self._lock:
            return len(self._expiry)

    def _drop_expired(self, now: float) -> None:
        # Entries are appended with a constant TTL, so expiry order is insertion order... unless
        # the clock stepped back; then an entry lives a little longer, which is harmless.
        while self._expiry:
            oldest_id, expires_at = next(iter(self._expiry.items()))
            if expires_at > now:
                break
            del self._expiry[oldest_id]


@dataclass
class WebhookCounters:
    """How many deliveries ended how, for tests, logs and the operator's own metrics.

    Outcomes: `accepted` (handed to `on_event`), `duplicate`, `ignored` (verified, but names no
    registered model), `handler_failed` (`on_event` raised; answered 500 so MLflow retries) and
    `rejected_<status>` (400, 401, 413).
    """

    _counts: Counter[str] = field(default_factory=Counter, init=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def record(self, outcome: str) -> None:
        with self._lock:
            self._counts[outcome] += 1

    def get(self, outcome: str) -> int:
        with self._lock:
            return self._counts[outcome]

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)


async def _read_limited(request: Request, max_bytes: int) -> bytes:
    """The raw body, refusing (413) past `max_bytes` without buffering the excess."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.strip().isdigit():
            raise WebhookRejected(400, "malformed header content-length")
        if int(declared) > max_bytes:
            raise WebhookRejected(413, f"body larger than {max_bytes} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise WebhookRejected(413, f"body larger than {max_bytes} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def webhook_router(
    secret: str | Sequence[str],
    on_event: Callable[[WebhookEvent], None],
    *,
    path: str = WEBHOOK_PATH,
    replay_window_s: float = DEFAULT_REPLAY_WINDOW_S,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    deliveries: DeliveryLog | None = None,
    counters: WebhookCounters | None = None,
    clock: Callable[[], float] = time.time,
) -> APIRouter:
    """A FastAPI router with `POST <path>` receiving MLflow's webhook deliveries.

    Answers: 200 `{"status": "accepted"|"duplicate"|"ignored", "duplicate": bool, "delivery_id"}`;
    400/401/413 `{"detail": reason}` per WebhookRejected; 500 when `on_event` raised (the id is
    forgotten, so MLflow's retry is handled afresh). `on_event` is called for a first-time,
    verified event naming a registered model; it runs on the server's event loop, so it must be
    quick and must not block (set a flag or an event that wakes the poll). Pass `counters` to read
    the outcomes. An empty secret is refused (ValueError): it would accept anyone's signature.
    """
    _secrets(secret)  # fail at start-up, not on the first delivery
    if replay_window_s <= 0 or max_body_bytes < 1:
        raise ValueError(
            f"replay_window_s and max_body_bytes must be positive, got {replay_window_s}, {max_body_bytes}"
        )
    log = deliveries if deliveries is not None else DeliveryLog(ttl_s=2 * replay_window_s)
    counts = counters if counters is not None else WebhookCounters()
    router = APIRouter()

    def reject(exc: WebhookRejected, request: Request) -> JSONResponse:
        counts.record(f"rejected_{exc.status_code}")
        peer = request.client.host if request.client else "?"
        _log.warning("MLflow webhook from %s rejected (HTTP %d): %s", peer, exc.status_code, exc.reason)
        return JSONResponse({"detail": exc.reason}, status_code=exc.status_code)

    def answer(outcome: str, event: WebhookEvent) -> JSONResponse:
        counts.record(outcome)
        return JSONResponse(
            {"status": outcome, "duplicate": outcome == DUPLICATE, "delivery_id": event.delivery_id}
        )

    @router.post(path, include_in_schema=False)
    async def receive(request: Request) -> JSONResponse:
        try:
            raw_body = await _read_limited(request, max_body_bytes)
            event = verify(secret, request.headers, raw_body, clock(), replay_window_s=replay_window_s)
        except WebhookRejected as exc:
            return reject(exc, request)
        if not log.first_time(event.delivery_id, clock()):
            _log.info("MLflow webhook delivery %s repeated; already handled", event.delivery_id)
            return answer(DUPLICATE, event)
        if not event.names_model:
            _log.info(
                "MLflow webhook %s (delivery %s) names no registered model; ignored",
                event.event_type, event.delivery_id,
            )  # fmt: skip
            return answer(IGNORED, event)
        try:
            on_event(event)
        except Exception as exc:  # noqa: BLE001 - any failure must let MLflow retry the delivery
            log.forget(event.delivery_id)
            counts.record(HANDLER_FAILED)
            _log.error(
                "handling MLflow webhook %s for model %r failed: %s: %s",
                event.event_type, event.model, type(exc).__name__, exc,
            )  # fmt: skip
            return JSONResponse({"detail": "the receiver failed to handle the event"}, status_code=500)
        _log.info(
            "MLflow webhook %s for model %r (alias %s, version %s, delivery %s)",
            event.event_type, event.model, event.alias, event.version, event.delivery_id,
        )  # fmt: skip
        return answer(ACCEPTED, event)

    return router
