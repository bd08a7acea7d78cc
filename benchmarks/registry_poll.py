"""Registry-poll benchmark: what one registry poll costs as the MLflow registry grows.

    python -m benchmarks.registry_poll            # 10 / 100 / 1000 registered models
    python -m benchmarks.registry_poll --quick    # 5 / 20 / 50, for the smoke test

What is polled: `controller.registry_poller.RegistryPoller.poll_once()`, the operator's one poll
shared by every rollout (the local runner's `RegistryWatcher.poll` is the same read). When the
watched models' names fit in at most 3 `name IN (...)` filters of 2000 characters, it searches for
those models only; otherwise it lists the registry with
`MlflowClient.search_registered_models(max_results=1000)` page by page, every registered model with
its aliases and latest version per stage, and keeps the watched ones (cost follows the number of
models REGISTERED). Here every registered model is watched, so the smaller sizes take the filtered
read and the largest the listing.

Against a real `mlflow server` (`controller.local.mlflow_server.MlflowServer`: sqlite, one
worker, on 127.0.0.1), for each size N (ascending, the registry grows between sizes): N rollouts,
each watching its own model, N models registered, each with one version (source
`s3://modelrollout-bench/<name>/1`: MLflow accepts a URI it never opens, so no artifacts are
needed) and the alias `champion` on it. They are created through the REST API (create model,
create version, set alias: 3 calls per model) by a few threads; setup time is printed.

Measured per size, after one warm-up call of each kind (excluded), R times each (default 20,
quick 5), the two kinds taking turns so that load from elsewhere falls on both alike:
- poll: `poll_once()` (median and p95 wall time, `time.perf_counter`; a poll that misses a
  watched model or its alias is an error, not a figure);
- bare: one `search_registered_models(max_results=1000)` call: the REST call and the parsing
  of its answer alone, as a reference for what the poll adds;
- REST calls per poll (and per bare search), counted by the server: the lines its access log
  (uvicorn's, in the server's log file) gained during each call, by method and path. Nothing
  in the client is wrapped, so the count cannot change what is timed;
- at the largest size also a poller watching only 10 (quick: 5) of the N models (a filtered
  read), against one full listing of the registry (`bare`: what the poll cost before it filtered).

Ratios (same run): the poll at N against the poll at the smallest size, in total and per
registered model (time/N against time/N0); and poll/bare at each size.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
from mlflow import MlflowClient

from benchmarks.router_overhead import busy, machine, ratio, table_rule
from controller.local.mlflow_server import MlflowServer
from controller.local.ports import free_port
from controller.registry_poller import RegistryPoller
from registry.connection import connect

FULL_SIZES = (10, 100, 1000)
QUICK_SIZES = (5, 20, 50)
STABLE_ALIAS = "champion"
SERVER_START_TIMEOUT_S = 120.0
REST_TIMEOUT_S = 30.0
IDLE_BEFORE_CALL_S = 0.1
# `"GET /api/2.0/mlflow/registered-models/search?max_results=1000 HTTP/1.1" 200`
_ACCESS_LINE = re.compile(r'"(GET|POST|PUT|PATCH|DELETE) (/[^ ?"]*)[^"]* HTTP/[0-9.]+" (\d{3})')


def model_name(index: int) -> str:
    return f"bench-model-{index:05d}"


# --- counting the server's REST calls -------------------------------------------------------------


class AccessLog:
    """The REST calls an `mlflow server` logged since the last `mark()`, read from its log file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._offset = 0

    def mark(self) -> None:
        self._offset = self.path.stat().st_size

    def calls_since_mark(self) -> Counter[str]:
        with self.path.open("rb") as f:
            f.seek(self._offset)
            text = f.read().decode(errors="replace")
        return Counter(f"{m[1]} {m[2]}" for m in _ACCESS_LINE.finditer(text))


# --- filling the registry ---------------------------------------------------------------------------


def register(http: httpx.Client, base: str, names: Sequence[str], workers: int) -> None:
    """Create each model with one version under STABLE_ALIAS, through the REST API."""
    api = base + "/api/2.0/mlflow"

    def call(path: str, body: dict[str, str]) -> dict:
        response = http.post(api + path, json=body)
        if response.status_code != 200:
            raise RuntimeError(f"MLflow refused POST {path} {body}: HTTP {response.status_code}: {response.text[:300]}")
        return response.json()

    def one(name: str) -> None:
        call("/registered-models/create", {"name": name})
        version = call("/model-versions/create", {"name": name, "source": f"s3://modelrollout-bench/{name}/1"})
        call(
            "/registered-models/alias",
            {"name": name, "alias": STABLE_ALIAS, "version": str(version["model_version"]["version"])},
        )

    with ThreadPoolExecutor(max_workers=workers) as pool:
        for _ in pool.map(one, names):  # re-raises the first failure
            pass


# --- measuring ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Timed:
    median_ms: float
    p95_ms: float
    calls: Counter[str]  # REST calls per repetition, by "METHOD /path"
    repeats: int

    @property
    def calls_per_run(self) -> float:
        return sum(self.calls.values()) / self.repeats


def timed_alternately(actions: Sequence[Callable[[], None]], log: AccessLog, repeats: int) -> list[Timed]:
    """Time each action `repeats` times, taking turns, after one warm-up call of each.

    Taking turns puts load from elsewhere on the machine on every action alike, so their ratio
    holds even when the absolute times drift. Each call's REST calls are read from the access
    log after it returns, outside the timing.
    """
    for action in actions:
        action()  # warm-up: first query plans, connections, caches
    seconds: list[list[float]] = [[] for _ in actions]
    calls: list[Counter[str]] = [Counter() for _ in actions]
    for _ in range(repeats):
        for index, action in enumerate(actions):
            log.mark()
            # A real poll meets an idle server (the default interval is 15 s); back to back, a
            # call would also pay for what the server still does after answering the last one.
            time.sleep(IDLE_BEFORE_CALL_S)
            started = time.perf_counter()
            action()
            seconds[index].append(time.perf_counter() - started)
            calls[index] += log.calls_since_mark()
    return [_summary(times, counted, repeats) for times, counted in zip(seconds, calls, strict=True)]


def _summary(seconds: list[float], calls: Counter[str], repeats: int) -> Timed:
    ordered = sorted(seconds)
    p95 = ordered[min(len(ordered) - 1, math.ceil(0.95 * len(ordered)) - 1)]
    return Timed(median_ms=statistics.median(seconds) * 1000, p95_ms=p95 * 1000, calls=calls, repeats=repeats)


def poller_watching(client: MlflowClient, names: Sequence[str]) -> RegistryPoller:
    """A poller as the operator builds it, one rollout per name; never started: polled by hand."""
    poller = RegistryPoller(client, interval_s=3600)
    for index, name in enumerate(names):
        poller.watch(("bench", f"rollout-{index}"), name)
    return poller


def poll_action(poller: RegistryPoller, names: Sequence[str]) -> Callable[[], None]:
    def poll() -> None:
        poller.poll_once()
        snapshot, error = poller.latest()
        if error is not None or snapshot is None:
            raise RuntimeError(f"registry poll failed: {error}")
        missing = [n for n in names if not snapshot[n].exists or snapshot[n].aliases.get(STABLE_ALIAS) != "1"]
        if missing:
            raise RuntimeError(f"poll did not see {len(missing)} watched models, e.g. {missing[0]}")

    return poll


@dataclass(frozen=True)
class SizeResult:
    registered: int
    watched: int
    setup_s: float  # registering the models added for this size
    poll: Timed
    bare: Timed


@dataclass(frozen=True)
class FewWatched:
    registered: int
    watched: int
    poll: Timed
    listing: Timed  # one search_registered_models(max_results=1000): the unfiltered read


@dataclass(frozen=True)
class Config:
    sizes: tuple[int, ...] = FULL_SIZES
    repeats: int = 20
    few: int = 10
    setup_workers: int = 4


def run(config: Config, workdir: Path) -> tuple[list[SizeResult], FewWatched, float]:
    """Start the server, grow the registry size by size and measure; the results and start seconds."""
    started = time.perf_counter()
    server = MlflowServer(data_dir=workdir / "mlflow", port=free_port())
    server.start(timeout=SERVER_START_TIMEOUT_S)
    start_s = time.perf_counter() - started
    try:
        log = AccessLog(server.log_path)
        client = connect(server.url, timeout_s=int(REST_TIMEOUT_S), max_retries=0)  # no hidden retries
        results: list[SizeResult] = []
        registered = 0
        with httpx.Client(timeout=REST_TIMEOUT_S, trust_env=False) as http:
            for size in sorted(config.sizes):
                began = time.perf_counter()
                register(http, server.url, [model_name(i) for i in range(registered, size)], config.setup_workers)
                setup_s = time.perf_counter() - began
                registered = size
                names = [model_name(i) for i in range(size)]
                poll, bare = timed_alternately(
                    [poll_action(poller_watching(client, names), names), lambda: bare_search(client)],
                    log,
                    config.repeats,
                )
                results.append(SizeResult(registered=size, watched=size, setup_s=setup_s, poll=poll, bare=bare))
        few_names = [model_name(i) for i in range(min(config.few, registered))]
        few_poll, listing = timed_alternately(
            [poll_action(poller_watching(client, few_names), few_names), lambda: bare_search(client)],
            log,
            config.repeats,
        )
        few = FewWatched(registered=registered, watched=len(few_names), poll=few_poll, listing=listing)
    finally:
        server.stop()
    return results, few, start_s


def bare_search(client: MlflowClient) -> None:
    """The reference: one page of the registry, as the poll's first (here only) request asks for it."""
    client.search_registered_models(max_results=1000)


# --- the report -----------------------------------------------------------------------------------------


def _calls(t: Timed) -> str:
    per = ", ".join(f"{n / t.repeats:g} {what}" for what, n in sorted(t.calls.items()))
    return per or "none"


def render(
    config: Config, results: list[SizeResult], few: FewWatched, start_s: float, total_s: float, load_before: float
) -> str:
    base = results[0]
    head = (
        f"| {'registered':>10} | {'watched':>7} | {'poll p50 ms':>11} | {'poll p95 ms':>11} | {'calls/poll':>10} | "
        f"{'ms/model':>8} | {'bare p50 ms':>11} | {'poll/bare':>9} | {'setup s':>7} |"
    )
    lines = [
        "Registry-poll benchmark (python -m benchmarks.registry_poll)",
        (
            "polled: RegistryPoller.poll_once() = name IN (...) searches when the watched names fit 3 filters, "
            "else search_registered_models(max_results=1000) page by page; N rollouts each watching its own model"
        ),
        (
            f"registry: mlflow server (sqlite, 1 worker) on 127.0.0.1; each model: 1 version (s3:// source, no "
            f"artifacts) + alias '{STABLE_ALIAS}'; {config.repeats} timed repetitions after 1 warm-up; "
            f"REST calls counted in the server's access log"
        ),
        "",
        head,
        table_rule(head),
    ]
    for r in results:
        lines.append(
            f"| {r.registered:>10} | {r.watched:>7} | {r.poll.median_ms:11.1f} | {r.poll.p95_ms:11.1f} | "
            f"{r.poll.calls_per_run:10g} | {r.poll.median_ms / r.registered:8.3f} | {r.bare.median_ms:11.1f} | "
            f"{ratio(r.poll.median_ms, r.bare.median_ms):9.2f} | {r.setup_s:7.1f} |"
        )
    lines += ["", f"ratios against the {base.registered}-model poll (same run):"]
    ratio_head = f"| {'registered':>10} | {'models x':>8} | {'poll time x':>11} | {'per-model cost x':>16} |"
    lines += [ratio_head, table_rule(ratio_head)]
    for r in results[1:]:
        per_model = ratio(r.poll.median_ms / r.registered, base.poll.median_ms / base.registered)
        lines.append(
            f"| {r.registered:>10} | {r.registered / base.registered:8g} | "
            f"{ratio(r.poll.median_ms, base.poll.median_ms):11.2f} | {per_model:16.2f} |"
        )
    lines += [
        "",
        f"REST calls per poll: {'; '.join(f'{r.registered}: {_calls(r.poll)}' for r in results)}",
        f"REST calls per bare search: {'; '.join(f'{r.registered}: {_calls(r.bare)}' for r in results)}",
        (
            f"{few.watched} watched of {few.registered} registered: poll p50 {few.poll.median_ms:.1f} ms "
            f"(REST calls: {few.poll.calls_per_run:g}) vs listing the whole registry {few.listing.median_ms:.1f} ms "
            f"(REST calls: {few.listing.calls_per_run:g}): x{ratio(few.poll.median_ms, few.listing.median_ms):.3f}"
        ),
        "",
        (
            f"setup: server ready in {start_s:.1f} s; {results[-1].registered} models registered in "
            f"{sum(r.setup_s for r in results):.1f} s ({config.setup_workers} threads, 3 REST calls per model)"
        ),
        f"machine: {machine()}; {busy(load_before)}; took {total_s:.0f} s",
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.registry_poll", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="5 / 20 / 50 models and 5 repetitions, for smoke tests")
    parser.add_argument("--sizes", help="comma-separated registered-model counts (default 10,100,1000; quick 5,20,50)")
    parser.add_argument("--repeats", type=int, help="timed polls per size (default 20; quick 5)")
    parser.add_argument("--setup-workers", type=int, default=Config.setup_workers, help="threads registering models")
    args = parser.parse_args(argv)
    if args.sizes is not None:
        try:
            sizes = tuple(sorted({int(part) for part in args.sizes.split(",") if part.strip()}))
        except ValueError:
            parser.error(f"--sizes must be comma-separated integers, got {args.sizes!r}")
    else:
        sizes = QUICK_SIZES if args.quick else FULL_SIZES
    repeats = args.repeats if args.repeats is not None else (5 if args.quick else Config.repeats)
    if not sizes or sizes[0] < 1:
        parser.error("--sizes must hold at least one count, each at least 1")
    if repeats < 1 or args.setup_workers < 1:
        parser.error("--repeats and --setup-workers must be at least 1")
    config = Config(
        sizes=sizes, repeats=repeats, few=5 if args.quick else Config.few, setup_workers=args.setup_workers
    )
    started, load_before = time.perf_counter(), os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="bench-registry-") as workdir:
        results, few, start_s = run(config, Path(workdir))
    print(render(config, results, few, start_s, time.perf_counter() - started, load_before))
    return 0


if __name__ == "__main__":
    sys.exit(main())
