"""How the last daemon ended: a one-line JSON record beside the pidfile.

When a daemon's ``run()`` crashes, its pidfile and control socket go with it, and ``status``
could only say "not running". The record keeps the answer: pid, start and end times, exit
status, why (the exception, the signal), and where the log is. It is opened by the daemon
while still privileged (the directory may be root's) and written through that descriptor at
the start and at the end, so a daemon that dropped privileges can still write it. A daemon
killed by SIGKILL never writes its end: the record then shows a start without an end, which
``status`` reports as such.
"""

from __future__ import annotations

import json
import os
import stat
import time
from typing import Any

#: a record is one short line; anything longer is not ours
_MAX_RECORD = 8192


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


class ExitRecordWriter:
    """The daemon's end of the record."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._fd: int | None = None
        self._fields: dict[str, Any] = {}

    def prepare(self) -> None:
        """Create or take over the record file, while still privileged (its directory may be
        root's); raises OSError on anything but a small regular file of ours with one name
        (never blocks, never follows a symlink, never writes through a hard link)."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
                     | os.O_NONBLOCK, 0o644)
        info = os.fstat(fd)
        if (not stat.S_ISREG(info.st_mode) or info.st_uid not in (0, os.geteuid())
                or info.st_nlink != 1 or info.st_size > _MAX_RECORD):
            os.close(fd)
            raise OSError(f"{self.path} is not a record file of this user (refused)")
        self._fd = fd

    def start(self, pid: int, log_file: str | None) -> None:
        """Note the start of the daemon (it owns the pidfile from now on)."""
        if self._fd is None:
            return
        self._fields = {"pid": pid, "started_at": _now(), "log_file": log_file}
        self._write()

    def forget(self) -> None:
        """Close the descriptor without writing (a forked child's copy)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def close(self, exit_status: int, reason: str, *, stopped_in_setup: bool = False) -> None:
        """Note the end (exit status and why) and close the record. ``stopped_in_setup``:
        a stop signal ended setup(); the start failed (status says so), but a ``stop`` that
        sent the signal has nothing to warn about."""
        if self._fd is None:
            return
        if not self._fields:  # prepared, never started (a successor never taken over)
            os.close(self._fd)
            self._fd = None
            return
        self._fields.update(ended_at=_now(), exit_status=exit_status, reason=reason)
        if stopped_in_setup:
            self._fields["stopped_in_setup"] = True
        try:
            self._write()
        finally:
            os.close(self._fd)
            self._fd = None

    def _write(self) -> None:
        assert self._fd is not None
        data = json.dumps(self._fields).encode() + b"\n"
        os.pwrite(self._fd, data[:_MAX_RECORD], 0)
        os.ftruncate(self._fd, min(len(data), _MAX_RECORD))


def read_exit_record(path: str, owners: set[int]) -> dict[str, Any] | None:
    """The last record, or None if there is none, or it is not one of the daemon's: a file
    owned by someone else than ``owners`` (root, the pidfile's owner) is another user's
    fabrication (in a sticky shared directory anyone may create it)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_uid not in owners:
            return None
        data = os.read(fd, _MAX_RECORD)
    finally:
        os.close(fd)
    try:
        record = json.loads(data)
    except ValueError:
        return None
    return record if isinstance(record, dict) and isinstance(record.get("pid"), int) else None


def describe_end(record: dict[str, Any]) -> str | None:
    """A status line's note for an end worth telling: a failure, or no end at all."""
    pid = record["pid"]
    log_file = record.get("log_file")
    where = f"; log: {log_file}" if isinstance(log_file, str) else ""
    if "exit_status" not in record:
        return (f"pid {pid}, started {record.get('started_at')}, ended without a word "
                "(killed by a signal such as SIGKILL or SIGSEGV, or the machine went down: "
                f"its log may say more){where}")
    if record.get("exit_status") == 0:
        return None
    return (f"pid {pid} exited with status {record['exit_status']} at {record.get('ended_at')}: "
            f"{record.get('reason')}{where}")


def record_kill(path: str, pid: int, reason: str) -> None:
    """Complete the record of a daemon that ``stop`` had to SIGKILL (it could not write its
    end); only a record of that very pid without an end, and only if we may write it."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError:
        return
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_nlink != 1:
            return
        record = json.loads(os.pread(fd, _MAX_RECORD, 0))
        if not isinstance(record, dict) or record.get("pid") != pid or "exit_status" in record:
            return
        record.update(ended_at=_now(), exit_status=-9, reason=reason)
        data = json.dumps(record).encode() + b"\n"
        os.pwrite(fd, data[:_MAX_RECORD], 0)
        os.ftruncate(fd, min(len(data), _MAX_RECORD))
    except (OSError, ValueError):
        return
    finally:
        os.close(fd)
