"""Signals in, safe actions out: the daemon's main-thread discipline.

Python runs signal handlers in the main thread, between two bytecodes of whatever it is
doing. The handlers here only record what was asked (a flag, and a byte on a wakeup pipe that
a small watcher thread turns into ``stopping.set()`` and systemd notifications). Acting on
the request happens at a safe point:

* a stop request (TERM, INT) outside a ``critical()`` block raises :class:`StopDaemon` in the
  main thread, which unwinds ``run()`` promptly even from ``time.sleep``; inside a block it is
  deferred until the block ends, so a unit of work is never cut in half;
* a reload (HUP) or log reopen (USR1) runs the service's hook in the main thread, at the
  signal's delivery point if no ``critical()`` block is open, else when the outermost block
  ends. A reload itself counts as critical: a TERM arriving during ``reload()`` waits for it.
  Before ``setup()`` has finished the gate is closed (a HUP then waits for the end of setup:
  ``reload()`` must not see a half-built service), and once shutdown has begun requests are
  dropped (``shutdown()`` must not be interleaved with a reload).

``threading.Event.set`` is never called from a handler: the handler could interrupt the main
thread while it holds the event's internal (non-reentrant) lock and deadlock on it.
"""

from __future__ import annotations

import os
import select
import signal
import sys
import threading
import time
from collections.abc import Callable
from types import FrameType, TracebackType
from typing import TYPE_CHECKING

from .errors import StopDaemon

if TYPE_CHECKING:  # asyncio is imported only by services that use it: it costs ~20 ms
    import asyncio

#: the signals that run a hook. USR2 reopens the logs as well: supervisord's log reopen
#: signal, which logrotate configs written for it send; left at its default it would kill
#: the daemon. (USR1 last: request() sends the last signal of an action.)
ACTION_SIGNALS = {signal.SIGUSR2: "reopen", signal.SIGUSR1: "reopen", signal.SIGHUP: "reload"}
#: QUIT as well: a graceful stop for supervisord, gunicorn and nginx alike, where its
#: default action would end the daemon at once, with no shutdown() and a core dump
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT)


def default_signals_in_child() -> None:
    """In a process the service forked without exec: signals as in a fresh Python process.

    The daemon's handlers are inherited by such a child and would act for the daemon: a
    SIGTERM that ``multiprocessing``'s ``terminate()`` sends its worker would write to the
    daemon's wakeup pipe (stopping the daemon, not the worker), and a worker forked inside a
    ``critical()`` block would defer every stop for good. asyncio's wakeup fd is the
    daemon's loop's pipe as well, hence ``set_wakeup_fd(-1)``. Called by an at-fork hook,
    in the child's only thread, which Python has made its main thread.
    """
    signal.set_wakeup_fd(-1)
    for signum in (*STOP_SIGNALS, *ACTION_SIGNALS):
        signal.signal(signum, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)


class EarlySignals:
    """Record-only handlers for the first steps of a daemon, before a gate is installed.

    A signal's default action would kill the process (SIGTERM, SIGHUP) without a word to
    ``start`` and without an exit record; from the moment the pid is visible, a signal must
    be recorded and then acted on by the gate, as if it had arrived a moment later.
    """

    def __init__(self) -> None:
        self.received: list[int] = []

    def install(self) -> EarlySignals:
        for signum in (*STOP_SIGNALS, *ACTION_SIGNALS):
            signal.signal(signum, self._record)
        return self

    def _record(self, signum: int, frame: FrameType | None) -> None:
        self.received.append(signum)  # a list append: safe in a handler, no lock taken

    def take(self) -> list[int]:
        received, self.received = self.received, []
        return received


#: written to the gate's wakeup pipe (no signal has number 0): deliver the stop signal again
_REDELIVER = 0
#: how often one stop is delivered again before the gate gives up on raising it (the waits
#: between deliveries double up to 50 ms: about 5 s in all)
_REDELIVERIES = 100
#: modules whose C callers may drop what is raised in them (Python 3.14 renames warnings')
_DROPPING_MODULES = frozenset({"warnings", "_py_warnings"})
#: frames looked at for one of them, innermost first
_FRAMES_LOOKED_AT = 64


def _in_dropping_module(frame: FrameType | None) -> bool:
    """True if ``frame`` or one of its callers runs the warnings machinery: ``os.fork()`` of
    a threaded process warns (Python 3.12+) and clears whatever was raised meanwhile, in
    its own frames or in what they call (linecache, codecs, a logging handler)."""
    for _ in range(_FRAMES_LOOKED_AT):
        if frame is None:
            return False
        if frame.f_globals.get("__name__") in _DROPPING_MODULES:
            return True
        frame = frame.f_back
    return False


class SignalGate:
    """Records signals and serves them at safe points of the main thread (sync ``run()``)."""

    def __init__(
        self,
        hooks: dict[str, Callable[[], None]],
        on_stop_signal: Callable[[int], None] | None = None,
        stopping: threading.Event | None = None,
    ) -> None:
        self.hooks = hooks  # "reload" / "reopen" -> callable run in the main thread
        self.on_stop_signal = on_stop_signal  # runs in the watcher thread, not in a handler
        self.stopping = stopping if stopping is not None else threading.Event()
        self.stop_signal: int | None = None  # the first stop signal received
        self._pending: list[str] = []  # requested actions not yet served, no duplicates
        self._critical_depth = 0
        self._acting = False
        self._raise_on_stop = True  # False once shutdown has begun: nothing left to unwind
        self._open = False  # hooks are served only between the end of setup and shutdown
        self._held = False  # hold() is in force
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._main = threading.main_thread()
        self._pid = os.getpid()
        self._shutdown_begun = False
        self._redeliveries = 0
        self._in_unraisable_hook = False

    def install(self, early: EarlySignals | None = None) -> None:
        """Take the signals over; what ``early`` recorded meanwhile counts as received now
        (a stop is then raised at the first safe point: at once, outside critical())."""
        threading.Thread(target=self._watch, name="daemonkit-signals", daemon=True).start()
        self._unraisable_before = sys.unraisablehook
        sys.unraisablehook = self._on_unraisable
        for signum in STOP_SIGNALS:
            signal.signal(signum, self._on_stop)
        for signum in ACTION_SIGNALS:
            signal.signal(signum, self._on_action)
        for received in early.take() if early is not None else []:
            if received in STOP_SIGNALS:
                self._on_stop(received, None)
            else:
                self._on_action(received, None)

    # -- handlers: record, then (for stop) unwind -----------------------------------------

    def _on_stop(self, signum: int, frame: FrameType | None) -> None:
        if self.stop_signal is None:
            self.stop_signal = signum
        if (self._critical_depth == 0 and self._raise_on_stop
                and self._redeliveries < _REDELIVERIES
                and (self._in_unraisable_hook or _in_dropping_module(frame))):
            # here what is raised would be dropped (see _in_dropping_module; or our own
            # unraisable hook): the stop is delivered again a moment later, to land in the
            # service's code, and until then it has not happened (``stopping`` stays unset,
            # so no stop-driven cleanup begins that the StopDaemon would then cut)
            self._redeliveries += 1
            self._poke(_REDELIVER)
            return
        self._poke(signum)
        if self._critical_depth == 0 and self._raise_on_stop:
            self._raise_on_stop = False  # once: a second TERM must not cut the unwinding
            raise StopDaemon(signum)

    def _on_action(self, signum: int, frame: FrameType | None) -> None:
        if not self._raise_on_stop:
            return  # shutting down: nothing to reload any more
        action = ACTION_SIGNALS[signal.Signals(signum)]
        if action not in self._pending:
            self._pending.append(action)
        self.serve_pending()

    def _on_unraisable(self, unraisable: sys.UnraisableHookArgs) -> None:
        """A StopDaemon that CPython dropped: the stop signal arrived while the main thread
        ran code whose exceptions go nowhere (an at-fork hook of logging's, a ``__del__``),
        so nothing was unwound, and a second signal would not raise again. Arm the raise
        again and have the watcher thread deliver the signal once more, to land in the
        service's own code."""
        if (isinstance(unraisable.exc_value, StopDaemon) and os.getpid() == self._pid
                and threading.current_thread() is self._main  # (ours: raised by _on_stop)
                and not self._shutdown_begun and self._redeliveries < _REDELIVERIES):
            self._redeliveries += 1
            self._raise_on_stop = True
            self._in_unraisable_hook = True  # the signal may be back before we return
            try:
                self._poke(_REDELIVER)
            finally:
                self._in_unraisable_hook = False  # (no call after this: no handler runs)
            return
        self._unraisable_before(unraisable)

    def _poke(self, signum: int) -> None:
        try:
            os.write(self._wake_w, bytes([signum]))
        except BlockingIOError:
            pass  # the watcher is behind; stopping is already being set

    def _watch(self) -> None:
        while True:
            select.select([self._wake_r], [], [])
            try:
                data = os.read(self._wake_r, 64)
            except BlockingIOError:
                continue
            for signum in data:
                if signum == _REDELIVER and self.stop_signal is not None:
                    # at once the first time (a __del__ or hook that dropped it has ended),
                    # then later each time: the main thread may still be in the warnings
                    # machinery, which reads source lines and may log
                    if self._redeliveries > 1:
                        time.sleep(min(0.05, 0.00025 * 2 ** self._redeliveries))
                    signal.pthread_kill(self._main.ident or 0, self.stop_signal)
                elif signum in STOP_SIGNALS and not self.stopping.is_set():
                    self.stopping.set()
                    if self.on_stop_signal is not None:
                        self.on_stop_signal(signum)

    # -- safe points -------------------------------------------------------------------------

    def critical(self) -> Critical:
        """A block that a stop request does not interrupt (main thread only)."""
        return Critical(self)

    def hold(self) -> None:
        """setup() has finished; until open() a stop is only recorded (the few steps that
        announce readiness must not be cut: shutdown() would be skipped)."""
        self._critical_depth += 1
        self._held = True

    def open(self) -> None:
        """The service runs: serve what arrived meanwhile, and from now on at once."""
        if self._held:
            self._held = False
            self._critical_depth -= 1
        self._open = True
        self.serve_pending()

    def serve_pending(self) -> None:
        """Run pending hooks if we are at a safe point, then honour a deferred stop.

        Hooks must not raise: they run wherever the main thread was interrupted, and an
        exception there would unwind unrelated code.
        """
        if not self._open or self._critical_depth or self._acting:
            return
        self._acting = True
        self._critical_depth += 1
        try:
            while self._pending:
                self.hooks[self._pending.pop(0)]()
        finally:
            self._critical_depth -= 1
            self._acting = False
        self._raise_if_stopping()

    def _raise_if_stopping(self) -> None:
        if self.stop_signal is not None and self._raise_on_stop:
            self._raise_on_stop = False
            raise StopDaemon(self.stop_signal)

    def begin_shutdown(self) -> None:
        """From now on stop requests are only recorded: shutdown() must run to its end."""
        self._shutdown_begun = True
        self._raise_on_stop = False
        self._open = False
        self._pending.clear()

    def request(self, action: str) -> None:
        """Ask for an action from another thread: delivered as the matching signal."""
        signum = {name: num for num, name in ACTION_SIGNALS.items()}[action]
        signal.pthread_kill(self._main.ident or 0, signum)

    def forget(self) -> None:
        """Close the wakeup pipe (a forked child's copy; its watcher thread is the daemon's)."""
        for fd in (self._wake_r, self._wake_w):
            try:
                os.close(fd)
            except OSError:
                pass


class AlsoAsync:
    """``async with`` meaning the same as ``with``: entering and leaving a critical block
    never awaits (see ``aiolifecycle`` for why that matters)."""

    def __enter__(self) -> None:
        raise NotImplementedError

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> None:
        self.__enter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.__exit__(exc_type, exc, tb)


class Critical(AlsoAsync):
    """Context manager behind ``Daemon.critical()`` in a service whose ``run()`` is sync; nests.

    ``async with`` works as ``with`` does, for an async hook run on the daemon's loop.
    """

    def __init__(self, gate: SignalGate) -> None:
        self.gate = gate

    def __enter__(self) -> None:
        if threading.current_thread() is not self.gate._main:
            raise RuntimeError("critical() is for the main thread; threads watch `stopping`")
        self.gate._critical_depth += 1

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.gate._critical_depth -= 1
        if self.gate._critical_depth == 0:
            # runs deferred hooks and raises a deferred stop, also when the block failed: a
            # loop that catches the block's exception and goes on must still be stopped (the
            # block's exception is kept as the StopDaemon's __context__)
            self.gate.serve_pending()


class StopEvent(threading.Event):
    """``Daemon.stopping``: a ``threading.Event`` that coroutines can await as well.

    Threads call ``wait()``; coroutines ``await stopping.wait_async()``, on any event loop.
    ``set()`` wakes both (it is called from threads, never from a signal handler).
    """

    def __init__(self) -> None:
        super().__init__()
        self._waiters_lock = threading.Lock()
        self._waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []

    def set(self) -> None:
        super().set()
        with self._waiters_lock:
            waiters, self._waiters = self._waiters, []
        for loop, future in waiters:
            try:
                loop.call_soon_threadsafe(_resolve, future)
            except RuntimeError:
                pass  # that loop is closed: nobody waits there any more

    async def wait_async(self, timeout: float | None = None) -> bool:
        """Wait until the daemon is asked to stop; True if it was (False after ``timeout``)."""
        import asyncio

        if self.is_set():
            return True
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        with self._waiters_lock:
            if self.is_set():
                return True
            self._waiters.append((loop, future))
        try:
            async with asyncio.timeout(timeout):
                await future
        except TimeoutError:
            return False
        finally:
            with self._waiters_lock:
                if (loop, future) in self._waiters:
                    self._waiters.remove((loop, future))
        return True


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
