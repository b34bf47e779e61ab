"""The fork window: the daemon's signals blocked from just before a fork until the child
has reset its handlers.

Its own module because ctypes costs a few milliseconds to import, which only a daemon's own
process should pay (``status`` and ``stop`` import :mod:`daemonkit.lifecycle` too).
"""

from __future__ import annotations

import ctypes
import functools
import os
import signal
from collections.abc import Callable

from .lifecycle import ACTION_SIGNALS, STOP_SIGNALS


class _SignalSet(ctypes.Structure):
    """libc's sigset_t: 1024 bits on Linux (glibc and musl alike)."""

    _fields_ = [("bits", ctypes.c_ubyte * 128)]


#: PyDLL, not CDLL: the calls keep the GIL (nothing to gain from dropping it for a syscall)
_libc = ctypes.PyDLL(None)


class ForkSignalWindow:
    """Keep the daemon's signals blocked from just before a fork until the child has reset
    its handlers (:func:`default_signals_in_child`).

    Between ``fork()`` and that reset the child still has the daemon's handlers: a SIGTERM
    sent to a worker in that instant (``multiprocessing``'s ``terminate()`` of a worker just
    started) would write to the daemon's wakeup pipe and stop the daemon instead. Blocked,
    the signal waits in the child and is delivered once its handlers are the defaults.

    The hooks are libc's ``pthread_sigmask`` itself, called through ``functools.partial``
    with no Python code around it. ``signal.pthread_sigmask`` would not do: it runs the Python
    handlers of the signals it unblocks before it returns, that is inside the at-fork hook,
    where CPython prints and drops whatever they raise: the daemon's ``StopDaemon`` (a stop
    lost) or a child's ``KeyboardInterrupt``. Unblocked in C after daemonkit's other hooks, a
    signal is handled once ``os.fork()`` has returned, in the code that called it, on either
    side (hooks the service registers later still run after it).

    The window blocks and then unblocks exactly these signals, and saves no mask: a saved one
    would be shared by every thread (the GIL is released between one thread's ``before``
    hooks and its fork: logging's hook waits for a lock), so a fork could restore another
    thread's mask. daemonkit never blocks these signals in any thread, nor should a service:
    they are handled in the main thread whichever thread the kernel picks.
    """

    def __init__(self) -> None:
        blocked = self._blocked = _SignalSet()
        _libc.sigemptyset(ctypes.byref(blocked))
        for signum in (*STOP_SIGNALS, *ACTION_SIGNALS):
            _libc.sigaddset(ctypes.byref(blocked), int(signum))
        self.block = functools.partial(_libc.pthread_sigmask, int(signal.SIG_BLOCK),
                                       ctypes.byref(blocked), None)
        self.unblock = functools.partial(_libc.pthread_sigmask, int(signal.SIG_UNBLOCK),
                                         ctypes.byref(blocked), None)

    def register(self, child_hook: Callable[[], None]) -> None:
        """Install the window around ``child_hook``, the child's reset: blocked first (the
        last ``before`` hook registered runs first), unblocked after it in the child and
        after the hooks registered before in the parent."""
        os.register_at_fork(before=self.block, after_in_parent=self.unblock,
                            after_in_child=child_hook)
        os.register_at_fork(after_in_child=self.unblock)
