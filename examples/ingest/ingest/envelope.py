"""Read one message off a ROUTER socket the way a REP socket reads a request.

What arrives on a ROUTER is ``[routing id, *envelope, b"", request]``: ZeroMQ's ROUTER puts
the connection's routing id first; a REQ socket adds the empty delimiter; whatever sits
between them was added by the peer on its way here: a proxy's or broker's hop (each
``zmq.proxy`` ROUTER/DEALER pair adds one routing id), the request id of a REQ socket with
``ZMQ_REQ_CORRELATE``, a DEALER's own tag. A REP socket answers with all of it, up to and
including the delimiter, then its reply; so does ingestd, which is what makes every standard
request peer work: REQ, REQ behind proxies, Lazy Pirate, DEALER.

Limits, applied before anything is copied out of ZeroMQ's buffers:

* the **whole message** (every frame) is at most ``max_message_size`` bytes; ZeroMQ's own
  ``MAXMSGSIZE``, which ingestd sets to the same value, applies to each frame and cuts a
  peer off when one frame is too big, but says nothing about a message of many frames;
* the envelope (routing id included) has at most :data:`MAX_ENVELOPE_FRAMES` frames and
  :data:`MAX_ENVELOPE_BYTES` bytes: every reply repeats it, and ZeroMQ queues up to SNDHWM
  replies for a peer that does not read them, so a big envelope would multiply memory;
* exactly one request frame after the delimiter.

A message over a limit is answered with an error and dropped; its frames are never copied
(``recv(copy=False)`` hands out ZeroMQ's own buffers, released when dropped). A message of
more frames than any request may have is refused whatever follows; the rest is read and
dropped by :func:`read_rest`, for a bounded time per call, before the refusal is sent: a
peer sending a million empty frames (2 bytes each on the wire; reading one costs the I/O
thread about 2.5 us) must not hold up everyone else's acks for seconds. A message
with no delimiter where one belongs cannot be answered the REP way; a REP socket drops it
silently, ingestd answers ``[routing id, error]`` so that a DEALER that forgot the empty frame
learns why.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import zmq

from . import protocol

#: frames before the delimiter, the ROUTER's routing id included (zmq.proxy adds one per hop)
MAX_ENVELOPE_FRAMES = 16
#: and their bytes: 16 routing ids of libzmq's maximum length (255) fit
MAX_ENVELOPE_BYTES = 4096
#: what receive() reads of a message at most: every frame a request may have, and one more
_FRAMES_JUDGED = MAX_ENVELOPE_FRAMES + 3
#: frames dropped between two looks at the clock (about 2.5 ms of them)
_DISCARD_BETWEEN_CLOCKS = 1000
_NOBLOCK = int(zmq.NOBLOCK)


@dataclass(slots=True)
class Message:
    """One message read off the ROUTER."""

    #: what a reply starts with: the envelope and the delimiter, or [routing id] alone when
    #: the message had no delimiter where one belongs
    reply_prefix: list[bytes]
    #: bytes of every frame
    size: int
    #: the request frame, not copied (None when ``problem`` is set)
    body: zmq.Frame | None
    #: the error reply, when the message breaks a rule
    problem: bytes | None
    #: frames of this message are still to be read (and dropped) before it is answered:
    #: see read_rest
    rest_unread: bool = False

    @property
    def routing_id(self) -> bytes:
        return self.reply_prefix[0]


def receive(socket: zmq.Socket[Any], max_message_size: int) -> Message:
    """The next message; raises ``zmq.Again`` when there is none.

    ZeroMQ hands a message over whole or not at all: once its first frame is here, the rest is
    too, so the frames after the first are read without waiting.
    """
    recv = socket.recv
    frame = recv(_NOBLOCK, copy=False)
    frames = [frame]
    size = len(frame)
    # read: the longest envelope, the delimiter, the request and one frame too many
    while frame.more and len(frames) < _FRAMES_JUDGED:
        frame = recv(_NOBLOCK, copy=False)
        size += len(frame)
        frames.append(frame)
    count = len(frames)
    if count == 3 and not len(frames[1]) and size <= max_message_size:
        # a REQ socket's [routing id, "", request], nearly every message: the short way
        return Message([frames[0].bytes, b""], size, frames[2], None)
    message = _classify(frames, count, size, max_message_size)
    message.rest_unread = frame.more
    return message


def read_rest(socket: zmq.Socket[Any], message: Message, max_message_size: int,
              deadline: float) -> bool:
    """Read and drop the frames of ``message`` that :func:`receive` left unread, until its
    end (True: ``message.problem`` is its final refusal) or ``deadline`` (a
    ``time.perf_counter`` time; False: call again). ZeroMQ delivers a message's frames back
    to back, so nothing else can be read before its end."""
    recv = socket.recv
    clock = time.perf_counter
    size = message.size
    try:
        while clock() < deadline:
            for _ in range(_DISCARD_BETWEEN_CLOCKS):
                frame = recv(_NOBLOCK, copy=False)
                size += len(frame)
                if not frame.more:
                    message.rest_unread = False
                    if message.reply_prefix[-1] == b"":  # judged past the envelope: by size
                        message.problem = (_too_large(size, max_message_size)
                                           if size > max_message_size
                                           else protocol.MULTIPART_ERROR)
                    return True
        return False
    finally:
        message.size = size


def _too_large(size: int, max_message_size: int) -> bytes:
    return protocol.error(f"message of {size} bytes is larger than the limit of "
                          f"{max_message_size} (--max-message-size, every frame counted)", False)


def _classify(frames: list[zmq.Frame], count: int, size: int,
              max_message_size: int) -> Message:
    routing_id = frames[0].bytes
    delimiter = next((i for i in range(1, min(len(frames), MAX_ENVELOPE_FRAMES + 1))
                      if not len(frames[i])), None)
    if delimiter is None:
        if count <= MAX_ENVELOPE_FRAMES:
            problem = "no empty delimiter frame before the request: send [b\"\", request] " \
                      "(a REQ socket does this itself)"
        else:
            problem = f"no empty delimiter frame within the first {MAX_ENVELOPE_FRAMES} frames"
        return Message([routing_id], size, None, protocol.error(problem, False))
    if sum(len(f) for f in frames[:delimiter]) > MAX_ENVELOPE_BYTES:
        return Message([routing_id], size, None, protocol.error(
            f"envelope larger than {MAX_ENVELOPE_BYTES} bytes", False))
    prefix = [f.bytes for f in frames[:delimiter]]
    prefix.append(b"")
    if size > max_message_size:
        return Message(prefix, size, None, _too_large(size, max_message_size))
    requests = count - delimiter - 1
    if requests == 1:
        return Message(prefix, size, frames[delimiter + 1], None)
    if requests == 0:
        return Message(prefix, size, None, protocol.error("empty request", False))
    return Message(prefix, size, None, protocol.MULTIPART_ERROR)
