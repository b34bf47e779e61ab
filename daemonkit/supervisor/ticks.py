"""supervisord's TICK_5 / TICK_60 / TICK_3600: one timer, armed for the next 5 s boundary.

A tick is due when the wall clock enters a new slice of its period (``when`` is the slice's
start, as supervisord's ``timeslice``). The loop sleeps until the timer's deadline like any
other; nothing is scanned per loop turn, and the timer is off while no listener wants ticks.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from .events import Tick

PERIODS = (5, 60, 3600)
_LATE_S = 0.002  # wake just after the boundary, never just before it


def timeslice(period: int, when: float) -> int:
    return int(when - (when % period))


class TickClock:
    """A timer of the engine's loop: ``deadline`` (monotonic) and ``on_timer``."""

    def __init__(self, publish: Callable[[Tick], None]) -> None:
        self.publish = publish
        self.deadline: float | None = None
        self.periods: frozenset[int] = frozenset()
        self.last: dict[int, int] = {}

    def want(self, periods: set[int]) -> None:
        """Tick for these periods (none: the timer stops)."""
        self.periods = frozenset(periods)
        if not self.periods:
            self.deadline = None
            return
        now = time.time()
        for period in PERIODS:
            self.last.setdefault(period, timeslice(period, now))
        self._arm(now)

    def _arm(self, now: float) -> None:
        step = min(self.periods)
        self.deadline = time.monotonic() + (step - now % step) + _LATE_S

    def on_timer(self, now_monotonic: float) -> None:
        if self.deadline is None or now_monotonic < self.deadline:
            return
        now = time.time()
        for period in PERIODS:
            this = timeslice(period, now)
            if this != self.last.get(period):
                self.last[period] = this
                if period in self.periods:
                    self.publish(Tick(period, this))
        self._arm(now)
