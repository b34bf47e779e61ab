"""Requests per second over the last minute, cheap enough to feed from the I/O loop.

The loop calls :meth:`RateMeter.add` once per turn, not once per request; the meter keeps one
counter per second in a 60-slot ring. :meth:`per_second` is the number of requests of the
last 60 seconds divided by 60: a rate, the same figure whether the daemon has run for a
second or a day (a young daemon's missing seconds count as idle), like a load average.
Reads from another thread may see a count one turn old, which is fine for ``status``.
"""

from __future__ import annotations

import time
from collections.abc import Callable

WINDOW_S = 60


class RateMeter:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._slots = [0] * WINDOW_S
        self._second = int(self._clock())
        self.total = 0

    def add(self, count: int) -> None:
        now = int(self._clock())
        if now != self._second:
            self._advance(now)
        self._slots[now % WINDOW_S] += count
        self.total += count

    def per_second(self) -> float:
        """Mean requests per second over the last 60 seconds."""
        now = int(self._clock())
        # the slots still valid: the seconds of the last minute up to the last add()
        first = max(now, self._second) - WINDOW_S + 1
        total = sum(self._slots[s % WINDOW_S] for s in range(first, self._second + 1))
        return total / WINDOW_S

    def _advance(self, now: int) -> None:
        gap = now - self._second
        if gap >= WINDOW_S:
            self._slots = [0] * WINDOW_S
        else:
            for second in range(self._second + 1, now + 1):
                self._slots[second % WINDOW_S] = 0
        self._second = now
