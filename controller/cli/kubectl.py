"""`kubectl modelrollout`: the kubectl plugin (the `kubectl-modelrollout` executable on PATH).

    kubectl modelrollout status iris [-n NS] [--watch] [--timeout 10m]
    kubectl modelrollout promote iris [--full]     # and: abort, pause, resume, retry, undo
    kubectl modelrollout lint -f rollout.yaml

`status` reads the ModelRollout's status (written by the operator) and the rollout's Kubernetes
Events. The command verbs write nothing but the documented merge patch of controller/kube/commands.py —
two annotations — so `kubectl annotate` or `kubectl patch --type=merge` by hand does the same;
the plugin adds the up-front check of the local CLI (a command the rollout's phase cannot take is
refused with exit 2, in the same words) and a fresh command id. The operator carries the command
out on its next tick. `lint` checks rollout files with the validation the API server applies.

Exit status: 0 done, 2 refused or failed (one line on stderr, never a traceback); `status --watch`
exits 0 when the rollout rests in Succeeded or Idle, 1 in RolledBack or Aborted, 3 at --timeout.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from functools import wraps
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.markup import escape

from canary.decision.durations import format_duration, parse_duration
from canary.decision.engine import CommandKind, command_problem
from canary.decision.spec import RolloutStatus
from controller.cli.command_line import (
    REST_EXIT,
    TIMEOUT_EXIT,
    UsageError,
    VersionOption,
    console,
    errors,
    lint,
    move_candidate_alias,
)
from controller.cli.command_line import one_line_errors as command_line_one_line_errors
from controller.cli.status_view import render_status
from controller.kube.cluster_access import ClusterAccessError, connect
from controller.kube.commands import COMMAND_ANNOTATION, COMMAND_ID_ANNOTATION, command_patch
from controller.kube.rollout_client import RolloutRequestError, Rollouts, parse_status, pending_command


app = typer.Typer(no_args_is_help=True, help="Manage ModelRollouts with kubectl.")
app.command("lint")(lint)


@app.callback()
def _root(version: VersionOption = False) -> None:
    """Manage ModelRollouts with kubectl."""


# ---------------------------------------------------------------------------------------------
# Options every cluster verb takes (kubectl passes none of its own flags to a plugin)

NamespaceOption = Annotated[
    Optional[str],
    typer.Option(
        "-n", "--namespace", help="Namespace of the rollout (default: the context's namespace, else 'default')"
    ),
]
KubeconfigOption = Annotated[
    Optional[Path], typer.Option("--kubeconfig", help="Kubeconfig file (default: $KUBECONFIG, else ~/.kube/config)")
]
ContextOption = Annotated[
    Optional[str], typer.Option("--context", help="Kubeconfig context (default: the current one)")
]
NameArg = Annotated[str, typer.Argument(help="Name of the ModelRollout")]


def one_line_errors(func: Callable) -> Callable:
    """cli's one-line error handling, plus cluster access failures."""

    @command_line_one_line_errors
    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except (ClusterAccessError, RolloutRequestError, UsageError) as err:
            # cli prints the line as rich markup: text from the server ("[Errno 111]", a message
            # quoting a list) must print as it is.
            raise UsageError(escape(str(err))) from None

    return wrapper


def _rollouts(namespace: str | None, kubeconfig: Path | None, context: str | None) -> Rollouts:
    return Rollouts(connect(kubeconfig, context, namespace))


def _ns_flag(rollouts: Rollouts) -> str:
    return f" -n {rollouts.namespace}"


# ---------------------------------------------------------------------------------------------
# status


def _show(rollouts: Rollouts, obj: Mapping[str, Any], status: RolloutStatus, events: int) -> None:
    name = obj["metadata"]["name"]
    console.print(render_status(name, status, rollouts.events(obj, events)))
    pending = pending_command(obj)
    if pending is not None:
        console.print(
            f"  pending command: {pending[0]} (id {pending[1] or '-'}), not yet taken by the operator\n",
            highlight=False,
            markup=False,
        )


def at_rest(obj: Mapping[str, Any], status: RolloutStatus) -> bool:
    """Resting in a final phase with no command waiting (a `retry` sent to a RolledBack rollout
    has not happened yet, so the watch waits for it)."""
    return status.phase in REST_EXIT and pending_command(obj) is None


def follow(rollouts: Rollouts, name: str, timeout: float | None, events: int) -> int:
    """Render the rollout now and on every change of its status until it rests; the exit code."""
    from kubernetes.client.exceptions import ApiException

    deadline = None if timeout is None else time.monotonic() + timeout
    where = f"{rollouts.namespace}/{name}"
    obj = rollouts.get(name)
    status = parse_status(obj.get("status"), where)
    _show(rollouts, obj, status, events)
    shown: tuple[Any, ...] = (status, pending_command(obj))
    version = obj["metadata"].get("resourceVersion", "")
    while not at_rest(obj, status):
        remaining = None if deadline is None else deadline - time.monotonic()
        if remaining is not None and remaining <= 0:
            errors.print(
                f"timed out after {format_duration(timeout or 0)}: {where} is still {status.phase.value}",
                highlight=False,
                markup=False,
            )
            return TIMEOUT_EXIT
        # Watches are cut by the server now and then; a bounded one is simply opened again.
        seconds = 300 if remaining is None else max(1, min(300, int(remaining + 0.999)))
        try:
            for event in rollouts.changes(name, version, seconds):
                kind, changed = event.get("type"), event.get("object") or {}
                if kind == "ERROR":
                    raise ApiException(status=changed.get("code"), reason=changed.get("message"))
                version = (changed.get("metadata") or {}).get("resourceVersion") or version
                if kind == "BOOKMARK":
                    continue
                if kind == "DELETED":
                    raise UsageError(f"ModelRollout {where} was deleted")
                obj, status = changed, parse_status(changed.get("status"), where)
                # Re-render on what a reader sees change, not on every write (kopf's own
                # annotations and bookkeeping change the resource too).
                if (status, pending_command(obj)) != shown:
                    _show(rollouts, obj, status, events)
                    shown = (status, pending_command(obj))
                if at_rest(obj, status) or (deadline is not None and time.monotonic() >= deadline):
                    break
        except ApiException as err:
            if err.status != 410:
                raise rollouts.api_error(err, f"watching ModelRollout {where}") from None
            # The resourceVersion fell out of the server's window: start again from a fresh read.
            obj = rollouts.get(name)
            status = parse_status(obj.get("status"), where)
            version = obj["metadata"].get("resourceVersion", "")
            if (status, pending_command(obj)) != shown:
                _show(rollouts, obj, status, events)
                shown = (status, pending_command(obj))
    return REST_EXIT[status.phase]


@app.command()
@one_line_errors
def status(
    name: NameArg,
    watch: Annotated[bool, typer.Option("--watch", "-w", help="Follow changes until the rollout rests")] = False,
    timeout: Annotated[
        Optional[str], typer.Option(help="With --watch: give up after this long (exit 3), e.g. 10m")
    ] = None,
    events: Annotated[int, typer.Option(help="How many recent events to show")] = 10,
    namespace: NamespaceOption = None,
    kubeconfig: KubeconfigOption = None,
    context: ContextOption = None,
) -> None:
    """Phase, step, weights, each check's last values against its threshold, history and events.

    With --watch: exit 0 once the rollout rests in Succeeded or Idle, 1 in RolledBack or Aborted,
    3 when --timeout passes first.
    """
    limit = None
    if timeout is not None:
        if not watch:
            raise UsageError("--timeout applies to --watch only")
        try:
            limit = parse_duration(timeout)
        except ValueError as err:
            raise UsageError(f"--timeout: {err}") from None
    rollouts = _rollouts(namespace, kubeconfig, context)
    if not watch:
        obj = rollouts.get(name)
        _show(rollouts, obj, parse_status(obj.get("status"), f"{rollouts.namespace}/{name}"), events)
        return
    try:
        code = follow(rollouts, name, limit, events)
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
    raise typer.Exit(code)


# ---------------------------------------------------------------------------------------------
# Commands


def send(rollouts: Rollouts, kind: CommandKind, name: str, full: bool = False) -> dict[str, Any]:
    """Check the command against the rollout's status, then write its annotations; the patch sent."""
    obj = rollouts.get(name)
    status = parse_status(obj.get("status"), f"{rollouts.namespace}/{name}")
    # The operator checks again when it takes the command: the phase may change in between.
    problem = command_problem(kind, status)
    if problem is not None:
        raise UsageError(f"{name}: {problem}")
    replaced = pending_command(obj)
    patch = command_patch(kind, full)
    rollouts.send(name, patch)
    annotations = patch["metadata"]["annotations"]
    command, command_id = annotations[COMMAND_ANNOTATION], annotations[COMMAND_ID_ANNOTATION]
    if replaced is not None:
        errors.print(
            f"note: replaced the pending command {replaced[0]} (id {replaced[1] or '-'}), not yet taken by the operator",
            highlight=False,
            markup=False,
        )
    ns = _ns_flag(rollouts)
    console.print(
        f"{command} sent to ModelRollout {rollouts.namespace}/{name} (command-id {command_id})\n"
        f"  patch: {json.dumps(patch, separators=(',', ':'))}\n"
        f"  watch: kubectl modelrollout status {name}{ns} --watch",
        highlight=False,
        markup=False,
    )
    return patch


def _send(
    kind: CommandKind,
    name: str,
    namespace: str | None,
    kubeconfig: Path | None,
    context: str | None,
    full: bool = False,
) -> None:
    send(_rollouts(namespace, kubeconfig, context), kind, name, full)


@app.command()
@one_line_errors
def promote(
    name: NameArg,
    full: Annotated[bool, typer.Option("--full", help="Skip all remaining steps")] = False,
    namespace: NamespaceOption = None,
    kubeconfig: KubeconfigOption = None,
    context: ContextOption = None,
) -> None:
    """Advance one step now (or, with --full, promote at once) without waiting for analysis."""
    _send("promote", name, namespace, kubeconfig, context, full)


@app.command()
@one_line_errors
def abort(
    name: NameArg, namespace: NamespaceOption = None, kubeconfig: KubeconfigOption = None, context: ContextOption = None
) -> None:
    """Roll the candidate back now; the rollout ends Aborted."""
    _send("abort", name, namespace, kubeconfig, context)


@app.command()
@one_line_errors
def pause(
    name: NameArg, namespace: NamespaceOption = None, kubeconfig: KubeconfigOption = None, context: ContextOption = None
) -> None:
    """Hold the current step: weights stay, no analysis, no deadline."""
    _send("pause", name, namespace, kubeconfig, context)


@app.command()
@one_line_errors
def resume(
    name: NameArg, namespace: NamespaceOption = None, kubeconfig: KubeconfigOption = None, context: ContextOption = None
) -> None:
    """Continue a paused rollout from its step."""
    _send("resume", name, namespace, kubeconfig, context)


@app.command()
@one_line_errors
def retry(
    name: NameArg, namespace: NamespaceOption = None, kubeconfig: KubeconfigOption = None, context: ContextOption = None
) -> None:
    """Roll out a rolled-back or aborted candidate again from the start."""
    _send("retry", name, namespace, kubeconfig, context)


@app.command()
@one_line_errors
def undo(
    name: NameArg, namespace: NamespaceOption = None, kubeconfig: KubeconfigOption = None, context: ContextOption = None
) -> None:
    """After a promotion, go back to the previous stable version (the stable alias moves back)."""
    _send("undo", name, namespace, kubeconfig, context)


@app.command()
@one_line_errors
def start(
    name: NameArg,
    version: Annotated[str, typer.Argument(help="The model version to roll out")],
    mlflow_uri: Annotated[str, typer.Option(envvar="MLFLOW_TRACKING_URI", help="MLflow tracking server")] = "",
    namespace: NamespaceOption = None,
    kubeconfig: KubeconfigOption = None,
    context: ContextOption = None,
) -> None:
    """Start a rollout: move the ModelRollout's candidate alias onto VERSION in MLflow.

    MLflow stays the source of truth: the operator starts the rollout because the alias moved, as it
    would for a move made in MLflow's UI (MLflow's credentials: MLFLOW_TRACKING_TOKEN and the like).
    """
    from canary.decision.spec import SpecError, parse_rollout

    if not mlflow_uri:
        raise UsageError("--mlflow-uri (or MLFLOW_TRACKING_URI) is required: the alias is moved in MLflow")
    rollouts = _rollouts(namespace, kubeconfig, context)
    try:
        model = parse_rollout(rollouts.get(name)).spec.model
    except SpecError as err:
        raise UsageError(f"ModelRollout {rollouts.namespace}/{name}: {err}") from None
    moved = move_candidate_alias(name, model, version, mlflow_uri)
    where = "moved to" if moved else "already on"
    console.print(
        f"{model.name}: alias {model.candidate_alias!r} {where} version {version}; the operator starts the rollout on "
        f"its next registry read: kubectl modelrollout status {name}{_ns_flag(rollouts)} --watch",
        highlight=False,
        markup=False,
    )


def main() -> None:  # pragma: no cover - console script
    app()
