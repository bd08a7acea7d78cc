"""The state machine, tick by tick, with plain values: no I/O anywhere."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from canary.analysis import CheckResult
from canary.engine import (
    ApplyRouting,
    CandidateHealth,
    Command,
    MarkInRegistry,
    Observation,
    PromoteInRegistry,
    RecordEvent,
    RegistryView,
    analysis_due,
    command_problem,
    step,
)
from canary.spec import ModelRolloutSpec, Phase, RolloutStatus

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


def make_spec(**overrides) -> ModelRolloutSpec:
    doc = {
        "model": {"name": "iris"},
        "shadow": {"duration": "30s", "percent": 50},
        "canary": {"steps": [10, 50], "interval": "20s"},
        "progressDeadline": "2m",
        "analysis": {
            "metrics": [
                {"name": "p95", "template": "latency_p95", "maxIncrease": "50%"},
                {"name": "agree", "template": "shadow_agreement", "min": 0.9},
            ]
        },
    }
    doc.update(overrides)
    return ModelRolloutSpec.model_validate(doc)


def reg(stable="1", candidate="2", outcomes=None, exists=True) -> RegistryView:
    return RegistryView(model_exists=exists, stable_version=stable, candidate_version=candidate, outcomes=outcomes or {})


READY = CandidateHealth(ready=True)


def passed(*names):
    return [CheckResult(name=n, verdict="pass", candidate=1.0, baseline=1.0) for n in names]


def failed(name, message="too slow"):
    return CheckResult(name=name, verdict="fail", candidate=3.0, baseline=1.0, message=message)


class Driver:
    """Feeds observations at a given time and keeps the status, as the runner does."""

    def __init__(self, spec=None, status=None):
        self.spec = spec or make_spec()
        self.status = status or RolloutStatus()
        self.now = T0
        self.actions: list = []

    def tick(self, seconds=0.0, **obs):
        self.now += timedelta(seconds=seconds)
        obs.setdefault("registry", reg())
        result = step(self.spec, self.status, Observation(**obs), self.now)
        self.status = result.status
        self.actions = result.actions
        return result

    def events(self):
        return [a.reason for a in self.actions if isinstance(a, RecordEvent)]

    def routing(self) -> ApplyRouting:
        return next(a for a in self.actions if isinstance(a, ApplyRouting))


def to_shadow_ready() -> Driver:
    d = Driver()
    d.tick()
    assert d.status.phase is Phase.SHADOW
    d.tick(1, candidate=READY)
    return d


def test_alias_move_starts_shadow_with_mirroring():
    d = Driver()
    d.tick()
    assert d.status.phase is Phase.SHADOW
    assert d.status.candidate_version == "2" and d.status.stable_version == "1"
    assert d.routing() == ApplyRouting("1", "2", "shadow", 0, 50)
    assert "RolloutStarted" in d.events()
    assert d.status.history[-1].from_phase is Phase.IDLE and d.status.history[-1].to is Phase.SHADOW


def test_no_analysis_until_candidate_ready():
    d = Driver()
    d.tick()
    d.tick(60, candidate=CandidateHealth(ready=False))
    assert d.status.window_started_at is None
    assert not analysis_due(d.spec, d.status, d.now + timedelta(hours=1))
    d.tick(1, candidate=READY)
    assert d.status.window_started_at == d.now
    assert not analysis_due(d.spec, d.status, d.now + timedelta(seconds=29))
    assert analysis_due(d.spec, d.status, d.now + timedelta(seconds=30))


def test_full_happy_path_promotes_and_waits_for_registry():
    d = to_shadow_ready()
    d.tick(30, checks=passed("p95", "agree"))
    assert d.status.phase is Phase.CANARY and d.status.step == 0
    assert d.routing() == ApplyRouting("1", "2", "canary", 10, 0)
    d.tick(1, candidate=READY)
    d.tick(20, checks=passed("p95"))
    assert d.status.step == 1 and d.status.weights.candidate == 50
    d.tick(1, candidate=READY)
    d.tick(20, checks=passed("p95"))
    assert d.status.phase is Phase.PROMOTING
    promote = [a for a in d.actions if isinstance(a, PromoteInRegistry)]
    assert promote and promote[0].version == "2"
    assert d.routing() == ApplyRouting("1", "2", "canary", 100, 0)
    # The registry has not moved yet: the promotion is issued again, still Promoting.
    d.tick(1)
    assert d.status.phase is Phase.PROMOTING
    assert any(isinstance(a, PromoteInRegistry) for a in d.actions)
    d.tick(1, registry=reg(stable="2", candidate="2"))
    assert d.status.phase is Phase.SUCCEEDED
    assert d.status.stable_version == "2" and d.status.previous_stable_version == "1"
    assert d.routing() == ApplyRouting("2")
    assert not any(isinstance(a, PromoteInRegistry) for a in d.actions)
    # Terminal: further ticks with the same registry do nothing new.
    d.tick(100, registry=reg(stable="2", candidate="2"))
    assert d.status.phase is Phase.SUCCEEDED and d.events() == []


def test_failed_check_rolls_back_and_marks_registry_until_seen():
    d = to_shadow_ready()
    d.tick(30, checks=[failed("p95"), *passed("agree")])
    assert d.status.phase is Phase.ROLLING_BACK
    assert "p95" in d.status.message and "too slow" in d.status.message
    mark = [a for a in d.actions if isinstance(a, MarkInRegistry)]
    assert mark == [MarkInRegistry("2", "rolled_back", d.status.message)]
    assert d.routing() == ApplyRouting("1")
    d.tick(1, registry=reg(outcomes={"2": "rolled_back"}))
    assert d.status.phase is Phase.ROLLED_BACK
    assert "RolledBack" in d.events()
    # The alias still points at the failed version: it is not rolled out again.
    d.tick(60, registry=reg(outcomes={"2": "rolled_back"}))
    assert d.status.phase is Phase.ROLLED_BACK


def test_alias_set_again_after_rollback_restarts():
    d = to_shadow_ready()
    d.tick(30, checks=[failed("p95")])
    d.tick(1, registry=reg(outcomes={"2": "rolled_back"}))
    d.tick(1, registry=reg(candidate=None))  # alias removed ...
    assert d.status.phase is Phase.ROLLED_BACK
    d.tick(1, registry=reg(candidate="2"))  # ... and set on v2 again
    assert d.status.phase is Phase.SHADOW and d.status.candidate_version == "2"


def test_failure_limit_and_consecutive():
    spec = make_spec(
        analysis={"metrics": [{"name": "p95", "template": "latency_p95", "max": 1, "failureLimit": 1, "consecutive": True}]}
    )
    d = Driver(spec)
    d.tick()
    d.tick(1, candidate=READY)
    d.tick(30, checks=[failed("p95")])
    assert d.status.phase is Phase.SHADOW and d.status.checks[0].failures == 1
    d.tick(30, checks=passed("p95"))  # advances and resets the consecutive count
    assert d.status.phase is Phase.CANARY and d.status.checks[0].failures == 0
    d.tick(1, candidate=READY)
    d.tick(20, checks=[failed("p95")])
    assert d.status.phase is Phase.CANARY
    d.tick(20, checks=[failed("p95")])
    assert d.status.phase is Phase.ROLLING_BACK
    assert "failed 2x, failureLimit 1" in d.status.message


def test_non_consecutive_failures_accumulate():
    spec = make_spec(analysis={"metrics": [{"name": "p95", "template": "latency_p95", "max": 1, "failureLimit": 1}]})
    d = Driver(spec)
    d.tick()
    d.tick(1, candidate=READY)
    d.tick(30, checks=[failed("p95")])
    d.tick(30, checks=passed("p95"))
    d.tick(1, candidate=READY)
    d.tick(20, checks=[failed("p95")])
    assert d.status.phase is Phase.ROLLING_BACK


@pytest.mark.parametrize("verdict", ["inconclusive", "error"])
def test_inconclusive_or_error_never_advances_then_deadline_rolls_back(verdict):
    d = to_shadow_ready()
    for _ in range(3):
        d.tick(30, checks=[CheckResult(name="p95", verdict=verdict, message="no data"), *passed("agree")])
        assert d.status.phase is Phase.SHADOW
    d.tick(40)  # 2m10s after the step started: past progressDeadline (2m)
    assert d.status.phase is Phase.ROLLING_BACK
    assert "progressDeadline" in d.status.message and f"p95: {verdict}" in d.status.message


def test_candidate_never_ready_rolls_back_at_deadline():
    d = Driver()
    d.tick()
    d.tick(119, candidate=CandidateHealth(ready=False))
    assert d.status.phase is Phase.SHADOW
    d.tick(2, candidate=CandidateHealth(ready=False))
    assert d.status.phase is Phase.ROLLING_BACK and "not ready" in d.status.message


def test_candidate_failure_rolls_back_with_its_reason():
    d = Driver()
    d.tick()
    d.tick(3, candidate=CandidateHealth(ready=False, failure="model server exited (code 1): bad pickle"))
    assert d.status.phase is Phase.ROLLING_BACK
    assert "bad pickle" in d.status.message


def test_superseded_candidate_rolls_back_then_new_one_starts():
    d = to_shadow_ready()
    d.tick(5, registry=reg(candidate="3"))
    assert d.status.phase is Phase.ROLLING_BACK and d.status.rollback_kind == "superseded"
    assert "moved to v3" in d.status.message
    d.tick(1, registry=reg(candidate="3", outcomes={"2": "rolled_back"}))
    assert d.status.phase is Phase.ROLLED_BACK
    d.tick(1, registry=reg(candidate="3"))
    assert d.status.phase is Phase.SHADOW and d.status.candidate_version == "3"


def test_registry_unreachable_keeps_state():
    d = to_shadow_ready()
    before = d.status.model_copy(deep=True)
    d.tick(1, registry=None, registry_error="MLflow unreachable: connection refused")
    assert d.status.phase is before.phase and d.status.candidate_version == "2"
    cond = next(c for c in d.status.conditions if c.type == "RegistryAvailable")
    assert cond.status == "False" and "connection refused" in cond.message


def test_promotion_waits_while_registry_unreachable():
    d = to_shadow_ready()
    d.tick(0, commands=[Command("promote", full=True)])
    assert d.status.phase is Phase.PROMOTING
    for _ in range(5):
        d.tick(600, registry=None, registry_error="down")
        assert d.status.phase is Phase.PROMOTING
    d.tick(1, registry=reg(stable="2", candidate="2"))
    assert d.status.phase is Phase.SUCCEEDED


def test_pause_freezes_and_resume_continues():
    d = to_shadow_ready()
    d.tick(30, checks=passed("p95", "agree"))
    d.tick(1, commands=[Command("pause")])
    assert d.status.phase is Phase.PAUSED and d.status.paused_from is Phase.CANARY
    assert d.routing() == ApplyRouting("1", "2", "canary", 10, 0)
    d.tick(3600, candidate=READY)  # far past the deadline: paused rollouts do not time out
    assert d.status.phase is Phase.PAUSED
    assert not analysis_due(d.spec, d.status, d.now)
    d.tick(1, commands=[Command("resume")], candidate=READY)
    assert d.status.phase is Phase.CANARY and d.status.step == 0


def test_promote_command_steps_and_full():
    d = to_shadow_ready()
    d.tick(1, commands=[Command("promote")])
    assert d.status.phase is Phase.CANARY and d.status.step == 0
    d.tick(1, commands=[Command("promote", full=True)])
    assert d.status.phase is Phase.PROMOTING


def test_abort_then_retry():
    d = to_shadow_ready()
    d.tick(1, commands=[Command("abort")])
    assert d.status.phase is Phase.ROLLING_BACK
    assert [a for a in d.actions if isinstance(a, MarkInRegistry)][0].outcome == "aborted"
    d.tick(1, registry=reg(outcomes={"2": "aborted"}))
    assert d.status.phase is Phase.ABORTED
    d.tick(1, registry=reg(outcomes={"2": "aborted"}), commands=[Command("retry")])
    assert d.status.phase is Phase.SHADOW and d.status.candidate_version == "2"


def promoted() -> Driver:
    d = to_shadow_ready()
    d.tick(1, commands=[Command("promote", full=True)])
    d.tick(1, registry=reg(stable="2", candidate="2"))
    assert d.status.phase is Phase.SUCCEEDED
    return d


def test_undo_moves_the_stable_alias_back_then_marks_the_undone_version():
    d = promoted()
    d.tick(5, registry=reg(stable="2", candidate="2"), commands=[Command("undo")])
    assert d.status.phase is Phase.ROLLING_BACK and d.status.rollback_kind == "undo"
    assert (d.status.stable_version, d.status.candidate_version) == ("1", "2")
    assert d.routing() == ApplyRouting("1")  # clients go back to v1 at once
    assert [a.version for a in d.actions if isinstance(a, PromoteInRegistry)] == ["1"]
    assert not [a for a in d.actions if isinstance(a, MarkInRegistry)]  # the alias first
    # The alias moved: now the undone version is marked, and once marked the undo is over.
    d.tick(1, registry=reg(stable="1", candidate="2"))
    (mark,) = [a for a in d.actions if isinstance(a, MarkInRegistry)]
    assert (mark.version, mark.outcome) == ("2", "rolled_back") and "undone by user" in mark.reason
    d.tick(1, registry=reg(stable="1", candidate="2", outcomes={"2": "rolled_back"}))
    assert d.status.phase is Phase.ROLLED_BACK and d.status.stable_version == "1"
    # The candidate alias still names v2, which is not rolled out again by itself.
    d.tick(30, registry=reg(stable="1", candidate="2"))
    assert d.status.phase is Phase.ROLLED_BACK and d.routing() == ApplyRouting("1")


def test_undo_needs_a_promotion_to_undo():
    d = promoted()
    d.tick(1, registry=reg(stable="2", candidate="2"), commands=[Command("undo")])
    d.tick(1, registry=reg(stable="1", candidate="2", outcomes={"2": "rolled_back"}))
    assert d.status.phase is Phase.ROLLED_BACK
    d.tick(1, registry=reg(stable="1", candidate="2"), commands=[Command("undo")])
    assert d.status.phase is Phase.ROLLED_BACK and d.events() == ["CommandIgnored"]


def test_commands_that_do_not_apply_are_reported_not_obeyed():
    d = Driver()
    d.tick(0, registry=reg(candidate=None), commands=[Command("promote"), Command("resume"), Command("retry")])
    assert d.status.phase is Phase.IDLE
    assert d.events().count("CommandIgnored") == 3


def test_fresh_state_does_not_reroll_a_failed_version():
    d = Driver()
    d.tick(0, registry=reg(outcomes={"2": "rolled_back"}))
    assert d.status.phase is Phase.IDLE
    assert "rolled back before" in d.status.message
    assert "CandidateSkipped" in d.events()


def test_no_stable_version_waits():
    d = Driver()
    d.tick(0, registry=reg(stable=None))
    assert d.status.phase is Phase.IDLE and "waiting for a stable version" in d.status.message
    assert not any(isinstance(a, ApplyRouting) for a in d.actions)
    d.tick(1, registry=reg(stable="1"))
    assert d.status.phase is Phase.SHADOW


def test_missing_model_is_reported():
    d = Driver()
    d.tick(0, registry=reg(stable=None, candidate=None, exists=False))
    assert "not found" in d.status.message


def test_shadow_disabled_starts_at_first_canary_step():
    d = Driver(make_spec(shadow={"enabled": False}, analysis={"metrics": []}))
    d.tick()
    assert d.status.phase is Phase.CANARY and d.status.step == 0
    d.tick(1, candidate=READY)
    d.tick(20, checks=[])  # no checks configured: the window elapsing is enough
    assert d.status.step == 1


def test_step_does_not_mutate_its_input():
    status = RolloutStatus()
    step(make_spec(), status, Observation(registry=reg()), T0)
    assert status == RolloutStatus()


def test_status_round_trips_through_json():
    d = to_shadow_ready()
    d.tick(30, checks=[failed("p95")])
    again = RolloutStatus.model_validate_json(d.status.model_dump_json(by_alias=True))
    assert again == d.status


def test_promote_on_a_tick_with_due_analysis_moves_exactly_one_step():
    d = to_shadow_ready()
    d.tick(30, checks=passed("p95", "agree"))
    d.tick(1, candidate=READY)
    assert d.status.step == 0
    # The runner measured the old step's window and the user asked for one step, in the same tick.
    d.tick(20, checks=passed("p95"), commands=[Command("promote")])
    assert d.status.phase is Phase.CANARY and d.status.step == 1
    # Failing results of the old step are not held against the new one either.
    d2 = to_shadow_ready()
    d2.tick(30, checks=[failed("p95")], commands=[Command("promote")])
    assert d2.status.phase is Phase.CANARY and d2.status.step == 0
    assert all(c.failures == 0 for c in d2.status.checks)


def test_retry_rolls_out_a_version_skipped_from_fresh_state():
    d = Driver()
    d.tick(0, registry=reg(outcomes={"2": "rolled_back"}))
    assert d.status.phase is Phase.IDLE and d.status.candidate_version == "2"
    d.tick(1, registry=reg(outcomes={"2": "rolled_back"}), commands=[Command("retry")])
    assert d.status.phase is Phase.SHADOW and d.status.candidate_version == "2"


@pytest.mark.parametrize(
    ("kind", "status", "problem"),
    [
        ("pause", RolloutStatus(phase=Phase.CANARY), None),
        ("pause", RolloutStatus(phase=Phase.IDLE), "pause: not possible in phase Idle"),
        ("resume", RolloutStatus(phase=Phase.PAUSED, paused_from=Phase.SHADOW), None),
        ("resume", RolloutStatus(phase=Phase.CANARY), "resume: not possible in phase Canary"),
        ("promote", RolloutStatus(phase=Phase.PAUSED, paused_from=Phase.CANARY), None),
        ("promote", RolloutStatus(phase=Phase.SUCCEEDED), "promote: not possible in phase Succeeded"),
        ("abort", RolloutStatus(phase=Phase.PROMOTING), "abort: not possible in phase Promoting"),
        ("retry", RolloutStatus(phase=Phase.ROLLED_BACK, candidate_version="2", stable_version="1"), None),
        ("retry", RolloutStatus(phase=Phase.IDLE), "retry: not possible in phase Idle"),
        ("retry", RolloutStatus(phase=Phase.ABORTED, candidate_version="2"), "no stable version"),
        ("undo", RolloutStatus(phase=Phase.SUCCEEDED, stable_version="2", candidate_version="2", previous_stable_version="1"), None),
        ("undo", RolloutStatus(phase=Phase.SUCCEEDED, stable_version="2"), "no promotion to undo"),
        ("undo", RolloutStatus(phase=Phase.CANARY), "undo: not possible in phase Canary"),
    ],
)
def test_command_problem(kind, status, problem):
    found = command_problem(kind, status)
    assert found == problem if problem is None else problem in found
