"""Prometheus' metric names, read at most every `max_age_s`: whether a rollout's series exist at all.

Each rollout in an active phase asks on every tick (canary/decision/series_check.py says why); one
`/api/v1/label/__name__/values` per interval answers all of them. An unreachable Prometheus is no
answer (None), never "missing": the checks' own queries report that error.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from canary.decision.metrics import MetricsError
from canary.decision.series_check import missing_series, wanted_series
from canary.decision.spec import ModelRolloutSpec

log = logging.getLogger("modelrollout")


class SeriesCatalog:
    def __init__(self, read_names: Callable[[], list[str]], max_age_s: float = 30.0,
                 clock: Callable[[], float] = time.monotonic) -> None:  # fmt: skip
        self._read, self._max_age, self._clock = read_names, max_age_s, clock
        self._names: frozenset[str] | None = None
        self._read_at = float("-inf")
        self._lock = threading.Lock()

    def check(self, spec: ModelRolloutSpec) -> tuple[bool, str | None]:
        """(checked, problem): whether Prometheus could be asked, and what is missing if anything."""
        if not wanted_series(spec):
            return True, None
        names = self._current()
        if names is None:
            return False, None
        return True, missing_series(spec, names)

    def _current(self) -> frozenset[str] | None:
        with self._lock:
            now = self._clock()
            if self._names is None or now - self._read_at >= self._max_age:
                try:
                    self._names = frozenset(self._read())
                except MetricsError as err:
                    log.info("metric names not read (the checks report it): %s", err)
                    return self._names  # the last answer, while it lasts, beats none
                self._read_at = now
            return self._names
