"""`kubectl modelrollout`: the kubectl plugin (the `kubectl-modelrollout` executable on PATH).

    kubectl modelrollout status iris [-n NS] [--watch] [--timeout 10m]
    kubectl modelrollout promote iris [--full]     # and: abort, pause, resume, retry, undo
    kubectl modelrollout lint -f rollout.yaml

`status` reads the ModelRollout's status (written by the operator) and the rollout's Kubernetes
Events. The command verbs write nothing but the documented merge patch of controller/commands.py —
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
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import wraps
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.markup import escape

from canary.durations import format_duration, parse_duration
from canary.engine import CommandKind, command_problem
from canary.spec import API_VERSION, KIND, Phase, RolloutStatus
from controller import cli, rollout_resource
from controller.cluster_access import REQUEST_TIMEOUT, Cluster, ClusterAccessError, connect, get_json, reaching
from controller.commands import COMMAND_ANNOTATION, COMMAND_ID_ANNOTATION, command_patch
from controller.status_view import render_status

GROUP, _, VERSION = API_VERSION.partition("/")
PLURAL = "modelrollouts"
CRD_NAME = f"{PLURAL}.{GROUP}"
CRD_INSTALL = "kubectl apply -f manifests/crd/"

# `status --watch` exit codes: how the rollout came to rest, or that it did not in time.
REST_EXIT = {Phase.SUCCEEDED: 0, Phase.IDLE: 0, Phase.ROLLED_BACK: 1, Phase.ABORTED: 1}
TIMEOUT_EXIT = 3

app = typer.Typer(no_args_is_help=True, add_completion=False, help="Manage ModelRollouts with kubectl.")
app.command("lint")(cli.lint)


@app.callback()
def _root() -> None:
    """Manage ModelRollouts with kubectl."""


# ---------------------------------------------------------------------------------------------
# Reading and writing ModelRollouts


def parse_status(raw: Mapping[str, Any] | None, where: str = "status") -> RolloutStatus:
    """The RolloutStatus in a CR's `status` (a fresh one when there is none yet)."""
    try:
        return rollout_resource.parse_status(raw)
    except rollout_resource.ResourceError as err:
        raise cli.UsageError(f"{where}: {err}") from None


def pending_command(obj: Mapping[str, Any]) -> tuple[str, str] | None:
    """The (command, id) in the resource's annotations that the operator has not taken yet."""
    annotations = (obj.get("metadata") or {}).get("annotations") or {}
    if COMMAND_ANNOTATION not in annotations:
        return None
    return annotations[COMMAND_ANNOTATION], annotations.get(COMMAND_ID_ANNOTATION, "")


def _event_time(event: Mapping[str, Any]) -> str:
    """When an Event last happened, as `YYYY-MM-DDTHH:MM:SSZ` (UTC), from whichever field is set."""
    for value in (
        event.get("lastTimestamp"),
        event.get("eventTime"),
        (event.get("series") or {}).get("lastObservedTime"),
        event.get("firstTimestamp"),
        (event.get("metadata") or {}).get("creationTimestamp"),
    ):
        if value:
            try:
                moment = datetime.fromisoformat(str(value))
            except ValueError:
                continue
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=UTC)
            return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return "0000-00-00T00:00:00Z"


@dataclass
class Rollouts:
    """The ModelRollouts of one namespace, through the official client with camelCase dicts."""

    cluster: Cluster
    custom: Any = field(init=False)

    def __post_init__(self) -> None:
        from kubernetes import client

        self.custom = client.CustomObjectsApi(self.cluster.api)

    @property
    def namespace(self) -> str:
        return self.cluster.namespace

    def get(self, name: str) -> dict[str, Any]:
        from kubernetes.client.exceptions import ApiException

        try:
            with reaching(self.cluster):
                return self.custom.get_namespaced_custom_object(
                    GROUP, VERSION, self.namespace, PLURAL, name, _request_timeout=REQUEST_TIMEOUT
                )
        except ApiException as err:
            if err.status == 404:
                raise self._not_found(name) from None
            raise self.api_error(err, f"reading ModelRollout {self.namespace}/{name}") from None

    def names(self) -> list[str]:
        """Names of the ModelRollouts in the namespace; a missing CRD is an error saying so."""
        from kubernetes.client.exceptions import ApiException

        try:
            with reaching(self.cluster):
                listing = self.custom.list_namespaced_custom_object(
                    GROUP, VERSION, self.namespace, PLURAL, _request_timeout=REQUEST_TIMEOUT
                )
        except ApiException as err:
            if err.status == 404:
                raise self._crd_missing() from None
            raise self.api_error(err, f"listing ModelRollouts in namespace {self.namespace!r}") from None
        return sorted(item["metadata"]["name"] for item in listing.get("items", []))

    def send(self, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        """Apply a merge patch to the resource (a command's annotations)."""
        from kubernetes.client.exceptions import ApiException

        try:
            with reaching(self.cluster):
                # Named explicitly: a dict body must go as a JSON merge patch (custom resources
                # take no strategic merge); the client's default for this call is the same.
                return self.custom.patch_namespaced_custom_object(
                    GROUP, VERSION, self.namespace, PLURAL, name, patch,
                    _content_type="application/merge-patch+json", _request_timeout=REQUEST_TIMEOUT,
                )  # fmt: skip
        except ApiException as err:
            if err.status == 404:
                raise self._not_found(name) from None
            raise self.api_error(err, f"patching ModelRollout {self.namespace}/{name}") from None

    def events(self, obj: Mapping[str, Any], limit: int) -> list[dict[str, str]]:
        """The rollout's most recent core/v1 Events, oldest first, shaped for render_status."""
        from kubernetes.client.exceptions import ApiException

        name, uid = obj["metadata"]["name"], obj["metadata"].get("uid")
        selector = f"involvedObject.kind={KIND},involvedObject.name={name}"
        try:
            listing = get_json(
                self.cluster,
                "/api/v1/namespaces/{namespace}/events",
                {"namespace": self.namespace},
                [("fieldSelector", selector)],
            )
        except ApiException as err:
            if err.status == 403:
                return []  # status is still worth showing to someone who may not read events
            raise self.api_error(err, f"listing events in namespace {self.namespace!r}") from None
        items = listing.get("items", [])
        # A rollout deleted and created again under the same name keeps its name, not its uid.
        mine = [e for e in items if not uid or (e.get("involvedObject") or {}).get("uid") in (None, "", uid)]
        shaped = [
            {
                "time": _event_time(e),
                "type": str(e.get("type") or "Normal"),
                "reason": str(e.get("reason") or ""),
                "message": str(e.get("message") or "").replace("\n", " "),
            }
            for e in mine
        ]
        shaped.sort(key=lambda e: e["time"])
        return shaped[-limit:] if limit > 0 else []

    def changes(self, name: str, resource_version: str, seconds: int) -> Iterator[dict[str, Any]]:
        """Watch events (`{"type", "object"}` dicts) of one rollout after `resource_version`, until
        the server ends the watch after `seconds`.

        Read line by line here rather than through kubernetes.watch: that helper retries on its
        own, yields None for blank lines and fails on ERROR events when not deserializing.
        """
        with reaching(self.cluster):
            response = self.custom.list_namespaced_custom_object(
                GROUP, VERSION, self.namespace, PLURAL,
                field_selector=f"metadata.name={name}",
                resource_version=resource_version,
                allow_watch_bookmarks=True,
                timeout_seconds=seconds,
                watch=True,
                _preload_content=False,
                # The server ends the watch after `seconds`; the client's read timeout only guards
                # against a server that stops talking altogether.
                _request_timeout=(REQUEST_TIMEOUT, seconds + REQUEST_TIMEOUT),
            )  # fmt: skip
            try:
                pending = b""
                for chunk in response.stream(amt=None, decode_content=True):
                    pending += chunk
                    *lines, pending = pending.split(b"\n")
                    for line in lines:
                        if line.strip():
                            yield json.loads(line)
            finally:
                response.release_conn()

    def _not_found(self, name: str) -> cli.UsageError:
        known = self.names()  # raises the CRD error when the resource type itself is unknown
        listing = ", ".join(known) if known else "none"
        return cli.UsageError(f"no ModelRollout named {name!r} in namespace {self.namespace!r} (known: {listing})")

    def _crd_missing(self) -> cli.UsageError:
        return cli.UsageError(
            f"the ModelRollout CRD ({CRD_NAME}) is not installed on {self.cluster.server}: "
            f"install it with `{CRD_INSTALL}`"
        )

    def api_error(self, err: Any, doing: str) -> cli.UsageError:
        try:
            message = json.loads(err.body or "{}").get("message") or err.reason
        except (ValueError, AttributeError):
            message = err.reason
        what = {401: "unauthorized", 403: "forbidden"}.get(err.status, f"HTTP {err.status}")
        return cli.UsageError(f"{doing} on {self.cluster.server}: {what}: {message}")


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

    @cli.one_line_errors
    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except (ClusterAccessError, cli.UsageError) as err:
            # cli prints the line as rich markup: text from the server ("[Errno 111]", a message
            # quoting a list) must print as it is.
            raise cli.UsageError(escape(str(err))) from None

    return wrapper


def _rollouts(namespace: str | None, kubeconfig: Path | None, context: str | None) -> Rollouts:
    return Rollouts(connect(kubeconfig, context, namespace))


def _ns_flag(rollouts: Rollouts) -> str:
    return f" -n {rollouts.namespace}"


# ---------------------------------------------------------------------------------------------
# status


def _show(rollouts: Rollouts, obj: Mapping[str, Any], status: RolloutStatus, events: int) -> None:
    name = obj["metadata"]["name"]
    cli.console.print(render_status(name, status, rollouts.events(obj, events)))
    pending = pending_command(obj)
    if pending is not None:
        cli.console.print(
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
            cli.errors.print(
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
                    raise cli.UsageError(f"ModelRollout {where} was deleted")
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
            raise cli.UsageError("--timeout applies to --watch only")
        try:
            limit = parse_duration(timeout)
        except ValueError as err:
            raise cli.UsageError(f"--timeout: {err}") from None
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
        raise cli.UsageError(f"{name}: {problem}")
    replaced = pending_command(obj)
    patch = command_patch(kind, full)
    rollouts.send(name, patch)
    annotations = patch["metadata"]["annotations"]
    command, command_id = annotations[COMMAND_ANNOTATION], annotations[COMMAND_ID_ANNOTATION]
    if replaced is not None:
        cli.errors.print(
            f"note: replaced the pending command {replaced[0]} (id {replaced[1] or '-'}), not yet taken by the operator",
            highlight=False,
            markup=False,
        )
    ns = _ns_flag(rollouts)
    cli.console.print(
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


def main() -> None:  # pragma: no cover - console script
    app()
