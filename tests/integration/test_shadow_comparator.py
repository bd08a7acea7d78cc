"""The KServe shadow comparator with real model servers and real HTTP: CloudEvents in, metrics out."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest
import uvicorn
from prometheus_client.parser import text_string_to_metric_families

from canary.traffic.comparator import REQUEST_EVENT, RESPONSE_EVENT, ComparatorSettings, create_app
from controller.demo.models import pip_requirements
from tests.fixtures.modelserver import Process, fit_logistic, free_port, iris, save_sklearn, start_model_servers


@pytest.fixture(scope="module")
def servers(tmp_path_factory) -> Iterator[dict[str, Process]]:
    import mlflow.sklearn
    from sklearn.linear_model import LogisticRegression

    base = tmp_path_factory.mktemp("comparator")
    features, labels = iris()
    good = save_sklearn(fit_logistic(), base / "good")
    poor = save_sklearn(LogisticRegression(max_iter=500).fit(features, np.random.default_rng(3).permutation(labels)), base / "poor")
    # The same model as "good", answering its class probabilities instead of the class.
    mlflow.sklearn.save_model(
        fit_logistic(), str(base / "proba"), serialization_format="cloudpickle", pyfunc_predict_fn="predict_proba",
        pip_requirements=pip_requirements(),
    )
    specs = [("iris", good, "1"), ("iris", good, "2"), ("iris", poor, "3"), ("iris", base / "proba", "4")]
    procs = start_model_servers(specs, base)
    yield dict(zip(("stable", "same", "poor", "proba"), procs))
    for proc in procs:
        proc.stop()


class Comparator:
    def __init__(self, settings: ComparatorSettings):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(create_app(settings), host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> Comparator:
        self.thread.start()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                time.sleep(0.05)
        raise AssertionError("comparator did not start")

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(10)

    def shadow(self, shadow_url: str, candidate: str, percent: int = 100, name: str = "iris-isvc") -> httpx.Response:
        return httpx.put(self.url + "/admin/shadows", json={
            "rollout": name, "namespace": "ml", "inferenceService": name, "model": "iris", "stableVersion": "1",
            "candidateVersion": candidate, "shadowUrl": shadow_url, "shadowModel": "iris", "percent": percent})  # fmt: skip

    def send(self, event_id: str, kind: str, body: Any, isvc: str = "iris-isvc", at: str | None = None,
             **extra: str) -> httpx.Response:  # fmt: skip
        """One event as KServe v0.20.0's agent posts it (pkg/logger/worker.go L87-169): binary mode, the
        extensions as ce- headers, `ce-metadata` always present, the request's content type on both."""
        headers = {"ce-id": event_id, "ce-type": kind, "ce-specversion": "1.0", "ce-source": "http://localhost:9081/",
                   "ce-inferenceservicename": isvc, "ce-namespace": "ml", "ce-component": "predictor",
                   "ce-endpoint": "", "ce-metadata": "{}", "content-type": "application/json", **extra}  # fmt: skip
        if at:
            headers["ce-time"] = at
        return httpx.post(self.url + "/", content=json.dumps(body).encode(), headers=headers, timeout=5)

    def metrics(self) -> dict[tuple[str, tuple], float]:
        text = httpx.get(self.url + "/metrics").text
        return {
            (sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
        }

    def value(self, name: str, **labels: str) -> float:
        return sum(v for (n, lbl), v in self.metrics().items() if n == name and labels.items() <= dict(lbl).items())


def traffic(comparator: Comparator, stable: Process, rows, prefix: str, isvc: str = "iris-isvc") -> list[str]:
    """Play the KServe logger: for each row, the request event, the stable's real answer as the response event."""
    ids = []
    for i, row in enumerate(rows):
        request = {"instances": [list(map(float, row))]}
        answer = httpx.post(stable.url + "/v1/models/iris:predict", json=request, timeout=10).json()
        event_id = f"{prefix}-{i}"
        assert comparator.send(event_id, REQUEST_EVENT, request, isvc, "2026-01-01T00:00:00.000Z").status_code == 202
        assert comparator.send(event_id, RESPONSE_EVENT, answer, isvc, "2026-01-01T00:00:00.004Z").status_code == 202
        ids.append(event_id)
    return ids


def wait_for(predicate, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError("timed out")


def test_identical_shadow_agrees_on_every_instance(servers):
    features, _ = iris()
    with Comparator(ComparatorSettings()) as c:
        assert c.shadow(servers["same"].url, "2").json()["changed"] is True
        assert c.shadow(servers["same"].url, "2").json()["changed"] is False  # re-sent every reconcile
        traffic(c, servers["stable"], features[::5], "same")
        wait_for(lambda: c.value("modelrollout_shadow_comparisons_total", version="2") == 30)
        assert c.value("modelrollout_shadow_agreements_total", version="2") == 30
        assert c.value("modelrollout_requests_total", version="2", role="shadow") == 30
        assert c.value("modelrollout_request_errors_total", version="2", role="shadow") == 0
        # The stable's answer time comes from the logger's two event times (4 ms here).
        assert c.value("modelrollout_requests_total", version="1", role="stable") == 30
        assert c.value("modelrollout_request_duration_seconds_sum", version="1", role="stable") == pytest.approx(0.12)


def test_poor_shadow_disagrees_and_is_scored_on_labels(servers):
    features, labels = iris()
    rows, truth = features[::3], labels[::3]
    with Comparator(ComparatorSettings()) as c:
        c.shadow(servers["poor"].url, "3")
        ids = traffic(c, servers["stable"], rows, "poor")
        wait_for(lambda: c.value("modelrollout_shadow_comparisons_total", version="3") == len(rows))
        agreement = c.value("modelrollout_shadow_agreements_total", version="3") / len(rows)
        assert agreement < 0.6
        answer = httpx.post(c.url + "/feedback", json={"items": [{"requestId": i, "labels": [int(y)]} for i, y in zip(ids, truth)]})
        assert answer.status_code == 200, answer.text
        stable_acc = c.value("modelrollout_feedback_correct_total", version="1") / c.value("modelrollout_feedback_total", version="1")
        shadow_acc = c.value("modelrollout_feedback_correct_total", version="3") / c.value("modelrollout_feedback_total", version="3")
        assert stable_acc > 0.9 and shadow_acc < 0.6
        again = httpx.post(c.url + "/feedback", json={"requestId": ids[0], "labels": [0]})
        assert again.status_code == 409  # labels counted once
        assert httpx.post(c.url + "/feedback", json={"requestId": "never-seen", "labels": [0]}).status_code == 404


def test_share_pairing_order_and_what_is_ignored(servers):
    features, _ = iris()
    with Comparator(ComparatorSettings()) as c:
        c.shadow(servers["same"].url, "2", percent=50)
        # Response before request still pairs.
        request = {"instances": [list(map(float, features[0]))]}
        answer = httpx.post(servers["stable"].url + "/v1/models/iris:predict", json=request).json()
        c.send("late", RESPONSE_EVENT, answer)
        c.send("late", REQUEST_EVENT, request)
        traffic(c, servers["stable"], features[:19], "half")
        wait_for(lambda: c.value("modelrollout_shadow_comparisons_total", version="2") == 10)
        time.sleep(0.3)
        assert c.value("modelrollout_shadow_comparisons_total", version="2") == 10  # exactly half of 20
        # Events for an InferenceService nobody shadows are accepted and ignored, never an error.
        ignored = c.send("x", REQUEST_EVENT, request, isvc="someone-else")
        assert ignored.status_code == 202 and ignored.json() == {"accepted": False, "reason": "not shadowed"}
        assert httpx.post(c.url + "/", json=request, headers={"ce-type": REQUEST_EVENT}).status_code == 400
        big = httpx.post(c.url + "/", content=b"x" * (2 << 20), headers={"ce-id": "b", "ce-type": REQUEST_EVENT})
        assert big.status_code == 413
        # Every endpoint is bounded, those FastAPI parses as JSON too.
        for method, path in (("POST", "/feedback"), ("PUT", "/admin/shadows")):
            answer = httpx.request(method, c.url + path, content=b"[" * (2 << 20), headers={"content-type": "application/json"})
            assert answer.status_code == 413, (path, answer.text)
        # A shadow target is a small document: its endpoint has a bound of its own, events do not.
        target_sized = httpx.put(c.url + "/admin/shadows", content=b" " * (100 << 10), headers={"content-type": "application/json"})
        assert target_sized.status_code == 413 and "larger than 65536 bytes" in target_sized.text, target_sized.text
        event_sized = httpx.post(c.url + "/", content=b"x" * (100 << 10), headers={"ce-id": "m", "ce-type": REQUEST_EVENT})
        assert event_sized.status_code == 202, event_sized.text  # read whole, then ignored: no InferenceService of ours


def test_unreachable_shadow_counts_errors_and_never_slows_the_logger(servers):
    features, _ = iris()
    with Comparator(ComparatorSettings(shadow_timeout_seconds=1.0)) as c:
        c.shadow(f"http://127.0.0.1:{free_port()}", "9")
        started = time.monotonic()
        for i in range(20):
            c.send(f"u{i}", REQUEST_EVENT, {"instances": [list(map(float, features[i]))]})
            c.send(f"u{i}", RESPONSE_EVENT, {"predictions": [0]})
        # Each event answered at once: far below the 1 s a replay to the dead shadow may take
        # (with room for a loaded 2-core machine).
        assert (time.monotonic() - started) / 40 < 0.25
        wait_for(lambda: c.value("modelrollout_request_errors_total", version="9", role="shadow") == 20)
        # A failed shadow agrees with nothing: it must not look like a good candidate.
        assert c.value("modelrollout_shadow_agreements_total", version="9") == 0
        assert c.value("modelrollout_shadow_comparisons_total", version="9") == 20


def test_bad_targets_are_refused_with_the_fields(servers):
    with Comparator(ComparatorSettings()) as c:
        answer = httpx.put(c.url + "/admin/shadows", json={"rollout": "r", "namespace": "ml", "percent": 0, "shadowUrl": "ftp://x"})
        assert answer.status_code == 422
        fields = answer.json()["fields"]
        assert {"inferenceService", "model", "stableVersion", "candidateVersion", "percent", "shadowUrl"} <= set(fields)
        c.shadow(servers["same"].url, "2")
        assert httpx.delete(c.url + "/admin/shadows/ml/iris-isvc").status_code == 204
        assert httpx.get(c.url + "/admin/shadows").json() == []


def _by(c: Comparator, name: str, label: str, version: str) -> dict[str, float]:
    return {
        dict(lbl)[label]: v
        for (n, lbl), v in c.metrics().items()
        if n == name and dict(lbl)["version"] == version
    }


def test_probability_shadow_is_compared_by_top_class_calibrated_and_counted(servers):
    features, labels = iris()
    rows, truth = features[1::4], labels[1::4]
    with Comparator(ComparatorSettings()) as c:
        c.shadow(servers["proba"].url, "4")
        ids = traffic(c, servers["stable"], rows, "proba")
        wait_for(lambda: c.value("modelrollout_shadow_comparisons_total", version="4") == len(rows))
        # The stable answers classes, the shadow probabilities of the same model: same top class.
        assert c.value("modelrollout_shadow_agreements_total", version="4") == len(rows)
        answer = httpx.post(c.url + "/feedback", json={"items": [{"requestId": i, "labels": [int(y)]} for i, y in zip(ids, truth)]})
        assert answer.status_code == 200, answer.text
        assert answer.json()["late"] == [] and len(answer.json()["scored"]) == len(rows)
        probs = np.asarray(httpx.post(servers["proba"].url + "/v1/models/iris:predict", json={"instances": rows.tolist()}).json()["predictions"])
        top = probs.argmax(axis=1)
        for version in ("1", "4"):
            assert c.value("modelrollout_feedback_correct_total", version=version) == (top == truth).sum()
            assert c.value("modelrollout_feedback_label_lag_seconds_count", version=version) == len(rows)
        brier = ((probs - np.eye(3)[truth]) ** 2).sum(axis=1)
        assert c.value("modelrollout_feedback_brier_score_count", version="4") == len(rows)
        assert c.value("modelrollout_feedback_brier_score_sum", version="4") == pytest.approx(brier.sum())
        assert c.value("modelrollout_feedback_brier_score_count", version="1") == 0  # labels have no calibration
        bins = np.clip(np.ceil(probs.max(axis=1) * 10).astype(int) - 1, 0, 9)
        counted = _by(c, "modelrollout_feedback_calibration_total", "bin", "4")
        assert counted == {f"{(b + 1) / 10:.1f}": (bins == b).sum() for b in range(10)}
        # Both predict the same classes: the drift counters are equal, class by class.
        stable_classes = _by(c, "modelrollout_predictions_total", "class", "1")
        assert stable_classes == _by(c, "modelrollout_predictions_total", "class", "4")
        assert stable_classes == {"0": (top == 0).sum(), "1": (top == 1).sum(), "2": (top == 2).sum(), "__other__": 0}


def test_late_and_malformed_labels_on_the_comparator(servers):
    features, labels = iris()
    # A TTL long enough that the "soon" label is in time on a loaded machine, short enough to wait out.
    with Comparator(ComparatorSettings(feedback_ttl_seconds=3.0)) as c:
        c.shadow(servers["same"].url, "2")
        ids = traffic(c, servers["stable"], features[:3], "lag")
        paired = time.monotonic()  # every request was paired (its lag starts) before this
        wait_for(lambda: c.value("modelrollout_requests_total", version="2", role="shadow") == 3)
        time.sleep(max(0.0, paired + 0.6 - time.monotonic()))
        soon = httpx.post(c.url + "/feedback", json={"requestId": ids[0], "labels": [int(labels[0])]})
        assert soon.status_code == 200 and soon.json()["scored"][0]["lagSeconds"] >= 0.5
        for body, status in (
            ({"requestId": ids[1], "labels": [0, 1]}, 400),
            ({"requestId": ids[1], "labels": 0}, 422),
            ({"requestId": ids[1]}, 422),
            ({"items": [{"requestId": ids[1], "labels": [0]}, {"requestId": "never", "labels": [0]}]}, 404),
        ):
            assert httpx.post(c.url + "/feedback", json=body).status_code == status, body
        time.sleep(max(0.0, paired + 3.1 - time.monotonic()))  # past the 3 s TTL
        late = httpx.post(c.url + "/feedback", json={"items": [{"requestId": i, "labels": [int(y)]} for i, y in zip(ids[1:], labels[1:3])]})
        assert late.status_code == 200, late.text
        assert [(e["requestId"], e["reason"]) for e in late.json()["late"]] == [(ids[1], "expired"), (ids[2], "expired")]
        assert httpx.post(c.url + "/feedback", json={"requestId": ids[1], "labels": [0]}).status_code == 409
        for version, role in (("1", "stable"), ("2", "shadow")):
            assert c.value("modelrollout_feedback_late_labels_total", version=version, reason="expired") == 2
            assert c.value("modelrollout_feedback_total", version=version) == 1
            lag = {le: c.value("modelrollout_feedback_label_lag_seconds_bucket", version=version, le=le) for le in ("0.5", "10.0")}
            assert lag == {"0.5": 0, "10.0": 3}, (role, lag)  # late labels have a lag too


def test_unpaired_halves_are_counted_on_their_own_rollouts_account(servers):
    """A request logged alone (KServe logs no response for a non-200) counts as the stable's failed
    request once it expires, on the account of the rollout it belongs to, whichever rollout's event
    expired it; a response alone is a drop; too many halves waiting evicts the oldest, a drop."""
    request = {"instances": [[5.1, 3.5, 1.4, 0.2]]}
    answer = {"predictions": [0]}
    with Comparator(ComparatorSettings(pending_max=2, pending_ttl_seconds=0.5)) as c:
        for name in ("first", "second"):
            assert c.shadow(servers["same"].url, "2", name=name).status_code == 200
        dropped = lambda rollout: c.value("modelrollout_mirror_dropped_total", rollout=rollout)  # noqa: E731
        failed = lambda rollout: c.value("modelrollout_request_errors_total", rollout=rollout, role="stable")  # noqa: E731
        assert c.send("lonely", REQUEST_EVENT, request, isvc="first").status_code == 202
        assert c.send("orphan", RESPONSE_EVENT, answer, isvc="second").status_code == 202
        time.sleep(0.7)
        # The next event, for the other rollout, expires both.
        assert c.send("other-1", REQUEST_EVENT, request, isvc="second").status_code == 202
        assert (failed("first"), failed("second")) == (1, 0) and (dropped("first"), dropped("second")) == (0, 1)
        # Not an agreement, not even a comparison, but the shadow answered the same request.
        wait_for(lambda: c.value("modelrollout_requests_total", rollout="first", role="shadow") == 1)
        assert c.value("modelrollout_shadow_comparisons_total", rollout="first") == 0
        assert c.value("modelrollout_request_duration_seconds_count", rollout="first", role="stable") == 0
    with Comparator(ComparatorSettings(pending_max=2, pending_ttl_seconds=30)) as c:
        for name in ("first", "second"):
            assert c.shadow(servers["same"].url, "2", name=name).status_code == 200
        # Two waiting is the limit: a third evicts the oldest, second's own.
        for event_id, isvc in (("second-1", "second"), ("first-2", "first"), ("first-3", "first")):
            assert c.send(event_id, REQUEST_EVENT, request, isvc=isvc).status_code == 202
        assert (dropped("first"), dropped("second")) == (0, 1)


def test_labels_name_the_clients_ce_id_or_its_x_request_id(servers):
    """KServe v0.20.0's logger ids its events by the request's Ce-Id header, else a random UUID
    (pkg/logger/handler.go L143, L210-216); X-Request-Id reaches the comparator only inside
    `ce-metadata`, when the logger's metadataHeaders name it (L131-140)."""
    features, labels = iris()
    with Comparator(ComparatorSettings()) as c:
        c.shadow(servers["same"].url, "2")
        rows = [{"instances": [list(map(float, features[i]))]} for i in (0, 60, 120)]
        answers = [httpx.post(servers["stable"].url + "/v1/models/iris:predict", json=r).json() for r in rows]
        # 1: the client sent Ce-Id: client-chosen; 2: it sent only X-Request-Id, the logger made a UUID.
        c.send("client-chosen", REQUEST_EVENT, rows[0])
        c.send("client-chosen", RESPONSE_EVENT, answers[0])
        c.send("6f1c0e1e-uuid", REQUEST_EVENT, rows[1], **{"ce-metadata": json.dumps({"X-Request-Id": ["order-77"]})})
        c.send("6f1c0e1e-uuid", RESPONSE_EVENT, answers[1])
        # 3: out of order (the logger's workers send concurrently), the response first.
        c.send("third", RESPONSE_EVENT, answers[2])
        c.send("third", REQUEST_EVENT, rows[2])
        wait_for(lambda: c.value("modelrollout_shadow_comparisons_total", version="2") == 3)
        assert c.value("modelrollout_shadow_agreements_total", version="2") == 3
        answer = httpx.post(c.url + "/feedback", json={"items": [
            {"requestId": "client-chosen", "labels": [int(labels[0])]},
            {"requestId": "order-77", "labels": [int(labels[60])]},
            {"requestId": "third", "labels": [int(labels[120])]},
        ]})  # fmt: skip
        assert answer.status_code == 200, answer.text
        assert [row["requestId"] for row in answer.json()["scored"]] == ["client-chosen", "order-77", "third"]
        assert c.value("modelrollout_feedback_total", version="2") == 3 == c.value("modelrollout_feedback_total", version="1")
        # the same request by its other name is the same request: labelled once
        assert httpx.post(c.url + "/feedback", json={"requestId": "6f1c0e1e-uuid", "labels": [0]}).status_code == 409
        # metadata that is not a header map, or names no X-Request-Id, is ignored
        for metadata in ("not json", json.dumps(["X-Request-Id"]), json.dumps({"X-Request-Id": []})):
            c.send(f"m-{metadata[:3]}", REQUEST_EVENT, rows[0], **{"ce-metadata": metadata})
            c.send(f"m-{metadata[:3]}", RESPONSE_EVENT, answers[0])
        wait_for(lambda: c.value("modelrollout_shadow_comparisons_total", version="2") == 6)
