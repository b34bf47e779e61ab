"""Which local user is on the other end of a loopback TCP connection.

A page without credentials is open to every process that can reach loopback, which on a
shared host means every local user: through it, ``nobody`` could stop the programs of a
root supervisor whose control socket refuses him. TCP has no ``SO_PEERCRED``, but for a
connection between two sockets of this host the kernel lists the client's socket, with its
owner's uid, in ``/proc/net/tcp`` (or ``tcp6``): the entry whose local end is the client's
address and whose remote end is ours. Reading that answers the question the control socket
answers with ``SO_PEERCRED``, without a token for the supervisor's own user.

The lookup is one read of the table per connection (not per request). A client that has
already gone, or a kernel without ``/proc/net``, gives ``None``: the caller refuses.
"""

from __future__ import annotations

import ipaddress
import socket
import struct
from collections.abc import Iterable

_TABLES: dict[int, str] = {socket.AF_INET: "/proc/net/tcp", socket.AF_INET6: "/proc/net/tcp6"}
_ESTABLISHED = "01"
_MAX_TABLE_ROWS = 500_000  # a bound on what one lookup reads (about 75 MB of table)


def _endpoint(text: str) -> tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, int]:
    """``"0100007F:1F90"`` -> (127.0.0.1, 8080): the address is in host byte order words."""
    address_hex, port_hex = text.split(":")
    words = [int(address_hex[i:i + 8], 16) for i in range(0, len(address_hex), 8)]
    packed = b"".join(struct.pack("=I", word) for word in words)
    return _unmapped(ipaddress.ip_address(packed)), int(port_hex, 16)


def _unmapped(address: ipaddress.IPv4Address | ipaddress.IPv6Address
              ) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """A dual-stack socket names an IPv4 client ``::ffff:127.0.0.1``; compare as IPv4."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _normal(host: str, port: int) -> tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, int]:
    return _unmapped(ipaddress.ip_address(host.split("%", 1)[0])), port


def loopback_peer_uid(client: tuple[str, int], server: tuple[str, int],
                      family: int) -> int | None:
    """The uid owning the client's socket of an established loopback connection, or None."""
    wanted_client = _normal(client[0], int(client[1]))
    wanted_server = _normal(server[0], int(server[1]))
    if not wanted_client[0].is_loopback and wanted_client[0] != wanted_server[0]:
        return None  # another host: its users are not ours to name
    tables = [_TABLES[family]] if family == socket.AF_INET else list(_TABLES.values())
    for table in tables:
        try:
            with open(table, encoding="ascii", errors="replace") as handle:
                uid = _find_owner(handle, wanted_client, wanted_server)
        except OSError:
            continue
        if uid is not None:
            return uid
    return None


def _find_owner(rows: Iterable[str], client: tuple[object, int],
                server: tuple[object, int]) -> int | None:
    """Read rows only until the match: the table holds every socket of the host, which
    a local user can make long, so the scan is bounded and stops early."""
    for number, row in enumerate(rows):
        if number > _MAX_TABLE_ROWS:
            return None
        fields = row.split()
        if number == 0 or len(fields) < 8 or fields[3] != _ESTABLISHED:
            continue  # the header line, or not an established connection
        try:
            local, remote = _endpoint(fields[1]), _endpoint(fields[2])
        except ValueError:
            continue
        if local == client and remote == server:
            return int(fields[7])
    return None
