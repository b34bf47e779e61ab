#!/usr/bin/env python3
"""A test service whose behaviour is chosen by options, and which records what happened.

Events are appended, one per line, to ``--events FILE`` so tests can poll for them instead of
sleeping. Each behaviour stands for a kind of real service the toolkit must handle.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time

from daemonkit import Daemon

#: --term-at-fork / --term-in-fork: set around one fork in run(); the hooks below then
#: signal the child at the earliest moment it can run code, before the runtime's own hook has
#: reset its handlers, or the daemon's main thread while it forks
_term_at_fork = _term_in_fork = False


def _term_the_new_child() -> None:
    if _term_at_fork:
        os.kill(os.getpid(), signal.SIGTERM)


def _term_the_forking_daemon() -> None:
    if _term_in_fork:
        signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGTERM)


# at import, before the runtime's: the child's hook runs before its reset, the before hook
# after the runtime's (before hooks run last registered first)
os.register_at_fork(before=_term_the_forking_daemon, after_in_child=_term_the_new_child)


class _SignalsInFinalizer:
    """Its finalizer sends the main thread SIGTERM, whose handler then runs inside it:
    what a handler raises there, CPython drops (as in an at-fork hook)."""

    def __del__(self) -> None:
        signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGTERM)
        self.signalled = True


class Probe(Daemon):
    name = "probe"

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--events", required=True)
        parser.add_argument("--setup-fail", help="raise ValueError(MESSAGE) in setup()")
        parser.add_argument("--setup-sleep", type=float, default=0.0)
        parser.add_argument("--setup-exit", action="store_true", help="os._exit(3) in setup()")
        parser.add_argument("--ignore-term", action="store_true")
        parser.add_argument("--naive-loop", action="store_true",
                            help="run() is `while True: time.sleep(1)`")
        parser.add_argument("--critical-seconds", type=float, default=0.0,
                            help="run() loops over critical blocks of this length")
        parser.add_argument("--run-raises", action="store_true")
        parser.add_argument("--critical-raises", action="store_true",
                            help="with --critical-seconds: each block raises, run() goes on")
        parser.add_argument("--run-returns", action="store_true")
        parser.add_argument("--reload-fail-file",
                            help="reload() raises if this file exists")
        parser.add_argument("--reload-seconds", type=float, default=0.0)
        parser.add_argument("--reload-exit", action="store_true", help="reload() calls sys.exit")
        parser.add_argument("--shutdown-seconds", type=float, default=0.0)
        parser.add_argument("--shutdown-until-file",
                            help="shutdown() then waits (up to 60 s) for this file to exist")
        parser.add_argument("--shutdown-raises", action="store_true",
                            help="shutdown() raises: the daemon exits 1 after a stop")
        parser.add_argument("--atexit-file",
                            help="configure() registers an exit handler that writes this file")
        parser.add_argument("--reload-hogs-fds-until",
                            help="reload() takes every free descriptor until this file exists")
        parser.add_argument("--status-override", action="store_true",
                            help="status_info() tries to overwrite the core's keys")
        parser.add_argument("--read-root-file", help="setup_privileged() reads this file")
        parser.add_argument("--make-orphan", action="store_true",
                            help="setup() leaves an orphan `sleep 0.3` behind (for PID 1 tests)")
        parser.add_argument("--fork-workers", type=int, default=0,
                            help="setup() forks workers that sleep (as multiprocessing would)")
        parser.add_argument("--fork-exit-in-setup", action="store_true",
                            help="setup() forks a helper that ends with sys.exit(0)")
        parser.add_argument("--fork-in-run", action="store_true",
                            help="run() forks, inside a critical() block, a worker that "
                                 "sleeps and a child that ends with sys.exit(3)")
        parser.add_argument("--term-at-fork", action="store_true",
                            help="run() forks a child that gets SIGTERM right after the fork")
        parser.add_argument("--term-in-fork", action="store_true",
                            help="run() gets SIGTERM while it forks, then loops naively")
        parser.add_argument("--term-in-finalizer", action="store_true",
                            help="run() gets SIGTERM inside a __del__, then loops naively")
        parser.add_argument("--segfault", action="store_true",
                            help="run() crashes the interpreter (a C extension's bug)")
        parser.add_argument("--accept-loop", action="store_true",
                            help="run() accepts on its first listener with a plain accept()")
        parser.add_argument("--spawn-child", action="store_true",
                            help="setup() starts `sleep 600` and records its environment")

    # names a service may pick for itself: daemonkit's machinery must not live in them
    runtime = gate = control = launch = notifier = hooks = "the service's own"

    def serve(self, connection: object) -> None:
        """A connection handler of the service's own (it broke start once)."""

    def state(self) -> str:
        return "the service's own"

    def event(self, text: str) -> None:
        with open(self.options.events, "a") as events:
            events.write(f"{text}\n")

    def configure(self) -> None:
        self.options.events = os.path.abspath(self.options.events)
        if self.options.atexit_file:
            import atexit

            path = os.path.abspath(self.options.atexit_file)

            def note_exit() -> None:
                with open(path, "a") as marker:
                    marker.write(f"{os.getpid()}\n")

            atexit.register(note_exit)

    def setup_privileged(self) -> None:
        self.event(f"setup_privileged uid={os.getuid()}")
        if self.options.read_root_file:
            with open(self.options.read_root_file) as secret:
                self.secret = secret.read().strip()
            self.event(f"secret={self.secret}")

    def setup(self) -> None:
        self.reloads = 0
        self.event(f"setup uid={os.getuid()} pid={os.getpid()}")
        if self.options.ignore_term:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if os.getuid() != 0:
            try:
                os.setuid(0)
                self.event("regain_root=ok")
            except PermissionError:
                self.event("regain_root=refused")
        if self.options.make_orphan:
            import subprocess

            subprocess.run(["sh", "-c", "sleep 0.3 & exit 0"], check=True)
        if self.options.setup_sleep:
            time.sleep(self.options.setup_sleep)
        if self.options.setup_exit:
            os._exit(3)
        if self.options.setup_fail:
            raise ValueError(self.options.setup_fail)
        for _ in range(self.options.fork_workers):
            worker = os.fork()
            if worker == 0:  # a worker: sleeps, never returns into the daemon's code
                time.sleep(300)
                os._exit(0)
            self.event(f"worker={worker}")
        if self.options.fork_exit_in_setup:
            helper = os.fork()
            if helper == 0:
                sys.exit(0)  # unwinds through daemonkit's frames, as the child's own end
            self.event(f"helper status={os.waitstatus_to_exitcode(os.waitpid(helper, 0)[1])}")
        if self.options.spawn_child:
            import subprocess

            self.child = subprocess.Popen(["sleep", "600"])
            self.event(f"child={self.child.pid}")
            with open(f"/proc/{self.child.pid}/environ", "rb") as environ:
                child_environment = environ.read()
            self.event(f"child_has_notify_socket={b'NOTIFY_SOCKET=' in child_environment}")
            self.event(f"child_has_listen_fds={b'LISTEN_FDS=' in child_environment}")
        self.event("setup done")

    def run(self) -> None:
        self.event("run")
        if self.options.segfault:
            import ctypes

            ctypes.string_at(0)
        if self.options.accept_loop:
            for number in range(1, 1000):
                connection, _ = self.listeners[0].accept()
                connection.close()
                self.event(f"accepted {number}")
        if self.options.fork_in_run:
            with self.critical():
                worker = os.fork()
                if worker == 0:
                    time.sleep(300)
                    os._exit(0)
            self.event(f"worker={worker}")
            child = os.fork()
            if child == 0:
                sys.exit(3)
            self.event(f"child status={os.waitstatus_to_exitcode(os.waitpid(child, 0)[1])}")
        if self.options.term_at_fork:
            global _term_at_fork
            _term_at_fork = True
            child = os.fork()
            if child == 0:
                os._exit(0)  # only if the SIGTERM did not end it as a fresh process's would
            _term_at_fork = False
            status = os.waitstatus_to_exitcode(os.waitpid(child, 0)[1])
            self.event(f"signalled child status={status}")
        if self.options.term_in_fork:
            global _term_in_fork
            _term_in_fork = True
            try:
                child = os.fork()
                if child == 0:
                    os._exit(0)
            finally:
                _term_in_fork = False
            self.event("forked")
            self.loop_until_stopped()
        if self.options.term_in_finalizer:
            doomed = _SignalsInFinalizer()
            del doomed  # its __del__ runs here, and the SIGTERM's handler inside it
            self.event("finalized")
            self.loop_until_stopped()
        if self.options.run_raises:
            raise RuntimeError("run exploded")
        if self.options.run_returns:
            return
        if self.options.naive_loop or self.options.ignore_term:
            while True:
                time.sleep(1)
        if self.options.critical_seconds:
            number = 0
            while True:
                try:
                    self.one_critical_job(number)
                except ValueError:
                    self.event(f"job {number} failed, going on")
                number += 1
        self.stopping.wait()
        self.event("stopping seen")

    def loop_until_stopped(self) -> None:
        """A naive loop: only the StopDaemon a stop signal raises ends it (within a minute)."""
        for _ in range(600):
            time.sleep(0.1)
        self.event("the stop was lost")

    def one_critical_job(self, number: int) -> None:
        with self.critical():
            self.event(f"begin {number}")
            deadline = time.monotonic() + self.options.critical_seconds
            while time.monotonic() < deadline:  # busy on purpose: sleep would also do
                time.sleep(0.01)
            self.event(f"end {number}")
            if self.options.critical_raises:
                raise ValueError("job failed")

    def reload(self) -> None:
        self.event("reload begin")
        if self.options.reload_seconds:
            time.sleep(self.options.reload_seconds)
        if self.options.reload_exit:
            raise SystemExit(3)
        if self.options.reload_fail_file and os.path.exists(self.options.reload_fail_file):
            raise ValueError("bad configuration in reload")
        self.reloads += 1
        self.event(f"reload done {self.reloads}")
        if self.options.reload_hogs_fds_until:
            import threading

            threading.Thread(target=self.hog_fds, daemon=True).start()

    def hog_fds(self) -> None:
        """Stand for a service that leaks descriptors up to its limit, then recovers."""
        held = []
        for _ in range(1_000_000):
            try:
                held.append(os.open(os.devnull, os.O_RDONLY))
            except OSError:
                break
        os.close(held.pop())  # one for the event line, then taken back
        self.event("fds exhausted")
        held.append(os.open(os.devnull, os.O_RDONLY))
        for _ in range(6000):  # 60 s at most
            if os.path.exists(self.options.reload_hogs_fds_until):
                break
            time.sleep(0.01)
        for fd in held:
            os.close(fd)
        self.event("fds released")

    def shutdown(self) -> None:
        if self.options.shutdown_seconds or self.options.shutdown_until_file:
            self.event("shutdown begin")
            time.sleep(self.options.shutdown_seconds)
        if self.options.shutdown_until_file:
            for _ in range(3000):  # bounded: 60 s
                if os.path.exists(self.options.shutdown_until_file):
                    break
                time.sleep(0.02)
        if self.options.spawn_child:
            self.child.terminate()
            self.child.wait()
        self.event("shutdown")
        if self.options.shutdown_raises:
            raise RuntimeError("could not flush the queue")

    def status_info(self) -> dict[str, object]:
        if self.options.status_override:
            return {"reloads": self.reloads, "running": False, "pid": 1, "name": "other"}
        return {"reloads": self.reloads}


if __name__ == "__main__":
    Probe.main()
