"""The report's reading of a status history: attempts, phases, steps and weights.

Histories come from the real engine (`canary.decision.engine.step`, pure) driven tick by tick, and the
weights the report derives are checked against the weights the engine itself recorded at each
tick — so a change in the engine's weights shows up here as a disagreement.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from canary.decision.analysis import CheckResult
from canary.decision.engine import (
    CandidateHealth,
    Command,
    Observation,
    RecordEvent,
    RegistryView,
    analysis_due,
    step,
)
from canary.decision.spec import ModelRolloutSpec, Phase, RolloutStatus
from controller.report.metrics import bucket_quantile
from controller.report.timeline import RolloutEvent, Weights, attempts, select

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


def make_spec(**overrides) -> ModelRolloutSpec:
    doc = {
        "model": {"name": "iris"},
        "shadow": {"duration": "30s", "percent": 40},
        "canary": {"steps": [10, 30, 60], "interval": "20s"},
        "progressDeadline": "2m",
        "analysis": {"metrics": [{"name": "p95", "template": "latency_p95", "maxIncrease": "50%"}]},
    }
    doc.update(overrides)
    return ModelRolloutSpec.model_validate(doc)


class Engine:
    """Drives the engine with a registry that obeys its write-backs, recording what it decided."""

    def __init__(self, spec: ModelRolloutSpec):
        self.spec, self.status, self.now = spec, RolloutStatus(), T0
        self.stable, self.candidate, self.outcomes = "1", None, {}
        self.events: list[RolloutEvent] = []
        self.seen: list[tuple[Phase, int | None, Weights]] = []  # the engine's own (phase, step, weights)

    def tick(self, verdict: str = "pass", commands: tuple[Command, ...] = ()) -> RolloutStatus:
        self.now += timedelta(seconds=5)
        checks = None
        if analysis_due(self.spec, self.status, self.now):
            checks = [CheckResult(name="p95", verdict=verdict, candidate=1.0, baseline=1.0, message=verdict)]
        obs = Observation(
            registry=RegistryView(True, self.stable, self.candidate, dict(self.outcomes)),
            candidate=CandidateHealth(ready=True),
            checks=checks,
            commands=commands,
        )
        result = step(self.spec, self.status, obs, self.now)
        self.status = result.status
        for action in result.actions:
            if isinstance(action, RecordEvent):
                self.events.append(RolloutEvent(self.now, action.type, action.reason, action.message))
            elif type(action).__name__ == "PromoteInRegistry":
                self.stable = action.version
            elif type(action).__name__ == "MarkInRegistry":
                self.outcomes[action.version] = action.outcome
        w = self.status.weights
        self.seen.append((self.status.phase, self.status.step, Weights(w.stable, w.candidate, w.shadow)))
        return self.status

    def until(self, done, verdict: str = "pass", limit: int = 200) -> RolloutStatus:
        for _ in range(limit):
            if done(self.tick(verdict)):
                return self.status
        raise AssertionError(f"engine stuck in {self.status.phase}")


def derived(spec: ModelRolloutSpec, status: RolloutStatus, events) -> dict[tuple[Phase, int | None], Weights]:
    found = {}
    for attempt in attempts(spec, status, events):
        for segment in attempt.segments:
            found[(Phase(segment.phase), segment.step)] = segment.weights
    return found


def test_weights_and_steps_agree_with_what_the_engine_set():
    spec = make_spec()
    engine = Engine(spec)
    engine.tick()
    engine.candidate = "2"
    engine.until(lambda s: s.phase is Phase.CANARY and s.step == 1)
    engine.tick(commands=(Command("pause"),))
    engine.tick()
    engine.tick(commands=(Command("resume"),))
    engine.until(lambda s: s.phase is Phase.SUCCEEDED)

    [attempt] = attempts(spec, engine.status, engine.events)
    assert [s.label for s in attempt.segments] == [
        "Shadow (40% mirrored)", "Canary 1/3 (10%)", "Canary 2/3 (30%)", "Paused", "Canary 2/3 (30%)",
        "Canary 3/3 (60%)", "Promoting", "Succeeded",
    ]  # fmt: skip
    assert [s.role for s in attempt.analysed()] == ["shadow", "canary", "canary", "canary", "canary"]
    derived_weights = derived(spec, engine.status, engine.events)
    for phase, step_index, weights in engine.seen:
        if phase in (Phase.IDLE, Phase.PAUSED):
            continue  # Idle before the rollout is not part of an attempt; Paused keeps what it had
        if phase is Phase.SUCCEEDED:
            # The engine's "stable" is now the promoted version; the report follows versions.
            weights = Weights(stable=0, candidate=weights.stable, shadow=weights.shadow)
        assert derived_weights[(phase, step_index)] == weights, (phase, step_index)
    paused = attempt.segments[3]
    assert paused.weights == Weights(stable=70, candidate=30)  # unchanged by the pause
    assert (attempt.version, attempt.stable_version, attempt.outcome) == ("2", "1", Phase.SUCCEEDED)
    assert attempt.end == attempt.transitions[-1].time and attempt.segments[-1].end == attempt.end


def test_a_rollback_an_unrelated_retry_and_a_promotion_are_separate_attempts():
    spec = make_spec(shadow={"enabled": False})
    engine = Engine(spec)
    engine.tick()
    engine.candidate = "2"
    engine.until(lambda s: s.phase is Phase.ROLLED_BACK, verdict="fail")
    engine.tick(commands=(Command("retry"),))
    engine.until(lambda s: s.phase is Phase.SUCCEEDED)
    engine.candidate = "3"
    engine.until(lambda s: s.phase is Phase.ROLLED_BACK and s.candidate_version == "3", verdict="fail")

    every = attempts(spec, engine.status, engine.events)
    assert [(a.version, a.outcome) for a in every] == [("2", Phase.ROLLED_BACK), ("2", Phase.SUCCEEDED), ("3", Phase.ROLLED_BACK)]
    # Without a shadow the first step is canary step 1; a rollback routes everything back.
    assert [s.label for s in every[0].segments] == ["Canary 1/3 (10%)", "RollingBack", "RolledBack"]
    assert every[0].segments[-1].weights == Weights(stable=100, candidate=0)
    # The stable each was compared with: v1 twice (read from the RolloutStarted events), then v2.
    assert [a.stable_version for a in every] == ["1", "1", "2"]
    assert select(spec, engine.status, engine.events, None).version == "3"
    assert select(spec, engine.status, engine.events, "v2").outcome is Phase.SUCCEEDED  # the latest of v2
    with pytest.raises(ValueError, match=r"no rollout of v7 .*versions rolled out: v2, v3"):
        select(spec, engine.status, engine.events, "7")


def test_the_stable_of_the_latest_attempt_without_events_comes_from_the_status():
    spec = make_spec()
    engine = Engine(spec)
    engine.tick()
    engine.candidate = "2"
    engine.until(lambda s: s.phase is Phase.SUCCEEDED)
    # Events lost (another source, or a trimmed file): a promotion's baseline is the previous stable.
    assert attempts(spec, engine.status, [])[-1].stable_version == "1"
    running = Engine(spec)
    running.tick()
    running.candidate = "2"
    running.until(lambda s: s.phase is Phase.CANARY)
    [attempt] = attempts(spec, running.status, [])
    assert attempt.stable_version == "1" and attempt.end is None and attempt.outcome is None
    assert attempt.segments[-1].end is None  # still in it


def test_undo_is_an_attempt_that_routes_back_to_the_restored_stable():
    spec = make_spec()
    engine = Engine(spec)
    engine.tick()
    engine.candidate = "2"
    engine.until(lambda s: s.phase is Phase.SUCCEEDED)
    engine.tick(commands=(Command("undo"),))
    engine.until(lambda s: s.phase is Phase.ROLLED_BACK)
    undo = attempts(spec, engine.status, engine.events)[-1]
    assert [t.to for t in undo.transitions] == [Phase.ROLLING_BACK, Phase.ROLLED_BACK]
    assert undo.version == "2" and undo.stable_version == "1"
    assert all(s.weights == Weights(stable=100, candidate=0) for s in undo.segments)
    assert undo.analysed() == []


def test_no_history_is_an_error_naming_it():
    with pytest.raises(ValueError, match="nothing has been rolled out"):
        select(make_spec(), RolloutStatus(), [], None)


@pytest.mark.parametrize(
    ("cumulative", "q", "expected"),
    [
        ((10, 30, 40, 40), 0.5, 0.15),  # rank 20 in (0.1, 0.2]: 0.1 + 0.1 * 10/20
        ((10, 30, 40, 40), 0.95, 0.44),  # rank 38 in (0.2, 0.5]: 0.2 + 0.3 * 8/10
        ((10, 30, 40, 40), 0.05, 0.02),  # rank 2 in the first bucket, from 0
        ((10, 30, 40, 50), 0.95, 0.5),  # rank 47.5 in +Inf: the last finite bound
        ((0, 0, 0, 0), 0.5, None),  # empty
    ],
)
def test_bucket_quantile_matches_histogram_quantile_by_hand(cumulative, q, expected):
    bounds = (0.1, 0.2, 0.5, float("inf"))
    result = bucket_quantile(bounds, cumulative, q)
    assert result == (pytest.approx(expected) if expected is not None else None)


def test_a_post_promotion_watch_belongs_to_the_attempt_and_a_breach_undoes_it():
    spec = make_spec(
        postPromotion={"watch": "1m"},
        analysis={"metrics": [{"name": "p95", "template": "latency_p95", "maxIncrease": "50%", "max": 2}]},
    )
    engine = Engine(spec)
    engine.tick()
    engine.candidate = "2"
    engine.until(lambda s: s.phase.value == "Watching")
    engine.until(lambda s: s.phase is Phase.ROLLED_BACK, verdict="fail")
    [attempt] = attempts(spec, engine.status, engine.events)
    labels = [s.label for s in attempt.segments]
    assert labels[-4:] == ["Promoting", "Watching", "RollingBack", "RolledBack"]
    watching = attempt.segments[-3]
    # The promoted version keeps all traffic while watched, measured under its new role.
    assert watching.role == "stable" and watching.weights == Weights(stable=0, candidate=100)
    assert attempt.segments[-2].weights == Weights(stable=100, candidate=0)  # undone: v1 serves again
    assert (attempt.version, attempt.stable_version, attempt.outcome) == ("2", "1", Phase.ROLLED_BACK)
