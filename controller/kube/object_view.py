"""What the operator knows of the objects kopf watches: the newest copy of each, in memory.

Every tick of every rollout needs its ModelRollout and its InferenceServices. Read from the API
server, that was a request each (four per idle rollout per tick); kopf watches both kinds
anyway, so its handlers keep a copy here and a reconcile reads it for nothing.

Two sources feed a view, and the newer copy wins: the watch (kopf's handlers) and the answers to
the operator's own writes (a create or patch answers with the object as written). Without the
second, the tick after a write would decide on the object as it was before it, until the watch
brought the write back; without the ordering, a watch event sent before the write but handled
after its answer would take the view back in time. Newer is decided by resourceVersion:
Kubernetes 1.35 made comparing them part of the API (KEP-5504, "Comparable Resource Version": a
decimal integer, larger is newer, between objects of one resource). A resourceVersion that is not
such an integer cannot be ordered, and then the latest copy to arrive wins.

A view is for reading. Writes still carry the resourceVersion of the copy they were decided on,
so a decision taken on a copy the API server has moved past is refused (409) rather than written,
and the caller reads the object once from the API server (`observe` its answer) and decides again.

One thing a watch does not say: an object deleted while the watch was down. kopf then lists the
kind again (`type` None events) and carries on, and an object missing from that list is never
reported gone. So a copy that no event has touched since the latest listing began is `doubtful`:
a reader asks the API server about it once (which confirms it, or forgets it).
"""

from __future__ import annotations

import copy
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

Key = tuple[str, str]  # (namespace, name)
# Listing events further apart than this belong to two listings (kopf yields a listing's objects back
# to back, and lists again only after a watch failed).
LISTING_GAP_S = 5.0
# How long a deletion is remembered. It only has to outlive watch events already on their way when the
# object was deleted (seconds at most); without a limit the record would grow with every object ever
# deleted, for the life of the operator.
GONE_KEPT_S = 600.0


def resource_version_order(a: str | None, b: str | None) -> int | None:
    """-1, 0 or 1 as `a` is older than, the same as or newer than `b`; None when they cannot be
    ordered (either is missing or not a decimal integer without leading zeros, KEP-5504's form)."""
    if not (_comparable(a) and _comparable(b)):
        return None
    assert a is not None and b is not None
    left, right = (len(a), a), (len(b), b)  # equal lengths compare as strings: no int() of big numbers
    return (left > right) - (left < right)


def _comparable(version: str | None) -> bool:
    return version is not None and version.isascii() and version.isdigit() and not version.startswith("0")


@dataclass(frozen=True)
class Update:
    """What `observe` did: whether it kept the copy, and the copy it held before (None: none)."""

    kept: bool
    previous: Mapping[str, Any] | None


class ObjectView:
    """The newest copy of each object of one kind, by (namespace, name); safe across threads.

    Copies handed out are shared: read them, never change them.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._objects: dict[Key, dict[str, Any]] = {}
        self._touched: dict[Key, float] = {}  # when an event, a write or a read last showed each copy
        self._listing_began: float | None = None
        self._last_listed: float | None = None
        # Deleted objects: the resourceVersion of the deletion and when it was learnt, oldest first. A
        # copy from before it (a watch event still on its way) is not taken back; a newer one (the
        # object made again) is.
        self._gone: dict[Key, tuple[str | None, float]] = {}
        self._lock = threading.Lock()

    def get(self, namespace: str, name: str) -> Mapping[str, Any] | None:
        with self._lock:
            return self._objects.get((namespace, name))

    def __len__(self) -> int:
        with self._lock:
            return len(self._objects)

    def observe(self, obj: Mapping[str, Any]) -> Update:
        """Keep `obj` (from the watch, a write's answer or a read) unless the view holds a newer copy."""
        meta = obj.get("metadata") or {}
        key = (str(meta.get("namespace") or ""), str(meta.get("name") or ""))
        version = meta.get("resourceVersion")
        plain = copy.deepcopy({k: v for k, v in obj.items()})  # kopf's Body is a view that changes
        with self._lock:
            held = self._objects.get(key)
            if held is not None and resource_version_order(version, _version(held)) == -1:
                self._touched[key] = self._clock()  # a newer copy is held: it exists
                return Update(False, held)
            if key in self._gone:
                if resource_version_order(version, self._gone[key][0]) in (-1, 0):
                    return Update(False, None)
                del self._gone[key]
            self._objects[key] = plain
            self._touched[key] = self._clock()
            return Update(True, held)

    def listed(self, obj: Mapping[str, Any]) -> Update:
        """`observe` for an object of a listing: kopf's first, or one after its watch failed."""
        now = self._clock()
        with self._lock:
            if self._last_listed is None or now - self._last_listed > LISTING_GAP_S:
                self._listing_began = now
            self._last_listed = now
        return self.observe(obj)

    def doubtful(self, namespace: str, name: str) -> bool:
        """Whether the copy held was last shown before the latest listing began: the listing did not
        show it (yet), so it may be an object deleted while the watch was down."""
        key = (namespace, name)
        with self._lock:
            if key not in self._objects or self._listing_began is None:
                return False
            return self._touched.get(key, float("-inf")) < self._listing_began

    def forget(self, namespace: str, name: str, resource_version: str | None = None) -> Mapping[str, Any] | None:
        """The object was deleted (at `resource_version`, if known); returns the copy dropped.

        A copy held that is newer than the deletion is another object of the same name, made since:
        it stays.
        """
        key = (namespace, name)
        with self._lock:
            held = self._objects.get(key)
            if held is not None and resource_version_order(_version(held), resource_version) == 1:
                return None
            now = self._clock()
            self._gone.pop(key, None)  # kept in the order learnt, so the oldest are always first
            self._gone[key] = (resource_version if resource_version is not None else (_version(held) if held else None), now)
            while (oldest := next(iter(self._gone))) != key and now - self._gone[oldest][1] > GONE_KEPT_S:
                del self._gone[oldest]
            self._touched.pop(key, None)
            return self._objects.pop(key, None)


def _version(obj: Mapping[str, Any]) -> str | None:
    version = (obj.get("metadata") or {}).get("resourceVersion")
    return str(version) if version is not None else None
