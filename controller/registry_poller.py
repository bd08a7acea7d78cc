"""The one registry poll, shared by every rollout a controller drives: the operator runs it in a
thread of its own, `local run` once per tick in its loop.

Rollouts register the model they watch; a background thread reads all of them in one
`RegistryWatcher.poll` per interval (a search by name for up to ~285 watched models, else one
request per 1000 registered models; however many rollouts), backs off while MLflow is unreachable, and keeps the last snapshot for the rollouts'
reconciles to read. A verified MLflow webhook only makes the next poll happen now (`wake`); the
poll stays the source of truth. When a model's aliases change, `on_change` is called with its
name so the rollouts of that model reconcile at once instead of at their next tick.

Several rollouts may watch one model with different aliases: the snapshot holds every alias of
every watched model, so the poll watches each model name once (with default aliases) and each
rollout reads its own aliases from the same snapshot.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Hashable

import mlflow

from controller.backoff import Backoff
from registry.errors import RegistryError
from registry.watcher import RegistryWatcher, Snapshot, WatchedModel

log = logging.getLogger("modelrollout.registry")

PollObserver = Callable[[float, bool], None]  # (seconds the poll took, succeeded)


class RegistryPoller:
    def __init__(
        self,
        client: mlflow.MlflowClient,
        interval_s: float,
        on_change: Callable[[str], None] = lambda model: None,
        observe: PollObserver = lambda seconds, ok: None,
        backoff: Backoff | None = None,
    ) -> None:
        self.client = client
        self.interval_s = interval_s
        self.on_change = on_change
        self.observe = observe
        self.backoff = backoff or Backoff(first=1.0, cap=min(30.0, max(interval_s, 1.0) * 4))
        self._lock = threading.Lock()
        self._models: dict[Hashable, str] = {}  # rollout key -> model name
        self._snapshot: Snapshot | None = None
        self._error: str | None = "registry not polled yet"
        self._failing = False  # the last poll failed: say when MLflow answers again
        self._wake = threading.Event()
        self._polled = threading.Event()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    # -- what rollouts call ---------------------------------------------------------------------

    def watch(self, key: Hashable, model: str) -> None:
        with self._lock:
            new = model not in self._models.values()
            self._models[key] = model
        if new or self._snapshot is None or model not in self._snapshot:
            self.wake()  # a model not in the snapshot yet: read it now, not at the next interval

    def forget(self, key: Hashable) -> None:
        with self._lock:
            self._models.pop(key, None)

    def latest(self) -> tuple[Snapshot | None, str | None]:
        """The last snapshot and, when the last poll failed, why (then the snapshot is None)."""
        with self._lock:
            return self._snapshot, self._error

    def snapshot_for(self, model: str) -> tuple[Snapshot | None, str | None]:
        snapshot, error = self.latest()
        if snapshot is not None and model not in snapshot:
            return None, f"registered model {model!r} not polled yet"
        return snapshot, error

    def wake(self) -> None:
        """Poll now instead of at the next interval (a webhook, a new rollout)."""
        self._wake.set()

    def wait_polled(self, timeout: float) -> bool:
        """True once a poll has been attempted (readiness)."""
        return self._polled.wait(timeout)

    # -- the loop -------------------------------------------------------------------------------

    def poll_once(self) -> None:
        with self._lock:
            names = sorted(set(self._models.values()))
        clock = time.monotonic()
        if not self.backoff.ready(clock):
            return
        started = time.perf_counter()
        try:
            snapshot = RegistryWatcher(self.client, [WatchedModel(name) for name in names]).poll()
        except RegistryError as err:
            self.observe(time.perf_counter() - started, False)
            self.backoff.failed(clock)
            self._failing = True
            with self._lock:
                previous_error, self._snapshot, self._error = self._error, None, str(err)
            if previous_error != str(err):
                log.warning("registry unavailable, backing off: %s", err)
            return
        finally:
            self._polled.set()
        self.observe(time.perf_counter() - started, True)
        self.backoff.succeeded()
        with self._lock:
            previous, self._snapshot, self._error = self._snapshot, snapshot, None
        if self._failing:
            log.info("registry reachable again")
            self._failing = False
        for name in names:
            if previous is None or previous.get(name) != snapshot.get(name):
                self.on_change(name)

    def run(self) -> None:
        while not self._stop.is_set():
            self._wake.clear()  # before the poll: a wake arriving during it means "poll again"
            try:
                self.poll_once()
            except Exception:  # noqa: BLE001 - the poll thread must outlive any one bad poll
                log.exception("registry poll failed")
            self._wake.wait(self.interval_s)

    def start(self) -> RegistryPoller:
        self._thread = threading.Thread(target=self.run, name="registry-poll", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()
