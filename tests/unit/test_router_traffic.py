"""The share deck: exact shares per deck, random order within it."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from canary.traffic.deck import ShareDeck


@given(percent=st.integers(0, 100), seed=st.integers(0, 2**32 - 1))
def test_every_hundred_calls_realise_the_share_exactly(percent: int, seed: int) -> None:
    deck = ShareDeck(percent, random.Random(seed))
    assert sum(deck.take() for _ in range(100)) == percent
    assert sum(deck.take() for _ in range(300)) == 3 * percent


@given(percent=st.integers(0, 100), calls=st.integers(1, 1000), seed=st.integers(0, 2**32 - 1))
def test_the_share_is_never_off_by_more_than_one_deck(percent: int, calls: int, seed: int) -> None:
    deck = ShareDeck(percent, random.Random(seed))
    taken = sum(deck.take() for _ in range(calls))
    # A deck holds at most 100 cards, of which `percent` say yes: the running count can lead
    # or lag the ideal by less than one deck's worth of yes cards.
    assert abs(taken - calls * percent / 100) <= percent + 1e-9


def test_small_fractions_use_small_decks() -> None:
    deck = ShareDeck(10, random.Random(1))
    for _ in range(20):
        assert sum(deck.take() for _ in range(10)) == 1  # 10% is 1 in every 10, not 10 in 100


def test_order_is_not_periodic() -> None:
    """A fixed round robin would pick the same positions in every deck."""
    deck = ShareDeck(10, random.Random(7))
    positions = set()
    for _ in range(30):
        picks = [deck.take() for _ in range(10)]
        positions.add(picks.index(True))
    assert len(positions) > 3


def test_zero_and_hundred_never_draw() -> None:
    assert not any(ShareDeck(0).take() for _ in range(50))
    assert all(ShareDeck(100).take() for _ in range(50))


@pytest.mark.parametrize("percent", [-1, 101])
def test_out_of_range_is_refused(percent: int) -> None:
    with pytest.raises(ValueError, match="between 0 and 100"):
        ShareDeck(percent)
