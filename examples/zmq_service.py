#!/usr/bin/env python3
"""A ZeroMQ service on daemonkit in one page: copy it to start your own.

It answers every request with the request in upper case, as a REP socket would, so any
REQ or DEALER peer can use it (also behind zmq.proxy):

    python examples/zmq_service.py --bind tcp://127.0.0.1:5556 --pidfile /tmp/zs.pid start
    python -c 'import zmq; s = zmq.Context().socket(zmq.REQ)
    s.connect("tcp://127.0.0.1:5556"); s.send(b"hi"); print(s.recv())'   # b'HI'
    python examples/zmq_service.py --pidfile /tmp/zs.pid status
    python examples/zmq_service.py --pidfile /tmp/zs.pid stop

examples/ingest/ is the same shape grown up: threads, a database, flow control.
"""

from __future__ import annotations

import argparse
from typing import Any

import zmq

from daemonkit import Daemon


class ZmqService(Daemon):
    name = "zmq_service"

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--bind", default="tcp://127.0.0.1:5556", metavar="ENDPOINT")

    def setup(self) -> None:
        # In the daemon, after the fork: a context made before it would not work here. A
        # busy port raises, and `start` prints the error and exits 1.
        self.context: zmq.Context[Any] = zmq.Context()
        self.router = self.context.socket(zmq.ROUTER)
        self.router.linger = 1000  # replies still queued get a second to leave at stop
        self.router.bind(self.options.bind)
        self.answered = self.dropped = 0

    def run(self) -> None:
        poller = zmq.Poller()
        poller.register(self.router, zmq.POLLIN)
        while not self.stopping.is_set():
            if not poller.poll(100):  # wake up every 100 ms to look at self.stopping
                continue
            frames = self.router.recv_multipart()
            with self.critical():  # SIGTERM waits until this request is answered
                self.answer(frames)

    def answer(self, frames: list[bytes]) -> None:
        # [routing id, *envelope, b"", request]: the reply repeats everything up to the
        # empty delimiter (proxies and DEALERs put their own frames there), as REP does
        try:
            delimiter = frames.index(b"", 1)
        except ValueError:
            self.dropped += 1  # not a request: REP drops it too
            return
        request = b"".join(frames[delimiter + 1:])
        self.router.send_multipart([*frames[:delimiter + 1], request.upper()])
        self.answered += 1

    def status_info(self) -> dict[str, Any]:
        # called from daemonkit's control thread: read counters, never touch the socket
        return {"endpoint": self.options.bind, "answered": self.answered,
                "dropped": self.dropped}

    def shutdown(self) -> None:
        self.router.close()  # the socket in the thread that used it, then the context
        self.context.term()


if __name__ == "__main__":
    ZmqService.main()
