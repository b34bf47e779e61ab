"""ingestd answers every standard ZeroMQ request peer as a REP socket would.

Real peers in real processes: REQ sockets behind the stock ``zmq.proxy`` (two of them in a
row), a Lazy Pirate REQ with ``REQ_CORRELATE`` + ``REQ_RELAXED``, DEALERs that pipeline
with and without a tag frame of their own, and a Node.js client on npm's ``zeromq`` 6.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import zmq
from helpers import wait_for
from ingest.client import IngestClient
from ingest_support import (
    Helper,
    Ingestd,
    context,
    daemons,
    helpers,
    locked_database,
    sqlite_rows,
)

__all__ = ["context", "daemons", "helpers"]  # fixtures, used below

#: the stock ROUTER/DEALER proxy: prints its frontend endpoint, then forwards forever
PROXY = """
import sys, zmq
context = zmq.Context()
frontend = context.socket(zmq.ROUTER)
frontend.bind("tcp://127.0.0.1:0")
backend = context.socket(zmq.DEALER)
backend.connect(sys.argv[1])
print(frontend.getsockopt_string(zmq.LAST_ENDPOINT), flush=True)
zmq.proxy(frontend, backend)
"""


def reply_of(frames: list[bytes]) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(frames[-1])
    return document


def test_req_clients_behind_two_proxies_are_answered_and_stored_once(
        daemons: Callable[..., Ingestd], helpers: Callable[..., Helper],
        tmp_path: Path) -> None:
    """Each proxy hop adds a routing id to the envelope: [hop 1, hop 2, REQ, "", request]."""
    daemon = daemons()
    daemon.start()
    inner = helpers(PROXY, daemon.endpoint)
    outer = helpers(PROXY, inner.line())
    front = outer.line()
    clients = [IngestClient(front, timeout=5.0, retries=2) for _ in range(4)]
    try:
        for n, client in enumerate(clients):
            for batch in range(25):
                records = [{"id": f"proxied-{n}-{batch}-{i}"} for i in range(4)]
                assert client.send(records) == {"ok": True, "stored": 4, "duplicates": 0}
        # a resend through the proxies is recognised as such
        again = clients[0].send([{"id": "proxied-0-0-0"}])
        assert again == {"ok": True, "stored": 0, "duplicates": 1}
    finally:
        for client in clients:
            client.close()
    assert len(sqlite_rows(tmp_path / "ingest.db", "proxied-")) == 4 * 25 * 4
    assert daemon.status()["bad_requests"] == 0
    assert daemon.stop().returncode == 0


def test_lazy_pirate_req_with_correlate_and_relaxed_gets_the_reply_to_its_last_request(
        daemons: Callable[..., Ingestd], context: zmq.Context[Any], tmp_path: Path) -> None:
    """REQ_CORRELATE puts a request id before the delimiter; REQ_RELAXED lets the client
    resend on the same socket after a timeout. The reply to the stale request must be
    dropped by the client (so it must carry its request id) and the fresh one used."""
    daemon = daemons()
    daemon.start()
    sock = context.socket(zmq.REQ)
    sock.setsockopt(zmq.REQ_CORRELATE, 1)
    sock.setsockopt(zmq.REQ_RELAXED, 1)
    sock.linger = 0
    sock.connect(daemon.endpoint)
    first = json.dumps([{"id": "pirate-1"}, {"id": "pirate-2"}]).encode()
    with locked_database(tmp_path / "ingest.db"):
        sock.send(first)
        assert not sock.poll(300)  # no reply while the database is locked: "time out"
        wait_for(lambda: daemon.status()["inflight_requests"] == 1, 10,
                 message="the first request taken")
        sock.send(first)  # relaxed: resend at once, the same ids
        wait_for(lambda: daemon.status()["inflight_requests"] == 2, 10,
                 message="the resend taken")
    assert sock.poll(10000)
    # both were stored in one group; the client sees only the resend's reply
    assert json.loads(sock.recv()) == {"ok": True, "stored": 0, "duplicates": 2}
    assert not sock.poll(300), "the stale reply must not reach the client"
    sock.send(json.dumps({"id": "pirate-3"}).encode())  # the socket is in a clean state
    assert sock.poll(10000)
    assert json.loads(sock.recv()) == {"ok": True, "stored": 1, "duplicates": 0}
    assert set(sqlite_rows(tmp_path / "ingest.db", "pirate-")) == {
        "pirate-1", "pirate-2", "pirate-3"}
    assert daemon.stop().returncode == 0


def test_a_pipelining_dealer_gets_every_reply_once_in_order_with_its_tags(
        daemons: Callable[..., Ingestd], context: zmq.Context[Any], tmp_path: Path) -> None:
    """A DEALER sends 40 requests without waiting: good ones (held in flight by a locked
    database), bad ones (which need no database), a large one (parsed in the I/O thread's
    slow lane) and an envelope deeper than the limit. The replies come back in the order of
    the requests, each once, each with the tag frames it was sent with."""
    daemon = daemons()
    daemon.start()
    dealer = context.socket(zmq.DEALER)
    dealer.linger = 0
    dealer.connect(daemon.endpoint)
    expected: list[tuple[list[bytes], bool]] = []
    with locked_database(tmp_path / "ingest.db"):
        for n in range(40):
            tags = [f"tag-{n}".encode()] + ([b"second tag"] if n % 3 == 0 else [])
            if n % 4 == 1:
                body, good = b'{"id": ', False  # malformed: answerable at once
            elif n == 10:
                body, good = json.dumps({"id": "dealer-large", "pad": "x" * 100_000}).encode(), True
            else:
                body, good = json.dumps({"id": f"dealer-{n}"}).encode(), True
            dealer.send_multipart([*tags, b"", body])
            expected.append((tags, good))
        # nothing may overtake the first request, which waits for the database
        assert not dealer.poll(500)
    replies = []
    for _ in expected:
        assert dealer.poll(10000), f"only {len(replies)} replies"
        replies.append(dealer.recv_multipart())
    assert not dealer.poll(300)  # and no reply twice
    for (tags, good), frames in zip(expected, replies, strict=True):
        assert frames[:-2] == tags and frames[-2] == b"", frames
        assert reply_of(frames)["ok"] is good, (tags, frames)
    stored = sqlite_rows(tmp_path / "ingest.db", "dealer-")
    assert len(stored) == sum(1 for _tags, good in expected if good)
    dealer.close()
    assert daemon.stop().returncode == 0


def test_an_untagged_dealer_matches_replies_by_position(
        daemons: Callable[..., Ingestd], context: zmq.Context[Any], tmp_path: Path) -> None:
    """[b"", request] from a DEALER is a REQ envelope without the lock-step: request k
    carries k records, so reply k says stored k, and bad input sits where it was sent."""
    daemon = daemons()
    daemon.start()
    dealer = context.socket(zmq.DEALER)
    dealer.linger = 0
    dealer.connect(daemon.endpoint)
    plan = [1, 2, 0, 3, 4, 0, 0, 5, 6, 7]  # 0: a bad request
    with locked_database(tmp_path / "ingest.db"):
        for k, records in enumerate(plan):
            body = (json.dumps([{"id": f"pos-{k}-{i}"} for i in range(records)]) if records
                    else '[{"id": 5}]')
            dealer.send_multipart([b"", body.encode()])
        assert not dealer.poll(300)
    got = []
    for _ in plan:
        assert dealer.poll(10000)
        got.append(reply_of(dealer.recv_multipart()))
    assert [r.get("stored", 0) if r["ok"] else 0 for r in got] == plan
    assert [r["ok"] for r in got] == [records > 0 for records in plan]
    dealer.close()
    assert daemon.stop().returncode == 0


def test_envelope_limits_are_answered_as_errors(
        daemons: Callable[..., Ingestd], context: zmq.Context[Any], tmp_path: Path) -> None:
    daemon = daemons()
    daemon.start()
    dealer = context.socket(zmq.DEALER)
    dealer.linger = 0
    dealer.connect(daemon.endpoint)
    # 15 tags + the routing id: the deepest envelope answered the REP way
    deepest = [f"hop-{i}".encode() for i in range(15)]
    dealer.send_multipart([*deepest, b"", b'{"id": "deep-ok"}'])
    assert dealer.poll(10000)
    frames = dealer.recv_multipart()
    assert frames[:-2] == deepest and reply_of(frames)["ok"] is True
    # one more: no delimiter within the first 16 frames; answered without an envelope
    dealer.send_multipart([*deepest, b"one too many", b"", b'{"id": "deep-no"}'])
    assert dealer.poll(10000)
    frames = dealer.recv_multipart()
    assert len(frames) == 1 and "within the first 16 frames" in reply_of(frames)["error"]
    # a tag frame too big to repeat in every reply
    dealer.send_multipart([b"t" * 5000, b"", b'{"id": "deep-big-tag"}'])
    assert dealer.poll(10000)
    frames = dealer.recv_multipart()
    assert len(frames) == 1 and "envelope larger than 4096 bytes" in reply_of(frames)["error"]
    # a DEALER without the empty frame
    dealer.send(b'{"id": "no-delimiter"}')
    assert dealer.poll(10000)
    assert "no empty delimiter" in reply_of(dealer.recv_multipart())["error"]
    assert set(sqlite_rows(tmp_path / "ingest.db", "deep-")) == {"deep-ok"}
    dealer.close()
    assert daemon.stop().returncode == 0


# -- a client in another language: npm's zeromq 6 ------------------------------------------

NODE_CLIENT = r"""
const zmq = require("zeromq")
async function main() {
  const [endpoint, prefix] = process.argv.slice(2)
  const out = {version: zmq.version}
  const req = new zmq.Request({receiveTimeout: 10000})
  req.connect(endpoint)
  out.req = []
  for (let batch = 0; batch < 10; batch++) {
    const records = []
    for (let i = 0; i < 100; i++) records.push({id: `${prefix}-r${batch}-${i}`, n: i, s: "\u00e9"})
    await req.send(JSON.stringify(records))
    const [reply] = await req.receive()
    out.req.push(JSON.parse(reply.toString()))
  }
  const dealer = new zmq.Dealer({receiveTimeout: 10000})
  dealer.connect(endpoint)
  for (let i = 0; i < 20; i++) {
    const body = i % 5 === 4 ? "{bad" : JSON.stringify({id: `${prefix}-d${i}`})
    await dealer.send([`tag-${i}`, "", body])
  }
  out.dealer = []
  for (let i = 0; i < 20; i++) {
    const [tag, empty, body] = await dealer.receive()
    out.dealer.push([tag.toString(), empty.length, JSON.parse(body.toString()).ok])
  }
  req.close()
  dealer.close()
  console.log(JSON.stringify(out))
}
main().catch(error => { console.error(error); process.exit(1) })
"""


@pytest.fixture(scope="session")
def node_zeromq() -> Path:
    """npm's zeromq 6, installed once into a cache directory (by npm, from the registry)."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        message = "node and npm are needed (apt-get install nodejs npm)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    directory = cache / "daemonkit-tests" / "npm-zeromq6"
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / ".lock", "w") as lock:  # other suites may install at the same time
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (directory / "node_modules" / "zeromq" / "package.json").exists():
            subprocess.run([npm, "install", "--no-audit", "--no-fund", "--prefix",
                            str(directory), "zeromq@6"], check=True, capture_output=True,
                           timeout=300)
    return directory


def test_nodejs_zeromq6_request_and_dealer(daemons: Callable[..., Ingestd], node_zeromq: Path,
                                           tmp_path: Path) -> None:
    daemon = daemons()
    daemon.start()
    script = tmp_path / "client.js"
    script.write_text(NODE_CLIENT)
    result = subprocess.run(["node", str(script), daemon.endpoint, "node"], cwd=node_zeromq,
                            capture_output=True, text=True, timeout=60, check=False,
                            env={**os.environ, "NODE_PATH": str(node_zeromq / "node_modules")})
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["req"] == [{"ok": True, "stored": 100, "duplicates": 0}] * 10
    assert out["dealer"] == [[f"tag-{i}", 0, i % 5 != 4] for i in range(20)]
    stored = sqlite_rows(tmp_path / "ingest.db", "node-")
    assert len(stored) == 10 * 100 + 16
    body = stored["node-r0-1"][0]
    assert json.loads(body) == {"id": "node-r0-1", "n": 1, "s": "\u00e9"}
    assert body == '{"id":"node-r0-1","n":1,"s":"\u00e9"}'  # as Node's JSON.stringify wrote it
    assert daemon.stop().returncode == 0
