"""Throwaway database servers for tests: a PostgreSQL 15 cluster and a MariaDB server.

Each lives in its own temporary directory, listens on a free 127.0.0.1 port, is started by
the fixture and stopped (by pid, via its own control tool or signal) at teardown. Nothing
touches the system's own clusters or /var/lib. When the server binaries are missing the
fixture skips the tests that need it, naming the package to install.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from helpers import free_port

PG_BIN = Path("/usr/lib/postgresql/15/bin")
MARIADB_INSTALL = shutil.which("mariadb-install-db") or shutil.which("mysql_install_db")
MARIADBD = shutil.which("mariadbd") or shutil.which("mysqld") or (
    "/usr/sbin/mariadbd" if os.path.exists("/usr/sbin/mariadbd") else None)
START_TIMEOUT_S = 60.0


def _wait_port(port: int, timeout: float, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"database server exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


@dataclass
class PostgresServer:
    directory: Path
    port: int

    @property
    def datadir(self) -> Path:
        return self.directory / "data"

    def url(self, database: str = "ingest") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def _as_postgres(self, *argv: str, timeout: float = START_TIMEOUT_S) -> None:
        subprocess.run(["runuser", "-u", "postgres", "--", *argv], check=True,
                       cwd=self.directory, timeout=timeout, capture_output=True)

    def start(self) -> None:
        self._as_postgres(str(PG_BIN / "initdb"), "-D", str(self.datadir), "-A", "trust",
                          "-U", "postgres", "--no-sync", "-E", "UTF8")
        options = (f"-p {self.port} -k {self.directory} -c listen_addresses=127.0.0.1 "
                   "-c fsync=on -c synchronous_commit=on -c max_connections=50")
        self._as_postgres(str(PG_BIN / "pg_ctl"), "-D", str(self.datadir), "-o", options,
                          "-l", str(self.directory / "server.log"), "-w", "-t", "60", "start")
        self.sql("postgres", "CREATE DATABASE ingest")

    def running(self) -> bool:
        return (self.datadir / "postmaster.pid").exists()

    def stop(self, mode: str = "fast") -> None:
        if self.running():
            self._as_postgres(str(PG_BIN / "pg_ctl"), "-D", str(self.datadir), "-m", mode,
                              "-w", "-t", "60", "stop")

    def restart(self) -> None:
        options = (f"-p {self.port} -k {self.directory} -c listen_addresses=127.0.0.1")
        self._as_postgres(str(PG_BIN / "pg_ctl"), "-D", str(self.datadir), "-o", options,
                          "-l", str(self.directory / "server.log"), "-w", "-t", "60", "start")

    def sql(self, database: str, statement: str) -> list[tuple[object, ...]]:
        import psycopg

        with psycopg.connect(host="127.0.0.1", port=self.port, user="postgres",
                             dbname=database, autocommit=True) as conn:
            cursor = conn.execute(statement)
            return cursor.fetchall() if cursor.description else []


@dataclass
class MariadbServer:
    directory: Path
    port: int
    proc: subprocess.Popen[bytes] | None = None

    def url(self, database: str = "ingest") -> str:
        return f"mysql://root@127.0.0.1:{self.port}/{database}"

    def start(self) -> None:
        assert MARIADB_INSTALL and MARIADBD
        datadir = self.directory / "data"
        subprocess.run([MARIADB_INSTALL, "--no-defaults", f"--datadir={datadir}", "--user=root",
                        "--auth-root-authentication-method=normal", "--skip-test-db"],
                       check=True, capture_output=True, timeout=START_TIMEOUT_S)
        log = open(self.directory / "server.log", "wb")  # noqa: SIM115 - lives with the server
        self.proc = subprocess.Popen(
            [MARIADBD, "--no-defaults", f"--datadir={datadir}",
             f"--socket={self.directory}/mysqld.sock", f"--port={self.port}",
             "--bind-address=127.0.0.1", "--user=root", f"--pid-file={self.directory}/m.pid",
             "--innodb-buffer-pool-size=32M", "--innodb-log-file-size=16M",
             "--innodb-flush-log-at-trx-commit=1", "--skip-name-resolve"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        _wait_port(self.port, START_TIMEOUT_S, self.proc)
        self.sql("CREATE DATABASE ingest")

    def sql(self, statement: str, database: str | None = None) -> list[tuple[object, ...]]:
        import pymysql

        conn = pymysql.connect(host="127.0.0.1", port=self.port, user="root", password="",
                               database=database, autocommit=True)
        try:
            with conn.cursor() as cursor:
                cursor.execute(statement)
                return list(cursor.fetchall())
        finally:
            conn.close()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def _temp_dir_for(owner: str | None, prefix: str) -> Path:
    # not under pytest's tmp_path: its parents are 0700 root, and postgres must get in
    directory = Path(tempfile.mkdtemp(prefix=prefix))
    if owner is not None:
        shutil.chown(directory, owner, owner)
    return directory


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    if not (PG_BIN / "initdb").exists():
        pytest.skip("PostgreSQL 15 server binaries missing (apt-get install postgresql-15)")
    pytest.importorskip("psycopg", reason="pip install 'psycopg[binary]'")
    server = PostgresServer(_temp_dir_for("postgres", "ingest-pg-"), free_port())
    try:
        server.start()
        yield server
    finally:
        try:
            server.stop("immediate")
        finally:
            shutil.rmtree(server.directory, ignore_errors=True)


@pytest.fixture(scope="session")
def mariadb() -> Iterator[MariadbServer]:
    if not (MARIADB_INSTALL and MARIADBD):
        pytest.skip("MariaDB server missing (apt-get install mariadb-server)")
    pytest.importorskip("pymysql", reason="pip install PyMySQL")
    server = MariadbServer(_temp_dir_for(None, "ingest-mariadb-"), free_port())
    try:
        server.start()
        yield server
    finally:
        try:
            server.stop()
        finally:
            shutil.rmtree(server.directory, ignore_errors=True)
