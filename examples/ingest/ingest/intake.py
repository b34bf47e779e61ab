"""The I/O thread: owns the ROUTER socket, reads requests, routes replies.

One turn of its loop:

1. forward the replies the writers have committed (``AckChannel``);
2. read requests, within a budget of messages, bytes and time, so that step 1 comes round
   again soon whatever arrives: bad input is answered (in order, :mod:`replies`), good input
   goes to the writers as one burst;
3. maybe parse one *large* request (over :data:`LARGE_REQUEST_BYTES`).

Large requests wait in a queue of their own and are parsed one per turn, and only after
the I/O thread has spent :data:`SLOW_LANE_REST` times as long on other work (or had nothing
else to do): a megabyte of dense JSON takes ~30 ms to decode, with the GIL held, so without
this a client sending such requests would hold up every other client's acks for as long.
When that queue is full, a large request is answered "busy, resend later" (retryable)
without being read. Small requests are never held up by large ones.

Flow control: past ``max_inflight_requests`` / ``max_inflight_bytes`` taken but unanswered,
the I/O thread stops reading the ROUTER; ZeroMQ then keeps at most ``receive_hwm`` messages
per connection (``RCVHWM``) and stops reading that connection's TCP socket, so clients wait
in TCP's buffers and their own queues. Memory is then bounded: see the README
("Memory, and what ZeroMQ itself buffers").

No ZMTP heartbeats: libzmq 4.3.5 aborts the process (``Assertion failed: !_io_error
(src/stream_engine_base.cpp:310)``) when its heartbeat timer fires on a connection whose
input was stopped at RCVHWM and that the peer has then reset: the heartbeat calls
``out_event()`` on an engine already marked as failed. With intake paused behind a locked
database that is any client killed at the wrong moment. Dead peers are found by TCP
keepalive instead, which the kernel does.

Shutdown (:meth:`Intake.stop_intake`): stop reading (unread requests are never acknowledged,
so their clients retry elsewhere or later), parse the large requests already taken, queue one
stop marker per writer behind the work, forward the remaining replies, close the socket once
every writer has said it is done. Nothing taken is dropped on the floor.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import setproctitle
import zmq

from . import envelope, listeners, protocol
from .meter import RateMeter
from .replies import Pending, ReplyOrder
from .settings import SettingsRef
from .writer import STOP, WRITER_DONE, Acks, Request, Requests

IDLE_POLL_MS = 50
# plain ints: pyzmq's flag enums cost more to combine than a send
_NOBLOCK = int(zmq.NOBLOCK)
_SNDMORE_NOBLOCK = int(zmq.SNDMORE | zmq.NOBLOCK)
#: what one turn may read before it goes back to forwarding replies. Not less time: turns of
#: 2 ms split the writer's groups (19-22 instead of 29 100-record requests per COMMIT) and
#: cost 7 us more CPU per single-record request in wake-ups (interleaved A/B runs)
TURN_MAX_MESSAGES = 256
TURN_MAX_BYTES = 4 * 1024 * 1024
TURN_MAX_SECONDS = 0.01
#: requests larger than this are parsed in the slow lane
LARGE_REQUEST_BYTES = 32 * 1024
#: after a large request took t to parse, the next one waits until other work had SLOW_LANE_REST * t
SLOW_LANE_REST = 3.0
#: large requests one connection may have waiting
SLOW_LANE_PER_CONNECTION = 4
#: dead peers: TCP keepalive probes after 60 s idle, every 10 s, 3 unanswered = gone
KEEPALIVE = {zmq.TCP_KEEPALIVE: 1, zmq.TCP_KEEPALIVE_IDLE: 60, zmq.TCP_KEEPALIVE_INTVL: 10,
             zmq.TCP_KEEPALIVE_CNT: 3}


class BindError(Exception):
    """An endpoint could not be bound; the message names it."""


@dataclass
class IntakeStats:
    bad_requests: int = 0
    busy_replies: int = 0
    #: connections turned away while the process was out of file descriptors
    connections_refused: int = 0
    undeliverable_replies: int = 0
    paused: bool = False
    inflight_requests: int = 0
    inflight_bytes: int = 0
    slow_lane_requests: int = 0
    meter: RateMeter = field(default_factory=RateMeter)


@dataclass
class CurveServer:
    public_key: bytes
    secret_key: bytes


class Intake(threading.Thread):
    """Owns the ROUTER socket; reads requests, answers bad ones, routes the writers' replies."""

    def __init__(self, context: zmq.Context[Any], endpoints: list[str],
                 requests: Requests, acks: Acks, *, writer_count: int,
                 settings: SettingsRef, max_message_size: int, receive_hwm: int,
                 curve: CurveServer | None, log: logging.Logger) -> None:
        super().__init__(name="ingestd-io", daemon=True)
        self.context = context
        self.endpoints = endpoints
        self.requests = requests
        self.acks = acks
        self.writer_count = writer_count
        self.settings = settings
        self.max_message_size = max_message_size
        self.receive_hwm = receive_hwm
        self.curve = curve
        self.log = log
        self.stats = IntakeStats()
        self.bound: list[str] = []
        self.ready = threading.Event()
        self.setup_error: BaseException | None = None
        self.finished = threading.Event()
        self._stop_requested = threading.Event()
        self._drain_deadline = float("inf")
        self.drained_cleanly = False
        # owned by the thread once it runs
        self._router: zmq.Socket[Any] | None = None
        self._router_send: Any = None
        self._guard = listeners.Guard()
        self._order = ReplyOrder(self._send)
        #: large requests taken, not parsed yet: (pending, request frame)
        self._slow: collections.deque[tuple[Pending, zmq.Frame]] = collections.deque()
        #: per connection with requests in the slow lane: [how many, how many are large]
        self._in_lane: dict[bytes, list[int]] = {}
        self._slow_bytes = 0
        self._slow_free_at = 0.0
        #: a message of too many frames, read in part; see envelope.read_rest
        self._unfinished: envelope.Message | None = None
        self._warned_at = float("-inf")

    # -- called from the main thread --------------------------------------------------------

    def stop_intake(self, drain_deadline: float) -> None:
        self._drain_deadline = drain_deadline
        self._stop_requested.set()

    # -- the thread ---------------------------------------------------------------------------

    def run(self) -> None:
        # the OS's name for the thread: `top -H`, `ps -L` and bench/ingest_bench.py --threads
        # tell it from the writers (Python's thread names stay inside Python)
        setproctitle.setthreadtitle(self.name)
        try:
            router = self._router = self._open_router()
            self._router_send = router.send
        except BaseException as exc:  # noqa: BLE001 - handed to setup(), which reports it
            self.setup_error = exc
            self.ready.set()
            self.finished.set()
            return
        self.ready.set()
        try:
            self._loop(router)
        except BaseException:
            self.log.exception("I/O thread died")
            raise
        finally:
            remaining_ms = int(max(0.2, min(2.0, self._drain_deadline - time.monotonic())) * 1000)
            router.close(linger=remaining_ms)
            self._guard.close()
            self.finished.set()

    def _open_router(self) -> zmq.Socket[Any]:
        router: zmq.Socket[Any] = self.context.socket(zmq.ROUTER)
        try:
            router.setsockopt(zmq.ROUTER_MANDATORY, 1)
            # per frame (libzmq cuts the connection); the whole message is checked on reading
            router.setsockopt(zmq.MAXMSGSIZE, self.max_message_size)
            router.setsockopt(zmq.RCVHWM, self.receive_hwm)
            for option, value in KEEPALIVE.items():
                router.setsockopt(option, value)
            if self.curve is not None:
                router.curve_secretkey = self.curve.secret_key
                router.curve_publickey = self.curve.public_key
                router.curve_server = True
            for endpoint in self.endpoints:
                try:
                    self._guard.bind(router, endpoint)
                except (zmq.ZMQError, OSError) as exc:
                    raise BindError(f"cannot bind {endpoint}: {exc}") from None
                self.bound.append(router.getsockopt_string(zmq.LAST_ENDPOINT))
            self._guard.start()
        except BaseException:
            router.close(linger=0)
            self._guard.close()
            raise
        return router

    def _loop(self, router: zmq.Socket[Any]) -> None:
        acks_fd = self.acks.fd
        monitor = router.get_monitor_socket(zmq.EVENT_ACCEPT_FAILED)
        poller = zmq.Poller()
        poller.register(router, zmq.POLLIN)
        poller.register(acks_fd, zmq.POLLIN)
        poller.register(monitor, zmq.POLLIN)
        if self._guard.report >= 0:
            poller.register(self._guard.report, zmq.POLLIN)
        try:
            self._serve(router, poller, monitor)
        finally:
            router.disable_monitor()
            monitor.close(linger=0)

    def _serve(self, router: zmq.Socket[Any], poller: zmq.Poller,
               monitor: zmq.Socket[Any]) -> None:
        stats = self.stats
        order = self._order
        acks_fd = self.acks.fd
        reading = True
        draining = False
        writers_done = 0
        while True:
            if self._stop_requested.is_set() and not draining:
                draining = True
                if reading:
                    poller.unregister(router)
                    reading = False
                while self._slow:  # taken: parse them and queue them ahead of the stops
                    self._parse_slow()
                for _ in range(self.writer_count):
                    self.requests.put(STOP)
                self.log.info("intake stopped; draining %d requests in flight",
                              order.inflight_requests)
            if draining:
                if writers_done == self.writer_count:
                    self.drained_cleanly = order.inflight_requests == 0
                    return
                if time.monotonic() > self._drain_deadline:
                    # their fate is unknown (a writer may still commit them): a resend is
                    # answered "duplicate" if it was stored, so tell them to resend
                    told = order.answer_everything(protocol.SHUTDOWN_ERROR)
                    self.log.error("drain deadline passed with %d requests not committed; "
                                   "told their clients to resend", told)
                    return
            else:
                settings = self.settings.current
                full = (order.inflight_requests >= settings.max_inflight_requests
                        or order.inflight_bytes >= settings.max_inflight_bytes)
                if full and reading:
                    poller.unregister(router)
                    reading = False
                elif not full and not reading:
                    poller.register(router, zmq.POLLIN)
                    reading = True
                stats.paused = not reading
            timeout = IDLE_POLL_MS
            if self._slow and not draining:
                timeout = max(0, int((self._slow_free_at - time.perf_counter()) * 1000))
            events = dict(poller.poll(timeout))
            if acks_fd in events:
                writers_done += self._forward_acks()
            if monitor in events and listeners.out_of_descriptors(monitor):
                self._guard.shed()
            if self._guard.report in events:
                self._count_refused()
            requests_ready = reading and router in events
            if requests_ready:
                self._take_requests(router)
            if self._slow and (not requests_ready
                               or time.perf_counter() >= self._slow_free_at):
                self._parse_slow()
            stats.inflight_requests = order.inflight_requests
            stats.inflight_bytes = order.inflight_bytes
            stats.slow_lane_requests = len(self._slow)

    def _take_requests(self, router: zmq.Socket[Any]) -> None:
        """Read one turn's worth of requests; queue the good ones as one burst."""
        stats = self.stats
        order = self._order
        settings = self.settings.current
        max_size = self.max_message_size
        # the turn ends at the in-flight limits (then intake pauses), or at its own budget
        room_requests = settings.max_inflight_requests - order.inflight_requests
        burst = _Burst(self, settings.max_batch_records)
        turn_bytes = 0
        clock = time.perf_counter
        deadline = clock() + TURN_MAX_SECONDS
        unfinished = self._unfinished
        if unfinished is not None:  # a message of too many frames: read on, then refuse it
            if not envelope.read_rest(router, unfinished, max_size, deadline):
                return  # the acks and the rest of the loop get their turn
            self._unfinished = None
            stats.bad_requests += 1
            assert unfinished.problem is not None
            order.answer_now(unfinished.reply_prefix, unfinished.problem)
        parse = protocol.parse_request
        row_bytes = protocol.ROW_OVERHEAD_BYTES
        read = 0
        while (read < TURN_MAX_MESSAGES and room_requests > 0
               and order.inflight_bytes < settings.max_inflight_bytes
               and turn_bytes < TURN_MAX_BYTES and clock() < deadline):
            try:
                message = envelope.receive(router, max_size)
            except zmq.Again:
                break
            read += 1
            size = message.size
            turn_bytes += size
            if message.rest_unread:
                self._unfinished = message  # answered once read to its end, next turns
                break
            if message.problem is not None:
                stats.bad_requests += 1
                order.answer_now(message.reply_prefix, message.problem)
                continue
            if size > LARGE_REQUEST_BYTES or message.reply_prefix[0] in self._in_lane:
                # large, or behind a large one of the same connection: the slow lane
                if self._take_slow(message):
                    room_requests -= 1
            else:
                assert message.body is not None
                try:
                    rows = parse(message.body.bytes)
                except protocol.BadRequest as exc:
                    stats.bad_requests += 1
                    order.answer_now(message.reply_prefix, protocol.error(str(exc), False))
                    continue
                burst.add(order.take(message.reply_prefix, size + row_bytes * len(rows)),
                          rows)
                room_requests -= 1
        burst.flush()
        if read:
            stats.meter.add(read)

    def _take_slow(self, message: envelope.Message) -> bool:
        """Queue a large request (or one behind a large one) in the slow lane, or answer
        "busy" when the lane is full; True when taken."""
        large = message.size > LARGE_REQUEST_BYTES
        counts = self._in_lane.get(message.routing_id)
        if large:
            limit = self.settings.current.max_inflight_bytes // 4
            if ((counts is not None and counts[1] >= SLOW_LANE_PER_CONNECTION)
                    or (self._slow_bytes and self._slow_bytes + message.size > limit)):
                # not read, not copied; the client resends (client.py backs off first)
                self.stats.busy_replies += 1
                self._order.answer_now(message.reply_prefix, protocol.BUSY_ERROR)
                return False
        assert message.body is not None
        if counts is None:
            counts = self._in_lane[message.routing_id] = [0, 0]
        counts[0] += 1
        if large:
            counts[1] += 1
            self._slow_bytes += message.size
        self._slow.append((self._order.take(message.reply_prefix, message.size),
                           message.body))
        return True

    def _parse_slow(self) -> None:
        """Parse the lane's first request, and the small ones right behind it."""
        burst = _Burst(self, self.settings.current.max_batch_records)
        slow = self._slow
        started = time.perf_counter()
        deadline = started + TURN_MAX_SECONDS
        first = True
        while slow and (first or (len(slow[0][1]) <= LARGE_REQUEST_BYTES
                                  and time.perf_counter() < deadline)):
            pending, body = slow.popleft()
            routing_id = pending.reply_prefix[0]
            counts = self._in_lane[routing_id]
            counts[0] -= 1
            if pending.size > LARGE_REQUEST_BYTES:
                counts[1] -= 1
                self._slow_bytes -= pending.size
            if not counts[0]:
                del self._in_lane[routing_id]
            burst.parse(pending, body)
            first = False
        burst.flush()
        finished = time.perf_counter()
        self._slow_free_at = finished + SLOW_LANE_REST * (finished - started)

    def _queue(self, burst: list[Request], records: int) -> None:
        self.requests.put((burst, records))

    def _forward_acks(self) -> int:
        answer = self._order.answer
        done = 0
        for batch in self.acks.take_all():
            if batch is WRITER_DONE:
                done += 1
                continue
            for pending, reply in batch:
                answer(pending, reply)
        return done

    def _count_refused(self) -> None:
        refused = self._guard.refused()
        self.stats.connections_refused += refused
        now = time.monotonic()
        if refused and now - self._warned_at > 10.0:
            self._warned_at = now
            self.log.warning("out of file descriptors (ulimit -n): turning new connections "
                             "away (%d so far)", self.stats.connections_refused)

    def _refuse(self, pending: Pending, error: protocol.BadRequest) -> None:
        self.stats.bad_requests += 1
        self._order.answer(pending, protocol.error(str(error), False))

    def _send(self, reply_prefix: list[bytes], reply: bytes) -> None:
        """Send without blocking, frame by frame with int flags (``send_multipart`` checks
        every frame's type and size in Python first: 5.7 against 1.8 us per reply)."""
        send = self._router_send
        try:
            for frame in reply_prefix:
                send(frame, _SNDMORE_NOBLOCK)
            send(reply, _NOBLOCK)
        except zmq.ZMQError:
            # the client is gone (EHOSTUNREACH) or its queue is full: what it sent is
            # handled (stored, if good), and a resend is answered "duplicate"
            self.stats.undeliverable_replies += 1


class _Burst:
    """Requests parsed in one go, queued for the writers as one item.

    One queue operation per burst rather than per request: the writer wakes once and sees the
    whole burst, so it commits it in one transaction instead of starting a COMMIT with the
    first request while the I/O thread is still reading the rest.
    """

    __slots__ = ("intake", "max_records", "records", "requests")

    def __init__(self, intake: Intake, max_records: int) -> None:
        self.intake = intake
        self.max_records = max_records
        self.requests: list[Request] = []
        self.records = 0

    def parse(self, pending: Pending, body: zmq.Frame) -> None:
        """Parse a request taken before (in the slow lane), and add it."""
        try:
            rows = protocol.parse_request(body.bytes)
        except protocol.BadRequest as exc:
            self.intake._refuse(pending, exc)
            return
        self.intake._order.grow(pending, protocol.ROW_OVERHEAD_BYTES * len(rows))
        self.add(pending, rows)

    def add(self, pending: Pending, rows: list[protocol.Row]) -> None:
        if self.requests and self.records + len(rows) > self.max_records:
            self.flush()  # a burst never holds more than a group may: committed whole
        self.requests.append((pending, rows))
        self.records += len(rows)

    def flush(self) -> None:
        if self.requests:
            self.intake._queue(self.requests, self.records)
            self.requests, self.records = [], 0
