"""A minimal init for when the service is PID 1 (a container without tini or dumb-init).

PID 1 inherits every orphan of the container and must reap it, and the kernel does not apply
default signal actions to PID 1, so an unhandled SIGTERM would do nothing. The service's own
code cannot tell its children from adopted orphans, so the service runs in a child process
and this one only forwards signals to it and reaps everything, exiting with the service's
status. The signal handlers only write to a wakeup fd; the loop does the work.
"""

from __future__ import annotations

import os
import select
import signal
from collections.abc import Callable

_FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2,
              signal.SIGQUIT)


def run_as_init(serve: Callable[[], int], title: str) -> int:
    wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    previous_wakeup = signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)
    for signum in (*_FORWARDED, signal.SIGCHLD):
        signal.signal(signum, _record_only)
    service_pid = os.fork()
    if service_pid == 0:
        signal.set_wakeup_fd(previous_wakeup)
        for signum in (*_FORWARDED, signal.SIGCHLD):
            signal.signal(signum, signal.SIG_DFL)
        os.close(wake_r)
        os.close(wake_w)
        code = 1
        try:
            code = serve()
        finally:
            os._exit(code)
    _set_title(title)
    while True:
        select.select([wake_r], [], [])
        try:
            received = os.read(wake_r, 256)
        except BlockingIOError:
            continue
        for signal_number in received:
            if signal_number != signal.SIGCHLD:
                os.kill(service_pid, signal_number)
        status = _reap_all(service_pid)
        if status is not None:
            return status


def _record_only(signum: int, frame: object) -> None:
    """The wakeup fd already holds the signal number; nothing else to do here."""


def _reap_all(service_pid: int) -> int | None:
    """Reap every exited child; the service's exit status once it has exited."""
    service_status = None
    while True:
        try:
            pid, wait_status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return service_status
        if pid == 0:
            return service_status
        if pid == service_pid:
            service_status = os.waitstatus_to_exitcode(wait_status)
            if service_status < 0:
                service_status = 128 - service_status


def _set_title(title: str) -> None:
    try:
        import setproctitle
    except ImportError:
        return
    setproctitle.setproctitle(title)
