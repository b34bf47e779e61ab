"""A child's captured output: appended to a file, reopened on SIGUSR1, rotated by size.

Children write into a pipe the supervisor reads, not into the file itself: only then can the
supervisor reopen the file after logrotate moved it, or rotate it by size, without the child
knowing anything about it.
"""

from __future__ import annotations

import os


class LogFile:
    def __init__(self, path: str, maxbytes: int = 0, backups: int = 10) -> None:
        self.path = path
        self.maxbytes = maxbytes  # 0: never rotate by size
        self.backups = backups
        self._fd: int | None = None
        self._size = 0
        self.error: str | None = None  # last write problem, reported in the log once

    def _open(self) -> int:
        if self._fd is None:
            os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC,
                               0o644)
            self._size = os.fstat(self._fd).st_size
        return self._fd

    def write(self, data: bytes) -> None:
        """Never raises: a full disk must not kill the supervisor or block the child."""
        try:
            fd = self._open()
            if self.maxbytes and self._size + len(data) > self.maxbytes and self._size:
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

    def reopen(self) -> None:
        """After logrotate renamed the file: the next write creates a fresh one."""
        self.close()

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
