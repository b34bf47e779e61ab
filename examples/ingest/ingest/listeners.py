"""Turn connections away, instead of spinning, when the process runs out of file descriptors.

libzmq 4.3.5 accepts connections in its I/O thread; when ``accept()`` fails with EMFILE it
reports the failure and returns, the listening socket stays readable, and the thread tries
again at once: 100% of a core for as long as a connection waits and no descriptor is free
(``ulimit -n`` reached), while the existing connections are served.

What stops the spin is taking the waiting connections off the listening socket. That needs
a descriptor per connection, which this process has none of (and any it frees, libzmq's
spinning thread takes first), so another process does it: a small helper started with the
listening sockets, the *shedder*. When libzmq's socket monitor reports an accept that
failed for want of descriptors, the I/O thread writes a byte to the shedder's pipe; the
shedder accepts every waiting connection, holds each for :data:`HOLD_S` and then resets it.
The client reconnects after that (and its ``RECONNECT_IVL``): a back-off of about a second
per client, where an immediate reset would have it back within 100 ms. The connections
already in are served all along.

libzmq spins, and reports a failed accept each turn, from the moment a connection arrives
until the shedder has taken it; reached through ingestd's I/O thread, that took about 450
monitor events per connection, and reading them cost ingestd 20 % of a core under a crowd
of 100 reconnecting clients. So each request opens a *shedding window* of
:data:`SHED_WINDOW_S`, during which the shedder watches the listening sockets itself and
takes a connection as it arrives (about 80 events per connection), and each failure that
still comes renews the window. The cost of the window: a connection that arrives in it after
descriptors came free is turned away too, so new clients get in again within
:data:`SHED_WINDOW_S` + :data:`HOLD_S` + their ``RECONNECT_IVL`` of the descriptors' return.

For the shedder to accept on libzmq's listening socket, ingestd creates that socket itself
and hands it to libzmq with ``ZMQ_USE_FD`` (the documented way to bind a pre-made socket),
keeping a duplicate. Only ``tcp://`` endpoints with an address or a host name
(``tcp://127.0.0.1:5555``, ``tcp://*:5555``, ``tcp://[::1]:5555``) are guarded; ``ipc://``
and interface names (``tcp://eth0:5555``) are bound by libzmq itself, as before.
"""

from __future__ import annotations

import errno
import os
import socket
import struct
import subprocess
import sys
from typing import Any

import zmq

#: accept() failures that mean "no descriptor or memory for one more connection"
OUT_OF_DESCRIPTORS = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}
#: monitor events read per call, at most (libzmq sends one per failed accept)
MAX_EVENTS = 1000
#: a monitor event's first frame (parse_monitor_message builds enums: 1.4 us an event, this 0.1)
MONITOR_EVENT = struct.Struct("=HI")
#: how long the shedder holds a connection before it resets it
HOLD_S = 1.0
#: how long after a request the shedder keeps taking connections as they arrive
SHED_WINDOW_S = 0.5

#: the shedder: argv = hold, window, control pipe fd, report pipe fd, listening socket fds
SHEDDER = r"""
import errno, os, select, socket, struct, sys, time
HOLD_S, SHED_WINDOW_S, MAX_HELD = float(sys.argv[1]), float(sys.argv[2]), 256
control, report = int(sys.argv[3]), int(sys.argv[4])
listeners = [socket.socket(fileno=int(fd)) for fd in sys.argv[5:]]
held = []  # (reset at, connection), oldest first
window_ends = 0.0  # until then, take connections as they arrive
def reset(conn):
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    conn.close()
while True:
    now = time.monotonic()
    shedding = now < window_ends
    deadlines = [held[0][0]] if held else []
    if shedding:
        deadlines.append(window_ends)
    timeout = max(0.0, min(deadlines) - now) if deadlines else None
    readable = select.select([control, *listeners] if shedding else [control], [], [],
                             timeout)[0]
    if control in readable:
        if not os.read(control, 4096):
            break  # ingestd closed its end, or died
        window_ends = time.monotonic() + SHED_WINDOW_S
    if readable:
        taken = 0
        for listener in listeners:
            while taken < 10000:
                try:
                    conn, _ = listener.accept()
                except BlockingIOError:
                    break  # nothing waits
                except OSError as exc:
                    if exc.errno not in (errno.EMFILE, errno.ENFILE):
                        break  # the connection went away before it was taken, say
                    # out of descriptors itself (a service-wide ulimit): free the oldest
                    # held one, or, holding none, stop watching, lest select() spin
                    if not held:
                        window_ends = 0.0
                        break
                    reset(held.pop(0)[1])
                    continue
                taken += 1
                if len(held) >= MAX_HELD:
                    reset(held.pop(0)[1])
                held.append((time.monotonic() + HOLD_S, conn))
        if taken:
            os.write(report, struct.pack("=I", taken))
    while held and held[0][0] <= time.monotonic():
        reset(held.pop(0)[1])
for _, conn in held:
    reset(conn)
"""


class Guard:
    """The listening sockets of one ROUTER, and the shedder that empties them when needed."""

    def __init__(self) -> None:
        self._listeners: list[socket.socket] = []
        self._shedder: subprocess.Popen[bytes] | None = None
        self._control = -1
        #: readable when the shedder has turned connections away (see :meth:`refused`)
        self.report = -1

    def bind(self, router: zmq.Socket[Any], endpoint: str) -> None:
        sock = _listening_socket(endpoint, int(router.getsockopt(zmq.BACKLOG)))
        if sock is None:
            router.bind(endpoint)
            return
        ours = sock.dup()
        fd = sock.detach()  # libzmq's from now on: it closes it when the socket closes
        try:
            router.setsockopt(zmq.USE_FD, fd)
            router.bind(endpoint)  # with USE_FD, libzmq takes the address from the socket
        except BaseException:
            os.close(fd)
            ours.close()
            raise
        finally:
            router.setsockopt(zmq.USE_FD, -1)
        self._listeners.append(ours)

    def start(self) -> None:
        """Start the shedder (once every endpoint is bound)."""
        if not self._listeners:
            return
        control_r, self._control = os.pipe2(os.O_CLOEXEC)
        self.report, report_w = os.pipe2(os.O_CLOEXEC)
        os.set_blocking(self._control, False)
        os.set_blocking(self.report, False)
        fds = [s.fileno() for s in self._listeners]
        try:
            self._shedder = subprocess.Popen(
                [sys.executable, "-c", SHEDDER, str(HOLD_S), str(SHED_WINDOW_S),
                 str(control_r), str(report_w), *map(str, fds)],
                pass_fds=[control_r, report_w, *fds],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        finally:
            os.close(control_r)
            os.close(report_w)

    def shed(self) -> None:
        """Ask the shedder to take the connections waiting now."""
        if self._shedder is None:
            return
        try:
            os.write(self._control, b"!")
        except BlockingIOError:
            pass  # it has a backlog of requests already: it will look again
        except OSError:
            pass  # it is gone; connections wait for descriptors as they would without it

    def refused(self) -> int:
        """Connections the shedder turned away since the last call."""
        total = 0
        while True:
            try:
                data = os.read(self.report, 4096)
            except (BlockingIOError, OSError):
                return total
            if not data:
                return total
            total += sum(n for (n,) in struct.iter_unpack("=I", data[:len(data) // 4 * 4]))

    def close(self) -> None:
        if self._shedder is not None:
            os.close(self._control)
            try:
                self._shedder.wait(2.0)
            except subprocess.TimeoutExpired:
                self._shedder.kill()
                self._shedder.wait(2.0)
            os.close(self.report)
            self._shedder = None
        for sock in self._listeners:
            sock.close()
        self._listeners = []


def out_of_descriptors(monitor: zmq.Socket[Any]) -> bool:
    """Drain the monitor socket's EVENT_ACCEPT_FAILED events; True if one says EMFILE & co.

    (Imported at the top: at EMFILE an import cannot open its file.)"""
    found = False
    for _ in range(MAX_EVENTS):
        try:
            frames = monitor.recv_multipart(zmq.NOBLOCK)
        except zmq.Again:
            break
        # the first frame is (event: u16, value: u32), as zmq_socket_monitor documents
        event, value = MONITOR_EVENT.unpack_from(frames[0])
        if event == zmq.EVENT_ACCEPT_FAILED and value in OUT_OF_DESCRIPTORS:
            found = True
    return found


def _listening_socket(endpoint: str, backlog: int) -> socket.socket | None:
    """A listening socket for a tcp:// endpoint, or None when libzmq must bind it itself."""
    scheme, _, address = endpoint.partition("://")
    host, _, port = address.rpartition(":")
    if scheme != "tcp" or not host:
        return None
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if host == "*":
        host = "0.0.0.0"
    try:
        infos = socket.getaddrinfo(host, 0 if port == "*" else int(port),
                                   type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (socket.gaierror, ValueError):
        return None  # an interface name, say: libzmq knows what it means
    family, kind, proto, _name, sockaddr = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as libzmq does
        sock.bind(sockaddr)
        sock.listen(backlog)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock
