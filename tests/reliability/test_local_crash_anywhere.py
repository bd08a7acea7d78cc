"""The controller killed in every phase of a rollout on the local platform, and restarted.

tests/reliability/test_local_faults.py kills it while Promoting and RollingBack (with MLflow
down); here it dies in each of the other phases: the shadow and every step of a two-step canary,
and once more while promoting without an outage.

Why one rollout crashed again and again rather than one rollout per phase: a crash is cheap (the
runner is dropped, the processes keep running) but a rollout is not (model servers start, every
phase waits out its analysis window). Crashing the same rollout at each point in sequence -- kill,
restart, let it reach the next point, kill again -- covers every phase for the price of one
rollout, and is the harsher test: each controller starts from what the previous *restarted* one
left behind, so a fault that survives one restart (a lost field, a restarted step, a duplicate
process) compounds and shows at the end, where the history must still read as one rollout with
no gaps and exactly one promotion.

Two kinds of death, because a SIGKILL lands wherever the process happens to be:
- between ticks (`runners.crash`), where a controller spends nearly all its time: right after the
  tick that entered a phase or step (its candidate not judged yet; for the shadow, its router and
  model servers just launched and not answering) and once its analysis window runs;
- inside the tick that makes a transition, after the new status was persisted and before any of
  its actions ran (canary/engine.step: the status is persisted before the actions). The router then still
  serves the old weights and MLflow has not been written to; the next controller must carry the
  actions out from the status alone, and still write the alias once.

Everything else is real, as in test_local_faults.py: the module's MLflow and Prometheus, a router
and KServe model servers per rollout, and clients sending requests through the router from the
moment the stable answers to the end. The controller runs in this process (`runners`), ticked by
the test.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest

from canary.decision.spec import ModelRollout, Phase, RolloutStatus, parse_rollout
from controller.local.platform import MODEL_SERVER
from controller.local.runner import LocalRunner
from controller.local.state import StateStore
from tests.fixtures.faults import assert_no_gaps, clients, path_of, router_routing, serving_endpoint, tick_until

INTERVAL_S = 2.0
STEPS = [20, 50]
ERROR_RATE = {"name": "error-rate", "template": "error_rate", "max": 0.05, "minSamples": 5}
ALIAS_WRITE = ("POST", "/api/2.0/mlflow/registered-models/alias")
TAG_WRITE = ("POST", "/api/2.0/mlflow/model-versions/set-tag")
# Generous: the deadline is only the backstop of a stuck test, never what a step waits for; a
# loaded machine may take 20 s to start a model server.
DEADLINE = "60s"
PHASE_TIMEOUT_S = 60.0

# Where a rollout can be, in the order it goes; a restarted controller may only move forward.
ORDER: list[tuple[Phase, int | None]] = [
    (Phase.IDLE, None),
    (Phase.SHADOW, None),
    *((Phase.CANARY, k) for k in range(len(STEPS))),
    (Phase.PROMOTING, None),
    (Phase.SUCCEEDED, None),
]


def rollout(name: str, *, shadow: bool) -> ModelRollout:
    return parse_rollout(
        {
            "apiVersion": "modelrollout.io/v1alpha1",
            "kind": "ModelRollout",
            "metadata": {"name": name},
            "spec": {
                "model": {"name": name},
                "shadow": {"enabled": shadow, "duration": f"{INTERVAL_S:g}s"},
                "canary": {"steps": STEPS, "interval": f"{INTERVAL_S:g}s"},
                "progressDeadline": DEADLINE,
                "analysis": {"metrics": [ERROR_RATE]},
            },
        }
    )


def position(status: RolloutStatus) -> int:
    where = (status.phase, status.step)
    assert where in ORDER, f"the rollout left its path: {status.phase.value} step {status.step}: {status.message}"
    return ORDER.index(where)


def describe(where: tuple[Phase, int | None]) -> str:
    phase, step = where
    return phase.value if step is None else f"{phase.value} step {step + 1}/{len(STEPS)}"


def entered(phase: Phase, step: int | None = None) -> Callable[[RolloutStatus], bool]:
    """The tick that entered `phase`/`step`: the candidate is not judged there yet."""
    return lambda s: (s.phase, s.step) == (phase, step) and s.window_started_at is None


def analysed(phase: Phase, step: int | None = None) -> Callable[[RolloutStatus], bool]:
    """The candidate is ready in `phase`/`step` and its analysis window runs."""
    return lambda s: (s.phase, s.step) == (phase, step) and s.window_started_at is not None


def event_reasons(store: StateStore, name: str) -> list[str]:
    return [e["reason"] for e in store.events(name, 1000)]


@dataclass
class Continuity:
    """What every tick of every controller must show: the rollout only moves forward, and the
    router and model servers are the very processes started before (re-adopted, never started
    twice nor restarted)."""

    name: str
    runner: LocalRunner | None = None
    furthest: int = 0
    processes: dict[str, tuple[int, float]] = field(default_factory=dict)  # name -> (pid, create time)

    def __call__(self, status: RolloutStatus) -> None:
        now = position(status)
        assert now >= self.furthest, f"went back from {describe(ORDER[self.furthest])} to {describe(ORDER[now])}"
        self.furthest = now
        assert self.runner is not None
        for record in self.runner.platform.supervisor.records(rollout=self.name):
            assert not record.dead, f"{record.name} died: {record.failure}"
            identity = (record.pid, record.create_time)
            known = self.processes.setdefault(record.name, identity)
            assert known == identity, f"{record.name} was started again (pid {known[0]} -> {record.pid})"


class Killed(BaseException):
    """The controller dies at this point of its tick: nothing after it runs. A BaseException, so no
    `except Exception` on the way out (the runner's, reconcile's) can carry on with the tick."""


def dies_after_saving(runner: LocalRunner, when: Callable[[RolloutStatus], bool]) -> None:
    """Make `runner` die in the tick whose new status satisfies `when`, right after the status file
    was written and before any of that tick's actions (routing, MLflow writes, events) ran."""
    save = runner.ports.save_status

    def save_then_die(name: str, status: RolloutStatus) -> None:
        save(name, status)
        if when(status):
            raise Killed(f"{name}: killed after persisting {status.phase.value} step {status.step}")

    runner.ports.save_status = save_then_die


def test_controller_killed_between_ticks_in_shadow_and_every_canary_step_resumes_the_same_rollout(
    local_home, runners, new_version, iris_data, registry, mlflow_access_log
):
    home, _ = local_home
    name = "crash-each-phase"
    store = StateStore(home.state_dir)
    spec = rollout(name, shadow=True)
    v1 = new_version(name, alias="champion")
    v2 = new_version(name, alias="challenger")
    mlflow_access_log.mark()  # from here on, every registry write is a controller's
    crash_points = [
        ("the shadow, its model servers starting", entered(Phase.SHADOW)),
        ("the shadow, analysed", analysed(Phase.SHADOW)),
        *itertools.chain.from_iterable(
            [
                (f"canary step {k + 1}/{len(STEPS)}, just entered", entered(Phase.CANARY, k)),
                (f"canary step {k + 1}/{len(STEPS)}, analysed", analysed(Phase.CANARY, k)),
            ]
            for k in range(len(STEPS))
        ),
        ("promoting (the alias moved, not yet seen)", lambda s: s.phase is Phase.PROMOTING),
    ]
    at_crash: list[tuple[str, RolloutStatus]] = []
    continuity = Continuity(name)

    def crash_and_restart(
        runner: LocalRunner, latest: RolloutStatus, what: str, reached: Callable[[RolloutStatus], bool]
    ) -> tuple[LocalRunner, RolloutStatus]:
        """Tick `runner` to the crash point (unless its `latest` status is there already: a
        successor's first tick may itself enter the next phase), crash it, start its successor and
        check that successor's first tick, whose status is returned."""
        if not reached(latest):
            tick_until(runner, name, reached, PHASE_TIMEOUT_S, what, every_tick=continuity)
        crashed = store.load(name)
        at_crash.append((what, crashed))
        runners.crash(runner)
        runner = continuity.runner = runners.start(spec)
        # The new controller's first tick: it knows only the files, and must carry on from them.
        resumed = tick_until(runner, name, lambda _: True, PHASE_TIMEOUT_S, f"a tick after {what}", every_tick=continuity)
        assert resumed.history[: len(crashed.history)] == crashed.history, what
        assert resumed.candidate_version == v2, what
        # The stable changes only with the promotion seen done.
        assert resumed.stable_version == (v2 if resumed.phase is Phase.SUCCEEDED else crashed.stable_version), what
        if (resumed.phase, resumed.step) == (crashed.phase, crashed.step):
            # The same step goes on: neither its deadline nor its analysis started over.
            assert resumed.step_started_at == crashed.step_started_at, what
            if crashed.analysis_started_at is not None:
                assert resumed.analysis_started_at == crashed.analysis_started_at, what
        return runner, resumed

    # The first tick starts the shadow (router and both model servers launched, none answering yet)
    # and the controller dies right after it: its successor must adopt all three, not start more.
    runner = continuity.runner = runners.start(spec)
    runner, _ = crash_and_restart(runner, store.load(name), *crash_points[0])
    endpoint = serving_endpoint(runner, name, name, iris_data)
    # No client traffic, no verdict (minSamples): the shadow waits for the clients, which then see
    # every later crash.
    traffic = clients(endpoint, name, iris_data)
    try:
        latest = store.load(name)
        for what, reached in crash_points[1:]:
            runner, latest = crash_and_restart(runner, latest, what, reached)
        final = tick_until(runner, name, lambda s: s.phase is Phase.SUCCEEDED, PHASE_TIMEOUT_S, "Succeeded", every_tick=continuity)
    finally:
        stats = traffic.stop()

    assert [what for what, _ in at_crash] == [what for what, _ in crash_points]
    crashed_in = {(s.phase, s.step) for _, s in at_crash}
    assert crashed_in == set(ORDER[1:-1]), f"not crashed in every phase: {sorted(describe(w) for w in crashed_in)}"
    # One rollout from the first status to the last: every crash's history is a prefix of it.
    for what, crashed in at_crash:
        assert final.history[: len(crashed.history)] == crashed.history, what
    assert_no_gaps(final.history)
    assert path_of(final, v2) == [
        (Phase.IDLE, Phase.SHADOW), (Phase.SHADOW, Phase.CANARY), (Phase.CANARY, Phase.CANARY),
        (Phase.CANARY, Phase.PROMOTING), (Phase.PROMOTING, Phase.SUCCEEDED),
    ]  # fmt: skip
    reasons = event_reasons(store, name)
    for reason, times in (("RolloutStarted", 1), ("StepAdvanced", len(STEPS)), ("Promoting", 1), ("Promoted", 1)):
        assert reasons.count(reason) == times, (reason, reasons)
    # The registry: the alias moved exactly once, each outcome tag written once.
    assert mlflow_access_log.count(*ALIAS_WRITE) == 1
    assert registry.get_model_version_by_alias(name, "champion").version == v2
    assert (final.stable_version, final.previous_stable_version) == (v2, v1)
    tags = {k: v for k, v in (registry.get_model_version(name, v2).tags or {}).items() if k.startswith("modelrollout.")}
    assert tags["modelrollout.status"] == "promoted", tags
    assert mlflow_access_log.count(*TAG_WRITE) == len(tags)
    # Serving agrees with the registry: the router (on the port clients know) sends all to v2, the
    # model server that served v2 all along; v1's is stopped.
    assert runner.platform.endpoint(name) == endpoint
    routing = router_routing(endpoint)
    assert routing is not None and routing["stable"]["version"] == v2 and routing["candidate"] is None
    live = {r.labels["version"] for r in runner.platform.supervisor.records(rollout=name, component=MODEL_SERVER) if not r.dead}
    assert live == {v2}, live
    assert stats.failed == 0, stats.failures
    assert stats.by_version[v1] > 0 and stats.by_version[v2] > 0, stats.by_version


def test_controller_killed_after_persisting_a_transition_carries_out_its_actions_on_restart(
    local_home, runners, new_version, iris_data, registry, mlflow_access_log
):
    """Killed inside the tick of each transition, between writing the status and acting on it:
    entering the canary (nothing deployed yet, not even the router), entering step 2 (the router
    still at step 1's weight), entering Promoting (MLflow not written). Each successor finds only
    the new status and must bring serving and the registry to it.

    Events are recorded after the status like every other action, so the event of a transition
    killed this way is not recorded (at most once, see the report); the history in the status is
    the record that survives, and is what is checked here."""
    home, _ = local_home
    name = "crash-mid-tick"
    store = StateStore(home.state_dir)
    spec = rollout(name, shadow=False)
    v1 = new_version(name, alias="champion")
    v2 = new_version(name, alias="challenger")
    mlflow_access_log.mark()
    continuity = Continuity(name)
    runner = continuity.runner = runners.start(spec)

    def killed_at(what: str, when: Callable[[RolloutStatus], bool]) -> RolloutStatus:
        """Tick the current controller until it dies saving a status that satisfies `when`."""
        dies_after_saving(runner, when)
        with pytest.raises(Killed):
            tick_until(runner, name, lambda _: False, PHASE_TIMEOUT_S, what, every_tick=continuity)
        return store.load(name)

    def restart() -> LocalRunner:
        runners.crash(runner)
        started = continuity.runner = runners.start(spec)
        return started

    def candidate_weight() -> int:
        routing = router_routing(runner.platform.endpoint(name) or "")
        assert routing is not None
        return int(routing.get("candidateWeight") or 0) if routing["candidate"] else 0

    # Killed in its very first tick: Canary step 1 persisted, nothing deployed, not even the router.
    crashed = killed_at("the canary to start", entered(Phase.CANARY, 0))
    assert crashed.candidate_version == v2 and crashed.stable_version == v1
    assert runner.platform.supervisor.records(rollout=name) == []
    runner = restart()
    endpoint = serving_endpoint(runner, name, name, iris_data)
    traffic = clients(endpoint, name, iris_data)
    try:
        tick_until(runner, name, analysed(Phase.CANARY, 0), PHASE_TIMEOUT_S, "the successor to start v2", every_tick=continuity)
        assert candidate_weight() == STEPS[0]

        crashed = killed_at("step 2", entered(Phase.CANARY, 1))
        assert candidate_weight() == STEPS[0]  # persisted step 2, but its routing never went out
        runner = restart()
        resumed = tick_until(runner, name, lambda _: True, PHASE_TIMEOUT_S, "the successor's first tick", every_tick=continuity)
        assert (resumed.phase, resumed.step, resumed.step_started_at) == (Phase.CANARY, 1, crashed.step_started_at)
        assert candidate_weight() == STEPS[1]

        crashed = killed_at("Promoting", lambda s: s.phase is Phase.PROMOTING)
        assert mlflow_access_log.count(*ALIAS_WRITE) == 0  # persisted Promoting, MLflow untouched
        assert registry.get_model_version_by_alias(name, "champion").version == v1
        assert candidate_weight() == STEPS[1]
        runner = restart()
        final = tick_until(runner, name, lambda s: s.phase is Phase.SUCCEEDED, PHASE_TIMEOUT_S, "Succeeded", every_tick=continuity)
    finally:
        stats = traffic.stop()

    assert final.history[: len(crashed.history)] == crashed.history
    assert_no_gaps(final.history)
    assert path_of(final, v2) == [
        (Phase.IDLE, Phase.CANARY), (Phase.CANARY, Phase.CANARY), (Phase.CANARY, Phase.PROMOTING),
        (Phase.PROMOTING, Phase.SUCCEEDED),
    ]  # fmt: skip
    assert event_reasons(store, name).count("Promoted") == 1
    assert mlflow_access_log.count(*ALIAS_WRITE) == 1
    assert registry.get_model_version_by_alias(name, "champion").version == v2
    routing = router_routing(endpoint)
    assert routing is not None and routing["stable"]["version"] == v2 and routing["candidate"] is None
    assert stats.failed == 0, stats.failures
