"""The operator's shared registry poll against a real MLflow server (and an unreachable one)."""

from __future__ import annotations

import threading
import time
import uuid

from controller.backoff import Backoff
from controller.local.ports import free_port
from controller.registry_poller import RegistryPoller
from registry.connection import connect


def test_one_poll_serves_every_rollout_and_reports_alias_moves(mlflow_server, registered_model) -> None:
    model, other = f"poll-{uuid.uuid4().hex[:6]}", f"poll-{uuid.uuid4().hex[:6]}"
    v1 = registered_model(model, alias="champion")
    registered_model(other, alias="champion")
    changed: list[str] = []
    observed: list[bool] = []
    poller = RegistryPoller(connect(mlflow_server.url, timeout_s=5, max_retries=0), 600,
                            on_change=changed.append, observe=lambda s, ok: observed.append(ok))  # fmt: skip
    poller.watch(("a", "r1"), model)
    poller.watch(("b", "r2"), model)  # two rollouts, one model: polled once
    poller.watch(("a", "r3"), other)
    poller.poll_once()
    snapshot, error = poller.latest()
    assert error is None and set(snapshot) == {model, other} and observed == [True]
    assert snapshot[model].aliases == {"champion": v1}
    assert sorted(changed) == sorted([model, other])  # first sight counts as a change

    changed.clear()
    v2 = registered_model(model, alias="challenger")
    poller.poll_once()
    assert changed == [model]  # only the model whose aliases moved
    assert poller.snapshot_for(model)[0][model].aliases == {"champion": v1, "challenger": v2}
    assert poller.snapshot_for("never-watched") == (None, "registered model 'never-watched' not polled yet")

    poller.forget(("a", "r3"))
    poller.poll_once()
    assert set(poller.latest()[0]) == {model}


def test_a_wake_polls_now_instead_of_at_the_next_interval(mlflow_server, registered_model) -> None:
    model = f"poll-{uuid.uuid4().hex[:6]}"
    registered_model(model, alias="champion")
    polls = threading.Semaphore(0)
    poller = RegistryPoller(connect(mlflow_server.url, timeout_s=5, max_retries=0), 600,
                            observe=lambda s, ok: polls.release()).start()  # fmt: skip
    try:
        assert polls.acquire(timeout=10)  # the first poll at start
        assert not polls.acquire(timeout=0.5)  # then nothing for the 600 s interval…
        poller.wake()
        assert polls.acquire(timeout=10)  # …unless woken
        assert poller.alive
    finally:
        poller.stop()
    assert not poller.alive


def test_an_unreachable_registry_is_named_and_backed_off() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    outcomes: list[bool] = []
    poller = RegistryPoller(connect(url, timeout_s=2, max_retries=0), 600, observe=lambda s, ok: outcomes.append(ok),
                            backoff=Backoff(first=60))  # fmt: skip
    poller.watch(("a", "r"), "iris")
    poller.poll_once()
    snapshot, error = poller.latest()
    assert snapshot is None and error is not None and url.removeprefix("http://") in error
    poller.poll_once()  # backed off: no second call
    assert outcomes == [False]
    started = time.monotonic()
    assert poller.wait_polled(0) and time.monotonic() - started < 1
