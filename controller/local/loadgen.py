"""Labelled client traffic for a rollout's router: what the demo and the end-to-end tests send.

Each request is a real V1 predict call through the router; its ground-truth label is then posted
to `POST /feedback` with the request id the router returned, as a labelling pipeline would, so
the accuracy checks have data. Rate-paced, bounded by `stop`, one thread.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import httpx


@dataclass
class TrafficStats:
    sent: int = 0
    answered: int = 0
    failed: int = 0
    by_version: Counter = field(default_factory=Counter)
    failures: Counter = field(default_factory=Counter)  # status code or error name -> count
    latencies: list[float] = field(default_factory=list)


class LabelledTraffic:
    def __init__(
        self,
        endpoint: Callable[[], str | None],
        model: str,
        features: Sequence[Sequence[float]],
        labels: Sequence[int],
        rate: float = 20.0,
        feedback: bool = True,
        timeout: float = 5.0,
    ):
        if len(features) != len(labels) or len(features) == 0:
            raise ValueError("features and labels must be non-empty and of the same length")
        self.endpoint = endpoint
        self.model = model
        self.features = [list(map(float, row)) for row in features]
        self.labels = [int(y) for y in labels]
        self.interval = 1.0 / rate
        self.feedback = feedback
        self.stats = TrafficStats()
        self._stop = threading.Event()
        self._client = httpx.Client(timeout=timeout, trust_env=False)
        self._thread = threading.Thread(target=self._loop, name="labelled-traffic", daemon=True)

    def start(self) -> LabelledTraffic:
        self._thread.start()
        return self

    def stop(self) -> TrafficStats:
        self._stop.set()
        self._thread.join(timeout=10)
        self._client.close()
        return self.stats

    def _loop(self) -> None:
        i = 0
        next_at = time.monotonic()
        while not self._stop.is_set():
            base = self.endpoint()
            if base is not None:
                self._one(base, i % len(self.features))
                i += 1
            next_at += self.interval
            self._stop.wait(max(0.0, next_at - time.monotonic()))
            next_at = max(next_at, time.monotonic() - self.interval)  # no burst after a stall

    def _one(self, base: str, i: int) -> None:
        stats = self.stats
        stats.sent += 1
        started = time.monotonic()
        try:
            response = self._client.post(
                f"{base}/v1/models/{self.model}:predict", json={"instances": [self.features[i]]}
            )
        except httpx.HTTPError as err:
            stats.failed += 1
            stats.failures[type(err).__name__] += 1
            return
        stats.latencies.append(time.monotonic() - started)
        if response.status_code != 200:
            stats.failed += 1
            stats.failures[str(response.status_code)] += 1
            return
        stats.answered += 1
        stats.by_version[response.headers.get("x-model-version", "?")] += 1
        request_id = response.headers.get("x-request-id")
        if self.feedback and request_id:
            try:
                self._client.post(f"{base}/feedback", json={"requestId": request_id, "labels": [self.labels[i]]})
            except httpx.HTTPError:
                pass  # a lost label only thins the accuracy sample; it must not stop the traffic
