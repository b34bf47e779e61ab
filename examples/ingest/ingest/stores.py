"""One database connection per writer thread, and the one transaction shape ingestd needs.

:meth:`Store.store` takes the rows of several requests (one group commit), inserts them with
"ignore the ones already there", COMMITs, and returns how many rows of each request were new.
It raises :class:`TransientError` when retrying later may work (the server is down, the
connection broke, a deadlock) and :class:`PermanentError` when this data can never be stored.
A store object belongs to one thread (the sqlite3 module enforces that; the other drivers just
are not safe to share mid-transaction).

No connection pool library: each writer thread *is* the pool slot and holds its connection
for its lifetime, reconnecting after failures.
"""

from __future__ import annotations

import functools
import os
import pwd
import sqlite3
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, Protocol

from .dburl import DatabaseURL
from .protocol import Row

CONNECT_TIMEOUT_S = 5


class TransientError(Exception):
    """The batch was not stored (or its fate is unknown); the client should retry."""


class PermanentError(Exception):
    """The database rejects this data; retrying the same request cannot help."""


class Store(Protocol):
    url: DatabaseURL

    def connect(self) -> None: ...
    def close(self) -> None: ...
    def ensure_schema(self) -> None: ...
    def store(self, requests: Sequence[Sequence[Row]]) -> list[int]: ...
    def ping(self) -> None: ...
    def count(self) -> int: ...


def open_store(url: DatabaseURL) -> Store:
    if url.kind == "sqlite":
        return SqliteStore(url)
    if url.kind == "postgresql":
        return PostgresStore(url)
    return MysqlStore(url)


def claim_first(requests: Sequence[Sequence[Row]], inserted: set[str]) -> list[int]:
    """Per-request counts of new rows, given the set of ids one statement inserted.

    The first request (in batch order) that carries an inserted id is the one that stored it;
    later copies of the same id in the batch are duplicates, as they would be one by one.
    """
    counts = []
    for rows in requests:
        stored = 0
        for record_id, _body in rows:
            if record_id in inserted:
                inserted.discard(record_id)
                stored += 1
        counts.append(stored)
    return counts


# -- SQLite ----------------------------------------------------------------------------------

_SQLITE_SYNC = {"FULL", "NORMAL", "EXTRA", "OFF"}
#: 3 parameters per row, under SQLite's default limit of 32766 parameters per statement
_SQLITE_ROWS_PER_STATEMENT = 5000


@functools.lru_cache(maxsize=256)
def _sqlite_multi_insert(rows: int) -> str:
    return ("INSERT INTO records (id, body, received_at) VALUES "
            + ",".join(["(?,?,?)"] * rows) + " ON CONFLICT DO NOTHING")


class SqliteStore:
    """WAL + synchronous=FULL: an acknowledged record survives a power cut, not just a crash.

    One writer only (WAL allows one writer at a time); ``BEGIN IMMEDIATE`` takes the write
    lock up front, so a transaction never fails half-way on SQLITE_BUSY.
    """

    def __init__(self, url: DatabaseURL) -> None:
        self.url = url
        sync = url.params.get("synchronous", "FULL").upper()
        if sync not in _SQLITE_SYNC:
            raise ValueError(f"synchronous={sync!r}: expected one of {sorted(_SQLITE_SYNC)}")
        self.synchronous = sync
        self.conn: sqlite3.Connection | None = None

    def connect(self) -> None:
        try:
            conn = sqlite3.connect(self.url.path, isolation_level=None, timeout=10.0,
                                   cached_statements=256)
            conn.execute("PRAGMA journal_mode=WAL").fetchall()
            conn.execute(f"PRAGMA synchronous={self.synchronous}")
        except sqlite3.Error as exc:
            why = _why_unopenable(self.url.path) if "unable to open" in str(exc) else None
            raise TransientError(f"sqlite {self.url.path}: {why or exc}") from exc
        self.conn = conn

    def close(self) -> None:
        if self.conn is not None:
            conn, self.conn = self.conn, None
            try:
                conn.close()
            except sqlite3.Error:
                pass

    def ensure_schema(self) -> None:
        conn = self._conn()
        conn.execute("CREATE TABLE IF NOT EXISTS records ("
                     " id TEXT PRIMARY KEY NOT NULL,"
                     " body TEXT NOT NULL,"
                     " received_at TEXT NOT NULL)")
        try:
            conn.execute("SELECT rowid FROM records LIMIT 0").fetchall()
        except sqlite3.OperationalError:
            raise PermanentError("sqlite: table records was created WITHOUT ROWID; ingestd "
                                 "tells duplicates apart by rowid") from None

    def store(self, requests: Sequence[Sequence[Row]]) -> list[int]:
        conn = self._conn()
        try:
            try:
                return self._insert_all(conn, requests)
            except BaseException:
                if conn.in_transaction:
                    conn.rollback()
                raise
        except (sqlite3.OperationalError, sqlite3.InterfaceError) as exc:
            # disk full, I/O error, locked by someone else: may pass
            raise TransientError(f"sqlite: {exc}") from exc
        except sqlite3.Error as exc:
            raise PermanentError(f"sqlite: {exc}") from exc

    def _insert_all(self, conn: sqlite3.Connection,
                    requests: Sequence[Sequence[Row]]) -> list[int]:
        """Every row of the group in one multi-row INSERT that is its own transaction.

        Autocommit, not BEGIN ... COMMIT: SQLite commits (and, with synchronous=FULL, fsyncs
        the WAL) before the one ``sqlite3_step`` returns, so the writer drops and retakes the
        GIL once per group instead of three times, and the I/O thread is not kept waiting for
        it after each (writer CPU per request -1.5 us under the bench load). Like
        ``BEGIN IMMEDIATE``, a write statement that finds the database locked waits in the
        busy handler before it has read anything, so it cannot fail half-way on a stale
        snapshot. A group too big for one statement takes an explicit transaction.

        Which request stored which row is only needed when some rows were already there (a
        client retry, rare): the rows one writer inserts while holding the write lock get
        consecutive rowids ending at ``lastrowid``, so the inserted ids are read back by rowid.
        Counted with each statement's ``rowcount`` (``sqlite3_changes``), which leaves out rows
        that triggers on ``records`` write elsewhere, where ``total_changes`` would count them
        and stretch the range back over older rows. ``INSERT ... RETURNING id`` would name the
        rows exactly, but fetching them steps the statement once per row and drops the GIL each
        time: 3x the COMMIT's wall time with a busy I/O thread (microbenchmark, 21 rows).
        The read-back runs after the COMMIT: another connection that deletes rows from
        ``records`` in that instant can make a stored record be reported as a duplicate; it
        never makes a record be reported stored that is not.
        """
        now = _utc_text()
        params: list[str] = []
        total = 0
        for rows in requests:
            for record_id, body in rows:
                params += (record_id, body, now)
            total += len(rows)
        several_statements = total > _SQLITE_ROWS_PER_STATEMENT
        if several_statements:
            conn.execute("BEGIN IMMEDIATE")
        inserted, last_rowid = 0, None
        for start in range(0, total, _SQLITE_ROWS_PER_STATEMENT):
            count = min(_SQLITE_ROWS_PER_STATEMENT, total - start)
            chunk = params[start * 3:(start + count) * 3] if several_statements else params
            cursor = conn.execute(_sqlite_multi_insert(count), chunk)
            inserted += cursor.rowcount
            last_rowid = cursor.lastrowid
        if several_statements:
            conn.execute("COMMIT")
        if inserted == total:
            return [len(rows) for rows in requests]
        new_ids: set[str] = set()
        if inserted and last_rowid is not None:
            cursor = conn.execute("SELECT id FROM records WHERE rowid > ? AND rowid <= ?",
                                  (last_rowid - inserted, last_rowid))
            new_ids = {row[0] for row in cursor}
        return claim_first(requests, new_ids)

    def ping(self) -> None:
        try:
            self._conn().execute("SELECT 1").fetchall()
        except sqlite3.Error as exc:
            raise TransientError(f"sqlite: {exc}") from exc

    def count(self) -> int:
        row = self._conn().execute("SELECT count(*) FROM records").fetchone()
        return int(row[0])

    def _conn(self) -> sqlite3.Connection:
        if self.conn is None:
            self.connect()
        assert self.conn is not None
        return self.conn


# -- PostgreSQL ------------------------------------------------------------------------------

_PG_INSERT = (
    "INSERT INTO records (id, body, received_at)"
    " SELECT i, b, %s FROM unnest(%s::text[], %s::text[]) AS t(i, b) ORDER BY i"
    " ON CONFLICT (id) DO NOTHING RETURNING id"
)


class PostgresStore:
    """One INSERT for the whole group, ids sorted so that concurrent writers (in this or in
    another ingestd) take row locks in the same order and cannot deadlock each other."""

    def __init__(self, url: DatabaseURL) -> None:
        import psycopg

        self.url = url
        self.psycopg = psycopg
        self.conn: Any = None

    def connect(self) -> None:
        psycopg = self.psycopg
        kwargs: dict[str, Any] = {"connect_timeout": CONNECT_TIMEOUT_S, "autocommit": False,
                                  "application_name": "ingestd"}
        for key, value in (("host", self.url.host), ("port", self.url.port),
                           ("user", self.url.user), ("password", self.url.password),
                           ("dbname", self.url.database)):
            if value is not None:
                kwargs[key] = value
        kwargs.update(self.url.params)
        try:
            self.conn = psycopg.connect(**kwargs)
        except psycopg.Error as exc:
            raise TransientError(f"postgresql: {_first_line(exc)}") from exc

    def close(self) -> None:
        if self.conn is not None:
            conn, self.conn = self.conn, None
            try:
                conn.close()
            except self.psycopg.Error:
                pass

    def ensure_schema(self) -> None:
        psycopg = self.psycopg
        for attempt in range(3):
            conn = self._conn()
            try:
                with conn.transaction():
                    conn.execute("CREATE TABLE IF NOT EXISTS records ("
                                 " id text PRIMARY KEY,"
                                 " body text NOT NULL,"
                                 " received_at timestamptz NOT NULL DEFAULT now())")
                return
            except psycopg.errors.UniqueViolation:
                # two ingestd creating the table at the same moment: the other one won
                if attempt == 2:
                    raise
            except psycopg.OperationalError as exc:
                self.close()
                raise TransientError(f"postgresql: {_first_line(exc)}") from exc

    def store(self, requests: Sequence[Sequence[Row]]) -> list[int]:
        psycopg = self.psycopg
        ids = [row[0] for rows in requests for row in rows]
        bodies = [row[1] for rows in requests for row in rows]
        for attempt in range(3):
            conn = self._conn()
            try:
                with conn.cursor() as cursor:
                    cursor.execute(_PG_INSERT, (datetime.now(UTC), ids, bodies))
                    inserted = {row[0] for row in cursor.fetchall()}
                conn.commit()
                return claim_first(requests, inserted)
            except (psycopg.errors.DeadlockDetected, psycopg.errors.SerializationFailure):
                self._rollback()
                if attempt == 2:
                    raise TransientError("postgresql: deadlock, retried 3 times") from None
                time.sleep(0.01 * (attempt + 1))
            except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
                # includes a connection lost during COMMIT: the outcome is unknown, so no ack
                self.close()
                raise TransientError(f"postgresql: {_first_line(exc)}") from exc
            except psycopg.Error as exc:
                self._rollback()
                raise PermanentError(f"postgresql: {_first_line(exc)}") from exc
        raise AssertionError("unreachable")

    def ping(self) -> None:
        try:
            conn = self._conn()
            conn.execute("SELECT 1").fetchall()
            conn.rollback()
        except self.psycopg.Error as exc:
            self.close()
            raise TransientError(f"postgresql: {_first_line(exc)}") from exc

    def count(self) -> int:
        conn = self._conn()
        row = conn.execute("SELECT count(*) FROM records").fetchone()
        conn.rollback()
        return int(row[0])

    def _rollback(self) -> None:
        try:
            self.conn.rollback()
        except self.psycopg.Error:
            self.close()

    def _conn(self) -> Any:
        if self.conn is None or self.conn.closed:
            self.connect()
        return self.conn


# -- MySQL / MariaDB -------------------------------------------------------------------------

_MYSQL_TRANSIENT_CODES = {1205, 1213}  # lock wait timeout, deadlock


class MysqlStore:
    """INSERT IGNORE per request inside one transaction; the affected-row count per statement
    says how many were new. ``id`` is VARBINARY so that ids compare byte for byte (the default
    collations would make "A" and "a ", say, the same key)."""

    def __init__(self, url: DatabaseURL) -> None:
        import pymysql

        self.url = url
        self.pymysql = pymysql
        self.conn: Any = None

    def connect(self) -> None:
        pymysql = self.pymysql
        params = dict(self.url.params)
        kwargs: dict[str, Any] = {
            "host": self.url.host or "localhost", "port": self.url.port or 3306,
            "user": self.url.user, "password": self.url.password or "",
            "database": self.url.database, "charset": "utf8mb4", "autocommit": False,
            "connect_timeout": CONNECT_TIMEOUT_S,
        }
        if "unix_socket" in params:
            kwargs["unix_socket"] = params.pop("unix_socket")
        kwargs.update(params)
        try:
            self.conn = pymysql.connect(**kwargs)
        except pymysql.MySQLError as exc:
            raise TransientError(f"mysql: {exc}") from exc

    def close(self) -> None:
        if self.conn is not None:
            conn, self.conn = self.conn, None
            try:
                conn.close()
            except Exception as exc:  # noqa: BLE001 - closing a broken connection may fail
                del exc

    def ensure_schema(self) -> None:
        try:
            with self._conn().cursor() as cursor:
                cursor.execute("CREATE TABLE IF NOT EXISTS records ("
                               " id VARBINARY(512) NOT NULL PRIMARY KEY,"
                               " body LONGTEXT NOT NULL,"
                               " received_at DATETIME(6) NOT NULL"
                               ") ENGINE=InnoDB DEFAULT CHARSET=utf8mb4")
            self.conn.commit()
        except self.pymysql.MySQLError as exc:
            self.close()
            raise TransientError(f"mysql: {exc}") from exc

    def store(self, requests: Sequence[Sequence[Row]]) -> list[int]:
        pymysql = self.pymysql
        now = datetime.now(UTC).replace(tzinfo=None)
        for attempt in range(3):
            conn = self._conn()
            counts = []
            try:
                with conn.cursor() as cursor:
                    for rows in requests:
                        ordered = sorted(rows)
                        values = ",".join(["(%s,%s,%s)"] * len(ordered))
                        flat: list[Any] = []
                        for record_id, body in ordered:
                            flat += (record_id.encode(), body, now)
                        counts.append(cursor.execute(
                            f"INSERT IGNORE INTO records (id, body, received_at) VALUES {values}",
                            flat))
                conn.commit()
                return counts
            except pymysql.err.OperationalError as exc:
                if exc.args and exc.args[0] in _MYSQL_TRANSIENT_CODES and attempt < 2:
                    self._rollback()
                    time.sleep(0.01 * (attempt + 1))
                    continue
                self.close()
                raise TransientError(f"mysql: {exc}") from exc
            except pymysql.err.InterfaceError as exc:
                self.close()
                raise TransientError(f"mysql: {exc}") from exc
            except pymysql.MySQLError as exc:
                self._rollback()
                raise PermanentError(f"mysql: {exc}") from exc
        raise AssertionError("unreachable")

    def ping(self) -> None:
        try:
            self._conn().ping(reconnect=False)
        except self.pymysql.MySQLError as exc:
            self.close()
            raise TransientError(f"mysql: {exc}") from exc

    def count(self) -> int:
        with self._conn().cursor() as cursor:
            cursor.execute("SELECT count(*) FROM records")
            row = cursor.fetchone()
        self.conn.rollback()
        return int(row[0])

    def _rollback(self) -> None:
        try:
            self.conn.rollback()
        except self.pymysql.MySQLError:
            self.close()

    def _conn(self) -> Any:
        if self.conn is None:
            self.connect()
        return self.conn


def _why_unopenable(path: str) -> str | None:
    """What SQLite's "unable to open database file" means here: it never says which part of
    the path is wrong, or that a daemon after --user is not the user who made the directory."""
    directory = os.path.dirname(path) or "."
    if os.path.isdir(path):
        return "is a directory, not a database file"
    if not os.path.isdir(directory):
        return f"directory {directory} does not exist"
    # WAL needs to create -wal and -shm files beside the database
    if not os.access(directory, os.W_OK | os.X_OK):
        try:
            user = pwd.getpwuid(os.geteuid()).pw_name
        except KeyError:
            user = str(os.geteuid())
        return f"directory {directory} is not writable by user {user} (WAL creates files there)"
    return None


def _utc_text() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]
