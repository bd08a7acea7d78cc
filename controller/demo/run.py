"""`modelrollout demo`: the main job end to end on one machine, with real parts.

It starts MLflow and Prometheus, registers four versions of an iris classifier, runs the
controller (`modelrollout local run`, as its own process, exactly as a user would) and sends
labelled traffic through the rollout's router. Then it moves the `challenger` alias three times:
a good v2 is promoted, a slow v3 is rolled back on latency (a threshold check), a poor v4 is
rolled back on quality (agreement with the stable, and the sequential statistical judge on
accuracy against the labels).
It prints the timeline as the controller records it and a final table, stops everything it
started, and succeeds only if all three outcomes happened.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import httpx
from rich.console import Console
from rich.table import Table

from canary.decision.spec import Phase, RolloutStatus
from controller.demo.models import DemoVersion, iris, register_versions
from controller.local.home import LocalHome
from controller.local.loadgen import LabelledTraffic
from controller.local.platform import LocalPlatform
from controller.local.state import StateError, StateStore
from registry.connection import connect

MODEL = "iris-classifier"
ROLLOUT = "iris"
OUTCOME_TIMEOUT_S = 120

# Compressed intervals: a real rollout uses minutes; the demo must finish in a few.
DEMO_ROLLOUT = f"""\
apiVersion: modelrollout.io/v1alpha1
kind: ModelRollout
metadata:
  name: {ROLLOUT}
spec:
  model:
    name: {MODEL}
    candidateAlias: challenger
    stableAlias: champion
  shadow:
    duration: 8s
    percent: 100
  canary:
    steps: [20, 50, 80]
    interval: 8s
  progressDeadline: 60s
  analysis:
    provider: local
    metrics:
      - name: latency-p95
        template: latency_p95
        maxIncrease: "150%"
        failureLimit: 1
        minSamples: 15
      - name: error-rate
        template: error_rate
        max: 0.02
        minSamples: 15
      - name: agreement
        template: shadow_agreement
        min: 0.9
        minSamples: 15
      - name: accuracy
        template: accuracy
        judge: sequential
        tolerance: "5%"
        maxIntervals: 2
        minSamples: 20
"""


@dataclass
class Outcome:
    version: DemoVersion
    phase: str = "timeout"
    reason: str = ""
    seconds: float = 0.0

    @property
    def as_expected(self) -> bool:
        if self.phase != self.version.expected:
            return False
        if self.version.expected_reason == "latency":
            return "latency" in self.reason
        if self.version.expected_reason == "quality":
            return "agreement" in self.reason or "accuracy" in self.reason
        return True


class Timeline:
    """Prints each transition the controller records, once, with the demo's elapsed time."""

    def __init__(self, console: Console, store: StateStore):
        self.console, self.store = console, store
        self.started = time.monotonic()
        self.shown = 0

    def note(self, text: str) -> None:
        self.console.print(f"[dim]{time.monotonic() - self.started:6.1f}s[/dim]  {text}")

    def poll(self) -> RolloutStatus:
        try:
            status = self.store.load(ROLLOUT)
        except StateError:
            return RolloutStatus()  # caught mid-write by another process's first save
        for item in status.history[self.shown :]:
            colour = {"Succeeded": "green", "RolledBack": "red", "RollingBack": "red"}.get(item.to.value, "cyan")
            self.note(f"v{item.version}  {item.from_phase.value} → [{colour}]{item.to.value}[/{colour}]  {item.reason}")
        self.shown = len(status.history)
        return status


@contextlib.contextmanager
def _quiet_mlflow():
    """MLflow prints run links and serialisation advice while logging models: not the demo's story."""
    logger = logging.getLogger("mlflow")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def serves(endpoint: str | None, row, model: str = MODEL) -> bool:
    """True once a client request through the router is answered (routing applied, stable ready)."""
    if endpoint is None:
        return False
    try:
        response = httpx.post(f"{endpoint}/v1/models/{model}:predict", json={"instances": [list(map(float, row))]}, timeout=2)
    except httpx.HTTPError:
        return False
    return response.status_code == 200


def _wait(predicate, timeout: float, what: str, timeline: Timeline | None = None, step: float = 0.5) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if timeline is not None:
            timeline.poll()
        if predicate():
            return
        time.sleep(step)
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")


def run_demo(console: Console, home_dir: Path | None = None, keep: bool = False) -> bool:
    home = LocalHome.resolve(home_dir or tempfile.mkdtemp(prefix="modelrollout-demo-"))
    store = StateStore(home.state_dir)
    timeline = Timeline(console, store)
    controller: subprocess.Popen | None = None
    traffic: LabelledTraffic | None = None
    outcomes: list[Outcome] = []
    try:
        with console.status("starting MLflow and Prometheus…"):
            services, _ = home.up()
        timeline.note(f"MLflow {services.mlflow}   Prometheus {services.prometheus}   state {home.root}")
        os.environ["MLFLOW_TRACKING_URI"] = services.mlflow
        client = connect(services.mlflow)

        data = iris()
        with console.status("training and registering v1..v4…"), _quiet_mlflow():
            versions = register_versions(MODEL, data)
        champion, *challengers = versions
        client.set_registered_model_alias(MODEL, "champion", champion.version)
        timeline.note(f"registered {MODEL} v1..v{versions[-1].version}; alias 'champion' → v{champion.version}")

        rollout_file = home.root / "rollout.yaml"
        rollout_file.write_text(DEMO_ROLLOUT)
        log = open(home.root / "controller.log", "ab")
        controller = subprocess.Popen(
            [sys.executable, "-m", "controller.cli", "local", "run", "-f", str(rollout_file), "--home", str(home.root), "--tick", "0.5s"],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "COLUMNS": "200"},
        )
        timeline.note(f"controller started (pid {controller.pid}); log {home.root / 'controller.log'}")

        platform = LocalPlatform(home.platform_dir, services.mlflow)
        with console.status(f"waiting for v{champion.version} to serve…"):
            _wait(lambda: serves(platform.endpoint(ROLLOUT), data.test_x[0]), 90, "the stable model server")
        endpoint = platform.endpoint(ROLLOUT)
        traffic = LabelledTraffic(lambda: platform.endpoint(ROLLOUT), MODEL, data.test_x, data.test_y, rate=25).start()
        timeline.note(f"clients → {endpoint}  (25 requests/s, labels posted to /feedback)")

        for candidate in challengers:
            if controller.poll() is not None:
                raise RuntimeError(f"the controller exited with code {controller.returncode}; see {home.root / 'controller.log'}")
            started = time.monotonic()
            client.set_registered_model_alias(MODEL, "challenger", candidate.version)
            timeline.note(f"[bold]alias 'challenger' → v{candidate.version}[/bold] ({candidate.label})")
            outcome = Outcome(candidate)
            try:
                _wait(
                    lambda: (s := store.load(ROLLOUT)).candidate_version == candidate.version
                    and s.phase in (Phase.SUCCEEDED, Phase.ROLLED_BACK, Phase.ABORTED),
                    OUTCOME_TIMEOUT_S,
                    f"the rollout of v{candidate.version}",
                    timeline,
                )
                status = timeline.poll()
                outcome.phase, outcome.reason = status.phase.value, status.message
            except TimeoutError as err:
                outcome.reason = str(err)
            outcome.seconds = time.monotonic() - started
            outcomes.append(outcome)

        stats = traffic.stop()
        traffic = None
        _report(console, client, outcomes, stats)
        return len(outcomes) == 3 and all(o.as_expected for o in outcomes)
    except Exception as err:  # noqa: BLE001 - the demo reports any failure in one line and cleans up
        console.print(f"[red]demo failed:[/red] {err}")
        return False
    finally:
        if traffic is not None:
            traffic.stop()
        if controller is not None:
            controller.terminate()
            try:
                controller.wait(10)
            except subprocess.TimeoutExpired:
                controller.kill()
        if not keep:
            with console.status("stopping everything the demo started…"):
                home.down()
        else:
            console.print(f"services left running; `modelrollout local down --home {home.root}` stops them")


def _report(console: Console, client, outcomes: list[Outcome], stats) -> None:
    table = Table(title="modelrollout demo", show_lines=True)
    for column in ("version", "outcome", "took", "reason"):
        table.add_column(column, overflow="fold")
    for o in outcomes:
        colour = "green" if o.phase == "Succeeded" else "red"
        mark = "" if o.as_expected else " [red](unexpected)[/red]"
        table.add_row(
            f"v{o.version.version}\n{o.version.label}",
            f"[{colour}]{o.phase}[/{colour}]{mark}",
            f"{o.seconds:.0f}s",
            o.reason,
        )
    console.print(table)
    champion = client.get_model_version_by_alias(MODEL, "champion").version
    console.print(f"MLflow: alias 'champion' → v{champion}")
    for o in outcomes:
        tags = client.get_model_version(MODEL, o.version.version).tags
        status = tags.get("modelrollout.status", "-")
        reason = tags.get("modelrollout.reason") or tags.get("modelrollout.summary", "")
        console.print(f"  v{o.version.version} tagged modelrollout.status={status}: {reason[:160]}")
    p99 = sorted(stats.latencies)[int(len(stats.latencies) * 0.99)] if stats.latencies else 0.0
    failures = f" ({', '.join(f'{k}: {n}' for k, n in stats.failures.items())})" if stats.failed else ""
    console.print(
        f"clients: {stats.sent} requests, {stats.failed} failed{failures}, answered by "
        + ", ".join(f"v{v}: {n}" for v, n in sorted(stats.by_version.items()))
        + f"; p99 {p99 * 1000:.0f} ms  ({datetime.now():%H:%M:%S})"
    )
