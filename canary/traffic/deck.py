"""How a percentage becomes per-request decisions, wherever requests are shared out.

The router uses it twice: which requests a canary serves (``candidateWeight``), and which
requests are mirrored to a shadow (``shadowPercent``); the shadow comparator uses it for which
paired requests it replays to a shadow (a target's ``percent``).

A plain random draw per request drifts: at 10% over 1000 requests the realised share is only
within ±3 points 99.7% of the time, and the analysis reads that share as traffic. A fixed
round robin (every 10th request) is exact but periodic, and a load generator that cycles through
a dataset would then show the canary the same few rows forever, biasing accuracy and agreement.

So the router deals from a shuffled deck: the percentage is reduced to its smallest fraction
``k/n`` (10% -> 1/10, 35% -> 7/20), each deck holds ``k`` "yes" cards among ``n``, and a new
shuffled deck is dealt when one runs out. Every full deck realises the share exactly, the error
at any moment is below one deck, and the order within a deck is random.
"""

from __future__ import annotations

import math
import random


class ShareDeck:
    """Says "yes" for exactly ``percent``% of calls per deck, in a random order within the deck."""

    def __init__(self, percent: int, rng: random.Random | None = None) -> None:
        if not 0 <= percent <= 100:
            raise ValueError(f"percent must be between 0 and 100, got {percent}")
        self.percent = percent
        divisor = math.gcd(percent, 100) or 100
        self._yes = percent // divisor
        self._size = 100 // divisor
        self._rng = rng or random.Random()
        self._deck: list[bool] = []

    def take(self) -> bool:
        if self._yes == 0:
            return False
        if self._yes == self._size:
            return True
        if not self._deck:
            deck = [True] * self._yes + [False] * (self._size - self._yes)
            self._rng.shuffle(deck)
            self._deck = deck
        return self._deck.pop()
