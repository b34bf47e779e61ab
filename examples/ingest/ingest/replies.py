"""Replies leave in the order their requests arrived, connection by connection.

A REP socket answers one request at a time, so its replies can never overtake each other.
ingestd answers bad input at once, stores good input in group commits (with several writers
in parallel), and so has to restore that order itself: a DEALER that pipelines requests
without tagging them matches replies by position, and a reply to its third request must not
come before the replies to its first two just because the third was malformed. Tagged
DEALERs, REQ sockets (one request at a time) and peers behind a proxy lose nothing by it.

Per connection (routing id) there is a queue of the requests taken and not yet answered; a
reply is sent when it reaches the head of its queue. A connection with nothing in flight has
no queue, so memory is bounded by the requests in flight, which the I/O thread bounds.
"""

from __future__ import annotations

import collections
from collections.abc import Callable


class Pending:
    """One request taken and not yet answered."""

    __slots__ = ("peer", "reply", "reply_prefix", "size")

    def __init__(self, peer: Peer, reply_prefix: list[bytes], size: int) -> None:
        self.peer = peer
        #: the frames the reply starts with (envelope and delimiter)
        self.reply_prefix = reply_prefix
        #: the bytes the request holds while in flight
        self.size = size
        self.reply: bytes | None = None


class Peer:
    """One connection's requests in flight, in arrival order."""

    __slots__ = ("large", "routing_id", "slow", "waiting")

    def __init__(self, routing_id: bytes) -> None:
        self.routing_id = routing_id
        self.waiting: collections.deque[Pending] = collections.deque()
        #: of these, how many wait in the I/O thread's slow lane, and how many of those are
        #: large requests (the others wait behind one)
        self.slow = 0
        self.large = 0


class ReplyOrder:
    """Owned by the I/O thread, like the socket its ``send`` writes to."""

    def __init__(self, send: Callable[[list[bytes], bytes], None]) -> None:
        #: send(reply_prefix, reply): the owner's, on its socket
        self._send = send
        self._peers: dict[bytes, Peer] = {}
        #: requests taken and not answered yet, and the bytes they hold
        self.inflight_requests = 0
        self.inflight_bytes = 0

    def peer(self, routing_id: bytes) -> Peer | None:
        return self._peers.get(routing_id)

    def take(self, reply_prefix: list[bytes], size: int) -> Pending:
        """Note a request that will be answered later, behind the ones already in flight."""
        routing_id = reply_prefix[0]
        peer = self._peers.get(routing_id)
        if peer is None:
            peer = self._peers[routing_id] = Peer(routing_id)
        pending = Pending(peer, reply_prefix, size)
        peer.waiting.append(pending)
        self.inflight_requests += 1
        self.inflight_bytes += size
        return pending

    def grow(self, pending: Pending, extra: int) -> None:
        """``pending`` holds ``extra`` bytes more than counted when it was taken."""
        pending.size += extra
        self.inflight_bytes += extra

    def answer_now(self, reply_prefix: list[bytes], reply: bytes) -> None:
        """Answer a request that needs no work: at once, unless its connection waits for
        earlier replies, in which case it queues behind them."""
        if reply_prefix[0] not in self._peers:
            self._send(reply_prefix, reply)
        else:
            self.answer(self.take(reply_prefix, 0), reply)

    def answer(self, pending: Pending, reply: bytes) -> None:
        """The reply to ``pending``; sent with every reply it was holding up."""
        pending.reply = reply
        peer = pending.peer
        waiting = peer.waiting
        if waiting[0] is not pending:
            return  # an earlier request of the same connection is still in flight
        send = self._send
        while waiting and waiting[0].reply is not None:
            done = waiting.popleft()
            self.inflight_requests -= 1
            self.inflight_bytes -= done.size
            send(done.reply_prefix, done.reply)  # type: ignore[arg-type]
        if not waiting:
            del self._peers[peer.routing_id]
