"""The daemon's control socket: how ``status`` and ``reload`` get answers, not guesses.

A signal cannot carry a result back. ``reload`` must say whether the service's ``reload()``
succeeded, and ``status`` should show live figures, so the daemon listens on a UNIX stream
socket beside its pidfile. One request per connection: the client sends one JSON object on
one line, the daemon answers one JSON object on one line and closes.

Every request gets an answer, and no client can hold the socket for the others:

* one thread multiplexes every connection (``selectors``); a request must be complete within
  :data:`REQUEST_DEADLINE_S` of the connect, however slowly it trickles in, and at most
  :data:`MAX_CONNECTIONS` are read at once (the oldest is dropped for a newcomer);
* complete requests are answered in threads of their own, at most :data:`MAX_ANSWERING` at
  once (a ``reload`` waiting for a ``critical()`` block does not hold up ``status``);
  beyond that the answer is "busy";
* a malformed request (bad JSON, nesting that would blow the stack, wrong types, values out
  of range) gets an error answer; an exception in a handler is an error answer too. The
  thread never dies of a request.

Security: the socket file is created with mode 0600 and handed to the service user after a
privilege drop; on top of the file mode, the peer's uid (``SO_PEERCRED``) must be root's or
the daemon's own.

Paths longer than ``sun_path`` allows (108 bytes) go through ``/proc/self/fd/N/NAME``, which
the kernel resolves like any path: a deep test directory must not make the feature vanish.
"""

from __future__ import annotations

import errno
import json
import logging
import math
import os
import selectors
import socket
import stat
import struct
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from .errors import DaemonkitError
from .paths import control_path_for

__all__ = ["FDS", "ControlDenied", "ControlError", "ControlServer", "RequestError",
           "control_path_for", "exchange", "number_field", "request"]

MAX_REQUEST = 64 * 1024
MAX_REPLY = 4 * 1024 * 1024
MAX_CONNECTIONS = 32
MAX_ANSWERING = 8
REQUEST_DEADLINE_S = 5.0
REPLY_DEADLINE_S = 10.0
#: descriptors a request may carry (SCM_RIGHTS): one, the pidfile lock of a take-over; more
#: are closed on arrival, so no client can fill the daemon's descriptor table
MAX_REQUEST_FDS = 1
#: descriptors a reply may carry (a handover's listening sockets): the kernel's SCM_MAX_FD
MAX_REPLY_FDS = 253
#: the keys under which descriptors travel with a request or a reply, and the peer's uid
#: comes with a request (neither is ever sent as JSON)
FDS = "__fds__"
PEER_UID = "__peer_uid__"
#: requests answered at once by threads of their own, per kind: a slow reload never keeps
#: status from answering
QUICK_COMMANDS = frozenset({"status", "wait-ready"})
_SUN_PATH_MAX = 100  # a little under 108, for the NUL and safety

Handler = Callable[[dict[str, Any]], dict[str, Any]]
log = logging.getLogger("daemonkit.control")


class ControlError(DaemonkitError):
    """No answer from the daemon's control socket."""


class ControlDenied(ControlError):
    """The socket's file mode refused us: another user's daemon."""


class ControlAbsent(ControlError):
    """No socket file, or nobody listening on it: the daemon is not running."""


class RequestError(ValueError):
    """A request the daemon cannot act on; its message is the error answer."""


def number_field(message: dict[str, Any], key: str, default: float, low: float,
                 high: float) -> float:
    """A finite number in ``[low, high]`` from a request, or RequestError naming the key."""
    value = message.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise RequestError(f"{key}: a number is required, not {json.dumps(value)[:40]}")
    if not low <= value <= high:
        raise RequestError(f"{key}: must be between {low:g} and {high:g}")
    return float(value)


def _recv_with_fds(sock: socket.socket, max_fds: int) -> tuple[bytes, list[int]]:
    """Data and the descriptors passed with it, close-on-exec from the start (what a daemon
    execs must never inherit a lock or a listener). Descriptors beyond ``max_fds`` do not fit
    the ancillary buffer and the kernel closes them. (``socket.recv_fds`` would do, but it
    drops its ``flags`` argument.)"""
    size = socket.CMSG_SPACE(max_fds * struct.calcsize("i"))
    data, ancillary, _flags, _address = sock.recvmsg(65536, size, socket.MSG_CMSG_CLOEXEC)
    fds: list[int] = []
    for level, kind, payload in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            usable = len(payload) - len(payload) % struct.calcsize("i")
            fds += struct.unpack(f"{usable // struct.calcsize('i')}i", payload[:usable])
    return data, fds


def _command_of(line: bytes) -> str | None:
    """The request's ``cmd``, told cheaply and without trusting the line (it is parsed for
    real by the answering thread)."""
    try:
        message = json.loads(line)
    except (ValueError, RecursionError):
        return None
    command = message.get("cmd") if isinstance(message, dict) else None
    return command if isinstance(command, str) else None


def _close_all(fds: list[int]) -> None:
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass


@contextmanager
def _short_path(path: str) -> Iterator[str]:
    if len(path.encode()) <= _SUN_PATH_MAX:
        yield path
        return
    dir_fd = os.open(os.path.dirname(path) or ".", os.O_PATH | os.O_CLOEXEC)
    try:
        yield f"/proc/self/fd/{dir_fd}/{os.path.basename(path)}"
    finally:
        os.close(dir_fd)


def request(path: str, message: dict[str, Any], timeout_s: float = 10.0) -> dict[str, Any]:
    """Send one request to the daemon listening at ``path`` and return its reply."""
    answer, fds = exchange(path, message, timeout_s)
    _close_all(fds)
    return answer


def exchange(path: str, message: dict[str, Any], timeout_s: float = 10.0,
             send: list[int] | None = None, limit: int = MAX_REPLY
             ) -> tuple[dict[str, Any], list[int]]:
    """One request with descriptors to pass along (SCM_RIGHTS); the reply and the
    descriptors that came with it (the caller owns them). ``timeout_s`` bounds the whole
    exchange, however slowly the answer trickles in."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    sock.settimeout(timeout_s)
    deadline = time.monotonic() + timeout_s
    try:
        with _short_path(path) as short:
            sock.connect(short)
        data = json.dumps(message).encode() + b"\n"
        try:
            if send:
                socket.send_fds(sock, [data], send)
            else:
                sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError) as exc:
            # the server may refuse before reading (too many clients, out of descriptors):
            # its one-line reason is waiting to be read
            reply, fds = _read_line(sock, limit, deadline)
            if not reply:
                raise exc from None
        else:
            reply, fds = _read_line(sock, limit, deadline)
    except FileNotFoundError:
        raise ControlAbsent(f"no control socket at {path}") from None
    except ConnectionRefusedError:
        raise ControlAbsent(f"nobody listens on {path}") from None
    except PermissionError:
        raise ControlDenied(f"permission denied on {path}") from None
    except TimeoutError:
        raise ControlError(f"no answer on {path} within {timeout_s:g}s") from None
    except OSError as exc:
        raise ControlError(f"control socket {path}: {exc.strerror or exc}") from None
    finally:
        sock.close()
    try:
        answer = json.loads(reply)
    except ValueError:
        _close_all(fds)
        raise ControlError(f"malformed answer on {path}") from None
    if not isinstance(answer, dict):
        _close_all(fds)
        raise ControlError(f"malformed answer on {path}")
    return answer, fds


def _read_line(sock: socket.socket, limit: int, deadline: float) -> tuple[bytes, list[int]]:
    chunks: list[bytes] = []
    received: list[int] = []
    size = 0
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            _close_all(received)
            raise TimeoutError
        sock.settimeout(remaining)
        chunk, fds = _recv_with_fds(sock, MAX_REPLY_FDS)
        received += fds
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
        if b"\n" in chunk or size > limit:
            break
    data = b"".join(chunks)
    if size > limit:
        _close_all(received)
        raise ControlError("message too large")
    return data.split(b"\n", 1)[0], received


@dataclass
class _Connection:
    """A client being read or answered; it owns the descriptors it brought until a handler
    takes them (removes them from ``fds``)."""

    sock: socket.socket
    uid: int
    deadline: float
    buffer: bytearray = field(default_factory=bytearray)
    fds: list[int] = field(default_factory=list)

    def close(self) -> None:
        _close_all(self.fds)
        self.fds.clear()
        self.sock.close()


class ControlServer:
    """Listens on the control socket; one thread reads requests, short-lived ones answer."""

    def __init__(self, path: str, handler: Handler) -> None:
        self.path = path
        self.handler = handler
        self.allowed_uids = {0, os.getuid()}
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._closed = threading.Event()
        self._answering = {True: threading.BoundedSemaphore(MAX_ANSWERING),  # quick commands
                           False: threading.BoundedSemaphore(MAX_ANSWERING)}
        self._inode: tuple[int, int] | None = None  # the socket file we bound
        self._spare_fd: int | None = None  # see _refuse_at_fd_limit

    def bind(self) -> None:
        """Create the socket (mode 0600). We hold the pidfile lock, so a stale file is ours."""
        try:
            if not stat.S_ISSOCK(os.lstat(self.path).st_mode):
                raise ControlError(f"{self.path} exists and is not a socket (refused)")
            os.unlink(self.path)
        except FileNotFoundError:
            pass
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        old_umask = os.umask(0o177)
        try:
            with _short_path(self.path) as short:
                sock.bind(short)
        finally:
            os.umask(old_umask)
        sock.listen(64)
        sock.setblocking(False)
        self._sock = sock
        bound = os.lstat(self.path)
        self._inode = (bound.st_dev, bound.st_ino)

    def hand_over(self, uid: int, gid: int) -> None:
        """Give the socket file to the service user before dropping privileges to it.

        Never follows a symlink: the service user may own the directory and could have
        replaced the socket with a link to a root-owned file meanwhile.
        """
        fd = os.open(self.path, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            held = os.fstat(fd)
            if (not stat.S_ISSOCK(held.st_mode) or (held.st_dev, held.st_ino) != self._inode
                    or held.st_nlink != 1):
                raise ControlError(f"{self.path} was replaced by something that is not our "
                                   "socket")
            # through the descriptor: the very inode checked, whatever the path holds now
            os.chown(f"/proc/self/fd/{fd}", uid, gid)
        finally:
            os.close(fd)
        self.allowed_uids.add(uid)

    def start_thread(self) -> None:
        self._thread = threading.Thread(target=self._serve, name="daemonkit-control",
                                        daemon=True)
        self._thread.start()

    # -- the reading thread ------------------------------------------------------------------

    def _serve(self) -> None:
        listener = self._sock
        if listener is None:
            return
        self._spare_fd = _reserve_fd()
        selector = selectors.DefaultSelector()
        selector.register(listener, selectors.EVENT_READ)
        reading: dict[int, _Connection] = {}
        while not self._closed.is_set():
            try:
                self._turn(selector, listener, reading)
            except Exception:  # this thread must outlive any one request
                log.exception("control socket: unexpected error (serving on)")
                self._closed.wait(0.05)  # out of descriptors, say: back off, do not spin
        for connection in reading.values():
            connection.close()
        selector.close()
        if self._spare_fd is not None:
            os.close(self._spare_fd)
            self._spare_fd = None

    def _turn(self, selector: selectors.BaseSelector, listener: socket.socket,
              reading: dict[int, _Connection]) -> None:
        now = time.monotonic()
        timeout = min((c.deadline for c in reading.values()), default=now + 60.0) - now
        for key, _ in selector.select(max(0.0, timeout)):
            if self._closed.is_set():
                return
            if key.fileobj is listener:
                self._accept(selector, listener, reading)
            elif key.fd in reading:  # not dropped for a newcomer earlier in this turn
                self._read(selector, reading, reading[key.fd])
        now = time.monotonic()
        for connection in [c for c in reading.values() if c.deadline <= now]:
            self._drop(selector, reading, connection)
            self._reply_now(connection, {"ok": False, "error": "no complete request within "
                                                               f"{REQUEST_DEADLINE_S:g}s"})

    def _accept(self, selector: selectors.BaseSelector, listener: socket.socket,
                reading: dict[int, _Connection]) -> None:
        for _ in range(MAX_CONNECTIONS):
            try:
                sock, _ = listener.accept()
            except BlockingIOError:
                return
            except OSError as exc:
                if exc.errno not in (errno.EMFILE, errno.ENFILE):
                    raise
                self._refuse_at_fd_limit(listener)
                return
            sock.setblocking(False)
            creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
            _pid, uid, _gid = struct.unpack("3i", creds)
            if len(reading) >= MAX_CONNECTIONS:  # the oldest, slowest client makes room
                oldest = min(reading.values(), key=lambda c: c.deadline)
                self._drop(selector, reading, oldest)
                self._reply_now(oldest, {"ok": False, "error": "too many clients"})
            connection = _Connection(sock, uid, time.monotonic() + REQUEST_DEADLINE_S)
            reading[sock.fileno()] = connection
            selector.register(sock, selectors.EVENT_READ)

    def _refuse_at_fd_limit(self, listener: socket.socket) -> None:
        """Out of descriptors: answer the waiting client instead of leaving it queued.

        A connection the kernel cannot hand us stays in the backlog and keeps the listener
        readable, so the loop would wake at once, fail again, and spin. The descriptor kept
        in reserve (as nginx and libev do) is given up for one accept, long enough to tell
        that client why, then taken back."""
        if self._spare_fd is None:
            self._closed.wait(0.05)  # nothing in reserve: at least do not spin
            self._spare_fd = _reserve_fd()
            return
        os.close(self._spare_fd)
        self._spare_fd = None
        try:
            sock, _ = listener.accept()
        except OSError:
            sock = None
        if sock is not None:
            try:
                sock.setblocking(False)
                sock.send(json.dumps({"ok": False, "error": "the daemon is out of file "
                                      "descriptors; try again"}).encode() + b"\n")
            except OSError:
                pass
            sock.close()
        log.warning("control socket: out of file descriptors; refused a client")
        self._spare_fd = _reserve_fd()

    def _read(self, selector: selectors.BaseSelector, reading: dict[int, _Connection],
              connection: _Connection) -> None:
        try:
            chunk, fds = _recv_with_fds(connection.sock, MAX_REQUEST_FDS)
        except BlockingIOError:
            return
        except OSError:
            chunk, fds = b"", []
        keep = MAX_REQUEST_FDS - len(connection.fds)
        connection.fds += fds[:keep]
        _close_all(fds[keep:])
        connection.buffer += chunk
        if len(connection.buffer) > MAX_REQUEST:
            self._drop(selector, reading, connection)
            self._reply_now(connection, {"ok": False, "error": "request too large"})
        elif b"\n" in connection.buffer or not chunk:
            self._drop(selector, reading, connection)
            line = bytes(connection.buffer).split(b"\n", 1)[0]
            self._dispatch(connection, line)

    def _drop(self, selector: selectors.BaseSelector, reading: dict[int, _Connection],
              connection: _Connection) -> None:
        """No longer read: it is answered now, or dispatched to a thread that answers it."""
        selector.unregister(connection.sock)
        del reading[connection.sock.fileno()]

    def _dispatch(self, connection: _Connection, line: bytes) -> None:
        quick = _command_of(line) in QUICK_COMMANDS
        slots = self._answering[quick]
        if not slots.acquire(blocking=False):
            self._reply_now(connection, {"ok": False, "busy": True,
                                         "error": "busy: too many requests being answered"})
            return
        threading.Thread(target=self._answer_and_reply, args=(connection, line, slots),
                         name="daemonkit-control-answer", daemon=True).start()

    # -- answering threads -------------------------------------------------------------------

    def _answer_and_reply(self, connection: _Connection, line: bytes,
                          slots: threading.BoundedSemaphore) -> None:
        try:
            reply = self._answer(connection, line)
            fds = reply.pop(FDS, [])
            try:
                data = json.dumps(reply, default=str).encode() + b"\n"
            except ValueError as exc:  # a circular structure from a service's status_info()
                data = json.dumps({"ok": False, "error": f"unanswerable: {exc}"}).encode() + b"\n"
                fds = []
            connection.sock.setblocking(True)
            connection.sock.settimeout(REPLY_DEADLINE_S)
            if fds:
                socket.send_fds(connection.sock, [data], fds)
            else:
                connection.sock.sendall(data)
        except OSError:
            pass  # the client went away, or reads too slowly: nothing more to tell it
        finally:
            connection.close()
            slots.release()

    def _answer(self, connection: _Connection, line: bytes) -> dict[str, Any]:
        """The handler's answer. The message carries the peer's uid under ``PEER_UID`` and
        the descriptors that came with the request under ``FDS`` (the connection's own list:
        a handler that keeps one removes it; the rest are closed with the connection)."""
        if connection.uid not in self.allowed_uids:
            return {"ok": False, "error": f"uid {connection.uid} may not control this daemon"}
        try:
            message = json.loads(line)
        except (ValueError, RecursionError):
            return {"ok": False, "error": "malformed request: not one JSON object"}
        if not isinstance(message, dict) or not isinstance(message.get("cmd"), str):
            return {"ok": False, "error": 'a request is a JSON object with a "cmd" string'}
        message[FDS] = connection.fds
        message[PEER_UID] = connection.uid
        try:
            return self.handler(message)
        except RequestError as exc:
            return {"ok": False, "error": str(exc)}
        except Exception as exc:  # a handler's bug is an answer, not a crash
            log.exception("control request %r failed", message.get("cmd"))
            return {"ok": False, "error": f"{type(exc).__name__}: {exc}"}

    @staticmethod
    def _reply_now(connection: _Connection, reply: dict[str, Any]) -> None:
        """An answer that needs no handler, sent without waiting (best effort), then close."""
        try:
            connection.sock.send(json.dumps(reply).encode() + b"\n")
        except OSError:
            pass
        connection.close()

    def forget(self) -> None:
        """Close our descriptor of the socket and nothing else (a forked child's copy)."""
        if self._spare_fd is not None:
            os.close(self._spare_fd)
            self._spare_fd = None
        sock, self._sock = self._sock, None
        if sock is not None:
            sock.close()
        # not self._closed.set(): no thread of ours survives the fork to be told, and an
        # Event's lock may have been held by one at the fork (this runs in the child, also
        # in the supervisor's children between fork and exec)

    def move_to(self, path: str) -> None:
        """Rename the bound socket file: a bound unix socket is reached by its inode, so
        clients find it at the new name at once (a successor taking its predecessor's)."""
        with _short_path(self.path) as old, _short_path(path) as new:
            os.rename(old, new)
        self.path = path

    def close(self, unlink: bool = True) -> None:
        self._closed.set()
        sock, self._sock = self._sock, None
        if sock is None:
            return
        try:
            sock.shutdown(socket.SHUT_RDWR)  # makes the listener readable: wakes the thread
        except OSError:
            pass
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(2.0)
        sock.close()
        if unlink:
            try:
                os.unlink(self.path)
            except OSError:
                pass  # root-owned directory after a privilege drop: stop removes it


def _reserve_fd() -> int | None:
    try:
        return os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
