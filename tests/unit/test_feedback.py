"""The prediction log behind POST /feedback: bounded, expiring, all-or-nothing scoring, label lag,
late labels and calibration."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from canary.traffic.calibration import Calibrated
from canary.traffic.feedback import (
    EVICTED,
    EXPIRED,
    Applied,
    FeedbackConflict,
    FeedbackItem,
    FeedbackRequest,
    PredictionLog,
    Score,
    UnknownRequests,
    feedback_answer,
)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def item(request_id: str, labels: list[object]) -> FeedbackItem:
    return FeedbackItem(request_id=request_id, labels=labels)


def test_scores_every_version_that_answered() -> None:
    log = PredictionLog(clock=Clock())
    log.start("r1")
    log.record("r1", "iris", "1", "stable", [0, 1, 2])
    log.record("r1", "iris", "2", "shadow", [0, 0, 0])
    (applied,) = log.apply([item("r1", [0, 1, 1])])
    assert applied == Applied(
        "r1", [Score("iris", "1", "stable", 3, 2), Score("iris", "2", "shadow", 3, 1)], lag_seconds=0.0
    )


def test_a_late_answer_is_scored_when_it_arrives() -> None:
    log = PredictionLog(clock=Clock())
    log.start("r1")
    log.record("r1", "iris", "1", "stable", [2])
    log.apply([item("r1", [2])])
    assert log.record("r1", "iris", "2", "shadow", [2]) == Score("iris", "2", "shadow", 1, 1)
    assert log.record("unknown", "iris", "2", "shadow", [2]) is None


def test_expired_requests_are_late_not_scored() -> None:
    clock = Clock()
    log = PredictionLog(ttl_seconds=60, clock=clock)
    log.start("old")
    log.record("old", "iris", "1", "stable", [1])
    log.record("old", "iris", "2", "shadow", [1])
    clock.now += 30
    log.start("new")
    log.record("new", "iris", "1", "stable", [1])
    clock.now += 31
    assert len(log) == 1 and log.late_entries == 1
    assert "old" in log  # labels for it are still taken: counted late
    (late,) = log.apply([item("old", [1])])
    assert late == Applied(
        "old",
        [
            Score("iris", "1", "stable", 1, 0, lag_seconds=61.0, late=EXPIRED),
            Score("iris", "2", "shadow", 1, 0, lag_seconds=61.0, late=EXPIRED),
        ],
        lag_seconds=61.0,
        late=EXPIRED,
    )
    assert log.apply([item("new", [1])])[0].scores == [Score("iris", "1", "stable", 1, 1, lag_seconds=31.0)]
    assert len(log) == 1
    with pytest.raises(UnknownRequests) as raised:
        log.apply([item("never-seen", [1])])
    assert raised.value.request_ids == ["never-seen"]
    assert "'never-seen'" in str(raised.value) and "feedback memory" in str(raised.value)


def test_oldest_entries_are_evicted_first() -> None:
    log = PredictionLog(max_entries=2, clock=Clock())
    for rid in ("a", "b", "c"):
        log.start(rid)
        log.record(rid, "iris", "1", "stable", [0])
    assert len(log) == 2
    (evicted,) = log.apply([item("a", [0])])
    assert evicted.late == EVICTED and evicted.scores == [Score("iris", "1", "stable", 1, 0, late=EVICTED)]
    assert [a.late for a in log.apply([item("b", [0]), item("c", [0])])] == [None, None]


def test_a_reused_request_id_starts_afresh() -> None:
    log = PredictionLog(clock=Clock())
    log.start("r")
    log.record("r", "iris", "1", "stable", [0, 0])
    log.start("r")
    log.record("r", "iris", "1", "stable", [1])
    assert log.apply([item("r", [1])])[0].scores == [Score("iris", "1", "stable", 1, 1, lag_seconds=0.0)]


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


# --- label lag, late labels ----------------------------------------------------------------------


def test_label_lag_is_from_the_request_to_the_labels() -> None:
    clock = Clock()
    log = PredictionLog(clock=clock)
    log.start("r")
    clock.now += 0.25
    log.record("r", "iris", "1", "stable", [2])  # the answer's own time does not count
    clock.now += 89.75
    (applied,) = log.apply([item("r", [2])])
    assert applied.lag_seconds == 90.0
    assert applied.scores == [Score("iris", "1", "stable", 1, 1, lag_seconds=90.0)]
    # A shadow answering after the labels is scored with the lag the labels had, not later.
    clock.now += 5
    assert log.record("r", "iris", "2", "shadow", [0]) == Score("iris", "2", "shadow", 1, 0, lag_seconds=90.0)


def test_late_labels_are_checked_like_fresh_ones_and_counted_once() -> None:
    clock = Clock()
    log = PredictionLog(ttl_seconds=10, clock=clock)
    for rid in ("gone", "fresh-later"):
        log.start(rid)
        log.record(rid, "iris", "1", "stable", [0, 1])
    clock.now += 11
    log.start("fresh")
    log.record("fresh", "iris", "1", "stable", [1])
    with pytest.raises(FeedbackConflict) as wrong_count:
        log.apply([item("gone", [0])])
    assert wrong_count.value.status == 400 and "2 instance(s)" in str(wrong_count.value)
    with pytest.raises(UnknownRequests):  # all or nothing: the late one is not used up
        log.apply([item("gone", [0, 1]), item("nope", [1])])
    mixed = log.apply([item("fresh", [1]), item("gone", [0, 1])])
    assert [(a.request_id, a.late) for a in mixed] == [("fresh", None), ("gone", EXPIRED)]
    assert mixed[1].lag_seconds == 11.0 and mixed[1].scores[0].total == 2
    with pytest.raises(FeedbackConflict) as again:
        log.apply([item("gone", [0, 1])])
    assert again.value.status == 409 and "already has feedback" in str(again.value)
    with pytest.raises(FeedbackConflict) as twice:
        log.apply([item("fresh-later", [0, 1]), item("fresh-later", [0, 1])])
    assert twice.value.status == 409


def test_late_records_are_bounded_and_labelled_requests_leave_none() -> None:
    clock = Clock()
    log = PredictionLog(max_entries=2, ttl_seconds=100, clock=clock, max_late_entries=2)
    log.start("labelled")
    log.record("labelled", "iris", "1", "stable", [0])
    log.apply([item("labelled", [0])])
    for rid in ("a", "b", "c", "d"):
        log.start(rid)
    # "labelled" and "a" were pushed out; only "a" (unlabelled) is kept as late, then "b".
    assert len(log) == 2 and log.late_entries == 2
    with pytest.raises(UnknownRequests):
        log.apply([item("labelled", [0])])
    assert log.apply([item("a", [0])])[0].late == EVICTED
    clock.now += 200  # "c" and "d" expire: the oldest late records ("a", "b") make room
    assert len(log) == 0 and log.late_entries == 2
    with pytest.raises(UnknownRequests):
        log.apply([item("b", [0])])
    assert {a.late for a in log.apply([item("c", [0]), item("d", [0])])} == {EXPIRED}


def test_a_late_request_nobody_answered_counts_for_no_version() -> None:
    clock = Clock()
    log = PredictionLog(ttl_seconds=10, clock=clock)
    log.start("failed")  # the model answered 5xx: nothing recorded
    clock.now += 12
    assert log.apply([item("failed", ["x"])]) == [Applied("failed", [], 12.0, late=EXPIRED)]


def test_a_reused_id_is_a_new_request_not_a_late_one() -> None:
    clock = Clock()
    log = PredictionLog(ttl_seconds=10, clock=clock)
    log.start("r")
    log.record("r", "iris", "1", "stable", [0])
    clock.now += 11
    log.start("r")
    log.record("r", "iris", "1", "stable", [1])
    assert log.apply([item("r", [1])]) == [Applied("r", [Score("iris", "1", "stable", 1, 1)], 0.0)]


def test_no_late_memory_makes_every_dropped_request_unknown() -> None:
    clock = Clock()
    log = PredictionLog(ttl_seconds=10, clock=clock, max_late_entries=0)
    log.start("r")
    clock.now += 10
    assert "r" not in log
    with pytest.raises(UnknownRequests):
        log.apply([item("r", [0])])


def test_settings_of_the_late_memory_are_checked() -> None:
    with pytest.raises(ValueError):
        PredictionLog(max_late_entries=-1)


# --- probabilities -----------------------------------------------------------------------------


def test_probability_predictions_are_scored_by_their_top_class_and_calibrated() -> None:
    log = PredictionLog(clock=Clock())
    log.start("r")
    log.record("r", "iris", "1", "stable", [[0.7, 0.2, 0.1], [0.1, 0.1, 0.8], [0.3, 0.3, 0.4]])
    log.record("r", "iris", "2", "shadow", [0, 2, 2])  # labels only: no calibration
    (applied,) = log.apply([item("r", [0, 2, 1])])
    stable, shadow = applied.scores
    assert (stable.total, stable.correct) == (3, 2)
    # (0.3² + 0.2² + 0.1²), (0.1² + 0.1² + 0.2²), (0.3² + 0.7² + 0.4²)
    briers = [c.brier for c in stable.calibration]
    assert briers == pytest.approx([0.14, 0.06, 0.74])
    assert [(c.confidence, c.correct) for c in stable.calibration] == [(0.7, True), (0.8, True), (0.4, False)]
    assert (shadow.correct, shadow.calibration) == (2, ())


def test_labels_that_are_not_class_indices_are_wrong_and_not_calibrated() -> None:
    log = PredictionLog(clock=Clock())
    log.start("r")
    log.record("r", "iris", "1", "stable", [[0.6, 0.4], [0.6, 0.4], [0.6, 0.4], [0.6, 0.4]])
    (applied,) = log.apply([item("r", ["setosa", None, 0.0, 5])])
    (score,) = applied.scores
    assert score.correct == 1  # 0.0 is class 0
    # "setosa" and None have no index; 5 is beyond the vector: the true class got probability 0.
    assert score.calibration == (
        Calibrated(pytest.approx(0.16 + 0.16), 0.6, True),
        Calibrated(pytest.approx(0.36 + 0.16 + 1), 0.6, False),
    )


def test_feedback_answer_lists_scored_and_late() -> None:
    answer = feedback_answer(
        [
            Applied("a", [Score("iris", "1", "stable", 2, 1, 1.23456)], 1.23456),
            Applied("b", [Score("iris", "1", "stable", 3, 0, 4000.0, late=EXPIRED)], 4000.0, late=EXPIRED),
        ]
    )
    assert answer == {
        "scored": [
            {"requestId": "a", "lagSeconds": 1.235, "versions": [{"version": "1", "role": "stable", "total": 2, "correct": 1}]}
        ],
        "late": [
            {"requestId": "b", "reason": "expired", "lagSeconds": 4000.0, "versions": [{"version": "1", "role": "stable", "labels": 3}]}
        ],
    }
