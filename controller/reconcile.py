"""One reconcile of one rollout: observe -> engine.step -> persist -> act.

Both runtimes call this: the local runner (`controller/local/runner.py`) and, later, the
Kubernetes operator. It is also the only place that translates between the packages the import
rule keeps apart: registry snapshots become the engine's `RegistryView`, the engine's actions
become registry writes and platform routing.

Order matters for restart safety: the new status is saved *before* any action runs, and every
action is idempotent, so a process killed anywhere in between repeats the same actions on restart.
An action that fails (MLflow down, router restarting) is logged and simply re-issued by the
engine on the next tick, because the engine is level-triggered.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

import mlflow

from canary.decision.analysis import AnalysisContext, CheckResult, analyse, evaluate
from canary.decision.engine import (
    ABORTED,
    ACTIVE,
    DELETED,
    PROMOTED,
    REJECTED,
    ROLLED_BACK,
    SKIPPED,
    Action,
    ApplyRouting,
    CandidateHealth,
    Command,
    MarkInRegistry,
    Observation,
    PromoteInRegistry,
    RecordEvent,
    RegistryView,
    analysed_seconds,
    analysis_due,
    candidate_role,
    gate_versions,
    step,
    window_seconds,
)
from canary.decision.gate import OfflineMetrics
from canary.decision.metrics import MetricsProvider
from canary.decision.spec import ModelRollout, ModelRolloutSpec, Phase, RolloutStatus
from controller.platform import Platform, Routing
from registry import run_metrics, writeback
from registry.artifacts import resolve_artifact_uri
from registry.errors import RegistryError, VersionNotFound
from registry.watcher import Snapshot, WatchedModel

log = logging.getLogger("modelrollout")


# The engine's outcome words and MLflow's tag values are the same strings today; the mapping
# keeps the two packages free to differ (the import rule, tests/unit/test_import_rules.py:
# canary/ and registry/ never import each other; controller/ translates).
_ENGINE_OUTCOME = {
    writeback.PROMOTED: PROMOTED,
    writeback.ROLLED_BACK: ROLLED_BACK,
    writeback.ABORTED: ABORTED,
    writeback.REJECTED: REJECTED,
    writeback.SKIPPED: SKIPPED,
}
_TAG_FOR_OUTCOME = {outcome: tag for tag, outcome in _ENGINE_OUTCOME.items()}


def watched_model(rollout: ModelRollout) -> WatchedModel:
    model = rollout.spec.model
    return WatchedModel(
        name=model.name,
        candidate_alias=model.candidate_alias,
        stable_alias=model.stable_alias,
        candidate_stage=model.candidate_stage,
    )


@dataclass
class Ports:
    """The outside world of a reconcile, one small interface each."""

    client: mlflow.MlflowClient
    platform: Platform
    metrics: MetricsProvider
    save_status: Callable[[str, RolloutStatus], None]
    record_event: Callable[[str, RecordEvent], None]
    # Artifact URIs of (model, version): versions are immutable, so resolve each once.
    artifact_uris: dict[tuple[str, str], str] = field(default_factory=dict)
    # Where a proxying MLflow server keeps artifacts (`mlflow-artifacts:/x` -> `<this>/x`), for
    # model servers that read storage directly (KServe's storage initializer).
    artifacts_destination: str | None = None
    # Whether the platform series a spec's checks read exist (controller/kube/series_catalog.py):
    # (checked, problem). None: not looked at (the local platform's router series always exist).
    series: Callable[[ModelRolloutSpec], tuple[bool, str | None]] | None = None


def registry_view(
    rollout: ModelRollout, status: RolloutStatus, snapshot: Snapshot | None, client: mlflow.MlflowClient
) -> RegistryView | None:
    """The engine's view of the registry, with the outcome tags this tick's decision needs."""
    if snapshot is None:
        return None
    watched = watched_model(rollout)
    state = snapshot.get(watched.name)
    candidate = snapshot.candidate(watched)
    outcomes = {}
    if status.phase is Phase.ROLLING_BACK and status.candidate_version:
        # Has *this* rollback's mark landed? A tag left by an earlier rollback of the same
        # version carries another reason and does not count.
        try:
            tag, reason = writeback.recorded(client, watched.name, status.candidate_version)
            if tag in _ENGINE_OUTCOME and reason == writeback.truncate_tag_value(status.message):
                outcomes[status.candidate_version] = _ENGINE_OUTCOME[tag]
        except VersionNotFound:
            outcomes[status.candidate_version] = DELETED  # nothing left to mark
    if status.candidate_version is None and candidate and candidate != status.observed_candidate_version:
        # Fresh state: was this version rolled back before? (then it is not rolled out again)
        try:
            tag = writeback.outcome(client, watched.name, candidate)
        except VersionNotFound:
            tag = None
        if tag in _ENGINE_OUTCOME:
            outcomes[candidate] = _ENGINE_OUTCOME[tag]
    return RegistryView(
        model_exists=bool(state and state.exists),
        stable_version=snapshot.stable(watched),
        candidate_version=candidate,
        outcomes=outcomes,
    )


def _artifact_uri(ports: Ports, model: str, version: str) -> str:
    key = (model, version)
    if key not in ports.artifact_uris:
        ports.artifact_uris[key] = resolve_artifact_uri(ports.client, model, version, ports.artifacts_destination)
    return ports.artifact_uris[key]


def _candidate_health(
    rollout: ModelRollout, status: RolloutStatus, ports: Ports, registry_up: bool
) -> CandidateHealth | None:
    if status.candidate_version is None or status.phase not in (*ACTIVE, Phase.PAUSED):
        return None
    if not registry_up and (rollout.spec.model.name, status.candidate_version) not in ports.artifact_uris:
        return None  # unknown until MLflow answers; the RegistryAvailable condition says why
    try:
        _artifact_uri(ports, rollout.spec.model.name, status.candidate_version)
    except VersionNotFound as err:  # e.g. the version was deleted after the alias was read
        return CandidateHealth(ready=False, failure=str(err))
    except RegistryError:
        return None  # unknown this tick; the registry condition says why
    health = ports.platform.health(rollout.metadata.name, status.candidate_version)
    return CandidateHealth(ready=health.ready, failure=health.failure)


def _gate_metrics(
    rollout: ModelRollout, status: RolloutStatus, ports: Ports, registry_up: bool
) -> tuple[dict[str, OfflineMetrics] | None, str | None]:
    """The MLflow metrics the offline gate needs this tick, or None and why they could not be read.

    Read on every tick of the Gating phase (it normally lasts one): run metrics may be corrected
    while the gate waits, and a failed read is simply tried again. A deleted version reads as a
    version with no metrics, so the gate rejects it (or skips with `missing: pass`) instead of
    waiting forever.
    """
    versions = gate_versions(rollout.spec, status)
    if not versions:
        return None, None
    if not registry_up:
        return None, None  # the engine names the registry error already; no call to time out on
    model = rollout.spec.model.name
    found: dict[str, OfflineMetrics] = {}
    for version in versions:
        try:
            read = run_metrics.version_metrics(ports.client, model, version)
        except VersionNotFound as err:
            found[version] = OfflineMetrics(values={}, source=str(err))
        except RegistryError as err:
            return None, str(err)
        else:
            found[version] = OfflineMetrics(values=read.values, source=read.source)
    return found, None


def _watch_analysis(rollout: ModelRollout, status: RolloutStatus, ports: Ports) -> list[CheckResult]:
    """The post-promotion watch's checks on the promoted version, which now serves as the stable.

    Measured with role `stable` (how the router and the KServe platform label it after promotion)
    and judged on their absolute bounds only (`ModelRolloutSpec.watch_checks`).
    """
    spec, promoted = rollout.spec, status.stable_version or ""
    ctx = AnalysisContext(
        rollout=rollout.metadata.name,
        namespace=rollout.metadata.namespace,
        model=spec.model.name,
        stable_version=promoted,
        candidate_version=promoted,
        candidate_role="stable",
        window_seconds=window_seconds(spec, status),
        platform={promoted: ports.platform.analysis_variables(rollout.metadata.name, promoted)},
    )
    return [evaluate(spec, check, ctx, ports.metrics) for check in spec.watch_checks()]


def _analysis(rollout: ModelRollout, status: RolloutStatus, ports: Ports, now: datetime):
    spec = rollout.spec
    if not analysis_due(spec, status, now):
        return None
    if status.phase is Phase.WATCHING:
        return _watch_analysis(rollout, status, ports)
    versions = [v for v in (status.stable_version, status.candidate_version) if v]
    ctx = AnalysisContext(
        rollout=rollout.metadata.name,
        namespace=rollout.metadata.namespace,
        model=spec.model.name,
        stable_version=status.stable_version or "",
        candidate_version=status.candidate_version or "",
        candidate_role=candidate_role(status),
        window_seconds=window_seconds(spec, status),
        platform={v: ports.platform.analysis_variables(rollout.metadata.name, v) for v in versions},
        analysed_seconds=analysed_seconds(status, now),
    )
    return analyse(spec, ctx, ports.metrics)


def reconcile(
    rollout: ModelRollout,
    status: RolloutStatus,
    snapshot: Snapshot | None,
    snapshot_error: str | None,
    commands: Sequence[tuple[str, Command]],
    ports: Ports,
    now: datetime,
) -> RolloutStatus:
    """Advance one rollout by one tick and return the status that was persisted."""
    name = rollout.metadata.name
    try:
        view = registry_view(rollout, status, snapshot, ports.client)
        registry_error = snapshot_error
    except RegistryError as err:
        view, registry_error = None, str(err)
    gate_metrics, gate_error = _gate_metrics(rollout, status, ports, registry_up=view is not None)
    series_checked, series_problem = False, None
    if ports.series is not None and status.phase in ACTIVE:
        series_checked, series_problem = ports.series(rollout.spec)
    observation = Observation(
        registry=view,
        registry_error=registry_error,
        candidate=_candidate_health(rollout, status, ports, registry_up=view is not None),
        checks=_analysis(rollout, status, ports, now),
        commands=[command for _, command in commands],
        gate_metrics=gate_metrics,
        gate_error=gate_error,
        series_checked=series_checked,
        series_problem=series_problem,
    )
    result = step(rollout.spec, status, observation, now)
    new_status = result.status
    if commands:
        new_status.last_command_id = commands[-1][0]
    ports.save_status(name, new_status)
    # Events first: the status saved above already says what they announce, while the other actions
    # may wait on MLflow or on starting a model server, and a controller killed during that wait would
    # otherwise lose the transition's Event for good (the next controller does not repeat it).
    for action in sorted(result.actions, key=lambda a: not isinstance(a, RecordEvent)):
        if view is None and _needs_registry(rollout, action, ports):
            continue  # MLflow failed this tick: the engine re-issues the action once it answers
        try:
            carry_out(rollout, action, ports)
        except Exception as err:  # noqa: BLE001 - any failure is retried next tick; log it once
            log.warning("%s: %s failed, will retry: %s", name, type(action).__name__, err)
    return new_status


def _needs_registry(rollout: ModelRollout, action: Action, ports: Ports) -> bool:
    """True for actions that would call MLflow (each call waiting for its timeout while it is down)."""
    if isinstance(action, (PromoteInRegistry, MarkInRegistry)):
        return True
    if isinstance(action, ApplyRouting):
        versions = (action.stable_version, action.candidate_version)
        return any(v and (rollout.spec.model.name, v) not in ports.artifact_uris for v in versions)
    return False


def carry_out(rollout: ModelRollout, action: Action, ports: Ports) -> None:
    name, model = rollout.metadata.name, rollout.spec.model
    if isinstance(action, ApplyRouting):
        versions = [v for v in (action.stable_version, action.candidate_version) if v]
        uris = {version: _artifact_uri(ports, model.name, version) for version in versions}
        routing = Routing(
            model=model.name,
            stable_version=action.stable_version,
            candidate_version=action.candidate_version,
            candidate_role=action.candidate_role,
            candidate_weight=action.candidate_weight,
            shadow_percent=action.shadow_percent,
            tolerance=rollout.spec.shadow.comparison.tolerance(),
        )
        ports.platform.apply(name, routing, uris)
    elif isinstance(action, PromoteInRegistry):
        writeback.promote(ports.client, model.name, action.version, model.stable_alias, action.summary)
    elif isinstance(action, MarkInRegistry):
        writeback.mark(ports.client, model.name, action.version, _TAG_FOR_OUTCOME[action.outcome], action.reason)
    elif isinstance(action, RecordEvent):
        ports.record_event(name, action)
        level = logging.WARNING if action.type == "Warning" else logging.INFO
        log.log(level, "%s: %s: %s", name, action.reason, action.message)
