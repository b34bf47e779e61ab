"""Calling a service's hooks, sync or ``async def``, from wherever they must run.

A service may write any hook as a coroutine function, and mix both kinds. The daemon has one
event loop for its whole life (what ``setup()`` creates, ``run()`` and ``shutdown()`` use):

* when ``run()`` is a coroutine the loop runs all the time, in the main thread; sync hooks are
  plain calls in it, async ones are awaited;
* when ``run()`` is sync, the main thread runs it and the loop runs only while an async hook
  does (``asyncio.Runner.run``), so async hooks still share one loop.

Hooks that run in other threads (``status_info``, ``handle_control`` in the control thread,
``healthy`` in the watchdog's) are handed to the loop when it runs, so an asyncio service
never needs thread-safe state, and a stuck loop shows as an unanswered hook; otherwise they
are called in their thread (a coroutine then gets a loop of that thread for the call).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import asyncio

#: ``inspect.CO_COROUTINE``: ``inspect`` itself costs a sync service ~5 ms of start-up
_CO_COROUTINE = 0x0080


def is_async(hook: Callable[..., Any]) -> bool:
    """``async def`` (also as a bound method), without importing ``inspect``."""
    code = getattr(getattr(hook, "__func__", hook), "__code__", None)
    return code is not None and bool(code.co_flags & _CO_COROUTINE)


def _is_awaitable(value: Any) -> bool:
    return hasattr(type(value), "__await__")


class HookCaller:
    """Owns the daemon's event loop and calls hooks on it when they need it."""

    def __init__(self) -> None:
        self._runner: asyncio.Runner | None = None
        self.loop: asyncio.AbstractEventLoop | None = None  # set while run() is a coroutine

    def runner(self) -> asyncio.Runner:
        if self._runner is None:
            import asyncio

            self._runner = asyncio.Runner()
        return self._runner

    def call(self, hook: Callable[..., Any], *args: Any) -> Any:
        """Main thread, loop not running: a sync hook is called, an async one run to its end."""
        result = hook(*args)
        if _is_awaitable(result):
            return self.runner().run(_await(result))
        return result

    async def call_async(self, hook: Callable[..., Any], *args: Any) -> Any:
        """In the loop: a sync hook is called (it blocks the loop while it runs), an async one
        awaited."""
        result = hook(*args)
        if _is_awaitable(result):
            return await result
        return result

    def call_from_thread(self, hook: Callable[..., Any], timeout_s: float, *args: Any) -> Any:
        """Another thread: on the loop if it runs (TimeoutError if it does not answer in
        ``timeout_s``), else in this thread."""
        loop = self.loop
        if loop is not None and loop.is_running():
            import asyncio

            future = asyncio.run_coroutine_threadsafe(self.call_async(hook, *args), loop)
            try:
                return future.result(timeout_s)
            except TimeoutError:
                future.cancel()
                raise TimeoutError(f"the event loop did not run {hook.__name__}() within "
                                   f"{timeout_s:g}s") from None
        result = hook(*args)
        if _is_awaitable(result):
            import asyncio

            return asyncio.run(_await(result))
        return result

    def close(self) -> None:
        """End the loop without waiting for its executor's threads (a thread blocked for
        good would otherwise keep the process past its stop timeout, and SIGKILL would look
        like a crash). Tasks still pending get a cancellation and a moment to unwind."""
        if self._runner is None:
            return
        import asyncio

        loop = self._runner.get_loop()
        self._runner = None
        self.loop = None
        try:
            pending = asyncio.all_tasks(loop)
            for task in pending:
                task.cancel()
            if pending:
                loop.run_until_complete(asyncio.wait(pending, timeout=1.0))
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            loop.close()  # shuts the default executor down without joining its threads


async def _await(awaitable: Any) -> Any:
    return await awaitable
