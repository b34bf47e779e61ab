"""What the ingestd tests share: the daemon driven through its CLI, raw clients, load.

Fixtures (``daemons``, ``context``) are imported by the test modules that use them.
"""

from __future__ import annotations

import contextlib
import json
import select
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq
from dbservers import PostgresServer
from helpers import ROOT, Service, free_port
from ingest.client import IngestClient

INGESTD = ROOT / "examples" / "ingest" / "ingestd.py"
CLIENT = ROOT / "examples" / "ingest" / "client.py"


class Ingestd(Service):
    def __init__(self, workdir: Path, name: str = "ingestd", db: str | None = None,
                 extra: tuple[str, ...] = ()) -> None:
        super().__init__(INGESTD, workdir, name, events_option=False)
        self.port = free_port()
        self.endpoint = f"tcp://127.0.0.1:{self.port}"
        self.extra = ["--bind", self.endpoint, *(["--db", db] if db else []), *extra]

    def start(self) -> None:
        result = self.cli("start")
        assert result.returncode == 0, f"{result.stdout}{result.stderr}{self.log_text()}"

    def stop(self) -> subprocess.CompletedProcess[str]:
        return self.cli("stop")

    def status(self) -> dict[str, Any]:
        result = self.cli("status", "--json")
        assert result.returncode == 0, result.stderr
        report: dict[str, Any] = json.loads(result.stdout)
        return report


@pytest.fixture
def daemons(tmp_path: Path) -> Iterator[Callable[..., Ingestd]]:
    started: list[Ingestd] = []

    def make(**kwargs: Any) -> Ingestd:
        daemon = Ingestd(tmp_path, name=f"ingestd{len(started)}", **kwargs)
        started.append(daemon)
        return daemon

    yield make
    for daemon in started:
        daemon.cleanup()


@pytest.fixture
def context() -> Iterator[zmq.Context[Any]]:
    ctx: zmq.Context[Any] = zmq.Context()
    yield ctx
    ctx.destroy(linger=0)


def request(ctx: zmq.Context[Any], endpoint: str, frames: list[bytes],
            timeout_s: float = 5.0) -> dict[str, Any] | None:
    """One raw REQ exchange, as a 5-line third-party client would do it."""
    sock = ctx.socket(zmq.REQ)
    sock.linger = 0
    sock.connect(endpoint)
    try:
        sock.send_multipart(frames)
        if not sock.poll(int(timeout_s * 1000)):
            return None
        reply: dict[str, Any] = json.loads(sock.recv())
        return reply
    finally:
        sock.close()


def oversized_is_disconnected(ctx: zmq.Context[Any], endpoint: str, payload: bytes) -> bool:
    """Send ``payload``; True when the server drops the connection without replying."""
    from zmq.utils.monitor import recv_monitor_message

    sock = ctx.socket(zmq.REQ)
    sock.linger = 0
    monitor = sock.get_monitor_socket(zmq.EVENT_CONNECTED | zmq.EVENT_DISCONNECTED)
    try:
        sock.connect(endpoint)
        sock.send(payload)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if sock.poll(0):
                return False  # a reply came: not a disconnect
            if monitor.poll(100) and (
                    recv_monitor_message(monitor)["event"] == zmq.EVENT_DISCONNECTED):
                return not sock.poll(0)
        return False
    finally:
        sock.disable_monitor()
        monitor.close(linger=0)
        sock.close()


def sqlite_rows(path: Path, prefix: str = "") -> dict[str, tuple[str, str]]:
    with sqlite3.connect(path) as db:
        rows = db.execute("SELECT id, body, received_at FROM records WHERE id LIKE ?",
                          (prefix + "%",)).fetchall()
    return {row[0]: (row[1], row[2]) for row in rows}


class LoadClient(threading.Thread):
    """Sends numbered records in batches until told to stop; remembers every acked id."""

    def __init__(self, endpoints: list[str], prefix: str, *, batch: int = 5,
                 timeout: float = 1.0, retries: int = 0, total: int | None = None) -> None:
        super().__init__(daemon=True)
        self.client = IngestClient(endpoints, timeout=timeout, retries=retries, backoff=0.05)
        self.prefix, self.batch, self.total = prefix, batch, total
        self.acked: list[str] = []
        self.duplicates = 0
        self.failure: BaseException | None = None
        self.halt = threading.Event()

    def run(self) -> None:
        sequence = 0
        try:
            while not self.halt.is_set() and (self.total is None or sequence < self.total):
                ids = [f"{self.prefix}-{sequence + i}" for i in range(self.batch)]
                reply = self.client.send([{"id": i, "n": sequence} for i in ids])
                assert reply["stored"] + reply["duplicates"] == len(ids), reply
                self.duplicates += reply["duplicates"]
                self.acked += ids
                sequence += self.batch
        except BaseException as exc:  # noqa: BLE001 - inspected by the test
            self.failure = exc
        finally:
            self.client.close()


def started_with_settings(daemons: Callable[..., Ingestd], tmp_path: Path,
                          settings: dict[str, Any]) -> Ingestd:
    config = tmp_path / "ingestd.json"
    config.write_text(json.dumps(settings))
    daemon = daemons(extra=("--config", str(config)))
    daemon.start()
    return daemon


@contextlib.contextmanager
def clients_behind_a_locked_database(db_path: Path, clients: list[LoadClient]) -> Iterator[None]:
    """Another process holds SQLite's write lock while the clients start: the writer waits
    in its busy handler and requests pile up. Released on leaving; then every client ends."""
    blocker = sqlite3.connect(db_path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    try:
        for client in clients:
            client.start()
        yield
    finally:
        blocker.rollback()
        blocker.close()
        for client in clients:
            client.join(30)


def pg_ids(server: PostgresServer, prefix: str) -> list[str]:
    rows = server.sql("ingest", f"SELECT id FROM records WHERE id LIKE '{prefix}%' ORDER BY id")
    return [str(row[0]) for row in rows]




@contextlib.contextmanager
def locked_database(db_path: Path) -> Iterator[None]:
    """Another connection holds SQLite's write lock: the writer waits in its busy handler,
    and requests taken meanwhile stay in flight until the lock goes."""
    blocker = sqlite3.connect(db_path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    try:
        yield
    finally:
        blocker.rollback()
        blocker.close()


def rss_bytes(pid: int, field: str = "VmRSS") -> int:
    """Resident memory of ``pid`` (``VmHWM``: its peak) from /proc/PID/status."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise AssertionError(f"no {field} for pid {pid}")


class Helper:
    """A small Python program of the test's own, run as a process of its own (a proxy, a
    hostile peer) and killed by pid when the test ends."""

    def __init__(self, source: str, *args: str) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", source, *args], text=True,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def line(self, timeout: float = 10.0) -> str:
        """The next line the program prints (it says when it is ready, and where)."""
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        assert ready, f"helper printed nothing in {timeout}s"
        return self.proc.stdout.readline().strip()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()


@pytest.fixture
def helpers() -> Iterator[Callable[..., Helper]]:
    started: list[Helper] = []

    def run(source: str, *args: str) -> Helper:
        helper = Helper(source, *args)
        started.append(helper)
        return helper

    yield run
    for helper in started:
        helper.kill()
