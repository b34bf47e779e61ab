"""A child's captured output: appended to a file, reopened on SIGUSR1, rotated by size; and
the syslog sink for ``stdout_syslog``/``stderr_syslog``.

Children write into a pipe the supervisor reads, not into the file itself: only then can the
supervisor reopen the file after logrotate moved it, or rotate it by size, without the child
knowing anything about it. Rotation is supervisord's: at ``maxbytes``, ``path`` becomes
``path.1``, ``path.1`` becomes ``path.2``..., ``backups`` of them kept. A path that is not a
regular file (``/dev/stdout``, a FIFO) is written to, never rotated.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import stat
from collections.abc import Callable

from . import safeopen

#: supervisord's strip_ansi: ESC [ ... up to one of these letters
_ANSI_RE = re.compile(rb"\x1b\[[^HfABCDRsuJKmhlp]*[HfABCDRsuJKmhlp]")


class LogFile:
    def __init__(self, path: str, maxbytes: int = 0, backups: int = 10,
                 strip_ansi: bool = False, *, private_dir: bool = False,
                 on_error: Callable[[str], None] | None = None) -> None:
        self.path = path
        self.maxbytes = maxbytes  # 0: never rotate by size
        self.backups = backups
        self.strip_ansi = strip_ansi
        self.private_dir = private_dir  # the directory is the supervisor's own, made 0700
        self.on_error = on_error  # told each new problem once (the supervisor's log)
        self._fd: int | None = None
        self._size = 0
        self._regular = True
        self._error: str | None = None
        self._created = False  # touch() made the file; it need not look again till reopen()

    @property
    def error(self) -> str | None:
        """The last problem opening or writing the file (None once a write succeeds)."""
        return self._error

    @error.setter
    def error(self, why: str | None) -> None:
        if why is not None and why != self._error and self.on_error is not None:
            self.on_error(why)
        self._error = why

    def _open(self) -> int:
        """Through :mod:`.safeopen`: never a planted symlink, hard link or FIFO."""
        if self._fd is None:
            directory = os.path.dirname(self.path) or "."
            if self.private_dir:
                safeopen.private_dir(directory)
            else:
                os.makedirs(directory, exist_ok=True)
            self._fd = safeopen.open_append(self.path)
            info = os.fstat(self._fd)
            self._regular = stat.S_ISREG(info.st_mode)
            self._size = info.st_size if self._regular else 0
        return self._fd

    def touch(self) -> None:
        """Create the file now (as supervisord does at spawn: ``tail -f`` finds it), and
        close it again until there is something to write: many programs write little or
        nothing, and every fd the supervisor holds is copied into each child it spawns and
        closed there at exec (2,000 programs' idle log files: 4,000 fds per spawn)."""
        if self._fd is not None or self._created:
            return
        try:
            self._open()
        except OSError as exc:
            self.error = _why(self.path, exc)
            return
        self.close()
        self._created = True

    def write(self, data: bytes) -> None:
        """Never raises: a full disk must not kill the supervisor or block the child."""
        if self.strip_ansi:
            data = _ANSI_RE.sub(b"", data)
        try:
            fd = self._open()
            if (self._regular and self.maxbytes and self._size
                    and self._size + len(data) > self.maxbytes):
                self._rotate()
                fd = self._open()
            os.write(fd, data)
            self._size += len(data)
            self.error = None
        except OSError as exc:
            self.error = _why(self.path, exc)

    def _rotate(self) -> None:
        """By the open fd and by names inside the opened directory: a symlink planted as
        ``path.N`` is renamed, never followed."""
        if self.backups <= 0:
            assert self._fd is not None
            os.ftruncate(self._fd, 0)  # not truncate(path): that follows a symlink
            self._size = 0
            return
        self.close()
        directory, name = os.path.split(self.path)
        dir_fd = os.open(directory or ".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            for index in range(self.backups - 1, 0, -1):
                with contextlib.suppress(FileNotFoundError):
                    safeopen.rename_within(dir_fd, f"{name}.{index}", f"{name}.{index + 1}")
            safeopen.rename_within(dir_fd, name, f"{name}.1")
        except OSError as exc:  # e.g. someone else's path.1 in a sticky /tmp: stay bounded
            self.error = f"{_why(self.path, exc)} (rotation failed: truncated instead)"
            os.ftruncate(self._open(), 0)
            self._size = 0
        finally:
            os.close(dir_fd)

    def clear(self) -> None:
        """Remove the file and its rotated copies; a new, empty file takes its place."""
        self.close()
        if self._regular:
            for index in range(1, max(self.backups, 0) + 1):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(f"{self.path}.{index}")
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)
        try:
            self._open()
        except OSError as exc:
            self.error = _why(self.path, exc)

    def reopen(self) -> None:
        """After logrotate renamed the file: the next write (or spawn) creates a fresh one."""
        self.close()
        self._created = False

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _why(path: str, exc: OSError) -> str:
    if isinstance(exc, safeopen.UnsafeLog):
        return str(exc.strerror)
    return f"{path}: {exc.strerror or exc}"


class SyslogSink:
    """Lines of child output to the syslog socket (``/dev/log``), as supervisord's
    ``*_syslog = true``: ``NAME line``, facility user, level info. Datagrams are sent without
    blocking; when syslog cannot keep up, lines are dropped (a log must never stall the
    supervisor)."""

    def __init__(self, address: str = "/dev/log", ident: str = "daemonkit-supervisor") -> None:
        self.address = address
        self.ident = ident
        self._sock: socket.socket | None = None

    def send(self, name: str, data: bytes) -> None:
        if self._sock is None:
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._sock.setblocking(False)
        text = data.decode("utf-8", "replace")
        for line in text.rstrip("\n").split("\n"):
            message = f"<14>{self.ident}[{os.getpid()}]: {name} {line}".encode()
            try:
                self._sock.sendto(message[:8192], self.address)
            except OSError:
                return  # no syslog daemon, or it is behind: drop, never block

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
