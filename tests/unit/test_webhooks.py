"""The MLflow webhook receiver: signature, replay window, duplicates, body limits, the router.

Signatures are computed here with `hmac` directly (and one vector with `openssl`), never with
the module's own `sign`, so a bug shared by signer and verifier cannot pass unnoticed.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from registry.webhooks import (
    DeliveryLog,
    WebhookCounters,
    WebhookEvent,
    WebhookRejected,
    sign,
    verify,
    webhook_router,
)

SECRET = "whsec-test"
NOW = 1_700_000_000
ALIAS_BODY = json.dumps(
    {
        "entity": "model_version_alias",
        "action": "created",
        "timestamp": "2023-11-14T22:13:20+00:00",
        "data": {"name": "iris", "alias": "champion", "version": "1"},
    }
).encode()


def signature(secret: str, delivery_id: str, timestamp: str, body: bytes) -> str:
    mac = hmac.new(secret.encode(), f"{delivery_id}.{timestamp}.".encode() + body, hashlib.sha256)
    return "v1," + base64.b64encode(mac.digest()).decode()


def signed_headers(
    body: bytes = ALIAS_BODY, delivery_id: str = "delivery-1", timestamp: int | str = NOW, secret: str = SECRET
) -> dict[str, str]:
    """Headers spelled as MLflow sends them (`X-MLflow-...`)."""
    return {
        "Content-Type": "application/json",
        "X-MLflow-Delivery-Id": delivery_id,
        "X-MLflow-Timestamp": str(timestamp),
        "X-MLflow-Signature": signature(secret, delivery_id, str(timestamp), body),
    }


def payload(entity: str, action: str, **data: Any) -> bytes:
    return json.dumps({"entity": entity, "action": action, "data": data}).encode()


def rejection(
    body: bytes = ALIAS_BODY, headers: dict[str, str] | None = None, now: float = NOW
) -> WebhookRejected:
    with pytest.raises(WebhookRejected) as caught:
        verify(SECRET, signed_headers(body) if headers is None else headers, body, now)
    return caught.value


# --- signatures ---------------------------------------------------------------------------------


def test_signature_matches_a_vector_computed_with_openssl() -> None:
    body = (
        b'{"entity":"model_version_alias","action":"created",'
        b'"data":{"name":"iris","alias":"champion","version":"1"}}'
    )
    # printf 'delivery-1.1700000000.<body>' | openssl dgst -sha256 -hmac whsec-test -binary | base64
    expected = "v1,jJA/0fjm8MXjygq5KJNJFye3raLvDHeOqgqKajqlDvE="
    assert sign(SECRET, "delivery-1", "1700000000", body) == expected
    headers = {
        "x-mlflow-delivery-id": "delivery-1",
        "x-mlflow-timestamp": "1700000000",
        "x-mlflow-signature": expected,
    }
    assert verify(SECRET, headers, body, NOW).model == "iris"


def test_sign_agrees_with_hmac_computed_independently() -> None:
    assert sign("s3cr3t", "id-9", "42", b"{}") == signature("s3cr3t", "id-9", "42", b"{}")
    body = '{"é": 1}'.encode()
    assert sign("ünïcode", "id-9", "42", body) == signature("ünïcode", "id-9", "42", body)


def test_valid_delivery_becomes_an_event() -> None:
    event = verify(SECRET, signed_headers(), ALIAS_BODY, NOW)
    assert event == WebhookEvent(
        entity="model_version_alias", action="created", model="iris", alias="champion", version="1",
        delivery_id="delivery-1",
    )  # fmt: skip
    assert event.event_type == "model_version_alias.created"
    assert event.names_model


@pytest.mark.parametrize("spell", [str.lower, str.upper, lambda name: name])
def test_header_names_are_case_insensitive(spell: Any) -> None:
    headers = {spell(name): value for name, value in signed_headers().items()}
    assert verify(SECRET, headers, ALIAS_BODY, NOW).delivery_id == "delivery-1"


def test_alias_deleted_has_no_version_and_integer_versions_become_strings() -> None:
    deleted = payload("model_version_alias", "deleted", name="iris", alias="challenger")
    event = verify(SECRET, signed_headers(deleted), deleted, NOW)
    assert (event.model, event.alias, event.version) == ("iris", "challenger", None)
    created = payload("model_version", "created", name="iris", version=7)
    assert verify(SECRET, signed_headers(created), created, NOW).version == "7"


def test_a_rotation_accepts_any_listed_secret_and_any_offered_signature() -> None:
    headers = signed_headers(secret="new-secret")
    assert verify(["old-secret", "new-secret"], headers, ALIAS_BODY, NOW).model == "iris"
    # Standard Webhooks allows several space-separated signatures: one valid one is enough.
    headers["X-MLflow-Signature"] = "v1,AAAA " + headers["X-MLflow-Signature"]
    assert verify("new-secret", headers, ALIAS_BODY, NOW).model == "iris"


@pytest.mark.parametrize("secret", ["", [], [""], ["ok", ""]])
def test_an_empty_secret_is_refused(secret: Any) -> None:
    with pytest.raises(ValueError, match="secret must be a non-empty string"):
        verify(secret, signed_headers(), ALIAS_BODY, NOW)
    with pytest.raises(ValueError, match="secret must be a non-empty string"):
        webhook_router(secret, lambda event: None)


# --- rejections ----------------------------------------------------------------------------------


@pytest.mark.parametrize("missing", ["X-MLflow-Delivery-Id", "X-MLflow-Timestamp", "X-MLflow-Signature"])
def test_a_missing_or_empty_header_is_400(missing: str) -> None:
    headers = signed_headers()
    del headers[missing]
    error = rejection(headers=headers)
    assert (error.status_code, error.reason) == (400, f"missing header {missing.lower()}")
    headers[missing] = "  "
    assert rejection(headers=headers).status_code == 400


@pytest.mark.parametrize("timestamp", ["1.7e9", "1700000000.5", "-5", "yesterday", "9" * 13, "１７００"])
def test_a_timestamp_that_is_not_unix_seconds_is_400(timestamp: str) -> None:
    error = rejection(headers=signed_headers(timestamp=timestamp))
    assert error.status_code == 400 and "x-mlflow-timestamp" in error.reason


def test_an_overlong_or_unprintable_delivery_id_is_400() -> None:
    assert rejection(headers=signed_headers(delivery_id="x" * 129)).status_code == 400
    assert rejection(headers=signed_headers(delivery_id="a\tb")).status_code == 400
    assert verify(SECRET, signed_headers(delivery_id="x" * 128), ALIAS_BODY, NOW).delivery_id == "x" * 128


@pytest.mark.parametrize(
    "tamper",
    [
        pytest.param(
            lambda h: h | {"X-MLflow-Signature": signature("wrong", "delivery-1", str(NOW), ALIAS_BODY)},
            id="wrong-secret",
        ),
        pytest.param(lambda h: h | {"X-MLflow-Delivery-Id": "delivery-2"}, id="other-delivery-id"),
        pytest.param(lambda h: h | {"X-MLflow-Timestamp": str(NOW - 1)}, id="other-timestamp"),
        pytest.param(
            lambda h: h | {"X-MLflow-Signature": h["X-MLflow-Signature"][:-8] + "AAAAAAA="}, id="altered"
        ),
        pytest.param(lambda h: h | {"X-MLflow-Signature": h["X-MLflow-Signature"][:20]}, id="truncated"),
    ],
)
def test_a_signature_that_does_not_match_is_401(tamper: Any) -> None:
    error = rejection(headers=tamper(signed_headers()))
    assert (error.status_code, error.reason) == (401, "signature does not match")


def test_a_changed_body_is_401() -> None:
    error = rejection(body=ALIAS_BODY.replace(b"champion", b"challenger"), headers=signed_headers())
    assert (error.status_code, error.reason) == (401, "signature does not match")


def test_a_reserialised_body_is_401_because_the_signature_covers_the_raw_bytes() -> None:
    reserialised = json.dumps(json.loads(ALIAS_BODY), separators=(",", ":")).encode()
    assert reserialised != ALIAS_BODY
    assert rejection(body=reserialised, headers=signed_headers()).status_code == 401


@pytest.mark.parametrize("value", ["", "v1,", "v0,abc=", "sha256=abc", "v1,not base64!", "v1 abc"])
def test_a_signature_header_without_a_v1_signature_is_401(value: str) -> None:
    headers = signed_headers() | {"X-MLflow-Signature": value}
    assert rejection(headers=headers).status_code == (400 if not value else 401)


@pytest.mark.parametrize(
    ("now", "accepted"),
    [(NOW + 300, True), (NOW - 300, True), (NOW + 301, False), (NOW - 301, False), (NOW + 86_400, False)],
)
def test_timestamps_outside_the_replay_window_are_401(now: float, accepted: bool) -> None:
    if accepted:
        assert verify(SECRET, signed_headers(), ALIAS_BODY, now).model == "iris"
        return
    error = rejection(now=now)
    assert error.status_code == 401
    assert ("old" if now > NOW else "in the future") in error.reason and "replay window" in error.reason


def test_the_replay_window_is_configurable() -> None:
    assert verify(SECRET, signed_headers(), ALIAS_BODY, NOW + 30, replay_window_s=60).model == "iris"
    with pytest.raises(WebhookRejected, match="61 s old, outside the 60 s"):
        verify(SECRET, signed_headers(), ALIAS_BODY, NOW + 61, replay_window_s=60)
    with pytest.raises(ValueError, match="replay_window_s"):
        verify(SECRET, signed_headers(), ALIAS_BODY, NOW, replay_window_s=0)


def test_a_bad_signature_is_reported_before_a_stale_timestamp() -> None:
    headers = signed_headers(secret="wrong")
    assert rejection(headers=headers, now=NOW + 3600).reason == "signature does not match"


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"not json", "not JSON"),
        (b"\xff\xfe{}", "not JSON"),
        (b"", "not JSON"),
        (b"[1, 2]", "not a JSON object"),
        (b'{"action": "created", "data": {}}', "'entity' and 'action'"),
        (b'{"entity": "model_version_alias", "action": 3, "data": {}}', "'entity' and 'action'"),
        (b'{"entity": "", "action": "created", "data": {}}', "'entity' and 'action'"),
        (b'{"entity": "model_version_alias", "action": "created"}', "'data' must be an object"),
        (b'{"entity": "model_version_alias", "action": "created", "data": []}', "'data' must be an object"),
        (b'{"entity": "model_version_alias", "action": "created", "data": {"alias": "a"}}', "without data.name"),
        (b'{"entity": "model_version", "action": "created", "data": {"name": " "}}', "without data.name"),
        (b'{"entity": "model_version", "action": "created", "data": {"name": 5}}', "without data.name"),
        (payload("model_version_alias", "created", name="m", alias=["a"]), "data.alias"),
        (payload("model_version", "created", name="m", version=True), "data.version"),
    ],
)
def test_a_correctly_signed_but_malformed_body_is_400(body: bytes, reason: str) -> None:
    error = rejection(body=body)
    assert error.status_code == 400 and reason in error.reason and error.reason.startswith("malformed body")


def test_an_unknown_entity_verifies_but_names_no_model() -> None:
    # Newer MLflow versions add entities (prompts, budget policies); their payload is not parsed.
    body = b'{"entity": "budget_policy", "action": "exceeded", "data": {"version": ["any", "shape"]}}'
    event = verify(SECRET, signed_headers(body), body, NOW)
    assert (event.event_type, event.model, event.names_model) == ("budget_policy.exceeded", None, False)


# --- the delivery log ----------------------------------------------------------------------------


def test_delivery_log_remembers_an_id_for_its_ttl() -> None:
    log = DeliveryLog(ttl_s=10, max_entries=5)
    assert log.first_time("a", now=0)
    assert not log.first_time("a", now=9.9)
    assert log.first_time("a", now=10.0)  # expired: remembered afresh
    assert not log.first_time("a", now=15)


def test_delivery_log_is_bounded_and_forgets_the_oldest_first() -> None:
    log = DeliveryLog(ttl_s=100, max_entries=3)
    for index, delivery_id in enumerate("abcd"):
        assert log.first_time(delivery_id, now=index)
    assert len(log) == 3
    assert log.first_time("a", now=5)  # evicted to make room for "d"
    assert not log.first_time("d", now=5)


def test_delivery_log_forget_lets_a_retry_through() -> None:
    log = DeliveryLog()
    assert log.first_time("a", now=0)
    log.forget("a")
    log.forget("never-seen")
    assert log.first_time("a", now=1)


@pytest.mark.parametrize(("ttl", "size"), [(0, 10), (-1, 10), (10, 0)])
def test_delivery_log_rejects_nonsense_bounds(ttl: float, size: int) -> None:
    with pytest.raises(ValueError, match="ttl_s must be positive"):
        DeliveryLog(ttl_s=ttl, max_entries=size)


# --- the router ----------------------------------------------------------------------------------


class Receiver:
    """The router mounted in an app, with what `on_event` saw and the outcome counters.

    Requests go through httpx's ASGI transport: the real app and router, in-process (the
    integration test serves the same router over real HTTP with uvicorn).
    """

    def __init__(self, **options: Any) -> None:
        self.events: list[WebhookEvent] = []
        self.counters = WebhookCounters()
        self.fail_next = 0
        app = FastAPI()
        app.include_router(
            webhook_router(SECRET, self.on_event, counters=self.counters, clock=lambda: NOW, **options)
        )
        self.client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://receiver")

    def on_event(self, event: WebhookEvent) -> None:
        if self.fail_next:
            self.fail_next -= 1
            raise RuntimeError("poll queue closed")
        self.events.append(event)

    async def post(self, body: Any = ALIAS_BODY, headers: dict[str, str] | None = None) -> httpx.Response:
        headers = signed_headers(body) if headers is None else headers
        return await self.client.post("/webhooks/mlflow", content=body, headers=headers)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    receiver = Receiver()
    async with receiver.client:
        yield receiver


async def test_router_hands_a_verified_event_to_on_event(receiver: Receiver) -> None:
    response = await receiver.post()
    assert response.status_code == 200
    assert response.json() == {"status": "accepted", "duplicate": False, "delivery_id": "delivery-1"}
    assert [(e.model, e.alias, e.version) for e in receiver.events] == [("iris", "champion", "1")]
    assert receiver.counters.snapshot() == {"accepted": 1}


async def test_a_repeated_delivery_id_is_acknowledged_but_not_acted_on(receiver: Receiver) -> None:
    assert (await receiver.post()).json()["duplicate"] is False
    again = await receiver.post()
    assert again.status_code == 200  # a retry must not be answered with an error
    assert again.json() == {"status": "duplicate", "duplicate": True, "delivery_id": "delivery-1"}
    assert len(receiver.events) == 1
    other = payload("model_version_alias", "created", name="iris", alias="challenger", version="2")
    second = await receiver.post(other, signed_headers(other, delivery_id="delivery-2"))
    assert second.json()["status"] == "accepted"
    assert receiver.counters.snapshot() == {"accepted": 2, "duplicate": 1}


async def test_a_rejected_delivery_does_not_use_up_its_delivery_id(receiver: Receiver) -> None:
    forged = await receiver.post(headers=signed_headers(secret="guess"))
    assert forged.status_code == 401 and forged.json() == {"detail": "signature does not match"}
    assert (await receiver.post()).json()["status"] == "accepted"
    # ...and a forged copy of an accepted delivery is still a 401, not a harmless-looking 200.
    assert (await receiver.post(headers=signed_headers(secret="guess"))).status_code == 401
    assert receiver.counters.snapshot() == {"accepted": 1, "rejected_401": 2}


async def test_router_answers_each_rejection_with_its_status(receiver: Receiver) -> None:
    no_signature = {k: v for k, v in signed_headers().items() if k != "X-MLflow-Signature"}
    assert (await receiver.post(headers=no_signature)).status_code == 400
    assert (await receiver.post(headers=signed_headers(timestamp=NOW - 301))).status_code == 401
    assert (await receiver.post(b"[]", signed_headers(b"[]"))).status_code == 400
    assert receiver.events == []
    assert receiver.counters.snapshot() == {"rejected_400": 2, "rejected_401": 1}


async def test_an_event_for_no_registered_model_is_200_ignored(receiver: Receiver) -> None:
    body = payload("prompt_alias", "created", name="my-prompt", alias="prod", version="1")
    response = await receiver.post(body)
    assert response.status_code == 200 and response.json()["status"] == "ignored"
    assert receiver.events == []
    assert (await receiver.post(body)).json()["status"] == "duplicate"


async def test_a_failing_handler_answers_500_and_the_retry_is_handled(receiver: Receiver) -> None:
    receiver.fail_next = 1
    failed = await receiver.post()
    assert failed.status_code == 500 and "secret" not in failed.text
    retried = await receiver.post()  # MLflow retries a 5xx with the same delivery id
    assert retried.status_code == 200 and retried.json()["status"] == "accepted"
    assert len(receiver.events) == 1
    assert receiver.counters.snapshot() == {"handler_failed": 1, "accepted": 1}


async def test_a_body_over_the_limit_is_413_whether_declared_or_streamed() -> None:
    receiver = Receiver(max_body_bytes=len(ALIAS_BODY))
    async with receiver.client:
        assert (await receiver.post()).status_code == 200
        big = ALIAS_BODY + b" "
        declared = await receiver.post(big)
        assert declared.status_code == 413
        assert declared.json() == {"detail": f"body larger than {len(ALIAS_BODY)} bytes"}

        async def chunks() -> AsyncIterator[bytes]:  # no content-length: sent chunked
            yield big[:50]
            yield big[50:]

        assert (await receiver.post(chunks(), signed_headers(big, delivery_id="delivery-3"))).status_code == 413
        bad_length = signed_headers(delivery_id="delivery-4") | {"content-length": "many"}
        assert (await receiver.post(headers=bad_length)).status_code == 400
    assert receiver.counters.snapshot() == {"accepted": 1, "rejected_413": 2, "rejected_400": 1}


async def test_router_headers_are_case_insensitive(receiver: Receiver) -> None:
    upper = {name.upper(): value for name, value in signed_headers().items()}
    assert (await receiver.post(headers=upper)).json()["status"] == "accepted"


def test_router_options_are_checked_when_built() -> None:
    with pytest.raises(ValueError, match="must be positive"):
        webhook_router(SECRET, lambda event: None, max_body_bytes=0)
    with pytest.raises(ValueError, match="must be positive"):
        webhook_router(SECRET, lambda event: None, replay_window_s=-1)


async def test_neither_the_secret_nor_a_signature_is_ever_logged(caplog: pytest.LogCaptureFixture) -> None:
    receiver = Receiver()
    receiver.fail_next = 1
    wrong = signed_headers(secret="another-secret")
    with caplog.at_level(logging.DEBUG):
        async with receiver.client:
            for headers in (signed_headers(), signed_headers(), wrong, signed_headers(timestamp=NOW - 999)):
                await receiver.post(headers=headers)
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert "rejected (HTTP 401)" in logged and "failed" in logged  # the receiver does log...
    for secret_text in (SECRET, "another-secret"):
        assert secret_text not in logged
    for headers in (signed_headers(), wrong, signed_headers(timestamp=NOW - 999)):
        assert headers["X-MLflow-Signature"].split(",", 1)[1] not in logged
