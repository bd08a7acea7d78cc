"""What GitOps tools and `kubectl wait` read: the Ready and Promoted conditions the engine derives
from the phase, `status.observedGeneration`, and the Argo CD health check in
manifests/argocd/health.lua run on statuses exactly as the operator writes them."""

from __future__ import annotations

from typing import Any

import pytest

from canary.decision.engine import PROMOTED, READY, Command
from canary.decision.spec import Condition, Phase, RolloutStatus
from controller.kube.rollout_resource import status_patch
from tests.argocd_health import health
from tests.unit.test_engine import Driver, failed, promoted, reg, to_shadow_ready


def condition(status: RolloutStatus, type_: str) -> tuple[str, str]:
    found = [c for c in status.conditions if c.type == type_]
    assert len(found) == 1, status.conditions
    return found[0].status, found[0].reason


def test_ready_and_promoted_follow_a_promotion() -> None:
    d = Driver()
    d.tick(registry=reg(candidate=None))  # nothing to roll out yet: at rest, v1 serving
    assert condition(d.status, READY) == ("True", "Idle")
    assert condition(d.status, PROMOTED) == ("Unknown", "NoCandidate")
    d.tick(1)
    assert d.status.phase is Phase.SHADOW
    assert condition(d.status, READY) == ("False", "Shadow")
    assert condition(d.status, PROMOTED) == ("Unknown", "Shadow")
    d = promoted()
    assert condition(d.status, READY) == ("True", "Succeeded")
    assert condition(d.status, PROMOTED) == ("True", "Promoted")
    [ready] = [c for c in d.status.conditions if c.type == READY]
    assert ready.last_transition_time == d.now  # it changed on the tick that ended the rollout


def test_a_rollback_is_ready_but_not_promoted_and_says_why() -> None:
    d = to_shadow_ready()
    d.tick(30, checks=[failed("p95")])
    assert condition(d.status, READY) == ("False", "RollingBack")
    d.tick(1, registry=reg(outcomes={"2": "rolled_back"}))
    assert condition(d.status, READY) == ("True", "RolledBack")
    [promoted_condition] = [c for c in d.status.conditions if c.type == PROMOTED]
    assert (promoted_condition.status, promoted_condition.reason) == ("False", "RolledBack")
    assert "p95" in promoted_condition.message


def test_an_abort_is_not_promoted_and_no_stable_version_is_not_ready() -> None:
    d = to_shadow_ready()
    d.tick(1, commands=[Command("abort")])
    d.tick(1, registry=reg(outcomes={"2": "aborted"}))
    assert condition(d.status, PROMOTED) == ("False", "Aborted")
    nothing = Driver()
    nothing.tick(registry=reg(stable=None, candidate=None))
    assert condition(nothing.status, READY) == ("False", "NoStableVersion")


def written(status: RolloutStatus, generation: int = 4) -> dict[str, Any]:
    """The ModelRollout as the API server returns it after the operator's status write."""
    return {"metadata": {"name": "iris", "generation": generation}, "status": status_patch(status)["status"]}


EXPECTED = {
    Phase.IDLE: "Healthy", Phase.GATING: "Progressing", Phase.SHADOW: "Progressing", Phase.CANARY: "Progressing",
    Phase.PROMOTING: "Progressing", Phase.WATCHING: "Progressing", Phase.SUCCEEDED: "Healthy",
    Phase.ROLLING_BACK: "Progressing", Phase.ROLLED_BACK: "Degraded", Phase.PAUSED: "Suspended",
    Phase.ABORTED: "Degraded",
}  # fmt: skip


@pytest.mark.parametrize("phase", list(Phase))
def test_argocd_health_of_every_phase(phase: Phase) -> None:
    status = RolloutStatus(phase=phase, stable_version="1", candidate_version="2", message="why", observed_generation=4)
    state, message = health(written(status))
    assert state == EXPECTED[phase]
    assert message == f"{phase.value}: why"


def test_argocd_health_of_statuses_the_engine_wrote() -> None:
    d = promoted()
    d.status.observed_generation = 4
    assert health(written(d.status)) == ("Healthy", f"Succeeded: {d.status.message}")
    back = to_shadow_ready()
    back.tick(30, checks=[failed("p95")])
    back.tick(1, registry=reg(outcomes={"2": "rolled_back"}))
    back.status.observed_generation = 4
    state, message = health(written(back.status))
    assert state == "Degraded" and "p95" in message


def test_argocd_health_waits_for_the_operator_and_reports_what_it_cannot_use() -> None:
    assert health({"metadata": {"name": "iris", "generation": 1}}) == (
        "Progressing", "Waiting for the operator to read the ModelRollout",
    )  # fmt: skip
    current = RolloutStatus(phase=Phase.SUCCEEDED, stable_version="2", observed_generation=4)
    assert health(written(current, generation=5)) == ("Progressing", "Waiting for the operator to act on generation 5")
    current.conditions.append(
        Condition(type="SpecValid", status="False", reason="InvalidSpec", message="spec.canary.steps: steps must increase")
    )
    assert health(written(current, generation=5)) == ("Degraded", "spec.canary.steps: steps must increase")
    no_stable = RolloutStatus(phase=Phase.IDLE, observed_generation=4)
    assert health(written(no_stable)) == ("Degraded", "No version holds the stable alias: nothing to serve")

