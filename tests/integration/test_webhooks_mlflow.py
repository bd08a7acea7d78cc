"""MLflow's own webhook deliveries, from a real `mlflow server`, into the receiver over real HTTP.

The session's `mlflow_server` cannot send webhooks to a loopback receiver: MLflow refuses `http`
URLs and private addresses unless told otherwise, and without a fixed encryption key a worker may
fail to decrypt the secret it stored. So this module runs its own server with those settings.

MLflow caches the webhooks of each event type for 60 s per worker, filled by the first event of
that type. Webhooks created before the first alias event are therefore seen at once (measured:
created *after* one, they got nothing for 61 s). Every webhook here is created before the
server's first alias event, and nothing else uses this server.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import pytest
import uvicorn
from cryptography.fernet import Fernet
from fastapi import FastAPI

from controller.local.mlflow_server import MlflowServer
from controller.local.ports import LOOPBACK, free_port
from registry.connection import fail_fast_environment
from registry.webhooks import WEBHOOK_PATH, WebhookCounters, WebhookEvent, webhook_router

if TYPE_CHECKING:
    import mlflow

SECRET = "integration-secret"
SERVER_START_TIMEOUT_S = 90.0
DELIVERY_TIMEOUT_S = 10.0  # a delivery takes milliseconds; a retry after a 500 about a second
RECEIVER_START_TIMEOUT_S = 10.0


def eventually(what: str, condition: Callable[[], bool], timeout: float = DELIVERY_TIMEOUT_S) -> None:
    """Wait until `condition()` holds; MLflow delivers from a thread pool after answering."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"no {what} within {timeout:g} s")
        time.sleep(0.05)


@dataclass
class Receiver:
    """The webhook router served by uvicorn on 127.0.0.1, and what reached `on_event`."""

    url: str
    counters: WebhookCounters
    events: list[WebhookEvent] = field(default_factory=list)
    failed_deliveries: list[str] = field(default_factory=list)  # ids of deliveries answered 500
    fail_aliases: set[str] = field(default_factory=set)  # alias events to fail once, with a 500
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def on_event(self, event: WebhookEvent) -> None:
        with self._lock:
            if event.alias in self.fail_aliases:
                self.fail_aliases.discard(event.alias)
                self.failed_deliveries.append(event.delivery_id)
                raise RuntimeError("simulated failure to wake the poll")
            self.events.append(event)

    def events_for(self, model: str) -> list[WebhookEvent]:
        with self._lock:
            return [event for event in self.events if event.model == model]


@pytest.fixture(scope="module")
def webhook_mlflow(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    """An `mlflow server` that may deliver webhooks to 127.0.0.1 over plain http."""
    server = MlflowServer(
        data_dir=tmp_path_factory.mktemp("mlflow-webhooks"),
        port=free_port(),
        extra_env={
            "MLFLOW_WEBHOOK_ALLOWED_SCHEMES": "http,https",
            "MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS": "true",
            "MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY": Fernet.generate_key().decode(),
        },
    )
    env = pytest.MonkeyPatch()
    try:
        server.start(timeout=SERVER_START_TIMEOUT_S)
        for key, value in fail_fast_environment(timeout_s=30, max_retries=1).items():
            env.setenv(key, value)
        yield server
    finally:
        env.undo()
        server.stop()


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    """The receiver in a uvicorn thread, on a socket bound to port 0 here (no port race)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind((LOOPBACK, 0))
    port = sock.getsockname()[1]
    receiver = Receiver(url=f"http://{LOOPBACK}:{port}{WEBHOOK_PATH}", counters=WebhookCounters())
    app = FastAPI()
    app.include_router(webhook_router(SECRET, receiver.on_event, counters=receiver.counters))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="webhook-receiver", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + RECEIVER_START_TIMEOUT_S
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"webhook receiver on port {port} did not start")
            time.sleep(0.02)
        yield receiver
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
        assert not thread.is_alive(), "webhook receiver thread did not stop"


@pytest.fixture(scope="module")
def client(webhook_mlflow: MlflowServer) -> mlflow.MlflowClient:
    import mlflow

    return mlflow.MlflowClient(tracking_uri=webhook_mlflow.url, registry_uri=webhook_mlflow.url)


@pytest.fixture(scope="module")
def webhooks(client: mlflow.MlflowClient, receiver: Receiver) -> dict[str, str]:
    """Both webhooks, created before the server's first alias event: `right` and `wrong` secret."""
    right = client.create_webhook(
        name="modelrollout",
        url=receiver.url,
        events=["model_version_alias.created", "model_version_alias.deleted"],
        secret=SECRET,
    )
    wrong = client.create_webhook(
        name="stale-secret", url=receiver.url, events=["model_version_alias.created"], secret="not-the-secret"
    )
    return {"right": right.webhook_id, "wrong": wrong.webhook_id}


def _model_with_versions(client: mlflow.MlflowClient, name: str, count: int) -> None:
    """A registered model with `count` versions; the sources are never read, so none is logged."""
    client.create_registered_model(name)
    for index in range(count):
        client.create_model_version(name, f"s3://modelrollout-tests/{name}/{index}")


def test_alias_moves_arrive_verified_and_a_wrong_secret_is_rejected(
    client: mlflow.MlflowClient, receiver: Receiver, webhooks: dict[str, str]
) -> None:
    _model_with_versions(client, "iris-webhooks", 2)
    client.set_registered_model_alias("iris-webhooks", "challenger", "1")
    client.set_registered_model_alias("iris-webhooks", "challenger", "2")  # a move is `created` too
    client.delete_registered_model_alias("iris-webhooks", "challenger")

    eventually("three alias events for iris-webhooks", lambda: len(receiver.events_for("iris-webhooks")) >= 3)
    # The wrong-secret webhook got the two `created` events; each was answered 401 (not retried).
    eventually("two rejected deliveries", lambda: receiver.counters.get("rejected_401") >= 2)

    events = receiver.events_for("iris-webhooks")
    # MLflow does not order deliveries: compare as a set.
    assert {(e.event_type, e.alias, e.version) for e in events} == {
        ("model_version_alias.created", "challenger", "1"),
        ("model_version_alias.created", "challenger", "2"),
        ("model_version_alias.deleted", "challenger", None),
    }
    assert len(events) == 3 and len({e.delivery_id for e in events}) == 3
    assert receiver.counters.get("rejected_401") == 2
    # The router counts an outcome after `on_event` returns, so the count may trail the events briefly.
    eventually("three accepted deliveries", lambda: receiver.counters.get("accepted") >= 3)


def test_mlflow_test_deliveries_show_what_mlflow_sees(
    client: mlflow.MlflowClient, receiver: Receiver, webhooks: dict[str, str]
) -> None:
    rejected_before = receiver.counters.get("rejected_401")
    good = client.test_webhook(webhooks["right"])
    assert (good.success, good.response_status) == (True, 200)
    assert '"status":"accepted"' in good.response_body  # MLflow's example alias event

    bad = client.test_webhook(webhooks["wrong"])
    assert (bad.success, bad.response_status) == (False, 401)
    assert "signature does not match" in bad.response_body
    assert receiver.counters.get("rejected_401") >= rejected_before + 1


def test_a_delivery_answered_500_is_retried_by_mlflow_with_the_same_delivery_id(
    client: mlflow.MlflowClient, receiver: Receiver, webhooks: dict[str, str]
) -> None:
    _model_with_versions(client, "iris-webhook-retry", 1)
    receiver.fail_aliases.add("flaky")
    client.set_registered_model_alias("iris-webhook-retry", "flaky", "1")

    eventually("retried delivery", lambda: bool(receiver.events_for("iris-webhook-retry")))
    [event] = receiver.events_for("iris-webhook-retry")
    assert receiver.failed_deliveries == [event.delivery_id]
    assert receiver.counters.get("handler_failed") == 1
