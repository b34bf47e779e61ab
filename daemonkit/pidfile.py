"""A pidfile whose kernel lock, not its content, says whether the daemon runs.

Why not ``lockfile.pidlockfile.PIDLockFile``: it creates the file with ``O_EXCL`` and treats
its existence as the lock, so a daemon killed by SIGKILL, the OOM killer or a power cut leaves
a file that blocks every later start; tools then guess with ``kill(pid, 0)``, which lies once
the pid is reused. Here the lock is an ``flock`` on the open file: the kernel drops it when
the last descriptor closes, which happens however the process dies.

Rules this class follows (each closes a known hole of the field):

* open with ``O_NOFOLLOW`` (a symlink planted in a shared directory cannot redirect the
  write) and ``O_CLOEXEC`` (an exec'd child does not inherit the lock), never truncating
  before the lock is held (truncating first wipes a live daemon's pid);
* after ``flock`` succeeds, check that the inode locked is still the one at the path: a
  stopping daemon may have unlinked it between our ``open`` and our ``flock``, and two
  processes holding locks on two different inodes would both think they are alone;
* unlink only while holding the lock, so the check above is sufficient.

The lock is taken by the ``start`` command before it forks, and the descriptor is inherited
by the detached daemon, which then writes its own pid (``acquire`` on an object that already
holds the lock just writes the pid: that is the hand-over ``DaemonContext(pidfile=...)``
performs when it enters the pidfile's context after detaching).

The class speaks the ``lockfile`` package's ``LockBase`` interface (``acquire``, ``release``,
``is_locked``, ``i_am_locking``, ``read_pid``, ``break_lock``) and raises its exception
types, so code written against ``PIDLockFile`` can switch to it.
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
import time
from types import TracebackType

import lockfile

from .errors import PidfileError
from .exitcodes import Exit

#: how many times to retry when the path's inode changed under us; each retry means another
#: process unlinked or replaced the file in between, which cannot go on for long
_INODE_RETRIES = 50


class PidFile:
    """An ``flock``-held pidfile.

    :param path: where the pidfile lives; made absolute at construction, because the daemon
        changes its working directory.
    :param timeout: ``lockfile`` semantics for :meth:`acquire`: ``None`` or a negative number
        fails at once with ``AlreadyLocked`` when another process holds the lock; a positive
        number waits up to that many seconds, then raises ``LockTimeout``.
    """

    def __init__(self, path: str | os.PathLike[str], timeout: float | None = None) -> None:
        self.path = os.path.abspath(os.fspath(path))
        self.timeout = timeout
        self._fd: int | None = None  # the locked descriptor; None while we hold no lock

    # -- lockfile.LockBase interface -------------------------------------------------------

    def acquire(self, timeout: float | None = None) -> None:
        """Lock the pidfile and write the current pid into it.

        If this object already holds the lock (it was taken before a fork and inherited), only
        the pid is rewritten: the detached daemon records its own, final pid.
        """
        if self._fd is None:
            wait = self.timeout if timeout is None else timeout
            self._fd = self._open_and_lock(wait if wait is not None and wait > 0 else 0.0)
        self.write_pid(os.getpid())

    def release(self) -> None:
        """Unlink the pidfile (if it is still ours and we may) and drop the lock."""
        if self._fd is None:
            raise lockfile.NotLocked(f"{self.path} is not locked by this process")
        fd, self._fd = self._fd, None
        try:
            if _same_inode(fd, self.path):
                try:
                    os.unlink(self.path)
                except PermissionError:
                    # After a privilege drop the daemon may no longer write the directory; the
                    # stop command (root) removes the file once the process is gone.
                    pass
        finally:
            os.close(fd)

    def is_locked(self) -> bool:
        """True if some process (this one included) holds the lock."""
        if self._fd is not None:
            return True
        return self.holder_locked()

    def i_am_locking(self) -> bool:
        return self._fd is not None

    def read_pid(self) -> int | None:
        """The pid written in the file, or None if there is no file or no valid pid in it.

        The content is informative only: whether that process runs is decided by the lock.
        """
        fd = self._open_for_reading()
        if fd is None:
            return None
        try:
            data = os.read(fd, 64)
        finally:
            os.close(fd)
        first_line = data.split(b"\n", 1)[0].strip()
        return int(first_line) if first_line.isdigit() and int(first_line) > 0 else None

    def break_lock(self) -> None:
        """Remove a pidfile left behind by a dead process.

        An ``flock`` held by a live process cannot be broken from outside, and removing its
        file would allow a second instance: that raises ``AlreadyLocked``.
        """
        if self._fd is not None:
            self.release()
            return
        try:
            fd = self._open_and_lock(0.0, create=False)
        except FileNotFoundError:
            return
        try:
            os.unlink(self.path)
        finally:
            os.close(fd)

    def __enter__(self) -> PidFile:
        self.acquire()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._fd is not None:
            self.release()

    # -- daemonkit additions ----------------------------------------------------------------

    @property
    def fileno(self) -> int | None:
        """The locked descriptor, which must survive the detach (``files_preserve``)."""
        return self._fd

    def lock_for_start(self) -> None:
        """Take the lock without waiting and empty the file, before forking the daemon.

        Emptying it means a concurrent ``start`` or ``status`` never reports the pid of a
        previous, dead daemon while the new one is still coming up.
        """
        self._fd = self._open_and_lock(0.0)
        os.ftruncate(self._fd, 0)

    def write_pid(self, pid: int) -> None:
        if self._fd is None:
            raise lockfile.NotLocked(f"{self.path} is not locked by this process")
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, f"{pid}\n".encode(), 0)

    def forget(self) -> None:
        """Close our descriptor without unlinking: the lock now belongs to the forked daemon."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def holder_locked(self) -> bool:
        """Probe whether another process holds the lock (a shared-lock attempt that fails).

        Raises :class:`PidfileError` when the file exists but cannot be opened, because then
        nobody can tell (``status`` turns that into LSB 4).
        """
        fd = self._open_for_reading()
        if fd is None:
            return False
        try:
            _check_is_pidfile(fd, self.path)
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)  # also drops the shared lock if we got it
        return False

    def holder_pid(self) -> int | None:
        """The pid in the file, if that process really holds the file open.

        A pid written by someone else (a user who may write the pidfile's directory) must not
        make root signal an unrelated process: the process must have the pidfile's inode among
        its open descriptors. Without permission to look (another user's process, not root),
        the pid is returned unverified; signalling it would then fail anyway.
        """
        pid = self.read_pid()
        if pid is None:
            return None
        try:
            held = os.stat(self.path, follow_symlinks=False)
        except FileNotFoundError:
            return None
        return pid if _process_holds(pid, (held.st_dev, held.st_ino)) else None

    def exists(self) -> bool:
        return os.path.lexists(self.path)

    def remove_if_unlocked(self, companion: str | None = None) -> bool:
        """Unlink the file if no process holds it; True if the path is gone afterwards.

        ``companion`` (the daemon's control socket) is unlinked while the lock is held, and
        the lock is taken even if the pidfile is gone (created for the moment): a daemon
        binds its socket only while it holds the lock, so a new daemon's socket is never
        mistaken for a leftover. Raises OSError if the companion cannot be unlinked.
        """
        if companion is None or not os.path.lexists(companion):
            try:
                self.break_lock()
            except lockfile.AlreadyLocked:
                return False
            return not os.path.lexists(self.path)
        try:
            fd = self._open_and_lock(0.0, create=True)
        except lockfile.AlreadyLocked:
            return False
        try:
            try:
                os.unlink(companion)
            finally:
                os.unlink(self.path)  # also when the companion stays: we may have created it
        finally:
            os.close(fd)
        return True

    # -- internals ---------------------------------------------------------------------------

    def _open_for_reading(self) -> int | None:
        """A read-only descriptor on the pidfile, None if there is none; never blocks."""
        try:
            _refuse_special_file(self.path)
            return os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise _pidfile_error(self.path, exc) from exc

    def _open_and_lock(self, wait_s: float, create: bool = True) -> int:
        deadline = time.monotonic() + wait_s
        flags = os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC | (os.O_CREAT if create else 0)
        for _ in range(_INODE_RETRIES):
            try:
                _refuse_special_file(self.path)
                fd = os.open(self.path, flags, 0o644)
            except FileNotFoundError:
                if not create:
                    raise
                # ENOENT with O_CREAT: the directory is missing, or a filesystem such as
                # /proc or /sys that holds no files of ours
                why = ("cannot be created in that directory"
                       if os.path.isdir(os.path.dirname(self.path)) else
                       "directory does not exist")
                raise _pidfile_error(self.path, None, why) from None
            except OSError as exc:
                raise _pidfile_error(self.path, exc) from exc
            if not _lock_until(fd, deadline):
                os.close(fd)
                if wait_s > 0:
                    raise lockfile.LockTimeout(f"{self.path} is locked by another process")
                raise lockfile.AlreadyLocked(f"{self.path} is locked by another process")
            if _same_inode(fd, self.path):
                try:
                    _check_is_pidfile(fd, self.path)
                except BaseException:
                    os.close(fd)  # never keep a lock on a file we refused
                    raise
                _make_readable(fd)
                return fd
            os.close(fd)  # unlinked or replaced between open and flock: lock the new one
        raise PidfileError(f"{self.path}: keeps being replaced by another process")


def _lock_until(fd: int, deadline: float) -> bool:
    """Try to take the exclusive lock, retrying until ``deadline`` (polling, bounded)."""
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            time.sleep(min(0.01, remaining))


def _same_inode(fd: int, path: str) -> bool:
    try:
        at_path = os.stat(path, follow_symlinks=False)
    except FileNotFoundError:
        return False
    held = os.fstat(fd)
    return (held.st_dev, held.st_ino) == (at_path.st_dev, at_path.st_ino)


#: what a pidfile may contain: nothing, or a pid and a newline (a few bytes)
_MAX_PIDFILE_SIZE = 32


def _check_is_pidfile(fd: int, path: str) -> None:
    """Refuse to lock, empty or remove anything but a pidfile.

    ``--pidfile`` pointed by mistake at a config file or a device node must not have it
    emptied by ``start`` or deleted by ``stop``.
    """
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        raise PidfileError(f"{path} is not a regular file (refused as a pidfile)")
    if info.st_size > _MAX_PIDFILE_SIZE:
        raise PidfileError(f"{path} does not look like a pidfile (refusing to touch it)")
    content = os.pread(fd, _MAX_PIDFILE_SIZE, 0).strip()
    if content and not content.isdigit():
        raise PidfileError(f"{path} does not look like a pidfile (refusing to touch it)")


def _refuse_special_file(path: str) -> None:
    """Never even open a device node or FIFO named as a pidfile (opening can have effects)."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not (stat.S_ISREG(mode) or stat.S_ISLNK(mode)):  # a symlink is refused by O_NOFOLLOW
        raise PidfileError(f"{path} is not a regular file (refused as a pidfile)")


def _process_holds(pid: int, inode: tuple[int, int]) -> bool:
    fd_dir = f"/proc/{pid}/fd"
    try:
        descriptors = os.listdir(fd_dir)
    except FileNotFoundError:
        return False
    except PermissionError:
        return True  # cannot verify; see holder_pid
    for name in descriptors:
        try:
            target = os.stat(f"{fd_dir}/{name}")
        except OSError:
            continue  # closed meanwhile, or a descriptor we may not stat
        if (target.st_dev, target.st_ino) == inode:
            return True
    return False


def _make_readable(fd: int) -> None:
    """Mode 0644 whatever the umask: status and stop may run as another user."""
    try:
        os.fchmod(fd, 0o644)
    except PermissionError:
        pass  # someone else's file that we may lock but not chmod: leave its mode alone


def _pidfile_error(path: str, exc: OSError | None, why: str | None = None) -> PidfileError:
    if exc is not None and exc.errno == errno.ELOOP:
        why = "is a symbolic link (refused)"
    elif why is None and exc is not None:
        why = exc.strerror
    error = PidfileError(f"cannot open pidfile {path}: {why}")
    if exc is not None and exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        error.exit_code = Exit.NO_PRIVILEGE
    return error
