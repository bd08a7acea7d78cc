"""The rollout router as a real process, in front of real model servers.

Two real KServe model servers are started once for the module: a LogisticRegression (v1, the
stable) and a DummyClassifier that always answers class 0 (a different model for canary and
shadow). Behaviours that need an upstream to misbehave on cue (hang, 500) use small real
uvicorn servers in threads of this process. Each test starts its own router (~1 s) so counters
and routing never leak between tests.
"""

from __future__ import annotations

import asyncio
import json
import math
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from prometheus_client.parser import text_string_to_metric_families

from controller.demo.models import pip_requirements
from tests.fixtures.modelserver import (
    Process,
    fit_logistic,
    free_port,
    iris,
    save_sklearn,
    spawn,
    start_model_servers,
)

WAIT_TIMEOUT = 20.0


# --- helpers --------------------------------------------------------------------------------------


def wait_until(check: Callable[[], bool], timeout: float = WAIT_TIMEOUT, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise TimeoutError(f"{what} not met within {timeout} s")


@dataclass
class Router:
    proc: Process
    http: httpx.Client = field(default_factory=lambda: httpx.Client(timeout=15.0))

    @property
    def url(self) -> str:
        return self.proc.url

    def put_routing(self, routing: dict[str, Any]) -> httpx.Response:
        return self.http.put(self.url + "/admin/routing", json=routing)

    def predict(self, rows: list[list[float]], model: str = "iris", request_id: str | None = None) -> httpx.Response:
        headers = {"x-request-id": request_id} if request_id else {}
        return self.http.post(f"{self.url}/v1/models/{model}:predict", json={"instances": rows}, headers=headers)

    def feedback(self, body: Any) -> httpx.Response:
        return self.http.post(self.url + "/feedback", json=body)

    def metrics(self) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
        text = self.http.get(self.url + "/metrics").text
        return {
            (s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }

    def metric(self, name: str, **labels: str) -> float | None:
        return self.metrics().get((name, frozenset({"rollout": "r-test", **labels}.items())))


@pytest.fixture
def start_router(tmp_path: Path) -> Iterator[Callable[..., Router]]:
    started: list[Router] = []

    def start(*args: str) -> Router:
        proc = spawn("canary.traffic.router", ["--rollout", "r-test", *args], tmp_path, "router")
        router = Router(proc)
        started.append(router)
        proc.wait_ready("/healthz")
        return router

    yield start
    for router in started:
        router.http.close()
        router.proc.stop()
        assert router.proc.popen.returncode is not None


@dataclass
class FakeServer:
    """A real HTTP server in a thread that answers like a KServe V1 server with a fixed class.

    ``delay`` and ``status`` may be changed while it runs; ``received`` counts the requests.
    ``answer``, when given, computes the predictions from the instances instead (e.g. a real
    sklearn model in this process, altered on purpose).
    """

    prediction: Any = 0
    answer: Callable[[list[Any]], list[Any]] | None = None
    delay: float = 0.0
    status: int = 200
    received: int = 0
    port: int = field(default_factory=free_port)
    stopping: bool = False

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __post_init__(self) -> None:
        app = FastAPI()

        @app.post("/v1/models/{model}:predict")
        async def predict(model: str, request: Request) -> Any:
            self.received += 1
            body = await request.json()
            # Sleep in slices so stop() need not cancel a hanging request (uvicorn logs that).
            # ``delay`` is re-read on every slice, so a test can release hanging requests.
            began = time.monotonic()
            while time.monotonic() - began < self.delay and not self.stopping:
                await asyncio.sleep(0.02)
            if self.status != 200:
                return JSONResponse(status_code=self.status, content={"error": "injected failure"})
            if self.answer is not None:
                return {"predictions": self.answer(body["instances"])}
            return {"predictions": [self.prediction] * len(body["instances"])}

        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", timeout_graceful_shutdown=1)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)

    def start(self) -> FakeServer:
        self._thread.start()
        wait_until(lambda: self._server.started, 10.0, "fake server start")
        return self

    def stop(self) -> None:
        self.stopping = True
        self._server.should_exit = True
        self._thread.join(timeout=10.0)
        assert not self._thread.is_alive()


@pytest.fixture
def fake_servers() -> Iterator[Callable[..., FakeServer]]:
    servers: list[FakeServer] = []

    def make(**kwargs: Any) -> FakeServer:
        server = FakeServer(**kwargs).start()
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.stop()


@dataclass(frozen=True)
class Models:
    logistic: Process  # serves a LogisticRegression on iris
    constant: Process  # serves a DummyClassifier that always predicts class 0
    estimator: Any


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Models]:
    from sklearn.dummy import DummyClassifier

    base = tmp_path_factory.mktemp("router-models")
    features, labels = iris()
    estimator = fit_logistic()
    logistic_path = save_sklearn(estimator, base / "logistic")
    constant_path = save_sklearn(
        DummyClassifier(strategy="constant", constant=0).fit(features, labels), base / "constant"
    )
    started = time.monotonic()
    logistic, constant = start_model_servers([("iris", logistic_path, "1"), ("iris", constant_path, "2")], base)
    print(f"\ntwo model servers ready in {time.monotonic() - started:.2f} s")
    yield Models(logistic, constant, estimator)
    logistic.stop()
    constant.stop()


def routing(
    stable: str,
    candidate: str | None = None,
    role: str | None = None,
    weight: int = 0,
    shadow: int = 0,
    stable_version: str = "1",
    candidate_version: str = "2",
) -> dict[str, Any]:
    body: dict[str, Any] = {"model": "iris", "stable": {"version": stable_version, "url": stable}, "candidate": None}
    if candidate is not None:
        body.update(
            candidate={"version": candidate_version, "url": candidate},
            candidateRole=role,
            candidateWeight=weight,
            shadowPercent=shadow,
        )
    return body


def rows(start: int, count: int) -> list[list[float]]:
    features, _ = iris()
    return features[start : start + count].tolist()


# --- before routing, admin API ---------------------------------------------------------------------


def test_503_until_routing_is_set(start_router: Callable[..., Router], models: Models) -> None:
    router = start_router()
    answer = router.predict(rows(0, 1))
    assert answer.status_code == 503
    assert answer.json() == {"error": "rollout 'r-test': no routing configured"}
    assert answer.headers["x-request-id"]
    assert router.http.get(router.url + "/admin/routing").status_code == 404
    assert router.http.get(router.url + "/healthz").json() == {"status": "ok", "rollout": "r-test", "routing": False}
    not_ready = router.http.get(router.url + "/readyz")  # alive, but cannot serve yet
    assert not_ready.status_code == 503 and "no routing configured yet" in not_ready.json()["error"]

    applied = router.put_routing(routing(models.logistic.url))
    assert applied.status_code == 200, applied.text
    assert applied.json()["changed"] is True
    assert router.predict(rows(0, 1)).status_code == 200
    ready = router.http.get(router.url + "/readyz")
    assert ready.status_code == 200 and ready.json() == {"ready": True, "rollout": "r-test", "model": "iris", "stable": "1"}
    assert router.http.get(router.url + "/admin/routing").json() == {
        "model": "iris",
        "stable": {"version": "1", "url": models.logistic.url},
        "candidate": None,
        "candidateRole": None,
        "candidateWeight": 0,
        "shadowPercent": 0,
    }


BAD_ROUTINGS = [
    pytest.param({"stable": {"version": "1", "url": "http://127.0.0.1:1"}}, ["model"], id="no-model"),
    pytest.param({"model": "iris"}, ["stable"], id="no-stable"),
    pytest.param(
        {"model": "iris", "stable": {"version": "", "url": "http://127.0.0.1:1"}},
        ["stable.version"],
        id="empty-version",
    ),
    pytest.param({"model": "iris", "stable": {"version": "1", "url": "ftp://x"}}, ["stable.url"], id="bad-scheme"),
    pytest.param(
        {"model": "iris", "stable": {"version": "1", "url": "http://127.0.0.1:1/v1"}},
        ["stable.url"],
        id="url-with-path",
    ),
    pytest.param(
        {"model": "iris", "stable": {"version": "1", "url": "http://127.0.0.1:1"}, "weight": 5},
        ["weight"],
        id="unknown-field",
    ),
    pytest.param(
        {**routing("http://127.0.0.1:1", "http://127.0.0.1:2", "canary", weight=101)},
        ["candidateWeight"],
        id="weight-over-100",
    ),
    pytest.param(
        {**routing("http://127.0.0.1:1", "http://127.0.0.1:2", "shadow", shadow=-1)},
        ["shadowPercent"],
        id="negative-percent",
    ),
    pytest.param(
        {**routing("http://127.0.0.1:1", "http://127.0.0.1:2", "mirror")}, ["candidateRole"], id="unknown-role"
    ),
    pytest.param(
        {**routing("http://127.0.0.1:1", "http://127.0.0.1:2", "shadow", weight=10)}, ["body"], id="weight-with-shadow"
    ),
    pytest.param(
        {**routing("http://127.0.0.1:1", "http://127.0.0.1:2", "canary", shadow=10)}, ["body"], id="percent-with-canary"
    ),
    pytest.param({**routing("http://127.0.0.1:1", "http://127.0.0.1:2", None)}, ["body"], id="candidate-no-role"),
    pytest.param(
        {**routing("http://127.0.0.1:1", "http://127.0.0.1:2", "canary", candidate_version="1")},
        ["body"],
        id="same-version",
    ),
    pytest.param({**routing("http://127.0.0.1:1"), "candidateWeight": 10}, ["body"], id="weight-no-candidate"),
]


def test_bad_routing_is_422_naming_the_field(start_router: Callable[..., Router], models: Models) -> None:
    router = start_router()
    good = routing(models.logistic.url)
    assert router.put_routing(good).status_code == 200
    for param in BAD_ROUTINGS:
        body, fields = param.values
        answer = router.put_routing(body)
        assert answer.status_code == 422, (param.id, answer.text)
        assert answer.json()["fields"] == fields, (param.id, answer.json())
        for name in fields:
            assert name in answer.json()["error"] or name == "body", (param.id, answer.json())
    # The messages of model-level rules name the fields involved.
    answer = router.put_routing(routing("http://127.0.0.1:1", "http://127.0.0.1:2", "shadow", weight=10))
    assert "candidateWeight is only for candidateRole 'canary'" in answer.json()["error"]
    not_json = router.http.put(
        router.url + "/admin/routing", content=b"{", headers={"content-type": "application/json"}
    )
    assert not_json.status_code == 422
    # None of it replaced the good routing.
    assert router.http.get(router.url + "/admin/routing").json()["stable"]["url"] == models.logistic.url


def test_same_routing_again_changes_and_resets_nothing(start_router: Callable[..., Router], models: Models) -> None:
    router = start_router()
    body = routing(models.logistic.url, models.constant.url, "canary", weight=50)
    assert router.put_routing(body).json()["changed"] is True
    for _ in range(10):
        assert router.predict(rows(0, 1)).status_code == 200
    before = router.metrics()
    assert router.put_routing(body).json()["changed"] is False
    assert router.metrics() == before
    # A real change is applied, and still resets no counter.
    assert router.put_routing({**body, "candidateWeight": 20}).json()["changed"] is True
    after = router.metrics()
    for key, value in before.items():
        if key[0].endswith("_total") or key[0].endswith("_count"):
            assert after[key] == value, key
    assert (
        before[
            (
                "modelrollout_requests_total",
                frozenset({"rollout": "r-test", "model": "iris", "version": "2", "role": "canary"}.items()),
            )
        ]
        == 5
    )


def test_series_exist_at_zero_once_routing_is_applied(start_router: Callable[..., Router], models: Models) -> None:
    router = start_router()
    router.put_routing(routing(models.logistic.url, models.constant.url, "shadow", shadow=100))
    m = router.metrics()

    def at(name: str, **labels: str) -> float | None:
        return m.get((name, frozenset({"rollout": "r-test", **labels}.items())))

    for version, role in (("1", "stable"), ("2", "shadow")):
        labels = {"model": "iris", "version": version, "role": role}
        for name in (
            "modelrollout_requests_total",
            "modelrollout_request_errors_total",
            "modelrollout_feedback_total",
            "modelrollout_feedback_correct_total",
            "modelrollout_request_duration_seconds_count",
        ):
            assert at(name, **labels) == 0.0, (name, labels)
        for le in ("0.001", "0.005", "0.1", "1.0", "5.0", "+Inf"):
            assert at("modelrollout_request_duration_seconds_bucket", le=le, **labels) == 0.0
    assert at("modelrollout_shadow_comparisons_total", model="iris", version="2") == 0.0
    assert at("modelrollout_shadow_agreements_total", model="iris", version="2") == 0.0
    assert at("modelrollout_mirror_dropped_total", model="iris") == 0.0
    assert at("modelrollout_mirror_queue_depth") == 0.0


# --- forwarding -------------------------------------------------------------------------------------


def test_forwards_v1_and_v2_with_headers(start_router: Callable[..., Router], models: Models) -> None:
    router = start_router()
    router.put_routing(routing(models.logistic.url))
    batch = rows(45, 10)
    answer = router.predict(batch, request_id="client-id-1")
    assert answer.status_code == 200
    assert answer.json() == {"predictions": models.estimator.predict(batch).tolist()}
    assert answer.headers["x-request-id"] == "client-id-1"
    assert answer.headers["x-model-version"] == "1"
    assert answer.headers["x-model-role"] == "stable"
    generated = router.predict(batch).headers["x-request-id"]
    assert len(generated) >= 16 and generated != "client-id-1"

    v2 = router.http.post(
        router.url + "/v2/models/iris/infer",
        json={"inputs": [{"name": "x", "shape": [2, 4], "datatype": "FP64", "data": batch[:2]}]},
    )
    assert v2.status_code == 200, v2.text
    assert v2.json()["outputs"][0]["data"] == models.estimator.predict(batch[:2]).tolist()
    assert v2.headers["x-model-version"] == "1"

    # The model server's own 400 is passed through as is, and is not a server error.
    bad = router.http.post(router.url + "/v1/models/iris:predict", json={"instances": [[1, 2]]})
    assert bad.status_code == 400 and "features" in bad.json()["error"]
    assert router.metric("modelrollout_request_errors_total", model="iris", version="1", role="stable") == 0
    assert router.metric("modelrollout_requests_total", model="iris", version="1", role="stable") == 4

    other = router.predict(batch, model="penguins")
    assert other.status_code == 404 and "penguins" in other.json()["error"]
    weird_id = router.http.post(
        router.url + "/v1/models/iris:predict", json={"instances": batch}, headers={"x-request-id": "x" * 300}
    )
    assert weird_id.status_code == 400


def test_canary_weight_split(start_router: Callable[..., Router], models: Models) -> None:
    router = start_router()
    for weight, requests in ((30, 100), (7, 200), (100, 20), (0, 20)):
        router.put_routing(routing(models.logistic.url, models.constant.url, "canary", weight=weight))
        before = router.metric("modelrollout_requests_total", model="iris", version="2", role="canary") or 0
        served = {"1": 0, "2": 0}
        for i in range(requests):
            answer = router.predict(rows(100 + i % 50, 1))  # classes 2 mostly: the constant model says 0
            assert answer.status_code == 200
            version = answer.headers["x-model-version"]
            assert answer.headers["x-model-role"] == ("canary" if version == "2" else "stable")
            assert (answer.json()["predictions"] == [0]) == (version == "2")
            served[version] += 1
        # The share is dealt from shuffled decks (7% -> 7 of 100, 30% -> 3 of 10): exact
        # after whole decks, which these request counts are.
        assert served["2"] == requests * weight // 100, (weight, served)
        after = router.metric("modelrollout_requests_total", model="iris", version="2", role="canary")
        assert after - before == served["2"]


# --- mirroring ---------------------------------------------------------------------------------------


def _mirrored(router: Router, version: str = "2") -> float:
    return router.metric("modelrollout_requests_total", model="iris", version=version, role="shadow") or 0.0


def test_shadow_of_the_same_model_agrees_fully(start_router: Callable[..., Router], models: Models) -> None:
    router = start_router()
    # Version 2 served by the very same model server: the same model answers both.
    router.put_routing(routing(models.logistic.url, models.logistic.url, "shadow", shadow=100))
    for i in range(15):
        answer = router.predict(rows(i * 10, 10))
        assert answer.status_code == 200 and answer.headers["x-model-role"] == "stable"
    wait_until(lambda: _mirrored(router) == 15, what="15 mirrored requests")
    assert router.metric("modelrollout_shadow_comparisons_total", model="iris", version="2") == 150
    assert router.metric("modelrollout_shadow_agreements_total", model="iris", version="2") == 150
    assert router.metric("modelrollout_request_errors_total", model="iris", version="2", role="shadow") == 0
    # Clients were served by the stable only.
    assert router.metric("modelrollout_requests_total", model="iris", version="1", role="stable") == 15


def test_shadow_of_a_different_model_agrees_less(start_router: Callable[..., Router], models: Models) -> None:
    router = start_router()
    router.put_routing(routing(models.logistic.url, models.constant.url, "shadow", shadow=100))
    stable_predictions: list[int] = []
    for i in range(15):
        answer = router.predict(rows(i * 10, 10))
        stable_predictions += answer.json()["predictions"]
    wait_until(lambda: _mirrored(router) == 15, what="15 mirrored requests")
    # The constant model agrees exactly where the stable predicts class 0.
    assert router.metric("modelrollout_shadow_comparisons_total", model="iris", version="2") == 150
    agreements = router.metric("modelrollout_shadow_agreements_total", model="iris", version="2")
    assert agreements == stable_predictions.count(0)
    assert 0.2 < agreements / 150 < 0.5


def test_shadow_percent_mirrors_that_share(start_router: Callable[..., Router], models: Models) -> None:
    router = start_router()
    router.put_routing(routing(models.logistic.url, models.logistic.url, "shadow", shadow=25))
    for i in range(40):
        assert router.predict(rows(i, 1)).status_code == 200
    wait_until(lambda: _mirrored(router) == 10, what="10 mirrored requests")
    time.sleep(0.3)  # nothing more arrives
    assert _mirrored(router) == 10
    assert router.metric("modelrollout_shadow_comparisons_total", model="iris", version="2") == 10


def test_a_baseline_is_sent_each_copy_with_the_shadow_and_timed_on_the_same_path(
    start_router: Callable[..., Router], models: Models, fake_servers: Callable[..., FakeServer]
) -> None:
    # The stable's baseline is a second server of the stable version: here one that takes 0.25 s and
    # then fails, so what the router records under role "baseline" can only have come from it.
    baseline = fake_servers(delay=0.25, status=500)
    router = start_router()
    body = routing(models.logistic.url, models.logistic.url, "shadow", shadow=100)
    body["baseline"] = {"version": "1", "url": baseline.url}
    router.put_routing(body)
    for i in range(6):
        answer = router.predict(rows(i * 5, 5))
        assert answer.status_code == 200 and answer.headers["x-model-role"] == "stable"
    wait_until(lambda: router.metric("modelrollout_requests_total", model="iris", version="1", role="baseline") == 6, what="6 baseline copies")
    assert baseline.received == 6 and _mirrored(router) == 6  # every copy went to both
    duration = lambda role, version: router.metric("modelrollout_request_duration_seconds_sum", model="iris", version=version, role=role)  # noqa: E731
    assert duration("baseline", "1") >= 6 * 0.25  # the baseline's own time, on the copy path
    assert duration("stable", "1") < 6 * 0.25  # not the client path's
    # Sent at the same moment, not one after the other: the shadow is not timed waiting for the baseline.
    assert duration("shadow", "2") < 6 * 0.25
    # A failing baseline is the baseline's error, never the stable's; the shadow still agrees with
    # what the stable answered the client.
    assert router.metric("modelrollout_request_errors_total", model="iris", version="1", role="baseline") == 6
    assert router.metric("modelrollout_request_errors_total", model="iris", version="1", role="stable") == 0
    assert router.metric("modelrollout_shadow_agreements_total", model="iris", version="2") == 30


def test_slow_shadow_never_delays_clients_and_full_queue_drops(
    start_router: Callable[..., Router], models: Models, fake_servers: Callable[..., FakeServer]
) -> None:
    shadow = fake_servers(delay=2.0)
    router = start_router("--mirror-workers", "1", "--mirror-queue-size", "2", "--shadow-timeout", "5")
    router.put_routing(routing(models.logistic.url, shadow.url, "shadow", shadow=100))
    router.predict(rows(0, 1))  # warm the connection to the stable
    latencies = []
    for i in range(20):
        started = time.perf_counter()
        answer = router.predict(rows(i, 1))
        latencies.append(time.perf_counter() - started)
        assert (
            answer.status_code == 200 and answer.json()["predictions"] == models.estimator.predict(rows(i, 1)).tolist()
        )
    print(
        f"\nclient latency with a 2 s shadow: max {max(latencies) * 1000:.1f} ms, "
        f"median {sorted(latencies)[10] * 1000:.1f} ms"
    )
    assert max(latencies) < 1.0, latencies  # a client waiting for the shadow would take >= 2 s
    dropped = router.metric("modelrollout_mirror_dropped_total", model="iris")
    depth = router.metric("modelrollout_mirror_queue_depth")
    # One copy in flight, two queued: the rest of the 21 are dropped (unless CI was so slow that
    # the shadow finished one meanwhile).
    assert dropped is not None and dropped >= 12, dropped
    assert depth is not None and depth <= 2
    shadow.delay = 0  # release the copy in flight; the queued ones follow at once
    wait_until(lambda: _mirrored(router) + dropped == 21, what="queued copies delivered")
    assert shadow.received == _mirrored(router)
    assert router.metric("modelrollout_request_errors_total", model="iris", version="2", role="shadow") == 0


def test_failing_or_hanging_shadow_is_counted_never_returned(
    start_router: Callable[..., Router], models: Models, fake_servers: Callable[..., FakeServer]
) -> None:
    shadow = fake_servers(status=500)
    router = start_router("--shadow-timeout", "0.3")
    router.put_routing(routing(models.logistic.url, shadow.url, "shadow", shadow=100))
    for i in range(5):
        answer = router.predict(rows(i, 2))
        assert answer.status_code == 200 and answer.headers["x-model-role"] == "stable"
    wait_until(lambda: _mirrored(router) == 5, what="5 mirrored requests")
    errors = lambda: router.metric("modelrollout_request_errors_total", model="iris", version="2", role="shadow")  # noqa: E731
    assert errors() == 5
    # A shadow that cannot answer agrees on nothing.
    assert router.metric("modelrollout_shadow_comparisons_total", model="iris", version="2") == 10
    assert router.metric("modelrollout_shadow_agreements_total", model="iris", version="2") == 0

    shadow.status, shadow.delay = 200, 3.0  # now it hangs past the 0.3 s shadow timeout
    for i in range(3):
        started = time.perf_counter()
        assert router.predict(rows(i, 1)).status_code == 200
        assert time.perf_counter() - started < 1.0
    wait_until(lambda: _mirrored(router) == 8, what="3 more mirrored requests")
    assert errors() == 8
    assert router.metric("modelrollout_request_errors_total", model="iris", version="1", role="stable") == 0


# --- upstream failures --------------------------------------------------------------------------------


def test_unreachable_and_slow_upstreams_are_502_and_504(
    start_router: Callable[..., Router], fake_servers: Callable[..., FakeServer]
) -> None:
    router = start_router("--upstream-timeout", "0.5")
    nobody = f"http://127.0.0.1:{free_port()}"
    router.put_routing(routing(nobody))
    answer = router.predict(rows(0, 1))
    assert answer.status_code == 502
    assert "version 1 (stable)" in answer.json()["error"] and nobody in answer.json()["error"]
    assert answer.headers["x-model-version"] == "1"

    slow = fake_servers(delay=2.0)
    router.put_routing(routing(slow.url))
    started = time.perf_counter()
    answer = router.predict(rows(0, 1))
    assert answer.status_code == 504
    assert time.perf_counter() - started < 1.8
    assert "timed out" in answer.json()["error"]

    failing = fake_servers(status=503)
    router.put_routing(routing(failing.url))
    assert router.predict(rows(0, 1)).status_code == 503
    assert router.metric("modelrollout_request_errors_total", model="iris", version="1", role="stable") == 3
    assert router.metric("modelrollout_requests_total", model="iris", version="1", role="stable") == 3


# --- feedback -------------------------------------------------------------------------------------------


def test_feedback_scores_every_version_that_answered(start_router: Callable[..., Router], models: Models) -> None:
    router = start_router()
    features, labels = iris()
    router.put_routing(routing(models.logistic.url, models.constant.url, "shadow", shadow=100))
    ids = [f"fb-{uuid.uuid4().hex[:8]}-{i}" for i in range(16)]
    for i, request_id in enumerate(ids[:15]):
        assert router.predict(rows(i * 10, 10), request_id=request_id).status_code == 200
    assert router.predict(rows(149, 1), request_id=ids[15]).status_code == 200
    wait_until(lambda: _mirrored(router) == 16, what="16 mirrored requests")

    def feedback(version: str, role: str) -> tuple[float | None, float | None]:
        labels_ = {"model": "iris", "version": version, "role": role}
        return (
            router.metric("modelrollout_feedback_total", **labels_),
            router.metric("modelrollout_feedback_correct_total", **labels_),
        )

    batch = {"items": [{"requestId": ids[i], "labels": labels[i * 10 : i * 10 + 10].tolist()} for i in range(10)]}
    answer = router.feedback(batch)
    assert answer.status_code == 200, answer.text
    scored = answer.json()["scored"]
    assert [s["requestId"] for s in scored] == ids[:10]
    assert {(v["version"], v["role"]) for v in scored[0]["versions"]} == {("1", "stable"), ("2", "shadow")}
    single = router.feedback({"requestId": ids[10], "labels": labels[100:110].tolist()})
    assert single.status_code == 200, single.text
    one = router.feedback({"requestId": ids[15], "label": int(labels[149])})
    assert one.status_code == 200, one.text

    scored_rows = [*range(110), 149]
    truth = labels[scored_rows]
    stable_right = int((models.estimator.predict(features[scored_rows]) == truth).sum())
    assert feedback("1", "stable") == (111, stable_right)
    assert feedback("2", "shadow") == (111, int((truth == 0).sum()))

    # Bad feedback: nothing more is counted.
    unknown = router.feedback({"requestId": "never-seen", "label": 1})
    assert unknown.status_code == 404 and "'never-seen'" in unknown.json()["error"]
    partly_unknown = router.feedback(
        {"items": [{"requestId": ids[11], "labels": labels[110:120].tolist()}, {"requestId": "nope-2", "label": 0}]}
    )
    assert partly_unknown.status_code == 404 and "'nope-2'" in partly_unknown.json()["error"]
    mismatch = router.feedback({"requestId": ids[11], "labels": [0, 1]})
    assert mismatch.status_code == 400 and "10 instance(s)" in mismatch.json()["error"]
    again = router.feedback({"requestId": ids[0], "labels": labels[:10].tolist()})
    assert again.status_code == 409
    for body, field_name in (
        ({"label": 1}, "requestId"),
        ({"requestId": ids[12]}, "items.0"),
        ({"requestId": ids[12], "label": 1, "labels": [1]}, "items.0"),
        ({"requestId": ids[12], "labels": []}, "items.0"),
        ({"items": []}, "items"),
        ({"items": [{"requestId": ids[12], "label": 1}], "requestId": ids[13]}, "body"),
        ({"requestId": ids[12], "label": 1, "weight": 2}, "weight"),
    ):
        invalid = router.feedback(body)
        assert invalid.status_code == 422, (body, invalid.text)
        assert any(field_name in f for f in invalid.json()["fields"]), (body, invalid.json())
    assert feedback("1", "stable") == (111, stable_right)
    assert feedback("2", "shadow") == (111, int((truth == 0).sum()))


def test_feedback_for_canary_traffic(start_router: Callable[..., Router], models: Models) -> None:
    router = start_router()
    features, labels = iris()
    router.put_routing(routing(models.logistic.url, models.constant.url, "canary", weight=50))
    served: dict[str, list[int]] = {"1": [], "2": []}
    for i in range(20):
        request_id = f"canary-{i}"
        answer = router.predict(rows(i * 7, 1), request_id=request_id)
        served[answer.headers["x-model-version"]].append(i * 7)
        assert router.feedback({"requestId": request_id, "label": int(labels[i * 7])}).status_code == 200
    assert len(served["2"]) == 10
    assert router.metric("modelrollout_feedback_total", model="iris", version="2", role="canary") == 10
    assert router.metric("modelrollout_feedback_correct_total", model="iris", version="2", role="canary") == sum(
        1 for r in served["2"] if labels[r] == 0
    )
    assert router.metric("modelrollout_feedback_correct_total", model="iris", version="1", role="stable") == sum(
        1 for r in served["1"] if models.estimator.predict(features[r : r + 1])[0] == labels[r]
    )


def test_late_shadow_answer_is_scored_on_arrival(
    start_router: Callable[..., Router], fake_servers: Callable[..., FakeServer]
) -> None:
    stable = fake_servers(prediction=1)
    shadow = fake_servers(prediction=1, delay=0.5)
    router = start_router()
    router.put_routing(routing(stable.url, shadow.url, "shadow", shadow=100))
    assert router.predict([[1, 2, 3, 4]] * 3, request_id="late-1").status_code == 200
    # The labels arrive before the shadow has answered.
    assert router.feedback({"requestId": "late-1", "labels": [1, 1, 2]}).status_code == 200
    assert router.metric("modelrollout_feedback_correct_total", model="iris", version="1", role="stable") == 2
    wait_until(
        lambda: (router.metric("modelrollout_feedback_total", model="iris", version="2", role="shadow") or 0) == 3,
        what="late shadow scored",
    )
    assert router.metric("modelrollout_feedback_correct_total", model="iris", version="2", role="shadow") == 2


def test_feedback_memory_is_bounded(
    start_router: Callable[..., Router], fake_servers: Callable[..., FakeServer]
) -> None:
    stable = fake_servers(prediction=0)
    router = start_router("--feedback-max-entries", "3")
    router.put_routing(routing(stable.url))
    for name in "abcde":
        router.predict([[1, 2, 3, 4]], request_id=f"id-{name}")
    # Pushed out by the entry limit before its label came: taken, counted late, not scored.
    evicted = router.feedback({"requestId": "id-a", "label": 0})
    assert evicted.status_code == 200, evicted.text
    assert evicted.json()["scored"] == []
    assert [(late["requestId"], late["reason"]) for late in evicted.json()["late"]] == [("id-a", "evicted")]
    assert evicted.json()["late"][0]["versions"] == [{"version": "1", "role": "stable", "labels": 1}]
    labels = {"model": "iris", "version": "1", "role": "stable"}
    assert router.metric("modelrollout_feedback_late_labels_total", reason="evicted", **labels) == 1
    assert router.metric("modelrollout_feedback_total", **labels) == 0
    assert router.feedback({"requestId": "id-a", "label": 0}).status_code == 409  # counted once
    assert router.feedback({"requestId": "id-c", "label": 0}).status_code == 200
    assert router.metric("modelrollout_feedback_total", **labels) == 1
    unknown = router.feedback({"requestId": "id-z", "label": 0})
    assert unknown.status_code == 404 and "'id-z'" in unknown.json()["error"]


# --- body size ---------------------------------------------------------------------------------------------


def test_oversized_bodies_are_413_on_every_endpoint(
    start_router: Callable[..., Router], fake_servers: Callable[..., FakeServer]
) -> None:
    stable = fake_servers()
    router = start_router("--max-body-bytes", "2048")
    assert router.put_routing(routing(stable.url)).status_code == 200
    big = b'{"instances": [' + b"[1, 2, 3, 4]," * 300 + b"[1, 2, 3, 4]]}"
    json_header = {"content-type": "application/json"}
    for method, path in (
        ("POST", "/v1/models/iris:predict"),
        ("POST", "/v2/models/iris/infer"),
        ("PUT", "/admin/routing"),
        ("POST", "/feedback"),
    ):
        answer = router.http.request(method, router.url + path, content=big, headers=json_header)
        assert answer.status_code == 413, (path, answer.text)
        assert "2048 bytes" in answer.json()["error"]

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit must count what arrives
        yield b'{"instances": ['
        for _ in range(300):
            yield b"[1, 2, 3, 4],"
        yield b"[1, 2, 3, 4]]}"

    chunked = router.http.post(router.url + "/v1/models/iris:predict", content=chunks(), headers=json_header)
    assert chunked.status_code == 413
    assert router.predict([[1, 2, 3, 4]] * 10).status_code == 200
    assert stable.received == 1


# --- the contract with canary/decision/templates.py ------------------------------------------------------------


def test_local_templates_read_the_router_through_prometheus(
    start_router: Callable[..., Router], models: Models, prometheus_server: Any
) -> None:
    """Every `local` template, rendered as the analysis renders it, finds the router's series."""
    import math

    from canary.decision import templates
    from canary.decision.metrics import render
    from controller.local.prometheus_server import remove_targets, write_targets
    from tests.fixtures.prometheus import query, wait_for_target_up

    _, labels = iris()
    router = start_router()
    target = router.url.removeprefix("http://")
    write_targets(prometheus_server.data_dir, "router-contract", [target], {})
    try:
        wait_for_target_up(prometheus_server.url, target)

        def traffic(phase: str, seconds: float) -> None:
            # Spread over several 1 s scrapes, so increase() and rate() have points to work on.
            deadline, i = time.monotonic() + seconds, 0
            while time.monotonic() < deadline:
                request_id = f"{phase}-{i}"
                row = i * 7 % 150  # every class in every few requests
                router.predict(rows(row, 1), request_id=request_id)
                time.sleep(0.02)
                router.feedback({"requestId": request_id, "label": int(labels[row])})
                i += 1

        def evaluate(phase: str, role: str, expect: dict[str, Callable[[float], bool]]) -> None:
            for name, template in templates.LOCAL.items():
                # The quality templates need probability and regression answers, which these
                # models do not give: test_quality_templates_read_the_router_through_prometheus.
                if phase not in template.phases or name in templates.QUALITY:
                    continue
                sides = [("2", role)] + ([("1", "stable")] if template.has_baseline else [])
                for version, side_role in sides:
                    variables = {
                        "rollout": "r-test",
                        "model": "iris",
                        "version": version,
                        "role": side_role,
                        "interval": "1m",
                        "stable_version": "1",
                        "candidate_version": "2",
                        "namespace": "",
                    }
                    values = []
                    for promql in filter(None, (template.query, template.samples)):
                        result = query(prometheus_server.url, render(promql, variables))
                        assert len(result) == 1, (name, version, promql, result)
                        values.append(float(result[0]["value"][1]))
                        assert math.isfinite(values[-1]), (name, version, values)
                    if name in expect and version == "2":
                        assert expect[name](values[0]), (name, values[0])

        router.put_routing(routing(models.logistic.url, models.logistic.url, "shadow", shadow=100))
        traffic("shadow", 3.0)
        wait_until(
            lambda: bool(query(prometheus_server.url, 'modelrollout_shadow_comparisons_total{rollout="r-test"} > 50')),
            what="comparisons scraped",
        )
        time.sleep(1.5)  # one more scrape with the final values
        evaluate(
            "shadow",
            "shadow",
            {
                "shadow_agreement": lambda v: v == 1.0,
                "error_rate": lambda v: v == 0.0,
                "accuracy": lambda v: v > 0.9,
                "latency_p50": lambda v: 0 < v < 1.0,
            },
        )

        router.put_routing(routing(models.logistic.url, models.constant.url, "canary", weight=50))
        traffic("canary", 3.0)
        wait_until(
            lambda: bool(
                query(prometheus_server.url, 'modelrollout_feedback_total{rollout="r-test",role="canary"} > 20')
            ),
            what="canary feedback scraped",
        )
        time.sleep(1.5)
        evaluate(
            "canary",
            "canary",
            {
                "accuracy": lambda v: v < 0.8,  # the constant model is right on class 0 only
                "error_rate": lambda v: v == 0.0,
            },
        )
    finally:
        remove_targets(prometheus_server.data_dir, "router-contract")


# --- quality signals: calibration, regression, label lag, drift ------------------------------------


@dataclass(frozen=True)
class QualityModels:
    proba: Process  # a LogisticRegression on iris answering predict_proba: [[p0, p1, p2], ...]
    regressor: Process  # a LinearRegression of the class index on the four features: floats
    classifier: Any
    regression: Any


@pytest.fixture(scope="module")
def quality_models(tmp_path_factory: pytest.TempPathFactory) -> Iterator[QualityModels]:
    import mlflow.sklearn
    from sklearn.linear_model import LinearRegression

    base = tmp_path_factory.mktemp("quality-models")
    features, labels = iris()
    classifier = fit_logistic()
    mlflow.sklearn.save_model(
        classifier, str(base / "proba"), serialization_format="cloudpickle", pyfunc_predict_fn="predict_proba",
        pip_requirements=pip_requirements(),
    )
    regression = LinearRegression().fit(features, labels.astype(float))
    regressor_path = save_sklearn(regression, base / "regressor")
    proba, regressor = start_model_servers([("iris", base / "proba", "1"), ("iris", regressor_path, "1")], base)
    yield QualityModels(proba, regressor, classifier, regression)
    proba.stop()
    regressor.stop()


def _labelled(router: Router, name: str) -> dict[str, float]:
    """{label value: sample value} of one series family with one extra label, for version 1 stable."""
    text = router.http.get(router.url + "/metrics").text
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name:
                key = s.labels.get("class") or s.labels.get("bin") or s.labels.get("le") or ""
                out[f'{s.labels["version"]}/{s.labels["role"]}/{key}'] = s.value
    return out


def _bins(confidence: Any) -> Any:
    import numpy as np

    # (0, 0.1] -> 0 ... (0.9, 1] -> 9, as canary.traffic.calibration; no confidence here sits on an edge.
    return np.clip(np.ceil(np.asarray(confidence) * 10).astype(int) - 1, 0, 9)


def test_probability_answers_are_calibrated_scored_by_top_class_and_counted_by_class(
    start_router: Callable[..., Router], models: Models, quality_models: QualityModels
) -> None:
    import numpy as np

    router = start_router()
    router.put_routing(routing(quality_models.proba.url, models.constant.url, "shadow", shadow=100))
    features, labels = iris()
    probs: list[list[float]] = []
    truth: list[int] = []
    for r in range(5):  # V1: five requests of ten rows
        picked = list(range(r, 150, 15))[:10]
        answer = router.predict(features[picked].tolist(), request_id=f"p-{r}")
        assert answer.status_code == 200
        probs += answer.json()["predictions"]
        truth += labels[picked].tolist()
    v2 = router.http.post(
        router.url + "/v2/models/iris/infer",
        json={"inputs": [{"name": "x", "shape": [5, 4], "datatype": "FP64", "data": features[100:105].tolist()}]},
        headers={"x-request-id": "p-v2"},
    )
    assert v2.status_code == 200 and v2.json()["outputs"][0]["shape"] == [5, 3]
    probs += np.asarray(v2.json()["outputs"][0]["data"]).reshape(5, 3).tolist()
    truth += labels[100:105].tolist()
    wait_until(lambda: _mirrored(router) == 6, what="6 mirrored requests")
    items = [{"requestId": f"p-{r}", "labels": truth[r * 10 : r * 10 + 10]} for r in range(5)]
    answer = router.feedback({"items": [*items, {"requestId": "p-v2", "labels": truth[50:]}]})
    assert answer.status_code == 200, answer.text
    assert answer.json()["late"] == [] and len(answer.json()["scored"]) == 6

    p, y = np.asarray(probs), np.asarray(truth)
    top = p.argmax(axis=1)
    brier = ((p - np.eye(3)[y]) ** 2).sum(axis=1)
    stable = {"model": "iris", "version": "1", "role": "stable"}
    shadow = {"model": "iris", "version": "2", "role": "shadow"}
    # Accuracy and agreement by the top class: the constant shadow agrees where the stable says 0.
    assert router.metric("modelrollout_feedback_total", **stable) == 55
    assert router.metric("modelrollout_feedback_correct_total", **stable) == int((top == y).sum())
    assert router.metric("modelrollout_feedback_correct_total", **shadow) == int((y == 0).sum())
    assert router.metric("modelrollout_shadow_comparisons_total", model="iris", version="2") == 55
    assert router.metric("modelrollout_shadow_agreements_total", model="iris", version="2") == int((top == 0).sum())
    # Calibration of the stable's probabilities; the label-only shadow has none.
    assert router.metric("modelrollout_feedback_brier_score_count", **stable) == 55
    assert router.metric("modelrollout_feedback_brier_score_sum", **stable) == pytest.approx(brier.sum())
    assert router.metric("modelrollout_feedback_brier_score_count", **shadow) == 0
    which = _bins(p.max(axis=1))
    count = _labelled(router, "modelrollout_feedback_calibration_total")
    confidence = _labelled(router, "modelrollout_feedback_calibration_confidence_total")
    correct = _labelled(router, "modelrollout_feedback_calibration_correct_total")
    for b in range(10):
        key = f"1/stable/{(b + 1) / 10:.1f}"
        assert count[key] == (which == b).sum(), key
        assert confidence[key] == pytest.approx(p.max(axis=1)[which == b].sum()), key
        assert correct[key] == (top == y)[which == b].sum(), key
    assert sum(v for k, v in count.items() if k.startswith("2/shadow/")) == 0
    # Drift counters: the stable's top classes, the shadow's constant 0.
    classes = _labelled(router, "modelrollout_predictions_total")
    assert {k: v for k, v in classes.items() if k.startswith("1/")} == {
        "1/stable/0": (top == 0).sum(), "1/stable/1": (top == 1).sum(), "1/stable/2": (top == 2).sum(),
        "1/stable/__other__": 0,
    }  # fmt: skip
    assert {k: v for k, v in classes.items() if k.startswith("2/")} == {
        "2/shadow/0": 55, "2/shadow/1": 0, "2/shadow/2": 0, "2/shadow/__other__": 0,
    }  # fmt: skip
    # Every version that answered a request observed one label lag per labelled request.
    assert router.metric("modelrollout_feedback_label_lag_seconds_count", **stable) == 6
    assert router.metric("modelrollout_feedback_label_lag_seconds_count", **shadow) == 6


def test_labels_a_probability_model_cannot_index(
    start_router: Callable[..., Router], quality_models: QualityModels
) -> None:
    router = start_router()
    router.put_routing(routing(quality_models.proba.url))
    features, _ = iris()
    probs = router.predict(features[[0, 60, 120, 10]].tolist(), request_id="odd").json()["predictions"]
    for body, status in (
        ({"requestId": "odd", "labels": {"a": 1}}, 422),
        ({"requestId": "odd", "labels": [0, 1]}, 400),
        ({"requestId": "odd", "labels": "0123"}, 422),
    ):
        assert router.feedback(body).status_code == status, body
    # A class name, a class beyond the vector, an index as a float, no label at all.
    answer = router.feedback({"requestId": "odd", "labels": ["setosa", 7, 2.0, None]})
    assert answer.status_code == 200, answer.text
    stable = {"model": "iris", "version": "1", "role": "stable"}
    assert router.metric("modelrollout_feedback_total", **stable) == 4
    top_120 = max(range(3), key=lambda k: probs[2][k])
    assert router.metric("modelrollout_feedback_correct_total", **stable) == int(top_120 == 2)
    # Only 7 and 2.0 are class indices; 7 had probability 0, which adds 1.
    expected = sum(q * q for q in probs[1]) + 1 + sum((q - (k == 2)) ** 2 for k, q in enumerate(probs[2]))
    assert router.metric("modelrollout_feedback_brier_score_count", **stable) == 2
    assert router.metric("modelrollout_feedback_brier_score_sum", **stable) == pytest.approx(expected)


def test_regression_answers_give_values_relative_errors_and_tolerant_agreement(
    start_router: Callable[..., Router], quality_models: QualityModels, fake_servers: Callable[..., FakeServer]
) -> None:
    import numpy as np

    regression = quality_models.regression
    shifted = fake_servers(answer=lambda rows: [float(v) + 0.05 for v in regression.predict(np.asarray(rows))])
    bounds = (-0.5, 0.0, 0.5, 1.0, 1.5, 2.0, 2.5)
    router = start_router(
        # "=": argparse would read a value starting with "-" as an option.
        "--rel-tolerance", "0.05", "--abs-tolerance", "0", "--prediction-buckets=" + ",".join(map(str, bounds))
    )
    router.put_routing(routing(quality_models.regressor.url, shifted.url, "shadow", shadow=100))
    features, labels = iris()
    values: list[float] = []
    for r in range(6):
        answer = router.predict(features[r * 25 : r * 25 + 25].tolist(), request_id=f"reg-{r}")
        assert answer.status_code == 200
        values += answer.json()["predictions"]
    wait_until(lambda: _mirrored(router) == 6, what="6 mirrored requests")
    stable_values = np.asarray(values)
    assert stable_values.dtype == float and stable_values.min() < 0 < stable_values.max()
    shadow_values = regression.predict(features) + 0.05
    relative = np.abs(shadow_values - stable_values) / np.maximum(np.abs(shadow_values), np.abs(stable_values))
    agreed = int((relative <= 0.05).sum())
    assert 50 < agreed < 140  # the +0.05 shift is within 5% only for values above about 1
    assert router.metric("modelrollout_shadow_comparisons_total", model="iris", version="2") == 150
    assert router.metric("modelrollout_shadow_agreements_total", model="iris", version="2") == agreed
    text = router.http.get(router.url + "/metrics").text
    buckets = {
        s.labels["le"]: s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "modelrollout_shadow_relative_error_bucket"
    }
    for le in ("0.01", "0.05", "0.1", "0.5", "2.0"):
        assert buckets[le] == (relative <= float(le)).sum(), le
    # The value histograms, on the router's --prediction-buckets.
    histogram = _labelled(router, "modelrollout_prediction_value_bucket")
    for bound in bounds:
        assert histogram[f"1/stable/{bound}"] == (stable_values <= bound).sum(), bound
        assert histogram[f"2/shadow/{bound}"] == (shadow_values <= bound).sum(), bound
    assert histogram["1/stable/+Inf"] == histogram["2/shadow/+Inf"] == 150
    assert all(not k.startswith(("1/", "2/")) or v == 0 for k, v in _labelled(router, "modelrollout_predictions_total").items())
    # Ground truth for a regression: right when within the same relative tolerance.
    truth = labels.astype(float)
    items = [{"requestId": f"reg-{r}", "labels": truth[r * 25 : r * 25 + 25].tolist()} for r in range(6)]
    assert router.feedback({"items": items}).status_code == 200
    within = np.abs(stable_values - truth) <= 0.05 * np.maximum(np.abs(stable_values), np.abs(truth))
    assert router.metric("modelrollout_feedback_correct_total", model="iris", version="1", role="stable") == int(
        within.sum()
    )


def test_bad_quality_options_are_refused(tmp_path: Path) -> None:
    import subprocess
    import sys

    for args, needle in (
        (["--prediction-buckets", "1,1"], "increase strictly"),
        (["--prediction-buckets", "a,b"], "--prediction-buckets"),
        (["--max-classes", "0"], "--max-classes must be at least 1"),
        (["--rel-tolerance", "-0.1"], "--rel-tolerance must be 0 or more"),
    ):
        done = subprocess.run(
            [sys.executable, "-m", "canary.traffic.router", "--rollout", "r", "--port", "1", *args],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 2 and needle in done.stderr, (args, done.stderr)


def test_label_lag_and_labels_that_come_too_late(
    start_router: Callable[..., Router], fake_servers: Callable[..., FakeServer]
) -> None:
    stable = fake_servers(prediction=1)
    shadow = fake_servers(prediction=2)
    router = start_router("--feedback-ttl", "3")
    router.put_routing(routing(stable.url, shadow.url, "shadow", shadow=100))
    sent = time.monotonic()
    assert router.predict([[1, 2, 3, 4]], request_id="soon").status_code == 200
    assert router.predict([[1, 2, 3, 4]] * 2, request_id="late").status_code == 200
    wait_until(lambda: _mirrored(router) == 2, what="2 mirrored requests")
    time.sleep(max(0.0, sent + 1.1 - time.monotonic()))
    soon = router.feedback({"requestId": "soon", "label": 1})
    assert soon.status_code == 200, soon.text
    assert 1.05 <= soon.json()["scored"][0]["lagSeconds"] < 3.0

    time.sleep(max(0.0, sent + 3.2 - time.monotonic()))  # past the 3 s TTL
    wrong = router.feedback({"requestId": "late", "labels": [1]})
    assert wrong.status_code == 400 and "2 instance(s)" in wrong.json()["error"]
    late = router.feedback({"items": [{"requestId": "late", "labels": [1, 2]}]})
    assert late.status_code == 200, late.text
    (entry,) = late.json()["late"]
    assert (entry["requestId"], entry["reason"]) == ("late", "expired") and entry["lagSeconds"] >= 3.0
    assert {(v["version"], v["role"], v["labels"]) for v in entry["versions"]} == {("1", "stable", 2), ("2", "shadow", 2)}
    assert router.feedback({"requestId": "late", "labels": [1, 2]}).status_code == 409
    assert router.feedback({"requestId": "never", "labels": [1, 2]}).status_code == 404

    for version, role, right in (("1", "stable", 1), ("2", "shadow", 0)):
        labels = {"model": "iris", "version": version, "role": role}
        assert router.metric("modelrollout_feedback_late_labels_total", reason="expired", **labels) == 2
        assert router.metric("modelrollout_feedback_late_labels_total", reason="evicted", **labels) == 0
        assert router.metric("modelrollout_feedback_total", **labels) == 1  # the late ones are not scored
        assert router.metric("modelrollout_feedback_correct_total", **labels) == right
        lag = {le: router.metric("modelrollout_feedback_label_lag_seconds_bucket", le=le, **labels) for le in ("1.0", "2.0", "5.0")}
        assert lag == {"1.0": 0, "2.0": 1, "5.0": 2}, (version, lag)


def test_predicted_classes_are_capped(
    start_router: Callable[..., Router], fake_servers: Callable[..., FakeServer]
) -> None:
    many = fake_servers(answer=lambda rows: [f"class-{int(row[0])}" for row in rows])
    router = start_router("--max-classes", "3")
    router.put_routing(routing(many.url))
    assert router.predict([[i, 0, 0, 0] for i in range(10)]).status_code == 200
    assert router.predict([[0, 0, 0, 0], [9, 0, 0, 0], [1, 0, 0, 0]]).status_code == 200
    assert _labelled(router, "modelrollout_predictions_total") == {
        "1/stable/class-0": 2, "1/stable/class-1": 2, "1/stable/class-2": 1, "1/stable/__other__": 8,
    }  # fmt: skip
    # A candidate added later gets exactly the tracked classes, at 0.
    router.put_routing(routing(many.url, many.url, "canary", weight=0))
    assert {k: v for k, v in _labelled(router, "modelrollout_predictions_total").items() if k.startswith("2/")} == {
        "2/canary/class-0": 0, "2/canary/class-1": 0, "2/canary/class-2": 0, "2/canary/__other__": 0,
    }  # fmt: skip


def test_quality_templates_read_the_router_through_prometheus(
    start_router: Callable[..., Router],
    quality_models: QualityModels,
    fake_servers: Callable[..., FakeServer],
    prometheus_server: Any,
) -> None:
    """Every quality template, rendered as the analysis renders it, on two real routers' series.

    One router serves probabilities (stable: the logistic model; shadow: a prior that says 1/3
    for every class), one serves regression values (stable: the linear model; shadow: the same
    shifted by 0.3). The drift templates equal tests/reference/drift.py on the DISTRIBUTIONS vectors.
    """
    import numpy as np

    from canary.decision import templates
    from canary.decision.metrics import PrometheusProvider, render
    from controller.local.prometheus_server import remove_targets, write_targets
    from tests.fixtures.prometheus import query, wait_for_target_up
    from tests.reference import drift

    _, labels = iris()
    regression = quality_models.regression
    prior = fake_servers(answer=lambda rows: [[1 / 3, 1 / 3, 1 / 3]] * len(rows))
    shifted = fake_servers(answer=lambda rows: [float(v) + 0.3 for v in regression.predict(np.asarray(rows))])
    suffix = uuid.uuid4().hex[:6]
    by_router = {"classes": f"q-classes-{suffix}", "values": f"q-values-{suffix}"}
    # 8 requests remembered: of each round of 10, the first two are evicted before their labels.
    classes = start_router("--rollout", by_router["classes"], "--feedback-max-entries", "8")
    values = start_router("--rollout", by_router["values"])
    url = prometheus_server.url
    targets = [r.url.removeprefix("http://") for r in (classes, values)]
    write_targets(prometheus_server.data_dir, "router-quality", targets, {})
    provider = PrometheusProvider(url)
    try:
        for target in targets:
            wait_for_target_up(url, target)
        classes.put_routing(routing(quality_models.proba.url, prior.url, "shadow", shadow=100))
        values.put_routing(routing(quality_models.regressor.url, shifted.url, "shadow", shadow=100))
        for rollout in by_router.values():  # the zeros are scraped before any traffic
            wait_until(
                lambda r=rollout: bool(query(url, f'modelrollout_requests_total{{rollout="{r}",role="shadow"}}')),
                what=f"{rollout} scraped",
            )

        scored_probs: list[list[float]] = []
        scored_truth: list[int] = []
        deadline, round_ = time.monotonic() + 3.0, 0
        while time.monotonic() < deadline:
            sent = []
            for k in range(10):
                row = (round_ * 10 + k) * 7 % 150
                answer = classes.predict(rows(row, 1), request_id=f"c{round_}-{k}")
                sent.append((f"c{round_}-{k}", row, answer.json()["predictions"][0]))
                values.predict(rows(row, 1), request_id=f"v{round_}-{k}")
            wait_until(
                lambda n=round_: _labelled_total(classes, by_router["classes"], "modelrollout_requests_total", "shadow")
                == 10 * (n + 1),
                what="mirrored",
            )
            for k, (request_id, row, probs) in enumerate(sent):
                answer = classes.feedback({"requestId": request_id, "label": int(labels[row])})
                assert answer.status_code == 200 and bool(answer.json()["late"]) == (k < 2), answer.text
                if k >= 2:
                    scored_probs.append(probs)
                    scored_truth.append(int(labels[row]))
                assert values.feedback({"requestId": f"v{round_}-{k}", "label": float(labels[row])}).status_code == 200
            round_ += 1
            time.sleep(0.1)  # spread over several scrapes

        final_scored = _labelled_total(classes, by_router["classes"], "modelrollout_feedback_total")
        final_values = _labelled_total(values, by_router["values"], "modelrollout_prediction_value_count", role="shadow")
        assert final_scored == 8 * round_
        wait_until(
            lambda: _scraped(url, by_router["classes"], "modelrollout_feedback_total", "stable") == final_scored
            and _scraped(url, by_router["values"], "modelrollout_prediction_value_count", "shadow") == final_values,
            what="final values scraped",
        )
        at = time.time()

        def variables(name: str, version: str, role: str) -> dict[str, str]:
            return {
                "rollout": by_router[name], "model": "iris", "namespace": "", "version": version, "role": role,
                "interval": "1m", "stable_version": "1", "candidate_version": "2",
            }  # fmt: skip

        values_templates = {"prediction_ks", "shadow_relative_error_p50", "shadow_relative_error_p95"}
        got: dict[tuple[str, str], float] = {}
        for name, template in templates.QUALITY.items():
            where = "values" if name in values_templates else "classes"
            sides = [("2", "shadow")] + ([("1", "stable")] if template.has_baseline else [])
            for version, role in sides:
                bound = variables(where, version, role)
                value = provider.query_value(render(template.query, bound), at=at)
                samples = provider.query_value(render(template.samples or "", bound), at=at)
                assert value is not None and math.isfinite(value), (name, version, value)
                assert samples is not None and samples > 0, (name, version, samples)
                got[(name, version)] = value
        assert {name for name, _ in got} == set(templates.QUALITY)

        p, y = np.asarray(scored_probs), np.asarray(scored_truth)
        confidence, top = p.max(axis=1), p.argmax(axis=1)
        which = _bins(confidence)
        ece = sum(abs((top == y)[which == b].sum() - confidence[which == b].sum()) for b in range(10)) / len(y)
        assert got[("brier_score", "1")] == pytest.approx(((p - np.eye(3)[y]) ** 2).sum(axis=1).mean(), rel=1e-6)
        assert got[("brier_score", "2")] == pytest.approx(2 / 3, rel=1e-6)  # (2/3)^2 + 2 (1/3)^2 for any label
        assert got[("calibration_error", "1")] == pytest.approx(ece, rel=1e-6, abs=1e-9)
        assert 0 <= got[("calibration_error", "2")] <= 1
        assert got[("late_label_rate", "1")] == pytest.approx(0.2, rel=1e-6)  # 2 of every 10
        assert got[("late_labels", "1")] >= 2 * round_
        for version in ("1", "2"):
            assert 0 < got[("label_lag_p50", version)] <= got[("label_lag_p95", version)] <= 5.0  # sent at once
        assert 0 < got[("shadow_relative_error_p50", "2")] <= got[("shadow_relative_error_p95", "2")] <= 2
        # Drift: the prior always says class 0; the shifted values move mass across bounds.
        assert got[("prediction_psi", "2")] > 1
        assert 0.05 < got[("prediction_ks", "2")] < 1

        def vector(name: str, which: str, version: str, role: str) -> dict[str, float]:
            spec = templates.DISTRIBUTIONS[name]
            result = query(url, render(spec.query, variables(which, version, role)), at=at)
            return {s["metric"][spec.by]: float(s["value"][1]) for s in result}

        base, cand = vector("prediction_classes", "classes", "1", "stable"), vector("prediction_classes", "classes", "2", "shadow")
        assert set(base) == set(cand) == {"0", "1", "2", "__other__"}
        assert got[("prediction_psi", "2")] == pytest.approx(drift.class_psi(base, cand), rel=1e-9)
        assert drift.class_chi_square(base, cand).pvalue < 1e-6
        base_values = drift.Binned.from_le(vector("prediction_values", "values", "1", "stable"))
        cand_values = drift.Binned.from_le(vector("prediction_values", "values", "2", "shadow"))
        assert got[("prediction_ks", "2")] == pytest.approx(drift.ks_statistic(base_values, cand_values), abs=1e-9)
        assert drift.ks_test(base_values, cand_values).pvalue < 0.05
        assert drift.binned_psi(base_values, cand_values) > 0

        # A version with no traffic yet: no value, zero samples (its series exist at 0).
        classes.put_routing(routing(quality_models.proba.url, prior.url, "shadow", shadow=0, candidate_version="3"))
        values.put_routing(routing(quality_models.regressor.url, shifted.url, "shadow", shadow=0, candidate_version="3"))
        for name in by_router:
            check = templates.QUALITY["late_label_rate" if name == "classes" else "prediction_ks"].samples or ""
            wait_until(
                lambda n=name, q=check: provider.query_value(render(q, variables(n, "3", "shadow"))) == 0.0,
                what="idle version scraped twice",
            )
        for name, template in templates.QUALITY.items():
            bound = variables("values" if name in values_templates else "classes", "3", "shadow")
            # A count of late labels is 0; every ratio, quantile and distance is 0/0: no data.
            expected = 0.0 if name == "late_labels" else None
            assert provider.query_value(render(template.query, bound)) == expected, name
            assert provider.query_value(render(template.samples or "", bound)) == 0.0, name
    finally:
        provider.close()
        remove_targets(prometheus_server.data_dir, "router-quality")


def _labelled_total(router: Router, rollout: str, name: str, role: str = "stable") -> float:
    text = router.http.get(router.url + "/metrics").text
    return sum(
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name and s.labels.get("rollout") == rollout and s.labels.get("role") == role
    )


def _scraped(url: str, rollout: str, name: str, role: str) -> float | None:
    from tests.fixtures.prometheus import query

    result = query(url, f'sum({name}{{rollout="{rollout}",role="{role}"}})')
    return float(result[0]["value"][1]) if result else None


def test_a_router_started_again_restores_the_routing_it_accepted(
    start_router: Callable[..., Router], fake_servers: Callable[..., FakeServer], tmp_path: Path
) -> None:
    """`--routing-file`: what a router restarted after a crash serves before any controller speaks."""
    stable = fake_servers(prediction=1)
    kept = tmp_path / "routing" / "r.router.json"
    first = start_router("--routing-file", str(kept))
    assert not kept.exists()  # nothing accepted, nothing kept
    sent = routing(stable.url)
    assert first.put_routing(sent).status_code == 200
    assert json.loads(kept.read_text()) == first.http.get(first.url + "/admin/routing").json()

    second = start_router("--routing-file", str(kept))
    assert second.http.get(second.url + "/readyz").status_code == 200  # serves at once
    assert second.predict([[1, 2, 3, 4]]).status_code == 200
    assert second.http.get(second.url + "/admin/routing").json() == json.loads(kept.read_text())

    kept.write_text("{not json")  # unreadable: starts as a router without routing, and says why
    third = start_router("--routing-file", str(kept))
    assert third.http.get(third.url + "/readyz").status_code == 503
    wait_until(lambda: "not restored" in third.proc.log_path.read_text(), what="the router to say why")
    assert third.put_routing(sent).status_code == 200 and json.loads(kept.read_text())["stable"]["url"] == stable.url
