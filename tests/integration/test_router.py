"""The rollout router as a real process, in front of real model servers.

Two real KServe model servers are started once for the module: a LogisticRegression (v1, the
stable) and a DummyClassifier that always answers class 0 (a different model for canary and
shadow). Behaviours that need an upstream to misbehave on cue (hang, 500) use small real
uvicorn servers in threads of this process. Each test starts its own router (~1 s) so counters
and routing never leak between tests.
"""

from __future__ import annotations

import asyncio
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
        proc = spawn("controller.local.router", ["--rollout", "r-test", *args], tmp_path, "router")
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
    """

    prediction: Any = 0
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

    applied = router.put_routing(routing(models.logistic.url))
    assert applied.status_code == 200, applied.text
    assert applied.json()["changed"] is True
    assert router.predict(rows(0, 1)).status_code == 200
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
    evicted = router.feedback({"requestId": "id-a", "label": 0})
    assert evicted.status_code == 404 and "'id-a'" in evicted.json()["error"]
    assert router.feedback({"requestId": "id-c", "label": 0}).status_code == 200


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


# --- the contract with canary/templates.py ------------------------------------------------------------


def test_local_templates_read_the_router_through_prometheus(
    start_router: Callable[..., Router], models: Models, prometheus_server: Any
) -> None:
    """Every `local` template, rendered as the analysis renders it, finds the router's series."""
    import math

    from canary import templates
    from canary.metrics import render
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
                if phase not in template.phases:
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
