#!/usr/bin/env python3
"""The echo service written without asyncio: a blocking accept loop on self.listeners[0].

Used to restart between a sync and an async version of one service: the listening socket
they hand over must work for both.
"""

from __future__ import annotations

import socket

from daemonkit import Daemon


class SyncEcho(Daemon):
    name = "echo"  # the same service as examples/echo.py, written the other way
    listen = ("tcp://127.0.0.1:7007",)

    def run(self) -> None:
        listener = self.listeners[0]
        listener.settimeout(0.2)  # a stop waits at most this long for the accept below
        while True:
            with self.critical():  # accepting is part of the unit: no accepted connection
                try:  # is ever dropped by the stop
                    connection, _ = listener.accept()
                except TimeoutError:
                    continue
                with connection:
                    self.echo(connection)

    @staticmethod
    def echo(connection: socket.socket) -> None:
        connection.settimeout(5)
        reader = connection.makefile("rb")
        try:
            while line := reader.readline(65536):
                connection.sendall(line)
        except OSError:
            pass


if __name__ == "__main__":
    SyncEcho.main()
