"""Open file description (OFD) write locks, observed without being taken.

Why OFD locks (``F_OFD_SETLK``, Linux 3.15+) and not ``flock`` or classic POSIX locks:

* like ``flock``, an OFD lock belongs to the open file description, so it survives the forks
  of detaching (the daemon inherits the descriptor ``start`` locked) and goes away when the
  last descriptor closes, however the process dies; classic POSIX locks belong to a process,
  are not inherited and vanish when *any* descriptor of the file is closed;
* a write lock needs a descriptor opened for writing: a user who may only read the pidfile
  can take a read lock at most, and a read lock is never taken for a daemon;
* ``F_OFD_GETLK`` answers "does anyone hold a write lock?" without taking a lock, so
  ``status`` never disturbs a concurrent ``start`` (probing with ``flock`` did, for a moment).

``F_OFD_GETLK`` reports ``l_pid = -1`` for OFD locks: the kernel does not say who holds one.
``/proc/PID/fdinfo/N`` does, for the descriptions of that process (its ``lock:`` lines), so a
pid read from the pidfile is believed only if that process holds the write lock itself.
"""

from __future__ import annotations

import errno
import fcntl
import os
import re
import struct

#: struct flock on Linux x86-64 and aarch64: l_type, l_whence, l_start, l_len, l_pid (+pad)
_FLOCK = "hhqqi4x"

_FDINFO_WRITE_LOCK = re.compile(
    rb"^lock:\s+\d+:\s+OFDLCK\s+ADVISORY\s+WRITE\s+-?\d+\s+([0-9a-f]+):([0-9a-f]+):(\d+)\s",
    re.MULTILINE)


def _flock_struct(lock_type: int) -> bytes:
    return struct.pack(_FLOCK, lock_type, os.SEEK_SET, 0, 0, 0)  # the whole file


def try_write_lock(fd: int) -> bool:
    """Take the write lock on the whole file without waiting; False if another holds a lock."""
    try:
        fcntl.fcntl(fd, fcntl.F_OFD_SETLK, _flock_struct(fcntl.F_WRLCK))
    except OSError as exc:
        if exc.errno in (errno.EAGAIN, errno.EACCES):
            return False
        raise
    return True


def write_locked(fd: int) -> bool:
    """Whether some other open file description holds a write lock on the file.

    Asks as a reader would (``F_RDLCK``): only a write lock conflicts with that, so read
    locks (anyone who can read the file can take one) are never mistaken for a daemon.
    """
    answer = fcntl.fcntl(fd, fcntl.F_OFD_GETLK, _flock_struct(fcntl.F_RDLCK))
    return bool(struct.unpack(_FLOCK, answer)[0] == fcntl.F_WRLCK)


def process_holds_write_lock(pid: int, inode: tuple[int, int]) -> bool | None:
    """Whether ``pid`` holds an OFD write lock on ``inode`` (``(st_dev, st_ino)``).

    None when we may not look (another user's process, and we are not root). Descriptors are
    checked in numeric order: the pidfile's is among the first a daemon opens.
    """
    device, number = inode
    wanted = (os.major(device), os.minor(device), number)
    fd_dir = f"/proc/{pid}/fd"
    try:
        names = sorted(os.listdir(fd_dir), key=int)
    except FileNotFoundError:
        return False
    except PermissionError:
        return None
    for name in names:
        try:
            target = os.stat(f"{fd_dir}/{name}")
        except OSError:
            continue  # closed meanwhile, or a descriptor we may not follow
        if (target.st_dev, target.st_ino) != inode:
            continue
        try:
            with open(f"/proc/{pid}/fdinfo/{name}", "rb") as fdinfo:
                text = fdinfo.read()
        except OSError:
            continue
        for match in _FDINFO_WRITE_LOCK.finditer(text):
            major, minor, ino = match.groups()
            if (int(major, 16), int(minor, 16), int(ino)) == wanted:
                return True
    return False


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def exchange(path_a: str, path_b: str) -> None:
    """Swap two names atomically (``renameat2(RENAME_EXCHANGE)``, Linux 3.15+).

    The one atomic step that lets a file be replaced while checking what was replaced:
    ``rename`` would clobber a file another process locked a moment ago, unseen.
    """
    import ctypes  # only here: rarely needed, and costly to import

    libc = ctypes.CDLL(None, use_errno=True)
    renameat2 = getattr(libc, "renameat2", None)
    if renameat2 is None:
        raise OSError(errno.ENOSYS, "renameat2 is not available")
    result = renameat2(_AT_FDCWD, os.fsencode(path_a), _AT_FDCWD, os.fsencode(path_b),
                       _RENAME_EXCHANGE)
    if result != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))


def write_lock_holders(inode: tuple[int, int], limit: int = 8) -> list[int]:
    """Processes holding an OFD write lock on ``inode``, found by looking through /proc (all
    of them as root; otherwise one's own): for an error message, never on a hot path."""
    holders = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and process_holds_write_lock(int(entry), inode):
            holders.append(int(entry))
            if len(holders) >= limit:
                break
    return holders
