"""LocalPlatform with the real router and real KServe model servers on loopback.

Two sklearn iris models saved to disk (a local path is a valid model URI, so no MLflow server is
needed): v1 is a real classifier, v2 answers class 2 for everything, so each answer tells which
version served it.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from controller.demo.models import pip_requirements
from controller.local.platform import LocalPlatform
from controller.local.prometheus_server import PrometheusServer
from controller.platform import Platform, Routing, VersionHealth
from tests.fixtures.prometheus import wait_for_sample

SETOSA = [5.1, 3.5, 1.4, 0.2]  # v1 answers 0, v2 answers 2
ANSWER = {0: "1", 2: "2"}
ROLLOUT = "iris-rollout"
# A model server imports kserve and loads the model: a few seconds on two busy cores.
READY_TIMEOUT = 60.0


def wait_until(predicate: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    import mlflow.sklearn
    from sklearn.datasets import load_iris
    from sklearn.dummy import DummyClassifier
    from sklearn.linear_model import LogisticRegression

    X, y = load_iris(return_X_y=True)
    root = tmp_path_factory.mktemp("models")
    uris = {}
    for version, model in (
        ("1", LogisticRegression(max_iter=500).fit(X, y)),
        ("2", DummyClassifier(strategy="constant", constant=2).fit(X, y)),
    ):
        path = root / f"v{version}"
        mlflow.sklearn.save_model(model, str(path), serialization_format="cloudpickle", pip_requirements=pip_requirements())
        uris[version] = str(path)
    uris["3"] = str(root / "no-such-model")  # fails to load
    return uris


@pytest.fixture
def targets_dir(tmp_path: Path) -> Path:
    return tmp_path / "targets"


@pytest.fixture
def platform(tmp_path: Path, targets_dir: Path) -> Iterator[LocalPlatform]:
    # The tracking URI is never contacted for local paths; port 9 (discard) fails fast if it were.
    plat = LocalPlatform(tmp_path / "state", "http://127.0.0.1:9", targets_dir, stop_timeout=3.0)
    yield plat
    pids = [r.pid for r in plat.supervisor.records()]
    plat.supervisor.stop_all()
    plat.close()
    assert all(_gone(pid) for pid in pids)


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def predict(endpoint: str) -> httpx.Response:
    return httpx.post(f"{endpoint}/v1/models/iris:predict", json={"instances": [SETOSA]}, timeout=10)


def answered_by(endpoint: str, n: int) -> Counter[str]:
    """Send n requests; count the version behind each answer. Every request must succeed."""
    versions: Counter[str] = Counter()
    for _ in range(n):
        response = predict(endpoint)
        assert response.status_code == 200, response.text
        version = ANSWER[response.json()["predictions"][0]]
        assert response.headers["x-model-version"] == version  # the router agrees with the answer
        versions[version] += 1
    return versions


def router_routing(endpoint: str) -> dict[str, object]:
    return httpx.get(f"{endpoint}/admin/routing", timeout=5).json()


def apply_until(
    platform: LocalPlatform,
    routing: Routing,
    uris: dict[str, str],
    done: Callable[[], bool],
    what: str,
    rollout: str = ROLLOUT,
) -> None:
    """Tick like the controller does (apply every 0.1 s) until `done`."""

    def tick() -> bool:
        platform.apply(rollout, routing, uris)
        return done()

    wait_until(tick, READY_TIMEOUT, what)


def stable_only(version: str = "1") -> Routing:
    return Routing(model="iris", stable_version=version)


def serving(platform: LocalPlatform, uris: dict[str, str], routing: Routing, rollout: str = ROLLOUT) -> str:
    """Apply until the router answers with the stable; return the endpoint."""

    def answers() -> bool:
        endpoint = platform.endpoint(rollout)
        if endpoint is None or not platform.health(rollout, routing.stable_version or "").ready:
            return False
        try:
            return predict(endpoint).status_code == 200
        except httpx.HTTPError:
            return False

    apply_until(platform, routing, uris, answers, "the router to answer through the stable", rollout)
    endpoint = platform.endpoint(rollout)
    assert endpoint is not None
    return endpoint


def test_local_platform_is_a_platform(platform: LocalPlatform) -> None:
    assert isinstance(platform, Platform)
    assert platform.endpoint(ROLLOUT) is None
    assert platform.health(ROLLOUT, "1") == VersionHealth(ready=False, failure=None)


def test_stable_then_canary_then_candidate_removed(
    platform: LocalPlatform, models: dict[str, str], targets_dir: Path
) -> None:
    endpoint = serving(platform, models, stable_only())
    assert answered_by(endpoint, 5) == {"1": 5}

    # Steady state: another apply changes nothing (same processes, no new routing sent).
    before = {r.name: r.pid for r in platform.supervisor.records()}
    platform.apply(ROLLOUT, stable_only(), models)
    assert {r.name: r.pid for r in platform.supervisor.records()} == before

    # Canary with all traffic: while v2 starts, clients keep getting v1 and no errors.
    canary = Routing("iris", "1", "2", "canary", candidate_weight=100, shadow_percent=0)
    platform.apply(ROLLOUT, canary, models)
    assert not platform.health(ROLLOUT, "2").ready
    assert router_routing(endpoint)["candidate"] is None
    assert answered_by(endpoint, 5) == {"1": 5}
    apply_until(platform, canary, models, lambda: platform.health(ROLLOUT, "2").ready, "v2 to be ready")
    platform.apply(ROLLOUT, canary, models)
    assert answered_by(endpoint, 5) == {"2": 5}

    half = Routing("iris", "1", "2", "canary", candidate_weight=50)
    platform.apply(ROLLOUT, half, models)
    assert set(answered_by(endpoint, 40)) == {"1", "2"}

    targets = json.loads((targets_dir / f"{ROLLOUT}.json").read_text())
    components = sorted((t["labels"]["component"], t["labels"].get("version")) for t in targets)
    assert components == [("modelserver", "1"), ("modelserver", "2"), ("router", None)]
    assert all(t["labels"]["rollout"] == ROLLOUT for t in targets)
    router_target = next(t for t in targets if t["labels"]["component"] == "router")
    assert router_target["targets"] == [endpoint.removeprefix("http://")]

    # Rolled back: the router drops v2 first, then its server stops.
    v2 = platform.supervisor.get(f"{ROLLOUT}-v2")
    assert v2 is not None
    platform.apply(ROLLOUT, stable_only(), models)
    assert answered_by(endpoint, 5) == {"1": 5}
    assert router_routing(endpoint)["candidate"] is None
    assert platform.supervisor.get(f"{ROLLOUT}-v2") is None
    assert _gone(v2.pid)
    assert platform.health(ROLLOUT, "2") == VersionHealth(ready=False, failure=None)
    targets = json.loads((targets_dir / f"{ROLLOUT}.json").read_text())
    assert sorted(t["labels"]["component"] for t in targets) == ["modelserver", "router"]


def test_failed_candidate_is_reported_and_never_routed(platform: LocalPlatform, models: dict[str, str]) -> None:
    endpoint = serving(platform, models, stable_only())
    broken = Routing("iris", "1", "3", "canary", candidate_weight=100)

    def failed() -> bool:
        return platform.health(ROLLOUT, "3").failure is not None

    apply_until(platform, broken, models, failed, "the broken candidate's failure")
    health = platform.health(ROLLOUT, "3")
    assert not health.ready
    assert health.failure is not None
    assert health.failure.startswith("model server for iris v3 exited (code 1): ")
    assert "cannot load model" in health.failure and "no-such-model" in health.failure
    assert answered_by(endpoint, 5) == {"1": 5}

    # Rolled back: the failed server's record goes, the stable keeps serving.
    platform.apply(ROLLOUT, stable_only(), models)
    assert platform.supervisor.get(f"{ROLLOUT}-v3") is None
    assert answered_by(endpoint, 3) == {"1": 3}


def test_promotion_and_restarted_controller(
    platform: LocalPlatform, models: dict[str, str], tmp_path: Path, targets_dir: Path
) -> None:
    endpoint = serving(platform, models, stable_only())
    shadow = Routing("iris", "1", "2", "shadow", shadow_percent=100)

    def routed() -> dict[str, Any]:
        return httpx.get(endpoint + "/admin/routing", timeout=5).json()

    # The shadow enters the routing with the stable's baseline server, once both are ready.
    apply_until(platform, shadow, models, lambda: routed().get("candidate") is not None, "the shadow to be routed")
    baseline = platform.supervisor.get(f"{ROLLOUT}-v1-baseline")
    assert baseline is not None and baseline.labels["version"] == "1"
    assert routed()["baseline"] == {"version": "1", "url": f"http://127.0.0.1:{baseline.port}"}
    assert answered_by(endpoint, 5) == {"1": 5}  # a shadow's answers never reach clients

    # A controller started again on the same state directory adopts every process.
    pids = {r.name: r.pid for r in platform.supervisor.records()}
    again = LocalPlatform(tmp_path / "state", "http://127.0.0.1:9", targets_dir)
    try:
        again.apply(ROLLOUT, shadow, models)
        assert {r.name: r.pid for r in again.supervisor.records()} == pids
        assert again.endpoint(ROLLOUT) == endpoint
        assert again.health(ROLLOUT, "2").ready

        # Promotion: v2 becomes the stable, v1 leaves the router and then stops.
        again.apply(ROLLOUT, stable_only("2"), models)
        assert answered_by(endpoint, 5) == {"2": 5}
        assert again.supervisor.get(f"{ROLLOUT}-v1") is None
        assert _gone(pids[f"{ROLLOUT}-v1"])
        assert again.supervisor.get(f"{ROLLOUT}-v1-baseline") is None  # left with the shadow
        assert _gone(pids[f"{ROLLOUT}-v1-baseline"])
        assert "baseline" not in routed()
    finally:
        again.close()


def test_router_restarted_after_crash_gets_routing_again(platform: LocalPlatform, models: dict[str, str]) -> None:
    """The process that holds the router's socket killed (the router's own crash:
    test_a_crashed_router_is_back_at_once_and_clients_are_not_refused): the router goes with it
    (parent-death signal), and the supervisor starts both again on the same port."""
    endpoint = serving(platform, models, stable_only())
    assert platform.endpoint_readiness(ROLLOUT) == "serving"
    assert platform.endpoint_readiness("never-started") == "no router"
    router = platform.supervisor.get(f"{ROLLOUT}-router")
    assert router is not None
    psutil.Process(router.pid).kill()
    wait_until(lambda: not platform.supervisor.alive(f"{ROLLOUT}-router"), 10, "the router's death to be seen")
    wait_until(lambda: platform.endpoint_readiness(ROLLOUT) != "serving", 10, "the orphaned router to stop")
    assert platform.endpoint_readiness(ROLLOUT).startswith("router not answering")

    def answers_again() -> bool:
        try:
            return predict(endpoint).status_code == 200
        except httpx.HTTPError:
            return False

    apply_until(platform, stable_only(), models, answers_again, "the restarted router to serve")
    restarted = platform.supervisor.get(f"{ROLLOUT}-router")
    assert restarted is not None and restarted.pid != router.pid
    assert platform.endpoint(ROLLOUT) == endpoint  # same port: clients need not be told
    assert answered_by(endpoint, 3) == {"1": 3}


def test_a_crashed_router_is_back_at_once_and_clients_are_not_refused(platform: LocalPlatform, models: dict[str, str]) -> None:
    """Issue 12: the router SIGKILLed under traffic. Its socket is held by its parent, which starts
    another router at once; the new one restores the routing its predecessor accepted, so it serves
    with no controller involved (no `apply` after the kill). Clients are never refused: only a
    request the dead router was answering can fail, the others wait in the backlog."""
    endpoint = serving(platform, models, stable_only())
    holder = platform.supervisor.get(f"{ROLLOUT}-router")
    assert holder is not None
    (router,) = psutil.Process(holder.pid).children()
    outcomes: list[tuple[float, float, str]] = []  # (sent, answered, "ok" or the error's type)
    stop = threading.Event()

    def client() -> None:
        with httpx.Client(timeout=10) as http:
            while not stop.is_set():
                sent = time.monotonic()
                try:
                    answer = http.post(f"{endpoint}/v1/models/iris:predict", json={"instances": [SETOSA]})
                    result = "ok" if answer.status_code == 200 else f"HTTP {answer.status_code}"
                except httpx.HTTPError as exc:
                    result = type(exc).__name__
                outcomes.append((sent, time.monotonic(), result))
                time.sleep(0.02)  # about 40 requests/s

    sender = threading.Thread(target=client)
    sender.start()
    try:
        time.sleep(1.0)
        killed = time.monotonic()
        router.kill()
        wait_until(lambda: any(s > killed and r == "ok" and a > killed for s, a, r in outcomes), 20, "an answer from the new router")
        time.sleep(1.0)
    finally:
        stop.set()
        sender.join(15)
    failed = [(round(s - killed, 3), r) for s, _, r in outcomes if r != "ok"]
    refused = [f for f in failed if f[1] == "ConnectError"]
    assert refused == [], refused
    assert len(failed) <= 2, failed  # at most what the killed router had in hand
    back = min(a for s, a, r in outcomes if r == "ok" and s > killed) - killed
    print(f"router SIGKILLed: {len(failed)} failed of {len(outcomes)}, first answer after the kill in {back:.2f} s")
    (again,) = psutil.Process(holder.pid).children()
    assert again.pid != router.pid and platform.supervisor.get(f"{ROLLOUT}-router") == holder  # same holder, same port
    assert answered_by(endpoint, 3) == {"1": 3}  # the routing restored, not sent again


def test_teardown_stops_everything(platform: LocalPlatform, models: dict[str, str], targets_dir: Path) -> None:
    serving(platform, models, stable_only())
    platform.apply(ROLLOUT, Routing("iris", "1", "2", "canary", candidate_weight=10), models)
    pids = [r.pid for r in platform.supervisor.records()]
    assert len(pids) == 3
    assert (targets_dir / f"{ROLLOUT}.json").exists()

    platform.teardown(ROLLOUT)
    assert all(_gone(pid) for pid in pids)
    assert platform.supervisor.records() == []
    assert platform.endpoint(ROLLOUT) is None
    assert not (targets_dir / f"{ROLLOUT}.json").exists()
    platform.teardown(ROLLOUT)  # repeating is harmless


def test_bad_input_is_refused_with_the_cause(platform: LocalPlatform, models: dict[str, str]) -> None:
    with pytest.raises(ValueError, match=r"no artifact URI for iris v7"):
        platform.apply(ROLLOUT, Routing("iris", "1", "7", "canary"), models)
    with pytest.raises(ValueError, match="invalid rollout name"):
        platform.apply("../etc", stable_only(), models)
    with pytest.raises(ValueError, match="invalid model version"):
        platform.apply(ROLLOUT, Routing("iris", "1-rc"), {"1-rc": models["1"]})
    with pytest.raises(ValueError, match="invalid model version"):
        platform.health(ROLLOUT, "")
    assert platform.supervisor.records() == []  # nothing was started for a refused apply


def test_prometheus_scrapes_what_the_targets_file_lists(
    prometheus_server: PrometheusServer, models: dict[str, str], tmp_path: Path
) -> None:
    rollout = f"prom-{uuid.uuid4().hex[:8]}"
    plat = LocalPlatform(tmp_path / "prom-state", "http://127.0.0.1:9", prometheus_server.targets_dir)
    try:
        endpoint = serving(plat, models, stable_only(), rollout)
        assert answered_by(endpoint, 3) == {"1": 3}
        url = prometheus_server.url
        wait_for_sample(url, f'up{{rollout="{rollout}",component="router"}}', 1.0, timeout=30)
        wait_for_sample(url, f'up{{rollout="{rollout}",component="modelserver",version="1"}}', 1.0, timeout=30)
        # The router's own labels survive the target labels (no exported_rollout).
        wait_for_sample(
            url, f'modelrollout_requests_total{{rollout="{rollout}",version="1",role="stable"}}',
            lambda total: total >= 3,  # serving() sent its own probe requests too
            timeout=30,
        )
        plat.teardown(rollout)
        assert not (prometheus_server.targets_dir / f"{rollout}.json").exists()
    finally:
        plat.supervisor.stop_all()
        plat.close()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"model": "", "stable_version": "1"}, "routing.model"),
        ({"model": "iris", "stable_version": ""}, "routing.stable_version"),
        ({"model": "iris", "stable_version": "1", "candidate_version": "1", "candidate_role": "canary"}, "also the stable"),
        ({"model": "iris", "stable_version": "1", "candidate_version": "2"}, "candidate_role must be"),
        ({"model": "iris", "stable_version": "1", "candidate_version": "2", "candidate_role": "blue"}, "candidate_role must be"),
        ({"model": "iris", "stable_version": "1", "candidate_role": "shadow"}, "there is no candidate"),
        ({"model": "iris", "stable_version": "1", "candidate_weight": 101}, "candidate_weight must be"),
        ({"model": "iris", "stable_version": "1", "shadow_percent": -1}, "shadow_percent must be"),
        ({"model": "iris", "stable_version": "1", "shadow_percent": True}, "shadow_percent must be"),
        ({"model": "iris", "stable_version": "1", "candidate_weight": 50.5}, "candidate_weight must be"),
    ],
)
def test_routing_rejects_inconsistent_values(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Routing(**kwargs)  # type: ignore[arg-type]


def test_routing_names_versions_stable_first() -> None:
    assert Routing("iris", "1", "2", "shadow", shadow_percent=10).versions == ("1", "2")
    assert Routing("iris", None).versions == ()
