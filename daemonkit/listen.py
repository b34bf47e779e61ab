"""Listening sockets owned by the toolkit: declared, bound (or received), handed to the service.

A service declares where it listens (``listen = ("tcp://127.0.0.1:8080",)`` or ``--listen``,
repeatable) and gets ready socket objects in ``self.listeners``, in the declared order. Where
they come from is daemonkit's business, never the service's:

* systemd socket activation: started by a ``.socket`` unit, the process finds them as fds
  3, 4, ... (``LISTEN_FDS``, ``LISTEN_PID``, ``LISTEN_FDNAMES``, sd_listen_fds(3) semantics);
  they are matched to the declared addresses by name (``--listen NAME=ADDRESS`` against
  ``FileDescriptorName=``), else by order;
* a ``restart`` hands the running daemon's sockets to its successor (``handover``);
* otherwise daemonkit binds them, before the privilege drop (port 80 works with ``--user``).

Addresses: ``tcp://HOST:PORT`` (``tcp://[::1]:PORT`` for IPv6; ``tcp://:PORT`` or
``tcp://0.0.0.0:PORT`` for every IPv4 address), ``unix:/path`` (``unix:///path`` too),
``unix:@name`` for Linux's abstract namespace (no file; as systemd writes it). A unix
socket's stale file is removed only if it is a socket.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
import stat
from dataclasses import dataclass

from .errors import ConfigError, DaemonkitError

#: sd_listen_fds(3): passed descriptors start here
LISTEN_FDS_START = 3
BACKLOG = 1024
#: a listener's Python timeout: its descriptor is non-blocking (a restart's two daemons share
#: it, and an asyncio one sets that anyway), so a sync service's accept() waits this long
ACCEPT_TIMEOUT_S = 86400.0


@dataclass(frozen=True)
class ListenAddress:
    """One declared address; ``key`` is what two daemons compare (a handover reuses a socket
    only for the very same address)."""

    name: str | None
    family: int
    host: str | None = None
    port: int | None = None
    path: str | None = None

    @property
    def key(self) -> str:
        if self.family == socket.AF_UNIX:
            return f"unix:{self.path}"
        host = f"[{self.host}]" if self.family == socket.AF_INET6 else self.host
        return f"tcp://{host}:{self.port}"

    def __str__(self) -> str:
        return f"{self.name}={self.key}" if self.name else self.key


def parse_address(text: str) -> ListenAddress:
    """``[NAME=]tcp://HOST:PORT`` or ``[NAME=]unix:/path``; ConfigError names what is wrong."""
    name, address = None, text
    head, sep, tail = text.partition("=")
    if sep and "/" not in head and ":" not in head:
        if not head:
            raise ConfigError(f"--listen {text}: the name before '=' is empty")
        name, address = head, tail
    if address.startswith("unix:"):
        path = address[len("unix:"):]
        path = "/" + path.lstrip("/") if path.startswith("//") else path
        if not path or path == "@":
            raise ConfigError(f"--listen {text}: a unix address needs a path")
        if path.startswith("@"):
            return ListenAddress(name, socket.AF_UNIX, path=path)  # abstract: no file
        return ListenAddress(name, socket.AF_UNIX, path=os.path.abspath(path))
    if not address.startswith("tcp://"):
        raise ConfigError(f"--listen {text}: expected tcp://HOST:PORT or unix:/path")
    rest = address[len("tcp://"):]
    host, sep, port_text = rest.rpartition(":")
    if not sep or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ConfigError(f"--listen {text}: the port must be a number from 1 to 65535")
    family = socket.AF_INET
    if host.startswith("[") and host.endswith("]"):
        host, family = host[1:-1], socket.AF_INET6
    host = host or "0.0.0.0"
    try:
        parsed = ipaddress.ip_address(host)
    except ValueError:
        raise ConfigError(f"--listen {text}: {host!r} is not an IP address (names are not "
                          "resolved: a daemon must not depend on DNS to start)") from None
    if (parsed.version == 6) != (family == socket.AF_INET6):
        raise ConfigError(f"--listen {text}: write an IPv6 address in brackets, [{host}]")
    return ListenAddress(name, family, host=str(parsed), port=int(port_text))


def bind(address: ListenAddress) -> socket.socket:
    """A listening socket for ``address``; DaemonkitError says why it cannot be had."""
    sock = socket.socket(address.family, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        if address.family == socket.AF_UNIX and address.path is not None and (
                address.path.startswith("@")):
            sock.bind("\0" + address.path[1:])
        elif address.family == socket.AF_UNIX:
            assert address.path is not None
            _remove_stale_unix_socket(address.path)
            sock.bind(address.path)
            os.chmod(address.path, 0o666)  # as systemd's SocketMode=: the directory decides
        else:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if address.family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind((address.host, address.port))
        sock.listen(BACKLOG)
    except OSError as exc:
        sock.close()
        raise DaemonkitError(f"cannot listen on {address.key}: {exc.strerror or exc}") from exc
    return sock


def _remove_stale_unix_socket(path: str) -> None:
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise OSError(errno.EEXIST, f"{path} exists and is not a socket")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except ConnectionRefusedError:
        os.unlink(path)  # nobody listens there any more
        return
    except OSError:
        return
    finally:
        probe.close()
    raise OSError(errno.EADDRINUSE, "Address already in use")


def address_of(sock: socket.socket) -> str:
    """The ``key`` of the address a socket listens on."""
    local = sock.getsockname()
    if sock.family == socket.AF_UNIX:
        if isinstance(local, bytes):  # the abstract namespace
            return f"unix:@{local[1:].decode(errors='replace')}"
        return f"unix:{local}"
    if sock.family == socket.AF_INET6:
        return f"tcp://[{local[0]}]:{local[1]}"
    return f"tcp://{local[0]}:{local[1]}"


def from_systemd() -> list[tuple[str | None, socket.socket]] | None:
    """The sockets systemd passed this process, with their names, in systemd's order; None
    when not socket-activated. Unsets ``LISTEN_*`` (children must not take them)."""
    pid, count = os.environ.get("LISTEN_PID"), os.environ.get("LISTEN_FDS")
    names = os.environ.get("LISTEN_FDNAMES")
    for variable in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        os.environ.pop(variable, None)
    if not (pid and count and pid.isdigit() and count.isdigit()) or int(pid) != os.getpid():
        return None
    fd_names = names.split(":") if names else []
    passed: list[tuple[str | None, socket.socket]] = []
    for position, fd in enumerate(range(LISTEN_FDS_START, LISTEN_FDS_START + int(count))):
        os.set_inheritable(fd, False)
        name = fd_names[position] if position < len(fd_names) else None
        passed.append((name if name and name != "unknown" else None, socket.socket(fileno=fd)))
    return passed
