"""Upstream-client benchmark: the CPU one POST to a model server costs, by HTTP client.

    python -m benchmarks.upstream_client            # 3000 posts per client and loop: ~30 s
    python -m benchmarks.upstream_client --quick    # 300 posts (the smoke test)

Why canary/traffic/upstream.py exists: the router makes one upstream call per client request
(and one more per mirrored copy), the comparator one per replay, so the client's own CPU is most
of their cost. This measures, in one run against one real KServe model server on 127.0.0.1
(`controller.local.modelserver`, the iris LogisticRegression), one keep-alive connection and one
request at a time, the CPU time of this process (``time.process_time``) per POST of one iris row
and the wall time per POST, for:
- ``httpx.AsyncClient`` (what the router used before issue 15, and the project's client elsewhere);
- ``aiohttp.ClientSession`` (installed with kopf and mlflow);
- ``canary.traffic.upstream.UpstreamPool``;
each on asyncio's own loop and on uvloop (what uvicorn runs the router on). The model server's
time is in the wall figure, not in the CPU one.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

import aiohttp
import httpx
import uvloop

from benchmarks.router_overhead import busy, machine, request_bodies, save_model, table_rule
from canary.traffic.upstream import UpstreamPool
from tests.fixtures.modelserver import spawn

MODEL = "iris"
PATH = f"/v1/models/{MODEL}:predict"
HEADERS = {"content-type": "application/json"}
WARMUP = 200

Poster = Callable[[bytes], Awaitable[bytes]]


async def measure(make: Callable[[], Awaitable[tuple[Poster, Callable[[], Awaitable[None]]]]], posts: int, body: bytes) -> tuple[float, float]:
    """(CPU ms, wall ms) per post, after a warm-up."""
    post, close = await make()
    try:
        for _ in range(WARMUP):
            await post(body)
        cpu, wall = time.process_time(), time.perf_counter()
        for _ in range(posts):
            await post(body)
        return 1000 * (time.process_time() - cpu) / posts, 1000 * (time.perf_counter() - wall) / posts
    finally:
        await close()


def clients(base_url: str) -> dict[str, Callable[[], Awaitable[tuple[Poster, Callable[[], Awaitable[None]]]]]]:
    async def with_httpx() -> tuple[Poster, Callable[[], Awaitable[None]]]:
        client = httpx.AsyncClient(trust_env=False)

        async def post(body: bytes) -> bytes:
            return (await client.post(base_url + PATH, content=body, headers=HEADERS)).content

        return post, client.aclose

    async def with_aiohttp() -> tuple[Poster, Callable[[], Awaitable[None]]]:
        session = aiohttp.ClientSession()

        async def post(body: bytes) -> bytes:
            async with session.post(base_url + PATH, data=body, headers=HEADERS) as answer:
                return await answer.read()

        return post, session.close

    async def with_upstream() -> tuple[Poster, Callable[[], Awaitable[None]]]:
        pool = UpstreamPool(timeout=10.0, connect_timeout=2.0)

        async def post(body: bytes) -> bytes:
            return (await pool.post(base_url, PATH, body, HEADERS)).body

        return post, pool.aclose

    return {"httpx.AsyncClient": with_httpx, "aiohttp.ClientSession": with_aiohttp, "upstream.UpstreamPool": with_upstream}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.upstream_client", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="300 posts per client and loop (the smoke test)")
    parser.add_argument("--posts", type=int, help="posts measured per client and loop (default 3000; quick 300)")
    args = parser.parse_args(argv)
    posts = args.posts if args.posts is not None else (300 if args.quick else 3000)
    if posts < 1:
        parser.error("--posts must be at least 1")
    started, load_before = time.perf_counter(), os.getloadavg()[0]
    body = request_bodies()[0]
    results: dict[tuple[str, str], tuple[float, float]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-upstream-") as workdir:
        model = save_model(Path(workdir) / "model")
        server = spawn("controller.local.modelserver", ["--name", MODEL, "--model-uri", str(model), "--version", "1"], Path(workdir), "modelserver")
        try:
            server.wait_ready("/v2/health/ready", 90.0)
            json.loads(httpx.post(server.url + PATH, content=body, headers=HEADERS).content)  # it answers
            for loop_name, runner in (("asyncio", asyncio.run), ("uvloop", uvloop.run)):
                for name, make in clients(server.url).items():
                    results[(name, loop_name)] = runner(measure(make, posts, body))
        finally:
            server.stop()

    head = f"| {'client':<21} | {'loop':<7} | {'CPU ms/post':>11} | {'wall ms/post':>12} | {'CPU / httpx':>11} |"
    lines = [
        "Upstream-client benchmark (python -m benchmarks.upstream_client)",
        f"load: {posts} sequential POSTs of one iris row (V1 JSON) per client and loop, after {WARMUP} warm-up, "
        "on one keep-alive connection to a KServe model server on 127.0.0.1",
        "",
        head,
        table_rule(head),
    ]
    for (name, loop_name), (cpu, wall) in results.items():
        base = results[("httpx.AsyncClient", loop_name)][0]
        lines.append(f"| {name:<21} | {loop_name:<7} | {cpu:11.3f} | {wall:12.3f} | {cpu / base:11.2f} |")
    lines += [
        "",
        f"machine: {machine()}; {busy(load_before)}; took {time.perf_counter() - started:.0f} s",
    ]
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
