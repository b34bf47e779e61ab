"""The supervisor's side of the spawn helper (:mod:`.spawnhelper`): who makes its children.

A spawn from the supervisor itself copies its whole fd table into the child (see
:mod:`.spawnhelper` for the figures), so programs are started by a helper process with a
short table. A spawn is one request and one reply on a
socketpair (about 0.1 ms); the helper's children's exits come back on the same socket and
reach the instance through :attr:`on_exit`.

The helper is an optimisation, never a dependency: a request it cannot take (bigger than
:data:`.spawnhelper.MAX_REQUEST`), a helper that cannot start, dies or stops answering, and
the child is made by :func:`.spawn.spawn` here, as before. Nor is it started before it pays
(``worth_it``: the engine says so from :data:`.engine.HELPER_FROM_PROGRAMS` programs on):
with few fds a spawn from here costs what it costs from the helper, and a supervisor of a
few programs stays one process, without the helper's interpreter (9 MB PSS).

When a helper dies, its programs are still running, orphaned: :attr:`on_lost` hands them
to the loop, which watches each by pidfd (their exit statuses are lost with the helper). A
new helper is started for later spawns, :data:`MAX_HELPER_STARTS` times at most.
"""

from __future__ import annotations

import array
import contextlib
import errno
import logging
import marshal
import os
import select
import signal
import socket
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path

from . import spawnhelper
from .spawn import STDOUT, Child, SpawnRequest, spawn

#: a spawn takes milliseconds; a helper silent this long is wedged (stopped, swapped out)
REPLY_TIMEOUT_S = 5.0
#: the first reply of a new helper waits for its interpreter too (30 ms; more under load)
FIRST_REPLY_TIMEOUT_S = 15.0
MAX_HELPER_STARTS = 5
_HELPER_FILE = str(Path(spawnhelper.__file__).resolve())
_RECV_SIZE = 4096  # replies and exit events are a few dozen bytes


class HelperFailed(Exception):
    """The helper died or stopped answering: the caller spawns the child itself."""


class _TooBig(Exception):
    """The socket refused this request's size: this one child is spawned here."""


class Spawner:
    """Makes the supervisor's children, through the helper when it can.

    ``on_exit(pid, wait_status)``: a helper-made child was reaped. ``on_lost(pids)``: the
    helper is gone and these children of it were not reaped by it (they may still run).
    Both are called from :meth:`deliver` only, in the loop's turn, never inside a spawn."""

    def __init__(self, log: logging.Logger, on_exit: Callable[[int, int], None],
                 on_lost: Callable[[set[int]], None],
                 watch: Callable[[int, Callable[[], None]], None],
                 unwatch: Callable[[int], None], *,
                 worth_it: Callable[[], bool] = lambda: True) -> None:
        self.log = log
        self.on_exit = on_exit
        self.on_lost = on_lost
        self._watch = watch
        self._unwatch = unwatch
        self._worth_it = worth_it
        self.sock: socket.socket | None = None
        self.helper: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.answered = False  # the current helper has replied once: it is up
        self.children: set[int] = set()  # the helper's children not yet reported reaped
        self._exits: deque[tuple[int, int]] = deque()  # read during a spawn, not delivered
        self._lost: set[int] = set()

    # -- spawning -----------------------------------------------------------------------

    def spawn(self, request: SpawnRequest, meanwhile: Callable[[], None] | None = None
              ) -> Child:
        """Start the child; OSError or SubprocessError (as :func:`.spawn.spawn`) if it
        cannot be started. ``meanwhile`` runs once, while the helper makes the child (the
        caller's own work for it, such as creating its log files, overlaps the kernel's)."""
        pending = [meanwhile] if meanwhile is not None else []

        def once() -> None:  # the helper may fail after it ran: not twice
            while pending:
                pending.pop()()

        try:
            message, fds = _encode(request)
        except ValueError:  # not plain data (marshal): spawned here, as it is
            message, fds = b"", []
        if message and len(message) <= spawnhelper.MAX_REQUEST and self._ensure_helper():
            try:
                return self._through_helper(message, fds, once)
            except _TooBig:
                pass  # this request only: the helper is fine
            except HelperFailed as why:
                self._helper_gone(str(why))
        once()
        return spawn(request)

    def _through_helper(self, message: bytes, fds: list[int],
                        meanwhile: Callable[[], None]) -> Child:
        assert self.sock is not None
        try:
            self.sock.sendmsg([message], [(socket.SOL_SOCKET, socket.SCM_RIGHTS,
                                            array.array("i", fds))] if fds else [])
        except OSError as exc:
            if exc.errno in (errno.EMSGSIZE, errno.ENOBUFS):
                raise _TooBig from exc  # bigger than the socket's buffer here
            raise HelperFailed(f"cannot reach it: {exc}") from exc
        meanwhile()
        deadline = time.monotonic() + (REPLY_TIMEOUT_S if self.answered
                                       else FIRST_REPLY_TIMEOUT_S)
        for _ in range(100_000):  # bounded: every turn reads a message or waits
            reply = self._read(deadline)
            if reply[0] == "exit":
                self._exits.append((reply[1], reply[2]))
                continue
            self.answered = True
            if reply[0] == "spawned":
                pid, way = reply[1], reply[2]
                self.children.add(pid)
                return Child(pid, way, helper=True)
            _kind, code, strerror, filename, text = reply
            if code:
                raise OSError(code, strerror, filename) if filename else OSError(code, strerror)
            raise subprocess.SubprocessError(text)
        raise HelperFailed("no reply")

    def _read(self, deadline: float) -> tuple:  # type: ignore[type-arg]
        assert self.sock is not None
        poller = select.poll()
        poller.register(self.sock, select.POLLIN)
        left = max(0.0, deadline - time.monotonic())  # past it: one look at what is there
        if not poller.poll(left * 1000):
            raise HelperFailed("no reply in time")
        message = self._receive()
        if message is None:  # readable, yet nothing there: as silent as no reply
            raise HelperFailed("no reply in time")
        return message

    def _receive(self) -> tuple | None:  # type: ignore[type-arg]
        """The helper's next message, None when none is waiting; HelperFailed at its end."""
        assert self.sock is not None
        try:
            data = self.sock.recv(_RECV_SIZE, socket.MSG_DONTWAIT)
        except (BlockingIOError, InterruptedError):
            return None
        except OSError as exc:
            raise HelperFailed(str(exc)) from exc
        if not data:
            raise HelperFailed("it exited")
        return marshal.loads(data)  # type: ignore[no-any-return]

    # -- the loop's side ----------------------------------------------------------------

    def pending(self) -> bool:
        """Something read during a spawn waits for :meth:`deliver` (the loop must not sleep)."""
        return bool(self._exits or self._lost)

    def deliver(self) -> None:
        while self._exits:
            pid, status = self._exits.popleft()
            self.children.discard(pid)
            self.on_exit(pid, status)
        if self._lost:
            lost, self._lost = self._lost, set()
            self.on_lost(lost)

    def _readable(self) -> None:
        """The helper's socket in the loop: exits, or its end."""
        for _ in range(256):  # bounded: a mass exit is read over a few turns
            if self.sock is None:
                break
            try:
                message = self._receive()
            except HelperFailed as why:
                self._helper_gone(str(why))
                break
            if message is None:
                break
            if message[0] == "exit":
                self._exits.append((message[1], message[2]))
        self.deliver()

    # -- the helper's life --------------------------------------------------------------

    def _ensure_helper(self) -> bool:
        if self.sock is not None:
            return True
        if self.starts >= MAX_HELPER_STARTS or not self._worth_it():
            return False
        self.starts += 1
        ours, theirs = socket.socketpair(socket.AF_UNIX,
                                         socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
        try:
            # Popen (fork or vfork + exec) rather than posix_spawn, once: glibc's
            # posix_spawn leaves its two internal signals (32, 33) ignored in the child,
            # and what the helper ignores its fork-way children would inherit (its own
            # posix_spawn children get 32 and 33 ignored all the same, as they did when
            # the supervisor posix_spawned them; glibc programs install their handlers)
            self.helper = subprocess.Popen(
                [sys.executable, "-I", "-S", _HELPER_FILE, str(theirs.fileno())],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                pass_fds=(theirs.fileno(),), start_new_session=True,
                env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")})
        except (OSError, subprocess.SubprocessError) as exc:
            ours.close()
            self.log.warning("spawn helper: cannot start it (%s): the supervisor spawns "
                             "its programs itself", exc)
            return False
        finally:
            theirs.close()
        with contextlib.suppress(OSError):  # room for the largest request taken
            ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 * spawnhelper.MAX_REQUEST)
        self.sock = ours
        self.answered = False
        self._watch(ours.fileno(), self._readable)
        return True

    def _helper_gone(self, why: str) -> None:
        if self.sock is None:
            return
        self.log.error("spawn helper %s: %s; its %d running programs are watched without "
                       "their exit statuses", self.helper_pid, why, len(self.children))
        self._unwatch(self.sock.fileno())
        self.sock.close()
        self.sock = None
        self._stop_strangers()
        self._reap_helper(signal.SIGKILL)
        self._lost |= self.children
        self.children = set()

    def _stop_strangers(self) -> None:
        """A wedged helper may have made a child whose reply never came: the caller spawns
        that one again, so the first must not run on unknown. The helper is stopped first
        (it can reap nothing then, so its children's pids stay theirs), then every child
        of it the supervisor never heard of is killed with its group."""
        helper = self.helper
        if helper is None or helper.poll() is not None:
            return
        helper.send_signal(signal.SIGSTOP)
        try:
            with open(f"/proc/{helper.pid}/task/{helper.pid}/children") as listing:
                strangers = {int(word) for word in listing.read().split()} - self.children
        except (OSError, ValueError):
            return
        for pid in strangers:
            try:
                os.killpg(pid, signal.SIGKILL)  # its own session and group (pgid == pid)
            except OSError:
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass

    @property
    def helper_pid(self) -> int | None:
        return None if self.helper is None else self.helper.pid

    def _reap_helper(self, signum: int | None) -> None:
        helper, self.helper = self.helper, None
        if helper is None:
            return
        if signum is not None and helper.poll() is None:
            helper.send_signal(signum)  # Popen: never a reaped, reused pid
        helper.wait()

    def close(self) -> None:
        """The supervisor is exiting: the helper signals what is left and exits."""
        if self.sock is None:
            return
        self._unwatch(self.sock.fileno())
        self.sock.close()
        self.sock = None
        if self.helper is not None:
            try:  # it exits as soon as it reads the end; one that does not is killed
                self.helper.wait(1.0)
            except subprocess.TimeoutExpired:
                self._reap_helper(signal.SIGKILL)
            self.helper = None


def _encode(request: SpawnRequest) -> tuple[bytes, list[int]]:
    fds: list[int] = []
    stdio: list[int] = []
    for fd in (request.stdin, request.stdout, request.stderr):
        if fd is None:
            stdio.append(spawnhelper.STDIO_NULL)
        elif fd == STDOUT:
            stdio.append(spawnhelper.STDIO_STDOUT)
        else:
            stdio.append(len(fds))
            fds.append(fd)
    message = marshal.dumps((
        "spawn", request.executable, list(request.argv), dict(request.env), stdio,
        request.cwd, request.uid, request.gid,
        None if request.groups is None else list(request.groups), request.umask,
        request.new_session, None if request.pdeathsig is None else int(request.pdeathsig)))
    return message, fds
