"""supervisord's event listener protocol: pools of listener processes fed from the event bus.

An ``[eventlistener:x]`` is a program (its processes are instances like any other: status,
start, stop, respawn) whose stdin and stdout are a conversation with the supervisor instead
of a log. Each pool buffers the events it subscribed to (``buffer_size``, the oldest dropped
when full, as supervisord drops them) and hands the oldest to a process that is RUNNING and
said ``READY``; the process answers ``RESULT N\\nOK`` (done) or anything else (``FAIL``: the
event goes back to the head of the buffer).

Nothing here can hold up the loop: an event is written to a listener only when it asked for
one (so its stdin pipe never holds more than one event, and writes never block), what a
listener says is parsed from bounded buffers, and a listener that hangs just stays BUSY while
its pool's buffer fills and drops. A listener that dies with an event in hand gives the event
back to its pool.
"""

from __future__ import annotations

import enum
import errno
import logging
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from . import eventtypes
from .events import Event
from .states import State

if TYPE_CHECKING:
    from .config import ProgramConfig
    from .process import Instance

READY_TOKEN = b"READY\n"
RESULT_TOKEN = b"RESULT "
#: longest ``RESULT N`` line, and longest result, a listener may send before it is UNKNOWN
MAX_RESULT_LINE = 64
MAX_RESULT = 65536
_SERIAL_WRAP = 2 ** 63 - 1  # supervisord's maxint: the serial starts again at 0
#: overflow lines a pool logs per second; beyond, drops are counted and summed up (a chatty
#: program with stdout_events_enabled must not turn a slow listener into a log flood)
DROPS_LOGGED_PER_S = 10


class ListenerState(enum.Enum):
    """supervisord's EventListenerStates, and what each means for dispatch."""

    ACKNOWLEDGED = "ACKNOWLEDGED"  # started, or answered: waiting for its READY
    READY = "READY"  # may be sent the next event
    BUSY = "BUSY"  # has an event; waiting for its RESULT
    UNKNOWN = "UNKNOWN"  # broke the protocol: gets no more events until it restarts


@dataclass(frozen=True)
class Envelope:
    """One event as one pool sends it."""

    serial: int
    name: str  # e.g. PROCESS_STATE_EXITED
    payload: str
    pool: str
    pool_serial: int

    def encode(self, server: str) -> bytes:
        """supervisord's envelope; ``len`` counts the payload's characters, as it does."""
        return (f"ver:3.0 server:{server} serial:{self.serial} pool:{self.pool} "
                f"poolserial:{self.pool_serial} eventname:{self.name} "
                f"len:{len(self.payload)}\n{self.payload}").encode()


class Answer(enum.Enum):
    READY = "READY"
    OK = "OK"
    REJECTED = "REJECTED"  # a result other than OK (supervisord's default handler)
    BROKEN = "BROKEN"  # protocol violation: the listener is now UNKNOWN


@dataclass
class Listener:
    """The protocol state of one listener process, fed with what it writes on stdout."""

    state: ListenerState = ListenerState.ACKNOWLEDGED
    event: Envelope | None = None  # the event it has (BUSY)
    pending: bytearray = field(default_factory=bytearray)
    result_len: int | None = None

    def feed(self, data: bytes) -> list[Answer]:
        """Consume ``data``; the answers it completes, in order (bounded by ``data``)."""
        if self.state is ListenerState.UNKNOWN:
            return []
        self.pending += data
        answers: list[Answer] = []
        for _ in range(len(self.pending) + 1):  # each turn consumes bytes or stops
            answer = self._step()
            if answer is None:
                break
            answers.append(answer)
            if answer is Answer.BROKEN:
                break
        return answers

    def _step(self) -> Answer | None:
        if not self.pending or self.state is ListenerState.UNKNOWN:
            return None
        if self.state is ListenerState.ACKNOWLEDGED:
            if len(self.pending) < len(READY_TOKEN):
                return None if READY_TOKEN.startswith(bytes(self.pending)) else self._broken()
            if not self.pending.startswith(READY_TOKEN):
                return self._broken()
            del self.pending[:len(READY_TOKEN)]
            self.state = ListenerState.READY
            return Answer.READY
        if self.state is ListenerState.READY:
            return self._broken()  # spoke out of turn: supervisord is strict about it
        # BUSY: "RESULT N\n", then N bytes
        if self.result_len is None:
            end = self.pending.find(b"\n")
            if end == -1:
                return self._broken() if len(self.pending) > MAX_RESULT_LINE else None
            line = bytes(self.pending[:end])
            del self.pending[:end + 1]
            digits = line[len(RESULT_TOKEN):]
            if not line.startswith(RESULT_TOKEN) or not digits.isdigit() or (
                    int(digits) > MAX_RESULT):
                return self._broken()
            self.result_len = int(digits)
        if len(self.pending) < self.result_len:
            return None
        result = bytes(self.pending[:self.result_len])
        del self.pending[:self.result_len]
        self.result_len = None
        self.state = ListenerState.ACKNOWLEDGED
        return Answer.OK if result == b"OK" else Answer.REJECTED

    def _broken(self) -> Answer:
        self.state = ListenerState.UNKNOWN
        self.pending.clear()
        self.result_len = None
        return Answer.BROKEN


class Pool:
    """One ``[eventlistener:x]``: its buffer and the protocol state of each of its processes."""

    def __init__(self, program: ProgramConfig, log: logging.Logger) -> None:
        self.name = program.name
        self.log = log
        self.accepts: frozenset[str] = frozenset()
        self.buffer_size = 1
        self.buffer: deque[Envelope] = deque()
        self.serial = -1
        self.listeners: dict[Instance, Listener] = {}  # processes alive, by identity
        self.dropped = 0
        self._drops_window = 0.0  # monotonic start of the current second of drop logging
        self._drops_logged = 0
        self._drops_unlogged = 0
        self.configure(program)

    def configure(self, program: ProgramConfig) -> None:
        self.accepts = eventtypes.covered(program.events)
        self.buffer_size = max(1, program.buffer_size)
        while len(self.buffer) > self.buffer_size:
            self._drop_oldest()

    def next_serial(self) -> int:
        self.serial = 0 if self.serial >= _SERIAL_WRAP else self.serial + 1
        return self.serial

    def accept(self, envelope: Envelope, head: bool = False) -> None:
        if len(self.buffer) >= self.buffer_size:
            self._drop_oldest()
        if head:
            self.buffer.appendleft(envelope)
        else:
            self.buffer.append(envelope)

    def _drop_oldest(self) -> None:
        dropped = self.buffer.popleft()
        self.dropped += 1
        now = time.monotonic()
        if now - self._drops_window >= 1.0:
            if self._drops_unlogged:
                self.log.error("pool %s event buffer overflowed: %d more events discarded",
                               self.name, self._drops_unlogged)
            self._drops_window, self._drops_logged, self._drops_unlogged = now, 0, 0
        if self._drops_logged < DROPS_LOGGED_PER_S:
            self._drops_logged += 1
            self.log.error("pool %s event buffer overflowed, discarding event %s (%s)",
                           self.name, dropped.serial, dropped.name)
        else:
            self._drops_unlogged += 1

    def dispatch(self, server: str) -> None:
        """Hand buffered events, oldest first, to processes that are RUNNING and READY."""
        while self.buffer:
            if not self._send(self.buffer[0], server):
                return
            self.buffer.popleft()

    def _send(self, envelope: Envelope, server: str) -> bool:
        for instance, listener in self.listeners.items():
            if instance.state is not State.RUNNING or listener.state is not ListenerState.READY:
                continue
            try:
                instance.write_stdin(envelope.encode(server))
            except OSError as exc:  # EPIPE: it closed stdin; it may still answer, or exit
                self.log.debug("%s: event %s not sent: %s", instance.name, envelope.serial,
                               errno.errorcode.get(exc.errno or 0, exc))
                continue
            listener.state = ListenerState.BUSY
            listener.event = envelope
            return True
        return False

    def give_back(self, listener: Listener) -> None:
        """The event a listener had goes back to the head of the buffer."""
        if listener.event is not None:
            self.accept(listener.event, head=True)
            listener.event = None


class ListenerPools:
    """Every pool of the running config, subscribed to the engine's event bus."""

    def __init__(self, log: logging.Logger) -> None:
        self.log = log
        self.pools: dict[str, Pool] = {}
        self.server = "supervisor"  # [supervisord] identifier
        self.serial = -1
        self.ticks_wanted: set[int] = set()

    def configure(self, programs: Mapping[str, ProgramConfig], server: str) -> None:
        """Pools follow the config: new ones start empty, kept ones keep their buffer."""
        self.server = server
        wanted = {name: p for name, p in programs.items() if p.kind == "eventlistener"}
        for name in list(self.pools):
            if name not in wanted:
                del self.pools[name]
        for name, program in wanted.items():
            if name in self.pools:
                self.pools[name].configure(program)
            else:
                self.pools[name] = Pool(program, self.log)
        self.ticks_wanted = {period for name, period in eventtypes.TICK_PERIODS.items()
                             if any(name in pool.accepts for pool in self.pools.values())}

    def publish(self, event: Event) -> None:
        """The bus subscriber: buffer the event in every pool that wants it, then send."""
        if not self.pools:
            return
        name = eventtypes.type_name(event)
        serial: int | None = None
        payload = ""
        for pool in self.pools.values():
            if name not in pool.accepts:
                continue
            if serial is None:  # as supervisord: only events some pool takes are numbered
                self.serial = 0 if self.serial >= _SERIAL_WRAP else self.serial + 1
                serial = self.serial
                payload = eventtypes.payload(event)
            pool.accept(Envelope(serial, name, payload, pool.name, pool.next_serial()))
            pool.dispatch(self.server)

    def process_changed(self, instance: Instance) -> None:
        """A listener process changed state: it is new (ACKNOWLEDGED), may now be sent
        events (RUNNING), or is gone (its event, if any, goes back to the pool)."""
        pool = self.pools.get(instance.program.name)
        if pool is None:
            return
        if instance.state is State.STARTING:
            old = pool.listeners.pop(instance, None)
            if old is not None:
                pool.give_back(old)
            pool.listeners[instance] = Listener()
        elif instance.state in (State.STOPPED, State.EXITED, State.BACKOFF, State.FATAL):
            gone = pool.listeners.pop(instance, None)
            if gone is not None:
                pool.give_back(gone)
        pool.dispatch(self.server)

    def output(self, instance: Instance, data: bytes) -> None:
        """What a listener process wrote on stdout: its side of the protocol."""
        pool = self.pools.get(instance.program.name)
        listener = pool.listeners.get(instance) if pool is not None else None
        if pool is None or listener is None:
            return
        for answer in listener.feed(data):
            if answer is Answer.REJECTED:
                self.log.warning("%s: event %s was rejected", instance.name,
                                 listener.event.serial if listener.event else "?")
                pool.give_back(listener)
            elif answer is Answer.BROKEN:
                self.log.warning("%s: has entered the UNKNOWN state and will no longer receive "
                                 "events (it broke the event listener protocol)", instance.name)
                pool.give_back(listener)
            elif answer is Answer.OK:
                listener.event = None
        pool.dispatch(self.server)

    def drained(self, instance: Instance) -> bool:
        """Nothing buffered for this listener's pool, and nothing in its hands."""
        pool = self.pools.get(instance.program.name)
        listener = pool.listeners.get(instance) if pool is not None else None
        return pool is None or (not pool.buffer and (listener is None
                                                     or listener.state is not ListenerState.BUSY))

    def state_of(self, instance: Instance) -> ListenerState | None:
        pool = self.pools.get(instance.program.name)
        listener = pool.listeners.get(instance) if pool is not None else None
        return listener.state if listener is not None else None

