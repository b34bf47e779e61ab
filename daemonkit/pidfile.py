"""A pidfile whose kernel lock, not its content, says whether the daemon runs.

Why not ``lockfile.pidlockfile.PIDLockFile``: it creates the file with ``O_EXCL`` and treats
its existence as the lock, so a daemon killed by SIGKILL, the OOM killer or a power cut leaves
a file that blocks every later start; tools then guess with ``kill(pid, 0)``, which lies once
the pid is reused. Here the lock is an OFD write lock on the open file (see ``filelock``): the
kernel drops it when the last descriptor closes, however the process dies.

Rules this class follows (each closes a known hole of the field):

* open with ``O_NOFOLLOW`` (a symlink planted in a shared directory cannot redirect the
  write) and ``O_CLOEXEC`` (an exec'd child does not inherit the lock), never truncating
  before the lock is held (truncating first wipes a live daemon's pid);
* refuse a pidfile owned by another user, or in a directory others may write without the
  sticky bit (OpenSSH's rule for its files): its owner could write any pid into it, or
  unlink it and let a second instance start;
* after the lock is taken, check that the inode locked is still the one at the path: a
  stopping daemon may have unlinked it between our ``open`` and our lock, and two processes
  holding locks on two different inodes would both think they are alone;
* unlink only while holding the lock, so the check above is sufficient;
* a pid is believed only if that process holds the write lock (``observe``): a pid written
  by someone else never makes ``stop`` signal an unrelated process.

The lock is taken by the ``start`` command before it forks; the descriptor is inherited by
the detached daemon, which writes its own pid once its control socket is bound. Any other
child forked while a ``PidFile`` holds the lock closes its copy at the fork (an at-fork
hook): an OFD lock lives as long as any descriptor of it, so a worker forked without exec
would otherwise keep a daemon's lock after the daemon died, and its ``release()`` (python-
daemon calls it when a worker leaves the ``DaemonContext``) would unlink the live daemon's
pidfile. In the child, as with ``PIDLockFile``, ``i_am_locking()`` is False and
``release()`` raises ``NotMyLock``.

The class speaks the ``lockfile`` package's ``LockBase`` interface with its signature
(``PidFile(path, threaded=False, timeout=None)``) and exceptions, and passes lockfile's own
compliance suite except for one test: ``break_lock`` of a lock a live process holds is
refused (``AlreadyLocked``), because removing a live daemon's pidfile lets a second instance
start. It also works as ``daemon.DaemonContext(pidfile=PidFile(path))``.
"""

from __future__ import annotations

import enum
import errno
import os
import stat
import time
import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from types import TracebackType

import lockfile

from . import filelock
from .errors import PidfileError
from .exitcodes import Exit

#: how many times to retry when the path's inode changed under us; each retry means another
#: process unlinked or replaced the file in between, which cannot go on for long
_INODE_RETRIES = 50
#: what a pidfile may contain: nothing, or a pid and a newline (a few bytes)
_MAX_PIDFILE_SIZE = 32


class HolderState(enum.Enum):
    NOBODY = "nobody"  # no file, or no write lock on it (a leftover)
    STARTING = "starting"  # write-locked, no pid written yet (the daemon is detaching)
    VERIFIED = "verified"  # write-locked by the process whose pid the file holds
    UNVERIFIED = "unverified"  # write-locked; the pid's process is not ours to inspect
    IMPOSTOR = "impostor"  # write-locked, but the pid in the file does not hold the lock


@dataclass(frozen=True)
class Holder:
    """One observation of who holds a pidfile."""

    state: HolderState
    pid: int | None = None

    @property
    def locked(self) -> bool:
        return self.state is not HolderState.NOBODY


#: the PidFile objects of this process that hold a lock (see _children_let_go)
_holding: weakref.WeakSet[PidFile] = weakref.WeakSet()


def _children_let_go() -> None:
    for pidfile in list(_holding):
        if not pidfile._for_forked_daemon:
            pidfile.forget()


os.register_at_fork(after_in_child=_children_let_go)


class PidFile:
    """An OFD-locked pidfile.

    :param path: where the pidfile lives; made absolute at construction, because the daemon
        changes its working directory.
    :param threaded: accepted for ``lockfile`` compatibility; a lock is per open file
        description, so two ``PidFile`` objects exclude each other in any thread.
    :param timeout: ``lockfile`` semantics for :meth:`acquire`: ``None`` or a negative number
        fails at once with ``AlreadyLocked`` when another holds the lock; a positive number
        waits up to that many seconds, then raises ``LockTimeout``.
    :param trusted_uids: owners besides root and this process's user that the pidfile and
        its directory may have (the service user a daemon drops to).
    """

    def __init__(self, path: str | os.PathLike[str], threaded: bool = False,
                 timeout: float | None = None, *, trusted_uids: Iterable[int] = ()) -> None:
        self.path = os.path.abspath(os.fspath(path))
        self.threaded = threaded
        self.timeout = timeout
        self.trusted_uids = {0, os.geteuid(), *trusted_uids}
        self._fd: int | None = None  # the locked descriptor; None while we hold no lock
        #: taken by lock_for_start() for a daemon about to be forked: children keep it until
        #: that daemon writes its own pid
        self._for_forked_daemon = False

    # -- lockfile.LockBase interface -------------------------------------------------------

    def acquire(self, timeout: float | None = None) -> None:
        """Lock the pidfile and write the current pid into it.

        If this object already holds the lock (taken by :meth:`lock_for_start` before the
        fork, and inherited), only the pid is rewritten: the detached daemon records its own,
        final pid.
        """
        if self._fd is None:
            wait = self.timeout if timeout is None else timeout
            self._hold(self._open_and_lock(wait if wait is not None and wait > 0 else 0.0,
                                           for_daemon=True))
        self.write_pid(os.getpid())

    def release(self) -> None:
        """Unlink the pidfile (if it is still ours and we may) and drop the lock."""
        if self._fd is None:
            if self.observe().locked:
                raise lockfile.NotMyLock(f"{self.path} is locked by another process")
            raise lockfile.NotLocked(f"{self.path} is not locked")
        fd, self._fd = self._fd, None
        _holding.discard(self)
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
        return self._fd is not None or self.observe().locked

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
            return _pid_in(fd)
        finally:
            os.close(fd)

    def break_lock(self) -> None:
        """Remove a pidfile left behind by a dead process.

        A lock held by a live process is never broken: removing its file would let a second
        instance start. That raises ``AlreadyLocked``.
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
        self.release()

    # -- daemonkit additions ----------------------------------------------------------------

    @property
    def fileno(self) -> int | None:
        """The locked descriptor, which must survive the detach (``files_preserve``)."""
        return self._fd

    def lock_for_start(self) -> None:
        """Take the lock without waiting and empty the file, before forking the daemon.

        Emptying it means nobody reads the pid of a previous, dead daemon while the new one is
        still coming up: until the daemon writes its pid, observers see STARTING.
        """
        fd = self._open_and_lock(0.0, for_daemon=True)
        self._hold(fd, for_forked_daemon=True)
        os.ftruncate(fd, 0)

    def adopt(self, fd: int) -> None:
        """Hold the lock of a descriptor another process locked and passed us (SCM_RIGHTS):
        the lock belongs to the open file description, so it is ours now as well (taken on
        it, if it was not yet). Refused if it is not the file at our path, or another
        description holds a lock on it. Never inherited by an exec'd child."""
        if self._fd is not None:
            raise lockfile.AlreadyLocked(f"{self.path} is already locked by this object")
        if not _same_inode(fd, self.path) or not filelock.try_write_lock(fd):
            raise PidfileError(f"the descriptor handed over is not {self.path}'s lock")
        os.set_inheritable(fd, False)
        self._hold(fd)

    def _hold(self, fd: int, for_forked_daemon: bool = False) -> None:
        self._fd = fd
        self._for_forked_daemon = for_forked_daemon
        _holding.add(self)

    def write_pid(self, pid: int) -> None:
        """Write over the old content, then cut it: a reader never sees an empty file here,
        and the first line is always a whole pid."""
        if self._fd is None:
            raise lockfile.NotLocked(f"{self.path} is not locked by this process")
        data = f"{pid}\n".encode()
        os.pwrite(self._fd, data, 0)
        os.ftruncate(self._fd, len(data))
        if pid == os.getpid():
            self._for_forked_daemon = False  # the daemon has it: its own children let go

    def forget(self) -> None:
        """Close our descriptor without unlinking: the lock now belongs to the forked daemon."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        _holding.discard(self)

    def observe(self, *, for_start: bool = False) -> Holder:
        """Who holds the pidfile, seen without taking any lock.

        Raises :class:`PidfileError` when the file exists but cannot be opened or is not a
        pidfile, because then nobody can tell (``status`` turns that into LSB 4), and when it
        is locked but cannot be believed. In a directory others may create files in (/tmp),
        a locked pidfile of a user not trusted (see ``trusted_uids``) is refused: there any
        local user can create the file first, lock it, write its own pid and answer on the
        control socket beside it, and ``start`` would report "already running" for a daemon
        that does not exist. ``for_start``: ``start``'s own rules, the directory's owner
        too, since ``start`` would refuse to lock a pidfile there anyway. The other commands
        accept a directory of another user (/run/svc of a daemon started as svc, which
        root's status, stop and logrotate's reopen-logs must still reach).
        """
        fd = self._open_for_reading()
        if fd is None:
            return Holder(HolderState.NOBODY)
        try:
            _check_is_pidfile(fd, self.path)
            if not filelock.write_locked(fd):
                return Holder(HolderState.NOBODY)
            if for_start:
                self._check_safe_directory()
            if for_start or _others_may_create_in(os.path.dirname(self.path)):
                self._check_safe(fd)
            pid = _pid_in(fd)
            if pid is None:
                return Holder(HolderState.STARTING)
            info = os.fstat(fd)
        finally:
            os.close(fd)
        holds = filelock.process_holds_write_lock(pid, (info.st_dev, info.st_ino))
        if holds is None:
            return Holder(HolderState.UNVERIFIED, pid)
        return Holder(HolderState.VERIFIED if holds else HolderState.IMPOSTOR, pid)

    def exists(self) -> bool:
        return os.path.lexists(self.path)

    def remove_if_unlocked(self, companions: Iterable[str] = (),
                           while_locked: Callable[[], object] | None = None) -> bool:
        """Unlink the file if no process holds it; True if the path is gone afterwards.

        ``companions`` (the daemon's control socket) are unlinked while the lock is held, and
        the lock is taken even if the pidfile is gone (created for the moment): a daemon
        binds its socket only while it holds the lock, so a new daemon's socket is never
        mistaken for a leftover. ``while_locked`` runs with the lock held, before anything is
        unlinked (a file that two locks cover in turn is removed under both). Raises OSError
        if a companion cannot be unlinked.
        """
        present = [path for path in companions if os.path.lexists(path)]
        try:
            fd = self._open_and_lock(0.0, create=bool(present) or while_locked is not None)
        except FileNotFoundError:
            return True
        except lockfile.AlreadyLocked:
            return False
        try:
            try:
                if while_locked is not None:
                    while_locked()
                for path in present:
                    os.unlink(path)
            finally:
                os.unlink(self.path)  # also when a companion stays: we may have created it
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

    def _open_and_lock(self, wait_s: float, create: bool = True,
                       for_daemon: bool = False) -> int:
        """Open (or create) the file and take its write lock; ``for_daemon``: the lock will
        say that a daemon runs, so the file must be one nobody else can tamper with."""
        deadline = time.monotonic() + wait_s
        flags = os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC | (os.O_CREAT if create else 0)
        if for_daemon:  # before anything is created in a directory we would refuse
            self._check_safe_directory()
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
            try:
                if for_daemon:
                    self._check_safe(fd)
                locked = self._lock_until(fd, deadline, waiting=wait_s > 0)
            except BaseException:
                os.close(fd)
                raise
            if locked != fd:
                os.close(fd)  # a hostage: the fresh file that replaced it is what we hold
            if locked is None:
                continue  # the file was replaced while we looked: lock what is there now
            if _same_inode(locked, self.path):
                try:
                    _check_is_pidfile(locked, self.path)
                except BaseException:
                    os.close(locked)  # never keep a lock on a file we refused
                    raise
                _make_readable(locked)
                return locked
            os.close(locked)  # unlinked or replaced between open and lock: lock the new one
        raise PidfileError(f"{self.path}: keeps being replaced by another process")

    def _lock_until(self, fd: int, deadline: float, waiting: bool) -> int | None:
        """The locked descriptor: ``fd``, or a fresh file's that replaced a hostage; None if
        the file changed under us. Raises AlreadyLocked/LockTimeout if a daemon holds it past
        ``deadline`` (polling, bounded)."""
        while True:
            if filelock.try_write_lock(fd):
                return fd
            if not filelock.write_locked(fd):
                # Blocked by read locks alone: someone who may only read the file holds it
                # hostage (a daemon only ever takes write locks). Nobody runs: replace it.
                return self._replace_hostage()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                if waiting:
                    raise lockfile.LockTimeout(f"{self.path} is locked by another process")
                raise lockfile.AlreadyLocked(f"{self.path} is locked by another process")
            time.sleep(min(0.01, remaining))

    def _replace_hostage(self) -> int | None:
        """Put a fresh, locked file at the path in place of one only read locks hold.

        The names are swapped atomically and what was swapped out is looked at: if it turns
        out to be write-locked (another ``start`` locked it a moment ago), the swap is undone
        at once, so no two processes ever both hold a lock on the inode at the path.
        """
        fresh = f"{self.path}.{os.urandom(8).hex()}.new"
        fd = os.open(fresh, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                     0o644)
        try:
            if not filelock.try_write_lock(fd):
                os.close(fd)
                os.unlink(fresh)
                return None  # read-locked before we could lock it: look at the path again
            filelock.exchange(fresh, self.path)
        except OSError as exc:
            os.close(fd)
            os.unlink(fresh)
            raise PidfileError(f"{self.path} is read-locked by another process, which is not a "
                               f"daemon, and cannot be replaced ({exc.strerror}): remove "
                               "it") from exc
        swapped_out = os.open(fresh, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            live = filelock.write_locked(swapped_out)
        finally:
            os.close(swapped_out)
        if live:
            filelock.exchange(fresh, self.path)  # give it back; ours is at `fresh` again
            os.unlink(fresh)
            os.close(fd)
            return None
        os.unlink(fresh)  # the hostage, now without a name
        return fd

    def _check_safe(self, fd: int) -> None:
        """Refuse a pidfile another user could rewrite, or unlink to let a second start in."""
        owner = os.fstat(fd).st_uid
        if owner not in self.trusted_uids:
            raise PidfileError(f"{self.path} belongs to uid {owner}, not to this user "
                               "(refused: its owner could write any pid into it)")

    def _check_safe_directory(self) -> None:
        directory = os.path.dirname(self.path)
        try:
            info = os.stat(directory)
        except FileNotFoundError:
            return  # the open below says that the directory does not exist
        if info.st_uid not in self.trusted_uids:
            raise PidfileError(f"{directory} belongs to uid {info.st_uid}, not to this user "
                               "(refused: its owner could replace the pidfile); use a "
                               "directory of your own")
        if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH) and not info.st_mode & stat.S_ISVTX:
            raise PidfileError(f"{directory} may be written by other users (refused: they "
                               "could replace the pidfile); use a directory of your own")


def _others_may_create_in(directory: str) -> bool:
    try:
        return bool(os.stat(directory).st_mode & (stat.S_IWGRP | stat.S_IWOTH))
    except OSError:
        return True  # cannot tell: the careful answer


def _pid_in(fd: int) -> int | None:
    first_line = os.pread(fd, 64, 0).split(b"\n", 1)[0].strip()
    return int(first_line) if first_line.isdigit() and int(first_line) > 0 else None


def _same_inode(fd: int, path: str) -> bool:
    try:
        at_path = os.stat(path, follow_symlinks=False)
    except FileNotFoundError:
        return False
    held = os.fstat(fd)
    return (held.st_dev, held.st_ino) == (at_path.st_dev, at_path.st_ino)


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
