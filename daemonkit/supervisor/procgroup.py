"""Whether a stopped program's process group still has a running member.

A stop is done when the program's whole group is gone, not only its leader: helpers it
started (``sh -c 'worker & exec main'``) must not outlive it. ``killpg(pgid, 0)`` answers
"someone is there", but a zombie counts: a member that has exited and waits for its parent
to reap it. The leader's orphans are reaped by PID 1, which some inits do a second late and
some never do (a container whose PID 1 is a shell script or any program that only waits for
its own child): the stop then took a second longer, or never finished. So when ``killpg``
finds the group, ``/proc`` says whether any member is more than a zombie.

The members found running are remembered per group, and looked at first next time (a
stopping group is checked every few milliseconds; a scan of ``/proc`` reads one file per
process of the machine); the whole of ``/proc`` is read again only once none of them runs,
so a member forked meanwhile is not missed.
"""

from __future__ import annotations

import os

#: pgid -> members seen running at the last look
_running_members: dict[int, list[int]] = {}


def group_alive(pgid: int) -> bool:
    """True while a process of group ``pgid`` runs (zombies do not count)."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        _running_members.pop(pgid, None)
        return False
    except PermissionError:
        return True  # someone is there, and not ours to look at
    known = _running_members.get(pgid, ())
    if any(_runs_in(pid, pgid) for pid in known):
        return True
    try:
        entries = os.listdir("/proc")
    except OSError:
        return True  # no /proc: trust killpg
    running = [int(name) for name in entries if name.isdigit() and _runs_in(int(name), pgid)]
    if running:
        _running_members[pgid] = running
        return True
    _running_members.pop(pgid, None)
    return False


def _runs_in(pid: int, pgid: int) -> bool:
    """``pid`` exists, is in group ``pgid`` and is not a zombie (or dead)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            data = stat.read()
    except OSError:
        return False
    fields = data.rsplit(b")", 1)[1].split()  # the name may hold spaces and parentheses
    return fields[0] not in (b"Z", b"X") and int(fields[2]) == pgid
