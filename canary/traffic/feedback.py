"""Ground-truth feedback: remember what each version predicted per request, score it on labels.

A client that later learns the true label of a request it sent posts it to ``POST /feedback``
with the request's id (the ``x-request-id`` the router or comparator returned). Every version that answered
that request — the one that served it and the shadow that got a mirrored copy — is scored, so
accuracy can be compared between stable, canary and shadow on the same traffic.

Labels arrive late — minutes after the prediction when a human or a downstream system
provides them. The memory is bounded twice: by a TTL (default one hour, long enough for
minutes-late labels) and by a number of entries (the oldest are evicted first). A request that
leaves the memory before its labels came is kept a while longer as a small *tombstone* (which
versions answered it, with how many instances; bounded by count too), so that labels arriving
after that are not mistaken for a client's error: they are accepted, counted as **late** (reason
``expired`` past the TTL, ``evicted`` pushed out by the entry limit) and scored on nothing. Only
an id never seen (or forgotten even as a tombstone) is unknown (404).

Every scored (or late) label also says how long after its request it arrived: the label lag,
which the exporters turn into a histogram per version.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic.alias_generators import to_camel

from canary.decision.tolerance import DEFAULT_TOLERANCE, Tolerance
from canary.traffic.calibration import Calibrated, score_instances
from canary.traffic.predictions import predictions_agree

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


EXPIRED = "expired"  # labelled after the TTL
EVICTED = "evicted"  # labelled after the entry limit pushed the request out
LATE_REASONS = (EXPIRED, EVICTED)


@dataclass(frozen=True)
class Score:
    """One version's result on one request's labels.

    ``late`` is set (to a LATE_REASONS value) when the labels came after the predictions were
    dropped: ``total`` labels arrived, none could be scored (``correct`` is 0). ``lag_seconds``
    is how long after the request the labels arrived. ``calibration`` holds the instances whose
    prediction is a probability vector and whose label a class index (canary/traffic/calibration.py).
    """

    model: str
    version: str
    role: str
    total: int
    correct: int
    lag_seconds: float = 0.0
    late: str | None = None
    calibration: tuple[Calibrated, ...] = ()


@dataclass(frozen=True)
class Applied:
    """What one feedback item did: scored every version that answered, or arrived late."""

    request_id: str
    scores: list[Score]
    lag_seconds: float
    late: str | None = None


_Key = tuple[str, str, str]  # (model, version, role)


@dataclass
class _Record:
    created: float
    # (model, version, role) -> that version's per-instance predictions for this request.
    answers: dict[_Key, list[Any]] = field(default_factory=dict)
    labels: list[Any] | None = None
    labelled_at: float | None = None


@dataclass
class _Tombstone:
    """A request dropped before its labels came: enough to count late labels and check them."""

    created: float
    reason: str
    instances: dict[_Key, int]
    labelled: bool = False


class UnknownRequests(LookupError):
    def __init__(self, request_ids: list[str]) -> None:
        self.request_ids = request_ids
        super().__init__(
            "no predictions remembered for request id(s) "
            + ", ".join(repr(r) for r in request_ids)
            + " (unknown, or dropped from the feedback memory so long ago that even its late-label record is gone)"
        )


class FeedbackConflict(ValueError):
    """The labels cannot be applied: wrong count, or the request already has labels."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class PredictionLog:
    """Per request id, the predictions of every version that answered it; bounded and expiring.

    ``max_entries`` bounds the requests remembered with their predictions; ``max_late_entries``
    (default: as many) bounds the tombstones of requests dropped unlabelled. Memory is therefore
    bounded by counts whatever the label lag; the TTL only decides how long a label may take.
    """

    def __init__(
        self,
        max_entries: int = 100_000,
        ttl_seconds: float = 3600.0,
        tolerance: Tolerance = DEFAULT_TOLERANCE,
        clock: Callable[[], float] = time.monotonic,
        max_late_entries: int | None = None,
    ) -> None:
        if max_entries < 1 or ttl_seconds <= 0:
            raise ValueError("max_entries must be >= 1 and ttl_seconds > 0")
        if max_late_entries is not None and max_late_entries < 0:
            raise ValueError("max_late_entries must be >= 0")
        self.max_entries = max_entries
        self.ttl_seconds = ttl_seconds
        self.max_late_entries = max_entries if max_late_entries is None else max_late_entries
        self.tolerance = tolerance
        self._clock = clock
        # Insertion order is creation order, and all entries share one TTL, so the front of
        # the dict is always the next to expire and the first to evict.
        self._records: OrderedDict[str, _Record] = OrderedDict()
        # In the order requests left the memory; the oldest tombstone goes first.
        self._tombstones: OrderedDict[str, _Tombstone] = OrderedDict()

    def __len__(self) -> int:
        """Requests remembered with their predictions now."""
        self._expire(self._clock())
        return len(self._records)

    @property
    def late_entries(self) -> int:
        """Tombstones held: requests dropped unlabelled whose labels would count as late."""
        self._expire(self._clock())
        return len(self._tombstones)

    def __contains__(self, request_id: object) -> bool:
        """Whether labels for this request id would be taken now (scored, or counted late)."""
        self._expire(self._clock())
        return request_id in self._records or request_id in self._tombstones

    def _bury(self, request_id: str, record: _Record, reason: str) -> None:
        if record.labels is not None or self.max_late_entries == 0:
            return  # labelled already: a second label is a conflict either way, no need to keep it
        self._tombstones[request_id] = _Tombstone(
            created=record.created,
            reason=reason,
            instances={key: len(predicted) for key, predicted in record.answers.items()},
        )
        while len(self._tombstones) > self.max_late_entries:
            self._tombstones.popitem(last=False)

    def _expire(self, now: float) -> None:
        while self._records:
            request_id, oldest = next(iter(self._records.items()))
            if now - oldest.created < self.ttl_seconds:
                break
            self._records.popitem(last=False)
            self._bury(request_id, oldest, EXPIRED)

    def start(self, request_id: str) -> None:
        """A new request with this id: forget any earlier one that reused the id."""
        now = self._clock()
        self._expire(now)
        self._records.pop(request_id, None)
        self._tombstones.pop(request_id, None)
        self._records[request_id] = _Record(created=now)
        while len(self._records) > self.max_entries:
            evicted_id, evicted = self._records.popitem(last=False)
            self._bury(evicted_id, evicted, EVICTED)

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
        assert rec.labelled_at is not None
        return self._score((model, version, role), instances, rec.labels, rec.labelled_at - rec.created)

    def _score(self, key: _Key, predicted: list[Any], labels: list[Any], lag: float) -> Score:
        model, version, role = key
        total = len(labels)
        if len(predicted) != total:
            # Cannot be matched instance by instance: every label counts as missed.
            return Score(model, version, role, total, 0, lag)
        correct = sum(1 for p, y in zip(predicted, labels, strict=True) if predictions_agree(p, y, self.tolerance))
        return Score(model, version, role, total, correct, lag, calibration=score_instances(predicted, labels))

    def apply(self, items: list[FeedbackItem]) -> list[Applied]:
        """Score every item, all or nothing: nothing is counted unless every item is valid.

        Items for requests dropped unlabelled are *late*: valid, counted per version that
        answered (Score.late), never scored. Raises UnknownRequests (404) naming ids never seen
        (or forgotten even as tombstones), FeedbackConflict 400 when the label count differs
        from the request's instance count, 409 when a request already got its labels (counting
        twice would skew accuracy), or a batch repeats an id.
        """
        now = self._clock()
        self._expire(now)
        unknown = [
            i.request_id for i in items if i.request_id not in self._records and i.request_id not in self._tombstones
        ]
        if unknown:
            raise UnknownRequests(unknown)
        seen: set[str] = set()
        for item in items:
            if item.request_id in seen:
                raise FeedbackConflict(f"request id {item.request_id!r} appears twice in the batch", 409)
            seen.add(item.request_id)
            rec = self._records.get(item.request_id)
            if rec is not None:
                labelled = rec.labels is not None
                instances = {key: len(predicted) for key, predicted in rec.answers.items()}
            else:
                gone = self._tombstones[item.request_id]
                labelled, instances = gone.labelled, gone.instances
            if labelled:
                raise FeedbackConflict(f"request id {item.request_id!r} already has feedback", 409)
            labels = item.label_list()
            for (_model, version, role), count in instances.items():
                if count != len(labels):
                    raise FeedbackConflict(
                        f"request id {item.request_id!r} had {count} instance(s) "
                        f"(answered by version {version} as {role}) but {len(labels)} label(s) were sent",
                        400,
                    )
        results = []
        for item in items:
            labels = item.label_list()
            rec = self._records.get(item.request_id)
            if rec is None:
                gone = self._tombstones[item.request_id]
                gone.labelled = True
                lag = now - gone.created
                scores = [
                    Score(model, version, role, len(labels), 0, lag, late=gone.reason)
                    for (model, version, role) in gone.instances
                ]
                results.append(Applied(item.request_id, scores, lag, late=gone.reason))
                continue
            rec.labels, rec.labelled_at = labels, now
            lag = now - rec.created
            scores = [self._score(key, predicted, labels, lag) for key, predicted in rec.answers.items()]
            results.append(Applied(item.request_id, scores, lag))
        return results


def feedback_answer(results: list[Applied]) -> dict[str, Any]:
    """``POST /feedback``'s answer: per request, each version's score, or why the labels were late."""
    scored: list[dict[str, Any]] = []
    late: list[dict[str, Any]] = []
    for applied in results:
        if applied.late is not None:
            late.append(
                {
                    "requestId": applied.request_id,
                    "reason": applied.late,
                    "lagSeconds": round(applied.lag_seconds, 3),
                    "versions": [{"version": s.version, "role": s.role, "labels": s.total} for s in applied.scores],
                }
            )
            continue
        scored.append(
            {
                "requestId": applied.request_id,
                "lagSeconds": round(applied.lag_seconds, 3),
                "versions": [
                    {"version": s.version, "role": s.role, "total": s.total, "correct": s.correct}
                    for s in applied.scores
                ],
            }
        )
    return {"scored": scored, "late": late}


def apply_labels(
    batches: Iterable[tuple[PredictionLog, Callable[[Score], None], list[FeedbackItem]]],
    asked_as: Mapping[str, str] | None = None,
) -> tuple[int, dict[str, Any]]:
    """``POST /feedback`` for the router and the shadow comparator: the HTTP status and body.

    Each batch is a prediction log, what counts a score (the serving metrics of that log's
    rollout) and the labels for requests that log remembers; a batch is applied all or nothing.
    ``asked_as`` maps a request id back to the one the client used (the comparator keys its
    memory by CloudEvent id and also accepts the client's X-Request-Id).
    """
    results: list[Applied] = []
    try:
        for log, observe, items in batches:
            applied = log.apply(items)
            for one in applied:
                for score in one.scores:
                    observe(score)
            results.extend(applied)
    except UnknownRequests as err:
        return 404, {"error": str(err)}
    except FeedbackConflict as err:
        return err.status, {"error": str(err)}
    if asked_as:
        results = [replace(one, request_id=asked_as.get(one.request_id, one.request_id)) for one in results]
    return 200, feedback_answer(results)
