#!/usr/bin/env python3
"""An asyncio test service: every hook that may be ``async def`` is, and records events.

Events are appended, one per line, to ``--events FILE`` so tests can poll for them. setup()
starts a TCP server on the loop that run() and shutdown() use: the loop lives for the daemon's
whole life. The service also names its own methods ``serve``, ``state``, ``runtime`` and
``control``, names daemonkit must leave to it.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import threading

from daemonkit import Daemon

#: --term-before-setup: the daemon signals itself at its first audit event (opening its log,
#: say) after its early signal handlers are in, before the loop and the gate exist
_term_early = False


def _term_before_setup(event: str, args: tuple[object, ...]) -> None:
    global _term_early
    handler = signal.getsignal(signal.SIGTERM)
    if _term_early and getattr(handler, "__qualname__", "") == "EarlySignals._record":
        _term_early = False
        os.kill(os.getpid(), signal.SIGTERM)


sys.addaudithook(_term_before_setup)


class AsyncProbe(Daemon):
    name = "aprobe"

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--events", required=True)
        parser.add_argument("--setup-fail", help="raise ValueError(MESSAGE) in setup()")
        parser.add_argument("--setup-sleep", type=float, default=0.0)
        parser.add_argument("--naive-loop", action="store_true",
                            help="run() is `while True: await asyncio.sleep(1)`")
        parser.add_argument("--critical-seconds", type=float, default=0.0,
                            help="run() loops over `async with critical()` blocks this long")
        parser.add_argument("--run-raises", action="store_true")
        parser.add_argument("--run-returns", action="store_true")
        parser.add_argument("--reload-fail-file", help="reload() raises if this file exists")
        parser.add_argument("--reload-seconds", type=float, default=0.0)
        parser.add_argument("--unhealthy-file", help="healthy() is False while this file exists")
        parser.add_argument("--sync-reload", action="store_true",
                            help="reload() is a plain function (hooks of both kinds mixed)")
        parser.add_argument("--wait-stopping", action="store_true",
                            help="a task of run()'s awaits self.stopping.wait_async()")
        parser.add_argument("--workers", type=int, default=0,
                            help="run() is a TaskGroup of workers looping critical() blocks")
        parser.add_argument("--sys-exit", type=int, help="run() calls sys.exit(CODE)")
        parser.add_argument("--handler-block", type=float, default=0.0,
                            help="a task started in setup() loops critical() blocks this long")
        parser.add_argument("--queue-consumer", type=float, default=0.0,
                            help="a task started in setup() takes items off a queue with a "
                                 "backlog, each in a critical() block this long")
        parser.add_argument("--term-before-setup", action="store_true",
                            help="SIGTERM before setup(), which then never suspends")
        parser.add_argument("--stuck-thread", action="store_true",
                            help="run() awaits a thread that never returns (to_thread)")

    def event(self, text: str) -> None:
        with open(self.options.events, "a") as events:
            events.write(f"{text}\n")

    def configure(self) -> None:
        global _term_early
        self.options.events = os.path.abspath(self.options.events)
        _term_early = self.options.term_before_setup
        if self.options.sync_reload:
            self.reload = self.sync_reload  # type: ignore[method-assign]

    # -- the service's own names (they must not collide with daemonkit's machinery) ------------

    def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.state["connections"] += 1
        writer.write(b"hello\n")
        writer.close()

    runtime = "the service's own attribute"
    control = "the service's own attribute"

    # -- hooks -----------------------------------------------------------------------------------

    async def setup(self) -> None:
        if self.options.term_before_setup:
            self.event("setup ran")  # and returns without a single await
            return
        self.state = {"connections": 0, "reloads": 0, "jobs": 0}
        self.lock = asyncio.Lock()  # run() and reload() share it: no interruption caveat
        self.server = await asyncio.start_server(self.serve_client, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        self.event(f"setup pid={os.getpid()} port={self.port}")
        if self.options.setup_sleep:
            await asyncio.sleep(self.options.setup_sleep)
        if self.options.setup_fail:
            raise ValueError(self.options.setup_fail)
        if self.options.handler_block:
            self.handler = asyncio.create_task(self.handle_forever())
        if self.options.queue_consumer:
            self.queue: asyncio.Queue[int] = asyncio.Queue()
            for item in range(4):
                self.queue.put_nowait(item)
            self.consumer = asyncio.create_task(self.consume())
        self.event("setup done")

    async def serve_client(self, reader: asyncio.StreamReader,
                           writer: asyncio.StreamWriter) -> None:
        self.serve(reader, writer)
        await writer.wait_closed()

    async def run(self) -> None:
        self.event("run")
        if self.options.run_raises:
            raise RuntimeError("run exploded")
        if self.options.run_returns:
            return
        if self.options.wait_stopping:
            self.worker = asyncio.create_task(self.drain_on_stop())
        if self.options.sys_exit is not None:
            await asyncio.sleep(0.1)
            sys.exit(self.options.sys_exit)
        if self.options.stuck_thread:
            await asyncio.to_thread(threading.Event().wait)
        if self.options.workers:
            async with asyncio.TaskGroup() as group:
                for number in range(self.options.workers):
                    group.create_task(self.work(number))
        if self.options.critical_seconds:
            number = 0
            while True:
                async with self.critical(), self.lock:
                    self.event(f"begin {number}")
                    await asyncio.sleep(self.options.critical_seconds)
                    self.state["jobs"] += 1
                    self.event(f"end {number}")
                number += 1
        try:
            while True:
                await asyncio.sleep(1)
        except asyncio.CancelledError:
            self.event("cancelled")
            raise

    async def work(self, number: int) -> None:
        while True:
            async with self.critical():
                self.event(f"worker {number} begin")
                try:
                    await asyncio.sleep(0.005)
                except asyncio.CancelledError:
                    self.event(f"worker {number} CUT IN HALF")
                    raise
                self.event(f"worker {number} end")

    async def handle_forever(self) -> None:
        """Like a connection handler of a server started in setup(): not run()'s task."""
        number = 0
        while True:
            async with self.critical():
                self.event(f"handler begin {number}")
                await asyncio.sleep(self.options.handler_block)
                self.event(f"handler end {number}")
            number += 1
            await asyncio.sleep(0.05)

    async def consume(self) -> None:
        """The next block begins as the last ends (get() of a full queue does not suspend),
        and it does not look at `stopping`: shutdown() waits for the backlog."""
        while True:
            item = await self.queue.get()
            async with self.critical():
                self.event(f"item begin {item}")
                await asyncio.sleep(self.options.queue_consumer)
                self.event(f"item end {item}")

    async def drain_on_stop(self) -> None:
        await self.stopping.wait_async()
        self.event("stopping awaited")

    async def reload(self) -> None:
        self.event("reload begin")
        async with self.lock:
            if self.options.reload_seconds:
                await asyncio.sleep(self.options.reload_seconds)
            if self.options.reload_fail_file and os.path.exists(self.options.reload_fail_file):
                raise ValueError("bad configuration in reload")
            self.state["reloads"] += 1
        self.event(f"reload done {self.state['reloads']}")

    def sync_reload(self) -> None:
        self.state["reloads"] += 1
        self.event(f"sync reload done {self.state['reloads']}")

    async def reopen_logs(self) -> None:
        self.event("reopen_logs")

    async def shutdown(self) -> None:
        if self.options.handler_block or self.options.queue_consumer:
            self.event("shutdown begins")
        if self.options.wait_stopping:
            await self.worker  # a task of run()'s, which saw the stop through `stopping`
        self.server.close()  # made by setup() on the same loop
        await self.server.wait_closed()
        self.event("shutdown")

    async def status_info(self) -> dict[str, object]:
        return {**self.state, "port": self.port, "loop_running": asyncio.get_running_loop()
                .is_running()}

    async def healthy(self) -> bool:
        return not (self.options.unhealthy_file and os.path.exists(self.options.unhealthy_file))


if __name__ == "__main__":
    AsyncProbe.main()
