#!/usr/bin/env python3
"""An asyncio TCP service that echoes each line back, the example to copy.

A network service on daemonkit: daemonkit owns the listening socket (bound before the
privilege drop, passed by systemd's socket activation, or handed over by `restart`); the
service only accepts on it.

    python examples/echo.py --pidfile /tmp/echo.pid start       # tcp://127.0.0.1:7007
    printf 'ping\\n' | nc -q1 127.0.0.1 7007                     # -> ping
    python examples/echo.py --pidfile /tmp/echo.pid restart     # refuses no connection
    python examples/echo.py --pidfile /tmp/echo.pid stop
"""

from __future__ import annotations

import asyncio

from daemonkit import Daemon

#: a line longer than this is cut off: a client cannot make the service buffer without end
MAX_LINE = 64 * 1024


class Echo(Daemon):
    name = "echo"
    listen = ("tcp://127.0.0.1:7007",)

    async def setup(self) -> None:
        self.connections = 0
        self.lines = 0
        self.handlers: set[asyncio.Task[None]] = set()  # the connections being served
        self.servers = [await asyncio.start_server(self.echo, sock=sock, limit=MAX_LINE)
                        for sock in self.listeners]

    async def echo(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        handler = asyncio.current_task()
        assert handler is not None
        self.handlers.add(handler)
        handler.add_done_callback(self.handlers.discard)
        try:
            while line := await reader.readline():
                async with self.critical():  # a stop never cuts a reply in half
                    writer.write(line)
                    await writer.drain()
                    self.lines += 1
        except (ConnectionError, ValueError):  # reset by the peer; or a line over MAX_LINE
            pass
        finally:
            writer.close()

    async def run(self) -> None:
        await self.stopping.wait_async()  # the servers serve; a stop cancels this await

    async def shutdown(self) -> None:
        """Stop accepting (the socket lives on in a successor), then finish what we hold:
        every connection already accepted gets its answers, within half the stop timeout.

        Not ``server.close()`` first: a connection accepted in the same loop turn would get
        no transport (asyncio refuses to attach it to a closed server) and be reset when the
        process exits. Stop reading the listening sockets, let the accepted connections
        attach, then close.
        """
        loop = asyncio.get_running_loop()
        for sock in self.listeners:
            loop.remove_reader(sock.fileno())
        for _ in range(2):  # accepted connections: transport in one turn, handler in the next
            await asyncio.sleep(0)
        for server in self.servers:
            server.close()
        if self.handlers:
            await asyncio.wait(self.handlers, timeout=self.options.stop_timeout / 2)

    def status_info(self) -> dict[str, object]:
        return {"connections": self.connections, "lines": self.lines}


if __name__ == "__main__":
    Echo.main()
