"""The engine's event bus: what happened, published in the loop's thread as it happens.

Today the bus carries process state changes, process groups coming and going, and the
supervisor's own state; subscribers (the future event listeners of supervisord's protocol,
tests, metrics) receive each event synchronously in the loop thread and must not block. A
subscriber that raises is logged and skipped: an observer never breaks the supervisor.
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
    pid: int | None
    expected: bool  # EXITED with an expected exit code (always True for other states)
    tries: int  # consecutive failed starts


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


Event = (ProcessStateChanged | GroupAdded | GroupRemoved | SupervisorStateChanged
         | RemoteCommunication)
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
