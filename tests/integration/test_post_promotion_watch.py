"""The post-promotion watch in the controller loop, with real MLflow, Prometheus, model servers and
router: after promotion the checks measure the promoted version under the role it now serves in
(`stable`), and a breach undoes the promotion in MLflow."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import timedelta

import httpx
import pytest
from prometheus_client import Gauge

from canary.decision.spec import Phase, parse_rollout
from controller.local.runner import LocalRunner
from tests.fixtures.local import tick_until
from tests.fixtures.prometheus import wait_for_sample

PROBE = "modelrollout_test_watch_probe"


@pytest.fixture(scope="module")
def probe(metrics_exporter) -> Iterator[Gauge]:
    """A value per (rollout, version, role) that the tests set, scraped by the real Prometheus."""
    gauge = Gauge(PROBE, "test-controlled signal for the watch", ("rollout", "version", "role"), registry=metrics_exporter.registry)
    yield gauge
    metrics_exporter.registry.unregister(gauge)


def watched_rollout(name: str, model: str):
    return parse_rollout(
        {
            "apiVersion": "modelrollout.io/v1alpha1",
            "kind": "ModelRollout",
            "metadata": {"name": name},
            "spec": {
                "model": {"name": model},
                "shadow": {"enabled": False},
                "canary": {"steps": [50], "interval": "2s"},
                "progressDeadline": "60s",
                "postPromotion": {"watch": "4s"},
                "analysis": {
                    "metrics": [
                        {
                            "name": "probe",
                            "query": f'max({PROBE}{{rollout="{{{{ rollout }}}}",version="{{{{ version }}}}",role="{{{{ role }}}}"}})',
                            "max": 0.5,
                        }
                    ]
                },
            },
        }
    )


@pytest.fixture
def make_runner(local_runner):
    return lambda name, model: local_runner(watched_rollout(name, model))


def answered_by(runner: LocalRunner, name: str, model: str, expected: str, timeout: float = 30) -> str:
    """The version that answers client requests through the rollout's router, once it is `expected`.

    The controller keeps ticking meanwhile: after an undo the restored version's server starts
    again, and the router switches to it once it is ready (clients are never sent to a server
    that is still starting).
    """
    deadline = time.monotonic() + timeout
    answered = "none"
    while True:
        runner.tick()
        endpoint = runner.platform.endpoint(name)
        try:
            response = httpx.post(
                f"{endpoint}/v1/models/{model}:predict", json={"instances": [[5.1, 3.5, 1.4, 0.2]]}, timeout=2
            )
            if response.status_code == 200:
                answered = response.headers["x-model-version"]
                if answered == expected:
                    return answered
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"the router of {name} at {endpoint} still answers with v{answered}, not v{expected}")
        time.sleep(0.3)


def set_probe(probe: Gauge, prometheus_url: str, rollout: str, version: str, canary: float, stable: float) -> None:
    probe.labels(rollout, version, "canary").set(canary)
    probe.labels(rollout, version, "stable").set(stable)
    wait_for_sample(prometheus_url, f'{PROBE}{{rollout="{rollout}",version="{version}",role="stable"}}', stable)


def test_breach_after_promotion_undoes_it(make_runner, registered_model, mlflow_client, probe, prometheus_server):
    model, name = f"watch-undo-{time.monotonic_ns() % 10**6}", "watch-undo"
    v1 = registered_model(model, alias="champion")
    v2 = registered_model(model)
    # Fine while v2 is a canary; bad once it serves as the stable. Were the watch to measure the
    # canary role, or v1, it would see nothing wrong.
    set_probe(probe, prometheus_server.url, name, v2, canary=0, stable=1)
    runner = make_runner(name, model)
    mlflow_client.set_registered_model_alias(model, "challenger", v2)

    status = tick_until(runner, name, lambda s: s.phase is Phase.WATCHING)
    assert mlflow_client.get_model_version_by_alias(model, "champion").version == v2
    assert answered_by(runner, name, model, expected=v2) == v2
    status = tick_until(runner, name, lambda s: s.phase is Phase.ROLLED_BACK)

    assert status.rollback_kind == "undo"
    assert status.message == f"post-promotion watch: probe 1 > max 0.5 (failed 1x, failureLimit 0): v{v2} replaced by v{v1} again"
    path = [(t.from_phase, t.to) for t in status.history if t.version == v2]
    assert path == [
        (Phase.IDLE, Phase.CANARY), (Phase.CANARY, Phase.PROMOTING), (Phase.PROMOTING, Phase.WATCHING),
        (Phase.WATCHING, Phase.ROLLING_BACK), (Phase.ROLLING_BACK, Phase.ROLLED_BACK),
    ]  # fmt: skip
    assert (status.stable_version, status.previous_stable_version) == (v1, v2)
    # MLflow: champion back on v1, v2 marked with the reason.
    assert mlflow_client.get_model_version_by_alias(model, "champion").version == v1
    tags = mlflow_client.get_model_version(model, v2).tags
    assert tags["modelrollout.status"] == "rolled_back" and tags["modelrollout.reason"] == status.message
    assert "post-promotion watch" in mlflow_client.get_model_version(model, v1).tags["modelrollout.summary"]
    assert "WatchBreached" in [e["reason"] for e in runner.store.events(name)]
    # Clients are answered by v1 again.
    assert answered_by(runner, name, model, expected=v1) == v1


def test_watch_without_a_breach_ends_succeeded(make_runner, registered_model, mlflow_client, probe, prometheus_server):
    model, name = f"watch-pass-{time.monotonic_ns() % 10**6}", "watch-pass"
    registered_model(model, alias="champion")
    v2 = registered_model(model)
    set_probe(probe, prometheus_server.url, name, v2, canary=0, stable=0)
    runner = make_runner(name, model)
    mlflow_client.set_registered_model_alias(model, "challenger", v2)

    watching = tick_until(runner, name, lambda s: s.phase is Phase.WATCHING)
    status = tick_until(runner, name, lambda s: s.phase is Phase.SUCCEEDED)
    assert status.message == f"v{v2} promoted; post-promotion watch passed (4s, no breach)"
    assert status.phase_started_at - watching.phase_started_at >= timedelta(seconds=4)
    probe_check = next(c for c in status.checks if c.name == "probe")
    assert probe_check.verdict == "pass" and probe_check.candidate == 0
    assert mlflow_client.get_model_version_by_alias(model, "champion").version == v2
    assert answered_by(runner, name, model, expected=v2) == v2
