"""Where a report reads a rollout from: the local platform's state, or a ModelRollout in a cluster.

Either way the report needs three things: the spec (steps, shadow percent, checks and their
thresholds), the status (history, last checks, message) and the events. The local status file does
not hold the spec — `local run` reads it from the rollout file every time it starts — so the local
source takes that file; a custom resource carries both.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from canary.decision.spec import ModelRollout, RolloutStatus, load_rollouts
from controller.local.state import StateStore
from controller.report.timeline import RolloutEvent, parse_time

# Events are few per rollout (a handful per attempt); read them all.
_ALL_EVENTS = 100_000


class SourceError(Exception):
    """The rollout cannot be read; the message is one line naming the cause."""


@dataclass(frozen=True)
class RolloutRecord:
    """Everything a report is made from."""

    rollout: ModelRollout
    status: RolloutStatus
    events: tuple[RolloutEvent, ...]
    source: str  # where it was read, for the report's header

    @property
    def name(self) -> str:
        return self.rollout.metadata.name


def events_from(raw: Iterable[Mapping[str, object]], where: str) -> tuple[RolloutEvent, ...]:
    """Events from their stored form ({"time", "type", "reason", "message"}), oldest first."""
    events = []
    for item in raw:
        when = parse_time(item.get("time"))
        if when is None:
            raise SourceError(f"{where}: an event has no readable time ({item.get('time')!r})")
        events.append(
            RolloutEvent(
                time=when,
                type=str(item.get("type") or "Normal"),
                reason=str(item.get("reason") or ""),
                message=str(item.get("message") or ""),
            )
        )
    return tuple(sorted(events, key=lambda e: e.time))


def from_local(state_dir: Path, name: str, rollout_file: Path) -> RolloutRecord:
    """The rollout `name` of the local platform: its status and events under `state_dir`, its spec
    from `rollout_file`. StateError (unreadable status) and SpecError (bad file) pass through."""
    store = StateStore(state_dir)
    known = store.names()
    if name not in known:
        listing = ", ".join(known) if known else "none yet"
        raise SourceError(f"no rollout named {name!r} in {store.root} (known: {listing})")
    status = store.load(name)
    text = rollout_file.read_text(encoding="utf-8")  # FileNotFoundError: the CLI names the file
    rollouts = load_rollouts(text, str(rollout_file))
    rollout = next((r for r in rollouts if r.metadata.name == name), None)
    if rollout is None:
        listing = ", ".join(r.metadata.name for r in rollouts)
        raise SourceError(f"{rollout_file} has no rollout named {name!r} (it has: {listing})")
    try:
        raw_events = store.events(name, _ALL_EVENTS)
    except ValueError as err:  # a line that is not JSON
        raise SourceError(f"{state_dir / (name + '.events.jsonl')}: unreadable events ({err})") from None
    return RolloutRecord(rollout, status, events_from(raw_events, f"{name} events"), f"local state {store.root}")


def from_cluster(name: str, namespace: str | None, kubeconfig: Path | None, context: str | None) -> RolloutRecord:
    """The ModelRollout `name` in a cluster (spec, status and its Events), found like kubectl does.

    Errors are the kube client's: `RolloutRequestError` (not found, forbidden, bad status, no CRD)
    and `ClusterAccessError` (no kubeconfig, API server unreachable).
    """
    # The kubernetes client: only when asked for.
    from controller.kube import rollout_resource
    from controller.kube.cluster_access import connect
    from controller.kube.rollout_client import Rollouts, parse_status

    rollouts = Rollouts(connect(kubeconfig, context, namespace))
    obj = rollouts.get(name)
    where = f"{rollouts.namespace}/{name}"
    rollout = rollout_resource.parse_spec(obj)
    status = parse_status(obj.get("status"), where)
    events = events_from(rollouts.events(obj, _ALL_EVENTS), f"{where} events")
    return RolloutRecord(rollout, status, events, f"cluster {rollouts.cluster.server}, ModelRollout {where}")
