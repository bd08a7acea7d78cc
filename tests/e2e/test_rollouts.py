"""The main job end to end on the local platform, with real MLflow, Prometheus, model servers,
router and client traffic; the controller runs as `modelrollout local run` in its own process."""

from __future__ import annotations

import os
import signal
import time

import httpx
import yaml

from canary.decision.spec import Phase, RolloutStatus
from controller.demo.run import DEMO_ROLLOUT, serves
from controller.local import mlflow_server, prometheus_server
from controller.local.loadgen import LabelledTraffic
from controller.local.platform import LocalPlatform
from controller.local.state import StateStore
from registry.connection import connect
from tests.fixtures.local import wait_for_status
from tests.grafana_dashboard import empty_panels

TERMINAL = (Phase.SUCCEEDED, Phase.ROLLED_BACK, Phase.ABORTED)


def rollout_yaml(name: str, model: str, **spec_changes) -> str:
    doc = yaml.safe_load(DEMO_ROLLOUT)
    doc["metadata"]["name"] = name
    doc["spec"]["model"]["name"] = model
    for key, value in spec_changes.items():
        doc["spec"][key] = value
    return yaml.safe_dump(doc)


def start_traffic(home, services, rollout, model, data) -> LabelledTraffic:
    platform = LocalPlatform(home.platform_dir, services.mlflow)
    wait_for_status(
        StateStore(home.state_dir), rollout, lambda _: serves(platform.endpoint(rollout), data.test_x[0], model), 90, "the stable to serve"
    )
    return LabelledTraffic(lambda: platform.endpoint(rollout), model, data.test_x, data.test_y, rate=25).start()


def finished(version: str):
    return lambda s: s.candidate_version == version and s.phase in TERMINAL


def test_promotion_then_rollbacks_on_latency_and_quality(local_home, register_demo_versions, controller, iris_data):
    home, services = local_home
    model, rollout = "iris-e2e", "e2e"
    v1, v2, v3, v4 = register_demo_versions(model)
    client = connect(services.mlflow)
    client.set_registered_model_alias(model, "champion", v1)
    store = StateStore(home.state_dir)
    control = controller(rollout_yaml(rollout, model))
    traffic = start_traffic(home, services, rollout, model, iris_data)
    try:
        # (a) a good candidate goes shadow -> every canary step -> promoted
        client.set_registered_model_alias(model, "challenger", v2)
        status = wait_for_status(store, rollout, finished(v2), 120, "v2's rollout")
        assert status.phase is Phase.SUCCEEDED, status.message
        path = [(t.from_phase.value, t.to.value) for t in status.history if t.version == v2]
        assert path == [
            ("Idle", "Shadow"), ("Shadow", "Canary"), ("Canary", "Canary"), ("Canary", "Canary"),
            ("Canary", "Promoting"), ("Promoting", "Succeeded"),
        ]  # fmt: skip
        assert client.get_model_version_by_alias(model, "champion").version == v2
        tags = client.get_model_version(model, v2).tags
        assert tags["modelrollout.status"] == "promoted" and "promoted over v1" in tags["modelrollout.summary"]
        assert status.stable_version == v2 and status.previous_stable_version == v1

        # (b) a slow candidate is rolled back on latency, during the shadow: no client ever saw it
        client.set_registered_model_alias(model, "challenger", v3)
        status = wait_for_status(store, rollout, finished(v3), 120, "v3's rollout")
        assert status.phase is Phase.ROLLED_BACK
        # Plain words first (the deciding check), then its evidence.
        assert status.message.startswith(f"v{v3} is slower than v{v2}: p95 "), status.message
        assert " — latency-p95 " in status.message, status.message
        assert client.get_model_version(model, v3).tags["modelrollout.status"] == "rolled_back"
        assert "latency-p95" in client.get_model_version(model, v3).tags["modelrollout.reason"]

        # (c) a fast candidate with poor predictions is rolled back on quality
        client.set_registered_model_alias(model, "challenger", v4)
        status = wait_for_status(store, rollout, finished(v4), 120, "v4's rollout")
        assert status.phase is Phase.ROLLED_BACK
        assert "agreement" in status.message or "accuracy" in status.message, status.message
        assert client.get_model_version(model, v4).tags["modelrollout.status"] == "rolled_back"
        assert client.get_model_version_by_alias(model, "champion").version == v2  # untouched by rollbacks
    finally:
        stats = traffic.stop()
    assert control.process.poll() is None, control.log_text()[-2000:]
    # Clients never saw v3 or v4 (rolled back in the shadow) and lost no request.
    assert set(stats.by_version) == {v1, v2}
    assert stats.failed == 0, stats.failures
    # The failed versions' model servers are gone; only the stable serves.
    platform = LocalPlatform(home.platform_dir, services.mlflow)
    assert platform.health(rollout, v2).ready
    assert not platform.health(rollout, v3).ready and not platform.health(rollout, v4).ready
    # The Grafana dashboard on this run's Prometheus: every panel shows numbers for this rollout
    # (`local run` exports the phase and weights as the operator does; the router the rest).
    assert empty_panels(services.prometheus, "default", rollout, "10m") == []


def test_controller_prometheus_and_mlflow_killed_mid_rollout_it_resumes_and_promotes_once(
    local_home, register_demo_versions, controller, iris_data
):
    """Everything but the serving path crashes mid-canary, one after another: `local run` (SIGKILL),
    then Prometheus, then MLflow. The new controller resumes the same step; each service comes
    back on the address services.json records, brought back by that running `local run` (issue 12:
    they used to stay down, or come back elsewhere with `local up`); the rollout promotes once and
    no client request fails."""
    home, services = local_home
    model, rollout = "iris-restart", "restart"
    v1, v2, *_ = register_demo_versions(model)
    client = connect(services.mlflow)
    client.set_registered_model_alias(model, "champion", v1)
    store = StateStore(home.state_dir)
    # A deadline that outlasts an MLflow start (about 8 s here, more on a busy machine).
    text = rollout_yaml(
        rollout, model, shadow={"enabled": False}, canary={"steps": [20, 50, 80], "interval": "6s"}, progressDeadline="90s"
    )  # fmt: skip
    first = controller(text)
    traffic = start_traffic(home, services, rollout, model, iris_data)
    steps_seen: list[int] = []

    def track(s: RolloutStatus) -> None:
        assert s.phase not in (Phase.ROLLING_BACK, Phase.ROLLED_BACK), s.message
        if s.phase is Phase.CANARY and s.step is not None:
            steps_seen.append(s.step)

    def comes_back(name: str, read, kill, probe: str) -> float:
        """SIGKILL the service; seconds until a new process answers `probe` on the same address."""
        before = read()
        assert before is not None, f"{name} not running"
        killed = time.monotonic()
        kill(before.pid)

        def answers(_: RolloutStatus) -> bool:
            now = read()
            if now is None or now.pid == before.pid:
                return False
            assert now.url == before.url, (before, now)
            try:
                return httpx.get(f"{now.url}{probe}", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for_status(store, rollout, answers, 60, f"{name} restarted", on_poll=track)
        return time.monotonic() - killed

    try:
        client.set_registered_model_alias(model, "challenger", v2)
        at_kill = wait_for_status(
            store, rollout, lambda s: s.phase is Phase.CANARY and s.step == 1, 90, "canary step 2"
        )
        first.kill()
        on_disk = store.load(rollout)
        assert on_disk.phase is Phase.CANARY and on_disk.step == 1
        # What was on disk when we looked is still there: the file only grows by whole ticks.
        assert on_disk.history[: len(at_kill.history)] == at_kill.history
        # Serving does not depend on the controller: clients keep being answered while it is dead.
        answered = traffic.stats.answered
        wait_for_status(store, rollout, lambda _: traffic.stats.answered > answered + 20, 10, "traffic while the controller is down")

        second = controller(text)
        prometheus_down = comes_back(
            "prometheus", lambda: prometheus_server.read_pidfile(home.prometheus_dir),
            lambda pid: os.kill(pid, signal.SIGKILL), "/-/ready",
        )  # fmt: skip
        # Judged on the restarted Prometheus: the resumed step advances.
        wait_for_status(store, rollout, lambda s: s.phase is Phase.CANARY and s.step == 2, 60, "canary step 3", on_poll=track)
        mlflow_down = comes_back(
            "mlflow", lambda: mlflow_server.read_pidfile(home.mlflow_dir), lambda pid: os.killpg(pid, signal.SIGKILL), "/health"
        )
        status = wait_for_status(store, rollout, finished(v2), 120, "the resumed rollout", on_poll=track)
    finally:
        stats = traffic.stop()
    assert status.phase is Phase.SUCCEEDED, status.message
    assert steps_seen and min(steps_seen) >= 1, steps_seen  # never went back to an earlier step
    assert steps_seen == sorted(steps_seen)
    history = [(t.from_phase, t.to) for t in status.history if t.version == v2]
    assert history.count((Phase.PROMOTING, Phase.SUCCEEDED)) == 1
    assert history.count((Phase.IDLE, Phase.CANARY)) == 1  # started once, resumed rather than restarted
    assert second.process is not None and second.process.poll() is None, "local run was not restarted"
    log = second.log_text()
    assert f"restarted prometheus at {services.prometheus}" in log and f"restarted mlflow at {services.mlflow}" in log, log[-3000:]
    # Events are recorded right after the status that caused them is saved: wait for it to land.
    wait_for_status(store, rollout, lambda _: any(e["reason"] == "Promoted" for e in store.events(rollout, 200)), 10, "the Promoted event")
    events = [e["reason"] for e in store.events(rollout, 200)]
    assert events.count("Promoted") == 1
    assert connect(services.mlflow).get_model_version_by_alias(model, "champion").version == v2
    assert stats.failed == 0, stats.failures
    print(f"back after SIGKILL: prometheus {prometheus_down:.1f} s, mlflow {mlflow_down:.1f} s")
