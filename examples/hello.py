#!/usr/bin/env python3
"""The smallest useful daemonkit service: greets into its log every few seconds.

    python examples/hello.py --pidfile /tmp/hello.pid --log-file /tmp/hello.log start
    python examples/hello.py --pidfile /tmp/hello.pid status
    python examples/hello.py --pidfile /tmp/hello.pid reload
    python examples/hello.py --pidfile /tmp/hello.pid stop
"""

from __future__ import annotations

import argparse
import os

from daemonkit import ConfigError, Daemon


class Hello(Daemon):
    name = "hello"

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--interval", type=float, default=5.0, help="seconds between greetings")
        parser.add_argument("--greeting-file", help="file holding the greeting (re-read on reload)")

    def configure(self) -> None:
        if self.options.interval <= 0:
            raise ConfigError("--interval must be positive")
        if self.options.greeting_file:  # the daemon runs in /: resolve against the caller's cwd
            self.options.greeting_file = os.path.abspath(self.options.greeting_file)

    def setup(self) -> None:
        self.greeting = self.read_greeting()
        self.greetings_sent = 0

    def read_greeting(self) -> str:
        if not self.options.greeting_file:
            return "hello"
        with open(self.options.greeting_file) as greeting_file:
            greeting = greeting_file.read().strip()
        if not greeting:
            raise ValueError(f"{self.options.greeting_file} is empty")
        return greeting

    def run(self) -> None:
        while not self.stopping.wait(self.options.interval):
            with self.critical():  # a greeting is never cut in half by SIGTERM
                self.log.info("%s (#%d)", self.greeting, self.greetings_sent)
                self.greetings_sent += 1

    def reload(self) -> None:
        self.greeting = self.read_greeting()  # raises on a bad file: the old greeting stays

    def status_info(self) -> dict[str, object]:
        return {"greeting": self.greeting, "greetings_sent": self.greetings_sent}


if __name__ == "__main__":
    Hello.main()
