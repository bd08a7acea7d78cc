"""Fuzzing what the router and the shadow comparator parse: arbitrary JSON and bytes never crash
them (no 5xx, no exception from a parser), and they keep serving afterwards.

The parsers of model payloads are pure functions (canary/traffic/predictions.py), fuzzed directly; the
HTTP surfaces are the real apps served by uvicorn on loopback (one each for the module), so every
request goes through the same server, middleware, validation and handlers as in production.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from canary.traffic.comparator import REQUEST_EVENT, RESPONSE_EVENT, ComparatorSettings
from canary.traffic.comparator import create_app as create_comparator
from canary.traffic.predictions import (
    Protocol,
    count_agreements,
    instances_from_body,
    predicted_label,
    predictions_agree,
    probability_vector,
    regression_value,
    relative_errors,
)
from canary.traffic.router import RouterSettings
from canary.traffic.router import create_app as create_router
from tests.fixtures.asgi import ServedApp
from tests.fixtures.prometheus import free_port

# JSON as clients and model servers might send it: nested lists and objects of every scalar.
SCALARS = (
    st.none() | st.booleans() | st.integers(-(10**20), 10**20)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20)
)  # fmt: skip
JSON = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner, max_size=5), max_leaves=30)
# Bodies shaped like the protocols, with arbitrary contents, so the parsers get past the first check.
V1_BODY = st.fixed_dictionaries({"predictions": st.lists(JSON, max_size=6)}) | st.fixed_dictionaries({"instances": JSON})
V2_BODY = st.fixed_dictionaries(
    {"outputs": st.lists(st.dictionaries(st.sampled_from(["name", "shape", "datatype", "data"]), JSON), max_size=3)}
)
BODY = V1_BODY | V2_BODY | JSON
RAW = st.binary(max_size=300) | BODY.map(lambda b: json.dumps(b).encode())

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
# Over HTTP each example is a few requests: fewer of them, against one server per module.
FUZZ_HTTP = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)


@FUZZ
@given(raw=RAW, protocol=st.sampled_from(list(Protocol)))
def test_model_payload_parsers_take_anything(raw: bytes, protocol: Protocol) -> None:
    instances = instances_from_body(protocol, raw)
    assert instances is None or isinstance(instances, list)


@FUZZ
@given(a=JSON, b=JSON)
def test_prediction_comparisons_take_anything(a: Any, b: Any) -> None:
    assert isinstance(predictions_agree(a, b), bool)
    label = predicted_label(a)
    assert label is None or not isinstance(label, (list, dict))
    probs = probability_vector(a)
    assert probs is None or all(math.isfinite(p) for p in probs)
    value = regression_value(a)
    assert value is None or math.isfinite(value)


@FUZZ
@given(reference=st.lists(JSON, max_size=6), other=st.none() | st.lists(JSON, max_size=6))
def test_agreement_counts_stay_within_bounds(reference: list[Any], other: list[Any] | None) -> None:
    assert 0 <= count_agreements(reference, other) <= len(reference)
    assert all(0 <= e <= 2 for e in relative_errors(reference, other))


def _no_server_error(response: httpx.Response, what: str) -> None:
    assert response.status_code < 500, f"{what}: HTTP {response.status_code} {response.text[:300]}"


@pytest.fixture(scope="module")
def router() -> Iterator[httpx.Client]:
    with ServedApp(create_router(RouterSettings(rollout="fuzz", max_body_bytes=4096))) as served:
        with httpx.Client(base_url=served.url, timeout=10) as client:
            yield client


@pytest.fixture(scope="module")
def comparator() -> Iterator[httpx.Client]:
    with ServedApp(create_comparator(ComparatorSettings(max_body_bytes=4096, shadow_timeout_seconds=0.2))) as served:
        with httpx.Client(base_url=served.url, timeout=10) as client:
            yield client


# A stable (or shadow) at a closed port: requests are parsed and forwarded, and the failure answered.
DEAD_UPSTREAM = f"http://127.0.0.1:{free_port()}"


@FUZZ_HTTP
@given(feedback=JSON, routing=JSON, raw=RAW, request_id=st.text(max_size=30))
def test_the_router_answers_any_input_without_a_server_error(
    router: httpx.Client, feedback: Any, routing: Any, raw: bytes, request_id: str
) -> None:
    _no_server_error(router.post("/feedback", json=feedback), "POST /feedback")
    _no_server_error(router.put("/admin/routing", json=routing), "PUT /admin/routing")
    assert router.put("/admin/routing", json={"model": "m", "stable": {"version": "1", "url": DEAD_UPSTREAM}}).status_code == 200
    headers = {"x-request-id": request_id} if request_id.isascii() and request_id.isprintable() else {}
    answer = router.post("/v1/models/m:predict", content=raw, headers=headers)
    assert answer.status_code in (400, 413, 502, 503, 504), answer.text  # the upstream is down: never 500
    assert router.get("/healthz").status_code == 200


@FUZZ_HTTP
@given(request=RAW, response=RAW, feedback=JSON, target=JSON, event_id=st.sampled_from(["a", "b", "c"]))
def test_the_comparator_answers_any_event_without_a_server_error(
    comparator: httpx.Client, request: bytes, response: bytes, feedback: Any, target: Any, event_id: str
) -> None:
    _no_server_error(comparator.put("/admin/shadows", json=target), "PUT /admin/shadows")
    shadow = {
        "rollout": "fuzz", "namespace": "ns", "inferenceService": "iris", "model": "iris",
        "stableVersion": "1", "candidateVersion": "2", "shadowUrl": DEAD_UPSTREAM,
    }  # fmt: skip
    assert comparator.put("/admin/shadows", json=shadow).status_code == 200
    headers = {"ce-namespace": "ns", "ce-inferenceservicename": "iris"}
    for kind, body in ((REQUEST_EVENT, request), (RESPONSE_EVENT, response), (REQUEST_EVENT, request)):
        answer = comparator.post("/events", content=body, headers={**headers, "ce-id": event_id, "ce-type": kind})
        _no_server_error(answer, f"POST /events {kind}")
    _no_server_error(comparator.post("/feedback", json=feedback), "POST /feedback")
    _no_server_error(comparator.post("/feedback", json={"requestId": event_id, "labels": [1]}), "POST /feedback")
    # The same event id again after its labels: a logger may reuse ids.
    for kind, body in ((REQUEST_EVENT, request), (RESPONSE_EVENT, response)):
        answer = comparator.post("/events", content=body, headers={**headers, "ce-id": event_id, "ce-type": kind})
        _no_server_error(answer, f"POST /events {kind} again")
    assert comparator.get("/metrics").status_code == 200
