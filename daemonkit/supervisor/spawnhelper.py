"""The spawn helper: a small process that starts the supervisor's programs for it.

Run as ``python -I -S spawnhelper.py FD`` with a SOCK_SEQPACKET socket on fd FD (see
:mod:`.spawner`, the supervisor's side). It imports only the standard library, so its
interpreter is small and its fd table holds a handful of descriptors.

Why a second process: a child made by ``posix_spawn`` (or fork) gets a copy of its parent's
fd table, and ``exec`` then closes every close-on-exec entry of that copy. A supervisor of
2,000 programs holds 6,000-12,000 fds (each program's pipes), so each of its spawns paid for
copying and closing all of them: 1.3 ms per spawn instead of 0.6 ms, growing with programs.
Spawned here, a program costs the same at 2,000 as at 3; the supervisor waits for the
reply, creating the program's log files meanwhile.

Protocol (``marshal``-encoded tuples, one per datagram, the child's stdio as SCM_RIGHTS):

* request ``("spawn", executable, argv, env, stdio, cwd, uid, gid, groups, umask,
  new_session, pdeathsig)``, ``stdio`` giving for fds 0-2 the index of the passed fd, -1
  for /dev/null, -2 for "the same as stdout";
* reply ``("spawned", pid, way)`` or ``("failed", errno, strerror, filename, text)``;
* event ``("exit", pid, wait_status)`` when a child is reaped.

Exit statuses can only come from here: the programs are this process's children. When the
supervisor dies, its end of the socket closes; the helper then sends each program the
signal its request named (what ``PR_SET_PDEATHSIG`` would have done: the programs do not
outlive a SIGKILLed supervisor) and exits. It runs in a session of its own, so a signal to
the supervisor's process group does not reach it, and it catches (rather than ignores)
SIGTERM, SIGINT and SIGHUP, so its programs start with default dispositions.

Signals to programs are sent by the supervisor, by pid; this process reaps only in its
loop and the supervisor forgets a pid when it reads the exit, so the one window in which a
pid could be signalled after its reaping is that message's transit, and pids are handed
out cyclically (a reuse needs ``pid_max`` new processes in between).
"""

from __future__ import annotations

import array
import marshal
import os
import selectors
import signal
import socket
import sys
from collections import deque
from typing import Any

#: what one request may hold; the supervisor spawns a bigger one itself
MAX_REQUEST = 128 * 1024
STDIO_NULL = -1
STDIO_STDOUT = -2
#: dispositions Python changes for itself (SIGPIPE ignored) that a program must not inherit
DEFAULT_SIGNALS = (signal.SIGPIPE, signal.SIGXFSZ, signal.SIGTSTP, signal.SIGTTIN,
                   signal.SIGTTOU, signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
_REQUEST_FDS = 3


class Helper:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.sock.setblocking(False)
        self.children: dict[int, tuple[int | None, Any]] = {}  # pid -> (death signal, Popen)
        self.outgoing: deque[bytes] = deque()
        self.devnull = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
        self.wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(wake_w)
        for signum in (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(signum, _noted)
        self.selector = selectors.DefaultSelector()
        self.selector.register(self.wake_r, selectors.EVENT_READ)
        self.selector.register(self.sock, selectors.EVENT_READ)
        self.writing = False

    def serve(self) -> None:
        while True:
            for key, _mask in self.selector.select():
                if key.fileobj is self.sock and not self._read_requests():
                    self._supervisor_gone()
                    return
                if key.fd == self.wake_r:
                    _drain(self.wake_r)
            self._reap()
            self._flush()

    def _read_requests(self) -> bool:
        """Serve every request waiting; False once the supervisor has closed its end."""
        for _ in range(64):  # bounded: exits of children get their turn
            try:
                data, ancillary, flags, _ = self.sock.recvmsg(
                    MAX_REQUEST, socket.CMSG_SPACE(_REQUEST_FDS * 4), socket.MSG_CMSG_CLOEXEC)
            except (BlockingIOError, InterruptedError):
                return True
            except OSError:
                return False
            if not data:
                return False
            fds = _passed_fds(ancillary)
            try:
                if flags & (socket.MSG_TRUNC | socket.MSG_CTRUNC):
                    reply: tuple[Any, ...] = ("failed", 0, "", None, "request too large")
                else:
                    reply = self._answer(data, fds)
            finally:
                for fd in fds:
                    os.close(fd)
            self.outgoing.append(marshal.dumps(reply))
        return True

    def _answer(self, data: bytes, fds: list[int]) -> tuple[Any, ...]:
        """Whatever a request holds, it gets a reply: a helper that died of one bad request
        would take every running program's exit status with it."""
        try:
            return self._spawn(marshal.loads(data), fds)
        except Exception as exc:  # noqa: BLE001 - answered as a spawn error, not fatal
            return ("failed", 0, "", None, f"{type(exc).__name__}: {exc}"[:1000])

    def _spawn(self, request: tuple[Any, ...], fds: list[int]) -> tuple[Any, ...]:
        (_kind, executable, argv, env, stdio, cwd, uid, gid, groups, umask, new_session,
         pdeathsig) = request
        sources = [self.devnull if n == STDIO_NULL else fds[n] for n in stdio[:2]]
        sources.append(sources[1] if stdio[2] == STDIO_STDOUT else
                       self.devnull if stdio[2] == STDIO_NULL else fds[stdio[2]])
        if cwd is None and uid is None and gid is None and groups is None and umask is None:
            try:
                # the passed fds and /dev/null are all above 2: no dup2 overwrites a source
                pid = os.posix_spawn(
                    executable, argv, env,
                    file_actions=[(os.POSIX_SPAWN_DUP2, fd, n) for n, fd in enumerate(sources)],
                    setsid=new_session, setsigdef=DEFAULT_SIGNALS, setsigmask=())
            except OSError as exc:
                return _failure(exc)
            except (ValueError, TypeError) as exc:  # a NUL byte, "=" in a variable's name
                return ("failed", 0, "", None, str(exc)[:1000])
            self.children[pid] = (pdeathsig, None)
            return ("spawned", pid, "posix_spawn")
        import subprocess  # only now: a directory, a umask or another user (3 MB of RSS)

        try:
            popen = subprocess.Popen(
                argv, executable=executable, stdin=sources[0], stdout=sources[1],
                stderr=sources[2], cwd=cwd, env=env, start_new_session=new_session,
                user=uid, group=gid, extra_groups=groups,
                umask=-1 if umask is None else umask)
        except OSError as exc:
            return _failure(exc)
        except (subprocess.SubprocessError, ValueError, TypeError, KeyError) as exc:
            return ("failed", 0, "", None, str(exc)[:1000])
        self.children[popen.pid] = (pdeathsig, popen)
        return ("spawned", popen.pid, "fork")

    def _reap(self) -> None:
        for _ in range(len(self.children) + 1):  # bounded: each turn reaps one or stops
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            _signum, popen = self.children.pop(pid, (None, None))
            if popen is not None:
                popen.returncode = os.waitstatus_to_exitcode(status)  # Popen must not wait
            self.outgoing.append(marshal.dumps(("exit", pid, status)))

    def _flush(self) -> None:
        while self.outgoing:
            try:
                self.sock.send(self.outgoing[0])
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                self.outgoing.clear()  # the supervisor is gone: the next read says so
                break
            self.outgoing.popleft()
        want_write = bool(self.outgoing)
        if want_write != self.writing:
            self.writing = want_write
            events = selectors.EVENT_READ | (selectors.EVENT_WRITE if want_write else 0)
            self.selector.modify(self.sock, events)

    def _supervisor_gone(self) -> None:
        """The programs must not outlive the supervisor: each gets its death signal."""
        self._reap()
        for pid, (signum, _popen) in self.children.items():
            if signum:
                try:
                    os.kill(pid, signum)  # not reaped (we reap only in _reap): still ours
                except OSError:
                    pass


def _noted(signum: int, frame: object) -> None:
    """Caught, not ignored: a program must not inherit an ignored SIGTERM; the wakeup fd
    tells the loop (SIGCHLD: reap)."""


def _drain(fd: int) -> None:
    try:
        while os.read(fd, 4096):
            pass
    except BlockingIOError:
        pass


def _passed_fds(ancillary: list[tuple[int, int, bytes]]) -> list[int]:
    fds = array.array("i")
    for level, kind, payload in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(payload[:len(payload) - len(payload) % fds.itemsize])
    return list(fds)


def _failure(exc: OSError) -> tuple[Any, ...]:
    """The reply for ``exc``, its texts cut so that it fits the supervisor's read."""
    filename = None if exc.filename is None else os.fsdecode(exc.filename)[:1000]
    return ("failed", exc.errno or 0, (exc.strerror or "")[:200], filename, str(exc)[:1000])


def main() -> int:
    fd = int(sys.argv[1])
    os.set_inheritable(fd, False)  # the programs must not get the supervisor's socket
    # a mask is inherited across exec: one its starter had blocked would hold back SIGCHLD
    # here (no exit would be reported) and pass on to every fork-way program
    signal.pthread_sigmask(signal.SIG_SETMASK, ())
    for signum in (signal.SIGTSTP, signal.SIGTTIN, signal.SIGTTOU, signal.SIGQUIT):
        signal.signal(signum, signal.SIG_DFL)  # a fork-way child inherits what is ignored
    helper = Helper(socket.socket(fileno=fd))
    helper.serve()
    return 0


if __name__ == "__main__":
    sys.exit(main())
