"""The ingestd daemon: receive JSON records over ZeroMQ, store them, acknowledge after COMMIT.

Wire protocol, storage and guarantees: see examples/ingest/README.md. In short, clients send
one JSON record or an array of up to 1000 from any request socket (REQ, DEALER, through
proxies: ingestd answers as REP would); every record has a client-chosen ``id``; the reply
``{"ok":true,"stored":N,"duplicates":M}`` goes out only once the records are committed, so a
client that resends after a timeout creates no copies.

Life cycle (daemonkit): ``configure()`` checks options and the config file in the command
process, so typos fail ``start`` with exit 6 before anything forks; ``setup()`` (in the
detached daemon) creates the ZeroMQ context, binds, checks the database and starts the
threads, so ``start`` reports a busy port or an unreachable database; ``run()`` waits;
``shutdown()`` drains: stop reading, commit and acknowledge everything taken, close.
"""

from __future__ import annotations

import argparse
import logging
import os
import queue
import time
from typing import Any

import zmq

from daemonkit import ConfigError, Daemon

from . import dburl, settings
from .acks import AckChannel
from .intake import BindError, CurveServer, Intake
from .settings import SettingsRef
from .stores import PermanentError, TransientError, open_store
from .writer import STOP, Acks, Requests, Writer

DEFAULT_BIND = "tcp://127.0.0.1:5555"
DEFAULT_MAX_MESSAGE = 1024 * 1024
MIN_MESSAGE_SIZE = 2048
#: what ZeroMQ may hold per connection while intake is paused, by default (see receive_hwm)
DEFAULT_QUEUED_PER_CONNECTION = 64 * 1024 * 1024
#: time kept back from --stop-timeout for closing sockets and exiting after the drain
SHUTDOWN_MARGIN_S = 1.5


class Ingestd(Daemon):
    """ZeroMQ ingestion daemon: records in, durable rows out, acks only after COMMIT."""

    name = "ingestd"

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--bind", action="append", metavar="ENDPOINT",
                            help=f"ZeroMQ endpoint to bind, repeatable (default {DEFAULT_BIND})")
        parser.add_argument("--db", metavar="URL",
                            help="sqlite:///FILE, postgresql://… or mysql://… "
                                 "(default: sqlite ingest.db in the current directory)")
        parser.add_argument("--config", metavar="FILE",
                            help="JSON settings re-read on reload (log level, batch limits, "
                                 "authorized client keys)")
        parser.add_argument("--curve-keys", metavar="DIR",
                            help="enable CURVE: DIR/server.key_secret is the server's "
                                 "certificate, DIR/authorized/*.key the clients allowed in")
        parser.add_argument("--max-message-size", type=int, default=DEFAULT_MAX_MESSAGE,
                            metavar="BYTES", help="largest message, all frames together; a "
                                                  "larger frame disconnects its sender "
                                                  "(default %(default)s)")
        parser.add_argument("--receive-hwm", type=int, metavar="MESSAGES",
                            help="messages ZeroMQ queues per connection while intake is paused "
                                 "(RCVHWM; default 64 MiB / --max-message-size, 16..1000)")
        parser.add_argument("--writers", type=int, metavar="N",
                            help="writer threads (default: 1 for SQLite, 4 otherwise)")

    # -- command process ----------------------------------------------------------------------

    def configure(self) -> None:
        options = self.options
        options.bind = options.bind or [DEFAULT_BIND]
        for endpoint in options.bind:
            _check_endpoint(endpoint)
        if not isinstance(options.db, dburl.DatabaseURL):  # configure() may run twice
            try:
                # parsed in place: a relative SQLite path is resolved here, against the
                # caller's directory, and the option is shown (restart's note) without
                # its password
                options.db = dburl.parse(options.db or "sqlite:///ingest.db")
            except (dburl.BadURL, ValueError) as exc:
                raise ConfigError(f"--db: {exc}") from None
        if options.db.kind == "sqlite":
            try:
                open_store(options.db)  # checks ?synchronous=
            except ValueError as exc:
                raise ConfigError(f"--db: {exc}") from None
        elif options.db.kind == "postgresql":
            _require("psycopg", "postgresql:// needs psycopg 3 (pip install 'psycopg[binary]')")
        elif options.db.kind == "mysql":
            _require("pymysql", "mysql:// needs PyMySQL (pip install PyMySQL)")
        # at least 2 KiB: client.py keeps 1 KiB of each message for the envelope (proxies'
        # routing ids), so any size ingestd accepts is one the client can match
        if not MIN_MESSAGE_SIZE <= options.max_message_size <= 1 << 31:
            raise ConfigError(f"--max-message-size must be between {MIN_MESSAGE_SIZE} and "
                              "2147483648 bytes")
        if options.receive_hwm is None:
            options.receive_hwm = receive_hwm_for(options.max_message_size)
        elif not 1 <= options.receive_hwm <= 1_000_000:
            raise ConfigError("--receive-hwm must be between 1 and 1000000")
        if options.writers is None:
            options.writers = 1 if options.db.kind == "sqlite" else 4
        elif not 1 <= options.writers <= 64:
            raise ConfigError("--writers must be between 1 and 64")
        elif options.db.kind == "sqlite" and options.writers != 1:
            raise ConfigError("SQLite allows one writer at a time: use --writers 1")
        if options.config:
            options.config = os.path.abspath(options.config)
        if options.curve_keys:
            options.curve_keys = os.path.abspath(options.curve_keys)
            _load_server_cert(options.curve_keys)
        try:
            self.initial_settings = settings.load(options.config)
        except settings.SettingsError as exc:
            raise ConfigError(str(exc)) from None
        self._authorized_dir(self.initial_settings)

    def _authorized_dir(self, current: settings.Settings) -> str | None:
        if not self.options.curve_keys:
            return None
        directory = current.authorized_keys_dir or os.path.join(self.options.curve_keys,
                                                                "authorized")
        if not os.path.isdir(directory):
            raise ConfigError(f"CURVE: no directory of authorized client keys at {directory}")
        return directory

    # -- daemon ----------------------------------------------------------------------------

    def setup(self) -> None:
        options = self.options
        self.settings = SettingsRef(self.initial_settings)
        self._apply_log_level(self.initial_settings)
        url = options.db
        store = open_store(url)
        try:
            store.connect()
            store.ensure_schema()
        except TransientError as exc:
            raise RuntimeError(f"database {url.redacted()} unreachable: {exc}") from None
        except PermanentError as exc:
            raise RuntimeError(f"database {url.redacted()}: {exc}") from None
        finally:
            store.close()
        self.context: zmq.Context[Any] = zmq.Context()
        self.auth: Any = None
        curve = None
        if options.curve_keys:
            from zmq.auth.thread import ThreadAuthenticator

            public, secret = _load_server_cert(options.curve_keys)
            curve = CurveServer(public, secret)
            self.auth = ThreadAuthenticator(self.context, log=self.log.getChild("auth"))
            self.auth.start()
            self.auth.configure_curve(domain="*", location=self._authorized_dir(
                self.initial_settings))
        self.requests: Requests = queue.SimpleQueue()
        self.acks: Acks = AckChannel()
        self.intake = Intake(self.context, options.bind, self.requests, self.acks,
                             writer_count=options.writers, settings=self.settings,
                             max_message_size=options.max_message_size,
                             receive_hwm=options.receive_hwm, curve=curve, log=self.log)
        self.intake.start()
        self.intake.ready.wait()
        if self.intake.setup_error is not None:
            self._close_context()
            error = self.intake.setup_error
            raise RuntimeError(str(error) if isinstance(error, BindError)
                               else f"cannot open the ROUTER socket: {error}") from None
        self.writers = [Writer(i, self.requests, self.acks,
                               make_store=lambda: open_store(url), settings=self.settings,
                               log=self.log) for i in range(options.writers)]
        for writer in self.writers:
            writer.start()
        for writer in self.writers:
            writer.first_attempt_done.wait(10.0)
        self.log.info("listening on %s, storing into %s (%d writer%s)",
                      ", ".join(self.intake.bound), url.redacted(), len(self.writers),
                      "" if len(self.writers) == 1 else "s")

    def run(self) -> None:
        while not self.stopping.wait(1.0):
            if not self.intake.is_alive() or not all(w.is_alive() for w in self.writers):
                raise RuntimeError("a worker thread died; see the log")

    def shutdown(self) -> None:
        started = time.monotonic()
        deadline = started + max(1.0, self.options.stop_timeout - SHUTDOWN_MARGIN_S)
        self.intake.stop_intake(deadline)
        self.intake.finished.wait(max(0.0, deadline - time.monotonic()) + 1.0)
        # `finished` is the I/O thread's last act: a moment more and it has returned too
        self.intake.join(max(0.2, deadline - time.monotonic()))
        if not self.intake.drained_cleanly:
            # normally the I/O thread queued these behind the work; if it died, nobody did
            # (one more STOP for a writer that already stopped is never read: harmless)
            for _ in self.writers:
                self.requests.put(STOP)
        for writer in self.writers:
            # at least a moment: a writer that has said it is done may still be returning
            writer.join(max(0.2, deadline - time.monotonic()))
        stuck = [t.name for t in (self.intake, *self.writers) if t.is_alive()]
        stats = self._totals()
        self.log.info("drained in %.3fs: %d records stored, %d requests still unanswered",
                      time.monotonic() - started, stats["records_stored"],
                      stats["inflight_requests"])
        if stuck or not self.intake.drained_cleanly:
            # threads still hold sockets: terminating the context would hang or crash
            raise RuntimeError(f"drain incomplete (stuck: {', '.join(stuck) or 'none'})")
        self._close_context()

    def _close_context(self) -> None:
        """Only once the I/O and writer threads are gone: they use all of these."""
        if self.auth is not None:
            self.auth.stop()
        self.context.term()
        self.acks.close()

    def reload(self) -> None:
        new = settings.load(self.options.config)  # raises: the old settings stay
        authorized = self._authorized_dir(new)
        if self.auth is not None and authorized is not None:
            self.auth.configure_curve(domain="*", location=authorized)
        self.settings.current = new
        self._apply_log_level(new)
        self.log.info("settings now %s", new)

    def _apply_log_level(self, current: settings.Settings) -> None:
        # NOTSET: back to the level of --log-level (the root logger's)
        self.log.setLevel(current.log_level or logging.NOTSET)

    def status_info(self) -> dict[str, Any]:
        totals = self._totals()
        intake = self.intake.stats
        writer_stats = [w.stats for w in self.writers]
        last_ok = max(s.last_ok_at for s in writer_stats)
        latest = max(writer_stats, key=lambda s: s.last_error_at)
        return {
            "records_stored": totals["records_stored"],
            "duplicates": totals["duplicates"],
            # requests of the last 60 s / 60 (bad ones included)
            "requests_per_s_1m": round(intake.meter.per_second(), 2),
            "requests_total": intake.meter.total,
            # taken by the I/O thread and not in a writer's transaction now (this includes
            # replies committed an instant ago that the I/O thread has not sent yet)
            "queue_depth": max(0, intake.inflight_requests
                               - sum(s.in_commit for s in writer_stats)),
            "inflight_requests": intake.inflight_requests,
            "inflight_bytes": intake.inflight_bytes,
            "large_requests_waiting": intake.slow_lane_requests,
            "intake_paused": intake.paused,
            # the latest observation of any writer (a store, a connect or an idle ping)
            "db_reachable": last_ok > latest.last_error_at,
            "db": self.options.db.redacted(),
            "db_last_error": latest.last_error,
            "batches": totals["batches"],
            "mean_batch_requests": round(totals["requests"] / totals["batches"], 1)
            if totals["batches"] else 0.0,
            "mean_commit_ms": round(1000 * sum(s.commit_seconds for s in writer_stats)
                                    / totals["batches"], 3) if totals["batches"] else 0.0,
            "bad_requests": intake.bad_requests,
            # large requests refused as "busy" (retryable) while too many waited to be read
            "busy_replies": intake.busy_replies,
            # replies ZeroMQ could not route: the client had gone (its records are stored)
            "undeliverable_replies": intake.undeliverable_replies,
            # new connections reset while the process had no file descriptor left
            "connections_refused": intake.connections_refused,
            "retryable_failures": totals["transient_failures"],
            "endpoints": ", ".join(self.intake.bound),
            "curve": bool(self.options.curve_keys),
            "log_level": logging.getLevelName(self.log.getEffectiveLevel()),
            "max_message_size": self.options.max_message_size,
            "receive_hwm": self.options.receive_hwm,
            "max_batch_records": self.settings.current.max_batch_records,
            "max_inflight_requests": self.settings.current.max_inflight_requests,
            "max_inflight_bytes": self.settings.current.max_inflight_bytes,
        }

    def _totals(self) -> dict[str, int]:
        totals = {"records_stored": 0, "duplicates": 0, "batches": 0, "requests": 0,
                  "transient_failures": 0}
        for writer in self.writers:
            for key in totals:
                totals[key] += getattr(writer.stats, key)
        totals["inflight_requests"] = self.intake.stats.inflight_requests
        return totals


def receive_hwm_for(max_message_size: int) -> int:
    """ZeroMQ's RCVHWM by default: about 64 MiB of full-size messages per connection.

    Not less: the reading side of a libzmq pipe wakes the I/O thread that fills it every
    RCVHWM / 2 messages, and those wake-ups cost CPU on every request (interleaved runs of
    64 single-record clients: 55.8 us of CPU per request at 16, 52.7 at 64, 46.7 at 1000).
    """
    return max(16, min(1000, DEFAULT_QUEUED_PER_CONNECTION // max_message_size))


def _check_endpoint(endpoint: str) -> None:
    """libzmq takes tcp://127.0.0.1:99999 and listens on port 34463 (99999 mod 65536)."""
    scheme, separator, address = endpoint.partition("://")
    if not separator or not address:
        raise ConfigError(f"--bind {endpoint!r}: expected tcp://HOST:PORT or ipc://PATH")
    if scheme == "tcp":
        port = address.rpartition(":")[2]
        if port != "*" and not (port.isdigit() and int(port) <= 65535):
            raise ConfigError(f"--bind {endpoint!r}: the port must be 0-65535 or *")


def _require(module: str, message: str) -> None:
    try:
        __import__(module)
    except ImportError:
        raise ConfigError(message) from None


def _load_server_cert(directory: str) -> tuple[bytes, bytes]:
    import zmq.auth

    path = os.path.join(directory, "server.key_secret")
    try:
        public, secret = zmq.auth.load_certificate(path)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"CURVE: cannot load the server certificate {path}: {exc}") from None
    if secret is None:
        raise ConfigError(f"CURVE: {path} holds no secret key")
    return public, secret
