"""Mirroring live requests to a shadow version, off the client's path.

The local router (and, on KServe, the shadow comparator) enqueues a copy of a request once the
client's answer is ready; a few worker tasks
send the copies to the shadow with their own HTTP client and timeout, so a shadow that is slow,
hangs or fails can never delay or fail a client. The queue is bounded: when the shadow cannot
keep up, new copies are dropped (and counted) instead of piling up in memory.

**Like with like.** A copy reaches the shadow after the client's answer, from a worker task in a
busy event loop; the stable's client requests are timed on the client's path. Timed that way, an
identical shadow measured slower than the stable in 60-70% of pairs (issue 11), and a sequential
latency check rolled it back. So a job may name a `baseline`: a second server of the stable
version that nothing else sends to. The worker posts the copy to the shadow and to the baseline
at the same moment (concurrently, on one connection pool) and records the baseline's time and
outcome under role `baseline`; the shadow phase's latency and error checks compare the shadow
with that (canary/decision/templates.py, `Template.shadow_baseline`). Both servers are fresh, see the
same requests at the same rate and are timed by the same code: only the model differs — as
Kayenta compares a canary with a fresh baseline, not with production.

Each shadow answer is compared with the stable's answer to the same request, instance by
instance (canary/traffic/predictions.py: labels equal, probabilities by their top class, floats within
the tolerance — the job's own, the rollout's when the request came, else the Mirror's default),
and for regression values the relative error of each instance is recorded. A
shadow that failed, timed out, or answered something that cannot be matched instance by
instance agrees on none of the instances (and is as far as it gets, relative error 2): a version
that cannot answer the live traffic must not look like one that agrees with it. Its predictions
are counted for the drift signals like the stable's.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from canary.decision.tolerance import DEFAULT_TOLERANCE, Tolerance
from canary.traffic.feedback import PredictionLog
from canary.traffic.predictions import Protocol, count_agreements, instances_from_body, relative_errors
from canary.traffic.serving_metrics import BASELINE, SHADOW, ServingMetrics
from canary.traffic.upstream import UpstreamError, UpstreamPool

log = logging.getLogger("modelrollout.mirror")

# Request and response headers that describe the body and travel with it to and from a model
# server; KServe's V2 binary extension needs the length of the JSON part.
PASSED_HEADERS = ("content-type", "inference-header-content-length")


@dataclass(frozen=True)
class Target:
    """A model server answering for one version."""

    version: str
    url: str


@dataclass(frozen=True)
class MirrorJob:
    model: str
    protocol: Protocol
    body: bytes
    headers: dict[str, str]  # the client's PASSED_HEADERS
    request_id: str
    shadow: Target
    # The stable's per-instance predictions, or None when it gave none to compare with.
    stable_instances: list[Any] | None
    # The model name in the shadow's URL when it differs from `model` (a KServe shadow
    # InferenceService serves under its own name); `model` stays the metrics' label.
    path_model: str | None = None
    # The rollout's tolerance when the request was served (it travels with each routing, so it
    # may change while copies wait); None: the Mirror's default.
    tolerance: Tolerance | None = None
    # The stable's baseline server, sent the same copy at the same moment (see the module's
    # docstring); None: the shadow alone (the KServe comparator's replays).
    baseline: Target | None = None


class Mirror:
    """A bounded queue of copies and the workers that send them to the shadow."""

    def __init__(
        self,
        *,
        metrics: ServingMetrics,
        predictions: PredictionLog,
        still_shadow: Callable[[Target], bool],
        queue_size: int = 1000,
        workers: int = 4,
        timeout_seconds: float = 5.0,
        tolerance: Tolerance = DEFAULT_TOLERANCE,
    ) -> None:
        if queue_size < 1 or workers < 1 or timeout_seconds <= 0:
            raise ValueError("queue_size and workers must be >= 1, timeout_seconds > 0")
        self._metrics = metrics
        self._predictions = predictions
        self._still_shadow = still_shadow
        self._queue: asyncio.Queue[MirrorJob] = asyncio.Queue(maxsize=queue_size)
        self._workers = workers
        self._timeout = timeout_seconds
        self._tolerance = tolerance
        self._tasks: list[asyncio.Task[None]] = []
        self._client: UpstreamPool | None = None
        metrics.track_queue_depth(self._queue.qsize)

    def depth(self) -> int:
        return self._queue.qsize()

    def offer(self, job: MirrorJob) -> bool:
        """Enqueue a copy without waiting; a full queue drops it (counted). Never blocks."""
        try:
            self._queue.put_nowait(job)
        except asyncio.QueueFull:
            self._metrics.observe_dropped(job.model)
            return False
        return True

    async def start(self) -> None:
        # Its own client and connection pool: copies waiting on a hung shadow must not hold
        # connections that client requests need.
        self._client = UpstreamPool(
            timeout=self._timeout,
            connect_timeout=min(self._timeout, 2.0),
            # Two per worker: a copy to the shadow and its twin to the baseline are in flight at
            # once, and neither may be timed waiting for a connection the other holds.
            max_connections=2 * self._workers,
            max_idle_per_origin=2 * self._workers,
        )
        self._tasks = [asyncio.create_task(self._work(), name=f"mirror-{i}") for i in range(self._workers)]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def _work(self) -> None:
        while True:
            job = await self._queue.get()
            try:
                await self._send(job)
            except Exception:  # a worker must survive anything one copy does
                log.exception("mirroring request %s to version %s failed", job.request_id, job.shadow.version)
            finally:
                self._queue.task_done()

    async def _send(self, job: MirrorJob) -> None:
        if not self._still_shadow(job.shadow):
            # The shadow was replaced, promoted or removed while the copy waited.
            self._metrics.observe_dropped(job.model)
            return
        if job.baseline is None:
            instances = await self._post(job, job.shadow, SHADOW)
        else:
            instances, _ = await asyncio.gather(self._post(job, job.shadow, SHADOW), self._post(job, job.baseline, BASELINE))
        if job.stable_instances is not None:
            tolerance = self._tolerance if job.tolerance is None else job.tolerance
            agreed = count_agreements(job.stable_instances, instances, tolerance)
            self._metrics.observe_comparison(job.model, job.shadow.version, len(job.stable_instances), agreed)
            errors = relative_errors(job.stable_instances, instances)
            self._metrics.observe_relative_errors(job.model, job.shadow.version, errors)
        if instances is not None:
            self._metrics.observe_predictions(job.model, job.shadow.version, SHADOW, instances)
            score = self._predictions.record(job.request_id, job.model, job.shadow.version, SHADOW, instances)
            if score is not None:
                self._metrics.observe_score(score)

    async def _post(self, job: MirrorJob, target: Target, role: str) -> list[Any] | None:
        """One copy to one server, timed and counted under `role`; its instances when it answered 2xx.

        The baseline's answer is only timed: agreement and accuracy compare the shadow with what the
        stable told the client."""
        assert self._client is not None
        headers = {**job.headers, "x-request-id": job.request_id}
        started = time.perf_counter()
        instances: list[Any] | None = None
        try:
            answer = await self._client.post(target.url, job.protocol.path(job.path_model or job.model), job.body, headers)
            failed = answer.status >= 500
            if 200 <= answer.status < 300 and role == SHADOW:
                instances = instances_from_body(job.protocol, answer.body)
        except UpstreamError as exc:
            failed = True
            log.debug("%s %s: %s: %s", role, target.version, type(exc).__name__, exc)
        self._metrics.observe_request(job.model, target.version, role, time.perf_counter() - started, failed)
        return instances
