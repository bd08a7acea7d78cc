"""What happened in one rollout attempt, rebuilt from the status history: pure, no I/O.

The status keeps every transition (time, from, to, version, reason) but not the weights or the
step of each phase; those follow from the spec exactly as the engine sets them (`set_weights`):
the shadow mirrors `shadow.percent` of requests, canary step k sends `canary.steps[k]` percent to
the candidate, Promoting and Succeeded send everything to it, and every other resting phase
sends everything to the stable. A Paused rollout keeps the weights it had, and so do the phases
that change no routing (Gating before any traffic, Watching after the promotion). Weights here
follow versions: after a promotion the candidate's line stays at 100%, where the engine's own
status calls the promoted version "stable".

One status holds several attempts (each candidate the alias moved to, retries, undos); an
attempt begins when the rollout leaves a resting phase and ends when it rests again.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone

from canary.decision.spec import ModelRolloutSpec, Phase, RolloutStatus, Transition

# The engine's words when a rollout starts ("v3: alias 'challenger' moved to v3; stable is v2"):
# the only record of which stable an earlier attempt was compared with.
_STARTED = re.compile(r"^v(?P<candidate>\S+?): .*; stable is v(?P<stable>\S+)$")


# Phases in which checks run, and the role the candidate's series carry then.
_ANALYSED_ROLE = {Phase.SHADOW.value: "shadow", Phase.CANARY.value: "canary", "Watching": "stable"}


@dataclass(frozen=True)
class RolloutEvent:
    """One event recorded about the rollout (the local events file, or a Kubernetes Event)."""

    time: datetime  # timezone-aware
    type: str  # Normal or Warning
    reason: str
    message: str


def parse_time(value: object) -> datetime | None:
    """An ISO 8601 time (`...+00:00` or `...Z`) as an aware datetime (UTC when it names no zone)."""
    try:
        moment = datetime.fromisoformat(str(value))
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=timezone.utc)


@dataclass(frozen=True)
class Weights:
    """Percent of client traffic per role, and percent of requests mirrored to a shadow."""

    stable: int
    candidate: int
    shadow: int = 0


@dataclass(frozen=True)
class Segment:
    """The time the rollout spent in one phase (one canary step is one segment)."""

    phase: str
    start: datetime
    end: datetime | None  # None: the rollout is still in it
    step: int | None  # canary step index
    steps: int  # how many canary steps the spec has
    weights: Weights
    reason: str  # why the rollout entered it

    @property
    def role(self) -> str | None:
        """The candidate's role while analysis runs in this segment, None when none runs. In the
        post-promotion watch the promoted version is measured as what it now is: the stable."""
        return _ANALYSED_ROLE.get(self.phase)

    @property
    def label(self) -> str:
        if self.phase == Phase.SHADOW.value:
            return f"Shadow ({self.weights.shadow}% mirrored)"
        if self.phase == Phase.CANARY.value and self.step is not None:
            return f"Canary {self.step + 1}/{self.steps} ({self.weights.candidate}%)"
        return self.phase

    def seconds(self, until: datetime) -> float:
        return ((self.end or until) - self.start).total_seconds()


@dataclass(frozen=True)
class Attempt:
    """One candidate's way from a resting phase to the next."""

    version: str | None
    stable_version: str | None  # what it was compared with, when known
    transitions: tuple[Transition, ...]
    segments: tuple[Segment, ...]

    @property
    def start(self) -> datetime:
        return self.transitions[0].time

    @property
    def end(self) -> datetime | None:
        """When it came to rest; None while it is still running."""
        last = self.transitions[-1]
        return last.time if last.to.terminal else None

    @property
    def outcome(self) -> Phase | None:
        last = self.transitions[-1]
        return last.to if last.to.terminal else None

    @property
    def final_phase(self) -> Phase:
        return self.transitions[-1].to

    def analysed(self) -> list[Segment]:
        """The segments in which checks ran (shadow and canary steps), in order."""
        return [s for s in self.segments if s.role is not None]


def weights_for(spec: ModelRolloutSpec, phase: str, step: int | None, before: Weights) -> Weights:
    """The traffic split the engine sets on entering `phase` (see engine `set_weights`)."""
    steps = spec.canary.steps
    if phase == Phase.SHADOW.value:
        return Weights(stable=100, candidate=0, shadow=spec.shadow.percent)
    if phase == Phase.CANARY.value and step is not None:
        return Weights(stable=100 - steps[step], candidate=steps[step])
    if phase in (Phase.PROMOTING.value, Phase.SUCCEEDED.value):
        return Weights(stable=0, candidate=100)
    if phase in (Phase.ROLLING_BACK.value, Phase.ROLLED_BACK.value, Phase.ABORTED.value, Phase.IDLE.value):
        return Weights(stable=100, candidate=0)
    return before  # Paused, or a phase this report does not know: the weights stay


def segments(spec: ModelRolloutSpec, transitions: Sequence[Transition]) -> tuple[Segment, ...]:
    """One segment per transition of an attempt, with the canary step counted as the engine does:
    Shadow (or a fresh start) -> Canary is step 0, Canary -> Canary the next, a resume the same."""
    n_steps = len(spec.canary.steps)
    out: list[Segment] = []
    step: int | None = None
    weights = Weights(stable=100, candidate=0)
    for i, t in enumerate(transitions):
        phase = t.to.value
        if phase == Phase.CANARY.value:
            if t.from_phase is Phase.CANARY and step is not None:
                step = step + 1
            elif t.from_phase is Phase.PAUSED and step is not None:
                pass
            else:
                step = 0
            step = min(step, n_steps - 1)
        elif phase != Phase.PAUSED.value:
            step = None
        weights = weights_for(spec, phase, step, weights)
        end = transitions[i + 1].time if i + 1 < len(transitions) else None
        if t.to.terminal:
            end = t.time  # the rest after the attempt is not part of it
        out.append(Segment(phase, t.time, end, step, n_steps, weights, t.reason))
    return tuple(out)


def attempts(spec: ModelRolloutSpec, status: RolloutStatus, events: Sequence[RolloutEvent] = ()) -> list[Attempt]:
    """Every attempt in the status history, oldest first."""
    groups: list[list[Transition]] = []
    for t in status.history:
        if t.time.tzinfo is None:  # written by hand or by an older version: read as UTC
            t = t.model_copy(update={"time": t.time.replace(tzinfo=timezone.utc)})
        if t.from_phase.terminal or not groups:
            groups.append([t])
        else:
            groups[-1].append(t)
    found = []
    for i, group in enumerate(groups):
        latest = i == len(groups) - 1
        found.append(
            Attempt(
                version=group[0].version,
                stable_version=_stable_of(group, status, events, latest),
                transitions=tuple(group),
                segments=segments(spec, group),
            )
        )
    return found


def select(spec: ModelRolloutSpec, status: RolloutStatus, events: Sequence[RolloutEvent], version: str | None) -> Attempt:
    """The latest attempt, or the latest of `version`; ValueError saying what exists otherwise."""
    every = attempts(spec, status, events)
    if not every:
        raise ValueError("its status has no history yet: nothing has been rolled out")
    if version is None:
        return every[-1]
    wanted = version.removeprefix("v")
    mine = [a for a in every if a.version == wanted]
    if not mine:
        seen = ", ".join(dict.fromkeys(f"v{a.version}" for a in every if a.version)) or "none"
        raise ValueError(f"no rollout of v{wanted} in its history (versions rolled out: {seen})")
    return mine[-1]


def _stable_of(group: Sequence[Transition], status: RolloutStatus, events: Sequence[RolloutEvent], latest: bool) -> str | None:
    start, version = group[0].time, group[0].version
    for event in events:
        match = _STARTED.match(event.message) if event.reason == "RolloutStarted" else None
        if match is not None and match["candidate"] == version and abs((event.time - start).total_seconds()) <= 5:
            return match["stable"]
    if not latest:
        return None
    if group[-1].to is Phase.SUCCEEDED and status.stable_version == version:
        return status.previous_stable_version  # promoted: the old stable is the baseline it beat
    return status.stable_version if status.stable_version != version else None

