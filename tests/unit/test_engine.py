"""The state machine, tick by tick, with plain values: no I/O anywhere."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from itertools import pairwise

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from canary.decision.analysis import CheckResult
from canary.decision.engine import (
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
    gate_versions,
    step,
    watch_ends_at,
)
from canary.decision.gate import OfflineMetrics
from canary.decision.spec import ModelRolloutSpec, Phase, RolloutStatus

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


def event_messages(d: Driver, reason: str = "CandidateSkipped") -> list[str]:
    return [a.message for a in d.actions if isinstance(a, RecordEvent) and a.reason == reason]


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
    (mark,) = [a for a in d.actions if isinstance(a, MarkInRegistry)]
    # Not judged, so not a verdict: tagged skipped, and the alias may bring it back any time.
    assert (mark.version, mark.outcome) == ("2", "skipped")
    d.tick(1, registry=reg(candidate="3", outcomes={"2": "skipped"}))
    assert d.status.phase is Phase.ROLLED_BACK and d.events() == ["CandidateSkipped"]
    d.tick(1, registry=reg(candidate="3"))
    assert d.status.phase is Phase.SHADOW and d.status.candidate_version == "3"


def test_alias_moved_away_and_back_during_the_superseding_rollback_runs_that_version_again():
    # challenger v2 -> v3 -> v2 across ticks: v2 is superseded, and when its rollback has ended the
    # alias is on v2 again; the user's last intent is v2, so v2 runs again (not "nothing to do").
    d = to_shadow_ready()
    d.tick(1, registry=reg(candidate="3"))
    assert d.status.phase is Phase.ROLLING_BACK and "moved to v3" in d.status.message
    d.tick(1, registry=reg(candidate="2", outcomes={"2": "skipped"}))
    assert d.status.phase is Phase.ROLLED_BACK and d.events() == ["CandidateSkipped"]
    d.tick(1, registry=reg(candidate="2", outcomes={"2": "skipped"}))
    assert d.status.phase is Phase.SHADOW and d.status.candidate_version == "2"
    # v3 had the alias while v2 was rolled back, and lost it before it could start.
    assert d.events() == ["CandidateSkipped", "RolloutStarted"]
    assert event_messages(d)[0].startswith("v3 skipped: alias 'challenger' moved on to v2 before v3 could be rolled out")
    assert d.status.next_candidate_version is None


def test_alias_moved_away_and_back_within_one_tick_is_no_move():
    # The engine sees the alias once a tick: a flap between two looks leaves the rollout as it was.
    d = to_shadow_ready()
    d.tick(1, registry=reg(candidate="2"))
    assert d.status.phase is Phase.SHADOW and d.status.candidate_version == "2"
    assert d.status.observed_candidate_version == "2"


@pytest.mark.parametrize("away", ["3", None])
def test_alias_moved_during_a_failure_rollback_is_acted_upon_once_it_ends(away):
    d = to_shadow_ready()
    d.tick(1, candidate=CandidateHealth(ready=False, failure="model server exited (code 1)"))
    assert d.status.phase is Phase.ROLLING_BACK and d.status.rollback_kind == "failure"
    d.tick(1, registry=reg(candidate=away))
    assert d.status.phase is Phase.ROLLING_BACK  # the rollback finishes first ...
    assert d.events() == ["CandidateAliasMoved"]
    assert ("moved to v3" if away else "was removed") in next(
        a.message for a in d.actions if isinstance(a, RecordEvent)
    )
    # ... and the alias is back on v2 by then: moved away and back, so v2 is rolled out again.
    d.tick(1, registry=reg(candidate="2", outcomes={"2": "rolled_back"}))
    assert d.status.phase is Phase.ROLLED_BACK
    d.tick(1, registry=reg(candidate="2", outcomes={"2": "rolled_back"}))
    assert d.status.phase is Phase.SHADOW and d.status.candidate_version == "2"


def test_a_failed_version_the_alias_never_left_is_not_rolled_out_again():
    d = to_shadow_ready()
    d.tick(1, candidate=CandidateHealth(ready=False, failure="model server exited (code 1)"))
    d.tick(1, registry=reg(candidate="2", outcomes={"2": "rolled_back"}))
    assert d.status.phase is Phase.ROLLED_BACK
    for _ in range(3):
        d.tick(1, registry=reg(candidate="2", outcomes={"2": "rolled_back"}))
        assert d.status.phase is Phase.ROLLED_BACK and d.events() == []


def test_alias_moved_during_promotion_starts_the_new_version_after_it():
    d = to_shadow_ready()
    d.tick(0, commands=[Command("promote", full=True)])
    assert d.status.phase is Phase.PROMOTING
    d.tick(1, registry=reg(candidate="3"))
    assert d.status.phase is Phase.PROMOTING and d.events() == ["CandidateAliasMoved"]
    d.tick(1, registry=reg(stable="2", candidate="3"))
    assert d.status.phase is Phase.SUCCEEDED and d.status.stable_version == "2"
    d.tick(1, registry=reg(stable="2", candidate="3"))
    assert d.status.phase is Phase.SHADOW and d.status.candidate_version == "3"


def test_alias_flapped_during_promotion_back_onto_the_promoted_version_is_left_alone():
    d = to_shadow_ready()
    d.tick(0, commands=[Command("promote", full=True)])
    d.tick(1, registry=reg(candidate="3"))
    d.tick(1, registry=reg(stable="2", candidate="2"))
    assert d.status.phase is Phase.SUCCEEDED
    d.tick(1, registry=reg(stable="2", candidate="2"))
    # v2 is the stable: nothing to roll out; v3, which had the alias meanwhile, was skipped.
    assert d.status.phase is Phase.SUCCEEDED and d.events() == ["CandidateSkipped"]
    assert event_messages(d)[0].startswith("v3 skipped: alias 'challenger' moved on to v2")
    d.tick(1, registry=reg(stable="2", candidate="2"))
    assert d.events() == []


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
        ("undo", RolloutStatus(phase=Phase.WATCHING, stable_version="2", candidate_version="2", previous_stable_version="1"), None),
        ("abort", RolloutStatus(phase=Phase.GATING, candidate_version="2"), None),
        ("promote", RolloutStatus(phase=Phase.GATING, candidate_version="2"), "promote: not possible in phase Gating"),
        ("pause", RolloutStatus(phase=Phase.GATING), "pause: not possible in phase Gating"),
        ("abort", RolloutStatus(phase=Phase.WATCHING), "abort: not possible in phase Watching"),
        ("retry", RolloutStatus(phase=Phase.ROLLED_BACK, rollback_kind="rejected", candidate_version="2", stable_version="1"), None),
    ],
)
def test_command_problem(kind, status, problem):
    found = command_problem(kind, status)
    assert found == problem if problem is None else problem in found


# ---------------------------------------------------------------------------------------------
# Offline gate: judged before any traffic


GATE = {"metrics": [{"name": "val_accuracy", "maxDrop": 0.01}, {"name": "auc", "min": 0.8}]}


def gated(**overrides) -> Driver:
    return Driver(make_spec(gate=GATE, **overrides))


def offline(candidate: dict, stable: dict | None = None) -> dict:
    metrics = {"2": OfflineMetrics(candidate, "run c")}
    if stable is not None:
        metrics["1"] = OfflineMetrics(stable, "run s")
    return metrics


GOOD = offline({"val_accuracy": 0.95, "auc": 0.9}, {"val_accuracy": 0.95})
BAD = offline({"val_accuracy": 0.90, "auc": 0.9}, {"val_accuracy": 0.95})


def condition(status, type_):
    return next(c for c in status.conditions if c.type == type_)


def to_gating() -> Driver:
    d = gated()
    d.tick()
    assert d.status.phase is Phase.GATING
    return d


def test_gate_comes_first_and_deploys_nothing():
    d = to_gating()
    assert d.routing() == ApplyRouting("1")  # only the stable is served: no shadow, no canary
    assert d.status.candidate_version == "2" and d.status.weights == RolloutStatus().weights
    assert "RolloutStarted" in d.events()
    assert condition(d.status, "GatePassed").status == "Unknown"
    assert gate_versions(d.spec, d.status) == ("2", "1")
    assert not analysis_due(d.spec, d.status, d.now + timedelta(hours=1))
    assert gate_versions(d.spec, RolloutStatus()) == ()


def test_gate_versions_omit_the_stable_when_no_bound_needs_it():
    d = Driver(make_spec(gate={"metrics": [{"name": "auc", "min": 0.8}]}))
    d.tick()
    assert gate_versions(d.spec, d.status) == ("2",)


def test_passing_gate_starts_the_shadow():
    d = to_gating()
    d.tick(1, gate_metrics=GOOD)
    assert d.status.phase is Phase.SHADOW
    assert d.routing() == ApplyRouting("1", "2", "shadow", 0, 50)
    assert "GatePassed" in d.events()
    assert condition(d.status, "GatePassed").status == "True"
    assert [(c.name, c.verdict) for c in d.status.gate_checks] == [("val_accuracy", "pass"), ("auc", "pass")]
    assert [(t.from_phase, t.to) for t in d.status.history] == [(Phase.IDLE, Phase.GATING), (Phase.GATING, Phase.SHADOW)]
    assert d.status.history[-1].reason == "offline gate passed (2 metrics)"
    assert gate_versions(d.spec, d.status) == ()


def test_passing_gate_without_shadow_starts_the_first_canary_step():
    d = Driver(make_spec(gate=GATE, shadow={"enabled": False}))
    d.tick()
    d.tick(1, gate_metrics=GOOD)
    assert d.status.phase is Phase.CANARY and d.status.step == 0
    assert d.routing() == ApplyRouting("1", "2", "canary", 10, 0)


def test_failing_gate_rejects_without_deploying_and_marks_the_version():
    d = to_gating()
    d.tick(1, gate_metrics=BAD)
    assert d.status.phase is Phase.ROLLING_BACK and d.status.rollback_kind == "rejected"
    assert d.status.message == "offline gate failed: val_accuracy 0.9 on v2 vs 0.95 on v1 (-0.05, maxDrop 0.01)"
    assert d.routing() == ApplyRouting("1")
    assert [a for a in d.actions if isinstance(a, MarkInRegistry)] == [MarkInRegistry("2", "rejected", d.status.message)]
    assert "Rejected" in d.events()
    cond = condition(d.status, "GatePassed")
    assert (cond.status, cond.reason) == ("False", "GateFailed") and "val_accuracy" in cond.message
    assert {c.name: c.verdict for c in d.status.gate_checks} == {"val_accuracy": "fail", "auc": "pass"}
    # The mark is repeated until MLflow shows it, then the rejection rests as RolledBack.
    d.tick(1)
    assert d.status.phase is Phase.ROLLING_BACK and any(isinstance(a, MarkInRegistry) for a in d.actions)
    d.tick(1, registry=reg(outcomes={"2": "rejected"}))
    assert d.status.phase is Phase.ROLLED_BACK and d.status.rollback_kind == "rejected"
    assert d.events() == ["Rejected"]
    assert [t.to for t in d.status.history] == [Phase.GATING, Phase.ROLLING_BACK, Phase.ROLLED_BACK]
    # Not judged again by itself, and never deployed.
    d.tick(60, registry=reg(outcomes={"2": "rejected"}))
    assert d.status.phase is Phase.ROLLED_BACK and d.routing() == ApplyRouting("1")


def test_a_rollback_mark_of_another_kind_does_not_end_a_rejection():
    d = to_gating()
    d.tick(1, gate_metrics=BAD)
    d.tick(1, registry=reg(outcomes={"2": "rolled_back"}))
    assert d.status.phase is Phase.ROLLING_BACK


def test_missing_metric_rejects_naming_it():
    d = to_gating()
    d.tick(1, gate_metrics=offline({"val_accuracy": 0.95}, {"val_accuracy": 0.95}))
    assert d.status.phase is Phase.ROLLING_BACK
    assert "auc not logged for candidate v2 (run c); missing=fail" in d.status.message


def test_gate_without_metrics_makes_no_decision_however_long():
    d = to_gating()
    for _ in range(5):
        d.tick(600, gate_error="MLflow at http://127.0.0.1:1 is unreachable: Connection refused")
        assert d.status.phase is Phase.GATING  # no progressDeadline: never a pass, never a rejection
        assert d.routing() == ApplyRouting("1")
    cond = condition(d.status, "GatePassed")
    assert (cond.status, cond.reason) == ("Unknown", "MetricsUnavailable") and "Connection refused" in cond.message
    assert "waits for MLflow" in d.status.message and "Connection refused" in d.status.message
    d.tick(1, gate_metrics=GOOD)
    assert d.status.phase is Phase.SHADOW


def test_gate_waits_while_the_registry_is_down():
    d = to_gating()
    d.tick(5, registry=None, registry_error="MLflow unreachable")
    assert d.status.phase is Phase.GATING
    assert condition(d.status, "GatePassed").message == "MLflow unreachable"


def test_gate_waits_for_every_needed_version():
    d = to_gating()
    d.tick(1, gate_metrics={"2": OfflineMetrics({"val_accuracy": 0.5, "auc": 0.1})})  # the stable's not read
    assert d.status.phase is Phase.GATING and d.status.gate_checks == []


def test_retry_after_a_rejection_runs_the_gate_again():
    d = to_gating()
    d.tick(1, gate_metrics=BAD)
    d.tick(1, registry=reg(outcomes={"2": "rejected"}))
    d.tick(1, registry=reg(outcomes={"2": "rejected"}), commands=[Command("retry")])
    assert d.status.phase is Phase.GATING and d.status.gate_checks == []
    assert d.routing() == ApplyRouting("1")
    d.tick(1, gate_metrics=GOOD)
    assert d.status.phase is Phase.SHADOW


def test_fresh_state_skips_a_version_rejected_before():
    d = gated()
    d.tick(0, registry=reg(outcomes={"2": "rejected"}))
    assert d.status.phase is Phase.IDLE and "v2 was rejected before" in d.status.message
    assert "CandidateSkipped" in d.events()


def test_alias_moved_during_the_gate_skips_the_old_version_then_gates_the_new_one():
    d = to_gating()
    d.tick(1, registry=reg(candidate="3"))
    assert d.status.phase is Phase.ROLLING_BACK and d.status.rollback_kind == "superseded"
    assert d.routing() == ApplyRouting("1")  # never deployed
    (mark,) = [a for a in d.actions if isinstance(a, MarkInRegistry)]
    assert (mark.version, mark.outcome) == ("2", "skipped")
    assert condition(d.status, "GatePassed").reason == "Abandoned"
    d.tick(1, registry=reg(candidate="3", outcomes={"2": "skipped"}))
    d.tick(1, registry=reg(candidate="3"))
    assert d.status.phase is Phase.GATING and d.status.candidate_version == "3"
    assert [t.to for t in d.status.history] == [Phase.GATING, Phase.ROLLING_BACK, Phase.ROLLED_BACK, Phase.GATING]


def test_alias_removed_during_the_gate_skips_the_version():
    d = to_gating()
    d.tick(1, registry=reg(candidate=None))
    assert d.status.phase is Phase.ROLLING_BACK and "was removed from v2" in d.status.message
    assert condition(d.status, "GatePassed").reason == "Abandoned"
    d.tick(1, registry=reg(candidate=None, outcomes={"2": "skipped"}))
    assert d.status.phase is Phase.ROLLED_BACK
    d.tick(1, registry=reg(candidate="2"))  # set again: judged again
    assert d.status.phase is Phase.GATING


def test_stable_alias_moved_during_the_gate_judges_against_the_new_stable():
    d = to_gating()
    d.tick(1, registry=reg(stable="5"))
    assert d.status.phase is Phase.GATING and d.status.stable_version == "5"
    assert gate_versions(d.spec, d.status) == ("2", "5")
    # Metrics read for the old stable (last tick's status) cannot decide against the new one.
    d.tick(1, registry=reg(stable="5"), gate_metrics=GOOD)
    assert d.status.phase is Phase.GATING
    # A stable alias removed is not a new stable: the gate goes on against the last one.
    d.tick(1, registry=reg(stable=None))
    assert d.status.phase is Phase.GATING and d.status.stable_version == "5"


def test_abort_during_the_gate_and_promote_is_refused():
    d = to_gating()
    d.tick(1, commands=[Command("promote"), Command("pause")])
    assert d.status.phase is Phase.GATING and d.events().count("CommandIgnored") == 2
    d.tick(1, commands=[Command("abort")])
    assert d.status.phase is Phase.ROLLING_BACK and d.status.rollback_kind == "abort"
    d.tick(1, registry=reg(outcomes={"2": "aborted"}))
    assert d.status.phase is Phase.ABORTED


def test_gate_removed_from_the_spec_while_gating_deploys():
    d = to_gating()
    d.spec = make_spec()
    d.tick(1)
    assert d.status.phase is Phase.SHADOW and condition(d.status, "GatePassed").reason == "NoGate"


def test_gate_checks_are_kept_through_the_rollout_and_cleared_by_the_next():
    d = to_gating()
    d.tick(1, gate_metrics=GOOD)
    d.tick(1, candidate=READY)
    d.tick(30, checks=passed("p95", "agree"))
    assert d.status.phase is Phase.CANARY and len(d.status.gate_checks) == 2
    d.tick(1, registry=reg(candidate="3"))  # superseded ...
    d.tick(1, registry=reg(candidate="3", outcomes={"2": "skipped"}))
    d.tick(1, registry=reg(candidate="3"))  # ... the next candidate starts with its own gate
    assert d.status.phase is Phase.GATING and d.status.candidate_version == "3" and d.status.gate_checks == []


# ---------------------------------------------------------------------------------------------
# Post-promotion watch: the checks keep running, a breach undoes the promotion


WATCH_ANALYSIS = {
    "metrics": [
        {"name": "p95", "template": "latency_p95", "maxIncrease": "50%"},
        {"name": "errors", "template": "error_rate", "max": 0.05, "failureLimit": 1},
    ]
}


def watched(**overrides) -> Driver:
    d = Driver(make_spec(postPromotion={"watch": "60s"}, analysis=WATCH_ANALYSIS, **overrides))
    d.tick()
    d.tick(1, candidate=READY)
    d.tick(1, commands=[Command("promote", full=True)])
    assert d.status.phase is Phase.PROMOTING
    return d


def to_watching() -> Driver:
    d = watched()
    d.tick(1, registry=reg(stable="2", candidate="2"))
    assert d.status.phase is Phase.WATCHING
    return d


def errors(verdict="pass", value=0.0):
    return [CheckResult(name="errors", verdict=verdict, candidate=value)]


PROMOTED_REG = reg(stable="2", candidate="2")


def test_promotion_with_a_watch_goes_to_watching():
    d = to_watching()
    assert (d.status.stable_version, d.status.previous_stable_version) == ("2", "1")
    assert d.routing() == ApplyRouting("2")  # promoted: all traffic on v2, as in Succeeded
    assert d.events() == ["Promoted", "Watching"]
    assert d.status.history[-1].reason == "v2 promoted: alias 'champion' moved; watching it for 60s"
    assert not Phase.WATCHING.terminal and not Phase.GATING.terminal
    assert watch_ends_at(d.spec, d.status) == d.now + timedelta(seconds=60)
    assert not analysis_due(d.spec, d.status, d.now + timedelta(seconds=19))
    assert analysis_due(d.spec, d.status, d.now + timedelta(seconds=20))  # one canary interval


def test_watch_without_a_breach_ends_succeeded():
    d = to_watching()
    for _ in range(2):
        d.tick(20, registry=PROMOTED_REG, checks=errors())
        assert d.status.phase is Phase.WATCHING
    d.tick(20, registry=PROMOTED_REG, checks=errors())
    assert d.status.phase is Phase.SUCCEEDED
    assert d.status.message == "v2 promoted; post-promotion watch passed (60s, no breach)"
    assert "WatchPassed" in d.events()
    assert not any(isinstance(a, (PromoteInRegistry, MarkInRegistry)) for a in d.actions)
    d.tick(100, registry=PROMOTED_REG)
    assert d.status.phase is Phase.SUCCEEDED


def test_watch_breach_undoes_the_promotion():
    d = to_watching()
    d.tick(20, registry=PROMOTED_REG, checks=errors("fail", 0.2))
    assert d.status.phase is Phase.WATCHING  # failureLimit 1: one failure is tolerated
    d.tick(20, registry=PROMOTED_REG, checks=errors("fail", 0.3))
    assert d.status.phase is Phase.ROLLING_BACK and d.status.rollback_kind == "undo"
    assert "WatchBreached" in d.events()
    assert d.status.message.startswith("post-promotion watch: errors")
    assert d.status.message.endswith("v2 replaced by v1 again")
    assert (d.status.stable_version, d.status.candidate_version, d.status.previous_stable_version) == ("1", "2", "2")
    assert d.routing() == ApplyRouting("1")  # clients go back at once
    (promote,) = [a for a in d.actions if isinstance(a, PromoteInRegistry)]
    assert promote.version == "1" and "post-promotion watch" in promote.summary
    d.tick(1, registry=reg(stable="1", candidate="2"))
    (mark,) = [a for a in d.actions if isinstance(a, MarkInRegistry)]
    assert (mark.version, mark.outcome) == ("2", "rolled_back") and "post-promotion watch" in mark.reason
    d.tick(1, registry=reg(stable="1", candidate="2", outcomes={"2": "rolled_back"}))
    assert d.status.phase is Phase.ROLLED_BACK and d.status.stable_version == "1"
    d.tick(30, registry=reg(stable="1", candidate="2"))
    assert d.status.phase is Phase.ROLLED_BACK  # the undone version is not rolled out again


def test_watch_counts_its_own_failures():
    d = Driver(make_spec(postPromotion={"watch": "60s"}, analysis=WATCH_ANALYSIS))
    d.tick()
    d.tick(1, candidate=READY)
    d.tick(30, checks=[*errors("fail", 0.2), *passed("p95")])  # one failure, within failureLimit 1
    assert d.status.phase is Phase.SHADOW and d.status.checks[0].failures == 1
    d.tick(1, commands=[Command("promote", full=True)])
    d.tick(1, registry=PROMOTED_REG)
    assert d.status.phase is Phase.WATCHING
    assert all(c.failures == 0 for c in d.status.checks)  # the canary's failure is not held against the watch
    d.tick(20, registry=PROMOTED_REG, checks=errors("fail", 0.2))
    assert d.status.phase is Phase.WATCHING and d.status.checks[-1].failures == 1


def test_inconclusive_or_error_windows_neither_undo_nor_extend_the_watch():
    d = to_watching()
    d.tick(20, registry=PROMOTED_REG, checks=errors("inconclusive"))
    d.tick(20, registry=PROMOTED_REG, checks=errors("error"))
    assert d.status.phase is Phase.WATCHING
    d.tick(20, registry=PROMOTED_REG, checks=errors("inconclusive"))
    assert d.status.phase is Phase.SUCCEEDED


def test_user_undo_during_the_watch():
    d = to_watching()
    assert command_problem("undo", d.status) is None
    d.tick(5, registry=PROMOTED_REG, commands=[Command("undo")])
    assert d.status.phase is Phase.ROLLING_BACK and "undone by user" in d.status.message


def test_stable_alias_moved_by_hand_ends_the_watch():
    d = to_watching()
    d.tick(5, registry=reg(stable="7", candidate="2"))
    assert d.status.phase is Phase.SUCCEEDED and d.status.stable_version == "7"
    assert "moved to v7 by hand" in d.status.history[-1].reason
    assert not any(isinstance(a, PromoteInRegistry) for a in d.actions)


def test_new_candidate_waits_for_the_watch_to_end():
    d = to_watching()
    d.tick(5, registry=reg(stable="2", candidate="3"))
    assert d.status.phase is Phase.WATCHING and d.status.candidate_version == "2"
    assert "v3 starts when the watch ends" in d.status.message
    d.tick(60, registry=reg(stable="2", candidate="3"))
    assert d.status.phase is Phase.SUCCEEDED
    d.tick(1, registry=reg(stable="2", candidate="3"))
    assert d.status.phase is Phase.SHADOW and (d.status.stable_version, d.status.candidate_version) == ("2", "3")


def test_promotion_without_a_watch_still_succeeds_at_once():
    d = promoted()
    assert d.status.phase is Phase.SUCCEEDED


def test_statuses_with_gate_and_watch_round_trip_through_json():
    d = to_gating()
    d.tick(1, gate_metrics=BAD)
    again = RolloutStatus.model_validate_json(d.status.model_dump_json(by_alias=True))
    assert again == d.status
    w = to_watching()
    assert RolloutStatus.model_validate_json(w.status.model_dump_json(by_alias=True)) == w.status


def test_watch_removed_from_the_spec_ends_it():
    d = to_watching()
    d.spec = make_spec(analysis=WATCH_ANALYSIS)
    d.tick(1, registry=PROMOTED_REG)
    assert d.status.phase is Phase.SUCCEEDED and "removed from the spec" in d.status.message


# ---------------------------------------------------------------------------------------------
# Invariants of the gate and the watch over arbitrary observations


GATED_WATCHED = make_spec(gate=GATE, postPromotion={"watch": "60s"}, analysis=WATCH_ANALYSIS)
_VERSIONS = st.sampled_from(["1", "2", "3", None])
_METRICS = st.sampled_from([GOOD, BAD, offline({}), {}, None])
_chaos = st.builds(
    Observation,
    registry=st.one_of(
        st.just(reg()),
        st.just(reg(stable="2", candidate="2")),
        st.none(),
        st.builds(reg, stable=_VERSIONS, candidate=_VERSIONS, outcomes=st.sampled_from([{}, {"2": "rejected"}, {"2": "rolled_back"}])),
    ),
    candidate=st.one_of(st.none(), st.just(READY)),
    checks=st.one_of(st.none(), st.sampled_from([errors(), errors("fail", 1.0), passed("p95", "errors")])),
    commands=st.lists(st.builds(Command, kind=st.sampled_from(["promote", "abort", "retry", "undo"]), full=st.booleans()), max_size=1),
    gate_metrics=_METRICS,
    gate_error=st.sampled_from([None, "MLflow unreachable"]),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(min_value=0, max_value=40), _chaos), min_size=10, max_size=50))
def test_gate_and_watch_invariants(sequence):
    status, now = RolloutStatus(), T0
    for seconds, obs in sequence:
        now += timedelta(seconds=seconds)
        before = status
        result = step(GATED_WATCHED, status, obs, now)
        status = result.status
        routing = next((a for a in result.actions if isinstance(a, ApplyRouting)), None)
        # Nothing is deployed while gating, nor for a rejected candidate.
        if status.phase is Phase.GATING or status.rollback_kind == "rejected":
            assert routing is None or routing.candidate_version is None
        # A rejection only ever comes from the gate, and only with the gate's reason.
        for mark in (a for a in result.actions if isinstance(a, MarkInRegistry)):
            assert (mark.outcome == "rejected") == (status.rollback_kind == "rejected")
            if mark.outcome == "rejected":
                assert mark.reason.startswith("offline gate failed: ")
        # The gate never passes on metrics it did not get (no command skips it either).
        if before.phase is Phase.GATING and status.phase in (Phase.SHADOW, Phase.CANARY):
            assert obs.gate_metrics and status.history[-1].reason.startswith("offline gate passed")
        # Watching is entered only from a promotion that landed in the registry.
        if status.phase is Phase.WATCHING and before.phase is not Phase.WATCHING:
            assert status.history[-1].from_phase is Phase.PROMOTING
            assert obs.registry is not None and obs.registry.stable_version == status.stable_version
        for earlier, later in pairwise(status.history):
            assert earlier.to is later.from_phase


def test_a_rollback_reason_opens_in_plain_words_then_the_evidence_then_the_checks_failing_beside():
    spec = make_spec(
        analysis={
            "metrics": [
                {"name": "acc", "template": "accuracy", "maxDecrease": "2%"},
                {"name": "p95", "template": "latency_p95", "maxIncrease": "50%", "failureLimit": 1},
            ]
        }
    )
    d = Driver(spec)
    d.tick()
    d.tick(1, candidate=READY)
    acc = CheckResult("acc", "fail", candidate=0.71, baseline=0.96, samples=291, message="0.71 vs stable 0.96 (-26%)")
    p95 = CheckResult("p95", "fail", candidate=0.3, baseline=0.1, message="0.3 vs stable 0.1 (+200%)")
    d.tick(30, checks=[acc, p95])
    assert d.status.phase is Phase.ROLLING_BACK
    lead, evidence = d.status.message.split(" — ", 1)
    assert lead == "v2 answers less accurately than v1: 71% vs 96% of 291 labelled requests"
    assert evidence.startswith("acc 0.71 vs stable 0.96 (-26%) (failed 1x, failureLimit 0)")
    # p95 failed too, but within its failureLimit: it comes after, said as such.
    assert evidence.endswith("; also failing, within their limit: p95 0.3 vs stable 0.1 (+200%)")


def test_alias_moved_during_the_watch_is_rolled_out_when_the_watch_ends():
    d = to_watching()
    moved = reg(stable="2", candidate="3")
    d.tick(20, registry=moved, checks=errors())
    assert d.status.phase is Phase.WATCHING and d.events() == ["CandidateAliasMoved"]
    assert "v3 starts when the watch ends" in d.status.message
    while d.status.phase is Phase.WATCHING:
        d.tick(20, registry=moved, checks=errors())
    assert d.status.phase is Phase.SUCCEEDED
    d.tick(1, registry=moved)
    assert d.status.candidate_version == "3" and not d.status.phase.terminal


# ---------------------------------------------------------------------------------------------
# Alias moves in every phase: the version the alias settles on is the one rolled out, and every
# version it passed through on the way is reported skipped (and tagged so, if it was started).


class FakeRegistry:
    """MLflow as the engine sees it: two aliases and the outcome tags its actions write. A mark is
    reported back for the rollback it belongs to only (reconcile.registry_view checks the reason)."""

    def __init__(self, stable: str = "1", candidate: str | None = "2"):
        self.stable, self.candidate = stable, candidate
        self.tags: dict[str, tuple[str, str]] = {}  # version -> (outcome, reason)

    def view(self, status: RolloutStatus) -> RegistryView:
        outcomes = {}
        mark = self.tags.get(status.candidate_version or "")
        if status.phase is Phase.ROLLING_BACK and mark and mark[1] == status.message:
            outcomes[status.candidate_version or ""] = mark[0]
        return reg(self.stable, self.candidate, outcomes)

    def apply(self, actions: list) -> None:
        for action in actions:
            if isinstance(action, PromoteInRegistry):
                self.tags.setdefault(action.version, ("promoted", ""))
                self.stable = action.version
            elif isinstance(action, MarkInRegistry):
                self.tags[action.version] = (action.outcome, action.reason)


def in_phase(phase: str) -> Driver:
    if phase == "Gating":
        return to_gating()
    if phase == "Watching":
        return to_watching()
    d = to_shadow_ready()
    if phase == "Canary":
        d.tick(30, checks=passed("p95", "agree"))
    elif phase == "Paused":
        d.tick(1, commands=[Command("pause")])
    elif phase == "Promoting":
        d.tick(1, commands=[Command("promote", full=True)])
    elif phase == "RollingBack":
        d.tick(1, candidate=CandidateHealth(ready=False, failure="model server exited (code 1)"))
    assert d.status.phase.value == phase, d.status.phase
    return d


def flap(d: Driver, registry: FakeRegistry, moves: list[str | None], settle_ticks: int = 8) -> list[RecordEvent]:
    """Move the candidate alias through `moves`, one tick each, then tick (20 s apart, so a watch
    ends) until the rollout settles. Returns every event recorded on the way."""
    recorded: list[RecordEvent] = []

    def tick(seconds: float) -> None:
        d.tick(seconds, registry=registry.view(d.status), checks=errors() if d.status.phase is Phase.WATCHING else None)
        registry.apply(d.actions)
        recorded.extend(a for a in d.actions if isinstance(a, RecordEvent))

    for version in moves:
        registry.candidate = version
        tick(1)
    for _ in range(settle_ticks):
        if d.status.phase in (Phase.GATING, Phase.SHADOW) and d.status.candidate_version == moves[-1]:
            break  # started: what happens to it next is any rollout's business
        tick(20)
    return recorded


ROLLOUT_PHASES = ["Gating", "Shadow", "Canary", "Paused", "Promoting", "RollingBack", "Watching"]


@pytest.mark.parametrize("phase", ROLLOUT_PHASES)
def test_alias_moved_on_twice_in_any_phase_rolls_out_the_last_version_and_reports_the_one_between(phase):
    d = in_phase(phase)
    registry = FakeRegistry(stable=d.status.stable_version or "1", candidate="2")
    if phase == "Watching":
        registry.tags["2"] = ("promoted", "")  # promoted before this registry was looked at
    recorded = flap(d, registry, ["3", "4"])
    # v4 (where the alias settled) is being rolled out, against the stable of the moment.
    assert d.status.candidate_version == "4" and d.status.phase in (Phase.GATING, Phase.SHADOW), d.status
    skipped = [e.message for e in recorded if e.reason == "CandidateSkipped"]
    assert any(m.startswith("v3 skipped: alias 'challenger' moved on to v4") for m in skipped), skipped
    assert "3" not in registry.tags  # never started: nothing to tag
    assert all(t.version != "3" for t in d.status.history)
    # v2 keeps its own outcome: promoted if it was, rolled back for its own failure, skipped if cut short.
    expected = {"Promoting": "promoted", "Watching": "promoted", "RollingBack": "rolled_back"}.get(phase, "skipped")
    assert registry.tags["2"][0] == expected, registry.tags


@pytest.mark.parametrize("phase", ROLLOUT_PHASES)
def test_alias_moved_away_and_back_in_any_phase_acts_on_the_version_it_came_back_to(phase):
    d = in_phase(phase)
    registry = FakeRegistry(stable=d.status.stable_version or "1", candidate="2")
    recorded = flap(d, registry, ["3", "2"])
    skipped = [e.message for e in recorded if e.reason == "CandidateSkipped" and e.message.startswith("v3")]
    assert len(skipped) == 1 and skipped[0].startswith("v3 skipped: alias 'challenger' moved on to v2 before"), skipped
    if phase in ("Promoting", "Watching"):
        # v2 is the stable by then: nothing to roll out, and it stays promoted.
        assert d.status.phase is Phase.SUCCEEDED and registry.stable == "2"
    else:
        # Moved away (v2 cut short or failed) and back: v2 runs again, as the README promises.
        assert d.status.candidate_version == "2" and d.status.phase in (Phase.GATING, Phase.SHADOW), d.status
    assert d.status.observed_candidate_version == "2" and d.status.next_candidate_version is None


@pytest.mark.parametrize("phase", ["Shadow", "Canary", "Paused", "Promoting"])
def test_stable_alias_moved_by_hand_mid_rollout_judges_the_candidate_again_against_it(phase):
    d = in_phase(phase)
    d.tick(1, registry=reg(stable="5", candidate="2"))
    assert d.status.stable_version == "5" and d.status.previous_stable_version == "1"
    assert d.status.phase is Phase.SHADOW and d.status.candidate_version == "2"
    assert d.routing() == ApplyRouting("5", "2", "shadow", 0, 50)
    assert d.events() == ["StableAliasMoved", "RolloutStarted"]
    assert not any(isinstance(a, PromoteInRegistry) for a in d.actions)  # the user's stable stands
    # Then the rollout goes on as any other, and a promotion replaces v5, not v1.
    d.tick(1, registry=reg(stable="5", candidate="2"), candidate=READY)
    d.tick(30, registry=reg(stable="5", candidate="2"), checks=passed("p95", "agree"))
    assert d.status.phase is Phase.CANARY and d.routing().stable_version == "5"


@pytest.mark.parametrize("phase", ["Shadow", "Canary", "Paused"])
def test_stable_alias_moved_by_hand_onto_the_candidate_is_a_promotion_by_hand(phase):
    d = in_phase(phase)
    d.tick(1, registry=reg(stable="2", candidate="2"))
    assert d.status.phase is Phase.SUCCEEDED and d.status.stable_version == "2"
    assert d.status.previous_stable_version == "1" and d.routing() == ApplyRouting("2")
    assert "moved to v2 by hand" in d.status.message and d.events() == ["Promoted"]
    assert not any(isinstance(a, PromoteInRegistry | MarkInRegistry) for a in d.actions)
    d.tick(1, registry=reg(stable="2", candidate="2"))
    assert d.status.phase is Phase.SUCCEEDED and d.events() == []


def test_stable_alias_removed_mid_rollout_is_no_new_stable():
    d = in_phase("Canary")
    d.tick(1, registry=reg(stable=None, candidate="2"))
    assert d.status.phase is Phase.CANARY and d.status.stable_version == "1" and d.events() == []


def test_stable_alias_moved_by_hand_during_an_undo_is_kept():
    d = promoted()
    d.tick(5, registry=reg(stable="2", candidate="2"), commands=[Command("undo")])
    assert d.status.phase is Phase.ROLLING_BACK and d.status.stable_version == "1"
    d.tick(1, registry=reg(stable="7", candidate="2"))
    assert d.status.stable_version == "7" and "StableAliasMoved" in d.events()
    assert not any(isinstance(a, PromoteInRegistry) for a in d.actions)  # v1 is not forced back over v7
    (mark,) = [a for a in d.actions if isinstance(a, MarkInRegistry)]
    assert (mark.version, mark.outcome) == ("2", "rolled_back")


def test_a_retry_forgets_where_the_alias_pointed_during_the_rollback():
    # v2 fails; meanwhile the alias visits v3 and comes back; retry in the tick the rollback ends.
    d = to_shadow_ready()
    d.tick(1, candidate=CandidateHealth(ready=False, failure="model server exited (code 1)"))
    d.tick(1, registry=reg(candidate="3"))
    assert d.status.next_candidate_version == "3"
    d.tick(1, registry=reg(candidate="2", outcomes={"2": "rolled_back"}))
    d.tick(1, registry=reg(candidate="2"), commands=[Command("retry")])
    assert d.status.phase is Phase.SHADOW and d.status.next_candidate_version is None
    # A later move supersedes v2 and names only where the alias went: nothing stale reported.
    d.tick(1, registry=reg(candidate="4"))
    d.tick(1, registry=reg(candidate="4", outcomes={"2": "skipped"}))
    assert "CandidateSkipped" in d.events() and all(not m.startswith("v3") for m in event_messages(d))
