"""Load and soak: the local router and the KServe shadow comparator at a sustained request rate,
with mirroring on, against a fast shadow and a deliberately slow one at the same time.

Everything is real and on 127.0.0.1: KServe model servers (the stable v1 and a fast shadow v2,
the same iris model), the router as its own process (`python -m canary.traffic.router`, as
the local platform starts it), the comparator as its own process (`modelrollout shadow-server`),
httpx clients. The one stand-in is the slow shadow: a small ASGI app in a thread of this
process that answers only after SLOW_SHADOW_S, longer than the shadow timeout.

The fast and the slow shadow are measured side by side in the same window, so load from the
rest of the machine falls on both alike:
- router: two router processes in front of the same stable, one mirroring 100% to the fast
  shadow, the other 100% to the slow one; requests alternate between them;
- comparator: one comparator shadowing two InferenceServices, one per shadow (each rollout has
  its own mirror queue); the logger's CloudEvent pairs alternate between them.

The load is paced at RATE_PER_S in total (a request is due at start + i / rate; under a loaded
machine the workers fall behind and the rate achieved is printed), from CONCURRENCY workers on
one asyncio loop, for a fixed time: SHORT_S in `make test`, $SOAK_SECONDS (default 600) for the
`soak` variant (`make soak`). After its answer, a client posts a label to /feedback (see
`label_plan`): for its own request (scored), for one LATE_BY requests earlier (evicted from the
bounded feedback memory: accepted, counted late) or for one FORGOTTEN_BY earlier (gone even from
the bounded record of evicted requests: 404). The feedback memory fills and turns over in the
first seconds, and its bounds are seen to hold by what becomes of the labels
(`possible_outcomes`).

Asserted: no client request fails (every prediction 200 with the stable's answer, every event
202 accepted, every label scored, late or forgotten as the memory's bounds allow); mirrored copies are never lost silently (every copy
offered is sent, dropped and counted in /metrics, or still queued) and the queue never exceeds
its size; a slow shadow does not slow clients (median and p99 with the slow shadow within a
generous factor of the fast one's); the processes' memory is flat (see MAX_RSS_GROWTH).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import math
import os
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from fastapi import FastAPI
from prometheus_client.parser import text_string_to_metric_families

from benchmarks.router_overhead import request_bodies, router_counters, save_model
from canary.traffic.comparator import REQUEST_EVENT, RESPONSE_EVENT
from tests.fixtures.asgi import ServedApp
from tests.fixtures.modelserver import Process, iris, spawn, start_model_servers

MODEL = "iris"
PREDICT = f"/v1/models/{MODEL}:predict"
STABLE_VERSION, FAST_VERSION, SLOW_VERSION = "1", "2", "3"
FAST, SLOW = "fast", "slow"

SHORT_S = 20.0
SOAK_DEFAULT_S = 600.0
# Well below what the mirrored router sustains on two idle cores (~120 req/s closed loop in
# benchmarks/router_overhead.py): the point is a steady rate, not saturation, on a shared machine.
RATE_PER_S = 30.0
CONCURRENCY = 8
REQUEST_TIMEOUT_S = 10.0

# The same bounds for both shadows, small so that they are reached in the first seconds of the
# short run and the second half shows whether anything grows past them.
MIRROR_WORKERS = 4
MIRROR_QUEUE = 50
SHADOW_TIMEOUT_S = 1.0
SLOW_SHADOW_S = 3.0  # > SHADOW_TIMEOUT_S: every copy to it times out
FEEDBACK_ENTRIES = 40  # requests remembered with their predictions, and as many tombstones
# Labels for a lane's request this many requests back: on a steady machine the first finds it
# evicted but still a tombstone, the second gone even as a tombstone (see possible_outcomes).
LATE_BY = 61
FORGOTTEN_BY = 122
LOST_EVERY = 50  # the comparator test loses every 50th response event, as a logger may

# Memory: the growth of each process's RSS over the second half of the run (the largest sample
# of the second half minus the largest of the first). Every structure that holds requests is
# bounded (mirror queue, feedback memory and its tombstones, the comparator's pending halves,
# metric series per version and class) and full within the first ~6 s, so afterwards the RSS
# (60-85 MiB) only wobbles with the allocator: measured +0.05 to +0.25 MiB in the second half,
# short runs and a 2-minute soak on a loaded machine. 4 MiB leaves room for that while catching
# what keeps ~25 KiB per request in the short run (~150 requests per lane in its second half: a
# body, a connection, a task) and ~1 KiB per request in a 10-minute soak. The small per-request
# structures themselves (~0.7 KiB a feedback entry or a queued copy, by tracemalloc) are below
# what a short run's RSS can show: their bounds are checked directly instead, by the queue depth
# and by what becomes of late labels.
MAX_RSS_GROWTH = 4 * 1024 * 1024
# A client of a router whose shadow blocked it would wait at least SHADOW_TIMEOUT_S per request.
LATENCY_FACTOR, LATENCY_SLACK_S = 3.0, 0.1
RSS_EVERY_S, METRICS_EVERY_S = 0.25, 1.0
DRAIN_TIMEOUT_S = 60.0


def load_seconds(variant: str) -> float:
    """How long the variant's load runs. Read when the soak test runs, not when it is collected:
    a bad $SOAK_SECONDS fails that test alone, never a `make test` that deselects it."""
    if variant == "short":
        return SHORT_S
    value = os.environ.get("SOAK_SECONDS", "")
    try:
        seconds = float(value) if value else SOAK_DEFAULT_S
    except ValueError:
        seconds = math.nan
    if not seconds > 0 or math.isinf(seconds):
        pytest.fail(f"SOAK_SECONDS must be a positive number of seconds, got {value!r}", pytrace=False)
    return seconds


VARIANTS = [pytest.param("short"), pytest.param("soak", marks=pytest.mark.soak)]


# --- what the load saw -------------------------------------------------------------------------------


@dataclass
class Lane:
    """One stream of the load (the fast or the slow shadow's side) and what its clients saw."""

    name: str
    latencies_s: list[float] = field(default_factory=list)  # timed calls that succeeded
    calls: int = 0  # every call, labels included
    failures: list[str] = field(default_factory=list)
    labels: dict[str, int] = field(default_factory=lambda: dict.fromkeys(OUTCOMES, 0))  # by outcome
    # Requests that reach the feedback memory (router: every request; comparator: every pair),
    # counted as they are sent; the count when request n was sent, and when it was answered.
    issued: int = 0
    issued_at: dict[int, int] = field(default_factory=dict)
    answered_at: dict[int, int] = field(default_factory=dict)
    sent: int = 0  # requests (router) or complete event pairs (comparator)
    lost: int = 0  # response events left out on purpose (comparator)
    # Labels are posted beside the requests, not in their turn: a client waiting on its label
    # would halve the request rate a busy machine can reach.
    labelling: set[asyncio.Task[None]] = field(default_factory=set)

    def fail(self, what: str) -> None:
        self.failures.append(what)

    def issuing(self, n: int) -> None:
        self.issued += 1
        self.issued_at[n] = self.issued

    def answered(self, n: int) -> None:
        self.answered_at[n] = self.issued

    def label_later(self, n: int, post: Callable[[int], Awaitable[None]]) -> None:
        """Start posting the label request n's client owes (label_plan), if its request was answered."""
        target = label_plan(n)
        if target in self.answered_at:
            task = asyncio.create_task(post(target))
            self.labelling.add(task)
            task.add_done_callback(self.labelling.discard)

    def summary(self) -> str:
        ms = np.quantile(self.latencies_s, [0.5, 0.99]) * 1000 if self.latencies_s else (np.nan, np.nan)
        return (
            f"{self.name}: {self.sent} sent, {self.calls} calls, {len(self.failures)} failed, "
            f"p50 {ms[0]:.1f} ms, p99 {ms[1]:.1f} ms, labels {self.labels}"
        )


@dataclass
class RssTrace:
    """VmRSS of one process over the run: (seconds since the load began, bytes)."""

    pid: int
    samples: list[tuple[float, int]] = field(default_factory=list)

    def sample(self, at: float) -> None:
        self.samples.append((at, rss_bytes(self.pid)))

    def growth_in_second_half(self, duration: float) -> int:
        first = [b for t, b in self.samples if t < duration / 2]
        second = [b for t, b in self.samples if t >= duration / 2]
        assert first and second, f"too few RSS samples: {len(self.samples)}"
        return max(second) - max(first)

    def summary(self, duration: float) -> str:
        mib = [b / 2**20 for _, b in self.samples]
        growth = self.growth_in_second_half(duration) / 2**20
        return f"RSS {mib[0]:.1f} -> {mib[-1]:.1f} MiB (max {max(mib):.1f}), second-half growth {growth:+.2f} MiB"


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for pid {pid}")


def metric_total(text: str, name: str, **labels: str) -> float:
    """The sum of a metric's samples whose labels include `labels`."""
    return sum(
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name and labels.items() <= s.labels.items()
    )


# --- the load --------------------------------------------------------------------------------------


OneCall = Callable[[httpx.AsyncClient, Lane, int], Awaitable[None]]


@dataclass
class Run:
    """What `drive` returns: how long the load ran, and what was sampled meanwhile."""

    planned: float  # the load's duration; RSS is sampled over it
    seconds: float  # until the last request was answered
    ended: float  # time.monotonic() then
    requests: int
    rss: dict[str, RssTrace]
    max_depth: dict[str, float]


async def drive(
    lanes: list[Lane],
    call: OneCall,
    seconds: float,
    pids: dict[str, int],
    depths: Callable[[httpx.AsyncClient], Awaitable[dict[str, float]]],
) -> Run:
    """Pace `call` at RATE_PER_S over the lanes in turn for `seconds`; sample RSS and queue depths.

    Request i is due at start + i / RATE_PER_S and goes to lane i % len(lanes) as that lane's
    request i // len(lanes). No request starts after `seconds`; workers that fall behind (a busy
    machine) send at once, so the rate achieved is then lower, never burstier than CONCURRENCY.
    """
    traces = {name: RssTrace(pid) for name, pid in pids.items()}
    max_depth: dict[str, float] = {}
    indices = itertools.count()
    issued = 0
    limits = httpx.Limits(max_connections=CONCURRENCY * 2, max_keepalive_connections=CONCURRENCY * 2)
    async with httpx.AsyncClient(timeout=REQUEST_TIMEOUT_S, limits=limits, trust_env=False) as client:
        loop = asyncio.get_running_loop()
        began = loop.time()
        stop_at = began + seconds

        async def worker() -> None:
            nonlocal issued
            for i in indices:
                due = began + i / RATE_PER_S
                if due >= stop_at or loop.time() >= stop_at:
                    return
                if (wait := due - loop.time()) > 0:
                    await asyncio.sleep(wait)
                issued += 1
                lane = lanes[i % len(lanes)]
                await call(client, lane, i // len(lanes))

        # Two samplers, so that a slow /metrics answer on a busy machine never thins the RSS trace.
        async def sample_rss() -> None:
            while (now := loop.time()) < stop_at:
                for trace in traces.values():
                    trace.sample(now - began)
                await asyncio.sleep(RSS_EVERY_S)

        async def sample_depths() -> None:
            while loop.time() < stop_at:
                for name, depth in (await depths(client)).items():
                    max_depth[name] = max(max_depth.get(name, 0.0), depth)
                await asyncio.sleep(METRICS_EVERY_S)

        await asyncio.gather(sample_rss(), sample_depths(), *(worker() for _ in range(CONCURRENCY)))
        await asyncio.gather(*(task for lane in lanes for task in list(lane.labelling)))
        elapsed = loop.time() - began
    return Run(planned=seconds, seconds=elapsed, ended=time.monotonic(), requests=issued, rss=traces, max_depth=max_depth)


SCORED, LATE, FORGOTTEN = "scored", "late", "forgotten"
OUTCOMES = (SCORED, LATE, FORGOTTEN)


def label_plan(n: int) -> int | None:
    """Whose label the client of a lane's request n posts after its answer: its own (n % 4 == 0),
    or that of a request LATE_BY or FORGOTTEN_BY back. Every request is labelled at most once:
    the targets are 0, 1 and 3 mod 4."""
    assert (LATE_BY % 4, FORGOTTEN_BY % 4) == (1, 2)
    if n % 4 == 0:
        return n
    if n % 4 == 2 and n >= LATE_BY:
        return n - LATE_BY
    if n % 4 == 1 and n >= FORGOTTEN_BY:
        return n - FORGOTTEN_BY
    return None


def possible_outcomes(lane: Lane, j: int, sent_with: int) -> set[str]:
    """What may become of the label of the lane's request j posted now, from what its clients know.

    The feedback memory holds the FEEDBACK_ENTRIES requests that reached it last, and as many
    tombstones of requests it evicted unlabelled; it is bounded in requests, not in time, so
    the answer depends on how many reached it after j before the label did. At least `least`:
    those sent after j was answered, but for CONCURRENCY still on their way when the label was
    sent (`sent_with`: lane.issued then); at most `most`: those sent after j until the label's
    answer came (lane.issued now), and CONCURRENCY sent before j that may have overtaken it.
    On a steady machine a label sent at once can only be scored, LATE_BY back only late,
    FORGOTTEN_BY back only forgotten; a stalled client widens the range, never past the bounds:
    a label scored for a request surely evicted, or counted late past the tombstones, is a
    memory that is not bounded.
    """
    entries = FEEDBACK_ENTRIES
    least = sent_with - lane.answered_at[j] - CONCURRENCY
    most = lane.issued - lane.issued_at[j] + CONCURRENCY
    # Of `least - entries` requests evicted after j, only those labelled at once (every 4th) can
    # have left no tombstone: the rest pushed j's tombstone out once they were `entries` many.
    if 3 * (least - entries) / 4 - 1 >= entries:
        return {FORGOTTEN}
    possible = {SCORED} if least < entries else set()
    if most >= entries:
        possible.add(LATE)
    if most >= 2 * entries:
        possible.add(FORGOTTEN)
    return possible


async def post_label(client: httpx.AsyncClient, lane: Lane, url: str, j: int, label: int) -> None:
    """Post the label of the lane's request j: scored, counted late or unknown (404) as it may be."""
    lane.calls += 1
    request_id = f"{lane.name}-{j}"
    sent_with = lane.issued
    try:
        answer = await client.post(url + "/feedback", json={"requestId": request_id, "label": label})
    except httpx.HTTPError as exc:
        lane.fail(f"{lane.name} label for {request_id}: {type(exc).__name__}: {exc}")
        return
    possible = possible_outcomes(lane, j, sent_with)
    what = f"{lane.name} label for {request_id} (may be {'/'.join(sorted(possible))})"
    try:
        body = answer.json()
    except ValueError:
        body = None
    body = body if isinstance(body, dict) else {}
    outcome = None
    if answer.status_code == 404 and repr(request_id) in str(body.get("error")):
        outcome = FORGOTTEN
    elif answer.status_code == 200 and [x.get("reason") for x in body.get("late", [])] == ["evicted"]:
        outcome = LATE
    elif answer.status_code == 200 and [x.get("requestId") for x in body.get("scored", [])] == [request_id]:
        outcome = SCORED
    if outcome in possible:
        lane.labels[outcome] += 1
    else:
        lane.fail(f"{what}: HTTP {answer.status_code}: {answer.text[:300]}")


def finish(run: Run, lanes: list[Lane], processes: dict[str, Process]) -> None:
    """The checks every run shares: no client failure, enough samples, memory flat."""
    for lane in lanes:
        print(lane.summary())
    for name, trace in run.rss.items():
        print(f"{name}: {trace.summary(run.planned)}")
    print(f"{run.requests} requests in {run.seconds:.1f} s ({run.requests / run.seconds:.1f}/s); max queue depth {run.max_depth}")
    for lane in lanes:
        assert not lane.failures, f"{len(lane.failures)} failed client calls ({lane.name}), first: {lane.failures[:3]}"
        # A p99 needs a hundred samples to mean anything, and the forgotten labels FORGOTTEN_BY
        # requests: fewer is a machine too busy to measure (under half the short run's planned rate).
        least = FORGOTTEN_BY + 20
        assert lane.sent >= least, f"{lane.name}: only {lane.sent} requests in {run.seconds:.0f} s, {least} needed"
        assert all(lane.labels.values()), f"{lane.name}: labels {lane.labels}, each outcome expected"
    for name, trace in run.rss.items():
        growth = trace.growth_in_second_half(run.planned)
        assert growth < MAX_RSS_GROWTH, (
            f"{name} RSS grew {growth / 2**20:.2f} MiB in the second half (bound {MAX_RSS_GROWTH / 2**20:g} MiB): "
            f"{trace.summary(run.planned)}\n{processes[name].log_tail()}"
        )
    for name, depth in run.max_depth.items():
        assert depth <= MIRROR_QUEUE, f"{name}: mirror queue depth {depth} over its size {MIRROR_QUEUE}"


def assert_client_latency_not_blocked(fast: Lane, slow: Lane) -> None:
    """The slow shadow's clients are served like the fast one's: median and p99 within
    LATENCY_FACTOR x + LATENCY_SLACK_S. Clients that waited for the shadow would wait at least the shadow
    timeout each; the median catches that even when a busy machine stretches the tail."""
    for q in (0.5, 0.99):
        fast_s, slow_s = (float(np.quantile(lane.latencies_s, q)) for lane in (fast, slow))
        bound = LATENCY_FACTOR * fast_s + LATENCY_SLACK_S
        assert slow_s <= bound, (
            f"q{q:g} latency with the slow shadow {slow_s * 1000:.1f} ms over {bound * 1000:.1f} ms "
            f"({LATENCY_FACTOR:g} x the fast shadow's {fast_s * 1000:.1f} ms + {LATENCY_SLACK_S * 1000:g} ms)"
        )


def wait_for(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"{what} not within {timeout:g} s"
        time.sleep(0.1)


# --- the parts -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Servers:
    stable: Process
    fast: Process  # the same model as the stable: a shadow that agrees on everything
    slow_url: str
    bodies: list[bytes]  # V1 request bodies, one iris row each
    answers: list[bytes]  # the stable's real answer to each body
    predictions: list[list[Any]]
    truth: list[int]


def slow_shadow_app(closing: threading.Event) -> FastAPI:
    """A shadow that answers after SLOW_SHADOW_S, or at once when `closing` (so that stopping
    it need not wait out the copies it holds)."""
    app = FastAPI()

    @app.get("/healthz")
    async def healthz() -> dict[str, bool]:
        return {"ok": True}

    @app.post("/v1/models/{model}:predict")
    async def predict(model: str) -> dict[str, list[int]]:
        until = time.monotonic() + SLOW_SHADOW_S
        while time.monotonic() < until and not closing.is_set():
            await asyncio.sleep(0.05)
        return {"predictions": [0]}

    return app


def stop_all(procs: list[Process]) -> None:
    """Stop processes side by side: all are sent SIGTERM before any is waited for."""
    for proc in procs:
        if proc.popen.poll() is None:
            proc.popen.terminate()
    for proc in procs:
        proc.stop()
        assert proc.popen.returncode is not None


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    base = tmp_path_factory.mktemp("load")
    model = save_model(base / "model")
    procs = start_model_servers([(MODEL, model, STABLE_VERSION), (MODEL, model, FAST_VERSION)], base)
    try:
        bodies = request_bodies()
        headers = {"content-type": "application/json"}
        with httpx.Client(timeout=REQUEST_TIMEOUT_S, trust_env=False) as http:
            answers = [http.post(procs[0].url + PREDICT, content=b, headers=headers).content for b in bodies]
        _, labels = iris()
        closing = threading.Event()
        with ServedApp(slow_shadow_app(closing)) as slow:
            yield Servers(
                stable=procs[0],
                fast=procs[1],
                slow_url=slow.url,
                bodies=bodies,
                answers=answers,
                predictions=[json.loads(a)["predictions"] for a in answers],
                truth=[int(y) for y in labels],
            )
            closing.set()
    finally:
        stop_all(procs)


Start = Callable[[dict[str, tuple[str, list[str]]]], dict[str, Process]]


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Start]:
    """Spawn processes of this repository side by side, {name: (module, args)}, each on a free
    port, and wait until all answer /healthz; every one is stopped when the test ends."""
    started: list[Process] = []

    def spawn_ready(specs: dict[str, tuple[str, list[str]]]) -> dict[str, Process]:
        procs = {name: spawn(module, args, tmp_path, name) for name, (module, args) in specs.items()}
        started.extend(procs.values())
        for proc in procs.values():
            proc.wait_ready("/healthz")
        return procs

    yield spawn_ready
    stop_all(started)


BOUNDS = [
    "--mirror-workers", str(MIRROR_WORKERS), "--mirror-queue-size", str(MIRROR_QUEUE),
    "--shadow-timeout", str(SHADOW_TIMEOUT_S), "--feedback-max-entries", str(FEEDBACK_ENTRIES),
]  # fmt: skip


# --- the router ------------------------------------------------------------------------------------


def router_routing(stable: str, shadow: tuple[str, str] | None) -> dict[str, Any]:
    routing: dict[str, Any] = {"model": MODEL, "stable": {"version": STABLE_VERSION, "url": stable}}
    if shadow is not None:
        version, url = shadow
        routing |= {"candidate": {"version": version, "url": url}, "candidateRole": "shadow", "shadowPercent": 100}
    return routing


@pytest.mark.parametrize("variant", VARIANTS)
def test_router_mirroring_under_sustained_load(variant: str, servers: Servers, start: Start) -> None:
    seconds = load_seconds(variant)
    module = "canary.traffic.router"
    routers = start({name: (module, ["--rollout", f"load-{name}", "--log-level", "warning", *BOUNDS]) for name in (FAST, SLOW)})
    shadows = {FAST: (FAST_VERSION, servers.fast.url), SLOW: (SLOW_VERSION, servers.slow_url)}
    with httpx.Client(timeout=REQUEST_TIMEOUT_S, trust_env=False) as http:
        for name, router in routers.items():
            answer = http.put(router.url + "/admin/routing", json=router_routing(servers.stable.url, shadows[name]))
            assert answer.status_code == 200, answer.text
    lanes = [Lane(FAST), Lane(SLOW)]
    urls = {name: router.url for name, router in routers.items()}

    async def call(client: httpx.AsyncClient, lane: Lane, n: int) -> None:
        url, row = urls[lane.name], n % len(servers.bodies)
        request_id = f"{lane.name}-{n}"
        lane.calls += 1
        lane.sent += 1
        headers = {"content-type": "application/json", "x-request-id": request_id}
        lane.issuing(n)
        started = time.perf_counter()
        try:
            answer = await client.post(url + PREDICT, content=servers.bodies[row], headers=headers)
        except httpx.HTTPError as exc:
            lane.fail(f"{request_id}: {type(exc).__name__}: {exc}")
            return
        elapsed = time.perf_counter() - started
        if answer.status_code != 200 or answer.headers.get("x-model-role") != "stable":
            lane.fail(f"{request_id}: HTTP {answer.status_code} ({answer.headers.get('x-model-role')}): {answer.text[:200]}")
            return
        if answer.json()["predictions"] != servers.predictions[row]:
            lane.fail(f"{request_id}: {answer.text[:200]}, the stable answers {servers.predictions[row]}")
            return
        lane.latencies_s.append(elapsed)
        lane.answered(n)
        lane.label_later(n, lambda j: post_label(client, lane, url, j, servers.truth[j % len(servers.bodies)]))

    async def depths(client: httpx.AsyncClient) -> dict[str, float]:
        out = {}
        for name, url in urls.items():
            text = (await client.get(url + "/metrics")).text
            out[name] = metric_total(text, "modelrollout_mirror_queue_depth")
        return out

    run = asyncio.run(drive(lanes, call, seconds, {n: r.popen.pid for n, r in routers.items()}, depths))
    finish(run, lanes, routers)
    fast, slow = lanes
    assert_client_latency_not_blocked(fast, slow)

    with httpx.Client(timeout=REQUEST_TIMEOUT_S, trust_env=False) as http:
        # Slow: what is still queued or in flight is mirrored nowhere once the shadow leaves the
        # routing: queued copies are dropped (counted), in-flight ones end at the shadow timeout.
        answer = http.put(routers[SLOW].url + "/admin/routing", json=router_routing(servers.stable.url, None))
        assert answer.status_code == 200, answer.text
        counters: dict[str, dict[str, float]] = {}
        for name, router in routers.items():

            def drained(url: str = router.url, name: str = name) -> bool:
                counters[name] = c = router_counters(http, url)
                return c["queue"] == 0 and c["shadow"] + c["dropped"] >= c["stable"]

            wait_for(drained, DRAIN_TIMEOUT_S, f"{name} router's mirror queue drained")
        texts = {name: http.get(router.url + "/metrics").text for name, router in routers.items()}
    for name, c in counters.items():
        print(f"{name} router copies: {c}")
    for lane in lanes:
        c = counters[lane.name]
        # Every request reached the router's stable (nothing lost on the way), each offered
        # exactly one copy: sent to the shadow or dropped and counted, never lost silently.
        assert c["stable"] == lane.sent, (lane.name, c, lane.sent)
        assert c["shadow"] + c["dropped"] == c["stable"], (lane.name, c)
        stable_feedback = metric_total(texts[lane.name], "modelrollout_feedback_total", role="stable")
        late = metric_total(texts[lane.name], "modelrollout_feedback_late_labels_total", role="stable", reason="evicted")
        assert (stable_feedback, late) == (lane.labels[SCORED], lane.labels[LATE]), lane.name

    f, s = counters[FAST], counters[SLOW]
    # The fast shadow answers what it gets, and agrees with the stable on every copy it answered
    # (the same model); only copies it failed on (a timeout on a stalled machine) disagree.
    assert f["shadow"] > 0
    comparisons = metric_total(texts[FAST], "modelrollout_shadow_comparisons_total")
    agreements = metric_total(texts[FAST], "modelrollout_shadow_agreements_total")
    assert comparisons == f["shadow"] and agreements + f["shadow_failed"] == comparisons, (comparisons, agreements, f)
    # The slow shadow: every copy sent timed out, and no more were sent than the workers could
    # in that time (each holds a copy for the shadow timeout): the rest were dropped, counted.
    assert s["shadow_failed"] == s["shadow"]
    most = MIRROR_WORKERS * (run.seconds / SHADOW_TIMEOUT_S + 3)
    assert s["shadow"] <= most, f"{s['shadow']} copies sent to a shadow that times out, at most {most:.0f} expected"
    assert s["dropped"] >= s["stable"] - most > 0


# --- the comparator ------------------------------------------------------------------------------


def shadow_target(name: str, version: str, url: str) -> dict[str, Any]:
    return {
        "rollout": f"load-{name}", "namespace": "ml", "inferenceService": f"iris-{name}", "model": MODEL,
        "stableVersion": STABLE_VERSION, "candidateVersion": version, "shadowUrl": url, "shadowModel": MODEL,
    }  # fmt: skip


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@pytest.mark.parametrize("variant", VARIANTS)
def test_comparator_under_sustained_logger_events(variant: str, servers: Servers, start: Start) -> None:
    seconds = load_seconds(variant)
    comparator = start({"comparator": ("controller.cli", ["shadow-server", *BOUNDS])})["comparator"]
    targets = {FAST: shadow_target(FAST, FAST_VERSION, servers.fast.url), SLOW: shadow_target(SLOW, SLOW_VERSION, servers.slow_url)}
    with httpx.Client(timeout=REQUEST_TIMEOUT_S, trust_env=False) as http:
        for target in targets.values():
            answer = http.put(comparator.url + "/admin/shadows", json=target)
            assert answer.status_code == 200, answer.text
    lanes = [Lane(FAST), Lane(SLOW)]
    url = comparator.url

    async def event(client: httpx.AsyncClient, lane: Lane, event_id: str, kind: str, body: bytes, at: str) -> bool:
        """Post one half as KServe's logger does (binary CloudEvent); True when it was accepted."""
        headers = {
            "ce-id": event_id, "ce-type": kind, "ce-specversion": "1.0", "ce-source": "http://127.0.0.1/logger",
            "ce-time": at, "ce-namespace": "ml", "ce-inferenceservicename": f"iris-{lane.name}",
            "content-type": "application/json",
        }  # fmt: skip
        lane.calls += 1
        started = time.perf_counter()
        try:
            answer = await client.post(url + "/", content=body, headers=headers)
        except httpx.HTTPError as exc:
            lane.fail(f"{event_id} {kind}: {type(exc).__name__}: {exc}")
            return False
        elapsed = time.perf_counter() - started
        if answer.status_code != 202 or answer.json().get("accepted") is not True:
            lane.fail(f"{event_id} {kind}: HTTP {answer.status_code}: {answer.text[:200]}")
            return False
        lane.latencies_s.append(elapsed)
        return True

    def loses_response(n: int) -> bool:
        return n % LOST_EVERY == LOST_EVERY - 1

    async def call(client: httpx.AsyncClient, lane: Lane, n: int) -> None:
        row, event_id = n % len(servers.bodies), f"{lane.name}-{n}"
        asked = now_iso()
        if not await event(client, lane, event_id, REQUEST_EVENT, servers.bodies[row], asked):
            return
        if loses_response(n):
            lane.lost += 1
            return
        # The response half pairs the request: that is when the feedback memory learns of it.
        lane.issuing(n)
        if not await event(client, lane, event_id, RESPONSE_EVENT, servers.answers[row], now_iso()):
            return
        lane.sent += 1
        lane.answered(n)
        # A request whose response half was lost was never paired: nobody labels it.
        lane.label_later(n, lambda j: post_label(client, lane, url, j, servers.truth[j % len(servers.bodies)]))

    async def depths(client: httpx.AsyncClient) -> dict[str, float]:
        text = (await client.get(url + "/metrics")).text
        return {name: metric_total(text, "modelrollout_mirror_queue_depth", rollout=f"load-{name}") for name in targets}

    run = asyncio.run(drive(lanes, call, seconds, {"comparator": comparator.popen.pid}, depths))
    finish(run, lanes, {"comparator": comparator})
    fast, slow = lanes
    # The logger's posts are the comparator's clients: a slow shadow must not slow its answers.
    assert_client_latency_not_blocked(fast, slow)

    with httpx.Client(timeout=REQUEST_TIMEOUT_S, trust_env=False) as http:

        def counters(name: str) -> dict[str, float]:
            text = http.get(url + "/metrics").text
            labels = {"rollout": f"load-{name}"}
            return {
                "paired": metric_total(text, "modelrollout_requests_total", role="stable", **labels),
                # halves whose response never came, past the pending TTL: counted as the stable's failures
                "unanswered": metric_total(text, "modelrollout_request_errors_total", role="stable", **labels),
                "sent": metric_total(text, "modelrollout_requests_total", role="shadow", **labels),
                "failed": metric_total(text, "modelrollout_request_errors_total", role="shadow", **labels),
                "dropped": metric_total(text, "modelrollout_mirror_dropped_total", **labels),
                "queue": metric_total(text, "modelrollout_mirror_queue_depth", **labels),
                "comparisons": metric_total(text, "modelrollout_shadow_comparisons_total", **labels),
                "agreements": metric_total(text, "modelrollout_shadow_agreements_total", **labels),
                "scored": metric_total(text, "modelrollout_feedback_total", role="stable", **labels),
                "late": metric_total(text, "modelrollout_feedback_late_labels_total", role="stable", reason="evicted", **labels),
            }

        # The slow shadow's counters at once: its workers go on sending queued copies.
        s = counters(SLOW)
        read_at = time.monotonic()

        def fast_drained() -> bool:
            c = counters(FAST)
            return c["queue"] == 0 and c["sent"] + c["dropped"] >= c["paired"]

        wait_for(fast_drained, DRAIN_TIMEOUT_S, "the fast shadow's mirror queue drained")
        f = counters(FAST)
        pending = http.get(url + "/healthz").json()["pending"]
    print(f"comparator copies: fast {f}\n  slow {s}\n  pending halves {pending}")
    for lane, c in ((fast, f), (slow, s)):
        # Every pair the logger completed was paired; a lost half waits, bounded, and once past
        # the 30 s TTL (only in the soak) counts as a request the stable failed.
        assert c["paired"] - c["unanswered"] == lane.sent, (lane.name, c, lane.sent)
        assert c["unanswered"] <= lane.lost and (c["unanswered"] == 0 or variant == "soak"), (lane.name, c)
        assert (c["scored"], c["late"]) == (lane.labels[SCORED], lane.labels[LATE]), (lane.name, c)
    # Halves whose other half never came wait, bounded by count and a 30 s TTL; past it they are
    # dropped and counted with the copies (under the rollout whose event found them expired).
    lost = fast.lost + slow.lost
    assert 0 < pending <= lost
    expired = lost - pending
    # Every copy is sent, dropped (counted) or still queued; the slow shadow's workers may hold
    # one each in flight. Exact in the short run, which ends before any half expires.
    assert f["paired"] <= f["sent"] + f["dropped"] <= f["paired"] + expired and f["sent"] > 0, f
    accounted = s["sent"] + s["dropped"] + s["queue"]
    assert s["paired"] - MIRROR_WORKERS <= accounted <= s["paired"] + expired, s
    # The fast shadow (the same model) agrees on every copy it answered.
    assert f["agreements"] + f["failed"] == f["comparisons"] == f["sent"], f
    # Every copy sent to the slow shadow timed out, and no more were sent than its workers could
    # (each holds a copy for the shadow timeout): the rest were dropped.
    assert s["failed"] == s["sent"] and s["dropped"] > 0, s
    most = MIRROR_WORKERS * ((run.seconds + read_at - run.ended) / SHADOW_TIMEOUT_S + 3)
    assert s["sent"] <= most, f"{s['sent']} copies sent to a shadow that times out, at most {most:.0f} expected"
