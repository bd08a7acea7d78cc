"""Router-overhead benchmark: what the local router costs a client, with and without mirroring.

    python -m benchmarks.router_overhead            # 5 rounds x 3 cases x (0.5 s warm-up + 2 s): about a minute
    python -m benchmarks.router_overhead --quick    # 1 round x 3 cases x (0.5 s warm-up + 2 s), for the smoke test

Real parts only, all on 127.0.0.1: two KServe model servers (`controller.local.modelserver`, one
process each) serving the same MLflow sklearn model (LogisticRegression on iris, saved with
`mlflow.sklearn.save_model`), version 1 as the stable and version 2 as the shadow; one router
process (`python -m canary.traffic.router`, default settings: 4 mirror workers, a queue of
1000 copies) whose routing is set with `PUT /admin/routing`, as the local platform does.

Three cases, each driven by the same load:
- direct: clients call the stable model server's `POST /v1/models/iris:predict` themselves;
- router: the same calls through the router, routing = the stable only (no candidate);
- router + 100% mirror: through the router with the shadow as candidate, `shadowPercent: 100`:
  every client request is copied to the shadow after the client's answer is ready.

Load: a fixed number of closed-loop clients (default 8) in one asyncio loop of this process, one
`httpx.AsyncClient` with a connection each, each sending its next request as soon as the last one
is answered; a request is one iris row, V1 JSON, pre-encoded. The three cases run in turn, in
interleaved rounds (default 5, so that load from elsewhere on the machine falls on every case
alike); each turn opens its connections, warms up (excluded) and then measures a fixed time.
Only requests that start inside a measured window count; latency is from just before the request
is sent to the full answer read (`time.perf_counter`); throughput is those requests over the
windows' wall time. A request is failed when it raises or answers other than 200; failed
requests are counted, not timed.

The figures that matter are the RATIOS router/direct and mirrored/direct, measured in the same
run: the machine is shared and noisy, so the absolute milliseconds move between runs. On a small
machine every process (load generator, router, model servers) competes for the same cores: the
router's overhead includes the CPU it takes from the model server, and in the mirrored case the
shadow model server's CPU too. That is the local platform's real situation. To show where the
time goes, the CPU time (user + system, from psutil) each process used during each turn is
divided by the client requests of that turn, warm-up included.

For the mirrored case the router's own `/metrics` gives what happened to the copies: sent to the
shadow (`modelrollout_requests_total{role="shadow"}`), failed there, and dropped
(`modelrollout_mirror_dropped_total`: queue full); each turn waits for the queue to drain, so no
copy of one turn loads the next.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import logging
import math
import os
import platform
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import psutil
from prometheus_client.parser import text_string_to_metric_families

# Importable without pytest: plain process helpers the router's integration tests use too.
from benchmarks.targets import Target
from benchmarks.targets import render as render_targets
from canary.traffic.upstream import UpstreamError, UpstreamPool
from tests.fixtures.modelserver import Process, fit_logistic, iris, spawn

MODEL = "iris"
ROLLOUT = "bench"
STABLE_VERSION, SHADOW_VERSION = "1", "2"
CASES = ("direct", "router", "router + 100% mirror")
MIRRORED = CASES[2]
READY_TIMEOUT_S = 90.0
DRAIN_TIMEOUT_S = 30.0
REQUEST_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class Load:
    concurrency: int = 8
    duration_s: float = 10.0  # measured per case, split evenly over the rounds
    warmup_s: float = 0.5  # per case and round
    rounds: int = 5

    @property
    def segment_s(self) -> float:
        return self.duration_s / self.rounds

    def describe(self) -> str:
        return (
            f"{self.concurrency} closed-loop client(s) (keep-alive, canary/traffic/upstream.py), 1 iris row per V1 request; "
            f"{self.duration_s:g} s measured per case in {self.rounds} interleaved round(s) of "
            f"{self.warmup_s:g} s warm-up (excluded) + {self.segment_s:g} s"
        )


@dataclass(frozen=True)
class Copies:
    """What the router did with the mirrored copies of one case (deltas of its /metrics)."""

    offered: int  # client requests the stable served through the router: each one offers a copy
    sent: int  # copies the shadow answered (or failed on)
    failed: int  # copies the shadow failed on (5xx, timeout, unreachable)
    dropped: int  # copies dropped because the queue was full


@dataclass
class CaseResult:
    name: str
    latencies_ms: np.ndarray  # of the successful measured requests
    failed: int
    seconds: float  # the measured window's wall time
    answered: int  # every request of the case, warm-up included (for the CPU per request)
    copies: Copies | None = None
    cpu_seconds: dict[str, float] = field(default_factory=dict)  # per process, warm-up included

    def cpu_ms_per_request(self, process: str) -> float:
        return 1000.0 * self.cpu_seconds[process] / self.answered if self.answered else math.nan

    def add(self, other: CaseResult) -> CaseResult:
        """This case's figures with another round of it added."""
        copies = self.copies
        if other.copies is not None:
            mine = self.copies or Copies(0, 0, 0, 0)
            copies = Copies(*(a + b for a, b in zip(dataclasses.astuple(mine), dataclasses.astuple(other.copies))))
        return CaseResult(
            name=self.name,
            latencies_ms=np.concatenate([self.latencies_ms, other.latencies_ms]),
            failed=self.failed + other.failed,
            seconds=self.seconds + other.seconds,
            answered=self.answered + other.answered,
            copies=copies,
            cpu_seconds={p: self.cpu_seconds.get(p, 0.0) + other.cpu_seconds.get(p, 0.0) for p in other.cpu_seconds},
        )

    @property
    def requests(self) -> int:
        return int(self.latencies_ms.size)

    def quantile(self, q: float) -> float:
        return float(np.quantile(self.latencies_ms, q)) if self.requests else math.nan

    @property
    def p50(self) -> float:
        return self.quantile(0.50)

    @property
    def p99(self) -> float:
        return self.quantile(0.99)

    @property
    def per_second(self) -> float:
        return self.requests / self.seconds if self.seconds > 0 else math.nan


@dataclass
class _Tally:
    latencies: list[float] = field(default_factory=list)
    failed: int = 0
    answered: int = 0
    last_done: float = 0.0


async def drive(name: str, base_url: str, path: str, bodies: Sequence[bytes], load: Load) -> CaseResult:
    """Run `load` against `base_url + path` and return the measured window's figures.

    The clients post through canary/traffic/upstream.py, the router's own HTTP client (about
    0.07 ms of CPU a request, against 0.9 ms for httpx): a load generator that takes a core
    would measure itself on a 2-core machine.
    """
    tally = _Tally()
    headers = {"content-type": "application/json"}
    client = UpstreamPool(
        timeout=REQUEST_TIMEOUT_S, connect_timeout=REQUEST_TIMEOUT_S,
        max_connections=load.concurrency, max_idle_per_origin=load.concurrency,
    )  # fmt: skip
    try:
        began = time.perf_counter()
        measure_from = began + load.warmup_s
        stop_at = measure_from + load.segment_s

        async def worker(index: int) -> None:
            n = index
            while (started := time.perf_counter()) < stop_at:
                body = bodies[n % len(bodies)]
                n += load.concurrency
                ok = False
                try:
                    answer = await client.post(base_url, path, body, headers)
                    ok = answer.status == 200
                except UpstreamError:
                    pass
                done = time.perf_counter()
                tally.answered += 1
                if started < measure_from:
                    continue
                tally.last_done = max(tally.last_done, done)
                if ok:
                    tally.latencies.append((done - started) * 1000.0)
                else:
                    tally.failed += 1

        await asyncio.gather(*(worker(i) for i in range(load.concurrency)))
    finally:
        await client.aclose()
    seconds = max(stop_at, tally.last_done) - measure_from
    return CaseResult(
        name=name,
        latencies_ms=np.asarray(tally.latencies),
        failed=tally.failed,
        seconds=seconds,
        answered=tally.answered,
    )


# --- the router's counters ---------------------------------------------------------------------------


def router_counters(http: httpx.Client, router_url: str) -> dict[str, float]:
    """The few router series the mirrored case reads, summed over their labels."""
    text = http.get(router_url + "/metrics").text
    out = {"stable": 0.0, "shadow": 0.0, "shadow_failed": 0.0, "dropped": 0.0, "queue": 0.0}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            role = s.labels.get("role")
            if s.name == "modelrollout_requests_total" and role in ("stable", "shadow"):
                out[role] += s.value
            elif s.name == "modelrollout_request_errors_total" and role == "shadow":
                out["shadow_failed"] += s.value
            elif s.name == "modelrollout_mirror_dropped_total":
                out["dropped"] += s.value
            elif s.name == "modelrollout_mirror_queue_depth":
                out["queue"] += s.value
    return out


def wait_drained(http: httpx.Client, router_url: str, before: dict[str, float], timeout: float) -> Copies:
    """Wait until every offered copy was sent or dropped (the queue is empty); the case's deltas."""
    deadline = time.monotonic() + timeout
    while True:
        now = router_counters(http, router_url)
        delta = {k: now[k] - before[k] for k in now}
        settled = now["queue"] == 0 and delta["shadow"] + delta["dropped"] >= delta["stable"]
        if settled or time.monotonic() >= deadline:
            if not settled:
                print(f"warning: mirror queue not drained within {timeout:g} s: {now}", file=sys.stderr)
            return Copies(
                offered=int(delta["stable"]),
                sent=int(delta["shadow"]),
                failed=int(delta["shadow_failed"]),
                dropped=int(delta["dropped"]),
            )
        time.sleep(0.1)


# --- the processes ------------------------------------------------------------------------------------


@dataclass
class Stack:
    stable: Process
    shadow: Process
    router: Process

    def stop(self) -> None:
        for proc in (self.router, self.shadow, self.stable):
            proc.stop()

    def cpu_seconds(self) -> dict[str, float]:
        """CPU time used so far (user + system) by each process, this one being the load generator."""
        pids = {"load generator": os.getpid(), "router": self.router.popen.pid}
        pids |= {"stable server": self.stable.popen.pid, "shadow server": self.shadow.popen.pid}
        return {name: sum(psutil.Process(pid).cpu_times()[:2]) for name, pid in pids.items()}


def save_model(path: Path) -> Path:
    """The iris LogisticRegression as an MLflow sklearn model directory.

    Its pip requirements are given rather than inferred: inferring them runs the model in a
    subprocess (~7 s here), and the model servers load it from this very environment anyway.
    """
    import mlflow.sklearn

    # cloudpickle, as the project's model servers are tested with; MLflow warns about it on every save.
    logging.getLogger("mlflow.sklearn").setLevel(logging.ERROR)
    mlflow.sklearn.save_model(
        fit_logistic(), str(path), serialization_format="cloudpickle", pip_requirements=["scikit-learn", "cloudpickle"]
    )
    return path


def start_stack(workdir: Path) -> Stack:
    """Start the router, save the model, start both model servers side by side; all ready.

    The router needs no model, so it starts while the model is saved: on two cores, starting
    the three processes (imports, mostly) is most of a quick run.
    """
    started: list[Process] = []
    try:
        args = ["--rollout", ROLLOUT, "--log-level", "warning"]
        started.append(router := spawn("canary.traffic.router", args, workdir, "router"))
        model_dir = save_model(workdir / "model")

        def model_server(version: str) -> Process:
            args = ["--name", MODEL, "--model-uri", str(model_dir), "--version", version]
            return spawn("controller.local.modelserver", args, workdir, f"modelserver-{version}")

        started.append(stable := model_server(STABLE_VERSION))
        started.append(shadow := model_server(SHADOW_VERSION))
        for proc, path in ((router, "/healthz"), (stable, "/v2/health/ready"), (shadow, "/v2/health/ready")):
            proc.wait_ready(path, READY_TIMEOUT_S)
    except BaseException:
        for proc in started:
            proc.stop()
        raise
    return Stack(stable=stable, shadow=shadow, router=router)


def put_routing(http: httpx.Client, stack: Stack, mirrored: bool) -> None:
    routing: dict[str, object] = {"model": MODEL, "stable": {"version": STABLE_VERSION, "url": stack.stable.url}}
    if mirrored:
        routing |= {
            "candidate": {"version": SHADOW_VERSION, "url": stack.shadow.url},
            "candidateRole": "shadow",
            "shadowPercent": 100,
        }
    response = http.put(stack.router.url + "/admin/routing", json=routing)
    if response.status_code != 200:
        raise RuntimeError(f"router refused routing {routing}: HTTP {response.status_code}: {response.text[:300]}")


def request_bodies() -> list[bytes]:
    features, _ = iris()
    return [json.dumps({"instances": [list(map(float, row))]}).encode() for row in features]


def run(loads: Sequence[Load], workdir: Path) -> tuple[list[list[CaseResult]], float]:
    """Start everything, run the three cases under each load, stop everything; the results (per
    load, in CASES order) and the setup seconds."""
    started = time.perf_counter()
    stack = start_stack(workdir)
    setup_s = time.perf_counter() - started
    bodies = request_bodies()
    predict = f"/v1/models/{MODEL}:predict"
    results: list[dict[str, CaseResult]] = [{} for _ in loads]

    def case(index: int, name: str, url: str, mirrored: bool = False) -> None:
        cpu_before = stack.cpu_seconds()
        before = router_counters(http, stack.router.url) if mirrored else {}
        result = asyncio.run(drive(name, url, predict, bodies, loads[index]))
        if mirrored:
            # The copies still queued belong to this round, and must not load the next case.
            result.copies = wait_drained(http, stack.router.url, before, DRAIN_TIMEOUT_S)
        cpu_after = stack.cpu_seconds()
        result.cpu_seconds = {p: cpu_after[p] - cpu_before[p] for p in cpu_after}
        mine = results[index]
        mine[name] = mine[name].add(result) if name in mine else result

    try:
        with httpx.Client(timeout=REQUEST_TIMEOUT_S, trust_env=False) as http:
            for index, load in enumerate(loads):
                # Interleaved rounds: load from elsewhere on the machine that comes and goes then
                # falls on every case alike instead of on whichever ran at the time.
                for _ in range(load.rounds):
                    case(index, CASES[0], stack.stable.url)
                    put_routing(http, stack, mirrored=False)
                    case(index, CASES[1], stack.router.url)
                    put_routing(http, stack, mirrored=True)
                    case(index, MIRRORED, stack.router.url, mirrored=True)
    finally:
        stack.stop()
    return [[mine[name] for name in CASES] for mine in results], setup_s


def targets(clients: int, many: list[CaseResult], one: list[CaseResult] | None) -> list[Target]:
    """Issue 15's targets for the router, from the many-client load and the one-client load."""
    direct, router, mirrored = many
    n = f"{clients} clients"
    out = []
    if one is not None:
        d1, r1, _ = one
        out += [
            Target("p50 added by the router, 1 client", "<=", 1.0, r1.p50 - d1.p50, " ms"),
            Target("p99 added by the router, 1 client", "<=", 2.0, r1.p99 - d1.p99, " ms"),
        ]
    out += [
        Target(f"throughput through the router / direct, {n}", ">=", 0.8, ratio(router.per_second, direct.per_second), "x"),
        Target(
            f"throughput with 100% mirrored / direct, {n}", ">=", 0.6, ratio(mirrored.per_second, direct.per_second), "x"
        ),
        Target(f"router CPU per client request, {n}", "<=", 1.0, router.cpu_ms_per_request("router"), " ms"),
        Target(
            f"router CPU per client request with 100% mirrored, {n}", "<=", 1.0,
            mirrored.cpu_ms_per_request("router"), " ms", "the copy's send and comparison included",
        ),  # fmt: skip
    ]
    return out


# --- the report --------------------------------------------------------------------------------------


def machine() -> str:
    """nproc, the CPU model and the RAM, as /proc reports them (Linux); less elsewhere."""
    cpu = platform.processor() or platform.machine()
    ram = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                ram = f", {int(line.split()[1]) / 1024 / 1024:.1f} GiB RAM"
                break
    except OSError:
        pass
    return f"{os.cpu_count()} CPUs ({cpu}){ram}, Python {platform.python_version()}"


def busy(load_before: float) -> str:
    """The 1-minute load average before and after a run: other work on the machine shows up here."""
    return f"load average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after"


def ratio(a: float, b: float) -> float:
    return a / b if b > 0 and math.isfinite(a) and math.isfinite(b) else math.nan


def table_rule(head: str) -> str:
    """The markdown rule under a table head, cell for cell."""
    return "|" + "|".join("-" * len(cell) for cell in head.split("|")[1:-1]) + "|"


PROCESSES = ("load generator", "router", "stable server", "shadow server")


HEADER = (
    "Router-overhead benchmark (python -m benchmarks.router_overhead)\n"
    "model: sklearn LogisticRegression (iris) served by KServe model servers; router defaults "
    "(4 mirror workers, queue 1000); everything on 127.0.0.1"
)


def render(load: Load, results: list[CaseResult]) -> str:
    direct = results[0]
    w = max(len(f"{r.name}/direct") for r in results)
    head = f"| {'case':<{w}} | {'p50 ms':>7} | {'p99 ms':>7} | {'req/s':>7} | {'requests':>8} | {'failed':>6} |"
    lines = [f"load: {load.describe()}", "", head, table_rule(head)]
    for r in results:
        lines.append(
            f"| {r.name:<{w}} | {r.p50:7.2f} | {r.p99:7.2f} | {r.per_second:7.1f} | {r.requests:8d} | {r.failed:6d} |"
        )
    lines += ["", "ratios against direct (same run):"]
    ratio_head = f"| {'case':<{w}} | {'p50':>6} | {'p99':>6} | {'req/s':>6} | {'p50 added ms':>12} |"
    lines += [ratio_head, table_rule(ratio_head)]
    for r in results[1:]:
        lines.append(
            f"| {r.name + '/direct':<{w}} | {ratio(r.p50, direct.p50):6.2f} | {ratio(r.p99, direct.p99):6.2f} | "
            f"{ratio(r.per_second, direct.per_second):6.2f} | {r.p50 - direct.p50:12.2f} |"
        )
    for r in results:
        if r.copies is not None:
            c = r.copies
            lines.append(
                f"mirror ({r.name}, warm-up included): {c.offered} copies offered, {c.sent} sent to the shadow "
                f"({c.failed} failed there), {c.dropped} dropped (modelrollout_mirror_dropped_total)"
            )
    lines += ["", "CPU ms per client request, by process (user + system, warm-up included):"]
    cpu_head = f"| {'case':<{w}} | " + " | ".join(f"{p:>14}" for p in PROCESSES) + f" | {'total':>6} |"
    lines += [cpu_head, table_rule(cpu_head)]
    for r in results:
        per = [r.cpu_ms_per_request(p) for p in PROCESSES]
        lines.append(f"| {r.name:<{w}} | " + " | ".join(f"{v:14.2f}" for v in per) + f" | {sum(per):6.2f} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.router_overhead", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one round, 2 s per case after 0.5 s warm-up, for smoke tests")
    parser.add_argument("--concurrency", type=int, default=Load.concurrency, help="closed-loop clients (default 8)")
    parser.add_argument("--duration", type=float, help="measured seconds per case, all rounds (default 10; quick 2)")
    parser.add_argument("--warmup", type=float, help="warm-up seconds per case and round (default 0.5)")
    parser.add_argument("--rounds", type=int, help="interleaved rounds of the three cases (default 5; quick 1)")
    args = parser.parse_args(argv)
    duration = args.duration if args.duration is not None else (2.0 if args.quick else Load.duration_s)
    warmup = args.warmup if args.warmup is not None else Load.warmup_s
    rounds = args.rounds if args.rounds is not None else (1 if args.quick else Load.rounds)
    if args.concurrency < 1 or rounds < 1:
        parser.error("--concurrency and --rounds must be at least 1")
    if not duration > 0 or not warmup >= 0:
        parser.error("--duration must be positive and --warmup 0 or more")
    loads = [Load(concurrency=args.concurrency, duration_s=duration, warmup_s=warmup, rounds=rounds)]
    if args.concurrency > 1:  # the latency a client sees is stated for one client alone
        loads.append(dataclasses.replace(loads[0], concurrency=1))
    started, load_before = time.perf_counter(), os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="bench-router-") as workdir:
        results, setup_s = run(loads, Path(workdir))
    sections = [HEADER, *(render(load, r) for load, r in zip(loads, results, strict=True))]
    one = results[1] if len(results) > 1 else None
    sections.append(render_targets(targets(args.concurrency, results[0], one)))
    sections.append(f"machine: {machine()}; {busy(load_before)}; setup {setup_s:.1f} s, took {time.perf_counter() - started:.0f} s")
    print("\n\n".join(sections))
    return 0


if __name__ == "__main__":
    sys.exit(main())
