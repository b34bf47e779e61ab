"""Replies leave in the order their requests arrived, connection by connection.

A REP socket answers one request at a time, so its replies can never overtake each other.
ingestd answers bad input at once, stores good input in group commits (with several writers
in parallel), and so has to restore that order itself: a DEALER that pipelines requests
without tagging them matches replies by position, and a reply to its third request must not
come before the replies to its first two just because the third was malformed. Tagged
DEALERs, REQ sockets (one request at a time) and peers behind a proxy lose nothing by it.

Per connection (routing id) the requests taken and not yet answered form a chain, oldest
first; a reply is sent when it reaches the head of its chain. A connection with nothing in
flight has no chain, so memory is bounded by the requests in flight, which the I/O thread
bounds. (A chain of slots rather than a queue object per connection: a REQ client's
connection has one request at a time, and 0.25 us per request is a tenth of the cost.)
"""

from __future__ import annotations

from collections.abc import Callable


class Pending:
    """One request taken and not yet answered."""

    __slots__ = ("later", "reply", "reply_prefix", "size")

    def __init__(self, reply_prefix: list[bytes], size: int) -> None:
        #: the frames the reply starts with (envelope and delimiter)
        self.reply_prefix = reply_prefix
        #: the bytes the request holds while in flight
        self.size = size
        self.reply: bytes | None = None
        #: the same connection's next request, if it has one in flight
        self.later: Pending | None = None


class ReplyOrder:
    """Owned by the I/O thread, like the socket its ``send`` writes to."""

    def __init__(self, send: Callable[[list[bytes], bytes], None]) -> None:
        #: send(reply_prefix, reply): the owner's, on its socket
        self._send = send
        #: per connection with requests in flight: the oldest and the newest of them
        self._oldest: dict[bytes, Pending] = {}
        self._newest: dict[bytes, Pending] = {}
        #: requests taken and not answered yet, and the bytes they hold
        self.inflight_requests = 0
        self.inflight_bytes = 0

    def take(self, reply_prefix: list[bytes], size: int) -> Pending:
        """Note a request that will be answered later, behind the ones already in flight."""
        routing_id = reply_prefix[0]
        pending = Pending(reply_prefix, size)
        newest = self._newest.get(routing_id)
        if newest is None:
            self._oldest[routing_id] = pending
        else:
            newest.later = pending
        self._newest[routing_id] = pending
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
        if reply_prefix[0] not in self._oldest:
            self._send(reply_prefix, reply)
        else:
            self.answer(self.take(reply_prefix, 0), reply)

    def answer(self, pending: Pending, reply: bytes) -> None:
        """The reply to ``pending``; sent with every reply it was holding up."""
        pending.reply = reply
        routing_id = pending.reply_prefix[0]
        if self._oldest[routing_id] is not pending:
            return  # an earlier request of the same connection is still in flight
        send = self._send
        ready: Pending | None = pending
        while ready is not None and ready.reply is not None:
            self.inflight_requests -= 1
            self.inflight_bytes -= ready.size
            send(ready.reply_prefix, ready.reply)
            ready = ready.later
        if ready is None:
            del self._oldest[routing_id]
            del self._newest[routing_id]
        else:
            self._oldest[routing_id] = ready

    def answer_everything(self, reply: bytes) -> int:
        """Answer every request in flight: with its own reply where one waits for its turn,
        else with ``reply``; in order, connection by connection. How many got ``reply``."""
        told = 0
        for routing_id in list(self._oldest):
            pending: Pending | None = self._oldest.pop(routing_id)
            del self._newest[routing_id]
            while pending is not None:
                if pending.reply is None:
                    pending.reply = reply
                    told += 1
                self._send(pending.reply_prefix, pending.reply)
                self.inflight_requests -= 1
                self.inflight_bytes -= pending.size
                pending = pending.later
        return told
