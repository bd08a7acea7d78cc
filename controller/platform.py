"""The port through which the controller makes a rollout's serving state real.

One implementation per backend (local processes, KServe), as Flagger has one router per mesh:
nothing above this interface knows which backend it drives. The controller calls `apply` on
every tick with the routing the engine wants; implementations make it so idempotently, cheaply
when nothing changed, and without waiting for anything to start — readiness is observed through
`health` on a later tick, and the engine decides what to do about it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

from canary.decision.tolerance import DEFAULT_TOLERANCE, Tolerance

CandidateRole = Literal["shadow", "canary"]
_ROLES = ("shadow", "canary")


@dataclass(frozen=True)
class Routing:
    """Desired serving state of one rollout, applied idempotently every tick.

    Every version named here must be served; any other version of the rollout is stopped.
    A candidate that is not ready yet is served but not routed: clients never see a server
    that is still starting.
    """

    model: str
    stable_version: str | None
    candidate_version: str | None = None
    candidate_role: CandidateRole | None = None
    candidate_weight: int = 0  # percent of client traffic answered by the candidate (role canary)
    shadow_percent: int = 0  # percent of requests mirrored to the candidate (role shadow)
    # When two regression predictions are the same (spec.shadow.comparison): for the shadow's
    # agreement with the stable and for scoring predictions on feedback labels.
    tolerance: Tolerance = DEFAULT_TOLERANCE

    def __post_init__(self) -> None:
        if not self.model:
            raise ValueError("routing.model must be a non-empty model name")
        for name in ("stable_version", "candidate_version"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value):
                raise ValueError(f"routing.{name} must be a non-empty string or None, got {value!r}")
        if self.candidate_version is not None:
            if self.candidate_version == self.stable_version:
                raise ValueError(
                    f"routing.candidate_version {self.candidate_version!r} is also the stable version"
                )
            if self.candidate_role not in _ROLES:
                raise ValueError(
                    f"routing.candidate_role must be 'shadow' or 'canary' when a candidate is set, "
                    f"got {self.candidate_role!r}"
                )
        elif self.candidate_role is not None:
            raise ValueError(f"routing.candidate_role is {self.candidate_role!r} but there is no candidate")
        for name in ("candidate_weight", "shadow_percent"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 100:
                raise ValueError(f"routing.{name} must be an integer from 0 to 100, got {value!r}")
        if not isinstance(self.tolerance, Tolerance):  # its own fields are checked when it is made
            raise ValueError(f"routing.tolerance must be a Tolerance, got {self.tolerance!r}")

    @property
    def versions(self) -> tuple[str, ...]:
        """The versions that must be served, stable first."""
        return tuple(v for v in (self.stable_version, self.candidate_version) if v is not None)


@dataclass(frozen=True)
class VersionHealth:
    """Whether one version's server answers; if it failed, why (copied into the rollout's status)."""

    ready: bool
    failure: str | None = None  # e.g. "model server for iris v3 exited (code 1): <last stderr line>"


FAILURE_LINE_LIMIT = 400


def failure_line(text: str, limit: int = FAILURE_LINE_LIMIT) -> str:
    """A failure's text as a reason: on one line (status messages, Events and MLflow tags are read
    as lines) and bounded, its end cut off with "…"."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


@runtime_checkable
class Platform(Protocol):
    def apply(self, rollout: str, routing: Routing, artifact_uris: Mapping[str, str]) -> None:
        """Make the served state match `routing`; `artifact_uris` maps each named version to its model URI.

        Idempotent and cheap when nothing changed; never waits for a server to become ready.
        """
        ...

    def health(self, rollout: str, version: str) -> VersionHealth:
        """Readiness of one version's server; a version never applied is simply not ready."""
        ...

    def endpoint(self, rollout: str) -> str | None:
        """Base URL clients send the rollout's traffic to; None before the first `apply`."""
        ...

    def analysis_variables(self, rollout: str, version: str) -> Mapping[str, str]:
        """What serves `version` for metric queries (canary.decision.templates.PLATFORM_VARIABLES: the
        Knative revision, the workload…); empty where the metrics name versions themselves."""
        ...

    def teardown(self, rollout: str) -> None:
        """Stop everything serving the rollout. Safe to repeat."""
        ...
