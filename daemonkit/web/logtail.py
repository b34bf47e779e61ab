"""Reading a program's stdout log for the log view: the last N lines, then what was appended.

The browser polls with the ``offset`` (and inode) it got last time, so the server keeps no
state per viewer and never holds a file open between requests. A file that shrank or was
replaced (rotation) starts over from its tail. One answer carries at most ``max_bytes``, so a
log that grows fast cannot make one request slow; the client simply asks again.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import BinaryIO

from ..supervisor.safeopen import open_reader

MAX_BYTES = 256 * 1024


@dataclass(frozen=True)
class LogChunk:
    text: str
    offset: int  # where the next read starts
    inode: int
    reset: bool  # True: ``text`` replaces what the viewer shows (first read or rotation)
    more: bool  # True: more is already available; ask again at once

    def as_json(self) -> dict[str, object]:
        return {"text": self.text, "offset": self.offset, "inode": self.inode,
                "reset": self.reset, "more": self.more}


def read_log(path: str, offset: int | None, inode: int | None, lines: int,
             max_bytes: int = MAX_BYTES) -> LogChunk:
    """Raises OSError when ``path`` cannot be opened (the caller answers 404); opened as
    the supervisor writes it (:mod:`..supervisor.safeopen`): never through a planted link."""
    with open_reader(path) as handle:
        info = os.fstat(handle.fileno())
        size = info.st_size
        if offset is None or offset > size or (inode is not None and inode != info.st_ino):
            return _tail(handle, size, info.st_ino, lines, max_bytes)
        handle.seek(offset)
        data = handle.read(max_bytes)
    if len(data) == max_bytes and b"\n" in data:
        data = data[: data.rindex(b"\n") + 1]  # never split a line (or a UTF-8 sequence)
    end = offset + len(data)
    return LogChunk(data.decode("utf-8", "replace"), end, info.st_ino, False, end < size)


def _tail(handle: BinaryIO, size: int, inode: int, lines: int, max_bytes: int) -> LogChunk:
    start = max(0, size - max_bytes)
    handle.seek(start)
    data = handle.read(size - start)
    if start > 0 and b"\n" in data:
        data = data[data.index(b"\n") + 1:]  # drop the partial first line
    kept = data.splitlines(keepends=True)[-lines:]
    return LogChunk(b"".join(kept).decode("utf-8", "replace"), size, inode, True, False)
