"""Scale-out across hosts: two ingestd on one PostgreSQL, over real network hops.

Four network namespaces stand for four hosts, linked by veth pairs (iproute2), each with
addresses of its own:

    clients 10.15.1.1 ── 10.15.1.2 ingestd A 10.15.3.1 ── 10.15.3.2 PostgreSQL
            10.15.2.1 ── 10.15.2.2 ingestd B 10.15.4.1 ── 10.15.4.2

Client processes in the clients' namespace send records through both ingestd (one REQ
socket connected to both endpoints, Lazy Pirate retries). Under load, ingestd A is killed
with SIGKILL: the clients fail over to B, throughput comes back, A is started again and
takes requests again; every acknowledged record is stored exactly once.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from dbservers import PG_BIN
from helpers import ROOT, pid_alive, wait_for
from ingest_support import Ingestd

IP = shutil.which("ip")
LINKS = [("cl", "10.15.1.1", "a", "10.15.1.2"), ("cl", "10.15.2.1", "b", "10.15.2.2"),
         ("a", "10.15.3.1", "pg", "10.15.3.2"), ("b", "10.15.4.1", "pg", "10.15.4.2")]

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or IP is None,
                                reason="network namespaces need root and iproute2 (ip)")


class Hosts:
    """The four namespaces, named after this test run so that parallel runs never meet."""

    def __init__(self) -> None:
        self.prefix = f"dk15-{os.getpid()}"
        self.created: list[str] = []

    def name(self, host: str) -> str:
        return f"{self.prefix}-{host}"

    def ip(self, *args: str) -> None:
        assert IP is not None
        subprocess.run([IP, *args], check=True, capture_output=True, timeout=30)

    def create(self) -> None:
        for host in ("cl", "a", "b", "pg"):
            self.ip("netns", "add", self.name(host))
            self.created.append(self.name(host))
            self.ip("-n", self.name(host), "link", "set", "lo", "up")
        for n, (left, left_addr, right, right_addr) in enumerate(LINKS):
            # both ends made inside the namespaces: no interface ever appears on the host
            self.ip("-n", self.name(left), "link", "add", f"v{n}{left}", "type", "veth",
                    "peer", "name", f"v{n}{right}", "netns", self.name(right))
            for host, addr in ((left, left_addr), (right, right_addr)):
                self.ip("-n", self.name(host), "addr", "add", f"{addr}/24", "dev", f"v{n}{host}")
                self.ip("-n", self.name(host), "link", "set", f"v{n}{host}", "up")

    def run_in(self, host: str, argv: list[str]) -> list[str]:
        assert IP is not None
        return [IP, "netns", "exec", self.name(host), *argv]

    def delete(self) -> None:
        for name in reversed(self.created):
            subprocess.run([IP or "ip", "netns", "del", name], capture_output=True, timeout=30,
                           check=False)


class NetnsIngestd(Ingestd):
    """ingestd on host ``host``: its CLI runs inside that namespace."""

    def __init__(self, hosts: Hosts, host: str, address: str, db: str, workdir: Path) -> None:
        super().__init__(workdir, name=f"ingestd-{host}", db=db)
        self.hosts, self.host = hosts, host
        self.endpoint = f"tcp://{address}:5555"
        self.extra[1] = self.endpoint

    def argv(self, action: str, *args: str, events: bool | None = None) -> list[str]:
        return self.hosts.run_in(self.host, super().argv(action, *args, events=events))


class Postgres:
    """A throwaway PostgreSQL 15 on host "pg", listening on that host's two addresses."""

    def __init__(self, hosts: Hosts) -> None:
        self.hosts = hosts
        self.directory = Path(tempfile.mkdtemp(prefix="ingest-netns-pg-"))
        shutil.chown(self.directory, "postgres", "postgres")
        self.data = self.directory / "data"

    def as_postgres(self, *argv: str) -> str:
        result = subprocess.run(self.hosts.run_in("pg", ["runuser", "-u", "postgres", "--",
                                                         *argv]),
                                check=True, capture_output=True, text=True, timeout=120,
                                cwd=self.directory)
        return result.stdout

    def start(self) -> None:
        self.as_postgres(str(PG_BIN / "initdb"), "-D", str(self.data), "-A", "trust", "-U",
                         "postgres", "--no-sync", "-E", "UTF8")
        with open(self.data / "pg_hba.conf", "a") as hba:
            hba.write("host all all 10.15.0.0/16 trust\n")
        self.as_postgres(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-l",
                         str(self.directory / "server.log"), "-w", "-t", "60", "-o",
                         f"-p 5432 -k {self.directory} -c listen_addresses=10.15.3.2,10.15.4.2"
                         " -c fsync=on -c synchronous_commit=on", "start")
        self.sql("postgres", "CREATE DATABASE ingest")

    def sql(self, database: str, statement: str) -> list[str]:
        out = self.as_postgres(str(PG_BIN / "psql"), "-h", str(self.directory), "-p", "5432",
                               "-d", database, "-At", "-c", statement)
        return out.splitlines()

    def stop(self) -> None:
        if (self.data / "postmaster.pid").exists():
            self.as_postgres(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", "immediate",
                             "-w", "stop")
        shutil.rmtree(self.directory, ignore_errors=True)


#: a client host's load: records in batches of 10 through both endpoints, until SIGTERM;
#: each acknowledged batch is written down (first record, time) as soon as it is acked
CLIENT = """
import signal, sys, time
from ingest.client import IngestClient
endpoints, prefix, log = sys.argv[1].split(","), sys.argv[2], open(sys.argv[3], "a", buffering=1)
halt = []
signal.signal(signal.SIGTERM, lambda *_: halt.append(1))
client = IngestClient(endpoints, timeout=1.0, retries=60, backoff=0.05)
start = 0
print("sending", flush=True)
while not halt:
    reply = client.send([{"id": f"{prefix}-{start + i}", "n": start + i} for i in range(10)])
    assert reply["ok"] and reply["stored"] + reply["duplicates"] == 10, reply
    log.write(f"{start} {time.monotonic()}\\n")
    start += 10
print("done", flush=True)
"""


def acked(log: Path) -> list[tuple[int, float]]:
    lines = log.read_text().splitlines() if log.exists() else []
    return [(int(first), float(at)) for first, at in (line.split() for line in lines)]


def rate(logs: list[Path], since: float, until: float) -> float:
    return sum(1 for log in logs for _, at in acked(log) if since <= at < until) * 10 / (
        until - since)


@contextlib.contextmanager
def processes() -> Iterator[list[subprocess.Popen[Any]]]:
    started: list[subprocess.Popen[Any]] = []
    try:
        yield started
    finally:
        for proc in started:
            if proc.poll() is None:
                proc.kill()
            proc.wait(10)


def test_two_ingestd_hosts_fail_over_under_load_and_store_every_ack_once(
        tmp_path: Path) -> None:
    if not (PG_BIN / "initdb").exists():
        pytest.skip("PostgreSQL 15 server binaries missing (apt-get install postgresql-15)")
    hosts = Hosts()
    postgres = Postgres(hosts)
    daemons: list[NetnsIngestd] = []
    try:
        hosts.create()
        postgres.start()
        db_a = "postgresql://postgres@10.15.3.2:5432/ingest"
        db_b = "postgresql://postgres@10.15.4.2:5432/ingest"
        (tmp_path / "a").mkdir()
        (tmp_path / "b").mkdir()
        a = NetnsIngestd(hosts, "a", "10.15.1.2", db_a, tmp_path / "a")
        b = NetnsIngestd(hosts, "b", "10.15.2.2", db_b, tmp_path / "b")
        daemons += [a, b]
        a.start()
        b.start()
        logs = [tmp_path / f"client{n}.log" for n in range(4)]
        env = {**os.environ, "PYTHONPATH": str(ROOT / "examples" / "ingest")}
        with processes() as clients:
            for n, log in enumerate(logs):
                clients.append(subprocess.Popen(
                    hosts.run_in("cl", [sys.executable, "-c", CLIENT,
                                        f"{a.endpoint},{b.endpoint}", f"net{n}", str(log)]),
                    env=env, stdout=subprocess.PIPE, text=True))
            wait_for(lambda: all(len(acked(log)) > 20 for log in logs), 30,
                     message="every client acked through the network")
            assert a.status()["requests_total"] > 0 and b.status()["requests_total"] > 0
            time.sleep(2)  # the span measured before the kill
            killed_at = time.monotonic()
            before = rate(logs, killed_at - 2, killed_at)
            pid_a = a.pid()
            assert pid_a is not None
            os.kill(pid_a, signal.SIGKILL)
            wait_for(lambda: not pid_alive(pid_a), 10, message="ingestd A gone")
            # the requests A had taken time out (1 s) and go to B; then B carries the load
            wait_for(lambda: time.monotonic() > killed_at + 5, 10, interval=0.1,
                     message="failover window")
            after = rate(logs, killed_at + 3, killed_at + 5)
            print(f"records/s before the kill {before:.0f}, after {after:.0f}")
            assert after > 0.5 * before, f"{after:.0f} records/s after, {before:.0f} before"
            served_by_b = b.status()["requests_total"]
            a.start()  # A comes back; the clients' sockets reconnect to it by themselves
            wait_for(lambda: a.status()["requests_total"] > 10, 30,
                     message="A takes requests again")
            assert b.status()["requests_total"] > served_by_b
            for proc in clients:
                proc.send_signal(signal.SIGTERM)
            for proc in clients:
                assert proc.stdout is not None
                out, _ = proc.communicate(timeout=60)
                assert proc.returncode == 0 and "done" in out, out
        expected = {f"net{n}-{first + i}" for n, log in enumerate(logs)
                    for first, _at in acked(log) for i in range(10)}
        total, distinct = map(int, postgres.sql(
            "ingest", "SELECT count(*) || ' ' || count(DISTINCT id) FROM records")[0].split())
        stored = set(postgres.sql("ingest", "SELECT id FROM records"))
        assert expected <= stored, f"acked but not stored: {sorted(expected - stored)[:5]}"
        assert total == distinct == len(stored)  # the primary key: no record twice
        # nothing stored that no client sent (the ids past the last ack are resends in flight)
        assert all(record_id.startswith("net") for record_id in stored)
        for daemon in daemons:
            assert daemon.stop().returncode == 0
    finally:
        for daemon in daemons:
            daemon.cleanup()
        postgres.stop()
        hosts.delete()
