"""Signals in, safe actions out, for a service whose ``run()`` is a coroutine.

The same promises as ``lifecycle`` (a stop never cuts a ``critical()`` block, a reload never
runs before ``setup()`` finished nor during ``shutdown()``, a reload counts as critical),
kept the asyncio way: signals arrive through ``loop.add_signal_handler`` (asyncio's wakeup
fd: the handler only records, the callback runs in the loop), and a stop *cancels* the task
it targets at its current ``await`` instead of raising between two bytecodes:

* while ``setup()`` runs, the target is the task awaiting it: a stop there ends the start;
  it waits while a ``critical()`` block is open anywhere;
* once the service runs, the target is the ``run()`` task. The cancellation waits while a
  block is open in ``run()`` or in a task it started (they inherit a context variable, so a
  ``TaskGroup``'s children count), and from the stop on those tasks begin no new block: a
  cancellation of ``run()`` reaching its children never lands inside one. Tasks that are
  not ``run()``'s (the handlers of a server started in ``setup()``) may still enter blocks
  to finish what they hold; before ``shutdown()`` the runtime waits until no block is open
  in any task, also when a task opens its next block in the instant the last one closes (a
  queue consumer with a backlog), so ``shutdown()`` never closes what a block uses. A task
  that takes new work should look at ``stopping`` first, or it delays ``shutdown()``.

A reload (HUP, or the control socket's ``reload``) is a task of its own that awaits the
service's ``reload()``; requests arriving meanwhile coalesce and run one after the other.
Nothing here interrupts code between two awaits, so async hooks have no "interruption point"
caveat: ``reload()`` may take any lock ``run()`` uses.
"""

from __future__ import annotations

import asyncio
import contextvars
import signal
import threading
from collections.abc import Awaitable, Callable
from types import TracebackType

from .lifecycle import ACTION_SIGNALS, STOP_SIGNALS, AlsoAsync, EarlySignals

#: True in the run() task and in every task started from it
_IN_RUN: contextvars.ContextVar[bool] = contextvars.ContextVar("daemonkit_in_run", default=False)


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
        self._in_run_phase = False  # open() called: the target is the run() task
        self._open_blocks = 0  # all tasks together
        self._open_run_blocks = 0  # in run() and the tasks it started
        self._depth_by_task: dict[asyncio.Task[object] | None, int] = {}
        self._no_blocks_open = asyncio.Event()
        self._no_blocks_open.set()
        self._pending: list[str] = []
        self._acting: asyncio.Task[None] | None = None
        self._open = False  # actions are served between the end of setup and shutdown
        self._shutting_down = False
        self._cancelled = False  # a stop cancels once: a second TERM must not cut unwinding

    def install(self, target: asyncio.Task[object], early: EarlySignals) -> None:
        """In the loop: take over the signals; ``target`` is the task running setup(); what
        ``early`` recorded before counts as received now."""
        self._loop = asyncio.get_running_loop()
        self._target = target
        for signum in STOP_SIGNALS:
            self._loop.add_signal_handler(signum, self._on_stop, signum)
        for signum, action in ACTION_SIGNALS.items():
            self._loop.add_signal_handler(signum, self._on_action, action)
        for received in early.take():
            if received in STOP_SIGNALS:
                self._on_stop(received)
            else:
                self._on_action(ACTION_SIGNALS[signal.Signals(received)])

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
        blocks = self._open_run_blocks if self._in_run_phase else self._open_blocks
        if (self.stop_signal is None or self._cancelled or self._shutting_down or blocks
                or self._acting is not None or self._target is None):
            return
        self._cancelled = True
        self._target.cancel()

    # -- the runtime's steps -------------------------------------------------------------------

    def hold(self) -> None:
        """setup() has finished: until open() a stop is only recorded (the few steps that
        announce readiness must not be cut: shutdown() would be skipped)."""
        self._target = None

    def start_run(self, run: Callable[[], Awaitable[object]]) -> asyncio.Task[object]:
        """The run() task, marked so that the tasks it starts are known as its own; a stop
        now cancels it. What arrived meanwhile is served."""

        async def marked() -> object:
            _IN_RUN.set(True)
            return await run()

        task = asyncio.get_running_loop().create_task(marked())
        self._target = task
        self._in_run_phase = True
        self._open = True
        self._serve_pending()
        self._cancel_if_safe()
        return task

    def begin_shutdown(self) -> None:
        """From now on stop requests are only recorded: shutdown() must run to its end."""
        self._shutting_down = True
        self._open = False
        self._pending.clear()
        self._target = None

    async def blocks_closed(self) -> None:
        """Until no critical() block is open in any task (a handler finishing its reply)."""
        while self._open_blocks:  # (the event may have been set and cleared since it woke us)
            await self._no_blocks_open.wait()

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

    # -- critical() bookkeeping ----------------------------------------------------------------

    def _enter_block(self) -> None:
        task = asyncio.current_task()
        depth = self._depth_by_task.get(task, 0)
        in_run = _IN_RUN.get()
        stopping = self.stop_signal is not None and not self._shutting_down
        if depth == 0 and stopping and (in_run or task is self._target):
            raise asyncio.CancelledError("the daemon is stopping")
        self._depth_by_task[task] = depth + 1
        self._open_blocks += 1
        self._open_run_blocks += in_run
        self._no_blocks_open.clear()

    def _leave_block(self) -> None:
        task = asyncio.current_task()
        depth = self._depth_by_task.pop(task) - 1
        if depth:
            self._depth_by_task[task] = depth
        self._open_blocks -= 1
        self._open_run_blocks -= _IN_RUN.get()
        if not self._open_blocks:
            self._no_blocks_open.set()
        self._cancel_if_safe()  # lands at the target's next await, not here


class AsyncCritical(AlsoAsync):
    """``async with self.critical():`` (or plain ``with``) in an async service; nests.

    Entering never awaits, so a pending cancellation would land at the first ``await``
    inside the block: that is why ``run()``'s tasks begin no new block once a stop is asked
    (entering raises ``CancelledError``), see the module docstring.
    """

    def __init__(self, gate: AsyncGate) -> None:
        self.gate = gate

    def __enter__(self) -> None:
        if self.gate._loop is None or threading.current_thread() is not threading.main_thread():
            raise RuntimeError("critical() is for the daemon's event loop")
        self.gate._enter_block()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.gate._leave_block()
