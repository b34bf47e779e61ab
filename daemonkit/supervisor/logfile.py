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

#: supervisord's strip_ansi: ESC [ ... up to one of these letters
_ANSI_RE = re.compile(rb"\x1b\[[^HfABCDRsuJKmhlp]*[HfABCDRsuJKmhlp]")


class LogFile:
    def __init__(self, path: str, maxbytes: int = 0, backups: int = 10,
                 strip_ansi: bool = False) -> None:
        self.path = path
        self.maxbytes = maxbytes  # 0: never rotate by size
        self.backups = backups
        self.strip_ansi = strip_ansi
        self._fd: int | None = None
        self._size = 0
        self._regular = True
        self._created = False  # touch() made the file; it need not look again till reopen()
        self.error: str | None = None  # last write problem, reported in the log once

    def _open(self) -> int:
        if self._fd is None:
            os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
                               | os.O_NONBLOCK, 0o644)
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
            self.error = f"{self.path}: {exc.strerror or exc}"
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
            self.error = f"{self.path}: {exc.strerror or exc}"

    def _rotate(self) -> None:
        self.close()
        if self.backups <= 0:
            os.truncate(self.path, 0)
            return
        for index in range(self.backups - 1, 0, -1):
            older = f"{self.path}.{index}"
            if os.path.exists(older):
                os.replace(older, f"{self.path}.{index + 1}")
        os.replace(self.path, f"{self.path}.1")

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
            self.error = f"{self.path}: {exc.strerror or exc}"

    def reopen(self) -> None:
        """After logrotate renamed the file: the next write (or spawn) creates a fresh one."""
        self.close()
        self._created = False

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


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
