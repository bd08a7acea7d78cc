"""`modelrollout`: the command line of the local platform, the operator, the demo, the report and the shadow comparator.

Every error a user can cause or meet — a bad rollout file, services not started, an unknown
rollout name, MLflow or Prometheus unreachable — ends in one line on stderr naming the cause and
a non-zero exit status, never a traceback.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
import yaml
from rich.markup import escape

from canary.decision.durations import parse_duration
from canary.decision.engine import CommandKind, command_problem
from canary.traffic.serving_metrics import DEFAULT_MAX_CLASSES, PREDICTION_VALUE_BUCKETS, check_buckets
from controller.cli.command_line import (
    REST_EXIT,
    TIMEOUT_EXIT,
    FileOption,
    OutputFormat,
    VersionOption,
    errors,
    LogFormat,
    LogFormatOption,
    LogLevelOption,
    UsageError,
    configure_logging,
    console,
    lint,
    move_candidate_alias,
    one_line_errors,
    read_rollouts,
)
from controller.cli.status_view import render_status
from controller.local.home import LocalHome, Services, ServicesNotRunning
from controller.local.state import StateStore

app = typer.Typer(no_args_is_help=True, help="Progressive delivery for MLflow models.")
local_app = typer.Typer(no_args_is_help=True, help="The local platform: MLflow, Prometheus, model servers, routers.")
app.add_typer(local_app, name="local")


@app.callback()
def _root(version: VersionOption = False) -> None:
    """Progressive delivery for MLflow models."""

HomeOption = Annotated[
    Optional[Path], typer.Option("--home", help="State folder of the local platform \\[default: ./.modelrollout]")
]


def _seconds(option: str, value: str) -> float:
    try:
        return parse_duration(value)
    except ValueError as err:
        raise UsageError(f"{option}: {err}") from None


# ---------------------------------------------------------------------------------------------
# local up / down / run


@local_app.command("up")
@one_line_errors
def local_up(
    home: HomeOption = None,
    mlflow_port: Annotated[int, typer.Option(help="0 picks a free port")] = 0,
    prometheus_port: Annotated[int, typer.Option(help="0 picks a free port")] = 0,
    scrape_interval: Annotated[
        Optional[str], typer.Option(help="Prometheus scrape interval \\[default: 1s, or the one recorded]", show_default=False)
    ] = None,
) -> None:
    """Start MLflow (sqlite, local artifacts) and Prometheus; does nothing for what already runs.

    A service that was started here before and has crashed comes back on its recorded address."""
    where = LocalHome.resolve(home)
    with console.status("starting MLflow and Prometheus…"):
        services, started = where.up(mlflow_port, prometheus_port, scrape_interval)
    state = "started" if started else "already running"
    console.print(f"local services {state} in {where.root}")
    console.print(f"  MLflow      {services.mlflow}")
    console.print(f"  Prometheus  {services.prometheus}")
    console.print(f"  export MLFLOW_TRACKING_URI={services.mlflow}")


@local_app.command("down")
@one_line_errors
def local_down(home: HomeOption = None) -> None:
    """Stop MLflow, Prometheus and every model server and router started here."""
    stopped = LocalHome.resolve(home).down()
    console.print(f"stopped: {', '.join(stopped)}" if stopped else "nothing was running")


@local_app.command("run")
@one_line_errors
def local_run(
    file: FileOption,
    home: HomeOption = None,
    tick: Annotated[str, typer.Option(help="Time between two reconciles")] = "1s",
    once: Annotated[bool, typer.Option(help="Reconcile once and exit")] = False,
    mlflow_uri: Annotated[Optional[str], typer.Option(help="Use this MLflow instead of `local up`'s")] = None,
    prometheus_url: Annotated[Optional[str], typer.Option(help="Use this Prometheus instead of `local up`'s")] = None,
    verbose: Annotated[bool, typer.Option(help="Log debug records too (--log-level debug)")] = False,
    log_format: LogFormatOption = LogFormat.TEXT,
    log_level: LogLevelOption = None,
) -> None:
    """Run the controller loop for the rollouts in FILE until interrupted."""
    from controller.local.runner import LocalRunner  # imports mlflow: keep the other commands fast

    configure_logging(verbose, log_level, log_format)
    try:
        tick_seconds = parse_duration(tick)
    except ValueError as err:
        raise UsageError(f"--tick: {err}") from None
    rollouts = read_rollouts(file)
    where = LocalHome.resolve(home)
    services = None
    if mlflow_uri or prometheus_url:
        known = where.services() if not (mlflow_uri and prometheus_url) else None
        services = Services(
            mlflow=mlflow_uri or known.mlflow,  # type: ignore[union-attr]
            prometheus=prometheus_url or known.prometheus,  # type: ignore[union-attr]
        )
    # The services of `local up` that this loop uses are kept running by it (a crashed one comes
    # back on its address); services given by URL are someone else's to run.
    keeper = None
    if services is None:
        from controller.local.service_keeper import ServiceKeeper

        keeper = ServiceKeeper(where)
        keeper.check()  # found dead at start: back on their addresses first (logged like later)
    runner = LocalRunner(rollouts, where, services)
    problems = runner.preflight()
    if problems:
        raise UsageError("\n".join(str(p) for p in problems))
    if once:
        runner.tick()
        return
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    names = ", ".join(r.metadata.name for r in rollouts)
    logging.getLogger("modelrollout").info("watching %s (tick %s); Ctrl-C stops the loop, serving continues", names, tick)
    if keeper is not None:
        keeper.start(stop)
    runner.serve_metrics()
    try:
        runner.run(stop, tick_seconds)
    finally:
        runner.stop_serving()


# ---------------------------------------------------------------------------------------------
# status and user commands


@app.command()
@one_line_errors
def status(
    name: Annotated[Optional[str], typer.Argument(help="Rollout name; all when omitted")] = None,
    home: HomeOption = None,
    events: Annotated[int, typer.Option(help="How many recent events to show")] = 5,
    output: Annotated[OutputFormat, typer.Option("-o", "--output", help="text for people; json or yaml for scripts")] = OutputFormat.TEXT,
    watch: Annotated[bool, typer.Option("--watch", "-w", help="Follow changes until the rollout rests (needs NAME)")] = False,
    timeout: Annotated[Optional[str], typer.Option(help="With --watch: give up after this long (exit 3), e.g. 10m")] = None,
) -> None:
    """Phase, step, weights, last verdicts and history of local rollouts.

    With --watch: exit 0 once the rollout rests in Succeeded or Idle, 1 in RolledBack or Aborted,
    3 when --timeout passes first; with -o json, one JSON document per line per change.
    """
    if timeout is not None and not watch:
        raise UsageError("--timeout applies to --watch only")
    if watch and name is None:
        raise UsageError("--watch follows one rollout: name it")
    limit = None if timeout is None else _seconds("--timeout", timeout)
    where = LocalHome.resolve(home)
    store = StateStore(where.state_dir)
    names = [_known(store, name)] if name else store.names()
    if not names:
        if output is OutputFormat.TEXT:
            console.print(f"no rollouts in {where.state_dir} yet: start one with `modelrollout local run -f FILE`")
        else:
            _print_documents([], output)
        return
    from controller.local.platform import LocalPlatform

    platform = LocalPlatform(where.platform_dir, tracking_uri="")

    def show(rollouts: list[str], watching: bool = False) -> None:
        if output is OutputFormat.TEXT:
            for rollout in rollouts:
                endpoint = platform.endpoint(rollout)
                if endpoint is not None:
                    endpoint = f"{endpoint} ({platform.endpoint_readiness(rollout)})"
                console.print(render_status(rollout, store.load(rollout), store.events(rollout, events), endpoint))
            return
        documents = [
            {
                "name": rollout,
                "endpoint": platform.endpoint(rollout),
                "status": store.load(rollout).model_dump(mode="json", by_alias=True, exclude_none=True),
                "events": store.events(rollout, events),
            }
            for rollout in rollouts
        ]
        # One rollout named: its document; all: a list. Watching: one compact line per change.
        _print_documents(documents[0] if name else documents, output, one_line=watching)

    if not watch:
        show(names)
        return
    raise typer.Exit(_follow_local(store, names[0], limit, lambda: show(names, watching=True)))


def _print_documents(documents: Any, output: OutputFormat, one_line: bool = False) -> None:
    if output is OutputFormat.JSON:
        text = json.dumps(documents, separators=(",", ":")) if one_line else json.dumps(documents, indent=2)
    else:
        text = ("---\n" if one_line else "") + yaml.safe_dump(documents, sort_keys=False).rstrip()
    console.print(text, markup=False, highlight=False, soft_wrap=True)


def _follow_local(store: StateStore, name: str, timeout_s: float | None, show: Callable[[], None]) -> int:
    """Show the rollout now and whenever its status or pending commands change, until it rests."""
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    shown: tuple[Any, ...] | None = None
    while True:
        status = store.load(name)
        pending = store.pending_commands(name, status.last_command_id)
        now_seen = (status.model_dump_json(), [p.id for p in pending])
        if now_seen != shown:
            show()
            shown = now_seen
        if status.phase in REST_EXIT and not pending:
            return REST_EXIT[status.phase]
        if deadline is not None and time.monotonic() >= deadline:
            errors.print(f"timed out: {name} is still {status.phase.value}", highlight=False, markup=False)
            return TIMEOUT_EXIT
        time.sleep(0.25)


def _known(store: StateStore, name: str) -> str:
    known = store.names()
    if name not in known:
        listing = ", ".join(known) if known else "none yet"
        raise UsageError(f"no rollout named {name!r} in {store.root} (known: {listing})")
    return name


def _send(kind: CommandKind, name: str, home: Path | None, full: bool = False) -> None:
    store = StateStore(LocalHome.resolve(home).state_dir)
    _known(store, name)
    # The engine checks again when it applies the command: the phase may change in between.
    problem = command_problem(kind, store.load(name))
    if problem is not None:
        raise UsageError(f"{name}: {problem}")
    store.add_command(name, kind, full)
    console.print(f"{kind}{' --full' if full else ''} sent to {name}; `modelrollout status {name}` shows the effect")


NameArg = Annotated[str, typer.Argument(help="Rollout name")]


@app.command()
@one_line_errors
def promote(
    name: NameArg,
    full: Annotated[bool, typer.Option("--full", help="Skip all remaining steps")] = False,
    home: HomeOption = None,
) -> None:
    """Advance one step now (or, with --full, promote at once) without waiting for analysis."""
    _send("promote", name, home, full)


@app.command()
@one_line_errors
def abort(name: NameArg, home: HomeOption = None) -> None:
    """Roll the candidate back now; the rollout ends Aborted."""
    _send("abort", name, home)


@app.command()
@one_line_errors
def pause(name: NameArg, home: HomeOption = None) -> None:
    """Hold the current step: weights stay, no analysis, no deadline."""
    _send("pause", name, home)


@app.command()
@one_line_errors
def resume(name: NameArg, home: HomeOption = None) -> None:
    """Continue a paused rollout from its step."""
    _send("resume", name, home)


@app.command()
@one_line_errors
def retry(name: NameArg, home: HomeOption = None) -> None:
    """Roll out a rolled-back or aborted candidate again from the start."""
    _send("retry", name, home)


@app.command()
@one_line_errors
def undo(name: NameArg, home: HomeOption = None) -> None:
    """After a promotion, go back to the previous stable version (the stable alias moves back)."""
    _send("undo", name, home)


app.command()(lint)


@app.command()
@one_line_errors
def start(
    name: NameArg,
    version: Annotated[str, typer.Argument(help="The model version to roll out")],
    file: FileOption,
    home: HomeOption = None,
    mlflow_uri: Annotated[Optional[str], typer.Option(help="MLflow tracking server \\[default: `local up`'s]")] = None,
) -> None:
    """Start a rollout: move the rollout's candidate alias onto VERSION in MLflow.

    MLflow stays the source of truth: `local run` starts the rollout because the alias moved, as it
    would for a move made in MLflow's UI.
    """
    rollouts = {r.metadata.name: r for r in read_rollouts(file)}
    if name not in rollouts:
        raise UsageError(f"{file}: no rollout named {name!r} (it holds: {', '.join(rollouts) or 'none'})")
    model = rollouts[name].spec.model
    if model.candidate_stage is None and mlflow_uri is None:
        mlflow_uri = LocalHome.resolve(home).services().mlflow
    moved = move_candidate_alias(name, model, version, mlflow_uri or "")
    where = "moved to" if moved else "already on"
    console.print(
        f"{model.name}: alias {model.candidate_alias!r} {where} version {version}; `local run` starts the rollout on its "
        f"next registry read, `modelrollout status {name}` follows it"
    )


@app.command()
@one_line_errors
def report(
    name: NameArg,
    file: Annotated[
        Optional[Path], typer.Option("-f", "--file", help="The rollout file `local run` was given (local: required)")
    ] = None,
    home: HomeOption = None,
    out: Annotated[
        Optional[Path], typer.Option("--out", help="Directory to write (default: ./modelrollout-report-NAME)")
    ] = None,
    version: Annotated[
        Optional[str], typer.Option("--version", help="Report on the latest attempt of this candidate version (default: the latest attempt)")
    ] = None,
    prometheus_url: Annotated[
        Optional[str],
        typer.Option(envvar="PROMETHEUS_URL", help="Prometheus to re-measure from (default: `local up`'s)"),
    ] = None,
    no_metrics: Annotated[bool, typer.Option("--no-metrics", help="Make the report without Prometheus")] = False,
    mlflow: Annotated[
        bool, typer.Option("--mlflow", help="Tag the model version with a summary and log the report to its run")
    ] = False,
    mlflow_uri: Annotated[
        Optional[str], typer.Option(envvar="MLFLOW_TRACKING_URI", help="MLflow for --mlflow (default: `local up`'s)")
    ] = None,
    kube: Annotated[bool, typer.Option("--kube", help="Read the ModelRollout from a cluster instead of local state")] = False,
    namespace: Annotated[
        Optional[str], typer.Option("-n", "--namespace", help="--kube: namespace (default: the context's)")
    ] = None,
    kubeconfig: Annotated[Optional[Path], typer.Option("--kubeconfig", help="--kube: kubeconfig file")] = None,
    context: Annotated[Optional[str], typer.Option("--context", help="--kube: kubeconfig context")] = None,
) -> None:
    """Write an HTML report (with PNG plots) of a rollout: phases and weights, each check against its
    threshold, latency of candidate vs stable, and the decision with its evidence."""

    from canary.decision.metrics import MetricsError, PrometheusProvider
    from controller.kube.cluster_access import ClusterAccessError
    from controller.kube.rollout_client import RolloutRequestError
    from controller.report import page as report_module
    from controller.report.metrics import check_reachable
    from controller.report.sources import SourceError, from_cluster, from_local

    where = LocalHome.resolve(home)

    def local_service(kind: str) -> str:
        try:
            services = where.services()
        except ServicesNotRunning as err:
            flag = "--prometheus-url (or --no-metrics)" if kind == "prometheus" else "--mlflow-uri"
            raise UsageError(f"{err}, or pass {flag}") from None
        return services.prometheus if kind == "prometheus" else services.mlflow

    try:
        if kube:
            try:
                record = from_cluster(name, namespace, kubeconfig, context)
            except RolloutRequestError as err:  # the API server's words may hold [brackets]: print them as they are
                raise UsageError(escape(str(err))) from None
        elif file is None:
            raise UsageError(
                "-f FILE is required: the local status does not hold the spec; pass the rollout file `local run` was given"
            )
        else:
            record = from_local(where.state_dir, name, file)
        provider = None
        if not no_metrics:
            if not prometheus_url and kube:
                raise UsageError("--prometheus-url (or PROMETHEUS_URL) is required with --kube, or pass --no-metrics")
            provider = PrometheusProvider(prometheus_url or local_service("prometheus"), timeout=10)
            try:
                check_reachable(provider)
            except MetricsError as err:
                raise UsageError(f"{escape(str(err))}; pass --no-metrics to report without measurements") from None
        directory = out or report_module.default_directory(name)
        try:
            with console.status("measuring and plotting…"):
                made = report_module.write(record, directory, provider, version)
        except OSError as err:  # --out is a file, or not writable
            raise UsageError(escape(f"{directory}: cannot write the report: {err.strerror or err}")) from None
    except (SourceError, report_module.ReportError, MetricsError, ClusterAccessError) as err:
        raise UsageError(escape(str(err))) from None
    console.print(f"report written: {made.index} ({len(made.images)} plots)", highlight=False, markup=False)
    console.print(f"  {made.summary}", highlight=False, markup=False)
    if not mlflow:
        return
    from registry.connection import connect
    from registry.errors import RegistryError
    from registry.report_upload import upload_report

    client = connect(mlflow_uri or local_service("mlflow"), timeout_s=10, max_retries=0)
    model = record.rollout.spec.model.name
    try:
        uploaded = upload_report(client, model, made.attempt.version or "", name, made.directory, made.summary)
    except RegistryError as err:
        raise UsageError(escape(str(err))) from None
    where_logged = " (the version has no run: a run of its own)" if uploaded.own_run else ""
    console.print(
        f"  MLflow: {model} v{made.attempt.version} tagged; report logged to {uploaded.artifact_uri}{where_logged}",
        highlight=False,
        markup=False,
    )


@app.command("shadow-server")
@one_line_errors
def shadow_server(
    host: Annotated[str, typer.Option(help="Listen address; 0.0.0.0 inside a cluster")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Listen port")] = 8090,
    max_body_bytes: Annotated[int, typer.Option(min=1, help="Largest CloudEvent accepted")] = 1 << 20,
    mirror_workers: Annotated[int, typer.Option(min=1, help="Concurrent replays per shadow")] = 4,
    mirror_queue_size: Annotated[
        int, typer.Option(min=1, help="Replays waiting per shadow; beyond it copies are dropped and counted")
    ] = 1000,
    shadow_timeout: Annotated[float, typer.Option(min=0.001, help="Seconds a replay to the shadow may take")] = 5.0,
    feedback_ttl: Annotated[
        float, typer.Option(min=0.001, help="Seconds a prediction waits for its ground-truth label")
    ] = 3600.0,
    feedback_max_entries: Annotated[int, typer.Option(min=1, help="Predictions kept for labels at most")] = 50_000,
    pending_max: Annotated[
        int, typer.Option(min=1, help="Logger events waiting for their request/response pair; beyond it the oldest is dropped and counted")
    ] = 10_000,
    pending_ttl: Annotated[
        float, typer.Option(min=0.001, help="Seconds a logger event waits for its pair before it is dropped and counted")
    ] = 30.0,
    max_classes: Annotated[
        int, typer.Option(min=1, help="Distinct predicted classes counted per model; later ones count as __other__")
    ] = DEFAULT_MAX_CLASSES,
    prediction_buckets: Annotated[
        str,
        typer.Option(help="Comma-separated increasing bounds of the regression-value histogram, e.g. -1,0,1 "
                          "\\[default: 0 and ±1, 2, 5 × 10^-2 … 10^5]"),
    ] = "",
    log_format: LogFormatOption = LogFormat.TEXT,
    log_level: LogLevelOption = None,
) -> None:  # fmt: skip
    """The shadow comparator for KServe: pairs logger CloudEvents, replays them to the shadow, compares.

    Its admin API (where copies of live requests go) needs the bearer token in
    MODELROLLOUT_COMPARATOR_TOKEN (from the environment only: a flag would show in `ps`); without
    one the comparator listens on a loopback address only.
    """
    import uvicorn

    from canary.traffic.comparator import ADMIN_TOKEN_ENV, ComparatorSettings, create_app
    from canary.traffic.startup_heap import freeze_startup_heap

    admin_token = os.environ.get(ADMIN_TOKEN_ENV) or None
    if admin_token is None and not _loopback(host):
        raise UsageError(
            f"--host {host} would open the admin API (PUT /admin/shadows decides where copies of live requests go) "
            f"to anything that reaches it: set {ADMIN_TOKEN_ENV} (the operator sends the same token)"
        )

    try:
        buckets = (
            check_buckets([float(part) for part in prediction_buckets.split(",") if part.strip()])
            if prediction_buckets
            else PREDICTION_VALUE_BUCKETS
        )
    except ValueError as err:
        raise typer.BadParameter(f"{prediction_buckets!r}: {err}", param_hint="--prediction-buckets") from None
    configure_logging(level=log_level, log_format=log_format)
    settings = ComparatorSettings(
        max_body_bytes=max_body_bytes,
        mirror_workers=mirror_workers,
        mirror_queue_size=mirror_queue_size,
        shadow_timeout_seconds=shadow_timeout,
        feedback_ttl_seconds=feedback_ttl,
        feedback_max_entries=feedback_max_entries,
        pending_max=pending_max,
        pending_ttl_seconds=pending_ttl,
        max_classes=max_classes,
        prediction_buckets=buckets,
        admin_token=admin_token,
    )
    app = create_app(settings)
    freeze_startup_heap()
    uvicorn.run(app, host=host, port=port, access_log=False, log_level="warning", log_config=None)


@app.command()
@one_line_errors
def operator(
    namespace: Annotated[
        list[str], typer.Option("--namespace", "-n", help="Watch this namespace (repeat for more) \\[default: all]")
    ] = [],  # noqa: B006 - typer reads the default, never mutates it
    all_namespaces: Annotated[bool, typer.Option("--all-namespaces", "-A", help="Watch every namespace")] = False,
    mlflow_uri: Annotated[str, typer.Option(envvar="MLFLOW_TRACKING_URI", help="MLflow tracking server")] = "",
    prometheus_url: Annotated[str, typer.Option(envvar="PROMETHEUS_URL", help="Prometheus base URL")] = "",
    comparator_url: Annotated[
        str, typer.Option(envvar="MODELROLLOUT_COMPARATOR_URL", help="Shadow comparator base URL (shadows need it)")
    ] = "",
    artifacts_destination: Annotated[
        str,
        typer.Option(
            envvar="MLFLOW_ARTIFACTS_DESTINATION",
            help="The bucket MLflow proxies artifacts to (its --artifacts-destination, e.g. s3://mlflow/artifacts): "
            "mlflow-artifacts:/ URIs are mapped onto it, since KServe reads storage directly",
        ),
    ] = "",
    host: Annotated[str, typer.Option(help="Listen address of webhooks, /metrics and probes; 0.0.0.0 in a pod")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Listen port of webhooks, /metrics and probes")] = 8080,
    tick: Annotated[str, typer.Option(help="Time between two reconciles of one rollout")] = "10s",
    poll_interval: Annotated[str, typer.Option(help="Time between two MLflow registry polls")] = "15s",
    peering: Annotated[str, typer.Option(help="kopf peering object: one replica acts at a time")] = "modelrollout",
    standalone: Annotated[bool, typer.Option(help="No peering (a single replica, or a test)")] = False,
    verbose: Annotated[bool, typer.Option(help="Log debug records too (--log-level debug)")] = False,
    log_format: LogFormatOption = LogFormat.TEXT,
    log_level: LogLevelOption = None,
) -> None:
    """Run the Kubernetes operator: ModelRollouts in the cluster rolled out on KServe.

    The MLflow webhook secret is read from MODELROLLOUT_WEBHOOK_SECRET only (a flag would show in `ps`).
    """
    from canary.traffic.comparator import ADMIN_TOKEN_ENV as COMPARATOR_TOKEN_ENV
    from controller.kube.operator import WEBHOOK_SECRET_ENV, OperatorConfig, run_operator

    if namespace and all_namespaces:
        raise UsageError("--namespace and --all-namespaces exclude each other")
    for option, value in (("--mlflow-uri (or MLFLOW_TRACKING_URI)", mlflow_uri), ("--prometheus-url (or PROMETHEUS_URL)", prometheus_url)):
        if not value:
            raise UsageError(f"{option} is required")
    config = OperatorConfig(
        mlflow_uri=mlflow_uri,
        prometheus_url=prometheus_url,
        comparator_url=comparator_url or None,
        artifacts_destination=artifacts_destination or None,
        namespaces=tuple(namespace),
        tick_s=_seconds("--tick", tick),
        poll_interval_s=_seconds("--poll-interval", poll_interval),
        host=host,
        port=port,
        webhook_secret=os.environ.get(WEBHOOK_SECRET_ENV) or None,
        comparator_token=os.environ.get(COMPARATOR_TOKEN_ENV) or None,
        peering=None if standalone else peering,
    )
    configure_logging(verbose, log_level, log_format)
    run_operator(config)


@app.command()
@one_line_errors
def demo(
    home: Annotated[Optional[Path], typer.Option("--home", help="State folder \\[default: a fresh temporary one]")] = None,
    keep: Annotated[bool, typer.Option(help="Leave the services running at the end")] = False,
) -> None:
    """The main job end to end: one promotion and two automatic rollbacks, with real parts."""
    from controller.demo.run import run_demo

    configure_logging()
    ok = run_demo(console, home, keep)
    raise typer.Exit(0 if ok else 1)


def _loopback(host: str) -> bool:
    """Whether `host` (a listen address) is reachable from this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def main() -> None:  # pragma: no cover - console script
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())

