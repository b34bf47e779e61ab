"""Facts about other processes, read from the kernel.

``stop`` must know the moment the daemon is gone, and the daemon is not our child, so
``waitpid`` is out. A pidfd (Linux 5.3+) becomes readable when the process exits, which gives
the exact moment without polling and cannot be fooled by pid reuse once it is open.
"""

from __future__ import annotations

import os
import select
import signal
import time


def open_pidfd(pid: int) -> int | None:
    """A pidfd for ``pid``, or None if the process is already gone."""
    try:
        return os.pidfd_open(pid)
    except ProcessLookupError:
        return None


def wait_pidfd(pidfd: int, timeout_s: float) -> bool:
    """Wait until the process behind ``pidfd`` exits; True if it did within ``timeout_s``."""
    poller = select.poll()
    poller.register(pidfd, select.POLLIN)
    deadline = time.monotonic() + timeout_s
    while True:  # poll() may be interrupted by a signal: retry with the time left
        remaining_ms = max(0, int((deadline - time.monotonic()) * 1000))
        if poller.poll(remaining_ms):
            return True
        if remaining_ms == 0:
            return False


def send_signal(pidfd: int, signum: int) -> bool:
    """Signal through the pidfd (never a recycled pid); False if the process already exited."""
    try:
        signal.pidfd_send_signal(pidfd, signum)
    except ProcessLookupError:
        return False
    return True


def terminate(pid: int, timeout_s: float) -> str:
    """SIGTERM, wait, SIGKILL, wait: ``"stopped"``, ``"killed"``, ``"gone"`` or ``"unkillable"``.

    Signals go through a pidfd, so a pid recycled while we wait is never hit. Raises
    PermissionError when the process is not ours to signal.
    """
    pidfd = open_pidfd(pid)
    if pidfd is None:
        return "gone"
    try:
        if not send_signal(pidfd, signal.SIGTERM):
            return "gone"
        if wait_pidfd(pidfd, timeout_s):
            return "stopped"
        send_signal(pidfd, signal.SIGKILL)
        return "killed" if wait_pidfd(pidfd, 10.0) else "unkillable"
    finally:
        os.close(pidfd)


def make_sure_gone(pid: int | None, timeout_s: float, grace_s: float) -> None:
    """A process that must not linger (a daemon that failed to start), whatever its state.

    One that is exiting by itself gets ``grace_s`` to finish its cleanup before the signals.
    A process we may not signal (it dropped to another user) is left to exit on its own.
    """
    if pid is None:
        return
    pidfd = open_pidfd(pid)
    if pidfd is None:
        return
    try:
        if wait_pidfd(pidfd, grace_s):
            return
    finally:
        os.close(pidfd)
    try:
        terminate(pid, min(timeout_s, 5.0))
    except PermissionError:
        pass


def uptime_s(pid: int) -> float | None:
    """Seconds since ``pid`` started, from ``/proc`` (no cooperation from the process needed)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat_file:
            stat = stat_file.read()
        with open("/proc/uptime", "rb") as uptime_file:
            system_uptime = float(uptime_file.read().split()[0])
    except (FileNotFoundError, ProcessLookupError):
        return None
    # the command name (field 2) may contain spaces and parentheses: split after the last ')'
    fields = stat[stat.rindex(b")") + 2 :].split()
    start_ticks = int(fields[19])  # field 22 of proc(5), counted from field 3
    return max(0.0, system_uptime - start_ticks / os.sysconf("SC_CLK_TCK"))


def format_duration(seconds: float) -> str:
    """``3m12s``, ``2h05m``, ``4d03h``: short enough for a status line."""
    total = int(seconds)
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d{hours:02d}h"
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"
