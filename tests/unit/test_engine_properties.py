"""Invariants of the engine over arbitrary sequences of observations (hypothesis)."""

from __future__ import annotations

from datetime import timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from canary.decision.analysis import CheckResult
from canary.decision.engine import (
    ApplyRouting,
    CandidateHealth,
    Command,
    Observation,
    PromoteInRegistry,
    RegistryView,
    step,
)
from canary.decision.spec import Phase, RolloutStatus
from tests.unit.test_engine import T0, make_spec

SPEC = make_spec(
    analysis={
        "metrics": [
            {"name": "p95", "template": "latency_p95", "maxIncrease": "50%", "failureLimit": 2},
            {"name": "err", "template": "error_rate", "max": 0.05, "failureLimit": 1, "consecutive": True},
            {"name": "agree", "template": "shadow_agreement", "min": 0.9, "failureLimit": 2},
        ]
    }
)
LIMITS = {m.name: m.failure_limit for m in SPEC.analysis.metrics}
VERSIONS = st.sampled_from(["1", "2", "3", None])
VERDICTS = st.sampled_from(["pass", "fail", "inconclusive", "error"])

HEALTHY_REGISTRY = RegistryView(model_exists=True, stable_version="1", candidate_version="2")
registries = st.one_of(
    st.just(HEALTHY_REGISTRY),
    st.just(HEALTHY_REGISTRY),
    st.none(),
    st.builds(
        RegistryView,
        model_exists=st.booleans(),
        stable_version=VERSIONS,
        candidate_version=VERSIONS,
        outcomes=st.dictionaries(st.sampled_from(["1", "2", "3"]), st.sampled_from(["promoted", "rolled_back", "aborted"])),
    ),
)
checks = st.one_of(
    st.none(),
    st.lists(
        st.builds(CheckResult, name=st.sampled_from(sorted(LIMITS)), verdict=VERDICTS), unique_by=lambda c: c.name
    ),
)
commands = st.lists(
    st.builds(Command, kind=st.sampled_from(["promote", "abort", "pause", "resume", "retry"]), full=st.booleans()),
    max_size=2,
)
chaotic = st.builds(
    Observation,
    registry=registries,
    candidate=st.one_of(st.none(), st.builds(CandidateHealth, ready=st.booleans(), failure=st.sampled_from([None, None, "crash"]))),
    checks=checks,
    commands=commands,
)
# Mostly-healthy ticks: without them random sequences rarely get past the first step, and the
# properties about late steps and promotion would hold vacuously.
healthy = st.builds(
    Observation,
    registry=st.just(HEALTHY_REGISTRY),
    candidate=st.just(CandidateHealth(ready=True)),
    checks=st.one_of(
        st.none(),
        st.lists(
            st.builds(CheckResult, name=st.sampled_from(sorted(LIMITS)), verdict=st.sampled_from(["pass"] * 6 + ["fail", "inconclusive"])),
            unique_by=lambda c: c.name,
        ),
    ),
)
observations = st.one_of(healthy, healthy, healthy, chaotic)
ticks = st.lists(st.tuples(st.integers(min_value=0, max_value=60), observations), min_size=15, max_size=60)


def run(sequence):
    status, now = RolloutStatus(), T0
    for seconds, obs in sequence:
        now += timedelta(seconds=seconds)
        before = status
        result = step(SPEC, status, obs, now)
        status = result.status
        yield before, obs, result


@settings(max_examples=300, deadline=None)
@given(ticks)
def test_weights_never_leave_the_step_plan(sequence):
    allowed = {0, 100, *SPEC.canary.steps}
    for _, _, result in run(sequence):
        w = result.status.weights
        assert w.candidate in allowed and w.stable + w.candidate == 100
        assert w.shadow in (0, SPEC.shadow.percent)
        for action in result.actions:
            if isinstance(action, ApplyRouting):
                assert action.candidate_weight in allowed
                assert action.candidate_weight == 0 or action.candidate_role == "canary"
                assert action.shadow_percent == 0 or action.candidate_role == "shadow"


@settings(max_examples=300, deadline=None)
@given(ticks)
def test_terminal_phases_are_absorbing_without_a_new_candidate_or_retry(sequence):
    for before, obs, result in run(sequence):
        if before.phase not in (Phase.SUCCEEDED, Phase.ROLLED_BACK, Phase.ABORTED):
            continue
        new_candidate = obs.registry is not None and obs.registry.candidate_version != before.observed_candidate_version
        retried = any(c.kind == "retry" for c in obs.commands)
        if not new_candidate and not retried:
            assert result.status.phase is before.phase
            assert not any(isinstance(a, PromoteInRegistry) for a in result.actions)


@settings(max_examples=300, deadline=None)
@given(ticks)
def test_no_promotion_after_more_failures_than_the_limit(sequence):
    for _, _, result in run(sequence):
        status = result.status
        if status.phase in (Phase.PROMOTING, Phase.SUCCEEDED) or any(
            isinstance(a, PromoteInRegistry) for a in result.actions
        ):
            for check in status.checks:
                assert check.failures <= LIMITS[check.name], (check, status.phase)


@settings(max_examples=200, deadline=None)
@given(ticks)
def test_history_has_no_gaps(sequence):
    for before, _, result in run(sequence):
        history = result.status.history
        for earlier, later in zip(history, history[1:]):
            assert earlier.to is later.from_phase
            assert earlier.time <= later.time
        if result.status.phase is not before.phase:
            assert history and history[-1].to is result.status.phase
