"""The routing document the controller sends, and how the router applies it."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from canary.traffic.mirror import Target
from canary.traffic.router import RouterSettings, RouterState, RoutingDocument, Upstream


def doc(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "model": "iris",
        "stable": {"version": "1", "url": "http://127.0.0.1:8001"},
        "candidate": {"version": "2", "url": "http://127.0.0.1:8002/"},
        "candidateRole": "canary",
        "candidateWeight": 10,
    }
    base.update(changes)
    return base


def test_camel_case_on_the_wire() -> None:
    routing = RoutingDocument.model_validate(doc())
    assert routing.candidate_weight == 10 and routing.shadow_percent == 0
    assert routing.candidate == Upstream(version="2", url="http://127.0.0.1:8002")  # trailing slash dropped
    assert routing.model_dump(by_alias=True)["candidateRole"] == "canary"
    assert routing.label_sets() == [("1", "stable"), ("2", "canary")]


def test_what_the_local_platform_sends_is_accepted() -> None:
    RoutingDocument.model_validate(
        {"model": "iris", "stable": {"version": "3", "url": "http://127.0.0.1:1"}, "candidate": None}
    )
    RoutingDocument.model_validate(doc(candidateRole="shadow", candidateWeight=0, shadowPercent=100))
    RoutingDocument.model_validate(doc(candidateWeight=0, shadowPercent=0))


@pytest.mark.parametrize(
    ("changes", "needle"),
    [
        ({"candidateWeight": 101}, "candidateWeight"),
        ({"shadowPercent": 5}, "shadowPercent is only for candidateRole 'shadow'"),
        ({"candidateRole": "shadow"}, "candidateWeight is only for candidateRole 'canary'"),
        ({"candidateRole": None}, "candidateRole is required"),
        ({"candidateRole": "blue"}, "candidateRole"),
        ({"candidate": None}, "need a candidate"),
        ({"candidate": {"version": "1", "url": "http://127.0.0.1:8002"}}, "must differ from stable.version"),
        ({"stable": {"version": "1", "url": "127.0.0.1:8001"}}, "http(s) base URL"),
        ({"stable": {"version": "1", "url": "http://127.0.0.1:99999"}}, "bad port"),
        ({"stable": {"version": "1", "url": "http://127.0.0.1:1/x?y"}}, "without path"),
        ({"model": "a/b"}, "model"),
        ({"model": ""}, "model"),
        ({"candidate_weight": 10}, "candidate_weight"),  # both spellings at once: one is an unknown field
        ({"stable": {"version": "1", "url": "http://127.0.0.1:1", "port": 1}}, "port"),
        ({"baseline": {"version": "1", "url": "http://127.0.0.1:8003"}}, "baseline is only for candidateRole 'shadow'"),
        (
            {"candidateRole": "shadow", "candidateWeight": 0, "baseline": {"version": "2", "url": "http://127.0.0.1:8003"}},
            "baseline.version must be the stable's ('1')",
        ),
        (
            {"candidateRole": "shadow", "candidateWeight": 0, "baseline": {"version": "1", "url": "http://127.0.0.1:8001"}},
            "baseline.url must be a server of its own",
        ),
    ],
)
def test_bad_routing_names_the_field(changes: dict[str, Any], needle: str) -> None:
    with pytest.raises(ValidationError) as raised:
        RoutingDocument.model_validate(doc(**changes))
    assert needle in str(raised.value)


def test_a_shadow_with_a_baseline_measures_the_stable_under_role_baseline() -> None:
    body = doc(candidateRole="shadow", candidateWeight=0, shadowPercent=100, baseline={"version": "1", "url": "http://127.0.0.1:8003"})
    routing = RoutingDocument.model_validate(body)
    assert routing.label_sets() == [("1", "stable"), ("2", "shadow"), ("1", "baseline")]
    assert routing.wire()["baseline"] == {"version": "1", "url": "http://127.0.0.1:8003"}
    assert "baseline" not in RoutingDocument.model_validate(doc()).wire()  # left out when not given
    state = RouterState(RouterSettings(rollout="r"))
    state.apply(routing)
    assert state.applied is not None
    assert state.applied.shadow_for_this_request() == (Target("2", "http://127.0.0.1:8002"), Target("1", "http://127.0.0.1:8003"))


def test_applying_the_same_routing_again_is_a_no_op() -> None:
    state = RouterState(RouterSettings(rollout="r"))
    routing = RoutingDocument.model_validate(doc(candidateWeight=30))
    assert state.apply(routing) is True
    applied = state.applied
    assert applied is not None
    picks = [applied.choose()[1] for _ in range(4)]  # a partly dealt deck
    assert state.apply(RoutingDocument.model_validate(doc(candidateWeight=30))) is False
    assert state.applied is applied
    picks += [applied.choose()[1] for _ in range(6)]
    assert picks.count("canary") == 3  # the deck went on where it was


def test_a_changed_share_deals_a_new_deck_and_keeps_the_other() -> None:
    state = RouterState(RouterSettings(rollout="r"))
    state.apply(RoutingDocument.model_validate(doc(candidateWeight=30)))
    first = state.applied
    assert first is not None
    state.apply(RoutingDocument.model_validate(doc(candidateWeight=50)))
    second = state.applied
    assert second is not None and second is not first
    assert second.canary_deck is not first.canary_deck
    assert second.shadow_deck is first.shadow_deck


def test_shadow_routing_mirrors_and_serves_stable() -> None:
    state = RouterState(RouterSettings(rollout="r"))
    state.apply(RoutingDocument.model_validate(doc(candidateRole="shadow", candidateWeight=0, shadowPercent=50)))
    applied = state.applied
    assert applied is not None
    assert {applied.choose()[1] for _ in range(10)} == {"stable"}
    mirrored = [applied.shadow_for_this_request() for _ in range(10)]
    assert sum(m is not None for m in mirrored) == 5
    target = Target("2", "http://127.0.0.1:8002")
    assert state.is_current_shadow(target)
    state.apply(RoutingDocument.model_validate(doc()))  # the shadow became a canary
    assert not state.is_current_shadow(target)
