"""Whether a stopped program's process group still has a running member.

A stop is done when the program's whole group is gone, not only its leader: helpers it
started (``sh -c 'worker & exec main'``) must not outlive it. ``killpg(pgid, 0)`` answers
"someone is there", but a zombie counts: a member that has exited and waits for its parent
to reap it. The leader's orphans are reaped by PID 1, which some inits do a second late and
some never do (a container whose PID 1 is a shell script or any program that only waits for
its own child): the stop then took a second longer, or never finished. So when ``killpg``
finds the group, ``/proc`` says whether any member is more than a zombie.

One :class:`GroupWatch` per lingering group remembers the members it saw running and looks
at them first next time (a lingering group is checked every few milliseconds, and a scan of
``/proc`` reads one file per process of the machine); the whole of ``/proc`` is read again
only once none of them runs, so a member forked meanwhile is not missed.

Where ``/proc`` shows another PID namespace (a container without a ``/proc`` of its own),
its pids are not ours: ``killpg`` alone is trusted, and a group that SIGKILL has reached
counts as gone a moment later whatever it says (``process.AFTER_SIGKILL_S``).
"""

from __future__ import annotations

import functools
import os


class GroupWatch:
    """The process group ``pgid`` of a stopped leader, until no member of it runs."""

    def __init__(self, pgid: int) -> None:
        self.pgid = pgid
        #: whether the last answer came from /proc (exact) or from killpg alone, which
        #: counts zombies too
        self.exact = False
        self._seen_running: list[int] = []

    def alive(self) -> bool:
        self.exact = False
        try:
            os.killpg(self.pgid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True  # someone is there, and not ours to look at
        if not _proc_is_ours():
            return True  # /proc of another PID namespace: no pid there means ours
        if any(_runs_in(pid, self.pgid) for pid in self._seen_running):
            self.exact = True
            return True
        try:
            entries = os.listdir("/proc")
        except OSError:
            return True
        self.exact = True
        self._seen_running = [int(name) for name in entries
                              if name.isdigit() and _runs_in(int(name), self.pgid)]
        return bool(self._seen_running)


@functools.cache
def _proc_is_ours() -> bool:
    """Whether /proc shows this process's PID namespace (a container without its own /proc
    mount shows the host's, where our pids mean other processes)."""
    try:
        with open("/proc/self/stat", "rb") as stat:
            return int(stat.read().split(b" ", 1)[0]) == os.getpid()
    except (OSError, ValueError):
        return False


def _runs_in(pid: int, pgid: int) -> bool:
    """``pid`` exists, is in group ``pgid`` and runs: not a zombie, or a zombie leader whose
    other threads still run (a main thread that called pthread_exit shows as Z)."""
    fields = _stat_fields(f"/proc/{pid}/stat")
    if fields is None or int(fields[2]) != pgid:
        return False
    if fields[0] not in (b"Z", b"X"):
        return True
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return False
    for task in tasks:
        task_fields = _stat_fields(f"/proc/{pid}/task/{task}/stat")
        if task_fields is not None and task_fields[0] not in (b"Z", b"X"):
            return True
    return False


def _stat_fields(path: str) -> list[bytes] | None:
    """The fields after the command name (which may hold spaces and parentheses)."""
    try:
        with open(path, "rb") as stat:
            return stat.read().rsplit(b")", 1)[1].split()
    except OSError:
        return None
