"""The daemon's control socket: how ``status`` and ``reload`` get answers, not guesses.

A signal cannot carry a result back. ``reload`` must say whether the service's ``reload()``
succeeded, and ``status`` should show live figures, so the daemon listens on a UNIX stream
socket beside its pidfile. One request per connection: the client sends one JSON object on
one line, the daemon answers one JSON object on one line and closes. Requests are handled one
at a time (serialised) by one thread, and are capped at :data:`MAX_REQUEST` bytes.

Security: the socket file is created with mode 0600 and handed to the service user after a
privilege drop; on top of the file mode, the peer's uid (``SO_PEERCRED``) must be root's or
the daemon's own.

Paths longer than ``sun_path`` allows (108 bytes) go through ``/proc/self/fd/N/NAME``, which
the kernel resolves like any path: a deep test directory must not make the feature vanish.
"""

from __future__ import annotations

import json
import os
import socket
import stat
import struct
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from .errors import DaemonkitError

MAX_REQUEST = 64 * 1024
MAX_REPLY = 4 * 1024 * 1024
_SUN_PATH_MAX = 100  # a little under 108, for the NUL and safety

Handler = Callable[[dict[str, Any]], dict[str, Any]]


class ControlError(DaemonkitError):
    """No answer from the daemon's control socket."""


def control_path_for(pidfile_path: str) -> str:
    """``/run/x.pid`` -> ``/run/x.ctl``: the socket lives beside the pidfile it belongs to."""
    base = pidfile_path[:-4] if pidfile_path.endswith(".pid") else pidfile_path
    return base + ".ctl"


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
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    sock.settimeout(timeout_s)
    try:
        with _short_path(path) as short:
            sock.connect(short)
        sock.sendall(json.dumps(message).encode() + b"\n")
        reply = _read_line(sock, MAX_REPLY)
    except FileNotFoundError:
        raise ControlError(f"no control socket at {path}") from None
    except ConnectionRefusedError:
        raise ControlError(f"nobody listens on {path}") from None
    except PermissionError:
        raise ControlError(f"permission denied on {path}") from None
    except TimeoutError:
        raise ControlError(f"no answer on {path} within {timeout_s:g}s") from None
    except OSError as exc:
        raise ControlError(f"control socket {path}: {exc.strerror or exc}") from None
    finally:
        sock.close()
    try:
        answer = json.loads(reply)
    except ValueError:
        raise ControlError(f"malformed answer on {path}") from None
    if not isinstance(answer, dict):
        raise ControlError(f"malformed answer on {path}")
    return answer


def _read_line(sock: socket.socket, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
        if b"\n" in chunk or size > limit:
            break
    data = b"".join(chunks)
    if size > limit:
        raise ControlError("message too large")
    return data.split(b"\n", 1)[0]


class ControlServer:
    """Listens on the control socket; ``serve_forever`` runs in its own thread."""

    def __init__(self, path: str, handler: Handler) -> None:
        self.path = path
        self.handler = handler
        self.allowed_uids = {0, os.getuid()}
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._closed = threading.Event()

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
        sock.listen(16)
        self._sock = sock

    def hand_over(self, uid: int, gid: int) -> None:
        """Give the socket file to the service user before dropping privileges to it.

        Never follows a symlink: the service user may own the directory and could have
        replaced the socket with a link to a root-owned file meanwhile.
        """
        if not stat.S_ISSOCK(os.lstat(self.path).st_mode):
            raise ControlError(f"{self.path} was replaced by something that is not our socket")
        os.chown(self.path, uid, gid, follow_symlinks=False)
        self.allowed_uids.add(uid)

    def start_thread(self) -> None:
        self._thread = threading.Thread(
            target=self.serve_forever, name="daemonkit-control", daemon=True
        )
        self._thread.start()

    def serve_forever(self) -> None:
        while not self._closed.is_set():
            try:
                self.handle_one()
            except OSError:
                # closed by close() (the daemon is stopping), or out of descriptors: in the
                # latter case back off instead of spinning
                self._closed.wait(0.1)

    def handle_one(self) -> None:
        if self._sock is None:
            raise OSError("control socket closed")
        conn, _ = self._sock.accept()
        with conn:
            conn.settimeout(5.0)  # a client that connects and says nothing cannot wedge us
            try:
                reply = self._answer(conn)
            except (ControlError, OSError, ValueError) as exc:
                reply = {"ok": False, "error": str(exc)}
            try:
                conn.sendall(json.dumps(reply, default=str).encode() + b"\n")
            except OSError:
                pass  # the client went away; nothing to tell it

    def _answer(self, conn: socket.socket) -> dict[str, Any]:
        creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        _pid, uid, _gid = struct.unpack("3i", creds)
        line = _read_line(conn, MAX_REQUEST)  # read first: the refusal must reach the client
        if uid not in self.allowed_uids:
            return {"ok": False, "error": f"uid {uid} may not control this daemon"}
        message = json.loads(line)
        if not isinstance(message, dict) or not isinstance(message.get("cmd"), str):
            return {"ok": False, "error": 'a request is a JSON object with a "cmd" string'}
        return self.handler(message)

    def close(self, unlink: bool = True) -> None:
        self._closed.set()
        sock, self._sock = self._sock, None
        if sock is None:
            return
        try:
            sock.shutdown(socket.SHUT_RDWR)  # wakes a thread blocked in accept()
        except OSError:
            pass
        sock.close()
        if unlink:
            try:
                os.unlink(self.path)
            except OSError:
                pass  # root-owned directory after a privilege drop: stop removes it
