"""examples/zmq_service.py, the one-page ZeroMQ service, run for real through its CLI."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq
from helpers import ROOT, Service, free_port, pid_alive

SCRIPT = ROOT / "examples" / "zmq_service.py"


class ZmqService(Service):
    def __init__(self, workdir: Path) -> None:
        super().__init__(SCRIPT, workdir, "zmq_service", events_option=False)
        self.endpoint = f"tcp://127.0.0.1:{free_port()}"
        self.extra = ["--bind", self.endpoint]


@pytest.fixture
def service(tmp_path: Path) -> Iterator[ZmqService]:
    svc = ZmqService(tmp_path)
    yield svc
    svc.cleanup()


def test_answers_req_and_dealer_peers_counts_and_stops(service: ZmqService) -> None:
    result = service.cli("start")
    assert result.returncode == 0, result.stderr
    endpoint = service.endpoint
    context: zmq.Context[Any] = zmq.Context()
    try:
        req = context.socket(zmq.REQ)
        req.connect(endpoint)
        req.send(b"hello")
        assert req.poll(10000) and req.recv() == b"HELLO"
        dealer = context.socket(zmq.DEALER)
        dealer.connect(endpoint)
        dealer.send(b"no delimiter: dropped")
        dealer.send_multipart([b"tag-1", b"", b"one"])
        dealer.send_multipart([b"tag-2", b"", b"two"])
        replies = []
        for _ in range(2):
            assert dealer.poll(10000)
            replies.append(dealer.recv_multipart())
        assert replies == [[b"tag-1", b"", b"ONE"], [b"tag-2", b"", b"TWO"]]
    finally:
        context.destroy(linger=0)
    report = json.loads(service.cli("status", "--json").stdout)
    assert (report["answered"], report["dropped"], report["endpoint"]) == (3, 1, endpoint)
    assert "  answered: 3" in service.cli("status").stdout
    pid = service.pid()
    stopped = service.cli("stop")
    assert stopped.returncode == 0, stopped.stderr
    assert pid is not None and not pid_alive(pid)
    assert "exiting with status 0" in service.log_text()


def test_a_busy_port_fails_start_with_the_reason(service: ZmqService) -> None:
    context: zmq.Context[Any] = zmq.Context()
    squatter = context.socket(zmq.ROUTER)
    squatter.bind(service.endpoint)
    try:
        result = service.cli("start")
        assert result.returncode == 1
        assert "Address already in use" in result.stderr
        assert service.pid() is None
    finally:
        context.destroy(linger=0)
