"""Comparator-capacity benchmark: how many KServe logger event pairs one comparator core keeps up with.

    python -m benchmarks.comparator_capacity            # rising rates for 10% and 100% replayed, 4 s each: ~2 min
    python -m benchmarks.comparator_capacity --quick    # two rates per share, 1.5 s each (the smoke test)

On KServe the primary's logger sends two CloudEvents for every request it serves, whatever share
the comparator replays to the shadow (canary/traffic/comparator.py), so the comparator must keep
up with all of the primary's traffic. Real parts, on 127.0.0.1:
- `modelrollout shadow-server` as a process, alone on one core (``os.sched_setaffinity``): the
  figures are per core;
- the shadow: a KServe model server (`controller.local.modelserver`) serving the iris
  LogisticRegression as ``iris-shadow``, on the other core with the poster;
- the poster (this process): the events as KServe v0.20.0's agent sends them, binary-mode
  CloudEvents with the `ce-*` headers of tests/kube/kserve_logger.py (the faithful double, which
  names the agent's source lines), the request's and the response's event of each pair posted
  concurrently, as the agent's workers do. It posts through canary/traffic/upstream.py (about
  0.07 ms of CPU a post; httpx costs about 1 ms, and would be the bottleneck).

Load: open loop. Pairs start at a fixed rate for a fixed time, whatever the answers do (the
logger does not wait either); each rate is a step, rates rise per replayed share. After a step
the poster waits for the comparator's replay queue to drain, then reads the comparator's
/metrics: pairs paired (the stable's requests), replays answered by the shadow, and drops (queue
full, or halves never paired). A step is **kept up** when every pair was paired, every share of
them replayed and compared, and nothing dropped. Reported per step: the rate reached, the
answer latency to the poster (send to 202 read), the comparator's CPU per event and its core's
load, and its RSS.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import os
import select
import subprocess
import sys
import tempfile
import time
import urllib.parse
import uuid
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from http.client import HTTPConnection
from pathlib import Path

import httpx
import numpy as np
import psutil
from prometheus_client.parser import text_string_to_metric_families

from benchmarks.router_overhead import busy, machine, save_model, table_rule
from benchmarks.targets import Target
from benchmarks.targets import render as render_targets
from canary.traffic.comparator import ADMIN_TOKEN_ENV, REQUEST_EVENT, RESPONSE_EVENT
from canary.traffic.upstream import UpstreamError, UpstreamPool
from tests.fixtures.modelserver import Process, fit_logistic, iris, spawn

NAMESPACE, ISVC, MODEL = "bench", "iris", "iris"
TOKEN = "comparator-benchmark-token"
READY_TIMEOUT_S = 90.0
DRAIN_TIMEOUT_S = 30.0
POST_TIMEOUT_S = 10.0
POSTER_CONNECTIONS = 64
PRE_WARM_S = 2.0  # posted at the first rate before the first step
# The rates of each share, rising; `--quick` runs the first two.
RATES = {10: (1000, 2000, 3000, 4000), 100: (500, 1000, 1500, 2000)}
TARGETS = {10: 2000, 100: 1000}  # pairs/s per comparator core (issue 15)
TARGET_ANSWER_P99_MS = 2.0


@dataclass(frozen=True)
class Step:
    percent: int
    rate: int  # pairs per second asked for
    seconds: float
    pairs: int  # pairs posted
    posted_rate: float  # pairs per second the poster reached
    failed_posts: int  # answered otherwise than 202, or not at all
    answer_ms: np.ndarray  # the probe's answer times (see `probe`)
    poster_answer_ms: np.ndarray  # the busy poster's, its own lag included
    paired: int  # the comparator's stable requests (one per pair it paired)
    replayed: int  # replays the shadow answered or failed on
    replay_errors: int
    dropped: int
    cpu_seconds: float  # the comparator's, during the step (warm-up included) and its drain
    rss_mib: float
    tick_lag_ms: float  # p99 of the poster's own delay (see Posted)

    @property
    def expected_replays(self) -> int:
        return self.pairs * self.percent // 100

    @property
    def kept_up(self) -> bool:
        return (
            self.failed_posts == 0 and self.paired == self.pairs and self.dropped == 0 and self.replay_errors == 0
            # the deck replays exactly `percent`% of each 100 pairs; a partial deck may be one off
            and abs(self.replayed - self.expected_replays) <= 1
        )

    def quantile(self, q: float, of: str = "probe") -> float:
        times = self.answer_ms if of == "probe" else self.poster_answer_ms
        return float(np.quantile(times, q)) if times.size else float("nan")

    @property
    def cpu_ms_per_event(self) -> float:
        return 1000.0 * self.cpu_seconds / (2 * self.pairs) if self.pairs else float("nan")

    @property
    def core_load(self) -> float:
        """The comparator's CPU over the step's posting time: 1.0 is its whole core (the drain's
        replays count too, so a step whose queue was still full when posting stopped reads high)."""
        return self.cpu_seconds / self.seconds if self.seconds else float("nan")


# --- the events ------------------------------------------------------------------------------------


def _now() -> str:
    return datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")


def event_headers(event_id: str, kind: str, at: str) -> dict[str, str]:
    """A binary-mode CloudEvent's headers, as KServe v0.20.0's agent sets them (tests/kube/kserve_logger.py)."""
    return {
        "content-type": "application/json",
        "ce-specversion": "1.0",
        "ce-id": event_id,
        "ce-type": kind,
        "ce-source": "http://localhost:9081/",
        "ce-time": at,
        "ce-recordedtime": at,
        "ce-inferenceservicename": ISVC,
        "ce-namespace": NAMESPACE,
        "ce-component": "predictor",
        "ce-endpoint": "",
        "ce-metadata": "{}",
    }


def event_bodies() -> list[tuple[bytes, bytes]]:
    """(request, response) payloads: each iris row and the stable's real answer to it."""
    features, _ = iris()
    predicted = fit_logistic().predict(features)
    return [
        (json.dumps({"instances": [list(map(float, row))]}).encode(), json.dumps({"predictions": [int(label)]}).encode())
        for row, label in zip(features, predicted, strict=True)
    ]


@dataclass(frozen=True)
class Posted:
    pairs: int  # warm-up included
    failed: int
    answer_ms: list[float]  # of the posts started after the warm-up
    seconds: float  # the measured window
    tick_lag_ms: float  # p99 of how late the poster's 1 ms ticks were: its own delay, in every answer time


async def post_step(
    pool: UpstreamPool, comparator_url: str, rate: int, warmup: float, seconds: float, bodies: Sequence[tuple[bytes, bytes]]
) -> Posted:
    """Post pairs at `rate` for `warmup` + `seconds`, open loop."""
    answers: list[float] = []
    failed = 0
    tasks: set[asyncio.Task[None]] = set()
    began = time.perf_counter()
    measure_from = began + warmup

    async def post(body: bytes, event_id: str, kind: str, at: str) -> None:
        nonlocal failed
        started = time.perf_counter()
        try:
            answer = await pool.post(comparator_url, "/", body, event_headers(event_id, kind, at))
            ok = answer.status == 202
        except UpstreamError:
            ok = False
        if not ok:
            failed += 1
        elif started >= measure_from:
            answers.append((time.perf_counter() - started) * 1000.0)

    def start(coroutine: Coroutine[None, None, None]) -> None:
        task = asyncio.create_task(coroutine)
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    sent = 0
    total = int(rate * (warmup + seconds))
    prefix = uuid.uuid4().hex[:16]
    lags: list[float] = []
    while sent < total:
        # One timestamp per tick (a millisecond): the events' ce-time, as the agent stamps them.
        now = _now()
        due = min(total, int((time.perf_counter() - began) * rate) + 1)
        while sent < due:
            request, response = bodies[sent % len(bodies)]
            event_id = f"{prefix}-{sent}"
            start(post(request, event_id, REQUEST_EVENT, now))
            start(post(response, event_id, RESPONSE_EVENT, now))
            sent += 1
        asleep = time.perf_counter()
        await asyncio.sleep(0.001)
        if asleep >= measure_from:
            lags.append((time.perf_counter() - asleep - 0.001) * 1000.0)
    posting = time.perf_counter() - measure_from
    if tasks:
        await asyncio.wait(tasks)
    return Posted(sent, failed, answers, posting, float(np.quantile(lags, 0.99)) if lags else float("nan"))


# --- the probe ------------------------------------------------------------------------------------------

PROBE_RATE = 100  # probe events per second
PROBE_ISVC = "probe"  # an InferenceService nobody shadows: answered like any event, paired by nobody


def probe(url: str) -> list[tuple[float, float]]:
    """Post events at PROBE_RATE until stdin closes; (wall-clock time, answer ms) of each.

    Run in a process of its own (``--probe``), at a higher priority than the shadow beside it: a
    logger that is not itself busy, so what it measures is the comparator's delay alone. The busy
    poster's own answer times carry its event loop's lag too (both are reported).
    """
    parts = urllib.parse.urlsplit(url)
    connection = HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=POST_TIMEOUT_S)
    request, _ = event_bodies()[0]
    times: list[tuple[float, float]] = []
    print("ready", flush=True)
    began = time.perf_counter()
    n = 0
    while not select.select([sys.stdin], [], [], 0)[0]:  # readable: the parent closed it
        headers = event_headers(f"probe-{n}", REQUEST_EVENT, _now()) | {"ce-inferenceservicename": PROBE_ISVC}
        at, started = time.time(), time.perf_counter()
        connection.request("POST", "/", body=request, headers=headers)
        answer = connection.getresponse()
        answer.read()
        if answer.status == 202:
            times.append((at, (time.perf_counter() - started) * 1000.0))
        n += 1
        time.sleep(max(0.0, began + n / PROBE_RATE - time.perf_counter()))
    connection.close()
    return times


class Probe:
    """The probe process, for the whole run; each step takes the answer times of its own window."""

    def __init__(self, url: str, cores: set[int] | None) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.comparator_capacity", "--probe", url],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        )  # fmt: skip
        if cores:
            pin(self.process.pid, cores)
        with contextlib.suppress(PermissionError):  # raising a priority needs root; without it, it runs as is
            os.setpriority(os.PRIO_PROCESS, self.process.pid, -5)
        self.times: list[tuple[float, float]] = []
        assert self.process.stdout is not None
        if self.process.stdout.readline().strip() != b"ready":  # imported and about to post
            raise RuntimeError("the probe process did not start")

    def stop(self) -> None:
        out, _ = self.process.communicate(timeout=30)
        self.times = [tuple(t) for t in json.loads(out or b"[]")]

    def window(self, start: float, end: float) -> np.ndarray:
        return np.asarray([ms for at, ms in self.times if start <= at < end])


# --- the comparator's counters -----------------------------------------------------------------------


def counters(http: httpx.Client, url: str) -> dict[str, float]:
    out = {"paired": 0.0, "replayed": 0.0, "replay_errors": 0.0, "dropped": 0.0, "queue": 0.0}
    for family in text_string_to_metric_families(http.get(url + "/metrics").text):
        for s in family.samples:
            role = s.labels.get("role")
            if s.name == "modelrollout_requests_total" and role == "stable":
                out["paired"] += s.value
            elif s.name == "modelrollout_requests_total" and role == "shadow":
                out["replayed"] += s.value
            elif s.name == "modelrollout_request_errors_total" and role == "shadow":
                out["replay_errors"] += s.value
            elif s.name == "modelrollout_mirror_dropped_total":
                out["dropped"] += s.value
            elif s.name == "modelrollout_mirror_queue_depth":
                out["queue"] += s.value
    return out


def wait_settled(http: httpx.Client, url: str, timeout: float) -> dict[str, float]:
    """The counters once the replay queue is empty and nothing moved for a moment."""
    deadline = time.monotonic() + timeout
    last = counters(http, url)
    while time.monotonic() < deadline:
        time.sleep(0.3)
        now = counters(http, url)
        if now == last and now["queue"] == 0:
            return now
        last = now
    print(f"warning: comparator not settled within {timeout:g} s: {last}", file=sys.stderr)
    return last


# --- the processes ------------------------------------------------------------------------------------


@dataclass
class Stack:
    comparator: Process
    shadow: Process
    poster_cores: set[int] | None = None  # where this process, the shadow and the probe run

    def stop(self) -> None:
        self.comparator.stop()
        self.shadow.stop()


def pin(pid: int, cores: set[int]) -> None:
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(pid, cores)


def start_stack(workdir: Path) -> Stack:
    started: list[Process] = []
    try:
        args = ["shadow-server", "--host", "127.0.0.1", "--log-level", "warning"]
        started.append(comparator := spawn("controller.cli", args, workdir, "comparator", env={ADMIN_TOKEN_ENV: TOKEN}))
        model_dir = save_model(workdir / "model")
        args = ["--name", f"{ISVC}-shadow", "--model-uri", str(model_dir), "--version", "2"]
        started.append(shadow := spawn("controller.local.modelserver", args, workdir, "shadow"))
        comparator.wait_ready("/healthz", READY_TIMEOUT_S)
        shadow.wait_ready("/v2/health/ready", READY_TIMEOUT_S)
    except BaseException:
        for proc in started:
            proc.stop()
        raise
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if len(cores) >= 2:
        # The comparator alone on the first core; the shadow and this poster share the rest.
        pin(comparator.popen.pid, {cores[0]})
        pin(shadow.popen.pid, set(cores[1:]))
        pin(os.getpid(), set(cores[1:]))
        # The shadow yields its core to the poster at once when the poster has events to post:
        # otherwise the poster's own wait for the core lands in every answer time it measures.
        os.setpriority(os.PRIO_PROCESS, shadow.popen.pid, 10)
        return Stack(comparator, shadow, set(cores[1:]))
    return Stack(comparator, shadow)


def shadow_target(stack: Stack, percent: int) -> dict[str, object]:
    return {
        "rollout": "bench", "namespace": NAMESPACE, "inferenceService": ISVC, "model": MODEL,
        "stableVersion": "1", "candidateVersion": "2", "shadowUrl": stack.shadow.url, "percent": percent,
    }  # fmt: skip


def run(shares: dict[int, Sequence[int]], warmup: float, seconds: float, workdir: Path) -> tuple[list[Step], float]:
    began = time.perf_counter()
    # This process is pinned beside the shadow for the run (start_stack), and given back all its cores after.
    own_cores = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    try:
        stack = start_stack(workdir)
    except BaseException:
        if own_cores:
            pin(os.getpid(), own_cores)
        raise
    setup_s = time.perf_counter() - began
    try:
        steps = asyncio.run(post_all(stack, shares, warmup, seconds))
    finally:
        stack.stop()
        if own_cores:
            pin(os.getpid(), own_cores)
    return steps, setup_s


async def post_all(stack: Stack, shares: dict[int, Sequence[int]], warmup: float, seconds: float) -> list[Step]:
    """Every step, on one pool of connections (the logger's are long-lived too)."""
    bodies = event_bodies()
    comparator = psutil.Process(stack.comparator.popen.pid)
    steps: list[Step] = []
    admin = {"authorization": f"Bearer {TOKEN}"}
    pool = UpstreamPool(
        timeout=POST_TIMEOUT_S, connect_timeout=POST_TIMEOUT_S,
        max_connections=POSTER_CONNECTIONS, max_idle_per_origin=POSTER_CONNECTIONS,
    )  # fmt: skip
    prober = Probe(stack.comparator.url, stack.poster_cores)
    windows: list[tuple[float, float]] = []
    # The metrics and admin calls are made between steps, when no post is in flight: blocking is harmless.
    with httpx.Client(timeout=POST_TIMEOUT_S, trust_env=False) as http:
        try:
            for percent, rates in shares.items():
                answer = http.put(stack.comparator.url + "/admin/shadows", json=shadow_target(stack, percent), headers=admin)
                answer.raise_for_status()
                if not steps:
                    # Connections, the shadow's first answers, the comparator's first allocations: not timed.
                    await post_step(pool, stack.comparator.url, rates[0], PRE_WARM_S, 0.0, bodies)
                    wait_settled(http, stack.comparator.url, DRAIN_TIMEOUT_S)
                for rate in rates:
                    before = counters(http, stack.comparator.url)
                    cpu_before = sum(comparator.cpu_times()[:2])
                    window_from = time.time() + warmup
                    posted = await post_step(pool, stack.comparator.url, rate, warmup, seconds, bodies)
                    windows.append((window_from, time.time()))
                    after = wait_settled(http, stack.comparator.url, DRAIN_TIMEOUT_S)
                    delta = {k: int(after[k] - before[k]) for k in after}
                    steps.append(
                        Step(
                            percent=percent, rate=rate, seconds=posted.seconds + warmup, pairs=posted.pairs,
                            posted_rate=posted.pairs / (posted.seconds + warmup), failed_posts=posted.failed,
                            answer_ms=np.asarray([]), poster_answer_ms=np.asarray(posted.answer_ms), tick_lag_ms=posted.tick_lag_ms,
                            paired=delta["paired"], replayed=delta["replayed"], replay_errors=delta["replay_errors"],
                            dropped=delta["dropped"], cpu_seconds=sum(comparator.cpu_times()[:2]) - cpu_before,
                            rss_mib=comparator.memory_info().rss / 2**20,
                        )
                    )  # fmt: skip
        finally:
            await pool.aclose()
            prober.stop()
    # Each step's answer times are the probe's inside its measured window.
    return [dataclasses.replace(step, answer_ms=prober.window(*window)) for step, window in zip(steps, windows, strict=True)]


# --- the report ---------------------------------------------------------------------------------------


def highest_kept_up(steps: Sequence[Step], percent: int) -> float:
    """The highest rate asked at which the poster posted (within 2%) and every pair was compared."""
    good = [s.rate for s in steps if s.percent == percent and s.kept_up and s.posted_rate >= 0.98 * s.rate]
    return max(good, default=0.0)


def first_drop(steps: Sequence[Step], percent: int) -> str:
    lost = [s for s in steps if s.percent == percent and not s.kept_up]
    return f"{lost[0].rate} pairs/s" if lost else "none up to the highest rate tried"


def targets(steps: Sequence[Step]) -> list[Target]:
    out = []
    for percent, wanted in TARGETS.items():
        out.append(Target(f"pairs/s kept up by one comparator core, {percent}% replayed", ">=", wanted, highest_kept_up(steps, percent)))
        at = [s for s in steps if s.percent == percent and s.rate <= wanted and s.kept_up]
        worst = max((s.quantile(0.99) for s in at), default=float("nan"))
        out.append(
            Target(
                f"answer p99 to the logger up to {wanted} pairs/s, {percent}% replayed", "<=", TARGET_ANSWER_P99_MS, worst,
                " ms", "the worst kept-up step at or below the target rate",
            )
        )  # fmt: skip
    return out


def render(steps: Sequence[Step], warmup: float, seconds: float, setup_s: float, total_s: float, load_before: float) -> str:
    head = (
        f"| {'replayed':>8} | {'pairs/s asked':>13} | {'reached':>7} | {'answer p50 ms':>13} | {'p99 ms':>6} | {'poster p99 ms':>13} | "
        f"{'paired':>7} | {'replays':>7} | {'dropped':>7} | {'kept up':>7} | {'CPU ms/event':>12} | {'core':>5} | {'RSS MiB':>7} | "
        f"{'poster lag p99 ms':>17} |"
    )
    lines = [
        "Comparator-capacity benchmark (python -m benchmarks.comparator_capacity)",
        f"load: open loop, each rate for {warmup:g} s of warm-up (not timed) + {seconds:g} s; both events of a pair posted concurrently over up to "
        f"{POSTER_CONNECTIONS} keep-alive connections (canary/traffic/upstream.py); one iris row per V1 request",
        "comparator: `modelrollout shadow-server` alone on one core; shadow model server and poster on the other",
        f"answer: timed by a probe posting {PROBE_RATE} events/s of an InferenceService nobody shadows from a blocking "
        "socket, in a process of its own (poster p99: the busy poster's own answer times, its event loop's lag included)",
        "",
        head,
        table_rule(head),
    ]
    for s in steps:
        lines.append(
            f"| {s.percent:>7}% | {s.rate:>13} | {s.posted_rate:7.0f} | {s.quantile(0.5):13.2f} | {s.quantile(0.99):6.2f} | "
            f"{s.quantile(0.99, of='poster'):13.2f} | "
            f"{s.paired:>7} | {s.replayed:>7} | {s.dropped:>7} | {'yes' if s.kept_up else 'NO':>7} | "
            f"{s.cpu_ms_per_event:12.3f} | {s.core_load:5.2f} | {s.rss_mib:7.1f} | {s.tick_lag_ms:17.2f} |"
        )
    lines.append("")
    for percent in dict.fromkeys(s.percent for s in steps):
        lines.append(
            f"{percent}% replayed: kept up to {highest_kept_up(steps, percent):.0f} pairs/s; "
            f"first step not kept up: {first_drop(steps, percent)}"
        )
    lines += ["", render_targets(targets(steps)), ""]
    lines.append(f"machine: {machine()}; {busy(load_before)}; setup {setup_s:.1f} s, took {total_s:.0f} s")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.comparator_capacity", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="two rates per share, 1.5 s each (the smoke test)")
    parser.add_argument("--seconds", type=float, help="seconds measured per rate (default 4; quick 1.5)")
    parser.add_argument("--warmup", type=float, default=0.5, help="seconds posted at each rate before it is timed (default 0.5)")
    parser.add_argument("--probe", metavar="URL", help=argparse.SUPPRESS)  # the probe process (see `probe`)
    args = parser.parse_args(argv)
    if args.probe:
        print(json.dumps(probe(args.probe)))
        return 0
    seconds = args.seconds if args.seconds is not None else (1.5 if args.quick else 4.0)
    if not seconds > 0 or not args.warmup >= 0:
        parser.error("--seconds must be positive and --warmup 0 or more")
    shares = {p: rates[:2] if args.quick else rates for p, rates in RATES.items()}
    started, load_before = time.perf_counter(), os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="bench-comparator-") as workdir:
        steps, setup_s = run(shares, args.warmup, seconds, Path(workdir))
    print(render(steps, args.warmup, seconds, setup_s, time.perf_counter() - started, load_before))
    return 0


if __name__ == "__main__":
    sys.exit(main())
