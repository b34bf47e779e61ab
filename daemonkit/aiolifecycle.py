"""Signals in, safe actions out, for a service whose ``run()`` is a coroutine.

The same promises as ``lifecycle`` (stop never cuts a ``critical()`` block, reload never runs
before ``setup()`` finished nor during ``shutdown()``, a reload counts as critical), kept the
asyncio way: signals arrive through ``loop.add_signal_handler`` (asyncio's wakeup fd: the
handler only records, the callback runs in the loop), and a stop *cancels* the task it
targets at its current ``await`` instead of raising between two bytecodes:

* while ``setup()`` runs, the target is the task awaiting it: a stop there ends the start;
* once the service runs, the target is the ``run()`` task. The cancellation waits while any
  ``critical()`` block is open, in any task, or while a reload runs; it happens once.

A reload (HUP, or the control socket's ``reload``) is a task of its own that awaits the
service's ``reload()``; requests arriving meanwhile coalesce and run one after the other.
Nothing here interrupts code between two awaits, so async hooks have no "interruption point"
caveat: ``reload()`` may take any lock ``run()`` uses.
"""

from __future__ import annotations

import asyncio
import signal
import threading
from collections.abc import Awaitable, Callable
from types import TracebackType

_ACTIONS = {signal.SIGUSR1: "reopen", signal.SIGHUP: "reload"}
_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class AsyncGate:
    """Records signals in the loop and acts on them when it is safe."""

    def __init__(
        self,
        hooks: dict[str, Callable[[], Awaitable[None]]],
        on_stop_signal: Callable[[int], None],
    ) -> None:
        self.hooks = hooks  # "reload" / "reopen" -> coroutine function, awaited in the loop
        self.on_stop_signal = on_stop_signal  # sets `stopping`, tells systemd; in the loop
        self.stop_signal: int | None = None  # the first stop signal received
        self._loop: asyncio.AbstractEventLoop | None = None
        self._target: asyncio.Task[object] | None = None  # what a stop cancels
        self._critical_depth = 0  # open blocks, all tasks together
        self._depth_by_task: dict[asyncio.Task[object] | None, int] = {}
        self._pending: list[str] = []
        self._acting: asyncio.Task[None] | None = None
        self._open = False  # actions are served between the end of setup and shutdown
        self._shutting_down = False
        self._cancelled = False  # a stop cancels once: a second TERM must not cut unwinding

    def install(self, target: asyncio.Task[object]) -> None:
        """In the loop: take over the signals; ``target`` is the task running setup()."""
        self._loop = asyncio.get_running_loop()
        self._target = target
        for signum in _STOP_SIGNALS:
            self._loop.add_signal_handler(signum, self._on_stop, signum)
        for signum, action in _ACTIONS.items():
            self._loop.add_signal_handler(signum, self._on_action, action)

    def uninstall(self) -> None:
        if self._loop is None:
            return
        for signum in (*_STOP_SIGNALS, *_ACTIONS):
            self._loop.remove_signal_handler(signum)

    # -- callbacks in the loop ---------------------------------------------------------------

    def _on_stop(self, signum: int) -> None:
        if self.stop_signal is not None:
            return
        self.stop_signal = signum
        self.on_stop_signal(signum)
        self._cancel_if_safe()

    def _on_action(self, action: str) -> None:
        if self._shutting_down:
            return  # nothing to reload any more
        if action not in self._pending:
            self._pending.append(action)
        self._serve_pending()

    def _serve_pending(self) -> None:
        if self._open and self._acting is None and self._pending:
            self._acting = asyncio.get_running_loop().create_task(self._act())

    async def _act(self) -> None:
        try:
            while self._pending and self._open:
                await self.hooks[self._pending.pop(0)]()
        finally:
            self._acting = None
            self._cancel_if_safe()

    def _cancel_if_safe(self) -> None:
        if (self.stop_signal is None or self._cancelled or self._shutting_down
                or self._critical_depth or self._acting is not None or self._target is None):
            return
        self._cancelled = True
        self._target.cancel()

    # -- the runtime's steps -------------------------------------------------------------------

    def hold(self) -> None:
        """setup() has finished: until open() a stop is only recorded (the few steps that
        announce readiness must not be cut: shutdown() would be skipped)."""
        self._target = None

    def open(self, run_task: asyncio.Task[object]) -> None:
        """run() is running: a stop now cancels it; serve what arrived meanwhile."""
        self._target = run_task
        self._open = True
        self._serve_pending()
        self._cancel_if_safe()

    def begin_shutdown(self) -> None:
        """From now on stop requests are only recorded: shutdown() must run to its end."""
        self._shutting_down = True
        self._open = False
        self._pending.clear()
        self._target = None

    @property
    def acting(self) -> asyncio.Task[None] | None:
        """The reload/reopen task running now, if any (shutdown waits for it)."""
        return self._acting

    def request(self, action: str) -> None:
        """Ask for an action from another thread (the control socket's)."""
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._on_action, action)

    def critical(self) -> AsyncCritical:
        return AsyncCritical(self)


class AsyncCritical:
    """``async with self.critical():`` (or plain ``with``) in an async service; nests, and
    counts across tasks: the stop waits until no task is inside a block.

    Once the stop has cancelled a task, that task begins no new unit of work: entering a
    block that is not nested in one of its own raises ``CancelledError`` (entering does not
    await, so the pending cancellation would otherwise land at the first ``await`` inside the
    new block). Other tasks (the handlers of connections already accepted) may still enter
    blocks to finish their work: the stop waits for them.
    """

    def __init__(self, gate: AsyncGate) -> None:
        self.gate = gate

    def __enter__(self) -> None:
        gate = self.gate
        if gate._loop is None or threading.current_thread() is not threading.main_thread():
            raise RuntimeError("critical() is for the daemon's event loop")
        task = asyncio.current_task()
        depth = gate._depth_by_task.get(task, 0)
        if depth == 0 and gate._cancelled and task is gate._target:
            raise asyncio.CancelledError("the daemon is stopping")
        gate._depth_by_task[task] = depth + 1
        gate._critical_depth += 1

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        gate = self.gate
        task = asyncio.current_task()
        depth = gate._depth_by_task.pop(task) - 1
        if depth:
            gate._depth_by_task[task] = depth
        gate._critical_depth -= 1
        if gate._critical_depth == 0:
            gate._cancel_if_safe()  # lands at the target's next await, not here

    async def __aenter__(self) -> None:
        self.__enter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.__exit__(exc_type, exc, tb)
