"""ingestd end to end: real daemons, real ZeroMQ sockets, real SQLite/PostgreSQL/MariaDB.

The guarantees under test: a record is acknowledged only once it is committed; a resent id
is never stored twice; bad input is answered (or, when oversized, cut off) without hurting
other clients; SIGTERM drains and exits 0; SIGKILL loses nothing acknowledged.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import zmq
from dbservers import MariadbServer, PostgresServer, mariadb, postgres
from helpers import free_port, pid_alive, wait_for
from ingest.client import IngestClient, ServerUnavailable
from ingest_support import (
    CLIENT,
    Ingestd,
    LoadClient,
    clients_behind_a_locked_database,
    context,
    daemons,
    oversized_is_disconnected,
    pg_ids,
    request,
    sqlite_rows,
    started_with_settings,
)

__all__ = ["context", "daemons", "mariadb", "postgres"]  # fixtures, used below


# -- the protocol parser alone ----------------------------------------------------------------

def test_parser_raises_only_bad_request_on_random_input() -> None:
    """Whatever arrives, the I/O thread sees either rows or BadRequest, never a crash."""
    import random

    from ingest.protocol import BadRequest, parse_request

    atoms = [b"{", b"}", b"[", b"]", b'"id"', b":", b",", b'"x"', b"1e999", b"-0", b"null",
             b"true", b'"\\ud800"', b'"\\u0000"', b" ", b"NaN", b"1", b"\xff", b'{"id":"k"}']
    chooser = random.Random(4)
    accepted = 0
    for _ in range(20000):
        payload = b"".join(chooser.choice(atoms) for _ in range(chooser.randint(0, 10)))
        try:
            rows = parse_request(payload)
        except BadRequest:
            continue
        accepted += 1
        for record_id, body in rows:
            assert json.loads(body)["id"] == record_id
            assert body in payload.decode()  # the record's own text, as sent
    assert accepted > 0


# -- SQLite ----------------------------------------------------------------------------------

def sqlite_store(tmp_path: Path, store_class: Any = None) -> Any:
    """A connected SqliteStore (or subclass) on tmp_path/ingest.db, schema in place."""
    from ingest.dburl import parse
    from ingest.stores import SqliteStore

    store = (store_class or SqliteStore)(parse(f"sqlite:///{tmp_path / 'ingest.db'}"))
    store.connect()
    store.ensure_schema()
    return store


def test_sqlite_store_counts_duplicates_per_request(tmp_path: Path) -> None:
    """The group commit tells each request how many of its rows were new, in batch order.

    Covers both shapes of the SQLite write: one autocommit statement (up to 5000 rows) and an
    explicit transaction over several statements (more), each with ids already stored, ids
    repeated within the group and new ids.
    """
    store = sqlite_store(tmp_path)

    def rows(*ids: str) -> list[tuple[str, str]]:
        return [(i, json.dumps({"id": i})) for i in ids]

    assert store.store([rows("a", "b")]) == [2]
    assert store.store([rows("a", "c"), rows("c", "d"), rows("b"), rows("e", "e")]) == [
        1, 1, 0, 1]
    big = [rows(*(f"big-{n}-{k}" for k in range(1000))) for n in range(6)]
    big[2] = rows(*(f"big-1-{k}" for k in range(500)), *(f"big-2-{k}" for k in range(500)))
    big.append(rows("a", "f"))
    assert store.store(big) == [1000, 1000, 500, 1000, 1000, 1000, 1]
    assert store.count() == 5 + 5500 + 1
    store.close()
    with sqlite3.connect(tmp_path / "ingest.db") as db:
        assert db.execute("SELECT count(*), count(DISTINCT id) FROM records").fetchone() == (
            5506, 5506)


def test_sqlite_store_counts_duplicates_with_a_trigger_on_records(tmp_path: Path) -> None:
    """Rows a user's audit trigger writes are not taken for rows of the group."""
    store = sqlite_store(tmp_path)
    with sqlite3.connect(tmp_path / "ingest.db") as db:
        db.execute("CREATE TABLE audit (id TEXT)")
        db.execute("CREATE TRIGGER audit_insert AFTER INSERT ON records"
                   " BEGIN INSERT INTO audit VALUES (new.id); END")
    row = [("a", '{"id":"a"}')]
    assert store.store([row]) == [1]
    assert store.store([row, [("c", '{"id":"c"}')]]) == [0, 1]
    big = [[(f"big-{n}-{k}", "{}") for k in range(1000)] for n in range(6)]
    assert store.store([row, *big]) == [0] + [1000] * 6
    store.close()


def test_sqlite_store_refuses_a_table_without_rowid(tmp_path: Path) -> None:
    from ingest.dburl import parse
    from ingest.stores import PermanentError, SqliteStore

    with sqlite3.connect(tmp_path / "ingest.db") as db:
        db.execute("CREATE TABLE records (id TEXT PRIMARY KEY, body TEXT, received_at TEXT)"
                   " WITHOUT ROWID")
    store = SqliteStore(parse(f"sqlite:///{tmp_path / 'ingest.db'}"))
    with pytest.raises(PermanentError, match="WITHOUT ROWID"):
        store.ensure_schema()
    store.close()


def test_writer_answers_retry_on_an_unclassified_error_and_carries_on(tmp_path: Path) -> None:
    """A store error that is neither transient nor permanent (a driver surprise, a bug) must
    not kill the writer and leave its group unanswered: every request is told to retry."""
    import logging
    import queue

    from ingest.acks import AckChannel
    from ingest.settings import Settings, SettingsRef
    from ingest.stores import SqliteStore
    from ingest.writer import STOP, Writer

    class FailsOnce(SqliteStore):
        failed = False

        def store(self, requests: Any) -> list[int]:
            if not FailsOnce.failed:
                FailsOnce.failed = True
                raise RuntimeError("surprise")
            return super().store(requests)

    requests: Any = queue.SimpleQueue()
    acks: Any = AckChannel()
    writer = Writer(0, requests, acks, make_store=lambda: sqlite_store(tmp_path, FailsOnce),
                    settings=SettingsRef(Settings()), log=logging.getLogger("test-writer"))
    writer.start()
    taken: list[Any] = []
    try:
        row = [("w-1", '{"id":"w-1"}')]
        requests.put(([("client-a", row), ("client-b", row)], 2))
        wait_for(lambda: taken.extend(acks.take_all()) or taken, 10, message="first acks")
        first = taken.pop()
        assert [token for token, _reply in first] == ["client-a", "client-b"]
        assert all(json.loads(reply)["retryable"] is True for _token, reply in first)
        assert writer.is_alive()
        # a client resends, as told, once the writer's reconnect backoff is over: stored
        wait_for(lambda: time.monotonic() >= writer._next_connect_at, 10,
                 message="reconnect backoff over")
        requests.put(([("client-c", row)], 1))
        wait_for(lambda: taken.extend(acks.take_all()) or taken, 10, message="second acks")
        [(token, reply)] = taken.pop()
        assert token == "client-c"
        assert json.loads(reply) == {"ok": True, "stored": 1, "duplicates": 0}
    finally:
        requests.put(STOP)
        writer.join(10)
        acks.close()
    assert not writer.is_alive()
    assert writer.stats.transient_failures == 2 and writer.stats.records_stored == 1


def test_sqlite_default_db_round_trip_and_status(daemons: Callable[..., Ingestd],
                                                 context: zmq.Context[Any],
                                                 tmp_path: Path) -> None:
    daemon = daemons()
    daemon.start()
    one = request(context, daemon.endpoint, [b'{"id": "rt-1", "v": [1, 2.5, "x\\u00e9"]}'])
    assert one == {"ok": True, "stored": 1, "duplicates": 0}
    batch = [{"id": f"rt-{i}", "i": i} for i in range(1, 6)]
    assert request(context, daemon.endpoint, [json.dumps(batch).encode()]) == {
        "ok": True, "stored": 4, "duplicates": 1}
    # the default database is ingest.db in the directory `start` was run from
    rows = sqlite_rows(tmp_path / "ingest.db", "rt-")
    assert sorted(rows) == [f"rt-{i}" for i in range(1, 6)]
    assert rows["rt-1"][0] == '{"id": "rt-1", "v": [1, 2.5, "x\\u00e9"]}'  # as sent
    assert json.loads(rows["rt-3"][0]) == {"id": "rt-3", "i": 3}
    assert rows["rt-1"][1].endswith("Z")
    with sqlite3.connect(tmp_path / "ingest.db") as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    status = daemon.status()
    assert status["records_stored"] == 5
    assert status["duplicates"] == 1
    assert status["requests_per_s_1m"] > 0
    assert status["queue_depth"] == 0
    assert status["db_reachable"] is True
    assert status["undeliverable_replies"] == 0
    text = daemon.cli("status")
    assert "records_stored: 5" in text.stdout and "db_reachable: true" in text.stdout
    assert "db_last_error: null" in text.stdout  # JSON's spelling, not Python's None
    pid = daemon.pid()
    assert daemon.stop().returncode == 0
    assert pid is not None and not pid_alive(pid)
    assert "exiting with status 0" in daemon.log_text()



def test_threads_carry_their_names_in_the_os(daemons: Callable[..., Ingestd]) -> None:
    """`top -H`, `ps -L` and bench/ingest_bench.py --threads tell the busy threads apart."""
    daemon = daemons()
    daemon.start()
    pid = daemon.pid()
    assert pid is not None

    def names() -> set[str]:
        seen = set()
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/comm", encoding="utf-8") as comm:
                seen.add(comm.read().strip())
        return seen

    # a thread names itself when it runs, which may be just after start returned
    wait_for(lambda: {"ingestd-io", "ingestd-w0"} <= names(), 5,
             message="threads named ingestd-io and ingestd-w0")
    assert daemon.stop().returncode == 0


def test_start_on_a_running_daemon_says_when_its_options_would_not_start_it(
        daemons: Callable[..., Ingestd]) -> None:
    """LSB: start on a running service exits 0; options configure() refuses used to be
    dropped without a word, where options that merely differ get a note."""
    daemon = daemons()
    daemon.start()
    again = daemon.cli("start", "--writers", "3")
    assert again.returncode == 0 and "already running" in again.stdout
    assert again.stderr.strip() == (
        "ingestd: note: these options would not start it (SQLite allows one writer at a "
        "time: use --writers 1): a restart with them would fail")
    assert daemon.stop().returncode == 0

BAD_INPUTS: list[tuple[str, list[bytes], str]] = [
    ("malformed JSON", [b'{"id": "x",'], "not valid JSON"),
    ("binary garbage", [bytes(range(256)) * 4], "not UTF-8"),
    ("missing id", [b'{"value": 1}'], 'record 0: missing "id"'),
    ("empty id", [b'{"id": ""}'], 'record 0: "id" is empty'),
    ("overlong id", [json.dumps({"id": "x" * 129}).encode()], "129 characters"),
    ("numeric id", [b'{"id": 17}'], '"id" must be a string'),
    ("top-level string", [b'"hello"'], "must be a JSON object or array"),
    ("empty array", [b"[]"], "empty array"),
    ("record not an object", [b'[{"id": "bad-ok-0"}, 5]'], "record 1: must be a JSON object"),
    ("bad record in a batch", [json.dumps(
        [{"id": f"bad-batch-{i}"} for i in range(5)] + [{"id": None}]).encode()],
     "record 5"),
    ("1001 records", [json.dumps([{"id": f"bad-many-{i}"} for i in range(1001)]).encode()],
     "more than 1000 records"),
    ("two frames", [b'{"id": "bad-frames"}', b'{"id": "bad-frames-2"}'], "exactly one frame"),
    ("lone surrogate id", [b'{"id": "\\ud800"}'], "lone surrogate"),
    ("NaN", [b'{"id": "bad-nan", "v": NaN}'], "NaN is not JSON"),
    ("huge integer", [b'{"id": "bad-int", "v": ' + b"9" * 5000 + b"}"], "cannot be read"),
    ("deep nesting", [b'{"id": "bad-deep", "v": ' + b"[" * 100000 + b"]" * 100000 + b"}"],
     "nested too deeply"),
    ("id with NUL", [b'{"id": "bad\\u0000nul"}'], "NUL"),
]


def test_bad_input_is_answered_while_a_good_client_keeps_getting_acks(
        daemons: Callable[..., Ingestd], context: zmq.Context[Any], tmp_path: Path) -> None:
    daemon = daemons()
    daemon.start()
    good = LoadClient([daemon.endpoint], "good", batch=1, timeout=5.0)
    good.start()
    try:
        wait_for(lambda: len(good.acked) > 10, 10, message="first acks of the good client")
        for label, frames, expected in BAD_INPUTS:
            before = len(good.acked)
            reply = request(context, daemon.endpoint, frames)
            assert reply is not None, label
            assert reply["ok"] is False and reply["retryable"] is False, (label, reply)
            assert expected in reply["error"], (label, reply)
            wait_for(lambda before=before: len(good.acked) > before + 2, 10,
                     message=f"good client acked after {label}")
        # oversized: the sender is disconnected and gets nothing; the good client goes on
        before = len(good.acked)
        big = json.dumps({"id": "bad-big", "pad": "x" * (1024 * 1024)}).encode()
        assert oversized_is_disconnected(context, daemon.endpoint, big)
        wait_for(lambda: len(good.acked) > before + 10, 10, message="acks after oversized")
        assert request(context, daemon.endpoint, [b'{"id": "after-big"}'])["ok"] is True
    finally:
        good.halt.set()
        good.join(10)
    assert good.failure is None
    assert sqlite_rows(tmp_path / "ingest.db", "bad-") == {}  # nothing of a bad request
    assert daemon.status()["bad_requests"] == len(BAD_INPUTS)
    assert daemon.stop().returncode == 0


def test_sigterm_during_load_exits_0_and_keeps_every_ack(daemons: Callable[..., Ingestd],
                                                         tmp_path: Path) -> None:
    daemon = daemons()
    daemon.start()
    clients = [LoadClient([daemon.endpoint], f"term{i}", batch=3, timeout=2.0)
               for i in range(8)]
    for client in clients:
        client.start()
    wait_for(lambda: sum(len(c.acked) for c in clients) > 300, 20, message="load running")
    pid = daemon.pid()
    stop = daemon.stop()
    assert stop.returncode == 0, stop.stderr
    for client in clients:
        client.halt.set()
        client.join(10)
    assert pid is not None and not pid_alive(pid)
    log = daemon.log_text()
    assert "exiting with status 0" in log and "drained in" in log
    acked = {record_id for client in clients for record_id in client.acked}
    stored = sqlite_rows(tmp_path / "ingest.db", "term")
    assert acked <= set(stored), f"acked but missing: {sorted(acked - set(stored))[:5]}"
    # clients stopped on a timeout or a closed server, not on an error reply
    assert all(c.failure is None or isinstance(c.failure, ServerUnavailable) for c in clients)


def test_sigkill_during_load_then_restart_stores_every_id_exactly_once(
        daemons: Callable[..., Ingestd], tmp_path: Path) -> None:
    daemon = daemons()
    daemon.start()
    per_client = 600
    clients = [LoadClient([daemon.endpoint], f"kill{i}", batch=4, timeout=0.5, retries=60,
                          total=per_client) for i in range(6)]
    for client in clients:
        client.start()
    wait_for(lambda: sum(len(c.acked) for c in clients) > 400, 20, message="load running")
    pid = daemon.pid()
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    acked_before_kill = {i for c in clients for i in list(c.acked)}
    wait_for(lambda: not pid_alive(pid), 10, message="killed daemon gone")
    daemon.start()  # the pidfile lock died with the process: start works at once
    for client in clients:
        client.join(60)
    assert all(c.failure is None for c in clients), [c.failure for c in clients]
    stored = sqlite_rows(tmp_path / "ingest.db", "kill")
    expected = {f"kill{i}-{n}" for i in range(6) for n in range(per_client)}
    assert set(stored) == expected  # every record once: the id is the primary key
    assert acked_before_kill <= set(stored)
    # the retries after the kill resent records that were stored but not acknowledged,
    # or never arrived; at least one request had to be resent
    assert sum(c.client.attempts for c in clients) > sum(per_client // 4 for _ in clients)
    assert daemon.stop().returncode == 0


def test_reload_applies_valid_config_and_keeps_old_on_invalid(
        daemons: Callable[..., Ingestd], context: zmq.Context[Any], tmp_path: Path) -> None:
    config = tmp_path / "ingestd.json"
    config.write_text(json.dumps({"log_level": "INFO", "max_batch_records": 5000}))
    daemon = daemons(extra=("--config", str(config)))
    daemon.start()
    assert daemon.status()["max_batch_records"] == 5000
    config.write_text('{"max_batch_records": 0}')
    bad = daemon.cli("reload")
    assert bad.returncode != 0
    assert "max_batch_records must be an integer" in bad.stdout + bad.stderr
    config.write_text('{"log_level": "LOUD"}')
    assert daemon.cli("reload").returncode != 0
    pid = daemon.pid()
    refused = daemon.cli("restart")  # checked before the stop: the daemon stays up
    assert refused.returncode == 6 and "log_level" in refused.stderr, refused.stderr
    assert daemon.pid() == pid and pid is not None and pid_alive(pid)
    status = daemon.status()
    assert status["max_batch_records"] == 5000 and status["log_level"] == "INFO"
    config.write_text(json.dumps({"log_level": "DEBUG", "max_batch_records": 2,
                                  "max_inflight_requests": 100}))
    good = daemon.cli("reload")
    assert good.returncode == 0, good.stderr
    status = daemon.status()
    assert (status["max_batch_records"], status["log_level"]) == (2, "DEBUG")
    assert request(context, daemon.endpoint, [b'{"id": "reloaded"}'])["ok"] is True
    assert daemon.stop().returncode == 0


def test_restart_from_another_directory_names_the_other_database(
        daemons: Callable[..., Ingestd], tmp_path: Path) -> None:
    """The default --db is ingest.db in the caller's directory: the same command line run
    elsewhere means another database, and restart says so before it stops anything."""
    daemon = daemons()
    daemon.start()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    daemon.workdir = elsewhere
    restarted = daemon.cli("restart")
    assert restarted.returncode == 0, restarted.stderr
    assert restarted.stderr.strip() == (
        "ingestd: note: restarting with other options than the running daemon's: "
        f"--db sqlite:///{tmp_path}/ingest.db -> sqlite:///{elsewhere}/ingest.db")
    assert daemon.status()["db"] == f"sqlite:///{elsewhere}/ingest.db"
    assert daemon.stop().returncode == 0


def test_backpressure_bounds_requests_in_flight(daemons: Callable[..., Ingestd],
                                                tmp_path: Path) -> None:
    daemon = started_with_settings(daemons, tmp_path, {"max_inflight_requests": 8})
    db_path = tmp_path / "ingest.db"
    clients = [LoadClient([daemon.endpoint], f"bp{i}", batch=1, timeout=30.0, total=4)
               for i in range(16)]
    with clients_behind_a_locked_database(db_path, clients):
        status = wait_for(lambda: (s := daemon.status())["intake_paused"] and s, 10,
                          message="intake paused")
        assert status["inflight_requests"] <= 8
        assert not any(c.acked for c in clients)
    assert all(c.failure is None for c in clients)
    assert len(sqlite_rows(db_path, "bp")) == 16 * 4
    assert daemon.status()["intake_paused"] is False
    assert daemon.stop().returncode == 0


def test_a_group_commit_never_carries_more_than_max_batch_records(
        daemons: Callable[..., Ingestd], tmp_path: Path) -> None:
    """Requests pile up behind a locked database, then go in groups of at most the limit.

    Each group's rows share one received_at (taken once per COMMIT), so the table shows the
    groups. 100-record requests under a limit of 250: groups of two requests, never three.
    """
    daemon = started_with_settings(daemons, tmp_path, {"max_batch_records": 250})
    db_path = tmp_path / "ingest.db"
    clients = [LoadClient([daemon.endpoint], f"gr{i}", batch=100, timeout=30.0, total=200)
               for i in range(16)]
    with clients_behind_a_locked_database(db_path, clients):
        wait_for(lambda: daemon.status()["inflight_requests"] == 16, 10,
                 message="every client's first request taken")
    assert all(c.failure is None for c in clients)
    with sqlite3.connect(db_path) as db:
        groups = [n for (n,) in db.execute(
            "SELECT count(*) FROM records GROUP BY received_at")]
    assert sum(groups) == 16 * 200
    assert max(groups) == 200, groups  # grouped, and never past the limit
    assert daemon.stop().returncode == 0


def test_start_reports_config_errors_busy_ports_and_dead_databases(
        daemons: Callable[..., Ingestd], tmp_path: Path) -> None:
    bad_url = daemons(db="oracle://x/y")
    result = bad_url.cli("start")
    assert result.returncode == 6 and "unsupported database scheme" in result.stderr
    bad_config = tmp_path / "bad.json"
    bad_config.write_text("{not json")
    result = daemons(extra=("--config", str(bad_config))).cli("start")
    assert result.returncode == 6 and "not valid JSON" in result.stderr
    first = daemons()
    first.start()
    second = daemons()
    second.extra[1:2] = [f"tcp://127.0.0.1:{free_port()}", "--bind", first.endpoint]
    result = second.cli("start")  # the endpoint taken is named, not every one given
    assert result.returncode == 1, result.stderr
    assert result.stderr.startswith(f"ingestd: RuntimeError: cannot bind {first.endpoint}: "
                                    "[Errno 98] Address already in use"), result.stderr
    result = daemons(db=f"sqlite:///{tmp_path}/x.db?synchronous=bogus").cli("start")
    assert result.returncode == 6 and "--db: synchronous='BOGUS'" in result.stderr
    # reload with a --config that does not check out: the daemon keeps its own, and says so
    result = first.cli("reload", "--config", str(tmp_path / "missing.json"))
    assert result.returncode == 0 and "note: reload keeps the running daemon's options; " \
        "this command's are refused:" in result.stderr, result.stderr
    dead_db = daemons(db=f"postgresql://nobody@127.0.0.1:{free_port()}/none")
    result = dead_db.cli("start")
    assert result.returncode == 1 and "unreachable" in result.stderr
    for db, why in ((f"sqlite:///{tmp_path}/no-such-dir/x.db",
                     f"directory {tmp_path}/no-such-dir does not exist"),
                    (f"sqlite:///{tmp_path}", "is a directory, not a database file")):
        result = daemons(db=db).cli("start")
        assert result.returncode == 1 and why in result.stderr, result.stderr
    wrapped = daemons()
    wrapped.extra[1] = "tcp://127.0.0.1:99999"  # libzmq would listen on 34463
    result = wrapped.cli("start")
    assert result.returncode == 6 and "the port must be 0-65535" in result.stderr
    result = daemons(extra=("--writers", "0")).cli("start")
    assert result.returncode == 6 and "--writers must be between 1 and 64" in result.stderr
    assert first.stop().returncode == 0


def test_curve_only_authorized_clients_store(daemons: Callable[..., Ingestd],
                                             context: zmq.Context[Any],
                                             tmp_path: Path) -> None:
    import zmq.auth

    keys = tmp_path / "keys"
    subprocess.run([sys.executable, str(CLIENT), "keygen", str(keys)], check=True,
                   capture_output=True)
    for secret in ("server.key_secret", "client.key_secret"):
        assert (keys / secret).stat().st_mode & 0o077 == 0, f"{secret} readable by others"
    intruder_dir = tmp_path / "intruder"
    intruder_dir.mkdir()
    intruder_public_file, intruder_secret_file = zmq.auth.create_certificates(intruder_dir,
                                                                              "intruder")
    daemon = daemons(extra=("--curve-keys", str(keys)))
    daemon.start()
    server_public, _ = zmq.auth.load_certificate(keys / "server.key")
    client_keys = zmq.auth.load_certificate(keys / "client.key_secret")
    intruder_keys = zmq.auth.load_certificate(intruder_secret_file)

    def curve_client(keypair: tuple[bytes, bytes | None]) -> IngestClient:
        public, secret = keypair
        assert secret is not None
        return IngestClient(daemon.endpoint, timeout=1.0, retries=0, context=context,
                            curve_server_key=server_public, curve_keypair=(public, secret))

    authorized = curve_client(client_keys)
    assert authorized.send({"id": "curve-ok"})["stored"] == 1
    intruder = curve_client(intruder_keys)
    with pytest.raises(ServerUnavailable):
        intruder.send({"id": "curve-intruder"})
    assert request(context, daemon.endpoint, [b'{"id": "curve-plain"}'], 1.0) is None
    assert set(sqlite_rows(tmp_path / "ingest.db", "curve")) == {"curve-ok"}
    # the allowed keys are re-read on reload
    os.replace(intruder_public_file, keys / "authorized" / "intruder.key")
    assert daemon.cli("reload").returncode == 0
    admitted = curve_client(intruder_keys)
    assert admitted.send({"id": "curve-admitted"})["stored"] == 1
    for client in (authorized, intruder, admitted):
        client.close()
    assert daemon.stop().returncode == 0


def test_client_cli_gen_and_send(daemons: Callable[..., Ingestd], tmp_path: Path) -> None:
    daemon = daemons(extra=("--log-level", "WARNING"))
    daemon.start()
    assert daemon.status()["log_level"] == "WARNING"  # no config file: --log-level rules
    records = subprocess.run([sys.executable, str(CLIENT), "gen", "250", "--prefix", "cli"],
                             check=True, capture_output=True, text=True).stdout
    for expected in ("stored 250, duplicates 0", "stored 0, duplicates 250"):
        sent = subprocess.run([sys.executable, str(CLIENT), "--endpoint", daemon.endpoint,
                               "send", "-", "--batch", "100"], input=records,
                              capture_output=True, text=True, timeout=30, check=False)
        assert sent.returncode == 0, sent.stderr
        assert expected in sent.stdout
    assert len(sqlite_rows(tmp_path / "ingest.db", "cli-")) == 250
    rejected = subprocess.run([sys.executable, str(CLIENT), "--endpoint", daemon.endpoint,
                               "send", "-"], input='{"id": 5}\n', capture_output=True,
                              text=True, timeout=30, check=False)
    assert rejected.returncode == 1 and "must be a string" in rejected.stderr

    def send_file(text: str) -> subprocess.CompletedProcess[str]:
        path = tmp_path / "records.jsonl"
        path.write_text(text)
        return subprocess.run([sys.executable, str(CLIENT), "--endpoint", daemon.endpoint,
                               "send", str(path), "--batch", "2"], capture_output=True,
                              text=True, timeout=30, check=False)

    # the line at fault, by its number in the file, and how far the input got; no traceback
    good = "".join(json.dumps({"id": f"line-{n}"}) + "\n" for n in range(1, 4))
    refused = send_file(good + '{"id": ""}\n' + '{"id": "line-5"}\n')
    assert refused.returncode == 1
    assert refused.stderr.strip() == (
        f"{tmp_path / 'records.jsonl'}:4: refused by the server: record 1: \"id\" is empty; "
        "nothing of lines 3-4 was stored; lines up to 2 acknowledged (stored 2, duplicates 0)")
    broken = send_file(good + "{not json\n")
    assert broken.returncode == 1 and "Traceback" not in broken.stderr
    assert broken.stderr.startswith(f"{tmp_path / 'records.jsonl'}:4: not valid JSON (")
    assert broken.stderr.rstrip().endswith("lines up to 2 acknowledged (stored 0, duplicates 2)")
    missing = subprocess.run([sys.executable, str(CLIENT), "send", str(tmp_path / "nope")],
                             capture_output=True, text=True, timeout=30, check=False)
    assert (missing.returncode, missing.stderr.strip()) == (
        1, f"cannot read {tmp_path / 'nope'}: No such file or directory")
    assert set(sqlite_rows(tmp_path / "ingest.db", "line-")) == {"line-1", "line-2"}
    assert daemon.stop().returncode == 0


def test_client_cli_sends_each_line_as_written(daemons: Callable[..., Ingestd],
                                               context: zmq.Context[Any],
                                               tmp_path: Path) -> None:
    daemon = daemons()
    daemon.start()
    path = tmp_path / "records.jsonl"

    def send_file(text: str, *options: str) -> subprocess.CompletedProcess[str]:
        path.write_text(text, encoding="utf-8")
        return subprocess.run([sys.executable, str(CLIENT), "--endpoint", daemon.endpoint,
                               "--timeout", "1", "--retries", "1", "send", str(path),
                               *options], capture_output=True, text=True, timeout=60,
                              check=False)

    # spellings json.loads + json.dumps would change, stored byte for byte as in the file
    lines = ['{"id":"raw-1", "v": 1.50, "name": "café", "big": 12345678901234567890.0}',
             '{"id":"raw-2","tiny":1e-400,"neg":-0}',
             '{"id":"raw-3","huge":1e400}',
             '{ "v" : [1, 2] }',
             '{}']
    sent = send_file("\n".join(lines) + "\n")
    assert sent.returncode == 0, sent.stderr
    assert "stored 5, duplicates 0" in sent.stdout
    with sqlite3.connect(tmp_path / "ingest.db") as db:
        bodies = dict(db.execute("SELECT id, body FROM records").fetchall())
    assert [bodies.pop(f"raw-{n}") for n in (1, 2, 3)] == lines[:3]
    # a record without an id gets one as its first key; the rest of its text as written
    added = sorted(bodies.values(), key=len)
    assert added[0].startswith('{"id":"') and added[0].endswith('"}') and len(bodies) == 2
    assert added[1].startswith('{"id":"') and added[1].endswith('", "v" : [1, 2] }')
    # what the server refuses is named by its line, not the first line of the request
    refused = send_file('{"id":"dup-1"}\n{"id":"dup-2","id":"dup-3"}\n')
    assert refused.returncode == 1
    assert refused.stderr.startswith(f'{path}:2: refused by the server: record 1: "id" '
                                     "appears twice; nothing of lines 1-2 was stored")
    not_json = send_file('{"id":"nan-1"}\n{"id":"nan-2","v":NaN}\n')
    assert not_json.returncode == 1
    assert not_json.stderr.startswith(f"{path}:2: not valid JSON (NaN is not JSON)")
    # requests are cut to the server's message size: 120 records of 20 kB in several requests
    big = "".join(json.dumps({"id": f"big-{n}", "pad": "x" * 20_000}) + "\n"
                  for n in range(120))
    split = send_file(big)
    assert split.returncode == 0, split.stderr
    assert "stored 120, duplicates 0" in split.stdout
    assert len(sqlite_rows(tmp_path / "ingest.db", "big-")) == 120
    too_big = send_file('{"id":"ok-1"}\n' + json.dumps({"id": "huge", "pad": "x" * 2_000_000}))
    assert too_big.returncode == 1
    assert too_big.stderr.startswith(f"{path}:2: record of 2000025 bytes does not fit in a "
                                     "request of at most 1047552 bytes (--max-message-size)")
    # a bad line stops the input before the request it would have been part of is sent
    assert too_big.stderr.rstrip().endswith("nothing acknowledged (stored 0, duplicates 0)")
    assert daemon.stop().returncode == 0
    # another service on the endpoint: said so in one line, no traceback
    router = context.socket(zmq.ROUTER)
    router.linger = 0
    port = router.bind_to_random_port("tcp://127.0.0.1")
    answered: list[bool] = []

    def answer_with_a_list() -> None:
        if router.poll(30_000):
            *envelope, _request = router.recv_multipart()
            router.send_multipart([*envelope, b"[1]"])
            answered.append(True)

    answering = threading.Thread(target=answer_with_a_list)
    answering.start()
    other = subprocess.run([sys.executable, str(CLIENT), "--endpoint",
                            f"tcp://127.0.0.1:{port}", "send", "-"], input='{"id":"x"}\n',
                           capture_output=True, text=True, timeout=60, check=False)
    answering.join(timeout=30)
    router.close()
    assert answered == [True]
    assert other.returncode == 1 and "Traceback" not in other.stderr
    assert other.stderr.startswith("failed: unexpected reply b'[1]': is this an ingestd "
                                   "endpoint?")


# -- PostgreSQL and MariaDB ------------------------------------------------------------------

def test_postgres_round_trip_outage_and_recovery(daemons: Callable[..., Ingestd],
                                                 context: zmq.Context[Any],
                                                 postgres: PostgresServer) -> None:
    daemon = daemons(db=postgres.url())
    daemon.start()
    assert daemon.status()["db_reachable"] is True
    batch = [{"id": f"pg-{i}", "i": i} for i in range(50)] + [{"id": "pg-0"}]
    assert request(context, daemon.endpoint, [json.dumps(batch).encode()]) == {
        "ok": True, "stored": 50, "duplicates": 1}
    assert request(context, daemon.endpoint, [b'{"id": "pg-7"}'])["duplicates"] == 1
    assert len(pg_ids(postgres, "pg-")) == 50
    body, received_at = postgres.sql(
        "ingest", "SELECT body, received_at FROM records WHERE id = 'pg-3'")[0]
    assert body == '{"id": "pg-3", "i": 3}' and received_at is not None
    postgres.stop("fast")
    try:
        reply = request(context, daemon.endpoint, [b'{"id": "pg-outage"}'], 15.0)
        assert reply is not None and reply["ok"] is False and reply["retryable"] is True
        assert wait_for(lambda: daemon.status()["db_reachable"] is False, 15,
                        message="db_reachable false")
    finally:
        postgres.restart()
    client = IngestClient(daemon.endpoint, timeout=5.0, retries=20, context=context,
                          backoff=0.2)
    assert client.send({"id": "pg-outage"})["stored"] == 1
    client.close()
    assert wait_for(lambda: daemon.status()["db_reachable"] is True, 15,
                    message="db_reachable true again")
    assert daemon.stop().returncode == 0


def test_two_instances_into_one_postgres_store_everything_once(
        daemons: Callable[..., Ingestd], postgres: PostgresServer) -> None:
    first = daemons(db=postgres.url())
    second = daemons(db=postgres.url())
    first.start()
    second.start()
    clients = [LoadClient([first.endpoint, second.endpoint], f"two{i}", batch=10, timeout=5.0,
                          retries=3, total=300) for i in range(4)]
    for client in clients:
        client.start()
    for client in clients:
        client.join(60)
    assert all(c.failure is None for c in clients), [c.failure for c in clients]
    # the same records again, through both servers: all duplicates
    again = LoadClient([second.endpoint, first.endpoint], "two0", batch=10, total=300)
    again.run()
    assert again.failure is None and again.duplicates == 300
    assert len(pg_ids(postgres, "two")) == 4 * 300
    served = [first.status()["requests_total"], second.status()["requests_total"]]
    assert all(count > 0 for count in served), served
    assert first.stop().returncode == 0 and second.stop().returncode == 0


def test_sigkill_with_postgres_then_restart_loses_no_ack(daemons: Callable[..., Ingestd],
                                                         postgres: PostgresServer) -> None:
    daemon = daemons(db=postgres.url())
    daemon.start()
    clients = [LoadClient([daemon.endpoint], f"pgkill{i}", batch=5, timeout=0.5, retries=60,
                          total=300) for i in range(4)]
    for client in clients:
        client.start()
    wait_for(lambda: sum(len(c.acked) for c in clients) > 200, 20, message="load running")
    pid = daemon.pid()
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not pid_alive(pid), 10, message="killed daemon gone")
    daemon.start()
    for client in clients:
        client.join(60)
    assert all(c.failure is None for c in clients), [c.failure for c in clients]
    assert len(pg_ids(postgres, "pgkill")) == 4 * 300
    assert daemon.stop().returncode == 0


def test_mariadb_round_trip_with_exact_ids(daemons: Callable[..., Ingestd],
                                           context: zmq.Context[Any],
                                           mariadb: MariadbServer) -> None:
    daemon = daemons(db=mariadb.url())
    daemon.start()
    # ids differing only in case or trailing space are different records
    batch = [{"id": "my-A"}, {"id": "my-a"}, {"id": "my-a "}, {"id": "my-\u00e9"},
             {"id": "my-A"}]
    assert request(context, daemon.endpoint, [json.dumps(batch).encode()]) == {
        "ok": True, "stored": 4, "duplicates": 1}
    clients = [LoadClient([daemon.endpoint], f"myload{i}", batch=10, timeout=5.0,
                          retries=3, total=200) for i in range(4)]
    for client in clients:
        client.start()
    for client in clients:
        client.join(60)
    assert all(c.failure is None for c in clients), [c.failure for c in clients]
    rows = mariadb.sql("SELECT id FROM records WHERE id LIKE 'my%'", "ingest")
    ids = sorted(bytes(row[0]).decode() for row in rows)  # type: ignore[arg-type]
    assert [i for i in ids if not i.startswith("myload")] == sorted(
        ["my-A", "my-a", "my-a ", "my-\u00e9"])
    assert len(ids) == 4 + 4 * 200
    body = mariadb.sql("SELECT body FROM records WHERE id = 'my-A'", "ingest")[0][0]
    assert body == '{"id": "my-A"}'
    assert daemon.status()["db_reachable"] is True
    assert daemon.stop().returncode == 0
