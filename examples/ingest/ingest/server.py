"""The moving parts of ingestd: ZeroMQ's own proxy in front, writer threads behind it.

Flow of one request::

    REQ clients --tcp--> ROUTER ==zmq_proxy (C, no GIL)==> DEALER --inproc--> DEALER (writer)
                                                                   bounded queue   |
                         ROUTER <======================== DEALER <-- replies ------+

A writer reads a burst from its own DEALER socket, answers bad input at once, stores the good
requests in one transaction and sends their acks on the same socket once COMMIT has returned.
The proxy moves frames between the ROUTER and the writers without Python: in an earlier
design a Python I/O thread owned the ROUTER and handed requests to the writers through a queue
and acks back through an inproc socket, and those two hand-offs, each waiting for the GIL and
a CPU, cost a third of the throughput (bench/ingest.md).

Every socket is created, used and closed by one thread: the ROUTER, the proxy's DEALER and
its control socket by the proxy thread, each writer's DEALER by that writer, and a short-lived
REQ by whoever asks the proxy something (:class:`ProxyControl`).

Backpressure: the inproc queue to each writer holds at most ``queue_limit`` requests (its
high-water mark); when it is full the proxy stops reading the ROUTER, so clients wait in
ZeroMQ's and TCP's buffers instead of in our memory. A writer takes at most
``max_batch_records`` records per transaction.

Shutdown: writers stop taking requests (what is still queued is never acknowledged, so its
clients retry), commit and acknowledge what they took, and count the frames they sent; the
main thread waits until the proxy has moved that many frames to the ROUTER, then terminates
the proxy, which closes the ROUTER with a linger so the last acks reach the wire. Until then
the writers keep reading and dropping what the proxy hands over, because a proxy blocked on a
full queue would never see the order to stop.
"""

from __future__ import annotations

import logging
import os
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import zmq
from zmq.backend import Socket as _BackendSocket

from . import protocol
from .meter import RateMeter
from .settings import Settings
from .stores import PermanentError, Store, TransientError

REQUESTS_ENDPOINT = "inproc://ingestd-requests"
PROXY_CONTROL_ENDPOINT = "inproc://ingestd-proxy-control"
# plain ints: combining zmq's enum flags costs more than the send itself
_NOBLOCK = int(zmq.NOBLOCK)
_SNDMORE = int(zmq.SNDMORE)
# pyzmq's Socket.send is a Python wrapper (routing ids, groups) around the compiled method;
# the writer calls the compiled ones directly: 2.4 -> 1.3 us per three-frame reply
_backend_send = _BackendSocket.send
_backend_recv = _BackendSocket.recv
PING_INTERVAL_MS = 5000
#: the proxy answers within microseconds unless it is blocked on a full queue (see Writer)
PROXY_CONTROL_TIMEOUT_MS = 250
RECONNECT_BACKOFF_S = (0.1, 0.2, 0.5, 1.0, 2.0)

#: one good request in a writer's hands: (ROUTER identity, rows)
Request = tuple[bytes, list[protocol.Row]]


class SettingsRef:
    """The settings in force; replaced as a whole by reload, read by every thread."""

    def __init__(self, settings: Settings) -> None:
        self.current = settings


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
    bad_requests: int = 0
    frames_received: int = 0
    frames_sent: int = 0
    db_reachable: bool = False
    last_ok_at: float = 0.0
    last_error: str | None = None
    last_error_at: float = 0.0
    meter: RateMeter = field(default_factory=RateMeter)


@dataclass
class CurveServer:
    public_key: bytes
    secret_key: bytes


class StopSignal:
    """Tells the writers to stop taking requests, and later that the proxy has stopped.

    ``fd`` is a pipe every writer polls next to its socket: one write wakes all of them at
    once, and since nothing reads it, it stays readable for a writer that polls later.
    """

    def __init__(self) -> None:
        self.fd, self._write_fd = os.pipe()
        self.is_set = False
        #: set by the main thread once the proxy has stopped: writers may close their sockets
        self.proxy_stopped = threading.Event()

    def set(self) -> None:
        if not self.is_set:
            self.is_set = True
            os.write(self._write_fd, b"x")

    def close(self) -> None:
        os.close(self.fd)
        os.close(self._write_fd)


class Frontend(threading.Thread):
    """Owns the ROUTER, the writers' side of the queue and the proxy between them."""

    def __init__(self, context: zmq.Context[Any], endpoints: list[str], *, queue_limit: int,
                 max_message_size: int, curve: CurveServer | None,
                 log: logging.Logger) -> None:
        super().__init__(name="ingestd-proxy", daemon=True)
        self.context = context
        self.endpoints = endpoints
        self.queue_limit = queue_limit
        self.max_message_size = max_message_size
        self.curve = curve
        self.log = log
        self.bound: list[str] = []
        self.ready = threading.Event()
        self.setup_error: BaseException | None = None
        self.finished = threading.Event()
        #: how long the ROUTER may keep flushing the last acks once the proxy has stopped
        self.close_linger_ms = 2000

    def run(self) -> None:
        try:
            sockets = self._open_sockets()
        except BaseException as exc:  # noqa: BLE001 - handed to setup(), which reports it
            self.setup_error = exc
            self.ready.set()
            self.finished.set()
            return
        router, backend, control = sockets
        self.ready.set()
        try:
            zmq.proxy_steerable(router, backend, None, control)
        except zmq.ContextTerminated:
            pass
        except BaseException:
            self.log.exception("proxy thread died")
            raise
        finally:
            router.close(linger=self.close_linger_ms)
            backend.close(linger=0)  # requests no writer took: never acknowledged
            control.close(linger=0)
            self.finished.set()

    def _open_sockets(self) -> tuple[zmq.Socket[Any], zmq.Socket[Any], zmq.Socket[Any]]:
        opened: list[zmq.Socket[Any]] = []
        try:
            control = self.context.socket(zmq.REP)
            opened.append(control)
            control.bind(PROXY_CONTROL_ENDPOINT)
            backend = self.context.socket(zmq.DEALER)
            opened.append(backend)
            backend.sndhwm = self.queue_limit
            # replies: never block the writers (they are bounded by what writers took)
            backend.rcvhwm = 0
            backend.bind(REQUESTS_ENDPOINT)
            router = self.context.socket(zmq.ROUTER)
            opened.append(router)
            # ROUTER_MANDATORY stays off: a reply to a client that has gone is dropped (its
            # records are committed; a retry is answered "duplicate") instead of failing the
            # proxy
            router.setsockopt(zmq.MAXMSGSIZE, self.max_message_size)
            router.setsockopt(zmq.HEARTBEAT_IVL, 5000)
            router.setsockopt(zmq.HEARTBEAT_TIMEOUT, 15000)
            if self.curve is not None:
                router.curve_secretkey = self.curve.secret_key
                router.curve_publickey = self.curve.public_key
                router.curve_server = True
            for endpoint in self.endpoints:
                router.bind(endpoint)
                self.bound.append(router.getsockopt_string(zmq.LAST_ENDPOINT))
        except BaseException:
            for sock in opened:
                sock.close(linger=0)
            raise
        return router, backend, control


class ProxyCounters(NamedTuple):
    """Frames (not messages) the proxy moved, as zmq_proxy_steerable's STATISTICS gives them."""

    frontend_received: int
    backend_sent: int
    backend_received: int
    frontend_sent: int


class ProxyControl:
    """Asks the running proxy for its counters or tells it to stop; one thread, one use.

    The proxy's control socket is a REP, so any thread can open its own REQ, ask, and close it,
    and no socket is ever shared between threads.
    """

    def __init__(self, context: zmq.Context[Any]) -> None:
        self.sock = context.socket(zmq.REQ)
        # after a timeout the next request may go out; a late answer to the old one is dropped
        self.sock.setsockopt(zmq.REQ_RELAXED, 1)
        self.sock.setsockopt(zmq.REQ_CORRELATE, 1)
        self.sock.linger = 0
        self.sock.rcvtimeo = PROXY_CONTROL_TIMEOUT_MS
        self.sock.sndtimeo = PROXY_CONTROL_TIMEOUT_MS
        self.sock.connect(PROXY_CONTROL_ENDPOINT)

    def __enter__(self) -> ProxyControl:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.sock.close(linger=0)

    def counters(self) -> ProxyCounters:
        """Raises zmq.Again when the proxy does not answer in time (blocked: the queue is full)."""
        self.sock.send(b"STATISTICS")
        values = [struct.unpack("=Q", part)[0] for part in self.sock.recv_multipart()]
        # (front recv n, bytes, front sent n, bytes, back recv n, bytes, back sent n, bytes)
        return ProxyCounters(frontend_received=values[0], backend_sent=values[6],
                             backend_received=values[4], frontend_sent=values[2])

    def terminate(self) -> None:
        self.sock.send(b"TERMINATE")
        self.sock.recv()


class Writer(threading.Thread):
    """Owns one database connection and one DEALER socket; takes, commits, acknowledges."""

    def __init__(self, index: int, context: zmq.Context[Any], stop: StopSignal, *,
                 make_store: Callable[[], Store], settings: SettingsRef,
                 log: logging.Logger) -> None:
        super().__init__(name=f"ingestd-writer-{index}", daemon=True)
        self.context = context
        self.stop_signal = stop
        self.make_store = make_store
        self.settings = settings
        self.log = log
        self.stats = WriterStats()
        self._store: Store | None = None
        #: set after the first connection attempt, so that readiness means "writers ready"
        self.first_attempt_done = threading.Event()
        #: set once stopping and everything taken is answered (or the thread died)
        self.acks_sent = threading.Event()
        self._next_connect_at = 0.0
        self._failures_in_a_row = 0

    def run(self) -> None:
        sock = self.context.socket(zmq.DEALER)
        # the queue's bound is the proxy's SNDHWM; this side holds as little as ZeroMQ allows
        sock.rcvhwm = 1
        sock.sndhwm = 0  # replies never block: they are bounded by the requests taken
        sock.linger = 5000
        sock.connect(REQUESTS_ENDPOINT)
        try:
            self._serve(sock)
            self.acks_sent.set()
            self._discard_until_proxy_stopped(sock)
        except BaseException:
            self.log.exception("%s died", self.name)
            raise
        finally:
            self.acks_sent.set()
            if self._store is not None:
                self._store.close()
            # linger: the acks already sent stay readable by the proxy after the close
            sock.close()

    def _discard_until_proxy_stopped(self, sock: zmq.Socket[Any]) -> None:
        """Read and drop what the proxy still hands over, never answering it.

        zmq_proxy blocks in send while the queue to the writers is full, and a blocked proxy
        never reads its control socket, so it could not be told to stop. The requests
        dropped here were never taken: their clients get no reply and retry.
        """
        recv = _backend_recv.__get__(sock)
        while not self.stop_signal.proxy_stopped.is_set():
            if not sock.poll(20):
                continue
            for _ in range(10_000):
                try:
                    recv(_NOBLOCK, False)
                except zmq.Again:
                    break

    def _serve(self, sock: zmq.Socket[Any]) -> None:
        poller = zmq.Poller()
        poller.register(sock, zmq.POLLIN)
        poller.register(self.stop_signal.fd, zmq.POLLIN)
        poll = poller.poll
        recv = _backend_recv.__get__(sock)
        send = _backend_send.__get__(sock)
        self._connect()
        self.first_attempt_done.set()
        while True:
            events = poll(PING_INTERVAL_MS)
            if self.stop_signal.is_set:
                return  # checked first: once stopping, nothing more is taken
            if not events:
                self._ping()
                continue
            batch = self._take(recv, send)
            if batch:
                self.stats.in_commit = len(batch)
                replies = self._commit(batch)
                self.stats.in_commit = 0
                self._reply(send, batch, replies)

    def _take(self, recv: Callable[..., Any], send: Callable[..., Any]) -> list[Request]:
        """A burst of good requests, up to ``max_batch_records`` records; bad ones answered.

        Whatever arrived while the previous COMMIT ran is read in one go and goes into one
        transaction: that is the group commit.
        """
        stats = self.stats
        limit = self.settings.current.max_batch_records
        parse = protocol.parse_request
        batch: list[Request] = []
        records = 0
        frames_received = 0
        while records < limit:
            try:
                frame = recv(_NOBLOCK, False)
            except zmq.Again:
                break
            # frame by frame without copying, because Frame.more is a plain C call where
            # getsockopt(RCVMORE) converts the option to an enum first: 5.4 -> 2.3 us per
            # request; .bytes copies each frame once, as recv(copy=True) would
            frames = [frame.bytes]
            while frame.more:
                frame = recv(_NOBLOCK, False)
                frames.append(frame.bytes)
            frames_received += len(frames)
            if len(frames) != 3 or frames[1]:
                self._odd_envelope(send, frames)
                continue
            identity, _delimiter, payload = frames
            try:
                rows = parse(payload)
            except protocol.BadRequest as exc:
                stats.bad_requests += 1
                self._send(send, [identity, b"", protocol.error(str(exc), False)])
                continue
            batch.append((identity, rows))
            records += len(rows)
        stats.frames_received += frames_received
        if batch:
            stats.meter.add(len(batch))
        return batch

    def _odd_envelope(self, send: Callable[..., Any], frames: list[bytes]) -> None:
        """A REQ peer's message is [identity, b"", body]; anything else is bad input."""
        self.stats.bad_requests += 1
        if len(frames) > 3 and not frames[1]:
            self._send(send, [frames[0], b"", protocol.MULTIPART_ERROR])
        elif len(frames) >= 2:
            # not a REQ envelope (e.g. a DEALER without the empty delimiter): answer in kind
            self._send(send, [frames[0], protocol.error(
                "expected a REQ envelope (empty delimiter frame)", False)])
        else:
            self._send(send, [frames[0], b"", protocol.error("empty request", False)])

    def _send(self, send: Callable[..., Any], frames: list[bytes]) -> None:
        for frame in frames[:-1]:
            send(frame, _SNDMORE)
        send(frames[-1], 0)
        self.stats.frames_sent += len(frames)

    def _reply(self, send: Callable[..., Any], batch: list[Request],
               replies: list[bytes]) -> None:
        # SNDHWM 0: never blocks, never fails for lack of room
        for (identity, _rows), reply in zip(batch, replies, strict=True):
            send(identity, _SNDMORE)
            send(b"", _SNDMORE)
            send(reply, 0)
        self.stats.frames_sent += 3 * len(batch)

    def _commit(self, batch: list[Request]) -> list[bytes]:
        """One reply per request of ``batch``, each true once this returns."""
        store = self._connect()
        if store is None:
            self.stats.transient_failures += len(batch)
            return [protocol.error(f"database unavailable: {self.stats.last_error}", True)
                    ] * len(batch)
        started = time.perf_counter()
        try:
            counts = store.store([item[1] for item in batch])
        except TransientError as exc:
            self._failed(str(exc))
            self.stats.transient_failures += len(batch)
            return [protocol.error(f"database unavailable: {exc}", True)] * len(batch)
        except PermanentError as exc:
            if len(batch) == 1:
                self.stats.rejected += 1
                self.log.warning("database rejected a request: %s", exc)
                return [protocol.error(f"database rejected the request: {exc}", False)]
            # one poisoned request must not fail its neighbours: commit them one by one
            return [self._commit([item])[0] for item in batch]
        self._failures_in_a_row = 0
        stats = self.stats
        stats.last_ok_at = time.time()
        stats.db_reachable = True
        stats.commit_seconds += time.perf_counter() - started
        stats.batches += 1
        stats.requests += len(batch)
        replies = []
        ack = protocol.ack
        for item, stored in zip(batch, counts, strict=True):
            duplicates = len(item[1]) - stored
            stats.records_stored += stored
            stats.duplicates += duplicates
            replies.append(ack(stored, duplicates))
        return replies

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
