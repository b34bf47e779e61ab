"""Where the daemon's words go, and how logrotate gets them moved.

With ``--log-file``, Python logging *and* file descriptors 1 and 2 point at the log file, so a
``print`` or a traceback from a crash (written by the interpreter to fd 2) is never lost.
Logging writes to ``sys.stderr``, i.e. fd 2; reopening the file is then one ``open`` and two
``dup2`` calls, atomic for every writer of the process: a line goes either to the old file or
to the new one, never nowhere. That is what lets logrotate work without ``copytruncate``
(which loses the lines written between its copy and its truncate).
"""

from __future__ import annotations

import errno
import logging
import os
import stat
import sys

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s[%(process)d]: %(message)s"


class LogTarget:
    """The log file (or stderr) of one daemon."""

    def __init__(self, path: str | None, level: str = "INFO", syslog: str | None = None,
                 service_uid: int | None = None) -> None:
        self.path = path
        self.level = level.upper()
        self.syslog = syslog  # the syslog socket's path, or None
        #: the user the daemon runs as (``--user``), whose own file it may append to
        self.service_uid = service_uid
        self._fd: int | None = None
        self._created = False  # whether this start created the file (then it may chown it)

    def open_file(self) -> int | None:
        """Open the log file in the command process, where a failure can still be reported."""
        if self.path is None:
            return None
        try:
            self._fd = _open_log(self.path, os.O_CREAT | os.O_EXCL)
            self._created = True
        except FileExistsError:
            self._fd = self._open_existing()
        return self._fd

    def _open_existing(self) -> int:
        """A file that was already there, unless another user could have planted it.

        In a directory others can create entries in (``/tmp``), another user can create the
        log file first: the daemon's output, secrets in tracebacks included, would then go to
        a file that user reads and rewrites (``O_NOFOLLOW`` stops a symlink, not a plain
        file). There the file must belong to root, to this user or to the service user, not
        be writable by others, and have one name only (a second may be a hard link); elsewhere
        any file is the administrator's choice. The directory judged is the one the file was
        opened in (held open), not a path looked up again, which its owner could have
        swapped meanwhile.
        """
        assert self.path is not None
        directory, name = os.path.split(os.path.abspath(self.path))
        dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            fd = _open_log(name, 0, dir_fd)
            try:
                why = _why_not_ours(fd, os.fstat(dir_fd), {0, os.geteuid(), self.service_uid})
            except BaseException:
                os.close(fd)
                raise
        finally:
            os.close(dir_fd)
        if why is not None:
            os.close(fd)
            raise PermissionError(errno.EPERM, why)
        return fd

    def reopen_if_replaced(self) -> None:
        """Open the path again if the file was renamed or removed since :meth:`open_file`
        (``restart`` opens it before stopping the old daemon; logrotate may run meanwhile)."""
        if self.path is None or self._fd is None:
            return
        opened = os.fstat(self._fd)
        try:
            current = os.stat(self.path)
            if (current.st_dev, current.st_ino) == (opened.st_dev, opened.st_ino):
                return
        except FileNotFoundError:
            pass
        os.close(self._fd)
        self._fd = None
        self.open_file()

    @property
    def fd(self) -> int | None:
        return self._fd

    def attach_stdio(self) -> None:
        """Point fds 1 and 2 at the log file (foreground mode; DaemonContext does it detached)."""
        if self._fd is not None:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(self._fd, 1)
            os.dup2(self._fd, 2)

    def configure_logging(self) -> None:
        root = logging.getLogger()
        for handler in list(root.handlers):
            root.removeHandler(handler)
        stderr_handler = logging.StreamHandler(sys.stderr)
        stderr_handler.setFormatter(logging.Formatter(LOG_FORMAT))
        root.addHandler(stderr_handler)
        if self.syslog is not None:
            from logging.handlers import SysLogHandler  # only here: a heavy import

            syslog = SysLogHandler(address=self.syslog)
            syslog.setFormatter(logging.Formatter("%(name)s[%(process)d]: %(message)s"))
            root.addHandler(syslog)
        root.setLevel(self.level)

    def chown(self, uid: int, gid: int) -> None:
        """Hand a file we created to the service user (an existing file keeps its owner: the
        open descriptor can write to it anyway)."""
        if self._created and self._fd is not None and os.geteuid() == 0:
            os.fchown(self._fd, uid, gid)

    def reopen(self) -> None:
        """Open the path anew and move fds 1, 2 there (after logrotate renamed the file)."""
        if self.path is None:
            return
        sys.stdout.flush()
        sys.stderr.flush()
        try:
            new_fd = _open_log(self.path, os.O_CREAT | os.O_EXCL)
        except FileExistsError:  # logrotate's `create`, or a file planted after the rename
            new_fd = self._open_existing()
        os.dup2(new_fd, 1)
        os.dup2(new_fd, 2)
        os.close(new_fd)
        if self._fd is not None:  # the original descriptor still points at the rotated file
            os.close(self._fd)
            self._fd = None
        logging.getLogger("daemonkit").info("reopened log file %s", self.path)


def _why_not_ours(fd: int, directory: os.stat_result,
                  trusted_uids: set[int | None]) -> str | None:
    """Why the log file ``fd``, opened in ``directory``, may not be written, or None."""
    if directory.st_uid in trusted_uids and not directory.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return None  # nobody else can create entries there
    info = os.fstat(fd)
    if info.st_uid not in trusted_uids:
        return (f"belongs to uid {info.st_uid}, in a directory others can write (refused: "
                "its owner would read and rewrite the log)")
    if stat.S_ISREG(info.st_mode) and info.st_mode & stat.S_IWOTH:
        return ("is writable by every user, in a directory others can write (refused: "
                "anyone could rewrite the log)")
    if stat.S_ISREG(info.st_mode) and info.st_nlink != 1:
        return (f"has {info.st_nlink} hard links, in a directory others can write (refused: "
                "it may be another file's second name)")
    return None


def _open_log(path: str, extra_flags: int, dir_fd: int | None = None) -> int:
    """Open for appending; never follows a symlink, never blocks (a FIFO named as the log
    would hang ``start`` before any timeout applies), and refuses anything that is not a
    regular file or a character device such as ``/dev/null`` (OSError EINVAL)."""
    flags = os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK
    try:
        fd = os.open(path, flags | extra_flags, 0o640, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno == errno.ENXIO:  # a FIFO nobody reads
            raise OSError(errno.EINVAL, "not a regular file") from exc
        raise
    mode = os.fstat(fd).st_mode
    if not (stat.S_ISREG(mode) or stat.S_ISCHR(mode)):
        os.close(fd)
        raise OSError(errno.EINVAL, "not a regular file")
    os.set_blocking(fd, True)
    return fd
