"""The prediction log behind POST /feedback: bounded, expiring, all-or-nothing scoring."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from canary.feedback import (
    FeedbackConflict,
    FeedbackItem,
    FeedbackRequest,
    PredictionLog,
    Score,
    UnknownRequests,
)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def item(request_id: str, labels: list[object]) -> FeedbackItem:
    return FeedbackItem(request_id=request_id, labels=labels)


def test_scores_every_version_that_answered() -> None:
    log = PredictionLog()
    log.start("r1")
    log.record("r1", "iris", "1", "stable", [0, 1, 2])
    log.record("r1", "iris", "2", "shadow", [0, 0, 0])
    ((rid, scores),) = log.apply([item("r1", [0, 1, 1])])
    assert rid == "r1"
    assert scores == [Score("iris", "1", "stable", 3, 2), Score("iris", "2", "shadow", 3, 1)]


def test_a_late_answer_is_scored_when_it_arrives() -> None:
    log = PredictionLog()
    log.start("r1")
    log.record("r1", "iris", "1", "stable", [2])
    log.apply([item("r1", [2])])
    assert log.record("r1", "iris", "2", "shadow", [2]) == Score("iris", "2", "shadow", 1, 1)
    assert log.record("unknown", "iris", "2", "shadow", [2]) is None


def test_expired_requests_are_unknown() -> None:
    clock = Clock()
    log = PredictionLog(ttl_seconds=60, clock=clock)
    log.start("old")
    log.record("old", "iris", "1", "stable", [1])
    clock.now += 30
    log.start("new")
    log.record("new", "iris", "1", "stable", [1])
    clock.now += 31
    with pytest.raises(UnknownRequests) as raised:
        log.apply([item("old", [1])])
    assert raised.value.request_ids == ["old"]
    assert "'old'" in str(raised.value) and "TTL" in str(raised.value)
    assert log.apply([item("new", [1])])[0][1] == [Score("iris", "1", "stable", 1, 1)]
    assert len(log) == 1


def test_oldest_entries_are_evicted_first() -> None:
    log = PredictionLog(max_entries=2)
    for rid in ("a", "b", "c"):
        log.start(rid)
        log.record(rid, "iris", "1", "stable", [0])
    assert len(log) == 2
    with pytest.raises(UnknownRequests):
        log.apply([item("a", [0])])
    log.apply([item("b", [0]), item("c", [0])])


def test_a_reused_request_id_starts_afresh() -> None:
    log = PredictionLog()
    log.start("r")
    log.record("r", "iris", "1", "stable", [0, 0])
    log.start("r")
    log.record("r", "iris", "1", "stable", [1])
    assert log.apply([item("r", [1])])[0][1] == [Score("iris", "1", "stable", 1, 1)]


def test_batches_are_all_or_nothing() -> None:
    log = PredictionLog()
    for rid in ("a", "b"):
        log.start(rid)
        log.record(rid, "iris", "1", "stable", [0, 1])
    with pytest.raises(UnknownRequests) as raised:
        log.apply([item("a", [0, 1]), item("zz", [0])])
    assert raised.value.request_ids == ["zz"]
    with pytest.raises(FeedbackConflict) as conflict:
        log.apply([item("a", [0, 1]), item("b", [0])])
    assert conflict.value.status == 400 and "2 instance(s)" in str(conflict.value)
    with pytest.raises(FeedbackConflict) as twice:
        log.apply([item("a", [0, 1]), item("a", [0, 1])])
    assert twice.value.status == 409
    # None of the failed batches used "a": it can still be scored, once.
    log.apply([item("a", [0, 1])])
    with pytest.raises(FeedbackConflict) as again:
        log.apply([item("a", [0, 1])])
    assert again.value.status == 409 and "already has feedback" in str(again.value)


def test_settings_are_checked() -> None:
    with pytest.raises(ValueError):
        PredictionLog(max_entries=0)
    with pytest.raises(ValueError):
        PredictionLog(ttl_seconds=0)


def test_request_forms() -> None:
    single = FeedbackRequest.model_validate({"requestId": "r", "label": "setosa"})
    assert [(i.request_id, i.label_list()) for i in single.items] == [("r", ["setosa"])]
    several = FeedbackRequest.model_validate({"requestId": "r", "labels": [1, 2]})
    assert several.items[0].label_list() == [1, 2]
    null_label = FeedbackRequest.model_validate({"requestId": "r", "label": None})
    assert null_label.items[0].label_list() == [None]
    batch = FeedbackRequest.model_validate(
        {"items": [{"requestId": "a", "label": 1}, {"requestId": "b", "labels": [0]}]}
    )
    assert [i.request_id for i in batch.items] == ["a", "b"]


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({"label": 1}, "requestId"),
        ({"requestId": "r"}, "exactly one of 'label'"),
        ({"requestId": "r", "label": 1, "labels": [1]}, "exactly one of 'label'"),
        ({"requestId": "r", "labels": []}, "non-empty list"),
        ({"requestId": "", "label": 1}, "requestId"),
        ({"items": []}, "items"),
        ({"items": [{"requestId": "a", "label": 1}], "requestId": "b"}, "either 'items'"),
        ({"requestId": "r", "label": 1, "extra": True}, "extra"),
    ],
)
def test_bad_requests_name_the_problem(body: dict[str, object], needle: str) -> None:
    with pytest.raises(ValidationError) as raised:
        FeedbackRequest.model_validate(body)
    assert needle in str(raised.value)
