"""The rollout state machine: status + observations + now -> new status + actions.

Pure and deterministic: no I/O and no clock of its own, so the local runner and the Kubernetes
operator drive the very same decisions, and every transition is unit-tested with plain values.

    Idle -> [Gating] -> Shadow -> Canary(step 0..n-1) -> Promoting -> [Watching] -> Succeeded
               \\--------------+-----------+---------> RollingBack -> RolledBack | Aborted
    Gating (spec.gate): the candidate's MLflow metrics are judged before it is deployed; a failure
      is a rollback of kind `rejected` (RollingBack marks the version, RolledBack), a pass goes on
    Paused: entered from Shadow/Canary by `pause`, left by `resume` (or promote/abort)
    Watching (spec.postPromotion): the promoted version is judged for a while; a breach undoes it
    Succeeded | Watching -> RollingBack (`undo`): the stable alias goes back to the previous version

The engine is level-triggered. Actions describe the desired state (the routing to apply, the
registry write to make) and are repeated on every tick until an observation shows them done:
`Promoting` re-issues the promotion until the registry's stable alias points at the candidate,
`RollingBack` re-issues the rollback mark until the version carries it. A controller killed at any
point therefore restarts into the same phase and simply carries out the same idempotent actions.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal

from canary.decision import gate
from canary.decision.analysis import CheckResult
from canary.decision.durations import format_duration, parse_duration
from canary.decision.gate import OfflineMetrics
from canary.decision.plain_reason import plain_sentence
from canary.decision.spec import (
    Condition,
    MetricStatus,
    ModelRolloutSpec,
    Phase,
    RollbackKind,
    RolloutStatus,
    Transition,
    Weights,
)

# MLflow tag values (`modelrollout.status`) the engine reads back to know a write-back landed.
PROMOTED = "promoted"
ROLLED_BACK = "rolled_back"
ABORTED = "aborted"
REJECTED = "rejected"
# Superseded before it was judged (the candidate alias moved on): not a verdict, so a version
# tagged `skipped` is rolled out again whenever the alias points at it.
SKIPPED = "skipped"
# Not a tag: the controller reports this when the version no longer exists, so nothing is left to mark.
DELETED = "deleted"
HISTORY_LIMIT = 200

ACTIVE = (Phase.SHADOW, Phase.CANARY)
METRICS_AVAILABLE = "MetricsAvailable"  # condition: the platform series the checks read exist
# Conditions for `kubectl wait` and GitOps health checks, derived from the phase at each tick's end:
# Ready — at rest (no rollout in progress) with a stable version serving; Promoted — how the last
# candidate's rollout ended (Unknown while one is in progress).
READY = "Ready"
PROMOTED = "Promoted"
PHASE_CONDITIONS = (READY, PROMOTED)  # the phase said again: views that show the phase leave them out


# ---------------------------------------------------------------------------------------------
# Inputs


@dataclass(frozen=True)
class RegistryView:
    """What the registry says this tick (translated by the controller from registry/)."""

    model_exists: bool
    stable_version: str | None
    candidate_version: str | None
    # `modelrollout.status` tags the controller read, by version (only those it was asked for).
    outcomes: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class CandidateHealth:
    ready: bool
    failure: str | None = None


CommandKind = Literal["promote", "abort", "pause", "resume", "retry", "undo"]


@dataclass(frozen=True)
class Command:
    kind: CommandKind
    full: bool = False  # promote: straight to Promoting instead of one step


@dataclass(frozen=True)
class Observation:
    registry: RegistryView | None = None  # None: the registry could not be read this tick
    registry_error: str | None = None
    candidate: CandidateHealth | None = None
    checks: Sequence[CheckResult] | None = None  # set only on ticks where analysis ran
    commands: Sequence[Command] = ()
    # Gating only: each version's MLflow metrics (gate.versions_needed), or None when they could not
    # be read this tick, with the reason in gate_error. No metrics is never a verdict.
    gate_metrics: Mapping[str, OfflineMetrics] | None = None
    gate_error: str | None = None
    # Whether the platform series the checks read exist in Prometheus at all (canary/decision/series_check.py):
    # `series_checked` False means nobody looked this tick (then `series_problem` says nothing).
    series_checked: bool = False
    series_problem: str | None = None


# ---------------------------------------------------------------------------------------------
# Outputs


@dataclass(frozen=True)
class ApplyRouting:
    stable_version: str | None
    candidate_version: str | None = None
    candidate_role: Literal["shadow", "canary"] | None = None
    candidate_weight: int = 0
    shadow_percent: int = 0


@dataclass(frozen=True)
class PromoteInRegistry:
    version: str
    summary: str


@dataclass(frozen=True)
class MarkInRegistry:
    version: str
    outcome: Literal["rolled_back", "aborted", "rejected", "skipped"]
    reason: str


@dataclass(frozen=True)
class RecordEvent:
    type: Literal["Normal", "Warning"]
    reason: str
    message: str


Action = ApplyRouting | PromoteInRegistry | MarkInRegistry | RecordEvent


@dataclass(frozen=True)
class StepResult:
    status: RolloutStatus
    actions: list[Action]


# ---------------------------------------------------------------------------------------------
# Time windows the controller asks about


def window_seconds(spec: ModelRolloutSpec, status: RolloutStatus) -> float:
    """Length of the current analysis window: the shadow's duration, or the canary interval."""
    if status.phase is Phase.SHADOW:
        return parse_duration(spec.shadow.duration)
    return parse_duration(spec.canary.interval)


def analysed_seconds(status: RolloutStatus, now: datetime) -> float | None:
    """How long the current step has been analysed (since its candidate was ready): the window
    of `judge: sequential` checks. None outside an analysed step."""
    if status.analysis_started_at is None:
        return None
    return max((now - status.analysis_started_at).total_seconds(), 0.0)


def analysis_due(spec: ModelRolloutSpec, status: RolloutStatus, now: datetime) -> bool:
    """True when the controller should query metrics and pass the results in `Observation.checks`.

    In Watching the checks are `spec.watch_checks()`, measured on the promoted version, which now
    serves as the stable (role `stable`).
    """
    if status.phase not in (*ACTIVE, Phase.WATCHING) or status.window_started_at is None:
        return False
    return now >= status.window_started_at + timedelta(seconds=window_seconds(spec, status))


def gate_versions(spec: ModelRolloutSpec, status: RolloutStatus) -> tuple[str, ...]:
    """Whose MLflow metrics the controller should read this tick for `Observation.gate_metrics`."""
    if status.phase is not Phase.GATING or spec.gate is None or not status.candidate_version:
        return ()
    return gate.versions_needed(spec.gate, status.candidate_version, status.stable_version)


def watch_ends_at(spec: ModelRolloutSpec, status: RolloutStatus) -> datetime | None:
    if status.phase is not Phase.WATCHING or spec.post_promotion is None or status.phase_started_at is None:
        return None
    return status.phase_started_at + timedelta(seconds=parse_duration(spec.post_promotion.watch))


def candidate_role(status: RolloutStatus) -> Literal["shadow", "canary"]:
    phase = status.paused_from if status.phase is Phase.PAUSED else status.phase
    return "shadow" if phase is Phase.SHADOW else "canary"


def command_problem(kind: CommandKind, status: RolloutStatus) -> str | None:
    """Why a user command cannot apply to a rollout in this status, or None when it can.

    One rule for the engine (which ignores such a command with a Warning event) and for the CLI
    (which refuses it up front with a non-zero exit).
    """
    phase = status.phase
    if kind == "pause":
        applies = phase in ACTIVE
    elif kind == "resume":
        applies = phase is Phase.PAUSED and status.paused_from is not None
    elif kind == "promote":
        applies = phase in ACTIVE or phase is Phase.PAUSED
    elif kind == "abort":  # also while gating: the candidate is not deployed, but the user may stop it
        applies = phase in ACTIVE or phase in (Phase.PAUSED, Phase.GATING)
    elif kind == "undo":  # back to the stable before the last promotion (also during its watch)
        applies = phase in (Phase.SUCCEEDED, Phase.WATCHING)
        if applies and not (status.previous_stable_version and status.candidate_version == status.stable_version):
            return "undo: no promotion to undo (no previous stable version recorded)"
    else:  # retry: a rolled-back or aborted candidate, or one skipped because it failed before
        applies = phase in (Phase.ROLLED_BACK, Phase.ABORTED) or (phase is Phase.IDLE and bool(status.candidate_version))
        if applies and not status.candidate_version:
            return "retry: there is no candidate to retry"
        if applies and status.stable_version is None:
            return "retry: no stable version to compare the candidate with"
    if not applies:
        return f"{kind}: not possible in phase {phase.value}"
    return None


# ---------------------------------------------------------------------------------------------
# The step


class _Step:
    """One tick's working state: a private copy of the status and the actions gathered so far."""

    def __init__(self, spec: ModelRolloutSpec, status: RolloutStatus, obs: Observation, now: datetime):
        self.spec = spec
        self.s = status.model_copy(deep=True)
        self.obs = obs
        self.now = now
        self.actions: list[Action] = []
        self.commands_applied = False
        self.deadline = timedelta(seconds=parse_duration(spec.progress_deadline))

    # -- helpers ------------------------------------------------------------------------------

    def event(self, type_: Literal["Normal", "Warning"], reason: str, message: str) -> None:
        self.actions.append(RecordEvent(type_, reason, message))

    def transition(self, to: Phase, reason: str) -> None:
        s = self.s
        s.history.append(
            Transition(time=self.now, from_phase=s.phase, to=to, version=s.candidate_version, reason=reason)
        )
        del s.history[:-HISTORY_LIMIT]
        s.phase = to
        s.phase_started_at = self.now
        s.message = reason

    def condition(self, type_: str, ok: bool | None, reason: str, message: str = "") -> None:
        status = "Unknown" if ok is None else ("True" if ok else "False")
        for existing in self.s.conditions:
            if existing.type == type_:
                if existing.status != status:
                    existing.last_transition_time = self.now
                existing.status, existing.reason, existing.message = status, reason, message
                return
        self.s.conditions.append(
            Condition(type=type_, status=status, reason=reason, message=message, last_transition_time=self.now)
        )

    def rest_conditions(self) -> None:
        """Ready and Promoted from the phase this tick ends in (see READY, PROMOTED)."""
        s = self.s
        if not s.phase.terminal:
            self.condition(READY, False, s.phase.value, f"rolling out v{s.candidate_version}: {s.phase.value}")
        elif s.stable_version is None:
            self.condition(READY, False, "NoStableVersion", "no version holds the stable alias yet")
        else:
            self.condition(READY, True, s.phase.value, f"v{s.stable_version} serves all traffic")
        if s.phase is Phase.SUCCEEDED:
            self.condition(PROMOTED, True, "Promoted", f"v{s.stable_version} promoted")
        elif s.phase in (Phase.ROLLED_BACK, Phase.ABORTED):
            self.condition(PROMOTED, False, s.phase.value, s.message)
        elif s.phase is Phase.IDLE:
            self.condition(PROMOTED, None, "NoCandidate", "no candidate rolled out yet")
        else:
            self.condition(PROMOTED, None, s.phase.value, f"v{s.candidate_version} is being rolled out")

    def set_weights(self) -> None:
        s, steps = self.s, self.spec.canary.steps
        if s.phase is Phase.SHADOW:
            s.weights = Weights(stable=100, candidate=0, shadow=self.spec.shadow.percent)
        elif s.phase is Phase.CANARY and s.step is not None:
            s.weights = Weights(stable=100 - steps[s.step], candidate=steps[s.step], shadow=0)
        elif s.phase is Phase.PROMOTING:
            s.weights = Weights(stable=0, candidate=100, shadow=0)
        elif s.phase is not Phase.PAUSED:
            s.weights = Weights()

    def routing(self) -> ApplyRouting | None:
        s = self.s
        if s.phase in (Phase.SHADOW, Phase.CANARY, Phase.PROMOTING, Phase.PAUSED) and s.candidate_version:
            role = candidate_role(s)
            return ApplyRouting(
                stable_version=s.stable_version,
                candidate_version=s.candidate_version,
                candidate_role=role,
                candidate_weight=s.weights.candidate if role == "canary" else 0,
                shadow_percent=s.weights.shadow if role == "shadow" else 0,
            )
        if s.stable_version is None:
            return None
        return ApplyRouting(stable_version=s.stable_version)

    # -- entering phases ------------------------------------------------------------------------

    def enter_step(self, phase: Phase, step: int | None, reason: str) -> None:
        self.transition(phase, reason)
        self.s.step = step
        self.s.step_started_at = self.now
        self.s.window_started_at = None  # set once the candidate is ready
        self.s.analysis_started_at = None
        self.set_weights()

    def start(self, version: str, reason: str) -> None:
        s = self.s
        s.candidate_version = version
        s.observed_candidate_version = version
        s.next_candidate_version = None  # acted upon now (a retry starts without passing at_rest)
        s.rollback_kind = None
        s.paused_from = None
        s.checks = []
        s.gate_checks = []
        if self.spec.gate is not None:
            # Nothing is deployed yet: the controller reads the metrics next tick, the gate decides.
            self.enter_step(Phase.GATING, None, reason)
            self.condition("GatePassed", None, "Evaluating", f"judging the MLflow metrics of v{version} against v{s.stable_version}")
            self.event("Normal", "RolloutStarted", f"v{version}: {reason}; stable is v{s.stable_version}; offline gate first")
            return
        self.deploy(reason)
        self.event("Normal", "RolloutStarted", f"v{version}: {reason}; stable is v{s.stable_version}")

    def deploy(self, reason: str) -> None:
        """The candidate's first traffic: the shadow, or the first canary step without one."""
        if self.spec.shadow.enabled:
            self.enter_step(Phase.SHADOW, None, reason)
        else:
            self.enter_step(Phase.CANARY, 0, reason)

    def advance(self, reason: str) -> None:
        s, steps = self.s, self.spec.canary.steps
        # The history's reason says where the rollout went, so "Canary -> Canary" reads clearly.
        if s.phase is Phase.SHADOW:
            self.enter_step(Phase.CANARY, 0, f"{reason}; step 1/{len(steps)} ({steps[0]}%)")
        elif s.step is not None and s.step + 1 < len(steps):
            k = s.step + 1
            self.enter_step(Phase.CANARY, k, f"{reason}; step {k + 1}/{len(steps)} ({steps[k]}%)")
        else:
            self.begin_promotion(reason)
            return
        self.event("Normal", "StepAdvanced", f"v{s.candidate_version}: {reason}; now {self.describe_position()}")

    def begin_promotion(self, reason: str) -> None:
        self.transition(Phase.PROMOTING, reason)
        self.s.step = None
        self.set_weights()
        self.event("Normal", "Promoting", f"v{self.s.candidate_version}: {reason}")

    def begin_rollback(self, kind: RollbackKind, reason: str) -> None:
        self.s.rollback_kind = kind
        self.transition(Phase.ROLLING_BACK, reason)
        self.s.step = None
        self.s.paused_from = None
        self.set_weights()
        self.event("Warning", "Rejected" if kind == "rejected" else "RollingBack", f"v{self.s.candidate_version}: {reason}")

    def undo(self, reason: str) -> None:
        """Back to the stable before the last promotion (the `undo` command, or a watch breach).

        The promoted version becomes the candidate being rolled back, the one before it the stable
        again; RollingBack then routes to it, moves the stable alias back and marks the undone
        version, like any rollback, so it is not rolled out again by itself.
        """
        s = self.s
        undone, restored = s.stable_version, s.previous_stable_version
        s.candidate_version, s.stable_version, s.previous_stable_version = undone, restored, undone
        self.begin_rollback("undo", f"{reason}: v{undone} replaced by v{restored} again")

    def describe_position(self) -> str:
        s = self.s
        if s.phase is Phase.SHADOW:
            return f"shadow ({self.spec.shadow.percent}% mirrored)"
        if s.phase is Phase.CANARY and s.step is not None:
            return f"canary step {s.step + 1}/{len(self.spec.canary.steps)} ({self.spec.canary.steps[s.step]}%)"
        return s.phase.value

    # -- commands -------------------------------------------------------------------------------

    def command(self, cmd: Command) -> None:
        s = self.s
        problem = command_problem(cmd.kind, s)
        if problem is not None:
            self.event("Warning", "CommandIgnored", problem)
            return
        # The analysis results of this tick (if any) measured the step before the command.
        self.commands_applied = True
        if cmd.kind == "pause":
            s.paused_from = s.phase
            self.transition(Phase.PAUSED, "paused by user")
            self.event("Normal", "Paused", f"v{s.candidate_version} paused at {self.describe_position()}")
        elif cmd.kind == "resume":
            self.transition(s.paused_from or Phase.CANARY, "resumed by user")
            s.paused_from = None
            s.step_started_at = self.now
            if s.window_started_at is not None:
                s.window_started_at = self.now
            self.set_weights()
        elif cmd.kind == "promote":
            if s.phase is Phase.PAUSED:
                self.transition(s.paused_from or Phase.CANARY, "resumed by promote")
                s.paused_from = None
            if cmd.full:
                self.begin_promotion("promoted by user (full)")
            else:
                self.advance("step promoted by user")
        elif cmd.kind == "abort":
            self.begin_rollback("abort", "aborted by user")
        elif cmd.kind == "retry":
            self.start(s.candidate_version or "", "retried by user")
        elif cmd.kind == "undo":
            self.undo("undone by user")

    # -- phases ---------------------------------------------------------------------------------

    def at_rest(self) -> None:
        """Idle, Succeeded, RolledBack, Aborted: serve the stable, start on a new candidate."""
        s, reg, model = self.s, self.obs.registry, self.spec.model
        if reg is None:
            return
        if not reg.model_exists:
            s.message = f"registered model {model.name!r} not found in MLflow"
            return
        if reg.stable_version is not None and reg.stable_version != s.stable_version:
            # Nothing is rolling out: the registry's stable alias is the truth (set by hand or first seen).
            s.previous_stable_version = s.stable_version
            s.stable_version = reg.stable_version
        candidate = reg.candidate_version
        pending, s.next_candidate_version = s.next_candidate_version, None
        if pending is not None and pending != candidate:
            self.skipped(pending, candidate)
        if candidate is None:
            # Forget the alias target, so setting the alias on the same version again restarts it.
            s.observed_candidate_version = None
            return
        if candidate == s.observed_candidate_version:
            return
        if candidate == s.stable_version:
            s.observed_candidate_version = candidate
            return
        if s.stable_version is None:
            s.message = (
                f"waiting for a stable version: alias {model.stable_alias!r} of {model.name!r} is not set, "
                f"so v{candidate} has nothing to be compared with"
            )
            return
        earlier = reg.outcomes.get(candidate)
        if s.candidate_version is None and earlier in (ROLLED_BACK, ABORTED, REJECTED):
            # Fresh state but the registry remembers: do not roll out a failed version again.
            s.observed_candidate_version = candidate
            s.candidate_version = candidate
            s.message = f"v{candidate} was {earlier.replace('_', ' ')} before; move the alias again or retry"
            self.event("Warning", "CandidateSkipped", s.message)
            return
        self.start(candidate, f"alias {model.candidate_alias!r} moved to v{candidate}")

    def superseded(self) -> bool:
        reg, s, alias = self.obs.registry, self.s, self.spec.model.candidate_alias
        if reg is None or reg.candidate_version == s.observed_candidate_version:
            return False
        if reg.candidate_version is None:
            self.begin_rollback("superseded", f"alias {alias!r} was removed from v{s.candidate_version}")
        else:
            self.begin_rollback("superseded", f"superseded: alias {alias!r} moved to v{reg.candidate_version}")
        return True

    def alias_departure(self) -> None:
        """The candidate alias left the version acted upon while a phase runs that does not stop for
        it (Promoting, RollingBack, Watching, and the rollback a supersede has just begun): forget the
        observation, so that whatever the alias points at once the rollout is at rest -- a new version,
        or this one again -- is acted upon then. Kept, a flap away and back (v3 -> v7 -> v3) would look
        like no move at all, and the user's last intent would be dropped without a word.

        Where the alias points meanwhile is `next_candidate_version`; a version it leaves before it
        could start is reported skipped (`skipped`), so no version the user named passes unsaid."""
        s, reg, alias = self.s, self.obs.registry, self.spec.model.candidate_alias
        if s.phase.terminal or reg is None:
            return
        target = reg.candidate_version
        if s.observed_candidate_version is not None:
            if target == s.observed_candidate_version:
                return
            s.observed_candidate_version = None
            if not (s.phase is Phase.ROLLING_BACK and s.rollback_kind == "superseded"):
                # (a superseding rollback's own event says where the alias went)
                where = f"moved to v{target}" if target else "was removed"
                self.event(
                    "Normal",
                    "CandidateAliasMoved",
                    f"alias {alias!r} {where} while v{s.candidate_version} is {s.phase.value}; "
                    f"acted upon once {s.phase.value} ends, wherever the alias points then",
                )
        elif target == s.next_candidate_version:
            return
        if s.next_candidate_version is not None:
            self.skipped(s.next_candidate_version, target)
        s.next_candidate_version = target

    def skipped(self, version: str, now_at: str | None) -> None:
        """`version` had the candidate alias while another rollout phase ran, and lost it before it
        could start: say so (the version acted upon and the stable are not skipped)."""
        s = self.s
        if version in (s.candidate_version, s.stable_version):
            return
        alias = self.spec.model.candidate_alias
        where = f"moved on to v{now_at}" if now_at else "was removed"
        self.event(
            "Warning",
            "CandidateSkipped",
            f"v{version} skipped: alias {alias!r} {where} before v{version} could be rolled out "
            f"(v{s.candidate_version} was {s.phase.value})",
        )

    def stable_moved_by_hand(self) -> bool:
        """The stable alias moved by hand mid-rollout (Shadow, Canary, Paused, Promoting): the user's
        stable stands. Onto the candidate: it was promoted by hand, the rollout has succeeded. Onto
        another version: the candidate starts again, judged against that one (a promotion now would
        overwrite the user's choice; the comparison so far was with a version no longer the stable).
        A removed stable alias is no new stable: the rollout goes on against the last one."""
        s, reg, alias = self.s, self.obs.registry, self.spec.model.stable_alias
        if reg is None or reg.stable_version is None or reg.stable_version == s.stable_version:
            return False
        new, candidate = reg.stable_version, s.candidate_version or ""
        if new == candidate:
            if s.phase is Phase.PROMOTING:
                return False  # the promotion landing (promoting() finishes it)
            s.previous_stable_version, s.stable_version = s.stable_version, new
            self.transition(Phase.SUCCEEDED, f"alias {alias!r} moved to v{new} by hand: promoted outside the rollout")
            s.step = s.paused_from = None
            self.set_weights()
            self.event("Normal", "Promoted", f"v{new} is the stable version (alias {alias!r} moved by hand)")
            return True
        was = s.phase.value
        s.previous_stable_version, s.stable_version = s.stable_version, new
        self.event(
            "Warning",
            "StableAliasMoved",
            f"alias {alias!r} moved to v{new} by hand while v{candidate} was {was}: v{candidate} starts again against v{new}",
        )
        self.start(candidate, f"alias {alias!r} moved to v{new} by hand; v{candidate} judged again against it")
        return True

    def candidate_failed(self) -> bool:
        health = self.obs.candidate
        if health is not None and health.failure:
            self.condition("CandidateReady", False, "CandidateFailed", health.failure)
            self.begin_rollback("failure", f"candidate failed: {health.failure}")
            return True
        return False

    def series_condition(self) -> None:
        """`MetricsAvailable`: False (with an Event when the problem is new) while Prometheus has none
        of some series the checks read -- every window would be "no data" until the deadline."""
        if not self.obs.series_checked:
            return
        problem = self.obs.series_problem
        current = next((c for c in self.s.conditions if c.type == METRICS_AVAILABLE), None)
        if problem:
            if current is None or current.status != "False" or current.message != problem:
                self.event("Warning", "MetricsMissing", problem)
            self.condition(METRICS_AVAILABLE, False, "SeriesMissing", problem)
        elif current is not None:
            self.condition(METRICS_AVAILABLE, True, "SeriesFound")

    def series_missing(self) -> str:
        """The MetricsAvailable problem, as a suffix for a deadline's message."""
        current = next((c for c in self.s.conditions if c.type == METRICS_AVAILABLE), None)
        return f"; {current.message}" if current is not None and current.status == "False" else ""

    def active(self) -> None:
        s = self.s
        if self.superseded() or self.stable_moved_by_hand() or self.candidate_failed():
            return
        self.series_condition()
        health = self.obs.candidate
        if s.window_started_at is None:
            if health is not None and health.ready:
                self.condition("CandidateReady", True, "Ready")
                s.window_started_at = s.analysis_started_at = self.now
            elif self.deadline_passed():
                # Readiness is unknown while the registry is down (no artifact to start from): say so.
                cause = f" (registry unavailable: {self.obs.registry_error})" if self.obs.registry is None and self.obs.registry_error else ""
                self.begin_rollback(
                    "failure", f"candidate not ready within progressDeadline ({self.spec.progress_deadline}){cause}"
                )
                return
            else:
                self.condition("CandidateReady", False, "Starting", f"waiting for v{s.candidate_version} to be ready")
                return
        if self.obs.checks is not None and not self.commands_applied:
            self.judge(self.obs.checks)
            if s.phase not in ACTIVE:
                return
        if self.deadline_passed():
            last = "; ".join(f"{c.name}: {c.verdict} ({c.message})" for c in s.checks) or "no analysis result"
            self.begin_rollback(
                "failure",
                f"no progress within progressDeadline ({self.spec.progress_deadline}) at {self.describe_position()}: "
                f"{last}{self.series_missing()}",
            )

    def deadline_passed(self) -> bool:
        started = self.s.step_started_at or self.now
        return self.now - started > self.deadline

    def judge(self, results: Sequence[CheckResult]) -> None:
        breached = self.tally(results)
        verdicts = [r.verdict for r in results]
        if breached:
            self.begin_rollback("failure", self.breach_reason(results, breached))
        elif all(v == "pass" for v in verdicts):
            self.advance(f"all {len(verdicts)} checks passed" if verdicts else "window elapsed (no checks)")
        else:
            errors = [r for r in results if r.verdict == "error"]
            if errors:
                self.event("Warning", "AnalysisError", "; ".join(f"{r.name}: {r.message}" for r in errors))

    def breach_reason(self, results: Sequence[CheckResult], breached: Sequence[tuple[CheckResult, str]]) -> str:
        """A rollback's reason: the first breached check in plain words, then every breached check's
        evidence, then the checks that failed beside them without being past their limit."""
        s = self.s
        first = breached[0][0]
        check = next((c for c in self.spec.analysis.metrics if c.name == first.name), None)
        lead = plain_sentence(check.template if check else None, first, s.candidate_version or "?", s.stable_version or "?")
        reason = f"{lead} — {'; '.join(text for _, text in breached)}"
        names = {r.name for r, _ in breached}
        also = [f"{r.name} {r.message}" for r in results if r.verdict == "fail" and r.name not in names]
        return reason + (f"; also failing, within their limit: {'; '.join(also)}" if also else "")

    def tally(self, results: Sequence[CheckResult]) -> list[tuple[CheckResult, str]]:
        """Record one window's verdicts in the status; the checks now past their failureLimit, each
        with its evidence."""
        s = self.s
        previous = {c.name: c for c in s.checks}
        checks, breached = [], []
        for result in results:
            spec_check = next((c for c in self.spec.analysis.metrics if c.name == result.name), None)
            failures = previous[result.name].failures if result.name in previous else 0
            if result.verdict == "fail":
                failures += 1
            elif result.verdict == "pass" and spec_check is not None and spec_check.consecutive:
                failures = 0
            limit = spec_check.failure_limit if spec_check is not None else 0
            checks.append(
                MetricStatus(
                    name=result.name,
                    verdict=result.verdict,
                    candidate=result.candidate,
                    baseline=result.baseline,
                    samples=result.samples,
                    threshold=result.threshold,
                    failures=failures,
                    message=result.message,
                    checked_at=self.now,
                )
            )
            if failures > limit:
                breached.append((result, f"{result.name} {result.message} (failed {failures}x, failureLimit {limit})"))
        # Keep the other phase's checks (e.g. shadow agreement) visible alongside this phase's.
        ran = {c.name for c in checks}
        s.checks = [c for c in s.checks if c.name not in ran] + checks
        s.window_started_at = self.now
        verdicts = [r.verdict for r in results]
        self.condition(
            "AnalysisPassing",
            all(v == "pass" for v in verdicts),
            "Passing" if all(v == "pass" for v in verdicts) else "NotPassing",
            # An error's cause (a query Prometheus refused, Prometheus unreachable) is what the user
            # must fix, so the condition says it; a fail's figures are in `checks` and the history.
            "; ".join(
                f"{r.name}: {r.verdict}" + (f" ({r.message})" if r.verdict == "error" and r.message else "")
                for r in results if r.verdict != "pass"
            ),
        )
        return breached

    def promoting(self) -> None:
        s, reg = self.s, self.obs.registry
        if reg is not None and reg.stable_version == s.candidate_version:
            s.previous_stable_version = s.stable_version
            s.stable_version = s.candidate_version
            promoted = f"v{s.candidate_version} promoted: alias {self.spec.model.stable_alias!r} moved"
            watch = self.spec.post_promotion
            if watch is None:
                self.transition(Phase.SUCCEEDED, promoted)
            else:
                self.transition(Phase.WATCHING, f"{promoted}; watching it for {watch.watch}")
                s.window_started_at = self.now
                # The watch counts its own failures: the canary's are not held against it.
                for check in s.checks:
                    check.failures = 0
            self.set_weights()
            self.event("Normal", "Promoted", f"v{s.candidate_version} is the stable version")
            if watch is not None:
                ends = watch_ends_at(self.spec, s)
                until = ends.isoformat(timespec="seconds") if ends else "?"
                self.event("Normal", "Watching", f"v{s.candidate_version}: post-promotion watch until {until}")
            return
        self.actions.append(PromoteInRegistry(version=s.candidate_version or "", summary=self.summary()))

    def rolling_back(self) -> None:
        s, reg = self.s, self.obs.registry
        outcome = {"abort": ABORTED, "rejected": REJECTED, "superseded": SKIPPED}.get(s.rollback_kind or "", ROLLED_BACK)
        if (
            s.rollback_kind == "undo"
            and reg is not None
            and reg.stable_version not in (None, s.stable_version, s.candidate_version)
        ):
            # The stable alias moved by hand during the undo: that choice stands, not the undo's.
            s.stable_version = reg.stable_version
            self.event("Warning", "StableAliasMoved", f"alias {self.spec.model.stable_alias!r} moved to v{reg.stable_version} by hand during the undo; kept")
        if s.rollback_kind == "undo" and s.stable_version and (reg is None or reg.stable_version != s.stable_version):
            # An undo also moves the stable alias back; the mark waits until the alias has moved.
            self.actions.append(
                PromoteInRegistry(version=s.stable_version, summary=f"stable again: {s.message}")
            )
            return
        if reg is not None and s.candidate_version and reg.outcomes.get(s.candidate_version) in (outcome, DELETED):
            # A rejected version was never deployed, yet it rests RolledBack too: the terminal
            # phases every client knows stay four, and rollbackKind says it was the gate.
            final = Phase.ABORTED if outcome == ABORTED else Phase.ROLLED_BACK
            reason = s.message
            self.transition(final, reason)
            self.set_weights()
            kind = {REJECTED: "Rejected", SKIPPED: "CandidateSkipped"}.get(outcome, final.value)
            self.event("Warning", kind, f"v{s.candidate_version}: {reason}")
            return
        self.actions.append(MarkInRegistry(version=s.candidate_version or "", outcome=outcome, reason=s.message))

    def gating(self) -> None:
        """Judge the candidate's MLflow metrics; deploy it on a pass, reject it on a failure."""
        s, reg, model, spec_gate = self.s, self.obs.registry, self.spec.model, self.spec.gate
        if self.superseded():
            # Like a candidate superseded in any phase: tagged skipped, then the alias's version.
            self.condition("GatePassed", None, "Abandoned", f"offline gate of v{s.candidate_version} abandoned: {s.message}")
            return
        # A removed stable alias is not a new stable: at rest the engine keeps the last one too.
        if reg is not None and reg.stable_version is not None and reg.stable_version != s.stable_version:
            # Never deployed, and judged against a version no longer the stable: decide again at rest.
            reason = f"offline gate of v{s.candidate_version} abandoned: alias {model.stable_alias!r} moved to v{reg.stable_version}"
            self.condition("GatePassed", None, "Abandoned", reason)
            self.transition(Phase.IDLE, reason)
            s.candidate_version = s.observed_candidate_version = None
            self.at_rest()
            return
        if spec_gate is None:  # the gate was removed from the spec while waiting for it
            self.condition("GatePassed", True, "NoGate", "the spec has no gate any more")
            self.deploy("offline gate removed from the spec")
            return
        version = s.candidate_version or ""
        metrics = self.obs.gate_metrics
        results = gate.evaluate(spec_gate, version, s.stable_version, metrics) if metrics is not None else None
        if results is None:
            cause = self.obs.gate_error or (self.obs.registry_error if reg is None else None)
            if cause:
                self.condition("GatePassed", None, "MetricsUnavailable", cause)
                s.message = f"offline gate of v{version} waits for MLflow (no metrics, no decision): {cause}"
            return
        s.gate_checks = [
            MetricStatus(
                name=r.name,
                verdict=r.verdict,
                candidate=r.candidate,
                baseline=r.baseline,
                threshold=r.threshold,
                message=r.message,
                checked_at=self.now,
            )
            for r in results
        ]
        failed = [r.message for r in results if r.verdict == "fail"]
        if failed:
            reason = f"offline gate failed: {'; '.join(failed)}"
            self.condition("GatePassed", False, "GateFailed", reason)
            self.begin_rollback("rejected", reason)
            return
        detail = "; ".join(r.message for r in results)
        self.condition("GatePassed", True, "GatePassed", detail)
        self.event("Normal", "GatePassed", f"v{version}: {detail}")
        self.deploy(f"offline gate passed ({len(results)} metric{'s' if len(results) != 1 else ''})")

    def watching(self) -> None:
        """The promoted version's checks keep running until the watch ends; a breach undoes it."""
        s, reg, model = self.s, self.obs.registry, self.spec.model
        if reg is not None and reg.stable_version != s.stable_version:
            # Someone moved the stable alias by hand: an undo now would overwrite their choice.
            now_stable = f"moved to v{reg.stable_version}" if reg.stable_version else "was removed"
            self.transition(Phase.SUCCEEDED, f"post-promotion watch ended: alias {model.stable_alias!r} {now_stable} by hand")
            self.at_rest()
            return
        if self.obs.checks is not None and not self.commands_applied:
            breached = self.tally(self.obs.checks)
            if breached:
                evidence = "; ".join(text for _, text in breached)
                self.event("Warning", "WatchBreached", f"v{s.stable_version}: {evidence}")
                if s.previous_stable_version:
                    self.undo(f"post-promotion watch: {evidence}")
                    return
        if self.spec.post_promotion is None:  # the watch was removed from the spec meanwhile
            self.transition(Phase.SUCCEEDED, f"v{s.stable_version} promoted; post-promotion watch removed from the spec")
            return
        ends = watch_ends_at(self.spec, s)
        if ends is None or self.now >= ends:
            watched = self.spec.post_promotion.watch
            self.transition(Phase.SUCCEEDED, f"v{s.stable_version} promoted; post-promotion watch passed ({watched}, no breach)")
            self.event("Normal", "WatchPassed", s.message)
            return
        if reg is not None and reg.candidate_version not in (None, s.observed_candidate_version):
            s.message = (
                f"v{s.stable_version} promoted; watching it until {ends.isoformat(timespec='seconds')}; "
                f"v{reg.candidate_version} starts when the watch ends"
            )

    def summary(self) -> str:
        started = next(
            (t.time for t in reversed(self.s.history) if t.from_phase.terminal and t.version == self.s.candidate_version),
            None,
        )
        # Up to the decision to promote, not to now: the promotion is re-issued every tick until the
        # registry shows the alias moved, and a summary that changed each time would be rewritten.
        decided = next(
            (t.time for t in reversed(self.s.history) if t.to is Phase.PROMOTING and t.version == self.s.candidate_version),
            self.now,
        )
        took = f" in {format_duration((decided - started).total_seconds())}" if started else ""
        checks = ", ".join(f"{c.name}={c.candidate:.4g}" for c in self.s.checks if c.candidate is not None)
        return f"promoted over v{self.s.stable_version}{took}" + (f"; last checks: {checks}" if checks else "")

    def run(self) -> StepResult:
        if self.obs.registry is None and self.obs.registry_error:
            self.condition("RegistryAvailable", False, "Unreachable", self.obs.registry_error)
        elif self.obs.registry is not None:
            self.condition("RegistryAvailable", True, "Reachable")
        for cmd in self.obs.commands:
            self.command(cmd)
        phase = self.s.phase
        if phase.terminal:
            self.at_rest()
        elif phase in ACTIVE:
            self.active()
        elif phase is Phase.PAUSED:
            self.superseded() or self.stable_moved_by_hand() or self.candidate_failed()
        elif phase is Phase.GATING:
            self.gating()
        elif phase is Phase.WATCHING:
            self.watching()
        elif phase is Phase.PROMOTING:
            self.stable_moved_by_hand()
        # Promoting and RollingBack are handled after a transition into them in this same tick too,
        # so their first write-back is not delayed a tick.
        if self.s.phase is Phase.PROMOTING:
            self.promoting()
        elif self.s.phase is Phase.ROLLING_BACK:
            self.rolling_back()
        self.alias_departure()
        self.rest_conditions()
        routing = self.routing()
        if routing is not None:
            self.actions.insert(0, routing)
        return StepResult(self.s, self.actions)


def step(spec: ModelRolloutSpec, status: RolloutStatus, obs: Observation, now: datetime) -> StepResult:
    """Decide one tick. Never mutates `status`; the caller persists the returned status *before*
    carrying out the returned actions, all of which are safe to repeat."""
    return _Step(spec, status, obs, now).run()
