"""Ground-truth feedback: remember what each version predicted per request, score it on labels.

A client that later learns the true label of a request it sent posts it to ``POST /feedback``
with the request's id (the ``x-request-id`` the router or comparator returned). Every version that answered
that request — the one that served it and the shadow that got a mirrored copy — is scored, so
accuracy can be compared between stable, canary and shadow on the same traffic.

The memory is bounded twice: by a TTL (labels that arrive later than that are refused with
404) and by a number of entries (the oldest are evicted first). Both are configurable.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic.alias_generators import to_camel

from canary.predictions import DEFAULT_TOLERANCE, Tolerance, values_agree

MAX_ITEMS = 10_000


# --- the wire format --------------------------------------------------------------------------


class FeedbackItem(BaseModel):
    """One request's ground truth: ``label`` (one instance) or ``labels`` (one per instance)."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")

    request_id: str = Field(min_length=1, max_length=200)
    label: Any = None
    labels: list[Any] | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> FeedbackItem:
        given = {"label", "labels"} & self.model_fields_set
        if len(given) != 1:
            raise ValueError("give exactly one of 'label' (one instance) or 'labels' (one per instance)")
        if "labels" in given and not self.labels:
            raise ValueError("'labels' must be a non-empty list, one label per instance")
        return self

    def label_list(self) -> list[Any]:
        return list(self.labels) if "labels" in self.model_fields_set and self.labels is not None else [self.label]


class FeedbackRequest(BaseModel):
    """Either one item's fields at the top level, or a batch ``{"items": [...]}``.

    A single item is read as a batch of one, so a mistake in it is reported as ``items.0.…``.
    """

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")

    items: list[FeedbackItem] = Field(min_length=1, max_length=MAX_ITEMS)

    @model_validator(mode="before")
    @classmethod
    def _single_as_batch(cls, data: Any) -> Any:
        if isinstance(data, dict) and "items" not in data:
            return {"items": [data]}
        if isinstance(data, dict) and set(data) - {"items"}:
            raise ValueError("send either 'items' or a single 'requestId' with its label(s), not both")
        return data


# --- the memory -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Score:
    """One version's result on one request's labels."""

    model: str
    version: str
    role: str
    total: int
    correct: int


@dataclass
class _Record:
    created: float
    # (model, version, role) -> that version's per-instance predictions for this request.
    answers: dict[tuple[str, str, str], list[Any]] = field(default_factory=dict)
    labels: list[Any] | None = None


class UnknownRequests(LookupError):
    def __init__(self, request_ids: list[str]) -> None:
        self.request_ids = request_ids
        super().__init__(
            "no predictions remembered for request id(s) "
            + ", ".join(repr(r) for r in request_ids)
            + " (unknown, or older than the feedback TTL)"
        )


class FeedbackConflict(ValueError):
    """The labels cannot be applied: wrong count, or the request already has labels."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class PredictionLog:
    """Per request id, the predictions of every version that answered it; bounded and expiring."""

    def __init__(
        self,
        max_entries: int = 100_000,
        ttl_seconds: float = 3600.0,
        tolerance: Tolerance = DEFAULT_TOLERANCE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_entries < 1 or ttl_seconds <= 0:
            raise ValueError("max_entries must be >= 1 and ttl_seconds > 0")
        self.max_entries = max_entries
        self.ttl_seconds = ttl_seconds
        self.tolerance = tolerance
        self._clock = clock
        # Insertion order is creation order, and all entries share one TTL, so the front of
        # the dict is always the next to expire and the first to evict.
        self._records: OrderedDict[str, _Record] = OrderedDict()

    def __len__(self) -> int:
        return len(self._records)

    def __contains__(self, request_id: object) -> bool:
        """Whether labels for this request id would be accepted now (seen and not expired)."""
        self._expire(self._clock())
        return request_id in self._records

    def _expire(self, now: float) -> None:
        while self._records:
            _, oldest = next(iter(self._records.items()))
            if now - oldest.created < self.ttl_seconds:
                break
            self._records.popitem(last=False)

    def start(self, request_id: str) -> None:
        """A new request with this id: forget any earlier one that reused the id."""
        now = self._clock()
        self._expire(now)
        self._records.pop(request_id, None)
        self._records[request_id] = _Record(created=now)
        while len(self._records) > self.max_entries:
            self._records.popitem(last=False)

    def record(self, request_id: str, model: str, version: str, role: str, instances: list[Any]) -> Score | None:
        """Remember one version's predictions for a request.

        A mirrored answer may arrive after the labels did: it is scored at once and the
        Score returned, so the caller counts it like any other.
        """
        self._expire(self._clock())
        rec = self._records.get(request_id)
        if rec is None:
            return None
        rec.answers[(model, version, role)] = instances
        if rec.labels is None:
            return None
        return self._score(model, version, role, instances, rec.labels)

    def _score(self, model: str, version: str, role: str, predicted: list[Any], labels: list[Any]) -> Score:
        total = len(labels)
        if len(predicted) != total:
            # Cannot be matched instance by instance: every label counts as missed.
            return Score(model, version, role, total, 0)
        correct = sum(1 for p, y in zip(predicted, labels, strict=True) if values_agree(p, y, self.tolerance))
        return Score(model, version, role, total, correct)

    def apply(self, items: list[FeedbackItem]) -> list[tuple[str, list[Score]]]:
        """Score every item, all or nothing: nothing is counted unless every item is valid.

        Raises UnknownRequests (404) naming ids never seen or expired, FeedbackConflict 400
        when the label count differs from the request's instance count, 409 when a request
        already got its labels (counting twice would skew accuracy), or a batch repeats an id.
        """
        self._expire(self._clock())
        unknown = [i.request_id for i in items if i.request_id not in self._records]
        if unknown:
            raise UnknownRequests(unknown)
        seen: set[str] = set()
        for item in items:
            rec = self._records[item.request_id]
            if item.request_id in seen:
                raise FeedbackConflict(f"request id {item.request_id!r} appears twice in the batch", 409)
            seen.add(item.request_id)
            if rec.labels is not None:
                raise FeedbackConflict(f"request id {item.request_id!r} already has feedback", 409)
            labels = item.label_list()
            for (_model, version, role), predicted in rec.answers.items():
                if len(predicted) != len(labels):
                    raise FeedbackConflict(
                        f"request id {item.request_id!r} had {len(predicted)} instance(s) "
                        f"(answered by version {version} as {role}) but {len(labels)} label(s) were sent",
                        400,
                    )
        results = []
        for item in items:
            rec = self._records[item.request_id]
            rec.labels = item.label_list()
            scores = [self._score(m, v, r, predicted, rec.labels) for (m, v, r), predicted in rec.answers.items()]
            results.append((item.request_id, scores))
        return results
