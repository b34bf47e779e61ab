"""The engine's event bus: what happened, published in the loop's thread as it happens.

The bus carries process state changes, process output (programs with
``stdout_events_enabled``/``stderr_events_enabled``), process groups coming and going, the
supervisor's own state and the clock's ticks; subscribers (the event listener pools of
:mod:`.listeners`, tests, metrics) receive each event synchronously in the loop thread and
must not block. A subscriber that raises is logged and skipped: an observer never breaks
the supervisor.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger("daemonkit.supervisor.events")


@dataclass(frozen=True)
class ProcessStateChanged:
    name: str  # daemonkit's instance name
    group: str
    process_name: str
    from_state: str
    to_state: str
    pid: int | None  # EXITED/STOPPED after an exit: the pid that exited
    expected: bool  # EXITED with an expected exit code (always True for other states)
    tries: int  # consecutive failed starts


@dataclass(frozen=True)
class ProcessLogged:
    """A piece of a program's output, for PROCESS_LOG_STDOUT/STDERR listeners."""

    name: str
    group: str
    process_name: str
    pid: int | None
    channel: str  # "stdout" | "stderr"
    data: bytes


@dataclass(frozen=True)
class Tick:
    """The wall clock entered a new ``period``-second slice (supervisord's TICK_N)."""

    period: int  # 5 | 60 | 3600
    when: int  # the slice's start, seconds since the epoch


@dataclass(frozen=True)
class GroupAdded:
    group: str


@dataclass(frozen=True)
class GroupRemoved:
    group: str


@dataclass(frozen=True)
class SupervisorStateChanged:
    state: str  # "RUNNING" | "STOPPING"


@dataclass(frozen=True)
class RemoteCommunication:
    """supervisord's ``sendRemoteCommEvent``: a message for event listeners."""

    type: str
    data: str


Event = (ProcessStateChanged | ProcessLogged | Tick | GroupAdded | GroupRemoved
         | SupervisorStateChanged | RemoteCommunication)
Subscriber = Callable[[Event], None]


class EventBus:
    def __init__(self) -> None:
        self._subscribers: list[Subscriber] = []

    def subscribe(self, subscriber: Subscriber) -> Callable[[], None]:
        """Returns the function that unsubscribes it."""
        self._subscribers.append(subscriber)

        def unsubscribe() -> None:
            if subscriber in self._subscribers:
                self._subscribers.remove(subscriber)

        return unsubscribe

    def publish(self, event: Event) -> None:
        for subscriber in list(self._subscribers):
            try:
                subscriber(event)
            except Exception:  # an observer must never break the loop
                log.exception("event subscriber %r failed on %r", subscriber, event)
