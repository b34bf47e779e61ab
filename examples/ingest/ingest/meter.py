"""Requests per second over the last minute, cheap enough to feed from the I/O loop.

The loop calls :meth:`RateMeter.add` once per burst of requests, not once per request; the
meter keeps one counter per second in a 60-slot ring. Reads from another thread may see a
count one burst old, which is fine for ``status``.
"""

from __future__ import annotations

import time

WINDOW_S = 60


class RateMeter:
    def __init__(self) -> None:
        self._clock = time.monotonic
        self._slots = [0] * WINDOW_S
        self._second = int(self._clock())
        self._started = self._clock()
        self.total = 0

    def add(self, count: int) -> None:
        now = int(self._clock())
        if now != self._second:
            self._advance(now)
        self._slots[now % WINDOW_S] += count
        self.total += count

    def per_second(self) -> float:
        """Mean rate over the last full minute (or since start, if younger)."""
        now_f = self._clock()
        now = int(now_f)
        if now - self._second >= WINDOW_S:
            return 0.0
        # the slots still valid: seconds in (now - WINDOW_S, self._second]
        total = sum(self._slots[s % WINDOW_S]
                    for s in range(max(now - WINDOW_S + 1, self._second - WINDOW_S + 1),
                                   self._second + 1))
        span = min(float(WINDOW_S), max(now_f - self._started, 1.0))
        return total / span

    def _advance(self, now: int) -> None:
        gap = now - self._second
        if gap >= WINDOW_S:
            self._slots = [0] * WINDOW_S
        else:
            for second in range(self._second + 1, now + 1):
                self._slots[second % WINDOW_S] = 0
        self._second = now
