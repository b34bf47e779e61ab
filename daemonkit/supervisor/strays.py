"""Finding what a SIGKILLed predecessor left behind.

The spawn helper (or PR_SET_PDEATHSIG) stops each program's main process when the
supervisor dies, but not the processes those started, nor anything if the helper was killed
with the supervisor. Every child carries ``DAEMONKIT_SUPERVISOR=<pidfile>`` in its
environment; the pidfile lock guarantees one supervisor per pidfile, so at start-up any
process with our marker belongs to a dead predecessor and is killed with its group.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time

from .process import SUPERVISOR_ID_ENV


def find_strays(supervisor_id: str) -> list[int]:
    """Pids whose environment carries our marker (root sees every process's environ)."""
    return pids_with_environment(SUPERVISOR_ID_ENV, supervisor_id)


def pids_with_environment(name: str, value: str) -> list[int]:
    """Pids (other than ours) whose environment has ``name=value`` and that we may read."""
    needle = f"{name}={value}".encode()
    me = os.getpid()
    found: list[int] = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as environ:
                if needle in environ.read().split(b"\0"):
                    found.append(int(entry))
        except OSError:
            continue  # gone, or not ours to read
    return found


def kill_strays(supervisor_id: str, grace_s: float = 2.0) -> list[int]:
    """SIGTERM each stray's group, SIGKILL what is left after ``grace_s``; returns the pids."""
    strays = find_strays(supervisor_id)
    for signum in (signal.SIGTERM, signal.SIGKILL):
        for pid in strays:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(os.getpgid(pid), signum)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signum)
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline and find_strays(supervisor_id):
            time.sleep(0.02)  # bounded, start-up only: strays are not our children to wait
        if not find_strays(supervisor_id):
            break
    return strays
