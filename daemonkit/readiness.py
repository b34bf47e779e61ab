"""The readiness pipe between ``start`` and the daemon it detaches.

systemd's daemon(7) ("SysV daemons", steps 14-15) and s6's notification fd: the command that
starts a daemon must not return before the daemon can serve, and must carry the daemon's own
failure back to the terminal. The pipe is created before the first fork; the daemon writes
one JSON line per event and closes its end. The command reads until it sees ``ready`` or an
``error``, or until end-of-file (the daemon died without a word), or until its deadline.

Events, in order: ``{"pid": N}`` as soon as the final process exists, then either
``{"ready": true}`` or ``{"error": "Type: message", "exit": code}``.
"""

from __future__ import annotations

import json
import os
import select
import time
from dataclasses import dataclass
from typing import Any

#: a daemon's error message is cut to this size: it is for one terminal line, not a log
_MAX_MESSAGE = 4096


class ReadinessWriter:
    """The daemon's end. Writing never raises: a vanished reader must not kill the daemon."""

    def __init__(self, fd: int) -> None:
        self.fd: int | None = fd

    def send(self, **event: Any) -> None:
        if self.fd is None:
            return
        line = json.dumps(event)[:_MAX_MESSAGE].encode() + b"\n"
        try:
            os.write(self.fd, line)
        except OSError:
            self.close()  # the start command gave up waiting; nobody is listening any more

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


@dataclass
class Outcome:
    """What the start command learned from the pipe."""

    pid: int | None = None
    ready: bool = False
    error: str | None = None
    exit_code: int = 1
    timed_out: bool = False


def wait_for_readiness(fd: int, timeout_s: float, outcome: Outcome | None = None) -> Outcome:
    """Read events from the pipe until ready, error, EOF or the deadline.

    ``outcome`` is filled in as events arrive, so a caller interrupted meanwhile still knows
    the daemon's pid.
    """
    outcome = outcome if outcome is not None else Outcome()
    buffer = b""
    deadline = time.monotonic() + timeout_s
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            outcome.timed_out = True
            return outcome
        readable, _, _ = select.select([fd], [], [], remaining)
        if not readable:
            continue
        chunk = os.read(fd, 65536)
        if not chunk:
            return outcome  # EOF: every writer is gone
        buffer += chunk
        *lines, buffer = buffer.split(b"\n")
        for line in lines:
            _apply(outcome, line)
            if outcome.ready or outcome.error is not None:
                return outcome


def _apply(outcome: Outcome, line: bytes) -> None:
    try:
        event = json.loads(line)
    except ValueError:
        return
    if not isinstance(event, dict):
        return
    if isinstance(event.get("pid"), int):
        outcome.pid = event["pid"]
    if event.get("ready") is True:
        outcome.ready = True
    if "error" in event:
        outcome.error = str(event["error"])
        exit_code = event.get("exit", 1)
        outcome.exit_code = exit_code if isinstance(exit_code, int) else 1
