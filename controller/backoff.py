"""Exponential back-off for the registry poll, shared by the local runner and the operator."""

from __future__ import annotations


class Backoff:
    """Exponential back-off for the registry poll: 1 s, 2 s, 4 s … capped, reset on success."""

    def __init__(self, first: float = 1.0, cap: float = 30.0):
        self.first, self.cap = first, cap
        self.failures = 0
        self.next_try = 0.0

    def ready(self, clock: float) -> bool:
        return clock >= self.next_try

    def failed(self, clock: float) -> None:
        self.next_try = clock + min(self.cap, self.first * 2**self.failures)
        self.failures += 1

    def succeeded(self) -> None:
        self.failures, self.next_try = 0, 0.0
