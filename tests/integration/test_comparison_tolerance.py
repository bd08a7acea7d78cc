"""The comparison tolerance travels with each routing: a real router process and the shadow
comparator (real HTTP, uvicorn) compare a regression pair whose answers differ by 1 %.

The pair are two small real V1 servers in threads of this process: the stable answers
``1 + sum(row)`` per instance, the shadow the same times 1.01 (a relative difference of
0.01 / 1.01, about 0.99 %). With the default tolerance (1e-6) they never agree; with
``relativeTolerance: 0.05`` in the routing (or the shadow target) they always do, and going
back needs no restart.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI, Request
from prometheus_client.parser import text_string_to_metric_families

from canary.traffic.comparator import REQUEST_EVENT, RESPONSE_EVENT, ComparatorSettings, create_app
from tests.fixtures.modelserver import Process, free_port, spawn

TIMEOUT = 15.0
ROWS = [[5.1, 3.5, 1.4, 0.2], [6.2, 2.9, 4.3, 1.3], [7.7, 3.0, 6.1, 2.3], [0.5, -1.0, 0.25, 0.0]]


def wait_until(check: Callable[[], bool], what: str, timeout: float = TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise TimeoutError(f"{what} not met within {timeout} s")


def samples(url: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    text = httpx.get(url + "/metrics", timeout=5).text
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def total(url: str, name: str, **labels: str) -> float:
    return sum(v for (n, lbl), v in samples(url).items() if n == name and labels.items() <= dict(lbl).items())


class ThreadServer:
    """A uvicorn server for ``app`` in a thread of this process, on a free loopback port."""

    def __init__(self, app: FastAPI) -> None:
        self.url = f"http://127.0.0.1:{free_port()}"
        port = int(self.url.rsplit(":", 1)[1])
        self._server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
        self._thread = threading.Thread(target=self._server.run, daemon=True)

    def start(self) -> ThreadServer:
        self._thread.start()
        wait_until(lambda: self._server.started, "server start", 10.0)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10.0)
        assert not self._thread.is_alive()


def regression_app(scale: float) -> FastAPI:
    """A KServe V1 regression model: ``scale * (1 + sum(row))`` per instance (floats, never labels)."""
    app = FastAPI()

    @app.post("/v1/models/{model}:predict")
    async def predict(model: str, request: Request) -> dict[str, Any]:
        rows = (await request.json())["instances"]
        return {"predictions": [scale * (1.0 + float(sum(row))) for row in rows]}

    return app


@pytest.fixture(scope="module")
def pair() -> Iterator[tuple[str, str]]:
    """(stable URL, shadow URL): the same regression, the shadow 1 % higher."""
    stable = ThreadServer(regression_app(1.0)).start()
    shadow = ThreadServer(regression_app(1.01)).start()
    yield stable.url, shadow.url
    stable.stop()
    shadow.stop()


def stable_values(rows: list[list[float]]) -> list[float]:
    return [1.0 + float(sum(row)) for row in rows]


# --- the local router -------------------------------------------------------------------------------


@pytest.fixture
def start_router(tmp_path: Path) -> Iterator[Callable[..., Process]]:
    started: list[Process] = []

    def start(*args: str) -> Process:
        proc = spawn("canary.traffic.router", ["--rollout", "r-tol", *args], tmp_path, "router")
        started.append(proc)
        proc.wait_ready("/healthz")
        return proc

    yield start
    for proc in started:
        proc.stop()
        assert proc.popen.returncode is not None


def shadow_routing(pair: tuple[str, str], comparison: dict[str, Any] | None = None) -> dict[str, Any]:
    stable, shadow = pair
    body: dict[str, Any] = {
        "model": "prices",
        "stable": {"version": "1", "url": stable},
        "candidate": {"version": "2", "url": shadow},
        "candidateRole": "shadow",
        "shadowPercent": 100,
    }
    if comparison is not None:
        body["comparison"] = comparison
    return body


class RouterClient:
    def __init__(self, proc: Process) -> None:
        self.url = proc.url
        self.sent = 0

    def put(self, routing: dict[str, Any]) -> httpx.Response:
        return httpx.put(self.url + "/admin/routing", json=routing, timeout=5)

    def serve(self, request_id: str) -> None:
        """One client request of four instances; waits until its mirrored copy was compared."""
        answer = httpx.post(
            self.url + "/v1/models/prices:predict",
            json={"instances": ROWS},
            headers={"x-request-id": request_id},
            timeout=10,
        )
        assert answer.status_code == 200, answer.text
        assert answer.json()["predictions"] == stable_values(ROWS)
        self.sent += 1
        wait_until(lambda: self.compared() == self.sent * len(ROWS), f"{self.sent} mirrored requests compared")

    def compared(self) -> float:
        return total(self.url, "modelrollout_shadow_comparisons_total", version="2")

    def agreed(self) -> float:
        return total(self.url, "modelrollout_shadow_agreements_total", version="2")

    def stable_correct(self) -> float:
        return total(self.url, "modelrollout_feedback_correct_total", version="1", role="stable")


def test_router_compares_with_the_tolerance_of_each_routing(
    start_router: Callable[..., Process], pair: tuple[str, str]
) -> None:
    router = RouterClient(start_router())
    # An old payload, no comparison: the router's default (1e-6) — 1 % apart never agrees.
    assert router.put(shadow_routing(pair)).json()["changed"] is True
    router.serve("default-0")
    assert (router.compared(), router.agreed()) == (4, 0)

    # The rollout asks for 5 %: applied at once, same process, counters kept.
    tolerant = shadow_routing(pair, {"relativeTolerance": 0.05})
    answer = router.put(tolerant)
    assert answer.status_code == 200 and answer.json()["changed"] is True
    assert router.put(tolerant).json()["changed"] is False  # re-sent every tick: nothing changes
    assert httpx.get(router.url + "/admin/routing", timeout=5).json()["comparison"] == {
        "relativeTolerance": 0.05,
        "absoluteTolerance": None,
    }
    router.serve("tolerant-0")
    router.serve("tolerant-1")
    assert (router.compared(), router.agreed()) == (12, 8)

    # Labels are scored by the rule of the routing applied when they come: the shadow's values as
    # ground truth are "right" for the stable within 5 %.
    shadow_values = [1.01 * v for v in stable_values(ROWS)]
    labelled = httpx.post(router.url + "/feedback", json={"requestId": "tolerant-0", "labels": shadow_values})
    assert labelled.status_code == 200, labelled.text
    assert router.stable_correct() == 4

    # Only an absolute bound: differences here are 0.01 x (1 + sum) < 0.2, within 0.5.
    assert router.put(shadow_routing(pair, {"relativeTolerance": 0, "absoluteTolerance": 0.5})).json()["changed"]
    router.serve("absolute-0")
    assert (router.compared(), router.agreed()) == (16, 12)

    # Back to a payload without comparison: the default again, for comparisons and for labels.
    assert router.put(shadow_routing(pair)).json()["changed"] is True
    assert "comparison" not in httpx.get(router.url + "/admin/routing", timeout=5).json()
    router.serve("default-1")
    assert (router.compared(), router.agreed()) == (20, 12)
    labelled = httpx.post(router.url + "/feedback", json={"requestId": "tolerant-1", "labels": shadow_values})
    assert labelled.status_code == 200, labelled.text
    assert router.stable_correct() == 4  # the second batch scored at 1e-6: none right


@pytest.fixture(scope="module")
def flagged_router(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RouterClient]:
    """A router started with ``--rel-tolerance 0.05``, shared by the tests below (~1-4 s a start)."""
    proc = spawn("canary.traffic.router", ["--rollout", "r-tol", "--rel-tolerance", "0.05"],
                 tmp_path_factory.mktemp("flagged"), "router")  # fmt: skip
    try:
        proc.wait_ready("/healthz")
        yield RouterClient(proc)
    finally:
        proc.stop()
        assert proc.popen.returncode is not None


def test_router_flags_are_the_default_of_what_the_routing_leaves_out(
    flagged_router: RouterClient, pair: tuple[str, str]
) -> None:
    router = flagged_router
    before_compared, before_agreed = router.compared(), router.agreed()
    router.put(shadow_routing(pair))
    router.serve("flag-0")
    assert router.agreed() - before_agreed == 4  # the flag: 5 %
    # Only the absolute bound given: the relative one is still the flag's.
    router.put(shadow_routing(pair, {"absoluteTolerance": 0}))
    router.serve("flag-1")
    assert router.agreed() - before_agreed == 8
    # The routing's own relative bound wins over the flag.
    router.put(shadow_routing(pair, {"relativeTolerance": 0.001}))
    router.serve("flag-2")
    assert (router.compared() - before_compared, router.agreed() - before_agreed) == (12, 8)


BAD_COMPARISONS = [
    ('{"relativeTolerance": -0.1}', "comparison.relativeTolerance", "expected a finite number >= 0, got -0.1"),
    ('{"relativeTolerance": NaN}', "comparison.relativeTolerance", "expected a finite number >= 0, got nan"),
    ('{"relativeTolerance": Infinity}', "comparison.relativeTolerance", "expected a finite number >= 0, got inf"),
    ('{"relativeTolerance": true}', "comparison.relativeTolerance", "expected a number, got bool True"),
    ('{"relativeTolerance": "0.05"}', "comparison.relativeTolerance", "got the string '0.05'"),
    ('{"absoluteTolerance": -1}', "comparison.absoluteTolerance", "expected a finite number >= 0, got -1"),
    ('{"absoluteTolerance": [1]}', "comparison.absoluteTolerance", "expected a number, got list [1]"),
    ('{"relTolerance": 0.05}', "comparison.relTolerance", "Extra inputs are not permitted"),
    ("0.05", "comparison", "valid dictionary"),
]


def test_router_refuses_bad_tolerances_naming_the_field(flagged_router: RouterClient, pair: tuple[str, str]) -> None:
    router = flagged_router
    good = shadow_routing(pair, {"relativeTolerance": 0.02})
    assert router.put(good).status_code == 200
    for comparison, field, message in BAD_COMPARISONS:
        body = json.dumps(shadow_routing(pair))[:-1] + f', "comparison": {comparison}}}'
        answer = httpx.put(
            router.url + "/admin/routing", content=body, headers={"content-type": "application/json"}, timeout=5
        )
        assert answer.status_code == 422, (comparison, answer.text)
        assert answer.json()["fields"] == [field], (comparison, answer.text)
        error = answer.json()["error"]
        assert f"{field}: " in error and message in error, (comparison, error)
    # The routing in force is untouched.
    assert httpx.get(router.url + "/admin/routing", timeout=5).json()["comparison"]["relativeTolerance"] == 0.02


# --- the KServe shadow comparator ------------------------------------------------------------------


@pytest.fixture
def comparator() -> Iterator[str]:
    server = ThreadServer(create_app(ComparatorSettings())).start()
    yield server.url
    server.stop()


def target(pair: tuple[str, str], comparison: dict[str, Any] | str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "rollout": "prices", "namespace": "ml", "inferenceService": "prices", "model": "prices",
        "stableVersion": "1", "candidateVersion": "2", "shadowUrl": pair[1], "shadowModel": "prices",
    }  # fmt: skip
    if comparison is not None:
        body["comparison"] = comparison
    return body


def log_pairs(comparator: str, stable_url: str, prefix: str, count: int) -> list[str]:
    """Play the KServe logger: each request and the stable's real answer, as two CloudEvents."""
    ids = []
    for i in range(count):
        request = {"instances": ROWS}
        answer = httpx.post(stable_url + "/v1/models/prices:predict", json=request, timeout=5).json()
        event_id = f"{prefix}-{i}"
        for kind, body in ((REQUEST_EVENT, request), (RESPONSE_EVENT, answer)):
            headers = {
                "ce-id": event_id, "ce-type": kind, "ce-specversion": "1.0", "ce-source": "http://localhost/",
                "ce-inferenceservicename": "prices", "ce-namespace": "ml", "content-type": "application/json",
            }  # fmt: skip
            assert httpx.post(comparator + "/", json=body, headers=headers, timeout=5).status_code == 202
        ids.append(event_id)
    return ids


def test_comparator_compares_each_target_with_its_tolerance(comparator: str, pair: tuple[str, str]) -> None:
    def compared() -> float:
        return total(comparator, "modelrollout_shadow_comparisons_total", version="2")

    def agreed() -> float:
        return total(comparator, "modelrollout_shadow_agreements_total", version="2")

    def put(body: dict[str, Any]) -> httpx.Response:
        return httpx.put(comparator + "/admin/shadows", json=body, timeout=5)

    assert put(target(pair)).json()["changed"] is True
    first = log_pairs(comparator, pair[0], "default", 2)
    wait_until(lambda: compared() == 8, "8 instances compared")
    assert agreed() == 0  # the comparator's default, 1e-6

    tolerant = target(pair, {"relativeTolerance": 0.05})
    assert put(tolerant).json()["changed"] is True
    assert put(tolerant).json()["changed"] is False
    [listed] = httpx.get(comparator + "/admin/shadows", timeout=5).json()
    assert listed["comparison"] == {"relativeTolerance": 0.05, "absoluteTolerance": None}
    log_pairs(comparator, pair[0], "tolerant", 2)
    wait_until(lambda: compared() == 16, "16 instances compared")
    assert agreed() == 8

    # Only the tolerance changed: the shadow was not reinstalled, its feedback memory is whole,
    # and labels are scored at the new tolerance.
    labels = [1.01 * v for v in stable_values(ROWS)]
    answer = httpx.post(comparator + "/feedback", json={"requestId": first[0], "labels": labels}, timeout=5)
    assert answer.status_code == 200, answer.text
    assert total(comparator, "modelrollout_feedback_correct_total", version="1", role="stable") == 4
    assert total(comparator, "modelrollout_feedback_correct_total", version="2", role="shadow") == 4

    # Bad tolerances: 422 naming the field; the shadow in force keeps its tolerance.
    for comparison, field in (
        ({"relativeTolerance": -1}, "comparison.relativeTolerance"),
        ({"relativeTolerance": "0.05"}, "comparison.relativeTolerance"),
        ({"absoluteTolerance": True}, "comparison.absoluteTolerance"),
        ({"relativeTolerance": 0.1, "rel": 1}, "comparison.rel"),
    ):
        refused = put(target(pair, comparison))
        assert refused.status_code == 422 and refused.json()["fields"] == [field], refused.text
    refused = httpx.put(
        comparator + "/admin/shadows",
        content=json.dumps(target(pair))[:-1] + ', "comparison": {"absoluteTolerance": NaN}}',
        headers={"content-type": "application/json"},
        timeout=5,
    )
    assert refused.status_code == 422 and refused.json()["fields"] == ["comparison.absoluteTolerance"], refused.text
    assert "expected a finite number >= 0, got nan" in refused.json()["detail"][0]["msg"]
    log_pairs(comparator, pair[0], "after-refusals", 1)
    wait_until(lambda: compared() == 20, "20 instances compared")
    assert agreed() == 12
