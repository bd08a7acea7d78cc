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
import json
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import httpx
import numpy as np
import psutil
from prometheus_client.parser import text_string_to_metric_families

from benchmarks.router_overhead import busy, machine, save_model, table_rule
from benchmarks.targets import Target, render as render_targets
from canary.traffic.comparator import ADMIN_TOKEN_ENV, REQUEST_EVENT, RESPONSE_EVENT
from canary.traffic.upstream import UpstreamError, UpstreamPool
from tests.fixtures.modelserver import Process, fit_logistic, iris, spawn

NAMESPACE, ISVC, MODEL = "bench", "iris", "iris"
TOKEN = "comparator-benchmark-token"
READY_TIMEOUT_S = 90.0
DRAIN_TIMEOUT_S = 30.0
POST_TIMEOUT_S = 10.0
POSTER_CONNECTIONS = 64
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
    answer_ms: np.ndarray  # every post's answer time
    paired: int  # the comparator's stable requests (one per pair it paired)
    replayed: int  # replays the shadow answered or failed on
    replay_errors: int
    dropped: int
    cpu_seconds: float  # the comparator's, during the step and its drain
    busy_seconds: float  # the step's wall time plus its drain
    rss_mib: float

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

    def quantile(self, q: float) -> float:
        return float(np.quantile(self.answer_ms, q)) if self.answer_ms.size else float("nan")

    @property
    def cpu_ms_per_event(self) -> float:
        return 1000.0 * self.cpu_seconds / (2 * self.pairs) if self.pairs else float("nan")

    @property
    def core_load(self) -> float:
        """The comparator's CPU over the step's wall time: 1.0 is its whole core."""
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


async def post_step(comparator_url: str, rate: int, seconds: float, bodies: Sequence[tuple[bytes, bytes]]) -> tuple[int, int, list[float], float]:
    """Post pairs at `rate` for `seconds`, open loop; (pairs, failed posts, answer ms, seconds taken)."""
    pool = UpstreamPool(
        timeout=POST_TIMEOUT_S, connect_timeout=POST_TIMEOUT_S,
        max_connections=POSTER_CONNECTIONS, max_idle_per_origin=POSTER_CONNECTIONS,
    )  # fmt: skip
    answers: list[float] = []
    failed = 0
    tasks: set[asyncio.Task[None]] = set()

    async def post(body: bytes, event_id: str, kind: str) -> None:
        nonlocal failed
        started = time.perf_counter()
        try:
            answer = await pool.post(comparator_url, "/", body, event_headers(event_id, kind, now))
            ok = answer.status == 202
        except UpstreamError:
            ok = False
        if ok:
            answers.append((time.perf_counter() - started) * 1000.0)
        else:
            failed += 1

    def start(coroutine: Coroutine[None, None, None]) -> None:
        task = asyncio.create_task(coroutine)
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    began = time.perf_counter()
    sent = 0
    total = int(rate * seconds)
    prefix = uuid.uuid4().hex[:16]
    while sent < total:
        # One timestamp per tick (a millisecond): the events' ce-time, as the agent stamps them.
        now = _now()
        due = min(total, int((time.perf_counter() - began) * rate) + 1)
        while sent < due:
            request, response = bodies[sent % len(bodies)]
            event_id = f"{prefix}-{sent}"
            start(post(request, event_id, REQUEST_EVENT))
            start(post(response, event_id, RESPONSE_EVENT))
            sent += 1
        await asyncio.sleep(0.001)
    posting = time.perf_counter() - began
    if tasks:
        await asyncio.wait(tasks)
    await pool.aclose()
    return sent, failed, answers, posting


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
    return Stack(comparator, shadow)


def shadow_target(stack: Stack, percent: int) -> dict[str, object]:
    return {
        "rollout": "bench", "namespace": NAMESPACE, "inferenceService": ISVC, "model": MODEL,
        "stableVersion": "1", "candidateVersion": "2", "shadowUrl": stack.shadow.url, "percent": percent,
    }  # fmt: skip


def run(shares: dict[int, Sequence[int]], seconds: float, workdir: Path) -> tuple[list[Step], float]:
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
    bodies = event_bodies()
    comparator = psutil.Process(stack.comparator.popen.pid)
    steps: list[Step] = []
    admin = {"authorization": f"Bearer {TOKEN}"}
    try:
        with httpx.Client(timeout=POST_TIMEOUT_S, trust_env=False) as http:
            for percent, rates in shares.items():
                answer = http.put(stack.comparator.url + "/admin/shadows", json=shadow_target(stack, percent), headers=admin)
                answer.raise_for_status()
                for rate in rates:
                    before = counters(http, stack.comparator.url)
                    cpu_before, wall_before = sum(comparator.cpu_times()[:2]), time.perf_counter()
                    pairs, failed, answers, posting = asyncio.run(post_step(stack.comparator.url, rate, seconds, bodies))
                    after = wait_settled(http, stack.comparator.url, DRAIN_TIMEOUT_S)
                    delta = {k: int(after[k] - before[k]) for k in after}
                    steps.append(
                        Step(
                            percent=percent, rate=rate, seconds=posting, pairs=pairs, posted_rate=pairs / posting,
                            failed_posts=failed, answer_ms=np.asarray(answers), paired=delta["paired"],
                            replayed=delta["replayed"], replay_errors=delta["replay_errors"], dropped=delta["dropped"],
                            cpu_seconds=sum(comparator.cpu_times()[:2]) - cpu_before,
                            busy_seconds=time.perf_counter() - wall_before,
                            rss_mib=comparator.memory_info().rss / 2**20,
                        )
                    )  # fmt: skip
    finally:
        stack.stop()
        if own_cores:
            pin(os.getpid(), own_cores)
    return steps, setup_s


# --- the report ---------------------------------------------------------------------------------------


def highest_kept_up(steps: Sequence[Step], percent: int) -> float:
    """The highest rate reached at which every pair was compared and the answer p99 stayed in bound."""
    good = [s.posted_rate for s in steps if s.percent == percent and s.kept_up]
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


def render(steps: Sequence[Step], seconds: float, setup_s: float, total_s: float, load_before: float) -> str:
    head = (
        f"| {'replayed':>8} | {'pairs/s asked':>13} | {'reached':>7} | {'answer p50 ms':>13} | {'p99 ms':>6} | "
        f"{'paired':>7} | {'replays':>7} | {'dropped':>7} | {'kept up':>7} | {'CPU ms/event':>12} | {'core':>5} | {'RSS MiB':>7} |"
    )
    lines = [
        "Comparator-capacity benchmark (python -m benchmarks.comparator_capacity)",
        f"load: open loop, each rate for {seconds:g} s; both events of a pair posted concurrently over up to "
        f"{POSTER_CONNECTIONS} keep-alive connections (canary/traffic/upstream.py); one iris row per V1 request",
        "comparator: `modelrollout shadow-server` alone on one core; shadow model server and poster on the other",
        "",
        head,
        table_rule(head),
    ]
    for s in steps:
        lines.append(
            f"| {s.percent:>7}% | {s.rate:>13} | {s.posted_rate:7.0f} | {s.quantile(0.5):13.2f} | {s.quantile(0.99):6.2f} | "
            f"{s.paired:>7} | {s.replayed:>7} | {s.dropped:>7} | {'yes' if s.kept_up else 'NO':>7} | "
            f"{s.cpu_ms_per_event:12.3f} | {s.core_load:5.2f} | {s.rss_mib:7.1f} |"
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
    parser.add_argument("--seconds", type=float, help="seconds per rate (default 4; quick 1.5)")
    args = parser.parse_args(argv)
    seconds = args.seconds if args.seconds is not None else (1.5 if args.quick else 4.0)
    if not seconds > 0:
        parser.error("--seconds must be positive")
    shares = {p: rates[:2] if args.quick else rates for p, rates in RATES.items()}
    started, load_before = time.perf_counter(), os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="bench-comparator-") as workdir:
        steps, setup_s = run(shares, seconds, Path(workdir))
    print(render(steps, seconds, setup_s, time.perf_counter() - started, load_before))
    return 0


if __name__ == "__main__":
    sys.exit(main())
