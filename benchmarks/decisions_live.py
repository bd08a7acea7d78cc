"""Live decision benchmark: the product's own decisions on real processes, then replayed.

    python -m benchmarks.decisions_live                  # the full run (about 31 minutes on 2 cores)
    python -m benchmarks.decisions_live --quick          # one setting, one A/A and one regression: the smoke test (~1.5 min)
    python -m benchmarks.decisions_live --traces t.json  # also keep the recorded windows ...
    python -m benchmarks.decisions_live --replay t.json  # ... and replay them again without live runs

`benchmarks/decisions.py` proves the statistics on windows it draws itself: both sides from one
distribution, so a difference in how the two sides are *measured* cannot show there. This one
runs the product as a user does, with the parts of `make demo`: `local up` (a real `mlflow
server` and Prometheus), `modelrollout local run` as its own process (0.5 s tick), KServe model
servers and the router, and labelled client traffic at 20 requests/s (`LabelledTraffic`: a V1
predict per request and its ground-truth label posted to `/feedback`). Each candidate is
registered in MLflow and the `challenger` alias moved onto it, one rollout at a time; the
outcome is whatever the controller decides.

Settings: how latency and errors are judged, `threshold` (the README example's threshold checks:
p95 at most +50% on windows of at least 50 requests, three failed windows in a row roll back
(failureLimit 2, consecutive); error rate at most 1%;
agreement at least 95% in the shadow) or `sequential` (latency tolerance 10%, errors 1 point;
confidence 95%, at most 3 windows a step); accuracy is judged sequentially in both (2 points),
as in the example. Phase `shadow` (10 s at 100% mirrored, then one canary step of 50%) or
`canary` (no shadow: one step of 50%). Windows of 10 s, progressDeadline 90 s.

Cases, each a new MLflow version: A/A an identical retrain (same estimator refitted on the same
data) and the same artifact registered again; +20% and +50% server time (the champion's model
behind `SlowModel`, its delay that share of the stable's median answer time, measured on its
model server before the first case); less accurate (an over-regularised retrain: 83% against
93% on the held-out rows); 5% errors (`FlakyModel`: a random 5% of predictions fail).

Reported per setting and case: runs rolled back, in which phase, by which check (the first word
after the reason's plain lead), the time from the alias move to the rollback, and client requests
failed during the run. Then the trace-driven replay: every A/A run's analysis windows, read back
from Prometheus exactly (raw counters at the window's ends: the router's latency buckets,
requests, errors and labelled/correct feedback of both sides, as the checks read them), are
drawn with replacement into runs of 10 windows, and both judges are run on them with the live
settings' parameters: the path effects of real processes are in the draws; the correlation
between a run's consecutive windows is not.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path

import httpx
import mlflow
import yaml

from canary.decision.metrics import PrometheusProvider
from canary.decision.samples import Counts, Histogram, histogram_quantile
from canary.decision.sequential import judge_latency, judge_rate
from canary.decision.spec import Phase, RolloutStatus
from canary.traffic.serving_metrics import BASELINE, CANARY, LATENCY_BUCKETS, SHADOW, STABLE
from controller.demo.models import (
    Dataset,
    FlakyModel,
    SlowModel,
    champion_estimator,
    iris,
    less_accurate_estimator,
    log_pyfunc,
    log_sklearn,
)
from controller.local.home import LocalHome, Services
from controller.local.loadgen import LabelledTraffic
from controller.local.platform import LocalPlatform
from controller.local.state import StateError, StateStore
from registry.connection import connect

RATE = 20.0  # client requests per second
WINDOW_S = 10
PROGRESS_DEADLINE = "90s"
RUN_TIMEOUT_S = 240
TERMINAL = (Phase.SUCCEEDED, Phase.ROLLED_BACK, Phase.ABORTED)
JUDGES = ("threshold", "sequential")
PHASES = ("shadow", "canary")

# Accuracy is judged sequentially in both settings, as in the README's example: one window's
# accuracy on a few dozen labels swings by several points, so no per-window threshold on it is
# both safe and useful at this traffic (the replay measures the one the example used to have).
_ACCURACY = {"name": "accuracy", "template": "accuracy", "judge": "sequential", "tolerance": "2%",
             "minSamples": 50, "noData": "inconclusive"}  # fmt: skip
_THRESHOLD_CHECKS = [  # the README example's threshold checks
    {"name": "latency-p95", "template": "latency_p95", "maxIncrease": "50%", "failureLimit": 2,
     "consecutive": True, "minSamples": 50, "noData": "pass"},
    {"name": "errors", "template": "error_rate", "max": 0.01},
    {"name": "agreement", "template": "shadow_agreement", "min": 0.95},
    _ACCURACY,
]  # fmt: skip
_SEQUENTIAL_CHECKS = [
    {"name": "latency", "template": "latency_p95", "judge": "sequential", "tolerance": "10%"},
    {"name": "errors", "template": "error_rate", "judge": "sequential", "tolerance": "1%"},
    _ACCURACY,
]
# The same numbers for the replay (the spec's defaults where the checks above leave them).
LATENCY_TOLERANCE, ERROR_POINTS, ACCURACY_POINTS, CONFIDENCE = 0.10, 0.01, 0.02, 0.95
THRESHOLD_P95_INCREASE, THRESHOLD_MAX_ERRORS = 0.50, 0.01
LATENCY_MIN_SAMPLES, ACCURACY_MAX_DECREASE = 50, 0.02  # the latter: the example's former per-window check
MIN_SAMPLES, ACCURACY_MIN_SAMPLES = 10, 50
# Looks per replayed run: a live step's most (maxIntervals 3), and the simulation's horizon.
REPLAY_HORIZONS = (3, 10)


@dataclass(frozen=True)
class Setting:
    judge: str  # "threshold" | "sequential"
    phase: str  # "shadow" | "canary": where the candidate is first judged
    window_s: int = WINDOW_S  # the shadow's duration and the canary interval: one analysis window

    @property
    def name(self) -> str:
        return f"{self.judge}/{self.phase}"

    @property
    def rollout(self) -> str:
        return f"live-{self.judge[:3]}-{self.phase}"


@dataclass(frozen=True)
class Case:
    name: str
    candidate: str  # how the version is made: see LiveSetting.register
    expect: str | None = None  # the check kind that should roll it back; None: A/A, must promote
    slowdown: float = 0.0  # "slower": the added share of the stable's median server time


CASES = (
    Case("A/A identical retrain", "retrain"),
    Case("A/A same artifact", "same-artifact"),
    Case("+20% server time", "slower", "latency", slowdown=0.2),
    Case("+50% server time", "slower", "latency", slowdown=0.5),
    Case("less accurate", "less-accurate", "accuracy"),
    Case("5% errors", "flaky", "errors"),
)


def rollout_spec(setting: Setting, model: str) -> dict:
    window = f"{setting.window_s}s"
    shadow = {"duration": window, "percent": 100} if setting.phase == "shadow" else {"enabled": False}
    return {
        "apiVersion": "modelrollout.io/v1alpha1",
        "kind": "ModelRollout",
        "metadata": {"name": setting.rollout},
        "spec": {
            "model": {"name": model, "candidateAlias": "challenger", "stableAlias": "champion"},
            "shadow": shadow,
            "canary": {"steps": [50], "interval": window},
            "progressDeadline": PROGRESS_DEADLINE,
            "analysis": {
                "provider": "local",
                "metrics": _THRESHOLD_CHECKS if setting.judge == "threshold" else _SEQUENTIAL_CHECKS,
            },
        },
    }


# -- recorded windows -----------------------------------------------------------------------------


@dataclass
class Side:
    """One role's counts over one window, read from the router's series in Prometheus."""

    buckets: list[float]  # per-bucket counts over LATENCY_BUCKETS, the last above them (+Inf)
    requests: float
    errors: float
    labelled: float
    correct: float


@dataclass
class Window:
    phase: str  # "shadow" | "canary"
    sides: dict[str, Side]  # by role: shadow, baseline, stable (shadow phase); canary, stable

    def latency_pair(self) -> tuple[Side, Side]:
        """(candidate, baseline) as the latency and error checks compare them in this phase."""
        if self.phase == "shadow":
            return self.sides[SHADOW], self.sides[BASELINE]
        return self.sides[CANARY], self.sides[STABLE]

    def accuracy_pair(self) -> tuple[Side, Side]:
        """Accuracy compares with what the stable told its clients, in both phases."""
        return self.sides[SHADOW if self.phase == "shadow" else CANARY], self.sides[STABLE]


def read_side(prometheus: PrometheusProvider, rollout: str, version: str, role: str, start: float, end: float) -> Side:
    """Exact counts over (start, end]: raw counter values at both ends (the latest scrape at or before
    each), subtracted. A series not there yet has counted nothing."""
    sel = f'rollout="{rollout}",version="{version}",role="{role}"'

    def at(promql: str, t: float) -> dict[str, float]:
        return {labels.get("le", ""): value for labels, value in prometheus.query_vector(promql, at=t)}

    def delta(promql: str) -> dict[str, float]:
        before, after = at(promql, start), at(promql, end)
        return {key: max(0.0, value - before.get(key, 0.0)) for key, value in after.items()}

    le = delta(f"sum by (le) (modelrollout_request_duration_seconds_bucket{{{sel}}})")
    buckets = list(Histogram.from_le(le).counts) if le else [0.0] * (len(LATENCY_BUCKETS) + 1)

    def total(metric: str) -> float:
        return sum(delta(f"sum({metric}{{{sel}}})").values())

    return Side(
        buckets=buckets,
        requests=total("modelrollout_requests_total"),
        errors=total("modelrollout_request_errors_total"),
        labelled=total("modelrollout_feedback_total"),
        correct=total("modelrollout_feedback_correct_total"),
    )


def record_windows(prometheus: PrometheusProvider, rollout: str, status: RolloutStatus, window_s: int) -> list[Window]:
    """The candidate's shadow and canary phases cut into `window_s` windows from its first answer (a
    phase starts before the candidate is ready); a trailing partial window is left out (the engine
    does not judge one either)."""
    version = status.candidate_version or ""
    # After a promotion the status's stable is the candidate itself: the runs compared it with the one before.
    stable = (status.previous_stable_version if status.stable_version == version else status.stable_version) or ""
    history = [t for t in status.history if t.version == version]
    windows: list[Window] = []
    for phase, candidate_role, roles in (("shadow", SHADOW, (SHADOW, BASELINE, STABLE)), ("canary", CANARY, (CANARY, STABLE))):
        entered = next((t.time for t in history if t.to.value.lower() == phase), None)
        if entered is None:
            continue
        left = next((t.time for t in history if t.from_phase.value.lower() == phase and t.to.value.lower() != phase), None)
        end = (left or datetime.now(entered.tzinfo)).timestamp()
        t = _first_answer(prometheus, rollout, version, candidate_role, entered.timestamp(), end)
        while t is not None and t + window_s <= end:
            sides = {role: read_side(prometheus, rollout, version if role == candidate_role else stable, role, t, t + window_s)
                     for role in roles}  # fmt: skip
            window = Window(phase, sides)
            candidate, baseline = window.latency_pair()
            if candidate.requests > 0 and baseline.requests > 0:
                windows.append(window)
            t += window_s
    return windows


def _first_answer(prometheus: PrometheusProvider, rollout: str, version: str, role: str, start: float, end: float) -> float | None:
    """About when the version first answered in `role` (one scrape before its counter was first above 0)."""
    sel = f'rollout="{rollout}",version="{version}",role="{role}"'
    for series in prometheus.query_range(f"sum(modelrollout_requests_total{{{sel}}})", start, end, 1.0):
        for at, value in series.points:
            if value > 0:
                return max(start, at - 1.0)
    return None


# -- live runs ------------------------------------------------------------------------------------


@dataclass
class RunResult:
    setting: str
    case: str
    version: str
    outcome: str  # the terminal phase
    rolled_back_in: str | None  # the phase the rollback started from
    check: str | None  # the deciding check, from the reason
    seconds: float  # alias move to the terminal decision
    client_failed: int
    client_sent: int
    message: str
    windows: list[Window] = field(default_factory=list)


def deciding_check(message: str) -> str | None:
    """`<plain lead> — <check> <evidence>`: the check's name."""
    _, sep, evidence = message.partition(" — ")
    return evidence.split()[0] if sep and evidence.split() else None


class LiveSetting:
    """One setting's rollout: its registered model, controller process, endpoint and client traffic."""

    def __init__(self, home: LocalHome, services: Services, setting: Setting, data: Dataset, log: Callable[[str], None]):
        self.home, self.services, self.setting, self.data, self.log = home, services, setting, data, log
        self.model = f"live-{setting.judge}-{setting.phase}"
        self.client = connect(services.mlflow)
        self.store = StateStore(home.state_dir)
        self.platform = LocalPlatform(home.platform_dir, services.mlflow)
        self.champion_source: str | None = None
        self.server_time_s = 0.0
        self.controller: subprocess.Popen | None = None
        self.traffic: LabelledTraffic | None = None

    def start(self) -> None:
        mlflow.set_experiment("decisions-live")
        champion = log_sklearn(self.model, champion_estimator(self.data), self.data, "champion")
        self.client.set_registered_model_alias(self.model, "champion", champion)
        spec_file = self.home.root / f"{self.setting.rollout}.yaml"
        spec_file.write_text(yaml.safe_dump(rollout_spec(self.setting, self.model)))
        log_file = open(self.home.root / f"{self.setting.rollout}.log", "ab")  # noqa: SIM115 - the child owns it
        self.controller = subprocess.Popen(
            [sys.executable, "-m", "controller.cli", "local", "run", "-f", str(spec_file),
             "--home", str(self.home.root), "--tick", "0.5s"],
            stdout=log_file, stderr=subprocess.STDOUT,
        )  # fmt: skip
        log_file.close()
        deadline = time.monotonic() + 120
        while self.platform_readiness() != "serving":
            if time.monotonic() > deadline or self.controller.poll() is not None:
                raise RuntimeError(f"{self.setting.rollout}: the stable never served ({self.platform_readiness()})")
            time.sleep(0.5)
        self.server_time_s = self.measure_server_time(champion)
        self.traffic = LabelledTraffic(
            lambda: self.platform.endpoint(self.setting.rollout), self.model, self.data.test_x, self.data.test_y, rate=RATE
        ).start()
        time.sleep(3)  # the stable's series exist before the first candidate

    def platform_readiness(self) -> str:
        try:
            return self.platform.endpoint_readiness(self.setting.rollout)
        except Exception as exc:  # noqa: BLE001 - a readiness probe of a platform still starting
            return f"{type(exc).__name__}: {exc}"

    def measure_server_time(self, version: str, requests: int = 200) -> float:
        """The stable's median answer time on its own model server (the share a slow candidate adds)."""
        record = self.platform.supervisor.get(f"{self.setting.rollout}-v{version}")
        assert record is not None, "the stable's model server is not supervised"
        url = f"http://127.0.0.1:{record.port}/v1/models/{self.model}:predict"
        times = []
        with httpx.Client(trust_env=False, timeout=5) as http:
            for i in range(requests):
                started = time.perf_counter()
                http.post(url, json={"instances": [list(map(float, self.data.test_x[i % len(self.data.test_x)]))]})
                times.append(time.perf_counter() - started)
        return statistics.median(times[requests // 10 :])  # the first answers warm up

    def register(self, case: Case) -> str:
        est = champion_estimator(self.data)
        if case.candidate == "retrain":
            return log_sklearn(self.model, est, self.data, "identical-retrain")
        if case.candidate == "same-artifact":
            source = self.client.get_model_version_by_alias(self.model, "champion")
            # The champion's own artifact, a second version: MLflow 3's source is the logged model
            # (`models:/m-...`), which register_model resolves (a bare create_model_version refuses it).
            return str(mlflow.register_model(source.source, self.model).version)
        if case.candidate == "slower":
            return log_pyfunc(self.model, SlowModel(est, case.slowdown * self.server_time_s), self.data, case.name)
        if case.candidate == "less-accurate":
            return log_sklearn(self.model, less_accurate_estimator(self.data), self.data, "less-accurate")
        if case.candidate == "flaky":
            return log_pyfunc(self.model, FlakyModel(est, 0.05), self.data, "flaky")
        raise ValueError(f"unknown candidate kind {case.candidate!r}")

    def run(self, case: Case, prometheus: PrometheusProvider) -> RunResult:
        assert self.traffic is not None
        version = self.register(case)
        sent, failed = self.traffic.stats.sent, self.traffic.stats.failed
        started = time.monotonic()
        self.client.set_registered_model_alias(self.model, "challenger", version)
        status = self._wait_terminal(version)
        seconds = time.monotonic() - started
        rollback = next(
            (t for t in status.history if t.version == version and t.to in (Phase.ROLLING_BACK, Phase.ROLLED_BACK)), None
        )
        time.sleep(2)  # the last scrape of the run's series
        result = RunResult(
            setting=self.setting.name,
            case=case.name,
            version=version,
            outcome=status.phase.value,
            rolled_back_in=rollback.from_phase.value.lower() if rollback else None,
            check=deciding_check(status.message) if status.phase is Phase.ROLLED_BACK else None,
            seconds=seconds,
            client_failed=self.traffic.stats.failed - failed,
            client_sent=self.traffic.stats.sent - sent,
            message=status.message,
            windows=record_windows(prometheus, self.setting.rollout, status, self.setting.window_s),
        )
        self.log(
            f"{self.setting.name:<20} {case.name:<22} v{version}: {result.outcome} in {seconds:.0f} s"
            + (f" ({result.rolled_back_in}, {result.check})" if result.rolled_back_in else "")
            + f"; {len(result.windows)} windows; clients {result.client_failed}/{result.client_sent} failed"
        )
        return result

    def _wait_terminal(self, version: str) -> RolloutStatus:
        deadline = time.monotonic() + RUN_TIMEOUT_S
        while True:
            try:
                status = self.store.load(self.setting.rollout)
            except StateError:
                status = None
            if status is not None and status.candidate_version == version and status.phase in TERMINAL:
                return status
            if self.controller is not None and self.controller.poll() is not None:
                raise RuntimeError(f"{self.setting.rollout}: `local run` exited ({self.controller.returncode})")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.setting.rollout} v{version}: no decision in {RUN_TIMEOUT_S} s")
            time.sleep(0.5)

    def stop(self) -> None:
        if self.traffic is not None:
            self.traffic.stop()
        if self.controller is not None and self.controller.poll() is None:
            self.controller.terminate()
            try:
                self.controller.wait(15)
            except subprocess.TimeoutExpired:
                self.controller.kill()
        self.platform.teardown(self.setting.rollout)
        self.platform.close()


def schedule(runs_aa: int, runs_regression: int) -> list[Case]:
    """Interleaved, so that whatever else the machine does falls on every case alike: A/A runs
    alternate identical retrain and same artifact; each regression follows a pair of them."""
    aa = [CASES[i % 2] for i in range(runs_aa)]
    regressions = [c for c in CASES[2:] for _ in range(runs_regression)]
    out: list[Case] = []
    while aa or regressions:
        out += aa[:2]
        aa = aa[2:]
        if regressions:
            out.append(regressions.pop(0))
    return out


def run_live(
    settings: Sequence[Setting], cases: Sequence[Case], log: Callable[[str], None]
) -> tuple[list[RunResult], dict[str, float], list[str]]:
    """Every setting in turn, on one `local up`: its own model, rollout and controller, `cases` in order."""
    home = LocalHome(Path(tempfile.mkdtemp(prefix="decisions-live-")))
    services, _ = home.up()
    previous = os.environ.get("MLFLOW_TRACKING_URI")
    os.environ["MLFLOW_TRACKING_URI"] = services.mlflow
    data = iris()
    results: list[RunResult] = []
    failures: list[str] = []
    server_times: dict[str, float] = {}
    prometheus = PrometheusProvider(services.prometheus, timeout=10)
    try:
        for setting in settings:
            live = LiveSetting(home, services, setting, data, log)
            try:
                live.start()
                server_times[setting.name] = live.server_time_s
                log(f"{setting.name}: stable's median server time {live.server_time_s * 1000:.2f} ms")
                for case in cases:
                    try:
                        results.append(live.run(case, prometheus))
                    except Exception as exc:  # noqa: BLE001 - one broken run must not lose the others
                        log(f"{setting.name} {case.name}: run failed: {type(exc).__name__}: {exc}")
                        failures.append(f"{setting.name} {case.name}: {type(exc).__name__}: {exc}")
            finally:
                live.stop()
    finally:
        prometheus.close()
        home.down()
        if previous is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = previous
    return results, server_times, failures


# -- trace-driven replay --------------------------------------------------------------------------


@dataclass(frozen=True)
class ReplaySummary:
    phase: str
    looks: int  # windows per replayed run
    pool: int  # recorded A/A windows drawn from
    runs: int
    sequential: float  # share of replayed runs the sequential setting rolls back
    threshold: float  # ... and the threshold setting
    sequential_by_check: dict[str, int]
    threshold_by_check: dict[str, int]
    accuracy_per_window: float  # ... a per-window `accuracy maxDecrease: 2%` check alone


def _histogram(side: Side) -> Histogram:
    return Histogram(tuple(LATENCY_BUCKETS), tuple(side.buckets))


def _add(a: Side, b: Side) -> Side:
    return Side(
        buckets=[x + y for x, y in zip(a.buckets, b.buckets)],
        requests=a.requests + b.requests,
        errors=a.errors + b.errors,
        labelled=a.labelled + b.labelled,
        correct=a.correct + b.correct,
    )


def _accumulated(windows: Sequence[Window], pair: Callable[[Window], tuple[Side, Side]]) -> tuple[Side, Side]:
    candidate, baseline = pair(windows[0])
    for w in windows[1:]:
        c, b = pair(w)
        candidate, baseline = _add(candidate, c), _add(baseline, b)
    return candidate, baseline


def sequential_verdict(windows: Sequence[Window], checks: Sequence[str] = ("latency", "errors", "accuracy")) -> str | None:
    """The first of `checks` the sequential judge fails on the windows accumulated so far, or None."""
    lat_c, lat_b = _accumulated(windows, Window.latency_pair)
    for check in checks:
        if check == "latency":
            decision = judge_latency(_histogram(lat_c), _histogram(lat_b), tolerated_slowdown=LATENCY_TOLERANCE,
                                     confidence=CONFIDENCE, min_samples=MIN_SAMPLES)  # fmt: skip
        elif check == "errors":
            decision = judge_rate(Counts(lat_c.errors, lat_c.requests), Counts(lat_b.errors, lat_b.requests),
                                  worse="higher", tolerance=ERROR_POINTS, confidence=CONFIDENCE, min_samples=MIN_SAMPLES)  # fmt: skip
        else:
            acc_c, acc_b = _accumulated(windows, Window.accuracy_pair)
            decision = judge_rate(Counts(acc_c.correct, acc_c.labelled), Counts(acc_b.correct, acc_b.labelled),
                                  worse="lower", tolerance=ACCURACY_POINTS, confidence=CONFIDENCE,
                                  min_samples=ACCURACY_MIN_SAMPLES)  # fmt: skip
        if decision.outcome == "fail":
            return check
    return None


def threshold_failures(window: Window) -> list[str]:
    """The threshold setting's per-window checks that fail on this window alone."""
    failed = []
    c, b = window.latency_pair()
    # latency-p95: minSamples 50 with noData pass; errors: the default minSamples, inconclusive below.
    if c.requests >= LATENCY_MIN_SAMPLES and b.requests >= LATENCY_MIN_SAMPLES:
        if histogram_quantile(_histogram(c), 0.95) > histogram_quantile(_histogram(b), 0.95) * (1 + THRESHOLD_P95_INCREASE):
            failed.append("latency-p95")
    if c.requests >= MIN_SAMPLES and c.errors / c.requests > THRESHOLD_MAX_ERRORS:
        failed.append("errors")
    return failed


def accuracy_fails_per_window(window: Window) -> bool:
    """The example's former accuracy check: `maxDecrease: "2%"`, minSamples 50, on one window."""
    c, b = window.accuracy_pair()
    if c.labelled < ACCURACY_MIN_SAMPLES or b.labelled < ACCURACY_MIN_SAMPLES:
        return False
    return c.correct / c.labelled < (b.correct / b.labelled) * (1 - ACCURACY_MAX_DECREASE)


# failureLimit and whether only failures in a row count, as in the live spec.
THRESHOLD_LIMITS = {"latency-p95": (2, True), "errors": (0, False)}


def threshold_run(drawn: Sequence[Window]) -> str | None:
    failures = dict.fromkeys(THRESHOLD_LIMITS, 0)
    for t, w in enumerate(drawn, start=1):
        failed = threshold_failures(w)
        for check, (limit, consecutive) in THRESHOLD_LIMITS.items():
            if check in failed:
                failures[check] += 1
                if failures[check] > limit:
                    return check
            elif consecutive:
                failures[check] = 0  # a pass (or too few requests: noData pass) resets the count
        if sequential_verdict(drawn[:t], ("accuracy",)):
            return "accuracy"
    return None


def sequential_run(drawn: Sequence[Window]) -> str | None:
    return next((c for t in range(1, len(drawn) + 1) if (c := sequential_verdict(drawn[:t])) is not None), None)


def replay(windows: Sequence[Window], phase: str, runs: int, seed: int, looks: int = 10) -> ReplaySummary | None:
    """`runs` runs of `looks` windows drawn with replacement from the phase's recorded windows."""
    pool = [w for w in windows if w.phase == phase]
    if not pool:
        return None
    rng = random.Random(seed)
    by: dict[str, dict[str, int]] = {"sequential": {}, "threshold": {}}
    per_window_accuracy = 0
    for _ in range(runs):
        drawn = [rng.choice(pool) for _ in range(looks)]
        for name, run in (("sequential", sequential_run), ("threshold", threshold_run)):
            check = run(drawn)
            if check is not None:
                by[name][check] = by[name].get(check, 0) + 1
        per_window_accuracy += any(accuracy_fails_per_window(w) for w in drawn)
    return ReplaySummary(
        phase=phase,
        looks=looks,
        pool=len(pool),
        runs=runs,
        sequential=sum(by["sequential"].values()) / runs,
        threshold=sum(by["threshold"].values()) / runs,
        sequential_by_check=by["sequential"],
        threshold_by_check=by["threshold"],
        accuracy_per_window=per_window_accuracy / runs,
    )


# -- report ---------------------------------------------------------------------------------------


def render_live(results: Sequence[RunResult], settings: Sequence[Setting]) -> list[str]:
    head = ["setting".ljust(20), "case".ljust(22), "runs", "rolled back", "in phase (check)".ljust(34),
            "decision s median/max", "clients failed", "measured p50/p95 vs baseline"]  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("-" * (len(h) + 2) for h in head) + "|"]
    for setting in settings:
        for case in CASES:
            rows = [r for r in results if r.setting == setting.name and r.case == case.name]
            if not rows:
                continue
            rolled = [r for r in rows if r.outcome != Phase.SUCCEEDED.value]
            where: dict[str, int] = {}
            for r in rolled:
                key = f"{r.rolled_back_in or r.outcome} ({r.check or '-'})"
                where[key] = where.get(key, 0) + 1
            times = sorted(r.seconds for r in (rolled if case.expect else rows))
            timing = f"{statistics.median(times):.0f}/{max(times):.0f}" if times else "-"
            sent = sum(r.client_sent for r in rows)
            failed = sum(r.client_failed for r in rows)
            cells = [
                setting.name.ljust(20),
                case.name.ljust(22),
                f"{len(rows):>4}",
                f"{len(rolled):>4} of {len(rows):<4}".ljust(11),
                (", ".join(f"{n}× {k}" for k, n in sorted(where.items())) or "-").ljust(34),
                timing.ljust(21),
                f"{failed} of {sent}".ljust(14),
                measured_slowdown([w for r in rows for w in r.windows]).ljust(28),
            ]
            lines.append("| " + " | ".join(cells) + " |")
    return lines


def measured_slowdown(windows: Sequence[Window]) -> str:
    """The candidate's p50 and p95 over the baseline's, pooled over the windows (as the checks compare them)."""
    if not windows:
        return "-"
    candidate, baseline = _accumulated(windows, Window.latency_pair)
    if candidate.requests == 0 or baseline.requests == 0:
        return "-"
    ratios = [histogram_quantile(_histogram(candidate), q) / histogram_quantile(_histogram(baseline), q) for q in (0.5, 0.95)]
    return f"×{ratios[0]:.2f} / ×{ratios[1]:.2f}"


def targets(results: Sequence[RunResult], replays: Sequence[ReplaySummary]) -> list[str]:
    aa = [r for r in results if not _case(r.case).expect]
    false = [r for r in aa if r.outcome != Phase.SUCCEEDED.value]
    out = [
        "targets:",
        f"- live A/A: {len(false)} of {len(aa)} runs rolled back (target 0 of at least 20) -> "
        + ("met" if not false and len(aa) >= 20 else "NOT met" if false else f"0 false, but only {len(aa)} runs"),
    ]
    for s in replays:
        worst = max(s.sequential, s.threshold)
        out.append(
            f"- replay, {s.phase}, {s.looks} looks: sequential {s.sequential:.1%}, threshold {s.threshold:.1%} of "
            f"{s.runs} runs rolled back (target <= 1%) -> {'met' if worst <= 0.01 else 'NOT met'}"
        )
    missed = [r for r in results if _case(r.case).expect and r.outcome == Phase.SUCCEEDED.value]
    out.append(f"- regressions promoted: {len(missed)} of {sum(1 for r in results if _case(r.case).expect)}")
    return out


def _case(name: str) -> Case:
    return next(c for c in CASES if c.name == name)


def render(results, replays, server_times, settings, seconds: float, runs: int) -> str:
    window = settings[0].window_s if settings else WINDOW_S
    lines = [
        "Live decision benchmark (python -m benchmarks.decisions_live)",
        f"real MLflow, Prometheus (1 s scrapes), KServe model servers, router, `local run` (0.5 s tick); "
        f"labelled clients at {RATE:g} req/s; windows {window} s; shadow {window} s at 100% then canary [50]; "
        f"canary setting: canary [50] only",
        "stable's median server time: "
        + ", ".join(f"{name} {t * 1000:.2f} ms" for name, t in server_times.items()),
        "",
    ]
    if results:
        lines += render_live(results, settings)
        lines.append("rolled back: A/A = false rollbacks; decision s: alias move to the rollback (regressions) or to the end (A/A)")
        lines.append("")
    lines.append(f"trace-driven replay: A/A windows drawn with replacement into {runs} runs per phase and number of looks")
    head = ["phase ", "looks", "pool windows", "sequential rolled back", "by check".ljust(22), "threshold rolled back",
            "by check".ljust(22), "per-window accuracy -2%"]  # fmt: skip
    lines.append("| " + " | ".join(head) + " |")
    lines.append("|" + "|".join("-" * (len(h) + 2) for h in head) + "|")
    for s in replays:
        cells = [s.phase.ljust(6), f"{s.looks:>5}", f"{s.pool:>12}", f"{s.sequential:>22.1%}", _by(s.sequential_by_check).ljust(22),
                 f"{s.threshold:>21.1%}", _by(s.threshold_by_check).ljust(22), f"{s.accuracy_per_window:>23.1%}"]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    lines.append(
        "per-window accuracy -2%: the README example's former accuracy check (maxDecrease 2%, minSamples 50, "
        "failureLimit 0) on the same replayed windows, not part of either setting"
    )
    lines.append("")
    lines += targets(results, replays)
    lines.append("")
    lines.append(f"machine: {os.cpu_count()} cpu, Python {platform.python_version()}; took {seconds:.0f} s")
    return "\n".join(lines)


def _by(counts: dict[str, int]) -> str:
    return ", ".join(f"{k} {n}" for k, n in sorted(counts.items())) or "-"


def save_traces(path: Path, results: Sequence[RunResult]) -> None:
    path.write_text(json.dumps([asdict(r) for r in results], indent=1))


def load_traces(path: Path) -> list[RunResult]:
    out = []
    for raw in json.loads(path.read_text()):
        windows = [
            Window(w["phase"], {role: Side(**side) for role, side in w["sides"].items()}) for w in raw.pop("windows")
        ]
        out.append(RunResult(**raw, windows=windows))
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.decisions_live", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="threshold/shadow only with 5 s windows, one A/A and one 5%% errors run, 200 replays")
    parser.add_argument("--runs-aa", type=int, default=6, help="A/A runs per setting (default 6: 24 in all)")
    parser.add_argument("--runs-regression", type=int, default=1, help="runs per regression case and setting (default 1)")
    parser.add_argument("--replays", type=int, default=2000, help="trace-driven runs per phase (default 2000)")
    parser.add_argument("--traces", type=Path, help="write the live runs and their windows here (JSON)")
    parser.add_argument("--replay", type=Path, help="no live runs: replay the windows of a --traces file")
    parser.add_argument("--settings", help="only these settings, e.g. threshold/shadow,sequential/canary")
    parser.add_argument("--seed", type=int, default=20261206)
    args = parser.parse_args(argv)
    settings = [Setting(judge, phase) for judge in JUDGES for phase in PHASES]
    started = time.perf_counter()
    server_times: dict[str, float] = {}
    failures: list[str] = []
    if args.replay:
        results = load_traces(args.replay)
        names = {r.setting for r in results}
        settings = [s for s in settings if s.name in names]
    else:
        cases = schedule(args.runs_aa, args.runs_regression)
        if args.quick:
            settings, cases, args.replays = [Setting("threshold", "shadow", window_s=5)], [CASES[0], CASES[5]], 200
        if args.runs_aa < 1 or args.runs_regression < 0 or args.replays < 1:
            parser.error("--runs-aa and --replays must be at least 1, --runs-regression at least 0")
        if args.settings:
            wanted = set(args.settings.split(","))
            unknown = wanted - {s.name for s in settings}
            if unknown:
                parser.error(f"unknown settings {sorted(unknown)}; known: {', '.join(s.name for s in settings)}")
            settings = [s for s in settings if s.name in wanted]
        results, server_times, failures = run_live(settings, cases, lambda line: print(line, file=sys.stderr, flush=True))
        if args.traces:
            save_traces(args.traces, results)
    aa_windows = [w for r in results if not _case(r.case).expect for w in r.windows]
    replays = [
        s for phase in PHASES for looks in REPLAY_HORIZONS
        if (s := replay(aa_windows, phase, args.replays, args.seed, looks)) is not None
    ]  # fmt: skip
    print(render(results, replays, server_times, settings, time.perf_counter() - started, args.replays))
    for failure in failures:
        print(f"run not completed: {failure}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
