#!/usr/bin/env python3
"""The hello example as an asyncio service: the same CLI, the same promises.

    python examples/async_hello.py --pidfile /tmp/ahello.pid --log-file /tmp/ahello.log start
    python examples/async_hello.py --pidfile /tmp/ahello.pid status
    python examples/async_hello.py --pidfile /tmp/ahello.pid reload
    python examples/async_hello.py --pidfile /tmp/ahello.pid stop
"""

from __future__ import annotations

import argparse
import asyncio
import os

from daemonkit import ConfigError, Daemon


class AsyncHello(Daemon):
    name = "ahello"

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--interval", type=float, default=5.0, help="seconds between greetings")
        parser.add_argument("--greeting-file", help="file holding the greeting (re-read on reload)")

    def configure(self) -> None:
        if self.options.interval <= 0:
            raise ConfigError("--interval must be positive")
        if self.options.greeting_file:  # the daemon runs in /: resolve against the caller's cwd
            self.options.greeting_file = os.path.abspath(self.options.greeting_file)

    async def setup(self) -> None:  # awaited before `start` returns; its exception is printed
        self.greeting = await self.read_greeting()
        self.greetings_sent = 0

    async def read_greeting(self) -> str:
        if not self.options.greeting_file:
            return "hello"
        loop = asyncio.get_running_loop()  # file I/O off the loop, as an asyncio service should
        greeting = (await loop.run_in_executor(None, self.read_file)).strip()
        if not greeting:
            raise ValueError(f"{self.options.greeting_file} is empty")
        return greeting

    def read_file(self) -> str:
        with open(self.options.greeting_file) as greeting_file:
            return greeting_file.read()

    async def run(self) -> None:  # a stop cancels it at its current await...
        while True:
            await asyncio.sleep(self.options.interval)
            async with self.critical():  # ...but never inside this block
                self.log.info("%s (#%d)", self.greeting, self.greetings_sent)
                self.greetings_sent += 1

    async def reload(self) -> None:  # awaited on the loop; raising keeps the old greeting
        self.greeting = await self.read_greeting()

    def status_info(self) -> dict[str, object]:  # runs on the loop: no locks needed
        return {"greeting": self.greeting, "greetings_sent": self.greetings_sent}


if __name__ == "__main__":
    AsyncHello.main()
