"""systemd's notify protocol (sd_notify(3)) in pure Python.

systemd-python needs libsystemd headers to install; the protocol is one datagram to the
AF_UNIX socket named by ``$NOTIFY_SOCKET`` (a leading ``@`` means the abstract namespace).
The variable is removed from the environment once read, so processes the service starts
cannot send notifications in its name (systemd PR #27297).
"""

from __future__ import annotations

import os
import socket
import time


class Notifier:
    """Sends state changes to systemd; a no-op when not started by a notify-aware manager."""

    def __init__(self, address: str | None) -> None:
        self.address = address
        self._sock: socket.socket | None = None
        if address:
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)

    @classmethod
    def from_environment(cls) -> Notifier:
        return cls(os.environ.pop("NOTIFY_SOCKET", None))

    @property
    def enabled(self) -> bool:
        return self._sock is not None

    def send(self, **fields: str | int) -> bool:
        """Send ``KEY=value`` lines; False (never an exception) if the manager is unreachable.

        A service must not die because its supervisor's socket went away.
        """
        if self._sock is None or self.address is None:
            return False
        payload = "\n".join(f"{key}={value}" for key, value in fields.items()).encode()
        target = "\0" + self.address[1:] if self.address.startswith("@") else self.address
        try:
            self._sock.sendto(payload, target)
        except OSError:
            return False
        return True

    def ready(self, status: str | None = None) -> bool:
        return self.send(READY=1, **({"STATUS": status} if status else {}))

    def reloading(self) -> bool:
        # MONOTONIC_USEC is what lets systemd match this reload to `systemctl reload`;
        # without it the reload job waits for its timeout (trapperkeeper #110).
        return self.send(RELOADING=1, MONOTONIC_USEC=time.clock_gettime_ns(time.CLOCK_MONOTONIC)
                         // 1000)

    def stopping(self) -> bool:
        return self.send(STOPPING=1)

    def status(self, text: str) -> bool:
        return self.send(STATUS=text)

    def watchdog(self) -> bool:
        return self.send(WATCHDOG=1)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def watchdog_interval_s() -> float | None:
    """Half of ``$WATCHDOG_USEC`` (systemd's advice), if the watchdog is meant for us."""
    usec = os.environ.pop("WATCHDOG_USEC", None)
    watchdog_pid = os.environ.pop("WATCHDOG_PID", None)
    if not usec or not usec.isdigit() or int(usec) == 0:
        return None
    if watchdog_pid and watchdog_pid.isdigit() and int(watchdog_pid) != os.getpid():
        return None
    return int(usec) / 2_000_000
