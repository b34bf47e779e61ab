"""Writer threads: each owns one database connection and group-commits requests.

A writer blocks for one burst of requests (what the I/O thread read in one turn), takes
whatever else is queued up to ``max_batch_records``, stores it all in one transaction
(:meth:`Store.store`), and only then hands the replies back to the I/O thread, which owns the
ROUTER socket. Under load the time one COMMIT takes lets the next group build up: one fsync
covers the records of dozens of clients.

A writer never sees a ZeroMQ socket or an envelope: each request carries an opaque token of
the I/O thread's (who asked), which comes back beside its reply.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import setproctitle

from . import protocol
from .acks import AckChannel
from .settings import SettingsRef
from .stores import PermanentError, Store, TransientError

STOP = None  # queue marker: the writer that takes it finishes
WRITER_DONE = None  # ack channel marker: a writer has finished
PING_INTERVAL_S = 5.0
RECONNECT_BACKOFF_S = (0.1, 0.2, 0.5, 1.0, 2.0)

#: one request on its way to a writer: (the I/O thread's token, rows)
Request = tuple[Any, list[protocol.Row]]
#: what the queue carries: the requests the I/O thread read in one go, with their number
#: of records, counted there once so that the writer need not loop again
Burst = tuple[list[Request], int]
#: I/O thread -> writers: bursts, then one STOP per writer
Requests = queue.SimpleQueue[Burst | None]
#: one reply: (the request's token, reply bytes)
Ack = tuple[Any, bytes]
#: one committed group's replies on their way back
Acks = AckChannel[list[Ack] | None]


@dataclass
class WriterStats:
    batches: int = 0
    in_commit: int = 0  # requests of the batch being committed now
    commit_seconds: float = 0.0  # time spent in store() for successful batches
    requests: int = 0
    records_stored: int = 0
    duplicates: int = 0
    transient_failures: int = 0
    rejected: int = 0
    db_reachable: bool = False
    last_ok_at: float = 0.0
    last_error: str | None = None
    last_error_at: float = 0.0



class Writer(threading.Thread):
    """Owns one database connection; commits batches of requests, hands back their acks."""

    def __init__(self, index: int, requests: Requests, acks: Acks,
                 *, make_store: Callable[[], Store], settings: SettingsRef,
                 log: logging.Logger) -> None:
        super().__init__(name=f"ingestd-writer-{index}", daemon=True)
        #: the OS allows 15 characters, which "ingestd-writer-10" would not fit
        self.os_name = f"ingestd-w{index}"
        self.requests = requests
        self.acks = acks
        self.make_store = make_store
        self.settings = settings
        self.log = log
        self.stats = WriterStats()
        self._store: Store | None = None
        #: set after the first connection attempt, so that readiness means "writers ready"
        self.first_attempt_done = threading.Event()
        self._next_connect_at = 0.0
        self._failures_in_a_row = 0

    def run(self) -> None:
        setproctitle.setthreadtitle(self.os_name)  # as the I/O thread does: see Intake.run
        try:
            self._serve()
        except BaseException:
            self.log.exception("%s died", self.name)
            raise
        finally:
            if self._store is not None:
                self._store.close()
            self.acks.put(WRITER_DONE)

    def _serve(self) -> None:
        put_acks = self.acks.put
        get = self.requests.get
        get_nowait = self.requests.get_nowait
        self._connect()
        self.first_attempt_done.set()
        # a burst taken that would have made the group too big: it starts the next group
        held_back: Burst | None = None
        first: Burst | None
        while True:
            if held_back is not None:
                first, held_back = held_back, None
            else:
                try:
                    first = get(timeout=PING_INTERVAL_S)
                except queue.Empty:
                    self._ping()
                    continue
            if first is None:  # STOP
                return
            batch, records = first  # the I/O thread hands the list over: ours to extend
            limit = self.settings.current.max_batch_records
            stop_seen = False
            while records < limit:
                try:
                    burst = get_nowait()
                except queue.Empty:
                    break
                if burst is None:  # STOP
                    stop_seen = True
                    break
                if records + burst[1] > limit:
                    held_back = burst
                    break
                batch += burst[0]
                records += burst[1]
            self.stats.in_commit = len(batch)
            try:
                acks = self._commit(batch, records)
            except Exception as exc:
                # an error the store did not classify, or a bug: every taken request still
                # gets its reply. Whether the group was committed is unknown, and a retry is
                # answered "duplicate" either way, so the clients are told to retry and this
                # writer carries on with a new connection
                self.log.exception("%s: unexpected error in a group commit", self.name)
                self._failed(f"unexpected {type(exc).__name__}: {exc}")
                acks = self._retry_later(batch)
            self.stats.in_commit = 0
            put_acks(acks)
            if stop_seen:
                return

    def _commit(self, batch: list[Request], records: int) -> list[Ack]:
        """The replies for ``batch`` (of ``records`` rows), request by request."""
        store = self._connect()
        if store is None:
            return self._retry_later(batch)
        started = time.perf_counter()
        try:
            counts = store.store([item[1] for item in batch])
        except TransientError as exc:
            self._failed(str(exc))
            return self._retry_later(batch)
        except PermanentError as exc:
            if len(batch) == 1:
                self.stats.rejected += 1
                self.log.warning("database rejected a request: %s", exc)
                return [(batch[0][0], protocol.error(f"database rejected the request: {exc}",
                                                     False))]
            # one poisoned request must not fail its neighbours: commit them one by one
            acks: list[Ack] = []
            for item in batch:
                acks += self._commit([item], len(item[1]))
            return acks
        self._failures_in_a_row = 0
        stats = self.stats
        stats.last_ok_at = time.time()
        stats.db_reachable = True
        stats.commit_seconds += time.perf_counter() - started
        stats.batches += 1
        stats.requests += len(batch)
        ack = protocol.ack
        acks = [(pending, ack(stored, len(rows) - stored))
                for (pending, rows), stored in zip(batch, counts, strict=True)]
        stored_total = sum(counts)
        stats.records_stored += stored_total
        stats.duplicates += records - stored_total
        return acks

    def _retry_later(self, batch: list[Request]) -> list[Ack]:
        """Replies that tell every client of ``batch`` to resend (after :meth:`_failed`)."""
        self.stats.transient_failures += len(batch)
        reply = protocol.error(f"database unavailable: {self.stats.last_error}", True)
        return [(pending, reply) for pending, _rows in batch]

    def _connect(self) -> Store | None:
        if self._store is not None and getattr(self._store, "conn", True) is not None:
            return self._store
        if time.monotonic() < self._next_connect_at:
            return None
        store = self._store or self.make_store()
        self._store = store
        try:
            store.connect()
        except TransientError as exc:
            self._failed(str(exc))
            return None
        if not self.stats.db_reachable:
            self.log.info("%s connected to %s", self.name, store.url.redacted())
        self.stats.db_reachable = True
        self.stats.last_ok_at = time.time()
        return store

    def _ping(self) -> None:
        store = self._connect()
        if store is None:
            return
        try:
            store.ping()
            self.stats.db_reachable = True
            self.stats.last_ok_at = time.time()
        except TransientError as exc:
            self._failed(str(exc))

    def _failed(self, message: str) -> None:
        if self.stats.db_reachable or self._failures_in_a_row == 0:
            self.log.error("%s: %s", self.name, message)
        self.stats.db_reachable = False
        self.stats.last_error = message
        self.stats.last_error_at = time.time()
        delay = RECONNECT_BACKOFF_S[min(self._failures_in_a_row, len(RECONNECT_BACKOFF_S) - 1)]
        self._failures_in_a_row += 1
        self._next_connect_at = time.monotonic() + delay
        if self._store is not None:
            self._store.close()
