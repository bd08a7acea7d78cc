"""Rollouts on the local platform under faults: Prometheus or MLflow down, the controller killed,
the candidate alias moved mid-rollout.

Everything is real: the module's own MLflow server and Prometheus (`local_home`, stopped and
restarted on the same port and data directory by `outages`), a router and KServe model servers
per rollout, and clients sending requests through the router the whole time. The controller runs
in this process (`runners`) and is ticked by the test, so each fault lands at a chosen point of
the rollout. Every check reads what a user would: the persisted status (StateStore), the events,
MLflow itself and the router's own routing.
"""

from __future__ import annotations

import time

import mlflow

from canary.decision.spec import (
    Condition,
    ModelRollout,
    Phase,
    RolloutStatus,
    parse_rollout,
)
from controller.local.state import StateStore
from tests.fixtures.faults import (
    assert_no_gaps,
    client_traffic,
    clients,
    path_of,
    router_routing,
    serving_endpoint,
    tick_all_until,
    tick_until,
)

INTERVAL_S = 2.0
# Windows judged while Prometheus is down before it comes back: "several intervals".
WINDOWS_DOWN = 3
ALIAS_WRITE = ("POST", "/api/2.0/mlflow/registered-models/alias")
TAG_WRITE = ("POST", "/api/2.0/mlflow/model-versions/set-tag")
# Most tests set the candidate alias before the controller starts, so both model servers start
# together; no window passes before clients send requests (too few samples: inconclusive).
ERROR_RATE = {"name": "error-rate", "template": "error_rate", "max": 0.05, "minSamples": 5}
# A latency budget no model server meets (the router's smallest bucket is 1 ms): a sure breach.
IMPOSSIBLE_LATENCY = {"name": "latency-p95", "template": "latency_p95", "max": 0.0001, "minSamples": 5}


def rollout(
    name: str, *, deadline: str, steps: list[int], shadow: bool = False, check: dict = ERROR_RATE
) -> ModelRollout:
    return parse_rollout(
        {
            "apiVersion": "modelrollout.io/v1alpha1",
            "kind": "ModelRollout",
            "metadata": {"name": name},
            "spec": {
                "model": {"name": name},
                "shadow": {"enabled": shadow, "duration": "2s"},
                "canary": {"steps": steps, "interval": f"{INTERVAL_S:g}s"},
                "progressDeadline": deadline,
                "analysis": {"metrics": [check]},
            },
        }
    )


def analysed(step: int):
    """The candidate is ready at canary step `step`, and its analysis windows are running."""
    return lambda s: s.phase is Phase.CANARY and s.step == step and s.window_started_at is not None


def events(store: StateStore, name: str, after: int = 0, reason: str | None = None) -> list[dict]:
    return [e for e in store.events(name, 1000)[after:] if reason is None or e["reason"] == reason]


def condition(status: RolloutStatus, kind: str) -> Condition:
    return next(c for c in status.conditions if c.type == kind)


def modelrollout_tags(client: mlflow.MlflowClient, model: str, version: str) -> dict[str, str]:
    tags = client.get_model_version(model, version).tags or {}
    return {k: v for k, v in tags.items() if k.startswith("modelrollout.")}


# -- Prometheus down mid-canary -------------------------------------------------------------------


def test_prometheus_down_mid_canary_holds_the_step_and_resumes_when_it_returns(
    local_home, runners, outages, new_version, iris_data, registry
):
    home, services = local_home
    name = "prom-blink"
    store = StateStore(home.state_dir)
    v1 = new_version(name, alias="champion")
    v2 = new_version(name, alias="challenger")
    # The shadow absorbs the candidate's start-up: the step's deadline then measures analysis only.
    runner = runners.start(rollout(name, deadline="30s", steps=[30, 60], shadow=True))
    traffic = client_traffic(runner, name, name, iris_data)
    try:
        at_stop = tick_until(runner, name, analysed(0), 90, "the first canary step to be analysed")
        events_before = len(store.events(name, 1000))
        outages.prometheus.stop()

        def holds(status: RolloutStatus) -> None:
            assert (status.phase, status.step) == (Phase.CANARY, at_stop.step), (status.phase, status.message)

        status = tick_until(
            runner, name, lambda _: len(events(store, name, events_before, "AnalysisError")) >= WINDOWS_DOWN,
            (WINDOWS_DOWN + 2) * INTERVAL_S, f"{WINDOWS_DOWN} windows judged without Prometheus", every_tick=holds,
        )  # fmt: skip
        check = next(c for c in status.checks if c.name == "error-rate")
        assert check.verdict == "error" and "Prometheus" in check.message, check
        assert check.failures == 0  # an error is not a failed check: no failureLimit counts it
        for event in events(store, name, events_before, "AnalysisError"):
            assert "error-rate" in event["message"] and services.prometheus in event["message"], event
        assert condition(status, "AnalysisPassing").status == "False"

        outages.prometheus.start()

        def never_rolls_back(status: RolloutStatus) -> None:
            assert status.phase not in (Phase.ROLLING_BACK, Phase.ROLLED_BACK), status.message

        status = tick_until(
            runner, name, lambda s: s.phase is Phase.SUCCEEDED, 60, "the rollout to carry on to Succeeded",
            every_tick=never_rolls_back,
        )  # fmt: skip
    finally:
        stats = traffic.stop()
    assert path_of(status, v2) == [
        (Phase.IDLE, Phase.SHADOW), (Phase.SHADOW, Phase.CANARY), (Phase.CANARY, Phase.CANARY),
        (Phase.CANARY, Phase.PROMOTING), (Phase.PROMOTING, Phase.SUCCEEDED),
    ]  # fmt: skip
    # The step that waited out the outage advanced on a real pass once Prometheus answered again.
    assert next(c for c in status.checks if c.name == "error-rate").verdict == "pass"
    assert registry.get_model_version_by_alias(name, "champion").version == v2
    assert status.previous_stable_version == v1
    assert stats.failed == 0, stats.failures


def test_prometheus_down_past_the_deadline_rolls_back_and_the_stable_keeps_serving(
    local_home, runners, outages, new_version, iris_data, registry
):
    name = "prom-outage"
    v1 = new_version(name, alias="champion")
    runner = runners.start(rollout(name, deadline="20s", steps=[30, 60]))
    traffic = client_traffic(runner, name, name, iris_data)
    try:
        # Set once the stable serves: the step's deadline then runs from the candidate's start.
        v2 = new_version(name, alias="challenger")
        tick_until(runner, name, analysed(0), 90, "the first canary step to be analysed")
        outages.prometheus.stop()

        def never_advances(status: RolloutStatus) -> None:
            assert status.phase in (Phase.CANARY, Phase.ROLLING_BACK, Phase.ROLLED_BACK), status.message
            assert status.step in (0, None)

        status = tick_until(
            runner, name, lambda s: s.phase is Phase.ROLLED_BACK, 45, "the rollback at progressDeadline",
            every_tick=never_advances,
        )  # fmt: skip
        # Clients keep being answered, by the stable alone, after the rollback too.
        answered = traffic.stats.answered
        tick_until(runner, name, lambda _: traffic.stats.answered >= answered + 20, 10, "clients after the rollback")
    finally:
        stats = traffic.stop()
    assert "progressDeadline (20s)" in status.message, status.message
    assert "error-rate: error" in status.message and "Prometheus" in status.message, status.message
    assert status.rollback_kind == "failure"
    tags = modelrollout_tags(registry, name, v2)
    assert tags["modelrollout.status"] == "rolled_back" and tags["modelrollout.reason"] == status.message
    assert registry.get_model_version_by_alias(name, "champion").version == v1
    routing = router_routing(traffic.endpoint() or "")
    assert routing is not None and routing["stable"]["version"] == v1 and routing["candidate"] is None
    assert stats.failed == 0, stats.failures


# -- MLflow down at promotion ---------------------------------------------------------------------


def test_mlflow_down_at_promotion_moves_the_alias_once_when_it_returns(
    local_home, runners, outages, new_version, iris_data, registry, mlflow_access_log
):
    home, services = local_home
    name = "registry-blink"
    store = StateStore(home.state_dir)
    v1 = new_version(name, alias="champion")
    v2 = new_version(name, alias="challenger")
    mlflow_access_log.mark()  # from here on, every registry write is the controller's
    runner = runners.start(rollout(name, deadline="30s", steps=[50]))
    traffic = client_traffic(runner, name, name, iris_data)
    try:
        tick_until(runner, name, analysed(0), 90, "the last canary step to be analysed")
        outages.mlflow.stop()
        status = tick_until(runner, name, lambda s: s.phase is Phase.PROMOTING, 15, "Promoting")

        def waits_in_promoting(status: RolloutStatus) -> None:
            assert status.phase is Phase.PROMOTING, status.message

        held_until = time.monotonic() + INTERVAL_S
        status = tick_until(
            runner, name, lambda _: time.monotonic() >= held_until, 2 * INTERVAL_S, "ticks while MLflow is down",
            every_tick=waits_in_promoting,
        )  # fmt: skip
        available = condition(status, "RegistryAvailable")
        assert available.status == "False" and available.reason == "Unreachable", available
        assert services.mlflow in available.message and "unreachable" in available.message, available
        # Serving may already be all candidate: the half that waits is the registry's, and it is whole.
        assert status.weights.candidate == 100
        routing = router_routing(traffic.endpoint() or "")
        assert routing is not None and routing["candidate"]["version"] == v2 and routing["candidateWeight"] == 100

        outages.mlflow.start()
        status = tick_until(
            runner, name, lambda s: s.phase is Phase.SUCCEEDED, 60, "the promotion to complete",
            every_tick=lambda s: s.phase is Phase.SUCCEEDED or waits_in_promoting(s),
        )  # fmt: skip
    finally:
        stats = traffic.stop()
    assert registry.get_model_version_by_alias(name, "champion").version == v2
    assert mlflow_access_log.count(*ALIAS_WRITE) == 1  # moved exactly once, after MLflow came back
    tags = modelrollout_tags(registry, name, v2)
    assert tags["modelrollout.status"] == "promoted" and tags["modelrollout.promoted_at"], tags
    assert f"promoted over v{v1}" in tags["modelrollout.summary"]
    assert mlflow_access_log.count(*TAG_WRITE) == len(tags)  # each tag written once
    assert condition(status, "RegistryAvailable").status == "True"
    assert path_of(status, v2).count((Phase.CANARY, Phase.PROMOTING)) == 1
    assert path_of(status, v2).count((Phase.PROMOTING, Phase.SUCCEEDED)) == 1
    assert_no_gaps(status.history)
    reasons = [e["reason"] for e in events(store, name)]
    for once in ("RolloutStarted", "Promoting", "Promoted"):
        assert reasons.count(once) == 1, reasons
    assert stats.failed == 0, stats.failures


# -- Controller killed while promoting and rolling back, MLflow down ------------------------------


def test_controller_killed_while_registry_writes_wait_resumes_and_writes_each_once(
    local_home, runners, outages, new_version, iris_data, registry, mlflow_access_log
):
    """One controller, two rollouts: one Promoting, one RollingBack for a breach, both waiting for
    MLflow when the controller dies. A new one, started while MLflow is still down, resumes both
    from their status files and finishes each with exactly one registry write-back."""
    home, _ = local_home
    store = StateStore(home.state_dir)
    good, bad = "crash-promoting", "crash-rolling-back"
    # Four model servers start at once and each step's deadline runs from then: a deadline
    # longer than elsewhere keeps a busy machine from ending a step early, at no cost otherwise.
    specs = [
        rollout(good, deadline="40s", steps=[50]),
        rollout(bad, deadline="40s", steps=[50], check=IMPOSSIBLE_LATENCY),
    ]
    waiting = {good: Phase.PROMOTING, bad: Phase.ROLLING_BACK}
    final = {good: Phase.SUCCEEDED, bad: Phase.ROLLED_BACK}
    versions = {name: (new_version(name, alias="champion"), new_version(name, alias="challenger")) for name in waiting}
    mlflow_access_log.mark()
    first = runners.start(*specs)
    # Clients only once both candidates are ready: without requests a window is inconclusive, so
    # neither canary passes or breaches before MLflow is down.
    endpoints = {name: serving_endpoint(first, name, name, iris_data) for name in waiting}
    tick_all_until(first, lambda all_: all(analysed(0)(s) for s in all_.values()), 90, "both canaries analysed")
    traffic = {name: clients(endpoints[name], name, iris_data) for name in waiting}
    try:
        outages.mlflow.stop()

        def judged_without_mlflow(all_: dict[str, RolloutStatus]) -> None:
            for name, status in all_.items():
                assert status.phase in (Phase.CANARY, waiting[name]), f"{name}: {status.phase.value}: {status.message}"

        tick_all_until(
            first, lambda all_: all(all_[n].phase is waiting[n] for n in waiting), 20, "Promoting and RollingBack",
            every_tick=judged_without_mlflow,
        )  # fmt: skip
        at_crash = {name: store.load(name) for name in waiting}
        routing = {name: router_routing(endpoints[name]) for name in waiting}
        # Promoting: every client on the candidate already; rolling back: all on the stable again.
        assert routing[good] is not None and routing[good]["candidate"]["version"] == versions[good][1]
        assert routing[good]["candidateWeight"] == 100
        assert routing[bad] is not None and routing[bad]["candidate"] is None
        runners.crash(first)

        # The new controller comes up while MLflow is still down: it knows only the status files,
        # and must wait where the old one was, leaving serving as it is.
        second = runners.start(*specs)

        def resumes_where_it_was(all_: dict[str, RolloutStatus]) -> None:
            for name, status in all_.items():
                assert status.phase in (waiting[name], final[name]), f"{name} resumed into {status.phase.value}"

        held_until = time.monotonic() + 1
        statuses = tick_all_until(
            second, lambda _: time.monotonic() >= held_until, 5, "the new controller's ticks while MLflow is down",
            every_tick=resumes_where_it_was,
        )  # fmt: skip
        for name, status in statuses.items():
            assert status.phase is waiting[name] and condition(status, "RegistryAvailable").status == "False"
            assert router_routing(endpoints[name]) == routing[name]

        outages.mlflow.start()
        statuses = tick_all_until(
            second, lambda all_: all(all_[n].phase is final[n] for n in final), 60, "both to finish",
            every_tick=resumes_where_it_was,
        )  # fmt: skip
    finally:
        stats = {name: t.stop() for name, t in traffic.items()}
    tags = {name: modelrollout_tags(registry, name, versions[name][1]) for name in waiting}
    for name, status in statuses.items():
        v2 = versions[name][1]
        # Resumed, not restarted: the history on disk at the crash goes on without a gap.
        assert status.history[: len(at_crash[name].history)] == at_crash[name].history
        assert_no_gaps(status.history)
        assert path_of(status, v2).count((waiting[name], final[name])) == 1
        assert path_of(status, v2).count((Phase.IDLE, Phase.CANARY)) == 1
        reasons = [e["reason"] for e in events(store, name)]
        assert reasons.count("Promoted" if name == good else "RolledBack") == 1, reasons
        assert stats[name].failed == 0, (name, stats[name].failures)
    assert registry.get_model_version_by_alias(good, "champion").version == versions[good][1]
    assert tags[good]["modelrollout.status"] == "promoted"
    assert " is slower than " in statuses[bad].message.split(" — ")[0], statuses[bad].message
    assert " — latency-p95" in statuses[bad].message, statuses[bad].message
    assert registry.get_model_version_by_alias(bad, "champion").version == versions[bad][0]
    assert tags[bad]["modelrollout.status"] == "rolled_back"
    assert tags[bad]["modelrollout.reason"] == statuses[bad].message
    # One alias move (the promotion) and each tag written once, whatever the crash interrupted.
    assert mlflow_access_log.count(*ALIAS_WRITE) == 1
    assert mlflow_access_log.count(*TAG_WRITE) == len(tags[good]) + len(tags[bad])


# -- Candidate alias flapped ----------------------------------------------------------------------


def test_candidate_alias_flapped_away_and_back_runs_that_version_again_and_reports_the_skipped_one(
    runners, new_version, iris_data, registry
):
    """The issue's case: challenger v2 -> v3 -> v2 while v2 is in its canary. v2 is superseded
    (tagged skipped, not rolled back as if judged), v3 is reported skipped and never routed, and v2,
    where the alias came back to, runs again."""
    name = "flapped"
    v1 = new_version(name, alias="champion")
    v2 = new_version(name, alias="challenger")
    runner = runners.start(rollout(name, deadline="30s", steps=[50]))
    store = runner.store
    traffic = client_traffic(runner, name, name, iris_data)
    endpoint = traffic.endpoint() or ""
    routed: list[str | None] = []

    def one_candidate_at_a_time(status: RolloutStatus) -> None:
        routing = router_routing(endpoint)
        assert routing is not None
        candidate = routing["candidate"]["version"] if routing["candidate"] else None
        if not routed or routed[-1] != candidate:
            routed.append(candidate)
        live = {r.labels["version"] for r in runner.platform.supervisor.records(rollout=name, component="modelserver") if not r.dead}
        assert len(live - {status.stable_version}) <= 1, f"two candidates' model servers at once: {sorted(live)}"

    try:
        tick_until(runner, name, analysed(0), 90, "the canary of the first candidate", every_tick=one_candidate_at_a_time)
        v3 = new_version(name, alias="challenger")  # the alias moves on while v2 is in its canary ...
        status = tick_until(
            runner, name, lambda s: s.phase is Phase.ROLLING_BACK, 15, f"v{v2} superseded", every_tick=one_candidate_at_a_time
        )  # fmt: skip
        assert status.rollback_kind == "superseded" and status.next_candidate_version == v3
        registry.set_registered_model_alias(name, "challenger", v2)  # ... and comes back
        status = tick_until(
            runner, name, lambda s: s.candidate_version == v2 and analysed(0)(s) and routed[-1] == v2, 60,
            f"v{v2} in its canary again, routed by the router", every_tick=one_candidate_at_a_time,
        )  # fmt: skip
    finally:
        stats = traffic.stop()
    assert [c for c in routed if c] == [v2, v2], routed  # v3 was never routed
    assert routed[routed.index(v2, 1) - 1] is None  # out of the routing before it came back
    assert path_of(status, v2) == [
        (Phase.IDLE, Phase.CANARY), (Phase.CANARY, Phase.ROLLING_BACK), (Phase.ROLLING_BACK, Phase.ROLLED_BACK),
        (Phase.ROLLED_BACK, Phase.CANARY),
    ]  # fmt: skip
    assert path_of(status, v3) == []
    assert_no_gaps(status.history)
    # v2 was cut short, not judged: tagged skipped with where the alias went; v3 was never started.
    tags = modelrollout_tags(registry, name, v2)
    assert tags["modelrollout.status"] == "skipped"
    assert tags["modelrollout.reason"] == f"superseded: alias 'challenger' moved to v{v3}"
    assert modelrollout_tags(registry, name, v3) == {}
    skipped = [e["message"] for e in events(store, name, reason="CandidateSkipped")]
    assert any(m.startswith(f"v{v3} skipped: alias 'challenger' moved on to v{v2}") for m in skipped), skipped
    assert registry.get_model_version_by_alias(name, "champion").version == v1
    assert stats.failed == 0, stats.failures
