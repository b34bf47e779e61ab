"""How writer threads hand acknowledgements back to the I/O thread.

A deque (appends and pops are atomic under the GIL) plus an eventfd that the I/O thread polls
beside its ROUTER socket. This replaced an inproc PUSH/PULL pair that pickled every batch:
per COMMIT that pair cost a pickle on each side, libzmq's own signalling (a getpid fork check,
a poll and an eventfd write in the writer) and a receive call that drops and retakes the GIL,
where this costs one eventfd write and one read. Measured under the 64-client bench load: the
writer's and the I/O thread's CPU per request fell by 1-3 us each (bench/ingest.md).

Only the I/O thread ever touches the ROUTER socket; the eventfd is not a ZeroMQ socket, so
"each socket used by one thread only" still holds.
"""

from __future__ import annotations

import collections
import os
from typing import Generic, TypeVar

Item = TypeVar("Item")


class AckChannel(Generic[Item]):
    """Many writers put, one reader takes; the reader sleeps in poll on :attr:`fd`."""

    def __init__(self) -> None:
        self._items: collections.deque[Item] = collections.deque()
        self.fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)

    def put(self, item: Item) -> None:
        self._items.append(item)
        # after the append: a reader that wakes for this write finds the item
        os.eventfd_write(self.fd, 1)

    def take_all(self) -> list[Item]:
        """Everything put so far. Call when :attr:`fd` polls readable."""
        try:
            os.eventfd_read(self.fd)  # reset first, so a put racing with us wakes us again
        except BlockingIOError:
            pass
        items = []
        popleft = self._items.popleft
        while True:
            try:
                items.append(popleft())
            except IndexError:
                return items

    def close(self) -> None:
        os.close(self.fd)
