#!/usr/bin/env python3
"""A service for the live systemd tests: what the shipped examples cannot be made to do.

It reports everything in its log (the journal under a notify unit, the log file under a
forking one), so the tests only read what an administrator reads. Behaviour is chosen by
options in the unit, and switched while it runs by files in its working directory
(``--workdir``, the unit's ``StateDirectory=``):

* ``unhealthy``: if it holds this process's pid, ``healthy()`` says False (the watchdog then
  goes hungry); a restarted process has another pid, so it is healthy again;
* ``reload-fails``: ``reload()`` raises while it exists;
* ``reload-seconds``: ``reload()`` takes that long (shows whether a reload is waited for).
"""

from __future__ import annotations

import argparse
import os
import time

from daemonkit import Daemon


class SdProbe(Daemon):
    name = "sdprobe"

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--setup-fail", metavar="MESSAGE",
                            help="setup() raises ValueError(MESSAGE)")
        parser.add_argument("--critical-seconds", type=float, default=0.0,
                            help="run() is a loop of critical() blocks this long")

    def setup(self) -> None:
        if self.options.setup_fail:
            raise ValueError(self.options.setup_fail)
        self.reloads = 0
        self.log.info("sdprobe setup done in %s", os.getcwd())

    def run(self) -> None:
        if not self.options.critical_seconds:
            self.stopping.wait()
            return
        number = 0
        while True:
            with self.critical():  # a stop waits for the block's end
                self.log.info("begin %d", number)
                deadline = time.monotonic() + self.options.critical_seconds
                while time.monotonic() < deadline:
                    time.sleep(0.05)
                self.log.info("end %d", number)
            number += 1

    def reload(self) -> None:
        self.log.info("reload begins")
        if os.path.exists("reload-seconds"):
            with open("reload-seconds") as seconds:
                time.sleep(float(seconds.read()))
        if os.path.exists("reload-fails"):
            raise ValueError("reload refused: reload-fails exists")
        self.reloads += 1
        self.log.info("reload done %d", self.reloads)

    def healthy(self) -> bool:
        try:
            with open("unhealthy") as marker:
                return marker.read().strip() != str(os.getpid())
        except FileNotFoundError:
            return True

    def reopen_logs(self) -> None:
        self.log.info("logs reopened")

    def status_info(self) -> dict[str, object]:
        return {"reloads": self.reloads}


if __name__ == "__main__":
    SdProbe.main()
