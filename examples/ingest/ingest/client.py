"""Client library and CLI for ingestd, with Lazy Pirate retries.

Library::

    from ingest.client import IngestClient
    with IngestClient(["tcp://127.0.0.1:5555"], timeout=2.5, retries=5) as client:
        reply = client.send([{"id": "r1", "v": 1}, {"id": "r2", "v": 2}])
        # {"ok": True, "stored": 2, "duplicates": 0}
        client.send_raw(b'{"id": "r3", "v": 1.50}')  # stored byte for byte as written

CLI::

    python client.py --endpoint tcp://127.0.0.1:5555 send records.jsonl   # or "-" for stdin
    python client.py gen 1000 | python client.py send -
    python client.py keygen /etc/ingestd/curve     # server + one client certificate

Why Lazy Pirate: a REQ socket insists on send, receive, send, ... so when a reply does not
come, the only way on is to close it (LINGER 0, dropping the unsent request) and open a new
one. The request is then sent again *with the same ids*; the server stores each id once and
answers "duplicate" for the ones that made it the first time, so a retry never creates copies.

Several endpoints: one REQ socket connects to all of them; ZeroMQ sends each request to the
next connected server in turn (``IMMEDIATE`` keeps it from queueing requests for servers
that are not connected), and a retry goes to another one when one is down.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
import uuid
from collections.abc import Iterable, Iterator
from typing import Any

import zmq

DEFAULT_ENDPOINT = "tcp://127.0.0.1:5555"
MAX_BATCH = 1000
#: ingestd's default --max-message-size; larger requests are cut off without a reply
DEFAULT_MAX_MESSAGE_SIZE = 1 << 20
#: room left for what ingestd counts besides the request: a REQ's routing id and delimiter,
#: and the routing ids proxies add on the way
ENVELOPE_ALLOWANCE = 1024


class IngestError(Exception):
    """The server refused the request for good (bad input): retrying cannot help."""

    def __init__(self, reply: dict[str, Any]) -> None:
        super().__init__(reply.get("error", "unknown error"))
        self.reply = reply


class ServerUnavailable(Exception):
    """No acknowledgement after every retry; the records may or may not be stored."""


class NotIngestd(Exception):
    """The reply is not one ingestd sends: the endpoint is some other service."""


class IngestClient:
    def __init__(self, endpoints: str | Iterable[str], timeout: float = 2.5, retries: int = 3,
                 *, context: zmq.Context[Any] | None = None,
                 curve_server_key: bytes | None = None,
                 curve_keypair: tuple[bytes, bytes] | None = None,
                 backoff: float = 0.1) -> None:
        self.endpoints = [endpoints] if isinstance(endpoints, str) else list(endpoints)
        if not self.endpoints:
            raise ValueError("at least one endpoint")
        self.timeout_ms = int(timeout * 1000)
        self.retries = retries
        self.backoff = backoff
        self.curve_server_key = curve_server_key
        self.curve_keypair = curve_keypair
        self._own_context = context is None
        self.context = context or zmq.Context()
        self.socket: zmq.Socket[Any] | None = None
        self.attempts = 0  # requests sent, including resends (for tests and tools)

    def send(self, records: dict[str, Any] | list[dict[str, Any]]) -> dict[str, Any]:
        """Send one record or a list, serialised with :func:`json.dumps`; return the ack.

        ingestd stores what it receives, so what is stored is json.dumps's spelling of the
        objects (``1.50`` becomes ``1.5``, non-ASCII is escaped). To store text exactly as
        written, send it with :meth:`send_raw`."""
        return self.send_raw(json.dumps(records, separators=(",", ":")).encode())

    def send_raw(self, payload: bytes) -> dict[str, Any]:
        """Send one request as it is (a JSON object, or an array of them); return the ack.
        Resends the same bytes on timeout."""
        last_problem = "no reply"
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(min(self.backoff * (2 ** (attempt - 1)), 2.0))
            sock = self._socket()
            self.attempts += 1
            try:
                sock.send(payload)  # waits at most SNDTIMEO for a connected server
            except zmq.Again:
                last_problem = f"no server connected within {self.timeout_ms} ms"
                self._reset()
                continue
            if sock.poll(self.timeout_ms, zmq.POLLIN):
                reply = _ack_of(sock.recv())
                if reply.get("ok"):
                    return reply
                if not reply.get("retryable"):
                    raise IngestError(reply)
                last_problem = reply.get("error", "retryable error")
                continue  # the REQ socket is in a clean state: reuse it
            last_problem = f"no reply within {self.timeout_ms} ms"
            if len(payload) > DEFAULT_MAX_MESSAGE_SIZE:
                # the server cuts such a peer off without a word (ZeroMQ's MAXMSGSIZE)
                last_problem += (f"; the request is {len(payload)} bytes, and ingestd drops "
                                 "the connection of a message over its --max-message-size "
                                 f"({DEFAULT_MAX_MESSAGE_SIZE} by default): send fewer "
                                 "records per request")
            self._reset()
        raise ServerUnavailable(f"gave up after {self.retries + 1} attempts: {last_problem}")

    def _socket(self) -> zmq.Socket[Any]:
        if self.socket is None:
            sock = self.context.socket(zmq.REQ)
            sock.linger = 0
            sock.setsockopt(zmq.IMMEDIATE, 1)
            sock.sndtimeo = self.timeout_ms
            if self.curve_server_key is not None and self.curve_keypair is not None:
                sock.curve_publickey, sock.curve_secretkey = self.curve_keypair
                sock.curve_serverkey = self.curve_server_key
            endpoints = self.endpoints
            if len(endpoints) > 1:  # start each new socket at a different server
                shift = self.attempts % len(endpoints)
                endpoints = endpoints[shift:] + endpoints[:shift]
            for endpoint in endpoints:
                sock.connect(endpoint)
            self.socket = sock
        return self.socket

    def _reset(self) -> None:
        if self.socket is not None:
            self.socket.close(linger=0)
            self.socket = None

    def close(self) -> None:
        self._reset()
        if self._own_context:
            self.context.term()

    def __enter__(self) -> IngestClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _ack_of(raw: bytes) -> dict[str, Any]:
    try:
        reply = json.loads(raw)
    except ValueError:
        reply = None
    if not isinstance(reply, dict) or not isinstance(reply.get("ok"), bool):
        raise NotIngestd(f"unexpected reply {raw[:60]!r}: is this an ingestd endpoint?")
    return reply


class BadLine(ValueError):
    """A line of the input that is not a record; ``number`` counts from 1."""

    def __init__(self, number: int, reason: str) -> None:
        super().__init__(f"line {number}: {reason}")
        self.number = number
        self.reason = reason


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


#: as strict as ingestd about what JSON is (no NaN, no Infinity), so that a bad line is named
#: here by its number rather than refused by the server
_LINE_DECODER = json.JSONDecoder(parse_constant=_reject_constant)
_JSON_SPACE = " \t\r\n"


def read_records(lines: Iterable[str]) -> Iterator[tuple[int, str]]:
    """(line number, record text) of JSON lines. Raises :class:`BadLine`.

    The text goes out as written: ingestd stores every record as sent, and decoding and
    encoding it again here would change it (``1e-400`` -> ``0.0``, ``1.50`` -> ``1.5``,
    escapes, a duplicate key dropped, ``1e400`` sent as ``Infinity``, which is not JSON).
    A record without an id gets a random one, written in as its first key *before* its first
    send, so that a resend carries the same id."""
    for number, line in enumerate(lines, 1):
        text = line.strip(_JSON_SPACE)
        if not text:
            continue
        try:
            record = _LINE_DECODER.decode(text)
        except ValueError as exc:
            raise BadLine(number, f"not valid JSON ({exc})") from None
        if not isinstance(record, dict):
            raise BadLine(number, "not a JSON object")
        if "id" not in record:
            text = f'{{"id":"{uuid.uuid4().hex}"{"," if record else ""}{text[1:]}'
        yield number, text


def requests_of(records: Iterable[tuple[int, str]], max_records: int,
                max_bytes: int) -> Iterator[list[tuple[int, str]]]:
    """Records grouped into requests of at most ``max_records`` records and ``max_bytes``
    bytes of JSON array: ingestd drops a message over its --max-message-size without a reply,
    so a request that could not fit is never sent. Raises :class:`BadLine` for a record that
    cannot fit on its own."""
    chunk: list[tuple[int, str]] = []
    size = 2  # the array's brackets
    for number, text in records:
        need = len(text.encode()) + 1  # and its comma
        if need + 1 > max_bytes:
            raise BadLine(number, f"record of {need - 1} bytes does not fit in a request of "
                                  f"at most {max_bytes} bytes (--max-message-size)")
        if chunk and (len(chunk) == max_records or size + need > max_bytes):
            yield chunk
            chunk, size = [], 2
        chunk.append((number, text))
        size += need
    if chunk:
        yield chunk


def _curve_options(args: argparse.Namespace) -> dict[str, Any]:
    if not args.curve_server_key:
        return {}
    import zmq.auth

    try:
        server_public, _ = zmq.auth.load_certificate(args.curve_server_key)
        public, secret = zmq.auth.load_certificate(args.curve_cert)
    except (OSError, ValueError) as exc:
        raise SystemExit(f"cannot load a CURVE certificate: {exc}") from None
    if secret is None:
        raise SystemExit(f"{args.curve_cert}: no secret key in this certificate")
    return {"curve_server_key": server_public, "curve_keypair": (public, secret)}


#: where the server's error message names the record at fault
_RECORD_INDEX = re.compile(r"^record (\d+): ")


def cmd_send(args: argparse.Namespace) -> int:
    """Send in batches; stop at the first line that is bad or refused, and say which line and
    how far the input got, so that the user can fix it and resend (resent ids are answered
    "duplicate", never stored twice)."""
    try:
        source = sys.stdin if args.file == "-" else open(args.file, encoding="utf-8")  # noqa: SIM115
    except OSError as exc:
        print(f"cannot read {args.file}: {exc.strerror}", file=sys.stderr)
        return 1
    stored = duplicates = 0
    last_acked_line = 0
    started = time.monotonic()

    def so_far() -> str:
        acked = f"lines up to {last_acked_line}" if last_acked_line else "nothing"
        return f"{acked} acknowledged (stored {stored}, duplicates {duplicates})"

    # what ingestd counts against its limit besides the array: the envelope and delimiter
    max_bytes = args.max_message_size - ENVELOPE_ALLOWANCE
    with source, IngestClient(args.endpoint or [DEFAULT_ENDPOINT], args.timeout, args.retries,
                              **_curve_options(args)) as client:
        try:
            for chunk in requests_of(read_records(source), args.batch, max_bytes):
                lines = [number for number, _text in chunk]
                span = f"lines {lines[0]}-{lines[-1]}" if len(lines) > 1 else f"line {lines[0]}"
                payload = "[" + ",".join(text for _number, text in chunk) + "]"
                try:
                    reply = client.send_raw(payload.encode())
                except IngestError as exc:
                    named = _RECORD_INDEX.match(str(exc))
                    index = int(named.group(1)) if named else -1
                    where = (f"{args.file}:{lines[index]}" if 0 <= index < len(lines)
                             else f"{args.file} ({span})")
                    print(f"{where}: refused by the server: {exc}; nothing of {span} "
                          f"was stored; {so_far()}", file=sys.stderr)
                    return 1
                except NotIngestd as exc:
                    print(f"failed: {exc}; {so_far()}", file=sys.stderr)
                    return 1
                except ServerUnavailable as exc:
                    print(f"failed: {exc}; {span} may or may not be stored (resending is "
                          f"safe: an id is never stored twice); {so_far()}", file=sys.stderr)
                    return 1
                stored += reply["stored"]
                duplicates += reply["duplicates"]
                last_acked_line = lines[-1]
        except BadLine as exc:
            print(f"{args.file}:{exc.number}: {exc.reason}; {so_far()}", file=sys.stderr)
            return 1
        except UnicodeDecodeError as exc:
            print(f"{args.file}: not UTF-8 text ({exc.reason}); {so_far()}", file=sys.stderr)
            return 1
    elapsed = time.monotonic() - started
    print(f"stored {stored}, duplicates {duplicates}, {elapsed:.2f}s")
    return 0


def cmd_gen(args: argparse.Namespace) -> int:
    prefix = args.prefix or uuid.uuid4().hex[:8]
    out = sys.stdout
    for i in range(args.count):
        out.write(json.dumps({"id": f"{prefix}-{i}", "seq": i, "at": time.time(),
                              "reading": (i * 7919) % 1000 / 10}) + "\n")
    return 0


def cmd_keygen(args: argparse.Namespace) -> int:
    import zmq.auth

    directory = args.directory
    authorized = os.path.join(directory, "authorized")
    os.makedirs(authorized, exist_ok=True)
    os.chmod(directory, 0o700)
    # zmq.auth writes the files with the process umask: secret keys must not be world-readable
    # even for the moment before a chmod, and a directory mode alone is undone by one mv
    old_umask = os.umask(0o077)
    try:
        zmq.auth.create_certificates(directory, "server")
        client_public, _ = zmq.auth.create_certificates(directory, args.client)
    finally:
        os.umask(old_umask)
    os.replace(client_public, os.path.join(authorized, os.path.basename(client_public)))
    print(f"server certificate: {directory}/server.key_secret (clients need server.key)")
    print(f"client certificate: {directory}/{args.client}.key_secret, "
          f"authorized via {authorized}/{args.client}.key")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="ingestd client (Lazy Pirate retries)")
    parser.add_argument("--endpoint", action="append",
                        help=f"server endpoint, repeatable (default {DEFAULT_ENDPOINT})")
    parser.add_argument("--timeout", type=float, default=2.5, help="seconds per attempt")
    parser.add_argument("--retries", type=int, default=5, help="resends after the first try")
    parser.add_argument("--curve-server-key", metavar="FILE", help="server's public cert")
    parser.add_argument("--curve-cert", metavar="FILE", help="this client's secret cert")
    commands = parser.add_subparsers(dest="command", required=True)
    send = commands.add_parser("send", help="send JSON lines from FILE or - (stdin)")
    send.add_argument("file", nargs="?", default="-")
    send.add_argument("--batch", type=int, default=100,
                      help=f"records per request at most (1..{MAX_BATCH})")
    send.add_argument("--max-message-size", type=int, default=DEFAULT_MAX_MESSAGE_SIZE,
                      metavar="BYTES", help="the server's --max-message-size: requests are "
                      f"cut to fit (default {DEFAULT_MAX_MESSAGE_SIZE})")
    gen = commands.add_parser("gen", help="print COUNT demo records as JSON lines")
    gen.add_argument("count", type=int)
    gen.add_argument("--prefix", help="id prefix (default: random, so reruns add new ids)")
    keygen = commands.add_parser("keygen", help="create CURVE certificates in DIRECTORY")
    keygen.add_argument("directory")
    keygen.add_argument("--client", default="client", help="client certificate name")
    args = parser.parse_args(argv)
    if args.command == "send" and not 1 <= args.batch <= MAX_BATCH:
        parser.error(f"--batch must be between 1 and {MAX_BATCH}")
    if args.command == "send" and args.max_message_size <= ENVELOPE_ALLOWANCE + 2:
        parser.error(f"--max-message-size must be more than {ENVELOPE_ALLOWANCE + 2}")
    if bool(args.curve_server_key) != bool(args.curve_cert):
        parser.error("--curve-server-key and --curve-cert go together")
    handler = {"send": cmd_send, "gen": cmd_gen, "keygen": cmd_keygen}[args.command]
    return handler(args)


if __name__ == "__main__":
    sys.exit(main())
